"""What retention's pass, an agent's stats and its drop event cost the fleet store, against the former way in the same run.

- **A retention pass with nothing old enough** (the steady state between the deletions a pass makes): one agent at
  the day's most epochs (one each 10 s) for ``--epochs`` epochs (default 30 days, 259,200; PostgreSQL
  ``--pg-epochs``), one record each, received now; ``serve --retain-days 30``. ``current``: ``Store.retire`` steps
  until the pass ends (the epochs whose counts say they can hold records that old: none). ``former``: the former
  pass's reads, the same statements as 686a671e's ``retire`` made when nothing was old (a page of 256 epochs of
  ``record_counts`` at a time, then each epoch's lowest record).
- **An agent's stats with ``--samples`` sample rows** (the console's agents view, every refresh per agent;
  IngestStats): ``current`` reads its samples' total (``agent_samples``); ``former`` is the same call with its samples
  counted row by row (the query as it was).
- **An agent's drop event of 1,500 ranges** (an outbox past its budget in a long outage), each to a new agent so every
  range is a new row: ``current`` writes them in one INSERT on PostgreSQL (128 a statement on SQLite); ``former`` is
  the same ingest with one range a statement (``LOSS_ROWS_PER_STATEMENT = 1``: the statement as it was). Alternated.

Medians of ``--repeat``, SQLite and a PostgreSQL 15 of ``tests/support/postgres.py`` (fsync off), the two cores
shared with whatever else runs.

    .venv/bin/python -m bench.fleet_retention_cost_bench [--epochs 259200] [--pg-epochs 8640] [--samples 200000]
        [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
T, A = "default", "gw-epochs"
DAY = 86400.0


def _seconds(call) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def _fill(st, epochs: int, now: float) -> None:
    """One record per epoch of agent A, received ``now``, and its counts (first_received: ``now``)."""
    recs = [(T, A, e, 1, "result", now, now, "{}") for e in range(1, epochs + 1)]
    counts = [(T, A, e, "result", 1, 1, 1, now) for e in range(1, epochs + 1)]
    rec_sql = (
        "INSERT INTO records (tenant, agent, epoch, seq, kind, t, received, payload) VALUES (?,?,?,?,?,?,?,?)"
    )
    count_sql = (
        "INSERT INTO record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq, first_received) "
        "VALUES (?,?,?,?,?,?,?,?)"
    )
    if hasattr(st, "db"):  # SQLite
        with st.lock:
            st.db.execute("BEGIN IMMEDIATE")
            st.db.executemany(rec_sql, recs)
            st.db.executemany(count_sql, counts)
            st.db.execute("COMMIT")
        return
    with st.pool.connection() as conn:
        with conn.transaction():
            # (the agent totals' trigger per row, in one transaction, grows one row's versions: filled after)
            conn.execute("SET LOCAL session_replication_role = replica")
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY records (tenant, agent, epoch, seq, kind, t, received, payload) FROM STDIN"
                ) as cp:
                    for r in recs:
                        cp.write_row(r)
                with cur.copy(
                    "COPY record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq, first_received) "
                    "FROM STDIN"
                ) as cp:
                    for r in counts:
                        cp.write_row(r)
            conn.execute(
                "INSERT INTO agent_counts (tenant, agent, kind, records) VALUES (%s, %s, 'result', %s)",
                (T, A, epochs),
            )
        conn.execute("ANALYZE records")
        conn.execute("ANALYZE record_counts")


def _current_pass(st, before: float) -> int:
    after, steps = None, 0
    while True:
        step = st.retire(before, after=after)
        steps += 1
        assert step["records"] == 0
        if (after := step["after"]) is None:
            return steps


def _former_pass(st, before: float) -> int:
    """686a671e's ``retire`` reads when nothing is old: every epoch's lowest record, a page of epochs at a time."""
    q, at, reads = st.q, ("", "", -1), 0
    while True:
        epochs = st._rows(
            q(
                "SELECT tenant, agent, epoch FROM record_counts WHERE records > 0 AND (tenant, agent, epoch) > (?, ?, ?) "
                "GROUP BY tenant, agent, epoch ORDER BY tenant, agent, epoch LIMIT ?"
            ),
            (*at, 256),
        )
        for tenant, agent, epoch in epochs:
            oldest = st._rows(
                q(
                    "SELECT received FROM records WHERE tenant = ? AND agent = ? AND epoch = ? ORDER BY seq LIMIT 1"
                ),
                (tenant, agent, epoch),
            )
            assert oldest and oldest[0][0] >= before
            reads += 1
            at = (tenant, agent, epoch)
        if len(epochs) < 256:
            return reads


def _alternated(current, former, repeat: int) -> dict:
    cur, old = [], []
    for i in range(repeat):
        for way in ("current", "former") if i % 2 == 0 else ("former", "current"):
            (cur if way == "current" else old).append(_seconds(current if way == "current" else former))
    c, f = statistics.median(cur), statistics.median(old)
    return {"former_ms": round(f * 1000, 2), "current_ms": round(c * 1000, 3), "ratio": f / c}


def _passes(st, epochs: int, repeat: int) -> dict:
    now = time.time()
    _fill(st, epochs, now)
    before = now - 30 * DAY
    return {
        "epochs": epochs,
        **_alternated(lambda: _current_pass(st, before), lambda: _former_pass(st, before), repeat),
    }


def _stats(st, samples: int, repeat: int) -> dict:
    agent = "gw-samples"
    rows = [(f"{s:064x}", T, agent, 0, s, 1.0) for s in range(1, samples + 1)]
    if hasattr(st, "db"):
        with st.lock:
            st.db.execute("BEGIN IMMEDIATE")
            st.db.executemany(
                "INSERT INTO samples (sha256, tenant, agent, epoch, seq, t) VALUES (?,?,?,?,?,?)", rows
            )
            st.db.execute("COMMIT")
    else:
        with st.pool.connection() as conn:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY samples (sha256, tenant, agent, epoch, seq, t) FROM STDIN") as cp:
                    for r in rows:
                        cp.write_row(r)
            conn.execute("ANALYZE samples")
    q = st.q

    def current() -> None:
        assert st.stats(agent, tenant=T)["samples"] == samples

    def former() -> None:  # its sample rows counted, the query as it was
        st.q = lambda sql: q(
            sql.replace("COALESCE(SUM(samples), 0) FROM agent_samples", "COUNT(*) FROM samples")
        )
        try:
            current()
        finally:
            st.q = q

    return {"samples": samples, **_alternated(current, former, repeat)}


def _drops(st, repeat: int) -> dict:
    ranges = [[10 + 2 * i] * 2 for i in range(1500)]
    told = json.dumps({"kind": "outbox_budget", "epoch": 0, "ranges": ranges})
    n = [0]

    def drop() -> None:
        n[0] += 1
        st.ingest(
            f"gw-drop-{n[0]}",
            [
                {"seq": 1, "epoch": 0, "kind": "result", "t": 1.0, "payload": "{}"},
                {"seq": 4000, "epoch": 0, "kind": "event", "t": 2.0, "payload": told},
            ],
            tenant=T,
        )

    def former() -> None:  # one range a statement: the statement as it was
        st.LOSS_ROWS_PER_STATEMENT = 1
        try:
            drop()
        finally:
            del st.LOSS_ROWS_PER_STATEMENT

    drop()  # (warm-up)
    return _alternated(drop, former, repeat)


def each_store(tmp: Path):
    """("sqlite", a SQLiteStore in ``tmp``), then ("postgresql", a store on a fresh database of a PostgreSQL started
    for it), each closed once the caller is done with it."""
    import psycopg

    from cloud_trainer.fleet.store import SQLiteStore, open_store
    from tests.support.postgres import running_postgres

    st = SQLiteStore(tmp / "fleet.db")
    try:
        yield "sqlite", st
    finally:
        st.close()
    with running_postgres() as server:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        st = open_store(f"{server}/bench", tmp)
        try:
            yield "postgresql", st
        finally:
            st.close()


def main() -> None:
    from bench._machine import machine, machine_line

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=259_200)
    ap.add_argument("--pg-epochs", type=int, default=8_640)
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, st in each_store(Path(tmp)):
            results[name] = {
                "pass": _passes(st, a.epochs if name == "sqlite" else a.pg_epochs, a.repeat),
                "stats": _stats(st, a.samples, a.repeat),
                "drop_event": _drops(st, a.repeat),
            }
    out = {"machine": machine(), "repeat": a.repeat, "results": results}
    OUT.mkdir(exist_ok=True)
    (OUT / "fleet_retention_cost.json").write_text(json.dumps(out, indent=2))
    print(machine_line())
    print(f"medians of {a.repeat}, alternated")
    print("| store | what | size | former ms | current ms | ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        for what, key, size in (
            ("retention pass, nothing old (epochs)", "pass", r["pass"]["epochs"]),
            ("stats(agent) (its sample rows)", "stats", r["stats"]["samples"]),
            ("drop event (ranges)", "drop_event", 1500),
        ):
            x = r[key]
            print(f"| {name} | {what} | {size:,} | {x['former_ms']} | {x['current_ms']} | {x['ratio']:.1f} |")


if __name__ == "__main__":
    main()
