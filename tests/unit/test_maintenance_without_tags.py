"""A baseline without a speed tag on machines the project's simulators never make
(tests/support/slow_machines.py): a fan slower than one window resolves is judged on every window,
without the orders it cannot place, and a bearing fault still alarms; a stop is told from the signal
(and the temperature) and held as stopped, while a dead sensor still raises its fault."""

from __future__ import annotations

import numpy as np

from edge_agent.maintenance.baseline import SPEED_FEATURES, TEMP_GRACE_S, Baseline
from edge_agent.maintenance.sensor import SensorFault, SensorWatch
from edge_agent.maintenance.sensor import check as sensor_check
from edge_agent.maintenance.settings import BaselineSettings
from tests.support.slow_machines import FS, N, SlowFan, StoppingGearbox


def test_a_slow_fan_without_a_speed_tag_is_judged_on_every_window_and_a_bearing_fault_still_alarms():
    """A 740-rpm belt-driven fan (12.3 Hz: 2.5 bins of a 0.2-s window), its speed wandering +-5 %, the
    speed range set around it: each window's speed found in the spectrum was noise (0.53-1.25x the
    shaft), and its orders, envelope lines and speed band were taken at it: a quarter to half of the
    healthy fan's windows fell in a speed band never commissioned (UNSURE, not judged: a fault then
    counted towards no alarm), others rose on orders taken at a wrong speed. A window's estimate that
    strays from the tracked speed is not used now, and a shaft no window resolves is judged without
    its orders (said once): a compressed day of healthy windows is all judged, none alarms, and an
    outer-race defect at that speed alarms within a few windows."""
    fan = SlowFan(rpm=740.0, seed=0, period=60)
    events = []
    b = Baseline(BaselineSettings(windows=40, speed_range_rpm=(600, 900)), FS, N, on_event=events.append)
    for _ in range(40):
        b.process(fan.window())
    assert b.state == "ready"
    day = [b.process(fan.window()) for _ in range(40)]
    assert [v.extrapolated for v in day].count(True) == 0, [round(60 * v.speed_hz) for v in day]
    assert not any(v.alarm or v.anomalous for v in day), [round(v.score, 2) for v in day]
    assert all(v.speed_estimated and 600 <= 60 * v.speed_hz <= 900 for v in day)
    speed = [e for e in events if e["kind"] == "baseline_speed"]
    assert len(speed) == 1 and speed[0]["orders"] is False and speed[0]["confidence"] < 0.4, speed
    f = b.features(fan.window(), None)
    assert all(f[k] == 0.0 for k in SPEED_FEATURES)  # not used: held at 0, judged without them
    fault = [b.process(fan.window(outer_race=1.0)) for _ in range(4)]
    assert any(v.alarm for v in fault), [round(v.score, 2) for v in fault]


def _commissioned(temperature_tag: str | None, clock) -> tuple[Baseline, StoppingGearbox]:
    g = StoppingGearbox(seed=1)
    b = Baseline(BaselineSettings(windows=30, temperature_tag=temperature_tag), FS, N, clock=clock)
    for _ in range(30):
        b.process(g.window(), {"_temperature": g.temperature()})
    assert b.state == "ready"
    return b, g


def _judge(b: Baseline, watch: SensorWatch, x: np.ndarray, temperature: float):
    """A window as the pipeline judges it: the sensor check on its samples, then the baseline."""
    fault = sensor_check(x)
    v = None
    if fault is None:
        v = b.process(x, {"_temperature": temperature})
        fault = None if v.sensor is None else SensorFault(v.sensor_kind or "", v.sensor)
    watch.record(fault)
    return v, fault


def test_without_a_speed_tag_a_stop_is_held_as_stopped_and_a_dead_sensor_is_still_a_fault(caplog):
    """A gearbox without a speed or run tag stopping for 200 s: its windows (the sensor's and the
    plant's noise) were a 'low_level' sensor fault, an episode telling to check the sensor at every
    stop. The vibration falling to the noise floor across its bands is now a stop: UNSURE with that
    reason, no episode, no alarm, the tracked speed not moved; a dead input reading far below the
    sensor's floor at those stops, or a flat line, is still a sensor fault; a stop held a day by the
    vibration alone is said once (a sensor fallen off reads like a stopped machine)."""
    now = [0.0]
    b, g = _commissioned(None, lambda: now[0])
    events = []
    watch = SensorWatch("gearbox", events.append)
    seen, speed = [], {}
    for k in range(40):
        g.running = not 5 <= k < 25
        speed[k] = b.speed_hz
        v, fault = _judge(b, watch, g.window(), g.temperature())
        seen.append((g.running, v.stopped, v.sensor_kind, v.alarm))
    assert events == [], events
    assert all(s and kind is None and not alarm for run, s, kind, alarm in seen if not run), seen
    assert not any(s or alarm for run, s, _, alarm in seen[30:]), seen  # running again: judged
    assert speed[25] == speed[5]  # the stop's noise did not move the tracked speed
    assert "stopped" in b.process(*_stopped(g)).stop_reason and b.status()["low_since"] == now[0]
    now[0] += 25 * 3600.0
    for _ in range(2):
        assert b.process(*_stopped(g)).stopped
    said = [r.message for r in caplog.records if "held as stopped for 25 h" in r.message]
    assert len(said) == 1 and "check the sensor" in said[0]
    dead = 1e-3 * g.window()  # a dead input: a thousandth of the sensor's floor at rest
    v, fault = _judge(b, watch, dead, 30.0)
    assert v.sensor_kind == "low_level" and not v.stopped and "no live sensor" in v.sensor
    assert events and events[-1]["fault"] == "low_level" and events[-1]["active"]
    _, flat = _judge(b, watch, np.full(N, 0.25), 30.0)
    assert flat is not None and flat.kind == "flatline"


def _stopped(g: StoppingGearbox) -> tuple[np.ndarray, dict[str, float]]:
    g.running = False
    return g.window(), {"_temperature": g.temperature()}


def test_with_a_temperature_tag_a_detached_sensor_on_a_running_machine_is_a_fault_a_cooling_stop_is_not():
    """With ``temperature_tag``, a stop cools the machine and stays a stop; a sensor that reads only the
    plant's noise while the temperature holds the running level (detached: the signal alone looks like
    a stop) is a 'low_level' sensor fault once the temperature has had ``TEMP_GRACE_S`` to fall."""
    now = [0.0]
    b, g = _commissioned("BearingTemp", lambda: now[0])
    events = []
    watch = SensorWatch("gearbox", events.append)
    for k in range(16):  # a stop: the housing cools
        now[0] += 60.0
        g.running = k >= 12
        v, _ = _judge(b, watch, g.window(), g.temperature())
        assert v.stopped == (not g.running) and v.sensor is None, (k, v.to_dict())
    assert events == []
    verdicts = []
    for _ in range(int(TEMP_GRACE_S / 60) + 3):  # detached: the plant's noise, the machine warm
        now[0] += 60.0
        g.running = True
        t = g.temperature()
        g.running = False
        verdicts.append(_judge(b, watch, g.window(), t)[0])
    assert verdicts[0].stopped and not verdicts[-1].stopped
    assert verdicts[-1].sensor_kind == "low_level" and "temperature" in verdicts[-1].sensor
    assert [e["fault"] for e in events if e["active"]] == ["low_level"]


def test_a_temperature_tag_in_fahrenheit_is_judged_in_degrees_celsius_not_in_its_own_degrees():
    """The temperature rules (a stop cools 1 degree; a machine 5 degrees below its commissioned running
    temperature is at rest) were read in the tag's own degrees: in Fahrenheit, 5 of them are 2.8 C, and a
    machine running 3 C cooler than when commissioned (at night) whose sensor came loose was held as a stop
    for as long as it lasted, never said (a tag in Celsius says it). ``temperature_unit: F`` reads them in
    Fahrenheit's degrees (9 F, 1.8 F): the detached sensor is said. (K's degrees are Celsius'.)"""
    now = [0.0]
    g = StoppingGearbox(seed=1)
    settings = BaselineSettings(windows=30, temperature_tag="T", temperature_unit="F")
    b = Baseline(settings, FS, N, clock=lambda: now[0])
    for _ in range(30):
        b.process(g.window(), {"_temperature": g.temperature() * 1.8 + 32.0})
    assert b.state == "ready"
    watch = SensorWatch("gearbox", lambda e: None)
    kinds = []
    for _ in range(int(TEMP_GRACE_S / 60) + 2):  # detached, the machine running 3 C cooler
        now[0] += 60.0
        g.running = True
        t = (g.temperature() - 3.0) * 1.8 + 32.0
        g.running = False
        kinds.append(_judge(b, watch, g.window(), t)[0].sensor_kind)
    assert kinds[0] is None and kinds[-1] == "low_level", kinds  # before: held as a stop throughout


def test_a_temperature_tag_in_tenths_of_a_degree_is_read_with_its_scale():
    """A PLC's temperature as an INT in tenths of a degree (215 for 21.5 C): read in its own counts, the rules' 1
    degree of cooling was 0.1 C, which the sensor's noise alone gives, and a detached vibration sensor on a running
    machine was held as a stop for good, never said. ``temperature_scale: 0.1`` reads the counts as degrees."""
    now = [0.0]
    g = StoppingGearbox(seed=1)
    settings = BaselineSettings(windows=30, temperature_tag="T", temperature_scale=0.1)
    b = Baseline(settings, FS, N, clock=lambda: now[0])
    for _ in range(30):
        b.process(g.window(), {"_temperature": round(g.temperature() * 10)})
    assert b.state == "ready"
    watch = SensorWatch("gearbox", lambda e: None)
    kinds = []
    for _ in range(int(TEMP_GRACE_S / 60) + 2):  # detached, the machine running as commissioned
        now[0] += 60.0
        g.running = True
        t = round(g.temperature() * 10 + 2 * np.sin(now[0]))  # its noise: +-0.2 C
        g.running = False
        kinds.append(_judge(b, watch, g.window(), t)[0].sensor_kind)
    assert kinds[0] is None and kinds[-1] == "low_level", kinds  # before: held as a stop throughout
