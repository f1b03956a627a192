"""One suite over every fleet store: the SQLite file and PostgreSQL (a real server started once per session by
``tests.support.postgres``). Same semantics: idempotent ``(tenant, agent, epoch, seq)`` ingest, gaps per epoch
with their cause, tenants that never see each other's rows, heartbeats, samples and labels, usage counts;
concurrent batches of one agent stored once; per-tenant quotas counted in the store, exact with two store
instances on one database (two replicas). Then PostgreSQL's own: versioned migrations applied once, a
newer schema refused, a clear error for a server that is not there."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time

import pytest

from cloud_trainer.fleet import store as store_module
from cloud_trainer.fleet.store import (
    AgentRowsLocked,
    SQLiteStore,
    TenantQuotaExceeded,
    WriterTurns,
    open_store,
)
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        st = SQLiteStore(tmp_path / "fleet.db")
    else:
        st = open_store(request.getfixturevalue("postgres_url"), tmp_path)
    yield st
    st.close()


def rec(seq, epoch=0, kind="result", payload="{}", **kw):
    return {"epoch": epoch, "seq": seq, "kind": kind, "t": float(seq), "payload": payload, **kw}


def test_past_an_agents_bound_its_oldest_losses_make_room_for_the_newest_told(store, monkeypatch):
    """An agent's loss rows are bounded (``LOSS_ROWS_PER_AGENT``, lowered here) and never deleted otherwise: a
    lifetime bound showed every loss a gateway told once it was reached (hours of one outage whose drops are a range
    per record) as ``unknown``. Past it the oldest ranges told go, never an epoch's end (which takes none of the
    room); a range told twice adds nothing and takes no room."""
    monkeypatch.setattr(store_module, "LOSS_ROWS_PER_AGENT", 3)

    def told(seq, *ranges, epoch=1):
        drop = {"kind": "outbox_budget", "epoch": epoch, "ranges": [list(r) for r in ranges]}
        return rec(seq, epoch=epoch, kind="event", payload=json.dumps(drop))

    store.ingest("gw9", [rec(1), rec(9)])  # epoch 0 ends (its gap row stays) when epoch 1 opens
    store.ingest("gw9", [rec(1, epoch=1), rec(100, epoch=1), told(101, (2, 2), (4, 4))])
    store.ingest("gw9", [told(102, (6, 6), (4, 4))])  # (4, 4) again: no room taken
    store.ingest("gw9", [told(103, (8, 8), (10, 10))])
    known = [(g["first"], g["last"], g["cause"]) for g in store.gaps("gw9") if g["epoch"] == 1]
    assert [k for k in known if k[2] == "budget"] == [(6, 6, "budget"), (8, 8, "budget"), (10, 10, "budget")]
    assert (2, 5, "unknown") in known  # made room: missing still, cause unknown
    assert {"epoch": 0, "first": 10, "last": 0, "cause": "epoch_change"} in store.gaps("gw9")


def test_ingest_is_idempotent_and_gaps_carry_their_cause(store):
    recs = [rec(s) for s in (1, 2, 3, 7, 8, 12)]
    assert store.ingest("gw9", recs) == ([1, 2, 3, 7, 8, 12], 6, 0)
    assert store.ingest("gw9", recs[:2])[1:] == (0, 2)  # a replay is stored once
    assert store.gaps("gw9") == [
        {"epoch": 0, "first": 4, "last": 6, "cause": "unknown"},
        {"epoch": 0, "first": 9, "last": 11, "cause": "unknown"},
    ]
    drop = {"kind": "outbox_budget", "epoch": 0, "ranges": [[4, 5], [10, 11]]}
    store.ingest("gw9", [rec(13, kind="event", payload=json.dumps(drop))])
    assert [(g["first"], g["last"], g["cause"]) for g in store.gaps("gw9")] == [
        (4, 5, "budget"),
        (6, 6, "unknown"),
        (9, 9, "unknown"),
        (10, 11, "budget"),
    ]
    # a new epoch numbers from 1 again: new records, not replays; the old epoch's end is a known gap
    assert store.ingest("gw9", [rec(1, epoch=5), rec(2, epoch=5)])[1:] == (2, 0)
    assert store.gaps("gw9")[-1] == {"epoch": 0, "first": 14, "last": 0, "cause": "epoch_change"}
    corrupt = {"kind": "outbox_corrupt", "previous_epoch": 5}
    store.ingest("gw9", [rec(3, epoch=9, kind="event", payload=json.dumps(corrupt))])
    assert store.gaps("gw9")[-2:] == [
        {"epoch": 5, "first": 3, "last": 0, "cause": "outbox_corrupt"},
        {"epoch": 9, "first": 1, "last": 2, "cause": "unknown"},
    ]
    st = store.stats("gw9")
    assert (st["records"], st["epoch"], st["last_seq"], st["duplicates"]) == (10, 9, 3, 2)
    assert st["by_kind"] == {"result": 8, "event": 2}
    assert [(r["epoch"], r["seq"]) for r in store.records("gw9", kind="event")] == [(0, 13), (9, 3)]
    assert [r["seq"] for r in store.records("gw9", since_seq=7, limit=2)] == [8, 12]


def test_tenants_never_see_each_others_rows(store):
    sample = rec(
        2,
        kind="sample",
        payload=json.dumps({"model": "m", "reason": "ng", "verdict": "NG"}),
        sample_sha256="ab" * 32,
        sample_ext=".png",
    )
    assert store.ingest("gw1", [rec(1), sample])[1] == 2
    assert store.ingest("gw1", [rec(1), sample], tenant="acme")[1:] == (2, 0)  # the same ids: other rows
    store.ingest("gw2", [rec(1), rec(5)], tenant="acme")
    store.heartbeat("gw1", {"site": "a"}, [{"slot": "vision"}], {"ok": 1}, 3, {"epoch": 0}, tenant="acme")
    store.heartbeat("gw1", {"site": "d"}, [], {}, 0)
    assert [(a["id"], a["labels"]) for a in store.agents()] == [("gw1", {"site": "d"})]
    acme = store.agents(tenant="acme")
    assert [(a["id"], a["labels"], a["outbox_depth"], a["slots"]) for a in acme] == [
        ("gw1", {"site": "a"}, 3, [{"slot": "vision"}])
    ]
    assert store.agents(tenant="beta") == [] and store.stats(tenant="beta")["records"] == 0
    # what a rollout's group is read from (agents that join it, a stalled step's last heartbeats): the same
    (group,) = store.agent_groups(tenant="acme")
    assert {k: group[k] for k in ("id", "labels", "slots", "last_seen")} == {
        k: acme[0][k] for k in ("id", "labels", "slots", "last_seen")
    }
    assert store.agent_groups(tenant="beta") == []
    assert store.stats()["records"] == 2 and store.stats(tenant="acme")["records"] == 4
    assert store.gaps("gw2", tenant="acme") == [{"epoch": 0, "first": 2, "last": 4, "cause": "unknown"}]
    assert store.gaps("gw2") == []
    assert store.has_sample("ab" * 32, tenant="acme") and not store.has_sample("ab" * 32, tenant="beta")
    assert store.set_labels({"ab" * 32: "OK"}, tenant="acme") == 1
    assert [s["label"] for s in store.samples(model="m", tenant="acme")] == ["OK"]
    assert [s["label_state"] for s in store.samples(model="m")] == ["unlabelled"]  # the default tenant's copy
    assert store.samples(model="m", label_state="labelled") == []
    assert store.usage() == {
        "default": {"agents": 1, "records": 2, "samples": 1},
        "acme": {"agents": 1, "records": 4, "samples": 1},
    }


def test_concurrent_batches_of_one_agent_are_stored_once(store):
    """Ten overlapping batches of one agent at once: each record stored once, the rest counted as duplicates. A
    batch refused because the agent's rows stayed held past the store's lock wait (``AgentRowsLocked``, PostgreSQL:
    nine batches ahead of it on a loaded machine) stored nothing and is sent again, as the agent does: a refused
    batch that left anything stored would show here as records counted twice or missing."""
    batches = [[rec(s) for s in range(i, i + 40)] for i in range(1, 200, 20)]  # overlapping ranges
    results, failed = [], []

    def push(b):
        deadline = time.monotonic() + 120
        try:
            while True:
                try:
                    results.append(store.ingest("gw1", b))
                    return
                except AgentRowsLocked:
                    if time.monotonic() > deadline:
                        raise
        except Exception as exc:
            failed.append(exc)

    threads = [threading.Thread(target=push, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failed == []
    stored = sum(r[1] for r in results)
    dup = sum(r[2] for r in results)
    st = store.stats("gw1")
    assert st["records"] == stored == 220 and dup == 10 * 40 - 220 and st["duplicates"] == dup
    assert store.gaps("gw1") == []


def test_a_large_batch_whose_write_failed_midway_is_stored_once_when_sent_again(store, monkeypatch):
    """A batch of 5 records of 600 KB and a small one whose write fails at the small one (the disk failed, the
    process was killed): the agent, not acknowledged, sends it again and every record is stored once, counted once.
    SQLite writes such a batch in ranges of at most 1 MiB (here 1 | 2 | 3, 4 | 5 | 6), each its own transaction, so
    that its one writer is not held for the whole batch: the ranges before the failing one stay stored and come
    back as duplicates; PostgreSQL rolls the whole batch back."""
    big = '{"v": "' + "x" * 600_000 + '"}'
    batch = [rec(s, epoch=1, payload=big) for s in (1, 2, 3)]
    batch += [rec(4, epoch=1, kind="event", payload='{"kind": "disk_fails_here"}')]
    batch += [rec(s, epoch=1, payload=big) for s in (5, 6)]
    note_loss = store._note_loss

    def disk_fails(ex, tenant, agent, epoch, payload, now, *room):  # inside the transaction writing record 4
        if "disk_fails_here" in payload:
            raise OSError("the disk failed")
        return note_loss(ex, tenant, agent, epoch, payload, now, *room)

    store._note_loss = disk_fails
    with pytest.raises(OSError) as failed:
        store.ingest("gw1", batch)
    before = getattr(failed.value, "stored_before", 0)
    sqlite = isinstance(store, SQLiteStore)
    assert before == (2 if sqlite else 0)
    assert store.stats("gw1")["records"] == before
    if sqlite:  # a range that failed leaves the connection as durable as before for every other write
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2
    store._note_loss = note_loss
    synced, fsync = [], store_module.os.fsync

    def noted(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(store_module.os, "fsync", noted)
    assert store.ingest("gw1", batch) == ([1, 2, 3, 4, 5, 6], 6 - before, before)
    if (
        sqlite
    ):  # each range (1 | 2 | 3, 4 | 5 | 6) committed without an fsync, the WAL synced after it, unlocked
        assert synced == [f"{store.path.resolve()}-wal"] * 5
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again, for every other write
    st = store.stats("gw1")
    assert (st["records"], st["duplicates"], st["last_seq"]) == (6, before, 6)
    assert [r["seq"] for r in store.records("gw1", limit=100)] == [1, 2, 3, 4, 5, 6]
    assert store.gaps("gw1") == []


def test_a_large_batch_whose_wal_sync_failed_after_a_range_says_what_is_stored(tmp_path, monkeypatch):
    """SQLite commits each range of a large batch without an fsync and syncs the WAL after it, outside the
    writer's turn: when that sync fails (EIO, EMFILE) the range is already committed, so the service says that
    the batch's first records were stored (they come back as duplicates when it is sent again), not that nothing
    of it was."""
    import errno

    from cloud_trainer.fleet.service import _unstored

    store = SQLiteStore(tmp_path / "fleet.db")
    big = '{"v": "' + "x" * 600_000 + '"}'
    batch = [rec(s, epoch=1, payload=big) for s in (1, 2, 3)]  # ranges 1 | 2 | 3

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_module.os, "fsync", eio)  # the sync after the first range fails
    with pytest.raises(OSError) as failed:
        store.ingest("gw1", batch)
    assert getattr(failed.value, "stored_before", 0) == 1 == store.stats("gw1")["records"]
    assert _unstored(failed.value).startswith("its first 1 records were stored")
    monkeypatch.undo()
    assert store.ingest("gw1", batch) == ([1, 2, 3], 2, 1)  # sent again: the first range is a duplicate
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again, for every other write
    store.close()


def test_an_agents_payload_and_sample_bytes_of_the_day_are_kept_in_the_store(store):
    """What the fleet service's per-agent day budgets start from after a restart: the payload bytes (as the agent
    sent them, ``payload_bytes``) and sample bytes of the records stored that UTC day, per tenant and agent; a
    replay counts nothing."""
    from cloud_trainer.fleet.store import utc_day

    sample = rec(
        2,
        kind="sample",
        payload='{"model": "m"}',
        sample_sha256="ab" * 32,
        sample_ext=".png",
        sample_bytes=5000,
    )
    batch = [rec(1, payload='{"v": "' + "x" * 1000 + '"}', payload_bytes=1009), sample]
    assert store.ingest("gw1", batch, tenant="acme")[1] == 2
    assert store.ingest("gw1", batch, tenant="acme")[1:] == (0, 2)  # a replay: nothing more
    store.ingest("gw1", [rec(3, payload="{}")], tenant="acme")  # no payload_bytes given: its text's
    today = utc_day()
    assert store.agent_usage("gw1", today, tenant="acme") == (1009 + 14 + 2, 5000)
    assert store.agent_usage("gw1", today) == (0, 0)  # another tenant's agent of that name
    assert store.agent_usage("gw2", today, tenant="acme") == (0, 0)
    assert store.agent_usage("gw1", today - 1, tenant="acme") == (0, 0)


def test_an_agents_usage_rows_of_days_no_budget_reads_are_deleted(store, tmp_path, monkeypatch):
    """``agent_usage`` is read for the current UTC day only (the service's day budgets), and held one row per agent
    and day for ever (3,000 rows after 60 days of 50 agents, 2026-12-05). An agent's first stored batch of a day
    deletes its rows older than a week (kept so that a replica whose clock is days ahead never deletes the others'
    today: keeping yesterday's only, one 2 days ahead did); its other batches that day, a replay and other agents'
    rows are left alone, and another store on the database (a restarted service, a replica) prunes on its own."""
    from cloud_trainer.fleet import store as store_module

    today = store_module.utc_day()
    # the stores' UTC day, fixed (the test read the clock apart from them: it failed across 00:00 UTC)
    clock = [today]
    monkeypatch.setattr(store_module, "utc_day", lambda t=None: clock[0])

    def days(tenant: str, agent: str) -> list[int]:
        rows = store._rows(
            store.q("SELECT day FROM agent_usage WHERE tenant = ? AND agent = ? ORDER BY day"),
            (tenant, agent),
        )
        return [int(d) for (d,) in rows]

    def written_before(
        tenant: str, agent: str, *ago: int
    ) -> None:  # what the agent's batches of those days left
        with store._tx() as ex:
            for n in ago:
                ex(
                    store.q(
                        "INSERT INTO agent_usage (tenant, agent, day, record_bytes) VALUES (?, ?, ?, 10)"
                    ),
                    (tenant, agent, today - n),
                )

    written_before("acme", "gw1", 60, 30, 7, 6, 1)
    written_before("acme", "gw2", 30, 2)
    written_before("default", "gw1", 30)
    assert store.ingest("gw1", [rec(1, payload_bytes=100)], tenant="acme")[1] == 1
    assert days("acme", "gw1") == [today - 6, today - 1, today]  # today's budgets read the same as before
    assert store.agent_usage("gw1", today, tenant="acme") == (100, 0)
    assert days("acme", "gw2") == [today - 30, today - 2] and days("default", "gw1") == [today - 30]
    written_before("acme", "gw1", 8)  # (not pruned again by this store today: once a day per agent)
    store.ingest("gw1", [rec(2, payload_bytes=100)], tenant="acme")
    assert days("acme", "gw1") == [today - 8, today - 6, today - 1, today]
    other = another_replica(store, tmp_path)
    try:
        assert other.ingest("gw1", [rec(1)], tenant="acme")[1:] == (0, 1)  # a replay stores nothing: no prune
        assert days("acme", "gw1") == [today - 8, today - 6, today - 1, today]
        other.ingest("gw1", [rec(3, payload_bytes=100)], tenant="acme")
        assert days("acme", "gw1") == [today - 6, today - 1, today]
        assert other.agent_usage("gw1", today, tenant="acme") == (300, 0)
        clock[0] = today + 2  # a replica whose clock runs 2 days ahead: the others' today is kept
        other.ingest("gw1", [rec(4, payload_bytes=100)], tenant="acme")
        assert days("acme", "gw1") == [today - 1, today, today + 2]
        assert store.agent_usage("gw1", today, tenant="acme") == (300, 0)
    finally:
        other.close()


def test_sqlite_writer_turns_give_a_waiting_short_write_before_a_batchs_next_range():
    """SQLite's one writer: a short write (a heartbeat) that waits goes before a range of a batch that waited
    longer; a wait with a timeout gives up and leaves the turn to the others."""
    turns, order = WriterTurns(), []

    def take(bulk: bool) -> None:
        with turns.bulk() if bulk else turns:
            order.append("range" if bulk else "short")

    assert turns.acquire()  # a range being written
    batch = threading.Thread(target=take, args=(True,))
    batch.start()
    _wait_for(lambda: turns._waiting[True])  # the batch's next range waits
    assert not turns.acquire(timeout=0.05)  # gave up: no turn, nothing left waiting
    short = threading.Thread(target=take, args=(False,))
    short.start()
    _wait_for(lambda: turns._waiting[False])  # and then a heartbeat
    turns.release()
    batch.join(5)
    short.join(5)
    assert order == ["short", "range"] and not turns.locked()


def _wait_for(cond) -> None:
    for _ in range(500):
        if cond():
            return
        threading.Event().wait(0.01)
    raise AssertionError("never waited")


def another_replica(store, tmp_path):
    """A second store on the same database (what a second service process opens)."""
    return SQLiteStore(store.path) if isinstance(store, SQLiteStore) else open_store(store.url, tmp_path)


def test_tenant_quotas_refuse_whole_batches_and_count_exactly_across_replicas(store, tmp_path, monkeypatch):
    # the exact bound, checked in the batch's transaction: without the early refusal by what a store's last refusal
    # read (a quota raised through one replica reaches the other's early refusals within SPENT_TTL_S)
    monkeypatch.setattr(store_module, "SPENT_TTL_S", 0.0)
    assert store.set_quota("acme", max_records_per_day=100, max_sample_bytes_per_day=1000) == {
        "max_agents": 0,
        "max_records_per_day": 100,
        "max_sample_bytes_per_day": 1000,
        "max_record_bytes_per_day": 0,
        "records_today": 0,
        "sample_bytes_today": 0,
        "record_bytes_today": 0,
    }
    other = another_replica(store, tmp_path)
    try:
        errors = []
        stored: list[tuple[str, int]] = []  # (agent, batch) of the batches taken

        def push(st, agent):  # 2 replicas x 3 agents x 30 batches of 2 records: 360 offered, 100 allowed
            for i in range(30):
                try:
                    st.ingest(agent, [rec(2 * i + 1), rec(2 * i + 2)], tenant="acme")
                    stored.append((agent, i))
                except TenantQuotaExceeded as exc:
                    errors.append(str(exc))

        threads = [
            threading.Thread(target=push, args=(st, f"{name}{k}"))
            for st, name in ((store, "a"), (other, "b"))
            for k in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.stats(tenant="acme")["records"] == 100 and len(errors) == 130  # refused whole, none half
        assert other.quotas()["acme"]["records_today"] == 100
        assert (
            "quota of 100 records per day (100 used or reserved today); nothing of it was stored"
            in errors[-1]
        )
        assert store.ingest("gw1", [rec(1)])[1] == 1  # other tenants are not limited by acme's quota
        # a replay is not charged: only newly stored records count (a batch that was taken: under load one
        # agent's thread may find the quota spent by the others before its first batch)
        agent, i = stored[0]
        assert store.ingest(agent, [rec(2 * i + 1), rec(2 * i + 2)], tenant="acme")[1:] == (0, 2)
        sample = rec(
            999, kind="sample", payload="{}", sample_sha256="cd" * 32, sample_ext=".png", sample_bytes=900
        )
        store.set_quota("acme", max_records_per_day=0)  # 0: no limit
        assert other.ingest("a0", [sample], tenant="acme")[1] == 1
        with pytest.raises(TenantQuotaExceeded, match="quota of 1000 bytes of samples per day"):
            store.ingest("a0", [{**sample, "seq": 1000, "sample_sha256": "ef" * 32}], tenant="acme")
        assert store.quotas()["acme"]["sample_bytes_today"] == 900
        # agents: at most two of acme's; one already registered is always admitted
        store.set_quota("acme", max_agents=2)
        store.admit_agent("gw1", tenant="acme")
        other.admit_agent("gw1", tenant="acme")
        other.admit_agent("gw2", tenant="acme")
        with pytest.raises(
            TenantQuotaExceeded, match="2 agents registered, the tenant's quota is 2; agent gw3"
        ):
            store.admit_agent("gw3", tenant="acme")
        store.admit_agent("gw3", tenant="beta")  # no quota
        assert [a["id"] for a in store.agents(tenant="acme")] == ["gw1", "gw2"]
        with pytest.raises(ValueError, match="unknown quota 'max_bananas'"):
            store.set_quota("acme", max_bananas=1)
    finally:
        other.close()


def test_a_tenants_record_bytes_of_the_day_are_bounded_across_its_agents_and_replicas(store, tmp_path):
    """``max_record_bytes_per_day``: the payload bytes (as the agents sent them) of the records a tenant's agents
    store in the UTC day, all of them together: each agent within its own day budget, they filled the data disk
    every tenant shares (``max_records_per_day`` counts records whatever their size). A batch that would pass it
    is refused whole; a replay counts nothing; another tenant is not limited; a second store on the same database
    (a restarted service, another replica) counts on from the same total, and replicas ingesting at once never
    pass it."""

    def big(seq: int, n: int = 300) -> dict:
        return rec(seq, payload="{}", payload_bytes=n)

    assert store.set_quota("acme", max_record_bytes_per_day=1000)["max_record_bytes_per_day"] == 1000
    assert store.ingest("gw1", [big(1), big(2)], tenant="acme")[1] == 2  # 600
    assert store.ingest("gw2", [big(1)], tenant="acme")[1] == 1  # 900: another agent, the same tenant's quota
    with pytest.raises(
        TenantQuotaExceeded,
        match=r"this batch \(300 bytes of records\) would pass the tenant's quota of 1000 bytes of records per "
        r"day \(900 used or reserved today\); nothing of it was stored",
    ):
        store.ingest("gw2", [big(2), rec(3, payload="{}", payload_bytes=0)], tenant="acme")
    assert store.stats("gw2", tenant="acme")["records"] == 1  # refused whole
    assert store.ingest("gw1", [big(1), big(2)], tenant="acme")[1:] == (0, 2)  # a replay: nothing counted
    assert store.quotas()["acme"]["record_bytes_today"] == 900
    assert store.ingest("gw1", [big(s, 5000) for s in range(1, 5)], tenant="beta")[1] == 4  # beta: no quota
    assert store.quotas()["beta"]["record_bytes_today"] == 20_000
    with pytest.raises(TenantQuotaExceeded, match="the batch alone is larger than the quota"):
        store.ingest("gw3", [big(1, 1001)], tenant="acme")
    other = another_replica(store, tmp_path)
    try:
        assert other.quotas()["acme"]["record_bytes_today"] == 900  # from the store, not a process's counter
        with pytest.raises(TenantQuotaExceeded):
            other.ingest("gw3", [big(1, 101)], tenant="acme")
        assert other.ingest("gw3", [big(1, 100)], tenant="acme")[1] == 1  # up to the quota exactly
        store.set_quota("acme", max_record_bytes_per_day=3000)
        taken: list[int] = []

        def push(st, agent):  # 2 replicas x 2 agents x 10 batches of 100 bytes: 4000 offered, 2000 allowed
            for i in range(10):
                with contextlib.suppress(TenantQuotaExceeded):
                    taken.append(st.ingest(agent, [big(100 + i, 100)], tenant="acme")[1])

        threads = [
            threading.Thread(target=push, args=(st, f"{name}{k}"))
            for st, name in ((store, "a"), (other, "b"))
            for k in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(taken) == 20 and other.quotas()["acme"]["record_bytes_today"] == 3000
    finally:
        other.close()


def test_a_batch_of_a_tenant_past_its_quota_is_refused_before_its_samples_are_staged_or_the_writer_taken(
    store, tmp_path
):
    """A batch the tenant's day quota refuses was written in full, its samples staged and synced, then rolled back,
    under the writer every tenant shares (SQLite; PostgreSQL: holding the tenant's usage row), and an over-quota
    tenant's agents send theirs again every 15-30 s until 00:00 UTC. Once the store has refused one of the tenant's
    batches it refuses the next ones that would pass the quota by the usage it read then, before staging a byte or
    taking the writer, and never waits behind a long read (SQLite's reader held); a replay of stored records is
    still acknowledged, a batch within the quota stored, and a raised quota takes effect at once."""
    import concurrent.futures

    from cloud_trainer.blobs import LocalBlobStore

    blobs = LocalBlobStore(tmp_path / "blobs").for_tenant("acme")
    staged: list[int] = []
    stage = blobs.stage

    def counted(data: bytes):
        staged.append(len(data))
        return stage(data)

    blobs.stage = counted  # type: ignore[method-assign]
    store.set_quota("acme", max_record_bytes_per_day=1000)
    assert store.ingest("gw1", [rec(1, payload_bytes=900)], tenant="acme")[1] == 1
    refused = [rec(2, payload_bytes=300), _sample(3, b"s" * 50_000)]
    why = r"quota of 1000 bytes of records per day \(900 used or reserved today\); nothing of it was stored"
    with pytest.raises(TenantQuotaExceeded, match=why):  # judged in the transaction
        store.ingest("gw1", refused, tenant="acme", blobs=blobs)
    staged.clear()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        # another write holds the writer (SQLite) or the tenant's usage row (PostgreSQL), and a long read the reader
        reading = store.read_lock if isinstance(store, SQLiteStore) else contextlib.nullcontext()
        with reading, store._tx() as ex:
            ex(store.q("SELECT records FROM tenant_usage WHERE tenant = ?" + store.FOR_UPDATE), ("acme",))
            fut = pool.submit(store.ingest, "gw1", refused, tenant="acme", blobs=blobs)
            with contextlib.suppress(concurrent.futures.TimeoutError):
                fut.exception(timeout=20)
            answered = fut.done()
        assert answered, "the refused batch waited for the writer"
        with pytest.raises(TenantQuotaExceeded, match=why):
            fut.result()
    finally:
        pool.shutdown(wait=True)
    for _ in range(3):  # and sent again
        with pytest.raises(TenantQuotaExceeded, match=why):
            store.ingest("gw1", refused, tenant="acme", blobs=blobs)
    assert staged == []  # not a byte staged
    assert store.stats("gw1", tenant="acme")["records"] == 1
    assert store.ingest("gw1", [rec(1, payload_bytes=900)], tenant="acme")[1:] == (
        0,
        1,
    )  # a replay: acknowledged
    assert store.ingest("gw2", [rec(1, payload_bytes=100)], tenant="acme")[1] == 1  # within the quota: stored
    store.set_quota("acme", max_record_bytes_per_day=0)  # raised: stored at once
    assert store.ingest("gw1", refused, tenant="acme", blobs=blobs)[1] == 2
    assert staged == [50_000] and blobs.get_bytes(refused[1]["sample_sha256"]) == b"s" * 50_000


def test_a_quota_raised_while_a_refused_batch_is_in_flight_applies_at_once(store, monkeypatch):
    """The store kept what a refusal read (limits, usage) after the refused transaction let go of the writer: a
    ``set_quota`` that ran in between (CreateTenant raising the quota through this process) forgot a memo not yet
    written, and the refusal then wrote one with the old limits, so the tenant's batches were refused for
    SPENT_TTL_S after the raise. The interleaving is forced: the quota is raised when the transaction refuses."""
    store.set_quota("acme", max_records_per_day=3)
    assert store.ingest("gw1", [rec(i) for i in (1, 2, 3)], tenant="acme")[1] == 3
    refuse = store._ingest

    def raised_meanwhile(*a, **kw):
        try:
            return refuse(*a, **kw)
        except TenantQuotaExceeded:
            store.set_quota("acme", max_records_per_day=1000)
            raise

    monkeypatch.setattr(store, "_ingest", raised_meanwhile)
    with pytest.raises(TenantQuotaExceeded, match="quota of 3 records per day"):
        store.ingest("gw1", [rec(4)], tenant="acme")
    monkeypatch.setattr(store, "_ingest", refuse)
    assert store.ingest("gw2", [rec(1)], tenant="acme")[1] == 1  # the raised quota: at once
    assert store.ingest("gw1", [rec(4)], tenant="acme")[1] == 1


def test_a_batch_in_ranges_whose_first_range_fits_is_stored_by_it_after_a_refusal(tmp_path, monkeypatch):
    """SQLite writes a large batch in ranges, each stored until one would pass the tenant's quota: a batch whose
    first range fits stores that range. After a refusal the early check summed every record of the batch and
    refused it whole: the first range stayed unstored for SPENT_TTL_S. It judges the first range holding a record
    not stored yet, as the exact check does (it judged the first range, duplicates when the batch was sent again,
    and let the resend take the writer to be refused in its second); a batch whose first range would pass is still
    refused early. ``newly`` names the records the call stored (not the duplicates)."""
    st = SQLiteStore(tmp_path / "fleet.db")
    try:
        monkeypatch.setattr(st, "INGEST_CHUNK_BYTES", 1000)
        st.set_quota("acme", max_record_bytes_per_day=2000)
        assert st.ingest("gw1", [rec(1, payload="y" * 900)], tenant="acme")[1] == 1
        with pytest.raises(TenantQuotaExceeded, match=r"this batch \(1200 bytes"):  # memo: 900 used
            st.ingest("gw1", [rec(2, payload="z" * 1200)], tenant="acme")
        ranged = [rec(i, payload="x" * 600) for i in (1, 2, 3)]
        assert st._chunks(ranged) == [(0, 1), (1, 2), (2, 3)]
        newly: list[int] = []
        with pytest.raises(TenantQuotaExceeded, match="its first 1 records were stored"):
            st.ingest("gw2", ranged, tenant="acme", newly=newly)
        assert st.stats("gw2", tenant="acme")["records"] == 1 and newly == [0]
        # sent again: its first range duplicates (adds nothing), its second judged early, as exactly (no
        # transaction); the early check judged the first range, found nothing new and let it take the writer
        taken = []
        exact = st._ingest
        monkeypatch.setattr(st, "_ingest", lambda *a, **k: taken.append(1) or exact(*a, **k))
        newly = []
        with pytest.raises(TenantQuotaExceeded, match=r"this batch \(600 bytes"):
            st.ingest("gw2", ranged, tenant="acme", newly=newly)
        assert taken == [] and newly == [] and st.stats("gw2", tenant="acme")["records"] == 1
        monkeypatch.setattr(st, "_ingest", exact)
        with pytest.raises(TenantQuotaExceeded, match=r"this batch \(600 bytes.*nothing of it was stored"):
            st.ingest("gw3", ranged, tenant="acme")  # first range past the quota: refused early, as exactly
        assert st.stats("gw3", tenant="acme")["records"] == 0
    finally:
        st.close()


def test_an_older_fleet_db_gets_the_tenants_record_bytes_quota_and_keeps_its_quotas(tmp_path):
    """A fleet.db from before ``max_record_bytes_per_day``: its tables gain the quota (0: no limit) and the day's
    record bytes (0), its quotas and usage of the day are kept, and its batches are counted from then on."""
    import sqlite3

    from cloud_trainer.fleet.store import utc_day

    db = sqlite3.connect(tmp_path / "fleet.db")
    db.executescript(
        """CREATE TABLE tenant_quotas (tenant TEXT PRIMARY KEY, max_agents BIGINT NOT NULL DEFAULT 0,
  max_records_per_day BIGINT NOT NULL DEFAULT 0, max_sample_bytes_per_day BIGINT NOT NULL DEFAULT 0);
CREATE TABLE tenant_usage (tenant TEXT NOT NULL, day INTEGER NOT NULL, records BIGINT NOT NULL DEFAULT 0,
  sample_bytes BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (tenant, day));
INSERT INTO tenant_quotas VALUES ('acme', 2, 10, 500);"""
    )
    db.execute("INSERT INTO tenant_usage VALUES ('acme', ?, 4, 60)", (utc_day(),))
    db.commit()
    db.close()
    store = SQLiteStore(tmp_path / "fleet.db")
    try:
        assert store.quotas()["acme"] == {
            "max_agents": 2,
            "max_records_per_day": 10,
            "max_sample_bytes_per_day": 500,
            "max_record_bytes_per_day": 0,
            "records_today": 4,
            "sample_bytes_today": 60,
            "record_bytes_today": 0,
        }
        store.set_quota("acme", max_record_bytes_per_day=100)
        assert store.ingest("gw1", [rec(1, payload_bytes=80)], tenant="acme")[1] == 1
        with pytest.raises(TenantQuotaExceeded, match="bytes of records"):
            store.ingest("gw1", [rec(2, payload_bytes=80)], tenant="acme")
        assert store.quotas()["acme"]["record_bytes_today"] == 80
    finally:
        store.close()


def _sample(seq: int, data: bytes, payload: str = '{"model": "m"}') -> dict:
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    return rec(
        seq,
        kind="sample",
        payload=payload,
        sample_sha256=digest,
        sample_ext=".png",
        sample_bytes=len(data),
        sample_data=data,
    )


def test_sample_bytes_reach_the_blob_store_only_for_records_stored_now_and_within_quota(store, tmp_path):
    from cloud_trainer.blobs import LocalBlobStore

    blobs = LocalBlobStore(tmp_path / "blobs").for_tenant("acme")

    def files() -> list[str]:
        root = blobs.root / "sha256"
        return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []

    store.set_quota("acme", max_sample_bytes_per_day=100)
    first = _sample(1, b"a" * 60)
    assert store.ingest("gw1", [first], tenant="acme", blobs=blobs)[1:] == (1, 0)
    assert files() == [first["sample_sha256"]] and blobs.get_bytes(first["sample_sha256"]) == b"a" * 60
    # a replay of a stored seq, with other bytes: a duplicate, nothing written, nothing charged
    assert store.ingest("gw1", [_sample(1, b"b" * 60)], tenant="acme", blobs=blobs)[1:] == (0, 1)
    # a batch past the quota: refused whole, not one byte written
    with pytest.raises(TenantQuotaExceeded):
        store.ingest("gw1", [rec(2), _sample(3, b"c" * 60)], tenant="acme", blobs=blobs)
    # malformed records: ValueError before anything is stored or written, in every store
    for bad in (
        _sample(4, b"d" * 10, payload="[1]"),
        _sample(4, b"d" * 10, payload="not json"),
        rec(2**63),
        rec(4, epoch=2**63),
        rec(-1),
    ):
        with pytest.raises(ValueError):
            store.ingest("gw1", [rec(5), bad], tenant="acme", blobs=blobs)
    assert files() == [first["sample_sha256"]]
    assert (
        store.stats("gw1", tenant="acme")["records"] == 1
        and store.quotas()["acme"]["sample_bytes_today"] == 60
    )
    # the largest seq and epoch the stores hold are stored
    assert store.ingest("gw1", [rec(2**63 - 1, epoch=2**63 - 1)], tenant="acme")[1] == 1


def test_sample_metadata_and_fields_the_columns_cannot_hold_are_a_value_error_naming_them(store, monkeypatch):
    """A sample's metadata field that becomes a column (label, model, ...) as a list, an object, a number, a
    10-MB string or text with NUL, a record's time that is NaN: once a database error (SQLite: "type 'list' is
    not supported") that the service answered UNKNOWN, which the agent retries forever. Now a ValueError
    naming the field, nothing stored, in every store; and a value the database itself refuses (the checks
    bypassed) is a ValueError naming the record, never the database's own exception."""
    from cloud_trainer.fleet import store as store_mod

    good = _sample(1, b"a", payload=json.dumps({"label": None, "model": "m", "reason": "ng"}))
    cases = [
        ({"label": ["a"]}, "'label' must be a string, not list"),
        ({"model": {"a": 1}}, "'model' must be a string, not dict"),
        ({"verdict": 1.5}, "'verdict' must be a string, not float"),
        ({"model_version": True}, "'model_version' must be a string, not bool"),
        ({"label": "y" * 10_000_000}, "'label' is 10000000 characters long, at most 1024"),
        ({"pipeline": "a\x00b"}, "'pipeline' must not contain NUL"),
    ]
    for meta, why in cases:
        with pytest.raises(ValueError, match=why):
            store.ingest("gw1", [rec(5), _sample(4, b"d", payload=json.dumps(meta))], tenant="acme")
    for bad, why in (
        (rec(4, t=float("nan")), "t nan is not a finite number"),
        (rec(4, kind="res\x00ult"), "kind must not contain NUL"),
        (rec(4, payload='{"a": "\x00"}'), "payload must not contain NUL"),
    ):
        with pytest.raises(ValueError, match=why):
            store.ingest("gw1", [rec(5), bad], tenant="acme")
    assert store.stats("gw1", tenant="acme")["records"] == 0
    assert store.ingest("gw1", [good], tenant="acme")[1] == 1
    assert [(s["label"], s["model"]) for s in store.samples(tenant="acme")] == [(None, "m")]
    # the database refuses what the checks would have: a ValueError naming the record, the batch rolled back
    monkeypatch.setattr(
        store_mod, "check_record", lambda r: json.loads(r["payload"]) if r["sample_sha256"] else None
    )
    # (PostgreSQL would store the list ["a"] as the text '{a}', SQLite a NUL character: no error to test there)
    own = [{"label": ["a"]}] if isinstance(store, SQLiteStore) else [{"label": "a\x00b"}]
    for meta in [{"model": {"a": 1}}, *own]:
        with pytest.raises(ValueError, match="record seq 7 .*the store cannot hold it") as refused:
            store.ingest(
                "gw1", [rec(6, sample_sha256=""), _sample(7, b"e", payload=json.dumps(meta))], tenant="acme"
            )
        # the agent is told the error's type and an id, never the database's own words (its tables, columns,
        # constraints); the service's log has them under that id
        own_words = str(refused.value.__cause__).strip().splitlines()[0]
        assert own_words and own_words not in str(refused.value)
        assert re.search(r"error id [0-9a-f]{10}, in the service's log\)$", str(refused.value))
    if isinstance(store, SQLiteStore):  # SQLite keeps NaN as NULL (NOT NULL fails); PostgreSQL holds NaN
        with pytest.raises(ValueError, match="record seq 8 .*the store cannot hold it"):
            store.ingest("gw1", [rec(8, t=float("nan"), sample_sha256="")], tenant="acme")
    assert store.stats("gw1", tenant="acme")["records"] == 1


def test_samples_with_a_limit_are_the_newest_read_through_an_index_oldest_first(store):
    """The console asks for the newest 200 samples every 3 s: the store once read every sample row of the tenant
    (the caller kept the last 200), holding the SQLite store's lock for seconds at 300k samples. Now the limit
    is in the query: the same rows as ``samples(...)[-limit:]``, at most ``limit`` of them."""
    order = [7, 2, 9, 1, 5, 3, 8, 4, 6, 10]  # arrival order differs from time order
    batch = [
        _sample(s, b"s%d" % s, payload=json.dumps({"model": "m" if s % 2 else "n", "reason": "ng"}))
        for s in order
    ]
    for r in batch:
        r["t"] = 1000.0 + r["seq"]
    store.ingest("gw1", batch, tenant="acme")
    other = _sample(3, b"x", payload='{"model": "m"}')
    store.ingest("gw2", [{**other, "t": 1003.5}], tenant="acme")  # another agent's, between gw1's seq 3 and 4
    store.ingest("gw1", [_sample(11, b"y", payload='{"model": "m"}')])  # another tenant's: never counted
    every = store.samples(tenant="acme")
    assert [(s["t"], s["seq"]) for s in every] == sorted((s["t"], s["seq"]) for s in every)
    for kw in ({}, {"model": "m"}, {"model": "n", "reason": "ng"}, {"since": 1003.0}):
        full = store.samples(tenant="acme", **kw)
        for limit in (0, 1, 3, 100):
            got = store.samples(tenant="acme", limit=limit, **kw)
            assert len(got) == min(limit, len(full)) and got == (full[-limit:] if limit else []), (kw, limit)
    assert [(s["agent"], s["seq"]) for s in store.samples(model="m", tenant="acme", limit=2)] == [
        ("gw1", 7),
        ("gw1", 9),
    ]
    with pytest.raises(ValueError, match="limit"):
        store.samples(tenant="acme", limit=-1)


def test_record_counts_are_filled_from_the_records_of_an_older_store(store, tmp_path):
    """Stats and gaps come from per-epoch counts kept at ingest; a file or database from before them has its
    counts filled from the records it holds when it is opened (SQLite) or migrated (PostgreSQL)."""
    store.ingest("gw1", [rec(s) for s in (1, 2, 3, 7)] + [rec(4, kind="event")], tenant="acme")
    store.ingest("gw1", [rec(s, epoch=3) for s in (2, 3)], tenant="acme")
    store.ingest("gw1", [rec(1)], tenant="acme")  # a duplicate: counted once
    before = (store.stats("gw1", tenant="acme"), store.gaps("gw1", tenant="acme"), store.usage())
    assert before[0]["records"] == 7 and before[0]["by_kind"] == {"result": 6, "event": 1}
    assert before[1][:2] == [
        {"epoch": 0, "first": 5, "last": 6, "cause": "unknown"},
        {"epoch": 0, "first": 8, "last": 0, "cause": "epoch_change"},
    ]
    if isinstance(store, SQLiteStore):
        store.db.execute("DROP TABLE record_counts")
        store.close()
        older = SQLiteStore(tmp_path / "fleet.db")
    else:
        import psycopg

        store.close()
        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute("DROP TABLE record_counts")
            # a database from before 0007 (the later migrations are applied again: they are idempotent)
            conn.execute("DELETE FROM schema_version WHERE version >= 7")
        older = open_store(store.url, tmp_path)
    try:
        assert (older.stats("gw1", tenant="acme"), older.gaps("gw1", tenant="acme"), older.usage()) == before
    finally:
        older.close()


def test_a_sqlite_store_closed_twice_waits_for_no_reader_the_second_time(tmp_path, caplog):
    """A second ``close`` (a caller's, then a fixture's or the service's stop) has nothing left to wait for: it
    waited its whole ``wait_s`` for readers the first one had closed, and said they were left open."""
    st = SQLiteStore(tmp_path / "fleet.db")
    st.close()
    with caplog.at_level("WARNING", logger=store_module.log.name):
        st.close(wait_s=0.5)
    assert "left open" not in caplog.text


def test_a_read_of_a_closed_sqlite_store_is_refused_at_once(tmp_path):
    """A read after ``close`` (a console or stats call reaching the store after the service's stop) waited for ever
    for a reader the close had taken out, holding the gate every later read and close waits at."""
    import sqlite3
    import threading

    st = SQLiteStore(tmp_path / "fleet.db")
    st.close()
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            st.stats()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), "the read after close still waits"
    assert isinstance(outcome[0], sqlite3.ProgrammingError) and "closed" in str(outcome[0]), outcome
    st.close(wait_s=0.5)  # a later close finds the gate free


def test_a_state_report_the_store_cannot_hold_is_a_value_error_and_refuses_its_batch(store):
    for depth in (2**63, 2**64 - 1, -1):
        with pytest.raises(ValueError, match="outbox_depth"):
            store.heartbeat("gw1", {}, [], {}, depth, {}, tenant="acme")
        with pytest.raises(ValueError, match="outbox_depth"):
            store.heartbeat_many(
                [
                    ("beta", "gw-b", {"v": "1"}, [], {}, 0, {}, 1.0),
                    ("acme", "gw1", {}, [], {}, depth, {}, 1.0),
                ]
            )
    assert store.agents(tenant="acme") == [] and store.agents(tenant="beta") == []
    store.heartbeat("gw1", {}, [], {}, 2**63 - 1, {}, tenant="acme")
    assert store.agents(tenant="acme")[0]["outbox_depth"] == 2**63 - 1


def test_postgres_migrations_are_versioned_applied_once_and_a_newer_schema_is_refused(postgres_url, tmp_path):  # noqa: F811
    import psycopg

    from cloud_trainer.fleet.store_pg import MigrationError, migrate, migration_files

    st = open_store(postgres_url, tmp_path)
    st.ingest("gw1", [rec(1)])
    st.close()
    st = open_store(postgres_url, tmp_path)  # a second start: nothing applied again, nothing lost
    assert st.stats("gw1")["records"] == 1
    st.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        rows = conn.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
        assert rows == [(v, p.name) for v, p in migration_files()]
        assert migrate(conn) == []
        conn.execute("INSERT INTO schema_version VALUES (999, '0999_future.sql', 0)")
        with pytest.raises(MigrationError, match="newer than this code"):
            migrate(conn)
    bad = tmp_path / "m"
    bad.mkdir()
    (bad / "0002_x.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="without holes"):
        migration_files(bad)


def test_a_start_waiting_for_the_migrations_lock_says_who_holds_it(
    postgres_url,  # noqa: F811
    tmp_path,
    monkeypatch,
    caplog,
):
    """A start waited for the migrations' lock for ever without a word (a replica upgrading, an admin's session
    holding it): past ``LOCK_WAIT_WARN_S`` a WARNING names the holder's pid and application, and the start goes on
    once it is let go. The holder named is this database's: another database of the cluster holding that key (another
    fleet store's own upgrade) was named instead."""
    import threading

    import psycopg

    from cloud_trainer.fleet import store_pg

    monkeypatch.setattr(store_pg, "LOCK_WAIT_WARN_S", 0.2)
    (tmp_path / "0001_x.sql").write_text("CREATE TABLE x (a INT)")
    done: list = []
    other_db = postgres_url.rsplit("/", 1)[0] + "/postgres"
    with (
        psycopg.connect(other_db, autocommit=True, application_name="other-fleet") as other,
        psycopg.connect(postgres_url, autocommit=True, application_name="admin-psql") as holder,
    ):
        other.execute("SELECT pg_advisory_lock(%s)", (store_pg._LOCK_KEY,))
        pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]
        holder.execute("SELECT pg_advisory_lock(%s)", (store_pg._LOCK_KEY,))

        def starting() -> None:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                done.append(store_pg.migrate(conn, tmp_path))

        start = threading.Thread(target=starting)
        with caplog.at_level("WARNING", logger="cloud_trainer.fleet.store"):
            start.start()
            for _ in range(200):
                if "migrations' lock" in caplog.text or not start.is_alive():
                    break
                threading.Event().wait(0.05)
            assert not done
            holder.execute("SELECT pg_advisory_unlock(%s)", (store_pg._LOCK_KEY,))
            start.join(30)
    assert done == [[1]]
    assert f"held by pid {pid} (admin-psql" in caplog.text
    assert "other-fleet" not in caplog.text


def test_a_lock_timeout_in_the_store_url_ends_a_starts_wait_for_the_migrations_lock(postgres_url):  # noqa: F811
    """A ``lock_timeout`` in the store URL ended a start's wait for the migrations' lock while that was a
    ``pg_advisory_xact_lock``; taken by tries since, the start waited for ever. It ends it again: an error (``serve``
    exits 2 saying it) naming the session that holds the lock."""
    import psycopg

    from cloud_trainer.fleet import store_pg

    url = f"{postgres_url}?options=-c%20lock_timeout%3D300&application_name=starting"
    with psycopg.connect(postgres_url, autocommit=True, application_name="admin-psql") as holder:
        pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]
        holder.execute("SELECT pg_advisory_lock(%s)", (store_pg._LOCK_KEY,))
        with pytest.raises(
            store_pg.MigrationError, match=rf"lock_timeout \(300 ms\): it is held by pid {pid} \(admin"
        ):
            store_pg.PostgresStore(url)
        assert holder.execute("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'records'").fetchone()[0] == 0


def test_a_migration_statement_waiting_past_the_urls_lock_timeout_is_a_migration_error_naming_the_file(
    postgres_url,  # noqa: F811
    tmp_path,
):
    """The URL's ``lock_timeout`` (docs: it ends a start's wait for the migrations' lock) ends a migration statement's
    wait too: an index built CONCURRENTLY waits for every transaction open before it (an older replica's write). That
    start said "cannot connect ... check the URL"; it says which migration waited, and the next start builds the index
    the stopped build left invalid."""
    import psycopg

    from cloud_trainer.fleet.store_pg import MigrationError, migrate

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "0001_t.sql").write_text("CREATE TABLE t (a INTEGER)")
    with psycopg.connect(postgres_url, autocommit=True) as conn, psycopg.connect(postgres_url) as writing:
        assert migrate(conn, folder) == [1]
        writing.execute("INSERT INTO t VALUES (1)")  # (its transaction open)
        (folder / "0002_t_by_a.sql").write_text(
            "-- migrate: outside a transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_by_a ON t (a)"
        )
        conn.execute("SET lock_timeout = 300")
        with pytest.raises(
            MigrationError, match=r"migration 0002_t_by_a\.sql waited past the connection's lock_t"
        ):
            migrate(conn, folder)
        writing.commit()
        assert migrate(conn, folder) == [2]
        valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_by_a'::regclass"
        assert conn.execute(valid).fetchone()[0] is True


def test_a_migration_statement_the_urls_statement_timeout_cancels_is_a_migration_error_naming_the_file(
    postgres_url,  # noqa: F811
    tmp_path,
):
    """A ``statement_timeout`` of the connection (the URL's, the role's: common on a managed database) shorter than a
    migration cancels it at every start: that start said "cannot connect ... check the URL"; it says which migration
    and how to start once past it."""
    import psycopg

    from cloud_trainer.fleet.store_pg import MigrationError, migrate

    (tmp_path / "0001_slow.sql").write_text("SELECT pg_sleep(5)")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = 100")
        with pytest.raises(
            MigrationError, match=r"migration 0001_slow\.sql was canceled \(.*statement timeout"
        ):
            migrate(conn, tmp_path)


def test_postgres_connections_give_up_a_dead_path_instead_of_waiting_for_ever(postgres_url, tmp_path):  # noqa: F811
    """A path to the database that dies without a word (a NAT or firewall between the service and a managed
    database that timed the flow out) held a query for ~15 min of retransmissions, or for ever waiting for an
    answer: libpq sets no keepalive. Every connection of the store's pool and the control's own one now has
    TCP keepalives and a user timeout on its socket (read back from the kernel); a URL's own choice is kept."""
    import socket

    from cloud_trainer.fleet.control import Control

    def opts(conn) -> tuple[int, int, int]:
        s = socket.socket(fileno=socket.dup(conn.fileno()))
        try:
            return (
                s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            )
        finally:
            s.close()

    st = open_store(postgres_url, tmp_path)
    try:
        with st.pool.connection() as conn:
            assert opts(conn) == (1, 30, 60_000)
    finally:
        st.close()
    control = Control(postgres_url, None, None)
    assert opts(control.db.conn) == (1, 30, 60_000)
    control.db.conn.close()
    sep = "&" if "?" in postgres_url else "?"
    st = open_store(f"{postgres_url}{sep}keepalives_idle=7&tcp_user_timeout=9000", tmp_path)
    try:
        with st.pool.connection() as conn:
            assert opts(conn) == (1, 7, 9000)
    finally:
        st.close()


def test_postgres_that_is_not_there_is_one_clear_error(tmp_path):
    from tests.support.peers import free_port

    with pytest.raises(
        ConnectionError, match=r"fleet store postgresql://fleet:\*\*\*@127.0.0.1:\d+/x: cannot connect"
    ):
        open_store(f"postgresql://fleet:secret@127.0.0.1:{free_port()}/x", tmp_path)
    with pytest.raises(ValueError, match="expected a postgresql:// URL"):
        open_store("mysql://x", tmp_path)


def test_a_record_at_the_largest_seq_never_stops_the_agents_next_epoch(store):
    """A record numbered 2^63-1 (the largest seq the stores hold) ended its epoch at that seq: the agent's next epoch
    made the store record "lost from 2^63" and fail on the overflow, so every later batch of the agent was refused
    (INVALID_ARGUMENT) and the agent dropped each of its records as refused, for good."""
    top = 2**63 - 1
    assert store.ingest("gw9", [rec(1), rec(3), rec(top)])[1:] == (3, 0)
    assert store.gaps("gw9") == [
        {"epoch": 0, "first": 2, "last": 2, "cause": "unknown"},
        {"epoch": 0, "first": 4, "last": top - 1, "cause": "unknown"},
    ]
    assert store.ingest("gw9", [rec(1, epoch=1), rec(2, epoch=1)])[1:] == (2, 0)
    assert store.ingest("gw9", [rec(3, epoch=1)])[1:] == (1, 0)
    assert store.stats("gw9")["records"] == 6
    assert [g["epoch"] for g in store.gaps("gw9")] == [0, 0]  # nothing can follow 2^63-1: no end-of-epoch gap


def test_an_event_nested_past_the_json_parsers_depth_is_stored_like_any_other(store):
    """An event naming an outbox loss is read for its seq ranges; one nested deeper than the JSON parser goes raised
    RecursionError out of ``ingest``: the service answered UNAVAILABLE ("send it again"), so the agent sent the same
    batch forever and nothing behind it ever arrived."""
    deep = '{"kind": "outbox_budget", "ranges": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert store.ingest("gw9", [rec(1, kind="event", payload=deep), rec(2)])[1:] == (2, 0)
    assert store.stats("gw9")["records"] == 2 and store.gaps("gw9") == []


def test_a_sample_is_stored_under_a_known_kind_only_and_read_back_per_tenant(store):
    """Any extension of up to 32 characters was stored (`.html`, `../x`, control characters), and the console
    served every sample as a PNG. Now a sample's extension is one of ``SAMPLE_KINDS`` (any case, with or without
    the dot) or none, and ``sample_ext`` reads it back for the tenant holding the sample only."""
    for seq, ext in enumerate((".html", "../../x.png", ".svg", ".png\n", "x" * 32), 1):
        with pytest.raises(
            ValueError, match=f"sample seq {seq}: its sample_ext .* is no kind the fleet takes"
        ):
            store.ingest("gw1", [rec(seq, kind="sample", sample_sha256=f"{seq:064x}", sample_ext=ext)])
    assert store.stats("gw1")["records"] == 0
    ok = [(".npy", "a1"), ("PNG", "a2"), (".JFIF", "a3"), ("", "a4")]
    store.ingest(
        "gw1",
        [rec(i, kind="sample", sample_sha256=sha * 32, sample_ext=e) for i, (e, sha) in enumerate(ok, 1)],
        tenant="acme",
    )
    assert [store.sample_ext(sha * 32, tenant="acme") for _, sha in ok] == [".npy", "PNG", ".JFIF", ""]
    assert (
        store.sample_ext("a1" * 32, tenant="beta") is None
        and store.sample_ext("ff" * 32, tenant="acme") is None
    )


def test_a_new_epoch_below_the_agents_current_one_ends_it_and_becomes_current(store):
    """A re-flashed gateway whose clock was never set takes a random epoch below the one its old card had from a
    set clock. Before, only a higher epoch was taken as current: the old epoch's end (the records the dead card
    held) was never a gap and the stats kept naming it. An epoch never stored for the agent is its newer outbox,
    whatever its value; a replay of an epoch already stored changes nothing."""
    old, new = 1_796_600_000, 500_000_000
    store.ingest("gw1", [rec(s, epoch=old) for s in range(1, 11)])  # 11.. died with the card
    assert store.ingest("gw1", [rec(s, epoch=new) for s in (1, 2, 3)])[1:] == (3, 0)
    ended = [{"epoch": old, "first": 11, "last": 0, "cause": "epoch_change"}]
    assert store.gaps("gw1") == ended
    assert (store.stats("gw1")["epoch"], store.stats("gw1")["last_seq"]) == (new, 3)
    assert store.ingest("gw1", [rec(10, epoch=old), rec(4, epoch=new)])[1:] == (1, 1)  # the old one a replay
    assert store.gaps("gw1") == ended
    assert (store.stats("gw1")["epoch"], store.stats("gw1")["last_seq"]) == (new, 4)


def test_the_late_first_batch_of_an_outbox_a_renewal_ended_stays_a_replay(store):
    """An outbox renewed while running (a corrupt file) after its first batch's ack timed out, while the service
    still held that batch: the renewed outbox's first batch, its outbox_corrupt event naming the old epoch, stored
    before it. The old epoch, never stored, was taken as the agent's current one for good, and the live epoch shown
    lost after its last seq although its next records were stored."""
    old, new = 1_796_600_000_000_000, 1_796_600_000_500_000
    corrupt = json.dumps({"kind": "outbox_corrupt", "previous_epoch": old})
    store.ingest("gw1", [rec(1, epoch=new, kind="event", payload=corrupt), rec(2, epoch=new)])
    assert store.ingest("gw1", [rec(1, epoch=old), rec(2, epoch=old)])[1:] == (2, 0)  # the late one
    store.ingest("gw1", [rec(3, epoch=new)])
    assert (store.stats("gw1")["epoch"], store.stats("gw1")["last_seq"]) == (new, 3)
    assert [g for g in store.gaps("gw1") if g["epoch"] == new] == []


def test_a_state_report_whose_strings_hold_a_nul_is_written_and_fails_no_other_agents_report(store):
    """PostgreSQL's jsonb refuses a NUL (``\\u0000`` in the outbox's JSON text: a dropped kind, a config reason):
    the run-order condition's reading of the row's number failed the write, every report of a flush with it (other
    agents' too), and, for a row written before that condition, every later report of the agent. Such a row is read
    as holding no number: written as it comes, on either path."""
    import time

    def outbox(seq: int, kind: str = "mqtt") -> dict:
        return {"epoch": 1, "dropped": {kind: 1}, "report": {"boot": "r", "seq": seq}}

    store.heartbeat("gw1", {}, [], {}, 0, outbox(1))
    store.heartbeat("gw2", {}, [], {}, 0, outbox(1, "a\x00b"))
    store.heartbeat_many(
        [
            ("default", "gw1", {"n": "2"}, [], {}, 0, outbox(2), time.time()),
            ("default", "gw2", {"n": "2"}, [], {}, 0, outbox(2, "a\x00b"), time.time()),
        ]
    )
    store.heartbeat("gw2", {"n": "3"}, [], {}, 0, outbox(3))
    assert {a["id"]: a["labels"] for a in store.agents()} == {"gw1": {"n": "2"}, "gw2": {"n": "3"}}


def test_a_state_report_whose_strings_hold_a_nul_keeps_its_runs_order(store):
    """A NUL in an agent's outbox strings (a config reason quoting a bad file) is kept as U+FFFD: on PostgreSQL the
    row was read as holding no report number (jsonb refuses a NUL), so report 3 of a run, held on the way, was
    written over report 5 and a gateway restored mid-run was never told late, while SQLite kept the order."""

    def outbox(seq: int) -> dict:
        reason = "line 3: a\x00b"
        return {"epoch": 1, "dropped": {}, "report": {"boot": "r", "seq": seq}, "config": {"reason": reason}}

    store.heartbeat("gw1", {"n": "5"}, [], {}, 0, outbox(5))
    store.heartbeat("gw1", {"n": "3"}, [], {}, 0, outbox(3))
    assert store.agents()[0]["labels"] == {"n": "5"}  # was, on PostgreSQL: {"n": "3"}
    assert store.report_held("gw1") == ("r", 5)
    assert store.agents()[0]["outbox"]["config"]["reason"] == "line 3: a\ufffdb"


def test_the_report_number_an_agents_row_holds_is_read_without_a_writers_turn(tmp_path):
    """The fleet reads it at every unary heartbeat of a run it knows: on SQLite it took the writer's turn, which the
    heartbeat's own write takes too (two turns each, behind every batch's range). Read on the lookups' connection,
    it is answered while a write holds the writer."""
    import threading

    store = SQLiteStore(tmp_path / "fleet.db")
    try:
        store.heartbeat("gw1", {}, [], {}, 0, {"report": {"boot": "r", "seq": 5}})
        got: list = []
        store.lock.acquire()  # a write under way
        try:
            reader = threading.Thread(target=lambda: got.append(store.report_held("gw1")), daemon=True)
            reader.start()
            reader.join(5)
            assert got == [("r", 5)]  # was: waiting for the writer
        finally:
            store.lock.release()
            reader.join(5)
    finally:
        store.close()


def test_a_state_report_of_a_run_numbered_at_or_below_the_one_its_row_holds_is_not_written_over_it(store):
    """A replica ordered an agent's state reports by its own memory only: one restarted (or another replica) wrote
    report 3 of a run, held on the way, over report 5 of the same run. The row keeps the last number taken of its
    run, and a report of that run numbered at or below it is not written, on either path; a report of another run
    (ordered by the control state) and one without a number (an older agent) are written as they come."""

    import time

    def report(version: str, boot: str = "", seq: int = 0, many: bool = False) -> None:
        outbox = {"epoch": 1, "dropped": {}} | ({"report": {"boot": boot, "seq": seq}} if boot else {})
        slots = [{"slot": "vision", "version": version}]
        if many:
            store.heartbeat_many([("default", "gw1", {}, slots, {}, 0, outbox, time.time())])
        else:
            store.heartbeat("gw1", {}, slots, {}, 0, outbox)

    def runs() -> str:
        return store.agents()[0]["slots"][0]["version"]

    report("1.0.0", "runA", 1)
    report("1.2.0", "runA", 5)
    report("1.1.0", "runA", 3)  # made before 5, held on the way
    assert runs() == "1.2.0"  # was: 1.1.0
    report("1.1.0", "runA", 4, many=True)  # the streams' write alike
    assert runs() == "1.2.0"
    report("1.3.0", "runA", 6, many=True)
    assert runs() == "1.3.0"
    # what a process meeting run A reads (FleetServicer._fresh)
    assert store.report_held("gw1") == ("runA", 6)
    report("1.0.0", "runB", 1)  # a new run (the control state said it is the newest)
    assert runs() == "1.0.0"
    report("1.4.0")  # an older agent's report, without a number
    assert runs() == "1.4.0"
    assert store.report_held("gw1") is None and store.report_held("gw9") is None

    # a stream's report of a run its process took before: written only over its own run or none (10th item), those
    # refused named with the row's run (``Reports.other``), in the write itself (it read the row before, a report)
    def one_run(version: str, boot: str, seq: int, over: str | bool = True) -> list:
        outbox = {"epoch": 1, "dropped": {}, "report": {"boot": boot, "seq": seq}}
        slots = [{"slot": "vision", "version": version}]
        return store.heartbeat_many(
            [("default", "gw1", {}, slots, {}, 0, outbox, time.time(), False, over)]
        ).other

    assert one_run("1.5.0", "runC", 1) == [] and runs() == "1.5.0"  # a row without a number
    assert one_run("1.6.0", "runC", 2) == [] and runs() == "1.6.0"
    assert one_run("1.0.0", "runB", 9) == [("default", "gw1", "runC")]  # another run's row: refused
    assert one_run("1.0.0", "runC", 2) == [("default", "gw1", "runC")]  # its own run's, as far
    assert runs() == "1.6.0"
    # or over the run named too (one its service found to have begun before it), on either path, in the write itself
    assert one_run("1.0.0", "runD", 1, over="runB") == [("default", "gw1", "runC")] and runs() == "1.6.0"
    assert one_run("1.7.0", "runD", 1, over="runC") == [] and runs() == "1.7.0"

    def unary(version: str, boot: str, seq: int, over: str) -> bool:
        outbox = {"epoch": 1, "dropped": {}, "report": {"boot": boot, "seq": seq}}
        return store.heartbeat("gw1", {}, [{"slot": "vision", "version": version}], {}, 0, outbox, over=over)

    assert not unary("1.0.0", "runE", 1, over="runC") and runs() == "1.7.0"  # the row holds run D
    assert not unary("1.0.0", "runE", 1, over="") and runs() == "1.7.0"
    assert unary("1.8.0", "runE", 1, over="runD") and runs() == "1.8.0"
    assert unary("1.9.0", "runE", 2, over="") and runs() == "1.9.0"


def test_the_loss_index_is_built_while_an_older_replica_writes_gaps(postgres_url, tmp_path):  # noqa: F811
    """Migration 0022 built its index inside the migration's transaction: its SHARE lock, waiting for a write under
    way and then held for the build, stopped every later write to ``gaps`` (2.7 s at 2 M rows; an older replica's
    batches refused after their 2 s lock wait). Built CONCURRENTLY outside a transaction, writes go on."""
    import psycopg

    from tests.support.postgres import upgrade_beside_an_open_write

    row = "INSERT INTO gaps (tenant, agent, epoch, first, last, cause, t) VALUES ('default', %s, 1, 1, 2, 'budget', 1)"
    applied, _ = upgrade_beside_an_open_write(postgres_url, tmp_path, 22, row, "gaps_losses_by_t")
    assert 22 in applied
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        valid = admin.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = 'gaps_losses_by_t'"
        ).fetchone()
        assert valid == (True,)
        assert admin.execute("SELECT count(*) FROM gaps").fetchone()[0] == 2
