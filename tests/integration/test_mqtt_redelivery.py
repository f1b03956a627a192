"""One MQTT message a real Mosquitto delivers more than once, passed on once: QoS 1 messages sent again
after the gateway's connection was cut (persistent session), and MQTT 5's copies of a message matching two
subscriptions; a value legitimately sent again is never dropped."""

from __future__ import annotations

import asyncio
import json
import struct
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from protocols import sparkplug as sp
from tests.integration.test_mqtt_adapter import _pb_metric
from tests.support.tcp_cut import CutRelay

PART = json.dumps({"part": 1})  # a parts counter's event: no time of its own, the same every time


async def test_messages_redelivered_after_a_cut_connection_are_passed_on_once(mosquitto) -> None:
    """The broker delivers 5 part events; their PUBACKs are lost with the link (a switch restarting), so
    after the reconnect it sends them again flagged DUP. Before, each was passed on twice (15 parts counted
    for 10 produced). The same payload sent again by the device (3 before, 1 while away, 1 after) is a new
    part each time and is kept."""
    relay = CutRelay(mosquitto.port)
    settings = MqttSettings(
        port=relay.port,
        client_id="gw-redelivery",
        persistent_session=True,
        reconnect_min_s=0.1,
        reconnect_max_s=1.0,
        subscriptions=[{"topic": "line/#", "qos": 1}],
    )
    src = MqttSource("mq", settings)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="device")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    parts: list[float] = []
    arrived = asyncio.Event()

    async def read() -> None:
        async for r in src.items():
            if r.tag == "line/end/end":
                arrived.set()
            elif r.tag == "line/parts/part":
                parts.append(r.value)
                if len(parts) in (3, 8):
                    arrived.set()

    async def until_arrived() -> None:
        await asyncio.wait([asyncio.ensure_future(arrived.wait())], timeout=8.0)
        assert arrived.is_set(), (len(parts), src.stats.errors_by_reason, src.notices.status())
        arrived.clear()

    def publish(n: int, payload: str = PART, topic: str = "line/parts") -> None:
        for _ in range(n):
            pub.publish(topic, payload, qos=1).wait_for_publish(5)

    reader = asyncio.create_task(read())
    try:
        await src.start()
        await asyncio.wait([asyncio.ensure_future(src.subscribed.wait())], timeout=5.0)
        publish(3)
        await until_arrived()
        relay.hold_upstream()  # the link dies: the gateway's PUBACKs never reach the broker
        publish(5)
        await until_arrived()  # all 8 passed on, 5 of them unacknowledged at the broker
        src.subscribed.clear()
        relay.cut()
        publish(1)  # while the gateway is away: queued for its session
        await asyncio.wait([asyncio.ensure_future(src.subscribed.wait())], timeout=8.0)
        publish(1)
        publish(1, json.dumps({"end": 1}), "line/end")  # after every redelivery (one session, in order)
        await until_arrived()
    finally:
        reader.cancel()
        pub.disconnect()  # before loop_stop: paho's thread ends now, not at its next 1-s select
        pub.loop_stop()
        await src.stop()
        relay.close()
    assert relay.connections == 2  # the cut was a reconnect of the same session
    assert len(parts) == 10, (len(parts), src.notices.status())
    # 5, and any of the first 3 whose PUBACK was still on its way when the link died
    assert 5 <= src.notices.counts.get("redelivered", 0) <= 8, src.notices.status()


async def test_a_message_matching_two_mqtt5_subscriptions_is_read_once(mosquitto) -> None:
    """An MQTT 5 broker sends a message once per subscription it matches (``line/#`` and ``line/+/temp``).
    Before, each copy was read: every temperature came twice. Each subscription now has its own
    Subscription Identifier and only the first matching subscription's copy is read (the one whose
    settings decode it); a message matching one subscription is read as before."""
    settings = MqttSettings(
        port=mosquitto.port,
        protocol="mqtt5",
        subscriptions=[{"topic": "line/#", "qos": 1}, {"topic": "line/+/temp", "qos": 0}],
    )
    src = MqttSource("mq", settings)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="device")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    got: list[str] = []

    async def read() -> None:
        async for r in src.items():
            got.append(r.tag)
            if r.tag == "line/end/end":
                return

    try:
        await src.start()
        await asyncio.wait([asyncio.ensure_future(src.subscribed.wait())], timeout=5.0)
        for topic, body in (
            ("line/a/temp", {"t": 20}),
            ("line/b/hum", {"h": 40}),
            ("line/a/temp", {"t": 20}),
        ):
            pub.publish(topic, json.dumps(body), qos=1).wait_for_publish(5)
        pub.publish("line/end", json.dumps({"end": 1}), qos=1).wait_for_publish(5)
        reader = asyncio.create_task(read())
        await asyncio.wait([reader], timeout=8.0)
        reader.cancel()
    finally:
        pub.disconnect()
        pub.loop_stop()
        await src.stop()
    assert got == ["line/a/temp/t", "line/b/hum/h", "line/a/temp/t", "line/end/end"], got
    assert src.notices.counts.get("overlapping_copy") == 2


async def test_a_sparkplug_rebirth_does_not_pass_the_last_waveform_on_again(mosquitto) -> None:
    """A birth answering a rebirth (the host asks one at every reconnect and seq gap) carries each metric's
    last value with its own time. Before, a FloatArray waveform came twice, for a pipeline to score the same
    samples twice or splice into its next window. The repeat is dropped (``repeated_waveform``); a scalar's
    value still comes (a state), and the node's next waveform too."""
    D = sp.DataType
    t0 = int(time.time() * 1000) - 1000

    def birth(seq: int, ts: int) -> bytes:
        pb = sp._pb().Payload()
        pb.timestamp, pb.seq = ts, seq
        _pb_metric(pb, "bdSeq", datatype=D.INT64, long_value=0)
        _pb_metric(pb, "Vib", alias=1, datatype=30, bytes_value=struct.pack("<4f", 1, 2, 3, 4), timestamp=t0)
        _pb_metric(pb, "Temp", alias=2, datatype=D.DOUBLE, double_value=20.0, timestamp=t0)
        return pb.SerializeToString()

    data = sp._pb().Payload()
    data.timestamp, data.seq = t0 + 900, 1
    _pb_metric(data, alias=1, bytes_value=struct.pack("<4f", 5, 6, 7, 8), timestamp=t0 + 900)
    src = MqttSource(
        "mq",
        MqttSettings(port=mosquitto.port, subscriptions=[{"topic": "spBv1.0/#", "codec": "sparkplug_b"}]),
    )
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="node")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    got: list[tuple[str, object]] = []

    async def read() -> None:
        async for r in src.items():
            got.append((r.tag, r.value.tolist() if hasattr(r.value, "tolist") else r.value))
            if r.value is not None and hasattr(r.value, "tolist") and r.value[0] == 5:
                return

    try:
        await src.start()
        await asyncio.wait([asyncio.ensure_future(src.subscribed.wait())], timeout=5.0)
        # the second birth answers a rebirth: the same last values, each with its own time
        for kind, body in (("NBIRTH", birth(0, t0)), ("NBIRTH", birth(0, t0 + 500)), ("NDATA", data)):
            pub.publish(
                f"spBv1.0/g/{kind}/edge", body if isinstance(body, bytes) else body.SerializeToString(), qos=1
            )
        reader = asyncio.create_task(read())
        await asyncio.wait([reader], timeout=8.0)
        reader.cancel()
    finally:
        pub.disconnect()
        pub.loop_stop()
        await src.stop()
    assert got == [
        ("edge/Vib", [1.0, 2.0, 3.0, 4.0]),
        ("edge/Temp", 20.0),
        ("edge/Temp", 20.0),
        ("edge/Vib", [5.0, 6.0, 7.0, 8.0]),
    ], got
    assert src.notices.counts.get("repeated_waveform") == 1
