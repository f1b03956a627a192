"""Which passing candidate serves (``edge_agent.models.select._choose``): the first in the order tried unless
another is faster by more than ``PREFER_MARGIN``. Picking the fastest among candidates within the timing runs'
noise gave two agents of one CPU kind different forms of the same package in one demo run (INT8 0.20 ms against
FP32 0.21 ms on a Sapphire Rapids), so slightly different scores for the same part."""

from __future__ import annotations

from edge_agent.models.select import PREFER_MARGIN, PREFER_MIN_SAVING_MS, Trial, _choose


class _Engine:  # stands for a loaded engine: _choose only hands it back
    def __init__(self, name: str) -> None:
        self.name = name


def _passing(*timed: tuple[str, str, float]) -> list:
    return [(Trial(engine, form, True, p50_ms=ms), _Engine(f"{form}/{engine}")) for engine, form, ms in timed]


def test_candidates_within_the_timings_noise_keep_the_first_in_order():
    passing = _passing(
        ("onnxruntime", "int8", 0.21),
        ("onnxruntime", "fp32", 0.20),
        ("openvino", "int8", 0.26),
        ("openvino", "fp32", 0.34),
    )
    trial, engine = _choose(passing)
    assert (trial.engine, trial.form, engine.name) == ("onnxruntime", "int8", "int8/onnxruntime")


def test_a_candidate_clearly_faster_serves():
    slow = 1.0
    passing = _passing(
        ("onnxruntime", "int8", slow),
        ("onnxruntime", "fp32", slow * (1 - PREFER_MARGIN) * 0.95),
        ("openvino", "int8", 0.9),
    )
    trial, _ = _choose(passing)
    assert (trial.engine, trial.form) == ("onnxruntime", "fp32")


def test_a_sub_millisecond_model_keeps_the_first_form_when_the_other_saves_next_to_nothing():
    """0.22 ms INT8 against 0.18 ms FP32 (18 % apart: a shared core's noise on a sub-millisecond model) gave
    the two agents of one demo run different forms of the same package; 0.04 ms an item is worth nothing."""
    passing = _passing(
        ("onnxruntime", "int8", 0.22), ("onnxruntime", "fp32", 0.18), ("openvino", "int8", 0.25)
    )
    trial, _ = _choose(passing)
    assert (trial.engine, trial.form) == ("onnxruntime", "int8")
    # a saving past both bounds still wins
    passing = _passing(("onnxruntime", "int8", 1.0), ("onnxruntime", "fp32", 1.0 - 2 * PREFER_MIN_SAVING_MS))
    assert _choose(passing)[0].form == "fp32"
