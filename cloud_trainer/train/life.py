"""The remaining-life prior a maintenance package carries (``manifest.life_prior``), from the
dataset's runs to failure.

Each run with a failure time (``failure_s`` in the historian labels, or the simulator's) is played
as an agent would see it: its leading healthy windows (labelled healthy, or at a health of at
least 0.99, as the simulator's runs are before they degrade) commission a baseline (at least
``MIN_HEALTHY``; the shaft speed from their averaged spectrum), then every window gets the health
index (amplitude growth over that baseline) and the anomalous flag at the agent's default
false-alarm rate (``model_packager.health``, the same code as the edge). ``model_packager.life``
then fits the prior on these runs: onset-to-failure times, failure levels and the weights of the
two pieces of evidence, cross-validated run by run. Runs without enough healthy windows first, or
whose fault the baseline never flagged, are left out (counted in the log); with fewer than two
usable runs the package carries no prior and the agent's remaining life is the trend alone.
Limits: the bearing's geometry is not known here (the blind envelope features are used), so the
health index can differ a little from an agent's that has it.
"""

from __future__ import annotations

import numpy as np

from cloud_trainer.train.data import VibrationData
from cloud_trainer.train.maintenance import NORMAL_HEALTH
from model_packager.condition import condition_features, estimate_speed_hz, feature_vector
from model_packager.health import growth, out_of_fold_threshold, rise, robust_stats
from model_packager.life import LifeRun, fit_life_prior

MIN_HEALTHY = 20  # leading healthy windows a run needs to commission its baseline
MAX_HEALTHY = 360
FALSE_ALARM_RATE, CONFIRM = 1e-4, 2  # the agent's defaults (edge_agent.maintenance.settings)
SPEED_RANGE_HZ = (300.0 / 60, 6000.0 / 60)


def run_to_failure(
    wave: np.ndarray, healthy: np.ndarray, t: np.ndarray, fs: float, failure_t: float, group: str
) -> LifeRun | None:
    """One run (windows in time order) as the agent would see it, or None without a healthy start."""
    lead = int(np.argmin(healthy)) if not healthy.all() else len(healthy)
    n_ref = min(lead, MAX_HEALTHY)
    if n_ref < MIN_HEALTHY or lead >= len(healthy):  # no healthy start, or no degradation after it
        return None
    speed = estimate_speed_hz(wave[: min(n_ref, 20)], fs, *SPEED_RANGE_HZ)
    rng = (max(SPEED_RANGE_HZ[0], 0.85 * speed), min(SPEED_RANGE_HZ[1], 1.15 * speed))
    rows = np.array([feature_vector(condition_features(w, fs, None, None, "g", rng)) for w in wave])
    med, scale = robust_stats(rows[:n_ref])
    thr = out_of_fold_threshold(rows[:n_ref], FALSE_ALARM_RATE, CONFIRM)
    after = slice(n_ref, None)  # the commissioning windows are not part of the run's life
    h = np.array([growth(r, med) for r in rows[after]])
    return LifeRun(t[after], h, rise(rows[after], med, scale) >= thr, failure_t, group)


def prior_from_dataset(data: VibrationData, log=lambda msg: None) -> dict | None:
    """``manifest.life_prior`` (a dict) from the dataset's runs to failure, or None (said in the log)."""
    runs, skipped = [], 0
    for r in np.unique(data.run_id):
        idx = np.flatnonzero(data.run_id == r)
        idx = idx[np.argsort(data.t_s[idx], kind="stable")]
        rul = data.rul_s[idx]
        if not np.isfinite(rul).any():
            continue
        failure_t = float(np.nanmax(data.t_s[idx] + rul))
        run = run_to_failure(
            data.waveforms[idx].astype(np.float64),
            (data.fault[idx] == 0) | (data.health[idx] >= NORMAL_HEALTH),
            data.t_s[idx].astype(float),
            data.sample_rate_hz,
            failure_t,
            str(r),
        )
        if run is None:
            skipped += 1
            continue
        runs.append(run)
    try:
        prior = fit_life_prior(runs, source=f"dataset {data.digest[:23]}: {len(runs)} runs to failure")
    except ValueError as exc:
        log(
            f"remaining life: no prior in the package ({exc}; {skipped} run(s) to failure had fewer than "
            f"{MIN_HEALTHY} healthy windows first): agents answer from the trend alone"
        )
        return None
    log(
        f"remaining life: prior from {len(runs)} runs to failure ({skipped} without a healthy start left out); "
        f"trend weight {prior.trend_weight:.2f}"
    )
    return prior.model_dump(mode="json")
