"""The outbox's in-memory counts (``stats()`` reads no table) against a real ``GROUP BY`` on its SQLite file,
after a mixed sequence of appends, commits, acks, budget and retention drops, refusals and restarts."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections import Counter

from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from tests.support.sqlite_trace import traced_statements


def table_counts(ob: Outbox) -> dict:
    con = sqlite3.connect(ob.path)
    try:
        rows = con.execute(
            "SELECT kind, priority, COUNT(*), MIN(seq) FROM records GROUP BY kind, priority"
        ).fetchall()
    finally:
        con.close()
    by_kind: Counter = Counter()
    by_prio: Counter = Counter()
    for kind, prio, n, _ in rows:
        by_kind[kind] += n
        by_prio[prio] += n
    return {
        "by_kind": dict(by_kind),
        "by_priority": dict(by_prio),
        "depth": sum(by_kind.values()),
        "oldest_seq": min((r[3] for r in rows), default=None),
    }


def assert_exact(ob: Outbox) -> None:
    """The counts equal the table's. The writer may commit the outbox's own drop event meanwhile: the table
    is read between two equal readings of the counts."""
    keys = ("by_kind", "by_priority", "depth", "oldest_seq")
    for _ in range(100):
        before = {k: ob.stats()[k] for k in keys}
        table = table_counts(ob)
        if before == {k: ob.stats()[k] for k in keys}:
            assert before == table
            return
    raise AssertionError("the outbox never stood still")


def test_stats_counts_equal_a_group_by_after_appends_acks_drops_refusals_and_restarts(tmp_path):
    settings = OutboxSettings(max_bytes=300_000, commit_interval_ms=5)
    ob = Outbox(settings, tmp_path)
    ob.open()
    assert_exact(ob)  # empty
    for i in range(30):
        ob.append("event", {"i": i})
        ob.append("result", {"i": i, "pad": "r" * 50})
        ob.append("telemetry", {"i": i})
        ob.append("alarm", {"i": i}, priority=0)
    ob.flush()
    assert_exact(ob)
    # the uplink's way: acks by priority, the oldest among them, and seqs already gone or never given
    first = [r.seq for r in ob.pending(25)]
    assert ob.ack(first + [first[0], 10_000]) == 25
    assert_exact(ob)
    assert ob.ack([r.seq for r in ob.pending(200) if r.kind == "result"][:7]) == 7
    assert_exact(ob)
    assert ob.refuse([r.seq for r in ob.pending(200) if r.kind == "telemetry"][:3]) == 3
    ob.flush()
    assert_exact(ob)
    ob.close()

    ob = Outbox(settings, tmp_path)  # rebuilt once at open
    ob.open()
    assert_exact(ob)
    # past the budget: samples are dropped first (budget), while results keep coming
    for i in range(120):
        ob.append("sample", {"i": i}, sample=os.urandom(3000), sample_ext=".png")
        ob.append("result", {"j": i})
    ob.flush()
    ob.flush()
    assert ob.dropped.get("budget:sample", 0) > 0
    assert_exact(ob)
    ob.close()

    # retention: old results go at the next commit, counted out of memory too
    ob = Outbox(OutboxSettings(retention={"result": {"max_age_s": 0.001}}, commit_interval_ms=5), tmp_path)
    ob.open()
    assert_exact(ob)
    for i in range(2):  # the second commit comes after the first writer round's retention
        ob.append("event", {"after": i})
        ob.flush()
    assert ob.dropped.get("retention:result", 0) > 0
    assert_exact(ob)
    assert ob.stats()["by_kind"].get("result", 0) == 0
    assert ob.ack([r.seq for r in ob.pending(10_000, 10**9)]) > 0  # drained to empty
    ob.flush()
    assert_exact(ob)
    ob.close()
    ob = Outbox(settings, tmp_path)
    ob.open()
    assert_exact(ob)
    ob.close()


def test_a_full_outbox_never_reads_its_whole_table_while_running(tmp_path, monkeypatch):
    """Every statement the outbox runs after open (idle rounds, retention, budget drops, sending, acks of
    samples) reads a range of an index, or at most a LIMIT's worth of rows: formerly retention scanned the
    whole table twice every 50 ms, the budget's victim query sorted it, and every acked or dropped sample
    scanned it for other references (at 1M records ~360 ms each: a core pinned, a drain crawling)."""

    ob = Outbox(OutboxSettings(max_bytes=2_000_000, commit_interval_ms=5, commit_batch=2000), tmp_path)
    ob.open()
    for i in range(3000):
        ob.append("result", {"i": i})
        if i % 10 == 0:
            ob.append("sample", {"i": i}, sample=os.urandom(64) + bytes([i % 256]), sample_ext=".png")
    ob.flush()
    ob.close()

    statements = traced_statements(monkeypatch)
    ob = Outbox(OutboxSettings(max_bytes=400_000, commit_interval_ms=5), tmp_path)
    ob.open()
    statements.clear()  # what open() reads once is not the point
    for i in range(300):  # past the budget: samples are dropped, oldest first
        ob.append("sample", {"j": i}, sample=os.urandom(1000), sample_ext=".png")
    ob.flush()
    ob.flush()
    sent = ob.pending(500, 10**9)
    ob.ack([r.seq for r in sent])
    ob.flush()
    assert ob.dropped.get("budget:sample", 0) > 0 and ob.acked > 0
    ob.close()
    monkeypatch.undo()

    con = sqlite3.connect(ob.path)
    try:
        whole = []
        for sql in {s for s in statements if "records" in s}:
            if not sql.lstrip().upper().startswith(("SELECT", "DELETE", "UPDATE")):
                continue
            plan = [r[3] for r in con.execute("EXPLAIN QUERY PLAN " + sql, (None,) * sql.count("?"))]
            if any("TEMP B-TREE" in p for p in plan) or (
                any(p.startswith("SCAN records") for p in plan) and "LIMIT" not in sql.upper()
            ):
                whole.append((sql[:120], plan))
    finally:
        con.close()
    assert not whole, whole


def test_stats_read_across_the_last_acks_does_not_give_a_depth_without_an_oldest_seq(tmp_path, monkeypatch):
    """/status read while the uplink's acks empty the outbox: the counts were taken before the acks and the
    oldest seq read after them (none left). A depth with no oldest seq broke every reader comparing it."""
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path)
    ob.open()
    for i in range(5):
        ob.append("result", {"i": i})
    ob.flush()
    first = ob.stats()["oldest_seq"]
    ob.ack([first])  # the oldest gone: the next stats() reads MIN(seq) again
    real, state = ob._reading, {"raced": False}

    @contextlib.contextmanager
    def reading_after_the_last_acks(*a, **kw):
        if not state["raced"]:  # the uplink's acks land between the counts and the read
            state["raced"] = True
            ob.ack(list(range(first + 1, first + 5)))
        with real(*a, **kw) as db:
            yield db

    monkeypatch.setattr(ob, "_reading", reading_after_the_last_acks)
    st = ob.stats()
    assert state["raced"]
    assert (st["depth"], st["oldest_seq"]) == (0, None)
    assert_exact(ob)
    ob.close()
