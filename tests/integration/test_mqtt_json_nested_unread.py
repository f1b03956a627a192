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


async def test_an_array_of_readings_is_told_the_records_mapping_that_reads_each_by_its_name(mosquitto):
    """A gateway's readings as an array of records (``{"readings": [{"name": "temp", "value": 21.5}, ...]}``; EdgeX
    Foundry's events, ``resourceName`` and the value as text) were told a path to an item, ``values:
    {readings.0.value: readings_0_value}``: followed, that tag read whichever record came first, the humidity under
    it once a message held the humidity alone (a gateway sending changed readings only), GOOD. The hint now names the
    ``records`` mapping, which reads each record by its name whatever their order."""
    generic = [
        ("gw/1", json.dumps({"readings": [{"name": "temp", "value": 21.5}, {"name": "hum", "value": 40}]})),
        ("end", json.dumps({"end": 1})),
    ]
    edgex_event = {
        "apiVersion": "v2",
        "deviceName": "dev1",
        "readings": [
            {"id": "6f1e", "deviceName": "dev1", "resourceName": "Temperature", "value": "21.5"},
            {"id": "7a2b", "deviceName": "dev1", "resourceName": "Humidity", "value": "40"},
        ],
    }
    edgex = [("edgex/dev1", json.dumps({"event": edgex_event})), ("end", json.dumps({"end": 1}))]
    _, src = await read_published(mosquitto.port, [{"topic": "#"}], generic, "end/end")
    said = src.notices.messages["nested_field_unread"]
    assert "json_mapping.records: {array: readings, name: name, value: value}" in said, said
    assert "values: {readings.0.value" not in said and "numbers_from_text" not in said, said
    assert "records: {array: readings" in src.notices.messages["no_numeric_field"]
    _, src = await read_published(mosquitto.port, [{"topic": "#"}], edgex, "end/end")
    said = src.notices.messages["nested_field_unread"]
    assert (
        "json_mapping.records: {array: event.readings, name: resourceName, value: value} and numbers_from_text: true"
        in said
    ), said
    # the mapping told reads each record by its name, whatever the order and however many a message holds
    mapping = {"records": {"array": "readings", "name": "name", "value": "value"}}
    changed_only = json.dumps({"readings": [{"name": "hum", "value": 41}]})
    got, src = await read_published(
        mosquitto.port,
        [{"topic": "gw/#", "json_mapping": mapping}, {"topic": "end"}],
        [generic[0], ("gw/1", changed_only), *generic[1:]],
        "end/end",
    )
    assert [(r.tag, r.value) for r in got] == [
        ("gw/1/temp", 21.5),
        ("gw/1/hum", 40),
        ("gw/1/hum", 41),
        ("end/end", 1),
    ]
