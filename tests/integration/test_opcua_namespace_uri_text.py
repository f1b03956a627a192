"""A node id naming its namespace by URI (``nsu=<uri>;s=...``) whose URI holds a ``;``: OPC UA's NodeId text
form (Part 6) writes it ``%3B`` (and a ``%`` ``%25``), which is decoded against a real asyncua server's
namespace array. Written raw, the first ``;`` ends the URI: before, that was refused as "the server has no
namespace 'urn:plc'", which sent the engineer to check a namespace that is there."""

from __future__ import annotations

import pytest
from asyncua import Client

from devices.opcua.client import OpcUaNodeError, _resolve_node_id
from tests.support.peers import free_port, opcua_server


async def test_a_semicolon_in_a_namespace_uri_is_taken_percent_encoded_and_named_when_raw() -> None:
    port = free_port()
    srv, idx, _ = await opcua_server(port, "plc", "urn:plc;line=2", "PLC")
    accented = await srv.register_namespace("urn:usine:régleur")
    own_percent = await srv.register_namespace("urn:plc%E9")
    await srv.start()
    client = Client(f"opc.tcp://127.0.0.1:{port}/plc/")
    await client.connect()
    try:
        assert await _resolve_node_id(client, "nsu=urn:plc%3Bline=2;s=Speed") == f"ns={idx};s=Speed"
        assert await _resolve_node_id(client, "nsu=urn:plc%3bline=2;i=7") == f"ns={idx};i=7"
        # spaces around the identifier's key, as asyncua reads a node id: taken as before the decoding
        assert await _resolve_node_id(client, "nsu=urn:plc%3Bline=2; s=Speed") == f"ns={idx}; s=Speed"
        with pytest.raises(OpcUaNodeError) as e:
            await _resolve_node_id(client, "nsu=urn:plc;line=2;s=Speed")
        said = str(e.value)
        assert "'line=2;s=Speed' after the namespace URI 'urn:plc' is no identifier" in said, said
        assert "written %3B" in said and "has no namespace" not in said, said
        with pytest.raises(OpcUaNodeError, match="the server has no namespace 'urn:plc;line=3'"):
            await _resolve_node_id(client, "nsu=urn:plc%3Bline=3;s=Speed")
        # escapes are UTF-8 bytes (RFC 3986): each was taken as a character, 'urn:usine:rÃ©gleur', no namespace
        assert (
            await _resolve_node_id(client, "nsu=urn:usine:r%C3%A9gleur;s=Speed") == f"ns={accented};s=Speed"
        )
        with pytest.raises(OpcUaNodeError, match=r"percent-escapes %E9 are no UTF-8 text.* as %25"):
            await _resolve_node_id(client, "nsu=urn:usine:r%E9gleur;s=Speed")
        # a namespace whose URI holds a '%' of its own is found as written, as before the escapes were decoded
        assert await _resolve_node_id(client, "nsu=urn:plc%E9;i=7") == f"ns={own_percent};i=7"
        assert await _resolve_node_id(client, "nsu=urn:plc%25E9;i=7") == f"ns={own_percent};i=7"
    finally:
        await client.disconnect()
        await srv.stop()
