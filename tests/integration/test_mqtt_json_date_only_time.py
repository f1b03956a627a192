"""MqttSource against a real Mosquitto, an ISO 8601 time that is a date alone (``"2026-12-04"``, a daily export's):
``fromisoformat`` reads it as midnight, and the reading was stamped hours off, silently. A date is no instant: it is
refused as ``bad_timestamp``, naming the topic and the field, as any time the codec cannot read is; a date and time
is read as before, and a record's date alone skips that record only."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from tests.support.mqtt_read import read_published


async def test_a_date_without_a_time_of_day_is_refused_naming_topic_and_field_not_read_as_midnight(mosquitto):
    now = datetime.fromtimestamp(round(time.time()) - 60, UTC)
    day, at = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m-%dT%H:%M:%SZ")
    iso = {"timestamp_field": "time", "timestamp_format": "iso8601"}
    subs = [
        {"topic": "iso/#", "json_mapping": iso},
        {
            "topic": "rec/#",
            "json_mapping": {"records": {"array": "values"}, "timestamp_format": "iso8601"},
        },
    ]
    messages = [
        ("iso/day", json.dumps({"time": day, "v": 1})),
        ("iso/basic", json.dumps({"time": now.strftime("%Y%m%d"), "v": 2})),
        ("iso/zoned", json.dumps({"time": day + "Z", "v": 3})),
        ("rec/g", json.dumps({"values": [{"id": "a", "v": 4, "t": day}, {"id": "b", "v": 5, "t": at}]})),
        ("iso/end", json.dumps({"time": at, "end": 1})),
    ]
    errors: list[str] = []
    got, src = await read_published(mosquitto.port, subs, messages, "iso/end/end", errors=errors)
    assert [(r.tag, r.value, r.timestamp) for r in got] == [
        ("rec/g/b", 5, now.timestamp()),
        ("iso/end/end", 1, now.timestamp()),
    ]
    assert src.stats.errors_by_reason == {"bad_timestamp": 4}
    assert all("a date without a time of day" in e for e in errors)
    assert f"topic 'iso/day': timestamp 'time'='{day}'" in errors[0]
    assert "topic 'rec/g'" in errors[3] and repr(day) in errors[3]
