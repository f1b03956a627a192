"""Fleet scale with the Connect stream: one `cloud-trainer serve` process, N simulated agents each on its own
TLS connection with its own certificate, one long-lived stream each, reporting every ``--period`` seconds
(30 s: the agents' ``report_s``) with a random phase.

The simulated agents run in ``--workers`` separate processes (asyncio grpc, thousands of streams per process),
so that the server's CPU is measured apart from theirs (both share this machine's cores). Reported:

- server CPU during the steady window (from /proc, % of one core) and per agent;
- report round trip p50/p99 (a report asks for an acknowledgement: ``report_id``), errors (streams that
  failed, reports not acknowledged within 10 s);
- the time for a desired-state change (an all-at-once deployment to every agent, through the Admin API)
  to reach every agent (pushed on its stream, never polled);
- the baseline in the same run: the unary Heartbeat the same agents would call every ``--period`` s, for the
  smallest N (``bench/fleet_bench.py`` measures it at its 2-s period).

    .venv/bin/python -m bench.fleet_stream_bench [--agents 500 2000 5000 10000] [--seconds 60] [--period 30]
    .venv/bin/python -m bench.fleet_stream_bench --agents 10000 --replicas 2 --store postgres --workers 4

``--replicas N`` starts N `cloud-trainer serve` processes on one port (SO_REUSEPORT: the kernel spreads the
agents' connections); the server CPU and RSS are their sums. ``--store postgres`` runs them on a PostgreSQL
started for the bench in a temp folder (durable settings: fsync on), a fresh database per row; ``--store
postgresql://...`` uses an existing server; default: SQLite in the data folder (replicas share it).
Errors are counted per gRPC status code (and acknowledgements later than 10 s), with samples in the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fleet_bench import cpu_seconds  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ---- one worker process: many agents ------------------------------------------------------------
async def worker(
    pki: Path, port: int, first: int, count: int, period: float, ramp_s: float, unary: bool
) -> None:
    import grpc

    from cloud_trainer.fleet.server import quiet_gc
    from cloud_trainer.fleet.service import channel_credentials
    from protocols.gen import fleet_pb2 as pb
    from protocols.gen import fleet_pb2_grpc as rpc

    lat: list[float] = []
    lat_at: list[float] = []  # when each acknowledgement came (wall clock): the driver splits the windows
    first_acks: list[float] = []
    gc_pauses: list[
        tuple[float, float, int]
    ] = []  # (wall clock, seconds, generation) of collections >= 20 ms
    gc_started = [0.0]

    def gc_timer(phase: str, info: dict) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        elif (took := time.perf_counter() - gc_started[0]) >= 0.02:
            gc_pauses.append((time.time(), took, info.get("generation", -1)))

    # the clients are the harness, not what is measured: the server's collection settings, and every long
    # pause of theirs is reported beside the latencies
    quiet_gc()
    gc.callbacks.append(gc_timer)
    errors = {"stream": 0, "ack_timeout": 0, "rpc": 0}
    codes: dict[str, int] = {}
    samples: list[str] = []
    reached: dict[int, float] = {}
    connected = [0]
    stop = asyncio.Event()
    watching = [False]

    def report(i: int):
        return pb.HeartbeatRequest(
            labels={"site": "plant", "line": f"l{i % 20}"},
            outbox_depth=0,
            slots=[
                pb.SlotState(
                    slot="health", package="machine-health", version="1.0.0", digest="x", status="active"
                )
            ],
        )

    async def agent(i: int) -> None:
        await asyncio.sleep(ramp_s * (i - first) / max(1, count))
        name = f"a{i:05d}"
        creds = channel_credentials(
            pki / "ca.pem", pki / "agents" / f"{name}.pem", pki / "agents" / f"{name}.key"
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            stub = rpc.FleetStub(ch)
            if unary:
                await unary_agent(i, stub)
                return
            while not stop.is_set():
                try:
                    await one_stream(i, stub)
                except grpc.aio.AioRpcError as exc:
                    if stop.is_set():
                        return
                    errors["stream"] += 1
                    codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
                    if len(samples) < 10:
                        samples.append(f"{time.time():.1f} {exc.code().name}: {exc.details()}")
                    await asyncio.sleep(1 + random.random())

    async def one_stream(i: int, stub) -> None:
        sent: dict[int, float] = {}
        outq: asyncio.Queue = asyncio.Queue()

        async def reqs():
            while (m := await outq.get()) is not None:
                yield m

        call = stub.Connect(reqs())

        async def read():
            async for msg in call:
                if (
                    msg.acked and msg.acked in sent
                ):  # the first report's round trip includes TLS and stream set-up
                    took = time.perf_counter() - sent.pop(msg.acked)
                    if msg.acked > 1:
                        lat.append(took)
                        lat_at.append(time.time())
                    else:
                        first_acks.append(took)
                if (
                    msg.HasField("desired")
                    and watching[0]
                    and i not in reached
                    and any(d.version == "2.0.0" for d in msg.desired.desired)
                ):
                    reached[i] = time.time()

        reader = asyncio.create_task(read())
        rid = 0
        try:
            while not stop.is_set() and not reader.done():
                rid += 1
                sent[rid] = time.perf_counter()
                outq.put_nowait(pb.AgentMessage(report=report(i), report_id=rid))
                if rid == 1:
                    connected[0] += 1
                try:
                    async with asyncio.timeout(period if rid > 1 else random.uniform(0, period)):
                        await stop.wait()
                except TimeoutError:
                    pass
                for r, t in list(sent.items()):  # unanswered for 10 s: an error
                    if r == 1:  # the connection's set-up: timed apart (first_acks), slow but not failed
                        continue
                    if time.perf_counter() - t > 10:
                        errors["ack_timeout"] += 1
                        codes["ack later than 10 s"] = codes.get("ack later than 10 s", 0) + 1
                        if len(samples) < 10:
                            samples.append(f"{time.time():.1f} ack of report {r} not received in 10 s")
                        del sent[r]
            if reader.done() and reader.exception() is not None:
                raise reader.exception()
        finally:
            reader.cancel()
            outq.put_nowait(None)
            call.cancel()

    async def unary_agent(i: int, stub) -> None:
        await asyncio.sleep(random.uniform(0, period))
        connected[0] += 1
        while not stop.is_set():
            t = time.perf_counter()
            try:
                reply = await stub.Heartbeat(report(i), timeout=30)
                lat.append(time.perf_counter() - t)
                if watching[0] and i not in reached and any(d.version == "2.0.0" for d in reply.desired):
                    reached[i] = time.time()
            except grpc.aio.AioRpcError as exc:
                errors["rpc"] += 1
                codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
            try:
                async with asyncio.timeout(period):
                    await stop.wait()
            except TimeoutError:
                pass

    lags: list[tuple[float, float]] = []  # (wall clock, s) when this client's own loop ran >= 100 ms late

    async def lag_probe() -> None:  # a late acknowledgement may be the client's own backlog: shown apart
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.02)
            if (late := time.perf_counter() - t - 0.02) >= 0.1:
                lags.append((time.time(), late))

    tasks = [asyncio.create_task(agent(i)) for i in range(first, first + count)]
    probe = asyncio.create_task(lag_probe())
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "status":
            print(
                json.dumps(
                    {
                        "connected": connected[0],
                        "errors": sum(errors.values()),
                        "codes": codes,
                        "first": first_acks,
                    }
                ),
                flush=True,
            )
        elif line == "mark":
            lat.clear()
            lat_at.clear()
            gc_pauses.clear()
            lags.clear()
            first_acks.clear()
            for k in errors:
                errors[k] = 0
            codes.clear()
            print(json.dumps({"ok": 1}), flush=True)
        elif line == "watch":
            watching[0] = True
            print(json.dumps({"ok": 1}), flush=True)
        elif line == "reached":
            print(json.dumps({"reached": len(reached)}), flush=True)
        elif line in ("stop", ""):
            stop.set()
            probe.cancel()
            await asyncio.wait(tasks, timeout=10)
            print(
                json.dumps(
                    {
                        "lat": lat,
                        "lat_at": lat_at,
                        "gc_pauses": gc_pauses,
                        "loop_lags": lags,
                        "first": first_acks,
                        "errors": errors,
                        "codes": codes,
                        "reached": list(reached.values()),
                        "error_samples": samples,
                        "connected": connected[0],
                    }
                ),
                flush=True,
            )
            return


# ---- the baseline server: grpc.aio with a Connect that only acknowledges ---------------------------
async def echo_server(pki: Path, port: int) -> None:
    """The floor under the fleet service: the same TLS port and wire, a ``Connect`` that acknowledges each
    report at once and pushes an empty desired state when the stream opens (no identity, store or hub)."""
    import grpc

    from cloud_trainer.fleet.service import server_credentials
    from protocols.gen import fleet_pb2 as pb
    from protocols.gen import fleet_pb2_grpc as rpc

    class Echo(rpc.FleetServicer):
        async def Connect(self, request_iterator, context):
            yield pb.ServerMessage(desired=pb.HeartbeatReply())
            async for msg in request_iterator:
                if msg.report_id:
                    yield pb.ServerMessage(acked=msg.report_id)

    server = grpc.aio.server(maximum_concurrent_rpcs=100_000)
    rpc.add_FleetServicer_to_server(Echo(), server)
    server.add_secure_port(
        f"127.0.0.1:{port}", server_credentials(pki / "ca.pem", pki / "server.pem", pki / "server.key")
    )
    await server.start()
    print("echo server listening", flush=True)
    await server.wait_for_termination()


# ---- the driver ----------------------------------------------------------------------------------
class Workers:
    def __init__(
        self, pki: Path, port: int, n: int, k: int, period: float, ramp_s: float, unary: bool
    ) -> None:
        per = -(-n // k)
        self.procs = []
        for w in range(k):
            first, count = w * per, min(per, n - w * per)
            if count <= 0:
                break
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.fleet_stream_bench",
                        "--worker",
                        str(pki),
                        str(port),
                        str(first),
                        str(count),
                        str(period),
                        str(ramp_s),
                        "1" if unary else "0",
                    ],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs if p.poll() is None)

    def ask(self, cmd: str) -> list[dict]:
        for p in self.procs:
            p.stdin.write(cmd + "\n")
            p.stdin.flush()
        return [json.loads(p.stdout.readline()) for p in self.procs]

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def make_pki(d: Path, n: int) -> None:
    from cloud_trainer.pki import init_ca, issue

    if not (d / "ca.pem").exists():
        init_ca(d)
        issue(d, "fleet-service", "server", d / "server", ["127.0.0.1"])
        issue(d, "admin", "admin", d / "admins" / "admin")
    for i in range(n):
        if not (d / "agents" / f"a{i:05d}.pem").exists():
            issue(d, f"a{i:05d}", "agent", d / "agents" / f"a{i:05d}")


async def deploy(pki: Path, port: int) -> float:
    import grpc

    from cloud_trainer.fleet.service import channel_credentials
    from protocols.gen import fleet_pb2 as pb
    from protocols.gen import fleet_pb2_grpc as rpc

    creds = channel_credentials(pki / "ca.pem", pki / "admins" / "admin.pem", pki / "admins" / "admin.key")
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
        t = time.time()
        await rpc.AdminStub(ch).CreateDeployment(
            pb.CreateDeploymentRequest(
                package="machine-health",
                version="2.0.0",
                slot="health",
                selector={"site": "plant"},
                strategy="all_at_once",
            ),
            timeout=120,
        )
    return t


def start_servers(
    tmp: Path, pki: Path, port: int, replicas: int, store: str | None, echo: bool = False
) -> list[subprocess.Popen]:
    """``replicas`` serve processes on one port, each started once the previous one listens."""
    from tests.support.peers import wait_port

    procs = []
    for k in range(replicas):
        cmd = (
            ["-m", "bench.fleet_stream_bench", "--echo-server", str(pki), str(port)]
            if echo
            else [
                "-m",
                "cloud_trainer.cli",
                "serve",
                "--data",
                str(tmp / "cloud"),
                "--port",
                str(port),
                "--pki",
                str(pki),
                *(["--store", store] if store else []),
                *(["--replicas"] if replicas > 1 else []),  # the port is shared only when asked for
            ]
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, *cmd],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=(tmp / f"serve-{k}.log").open("w"),
                text=True,
            )
        )
        line = procs[-1].stdout.readline()
        procs[-1].stdout.close()
        if "listening" not in line:
            raise RuntimeError(f"cloud-trainer serve did not start: {line!r}")
    wait_port(port, 30)
    return procs


PROTOCOLS = {"unary": "unary Heartbeat", "stream": "Connect stream", "echo": "bare grpc.aio Connect (floor)"}


def run(
    n: int,
    seconds: float,
    period: float,
    workers: int,
    tmp: Path,
    pki: Path,
    kind: str,
    replicas: int = 1,
    store: str | None = None,
) -> dict:
    unary, echo = kind == "unary", kind == "echo"
    import numpy as np

    from cloud_trainer.registry import Registry
    from tests.support.models import make_package
    from tests.support.peers import free_port

    reg = Registry(tmp / "cloud" / "registry")
    reg.publish(make_package(tmp / "pk", kind="signal", version="2.0.0"), [], {}, None, None)
    port = free_port()
    srvs = start_servers(tmp, pki, port, replicas, store, echo)
    pids = [p.pid for p in srvs]
    ramp = max(5.0, n / 400)
    ws = Workers(pki, port, n, workers, period, ramp, unary)
    row: dict = {
        "agents": n,
        "protocol": PROTOCOLS[kind],
        "period_s": period,
        "replicas": replicas,
        "store": "postgresql" if store else "sqlite",
    }
    try:
        t0, c_ramp, w_ramp = time.time(), sum(map(cpu_seconds, pids)), ws.cpu_seconds()
        while sum(s["connected"] for s in ws.ask("status")) < n and time.time() - t0 < ramp + 120:
            time.sleep(1)
        row["connect_s"] = time.time() - t0
        row["ramp_server_cpu_pct"] = (sum(map(cpu_seconds, pids)) - c_ramp) / row["connect_s"] * 100
        row["ramp_clients_cpu_pct"] = (ws.cpu_seconds() - w_ramp) / row["connect_s"] * 100
        time.sleep(min(period, 30) if not unary else period)  # past the first (random-phase) reports
        ramp_st = ws.ask("status")  # the connection ramp: errors and time to a stream's first acknowledgement
        ramp_first = [x for r in ramp_st for x in r["first"]]
        row["first_acks_over_10s"] = sum(1 for x in ramp_first if x > 10)
        row["ramp_errors"] = sum(r["errors"] for r in ramp_st)
        row["ramp_error_codes"] = merge_codes(r["codes"] for r in ramp_st)
        row["first_ack_p50_ms"] = float(np.percentile(ramp_first, 50) * 1000) if ramp_first else float("nan")
        row["first_ack_p99_ms"] = float(np.percentile(ramp_first, 99) * 1000) if ramp_first else float("nan")
        ws.ask("mark")
        c0, w0 = sum(map(cpu_seconds, pids)), time.perf_counter()
        load0 = os.getloadavg()[0]
        time.sleep(seconds)
        cpu = (sum(map(cpu_seconds, pids)) - c0) / (time.perf_counter() - w0) * 100
        row["load_avg"] = [round(load0, 1), round(os.getloadavg()[0], 1)]
        row["server_rss_mb"] = sum(map(rss_mb, pids))
        t_dep = 0.0
        t_steady_end = time.time()
        if not echo:  # the floor has no deployments
            ws.ask("watch")
            t_dep = asyncio.run(deploy(pki, port))
            deadline = time.time() + max(60, 2 * period)
            while sum(r["reached"] for r in ws.ask("reached")) < n and time.time() < deadline:
                time.sleep(0.2)
        res = ws.ask("stop")
    finally:
        ws.kill()
        for p in srvs:
            p.terminate()
        for p in srvs:
            p.wait(20)
    lat = [x for r in res for x in r["lat"]]
    lat_at = [x for r in res for x in r["lat_at"]]
    steady = [x for x, t in zip(lat, lat_at, strict=True) if t < t_steady_end]
    push = [x for x, t in zip(lat, lat_at, strict=True) if t >= t_steady_end]
    slow: dict[int, int] = {}  # acknowledgements over 200 ms per second of the run
    for x, t in zip(lat, lat_at, strict=True):
        if x > 0.2:
            slow[int(t - t_steady_end)] = slow.get(int(t - t_steady_end), 0) + 1
    row["slow_acks_by_second"] = dict(sorted(slow.items(), key=lambda kv: -kv[1])[:8])  # s from the push
    row["steady_p99_ms"] = float(np.percentile(steady, 99) * 1000) if steady else float("nan")
    row["push_p99_ms"] = float(np.percentile(push, 99) * 1000) if push else float("nan")
    row["push_reports"] = len(push)
    pauses = [p for r in res for p in r["gc_pauses"]]
    row["client_gc_pauses"] = {"n": len(pauses), "max_s": max((p[1] for p in pauses), default=0.0)}
    lags = [x for r in res for x in r.get("loop_lags", [])]
    row[
        "client_loop_lags"
    ] = {  # seconds from the push's start: when a client's loop ran late, and by how much
        "n": len(lags),
        "max_s": max((x[1] for x in lags), default=0.0),
        "worst": sorted(((round(t - t_steady_end, 1), round(x, 2)) for t, x in lags), key=lambda v: -v[1])[
            :8
        ],
    }
    row["t_steady_end"] = t_steady_end
    row["server_log_warnings"] = [
        line.strip()
        for k in range(replicas)
        if (tmp / f"serve-{k}.log").exists()
        for line in (tmp / f"serve-{k}.log").read_text(errors="replace").splitlines()
        if " WARNING " in line or " ERROR " in line or "desired state pushed" in line
    ][:20]
    reached = [x for r in res for x in r["reached"]]
    errors = sum(sum(r["errors"].values()) for r in res)
    codes = merge_codes(r["codes"] for r in res)
    row["error_samples"] = [x for r in res for x in r.get("error_samples", [])][:10]
    row.update(
        {
            "reports": len(lat),
            "reports_per_s": len(lat) / seconds,
            "errors": errors,
            "error_codes": codes,
            "p50_ms": float(np.percentile(lat, 50) * 1000) if lat else float("nan"),
            "p99_ms": float(np.percentile(lat, 99) * 1000) if lat else float("nan"),
            "server_cpu_pct": cpu,
            "server_cpu_ms_per_agent_per_min": cpu / 100 * 60_000 / n,
            "desired_reach_all_s": (max(reached) - t_dep) if len(reached) == n else float("nan"),
            "desired_reached": len(reached),
        }
    )
    return row


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        pki, port, first, count, period, ramp, unary = sys.argv[2:9]
        asyncio.run(
            worker(Path(pki), int(port), int(first), int(count), float(period), float(ramp), unary == "1")
        )
        return 0
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--echo-server":
        asyncio.run(echo_server(Path(sys.argv[2]), int(sys.argv[3])))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, nargs="+", default=[500, 2000, 5000, 10000])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--period", type=float, default=30)
    ap.add_argument("--workers", type=int, default=2, help="client processes")
    ap.add_argument("--baseline-agents", type=int, default=500, help="the unary-heartbeat baseline (0: skip)")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also run every N against a bare grpc.aio server whose "
        "Connect only acknowledges (what grpc, TLS and this "
        "machine cost without the fleet service)",
    )
    ap.add_argument("--pki", type=Path, default=Path(tempfile.gettempdir()) / "fleet-stream-bench-pki")
    ap.add_argument("--replicas", type=int, default=1, help="serve processes on one port (SO_REUSEPORT)")
    ap.add_argument(
        "--store",
        default="sqlite",
        help="sqlite (default), postgres (a server started for the bench) "
        "or a postgresql:// URL of an existing server",
    )
    a = ap.parse_args(argv)
    make_pki(a.pki, max(a.agents + [a.baseline_agents]))
    rows = []
    plan = [(a.baseline_agents, "unary")] if a.baseline_agents else []
    for n in a.agents:
        plan += [(n, "echo")] * a.floor + [(n, "stream")]
    with contextlib.ExitStack() as stack:
        pg = None
        if a.store == "postgres":
            from tests.support.postgres import running_postgres

            pg = stack.enter_context(running_postgres("-c max_connections=300"))  # durable: fsync on
        elif a.store.startswith(("postgresql://", "postgres://")):
            pg = a.store.rstrip("/")
        elif a.store != "sqlite":
            ap.error(f"--store {a.store!r}: sqlite, postgres or a postgresql:// URL")
        for k, (n, kind) in enumerate(plan):
            store = fresh_database(pg, f"bench_{os.getpid()}_{k}") if pg and kind != "echo" else None
            with tempfile.TemporaryDirectory() as tmp:
                row = run(n, a.seconds, a.period, a.workers, Path(tmp), a.pki, kind, a.replicas, store)
            rows.append(row)
            print(json.dumps(row), flush=True)
            write(rows, a)
    print((OUT / "fleet_stream_bench.md").read_text())
    return 0


def merge_codes(dicts) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def fresh_database(server: str, name: str) -> str:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


def write(rows: list[dict], a) -> None:
    """JSON and the markdown table, after every row (a later size that fails keeps the earlier ones)."""
    from bench._machine import machine, machine_line

    OUT.mkdir(exist_ok=True)
    (OUT / "fleet_stream_bench.json").write_text(
        json.dumps({"bench": "fleet_stream", "machine": machine(), "rows": rows}, indent=2)
    )
    md = [
        f"### Fleet protocol at scale: {a.replicas} `cloud-trainer serve` process(es) on {a.store}, N agents "
        f"reporting every {a.period:g} s ({a.workers} client processes on the same 2 cores, {a.seconds:g}-s "
        "steady window)",
        "",
        "| protocol | agents | replicas / store | ramp: s, server / clients CPU % | ramp: errors | "
        "ramp: first ack p50 / p99 ms (over 10 s) | "
        "steady: reports/s | "
        "steady: p50 ms | steady: p99 ms (before / during the desired-state push) | steady: errors | server CPU (% of a core) | "
        "server CPU ms per agent-minute | desired change reaches all | server RSS MB | load avg |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        reach = (
            f"{r['desired_reach_all_s']:.1f} s ({r['desired_reached']}/{r['agents']})"
            if r["protocol"] != PROTOCOLS["echo"]
            else "-"
        )
        md.append(
            f"| {r['protocol']} | {r['agents']} | {r['replicas']} / {r['store']} | "
            f"{r['connect_s']:.0f}, {r['ramp_server_cpu_pct']:.0f} / {r['ramp_clients_cpu_pct']:.0f} | "
            f"{r['ramp_errors']} {r['ramp_error_codes'] or ''} | {r['first_ack_p50_ms']:.0f} / "
            f"{r['first_ack_p99_ms']:.0f} ({r['first_acks_over_10s']}) | {r['reports_per_s']:.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} ({r.get('steady_p99_ms', float('nan')):.1f} / "
            f"{r.get('push_p99_ms', float('nan')):.1f}) | {r['errors']} {r['error_codes'] or ''} | "
            f"{r['server_cpu_pct']:.1f} | {r['server_cpu_ms_per_agent_per_min']:.2f} | {reach} | "
            f"{r['server_rss_mb']:.0f} | {r['load_avg'][0]}-{r['load_avg'][1]} |"
        )
    md += ["", machine_line()]
    (OUT / "fleet_stream_bench.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
