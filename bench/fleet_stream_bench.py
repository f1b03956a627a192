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
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
async def worker(pki: Path, port: int, first: int, count: int, period: float, ramp_s: float, unary: bool) -> None:
    import grpc

    from cloud_trainer.fleet.service import channel_credentials
    from protocols.gen import fleet_pb2 as pb
    from protocols.gen import fleet_pb2_grpc as rpc

    lat: list[float] = []
    errors = {"stream": 0, "ack_timeout": 0, "rpc": 0}
    codes: dict[str, int] = {}
    samples: list[str] = []
    reached: dict[int, float] = {}
    connected = [0]
    stop = asyncio.Event()
    watching = [False]

    def report(i: int):
        return pb.HeartbeatRequest(labels={"site": "plant", "line": f"l{i % 20}"}, outbox_depth=0,
                                   slots=[pb.SlotState(slot="health", package="machine-health", version="1.0.0",
                                                       digest="x", status="active")])

    async def agent(i: int) -> None:
        await asyncio.sleep(ramp_s * (i - first) / max(1, count))
        name = f"a{i:05d}"
        creds = channel_credentials(pki / "ca.pem", pki / "agents" / f"{name}.pem", pki / "agents" / f"{name}.key")
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
                if msg.acked and msg.acked in sent:
                    lat.append(time.perf_counter() - sent.pop(msg.acked))
                if msg.HasField("desired") and watching[0] and i not in reached and any(
                        d.version == "2.0.0" for d in msg.desired.desired):
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
                    if time.perf_counter() - t > 10:
                        errors["ack_timeout"] += 1
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

    tasks = [asyncio.create_task(agent(i)) for i in range(first, first + count)]
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "status":
            print(json.dumps({"connected": connected[0], "errors": sum(errors.values())}), flush=True)
        elif line == "mark":
            lat.clear()
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
            await asyncio.wait(tasks, timeout=10)
            print(json.dumps({"lat": lat, "errors": errors, "codes": codes, "reached": list(reached.values()),
                              "error_samples": samples,
                              "connected": connected[0]}), flush=True)
            return


# ---- the driver ----------------------------------------------------------------------------------
class Workers:
    def __init__(self, pki: Path, port: int, n: int, k: int, period: float, ramp_s: float, unary: bool) -> None:
        per = -(-n // k)
        self.procs = []
        for w in range(k):
            first, count = w * per, min(per, n - w * per)
            if count <= 0:
                break
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.fleet_stream_bench", "--worker", str(pki), str(port), str(first),
                 str(count), str(period), str(ramp_s), "1" if unary else "0"],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))

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
        await rpc.AdminStub(ch).CreateDeployment(pb.CreateDeploymentRequest(
            package="machine-health", version="2.0.0", slot="health", selector={"site": "plant"},
            strategy="all_at_once"), timeout=120)
    return t


def run(n: int, seconds: float, period: float, workers: int, tmp: Path, pki: Path, unary: bool) -> dict:
    import numpy as np

    from cloud_trainer.registry import Registry
    from tests.support.models import make_package
    from tests.support.peers import free_port, wait_port

    reg = Registry(tmp / "cloud" / "registry")
    reg.publish(make_package(tmp / "pk", kind="signal", version="2.0.0"), [], {}, None, None)
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-m", "cloud_trainer.cli", "serve", "--data", str(tmp / "cloud"), "--port",
                            str(port), "--pki", str(pki)], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    wait_port(port, 30)
    ramp = max(5.0, n / 400)
    ws = Workers(pki, port, n, workers, period, ramp, unary)
    row: dict = {"agents": n, "protocol": "unary Heartbeat" if unary else "Connect stream", "period_s": period}
    try:
        t0 = time.time()
        while sum(s["connected"] for s in ws.ask("status")) < n and time.time() - t0 < ramp + 120:
            time.sleep(1)
        row["connect_s"] = time.time() - t0
        time.sleep(min(period, 30) if not unary else period)  # past the first (random-phase) reports
        ws.ask("mark")
        c0, w0 = cpu_seconds(srv.pid), time.perf_counter()
        time.sleep(seconds)
        cpu = (cpu_seconds(srv.pid) - c0) / (time.perf_counter() - w0) * 100
        row["server_rss_mb"] = rss_mb(srv.pid)
        ws.ask("watch")
        t_dep = asyncio.run(deploy(pki, port))
        deadline = time.time() + max(60, 2 * period)
        while sum(r["reached"] for r in ws.ask("reached")) < n and time.time() < deadline:
            time.sleep(0.2)
        res = ws.ask("stop")
    finally:
        ws.kill()
        srv.terminate()
        srv.wait(20)
    lat = [x for r in res for x in r["lat"]]
    reached = [x for r in res for x in r["reached"]]
    errors = sum(sum(r["errors"].values()) for r in res)
    codes: dict[str, int] = {}
    for r in res:
        for k, v in r["codes"].items():
            codes[k] = codes.get(k, 0) + v
    row["error_samples"] = [x for r in res for x in r.get("error_samples", [])][:10]
    row.update({"reports": len(lat), "reports_per_s": len(lat) / seconds, "errors": errors, "error_codes": codes,
                "p50_ms": float(np.percentile(lat, 50) * 1000) if lat else float("nan"),
                "p99_ms": float(np.percentile(lat, 99) * 1000) if lat else float("nan"),
                "server_cpu_pct": cpu, "server_cpu_ms_per_agent_per_min": cpu / 100 * 60_000 / n,
                "desired_reach_all_s": (max(reached) - t_dep) if len(reached) == n else float("nan"),
                "desired_reached": len(reached)})
    return row


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        pki, port, first, count, period, ramp, unary = sys.argv[2:9]
        asyncio.run(worker(Path(pki), int(port), int(first), int(count), float(period), float(ramp), unary == "1"))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, nargs="+", default=[500, 2000, 5000, 10000])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--period", type=float, default=30)
    ap.add_argument("--workers", type=int, default=2, help="client processes")
    ap.add_argument("--baseline-agents", type=int, default=500, help="the unary-heartbeat baseline (0: skip)")
    ap.add_argument("--pki", type=Path, default=Path(tempfile.gettempdir()) / "fleet-stream-bench-pki")
    a = ap.parse_args(argv)
    make_pki(a.pki, max(a.agents + [a.baseline_agents]))
    rows = []
    plan = ([(a.baseline_agents, True)] if a.baseline_agents else []) + [(n, False) for n in a.agents]
    for n, unary in plan:
        with tempfile.TemporaryDirectory() as tmp:
            row = run(n, a.seconds, a.period, a.workers, Path(tmp), a.pki, unary)
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(rows, a)
    print((OUT / "fleet_stream_bench.md").read_text())
    return 0


def write(rows: list[dict], a) -> None:
    """JSON and the markdown table, after every row (a later size that fails keeps the earlier ones)."""
    OUT.mkdir(exist_ok=True)
    (OUT / "fleet_stream_bench.json").write_text(json.dumps({"bench": "fleet_stream", "rows": rows}, indent=2))
    md = [f"### Fleet protocol at scale: one `cloud-trainer serve`, N agents reporting every {a.period:g} s "
          f"({a.workers} client processes on the same 2 cores, {a.seconds:g}-s steady window)", "",
          "| protocol | agents | reports/s | p50 ms | p99 ms | errors | server CPU (% of a core) | "
          "server CPU ms per agent-minute | desired change reaches all | server RSS MB |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['protocol']} | {r['agents']} | {r['reports_per_s']:.0f} | {r['p50_ms']:.1f} | "
                  f"{r['p99_ms']:.1f} | {r['errors']} {r['error_codes'] or ''} | {r['server_cpu_pct']:.1f} | "
                  f"{r['server_cpu_ms_per_agent_per_min']:.2f} | {r['desired_reach_all_s']:.1f} s "
                  f"({r['desired_reached']}/{r['agents']}) | {r['server_rss_mb']:.0f} |")
    (OUT / "fleet_stream_bench.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
