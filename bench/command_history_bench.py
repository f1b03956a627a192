"""An agent's heartbeat read of its commands (``Commands.pending_many``) against a long history of finished
commands, against the former read (every command of the agent, finished ones included) in the same run.

Finished commands are kept (who asked for what); an admin's script that sends 100, waits for the acks and
repeats grows one agent's history without bound. Measured on a SQLite ``control.db`` holding N finished commands
of one agent and a few pending: that agent's read, and another agent's heartbeat read while the first one's
heartbeat reads run 1 ms apart (both wait for the lock every tenant's control calls share).

    .venv/bin/python -m bench.command_history_bench [--finished 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# the former reads, through the index they had (its (tenant, agent) prefix: commands_pending's is the same)
FORMER = (
    "SELECT id, kind, pipeline, issued_at, issued_by, reason, state, generation, process_state "
    "FROM commands INDEXED BY commands_pending WHERE tenant = ? AND agent = ? ORDER BY issued_at"
)
FORMER_LIST = (
    "SELECT * FROM commands INDEXED BY commands_pending WHERE tenant = ? AND agent = ? "
    "ORDER BY issued_at DESC LIMIT 500"
)
HEAVY, LIGHT = ("beta", "gw-b"), ("acme", "gw-a")


def former_read(cmds, keys):
    """The read before: every row of the agent, the pending ones kept in Python."""
    out = {}
    with cmds.c.lock:
        for tenant, agent in keys:
            rows = cmds.c.db.execute(FORMER, (tenant, agent)).fetchall()
            out[(tenant, agent)] = (
                max((r[7] for r in rows), default=0),
                [r for r in rows if r[6] == "pending"],
            )
    return out


def timed(fn, n: int, gap_s: float = 0.0) -> list[float]:
    ts = []
    for _ in range(n):
        time.sleep(gap_s)  # heartbeats arrive on their own, not in one burst within a thread switch
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def neighbour(read, cmds, n: int) -> list[float]:
    """Another agent's reads while the heavy agent's heartbeat reads run in a thread, 1 ms apart."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            read(cmds, [HEAVY])
            time.sleep(0.001)

    th = threading.Thread(target=loop)
    th.start()
    try:
        time.sleep(0.05)
        return timed(lambda: read(cmds, [LIGHT]), n, 0.004)
    finally:
        stop.set()
        th.join()


def main(argv: list[str] | None = None) -> int:
    from cloud_trainer.fleet.commands import COLS, Commands
    from cloud_trainer.fleet.control import Control
    from cloud_trainer.registry import Registry

    ap = argparse.ArgumentParser()
    ap.add_argument("--finished", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="command-history-"))
    rows_out = []
    try:
        control = Control(tmp / "control.db", Registry(tmp / "registry"), store=None)
        cmds = Commands(control)
        insert = "INSERT INTO commands (tenant, " + ", ".join(COLS) + ") VALUES (?" + ",?" * len(COLS) + ")"

        def row(key, i, state):
            return (
                key[0],
                f"{key[1]}-{i}",
                key[1],
                "baseline_relearn",
                "p",
                "",
                1.0 + i,
                "carol",
                state,
                "ok",
            )

        with control._write():
            for key in (HEAVY, LIGHT):  # a few pending each, newest last
                control.db.executemany(
                    insert, [(*row(key, -i, "pending"), None, 10 + i, "") for i in range(1, 6)]
                )
        have = 0
        for n in sorted(args.finished):
            with control._write():
                control.db.executemany(
                    insert, [(*row(HEAVY, i, "done"), 2.0 + i, 1 + i, "") for i in range(have, n)]
                )
            have = n
            assert cmds.pending_many([HEAVY])[HEAVY][0] == former_read(cmds, [HEAVY])[HEAVY][0]
            assert len(cmds.pending_many([HEAVY])[HEAVY][1]) == 5
            new = timed(lambda: cmds.pending_many([HEAVY]), args.rounds)
            old = timed(lambda: former_read(cmds, [HEAVY]), args.rounds)
            listed = timed(lambda: cmds.list(HEAVY[1], tenant=HEAVY[0]), args.rounds)
            old_listed = timed(lambda: cmds.c.db.execute(FORMER_LIST, HEAVY).fetchall(), args.rounds)
            nb_new = neighbour(lambda c, k: c.pending_many(k), cmds, args.rounds * 2)
            nb_old = neighbour(former_read, cmds, args.rounds * 2)
            rows_out.append(
                {
                    "finished": n,
                    "heartbeat_ms": statistics.median(new) * 1e3,
                    "former_heartbeat_ms": statistics.median(old) * 1e3,
                    "admin_list_ms": statistics.median(listed) * 1e3,
                    "former_admin_list_ms": statistics.median(old_listed) * 1e3,
                    "other_agent_ms": statistics.median(nb_new) * 1e3,
                    "other_agent_p95_ms": statistics.quantiles(nb_new, n=20)[-1] * 1e3,
                    "former_other_agent_ms": statistics.median(nb_old) * 1e3,
                    "former_other_agent_p95_ms": statistics.quantiles(nb_old, n=20)[-1] * 1e3,
                }
            )
        control.db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from bench._machine import machine, machine_line

    OUT.mkdir(exist_ok=True)
    (OUT / "command_history_bench.json").write_text(
        json.dumps({"machine": machine(), "rows": rows_out}, indent=2)
    )
    md = (
        "## Fleet commands: a heartbeat's read against a long history of finished commands (SQLite control.db)\n\n"
        "| finished commands of the agent | its heartbeat read (former) | another agent's read meanwhile, median / "
        "p95 (former) | ratio (heartbeat) | the agent's list, newest 500 (former) |\n| ---: | ---: | ---: | ---: | ---: |\n"
        + "".join(
            f"| {r['finished']:,} | {r['heartbeat_ms']:.3f} ms ({r['former_heartbeat_ms']:.1f} ms) | "
            f"{r['other_agent_ms']:.3f} / {r['other_agent_p95_ms']:.3f} ms ({r['former_other_agent_ms']:.1f} / "
            f"{r['former_other_agent_p95_ms']:.1f} ms) | {r['former_heartbeat_ms'] / r['heartbeat_ms']:.0f}x | "
            f"{r['admin_list_ms']:.2f} ms ({r['former_admin_list_ms']:.1f} ms) |\n"
            for r in rows_out
        )
        + f"\n{machine_line()}\n"
    )
    (OUT / "command_history_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
