"""Condition physics in model_packager.condition: defect orders, speed, velocity, ISO zones, features."""

from __future__ import annotations

import math

import numpy as np

from bench._bearing_signals import Machine
from model_packager.condition import (
    DEFAULT_BEARING,
    Bearing,
    condition_features,
    estimate_speed_hz,
    iso_zone,
    velocity_rms_mm_s,
)


def test_defect_orders_of_a_6205_and_a_contact_angle():
    o = DEFAULT_BEARING.orders()
    assert abs(o["bpfo"] - 3.585) < 0.01 and abs(o["bpfi"] - 5.415) < 0.01
    assert abs(o["ftf"] - 0.398) < 0.01 and abs(o["bsf"] - 2.357) < 0.01
    angled = Bearing(9, 7.94, 39.04, 40.0).orders()
    assert angled["bpfo"] > o["bpfo"] and angled["bpfi"] < o["bpfi"]  # cos(angle) shrinks d/D


def test_velocity_rms_of_a_known_tone_and_its_iso_zone():
    fs, f, a = 10000.0, 50.0, 2.0  # 2 m/s2 peak at 50 Hz -> v peak = a / (2 pi f)
    t = np.arange(10000) / fs
    v = velocity_rms_mm_s(a * np.sin(2 * np.pi * f * t), fs, units="m/s2")
    assert abs(v - a / (2 * math.pi * f) / math.sqrt(2) * 1000) < 0.05
    assert [iso_zone(x) for x in (1.0, 2.0, 3.0, 5.0)] == ["A", "B", "C", "D"]
    assert iso_zone(3.0, "group1_flexible") == "A"


def test_shaft_speed_is_found_in_the_spectrum_despite_mains_hum_and_a_neighbours_tone():
    for seed, rpm in ((1, 1500.0), (2, 2900.0), (3, 1100.0)):
        m = Machine(seed, rpm=rpm)
        est = estimate_speed_hz(np.array([m.window() for _ in range(8)]), m.fs, 5, 100)
        assert abs(est - rpm / 60) < 0.03 * rpm / 60, (seed, est, rpm / 60)


def test_an_outer_race_fault_raises_the_envelope_at_bpfo_not_bpfi():
    m = Machine(4, rpm=1800.0)
    healthy = [condition_features(m.window(), m.fs, m.rpm / 60, m.bearing) for _ in range(10)]
    faulty = [
        condition_features(m.window(0.6, "bearing_outer"), m.fs, m.rpm / 60, m.bearing) for _ in range(10)
    ]
    rise = {
        k: np.mean([f[k] for f in faulty]) - np.mean([h[k] for h in healthy])
        for k in ("env_bpfo", "env_bpfi")
    }
    assert rise["env_bpfo"] > 1.0 and rise["env_bpfo"] > 2 * rise["env_bpfi"]


def test_a_manifest_may_declare_condition_features_and_old_specs_are_unchanged():
    import pytest

    from model_packager.manifest import SignalPreprocessing
    from model_packager.preprocess import PreprocessError, signal_features

    m = Machine(9, rpm=1500.0)
    x = m.window(0.5, "bearing_outer")
    old = SignalPreprocessing(window_samples=2048, sample_rate_hz=10000.0, n_bands=16)
    b = m.bearing
    new = SignalPreprocessing.model_validate(
        {
            **old.model_dump(exclude={"condition"}),
            "condition": {
                "names": ["order_1x", "env_bpfo"],
                "speed_scalar": "speed",
                "bearing": [b.n_elements, b.ball_d_mm, b.pitch_d_mm, b.contact_angle_deg],
            },
        }
    )
    a, c = signal_features(x, None, old), signal_features(x, {"speed": 1500.0}, new)
    assert a.shape == (1, 20) and c.shape == (1, 22) == (1, new.n_features)
    assert np.array_equal(a, c[:, :20])
    want = condition_features(x, 10000.0, 25.0, m.bearing)
    assert np.allclose(c[0, 20:], [want["order_1x"], want["env_bpfo"]], atol=1e-5)
    with pytest.raises(PreprocessError, match="shaft speed scalar 'speed'"):
        signal_features(x, None, new)
    with pytest.raises(ValueError, match="unknown feature"):
        SignalPreprocessing(window_samples=2048, sample_rate_hz=1e4, condition={"names": ["bpfo"]})


def test_without_geometry_a_clean_envelope_line_is_outer_race_and_a_modulated_one_inner():
    m = Machine(12, rpm=2400.0)
    healthy = [condition_features(m.window(), m.fs, 40.0) for _ in range(8)]
    base = {k: np.mean([h[k] for h in healthy]) for k in ("env_bpfo", "env_bpfi")}
    outer = [condition_features(m.window(0.6, "bearing_outer"), m.fs, 40.0) for _ in range(6)]
    inner = [condition_features(m.window(0.6, "bearing_inner"), m.fs, 40.0) for _ in range(6)]
    rise = lambda fs, k: np.mean([f[k] for f in fs]) - base[k]  # noqa: E731
    assert rise(outer, "env_bpfo") > rise(outer, "env_bpfi") + 0.5
    assert rise(inner, "env_bpfi") > rise(inner, "env_bpfo") + 0.5
