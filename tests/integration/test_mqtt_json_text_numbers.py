"""MqttSource against a real Mosquitto: ``json_mapping.numbers_from_text`` on text that only looks like a number.
A quoted value with a separator character around it (JSON's ``\\u001c``-``\\u001f``, which a regular
expression's ``\\s`` takes for a space and Python's ``int()``/``float()`` do not) stays text, and the message's
other values are read, not the whole message lost as ``decode_failed``."""

from __future__ import annotations

import asyncio
import json
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings


async def test_a_quoted_number_with_a_separator_character_stays_text_and_the_others_are_read(mosquitto):
    """``"\\u001c21.5"`` matched numbers_from_text's pattern, then ``int()``/``float()`` raised ValueError out of
    the codec: the whole message (its other fields, every item of a batch) was skipped as decode_failed with a
    traceback. Such a value is text, as any other text that writes no number: unmapped, it gives no reading;
    mapped, a text reading; the message's numbers are read, in a batch every item's."""
    t0 = round(time.time()) - 60
    subs = [
        {"topic": "quoted/#", "json_mapping": {"numbers_from_text": True}},
        {"topic": "mapped/#", "json_mapping": {"numbers_from_text": True, "values": {"a": "a", "b": "b"}}},
    ]
    src = MqttSource("mq", MqttSettings(port=mosquitto.port, subscriptions=subs))
    await src.start()
    async with asyncio.timeout(5):
        await src.connected.wait()
        await src.subscribed.wait()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port, 30)
    pub.loop_start()
    got: list = []
    try:
        pub.publish("quoted/m1", json.dumps({"ts": t0, "a": "\x1c21.5", "b": "7"}), qos=1)
        pub.publish("quoted/m2", json.dumps([{"ts": t0, "a": "3\x1f"}, {"ts": t0 + 1, "b": "4"}]), qos=1)
        pub.publish("mapped/m3", json.dumps({"ts": t0, "a": "\x1e1", "b": " 2.5 "}), qos=1)
        pub.publish("quoted/end", json.dumps({"ts": t0, "end": 1}), qos=1)
        async with asyncio.timeout(5):
            async for r in src.items():
                got.append(r)
                if r.tag == "quoted/end/end":
                    break
    finally:
        pub.loop_stop()
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [
        ("quoted/m1/b", 7),
        ("quoted/m2/b", 4),
        ("mapped/m3/a", "\x1e1"),
        ("mapped/m3/b", 2.5),
        ("quoted/end/end", 1),
    ]
    assert src.stats.errors_by_reason == {}
