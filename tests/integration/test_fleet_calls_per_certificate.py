"""One agent certificate's calls open at once are bounded, every method and connection together (real fleet
service, mTLS, every client on 127.0.0.1 as agents behind one NAT address are).

A stolen gateway certificate opening hundreds of connections, each with a PushRecords it never finished, was refused
past ``concurrent_streams``, but each refused stream was held (its refusal waits for its first message) with up to a
stream window of its batch in grpc: 600 such connections took `cloud-trainer serve` from 69 to 328 MB, a few thousand
would have had it killed for memory, for every tenant. Past ``concurrent_calls`` a call is now refused at once,
nothing of it read, and the other agents, of its tenant and of another, are served meanwhile."""

from __future__ import annotations

import asyncio
import shutil

import grpc
import pytest

from cloud_trainer.fleet.guard import QuotaLimits, Quotas
from cloud_trainer.fleet.service import FleetServer, channel_credentials
from cloud_trainer.pki import ROLE_AGENT, init_tenant, issue, revoke
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import make_pki
from tests.support.peers import free_port
from tests.support.waits import until

LIMIT = 3


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp("pki"), agents=("gw1", "gw2"), admins=())
    init_tenant(pki, "beta")
    issue(pki, "gw-b", ROLE_AGENT, pki / "tenants/beta/agents/gw-b", tenant="beta")
    return pki


@pytest.fixture
async def serve(pki, tmp_path):
    """``await serve(**kw)``: a FleetServer (``kw``: its options) and ``channel(cert, n)``, a channel of its own
    connection ``n`` with the agent certificate ``cert`` (a path in the PKI without suffix)."""
    servers: list[FleetServer] = []
    channels: list[grpc.aio.Channel] = []

    async def start(**kw):
        srv = FleetServer(
            tmp_path / f"cloud{len(servers)}",
            free_port(),
            pki / "ca.pem",
            pki / "server.pem",
            pki / "server.key",
            **kw,
        )
        servers.append(srv)
        await srv.start()

        def channel(cert: str, n: int = 0) -> grpc.aio.Channel:
            creds = channel_credentials(pki / "ca.pem", pki / f"{cert}.pem", pki / f"{cert}.key")
            ch = grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", creds, options=[("test.connection", n)])
            channels.append(ch)
            return ch

        return srv, channel

    try:
        yield start
    finally:
        for ch in channels:
            await ch.close()
        for srv in servers:
            await srv.stop(0)


async def _code(call) -> tuple[grpc.StatusCode, str]:
    try:
        await call
        return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""


async def test_one_certificates_calls_past_its_limit_are_refused_at_once_on_any_connection_and_others_served(
    serve,
):
    srv, channel = await serve(quotas=Quotas(QuotaLimits(concurrent_calls=LIMIT)))
    # the hostile certificate: PushRecords streams that never send a batch, each on a connection of its own
    held = [rpc.FleetStub(channel("agents/gw1", n)).PushRecords() for n in range(LIMIT)]
    await until(lambda: srv.quotas.snapshot("default")["calls"].get("gw1") == LIMIT, 10, "gw1's calls open")
    more = [rpc.FleetStub(channel("agents/gw1", LIMIT + n)).PushRecords() for n in range(2)]

    async def ended(call) -> tuple[grpc.StatusCode, str]:
        try:
            async for _ in call:
                pass
            return grpc.StatusCode.OK, ""
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""

    # refused at once (not after the 5 s a refused stream waits for its first message), naming the limit
    outcomes = await asyncio.wait_for(asyncio.gather(*(ended(c) for c in more)), 4)
    for code, details in outcomes:
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
        assert f"limit {LIMIT} at once" in details and "gw1" in details and "PushRecords" in details
    code, details = await _code(rpc.FleetStub(channel("agents/gw1", 99)).Heartbeat(pb.HeartbeatRequest()))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "calls of its are open" in details
    # the other agents, of its tenant and of another, from the same address, are served meanwhile
    await rpc.FleetStub(channel("agents/gw2")).Heartbeat(pb.HeartbeatRequest(), timeout=10)
    await rpc.FleetStub(channel("tenants/beta/agents/gw-b")).Heartbeat(pb.HeartbeatRequest(), timeout=10)
    assert srv.quotas.snapshot("default")["refusals"]["gw1:calls"] == 3
    assert srv.quotas.snapshot("default")["calls"] == {"gw1": LIMIT}  # (the others' calls ended)
    for call in held:
        call.cancel()
    await until(lambda: "gw1" not in srv.quotas.snapshot("default")["calls"], 10, "gw1's calls to end")
    await rpc.FleetStub(channel("agents/gw1", 100)).Heartbeat(pb.HeartbeatRequest(), timeout=10)


async def test_a_connection_left_with_no_call_is_closed_and_its_client_connects_again_unseen(serve):
    """A connection whose calls were all refused (or that a client left open with none) held ~80 KB of the service's
    memory for good; one with no call open for ``connection_idle_s`` is now closed (GOAWAY), and the client's next
    call connects again as if nothing happened."""
    _, channel = await serve(connection_idle_s=0.3)
    ch = channel("agents/gw1")
    await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(), timeout=10)
    assert ch.get_state() == grpc.ChannelConnectivity.READY
    await until(
        lambda: ch.get_state() == grpc.ChannelConnectivity.IDLE, 10, "the server to close the connection"
    )
    await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(), timeout=10)


async def test_connections_past_the_process_limit_are_closed_as_accepted_and_connected_agents_served(serve):
    """Connections were bounded by nothing in the process: one certificate (or anyone, before its TLS handshake)
    holding every descriptor left no agent of any tenant able to connect, and the store none to open. Past
    ``max_connections`` (at most the descriptor limit less ``FD_RESERVE``) a connection is closed as it is
    accepted; an agent connected before is served, and connects again once others have closed."""
    import socket

    srv, channel = await serve(max_connections=3)
    beta = rpc.FleetStub(channel("tenants/beta/agents/gw-b", 0))
    await beta.Heartbeat(pb.HeartbeatRequest(), timeout=10)  # connected before: one of the 3
    held = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(6)]  # no handshake: 2 taken
    try:
        await asyncio.sleep(0.3)
        closed = 0
        for c in held:
            c.settimeout(0.2)  # the 4 closed are closed by now; the 2 taken stay open
            try:
                closed += c.recv(1) == b""
            except TimeoutError:
                pass
        assert closed == 4
        await beta.Heartbeat(pb.HeartbeatRequest(), timeout=10)
        code, _ = await _code(
            rpc.FleetStub(channel("agents/gw1", 1)).Heartbeat(pb.HeartbeatRequest(), timeout=2)
        )
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        for c in held:
            c.close()
    ch = channel("agents/gw1", 2)
    await until(
        lambda: ch.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY, 10, "gw1 connected"
    )
    await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(), timeout=10)


async def test_a_revoked_certificates_calls_take_no_place_of_its_gateways_new_certificate(serve, pki):
    """A stolen gateway's certificate revoked, the gateway issued a new one of the same agent id (docs/fleet-control.md):
    the revoked one's streams, each open until its refusal (which waits for a first message), were counted as the
    agent's calls, and the thief kept the gateway's new certificate out of the fleet with a few streams every 5 s."""
    issue(pki, "gw-r", ROLE_AGENT, pki / "agents/gw-r")
    (pki / "stolen").mkdir()
    for suffix in (".pem", ".key"):
        shutil.copy(pki / f"agents/gw-r{suffix}", pki / f"stolen/gw-r{suffix}")
    revoke(pki, cert=pki / "stolen/gw-r.pem", reason="stolen")
    issue(pki, "gw-r", ROLE_AGENT, pki / "agents/gw-r")  # the gateway's new certificate (a new serial)
    srv, channel = await serve(quotas=Quotas(QuotaLimits(concurrent_calls=LIMIT)))
    for n in range(LIMIT):
        rpc.FleetStub(channel("stolen/gw-r", n)).PushRecords()
    await until(
        lambda: sum(srv.quotas.snapshot("default")["calls"].values()) == LIMIT, 10, "the thief's calls"
    )
    # the revoked certificate's own calls are still bounded (refused at once past the limit; the thief's calls
    # above stay open for the 5 s their refusal waits for a first message)
    more = rpc.FleetStub(channel("stolen/gw-r", LIMIT)).PushRecords()
    assert await asyncio.wait_for(more.code(), 4) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "revoked certificate" in await more.details()
    await rpc.FleetStub(channel("agents/gw-r", 99)).Heartbeat(pb.HeartbeatRequest(), timeout=10)


def test_the_descriptor_limit_is_raised_as_far_as_the_connections_need():
    """systemd starts a service with 1,024 descriptors (hard limit 524,288): the connection bound would have been
    768. The soft limit is raised first, up to the hard one; a smaller bound raises nothing."""
    import resource

    from cloud_trainer.fleet.service import FD_RESERVE, MAX_CONNECTIONS, connection_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < MAX_CONNECTIONS + FD_RESERVE:
        pytest.skip(f"the hard descriptor limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        assert connection_limit(100) == 100 and resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1024
        assert connection_limit() == MAX_CONNECTIONS
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == MAX_CONNECTIONS + FD_RESERVE
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_low_hard_descriptor_limit_still_takes_most_of_it_in_connections():
    """A container started with 256 descriptors, soft and hard: the bound was 1 connection (256 less FD_RESERVE),
    every agent but one closed as it connected; a quarter of a low limit is kept instead."""
    import subprocess
    import sys

    # The limit is set in the child, not by a preexec_fn: that forks this process, whose gRPC threads (an
    # earlier test's) can abort the fork's child before it execs.
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
        "from cloud_trainer.fleet.service import connection_limit; print(connection_limit())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert int(out) == 192
