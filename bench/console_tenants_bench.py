"""One tenant's costly console view beside another tenant's, against the former console in the same run.

Tenant acme has one agent whose records leave N holes in one epoch (every other seq): its ``/api/agents`` answer
reads all of them. Tenant beta has one agent and two records. For ``--seconds`` each, beta's ``/api/agents`` is asked
every 0.3 s alone (the baseline), then beside acme's asked as often; beta's answers are counted by status and
timed. Run twice on the same SQLite store, through the real console over HTTP:

- ``former``: every tenant's answers one at a time on one thread (``Answers`` with one group) and the store's reads
  on one connection (``READERS`` = 1), as before 334ca1ea / edf2839b;
- ``current``: answers per tenant (the tenant as group) on ``ANSWER_WORKERS`` threads, reads on ``READERS``
  connections.

    .venv/bin/python -m bench.console_tenants_bench [--holes 300000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

OUT = Path(__file__).resolve().parent / "out"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _get(port: int, path: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            r.read()
            code = r.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    return code, time.perf_counter() - t0


def _poll(port: int, path: str, stop: threading.Event, out: list) -> None:
    n = 0
    while not stop.is_set():
        out.append(_get(port, f"{path}&n={n}"))  # a new URL each time: nothing shared, each one computed
        n += 1
        time.sleep(0.3)


def _beta(port: int, seconds: float, beside_acme: bool) -> dict:
    stop, beta, acme = threading.Event(), [], []
    threads = [threading.Thread(target=_poll, args=(port, "/api/agents?tenant=beta", stop, beta))]
    if beside_acme:
        threads.append(threading.Thread(target=_poll, args=(port, "/api/agents?tenant=acme", stop, acme)))
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    ok = sorted(s for c, s in beta if c == 200)
    return {
        "asked": len(beta),
        "answered": len(ok),
        "busy_503": sum(c == 503 for c, _ in beta),
        "median_ms": round(statistics.median(ok) * 1000, 1) if ok else None,
        "max_ms": round(max(s for _, s in beta) * 1000, 1) if beta else None,
        "acme_asked": len(acme),
        "acme_answered": sum(c == 200 for c, _ in acme),
    }


def run(db: Path, seconds: float, former: bool) -> dict:
    from cloud_trainer.fleet import console as console_module
    from cloud_trainer.fleet import store as store_module
    from protocols.http_server import Answers

    readers = store_module.READERS
    store_module.READERS = 1 if former else readers
    try:
        store = store_module.SQLiteStore(db)
    finally:
        store_module.READERS = readers
    c = console_module.Console(SimpleNamespace(store=store, blobs=None))
    if former:

        class OneForAll(Answers):  # every tenant's answers in one group, on one thread
            def get(self, key, compute, group=None):
                return super().get(key, compute)

        c.answers = OneForAll(min_age_s=console_module.ANSWER_MIN_AGE_S, cpu_share=console_module.CPU_SHARE)
    c.start()
    try:
        return {"alone": _beta(c.port, seconds, False), "beside_acme": _beta(c.port, seconds, True)}
    finally:
        c.stop()
        store.close()


def main() -> None:
    from bench._machine import machine, machine_line

    ap = argparse.ArgumentParser()
    ap.add_argument("--holes", type=int, default=300_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    from cloud_trainer.fleet.store import SQLiteStore

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "fleet.db"
        st = SQLiteStore(db)
        for tenant, agent in (("acme", "gw-a"), ("beta", "gw-b")):
            st.heartbeat(agent, {}, [], {}, 0, tenant=tenant)
        st.ingest(
            "gw-b", [{"seq": s, "kind": "result", "t": 1.0, "payload": "{}"} for s in (1, 2)], tenant="beta"
        )
        for k in range(0, a.holes, 10_000):
            recs = [
                {"seq": 2 * i + 1, "epoch": 7, "kind": "result", "t": 1.0, "payload": "{}"}
                for i in range(k, min(k + 10_000, a.holes))
            ]
            st.ingest("gw-a", recs, tenant="acme")
        st.close()
        results = {name: run(db, a.seconds, name == "former") for name in ("former", "current")}
    out = {"machine": machine(), "holes": a.holes, "seconds": a.seconds, "results": results}
    OUT.mkdir(exist_ok=True)
    (OUT / "console_tenants.json").write_text(json.dumps(out, indent=2))
    print(machine_line())
    print(
        f"acme: one agent, {a.holes:,} holes in one epoch; beta: one agent; beta's /api/agents every 0.3 s, {a.seconds:g} s"
    )
    print(
        "| console | beta alone: answered/asked, median | beside acme: answered/asked (503), median, max | acme answered/asked |"
    )
    print("| --- | --- | --- | --- |")
    for name, r in results.items():
        al, bs = r["alone"], r["beside_acme"]
        print(
            f"| {name} | {al['answered']}/{al['asked']}, {al['median_ms']} ms | {bs['answered']}/{bs['asked']} "
            f"({bs['busy_503']}), {bs['median_ms']} ms, {bs['max_ms']} ms | {bs['acme_answered']}/{bs['acme_asked']} |"
        )


if __name__ == "__main__":
    main()
