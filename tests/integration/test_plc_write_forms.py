"""Servers differ in what a write may carry besides the value: one that takes only a value with its
source timestamp (an ICP DAS gateway) answers the usual form with BadWriteNotSupported. The agent tries its
other forms once and keeps the one the node takes. Against a real asyncua server on a free loopback port
that refuses a write without a source timestamp, as such a gateway does."""

from __future__ import annotations

import asyncio

from asyncua import ua
from asyncua.common.callback import CallbackType
from asyncua.common.utils import ServiceError

from devices.opcua.client import OpcUaSource
from devices.opcua.settings import OpcUaSettings
from tests.support.peers import free_port, opcua_server


async def test_a_server_taking_writes_only_with_a_source_timestamp_gets_them_and_the_form_is_kept():
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    node = await obj.add_variable(ua.NodeId("Setpoint", idx), "Setpoint", 0.0)
    await node.set_writable()
    asked: list[bool] = []  # per write request to the node: did it carry a source timestamp

    async def wants_timestamp(event, _dispatcher) -> None:
        for wv in event.request_params.NodesToWrite:
            if wv.NodeId == node.nodeid:
                asked.append(wv.Value.SourceTimestamp is not None)
                if wv.Value.SourceTimestamp is None:
                    raise ServiceError(ua.StatusCodes.BadWriteNotSupported)

    srv.subscribe_server_callback(CallbackType.PreWrite, wants_timestamp)
    await srv.start()
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{port}/plc/", connect_timeout_s=2.0, keepalive_check_s=0.3
        ),
    )
    try:
        await src.start()
        for _ in range(1500):
            if src.state.value == "connected":
                break
            await asyncio.sleep(0.02)
        # before: OpcUaWriteRefused (BadWriteNotSupported), for every write, for good
        await src.write(f"ns={idx};s=Setpoint", 1.5)
        assert await node.read_value() == 1.5
        await src.write(f"ns={idx};s=Setpoint", 2.5)
        assert await node.read_value() == 2.5
    finally:
        await src.stop()
        await srv.stop()
    # the first write tried the value with its status, the value alone, then with the timestamp; the
    # second went straight to the form the node takes
    assert asked == [False, False, True, True], asked
