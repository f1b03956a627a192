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
