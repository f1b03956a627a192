"""The per-asset baseline: learned in commissioning, scored against at a stated false-alarm rate,
durable across kill -9 and same-feature model swaps, discarded (with an event) when features change."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench._bearing_signals import Machine
from edge_agent.maintenance.baseline import Baseline, baseline_path, relearn_path
from edge_agent.maintenance.life import NOT_ENOUGH, LifeTrend
from edge_agent.maintenance.monitor import Monitor
from edge_agent.maintenance.settings import BaselineSettings, BearingSettings
from edge_agent.types import Result, Window
from tests.support.models import make_keypair, make_package

ROOT = Path(__file__).resolve().parents[2]


def settings_for(m: Machine, windows: int = 60, **kw) -> BaselineSettings:
    b = m.bearing
    return BaselineSettings(
        windows=windows,
        bearing=BearingSettings(
            n_elements=b.n_elements,
            ball_d_mm=b.ball_d_mm,
            pitch_d_mm=b.pitch_d_mm,
            contact_angle_deg=b.contact_angle_deg,
        ),
        **kw,
    )


def test_learns_then_stays_quiet_on_healthy_and_names_an_inner_race_fault(tmp_path):
    m = Machine(11, rpm=1750.0)
    events = []
    b = Baseline(settings_for(m), m.fs, m.n, path=tmp_path / "b.json", pipeline="p", on_event=events.append)
    states = [b.process(m.window()).state for _ in range(60)]
    assert states[0] == "learning" and states[-1] == "ready" and b.threshold > 0
    assert [e["kind"] for e in events if e["kind"].startswith("baseline")] == [
        "baseline_learning",
        "baseline_speed",
        "baseline_learned",
    ]
    healthy = [b.process(m.window()) for _ in range(60)]
    assert sum(v.alarm for v in healthy) <= 1
    faulty = [b.process(m.window(0.5, "bearing_inner")) for _ in range(12)]
    assert all(v.anomalous for v in faulty) and faulty[-1].alarm
    assert faulty[-1].fault == "bearing_inner"


CHILD = """
import sys, time
from pathlib import Path
from bench._bearing_signals import Machine
from edge_agent.maintenance.baseline import Baseline
from edge_agent.maintenance.settings import BaselineSettings
m = Machine(5, rpm=2400.0)
b = Baseline(BaselineSettings(windows=int(sys.argv[2])), m.fs, m.n, path=Path(sys.argv[1]), pipeline="p")
while True:
    b.process(m.window())
    if b.state == "ready":
        b.save()  # hammer the atomic write: a kill lands mid-write sooner or later
"""


def _run_child(path: Path, windows: int, until) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(windows)], env=env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if until(json.loads(path.read_text())):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        else:
            pytest.fail("the child never reached the expected state")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def test_progress_and_the_learned_baseline_survive_kill_9(tmp_path):
    path = tmp_path / "baseline" / "p.json"
    _run_child(path, 40, lambda d: d["windows"] >= 20)
    b = Baseline(BaselineSettings(windows=40), 10000.0, 2048, path=path, pipeline="p")
    assert b.state == "learning" and 20 <= len(b.rows) < 40  # resumed, not restarted
    _run_child(path, 40, lambda d: d["state"] == "ready")
    time.sleep(0.3)
    d = json.loads(path.read_text())  # whole after a kill during repeated saves
    b2 = Baseline(BaselineSettings(windows=40), 10000.0, 2048, path=path, pipeline="p")
    assert b2.state == "ready" and b2.threshold == d["threshold"] and b2.learned_at == d["learned_at"]
    assert not list(path.parent.glob("*.tmp"))


class _Slot:
    def __init__(self, manifest) -> None:
        self.manifest = manifest


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    from model_packager.package import read_manifest

    tmp = tmp_path_factory.mktemp("pkgs")
    key, _ = make_keypair(tmp / "keys")
    a = read_manifest(make_package(tmp, kind="signal", key=key, version="1.0.0"))
    b = read_manifest(make_package(tmp, kind="signal", key=key, version="1.1.0", seed=3))
    pre = a.preprocessing
    c = a.model_copy(update={"version": "2.0.0", "preprocessing": pre.model_copy(update={"n_bands": 32})})
    return a, b, c


def _window(m: Machine, seq: int, severity: float = 0.0, fault: str = "healthy") -> Window:
    return Window("plc", seq, seq * 10.0, seq * 10.0 + 0.2, m.window(severity, fault))


def test_a_same_feature_swap_keeps_the_baseline_another_feature_set_discards_it(tmp_path, manifests):
    a, b, c = manifests
    m = Machine(7, rpm=1500.0)
    events = []
    slot = _Slot(a)
    mon = Monitor(settings_for(m, windows=30), slot, "health", tmp_path, events.append)
    for i in range(30):
        mon.process(_window(m, i))
    assert mon.baseline.state == "ready"
    slot.manifest = b  # a new version, same features: kept
    v = mon.process(_window(m, 31))
    assert v.state == "ready" and "baseline_discarded" not in [e["kind"] for e in events]
    res = Result("health", "plc", 31, 0.0, "machine-health", "1.1.0", "onnxruntime", "OK", 0.1)
    mon.apply(v, res)
    assert res.verdict in ("OK", "NG") and res.outputs["baseline"]["state"] == "ready"
    slot.manifest = c  # other features: discarded with an event, learning anew
    v = mon.process(_window(m, 32))
    assert v.state == "learning"
    assert any(e["kind"] == "baseline_discarded" and "feature set changed" in e["reason"] for e in events)
    res = Result("health", "plc", 32, 0.0, "machine-health", "2.0.0", "onnxruntime", "NG", 0.9)
    mon.apply(v, res)
    assert res.verdict == "UNSURE" and res.outputs["baseline"]["progress"] < 0.1


def _cli_config(tmp_path) -> Path:
    """An agent config whose pipeline ``health`` has a baseline (its data folder ``tmp_path/data``), for the
    ``edge-agent baseline`` verbs."""
    pkg = next((tmp_path.parent).glob("**/packages/machine-health*1.0.0*.edgepkg"), None)
    pub = next(tmp_path.parent.glob("**/keys/signing.pub"))
    cfg = {
        "agent": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "trusted_keys": [str(pub)],
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": "opc.tcp://127.0.0.1:4840/",
                "nodes": [{"node_id": "ns=2;s=M.Vibration"}],
            }
        },
        "models": {"health": {"package": str(pkg)}},
        "pipelines": [
            {
                "name": "health",
                "source": "plc",
                "model": "health",
                "window": {"waveform": "Vibration"},
                "baseline": {"windows": 20},
            }
        ],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_status_and_relearn_on_the_data_folder(tmp_path, manifests, capsys):
    from edge_agent.cli import main

    a, _, _ = manifests
    m = Machine(8, rpm=2000.0)
    path = _cli_config(tmp_path)
    assert main(["baseline", "status", "health", str(path)]) == 0
    assert "no baseline saved yet" in capsys.readouterr().out
    events = []
    mon = Monitor(BaselineSettings(windows=20), _Slot(a), "health", tmp_path / "data", events.append)
    for i in range(20):
        mon.process(_window(m, i))
    assert main(["baseline", "status", "health", str(path)]) == 0
    out = capsys.readouterr().out
    assert "health: ready, learned" in out and "on 20 windows" in out and "false-alarm rate of 0.0001" in out
    assert main(["baseline", "relearn", "health", str(path), "--reason", "bearing replaced"]) == 0
    assert relearn_path(tmp_path / "data", "health").exists()
    v = mon.process(_window(m, 21))
    assert v.state == "learning" and not relearn_path(tmp_path / "data", "health").exists()
    assert any(e["kind"] == "baseline_relearn" and e["reason"] == "bearing replaced" for e in events)
    assert json.loads(baseline_path(tmp_path / "data", "health").read_text())["state"] == "learning"
    assert main(["baseline", "status", "nope", str(path)]) == 1


def test_a_relearn_reason_not_utf8_or_a_lone_surrogate_reaches_the_event_as_valid_text(tmp_path, manifests):
    # `--reason "Lager getauscht (Müller)"` typed on a Latin-1 terminal (Python hands the byte 0xFC over as a lone
    # surrogate), and a request file written by hand with a "\ud800" escape: before, the baseline_relearn event
    # held the lone surrogate, recorded in the outbox as "\udcfc", which strict JSON readers refuse
    from edge_agent.cli import main

    a, _, _ = manifests
    m = Machine(8, rpm=2000.0)
    path = _cli_config(tmp_path)
    events: list = []
    mon = Monitor(BaselineSettings(windows=20), _Slot(a), "health", tmp_path / "data", events.append)
    for i in range(20):
        mon.process(_window(m, i))
    argv = [
        "baseline",
        "relearn",
        "health",
        str(path),
        "--reason",
        os.fsdecode(b"Lager getauscht (M\xfcller)"),
    ]
    assert main(argv) == 0
    mon.process(_window(m, 20))
    relearn_path(tmp_path / "data", "health").write_text('{"reason": "sensor remounted \\ud800"}')
    mon.process(_window(m, 21))
    reasons = [e["reason"] for e in events if e["kind"] == "baseline_relearn"]
    assert reasons == ["Lager getauscht (M\\xfcller)", "sensor remounted \ufffd"]
    for e in events:  # as the outbox records it: UTF-8 JSON with no "\udXXX" escape
        assert "\\ud" not in json.dumps(e.to_json_dict()).lower()


def test_remaining_life_says_not_enough_evidence_while_flat_then_counts_down_monotonically():
    rng = np.random.default_rng(0)
    lt = LifeTrend(failure_level=8.0)
    flat = [lt.update(t, 0.5 + 0.05 * rng.normal()) for t in range(100)]
    assert all(e.state == NOT_ENOUGH and e.remaining is None for e in flat)
    est = [lt.update(100 + t, 0.5 + 0.05 * t + 0.05 * rng.normal()) for t in range(140)]
    given = [e for e in est if e.remaining is not None]
    assert given and given[-1].low <= given[-1].remaining <= given[-1].high
    rem = [e.remaining for e in given]
    assert all(b <= a for a, b in zip(rem, rem[1:], strict=False))  # monotone within the run
    truth = (8.0 - 0.5) / 0.05 + 100 - 239
    assert abs(rem[-1] - truth) < 0.3 * truth + 5
    lt.reset()  # a repair
    assert lt.update(300, 0.4).state == NOT_ENOUGH


def test_a_single_transient_window_in_iso_zone_d_is_not_ng_a_sustained_zone_is(tmp_path, manifests):
    """A door slam lifts one window's velocity into zone D: no NG; the zone held confirm_windows is."""
    a, _, _ = manifests
    fs, n = a.preprocessing.sample_rate_hz, a.preprocessing.window_samples
    t = np.arange(n) / fs
    rng = np.random.default_rng(0)
    steady = lambda amp: amp * np.sin(2 * np.pi * 25.0 * t) + 0.005 * rng.standard_normal(n)  # noqa: E731
    slam = steady(0.02) + 3.0 * np.exp(-40 * t) * np.sin(2 * np.pi * 150.0 * t)  # a ring-down, harmless
    mon = Monitor(BaselineSettings(windows=200, speed_tag="Speed"), _Slot(a), "health", None, None)
    verdicts = []
    for i, x in enumerate([steady(0.02), slam, steady(0.02), steady(1.0), steady(1.0)]):
        v = mon.process(Window("plc", i, i * 10.0, i * 10.0 + 0.2, x, {"_shaft_speed": 1500.0}))
        res = Result("health", "plc", i, 0.0, "machine-health", "1.0.0", "onnxruntime", "OK", 0.1)
        mon.apply(v, res)
        verdicts.append((v.iso_zone, res.verdict, res.label))
    assert verdicts[1][0] == "D" and verdicts[1][1] == "UNSURE"  # one window in D: still commissioning
    assert verdicts[3][0] == "D" and verdicts[3][1] == "UNSURE"
    assert verdicts[4] == ("D", "NG", "iso_zone_D")  # two in a row (confirm_windows: 2)


def test_a_units_or_gain_change_or_a_dead_input_is_unsure_not_an_alarm_nor_ok(tmp_path, manifests):
    a, _, _ = manifests
    m = Machine(17, rpm=1500.0)
    mon = Monitor(settings_for(m, windows=20, confirm_windows=1), _Slot(a), "health", None, None)
    for i in range(20):
        mon.process(_window(m, i))
    assert mon.baseline.state == "ready"
    out = []
    for i, gain in enumerate((9.80665, 9.80665, 1000.0, 1 / 9.80665)):  # m/s2 read as g, mg as g, g as m/s2
        w = Window("plc", 30 + i, 0.0, 0.2, m.window() * gain)
        v = mon.process(w)
        res = Result("health", "plc", w.seq, 0.0, "machine-health", "1.0.0", "onnxruntime", "NG", 0.9)
        mon.apply(v, res)
        out.append(res)
    assert [r.verdict for r in out] == ["UNSURE"] * 4 and all(r.label is None for r in out)
    assert re.match(r"sensor: every amplitude 9\.\d+x its commissioned level at once", out[0].reason)
    assert "(m/s2 read as g?)" in out[0].reason and "(mg or mm/s2 read as g" in out[2].reason
    assert "(g read as m/s2?)" in out[3].reason
    assert out[0].outputs["baseline"]["iso_alarm"] is False
    v = mon.process(_window(m, 40))  # the sensor at its scale again: judged, no alarm carried over
    assert v.sensor is None and not v.iso_alarm and not v.alarm
    lsb = 100 / 2**16  # a 16-bit input over +-50 g, disconnected: its bias and a code or two of noise
    dead = np.round((0.12 + np.random.default_rng(1).normal(0, 1.2 * lsb, m.n)) / lsb) * lsb
    v = mon.process(Window("plc", 41, 0.0, 0.2, dead))
    res = Result("health", "plc", 41, 0.0, "machine-health", "1.0.0", "onnxruntime", "OK", 0.1)
    mon.apply(v, res)
    assert res.verdict == "UNSURE" and v.sensor_kind == "low_level"
    assert re.match(r"sensor or machine: the vibration is 1/\d+ of its commissioned level", res.reason)


def test_a_gain_found_over_the_adcs_floor_leaves_the_iso_zone_alarm_standing_in_the_result(manifests):
    """A 'scale' found with the ADC's floor band left out (a coarse DAQ) may be a fault that lifted every line
    alike; the baseline keeps its ISO zone alarm then (Baseline.floor_scale). The result was UNSURE whatever the
    verdict's iso_alarm said (no NG, no PLC write): a machine in zone D for windows on end read as the sensor.
    Now such a result is NG (iso_zone_D) with the sensor's reason; any other sensor fault stays UNSURE."""
    from edge_agent.maintenance.baseline import Verdict

    a, _, _ = manifests
    mon = Monitor(BaselineSettings(windows=200, speed_tag="Speed"), _Slot(a), "health", None, None)
    got = []
    for iso in (True, False):
        v = Verdict(state="ready", sensor="sensor or machine: every amplitude ...", sensor_kind="scale")
        v.iso_zone, v.iso_alarm = "D", iso
        res = Result("health", "plc", 0, 0.0, "machine-health", "1.0.0", "onnxruntime", "OK", 0.1)
        mon.apply(v, res)
        got.append((res.verdict, res.label, res.reason))
    assert got[0] == ("NG", "iso_zone_D", "sensor or machine: every amplitude ..."), got
    assert got[1] == ("UNSURE", None, "sensor or machine: every amplitude ..."), got


def test_a_sensors_gain_or_units_on_a_coarse_daq_is_unsure_in_every_window_on_a_healthy_machine(manifests):
    """A 'scale' found through the ADC's floor (Baseline.floor_scale) kept counting its windows towards the ISO
    zone alarm from the mis-scaled samples: a step gain x5-x30 ahead of a 12-bit DAQ on a healthy zone-B
    machine read NG iso_zone_D in 19-21 of 24 windows, with a PLC write. Such a window now neither counts
    towards nor ends an ISO run and keeps the alarm that stood before it, so the gain is UNSURE in every
    window; a units error after the ADC and a level fallen to nothing are UNSURE as before."""
    import copy

    from tests.unit.test_maintenance_scoring import _coarse_daq_machine

    a, _, _ = manifests
    mon = Monitor(BaselineSettings(windows=200, speed_tag="Speed"), _Slot(a), "health", None, None)
    rng = np.random.default_rng(12)
    fs, n, speed, window = _coarse_daq_machine(12)
    b = Baseline(BaselineSettings(windows=60, speed_tag="Speed", iso_class="group1_flexible"), fs, n)
    for _ in range(60):
        b.process(window(rng), speed)
    assert b.state == "ready" and b.quant_step is not None

    def results(base: Baseline, make) -> list[tuple[str, str | None, str | None, str]]:
        got = []
        for _ in range(8):
            v = base.process(make(), speed)
            res = Result("health", "plc", 0, 0.0, "machine-health", "1.0.0", "onnxruntime", "OK", 0.1)
            mon.apply(v, res)
            got.append((res.verdict, res.label, v.sensor_kind, v.iso_zone))
        return got

    healthy = results(copy.deepcopy(b), lambda: window(rng))
    assert all(r[0] == "OK" and r[3] in "AB" for r in healthy), healthy
    gain = results(copy.deepcopy(b), lambda: window(rng, gain=10.0))
    assert all(r[:3] == ("UNSURE", None, "scale") for r in gain), gain
    assert gain[-1][3] == "D"  # read through the gain, the zone is D: no evidence of the machine's
    units = results(copy.deepcopy(b), lambda: window(rng) * 9.81)  # m/s^2 read as g, after the ADC
    assert all(r[:3] == ("UNSURE", None, "scale") and r[3] == "D" for r in units), units
    low = results(copy.deepcopy(b), lambda: window(rng) / 25.4)
    assert all(r[:3] == ("UNSURE", None, "low_level") for r in low), low


def test_a_sensors_gain_on_a_coarse_daq_faster_than_the_model_is_unsure_as_at_the_models_rate(manifests):
    """The ADC-floor rule needs the ADC's step, told from the window's values on their lattice of codes. A DAQ
    faster than the model's rate (25.6 kHz, the model's 10 kHz) has its window resampled by the pipeline, whose
    values lie on no lattice: the baseline held no quant_step and a sensor's gain x10 ahead of a 12-bit ADC on a
    healthy machine read NG (the probe's pump: 23 of 23 windows at x5 and x10). Resampling keeps a code's
    size but keeps only the quantisation noise below the model's Nyquist (25/64 of its power): the pipeline
    tells the window's step from its raw samples, as the noise it leaves, q * sqrt(25/64). The gain reads
    'scale' as at the model's own rate, healthy windows OK, a fault lifting every line alike still alarms."""
    import copy

    from devices.base import Quality, Reading
    from edge_agent.config import WindowSettings
    from edge_agent.pipelines import Windower
    from model_packager.condition import input_samples

    a, _, _ = manifests
    fs_raw, up, down = 25600.0, 25, 64
    n_raw = input_samples(a.preprocessing.window_samples, up, down)
    code_g = 10.0 / 2**12 / 0.1  # a 12-bit DAQ over +-5 V at 100 mV/g: 24.4 mg a code
    rng = np.random.default_rng(12)

    def raw(lines: float = 1.0, gain: float = 1.0) -> np.ndarray:  # _coarse_daq_machine's, at 25.6 kHz
        t = np.arange(n_raw) / fs_raw
        x = 0.004 * rng.standard_normal(n_raw)
        for h, amp in ((1, 0.12), (2, 0.05), (3, 0.02), (4, 0.01), (7, 0.03)):
            amp *= lines * np.exp(0.15 * rng.standard_normal())
            x += amp * np.sin(2 * np.pi * h * 1480.0 / 60 * t + rng.uniform(0, 6.3))
        return np.clip(np.round(gain * x / code_g + 0.3 * rng.standard_normal(n_raw)), -2048, 2047) * code_g

    ws = WindowSettings(waveform="vib", scalars={"_shaft_speed": "Speed"}, sample_rate_hz=fs_raw)
    win = Windower("plc", ws, 2048, resample=(up, down))
    win.raw_check = lambda x, scalars: None  # a vibration pipeline (sensor checks on)
    clock = [0.0]

    def window(lines: float = 1.0, gain: float = 1.0) -> Window:
        win.add(Reading("plc", "Speed", 1480.0, clock[0], clock[0], Quality.GOOD))
        got = win.add(Reading("plc", "vib", raw(lines, gain), clock[0], clock[0], Quality.GOOD))
        clock[0] += n_raw / fs_raw
        assert got is not None and got.waveform.shape == (2048,)
        return got

    settings = BaselineSettings(windows=60, speed_tag="Speed", iso_class="group1_flexible")
    mon = Monitor(settings, _Slot(a), "health", None, None)
    for _ in range(60):
        mon.process(window())
    assert mon.baseline.state == "ready"
    assert mon.baseline.quant_step == pytest.approx(code_g * np.sqrt(up / down))

    learned = copy.deepcopy(mon.baseline)

    def results(make) -> list[tuple[str, str | None, str | None]]:
        mon.baseline, got = copy.deepcopy(learned), []
        for _ in range(6):
            v = mon.process(make())
            res = Result("health", "plc", 0, 0.0, "machine-health", "1.0.0", "onnxruntime", "OK", 0.1)
            mon.apply(v, res)
            got.append((res.verdict, res.label, v.sensor_kind))
        return got

    healthy = results(window)
    assert all(r == ("OK", None, None) for r in healthy), healthy
    gain = results(lambda: window(gain=10.0))
    assert all(r == ("UNSURE", None, "scale") for r in gain), gain
    sick = results(lambda: window(lines=5.0))
    assert all(r[2] is None for r in sick) and sick[-1][0] == "NG", sick


def test_an_iso_alarm_standing_through_a_gain_found_over_the_adcs_floor_keeps_its_judged_zone(manifests):
    """An ISO zone alarm that stood before a sensor gain found through the ADC's floor stands (NG), but it was
    labelled with the zone of the mis-scaled velocity: an alarm in zone C (alarm zone C) read 'iso_zone_D'
    through a gain x10, the label the PLC write carries. It keeps the zone of the last window judged as the
    machine's."""
    from tests.unit.test_maintenance_scoring import _coarse_daq_machine

    a, _, _ = manifests
    mon = Monitor(BaselineSettings(windows=200, speed_tag="Speed"), _Slot(a), "health", None, None)
    rng = np.random.default_rng(12)
    fs, n, speed, window = _coarse_daq_machine(12)
    s = BaselineSettings(windows=60, speed_tag="Speed", iso_class="group1_flexible", iso_alarm_zone="C")
    b = Baseline(s, fs, n)
    for _ in range(60):
        b.process(window(rng), speed)
    assert b.state == "ready" and b.quant_step is not None

    def result(make) -> tuple[str, str | None, str | None]:
        v = b.process(make(), speed)
        res = Result("health", "plc", 0, 0.0, "machine-health", "1.0.0", "onnxruntime", "OK", 0.1)
        mon.apply(v, res)
        return res.verdict, res.label, v.sensor_kind

    judged = [result(lambda: window(rng, lines=1.5)) for _ in range(4)]  # its lines up half: zone C, held
    assert judged[-1][:2] == ("NG", "iso_zone_C") and judged[-1][2] is None, judged
    gained = [result(lambda: window(rng, lines=1.5, gain=10.0)) for _ in range(6)]
    assert all(g == ("NG", "iso_zone_C", "scale") for g in gained), gained  # was: iso_zone_D
