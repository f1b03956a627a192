"""OPC UA source against the real asyncua machine server on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import numpy as np
import pytest
import pytest_asyncio

from devices.base import ConnectionState, Quality, Reading
from devices.opcua.client import OpcUaNodeError, OpcUaNotConnected, OpcUaSource, OpcUaWriteRefused
from devices.opcua.settings import OpcUaSettings
from simulators.machine import MachineServer
from tests.support.peers import free_port
from tests.support.tcp_cut import CutRelay
from tests.support.waits import until

N = 256  # short windows keep the tests fast


def _settings(endpoint: str, nodes: list[dict], **kw) -> OpcUaSettings:
    base = dict(
        endpoint=endpoint,
        nodes=nodes,
        publishing_interval_ms=50,
        reconnect_initial_s=0.1,
        reconnect_max_s=0.5,
        connect_timeout_s=2.0,
        keepalive_check_s=0.3,
    )
    base.update(kw)
    return OpcUaSettings(**base)


@pytest.fixture
async def machine():
    srv = MachineServer(free_port(), seed=1, period_ms=50, window_samples=N)
    await srv.start()
    yield srv
    await srv.stop()


async def _collect(src: OpcUaSource, want: set[str], timeout_s: float = 30.0) -> dict[str, Reading]:
    got: dict[str, Reading] = {}

    async def run() -> None:
        async for r in src.items():
            got.setdefault(r.tag, r)
            if want <= set(got):
                return

    await asyncio.wait_for(run(), timeout_s)
    return got


async def test_subscribes_waveform_array_and_scalars_with_source_timestamps(machine: MachineServer) -> None:
    nodes = [
        {"node_id": machine.node_id("Vibration")},
        {"node_id": machine.node_id("Temperature")},
        {"node_id": machine.node_id("Speed"), "tag": "speed_rpm"},
    ]
    src = OpcUaSource("m1", _settings(machine.endpoint, nodes))
    await src.start()
    try:
        got = await _collect(src, {"Vibration", "Temperature", "speed_rpm"})
        wave = got["Vibration"].value
        assert isinstance(wave, np.ndarray) and wave.shape == (N,) and wave.dtype == np.float64
        assert 1000 < got["speed_rpm"].value < 2000
        assert all(abs(r.timestamp - time.time()) < 30 for r in got.values())
        assert all(r.quality is Quality.GOOD and r.source == "m1" for r in got.values())
        assert src.state is ConnectionState.CONNECTED
    finally:
        await src.stop()


async def test_bad_status_is_passed_on_as_quality_not_dropped(machine: MachineServer) -> None:
    machine.force_status("Temperature", "BadSensorFailure")
    src = OpcUaSource("m1", _settings(machine.endpoint, [{"node_id": machine.node_id("Temperature")}]))
    await src.start()
    try:

        async def first_bad() -> Reading:
            async for r in src.items():
                if r.quality is not Quality.GOOD:
                    return r
            raise AssertionError("stream ended")

        r = await asyncio.wait_for(first_bad(), 30)  # the value from before the fault may come first
        assert r.tag == "Temperature" and r.quality is Quality.BAD  # value may be None with Bad status
    finally:
        await src.stop()


async def test_write_back_uses_the_node_data_type_and_reaches_the_server(machine: MachineServer) -> None:
    src = OpcUaSource("m1", _settings(machine.endpoint, [{"node_id": machine.node_id("Speed")}]))
    await src.start()
    try:
        await src.write(machine.node_id("Reject"), 1)  # an int: converted to the node's Boolean
        await src.write(machine.node_id("Alarm"), np.bool_(True))
        for _ in range(1500):
            if machine.reject_count == 1 and machine.alarm_count == 1:
                break
            await asyncio.sleep(0.02)
        assert machine.writes == [("Reject", True), ("Alarm", True)]
        assert machine.reject_count == 1
        with pytest.raises(OpcUaWriteRefused, match=r"ns=2;s=Machine1.Speed refused by the server \(Bad"):
            await src.write(machine.node_id("Speed"), 1.0)  # read-only on the machine
        with pytest.raises(OpcUaNodeError, match="ns=2;s=Machine1.Nope"):
            await src.write("ns=2;s=Machine1.Nope", True)
    finally:
        await src.stop()
    with pytest.raises(OpcUaNotConnected, match="not connected"):
        await src.write(machine.node_id("Reject"), True)


async def test_browse_lists_the_machine_variables_with_types(machine: MachineServer) -> None:
    src = OpcUaSource("m1", _settings(machine.endpoint, []))
    await src.start()
    try:
        items = {v["browse_name"]: v for v in await src.browse()}
        assert items["Vibration"]["data_type"] == "Double" and items["Vibration"]["array"] is True
        assert items["Reject"]["node_id"] == machine.node_id("Reject")
        assert items["FaultType"]["node_id"] == machine.node_id("Truth.FaultType")
        assert items["Vibration"]["array_size"] == N and items["Vibration"]["access"] == "r"
        assert items["Reject"]["access"] == "rw" and items["FaultType"]["path"] == "Machine1/Truth/FaultType"
    finally:
        await src.stop()


async def test_browse_cli_lists_node_ids_types_access_and_default_tags(
    machine: MachineServer, capsys
) -> None:
    # the CLI's entry point in this process (the real `edge-agent browse` process: the reference cycles test below)
    from edge_agent.cli import main

    code = await asyncio.wait_for(asyncio.to_thread(main, ["browse", machine.endpoint]), 60)
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    row = next(ln for ln in lines if ln.startswith(machine.node_id("Reject") + " "))
    assert row.split()[1:] == ["Boolean", "rw", "Machine1/Reject"], row
    row = next(ln for ln in lines if ln.startswith(machine.node_id("Vibration") + " "))
    assert row.split()[1:] == ["Double", str(N), "r", "Machine1/Vibration"], row


async def test_unknown_node_is_named_and_the_others_stay_subscribed(machine: MachineServer) -> None:
    nodes = [
        {"node_id": "ns=2;s=Machine1.DoesNotExist", "tag": "ghost"},
        {"node_id": machine.node_id("Load")},
    ]
    src = OpcUaSource("m1", _settings(machine.endpoint, nodes))
    await src.start()
    try:
        got = await _collect(src, {"Load"})
        assert "Load" in got
        assert "ns=2;s=Machine1.DoesNotExist" in src.node_errors
        assert src.stats.errors_by_reason.get("node") == 1
    finally:
        await src.stop()


async def test_the_nodes_that_fail_are_named_with_why_on_the_agents_status_bounded_and_current(
    tmp_path,
) -> None:
    """A line engineer reads on ``/status`` which configured nodes get no values, and why: 25 node ids the PLC
    does not have and one it gets later. The first 20 are named, each with the server's reason, and all 26 counted
    (a config of 5,000 wrong ids does not make /status huge); once the PLC has the late node and the source
    reconnects, it is no longer named. Before, /status showed only the last error of all (the 25th node), and
    ``node_errors`` kept a node that was subscribed since."""
    import json
    import urllib.request

    from asyncua import ua

    from edge_agent.agent import Agent
    from edge_agent.config import parse_config
    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:named", "Line")
    await obj.add_variable(ua.NodeId("Good", idx), "Good", 1.5)
    await srv.start()
    nodes = [{"node_id": f"ns={idx};s=Good", "tag": "good"}, {"node_id": f"ns={idx};s=Late", "tag": "late"}]
    nodes += [{"node_id": f"ns={idx};s=Missing{i}", "tag": f"m{i}"} for i in range(25)]
    plc = {"type": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/", "nodes": nodes}
    plc.update(reconnect_initial_s=0.1, reconnect_max_s=0.5, keepalive_check_s=0.3)
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw1", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "http": {"port": 0},
                "sources": {"plc": plc},
            }
        )
    )

    async def status() -> tuple[dict, int]:
        url = f"http://127.0.0.1:{agent.http.port}/status"  # type: ignore[union-attr]
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read())
        return json.loads(body)["sources"]["plc"], len(body)

    shown: list = []

    async def counted(n: int) -> bool:
        shown[:] = [await status()]
        return (shown[0][0].get("node_errors") or {}).get("count") == n

    await agent.start()
    try:
        await until(lambda: counted(26), 45, "26 nodes named failing on /status")
        first, size = shown[0]
        await obj.add_variable(ua.NodeId("Late", idx), "Late", 2.5)
        for transport in list(srv.iserver.asyncio_transports):  # the PLC drops the connection
            transport.close()
        await until(lambda: counted(25), 45, "the late node no longer named")
        after = shown[0][0]["node_errors"]
    finally:
        await agent.stop()
        await srv.stop()
    listed = first["node_errors"]["nodes"]
    assert len(listed) == 20 and size < 30_000, (len(listed), size)
    by_id = {e["node_id"]: e["why"] for e in listed}
    assert f"ns={idx};s=Late" in by_id and f"ns={idx};s=Missing0" in by_id, sorted(by_id)
    assert "BadNodeIdUnknown" in by_id[f"ns={idx};s=Missing0"] and "Missing0" in by_id[f"ns={idx};s=Missing0"]
    assert all(e["node_id"] != f"ns={idx};s=Late" for e in after["nodes"]), after
    assert agent.sources["plc"].stats.reconnects >= 1


async def test_write_targets_that_will_fail_are_named_with_why_on_the_agents_status_and_by_edge_agent_status(
    tmp_path, capsys, caplog
) -> None:
    """A line engineer reads on ``/status`` and in ``edge-agent status`` which outputs' nodes will refuse their
    writes, and why: a node the PLC does not have (a typo in an ``opcua_write``'s node_id), one that is read-only,
    and 24 more missing. The first 20 are named, each with the check's reason, and all 26 counted (as
    ``node_errors``); a writable target is not named. Before, ``target_errors`` was on the source only: /status
    showed the last error of all, and the status page and ``edge-agent status`` none. A target failing at every
    connect is counted and said once (before, each of its values at every connect)."""
    import json
    import urllib.request

    from asyncua import ua

    from edge_agent.agent import Agent
    from edge_agent.cli import main
    from edge_agent.config import parse_config
    from tests.support.peers import opcua_server

    caplog.set_level(logging.WARNING, logger="devices.opcua")
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:targets", "Line")
    await obj.add_variable(ua.NodeId("Good", idx), "Good", 1.5)
    await (await obj.add_variable(ua.NodeId("Reject", idx), "Reject", False)).set_writable()
    await obj.add_variable(ua.NodeId("Locked", idx), "Locked", False)  # read-only
    await srv.start()
    out = {"type": "opcua_write", "source": "plc", "value": True}
    actions = {
        "reject": dict(out, node_id=f"ns={idx};s=Reject"),
        "locked": dict(out, node_id=f"ns={idx};s=Locked"),
        "typo": dict(out, node_id=f"ns={idx};s=Rejct"),
    }
    actions.update({f"lamp{i}": dict(out, node_id=f"ns={idx};s=Lamp{i}") for i in range(24)})
    plc = {"type": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/"}
    plc.update(nodes=[{"node_id": f"ns={idx};s=Good", "tag": "good"}], reconnect_initial_s=0.1)
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw1", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "http": {"port": 0},
                "sources": {"plc": plc},
                "actions": actions,
            }
        )
    )
    shown: list = []

    async def counted(n: int) -> bool:
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "/status", timeout=5).read())
        shown[:] = [json.loads(body)["sources"]["plc"], len(body)]
        return (shown[0].get("target_errors") or {}).get("count") == n

    await agent.start()
    url = f"http://127.0.0.1:{agent.http.port}"  # type: ignore[union-attr]
    try:
        await until(lambda: counted(26), 45, "26 write targets named failing on /status")
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["status", "--url", url]) == 0
        printed = capsys.readouterr().out
        src = agent.sources["plc"]
        counted_once = src.stats.errors_by_reason["write_target"]
        caplog.clear()
        for transport in list(
            srv.iserver.asyncio_transports
        ):  # the PLC drops the session: they are judged again
            transport.close()
        await until(lambda: src.stats.reconnects >= 1 and len(src.target_errors) == 26, 45, "judged again")
        counted_again = src.stats.errors_by_reason["write_target"]
        said_again = [r.getMessage() for r in caplog.records if "writes will fail" in r.getMessage()]
    finally:
        await agent.stop()
        await srv.stop()
    errors, size = shown
    listed = errors["target_errors"]["nodes"]
    assert len(listed) == 20 and size < 30_000, (len(listed), size)
    by_id = {e["node_id"]: e["why"] for e in listed}
    assert "does not exist on the server" in by_id[f"ns={idx};s=Rejct"], by_id
    assert "read-only" in by_id[f"ns={idx};s=Locked"] and f"ns={idx};s=Reject" not in by_id, by_id
    assert "26 write target(s) will fail:" in printed and "and 6 more" in printed, printed
    assert by_id[f"ns={idx};s=Rejct"] in printed and by_id[f"ns={idx};s=Locked"] in printed, printed
    # one standing condition each, as a failing node: counted and said at the first connect, not at each one
    assert counted_once == 26 and counted_again == 26 and said_again == [], (
        counted_once,
        counted_again,
        said_again,
    )


async def test_nodes_that_fail_at_every_connect_are_said_and_counted_once_in_a_bounded_log(caplog) -> None:
    """200 node ids the PLC does not have: the first connect names 5 of them in the log, each with why, and says
    the other 195 in one line with the count (all are on /status); they are 200 errors. A reconnect (a PLC that
    drops the session every few minutes) says and counts none again: they are one standing condition. A node
    the PLC gets meanwhile is no longer named; taken away again, it is counted and said again. Before, each
    failing node logged its own WARNING and was one more error at every connect: 200 lines and 200 errors
    more per reconnect (measured with 5,000: 5,003 lines and 5,005 errors per reconnect)."""
    from asyncua import ua

    from tests.support.peers import opcua_server

    caplog.set_level(logging.INFO, logger="devices.opcua")
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:standing", "Line")
    await obj.add_variable(ua.NodeId("Good", idx), "Good", 1.5)
    await srv.start()
    nodes = [{"node_id": f"ns={idx};s=Good", "tag": "good"}]
    nodes += [{"node_id": f"ns={idx};s=Missing{i}", "tag": f"m{i}"} for i in range(200)]
    src = OpcUaSource("plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", nodes))
    src._burst._window_s = 0.0  # the next connect comes minutes later: past the log's burst window

    def said() -> list[str]:
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        return [m for m in lines if "Missing" in m or "get no values" in m]

    async def reconnect() -> None:
        n = src.stats.reconnects
        for transport in list(srv.iserver.asyncio_transports):  # the PLC drops the session
            transport.close()
        # counted once the connect is made, every node judged
        await until(
            lambda: src.stats.reconnects > n and src.state is ConnectionState.CONNECTED, 45, "reconnected"
        )

    await src.start()
    try:
        await until(lambda: len(src.node_errors) == 200, 45, "200 nodes named failing")
        first = said()
        errors = src.stats.errors_by_reason["node"]
        caplog.clear()
        await reconnect()
        again, errors_again, named_again = said(), src.stats.errors_by_reason["node"], len(src.node_errors)
        late = await obj.add_variable(ua.NodeId("Missing7", idx), "Missing7", 2.5)  # a program download
        await reconnect()
        named_late = dict(src.node_errors)
        aspace = srv.iserver.aspace  # taken away again (its monitored item's callbacks first: asyncua's own
        for handle in list(aspace[late.nodeid].attributes[ua.AttributeIds.Value].datachange_callbacks):
            aspace.delete_datachange_callback(handle)  # call of them at a delete is never awaited)
        await srv.delete_nodes([late])
        caplog.clear()
        await reconnect()
        gone_again, errors_gone = said(), src.stats.errors_by_reason["node"]
    finally:
        await src.stop()
        await srv.stop()
    assert len(first) == 6, first
    assert sum("BadNodeIdUnknown" in m for m in first) == 5, first
    assert "195 more node(s) get no values (200 in all)" in first[-1] and "node_errors" in first[-1], first
    assert errors == 200
    assert again == [] and errors_again == 200 and named_again == 200, (again, errors_again)
    assert f"ns={idx};s=Missing7" not in named_late and len(named_late) == 199
    assert errors_gone == 201 and len(gone_again) == 1 and "Missing7" in gone_again[0], gone_again


async def test_a_node_or_write_target_whose_reason_changes_is_said_and_counted_again(caplog) -> None:
    """A standing condition is a node failing for the same reason: a node the PLC does not have at one connect,
    and after a program download an object (no value: BadAttributeIdInvalid) at the next, has failed anew, and is
    logged and counted again; a reconnect finding the same reason says and counts nothing. So for a write
    target missing at one connect and read-only at the next. Before, only the node id was looked at: the new
    reason was on /status only, with no WARNING and no count."""
    from asyncua import ua

    from tests.support.peers import opcua_server

    caplog.set_level(logging.WARNING, logger="devices.opcua")
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:reasons", "Line")
    await obj.add_variable(ua.NodeId("Good", idx), "Good", 1.5)
    await srv.start()
    nodes = [{"node_id": f"ns={idx};s=Good", "tag": "good"}, {"node_id": f"ns={idx};s=Moved", "tag": "moved"}]
    src = OpcUaSource("plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", nodes))
    src.expect_writes([(f"ns={idx};s=Out", True)])
    src._burst._window_s = 0.0  # the next connect comes minutes later: past the log's burst window

    def said() -> list[str]:
        return [
            r.getMessage() for r in caplog.records if "Moved" in r.getMessage() or "Out" in r.getMessage()
        ]

    def counts() -> tuple[int, int]:
        return src.stats.errors_by_reason["node"], src.stats.errors_by_reason["write_target"]

    async def reconnect() -> None:
        n = src.stats.reconnects
        for transport in list(srv.iserver.asyncio_transports):  # the PLC drops the session
            transport.close()
        await until(
            lambda: src.stats.reconnects > n and src.state is ConnectionState.CONNECTED, 45, "reconnected"
        )
        await until(lambda: len(src.target_errors) == 1, 45, "the target judged")

    await src.start()
    try:
        await until(
            lambda: len(src.node_errors) == 1 and len(src.target_errors) == 1, 45, "both named failing"
        )
        first, counted_first = said(), counts()
        caplog.clear()
        await reconnect()  # the same reasons: one standing condition
        same, counted_same = said(), counts()
        await obj.add_object(ua.NodeId("Moved", idx), "Moved")  # a program download: an object now, no value
        await obj.add_variable(ua.NodeId("Out", idx), "Out", False)  # there now, read-only
        caplog.clear()
        await reconnect()
        changed, counted_changed, why = said(), counts(), (dict(src.node_errors), dict(src.target_errors))
        caplog.clear()
        await reconnect()  # the new reasons again
        still, counted_still = said(), counts()
    finally:
        await src.stop()
        await srv.stop()
    assert counted_first == (1, 1) and len(first) == 2, first
    assert same == [] and counted_same == (1, 1), same
    assert "BadNodeIdUnknown" not in why[0][f"ns={idx};s=Moved"], why
    assert counted_changed == (2, 2), (counted_changed, why)
    assert sum("Moved" in m for m in changed) == 1 and sum("Out" in m for m in changed) == 1, changed
    assert still == [] and counted_still == (2, 2), still


async def test_server_restart_reconnects_and_readings_resume(caplog) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    srv = MachineServer(port, period_ms=50, window_samples=N)
    await srv.start()
    src = OpcUaSource("m1", _settings(srv.endpoint, [{"node_id": srv.node_id("Speed")}]))
    await src.start()
    try:
        await _collect(src, {"Speed"})
        await srv.stop()
        for _ in range(600):
            if src.state is not ConnectionState.CONNECTED:
                break
            await asyncio.sleep(0.05)
        assert src.state in (ConnectionState.BACKOFF, ConnectionState.CONNECTING)
        srv = MachineServer(port, period_ms=50, window_samples=N)
        await srv.start()
        while len(src._channel):  # drain what arrived before the restart
            await src._channel.get()
        after = time.time()
        got = await _collect(src, {"Speed"}, timeout_s=15)
        assert got["Speed"].received_at >= after
        assert src.stats.reconnects >= 1 and src.state is ConnectionState.CONNECTED
    finally:
        await src.stop()
        await srv.stop()
    # a routine PLC restart: WARNING and reconnect, never an ERROR line or a traceback (the test's own server's
    # lines aside: it logs an ERROR for the source's close of the session the restart ended, BadSessionIdInvalid)
    noisy = [
        r
        for r in caplog.records
        if (r.levelno >= logging.ERROR or r.exc_info) and not _session_gone_on_the_server(r)
    ]
    assert noisy == [], [(r.name, r.levelname, r.getMessage()) for r in noisy]


def _session_gone_on_the_server(r: logging.LogRecord) -> bool:
    """The test's own server's ERROR for a CloseSession of a session it ended (BadSessionIdInvalid): only that."""
    text = r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
    return r.name.startswith("asyncua.server") and "BadSessionIdInvalid" in text


async def test_unreachable_endpoint_backs_off_and_counts_errors_without_raising() -> None:
    src = OpcUaSource("m1", _settings(f"opc.tcp://127.0.0.1:{free_port()}/factory/", []))
    await src.start()
    try:
        await asyncio.sleep(0.8)
        assert src.state in (ConnectionState.BACKOFF, ConnectionState.CONNECTING)
        assert src.stats.errors >= 2 and src.stats.errors_by_reason.get("unreachable", 0) >= 2
        assert "cannot reach" in (src.stats.last_error or "")
    finally:
        await src.stop()
    assert src.state is ConnectionState.STOPPED


async def test_nan_is_passed_as_bad_and_old_timestamps_are_counted() -> None:
    srv = MachineServer(free_port(), period_ms=10_000, window_samples=N)  # no periodic updates in the way
    await srv.start()
    src = OpcUaSource("m1", _settings(srv.endpoint, [{"node_id": srv.node_id("Temperature")}]))
    await src.start()
    try:
        it = src.items()
        first = await asyncio.wait_for(it.__anext__(), 30)
        await srv.inject("Temperature", float("nan"))
        nan = await asyncio.wait_for(it.__anext__(), 30)
        assert np.isnan(nan.value) and nan.quality is Quality.BAD
        assert src.stats.errors_by_reason["non_finite"] == 1
        await srv.inject("Temperature", 21.5, source_time_s=first.timestamp - 60)
        old = await asyncio.wait_for(it.__anext__(), 30)
        assert old.value == 21.5 and src.stats.errors_by_reason["out_of_order"] == 1
    finally:
        await src.stop()
        await srv.stop()


async def test_non_finite_skip_policy_drops_nan_but_keeps_counting() -> None:
    srv = MachineServer(free_port(), period_ms=10_000, window_samples=N)
    await srv.start()
    src = OpcUaSource(
        "m1", _settings(srv.endpoint, [{"node_id": srv.node_id("Load"), "queue_size": 5}], non_finite="skip")
    )
    await src.start()
    try:
        it = src.items()
        await asyncio.wait_for(it.__anext__(), 30)
        await srv.inject("Load", float("inf"))
        await srv.inject("Load", 0.5)
        nxt = await asyncio.wait_for(it.__anext__(), 30)
        assert nxt.value == 0.5 and src.stats.errors_by_reason["non_finite"] == 1
    finally:
        await src.stop()
        await srv.stop()


@contextlib.asynccontextmanager
async def _one_force_node(namespace: str, relay: bool = False):
    """A bare asyncua server with one Double node `Force` (1.0) and a started source on it (``relay``: through a
    CutRelay to the server's port) whose first reading is taken: (node, source, the source's items, the relay or
    None); all stopped at the end."""
    from asyncua import ua

    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", namespace, "Press")
    node = await obj.add_variable(ua.NodeId("Force", idx), "Force", 1.0, ua.VariantType.Double)
    await srv.start()
    cut = CutRelay(port) if relay else None
    src = OpcUaSource(
        "plc",
        _settings(
            f"opc.tcp://127.0.0.1:{cut.port if cut else port}/plc/", [{"node_id": f"ns={idx};s=Force"}]
        ),
    )
    await src.start()
    try:
        it = src.items()
        await asyncio.wait_for(it.__anext__(), 30)
        yield node, src, it, cut
    finally:
        await src.stop()
        if cut:
            cut.close()
        await srv.stop()


async def test_a_null_source_timestamp_from_a_plc_without_a_clock_is_not_taken_as_1601() -> None:
    """OPC UA's null DateTime (0, which asyncua hands out as 1601-01-01) is what some PLCs send as the
    source timestamp. Taken at face value every reading was stamped 1601 (epoch -11644473600) in windows,
    results and the cloud's records; now the server's timestamp, else the receive time, is used."""
    import datetime as dt

    from asyncua import ua

    async with _one_force_node("urn:test:clockless") as (node, src, it, _):
        null = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)
        await node.write_value(ua.DataValue(ua.Variant(2.5, ua.VariantType.Double), SourceTimestamp=null))
        r = await asyncio.wait_for(it.__anext__(), 30)
    assert r.value == 2.5 and abs(r.timestamp - time.time()) < 60, r.timestamp


async def test_a_plc_clock_far_off_the_gateways_is_not_taken_for_the_readings_time() -> None:
    """PLC clocks are often wrong: reset to 2012 after a power loss without a battery, or an hour ahead.
    Taken at face value, such readings landed in windows, results and the cloud at that time. Now a source
    time over max_clock_skew_s off is replaced by the server's (else the receive time) and counted; a
    subscription's first value keeps its old source time (a setpoint set hours ago), since the server's
    own clock is right."""
    import datetime as dt

    from asyncua import ua

    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:skew", "Press")
    now = dt.datetime.now(dt.UTC)
    set_long_ago = now - dt.timedelta(hours=2)
    node = await obj.add_variable(ua.NodeId("Force", idx), "Force", 1.0, ua.VariantType.Double)
    await node.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double), SourceTimestamp=set_long_ago))
    await srv.start()
    endpoint = f"opc.tcp://127.0.0.1:{port}/plc/"
    src = OpcUaSource("plc", _settings(endpoint, [{"node_id": f"ns={idx};s=Force"}]))
    rcv = OpcUaSource("rcv", _settings(endpoint, [{"node_id": f"ns={idx};s=Force"}], timestamps="receive"))
    await src.start()
    await rcv.start()
    try:
        it, it2 = src.items(), rcv.items()
        first = await asyncio.wait_for(it.__anext__(), 30)
        await asyncio.wait_for(it2.__anext__(), 30)
        got = []
        for value, stamp in (
            (2.0, now + dt.timedelta(hours=1)),  # an hour ahead
            (3.0, dt.datetime(2012, 1, 1, tzinfo=dt.UTC)),  # reset after a power loss
            (4.0, None),  # the server stamps it: within bounds
        ):
            dv = ua.DataValue(ua.Variant(value, ua.VariantType.Double), SourceTimestamp=stamp)
            await node.write_value(dv)
            got.append(await asyncio.wait_for(it.__anext__(), 30))
            r2 = await asyncio.wait_for(it2.__anext__(), 30)
            assert abs(r2.timestamp - r2.received_at) < 1e-6  # timestamps: receive
    finally:
        await src.stop()
        await rcv.stop()
        await srv.stop()
    assert abs(first.timestamp - set_long_ago.timestamp()) < 1  # a value set long ago keeps its time
    assert [r.value for r in got] == [2.0, 3.0, 4.0]
    for r in got:
        assert abs(r.timestamp - r.received_at) < 60, (r.value, r.timestamp)
    assert src.stats.errors_by_reason.get("clock_skew") == 2
    assert "clock_skew" not in rcv.stats.errors_by_reason


async def test_a_step_of_the_gateways_clock_back_is_not_taken_for_readings_out_of_order(monkeypatch) -> None:
    """NTP steps the gateway's clock back an hour while the PLC's is right: the PLC's times are then over
    max_clock_skew_s off, and the receive time stamps the readings, an hour before the last one passed on. Before,
    each such reading was counted ``out_of_order`` ("source timestamp went backwards", blaming the PLC) until the
    hour had passed; now the step is said once and the readings go on in order on the gateway's new time. The
    ``clock_skew`` each is counted as names the gateway's clock, which stepped (it said "set the PLC's clock")."""
    async with _one_force_node("urn:test:step") as (node, src, it, _):
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() - 3600)  # NTP steps the gateway's clock back an hour
        got = []
        for value in (2.0, 3.0, 4.0):
            await node.write_value(value)
            got.append(await asyncio.wait_for(it.__anext__(), 30))
    assert [r.value for r in got] == [2.0, 3.0, 4.0]
    assert "out_of_order" not in src.stats.errors_by_reason, src.stats.errors_by_reason
    assert [r.timestamp for r in got] == sorted(r.timestamp for r in got)
    said = src.stats.last_error or ""
    assert "+3600 s off" in said and "this gateway's clock stepped -3600 s" in said, said


def test_the_clock_skew_hint_names_the_gateways_clock_only_when_its_step_accounts_for_the_offset() -> None:
    """A gateway booted in 1970 that NTP then set right, with a PLC's clock later reset to 2000: the PLC's is the
    one off, though the gateway's stepped (the other way) since the source's first value."""
    src = OpcUaSource("plc", OpcUaSettings(endpoint="opc.tcp://127.0.0.1:4840/"))
    src._wall_first, src._wall_offset = 0.0, 1.7e9  # NTP set the 1970 clock right
    assert src._skew_hint(-8e8, 300).startswith("set the PLC's clock")
    src._wall_first, src._wall_offset = 0.0, -3600.0  # NTP stepped it back an hour, the PLC's right
    assert src._skew_hint(3600.0, 300).startswith("this gateway's clock stepped -3600 s")


def test_a_value_s_time_needs_no_boot_clock(monkeypatch) -> None:
    """macOS and Windows have no CLOCK_BOOTTIME: each value's time raised AttributeError there."""
    monkeypatch.delattr(time, "CLOCK_BOOTTIME")
    src = OpcUaSource("plc", OpcUaSettings(endpoint="opc.tcp://127.0.0.1:4840/"))
    assert abs(src._now() - time.time()) < 60


async def test_a_tag_made_bad_before_a_step_of_the_gateways_clock_back_goes_on_at_the_new_time(
    monkeypatch,
) -> None:
    """The PLC's connection is lost (its tag BAD, dated on the gateway's clock), then NTP steps that clock back an
    hour (the PLC's right), then the PLC is back: its readings are stamped on the gateway's new time, as the other
    tags' are. Before, each was stamped 1 ms after the one before, from the BAD's time (the old clock) on, for the
    hour: the tag's readings an hour ahead of the source's others, their spacing lost."""
    async with _one_force_node("urn:test:stepbad", relay=True) as (node, src, it, cut):
        assert cut is not None
        cut.cut()
        bad = await asyncio.wait_for(it.__anext__(), 30)
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() - 3600)  # the reconnect comes after at least 0.1 s
        got = [await asyncio.wait_for(it.__anext__(), 30)]  # the reconnect's first value
        await node.write_value(2.0)
        got.append(await asyncio.wait_for(it.__anext__(), 30))
    assert bad.quality is Quality.BAD and [r.value for r in got] == [1.0, 2.0], (bad, got)
    assert all(abs(r.timestamp - time.time()) < 60 for r in got), [r.timestamp - time.time() for r in got]


async def _counted(src: OpcUaSource, reason: str, timeout_s: float = 30.0) -> None:
    """Until the source has counted an error of ``reason`` (or the timeout: the caller asserts)."""
    deadline = time.monotonic() + timeout_s
    while reason not in src.stats.errors_by_reason and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def test_a_value_over_max_message_bytes_closes_the_connection_and_reading_resumes_when_it_fits() -> (
    None
):
    """A node whose value (an array) is larger than ``max_message_bytes``: the message carrying it is not
    held, the connection is closed and counted as too_large with the setting to raise; once the value
    fits again the source reconnects and every node is read."""
    from asyncua import ua

    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:big", "Line")
    force = await obj.add_variable(ua.NodeId("Force", idx), "Force", 1.0, ua.VariantType.Double)
    profile = await obj.add_variable(
        ua.NodeId("Profile", idx), "Profile", ua.Variant([0.5] * 300_000, ua.VariantType.Double)
    )  # 2.4 MB
    await srv.start()
    nodes = [{"node_id": f"ns={idx};s=Force"}, {"node_id": f"ns={idx};s=Profile"}]
    src = OpcUaSource(
        "plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", nodes, max_message_bytes=1024 * 1024)
    )
    await src.start()
    try:
        await _counted(src, "too_large")
        assert src.stats.errors_by_reason.get("too_large", 0) >= 1, src.stats.errors_by_reason
        assert "over max_message_bytes 1048576" in (src.stats.last_error or "")
        await profile.write_value(ua.Variant([0.25] * 1000, ua.VariantType.Double))
        await force.write_value(2.0)
        got = await _collect(src, {"Force", "Profile"}, timeout_s=15)
    finally:
        await src.stop()
        await srv.stop()
    assert len(got["Profile"].value) == 1000


async def _hostile_server():
    """A server that answers the Hello with no message limit (MaxMessageSize 0), then declares a 4 GiB
    chunk and streams it: (server, port, cut when the client closed, bytes sent per connection)."""
    import struct

    sent: list[int] = []
    cut = asyncio.Event()

    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        try:
            head = await reader.readexactly(8)  # HELF + size
            await reader.readexactly(struct.unpack("<I", head[4:])[0] - 8)
            ack = struct.pack("<5I", 0, 65535, 65535, 0, 0)  # version, buffers, no size or chunk limit
            writer.write(b"ACKF" + struct.pack("<I", 8 + len(ack)) + ack)
            head = await reader.readexactly(8)  # the OpenSecureChannel request
            await reader.readexactly(struct.unpack("<I", head[4:])[0] - 8)
            writer.write(b"OPNF" + struct.pack("<II", 0xFFFFFF00, 0))
            block = b"\0" * 65536
            while n < 64 * 1024 * 1024:
                writer.write(block)
                await writer.drain()
                n += len(block)
        except (ConnectionError, asyncio.IncompleteReadError):
            cut.set()
        finally:
            sent.append(n)
            writer.close()

    server = await asyncio.start_server(hostile, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], cut, sent


async def test_a_server_declaring_a_huge_chunk_is_cut_off_at_max_message_bytes() -> None:
    """A hostile or broken server answers the Hello with no message limit (MaxMessageSize 0), then
    declares a 4 GiB chunk and streams it. asyncua alone would take it all into memory, copying its
    buffer on every read; the source closes the connection at the chunk's header. So does a browse."""
    from devices.opcua.client import OpcUaError, browse_server

    server, port, cut, sent = await _hostile_server()
    settings = _settings(f"opc.tcp://127.0.0.1:{port}/", [{"node_id": "ns=2;s=X"}], max_message_bytes=1 << 20)
    src = OpcUaSource("plc", settings)
    await src.start()
    try:
        await asyncio.wait_for(cut.wait(), 60)
        await _counted(src, "too_large")
    finally:
        await src.stop()
    try:
        with pytest.raises(OpcUaError, match="over max_message_bytes 1048576"):
            await browse_server(settings)
    finally:
        server.close()
        await server.wait_closed()
    assert src.stats.errors_by_reason.get("too_large", 0) >= 1, src.stats.errors_by_reason
    assert "max_message_bytes 1048576" in (src.stats.last_error or "")
    assert min(sent) < 64 * 1024 * 1024  # the source closed the connection before the stream ended


@pytest.fixture
def ua_types():
    """asyncua keeps the structure classes it makes process-wide (by encoding NodeId, which every test
    server numbers alike): what a test's servers taught is forgotten after it."""
    from asyncua import ua
    from asyncua.ua import uatypes

    tables = [
        getattr(uatypes, t)
        for t in (
            "extension_objects_by_typeid",
            "typeid_by_extension_objects",
            "extension_objects_by_datatype",
            "datatype_by_extension_object",
            "enums_by_datatype",
            "enums_datatypes",
            "basetype_by_datatype",
            "basetype_datatypes",
        )
    ]
    saved = [dict(t) for t in tables]
    names = set(vars(ua))
    yield
    for t, before in zip(tables, saved, strict=True):
        t.clear()
        t.update(before)
    for name in set(vars(ua)) - names:
        delattr(ua, name)


def _press_udt_body(force: float, profile: list[float], label: str, pos: float, load: float = 75.3) -> bytes:
    """PressUDT as a PLC encodes it (OPC UA binary): Force Double, Running Boolean, Count Int32, Profile
    Double[], Label String, Axis AxisUDT {Pos Double, Homed Boolean, Load Float}."""
    import struct

    text = label.encode()
    return (
        struct.pack("<d?i", force, True, 7)
        + struct.pack(f"<i{len(profile)}d", len(profile), *profile)
        + struct.pack(f"<i{len(text)}s", len(text), text)
        + struct.pack("<d?f", pos, False, load)
    )


async def _press_types(srv, idx: int, how: str) -> tuple:
    """TestPressUDT (and TestAxisUDT inside it) on the server, described the OPC UA 1.04 way (each DataType's
    DataTypeDefinition) or the older way (a binary type dictionary, as older PLC firmware has): (its
    DataType node id, its binary encoding's node id). Names per way: asyncua's classes are process-wide."""
    from asyncua import ua
    from asyncua.common.structures104 import new_struct, new_struct_field
    from asyncua.common.type_dictionary_builder import DataTypeDictionaryBuilder

    D = ua.VariantType
    fields = [("Force", D.Double), ("Running", D.Boolean), ("Count", D.Int32), ("Profile", D.Double)]
    fields += [("Label", D.String)]
    if how == "definitions":
        axis, _ = await new_struct(
            srv,
            idx,
            "TestAxisUDT",
            [
                new_struct_field("Pos", D.Double),
                new_struct_field("Homed", D.Boolean),
                new_struct_field("Load", D.Float),
            ],
        )
        press, (enc,) = await new_struct(
            srv,
            idx,
            "TestPressUDT",
            [new_struct_field(n, t, array=n == "Profile") for n, t in fields]
            + [new_struct_field("Axis", axis)],
        )
        return press.nodeid, enc.nodeid
    builder = DataTypeDictionaryBuilder(srv, idx, "urn:test:udt", "TestTypes")
    await builder.init()
    axis = await builder.create_data_type("TestAxisUDT1")
    axis.add_field("Pos", D.Double)
    axis.add_field("Homed", D.Boolean)
    axis.add_field("Load", D.Float)
    press = await builder.create_data_type("TestPressUDT1")
    for n, t in fields:
        press.add_field(n, t, is_array=n == "Profile")
    press.add_field("Axis", axis)
    await builder.set_dict_byte_string()
    return press.data_type, press.node_ids[2]


@pytest.mark.parametrize("how", ["definitions", "dictionary"])
async def test_a_plcs_structures_give_a_tag_per_member_and_texts_and_times_their_plain_form(
    how, ua_types
) -> None:
    """Another vendor's PLC exposes a UDT (a Siemens PLC data type, a Beckhoff STRUCT) as one structured
    node, encoded by the server's own type definition. The source reads those definitions from the server
    (nothing is known in advance; OPC UA 1.04 definitions or an older server's type dictionary) and gives a
    tag per member, ``{tag}/{member}``, nested ones by path, with the node's quality and time; a structure
    the server does not describe is said once and skipped, never passed on as raw bytes. A LocalizedText
    gives its text, a DateTime its ISO 8601 form."""
    import datetime as dt

    from asyncua import ua

    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:udt", "Line")
    press_type, enc = await _press_types(srv, idx, how)
    # the server holds encoded values only (its Python side never loads the types): the client cannot
    # decode them until it has read the definitions from the server
    press = await obj.add_variable(
        ua.NodeId("Press1", idx),
        "Press1",
        ua.Variant(ua.ExtensionObject(enc, _press_udt_body(812.5, [0.5, 1.5, 2.5], "P-7", 3.25))),
        datatype=press_type,
    )
    await obj.add_variable(  # a type id no definition describes
        ua.NodeId("Opaque", idx),
        "Opaque",
        ua.Variant(ua.ExtensionObject(ua.NodeId(99999, idx), b"\x01\x02")),
        datatype=ua.NodeId(ua.ObjectIds.Structure),
    )
    await obj.add_variable(ua.NodeId("Recipe", idx), "Recipe", ua.LocalizedText("Flange 40", "en"))
    when = dt.datetime(2026, 11, 30, 6, 0, tzinfo=dt.UTC)
    await obj.add_variable(ua.NodeId("Changed", idx), "Changed", ua.Variant(when, ua.VariantType.DateTime))
    await srv.start()
    names = ("Press1", "Opaque", "Recipe", "Changed")
    src = OpcUaSource(
        "plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={idx};s={n}"} for n in names])
    )
    await src.start()
    try:
        want = {"Press1/Force", "Press1/Running", "Press1/Count", "Press1/Profile", "Press1/Label"}
        axis = {"Press1/Axis/Pos", "Press1/Axis/Homed", "Press1/Axis/Load"}
        got = await _collect(src, want | axis | {"Recipe", "Changed"})
        await press.write_value(
            ua.Variant(ua.ExtensionObject(enc, _press_udt_body(799.0, [1.0], "P-7", 4.0)))
        )
        later = await _collect(src, {"Press1/Force"})
        for _ in range(600):
            if "structure_undecoded" in src.notices.counts:
                break
            await asyncio.sleep(0.05)
    finally:
        await src.stop()
        await srv.stop()
    assert got["Press1/Force"].value == 812.5 and got["Press1/Running"].value is True
    assert got["Press1/Count"].value == 7 and got["Press1/Label"].value == "P-7"
    np.testing.assert_array_equal(got["Press1/Profile"].value, [0.5, 1.5, 2.5])
    assert got["Press1/Axis/Pos"].value == 3.25 and got["Press1/Axis/Homed"].value is False
    assert got["Press1/Axis/Load"].value == 75.3  # a REAL member as the PLC shows it, not 75.30000305175781
    assert all(r.quality is Quality.GOOD for r in got.values())
    assert got["Press1/Force"].timestamp == got["Press1/Axis/Pos"].timestamp  # the node's own time
    assert later["Press1/Force"].value == 799.0  # later changes decode as they come
    assert got["Recipe"].value == "Flange 40" and got["Changed"].value == "2026-11-30T06:00:00+00:00"
    assert not any(t.startswith("Opaque") for t in got) and not src.stats.errors_by_reason
    note = src.notices.status()["structure_undecoded"]["message"]
    assert "tag Opaque is a structure" in note and "edge-agent browse" in note


async def _press1_server(port: int) -> tuple:
    """A server (not started) whose node Press1 holds a TestPressUDT described the OPC UA 1.04 way: (the
    server, its namespace index, the object holding Press1)."""
    from asyncua import ua

    from tests.support.peers import opcua_server

    srv, idx, obj = await opcua_server(port, "plc", "urn:test:udt", "Line")
    press_type, enc = await _press_types(srv, idx, "definitions")
    await obj.add_variable(
        ua.NodeId("Press1", idx),
        "Press1",
        ua.Variant(ua.ExtensionObject(enc, _press_udt_body(812.5, [0.5], "P-7", 3.25))),
        datatype=press_type,
    )
    return srv, idx, obj


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def press1_plc():
    """One started server for the tests that only read it (nothing they do changes its nodes): Press1 (a
    TestPressUDT), Opaque (a structure no type definition describes) and Speed (a single Double 12.5).
    Building an asyncua server's address space is most of such a test's CPU: (endpoint, namespace index)."""
    from asyncua import ua

    port = free_port()
    srv, idx, obj = await _press1_server(port)
    await obj.add_variable(
        ua.NodeId("Opaque", idx),
        "Opaque",
        ua.Variant(ua.ExtensionObject(ua.NodeId(99999, idx), b"\x01\x02")),
        datatype=ua.NodeId(ua.ObjectIds.Structure),
    )
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 12.5)
    await srv.start()
    yield f"opc.tcp://127.0.0.1:{port}/plc/", idx
    await srv.stop()


async def test_a_structure_inside_a_variant_array_gives_members_by_path_never_pythons_picture(
    ua_types,
) -> None:
    """A BaseDataType node holding a Variant[] (a gateway's generic array) whose items include a structure: a
    structure the server describes gives its members by path, each item by its index (``Batch/0``,
    ``Batch/1/Force``), as an array of structures does; one it does not describe has the value skipped and said
    once (``structure_undecoded``), as a structure node's. Before, each such item went on GOOD, to MQTT, the
    outbox and /status, as Python's picture of it: ``"ExtensionObject(TypeId=NodeId(...), Body=b'\\x01...')"``
    or ``"TestPressUDT(Force=812.5, ...)"``, which no consumer reads. Other Variant[] values stay lists."""
    from asyncua import ua

    from devices.opcua.client import check_server
    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:udt", "Line")
    _, enc = await _press_types(srv, idx, "definitions")
    V = ua.VariantType
    press = ua.ExtensionObject(enc, _press_udt_body(812.5, [0.5], "P-7", 3.25))
    opaque = ua.ExtensionObject(ua.NodeId(99999, idx), b"\x01\x02")
    items = {
        "Batch": [ua.Variant(7, V.Int32), ua.Variant(press, V.ExtensionObject)],
        "Mixed": [ua.Variant(1, V.Int32), ua.Variant(opaque, V.ExtensionObject)],
        "Plain": [ua.Variant(1, V.Int32), ua.Variant("a", V.String)],
    }
    for name, value in items.items():
        await obj.add_variable(
            ua.NodeId(name, idx),
            name,
            ua.Variant(value, V.Variant),
            datatype=ua.NodeId(ua.ObjectIds.BaseDataType),
        )
    await srv.start()
    src = OpcUaSource(
        "plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={idx};s={n}"} for n in items])
    )
    await src.start()
    got: dict[str, Reading] = {}

    async def run() -> None:
        async for r in src.items():
            got.setdefault(r.tag, r)

    reader = asyncio.create_task(run())
    try:
        with contextlib.suppress(AssertionError):  # what did come is judged below
            await until(
                lambda: (
                    {"Batch/0", "Batch/1/Force", "Batch/1/Axis/Pos", "Plain"} <= set(got)
                    and "structure_undecoded" in src.notices.counts
                ),
                timeout_s=30,
            )
        await asyncio.sleep(0.2)  # a reading of Mixed, were one given, would be in by now
        # edge-agent validate --online names the tags as the source gives them
        _, _, _, members = await check_server(src.settings, [])
    finally:
        reader.cancel()
        await src.stop()
        await srv.stop()
    assert {"Batch/0", "Batch/1/Force", "Batch/1/Axis/Pos"} <= set(members["Batch"] or [])
    assert members["Mixed"] is None and members["Plain"] == []
    assert got["Batch/0"].value == 7 and got["Batch/1/Force"].value == 812.5
    assert got["Batch/1/Label"].value == "P-7" and got["Batch/1/Axis/Pos"].value == 3.25
    assert got["Plain"].value == [1, "a"]
    assert not any(t in ("Batch", "Mixed") or t.startswith("Mixed/") for t in got), sorted(got)
    assert not any("ExtensionObject(" in str(r.value) or "UDT(" in str(r.value) for r in got.values())
    assert "tag Mixed is a structure" in src.notices.status()["structure_undecoded"]["message"]


async def test_a_server_answering_late_within_connect_timeout_keeps_its_session(monkeypatch) -> None:
    """A PLC that answers its state 1.5 s late for a while (busy: a long browse ahead in its queue, a
    scan-time peak) is within the source's bound (``connect_timeout_s`` 5 s): the session stays, no
    reconnect, values flow on. asyncua's own 1-s probe used to tear the connection down."""
    from asyncua import ua
    from asyncua.server.internal_session import InternalSession

    from tests.support.peers import opcua_server

    read = InternalSession.read
    busy = asyncio.Event()
    late = [0]

    async def busy_read(self, params):
        if busy.is_set() and any(
            r.NodeId == ua.NodeId(ua.ObjectIds.Server_ServerStatus_State) for r in params.NodesToRead
        ):
            late[0] += 1
            await asyncio.sleep(1.5)
        return await read(self, params)

    monkeypatch.setattr(InternalSession, "read", busy_read)
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:busy", "Line")
    level = await obj.add_variable(ua.NodeId("Level", idx), "Level", 1.0)
    await srv.start()
    src = OpcUaSource(
        "plc",
        _settings(
            f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={idx};s=Level"}], connect_timeout_s=5.0
        ),
    )
    await src.start()
    try:
        await _collect(src, {"Level"}, timeout_s=30.0)
        busy.set()
        for _ in range(600):  # state reads answered late (asyncua probes each second, the source every
            if late[0] >= 2:  # keepalive_check_s)
                break
            await asyncio.sleep(0.05)
        busy.clear()
        await level.write_value(2.0)
        got: dict[str, Reading] = {}
        async with asyncio.timeout(30.0):
            async for r in src.items():
                if r.value == 2.0:
                    got[r.tag] = r
                    break
    finally:
        await src.stop()
        await srv.stop()
    assert late[0] >= 2
    assert got["Level"].quality is Quality.GOOD
    assert src.stats.reconnects == 0 and not src.stats.errors_by_reason, src.stats.errors_by_reason


@pytest.mark.asyncio(loop_scope="module")  # press1_plc's loop
async def test_structure_types_the_server_sent_late_are_read_again_not_called_undescribed(
    ua_types, monkeypatch, press1_plc
) -> None:
    """A PLC busy when the session first reads its structure types (the read times out) does not leave
    its structures undecodable for the whole session, called "not described by the server's type
    definitions": the values are skipped and counted (``structure_types_unread``), the types read again
    after a pause, and the structure's members then come."""
    from asyncua import ua
    from asyncua.server.internal_session import InternalSession

    import devices.opcua.client as client_mod

    monkeypatch.setattr(client_mod, "TYPES_RETRY_S", 0.2)
    read = InternalSession.read
    late = asyncio.Event()  # set: the server answers its type definitions at once again

    async def busy_read(self, params):  # the first type definitions come after the client's bound
        if not late.is_set() and any(
            r.AttributeId == ua.AttributeIds.DataTypeDefinition for r in params.NodesToRead
        ):
            late.set()
            await asyncio.sleep(2.5)
        return await read(self, params)

    monkeypatch.setattr(InternalSession, "read", busy_read)
    endpoint, idx = press1_plc
    src = OpcUaSource(
        "plc",
        _settings(
            endpoint,
            [{"node_id": f"ns={idx};s=Press1"}],
            connect_timeout_s=0.5,  # the types' read is bounded at 4x: 2 s
            keepalive_check_s=30.0,
        ),
    )
    await src.start()
    try:
        got = await _collect(src, {"Press1/Force", "Press1/Axis/Pos"}, timeout_s=30.0)
    finally:
        await src.stop()
    assert late.is_set()  # the server did answer late once
    assert got["Press1/Force"].value == 812.5 and got["Press1/Axis/Pos"].value == 3.25
    unread = src.notices.status()["structure_types_unread"]
    assert unread["count"] >= 1 and "did not send them within 2 s" in unread["message"], unread
    assert "structure_undecoded" not in src.notices.counts  # it was never called undescribed


@pytest.mark.asyncio(loop_scope="module")  # press1_plc's loop
async def test_validate_online_reads_a_structures_members_from_the_server(
    ua_types, tmp_path, press1_plc
) -> None:
    """Offline, ``edge-agent validate`` cannot know a structure's members and lets any ``{tag}/{member}``
    pass. ``--online`` reads the node's value by the server's type definitions, as the agent will, and
    names a member the structure does not have (with the nearest one), a member of a structure the server
    does not describe, and a member of a node that holds a single value."""
    import sys
    from pathlib import Path

    import yaml

    endpoint, idx = press1_plc  # Press1, Opaque (not described) and Speed
    wanted = ["Press1/Force", "Press1/Axis/Pos", "Press1/Forse", "Opaque/Level", "Speed/Value"]
    cfg = {
        "agent": {"id": "gw1"},
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": endpoint,
                "nodes": [{"node_id": f"ns={idx};s={n}", "tag": n} for n in ("Press1", "Opaque", "Speed")],
            }
        },
        "rules": [{"name": f"r{i}", "source": "plc", "tag": t, "above": 1.0} for i, t in enumerate(wanted)],
    }
    p = tmp_path / "line.yaml"
    p.write_text(yaml.safe_dump(cfg))
    runs = []
    for online in ([], ["--online"]):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edge_agent.cli",
            "validate",
            *online,
            str(p),
            cwd=Path(__file__).resolve().parents[2],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        runs.append((proc.returncode, err.decode().splitlines()))
    assert runs[0][0] == 0, runs[0]  # offline: the members are the server's to know
    code, lines = runs[1]
    assert code == 1, lines
    errors = [x for x in lines if x.startswith(f"{p}: rules[")]
    assert errors == [
        f"{p}: rules[2].tag: source 'plc': structure 'Press1' has no member 'Forse' (read from the server); "
        "did you mean 'Press1/Force'?",
        f"{p}: rules[3].tag: source 'plc': tag 'Opaque' is a structure that the server's type definitions do "
        "not describe, so 'Opaque/Level' cannot be read; subscribe to the member's own node (edge-agent "
        "browse lists it)",
        f"{p}: rules[4].tag: source 'plc': tag 'Speed' holds a single value, not a structure: it gives no "
        "member 'Speed/Value'",
    ], lines


async def test_a_structure_whose_layout_changed_while_the_plc_restarted_is_read_by_its_new_layout(
    ua_types,
) -> None:
    """A new PLC program downloaded while the gateway was away adds a member to a UDT: on reconnecting the
    source reads the server's types again before the values come, so the node is decoded by its new
    layout, not by the one an earlier connection taught (which would misread the bytes)."""
    import struct

    from asyncua import ua
    from asyncua.common.structures104 import new_struct, new_struct_field

    from tests.support.peers import opcua_server

    port = free_port()

    async def plc(fields: list[str], values: tuple[float, ...]):
        srv, idx, obj = await opcua_server(port, "plc", "urn:test:mold", "Line")
        mold, (enc,) = await new_struct(
            srv, idx, "TestMoldUDT", [new_struct_field(f, ua.VariantType.Double) for f in fields]
        )
        body = struct.pack(f"<{len(values)}d", *values)
        await obj.add_variable(
            ua.NodeId("Mold", idx),
            "Mold",
            ua.Variant(ua.ExtensionObject(enc.nodeid, body)),
            datatype=mold.nodeid,
        )
        await srv.start()
        return srv, idx

    srv, idx = await plc(["Temp", "Pressure"], (180.0, 95.0))
    src = OpcUaSource("plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={idx};s=Mold"}]))
    await src.start()
    try:
        before = await _collect(src, {"Mold/Temp", "Mold/Pressure"})
        await srv.stop()
        for _ in range(600):
            if src.state is not ConnectionState.CONNECTED:
                break
            await asyncio.sleep(0.05)
        srv, idx = await plc(["Cycle", "Temp", "Pressure"], (41.0, 185.0, 97.5))  # a member first
        while len(src._channel):  # what arrived before the restart
            await src._channel.get()
        after = await _collect(src, {"Mold/Cycle", "Mold/Temp", "Mold/Pressure"}, timeout_s=15)
    finally:
        await src.stop()
        await srv.stop()
    assert (before["Mold/Temp"].value, before["Mold/Pressure"].value) == (180.0, 95.0)
    assert {t: r.value for t, r in after.items()} == {
        "Mold/Cycle": 41.0,
        "Mold/Temp": 185.0,
        "Mold/Pressure": 97.5,
    }


async def test_a_structure_whose_layout_changed_online_flagged_structure_changed_is_read_by_its_new_layout(
    ua_types,
) -> None:
    """A PLC download changes a UDT's layout while the session stays up: the server sends the new value
    flagged StructureChanged (Part 4, 7.39.1: re-read the metadata before decoding). It was decoded by the
    layout read at connect and its members passed on GOOD with the wrong bytes (Temp 41.0, the new first
    member's value, Pressure 185.0) until a reconnect. Now the types are read again and the node read by its
    new layout; the flagged value is not passed on, nor one the same publish brought after it (decoded by the
    former layout too), and the change is said naming the tag."""
    import struct

    from asyncua import ua
    from asyncua.common.structures104 import new_struct, new_struct_field

    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:mold", "Line")
    mold, (enc,) = await new_struct(
        srv, idx, "TestMoldUDT", [new_struct_field(f, ua.VariantType.Double) for f in ("Temp", "Pressure")]
    )
    var = await obj.add_variable(
        ua.NodeId("Mold", idx),
        "Mold",
        ua.Variant(ua.ExtensionObject(enc.nodeid, struct.pack("<2d", 180.0, 95.0))),
        datatype=mold.nodeid,
    )
    await srv.start()
    node = {"node_id": f"ns={idx};s=Mold", "queue_size": 4}
    # one publish brings both values written below: the second, not flagged, was decoded by the former layout too
    src = OpcUaSource(
        "plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", [node], publishing_interval_ms=400)
    )
    await src.start()
    try:
        before = await _collect(src, {"Mold/Temp", "Mold/Pressure"})
        new = ua.StructureDefinition(
            DefaultEncodingId=enc.nodeid,
            BaseDataType=ua.NodeId(ua.ObjectIds.Structure),
            StructureType=ua.StructureType.Structure,
            Fields=[new_struct_field(f, ua.VariantType.Double) for f in ("Cycle", "Temp", "Pressure")],
        )
        await srv.get_node(mold.nodeid).write_attribute(
            ua.AttributeIds.DataTypeDefinition, ua.DataValue(ua.Variant(new))
        )
        body = ua.ExtensionObject(enc.nodeid, struct.pack("<3d", 41.0, 185.0, 97.5))
        await srv.write_attribute_value(
            var.nodeid, ua.DataValue(ua.Variant(body), StatusCode=ua.StatusCode(0x8000))
        )
        body = ua.ExtensionObject(enc.nodeid, struct.pack("<3d", 42.0, 186.0, 98.5))
        await srv.write_attribute_value(var.nodeid, ua.DataValue(ua.Variant(body)))
        after: dict[str, list] = {}

        async def read() -> None:
            async for r in src.items():
                after.setdefault(r.tag, []).append((r.value, r.quality))
                if r.tag == "Mold/Pressure" and r.value == 98.5:
                    return

        await asyncio.wait_for(read(), 30)
    finally:
        await src.stop()
        await srv.stop()
    assert (before["Mold/Temp"].value, before["Mold/Pressure"].value) == (180.0, 95.0)
    # by the new layout only: the former one read the new first member as Temp (41.0, 42.0)
    assert after == {
        "Mold/Cycle": [(42.0, Quality.GOOD)],
        "Mold/Temp": [(186.0, Quality.GOOD)],
        "Mold/Pressure": [(98.5, Quality.GOOD)],
    }, after
    assert src.notices.counts.get("structure_changed") == 1, src.notices.counts
    assert "tag Mold:" in src.notices.messages["structure_changed"]


async def _mold_server(port: int, fields: tuple[str, ...], values: tuple[float, ...]):
    """A server with one UDT node, ns=idx;s=Mold, of Double members ``fields``: (server, var, type, encoding)."""
    import struct

    from asyncua import ua
    from asyncua.common.structures104 import new_struct, new_struct_field

    from tests.support.peers import opcua_server

    srv, idx, obj = await opcua_server(port, "plc", "urn:test:mold", "Line")
    mold, (enc,) = await new_struct(
        srv, idx, "TestMoldUDT", [new_struct_field(f, ua.VariantType.Double) for f in fields]
    )
    body = ua.ExtensionObject(enc.nodeid, struct.pack(f"<{len(values)}d", *values))
    var = await obj.add_variable(ua.NodeId("Mold", idx), "Mold", ua.Variant(body), datatype=mold.nodeid)
    await srv.start()
    return srv, var, mold, enc


async def test_a_structure_whose_layout_changed_without_the_flag_is_never_read_by_the_former_layout(
    ua_types, monkeypatch
) -> None:
    """A server that changes a UDT's layout without flagging StructureChanged (nor ending the session): a
    longer layout was decoded by the former one, its first bytes passed on GOOD as the former members (Temp
    41.0, the new first member's value), and a shorter one failed asyncua's decoding of the whole publish, so
    the node and every tag in the same publishes gave nothing more, the source still connected. Now a value
    whose bytes do not fit the layout read has the types read again and the node read by its new layout;
    the change is said naming the tag (two changes within RELAYOUT_S: the bound on the types' reads is made 0
    here, a second change within it being skipped and counted until it passes)."""
    import struct

    from asyncua import ua
    from asyncua.common.structures104 import new_struct_field

    import devices.opcua.client as client_module

    monkeypatch.setattr(client_module, "RELAYOUT_S", 0.0)
    port = free_port()
    srv, var, mold, enc = await _mold_server(port, ("Temp", "Pressure"), (180.0, 95.0))
    node = {"node_id": var.nodeid.to_string()}
    src = OpcUaSource("plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", [node]))
    await src.start()

    async def relayout(fields: tuple[str, ...], values: tuple[float, ...], last: str) -> dict[str, list]:
        new = ua.StructureDefinition(
            DefaultEncodingId=enc.nodeid,
            BaseDataType=ua.NodeId(ua.ObjectIds.Structure),
            StructureType=ua.StructureType.Structure,
            Fields=[new_struct_field(f, ua.VariantType.Double) for f in fields],
        )
        await srv.get_node(mold.nodeid).write_attribute(
            ua.AttributeIds.DataTypeDefinition, ua.DataValue(ua.Variant(new))
        )
        body = ua.ExtensionObject(enc.nodeid, struct.pack(f"<{len(values)}d", *values))
        await srv.write_attribute_value(var.nodeid, ua.DataValue(ua.Variant(body)))  # not flagged
        got: dict[str, list] = {}

        async def read() -> None:
            async for r in src.items():
                got.setdefault(r.tag, []).append((r.value, r.quality))
                if r.tag == last:
                    return

        await asyncio.wait_for(read(), 30)
        return got

    try:
        before = await _collect(src, {"Mold/Temp", "Mold/Pressure"})
        longer = await relayout(("Cycle", "Temp", "Pressure"), (41.0, 185.0, 97.5), "Mold/Pressure")
        shorter = await relayout(("Temp",), (7.0,), "Mold/Temp")
    finally:
        await src.stop()
        await srv.stop()
    assert (before["Mold/Temp"].value, before["Mold/Pressure"].value) == (180.0, 95.0)
    # by the new layout only: the former one read the new first member as Temp (41.0) and the next as Pressure
    assert longer == {
        "Mold/Cycle": [(41.0, Quality.GOOD)],
        "Mold/Temp": [(185.0, Quality.GOOD)],
        "Mold/Pressure": [(97.5, Quality.GOOD)],
    }, longer
    assert shorter == {"Mold/Temp": [(7.0, Quality.GOOD)]}, shorter
    assert src.notices.counts.get("structure_changed") == 2, src.notices.counts
    assert "tag Mold: its value does not fit the layout" in src.notices.messages["structure_changed"]


async def test_a_server_flagging_every_structure_value_changed_has_its_types_read_once_not_at_each(
    ua_types, monkeypatch
) -> None:
    """A server that sets StructureChanged on every value of a UDT node (a gateway that never clears the bit)
    had the server's types read again at each value, every value between two reads dropped (each read asks the
    server for every DataTypeDefinition). The types are read again at most once per node per RELAYOUT_S (made
    longer than the test here): a value flagged after that read is decoded by the types it made, passed on
    and counted (notice structure_changed_again)."""
    import struct

    from asyncua import ua

    import devices.opcua.client as client_module

    monkeypatch.setattr(client_module, "RELAYOUT_S", 3600.0)
    port = free_port()
    srv, var, _, enc = await _mold_server(port, ("Temp", "Pressure"), (180.0, 95.0))
    src = OpcUaSource(
        "plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": var.nodeid.to_string()}])
    )
    reads = []
    load = src._load_types

    async def counted(*args, **kwargs):
        reads.append(1)
        return await load(*args, **kwargs)

    monkeypatch.setattr(src, "_load_types", counted)
    await src.start()
    temps = []
    try:
        await _collect(src, {"Mold/Temp", "Mold/Pressure"})
        for i in range(6):
            body = ua.ExtensionObject(enc.nodeid, struct.pack("<2d", 100.0 + i, 50.0 + i))
            flagged = ua.DataValue(ua.Variant(body), StatusCode=ua.StatusCode(0x8000))
            await srv.write_attribute_value(var.nodeid, flagged)
            got = await _collect(src, {"Mold/Temp", "Mold/Pressure"})
            temps.append((got["Mold/Temp"].value, got["Mold/Pressure"].value))
    finally:
        await src.stop()
        await srv.stop()
    assert temps == [(100.0 + i, 50.0 + i) for i in range(6)], temps
    assert len(reads) == 2, reads  # at the first structure value, and once at the first flag
    assert src.notices.counts.get("structure_changed") == 1, src.notices.counts
    assert src.notices.counts.get("structure_changed_again") == 5, src.notices.counts


async def test_a_structures_datetime_member_of_1601_the_null_time_is_no_value_and_bad(ua_types) -> None:
    """A UDT's DateTime member never set (a last-service time) holds DateTime 0, OPC UA's null time, which
    asyncua hands out as 1601-01-01: the member was passed on GOOD as that date. It is BAD with no value now,
    null_value, as a scalar DateTime of it is; the structure's other members read on."""
    import struct

    from asyncua import ua
    from asyncua.common.structures104 import new_struct, new_struct_field

    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:service", "Line")
    D = ua.VariantType
    udt, (enc,) = await new_struct(
        srv,
        idx,
        "TestServiceUDT",
        [new_struct_field("LastService", D.DateTime), new_struct_field("Hours", D.Double)],
    )
    body = struct.pack("<qd", 0, 812.5)  # DateTime 0: never set
    await obj.add_variable(
        ua.NodeId("Service", idx),
        "Service",
        ua.Variant(ua.ExtensionObject(enc.nodeid, body)),
        datatype=udt.nodeid,
    )
    await srv.start()
    src = OpcUaSource(
        "plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={idx};s=Service"}])
    )
    await src.start()
    try:
        got = await _collect(src, {"Service/LastService", "Service/Hours"})
    finally:
        await src.stop()
        await srv.stop()
    assert (got["Service/Hours"].value, got["Service/Hours"].quality) == (812.5, Quality.GOOD)
    r = got["Service/LastService"]
    assert (r.value, r.quality, r.reason) == (None, Quality.BAD, "null_value"), r
    assert "1601-01-01" in (src.stats.last_error or ""), src.stats.last_error


async def test_arrays_of_texts_bytes_truths_and_big_integers_keep_their_items_and_numbers_stay_waveforms() -> (
    None
):
    """Every array used to be pushed through float64: part numbers '0012' lost their zeros (and the tag
    changed type with its content), 'nan' texts and empty texts came as NaN with quality BAD, bytes and
    truth values as numbers, an Int64 id past 2**53 lost its last digits; a Variant[] array gave member
    tags such as VariantArr/0/VariantType and an XmlElement Xml/Value. Now only numbers become float64
    arrays (whole numbers while exact), the rest stays a list of plain items. A scalar REAL (Float) came
    widened, 75.3 as 75.30000305175781 (a rule gt: 75.3 tripped on what the PLC shows as 75.3): it is now
    the decimal the PLC shows."""
    from asyncua import ua

    from tests.support.peers import opcua_server

    V = ua.VariantType
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:arrays", "Line")
    values = {
        "Parts": ua.Variant(["0012", "0013"], V.String),
        "Codes": ua.Variant(["nan", "inf"], V.String),
        "Blank": ua.Variant([None, None], V.String),
        "Flags": ua.Variant([True, False, True], V.Boolean),
        "Blobs": ua.Variant([b"12", b"34"], V.ByteString),
        "Ids": ua.Variant([2**53 + 1, 2**63 - 1], V.Int64),
        "Bins": ua.Variant([1, 2, 3], V.Int16),
        "Wave": ua.Variant([0.5, 1.5], V.Double),
        "Empty": ua.Variant([], V.Double),
        "Mixed": ua.Variant([ua.Variant(1, V.Int32), ua.Variant("a", V.String)], V.Variant),
        "Doc": ua.Variant(ua.XmlElement("<a/>"), V.XmlElement),
        "Temp": ua.Variant(75.3, V.Float),
        "Limit": ua.Variant(0.3, V.Float),
        "Reals": ua.Variant([0.3, 75.3], V.Float),  # a waveform: its samples as they are
    }
    for name, v in values.items():
        dtype = ua.NodeId(ua.ObjectIds.BaseDataType) if v.VariantType is V.Variant else None
        await obj.add_variable(ua.NodeId(name, idx), name, v, None, dtype)
    await srv.start()
    nodes = [{"node_id": f"ns={idx};s={n}"} for n in values]
    src = OpcUaSource("plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", nodes))
    await src.start()
    try:
        got = await _collect(src, set(values))
        v = {t: r.value for t, r in got.items()}
        assert set(got) == set(values)  # no member tags of a Variant or an XmlElement
        assert v["Parts"] == ["0012", "0013"] and v["Codes"] == ["nan", "inf"] and v["Blank"] == [None, None]
        assert all(got[t].quality is Quality.GOOD for t in ("Codes", "Blank"))
        assert v["Flags"] == [True, False, True] and all(type(x) is bool for x in v["Flags"])
        assert v["Blobs"] == [b"12", b"34"]
        assert v["Ids"] == [2**53 + 1, 2**63 - 1]
        for t, want in (("Bins", [1.0, 2.0, 3.0]), ("Wave", [0.5, 1.5]), ("Empty", [])):
            assert isinstance(v[t], np.ndarray) and v[t].dtype == np.float64 and v[t].tolist() == want
        assert v["Mixed"] == [1, "a"] and v["Doc"] == "<a/>"
        assert (v["Temp"], v["Limit"]) == (75.3, 0.3) and type(v["Temp"]) is float
        assert v["Reals"].tolist() == np.array([0.3, 75.3], dtype=np.float32).astype(np.float64).tolist()
        assert "non_finite" not in src.stats.errors_by_reason
    finally:
        await src.stop()
        await srv.stop()


async def test_a_server_whose_subscription_goes_silent_is_noticed_and_the_source_reconnects() -> None:
    """The session still answers reads, but the server stops publishing (a stalled PLC runtime, or a
    subscription it dropped): no data, no keep-alive. The tag kept its last value, reported GOOD and
    CONNECTED, forever (asyncua asks for a keep-alive every 45 minutes and waits on publish without a
    timeout). Now the silence is noticed within the keep-alive the server promised, named, and the
    source reconnects: the value written during the silence arrives."""
    from asyncua import ua

    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:stall", "Line")
    var = await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    settings = _settings(
        f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={idx};s=Speed"}], connect_timeout_s=0.5
    )
    src = OpcUaSource("plc", settings)
    await src.start()
    try:
        await _collect(src, {"Speed"})
        for sub in list(srv.iserver.subscription_service.subscriptions.values()):
            await sub.stop()  # the server's publishing stalls; its reads still answer
        await var.write_value(2.0)
        await _counted(src, "stalled", timeout_s=4.0)
        assert "stale" in (src.stats.last_error or "")

        async def fresh() -> None:
            async for r in src.items():
                if r.value == 2.0:
                    return

        await asyncio.wait_for(fresh(), 4.0)
        assert src.stats.reconnects >= 1
    finally:
        await src.stop()
        await srv.stop()


async def test_a_namespace_array_reordered_by_a_plc_restart_does_not_read_another_namespaces_node(
    tmp_path,
) -> None:
    """``ns=2;s=Speed`` meant urn:plc's Speed. After a restart the PLC registers urn:diag first: index 2
    is now urn:diag, which has a Speed too. The source silently read the other namespace's value as
    GOOD (and wrote to its node); now the index follows the URI it had at the first connect. An agent
    started after that (the pins were made at each start's first connect: it read and wrote urn:diag's
    Speed as its own, silently) refuses the index by the URIs kept in its data folder, naming the node, both
    URIs and the fix, and writes nothing."""
    from asyncua import ua

    from edge_agent.opcua_pins import PINS_FILE, pin_namespaces
    from tests.support.peers import node_ids_written, two_namespaces_with_a_speed

    port = free_port()
    srv, plc, diag, ours, other = await two_namespaces_with_a_speed(port)
    await srv.nodes.objects.add_variable(ua.NodeId("Big", diag), "Big", 5.0)  # urn:plc's after the restart
    written = node_ids_written(srv, plc)  # after the restart: urn:diag's
    await srv.start()
    settings = _settings(
        f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={plc};s=Speed", "tag": "speed"}]
    )

    def agent_source() -> OpcUaSource:  # as the agent makes it at each start
        src = OpcUaSource("plc", settings)
        pin_namespaces(tmp_path, {"plc": src}, {"plc": settings})
        src.expect_writes([(f"ns={plc};s=Speed", 0.0)])
        return src

    src = agent_source()
    await src.start()
    try:
        assert (await _collect(src, {"speed"}))["speed"].value == 1.0
        # the restarted PLC: urn:diag is registered before urn:plc, each node under its new index
        array = await srv.get_namespace_array()
        array[plc], array[diag] = array[diag], array[plc]
        await srv.nodes.namespace_array.write_value(array)
        await ours.write_value(-99.0)
        await other.write_value(2.0)
        src._client.uaclient.protocol.transport.close()  # the restart: the connection drops

        async def after() -> float:
            async for r in src.items():
                if r.value != 1.0 and r.reason != "connection_lost":  # the loss's BAD: no value
                    return r.value
            raise AssertionError

        assert await asyncio.wait_for(after(), 5.0) == 2.0
        while src.state is not ConnectionState.CONNECTED:
            await asyncio.sleep(0.02)
        await src.write(f"ns={plc};s=Speed", 3.0)
        assert await other.read_value() == 3.0 and await ours.read_value() == -99.0
        assert src.notices.status()["namespace_moved"]["count"] >= 1
        # a node left out for its size is read again by its URI too: by the index as written, it was not found
        # (left out for good) or another namespace's small node let it in, to be left out again at each refit
        assert await src._refit_here(f"ns={plc};s=Big", OpcUaNodeError("a connection of its own refused"))
    finally:
        await src.stop()
    # the agent restarts: its config may have been written for the new order since, so neither is taken
    assert (tmp_path / PINS_FILE).exists()
    written.clear()
    # the PLC still starting: its namespace array cannot be read, or is served with OPC UA's namespace alone,
    # so the kept pins cannot be checked; the indexes taken as written read urn:diag's Speed as GOOD and wrote
    # to it: that connect is refused
    await srv.write_attribute_value(
        srv.nodes.namespace_array.nodeid, ua.DataValue(ua.Variant(array[:1], ua.VariantType.String))
    )
    src = agent_source()
    await src.start()
    try:
        node = f"ns={plc};s=Speed"
        await until(lambda: src.stats.errors_by_reason.get("namespaces"), 30)
        assert "none but OPC UA's own" in str(src.stats.last_error)
        await srv.write_attribute_value(
            srv.nodes.namespace_array.nodeid,
            ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadInternalError)),
        )
        await until(lambda: "BadInternalError" in str(src.stats.last_error), 30)
        with pytest.raises(OpcUaNotConnected):
            await src.write(node, 4.0)
        assert written == [] and not src._tags
        await srv.nodes.namespace_array.write_value(array)  # readable again: the next connect compares
        await until(lambda: node in src.node_errors and node in src.target_errors, 30)
        why = src.node_errors[node]
        assert "'urn:diag' now, but was 'urn:plc'" in why and "nsu=urn:plc;s=Speed" in why, why
        assert str(tmp_path / PINS_FILE) in why and "urn:diag" in src.target_errors[node], why
        # the reorder the running agent followed: the config was not rewritten, and accepting the new order
        # would point ns=2 at urn:diag; the refusal says --accept is for a rewritten config only
        assert "Only if the config's ns= indexes were rewritten" in why, why
        assert "makes ns=2 read and write the other namespace's node" in why, why
        with pytest.raises(OpcUaNodeError, match="neither read nor written"):
            await src.write(node, 4.0)
        assert written == [] and await ours.read_value() == -99.0
    finally:
        await src.stop()
    from types import SimpleNamespace

    from edge_agent.cli import _collect_tags
    from edge_agent.opcua_pins import namespaces_main

    # edge-agent tags beside the agent: it showed urn:diag's Speed (-99.0) as the tag, and leaves the file be
    cfg = SimpleNamespace(sources={"plc": settings}, data_dir=tmp_path)
    kept = (tmp_path / PINS_FILE).read_bytes()
    _, last, _ = await _collect_tags(cfg, 0.3)
    assert last["plc"] == {} and (tmp_path / PINS_FILE).read_bytes() == kept, last
    # edge-agent validate --online: it checked urn:diag's Speed as the node (fine, writable) where the agent
    # refuses it
    from edge_agent.cli import _opcua_online_errors

    checked = SimpleNamespace(**vars(cfg), actions={}, pipelines=[], rules={})
    errors = await _opcua_online_errors(checked, "agent.yaml")
    assert any("nodes[0].node_id" in e and "'urn:diag' now, but was 'urn:plc'" in e for e in errors), errors
    # the config's indexes were meant for the new order: the new order is accepted, and read at the next start
    assert namespaces_main(SimpleNamespace(config="agent.yaml", accept="plc"), lambda _: cfg) == 0
    src = agent_source()
    await src.start()
    try:
        assert (await _collect(src, {"speed"}))["speed"].value == -99.0 and not src.node_errors
    finally:
        await src.stop()
        await srv.stop()


async def test_a_namespace_reorder_within_a_session_does_not_make_a_gone_node_again_in_another_namespace() -> (
    None
):
    """A program download the session outlives: the nodes are said gone (BadNodeIdUnknown), the server registers
    its namespaces in another order, and ``ns=2;s=Speed`` is served again, now urn:diag's. Its item was made
    again by the id resolved at connect: urn:diag's Speed read as the tag, GOOD; a write target taken away so
    was written in urn:diag. The changed array is seen there and a new session resolves the nodes by their URIs."""
    from asyncua import ua

    from tests.support.peers import node_ids_written, opcua_server, take_node_away

    port = free_port()
    srv, plc, _ = await opcua_server(port, "plc", "urn:plc", "Line")
    diag = await srv.register_namespace("urn:diag")
    ours = await srv.nodes.objects.add_variable(ua.NodeId("Speed", plc), "Speed", 1.0)
    target = await srv.nodes.objects.add_variable(ua.NodeId("Set", plc), "Set", 0.0)
    await target.set_writable()
    written = node_ids_written(srv, plc)  # after the download: urn:diag's
    await srv.start()
    src = OpcUaSource(
        "plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={plc};s=Speed"}])
    )
    src.expect_writes([(f"ns={plc};s=Set", 0.0)])
    await src.start()
    try:
        assert (await _collect(src, {"Speed"}))["Speed"].value == 1.0
        await until(lambda: src.targets_watched, 30)
        await take_node_away(srv, ours)  # the download: the server says the nodes are gone, then drops them
        await take_node_away(srv, target)
        array = await srv.get_namespace_array()
        array[plc], array[diag] = array[diag], array[plc]
        # the PLC mid-download serves its nodes before its namespace array (Bad): that tells nothing either
        unread = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadResourceUnavailable))
        await srv.write_attribute_value(ua.NodeId(ua.ObjectIds.Server_NamespaceArray), unread)
        await srv.nodes.objects.add_variable(ua.NodeId("Speed", plc), "Speed", -99.0)  # urn:diag's now
        await srv.nodes.objects.add_variable(ua.NodeId("Speed", diag), "Speed", 2.0)  # urn:plc's, moved
        await (await srv.nodes.objects.add_variable(ua.NodeId("Set", plc), "Set", 0.0)).set_writable()
        moved = await srv.nodes.objects.add_variable(ua.NodeId("Set", diag), "Set", 0.0)
        await moved.set_writable()
        await until(lambda: src._targets_gone, 30)  # the target's gone status came (a publish)
        written.clear()  # the server-side set_writable above
        with pytest.raises(
            OpcUaNotConnected, match="namespace array changed within the session|not connected"
        ):
            await src.write(f"ns={plc};s=Set", 3.0)
        assert written == []
        await srv.nodes.namespace_array.write_value(array)  # the download done: its new order served

        async def next_value() -> float:
            async for r in src.items():
                if r.value is not None:
                    return r.value
            raise AssertionError

        assert await asyncio.wait_for(next_value(), 30) == 2.0
        assert src.stats.errors_by_reason.get("namespaces", 0) >= 1, src.stats.errors_by_reason
        await until(lambda: src.state is ConnectionState.CONNECTED, 30)
        await src.write(f"ns={plc};s=Set", 4.0)
        assert await moved.read_value() == 4.0 and written == []
    finally:
        await src.stop()
        await srv.stop()


async def test_a_write_to_a_tag_a_download_took_away_is_checked_for_a_reorder_without_the_target_watch() -> (
    None
):
    """A write target that is also a tag, its type and access not watched (``watch_write_targets: false``, or a
    server without room for the watch): the download within the session says the tag gone, reorders the
    namespaces and serves urn:diag's node under the old id. A write before the tag's item was made again went to
    urn:diag's node; the tag said gone has the namespace array read first, as a watched target said gone has."""
    from asyncua import ua

    from tests.support.peers import node_ids_written, opcua_server, take_node_away

    port = free_port()
    srv, plc, _ = await opcua_server(port, "plc", "urn:plc", "Line")
    diag = await srv.register_namespace("urn:diag")
    ours = await srv.nodes.objects.add_variable(ua.NodeId("Set", plc), "Set", 1.0)
    await ours.set_writable()
    # a target of the same namespace the download did not take away (its id names urn:diag's node after it)
    await (await srv.nodes.objects.add_variable(ua.NodeId("Lamp", plc), "Lamp", 0.0)).set_writable()
    written = node_ids_written(srv, plc)
    await srv.start()
    nodes = [{"node_id": f"ns={plc};s=Set", "tag": "set"}]
    src = OpcUaSource("plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", nodes, watch_write_targets=False))
    src.expect_writes([(f"ns={plc};s=Set", 0.0), (f"ns={plc};s=Lamp", 0.0)])
    await src.start()
    try:
        assert (await _collect(src, {"set"}))["set"].value == 1.0
        await take_node_away(srv, ours)
        array = await srv.get_namespace_array()
        array[plc], array[diag] = array[diag], array[plc]
        await srv.nodes.namespace_array.write_value(array)
        await (await srv.nodes.objects.add_variable(ua.NodeId("Set", plc), "Set", -99.0)).set_writable()
        await until(lambda: src._gone, 30)  # the tag's gone status came; its item is made again after a pause
        written.clear()
        # a write to Lamp already past its check, waiting for the node's write lock (another write to it, or a
        # type read) while the check below sees the array move: it went out by the old index once it had the lock
        lamp = src._write_lock(await src._target_node(f"ns={plc};s=Lamp", "write"))
        await lamp.acquire()
        held = asyncio.create_task(src.write(f"ns={plc};s=Lamp", 2.0))
        await until(lambda: lamp._waiters, 30)
        with pytest.raises(OpcUaNotConnected, match="namespace array changed within the session"):
            await src.write(f"ns={plc};s=Set", 4.0)
        lamp.release()
        with pytest.raises(
            OpcUaNotConnected, match="namespace array changed within|session it was resolved on"
        ):
            await held
        # the session ends: a write to another target of the moved namespace, before it is closed, went by the old
        # index to urn:diag's node
        with pytest.raises(OpcUaNotConnected):
            await src.write(f"ns={plc};s=Lamp", 1.0)
        assert written == []
    finally:
        await src.stop()
        await srv.stop()


async def test_a_write_target_said_gone_and_served_again_has_the_namespace_array_read_once_not_at_each_write() -> (
    None
):
    """After a write target's watch said it gone (a download), every later write to it read the namespace array
    first, for the rest of the session: one round trip more a write, for hours. Once its watch says the node is
    served again, one check passing is enough; a new gone notice has the array read again."""
    from asyncua import ua

    from tests.support.peers import opcua_server

    port = free_port()
    srv, plc, _ = await opcua_server(port, "plc", "urn:plc", "Line")
    await srv.nodes.objects.add_variable(ua.NodeId("Speed", plc), "Speed", 1.0)
    target = await srv.nodes.objects.add_variable(ua.NodeId("Set", plc), "Set", 0.0)
    await target.set_writable()
    await srv.start()
    src = OpcUaSource(
        "plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={plc};s=Speed"}])
    )
    set_ = f"ns={plc};s=Set"
    src.expect_writes([(set_, 0.0)])
    await src.start()
    watch = srv.iserver.aspace[target.nodeid].attributes[ua.AttributeIds.DataType].datachange_callbacks

    async def say(dv) -> None:  # the server's word on the target's DataType, to the source's watch
        for handle, callback in list(watch.items()):
            await callback(handle, dv)

    try:
        await until(lambda: src.targets_watched and watch, 30)
        client = src._client
        reads, read = [], client.get_namespace_array

        def counted():
            reads.append(1)
            return read()

        client.get_namespace_array = counted
        await say(ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)))
        await until(lambda: src._targets_gone, 30)
        await src.write(set_, 1.0)  # gone, not yet back: checked
        await say(ua.DataValue(ua.Variant(ua.NodeId(ua.ObjectIds.Double), ua.VariantType.NodeId)))
        await until(lambda: src._targets_back, 30)
        for v in (2.0, 3.0, 4.0):
            await src.write(set_, v)
        assert len(reads) == 2 and await target.read_value() == 4.0, reads  # was: 4, one a write
        await say(
            ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown))
        )  # the next download
        await until(lambda: src._targets_gone, 30)
        await src.write(set_, 5.0)
        assert len(reads) == 3
    finally:
        await src.stop()
        await srv.stop()


async def test_kept_namespaces_not_read_now_at_a_start_refuse_the_connect(tmp_path, monkeypatch) -> None:
    """The kept namespaces' file not read at the start (too many open files, an I/O error: made to fail here, no
    disk fault can be made): taken as none kept, the start after a reorder pinned the new order and read the other
    namespace's node of the index, GOOD. The connect is refused and tried again; read, the index is refused."""
    import errno

    from asyncua import ua

    from edge_agent import opcua_pins
    from tests.support.peers import opcua_server

    port = free_port()
    srv, plc, _ = await opcua_server(port, "plc", "urn:plc", "Line")
    await srv.nodes.objects.add_variable(ua.NodeId("Speed", plc), "Speed", -99.0)
    await srv.start()
    settings = _settings(
        f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={plc};s=Speed", "tag": "speed"}]
    )
    src = OpcUaSource("plc", settings)
    opcua_pins.pin_namespaces(tmp_path, {"plc": src}, {"plc": settings})
    src.namespace_pins.save({plc: "urn:diag"})  # type: ignore[union-attr]  # an earlier start's order

    def unread(path):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(opcua_pins, "read_json_state", unread)
    await src.start()
    try:
        await until(lambda: src.stats.errors_by_reason.get("namespaces"), 30)
        assert src.state is not ConnectionState.CONNECTED
        monkeypatch.undo()
        await until(lambda: src.node_errors, 30)
        assert "urn:diag" in src.node_errors[f"ns={plc};s=Speed"]
    finally:
        await src.stop()
        await srv.stop()


async def test_browse_cli_survives_reference_cycles_unreadable_nodes_and_control_characters() -> None:
    """Another vendor's address space: folders that organize their own parents (a cycle), a node whose
    browse name cannot be read, names with escape sequences and line breaks. The browse walked every
    cycle again (each variable once per path, exponentially in --depth: a hang), ended in a traceback on
    the unreadable node, and printed the server's escape sequences into the terminal. Now each node is
    listed once, the unreadable one is named on stderr, and control characters are shown escaped."""
    import sys

    from asyncua import ua

    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, line = await opcua_server(port, "plc", "urn:test:cycles", "Line")
    a = await line.add_object(idx, "A")
    b = await a.add_object(idx, "B")
    loops = [(b, line), (b, a)]
    for i in range(4):
        c = await b.add_object(idx, f"C{i}")
        loops += [(c, a), (c, b)]
    for src, dst in loops:
        await src.add_reference(dst.nodeid, ua.ObjectIds.Organizes, forward=True, bidirectional=False)
    await a.add_variable(ua.NodeId("Temp", idx), "Temp\x1b[31m\r\nforged line", 1.0)
    await b.add_variable(ua.NodeId("Druck", idx), "Druck 温度", 2.0)
    broken = await b.add_object(idx, "Broken")
    del srv.iserver.aspace[broken.nodeid].attributes[ua.AttributeIds.BrowseName]
    await srv.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edge_agent.cli",
            "browse",
            f"opc.tcp://127.0.0.1:{port}/plc/",
            "--depth",
            "12",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 90)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError("browse did not end: it walks the reference cycles") from None
    finally:
        await srv.stop()
    text, errors = out.decode(), err.decode()
    assert proc.returncode == 0 and "Traceback" not in errors, errors
    rows = [ln for ln in text.splitlines()[1:] if ln.strip()]
    assert len(rows) == 2, text  # each variable once, on one line
    assert "\x1b" not in text and "\r" not in text
    assert rows[0].endswith("Line/A/B/Druck 温度") and rows[1].endswith(
        "Line/A/Temp\\x1b[31m\\r\\nforged line"
    )
    assert f"ns={idx};i=" in errors and "BadAttributeIdInvalid" in errors


async def test_validate_online_names_a_write_target_whose_access_level_cannot_be_read() -> None:
    """A vendor's node exposes neither UserAccessLevel nor AccessLevel: ``edge-agent validate --online``
    ended in a traceback (BadAttributeIdInvalid). Now that target is named, the others still checked."""
    from asyncua import ua

    from devices.opcua.client import check_server
    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:levels", "Line")
    odd = await obj.add_variable(ua.NodeId("Reject", idx), "Reject", False)
    ok = await obj.add_variable(ua.NodeId("Alarm", idx), "Alarm", False)
    await ok.set_writable()
    attrs = srv.iserver.aspace[odd.nodeid].attributes
    del attrs[ua.AttributeIds.UserAccessLevel], attrs[ua.AttributeIds.AccessLevel]
    await srv.start()
    try:
        settings = _settings(f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={idx};s=Alarm"}])
        nodes, writes, _, _ = await asyncio.wait_for(
            check_server(settings, [(f"ns={idx};s=Reject", True), (f"ns={idx};s=Alarm", True)]), 30
        )
    finally:
        await srv.stop()
    assert nodes == [None]
    assert "access level cannot be read (BadAttributeIdInvalid)" in (writes[0] or "") and writes[1] is None


async def test_a_server_that_stops_answering_with_the_connection_open_is_named_stalled_not_unreachable() -> (
    None
):
    """The PLC's runtime hangs but its TCP stack keeps the connection open: nothing comes back. The
    source noticed (its state read timed out) but said "cannot reach ...; is the server running?",
    counted as unreachable. Now it says the server stopped answering, and it reconnects once it answers."""
    from asyncua import ua

    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:hang", "Line")
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    frozen = asyncio.Event()

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                while frozen.is_set():
                    await asyncio.sleep(0.02)
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def relay(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(cr, sw), pipe(sr, cw))

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    endpoint = f"opc.tcp://127.0.0.1:{proxy.sockets[0].getsockname()[1]}/plc/"
    src = OpcUaSource("plc", _settings(endpoint, [{"node_id": f"ns={idx};s=Speed"}], connect_timeout_s=0.5))
    await src.start()
    try:
        await _collect(src, {"Speed"})
        frozen.set()
        await _counted(src, "stalled", timeout_s=3.0)
        assert "stopped answering" in (src.stats.last_error or ""), src.stats.errors_by_reason
        assert "unreachable" not in src.stats.errors_by_reason
        frozen.clear()
        for _ in range(600):
            if src.state is ConnectionState.CONNECTED and src.stats.reconnects:
                break
            await asyncio.sleep(0.05)
        assert src.state is ConnectionState.CONNECTED and src.stats.reconnects >= 1
    finally:
        await src.stop()
        proxy.close()
        await srv.stop()


@pytest.mark.asyncio(loop_scope="module")  # press1_plc's loop
async def test_an_error_reading_the_structure_types_is_counted_and_read_again_not_the_end_of_the_worker(
    ua_types, monkeypatch, press1_plc
) -> None:
    """An error out of the source's read of the structure types (a stand-in: no server found to make asyncua's
    loaders raise past their guard) ended the worker that reads them, without a word: the structure's values
    were skipped for the whole session. It is now counted (``structure_types``), logged, and the types are read
    again after a pause, the structure's members then coming."""

    import devices.opcua.client as client_mod

    monkeypatch.setattr(client_mod, "TYPES_RETRY_S", 0.2)
    endpoint, idx = press1_plc
    src = OpcUaSource("plc", _settings(endpoint, [{"node_id": f"ns={idx};s=Press1"}], keepalive_check_s=30.0))
    load, calls = src._load_types, []

    async def breaks_once(client, tries=0):
        calls.append(tries)
        if len(calls) == 1:
            raise RuntimeError("the loader broke")
        await load(client, tries)

    monkeypatch.setattr(src, "_load_types", breaks_once)
    await src.start()
    try:  # on the former code the members never come: the worker had ended
        got = await _collect(src, {"Press1/Force", "Press1/Axis/Pos"}, timeout_s=15.0)
    finally:
        await src.stop()
    assert got["Press1/Force"].value == 812.5 and got["Press1/Axis/Pos"].value == 3.25
    assert len(calls) >= 2 and src.stats.errors_by_reason.get("structure_types") == 1, (
        src.stats.errors_by_reason
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plain_plc():
    """One started server for the tests that only read it, each its own namespace of plain values: "nan"
    (Variant[] and Double[] holding NaN or infinity), "text" (texts whose bytes are not valid UTF-8) and "name"
    (a node whose browse name is not). Building an asyncua server's address space is most of such a test's
    CPU: (port, {namespace: index})."""
    from asyncua import ua

    from tests.support.peers import opcua_server

    port = free_port()
    srv, nan, obj = await opcua_server(port, "plc", "urn:test:nan", "Line")
    V = ua.VariantType
    values = {
        "Mixed": ua.Variant([ua.Variant(float("nan"), V.Double), ua.Variant(1.0, V.Double)], V.Variant),
        "Nested": ua.Variant(
            [ua.Variant([1.0, float("inf")], V.Double), ua.Variant("a", V.String)], V.Variant
        ),
        "Doubles": ua.Variant([float("nan"), 1.0], V.Double),
        "Fine": ua.Variant([ua.Variant(2.0, V.Double), ua.Variant("a", V.String)], V.Variant),
    }
    for name, value in values.items():
        bdt = ua.NodeId(ua.ObjectIds.BaseDataType) if value.VariantType is V.Variant else None
        await obj.add_variable(ua.NodeId(name, nan), name, value, datatype=bdt)
    text = await srv.register_namespace("urn:test:text")
    values = {  # asyncua writes a surrogate-escaped text as the bytes it stands for: 0xff 0xfe on the wire
        "Text": ua.Variant("ok\udcff\udcfe", V.String),
        "Texts": ua.Variant(["a", "b\udcc3"], V.String),
        "Label": ua.Variant(ua.LocalizedText("x\udcc3"), V.LocalizedText),
        "Fine": ua.Variant("Grüße", V.String),
    }
    for name, value in values.items():
        await obj.add_variable(ua.NodeId(name, text), name, value)
    name = await srv.register_namespace("urn:test:name")
    await obj.add_variable(ua.NodeId("T1", name), "T\udcffemp", 21.5, ua.VariantType.Double)
    await srv.start()
    yield port, {"nan": nan, "text": text, "name": name}
    await srv.stop()


async def _first_readings(
    port: int, idx: int, names: list[str], **kw
) -> tuple[OpcUaSource, dict[str, Reading]]:
    src = OpcUaSource(
        "plc",
        _settings(f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={idx};s={n}"} for n in names], **kw),
    )
    await src.start()
    try:
        return src, await _collect(src, set(names))
    finally:
        await src.stop()


@pytest.mark.asyncio(loop_scope="module")  # plain_plc's loop
async def test_a_variant_array_holding_nan_is_bad_and_counted_as_a_double_array_is(plain_plc) -> None:
    """A BaseDataType node's Variant[] holding NaN or infinity (a gateway's generic array of measurements) is
    passed as BAD with reason non_finite and counted, as a Double[] holding one is (docs: non-finite numbers are
    passed BAD, or dropped under non_finite: skip, and counted either way). Before, it went on GOOD and
    uncounted, its NaN written as JSON null to MQTT, the outbox and the cloud."""
    port, namespaces = plain_plc
    idx = namespaces["nan"]  # Mixed, Nested, Doubles, Fine
    names = ["Mixed", "Nested", "Doubles", "Fine"]
    src, got = await _first_readings(port, idx, names)
    assert [(t, got[t].quality, got[t].reason) for t in names] == [
        ("Mixed", Quality.BAD, "non_finite"),
        ("Nested", Quality.BAD, "non_finite"),
        ("Doubles", Quality.BAD, "non_finite"),
        ("Fine", Quality.GOOD, None),
    ]
    assert src.stats.errors_by_reason["non_finite"] == 3
    _, skipped = await _first_readings(port, idx, ["Fine"], non_finite="skip")
    assert list(skipped) == ["Fine"]


@pytest.mark.asyncio(loop_scope="module")  # plain_plc's loop
async def test_text_that_is_not_valid_utf8_goes_on_as_valid_text_and_is_counted(plain_plc) -> None:
    """An OPC UA String (or LocalizedText, or an item of a String[]) whose bytes are not valid UTF-8 (a PLC's
    Latin-1 text, a buffer read past its end) arrives from asyncua as lone surrogates. It is passed on as valid
    text, each such byte as U+FFFD, and counted (invalid_text). Before, the surrogates went on: written as
    "\\udcff" escapes to MQTT, the outbox and the cloud, which strict JSON parsers (serde_json, PostgreSQL jsonb)
    refuse with the whole message, and UTF-8 cannot encode."""
    import json

    port, namespaces = plain_plc
    values = ["Text", "Texts", "Label", "Fine"]  # the bytes on the wire: plain_plc's "text" namespace
    src, got = await _first_readings(port, namespaces["text"], values)
    assert {t: got[t].value for t in values} == {
        "Text": "ok\ufffd\ufffd",
        "Texts": ["a", "b\ufffd"],
        "Label": "x\ufffd",
        "Fine": "Grüße",
    }
    for t in values:  # what a strict consumer does: UTF-8 JSON
        json.dumps(got[t].value, ensure_ascii=False).encode()
        assert got[t].quality is Quality.GOOD
    assert src.stats.errors_by_reason["invalid_text"] == 3


@pytest.mark.asyncio(loop_scope="module")  # plain_plc's loop
async def test_a_browse_name_that_is_not_valid_utf8_names_its_tag_as_valid_text(plain_plc) -> None:
    """A node configured without ``tag`` is tagged by its browse name; one whose bytes are not valid UTF-8 (asyncua
    hands it over as lone surrogates) names its tag with U+FFFD for each invalid byte, as a text value is read:
    before, forwards wrote the tag as a "\\udcff" escape that strict JSON parsers refuse with the message."""
    port, namespaces = plain_plc
    idx = namespaces["name"]  # T1, browse name "T\udcffemp"
    src = OpcUaSource("plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/", [{"node_id": f"ns={idx};s=T1"}]))
    await src.start()
    try:
        r = await asyncio.wait_for(src.items().__anext__(), 30)
    finally:
        await src.stop()
    assert (r.tag, r.value) == ("T\ufffdemp", 21.5)
