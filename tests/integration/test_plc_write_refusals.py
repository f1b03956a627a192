"""How the agent takes a PLC's "no" to a write, against a real asyncua server on a free loopback port: a
server that says "not now" (BadTooManyOperations: a busy PLC, a gateway server whose device is slow) gets
the write again with the action's retry, not given up at once; a node the server will never let the
agent write is named once, with the fix, and every refused write is counted."""

from __future__ import annotations

import asyncio
import logging
import time

from asyncua import ua
from asyncua.common.callback import CallbackType
from asyncua.common.utils import ServiceError

from devices.opcua.client import OpcUaSource
from devices.opcua.settings import OpcUaSettings
from edge_agent.actions import ActionRunner
from edge_agent.config import parse_config
from edge_agent.types import Result
from tests.support.peers import free_port, opcua_server
from tests.support.results import result


def _result(verdict: str, seq: int) -> Result:
    return result(verdict, seq)


async def _plc(add):
    """A started server with the variables ``add(obj, idx)`` creates, and the list of its good writes."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    await add(srv, obj, idx)
    writes: list[tuple[str, object]] = []

    async def on_write(event, _dispatcher) -> None:
        for wv, status in zip(event.request_params.NodesToWrite, event.response_params or [], strict=False):
            if status.is_good() and wv.NodeId.NamespaceIndex == idx:  # not the server's own
                writes.append((wv.NodeId.Identifier, wv.Value.Value.Value))

    srv.subscribe_server_callback(CallbackType.PostWrite, on_write)
    await srv.start()
    return srv, idx, f"opc.tcp://127.0.0.1:{port}/plc/", writes


def _config(endpoint: str, actions: dict):
    return parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {
                "plc": {
                    "type": "opcua",
                    "endpoint": endpoint,
                    "connect_timeout_s": 2.0,
                    "keepalive_check_s": 0.3,
                }
            },
            "actions": actions,
        }
    )


async def _connected(src: OpcUaSource) -> None:
    for _ in range(1500):
        if src.state.value == "connected":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not connected: {src.stats.last_error}")


async def test_a_write_the_server_answers_with_too_many_operations_is_retried_and_lands():
    busy = {"left": 2}

    async def add(srv, obj, idx):
        await (await obj.add_variable(ua.NodeId("Reject", idx), "Reject", False)).set_writable()

        async def too_many(event, _dispatcher) -> None:  # a PLC whose write queue is full, twice
            if any(wv.NodeId == ua.NodeId("Reject", idx) for wv in event.request_params.NodesToWrite):
                if busy["left"]:
                    busy["left"] -= 1
                    raise ServiceError(ua.StatusCodes.BadTooManyOperations)

        srv.subscribe_server_callback(CallbackType.PreWrite, too_many)

    srv, idx, endpoint, writes = await _plc(add)
    cfg = _config(
        endpoint,
        {
            "reject": {
                "type": "opcua_write",
                "source": "plc",
                "node_id": f"ns={idx};s=Reject",
                "mode": "on_change",
                "when": {"verdict": "NG"},
                "retry": {"max_attempts": 4, "backoff_s": 0.05},
            }
        },
    )
    src = OpcUaSource("plc", cfg.sources["plc"])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await _connected(src)
        await runner.handle(["reject"], _result("NG", 0), None)
        await runner.flush(timeout_s=5)
    finally:
        await src.stop()
        await srv.stop()
    # before: BadTooManyOperations was taken as a refusal for good (not retried), and an on_change output
    # never got its value: the PLC missed the reject
    assert writes == [("Reject", True)], writes
    st = runner.stats["reject"]
    assert (st["attempt_failures"], st["retried"], st["ok"], st["failed"]) == (2, 2, 1, 0), dict(st)


async def test_a_node_the_server_never_lets_the_agent_write_is_said_once_with_the_fix_and_counted(
    caplog, monkeypatch
):
    import types

    import devices.base

    async def add(srv, obj, idx):
        await obj.add_variable(ua.NodeId("Locked", idx), "Locked", False)  # not writable: BadUserAccessDenied

    srv, idx, endpoint, writes = await _plc(add)
    node_id = f"ns={idx};s=Locked"
    cfg = _config(
        endpoint,
        {"locked": {"type": "opcua_write", "source": "plc", "node_id": node_id, "when": {"verdict": "NG"}}},
    )
    # results a minute apart: the log's 30-s burst window has passed before each
    skew = {"s": 0.0}
    monkeypatch.setattr(
        devices.base, "time", types.SimpleNamespace(monotonic=lambda: time.monotonic() + skew["s"])
    )
    src = OpcUaSource("plc", cfg.sources["plc"])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    caplog.set_level(logging.WARNING, logger="edge_agent.actions")
    try:
        await _connected(src)
        for i in range(4):
            await runner.handle(["locked"], _result("NG", i), None)
            await runner.flush(timeout_s=5)
            skew["s"] += 60.0
    finally:
        await src.stop()
        await srv.stop()
    assert writes == []
    said = [r.getMessage() for r in caplog.records if r.name == "edge_agent.actions"]
    # before: one line per burst window for as long as results came (here 4), without the fix
    assert len(said) == 1, said
    assert "'locked'" in said[0] and node_id in said[0] and "BadUserAccessDenied" in said[0], said
    assert "give that user write access" in said[0], said
    st = runner.stats["locked"]
    assert (st["failed"], st["attempt_failures"], st.get("retried", 0)) == (4, 4, 0), dict(st)


async def test_a_heartbeat_node_the_server_never_lets_the_agent_write_is_said_once_and_counted(
    caplog, monkeypatch
):
    import types

    import devices.base

    async def add(srv, obj, idx):
        await obj.add_variable(ua.NodeId("Alive", idx), "Alive", False)  # not writable: BadUserAccessDenied

    srv, idx, endpoint, writes = await _plc(add)
    # each log decision a minute after the one before: the 30-s burst window has always passed
    clock = {"s": 0.0}

    def monotonic() -> float:
        clock["s"] += 60.0
        return time.monotonic() + clock["s"]

    monkeypatch.setattr(devices.base, "time", types.SimpleNamespace(monotonic=monotonic))
    settings = _config(endpoint, {}).sources["plc"].model_dump()
    settings["heartbeat"] = {"node_id": f"ns={idx};s=Alive", "period_ms": 100}
    src = OpcUaSource("plc", OpcUaSettings(**settings))
    caplog.set_level(logging.WARNING, logger="devices.opcua")
    try:
        await src.start()
        await _connected(src)
        for _ in range(1500):
            if src.stats.errors_by_reason.get("heartbeat", 0) >= 5:
                break
            await asyncio.sleep(0.02)
    finally:
        await src.stop()
        await srv.stop()
    assert writes == [] and src.heartbeats == 0
    assert src.stats.errors_by_reason["heartbeat"] >= 5, src.stats.errors_by_reason
    said = [r.getMessage() for r in caplog.records if "heartbeat not written" in r.getMessage()]
    # before: a line per burst window for as long as the session was up (here one per period)
    assert len(said) == 1 and "BadUserAccessDenied" in said[0], said


async def test_a_write_made_just_after_the_plc_closed_the_agents_session_lands_once_the_source_reconnects():
    """The PLC closes the agent's session while the connection stays up (its session limit reclaimed, an
    engineer's tool dropping sessions, a PLC runtime restart keeping the socket): until the source's next
    check sees it, a write is answered with a session status. asyncua's server answers BadSessionNotActivated,
    which was taken as the server refusing the value for good: not retried, counted failed, and an on_change
    reject never reached the PLC. Such a status now says the session is gone: the write is retried (the
    action's default retry) and lands on the new session."""

    async def add(srv, obj, idx):
        await (await obj.add_variable(ua.NodeId("Reject", idx), "Reject", False)).set_writable()

    srv, idx, endpoint, writes = await _plc(add)
    cfg = _config(
        endpoint,
        {
            "reject": {
                "type": "opcua_write",
                "source": "plc",
                "node_id": f"ns={idx};s=Reject",
                "mode": "on_change",
                "when": {"verdict": "NG"},
            }
        },
    )
    src = OpcUaSource("plc", cfg.sources["plc"])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await _connected(src)
        await runner.handle(["reject"], _result("OK", 0), None)
        await runner.flush(timeout_s=5)
        for client in list(srv.bserver.clients):  # the PLC drops the session; the socket stays open
            await client.processor.session.close_session()
        await runner.handle(["reject"], _result("NG", 1), None)
        await runner.flush(timeout_s=10)
    finally:
        await src.stop()
        await srv.stop()
    assert writes == [("Reject", False), ("Reject", True)], writes
    st = runner.stats["reject"]
    assert (st["ok"], st.get("failed", 0)) == (2, 0), dict(st)


async def _setpoint_over_100_answered(status: int, clamp: bool, caplog) -> tuple[int, dict, float]:
    """A PLC whose Double ``Setpoint`` answers a write over 100 with ``status`` (holding 100 instead when
    ``clamp``: a server clamping into the node's range 0..100); the action ``high`` writes 120 on three NG results,
    then ``low`` 80 on an OK one. Returns the namespace index, the runner's stats and what the node held after the
    three writes of 120 (``low``'s 80, within range, is checked to land)."""

    async def add(srv, obj, idx):
        await (
            await obj.add_variable(
                ua.NodeId("Setpoint", idx), "Setpoint", ua.Variant(0.0, ua.VariantType.Double)
            )
        ).set_writable()
        service = srv.iserver.attribute_service
        write = service.write

        async def answering(params, user=None, **kw):
            over = []
            for wv in params.NodesToWrite:
                v = wv.Value.Value
                o = wv.NodeId == ua.NodeId("Setpoint", idx) and v is not None and v.Value > 100.0
                if o and clamp:
                    wv.Value = ua.DataValue(ua.Variant(100.0, ua.VariantType.Double))
                over.append(o)
            got = await (write(params, user=user, **kw) if user is not None else write(params, **kw))
            return [ua.StatusCode(status) if o and s.is_good() else s for o, s in zip(over, got, strict=True)]

        service.write = answering

    srv, idx, endpoint, _ = await _plc(add)
    node_id = f"ns={idx};s=Setpoint"
    cfg = _config(
        endpoint,
        {
            "high": {
                "type": "opcua_write",
                "source": "plc",
                "node_id": node_id,
                "value": 120.0,
                "when": {"verdict": "NG"},
            },
            "low": {
                "type": "opcua_write",
                "source": "plc",
                "node_id": node_id,
                "value": 80.0,
                "when": {"verdict": "OK"},
            },
        },
    )
    src = OpcUaSource("plc", cfg.sources["plc"])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    caplog.set_level(logging.WARNING)
    try:
        await _connected(src)
        node = srv.get_node(ua.NodeId("Setpoint", idx))
        for i in range(3):
            await runner.handle(["high"], _result("NG", i), None)
            await runner.flush(timeout_s=5)
        held = await node.read_value()
        await runner.handle(["low"], _result("OK", 3), None)
        await runner.flush(timeout_s=5)
        assert await node.read_value() == 80.0
    finally:
        await src.stop()
        await srv.stop()
    assert runner.stats["low"]["ok"] == 1, dict(runner.stats["low"])
    return idx, runner.stats, held


async def test_a_write_the_server_took_only_clamped_is_not_counted_as_written_and_names_what_the_plc_holds(
    caplog,
):
    """A server that clamps a written value into the node's range answers GoodClamped (Part 4, 7.39: "the
    value written was accepted but was clamped"): a setpoint of 120 on a node whose range ends at 100 holds 100.
    asyncua takes any Good status as done, so the write was counted ok and said nowhere, and the PLC worked on
    another value than the config's. Now such a write is refused with the reason (not retried: the same value
    would be clamped again), counted failed, and said once; a value within the range is written as before."""
    idx, stats, held = await _setpoint_over_100_answered(ua.StatusCodes.GoodClamped, True, caplog)
    assert held == 100.0  # what the server made of 120
    st = stats["high"]
    assert (st.get("ok", 0), st["failed"], st.get("retried", 0)) == (0, 3, 0), dict(st)
    said = [r.getMessage() for r in caplog.records if "GoodClamped" in r.getMessage()]
    assert len(said) == 1, said
    assert f"ns={idx};s=Setpoint" in said[0] and "120.0" in said[0], said


async def test_a_write_the_server_answers_uncertain_is_taken_counted_uncertain_and_said_not_refused(caplog):
    """OPC UA Part 4 (7.39.1): a server answers an operation Uncertain when it "could not complete the
    operation in the manner requested by the Client, however, the operation did not fail entirely" (a gateway
    server that passed the value on to a device it could not confirm). asyncua raises any status not Good, so
    such a write was a refusal: counted failed, said as 'refused by the server', though the PLC took the value.
    Now it is counted ``uncertain`` (neither ok nor failed), not sent again, and said once per burst naming the
    node, the value and the status; a write answered Good is counted ok as before."""
    idx, stats, held = await _setpoint_over_100_answered(ua.StatusCodes.Uncertain, False, caplog)
    assert held == 120.0  # the PLC took it
    st = stats["high"]
    got = (st.get("uncertain", 0), st.get("ok", 0), st.get("failed", 0), st.get("retried", 0))
    assert got == (3, 0, 0, 0), dict(st)
    said = [r.getMessage() for r in caplog.records if "Uncertain" in r.getMessage()]
    assert len(said) == 1, said
    assert f"ns={idx};s=Setpoint" in said[0] and "120.0" in said[0] and "taken by the server" in said[0], said


async def test_a_heartbeat_the_server_answers_uncertain_is_counted_written_and_said_once(caplog):
    """A heartbeat write answered Uncertain was a refusal ('heartbeat not written', counted an error each
    period) though the PLC's watchdog got it. It is now a heartbeat written, said once as Uncertain."""

    async def add(srv, obj, idx):
        await (await obj.add_variable(ua.NodeId("Alive", idx), "Alive", False)).set_writable()
        service = srv.iserver.attribute_service
        write = service.write

        async def uncertain(params, user=None, **kw):
            mine = [wv.NodeId == ua.NodeId("Alive", idx) for wv in params.NodesToWrite]
            got = await (write(params, user=user, **kw) if user is not None else write(params, **kw))
            return [
                ua.StatusCode(ua.StatusCodes.Uncertain) if m and s.is_good() else s
                for m, s in zip(mine, got, strict=True)
            ]

        service.write = uncertain

    srv, idx, endpoint, writes = await _plc(add)
    settings = _config(endpoint, {}).sources["plc"].model_dump()
    settings["heartbeat"] = {"node_id": f"ns={idx};s=Alive", "period_ms": 100}
    src = OpcUaSource("plc", OpcUaSettings(**settings))
    caplog.set_level(logging.WARNING, logger="devices.opcua")
    try:
        await src.start()
        await _connected(src)
        for _ in range(1500):
            if src.heartbeats >= 3:
                break
            await asyncio.sleep(0.02)
        held = await srv.get_node(ua.NodeId("Alive", idx)).read_value()
    finally:
        await src.stop()
        await srv.stop()
    assert src.heartbeats >= 3 and "heartbeat" not in src.stats.errors_by_reason, src.stats.errors_by_reason
    assert isinstance(held, bool)
    said = [r.getMessage() for r in caplog.records if "heartbeat" in r.getMessage()]
    assert len(said) == 1 and "Uncertain" in said[0] and "taken by the server" in said[0], said


async def test_a_value_the_node_refuses_at_the_write_is_said_naming_the_config_file_and_the_field(caplog):
    """A value refused at the write (here with no check at connect: a node retyped since, a target not checked)
    is said naming the file and the action's field, as a refusal at load or connect names it; before, the line
    named the action only ("action 'setpoint' failed ..."), and the one for a node that takes no write its target
    field neither."""
    from edge_agent.config import read_yaml

    async def add(srv, obj, idx):
        await obj.add_variable(ua.NodeId("Setpoint", idx), "Setpoint", ua.Variant(0, ua.VariantType.Int16))
        await (
            await obj.add_variable(ua.NodeId("Ok", idx), "Ok", ua.Variant(0, ua.VariantType.Int16))
        ).set_writable()
        await obj.add_variable(ua.NodeId("Locked", idx), "Locked", False)  # not writable: BadUserAccessDenied
        await (srv.get_node(ua.NodeId("Setpoint", idx))).set_writable()
        await (
            await obj.add_variable(ua.NodeId("Same", idx), "Same", ua.Variant(0, ua.VariantType.Int16))
        ).set_writable()

    srv, idx, endpoint, _writes = await _plc(add)
    where = "/etc/edge/line1.yaml"
    text = (
        "agent: {id: gw}\n"
        f"sources:\n  plc: {{type: opcua, endpoint: '{endpoint}', connect_timeout_s: 2.0, keepalive_check_s: 0.3}}\n"
        "actions:\n"
        f"  setpoint: {{type: opcua_write, source: plc, node_id: 'ns={idx};s=Setpoint', value: 0x8000,"
        " when: {verdict: NG}}\n"
        f"  reset: {{type: opcua_write, source: plc, node_id: 'ns={idx};s=Ok', value: 1, reset_value: 1.0e+5,"
        " mode: on_change, when: {verdict: NG}}\n"
        f"  locked: {{type: opcua_write, source: plc, node_id: 'ns={idx};s=Locked', when: {{verdict: NG}}}}\n"
        # a namespace this server does not have: the node_id is at fault, not the value
        "  nons: {type: opcua_write, source: plc, node_id: 'nsu=urn:not-on-this-plc;s=A', value: 1,"
        " when: {verdict: NG}}\n"
        # 0x7FFF held back (the node would keep it: its reset 0x8000 is out of Int16), named as written
        f"  same: {{type: opcua_write, source: plc, node_id: 'ns={idx};s=Same', value: 0x7FFF, reset_value: 0x8000,"
        " mode: on_change, when: {verdict: NG}}\n"
    )
    cfg = parse_config(read_yaml(text, where), where)
    src = OpcUaSource("plc", cfg.sources["plc"])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    caplog.set_level(logging.WARNING, logger="edge_agent.actions")
    try:
        await _connected(src)
        names = ["setpoint", "reset", "locked", "nons", "same"]
        await runner.handle(names, _result("NG", 0), None)
        await runner.flush(timeout_s=5)
        await runner.handle(names, _result("OK", 1), None)
        await runner.flush(timeout_s=5)
    finally:
        await src.stop()
        await srv.stop()
    said = [r.getMessage() for r in caplog.records if r.name == "edge_agent.actions"]
    for place, value in (
        ("actions.setpoint.value", "cannot write 0x8000 (int): out of range -32768..32767"),
        ("actions.reset.reset_value", "cannot write 1.0e+5 (float): out of range -32768..32767"),
        ("actions.locked.node_id", "BadUserAccessDenied"),
        ("actions.nons.node_id", "the server has no namespace 'urn:not-on-this-plc'"),
        ("actions.same.reset_value", "0x7FFF not written: "),
    ):
        name = place.split(".")[1]
        head = f"{where}: {place}: action {name!r}" + (" failed" if name != "same" else ":")
        line = [s for s in said if s.startswith(head)]
        assert len(line) == 1 and value in line[0], (place, said)
    assert not any(s.startswith(f"{where}: actions.nons.value") for s in said), said
    assert not any("action 'same': 32767 not written" in s for s in said), said
