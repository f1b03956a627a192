"""A fleet config's healthy report (``_pipeline_health``): what the fleet's ``max_error_rate`` gate reads of a
pipeline on a slot waiting for the fleet's first package."""

from __future__ import annotations

from types import SimpleNamespace

from edge_agent.fleet_config import _pipeline_health
from edge_agent.pipelines import PipelineStats


def _pipe(name: str, waiting: bool, results: int, model_failed: int, **errors: int) -> SimpleNamespace:
    stats = PipelineStats()
    stats.results, stats.model_failed = results, model_failed
    stats.errors.update(errors)
    slot = SimpleNamespace(waiting_for_fleet=waiting, failed="no package yet: ..." if waiting else None)
    return SimpleNamespace(name=name, slot=slot, stats=stats, window_ignored=False)


def test_a_waiting_pipelines_errors_other_than_no_model_count_in_the_gates_error_rate():
    """Its items with no model (UNSURE no_model) are not the config's errors; its outbox refusing writes and its
    actions failing are. The pipeline was left out whole: a config breaking its outbox or actions read 0."""
    serving = _pipe("p", False, results=6, model_failed=0)
    waiting = _pipe("p2", True, results=4, model_failed=4, no_model=4, outbox_write=1, action_dispatch=1)
    health = _pipeline_health(SimpleNamespace(pipelines=[serving, waiting], heartbeat_feeds={}))
    assert health["waiting_for_fleet"] == ["p2"], health
    assert (health["results"], health["model_failed"]) == (6, 0), health
    assert health["error_rate"] == 2 / 8, health
    # with no model yet and nothing else wrong: 0, as before
    quiet = _pipe("p2", True, results=4, model_failed=4, no_model=4)
    health = _pipeline_health(SimpleNamespace(pipelines=[serving, quiet], heartbeat_feeds={}))
    assert (health["error_rate"], health["results"]) == (0, 6), health


def test_a_pipeline_on_a_slot_failed_on_its_configured_package_kept_by_the_config_is_named_not_counted():
    """A slot failed at the start on its configured package (signed by a key not trusted here) is not waiting for
    the fleet's first package; a config keeping it as it is (a camera's fps changed) is not rolled back for it. Its
    pipeline's items with no model counted whole: the healthy report read 1.0 and a max_error_rate gate failed the
    config and halted its rollout."""
    serving = _pipe("q", False, results=6, model_failed=0)
    failed = _pipe("p", False, results=4, model_failed=4, no_model=4, outbox_write=1)
    failed.slot.failed = "its configured package /opt/vision.edgepkg is refused: signed by key ..."
    health = _pipeline_health(SimpleNamespace(pipelines=[serving, failed], heartbeat_feeds={}))
    assert health["no_model"] == ["p"] and "waiting_for_fleet" not in health, health
    assert (health["results"], health["model_failed"], health["error_rate"]) == (6, 0, 1 / 7), health
