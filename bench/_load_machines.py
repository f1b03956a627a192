"""Healthy machines whose vibration follows their load, and two faults, for ``bench/maintenance_load_bench.py``.

An independent plant model (its own physics, not ``simulators/vibration.py``): time t (s); the ambient follows a
day (cool night, +8 C by the afternoon); a load profile (a quiet night at ~35 %, a day shift ramping 40 % -> 90 %
from 06:00 to 10:00, held to 14:00, then 75-90 % to 22:00); an induction motor whose slip grows with the load (the
speed falls 1-2 % at full load); a housing whose temperature follows the ambient and the load through a first-order
lag (20-60 min). Vibration per window (10 kHz, 2048 samples):

- gearbox: 1x (residual unbalance, ~ speed^2, not the load's), 2x/3x (coupling, ~ torque^0.6), the gear mesh at
  z * 1x with +-1x sidebands (transmission error ~ torque^1.2), a resonance excited by the mesh (~ torque), the
  bearings' broadband noise (~ speed * load^0.5), the sensor's floor;
- fan (direct drive, damper controlled): 1x unbalance (~ speed^2), blade-pass at B * 1x (~ flow = load) and its
  2nd, turbulence through a duct resonance (~ load^1.5), the sensor's floor.

Faults: an outer-race defect (impacts at BPFO ringing the bearing resonance) and an imbalance (the 1x times k).
Written for the load check of 2026-12-05 (a probe of the former round, kept here so the bench can be rerun).
"""

from __future__ import annotations

import math

import numpy as np

FS = 10000.0
N = 2048


def ambient(t: float, base: float = 16.0, day_rise: float = 8.0) -> float:
    """Night minimum at 04:00 ~ base, afternoon maximum at 16:00 ~ base + day_rise."""
    h = (t / 3600.0) % 24
    return base + day_rise * 0.5 * (1 - math.cos(2 * math.pi * (h - 4) / 24))


def load_profile(t: float, rng: np.random.Generator | None = None) -> float:
    """Night 22:00-06:00 ~35 %; day shift from 06:00: 40 % ramping to 90 % by 10:00, held ~90 %
    with small steps to 14:00, then 75-90 % to 22:00."""
    h = (t / 3600.0) % 24
    if h < 6 or h >= 22:
        L = 0.35
    elif h < 10:
        L = 0.40 + 0.50 * (h - 6) / 4
    elif h < 14:
        L = 0.90
    else:
        L = 0.80 + 0.10 * math.cos(2 * math.pi * (h - 14) / 3)
    if rng is not None:
        L *= 1 + 0.02 * rng.standard_normal()
    return float(np.clip(L, 0.05, 1.0))


class Machine:
    def __init__(self, kind: str, seed: int, tau_s: float | None = None) -> None:
        self.kind = kind
        self.rng = np.random.default_rng(seed)
        r = self.rng
        self.sync_rpm = 1500.0
        self.slip_full = r.uniform(0.012, 0.025)
        self.tau = tau_s if tau_s is not None else r.uniform(1200, 3600)
        self.heat = r.uniform(25, 40)  # C above ambient at full load
        self.res_hz = r.uniform(2500, 4000)  # structural / bearing resonance
        self.duct_hz = r.uniform(300, 700)
        self.teeth = int(r.integers(17, 31))
        self.blades = int(r.integers(5, 10))
        self.bpfo = r.uniform(3.0, 5.5)
        self.a1 = r.uniform(0.03, 0.08)  # 1x in g at sync speed
        self.temp: float | None = None
        self.t_last: float | None = None

    def speed_hz(self, load: float) -> float:
        return self.sync_rpm / 60.0 * (1 - self.slip_full * load)

    def housing_temp(self, t: float, load: float, running: bool = True) -> float:
        target = ambient(t) + (self.heat * load if running else 0.0)
        if self.temp is None:
            self.temp = target
        else:
            dt = t - self.t_last
            self.temp += (target - self.temp) * (1 - math.exp(-dt / self.tau))
        self.t_last = t
        return self.temp + 0.05 * self.rng.standard_normal()

    def _res(self, drive: np.ndarray, f0: float, q: float) -> np.ndarray:
        spec = np.fft.rfft(drive)
        f = np.fft.rfftfreq(len(drive), 1 / FS)
        h = 1.0 / (1 + 1j * q * (f / f0 - f0 / np.maximum(f, 1e-3)))
        return np.fft.irfft(spec * h, len(drive))

    def window(
        self, load: float, outer_race: float = 0.0, imbalance: float = 1.0, running: bool = True
    ) -> np.ndarray:
        r = self.rng
        t = np.arange(N) / FS
        if not running:  # the sensor's noise and the plant floor's rumble (a neighbour's line)
            return 0.003 * r.standard_normal(N) + 0.002 * np.sin(2 * np.pi * 29.3 * t + r.uniform(0, 6.3))
        fr = self.speed_hz(load) * (1 + 0.001 * r.standard_normal())
        ph = 2 * np.pi * fr * t + r.uniform(0, 2 * np.pi)
        s2 = (fr / (self.sync_rpm / 60)) ** 2
        x = imbalance * self.a1 * s2 * np.sin(ph)
        if self.kind == "gearbox":
            T = load
            x += 0.02 * T**0.6 * np.sin(2 * ph + r.uniform(0, 6.3)) + 0.01 * T**0.6 * np.sin(3 * ph + 1.0)
            mesh = 0.15 * T**1.2 * (1 + 0.25 * np.sin(ph)) * np.sin(self.teeth * ph + r.uniform(0, 6.3))
            mesh += 0.05 * T**1.2 * np.sin(2 * self.teeth * ph + r.uniform(0, 6.3))
            x += mesh
            x += 0.6 * T * self._res(r.standard_normal(N) * 0.3, self.res_hz, 8.0)
            x += 0.02 * (fr / 25) * T**0.5 * r.standard_normal(N)
        else:  # fan
            F = load
            x += 0.06 * F * np.sin(self.blades * ph + r.uniform(0, 6.3))
            x += 0.02 * F * np.sin(2 * self.blades * ph + r.uniform(0, 6.3))
            x += 0.4 * F**1.5 * self._res(r.standard_normal(N) * 0.3, self.duct_hz, 3.0)
            x += 0.15 * F**1.5 * self._res(r.standard_normal(N) * 0.3, self.res_hz, 6.0)
            x += 0.01 * r.standard_normal(N)
        if outer_race > 0:
            fd = self.bpfo * fr
            ring = np.zeros(N)
            for ti in np.arange(r.uniform(0, 1 / fd), t[-1], 1 / fd):
                i = int(ti * FS)
                tt = t[i:] - t[i]
                ring[i:] += np.exp(-tt * 600) * np.sin(2 * np.pi * self.res_hz * tt)
            x += outer_race * ring
        x += 0.003 * r.standard_normal(N)  # sensor noise floor
        return x
