"""Commissioning's ``duration_s`` and a state's ``state_learn_s`` count the time learned on a monotonic clock,
saved with the progress: a wall clock stepped while learning (NTP setting a gateway without a battery-backed
clock a day ahead, or back) neither ends the learning at once on a few windows nor stretches it, and a restart
(its monotonic clock anew) resumes the count that was saved."""

from __future__ import annotations

from bench._bearing_signals import Machine
from edge_agent.maintenance.baseline import Baseline, read_baseline
from edge_agent.maintenance.settings import BaselineSettings
from edge_agent.maintenance.states import STATE_INPUT, StateBaselines
from tests.unit.test_baseline_states import RPM, Clock, _settings

DAY = 86400.0
HOP = 60.0  # seconds between windows


def _feed(b, m: Machine, wall: Clock, mono: Clock, n: int, load: float | None = None):
    out = []
    for _ in range(n):
        wall.t += HOP
        mono.t += HOP
        out.append(
            b.process(m.window(), {"_shaft_speed": RPM} | ({} if load is None else {STATE_INPUT: load}))
        )
    return out


def test_a_wall_clock_stepped_while_commissioning_neither_ends_nor_stretches_it(tmp_path):
    wall, mono, m = Clock(), Clock(), Machine(71, fs=10000.0, n=2048, rpm=RPM)
    mono.t = 100.0
    s = BaselineSettings(windows=2000, duration_s=3600.0, speed_tag="Speed", iso_alarm_zone="off")
    path = tmp_path / "baseline" / "fan.json"
    b = Baseline(s, 10000.0, 2048, path=path, pipeline="fan", clock=wall, monotonic=mono)
    _feed(b, m, wall, mono, 25)  # 25 minutes learned
    wall.t += DAY  # NTP: a day ahead
    v = _feed(b, m, wall, mono, 1)[0]
    assert v.state == "learning" and b.state == "learning"  # it was ready, on 26 windows
    assert round(b.progress(), 3) == round(26 * HOP / 3600.0, 3)
    wall.t -= 2 * DAY  # and back, beyond where it began
    _feed(b, m, wall, mono, 3)  # 29 minutes learned, saved at the 20th window... and the 30th now
    _feed(b, m, wall, mono, 1)
    assert read_baseline(path)["learning_s"] == 30 * HOP

    # a restart (a reboot: the monotonic clock starts anew) resumes the 30 minutes saved
    mono.t = 5.0
    again = Baseline(s, 10000.0, 2048, path=path, pipeline="fan", clock=wall, monotonic=mono)
    assert again.state == "learning" and again.learning_s() == 30 * HOP
    verdicts = _feed(again, m, wall, mono, 30)
    assert [v.state for v in verdicts].index("ready") == 29  # the hour's last window, not before
    assert again.state == "ready"


def test_a_wall_clock_stepped_ends_neither_commissioning_per_state_nor_a_state_learned_after_it(tmp_path):
    wall, mono, m = Clock(), Clock(), Machine(72, fs=10000.0, n=2048, rpm=RPM)
    s = _settings(duration_s=1800.0, state_learn_s=1800.0).model_copy(update={"windows": 2000})
    path = tmp_path / "baseline" / "conveyor.json"
    b = StateBaselines(s, 10000.0, 2048, path=path, pipeline="conveyor", clock=wall, monotonic=mono)
    _feed(b, m, wall, mono, 20, 0.0)
    wall.t += DAY
    _feed(b, m, wall, mono, 1, 0.0)
    assert b.state == "learning"  # commissioning went on: it ended on 21 windows
    _feed(b, m, wall, mono, 9, 0.0)
    assert b.state == "ready"  # its half hour (30 windows)

    _feed(b, m, wall, mono, 20, 1.0)  # loaded: first seen now, learned for state_learn_s
    wall.t += DAY
    v = _feed(b, m, wall, mono, 1, 1.0)[0]
    assert v.state == "learning" and b.status()["process_states"]["loaded"]["learning"] == "auto"
    v = _feed(b, m, wall, mono, 10, 1.0)[-1]
    assert v.state == "ready" and b.status()["process_states"]["loaded"]["learning"] is None


def test_a_wall_clock_stepped_during_a_stop_does_not_make_the_stop_a_dead_sensor():
    """Without a speed tag, with ``temperature_tag``: a stop whose temperature has not fallen after
    ``TEMP_GRACE_S`` is a dead sensor. That time was the wall clock's: a step a day ahead a minute into a stop
    said the sensor dead (a 'low_level' fault) on a machine at rest."""
    from edge_agent.maintenance.baseline import TEMP_GRACE_S
    from tests.support.slow_machines import FS, N, StoppingGearbox

    wall, mono, g = Clock(), Clock(), StoppingGearbox(seed=1)
    b = Baseline(
        BaselineSettings(windows=30, temperature_tag="BearingTemp"), FS, N, clock=wall, monotonic=mono
    )
    for _ in range(30):
        b.process(g.window(), {"_temperature": g.temperature()})
    assert b.state == "ready"

    def window():
        wall.t += HOP
        mono.t += HOP
        return b.process(g.window(), {"_temperature": g.temperature()})

    g.running = False  # a stop
    v = window()
    assert v.stopped and v.sensor is None
    wall.t += DAY
    v = window()
    assert v.stopped and v.sensor is None, v.sensor  # said a dead sensor, at rest
    g.running = True
    t = g.temperature()  # and a sensor that reads nothing on a warm machine is still said, after its grace
    g.running = False
    for _ in range(int(TEMP_GRACE_S / HOP) + 2):
        wall.t += HOP
        mono.t += HOP
        v = b.process(g.window(), {"_temperature": t})
    assert v.sensor_kind == "low_level" and "temperature" in (v.sensor or "")
