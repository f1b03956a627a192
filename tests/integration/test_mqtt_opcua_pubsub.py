"""MqttSource against a real Mosquitto with OPC UA PubSub JSON messages (Part 14, 7.2.5), as Azure OPC
Publisher, Siemens S7-1500, open62541 and B&R publish them: NetworkMessages holding DataSetMessages, a
DataSetMessage alone or its bare Payload, fields as bare values (non-reversible), Variants (reversible) or
DataValues with their own SourceTimestamp and StatusCode, and ua-metadata messages between them. Before
``json_mapping.opcua_pubsub`` none of these could be mapped (the fields are an object keyed by name inside
an array of messages): validate refused the setting."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from devices.base import Quality
from edge_agent.config import ConfigError, load_config
from tests.integration.test_mqtt_vendor_json import collect, raw_client, started

GOOD, UNCERTAIN_0, BAD_NOT_CONNECTED = 0, 0x40000000, 0x808A0000


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"  # 7 digits, as .NET writes


def ua_data(publisher: str, *messages: dict) -> dict:
    """A ua-data NetworkMessage of these DataSetMessages."""
    return {"MessageId": "31", "MessageType": "ua-data", "PublisherId": publisher, "Messages": list(messages)}


async def published(port: int, subs: list[dict], messages: list[tuple[str, object]], last_tag: str):
    src = await started(port, subs)
    pub = raw_client(port)
    try:
        for topic, body in messages:
            pub.publish(topic, body if isinstance(body, bytes) else json.dumps(body), qos=1)
        got = await collect(src, lambda g: any(r.tag == last_tag for r in g))
    finally:
        pub.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        pub.loop_stop()
        await src.stop()
    return src, got


async def test_a_network_message_gives_each_fields_reading_with_its_own_time_and_status(mosquitto):
    """A ua-data NetworkMessage of two DataSetMessages: DataValue fields carry their SourceTimestamp and
    StatusCode (uncertain, bad), bare fields take their DataSetMessage's Timestamp, a DataSetMessage's
    Status is its fields' quality, and the tag names the publisher and writer as the template says."""
    t0 = round(time.time()) - 30
    network = ua_data(
        "plc1",
        {
            "DataSetWriterId": 3,
            "SequenceNumber": 17,
            "MetaDataVersion": {"MajorVersion": 1, "MinorVersion": 2},
            "Timestamp": iso(t0 + 1),
            "Status": GOOD,
            "Payload": {
                "Temperature": {"Value": 21.5, "SourceTimestamp": iso(t0 + 0.25), "StatusCode": GOOD},
                "Level": {"Value": 0.75, "SourceTimestamp": iso(t0 + 0.5), "StatusCode": UNCERTAIN_0},
                "Pressure": 1.2,
                "Running": True,
            },
        },
        {
            "DataSetWriterId": 4,
            "Timestamp": iso(t0 + 2),
            "Status": {"Code": BAD_NOT_CONNECTED, "Symbol": "BadNotConnected"},
            "Payload": {"Temperature": 19.0},
        },
    )
    subs = [{"topic": "opc/#", "json_mapping": {"opcua_pubsub": {"tag": "{publisher}/{writer}/{field}"}}}]
    src, got = await published(mosquitto.port, subs, [("opc/line1", network)], "opc/line1/plc1/4/Temperature")
    assert [(r.tag, r.value, r.timestamp, r.quality) for r in got] == [
        ("opc/line1/plc1/3/Temperature", 21.5, t0 + 0.25, Quality.GOOD),
        ("opc/line1/plc1/3/Level", 0.75, t0 + 0.5, Quality.UNCERTAIN),
        ("opc/line1/plc1/3/Pressure", 1.2, t0 + 1, Quality.GOOD),
        ("opc/line1/plc1/3/Running", True, t0 + 1, Quality.GOOD),
        ("opc/line1/plc1/4/Temperature", 19.0, t0 + 2, Quality.BAD),
    ]
    assert src.stats.errors_by_reason == {}


async def test_a_dataset_message_alone_its_bare_payload_and_a_batch_are_read(mosquitto):
    """A DataSetMessage without its NetworkMessage header, a Payload without a DataSetMessage header (read
    at the receive time) and an array of NetworkMessages (Azure OPC Publisher's batches) are all read."""
    t0 = round(time.time()) - 30
    alone = {"DataSetWriterId": 7, "Timestamp": iso(t0), "Payload": {"Speed": 1500}}
    batch = [
        {
            "MessageType": "ua-data",
            "PublisherId": "p",
            "Messages": [{"Timestamp": iso(t0 + 1), "Payload": {"A": 1}}],
        },
        {
            "MessageType": "ua-data",
            "PublisherId": "p",
            "Messages": [{"Timestamp": iso(t0 + 2), "Payload": {"A": 2}}],
        },
    ]
    subs = [{"topic": "opc/#", "json_mapping": {"opcua_pubsub": {}, "tag_prefix_topic": False}}]
    messages = [
        ("opc/a", alone),
        ("opc/b", {"Current": 4.5}),
        ("opc/c", batch),
        ("opc/d", {"Payload": {"End": 0}}),
    ]
    src, got = await published(mosquitto.port, subs, messages, "End")
    by_tag = {(r.tag, r.value): r for r in got}
    assert list(by_tag) == [("Speed", 1500), ("Current", 4.5), ("A", 1), ("A", 2), ("End", 0)]
    assert by_tag["Speed", 1500].timestamp == t0
    cur = by_tag["Current", 4.5]
    assert cur.timestamp == cur.received_at  # no header, no time: the receive time
    assert [by_tag["A", 1].timestamp, by_tag["A", 2].timestamp] == [t0 + 1, t0 + 2]
    assert src.stats.errors_by_reason == {}


async def test_reversible_variant_fields_are_read_as_their_body(mosquitto):
    """The reversible encoding wraps each value in a Variant ({"Type": 11, "Body": 21.5}), also inside a
    DataValue, and 1.05's verbose form writes {"UaType": 11, "Value": ...}; each is read as its value
    (an array Body as a waveform)."""
    t0 = round(time.time()) - 30
    network = ua_data(
        "open62541",
        {
            "DataSetWriterId": 1,
            "Timestamp": iso(t0),
            "Payload": {
                "Temperature": {"Type": 11, "Body": 21.5},
                "Count": {"Type": 7, "Body": 42},
                "Flow": {"Value": {"Type": 10, "Body": 3.5}, "SourceTimestamp": iso(t0 - 1)},
                "Wave": {"Type": 11, "Body": [0.5, 1.5, 2.5]},
                "Verbose": {"UaType": 6, "Value": -3},
            },
        },
    )
    subs = [{"topic": "opc/#", "json_mapping": {"opcua_pubsub": {}, "tag_prefix_topic": False}}]
    src, got = await published(mosquitto.port, subs, [("opc/x", network)], "Verbose")
    values = {r.tag: r.value for r in got}
    assert {k: v for k, v in values.items() if k != "Wave"} == {
        "Temperature": 21.5,
        "Count": 42,
        "Flow": 3.5,
        "Verbose": -3,
    }
    assert values["Wave"].tolist() == [0.5, 1.5, 2.5]
    assert next(r for r in got if r.tag == "Flow").timestamp == t0 - 1
    assert src.stats.errors_by_reason == {}


async def test_reversible_int64_and_uint64_variants_written_as_text_are_read_as_their_whole_numbers(
    mosquitto,
):
    """OPC UA's JSON encoding (Part 6, 5.4.2.3) writes an Int64 and a UInt64 as a JSON string, so that a
    JavaScript reader keeps its digits: {"Type": 8, "Body": "9223372036854775807"}. Read as its body, such a
    counter, energy total or tick time was the text "9223372036854775807": no rule or pipeline took it for a
    number and forwards wrote it quoted. A Variant of those types is read as its whole number, every digit kept
    (an Int64[] of them as an int64 array); text that is no integer stays text, and a bare field is not guessed."""
    network = ua_data(
        "s7-1500",
        {
            "DataSetWriterId": 1,
            "Payload": {
                "Energy": {"Type": 8, "Body": "9223372036854775807"},
                "Ticks": {"UaType": 9, "Value": "18446744073709551615"},
                "Low": {"Value": {"Type": 8, "Body": "-9223372036854775808"}},
                "Ids": {"Type": 8, "Body": ["9007199254740993", "-5"]},
                "Plain": {"Type": 8, "Body": 42},
                "Odd": {"Type": 8, "Body": "12 parts"},
                # past the type's range: no value of it (a publisher's fault), skipped and counted
                "Over": {"Type": 8, "Body": "9223372036854775808"},
                "Under": {"UaType": 9, "Value": "-1"},
                "Wide": {"Type": 9, "Body": ["1", "99999999999999999999"]},
                "Bare": "9007199254740993",
            },
        },
    )
    subs = [{"topic": "opc/#", "json_mapping": {"opcua_pubsub": {}, "tag_prefix_topic": False}}]
    src, got = await published(mosquitto.port, subs, [("opc/x", network)], "Bare")
    values = {r.tag: r.value for r in got}
    assert values["Energy"] == 2**63 - 1 and type(values["Energy"]) is int
    assert values["Ticks"] == 2**64 - 1 and values["Low"] == -(2**63) and values["Plain"] == 42
    assert values["Ids"].tolist() == [2**53 + 1, -5]
    assert values["Odd"] == "12 parts" and values["Bare"] == "9007199254740993"
    # before: 2**63, -1 and a float64 array [1.0, 1e20] passed on GOOD
    assert not {"Over", "Under", "Wide"} & set(values) and src.stats.errors_by_reason == {"wrong_type": 3}
    assert "field 'Wide' is a UInt64 Variant holding 99999999999999999999, past its range" in (
        src.stats.last_error or ""
    )


async def test_int64_and_uint64_variants_written_as_json_floats_are_read_when_whole_and_in_range(mosquitto):
    """A publisher that writes every number as a double sends an Int64 or UInt64 Variant's Body as 1e19, -1.0 or
    2.5: a whole float in the type's range is read as its integer (7.0 is 7); past the range, fractional, NaN or
    Inf it is no value of the type, skipped and counted as wrong_type naming the field, as text past the range
    is. Passed on GOOD before (98643d8 checked only integers)."""
    network = ua_data(
        "plc",
        {
            "DataSetWriterId": 1,
            "Payload": {
                "Whole": {"Type": 9, "Body": 7.0},
                "WholeIds": {"Type": 8, "Body": [1.0, -2]},
                "Over": {"Type": 8, "Body": 1e19},
                "Negative": {"Type": 9, "Body": -1.0},
                "Fraction": {"Type": 9, "Body": 2.5},
                "Wide": {"Type": 9, "Body": [1, 1e20]},
                "Plain": 3,
            },
        },
    )
    # NaN as Python's json writes it (a literal the codec reads), within an integer Variant
    text = json.dumps(network).replace('"Plain": 3', '"NotANumber": {"Type": 8, "Body": NaN}, "Plain": 3')
    assert "NotANumber" in json.loads(text)["Messages"][0]["Payload"]
    subs = [{"topic": "opc/#", "json_mapping": {"opcua_pubsub": {}, "tag_prefix_topic": False}}]
    src, got = await published(mosquitto.port, subs, [("opc/x", text.encode())], "Plain")
    values = {r.tag: r.value for r in got}
    assert values["Whole"] == 7 and type(values["Whole"]) is int
    assert values["WholeIds"].tolist() == [1, -2] and values["Plain"] == 3
    # before: 1e19, -1.0, 2.5, [1, 1e20] and NaN passed on GOOD
    assert set(values) == {"Whole", "WholeIds", "Plain"}
    assert src.stats.errors_by_reason == {"wrong_type": 5}, src.stats.errors_by_reason
    assert "field 'NotANumber' is an Int64 Variant holding nan, not a whole number" in (
        src.stats.last_error or ""
    )


async def test_a_metadata_message_is_skipped_without_an_error(mosquitto):
    """A publisher sends ua-metadata (the fields' names and types) on the same topic, at start and when its
    DataSet changes: it gives no reading and no error; the data messages around it are read."""
    t0 = round(time.time()) - 30
    metadata = {
        "MessageId": "m1",
        "MessageType": "ua-metadata",
        "PublisherId": "plc1",
        "DataSetWriterId": 3,
        "MetaData": {"Name": "Line1", "Fields": [{"Name": "Temperature", "BuiltInType": 11}]},
    }
    data = {"MessageType": "ua-data", "Messages": [{"Timestamp": iso(t0), "Payload": {"Temperature": 20.5}}]}
    keepalive = {"MessageType": "ua-keepalive", "DataSetWriterId": 3, "SequenceNumber": 9}
    subs = [{"topic": "opc/#", "json_mapping": {"opcua_pubsub": {}}}]
    messages = [("opc/m", metadata), ("opc/m", keepalive), ("opc/m", data)]
    src, got = await published(mosquitto.port, subs, messages, "opc/m/Temperature")
    assert [(r.tag, r.value, r.timestamp) for r in got] == [("opc/m/Temperature", 20.5, t0)]
    assert src.stats.errors_by_reason == {}


async def test_a_bad_field_or_dataset_message_is_counted_naming_it_and_the_others_are_read(mosquitto):
    """A field whose value is a structure, an unreadable SourceTimestamp and a DataSetMessage whose Payload
    is no object are each counted, naming the DataSetMessage and the field; the message's other fields and
    DataSetMessages are read."""
    t0 = round(time.time()) - 30
    network = {
        "MessageType": "ua-data",
        "PublisherId": "plc1",
        "Messages": [
            {
                "DataSetWriterId": 1,
                "Timestamp": iso(t0),
                "Payload": {
                    "Struct": {"Value": {"X": 1, "Y": 2}},
                    "Lost": {"StatusCode": BAD_NOT_CONNECTED},
                    "When": {"Value": 1, "SourceTimestamp": "yesterday"},
                    "Good": 5,
                },
            },
            {"DataSetWriterId": 2, "Payload": [1, 2]},
            {"DataSetWriterId": 3, "Timestamp": iso(t0), "Payload": {"Last": 6}},
        ],
    }
    subs = [{"topic": "opc/#", "json_mapping": {"opcua_pubsub": {}, "tag_prefix_topic": False}}]
    src, got = await published(mosquitto.port, subs, [("opc/bad", network)], "Last")
    # "Lost" (a bad StatusCode, no Value: the PLC item is gone) is a BAD reading of no value, as the OPC UA
    # source passes a node's Bad status: its tag's last value is no longer taken for current
    assert [(r.tag, r.value, r.quality.value) for r in got] == [
        ("Lost", None, "bad"),
        ("Good", 5, "good"),
        ("Last", 6, "good"),
    ]
    assert src.stats.errors_by_reason == {"wrong_type": 2, "bad_timestamp": 1}
    assert "DataSetMessage 1 Payload is a JSON array" in (src.stats.last_error or "")


def test_a_pubsub_mapping_is_refused_naming_the_file_and_field(tmp_path):
    """A tag template with an unknown placeholder, or opcua_pubsub beside records, is refused by validate
    naming the file, the setting's path and the placeholders there are; a good one is accepted."""
    text = """
agent: {id: a1, site: s, line: l}
sources:
  plc:
    type: mqtt
    subscriptions:
      - topic: opc/#
        json_mapping:
          opcua_pubsub: {tag: "{writer_id}/{field}"}
"""
    path = tmp_path / "line3.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert f"{path}: sources.plc.subscriptions[0].json_mapping.opcua_pubsub.tag" in msg
    assert "unknown placeholder {writer_id}" in msg and "{field}, {writer} and {publisher}" in msg
    path.write_text(text.replace('{tag: "{writer_id}/{field}"}', "{}\n          records: {}"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}: sources.plc.subscriptions[0].json_mapping" in str(e.value)
    assert "give it without records" in str(e.value)
    path.write_text(text.replace("{writer_id}", "{publisher}/{writer}"))
    mapping = load_config(path).sources["plc"].subscriptions[0].json_mapping
    assert mapping.opcua_pubsub is not None and mapping.opcua_pubsub.tag == "{publisher}/{writer}/{field}"


async def test_opc_publisher_samples_messages_are_read_each_named_by_its_node(mosquitto):
    """OPC Publisher's Samples mode (its default without --strict; 2.8's and 2.9's --mm=Samples) sends no
    PubSub message but one object per monitored item, {"NodeId", "DisplayName", "Timestamp", "Value":
    DataValue, "ExtensionFields"}, alone or batched in an array (--bs): under opcua_pubsub each was
    refused ("has no Payload"), every sample of the plant lost. Each is now a reading named by its
    DisplayName (else its NodeId), with its SourceTimestamp and StatusCode; a Bad one without a Value is a
    BAD reading of no value; the compatibility mode's hex StatusCode text is read; a sample whose Value is no
    DataValue is counted and the others read."""
    t0 = round(time.time()) - 30
    plc = "nsu=http://microsoft.com/Opc/OpcPlc/;s="
    ext = {"PublisherId": "opc.tcp://opcplc:50000_D09D61EF", "DataSetWriterId": "1000"}
    single = {
        "NodeId": plc + "StepUp",
        "EndpointUrl": "opc.tcp://opcplc:50000/",
        "ApplicationUri": "urn:OpcPlc:opcplc",
        "DisplayName": "StepUp",
        "Timestamp": iso(t0 + 1),
        "Value": {"Value": 21713, "SourceTimestamp": iso(t0 + 0.25), "ServerTimestamp": iso(t0 + 0.3)},
        "SequenceNumber": 120,
        "ExtensionFields": ext,
    }
    batch = [  # --fm=true: no DisplayName, named by the NodeId
        {
            "NodeId": plc + "RandomSignedInt32",
            "EndpointUrl": "opc.tcp://opcplc:50000/",
            "Timestamp": iso(t0 + 2),
            "Value": {"Value": -2127202062, "SourceTimestamp": iso(t0 + 1.5)},
            "ExtensionFields": ext,
        },
        {
            "NodeId": plc + "BadFastUInt1",
            "EndpointUrl": "opc.tcp://opcplc:50000/",
            "Value": {
                "StatusCode": {"Symbol": "BadNoCommunication", "Code": 2150694912},
                "SourceTimestamp": iso(t0 + 1.75),
            },
        },
        {
            "NodeId": plc + "Hex",
            "DisplayName": "Hex",
            "Value": {"Value": 4, "StatusCode": "0x40900000", "SourceTimestamp": iso(t0 + 1.8)},
        },
        {"NodeId": plc + "Struct", "DisplayName": "Struct", "Value": {"Value": {"X": 1}}},  # counted
        {"NodeId": plc + "Last", "DisplayName": "Last", "Value": {"Value": 1.5}},  # the sample's receive time
    ]
    subs = [{"topic": "opcpublisher/#", "json_mapping": {"opcua_pubsub": {}, "tag_prefix_topic": False}}]
    src, got = await published(
        mosquitto.port, subs, [("opcpublisher/one", single), ("opcpublisher/batch", batch)], "Last"
    )
    assert [(r.tag, r.value, r.quality.value, r.timestamp) for r in got[:-1]] == [
        ("StepUp", 21713, "good", t0 + 0.25),
        (plc + "RandomSignedInt32", -2127202062, "good", t0 + 1.5),
        (plc + "BadFastUInt1", None, "bad", t0 + 1.75),
        ("Hex", 4, "uncertain", t0 + 1.8),
    ]
    assert (got[-1].tag, got[-1].value, got[-1].timestamp) == ("Last", 1.5, got[-1].received_at)
    assert src.stats.errors_by_reason == {"wrong_type": 1}
    assert "message 3: field 'Struct' is dict" in (src.stats.last_error or "")


async def test_opc_publisher_samples_fill_the_tag_templates_writer_and_publisher(mosquitto):
    """A Samples message names its writer and publisher in ExtensionFields (--fm=true): the tag template's
    {writer} and {publisher} are filled from them, as from a DataSetMessage's header."""
    t0 = round(time.time()) - 30
    sample = {
        "NodeId": "ns=2;s=Temp",
        "DisplayName": "Temp",
        "Value": {"Value": 20.5, "SourceTimestamp": iso(t0)},
        "ExtensionFields": {"PublisherId": "edge1", "DataSetWriterId": "1000"},
    }
    subs = [
        {
            "topic": "pub/#",
            "json_mapping": {
                "opcua_pubsub": {"tag": "{publisher}/{writer}/{field}"},
                "tag_prefix_topic": False,
            },
        }
    ]
    src, got = await published(mosquitto.port, subs, [("pub/a", sample)], "edge1/1000/Temp")
    assert [(r.tag, r.value, r.timestamp) for r in got] == [("edge1/1000/Temp", 20.5, t0)]
    assert src.stats.errors_by_reason == {}
