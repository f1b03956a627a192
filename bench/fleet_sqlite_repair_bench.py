"""What the one-time repair of a fleet.db costs its open (``SQLITE_REPAIRS``: epochs retention emptied that a service
of before ``first_received`` counted records into before the reopening trigger was in the file), against the same
open with the repair recorded as done, in the same run.

A fleet.db with ``--epochs`` epochs retention emptied (``record_counts`` rows of no record, ``first_received`` inf:
the entries of ``record_counts_by_age`` the repair reads) of which one in 1,000 holds 2 records an older service
counted (the rows it marks). ``pending``: ``SQLiteStore(path)`` then ``close()`` with the repair's row taken out of
``store_repairs`` and those rows put back (inf); ``done``: the same open with the row there (every open after the
first). Alternated, medians of ``--repeat``; the repair's UPDATE alone is timed inside the pending opens too.

    .venv/bin/python -m bench.fleet_sqlite_repair_bench [--epochs 100000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _fill(path: Path, epochs: int) -> int:
    """The emptied epochs of one agent, one in 1,000 holding 2 records; returns how many hold records."""
    from cloud_trainer.fleet.store import SQLiteStore

    SQLiteStore(path).close()
    inf, stuck = float("inf"), range(0, epochs, 1000)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq, first_received) "
        "VALUES ('default', 'gw', ?, 'result', ?, 11, 12, ?)",
        [(e, 2 if e % 1000 == 0 else 0, inf) for e in range(epochs)],
    )
    db.executemany(
        "INSERT INTO records (tenant, agent, epoch, seq, kind, t, received, payload) "
        "VALUES ('default', 'gw', ?, ?, 'result', 0, 1000, '{}')",
        [(e, s) for e in stuck for s in (11, 12)],
    )
    db.execute("COMMIT")
    db.close()
    return len(stuck)


def _open(path: Path, pending: bool) -> tuple[float, float | None]:
    """(ms of the open and close, ms of the repair's UPDATE in it or None)."""
    from cloud_trainer.fleet.store import SQLiteStore

    if pending:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("DELETE FROM store_repairs")
        db.execute("UPDATE record_counts SET first_received = 1e999 WHERE records > 0")
        db.close()
    took: list[float] = []
    real = sqlite3.connect

    def timed(
        *a, **kw
    ):  # the repair's statement timed by the connection's trace (its start, then the next one)
        con = real(*a, **kw)
        marks: list[tuple[float, str]] = []

        def trace(sql: str) -> None:
            now = time.perf_counter()
            if marks and marks[-1][1].startswith("UPDATE record_counts SET first_received = 0"):
                took.append(now - marks[-1][0])
            marks.append((now, sql))

        con.set_trace_callback(trace)
        return con

    sqlite3.connect = timed  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        SQLiteStore(path).close()
        ms = (time.perf_counter() - t0) * 1000
    finally:
        sqlite3.connect = real  # type: ignore[assignment]
    return ms, (took[0] * 1000 if took else None)


def main() -> None:
    from bench._machine import machine, machine_line

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fleet.db"
        stuck = _fill(path, a.epochs)
        _open(path, False)  # (warm: the file in the page cache)
        pending, done, update = [], [], []
        for _ in range(a.repeat):
            ms, upd = _open(path, True)
            pending.append(ms)
            update.append(upd or 0.0)
            done.append(_open(path, False)[0])
        marked = (
            sqlite3.connect(path)
            .execute("SELECT COUNT(*) FROM record_counts WHERE records > 0 AND first_received = 0")
            .fetchone()[0]
        )
    r = {
        "epochs_emptied": a.epochs,
        "epochs_with_records": stuck,
        "marked": marked,
        "pending_open_ms": round(statistics.median(pending), 1),
        "done_open_ms": round(statistics.median(done), 1),
        "repair_update_ms": round(statistics.median(update), 1),
        "ratio": round(statistics.median(pending) / statistics.median(done), 2),
    }
    out = {"machine": machine(), "repeat": a.repeat, "result": r, "pending_ms": pending, "done_ms": done}
    OUT.mkdir(exist_ok=True)
    (OUT / "fleet_sqlite_repair.json").write_text(json.dumps(out, indent=2))
    print(machine_line())
    print(f"medians of {a.repeat}, alternated")
    print(
        "| emptied epochs | holding records (marked) | open, repair pending ms | its UPDATE ms | open, done ms | ratio |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {a.epochs:,} | {stuck} ({marked}) | {r['pending_open_ms']} | {r['repair_update_ms']} | "
        f"{r['done_open_ms']} | {r['ratio']} |"
    )


if __name__ == "__main__":
    main()
