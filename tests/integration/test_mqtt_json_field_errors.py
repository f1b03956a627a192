"""MqttSource against a real Mosquitto: a bad field, record or item of a JSON message is counted and skipped, its
message's others read; its error names the topic as a message's own error does. Under a wildcard subscription
(``plant/#``, hundreds of devices) the field alone (``field 'temp' is absent``) did not say which device sent it."""

from __future__ import annotations

import json
import time

from tests.support.mqtt_read import read_published


async def test_an_error_of_one_field_record_or_item_names_the_topic_and_the_field(mosquitto):
    t0 = round(time.time()) - 60
    subs = [
        {"topic": "plant/+/mapped", "json_mapping": {"values": {"temp": "temp", "rpm": "rpm"}}},
        {"topic": "plant/+/records", "json_mapping": {"records": {"array": "values"}}},
        {"topic": "plant/#"},
    ]
    errors: list[str] = []
    records = {"ts": t0, "values": [{"id": "a", "v": 1}, {"v": 2}]}
    messages = [
        ("plant/dev7/mapped", json.dumps({"ts": t0, "rpm": 1500})),
        ("plant/dev8/records", json.dumps(records)),
        ("plant/dev9/batch", json.dumps([{"ts": t0, "x": 1}, 5])),
        ("plant/dev9/nan", '{"ts": %d, "y": NaN}' % t0),  # noqa: UP031
        ("plant/end", json.dumps({"ts": t0, "end": 1})),
    ]
    got, src = await read_published(mosquitto.port, subs, messages, "plant/end/end", errors=errors)
    assert [r.tag for r in got] == [
        "plant/dev7/mapped/rpm",
        "plant/dev8/records/a",
        "plant/dev9/batch/x",
        "plant/dev9/nan/y",
        "plant/end/end",
    ]
    assert errors == [
        "missing_field: topic 'plant/dev7/mapped': field 'temp' is absent",
        "missing_field: topic 'plant/dev8/records': record 1 has no text 'id' (the tag name)",
        "wrong_type: topic 'plant/dev9/batch': item 1 of the array: a JSON number; expected an object",
        "non_finite: topic 'plant/dev9/nan': field 'y' is nan; passed on as BAD",
    ]


async def test_a_sparkplug_message_on_a_json_subscription_is_said_to_want_the_sparkplug_codec(mosquitto):
    """A JSON subscription to ``#`` on a plant broker that also carries Sparkplug B gets its protobuf payloads: each
    was ``malformed_json`` quoting binary bytes, with nothing saying what they were. The error now says the topic
    is Sparkplug B's and names the setting that reads it (``codec: sparkplug_b``) or the filter to narrow; a
    Sparkplug host's STATE, JSON itself, is read as any JSON message."""
    from protocols import sparkplug as sp

    ndata = sp.encode(sp.Payload(int(time.time() * 1000), 1, [sp.Metric("a", 1, sp.DataType.DOUBLE, 1.5)]))
    messages = [("spBv1.0/line1/NDATA/plc1", ndata), ("end", json.dumps({"end": 1}))]
    _, src = await read_published(mosquitto.port, [{"topic": "#"}], messages, "end/end")
    assert src.stats.errors_by_reason == {"malformed_json": 1}
    said = src.stats.last_error or ""
    assert "'spBv1.0/line1/NDATA/plc1'" in said and "Sparkplug B" in said and "codec: sparkplug_b" in said
