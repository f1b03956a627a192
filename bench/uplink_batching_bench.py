"""The uplink's records path at a steady trickle: streams opened, batches, CPU and latency, against the former
uplink in the same run.

A real ``cloud-trainer serve`` process (TLS, client certificates) and a real agent process (an ``Outbox`` and an
``Uplink``) on 127.0.0.1; the agent appends results at a steady rate as its pipelines do (``append_soon``, then
``poke``) for ``--seconds``. Reported per rate, for the uplink now (``after``) and the uplink of ``--before``
(a git revision: its ``edge_agent/uplink/client.py`` loaded as a module of its own, ``before``):

- CPU seconds of the agent process (the outbox's writes included: the same in both) and of the cloud process per
  1000 records, from /proc, over the whole run;
- PushRecords streams opened, batches, records per batch;
- end-to-end latency p50/p99: a record's ``append_soon`` to the ack of its seq being deleted from the outbox.

A second table (``--many``): N agents of one tenant at ``--many-rate`` records a second each (a record every few
seconds: each stream idles between them), in one process with an in-process service, for the uplink before, the
uplink now with the service's former 5-s place for a stream's next batch (``guard.NEXT_SLOT_S`` = 5), and both
now: latency p50/p99/max, refusals. An idle stream waiting for its next batch held one of its tenant's
``tenant_receiving_batches`` places (8) for up to 5 s; the other agents' batches waited for a place.

    .venv/bin/python -m bench.uplink_batching_bench [--rates 5 20 100] [--seconds 30] [--before 5df54e68]
        [--many 40 80] [--many-rate 0.3] [--many-seconds 25]

Writes bench/out/uplink_batching.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fleet_bench import cpu_seconds  # noqa: E402

BEFORE_REV = "5df54e68"  # the uplink that opened a stream per record or two at a trickle


def _former_uplink(rev: str, tmp: Path):
    """The ``Uplink`` class of ``rev``'s ``edge_agent/uplink/client.py``, loaded beside the current one."""
    src = subprocess.run(
        ["git", "show", f"{rev}:edge_agent/uplink/client.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path = tmp / "uplink_before.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location("uplink_before", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Uplink


async def agent(args) -> None:
    """One agent: records at ``args.rate`` a second for ``args.seconds``; the figures as JSON on stdout."""
    from edge_agent.outbox.store import Outbox, OutboxSettings
    from tests.support.fleet import cloud_settings

    pki = Path(args.pki)
    tmp = Path(args.data)
    if args.mode == "before":
        uplink_cls = _former_uplink(args.before, tmp)
    else:
        from edge_agent.uplink.client import Uplink as uplink_cls
    ob = Outbox(OutboxSettings(), tmp / "agent")
    ob.open()
    put: dict[int, float] = {}
    acked: dict[int, float] = {}
    ack = ob.ack

    def timed_ack(seqs):
        t = time.monotonic()
        for s in seqs:
            acked.setdefault(s, t)
        return ack(seqs)

    ob.ack = timed_ack  # type: ignore[method-assign]
    # the agent's defaults but the backoff (a bench on 127.0.0.1 needs none of its waits)
    s = cloud_settings(pki, args.port, heartbeat_s=5.0, max_delay_ms=200.0)
    up = uplink_cls(s, ob)
    await up.start()
    streams = [0]
    push = up.client.stub.PushRecords

    def counted(*a, **kw):
        streams[0] += 1
        return push(*a, **kw)

    up.client.stub.PushRecords = counted
    cpu0 = time.process_time()
    loop = asyncio.get_running_loop()
    n = round(args.rate * args.seconds)
    t0 = loop.time()
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + i / args.rate - loop.time()))
        at = time.monotonic()
        fut = ob.append_soon("result", {"i": i, "verdict": "OK", "score": 0.125, "model": "bench-1.0"})
        if fut is not None:
            fut.add_done_callback(
                lambda f, at=at: put.__setitem__(f.result(), at) if not f.exception() else None
            )
        up.poke()
    deadline = time.monotonic() + 30
    while len(acked) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    cpu = time.process_time() - cpu0
    await up.stop()
    ob.close()
    lat = sorted(acked[s] - put[s] for s in put if s in acked)
    print(
        json.dumps(
            {
                "records": n,
                "acked": len(lat),
                "agent_cpu_s": cpu,
                "streams": streams[0],
                "batches": up.batches,
                "reconnects": up.reconnects,
                "lat_p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
                "lat_p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
            }
        )
    )


async def many(args) -> None:
    """``args.many_n`` agents of one tenant, each at ``args.many_rate`` records a second, against an in-process
    service; the figures as JSON on stdout."""
    from cloud_trainer.fleet import guard
    from cloud_trainer.fleet.service import FleetServer
    from edge_agent.outbox.store import Outbox, OutboxSettings
    from tests.support.fleet import cloud_settings, make_pki
    from tests.support.peers import free_port

    if args.next_slot is not None:
        guard.NEXT_SLOT_S = args.next_slot
    tmp = Path(args.data)
    names = [f"gw{i}" for i in range(args.many_n)]
    pki = make_pki(tmp / "pki", agents=names)
    port = free_port()
    srv = FleetServer(tmp / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    if args.mode == "before":
        uplink_cls = _former_uplink(args.before, tmp)
    else:
        from edge_agent.uplink.client import Uplink as uplink_cls
    lat: list[float] = []
    agents = []
    for name in names:
        ob = Outbox(OutboxSettings(), tmp / name)
        ob.open()
        put: dict[int, float] = {}

        def timed(seqs, put=put, ack=ob.ack):
            t = time.monotonic()
            lat.extend(t - put[s] for s in seqs if s in put)
            return ack(seqs)

        ob.ack = timed  # type: ignore[method-assign]
        up = uplink_cls(cloud_settings(pki, port, agent=name, heartbeat_s=5.0, max_delay_ms=200.0), ob)
        await up.start()
        agents.append((ob, up, put))

    async def feed(ob, up, put, phase: float) -> None:
        await asyncio.sleep(phase)
        t0, i = time.monotonic(), 0
        while time.monotonic() - t0 < args.seconds:
            at = time.monotonic()
            fut = ob.append_soon("result", {"i": i})
            i += 1
            if fut is not None:
                fut.add_done_callback(lambda f, at=at, put=put: put.__setitem__(f.result(), at))
            up.poke()
            await asyncio.sleep(1 / args.many_rate)

    n = len(agents)
    await asyncio.gather(*(feed(*a, k / n / args.many_rate) for k, a in enumerate(agents)))
    await asyncio.sleep(5)
    lat.sort()
    refusals = srv.quotas.snapshot("default")["refusals"]
    out = {
        "agents": n,
        "acked": len(lat),
        "depth": sum(ob.stats()["depth"] for ob, _, _ in agents),
        "lat_p50_ms": 1000 * lat[len(lat) // 2],
        "lat_p99_ms": 1000 * lat[int(len(lat) * 0.99)],
        "lat_max_ms": 1000 * lat[-1],
        "reconnects": sum(up.reconnects for _, up, _ in agents),
        "refusals": sum(refusals.values()),
    }
    for ob, up, _ in agents:
        await up.stop()
        ob.close()
    await srv.stop()
    print(json.dumps(out))


def many_row(mode: str, n: int, rate: float, seconds: float, before: str, next_slot: float | None) -> dict:
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "bench.uplink_batching_bench", "--agent", mode, "--many-n", str(n)]
        cmd += ["--many-rate", str(rate), "--seconds", str(seconds), "--data", d, "--before", before]
        if next_slot is not None:
            cmd += ["--next-slot", str(next_slot)]
        out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    label = {"before": "before", "after": "now"}[mode] + (" (service: 5-s place)" if next_slot else "")
    row.update(uplink=label, rate=rate)
    return row


def one(mode: str, rate: float, seconds: float, before: str) -> dict:
    from tests.support.fleet import ServerProcess, make_pki

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pki = make_pki(tmp / "pki", agents=("gw1",))
        srv = ServerProcess(tmp / "cloud", pki).start()
        try:
            assert srv.proc is not None
            cloud0 = cpu_seconds(srv.proc.pid)
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.uplink_batching_bench",
                    "--agent",
                    mode,
                    "--rate",
                    str(rate),
                    "--seconds",
                    str(seconds),
                    "--port",
                    str(srv.port),
                    "--pki",
                    str(pki),
                    "--data",
                    str(tmp),
                    "--before",
                    before,
                ],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            cloud = cpu_seconds(srv.proc.pid) - cloud0
        finally:
            srv.kill()
    row = json.loads(out.strip().splitlines()[-1])
    k = row["records"] / 1000
    row.update(
        mode=mode,
        rate=rate,
        cloud_cpu_s=cloud,
        agent_cpu_s_per_1000=row["agent_cpu_s"] / k,
        cloud_cpu_s_per_1000=cloud / k,
        records_per_batch=row["records"] / max(1, row["batches"]),
    )
    return row


def main() -> None:
    from bench._machine import machine, machine_line

    print(machine_line(), flush=True)
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", type=float, nargs="+", default=[5, 20, 100])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--before", default=BEFORE_REV)
    ap.add_argument("--agent", choices=["before", "after"])
    ap.add_argument("--rate", type=float)
    ap.add_argument("--port", type=int)
    ap.add_argument("--pki")
    ap.add_argument("--data")
    ap.add_argument("--many", type=int, nargs="*", default=[40, 80])
    ap.add_argument("--many-rate", type=float, default=0.3)
    ap.add_argument("--many-seconds", type=float, default=25)
    ap.add_argument("--many-n", type=int)
    ap.add_argument("--next-slot", type=float)
    args = ap.parse_args()
    if args.agent:
        args.mode = args.agent
        asyncio.run(many(args) if args.many_n else agent(args))
        return
    rows = []
    for rate in args.rates:
        for mode in ("before", "after"):  # interleaved: a busy moment of the machine falls on both
            rows.append(one(mode, rate, args.seconds, args.before))
            print(json.dumps(rows[-1]), flush=True)
    ratios = []
    for rate in args.rates:
        b, a = (next(r for r in rows if r["rate"] == rate and r["mode"] == m) for m in ("before", "after"))
        ratios.append(
            {
                "rate": rate,
                "streams": a["streams"] / max(1, b["streams"]),
                "agent_cpu": a["agent_cpu_s"] / b["agent_cpu_s"],
                "cloud_cpu": a["cloud_cpu_s"] / b["cloud_cpu_s"],
                "records_per_batch": a["records_per_batch"] / b["records_per_batch"],
            }
        )
    crowd = []
    for n in args.many:
        for mode, slot in (("before", None), ("after", 5.0), ("after", None)):
            crowd.append(many_row(mode, n, args.many_rate, args.many_seconds, args.before, slot))
            print(json.dumps(crowd[-1]), flush=True)
    OUT.mkdir(exist_ok=True)
    meta = {
        "seconds": args.seconds,
        "before": args.before,
        "machine": machine(),
        "python": sys.version.split()[0],
    }
    (OUT / "uplink_batching.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "ratios": ratios, "many": crowd}, indent=1)
    )
    lines = [
        machine_line(),
        "",
        f"Uplink at a steady trickle, {args.seconds:g} s a row; before = {args.before}",
        "",
        "| rate/s | uplink | streams | batches | rec/batch | agent CPU s/1000 | cloud CPU s/1000 | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['rate']:g} | {r['mode']} | {r['streams']} | {r['batches']} | {r['records_per_batch']:.1f} | "
            f"{r['agent_cpu_s_per_1000']:.2f} | {r['cloud_cpu_s_per_1000']:.2f} | {r['lat_p50_ms']:.0f} | "
            f"{r['lat_p99_ms']:.0f} |"
        )
    lines += [
        "",
        "| rate/s | streams after/before | agent CPU | cloud CPU | records per batch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for q in ratios:
        lines.append(
            f"| {q['rate']:g} | {q['streams']:.3f} | {q['agent_cpu']:.2f} | {q['cloud_cpu']:.2f} | "
            f"{q['records_per_batch']:.1f} |"
        )
    if crowd:
        lines += [
            "",
            f"Agents of one tenant at {args.many_rate:g} records/s each, {args.many_seconds:g} s, one process "
            "(service in-process):",
            "",
            "| agents | uplink | acked | p50 ms | p99 ms | max ms | refusals | reconnects |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in crowd:
            lines.append(
                f"| {c['agents']} | {c['uplink']} | {c['acked']} | {c['lat_p50_ms']:.0f} | {c['lat_p99_ms']:.0f} | "
                f"{c['lat_max_ms']:.0f} | {c['refusals']} | {c['reconnects']} |"
            )
    (OUT / "uplink_batching.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
