"""A noisy or hostile tenant against the others: tenant B's report round trips while tenant A loads the service.

One fleet service (``FleetServer``, SQLite store, default quotas) in its own process; tenant A's load in a
second process; tenant B's agent in this one, measuring two round trips back to back, each every 10 ms:

- ``Heartbeat``: a unary state report (the service writes it to the store before it answers);
- ``Connect``: a state report on the agent's stream and its acknowledgement (the service's event loop only).

Each scenario runs on a fresh server: B alone (the baseline), then B while A does the scenario's load, both
``--seconds`` long, ``--rounds`` times; the table gives medians over the rounds and the ratio of each loaded
percentile to its own round's baseline. Scenarios (A's load):

- ``download``: 4 agents, each 4 concurrent downloads of a 64 MB package (its per-agent stream quota), looping;
- ``download_slow``: the same from a package file that is slow to read (a FIFO the server reads at 4 MB/s:
  a slow or network disk);
- ``records``: 4 agents pushing batches of 1,000 small records back to back (within the default quotas);
- ``samples``: 4 agents pushing batches of 64 samples of 64 KB each (within the default quotas);
- ``bad_cert``: 16 clients connecting in a loop with a certificate of another CA (refused in the handshake);
- ``over_quota``: 8 agents of A, whose tenant quota admits 1, calling Heartbeat in a loop (refused);
- ``unknown_digest``: 8 agents asking in a loop for a package digest not deployed to them (refused);
- ``oversized``: 4 agents pushing a 20 MB batch in a loop (over the 16 MB message limit: refused).

    .venv/bin/python -m bench.tenant_neighbour_bench [--seconds 4] [--rounds 3] [--scenarios download records]

Writes ``bench/out/tenant_neighbour_bench.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

A_AGENTS = [f"a{i}" for i in range(8)]
# B's probes: each agent reports every PROBE_PERIOD_S (under its 20 reports/s quota), the agents out of phase
B_AGENTS = [f"b{i}" for i in range(4)]
PROBE_PERIOD_S = 0.08
SCENARIOS = [
    "download",
    "download_slow",
    "records",
    "samples",
    "bad_cert",
    "over_quota",
    "unknown_digest",
    "oversized",
]
PACKAGE_BYTES = 64 * 1024 * 1024
SLOW_RATE = 4 * 1024 * 1024  # bytes/s a slow disk gives the server


def setup(tmp: Path) -> dict:
    from cloud_trainer.pki import ROLE_AGENT, init_ca, init_tenant, issue
    from cloud_trainer.registry import Registry
    from tests.support.models import make_package

    pki = tmp / "pki"
    init_ca(pki)
    issue(pki, "fleet-service", "server", pki / "server", ["127.0.0.1", "localhost"])
    for t in ("acme", "beta"):
        init_tenant(pki, t)
    for a in A_AGENTS:
        issue(pki, a, ROLE_AGENT, pki / "tenants" / "acme" / "agents" / a, tenant="acme")
    for b in B_AGENTS:
        issue(pki, b, ROLE_AGENT, pki / "tenants" / "beta" / "agents" / b, tenant="beta")
    rogue = tmp / "rogue"  # a CA the service does not trust
    init_ca(rogue)
    issue(rogue, "a0", ROLE_AGENT, rogue / "agents" / "a0", tenant="acme")
    reg = Registry(tmp / "registry")
    entry = reg.for_tenant("acme").publish(
        make_package(tmp / "pk", kind="signal", version="1.0.0"), [], {}, None, None
    )
    path = reg.for_tenant("acme").package_path(entry)
    with open(path, "ab") as f:  # the bytes the service streams (agents here do not verify them)
        f.truncate(PACKAGE_BYTES)
    return {"tmp": str(tmp), "digest": entry["digest"], "path": str(path)}


# ---- the server process ---------------------------------------------------------------------------------
async def serve(tmp: Path, port: int, scenario: str, digest: str) -> None:
    try:  # what `cloud-trainer serve` does before grpc starts (absent from trees before 15de2b5)
        from cloud_trainer.fleet.server import quiet_grpc_log

        quiet_grpc_log()
    except ImportError:
        pass
    from cloud_trainer.fleet.service import FleetServer

    pki = tmp / "pki"
    data = tmp / f"cloud-{scenario}-{time.time_ns()}"
    srv = FleetServer(
        data, port, pki / "ca.pem", pki / "server.pem", pki / "server.key", registry=tmp / "registry"
    )
    if scenario == "over_quota":
        srv.store.set_quota("acme", max_agents=1)
        srv.store.admit_agent("a7", tenant="acme")
    with srv.control.lock:
        for a in A_AGENTS:
            srv.control._set_desired(
                a, "health", "machine-health", "1.0.0", digest, PACKAGE_BYTES, "d1", "acme"
            )
    await srv.start()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
    await srv.stop()


def slow_feeder(fifo: Path, stop: threading.Event) -> None:
    """Write a package into a FIFO at ``SLOW_RATE`` (a slow disk), again for every reader."""
    block = b"\0" * (256 * 1024)
    while not stop.is_set():
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # no reader yet
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        try:
            sent = 0
            while sent < PACKAGE_BYTES and not stop.is_set():
                os.write(fd, block)
                sent += len(block)
                time.sleep(len(block) / SLOW_RATE)
        except OSError:
            pass
        finally:
            os.close(fd)


# ---- tenant A's load (its own process) ------------------------------------------------------------------
async def load(tmp: Path, port: int, scenario: str, digest: str, seconds: float) -> dict:
    import grpc

    from cloud_trainer.fleet.service import channel_credentials
    from protocols.gen import fleet_pb2 as pb
    from protocols.gen import fleet_pb2_grpc as rpc

    pki = tmp / "pki"
    end = time.monotonic() + seconds
    counts: dict[str, int] = {}

    def count(k: str, n: int = 1) -> None:
        counts[k] = counts.get(k, 0) + n

    def creds(agent: str, root: Path = pki):
        base = root / "tenants" / "acme" / "agents" / agent if root == pki else root / "agents" / agent
        return channel_credentials(pki / "ca.pem", base.with_suffix(".pem"), base.with_suffix(".key"))

    def channel(agent: str):
        return grpc.aio.secure_channel(
            f"127.0.0.1:{port}", creds(agent), options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )

    async def download(stub) -> None:
        while time.monotonic() < end:
            try:
                async for c in stub.DownloadPackage(
                    pb.DownloadRequest(digest=digest), timeout=end - time.monotonic()
                ):
                    count("download_bytes", len(c.data))
                count("downloads")
            except grpc.aio.AioRpcError as exc:
                count(exc.code().name)

    async def push(stub, agent: str, make) -> None:
        seq = 1
        while time.monotonic() < end:
            batch, seq = make(seq)
            try:
                async for _ack in stub.PushRecords(iter([batch]), timeout=30):
                    count("batches")
            except grpc.aio.AioRpcError as exc:
                count(exc.code().name)
                await asyncio.sleep(0.01)

    def records(seq: int):
        payload = json.dumps({"verdict": "OK", "score": 0.12, "pipeline": "line1"}).encode()
        return pb.RecordBatch(
            records=[
                pb.Record(seq=seq + i, kind="result", t=time.time(), payload=payload) for i in range(1000)
            ]
        ), seq + 1000

    def samples(seq: int):
        import hashlib

        out = []
        for i in range(64):
            data = os.urandom(64 * 1024)
            out.append(
                pb.Record(
                    seq=seq + i,
                    kind="sample",
                    t=time.time(),
                    payload=b'{"model": "m", "reason": "ng"}',
                    sample=data,
                    sample_sha256=hashlib.sha256(data).hexdigest(),
                    sample_ext=".jpg",
                )
            )
        return pb.RecordBatch(records=out), seq + 64

    def oversized(seq: int):
        return pb.RecordBatch(
            records=[pb.Record(seq=seq, kind="result", t=time.time(), payload=b"x" * (20 * 1024 * 1024))]
        ), seq + 1

    chans = []
    tasks = []
    if scenario in ("download", "download_slow"):
        for a in A_AGENTS[:4]:
            chans.append(ch := channel(a))
            tasks += [download(rpc.FleetStub(ch)) for _ in range(4)]
    elif scenario in ("records", "samples", "oversized"):
        make = {"records": records, "samples": samples, "oversized": oversized}[scenario]
        for a in A_AGENTS[:4]:
            chans.append(ch := channel(a))
            tasks.append(push(rpc.FleetStub(ch), a, make))
    elif scenario == "bad_cert":

        async def rogue() -> None:
            while time.monotonic() < end:
                async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds("a0", tmp / "rogue")) as ch:
                    try:
                        await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(), timeout=2)
                    except grpc.aio.AioRpcError as exc:
                        count(exc.code().name)

        tasks = [rogue() for _ in range(16)]
    elif scenario == "over_quota":

        async def refused(stub) -> None:
            while time.monotonic() < end:
                try:
                    await stub.Heartbeat(pb.HeartbeatRequest(), timeout=10)
                    count("OK")
                except grpc.aio.AioRpcError as exc:
                    count(exc.code().name)

        for a in A_AGENTS[:7]:
            chans.append(ch := channel(a))
            tasks += [refused(rpc.FleetStub(ch)) for _ in range(2)]
    elif scenario == "unknown_digest":

        async def unknown(stub) -> None:
            while time.monotonic() < end:
                try:
                    async for _ in stub.DownloadPackage(pb.DownloadRequest(digest="f" * 64), timeout=10):
                        pass
                except grpc.aio.AioRpcError as exc:
                    count(exc.code().name)

        for a in A_AGENTS:
            chans.append(ch := channel(a))
            tasks.append(unknown(rpc.FleetStub(ch)))
    await asyncio.gather(*tasks)
    for ch in chans:
        await ch.close()
    return counts


# ---- tenant B's probe (this process) --------------------------------------------------------------------
async def probe(tmp: Path, port: int, seconds: float) -> dict:
    """B's agents: ``b0``, ``b1`` send unary heartbeats, ``b2``, ``b3`` reports on their Connect streams, each
    every ``PROBE_PERIOD_S`` (an agent's quota is 20 reports a second), out of phase."""
    import grpc

    from cloud_trainer.fleet.service import channel_credentials
    from protocols.gen import fleet_pb2 as pb
    from protocols.gen import fleet_pb2_grpc as rpc

    pki = tmp / "pki"
    hb: list[float] = []
    acks: list[float] = []
    errors: dict[str, int] = {}
    end = time.monotonic() + seconds

    def channel(agent: str):
        base = pki / "tenants" / "beta" / "agents" / agent
        creds = channel_credentials(pki / "ca.pem", base.with_suffix(".pem"), base.with_suffix(".key"))
        return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)

    async def heartbeats(agent: str, phase: float) -> None:
        async with channel(agent) as ch:
            stub = rpc.FleetStub(ch)
            await stub.Heartbeat(pb.HeartbeatRequest(labels={"site": "b"}), timeout=30)
            await asyncio.sleep(phase)
            while time.monotonic() < end:
                t = time.perf_counter()
                try:
                    await stub.Heartbeat(pb.HeartbeatRequest(labels={"site": "b"}), timeout=30)
                    hb.append(time.perf_counter() - t)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                await asyncio.sleep(max(0.0, PROBE_PERIOD_S - (time.perf_counter() - t)))

    async def stream(agent: str, phase: float) -> None:
        async with channel(agent) as ch:
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
                        acks.append(time.perf_counter() - sent.pop(msg.acked))
                        got.set()

            rt = asyncio.create_task(reader())
            await asyncio.sleep(0.3 + phase)
            rid = 0
            while time.monotonic() < end:
                rid += 1
                got.clear()
                t = sent[rid] = time.perf_counter()
                q.put_nowait(pb.AgentMessage(report=pb.HeartbeatRequest(labels={"site": "b"}), report_id=rid))
                try:
                    async with asyncio.timeout(30):
                        await got.wait()
                except TimeoutError:
                    errors["ack_timeout"] = errors.get("ack_timeout", 0) + 1
                    break
                await asyncio.sleep(max(0.0, PROBE_PERIOD_S - (time.perf_counter() - t)))
            q.put_nowait(None)
            call.cancel()
            rt.cancel()

    half = PROBE_PERIOD_S / 2
    await asyncio.gather(heartbeats("b0", 0.0), heartbeats("b1", half), stream("b2", 0.0), stream("b3", half))
    return {"heartbeat": hb, "ack": acks, "errors": errors}


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] * 1000


def run_scenario(info: dict, scenario: str, seconds: float, rounds: int) -> dict:
    from tests.support.peers import free_port

    tmp = Path(info["tmp"])
    digest = info["digest"]
    pkg = Path(info["path"])
    stop_feed = threading.Event()
    saved = None
    if scenario == "download_slow":  # the package file becomes a FIFO fed at SLOW_RATE
        saved = pkg.with_suffix(".bytes")
        os.replace(pkg, saved)
        os.mkfifo(pkg)
        threading.Thread(target=slow_feeder, args=(pkg, stop_feed), daemon=True).start()
    port = free_port()
    server_log = tmp / f"server-{scenario}.log"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.tenant_neighbour_bench",
            "--serve",
            str(tmp),
            str(port),
            scenario,
            digest,
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=server_log.open("w"),
        text=True,
    )
    out: dict = {"scenario": scenario, "rounds": []}
    try:
        assert server.stdout is not None and "ready" in server.stdout.readline()
        for _ in range(rounds):
            base = asyncio.run(probe(tmp, port, seconds))
            loader = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.tenant_neighbour_bench",
                    "--load",
                    str(tmp),
                    str(port),
                    scenario,
                    digest,
                    str(seconds + 1.0),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            time.sleep(1.0)  # A's load under way
            loaded = asyncio.run(probe(tmp, port, seconds))
            a_out, _ = loader.communicate(timeout=120)
            out["rounds"].append(
                {
                    "baseline": {k: summary(v) for k, v in base.items() if k != "errors"},
                    "loaded": {k: summary(v) for k, v in loaded.items() if k != "errors"},
                    "b_errors": loaded["errors"],
                    "a_counts": json.loads(a_out.strip().splitlines()[-1]) if a_out.strip() else {},
                }
            )
        return out
    finally:
        stop_feed.set()
        out["server_log_lines"] = len(server_log.read_text(errors="replace").splitlines())
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        if saved is not None:
            pkg.unlink()
            os.replace(saved, pkg)


def summary(xs: list[float]) -> dict:
    return {"n": len(xs), "p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99), "max_ms": pct(xs, 100)}


def median(xs: list[float]) -> float:
    s = sorted(x for x in xs if x == x)
    return s[len(s) // 2] if s else float("nan")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--serve":
        asyncio.run(serve(Path(argv[1]), int(argv[2]), argv[3], argv[4]))
        return 0
    if argv and argv[0] == "--load":
        print(json.dumps(asyncio.run(load(Path(argv[1]), int(argv[2]), argv[3], argv[4], float(argv[5])))))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenarios", nargs="+", default=SCENARIOS, choices=SCENARIOS)
    ap.add_argument("--label", default="", help="a name for this run (e.g. the commit), kept in the JSON")
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as t:
        info = setup(Path(t))
        for sc in a.scenarios:
            r = run_scenario(info, sc, a.seconds, a.rounds)
            for what in ("heartbeat", "ack"):
                for p in ("p50_ms", "p99_ms"):
                    r[f"{what}_{p}_base"] = median([x["baseline"][what][p] for x in r["rounds"]])
                    r[f"{what}_{p}"] = median([x["loaded"][what][p] for x in r["rounds"]])
                    r[f"{what}_{p}_ratio"] = median(
                        [x["loaded"][what][p] / x["baseline"][what][p] for x in r["rounds"]]
                    )
            r["b_errors"] = sum(sum(x["b_errors"].values()) for x in r["rounds"])
            r["a_counts"] = r["rounds"][-1]["a_counts"]
            rows.append(r)
            print(
                sc, {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k != "rounds"}
            )
    from bench._machine import machine, machine_line

    OUT.mkdir(exist_ok=True)
    result = {
        "bench": "tenant_neighbour",
        "label": a.label,
        "machine": machine(),
        "seconds": a.seconds,
        "rows": rows,
    }
    (OUT / "tenant_neighbour_bench.json").write_text(json.dumps(result, indent=2))
    md = [
        f"Tenant B's round trips (ms; medians of {a.rounds} rounds of {a.seconds:g} s; ratio: loaded / the same "
        f"round's baseline) while tenant A loads the service. {a.label}",
        "",
        "| A's load | B heartbeat p50 | p99 (baseline) | p99 ratio | B stream ack p50 | p99 (baseline) | p99 ratio "
        "| B errors | server log lines | A's counts (last round) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['scenario']} | {r['heartbeat_p50_ms']:.1f} | {r['heartbeat_p99_ms']:.1f} "
            f"({r['heartbeat_p99_ms_base']:.1f}) | {r['heartbeat_p99_ms_ratio']:.1f}x | {r['ack_p50_ms']:.1f} | "
            f"{r['ack_p99_ms']:.1f} ({r['ack_p99_ms_base']:.1f}) | {r['ack_p99_ms_ratio']:.1f}x | {r['b_errors']} | {r.get('server_log_lines', 0)} "
            f"| {', '.join(f'{k} {v}' for k, v in sorted(r['a_counts'].items()))} |"
        )
    md += ["", machine_line()]
    (OUT / "tenant_neighbour_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
