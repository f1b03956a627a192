"""A maintenance baseline per process state, end to end: a real agent (MQTT source on a Mosquitto broker,
a signal model on ONNX Runtime) reads a spindle's vibration and its ``Cutting`` tag from one JSON message.
Commissioned while idle only, its cutting windows (louder, tooth-pass lines) are not judged (UNSURE, never
NG; counted per state on the status) instead of alarming; ``edge-agent baseline relearn --state cutting``
learns that state, after which both states are judged on their own baselines, OK when healthy and NG on a
fault. A second test commissions a pump whose hour holds a few single-window knocks: they are left out
and counted, and do not set the threshold (a fault below the knocks' level is alarmed)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench._bearing_signals import Machine
from devices.base import Quality, Reading
from edge_agent.agent import Agent
from edge_agent.config import PipelineSettings, WindowSettings, parse_config
from edge_agent.maintenance.baseline import Baseline
from edge_agent.maintenance.cli import request_relearn
from edge_agent.maintenance.settings import BaselineSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from tests.support.models import SIGNAL_RATE_HZ, make_keypair, make_package
from tests.support.waits import until

RPM = 1800.0


def agent_config(tmp_path, mqtt_port, pkg, pub) -> dict:
    return {
        "agent": {"id": "gw1", "site": "plant", "line": "l1", "data_dir": str(tmp_path / "gw1")},
        "trusted_keys": [str(pub)],
        "http": {"enabled": False},
        "sources": {
            "plc": {
                "type": "mqtt",
                "port": mqtt_port,
                "subscriptions": [
                    {
                        "topic": "plant/spindle/vib",
                        "json_mapping": {
                            "values": {"cutting": "Cutting", "speed": "Speed", "v": "Vibration"},
                            "tag_prefix_topic": False,
                        },
                    }
                ],
            }
        },
        "models": {"health": {"package": str(pkg), "engine": "onnxruntime"}},
        "pipelines": [
            {
                "name": "spindle",
                "source": "plc",
                "model": "health",
                "window": {"waveform": "Vibration", "sample_rate_hz": SIGNAL_RATE_HZ, "scalars": []},
                "queue": {"policy": "block"},  # every window judged, however slow this machine is
                "baseline": {
                    "windows": 30,
                    "speed_tag": "Speed",
                    "state_tag": "Cutting",
                    "states": [{"name": "idle", "max": 0.5}, {"name": "cutting", "min": 0.5}],
                },
            }
        ],
    }


def spindle_window(m: Machine, cutting: bool, rng, severity: float = 0.0, fault: str = "healthy"):
    """Idle: the spindle's own vibration; cutting: with a 4-flute tool's tooth-pass lines and twice the noise."""
    x = m.window(severity, fault)
    if cutting:
        t = np.arange(m.n) / m.fs
        tp = 4 * RPM / 60
        for k, a in ((1, 2.0), (2, 1.0), (3, 0.6)):
            x = x + a * np.std(x) * np.sin(2 * np.pi * k * tp * t + rng.uniform(0, 2 * np.pi))
        x = x + rng.normal(0, np.std(x), m.n)
    return x


async def test_a_state_not_commissioned_is_not_judged_until_it_is_learned_then_each_state_is_judged(
    tmp_path, mosquitto
):
    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path / "pkg", kind="signal", key=key)
    cfg = parse_config(agent_config(tmp_path, mosquitto.port, pkg, pub))
    agent = Agent(cfg)
    m = Machine(41, fs=SIGNAL_RATE_HZ, n=2048, rpm=RPM)
    rng = np.random.default_rng(5)
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", mosquitto.port)
    c.loop_start()
    await agent.start()
    pipe = agent.pipelines[0]
    try:
        # the SUBACK (``subscribed`` is an Event: the bare object is always true, and a window published
        # before the subscription took was lost, its result awaited in vain)
        await until(lambda: agent.sources["plc"].subscribed.is_set(), what="the MQTT source subscribed")

        async def send(n: int, cutting: bool, severity: float = 0.0, fault: str = "healthy") -> None:
            for _ in range(n):
                want = pipe.status()["results"] + 1
                x = spindle_window(m, cutting, rng, severity, fault)
                body = {"cutting": float(cutting), "speed": RPM, "v": np.round(x, 5).tolist()}
                msg = c.publish("plant/spindle/vib", json.dumps(body), qos=1)
                await asyncio.to_thread(msg.wait_for_publish)
                await until(lambda w=want: pipe.status()["results"] >= w, timeout_s=60, what="its result")

        await send(30, cutting=False)  # commissioning: the spindle idles the whole time
        st = pipe.status()
        assert st["baseline"]["state"] == "ready"
        assert st["baseline"]["process_states"]["idle"]["state"] == "ready"
        assert "cutting" not in st["baseline"]["process_states"]
        await send(12, cutting=True)  # a program starts cutting: a state never commissioned
        st = pipe.status()
        assert st["ng"] == 0  # not judged: no alarm on a healthy machine (the former baseline alarmed)
        assert st["baseline"]["not_judged"] == {"cutting": 12}
        unsure = st["unsure"]
        await send(5, cutting=False)  # idle again: judged on its own baseline, OK
        assert pipe.status()["unsure"] == unsure and pipe.status()["ng"] == 0

        request_relearn(cfg, "spindle", "cutting commissioned", state="cutting")
        await send(30, cutting=True)  # learned at last: 30 windows of it
        st = pipe.status()["baseline"]
        assert st["process_states"]["cutting"]["state"] == "ready", st
        assert st["process_states"]["idle"]["state"] == "ready"
        before = pipe.status()
        await send(10, cutting=True)
        await send(10, cutting=False)
        after = pipe.status()
        assert after["ng"] - before["ng"] <= 1 and after["unsure"] == before["unsure"]
        await send(6, cutting=True, severity=0.7, fault="bearing_outer")
        assert pipe.status()["ng"] - after["ng"] >= 3
    finally:
        c.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        c.loop_stop()
        await agent.stop()
    assert pipe.status()["baseline"]["not_judged"] == {}  # learned: no longer counted as not judged


def knock(x: np.ndarray, rng, level: float) -> np.ndarray:
    """One cavitation knock: a decaying 1.8 kHz ring in the middle of the window, ``level`` times its RMS."""
    t = np.arange(x.size) / SIGNAL_RATE_HZ
    at = x.size // 2
    ring = np.zeros(x.size)
    ring[at:] = np.exp(-(t[: x.size - at]) / 0.004) * np.sin(2 * np.pi * 1800 * t[: x.size - at])
    return x + level * np.std(x) * ring * (1 + 0.1 * rng.standard_normal())


async def test_single_knocks_while_commissioning_are_left_out_and_do_not_set_the_threshold(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="signal", key=key)
    slot = ModelSlot(
        "health", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [str(pub)]
    )
    await slot.start()
    m = Machine(43, fs=SIGNAL_RATE_HZ, n=2048, rpm=RPM)
    settings = PipelineSettings(
        name="pump",
        source="plc",
        model="health",
        window=WindowSettings(waveform="Vibration", sample_rate_hz=SIGNAL_RATE_HZ, scalars={}),
        baseline=BaselineSettings(windows=120, speed_tag="Speed", iso_alarm_zone="off"),
    )
    results, events = [], []

    async def on_result(res, item):
        results.append(res)

    pipe = Pipeline(
        settings, slot, ThreadPoolExecutor(1), on_result, on_event=events.append, data_dir=tmp_path / "data"
    )
    pipe.prepare()
    pipe.start()
    rng = np.random.default_rng(3)
    knocks = {17, 48, 80}  # three windows of the hour, each alone

    async def feed(xs) -> None:
        for i, x in enumerate(xs):
            want = len(results) + 1
            await pipe.offer(Reading("plc", "Speed", RPM, 0.0, 0.0, Quality.GOOD))
            await pipe.offer(Reading("plc", "Vibration", x, float(i), float(i), Quality.GOOD))
            await until(lambda w=want: len(results) >= w, timeout_s=60, what="the window's result")

    hour = [m.window() for _ in range(120)]
    # the same hour without its knocks, learned by the baseline alone: the threshold the pump should get
    alone = Baseline(settings.baseline, SIGNAL_RATE_HZ, 2048)
    for x in hour:
        alone.process(x, {"_shaft_speed": RPM})
    try:
        await feed(knock(x, rng, 150.0) if i in knocks else x for i, x in enumerate(hour))
        st = pipe.status()["baseline"]
        threshold = st["threshold"]
        assert st["state"] == "ready" and st["outliers"] >= 3
        # the knocks do not set it (they lifted it 1.34x before)
        assert threshold <= 1.15 * alone.threshold, (threshold, alone.threshold)
        results.clear()
        await feed(m.window() for _ in range(30))
        assert sum(r.verdict == "NG" for r in results) <= 1  # the healthy pump
        results.clear()
        # a race defect that lifts the envelope lines far less than a knock lifts the window
        await feed(m.window(0.7, "bearing_outer") for _ in range(8))
    finally:
        await pipe.stop()
        await slot.stop()
    assert sum(r.verdict == "NG" for r in results) >= 3, ([round(r.score, 2) for r in results], threshold)
    [learned] = [e for e in events if e["kind"] == "baseline_learned"]
    assert learned["outliers"] == st["outliers"] and learned["windows"] == 120
