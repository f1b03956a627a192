"""One agent certificate's calls open at once are bounded, every method and connection together (real fleet
service, mTLS, every client on 127.0.0.1 as agents behind one NAT address are).

A stolen gateway certificate opening hundreds of connections, each with a PushRecords it never finished, was refused
past ``concurrent_streams``, but each refused stream was held (its refusal waits for its first message) with up to a
stream window of its batch in grpc: 600 such connections took `cloud-trainer serve` from 69 to 328 MB, a few thousand
would have had it killed for memory, for every tenant. Past ``concurrent_calls`` a call is now refused at once,
nothing of it read, and the other agents, of its tenant and of another, are served meanwhile."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cloud_trainer.fleet.guard import QuotaLimits, Quotas
from cloud_trainer.fleet.service import FleetServer, channel_credentials
from cloud_trainer.pki import ROLE_AGENT, init_tenant, issue
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import make_pki
from tests.support.peers import free_port
from tests.support.waits import until

LIMIT = 3


@pytest.fixture
async def fleet(tmp_path):
    pki = make_pki(tmp_path / "pki", agents=("gw1", "gw2"), admins=())
    init_tenant(pki, "beta")
    issue(pki, "gw-b", ROLE_AGENT, pki / "tenants/beta/agents/gw-b", tenant="beta")
    srv = FleetServer(
        tmp_path / "cloud",
        free_port(),
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        quotas=Quotas(QuotaLimits(concurrent_calls=LIMIT)),
    )
    await srv.start()
    channels: list[grpc.aio.Channel] = []

    def channel(cert: str, n: int = 0) -> grpc.aio.Channel:
        """A channel of its own connection (``n``) with the agent certificate ``cert`` (a path without suffix)."""
        creds = channel_credentials(pki / "ca.pem", pki / f"{cert}.pem", pki / f"{cert}.key")
        ch = grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", creds, options=[("test.connection", n)])
        channels.append(ch)
        return ch

    try:
        yield srv, channel
    finally:
        for ch in channels:
            await ch.close()
        await srv.stop(0)


async def _code(call) -> tuple[grpc.StatusCode, str]:
    try:
        await call
        return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""


async def test_one_certificates_calls_past_its_limit_are_refused_at_once_on_any_connection_and_others_served(
    fleet,
):
    srv, channel = fleet
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
