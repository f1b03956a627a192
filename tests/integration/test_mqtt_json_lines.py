"""MqttSource against a real Mosquitto, a payload of several JSON objects, one a line (JSON lines, as Logstash's
``json_lines`` codec and loggers flushing a buffer write it) or one after another: a batch, as an array of objects
is, each object read as a message of its own with its own time. Before, the whole payload was ``malformed_json``
("Extra data"), every sample in it lost."""

from __future__ import annotations

import asyncio
import json
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings


async def test_json_lines_and_concatenated_objects_are_a_batch_and_a_broken_line_is_counted_naming_it(
    mosquitto,
):
    t0 = round(time.time()) - 60
    subs = [{"topic": "lines/#"}, {"topic": "mapped/#", "json_mapping": {"values": {"m.v": "v"}}}]
    src = MqttSource("mq", MqttSettings(port=mosquitto.port, subscriptions=subs))
    await src.start()
    async with asyncio.timeout(5):
        await src.connected.wait()
        await src.subscribed.wait()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port, 30)
    pub.loop_start()
    got: list = []
    lines = "".join(json.dumps({"ts": t0 + i, "a": i}) + "\n" for i in range(3))
    glued = json.dumps({"ts": t0, "m": {"v": 1.5}}) + json.dumps({"ts": t0 + 1, "m": {"v": 2.5}})
    try:
        pub.publish("lines/ndjson", lines, qos=1)
        pub.publish("mapped/glued", glued, qos=1)
        pub.publish(
            "lines/bom", b"\xef\xbb\xbf" + lines.replace('"a"', '"f"').encode(), qos=1
        )  # Windows' UTF-8
        pub.publish("lines/crlf", f'{{"ts": {t0}, "b": 1}}\r\n{{"ts": {t0 + 1}, "b": 2}}', qos=1)
        # a broken line: counted, naming it; the payload's objects before it are read
        pub.publish("lines/broken", f'{{"ts": {t0}, "c": 1}}\n{{"ts": {t0 + 1}, "c": 2}}\n{{"ts": ', qos=1)
        # a line that is no object: counted, naming it, as an array's item is; the others read
        pub.publish("lines/number", f'{{"ts": {t0}, "d": 1}}\n7\n', qos=1)
        # one object and something after it is a broken payload, not JSON lines: refused whole, as before
        pub.publish("lines/junk", f'{{"ts": {t0}, "e": 1}}}}', qos=1)
        pub.publish("lines/end", json.dumps({"ts": t0, "end": 1}), qos=1)
        async with asyncio.timeout(5):
            async for r in src.items():
                got.append(r)
                if r.tag == "lines/end/end":
                    break
    finally:
        pub.disconnect()
        pub.loop_stop()
        await src.stop()
    assert [(r.tag, r.value, r.timestamp) for r in got] == [
        ("lines/ndjson/a", 0, t0),
        ("lines/ndjson/a", 1, t0 + 1),
        ("lines/ndjson/a", 2, t0 + 2),
        ("mapped/glued/v", 1.5, t0),
        ("mapped/glued/v", 2.5, t0 + 1),
        ("lines/bom/f", 0, t0),
        ("lines/bom/f", 1, t0 + 1),
        ("lines/bom/f", 2, t0 + 2),
        ("lines/crlf/b", 1, t0),
        ("lines/crlf/b", 2, t0 + 1),
        ("lines/broken/c", 1, t0),
        ("lines/broken/c", 2, t0 + 1),
        ("lines/number/d", 1, t0),
        ("lines/end/end", 1, t0),
    ]
    assert src.stats.errors_by_reason == {"malformed_json": 2, "wrong_type": 1}
    said = src.stats.last_error or ""
    assert "lines/junk" in said and "Extra data" in said
