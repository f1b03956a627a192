"""MqttSource against a real Mosquitto with JSON as devices of other vendors send it: one bare number per
topic (Shelly, ESPHome, Zigbee2MQTT), plain text on a JSON topic (Tasmota's POWER), times in microseconds or
nanoseconds (EdgeX Foundry's origin, Go's UnixNano), and ISO 8601 local times without a zone (Tasmota's
Time), clocks never set (1970), arrays of messages (a gateway's buffer), and numbers sent as text (EdgeX). Each is either a reading with the right value and time, or counted with what came and the setting
to change; the source reads on."""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import Quality
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from edge_agent.config import ConfigError, load_config, parse_config
from protocols.json_codec import CodecError, JsonMapping, RecordsMapping, TimestampFormat, decode
from tests.support.waits import until


def closed(c: paho.Client) -> None:
    """Disconnect a raw paho client and end its network thread. ``loop_stop`` alone waits for the thread's
    select to time out (paho's 1 s) before the thread sees the stop; the DISCONNECT wakes it at once."""
    c.disconnect()
    c.loop_stop()


def raw_client(port: int) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port, 30)
    c.loop_start()
    return c


async def started(port: int, subs: list[dict]) -> MqttSource:
    src = MqttSource("mq", MqttSettings(port=port, subscriptions=subs))
    await src.start()
    async with asyncio.timeout(5):
        await src.connected.wait()
        await src.subscribed.wait()
    return src


async def collect(src: MqttSource, until, timeout_s: float = 5.0) -> list:
    got: list = []
    try:
        async with asyncio.timeout(timeout_s):
            async for r in src.items():
                got.append(r)
                if until(got):
                    break
    except TimeoutError:
        pass
    return got


async def test_a_bare_number_is_a_reading_named_by_its_topic_and_plain_text_is_counted_with_what_came(
    mosquitto,
):
    """Shelly (relay/0/power), ESPHome (.../state) and Zigbee2MQTT with attribute output publish one value
    per topic, a bare number: the JSON codec refused each as "a JSON float; expected an object", so such a
    device could not be read at all. A bare number is now a reading whose tag is its topic (receive time);
    plain text (Tasmota's POWER "ON") stays counted, the error quoting what came instead of JSON."""
    subs = [{"topic": "shellies/#"}, {"topic": "esphome/#", "json_mapping": {"tag_prefix_topic": False}}]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("shellies/shelly1pm-A1/relay/0/power", b"21.5", qos=1)
        pub.publish("shellies/shelly1pm-A1/relay/0", b"on", qos=1)  # plain text: counted
        pub.publish("shellies/shelly1pm-A1/relay/0/energy", b"1234", qos=1)
        pub.publish("esphome/kitchen/sensor/temp/state", b" -3.25\n", qos=1)
        pub.publish("shellies/shelly1pm-A1/info", b'{"ts": 1700000000, "uptime": 12}', qos=1)
        got = await collect(src, lambda g: any(r.tag.endswith("uptime") for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert {r.tag: r.value for r in got} == {
        "shellies/shelly1pm-A1/relay/0/power": 21.5,
        "shellies/shelly1pm-A1/relay/0/energy": 1234,
        "esphome/kitchen/sensor/temp/state": -3.25,  # named by its topic even without the topic prefix
        "shellies/shelly1pm-A1/info/uptime": 12,
    }
    assert all(r.quality is Quality.GOOD for r in got)
    assert all(r.timestamp == r.received_at for r in got if not r.tag.endswith("uptime"))
    assert src.stats.errors_by_reason == {"malformed_json": 1}
    assert "'on'" in (src.stats.last_error or "") and "shellies/shelly1pm-A1/relay/0" in src.stats.last_error


async def test_times_in_microseconds_or_nanoseconds_are_read_and_a_wrong_unit_names_the_format(mosquitto):
    """EdgeX Foundry stamps events in nanoseconds (origin), Go and Rust gateways in UnixNano or micros:
    there was no format for them (epoch_us and epoch_ns were refused by validate), and a nanosecond time
    under epoch_s was refused with "milliseconds? set timestamp_format: epoch_ms", which then stamped every
    reading with the receive time. Now they are read to the microsecond, and the refusal names the unit."""
    t0 = round(time.time()) - 30  # a recent whole second: no clock_skew, exact in every unit
    subs = [
        {"topic": "edgex/#", "json_mapping": {"timestamp_field": "origin", "timestamp_format": "epoch_ns"}},
        {"topic": "go/#", "json_mapping": {"timestamp_format": "epoch_us"}},
        {"topic": "misset/#"},  # epoch_s
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("edgex/dev1", json.dumps({"origin": t0 * 10**9 + 250_000_000, "temp": 20.5}), qos=1)
        pub.publish("go/dev2", json.dumps({"ts": t0 * 10**6 + 500_000, "rpm": 1500}), qos=1)
        pub.publish("misset/dev3", json.dumps({"ts": t0 * 10**9, "v": 1}), qos=1)
        pub.publish("go/dev2", json.dumps({"ts": t0 * 10**6 + 600_000, "rpm": 1501}), qos=1)
        got = await collect(src, lambda g: any(r.value == 1501 for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value, r.timestamp) for r in got] == [
        ("edgex/dev1/temp", 20.5, t0 + 0.25),
        ("go/dev2/rpm", 1500, t0 + 0.5),
        ("go/dev2/rpm", 1501, t0 + 0.6),
    ]
    assert src.stats.errors_by_reason == {"bad_timestamp": 1}
    assert "nanoseconds? set timestamp_format: epoch_ns" in (src.stats.last_error or "")


async def test_an_iso_time_without_a_zone_is_read_in_the_configured_timezone(mosquitto):
    """Tasmota's telemetry stamps "Time" in the device's local time without an offset (so do many Node-RED
    flows); read as UTC it was hours off: in New York 5 h old (a retained message uncertain, a rule's
    age_ms of hours, wrong times at the cloud), east of Greenwich ahead of the gateway (clock_skew, the
    receive time). json_mapping.timezone names the zone; a time with an offset or Z keeps its own."""
    local = ZoneInfo("America/New_York")
    t0 = round(time.time()) - 60
    stamp = datetime.fromtimestamp(t0, local).replace(tzinfo=None).isoformat()  # "2026-12-02T16:20:00"
    mapping = {
        "values": {"ENERGY.Power": "power"},
        "timestamp_field": "Time",
        "timestamp_format": "iso8601",
        "timezone": "America/New_York",
    }
    src = await started(mosquitto.port, [{"topic": "tele/+/SENSOR", "json_mapping": mapping}])
    pub = raw_client(mosquitto.port)
    try:
        sensor = {"Time": stamp, "ENERGY": {"Power": 120, "Voltage": 118}}
        pub.publish("tele/plug1/SENSOR", json.dumps(sensor), qos=1)
        utc = datetime.fromtimestamp(t0 + 1, ZoneInfo("UTC")).isoformat().replace("+00:00", "Z")
        pub.publish("tele/plug2/SENSOR", json.dumps({"Time": utc, "ENERGY": {"Power": 60}}), qos=1)
        got = await collect(src, lambda g: len(g) >= 2)
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value, r.timestamp, r.quality) for r in got] == [
        ("tele/plug1/SENSOR/power", 120, t0, Quality.GOOD),
        ("tele/plug2/SENSOR/power", 60, t0 + 1, Quality.GOOD),
    ]
    assert src.stats.errors_by_reason == {}


async def test_a_device_clock_never_set_gives_the_receive_time_and_a_restart_loses_nothing(mosquitto):
    """A device without NTP or a clock battery (Tasmota before its first sync, an ESP sending its uptime)
    stamps from 1970 at power-on: its readings reached the rules (age_ms of 56 years: a rule bounded by age
    never acted), the status page and the cloud dated 1970, and after the device restarted every reading
    was older than the last one and dropped as out_of_order, for as long as it had run before. A time before
    2001 is now taken as no clock: the receive time, counted as clock_skew with what to fix."""
    subs = [
        {"topic": "esp/#"},
        {
            "topic": "tele/#",
            "json_mapping": {
                "values": {"ENERGY.Power": "power"},
                "timestamp_field": "Time",
                "timestamp_format": "iso8601",
            },
        },
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("esp/node7", json.dumps({"ts": 86_400 * 30, "v": 1}), qos=1)  # up for 30 days
        pub.publish("esp/node7", json.dumps({"ts": 12, "v": 2}), qos=1)  # restarted: 12 s of uptime
        pub.publish(
            "tele/plug3/SENSOR", json.dumps({"Time": "1970-01-01T00:01:40", "ENERGY": {"Power": 7}}), qos=1
        )
        pub.publish("esp/node7", json.dumps({"ts": 13, "v": 3}), qos=1)
        got = await collect(src, lambda g: any(r.value == 3 for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [
        ("esp/node7/v", 1),
        ("esp/node7/v", 2),
        ("tele/plug3/SENSOR/power", 7),
        ("esp/node7/v", 3),
    ]
    assert all(r.timestamp == r.received_at and r.quality is Quality.GOOD for r in got)
    assert src.stats.errors_by_reason == {"clock_skew": 4}
    assert "1970-01-01: the device's clock was never set" in (src.stats.last_error or "")


async def test_an_array_of_objects_is_a_batch_each_read_with_its_own_time(mosquitto):
    """A gateway that buffers samples sends them as an array of messages (Node-RED's join, a Teltonika or
    Moxa buffer after an outage): the JSON codec refused the whole array (wrong_type), so every buffered
    sample was lost. Each object is now read as a message with its own time; a bad item is counted and
    skipped, the others read."""
    t0 = round(time.time()) - 120
    subs = [
        {"topic": "buf/#"},
        {
            "topic": "nr/#",
            "json_mapping": {
                "values": {"d.p": "pressure"},
                "timestamp_field": "time",
                "timestamp_format": "epoch_ms",
            },
        },
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    batch = [{"ts": t0, "temp": 20.5}, {"ts": t0 + 1, "temp": 20.7}, "oops", {"ts": t0 + 2, "temp": 20.9}]
    try:
        pub.publish("buf/gw1", json.dumps(batch), qos=1)
        pub.publish("nr/flow1", json.dumps([{"time": t0 * 1000 + 500, "d": {"p": 1.5}}]), qos=1)
        pub.publish("buf/gw1", b"[]", qos=1)  # an empty buffer: nothing to read, no error
        pub.publish("buf/gw1", json.dumps({"ts": t0 + 3, "temp": 21.0}), qos=1)
        got = await collect(src, lambda g: any(r.value == 21.0 for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert sorted((r.tag, r.value, r.timestamp) for r in got) == [
        ("buf/gw1/temp", 20.5, t0),
        ("buf/gw1/temp", 20.7, t0 + 1),
        ("buf/gw1/temp", 20.9, t0 + 2),
        ("buf/gw1/temp", 21.0, t0 + 3),
        ("nr/flow1/pressure", 1.5, t0 + 0.5),
    ]
    assert src.stats.errors_by_reason == {"wrong_type": 1}
    assert "item 2 of the array" in (src.stats.last_error or "")


async def test_numbers_from_text_reads_edgex_and_quoted_values_as_numbers_and_leaves_other_text(mosquitto):
    """EdgeX Foundry sends every reading's value as text ({"value": "21.5", "valueType": "Float64"}), as do
    devices that quote every value: mapped, the reading was the text "21.5", which no rule, window or model
    uses; unmapped, the message gave nothing. With json_mapping.numbers_from_text a text that writes a
    finite number is read as it; "12,5" (a decimal or a thousands comma?) and other text stay text; "NaN" is
    the sensor's fault a JSON NaN is, a BAD reading (test_mqtt_json_text_faults.py). Without the setting text
    stays text (a part number "0012" keeps its zeros)."""
    t0 = round(time.time()) - 60
    edgex = {
        "records": {
            "array": "readings",
            "name": "resourceName",
            "value": "value",
            "timestamp": "origin",
            "quality": None,
        },
        "timestamp_field": "origin",
        "timestamp_format": "epoch_ns",
        "tag_prefix_topic": False,
        "numbers_from_text": True,
    }
    subs = [
        {"topic": "edgex/events/#", "json_mapping": edgex},
        {"topic": "quoted/#", "json_mapping": {"numbers_from_text": True}},
        {"topic": "parts/#", "json_mapping": {"values": {"part": "part"}}},  # text stays text
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    event = {
        "origin": t0 * 10**9,
        "readings": [
            {"resourceName": "Temperature", "value": "21.5", "valueType": "Float64", "origin": t0 * 10**9},
            {"resourceName": "Count", "value": "1200", "valueType": "Int64", "origin": t0 * 10**9},
            {"resourceName": "Mode", "value": "auto", "valueType": "String", "origin": t0 * 10**9},
        ],
    }
    try:
        pub.publish("edgex/events/device/Pump-1", json.dumps(event), qos=1)
        pub.publish("quoted/m1", json.dumps({"ts": t0, "temp": " 1e2 ", "hum": "12,5", "nan": "NaN"}), qos=1)
        pub.publish("parts/m1", json.dumps({"ts": t0, "part": "0012"}), qos=1)
        got = await collect(src, lambda g: any(r.tag.endswith("part") for r in g))
    finally:
        closed(pub)
        await src.stop()
    nan = [r for r in got if r.tag == "quoted/m1/nan"]
    assert {r.tag: r.value for r in got if r not in nan} == {
        "Temperature": 21.5,
        "Count": 1200,
        "Mode": "auto",
        "quoted/m1/temp": 100.0,
        "parts/m1/part": "0012",
    }
    assert [(math.isnan(r.value), r.quality) for r in nan] == [(True, Quality.BAD)]
    assert src.stats.errors_by_reason == {"non_finite": 1}


def test_an_unknown_timezone_is_refused_by_validate_with_its_path():
    cfg = {
        "agent": {"id": "a1", "site": "s", "line": "l"},
        "sources": {
            "plugs": {
                "type": "mqtt",
                "subscriptions": [
                    {"topic": "tele/#", "json_mapping": {"timestamp_format": "iso8601", "timezone": "CET+1"}}
                ],
            }
        },
    }
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    assert "sources.plugs.subscriptions[0].json_mapping.timezone: timezone 'CET+1'" in str(e.value)
    assert "Europe/Berlin" in str(e.value)


@pytest.mark.parametrize(
    ("raw", "fmt", "expected"),
    [
        (1_700_000_000_123_456, "epoch_s", "microseconds? set timestamp_format: epoch_us"),
        (1_700_000_000_123, "epoch_us", "set timestamp_format: epoch_ms"),
        (1_700_000_000_123_456, "epoch_ns", "set timestamp_format: epoch_us"),
        (1_700_000_000, "epoch_ns", "set timestamp_format: epoch_s"),
    ],
)
def test_a_time_in_another_unit_is_refused_naming_its_unit(raw, fmt, expected):
    m = JsonMapping(values={"v": "v"}, timestamp_format=TimestampFormat(fmt))
    with pytest.raises(CodecError) as e:
        decode(json.dumps({"ts": raw, "v": 1}), m)
    assert e.value.reason == "bad_timestamp" and expected in e.value.detail


def test_a_records_zoneless_time_is_read_in_the_mappings_timezone():
    m = JsonMapping(
        records=RecordsMapping(array="", name="id", value="v", timestamp="t", quality=None),
        timestamp_format=TimestampFormat.ISO8601,
    )
    m.timezone = "Europe/Berlin"  # (an attribute the former mapping lacked: its test fails, not its module)
    ((_, _, ts, _, _),) = decode(b'[{"id": "a", "v": 1, "t": " 2024-07-15T10:30:00 "}]', m)
    assert ts == datetime(2024, 7, 15, 8, 30, tzinfo=ZoneInfo("UTC")).timestamp()


@pytest.mark.parametrize(
    ("raw", "fmt", "expected"),
    [
        ("2024-01-15T10:30:00Z", "epoch_s", "an ISO 8601 time? set timestamp_format: iso8601"),
        ("2024-01-15T10:30:00.123+02:00", "epoch_ms", "an ISO 8601 time? set timestamp_format: iso8601"),
        (1_700_000_000_123, "iso8601", "an epoch time? set timestamp_format: epoch_ms"),
        (1_700_000_000.5, "iso8601", "an epoch time? set timestamp_format: epoch_s"),
    ],
)
def test_a_time_of_the_other_kind_is_refused_naming_the_format_to_set(raw, fmt, expected):
    """Zigbee2MQTT's last_seen is ISO 8601 or epoch ms as configured, Node-RED flows send either: the
    refusal said only "expected a number (epoch_s)" or "expected an ISO 8601 string"."""
    m = JsonMapping(values={"v": "v"}, timestamp_format=TimestampFormat(fmt))
    with pytest.raises(CodecError) as e:
        decode(json.dumps({"ts": raw, "v": 1}), m)
    assert e.value.reason == "wrong_type" and e.value.detail.endswith(expected)


async def test_states_read_on_off_text_plain_payloads_and_booleans_as_numbers_and_count_unknown_text(
    mosquitto,
):
    """Tasmota's stat/<dev>/POWER is the plain text "ON"/"OFF" (not JSON), Zigbee2MQTT and ESPHome send
    {"state": "ON"}, Shelly "on", Home Assistant style devices "open"/"closed" or true/false, Kepware a
    boolean tag as a record's true: the plain payload was malformed_json on every message, the text a text
    reading (or, unmapped, nothing) and the boolean a truth value, none of which a rule, window or model
    uses, and no setting could read them. json_mapping.states reads each as its number (any case); a text
    that is no state is counted as unknown_state, naming it, and skipped; other text stays unread."""
    t0 = round(time.time()) - 30
    on_off = {"ON": 1, "OFF": 0, "true": 1, "false": 0}
    subs = [
        {"topic": "stat/+/POWER", "json_mapping": {"states": on_off}},
        {"topic": "zigbee2mqtt/#", "json_mapping": {"states": on_off}},
        {
            "topic": "ha/#",
            "json_mapping": {
                "values": {"contact": "door", "fw": "fw"},
                "states": {"open": 1, "closed": 0, "true": 1, "false": 0},
            },
        },
        {
            "topic": "kepware/#",
            "json_mapping": {
                "records": {},
                "timestamp_field": "timestamp",
                "timestamp_format": "epoch_ms",
                "states": {"true": 1, "false": 0},
            },
        },
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("stat/plug1/POWER", b"ON", qos=1)
        pub.publish("stat/plug1/POWER", b" off\n", qos=1)  # Shelly's case, a newline of a script
        pub.publish("stat/plug1/POWER", b"TOGGLE", qos=1)  # no state: counted, named
        pub.publish("stat/plug2/POWER", b"true", qos=1)  # a bare JSON true
        pub.publish("zigbee2mqtt/lamp", json.dumps({"ts": t0, "state": "ON", "linkquality": 87}), qos=1)
        pub.publish("zigbee2mqtt/lamp", json.dumps({"ts": t0 + 1, "state": "Off", "update": "idle"}), qos=1)
        pub.publish("ha/door1", json.dumps({"ts": t0, "contact": "open", "fw": "closed"}), qos=1)
        pub.publish("ha/door1", json.dumps({"ts": t0 + 1, "contact": False, "fw": "1.2.3"}), qos=1)
        pub.publish("ha/door1", json.dumps({"ts": t0 + 2, "contact": "ajar", "fw": "open"}), qos=1)
        records = {"timestamp": t0 * 1000, "values": [{"id": "Run", "v": True}, {"id": "Speed", "v": 1500}]}
        pub.publish("kepware/line1", json.dumps(records), qos=1)
        got = await collect(src, lambda g: any(r.tag.endswith("Speed") for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [
        ("stat/plug1/POWER", 1),  # a plain payload is named by its topic, as a bare number
        ("stat/plug1/POWER", 0),
        ("stat/plug2/POWER", 1),
        ("zigbee2mqtt/lamp/state", 1),
        ("zigbee2mqtt/lamp/linkquality", 87),
        ("zigbee2mqtt/lamp/state", 0),  # "idle" is no number and no state: not read, as before
        ("ha/door1/door", 1),
        ("ha/door1/fw", 0),  # a mapped field is read by states too
        ("ha/door1/door", 0),  # a JSON false under the key 'false'
        ("ha/door1/fw", 1),
        ("kepware/line1/Run", 1),
        ("kepware/line1/Speed", 1500),
    ]
    assert all(type(r.value) is int and r.quality is Quality.GOOD for r in got)  # numbers, not truth values
    assert src.stats.errors_by_reason == {"unknown_state": 3}  # TOGGLE, "1.2.3" and "ajar"
    assert "'ajar', no text of json_mapping.states ('open', 'closed', 'true', 'false')" in (
        src.stats.last_error or ""
    )


async def test_without_states_text_and_booleans_read_as_before_and_plain_text_names_the_setting(mosquitto):
    """Without json_mapping.states nothing is made a number: a mapped JSON true stays a truth value, an
    unmapped one is not read, text stays text. A plain "ON" on a JSON topic is still malformed_json, and
    its error now names the setting that reads it (it said only "Expecting value")."""
    subs = [{"topic": "stat/#"}, {"topic": "ha/#", "json_mapping": {"values": {"contact": "door"}}}]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("stat/plug1/POWER", b"ON", qos=1)
        pub.publish("stat/plug1/STATE", json.dumps({"ts": 1_800_000_000, "POWER": "ON", "on": True}), qos=1)
        pub.publish("ha/door1", json.dumps({"contact": True}), qos=1)
        pub.publish("ha/door2", json.dumps({"contact": "open"}), qos=1)
        got = await collect(src, lambda g: any(r.tag == "ha/door2/door" for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [("ha/door1/door", True), ("ha/door2/door", "open")]
    assert src.stats.errors_by_reason == {"malformed_json": 1}
    assert "'ON': plain text, not JSON? a state" in (src.stats.last_error or "")
    assert "json_mapping.states" in (src.stats.last_error or "")
    assert src.notices.counts["no_numeric_field"] == 1


async def test_a_time_field_not_named_ts_is_said_once_naming_the_setting(mosquitto):
    """A device whose time field is not named ts ("time" in ms, Tasmota's "Time"), read without a
    timestamp_field of its name: every reading got the receive time and, unmapped, the time itself was read
    as a tag, silently. The topic's first such message now gives the time_field_unread notice naming the
    field, its format and the setting; a device without a time field, or with an uptime, gives none."""
    t0 = round(time.time()) - 30
    subs = [
        {"topic": "dev/#"},
        {"topic": "tele/#", "json_mapping": {"values": {"ENERGY.Power": "power"}}},
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("dev/a", json.dumps({"time": t0 * 1000, "temp": 21.5}), qos=1)
        pub.publish("dev/a", json.dumps({"time": t0 * 1000 + 1000, "temp": 21.6}), qos=1)  # said once
        pub.publish("dev/b", json.dumps({"uptime": 12, "temp": 20.0}), qos=1)  # no time: nothing said
        pub.publish("dev/c", json.dumps({"ts": t0, "temp": 19.0}), qos=1)  # read: nothing said
        tasmota = {"Time": "2026-01-05T10:00:00", "ENERGY": {"Power": 120}}
        pub.publish("tele/plug1/SENSOR", json.dumps(tasmota), qos=1)
        got = await collect(src, lambda g: any(r.tag.endswith("power") for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert len(got) == 8  # the readings are as before: dev/a's time is still a tag until the setting is given
    unread = src.notices.status()["time_field_unread"]
    assert unread["count"] == 2  # dev/a once, tele/plug1/SENSOR once; dev/b and dev/c never
    assert unread["message"].endswith(
        "topic 'dev/a': no field 'ts' (timestamp_field); its field 'time' holds a time as epoch_ms "
        f"({time.strftime('%Y-%m-%d', time.gmtime(t0))}), but its readings get the receive time and, unmapped, "
        "it is read as a tag: set json_mapping.timestamp_field: time and timestamp_format: epoch_ms"
    )
    from protocols.json_codec import time_field_hint  # (imported here: the former codec's test fails alone)

    hint = time_field_hint(json.dumps(tasmota), JsonMapping(values={"ENERGY.Power": "power"}))
    assert hint is not None and hint.endswith(
        "its field 'Time' holds a time as iso8601, but its readings get the receive time: set "
        "json_mapping.timestamp_field: Time and timestamp_format: iso8601"
    )


async def test_an_edgex_events_origin_in_nanoseconds_is_said_as_its_time_not_left_a_silent_tag(mosquitto):
    """EdgeX Foundry stamps an event (and each of its readings) "origin", in nanoseconds. Read for every number, the
    event's origin was a tag of its own whose value was the time (1.8e18, GOOD, to rules, forwards and the cloud) and
    its readings got the receive time, unsaid: "origin" was no name the time_field_unread notice looked at. It is
    now, and a records mapping of EdgeX's readings is told the key that holds their time."""
    t0 = round(time.time()) - 30
    event = {"apiVersion": "v2", "deviceName": "dev1", "origin": t0 * 10**9, "temp": 21.5}
    records = {"array": "readings", "name": "resourceName", "value": "value"}
    subs = [{"topic": "edgex/#"}, {"topic": "rec/#", "json_mapping": {"records": records}}]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("edgex/dev1", json.dumps(event), qos=1)
        reading = {"resourceName": "Humidity", "origin": t0 * 10**9, "value": 40}
        pub.publish("rec/dev1", json.dumps({"readings": [reading]}), qos=1)
        got = await collect(src, lambda g: any(r.tag.endswith("Humidity") for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [
        ("edgex/dev1/origin", t0 * 10**9),  # as before, until the setting is given
        ("edgex/dev1/temp", 21.5),
        ("rec/dev1/Humidity", 40),
    ]
    status = src.notices.status()
    assert "time_field_unread" in status, status
    assert status["time_field_unread"]["message"].endswith(
        "topic 'edgex/dev1': no field 'ts' (timestamp_field); its field 'origin' holds a time as epoch_ns "
        f"({time.strftime('%Y-%m-%d', time.gmtime(t0))}), but its readings get the receive time and, unmapped, "
        "it is read as a tag: set json_mapping.timestamp_field: origin and timestamp_format: epoch_ns"
    )
    assert "records_field_unread" in status, status
    assert "set json_mapping.records.timestamp: origin" in status["records_field_unread"]["message"]


async def test_a_records_time_is_told_with_its_format_and_an_origin_holding_no_time_is_not(mosquitto):
    """A records mapping of EdgeX's readings was told ``set json_mapping.records.timestamp: origin`` and no more:
    followed, every reading was refused (its origin in nanoseconds read in the mapping's epoch_s, past the year
    5000) until timestamp_format was found too. And a record's "origin" naming where it came from
    ("plc-3/modbus", a channel 3) was told the same: followed, every record refused. The key is told only when
    its first record's value holds a time, with the format when the mapping's is another; followed, the readings
    are stamped with their origin."""
    t0 = round(time.time()) - 30
    records = {"array": "readings", "name": "resourceName", "value": "value"}
    told_to = {"records": {**records, "timestamp": "origin"}, "timestamp_format": "epoch_ns"}
    subs = [
        {"topic": "rec/#", "json_mapping": {"records": records}},
        {"topic": "followed/#", "json_mapping": told_to},
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        for topic, origin in (("rec/source", "plc-3/modbus"), ("rec/channel", 3), ("rec/edgex", t0 * 10**9)):
            reading = {"resourceName": "Humidity", "origin": origin, "value": 40}
            pub.publish(topic, json.dumps({"readings": [reading]}), qos=1)
        reading = {"resourceName": "Humidity", "origin": t0 * 10**9, "value": 41}
        pub.publish("followed/edgex", json.dumps({"readings": [reading]}), qos=1)
        got = await collect(src, lambda g: any(r.tag == "followed/edgex/Humidity" for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [
        ("rec/source/Humidity", 40),
        ("rec/channel/Humidity", 40),
        ("rec/edgex/Humidity", 40),
        ("followed/edgex/Humidity", 41),
    ]
    assert got[-1].timestamp == t0  # stamped with its origin, not refused
    assert src.stats.errors_by_reason == {}
    unread = src.notices.status()["records_field_unread"]
    assert unread["count"] == 1, unread  # rec/edgex's; an origin holding no time says nothing
    day = time.strftime("%Y-%m-%d", time.gmtime(t0))
    assert unread["message"].endswith(
        f"topic 'rec/edgex': records hold no 't' (records.timestamp) but 'origin', a time as epoch_ns ({day}), not "
        "read: each record gets the message's time; set json_mapping.records.timestamp: origin and "
        "timestamp_format: epoch_ns"
    ), unread


async def test_a_records_quality_or_time_under_another_key_is_said_once_naming_the_setting(mosquitto):
    """A records mapping that names only each record's id and value reads its quality from "q" and its time
    from "t": a gateway whose records carry "quality" (or "StatusCode") and "timestamp" had every record read
    GOOD at the message's time, its BAD values passed on as good, silently. The topic's first such message
    now gives the records_field_unread notice naming the keys and the settings; readings are unchanged."""
    t0 = round(time.time()) - 30
    subs = [
        {"topic": "gw/#", "json_mapping": {"records": {"array": "values", "name": "id", "value": "v"}}},
        {"topic": "ok/#", "json_mapping": {"records": {"array": "values", "name": "id", "value": "v"}}},
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    bad = {"id": "P1", "v": 3.5, "quality": "Bad", "timestamp": t0 * 1000}
    try:
        for _ in range(2):  # said once per topic
            pub.publish("gw/line1", json.dumps({"ts": t0, "values": [bad, {"id": "P2", "v": 1.0}]}), qos=1)
        pub.publish("ok/line1", json.dumps({"ts": t0, "values": [{"id": "P3", "v": 2.0, "q": 192}]}), qos=1)
        got = await collect(src, lambda g: any(r.tag == "ok/line1/P3" for r in g) and len(g) >= 5)
    finally:
        closed(pub)
        await src.stop()
    # read as before, every record GOOD: the notice changes no reading
    assert {(r.tag, r.quality.value) for r in got} == {
        ("gw/line1/P1", "good"),
        ("gw/line1/P2", "good"),
        ("ok/line1/P3", "good"),
    }
    unread = src.notices.status()["records_field_unread"]
    assert unread["count"] == 1  # gw/line1 once; ok/line1's records hold their quality under "q"
    assert unread["message"].endswith(
        "topic 'gw/line1': records hold no 'q' (records.quality) but 'quality', read as no quality: every "
        "record is GOOD; set json_mapping.records.quality: quality; records hold no 't' (records.timestamp) but "
        f"'timestamp', a time as epoch_ms ({time.strftime('%Y-%m-%d', time.gmtime(t0))}), not read: each record "
        "gets the message's time; set json_mapping.records.timestamp: timestamp and timestamp_format: epoch_ms"
    )


async def test_azure_opc_publisher_samples_are_read_with_dotted_paths_to_each_records_fields(mosquitto):
    """Azure IoT Edge's OPC Publisher sends each sample as a record whose value, time and status sit inside
    an object ({"DisplayName", "Value": {"Value", "SourceTimestamp", "StatusCode"}}); a record's fields were
    keys only, so no mapping could read them (every record: missing_field). Each field may now be a dotted path."""
    from datetime import UTC, datetime

    t0 = round(time.time()) - 30
    iso = datetime.fromtimestamp(t0, UTC).strftime("%Y-%m-%dT%H:%M:%S.250Z")
    records = {
        "array": "",
        "name": "DisplayName",
        "value": "Value.Value",
        "timestamp": "Value.SourceTimestamp",
        "quality": "Value.StatusCode",
        "quality_format": "opcua",
    }
    subs = [
        {
            "topic": "opcpublisher/#",
            "json_mapping": {"records": records, "timestamp_field": None, "timestamp_format": "iso8601"},
        }
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    plc = "nsu=http://microsoft.com/Opc/OpcPlc/;s="
    samples = [
        {
            "NodeId": plc + "SlowUInt1",
            "ApplicationUri": "urn:OpcPlc:opcplc",
            "DisplayName": "SlowUInt1",
            "Value": {"Value": 10897, "SourceTimestamp": iso},  # Good: the StatusCode left out
        },
        {
            "NodeId": plc + "Pressure",
            "ApplicationUri": "urn:OpcPlc:opcplc",
            "DisplayName": "Pressure",
            "Value": {
                "Value": 1.25,
                "SourceTimestamp": iso,
                "StatusCode": {"Code": 2156527616, "Symbol": "BadNotConnected"},
            },
        },
        {"NodeId": plc + "Broken", "DisplayName": "Broken", "Value": {"SourceTimestamp": iso}},  # no value
    ]
    try:
        pub.publish("opcpublisher/messages", json.dumps(samples), qos=1)
        got = await collect(src, lambda g: len(g) >= 2)
    finally:
        closed(pub)
        await src.stop()
    assert sorted((r.tag, r.value, r.quality.value, r.timestamp) for r in got) == [
        ("opcpublisher/messages/Pressure", 1.25, "bad", t0 + 0.25),
        ("opcpublisher/messages/SlowUInt1", 10897, "good", t0 + 0.25),
    ]
    assert src.stats.errors_by_reason == {
        "missing_field": 1
    }  # the record without its value, counted, skipped


def test_unquoted_on_off_state_keys_are_refused_naming_the_file_and_the_quotes(tmp_path):
    """YAML reads ON, OFF, yes, no, true and false without quotes as true/false: `states: {ON: 1, OFF: 0}`
    would have lost the texts. Refused by validate, naming the file, the path and the fix."""
    text = """
agent: {id: a1, site: s, line: l}
sources:
  plugs:
    type: mqtt
    subscriptions:
      - topic: stat/+/POWER
        json_mapping:
          states: {ON: 1, OFF: 0}
"""
    path = tmp_path / "line3.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert f"{path}: sources.plugs.subscriptions[0].json_mapping.states: a key read as true" in msg
    assert "quote each key: {'ON': 1, 'OFF': 0}" in msg
    path.write_text(text.replace("{ON: 1, OFF: 0}", "{'ON': 1, 'on': 0}"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "'ON' and 'on' are one state" in str(e.value)
    # a number past float64's range: refused by name (validate ended in OverflowError's traceback), also one of
    # more digits than Python writes, a YAML hex literal's (its message was Python's "Exceeds the limit (4300
    # digits) for integer string conversion")
    for huge in ("1" + "0" * 400, "0x" + "F" * 4000):
        path.write_text(text.replace("{ON: 1, OFF: 0}", "{'ON': " + huge + "}"))
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert (
            "json_mapping.states: 'ON' -> a whole number past float64's range: the value is the finite"
            in str(e.value)
        )
    path.write_text(text.replace("{ON: 1, OFF: 0}", "{'ON': 1, 'OFF': 0}"))
    assert load_config(path).sources["plugs"].subscriptions[0].json_mapping.states == {"ON": 1, "OFF": 0}


def test_local_times_of_the_hour_a_summer_time_ends_are_read_at_the_instant_nearer_the_receive_time():
    """Tasmota's Time under json_mapping.timezone Europe/Berlin: on 2026-10-25 the clocks go back from 03:00 CEST
    to 02:00 CET, and the device's 02:00-02:59 come twice. Both were read as the first (summer) instant: the
    second hour's readings were an hour older than the tag's last and dropped as out_of_order, an hour of a
    device's data each year (kept under out_of_order: keep, an hour off). Of the two instants, the one nearer
    the receive time is now taken. Through the source's own per-message path (``decode``, as the adapter's
    ordering test does) with receive times in that hour: a broker's would be today's."""
    berlin = ZoneInfo("Europe/Berlin")
    mapping = {"timestamp_field": "Time", "timestamp_format": "iso8601", "timezone": "Europe/Berlin"}
    src = MqttSource("mq", MqttSettings(port=1, subscriptions=[{"topic": "tele/#", "json_mapping": mapping}]))
    start = datetime(2026, 10, 24, 23, 30, tzinfo=UTC).timestamp()  # 01:30 CEST
    got, sent = [], []
    for k in range(0, 3 * 3600, 60):  # a reading a minute for three hours, in the device's local time
        at = start + k
        local = datetime.fromtimestamp(at, berlin).replace(tzinfo=None).isoformat()
        sent.append(at)
        payload = json.dumps({"Time": local, "Power": k}).encode()
        got += src.decode("tele/plug/SENSOR", payload, at + 0.2)
    assert [r.timestamp for r in got] == sent
    assert src.stats.errors_by_reason == {}


async def test_a_device_counting_its_uptime_in_ms_or_us_is_read_at_the_receive_time_not_refused_for_weeks(
    mosquitto,
):
    """A device whose clock was never set, stamping its uptime in the mapping's unit (an ESP's millis() under
    epoch_ms, esp_timer_get_time()'s microseconds under epoch_us): once that uptime read in a smaller unit
    was a date of this century (millis() past 11.6 days, microseconds past 17 minutes, nanoseconds past 1 s),
    every message was refused as bad_timestamp, "set timestamp_format: epoch_s", for weeks (millis() until
    116 days), where the clock-never-set rule promises the receive time; set so, the device's readings were
    dated 2001 on. Such a time is now refused only when in the smaller unit it is within a day of the receive
    time, as a device sending the time in another unit does; else it is a clock never set (clock_skew)."""
    now = round(time.time())
    subs = [
        {"topic": "esp/#", "json_mapping": {"timestamp_format": "epoch_ms"}},
        {"topic": "esp32/#", "json_mapping": {"timestamp_format": "epoch_us"}},
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("esp/node7", json.dumps({"ts": 86_400_000 * 30, "v": 1}), qos=1)  # millis(): 30 days up
        pub.publish("esp32/node8", json.dumps({"ts": 5_000 * 10**6, "v": 2}), qos=1)  # 5,000 s in us
        pub.publish("esp32/node8", json.dumps({"ts": 5_001 * 10**6, "v": 3}), qos=1)
        pub.publish("esp/node9", json.dumps({"ts": now, "v": 4}), qos=1)  # seconds sent as ms: refused
        pub.publish("esp32/end", json.dumps({"v": 5}), qos=1)  # no time: the receive time, nothing said
        got = await collect(src, lambda g: any(r.value == 5 for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [
        ("esp/node7/v", 1),
        ("esp32/node8/v", 2),
        ("esp32/node8/v", 3),
        ("esp32/end/v", 5),
    ]
    assert all(r.timestamp == r.received_at for r in got)
    assert src.stats.errors_by_reason == {"clock_skew": 3, "bad_timestamp": 1}
    assert "as seconds it is a date of this century: set timestamp_format: epoch_s" in (
        src.stats.last_error or ""
    )


async def test_a_json_reading_without_a_time_of_its_own_neither_holds_nor_is_held_to_its_tags_order(
    mosquitto,
):
    """A device without a clock yet sends its time as null (or none): its readings get the receive time, which
    moved the tag's order, so once its clock was set, two seconds behind this gateway's, its first stamped
    readings were older than that receive time and dropped as out_of_order (and so after every message
    without a time, a batch's item without one included). The receive time is not the device's clock: such a
    reading is passed on without being held to the tag's order or moving it, as Sparkplug's (7198a0e)."""
    subs = [{"topic": "dev/#"}, {"topic": "gw/#", "json_mapping": {"records": {"array": "values"}}}]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("dev/x", json.dumps({"ts": None, "v": 1}), qos=1)  # no clock yet
        time.sleep(0.05)
        pub.publish("dev/x", json.dumps({"ts": time.time() - 2, "v": 2}), qos=1)  # set, 2 s behind
        pub.publish("dev/x", json.dumps([{"v": 3}, {"ts": time.time() - 2, "v": 4}]), qos=1)
        time.sleep(0.05)
        pub.publish("gw/y", json.dumps({"values": [{"id": "t", "v": 5}]}), qos=1)  # no time at all
        time.sleep(0.05)
        pub.publish("gw/y", json.dumps({"values": [{"id": "t", "v": 6, "t": time.time() - 2}]}), qos=1)
        got = await collect(src, lambda g: any(r.value == 6 for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [r.value for r in got] == [1, 2, 3, 4, 5, 6]
    assert src.stats.errors_by_reason == {}


async def test_numbers_from_text_reads_every_number_the_codec_reads_a_bare_quoted_one_a_rate_and_a_quality(
    mosquitto,
):
    """Under json_mapping.numbers_from_text a bare number was read (21.5) but the same number quoted ("21.5",
    as a device quoting every value publishes it on its own topic) was wrong_type; a waveform whose sample
    rate came quoted ("sample_rate_hz": "25600", EdgeX) was refused whole, and a record's quality quoted
    ("192") was wrong_type, while a quoted epoch time was read. Every number the codec reads by its role
    (a time, a rate, a quality) is now read from text in the same forms, and a quoted bare number under
    numbers_from_text is one reading named by its topic, as the bare number is."""
    t0 = round(time.time()) - 60
    subs = [
        {"topic": "quoted/#", "json_mapping": {"numbers_from_text": True}},
        {
            "topic": "vib/#",
            "json_mapping": {
                "values": {"v": "accel"},
                "timestamp_format": "epoch_ms",
                "numbers_from_text": True,
            },
        },
        {
            "topic": "kepware/#",
            "json_mapping": {"records": {}, "timestamp_field": "timestamp", "timestamp_format": "epoch_ms"},
        },
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    wave = {"ts": f" {t0 * 1000} ", "v": [0.5, -0.25, 1.0], "sample_rate_hz": "25600"}
    records = {"timestamp": str(t0 * 1000), "values": [{"id": "Speed", "v": 1500, "q": "192"}]}
    try:
        pub.publish("quoted/shelly1/power", b'"21.5"', qos=1)
        pub.publish("quoted/shelly1/mode", b'"auto"', qos=1)  # no number: still wrong_type
        pub.publish("vib/m1", json.dumps(wave), qos=1)
        pub.publish("kepware/line1", json.dumps(records), qos=1)
        got = await collect(src, lambda g: any(r.tag.endswith("Speed") for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value if r.tag != "vib/m1/accel" else r.value.tolist()) for r in got] == [
        ("quoted/shelly1/power", 21.5),
        ("vib/m1/accel", [0.5, -0.25, 1.0]),
        ("kepware/line1/Speed", 1500),
    ]
    assert got[1].rate_hz == 25600.0 and got[1].timestamp == t0
    assert got[2].quality is Quality.GOOD and got[2].timestamp == t0
    assert src.stats.errors_by_reason == {"wrong_type": 1}
    assert "topic 'quoted/shelly1/mode': payload is a JSON string" in (src.stats.last_error or "")


async def test_an_empty_batch_with_spaces_is_no_unread_message_and_a_state_fields_unknown_text_is_counted(
    mosquitto,
):
    """An empty batch written with whitespace ("[ ]", "[\\n]", as a pretty-printing gateway sends its empty
    buffer) raised the no_numeric_field notice, which tells the user that numbers came as text; only "[]" was
    exempt. And unmapped, under json_mapping.states, a state field's text that is no state
    ({"state": "BLINK"} after {"state": "ON"}) was dropped without a word, where a mapped field's is counted
    as unknown_state. Now any empty array is an empty batch, and a field that has held a state counts its
    unknown text as unknown_state, naming it; text fields that never held one (Zigbee2MQTT's color_mode)
    stay unread, as before (counted apart: the text_field_unread notice, tested below)."""
    t0 = round(time.time()) - 30
    subs = [
        {"topic": "buf/#"},
        {"topic": "zigbee2mqtt/#", "json_mapping": {"states": {"ON": 1, "OFF": 0}}},
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("buf/gw1", b"[ ]", qos=1)
        pub.publish("buf/gw1", b"[\n]\n", qos=1)
        pub.publish("zigbee2mqtt/lamp", json.dumps({"ts": t0, "state": "ON", "color_mode": "xy"}), qos=1)
        pub.publish(
            "zigbee2mqtt/lamp",
            json.dumps({"ts": t0 + 1, "state": "BLINK", "color_mode": "hs", "linkquality": 80}),
            qos=1,
        )
        pub.publish("buf/gw1", json.dumps({"ts": t0 + 2, "temp": 21.0}), qos=1)
        got = await collect(src, lambda g: any(r.tag == "buf/gw1/temp" for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [
        ("zigbee2mqtt/lamp/state", 1),
        ("zigbee2mqtt/lamp/linkquality", 80),
        ("buf/gw1/temp", 21.0),
    ]
    assert "no_numeric_field" not in src.notices.counts
    assert src.stats.errors_by_reason == {"unknown_state": 1}
    assert "field 'state' is 'BLINK', no text of json_mapping.states ('ON', 'OFF')" in (
        src.stats.last_error or ""
    )


async def test_unmapped_text_fields_are_counted_each_said_once_naming_the_field_and_the_setting(mosquitto):
    """Read for every number, a message's text fields gave nothing and were counted nowhere: a machine's
    "status": "FAULT", a number quoted as text, a device's local time, all dropped silently (a field that once
    held a state of json_mapping.states is unknown_state; one that never did was not counted either). Each
    such field is now counted under the text_field_unread notice, said once per source naming the field, its
    text and the setting that reads it (no log line per message, nor per field: a device's firmware version and
    serial are no fault; test_mqtt_json_vendor_shapes); readings are unchanged."""
    t0 = round(time.time()) - 30
    subs = [
        {"topic": "line/#"},
        {"topic": "z2m/#", "json_mapping": {"states": {"ON": 1, "OFF": 0}}},
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        for i in range(3):
            pub.publish(
                "line/press1", json.dumps({"ts": t0 + i, "force": 10.0 + i, "status": "RUNNING"}), qos=1
            )
        pub.publish("line/press2", json.dumps({"ts": t0, "force": 9.0, "count": "12"}), qos=1)
        # color_mode never held a state: counted; state is read as its number
        pub.publish("z2m/bulb1", json.dumps({"state": "ON", "color_mode": "xy", "brightness": 254}), qos=1)
        pub.publish("line/press3", json.dumps({"ts": t0, "force": 8.0}), qos=1)  # no text: nothing
        got = await collect(src, lambda g: any(r.tag == "line/press3/force" for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [
        ("line/press1/force", 10.0),
        ("line/press1/force", 11.0),
        ("line/press1/force", 12.0),
        ("line/press2/force", 9.0),
        ("z2m/bulb1/state", 1),
        ("z2m/bulb1/brightness", 254),
        ("line/press3/force", 8.0),
    ]
    assert src.stats.errors_by_reason == {}
    unread = src.notices.status()["text_field_unread"]
    assert unread["count"] == 5  # status 3 times, count once, color_mode once
    assert unread["message"].endswith(
        "topic 'line/press1': field 'status' holds text ('RUNNING'), not read (unmapped, only numbers are): a "
        "state is read as a number with json_mapping.states, e.g. states: {'RUNNING': 1}; or map the field in "
        "json_mapping.values to read it as text"
    )
    assert "more" not in unread  # said once per source: the later fields (count, color_mode) only counted


async def test_a_records_quality_as_statuscode_hex_text_or_a_whole_float_is_read_and_a_fraction_counted(
    mosquitto,
):
    """A gateway writing the OPC UA StatusCode as hex text ("0x80000000", "0x00000000") or its quality as a
    float (OPC DA's 192.0, from a JavaScript flow) had every such record refused (wrong_type, "not
    understood"). Hex text is now read as the StatusCode under quality_format: opcua (and refused under auto,
    naming opcua), a whole float as its integer in every convention; a fractional quality is still refused,
    counted, its error naming the record and the quality field."""
    t0 = round(time.time()) - 30
    ua = {"records": {"quality_format": "opcua"}, "timestamp_format": "epoch_s"}
    da = {"records": {"quality_format": "opcda"}, "timestamp_format": "epoch_s"}
    subs = [{"topic": "ua/#", "json_mapping": ua}, {"topic": "da/#", "json_mapping": da}]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    ua_records = [
        {"id": "P1", "v": 1.5, "q": "0x80000000", "t": t0},
        {"id": "P2", "v": 2.5, "q": "0x00000000", "t": t0},
        {"id": "P3", "v": 3.5, "q": " 0x40900000 ", "t": t0},
    ]
    da_records = [
        {"id": "T1", "v": 20.0, "q": 192.0, "t": t0},
        {"id": "T2", "v": 21.0, "q": 192.5, "t": t0},  # a fraction: counted
        {"id": "T3", "v": 22.0, "q": "0x00C0", "t": t0},
    ]
    try:
        pub.publish("ua/gw", json.dumps({"ts": t0, "values": ua_records}), qos=1)
        pub.publish("da/gw", json.dumps({"ts": t0, "values": da_records}), qos=1)
        got = await collect(src, lambda g: any(r.tag == "da/gw/T3" for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value, r.quality.value) for r in got] == [
        ("ua/gw/P1", 1.5, "bad"),
        ("ua/gw/P2", 2.5, "good"),
        ("ua/gw/P3", 3.5, "uncertain"),
        ("da/gw/T1", 20.0, "good"),
        ("da/gw/T3", 22.0, "good"),
    ]
    assert src.stats.errors_by_reason == {"wrong_type": 1}
    assert (
        "record 'T2': quality 192.5 not understood (its field 'q') (a fraction: no quality convention has one)"
        in (src.stats.last_error or "")
    )


async def test_utf16_json_without_a_bom_and_a_state_after_a_bom_are_read(mosquitto):
    """JSON in UTF-16 or UTF-32 without a byte-order mark (.NET's Encoding.Unicode.GetBytes, as a C# device
    publishes it) was malformed_json: decoded as UTF-8 (valid: its NULs are ASCII) before json.loads could
    tell its encoding, which it does with a BOM and without. A plain state after a UTF-8 BOM (a Windows tool's
    text) was unknown_state ('\\ufeffON'), while a JSON object after one was read. Both are read now."""
    t0 = round(time.time()) - 60
    subs = [
        {"topic": "net/#"},
        {"topic": "stat/+/POWER", "json_mapping": {"states": {"ON": 1, "OFF": 0}}},
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        for enc in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-16"):
            pub.publish(f"net/{enc}", json.dumps({"ts": t0, "v": 21.5}).encode(enc), qos=1)
        pub.publish("stat/plug/POWER", b"\xef\xbb\xbfON", qos=1)
        got = await collect(src, lambda g: len(g) == 5)
    finally:
        closed(pub)
        await src.stop()
    assert sorted((r.tag, r.value, r.timestamp if r.tag.startswith("net/") else None) for r in got) == [
        ("net/utf-16-be/v", 21.5, t0),
        ("net/utf-16-le/v", 21.5, t0),
        ("net/utf-16/v", 21.5, t0),
        ("net/utf-32-le/v", 21.5, t0),
        ("stat/plug/POWER", 1, None),  # the receive time
    ]
    assert src.stats.errors_by_reason == {}


async def test_utf16_json_lines_and_plain_states_are_read_and_a_broken_one_names_its_encoding(mosquitto):
    """A Windows gateway's UTF-16 (or UTF-32), with a byte-order mark or without: JSON lines (a PowerShell
    logger's, Out-File writing UTF-16) were malformed_json, a plain state (a .NET device's "ON" in
    Encoding.Unicode) malformed_json or unknown_state quoting its bytes ('O\\x00N\\x00'), and a batch past the
    bounds counted before the parse was passed unscanned and parsed. All are read as the UTF-8 they are written
    as now; one that is broken is malformed_json naming its encoding, and one whose bytes do not decode in it
    says so."""
    t0 = round(time.time()) - 60
    subs = [
        {"topic": "log/#"},
        {"topic": "stat/+/POWER", "json_mapping": {"states": {"ON": 1, "OFF": 0}}},
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    got: list = []

    async def consume() -> None:
        async for r in src.items():
            got.append(r)

    task = asyncio.create_task(consume())
    lines = "".join(json.dumps({"ts": t0 + i, "v": float(i)}) + "\r\n" for i in range(3))
    try:
        pub.publish("log/utf-16", lines.encode("utf-16"), qos=1)  # with its mark, as Out-File writes it
        pub.publish("log/utf-16-le", lines.encode("utf-16-le"), qos=1)
        pub.publish("log/utf-32-be", lines.encode("utf-32-be"), qos=1)
        pub.publish("stat/plug/POWER", "ON".encode("utf-16-le"), qos=1)
        pub.publish("stat/lamp/POWER", "OFF".encode("utf-16"), qos=1)
        pub.publish("log/empty", "[]".encode("utf-16"), qos=1)  # an empty buffer: nothing unread
        await until(lambda: len(got) == 11, 30, "the readings")
        said = []
        for topic, payload in (
            ("log/broken", '{"v": oops}'.encode("utf-16")),
            ("log/odd", '{"v": 1}'.encode("utf-16-le")[:-1]),
            # 400,001 arrays, past the bound counted before the parse: refused unparsed, as in UTF-8
            ("log/huge", ("[" + "[1]," * 400_000 + "[1]]").encode("utf-16")),
        ):
            pub.publish(topic, payload, qos=1)
            await until(lambda n=len(said) + 1: src.stats.errors == n, 30, f"{topic} refused")
            said.append(src.stats.last_error or "")
    finally:
        task.cancel()
        closed(pub)
        await src.stop()
    encodings = ("utf-16", "utf-16-le", "utf-32-be")
    assert sorted((r.tag, r.value, r.timestamp if r.tag.startswith("log/") else None) for r in got) == sorted(
        [(f"log/{enc}/v", float(i), t0 + i) for enc in encodings for i in range(3)]
        + [("stat/lamp/POWER", 0, None), ("stat/plug/POWER", 1, None)]
    )
    assert src.stats.errors_by_reason == {"malformed_json": 2, "too_many_values": 1}
    assert "no_numeric_field" not in src.notices.counts
    assert (
        "'{\"v\": oops}'" in said[0]
        and "the payload is UTF-16 (by its byte-order mark), read as such" in said[0]
    )
    assert (
        "the payload is UTF-16LE (by its NUL bytes, no byte-order mark) but its bytes do not decode"
        in said[1]
    )
    assert "over 400000 objects and arrays in one message" in said[2]


async def test_a_message_of_0_bytes_is_an_empty_message_not_malformed_json(mosquitto):
    """A client deleting a topic's retained message publishes 0 bytes retained (MQTT Explorer's delete, a
    script clearing retained messages), and the broker passes the empty message on to the subscribers. It was
    counted as malformed_json ("Expecting value: line 1 column 1 (char 0) in b''"), as if the device sent
    broken JSON. It is now the empty_message notice, no error and no reading; the topic reads on."""
    t0 = round(time.time()) - 60
    subs = [{"topic": "plant/#"}, {"topic": "stat/+/POWER", "json_mapping": {"states": {"ON": 1, "OFF": 0}}}]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    try:
        pub.publish("plant/line1/temp", json.dumps({"ts": t0, "v": 21.5}), qos=1, retain=True)
        pub.publish("plant/line1/temp", b"", qos=1, retain=True)  # the retained message deleted
        pub.publish("stat/plug/POWER", b"", qos=1, retain=True)
        pub.publish("plant/line1/temp", json.dumps({"ts": t0 + 1, "v": 22.5}), qos=1)
        got = await collect(src, lambda g: any(r.value == 22.5 for r in g))
    finally:
        closed(pub)
        await src.stop()
    assert [(r.tag, r.value) for r in got] == [("plant/line1/temp/v", 21.5), ("plant/line1/temp/v", 22.5)]
    assert src.stats.errors_by_reason == {}
    assert src.notices.counts["empty_message"] == 2
    assert "no_numeric_field" not in src.notices.counts


async def test_every_refusal_of_a_utf16_payload_names_its_encoding_and_a_zeroed_buffer_names_none(mosquitto):
    """A UTF-16 or UTF-32 payload read as UTF-8: a refusal quotes the converted text, so it names the encoding
    it was read in whatever its reason. Before, only malformed_json did: a state no text of json_mapping.states
    ('TOGGLE' in UTF-16) or a number where a time belongs quoted text the device never wrote so, without a
    word of its encoding; and a zeroed buffer (1,000 NUL bytes) said "'utf-32-be' codec can't decode bytes in
    position 248-249: truncated data", a second reading the payload never had. A large one (decoded in a worker
    thread) says the same."""
    subs = [
        {"topic": "stat/+/POWER", "json_mapping": {"states": {"ON": 1, "OFF": 0}}},
        {"topic": "iso/#", "json_mapping": {"timestamp_field": "time", "timestamp_format": "iso8601"}},
        {"topic": "log/#"},
    ]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    said = []
    big = json.dumps({"pad": "x" * 70_000, "time": 5, "v": 1})  # over 64 KiB: decoded in a worker thread

    async def consume() -> None:
        async for _ in src.items():
            pass

    task = asyncio.create_task(consume())
    try:
        for topic, payload in (
            ("stat/plug/POWER", "TOGGLE".encode("utf-16-le")),
            ("iso/a", json.dumps({"time": 5, "v": 1}).encode("utf-16")),
            ("iso/big", big.encode("utf-16")),
            ("log/zeroed", bytes(1000)),
        ):
            pub.publish(topic, payload, qos=1)
            await until(lambda n=len(said) + 1: src.stats.errors == n, 30, f"{topic} refused")
            said.append(src.stats.last_error or "")
    finally:
        task.cancel()
        closed(pub)
        await src.stop()
    assert src.stats.errors_by_reason == {"unknown_state": 1, "wrong_type": 2, "malformed_json": 1}
    assert "'TOGGLE'" in said[0] and said[0].endswith(
        "; the payload is UTF-16LE (by its NUL bytes, no byte-order mark), read as such"
    )
    assert said[1].endswith("; the payload is UTF-16 (by its byte-order mark), read as such")
    assert said[2].endswith("; the payload is UTF-16 (by its byte-order mark), read as such")
    assert "the payload begins with NUL bytes (a zeroed buffer?), no JSON or text" in said[3]
    assert "codec" not in said[3] and "read as such" not in said[3]


async def test_a_record_refused_in_a_utf16_batch_names_the_encoding_as_the_batch_does(mosquitto):
    """A records batch in UTF-16 (a Windows gateway's) whose one record is refused: the record's line quotes the
    converted text, so it names the encoding, as a refusal of the whole batch does. Before, it did not, on the
    loop and in a worker thread (a batch over 64 KiB) alike; the batch's other records are read."""
    subs = [{"topic": "rec/#", "json_mapping": {"records": {"array": "values"}, "timestamp_field": None}}]
    src = await started(mosquitto.port, subs)
    pub = raw_client(mosquitto.port)
    said, got = [], []

    async def consume() -> None:
        async for r in src.items():
            got.append((r.tag, r.value))

    task = asyncio.create_task(consume())
    records = [{"id": "a", "v": 1}, {"id": "b"}]  # b without its value: missing_field
    pad = [{"id": f"p{i}", "v": i} for i in range(4000)]  # over 64 KiB: decoded in a worker thread
    try:
        for topic, batch, encoding in (
            ("rec/small", records, "utf-16"),
            ("rec/big", records + pad, "utf-16-le"),
        ):
            pub.publish(topic, json.dumps({"values": batch}).encode(encoding), qos=1)
            await until(lambda n=len(said) + 1: src.stats.errors == n, 30, f"{topic}'s record refused")
            said.append(src.stats.last_error or "")
        await until(lambda: len(got) == 2 + 4000, 30, "the other records read")
    finally:
        task.cancel()
        closed(pub)
        await src.stop()
    assert got[0] == ("rec/small/a", 1) and ("rec/big/a", 1) in got
    assert said[0].startswith("missing_field: topic 'rec/small': record 'b'")
    assert said[0].endswith("; the payload is UTF-16 (by its byte-order mark), read as such")
    assert said[1].startswith("missing_field: topic 'rec/big': record 'b'")
    assert said[1].endswith("; the payload is UTF-16LE (by its NUL bytes, no byte-order mark), read as such")
