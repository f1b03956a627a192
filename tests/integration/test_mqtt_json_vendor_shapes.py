"""MqttSource against a real Mosquitto with JSON shapes of other vendors that look alike: OPC UA PubSub JSON
(Part 14) and Azure OPC Publisher's legacy Samples messages, OPC Publisher's event samples, and devices whose
messages carry many ordinary text fields (firmware version, serial, MAC). Each is read by its own shape or
counted and said once; none is misread as another."""

from __future__ import annotations

import logging
import time

from tests.integration.test_mqtt_opcua_pubsub import iso, published

PUBSUB = [{"topic": "plant/#", "json_mapping": {"opcua_pubsub": {}, "tag_prefix_topic": False}}]


async def test_pubsub_fields_named_nodeid_and_value_and_opc_publisher_samples_are_each_read_by_their_shape(
    mosquitto,
):
    """A PubSub Payload may hold fields named NodeId (text) and Value (a DataValue), which is also what an
    OPC Publisher sample holds at its top. Told apart by shape, in both nestings: inside a NetworkMessage's
    Messages[].Payload, or a DataSetMessage's Payload, they are two fields; a sample batched beside a
    NetworkMessage is one reading of its node; a sample's Value holding a PubSub-like object is no PubSub
    message. Before, an object with a PubSub header key (MessageId, MessageType "ua-data") but no Payload was
    read as a sample, and a header-less Payload holding NodeId, Value and other fields as a sample of one
    node, its other fields lost: now each is counted and skipped, never misread."""
    t0 = round(time.time()) - 30
    node = "nsu=http://example.com/Line/;s=Motor1"
    payload = {
        "NodeId": node,
        "Value": {"Value": 21.5, "SourceTimestamp": iso(t0 + 0.5)},
        "Speed": {"Value": 1450, "SourceTimestamp": iso(t0 + 0.5)},
    }
    network = {
        "MessageId": "7",
        "MessageType": "ua-data",
        "PublisherId": "line1",
        "Messages": [{"DataSetWriterId": 1, "Timestamp": iso(t0 + 1), "Payload": payload}],
    }
    sample = {
        "NodeId": node,
        "DisplayName": "Motor1",
        "Timestamp": iso(t0 + 2),
        "Value": {"Value": 3.25, "SourceTimestamp": iso(t0 + 2)},
        "ExtensionFields": {"PublisherId": "line1", "DataSetWriterId": "1000"},
    }
    dataset_alone = {
        "DataSetWriterId": 2,
        "Timestamp": iso(t0 + 3),
        "Payload": {"NodeId": "ns=2;s=Pump", "Value": {"Value": 7}},
    }
    messages = [
        ("plant/net", network),
        ("plant/batch", [sample, network]),  # a sample beside a NetworkMessage: each by its shape
        ("plant/dsm", dataset_alone),
        # a NetworkMessage header without Messages: no sample (formerly read as one, named by its NodeId)
        ("plant/bad1", {"MessageId": "8", "MessageType": "ua-data", "NodeId": node, "Value": {"Value": 99}}),
        # a Payload sent without its header holding NodeId, Value and a field no sample has: either shape
        ("plant/bad2", {"NodeId": node, "Value": {"Value": 98}, "Temperature": 20.5}),
        # a sample whose value is an object shaped like a DataSetMessage: a structure, not PubSub
        ("plant/bad3", {"NodeId": node, "DisplayName": "S", "Value": {"Value": {"Payload": {"X": 1}}}}),
        ("plant/last", {"NodeId": "ns=2;s=Last", "DisplayName": "Last", "Value": {"Value": 1.0}}),
    ]
    src, got = await published(mosquitto.port, PUBSUB, messages, "Last")
    assert [(r.tag, r.value) for r in got] == [
        ("NodeId", node),
        ("Value", 21.5),
        ("Speed", 1450),
        ("Motor1", 3.25),
        ("NodeId", node),
        ("Value", 21.5),
        ("Speed", 1450),
        ("NodeId", "ns=2;s=Pump"),
        ("Value", 7),
        ("Last", 1.0),
    ]
    assert all(r.tag != node for r in got)  # no PubSub message was read as a sample of its NodeId
    assert src.stats.errors_by_reason == {"missing_field": 1, "wrong_type": 2}


async def test_opc_publisher_v1_samples_with_its_monitoreditem_object_or_expandednodeid_are_still_read(
    mosquitto,
):
    """The first OPC Publisher (iot-edge-opc-publisher, whose telemetry configuration file shapes its
    samples) nests ApplicationUri and DisplayName in a MonitoredItem object under MonitoredItem.Flat: false,
    and adds an ExpandedNodeId key when ExpandedNodeId.Publish is set. Both were read as samples; the shape
    check (nothing but a sample's keys) refused each as wrong_type, every message of such a publisher lost.
    They are read again: the nested one named by its NodeId as before, the other by its DisplayName."""
    t0 = round(time.time()) - 30
    nested = {
        "NodeId": "ns=2;s=Temperature",
        "MonitoredItem": {"ApplicationUri": "urn:myopcserver", "DisplayName": "Temperature"},
        "Value": {"Value": 21.5, "SourceTimestamp": iso(t0 + 1)},
    }
    expanded = {
        "EndpointUrl": "opc.tcp://plc1:4840/",
        "NodeId": "i=2258",
        "ExpandedNodeId": "nsu=http://opcfoundation.org/UA/;i=2258",
        "ApplicationUri": "urn:myopcserver",
        "DisplayName": "Pressure",
        "Value": {"Value": 3.5, "SourceTimestamp": iso(t0 + 2), "StatusCode": 0, "Status": "Good"},
    }
    messages = [
        ("plant/v1", nested),
        ("plant/v1", [expanded, nested]),  # a batch (--ms / --si)
        ("plant/last", {"NodeId": "ns=2;s=Last", "DisplayName": "Last", "Value": {"Value": 1.0}}),
    ]
    src, got = await published(mosquitto.port, PUBSUB, messages, "Last")
    assert [(r.tag, r.value, r.timestamp) for r in got[:3]] == [
        ("ns=2;s=Temperature", 21.5, t0 + 1),
        ("Pressure", 3.5, t0 + 2),
        ("ns=2;s=Temperature", 21.5, t0 + 1),
    ]
    assert [r.tag for r in got[3:]] == ["Last"]
    assert src.stats.errors_by_reason == {}


async def test_opc_publisher_event_samples_are_counted_as_event_unread_and_said_once(mosquitto, caplog):
    """OPC Publisher's Samples mode sends an OPC UA event as a sample whose Value holds the event's fields
    (EventId, Message, Severity, ...) instead of a DataValue; a pending alarm alike; in the reversible
    encoding an ExtensionObject Variant holding them. Each was counted as missing_field ("has no Value", an
    error for every event) or wrong_type. They are now counted under the event_unread notice, said once, and
    skipped; value samples beside them are read."""
    caplog.set_level(logging.INFO)
    events = [
        {
            "NodeId": "i=2253",
            "EndpointUrl": "opc.tcp://localhost:57965/UA/SampleServer",
            "DisplayName": "SimpleEvents",
            "Value": {
                "EventId": "JdRhF43ktkKvJBrk+sePkg==",
                "Message": "The system cycle '1' has started.",
                "http://opcfoundation.org/SimpleEvents#CycleId": "1",
                "http://opcfoundation.org/SimpleEvents#CurrentStep": {"Name": "Step 1", "Duration": 1000.0},
            },
        },
        {
            "NodeId": "i=2253",
            "DisplayName": "PendingAlarms",
            "Value": {
                "EventId": "xW5uvGPSuUWBdvp8IfSueQ==",
                "EventType": "i=2830",
                "Message": "The dialog was activated",
                "ReceiveTime": iso(time.time() - 5),
                "Severity": 100,
                "SourceName": "EastTank",
                "Time": iso(time.time() - 5),
            },
            "SequenceNumber": 2,
            "ExtensionFields": {"PublisherId": "edge1", "DataSetWriterId": "1000"},
        },
        {
            "NodeId": "i=2253",
            "DisplayName": "SimpleEvents",
            "Value": {
                "Type": "ExtensionObject",
                "Body": {
                    "TypeId": "http://microsoft.com/Industrial-IoT/OpcPublisher#i=1",
                    "Encoding": "Json",
                    "Body": {
                        "EventId": {"Type": "ByteString", "Body": "xbAm3QTXwEKsVZFcsHSdzA=="},
                        "Message": {"Type": "LocalizedText", "Body": {"Text": "cycle", "Locale": "en-US"}},
                    },
                },
            },
        },
    ]
    value = {"NodeId": "ns=2;s=StepUp", "DisplayName": "StepUp", "Value": {"Value": 21713}}
    messages = [
        ("plant/events", events[0]),
        ("plant/events", events[1:] + [value]),
        ("plant/events", events[0]),
    ]
    messages.append(("plant/last", {"NodeId": "ns=2;s=Last", "DisplayName": "Last", "Value": {"Value": 1.0}}))
    src, got = await published(mosquitto.port, PUBSUB, messages, "Last")
    assert [(r.tag, r.value) for r in got] == [("StepUp", 21713), ("Last", 1.0)]
    assert src.stats.errors_by_reason == {}
    notice = src.notices.status()["event_unread"]
    assert notice["count"] == 4
    assert "topic 'plant/events': sample: 'SimpleEvents' sent an event" in notice["message"]
    assert "'EventId', 'Message'" in notice["message"]
    said = [r for r in caplog.records if "sent an event" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


async def test_a_devices_ordinary_text_fields_are_said_in_one_line_per_source_and_all_counted(
    mosquitto, caplog
):
    """A device read for every number whose messages carry ordinary text fields (firmware version, serial,
    MAC, IP, model, hostname) made up to 8 WARNING lines per source, one per field, for no fault. The
    source now says it once, in one line naming the first fields and how many, with the setting of the one
    most likely meant as a value (here a number sent as text); every field of every message is still
    counted under text_field_unread, and readings are unchanged."""
    caplog.set_level(logging.INFO)
    t0 = round(time.time()) - 30
    device = {
        "fw": "1.2.3",
        "serial": "SN-0042",
        "mac": "aa:bb:cc:dd:ee:ff",
        "ip": "10.0.0.5",
        "model": "TH-1",
        "hostname": "dev-1",
        "count": "12",
        "site": "hall 3",
        "sensor": "SHT31",
    }
    messages = [("th/dev1", {"ts": t0 + i, "temp": 20.0 + i, **device}) for i in range(3)]
    messages.append(("th/dev2", {"ts": t0, "temp": 19.0, "fw": "1.2.4", "owner": "maint"}))
    messages.append(("th/last", {"ts": t0, "temp": 18.0}))
    src, got = await published(mosquitto.port, [{"topic": "th/#"}], messages, "th/last/temp")
    assert [(r.tag, r.value) for r in got] == [
        ("th/dev1/temp", 20.0),
        ("th/dev1/temp", 21.0),
        ("th/dev1/temp", 22.0),
        ("th/dev2/temp", 19.0),
        ("th/last/temp", 18.0),
    ]
    unread = src.notices.status()["text_field_unread"]
    assert unread["count"] == 3 * 9 + 2
    assert "more" not in unread
    said = [r for r in caplog.records if "not read" in r.getMessage() and r.levelno >= logging.WARNING]
    assert len(said) == 1
    assert unread["message"].endswith(
        "topic 'th/dev1': 9 text fields, 'fw' ('1.2.3'), 'serial' ('SN-0042'), 'mac' ('aa:bb:cc:dd:ee:ff'), "
        "'ip' ('10.0.0.5'), 'model' ('TH-1') and 4 more, not read; field 'count' holds a number as text ('12'), "
        "not read: set json_mapping.numbers_from_text: true to read it as a number, or map it in "
        "json_mapping.values to read it as text"
    )
