"""Tenants whose rows another session of PostgreSQL holds locked (an admin's open transaction, a stuck migration, a
writer's session that hangs), against a real fleet service on a real PostgreSQL: a batch's write waited on its agent's
row lock for as long, holding one of the store's 8 pooled connections, so 4 such tenants (2 writes each) held all 8
and a healthy tenant's batches failed (``PoolTimeout`` after 30 s). A batch now waits at most ``row_lock_timeout_s``
(2 s) for the lock, then is refused (``RESOURCE_EXHAUSTED``, saying so, counted as ``store_locked``): the healthy
tenant is stored meanwhile, and the locked agents' batches, kept by them, are stored once the lock is let go."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import psycopg

from cloud_trainer.fleet.service import FleetServer, channel_credentials
from cloud_trainer.pki import issue
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import cloud_settings, make_pki
from tests.support.peers import free_port
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)
from tests.support.waits import until

LOCKED = "held by another transaction past 2 s, possibly this agent's other batch"


def _one_record(seq: int) -> pb.RecordBatch:
    return pb.RecordBatch(records=[pb.Record(seq=seq, epoch=1, kind="result", t=time.time(), payload=b"{}")])


def _rec(seq: int) -> dict:
    return {"seq": seq, "epoch": 1, "kind": "result", "t": time.time(), "payload": "{}"}


@contextlib.contextmanager
def _rows_locked(url: str, tenants: list[str]):
    """Another session holding the tenants' agents' ``ingest`` rows (``FOR UPDATE``, its transaction left open) until
    the ``with`` ends."""
    with psycopg.connect(url) as conn:
        held = conn.execute(
            "SELECT agent FROM ingest WHERE tenant = ANY(%s) FOR UPDATE", (tenants,)
        ).fetchall()
        assert held, tenants
        try:
            yield
        finally:
            conn.rollback()


class _Entered:
    """Counts the batches whose write entered the store (the service calls ``store.ingest`` in a writer thread)."""

    def __init__(self, srv: FleetServer) -> None:
        self.real, self.agents = srv.store.ingest, []
        srv.store.ingest = self.ingest  # type: ignore[method-assign]

    def ingest(self, agent, records, **kw):
        self.agents.append(agent)
        return self.real(agent, records, **kw)


@contextlib.asynccontextmanager
async def _fleet(tmp_path, url: str, agents: dict[str, str]):
    """An in-process fleet service on PostgreSQL ``url`` and a stub for each agent (id -> tenant)."""
    pki = make_pki(tmp_path / "pki", agents=())
    for a, tenant in agents.items():
        issue(pki, a, "agent", pki / "agents" / a, tenant=tenant)
    srv = FleetServer(
        tmp_path / "cloud", free_port(), pki / "ca.pem", pki / "server.pem", pki / "server.key", store=url
    )
    await srv.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            stubs = {}
            for a in agents:
                creds = channel_credentials(
                    pki / "ca.pem", pki / "agents" / f"{a}.pem", pki / "agents" / f"{a}.key"
                )
                ch = await stack.enter_async_context(grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", creds))
                stubs[a] = rpc.FleetStub(ch)
            yield srv, stubs
    finally:
        await srv.stop()


async def _push(stub, seq: int, timeout: float = 60) -> str:
    """One batch of one record: "stored N", or its refusal's code and text."""
    try:
        acks = [a async for a in stub.PushRecords(iter([_one_record(seq)]), timeout=timeout)]
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return f"stored {acks[0].stored}"


async def test_tenants_whose_rows_another_session_holds_leave_the_store_to_a_healthy_tenant(
    tmp_path,
    postgres_url,  # noqa: F811
    caplog,
):
    slow = [f"slow{t}" for t in range(4)]
    agents = {f"s{t}-{i}": slow[t] for t in range(4) for i in range(2)}
    async with _fleet(tmp_path, postgres_url, {**agents, "h1": "healthy"}) as (srv, stubs):
        assert srv.store.pool.max_size == len(agents)  # the 8 connections 4 locked tenants' writes held
        for a, tenant in agents.items():  # each agent's first batch: its ingest row
            await asyncio.to_thread(srv.store.ingest, a, [_rec(1)], tenant=tenant)
        entered = _Entered(srv)
        with _rows_locked(postgres_url, slow):
            calls = {a: asyncio.ensure_future(_push(stubs[a], 2)) for a in agents}
            await until(
                lambda: len(entered.agents) == len(agents), what="the locked agents' 8 writes in the store"
            )
            # was: DEADLINE_EXCEEDED (the pool's every connection held by a write waiting on a lock; PoolTimeout
            # after 30 s)
            assert await _push(stubs["h1"], 1, timeout=20) == "stored 1"
            assert await _push(stubs["h1"], 2, timeout=20) == "stored 1"
            for a, call in calls.items():
                refused = await call
                assert refused.startswith(f"RESOURCE_EXHAUSTED: agent '{a}' (tenant {agents[a]}): "), refused
                assert (
                    LOCKED in refused and "nothing of this batch was stored: send it again later" in refused
                )
                assert srv.quotas.snapshot(agents[a])["refusals"][f"{a}:store_locked"] == 1
            # logged once a minute per tenant (what holds one of its agents' rows holds them all): was per agent
            said = [r for r in caplog.records if "(store_locked)" in r.getMessage()]
            assert sorted(r.getMessage().split("(tenant ")[1].split(")")[0] for r in said) == slow
            assert srv.store.stats("h1", tenant="healthy")["records"] == 2
        # the lock let go: the agents' batches sent again are stored, nothing lost
        for a, tenant in agents.items():
            assert await _push(stubs[a], 2) == "stored 1"
            assert srv.store.stats(a, tenant=tenant)["records"] == 2


async def test_an_agents_uplink_refused_for_its_locked_rows_keeps_its_records_and_sends_them_once_let_go(
    tmp_path,
    postgres_url,  # noqa: F811
):
    """The agent's own uplink and outbox: refused while its rows are locked (it backs off, saying why, the records
    kept in its outbox), its records stored once the lock is let go."""
    async with _fleet(tmp_path, postgres_url, {"gw1": "default"}) as (srv, _):
        await asyncio.to_thread(srv.store.ingest, "gw1", [_rec(1)], tenant="default")
        ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "gw1")
        ob.open()
        for i in range(3):
            ob.append("result", {"i": i})
        ob.flush()
        up = Uplink(cloud_settings(tmp_path / "pki", srv.port), ob)
        try:
            with _rows_locked(postgres_url, ["default"]):
                await up.start()
                await until(
                    lambda: LOCKED in (up.status()["last_error"] or ""),
                    what="the uplink refused for the lock",
                )
                assert up.status()["last_error"].startswith("PushRecords: RESOURCE_EXHAUSTED: agent 'gw1'")
                assert ob.stats()["depth"] == 3 and srv.store.stats("gw1")["records"] == 1
            await until(lambda: ob.stats()["depth"] == 0, what="the outbox drained once the lock is let go")
            assert srv.store.stats("gw1")["records"] == 4 and up.refused == 0
        finally:
            await up.stop()
            ob.close()
