"""The alarm threshold a short commissioning learns (``model_packager.health.out_of_fold_threshold``): set on
out-of-fold scores, it must stay near the rate it states, neither far above a fault's rise (the fault reads OK) nor
under a healthy window's (the machine alarms)."""

from __future__ import annotations

import numpy as np

from model_packager import health
from model_packager.condition import FEATURES

# a running machine's condition features: logs of amplitudes (g, mm/s) and kurtosis, crest as they are
_LEVEL = {
    "rms": 0.05,
    "hf_rms": 0.01,
    "velocity_rms": 1.2,
    "order_1x": 0.03,
    "order_2x": 0.01,
    "order_3x": 0.004,
}
_LEVEL |= {"orders_4_8": 0.003, "env_bpfo": 0.002, "env_bpfi": 0.002, "env_bsf": 0.001, "env_ftf": 0.001}
_SPREAD = {
    "rms": 0.05,
    "kurtosis": 0.35,
    "crest": 0.3,
    "hf_rms": 0.03,
    "velocity_rms": 0.06,
    "order_1x": 0.07,
}
_SPREAD |= {"order_2x": 0.07, "order_3x": 0.05, "orders_4_8": 0.05, "env_bpfo": 0.2, "env_bpfi": 0.2}
_SPREAD |= {"env_bsf": 0.15, "env_ftf": 0.15}
MED = np.asarray([{"kurtosis": 3.0, "crest": 4.0}.get(k) or np.log(_LEVEL[k]) for k in FEATURES])
SD = np.asarray([_SPREAD[k] for k in FEATURES])
FAR, CONFIRM = 1e-4, 2


def test_a_20_window_commissioning_learns_a_threshold_an_imbalance_x3_rises_over_and_healthy_windows_stay_under():
    # 120 commissionings of 20 windows. Scored in two halves, each against the other ten windows' medians and MADs,
    # the out-of-fold scores were wider than the twenty-window statistics give afterwards: thresholds up to 4x the
    # healthy scores' 1 % quantile, and a 1x grown 3x read OK after 18 of them (11 now)
    missed = healthy_alarms = 0
    for seed in range(120):
        rng = np.random.default_rng(seed)
        x = MED + SD * rng.standard_normal((20, MED.size))
        thr = health.out_of_fold_threshold(x, FAR, CONFIRM, relative=True)
        med, scale = health.robust_stats(x)
        fault = MED + SD * rng.standard_normal((1, MED.size))
        fault[0, FEATURES.index("order_1x")] += np.log(3.0)
        missed += bool(health.rise(fault, med, scale, relative=True)[0] < thr)
        h = health.rise(MED + SD * rng.standard_normal((100, MED.size)), med, scale, relative=True) >= thr
        healthy_alarms += int((h[1:] & h[:-1]).sum())
    assert missed <= 14, missed
    # the stated rate, 1e-4 per window after 2 in a row, is about 1 of these 11,880 pairs (1 before, 3 now)
    assert healthy_alarms <= 6, healthy_alarms
