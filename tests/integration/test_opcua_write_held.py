"""What ``OpcUaSource`` does with a BaseDataType write target whose held type changes under it, against a real
asyncua server on a free loopback port (which, like many gateways and soft PLCs, holds the type of the value
last written to such a node): a node that flaps between two types is not said at every change, for months."""

from __future__ import annotations

import asyncio
import logging

import pytest
from asyncua import ua
from asyncua.common.callback import CallbackType

from devices.opcua import client as opcua_client
from devices.opcua.client import OpcUaSource, OpcUaTypeMismatch
from edge_agent.actions import ActionRunner, write_targets
from edge_agent.config import parse_config
from tests.integration.test_plc_exact_values import _config, _config_data
from tests.integration.test_plc_retyped_nodes import _any_state
from tests.support.peers import free_port, opcua_server
from tests.support.results import result
from tests.support.waits import until

VT = ua.VariantType


def _patient_config(port: int, actions: dict | None = None):
    """``_config`` with 10 s for an answer: the in-process server and the source share one loop, which a loaded
    2-core machine starves for seconds, and a session check unanswered within ``_config``'s 2 s took the server
    for stalled: the source was in backoff when the test wrote. Nothing below waits on that limit."""
    data = _config_data(port, actions)
    data["sources"]["plc"]["connect_timeout_s"] = 10.0
    return parse_config(data)


def _boolean_read_again(src: OpcUaSource, node_id: str) -> bool:
    """Whether the Boolean the node holds now was read again; until then each poll has ``write_misfit`` refuse the
    reset by the String kept, which asks for that read. A read asked by an earlier refusal may be in flight, its
    Read answered before the PLC made the node hold a Boolean: it finds the String, and a read asked meanwhile is
    not made beside it (one at a time), so a single ask could leave the String kept for good."""
    if src._types[node_id].held is VT.Boolean:
        return True
    src.write_misfit(node_id, False, after=True)
    return False


async def _holds(state, value: ua.Variant) -> None:
    """The PLC makes ``state`` hold ``value`` (its type with it)."""
    await state.write_value(ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData)))
    await state.write_value(value)


async def _state_target(monkeypatch):
    """A server whose BaseDataType node State holds the String "idle", started, and a source (not started) that
    writes True and False to it, each refusal reading the node's held value again (HELD_RECHECK_S 0)."""
    monkeypatch.setattr(opcua_client, "HELD_RECHECK_S", 0.0)  # each refusal reads it again
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    state = await _any_state(srv, idx, obj)  # holds the String "idle"
    await srv.start()
    node_id = f"ns={idx};s=State"
    src = OpcUaSource("plc", _patient_config(port).sources["plc"])
    src.expect_writes([(node_id, True), (node_id, False)])
    return srv, state, node_id, src


async def test_a_base_data_type_node_whose_held_type_flaps_is_said_once_per_spell_and_counted(
    caplog, monkeypatch
):
    """A BaseDataType node that a PLC program retypes again and again (String, Boolean, String, ...) was said
    at each re-read that found it changed (``write target ... now holds Boolean``, then ``... fits its writes
    again``): at most twice a second per node for as long as the outputs' results came, a gateway's log filled
    over months. Now the first change is said, the first of a spell of changes within HELD_QUIET_S is said
    once, and the rest are counted (notice held_type_changes); a change after a quiet spell is said again
    with the count of those not said. Each change is still read and judged."""
    srv, state, node_id, src = await _state_target(monkeypatch)
    await src.start()
    caplog.set_level(logging.INFO)
    flips = 4
    try:
        await until(lambda: node_id in src.target_errors, 30, "the String it holds judged at connect")
        for _ in range(flips):
            await _holds(state, ua.Variant("idle", VT.String))
            with pytest.raises(OpcUaTypeMismatch, match="holding a String"):
                await src.write(node_id, True)  # the write reads what it holds: a String
            await _holds(state, ua.Variant(False, VT.Boolean))
            assert src.write_misfit(node_id, False, after=True) is not None  # refused: read again
            await until(lambda: _boolean_read_again(src, node_id), 30, "the Boolean read again")
            await until(lambda: not src._target_checks, 30, "the target judged again")
            assert node_id not in src.target_errors, src.target_errors
        said = [r.getMessage() for r in caplog.records if "now holds" in r.getMessage()]
        assert len(said) == 2, said  # the first change, and the first of the spell that followed
        fits = [r.getMessage() for r in caplog.records if "fits its writes again" in r.getMessage()]
        assert len(fits) == 1, fits
        assert src.notices.counts["held_type_changes"] == flips - 1, src.notices.counts
        # it then holds one type for HELD_QUIET_S: its next change is said, with those not said meanwhile
        last, unsaid = src._held_changes[node_id]
        src._held_changes[node_id] = (last - opcua_client.HELD_QUIET_S, unsaid)
        caplog.clear()
        await _holds(state, ua.Variant("idle", VT.String))
        with pytest.raises(OpcUaTypeMismatch, match="holding a String"):
            await src.write(node_id, True)
        await _holds(state, ua.Variant(False, VT.Boolean))
        assert src.write_misfit(node_id, False, after=True) is not None
        await until(lambda: _boolean_read_again(src, node_id), 30, "the Boolean read again")
        await until(lambda: not src._target_checks, 30, "the target judged again")
        said = [r.getMessage() for r in caplog.records if "now holds" in r.getMessage()]
        assert len(said) == 1 and f"after {flips - 1} change(s) within" in said[0], said
    finally:
        await src.stop()
        await srv.stop()


@pytest.mark.parametrize("mode", ["on_change", "pulse"])
@pytest.mark.parametrize("back", ["after_the_write", "later"])
async def test_an_edge_the_server_refuses_for_the_node_s_type_is_written_once_the_node_takes_it(mode, back):
    """An on_change or pulse edge passed the check before the write (the node held a Boolean), but the PLC
    made the node hold a String just before the write reached it, so the server refused it (BadTypeMismatch;
    the source reads the node again: holding a String, the value is refused naming it, or, a Boolean again
    right after the write (``after_the_write``: a server answering alternately), the server's refusal is
    passed on). Either was counted failed, and since the condition still held, no later result was an edge:
    nothing was written until the condition ended and came back, the part was never marked. Now an edge
    refused at the write for the node's type is judged again at the next result, as one refused before the
    write: once the node holds a Boolean again, the value is written, once (a pulse: high, then its reset)."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    state = await _any_state(srv, idx, obj)
    await _holds(state, ua.Variant(False, VT.Boolean))
    sent: list[object] = []
    retype = [True]

    async def on_write(event, _dispatcher) -> None:
        for wv in event.request_params.NodesToWrite:
            if wv.NodeId.NamespaceIndex == idx and event.is_external:  # the agent's, not the PLC's own
                sent.append(wv.Value.Value.Value)
                if retype[0]:  # the PLC program makes it a String just before the write lands
                    retype[0] = False
                    await _holds(state, ua.Variant("idle", VT.String))

    async def after_write(event, _dispatcher) -> None:
        if back == "after_the_write" and event.is_external and await state.read_value() == "idle":
            await _holds(state, ua.Variant(False, VT.Boolean))

    srv.subscribe_server_callback(CallbackType.PreWrite, on_write)
    srv.subscribe_server_callback(CallbackType.PostWrite, after_write)
    await srv.start()
    node_id = f"ns={idx};s=State"
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": True, "reset_value": False}
    cfg = _config(port, {"lamp": {**out, "mode": mode, "pulse_ms": 100, "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(n, v) for _, n, v in write_targets(cfg)["plc"]])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        assert node_id not in src.target_errors, src.target_errors
        await runner.handle(["lamp"], result("NG", 0), None)
        await runner.flush(timeout_s=5)
        assert sent[:1] == [True] and True not in sent[1:], sent  # sent, refused by the server
        assert runner.stats["lamp"]["failed"] >= 1, dict(runner.stats["lamp"])
        await _holds(state, ua.Variant(False, VT.Boolean))  # the PLC: a Boolean again
        for i in range(1, 100):  # the condition still holds: no new edge, only the refused one
            await runner.handle(["lamp"], result("NG", i), None)
            await runner.flush(timeout_s=5)
            if sent.count(True) > 1:
                break
            await asyncio.sleep(0.1)
        assert sent.count(True) == 2, f"the refused edge was lost: {sent}"
        await runner.handle(["lamp"], result("NG", 100), None)  # and no edge written twice
        await runner.flush(timeout_s=5)
    finally:
        await src.stop()
        await srv.stop()
    # a pulse's reset once it ends, whether its high was taken or not (the node may take it: a Boolean again)
    if mode == "on_change":
        assert sent == [True, True], sent
    else:
        assert sent == ([True, False] if back == "after_the_write" else [True]) + [True, False], sent


async def test_a_pulse_whose_high_the_server_refused_writes_it_at_the_next_edge_while_it_runs():
    """A long pulse (a diverter held open for a minute) whose high value the server refused for the node's
    type is still running when the next result comes: that result's edge, judged again, wrote nothing (a
    running pulse is only extended), so the part was never marked. Now the high value is written at that
    edge and the pulse extended from it; it ends with its reset, once."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    state = await _any_state(srv, idx, obj)
    await _holds(state, ua.Variant(False, VT.Boolean))
    sent: list[object] = []
    retype = [True]

    async def on_write(event, _dispatcher) -> None:
        for wv in event.request_params.NodesToWrite:
            if wv.NodeId.NamespaceIndex == idx and event.is_external:
                sent.append(wv.Value.Value.Value)
                if retype[0]:  # the PLC program makes it a String just before the write lands
                    retype[0] = False
                    await _holds(state, ua.Variant("idle", VT.String))

    srv.subscribe_server_callback(CallbackType.PreWrite, on_write)
    await srv.start()
    node_id = f"ns={idx};s=State"
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": True, "reset_value": False}
    cfg = _config(port, {"gate": {**out, "mode": "pulse", "pulse_ms": 60_000, "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(n, v) for _, n, v in write_targets(cfg)["plc"]])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        await runner.handle(["gate"], result("NG", 0), None)
        await until(lambda: runner.stats["gate"]["failed"] == 1, 30, "the high refused by the server")
        await _holds(state, ua.Variant(False, VT.Boolean))  # the PLC: a Boolean again
        for i in range(1, 100):
            await runner.handle(["gate"], result("NG", i), None)
            if sent.count(True) > 1:
                break
            await asyncio.sleep(0.1)
        await until(lambda: runner.stats["gate"]["ok"] == 1, 30, "the high written")
        assert sent == [True, True], sent  # still high: its reset is due a minute after that edge
        await runner.flush(timeout_s=5)  # at stop: cut short, its reset written
        assert runner.stats["gate"]["cut_at_stop"] == 1, dict(runner.stats["gate"])
    finally:
        await src.stop()
        await srv.stop()
    assert sent == [True, True, False], sent


async def _plc_holding(port: int, value: ua.Variant):
    """A PLC on ``port`` whose ANY node ``State`` holds ``value``, and the values the agent's writes carried."""
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    state = await _any_state(srv, idx, obj)
    await _holds(state, value)
    sent: list[object] = []

    async def on_write(event, _dispatcher) -> None:
        for wv in event.request_params.NodesToWrite:
            if wv.NodeId.NamespaceIndex == idx and event.is_external:
                sent.append(wv.Value.Value.Value)

    srv.subscribe_server_callback(CallbackType.PreWrite, on_write)
    await srv.start()
    return srv, state, sent


async def test_a_value_decided_while_the_plc_was_away_is_judged_by_what_its_node_holds_after_the_reconnect():
    """A PLC download with a reconnect: the node held a Double (which takes the output's value 1 and its
    reset 0.5); the result that came while the PLC was away was judged by that type, so 1 was let out and
    written on the new connection, where the node now holds an Int32: its reset 0.5 was refused at the
    write and the node kept 1 for good. The type is read again at the reconnect, but the value had been
    judged already. Now a value is judged again when it is sent: not written (reset_refused)."""
    port = free_port()
    srv, _state, _sent = await _plc_holding(port, ua.Variant(0.0, VT.Double))
    node_id = "ns=2;s=State"
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": 1, "reset_value": 0.5}
    cfg = _config(port, {"lamp": {**out, "mode": "level", "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(n, v) for _, n, v in write_targets(cfg)["plc"]])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    srv2 = None
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        assert node_id not in src.target_errors, src.target_errors
        await srv.stop()  # the PLC download
        await until(lambda: src.state.value != "connected", 30, "the connection lost")
        await runner.handle(["lamp"], result("NG", 0), None)  # judged by the Double held before
        srv2, state2, sent = await _plc_holding(port, ua.Variant(0, VT.Int32))
        st = runner.stats["lamp"]
        await until(lambda: st["ok"] + st["reset_refused"] > 0, 20, "the value written or refused")
        await runner.flush(timeout_s=5)
        # (the value is judged as the reconnect reads the node's type, before the source counts the reconnect)
        await until(lambda: src.stats.reconnects == 1, 30, "the reconnect counted")
        assert sent == [], sent
        assert await state2.read_value() == 0
        assert st["reset_refused"] == 1 and st["ok"] == 0, dict(st)
    finally:
        await src.stop()
        await (srv2 or srv).stop()


async def test_an_output_to_a_node_that_takes_and_refuses_its_value_in_turn_is_said_once_per_burst(
    caplog, monkeypatch
):
    """A level output to a BaseDataType node whose held type flaps (Boolean, String, Boolean, ...): each
    write the node's String refused was said as a WARNING (``failed (not retried ...)``), and since the write
    after the node held a Boolean again succeeded, the next refusal was news again: a line at each flap, for
    as long as it lasted. Now an error said before the action's last success is said again once per burst
    (counted failed each time)."""
    monkeypatch.setattr(opcua_client, "HELD_RECHECK_S", 0.0)
    port = free_port()
    srv, state, _sent = await _plc_holding(port, ua.Variant(False, VT.Boolean))
    node_id = "ns=2;s=State"
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": True, "reset_value": False}
    cfg = _patient_config(port, {"lamp": {**out, "mode": "level", "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(n, v) for _, n, v in write_targets(cfg)["plc"]])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    caplog.set_level(logging.INFO)
    st = runner.stats["lamp"]
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        for n in range(1, 5):
            await _holds(state, ua.Variant("idle", VT.String))
            await runner.handle(["lamp"], result("NG", 3 * n), None)  # True refused: it holds a String
            await runner.flush(timeout_s=5)
            assert st["failed"] == n, dict(st)
            await _holds(state, ua.Variant(False, VT.Boolean))
            await runner.handle(["lamp"], result("NG", 3 * n + 1), None)  # its reset refused: read again
            await runner.flush(timeout_s=5)
            await until(lambda: _boolean_read_again(src, node_id), 30, "the Boolean read again")
            await runner.handle(["lamp"], result("NG", 3 * n + 2), None)  # written
            await runner.flush(timeout_s=5)
            assert st["ok"] == n, dict(st)
    finally:
        await src.stop()
        await srv.stop()
    said = [r.getMessage() for r in caplog.records if "'lamp' failed" in r.getMessage()]
    assert len(said) == 2, said  # the first, and the first after a success; the rest within the burst


async def test_a_retype_asked_about_while_the_held_value_is_read_is_read_once_more_after(monkeypatch):
    """A BaseDataType target's held value is read again when an output's value is refused by the type it held; an
    ask made while such a read ran was dropped. The running read may have been answered before the PLC retyped the
    node: it kept the String, and the reset was judged by it (refused, not written) until another refusal asked
    again, which a line whose outputs had stopped never made. Now the ask is kept and the value read once more after
    the running read, with nothing else asking."""
    srv, state, node_id, src = await _state_target(monkeypatch)
    held, answered, release = opcua_client._held, asyncio.Event(), asyncio.Event()

    async def held_then_waits(node, unread):  # the first read again is answered, then held at the source
        got = await held(node, unread)
        if not answered.is_set():
            answered.set()
            await release.wait()
        return got

    await src.start()
    try:
        await until(lambda: node_id in src.target_errors, 30, "the String it holds judged at connect")
        monkeypatch.setattr(opcua_client, "_held", held_then_waits)
        assert src.write_misfit(node_id, False, after=True) is not None  # refused by the String: read again
        await until(answered.is_set, 30, "the held value read (a String)")
        await _holds(state, ua.Variant(False, VT.Boolean))  # the PLC retypes the node after that answer
        assert src.write_misfit(node_id, False, after=True) is not None  # still the String: asked again
        release.set()
        # was: never, nothing asking again
        await until(lambda: src._types[node_id].held is VT.Boolean, 30, "the Boolean read again")
        await until(lambda: node_id not in src.target_errors, 30, "the target judged again")
        assert src.write_misfit(node_id, False, after=True) is None
    finally:
        release.set()
        await src.stop()
        await srv.stop()
