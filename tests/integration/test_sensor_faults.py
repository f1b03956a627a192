"""A maintenance pipeline on a real ONNX Runtime slot, fed windows of a healthy machine that a failing
sensor spoilt (clipped at its range, flat, values held, spikes, read in other units): each result is UNSURE naming the
sensor's fault, never NG (an alarm, a PLC write) nor OK (which clears one); the baseline neither learns
from nor counts them; one event per episode, counts by fault on the status."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bench._bearing_signals import Machine
from devices.base import Quality, Reading
from edge_agent.config import PipelineSettings, WindowSettings
from edge_agent.maintenance.settings import BaselineSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from tests.support.models import make_keypair, make_package


@pytest.fixture(scope="module")
def signal_package(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sensor")
    key, pub = make_keypair(tmp / "keys")
    return make_package(tmp, kind="signal", key=key), pub


async def _pipeline(tmp_path, signal_package, window: WindowSettings, baseline: BaselineSettings | None):
    pkg, pub = signal_package
    slot = ModelSlot(
        "health", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [str(pub)]
    )
    await slot.start()
    results, events = [], []
    done = [0]

    async def on_result(res, item):
        results.append(res)
        done[0] += 1

    settings = PipelineSettings(name="pump", source="plc", model="health", window=window, baseline=baseline)
    pipe = Pipeline(
        settings, slot, ThreadPoolExecutor(1), on_result, on_event=events.append, data_dir=tmp_path / "data"
    )
    pipe.prepare()
    pipe.start()
    seq = [0]

    async def feed(x: np.ndarray) -> None:
        await pipe.offer(Reading("plc", "Speed", 1800.0, 0.0, 0.0, Quality.GOOD))
        await pipe.offer(Reading("plc", "Vibration", x, float(seq[0]), float(seq[0]), Quality.GOOD))
        seq[0] += 1
        for _ in range(15000):  # one window per reading here: wait for its result
            if done[0] >= seq[0]:
                return
            await asyncio.sleep(0.002)
        raise AssertionError(f"window {seq[0]} gave no result")

    return slot, pipe, feed, results, events


def clipped(x: np.ndarray, share: float = 0.1, rail: float = 49.9) -> np.ndarray:
    """The accelerometer at its range: the waveform scaled so that ``share`` of it is cut at +-rail."""
    g = rail / np.quantile(np.abs(x), 1 - share)
    return np.clip(x * g, -rail, rail)


async def test_a_clipping_or_dead_sensor_is_unsure_and_never_learned_nor_alarmed(tmp_path, signal_package):
    m = Machine(31, fs=25600.0, n=5248, rpm=1800.0)  # a 25.6 kHz tag resampled into the 10 kHz model
    slot, pipe, feed, results, events = await _pipeline(
        tmp_path,
        signal_package,
        WindowSettings(waveform="Vibration", sample_rate_hz=25600, scalars={}),
        BaselineSettings(windows=20, speed_tag="Speed", confirm_windows=1),
    )
    try:
        for _ in range(3):  # commissioning with a dead input (it reads its bias): not learned
            await feed(np.full(m.n, 0.37))
        assert pipe.baseline.baseline.progress() == 0.0
        for _ in range(20):
            await feed(m.window())
        assert pipe.baseline.baseline.state == "ready"
        results.clear()
        for _ in range(3):
            await feed(clipped(m.window()))
        for _ in range(2):
            await feed(np.round((0.12 + np.random.default_rng(0).normal(0, 0.0005, m.n)) / 0.0015) * 0.0015)
        await feed(m.window() * 9.80665)  # m/s2 read as g: the baseline tells the scale from the machine
        faulty = list(results)
        for _ in range(10):  # a clean episode's end: CLEAR_AFTER windows
            await feed(m.window())
    finally:
        await pipe.stop()
        await slot.stop()
    assert [r.verdict for r in faulty] == ["UNSURE"] * 6
    assert all(r.reason.startswith("sensor: clipped at ") and "49.9" in r.reason for r in faulty[:3])
    assert faulty[0].outputs["sensor"]["fault"] == "clipped" and "baseline" not in faulty[0].outputs
    assert all(r.score is None for r in faulty[:5])  # not scored: no 0.0 a dashboard reads as a good part's
    assert all(r.reason.startswith("sensor: flat at 0.12") for r in faulty[3:5])
    assert (
        faulty[5].reason.startswith("sensor: every amplitude 9.") and "(m/s2 read as g?)" in faulty[5].reason
    )
    assert sum(r.verdict == "NG" for r in results[6:]) <= 1  # the healthy machine again
    st = pipe.status()["sensor"]
    assert st["faults"] == {"flatline": 5, "clipped": 3, "scale": 1} and st["active"] is None
    sensor_events = [(e["fault"], e["active"]) for e in events if e["kind"] == "sensor_fault"]
    assert sensor_events == [("flatline", True), ("flatline", False), ("clipped", True), ("clipped", False)]


async def test_a_maintenance_model_alone_says_unsure_on_a_flat_spiking_or_repeated_sensor(
    tmp_path, signal_package, caplog
):
    m = Machine(32, rpm=2400.0)  # 10 kHz: the model's rate, no resampling; no baseline
    slot, pipe, feed, results, events = await _pipeline(
        tmp_path, signal_package, WindowSettings(waveform="Vibration"), None
    )
    try:
        await feed(np.zeros(m.n))  # a disconnected input
        x = m.window()
        x[700] = 50.0  # one EMI spike at full scale
        await feed(x)
        y = m.window()
        y[300:600] = 0.0  # a lost packet filled with zeros
        await feed(y)
        z = m.window()
        await feed(z)
        await feed(z.copy())  # the source sends the same reading again (a stale buffer)
    finally:
        await pipe.stop()
        await slot.stop()
    assert [r.verdict for r in results[:3]] == ["UNSURE"] * 3
    # a maintenance model judging an asset on its own says, once at start, that it needs a baseline
    said = [r.getMessage() for r in caplog.records if "without a baseline" in r.getMessage()]
    assert len(said) == 1 and "add 'baseline:' to the pipeline" in said[0], said
    assert results[0].reason == "sensor: flat at 0 for all 2048 samples (no signal)"
    assert results[1].reason.startswith("sensor: 1 single-sample spike(s) up to 50,")
    assert results[2].reason.startswith("sensor: held at 0 for 300 samples in a row")
    assert results[3].verdict in ("OK", "NG") and results[3].reason is None
    assert results[4].verdict == "UNSURE"
    assert (
        results[4].reason
        == "sensor: the same 2048 samples as the previous window (a stale reading sent again)"
    )
    assert slot.status()["counters"]["inferences"] == 1  # the sensor's windows never reach the model


async def test_a_loose_sensor_spiking_25_times_a_window_is_unsure_while_bearing_impacts_are_judged(
    tmp_path, signal_package
):
    """A loose or badly wired sensor gives tens of single-sample spikes a window (no ringing, the anti-aliasing
    filter lets no vibration jump one sample and back); it was judged as the machine (more than 8 spikes read as
    "a burst"). Bearing impacts, which ring a resonance over many samples, are judged as before."""
    m = Machine(32, rpm=2400.0)
    slot, pipe, feed, results, events = await _pipeline(
        tmp_path, signal_package, WindowSettings(waveform="Vibration"), None
    )
    try:
        x = m.window()
        x[40 + 80 * np.arange(25)] = 30.0 * (-1.0) ** np.arange(25)  # 25 isolated spikes, both signs
        await feed(x)
        for sev in (0.5, 1.0, 1.5):
            await feed(m.window(sev, "bearing_outer"))
            await feed(m.window(sev, "bearing_inner"))
    finally:
        await pipe.stop()
        await slot.stop()
    assert results[0].verdict == "UNSURE" and results[0].label is None
    assert results[0].reason.startswith("sensor: 25 single-sample spike(s) up to 30,"), results[0].reason
    assert [r.reason for r in results[1:]] == [None] * 6  # the bearing's impacts reach the model
    assert pipe.status()["sensor"]["faults"] == {"spike": 1}


async def test_a_sensor_settling_after_a_power_up_is_unsure_where_the_window_holds_two_turns(
    tmp_path, signal_package
):
    """An IEPE sensor powered up on a healthy machine: its level slides 20 g away over seconds, which the
    baseline read as velocity. The pipeline hands the check its baseline's slowest shaft (speed_range_rpm
    from 600: 2.05 turns in a 0.2-s window), and those windows are UNSURE 'settling', one episode."""
    m = Machine(33, fs=10000.0, n=2048, rpm=1800.0)
    slot, pipe, feed, results, events = await _pipeline(
        tmp_path,
        signal_package,
        WindowSettings(waveform="Vibration", sample_rate_hz=10000, scalars={}),
        BaselineSettings(windows=20, speed_tag="Speed", confirm_windows=1, speed_range_rpm=(600.0, 3600.0)),
    )
    try:
        for _ in range(20):
            await feed(m.window())
        assert pipe.baseline.baseline.state == "ready"
        results.clear()
        t = np.arange(m.n) / m.fs
        for k in range(3):  # the first 0.6 s after the power-up
            await feed(m.window() + 20.0 * np.exp(-(k * m.n / m.fs + t) / 0.7))
        settling = list(results)
        for _ in range(10):  # a clean episode's end: CLEAR_AFTER windows
            await feed(m.window())
    finally:
        await pipe.stop()
        await slot.stop()
    assert [r.verdict for r in settling] == ["UNSURE"] * 3, [(r.verdict, r.reason) for r in settling]
    assert all(r.outputs["sensor"]["fault"] == "settling" for r in settling)
    assert "settling after power-up" in settling[0].reason
    assert not any(r.verdict == "NG" for r in results)
    sensor_events = [(e["fault"], e["active"]) for e in events if e["kind"] == "sensor_fault"]
    assert sensor_events == [("settling", True), ("settling", False)]


@pytest.mark.parametrize("speed_tag", ["Speed", None])
async def test_a_sensor_settling_at_the_default_speed_range_counts_the_turns_at_the_machines_speed(
    tmp_path, signal_package, speed_tag
):
    """The same power-up under the default speed_range_rpm (from 300 rpm: 1.02 turns in a 0.2-s window): the
    pipeline counted the turns at the range's low end, the settling rule was off, and the 1,800-rpm machine's
    power-up was NG. The turns are counted at the speed it runs at: the speed tag's (6.1 turns), or without one
    the slowest its commissioned baseline judges; its power-up is UNSURE 'settling', no alarm."""
    m = Machine(33, fs=10000.0, n=2048, rpm=1800.0)
    slot, pipe, feed, results, events = await _pipeline(
        tmp_path,
        signal_package,
        WindowSettings(waveform="Vibration", sample_rate_hz=10000, scalars={}),
        BaselineSettings(windows=20, speed_tag=speed_tag, confirm_windows=1),
    )
    try:
        for _ in range(20):
            await feed(m.window())
        assert pipe.baseline.baseline.state == "ready"
        results.clear()
        t = np.arange(m.n) / m.fs
        for k in range(3):  # the first 0.6 s after the power-up
            await feed(m.window() + 20.0 * np.exp(-(k * m.n / m.fs + t) / 0.7))
        settling = list(results)
        for _ in range(3):  # settled: judged again
            await feed(m.window())
    finally:
        await pipe.stop()
        await slot.stop()
    assert [r.verdict for r in settling] == ["UNSURE"] * 3, [(r.verdict, r.reason) for r in settling]
    assert all(r.outputs["sensor"]["fault"] == "settling" for r in settling)
    assert [r.verdict for r in results[3:]] == ["OK"] * 3, [(r.verdict, r.reason) for r in results[3:]]
