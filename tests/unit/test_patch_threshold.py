"""The patch recipes' threshold: where good and defect scores overlap, the stated false-reject rate
(``--false-reject-rate``) sets how many good parts may be rejected to catch more defects."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_trainer.train.patch_classifier import calibrate


def _scores(n_good: int = 400, n_ng: int = 200, seed: int = 7):
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, n_good), rng.normal(1.5, 1.0, n_ng)  # log-scale scores that overlap


def _rates(cal: dict, good: np.ndarray, ng: np.ndarray) -> tuple[float, float]:
    return float((good >= cal["centre"]).mean()), float((ng >= cal["centre"]).mean())


def test_a_higher_false_reject_rate_catches_more_defects_and_rejects_about_that_share_of_good_parts():
    good, ng = _scores()
    fresh_good, fresh_ng = _scores(20000, 10000, seed=8)  # new parts of the same line
    strict, lenient = calibrate(good, ng, 0.01), calibrate(good, ng, 0.05)
    assert strict["false_reject_rate"] == 0.01 and lenient["false_reject_rate"] == 0.05
    assert "99.0% quantile" in strict["rule"] and "95.0% quantile" in lenient["rule"]
    fr_strict, caught_strict = _rates(strict, fresh_good, fresh_ng)
    fr_lenient, caught_lenient = _rates(lenient, fresh_good, fresh_ng)
    assert caught_lenient > caught_strict + 0.15
    # about the stated share of new good parts (400 scores set it: the sampling spread is a few tenths)
    assert fr_strict <= 0.025 and 0.025 <= fr_lenient <= 0.09


def test_without_defect_images_the_threshold_is_the_good_images_quantile_at_the_stated_rate():
    good, _ = _scores()
    cal = calibrate(good, np.zeros(0), 0.05)
    assert cal["ng_quantile"] is None and "5.0% false rejects" in cal["rule"]
    assert 0.03 <= (good >= cal["centre"]).mean() <= 0.06


@pytest.mark.parametrize("rate", [0.0, 0.5, -0.1])
def test_a_vision_build_refuses_a_false_reject_rate_outside_0_to_half(tmp_path, rate):
    from cloud_trainer.train.families.base import StageError
    from cloud_trainer.train.families.vision import VisionFamily
    from cloud_trainer.train.pipeline import BuildSettings

    s = BuildSettings(
        family="vision",
        dataset=None,
        registry=None,
        signing_key=tmp_path / "k",
        workdir=tmp_path,
        recipe="patch",
        false_reject_rate=rate,
    )
    with pytest.raises(StageError, match=r"--false-reject-rate .*share in \(0, 0.5\)"):
        VisionFamily().train(s, None, None, lambda *_: None)
