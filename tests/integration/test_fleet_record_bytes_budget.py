"""One agent's records' bytes stored per UTC day are bounded (``record_bytes_per_day``), against a real fleet service
(gRPC, mTLS) and the agent's own uplink and outbox. The per-second limits alone let one agent within every default
write ~78 GB an hour of records into the data folder every tenant's store shares (``max_records_per_day`` counts
records, whatever their size). Past the budget a batch is refused whole (``RESOURCE_EXHAUSTED``, saying which
budget), its records wait in the agent's outbox, and another agent of the same tenant is stored as before. The bytes
an agent stored today are kept in the store, so a restarted service counts on from them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
import time
import urllib.request
from functools import partial

import grpc
import pytest

from cloud_trainer.fleet import service
from cloud_trainer.fleet.console import Console
from cloud_trainer.fleet.guard import QuotaExceeded, QuotaLimits, Quotas
from cloud_trainer.fleet.service import FleetServer, channel_credentials
from cloud_trainer.fleet.store import utc_day
from cloud_trainer.pki import issue
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import ServerProcess, cloud_settings, make_pki
from tests.support.peers import free_port
from tests.support.waits import until


@contextlib.asynccontextmanager
async def _gw1_fleet(tmp_path, quotas: Quotas | None = None):
    """An in-process fleet service (gRPC, mTLS, a PKI of its own) and a stub connected to it as agent gw1."""
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", quotas=quotas
    )
    await srv.start()
    creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            yield srv, rpc.FleetStub(ch)
    finally:
        await srv.stop()


async def test_an_agents_record_bytes_of_the_day_are_bounded_the_rest_wait_in_its_outbox(tmp_path):
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    budget = 20_000
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        quotas=Quotas(QuotaLimits(record_bytes_per_day=budget)),
    )
    await srv.start()
    boxes, ups = [], []
    try:
        for name, n in (("gw1", 40), ("gw2", 3)):  # gw1: 40 records of ~1 KB, twice its budget; gw2: a few
            ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / name)
            ob.open()
            for i in range(n):
                ob.append("result", {"i": i, "pad": "x" * 1000})
            ob.flush()
            boxes.append(ob)
            # batches of a few records, so that the budget is reached between batches
            up = Uplink(cloud_settings(pki, port, agent=name, batch_max_records=4, backoff_initial_s=60), ob)
            await up.start()
            ups.append(up)

        def stored(agent: str) -> int:
            return len(srv.store.records(agent, limit=1000))

        def refusals() -> int:
            return srv.quotas.snapshot("default")["refusals"].get("gw1:record_bytes", 0)

        def told() -> bool:  # the refusal reaches gw1's uplink after the service counted it
            return "record budget of 20000 bytes per UTC day spent" in (ups[0].status()["last_error"] or "")

        await until(
            lambda: refusals() >= 1 and stored("gw2") == 3 and told(),
            what="gw1 refused past its budget and told so, gw2 stored",
        )
        got = stored("gw1")
        assert 0 < got < 40
        today = srv.quotas.snapshot("default")["record_bytes_today"]["gw1"]
        assert today <= budget, today  # what was stored is within the budget
        assert boxes[0].stats()["depth"] == 40 - got  # the rest kept in gw1's outbox, nothing dropped
    finally:
        for up in ups:
            await up.stop()
        for ob in boxes:
            ob.close()
        await srv.stop()


def test_the_record_budget_is_per_utc_day_and_a_batch_refused_by_another_limit_spends_none_of_it():
    now = [86400.0 * 20000 + 100]
    q = Quotas(QuotaLimits(record_bytes_per_day=1000), clock=lambda: now[0])
    agent = ("acme", "gw1")
    q.take_payload(agent, 600)
    with pytest.raises(QuotaExceeded, match="record budget of 1000 bytes per UTC day spent"):
        q.take_payload(agent, 600)  # refused whole: nothing of it taken
    day = q.take_payload(agent, 400)
    q.give_payload(agent, 400, day)  # e.g. refused by the sample budget after: not stored, not spent
    q.take_payload(agent, 400)
    with pytest.raises(QuotaExceeded):
        q.take_payload(agent, 1)
    now[0] += 86400  # the next UTC day
    q.take_payload(agent, 1000)
    assert q.snapshot("acme")["record_bytes_today"] == {"gw1": 1000}


async def test_a_batch_its_tenants_quota_refuses_spends_none_of_the_agents_day_budgets_but_its_stored_part(
    tmp_path,
):
    """The tenant's day quota (counted in the store) refuses a batch after the agent's own day budgets took its
    bytes: its payload bytes were given back, its sample bytes not, so each retry (every 15-30 s, all day) spent
    the agent's sample budget again and, the tenant's quota raised, the agent stayed refused on its own budget
    until 00:00 UTC. And a batch written in ranges (SQLite, over 1 MiB) refused in a later range gave back the
    bytes of its stored first range too."""
    async with _gw1_fleet(tmp_path, Quotas(QuotaLimits(sample_bytes_per_day=250_000))) as (srv, stub):

        async def push(*records) -> str:
            batch = pb.RecordBatch(records=list(records))
            try:
                return f"stored {[a async for a in stub.PushRecords(iter([batch]), timeout=30)][0].stored}"
            except grpc.aio.AioRpcError as exc:
                return f"{exc.code().name}: {exc.details()}"

        def usage() -> tuple[int, int]:
            snap = srv.quotas.snapshot("default")
            return snap["record_bytes_today"].get("gw1", 0), snap["sample_bytes_today"].get("gw1", 0)

        img = b"s" * 100_000
        meta = b'{"model": "m"}'
        sample = pb.Record(
            seq=1,
            epoch=1,
            kind="sample",
            t=time.time(),
            payload=meta,
            sample=img,
            sample_sha256=hashlib.sha256(img).hexdigest(),
            sample_ext=".npy",
        )
        srv.store.set_quota("default", max_sample_bytes_per_day=50_000)
        for _ in range(4):  # the agent's own budget (250 KB) would have been spent at the third
            assert (await push(sample)).startswith(
                "RESOURCE_EXHAUSTED: tenant default: this batch (100000 bytes of samples)"
            )
        assert usage() == (0, 0)
        srv.store.set_quota("default", max_sample_bytes_per_day=0)  # raised: stored at once
        assert await push(sample) == "stored 1"
        assert usage() == (len(meta), len(img))
        # three records of 600 KB, each a range of its own: the quota trips in the second
        srv.store.set_quota("default", max_record_bytes_per_day=1_000_000)
        payload = json.dumps({"pad": "x" * 600_000}).encode()
        big = [pb.Record(seq=s, epoch=1, kind="result", t=time.time(), payload=payload) for s in (2, 3, 4)]
        assert "its first 1 records were stored" in await push(*big)
        assert srv.store.stats("gw1")["records"] == 2
        assert usage() == (len(meta) + len(payload), len(img))  # the stored record's bytes stay spent


@pytest.mark.parametrize("memo_s", [0.0, 600.0], ids=["exact-check", "spent-tenant-memo"])
async def test_a_partly_stored_batch_sent_again_charges_the_agent_for_the_stored_bytes_once(
    tmp_path, monkeypatch, memo_s
):
    """Three records of 600 KB (a range each, SQLite) under a tenant quota of 1 MB: the first range is stored, the
    second refused; the uplink sends the batch again every 15-30 s. Each resend kept the bytes of the first range
    (a duplicate then, stored by no resend) spent: the agent's record_bytes_today grew by 600 KB a resend with one
    record stored. Judged by the exact check in the transaction (the spent-tenant memo expired, as 15-30 s later)
    and by the memo (kept: the resend refused before the writer). A replay acknowledged charges nothing either:
    the agent's day budget counts what the store holds for it (agent_usage, what a restart starts it from)."""
    monkeypatch.setattr("cloud_trainer.fleet.store.SPENT_TTL_S", memo_s)
    async with _gw1_fleet(tmp_path, Quotas(QuotaLimits(record_bytes_per_day=10_000_000))) as (srv, stub):

        async def push(records) -> str:
            batch = pb.RecordBatch(records=records)
            try:
                ack = [a async for a in stub.PushRecords(iter([batch]), timeout=30)][0]
                return f"stored {ack.stored} duplicates {ack.duplicates}"
            except grpc.aio.AioRpcError as exc:
                return f"{exc.code().name}: {exc.details()}"

        def spent() -> int:
            return srv.quotas.snapshot("default")["record_bytes_today"].get("gw1", 0)

        def held() -> int:  # the agent's payload bytes the store holds today
            return srv.store.agent_usage("gw1", int(time.time() // 86400))[0]

        srv.store.set_quota("default", max_record_bytes_per_day=1_000_000)
        payload = json.dumps({"pad": "x" * 600_000}).encode()
        big = [pb.Record(seq=s, epoch=1, kind="result", t=time.time(), payload=payload) for s in (1, 2, 3)]
        for _ in range(4):  # the first send and 3 resends
            assert "would pass the tenant's quota of 1000000 bytes of records" in await push(big)
            assert srv.store.stats("gw1")["records"] == 1
            assert spent() == held() == len(payload)
        srv.store.set_quota("default", max_record_bytes_per_day=0)  # raised: the rest is stored
        assert await push(big) == "stored 2 duplicates 1"
        assert await push(big) == "stored 0 duplicates 3"  # a replay (its acknowledgement lost)
        assert spent() == held() == 3 * len(payload)


async def test_a_damaged_sample_not_stored_is_not_charged_to_the_agents_day_budgets(tmp_path):
    """A batch of a result and a sample whose bytes do not hash to the digest the agent gave (damaged: not stored,
    not acknowledged, sent again by the agent): its payload and sample bytes were taken and given back only when
    the same batch held a duplicate, so each resend spent the agent's sample budget for bytes never stored."""
    async with _gw1_fleet(tmp_path) as (srv, stub):
        payload = json.dumps({"i": 1}).encode()
        sample = b"\x89PNG" + b"x" * 5000
        for n in range(1, 3):  # sent twice, as the agent sends what was not acknowledged again
            batch = pb.RecordBatch(
                records=[
                    pb.Record(seq=2 * n - 1, epoch=1, kind="result", t=time.time(), payload=payload),
                    pb.Record(
                        seq=2 * n,
                        epoch=1,
                        kind="sample",
                        t=time.time(),
                        payload=payload,
                        sample=sample,
                        sample_sha256="0" * 64,
                        sample_ext=".png",
                    ),
                ]
            )
            [a async for a in stub.PushRecords(iter([batch]), timeout=30)]
        snap = srv.quotas.snapshot("default")
        held = srv.store.agent_usage("gw1", int(time.time() // 86400))
        assert srv.store.stats("gw1")["records"] == 2  # the two results
        assert snap["record_bytes_today"].get("gw1", 0) == held[0] == 2 * len(payload)
        assert snap["sample_bytes_today"].get("gw1", 0) == held[1] == 0


async def test_a_call_the_agent_cancels_while_the_store_writes_charges_only_what_the_store_then_stored(
    tmp_path, monkeypatch
):
    """The agent cancels a PushRecords call not acknowledged within 60 s (a store stalled), while the store's worker
    thread goes on: to find the batch a replay of what it stored, to fail, or to store it. What that thread did not
    newly store is given back when it ends: the cancellation skipped every give-back, so during a stall each retry
    was charged and the agent stayed refused on its own budget until 00:00 UTC after the store recovered (a review
    measured 200,000 bytes charged against 100,000 stored). A write the tenant's quota refuses is counted as the
    agent's refusal (tenant_day), as an answered call's is: it was not."""
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        quotas=Quotas(QuotaLimits(record_bytes_per_day=10_000_000)),
    )
    await srv.start()
    real = srv.store.ingest
    entered, release = threading.Event(), threading.Event()
    fail = [False]
    parse = service._records

    def stall() -> None:
        entered.set()
        release.wait(60)

    def held(*args, **kwargs):  # the store stalled until released, then as it is (or failing)
        stall()
        if fail[0]:
            raise OSError("disk full")
        return real(*args, **kwargs)

    def held_parse(b):  # the batch's records being read (the worker threads all taken by a stalled store)
        stall()
        return parse(b)

    creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
    payload, t0 = b"{}" + b" " * 99_998, time.time()

    def budget_and_usage() -> tuple[int, int]:
        snap = srv.quotas.snapshot("default")
        return snap["record_bytes_today"].get("gw1", 0), srv.store.agent_usage("gw1", utc_day())[0]

    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            stub = rpc.FleetStub(ch)

            def batch(seq: int) -> pb.RecordBatch:
                return pb.RecordBatch(
                    records=[pb.Record(seq=seq, epoch=1, kind="result", t=t0, payload=payload)]
                )

            acks = [a async for a in stub.PushRecords(iter([batch(1)]), timeout=30)]
            assert acks[0].stored == 1 and budget_and_usage() == (100_000, 100_000)
            srv.store.ingest = held  # type: ignore[method-assign]
            # the replay (a duplicate), a failed write, a new record stored, one the tenant's quota refuses (counted
            # as its refusal, as an answered call's is: it was not), one cancelled before the store ran
            for seq, where, stored in (
                (1, "ok", 1),
                (2, "fails", 1),
                (3, "ok", 2),
                (4, "refused", 2),
                (5, "reading", 2),
            ):
                entered.clear()
                release.clear()
                fail[0] = where == "fails"
                srv.store.set_quota("default", max_record_bytes_per_day=250_000 if where == "refused" else 0)
                if where == "reading":
                    srv.store.ingest = real  # type: ignore[method-assign]
                    monkeypatch.setattr(service, "_records", held_parse)
                call = stub.PushRecords(iter([batch(seq)]), timeout=60)
                reading = asyncio.ensure_future(call.read())
                await until(entered.is_set, what="the store writing the batch")
                call.cancel()  # the agent's ack timeout
                with pytest.raises(asyncio.CancelledError):
                    await reading
                await until(
                    lambda: srv.quotas.snapshot("default")["streams"].get("gw1", 0) == 0,
                    what="the service's call cancelled while the store writes",
                )
                release.set()
                await until(  # charged as stored, once the store's thread has ended
                    lambda n=stored * 100_000: budget_and_usage() == (n, n),
                    what=f"seq {seq} charged as stored",
                )
                await until(
                    lambda r=int(seq >= 4): (
                        srv.quotas.snapshot("default")["refusals"].get("gw1:tenant_day", 0) == r
                    ),
                    what=f"seq {seq}'s refusals counted",
                )
    finally:
        release.set()
        await srv.stop()


class _StalledTenant:
    """The store's writes of one tenant's batches (or of each of several tenants) held until ``release`` (a slow blob
    store or database for it), the other tenants' written as they come; ``entered``: the agents whose write the
    store holds or held."""

    def __init__(self, srv: FleetServer, tenant: str | list[str]) -> None:
        self.real, self.tenants = srv.store.ingest, {tenant} if isinstance(tenant, str) else set(tenant)
        self.entered: list[str] = []
        self.release = threading.Event()
        srv.store.ingest = self.ingest  # type: ignore[method-assign]

    def ingest(self, agent, records, *, tenant, **kw):
        if tenant in self.tenants:
            self.entered.append(agent)
            self.release.wait(60)
        return self.real(agent, records, tenant=tenant, **kw)


def _one_record(seq: int) -> pb.RecordBatch:
    return pb.RecordBatch(records=[pb.Record(seq=seq, epoch=1, kind="result", t=time.time(), payload=b"{}")])


async def _push_or_cancel(srv: FleetServer, stalled: _StalledTenant, stub, agent: str, seq: int) -> str:
    """A call of ``agent``'s: its refusal, or, once the store holds its batch, cancelled as the agent's 60-s ack
    timeout cancels it (the service's call ended, its write going on)."""
    before = len(stalled.entered)
    call = stub.PushRecords(iter([_one_record(seq)]), timeout=60)
    reading = asyncio.ensure_future(call.read())
    await until(
        lambda: reading.done() or len(stalled.entered) > before, what=f"{agent}'s batch written or refused"
    )
    if reading.done():
        try:
            return f"answered {await reading}"
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    await until(
        lambda: srv.quotas.snapshot("default")["streams"].get(agent, 0) == 0,
        what=f"{agent}'s call ended while the store writes",
    )
    return "cancelled in the store"


async def test_calls_cancelled_while_a_tenants_store_writes_stall_hold_no_thread_another_tenant_needs(
    tmp_path,
):
    """The store stalls for tenant default; its agents' calls end unanswered (their 60-s ack timeout) while the
    store's threads go on. Each call's tenant place and stream were given back at its end, so each retry held one
    more worker thread: 7 retries of one agent held all 6 (min(32, cpus + 4)), and another tenant's heartbeat and
    batch waited for the stalled tenant's store (a probe: DEADLINE_EXCEEDED after 5 s each). Now an agent whose
    cancelled write still runs is refused at once (RESOURCE_EXHAUSTED, saying so), the write keeps its tenant's
    place (2 at once) until its thread ends, the tenant's third agent waits for one on the loop, the other tenant
    is served meanwhile, and nothing is charged or stored twice once the store goes on."""
    async with _gw1_fleet(tmp_path, Quotas(QuotaLimits(record_bytes_per_day=10_000_000))) as (srv, stub1):
        pki = tmp_path / "pki"
        issue(pki, "gw3", "agent", pki / "agents" / "gw3")
        issue(pki, "gw-a", "agent", pki / "agents" / "gw-a", tenant="acme")
        stalled = _StalledTenant(srv, "default")

        def channel(agent: str) -> grpc.aio.Channel:
            creds = channel_credentials(
                pki / "ca.pem", pki / "agents" / f"{agent}.pem", pki / "agents" / f"{agent}.key"
            )
            return grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", creds)

        async with channel("gw2") as c2, channel("gw3") as c3, channel("gw-a") as ca:
            stub2, stub3, acme = rpc.FleetStub(c2), rpc.FleetStub(c3), rpc.FleetStub(ca)
            try:
                assert await _push_or_cancel(srv, stalled, stub1, "gw1", 1) == "cancelled in the store"
                assert await _push_or_cancel(srv, stalled, stub2, "gw2", 1) == "cancelled in the store"
                for _ in range(6):  # gw1's retries: more than the worker threads
                    refused = await _push_or_cancel(srv, stalled, stub1, "gw1", 1)
                    assert refused.startswith(
                        "RESOURCE_EXHAUSTED: agent 'gw1': the fleet store is still writing"
                    )
                    assert "nothing of this batch was stored: send it again later" in refused
                # the tenant's third agent waits on the loop for one of its places, holding no thread
                third = stub3.PushRecords(iter([_one_record(1)]), timeout=60)
                waiting = asyncio.ensure_future(third.read())
                # another tenant is served meanwhile
                await acme.Heartbeat(pb.HeartbeatRequest(), timeout=30)
                acks = [a async for a in acme.PushRecords(iter([_one_record(1)]), timeout=30)]
                assert acks[0].stored == 1 and srv.store.stats("gw-a", tenant="acme")["records"] == 1
                assert stalled.entered == ["gw1", "gw2"] and not waiting.done()
                assert srv.quotas.snapshot("default")["refusals"]["gw1:store_writing"] == 6
            finally:
                stalled.release.set()
            assert (await waiting).stored == 1

            async def acked_once_written(stub) -> bool:  # the agent sending its batch again after its backoff
                try:
                    acks = [a async for a in stub.PushRecords(iter([_one_record(1)]), timeout=30)]
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                    return False
                return (acks[0].stored, acks[0].duplicates) == (0, 1)  # stored once, by the cancelled call

            for agent, stub in (("gw1", stub1), ("gw2", stub2)):
                await until(partial(acked_once_written, stub), what=f"{agent}'s batch acknowledged")
                assert srv.store.stats(agent)["records"] == 1
                used = srv.store.agent_usage(agent, utc_day())[0]
                assert srv.quotas.snapshot("default")["record_bytes_today"][agent] == used == 2


async def test_a_call_cancelled_while_its_write_waits_for_a_store_thread_is_not_taken_for_a_write_in_the_store(
    tmp_path, monkeypatch
):
    """The store's writer threads (STORE_WRITERS) are shared by every tenant: once other writes stalled hold them
    all, a batch's write waits in the pool's queue. A call cancelled then (the agent's 60-s ack timeout) was taken
    for a write still running in the store: the agent was refused "the fleet store is still writing ..." until
    some other stalled write ended (found in review: 4 stalled tenants and a healthy one). A write that never
    started is now cancelled with its call: nothing charged, the agent's next batch written when a thread frees."""
    monkeypatch.setattr(service, "STORE_WRITERS", 1)  # one thread: gw1's stalled write holds it
    async with _gw1_fleet(tmp_path, Quotas(QuotaLimits(record_bytes_per_day=10_000_000))) as (srv, stub1):
        pki = tmp_path / "pki"
        stalled = _StalledTenant(srv, "default")
        creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw2.pem", pki / "agents" / "gw2.key")
        async with grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", creds) as c2:
            stub2 = rpc.FleetStub(c2)
            try:
                assert await _push_or_cancel(srv, stalled, stub1, "gw1", 1) == "cancelled in the store"
                call = stub2.PushRecords(iter([_one_record(1)]), timeout=60)
                reading = asyncio.ensure_future(call.read())
                await until(lambda: srv.fleet._writers.queued() == 1, what="gw2's write queued")
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await reading
                await until(
                    lambda: srv.quotas.snapshot("default")["streams"].get("gw2", 0) == 0,
                    what="gw2's call ended with its write queued",
                )
                assert srv.quotas.snapshot("default")["record_bytes_today"].get("gw2", 0) == 0
                again = asyncio.ensure_future(
                    _acks(stub2.PushRecords(iter([_one_record(1)]), timeout=60))
                )  # was: RESOURCE_EXHAUSTED "the fleet store is still writing" at once
                await until(lambda: srv.fleet._writers.queued() >= 1 or again.done(), what="gw2 again")
                assert not again.done(), again.result()
            finally:
                stalled.release.set()
            assert (await again)[0].stored == 1
            assert stalled.entered == ["gw1", "gw2"]  # gw2: its retry's write alone (the first never ran)
            assert srv.quotas.snapshot("default")["refusals"].get("gw2:store_writing", 0) == 0
            used = srv.store.agent_usage("gw2", utc_day())[0]
            assert srv.quotas.snapshot("default")["record_bytes_today"]["gw2"] == used == 2


async def _acks(call) -> list:
    return [a async for a in call]


async def test_tenants_stalled_in_the_store_leave_another_tenant_a_store_writer(tmp_path):
    """The store's writer threads are shared by every tenant: 4 tenants stalled in the store (a lock of their rows
    held, their blobs on a slow disk), 2 writes each, held all 8 (STORE_WRITERS), and a healthy tenant's batches
    waited until one of those writes ended (measured against `cloud-trainer serve`: DEADLINE_EXCEEDED after 10 s,
    the agent's batch never stored). A write of a tenant with none running now gets a thread of its own past them
    (up to STORE_WRITERS_MOST): the healthy tenant's batches are stored while the others stay stalled."""
    async with _gw1_fleet(tmp_path) as (srv, _):
        pki = tmp_path / "pki"
        slow = [f"slow{t}" for t in range(4)]
        agents = [f"s{t}-{i}" for t in range(4) for i in range(2)]
        for a in agents:
            issue(pki, a, "agent", pki / "agents" / a, tenant=slow[int(a[1])])
        issue(pki, "h1", "agent", pki / "agents" / "h1", tenant="healthy")
        stalled = _StalledTenant(srv, slow)
        assert service.STORE_WRITERS == len(agents)
        async with contextlib.AsyncExitStack() as stack:
            stubs = {}
            for a in [*agents, "h1"]:
                creds = channel_credentials(
                    pki / "ca.pem", pki / "agents" / f"{a}.pem", pki / "agents" / f"{a}.key"
                )
                ch = await stack.enter_async_context(grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", creds))
                stubs[a] = rpc.FleetStub(ch)
            calls = []
            try:
                for a in agents:
                    calls.append(
                        asyncio.ensure_future(_acks(stubs[a].PushRecords(iter([_one_record(1)]), timeout=60)))
                    )
                await until(
                    lambda: len(stalled.entered) == len(agents), what="the slow tenants' 8 writes stalled"
                )
                for seq in (1, 2):  # the second once the first ended: the tenant has none running again
                    acks = await _acks(stubs["h1"].PushRecords(iter([_one_record(seq)]), timeout=30))
                    assert acks[0].stored == 1
                assert srv.store.stats("h1", tenant="healthy")["records"] == 2
                assert not any(c.done() for c in calls)  # the slow tenants' writes still held by their store
            finally:
                stalled.release.set()
            assert [(await c)[0].stored for c in calls] == [1] * len(agents)


async def test_an_agents_uplink_refused_while_its_cancelled_write_runs_keeps_its_records_and_sends_them_later(
    tmp_path,
):
    """The agent's own uplink and outbox: a call of gw1's ended unanswered while the store holds its batch; the
    uplink's next batches are refused at once (RESOURCE_EXHAUSTED: it backs off, saying why, the records kept in
    its outbox) and stored once the store's write has ended."""
    async with _gw1_fleet(tmp_path) as (srv, stub):
        stalled = _StalledTenant(srv, "default")
        ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "gw1")
        ob.open()
        up = None
        try:
            assert await _push_or_cancel(srv, stalled, stub, "gw1", 1) == "cancelled in the store"
            for i in range(3):
                ob.append("result", {"i": i})
            ob.flush()
            up = Uplink(cloud_settings(tmp_path / "pki", srv.port), ob)
            await up.start()
            await until(
                lambda: (
                    srv.quotas.snapshot("default")["refusals"].get("gw1:store_writing", 0) >= 1
                    and "the fleet store is still writing" in (up.status()["last_error"] or "")
                ),
                what="the uplink refused while the cancelled call's write runs",
            )
            assert ob.stats()["depth"] == 3 and stalled.entered == ["gw1"]
            stalled.release.set()
            await until(lambda: ob.stats()["depth"] == 0, what="the outbox drained")
            assert (
                len(srv.store.records("gw1", limit=10)) == 4
            )  # the cancelled call's record and the outbox's
        finally:
            stalled.release.set()
            if up is not None:
                await up.stop()
            ob.close()


async def test_an_agent_refused_while_its_cancelled_write_runs_is_shown_at_its_tenants_api_quotas(tmp_path):
    """A store write that never ends refuses its agent (``store_writing``) until the service restarts, and the
    console's /api/quotas showed a count of refusals only: not that the write still runs, nor since when. Its
    tenant's view now names the agent, its writes still running and for how long; another tenant's names none."""
    async with _gw1_fleet(tmp_path) as (srv, stub):
        stalled = _StalledTenant(srv, "default")
        consoles = {t: Console(srv, tenant=t) for t in ("default", "acme")}
        for c in consoles.values():
            c.start()

        def quotas(t: str) -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{consoles[t].port}/api/quotas", timeout=10) as r:
                return json.loads(r.read())

        try:
            assert await _push_or_cancel(srv, stalled, stub, "gw1", 1) == "cancelled in the store"
            refused = await _push_or_cancel(srv, stalled, stub, "gw1", 2)
            assert refused.startswith("RESOURCE_EXHAUSTED: agent 'gw1': the fleet store is still writing")
            default, acme = (
                await asyncio.to_thread(quotas, "default"),
                await asyncio.to_thread(quotas, "acme"),
            )
            assert default["refusals"]["gw1:store_writing"] == 1
            assert (
                list(default["store_writing"]) == ["gw1"] and default["store_writing"]["gw1"]["writes"] == 1
            )
            assert default["store_writing"]["gw1"]["for_s"] >= 0
            assert acme["store_writing"] == {}
        finally:
            stalled.release.set()
            for c in consoles.values():
                c.stop()
        await until(lambda: srv.fleet.store_writing("default") == {}, what="the write ended, shown no more")


async def test_an_agents_newer_write_left_running_is_shown_since_its_own_call_ended_not_the_older_ones(
    tmp_path,
):
    """Two calls of one agent (two streams) end unanswered while the store holds both their batches, the second
    some seconds after the first; the older write ends first. ``for_s`` (and the refusals' "ended unanswered ... s
    ago") went on counting from the older call's end, which no longer runs: the newer's own end is counted now."""
    async with _gw1_fleet(tmp_path) as (srv, stub):
        real, gates, entered = srv.store.ingest, {1: threading.Event(), 2: threading.Event()}, []

        def ingest(agent, records, **kw):  # each batch held until its own gate opens
            entered.append(records[0]["seq"])
            gates[records[0]["seq"]].wait(60)
            return real(agent, records, **kw)

        srv.store.ingest = ingest  # type: ignore[method-assign]

        def writing() -> dict:
            return srv.fleet.store_writing("default").get("gw1", {})

        calls = [stub.PushRecords(iter([_one_record(seq)]), timeout=60) for seq in (1, 2)]
        reads = [asyncio.ensure_future(c.read()) for c in calls]
        try:
            await until(lambda: sorted(entered) == [1, 2], what="both batches in the store")
            calls[0].cancel()  # the older call ends unanswered (the agent's ack timeout)
            await until(lambda: writing().get("writes") == 1, what="the older call's write outliving it")
            older = time.monotonic()
            await until(lambda: time.monotonic() - older >= 2.0, what="2 s between the two calls' ends")
            newer = time.monotonic()
            calls[1].cancel()
            await until(lambda: writing().get("writes") == 2, what="the newer call's write outliving it")
            gates[1].set()  # the older write ends, the newer goes on
            await until(lambda: writing().get("writes") == 1, what="the older write ended")
            shown, at = writing(), time.monotonic()  # (read on the loop: nothing ends between the two)
            # was: counted from the older call's end, 2 s or more before the newer's
            assert shown["for_s"] <= round(at - newer, 1) + 0.1, (shown, at - newer, at - older)
            with pytest.raises(grpc.aio.AioRpcError) as refused:  # the agent's next batch, refused at once
                await stub.PushRecords(iter([_one_record(3)]), timeout=30).read()
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            ago = float(refused.value.details().split("ended unanswered ")[1].split(" s ago")[0])
            assert ago <= time.monotonic() - newer + 0.5, (refused.value.details(), time.monotonic() - newer)
        finally:
            for g in gates.values():
                g.set()
        for r in reads:
            with pytest.raises(asyncio.CancelledError):
                await r
        await until(lambda: srv.fleet.store_writing("default") == {}, what="both writes ended, shown no more")


async def _push_each(pki, port: int, seqs) -> list[str]:
    """One batch of one ~30-KB record per seq, as gw1: "stored" or the refusal's status code, each."""
    creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
    out = []
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
        stub = rpc.FleetStub(ch)
        for seq in seqs:
            payload = json.dumps({"pad": "x" * 30_000}).encode()
            batch = pb.RecordBatch(
                records=[pb.Record(seq=seq, kind="result", t=time.time(), epoch=1, payload=payload)]
            )
            try:
                acks = [a async for a in stub.PushRecords(iter([batch]), timeout=10)]
                out.append("stored" if acks[0].stored else "not stored")
            except grpc.aio.AioRpcError as exc:
                out.append(exc.code().name)
    return out


async def test_an_agents_record_bytes_of_the_day_are_still_counted_after_the_service_restarts(tmp_path):
    """A real `cloud-trainer serve --record-bytes-per-day 100000`: gw1 stores 3 records of 30 KB, the 4th is
    refused; the service restarts (kill -9) and gw1's next record is refused too. The budget was counted in the
    service's memory only: the restarted service stored 3 more (180 KB that day against a budget of 100 KB), and
    as many again after each restart."""
    pki = make_pki(tmp_path / "pki")
    server = ServerProcess(tmp_path / "cloud", pki, args=["--record-bytes-per-day", "100000"]).start()
    try:
        assert await _push_each(pki, server.port, [1, 2, 3, 4]) == ["stored"] * 3 + ["RESOURCE_EXHAUSTED"]
        server.kill()
        server.start()
        assert await _push_each(pki, server.port, [5, 6]) == ["RESOURCE_EXHAUSTED"] * 2
    finally:
        server.stop()


def test_bytes_taken_before_00_00_utc_and_given_back_after_credit_nothing_to_the_new_day():
    """A batch taken from the agent's day budgets before 00:00 UTC and refused after it (its tenant's quota, a store
    that failed) gave its bytes back to the new day's entry: the agent's budgets of the new day gained bytes it
    never spent there (here 600 of payload and 300 of samples, 0 counted instead of 300 and 150)."""
    now = [86400.0 * 20001 - 1]
    q = Quotas(QuotaLimits(record_bytes_per_day=1000, sample_bytes_per_day=500), clock=lambda: now[0])
    agent = ("acme", "gw1")
    day = q.take_payload(agent, 600)
    assert q.take_sample(agent, 300) == day
    now[0] += 2  # 00:00 UTC passes while the batch is in the store
    assert q.take_payload(agent, 300) == day + 1 and q.take_sample(agent, 150) == day + 1
    q.give_payload(agent, 600, day)
    q.give_sample(agent, 300, day)
    snap = q.snapshot("acme")
    assert snap["record_bytes_today"] == {"gw1": 300} and snap["sample_bytes_today"] == {"gw1": 150}
    with pytest.raises(QuotaExceeded, match="record budget"):
        q.take_payload(agent, 701)
    q.give_payload(agent, 300, day + 1)  # a give-back of the day taken from: given
    assert q.snapshot("acme")["record_bytes_today"] == {"gw1": 0}


def test_the_day_budgets_start_from_what_the_store_holds_for_the_agent_that_day():
    now = [86400.0 * 20000 + 100]
    q = Quotas(QuotaLimits(record_bytes_per_day=1000, sample_bytes_per_day=500), clock=lambda: now[0])
    agent = ("acme", "gw1")
    assert not q.seeded(agent, q.day())
    q.take_payload(agent, 100)
    q.seed_day(agent, q.day(), 900, 450)  # stored today before a restart (or by another replica)
    assert q.seeded(agent, q.day())
    with pytest.raises(QuotaExceeded, match="record budget"):
        q.take_payload(agent, 101)
    q.take_payload(agent, 100)
    with pytest.raises(QuotaExceeded, match="sample budget"):
        q.take_sample(agent, 51)
    now[0] += 86400  # the next UTC day: read from the store again, counted from there
    assert not q.seeded(agent, q.day())
    q.take_payload(agent, 1000)
