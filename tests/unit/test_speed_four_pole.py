"""Shaft speed of a 4-pole motor found without a speed tag (docs/maintenance.md, "Bearing geometry and
shaft speed"), through the documented offline path (``Baseline.process`` on 2048-sample windows at
10 kHz), on machines of ``bench/_unseen_machines.py`` (a gearmotor driving a conveyor, a helical gearbox).

A 4-pole motor turns at 24-25 Hz: in a 0.2-s window its strong 1x line's own lobe (+-10 Hz) raises the
whitened search's floor, so the 1x counted little against the noise near 0 Hz, and the speed was found
at half its value, where nothing turns; the orders then measured the wrong lines.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench._unseen_machines import MACHINES
from edge_agent.maintenance.baseline import Baseline
from edge_agent.maintenance.settings import BaselineSettings
from model_packager.condition import resample, resample_plan

FS, N = 10000.0, 2048


@pytest.mark.parametrize(
    ("kind", "seed"),
    [
        ("conveyor", 1),  # found at 0.51x before
        ("conveyor", 5),  # found at 0.52x before
        ("ambient", 3),  # found at 0.53x before
    ],
)
def test_a_four_pole_motor_is_found_at_its_speed_without_a_speed_tag(kind: str, seed: int) -> None:
    m = MACHINES[kind](seed)
    rng = np.random.default_rng(seed * 1000 + 7)
    plan = resample_plan(m.fs, FS)
    b = Baseline(BaselineSettings(windows=30), FS, N)
    for i in range(30):
        x, _ = m.window(10.0 * i, rng)
        b.process(resample(x, *plan, N) if plan != (1, 1) else x)
    assert b.speed_hz is not None
    found, rpm = b.speed_hz * 60, float(getattr(m, "rpm"))  # noqa: B009 (each kind sets its own)
    assert abs(found - rpm) <= 0.02 * rpm, f"a {rpm:.0f}-rpm motor found at {found:.0f} rpm"


@pytest.mark.parametrize("rpm", [2930.0, 2950.0, 2976.0])
def test_a_two_pole_motor_with_a_strong_twice_line_frequency_line_keeps_its_speed(rpm: float) -> None:
    # a 2-pole motor in normal running: a clear 1x line and the magnetic vibration at twice the line
    # frequency (100 Hz on 50-Hz mains), here 12 times the 1x (a well-balanced rotor). The 100-Hz line sits
    # within two bins of the shaft's 2x, and the rule for 4-pole motors took a 1x under a tenth of its 2x for
    # no shaft's, so the shaft was found at 100 Hz (6,000 rpm) though its 1x is a line of its own
    rng = np.random.default_rng(int(rpm))
    b = Baseline(BaselineSettings(windows=20), FS, N)
    f1 = rpm / 60
    for i in range(20):
        t = 0.5 * i + np.arange(N) / FS
        x = 0.01 * (np.sin(2 * np.pi * f1 * t) + 0.3 * np.sin(4 * np.pi * f1 * t + 1.0))
        x += 0.12 * np.sin(2 * np.pi * 100.0 * t) + 0.002 * np.sin(2 * np.pi * 50.0 * t)
        b.process(x + 0.0005 * rng.standard_normal(N))
    assert b.speed_hz is not None
    found = b.speed_hz * 60
    assert abs(found - rpm) <= 0.02 * rpm, f"a {rpm:.0f}-rpm 2-pole motor found at {found:.0f} rpm"
