# ruff: noqa: F811  (pytest fixtures imported from test_fleet_tenants are parameters here)
"""Malformed messages from an agent on a real fleet service (gRPC, mTLS, SQLite): a uint64 the stores cannot hold
(above 2^63-1) or a sample whose metadata is not a JSON object is INVALID_ARGUMENT naming the record or field,
never UNKNOWN (which an agent retries forever); an agent's own account of a loss with values out of range is
stored without its bad ranges. One agent's state report can never stop other agents' (of any tenant) reports
from being written: the servicer refuses it on the stream, and the stream hub writes a failed batch one report
at a time, keeping what failed for the next flush."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time

import grpc
import pytest

from cloud_trainer.fleet import service as service_module
from cloud_trainer.fleet import store as store_module
from cloud_trainer.fleet import stream as fleet_stream
from cloud_trainer.fleet.store import SQLiteStore
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from protocols.refusals import EPOCHS_BOUND, REFUSAL_KEY
from tests.integration.test_fleet_tenants import _code, admin, cloud, world  # noqa: F401  (fixtures)

IA = grpc.StatusCode.INVALID_ARGUMENT
U64 = 2**64 - 1


def _batch(**kw) -> pb.RecordBatch:
    return pb.RecordBatch(
        records=[pb.Record(**{"seq": 5, "kind": "result", "t": time.time(), "payload": b"{}", **kw})]
    )


async def test_records_the_stores_cannot_hold_are_invalid_argument_naming_them(cloud):
    srv, ch, _, _ = cloud
    gw = rpc.FleetStub(ch("acme", "gw-a"))
    x = b"x"
    cases = [
        (_batch(seq=U64), f"seq {U64} is above {2**63 - 1}"),
        (_batch(seq=2**63), f"seq {2**63} is above"),
        (_batch(epoch=2**63), f"epoch {2**63} is above"),
        (
            _batch(
                seq=8, kind="sample", payload=b"[1]", sample=x, sample_sha256=hashlib.sha256(x).hexdigest()
            ),
            "sample seq 8): its payload must be a JSON object",
        ),
        (
            _batch(seq=9, kind="sample", payload=b"\xff{", sample=x),
            "sample seq 9): its payload must be a JSON object",
        ),
    ]
    before = srv.store.stats("gw-a", tenant="acme")["records"]
    for batch, why in cases:
        code, details = await _code(gw.PushRecords(iter([batch]), timeout=20).read())
        assert code == IA and why in details and "nothing of the batch was stored" in details, details
    assert srv.store.stats("gw-a", tenant="acme")["records"] == before
    assert srv.blobs.for_tenant("acme").exists(hashlib.sha256(x).hexdigest()) is False
    # the largest values the stores hold are accepted
    acks = [a async for a in gw.PushRecords(iter([_batch(seq=2**63 - 1, epoch=2**63 - 1)]), timeout=20)]
    assert (acks[0].stored, list(acks[0].seqs)) == (1, [2**63 - 1])


def _sample_batch(seq: int, meta) -> pb.RecordBatch:
    x = b"x%d" % seq
    payload = json.dumps(meta).encode()
    return _batch(
        seq=seq, kind="sample", payload=payload, sample=x, sample_sha256=hashlib.sha256(x).hexdigest()
    )


async def test_sample_metadata_the_columns_cannot_hold_is_invalid_argument_naming_the_field(cloud):
    """A sample's label as a list (or a model as an object, a number, a 10-MB string) passed the checks and then
    failed at the database write: the agent got UNKNOWN ("sqlite3.ProgrammingError: type 'list' is not
    supported"), retried the batch forever, and every record behind it was blocked."""
    srv, ch, _, _ = cloud
    gw = rpc.FleetStub(ch("acme", "gw-a"))
    cases = [
        (
            _sample_batch(8, {"label": ["a"]}),
            "sample seq 8): its metadata field 'label' must be a string, not list",
        ),
        (_sample_batch(9, {"model": {"a": 1}}), "field 'model' must be a string, not dict"),
        (_sample_batch(10, {"verdict": 1}), "field 'verdict' must be a string, not int"),
        (
            _sample_batch(11, {"label": "y" * 10_000_000}),
            "field 'label' is 10000000 characters long, at most 1024",
        ),
        (_sample_batch(12, {"reason": "a\x00b"}), "field 'reason' must not contain NUL"),
        (_batch(seq=13, t=float("nan")), "record 0 (seq 13): t nan is not a finite number"),
    ]
    before = srv.store.stats("gw-a", tenant="acme")["records"]
    for batch, why in cases:
        code, details = await _code(gw.PushRecords(iter([batch]), timeout=20).read())
        assert code == IA and why in details and "nothing of the batch was stored" in details, details
    assert srv.store.stats("gw-a", tenant="acme")["records"] == before
    acks = [
        a async for a in gw.PushRecords(iter([_sample_batch(14, {"label": None, "model": "m"})]), timeout=20)
    ]
    assert acks[0].stored == 1


async def test_an_agent_drops_only_the_sample_with_list_metadata_and_the_records_behind_it_arrive(
    cloud, world
):
    """The real agent uplink: the refused sample is dropped (counted ``refused``), never retried forever."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox
    from edge_agent.uplink.client import Uplink
    from tests.support.fleet import cloud_settings
    from tests.support.waits import until

    srv, _, _, port = cloud
    _, pki, _, _ = world
    ob = Outbox(OutboxSettings(commit_interval_ms=5), srv.data.parent / "agent")
    ob.open()
    for i in range(3):
        ob.append("result", {"i": i})
    bad = ob.append("sample", {"label": ["a"], "model": "m"}, sample=b"png-ish", sample_ext="png")
    for i in range(3, 6):
        ob.append("result", {"i": i})
    ob.flush()
    up = Uplink(cloud_settings(pki, port), ob)  # the default tenant's gw1
    await up.start()
    try:
        # the uplink counts the refusal after the outbox dropped the record: depth 0 alone can come first
        await until(
            lambda: ob.stats()["depth"] == 0 and up.refused > 0,
            what="the outbox to drain past the refused sample, counted",
        )
        recs = srv.store.records("gw1", limit=100)
        assert sorted(
            r["payload"]["i"] for r in recs if r["kind"] == "result" and "i" in r["payload"]
        ) == list(range(6))
        assert bad not in [r["seq"] for r in recs] and up.refused == 1
        assert dict(ob.dropped_total) == {"refused:sample": 1}
    finally:
        await up.stop()
        ob.close()


async def test_an_agent_whose_data_folder_is_not_kept_delivers_every_starts_records_past_the_epoch_bound(
    cloud, world, monkeypatch
):
    """An agent in a container whose data folder is not a volume opens an epoch at each start: past
    ``EPOCHS_PER_WINDOW`` (lowered here) its new outbox's records were refused RESOURCE_EXHAUSTED, then lost with the
    folder at the next restart. Each start's records are stored, and the epochs it opened counted."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox
    from edge_agent.uplink.client import Uplink
    from tests.support.fleet import cloud_settings
    from tests.support.waits import until

    monkeypatch.setattr(store_module, "EPOCHS_PER_WINDOW", 1)
    srv, _, _, port = cloud
    _, pki, _, _ = world
    for life in range(3):  # three starts, each on an empty data folder
        ob = Outbox(OutboxSettings(commit_interval_ms=5), srv.data.parent / f"agent-{life}")
        ob.open()
        for i in range(2):
            ob.append("result", {"life": life, "i": i})
        ob.flush()
        up = Uplink(cloud_settings(pki, port), ob)  # the default tenant's gw1
        await up.start()
        try:
            await until(lambda ob=ob: ob.stats()["depth"] == 0, what=f"start {life}'s records acknowledged")
        finally:
            await up.stop()
            ob.close()
    recs = srv.store.records("gw1", kind="result", limit=100)
    assert sorted((r["payload"]["life"], r["payload"]["i"]) for r in recs if "life" in r["payload"]) == [
        (life, i) for life in range(3) for i in range(2)
    ]
    assert srv.store.stats("gw1")["epochs_24h"] >= 2
    from cloud_trainer.fleet.console import Console  # shown where the tenant sees the agent

    assert {a["id"]: a["epochs_past_bound"] for a in Console(srv).agents()}["gw1"] >= 1


async def test_a_store_that_fails_a_batch_is_unavailable_never_unknown(cloud, monkeypatch):
    """A write the store fails for another reason (disk full, database down): UNAVAILABLE with a plain reason
    (the agent keeps the batch and sends it again), not UNKNOWN with the database's exception."""
    srv, ch, _, _ = cloud

    def ingest(*a, **kw):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(srv.store, "ingest", ingest)
    code, details = await _code(
        rpc.FleetStub(ch("acme", "gw-a")).PushRecords(iter([_batch()]), timeout=20).read()
    )
    assert code == grpc.StatusCode.UNAVAILABLE and "could not write this batch" in details, (code, details)


async def test_a_loss_event_with_values_out_of_range_is_stored_without_its_bad_ranges(cloud):
    srv, ch, _, _ = cloud
    gw = rpc.FleetStub(ch("acme", "gw-a"))
    evt = {"kind": "outbox_budget", "epoch": 0, "ranges": [[2, 3], [1, 2**64], ["a", 4], [5], 7]}
    acks = [
        a async for a in gw.PushRecords(iter([_batch(seq=9, kind="event", payload=json.dumps(evt).encode())]))
    ]
    assert acks[0].stored == 1
    for bad in (
        {"kind": "outbox_budget", "epoch": 2**64, "ranges": [[2, 3]]},
        {"kind": "outbox_corrupt", "previous_epoch": "x"},
    ):
        acks = [
            a
            async for a in gw.PushRecords(
                iter([_batch(seq=10 + len(bad), kind="event", payload=json.dumps(bad).encode())])
            )
        ]
        assert acks[0].stored == 1
    gaps = srv.store.gaps("gw-a", tenant="acme")
    assert {"epoch": 0, "first": 2, "last": 3, "cause": "budget"} in gaps
    assert all(g["last"] < 2**63 and g["epoch"] < 2**63 for g in gaps)


async def test_one_agents_account_of_its_losses_is_bounded_and_its_holes_still_show(cloud, monkeypatch):
    """An agent's loss events are one gaps row per range, rows no quota counts: one 6.4-MB event of 200,000 ranges
    held the store's one writer for 6 s (every tenant's batches behind it) and wrote 47 MB. The store keeps at most
    2,000 ranges of an event (the agent's outbox sends no more), a write's and an agent's bounds (lowered here), and
    the seqs of the ranges it did not keep still show as missing, cause unknown. Past the agent's bound its oldest
    ranges make room: a lifetime bound showed every loss a gateway told after it (hours of one outage whose drops
    are one range per record between kept ones) as unknown."""
    monkeypatch.setattr(store_module, "LOSS_ROWS_PER_WRITE", 3000)
    monkeypatch.setattr(store_module, "LOSS_ROWS_PER_AGENT", 4000)
    srv, ch, _, _ = cloud
    gw = rpc.FleetStub(ch("acme", "gw-a"))

    def loss(seq: int, first: int) -> pb.Record:  # 5,000 one-seq ranges every other seq from ``first``
        evt = {"kind": "outbox_budget", "epoch": 7, "ranges": [[first + 2 * i] * 2 for i in range(5000)]}
        return pb.Record(seq=seq, epoch=7, kind="event", t=time.time(), payload=json.dumps(evt).encode())

    def held() -> int:
        with sqlite3.connect(srv.store.path) as db:
            return db.execute(
                "SELECT COUNT(*) FROM gaps WHERE tenant = 'acme' AND agent = 'gw-a'"
            ).fetchone()[0]

    # seqs 1 and 40,000 of epoch 7 stored: the losses the events tell lie in the hole between
    batches = [[loss(1, 2), loss(40_000, 10_002)], [loss(40_001, 20_002)], [loss(40_002, 30_002)]]
    kept = []
    for records in batches:
        acks = [a async for a in gw.PushRecords(iter([pb.RecordBatch(records=records)]), timeout=20)]
        assert acks[0].stored == len(records)  # the events themselves are stored whole
        kept.append(held())
    # one row is epoch 0's end (never deleted for room, nor counted in it); 2,000 of the first event, 1,000 of the
    # second (the write's 3,000); then 2,000 of each later event, the agent's oldest making room (its bound 4,000) down
    # to nine tenths of it (3,600: the oldest are sorted once per tenth of the bound added, not at every write past it)
    assert kept == [3001, 3601, 3601]
    gaps = [g for g in srv.store.gaps("gw-a", tenant="acme") if g["epoch"] == 7]
    assert sum(g["last"] - g["first"] + 1 for g in gaps if g["last"]) == 39_998  # every missing seq, once
    budget = {g["first"] for g in gaps if g["cause"] == "budget"}
    assert budget == {20_002 + 2 * i for i in range(400, 2000)} | {30_002 + 2 * i for i in range(2000)}
    # the oldest ranges made room (the first write's, 400 of the second's): their seqs are one unknown run, as are
    # the later events' cut ones
    assert {"epoch": 7, "first": 2, "last": 20_801, "cause": "unknown"} in gaps
    assert {"epoch": 7, "first": 24_001, "last": 30_001, "cause": "unknown"} in gaps
    assert srv.store.gaps("gw1", tenant="acme") == []  # nothing of another agent's account
    # an event longer than the outbox ever sends is stored, not read (parsed in the write every tenant waits for)
    padded = {"kind": "outbox_budget", "epoch": 0, "ranges": [[5, 5]], "pad": "x" * (256 * 1024)}
    record = pb.Record(seq=2, kind="event", t=time.time(), payload=json.dumps(padded).encode())
    other = rpc.FleetStub(ch("acme", "gw1"))
    acks = [a async for a in other.PushRecords(iter([pb.RecordBatch(records=[record])]), timeout=20)]
    assert acks[0].stored == 1
    with sqlite3.connect(srv.store.path) as db:
        assert (
            db.execute("SELECT COUNT(*) FROM gaps WHERE tenant = 'acme' AND agent = 'gw1'").fetchone()[0] == 0
        )


async def test_state_reports_the_stores_cannot_hold_are_invalid_argument(cloud):
    srv, ch, _, _ = cloud
    gw = rpc.FleetStub(ch("acme", "gw-a"))
    for req, why in (
        (pb.HeartbeatRequest(outbox_depth=U64), f"outbox_depth {U64} is above"),
        (pb.HeartbeatRequest(outbox_depth=2**63), f"outbox_depth {2**63} is above"),
        (pb.HeartbeatRequest(epoch=2**63), f"epoch {2**63} is above"),
        (pb.HeartbeatRequest(dropped={"budget": U64}), f"dropped['budget'] {U64} is above"),
    ):
        code, details = await _code(gw.Heartbeat(req, timeout=10))
        assert code == IA and why in details, details
        code, details = await _code(
            gw.Connect(iter([pb.AgentMessage(report=req, report_id=1)]), timeout=10).read()
        )
        assert code == IA and why in details, details
    await gw.Heartbeat(pb.HeartbeatRequest(outbox_depth=2**63 - 1, labels={"v": "max"}), timeout=10)
    (row,) = [a for a in srv.store.agents(tenant="acme") if a["id"] == "gw-a"]
    assert (row["outbox_depth"], row["labels"]) == (2**63 - 1, {"v": "max"})


async def _labels(ch, tenant: str, adm: str, agent: str) -> dict:
    r = await admin(ch, tenant, adm).ListAgents(pb.ListAgentsRequest(), timeout=10)
    return {a.id: dict(a.labels) for a in r.agents}[agent]


async def test_one_agents_report_never_stops_other_tenants_reports_being_written(cloud):
    """An agent reporting a depth the stores cannot hold, again every 0.2 s while its stream stays open (each once
    the previous one is acknowledged, as a report in flight when the server ends the stream makes grpc's client
    report ``INTERNAL: Internal error from Core`` instead of the server's status): beta's report is written, and
    the attacker's stream ends INVALID_ARGUMENT naming the field."""
    srv, ch, _, _ = cloud

    def stream(tenant: str, agent: str):
        q: asyncio.Queue = asyncio.Queue()

        async def gen():
            while (m := await q.get()) is not None:
                yield m

        return rpc.FleetStub(ch(tenant, agent)).Connect(gen(), timeout=30), q

    victim, vq = stream("beta", "gw-b")
    attacker, aq = stream("acme", "gw-a")

    async def attack() -> tuple[grpc.StatusCode, str]:  # every 0.2 s, for as long as its stream is open
        for i in range(20):
            await aq.put(pb.AgentMessage(report=pb.HeartbeatRequest(outbox_depth=U64), report_id=100 + i))
            try:
                while (m := await attacker.read()) != grpc.aio.EOF and m.acked != 100 + i:
                    pass  # the desired state
            except grpc.aio.AioRpcError as exc:
                return exc.code(), exc.details()
            if m == grpc.aio.EOF:
                return await attacker.code(), await attacker.details()
            await asyncio.sleep(0.2)
        return grpc.StatusCode.OK, "20 reports acknowledged"

    task = asyncio.create_task(attack())
    try:
        await asyncio.sleep(0.3)
        await vq.put(
            pb.AgentMessage(report=pb.HeartbeatRequest(labels={"site": "beta", "v": "2"}), report_id=1)
        )
        deadline = time.monotonic() + 30.0  # a ceiling: beside the attack, on a loaded machine
        while time.monotonic() < deadline and (await _labels(ch, "beta", "carol", "gw-b")).get("v") != "2":
            await asyncio.sleep(0.2)
        assert (await _labels(ch, "beta", "carol", "gw-b")).get("v") == "2"
        code, details = await asyncio.wait_for(task, 30)
        assert code == IA and "outbox_depth" in details, (code, details)
    finally:
        task.cancel()
        await aq.put(None)
        await vq.put(None)
        attacker.cancel()
        victim.cancel()


def _report(v: str, depth: int = 0) -> tuple:
    return ({"v": v}, [], {}, depth, {}, time.time())


def test_a_failed_batch_of_reports_is_written_one_at_a_time_and_the_refused_one_dropped(tmp_path):
    """A report the servicer's checks let through but the store refuses (here: put in ``pending`` directly)."""
    store = SQLiteStore(tmp_path / "fleet.db")
    hub = fleet_stream.StreamHub(store, None)
    hub.pending = {
        ("beta", "gw-b"): _report("1"),
        ("acme", "gw-a"): _report("bad", depth=2**63),
        ("default", "gw1"): _report("1"),
    }
    assert hub.flush() == 2
    assert hub.pending == {} and hub.refused == 1
    assert [a["labels"] for a in store.agents(tenant="beta")] == [{"v": "1"}]
    assert [a["labels"] for a in store.agents()] == [{"v": "1"}]
    assert store.agents(tenant="acme") == []
    store.close()


class FlakyStore(SQLiteStore):
    """The real SQLite store, whose writes fail ``fail`` times (a database restart, a lock timeout)."""

    fail = 0
    only: tuple | None = None  # fail only the rows of this (tenant, agent)

    def heartbeat_many(self, rows):
        if self.fail and (self.only is None or any(tuple(r[:2]) == self.only for r in rows)):
            if self.only is None:
                self.fail -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().heartbeat_many(rows)


def test_reports_that_failed_to_be_written_wait_for_the_next_flush(tmp_path):
    store = FlakyStore(tmp_path / "fleet.db")
    hub = fleet_stream.StreamHub(store, None)
    hub.pending = {("beta", "gw-b"): _report("1"), ("acme", "gw-a"): _report("1")}
    store.fail = 3  # the batch, then the first two rows one at a time: the store is down
    try:
        hub.flush()
    except sqlite3.OperationalError:
        pass
    assert set(hub.pending) == {("beta", "gw-b"), ("acme", "gw-a")}
    hub.pending[("beta", "gw-b")] = _report("2")  # a newer report came meanwhile: it wins
    assert hub.flush() == 2 and hub.pending == {}
    assert [a["labels"] for a in store.agents(tenant="beta")] == [{"v": "2"}]
    # one agent's row that keeps failing: the others are written at once, it is tried MAX_REPORT_ATTEMPTS times
    store.fail, store.only = 1, ("acme", "gw-a")
    for n in range(fleet_stream.MAX_REPORT_ATTEMPTS):
        hub.pending.setdefault(("beta", "gw-b"), _report(f"3.{n}"))
        hub.pending.setdefault(("acme", "gw-a"), _report("stuck"))
        assert hub.flush() == 1
        assert [a["labels"] for a in store.agents(tenant="beta")] == [{"v": f"3.{n}"}]
    assert hub.pending == {} and hub.refused == 1
    store.close()


async def test_a_store_failing_at_the_stop_leaves_the_stop_to_end_and_says_so(tmp_path, caplog):
    """The stream hub's last flush at stop raised the store's failure out of ``stop``: the fleet service's stop
    ended there, its streams never ended and its databases never closed."""
    store = FlakyStore(tmp_path / "fleet.db")
    hub = fleet_stream.StreamHub(store, None, flush_s=60)
    await hub.start()
    async with hub.attach(("acme", "gw-a")) as q:
        await hub.report(("acme", "gw-a"), _report("1"), 0)
        await hub.report(("beta", "gw-b"), _report("1"), 0)
        store.fail = 3  # the store down: the batch, then each row alone
        await hub.stop()  # was: raised
        assert q.get_nowait() is None  # the stream told to end
    assert "the last flush at stop failed" in caplog.text and "2 state reports not written" in caplog.text
    store.close()


def test_a_report_written_only_over_its_own_run_keeps_that_when_its_failed_write_is_tried_again(tmp_path):
    """A stream report of a run its process knows is written only over its own run (another replica may hold a newer
    one: a clone's). Its write failed and tried at the next flush, it was written as it comes: over the newer run."""
    store = FlakyStore(tmp_path / "fleet.db")
    hub = fleet_stream.StreamHub(store, None)
    key, report = ("acme", "gw-a"), {"epoch": 1, "dropped": {}, "report": {"boot": "newer", "seq": 1}}
    store.heartbeat("gw-a", {"v": "newer"}, [], {}, 0, report, tenant="acme")
    hub.pending[key] = (
        {"v": "late"},
        [],
        {},
        0,
        {**report, "report": {"boot": "older", "seq": 9}},
        time.time(),
    )
    hub._one_run[key] = ""  # (its own run only)
    store.fail = 2  # the batch, then the row alone
    assert hub.flush() == 0 and key in hub.pending
    assert hub.flush() == 0
    assert [a["labels"] for a in store.agents(tenant="acme")] == [{"v": "newer"}]  # was: {"v": "late"}
    assert [(k, run) for k, run, _args in hub._other_runs] == [(key, "newer")]
    store.close()


def test_a_report_taken_while_a_flush_takes_the_pending_ones_keeps_its_one_run_mark(tmp_path, monkeypatch):
    """The flush runs in a worker thread while the loop takes reports. It took the pending reports, then their marks
    (held back, one run only), one after the other: a report of a known run taken between them had its mark in the
    flushed batch's set, not the new one, and was written at the next flush as it comes (over a newer run)."""
    import threading

    store = SQLiteStore(tmp_path / "fleet.db")
    hub, key = fleet_stream.StreamHub(store, None), ("acme", "gw-a")
    hub.pending[("acme", "gw-b")] = _report("1")
    came, real_set = threading.Event(), set

    def report_meanwhile() -> None:  # the loop's report, while the flush takes the pending ones
        asyncio.run(hub.report(key, _report("2"), 0, over=""))
        came.set()

    def set_(*args):  # (the flush's first new set: its pending reports taken, their marks not yet)
        if not args and not came.is_set() and not threads:
            threads.append(threading.Thread(target=report_meanwhile))
            threads[0].start()
            came.wait(0.2)  # (it waits for the flush's taking now)
        return real_set(*args)

    threads: list[threading.Thread] = []
    monkeypatch.setattr(fleet_stream, "set", set_, raising=False)
    assert hub.flush() == 1
    threads[0].join(5)
    monkeypatch.undo()
    assert came.is_set() and key in hub.pending and key in hub._one_run  # was: not in _one_run
    store.close()


def _epoch_batch(epoch: int, *seqs: int, kind: str = "result") -> pb.RecordBatch:
    return pb.RecordBatch(
        records=[pb.Record(seq=s, epoch=epoch, kind=kind, t=time.time(), payload=b"{}") for s in seqs]
    )


async def test_an_agent_opening_epochs_past_the_rate_is_refused_and_counted(cloud, monkeypatch):
    """20,000 epochs of one record each (one batch) made 40,000 bookkeeping rows and an IngestStats of 40,000 gaps:
    past ``EPOCHS_PER_WINDOW`` epochs a day (lowered here) a batch opens one epoch at most (an outbox sends its current
    epoch only), counted; the batch opening two is RESOURCE_EXHAUSTED, counted as its ``epochs`` refusal."""
    monkeypatch.setattr(store_module, "EPOCHS_PER_WINDOW", 2)
    srv, ch, _, _ = cloud
    gw = rpc.FleetStub(ch("acme", "gw-a"))
    for e in (11, 12, 13):  # the fixture's push opened the agent's first epoch: three more, the third past it
        acks = [a async for a in gw.PushRecords(iter([_epoch_batch(e, 1, 2)]), timeout=20)]
        assert acks[0].stored == 2
    assert srv.store.stats("gw-a", tenant="acme")["epochs_24h"] == 3
    two = pb.RecordBatch(records=[*_epoch_batch(14, 1).records, *_epoch_batch(15, 1).records])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.PushRecords(iter([two]), timeout=20).read()
    code, details = refused.value.code(), refused.value.details()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert (REFUSAL_KEY, EPOCHS_BOUND) in tuple(refused.value.trailing_metadata())  # its agent waits hours
    assert (
        "4 epochs opened within 24 h, past the 2" in details
        and "epoch 15 after epoch 14 is refused" in details
    )
    assert srv.quotas.refusals[("acme", "gw-a", "epochs")] == 1
    assert srv.store.stats("gw-a", tenant="acme")["epoch"] == 13
    # its current epoch goes on; another tenant's agent opens its own
    acks = [a async for a in gw.PushRecords(iter([_epoch_batch(13, 3)]), timeout=20)]
    assert acks[0].stored == 1
    beta = rpc.FleetStub(ch("beta", "gw-b"))
    acks = [a async for a in beta.PushRecords(iter([_epoch_batch(21, 1)]), timeout=20)]
    assert acks[0].stored == 1
    # IngestStats answers the agent's newest gaps, at most INGEST_STATS_GAPS (lowered here): epoch 12's end
    monkeypatch.setattr(service_module, "INGEST_STATS_GAPS", 1)
    st = await admin(ch, "acme", "bob").IngestStats(pb.IngestStatsRequest(agent="gw-a"), timeout=10)
    assert [(g.epoch, g.first, g.last, g.cause) for g in st.gaps] == [(12, 3, 0, "epoch_change")]


async def test_a_record_timed_past_tomorrow_is_stored_at_its_receipt_time_and_counted(cloud):
    """An event at t=1e308 (or in year 9999) sorted first in its tenant's newest-first events view for good: a time
    more than a day past the service's clock is taken as the receipt time, counted and logged; a past time is kept."""
    srv, ch, _, _ = cloud
    gw = rpc.FleetStub(ch("acme", "gw-a"))
    now = time.time()
    records = [
        pb.Record(seq=s, kind="event", t=t, payload=b'{"kind": "x"}')
        for s, t in ((31, 1e308), (32, 253402300799.0), (33, now + 3600), (34, 1000.0))
    ]
    acks = [a async for a in gw.PushRecords(iter([pb.RecordBatch(records=records)]), timeout=20)]
    assert acks[0].stored == 4
    stored = {r["seq"]: r["t"] for r in srv.store.records("gw-a", kind="event", tenant="acme")}
    assert now <= stored[31] <= time.time() and now <= stored[32] <= time.time()
    assert (stored[33], stored[34]) == (now + 3600, 1000.0)  # within a day ahead, or in the past: as sent
    assert srv.quotas.snapshot("acme")["records_retimed"] == {"gw-a": 2}
    # and where the tenant sees its agent: the console's agents view (it was in /api/quotas only)
    from cloud_trainer.fleet.console import Console

    srv.store.heartbeat("gw-a", {}, [], {}, 0, tenant="acme")
    assert {a["id"]: a["records_retimed"] for a in Console(srv).agents("acme")}["gw-a"] == 2


def _run_report(version: str, boot: str, seq: int) -> tuple:
    """A report's ``StreamHub`` args: labels ``{"v": version}``, numbered ``seq`` of run ``boot``."""
    return (
        {"v": version},
        [],
        {},
        0,
        {"epoch": 1, "dropped": {}, "report": {"boot": boot, "seq": seq}},
        time.time(),
    )


async def test_reports_refused_for_another_run_are_counted_and_those_of_the_last_flush_judged_at_stop(
    tmp_path,
):
    """A stream report its agent's row refused for another run was in no counter (acknowledged, then judged, maybe
    dropped: a monitor's sums did not add up), and at stop the last flush's refusals were never judged: a report to
    be written over its agent's older run after all was lost. Counted (``other_run``); judged at stop, then written."""
    store = SQLiteStore(tmp_path / "fleet.db")
    hub, key = fleet_stream.StreamHub(store, None, flush_s=60), ("acme", "gw-a")
    store.heartbeat("gw-a", {"v": "old"}, [], {}, 0, _run_report("old", "runA", 5)[4], tenant="acme")
    judged = []

    async def judge(
        refused,
    ) -> None:  # (``FleetServicer._other_runs``: the row's run began before the report's)
        for k, held, args in refused:
            judged.append(held)
            hub.put_over(k, args, held)

    hub.on_other_run = judge
    await hub.start()
    await hub.report(key, _run_report("new", "runB", 2), 0, over="")
    await hub.stop()
    assert hub.snapshot()["other_run"] == 1  # was: no such counter
    assert judged == ["runA"]  # was: never judged
    assert [a["labels"] for a in store.agents(tenant="acme")] == [{"v": "new"}]  # was: {"v": "old"}
    store.close()


async def test_a_stop_whose_last_flush_failed_does_not_flush_again_after_the_judgments(tmp_path, monkeypatch):
    """At stop, a judgment of a refused report under way was waited for, then the reports flushed again, though the
    last flush had just failed: the store down (a PostgreSQL pool waiting its 30 s timeout for a connection each
    call), the stop took as long again (61 -> 123 s measured), past a service manager's stop timeout. Not again."""
    monkeypatch.setattr(fleet_stream, "STOP_JUDGE_S", 0.05)
    store = FlakyStore(tmp_path / "fleet.db")
    hub, key = fleet_stream.StreamHub(store, None, flush_s=60), ("acme", "gw-a")
    store.heartbeat("gw-a", {"v": "old"}, [], {}, 0, _run_report("old", "runA", 5)[4], tenant="acme")
    judging = asyncio.Event()

    async def judge(refused) -> None:  # (the row's read waits for the store, down meanwhile)
        judging.set()
        await asyncio.Event().wait()

    hub.on_other_run = judge
    await hub.start()
    await hub.report(key, _run_report("new", "runB", 2), 0, over="")
    await asyncio.to_thread(hub.flush)  # refused for runA: judged
    hub._judge_aside(hub._other_runs)
    await judging.wait()
    await hub.report(("acme", "gw-b"), _report("1"), 0)
    await hub.report(("beta", "gw-c"), _report("1"), 0)
    calls = []
    real = store.heartbeat_many
    store.heartbeat_many = lambda rows: (calls.append(len(rows)), real(rows))[1]
    store.fail = 100  # the store down
    await hub.stop()
    assert calls == [
        2,
        1,
    ]  # the batch, then a row alone (the first failure ends it); was: that, then the same again
    store.close()


async def test_a_stop_whose_flush_loses_the_store_midway_stops_at_the_first_failure_and_keeps_the_rest(
    tmp_path,
):
    """The store lost in the middle of the stop's flush (the batch failed, one report written alone, then none):
    each report left was tried alone, each waiting for a connection (PostgreSQL: STOP_STORE_WAIT_S, 5 s; 20 agents
    pending, 100 s, past systemd's 90 s stop timeout). The first failure ends it: the rest counted and kept."""
    written: list[int] = []

    class Dying(SQLiteStore):
        def heartbeat_many(self, rows):
            if len(rows) > 1 or 1 in written:  # the batch fails, and every call after the first row's
                written.append(0)
                raise sqlite3.OperationalError("server closed the connection unexpectedly")
            written.append(len(rows))
            return super().heartbeat_many(rows)

    store = Dying(tmp_path / "fleet.db")
    hub = fleet_stream.StreamHub(store, None, flush_s=60)
    await hub.start()
    for i in range(6):
        await hub.report(("acme", f"gw-{i}"), _report("1"), 0)
    await hub.stop()
    assert written == [0, 1, 0], written  # the batch, the row written, the first row failing; was: five more
    assert len(hub.pending) == 5 and [a["id"] for a in store.agents(tenant="acme")] == ["gw-0"]
    store.close()


def test_a_judged_report_put_back_to_be_written_keeps_to_max_pending(tmp_path):
    """A report judged to be written after all went back to ``pending`` whatever its size: ``max_pending`` bounds
    the agents pending, and a judged one past it is dropped and counted, as a held one is."""
    store = SQLiteStore(tmp_path / "fleet.db")
    hub = fleet_stream.StreamHub(store, None, max_pending=1)
    hub.pending[("acme", "gw-b")] = _report("1")
    hub.put_over(("acme", "gw-a"), _run_report("new", "runB", 2), "runA")
    assert list(hub.pending) == [("acme", "gw-b")] and hub.refused == 1  # was: 2 pending, none refused
    store.close()
