"""Many clients connecting to the status endpoint at once (a plant's monitoring clients reconnecting after an
agent restart or a network blip): how long until each gets its first answer byte, by listen backlog?

A ``StatusServer`` on 127.0.0.1 (its snapshot costs nothing: what is measured is the queueing of connections,
not the answers) and ``--clients`` non-blocking connects made at once, each sending ``GET /status`` as soon as
it is connected; measured per client: the time from its connect to the first byte of its answer (200, or 503
when every place is being answered), and whether its SYN was sent again (``tcpi_total_retrans`` of its socket: the kernel dropped it, the backlog
was full). The former backlog (64) and the current one are run alternately, ``--runs`` each, in the same
process; medians over the runs.

    nice -n 10 .venv/bin/python -m bench.status_backlog_bench [--clients 200 --runs 5]
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import statistics
import sys
import time
from pathlib import Path

from edge_agent.http import StatusServer
from protocols.http_server import BoundedHTTPServer

OUT = Path(__file__).resolve().parent / "out"


class _Agent:
    board = None
    tags: dict = {}

    def status(self) -> dict:
        return {"agent": "gw"}


def _retransmitted(c: socket.socket) -> bool:
    raw = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int.from_bytes(raw[8 + 23 * 4 : 8 + 24 * 4], sys.byteorder) > 0


def one_run(backlog: int, clients: int) -> dict[str, float]:
    BoundedHTTPServer.request_queue_size = backlog  # read when the server listens, in its constructor
    s = StatusServer(_Agent(), "127.0.0.1", 0)
    s.start()
    sel = selectors.DefaultSelector()
    t0: dict[socket.socket, float] = {}
    first: dict[socket.socket, float] = {}
    codes: dict[socket.socket, bytes] = {}
    try:
        for _ in range(clients):
            c = socket.socket()
            c.setblocking(False)
            t0[c] = time.perf_counter()
            try:
                c.connect(("127.0.0.1", s.port))
            except BlockingIOError:
                pass
            sel.register(c, selectors.EVENT_WRITE)
        until = time.monotonic() + 30
        while len(first) < clients and time.monotonic() < until:
            for key, ev in sel.select(0.5):
                c = key.fileobj  # type: ignore[assignment]
                if ev & selectors.EVENT_WRITE:
                    if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        first[c] = float("inf")
                        sel.unregister(c)
                        continue
                    c.send(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    sel.modify(c, selectors.EVENT_READ)
                else:
                    first[c] = time.perf_counter() - t0[c]
                    try:
                        codes[c] = c.recv(64)[9:12]
                    except OSError:
                        codes[c] = b""
                    sel.unregister(c)
        waits = sorted(first.get(c, float("inf")) for c in t0)
        return {
            "p50_ms": 1000 * waits[len(waits) // 2],
            "p95_ms": 1000 * waits[int(len(waits) * 0.95)],
            "max_ms": 1000 * waits[-1],
            "over_900ms": sum(w > 0.9 for w in waits),
            "syn_retried": sum(_retransmitted(c) for c in t0),
            "answered_200": sum(v == b"200" for v in codes.values()),
            "answered_503": sum(v == b"503" for v in codes.values()),
        }
    finally:
        for c in t0:
            c.close()
        s.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--backlogs", default=f"64,{BoundedHTTPServer.request_queue_size}")
    a = ap.parse_args()
    from bench._machine import machine, machine_line

    backlogs = [int(b) for b in a.backlogs.split(",")]
    results: dict[int, list[dict[str, float]]] = {b: [] for b in backlogs}
    for _ in range(a.runs):
        for b in backlogs:  # alternated
            results[b].append(one_run(b, a.clients))
    lines = [
        f"### {a.clients} clients connecting to the status endpoint at once, by listen backlog "
        f"({a.runs} runs each, alternated, medians)",
        "",
        "| backlog | first byte p50 ms | p95 ms | max ms | clients > 0.9 s | SYN retried | 200 | 503 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    medians = {}
    for b, runs in results.items():
        m = medians[b] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        lines.append(
            f"| {b} | {m['p50_ms']:.1f} | {m['p95_ms']:.1f} | {m['max_ms']:.0f} | {m['over_900ms']:.0f} | "
            f"{m['syn_retried']:.0f} | {m['answered_200']:.0f} | {m['answered_503']:.0f} |"
        )
    lines += ["", machine_line()]
    md = "\n".join(lines) + "\n"
    print(md)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "status_backlog_bench.json").write_text(
        json.dumps({"machine": machine(), "medians": medians, "runs": results}, indent=1)
    )
    (OUT / "status_backlog_bench.md").write_text(md)


if __name__ == "__main__":
    main()
