"""A BaseDataType write target whose value the server answers with a Bad status (BadNotReadable: a PLC whose
value read-out fails for a while) when the agent reads what the node holds: that read carries no value, so
what the node holds is unknown, not nothing. Against a real asyncua server on a free loopback port, which
holds the type of the value last written to such a node and refuses another type (BadTypeMismatch); its
reads of the node's Value are answered BadNotReadable while a test says so (a server-side hook on every
Read)."""

from __future__ import annotations

from asyncua import ua

from devices.opcua.client import OpcUaSource
from edge_agent.actions import ActionRunner, write_targets
from tests.integration.test_opcua_write_held import _holds
from tests.integration.test_plc_exact_values import _config
from tests.integration.test_plc_retyped_nodes import _any_state, _sent_to
from tests.integration.test_plc_unchecked_targets import _unreadable_while
from tests.support.peers import free_port, opcua_server
from tests.support.results import result
from tests.support.waits import until

VT = ua.VariantType


async def _plc(port: int, blocked: list[bool]):
    """A PLC with an ANY node ``State`` the agent may write, holding the Double 0.0; its Value reads are
    answered BadNotReadable while ``blocked[0]``."""
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    state = await _any_state(srv, idx, obj)
    await _holds(state, ua.Variant(0.0, VT.Double))
    _unreadable_while(srv, state.nodeid, blocked, ua.AttributeIds.Value)
    sent = await _sent_to(srv, idx)
    await srv.start()
    return srv, state, f"ns={idx};s=State", sent


def _agent(port: int, node_id: str):
    """An on_change output writing 1 while a result is NG, its reset 0.5 (both a Double holds)."""
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": 1, "reset_value": 0.5}
    cfg = _config(port, {"gate": {**out, "mode": "on_change", "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(n, v) for _, n, v in write_targets(cfg)["plc"]])
    return cfg, src


async def test_a_node_whose_value_reads_bad_at_the_write_is_written_as_the_type_it_held():
    """The node held a Double when last read; the write reads it again, and that read is answered
    BadNotReadable. It was taken as holding nothing: 1 went out as an Int32, which the node (holding a
    Double) refused, and the edge was lost (a lax PLC taking it would then have refused the reset 0.5 and kept
    1 for good). Now the write goes by the type the node held when last read: 1 arrives as the Double 1.0,
    and so does the reset."""
    port = free_port()
    blocked = [False]
    srv, state, node_id, sent = await _plc(port, blocked)
    cfg, src = _agent(port, node_id)
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    st = runner.stats["gate"]
    try:
        await until(
            lambda: getattr(src._types.get(node_id), "held", None) is VT.Double, 30, "checked at connect"
        )
        blocked[0] = True
        await runner.handle(["gate"], result("NG", 0), None)
        await runner.flush(timeout_s=5)
        assert await state.read_value() == 1.0
        await runner.handle(["gate"], result("OK", 1), None)
        await runner.flush(timeout_s=5)
        assert (st["ok"], st["failed"], st["reset_refused"]) == (2, 0, 0), dict(st)
    finally:
        await src.stop()
        await srv.stop()
    assert [(v.Value, v.VariantType) for _, v in sent] == [(1.0, VT.Double), (0.5, VT.Double)], sent


async def test_a_node_whose_value_read_bad_at_connect_is_read_before_a_value_that_needs_a_reset():
    """The node's value was answered BadNotReadable when the connection came up. It was taken as holding
    nothing, so 1 was judged as making it hold an Int32, which refuses the reset 0.5: 1 was not written
    (reset_refused), although the node, holding a Double, takes both. Now what it holds is unknown: the value
    waits while the node's value cannot be read (retried, never written unjudged), is written once it can,
    judged by the Double it holds, and its reset after it."""
    port = free_port()
    blocked = [True]
    srv, state, node_id, sent = await _plc(port, blocked)
    cfg, src = _agent(port, node_id)
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    st = runner.stats["gate"]
    try:
        await until(lambda: node_id in src._types, 30, "checked at connect")
        await runner.handle(["gate"], result("NG", 0), None)
        await until(lambda: st["attempt_failures"] >= 2, 30, "held while the node's value cannot be read")
        assert sent == [], sent
        blocked[0] = False
        await until(lambda: bool(sent), 30, "written once the node's value is read")
        await runner.flush(timeout_s=5)
        await runner.handle(["gate"], result("OK", 1), None)
        await runner.flush(timeout_s=5)
        assert (st["ok"], st["reset_refused"]) == (2, 0), dict(st)
        assert await state.read_value() == 0.5
    finally:
        await src.stop()
        await srv.stop()
    assert [(v.Value, v.VariantType) for _, v in sent] == [(1.0, VT.Double), (0.5, VT.Double)], sent
