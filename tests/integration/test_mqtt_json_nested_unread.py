"""MqttSource against a real Mosquitto, JSON read for every number (no ``values``) from devices that nest their
numbers: Shelly Gen2's status (``"temperature": {"tC": 41.6}``, ``"aenergy": {"total": ...}``), Tasmota's
``tele/<dev>/SENSOR`` (``{"Time": ..., "ENERGY": {"Power": 45, ...}}``), a reading's array of phases. Such a field
is read only by a path in ``json_mapping.values``; unmapped, it was dropped without a word, and a message holding
nothing else was said to hold its numbers as text. Each is now counted and said once, naming the topic, the
fields and a path that reads one."""

from __future__ import annotations

import json
import time

from tests.support.mqtt_read import read_published


async def test_objects_and_arrays_unread_for_every_number_are_counted_and_named_with_a_path(mosquitto):
    t0 = round(time.time()) - 60
    subs = [{"topic": "timed/#", "json_mapping": {"timestamp_field": "meta.ts"}}, {"topic": "#"}]
    shelly = {
        "ts": t0,
        "id": 0,
        "apower": 5.5,
        "temperature": {"tC": 41.6, "tF": 106.9},
        "aenergy": {"total": 12.5, "by_minute": [1.0, 2.0, 3.0]},
        "voltage": [230.1, 229.0, 231.2],
    }
    tasmota = {"ts": t0, "ENERGY": {"TotalStartTime": "2026-01-01T00:00:00", "Total": 12.3, "Power": 45}}
    messages = [
        ("shellies/plug1/status/switch:0", json.dumps(shelly)),
        ("tele/pm1/SENSOR", json.dumps(tasmota)),
        # the object holding the message's time (timestamp_field: meta.ts) is read for it: not said unread
        ("timed/1", json.dumps({"meta": {"ts": t0}, "v": 2})),
        ("end", json.dumps({"ts": t0, "end": 1})),
    ]
    got, src = await read_published(mosquitto.port, subs, messages, "end/end")
    assert [(r.tag, r.value) for r in got] == [
        ("shellies/plug1/status/switch:0/id", 0),
        ("shellies/plug1/status/switch:0/apower", 5.5),
        ("timed/1/v", 2),
        ("end/end", 1),
    ]
    # every such field of every message counted; the first message's said in one line
    assert src.notices.counts["nested_field_unread"] == 4
    said = src.notices.messages["nested_field_unread"]
    assert "'shellies/plug1/status/switch:0'" in said
    assert "'temperature' (an object of 2 fields)" in said and "'voltage' (an array of 3 items)" in said
    assert "json_mapping.values" in said and "temperature.tC" in said
    # the message with nothing else is not said to hold its numbers as text
    no_number = src.notices.messages["no_numeric_field"]
    assert "'tele/pm1/SENSOR'" in no_number and "'ENERGY'" in no_number and "ENERGY.Total" in no_number
    assert "numbers_from_text" not in no_number
    assert src.stats.errors_by_reason == {}
