"""MqttSource against a real Mosquitto, a records mapping's record time: a bad one is refused naming the field the
mapping reads it from (``records.timestamp``) and the record, not the codec's inner name ``'t'``; a device sending
one record per message with its time as ISO 8601 text is told the records mapping with the ``timestamp_format``
that reads that time, and the mapping told reads it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from tests.support.mqtt_read import read_published

END = ("end", json.dumps({"end": 1}))


async def test_a_records_bad_time_is_refused_naming_the_field_the_mapping_reads_it_from(mosquitto):
    """A record's time as ISO text where the mapping reads epoch seconds, and a record's time that is no time: each
    was refused as "timestamp 't' ...", a field neither the mapping nor the payload has. Now the error names the
    record and its field as written (``time``; ``Value.SourceTimestamp``, a dotted path), and the hint to read it."""
    subs = [
        {
            "topic": "gw/#",
            "json_mapping": {"records": {"array": "values", "name": "id", "value": "v", "timestamp": "time"}},
        },
        {
            "topic": "azure/#",
            "json_mapping": {
                "records": {
                    "array": "",
                    "name": "NodeId",
                    "value": "Value.Value",
                    "timestamp": "Value.SourceTimestamp",
                },
                "timestamp_format": "iso8601",
            },
        },
        {"topic": "end"},
    ]
    gw = {
        "values": [
            {"id": "temp", "v": 21.5, "time": "2026-12-05T10:15:00Z"},
            {"id": "hum", "v": 40, "time": 1764929700},
        ]
    }
    azure = [{"NodeId": "ns=2;s=Press", "Value": {"Value": 2.5, "SourceTimestamp": "soon"}}]
    errors: list[str] = []
    got, src = await read_published(
        mosquitto.port,
        subs,
        [("gw/1", json.dumps(gw)), ("azure/1", json.dumps(azure)), END],
        "end/end",
        errors=errors,
    )
    assert [(r.tag, r.value, r.timestamp) for r in got][:1] == [("gw/1/hum", 40, 1764929700.0)]
    assert src.stats.errors_by_reason == {"wrong_type": 1, "bad_timestamp": 1}, errors
    assert "'t'" not in " ".join(errors), errors
    assert "record 'temp': timestamp 'time' is str; expected a number (epoch_s)" in errors[0], errors
    assert "set timestamp_format: iso8601" in errors[0], errors
    assert "record 'ns=2;s=Press': timestamp 'Value.SourceTimestamp'='soon' is not ISO 8601" in errors[1], (
        errors
    )


async def test_one_record_per_message_with_an_iso_time_is_told_the_timestamp_format_that_reads_it(mosquitto):
    """A device publishing each reading as one record with its time as ISO 8601 text ({"name": "temp", "value": 21.5,
    "time": "2026-12-05T10:15:00Z"}), read for every number, is told the records mapping that reads it by its name.
    The hint left out timestamp_format: followed as told (the default epoch_s), every record was refused
    (wrong_type, expected a number). It now says json_mapping.timestamp_format: iso8601, and the mapping told reads
    each record under its name at its own time."""
    at = datetime(2026, 12, 5, 10, 15, tzinfo=UTC)
    messages = [
        ("dev/1", json.dumps({"name": "temp", "value": 21.5, "time": "2026-12-05T10:15:00Z"})),
        ("dev/1", json.dumps({"name": "hum", "value": 40, "time": "2026-12-05T10:15:01Z"})),
        END,
    ]
    got, src = await read_published(mosquitto.port, [{"topic": "#"}], messages, "end/end")
    said = src.notices.messages["text_field_unread"]
    told = "json_mapping.records: {array: '', name: name, value: value, timestamp: time}"
    assert f"{told} and json_mapping.timestamp_format: iso8601 (a record alone" in said, said

    mapping = {
        "records": {"array": "", "name": "name", "value": "value", "timestamp": "time"},
        "timestamp_format": "iso8601",
    }
    got, src = await read_published(
        mosquitto.port, [{"topic": "dev/#", "json_mapping": mapping}, {"topic": "end"}], messages, "end/end"
    )
    assert [(r.tag, r.value, r.timestamp) for r in got][:2] == [
        ("dev/1/temp", 21.5, at.timestamp()),
        ("dev/1/hum", 40, at.timestamp() + 1),
    ]
    assert src.stats.errors_by_reason == {}
