"""What an agent's epochs cost the fleet store as they pile up, against the former queries in the same run.

An agent at the day's most epochs (one each 10 s: ``EPOCHS_MOST_PER_WINDOW``) for ``--epochs`` epochs (default a
month, 259,200), one record each (a ``record_counts`` row each), and ``--ends`` epochs' ends (``gaps`` rows with
``last = 0``, never deleted), on one SQLite store:

- ``stats(agent)`` (the console's agents view, every 3 s per agent; IngestStats): ``current`` reads the agent's totals
  per kind (``agent_counts``); ``former`` is the same call with its records by kind summed over ``record_counts``, the
  query as it was (the rest of the call unchanged);
- a loss write past the agent's ``LOSS_ROWS_PER_AGENT`` (lowered to 10,000; each write tells 1,500 ranges, so each
  prunes its oldest down to 9,000), in the writer every tenant shares: ``current`` finds the oldest through
  ``gaps_losses_by_t``; ``former`` is the same write with that index dropped (the primary key: every gaps row of the
  agent, its ends too, read and sorted).

Medians of ``--repeat`` calls each, the two cores shared with whatever else runs.

    .venv/bin/python -m bench.fleet_store_growth_bench [--epochs 259200] [--ends 3000000] [--repeat 7]
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
T, A = "default", "gw-crash-loop"


def _median_ms(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)


def _fill(st, epochs: int, ends: int) -> None:
    top = epochs + 10
    st.ingest(A, [{"seq": 1, "epoch": top, "kind": "result", "t": 1.0, "payload": "{}"}], tenant=T)
    with st.lock:
        st.db.execute("BEGIN IMMEDIATE")
        for k in range(0, epochs, 100_000):
            st.db.executemany(
                "INSERT INTO record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq) "
                "VALUES (?, ?, ?, 'result', 1, 1, 1)",
                [(T, A, e) for e in range(k, min(k + 100_000, epochs))],
            )
        for k in range(0, ends, 100_000):  # ended long ago (outside the day's window)
            st.db.executemany(
                "INSERT INTO gaps (tenant, agent, epoch, first, last, cause, t) VALUES (?, ?, ?, 2, 0, 'epoch_change', 1.0)",
                [(T, A, e) for e in range(k, min(k + 100_000, ends))],
            )
        st.db.execute("COMMIT")


def _stats(st, repeat: int) -> dict:
    q = st.q
    current = _median_ms(lambda: st.stats(A, tenant=T), repeat)
    st.q = lambda sql: q(
        sql.replace("FROM agent_counts", "FROM record_counts").replace(" AND records <> 0", "")
    )
    try:
        former = _median_ms(lambda: st.stats(A, tenant=T), repeat)
    finally:
        st.q = q
    return {"former_ms": former, "current_ms": current}


def _prunes(st, repeat: int) -> dict:
    from cloud_trainer.fleet import store as store_module

    seq = [10**6]

    def loss_write() -> None:  # 1,500 ranges told, past the room: a prune each
        seq[0] += 4000
        told = {"kind": "outbox_budget", "epoch": 0, "ranges": [[seq[0] + 2 * i] * 2 for i in range(1500)]}
        st.ingest(
            A, [{"seq": seq[0], "epoch": 0, "kind": "event", "t": 2.0, "payload": json.dumps(told)}], tenant=T
        )

    bound = store_module.LOSS_ROWS_PER_AGENT
    store_module.LOSS_ROWS_PER_AGENT = 10_000
    try:
        for _ in range(7):  # at the room
            loss_write()
        current = _median_ms(loss_write, repeat)
        st.db.execute("DROP INDEX gaps_losses_by_t")
        try:
            former = _median_ms(loss_write, repeat)
        finally:
            st.db.execute(
                "CREATE INDEX gaps_losses_by_t ON gaps (tenant, agent, t, epoch, first, last) WHERE last <> 0"
            )
    finally:
        store_module.LOSS_ROWS_PER_AGENT = bound
    return {"former_ms": former, "current_ms": current}


def main() -> None:
    from bench._machine import machine, machine_line
    from cloud_trainer.fleet.store import SQLiteStore

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=259_200)
    ap.add_argument("--ends", type=int, default=3_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for epochs, ends in ((8_640, 0), (a.epochs, 0), (a.epochs, a.ends)):
            st = SQLiteStore(Path(tmp) / f"fleet-{epochs}-{ends}.db")
            try:
                _fill(st, epochs, ends)
                results[f"{epochs} epochs, {ends} ends"] = {
                    "stats": _stats(st, a.repeat),
                    "pruning_loss_write": _prunes(st, a.repeat),
                }
            finally:
                st.close()
    out = {"machine": machine(), "repeat": a.repeat, "results": results}
    OUT.mkdir(exist_ok=True)
    (OUT / "fleet_store_growth.json").write_text(json.dumps(out, indent=2))
    print(machine_line())
    print(f"one agent, SQLite, medians of {a.repeat}")
    print(
        "| agent's rows | stats(agent) former / current | ratio | pruning loss write former / current | ratio |"
    )
    print("| --- | --- | ---: | --- | ---: |")
    for name, r in results.items():
        s, p = r["stats"], r["pruning_loss_write"]
        print(
            f"| {name} | {s['former_ms']} / {s['current_ms']} ms | {s['former_ms'] / s['current_ms']:.1f}x "
            f"| {p['former_ms']} / {p['current_ms']} ms | {p['former_ms'] / p['current_ms']:.1f}x |"
        )


if __name__ == "__main__":
    main()
