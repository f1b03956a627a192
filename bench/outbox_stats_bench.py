"""The outbox's statistics and idle cost at a deep outbox, against the former way in the same run.

1. ``Outbox.stats()`` (counts kept in memory) vs the full-table ``GROUP BY kind`` that ``stats()`` ran on
   every ``/status`` and heartbeat before (run here on the same file).
2. CPU the outbox takes while idle with N records waiting (the link down), and at ~100 appends/s.

    .venv/bin/python -m bench.outbox_stats_bench [--records 200000]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox

    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args(argv)
    n = args.records
    tmp = Path(tempfile.mkdtemp(prefix="outbox-stats-"))
    try:
        ob = Outbox(OutboxSettings(commit_batch=2000), tmp)
        ob.open()
        for i in range(n):
            kind = "result" if i % 10 else "telemetry"
            ob.append(kind, b'{"i":%d,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}' % i)
        ob.flush()
        stats_s, group_s = [], []
        con = sqlite3.connect(ob.path)
        for _ in range(15):
            t = time.perf_counter()
            ob.stats()
            stats_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            con.execute("SELECT kind, COUNT(*), MIN(seq) FROM records GROUP BY kind").fetchall()
            group_s.append(time.perf_counter() - t)
        con.close()
        time.sleep(0.5)
        c0, t0 = cpu_s(), time.monotonic()
        time.sleep(5)
        idle = (cpu_s() - c0) / (time.monotonic() - t0)
        c0, t0 = cpu_s(), time.monotonic()
        for _ in range(500):
            ob.append("result", b'{"x":1}')
            time.sleep(0.01)
        steady = (cpu_s() - c0) / (time.monotonic() - t0)
        ob.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from bench._machine import machine, machine_line

    res = {
        "machine": machine(),
        "records": n,
        "stats_ms": statistics.median(stats_s) * 1e3,
        "group_by_ms": statistics.median(group_s) * 1e3,
        "ratio": statistics.median(group_s) / statistics.median(stats_s),
        "idle_cpu_share": idle,
        "steady_100_per_s_cpu_share": steady,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "outbox_stats_bench.json").write_text(json.dumps(res, indent=2))
    md = (
        f"## Outbox statistics and idle cost ({n} records waiting)\n\n"
        "| measure | outbox | former / baseline | ratio |\n| --- | --- | --- | --- |\n"
        f"| stats() | {res['stats_ms']:.3f} ms | GROUP BY {res['group_by_ms']:.1f} ms | {res['ratio']:.0f}x |\n"
        f"| CPU while idle | {idle * 100:.1f}% of a core | | |\n"
        f"| CPU at ~100 appends/s | {steady * 100:.1f}% of a core | | |\n"
        f"\n{machine_line()}\n"
    )
    (OUT / "outbox_stats_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
