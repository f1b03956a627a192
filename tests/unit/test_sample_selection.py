"""Which results are uploaded as samples (``upload:``), and the option that was removed."""

from __future__ import annotations

import pytest

from edge_agent.config import ConfigError, parse_config
from edge_agent.outbox.selector import SampleSelector
from edge_agent.outbox.settings import SampleSelectionSettings
from edge_agent.types import Result


def result(verdict: str = "OK", score: float = 0.1, margin: float | None = None) -> Result:
    return Result("p", "cam", 1, 0.0, "part", "1.0.0", "onnxruntime", verdict, score, margin=margin)


def test_ng_low_margin_and_nothing_else_are_chosen_when_random_fractions_are_zero():
    sel = SampleSelector(SampleSelectionSettings(ok_fraction=0.0, unsure_fraction=0.0, uncertain_margin=0.2))
    assert sel.choose(result("NG", 0.9)) == "ng"
    assert sel.choose(result("OK", 0.45, margin=0.1)) == "uncertain"
    assert sel.choose(result("OK", 0.45, margin=0.5)) is None
    assert sel.choose(result("UNSURE", 0.45)) is None
    assert sel.chosen == {"ng": 1, "uncertain": 1}


def test_a_failed_item_is_chosen_and_counted_under_its_failure_not_unsure():
    """An item the model failed on is UNSURE with its failure in ``outputs.model_error``: its sample's reason is the
    failure, and the selector counts it so. Before, the agent rewrote the reason it was given while the selector
    counted the sample ``unsure``, a frame judged far outside the training inputs."""
    sel = SampleSelector(SampleSelectionSettings(ok_fraction=0.0, unsure_fraction=1.0))
    failed = Result(
        "p",
        "cam",
        1,
        0.0,
        "part",
        "1.0.0",
        "onnxruntime",
        "UNSURE",
        None,
        outputs={"model_error": "bad_input"},
    )
    assert sel.choose(failed) == "bad_input"
    assert sel.choose(result("UNSURE")) == "unsure"
    assert sel.chosen == {"bad_input": 1, "unsure": 1}


def test_the_hourly_budget_caps_the_uploads_and_counts_what_it_refused():
    sel = SampleSelector(SampleSelectionSettings(max_per_hour=2))
    assert [sel.choose(result("NG")) for _ in range(4)] == ["ng", "ng", None, None]
    assert sel.over_budget == 2


def test_uncertain_score_band_is_refused_by_name_with_the_fix():
    with pytest.raises(ConfigError) as ei:
        parse_config(
            {"agent": {"id": "a1", "site": "s", "line": "l"}, "upload": {"uncertain_score_band": 0.1}},
            "line3.yaml",
        )
    assert ei.value.errors == [
        "line3.yaml: upload: option 'uncertain_score_band' was removed: it never had an "
        "effect; remove it (uncertain_margin selects a classifier's borderline results)"
    ]
