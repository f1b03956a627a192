"""Runs to failure made at the health-index level (no signals), independent of the bench's generator:
a healthy stretch, then the log-index grows convexly to a failure level over 3-12 h, with
multiplicative noise. ``level_spread`` sets how much the failure level differs between runs."""

from __future__ import annotations

import numpy as np

from model_packager.life import LifeRun

ONSET = 1.35  # the runs' "anomalous" level


def degradation_runs(seed: int, n: int, level_spread: tuple[float, float] = (0.4, 3.0), dt: float = 300.0):
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(n):
        healthy, life = int(rng.integers(10, 40)), float(rng.uniform(3, 12)) * 3600
        level = 8.0 * rng.uniform(*level_spread)
        t = np.arange(0.0, (healthy - 1) * dt + life + dt / 2, dt)
        tau = np.clip((t - healthy * dt) / life, 0, None)
        h = np.exp(np.log(level) * tau ** rng.uniform(1.0, 3.0) + rng.normal(0, 0.08, len(t)))
        runs.append(LifeRun(t, h, h > ONSET))
    return runs
