"""OPC UA PubSub JSON (``JsonMapping.opcua_pubsub``), pure: what each skipped part of a message is reported
as, and the bound on one message's fields. The shapes against a real broker are in
tests/integration/test_mqtt_opcua_pubsub.py."""

from __future__ import annotations

import json

import pytest

from protocols.json_codec import MAX_VALUES, CodecError, JsonMapping, PubsubMapping, compile_decoder

BAD_NOT_CONNECTED = 0x808A0000


def test_each_skipped_part_is_reported_naming_its_dataset_message_and_field():
    """What a user reads in the log for each skipped part: the DataSetMessage, the field and what came."""
    errors: list[tuple[str, str]] = []
    decode = compile_decoder(
        JsonMapping(opcua_pubsub=PubsubMapping(tag="{writer}/{field}")),
        on_record_error=lambda reason, detail: errors.append((reason, detail)),
    )
    payload = {
        "MessageType": "ua-data",
        "Messages": [
            {"DataSetWriterId": 1, "Payload": {"Struct": {"Value": {"X": 1}}, "Null": None, "Ok": 1}},
            {"DataSetWriterId": 1, "Payload": {"Lost": {"StatusCode": BAD_NOT_CONNECTED}}},
            {
                "DataSetWriterId": 1,
                "Payload": {"V": {"Type": 11}, "Q": {"Value": 1, "StatusCode": "nonsense"}},
            },
            {"Payload": {"NoWriter": 1}},
            "text",
        ],
    }
    # a DataValue of a bad StatusCode and no Value (the PLC item is gone): a reading of no value, BAD
    assert decode(json.dumps(payload), 1e9) == [
        ("1/Ok", 1, 1e9, None, "good"),
        ("1/Lost", None, 1e9, None, "bad"),
    ]
    assert errors == [
        ("wrong_type", "DataSetMessage 0: field 'Struct' is dict; expected a number, bool, string or array"),
        ("missing_field", "DataSetMessage 0: field 'Null' is null (no value)"),
        ("missing_field", "DataSetMessage 2: field 'V' is a Variant without a Body (null)"),
        ("wrong_type", "DataSetMessage 2: field 'Q': StatusCode 'nonsense' is no OPC UA StatusCode"),
        (
            "missing_field",
            "DataSetMessage 3 has no DataSetWriterId (nor DataSetWriterName), which "
            "json_mapping.opcua_pubsub.tag '{writer}/{field}' names",
        ),
        ("wrong_type", "DataSetMessage 4 is a JSON string; expected an object"),
    ]


def test_a_message_over_max_values_fields_is_refused_whole():
    """Bounded as the other decoders: over MAX_VALUES fields in one message is too_many_values."""
    payload = {"Messages": [{"Payload": {f"f{i}": i for i in range(MAX_VALUES // 2 + 1)}}] * 2}
    with pytest.raises(CodecError) as e:
        compile_decoder(JsonMapping(opcua_pubsub=PubsubMapping()))(json.dumps(payload), 1e9)
    assert e.value.reason == "too_many_values"


def test_an_opc_publisher_sample_is_told_from_a_bare_payload_by_its_nodeid_and_datavalue():
    """A Samples message (a text NodeId and a DataValue object under Value, no Payload) is one reading of its
    node; an object without them is still a bare Payload, every field a reading; a sample that names no node
    and a StatusCode in a fraction are counted, naming the sample and the field."""
    errors: list[tuple[str, str]] = []
    decode = compile_decoder(
        JsonMapping(opcua_pubsub=PubsubMapping()),
        on_record_error=lambda reason, detail: errors.append((reason, detail)),
    )
    assert decode(json.dumps({"NodeId": "ns=2;s=A", "Value": {"Value": 1}}), 1e9) == [
        ("ns=2;s=A", 1, 1e9, None, "good")
    ]
    # a NodeId that is no text, or a Value that is no object: a bare Payload, as before
    assert decode(json.dumps({"NodeId": 7, "Value": {"Value": 2}}), 1e9) == [
        ("NodeId", 7, 1e9, None, "good"),
        ("Value", 2, 1e9, None, "good"),
    ]
    assert decode(json.dumps({"NodeId": "ns=2;s=A", "Value": 3}), 1e9) == [
        ("NodeId", "ns=2;s=A", 1e9, None, "good"),
        ("Value", 3, 1e9, None, "good"),
    ]
    batch = [
        {"NodeId": "", "DisplayName": "", "Value": {"Value": 1}},
        {"NodeId": "ns=2;s=B", "DisplayName": "B", "Value": {"Value": 1, "StatusCode": 0.5}},
        {"NodeId": "ns=2;s=C", "DisplayName": "C", "Value": {"Value": 4, "StatusCode": "0x00000000"}},
    ]
    assert decode(json.dumps(batch), 1e9) == [("C", 4, 1e9, None, "good")]
    assert errors == [
        ("missing_field", "message 0 has an empty NodeId and no DisplayName (the tag)"),
        (
            "wrong_type",
            "message 1: field 'B': StatusCode '0.5' is no OPC UA StatusCode (a fraction: no quality convention "
            "has one)",
        ),
    ]


def test_a_pubsub_header_or_a_field_no_sample_holds_keeps_an_object_from_being_read_as_a_sample():
    """Only an object holding a text NodeId, an object under Value and nothing but a sample's keys is an OPC
    Publisher sample: a NetworkMessage header (MessageId, MessageType "ua-data") without Messages is a broken
    PubSub message, and a header-less Payload holding NodeId, Value and another field is either shape; each
    is reported and skipped, where both were read as a sample of the NodeId."""
    errors: list[tuple[str, str]] = []
    decode = compile_decoder(
        JsonMapping(opcua_pubsub=PubsubMapping()),
        on_record_error=lambda reason, detail: errors.append((reason, detail)),
    )
    batch = [
        {"MessageId": "1", "MessageType": "ua-data", "NodeId": "ns=2;s=A", "Value": {"Value": 1}},
        {"MessageId": "2", "NodeId": "ns=2;s=A", "Value": {"Value": 2}},
        {"NodeId": "ns=2;s=A", "Value": {"Value": 3}, "Temperature": 20.5},
        {"NodeId": "ns=2;s=A", "DisplayName": "A", "SequenceNumber": 4, "Value": {"Value": 4}},
    ]
    assert decode(json.dumps(batch), 1e9) == [("A", 4, 1e9, None, "good")]
    assert [(r, d[:40]) for r, d in errors] == [
        ("missing_field", "message 0 has no Payload"),
        ("missing_field", "message 1 has no Payload"),
        ("wrong_type", "message 2 holds a text NodeId and an obj"),
    ]


def test_an_event_sample_is_reported_as_event_unread_and_gives_no_reading():
    """An OPC Publisher sample whose Value holds an event's fields (or, reversible, an ExtensionObject
    Variant of them) is no DataValue: reported as event_unread, naming the event's fields, never read."""
    errors: list[tuple[str, str]] = []
    decode = compile_decoder(
        JsonMapping(opcua_pubsub=PubsubMapping()),
        on_record_error=lambda reason, detail: errors.append((reason, detail)),
    )
    event = {"NodeId": "i=2253", "DisplayName": "SimpleEvents", "Value": {"EventId": "AA==", "Severity": 100}}
    assert decode(json.dumps(event), 1e9) == []
    assert errors == [
        (
            "event_unread",
            "sample: 'SimpleEvents' sent an event (its Value holds the event's fields 'EventId', 'Severity', no "
            "DataValue): OPC UA events are not read as tags; skipped",
        )
    ]
    # an empty Value is an empty DataValue (Good, no value), not an event
    errors.clear()
    assert decode(json.dumps({"NodeId": "ns=2;s=A", "Value": {}}), 1e9) == []
    assert errors == [("missing_field", "sample: field 'ns=2;s=A' has no Value")]
