"""Months alone, compressed: a fault repeated many times against real peers must leave nothing behind
that grows with the count of faults (log lines, file descriptors, tasks, threads). Each test runs a few
dozen cycles and compares a count after the later cycles with the count after the first ones."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from asyncua import ua

from cloud_trainer.fleet.service import FleetServer
from devices.opcua.client import OpcUaSource
from devices.opcua.settings import OpcUaSettings
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from tests.integration.test_opcua_source import _press_types, _press_udt_body, ua_types  # noqa: F401
from tests.support.fleet import cloud_settings, make_pki
from tests.support.peers import connections_to, free_port, opcua_server
from tests.support.waits import until


async def test_a_plc_that_stays_away_adds_no_log_line_per_reconnect_attempt(caplog) -> None:
    # a PLC switched off: its port on loopback refuses every connection, as a powered-down PLC's does
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{free_port()}/factory/",
            nodes=[{"node_id": "ns=2;s=Machine1.Temperature"}],
            reconnect_initial_s=0.01,
            reconnect_max_s=0.02,
        ),
    )
    caplog.set_level(logging.WARNING)
    await src.start()
    try:
        await until(lambda: src.stats.errors >= 5, what="5 failed attempts")
        early = len(caplog.records)
        await until(lambda: src.stats.errors >= 40, what="40 failed attempts")
        late = len(caplog.records)
    finally:
        await src.stop()
    # the adapter says the loss once per burst: 35 more attempts in the same burst add no line (asyncua
    # said "close_secure_channel was called but connection is closed" once per attempt, for good)
    assert late - early == 0, [r.getMessage() for r in caplog.records[early:]][:3]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=("gw1",))


async def test_an_uplink_stopped_and_started_again_leaves_no_connection_to_the_fleet_open(tmp_path, pki):
    # What a fleet config rollout does: the agent is stopped and a new one started, each time. The stopped
    # uplink's Connect stream kept its gRPC connection (and its keepalive pings) open until Python's cycle
    # collector happened to run: one more connection per restart, at the agent and at the fleet service.
    # Cycles are collected only when the collector runs, so it is kept off here: a connection is closed
    # at stop, or it is counted.
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    ob = Outbox(OutboxSettings(), tmp_path / "agent")
    ob.open()
    gc.disable()
    try:
        for _ in range(8):
            up = Uplink(cloud_settings(pki, port), ob)
            await up.start()
            await until(lambda up=up: up.mode == "stream" and up.last_heartbeat_at, what="the Connect stream")
            await up.stop()
            del up
        await until(lambda: connections_to(port) == 0, timeout_s=5, what="no connection left to the fleet")
    finally:
        gc.enable()
        ob.close()
        await srv.stop()


async def test_sessions_left_behind_by_cut_connections_are_freed_by_the_plc_soon() -> None:
    # A cut connection (a switch restarted, a cable) leaves the session on the PLC until its timeout, and a
    # PLC holds few sessions: asked for an hour, each cut held one more, and a link that flapped a few times
    # used them all. The PLC here lets a client ask for a second; the source asks for session_timeout_s.
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    srv.iserver.min_session_timeout_ms = 100
    await obj.add_variable(ua.NodeId("Line.Temperature", idx), "Temperature", 20.0)
    await srv.start()
    sessions = srv.iserver._external_sessions  # the server's live sessions, by authentication token
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{port}/plc/",
            nodes=[{"node_id": f"ns={idx};s=Line.Temperature"}],
            reconnect_initial_s=0.05,
            reconnect_max_s=0.1,
            keepalive_check_s=0.2,
            session_timeout_s=0.6,
        ),
    )
    await src.start()
    try:
        for cut in range(3):
            await until(lambda: src.state.value == "connected", what="the source to connect")
            for proto in list(srv.bserver.clients):  # the link drops: no CloseSession reaches the server
                proto.transport.close()
            await until(lambda n=cut: src.stats.reconnects > n, what="the source to reconnect")
        await until(lambda: src.state.value == "connected", what="the source to connect")
        # the three sessions left behind expire; the one in use is kept alive by the source's checks
        await until(lambda: len(sessions) == 1, timeout_s=30, what="the sessions left behind to expire")
        await asyncio.sleep(0.8)  # over a session timeout: the session in use must not expire
        assert len(sessions) == 1 and src.state.value == "connected" and src.stats.reconnects == 3
    finally:
        await src.stop()
        await srv.stop()


def _structure_classes() -> int:
    gc.collect()  # a class is in reference cycles of its own: what no table holds is collected now
    return sum(1 for o in gc.get_objects() if isinstance(o, type) and o.__name__ == "TestPressUDT")


@pytest.mark.usefixtures("ua_types")
async def test_reconnects_to_a_plc_with_structures_do_not_keep_every_connections_classes() -> None:
    # the source reads the PLC's structure types again at every connection (its program may have changed),
    # and asyncua makes new classes of them each time; its tables and coder caches keyed by class kept
    # every old one: a PLC with a few hundred UDTs and a link that drops daily grew the agent for good
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:udt", "Line")
    press_type, enc = await _press_types(srv, idx, "definitions")
    body = ua.ExtensionObject(enc, _press_udt_body(812.5, [0.5, 1.5], "P-7", 3.25))
    await obj.add_variable(ua.NodeId("Press1", idx), "Press1", ua.Variant(body), datatype=press_type)
    await srv.start()
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{port}/plc/",
            nodes=[{"node_id": f"ns={idx};s=Press1"}],
            reconnect_initial_s=0.05,
            reconnect_max_s=0.1,
            keepalive_check_s=0.3,
        ),
    )
    got: list[str] = []

    async def pump() -> None:
        async for r in src.items():
            got.append(r.tag)

    await src.start()
    reader = asyncio.create_task(pump())
    counts = []
    try:
        for cut in range(3):
            # each connection's values decoded by member: its types were read on it
            await until(lambda n=cut: got.count("Press1/Force") > n, what="the structure's members")
            if cut in (1, 2):
                counts.append(_structure_classes())
            for proto in list(srv.bserver.clients):
                proto.transport.close()
            await until(lambda n=cut: src.stats.reconnects > n, what="the source to reconnect")
    finally:
        reader.cancel()
        await src.stop()
        await srv.stop()
    assert counts[1] == counts[0], counts  # after 3 connections as many classes as after 2
