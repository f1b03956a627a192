"""Mains pickup (a sensor cable along a motor's leads, a screen grounded at both ends): lines exactly at the grid's
50 or 60 Hz and its odd harmonics. From one window it read as the machine (NG misalignment, imbalance, ISO zone D,
nearly every window). Where the shaft's orders are elsewhere, a window whose rise the grid's lines explain is a
sensor fault (UNSURE, ``mains_pickup`` naming the frequency); a fault of the machine under the pickup still
alarms, and where the shaft's line sits on the grid's (a 2-pole motor) the window is judged as it is."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.maintenance.baseline import Baseline
from edge_agent.maintenance.settings import BaselineSettings
from tests.support.rotor_signals import mains_pickup, rotor


def _commissioned(rpm: float, rng: np.random.Generator) -> Baseline:
    b = Baseline(BaselineSettings(windows=20, units="g", speed_tag="Speed"), 10000.0, 2048)
    for i in range(20):
        b.process(rotor(rng, rpm=rpm, load=1 + 0.1 * np.sin(i)), {"_shaft_speed": rpm})
    assert b.state == "ready"
    return b


def _with_line(rng: np.random.Generator, rpm: float, hz: float, g: float) -> np.ndarray:
    """The fan at ``rpm`` with a line of ``g`` at ``hz`` (a fault's, or the machine's own)."""
    t = np.arange(2048) / 10000.0
    return rotor(rng, rpm=rpm) + g * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6.3))


def _stood_at_another_speed(b: Baseline, rpm: float, mains: float = 50.0, size: float = 6.0, **kw) -> None:
    """As if the grid's line had stood as strong (``mains_pickup`` of ``size``) in a window judged at a speed far from
    ``rpm`` (``grid_stood``): the evidence a pickup is told on, for tests of how it is told at one speed."""
    amp = size * float(rotor(np.random.default_rng(0), **{"rpm": rpm, **kw}).std())
    b.grid_stood.setdefault(mains, []).append((1.5 * rpm / 60.0, amp))


@pytest.mark.parametrize("hz", [50.0, 60.0])
def test_mains_pickup_on_a_4_pole_motor_is_a_sensor_fault_and_its_faults_still_alarm(hz):
    rng = np.random.default_rng(3)
    b = _commissioned(1650.0, rng)  # 27.5 Hz: its orders (0.5x-10x) clear of 50 and 60 Hz by a bin or more
    _stood_at_another_speed(b, 1650.0, hz)
    speed = {"_shaft_speed": 1650.0}
    vs = [b.process(mains_pickup(rotor(rng, rpm=1650.0), rng, hz), speed) for _ in range(3)]
    assert all(v.sensor_kind == "mains_pickup" and f"at {hz:g} Hz" in (v.sensor or "") for v in vs), [
        (v.fault, v.sensor) for v in vs
    ]
    assert not any(v.anomalous or v.alarm or v.iso_alarm for v in vs)
    for fault in ({"imbalance": 6.0}, {"misalignment": 3.0}, {"outer_race": 10.0}):
        vs = [b.process(mains_pickup(rotor(rng, rpm=1650.0, **fault), rng, hz), speed) for _ in range(2)]
        assert all(v.sensor_kind is None and v.anomalous for v in vs), (fault, [v.sensor for v in vs])
        assert vs[-1].alarm


def test_a_shaft_on_the_grid_line_is_judged_as_it_is():
    # a 2-pole motor at 2,985 rpm: its 1x (49.75 Hz) and 50 Hz are one line in a 0.2-s window; an imbalance
    # there is never taken for the pickup
    rng = np.random.default_rng(4)
    b = _commissioned(2985.0, rng)
    speed = {"_shaft_speed": 2985.0}
    for x in (mains_pickup(rotor(rng, rpm=2985.0), rng), rotor(rng, rpm=2985.0, imbalance=6.0)):
        v = b.process(x, speed)
        assert v.sensor_kind is None and v.anomalous, v.sensor


def test_an_imbalance_on_the_grid_line_is_judged_though_the_speed_tag_is_1_percent_off():
    # a 2-pole motor at 2,990 rpm (1x 49.8 Hz) whose speed tag says 2,960 (a drive's output frequency, its slip
    # estimate): by the tag the 1x lies 0.7 Hz from 50 Hz, and its imbalance, no pickup at all, was taken out as the
    # pickup (UNSURE mains_pickup, no alarm)
    rng = np.random.default_rng(6)
    b = Baseline(BaselineSettings(windows=20, units="g", speed_tag="Speed"), 10000.0, 2048)
    tag = {"_shaft_speed": 2960.0}
    for i in range(20):
        b.process(rotor(rng, rpm=2990.0, load=1 + 0.1 * np.sin(i)), tag)
    vs = [b.process(rotor(rng, rpm=2990.0, imbalance=6.0), tag) for _ in range(2)]
    assert all(v.sensor_kind is None and v.anomalous for v in vs), [v.sensor for v in vs]


def test_a_misalignment_with_its_2x_on_the_grid_line_is_judged_though_the_speed_tag_is_off():
    # a 4-pole motor near synchronous speed (1,497 rpm: its 2x at 49.9 Hz) whose speed tag says 1,475 (1.5 % off):
    # by the tag the 2x lies 0.8 Hz from 50 Hz, and a misalignment (its 2x grown), no pickup at all, was taken out
    # as the pickup (UNSURE mains_pickup, no alarm)
    rng = np.random.default_rng(7)
    b = Baseline(BaselineSettings(windows=20, units="g", speed_tag="Speed"), 10000.0, 2048)
    tag = {"_shaft_speed": 1475.0}
    for i in range(20):
        b.process(rotor(rng, rpm=1497.0, load=1 + 0.1 * np.sin(i)), tag)
    t = np.arange(2048) / 10000.0
    f2 = 2 * 1497.0 / 60
    grown = 2e-3 * 2 * np.pi * f2 / 9.80665  # the 2x grown by 2 mm/s, in g
    vs = [
        b.process(
            rotor(rng, rpm=1497.0) + grown * np.sin(2 * np.pi * f2 * t + rng.uniform(0, 2 * np.pi)), tag
        )
        for _ in range(4)
    ]
    assert all(v.sensor_kind is None and v.anomalous for v in vs), [v.sensor for v in vs]


def test_a_grid_line_on_a_higher_shaft_order_is_the_machines_too_and_faults_under_a_pickup_alarm():
    # a 4-pole drive at 975 rpm: its 3x (48.75 Hz) within a bin of 50 Hz, one line with the grid's in a window. Taken
    # out with the pickup's 150 Hz (clear of the orders), faults there were not seen; it is judged as it is
    rng = np.random.default_rng(8)
    b = _commissioned(975.0, rng)
    speed = {"_shaft_speed": 975.0}
    vs = [b.process(mains_pickup(rotor(rng, rpm=975.0), rng), speed) for _ in range(2)]
    assert not any(v.sensor_kind == "mains_pickup" for v in vs), [v.sensor for v in vs]
    for fault in ({"imbalance": 6.0}, {"misalignment": 3.0}, {"looseness": 2.0}):
        vs = [b.process(mains_pickup(rotor(rng, rpm=975.0, **fault), rng), speed) for _ in range(2)]
        assert all(v.sensor_kind is None and v.anomalous for v in vs), (fault, [v.sensor for v in vs])
        assert vs[-1].alarm


def test_a_machines_own_line_on_a_grid_harmonic_is_not_taken_for_a_pickup():
    # 750 rpm: 50 Hz is the 4x, so every grid harmonic is an order too; a 12-vane fan's blade pass stands on 150 Hz
    # (12x). A rise of the 4x (on 50 Hz), no pickup anywhere, was fitted out with it as the cable's: mains_pickup
    rng = np.random.default_rng(8)
    b = Baseline(BaselineSettings(windows=20, units="g", speed_tag="Speed"), 10000.0, 2048)
    for i in range(20):
        b.process(rotor(rng, rpm=750.0, load=1 + 0.1 * np.sin(i), vanes=12), {"_shaft_speed": 750.0})
    t = np.arange(2048) / 10000.0
    vs = [
        b.process(
            rotor(rng, rpm=750.0, vanes=12) + 0.03 * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 6.3)),
            {"_shaft_speed": 750.0},
        )
        for _ in range(3)
    ]
    assert all(v.sensor_kind is None and v.anomalous for v in vs), [(v.score, v.sensor) for v in vs]
    assert vs[-1].alarm


def test_a_fault_on_an_order_a_fraction_of_a_bin_off_the_grid_line_is_not_taken_out_with_the_pickup():
    # 995 rpm: the 3x at 49.75 Hz, 0.05 of a bin off 50 Hz: one line in the window. A 3x grown under a pickup was
    # fitted out with it, read mains_pickup (no alarm); it is judged as it is, NG with an alarm, as it reads alone
    rng = np.random.default_rng(8)
    b = _commissioned(995.0, rng)
    vs = [
        b.process(mains_pickup(_with_line(rng, 995.0, 49.75, 0.04), rng), {"_shaft_speed": 995.0})
        for _ in range(2)
    ]
    assert all(v.sensor_kind is None and v.anomalous for v in vs), [v.sensor for v in vs]
    assert vs[-1].alarm


def test_a_bearing_tone_on_a_grid_harmonic_with_no_50_hz_line_is_not_taken_for_a_pickup():
    # 1,700 rpm: a bearing's tone at 5.29x (not a whole order) grown on 150 Hz, the grid's 3rd harmonic, no pickup
    # anywhere (no line at 50 Hz): it was fitted out as the pickup's harmonic, mains_pickup with no alarm
    rng = np.random.default_rng(8)
    b = _commissioned(1700.0, rng)
    vs = [b.process(_with_line(rng, 1700.0, 150.0, 0.1), {"_shaft_speed": 1700.0}) for _ in range(3)]
    assert all(v.sensor_kind is None and v.anomalous for v in vs), [(v.score, v.sensor) for v in vs]
    assert vs[-1].alarm


def test_a_line_the_machine_showed_on_50_hz_at_commissioning_is_never_taken_for_a_pickup(tmp_path):
    # a belt-driven fan's 1x on 50.0 Hz (its speed 3,000 rpm; the motor's at 1,333 rpm, 50 Hz 2.25x, its orders a
    # bin or more off), 0.02 g at commissioning. Its imbalance grown 10x, no pickup anywhere, was fitted out as the
    # pickup: mains_pickup, no alarm, 'not the machine', every window. The record survives the file
    rng = np.random.default_rng(8)
    path = tmp_path / "fan.json"
    b = Baseline(BaselineSettings(windows=20, units="g", speed_tag="Speed"), 10000.0, 2048, path=path)
    speed = {"_shaft_speed": 1333.3}
    for i in range(20):
        b.process(_with_line(rng, 1333.3, 50.0, 0.02 * (1 + 0.1 * np.sin(i))), speed)
    assert b.mains_seen == [50.0]
    b = Baseline(BaselineSettings(windows=20, units="g", speed_tag="Speed"), 10000.0, 2048, path=path)
    assert b.state == "ready" and b.mains_seen == [50.0]
    vs = [b.process(_with_line(rng, 1333.3, 50.0, 0.2), speed) for _ in range(2)]
    assert all(v.sensor_kind is None and v.anomalous for v in vs), [(v.score, v.sensor) for v in vs]
    assert vs[-1].alarm


def test_a_pickup_the_machine_was_commissioned_with_is_not_recorded_as_its_own_line():
    # a cable's pickup (50 Hz and its 150 Hz) in every learned window; later it grows 2-4x on the healthy machine
    # (1,790 rpm: the shaft's orders clear of 50 Hz). Recorded as the machine's lines, it was judged as it is: NG,
    # alarms, 4-6 of 9 windows, where it was told before the record
    rng = np.random.default_rng(4)
    b = Baseline(BaselineSettings(windows=20, units="g", speed_tag="Speed"), 10000.0, 2048)
    speed = {"_shaft_speed": 1790.0}
    for i in range(20):
        b.process(mains_pickup(rotor(rng, rpm=1790.0), rng, size=1 + 0.15 * np.sin(3 * i)), speed)
    assert b.state == "ready" and b.mains_seen == []
    _stood_at_another_speed(b, 1790.0, size=4.0)
    vs = [b.process(mains_pickup(rotor(rng, rpm=1790.0), rng, size=4.0), speed) for _ in range(3)]
    assert not any(v.alarm for v in vs), [(v.score, v.sensor) for v in vs]
    assert any(v.sensor_kind == "mains_pickup" for v in vs), [(v.score, v.sensor) for v in vs]


def _drive(rng: np.random.Generator, rpms: np.ndarray, line, path=None) -> Baseline:
    """A drive's baseline commissioned at ``rpms`` (a speed tag), each window the motor with ``line(rpm)`` added."""
    b = Baseline(BaselineSettings(windows=rpms.size, units="g", speed_tag="Speed"), 10000.0, 2048, path=path)
    for i, rpm in enumerate(rpms):
        b.process(rotor(rng, rpm=rpm, load=1 + 0.1 * np.sin(i)) + line(rpm), {"_shaft_speed": rpm})
    assert b.state == "ready"
    return b


def test_a_drives_line_crossing_50_hz_as_the_speed_changes_is_the_machines_not_a_pickup(tmp_path):
    # a VFD's belt-driven fan: its 1x 2.25 times the motor's speed (no whole or half order of it), commissioned over
    # 1,000-1,700 rpm, crosses 50 Hz at 1,333 rpm (the motor's orders a bin or more off). Its imbalance grown 10x
    # there, no pickup anywhere, read mains_pickup, no alarm, every window: at no one commissioned speed was it on 50 Hz
    # in half the windows. The fan's line is recorded as an order of the shaft, and the record survives the file
    rng = np.random.default_rng(11)
    t = np.arange(2048) / 10000.0

    def fan(rpm: float, size: float = 1.0) -> np.ndarray:
        hz = 2.25 * rpm / 60
        return size * 0.02 * (rpm / 1333.3) ** 2 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6.3))

    path = tmp_path / "fan.json"
    _drive(rng, rng.uniform(1000.0, 1700.0, 30), fan, path)
    b = Baseline(BaselineSettings(windows=30, units="g", speed_tag="Speed"), 10000.0, 2048, path=path)
    assert b.state == "ready" and any(abs(o - 2.25) < 0.02 for o in b.machine_orders or []), b.machine_orders
    speed = {"_shaft_speed": 1333.3}
    vs = [b.process(rotor(rng, rpm=1333.3) + fan(1333.3, 10.0), speed) for _ in range(3)]
    assert all(v.sensor_kind is None and v.anomalous for v in vs), [(v.score, v.sensor) for v in vs]
    assert vs[-1].alarm


def test_a_pure_grid_line_a_drive_was_commissioned_with_is_a_pickup_not_its_own_line():
    # a cable's pickup at 50 Hz alone (no 150 Hz) in every window of a drive commissioned over 1,300-1,800 rpm: it
    # stayed on 50 Hz while the speed moved, so it is no line of the machine. Recorded as the machine's (mains_seen),
    # grown 4x on the healthy machine it read NG with alarms until relearned
    rng = np.random.default_rng(14)
    t = np.arange(2048) / 10000.0

    def pickup(rpm: float, size: float = 1.0) -> np.ndarray:
        return size * 0.03 * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 6.3))

    b = _drive(rng, rng.uniform(1300.0, 1800.0, 30), pickup)
    assert b.mains_seen == [], b.mains_seen
    # seen first at 1,320 rpm, then at 1,650 (its orders clear of 50 Hz at both): the line has stayed put where a
    # line of the machine on 50 Hz at 1,650 rpm would have moved to 40 Hz, two bins
    b.process(rotor(rng, rpm=1320.0) + pickup(1320.0, 4.0), {"_shaft_speed": 1320.0})
    speed = {"_shaft_speed": 1650.0}
    vs = [b.process(rotor(rng, rpm=1650.0) + pickup(1650.0, 4.0), speed) for _ in range(3)]
    assert not any(v.alarm or v.iso_alarm for v in vs), [(v.score, v.sensor) for v in vs]
    assert all(v.sensor_kind == "mains_pickup" for v in vs), [(v.score, v.sensor) for v in vs]


@pytest.mark.parametrize("hz", [49.6, 50.3])
def test_a_pickup_on_a_grid_off_its_nominal_frequency_is_told(hz):
    # a grid at 49.6 Hz (within its 1 %): the pickup's 148.8 Hz line, looked for at 150 Hz, was taken for a shaft's
    # line and left in, and the healthy machine read NG with alarms every window. Fitted at the grid's frequency as the
    # window shows it, the pickup is told. At 50.3 Hz the shaft's 2x (55 Hz) lies within a bin of the grid's measured
    # frequency, not of 50 Hz: fitted beside it and left in, the pickup is told as before the grid was measured
    rng = np.random.default_rng(4)
    b = _commissioned(1650.0, rng)
    _stood_at_another_speed(b, 1650.0)
    vs = [
        b.process(mains_pickup(rotor(rng, rpm=1650.0), rng, hz), {"_shaft_speed": 1650.0}) for _ in range(3)
    ]
    assert all(v.sensor_kind == "mains_pickup" and "at 50 Hz" in (v.sensor or "") for v in vs), [
        (v.score, v.sensor) for v in vs
    ]
    assert not any(v.alarm or v.iso_alarm for v in vs)


def test_the_machines_orders_are_found_without_trying_every_order_against_every_line(monkeypatch):
    # a long commissioning (windows up to 20,000) at a fine resolution shows 20-40 lines a window under 420 Hz; every
    # order was tried against every line, (windows x lines)^2: 28 s at 2,000 windows of 30 lines, 5 min at 20,000,
    # the pipeline's thread held at the end of learning. The fan's order is still found among the noise's lines
    from edge_agent.maintenance import baseline

    rng = np.random.default_rng(8)
    speeds = list(rng.uniform(15.0, 30.0, 600))
    lines = [sorted([*rng.uniform(1.0, 420.0, 20).round(3), round(2.22 * s, 3)]) for s in speeds]
    tried = []

    class _Counting:
        def __getattr__(self, name):
            fn = getattr(np, name)
            return (lambda *a, **k: tried.append(1) or fn(*a, **k)) if name == "unique" else fn

    monkeypatch.setattr(baseline, "np", _Counting())
    assert baseline.machine_orders(lines, speeds, 0.39) == [2.22]
    assert len(tried) < 100, len(tried)  # one per order standing in enough windows, not one per line seen


def test_an_imbalance_on_the_grid_line_at_a_fine_resolution_is_judged_though_the_speed_tag_is_1_percent_off():
    # 3.2-s windows (5,120 Hz x 16,384: 0.31-Hz bins) of a 2-pole motor at 2,990 rpm (1x 49.83 Hz) whose speed tag
    # says 2,960 (49.33 Hz): the tag's 1x lies two bins from 50 Hz, the grid's frequency was fitted at the imbalance's
    # line (within 0.5 Hz of 50) and the imbalance grown 5x, no pickup anywhere, read mains_pickup, no alarm. A shaft's
    # order is one with the grid's own frequency within the drift searched and the tag's 2 % of it, however fine the bin
    rng = np.random.default_rng(6)
    b = Baseline(BaselineSettings(windows=20, units="g", speed_tag="Speed"), 5120.0, 16384)
    fine = {"fs": 5120.0, "n": 16384, "rpm": 2990.0}
    for i in range(20):
        b.process(rotor(rng, load=1 + 0.1 * np.sin(i), **fine), {"_shaft_speed": 2960.0})
    assert b.state == "ready"
    vs = [b.process(rotor(rng, imbalance=5.0, **fine), {"_shaft_speed": 2960.0}) for _ in range(3)]
    assert all(v.sensor_kind is None and v.anomalous for v in vs), [(v.score, v.sensor) for v in vs]
    assert vs[-1].alarm


def test_a_learning_resumed_from_a_file_without_the_machines_lines_keeps_its_line_on_50_hz_as_the_machines(
    tmp_path,
):
    # a drive's learning (1,200-1,500 rpm, a fan's 1x 2.25 times the speed about 50 Hz) saved by a version that
    # recorded no machine_lines, resumed after the upgrade: no machine_orders are known, and the fan's line seen about
    # 50 Hz in most windows was dropped from mains_seen as a grid line that stayed put while the speed moved. Its
    # imbalance grown 10x where its 1x sits on 50 Hz read mains_pickup, no alarm (recorded, as before, it is judged)
    import json

    rng = np.random.default_rng(11)
    t = np.arange(2048) / 10000.0

    def fan(rpm: float, size: float = 1.0) -> np.ndarray:
        return (
            size * 0.02 * (rpm / 1333.3) ** 2 * np.sin(2 * np.pi * 2.25 * rpm / 60 * t + rng.uniform(0, 6.3))
        )

    path = tmp_path / "fan.json"
    settings = BaselineSettings(windows=30, units="g", speed_tag="Speed")
    b = Baseline(settings, 10000.0, 2048, path=path)
    for rpm in rng.uniform(1200.0, 1500.0, 10):
        b.process(rotor(rng, rpm=rpm) + fan(rpm), {"_shaft_speed": rpm})
    saved = json.loads(path.read_text())
    assert saved["state"] == "learning" and len(saved["rows"]) == 10
    saved.pop("machine_lines")
    path.write_text(json.dumps(saved))
    b = Baseline(settings, 10000.0, 2048, path=path)
    for rpm in rng.uniform(1200.0, 1500.0, 20):
        b.process(rotor(rng, rpm=rpm) + fan(rpm), {"_shaft_speed": rpm})
    assert b.state == "ready" and b.machine_orders is None and b.mains_seen == [50.0], b.mains_seen
    speed = {"_shaft_speed": 1333.3}
    vs = [b.process(rotor(rng, rpm=1333.3) + fan(1333.3, 10.0), speed) for _ in range(3)]
    assert all(v.sensor_kind is None and v.anomalous for v in vs), [(v.score, v.sensor) for v in vs]


def test_a_pickup_2_hz_from_a_shafts_order_in_1_5_hz_bins_is_told():
    # 10 kHz x 6,400 (1.56-Hz bins), the rotor at 1,920 rpm: its 1.5x at 48 Hz, 2 Hz from 50. The fit of the grid's
    # frequency lands on the machine's line only where that line stands within 0.5 Hz of 50 Hz, so an order is one
    # with the grid's within 0.5 Hz and the tag's 2 % of it (1.5 Hz), here within the bin: a half bin more read this
    # pickup as the machine, NG with alarms
    rng = np.random.default_rng(4)
    kw = {"fs": 10000.0, "n": 6400, "rpm": 1920.0}
    b = Baseline(BaselineSettings(windows=20, units="g", speed_tag="Speed"), 10000.0, 6400)
    for i in range(20):
        b.process(rotor(rng, load=1 + 0.1 * np.sin(i), **kw), {"_shaft_speed": 1920.0})
    _stood_at_another_speed(b, 1920.0, **{k: v for k, v in kw.items() if k != "rpm"})
    vs = [b.process(mains_pickup(rotor(rng, **kw), rng), {"_shaft_speed": 1920.0}) for _ in range(3)]
    assert all(v.sensor_kind == "mains_pickup" for v in vs), [(v.score, v.sensor) for v in vs]
    assert not any(v.alarm or v.iso_alarm for v in vs)


def test_a_line_grown_on_50_hz_is_the_machines_until_the_grid_line_stood_while_the_speed_moved():
    # a drive commissioned over 1,300-1,800 rpm; at 1,650 rpm (its orders clear of 50 Hz) a line it did not show then
    # (a bearing's tone, a fan's 1x at 1/30 of its level) grows onto 50 Hz, no pickup anywhere: one window cannot tell it
    # from a pickup, and it read mains_pickup, no alarm. It is the machine's (NG, alarms) until the grid's line has
    # stood as strong at a speed that moves any line of the machine two bins: a pickup, told there
    rng = np.random.default_rng(21)
    t = np.arange(2048) / 10000.0

    def tone(size: float) -> np.ndarray:
        return size * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 6.3))

    b = _drive(rng, rng.uniform(1300.0, 1800.0, 30), lambda rpm: 0.0)
    speed = {"_shaft_speed": 1650.0}
    vs = [b.process(rotor(rng, rpm=1650.0) + tone(0.12), speed) for _ in range(3)]
    assert all(v.sensor_kind is None and v.anomalous for v in vs), [(v.score, v.sensor) for v in vs]
    assert vs[-1].alarm
    b.process(rotor(rng, rpm=1320.0) + tone(0.12), {"_shaft_speed": 1320.0})  # the line stayed on 50 Hz
    v = b.process(rotor(rng, rpm=1650.0) + tone(0.12), speed)
    assert v.sensor_kind == "mains_pickup", (v.score, v.sensor)
    # the pickup gone (the cable repaired), then a line grown onto 50 Hz: the machine's again until the speed moves
    b.process(rotor(rng, rpm=1650.0), speed)
    v = b.process(rotor(rng, rpm=1650.0) + tone(0.12), speed)
    assert v.sensor_kind is None and v.anomalous, (v.score, v.sensor)


def test_a_line_grown_on_50_hz_from_a_quarter_of_a_gone_pickups_size_is_not_told_as_that_pickup():
    # a pickup seen at 1,320 and 1,650 rpm (its evidence), the cable repaired; then a line the drive did not show at
    # commissioning grows onto 50 Hz at 1,650 rpm, over the threshold from a quarter of the pickup's size: each window
    # was told as the gone pickup, no alarm, up to the pickup's size and on (its evidence forgotten only at a window
    # under the threshold; 6 of 10 seeds)
    rng = np.random.default_rng(24)
    t = np.arange(2048) / 10000.0

    def tone(hz: float, size: float) -> np.ndarray:
        return size * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6.3))

    b = _drive(rng, rng.uniform(1300.0, 1800.0, 30), lambda rpm: 0.0)
    for rpm in (1320.0, 1650.0):
        b.process(rotor(rng, rpm=rpm) + tone(50.0, 0.12) + tone(150.0, 0.04), {"_shaft_speed": rpm})
    assert b.grid_stood.get(50.0)
    vs = [
        b.process(rotor(rng, rpm=1650.0) + tone(50.0, g), {"_shaft_speed": 1650.0})
        for g in (0.03, 0.06, 0.12, 0.12)
    ]
    assert not any(v.sensor_kind == "mains_pickup" for v in vs), [(v.score, v.sensor) for v in vs]
    assert vs[0].anomalous and vs[-1].alarm, [(v.score, v.anomalous, v.alarm) for v in vs]


def _grid_line_by_outer_product(x: np.ndarray, fs: float, mains: float) -> float:
    """The grid line's amplitude as first written (every frequency x every sample at once): the reference."""
    w = np.hanning(x.size)
    t = np.arange(x.size) / fs
    step = min(0.25, 0.25 * fs / x.size)
    fr = mains + np.arange(-0.5, 0.5 + step / 2, step)
    return (
        2.0
        * float(np.abs(np.exp(-2j * np.pi * np.outer(fr, t)) @ ((x - x.mean()) * w)).max())
        / float(w.sum())
    )


@pytest.mark.parametrize(
    ("fs", "n", "hz"), [(10000.0, 2048, 50.2), (2560.0, 16384, 59.6), (12800.0, 4096, 49.9)]
)
def test_a_pickups_evidence_is_forgotten_exactly_where_its_grid_line_is_under_half_as_strong(fs, n, hz):
    rng = np.random.default_rng(int(n))
    t = np.arange(n) / fs
    x = rng.normal(0.0, 0.1, n) + 0.05 * np.sin(2 * np.pi * hz * t + 0.4) + 0.2 * np.sin(2 * np.pi * 27.5 * t)
    b = Baseline(BaselineSettings(windows=20, units="g", speed_tag="Speed"), fs, n)
    for mains in (50.0, 60.0):
        amp = _grid_line_by_outer_product(x, fs, mains)
        b.grid_stood = {mains: [(20.0, 2.0 * amp * (1 - 1e-9))]}
        b._forget_grid_gone(x)
        assert b.grid_stood, (mains, amp)
        b.grid_stood = {mains: [(20.0, 2.0 * amp * (1 + 1e-9))]}
        b._forget_grid_gone(x)
        assert not b.grid_stood, (mains, amp)


def test_checking_a_pickups_evidence_on_a_long_slow_window_takes_little_memory():
    # 65,536 samples at 2,560 Hz: 0.01-Hz steps over +-0.5 Hz, ~100 frequencies; every frequency x every sample at
    # once took ~220 MB on each judged window while a pickup's evidence was held
    import tracemalloc

    fs, n = 2560.0, 65536
    x = np.random.default_rng(5).normal(0.0, 0.1, n)
    b = Baseline(BaselineSettings(windows=20, units="g", speed_tag="Speed"), fs, n)
    b.grid_stood = {50.0: [(20.0, 1e-9)], 60.0: [(20.0, 1e-9)]}
    tracemalloc.start()
    try:
        b._forget_grid_gone(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert set(b.grid_stood) == {50.0, 60.0}
    assert peak < 16 * n * 16, peak


def _drive_rotor(rng: np.random.Generator, rpm: float, two_x: float) -> np.ndarray:
    """A drive's rotor written from first principles (not ``rotor``): its 1x, 2x and 3x at random phases, the load
    wandering +-15 %, the speed 0.1 % off the tag, white noise; 10 kHz x 2,048."""
    t = np.arange(2048) / 10000.0
    hz, load = rpm / 60.0 * (1 + rng.normal(0, 0.001)), rng.uniform(0.85, 1.15)
    x = 0.01 * rng.standard_normal(t.size)
    for k, g in ((1, 0.05), (2, two_x), (3, 0.01)):
        x += load * g * rng.uniform(0.8, 1.2) * np.sin(2 * np.pi * k * hz * t + rng.uniform(0, 2 * np.pi))
    return x


def _steady_pickup(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(2048) / 10000.0
    f, p = 50.0 + rng.normal(0, 0.02), rng.uniform(0, 2 * np.pi, 3)
    return 0.15 * sum(
        a * np.sin(2 * np.pi * k * f * t + q) for k, a, q in zip((1, 3, 5), (1, 0.3, 0.1), p, strict=True)
    )


@pytest.mark.parametrize(("seed", "two_x"), [(1, 0.0), (2, 0.06)])
def test_a_steady_pickup_on_a_healthy_drive_is_told_with_its_2x_a_bin_from_50_hz(seed, two_x):
    # a drive commissioned over 1,300-1,800 rpm, then a steady 0.15 g pickup, the drive at 1,320 and 1,650 rpm (its 2x
    # at 44 and 55 Hz, a bin or so from 50 Hz; none with no 2x). Every window alarmed: the grid's frequency, fitted
    # unweighted, came out 0.05-0.09 Hz off (the 1x leaking in) and what it left at 50 Hz read as the 2x; the 2x's
    # skirt at commissioning was recorded as a line of the machine on 50 Hz; and its peak pulled the grid's 0.5-1.3 Hz
    rng = np.random.default_rng(seed)
    b = Baseline(BaselineSettings(windows=30, units="g", speed_tag="Speed"), 10000.0, 2048)
    for rpm in rng.uniform(1300, 1800, 30):
        b.process(_drive_rotor(rng, rpm, two_x), {"_shaft_speed": rpm})
    assert b.state == "ready"
    vs = [
        b.process(_drive_rotor(rng, rpm, two_x) + _steady_pickup(rng), {"_shaft_speed": rpm})
        for rpm in (1320.0, 1650.0, 1650.0, 1320.0, 1650.0, 1650.0)
    ]
    assert not any(v.alarm or v.iso_alarm for v in vs), [(v.fault, v.sensor) for v in vs]
    assert sum(v.sensor_kind == "mains_pickup" for v in vs[1:]) >= 4, [(v.score, v.sensor) for v in vs]
