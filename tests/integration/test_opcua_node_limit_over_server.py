"""A node's own MaxArrayLength / MaxStringLength Property holds that node, larger or smaller than the server's
ServerCapabilities limit (OPC 10000-5, 6.3.2: "The individual Property may have a larger or smaller value"),
against a real asyncua server on a free loopback port: a value the node states it takes is written, not
refused for the server-wide limit, and one longer than the node's own is still refused before it is sent."""

from __future__ import annotations

import uuid

import pytest
from asyncua import ua
from asyncua.common.callback import CallbackType

from devices.opcua.client import OpcUaSource, OpcUaTypeMismatch
from edge_agent.config import parse_config
from tests.support.peers import free_port, opcua_server, take_node_away
from tests.support.waits import until

_GUID = uuid.UUID("09087e75-8e5e-499b-954f-f2a9603db28a")
_CASES = {
    # node kind: (initial value, server capability, its own Property, fits the node, over the node)
    "array": (
        ua.Variant([0.0, 0.0], ua.VariantType.Double),
        ua.ObjectIds.Server_ServerCapabilities_MaxArrayLength,
        "MaxArrayLength",
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        [float(i) for i in range(9)],
    ),
    "text": (
        ua.Variant("", ua.VariantType.String),
        ua.ObjectIds.Server_ServerCapabilities_MaxStringLength,
        "MaxStringLength",
        "B-2026-L3-01",
        "B-2026-12-03-LINE3-0001",
    ),
}


@pytest.mark.parametrize("kind", sorted(_CASES))
async def test_a_nodes_own_limit_above_the_servers_lets_a_value_it_takes_be_written(kind: str) -> None:
    """The server states 4 (elements, bytes) in its ServerCapabilities, the node its own 8 / 20 (a PLC's
    Array[0..7] or STRING[20] on a server whose default is lower): 6 elements, a 12-byte text are written and
    not named at connect; 9 elements, a 23-byte text are refused naming the node's own limit, and never sent.
    Before, the lower of the two held: the node's values the server takes were refused (target_errors at
    connect, OpcUaTypeMismatch at every write). A download that makes the node again with a larger limit has the
    refused value written, one with a smaller limit has the value that fitted refused. The text node is also a
    tag, its own watch off: the tag's gone notice says so."""
    initial, capability, prop, fits, over = _CASES[kind]
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")

    async def target(limit: int):
        made = await obj.add_variable(
            ua.NodeId(_GUID if kind == "text" else "Target", idx), "Target", initial
        )
        if kind == "array":
            await made.write_value_rank(1)
        await made.set_writable()
        limits = await made.add_property(
            ua.NodeId(f"Target.{prop}", idx),
            ua.QualifiedName(prop, 0),
            ua.Variant(limit, ua.VariantType.UInt32),
        )
        return made, limits

    node, limit = await target(8 if kind == "array" else 20)
    await srv.write_attribute_value(ua.NodeId(capability), ua.DataValue(ua.Variant(4, ua.VariantType.UInt32)))
    sent: list[object] = []

    async def on_write(event, _dispatcher) -> None:
        sent.extend(
            wv.Value.Value.Value
            for wv in event.request_params.NodesToWrite
            if wv.NodeId == node.nodeid and wv.AttributeId == ua.AttributeIds.Value  # not the node's making
        )

    srv.subscribe_server_callback(CallbackType.PreWrite, on_write)
    await srv.start()
    # the text node by a GUID written in capitals (asyncua's text of it is in small letters): its tag's gone
    # notice names it all the same
    node_id = f"ns={idx};g={str(_GUID).upper()}" if kind == "text" else f"ns={idx};s=Target"
    source = {
        "type": "opcua",
        "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
        "connect_timeout_s": 2,
        "keepalive_check_s": 0.3,
    }
    if kind == "text":  # read as a tag, the target's own watch off
        source.update(watch_write_targets=False, nodes=[{"node_id": node_id, "tag": "target"}])
    src = OpcUaSource("plc", parse_config({"agent": {"id": "gw"}, "sources": {"plc": source}}).sources["plc"])
    src.expect_writes([(node_id, fits)])
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 10, "the source connected")
        errors = dict(src.target_errors)
        await src.write(node_id, fits)
        with pytest.raises(OpcUaTypeMismatch) as refused:
            await src.write(node_id, over)
        stored = await node.read_value()
        # a download makes the node again (its watch says it gone; asyncua links no item to the node made again,
        # so once a session): the STRING with a larger limit (a STRING[40]), the value it takes now is written
        # (before, the refusal above, its type read again and found unchanged, judged it by the old limit for 10
        # minutes, for the session once the watch was linked again); the array with a smaller one (an
        # Array[0..3]), the value that fitted is refused, not sent for the PLC to cut or refuse (before, the type
        # read before the download judged it)
        await srv.delete_nodes([limit])
        await take_node_away(srv, node)
        await until(lambda: src._targets_gone or src._gone, 30, "the watch (the tag) said the node gone")
        node, limit = await target(4 if kind == "array" else 40)
        again = None
        if kind == "array":
            with pytest.raises(OpcUaTypeMismatch, match="at most 4"):
                await src.write(node_id, fits)
        else:
            await src.write(node_id, over)
            again = await node.read_value()
    finally:
        await src.stop()
        await srv.stop()
    assert errors == {}, errors
    assert stored == fits, stored
    if kind == "array":
        assert sent == [fits], sent  # the value that fitted before the download: not sent after it
    else:
        assert again == over and sent == [fits, over], (again, sent)
    said = str(refused.value)
    assert node_id in said and "ServerCapabilities" not in said, said
    assert (
        ("at most 8" in said and "its MaxArrayLength" in said) if kind == "array" else "at most 20" in said
    ), said
