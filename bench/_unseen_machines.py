"""Vibration of machine kinds no other generator here makes, written from physics and public descriptions.

Not derived from ``simulators/`` nor from the other bench generators (``_bearing_signals.py`` and the
generators behind docs/maintenance.md's measurements). Each kind is a small class whose ``window(t,
rng, fault, sev)`` returns one block of raw sensor samples (acceleration in g, at the sensor's rate) and
the scalars a PLC would give beside it, ``t`` being seconds since commissioning began. What each kind
carries that a healthy machine does and the agent must not call a fault:

- ``recip``: a reciprocating compressor (600-1,000 rpm): strong 1x and 2x (the crank's unbalanced
  reciprocating masses: primary and secondary forces) and valve impacts each turn, two per revolution,
  ringing a structural resonance, their strength following the unloader steps (0/50/100 % capacity).
- ``screw``: an oil-flooded screw compressor driven by a 4-pole motor through a step-up gear: lobe-pass
  line of the male rotor (4 lobes) with its harmonics and rotor sidebands, gear mesh, load/unload
  cycles of a few minutes (the lobe-pass and flow noise fall to a third unloaded).
- ``belt``: a belt-driven fan: motor 1x, fan 1x at the pulley ratio, the belt's pass frequency and its
  2x below the motor's speed (sub-synchronous), wandering with belt slip as the damper moves.
- ``spindle``: a machine-tool spindle changing speed every 2-8 minutes between its programs, cutting or
  not (tooth-pass lines of a 4-flute tool, broadband chatter-free cutting noise); it has a speed tag.
  It, the compressors' load steps and the conveyor's load also give their process state (``STATE``).
- ``conveyor``: a gearmotor driving a belt conveyor: gear mesh with sidebands, idler and splice knocks,
  empty/loaded steps every 5-40 minutes; sensor sampled at 25.6 kHz (the agent resamples to 10 kHz).
- ``adc8``: a centrifugal pump read through an 8-bit ADC with a DC offset (a MEMS sensor's bias not
  removed), its signal spanning a few tens of codes; now and then a cavitation knock drives the input to
  its rail (clipping: a sensor fault the agent should name, not a machine fault).
- ``neighbour``: a fan on a floor shared with a large low-speed machine that starts and stops every
  10-60 minutes; its 1x/2x arrive through the floor (low-passed), louder than the fan's own 1x.
- ``ambient``: a helical gearbox whose oil and housing follow the day's ambient (15-35 degC) plus its
  own warm-up: mesh amplitude and the housing's resonance move with temperature; it has a temperature
  tag.

Faults (``sev`` 0..1 over a run, added to the healthy machine at its shaft): ``bearing_outer`` (impacts
at BPFO ringing a resonance, amplitude-modulated at 1x by the rotating load), ``imbalance`` (1x grows to
10x), ``looseness`` (1x harmonics to 10x and half orders), ``misalignment`` (2x to 6x the healthy 1x,
3x, a little 1x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

G = 9.80665
FAULTS = ("bearing_outer", "imbalance", "looseness", "misalignment")
KINDS = ("recip", "screw", "belt", "spindle", "conveyor", "adc8", "neighbour", "ambient")
# the process state a PLC reads beside the vibration (kinds that have one: ``STATE_KINDS``), as the agent
# hands a ``baseline.state_tag`` to the baseline (edge_agent.maintenance.states.STATE_INPUT)
STATE = "_process_state"
STATE_KINDS = ("recip", "screw", "spindle", "conveyor")


def accel_g(freq_hz: float, v_mm_s_rms: float) -> float:
    """Peak acceleration (g) of a tone of this velocity RMS (mm/s): how vibration levels are quoted."""
    return v_mm_s_rms * math.sqrt(2) * 2 * math.pi * freq_hz / 1000.0 / G


@dataclass
class Bearing:
    n_elements: int
    ball_d_mm: float
    pitch_d_mm: float
    contact_angle_deg: float = 0.0

    @property
    def bpfo(self) -> float:
        r = self.ball_d_mm / self.pitch_d_mm * math.cos(math.radians(self.contact_angle_deg))
        return self.n_elements / 2 * (1 - r)


class Kind:
    """One machine of a kind; its random build (levels, resonances, bearing) is drawn from ``seed``."""

    name = "?"
    fs = 10000.0
    n = 2048
    speed_tag = False
    temperature_tag = False
    iso_class = "group2_rigid"
    mains_hz = 50.0

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        r = self.rng
        self.bearing = Bearing(
            int(r.integers(8, 14)),
            float(r.uniform(7, 16)),
            float(r.uniform(40, 80)),
            float(r.choice([0, 15])),
        )
        self.reso_hz = float(r.uniform(2000, 4200))
        self.noise_g = float(r.uniform(0.004, 0.012))
        freqs = np.fft.rfftfreq(self.n, 1 / self.fs)
        # structural response to broadband forcing: a floor, 1/f at the bottom, two or three resonances
        shape = 0.3 + 1.0 / np.sqrt(1 + freqs / 20.0)
        for _ in range(int(r.integers(2, 4))):
            f0, q = float(r.uniform(300, 4500)), float(r.uniform(8, 30))
            shape += float(r.uniform(1, 4)) / (1 + (q * (freqs / f0 - f0 / np.maximum(freqs, 1.0))) ** 2)
        self.shape = shape / np.sqrt(np.mean(shape**2))
        self.phase1 = float(r.uniform(0, 2 * np.pi))
        self.build()

    def build(self) -> None:  # per kind
        pass

    # --- pieces -------------------------------------------------------------------------------
    def t(self) -> np.ndarray:
        return np.arange(self.n) / self.fs

    def noise(self, rng: np.random.Generator, level: float) -> np.ndarray:
        spec = (rng.standard_normal(self.n // 2 + 1) + 1j * rng.standard_normal(self.n // 2 + 1)) * self.shape
        x = np.fft.irfft(spec, self.n)
        return x / (np.std(x) + 1e-12) * level

    def tone(self, rng: np.random.Generator, f: float, amp: float, phase: float | None = None) -> np.ndarray:
        if f <= 0 or f >= self.fs / 2 or amp == 0:
            return np.zeros(self.n)
        ph = rng.uniform(0, 2 * np.pi) if phase is None else phase
        return amp * np.sin(2 * np.pi * f * self.t() + ph)

    def impacts(
        self,
        rng: np.random.Generator,
        rate_hz: float,
        amp: float,
        reso_hz: float,
        zeta: float = 0.04,
        jitter: float = 0.01,
        mod_hz: float = 0.0,
        mod_depth: float = 0.0,
    ) -> np.ndarray:
        """A train of decaying ringings of ``reso_hz`` at ``rate_hz`` (times jittered, amplitudes
        modulated at ``mod_hz``): what an impact (a valve, a race defect) does to a structure."""
        if amp <= 0 or rate_hz <= 0:
            return np.zeros(self.n)
        period = self.fs / rate_hz
        pos, out = -rng.uniform(0, period), np.zeros(self.n)
        k = np.arange(int(min(self.n, 8 / (zeta * 2 * np.pi * reso_hz / self.fs))))
        kernel = np.exp(-zeta * 2 * np.pi * reso_hz * k / self.fs) * np.sin(2 * np.pi * reso_hz * k / self.fs)
        ph = rng.uniform(0, 2 * np.pi)
        while pos < self.n:
            if pos >= 0:
                i = int(pos)
                a = amp * (1 + mod_depth * math.cos(2 * np.pi * mod_hz * i / self.fs + ph))
                a *= 1 + 0.1 * rng.standard_normal()
                out[i] += a
            pos += period * (1 + jitter * rng.standard_normal())
        # the train before the window still rings into it: start the convolution a kernel earlier
        return np.convolve(out, kernel)[: self.n]

    def shaft_faults(
        self, rng: np.random.Generator, f1: float, a1: float, fault: str, sev: float
    ) -> np.ndarray:
        """Fault content at shaft speed ``f1`` (Hz) of a machine whose healthy 1x is ``a1`` g."""
        x = np.zeros(self.n)
        if sev <= 0 or fault == "healthy":
            return x
        if fault == "imbalance":
            x += self.tone(rng, f1, 9 * sev * a1, self.phase1)
        elif fault == "misalignment":
            x += self.tone(rng, 2 * f1, 6 * sev * a1) + self.tone(rng, 3 * f1, 2.5 * sev * a1)
            x += self.tone(rng, f1, 1.0 * sev * a1, self.phase1)
        elif fault == "looseness":
            for k in range(1, 11):
                x += self.tone(rng, k * f1, 2.5 * sev * a1 * 0.8 ** (k - 1))
                x += self.tone(rng, (k + 0.5) * f1, 0.8 * sev * a1 * 0.7**k)
        elif fault == "bearing_outer":
            amp = 2.0 * sev**1.5  # g: an outer-race spall's impacts, ringing the bearing housing
            x += self.impacts(
                rng, self.bearing.bpfo * f1, amp, self.reso_hz, 0.05, 0.015, mod_hz=f1, mod_depth=0.6
            )
        else:
            raise ValueError(fault)
        return x

    def window(self, t: float, rng: np.random.Generator, fault: str = "healthy", sev: float = 0.0):
        raise NotImplementedError


class Recip(Kind):
    name = "recip"
    iso_class = "group1_flexible"  # a reciprocating machine's usual vibration is above group 2's zones

    def build(self) -> None:
        r = self.rng
        self.rpm = float(r.uniform(600, 1000))
        self.v1, self.v2 = float(r.uniform(2.0, 4.0)), float(r.uniform(1.5, 3.0))
        self.valve_reso = float(r.uniform(900, 2500))
        self.valve_g = float(r.uniform(0.2, 0.6))
        self.steps = r.uniform(0, 1, 2000)  # unloader: 0/50/100 % capacity for each 15-30 min

    def capacity(self, t: float) -> float:
        i = int(t // 1320)
        return (0.0, 0.5, 1.0)[int(self.steps[i % len(self.steps)] * 3)]

    def window(self, t, rng, fault="healthy", sev=0.0):
        f1 = self.rpm / 60 * (1 + 0.003 * rng.standard_normal())
        c = self.capacity(t)
        a1 = accel_g(f1, self.v1) * (0.85 + 0.2 * c)
        x = self.tone(rng, f1, a1, self.phase1) + self.tone(
            rng, 2 * f1, accel_g(2 * f1, self.v2) * (0.8 + 0.3 * c)
        )
        x += self.tone(rng, 3 * f1, 0.2 * a1) + self.tone(rng, 4 * f1, 0.15 * a1)
        # suction and discharge valve events: two per turn, unequal, each ringing the cylinder
        v = self.valve_g * (0.4 + 0.6 * c)
        x += self.impacts(rng, f1, v, self.valve_reso, 0.06, 0.004)
        x += self.impacts(rng, f1, 0.6 * v, self.valve_reso * 1.7, 0.06, 0.004)
        x += self.noise(rng, self.noise_g * (1 + c))
        x += self.shaft_faults(rng, f1, a1, fault, sev)
        return x, {STATE: 2 * c}  # the unloader's step (0, 1, 2) as the PLC reads it


class Screw(Kind):
    name = "screw"
    mains_hz = 60.0

    def build(self) -> None:
        r = self.rng
        self.rpm = float(r.uniform(1760, 1785))  # 4-pole on 60 Hz
        self.ratio = float(r.uniform(1.8, 2.8))
        self.teeth = int(r.integers(37, 61))
        self.v1 = float(r.uniform(0.6, 1.4))
        self.lobe_g = float(r.uniform(0.08, 0.25))
        self.cycle = r.uniform(120, 420, 5000)  # load/unload cycle lengths, s

    def loaded(self, t: float) -> bool:
        # cycles of load then unload; the loaded share of each cycle 40-80 %
        i = int(t // 270)
        frac = (t % 270) / 270
        return frac < 0.4 + 0.4 * ((i * 7919) % 13) / 12

    def window(self, t, rng, fault="healthy", sev=0.0):
        f1 = self.rpm / 60 * (1 + 0.002 * rng.standard_normal())
        load = 1.0 if self.loaded(t) else 0.33
        a1 = accel_g(f1, self.v1)
        male = f1 * self.ratio
        lobe = 4 * male
        x = self.tone(rng, f1, a1, self.phase1) + self.tone(rng, 2 * f1, 0.3 * a1)
        x += self.tone(rng, male, 0.4 * a1) + self.tone(rng, male * 4 / 6, 0.3 * a1)  # male, female rotors
        for k, w in ((1, 1.0), (2, 0.5), (3, 0.3)):
            x += self.tone(rng, k * lobe, w * self.lobe_g * load)
            x += self.tone(rng, k * lobe - male, 0.15 * w * self.lobe_g * load)
            x += self.tone(rng, k * lobe + male, 0.15 * w * self.lobe_g * load)
        x += self.tone(rng, self.teeth * f1, 0.08 * (0.6 + 0.4 * load))
        x += self.tone(rng, 2 * self.mains_hz, 0.01)
        x += self.noise(rng, self.noise_g * (0.6 + 1.2 * load))
        x += self.shaft_faults(rng, f1, a1, fault, sev)
        return x, {STATE: float(load == 1.0)}  # loaded (1) or unloaded (0)


class Belt(Kind):
    name = "belt"

    def build(self) -> None:
        r = self.rng
        self.rpm = float(r.uniform(1450, 1485))
        self.ratio = float(r.uniform(0.5, 0.85))  # fan/motor
        self.belt_ratio = float(r.uniform(0.15, 0.35))  # belt pass / motor speed (pi * D / L)
        self.blades = int(r.integers(6, 13))
        self.v1, self.vf = float(r.uniform(0.8, 1.6)), float(r.uniform(0.8, 1.8))

    def window(self, t, rng, fault="healthy", sev=0.0):
        damper = 0.5 + 0.4 * math.sin(2 * math.pi * t / 7200 + 1.0) + 0.1 * math.sin(2 * math.pi * t / 1300)
        f1 = self.rpm / 60 * (1 - 0.004 * damper)
        slip = 0.01 + 0.02 * damper
        ff = f1 * self.ratio * (1 - slip)
        fb = f1 * self.belt_ratio
        a1 = accel_g(f1, self.v1)
        x = self.tone(rng, f1, a1, self.phase1) + self.tone(rng, 2 * f1, 0.25 * a1)
        x += self.tone(rng, ff, accel_g(ff, self.vf)) + self.tone(rng, 2 * ff, accel_g(2 * ff, 0.3 * self.vf))
        # belt: flapping at its pass frequency and 2x, and the slow beat it puts on the shafts' lines
        x += self.tone(rng, fb, accel_g(fb, 1.2)) + self.tone(rng, 2 * fb, accel_g(2 * fb, 1.5))
        x *= 1 + 0.15 * np.sin(2 * np.pi * fb * self.t() + rng.uniform(0, 6.3))
        x += self.tone(rng, self.blades * ff, 0.05 * (0.5 + damper))
        x += self.tone(rng, 2 * self.mains_hz, 0.008)
        x += self.noise(rng, self.noise_g * (0.7 + 0.6 * damper))
        x += self.shaft_faults(rng, f1, a1, fault, sev)
        return x, {}


class Spindle(Kind):
    name = "spindle"
    speed_tag = True

    def build(self) -> None:
        r = self.rng
        self.programs = sorted(r.choice([1500, 2000, 2400, 3000, 3600, 4500, 5200, 5800], 5, replace=False))
        self.times = np.cumsum(r.uniform(120, 480, 3000))
        self.prog = r.integers(0, 5, 3000)
        self.cut = r.uniform(0, 1, 3000) < 0.7
        self.v1 = float(r.uniform(0.3, 0.8))
        self.flutes = 4

    def window(self, t, rng, fault="healthy", sev=0.0):
        i = int(np.searchsorted(self.times, t))
        rpm = float(self.programs[self.prog[i]])
        since = t - (self.times[i - 1] if i else 0.0)
        if since < 2.0:  # a ramp takes ~2 s: the tag reads the speed the drive is at
            prev = float(self.programs[self.prog[i - 1]]) if i else rpm
            rpm = prev + (rpm - prev) * since / 2.0
        f1 = rpm / 60
        a1 = accel_g(f1, self.v1) * (f1 / 50) ** 0.5  # a faster spindle shakes more
        x = self.tone(rng, f1, a1, self.phase1) + self.tone(rng, 2 * f1, 0.2 * a1)
        cutting = self.cut[i]
        if cutting:
            tp = self.flutes * f1
            for k, w in ((1, 1.0), (2, 0.4), (3, 0.2)):
                x += self.tone(rng, k * tp, w * 0.06 * rng.uniform(0.6, 1.4))
        x += self.tone(rng, 2 * self.mains_hz, 0.004)
        x += self.noise(rng, self.noise_g * (1.8 if cutting else 0.8) * (f1 / 50) ** 0.5)
        x += self.shaft_faults(rng, f1, a1, fault, sev)
        return x, {"_shaft_speed": rpm * (1 + 0.002 * rng.standard_normal()), STATE: float(cutting)}


class Conveyor(Kind):
    name = "conveyor"
    fs = 25600.0
    n = 5248  # resampled to 2048 at 10 kHz (25/64), as the agent does

    def build(self) -> None:
        r = self.rng
        self.rpm = float(r.uniform(1440, 1475))
        self.teeth = int(r.integers(17, 29))
        self.v1 = float(r.uniform(0.7, 1.5))
        self.steps = np.cumsum(r.uniform(300, 2400, 3000))

    def window(self, t, rng, fault="healthy", sev=0.0):
        loaded = int(np.searchsorted(self.steps, t)) % 2 == 1
        load = 1.8 if loaded else 1.0
        f1 = self.rpm / 60 * (1 - (0.012 if loaded else 0.004))
        a1 = accel_g(f1, self.v1)
        mesh = self.teeth * f1
        f2 = f1 / self.teeth * 1.0  # the gear's second shaft
        x = self.tone(rng, f1, a1, self.phase1) + self.tone(rng, 2 * f1, 0.3 * a1)
        for k, w in ((1, 1.0), (2, 0.35)):
            x += self.tone(rng, k * mesh, w * 0.12 * load)
            for s in (-1, 1):
                x += self.tone(rng, k * mesh + s * f1, w * 0.03 * load)
                x += self.tone(rng, k * mesh + s * f2, w * 0.02 * load)
        if rng.uniform() < 0.15 * load:  # an idler or the belt's splice knocking under the sensor
            x += self.impacts(rng, 1.0 / (self.n / self.fs), rng.uniform(0.05, 0.2) * load, 1200.0, 0.08, 0.0)
        x += self.noise(rng, self.noise_g * load)
        x += self.shaft_faults(rng, f1, a1, fault, sev)
        return x, {STATE: float(loaded)}


class Adc8(Kind):
    name = "adc8"
    mains_hz = 60.0

    def build(self) -> None:
        r = self.rng
        self.rpm = float(r.uniform(1760, 1785))
        self.vanes = int(r.integers(5, 9))
        self.v1 = float(r.uniform(0.8, 1.8))
        self.offset = float(r.uniform(0.15, 0.5))  # g: a MEMS sensor's bias left in
        self.full = 2.0  # +-2 g range, 8 bits: 1/64 g a code

    def window(self, t, rng, fault="healthy", sev=0.0):
        f1 = self.rpm / 60 * (1 + 0.002 * rng.standard_normal())
        a1 = accel_g(f1, self.v1)
        x = self.tone(rng, f1, a1, self.phase1) + self.tone(rng, 2 * f1, 0.4 * a1)
        x += self.tone(rng, self.vanes * f1, 0.05) + self.tone(rng, 2 * self.vanes * f1, 0.02)
        x += self.noise(rng, self.noise_g * 2)
        if rng.uniform() < 0.02:  # a cavitation knock to the rail now and then
            x += self.impacts(rng, 1.0 / (self.n / self.fs), float(rng.uniform(2.5, 5.0)), 1800.0, 0.05, 0.0)
        x += self.shaft_faults(rng, f1, a1, fault, sev)
        step = 2 * self.full / 256
        codes = np.clip(np.round((x + self.offset) / step), -128, 127)
        return codes * step, {}


class Neighbour(Kind):
    name = "neighbour"

    def build(self) -> None:
        r = self.rng
        self.rpm = float(r.uniform(1460, 1490))
        self.blades = int(r.integers(5, 12))
        self.v1 = float(r.uniform(0.6, 1.2))
        self.other_rpm = float(r.uniform(480, 1000))  # a crusher, a press, a big compressor
        self.other_v = float(r.uniform(1.5, 3.0))  # mm/s at our feet, through the floor
        self.onoff = np.cumsum(r.uniform(600, 3600, 3000))

    def window(self, t, rng, fault="healthy", sev=0.0):
        on = int(np.searchsorted(self.onoff, t)) % 2 == 0
        f1 = self.rpm / 60 * (1 + 0.002 * rng.standard_normal())
        a1 = accel_g(f1, self.v1)
        x = self.tone(rng, f1, a1, self.phase1) + self.tone(rng, 2 * f1, 0.3 * a1)
        x += self.tone(rng, self.blades * f1, 0.04)
        x += self.noise(rng, self.noise_g)
        if on:
            fo = self.other_rpm / 60
            for k, w in ((1, 1.0), (2, 0.6), (3, 0.25)):
                f = k * fo
                x += self.tone(rng, f, accel_g(f, self.other_v * w) / (1 + f / 80))  # the floor low-passes
            x += self.noise(rng, self.noise_g * 0.5)
        x += self.shaft_faults(rng, f1, a1, fault, sev)
        return x, {}


class Ambient(Kind):
    name = "ambient"
    temperature_tag = True

    def build(self) -> None:
        r = self.rng
        self.rpm = float(r.uniform(1470, 1490))
        self.teeth = int(r.integers(23, 41))
        self.v1 = float(r.uniform(0.6, 1.4))
        self.t0 = float(r.uniform(6, 10)) * 3600  # commissioning starts in the morning

    def temp(self, t: float) -> float:
        hour = (self.t0 + t) / 3600
        ambient = 25 - 10 * math.cos(2 * math.pi * (hour - 3) / 24)  # coolest at 03:00, 35 at 15:00
        return ambient + 30 * (1 - math.exp(-(t + 600) / 1800))  # plus its own warm-up

    def window(self, t, rng, fault="healthy", sev=0.0):
        temp = self.temp(t)
        f1 = self.rpm / 60 * (1 + 0.002 * rng.standard_normal())
        a1 = accel_g(f1, self.v1)
        mesh = self.teeth * f1
        visc = math.exp(-(temp - 50) / 25)  # thinner oil: less damping at the mesh, a louder mesh
        x = self.tone(rng, f1, a1, self.phase1) + self.tone(rng, 2 * f1, 0.2 * a1)
        x += self.tone(rng, mesh, 0.1 / visc**0.5) + self.tone(rng, 2 * mesh, 0.04 / visc**0.5)
        x += self.tone(rng, mesh - f1, 0.02) + self.tone(rng, mesh + f1, 0.02)
        # the housing's resonances drift down ~0.1 %/degC as it warms: the noise's shape, stretched
        k = 1 + 0.001 * (temp - 50)
        bins = np.arange(self.n // 2 + 1)
        shape = np.interp(bins * k, bins, self.shape)
        spec = (rng.standard_normal(bins.size) + 1j * rng.standard_normal(bins.size)) * shape
        n = np.fft.irfft(spec, self.n)
        x += n / (np.std(n) + 1e-12) * self.noise_g * (0.8 + 0.4 / visc**0.5)
        x += self.shaft_faults(rng, f1, a1, fault, sev)
        return x, {"Temp": temp + 0.1 * rng.standard_normal()}


MACHINES: dict[str, type[Kind]] = {
    c.name: c for c in (Recip, Screw, Belt, Spindle, Conveyor, Adc8, Neighbour, Ambient)
}
