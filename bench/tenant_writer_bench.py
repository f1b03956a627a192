"""Another tenant's small calls while one tenant's agents push large batches: the store's one writer.

A real `cloud-trainer serve` (SQLite, default quotas) on 127.0.0.1. Tenant ``noisy``: ``--agents`` agents, each
with ``--streams`` PushRecords streams sending ``--mb``-MB batches (1-MB records) back to back, one batch at a
time per stream as the uplink does, backing off on an error as the uplink does (0.5 s doubling to 30 s); they run
in a process of their own. Tenant ``quiet``, in this process, measures three calls back to back:

- ``heartbeat``: a unary ``Heartbeat`` every 100 ms (the service writes it to the store before it answers);
- ``small push``: a one-record ``PushRecords`` batch every 200 ms (written and synced before its ack);
- ``stream ack``: a report on the agent's ``Connect`` stream every 100 ms and its acknowledgement (the event loop
  only: what the rest of the process costs).

Each row: the quiet tenant alone for ``--baseline-s`` (the baseline), then beside the noisy load for
``--seconds``; p50 / p99 / max in ms, and the noisy tenant's batches stored.

    .venv/bin/python -m bench.tenant_writer_bench [--rows 16x2 32x4] [--seconds 20] [--mb 12] [--label TEXT]

Writes ``bench/out/tenant_writer_bench.{json,md}``. To compare with another tree, copy this file into that tree's
``bench/`` and run it there (the server is started from the tree the file is in).
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

QUIET = ("q0", "q1", "q2")  # heartbeat, small push, stream ack


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(1000 * s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))], 1)


def summary(xs: list[float]) -> dict:
    return {"n": len(xs), "p50_ms": _pct(xs, 50), "p99_ms": _pct(xs, 99), "max_ms": _pct(xs, 100)}


def _channel(pki: Path, port: int, agent: str):
    import grpc

    from cloud_trainer.fleet.service import channel_credentials

    base = pki / "agents" / agent
    creds = channel_credentials(pki / "ca.pem", base.with_suffix(".pem"), base.with_suffix(".key"))
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}", creds, options=[("grpc.max_send_message_length", 64 << 20)]
    )


# ---- the noisy tenant (its own process) -----------------------------------------------------------------
async def noisy(pki: Path, port: int, agents: int, streams: int, mb: int, seconds: float) -> dict:
    import grpc

    from protocols.gen import fleet_pb2 as pb

    payload = json.dumps({"v": "x" * ((1 << 20) - 16)}).encode()
    counts: dict[str, int] = {"batches": 0}
    end = time.monotonic() + seconds

    async def pusher(ch, k: int) -> None:
        push = ch.stream_stream(
            "/edge.fleet.v1.Fleet/PushRecords",
            request_serializer=None,
            response_deserializer=pb.Ack.FromString,
        )
        seq, delay = 1 + k * 10_000_000, 0.5
        while time.monotonic() < end:
            call = push()
            try:
                while time.monotonic() < end:
                    batch = pb.RecordBatch(
                        records=[
                            pb.Record(seq=seq + i, kind="telemetry", t=time.time(), epoch=1, payload=payload)
                            for i in range(mb)
                        ]
                    )
                    seq += mb  # new records each time, as an outbox draining
                    await call.write(batch.SerializeToString())
                    await call.read()
                    counts["batches"] += 1
                    delay = 0.5
                await call.done_writing()
            except grpc.aio.AioRpcError as exc:
                counts[exc.code().name] = counts.get(exc.code().name, 0) + 1
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(30.0, delay * 2)
            finally:
                call.cancel()

    chans = [_channel(pki, port, f"n{i}") for i in range(agents)]
    await asyncio.gather(*[pusher(ch, i * streams + k) for i, ch in enumerate(chans) for k in range(streams)])
    for ch in chans:
        await ch.close()
    return counts


# ---- the quiet tenant (this process) --------------------------------------------------------------------
async def quiet(pki: Path, port: int, seconds: float, first_seq: int) -> dict:
    import grpc

    from protocols.gen import fleet_pb2 as pb
    from protocols.gen import fleet_pb2_grpc as rpc

    lat: dict[str, list[float]] = {"heartbeat": [], "small_push": [], "stream_ack": []}
    errors: dict[str, int] = {}
    end = time.monotonic() + seconds

    def failed(what: str, exc: grpc.aio.AioRpcError) -> None:
        k = f"{what} {exc.code().name}"
        errors[k] = errors.get(k, 0) + 1

    async def heartbeats() -> None:
        async with _channel(pki, port, "q0") as ch:
            stub = rpc.FleetStub(ch)
            while time.monotonic() < end:
                t0 = time.perf_counter()
                try:
                    await stub.Heartbeat(pb.HeartbeatRequest(labels={"site": "q"}), timeout=30)
                    lat["heartbeat"].append(time.perf_counter() - t0)
                except grpc.aio.AioRpcError as exc:
                    failed("heartbeat", exc)
                await asyncio.sleep(0.1)

    async def small_pushes() -> None:
        async with _channel(pki, port, "q1") as ch:
            stub, seq = rpc.FleetStub(ch), first_seq
            while time.monotonic() < end:
                batch = pb.RecordBatch(
                    records=[
                        pb.Record(seq=seq, kind="result", t=time.time(), epoch=1, payload=b'{"v": "OK"}')
                    ]
                )
                t0 = time.perf_counter()
                try:
                    async for _ in stub.PushRecords(iter([batch]), timeout=30):
                        pass
                    lat["small_push"].append(time.perf_counter() - t0)
                    seq += 1
                except grpc.aio.AioRpcError as exc:
                    failed("small push", exc)
                await asyncio.sleep(0.2)

    async def stream() -> None:
        async with _channel(pki, port, "q2") as ch:
            q: asyncio.Queue = asyncio.Queue()

            async def requests():
                while (m := await q.get()) is not None:
                    yield m

            call = rpc.FleetStub(ch).Connect(requests())
            sent: dict[int, float] = {}
            got = asyncio.Event()

            async def reader() -> None:
                async for msg in call:
                    if msg.acked and msg.acked in sent:
                        lat["stream_ack"].append(time.perf_counter() - sent.pop(msg.acked))
                        got.set()

            task, rid = asyncio.create_task(reader()), 0
            while time.monotonic() < end:
                rid += 1
                got.clear()
                sent[rid] = time.perf_counter()
                q.put_nowait(pb.AgentMessage(report=pb.HeartbeatRequest(labels={"site": "q"}), report_id=rid))
                try:
                    async with asyncio.timeout(30):
                        await got.wait()
                except TimeoutError:
                    errors["stream ack timeout"] = errors.get("stream ack timeout", 0) + 1
                    break
                await asyncio.sleep(0.1)
            q.put_nowait(None)
            call.cancel()
            task.cancel()

    await asyncio.gather(heartbeats(), small_pushes(), stream())
    return {**{k: summary(v) for k, v in lat.items()}, "errors": errors}


def setup(tmp: Path, agents: int) -> Path:
    from cloud_trainer.pki import ROLE_AGENT, init_ca, issue

    pki = tmp / "pki"
    init_ca(pki)
    issue(pki, "fleet-service", "server", pki / "server", ["127.0.0.1", "localhost"])
    for i in range(agents):
        issue(pki, f"n{i}", ROLE_AGENT, pki / "agents" / f"n{i}", tenant="noisy")
    for q in QUIET:
        issue(pki, q, ROLE_AGENT, pki / "agents" / q, tenant="quiet")
    return pki


def run_row(agents: int, streams: int, mb: int, seconds: float, baseline_s: float) -> dict:
    from tests.support.fleet import ServerProcess

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        pki = setup(tmp, agents)
        srv = ServerProcess(tmp / "cloud", pki, stderr=(tmp / "server.log").open("w")).start()
        try:
            load = open("/proc/loadavg").read().split()[0]
            base = asyncio.run(quiet(pki, srv.port, baseline_s, 1))
            loader = subprocess.Popen(
                [sys.executable, "-m", "bench.tenant_writer_bench", "--noisy", str(pki), str(srv.port)]
                + [str(agents), str(streams), str(mb), str(seconds + 1.5)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.5)  # the noisy tenant's batches under way
            loaded = asyncio.run(quiet(pki, srv.port, seconds, 1_000_000))
            out, _ = loader.communicate(timeout=180)
        finally:
            srv.stop()
        return {
            "agents": agents,
            "streams": streams,
            "mb": mb,
            "load_avg": float(load),
            "baseline": base,
            "loaded": loaded,
            "noisy": json.loads(out.strip().splitlines()[-1]),
        }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--noisy":
        pki, port, agents, streams, mb, seconds = argv[1:7]
        counts = asyncio.run(noisy(Path(pki), int(port), int(agents), int(streams), int(mb), float(seconds)))
        print(json.dumps(counts))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--rows", nargs="+", default=["16x2", "32x4"], help="agents x streams of the noisy tenant"
    )
    ap.add_argument("--mb", type=int, default=12, help="MB per batch (1-MB records)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--baseline-s", type=float, default=6.0)
    ap.add_argument("--label", default="", help="a name for this run (e.g. the commit), kept in the output")
    a = ap.parse_args(argv)
    rows = []
    for spec in a.rows:
        agents, streams = (int(x) for x in spec.split("x"))
        r = run_row(agents, streams, a.mb, a.seconds, a.baseline_s)
        rows.append(r)
        print(json.dumps(r), flush=True)
    from bench._machine import cpu_model, machine, machine_line

    OUT.mkdir(exist_ok=True)
    result = {
        "bench": "tenant_writer",
        "label": a.label,
        "cpu": cpu_model(),
        "machine": machine(),
        "seconds": a.seconds,
        "rows": rows,
    }
    (OUT / "tenant_writer_bench.json").write_text(json.dumps(result, indent=2))

    def cell(s: dict) -> str:
        return f"{s['p50_ms']} / {s['p99_ms']} / {s['max_ms']}"

    md = [
        f"Tenant quiet's calls (ms: p50 / p99 / max; baseline: alone) beside tenant noisy's {a.mb}-MB batches, "
        f"{a.seconds:g} s per row. CPU: {result['cpu']}. {a.label}",
        "",
        "| noisy agents x streams (load avg) | heartbeat | baseline | small push | baseline | stream ack "
        "| baseline | noisy batches stored | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        b, lo = r["baseline"], r["loaded"]
        refused = {k: v for k, v in r["noisy"].items() if k != "batches"}
        md.append(
            f"| {r['agents']} x {r['streams']} ({r['load_avg']:g}) | {cell(lo['heartbeat'])} | "
            f"{cell(b['heartbeat'])} | {cell(lo['small_push'])} | {cell(b['small_push'])} | "
            f"{cell(lo['stream_ack'])} | {cell(b['stream_ack'])} | {r['noisy']['batches']} | "
            f"{', '.join(f'{k} {v}' for k, v in {**refused, **lo['errors']}.items()) or '-'} |"
        )
    md += ["", machine_line()]
    (OUT / "tenant_writer_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
