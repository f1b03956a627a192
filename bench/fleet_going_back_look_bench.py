"""What the rollout tick's look for halts without ``going_back`` rows costs, against the former way in the same run.

Every ``GOING_BACK_FILL_S`` (30 s) the tick reads the ids of every halted and aborted rollout (``Control.
_fill_going_back``, under the control's lock: every tenant's deployment calls wait meanwhile) to find the halts new
since its last look. ``--rollouts`` halted rollouts of 2,000 tenants and as many completed ones, 50 targets each,
nothing new (the steady state). ``current``: the look as it is (the ids read from ``deployments_state_ids`` (state,
id) alone); ``former``: the same look through ``deployments_by_state`` (state, created), a row lookup per id, as
before the index (SQLite: ``INDEXED BY``; PostgreSQL: the index dropped for the former's runs, made again, and the
table analysed, for the current's). Medians of ``--repeat``, alternated, SQLite and a PostgreSQL of
``tests/support/postgres.py`` (fsync off), the two cores shared with whatever else runs.

    .venv/bin/python -m bench.fleet_going_back_look_bench [--rollouts 20000] [--repeat 7]
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


def _fill(c, n: int) -> None:
    doc = {"state": "halted", "targets": {f"gw{i}": {"status": "rolled_back_by_fleet"} for i in range(50)}}
    now = time.time()
    rows = []
    for state, mark in (("halted", "h"), ("completed", "c")):
        for i in range(n):
            dep, tenant = f"{mark}{i:08d}", f"t{i % 2000}"
            rows.append(
                (
                    dep,
                    now - i,
                    json.dumps({**doc, "id": dep, "tenant": tenant, "state": state}),
                    tenant,
                    state,
                )
            )
    with c._write():
        c.db.executemany(
            "INSERT INTO deployments (id, created, doc, tenant, state, slot) VALUES (?, ?, ?, ?, ?, 'vision')",
            rows,
        )
    c._halts_seen = None
    c._fill_going_back()  # (every halt looked at once: the looks measured find nothing new)


def _look(c) -> float:
    t0 = time.perf_counter()
    c._fill_going_back()
    return time.perf_counter() - t0


def _measure(c, repeat: int, sqlite: bool) -> dict:
    from cloud_trainer.fleet import control

    current_sql = control.HALTED_IDS
    former_sql = current_sql.replace("FROM deployments", "FROM deployments INDEXED BY deployments_by_state")

    def way(former: bool) -> float:
        if sqlite:
            control.HALTED_IDS = former_sql if former else current_sql
            try:
                return _look(c)
            finally:
                control.HALTED_IDS = current_sql
        with c._write():
            c.db.execute(
                "DROP INDEX IF EXISTS deployments_state_ids" if former else control.DEPLOYMENT_STATE_IDS
            )
        c.db.execute("ANALYZE deployments")
        return _look(c)

    way(False), way(True)  # (warm-up)
    cur, old = [], []
    for i in range(repeat):
        for former in (False, True) if i % 2 == 0 else (True, False):
            (old if former else cur).append(way(former))
    if not sqlite:
        way(False)  # (the index made again)
    f, k = statistics.median(old), statistics.median(cur)
    return {"former_ms": round(f * 1000, 1), "current_ms": round(k * 1000, 1), "ratio": f / k}


def main() -> None:
    from bench._machine import machine, machine_line
    from cloud_trainer.fleet.control import Control
    from tests.support.postgres import running_postgres

    ap = argparse.ArgumentParser()
    ap.add_argument("--rollouts", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        c = Control(Path(tmp) / "control.db", None, None)
        try:
            _fill(c, a.rollouts)
            results["sqlite"] = _measure(c, a.repeat, sqlite=True)
        finally:
            c.close()
        import psycopg

        with running_postgres() as server:
            with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench")
            c = Control(f"{server}/bench", None, None)
            try:
                _fill(c, a.rollouts)
                results["postgresql"] = _measure(c, a.repeat, sqlite=False)
            finally:
                c.close()
    out = {"machine": machine(), "rollouts": a.rollouts, "repeat": a.repeat, "results": results}
    OUT.mkdir(exist_ok=True)
    (OUT / "fleet_going_back_look.json").write_text(json.dumps(out, indent=2))
    print(machine_line())
    print(
        f"{a.rollouts:,} halted + {a.rollouts:,} completed rollouts, nothing new; medians of {a.repeat}, alternated"
    )
    print("| store | former ms (by_state, a row lookup an id) | current ms (state, id) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['former_ms']} | {r['current_ms']} | {r['ratio']:.1f} |")


if __name__ == "__main__":
    main()
