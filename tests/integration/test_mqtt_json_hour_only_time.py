"""MqttSource against a real Mosquitto, an ISO 8601 time of the hour alone (``"2026-12-05T10"``: ISO 8601's reduced
precision, the whole hour from 10:00 to 11:00): ``fromisoformat`` reads it as 10:00:00, and a fraction there (``T10.5``,
half past ten) or after the minutes (``T10:30.5``, 10:30:30) as a fraction of a second, so the reading was stamped up
to an hour off, silently. docs/mqtt.md promises RFC 3339 times (hours, minutes and seconds) and refuses a date alone as
no instant: the hour alone is refused the same way, ``bad_timestamp`` naming the topic and the field; a time to the
minute (``T10:30``, JavaScript's and HTML's form) and a full one are read as before."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from tests.support.mqtt_read import read_published


async def test_a_time_of_the_hour_alone_is_refused_not_read_as_the_hours_start(mosquitto):
    now = datetime.fromtimestamp((round(time.time()) // 60 - 1) * 60, UTC)  # a whole minute, a minute ago
    hour, minute = now.strftime("%Y-%m-%dT%H"), now.strftime("%Y-%m-%dT%H:%M")
    iso = {"timestamp_field": "time", "timestamp_format": "iso8601"}
    subs = [
        {"topic": "iso/#", "json_mapping": iso},
        {"topic": "rec/#", "json_mapping": {"records": {"array": "values"}, "timestamp_format": "iso8601"}},
    ]
    messages = [
        ("iso/hour", json.dumps({"time": hour + "Z", "v": 1})),
        ("iso/space", json.dumps({"time": hour.replace("T", " "), "v": 2})),  # a space for the T, no zone
        ("iso/half", json.dumps({"time": hour + ".5+00:00", "v": 3})),  # half past: read as .5 s
        ("iso/minutes", json.dumps({"time": minute + ".5Z", "v": 4})),  # 30 s past: read as .5 s
        (
            "rec/g",
            json.dumps(
                {"values": [{"id": "a", "v": 5, "t": hour + "Z"}, {"id": "b", "v": 6, "t": minute + "Z"}]}
            ),
        ),
        ("iso/end", json.dumps({"time": minute + ":00Z", "end": 7})),
    ]
    errors: list[str] = []
    got, src = await read_published(mosquitto.port, subs, messages, "iso/end/end", errors=errors)
    assert [(r.tag, r.value, r.timestamp) for r in got] == [
        ("rec/g/b", 6, now.timestamp()),  # to the minute: read as before
        ("iso/end/end", 7, now.timestamp()),
    ]
    assert src.stats.errors_by_reason == {"bad_timestamp": 5}
    assert f"topic 'iso/hour': timestamp 'time'='{hour}Z' is a time of the hour alone" in errors[0]
    assert "stamped up to an hour off; send hours, minutes and seconds" in errors[0]
    assert "hours and minutes with a fraction of a minute" in errors[3]
    assert "topic 'rec/g'" in errors[4] and "a time of the hour alone" in errors[4]
