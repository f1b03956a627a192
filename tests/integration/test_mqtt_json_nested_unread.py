"""MqttSource against a real Mosquitto, JSON read for every number (no ``values``) from devices that nest their
numbers: Shelly Gen2's status (``"temperature": {"tC": 41.6}``, ``"aenergy": {"total": ...}``), Tasmota's
``tele/<dev>/SENSOR`` (``{"Time": ..., "ENERGY": {"Power": 45, ...}}``), a reading's array of phases. Such a field
is read only by a path in ``json_mapping.values``; unmapped, it was dropped without a word, and a message holding
nothing else was said to hold its numbers as text. Each is now counted and said once, naming the topic, the
fields and a path that reads one."""

from __future__ import annotations

import json
import time

from protocols import json_codec
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


async def test_readings_of_mixed_types_are_told_the_records_mapping_too(mosquitto):
    """The records hint was given only when every value was a number, or every one a number written as text: an
    array holding a bool alarm, a failed sensor's null, a number beside a number as text, or EdgeX's Float64 and Bool
    readings ("2.150000e+01" beside "true") was told the path to an item, ``values: {readings.0.value: ...}``, which
    reads whichever record comes first, or no records hint at all. One number (or number as text) among them is
    enough; the mapping told reads each record, the alarm as a bool."""
    mixed = {
        "readings": [
            {"name": "temp", "value": 21.5},
            {"name": "alarm", "value": True},
            {"name": "hum", "value": None},
            {"name": "co2", "value": "410"},
        ]
    }
    edgex = {
        "apiVersion": "v2",
        "readings": [
            {"id": "u1", "resourceName": "Temperature", "valueType": "Float64", "value": "2.150000e+01"},
            {"id": "u2", "resourceName": "Running", "valueType": "Bool", "value": "true"},
        ],
    }
    end = ("end", json.dumps({"end": 1}))
    told = {}
    for label, payload in (("mixed", mixed), ("edgex", edgex)):
        _, src = await read_published(
            mosquitto.port, [{"topic": "#"}], [("gw/1", json.dumps(payload)), end], "end/end"
        )
        told[label] = src.notices.messages["nested_field_unread"]
    # (a JSON number among them: numbers_from_text is not told, it would read a text "0012" beside them as 12)
    assert "json_mapping.records: {array: readings, name: name, value: value} (a path" in told["mixed"], told
    assert (
        "json_mapping.records: {array: readings, name: resourceName, value: value} and numbers_from_text: true"
        in told["edgex"]
    ), told
    assert not any("readings.0.value:" in said for said in told.values()), told
    mapping = {"records": {"array": "readings", "name": "name", "value": "value"}, "numbers_from_text": True}
    got, src = await read_published(
        mosquitto.port,
        [{"topic": "gw/#", "json_mapping": mapping}, {"topic": "end"}],
        [("gw/1", json.dumps(mixed)), end],
        "end/end",
    )
    assert [(r.tag, r.value) for r in got] == [
        ("gw/1/temp", 21.5),
        ("gw/1/alarm", True),
        ("gw/1/co2", 410),
        ("end/end", 1),
    ]


async def test_records_are_told_the_name_key_that_tells_them_apart(mosquitto):
    """The name key was taken by a fixed order: records naming their device in "name" and their reading in "tag"
    (``[{"name": "plc1", "tag": "temp", ...}, {"name": "plc1", "tag": "hum", ...}]``) were told ``name: name``;
    followed, both values were one tag, ``gw/1/plc1``, 21.5 then 40, GOOD. The key told is the first whose texts
    differ across the records; one tag's history (the same name in each) keeps its name key."""
    plc = {
        "readings": [
            {"name": "plc1", "tag": "temp", "value": 21.5},
            {"name": "plc1", "tag": "hum", "value": 40},
        ]
    }
    history = {
        "readings": [
            {"name": "temp", "tag": "t1", "value": 21.5},
            {"name": "temp", "tag": "t1", "value": 21.6},
        ]
    }
    end = ("end", json.dumps({"end": 1}))
    _, src = await read_published(
        mosquitto.port, [{"topic": "#"}], [("gw/1", json.dumps(plc)), end], "end/end"
    )
    said = src.notices.messages["nested_field_unread"]
    assert "json_mapping.records: {array: readings, name: tag, value: value}" in said, said
    _, src = await read_published(
        mosquitto.port, [{"topic": "#"}], [("gw/1", json.dumps(history)), end], "end/end"
    )
    said = src.notices.messages["nested_field_unread"]
    assert "json_mapping.records: {array: readings, name: name, value: value}" in said, said
    mapping = {"records": {"array": "readings", "name": "tag", "value": "value"}}
    got, _ = await read_published(
        mosquitto.port,
        [{"topic": "gw/#", "json_mapping": mapping}, {"topic": "end"}],
        [("gw/1", json.dumps(plc)), end],
        "end/end",
    )
    assert [(r.tag, r.value) for r in got] == [("gw/1/temp", 21.5), ("gw/1/hum", 40), ("end/end", 1)]


async def test_the_hint_of_a_message_of_many_nested_fields_is_built_once_looking_in_a_few(
    mosquitto, monkeypatch
):
    """The hint of fields holding objects or arrays looked in every top-level field for a path and an array of
    records, on the agent's loop, and the ``no_numeric_field`` line built it again for every message that had no
    other number, said or not: a message of 100,000 such fields (4 MB) held the loop 1.8 s each time (every other
    source, the status page, the uplink waited). It is built once per source, looking in the first
    ``SEARCHED`` fields; every message and field is still counted."""
    built: list[int] = []
    looked: list[str] = []
    hint, records_in, number_path = (
        json_codec.nested_fields_hint,
        json_codec._records_in,
        json_codec._number_path,
    )

    def counted_hint(fields, *numbers):
        built.append(len(fields))
        return hint(fields, *numbers)

    def counted_records_in(path, v, depth=0, *budget):
        if not depth:
            looked.append(path)
        return records_in(path, v, depth, *budget)

    def counted_number_path(path, v, depth=0, *budget):
        if not depth:
            looked.append(path)
        return number_path(path, v, depth, *budget)

    monkeypatch.setattr(json_codec, "nested_fields_hint", counted_hint)
    monkeypatch.setattr(json_codec, "_records_in", counted_records_in)
    monkeypatch.setattr(json_codec, "_number_path", counted_number_path)
    many = json.dumps({f"f{i}": [{"name": "a", "value": "x"}] for i in range(2_000)})
    messages = [("gw/1", many), ("gw/1", many), ("gw/2", many), ("end", json.dumps({"end": 1}))]
    _, src = await read_published(mosquitto.port, [{"topic": "#"}], messages, "end/end")
    assert src.notices.counts["no_numeric_field"] == 3 and src.notices.counts["nested_field_unread"] == 6_000
    said = src.notices.messages["no_numeric_field"]
    assert said.startswith("mqtt source 'mq': topic 'gw/1': a JSON message gave no reading"), said
    assert "2000 fields holding objects or arrays, 'f0' (an array of 1 items)" in said, said
    assert built == [2_000]  # once, for both lines of the first message
    assert len(looked) <= 2 * json_codec.SEARCHED, len(looked)


async def test_the_records_hint_says_the_top_level_numbers_a_records_mapping_would_not_read(mosquitto):
    """A message holding top-level numbers beside its array of records (a sensor's battery and signal beside its
    readings) was told the records mapping alone: followed, the battery and the signal were read no more, unsaid
    (a mapping of records reads no top-level value, and records and values do not go together). The hint names
    them."""
    message = {
        "battery_pct": 87,
        "rssi_dbm": -70,
        "readings": [{"name": "temp", "value": 21.5}, {"name": "hum", "value": 40}],
    }
    got, src = await read_published(
        mosquitto.port,
        [{"topic": "#"}],
        [("gw/1", json.dumps(message)), ("end", json.dumps({"end": 1}))],
        "end/end",
    )
    assert [(r.tag, r.value) for r in got] == [
        ("gw/1/battery_pct", 87),
        ("gw/1/rssi_dbm", -70),
        ("end/end", 1),
    ]
    said = src.notices.messages["nested_field_unread"]
    assert "json_mapping.records: {array: readings, name: name, value: value}" in said, said
    assert said.endswith(
        "; under records, its top-level numbers read now, 'battery_pct', 'rssi_dbm', are not read (records and "
        "values do not go together)"
    ), said


async def test_the_hint_of_one_deep_field_looks_in_a_bounded_number_of_objects(mosquitto, monkeypatch):
    """The hint's search was bounded in top-level fields only: within one field it walked every object 64 wide and
    up to 8 deep, so one 7.5 MB field (a 64-wide tree) took the hint 3-3.6 s and held the agent's loop 6-7 s at
    each source start. Its walks share a budget of ``VISITED`` objects and arrays; the hint says the search
    stopped."""
    visited: list[str] = []
    records_in, number_path = json_codec._records_in, json_codec._number_path

    def counted_records_in(path, v, *rest):
        if type(v) is dict or type(v) is list:
            visited.append(path)
        return records_in(path, v, *rest)

    def counted_number_path(path, v, *rest):
        if type(v) is dict or type(v) is list:
            visited.append(path)
        return number_path(path, v, *rest)

    monkeypatch.setattr(json_codec, "_records_in", counted_records_in)
    monkeypatch.setattr(json_codec, "_number_path", counted_number_path)
    leaf = [{"name": "a", "value": "x"}]
    tree = {f"a{i}": {f"b{j}": {f"c{k}": leaf for k in range(16)} for j in range(16)} for i in range(16)}
    messages = [("gw/1", json.dumps({"site": tree})), ("end", json.dumps({"end": 1}))]
    _, src = await read_published(mosquitto.port, [{"topic": "#"}], messages, "end/end")
    said = src.notices.messages["nested_field_unread"]
    assert "a whole number (the search stopped after 2000 objects and arrays)" in said, said
    # (the tree holds 8,465: each counted once per walk entering it, a budget spent seen at most once a walk)
    assert len(visited) <= 2_000 + 2 * json_codec.SEARCHED, len(visited)


async def test_one_tags_history_whose_readings_carry_their_own_id_is_told_its_tag_name_key(mosquitto):
    """The key that tells records apart was the first whose texts differ: one tag's history whose readings carry
    their own id (EdgeX's UUID ``id``, or a reading number beside ``name``) was told ``name: id``; followed, each
    reading was a tag of its own (``d/x/c10555f5-...``), without end, and ``temp`` never read. A key holding each
    record's own id is never told; the tag name key is."""
    uuids = [
        "c10555f5-3b4e-4c1d-9a53-1f0e2d3c4b5a",
        "0f9e8d7c-6b5a-4948-8776-a5b4c3d2e1f0",
        "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d",
    ]
    uuid_history = {"readings": [{"name": "temp", "id": u, "value": 21.5 + i} for i, u in enumerate(uuids)]}
    numbered = {"readings": [{"key": f"r{i}", "name": "temp", "value": 21.5 + i} for i in range(3)]}
    end = ("end", json.dumps({"end": 1}))
    for history in (uuid_history, numbered):
        _, src = await read_published(
            mosquitto.port, [{"topic": "#"}], [("d/x", json.dumps(history)), end], "end/end"
        )
        said = src.notices.messages["nested_field_unread"]
        assert "json_mapping.records: {array: readings, name: name, value: value}" in said, said
    mapping = {"records": {"array": "readings", "name": "name", "value": "value"}}
    got, _ = await read_published(
        mosquitto.port,
        [{"topic": "d/#", "json_mapping": mapping}, {"topic": "end"}],
        [("d/x", json.dumps(uuid_history)), end],
        "end/end",
    )
    assert {r.tag for r in got} == {"d/x/temp", "end/end"}


async def test_numbers_from_text_is_told_only_when_no_value_is_a_json_number(mosquitto):
    """``numbers_from_text: true`` was told when any record's value was number-like text, beside real JSON numbers
    too: followed, a batch "0012" read 12 and a recipe "007" read 7 (the records mapping alone reads them as text).
    It is told only when no value is a JSON number (EdgeX: every value text)."""
    mixed = {
        "readings": [
            {"name": "temp", "value": 21.5},
            {"name": "batch", "value": "0012"},
            {"name": "recipe", "value": "007"},
        ]
    }
    texts = {"readings": [{"name": "temp", "value": "21.5"}, {"name": "hum", "value": "40"}]}
    end = ("end", json.dumps({"end": 1}))
    told = "json_mapping.records: {array: readings, name: name, value: value}"
    _, src = await read_published(
        mosquitto.port, [{"topic": "#"}], [("d/x", json.dumps(mixed)), end], "end/end"
    )
    said = src.notices.messages["nested_field_unread"]
    assert told in said and "numbers_from_text" not in said, said
    _, src = await read_published(
        mosquitto.port, [{"topic": "#"}], [("d/x", json.dumps(texts)), end], "end/end"
    )
    said = src.notices.messages["nested_field_unread"]
    assert f"{told} and numbers_from_text: true" in said, said
    mapping = {"records": {"array": "readings", "name": "name", "value": "value"}}
    got, _ = await read_published(
        mosquitto.port,
        [{"topic": "d/#", "json_mapping": mapping}, {"topic": "end"}],
        [("d/x", json.dumps(mixed)), end],
        "end/end",
    )
    assert [(r.tag, r.value) for r in got if r.tag != "end/end"] == [
        ("d/x/temp", 21.5),
        ("d/x/batch", "0012"),
        ("d/x/recipe", "007"),
    ]


async def test_records_naming_their_device_in_name_and_their_tag_in_id_are_told_the_id(mosquitto):
    """A constant "name" (the device) beside an "id" that differs in each record (the tag): the "id" was taken as
    each reading's own id (as EdgeX's UUIDs are) and the hint told ``name: name``; followed, every record was read
    as one tag, ``gw/1/plc1``. The key told is "id"; a reading's own id (a number, or the same text but for its
    digits, beside a constant name) is still passed over, the other key named; and a message of one record, where
    no key is seen to tell records apart, is told which other key may name it (it was told "name" alone)."""
    plc = {
        "readings": [
            {"name": "plc1", "id": "temp", "value": 21.5},
            {"name": "plc1", "id": "press", "value": 2.5},
        ]
    }
    numbered = {"readings": [{"name": "temp", "id": f"r{i}", "value": 21.5 + i} for i in range(2)]}
    alone = {"readings": [{"name": "plc1", "tag": "temp", "value": 21.5}]}
    # register numbers: ids of digits only were passed over unsaid (review /work/notes56/review_mqtt L3)
    registers = {"readings": [{"name": "plc1", "id": f"4000{i}", "value": i} for i in (1, 2)]}
    end = ("end", json.dumps({"end": 1}))
    told = {}
    cases = (("plc", plc), ("numbered", numbered), ("alone", alone), ("registers", registers))
    for key, message in cases:
        _, src = await read_published(
            mosquitto.port, [{"topic": "#"}], [("gw/1", json.dumps(message)), end], "end/end"
        )
        told[key] = src.notices.messages["nested_field_unread"]
    assert "json_mapping.records: {array: readings, name: id, value: value}" in told["plc"], told
    assert "same in every record" not in told["plc"], told
    assert "json_mapping.records: {array: readings, name: name, value: value}" in told["numbered"], told
    assert told["numbered"].endswith(
        "; its name is the same in every record: if their id names each one's tag, set name: id"
    ), told
    assert told["registers"].endswith(
        "; its name is the same in every record: if their id names each one's tag, set name: id"
    ), told
    assert told["alone"].endswith(
        "; one record in the message, so no key is seen to tell records apart: if its tag names the tag, "
        "set name: tag"
    ), told
    mapping = {"records": {"array": "readings", "name": "id", "value": "value"}}
    got, _ = await read_published(
        mosquitto.port,
        [{"topic": "gw/#", "json_mapping": mapping}, {"topic": "end"}],
        [("gw/1", json.dumps(plc)), end],
        "end/end",
    )
    assert [(r.tag, r.value) for r in got] == [("gw/1/temp", 21.5), ("gw/1/press", 2.5), ("end/end", 1)]


async def test_a_device_sending_one_record_per_message_is_told_the_records_mapping_that_reads_it(mosquitto):
    """A device publishing each reading as one record ({"name": "temp", "value": 21.5}, then {"name": "hum", ...} on
    the same topic): read for every number, each is the tag "value" whatever its name, temperature and humidity one
    tag. It was told that its name was a state to map to a number (``states: {'temp': 1}``), and a records mapping
    refused a record alone ('the payload is a JSON dict; expected an array of records'). It is told the records
    mapping, which reads a record alone as an array of one."""
    end = ("end", json.dumps({"end": 1}))
    messages = [
        ("dev/1", json.dumps({"name": "temp", "value": 21.5})),
        ("dev/1", json.dumps({"name": "hum", "value": 40})),
        end,
    ]
    got, src = await read_published(mosquitto.port, [{"topic": "#"}], messages, "end/end")
    assert [(r.tag, r.value) for r in got] == [("dev/1/value", 21.5), ("dev/1/value", 40), ("end/end", 1)]
    said = src.notices.messages["text_field_unread"]
    assert "topic 'dev/1': the message is one record, named by its 'name' ('temp'), not read by it" in said, (
        said
    )
    assert "json_mapping.records: {array: '', name: name, value: value}" in said and "states" not in said, (
        said
    )
    mapping = {"records": {"array": "", "name": "name", "value": "value"}}
    got, src = await read_published(
        mosquitto.port, [{"topic": "dev/#", "json_mapping": mapping}, {"topic": "end"}], messages, "end/end"
    )
    assert [(r.tag, r.value) for r in got] == [("dev/1/temp", 21.5), ("dev/1/hum", 40), ("end/end", 1)]
    assert src.stats.errors_by_reason == {}


async def test_a_message_holding_more_than_one_record_is_not_told_a_records_mapping_that_would_drop_the_rest(
    mosquitto,
):
    """A message holding a name, a value and other numbers ({"name": "Pump 3", "value": 21.5, "rpm": 1500,
    "current": 3.2}) was told it was one record and the records mapping {array: '', name: name, value: value}:
    followed, it read the one tag 'Pump 3' and rpm and current were never read again, nothing said; a heartbeat
    ({"name": "gw-7", "value": 1, "type": "heartbeat"}) on a records topic was read GOOD as the tag 'gw-7'. A records
    mapping reads an object alone only when it holds nothing else (review /work/notes56/review_mqtt M1, L2)."""
    end = ("end", json.dumps({"end": 1}))
    pump = ("dev/1", json.dumps({"name": "Pump 3", "value": 21.5, "rpm": 1500, "current": 3.2}))
    got, src = await read_published(mosquitto.port, [{"topic": "#"}], [pump, end], "end/end")
    assert [r.tag for r in got] == ["dev/1/value", "dev/1/rpm", "dev/1/current", "end/end"]
    said = src.notices.messages["text_field_unread"]
    assert "records" not in said and "one record" not in said, said

    mapping = {"records": {"array": "", "name": "name", "value": "value"}}
    beat = ("dev/1", json.dumps({"name": "gw-7", "value": 1, "type": "heartbeat"}))
    batch = ("dev/1", json.dumps([{"name": "temp", "value": 21.5}]))
    got, src = await read_published(
        mosquitto.port,
        [{"topic": "dev/#", "json_mapping": mapping}, {"topic": "end"}],
        [pump, beat, batch, end],
        "end/end",
        errors=(errors := []),
    )
    assert [(r.tag, r.value) for r in got] == [("dev/1/temp", 21.5), ("end/end", 1)]
    assert src.stats.errors_by_reason == {"wrong_type": 2}
    assert all("the payload is a JSON dict; expected an array of records" in e for e in errors), errors

    # a record's time is read: the message's timestamp_field (ts), else a field named as a time told as the record's
    stamped = ("dev/5", json.dumps({"tag": "press", "v": 2.5, "ts": 1764500000}))
    timed = ("dev/6", json.dumps({"tag": "press", "v": 2.5, "time": 1764500000}))
    got, src = await read_published(
        mosquitto.port, [{"topic": "dev/5"}, {"topic": "end"}], [stamped, end], "end/end"
    )
    said = src.notices.messages["text_field_unread"]
    assert "json_mapping.records: {array: '', name: tag, value: v}" in said, said
    got, src = await read_published(
        mosquitto.port, [{"topic": "dev/6"}, {"topic": "end"}], [timed, end], "end/end"
    )
    said = src.notices.messages["text_field_unread"]
    assert "json_mapping.records: {array: '', name: tag, value: v, timestamp: time}" in said, said
    subs = [
        {"topic": "dev/5", "json_mapping": {"records": {"array": "", "name": "tag", "value": "v"}}},
        {
            "topic": "dev/6",
            "json_mapping": {"records": {"array": "", "name": "tag", "value": "v", "timestamp": "time"}},
        },
        {"topic": "end"},
    ]
    got, src = await read_published(mosquitto.port, subs, [stamped, timed, end], "end/end")
    assert [(r.tag, r.value, r.timestamp) for r in got][:2] == [
        ("dev/5/press", 2.5, 1764500000.0),
        ("dev/6/press", 2.5, 1764500000.0),
    ]
    assert src.stats.errors_by_reason == {}
