"""OPC UA source throughput vs a bare asyncua subscription, same server, same node set, same run.

An asyncua server in its own process updates ``--vars`` Double variables at ``--hz`` each.
Baseline: a bare asyncua ``Client`` subscription whose handler only counts notifications.
Project: ``devices.opcua.OpcUaSource`` (quality, timestamps, NaN and order checks, ``Reading``
objects through the bounded ``Channel``) with a consumer that drains ``items()`` and counts.
Runs alternate (bare, adapter, bare, ...) so drift hits both; medians and the ratio are reported.

    .venv/bin/python -m bench.opcua_bench [--vars 100 --hz 50 --seconds 6 --runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


async def _serve(port: int, n_vars: int, hz: float) -> None:
    import datetime as dt
    import math

    from asyncua import Server, ua

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:factory-edge:bench")
    obj = await server.nodes.objects.add_object(ua.NodeId("Bench", idx), ua.QualifiedName("Bench", idx))
    ids = []
    for i in range(n_vars):
        nid = ua.NodeId(f"Bench.V{i}", idx)
        await obj.add_variable(nid, ua.QualifiedName(f"V{i}", idx), 0.0)
        ids.append(nid)
    await server.start()
    print("READY", flush=True)
    period, k = 1.0 / hz, 0
    next_t = time.monotonic()
    while True:
        k += 1
        ts = dt.datetime.now(dt.UTC)
        for i, nid in enumerate(ids):
            await server.write_attribute_value(
                nid,
                ua.DataValue(ua.Variant(math.sin(k * 0.01 + i), ua.VariantType.Double), SourceTimestamp=ts),
            )
        next_t += period
        await asyncio.sleep(max(0.0, next_t - time.monotonic()))


async def _bare(endpoint: str, node_ids: list[str], seconds: float) -> tuple[float, float]:
    from asyncua import Client

    count = 0

    class Handler:
        def datachange_notification(self, node, val, data):
            nonlocal count
            count += 1

    async with Client(endpoint) as client:
        sub = await client.create_subscription(20, Handler())
        await sub.subscribe_data_change([client.get_node(n) for n in node_ids], queuesize=10)
        await asyncio.sleep(1.0)  # warm-up: initial values and steady state
        c0, t0, p0 = count, time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        n = count - c0
        return n / (time.perf_counter() - t0), (time.process_time() - p0) / max(n, 1) * 1e6


async def _adapter(endpoint: str, node_ids: list[str], seconds: float) -> tuple[float, float, int]:
    from devices.opcua.client import OpcUaSource
    from devices.opcua.settings import OpcUaSettings

    settings = OpcUaSettings(
        endpoint=endpoint,
        publishing_interval_ms=20,
        nodes=[{"node_id": n, "tag": n, "queue_size": 10} for n in node_ids],
    )
    src = OpcUaSource("bench", settings)
    count = 0

    async def consume() -> None:
        nonlocal count
        async for _ in src.items():
            count += 1

    await src.start()
    task = asyncio.create_task(consume())
    await asyncio.sleep(1.0)
    c0, t0, p0 = count, time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    n = count - c0
    rate, cpu_us = n / (time.perf_counter() - t0), (time.process_time() - p0) / max(n, 1) * 1e6
    await src.stop()
    await task
    return rate, cpu_us, src.stats.dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.opcua_bench")
    ap.add_argument("--vars", type=int, default=100)
    ap.add_argument("--hz", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: run the server on this port
    a = ap.parse_args(argv)
    if a.serve:
        asyncio.run(_serve(a.serve, a.vars, a.hz))
        return 0
    import logging

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    from tests.support.peers import free_port

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.opcua_bench",
            "--serve",
            str(port),
            "--vars",
            str(a.vars),
            "--hz",
            str(a.hz),
        ],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
        env=dict(os.environ),
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != b"READY":
            raise SystemExit("bench server did not start")
        endpoint = f"opc.tcp://127.0.0.1:{port}/bench/"
        node_ids = [f"ns=2;s=Bench.V{i}" for i in range(a.vars)]
        bare, ours, bare_cpu, our_cpu, dropped = [], [], [], [], 0
        for _ in range(a.runs):
            rate, cpu = asyncio.run(_bare(endpoint, node_ids, a.seconds))
            bare.append(rate)
            bare_cpu.append(cpu)
            rate, cpu, d = asyncio.run(_adapter(endpoint, node_ids, a.seconds))
            ours.append(rate)
            our_cpu.append(cpu)
            dropped += d
    finally:
        server.terminate()
        server.wait(10)
    mb, mo = statistics.median(bare), statistics.median(ours)
    cb, co = statistics.median(bare_cpu), statistics.median(our_cpu)
    offered = a.vars * a.hz
    from bench._machine import machine, machine_line

    result = {
        "bench": "opcua_bench",
        "machine": machine(),
        "vars": a.vars,
        "hz": a.hz,
        "seconds": a.seconds,
        "runs": a.runs,
        "offered_per_s": offered,
        "bare_per_s": bare,
        "adapter_per_s": ours,
        "bare_median_per_s": mb,
        "adapter_median_per_s": mo,
        "ratio": mo / mb if mb else None,
        "bare_cpu_us_per_notification": bare_cpu,
        "adapter_cpu_us_per_notification": our_cpu,
        "cpu_ratio": co / cb if cb else None,
        "adapter_dropped": dropped,
        "target_ratio": 0.8,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "opcua_bench.json").write_text(json.dumps(result, indent=2))
    md = (
        f"### OPC UA source vs bare asyncua subscription ({a.vars} variables × {a.hz:g} Hz = {offered:,.0f}/s offered, "
        f"median of {a.runs} × {a.seconds:g} s)\n\n"
        "| client | notifications/s (median) | client CPU µs/notification (median) | runs |\n"
        "| --- | ---: | ---: | ---: |\n"
        f"| bare asyncua subscription (count only) | {mb:,.0f} | {cb:.1f} | {a.runs} |\n"
        f"| OpcUaSource → Reading → items() | {mo:,.0f} | {co:.1f} | {a.runs} |\n\n"
        f"Throughput ratio adapter/bare: **{mo / mb:.2f}** (target ≥ 0.80); client CPU ratio: {co / cb:.2f}; "
        f"adapter drops: {dropped}.\n\n{machine_line()}\n"
    )
    (OUT / "opcua_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
