"""Remaining life from the health index, with an interval, or "not enough evidence".

The health index is the baseline's growth: the largest amplitude ratio of a feature over the
asset's baseline (1 = as commissioned, 2 = doubled). ``LifeTrend.update(t, h, anomalous)``:

- keeps the index since the last reset (a repair, a relearn), smoothed by a short running median;
- before the onset (three windows in a row anomalous) and until the index has clearly risen since
  (log-slope at least ``min_t`` standard errors), answers ``None`` with ``state = "not enough
  evidence"``: a flat index, however high, gives no number;
- with a ``LifePrior`` (run-to-failure history: the package's manifest, or declared in the config),
  the answer combines the time elapsed since onset (the fleet's onset-to-failure times, survived
  so far) with the index's recent log-trend towards the failure levels the fleet saw, weighted by
  how each did on the history (``model_packager.life``); ``basis = "history+trend"``;
- without one, a line on the latest ``recent`` share of the index since onset is extrapolated to
  ``failure_level``, the interval from the slope's standard error (+-2 se) and ``failure_level_sd``
  (``basis = "trend only"``): honest about its spread, but one failure level cannot know when the
  end comes on machines that fail at different amplitudes;
- the answer is monotone within a run: never more than the previous answer (``reset()`` on a
  repair starts a new run); once given, it keeps counting down while the trend is unclear.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np

from model_packager.life import ONSET_WINDOWS, LifePrior, estimate, rising

NOT_ENOUGH = "not enough evidence"


@dataclass
class LifeEstimate:
    state: str  # "estimate" | NOT_ENOUGH
    remaining: float | None = None  # seconds (or the caller's time unit)
    low: float | None = None
    high: float | None = None
    slope_per_s: float | None = None
    basis: str | None = None  # "history+trend" | "trend only"

    def to_dict(self) -> dict:
        r = lambda v: None if v is None else round(float(v), 3)  # noqa: E731
        return {
            "state": self.state,
            "remaining": r(self.remaining),
            "low": r(self.low),
            "high": r(self.high),
            "slope_per_s": r(self.slope_per_s),
            "basis": self.basis,
        }


class LifeTrend:
    def __init__(
        self,
        failure_level: float = 10.0,
        min_t: float = 4.0,
        min_points: int = 15,
        history: int = 2000,
        smooth: int = 5,
        onset_level: float = 1.0,
        recent: float = 0.4,
        max_spread: float = 1e9,
        prior_life: tuple[float, float] | None = None,
        failure_level_sd: float = 0.0,
        prior: LifePrior | None = None,
    ) -> None:
        self.failure_level_sd = failure_level_sd  # how well the failure level is known (widens the interval)
        # prior: run-to-failure history (model_packager.life); prior_life: (mean, sd) of onset-to-failure
        # times declared by hand, made into one
        if prior is None and prior_life is not None:
            prior = LifePrior.from_normal(
                prior_life[0], prior_life[1], failure_level, source="declared (mean, sd)"
            )
        self.prior = prior
        self.basis = "history+trend" if prior is not None else "trend only"
        self.monotone = True
        self.max_spread = max_spread  # answer only when (high - low) / remaining is at most this
        self.failure_level = failure_level
        self.onset_level = onset_level
        self.recent = recent  # the fit uses this share of the points since onset (the local slope)
        self.min_t = min_t
        self.min_points = min_points
        self.raw: collections.deque = collections.deque(maxlen=smooth)
        self.t: collections.deque = collections.deque(maxlen=history)
        self.h: collections.deque = collections.deque(maxlen=history)
        self.onset: float | None = None
        self.last: float | None = None
        self.last_t: float | None = None
        self._above = 0
        self._opened = False  # the index has clearly risen since onset in this run

    def use_prior(self, prior: LifePrior | None) -> None:
        """Answer with this prior from now on (``None``: the trend alone); the run's history stays."""
        self.prior = prior
        self.basis = "history+trend" if prior is not None else "trend only"

    def reset(self) -> None:
        self.raw.clear()
        self.t.clear()
        self.h.clear()
        self.onset = self.last = self.last_t = None
        self._above = 0
        self._opened = False

    def update(self, t: float, h: float, anomalous: bool | None = None) -> LifeEstimate:
        """``anomalous``: the baseline's say on this window (onset = 3 in a row); else ``h >= onset_level``."""
        self.raw.append(float(h))
        hs = float(np.median(self.raw))
        self.t.append(float(t))
        self.h.append(hs)
        over = anomalous if anomalous is not None else hs >= self.onset_level
        self._above = self._above + 1 if over else 0
        if self.onset is None and self._above >= ONSET_WINDOWS:
            self.onset = self.t[-ONSET_WINDOWS]
        est = self._fit()
        if est.remaining is not None:
            if self.last is not None and self.monotone:  # monotone within a run (never up; a repair resets)
                est.remaining = min(est.remaining, self.last)
                assert est.low is not None and est.high is not None  # _fit gives all three or none
                est.low = min(est.low, est.remaining)
                est.high = max(est.high, est.remaining)
            self.last, self.last_t = est.remaining, t
        elif self.last is not None and self.last_t is not None:  # once given, keep counting it down
            rem = max(0.0, self.last - (t - self.last_t))
            est = LifeEstimate("estimate", rem, rem, rem, basis=self.basis)
            self.last, self.last_t = rem, t
        return est

    def _since_onset(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.onset is None:
            return None
        t = np.asarray(self.t)
        sel = t >= self.onset
        return t[sel], np.asarray(self.h)[sel]

    def _fit(self) -> LifeEstimate:
        run = self._since_onset()
        if run is None:
            return LifeEstimate(NOT_ENOUGH, basis=self.basis)
        tt, hh = run
        if not self._opened:
            self._opened = rising(tt, hh, self.min_t)
            if not self._opened:
                return LifeEstimate(NOT_ENOUGH, basis=self.basis)
        if self.prior is not None:
            rem, low, high = estimate(self.prior, tt, hh)
            return LifeEstimate("estimate", rem, low, high, basis=self.basis)
        return self._trend_only(tt, hh)

    def _trend_only(self, tt: np.ndarray, hh: np.ndarray) -> LifeEstimate:
        if len(tt) < self.min_points:
            return LifeEstimate(NOT_ENOUGH, basis=self.basis)
        keep = max(self.min_points, int(round(self.recent * len(tt))))
        tt, hh = tt[-keep:], hh[-keep:]
        t0 = tt[-1]
        x = tt - t0
        xm = x.mean()
        sxx = float(((x - xm) ** 2).sum())
        if sxx <= 0:
            return LifeEstimate(NOT_ENOUGH, basis=self.basis)
        b = float(((x - xm) * (hh - hh.mean())).sum() / sxx)
        a = float(hh.mean() - b * xm)
        resid = hh - (a + b * x)
        se = math.sqrt(float((resid**2).sum()) / max(1, len(x) - 2) / sxx)
        if b <= 0 or b < self.min_t * se:
            return LifeEstimate(NOT_ENOUGH, slope_per_s=b, basis=self.basis)
        now = max(a, float(hh[-1]))  # the level now: the fit's, or the latest when it is already past
        rem = max(0.0, (self.failure_level - now) / b)
        fast, slow = b + 2 * se, max(b - 2 * se, 1e-12)
        lv, dl = self.failure_level, 2 * self.failure_level_sd
        low, high = max(0.0, (lv - dl - now) / fast), max(0.0, (lv + dl - now) / slow)
        if rem > 0 and (high - low) / rem > self.max_spread:
            return LifeEstimate(NOT_ENOUGH, slope_per_s=b, basis=self.basis)
        return LifeEstimate("estimate", rem, low, high, b, basis=self.basis)
