"""Sample rates stated by real peers: an asyncua server with a YArrayItemType-style waveform (XAxisDefinition
property) and a waveform with a vendor-style SampleRate node, and a Mosquitto broker carrying JSON waveforms
with ``sample_rate_hz``. The readings carry the stated rate; through the windower (no configured rate, a 10 kHz
model) the 25.6 kHz waveform is resampled, and when the rate node changes at run time its windows are skipped
with one event; a node whose XAxisDefinition is missing is one node error naming the fix."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import paho.mqtt.client as paho
from asyncua import ua
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import Quality, Reading
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from devices.opcua.client import OpcUaSource
from devices.opcua.settings import OpcUaSettings
from edge_agent.config import WindowSettings
from edge_agent.pipelines import Windower
from tests.support.peers import free_port, opcua_server

N = 2048


async def _server(port: int):
    srv, idx, obj = await opcua_server(port, "rates", "urn:test:rates", "Machine")
    x = await obj.add_variable(ua.NodeId("VibX", idx), "VibX", np.zeros(N).tolist(), ua.VariantType.Double)
    axis = ua.AxisInformation(
        EngineeringUnits=ua.EUInformation(UnitId=4403766, DisplayName=ua.LocalizedText("ms")),
        EURange=ua.Range(Low=0.0, High=(N - 1) / 25.6),
    )  # 2048 samples at 25.6 kHz
    x_axis = await x.add_property(
        ua.NodeId("VibX.XAxisDefinition", idx), ua.QualifiedName("XAxisDefinition", 0), axis
    )
    y = await obj.add_variable(ua.NodeId("VibY", idx), "VibY", np.zeros(N).tolist(), ua.VariantType.Double)
    rate = await obj.add_variable(
        ua.NodeId("VibY.SampleRate", idx), "SampleRate", 25600.0, ua.VariantType.Double
    )
    z = await obj.add_variable(ua.NodeId("VibZ", idx), "VibZ", np.zeros(N).tolist(), ua.VariantType.Double)
    # a second axis of the sensor whose rate VibY.SampleRate states too (short: only its rate is checked)
    w = await obj.add_variable(ua.NodeId("VibW", idx), "VibW", np.zeros(64).tolist(), ua.VariantType.Double)
    await srv.start()
    return srv, idx, (x, y, z, w), rate, x_axis


async def test_opcua_x_axis_and_rate_node_state_the_rate_and_a_change_skips_windows():
    port = free_port()
    srv, idx, nodes, rate_node, x_axis = await _server(port)
    rng = np.random.default_rng(0)

    async def produce():
        t = 0
        while True:
            for n in nodes:
                fs, k = 25600.0, (64 if n is nodes[3] else N)
                await n.write_value(np.sin(2 * np.pi * 250 * (t + np.arange(k)) / fs).tolist())
            t += N
            await asyncio.sleep(0.05 + 0.01 * rng.random())

    writer = asyncio.create_task(produce())
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{port}/rates/",
            publishing_interval_ms=20,
            connect_timeout_s=3,
            nodes=[
                {"node_id": f"ns={idx};s=VibX", "sample_rate_from": "x_axis"},
                {"node_id": f"ns={idx};s=VibY", "sample_rate_from": f"ns={idx};s=VibY.SampleRate"},
                {"node_id": f"ns={idx};s=VibZ", "sample_rate_from": "x_axis"},
                # one rate node for two axes, and read as a tag of its own too
                {"node_id": f"ns={idx};s=VibW", "sample_rate_from": f"ns={idx};s=VibY.SampleRate"},
                {"node_id": f"ns={idx};s=VibY.SampleRate", "tag": "rate"},
            ],
        ),
    )
    events: list[dict] = []
    win = Windower(
        "plc",
        WindowSettings(waveform="VibY"),
        2048,
        pipeline="pump",
        model_rate_hz=10000.0,
        on_event=events.append,
    )
    await src.start()
    try:
        got: dict[str, list[Reading]] = {}
        windows = []

        async def read(until) -> None:
            async for r in src.items():
                got.setdefault(r.tag, []).append(r)
                w = win.add(r)
                if w is not None:
                    windows.append(w)
                if until():
                    return

        await asyncio.wait_for(read(lambda: len(windows) >= 2 and "VibX" in got and "VibZ" in got), 15)
        assert got["VibX"][-1].rate_hz == 25600.0 and got["VibY"][-1].rate_hz == 25600.0
        assert got["VibZ"][-1].rate_hz is None  # no XAxisDefinition: read, without a rate
        assert "no XAxisDefinition property" in src.node_errors[f"ns={idx};s=VibZ sample_rate_from"]
        assert windows[-1].waveform.shape == (2048,) and [e["kind"] for e in events] == ["sample_rate_stated"]
        mag = np.abs(np.fft.rfft(windows[-1].waveform * np.hanning(2048)))
        assert abs(np.argmax(mag) * 10000 / 2048 - 250) < 6  # resampled, not relabelled

        await rate_node.write_value(51200.0)  # the sensor reconfigured at run time
        n = len(windows)
        await asyncio.wait_for(read(lambda: got["VibY"][-1].rate_hz == 51200.0 and win.rate_skipped >= 3), 15)
        assert len(windows) == n and events[-1]["kind"] == "sample_rate_changed"
        assert "51200 Hz" in events[-1]["message"] and "25600 Hz" in events[-1]["message"]
        # both axes that name the rate node take its change (only the last configured one did), and the
        # rate node read as a tag gives each value once (two monitored items on it gave each twice)
        await asyncio.wait_for(read(lambda: got["VibW"][-1].rate_hz == 51200.0), 15)
        assert [r.value for r in got["rate"]] == [25600.0, 51200.0]
        # a rate the server marks Uncertain (a last usable value: the device behind it away) states none
        uncertain = ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue)
        await rate_node.write_value(
            ua.DataValue(Value=ua.Variant(12800.0, ua.VariantType.Double), StatusCode=uncertain)
        )
        await asyncio.wait_for(read(lambda: got["rate"][-1].value == 12800.0), 15)
        m = len(got["VibY"])
        await asyncio.wait_for(read(lambda: len(got["VibY"]) > m + 1), 15)
        assert got["rate"][-1].quality is Quality.UNCERTAIN and got["VibY"][-1].rate_hz is None
        # the sensor behind VibX set to 51.2 kHz: the server changes its XAxisDefinition and flags the next
        # value SemanticsChanged (Part 4, 7.39.1); the axis was read at connect only, so the old rate stayed
        axis = await x_axis.read_value()
        axis.EURange = ua.Range(Low=0.0, High=(N - 1) / 51.2)
        await x_axis.write_value(axis)
        changed = ua.StatusCode(0x4000)  # Good, SemanticsChanged
        wave = ua.Variant(np.zeros(N).tolist(), ua.VariantType.Double)
        await nodes[0].write_value(ua.DataValue(Value=wave, StatusCode=changed))
        await asyncio.wait_for(read(lambda: got["VibX"][-1].rate_hz == 51200.0), 15)
        assert src.notices.counts.get("semantics_changed") == 1
    finally:
        writer.cancel()
        await src.stop()
        await srv.stop()


async def test_mqtt_json_waveforms_carry_the_rate_of_their_payload(mosquitto):
    src = MqttSource(
        "mq",
        MqttSettings(
            port=mosquitto.port,
            subscriptions=[
                {
                    "topic": "plant/pump/vib",
                    "json_mapping": {"values": {"v": "vib"}, "tag_prefix_topic": False},
                }
            ],
        ),
    )
    await src.start()
    async with asyncio.timeout(5):
        await src.connected.wait()
        await src.subscribed.wait()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port, 30)
    pub.loop_start()
    try:
        x = np.round(np.random.default_rng(1).normal(0, 1, 512), 5).tolist()
        pub.publish("plant/pump/vib", json.dumps({"v": x, "sample_rate_hz": 25600, "ts": 1.0}), qos=1)
        pub.publish("plant/pump/vib", json.dumps({"v": x, "ts": 2.0}), qos=1)
        pub.publish("plant/pump/vib", json.dumps({"v": x, "sample_rate_hz": "fast", "ts": 3.0}), qos=1)
        pub.publish("plant/pump/vib", json.dumps({"v": x, "rate_hz": 12800, "ts": 4.0}), qos=1)
        got = []

        async def run():
            async for r in src.items():
                got.append(r)
                if len(got) == 3:
                    return

        await asyncio.wait_for(run(), 10)
    finally:
        pub.loop_stop()
        await src.stop()
    assert [(r.tag, r.rate_hz) for r in got] == [("vib", 25600.0), ("vib", None), ("vib", 12800.0)]
    assert (
        src.stats.errors_by_reason.get("wrong_type") == 1
    )  # the unreadable rate: the message is refused, counted


async def test_an_x_axis_is_found_by_browse_on_a_server_without_translate_browse_paths(monkeypatch):
    """``sample_rate_from: x_axis`` asked the XAxisDefinition by TranslateBrowsePaths only: a server without that
    service (Part 7's Nano and Micro profiles) stated no rate. It is found as the write path finds a node's
    properties, by one Browse of the node, a HasProperty reference (a component of that name is no axis)."""
    from asyncua.server.internal_session import InternalSession

    from tests.support.plc import opcua_source, plc_server

    async def no_translate(self, params):
        raise ua.UaStatusCodeError(ua.StatusCodes.BadServiceUnsupported)

    monkeypatch.setattr(InternalSession, "translate_browsepaths_to_nodeids", no_translate)

    def axis(high_ms: float) -> ua.AxisInformation:
        eu = ua.EUInformation(UnitId=4403766, DisplayName=ua.LocalizedText("ms"))
        return ua.AxisInformation(EngineeringUnits=eu, EURange=ua.Range(Low=0.0, High=high_ms))

    async def build(_srv, idx: int, obj) -> dict:
        x = await obj.add_variable(
            ua.NodeId("VibX", idx), "VibX", np.zeros(N).tolist(), ua.VariantType.Double
        )
        name = ua.QualifiedName("XAxisDefinition", 0)
        await x.add_variable(ua.NodeId("VibX.Other", idx), name, axis((N - 1) / 10.0))  # listed first
        await x.add_property(ua.NodeId("VibX.XAxisDefinition", idx), name, axis((N - 1) / 25.6))
        return {"VibX": x}

    async with plc_server(build) as p:
        nodes = [{"node_id": p.node_id("VibX"), "sample_rate_from": "x_axis"}]
        async with opcua_source(p, nodes=nodes, publishing_interval_ms=20) as src:
            reading = await asyncio.wait_for(anext(src.items()), 10)
            assert reading.tag == "VibX" and reading.rate_hz == 25600.0, (reading.rate_hz, src.node_errors)
