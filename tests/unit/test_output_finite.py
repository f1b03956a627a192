"""The slot's NaN/Inf check on a model's outputs, which decides whether a frame's result is served
or counted as ``nonfinite_output`` (and can roll a bad model back): class vectors (summed as Python
floats) and heat maps (one reduction in double) alike."""

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
