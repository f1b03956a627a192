"""Vibration of machines made here, independently of simulators/ and bench/_bearing_signals.py: a slow
belt-driven fan (blade-pass at N x its shaft, the motor's shaft, a belt line, 50/60-Hz hum with its
100-Hz line's slip sidebands, a structural resonance excited by broadband noise, a speed that wanders
slowly) and a gearbox that stops and starts again (its housing temperature following). Small windows
(2,500 Hz x 512 samples, the same 4.9-Hz resolution as the agent's 10 kHz x 2,048) keep tests cheap."""

from __future__ import annotations

import numpy as np

FS = 2500.0
N = 512


def _resonance(rng: np.random.Generator, centre_hz: float, width_hz: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(N))
    f = np.fft.rfftfreq(N, 1 / FS)
    return np.fft.irfft(spec / (1 + ((f - centre_hz) / width_hz) ** 2), N)


class SlowFan:
    """A fan at ``rpm`` driven by a belt from a motor turning ``ratio`` times faster; its speed wanders
    by ``wander`` (a fraction) over ``period`` windows. ``window(outer_race=s)`` adds an outer-race
    defect of severity ``s`` (impacts at ``bpfo`` x the shaft ringing the resonance)."""

    def __init__(
        self,
        rpm: float = 740.0,
        seed: int = 0,
        blades: int = 6,
        ratio: float = 1.97,
        mains_hz: float = 50.0,
        wander: float = 0.05,
        period: int = 300,
        bpfo: float = 3.58,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.f0, self.blades, self.ratio, self.mains = rpm / 60.0, blades, ratio, mains_hz
        self.wander, self.period, self.bpfo = wander, period, bpfo
        self.res_hz = float(self.rng.uniform(700, 1000))
        self.k = 0

    def speed_hz(self) -> float:
        return self.f0 * (1 + self.wander * np.sin(2 * np.pi * self.k / self.period))

    def window(self, outer_race: float = 0.0) -> np.ndarray:
        r = self.rng
        t = np.arange(N) / FS
        fr = self.speed_hz() * (1 + 0.003 * r.standard_normal())
        self.k += 1
        ph = 2 * np.pi * fr * t
        load = np.exp(0.1 * r.standard_normal())
        x = np.zeros(N)
        for h, a in ((1, 0.012), (2, 0.006), (3, 0.003), (self.blades, 0.03), (2 * self.blades, 0.012)):
            x += load * a * np.sin(h * ph + r.uniform(0, 6.3))
        fm = fr * self.ratio  # the motor's shaft
        x += 0.01 * np.sin(2 * np.pi * fm * t + r.uniform(0, 6.3)) + 0.005 * np.sin(4 * np.pi * fm * t)
        fb = 0.37 * fr  # the belt, modulating its own second line
        x += 0.008 * (1 + 0.5 * np.sin(2 * np.pi * fb * t)) * np.sin(4 * np.pi * fb * t + r.uniform(0, 6.3))
        m = self.mains
        x += 0.03 * (
            0.3 * np.sin(2 * np.pi * m * t + r.uniform(0, 6.3))
            + np.sin(4 * np.pi * m * t + r.uniform(0, 6.3))
            + 0.2 * np.sin(2 * np.pi * (2 * m - fr) * t)
            + 0.2 * np.sin(2 * np.pi * (2 * m + fr) * t)
        )
        x += load * 0.05 * _resonance(r, self.res_hz, 80.0) + 0.02 * r.standard_normal(N)
        if outer_race > 0:
            fd = self.bpfo * fr
            ring = np.zeros(N)
            for ti in np.arange(r.uniform(0, 1 / fd), t[-1], 1 / fd):
                i = int(ti * FS)
                tt = t[i:] - t[i]
                ring[i:] += np.exp(-tt * 250) * np.sin(2 * np.pi * self.res_hz * tt)
            x += outer_race * 0.3 * ring
        return x


class StoppingGearbox:
    """A gearbox at ``rpm`` (``teeth`` on its input pinion: mesh with +-1x sidebands) whose ``running``
    the test sets; stopped, the sensor reads its own noise and the plant's (a neighbour's line, floor
    rumble). ``temperature()`` once per window (``dt_s`` apart): the housing warms towards 55 and cools
    towards 24 degrees."""

    def __init__(self, rpm: float = 1480.0, teeth: int = 23, seed: int = 0, dt_s: float = 10.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.f0, self.teeth, self.dt = rpm / 60.0, teeth, dt_s
        self.res_hz = float(self.rng.uniform(700, 1000))
        self.temp = 55.0
        self.running = True

    def temperature(self) -> float:
        target, tau = (55.0, 1200.0) if self.running else (24.0, 2400.0)
        self.temp += (target - self.temp) * (1 - np.exp(-self.dt / tau))
        return float(self.temp + 0.05 * self.rng.standard_normal())

    def window(self) -> np.ndarray:
        r = self.rng
        t = np.arange(N) / FS
        x = 0.0008 * r.standard_normal(N) + 0.0015 * np.sin(2 * np.pi * 29.3 * t + r.uniform(0, 6.3))
        x += 0.001 * np.convolve(r.standard_normal(N + 15), np.ones(16) / 4, "valid")
        if self.running:
            ph = 2 * np.pi * self.f0 * (1 + 0.005 * r.standard_normal()) * t
            load = np.exp(0.1 * r.standard_normal())
            for h, a in ((1, 0.05), (2, 0.02), (3, 0.01)):
                x += load * a * np.sin(h * ph + r.uniform(0, 6.3))
            x += load * 0.08 * (1 + 0.3 * np.sin(ph)) * np.sin(self.teeth * ph + r.uniform(0, 6.3))
            x += load * 0.08 * _resonance(r, self.res_hz, 60.0) + 0.01 * r.standard_normal(N)
        return x
