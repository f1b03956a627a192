"""MqttSource against a real Mosquitto, ISO 8601 times with a UTC offset no time zone has: ``+15:00`` (zones run from
-12:00 to +14:00) or one with seconds (``+05:30:15``), which ``fromisoformat`` takes as stated (any offset under 24
hours), so a typo or a garbled field stamped the reading up to a day off, silently. Each is ``bad_timestamp``,
counted, said naming the topic and the offset, and skipped, as any malformed time; the zones' own extremes
(``+14:00``, ``-12:00``) and a quarter-hour one (``+05:45``) are read as before."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone

from tests.support.mqtt_read import read_published


async def test_a_utc_offset_no_time_zone_has_is_refused_not_read_as_stated(mosquitto):
    now = datetime.fromtimestamp(round(time.time()) - 60, UTC)

    def at(hours: float, text: str) -> str:
        return now.astimezone(timezone(timedelta(hours=hours))).strftime("%Y-%m-%dT%H:%M:%S") + text

    iso = {"timestamp_field": "time", "timestamp_format": "iso8601"}
    messages = [
        ("iso/east", json.dumps({"time": at(15, "+15:00"), "v": 1})),
        ("iso/west", json.dumps({"time": at(-13, "-13:00"), "v": 2})),
        ("iso/seconds", json.dumps({"time": now.strftime("%Y-%m-%dT%H:%M:%S") + "+00:00:30", "v": 3})),
        ("iso/kiribati", json.dumps({"time": at(14, "+14:00"), "v": 4})),
        ("iso/baker", json.dumps({"time": at(-12, "-12:00"), "v": 5})),
        ("iso/nepal", json.dumps({"time": at(5.75, "+05:45"), "end": 6})),
    ]
    errors: list[str] = []
    got, src = await read_published(
        mosquitto.port, [{"topic": "iso/#", "json_mapping": iso}], messages, "iso/nepal/end", errors=errors
    )
    assert [(r.tag, r.timestamp) for r in got] == [
        ("iso/kiribati/v", now.timestamp()),
        ("iso/baker/v", now.timestamp()),
        ("iso/nepal/end", now.timestamp()),
    ]
    assert src.stats.errors_by_reason == {"bad_timestamp": 3}, errors
    assert "topic 'iso/east'" in errors[0] and "UTC offset +15:00 is no time zone's" in errors[0], errors[0]
    assert "UTC offset -13:00 is no time zone's (they are -12:00..+14:00)" in errors[1], errors[1]
    assert "UTC offset +00:00:30 is no time zone's (they are whole minutes)" in errors[2], errors[2]
