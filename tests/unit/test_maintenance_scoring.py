"""The baseline's scoring on a healthy machine's ordinary life: a load change that lifts the process
lines (blade-pass, gear mesh) faster than the rest is not a fault, a growing imbalance still is; a
baseline saved before relative scoring loads and judges as it was learned; without a speed tag, a
shaft speed that one window cannot resolve is not followed into a walk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent.maintenance.baseline import Baseline
from edge_agent.maintenance.settings import BaselineSettings
from model_packager.condition import FEATURES

LOG = np.log


# each feature's healthy spread (log units for the amplitudes), as measured on a generated 2,960-rpm fan
SPREAD = {"rms": 0.1, "kurtosis": 0.1, "crest": 0.2, "hf_rms": 0.03, "velocity_rms": 0.3, "order_1x": 0.3}
SPREAD |= {"order_2x": 0.06, "order_3x": 0.4, "orders_4_8": 0.1, "env_bpfo": 0.28, "env_bpfi": 0.28}


def _features(rng, n: int, **rise: float) -> list[dict[str, float]]:
    """Condition features of a steady machine (each with its own spread), ``rise`` in log units."""
    med = {k: -3.0 for k in FEATURES} | {"kurtosis": 3.0, "crest": 3.5, "env_bpfo": 0.5, "env_bpfi": 0.5}
    return [
        {k: v + SPREAD.get(k, 0.0) * rng.standard_normal() + rise.get(k, 0.0) for k, v in med.items()}
        | {"speed_hz": 25.0, "speed_estimated": 0.0, "velocity_mm_s": 1.0}
        for _ in range(n)
    ]


def _learned(rng) -> Baseline:
    b = Baseline(BaselineSettings(windows=200, speed_tag="Speed"), 10000.0, 2048)
    for f in _features(rng, 200):
        b.process(np.zeros(0), None, f)
    assert b.state == "ready"
    return b


# the next shift at 1.5x the load, as that fan's features moved (log units): the window's RMS and the
# high band 1.5x, the blade-pass line and its harmonics (orders 4-8) 1.84x: lines grow faster than the load
SHIFT = {"rms": 0.40, "hf_rms": 0.39, "velocity_rms": 0.15, "order_1x": 0.1, "order_2x": 0.45}
SHIFT |= {"order_3x": 0.35, "orders_4_8": 0.61}


def test_process_lines_growing_faster_than_the_load_do_not_alarm_a_growing_imbalance_does():
    """Scored on absolute levels, the shift's blade-pass line (1.84x, 4 deviations) alarmed all shift
    long (47 alarms a day on a generated 2,960-rpm fan). A line now counts as risen only by as much as
    it rose over the window's common level (the median rise of the amplitudes and the RMS) too; an
    imbalance (1x 6x, the RMS 1.3x) is still named within a few windows."""
    rng = np.random.default_rng(3)
    b = _learned(rng)
    shift = [b.process(np.zeros(0), None, f) for f in _features(rng, 300, **SHIFT)]
    raised = sum(v.alarm and not p.alarm for p, v in zip(shift, shift[1:], strict=False))
    # the former code: 40-odd alarms in these 300 windows; now at most the RMS's own tail (its 1.5x rise
    # is scored as it is, 2.7 deviations here, so a dominant line's fault still shows)
    assert raised <= 2, (raised, b.threshold, max(v.score for v in shift))
    imb = {"order_1x": LOG(6.0), "rms": LOG(1.3), "velocity_rms": LOG(1.3)}
    fault = [b.process(np.zeros(0), None, f) for f in _features(rng, 6, **imb)]
    assert sum(v.anomalous for v in fault) >= 5, [round(v.score, 2) for v in fault]
    assert any(v.alarm for v in fault) and {v.fault for v in fault if v.alarm} == {"imbalance"}


def test_a_baseline_saved_by_the_former_version_loads_and_judges_as_it_was_learned(tmp_path):
    """A format-1 file (learned and thresholded before relative scoring) is not discarded: it loads, is
    scored on absolute levels as before (the same score for the same window), says so in its event, and
    keeps its format when saved again; a relearn makes a relative one."""
    rng = np.random.default_rng(4)
    b = _learned(rng)
    d = b.to_dict()
    assert d["format"] == 2
    old = d | {
        "format": 1
    }  # the former file: the same statistics, learned and thresholded on absolute levels
    path = tmp_path / "b.json"
    path.write_text(json.dumps(old))
    events = []
    s = BaselineSettings(windows=200, speed_tag="Speed")
    loaded = Baseline(s, 10000.0, 2048, path=path, pipeline="p", on_event=events.append)
    assert loaded.state == "ready" and loaded.threshold == b.threshold
    assert events[-1]["kind"] == "baseline_loaded" and events[-1]["scoring"].startswith("absolute")
    f = _features(rng, 1, **SHIFT)[0]
    z_abs = max(
        (f[k] - m) / max(sc, 0.15 if k not in ("kurtosis", "crest") else 0.0)
        for k, m, sc in zip(FEATURES, *b.bands[next(iter(b.bands))][:2], strict=True)
    )
    assert abs(loaded.process(np.zeros(0), None, dict(f)).score - max(z_abs, 0.0)) < 1e-9
    loaded.save()
    assert json.loads(path.read_text())["format"] == 1
    loaded.relearn("test")
    for g in _features(rng, 200):
        loaded.process(np.zeros(0), None, g)
    assert loaded.state == "ready" and json.loads(path.read_text())["format"] == 2


def _running(rng, f0: float, fs: float = 2500.0, n: int = 512) -> np.ndarray:
    t = np.arange(n) / fs
    x = 0.02 * rng.standard_normal(n)
    for k, a in ((1, 0.3), (2, 1.0), (3, 0.5), (4, 0.4), (7, 0.3)):
        x += 0.05 * a * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3))
    return x


def test_without_a_speed_tag_estimates_made_of_noise_do_not_walk_the_tracked_speed():
    """A slow fan's 1x is too weak for one 0.2-s window: each window's estimate lands anywhere within
    the +-15 % searched around the tracked speed, and followed (a tenth of the way each window), the
    speed walked off the commissioned one, the orders with it (a 740-rpm fan: 25 % in a day, 47 false
    alarms). The tracked speed now follows only estimates that agree over 5 windows: it stays put on
    noise, and still follows a drive that really slows down."""
    rng = np.random.default_rng(8)
    b = Baseline(BaselineSettings(windows=20), 2500.0, 512)
    for _ in range(20):
        b.process(_running(rng, 30.0))
    assert b.state == "ready" and abs(b.speed_hz - 30.0) < 0.5
    f = b.features(_running(rng, 30.0), None)
    start = b.speed_hz
    for _ in range(250):  # what the search returns when the shaft's lines are not in the window
        e = b.speed_hz * rng.uniform(0.85, 1.15)
        b.process(np.zeros(0), None, f | {"speed_hz": e, "speed_found_hz": e})
    assert abs(b.speed_hz - start) < 0.3, b.speed_hz
    for i in range(150):  # a drive slowing down 10 % over 100 windows: consistent estimates
        e = start * (1 - 0.1 * min(1.0, i / 100))
        b.process(np.zeros(0), None, f | {"speed_hz": e, "speed_found_hz": e})
    assert abs(b.speed_hz - 0.9 * start) < 0.3, b.speed_hz


def test_a_stop_the_speed_tag_reports_is_not_a_sensor_fault_a_dead_sensor_while_running_is():
    """After commissioning, a stop's windows (vibration 1/20 of the commissioned, the speed tag at 0)
    were a 'low_level' sensor fault: a sensor_fault episode telling to check the sensor, its cable
    and mounting, at every stop of a healthy machine whose tag said it was stopped. They are now
    not judged as stopped (UNSURE, no alarm, no sensor fault); the same window while the tag says
    the shaft turns is still the sensor's."""
    rng = np.random.default_rng(5)
    b = _learned(rng)
    quiet = {k: LOG(1 / 20) for k in ("rms", *SHIFT, "velocity_rms")}
    stop = [b.process(np.zeros(0), {"_shaft_speed": 0.0}, f) for f in _features(rng, 5, **quiet)]
    assert [(v.sensor_kind, v.alarm) for v in stop] == [(None, False)] * 5
    assert all(v.stopped for v in stop)
    assert stop[-1].to_dict()["stopped"] is True and stop[-1].score is None
    dead = b.process(np.zeros(0), {"_shaft_speed": 1500.0}, _features(rng, 1, **quiet)[0])
    assert dead.sensor_kind == "low_level" and not dead.stopped


def test_a_looseness_lifting_every_harmonic_but_not_the_high_band_still_alarms():
    """A looseness lifts the 1x-8x harmonics together (and with them the RMS and the velocity), like a
    load change lifts the lines; taken off as the window's common level, its own rise went unalarmed (a
    looseness on a generated 420-rpm agitator). A load change lifts the high band too, a looseness does
    not: the common level is no more than the high band's rise, and the looseness is named at once."""
    rng = np.random.default_rng(6)
    b = _learned(rng)
    loose = {"order_1x": 0.9, "order_2x": 1.0, "order_3x": 1.0, "orders_4_8": 1.1}
    loose |= {"rms": 0.5, "velocity_rms": 0.7}
    fault = [b.process(np.zeros(0), None, f) for f in _features(rng, 4, **loose)]
    assert all(v.anomalous for v in fault), [round(v.score, 2) for v in fault]
    assert fault[-1].alarm and fault[-1].fault == "misalignment"


def test_without_a_speed_tag_a_stop_while_commissioning_is_not_learned_as_the_healthy_machine():
    """No speed tag: a 40-minute stop in the commissioning hour (its windows 1/20 of the running
    machine's vibration) was learned as healthy; the spreads it widened set a threshold of tens of
    deviations and a growing race defect never alarmed (a generated gearbox: none of four faults).
    Windows 10 times or more quieter than the running machine's are now left out of the statistics."""
    rng = np.random.default_rng(7)
    b = Baseline(BaselineSettings(windows=200), 10000.0, 2048)
    quiet = {k: LOG(1 / 20) for k in ("rms", *SHIFT, "velocity_rms")}
    stopped = _features(rng, 80, **quiet)
    for f in stopped:  # the envelope and the crest of noise: no machine's, all over the place
        f |= {k: f[k] + 1.5 * rng.standard_normal() for k in ("env_bpfo", "env_bpfi", "crest")}
    rows = _features(rng, 60) + stopped + _features(rng, 60)
    for f in rows:
        b.process(np.zeros(0), None, f)
    assert b.state == "ready" and b.threshold < 8, b.threshold
    fault = [b.process(np.zeros(0), None, f) for f in _features(rng, 4, env_bpfo=2.5)]
    assert fault[-1].alarm and fault[-1].fault == "bearing_outer", [v.score for v in fault]


def test_a_low_level_episode_says_stopped_or_sensor_not_only_check_the_sensor():
    """Without a speed tag every stop of a healthy machine is a 'low_level' episode (one window cannot
    tell a stopped machine from a detached sensor); its event told the line to check the sensor, its
    cable and mounting, at every stop. It now says to check them if the machine is running; the other
    sensor faults keep the plain instruction."""
    from edge_agent.maintenance.sensor import SensorFault, SensorWatch

    events = []
    w = SensorWatch("fan", events.append)
    w.record(SensorFault("low_level", "sensor or machine: the vibration is 1/40 of its commissioned level"))
    assert "if the machine is running, check the sensor" in events[-1]["message"]
    w2 = SensorWatch("fan", events.append)
    w2.record(SensorFault("flatline", "sensor: flat"))
    assert "if the machine is running" not in events[-1]["message"]
    assert "check the sensor, its cable and mounting" in events[-1]["message"]


def _loose(m, s: float, rng) -> np.ndarray:
    """A looseness (not simulators/vibration.py's): harmonics 1x-10x varying window to window, half orders 0.5x,
    1.5x, 2.5x, a raised floor, the top clipped (the part lifting off its seat), through the machine's gain."""
    t = np.arange(m.n) / m.fs
    f_r = m.rpm / 60
    y = sum(
        s * 0.12 / k**0.6 * rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * k * f_r * t + rng.uniform(0, 6.3))
        for k in range(1, 11)
    )
    y += sum(s * 0.05 * rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * k * f_r * t) for k in (0.5, 1.5, 2.5))
    y += rng.normal(0, 0.03 * s, m.n)
    return m.gain * np.minimum(y, np.quantile(y, 0.9))


def test_a_looseness_is_named_looseness_a_misalignment_and_an_imbalance_as_before():
    """A loose joint rattles out a train of harmonics, the orders 4-8 rising far more than the 2x and 3x; a
    misaligned coupling pulls at 2x and 3x above them. The former code named every looseness 'misalignment' (its
    orders 4-8 are that family's too): on bench/_bearing_signals.py machines 337 of 338 windows. Now a misalignment
    whose orders 4-8 lead its 2x and 3x by LOOSENESS_LEAD deviations is 'looseness' (most windows of it); the
    misalignment and the imbalance of the same machine are named as before, never looseness."""
    from bench._bearing_signals import Machine

    m = Machine(4)
    rng = np.random.default_rng(81)
    b = Baseline(BaselineSettings(windows=200, speed_tag="Speed"), m.fs, m.n)
    sc = {"_shaft_speed": m.rpm}
    for _ in range(200):
        b.process(m.window(), sc)
    assert b.state == "ready"
    named = {}
    for fault in ("looseness", "misalignment", "imbalance"):
        vs = [
            b.process(m.window() + _loose(m, 0.5, rng) if fault == "looseness" else m.window(0.8, fault), sc)
            for _ in range(8)
        ]
        named[fault] = [v.fault for v in vs if v.anomalous]
        assert len(named[fault]) >= 6, (fault, [(v.score, v.sensor_kind, v.external_impulse) for v in vs])
    assert 2 * named["looseness"].count("looseness") > len(named["looseness"]), named  # the former code: none
    for fault in ("misalignment", "imbalance"):  # as before (a bearing family now and then: bearings first)
        assert "looseness" not in named[fault] and 2 * named[fault].count(fault) > len(named[fault]), named


def _train(rng, t: np.ndarray, lines: float = 1.0, gain: float = 1.0) -> np.ndarray:
    """A machine's window: a 15-Hz shaft's harmonic train 1x-8x, each line wandering with the load, a mesh line at
    2.5 kHz whose strength follows the load (the high band's wide spread), a white floor. ``lines``: every
    harmonic that many times (a loose joint, the floor left where it was); ``gain``: the whole window scaled."""
    x = 0.01 * rng.standard_normal(t.size)
    for h in range(1, 9):
        a = lines * 0.05 * 0.7 ** (h - 1) * np.exp(0.3 * rng.standard_normal())
        x += a * np.sin(2 * np.pi * 15.0 * h * t + rng.uniform(0, 2 * np.pi))
    mesh = 0.05 * np.exp(0.6 * rng.standard_normal())
    x += (
        mesh
        * np.sin(2 * np.pi * 2500.0 * t + rng.uniform(0, 2 * np.pi))
        * (1 + 0.3 * np.sin(2 * np.pi * 15.0 * t))
    )
    return gain * x


def test_a_fault_lifting_every_line_tenfold_alarms_a_gain_change_is_still_the_sensors():
    """A fault that adds energy at the machine's lines and their harmonics lifts every amplitude together; the
    high band, whose spread is wide, stays within its deviations. The former code took such a window for a
    sensor's gain ('scale', UNSURE): here every window of a tenfold rise of the harmonic train, so the sicker
    the machine the less it alarmed (bench/_unseen_machines.py's compressor: a misalignment UNSURE in 5 of 6
    windows from severity 1 on). A gain scales the noise floor with the rest, a fault leaves it: the window
    whose floor did not follow the common factor is judged, and alarms; the whole window scaled 5x, 9.81x or
    0.2x is still UNSURE as 'scale'."""
    import copy

    rng = np.random.default_rng(5)
    t = np.arange(2048) / 10000.0
    b = Baseline(BaselineSettings(windows=60, speed_tag="Speed"), 10000.0, 2048)
    speed = {"_shaft_speed": 900.0}
    for _ in range(60):
        b.process(_train(rng, t), speed)
    assert b.state == "ready"
    sick = copy.deepcopy(b)
    fault = [sick.process(_train(rng, t, lines=10.0), speed) for _ in range(6)]
    assert all(v.sensor_kind is None for v in fault), [v.sensor for v in fault]
    assert fault[-1].alarm and fault[-1].fault, [(v.score, v.fault) for v in fault]
    for gain in (5.0, 9.80665, 0.2):
        swapped = copy.deepcopy(b)
        got = [swapped.process(_train(rng, t, gain=gain), speed) for _ in range(4)]
        assert all(v.sensor_kind == "scale" and not v.alarm for v in got), (
            gain,
            [v.sensor_kind for v in got],
        )
        assert gain != 9.80665 or "m/s2 read as g?" in str(got[0].sensor)
    healthy = [b.process(_train(rng, t), speed) for _ in range(20)]
    assert not any(v.alarm or v.sensor_kind for v in healthy)


def test_an_analog_gain_fall_ahead_of_the_daqs_noise_floor_is_still_a_scale_not_read_healthy():
    """A sensor that lost sensitivity (an analog gain before the ADC) lowers the lines but not the floor the DAQ's
    own noise sets: 07af0b70's floor rule took the fall the floor did not follow for the machine's and the window
    read OK, a quieter healthy machine (the review: x1/3, x1/5 of such windows OK). Only a rise the floor did not
    follow is the machine's; a fall is 'scale' as before. A rise over a floor the ADC's quantisation step sets
    (it cannot follow an analog gain either) gives no floor to judge by (floor_move None)."""
    import copy
    import math

    from edge_agent.maintenance.baseline import quantisation_floor

    rng = np.random.default_rng(5)
    t = np.arange(2048) / 10000.0
    speed = {"_shaft_speed": 900.0}

    def daq(
        x: np.ndarray,
    ) -> np.ndarray:  # the DAQ's own noise, above the machine's floor, added after the gain
        return x + 0.02 * rng.standard_normal(x.size)

    b = Baseline(BaselineSettings(windows=60, speed_tag="Speed"), 10000.0, 2048)
    for _ in range(60):
        b.process(daq(_train(rng, t)), speed)
    assert b.state == "ready" and b.floor_bands
    for gain in (0.2, 0.1):
        bb = copy.deepcopy(b)
        got = [bb.process(daq(_train(rng, t, gain=gain)), speed) for _ in range(4)]
        assert all(v.sensor_kind in ("scale", "low_level") and not v.alarm for v in got), (
            gain,
            [(v.sensor_kind, v.score) for v in got],
        )
    healthy = [b.process(daq(_train(rng, t)), speed) for _ in range(10)]
    assert not any(v.alarm or v.sensor_kind for v in healthy)

    q = 0.02  # a coarse ADC: its step sets the floor
    x = np.round(_train(rng, t) / q) * q
    assert quantisation_floor(_train(rng, t)) is None
    qf = quantisation_floor(x)
    assert (
        qf is not None
        and abs(qf - math.log(q / math.sqrt(12) * math.sqrt(0.375 * 2048 * math.log(2)))) < 1e-9
    )
    bq = Baseline(BaselineSettings(windows=60, speed_tag="Speed"), 10000.0, 2048)
    for _ in range(60):
        bq.process(np.round(_train(rng, t) / q) * q, speed)
    assert bq.state == "ready" and bq.floor_bands
    assert bq.floor_move(15.0, np.round(_train(rng, t, gain=3.0) / q) * q) is None
    assert b.floor_move(15.0, daq(5.0 * _train(rng, t))) is not None


def test_an_analog_gain_rise_on_a_16_bit_floor_at_quantisation_spread_over_more_codes_is_still_a_scale():
    """A wide-span 16-bit ADC (step 0.3 mV) whose quantisation is the floor: a sensor's gain x10 spreads the window
    over so many codes that more than 3/4 of its samples are distinct. 8cb792d7's quantisation_floor took that for
    no quantisation (None), the floor check ran on a floor the analog gain cannot move, and the window read NG
    (7 of 8 in the review). The step is told from the values' lattice alone: such a window stays 'scale'."""
    import copy

    from edge_agent.maintenance.baseline import quantisation_floor

    rng = np.random.default_rng(5)
    t = np.arange(2048) / 10000.0
    speed = {"_shaft_speed": 900.0}
    q = 0.0003

    def adc(x: np.ndarray) -> np.ndarray:
        return np.round(x / q) * q

    def machine(
        gain: float = 1.0,
    ) -> np.ndarray:  # _train's lines, the machine's own floor far below the step
        x = 0.00002 * rng.standard_normal(t.size)
        for h in range(1, 9):
            a = 0.05 * 0.7 ** (h - 1) * np.exp(0.3 * rng.standard_normal())
            x += a * np.sin(2 * np.pi * 15.0 * h * t + rng.uniform(0, 2 * np.pi))
        mesh = 0.05 * np.exp(0.6 * rng.standard_normal())
        x += (
            mesh
            * np.sin(2 * np.pi * 2500.0 * t + rng.uniform(0, 2 * np.pi))
            * (1 + 0.3 * np.sin(2 * np.pi * 15.0 * t))
        )
        return gain * x

    b = Baseline(BaselineSettings(windows=60, speed_tag="Speed"), 10000.0, 2048)
    for _ in range(60):
        b.process(adc(machine()), speed)
    assert b.state == "ready" and b.floor_bands
    windows = [adc(machine(10.0)) for _ in range(6)]
    assert all(np.unique(w).size > 0.75 * w.size for w in windows)  # the case: most samples distinct
    bb = copy.deepcopy(b)
    got = [bb.process(w, speed) for w in windows]
    assert not any(v.alarm for v in got), [(v.sensor_kind, v.score) for v in got]
    assert sum(v.sensor_kind == "scale" for v in got) >= 4, [(v.sensor_kind, v.score) for v in got]
    assert all(quantisation_floor(w) is not None for w in windows)


def test_a_ready_baseline_without_floor_bands_says_once_that_the_former_gain_rule_holds(caplog):
    """A baseline learned before the floor was recorded keeps the former 'scale' rule; that was said nowhere."""
    import logging

    rng = np.random.default_rng(7)
    t = np.arange(2048) / 10000.0
    speed = {"_shaft_speed": 900.0}
    b = Baseline(BaselineSettings(windows=60, speed_tag="Speed"), 10000.0, 2048)
    for _ in range(60):
        b.process(_train(rng, t), speed)
    assert b.state == "ready"
    b.floor_bands = {}
    with caplog.at_level(logging.INFO, logger="edge_agent.maintenance.baseline"):
        for _ in range(3):
            b.process(_train(rng, t), speed)
        got = [b.process(_train(rng, t, gain=5.0), speed) for _ in range(2)]
    said = [r for r in caplog.records if "floor_bands" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    assert all(v.sensor_kind == "scale" for v in got)


def test_an_analog_gain_rise_over_a_12_bit_quantisation_floor_is_a_scale_a_fault_still_alarms(tmp_path):
    """A fan's motor at 1,770 rpm read at 12.8 kHz through a 12-bit DAQ (+-5 V, 100 mV/g: 24.4 mg a code, the
    DAQ's own noise half a code): the high band (1 kHz and up) holds the quantisation noise, above the machine's
    broadband. A sensor's gain x10 ahead of the ADC lifts every line 10x but that band only ~2x: the floor the ADC
    sets stays. Weighed in by its tiny spread, that band pulled the common factor down and vetoed 'scale' as a
    change of shape: the healthy machine read NG (imbalance, misalignment). An amplitude on the ADC's floor is
    left out of the factor; it must still have followed the gain part of the way (the machine's part under the
    floor rises with it, a fault lifting the lines leaves it). On a 10-bit DAQ (97.7 mg a code) the floor hides
    too much of even a gain x10's part (this fan: 'scale' in 3 of 6 windows, the others judged, as before the
    floor was left out), so the test is on 12 bits. A misalignment alarms as before; a units error is
    still named."""
    import copy

    from edge_agent.maintenance.baseline import quantisation_floor

    rng = np.random.default_rng(11)
    fs, n, f0 = 12800.0, 2048, 1770.0 / 60.0
    t = np.arange(n) / fs
    volts_per_g, code_v = 0.1, 10.0 / 4096

    def fan(mis: float = 1.0) -> np.ndarray:  # in g: the shaft's 1x-4x, a 7-blade pass, a broadband floor
        x = 0.005 * rng.standard_normal(n)
        for h, a in ((1, 0.4), (2, 0.15 * mis), (3, 0.06 * mis), (4, 0.03), (7, 0.12)):
            a *= np.exp(0.15 * rng.standard_normal())
            x += a * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3))
        return x

    def daq(x_g: np.ndarray, gain: float = 1.0, units: float = 1.0) -> np.ndarray:
        v = gain * x_g * volts_per_g + 0.5 * code_v * rng.standard_normal(n)
        return units * np.clip(np.round(v / code_v), -2048, 2047) * code_v / volts_per_g

    speed = {"_shaft_speed": 1770.0}
    settings = BaselineSettings(windows=60, speed_tag="Speed")
    b = Baseline(settings, fs, n, path=tmp_path / "fan.json")
    for _ in range(60):
        b.process(daq(fan()), speed)
    assert b.state == "ready" and quantisation_floor(daq(fan())) is not None
    for gain in (10.0, 20.0):  # the second from the baseline as saved (the ADC's step kept with it)
        swapped = copy.deepcopy(b) if gain == 10.0 else Baseline(settings, fs, n, path=tmp_path / "fan.json")
        got = [swapped.process(daq(fan(), gain=gain), speed) for _ in range(6)]
        assert all(v.sensor_kind == "scale" and not v.anomalous for v in got), (
            gain,
            [(v.sensor_kind, v.score, v.fault) for v in got],
        )
    units = copy.deepcopy(b)
    got = [units.process(daq(fan(), units=9.80665), speed) for _ in range(3)]
    assert all(v.sensor_kind == "scale" for v in got) and "m/s2 read as g?" in str(got[0].sensor)
    sick = copy.deepcopy(b)
    fault = [sick.process(daq(fan(mis=6.0)), speed) for _ in range(6)]
    assert all(v.sensor_kind is None for v in fault), [v.sensor for v in fault]
    assert fault[-1].alarm and fault[-1].fault == "misalignment", [(v.score, v.fault) for v in fault]
    healthy = [b.process(daq(fan()), speed) for _ in range(20)]
    assert not any(v.alarm or v.sensor_kind for v in healthy)


def _coarse_daq_machine(bits: int):
    """A 1,480-rpm machine (10 kHz, 2,048 samples: its 1x-4x and 7x, 4 mg of broadband) read through a +-5 V
    DAQ of ``bits`` at 100 mV/g, the DAQ's own noise 0.3 of a code: on 10 and 12 bits its high band is the ADC's
    quantisation noise. Returns the signal (``lines``: every line's factor, ``gain``: ahead of the ADC)."""
    fs, n, f0 = 10000.0, 2048, 1480.0 / 60.0
    t = np.arange(n) / fs
    code_v = 10.0 / 2**bits

    def window(rng: np.random.Generator, lines: float = 1.0, gain: float = 1.0) -> np.ndarray:
        x = 0.004 * rng.standard_normal(n)
        for h, a in ((1, 0.12), (2, 0.05), (3, 0.02), (4, 0.01), (7, 0.03)):
            a *= lines * np.exp(0.15 * rng.standard_normal())
            x += a * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3))
        v = gain * x * 0.1 + 0.3 * code_v * rng.standard_normal(n)
        return np.clip(np.round(v / code_v), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * code_v / 0.1

    return fs, n, {"_shaft_speed": 1480.0}, window


def test_a_fault_lifting_every_line_alike_on_a_coarse_daq_is_judged_to_the_end_not_taken_for_a_gain():
    """On a 10- or 12-bit DAQ the high band holds the ADC's noise and is left out of a gain's common factor
    (82b3d8a1). Every other amplitude is a machine line, so a fault lifting them alike (the broadband as it was)
    read 'scale' (UNSURE, not judged, the ISO zone alarm cleared): lines x5 in 24 of 24 windows, and a fault
    growing x1 -> x6 flipped to 'scale' at ~x3 and never alarmed again. A gain lifts the machine's part under
    the floor with it, a fault leaves the band where the ADC holds it: such a window is judged, and alarms. A
    gain's 'scale' found so leaves the ISO zone alarm standing (a fault lifting the band too is not ruled out)."""
    import copy

    for bits in (10, 12):
        rng = np.random.default_rng(bits)
        fs, n, speed, window = _coarse_daq_machine(bits)
        b = Baseline(BaselineSettings(windows=60, speed_tag="Speed", iso_class="group1_flexible"), fs, n)
        for _ in range(60):
            b.process(window(rng), speed)
        assert b.state == "ready" and b.quant_step is not None
        sick = copy.deepcopy(b)
        got = [sick.process(window(rng, lines=5.0), speed) for _ in range(6)]
        assert all(v.sensor_kind is None and v.anomalous for v in got), (bits, [v.sensor for v in got])
        assert got[-1].alarm and got[-1].iso_alarm
        if bits == 12:  # a growing fault, every line alike: alarmed from ~x1.5 and to the end
            growing = copy.deepcopy(b)
            ramp = [growing.process(window(rng, lines=1.0 + 5.0 * i / 39), speed) for i in range(40)]
            assert all(v.sensor_kind is None and v.alarm and v.iso_alarm for v in ramp[-20:]), [
                (v.sensor_kind, v.alarm) for v in ramp
            ]
            swapped = copy.deepcopy(b)  # a sensor's gain x10 ahead of the ADC: still the sensor's
            gained = [swapped.process(window(rng, gain=10.0), speed) for _ in range(4)]
            assert all(v.sensor_kind == "scale" and not v.alarm for v in gained), [v.sensor for v in gained]
            # a zone D read through the changed gain is no evidence: no ISO alarm unless one stood before
            assert gained[-1].iso_zone == "D" and not any(v.iso_alarm for v in gained)
            assert "a fault that lifted every line alike" in str(gained[-1].sensor)
            assert "not the machine" not in str(gained[-1].sensor)


def test_the_adcs_step_is_kept_over_a_commissioning_window_that_is_not_quantised_and_its_lack_is_said(caplog):
    """The ADC's step is recorded from the commissioning windows kept. One window among 60 that was not on the
    lattice (a float sample from a gateway's other path) lost it for the whole baseline, silently: the high
    band on the ADC's floor was weighed in a gain's factor again. Now the step is taken over the quantised
    windows; a ready baseline without one, reading a quantised signal, says so once."""
    import copy
    import logging

    rng = np.random.default_rng(7)
    fs, n, speed, window = _coarse_daq_machine(12)
    b = Baseline(BaselineSettings(windows=60, speed_tag="Speed"), fs, n)
    for i in range(60):
        w = window(rng)
        b.process(w + (1e-7 * rng.standard_normal(n) if i == 30 else 0.0), speed)
    assert b.state == "ready" and b.quant_step == pytest.approx(10.0 / 4096 / 0.1)
    former = copy.deepcopy(b)
    former.quant_step = None  # as learned before the record
    with caplog.at_level(logging.INFO, logger="edge_agent.maintenance.baseline"):
        for _ in range(3):
            former.process(window(rng, gain=10.0), speed)
    said = [r for r in caplog.records if "quant_step" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
