"""A velocity sensor (mm/s) and an accelerometer read in millivolts (100 mV/g): the baseline takes each
in its own unit (``baseline.units: mm/s``, ``units: mV`` with ``mv_per_g``). Before, only g and m/s2
could be stated: such a waveform was read as acceleration in g, and a healthy machine's 1.2 mm/s was
taken for 50-100 mm/s of ISO velocity, zone D: NG from the first windows, commissioning or not."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.maintenance.baseline import Baseline
from edge_agent.maintenance.settings import BaselineSettings
from model_packager.condition import G, velocity_rms_mm_s

FS, N, SHAFT_HZ = 10000.0, 2048, 24.6


def _accel_g(rng: np.random.Generator, imbalance: float = 1.0) -> np.ndarray:
    """A healthy motor's acceleration (g): 1x (1.2 mm/s RMS, times ``imbalance``), 2x, the 100-Hz line,
    a rotor slot line and broadband noise."""
    t = np.arange(N) / FS

    def tone(f: float, v_mm_s: float) -> np.ndarray:  # a line of this velocity RMS, as acceleration
        return (
            v_mm_s * np.sqrt(2) * 2 * np.pi * f / 1000 / G * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
        )

    x = (
        tone(SHAFT_HZ, 1.2 * imbalance)
        + tone(2 * SHAFT_HZ, 0.4)
        + tone(100.0, 0.5)
        + tone(28 * SHAFT_HZ, 0.1)
    )
    return x + 0.006 * rng.standard_normal(N)


def _velocity_mm_s(a_g: np.ndarray) -> np.ndarray:
    """What a velocity sensor gives for this acceleration: its integral in mm/s (above 2 Hz)."""
    spec = np.fft.rfft(a_g * G)
    f = np.fft.rfftfreq(N, 1 / FS)
    v = np.zeros_like(spec)
    v[f >= 2] = spec[f >= 2] / (2j * np.pi * f[f >= 2])
    return np.fft.irfft(v, N) * 1000.0


@pytest.mark.parametrize(
    ("units", "extra", "sensor"),
    [
        ("mm/s", {}, _velocity_mm_s),
        ("mV", {"mv_per_g": 100.0}, lambda a: 100.0 * a + 3.0),  # 100 mV/g, a small bias left by the input
    ],
)
def test_a_velocity_sensor_or_a_millivolt_accelerometer_is_judged_in_its_own_unit(units, extra, sensor):
    rng = np.random.default_rng(7)
    b = Baseline(BaselineSettings(windows=20, units=units, **extra), FS, N)
    verdicts = []
    for _ in range(26):
        a = _accel_g(rng)
        v = b.process(sensor(a), {"_shaft_speed": SHAFT_HZ * 60})
        true = velocity_rms_mm_s(a, FS)
        # the ISO velocity of the machine, not of its sensor's numbers read as g (50-100 mm/s before)
        assert v.velocity_mm_s == pytest.approx(true, rel=0.05), (v.velocity_mm_s, true)
        verdicts.append(v)
    assert b.state == "ready"
    assert all(v.iso_zone in "AB" and not v.iso_alarm and not v.alarm for v in verdicts), [
        (v.iso_zone, round(v.velocity_mm_s, 1)) for v in verdicts
    ]
    assert [v.sensor_kind for v in verdicts[20:]] == [None] * 6
    grown = [
        b.process(sensor(_accel_g(rng, imbalance=8.0)), {"_shaft_speed": SHAFT_HZ * 60}) for _ in range(3)
    ]
    assert any(v.alarm for v in grown) and grown[-1].fault == "imbalance", [(v.score, v.fault) for v in grown]


def test_millivolts_without_the_sensitivity_and_a_sensitivity_without_millivolts_are_refused():
    with pytest.raises(ValidationError, match="units mV needs mv_per_g"):
        BaselineSettings(units="mV")
    with pytest.raises(ValidationError, match="mv_per_g is for units mV"):
        BaselineSettings(units="g", mv_per_g=100.0)
