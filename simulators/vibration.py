"""Vibration physics of a rotating machine (motor + pump on rolling bearings), deterministic by seed.

``MachineSim`` produces windows of acceleration (g) plus temperature, speed and load, with the
ground truth (fault, health index, time to failure). Physics, simplified but with the right
signatures: shaft harmonics 1x/2x/3x; imbalance raises 1x (growing with speed squared);
misalignment raises 2x and 3x plus a comb of higher harmonics (4x..8x, the "axial-like"
content); bearing outer/inner race defects are periodic impacts at BPFO/BPFI (6205-like
geometry) ringing a 3 kHz structural resonance; inner-race impacts are amplitude-modulated at
shaft speed and also ring a 1.8 kHz shaft-path mode (they reach the sensor through the shaft).
Health falls from 1 to 0 over a degrading phase; fault *energy* grows like ``(1 - health)``
(amplitude like its square root, plus a small initial defect), so a fault is barely visible at
the start of a run and clear after a modest health loss (about 0.05). Limits: one sensor axis,
no transfer-path noise beyond white noise, no speed transients.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FAULTS = ["healthy", "imbalance", "misalignment", "bearing_outer", "bearing_inner"]
GENERATOR_VERSION = "vibration-1"

# 6205-like deep-groove bearing: 9 balls, 7.94 mm balls on a 39.04 mm pitch circle, 0° contact.
N_BALLS = 9
BALL_D_MM = 7.94
PITCH_D_MM = 39.04
BPFO_PER_REV = N_BALLS / 2 * (1 - BALL_D_MM / PITCH_D_MM)  # ≈ 3.585 × shaft frequency
BPFI_PER_REV = N_BALLS / 2 * (1 + BALL_D_MM / PITCH_D_MM)  # ≈ 5.415 × shaft frequency
RESONANCE_HZ = 3000.0  # housing mode excited by race impacts
SHAFT_MODE_HZ = 1800.0  # shaft-path mode that inner-race impacts also excite
NOMINAL_RPM = 1480.0
INITIAL_DEFECT = 0.03  # severity offset: a fault run starts with a just-present defect


class VibrationError(ValueError):
    """A bad scenario or dataset request (names the field and the fix)."""


@dataclass
class Phase:
    fault: str
    duration_s: float
    degrade: bool = False  # health falls linearly to 0 over the phase; its end is the failure

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise VibrationError(f"scenario phase fault {self.fault!r} is not one of {FAULTS}")
        if not self.duration_s > 0:
            raise VibrationError(f"scenario phase duration_s must be > 0, got {self.duration_s}")


@dataclass
class Scenario:
    """Phases run in order; after the last phase the machine stays in it (or stays failed)."""

    phases: list[Phase] = field(default_factory=list)

    @classmethod
    def default(cls) -> Scenario:
        return cls([Phase("healthy", 60.0), Phase("bearing_outer", 600.0, degrade=True)])

    @classmethod
    def from_dict(cls, data: dict) -> Scenario:
        if not isinstance(data, dict) or not isinstance(data.get("phases"), list) or not data["phases"]:
            raise VibrationError("scenario: expected a mapping with a non-empty list 'phases'")
        phases = []
        for i, p in enumerate(data["phases"]):
            if not isinstance(p, dict):
                raise VibrationError(f"scenario phases[{i}]: expected a mapping with fault, duration_s")
            unknown = set(p) - {"fault", "duration_s", "degrade"}
            if unknown:
                raise VibrationError(f"scenario phases[{i}]: unknown key(s) {sorted(unknown)}")
            try:
                phases.append(Phase(str(p["fault"]), float(p["duration_s"]), bool(p.get("degrade", False))))
            except KeyError as e:
                raise VibrationError(f"scenario phases[{i}]: missing {e.args[0]!r}") from None
            except VibrationError as e:
                raise VibrationError(f"scenario phases[{i}]: {e}") from None
        return cls(phases)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Scenario:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as e:
            raise VibrationError(f"{path}: cannot read scenario ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise VibrationError(f"{path}: not valid YAML ({e})") from None
        try:
            return cls.from_dict(data)
        except VibrationError as e:
            raise VibrationError(f"{path}: {e}") from None


@dataclass
class MachineState:
    fault: str
    health: float
    time_to_failure_s: float | None
    t_s: float
    speed_rpm: float
    load: float
    temperature_c: float

    @property
    def failed(self) -> bool:
        return self.health <= 0.0


def _ringing(freq_hz: float, fs: float, decay_s: float, n: int = 160) -> np.ndarray:
    """Impulse response of one lightly damped mode, truncated at n samples."""
    t = np.arange(n) / fs
    return np.exp(-t / decay_s) * np.sin(2 * np.pi * freq_hz * t)


class MachineSim:
    """One machine following a scenario; ``step(dt_s)`` advances machine time and returns a window."""

    def __init__(
        self,
        seed: int,
        scenario: Scenario | None = None,
        window_samples: int = 2048,
        sample_rate_hz: float = 10000.0,
    ) -> None:
        if window_samples < 64:
            raise VibrationError(f"window_samples must be >= 64, got {window_samples}")
        self.scenario = scenario or Scenario.default()
        self.window_samples = int(window_samples)
        self.sample_rate_hz = float(sample_rate_hz)
        self.rng = np.random.default_rng(seed)
        self.t_s = 0.0
        # per-machine constants, so two seeds are two different machines
        self._phases = self.rng.uniform(0, 2 * np.pi, 12)
        self._base_1x = self.rng.uniform(0.15, 0.25)
        self._noise_g = self.rng.uniform(0.04, 0.06)
        self._speed_period_s = self.rng.uniform(30, 50)
        self._load_period_s = self.rng.uniform(45, 70)
        self._nominal_rpm = NOMINAL_RPM * self.rng.uniform(0.97, 1.03)
        self._ambient_c = self.rng.uniform(20, 28)
        self._ring_outer = _ringing(RESONANCE_HZ, self.sample_rate_hz, 0.0015)
        self._ring_shaft = _ringing(SHAFT_MODE_HZ, self.sample_rate_hz, 0.002)
        self._health_at_phase_start = 1.0

    # -- truth ---------------------------------------------------------------------------------
    def _phase_at(self, t: float) -> tuple[int, float]:
        """Index of the phase active at time t and the time elapsed inside it."""
        start = 0.0
        for i, p in enumerate(self.scenario.phases):
            if t < start + p.duration_s or i == len(self.scenario.phases) - 1:
                return i, t - start
            start += p.duration_s
        return len(self.scenario.phases) - 1, t - start  # unreachable

    def truth(self, t: float | None = None) -> tuple[str, float, float | None]:
        """(fault, health, time_to_failure_s) at machine time t (default now)."""
        t = self.t_s if t is None else t
        health = 1.0
        start = 0.0
        fault = "healthy"
        ttf: float | None = None
        for p in self.scenario.phases:
            elapsed = t - start
            fault = p.fault
            if p.degrade:
                frac = min(max(elapsed, 0.0) / p.duration_s, 1.0)
                h0 = health
                health = h0 * (1.0 - frac)
                ttf = max(p.duration_s - elapsed, 0.0)
                if frac >= 1.0:  # failed: stays failed whatever follows
                    return fault, 0.0, 0.0
            else:
                ttf = None
            if elapsed < p.duration_s:
                break
            start += p.duration_s
        return fault, float(health), ttf

    # -- signal --------------------------------------------------------------------------------
    def _operating_point(self, t: float) -> tuple[float, float]:
        speed = self._nominal_rpm * (
            1 + 0.01 * np.sin(2 * np.pi * t / self._speed_period_s + self._phases[0])
        ) + self.rng.normal(0, 1.5)
        load = 0.6 + 0.12 * np.sin(2 * np.pi * t / self._load_period_s + self._phases[1])
        load += self.rng.normal(0, 0.01)
        return float(speed), float(np.clip(load, 0.0, 1.0))

    def _impacts(self, t0: float, rate_hz: float, n: int) -> np.ndarray:
        """Unit impulse train at rate_hz with 1 % random slip between impacts (rolling elements slip)."""
        fs = self.sample_rate_hz
        train = np.zeros(n)
        period = 1.0 / rate_hz
        first = period - (t0 % period)
        k = int(n / fs / period) + 2
        times = first + np.arange(k) * period + self.rng.normal(0, 0.01 * period, k)
        idx = np.round(times * fs).astype(np.int64)
        idx = idx[(idx >= 0) & (idx < n)]
        train[idx] = 1.0
        return train

    def window(self, t0: float, fault: str, health: float) -> tuple[np.ndarray, float, float, float]:
        n, fs = self.window_samples, self.sample_rate_hz
        speed, load = self._operating_point(t0)
        fr = speed / 60.0
        t = t0 + np.arange(n) / fs
        w = 2 * np.pi * fr * t
        ph = self._phases
        sev = 0.0 if fault == "healthy" else INITIAL_DEFECT + (1.0 - health)
        amp = np.sqrt(sev)  # energy ∝ severity
        speed_sq = (speed / NOMINAL_RPM) ** 2
        a1 = self._base_1x * (1 + 0.3 * load) * speed_sq
        a2, a3 = 0.06, 0.03
        x = np.zeros(n)
        if fault == "imbalance":
            a1 += 2.5 * amp * speed_sq
        if fault == "misalignment":
            a2 += 1.5 * amp
            a3 += 0.9 * amp
            for k in range(4, 9):  # axial-like harmonic comb
                x += (0.5 * amp / (k - 2)) * np.sin(k * w + ph[k])
        x += a1 * np.sin(w + ph[2]) + a2 * np.sin(2 * w + ph[3]) + a3 * np.sin(3 * w + ph[4])
        if fault in ("bearing_outer", "bearing_inner"):
            pad = len(self._ring_outer)
            if fault == "bearing_outer":
                train = self._impacts(t0, BPFO_PER_REV * fr, n + pad)
                ring = np.convolve(train, self._ring_outer * 2.0)[pad : pad + n]
            else:
                train = self._impacts(t0, BPFI_PER_REV * fr, n + pad)
                t_pad = t0 - pad / fs + np.arange(n + pad) / fs
                train *= 1.0 + 0.8 * np.cos(2 * np.pi * fr * t_pad + ph[5])  # load zone passes once per rev
                ring = np.convolve(train, self._ring_outer * 1.4 + self._ring_shaft * 1.2)[pad : pad + n]
            x += amp * ring
        # wear raises broadband noise a little
        x += self.rng.normal(0, self._noise_g * (1 + 0.5 * sev), n)
        temp = (
            self._ambient_c
            + 20.0 * load
            + (0.0 if fault == "healthy" else 30.0 * (1.0 - health) ** 1.5)
            + self.rng.normal(0, 0.2)
        )
        return x, speed, load, float(temp)

    def step(self, dt_s: float) -> tuple[np.ndarray, MachineState]:
        if dt_s < 0:
            raise VibrationError(f"step dt_s must be >= 0, got {dt_s}")
        self.t_s += float(dt_s)
        fault, health, ttf = self.truth()
        x, speed, load, temp = self.window(self.t_s, fault, health)
        return x, MachineState(fault, health, ttf, self.t_s, speed, load, temp)


# -- dataset -------------------------------------------------------------------------------------
def write_dataset(
    out_dir: Path,
    n_runs: int,
    windows_per_run: int,
    seed: int,
    window_samples: int = 2048,
    sample_rate_hz: float = 10000.0,
) -> Path:
    """Write ``windows.npz`` + ``dataset.yaml``; runs cycle healthy, imbalance, ... (balanced)."""
    import yaml

    if n_runs < 1 or windows_per_run < 1:
        raise VibrationError(f"n_runs and windows_per_run must be >= 1, got {n_runs}, {windows_per_run}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {
        k: []
        for k in ("waveform", "temperature", "speed", "load", "fault", "health", "rul_s", "run_id", "t_s")
    }
    for run in range(n_runs):
        fault = FAULTS[run % len(FAULTS)]
        life_s = float(rng.uniform(300, 900))
        if fault == "healthy":
            scenario = Scenario([Phase("healthy", life_s)])
        else:
            scenario = Scenario([Phase(fault, life_s, degrade=True)])
        sim = MachineSim(int(rng.integers(0, 2**31)), scenario, window_samples, sample_rate_hz)
        # windows spread evenly over the life, the last one just before failure
        times = np.linspace(0, life_s * (1 - 1 / (windows_per_run + 1)), windows_per_run)
        prev = 0.0
        for tw in times:
            x, st = sim.step(float(tw - prev))
            prev = float(tw)
            cols["waveform"].append(x.astype(np.float32))
            cols["temperature"].append(st.temperature_c)
            cols["speed"].append(st.speed_rpm)
            cols["load"].append(st.load)
            cols["fault"].append(fault)
            cols["health"].append(st.health)
            cols["rul_s"].append(np.nan if st.time_to_failure_s is None else st.time_to_failure_s)
            cols["run_id"].append(run)
            cols["t_s"].append(st.t_s)
    arrays = {
        "waveform": np.stack(cols["waveform"]).astype(np.float32),
        "temperature": np.asarray(cols["temperature"], dtype=np.float32),
        "speed": np.asarray(cols["speed"], dtype=np.float32),
        "load": np.asarray(cols["load"], dtype=np.float32),
        "fault": np.asarray(cols["fault"], dtype=np.str_),
        "health": np.asarray(cols["health"], dtype=np.float32),
        "rul_s": np.asarray(cols["rul_s"], dtype=np.float64),
        "run_id": np.asarray(cols["run_id"], dtype=np.int64),
        "t_s": np.asarray(cols["t_s"], dtype=np.float64),
    }
    np.savez_compressed(out_dir / "windows.npz", **arrays)
    meta = {
        "kind": "vibration",
        "window_samples": int(window_samples),
        "sample_rate_hz": float(sample_rate_hz),
        "faults": list(FAULTS),
        "n": int(arrays["waveform"].shape[0]),
        "n_runs": int(n_runs),
        "windows_per_run": int(windows_per_run),
        "seed": int(seed),
        "generator": GENERATOR_VERSION,
        "units": {
            "waveform": "g",
            "temperature": "degC",
            "speed": "rpm",
            "load": "fraction",
            "rul_s": "s",
            "t_s": "s",
        },
        "notes": "fault labelled from the start of a run; its signature is weak while health > ~0.95",
    }
    (out_dir / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return out_dir


def dataset_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="edge-sim dataset vibration", description=write_dataset.__doc__)
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--runs", type=int, default=20, help="machines (cycled over FAULTS; default 20)")
    ap.add_argument("--windows-per-run", type=int, default=60, help="default 60")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window-samples", type=int, default=2048)
    ap.add_argument("--sample-rate-hz", type=float, default=10000.0)
    a = ap.parse_args(argv)
    try:
        out = write_dataset(a.out, a.runs, a.windows_per_run, a.seed, a.window_samples, a.sample_rate_hz)
    except VibrationError as e:
        print(f"edge-sim dataset vibration: {e}")
        return 2
    print(json.dumps({"out": str(out), "n": a.runs * a.windows_per_run}))
    return 0
