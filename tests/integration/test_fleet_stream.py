"""The agents' Connect stream against a real fleet service (gRPC, mTLS, SQLite): the desired state is pushed
the moment it changes (no report, no poll by the agent), reports go up on change and are written in
batches, a second stream of the same agent replaces the first, and both directions of compatibility hold:
an agent meets a server without Connect (falls back to Heartbeat), a Heartbeat-only agent meets this
server."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from cloud_trainer.fleet.service import FleetServer, channel_credentials
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import cloud_settings, make_pki
from tests.support.peers import free_port
from tests.support.waits import until


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


class Agent:
    """An uplink with a state the test changes and the desired states it received."""

    def __init__(self, pki, port, tmp, **kw) -> None:
        self.slots = [
            {
                "slot": "vision",
                "package": "p",
                "version": "1.0.0",
                "digest": "d1",
                "status": "active",
                "reason": "",
            }
        ]
        self.received: list[tuple[float, int, list]] = []
        self.ob = Outbox(OutboxSettings(), tmp / "agent")
        self.ob.open()

        async def on_desired(reply) -> None:
            self.received.append(
                (time.monotonic(), reply.generation, [(d.slot, d.version) for d in reply.desired])
            )

        self.up = Uplink(
            cloud_settings(pki, port, **kw),
            self.ob,
            status=lambda: {"labels": {"site": "plant"}, "slots": self.slots, "health": {}},
            on_desired=on_desired,
        )

    async def stop(self) -> None:
        await self.up.stop()
        self.ob.close()


async def test_desired_state_is_pushed_the_moment_it_changes_and_reports_are_written_in_batches(
    pki, tmp_path
):
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    # the agent looks at its state every 0.2 s but reports only on change (or every 30 s)
    ag = Agent(pki, port, tmp_path, heartbeat_s=0.2, report_s=30)
    await ag.up.start()
    try:
        await until(
            lambda: ag.up.mode == "stream" and ag.received, what="the stream and its first desired state"
        )
        await until(
            lambda: [a["slots"][0]["version"] for a in srv.store.agents()] == ["1.0.0"], what="registration"
        )
        reports = srv.hub.reports
        await asyncio.sleep(0.6)
        assert srv.hub.reports == reports  # nothing changed: nothing sent
        ag.slots = [{**ag.slots[0], "version": "1.1.0", "digest": "d2"}]  # a change: reported at once
        await until(
            lambda: [a["slots"][0]["version"] for a in srv.store.agents()] == ["1.1.0"],
            timeout_s=15,  # (well under report_s: a report left to its 30-s turn fails)
            what="the changed state in the store",
        )
        assert srv.hub.reports == reports + 1 and srv.hub.flushes <= srv.hub.reports
        # a new desired state reaches the agent without any report or poll from it
        n = len(ag.received)
        t0 = time.monotonic()
        with srv.control.lock:
            srv.control._set_desired("gw1", "vision", "p", "1.2.0", "d3", 10, "dep1")
        await until(
            lambda: any(v == [("vision", "1.2.0")] for _, _, v in ag.received[n:]),
            timeout_s=15,
            what="the pushed desired state",
        )
        first = next(t for t, _, v in ag.received[n:] if v == [("vision", "1.2.0")])
        assert first - t0 < 10  # pushed, not left to the agent's next report (30 s)
        assert srv.hub.snapshot()["streams"] == 1
        # a state report names the process's runs before its own (the fleet takes a step kept untold during a clone
        # hold under a run that names the step's: the same gateway's, never its clone's)
        runs = [ag.up.client.boot_id]  # (answered on the stream)
        for _ in range(4):  # (links lost, each run answered before: ``FleetClient.heard``)
            ag.up.client.heard()
            ag.up.client.link_lost()
            runs.insert(0, (await ag.up._report()).boot_id)
        req = await ag.up._report()
        assert (req.boot_id, list(req.runs_before)) == (runs[0], runs[1:4]), (req, runs)
    finally:
        await ag.stop()
        await srv.stop()


async def test_a_second_stream_of_the_same_agent_replaces_the_first(pki, tmp_path):
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw2.pem", pki / "agents" / "gw2.key")
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            msg = pb.AgentMessage(report=pb.HeartbeatRequest(labels={"site": "x"}))

            async def forever():
                yield msg
                await asyncio.sleep(30)

            first = rpc.FleetStub(ch).Connect(forever())
            got = await first.read()
            assert got.desired.generation == 0 and list(got.desired.desired) == []
            second = rpc.FleetStub(ch).Connect(forever())
            assert (await second.read()).desired.generation == 0
            assert await asyncio.wait_for(first.read(), 5) is grpc.aio.EOF  # the first stream was ended
            await until(lambda: srv.hub.snapshot()["streams"] == 1, what="one stream for gw2")
            second.cancel()
            # a report that is not a JSON object ends the stream with INVALID_ARGUMENT
            bad = rpc.FleetStub(ch).Connect(
                iter([pb.AgentMessage(report=pb.HeartbeatRequest(health_json="[1]"))])
            )
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                async for _ in bad:
                    pass
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await srv.stop()


async def test_reports_are_acknowledged_on_receipt_while_the_control_lock_is_held(pki, tmp_path):
    """A report is acknowledged as it is taken, not after its store calls: with the control lock held (a
    rollout tick, an admin's write, a control database on a dead path) for longer than the agent's
    keepalive_timeout_s, its stream stays open, and the newest report of that time is written once the lock is
    free. The ack came after the new run's order check (``Control.note_run``, under the lock): the agent ended
    its stream as silent and waited out its reconnect delay after the stall."""
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    checks: list[str] = []
    note_run = srv.control.note_run

    def counted(agent, *a, **kw):
        checks.append(agent)
        return note_run(agent, *a, **kw)

    srv.control.note_run = counted
    held, free = threading.Event(), threading.Event()

    def hold() -> None:
        with srv.control.lock:
            held.set()
            free.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    held.wait(5)
    # a report every ~0.4 s (report_s), each to be answered within 1 s (keepalive_timeout_s)
    ag = Agent(pki, port, tmp_path, heartbeat_s=0.2, report_s=0.3, keepalive_timeout_s=1)
    await ag.up.start()
    try:
        # the agent's first report starts a run the service has not seen: its order check waits for the lock
        await until(lambda: checks == ["gw1"], what="the first report's order check waiting for the lock")
        ag.slots = [{**ag.slots[0], "version": "1.1.0", "digest": "d2"}]
        await asyncio.sleep(2.5)  # the lock held 2.5 keepalive_timeout_s more, the agent reporting meanwhile
        assert ag.up.status()["last_error"] is None and ag.up.mode == "stream"  # not ended as silent
        assert srv.hub.snapshot()["streams"] == 1 and srv.store.agents() == []  # nothing written yet
        free.set()
        await until(
            lambda: [a["slots"][0]["version"] for a in srv.store.agents()] == ["1.1.0"],
            what="the newest report written once the lock is free",
        )
        await until(lambda: ag.received, what="the desired state")
        assert ag.up.status()["last_error"] is None and checks == ["gw1"]  # the same stream throughout
    finally:
        free.set()
        await ag.stop()
        await srv.stop()


async def test_agents_and_servers_of_either_protocol_work_together(pki, tmp_path):
    # an agent meets a server without Connect: it falls back to unary heartbeats and still gets its state
    port = free_port()
    old = FleetServer(
        tmp_path / "old", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", streams=False
    )
    await old.start()
    ag = Agent(pki, port, tmp_path, heartbeat_s=0.2)
    await ag.up.start()
    try:
        with old.control.lock:
            old.control._set_desired("gw1", "vision", "p", "2.0.0", "d9", 10, "dep2")
        await until(
            lambda: ag.up.mode == "heartbeat" and ag.received and ag.received[-1][2] == [("vision", "2.0.0")],
            what="the heartbeat fallback",
        )
    finally:
        await ag.stop()
        await old.stop()
    # a Heartbeat-only agent (today's protocol) against the streaming server
    port = free_port()
    srv = FleetServer(tmp_path / "new", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    ag = Agent(pki, port, tmp_path / "b", heartbeat_s=0.2, stream=False)
    await ag.up.start()
    try:
        with srv.control.lock:
            srv.control._set_desired("gw1", "vision", "p", "2.0.0", "d9", 10, "dep2")
        await until(
            lambda: ag.received and ag.received[-1][2] == [("vision", "2.0.0")], what="a unary heartbeat"
        )
        assert ag.up.mode == "heartbeat" and srv.store.agents()[0]["id"] == "gw1"
    finally:
        await ag.stop()
        await srv.stop()
