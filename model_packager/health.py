"""An asset's healthy statistics and its health index, the same in the cloud and at the edge.

``learn(rows)`` takes condition-feature rows (``model_packager.condition.feature_vector``) of an
asset's healthy windows and returns their robust statistics (median, scale from the MAD) and an
alarm threshold on the rise score at a stated false-alarm rate after ``confirm`` windows in a row
(set on out-of-fold scores of blocked folds, drift included). Against them, ``rise(row)`` is the
largest one-sided robust z of a window (rises only) and ``growth(row)`` the health index: the
largest amplitude ratio of a feature over its healthy median (1 = as commissioned). The edge's
per-asset baseline (``edge_agent.maintenance.baseline``) and the cloud's remaining-life prior
(``cloud_trainer.train.life``) both use these, so a failure level learned on history means the same
thing on an asset.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from model_packager.condition import AMPLITUDE_FEATURES, FEATURES

SCALE_FLOOR = 0.05  # of a feature's own magnitude, so a near-constant feature cannot alarm on noise
LOG_FEATURES = [i for i, k in enumerate(FEATURES) if k not in ("kurtosis", "crest")]  # logs of amplitudes
# The least robust spread of a log feature (amplitudes, envelope prominences): one robust deviation is
# at least a 16 % change. An hour of commissioning at one load sees levels steadier than a healthy
# machine keeps over days (a shift's load, the day's temperature, a product change move its levels by
# 1.3-2x); scaled by that hour's spread alone, such a change read as tens of deviations and alarmed.
LOG_SCALE_FLOOR = 0.15
TAIL_WINDOWS = 5  # learned windows above the empirical quantile a threshold rests on
_RMS = FEATURES.index("rms")
# the amplitudes (logs) that ``relative`` scoring also measures against the window's common level
AMPLITUDE_INDEX = np.asarray([FEATURES.index(k) for k in AMPLITUDE_FEATURES])
_COMMON_INDEX = np.asarray([_RMS, *AMPLITUDE_INDEX])
_HF = FEATURES.index("hf_rms")
_COMMON_LIST = _COMMON_INDEX.tolist()


def robust_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    med = np.median(x, axis=0)
    mad = 1.4826 * np.median(np.abs(x - med), axis=0)
    std = x.std(axis=0)
    scale = np.maximum(np.maximum(mad, 0.5 * std), SCALE_FLOOR * np.maximum(np.abs(med), 1.0) * 0.2)
    return med, scale


def scoring_scale(scale: np.ndarray) -> np.ndarray:
    """The spread a rise is measured in: the learned one, at least ``LOG_SCALE_FLOOR`` for the log
    features. Applied when scoring, not stored, so a baseline learned before is scored the same way."""
    out = np.array(scale, dtype=np.float64)
    out[LOG_FEATURES] = np.maximum(out[LOG_FEATURES], LOG_SCALE_FLOOR)
    return out


def rise_z(x: np.ndarray, med: np.ndarray, scale: np.ndarray, relative: bool = False) -> np.ndarray:
    """Per row and feature, the robust z (in ``scoring_scale`` deviations). ``relative``: an amplitude's
    z is the smaller of its rise and its rise over the window's common level (``common_rise``): a line
    counts as risen only by as much as it rose more than the machine's overall level did. A load change
    lifts a fan's blade-pass or a gear's mesh 2-2.5x at a 1.8-2x shift with the rest of the spectrum,
    the high band included (not a fault); a fault lifts its own lines out of the rest."""
    d = np.atleast_2d(x) - med
    sc = scoring_scale(scale)
    z = d / sc
    if relative:
        zr = (d[:, AMPLITUDE_INDEX] - common_rise(d)[:, None]) / sc[AMPLITUDE_INDEX]
        z[:, AMPLITUDE_INDEX] = np.minimum(z[:, AMPLITUDE_INDEX], zr)
    return z


def common_rise(d: np.ndarray) -> np.ndarray:
    """Per row of rises over the healthy median (logs), the rise of the machine's overall level: the
    median rise of the amplitudes and the RMS, but no more than the RMS's and the high band's own.
    A load change lifts all of them together; a fault that lifts several lines but not the high band
    (a looseness's harmonics, an imbalance's 1x carrying the RMS) has no common level to take off."""
    d2 = np.atleast_2d(d)
    if len(d2) == 1:  # one window (the agent's case): plain floats cost less than numpy's calls
        r = d2[0].tolist()
        mid = sorted(r[i] for i in _COMMON_LIST)[len(_COMMON_LIST) // 2]
        return np.asarray([min(mid, r[_RMS], r[_HF])])
    mid = np.sort(d2[:, _COMMON_INDEX], axis=1)[:, len(_COMMON_INDEX) // 2]
    return np.minimum(mid, np.minimum(d2[:, _RMS], d2[:, _HF]))


def rise(x: np.ndarray, med: np.ndarray, scale: np.ndarray, relative: bool = False) -> np.ndarray:
    """The largest one-sided robust z per row (rises only), in ``scoring_scale`` deviations."""
    return np.clip(rise_z(x, med, scale, relative), 0, None).max(axis=1)


def growth(row: np.ndarray, med: np.ndarray) -> float:
    """The health index: the largest amplitude ratio over the healthy median (features are logs)."""
    return float(np.exp(np.clip(np.asarray(row) - med, 0, None)[LOG_FEATURES].max()))


def confirmed_quantile(scores: np.ndarray, far: float, confirm: int) -> float:
    """Threshold t such that the rate of ``confirm`` consecutive windows over t is about ``far``.
    Windows are taken as independent: the per-window rate p with p**confirm = far."""
    p = far ** (1.0 / confirm)
    s = np.sort(scores)
    # the empirical quantile only as far into the tail as the learned windows reach (5 of them above
    # it): beyond, one transient among 60 windows (a door slam) would set the threshold by itself
    q = float(np.quantile(s, 1 - max(p, min(0.5, TAIL_WINDOWS / len(s)))))
    # a tail fit on the log-scores guards against too few learned windows for a small p
    ls = np.log(s + 1e-9)
    mu, sd = float(np.median(ls)), float(1.4826 * np.median(np.abs(ls - np.median(ls)))) + 1e-6
    para = math.exp(mu + NormalDist().inv_cdf(1 - p) * sd)
    return max(q, para) * 1.05


def out_of_fold_threshold(x: np.ndarray, far: float, confirm: int, relative: bool = False) -> float:
    """The threshold from out-of-fold scores: contiguous blocks, each scored against the others
    (``relative``: scored as ``rise`` with ``relative`` scores them). Five blocks, each scored against the other
    four fifths, however few the windows: with two, a 20-window commissioning scored each half against the other
    ten windows' medians and MADs, noisier than the twenty every window is judged against afterwards, and the
    scores' tail fit set thresholds of 3-18 on one machine (an imbalance x8 read OK under 18)."""
    k = min(5, len(x))
    oof = np.empty(len(x))
    for idx in np.array_split(np.arange(len(x)), k):
        rest = np.setdiff1d(np.arange(len(x)), idx)
        m, sc = robust_stats(x[rest])
        oof[idx] = rise(x[idx], m, sc, relative)
    return confirmed_quantile(oof, far, confirm)
