"""An ``on_change`` / ``pulse`` edge, or an alarm's state on its OPC UA mirror, the server refuses for good for a
reason other than the node's type (a node the session may not write: BadUserAccessDenied, BadNotWritable). Against a real asyncua server on a free
loopback port whose node is locked and unlocked at run time (its AccessLevel and UserAccessLevel), as a PLC put
in a mode where the session may not write it and back."""

from __future__ import annotations

import asyncio
import logging

import pytest
from asyncua import ua
from asyncua.common.callback import CallbackType

from devices.opcua.client import OpcUaSource
from edge_agent.actions import ActionRunner, write_targets
from edge_agent.config import parse_config
from tests.integration.test_plc_exact_values import _config, _config_data
from tests.integration.test_plc_retyped_nodes import _sent_to
from tests.support.peers import free_port, opcua_server
from tests.support.results import result
from tests.support.waits import until


async def _locked_gate(port: int):
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    gate = await obj.add_variable(ua.NodeId("Gate", idx), "Gate", ua.Variant(False, ua.VariantType.Boolean))
    sent = await _sent_to(srv, idx)
    await srv.start()
    return srv, gate, f"ns={idx};s=Gate", sent


@pytest.mark.parametrize("mode", ["on_change", "pulse"])
async def test_an_edge_refused_for_a_locked_node_is_said_once_and_an_on_change_level_is_written_once_unlocked(
    mode, caplog
):
    """The node is read-only for the session at the edge: the value is refused (BadUserAccessDenied), counted
    failed, said once, not retried, and no further write goes to the locked node while the condition holds.
    Once the PLC lets the session write the node again (the watch sees its UserAccessLevel), an on_change
    output's level is written at the next result (counted resent): before, it was lost until the condition
    ended and came back, and the PLC read the old level meanwhile. A pulse is not sent late: the part it
    marked has passed."""
    port = free_port()
    srv, gate, node_id, sent = await _locked_gate(port)
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": True, "reset_value": False}
    cfg = _config(port, {"gate": {**out, "mode": mode, "pulse_ms": 50, "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(n, v) for _, n, v in write_targets(cfg)["plc"]])
    caplog.set_level(logging.WARNING, logger="edge_agent.actions")
    caplog.set_level(logging.INFO, logger="devices.opcua")
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await until(lambda: "read-only" in src.target_errors.get(node_id, ""), 30, "the lock seen at connect")
        await until(lambda: src.targets_watched == 3, 30, "the locked node watched")
        for i in range(4):
            await runner.handle(["gate"], result("NG", i), None)
            await runner.flush(timeout_s=30)
        st = runner.stats["gate"]
        assert st.get("retried", 0) == 0 and st["failed"] == (2 if mode == "pulse" else 1), dict(st)
        assert [v.Value for _, v in sent] == ([True, False] if mode == "pulse" else [True]), sent
        said = [r.getMessage() for r in caplog.records if r.name == "edge_agent.actions"]
        assert all("BadUserAccessDenied" in m for m in said), said
        assert len(said) == (2 if mode == "pulse" else 1), said  # the value's (and the pulse's reset's)
        await gate.set_writable(True)

        def fits() -> bool:  # the watch saw the unlock and the target was judged again
            return any("fits its writes again" in r.getMessage() for r in caplog.records)

        await until(fits, 30, "the unlock seen without a reconnect")
        assert node_id not in src.target_errors, src.target_errors
        sent.clear()  # the server's own writes of the node's access levels
        await runner.handle(["gate"], result("NG", 4), None)
        await runner.flush(timeout_s=30)
        if mode == "on_change":
            assert [v.Value for _, v in sent] == [True], (sent, dict(runner.stats["gate"]))
            assert (runner.stats["gate"]["resent"], runner.stats["gate"]["ok"]) == (1, 1), dict(
                runner.stats["gate"]
            )
            assert await gate.read_value() is True
        else:
            assert sent == [], sent
        await runner.handle(["gate"], result("NG", 5), None)  # no edge: nothing more
        await runner.flush(timeout_s=30)
    finally:
        await src.stop()
        await srv.stop()
    assert [v.Value for _, v in sent] == ([True] if mode == "on_change" else []), sent


async def test_a_target_judged_again_keeps_its_last_verdict_until_the_new_one():
    """A write target judged again (its access or type changed, or its type read at a send) had its entry in
    ``target_errors`` dropped before the check was made: while the server took its time to answer, the
    locked node looked fine to whoever read them (a status page, a test waiting for the unlock). Now the
    last verdict stays until the new one replaces it."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    gate = await obj.add_variable(ua.NodeId("Gate", idx), "Gate", ua.Variant(False, ua.VariantType.Boolean))
    stall, stalled, released = [False], asyncio.Event(), asyncio.Event()

    async def on_read(event, _dispatcher) -> None:  # a PLC slow to answer, while a test says so
        if stall[0] and any(rv.NodeId == gate.nodeid for rv in event.request_params.NodesToRead):
            stalled.set()
            await released.wait()

    srv.subscribe_server_callback(CallbackType.PreRead, on_read)
    await srv.start()
    node_id = f"ns={idx};s=Gate"
    src = OpcUaSource("plc", _config(port).sources["plc"])
    src.expect_writes([(node_id, True)])
    await src.start()
    try:
        await until(lambda: "read-only" in src.target_errors.get(node_id, ""), 30, "the lock seen at connect")
        await src.ensure_type(node_id)  # its type read (it was not, the node being read-only): judged again
        stall[0] = True
        async with asyncio.timeout(30):
            await stalled.wait()  # the check's read waits at the server
        assert "read-only" in src.target_errors.get(node_id, ""), src.target_errors
        released.set()
    finally:
        released.set()
        await src.stop()
        await srv.stop()


def _held_check(monkeypatch, calls: list | None = None) -> tuple[list[bool], asyncio.Event, asyncio.Event]:
    """Once ``hold[0]`` is set, the next write-target check of one value (``_check_target``) reads the node, sets
    ``held`` and ends only when ``released`` is set; ``calls`` gets each check's client."""
    from devices.opcua import client

    hold, held, released = [False], asyncio.Event(), asyncio.Event()
    check = client._check_target

    async def slow(*args, **kw):
        if calls is not None:
            calls.append(args[0])
        why = await check(*args, **kw)
        if hold[0]:
            hold[0] = False
            held.set()
            await released.wait()
        return why

    monkeypatch.setattr(client, "_check_target", slow)
    return hold, held, released


async def test_an_unlock_seen_while_a_check_that_read_the_node_locked_ends_is_judged_after_it(monkeypatch):
    """The watch sees the PLC unlock the node while a check of it (an edge's, ``ensure_type``) that read it locked
    is still running (a loaded gateway): the unlock's own check was skipped, one being under way, and that one's
    "read-only" stood in ``target_errors`` for good, an on_change output's level never written again. The check
    is made once more after it."""
    port = free_port()
    srv, gate, node_id, _ = await _locked_gate(port)
    src = OpcUaSource("plc", _config(port).sources["plc"])
    src.expect_writes([(node_id, True)])
    # the node read locked, the check's end held until the unlock is seen
    hold, held, released = _held_check(monkeypatch)
    await src.start()
    try:
        await until(lambda: "read-only" in src.target_errors.get(node_id, ""), 30, "the lock seen at connect")
        await until(lambda: src.targets_watched == 3, 30, "the locked node watched")
        hold[0] = True
        await src.ensure_type(node_id)  # its type read, then a check in the background
        async with asyncio.timeout(30):
            await held.wait()
        await gate.set_writable(True)
        await until(lambda: src.writable_again.get(node_id), 30, "the unlock seen by the watch")
        released.set()
        # was: read-only for good
        await until(lambda: node_id not in src.target_errors, 30, "the unlock judged")
    finally:
        released.set()
        await src.stop()
        await srv.stop()


async def test_an_unlock_between_two_values_of_one_check_has_the_node_judged_again(monkeypatch):
    """An output with a reset writes two values to one node, each judged with its own read of the node's access.
    The PLC unlocked the node between the two reads: the first value's "read-only" stood in ``target_errors``,
    the second's read had taken the unlock as known, so no change was seen after it (the watch's notification
    neither, had it one) and the node stayed "read-only" for good, its type known. The check sees the access
    change and the node is judged once more."""
    port = free_port()
    srv, gate, node_id, _ = await _locked_gate(port)
    data = _config_data(port)
    data["sources"]["plc"]["watch_write_targets"] = False  # nothing but the check itself sees the unlock
    src = OpcUaSource("plc", parse_config(data).sources["plc"])
    src.expect_writes([(node_id, True), (node_id, False)])
    # the first value judged locked, the second's read held until the unlock
    hold, held, released = _held_check(monkeypatch)
    await src.start()
    try:
        await until(lambda: "read-only" in src.target_errors.get(node_id, ""), 30, "the lock seen at connect")
        hold[0] = True
        await src.ensure_type(node_id)  # its type read, then a check in the background
        async with asyncio.timeout(30):
            await held.wait()
        await gate.set_writable(True)
        released.set()
        await until(lambda: src.writable_again.get(node_id), 30, "the unlock seen by the check")
        # was: read-only for good
        await until(lambda: node_id not in src.target_errors, 30, "the unlock judged")
    finally:
        released.set()
        await src.stop()
        await srv.stop()


async def test_a_check_asked_again_while_one_runs_is_not_made_on_a_session_that_ended(monkeypatch):
    """A check asked for while one runs is made once more after it, but not when the session ended meanwhile:
    made on the closed session, its reads failed at once and the node was said "malformed or unreadable
    (ConnectionError ...); check the node_id", a config error for a lost link. The next connect judges it."""
    port = free_port()
    srv, gate, node_id, _ = await _locked_gate(port)
    src = OpcUaSource("plc", _config(port).sources["plc"])
    src.expect_writes([(node_id, True)])
    calls: list = []
    hold, held, released = _held_check(monkeypatch, calls)
    await src.start()
    try:
        await until(lambda: "read-only" in src.target_errors.get(node_id, ""), 30, "the lock seen at connect")
        await until(lambda: src.targets_watched == 3, 30, "the locked node watched")
        hold[0] = True
        await src.ensure_type(node_id)  # its type read, then a check in the background
        async with asyncio.timeout(30):
            await held.wait()
        await gate.set_writable(True)
        # a check asked for again while it runs
        await until(lambda: src.writable_again.get(node_id), 30, "the unlock seen by the watch")
        session = src._client
        await srv.stop()
        await until(lambda: src._client is not session, 30, "the session ended")
        made = len(calls)
        released.set()
        await until(lambda: node_id not in src._target_checks, 30, "the check ended")
        assert calls[made:] == [], "a check made on the ended session"
        assert "read-only" in src.target_errors.get(node_id, ""), src.target_errors
    finally:
        released.set()
        await src.stop()
        await srv.stop()


async def test_an_alarm_mirror_a_locked_node_refused_is_written_once_the_node_is_unlocked(caplog):
    """An alarm mirrored on a PLC node (a lamp, a stop request) that the PLC has locked when the alarm is raised:
    the mirror's write is refused (BadUserAccessDenied), counted failed, not retried, and nothing more goes to
    the locked node while the alarm stays raised. Once the PLC lets the session write the node again (the
    watch sees its UserAccessLevel), the alarm's state is written at the next result (counted resent), as an
    on_change output's level is: before, the node kept the state from before the lock (the lamp off under a
    raised alarm) until the alarm's next transition."""
    port = free_port()
    srv, gate, node_id, sent = await _locked_gate(port)
    alarm = {"type": "alarm", "opcua_source": "plc", "node_id": node_id, "raise_after": 1, "clear_after": 1}
    cfg = _config(port, {"lamp": {**alarm, "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(n, v) for _, n, v in write_targets(cfg)["plc"]])
    caplog.set_level(logging.INFO, logger="devices.opcua")
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    st = runner.stats["lamp"]
    try:
        await until(lambda: "read-only" in src.target_errors.get(node_id, ""), 30, "the lock seen at connect")
        await until(lambda: src.targets_watched == 3, 30, "the locked node watched")
        for i in range(3):
            await runner.handle(["lamp"], result("NG", i), None)
            await runner.flush(timeout_s=30)
        assert (st["raised"], st["failed"], st["resent"]) == (1, 1, 0), dict(st)
        assert [v.Value for _, v in sent] == [True], sent  # the one refused write
        await gate.set_writable(True)

        def fits() -> bool:  # the watch saw the unlock and the target was judged again
            return any("fits its writes again" in r.getMessage() for r in caplog.records)

        await until(fits, 30, "the unlock seen without a reconnect")
        sent.clear()  # the server's own writes of the node's access levels
        await runner.handle(["lamp"], result("NG", 3), None)
        await runner.flush(timeout_s=30)
        assert [v.Value for _, v in sent] == [True], (sent, dict(st))
        assert (st["raised"], st["failed"], st["resent"]) == (1, 1, 1), dict(st)
        assert await gate.read_value() is True
        await runner.handle(["lamp"], result("NG", 4), None)  # still raised: nothing more
        await runner.flush(timeout_s=30)
    finally:
        await src.stop()
        await srv.stop()
    assert [v.Value for _, v in sent] == [True], sent
