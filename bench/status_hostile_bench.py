"""Hostile HTTP clients against a real agent's status endpoint: does the agent keep serving its pipelines?

A real agent (``edge-agent run``, its own process) reads a real asyncua server (the "PLC": a temperature,
a trip output and a 500-ms heartbeat node) and a camera (a drop folder the bench writes 1280x960 JPEG
frames into at ``--fps``) through a small vision package that draws a heat map; its status endpoint
listens on 127.0.0.1. Each phase runs one kind of hostile client from 127.0.0.1 for ``--seconds``, while a
legitimate client on 127.0.0.2 asks for ``/status`` every 0.5 s; the baseline phase (no hostile client)
runs first in the same run.

Measured per phase: the pipeline's results in the phase (from ``/status`` before and after), the PLC
heartbeat's longest gap (seen on the server), the rule's trip delay (the write of the temperature on the
server to the trip on the server, median of ``--cycles``), the loop lag the agent measures
(``agent.loop_lag_ms.last``, worst over the legitimate client's answers), the legitimate client's answers
(200s / asked, and the slowest), and the agent's RSS and open descriptors (worst during the phase, from
/proc) and the agent's threads.

Phases: slowloris (200 connections sending headers a byte a second, from one address, then two), 2,000 idle
connections, 6.5 MB of headers, a 4-MB request line, a 50-MB POST body, random bytes, HEAD/OPTIONS/made-up
methods and traversal paths, stalled readers of the heat map (one address, then two), the costly answers
under made-up URLs (heat map, NG image, trend, /metrics, /status), and /status as fast as answers come. To
compare with another version of the endpoint, run this file from that version's tree (the agent is started
from the tree the bench runs in).

    nice -n 10 .venv/bin/python -m bench.status_hostile_bench [--seconds 8 --fps 5 --phases all]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.overload_bench import start_agent, watch_heartbeat
from bench.saturated_bench import Feeder

OUT = Path(__file__).resolve().parent / "out"
ATTACKER = "127.0.0.1"
LEGIT = "127.0.0.2"


def frames_jpeg(n: int = 4, w: int = 1280, h: int = 960) -> list[bytes]:
    import cv2

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        out.append(cv2.imencode(".jpg", img)[1].tobytes())
    return out


def proc(pid: int) -> dict:
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) // 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return {"rss_mb": rss, "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}


def conn(port: int, source: str = ATTACKER, timeout: float = 10.0) -> socket.socket:
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def drain(s: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except OSError:
        pass
    return out


# ---- the hostile clients: each runs until ``stop`` is set --------------------------------------------------------
def slowloris(port: int, stop: threading.Event, n: int = 200, sources: tuple[str, ...] = (ATTACKER,)) -> dict:
    """``n`` connections each sending a request's headers a byte every second, reconnecting when closed, spread
    over ``sources``."""
    socks: list[socket.socket | None] = [None] * n
    line = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-a: b\r\n" * 1000
    pos = [0] * n
    opened = 0
    while not stop.is_set():
        for i in range(n):
            try:
                if socks[i] is None:
                    socks[i], pos[i] = conn(port, sources[i % len(sources)], timeout=0.5), 0
                    opened += 1
                s = socks[i]
                assert s is not None
                s.send(line[pos[i] : pos[i] + 1])
                pos[i] = (pos[i] + 1) % len(line)
            except OSError:
                if socks[i] is not None:
                    socks[i].close()  # type: ignore[union-attr]
                socks[i] = None
        stop.wait(1.0)
    for s in socks:
        if s is not None:
            s.close()
    return {"connections_opened": opened}


def idle(port: int, stop: threading.Event, n: int = 2000) -> dict:
    """``n`` connections that send nothing (keep-alive clients gone quiet), reopened when closed."""
    socks: list[socket.socket] = []
    opened = 0
    while not stop.is_set():
        socks = [s for s in socks if s.fileno() >= 0]
        while len(socks) < n and not stop.is_set():
            try:
                socks.append(conn(port, timeout=0.5))
                opened += 1
            except OSError:
                break
        for s in list(socks):  # drop those the server closed
            s.setblocking(False)
            try:
                if s.recv(4096) == b"":
                    s.close()
            except BlockingIOError:
                pass
            except OSError:
                s.close()
        stop.wait(0.5)
    for s in socks:
        s.close()
    return {"connections_opened": opened}


def repeat(make: Callable[[], bytes], workers: int = 4, read: bool = True) -> Callable[..., dict]:
    """``workers`` clients sending ``make()`` over a new connection each time, as fast as answers come."""

    def attack(port: int, stop: threading.Event) -> dict:
        codes: dict[str, int] = {}
        lock = threading.Lock()

        def one() -> None:
            while not stop.is_set():
                try:
                    s = conn(port)
                    try:
                        s.sendall(make())
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    got = drain(s) if read else b""
                    s.close()
                    code = got.split(b" ", 2)[1].decode() if got.startswith(b"HTTP/") else "none"
                except OSError as exc:
                    code = type(exc).__name__
                with lock:
                    codes[code] = codes.get(code, 0) + 1

        ts = [threading.Thread(target=one, daemon=True) for _ in range(workers)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return {"answers": codes}

    return attack


def big_headers() -> bytes:
    return (
        b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (b"X-h: " + b"a" * 65_000 + b"\r\n") * 100 + b"\r\n"
    )


def slow_reader(port: int, stop: threading.Event, n: int = 8, sources: tuple[str, ...] = (ATTACKER,)) -> dict:
    """``n`` clients asking for the heat map, then reading it a few bytes a second (a tiny receive window),
    spread over ``sources``."""
    done = 0
    socks: list[socket.socket] = []
    while not stop.is_set():
        socks = [s for s in socks if s.fileno() >= 0]
        while len(socks) < n:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            s.settimeout(0.5)
            s.bind((sources[len(socks) % len(sources)], 0))
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(
                    b"GET /api/frame/inspect.png?%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % random.random()
                )
            except OSError:
                s.close()
                continue
            socks.append(s)
        for s in socks:
            try:
                if s.recv(64) == b"":
                    s.close()
                    done += 1
            except TimeoutError:
                pass
            except OSError:
                s.close()
                done += 1
        stop.wait(0.2)
    for s in socks:
        s.close()
    return {"closed_by_server": done}


def _expensive() -> bytes:
    """The costly answers under URLs a client makes up: a frame's heat map, an NG image with a query of its own,
    a trend of any name, /metrics and /status."""
    r = random.random()
    path = random.choice(
        [f"/api/frame/inspect.png?{r}", "/metrics", "/status", f"/api/ng/0.png?{r}", f"/api/trend/{r}"]
    )
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


PHASES: dict[str, Callable[..., dict] | None] = {
    "baseline": None,
    "slowloris": slowloris,
    "slowloris_two_addresses": lambda port, stop: slowloris(port, stop, sources=(ATTACKER, "127.0.0.3")),
    "idle_connections": idle,
    "huge_headers": repeat(big_headers, workers=4),
    "megabyte_request_line": repeat(lambda: b"GET /" + b"a" * 4_000_000 + b" HTTP/1.1\r\n\r\n", workers=4),
    "huge_body": repeat(
        lambda: (
            b"POST /status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50000000\r\n\r\n" + b"a" * 4_000_000
        ),
        workers=4,
    ),
    "malformed": repeat(lambda: random.randbytes(random.randint(1, 3000)) + b"\r\n\r\n", workers=4),
    "methods_traversal": repeat(
        lambda: random.choice(
            [
                b"HEAD /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                b"OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                b"FOO /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                b"GET /../../../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                b"GET /api/frame/..%2f..%2fetc%2fpasswd.png HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                b"GET //status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            ]
        ),
        workers=4,
    ),
    "slow_reader": slow_reader,
    "slow_reader_two_addresses": lambda port, stop: slow_reader(port, stop, 16, (ATTACKER, "127.0.0.3")),
    "expensive_endpoints": repeat(_expensive, workers=8),
    "status_flood": repeat(lambda: b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", workers=8),
}


def legit_get(port: int, path: str = "/status") -> tuple[int, bytes, float]:
    t = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(LEGIT, 0))
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read(), time.monotonic() - t
    except OSError:
        return 0, b"", time.monotonic() - t
    finally:
        c.close()


def results_now(port: int) -> int:
    for _ in range(30):
        code, body, _ = legit_get(port)
        if code == 200:
            return sum(p["results"] for p in json.loads(body)["pipelines"])
        time.sleep(1)
    raise RuntimeError("no /status")


async def run(a) -> dict:
    from asyncua import ua

    from tests.support.models import make_package
    from tests.support.peers import free_port, opcua_server

    tmp = Path(tempfile.mkdtemp(prefix="status-hostile-"))
    pkg = make_package(tmp / "vision", kind="vision")
    pub = tmp / "vision" / "keys" / "signing.pub"
    port, http_port = free_port(), free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    temp = await obj.add_variable(ua.NodeId("Line.Temp", idx), "Temp", 20.0)
    trip = await obj.add_variable(ua.NodeId("Line.Trip", idx), "Trip", False)
    alive = await obj.add_variable(ua.NodeId("Line.Alive", idx), "Alive", False)
    for v in (temp, trip, alive):
        await v.set_writable()
    await srv.start()
    (tmp / "cam").mkdir()
    cfg: dict = {
        "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp / "data")},
        "trusted_keys": [str(pub)],
        "http": {"enabled": True, "port": http_port},
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                "nodes": [{"node_id": f"ns={idx};s=Line.Temp", "tag": "Temp"}],
                "heartbeat": {"node_id": f"ns={idx};s=Line.Alive", "period_ms": 500},
            },
            "cam": {
                "type": "camera",
                "url": str(tmp / "cam"),
                "watch": True,
                "settle_ms": 0,
                "keep_files": 20,
            },
        },
        "models": {"vision": {"package": str(pkg)}},
        "pipelines": [{"name": "inspect", "source": "cam", "model": "vision"}],
        "rules": [{"name": "hot", "source": "plc", "tag": "Temp", "above": 50, "actions": ["trip"]}],
        "actions": {
            "trip": {
                "type": "opcua_write",
                "source": "plc",
                "node_id": f"ns={idx};s=Line.Trip",
                "value": True,
                "reset_value": False,
                "mode": "on_change",
                "when": {"verdict": "NG"},
            }
        },
    }
    if a.config_patch:
        cfg["http"].update(json.loads(a.config_patch))
    agent = start_agent(cfg, tmp)
    beats: list[float] = []
    watcher = asyncio.create_task(watch_heartbeat(alive, beats))
    t_start = time.monotonic()
    while len(beats) < 3:
        if agent.poll() is not None or time.monotonic() - t_start > 180:
            raise RuntimeError("agent did not start: " + (tmp / "agent.log").read_text()[-3000:])
        await asyncio.sleep(0.1)
    feeder = Feeder([tmp / "cam"], a.fps, frames_jpeg())
    feeder.start()
    feeder.on.set()
    await asyncio.sleep(3.0)

    async def until_trip(state: bool, t0: float) -> float | None:
        while await trip.read_value() != state:
            if time.monotonic() - t0 > 10:
                return None
            await asyncio.sleep(0.005)
        return time.monotonic() - t0

    async def phase(name: str) -> dict:
        attack = PHASES[name]
        r0 = await asyncio.to_thread(results_now, http_port)
        b0, t0 = len(beats), time.monotonic()
        stop = threading.Event()
        outcome: dict = {}
        worst = proc(agent.pid)
        legit: list[tuple[int, float, float | None]] = []

        def attacker() -> None:
            if attack is not None:
                outcome.update(attack(http_port, stop))

        def legit_client() -> None:
            while not stop.is_set():
                code, body, dt = legit_get(http_port)
                lag = json.loads(body)["agent"]["loop_lag_ms"]["last"] if code == 200 else None
                legit.append((code, dt, lag))
                stop.wait(0.5)

        ta = threading.Thread(target=attacker, daemon=True)
        tl = threading.Thread(target=legit_client, daemon=True)
        ta.start()
        await asyncio.sleep(0.5)
        tl.start()
        delays, lost = [], 0
        while time.monotonic() - t0 < a.seconds:
            for hot in (True, False):
                t1 = time.monotonic()
                await temp.write_value(60.0 if hot else 20.0)
                d = await until_trip(hot, t1)
                if d is None:
                    lost += 1
                else:
                    delays.append(d)
            p = proc(agent.pid)
            worst = {k: max(worst[k], p[k]) for k in worst}
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.to_thread(ta.join, 30)
        await asyncio.to_thread(tl.join, 15)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(1.0)
        r1 = await asyncio.to_thread(results_now, http_port)
        gaps = [y - x for x, y in zip(beats[b0:], beats[b0 + 1 :], strict=False)]
        lags = [lag for _, _, lag in legit if lag is not None]
        out = {
            "phase": name,
            "results_per_s": round((r1 - r0) / (time.monotonic() - t0), 2),
            "heartbeat_max_gap_s": round(max(gaps), 3) if gaps else None,
            "trip_median_ms": round(statistics.median(delays) * 1000, 1) if delays else None,
            "trip_lost": lost,
            "loop_lag_worst_ms": max(lags) if lags else None,
            "legit_ok": f"{sum(1 for c, _, _ in legit if c == 200)}/{len(legit)}",
            "legit_slowest_s": round(max(dt for _, dt, _ in legit), 3) if legit else None,
            "legit_codes": sorted({c for c, _, _ in legit}),
            **{f"worst_{k}": v for k, v in worst.items()},
            "after": proc(agent.pid),
            "attacker": outcome,
            "elapsed_s": round(elapsed, 1),
        }
        print(json.dumps(out), flush=True)
        return out

    names = list(PHASES) if a.phases == "all" else ["baseline", *a.phases.split(",")]
    phases = [await phase(n) for n in names]
    feeder.on.clear()
    agent.terminate()
    agent.wait(30)
    watcher.cancel()
    await srv.stop()
    return {"fps": a.fps, "phases": phases, "agent_log_tail": (tmp / "agent.log").read_text()[-3000:]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--phases", default="all", help="comma-separated phase names (the baseline always runs)")
    p.add_argument("--config-patch", default="", help="JSON merged into the agent's http settings")
    p.add_argument("--out", type=Path, default=OUT / "status_hostile_bench.json")
    a = p.parse_args(argv)
    from bench._machine import machine, machine_line

    got = {"machine": machine(), **asyncio.run(run(a))}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(got, indent=1))
    keys = ["results_per_s", "heartbeat_max_gap_s", "trip_median_ms", "loop_lag_worst_ms", "legit_ok"]
    keys += ["legit_slowest_s", "worst_rss_mb", "worst_fds", "worst_threads"]
    lines = [
        f"### Hostile HTTP clients against a running agent's status endpoint ({a.seconds:g} s a phase, "
        f"{a.fps:g} fps camera; the baseline phase has no hostile client)",
        "",
        "| phase | " + " | ".join(keys) + " |",
        "|" + " --- |" * (len(keys) + 1),
        *(f"| {ph['phase']} | " + " | ".join(str(ph[k]) for k in keys) + " |" for ph in got["phases"]),
        "",
        machine_line(),
    ]
    md = "\n".join(lines) + "\n"
    print(md)
    if a.out == OUT / "status_hostile_bench.json":
        (OUT / "status_hostile_bench.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
