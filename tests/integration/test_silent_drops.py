"""No silent drops at run time: a waveform tag the source never gives, a scalar the model needs under
another name, a source no pipeline reads, messages that decode to nothing. Each logs ONE WARNING with
the reason and the fix, and is counted on /status; repeats are counted, not logged. (The config
checks of ``validate`` refuse most of these before start; here they are forced past it, as a config
whose tags changed on the PLC would be.) Against the asyncua machine server and a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent import pipelines
from edge_agent.agent import Agent
from edge_agent.config import WindowSettings, parse_config
from simulators.machine import MachineServer
from tests.support.models import SIGNAL_RATE_HZ, SIGNAL_WINDOW, make_keypair, make_package
from tests.support.peers import free_port
from tests.support.waits import until as wait_for
from tests.unit.test_agent_config import signal_package_with_scalars


def closed(c: paho.Client) -> None:
    """Disconnect a raw paho client and end its network thread. ``loop_stop`` alone waits for the thread's
    select to time out (paho's 1 s) before the thread sees the stop; the DISCONNECT wakes it at once."""
    c.disconnect()
    c.loop_stop()


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("silentpkgs")
    key, pub = make_keypair(tmp / "keys")
    return {
        "signal": make_package(tmp, kind="signal", key=key),
        "signal_temp": signal_package_with_scalars(tmp, key, ["temperature"]),
        "pub": pub,
    }


async def test_each_silent_drop_warns_once_with_its_fix_and_is_counted(
    tmp_path, packages, mosquitto, caplog, monkeypatch
):
    monkeypatch.setattr(pipelines, "TAG_MISSING_AFTER_S", 1.0)
    caplog.set_level(logging.INFO)
    machine = MachineServer(free_port(), period_ms=100)
    await machine.start()
    cfg = parse_config(
        {
            "agent": {"id": "gw1", "data_dir": str(tmp_path / "data")},
            "trusted_keys": [str(packages["pub"])],
            "http": {"enabled": False},
            "sources": {
                "machine": {
                    "type": "opcua",
                    "endpoint": machine.endpoint,
                    "nodes": [
                        {"node_id": machine.node_id("Vibration")},
                        {"node_id": machine.node_id("Temperature")},
                    ],
                },
                "broker": {"type": "mqtt", "port": mosquitto.port, "subscriptions": [{"topic": "plant/#"}]},
            },
            "models": {
                "health": {"package": str(packages["signal"]), "engine": "onnxruntime"},
                "health_t": {"package": str(packages["signal_temp"]), "engine": "onnxruntime"},
            },
            "pipelines": [
                {
                    "name": "health",
                    "source": "machine",
                    "model": "health",
                    "window": {"waveform": "Vibration"},
                },
                {
                    "name": "temps",
                    "source": "machine",
                    "model": "health_t",
                    "window": {"waveform": "Vibration", "scalars": {"temperature": "Temperature"}},
                },
            ],
        }
    )
    # forced past validate: a waveform tag in the wrong case, a scalar under the tag's name not the model's
    cfg = cfg.model_copy(
        update={
            "pipelines": [
                cfg.pipelines[0].model_copy(update={"window": WindowSettings(waveform="vibration")}),
                cfg.pipelines[1].model_copy(
                    update={"window": WindowSettings(waveform="Vibration", scalars=["Temperature"])}
                ),
            ]
        }
    )
    agent = Agent(cfg)
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        await agent.start()
        await asyncio.wait_for(
            agent.sources["broker"].subscribed.wait(), 30
        )  # the SUBACK: nothing published is missed
        for i in range(30):
            pub.publish("plant/line1/press", b"not json %d" % i, qos=1)

        def drops(kind: str, name: str) -> dict:
            st = agent.status()
            if kind == "pipeline":
                return next(p for p in st["pipelines"] if p["pipeline"] == name)["silent_drops"]
            return st["sources"][name]["silent_drops"]

        await wait_for(
            lambda: drops("pipeline", "health").get("tag_missing", {}).get("count", 0) >= 3,
            what="tag_missing counted",
        )
        await wait_for(
            lambda: drops("pipeline", "temps").get("bad_input", {}).get("count", 0) >= 2,
            what="bad_input counted",
        )
        await wait_for(
            lambda: drops("source", "broker").get("nothing_decoded", {}).get("count", 0) >= 20,
            what="nothing_decoded counted",
        )
        health, temps, broker = (
            drops("pipeline", "health"),
            drops("pipeline", "temps"),
            drops("source", "broker"),
        )
        from edge_agent.status_board import tag_rows

        rows = {r["tag"]: r for r in tag_rows(list(agent.tags["machine"].values()))}  # what /api/tags serves
        assert rows["Temperature"]["type"] == "float" and rows["Vibration"]["type"] == "array<float64>"
    finally:
        closed(pub)
        await agent.stop()
        await machine.stop()
    assert "none of tag 'vibration'" in health["tag_missing"]["message"]
    assert (
        "'Vibration'" in health["tag_missing"]["message"]
        and "set window.waveform" in health["tag_missing"]["message"]
    )
    assert (
        "['temperature']" in temps["bad_input"]["message"]
        and "edge-agent validate" in temps["bad_input"]["message"]
    )
    assert "no pipeline reads it" in broker["unread"]["message"]
    assert "no reading decoded" in broker["nothing_decoded"]["message"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for text in (
        "none of tag 'vibration'",
        "item dropped (bad_input)",
        "no pipeline reads it",
        "no reading decoded",
    ):
        assert sum(text in w for w in warnings) == 1, (text, [w for w in warnings if text in w])


async def test_tags_cli_lists_what_each_source_gives_and_what_pipelines_miss(tmp_path, packages):
    import sys
    from pathlib import Path

    import yaml

    machine = MachineServer(free_port(), period_ms=100)
    await machine.start()
    cfg = {
        "agent": {"id": "gw1", "data_dir": str(tmp_path / "data")},
        "trusted_keys": [str(packages["pub"])],
        "sources": {
            "machine": {
                "type": "opcua",
                "endpoint": machine.endpoint,
                "nodes": [
                    {"node_id": machine.node_id("Vibration")},
                    {"node_id": machine.node_id("Speed"), "tag": "speed"},
                    {"node_id": "ns=2;i=4242", "tag": "load"},
                ],
            }
        },
        "models": {"health": {"package": str(packages["signal"]), "engine": "onnxruntime"}},
        "pipelines": [
            {
                "name": "health",
                "source": "machine",
                "model": "health",
                "window": {"waveform": "Vibration", "scalars": ["load"]},
            }
        ],
    }
    p = tmp_path / "tags.yaml"
    p.write_text(yaml.safe_dump(cfg))
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edge_agent.cli",
            "tags",
            str(p),
            "--seconds",
            "2",
            cwd=Path(__file__).resolve().parents[2],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await machine.stop()
    text = out.decode()
    assert proc.returncode == 1, (text, err)
    speed = next(ln for ln in text.splitlines() if ln.strip().startswith("speed "))
    assert "float" in speed and "good" in speed
    assert any(ln.strip().startswith("Vibration ") and "array<float64>" in ln for ln in text.splitlines()), (
        text
    )
    assert "pipeline health: window.scalars tag 'load' not seen from source machine in 2s" in err.decode()


async def test_a_sparkplug_source_no_pipeline_reads_is_still_decoded_and_asks_for_rebirth(
    tmp_path, mosquitto
):
    from protocols import sparkplug as sp

    seen: list = []
    node = paho.Client(CallbackAPIVersion.VERSION2)
    node.on_message = lambda c, u, m: seen.append(m.topic)
    node.connect("127.0.0.1", mosquitto.port)
    node.subscribe("spBv1.0/g1/NCMD/#")
    node.loop_start()
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw1", "data_dir": str(tmp_path / "data")},
                "http": {"enabled": False},
                "sources": {
                    "bus": {
                        "type": "mqtt",
                        "port": mosquitto.port,
                        "subscriptions": [{"topic": "spBv1.0/g1/#", "codec": "sparkplug_b"}],
                    }
                },
            }
        )
    )
    try:
        await agent.start()
        await asyncio.wait_for(
            agent.sources["bus"].subscribed.wait(), 30
        )  # the SUBACK: nothing published is missed
        node.publish(
            "spBv1.0/g1/NDATA/n1",
            sp.encode(sp.Payload(1, 3, [sp.Metric("t", None, sp.DataType.DOUBLE, 1.0)])),
        )
        await wait_for(lambda: "spBv1.0/g1/NCMD/n1" in seen, 10, "a rebirth request")
        st = agent.status()["sources"]["bus"]
    finally:
        closed(node)
        await agent.stop()
    assert (
        st["silent_drops"]["unread"]["count"] == 0
    )  # nothing decoded yet: data before birth gives no readings
    assert st["silent_drops"]["data_before_birth"]["count"] == 1 and st["errors"] == 0


async def test_a_waveform_tag_that_holds_text_is_skipped_and_the_source_keeps_serving(
    tmp_path, packages, mosquitto, caplog
):
    """A sensor node that reports "sensor fault" in its vibration field now and then: before, the text
    raised in the windowing and stopped every reading of the source for good (one log line, then
    silence). It is counted as a bad sample with a notice, and the windows that follow are scored."""
    agent = Agent(_broker_health(tmp_path, packages, mosquitto.port))
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    rng = np.random.default_rng(0)
    try:
        await agent.start()
        await asyncio.wait_for(agent.sources["broker"].subscribed.wait(), 30)
        for body in ('{"vib": "sensor fault"}', '{"vib": [1.0, "x"]}', '{"vib": {"a": 1}}', '{"vib": true}'):
            pub.publish("plant/m1", body, qos=1)
        for _ in range(3):
            wave = rng.normal(0, 1, SIGNAL_WINDOW).round(4).tolist()
            pub.publish("plant/m1", json.dumps({"vib": wave}), qos=1)
        await wait_for(lambda: _health(agent)["results"] >= 3, what="the windows after the text scored")
    finally:
        closed(pub)
        await agent.stop()
    drops = _health(agent)["silent_drops"]
    assert "holds 'sensor fault', not numbers" in drops["waveform_not_a_number"]["message"]
    assert drops["waveform_not_a_number"]["count"] == 2  # text, a truth value
    assert (
        agent.sources["broker"].stats.errors_by_reason["wrong_type"] == 2
    )  # the codec's: mixed array, record
    assert not any("its readings failed" in r.getMessage() for r in caplog.records)


async def test_an_item_that_breaks_a_reader_is_skipped_and_the_source_keeps_serving(
    tmp_path, packages, mosquitto, caplog, monkeypatch
):
    """Whatever a reader (pipeline, rule, forwarder) raises on one item, the source's next items still
    reach every reader: said once with its traceback, counted as the source's item_failed."""
    from edge_agent.pipelines import Pipeline

    offer, calls = Pipeline.offer, [0]

    async def flaky(self, item):
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("a reader's fault")
        await offer(self, item)

    monkeypatch.setattr(Pipeline, "offer", flaky)
    agent = Agent(_broker_health(tmp_path, packages, mosquitto.port))
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        await agent.start()
        await asyncio.wait_for(agent.sources["broker"].subscribed.wait(), 30)
        for i in range(4):
            pub.publish("plant/m1", json.dumps({"vib": [float(i % 7)] * SIGNAL_WINDOW}), qos=1)
        await wait_for(lambda: _health(agent)["results"] >= 3, what="the windows after the failed item")
    finally:
        closed(pub)
        await agent.stop()
    assert agent.status()["sources"]["broker"]["silent_drops"]["item_failed"]["count"] == 1
    assert sum("failed in its readers" in r.getMessage() for r in caplog.records) == 1


async def test_a_fault_in_a_sources_own_reading_is_said_once_and_its_readings_resume(
    tmp_path, packages, mosquitto, caplog, monkeypatch
):
    """A fault inside a source's reading (a payload no check of its codec foresaw, a plug-in adapter's
    bug) once ended the source's reader for good: one log line, then no reading of any of its devices
    until a restart. It is said once with its traceback, counted as reader_failed, and the source is
    read on: the windows that follow are scored."""
    from devices.mqtt.client import MqttSource

    items, calls = MqttSource.items, [0]

    async def faulty(self):
        calls[0] += 1
        async for r in items(self):
            if calls[0] == 1:
                raise RuntimeError("a fault in the source's reading")
            yield r

    monkeypatch.setattr(MqttSource, "items", faulty)
    agent = Agent(_broker_health(tmp_path, packages, mosquitto.port))
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        await agent.start()
        await asyncio.wait_for(agent.sources["broker"].subscribed.wait(), 30)
        for i in range(6):
            pub.publish("plant/m1", json.dumps({"vib": [float(i % 7)] * SIGNAL_WINDOW}), qos=1)
            await asyncio.sleep(0.3)
        await wait_for(lambda: _health(agent)["results"] >= 3, what="the windows after the fault")
    finally:
        closed(pub)
        await agent.stop()
    assert calls[0] == 2  # read again after the fault
    assert agent.status()["sources"]["broker"]["silent_drops"]["reader_failed"]["count"] == 1
    assert sum("its readings failed" in r.getMessage() for r in caplog.records) == 1


def _health(agent) -> dict:
    return next(p for p in agent.status()["pipelines"] if p["pipeline"] == "health")


def _broker_health(tmp_path, packages, port: int):
    return parse_config(
        {
            "agent": {"id": "gw1", "data_dir": str(tmp_path / "data")},
            "trusted_keys": [str(packages["pub"])],
            "http": {"enabled": False},
            "sources": {
                "broker": {
                    "type": "mqtt",
                    "port": port,
                    "subscriptions": [{"topic": "plant/#", "json_mapping": {"values": {"vib": "vib"}}}],
                }
            },
            "models": {"health": {"package": str(packages["signal"]), "engine": "onnxruntime"}},
            "pipelines": [
                {
                    "name": "health",
                    "source": "broker",
                    "model": "health",
                    "window": {"waveform": "plant/m1/vib", "sample_rate_hz": SIGNAL_RATE_HZ},
                }
            ],
        }
    )
