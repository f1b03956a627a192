"""A velocity sensor's signal (mm/s) given to a pipeline commissioned on an accelerometer (a sensor swapped, a
transmitter or gateway switched to velocity output): every line and the floor tilt by the unit's 1/f, so the
shape changes and the gain rule (``scale``, one common factor) does not see it. Read as acceleration, the 1x
dominates: it was NG (imbalance, unspecified) on nearly every window of a healthy machine. Now the floor's
octave-by-octave fall against the commissioned one tells it: UNSURE, a sensor fault naming the units; a fault of
the machine (its lines, its bearing's resonance) is judged as before."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.maintenance.baseline import Baseline, octave_floors, units_tilt
from edge_agent.maintenance.settings import BaselineSettings
from tests.support.rotor_signals import in_units, rotor

SPEED = {"_shaft_speed": 1476.0}


def _commissioned(units: str, rng: np.random.Generator) -> Baseline:
    b = Baseline(BaselineSettings(windows=20, units=units), 10000.0, 2048)
    for i in range(20):
        b.process(in_units(rotor(rng, load=1 + 0.1 * np.sin(i)), units), SPEED)
    assert b.state == "ready" and b.floor_octaves is not None
    return b


@pytest.mark.parametrize("units", ["g", "m/s2"])
def test_a_velocity_signal_read_as_acceleration_is_a_sensor_fault_and_machine_faults_still_alarm(units):
    rng = np.random.default_rng(1)
    b = _commissioned(units, rng)
    mixed = [b.process(in_units(rotor(rng), "mm/s"), SPEED) for _ in range(4)]
    assert all(v.sensor_kind == "scale" and "velocity" in (v.sensor or "") for v in mixed), [
        v.sensor for v in mixed
    ]
    assert not any(v.alarm or v.anomalous for v in mixed)
    # the same machine in its own unit: a load change is judged healthy, its faults alarm, none is the units'
    assert not any(b.process(in_units(rotor(rng, load=1.3), units), SPEED).sensor_kind for _ in range(2))
    for fault in ({"imbalance": 6.0}, {"misalignment": 3.0}, {"outer_race": 10.0}):
        vs = [b.process(in_units(rotor(rng, **fault), units), SPEED) for _ in range(2)]
        assert all(v.sensor_kind is None and v.anomalous for v in vs), (fault, [v.sensor for v in vs])
        assert vs[-1].alarm


def test_a_baseline_learned_before_the_octaves_were_recorded_is_judged_as_before(tmp_path):
    rng = np.random.default_rng(2)
    b = _commissioned("g", rng)
    d = b.to_dict()
    assert len(d["floor_octaves"]) == 5 and d["octaves"] == []
    b.floor_octaves = None  # as loaded from a file saved before the record
    v = b.process(in_units(rotor(rng), "mm/s"), SPEED)
    assert v.sensor_kind is None


def test_an_acceleration_read_as_velocity_is_a_sensor_fault_and_a_grown_bearing_fault_still_alarms():
    # the reverse: m/s2 given to a velocity sensor's pipeline tilts the floor up as a race defect grown to
    # failure does; the shaft's 1x, which no bearing fault lowers, fell with the tilt (2*pi*24.6/1000: 0.15x)
    rng = np.random.default_rng(5)
    b = _commissioned("mm/s", rng)
    mixed = [b.process(in_units(rotor(rng), "m/s2"), SPEED) for _ in range(3)]
    assert all(v.sensor_kind == "scale" and "read as velocity" in (v.sensor or "") for v in mixed), [
        (v.fault, v.sensor) for v in mixed
    ]
    # a race defect grown to failure: broadband energy over the floor rising with frequency from the lowest octave
    # up, as a unit's f does (the shape it gave a velocity sensor's floor on an outside generator; here the
    # machine's velocity plus impacts and noise so shaped); its 1x stays
    for size in (0.0, 1.0):
        vs = []
        for _ in range(2):
            w = in_units(rotor(rng), "mm/s") + 3 * in_units(rotor(rng, outer_race=size), "m/s2")
            assert (units_tilt(octave_floors(w), b.floor_octaves) or 0) > 0
            vs.append(b.process(w, SPEED))
        assert all(v.sensor_kind is None and v.anomalous for v in vs), (size, [v.sensor for v in vs])


def _velocity_flat_machine(rng: np.random.Generator, broadband_g: float = 0.0) -> np.ndarray:
    """A motor whose broadband vibration is alike in velocity at every frequency (the acceleration ~ f: below the
    structure's resonance), its 1x and 2x; ``broadband_g``: a fault's broadband acceleration (rub, cavitation, a
    bearing's random impacting), alike at every frequency."""
    t = rng.uniform(0, 100) + np.arange(2048) / 10000.0
    f = np.fft.rfftfreq(2048, 1 / 10000.0)
    x = 0.02 * np.sin(2 * np.pi * 24.6 * t) + 0.01 * np.sin(2 * np.pi * 49.2 * t + 1.0)
    x += np.fft.irfft(np.fft.rfft(rng.standard_normal(2048)) * (0.004 * f / 1000 + broadband_g), 2048)
    return x


def test_a_broadband_fault_over_a_velocity_flat_floor_is_the_machine_not_a_velocity_signal():
    """Broadband acceleration over a floor alike in velocity moves the floor by the unit's 1/f octave by octave, as a
    velocity signal read as acceleration does, but leaves the shaft's 1x, which a unit's 1/f moves 60-fold: it read
    UNSURE 'scale' on every window, the fault never alarmed."""
    rng = np.random.default_rng(5)
    b = Baseline(BaselineSettings(windows=20, units="g"), 10000.0, 2048)
    for _ in range(20):
        b.process(_velocity_flat_machine(rng), SPEED)
    vs = [b.process(_velocity_flat_machine(rng, broadband_g=0.05), SPEED) for _ in range(3)]
    assert all(v.sensor_kind is None and v.anomalous for v in vs), [v.sensor for v in vs]
    assert vs[-1].alarm
