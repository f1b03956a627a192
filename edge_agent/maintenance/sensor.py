"""Is this window the sensor's fault? Flatline, clipping, held samples, single-sample spikes and settling.

A maintenance verdict judges the machine through its sensor; a dead, saturated or corrupted sensor
gives windows that the baseline and the models read as a healthy machine (a flat line scores low) or
as a failing one (clipping and spikes raise every harmonic and the ISO velocity). ``check(x)`` looks
at one window's raw samples (before any resampling, which would smear a clipped top or a held run)
and names a fault the machine cannot have made, or returns None. The rules rest on what a live,
band-limited sensor signal can and cannot do, not on one dataset's levels:

- **flatline**: the window does not vary by more than the sensor's quantisation step (a disconnected
  IEPE or 4-20 mA input reads its bias or a rail, maybe flickering by a code; a frozen value). The
  step is the smallest non-zero change between consecutive samples; exact constants are flat too.
- **clipped**: the window's extreme value held for 2+ consecutive samples, in at least
  ``CLIP_MIN_SHARE`` of the window, with ``CLIP_PILE`` times more samples on it than in the band of
  three quantisation steps just inside it. A signal cut at a rail piles up there; a smooth peak
  (quantised or not) spends less time on its top value than on the few just below it.
- **held**: one value repeated for ``HOLD_MIN_SAMPLES`` in a row (packet loss filled with 0 or with
  the last value, a server repeating a stale value) in a signal that moves by a quantisation step or
  more per sample around it. A live signal dwells on one quantised value only where it moves slowly
  (near a turn, or a slow wave finely sampled).
- **spike**: single samples far outside the window (``SPIKE_SIGMAS`` robust deviations and
  ``SPIKE_OVER_REST`` times anything else in it) whose neighbours are not: the ADC's anti-aliasing
  filter lets no physical vibration change that much in one sample and back (an impact rings over
  many samples), so these are electrical (EMI, a bit error).
- **settling**: the window's level slides (an IEPE sensor's output settling for seconds after the
  sensor or the gateway is powered up, or drifting back after a shock), so much that its trend is the
  window's vibration: the window's integrated (velocity-like, each spectral line weighed by 1/its
  frequency) content with only the mean taken off is ``SETTLE_RATIO`` times or more the same with the
  least-squares line taken off too. The condition features take off the mean only, so the slide read
  as low-frequency velocity (20 g settling over 2 s: 19.8 mm/s on a machine of 0.76). Judged only
  where the caller says the window holds ``SETTLE_MIN_TURNS`` turns or more of the shaft
  (``shaft_turns``: the pipeline's baseline counts them at the speed the machine runs at, its speed
  tag's or its commissioned one, ``Monitor.shaft_turns``): a shaft turning less than once in the window
  is a piece of a sine, and looks like a trend (up to 12 on bench/_bearing_signals.py's windows of 20-80 ms); from two turns on, at most 4.9
  on 42,000 of them (its site noise, a random walk, has a slow part of its own) and 1.74 on 50,360
  windows of four other generators.

- **overrange**: a sample beyond +-``WINDOW_MAX_ABS`` (1e15), which no sensor reads in any unit: a corrupt
  payload, a wrong data type or scale.
What it does not judge (it cannot from one window): broadband noise or mains hum far above the
baseline (a loose sensor, or a machine getting worse); a gain or units error (everything scales) and a
level far below the commissioned one (a dead input flickering over a few codes, a stopped machine),
which the baseline tells (``kind`` ``scale`` and ``low_level``; a rise the grid's lines explain,
``mains_pickup``); docs/maintenance.md says what the
agent does with each. Cost: about 120-140 µs per 2048-sample window on one core (an AMD EPYC with
AVX2; the condition features of the same window take ~17 ms). ``SensorWatch`` keeps a pipeline's
counts and its events.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from model_packager.condition import WINDOW_MAX_ABS
from protocols.events import Event, EventKind

log = logging.getLogger(__name__)

CLIP_MIN_SHARE = 0.005  # samples held at the window's extreme, as a share of the window
CLIP_BAND_STEPS = 3  # the band just inside a rail, in quantisation steps
CLIP_PILE = 2.0  # a rail holds at least this many times the samples of that band
HOLD_MIN_SAMPLES = 32  # one value repeated this many times in a row (a quantised turn is shorter)
HOLD_MIN_SHARE = 1 / 64  # ... and at least this share of the window
HOLD_AROUND = 16  # samples either side of a held run whose movement tells a hold from a slow pass
SPIKE_SIGMAS = 12.0  # a spike stands this many robust deviations (MAD * 1.4826) from the window's median
SPIKE_NEIGHBOURS_SIGMAS = 4.0  # ... while its neighbours (+-2 samples) stay within this many
SPIKE_OVER_REST = 3.0  # ... and it is this many times the largest deviation anywhere else in the window
# more outliers than this in one window: not single spikes. A loose or badly wired sensor gives tens a window
# (at 8, 20-30 spikes were judged as the machine); bearing impacts, which ring a resonance, pass none of the
# single-sample tests at any count (three generators, 7,044 healthy and faulty windows: none flagged)
MAX_SPIKES = 64
# the integrated content with the mean taken off, over the same with the line taken off too: a sliding level
# this many times. Healthy and faulty windows holding 2 shaft turns or more: at most 4.9 (bench/_bearing_signals.py,
# 42,000 windows), 1.74 (four other generators, 50,360); the 585 windows a settling IEPE made NG: 2.2-23, all but 6 8+
SETTLE_RATIO = 8.0
SETTLE_MIN_TURNS = 2.0  # ... judged only where the window holds this many turns of the slowest shaft


@dataclass(frozen=True)
class SensorFault:
    # flatline | clipped | held | spike | settling | overrange (here) | scale | low_level | mains_pickup (baseline)
    kind: str
    message: str  # one line for the result's reason: "sensor: clipped at 49.9 in 12 % of samples"

    def to_dict(self) -> dict:
        return {"fault": self.kind, "message": self.message}


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of the runs of True in ``mask``."""
    m = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(m[1:] != m[:-1])
    return edges[::2], edges[1::2] - edges[::2]


def check(x: np.ndarray, shaft_turns: float | None = None) -> SensorFault | None:
    """The sensor fault that made this window, or None. ``x``: 1-D finite samples; ``shaft_turns``: the
    turns of the slowest shaft the caller may see in one window (None: not known, no ``settling``)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    if n < 8:
        return None
    lo, hi = float(x.min()), float(x.max())
    if max(-lo, hi) > WINDOW_MAX_ABS:  # (and the sums below would overflow: a warning a window)
        return SensorFault(
            "overrange",
            f"sensor: samples up to {_fmt(max(-lo, hi))}, beyond any sensor's range (+-{WINDOW_MAX_ABS:g}): a corrupt "
            "payload, or a wrong data type or scale at the source",
        )
    if hi == lo:
        return SensorFault("flatline", f"sensor: flat at {_fmt(lo)} for all {n} samples (no signal)")
    d = np.diff(x)
    ad = np.abs(d)
    moving = ad > 0
    q = float(ad[moving].min())  # the quantisation step (for unquantised data: tiny)
    c = x - x.mean()
    sd = math.sqrt(float(np.dot(c, c)) / n)
    if sd <= q:
        return SensorFault(
            "flatline",
            f"sensor: flat at {_fmt(float(x.mean()))} (varies by {_fmt(sd)}, within one step of "
            f"{_fmt(q)}: no signal)",
        )
    still = ~moving  # d[i] == 0: x[i + 1] repeats x[i]
    if still.any():
        found = _held(x, ad, still, lo, hi, q, n) or _clipped(x, still, lo, hi, q, n)
        if found is not None:
            return found
    found = _spikes(x, n)
    if found is None and shaft_turns is not None and shaft_turns >= SETTLE_MIN_TURNS:
        found = _settling(c, n)
    return found


@functools.lru_cache(maxsize=8)
def _ramp(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A centred sample index, 1/k for the spectral lines k = 1 .. n/2, and the index's weighed spectrum."""
    t = np.arange(n) - (n - 1) / 2
    w = 1.0 / np.arange(1, n // 2 + 1)
    return t, w, np.fft.rfft(t)[1:] * w


def _trend(c: np.ndarray, n: int) -> tuple[float, float, float]:
    """``c``: the window less its mean. Its least-squares slope (per sample), and its integrated content with
    the mean taken off and with the line taken off too (sums of squares)."""
    t, w, tw = _ramp(n)
    slope = float(np.dot(t, c)) / float(np.dot(t, t))
    a = np.fft.rfft(c)[1:] * w  # the window's lines, each weighed by 1/its frequency (as velocity is)
    b = a - slope * tw  # the same with the least-squares line taken off
    return slope, float(np.vdot(a, a).real), float(np.vdot(b, b).real)


def slide_ratio(x: np.ndarray) -> float:
    """How far a window's level slides: the ratio the ``settling`` rule judges (``SETTLE_RATIO``), whatever
    the shaft's turns (a shaft turning less than twice in it reads up to 12)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < 8:
        return 0.0
    _, with_trend, without = _trend(x - x.mean(), x.size)
    return math.sqrt(with_trend / without) if without > 0 else (math.inf if with_trend > 0 else 0.0)


def _settling(c: np.ndarray, n: int) -> SensorFault | None:
    """``c``: the window less its mean."""
    t = _ramp(n)[0]
    slope, with_trend, without = _trend(c, n)
    if with_trend < SETTLE_RATIO**2 * without:
        return None
    r = c - slope * t
    spread = math.sqrt(float(np.dot(r, r)) / n)
    slid = slope * (n - 1)
    if spread <= 1e-6 * abs(slid):  # a straight line (to rounding), nothing around it
        share, times = "a straight line, nothing around it", "all of"
    else:
        share = f"{100 * abs(slid) / spread:.0f} % of the window's spread around it"
        times = f"{math.sqrt(with_trend / without):.1f}x"
    return SensorFault(
        "settling",
        f"sensor: its level slid {_fmt(slid)} across the window ({share}; the trend is {times} its low-frequency "
        "content): settling after power-up or a shock; not judged",
    )


def _clipped(x: np.ndarray, still: np.ndarray, lo: float, hi: float, q: float, n: int) -> SensorFault | None:
    at = []
    piled = 0
    for rail, below in ((hi, hi - CLIP_BAND_STEPS * q), (lo, lo + CLIP_BAND_STEPS * q)):
        on = x == rail
        if not (still & on[1:]).any():  # never held there for two samples in a row
            continue
        k = int(on.sum())
        # a signal cut at a rail piles up there: far more samples at the rail than just inside it.
        # A smooth (quantised) peak spends less time on its top value than on the few below it.
        near = int(((x > below) & (x < rail)).sum() if rail == hi else ((x < below) & (x > rail)).sum())
        if k >= CLIP_PILE * max(near, 1):
            piled += k
            at.append(rail)
    if piled < max(3, CLIP_MIN_SHARE * n):
        return None
    where = " and ".join(_fmt(r) for r in at)
    return SensorFault(
        "clipped", f"sensor: clipped at {where} in {100 * piled / n:.1f} % of samples (saturated)"
    )


def _held(
    x: np.ndarray, ad: np.ndarray, still: np.ndarray, lo: float, hi: float, q: float, n: int
) -> SensorFault | None:
    starts, lens = _runs(still)
    need = max(HOLD_MIN_SAMPLES, HOLD_MIN_SHARE * n)
    long_ = lens + 1 >= need
    if not long_.any():
        return None
    total = 0
    value = 0.0
    longest = 0
    for s, k in zip(starts[long_], lens[long_], strict=True):
        v = float(x[s])
        before = x[s - 1] if s > 0 else None
        after = x[s + k + 1] if s + k + 1 < n else None
        # a flat top between two falls (or a flat bottom) at the window's extreme is the clipping rule's
        if before is not None and after is not None and (before - v) * (after - v) > 0 and v in (lo, hi):
            continue
        # a quantised signal passing slowly through one value (a slow wave, finely sampled) dwells on
        # it too; a hold cuts a signal that moved by a step or more per sample right before and after
        around = np.concatenate((ad[max(0, s - HOLD_AROUND) : s], ad[s + k : s + k + HOLD_AROUND]))
        if around.size == 0 or float(around.mean()) < q:
            continue
        total += int(k) + 1
        if k + 1 > longest:
            longest, value = int(k) + 1, v
    if total < need:
        return None
    return SensorFault(
        "held",
        f"sensor: held at {_fmt(value)} for {longest} samples in a row ({100 * total / n:.1f} % of the "
        "window held: lost samples filled in, or a stale value repeated)",
    )


def _spikes(x: np.ndarray, n: int) -> SensorFault | None:
    h = n // 2
    med = float(np.partition(x, h)[h])
    dev = np.abs(x - med)
    mad = float(np.partition(dev, h)[h]) * 1.4826
    if mad <= 0:
        return None
    cand = np.flatnonzero(dev > SPIKE_SIGMAS * mad)
    if cand.size == 0 or cand.size > MAX_SPIKES:  # many: not single samples (noise, a burst)
        return None
    near = np.zeros(n, dtype=bool)
    for j in range(-2, 3):
        near[np.clip(cand + j, 0, n - 1)] = True
    rest = float(dev[~near].max()) if not near.all() else 0.0
    lim = SPIKE_NEIGHBOURS_SIGMAS * mad
    spikes = [
        int(i)
        for i in cand
        if dev[i] >= SPIKE_OVER_REST * rest
        and all(dev[j] <= lim for j in (i - 2, i - 1, i + 1, i + 2) if 0 <= j < n)
    ]
    if not spikes:
        return None
    top = max(spikes, key=lambda i: dev[i])
    return SensorFault(
        "spike",
        f"sensor: {len(spikes)} single-sample spike(s) up to {_fmt(float(x[top]))}, "
        f"{dev[top] / max(rest, 1e-300):.0f}x the rest of the window, its neighbours normal (electrical, "
        "not vibration)",
    )


CLEAR_AFTER = 10  # clean windows in a row that end a sensor-fault episode (no event per flapping window)


class SensorWatch:
    """A signal pipeline's sensor-fault count: ``record(fault or None)`` once per window (any thread),
    each fault counted by kind; one ``sensor_fault`` event (and one warning) when an episode starts,
    one (``active: false``) when ``CLEAR_AFTER`` clean windows in a row end it."""

    def __init__(self, pipeline: str, on_event: Callable[[Event], None] | None = None) -> None:
        self.pipeline = pipeline
        self.on_event = on_event or (lambda evt: None)
        self.counts: dict[str, int] = {}
        self.active: SensorFault | None = None
        self.since: float | None = None
        self._clean = 0
        self._lock = threading.Lock()

    def check(self, waveform: np.ndarray) -> SensorFault | None:
        return self.record(check(waveform))

    def record(self, fault: SensorFault | None) -> SensorFault | None:
        """Count a window's answer (``check``'s, made here or by the windower on raw samples)."""
        evt = None
        with self._lock:
            if fault is not None:
                self.counts[fault.kind] = self.counts.get(fault.kind, 0) + 1
                self._clean = 0
                if self.active is None:
                    self.active, self.since = fault, time.time()
                    evt = Event(
                        EventKind.SENSOR_FAULT,
                        pipeline=self.pipeline,
                        fault=fault.kind,
                        active=True,
                        message=f"pipeline {self.pipeline}: {fault.message}; its windows are UNSURE (not "
                        "judged, no alarm, no PLC write) until the sensor reads a live signal again: "
                        + (
                            # no running machine in the window: most often a stop (a pipeline without
                            # a speed tag cannot tell); the sensor only if the machine runs
                            "if the machine is running, check the sensor, its cable and mounting (a "
                            "speed tag on the pipeline tells stops apart)"
                            if fault.kind == "low_level"
                            # an IEPE sensor settles within seconds of a power-up; one that keeps sliding
                            # has a failing cable, connector or bias supply
                            else "a sensor settling after a power-up or a shock reads a live signal again "
                            "within seconds; if it keeps sliding, check its cable, connector and supply"
                            if fault.kind == "settling"
                            else "check the sensor, its cable and mounting, and the input's range"
                        ),
                    )
            elif self.active is not None:
                self._clean += 1
                if self._clean >= CLEAR_AFTER:
                    evt = Event(
                        EventKind.SENSOR_FAULT,
                        pipeline=self.pipeline,
                        fault=self.active.kind,
                        active=False,
                        message=f"pipeline {self.pipeline}: the sensor reads a live signal again "
                        f"({CLEAR_AFTER} clean windows in a row); its windows are judged again",
                    )
                    self.active, self.since = None, None
        if evt is not None:
            (log.warning if evt["active"] else log.info)("%s", evt["message"])
            try:
                self.on_event(evt)
            except Exception:
                log.exception("sensor_fault event could not be recorded")
        return fault

    def status(self) -> dict:
        return {
            "faults": dict(self.counts),
            "active": None if self.active is None else self.active.message,
            "since": self.since,
        }
