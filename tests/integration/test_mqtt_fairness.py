"""One MQTT source, one topic flooded at full speed, another topic quiet (a temperature every 10 s, an alarm
bit): the quiet topic's readings all reach the agent, ahead of the flood's backlog, and the flood's excess is
dropped and counted against the flooding topic; plain JSON and Sparkplug B. Real Mosquitto; the flooder is a
paho client publishing as fast as it can. The source's consumer (the agent's fan-out) is held while the
flood arrives, as a busy gateway's is, so that the hand-over queue is full and its content known."""

from __future__ import annotations

import asyncio
import json
import threading

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import Reading
from devices.mqtt.client import TAKE_MAX, MqttSource
from devices.mqtt.settings import MqttSettings
from protocols import sparkplug as sp
from tests.support.waits import until

QUEUE = 1000  # the source's queue_max_items
FLOOD = 5000  # messages the flooder sends


def _client(port: int) -> paho.Client:
    """A publisher whose CONNACK has been read. One that disconnected with the broker's CONNACK still unread
    in its socket was reset by the kernel (a close with unread data sends RST) and what it had not yet sent
    was thrown away: on a loaded machine the broker reads slowly, and half the flood never reached it."""
    c = paho.Client(CallbackAPIVersion.VERSION2)
    connected = threading.Event()
    c.on_connect = lambda *_: connected.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    if not connected.wait(60):
        c.loop_stop()
        raise AssertionError("no CONNACK from the broker after 60 s")
    return c


def _close(c: paho.Client) -> None:
    c.disconnect()  # after what it queued: its network thread writes that first
    c.loop_stop()


def _flood(port: int, topic: str | None, payloads: list, halfway: threading.Event | None = None) -> None:
    """Publish every payload on one topic (``topic`` None: ``payloads`` are (topic, payload) pairs) as fast as
    paho goes (QoS 0, one connection: in order)."""
    c = _client(port)
    try:
        for i, body in enumerate(payloads):
            if topic is None:
                c.publish(*body, qos=0)
            else:
                c.publish(topic, body, qos=0)
            if halfway is not None and i == len(payloads) // 2:
                halfway.set()
    finally:
        _close(c)


async def _flooded(
    port: int,
    subscriptions: list[dict],
    flood_topic: str,
    flood: list[bytes],
    first: list[tuple[str, bytes]],
    quiet: list[tuple[str, bytes]],
) -> MqttSource:
    """A source whose consumer is held while the quiet side sends ``first`` (a Sparkplug node's birth), the
    flooder sends ``flood``, and the quiet side its values: the first halfway through the flood, the others
    after it."""
    src = MqttSource("mq", MqttSettings(port=port, subscriptions=subscriptions, queue_max_items=QUEUE))
    await src.start()
    await until(lambda: src.subscribed.is_set(), what="the SUBACK")
    q = _client(port)
    try:
        for topic, body in first:
            q.publish(topic, body, qos=1).wait_for_publish(5)
        await until(lambda: src.stats.received == len(first), what="the quiet side's first messages")
        halfway = threading.Event()
        flooder = threading.Thread(target=_flood, args=(port, flood_topic, flood, halfway))
        flooder.start()
        await asyncio.to_thread(halfway.wait, 30)
        q.publish(*quiet[0], qos=1).wait_for_publish(5)
        await asyncio.to_thread(flooder.join, 60)
        n = len(first) + 1 + len(flood)
        await until(lambda: src.stats.received == n, what="the whole flood received")
        for topic, body in quiet[1:]:
            q.publish(topic, body, qos=1).wait_for_publish(5)
        n += len(quiet) - 1
        await until(lambda: src.stats.received == n, what="every message received")
    finally:
        _close(q)
    return src


async def _drain(src: MqttSource) -> list[Reading]:
    got: list[Reading] = []

    async def run() -> None:
        async for r in src.items():
            got.append(r)

    task = asyncio.create_task(run())
    await until(lambda: len(src._channel) == 0 and got, what="the queue taken")
    await asyncio.sleep(0.05)  # the last batch taken is read without suspending
    task.cancel()
    return got


def _dropped_against(src: MqttSource, topic: str, received: int) -> None:
    notes = src.notices.counts
    assert src.stats.dropped == received - QUEUE
    assert notes["queue_full"] == notes[f"queue_full:{topic}"] == received - QUEUE
    assert [k for k in notes if k.startswith("queue_full:")] == [f"queue_full:{topic}"]


async def test_a_flooded_json_topic_neither_drops_nor_holds_back_a_quiet_topics_readings(mosquitto):
    # The queue kept the quiet topic's messages when full (the flood's oldest went), but handed its whole
    # content over in arrival order: a quiet reading waited behind up to queue_max_items (10,000) of the
    # flood's, and one arriving just after a hand-over behind all of the next. Here the last two quiet values
    # came 998th and 999th of 1,000
    subs = [
        {"topic": "flood/#"},
        {
            "topic": "cell/temp",
            "qos": 1,
            "json_mapping": {"values": {"t": "Temp"}, "tag_prefix_topic": False},
        },
    ]

    flood = [json.dumps({"v": i}).encode() for i in range(FLOOD)]
    quiet = [("cell/temp", json.dumps({"t": 60 + k}).encode()) for k in range(3)]
    src = await _flooded(mosquitto.port, subs, "flood/node1", flood, [("cell/temp", b'{"t": 20}')], quiet)
    try:
        got = await _drain(src)
        temps = [(i, r.value) for i, r in enumerate(got) if r.tag == "Temp"]
        assert [v for _, v in temps] == [20, 60, 61, 62]  # every quiet value, in its order
        assert all(i < TAKE_MAX for i, _ in temps), temps  # in the first batch handed over
        assert len(got) == QUEUE
        _dropped_against(src, "flood/node1", FLOOD + 4)
    finally:
        await src.stop()


def _birth(metric: str, value: int) -> bytes:
    return sp.encode(
        sp.Payload(
            1,
            0,
            [sp.Metric("bdSeq", None, sp.DataType.INT64, 0), sp.Metric(metric, 1, sp.DataType.INT32, value)],
        )
    )


def _data(seq: int, value: int, ts: int) -> bytes:
    return sp.encode(sp.Payload(ts, seq % 256, [sp.Metric(None, 1, sp.DataType.INT32, value)]))


async def test_a_flooding_sparkplug_node_neither_drops_nor_holds_back_a_quiet_nodes_data(mosquitto):
    # The same for Sparkplug B: one edge node floods its NDATA, another node's birth and data come among
    # them. A node's messages stay in order (its seq runs across its births, data and devices' messages)
    subs = [{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}]
    first = [("spBv1.0/g/NBIRTH/press", _birth("Speed", 0)), ("spBv1.0/g/NBIRTH/oven", _birth("Temp", 20))]
    flood = [_data(i + 1, i, 10 + i) for i in range(FLOOD)]
    quiet = [("spBv1.0/g/NDATA/oven", _data(k + 1, 60 + k, 10 + k)) for k in range(3)]
    src = await _flooded(mosquitto.port, subs, "spBv1.0/g/NDATA/press", flood, first, quiet)
    try:
        got = await _drain(src)
        temps = [(i, r.value) for i, r in enumerate(got) if r.tag == "oven/Temp"]
        assert [v for _, v in temps] == [20, 60, 61, 62]
        assert all(i < TAKE_MAX for i, _ in temps), temps
        _dropped_against(src, "spBv1.0/g/NDATA/press", FLOOD + 5)
    finally:
        await src.stop()


async def test_a_flood_over_ever_new_topic_names_does_not_push_out_a_quiet_topics_message_at_once(mosquitto):
    # A device that puts a counter in its topic name floods with topics of one message each. The full queue
    # dropped the oldest message of the topic holding the most, and among topics of one message each that
    # was the newest: the next message of the flood pushed out the quiet topic's the moment it came (counted
    # against the quiet topic). Now the oldest of all goes, as from a plain queue: the quiet message stays
    # until queue_max_items messages have come after it
    subs = [
        {"topic": "flood/#"},
        {
            "topic": "cell/temp",
            "qos": 1,
            "json_mapping": {"values": {"t": "Temp"}, "tag_prefix_topic": False},
        },
    ]
    src = MqttSource("mq", MqttSettings(port=mosquitto.port, subscriptions=subs, queue_max_items=QUEUE))
    await src.start()
    try:
        await until(lambda: src.subscribed.is_set(), what="the SUBACK")
        body = b'{"v": 1}'
        await asyncio.to_thread(_flood, mosquitto.port, None, [(f"flood/{i}", body) for i in range(3000)])
        await until(lambda: src.stats.received == 3000, what="the flood received")
        q = _client(mosquitto.port)
        try:
            q.publish("cell/temp", b'{"t": 61}', qos=1).wait_for_publish(5)
        finally:
            _close(q)
        await until(lambda: src.stats.received == 3001, what="the quiet value received")
        await asyncio.to_thread(
            _flood, mosquitto.port, None, [(f"flood/n{i}", body) for i in range(QUEUE // 2)]
        )
        await until(lambda: src.stats.received == 3001 + QUEUE // 2, what="the rest of the flood received")
        got = await _drain(src)
        assert [r.value for r in got if r.tag == "Temp"] == [61]
        assert src.stats.dropped == 3001 + QUEUE // 2 - QUEUE
        assert "queue_full:cell/temp" not in src.notices.counts
    finally:
        await src.stop()


async def test_a_few_large_messages_over_queue_max_bytes_do_not_push_out_a_quiet_topics_readings(mosquitto):
    # queue_max_bytes reached, the queue dropped from the topic holding the most messages, not the most
    # bytes: a quiet topic with three small readings queued lost them to a topic sending a few large
    # messages (a camera's frames, a hostile client), counted against the quiet topic. The byte bound now
    # takes from the topic holding the most bytes, counted against it
    subs = [
        {"topic": "cam/#"},
        {
            "topic": "cell/temp",
            "qos": 1,
            "json_mapping": {"values": {"t": "Temp"}, "tag_prefix_topic": False},
        },
    ]
    settings = MqttSettings(port=mosquitto.port, subscriptions=subs, queue_max_bytes=64 * 1024)
    src = MqttSource("mq", settings)
    await src.start()
    try:
        await until(lambda: src.subscribed.is_set(), what="the SUBACK")
        q = _client(mosquitto.port)
        try:
            for k in range(3):
                q.publish("cell/temp", json.dumps({"t": 60 + k}).encode(), qos=1).wait_for_publish(5)
        finally:
            _close(q)
        await until(lambda: src.stats.received == 3, what="the quiet readings received")
        frames = [json.dumps({"v": i, "img": "x" * 20_000}).encode() for i in range(10)]
        await asyncio.to_thread(_flood, mosquitto.port, "cam/1", frames)
        await until(lambda: src.stats.received == 13, what="the frames received")
        got = await _drain(src)
        assert [r.value for r in got if r.tag == "Temp"] == [60, 61, 62]
        notes = src.notices.counts
        assert src.stats.dropped == notes["queue_full:cam/1"] == 7  # three frames fit in 64 KiB
        assert [k for k in notes if k.startswith("queue_full:")] == ["queue_full:cam/1"]
    finally:
        await src.stop()
