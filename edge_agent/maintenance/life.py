"""Remaining life from the health index's trend, with an interval, or "not enough evidence".

The health index is the baseline's growth: the largest amplitude ratio of a feature over the
asset's baseline (1 = as commissioned, 2 = doubled; the rule of thumb calls 10x "danger"); the
machine is taken as failed when it reaches ``failure_level``. ``LifeTrend.update(t, h, anomalous)``:

- keeps the index since the last reset (a repair, a relearn), smoothed by a short median;
- before the onset (three windows in a row anomalous) or while the slope is not clearly positive
  (t-statistic < ``min_t``), answers ``None`` with ``state = "not enough evidence"``;
- otherwise fits a line to the latest ``recent`` share of the points since onset (the local slope:
  wear accelerates) and extrapolates to ``failure_level``; the interval comes from the slope's
  standard error (+-2 se) and the failure level's own uncertainty (``failure_level_sd``);
- with ``prior_life`` (mean, sd of onset-to-failure times from past runs), the trend's answer and
  the prior's (mean minus the time since onset) are weighed by their uncertainties;
- the answer is monotone within a run: never more than the previous answer (a repair resets it);
  when the trend stops being clear after an answer, the last answer counts down with time.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np

NOT_ENOUGH = "not enough evidence"


@dataclass
class LifeEstimate:
    state: str  # "estimate" | NOT_ENOUGH
    remaining: float | None = None  # seconds (or the caller's time unit)
    low: float | None = None
    high: float | None = None
    slope_per_s: float | None = None

    def to_dict(self) -> dict:
        r = lambda v: None if v is None else round(float(v), 3)  # noqa: E731
        return {"state": self.state, "remaining": r(self.remaining), "low": r(self.low), "high": r(self.high),
                "slope_per_s": r(self.slope_per_s)}


class LifeTrend:
    def __init__(self, failure_level: float = 10.0, min_t: float = 4.0, min_points: int = 15,
                 history: int = 2000, smooth: int = 5, onset_level: float = 1.0, recent: float = 0.4,
                 max_spread: float = 1e9, prior_life: tuple[float, float] | None = None,
                 failure_level_sd: float = 0.0) -> None:
        self.failure_level_sd = failure_level_sd  # how well the failure level is known (widens the interval)
        # prior_life: (mean, sd) of the time from onset to failure on past runs (history, fleet); the
        # trend's answer is weighed against it by their uncertainties
        self.prior_life = prior_life
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

    def reset(self) -> None:
        self.raw.clear()
        self.t.clear()
        self.h.clear()
        self.onset = self.last = self.last_t = None
        self._above = 0

    def update(self, t: float, h: float, anomalous: bool | None = None) -> LifeEstimate:
        """``anomalous``: the baseline's say on this window (onset = 3 in a row); else ``h >= onset_level``."""
        self.raw.append(float(h))
        hs = float(np.median(self.raw))
        self.t.append(float(t))
        self.h.append(hs)
        over = anomalous if anomalous is not None else hs >= self.onset_level
        self._above = self._above + 1 if over else 0
        if self.onset is None and self._above >= 3:
            self.onset = self.t[-3]
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
            est = LifeEstimate("estimate", rem, rem, rem)
            self.last, self.last_t = rem, t
        return est

    def _fit(self) -> LifeEstimate:
        if self.onset is None:
            return LifeEstimate(NOT_ENOUGH)
        t = np.asarray(self.t)
        h = np.asarray(self.h)
        sel = t >= self.onset
        if sel.sum() < self.min_points:
            return LifeEstimate(NOT_ENOUGH)
        tt, hh = t[sel], h[sel]
        keep = max(self.min_points, int(round(self.recent * len(tt))))
        tt, hh = tt[-keep:], hh[-keep:]
        t0 = tt[-1]
        x = tt - t0
        xm = x.mean()
        sxx = float(((x - xm) ** 2).sum())
        if sxx <= 0:
            return LifeEstimate(NOT_ENOUGH)
        b = float(((x - xm) * (hh - hh.mean())).sum() / sxx)
        a = float(hh.mean() - b * xm)
        resid = hh - (a + b * x)
        se = math.sqrt(float((resid**2).sum()) / max(1, len(x) - 2) / sxx)
        if b <= 0 or b < self.min_t * se:
            return LifeEstimate(NOT_ENOUGH, slope_per_s=b)
        now = max(a, float(hh[-1]))  # the level now: the fit's, or the latest when it is already past
        rem = max(0.0, (self.failure_level - now) / b)
        fast, slow = b + 2 * se, max(b - 2 * se, 1e-12)
        lv, dl = self.failure_level, 2 * self.failure_level_sd
        low, high = max(0.0, (lv - dl - now) / fast), max(0.0, (lv + dl - now) / slow)
        if rem > 0 and (high - low) / rem > self.max_spread:
            return LifeEstimate(NOT_ENOUGH, slope_per_s=b)
        if self.prior_life is not None:
            mean, sd = self.prior_life
            prior = max(0.0, mean - (float(t[-1]) - self.onset))
            sd_t = max((high - low) / 4, 1e-9)
            w = sd * sd / (sd * sd + sd_t * sd_t)
            rem = w * rem + (1 - w) * prior
            low, high = min(low, rem), max(high, rem)
        return LifeEstimate("estimate", rem, low, high, b)
