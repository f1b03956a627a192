"""An output whose node could not be read when the connection came up (the PLC busy then, a node not readable
for a while: the server answered BadNotReadable): nothing was known of its type, so its reset could not be
judged before its value was written. Against a real asyncua server on a free loopback port whose reads of
one node are answered BadNotReadable while a test says so (a server-side hook on every Read)."""

from __future__ import annotations

import logging

import pytest
from asyncua import ua
from asyncua.common.callback import CallbackType

from devices.opcua.client import OpcUaSource
from edge_agent.actions import ActionRunner, write_targets
from tests.integration.test_plc_exact_values import _config
from tests.integration.test_plc_retyped_nodes import _sent_to
from tests.support.peers import free_port, opcua_server
from tests.support.results import result
from tests.support.waits import until


def _unreadable_while(
    srv, node: ua.NodeId, blocked: list[bool], attribute: ua.AttributeIds | None = None
) -> None:
    """Every attribute of ``node`` (``attribute``: that one only) a client reads is answered BadNotReadable
    while ``blocked[0]``."""

    async def on_read(event, _dispatcher) -> None:
        if not blocked[0] or not event.is_external:
            return
        for i, rv in enumerate(event.request_params.NodesToRead):
            if rv.NodeId == node and attribute in (None, rv.AttributeId):
                event.response_params[i] = ua.DataValue(
                    StatusCode=ua.StatusCode(ua.StatusCodes.BadNotReadable)
                )

    srv.subscribe_server_callback(CallbackType.PostRead, on_read)


async def _plc(port: int, blocked: list[bool]):
    """A PLC with a DINT ``Count`` (0) the agent may write, unreadable while ``blocked[0]``."""
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    count = await obj.add_variable(ua.NodeId("Count", idx), "Count", ua.Variant(0, ua.VariantType.Int32))
    await count.set_writable()
    _unreadable_while(srv, count.nodeid, blocked)
    sent = await _sent_to(srv, idx)
    await srv.start()
    return srv, f"ns={idx};s=Count", sent


def _agent(port: int, node_id: str, mode: str, reset: float):
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": 1, "reset_value": reset}
    cfg = _config(port, {"gate": {**out, "mode": mode, "pulse_ms": 100, "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(n, v) for _, n, v in write_targets(cfg)["plc"]])
    return cfg, src


@pytest.mark.parametrize("mode", ["level", "on_change", "pulse"])
async def test_an_output_whose_node_was_not_read_at_connect_is_judged_before_its_value_goes_out(mode, caplog):
    """The node (a DINT) could not be read at connect, then could: the output's value 1 was written unjudged,
    its reset 0.5 refused at the write (a DINT holds no 0.5), and the node kept 1 for good (a reject gate left
    open). Now the node's type is read before the value goes out, and the reset judged by it: 1 is not written
    (reset_refused); the target's check is made again and says the node is readable now."""
    port = free_port()
    blocked = [True]
    srv, node_id, sent = await _plc(port, blocked)
    cfg, src = _agent(port, node_id, mode, 0.5)
    caplog.set_level(logging.INFO, logger="devices.opcua")
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await until(lambda: node_id in src.target_errors, 30, "the check at connect failed")
        assert "BadNotReadable" in src.target_errors[node_id], src.target_errors
        blocked[0] = False
        await runner.handle(["gate"], result("NG", 0), None)
        await runner.flush(timeout_s=5)
        st = runner.stats["gate"]
        assert st["reset_refused"] == 1, dict(st)
        await until(lambda: "0.5" in src.target_errors.get(node_id, ""), 30, "the target judged again")
    finally:
        await src.stop()
        await srv.stop()
    assert sent == [], sent


async def test_an_output_whose_node_was_not_read_at_connect_waits_and_is_written_once_it_is_read(caplog):
    """The same node, an on_change output whose reset 0 it takes: its value waits while the node cannot be
    read (it would go out unjudged), and is written once it can, never before; the target's check is made
    again and fits. The write read the node's type itself, was refused (BadNotReadable) and not retried: the
    edge was lost, nothing written while the condition held. (A pulse's reset due meanwhile replaces its
    value, as for a PLC away: a pulse is not sent late.)"""
    port = free_port()
    blocked = [True]
    srv, node_id, sent = await _plc(port, blocked)
    cfg, src = _agent(port, node_id, "on_change", 0)
    caplog.set_level(logging.INFO, logger="devices.opcua")
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await until(lambda: node_id in src.target_errors, 30, "the check at connect failed")
        await runner.handle(["gate"], result("NG", 0), None)
        await until(lambda: runner.stats["gate"]["attempt_failures"] >= 2, 30, "held while unreadable")
        assert sent == [], sent
        blocked[0] = False
        await until(lambda: any(v.Value == 1 for _, v in sent), 30, "written once the node is read")
        await runner.flush(timeout_s=5)
        await until(lambda: node_id not in src.target_errors, 30, "the target judged again")
    finally:
        await src.stop()
        await srv.stop()
    assert [v.Value for _, v in sent][:1] == [1], sent
    assert all(v.VariantType is ua.VariantType.Int32 for _, v in sent), sent
