"""Vibration physics: determinism, fault signatures at the right frequencies, degradation, dataset format."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from simulators.vibration import (
    BPFO_PER_REV,
    FAULTS,
    MachineSim,
    Phase,
    Scenario,
    VibrationError,
    dataset_main,
    write_dataset,
)

FS = 10000.0
N = 8192  # longer windows give the frequency resolution these checks need


def _one(fault: str, health_loss: float = 0.5, seed: int = 3) -> tuple[np.ndarray, float]:
    life = 100.0
    sim = MachineSim(seed, Scenario([Phase(fault, life, degrade=fault != "healthy")]), N, FS)
    x, st = sim.step(life * health_loss)
    return x, st.speed_rpm / 60.0


def _amp_at(x: np.ndarray, f_hz: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(round(f_hz * len(x) / FS))
    return float(spec[k - 2 : k + 3].max())


def test_same_seed_gives_identical_windows_and_other_seed_differs() -> None:
    a = MachineSim(7).step(1.0)[0]
    b = MachineSim(7).step(1.0)[0]
    c = MachineSim(8).step(1.0)[0]
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_imbalance_raises_the_1x_shaft_harmonic() -> None:
    healthy, fr = _one("healthy")
    faulty, fr2 = _one("imbalance")
    assert _amp_at(faulty, fr2) > 3 * _amp_at(healthy, fr)


def test_misalignment_raises_2x_more_than_1x() -> None:
    healthy, fr = _one("healthy")
    faulty, fr2 = _one("misalignment")
    gain_2x = _amp_at(faulty, 2 * fr2) / _amp_at(healthy, 2 * fr)
    gain_1x = _amp_at(faulty, fr2) / _amp_at(healthy, fr)
    assert gain_2x > 5 and gain_2x > 3 * gain_1x


def test_outer_race_fault_shows_bpfo_in_the_envelope_spectrum() -> None:
    x, fr = _one("bearing_outer")
    # envelope of the resonance band (classic bearing diagnosis): band-pass by FFT mask, magnitude
    spec = np.fft.fft(x)
    f = np.fft.fftfreq(len(x), 1 / FS)
    spec[(np.abs(f) < 2500) | (np.abs(f) > 3500)] = 0
    env = np.abs(np.fft.ifft(spec))
    env_spec = np.abs(np.fft.rfft(env - env.mean()))
    freqs = np.fft.rfftfreq(len(env), 1 / FS)
    peak = freqs[np.argmax(env_spec[(freqs > 20) & (freqs < 500)]) + np.argmax(freqs > 20)]
    assert abs(peak - BPFO_PER_REV * fr) < 3.0


def test_health_decreases_monotonically_to_failure_with_time_to_failure() -> None:
    sim = MachineSim(1, Scenario([Phase("healthy", 10), Phase("bearing_inner", 50, degrade=True)]), 256, FS)
    states = [sim.step(2.0)[1] for _ in range(35)]
    health = [s.health for s in states]
    assert all(b <= a for a, b in zip(health, health[1:], strict=False))
    assert states[0].fault == "healthy" and states[0].time_to_failure_s is None
    assert states[10].fault == "bearing_inner" and states[10].time_to_failure_s == pytest.approx(38.0)
    assert states[-1].health == 0.0 and states[-1].failed and states[-1].time_to_failure_s == 0.0
    assert states[-1].temperature_c > states[0].temperature_c + 10


def test_scenario_yaml_round_trip_and_bad_fault_named(tmp_path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "phases": [
                    {"fault": "healthy", "duration_s": 5},
                    {"fault": "imbalance", "duration_s": 9, "degrade": True},
                ]
            }
        )
    )
    sc = Scenario.from_yaml(p)
    assert [ph.fault for ph in sc.phases] == ["healthy", "imbalance"] and sc.phases[1].degrade
    p.write_text(yaml.safe_dump({"phases": [{"fault": "rust", "duration_s": 5}]}))
    with pytest.raises(VibrationError, match=r"phases\[0\].*'rust'"):
        Scenario.from_yaml(p)


def test_dataset_files_follow_the_trainer_contract(tmp_path) -> None:
    out = write_dataset(tmp_path / "ds", n_runs=5, windows_per_run=3, seed=0, window_samples=512)
    z = np.load(out / "windows.npz")
    assert z["waveform"].shape == (15, 512) and z["waveform"].dtype == np.float32
    for k in ("temperature", "speed", "load", "fault", "health", "rul_s", "run_id", "t_s"):
        assert z[k].shape == (15,), k
    assert set(z["fault"].tolist()) == set(FAULTS)
    healthy = z["fault"] == "healthy"
    assert np.isnan(z["rul_s"][healthy]).all() and np.isfinite(z["rul_s"][~healthy]).all()
    assert ((z["health"] >= 0) & (z["health"] <= 1)).all()
    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    assert meta["kind"] == "vibration" and meta["n"] == 15 and meta["window_samples"] == 512
    assert meta["faults"] == FAULTS and meta["seed"] == 0 and meta["generator"]


def test_dataset_cli_writes_the_folder(tmp_path) -> None:
    rc = dataset_main(["--out", str(tmp_path / "d"), "--runs", "5", "--windows-per-run", "2"])
    assert rc == 0 and (tmp_path / "d" / "windows.npz").exists()
