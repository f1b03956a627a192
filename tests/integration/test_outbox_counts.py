"""The outbox's in-memory counts (``stats()`` reads no table) against a real ``GROUP BY`` on its SQLite file,
after a mixed sequence of appends, commits, acks, budget and retention drops, refusals and restarts."""

from __future__ import annotations

import os
import sqlite3
from collections import Counter

from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox


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
    ob.append("event", {"after": 1})
    ob.flush()
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
