"""An independent vibration generator for the maintenance bench and tests (not simulators/vibration.py).

Made from textbook condition-monitoring signatures, with what the project's simulator does not
have: a random bearing per machine (7-16 rolling elements, ball/pitch ratio 0.15-0.30, contact
angle 0-40 deg), shaft speeds 600-3,600 rpm with slow drift, 1-3 structural resonances anywhere in
1.2-4.5 kHz, slip (random jitter of impact times), and site noise: coloured broadband noise, mains
hum at 50 or 60 Hz with harmonics, a neighbouring machine's tone, occasional knocks.

A fault's severity runs 0 -> 1 over its degrading phase; its signature's amplitude grows with it.
``Machine.window(severity, fault)`` -> one window of acceleration in g.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_packager.condition import Bearing

FAULTS = ["healthy", "imbalance", "misalignment", "bearing_outer", "bearing_inner"]


@dataclass
class Machine:
    seed: int
    fs: float = 10000.0
    n: int = 2048
    rpm: float | None = None
    noise: float = 1.0  # site-noise multiplier

    def __post_init__(self) -> None:
        r = self.rng = np.random.default_rng(self.seed)
        self.rpm = float(self.rpm or r.uniform(600, 3600))
        self.bearing = Bearing(int(r.integers(7, 17)), 0.0, 1.0, float(r.uniform(0, 40)))
        ratio = r.uniform(0.15, 0.30)
        pitch = r.uniform(30, 120)
        self.bearing = Bearing(
            self.bearing.n_elements,
            round(ratio * pitch, 2),
            round(pitch, 2),
            round(self.bearing.contact_angle_deg, 1),
        )
        self.orders = self.bearing.orders()
        top = min(4500.0, 0.45 * self.fs)
        self.res = [
            (r.uniform(1200, top), r.uniform(0.0008, 0.003), r.uniform(0.5, 1.5))
            for _ in range(r.integers(1, 4))
        ]
        self.h = [
            r.uniform(0.02, 0.08),
            r.uniform(0.005, 0.03),
            r.uniform(0.002, 0.015),
        ]  # healthy 1x..3x (g)
        self.hum = 50.0 if r.random() < 0.5 else 60.0
        self.hum_a = r.uniform(0.002, 0.02) * self.noise
        self.tone = (r.uniform(15, 400), r.uniform(0.0, 0.02) * self.noise)
        self.white = r.uniform(0.02, 0.06) * self.noise
        self.knock_p = 0.03 * self.noise
        self.gain = r.uniform(0.5, 2.0)  # sensor mounting / transfer path

    def _ring(self, t_imp: np.ndarray, amps: np.ndarray) -> np.ndarray:
        n, fs = self.n, self.fs
        x = np.zeros(n + 400)
        idx = np.clip((t_imp * fs).astype(int), 0, n + 399)
        np.add.at(x, idx, amps)
        out = np.zeros(n + 400)
        tt = np.arange(400) / fs
        for f, tau, g in self.res:
            out += g * np.convolve(x, np.exp(-tt / tau) * np.sin(2 * np.pi * f * tt))[: n + 400]
        return out[:n]

    def window(self, severity: float = 0.0, fault: str = "healthy") -> np.ndarray:
        r, n, fs = self.rng, self.n, self.fs
        t = np.arange(n) / fs
        f_r = self.rpm / 60 * (1 + r.normal(0, 0.003))
        ph = r.uniform(0, 2 * np.pi, 9)
        x = sum(a * np.sin(2 * np.pi * (k + 1) * f_r * t + ph[k]) for k, a in enumerate(self.h))
        speed2 = (f_r / 30.0) ** 2
        s = float(np.clip(severity, 0, 1))
        if fault == "imbalance":
            x = x + 0.35 * s * float(np.clip(speed2, 0.5, 4)) * np.sin(2 * np.pi * f_r * t + ph[0])
        elif fault == "misalignment":
            for k, a in ((2, 0.25), (3, 0.15), (4, 0.06), (5, 0.04), (6, 0.03)):
                x = x + a * s * np.sin(2 * np.pi * k * f_r * t + ph[k])
        elif fault in ("bearing_outer", "bearing_inner"):
            fd = (self.orders["bpfo"] if fault == "bearing_outer" else self.orders["bpfi"]) * f_r
            t0 = r.uniform(0, 1 / fd)
            k = np.arange(int((n / fs) * fd) + 3)
            ti = t0 + k / fd + r.normal(0, 0.01 / fd, len(k))  # slip
            amp = 1.2 * s * (0.7 + 0.3 * r.random(len(k)))
            if fault == "bearing_inner":
                amp = amp * (1 + 0.8 * np.cos(2 * np.pi * f_r * ti + ph[1])) / 1.4
            x = x + self._ring(ti, amp)
            x = x + r.normal(0, 0.01 * s, n)  # wear noise
        # site noise
        white = r.normal(0, self.white, n)
        pink = np.cumsum(r.normal(0, self.white * 0.05, n))
        pink -= np.linspace(pink[0], pink[-1], n)
        x = x + white + pink
        x = x + self.hum_a * (
            np.sin(2 * np.pi * self.hum * t + ph[2]) + 0.4 * np.sin(2 * np.pi * 3 * self.hum * t)
        )
        x = x + self.tone[1] * np.sin(2 * np.pi * self.tone[0] * t + ph[3])
        if r.random() < self.knock_p:
            x = x + self._ring(np.array([r.uniform(0, n / fs)]), np.array([r.uniform(0.5, 2.0)]))
        return (self.gain * x).astype(np.float64)
