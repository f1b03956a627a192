"""Sparkplug B times from other vendors' edge nodes through a real Mosquitto: a node whose clock was never set
(stamping its uptime), and DateTime metrics. Payloads are built on the Sparkplug protobuf schema field by
field, as Eclipse Tahu's Python and Java nodes write them, not with this project's encoder."""

from __future__ import annotations

import asyncio
import base64
import shutil
import time
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import Quality
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from protocols import sparkplug as sp
from tests.integration.test_mqtt_sparkplug_interop import TAHU, tahu
from tests.support.sparkplug_pb import pb_metric as _metric

D = sp.DataType
G, B = Quality.GOOD, Quality.BAD


def _payload(ts: int, seq: int | None):
    p = sp._pb().Payload()
    p.timestamp = ts
    if seq is not None:
        p.seq = seq
    return p


async def _run(port: int, messages: list[tuple[str, Any]], until) -> tuple[MqttSource, list]:
    """Publish ``messages`` (topic kind, protobuf payload) to node g/n in order; the readings until ``until``."""
    src = MqttSource(
        "mq", MqttSettings(port=port, subscriptions=[{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}])
    )
    await src.start()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", port, 30)
    pub.loop_start()
    got: list = []
    try:
        async with asyncio.timeout(5):
            await src.connected.wait()
            await src.subscribed.wait()
        for kind, body in messages:
            pub.publish(
                f"spBv1.0/g/{kind}/n", body if isinstance(body, bytes) else body.SerializeToString(), qos=1
            )
        try:
            async with asyncio.timeout(10):
                async for r in src.items():
                    got.append(r)
                    if until(r):
                        break
        except TimeoutError:
            pass  # what came is asserted by the caller
    finally:
        pub.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        pub.loop_stop()
        await src.stop()
    return src, got


async def test_an_edge_node_stamping_its_uptime_gets_the_receive_time_and_a_restart_loses_nothing(mosquitto):
    """An edge node without a set clock (no NTP, no clock battery) stamps its uptime in milliseconds. Before,
    its readings were dated 1970, and once it restarted every reading was older than its tag's last one and
    dropped as out_of_order, for as long as the node had run before; an uptime of 12 to 115 days was taken
    for epoch seconds (bad_timestamp, "fix the edge node's timestamps"). Now a time before 2001 is a clock
    never set, as on the MQTT JSON path: the receive time, counted as clock_skew, not moving the tag's order,
    so the node's readings after its restart come."""
    uptime_20_days = 1_728_000_000  # ms: in the range that epoch seconds sent as milliseconds fall in
    birth = _payload(5_000, 0)
    _metric(birth, "bdSeq", datatype=D.UINT64, long_value=0)  # as Tahu's nodes type it
    _metric(birth, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0, timestamp=5_000)
    data = _payload(uptime_20_days, 1)
    _metric(data, alias=1, double_value=21.0, timestamp=uptime_20_days)
    death = _payload(uptime_20_days + 100, None)
    _metric(death, "bdSeq", datatype=D.UINT64, long_value=0)
    rebirth = _payload(4_000, 0)  # restarted: its uptime starts again
    _metric(rebirth, "bdSeq", datatype=D.UINT64, long_value=1)
    _metric(rebirth, "Temp", alias=1, datatype=D.DOUBLE, double_value=22.0, timestamp=4_000)
    after = _payload(9_000, 1)
    _metric(after, alias=1, double_value=23.0, timestamp=9_000)
    src, got = await _run(
        mosquitto.port,
        [("NBIRTH", birth), ("NDATA", data), ("NDEATH", death), ("NBIRTH", rebirth), ("NDATA", after)],
        lambda r: r.value == 23.0,
    )
    assert [(r.tag, r.value, r.quality) for r in got] == [
        ("n/Temp", 20.0, G),
        ("n/Temp", 21.0, G),
        ("n/Temp", 21.0, B),  # the death: its last value BAD
        ("n/Temp", 22.0, G),  # after the restart: read, not dropped as out of order
        ("n/Temp", 23.0, G),
    ]
    for r in got:
        assert r.timestamp == r.received_at and r.timestamp > 1e9, r  # never 1970
    errors = src.stats.errors_by_reason
    assert "out_of_order" not in errors and "bad_timestamp" not in errors, errors
    assert errors.get("clock_skew") == 4  # each GOOD reading stamped by the unset clock
    assert "clock was never set" in str(src.stats.last_error), src.stats.last_error


async def test_sparkplug_datetime_metrics_are_times_not_numbers(mosquitto):
    """A DateTime metric (a part's production time, a tool's last service) carries milliseconds since 1970.
    Before, its reading was that number (1700000000000), which a rule or the cloud took for a count. Now it
    is ISO 8601 text with its zone, as the OPC UA source gives a DateTime, also as a Template member and in a
    data message that leaves the datatype out; a time before 1970 (Tahu's Java nodes write a Date's negative
    milliseconds in two's complement) is read so; one outside the years 1..9999 is wrong_type, and the
    message's other metrics are read."""
    now = int(time.time() * 1000) - 1000
    t = 1_700_000_000_000  # 2023-11-14T22:13:20Z
    birth = _payload(now, 0)
    _metric(birth, "bdSeq", datatype=D.UINT64, long_value=0)
    _metric(birth, "Made", alias=1, datatype=D.DATETIME, long_value=t)
    motor = _metric(birth, "Motor", alias=2, datatype=D.TEMPLATE)
    motor.template_value.template_ref = "MotorType"
    _metric(motor.template_value, "Serviced", datatype=D.DATETIME, long_value=t + 86_400_000)
    _metric(birth, "Broken", alias=3, datatype=D.DATETIME, long_value=2**62)  # year 146 million
    _metric(birth, "Temp", alias=4, datatype=D.DOUBLE, double_value=20.0)
    data = _payload(now + 1, 1)  # by alias, without a datatype, as Sparkplug 3.0 has data messages
    _metric(data, alias=1, long_value=t + 1_500)
    _metric(data, alias=3, long_value=2**62)
    _metric(data, alias=4, double_value=21.0)
    before_1970 = _payload(now + 2, 2)
    _metric(before_1970, alias=1, long_value=(-1_000) & (2**64 - 1))
    _metric(before_1970, alias=4, double_value=22.0)
    src, got = await _run(
        mosquitto.port,
        [("NBIRTH", birth), ("NDATA", data), ("NDATA", before_1970)],
        lambda r: r.value == 22.0,
    )
    assert [(r.tag, r.value, r.quality) for r in got] == [
        ("n/Made", "2023-11-14T22:13:20+00:00", G),
        ("n/Motor/Serviced", "2023-11-15T22:13:20+00:00", G),
        ("n/Temp", 20.0, G),
        ("n/Made", "2023-11-14T22:13:21.500000+00:00", G),
        ("n/Temp", 21.0, G),
        ("n/Made", "1969-12-31T23:59:59+00:00", G),
        ("n/Temp", 22.0, G),
    ]
    assert src.stats.errors_by_reason == {"wrong_type": 2}  # Broken, in the birth and in the data
    assert "'Broken'" in str(src.stats.last_error) and "years 1..9999" in str(src.stats.last_error)


async def test_a_datetime_metric_a_node_sends_as_text_or_a_double_is_read_by_the_rules_of_a_time(mosquitto):
    """A DateTime metric belongs in long_value; a node that put it in string_value or double_value had it passed on
    as it came, a GOOD DateTime reading of '2026-12-04' (a date alone, which the JSON codec refuses as no instant),
    of 'soon' or of 1e30. Now text is read as a time with its zone (as a command's DateTime is written, through
    the JSON codec's rule for a date alone: bad_timestamp) and a double as whole milliseconds in the years
    1..9999 (wrong_type otherwise); the message's other metrics are read."""
    now = int(time.time() * 1000) - 1000
    birth = _payload(now, 0)
    _metric(birth, "bdSeq", datatype=D.UINT64, long_value=0)
    _metric(birth, "Day", alias=1, datatype=D.DATETIME, string_value="2026-12-04")
    _metric(birth, "DayZ", alias=2, datatype=D.DATETIME, string_value="2026-12-04+01:00")
    _metric(birth, "Made", alias=3, datatype=D.DATETIME, string_value="2026-12-04T10:15:00+01:00")
    _metric(birth, "Soon", alias=4, datatype=D.DATETIME, string_value="soon")
    _metric(birth, "Ms", alias=5, datatype=D.DATETIME, double_value=1.7e12)
    _metric(birth, "Huge", alias=6, datatype=D.DATETIME, double_value=1e30)
    _metric(birth, "Temp", alias=7, datatype=D.DOUBLE, double_value=20.0)
    # the hour alone (the whole hour 10:00 to 11:00): it was read as 09:00:00Z, as the JSON codec read it
    _metric(birth, "Hour", alias=8, datatype=D.DATETIME, string_value="2026-12-04T10+01:00")
    data = _payload(now + 1, 1)  # by alias: the birth's datatype says DateTime
    _metric(data, alias=1, string_value="2026-12-05")
    _metric(data, alias=7, double_value=21.0)
    src, got = await _run(mosquitto.port, [("NBIRTH", birth), ("NDATA", data)], lambda r: r.value == 21.0)
    assert [(r.tag, r.value, r.quality) for r in got] == [
        ("n/Made", "2026-12-04T09:15:00+00:00", G),
        ("n/Ms", "2023-11-14T22:13:20+00:00", G),
        ("n/Temp", 20.0, G),
        ("n/Temp", 21.0, G),
    ]
    assert src.stats.errors_by_reason == {"bad_timestamp": 5, "wrong_type": 1}, src.stats.errors_by_reason
    assert "metric 'Day': '2026-12-05' is a date without a time of day" in str(src.stats.last_error)


async def test_what_tahus_javascript_nodes_send_that_gives_no_reading_is_said_and_the_rest_read(mosquitto):
    """Eclipse Tahu's JavaScript encoder (npm sparkplug-payload) sends a PropertySet metric with its datatype
    and no value (Sparkplug's metric has no field for one), a DataSet given without numOfColumns as rows
    without cells, and a UInt32 in long_value. Before, the PropertySet was dropped without a word and the
    DataSet was refused as "a row of 0 cells under 2 columns", which sent the user looking at the rows. Now
    the PropertySet is said (the unsupported_metric notice, naming it), the DataSet's wrong_type names the
    missing num_of_columns, and the node's other metrics are read."""
    now = int(time.time() * 1000) - 1000
    birth = _payload(now, 0)
    _metric(birth, "bdSeq", datatype=D.UINT64, long_value=0)
    _metric(birth, "Props", alias=1, datatype=20)  # PropertySet: no value field
    table = _metric(birth, "Strokes", alias=2, datatype=D.DATASET).dataset_value
    table.columns.extend(["Pos", "Force"])  # no num_of_columns: Tahu's JS wrote no cells
    table.types.extend([D.INT32, D.DOUBLE])
    table.rows.add()
    table.rows.add()
    _metric(birth, "Count", alias=3, datatype=D.UINT32, long_value=4_000_000_000)  # Tahu JS: long_value
    _metric(birth, "Temp", alias=4, datatype=D.DOUBLE, double_value=20.5)
    src, got = await _run(mosquitto.port, [("NBIRTH", birth)], lambda r: r.tag == "n/Temp")
    assert [(r.tag, r.value, r.quality) for r in got] == [("n/Count", 4_000_000_000, G), ("n/Temp", 20.5, G)]
    assert src.stats.errors_by_reason == {"wrong_type": 1}
    assert "no num_of_columns" in str(src.stats.last_error) and "'Strokes'" in str(src.stats.last_error)
    notice = src.notices.status()["unsupported_metric"]
    assert "'Props'" in notice["message"] and "PropertySet" in notice["message"], notice


async def test_a_reading_a_node_sent_without_a_time_neither_holds_nor_is_held_to_its_tags_order(mosquitto):
    """A node without a clock yet (booting, before NTP) sends timestamp 0: its readings get the receive time.
    Before, that time moved the tag's order, so once the node's clock was set, a little behind this gateway's,
    its first stamped reading was older than the receive time and dropped as out_of_order; and a 0 after
    readings of a node whose clock runs a little ahead was itself dropped. The receive time is not the node's
    clock: it now neither moves the tag's order nor is held to it (as a time too far ahead, or a clock never
    set, already did not)."""
    now = int(time.time() * 1000)
    birth = _payload(0, 0)  # booting: no time yet
    _metric(birth, "bdSeq", datatype=D.UINT64, long_value=0)
    _metric(birth, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
    behind = _payload(now - 5_000, 1)  # its clock set (NTP), 5 s behind this gateway's
    _metric(behind, alias=1, double_value=21.0)
    ahead = _payload(now + 5_000, 2)  # a node whose clock runs 5 s ahead (within max_clock_skew_s)
    _metric(ahead, alias=1, double_value=22.0)
    again = _payload(0, 3)  # no time again
    _metric(again, alias=1, double_value=23.0)
    src, got = await _run(
        mosquitto.port,
        [("NBIRTH", birth), ("NDATA", behind), ("NDATA", ahead), ("NDATA", again)],
        lambda r: r.value == 23.0,
    )
    assert [(r.value, r.timestamp == r.received_at) for r in got] == [
        (20.0, True),
        (21.0, False),  # before: dropped, older than the birth's receive time
        (22.0, False),
        (23.0, True),  # before: dropped, older than the node's time ahead
    ]
    assert src.stats.errors_by_reason == {}


@pytest.mark.interop
@pytest.mark.skipif(
    shutil.which("node") is None or not TAHU.exists(),
    reason="node or Tahu's sparkplug-payload absent; run .ci/interop-peers",
)
async def test_an_nbirth_tahus_javascript_encoder_wrote_is_read_whole(mosquitto):
    """An NBIRTH written by Eclipse Tahu's own JavaScript encoder (npm sparkplug-payload), of a node stamping
    its uptime, with each type its users send: DateTime (a time), UInt32 (Tahu JS puts it in long_value),
    Bytes and File (no reading, said), a DataSet of Int32/Int8/UInt32/DateTime columns (negative cells keep
    their sign), one given without numOfColumns (no cells: wrong_type naming it), a Template with a DateTime
    member, a PropertySet (no value: said) and a Double. Everything readable is read, at the receive time."""
    t = 1_764_700_000_000  # 2025-12-02T18:26:40Z
    req = {
        "timestamp": 123_456,  # its uptime
        "seq": 0,
        "metrics": [
            {"name": "bdSeq", "type": "UInt64", "value": 0},
            {"name": "When", "type": "DateTime", "value": t},
            {"name": "U32", "type": "UInt32", "value": 4_000_000_000},
            {"name": "Blob", "type": "Bytes", "value": [1, 2, 3]},
            {
                "name": "Tbl",
                "type": "DataSet",
                "value": {
                    "numOfColumns": 4,
                    "columns": ["a", "b", "c", "d"],
                    "types": ["Int32", "Int8", "UInt32", "DateTime"],
                    "rows": [[-1, -2, 4_000_000_000, t], [2, 3, 5, t + 1]],
                },
            },
            {
                "name": "Tbl2",
                "type": "DataSet",
                "value": {"columns": ["a"], "types": ["Int32"], "rows": [[1]]},
            },
            {
                "name": "Motor",
                "type": "Template",
                "value": {
                    "isDefinition": False,
                    "templateRef": "M",
                    "metrics": [
                        {"name": "Speed", "type": "Int16", "value": -7},
                        {"name": "At", "type": "DateTime", "value": t},
                    ],
                },
            },
            {"name": "Props", "type": "PropertySet", "value": {"a": {"type": "Int32", "value": 1}}},
            {"name": "Temp", "type": "Double", "value": 20.5},
        ],
    }
    raw = base64.b64decode(tahu({"op": "encode", "payload": req})["b64"])
    src, got = await _run(mosquitto.port, [("NBIRTH", raw)], lambda r: r.tag == "n/Temp")
    shown = [(r.tag, r.value.tolist() if isinstance(r.value, np.ndarray) else r.value) for r in got]
    assert shown == [
        ("n/When", "2025-12-02T18:26:40+00:00"),
        ("n/U32", 4_000_000_000),
        ("n/Tbl/a", [-1, 2]),
        ("n/Tbl/b", [-2, 3]),
        ("n/Tbl/c", [4_000_000_000, 5]),
        ("n/Tbl/d", [t, t + 1]),
        ("n/Motor/Speed", -7),
        ("n/Motor/At", "2025-12-02T18:26:40+00:00"),
        ("n/Temp", 20.5),
    ]
    for r in got:
        assert r.quality is G and r.timestamp == r.received_at, r  # the uptime: the receive time
    assert src.stats.errors_by_reason == {"wrong_type": 1, "clock_skew": len(got)}
    assert src.notices.counts["unsupported_metric"] == 2  # Blob, Props


async def test_a_string_array_is_read_as_json_text_and_each_unread_kind_is_said_with_its_own_message(
    mosquitto,
):
    """A StringArray metric (Sparkplug 3.0: each string's UTF-8 bytes and a NUL; Tahu's Java and Python nodes
    send recipe step names, alarm texts so) gave no reading, only the unsupported_metric notice. It is now
    read as the JSON text of its strings (a comma in one kept whole), in a birth and in data without a
    datatype (by the birth's). And the unsupported_metric notice kept only its first message: a node sending
    a Bytes metric and a PropertySet showed the Bytes message alone, the PropertySet never named. Each distinct
    cause now keeps its own first message (/status: "more"), logged once."""
    now = int(time.time() * 1000) - 1000
    birth = _payload(now, 0)
    _metric(birth, "bdSeq", datatype=D.UINT64, long_value=0)
    steps = "Fill\0Heat, hold\0Dr\u00e4in\0".encode()
    _metric(birth, "Steps", alias=1, datatype=33, bytes_value=steps)
    _metric(birth, "Blob", alias=2, datatype=D.BYTES, bytes_value=b"\x01\x02")
    _metric(birth, "Props", alias=3, datatype=20)  # PropertySet: no value field
    _metric(birth, "Temp", alias=4, datatype=D.DOUBLE, double_value=20.5)
    data = _payload(now + 500, 1)
    _metric(data, alias=1, bytes_value=b"")  # by alias, no datatype: an empty array
    _metric(data, alias=4, double_value=21.0)
    src, got = await _run(
        mosquitto.port, [("NBIRTH", birth), ("NDATA", data)], lambda r: r.tag == "n/Temp" and r.value == 21.0
    )
    assert [(r.tag, r.value) for r in got] == [
        ("n/Steps", '["Fill", "Heat, hold", "Dr\u00e4in"]'),
        ("n/Temp", 20.5),
        ("n/Steps", "[]"),
        ("n/Temp", 21.0),
    ]
    assert src.stats.errors_by_reason == {}
    notice = src.notices.status()["unsupported_metric"]
    assert "'Blob'" in notice["message"] and "Bytes" in notice["message"], notice
    assert len(notice["more"]) == 1 and "'Props'" in notice["more"][0] and "PropertySet" in notice["more"][0]
    assert notice["count"] == 2
