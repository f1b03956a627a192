"""A rotating machine's vibration from physics, for tests of the maintenance rules (independent of simulators/
and of bench's generators): shaft orders, the motor's 2x line frequency, a rolling bearing's impacts at its
defect frequency (from the geometry) ringing a structural resonance, flow noise shaped by that resonance, the
DAQ's anti-aliasing filter; the sensor's unit (g, m/s2, mm/s of a velocity sensor)."""

from __future__ import annotations

import math

import numpy as np

G = 9.80665


def _resonance(x: np.ndarray, fs: float, f0: float, q: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    r = np.fft.rfftfreq(x.size, 1 / fs) / f0
    return np.fft.irfft(spec / np.sqrt((1 - r**2) ** 2 + (r / q) ** 2), x.size)


def bpfo(rpm: float, n: int = 9, ball_d: float = 7.9, pitch_d: float = 39.0) -> float:
    """The outer race's ball-pass frequency (Hz) of a bearing of ``n`` balls."""
    return n / 2 * rpm / 60 * (1 - ball_d / pitch_d)


def rotor(
    rng: np.random.Generator,
    *,
    fs: float = 10000.0,
    n: int = 2048,
    rpm: float = 1476.0,
    load: float = 1.0,
    imbalance: float = 1.0,
    misalignment: float = 0.0,
    outer_race: float = 0.0,
    resonance_hz: float = 2600.0,
    looseness: float = 0.0,
    vanes: int = 0,
) -> np.ndarray:
    """One window of a motor's acceleration in g. ``imbalance`` multiplies its 1x (0.8 mm/s), ``misalignment``
    adds 2x and 3x (mm/s), ``outer_race`` the impacts' size (g), ``looseness`` a loose foot's or bearing's
    truncated response: the orders 0.5x-10x, half orders too, ``looseness`` mm/s at 1x falling as 1/sqrt(order);
    ``vanes``: a fan's or pump's blade-pass line at that order (0.25 mm/s, with the load)."""
    t = rng.uniform(0, 100) + np.arange(n) / fs
    fr = rpm / 60

    def line(
        f: float, v_mm_s: float
    ) -> np.ndarray:  # a line of this velocity amplitude, as acceleration in g
        return v_mm_s * 1e-3 * 2 * np.pi * f / G * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))

    x = (
        line(fr, 0.8 * imbalance * load)
        + line(2 * fr, 0.2 + misalignment)
        + line(3 * fr, 0.1 + 0.6 * misalignment)
    )
    if vanes:
        x += line(vanes * fr, 0.25 * load)
    for k in np.arange(1, 21) / 2 if looseness > 0 else ():
        x += line(k * fr, looseness / math.sqrt(k) * rng.uniform(0.7, 1.3))
    x += 0.004 * load * np.sin(2 * np.pi * 100.0 * t)
    force = 0.03 * load * rng.standard_normal(n)
    if outer_race > 0:
        period = fs / bpfo(rpm)
        for k in np.arange(rng.uniform(0, period), n, period):
            force[int(k)] += outer_race * rng.uniform(0.8, 1.2)
    x += _resonance(force, fs, resonance_hz, 12.0) / 6.0 + 0.2 * force
    spec = np.fft.rfft(x)  # the DAQ's anti-aliasing filter: nothing above ~0.45 of the rate
    spec /= np.sqrt(1 + (np.fft.rfftfreq(n, 1 / fs) / (0.4 * fs)) ** 16)
    return np.fft.irfft(spec, n)


def in_units(a_g: np.ndarray, units: str, fs: float = 10000.0) -> np.ndarray:
    """The acceleration ``a_g`` as the sensor gives it: g, m/s2, or a velocity sensor's mm/s (its integral,
    above 2 Hz)."""
    if units == "g":
        return a_g
    if units == "m/s2":
        return a_g * G
    spec = np.fft.rfft(a_g * G)
    f = np.fft.rfftfreq(a_g.size, 1 / fs)
    v = np.zeros_like(spec)
    v[f >= 2] = spec[f >= 2] / (2j * math.pi * f[f >= 2])
    return np.fft.irfft(v, a_g.size) * 1000.0


def mains_pickup(
    x: np.ndarray, rng: np.random.Generator, hz: float = 50.0, fs: float = 10000.0, size: float = 6.0
):
    """``x`` with a cable's pickup of the grid: a line at ``hz`` ``size`` times the window's spread and its third
    harmonic at 0.3 of it (a screen grounded at both ends, a cable along a motor's leads)."""
    t = rng.uniform(0, 100) + np.arange(x.size) / fs
    return x + size * x.std() * (np.sin(2 * np.pi * hz * t) + 0.3 * np.sin(2 * np.pi * 3 * hz * t))
