"""Which pipelines of a fleet config's candidate take judging away (``_taken_judging``: slot -> why; the config is
rolled back where such a slot has no package, ``AgentHost._refuse_failed_slots``): one new to the candidate reading
what a judging pipeline the candidate drops read is the candidate's doing; one reading something else is not."""

from __future__ import annotations

from types import SimpleNamespace

from edge_agent.config import parse_config
from edge_agent.fleet_config import _judging, _taken_judging

MQ = {"type": "mqtt", "host": "127.0.0.1", "port": 1883, "subscriptions": [{"topic": "plant/#"}]}
FLEET_FED = {"name": "machine-health", "version_policy": "follow_fleet"}


def _agent(
    sources: dict, pipelines: list[tuple[str, str, str, str | None]], waiting: frozenset[str] = frozenset()
) -> SimpleNamespace:
    """An agent's config and pipelines ((name, source, slot, waveform tag)), every slot serving but ``waiting``'s
    (no package yet)."""
    cfg = parse_config(
        {
            "agent": {"id": "gw1"},
            "trusted_keys": ["keys/fleet.pub"],
            "sources": sources,
            "models": {slot: FLEET_FED for _, _, slot, _ in pipelines},
            "pipelines": [
                {"name": n, "source": src, "model": slot, **({"window": {"waveform": tag}} if tag else {})}
                for n, src, slot, tag in pipelines
            ],
        },
        "gw1.yaml",
        local_checks=False,
    )
    pipes = [
        SimpleNamespace(
            name=s.name, s=s, slot=SimpleNamespace(failed="no package yet" if s.model in waiting else None)
        )
        for s in cfg.pipelines
    ]
    return SimpleNamespace(cfg=cfg, pipelines=pipes)


def test_a_new_pipeline_is_matched_to_a_dropped_judging_one_by_what_it_reads_not_by_its_sources_name():
    """One MQTT source feeds each machine's pipeline (its own waveform tag). Matched on the source's name, a config
    removing machine A's pipeline and adding machine C's (a new fleet-fed slot) was rolled back, naming pA, which pC
    never read; and one renaming the source with the slot and the pipeline was applied, the pipeline judging
    nothing on every agent of the rollout."""
    running = _agent(
        {"plant": MQ}, [("pA", "plant", "vib_a", "plant/a/vib"), ("pB", "plant", "vib_b", "plant/b/vib")]
    )
    judging = _judging(running)
    other_machine = _agent(
        {"plant": MQ}, [("pB", "plant", "vib_b", "plant/b/vib"), ("pC", "plant", "vib_c", "plant/c/vib")]
    )
    assert "vib_c" not in _taken_judging(other_machine, judging)
    renamed = _agent(
        {"plant2": MQ}, [("pA2", "plant2", "vib_a2", "plant/a/vib"), ("pB", "plant2", "vib_b", "plant/b/vib")]
    )
    assert _taken_judging(renamed, judging)["vib_a2"] == (
        "pipeline pA2 reads source plant2 (source plant under the running config), which pipeline pA "
        "(not in this config) judged on slot 'vib_a' under the running config"
    )
    # the source kept by name, its settings changed (another port) with the rename: still matched
    moved = _agent(
        {"plant": {**MQ, "port": 1884}},
        [("pA2", "plant", "vib_a2", "plant/a/vib"), ("pB", "plant", "vib_b", "plant/b/vib")],
    )
    assert "vib_a2" in _taken_judging(moved, judging)


def test_a_source_renamed_with_how_it_reads_changed_is_matched_by_where_it_reads():
    """A camera renamed with its slot and its pipeline, its fps changed too: matched neither by the source's name nor
    by its settings, the config was applied, reported healthy (the pipeline named waiting_for_fleet, error rate 0),
    and the camera judged nothing on every agent of the rollout. Where a source reads (a camera's url, a broker and
    its subscriptions) is its identity; another machine's subscription on the same broker is not matched."""
    cam = {"type": "camera", "url": "/srv/line1/frames", "fps": 5}
    running = _agent(
        {"cam": cam, "plant": MQ}, [("pv", "cam", "vision", None), ("pA", "plant", "vib_a", "vib")]
    )
    judging = _judging(running)
    renamed = _agent({"cam2": {**cam, "fps": 6}, "plant": MQ}, [("pw", "cam2", "visoin", None)])
    assert _taken_judging(renamed, judging)["visoin"].startswith(
        "pipeline pw reads source cam2 (source cam under the running config), which pipeline pv (not in this config) "
        "judged on slot 'vision'"
    )
    other = {**MQ, "subscriptions": [{"topic": "plant/c/#"}], "keepalive_s": 45}
    machine_c = _agent({"cam": cam, "c": other}, [("pv", "cam", "vision", None), ("pC", "c", "vib_c", "vib")])
    assert "vib_c" not in _taken_judging(machine_c, judging)
    line2 = _agent(
        {"cam": cam, "cam2": {**cam, "url": "/srv/line2/frames"}},
        [("pv", "cam", "vision", None), ("p2", "cam2", "vision2", None)],
    )
    assert "vision2" not in _taken_judging(line2, judging)


def test_a_pipeline_renamed_onto_the_name_of_one_that_ran_unjudged_is_matched_by_what_it_reads():
    """A camera's judging pipeline pv dropped and pipeline pw, which ran under the running config unjudged (its
    fleet-fed slot still waiting) on another camera, given pv's camera: matched only for a pipeline new to the
    candidate, the config was applied and the camera judged by nothing on every agent of the rollout. A judging
    pipeline kept by name but moved to another source says so."""
    cam = {"type": "camera", "url": "/srv/line1/frames", "fps": 5}
    cam2 = {**cam, "url": "/srv/line2/frames"}
    running = _agent(
        {"cam": cam, "cam2": cam2},
        [("pv", "cam", "vision", None), ("pw", "cam2", "vision2", None)],
        waiting=frozenset({"vision2"}),
    )
    judging = _judging(running)
    assert set(judging) == {"pv"}
    reused = _agent({"cam": cam}, [("pw", "cam", "vision2", None)], waiting=frozenset({"vision2"}))
    assert _taken_judging(reused, judging)["vision2"] == (
        "pipeline pw reads source cam, which pipeline pv (not in this config) judged on slot 'vision' under the "
        "running config"
    )
    moved = _agent(
        {"cam": cam, "cam2": cam2}, [("pv", "cam2", "vision3", None)], waiting=frozenset({"vision3"})
    )
    assert _taken_judging(moved, judging)["vision3"] == (
        "pipeline pv judged on slot 'vision' under the running config (now source cam2, source cam then)"
    )


async def test_a_slot_failed_on_its_package_under_both_configs_names_the_judging_taken_away():
    """A pipeline on a slot failed on its configured package (refused, under the running config too) given the camera
    of the judging pipeline the candidate drops: rolled back, and the reason says so. It said the slot's refusal
    alone, which the running config had as well, not why this config was refused."""
    import pytest

    from edge_agent.fleet_config import AgentHost
    from edge_agent.models.slot import FailedAtStart

    cam = {"type": "camera", "url": "/srv/line1/frames", "fps": 5}
    running = _agent(
        {"cam": cam, "cam2": {**cam, "url": "/srv/line2/frames"}},
        [("pv", "cam", "vision", None), ("pw", "cam2", "vision2", None)],
        waiting=frozenset({"vision2"}),
    )
    candidate = _agent({"cam": cam}, [("pw", "cam", "vision2", None)], waiting=frozenset({"vision2"}))
    refused = "its configured package pkg/v2.tar is refused: model.onnx digest mismatch"
    slot = SimpleNamespace(
        failed=refused, waiting_for_fleet=False, config=SimpleNamespace(package="pkg/v2.tar")
    )

    async def stop() -> None:
        pass

    candidate.slots, candidate.stop = {"vision2": slot}, stop
    host = SimpleNamespace(agent=candidate)
    with pytest.raises(FailedAtStart) as raised:
        await AgentHost._refuse_failed_slots(
            host, {"vision": None, "vision2": "pkg/v2.tar"}, _judging(running)
        )
    assert str(raised.value) == (
        "model slot 'vision2': pipeline pw reads source cam, which pipeline pv (not in this config) judged on slot "
        f"'vision' under the running config, and judges nothing here: {refused}"
    )
