"""A units error at another load than the commissioned one: the load moves the machine's lines against each other
(the 1x and the floor with the load, the 2x-3x not), and the shape check vetoed the common factor: the window read as
the machine. The floor moved by the factor on every octave and the gain-invariant features stayed: the sensor's."""

from __future__ import annotations

import numpy as np

from edge_agent.maintenance.baseline import Baseline
from edge_agent.maintenance.settings import BaselineSettings
from tests.support.rotor_signals import G, rotor


def test_m_s2_read_as_g_at_another_load_is_the_sensors_and_a_bearing_fault_there_the_machines():
    rng = np.random.default_rng(1)
    b = Baseline(BaselineSettings(windows=40, units="g"), 10000.0, 2048)
    for i in range(40):
        b.process(rotor(rng, load=1 + 0.1 * np.sin(i)))
    assert b.state == "ready"
    units = [b.process(G * rotor(rng, load=0.6)) for _ in range(4)]
    # formerly NG on 4 of 4 (imbalance, unspecified): a healthy machine alarmed through an m/s2 input set as g
    assert [v.sensor_kind for v in units] == ["scale"] * 4
    assert all(not v.anomalous for v in units)
    fault = [b.process(rotor(rng, load=0.6, outer_race=0.5)) for _ in range(4)]
    assert all(v.anomalous and v.sensor_kind is None for v in fault)
