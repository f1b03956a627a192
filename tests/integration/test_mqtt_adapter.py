"""MqttSource against a real Mosquitto: JSON over wildcards, QoS 0/1, MQTT 3.1.1/5, bad input,
broker restart, publish, Sparkplug B births/data/deaths/rebirth with the sensor simulator."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import ConnectionState, Quality
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from protocols import json_codec
from protocols import sparkplug as sp
from simulators.sensors import SensorFleet
from tests.support.mqtt_wire import read_packet
from tests.support.sparkplug_pb import pb_metric as _pb_metric

T0 = 1_700_000_000.0  # a device clock that is set (a time before 2001 is a clock never set: receive time)
T0_MS = 1_700_000_000_000  # the same, as Sparkplug stamps (milliseconds)


def raw_client(port: int, protocol=paho.MQTTv311) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    return c


def closed(c: paho.Client) -> None:
    """Disconnect a raw client and end its network thread. ``loop_stop`` alone waits for the thread's
    select to time out (paho's 1 s) before the thread sees the stop; the DISCONNECT wakes it at once."""
    c.disconnect()
    c.loop_stop()


async def collect(src: MqttSource, until, timeout_s: float = 30.0) -> list:
    """What ``src`` yields until ``until(got)`` holds, or what came within ``timeout_s`` (a ceiling for
    a loaded machine: a condition the test expects returns as soon as it holds)."""
    got: list = []

    async def run():
        async for r in src.items():
            got.append(r)
            if until(got):
                return

    try:
        await asyncio.wait_for(run(), timeout_s)
    except TimeoutError:
        pass
    return got


async def started(port: int, subs: list[dict], **kw) -> MqttSource:
    src = MqttSource("mq", MqttSettings(port=port, subscriptions=subs, **kw))
    await src.start()
    async with asyncio.timeout(30):
        await src.connected.wait()
        if subs:
            await src.subscribed.wait()  # the SUBACK: nothing published from here on is missed
    return src


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("protocol", ["mqtt311", "mqtt5"])
async def test_json_readings_arrive_through_wildcard_subscription(mosquitto, qos, protocol):
    src = await started(mosquitto.port, [{"topic": "plant/+/sensor/#", "qos": qos}], protocol=protocol)
    pub = raw_client(mosquitto.port)
    try:
        for i in range(20):
            pub.publish(
                f"plant/line{i % 2}/sensor/t{i}", json.dumps({"ts": T0 + i, "temperature": 20 + i}), qos=qos
            )
        got = await collect(src, lambda g: len(g) >= 20)
    finally:
        closed(pub)
        await src.stop()
    assert len(got) == 20
    assert got[0].tag == "plant/line0/sensor/t0/temperature" and got[0].value == 20 and got[0].timestamp == T0
    assert src.state is ConnectionState.STOPPED


async def test_json_arrays_of_whole_numbers_past_2_53_keep_every_digit(mosquitto):
    """A device's Int64/UInt64 ids, counters or tick times past 2**53 in a JSON array: a float64 array held each
    as a neighbour (2**53 + 1 as 2**53, 2**63 - 1 as 2**63, 2**64 - 1 as 2**64), forwarded to MQTT and the cloud
    so. They stay whole numbers (an int64 or uint64 array, as Sparkplug's Int64Array); a waveform stays float64."""
    src = await started(mosquitto.port, [{"topic": "dev/#", "json_mapping": {"values": {"ids": "ids"}}}])
    pub = raw_client(mosquitto.port)
    sent = [
        [2**53 + 1, 2**63 - 1, -(2**63)],
        [2**64 - 1, 0, 2**53 + 3],
        [1.5, 2.0, 3],  # a waveform
        [2**53 + 1, 0.5],  # a fraction among them: float64, as before
    ]
    try:
        for i, ids in enumerate(sent):
            pub.publish(f"dev/{i}", json.dumps({"ids": ids}), qos=1)
        got = await collect(src, lambda g: len(g) >= len(sent))
    finally:
        closed(pub)
        await src.stop()
    by = {r.tag: r.value for r in got}
    assert by["dev/0/ids"].tolist() == sent[0] and by["dev/0/ids"].dtype == np.int64
    assert by["dev/1/ids"].tolist() == sent[1] and by["dev/1/ids"].dtype == np.uint64
    assert json.loads(json_codec.dumps(by["dev/0/ids"])) == sent[0]  # what a forward and the outbox write
    assert by["dev/2/ids"].dtype == np.float64 and by["dev/3/ids"].dtype == np.float64


async def test_bad_input_is_counted_and_skipped_while_good_messages_flow(mosquitto):
    subs = [
        {"topic": "j/#", "json_mapping": {"values": {"a.b": "ab"}, "timestamp_field": "ts"}},
        {"topic": "spBv1.0/#", "codec": "sparkplug_b"},
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    bad = [
        ("j/1", b"{oops"),
        ("j/1", b'{"a": {"b": {"c": 1}}}'),
        ("j/1", b'{"a": {}}'),
        ("j/1", b'{"a": {"b": NaN}}'),
        ("j/1", b'{"ts": 1700000005, "a": {"b": 1}}'),  # older than the good one before it
        ("spBv1.0/g/NDATA/e1", b"\xff\x00garbage"),
    ]
    try:
        pub.publish("j/1", b'{"ts": 1700000010, "a": {"b": 1}}')
        for t, p in bad:
            pub.publish(t, p)
        pub.publish("j/1", b'{"ts": 1700000011, "a": {"b": 2}}')
        got = await collect(src, lambda g: any(r.value == 2 for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [r.value for r in got if r.quality is Quality.GOOD] == [1, 2]
    # the NaN: a BAD reading of its tag (non_finite: bad), stamped with the receive time, which does not make
    # the later one look out of order
    assert [r.tag for r in got if r.quality is Quality.BAD] == ["j/1/ab"]
    reasons = src.stats.errors_by_reason
    for key in (
        "malformed_json",
        "wrong_type",
        "missing_field",
        "non_finite",
        "out_of_order",
        "garbage_protobuf",
    ):
        assert reasons.get(key) == 1, (key, reasons)


async def test_a_message_over_the_size_limit_is_skipped_undecoded_and_counted(mosquitto):
    """A device flooding the broker with huge messages must not fill the gateway's memory through the
    hand-over queue: over ``max_message_bytes`` a message is counted as too_large and never queued,
    valid JSON or not; the messages around it flow."""
    subs = [{"topic": "j/#"}, {"topic": "spBv1.0/#", "codec": "sparkplug_b"}]
    src = await started(mosquitto.port, subs, max_message_bytes=4096)
    pub = raw_client(mosquitto.port)
    big_waveform = json.dumps({"ts": T0 + 11, "v": [0.5] * 2000}).encode()  # valid JSON, ~10 KB
    try:
        pub.publish("j/1", b'{"ts": 1700000010, "v": 1}')
        pub.publish("j/1", big_waveform)
        pub.publish("spBv1.0/g/NDATA/e1", b"\x00" * 5000)
        pub.publish("j/1", b'{"ts": 1700000012, "v": 2}')
        got = await collect(src, lambda g: any(r.value == 2 for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [r.value for r in got] == [1, 2]
    assert src.stats.errors_by_reason.get("too_large") == 2, src.stats.errors_by_reason
    assert "exceeds max_message_bytes (4096)" in (src.stats.last_error or "")


async def test_gateways_that_publish_many_tags_per_message_as_records_are_read_with_their_quality(mosquitto):
    """Kepware IoT Gateway's standard template, Siemens Industrial Edge's databus message and a template's
    bare array: every record a reading with its own time and quality. Before, the default mapping took
    the message's 'timestamp' as the only tag and none of the values. A broken record is counted and
    skipped; its neighbours are kept."""
    subs = [
        {
            "topic": "kepware/#",
            "json_mapping": {
                "records": {},
                "timestamp_field": "timestamp",
                "timestamp_format": "epoch_ms",
                "tag_prefix_topic": False,
            },
        },
        {
            "topic": "ie/#",
            "json_mapping": {
                "records": {
                    "array": "vals",
                    "name": "id",
                    "value": "val",
                    "timestamp": "ts",
                    "quality": "qc",
                },
                "timestamp_format": "iso8601",
                "tag_prefix_topic": False,
            },
        },
        {
            "topic": "bare/#",
            "json_mapping": {
                "records": {
                    "array": "",
                    "name": "tagname",
                    "value": "value",
                    "timestamp": "timestamp",
                    "quality": None,
                },
                "timestamp_format": "epoch_ms",
                "tag_prefix_topic": False,
            },
        },
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    kepware = {
        "timestamp": 1764500000900,
        "values": [
            {"id": "Line1.Press.Force", "v": 812.5, "q": True, "t": 1764500000120},
            {"id": "Line1.Press.Running", "v": True, "q": False, "t": 1764500000130},
            {"id": "Line1.Press.Broken", "q": True},  # no value: counted, skipped
            {"id": "Line1.Press.Count", "v": 17, "q": True},  # no own time: the message's
        ],
    }
    siemens = {
        "seq": 4,
        "vals": [
            {"id": "101", "qc": 3, "ts": "2026-11-30T12:00:00.250Z", "val": 36.6},
            {"id": "102", "qc": 1, "ts": "2026-11-30T12:00:00.250Z", "val": -4},
        ],
    }
    bare = [{"tagname": "Group A.Device C.Tag 42", "timestamp": 1651604184861, "value": 1291}]
    try:
        pub.publish("kepware/line1", json.dumps(kepware), qos=1)
        pub.publish("ie/databus", json.dumps(siemens), qos=1)
        pub.publish("bare/x", json.dumps(bare), qos=1)
        got = await collect(src, lambda g: len(g) >= 6)
    finally:
        closed(pub)
        await src.stop()
    by = {r.tag: r for r in got}
    assert set(by) == {
        "Line1.Press.Force",
        "Line1.Press.Running",
        "Line1.Press.Count",
        "101",
        "102",
        "Group A.Device C.Tag 42",
    }
    assert (by["Line1.Press.Force"].value, by["Line1.Press.Force"].timestamp) == (812.5, 1764500000.12)
    assert by["Line1.Press.Force"].quality is Quality.GOOD
    assert by["Line1.Press.Running"].value is True and by["Line1.Press.Running"].quality is Quality.BAD
    assert by["Line1.Press.Count"].timestamp == 1764500000.9
    assert (
        by["101"].value == 36.6 and by["101"].quality is Quality.GOOD and by["101"].timestamp == 1796040000.25
    )
    assert by["102"].value == -4 and by["102"].quality is Quality.UNCERTAIN
    assert by["Group A.Device C.Tag 42"].timestamp == 1651604184.861
    assert src.stats.errors_by_reason.get("missing_field") == 1


async def test_gateways_that_send_opc_ua_status_codes_as_record_quality_are_read_in_that_convention(
    mosquitto,
):
    """OPC UA gateways state a record's quality as an OPC UA StatusCode: a number (0 Good, 0x40.. Uncertain,
    0x80.. Bad), Ignition 8's QualityCode (the same bits as a signed int), Part 6's JSON object (Azure OPC
    Publisher's {"Code", "Symbol"}, Good omitting both) or node-opcua's {"value": n} (node-red-contrib-opcua's
    msg.statusCode). Before, quality_format was refused at start; without it a Good 0 was Siemens' qc 0, BAD,
    0x808A0000 and -2147483132 were refused and an object was not understood."""
    subs = [
        {
            "topic": "ua/#",
            "json_mapping": {
                "records": {
                    "array": "",
                    "name": "NodeId",
                    "value": "Value",
                    "timestamp": "SourceTimestamp",
                    "quality": "StatusCode",
                    "quality_format": "opcua",
                },
                "timestamp_format": "iso8601",
                "tag_prefix_topic": False,
            },
        },
        {
            "topic": "nodered/#",
            "json_mapping": {
                "records": {
                    "array": "",
                    "name": "topic",
                    "value": "payload",
                    "timestamp": None,
                    "quality": "statusCode",
                },
                "timestamp_field": None,
                "tag_prefix_topic": False,
            },
        },
        {
            "topic": "ignition/#",
            "json_mapping": {
                "records": {
                    "array": "tags",
                    "name": "name",
                    "value": "value",
                    "quality": "quality",
                    "quality_format": "opcua",
                },
                "timestamp_field": None,
                "tag_prefix_topic": False,
            },
        },
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    at = "2026-11-30T12:00:00.250Z"
    ua = [
        {"NodeId": "ns=3;s=Oven.Temp", "Value": 181.5, "SourceTimestamp": at, "StatusCode": 0},
        {"NodeId": "ns=3;s=Oven.Door", "Value": 0, "SourceTimestamp": at, "StatusCode": 0x808A0000},
        {"NodeId": "ns=3;s=Oven.Fan", "Value": 1200, "SourceTimestamp": at, "StatusCode": {}},
        {
            "NodeId": "ns=3;s=Oven.Heater",
            "Value": 3.2,
            "SourceTimestamp": at,
            "StatusCode": {"Code": 1083179008, "Symbol": "UncertainLastUsableValue"},
        },
        {
            "NodeId": "ns=3;s=Oven.Gone",
            "Value": 0,
            "StatusCode": {"Code": 2150891520, "Symbol": "BadNodeIdUnknown"},
        },
    ]
    nodered = [
        {"topic": "ns=2;s=Press.Force", "payload": 812.5, "statusCode": {"value": 0}},
        {"topic": "ns=2;s=Press.Stroke", "payload": 41.0, "statusCode": {"value": 2156527616}},
    ]
    ignition = {
        "tags": [
            {"name": "Line2/Pump/Flow", "value": 12.5, "quality": 192},
            {"name": "Line2/Pump/Speed", "value": 1480, "quality": -2147483132},  # Bad_Stale
            {"name": "Line2/Pump/Temp", "value": 61.0, "quality": 1073742081},  # Uncertain_LastKnownValue
            {"name": "Line2/Pump/Mode", "value": 2, "quality": "Good"},
        ]
    }
    try:
        pub.publish("ua/oven", json.dumps(ua), qos=1)
        pub.publish("nodered/press", json.dumps(nodered), qos=1)
        pub.publish("ignition/line2", json.dumps(ignition), qos=1)
        got = await collect(src, lambda g: len(g) >= 11)
    finally:
        closed(pub)
        await src.stop()
    q = {r.tag: r.quality for r in got}
    assert q == {
        "ns=3;s=Oven.Temp": Quality.GOOD,
        "ns=3;s=Oven.Door": Quality.BAD,
        "ns=3;s=Oven.Fan": Quality.GOOD,
        "ns=3;s=Oven.Heater": Quality.UNCERTAIN,
        "ns=3;s=Oven.Gone": Quality.BAD,
        "ns=2;s=Press.Force": Quality.GOOD,
        "ns=2;s=Press.Stroke": Quality.BAD,
        "Line2/Pump/Flow": Quality.GOOD,
        "Line2/Pump/Speed": Quality.BAD,
        "Line2/Pump/Temp": Quality.UNCERTAIN,
        "Line2/Pump/Mode": Quality.GOOD,
    }
    assert {r.timestamp for r in got if r.tag == "ns=3;s=Oven.Temp"} == {1796040000.25}
    assert not src.stats.errors_by_reason


async def test_broker_restart_resubscribes_and_messages_flow_again(mosquitto, caplog):
    import logging

    caplog.set_level(logging.INFO)
    src = await started(mosquitto.port, [{"topic": "r/#", "qos": 1}], reconnect_min_s=0.2, reconnect_max_s=1)
    try:
        mosquitto.restart(down_s=0.5)
        deadline = time.monotonic() + 10
        while src.state is not ConnectionState.CONNECTED and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert src.state is ConnectionState.CONNECTED
        await asyncio.sleep(0.2)
        pub = raw_client(mosquitto.port)
        pub.publish("r/x", b'{"v": 1}', qos=1)
        got = await collect(src, lambda g: len(g) >= 1)
        closed(pub)
    finally:
        await src.stop()
    assert [r.value for r in got] == [1]
    assert src.stats.reconnects == 1 and src.stats.errors_by_reason.get("broker_unreachable", 0) >= 1
    # a routine broker restart: WARNING, then INFO on reconnect; never an ERROR line or a traceback
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert any("reconnected to broker" in r.getMessage() for r in caplog.records)


async def test_unreachable_broker_goes_backoff_with_clear_error(mosquitto):
    port = mosquitto.port
    mosquitto.stop()
    src = MqttSource("mq", MqttSettings(port=port, subscriptions=[{"topic": "x"}]))
    await src.start()
    try:
        assert src.state is ConnectionState.BACKOFF
        assert "cannot reach broker 127.0.0.1" in src.stats.last_error
    finally:
        await src.stop()


@pytest.mark.parametrize("qos", [0, 1])
async def test_publish_is_received_by_a_raw_subscriber(mosquitto, qos):
    got: list = []
    sub = paho.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload, m.qos))
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("factory/#", 1)
    sub.loop_start()
    src = await started(mosquitto.port, [])
    try:
        await asyncio.sleep(0.2)
        await src.publish("factory/s/l/a/results/p", {"score": 0.5, "label": "ok"}, qos=qos)
        await src.publish("factory/s/l/a/events", "hello", qos=qos)
        for _ in range(1500):
            if len(got) >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        closed(sub)
        await src.stop()
    assert got[0] == ("factory/s/l/a/results/p", b'{"score":0.5,"label":"ok"}', qos)
    assert got[1][1] == b"hello"


async def test_sparkplug_births_data_deaths_and_rebirth_with_simulator(mosquitto):
    src = await started(mosquitto.port, [{"topic": "spBv1.0/plant/#", "codec": "sparkplug_b", "qos": 1}])
    fleet = SensorFleet("127.0.0.1", mosquitto.port, json_sensors=0, sparkplug_nodes=1, rate_hz=50, seed=1)
    fleet.start()
    try:
        got = await collect(src, lambda g: sum(r.tag == "edge0/motor1/current_a" for r in g) >= 5)
        tags = {r.tag for r in got}
        assert {
            "edge0/uptime_s",
            "edge0/motor1/current_a",
            "edge0/motor1/speed_rpm",
            "edge0/motor1/running",
        } <= tags
        assert all(math.isfinite(r.value) for r in got if r.tag == "edge0/motor1/current_a")
        # deliberate restart: NDEATH marks the node's tags BAD, new births bring GOOD data back
        fleet.restart_node(0)
        got = await collect(
            src,
            lambda g: (
                any(r.quality is Quality.BAD for r in g)
                and g[-1].quality is Quality.GOOD
                and g[-1].tag == "edge0/motor1/current_a"
            ),
        )
        bad = {r.tag for r in got if r.quality is Quality.BAD}
        assert "edge0/motor1/current_a" in bad and "edge0/uptime_s" in bad
        # an unknown alias triggers a counted error and a rebirth request the node answers
        births = src.sparkplug.births
        pub = raw_client(mosquitto.port)
        bogus = sp.encode(
            sp.Payload(int(time.time() * 1000), 200, [sp.Metric(None, 999, sp.DataType.DOUBLE, 1.0)])
        )
        pub.publish("spBv1.0/plant/DDATA/edge0/motor1", bogus, qos=1)
        await collect(src, lambda g: src.sparkplug.births >= births + 2)
        closed(pub)
    finally:
        fleet.stop()
        await src.stop()
    assert src.stats.errors_by_reason.get("unknown_alias") == 1
    assert src.sparkplug.rebirths_requested == 1
    assert src.sparkplug.births >= births + 2


async def test_sparkplug_data_before_birth_requests_rebirth(mosquitto):
    src = await started(mosquitto.port, [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}])
    seen: list = []
    watcher = paho.Client(CallbackAPIVersion.VERSION2)
    watcher.on_message = lambda c, u, m: seen.append((m.topic, sp.decode(m.payload)))
    watcher.connect("127.0.0.1", mosquitto.port)
    watcher.subscribe("spBv1.0/+/NCMD/#")
    watcher.loop_start()
    try:
        await asyncio.sleep(0.2)
        watcher.publish(
            "spBv1.0/g/NDATA/n9", sp.encode(sp.Payload(1, 3, [sp.Metric(None, 1, sp.DataType.DOUBLE, 1.0)]))
        )
        got = await collect(src, lambda g: False, 1.0)  # the adapter decodes as its items are consumed
    finally:
        closed(watcher)
        await src.stop()
    # normal after a host starts: counted as such and answered by a rebirth, not counted as an error
    assert got == [] and src.sparkplug.data_before_birth == 1 and src.notices.counts["data_before_birth"] == 1
    assert "data_before_birth" not in src.stats.errors_by_reason and src.stats.errors == 0
    topic, payload = seen[0]
    assert topic == "spBv1.0/g/NCMD/n9"
    assert payload.metrics[0].name == "Node Control/Rebirth" and payload.metrics[0].value is True


async def test_sparkplug_data_without_datatypes_reads_signed_integers_by_their_birth(mosquitto):
    """Sparkplug 3.0: data messages should not repeat a metric's datatype (Ignition and Tahu-based nodes
    leave it out). The wire carries Int8/16/32 as uint32 and Int64 as uint64 in two's complement, so -5
    as an Int32 arrived as 4294967291 before; the birth's datatype now reads it. A metric flagged
    is_null gives no value, even when the node also filled one: its tag's last value goes BAD."""
    src = await started(mosquitto.port, [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}])
    pub = raw_client(mosquitto.port)
    D = sp.DataType
    birth = sp.Payload(
        T0_MS + 1,
        0,
        [
            sp.Metric("bdSeq", None, D.INT64, 0),
            sp.Metric("Oven/Temp", 1, D.INT32, 20),
            sp.Metric("Oven/Offset", 2, D.INT8, 0),
            sp.Metric("Counter", 3, D.INT64, 0),
            sp.Metric("Count", 4, D.UINT32, 0),
        ],
    )
    data = sp._pb().Payload()
    data.timestamp, data.seq = T0_MS + 2, 1
    for alias, field, raw in [
        (1, "int_value", (-5) & 0xFFFFFFFF),
        (2, "int_value", (-3) & 0xFFFFFFFF),
        (3, "long_value", (-7) & (2**64 - 1)),
        (4, "int_value", 4_000_000_000),
    ]:
        m = data.metrics.add()
        m.alias = alias
        setattr(m, field, raw)
    null = data.metrics.add()
    null.alias, null.is_null, null.int_value = 1, True, 0
    try:
        pub.publish("spBv1.0/g/NBIRTH/oven1", sp.encode(birth), qos=1)
        pub.publish("spBv1.0/g/NDATA/oven1", data.SerializeToString(), qos=1)
        got = await collect(src, lambda g: len([r for r in g if r.timestamp == (T0_MS + 2) / 1000]) >= 5)
    finally:
        closed(pub)
        await src.stop()
    values = {r.tag.split("/", 1)[1]: r.value for r in got[:-1] if r.timestamp == (T0_MS + 2) / 1000}
    assert values == {"Oven/Temp": -5, "Oven/Offset": -3, "Counter": -7, "Count": 4_000_000_000}
    null = got[-1]  # the null metric: not its filled 0, the last value gone BAD
    assert (null.tag, null.value, null.quality) == ("oven1/Oven/Temp", -5, Quality.BAD)


def _pb_template(m, ref=None, definition=False):
    m.datatype = sp.DataType.TEMPLATE
    t = m.template_value
    t.is_definition = definition
    if ref is not None:
        t.template_ref = ref
    return t


async def test_sparkplug_template_instances_give_a_tag_per_member_and_commands_go_inside_them(mosquitto):
    """Ignition's MQTT Transmission sends UDTs as Sparkplug Templates: definitions (``_types_/Motor``) in
    the NBIRTH, instances in the DBIRTH, and data messages carrying only the members that changed, by the
    instance's alias, without datatypes. Before, every Template metric was skipped: a UDT's tags never
    arrived. A write to a member goes out as its instance carrying that member."""
    D = sp.DataType
    src = await started(mosquitto.port, [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}])
    pub = raw_client(mosquitto.port)
    cmds: list = []
    pub.on_message = lambda c, u, m: cmds.append((m.topic, m.payload))
    pub.subscribe("spBv1.0/g/DCMD/#", 1)
    nbirth = sp._pb().Payload()
    nbirth.timestamp, nbirth.seq = T0_MS + 1, 0
    _pb_metric(nbirth, "bdSeq", datatype=D.INT64, long_value=0)
    d = _pb_template(_pb_metric(nbirth, "_types_/Bearing"), definition=True)
    _pb_metric(d, "Vib", datatype=D.DOUBLE, double_value=0.0)
    d = _pb_template(_pb_metric(nbirth, "_types_/Motor"), definition=True)
    _pb_metric(d, "Speed", datatype=D.FLOAT, float_value=0.0)
    _pb_metric(d, "Temp", datatype=D.INT32, int_value=0)
    _pb_template(_pb_metric(d, "Bearing"), ref="Bearing")
    dbirth = sp._pb().Payload()
    dbirth.timestamp, dbirth.seq = T0_MS + 2, 1
    inst = _pb_template(_pb_metric(dbirth, "Motors/M1", alias=10), ref="Motor")
    _pb_metric(inst, "Speed", datatype=D.FLOAT, float_value=1500.0)
    _pb_metric(inst, "Temp", int_value=(-3) & 0xFFFFFFFF)  # no datatype here: the definition's is Int32
    b = _pb_template(_pb_metric(inst, "Bearing"), ref="Bearing")
    _pb_metric(b, "Vib", datatype=D.DOUBLE, double_value=0.5, timestamp=T0_MS + 3)
    ddata = sp._pb().Payload()
    ddata.timestamp, ddata.seq = T0_MS + 4, 2
    t = _pb_metric(ddata, alias=10).template_value  # by alias, no datatype, one changed member
    _pb_metric(t, "Temp", int_value=(-7) & 0xFFFFFFFF)
    try:
        pub.publish("spBv1.0/g/NBIRTH/edge", nbirth.SerializeToString(), qos=1)
        pub.publish("spBv1.0/g/DBIRTH/edge/line1", dbirth.SerializeToString(), qos=1)
        pub.publish("spBv1.0/g/DDATA/edge/line1", ddata.SerializeToString(), qos=1)
        got = await collect(src, lambda g: any(r.timestamp == (T0_MS + 4) / 1000 for r in g))
        await src.command("g", "edge", "line1", "Motors/M1/Speed", 1200.5)
        await src.command("g", "edge", "line1", "Motors/M1/Bearing/Vib", 0.25)
        for _ in range(300):
            if len(cmds) >= 2:
                break
            await asyncio.sleep(0.1)
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value, r.timestamp) for r in got] == [
        ("edge/line1/Motors/M1/Speed", 1500.0, (T0_MS + 2) / 1000),
        ("edge/line1/Motors/M1/Temp", -3, (T0_MS + 2) / 1000),
        ("edge/line1/Motors/M1/Bearing/Vib", 0.5, (T0_MS + 3) / 1000),
        ("edge/line1/Motors/M1/Temp", -7, (T0_MS + 4) / 1000),
    ]  # no tag for the definitions, and the data message updated only the member it carried
    assert src.stats.errors_by_reason == {}
    assert [topic for topic, _ in cmds] == ["spBv1.0/g/DCMD/edge/line1"] * 2
    speed, vib = (sp._pb().Payload.FromString(body).metrics[0] for _, body in cmds)
    assert (speed.name, speed.datatype, speed.template_value.template_ref) == (
        "Motors/M1",
        D.TEMPLATE,
        "Motor",
    )
    (member,) = speed.template_value.metrics
    assert (member.name, member.datatype, member.float_value) == ("Speed", D.FLOAT, 1200.5)
    (bearing,) = vib.template_value.metrics
    assert (bearing.name, bearing.template_value.template_ref) == ("Bearing", "Bearing")
    (member,) = bearing.template_value.metrics
    assert (member.name, member.datatype, member.double_value) == ("Vib", D.DOUBLE, 0.25)


async def test_sparkplug_quality_property_marks_a_stale_tag_bad_until_a_value_comes_without_it(mosquitto):
    """Ignition's nodes send a metric's quality as its "Quality" property when the tag is not good (a
    PLC link down: Bad_NotConnected, the last value repeated) and leave it out when it is good. Before,
    every Sparkplug reading was GOOD, so a model ran on a frozen value as if it were live."""
    D = sp.DataType
    src = await started(mosquitto.port, [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}])
    pub = raw_client(mosquitto.port)
    nbirth = sp._pb().Payload()
    nbirth.timestamp, nbirth.seq = T0_MS + 1, 0
    _pb_metric(nbirth, "bdSeq", datatype=D.INT64, long_value=0)
    _pb_metric(nbirth, "Line/Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
    messages = [nbirth]
    for seq, code in ((1, -2147483126), (2, 1073742081), (3, None)):  # Bad_NotConnected, Uncertain_LKV, none
        data = sp._pb().Payload()
        data.timestamp, data.seq = T0_MS + 1 + seq, seq
        m = _pb_metric(data, alias=1, double_value=20.0 + seq)
        if code is not None:
            m.properties.keys.append("Quality")
            pv = m.properties.values.add()
            pv.type, pv.int_value = D.INT32, code & 0xFFFFFFFF
        messages.append(data)
    try:
        for i, body in enumerate(messages):
            kind = "NBIRTH" if i == 0 else "NDATA"
            pub.publish(f"spBv1.0/g/{kind}/edge", body.SerializeToString(), qos=1)
        got = await collect(src, lambda g: len(g) >= 4)
    finally:
        closed(pub)
        await src.stop()
    assert [(r.value, r.quality) for r in got] == [
        (20.0, Quality.GOOD),
        (21.0, Quality.BAD),
        (22.0, Quality.UNCERTAIN),
        (23.0, Quality.GOOD),
    ]


async def test_sparkplug_a_null_metric_makes_its_tag_bad_instead_of_leaving_the_last_value_good(mosquitto):
    """Ignition's nodes send a tag whose value is gone (its PLC item removed, Bad_NotFound) as a metric
    flagged ``is_null``, with or without a Quality property, and a UDT instance with no value as a null
    Template metric. Before, it gave no reading at all: the tag (or the instance's member tags) kept its last
    value as GOOD, and models and rules went on with it. Now the last value is passed on BAD."""
    D = sp.DataType
    src = await started(mosquitto.port, [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}])
    pub = raw_client(mosquitto.port)
    nbirth = sp._pb().Payload()
    nbirth.timestamp, nbirth.seq = T0_MS + 1, 0
    _pb_metric(nbirth, "bdSeq", datatype=D.INT64, long_value=0)
    _pb_metric(nbirth, "Press", alias=1, datatype=D.DOUBLE, double_value=4.5)
    _pb_metric(nbirth, "Level", alias=2, datatype=D.INT32, int_value=7)
    _pb_metric(nbirth, "Spare", alias=3, datatype=D.DOUBLE, is_null=True)  # never had a value: no reading
    udt = _pb_template(_pb_metric(nbirth, "Pump", alias=4), ref="PumpType")
    _pb_metric(udt, "Speed", datatype=D.DOUBLE, double_value=1500.0)
    data = sp._pb().Payload()
    data.timestamp, data.seq = T0_MS + 2, 1
    m = _pb_metric(data, alias=1, is_null=True)
    m.properties.keys.append("Quality")
    pv = m.properties.values.add()
    pv.type, pv.int_value = D.INT32, (-2147483640) & 0xFFFFFFFF  # Bad_NotFound
    _pb_metric(data, alias=2, is_null=True, int_value=0)  # null flagged, a value filled all the same
    _pb_metric(data, alias=3, is_null=True)
    _pb_metric(data, alias=4, is_null=True)  # the whole UDT instance, by alias, no datatype
    last = sp._pb().Payload()
    last.timestamp, last.seq = T0_MS + 3, 2
    _pb_metric(last, alias=1, double_value=4.75)
    try:
        for kind, body in (("NBIRTH", nbirth), ("NDATA", data), ("NDATA", last)):
            pub.publish(f"spBv1.0/g/{kind}/edge", body.SerializeToString(), qos=1)
        got = await collect(src, lambda g: any(r.timestamp == (T0_MS + 3) / 1000 for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value, r.quality, r.timestamp) for r in got] == [
        ("edge/Press", 4.5, Quality.GOOD, (T0_MS + 1) / 1000),
        ("edge/Level", 7, Quality.GOOD, (T0_MS + 1) / 1000),
        ("edge/Pump/Speed", 1500.0, Quality.GOOD, (T0_MS + 1) / 1000),
        ("edge/Press", 4.5, Quality.BAD, (T0_MS + 2) / 1000),
        ("edge/Level", 7, Quality.BAD, (T0_MS + 2) / 1000),
        ("edge/Pump/Speed", 1500.0, Quality.BAD, (T0_MS + 2) / 1000),
        ("edge/Press", 4.75, Quality.GOOD, (T0_MS + 3) / 1000),
    ]


async def test_sparkplug_device_data_without_its_dbirth_is_skipped_and_a_rebirth_asked(mosquitto):
    """A DDATA of a device that has no DBIRTH in its node's session (the DBIRTH lost: Sparkplug births are
    QoS 0, which a broker drops for a slow subscriber; or data after its DDEATH). Before, it was read GOOD
    by name, and a value without a datatype by no birth: -5 as an Int32 became 4294967291. Now it is
    data_before_birth, skipped, and the node is asked a rebirth, whose DBIRTH brings the device back."""
    D = sp.DataType
    src = await started(mosquitto.port, [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}])
    pub = raw_client(mosquitto.port)
    cmds: list = []
    pub.on_message = lambda c, u, m: cmds.append(m.topic)
    pub.subscribe("spBv1.0/g/NCMD/#", 1)
    nbirth = sp._pb().Payload()
    nbirth.timestamp, nbirth.seq = T0_MS + 1, 0
    _pb_metric(nbirth, "bdSeq", datatype=D.INT64, long_value=0)
    _pb_metric(nbirth, "Running", alias=9, datatype=D.BOOLEAN, boolean_value=True)
    dbirth = sp._pb().Payload()
    dbirth.timestamp, dbirth.seq = T0_MS + 2, 1
    _pb_metric(dbirth, "Temp", datatype=D.INT32, int_value=20)
    unborn = sp._pb().Payload()  # a second device whose DBIRTH never came
    unborn.timestamp, unborn.seq = T0_MS + 3, 2
    _pb_metric(unborn, "Temp", int_value=(-5) & 0xFFFFFFFF)
    ddeath = sp._pb().Payload()
    ddeath.timestamp, ddeath.seq = T0_MS + 4, 3
    after = sp._pb().Payload()  # the dead device's data, stamped after its death
    after.timestamp, after.seq = int(time.time() * 1000) + 60_000, 4
    _pb_metric(after, "Temp", datatype=D.INT32, int_value=21)
    end = sp._pb().Payload()
    end.timestamp, end.seq = T0_MS + 5, 5
    _pb_metric(end, alias=9, boolean_value=False)  # read after all the above: the test's end mark
    try:
        await asyncio.sleep(0.2)  # the watcher's SUBACK
        for topic, body in (
            ("NBIRTH/edge", nbirth),
            ("DBIRTH/edge/oven1", dbirth),
            ("DDATA/edge/oven2", unborn),
            ("DDEATH/edge/oven1", ddeath),
            ("DDATA/edge/oven1", after),
            ("NDATA/edge", end),
        ):
            pub.publish(f"spBv1.0/g/{topic}", body.SerializeToString(), qos=1)
        got = await collect(src, lambda g: any(r.timestamp == (T0_MS + 5) / 1000 for r in g))
        for _ in range(300):
            if cmds:
                break
            await asyncio.sleep(0.1)
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value, r.quality) for r in got] == [
        ("edge/Running", True, Quality.GOOD),
        ("edge/oven1/Temp", 20, Quality.GOOD),
        ("edge/oven1/Temp", 20, Quality.BAD),
        ("edge/Running", False, Quality.GOOD),
    ]
    assert src.sparkplug.data_before_birth == 2 and src.notices.counts["data_before_birth"] == 2
    # one rebirth (rate-limited per node), not one per message
    assert src.sparkplug.rebirths_requested == 1 and cmds == ["spBv1.0/g/NCMD/edge"]


async def test_sparkplug_a_seq_gap_asks_one_rebirth_whose_birth_brings_the_lost_change(mosquitto):
    """Sparkplug data is sent only on change, at QoS 0: a message the broker dropped (a slow subscriber's
    queue full) left the value it carried unseen, and the tag stood at its older value as current until the
    metric changed again, hours later for a state. The gap was only counted. Now the node is asked a rebirth
    (Sparkplug 3.0's Reorder Timeout of zero), once however many gaps follow, and its NBIRTH brings the
    current value."""
    D = sp.DataType
    src = await started(mosquitto.port, [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}])
    node = raw_client(mosquitto.port)
    running = [False]  # the node's state
    t0 = int(time.time() * 1000)

    def nbirth():
        p = sp._pb().Payload()
        p.timestamp, p.seq = t0 + (100 if running[0] else 0), 0
        _pb_metric(p, "bdSeq", datatype=D.INT64, long_value=0)
        _pb_metric(p, "Running", alias=1, datatype=D.BOOLEAN, boolean_value=running[0])
        return p.SerializeToString()

    def ndata(seq, **value):
        p = sp._pb().Payload()
        p.timestamp, p.seq = t0 + seq, seq
        _pb_metric(p, alias=1, **value)
        return p.SerializeToString()

    asked: list = []

    def on_ncmd(c, u, m):  # the node answers a rebirth request with its birth, as Sparkplug has it
        asked.append(m.topic)
        c.publish("spBv1.0/g/NBIRTH/edge", nbirth(), qos=0)

    node.on_message = on_ncmd
    node.subscribe("spBv1.0/g/NCMD/edge", 1)
    try:
        await asyncio.sleep(0.2)  # the node's SUBACK
        node.publish("spBv1.0/g/NBIRTH/edge", nbirth(), qos=1)
        node.publish("spBv1.0/g/NDATA/edge", ndata(1, boolean_value=False), qos=1)
        running[0] = True  # seq 2 said so, and is lost on the way
        for seq in (3, 5):  # a repeat of seq 3, and another gap: still one rebirth
            node.publish("spBv1.0/g/NDATA/edge", sp.encode(sp.Payload(t0 + seq, seq)), qos=1)
            node.publish("spBv1.0/g/NDATA/edge", sp.encode(sp.Payload(t0 + seq, seq)), qos=1)
        got = await collect(src, lambda g: src.sparkplug.births >= 2 and g[-1].value is True)
    finally:
        closed(node)
        await src.stop()
    assert [r.value for r in got] == [False, False, True]
    assert src.sparkplug.rebirths_requested == 1 and asked == ["spBv1.0/g/NCMD/edge"]
    assert src.stats.errors_by_reason["seq_gap"] == 4  # 3 after 1, 3 again, 5 after 3, 5 again


async def test_sparkplug_a_node_whose_clock_runs_behind_is_good_again_at_its_rebirth(mosquitto):
    """A node's clock 3 s behind the gateway's (no NTP on the line). A death's BAD readings were stamped
    with the gateway's receive time, and that time then held the tags' order: the values of the node's next
    NBIRTH and a device's next DBIRTH, stamped by the node, were dropped as out of order, and the tags stayed
    BAD until they next changed. A DDEATH is now stale as of its own timestamp (Sparkplug 3.0's rule) and an
    NDEATH's receive time does not move a tag's order."""
    D = sp.DataType
    src = await started(mosquitto.port, [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}])
    pub = raw_client(mosquitto.port)
    t0 = int(time.time() * 1000) - 3000

    def payload(ts, seq, bd=None, **metrics):
        p = sp._pb().Payload()
        p.timestamp, p.seq = t0 + ts, seq
        if bd is not None:
            _pb_metric(p, "bdSeq", datatype=D.INT64, long_value=bd)
        for name, v in metrics.items():
            _pb_metric(p, name, datatype=D.DOUBLE, double_value=v)
        return p.SerializeToString()

    death = sp._pb().Payload()
    _pb_metric(death, "bdSeq", datatype=D.INT64, long_value=1)
    try:
        for topic, body in (
            ("NBIRTH/edge", payload(0, 0, 1, Temp=20.0)),
            ("DBIRTH/edge/pump", payload(0, 1, Flow=1.0)),
            ("DDEATH/edge/pump", payload(100, 2)),
            ("DBIRTH/edge/pump", payload(200, 3, Flow=2.0)),
            ("NDEATH/edge", death.SerializeToString()),
            ("NBIRTH/edge", payload(300, 0, 2, Temp=21.0)),
        ):
            pub.publish(f"spBv1.0/g/{topic}", body, qos=1)
        got = await collect(src, lambda g: g[-1].value == 21.0)
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value, r.quality) for r in got] == [
        ("edge/Temp", 20.0, Quality.GOOD),
        ("edge/pump/Flow", 1.0, Quality.GOOD),
        ("edge/pump/Flow", 1.0, Quality.BAD),
        ("edge/pump/Flow", 2.0, Quality.GOOD),
        ("edge/Temp", 20.0, Quality.BAD),
        ("edge/pump/Flow", 2.0, Quality.BAD),
        ("edge/Temp", 21.0, Quality.GOOD),
    ]
    assert got[2].timestamp == (t0 + 100) / 1000  # the DDEATH's own time
    assert "out_of_order" not in src.stats.errors_by_reason


async def test_sparkplug_3_arrays_are_read_as_1d_arrays_by_their_births_datatype(mosquitto):
    """Sparkplug 3.0 carries arrays (Int8Array .. DoubleArray, BooleanArray, DateTimeArray) as little-endian
    bytes in bytes_value, and a data message leaves their datatype out: a vibration node's FloatArray of
    samples gave no reading at all (counted as a DataSet, Bytes or File metric). They are now read by their
    datatype, or their birth's, as 1-D arrays; bytes that do not fit the type are wrong_type; a StringArray
    is the JSON text of its strings (it gave none, said once as unsupported_metric)."""
    D = sp.DataType
    src = await started(mosquitto.port, [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}])
    pub = raw_client(mosquitto.port)
    wave = np.array([0.5, -1.25, 3.0], dtype="<f4")
    nbirth = sp._pb().Payload()
    nbirth.timestamp, nbirth.seq = T0_MS + 1, 0
    _pb_metric(nbirth, "bdSeq", datatype=D.INT64, long_value=0)
    _pb_metric(nbirth, "Vib", alias=1, datatype=30, bytes_value=wave.tobytes())  # FloatArray
    _pb_metric(nbirth, "Steps", alias=2, datatype=24, bytes_value=np.array([-1, 7], "<i4").tobytes())
    # BooleanArray: the count, then the values 8 a byte, first in the top bit (the specification's example)
    bits = [False, False, True, True, False, True, False, False, True, True, False, True]
    _pb_metric(nbirth, "Gates", alias=3, datatype=32, bytes_value=b"\x0c\x00\x00\x00\x34\xd0")
    _pb_metric(nbirth, "Names", alias=4, datatype=33, bytes_value=b"ABC\x00hello\x00")  # StringArray
    data = sp._pb().Payload()
    data.timestamp, data.seq = T0_MS + 2, 1
    _pb_metric(data, alias=1, bytes_value=(wave * 2).tobytes())  # no datatype: the birth's
    _pb_metric(data, alias=2, bytes_value=b"\x01\x02\x03")  # 3 bytes: no Int32Array
    _pb_metric(data, alias=2, bytes_value=np.array([5], "<i4").tobytes(), timestamp=T0_MS + 3)
    try:
        for kind, body in (("NBIRTH", nbirth), ("NDATA", data)):
            pub.publish(f"spBv1.0/g/{kind}/edge", body.SerializeToString(), qos=1)
        got = await collect(src, lambda g: any(r.timestamp == (T0_MS + 3) / 1000 for r in g))
    finally:
        closed(pub)
        await src.stop()
    shown = [
        (r.tag, r.value.tolist() if isinstance(r.value, np.ndarray) else r.value, r.timestamp) for r in got
    ]
    assert shown == [
        ("edge/Vib", [0.5, -1.25, 3.0], (T0_MS + 1) / 1000),
        ("edge/Steps", [-1, 7], (T0_MS + 1) / 1000),
        ("edge/Gates", bits, (T0_MS + 1) / 1000),
        ("edge/Names", '["ABC", "hello"]', (T0_MS + 1) / 1000),
        ("edge/Vib", [1.0, -2.5, 6.0], (T0_MS + 2) / 1000),
        ("edge/Steps", [5], (T0_MS + 3) / 1000),
    ]
    assert src.stats.errors_by_reason == {"wrong_type": 1}
    assert "unsupported_metric" not in src.notices.counts


async def test_sparkplug_nodes_of_one_name_in_two_groups_do_not_mix_their_values_in_one_tag(mosquitto):
    """Tags are named without the Sparkplug group, so under spBv1.0/# two lines' nodes both called plc1 fed
    one tag plc1/Temp, GOOD, with the two machines' values in turn. The second group's messages are now
    skipped while the first's node lives, and said once with the fix; once that node dies, the other group's
    node is asked its birth and takes the name."""
    D = sp.DataType
    src = await started(mosquitto.port, [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}])
    pub = raw_client(mosquitto.port)
    t0 = int(time.time() * 1000)

    def payload(ts, seq, temp=None, alias=1, bd=None):
        p = sp._pb().Payload()
        p.timestamp, p.seq = t0 + ts, seq
        if bd is not None:
            _pb_metric(p, "bdSeq", datatype=D.INT64, long_value=bd)
            _pb_metric(p, "Temp", alias=alias, datatype=D.DOUBLE, double_value=temp)
        else:
            _pb_metric(p, alias=alias, double_value=temp)
        return p.SerializeToString()

    death = sp._pb().Payload()
    _pb_metric(death, "bdSeq", datatype=D.INT64, long_value=0)
    try:
        for topic, body in (
            ("LineA/NBIRTH/plc1", payload(0, 0, 20.0, bd=0)),
            ("LineB/NBIRTH/plc1", payload(0, 0, 80.0, bd=0)),
            ("LineA/NDATA/plc1", payload(1, 1, 21.0)),
            ("LineB/NDATA/plc1", payload(1, 1, 81.0)),
            ("LineA/NDEATH/plc1", death.SerializeToString()),
            ("LineB/NDATA/plc1", payload(2, 2, 82.0)),  # LineA's node is gone: LineB's is asked its birth
            ("LineB/NBIRTH/plc1", payload(3, 0, 83.0, bd=0)),
        ):
            pub.publish(f"spBv1.0/{topic}", body, qos=1)
        got = await collect(src, lambda g: g[-1].value == 83.0)
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value, r.quality) for r in got] == [
        ("plc1/Temp", 20.0, Quality.GOOD),
        ("plc1/Temp", 21.0, Quality.GOOD),
        ("plc1/Temp", 21.0, Quality.BAD),
        ("plc1/Temp", 83.0, Quality.GOOD),
    ]
    clash = src.notices.status()["node_name_clash"]
    assert clash["count"] == 2 and "'LineA' and in group 'LineB'" in clash["message"]
    assert src.sparkplug.data_before_birth == 1 and src.sparkplug.rebirths_requested == 1


async def test_sparkplug_historical_and_unsupported_metrics_drive_nothing_and_say_so(mosquitto):
    """After an outage, Ignition Edge's store-and-forward sends the values it buffered with
    ``is_historical``: they are not current, so they give no reading (an alarm or a PLC write now would act
    on an old state) and are not the value a death marks BAD; they are counted as a notice."""
    D = sp.DataType
    src = await started(mosquitto.port, [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}])
    pub = raw_client(mosquitto.port)
    now_ms = int(time.time() * 1000)
    nbirth = sp._pb().Payload()
    nbirth.timestamp, nbirth.seq = now_ms - 1000, 0
    _pb_metric(nbirth, "bdSeq", datatype=D.INT64, long_value=0)
    _pb_metric(nbirth, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
    recipe = _pb_metric(nbirth, "Recipe", alias=2, datatype=D.DATASET)  # an Ignition dataset tag
    recipe.dataset_value.num_of_columns, recipe.dataset_value.columns[:] = 1, ["step"]
    _pb_metric(nbirth, "Blob", alias=3, datatype=D.BYTES, bytes_value=b"\x00\x01")
    data = sp._pb().Payload()
    data.timestamp, data.seq = now_ms, 1
    for i, v in enumerate((90.0, 95.0)):  # buffered during the outage, sent after the current value
        m = _pb_metric(data, alias=1, double_value=v)
        m.timestamp, m.is_historical = now_ms - 600_000 + i, True
    _pb_metric(data, alias=1, double_value=21.0).timestamp = now_ms
    late = sp._pb().Payload()
    late.timestamp, late.seq = now_ms + 1, 2
    m = _pb_metric(late, alias=1, double_value=99.0)
    m.timestamp, m.is_historical = now_ms - 500_000, True
    death = sp._pb().Payload()
    _pb_metric(death, "bdSeq", datatype=D.INT64, long_value=0)
    try:
        for kind, body in (("NBIRTH", nbirth), ("NDATA", data), ("NDATA", late), ("NDEATH", death)):
            pub.publish(f"spBv1.0/g/{kind}/edge", body.SerializeToString(), qos=1)
        got = await collect(src, lambda g: any(r.quality is Quality.BAD for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.value, r.quality) for r in got] == [
        (20.0, Quality.GOOD),
        (21.0, Quality.GOOD),
        (21.0, Quality.BAD),
    ]
    assert src.notices.status()["historical"]["count"] == 3
    # a Bytes metric gives no reading either, and says so once (before: silently nothing); a DataSet without
    # rows gives none, and is no error (one with rows: test_sparkplug_dataset_columns_are_read_as_arrays)
    unsupported = src.notices.status()["unsupported_metric"]
    assert unsupported["count"] == 1 and "metric 'Blob' is a Bytes or File metric" in unsupported["message"]
    assert not src.stats.errors_by_reason.get("out_of_order")
    # the flag survives our own encoder, as Tahu's nodes send it
    back = sp.decode(sp.encode(sp.Payload(metrics=[sp.Metric("x", value=1.0, is_historical=True)], seq=0)))
    assert back.metrics[0].is_historical


@pytest.mark.parametrize("guard", [300.0, 0.0])
async def test_a_reading_stamped_years_ahead_does_not_silence_its_tag(mosquitto, guard):
    """A device whose clock jumped years ahead (or sent microseconds as milliseconds) once: kept, that
    time made every later reading of the tag look out of order, and the tag went silent until the wall
    clock caught up. Over ``max_clock_skew_s`` ahead the receive time is used and counted, on plain JSON,
    gateway records and Sparkplug alike; a device's buffered old readings keep their times."""
    D = sp.DataType
    subs = [
        {"topic": "j/#", "json_mapping": {"timestamp_field": "ts", "timestamp_format": "epoch_ms"}},
        {"topic": "kep/#", "json_mapping": {"records": {}, "timestamp_format": "epoch_ms"}},
        {"topic": "spBv1.0/#", "codec": "sparkplug_b"},
    ]
    src = await started(mosquitto.port, subs, max_clock_skew_s=guard)
    pub = raw_client(mosquitto.port)
    now_ms = int(time.time() * 1000)
    ahead_ms = now_ms * 1000  # microseconds where milliseconds were meant
    old_ms = now_ms - 6 * 3600 * 1000  # a buffer sent after a six-hour outage
    nbirth = sp._pb().Payload()
    nbirth.timestamp, nbirth.seq = now_ms, 0
    _pb_metric(nbirth, "bdSeq", datatype=D.INT64, long_value=0)
    _pb_metric(nbirth, "Temp", alias=1, datatype=D.DOUBLE, double_value=1.0).timestamp = old_ms
    sp_data = []
    for seq, ts in ((1, ahead_ms), (2, now_ms + 1)):
        data = sp._pb().Payload()
        data.timestamp, data.seq = ts, seq
        _pb_metric(data, alias=1, double_value=1.0 + seq).timestamp = ts
        sp_data.append(data.SerializeToString())
    try:
        for i, ts in enumerate((old_ms, ahead_ms, now_ms + 1)):
            pub.publish("j/1", json.dumps({"ts": ts, "v": i + 1}), qos=1)
            pub.publish(
                "kep/1", json.dumps({"timestamp": ts, "values": [{"id": "w", "v": i + 1, "t": ts}]}), qos=1
            )
        pub.publish("spBv1.0/g/NBIRTH/edge", nbirth.SerializeToString(), qos=1)
        for body in sp_data:
            pub.publish("spBv1.0/g/NDATA/edge", body, qos=1)
        # unguarded, the 3 readings after the ones years ahead never come: the window as it was (10 s)
        got = await collect(src, lambda g: len(g) >= 9, 10)
    finally:
        closed(pub)
        await src.stop()
    by_tag: dict = {}
    for r in got:
        by_tag.setdefault(r.tag, []).append(r)
    if guard:
        assert {tag: [r.value for r in rs] for tag, rs in by_tag.items()} == {
            "j/1/v": [1, 2, 3],
            "kep/1/w": [1, 2, 3],
            "edge/Temp": [1.0, 2.0, 3.0],
        }
        for rs in by_tag.values():
            assert rs[0].timestamp == old_ms / 1000  # the buffered reading keeps its time
            assert rs[1].timestamp == rs[1].received_at  # the one years ahead gets the receive time
            assert rs[2].timestamp == (now_ms + 1) / 1000
        assert src.stats.errors_by_reason.get("clock_skew") == 3
        assert "max_clock_skew_s 300" in (src.stats.last_error or "")
        assert not src.stats.errors_by_reason.get("out_of_order")
    else:  # unguarded: the reading after the one years ahead is dropped as out of order
        assert all([r.value for r in rs][-1] == 2 for rs in by_tag.values()) and len(by_tag) == 3
        assert src.stats.errors_by_reason.get("out_of_order") == 3


async def test_a_retained_message_is_the_brokers_last_value_not_a_live_reading(mosquitto):
    """A device that publishes with the retain flag leaves its last value at the broker for good: a sensor
    that died yesterday still hands it to every new subscription, stamped with the receive time when its
    payload has none. Such a message gives quality uncertain (default), or is taken as live or not read,
    by its subscription's ``retained``; the same topic's next message, passed on live, is good although
    its publisher set the flag too. A retained Sparkplug birth (against the spec) still teaches aliases."""
    D = sp.DataType
    pub = raw_client(mosquitto.port)
    retained = {
        "ret/oven/t": json.dumps({"temperature": 95.0}),  # no timestamp: only the receive time
        "ret/kep": json.dumps(
            {"timestamp": 1, "values": [{"id": "w", "v": 1, "q": False}, {"id": "x", "v": 2}]}
        ),
        "ret/recipe": json.dumps({"speed_setpoint": 1200}),
        "ret/old": json.dumps({"v": 7}),
    }
    birth = sp._pb().Payload()
    birth.timestamp, birth.seq = int((time.time() - 3600) * 1000), 0  # an hour old: not fresh
    _pb_metric(birth, "bdSeq", datatype=D.INT64, long_value=0)
    _pb_metric(birth, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
    retained["spBv1.0/ret/NBIRTH/edge"] = birth.SerializeToString()
    for topic, body in retained.items():
        pub.publish(topic, body, qos=1, retain=True).wait_for_publish(5)
    subs = [
        {"topic": "ret/oven/#"},
        {"topic": "ret/kep", "json_mapping": {"records": {}, "timestamp_format": "epoch_ms"}},
        {"topic": "ret/recipe", "retained": "live"},
        {"topic": "ret/old", "retained": "skip"},
        {"topic": "spBv1.0/ret/#", "codec": "sparkplug_b"},
    ]
    src = await started(mosquitto.port, subs)
    try:
        first = await collect(src, lambda g: len(g) >= 5)
        pub.publish("ret/oven/t", json.dumps({"temperature": 96.0}), qos=1, retain=True).wait_for_publish(5)
        data = sp._pb().Payload()
        data.timestamp, data.seq = int(time.time() * 1000), 1
        _pb_metric(data, alias=1, double_value=21.0)
        pub.publish("spBv1.0/ret/NDATA/edge", data.SerializeToString(), qos=1).wait_for_publish(5)
        live = await collect(src, lambda g: len(g) >= 2)
    finally:
        for topic in retained:  # an empty retained message clears the broker's copy
            pub.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        closed(pub)
        await src.stop()
    q = {r.tag: (r.value, r.quality) for r in first}
    assert q == {
        "ret/oven/t/temperature": (95.0, Quality.UNCERTAIN),
        "ret/kep/w": (1, Quality.BAD),  # a record the gateway marked bad stays bad
        "ret/kep/x": (2, Quality.UNCERTAIN),
        "ret/recipe/speed_setpoint": (1200, Quality.GOOD),  # retained: live
        "edge/Temp": (20.0, Quality.UNCERTAIN),
    }, q
    assert {r.tag: (r.value, r.quality) for r in live} == {
        "ret/oven/t/temperature": (96.0, Quality.GOOD),
        "edge/Temp": (21.0, Quality.GOOD),  # by the alias its retained birth declared
    }
    assert src.sparkplug.node_alive("ret", "edge")  # its live NDATA shows it lives: commands go out
    notices = src.notices.status()
    assert notices["retained"]["count"] == 4 and "retained: live" in notices["retained"]["message"]
    assert notices["retained_skipped"]["count"] == 1 and not src.stats.errors_by_reason


async def test_one_hostile_message_is_counted_and_skipped_and_the_source_reads_on(mosquitto):
    """JSON numbers of 310-4300 digits pass Python's parser and fit no float64 (as a value, a timestamp, a
    waveform's item or its rate); a Sparkplug metric name that is not UTF-8 comes out of protobuf as bytes.
    Each once ended the source's reader for good: every later message of every device on it was lost.
    Now each is refused with its reason and the next message is read."""
    big = "1" + "0" * 400
    birth = sp.encode(
        sp.Payload(
            1000,
            0,
            [
                sp.Metric("bdSeq", None, sp.DataType.INT64, 0),
                sp.Metric("temp", 1, sp.DataType.DOUBLE, 20.0),
            ],
        )
    )
    good = sp.encode(sp.Payload(1001, 1, [sp.Metric(None, 1, sp.DataType.DOUBLE, 21.0)]))
    bad_name = sp.encode(sp.Payload(1002, 2, [sp.Metric("te_mp", None, sp.DataType.DOUBLE, 99.0)]))
    bad_name = bad_name.replace(b"te_mp", b"te\xffmp")
    subs = [
        {"topic": "j/#"},
        {"topic": "w/#", "json_mapping": {"values": {"w": "w"}}},
        {"topic": "spBv1.0/#", "codec": "sparkplug_b"},
    ]
    src = await started(mosquitto.port, subs, out_of_order="keep", max_clock_skew_s=0)
    pub = raw_client(mosquitto.port)
    sent = [
        ("j/s1", '{"v": 1}'),
        ("j/s1", f'{{"v": {big}}}'),
        ("j/s1", f'{{"ts": {big}, "v": 2}}'),
        ("w/s1", f'{{"w": [1, {big}]}}'),
        ("w/s1", f'{{"w": [1, 2], "sample_rate_hz": {big}}}'),
        ("spBv1.0/g/NBIRTH/n1", birth),
        ("spBv1.0/g/NDATA/n1", bad_name),
        ("spBv1.0/g/NDATA/n1", good),
        ("j/s1", '{"v": 3}'),
    ]
    try:
        for topic, payload in sent:
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        got = await collect(src, lambda g: any(r.tag == "j/s1/v" and r.value == 3 for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got if r.quality is Quality.GOOD] == [
        ("j/s1/v", 1),
        ("n1/temp", 20.0),
        ("n1/temp", 21.0),
        ("j/s1/v", 3),
    ]
    # a value or waveform item past float64's range is an infinity, passed on BAD (non_finite: bad)
    bad = [
        (r.tag, r.value.tolist() if hasattr(r.value, "tolist") else r.value)
        for r in got
        if r.quality is Quality.BAD
    ]
    assert bad == [("j/s1/v", float("inf")), ("w/s1/w", [1.0, float("inf")])]
    errors = src.stats.errors_by_reason
    assert errors["non_finite"] == 3 and errors["wrong_type"] == 1 and errors["garbage_protobuf"] == 1
    assert "decode_failed" not in errors  # each refused by its own check, none by the backstop


async def test_an_alias_given_to_two_metrics_is_never_read_into_either(mosquitto):
    """Sparkplug aliases are unique across a node and its devices. A node whose device birth reuses the
    alias of a node metric (or a birth that gives one alias twice) made its data land, GOOD, in whichever
    metric was declared last: the node's pressure read as the pump's flow. Such an alias is now named
    (``alias_collision``): one birth's two metrics are read by it neither, and a device's birth reusing its
    node's is refused it (the node's NDATA by it is the node's pressure, never the pump's flow); other aliases
    read on."""
    from devices.mqtt.client import MqttBadTopic

    nbirth = sp.encode(
        sp.Payload(
            1000,
            0,
            [
                sp.Metric("bdSeq", None, sp.DataType.INT64, 0),
                sp.Metric("pressure", 7, sp.DataType.DOUBLE, 1.5),
                sp.Metric("temp", 8, sp.DataType.DOUBLE, 20.0),
                sp.Metric("level", 9, sp.DataType.DOUBLE, 0.5),
                sp.Metric("speed", 9, sp.DataType.DOUBLE, 3.0),  # the same alias twice in one birth
            ],
        )
    )
    dbirth = sp.encode(sp.Payload(1001, 1, [sp.Metric("flow", 7, sp.DataType.DOUBLE, 30.0)]))
    ndata = sp.encode(
        sp.Payload(
            1002,
            2,
            [
                sp.Metric(None, 7, sp.DataType.DOUBLE, 9.9),
                sp.Metric(None, 9, sp.DataType.DOUBLE, 4.4),
                sp.Metric(None, 8, sp.DataType.DOUBLE, 21.0),
            ],
        )
    )
    src = await started(mosquitto.port, [{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}])
    pub = raw_client(mosquitto.port)
    try:
        for topic, payload in (
            ("spBv1.0/g/NBIRTH/n1", nbirth),
            ("spBv1.0/g/DBIRTH/n1/pump", dbirth),
            ("spBv1.0/g/NDATA/n1", ndata),
        ):
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        got = await collect(src, lambda g: any(r.value == 21.0 for r in g))
        # a topic no message may go to: refused before paho sends it (a NUL made the broker drop the
        # connection, and every subscription with it)
        for bad in ("plant/line\x00x", "plant/+/results", ""):
            with pytest.raises(MqttBadTopic, match="cannot publish to"):
                await src.publish(bad, {"v": 1}, qos=1)
        pub.publish("spBv1.0/g/NDATA/n1", ndata.replace(b"\x18\x02", b"\x18\x03"), qos=1)
        later = await collect(src, lambda g: any(r.value == 21.0 for r in g))
    finally:
        closed(pub)
        await src.stop()
    readings = [(r.tag, r.value) for r in got]
    # the births' own values are by name; the NDATA by alias 7 is the node's pressure (the pump was refused
    # it), by alias 9 (given twice by one birth) skipped
    assert ("n1/pump/flow", 9.9) not in readings and ("n1/pressure", 9.9) in readings
    assert not any(r.value == 4.4 for r in got)
    assert ("n1/temp", 21.0) in readings and ("n1/pump/flow", 30.0) in readings
    assert src.stats.errors_by_reason["alias_collision"] == 4  # two births' clashes, 2 x alias 9's data
    assert "unknown_alias" not in src.stats.errors_by_reason
    assert src.stats.reconnects == 0 and [r.value for r in later] == [9.9, 21.0]


def suback_broker(connack: bytes, suback: bytes) -> socket.socket:
    """A scripted broker listening on a free port for one client: ``connack`` answers its CONNECT, and each
    SUBSCRIBE is answered with a SUBACK of ``suback`` after the packet id (MQTT 5: properties, then reason
    codes; 3.1.1: the codes alone), for the answers Mosquitto cannot be made to give."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while (packet := read_packet(conn)) is not None:
                kind, body = packet
                if kind == 1:  # CONNECT
                    conn.sendall(connack)
                elif kind == 8:  # SUBSCRIBE
                    conn.sendall(b"\x90" + bytes([2 + len(suback)]) + body[:2] + suback)
                elif kind == 14:  # DISCONNECT
                    return

    threading.Thread(target=serve, daemon=True).start()
    return server


async def test_a_subscription_the_broker_downgrades_or_refuses_is_named(mosquitto, tmp_path):
    """A broker limited to QoS 0 (Mosquitto's max_qos) grants a QoS 1 subscription as QoS 0: what is
    published while the gateway is away is not kept for it. A broker whose ACL refuses a filter answers
    SUBACK 0x80 (MQTT 3.1.1): nothing on it ever arrives. Both were silent (the source CONNECTED, no error);
    each is now named with the filter."""
    from tests.support.peers import Mosquitto

    broker = Mosquitto(tmp_path / "mosq", extra_conf="max_qos 0").start()
    try:
        src = await started(broker.port, [{"topic": "plant/#", "qos": 1}, {"topic": "cell/#", "qos": 0}])
        await asyncio.sleep(0.2)
        await src.stop()
    finally:
        broker.stop()
    notes = src.notices.status()
    assert notes["qos_downgraded"]["count"] == 1, notes  # plant/# only: cell/# asked for QoS 0
    assert "granted QoS 0 for 'plant/#' (asked 1)" in notes["qos_downgraded"]["message"]

    # SUBACK 0x80: Mosquitto 2.0 grants every filter and applies its ACL per message, so a scripted
    # MQTT 3.1.1 broker answers here (CONNACK, then SUBACK with 0x80 for the first filter, QoS 1 the second)
    server = suback_broker(b"\x20\x02\x00\x00", b"\x80\x01")
    port = server.getsockname()[1]
    src = await started(port, [{"topic": "secret/#", "qos": 1}, {"topic": "plant/#", "qos": 1}])
    await asyncio.sleep(0.2)
    await src.stop()
    server.close()
    assert src.stats.errors_by_reason == {"subscribe_refused": 1}
    assert "refused the subscription to 'secret/#'" in src.stats.last_error and "ACL" in src.stats.last_error


@pytest.mark.parametrize(
    ("subs", "code", "fix"),
    [
        (["$share/g1/plant/#"], 0x9E, "subscribe unshared"),
        (["plant/+/temp"], 0xA2, "name each topic in full"),
        (["a/#", "b/#"], 0xA1, "set protocol mqtt311"),
        (["plant/#"], 0x97, "quota"),
        (["plant/#"], 0x8F, "check the filter against the broker's rules"),
        (["secret/#"], 0x87, "ACL"),
    ],
)
async def test_mqtt5_a_subscription_refused_for_what_the_broker_lacks_is_told_its_own_fix(subs, code, fix):
    """An MQTT 5 broker refuses a subscription with a reason code saying why: 0x9E shared subscriptions not
    supported, 0xA2 wildcards not supported (AWS IoT Core with some policies), 0xA1 subscription
    identifiers not supported, 0x97 quota exceeded, 0x8F topic filter invalid. Each was said as 'check the
    broker's ACL', which none of them is; each now names its own fix, 0x87 (not authorized) still the ACL.
    Mosquitto sends none of the first five, so a scripted MQTT 5 broker answers here (CONNACK, then each
    SUBSCRIBE refused with ``code``)."""
    # CONNACK accepted, no properties; each SUBSCRIBE (one filter each): no properties, the refusal
    server = suback_broker(b"\x20\x03\x00\x00\x00", b"\x00" + bytes([code]))
    port = server.getsockname()[1]
    src = await started(port, [{"topic": t} for t in subs], protocol="mqtt5")
    await asyncio.sleep(0.2)
    await src.stop()
    server.close()
    assert src.stats.errors_by_reason == {"subscribe_refused": len(subs)}
    assert f"refused the subscription to {subs[-1]!r}" in src.stats.last_error
    assert fix in src.stats.last_error, src.stats.last_error
    assert ("ACL" in src.stats.last_error) is (code == 0x87)


async def test_a_primary_host_id_publishes_state_online_and_the_broker_says_offline_when_it_dies(mosquitto):
    """Edge nodes told to wait for a primary host application (Ignition Edge, MQTT Transmission) publish
    nothing until its Sparkplug 3.0 STATE says online. With ``sparkplug.host_id`` the source subscribes,
    then publishes ``spBv1.0/STATE/<id>`` = {"online": true, "timestamp": T} retained; its connection's will
    is the same with online false, which the broker sends if the gateway dies; a clean stop sends it
    itself. A stale "offline" seen while connected (the will of a connection the broker dropped late) is
    answered with "online" again."""
    topic = "spBv1.0/STATE/scada-gw1"
    seen: list[dict] = []
    watcher = raw_client(mosquitto.port)
    watcher.on_message = lambda c, u, m: seen.append(json.loads(m.payload))
    watcher.subscribe(topic, 1)
    subs = [{"topic": "spBv1.0/plant/#", "codec": "sparkplug_b"}]
    src = await started(mosquitto.port, subs, sparkplug={"host_id": "scada-gw1"})
    try:
        async with asyncio.timeout(20):
            while not seen:
                await asyncio.sleep(0.02)
        ts = seen[0]["timestamp"]
        assert seen[0] == {"online": True, "timestamp": ts} and abs(ts / 1000 - time.time()) < 60
        late = raw_client(mosquitto.port)  # a node starting later reads the retained STATE
        got: list[dict] = []
        late.on_message = lambda c, u, m: got.append(json.loads(m.payload))
        late.subscribe(topic, 1)
        async with asyncio.timeout(20):
            while not got:
                await asyncio.sleep(0.02)
        assert got[-1] == {"online": True, "timestamp": ts}
        closed(late)
        # the will of a connection the broker dropped late, arriving while we are connected: put right
        pub = raw_client(mosquitto.port)
        pub.publish(
            topic, json.dumps({"online": False, "timestamp": ts}), qos=1, retain=True
        ).wait_for_publish(5)
        async with asyncio.timeout(20):
            while seen[-1]["online"] is not True or len(seen) < 3:
                await asyncio.sleep(0.02)
        closed(pub)
    finally:
        await src.stop()  # clean: says offline itself
    async with asyncio.timeout(20):
        while seen[-1]["online"] is not False:
            await asyncio.sleep(0.02)
    assert seen[-1] == {"online": False, "timestamp": ts}
    # a gateway that dies (power cut): the broker sends the will
    src = await started(mosquitto.port, subs, sparkplug={"host_id": "scada-gw1"})
    pump = asyncio.create_task(collect(src, lambda g: False, 60))  # the host decodes what it is handed
    async with asyncio.timeout(20):
        while seen[-1]["online"] is not True:
            await asyncio.sleep(0.02)
    ts2 = seen[-1]["timestamp"]
    node = raw_client(mosquitto.port)  # an edge node the gateway knows when its connection dies
    node.publish("spBv1.0/plant/NBIRTH/n1", sp.encode(sp.Payload(1, 0, [])), qos=1).wait_for_publish(5)
    watcher.message_callback_add(  # in the order the broker passes them on: STATE, and rebirth requests
        "spBv1.0/plant/NCMD/#", lambda c, u, m: seen.append({"ncmd": m.topic})
    )
    watcher.subscribe("spBv1.0/plant/NCMD/#", 1)
    async with asyncio.timeout(20):
        while src.sparkplug.births < 1:
            await asyncio.sleep(0.02)
    n = len(seen)
    src._client.socket().close()  # the TCP connection gone without a DISCONNECT
    async with asyncio.timeout(20):
        while not any(m == {"online": False, "timestamp": ts2} for m in seen[n:]):
            await asyncio.sleep(0.02)
    # paho reconnects: the new connection's birth (and will) carry a newer time, so that a node that
    # takes only newer STATE messages sees it online again; it is the connection's first message, before
    # the rebirth the gateway asks of the node it knew (Sparkplug 3.0: the STATE birth comes first)
    async with asyncio.timeout(20):
        while not any("ncmd" in m for m in seen[n:]):
            await asyncio.sleep(0.02)
    after = [m for m in seen[n:] if m.get("online") is not False]
    first_ncmd = after.index({"ncmd": "spBv1.0/plant/NCMD/n1"})
    assert first_ncmd > 0 and all(m["online"] and m["timestamp"] > ts2 for m in after[:first_ncmd]), after
    pump.cancel()
    await src.stop()
    closed(node)
    closed(watcher)
    with pytest.raises(ValueError, match="will and sparkplug.host_id both set the connection's will"):
        MqttSettings(sparkplug={"host_id": "a"}, will={"topic": "x"})
    with pytest.raises(ValueError, match="host_id"):
        MqttSettings(sparkplug={"host_id": "a/b"})


async def test_a_primary_host_speaks_sparkplug_2_2_state_to_older_edge_nodes(mosquitto):
    """Ignition and MQTT Transmission releases before Sparkplug 3.0 wait for ``STATE/<host_id>`` = the
    text ONLINE (retained), outside the spBv1.0 namespace, and take OFFLINE as the host gone. With
    ``state_version: "2.2"`` the source publishes that form: online after subscribing, OFFLINE as its will
    and on a clean stop; a stale OFFLINE while connected is answered with ONLINE."""
    topic = "STATE/scada-gw1"
    seen: list[bytes] = []
    watcher = raw_client(mosquitto.port)
    watcher.on_message = lambda c, u, m: seen.append(m.payload)
    watcher.subscribe(topic, 1)
    subs = [{"topic": "spBv1.0/plant/#", "codec": "sparkplug_b"}]
    host = {"host_id": "scada-gw1", "state_version": "2.2"}
    src = await started(mosquitto.port, subs, sparkplug=host)
    try:
        async with asyncio.timeout(20):
            while seen[-1:] != [b"ONLINE"]:
                await asyncio.sleep(0.02)
        pub = raw_client(mosquitto.port)  # a dropped connection's will, delivered late
        pub.publish(topic, b"OFFLINE", qos=1, retain=True).wait_for_publish(5)
        async with asyncio.timeout(20):
            while seen[-2:] != [b"OFFLINE", b"ONLINE"]:
                await asyncio.sleep(0.02)
        closed(pub)
    finally:
        await src.stop()
    async with asyncio.timeout(20):
        while seen[-1] != b"OFFLINE":
            await asyncio.sleep(0.02)
    src = await started(mosquitto.port, subs, sparkplug=host)
    async with asyncio.timeout(20):
        while seen[-1] != b"ONLINE":
            await asyncio.sleep(0.02)
    src._client.socket().close()  # the gateway dies: the broker publishes the will
    async with asyncio.timeout(20):
        while b"OFFLINE" not in seen[-3:]:
            await asyncio.sleep(0.02)
    await src.stop()
    closed(watcher)
    assert not any(p.startswith(b"{") for p in seen)  # never the 3.0 JSON on the 2.2 topic
    with pytest.raises(ValueError, match="state_version"):
        MqttSettings(sparkplug={"host_id": "a", "state_version": "2.0"})


async def test_other_hosts_state_in_either_form_is_ignored_on_a_subscription_of_all_a_sparkplug_broker_carries(
    mosquitto,
):
    """A host subscribed to all a Sparkplug broker carries (``#``) sees the other host applications' STATE: Sparkplug
    3.0's ``spBv1.0/STATE/<id>`` JSON and 2.2's ``STATE/<id>`` ONLINE/OFFLINE text (Ignition releases before 3.0,
    retained). Both are ignored; the 2.2 form was counted as ``bad_topic``, "not a Sparkplug B topic", at each
    connect and each change of that host."""
    pub = raw_client(mosquitto.port)
    pub.publish("STATE/scada22", b"ONLINE", qos=1, retain=True).wait_for_publish(5)
    state = json.dumps({"online": True, "timestamp": int(time.time() * 1000)})
    pub.publish("spBv1.0/STATE/scada30", state, qos=1, retain=True).wait_for_publish(5)
    src = await started(mosquitto.port, [{"topic": "#", "codec": "sparkplug_b", "qos": 1}])
    try:
        pub.publish("STATE/scada22", b"OFFLINE", qos=1)
        birth = sp.Payload(int(time.time() * 1000), 0, [sp.Metric("Temp", None, sp.DataType.DOUBLE, 20.0)])
        pub.publish("spBv1.0/g/NBIRTH/n1", sp.encode(birth), qos=1)
        got = await collect(src, lambda g: len(g) >= 1)
    finally:
        await src.stop()
        for topic in ("STATE/scada22", "spBv1.0/STATE/scada30"):  # the retained copies, cleared
            pub.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        closed(pub)
    assert [(r.tag, r.value) for r in got] == [("n1/Temp", 20.0)]
    assert src.stats.errors_by_reason == {}, src.stats.last_error


def test_tag_names_from_the_outside_world_are_bounded(monkeypatch, caplog):
    """A device that puts a counter or a time in its topic makes a new tag per message: the per-tag state of
    the order check must not grow for months. Past MAX_TAGS it starts afresh, said once; every message is
    still read."""
    from devices.mqtt import client

    monkeypatch.setattr(client, "MAX_TAGS", 10)
    src = MqttSource("mq", MqttSettings(port=1, subscriptions=[{"topic": "plant/#"}]))
    now = time.time()
    got = [src.decode(f"plant/m1/{i}", json.dumps({"ts": now - 1, "v": i}).encode(), now) for i in range(50)]
    assert [r.value for rs in got for r in rs] == list(range(50))
    assert len(src._last_ts) <= 11
    note = src.notices.status()["too_many_tags"]
    assert note["count"] >= 3 and "tag_prefix_topic: false" in note["message"]
    assert sum("over 10 tag names" in r.getMessage() for r in caplog.records) == 1


def test_settings_module_validates_without_importing_paho():
    import subprocess
    import sys

    code = (
        "import sys; from devices.mqtt.settings import MqttSettings;"
        "MqttSettings(subscriptions=[{'topic': 'a/+/b/#', 'codec': 'sparkplug_b'}]);"
        "assert 'paho' not in sys.modules, 'paho imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"subscriptions": [{"topic": "a/#/b"}]}, "'#' must be a whole last level"),
        ({"subscriptions": [{"topic": "a/b+"}]}, r"'\+' must be a whole level"),
        ({"subscriptions": [{"topic": "a", "qos": 2}]}, "qos"),
        ({"tls": {"cert_file": "c.pem"}}, "cert_file and key_file go together"),
        ({"persistent_session": True}, "needs a fixed client_id"),
        (  # Sparkplug 3.0: a host application connects with a clean session; it was accepted
            {"persistent_session": True, "client_id": "scada", "sparkplug": {"host_id": "scada"}},
            "persistent_session: true with sparkplug.host_id: Sparkplug 3.0 has a primary host application "
            "connect with a clean session",
        ),
        ({"keepalive": 5}, "Extra inputs are not permitted"),
        (
            {"subscriptions": [{"topic": "k", "json_mapping": {"records": {}, "values": {"a": "b"}}}]},
            "records and values are two ways to find tags; give one of them",
        ),
    ],
)
def test_bad_settings_are_refused_with_a_hint(kw, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        MqttSettings(**kw)


def test_sensors_cli_publishes_json_and_sparkplug_for_a_while(mosquitto, capsys):
    from simulators.sensors import main

    got: list = []
    sub = paho.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.append(m.topic)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe([("plant/#", 0), ("spBv1.0/#", 0)])
    sub.loop_start()
    time.sleep(0.2)
    try:
        rc = main(["--broker-port", str(mosquitto.port), "--rate-hz", "20", "--duration-s", "0.5", "--quiet"])
        time.sleep(0.2)
    finally:
        closed(sub)
    assert rc == 0
    assert "plant/line1/sensor0" in got and "plant/line2/sensor1" in got
    assert {
        "spBv1.0/plant/NBIRTH/edge0",
        "spBv1.0/plant/DBIRTH/edge0/motor1",
        "spBv1.0/plant/DDATA/edge0/motor1",
        "spBv1.0/plant/NDEATH/edge0",
    } <= set(got)
    assert "published:" in capsys.readouterr().out


def test_sensors_cli_reports_unreachable_broker(capsys):
    from simulators.sensors import main
    from tests.support.peers import free_port

    assert main(["--broker-port", str(free_port()), "--duration-s", "0.1"]) == 1
    assert "cannot reach broker" in capsys.readouterr().err


async def test_qos1_publish_while_broker_down_is_queued_until_the_queue_is_full(mosquitto):
    from devices.mqtt.client import MqttError

    src = await started(mosquitto.port, [], publish_max_queued=1, publish_timeout_s=0.2)
    try:
        mosquitto.stop()
        for _ in range(1500):
            if src.state is ConnectionState.BACKOFF:
                break
            await asyncio.sleep(0.02)
        await src.publish("factory/s/l/a/events", b"kept", qos=1)  # queued by paho while away
        with pytest.raises(MqttError, match="outgoing queue full"):
            await src.publish("factory/s/l/a/events", b"too many", qos=1)
    finally:
        await src.stop()
    assert src.stats.errors_by_reason.get("publish_failed") == 1


async def test_sparkplug_tag_map_key_with_the_group_prefix_is_said_once(mosquitto, caplog):
    src = await started(
        mosquitto.port,
        [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}],
        sparkplug={"tag_map": {"line1/n1/d1/temp": "temp"}},
    )
    pub = raw_client(mosquitto.port)
    try:
        now = int(time.time() * 1000)
        pub.publish(
            "spBv1.0/line1/NBIRTH/n1",
            sp.encode(sp.Payload(now, 0, [sp.Metric(sp.BDSEQ_METRIC, None, sp.DataType.INT64, 0)])),
            qos=1,
        )
        for seq in (1, 2):
            pub.publish(
                "spBv1.0/line1/DBIRTH/n1/d1",
                sp.encode(sp.Payload(now, seq, [sp.Metric("temp", None, sp.DataType.DOUBLE, 21.5)])),
                qos=1,
            )
        got = await collect(src, lambda g: len(g) >= 2)
    finally:
        closed(pub)
        await src.stop()
    assert {r.tag for r in got} == {"n1/d1/temp"}  # the key renamed nothing
    warned = [r.getMessage() for r in caplog.records if "tag_map key" in r.getMessage()]
    assert len(warned) == 1 and "write 'n1/d1/temp'" in warned[0], warned
    assert src.notices.counts["tag_map:line1/n1/d1/temp"] == 1


async def test_qos0_publish_while_the_broker_is_down_fails_instead_of_counting_ok(mosquitto, caplog):
    import logging

    from devices.mqtt.client import MqttError

    caplog.set_level(logging.INFO, logger="devices.mqtt.client")
    src = await started(mosquitto.port, [])
    try:
        assert any(
            "connected to broker" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records
        )
        assert await src.publish("factory/s/l/a/results/p", b"up", qos=0) == "sent"
        mosquitto.stop()
        for _ in range(1500):
            if src.state is ConnectionState.BACKOFF:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(MqttError, match="not connected"):
            await src.publish("factory/s/l/a/results/p", b"lost", qos=0)
        assert await src.publish("factory/s/l/a/results/p", b"later", qos=1) == "queued"
    finally:
        await src.stop()
    assert src.published == {"sent": 1, "queued": 1}


def test_sample_config_is_valid_and_documents_every_option():
    from pathlib import Path

    import yaml

    sample = Path(__file__).resolve().parents[2] / "devices" / "mqtt" / "sample.yaml"
    MqttSettings.model_validate(yaml.safe_load(sample.read_text()))
    text = sample.read_text()
    for name in MqttSettings.model_fields:
        assert name in text, f"sample.yaml does not mention {name}"


async def test_after_the_gateways_own_reconnect_births_it_missed_are_asked_again_not_guessed(mosquitto):
    """While this gateway was away from the broker (a clean session: nothing kept for it), its edge node
    died and was born again with a new alias map (a PLC program change). The host kept the old birth, so
    NDATA after the reconnect was read by it: alias 1, now the pressure, came out GOOD as the temperature
    (the seq check counts a gap at most, and wraps at 256). Now every node is taken as not born once the
    connection is back: its data is skipped until a birth, and a rebirth is asked of it at once."""
    D = sp.DataType
    births = [
        [sp.Metric("temp", 1, D.DOUBLE, 20.0), sp.Metric("pressure", 2, D.DOUBLE, 1.5)],
        [sp.Metric("pressure", 1, D.DOUBLE, 2.0), sp.Metric("temp", 2, D.DOUBLE, 22.0)],  # the new map
    ]
    bd, seq, rebirths = [0], [0], []
    node = paho.Client(CallbackAPIVersion.VERSION2)

    def send(kind: str, metrics: list, qos: int = 1):
        seq[0] = 0 if kind == "NBIRTH" else (seq[0] + 1) % 256
        body = sp.encode(sp.Payload(int(time.time() * 1000), seq[0], metrics))
        return node.publish(f"spBv1.0/g/{kind}/n1", body, qos=qos)

    def birth() -> list:
        return [sp.Metric("bdSeq", None, D.INT64, bd[0]), *births[min(bd[0], 1)]]

    def on_ncmd(c, u, m) -> None:  # a node answers a rebirth request with its current births
        if any(x.name == "Node Control/Rebirth" and x.value for x in sp.decode(m.payload).metrics):
            rebirths.append(time.monotonic())
            send("NBIRTH", birth())

    node.on_message = on_ncmd
    node.connect("127.0.0.1", mosquitto.port, 30)
    node.subscribe("spBv1.0/g/NCMD/n1", 1)
    node.loop_start()
    src = await started(mosquitto.port, [{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}], client_id="gw-sp")
    got: list = []

    async def pump():
        async for r in src.items():
            got.append((r.tag, r.value, r.quality))

    task = asyncio.create_task(pump())

    async def until(cond, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not cond():
                await asyncio.sleep(0.02)

    try:
        send("NBIRTH", birth()).wait_for_publish(5)
        send("NDATA", [sp.Metric(None, 1, D.DOUBLE, 21.0)]).wait_for_publish(5)
        await until(lambda: ("n1/temp", 21.0, Quality.GOOD) in got)
        kicker = paho.Client(CallbackAPIVersion.VERSION2, client_id="gw-sp")  # takes the gateway's session
        kicker.connect("127.0.0.1", mosquitto.port, 30)
        kicker.loop_start()
        await until(lambda: not src.connected.is_set())  # the gateway's connection is gone; the node's is not
        kicker.disconnect()
        kicker.loop_stop()
        node.publish("spBv1.0/g/NDEATH/n1", sp.death_payload(0), qos=1).wait_for_publish(5)
        bd[0] = 1
        send("NBIRTH", birth()).wait_for_publish(5)  # missed by the gateway
        await until(lambda: src.stats.reconnects == 1 and src.subscribed.is_set())
        send("NDATA", [sp.Metric(None, 1, D.DOUBLE, 3.0)]).wait_for_publish(5)  # pressure, by the new map
        try:  # the birth that answers the rebirth request (before: none was asked)
            await until(lambda: src.sparkplug.births >= 2, 30.0)
        except TimeoutError:
            pass
        send("NDATA", [sp.Metric(None, 1, D.DOUBLE, 4.0)]).wait_for_publish(5)
        await until(lambda: any(v == 4.0 for _, v, _ in got), 30.0)
    finally:
        task.cancel()
        await src.stop()
        closed(node)
    after = got[got.index(("n1/temp", 21.0, Quality.GOOD)) + 1 :]
    # before: ("n1/temp", 3.0) and ("n1/temp", 4.0), GOOD: the pressure read as the temperature
    assert not any(t == "n1/temp" and v in (3.0, 4.0) for t, v, _ in after), after
    assert ("n1/pressure", 2.0, Quality.GOOD) in after and ("n1/pressure", 4.0, Quality.GOOD) in after, after
    assert len(rebirths) == 1 and src.sparkplug.rebirths_requested == 1
