"""What ``gaps`` costs an agent with many epochs retention cut that still hold records, and what the SQLite recount
at an open costs with many emptied epochs, against the former way in the same run.

- **gaps() of an agent with ``--epochs`` partly retired epochs** (each: records 3 and 4 stored, 1..2 retired, an
  end at 5; an agent replaying old batches into its emptied epochs): ``gaps()`` whole and ``gaps(newest=1000)`` (the
  console's agents view, IngestStats). ``current``: each epoch's lowest stored seq read
  ``GAPS_FIRST_SEQS_PER_STATEMENT`` epochs a statement. ``former``: one statement an epoch (the read as it was).
  Both lists are checked equal.
- **The SQLite recount at an open** (``RECORD_COUNTS_AGAIN``, after an older service wrote records uncounted):
  ``--recount-records`` records in ``--recount-epochs`` epochs plus as many emptied epochs (rows at 0, aged never).
  ``current``: the rows already at 0 are not written again; ``former``: every row written (the statement as it was).
  Each run on its own copy of the file.

Medians of ``--repeat``, alternated, SQLite and a PostgreSQL 15 of ``tests/support/postgres.py`` (fsync off), the two
cores shared with whatever else runs.

    .venv/bin/python -m bench.fleet_gaps_retired_bench [--epochs 3000] [--recount-records 1000000]
        [--recount-epochs 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.fleet_retention_cost_bench import _alternated, each_store

OUT = Path(__file__).resolve().parent / "out"
T, A = "default", "gw-replays"


def _fill(st, epochs: int) -> None:
    q = st.q
    with st._tx() as ex:
        for e in range(1, epochs + 1):
            for s in (3, 4):
                ex(
                    q(
                        "INSERT INTO records (tenant, agent, epoch, seq, kind, t, received, payload) "
                        "VALUES (?, ?, ?, ?, 'result', ?, 5, '{}')"
                    ),
                    (T, A, e, s, float(s)),
                )
            ex(
                q(
                    "INSERT INTO record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq, "
                    "first_received) VALUES (?, ?, ?, 'result', 2, 3, 4, 5)"
                ),
                (T, A, e),
            )
            ex(
                q(
                    "INSERT INTO retired (tenant, agent, epoch, last_seq, records, samples, received_to) "
                    "VALUES (?, ?, ?, 2, 2, 0, 1)"
                ),
                (T, A, e),
            )
            if e < epochs:
                ex(
                    q(
                        "INSERT INTO gaps (tenant, agent, epoch, first, last, cause, t) "
                        "VALUES (?, ?, ?, 5, 0, 'epoch_change', 1)"
                    ),
                    (T, A, e),
                )


def _gaps(st, epochs: int, repeat: int) -> dict:
    _fill(st, epochs)
    current_read = st._first_seqs

    def former_read(ex, tenant: str, agent: str, es: list[int]) -> dict[int, int]:  # one statement an epoch
        out = {}
        for e in es:
            low = ex(
                st.q(
                    "SELECT seq FROM records WHERE tenant = ? AND agent = ? AND epoch = ? ORDER BY seq LIMIT 1"
                ),
                (tenant, agent, e),
            ).fetchone()
            if low:
                out[e] = low[0]
        return out

    out = {"epochs": epochs}
    for name, newest in (("whole", None), ("newest_1000", 1000)):
        got = {}

        def current(newest=newest, got=got) -> None:
            got["current"] = st.gaps(A, tenant=T, newest=newest)

        def former(newest=newest, got=got) -> None:
            st._first_seqs = former_read
            try:
                got["former"] = st.gaps(A, tenant=T, newest=newest)
            finally:
                st._first_seqs = current_read

        out[name] = _alternated(current, former, repeat)
        assert list(got["current"]) == list(got["former"]) and len(got["current"]) > 0
        out[name]["gaps"] = len(got["current"])
    return out


def _recount(tmp: Path, records: int, epochs: int, repeat: int) -> dict:
    from cloud_trainer.fleet import store as m
    from cloud_trainer.fleet.store import SQLiteStore

    per = max(1, records // epochs)
    p = tmp / "recount.db"
    SQLiteStore(p).close()
    db = sqlite3.connect(p)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO records (tenant, agent, epoch, seq, kind, t, received, payload) "
        "VALUES (?, ?, ?, ?, 'result', ?, 5, '{}')",
        ((T, A, e, s, float(s)) for e in range(1, epochs + 1) for s in range(1, per + 1)),
    )
    db.executemany(
        "INSERT INTO record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq, first_received) "
        "VALUES (?, ?, ?, 'result', ?, 1, ?, ?)",
        [
            (T, A, e, per if e <= epochs else 0, per, 5 if e <= epochs else float("inf"))
            for e in range(1, 2 * epochs + 1)
        ],
    )
    db.commit()
    db.close()
    current = m.RECORD_COUNTS_AGAIN
    former = current.replace("\n  WHERE records <> 0 OR first_received <= 1e308;", ";", 1)
    assert former != current
    n = [0]

    def run(sql: str):
        def call() -> None:
            n[0] += 1
            c = tmp / f"copy{n[0]}.db"
            shutil.copy(p, c)
            conn = sqlite3.connect(c, isolation_level=None)
            try:
                t0 = time.perf_counter()
                conn.executescript("BEGIN IMMEDIATE;" + m.AGENT_COUNTS_UNTRIGGER + sql + "COMMIT;")
                took[0] += time.perf_counter() - t0
                rows = conn.execute("SELECT * FROM record_counts ORDER BY 1, 2, 3, 4").fetchall()
                results.setdefault(sql, rows)
                assert results[sql] == rows
            finally:
                conn.close()
                c.unlink()

        return call

    took, results, times = [0.0], {}, {"current": [], "former": []}
    for i in range(repeat):
        for way in ("current", "former") if i % 2 == 0 else ("former", "current"):
            took[0] = 0.0
            run(current if way == "current" else former)()
            times[way].append(took[0])
    assert results[current] == results[former]
    c, f = statistics.median(times["current"]), statistics.median(times["former"])
    return {
        "records": per * epochs,
        "epochs": epochs,
        "emptied": epochs,
        "former_ms": round(f * 1000, 1),
        "current_ms": round(c * 1000, 1),
        "ratio": f / c,
    }


def main() -> None:
    from bench._machine import machine, machine_line

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3000)
    ap.add_argument("--recount-records", type=int, default=1_000_000)
    ap.add_argument("--recount-epochs", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, st in each_store(Path(tmp)):
            results[name] = {"gaps": _gaps(st, a.epochs, a.repeat)}
        results["sqlite"]["recount"] = _recount(Path(tmp), a.recount_records, a.recount_epochs, a.repeat)
    out = {"machine": machine(), "repeat": a.repeat, "results": results}
    OUT.mkdir(exist_ok=True)
    (OUT / "fleet_gaps_retired.json").write_text(json.dumps(out, indent=2))
    print(machine_line())
    print(f"medians of {a.repeat}, alternated")
    print("| store | what | size | former ms | current ms | ratio |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for name, r in results.items():
        g = r["gaps"]
        for what, key in (("gaps() whole", "whole"), ("gaps(newest=1000)", "newest_1000")):
            x = g[key]
            size = f"{g['epochs']:,} partly retired epochs"
            print(f"| {name} | {what} | {size} | {x['former_ms']} | {x['current_ms']} | {x['ratio']:.1f} |")
        if "recount" in r:
            x = r["recount"]
            size = f"{x['records']:,} records, {x['epochs']:,} epochs + {x['emptied']:,} emptied"
            print(
                f"| {name} | recount at open | {size} | {x['former_ms']} | {x['current_ms']} | {x['ratio']:.2f} |"
            )


if __name__ == "__main__":
    main()
