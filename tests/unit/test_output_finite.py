"""The slot's NaN/Inf check on a model's outputs, which decides whether a frame's result is served
or counted as ``nonfinite_output`` (and can roll a bad model back): class vectors (summed as Python
floats) and heat maps (one reduction in double) alike."""

import math

import numpy as np
import pytest

from edge_agent.models.slot import _SMALL_OUTPUT, _all_finite


@pytest.mark.parametrize("size", [1, 5, _SMALL_OUTPUT, _SMALL_OUTPUT + 1, 64 * 64])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_one_bad_value_anywhere_is_caught(size, dtype):
    rng = np.random.default_rng(size)
    ok = rng.standard_normal((1, size)).astype(dtype)
    assert _all_finite({"logits": ok, "ids": np.arange(3)})
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, size // 2, size - 1):
            x = ok.copy()
            x[0, where] = bad
            assert not _all_finite({"ids": np.arange(3), "logits": x}), (bad, where)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_the_largest_finite_values_are_not_taken_for_overflow(dtype):
    top = np.finfo(dtype).max
    for size in (5, _SMALL_OUTPUT, _SMALL_OUTPUT + 1, 10_000):
        assert _all_finite({"heatmap": np.full((1, size), top, dtype=dtype)})
        assert _all_finite({"heatmap": np.full((1, size), -top, dtype=dtype)})


def test_integer_outputs_and_lists_are_accepted():
    assert _all_finite({"label": np.array([3], np.int64), "probs": [0.25, 0.75]})
    assert not _all_finite({"probs": [0.25, float("nan")]})


def _manifest(**output):
    from model_packager.manifest import Manifest
    from tests.support.models import vision_spec

    spec = vision_spec(heatmap=False)
    spec["outputs"][0].update(output)
    return Manifest(**spec)


@pytest.mark.parametrize(
    "output", [{}, {"threshold": 0.3}, {"ok_label": "dent"}, {"ok_label": None, "threshold": None}]
)
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_a_plain_classifiers_logits_read_by_its_plan_give_interprets_very_result(output, dtype):
    """``ModelSlot.infer`` reads a one-output classifier's logits by its ``LogitsPlan`` (no general walk over the
    outputs on every frame): verdict, score, label, ok label, probabilities and margin are ``interpret``'s."""
    from model_packager.preprocess import interpret, interpret_logits, logits_plan, logits_values

    m = _manifest(**output)
    plan = logits_plan(m)
    assert plan is not None
    rng = np.random.default_rng(7)
    verdicts = set()
    for i in range(200):
        z = (rng.standard_normal((1, 6)) * (0.1 + i / 20)).astype(dtype)
        if i % 50 == 0:
            z[0, 1] = z[0, 3]  # a tie for the top class
        out = {"logits": z}
        values = logits_values(plan, out)
        assert values is not None and _all_finite(out) == math.isfinite(sum(values))
        want = interpret(m, out)
        assert interpret_logits(plan, values) == want
        verdicts.add(want.verdict)
    assert verdicts == ({"OK", "NG"} if m.outputs[0].threshold and m.outputs[0].ok_label else {"OK"})


def test_outputs_a_logits_plan_does_not_fit_are_left_to_interpret():
    from model_packager.preprocess import logits_plan, logits_values

    plan = logits_plan(_manifest())
    assert plan is not None
    ok = np.zeros((1, 6), np.float32)
    assert logits_values(plan, {"logits": ok}) == [0.0] * 6
    for out in (
        {"logits": ok, "extra": ok},  # another output: its finiteness is checked too
        {"other": ok},
        {"logits": np.zeros((1, 7), np.float32)},  # interpret names the mismatch
        {"logits": np.zeros((1, 6), np.float64)},
        {"logits": [0.0] * 6},
    ):
        assert logits_values(plan, out) is None
    assert logits_plan(_manifest(role="class_probs")) is None
    from model_packager.manifest import Manifest
    from tests.support.models import vision_spec

    spec = vision_spec(heatmap=False)
    spec["preprocessing"]["tiles"] = [2, 1]  # the worst tile's verdict: interpret's
    assert logits_plan(Manifest(**spec)) is None
    assert logits_plan(Manifest(**vision_spec())) is None  # a heat map beside the logits
