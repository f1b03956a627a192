"""Fleet scale: one `cloud-trainer serve` process and N simulated agents (lightweight in-process gRPC
clients with their own certificates, heartbeating every ``--period`` seconds).

Reports heartbeat latency percentiles, the server process's CPU (from /proc, as % of one core), and
the time for an all-at-once deployment to reach every agent's desired state (seen in its heartbeat
reply). N defaults to 100 and 500; the first bottleneck observed is noted in the table.

    .venv/bin/python -m bench.fleet_bench [--agents 100 500] [--seconds 15] [--period 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_fleet(n: int, seconds: float, period: float, tmp: Path) -> dict:
    import grpc

    from cloud_trainer.fleet.service import channel_credentials
    from cloud_trainer.pki import init_ca, issue
    from cloud_trainer.registry import Registry
    from protocols.gen import fleet_pb2 as pb
    from protocols.gen import fleet_pb2_grpc as rpc
    from tests.support.models import make_package
    from tests.support.peers import free_port, wait_port

    pki = tmp / "pki"
    init_ca(pki)
    issue(pki, "fleet-service", "server", pki / "server", ["127.0.0.1"])
    for i in range(n):
        issue(pki, f"a{i:05d}", "agent", pki / "agents" / f"a{i:05d}")
    issue(pki, "admin", "admin", pki / "admins" / "admin")
    reg = Registry(tmp / "cloud" / "registry")
    reg.publish(make_package(tmp / "pk", kind="signal", version="2.0.0"), [], {}, None, None)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloud_trainer.cli",
            "serve",
            "--data",
            str(tmp / "cloud"),
            "--port",
            str(port),
            "--pki",
            str(pki),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, 30)
    lat: list[float] = []
    seen_at: dict[int, float] = {}
    codes: dict[str, int] = {}  # errors by gRPC status code
    stop = asyncio.Event()
    deployed_at = [0.0]

    async def agent(i: int) -> None:
        creds = channel_credentials(
            pki / "ca.pem", pki / "agents" / f"a{i:05d}.pem", pki / "agents" / f"a{i:05d}.key"
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            stub = rpc.FleetStub(ch)
            await asyncio.sleep(period * i / n)  # spread the phases
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    reply = await stub.Heartbeat(
                        pb.HeartbeatRequest(
                            labels={"site": "plant", "line": f"l{i % 20}"},
                            slots=[
                                pb.SlotState(
                                    slot="health",
                                    package="machine-health",
                                    version="1.0.0",
                                    digest="x",
                                    status="active",
                                )
                            ],
                        ),
                        timeout=30,
                    )
                    lat.append(time.perf_counter() - t)
                    if (
                        deployed_at[0]
                        and i not in seen_at
                        and any(d.version == "2.0.0" for d in reply.desired)
                    ):
                        seen_at[i] = time.time()
                except grpc.aio.AioRpcError as exc:
                    lat.append(float("nan"))
                    codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
                await asyncio.sleep(period)

    tasks = [asyncio.create_task(agent(i)) for i in range(n)]
    await asyncio.sleep(period * 2)  # all registered
    lat.clear()
    codes.clear()
    c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu = (cpu_seconds(proc.pid) - c0) / (time.perf_counter() - t0) * 100
    steady = [x for x in lat if x == x]
    errors = sum(1 for x in lat if x != x)
    error_codes = dict(codes)  # of the steady window, before the rollout
    # a deployment to every agent at once, through the admin API
    creds = channel_credentials(pki / "ca.pem", pki / "admins" / "admin.pem", pki / "admins" / "admin.key")
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
        deployed_at[0] = time.time()
        await rpc.AdminStub(ch).CreateDeployment(
            pb.CreateDeploymentRequest(
                package="machine-health",
                version="2.0.0",
                slot="health",
                selector={"site": "plant"},
                strategy="all_at_once",
            ),
            timeout=60,
        )
    deadline = time.time() + 60
    while len(seen_at) < n and time.time() < deadline:
        await asyncio.sleep(0.1)
    reach = max(seen_at.values()) - deployed_at[0] if len(seen_at) == n else float("nan")
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    proc.terminate()
    proc.wait(10)
    return {
        "agents": n,
        "heartbeats": len(steady),
        "errors": errors,
        "error_codes": error_codes,
        "p50_ms": float(np.percentile(steady, 50) * 1000),
        "p99_ms": float(np.percentile(steady, 99) * 1000),
        "server_cpu_pct": cpu,
        "rollout_reach_s": reach,
        "heartbeats_per_s": len(steady) / seconds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--period", type=float, default=2.0)
    a = ap.parse_args(argv)
    rows = []
    for n in a.agents:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(asyncio.run(run_fleet(n, a.seconds, a.period, Path(tmp))))
    from bench._machine import machine, machine_line

    OUT.mkdir(exist_ok=True)
    (OUT / "fleet_bench.json").write_text(
        json.dumps({"bench": "fleet", "machine": machine(), "rows": rows}, indent=2)
    )
    md = [
        f"### Fleet service scale: one `cloud-trainer serve`, N agents heartbeating every {a.period:g} s "
        "(clients in one process on the same 2 cores)",
        "",
        "| agents | heartbeats/s | p50 ms | p99 ms | errors | server CPU (% of a core) | all-at-once rollout reaches all |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['agents']} | {r['heartbeats_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['errors']} {r['error_codes'] or ''} | {r['server_cpu_pct']:.0f} | {r['rollout_reach_s']:.1f} s |"
        )
    md += [
        "",
        "First bottleneck: the server is a single Python process whose heartbeat handler writes the agent's "
        "state to SQLite with synchronous=FULL on every call; the simulated clients share the same 2 cores, so "
        "the latency above includes their own scheduling.",
        "",
        machine_line(),
    ]
    (OUT / "fleet_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
