"""A write to a PLC whose link died without a word (no FIN, no RST: a NAT's or firewall's flow timed out, a cable
pulled beyond a switch), before the keepalive notices it: the socket still looks open and the source still
connected, so the write left unanswered was counted as a busy PLC ("not answered ... while the session is up;
retried"), and a gateway's count of busy writes said the PLC, not the network, was at fault. Now such a write is
a connection problem (``OpcUaNotConnected``, naming the silence), and one the PLC alone leaves unanswered while
its session answers stays a busy PLC. Against a real asyncua server behind a relay that freezes the link."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import ua
from asyncua.common.callback import CallbackType

from devices.opcua.client import OpcUaNotConnected, OpcUaServerBusy, OpcUaSource
from tests.integration.test_opcua_halt_recovery import _settings
from tests.support.freeze_relay import FreezeRelay
from tests.support.peers import free_port, opcua_server
from tests.support.waits import until


async def _plc(port: int):
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    await (
        await obj.add_variable(ua.NodeId("Count", idx), "Count", ua.Variant(0, ua.VariantType.Int32))
    ).set_writable()
    return srv, f"ns={idx};s=Count"


async def test_a_write_unanswered_on_a_silently_cut_link_is_a_lost_connection_not_a_busy_plc() -> None:
    port = free_port()
    srv, node_id = await _plc(port)
    await srv.start()
    relay = FreezeRelay(port)
    # the keepalive checks far apart: the write times out while the session still looks up
    src = OpcUaSource("plc", _settings(relay.port, connect_timeout_s=0.6, keepalive_check_s=60))
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the session")
        await src.write(node_id, 1)  # the node's type read, the link working
        relay.freeze()
        with pytest.raises(OpcUaNotConnected, match="the connection is silent") as lost:
            await src.write(node_id, 2)
        assert not isinstance(lost.value, OpcUaServerBusy)
    finally:
        relay.thaw()
        await src.stop()
        relay.close()
        await srv.stop()


async def test_a_write_the_plc_answers_late_while_its_session_answers_is_a_busy_plc() -> None:
    """The PLC (or the device behind a gateway server) takes a moment longer than connect_timeout_s: the write's
    answer comes late, and the session answers on: a busy PLC, retried, as before."""
    port = free_port()
    srv, node_id = await _plc(port)
    held = [False]

    async def late(event, _dispatcher) -> None:
        if event.is_external and held[0]:
            held[0] = False
            await asyncio.sleep(0.9)  # past the write's 0.6 s, within the check of the session after it

    srv.subscribe_server_callback(CallbackType.PreWrite, late)
    await srv.start()
    src = OpcUaSource("plc", _settings(port, connect_timeout_s=0.6, keepalive_check_s=60))
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the session")
        await src.write(node_id, 1)
        held[0] = True
        with pytest.raises(OpcUaServerBusy, match="while the session is up"):
            await src.write(node_id, 2)
        assert src.state.value == "connected"
    finally:
        await src.stop()
        await srv.stop()


async def test_a_write_answered_busy_with_info_bits_is_a_busy_plc_retried_not_a_refusal() -> None:
    """A write answered BadTooManyOperations carrying info bits (0x400): named "Bad" by its whole code, it was a
    refusal for good (``OpcUaWriteRefused``, the action's retries not tried); by its code it is busy, retried."""
    from asyncua.common.utils import ServiceError

    port = free_port()
    srv, node_id = await _plc(port)
    busy = [0]

    async def too_many(event, _dispatcher) -> None:
        if event.is_external and busy[0]:
            busy[0] -= 1
            raise ServiceError(ua.StatusCodes.BadTooManyOperations | 0x400)

    srv.subscribe_server_callback(CallbackType.PreWrite, too_many)
    await srv.start()
    src = OpcUaSource("plc", _settings(port, keepalive_check_s=60))
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the session")
        await src.write(node_id, 1)
        busy[0] = 1
        with pytest.raises(OpcUaServerBusy, match="BadTooManyOperations"):
            await src.write(node_id, 2)
        await src.write(node_id, 3)  # the session still up: taken once the PLC is not busy
        assert await srv.get_node(node_id).read_value() == 3
    finally:
        await src.stop()
        await srv.stop()
