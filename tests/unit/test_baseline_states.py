"""A baseline per process state (``baseline.state_tag``) on its own: a state first seen after
commissioning is learned for ``state_learn_s`` of the machine's time, then judged; a restart keeps every
state's baseline and the counts of windows not judged; a wrong ``states`` is refused naming the field."""

from __future__ import annotations

import numpy as np
import pytest

from bench._bearing_signals import Machine
from edge_agent.config import ConfigError, parse_config
from edge_agent.maintenance.settings import BaselineSettings, ProcessState
from edge_agent.maintenance.states import MAX_STATES, OTHER_STATES, STATE_INPUT, StateBaselines

RPM = 1800.0


class Clock:
    def __init__(self) -> None:
        self.t = 1.8e9

    def __call__(self) -> float:
        return self.t


def _settings(**kw) -> BaselineSettings:
    return BaselineSettings(
        windows=30,
        speed_tag="Speed",
        state_tag="Load",
        states=[ProcessState(name="empty", max=0.5), ProcessState(name="loaded", min=0.5)],
        iso_alarm_zone="off",
        **kw,
    )


def _run(b: StateBaselines, m: Machine, clock: Clock, n: int, load: float | None, loud: float = 1.0):
    out = []
    for _ in range(n):
        clock.t += 10.0
        sc = {"_shaft_speed": RPM} | ({} if load is None else {STATE_INPUT: load})
        out.append(b.process(m.window() * loud, sc))
    return out


def test_a_state_first_seen_after_commissioning_is_learned_for_state_learn_s_then_judged(tmp_path):
    clock = Clock()
    m = Machine(51, fs=10000.0, n=2048, rpm=RPM)
    path = tmp_path / "baseline" / "conveyor.json"
    b = StateBaselines(
        _settings(state_learn_s=300.0), 10000.0, 2048, path=path, pipeline="conveyor", clock=clock
    )
    _run(b, m, clock, 30, 0.0)  # commissioned empty only
    assert b.state == "ready" and b.status()["process_states"]["empty"]["state"] == "ready"
    learning = _run(b, m, clock, 25, 1.0, loud=2.5)  # loaded: learned for 300 s of it (30 windows at 10 s)
    assert all(v.state == "learning" and not v.alarm for v in learning)
    judged = _run(b, m, clock, 10, 1.0, loud=2.5)
    assert judged[-1].state == "ready" and judged[-1].score is not None
    assert b.status()["process_states"]["loaded"]["learning"] is None
    assert not any(v.alarm for v in judged)

    # a restart: both states' baselines and the counts come back from the data folder
    _run(b, m, clock, 10, None)  # no state value: not judged, counted (saved every 10)
    again = StateBaselines(
        _settings(state_learn_s=300.0), 10000.0, 2048, path=path, pipeline="conveyor", clock=clock
    )
    st = again.status()
    assert st["state"] == "ready" and {k: v["state"] for k, v in st["process_states"].items()} == {
        "empty": "ready",
        "loaded": "ready",
    }
    assert st["not_judged"] == {"(none)": 10}
    v = _run(again, m, clock, 1, 0.0)[0]
    assert v.state == "ready" and v.score is not None and v.process_state == "empty"


def test_without_state_learn_s_a_new_state_waits_for_a_request_and_is_counted(tmp_path):
    clock = Clock()
    m = Machine(52, fs=10000.0, n=2048, rpm=RPM)
    b = StateBaselines(
        _settings(), 10000.0, 2048, path=tmp_path / "baseline" / "c.json", pipeline="c", clock=clock
    )
    _run(b, m, clock, 30, 0.0)
    vs = _run(b, m, clock, 40, 1.0, loud=2.5)
    assert all(v.not_learned and "'loaded' is not learned" in v.not_learned for v in vs)
    assert b.status()["not_judged"] == {"loaded": 40} and "loaded" not in b.status()["process_states"]
    b.relearn("asked", "loaded")
    _run(b, m, clock, 30, 1.0, loud=2.5)
    assert b.status()["process_states"]["loaded"]["state"] == "ready"


@pytest.mark.parametrize(
    ("baseline", "says"),
    [
        ({"states": [{"name": "idle", "max": 1}]}, "states and state_learn_s need state_tag"),
        ({"state_tag": "Mode", "states": [{"name": "a", "max": 1}, {"name": "a", "min": 1}]}, "given twice"),
        ({"state_tag": "Mode", "states": [{"name": "a", "min": 2, "max": 1}]}, "min (2.0) must be below max"),
        ({"state_tag": "Mode", "states": [{"name": "a b"}]}, "states[0].name"),
        ({"state_tag": ""}, "state_tag: empty"),  # was taken as no state tag, silently
        ({"state_tag": "  ", "states": [{"name": "a", "max": 1}]}, "state_tag: empty"),
    ],
)
def test_a_wrong_process_state_setting_is_refused_naming_the_field(baseline, says):
    cfg = {
        "agent": {"id": "gw", "data_dir": "/tmp/x"},
        "sources": {"plc": {"type": "mqtt", "subscriptions": [{"topic": "a/b"}]}},
        "models": {"m": {"package": "m.edgepkg"}},
        "pipelines": [
            {"name": "p", "source": "plc", "model": "m", "window": {"waveform": "V"}, "baseline": baseline}
        ],
    }
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    assert "pipelines[0].baseline" in str(e.value) and says in str(e.value), str(e.value)


def test_state_values_without_names_are_each_a_state():
    b = StateBaselines(
        BaselineSettings(windows=30, state_tag="Step"), 10000.0, 2048, path=None, pipeline="recip"
    )
    assert [b.state_of({STATE_INPUT: v}) for v in (0.0, 1.0, 2.0, 1.4)] == ["0", "1", "2", "1"]
    assert b.state_of({}) is None and b.state_of({STATE_INPUT: float("nan")}) is None
    assert np.isfinite(b.progress())


def test_a_tag_with_ever_new_values_keeps_a_bounded_number_of_states_and_a_huge_value_is_no_state(tmp_path):
    """A speed read as state_tag without ``states`` (every whole rpm a state), with state_learn_s: each
    value made a baseline, a file and a count of its own, without bound; an uninitialised PLC REAL
    (3.4e38) made a state name no file system takes, and every window's baseline failed (OSError)."""
    clock = Clock()
    m = Machine(53, fs=10000.0, n=2048, rpm=RPM)
    folder = tmp_path / "baseline"
    s = BaselineSettings(
        windows=30, speed_tag="Speed", state_tag="Rpm", state_learn_s=300.0, iso_alarm_zone="off"
    )
    b = StateBaselines(s, 10000.0, 2048, path=folder / "fan.json", pipeline="fan", clock=clock)
    x = m.window()
    for i in range(MAX_STATES + 40):
        clock.t += 10.0
        b.process(x, {"_shaft_speed": RPM, STATE_INPUT: 1400.0 + 7 * i})
    st = b.status()
    assert len(b.by_state) <= MAX_STATES and len(st["process_states"]) <= MAX_STATES
    assert len(st["not_judged"]) <= MAX_STATES + 2 and st["not_judged"].get(OTHER_STATES, 0) >= 40
    assert len(list(folder.iterdir())) <= 2 * MAX_STATES + 2
    clock.t += 10.0
    v = b.process(x, {"_shaft_speed": RPM, STATE_INPUT: 3.4e38})
    assert v.not_learned and v.process_state is None


def test_relearn_of_a_state_without_states_takes_only_a_whole_value_as_the_agent_names_it(tmp_path):
    """Without ``states`` the agent names a state by its whole value ('1'): ``--state 1.0`` or ``--state
    on`` was accepted, and learned a state no window ever has while state '1' stayed not judged."""
    from edge_agent.maintenance.cli import request_relearn

    cfg = parse_config(
        {
            "agent": {"id": "gw", "data_dir": str(tmp_path)},
            "trusted_keys": ["k.pub"],
            "sources": {"plc": {"type": "mqtt", "subscriptions": [{"topic": "a/b"}]}},
            "models": {"m": {"package": "m.edgepkg"}},
            "pipelines": [
                {
                    "name": "press",
                    "source": "plc",
                    "model": "m",
                    "window": {"waveform": "V"},
                    "baseline": {"state_tag": "Step"},
                }
            ],
        },
        local_checks=False,  # no package here: the relearn request is what is checked
    )
    for wrong in ("1.0", "on", "01"):
        with pytest.raises(ValueError, match="whole value of state tag 'Step'"):
            request_relearn(cfg, "press", "asked", state=wrong)
    assert request_relearn(cfg, "press", "asked", state="1").is_file()
    assert request_relearn(cfg, "press", "asked", state="-1").is_file()


def test_a_repair_is_noted_for_a_pipeline_with_a_baseline_per_state(tmp_path, capsys):
    """``edge-agent baseline repaired`` on a pipeline with a state_tag said "no baseline saved yet" (it
    looked for ``<pipeline>.json``, which a baseline per state never writes) and noted nothing: the
    remaining-life trend ran on from before the bearing was changed."""
    import argparse

    from edge_agent.maintenance.baseline import repaired_path
    from edge_agent.maintenance.cli import baseline_main

    clock = Clock()
    m = Machine(54, fs=10000.0, n=2048, rpm=RPM)
    data = tmp_path / "data"
    b = StateBaselines(_settings(), 10000.0, 2048, path=data / "baseline" / "conveyor.json", clock=clock)
    _run(b, m, clock, 30, 0.0)
    cfg = parse_config(
        {
            "agent": {"id": "gw", "data_dir": str(data)},
            "trusted_keys": ["k.pub"],
            "sources": {"plc": {"type": "mqtt", "subscriptions": [{"topic": "a/b"}]}},
            "models": {"m": {"package": "m.edgepkg"}},
            "pipelines": [
                {
                    "name": "conveyor",
                    "source": "plc",
                    "model": "m",
                    "window": {"waveform": "V"},
                    "baseline": _settings().model_dump(exclude_defaults=True),
                }
            ],
        },
        local_checks=False,
    )
    args = argparse.Namespace(
        action="repaired", pipeline="conveyor", config="agent.yaml", reason="bearing replaced", json=False
    )
    assert baseline_main(args, lambda _: cfg) == 0
    assert "repair noted" in capsys.readouterr().out
    assert repaired_path(data, "conveyor").exists()


def test_a_gain_change_ahead_of_a_coarse_daq_in_windows_without_a_state_is_no_fault_over_every_state():
    """Windows without a state (the tag BAD or not read) are judged against every learned state, the sensor's
    gain first. On a 12-bit DAQ whose quantisation noise holds the high band, that check left the ADC's floor in
    the common factor there (the state's own path leaves it out): a gain x10 ahead of the ADC was over the
    threshold of every state and alarmed (imbalance, misalignment) on a healthy machine. (12 bits, not 10: on a
    10-bit DAQ the floor hides even a gain x10's part of that band, and a gain it hides is judged, as a fault
    lifting every line alike must be.) A fault that changes the shape (a misalignment's 2x and 3x) in such
    windows still alarms, and so does one lifting every line alike (the high band where the ADC holds it)."""
    rng = np.random.default_rng(3)
    fs, n, f0 = 12800.0, 2048, RPM / 60.0
    t = np.arange(n) / fs
    code_g = 10.0 / 4096 / 0.1  # +-5 V at 100 mV/g, 12 bits

    def fan(gain: float = 1.0, mis: float = 1.0, lines: float = 1.0) -> np.ndarray:
        x = 0.005 * rng.standard_normal(n)
        for h, a in ((1, 0.4), (2, 0.15 * mis), (3, 0.06 * mis), (4, 0.03), (7, 0.12)):
            a *= lines * np.exp(0.15 * rng.standard_normal())
            x += a * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3))
        v = gain * x + 0.5 * code_g * rng.standard_normal(n)  # the DAQ's own noise, half a code
        return np.clip(np.round(v / code_g), -2048, 2047) * code_g

    clock = Clock()
    b = StateBaselines(_settings(), fs, n, pipeline="fan", clock=clock)
    for _ in range(30):
        clock.t += 10.0
        b.process(fan(), {"_shaft_speed": RPM, STATE_INPUT: 0.0})
    assert b.status()["process_states"]["empty"]["state"] == "ready"
    for kw, sick in (({"gain": 10.0}, False), ({"mis": 6.0}, True), ({"lines": 5.0}, True), ({}, False)):
        got = []
        for _ in range(6):
            clock.t += 10.0
            got.append(b.process(fan(**kw), {"_shaft_speed": RPM}))
        if sick:
            assert got[-1].alarm and got[-1].anomalous, (kw, [(v.score, v.fault, v.not_learned) for v in got])
        else:
            assert not any(v.alarm or v.anomalous for v in got), (kw, [(v.score, v.fault) for v in got])


def test_a_units_error_in_windows_without_a_state_is_the_sensors_and_raises_no_iso_zone_alarm():
    """Windows without a state (the state tag BAD or not read) are judged by the ISO zone rule, the sensor's gain
    first as one baseline judges it. A healthy compressor (1.5 mm/s, zone B) logged in m/s2 and read as g (x9.81,
    14.7 mm/s) read ``NG`` ``iso_zone_D`` in such windows, a PLC write, where one baseline says ``UNSURE`` ``scale``;
    it is the sensor's now. A real rise of the 1x into zone D in such windows (its shape changed) still alarms."""
    rng = np.random.default_rng(5)
    fs, n, f0 = 10000.0, 2048, RPM / 60.0
    t = np.arange(n) / fs
    g_1x = 1.5e-3 * np.sqrt(2) * 2 * np.pi * f0 / 9.80665  # 1.5 mm/s rms at 1x, in g peak

    def comp(loaded: bool, gain: float = 1.0, unbalance: float = 1.0) -> np.ndarray:
        x = 0.002 * rng.standard_normal(n)
        lobes = 0.3 if loaded else 0.1  # the lobe pass (4x) three times as strong loaded
        for h, a in ((1, g_1x * unbalance), (2, 0.3 * g_1x), (4, lobes * g_1x * 4), (8, 0.05)):
            a *= np.exp(0.05 * rng.standard_normal())
            x += a * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3))
        return gain * x

    clock = Clock()
    settings = BaselineSettings(
        windows=60,
        speed_tag="Speed",
        state_tag="Load",
        states=[ProcessState(name="unloaded", max=0.5), ProcessState(name="loaded", min=0.5)],
    )
    b = StateBaselines(settings, fs, n, pipeline="compressor", clock=clock)
    for i in range(60):
        clock.t += 10.0
        b.process(comp(i % 2 == 1), {"_shaft_speed": RPM, STATE_INPUT: float(i % 2)})
    assert {k: v["state"] for k, v in b.status()["process_states"].items()} == {
        "unloaded": "ready",
        "loaded": "ready",
    }

    def without_state(k: int, **kw) -> list:
        out = []
        for i in range(k):
            clock.t += 10.0
            out.append(b.process(comp(i % 2 == 1, **kw), {"_shaft_speed": RPM}))
        return out

    healthy = without_state(6)
    assert not any(v.iso_alarm or v.alarm or v.sensor for v in healthy), [
        (v.iso_zone, v.sensor) for v in healthy
    ]
    gained = without_state(8, gain=9.80665)
    assert all(v.iso_zone == "D" for v in gained), [v.velocity_mm_s for v in gained]
    assert not any(v.iso_alarm or v.alarm for v in gained), [(v.iso_zone, v.sensor) for v in gained]
    assert all(v.sensor_kind == "scale" for v in gained), [v.sensor for v in gained]
    sick = without_state(4, unbalance=6.0)  # 9 mm/s at 1x: zone D, the shape changed (no gain)
    assert sick[-1].iso_alarm and sick[-1].iso_zone == "D" and sick[-1].sensor is None


def test_an_iso_alarm_standing_through_a_gain_in_windows_without_a_state_keeps_that_runs_zone():
    """An ISO zone alarm standing in windows without a state (the tag lost) stands through a sensor gain found over
    the ADC's floor, labelled with a zone judged as the machine's. That label was the zone a state's baseline judged
    last, before the tag was lost: an alarm standing in zone D read ``iso_zone_B`` (a PLC action on ``iso_zone_D``
    missed it). It is the zone of the run's own last window judged (12-bit DAQ, gain x10: 6 of 6 windows)."""
    from tests.unit.test_maintenance_scoring import _coarse_daq_machine

    rng = np.random.default_rng(12)
    fs, n, speed, window = _coarse_daq_machine(12)
    settings = BaselineSettings(
        windows=60,
        speed_tag="Speed",
        state_tag="Load",
        states=[ProcessState(name="empty", max=0.5), ProcessState(name="loaded", min=0.5)],
        iso_class="group1_flexible",
        iso_alarm_zone="C",
    )
    clock = Clock()
    b = StateBaselines(settings, fs, n, pipeline="compressor", clock=clock)

    def run(k: int, load: float | None, **kw) -> list:
        out = []
        for _ in range(k):
            clock.t += 10.0
            out.append(b.process(window(rng, **kw), speed | ({} if load is None else {STATE_INPUT: load})))
        return out

    run(60, 1.0)
    assert b.status()["process_states"]["loaded"]["state"] == "ready"
    healthy = run(4, 1.0)  # the state read: its baseline judges zone B
    assert [v.iso_zone for v in healthy] == ["B"] * 4 and not any(v.iso_alarm for v in healthy)
    lost = run(6, None, lines=1.8)  # the tag lost, the machine's lines up: zone C-D, the alarm stands
    assert lost[-1].iso_alarm and lost[-1].sensor is None and lost[-1].iso_zone in ("C", "D"), [
        (v.iso_zone, v.velocity_mm_s) for v in lost
    ]
    gained = run(6, None, lines=1.8, gain=10.0)
    assert all(v.sensor_kind == "scale" and v.iso_alarm for v in gained), [v.sensor for v in gained]
    assert all(v.iso_zone == lost[-1].iso_zone for v in gained), [v.iso_zone for v in gained]  # was: B


def _level_machine(rng: np.random.Generator, rpm: float = RPM, level: float = 1.0) -> np.ndarray:
    """A machine whose vibration scales with its load (flow noise, lines and floor alike), 0.9 mm/s at 1x x level."""
    fs, n, f0 = 10000.0, 2048, rpm / 60.0
    t = np.arange(n) / fs
    g_1x = 0.9e-3 * np.sqrt(2) * 2 * np.pi * f0 / 9.80665
    x = 0.004 * rng.standard_normal(n)
    for h, a in ((1, g_1x), (2, 0.3 * g_1x), (4, 0.4 * g_1x), (8, 0.05)):
        a *= np.exp(0.05 * rng.standard_normal())
        x += a * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3))
    return level * x + 1e-4 * rng.standard_normal(n)  # the sensor's own noise does not


def test_a_fault_of_the_loud_state_in_windows_without_a_state_is_no_gain_against_the_quiet_one():
    """States that differ by level (loaded = unloaded x4, a pump whose flow noise rises with load). The tag lost,
    the loaded machine rising x2.5 (9.3 mm/s, zone D) is, against 'unloaded', every amplitude x10 at once: it was
    taken for the sensor's gain (``UNSURE`` ``scale`` in every window) and its ISO zone D alarm dropped. The window
    is at 'loaded''s level (no common factor there): the machine's, so the ISO zone rule alarms."""
    rng = np.random.default_rng(7)
    clock = Clock()
    settings = BaselineSettings(
        windows=60,
        speed_tag="Speed",
        state_tag="Load",
        states=[ProcessState(name="unloaded", max=0.5), ProcessState(name="loaded", min=0.5)],
    )
    b = StateBaselines(settings, 10000.0, 2048, pipeline="pump", clock=clock)
    for i in range(60):
        clock.t += 10.0
        b.process(
            _level_machine(rng, level=4.0 if i % 2 else 1.0), {"_shaft_speed": RPM, STATE_INPUT: float(i % 2)}
        )
    assert {k: v["state"] for k, v in b.status()["process_states"].items()} == {
        "unloaded": "ready",
        "loaded": "ready",
    }
    out = []
    for _ in range(5):
        clock.t += 10.0
        out.append(b.process(_level_machine(rng, level=4.0 * 2.5), {"_shaft_speed": RPM}))
    assert all(v.iso_zone == "D" for v in out), [v.velocity_mm_s for v in out]
    assert not any(v.sensor for v in out), [v.sensor for v in out]  # was: 'scale' in 5 of 5
    assert out[-1].iso_alarm, [(v.iso_zone, v.iso_alarm) for v in out]


def test_a_units_error_without_a_state_stays_the_sensors_beside_a_state_of_another_speed():
    """A VFD whose modes run at 1200 and 1800 rpm: m/s2 read as g at 1800 rpm with the tag lost. The 1200 rpm state
    cannot judge a window at 1800 rpm; it ended the search, throwing away the gain the 1800 rpm state found, and the
    windows read ``NG`` ``iso_zone_D`` (a PLC write) in 7 of 8. It is skipped: ``UNSURE`` ``scale``, whatever the
    states' names' order."""
    for slow, fast in (("slow", "fast"), ("a_slow", "z_fast")):
        rng = np.random.default_rng(5)
        clock = Clock()
        settings = BaselineSettings(
            windows=60,
            speed_tag="Speed",
            state_tag="Mode",
            states=[ProcessState(name=slow, max=0.5), ProcessState(name=fast, min=0.5)],
        )
        b = StateBaselines(settings, 10000.0, 2048, pipeline="vfd", clock=clock)
        for i in range(60):
            clock.t += 10.0
            rpm = 1800.0 if i % 2 else 1200.0
            b.process(_level_machine(rng, rpm), {"_shaft_speed": rpm, STATE_INPUT: float(i % 2)})
        assert {v["state"] for v in b.status()["process_states"].values()} == {"ready"}
        out = []
        for _ in range(8):
            clock.t += 10.0
            out.append(b.process(_level_machine(rng, 1800.0, level=9.80665), {"_shaft_speed": 1800.0}))
        assert all(v.iso_zone == "D" for v in out), [v.velocity_mm_s for v in out]
        assert not any(v.iso_alarm or v.alarm for v in out), [
            (v.iso_zone, v.sensor) for v in out
        ]  # was: 7 of 8
        assert all(v.sensor_kind == "scale" for v in out), [v.sensor for v in out]


def test_a_drives_windows_without_a_state_are_judged_against_the_speeds_levels_too(tmp_path):
    # one state commissioned across a drive's 900-3,000 rpm (tests/support/rotor_signals' fan): an imbalance x3 in
    # windows without a state is over that state's threshold against the levels its speed gives (it read OK within
    # the spreads pooled over the range), and healthy windows without a state are not
    from tests.support.rotor_signals import rotor

    rng = np.random.default_rng(1)

    def fan(rpm: float, **kw) -> np.ndarray:
        return rotor(rng, fs=10000.0, n=2048, rpm=rpm, load=(rpm / 1800.0) ** 2, vanes=7, **kw)

    st = BaselineSettings(
        windows=40, speed_tag="Speed", state_tag="Mode", states=[ProcessState(name="run", min=0.5)]
    )
    b = StateBaselines(st, 10000.0, 2048, path=tmp_path / "fan.json", pipeline="fan", clock=Clock())
    for rpm in rng.permutation(np.linspace(900.0, 3000.0, 40)):
        b.process(fan(rpm), {"_shaft_speed": float(rpm), STATE_INPUT: 1.0})
    assert b.status()["process_states"]["run"]["state"] == "ready"
    healthy = [b.process(fan(1800.0), {"_shaft_speed": 1800.0}) for _ in range(3)]
    assert not any(v.anomalous or v.alarm for v in healthy)
    imb = [b.process(fan(1800.0, imbalance=3.0), {"_shaft_speed": 1800.0}) for _ in range(3)]
    assert all(v.anomalous for v in imb) and imb[-1].alarm and imb[-1].fault == "imbalance"
