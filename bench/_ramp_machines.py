"""Machines whose speed changes: an induction motor, a gearbox, a VFD fan and a pump, each window able to
ramp (the shaft speed a linear chirp across the window), for the maintenance bench and tests.

Written from textbook signatures (not from ``simulators/`` nor the other bench generators): a 4-pole motor
on 50 Hz mains with slip, 2x line (100 Hz) and rotor-slot pass, broken rotor bars as pole-pass sidebands;
a gearbox's shaft with a 23-tooth mesh and its 2nd harmonic, a chipped tooth's impact once a turn and
wear's 2x mesh; a 7-blade fan whose 1x and blade-pass follow the drive's load, imbalance and an outer race
defect ringing a resonance; a 5-vane pump with cavitation bursts. Each machine has its own resonance,
noise floor, bearing and healthy 1x level from its seed.

``window(rng, load, fault, sev, ramp, f_at)``: acceleration in g (``fs``, ``n``) and the scalars a PLC
gives beside it, the speed tag reading the shaft's speed at the window's end. ``ramp``: the speed's
change across the window (0.05: +5 %); ``f_at``: the shaft's speed (Hz) at the window's start (else the
load's).
"""

from __future__ import annotations

import math

import numpy as np

G = 9.80665


def a_g(f, v_mm_s_rms):
    return v_mm_s_rms * math.sqrt(2) * 2 * math.pi * f / 1000.0 / G


class M:
    fs = 10000.0
    n = 2048
    line = 50.0

    def __init__(self, seed):
        r = self.r = np.random.default_rng(seed + 1000)
        self.reso = float(r.uniform(1800, 4000))
        self.floor = float(r.uniform(0.003, 0.01))
        self.bear = (int(r.integers(7, 13)), float(r.uniform(6, 14)), float(r.uniform(35, 75)))
        n, d, D = self.bear
        self.bpfo = n / 2 * (1 - d / D)
        self.v1 = float(r.uniform(0.6, 1.6))  # healthy 1x mm/s rms

    def t(self):
        return np.arange(self.n) / self.fs

    def phase_of(self, f_start, f_end):
        # speed ramp within the window: linear chirp of the shaft frequency
        t = self.t()
        T = self.n / self.fs
        return 2 * np.pi * (f_start * t + (f_end - f_start) * t * t / (2 * T))

    def noise(self, rng, lvl):
        x = rng.standard_normal(self.n)
        # colour: a resonance via simple 2-pole filter in freq domain
        X = np.fft.rfft(x)
        f = np.fft.rfftfreq(self.n, 1 / self.fs)
        h = 0.4 + 1.5 / (1 + (12 * (f / self.reso - self.reso / np.maximum(f, 1))) ** 2)
        y = np.fft.irfft(X * h, self.n)
        return y / y.std() * lvl

    def shaft(self, rng, f0, ramp):
        """The window's shaft phase (a ramp of ``ramp`` across it, a random start), its end and mean speed."""
        f1 = f0 * (1 + ramp)
        return self.phase_of(f0, f1) + rng.uniform(0, 6.3), f1, (f0 + f1) / 2

    def outer_race(self, rng, fm, sev):
        """An outer-race defect's impacts at BPFO, each ringing the structure's resonance."""
        per = 1 / (self.bpfo * fm)
        ts = np.arange(rng.uniform(0, per), self.n / self.fs, per)
        return self.ring(rng, ts, 2.0 * sev**1.5, self.reso)

    def ring(self, rng, times_s, amp, reso, zeta=0.05):
        out = np.zeros(self.n)
        for ts in times_s:
            i = int(ts * self.fs)
            if 0 <= i < self.n:
                out[i] += amp * (1 + 0.1 * rng.standard_normal())
        k = np.arange(int(8 / (zeta * 2 * np.pi * reso / self.fs)))
        ker = np.exp(-zeta * 2 * np.pi * reso * k / self.fs) * np.sin(2 * np.pi * reso * k / self.fs)
        return np.convolve(out, ker)[: self.n]


class Motor(M):
    """4-pole induction motor on 50 Hz mains; slip with load; 2x line 100 Hz; broken rotor bar."""

    name = "motor"
    poles = 4

    def state(self, load):
        sync = 2 * self.line / self.poles  # 25 Hz
        slip = 0.005 + 0.03 * load
        return sync * (1 - slip), slip

    def speed_hz(self, load):
        return self.state(load)[0]

    def window(self, rng, load, fault="healthy", sev=0.0, ramp=0.0, f_at=None):
        fr, slip = self.state(load)
        fr = f_at or fr
        ph, f1, fm = self.shaft(rng, fr, ramp)
        x = a_g(fm, self.v1) * np.sin(ph)
        x += a_g(2 * fm, 0.3 * self.v1) * np.sin(2 * ph + 1)
        x += a_g(100.0, 0.4 + 0.6 * load) * np.sin(2 * np.pi * 100 * self.t() + rng.uniform(0, 6.3))
        # rotor slot pass (28 bars) +- 2 line
        x += a_g(28 * fm, 0.1) * np.sin(28 * ph)
        x += self.noise(rng, self.floor * (1 + load))
        if fault == "rotor_bar" and sev > 0:
            fp = slip * self.line * 2  # pole-pass frequency = 2 s f_line
            t = self.t()
            x += a_g(fm, 4 * sev * self.v1) * np.sin(ph) * np.cos(2 * np.pi * fp * t)
            x += a_g(2 * fm, 2 * sev * self.v1) * np.sin(2 * ph) * np.cos(2 * np.pi * fp * t)
        if fault == "bearing_outer" and sev > 0:
            x += self.outer_race(rng, fm, sev)
        return x, {"_shaft_speed": f1 * 60, "Speed": f1 * 60}


class Gearbox(M):
    name = "gearbox"
    teeth = 23

    def speed_hz(self, load):
        return 20 + 10 * load

    def window(self, rng, load, fault="healthy", sev=0.0, ramp=0.0, f_at=None):
        ph, f1, fm = self.shaft(rng, f_at or self.speed_hz(load), ramp)
        x = a_g(fm, self.v1) * np.sin(ph)
        mesh_amp = a_g(self.teeth * fm, 0.5 + 0.5 * load)
        x += mesh_amp * (1 + 0.1 * np.cos(ph)) * np.sin(self.teeth * ph)
        x += 0.4 * mesh_amp * np.sin(2 * self.teeth * ph + 0.5)
        x += self.noise(rng, self.floor * (1 + 0.5 * load))
        if fault == "chipped_tooth" and sev > 0:
            # impact once per turn at the tooth: times where ph crosses k*2pi
            turns = ph / (2 * np.pi)
            idx = np.nonzero(np.diff(np.floor(turns)) > 0)[0]
            x += self.ring(rng, idx / self.fs, 1.5 * sev**1.5, self.reso, 0.08)
            x += mesh_amp * 2 * sev * (1 + np.cos(ph)) * np.sin(self.teeth * ph)
        if fault == "wear" and sev > 0:
            x += mesh_amp * 3 * sev * np.sin(2 * self.teeth * ph + 0.5)
            x += a_g(self.teeth * fm, 0.5) * sev * 2 * np.sin(self.teeth * ph + 1)
        return x, {"_shaft_speed": f1 * 60, "Speed": f1 * 60}


class Fan(M):
    """VFD fan, 7 blades; speed wanders 900-1500 rpm; ramps inside windows."""

    name = "fan"
    blades = 7

    def speed_hz(self, load):
        return 15 + 10 * load

    def window(self, rng, load, fault="healthy", sev=0.0, ramp=0.0, f_at=None):
        ph, f1, fm = self.shaft(rng, f_at or self.speed_hz(load), ramp)
        x = a_g(fm, self.v1 * (0.5 + load)) * np.sin(ph)
        x += a_g(self.blades * fm, 0.3 * (0.5 + load) ** 2) * np.sin(self.blades * ph + 2)
        x += self.noise(rng, self.floor * (1 + load))
        if fault == "imbalance" and sev > 0:
            x += a_g(fm, 8 * sev * self.v1 * (0.5 + load)) * np.sin(ph)
        if fault == "bearing_outer" and sev > 0:
            x += self.outer_race(rng, fm, sev)
        return x, {"_shaft_speed": f1 * 60, "Speed": f1 * 60}


class Pump(M):
    name = "pump"
    vanes = 5

    def speed_hz(self, load):
        return 29.2 + 0.3 * load

    def window(self, rng, load, fault="healthy", sev=0.0, ramp=0.0, f_at=None):
        ph, f1, fm = self.shaft(rng, f_at or self.speed_hz(load), ramp)
        x = a_g(fm, self.v1) * np.sin(ph)
        x += a_g(self.vanes * fm, 0.6 + 0.8 * load) * np.sin(self.vanes * ph + 1)
        x += self.noise(rng, self.floor * (1 + load))
        if fault == "cavitation" and sev > 0:
            # broadband HF noise in random bursts
            hf = rng.standard_normal(self.n)
            hf = np.fft.irfft(np.fft.rfft(hf) * (np.fft.rfftfreq(self.n, 1 / self.fs) > 1500), self.n)
            env = 1 + rng.uniform(0, 1, self.n // 256).repeat(256)
            x += hf / hf.std() * self.floor * 12 * sev * env
        return x, {"_shaft_speed": f1 * 60, "Speed": f1 * 60}


KINDS = {"motor": Motor, "gearbox": Gearbox, "fan": Fan, "pump": Pump}
FAULTS = {
    "motor": ["rotor_bar", "bearing_outer"],
    "gearbox": ["chipped_tooth", "wear"],
    "fan": ["imbalance", "bearing_outer"],
    "pump": ["cavitation"],
}
