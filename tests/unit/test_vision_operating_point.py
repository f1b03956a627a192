"""The vision threshold is an operating point with margin, and camera perturbations are what they claim."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_trainer.train import perturb
from cloud_trainer.train.vision import operating_curve, operating_point


def _logit(p):
    return np.log(p / (1 - p))


def test_separated_scores_put_the_threshold_midway_between_ok_and_ng_in_logit_space():
    ok = np.array([0.001, 0.01, 0.02, 0.05])
    ng = np.array([0.6, 0.9, 0.99])
    t = operating_point(np.concatenate([ok, ng]), np.r_[np.zeros(4, bool), np.ones(3, bool)], 0.99)
    assert ok.max() < t < ng.min()
    assert _logit(t) == pytest.approx((_logit(ok.max()) + _logit(ng.min())) / 2)


def test_the_lowest_ng_score_is_not_the_threshold_when_a_margin_exists():
    # the old rule (largest threshold keeping recall) sat right at the lowest NG score: any drift of
    # an NG part's score down, or an OK part's up, flipped it
    ok = np.linspace(0.001, 0.1, 50)
    ng = np.linspace(0.7, 0.999, 50)
    t = operating_point(np.r_[ok, ng], np.r_[np.zeros(50, bool), np.ones(50, bool)], 0.99)
    assert t < 0.7 - 0.2 and t > 0.1 + 0.05


def test_overlapping_scores_keep_the_precision_floor_and_take_the_highest_recall():
    rng = np.random.default_rng(0)
    ok = rng.uniform(0.0, 0.6, 500)
    ng = rng.uniform(0.4, 1.0, 200)
    scores, is_ng = np.r_[ok, ng], np.r_[np.zeros(500, bool), np.ones(200, bool)]
    t = operating_point(scores, is_ng, 0.98, min_recall=0.5)  # the precision-bounded rule, reachable here
    precision = (ng >= t).sum() / (scores >= t).sum()
    assert precision >= 0.98
    # no threshold with the precision floor catches more NG parts
    for c in operating_curve(scores, is_ng, n=401):
        if c["ng_precision"] >= 0.98:
            assert c["ng_recall"] <= (ng >= t).mean() + 1e-9


def test_one_ng_outlier_among_good_scores_does_not_drag_the_threshold_into_them():
    ok = np.r_[np.linspace(0.001, 0.4, 150), [0.63]]
    ng = np.r_[[0.19], np.linspace(0.73, 0.999, 140)]  # one odd defect scored like a good part
    t = operating_point(np.r_[ok, ng], np.r_[np.zeros(len(ok), bool), np.ones(len(ng), bool)])
    assert 0.63 < t < 0.73  # the rest of the NG parts caught, no good part rejected


def test_a_low_scoring_ng_part_above_every_good_one_is_still_caught():
    ok = np.linspace(0.001, 0.14, 150)
    ng = np.r_[[0.53], np.linspace(0.92, 0.999, 140)]
    t = operating_point(np.r_[ok, ng], np.r_[np.zeros(len(ok), bool), np.ones(len(ng), bool)])
    assert 0.14 < t < 0.53


def test_degenerate_validation_sets_give_a_neutral_threshold():
    assert operating_point(np.array([0.1, 0.2]), np.array([False, False])) == 0.5
    assert operating_point(np.array([0.1, 0.2]), np.array([True, True])) == 0.5


@pytest.fixture
def part():
    img = np.full((96, 96, 3), 40, np.uint8)
    yy, xx = np.mgrid[0:96, 0:96]
    img[(yy - 48) ** 2 + (xx - 48) ** 2 < 35**2] = 190
    return img


def test_each_perturbation_changes_the_image_within_its_stated_range(part):
    rng = np.random.default_rng(1)
    for kind in perturb.KINDS:
        out = perturb.apply(part, kind, rng)
        assert out.shape == part.shape and out.dtype == np.uint8
        assert not np.array_equal(out, part), kind
    g = perturb.gradient(part, 0.25, 0.0).astype(float) / part.astype(float)
    assert g.max() == pytest.approx(1.125, abs=0.01) and g.min() == pytest.approx(0.875, abs=0.01)
    n = perturb.noise(part, 3.0, np.random.default_rng(0)).astype(float) - part
    assert 2.5 < n[part[..., 0] == 190].std() < 3.5


def test_the_perturbed_copy_is_seeded(part):
    a = perturb.perturbed_copy([part, part], seed=3)
    b = perturb.perturbed_copy([part, part], seed=3)
    c = perturb.perturbed_copy([part, part], seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_a_model_that_separates_poorly_favours_recall_so_that_the_gate_sees_its_false_rejects():
    rng = np.random.default_rng(1)
    ok = rng.uniform(0.0, 1.0, 100)
    ng = rng.uniform(0.0, 1.0, 100)  # no better than chance: precision 0.98 only at a handful of NG parts
    t = operating_point(np.r_[ok, ng], np.r_[np.zeros(100, bool), np.ones(100, bool)])
    assert (ng >= t).mean() >= 0.995
