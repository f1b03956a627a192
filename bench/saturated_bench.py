"""Saturation by the agent's own models: do a rule's trip, the heartbeat and the status page stay on time
while the cameras' inference alone wants more than the gateway's cores?

A real agent (``edge-agent run``, its own process) reads a real asyncua server (the "PLC": a temperature, a
trip output, a heartbeat node and a vibration waveform) and ``--cameras`` camera sources (drop folders the
bench writes JPEG frames into at ``--fps`` each while a phase is loaded), each with its own slot of a 224-px
MobileNetV2 INT8 package (``bench.inference_224_bench.build``), plus a maintenance pipeline on the PLC's
waveform (``--vib-hz`` windows a second). A rule on the PLC's temperature trips the PLC output (mode
on_change), as in ``bench/overload_bench.py``, and an HTTP status endpoint is polled.

The cameras' demand is stated: the bench first times the package's ``slot.infer`` on one core in this
process (10th percentile of 55 frames), and ``--load`` (default 2.0, i.e. 200 % of one core) sets ``--fps`` from it unless given.

Per phase (no camera load / saturated / after), from the server's side: the rule's trip delay (the write of
the temperature on the server to the trip seen on the server), the heartbeat's longest gap (500 ms period),
``/status``'s answer time, and from ``/status``: each pipeline's results, drops (counted, and shown) and
p50 latency, the loop lag the agent measures (``agent.loop_lag_ms``, when the agent has it) and RSS.

    nice -n 10 .venv/bin/python -m bench.saturated_bench [--cameras 3 --load 2.0 --cycles 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.overload_bench import start_agent, watch_heartbeat

OUT = Path(__file__).resolve().parent / "out"
ROOT = Path(__file__).resolve().parents[1]


def frames_jpeg(n: int = 8) -> list[bytes]:
    """Smooth 640x480 part-like frames (gradients and a disc), JPEG q=90: what a camera's software writes."""
    import cv2

    out = []
    yy, xx = np.mgrid[0:480, 0:640]
    for i in range(n):
        img = np.zeros((480, 640, 3), np.uint8)
        img[..., 0] = (xx * 255 // 640 + i * 9) % 256
        img[..., 1] = (yy * 255 // 480 + i * 17) % 256
        img[..., 2] = 128
        cv2.circle(img, (320 + 8 * i, 240), 90, (30, 200 - 10 * i, 60), -1)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        out.append(buf.tobytes())
    return out


def time_per_frame(pkg: Path, pub: Path, tmp: Path, n: int = 60) -> float:
    """Seconds of ``slot.infer`` of one 640x480 frame (pre- and postprocessing included), one thread."""
    import cv2

    from devices.base import Frame
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot

    slot = ModelSlot("probe", ModelConfig(package=str(pkg)), tmp / "probe", [str(pub)])  # as the agent picks
    asyncio.run(slot.start())
    img = cv2.imdecode(np.frombuffer(frames_jpeg(1)[0], np.uint8), cv2.IMREAD_COLOR)
    ts = []
    for i in range(n):
        t = time.perf_counter()
        slot.infer(Frame("c", i, time.time(), img), 1.0)
        ts.append(time.perf_counter() - t)
    asyncio.run(slot.stop())
    # the 10th percentile: the frame's cost when it gets a core (the median moves with whatever else runs here)
    return float(np.percentile(ts[5:], 10))


class Feeder(threading.Thread):
    """Writes one JPEG a camera every 1/fps s into each drop folder (a dot-file renamed: never half-read)."""

    def __init__(self, folders: list[Path], fps: float, frames: list[bytes]) -> None:
        super().__init__(daemon=True)
        self.folders, self.period, self.frames = folders, 1.0 / fps, frames
        self.on = threading.Event()
        self.sent = 0
        self._seq = 0

    def run(self) -> None:
        nxt = time.monotonic()
        while True:
            self.on.wait()
            nxt = max(nxt + self.period, time.monotonic() - self.period)
            for f in self.folders:
                data = self.frames[self._seq % len(self.frames)]
                tmp = f / f".{self._seq}.jpg"
                tmp.write_bytes(data)
                os.rename(tmp, f / f"{self._seq:08d}.jpg")
            self._seq += 1
            self.sent += 1
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of ``pid``'s threads: its main thread (the event loop) under ``"loop"``, the
    others summed by their kernel name (Python's threads are all ``python``), and the whole machine's busy
    seconds under ``"machine"``."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            raw = (t / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        f = raw[raw.rindex(")") + 2 :].split()
        # the main thread (its id is the process id) is the event loop's: rules, writes, the fan-out, results
        name = "loop" if t.name == str(pid) else comm.rstrip("0123456789")
        out[name] = out.get(name, 0.0) + (int(f[11]) + int(f[12])) / tick
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    out["machine"] = (sum(map(int, cpu)) - int(cpu[3]) - int(cpu[4])) / tick
    return out


def runnable(pid: int) -> tuple[int, int]:
    """(threads of ``pid`` running or waiting for a core now, all its threads)."""
    r = n = 0
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            raw = (t / "stat").read_text()
        except OSError:
            continue
        n += 1
        r += raw[raw.rindex(")") + 2] == "R"
    return r, n


def get_status(port: int) -> tuple[dict, float]:
    t = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=30) as r:
        body = json.loads(r.read())
    return body, time.monotonic() - t


async def run(a) -> dict:
    from asyncua import ua

    from bench.inference_224_bench import build
    from tests.support.models import make_package
    from tests.support.peers import Mosquitto, free_port, opcua_server

    tmp = Path(tempfile.mkdtemp(prefix="saturated-"))
    pkg, pub = build(tmp / "vision", a.width)
    sig = make_package(tmp / "signal", kind="signal", key=tmp / "vision" / "keys" / "signing.key")
    per_frame = await asyncio.to_thread(time_per_frame, pkg, pub, tmp)  # its own loop
    fps = a.fps or round(a.load / (a.cameras * per_frame), 1)
    demand = a.cameras * fps * per_frame
    print(
        f"slot.infer {per_frame * 1000:.1f} ms a frame; {a.cameras} cameras x {fps} fps = {demand:.0%} of a core"
    )
    broker = Mosquitto(tmp / "mq").start()
    port = free_port()
    http_port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    temp = await obj.add_variable(ua.NodeId("Line.Temp", idx), "Temp", 20.0)
    trip = await obj.add_variable(ua.NodeId("Line.Trip", idx), "Trip", False)
    alive = await obj.add_variable(ua.NodeId("Line.Alive", idx), "Alive", False)
    vib = await obj.add_variable(
        ua.NodeId("Line.Vib", idx), "Vib", ua.Variant([0.0] * 2048, ua.VariantType.Double)
    )
    for v in (temp, trip, alive, vib):
        await v.set_writable()
    await srv.start()
    folders = []
    for i in range(a.cameras):
        (tmp / f"cam{i}").mkdir()
        folders.append(tmp / f"cam{i}")
    cfg = {
        "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp / "data")},
        "trusted_keys": [str(pub)],
        "http": {"enabled": True, "port": http_port},
        "outbox": {},
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                "publishing_interval_ms": 20,
                "nodes": [
                    {"node_id": f"ns={idx};s=Line.Temp", "tag": "Temp"},
                    {"node_id": f"ns={idx};s=Line.Vib", "tag": "vibration"},
                ],
                "heartbeat": {"node_id": f"ns={idx};s=Line.Alive", "period_ms": 500},
            },
            "broker": {"type": "mqtt", "port": broker.port},
            **{
                f"cam{i}": {
                    "type": "camera",
                    "url": str(f),
                    "watch": True,
                    "settle_ms": 0,
                    "keep_files": 50,
                }
                for i, f in enumerate(folders)
            },
        },
        "models": {
            **{f"vision{i}": {"package": str(pkg)} for i in range(a.cameras)},
            "vib": {"package": str(sig)},
        },
        "pipelines": [
            *({"name": f"inspect{i}", "source": f"cam{i}", "model": f"vision{i}"} for i in range(a.cameras)),
            {
                "name": "bearing",
                "source": "plc",
                "model": "vib",
                "window": {"waveform": "vibration", "sample_rate_hz": 10000.0},
            },
        ],
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
            },
        },
    }
    agent = start_agent(cfg, tmp)
    beats: list[float] = []
    rng = np.random.default_rng(0)

    async def vibrate() -> None:  # the maintenance input: one 2048-sample block at --vib-hz
        t = np.arange(2048) / 10000.0
        while True:
            x = np.sin(2 * np.pi * 50 * t) + 0.1 * rng.standard_normal(2048)
            await vib.write_value(ua.Variant(x.tolist(), ua.VariantType.Double))
            await asyncio.sleep(1.0 / a.vib_hz)

    watcher = asyncio.create_task(watch_heartbeat(alive, beats))
    t_start = time.monotonic()
    while len(beats) < 3:
        if agent.poll() is not None or time.monotonic() - t_start > 180:
            raise RuntimeError("agent did not start: " + (tmp / "agent.log").read_text()[-3000:])
        await asyncio.sleep(0.1)
    vibrator = asyncio.create_task(vibrate())
    feeder = Feeder(folders, fps, frames_jpeg())
    feeder.start()

    async def until_trip(state: bool, t0: float) -> float | None:
        while await trip.read_value() != state:
            if time.monotonic() - t0 > a.give_up_s:
                return None
            await asyncio.sleep(0.005)
        return time.monotonic() - t0

    async def phase(label: str) -> dict:
        b0 = len(beats)
        c0, w0 = thread_cpu(agent.pid), time.monotonic()
        s0, _ = await asyncio.to_thread(get_status, http_port)
        sent0 = feeder.sent
        answers: list[float] = []
        lags: list[float] = []
        stop = threading.Event()

        ready: list[tuple[int, int]] = []

        def sample() -> None:  # how many of the agent's threads want a core at once (2 cores: > 2 wait)
            while not stop.is_set():
                ready.append(runnable(agent.pid))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        def poll() -> None:
            while not stop.is_set():
                st, dt = get_status(http_port)
                answers.append(dt)
                lag = st["agent"].get("loop_lag_ms")
                if lag is not None:
                    lags.append(lag.get("last") or 0.0)
                stop.wait(1.0)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        delays, lost = [], 0
        for _ in range(a.cycles):
            for hot in (True, False):
                t0 = time.monotonic()
                await temp.write_value(60.0 if hot else 20.0)
                d = await until_trip(hot, t0)
                if d is None:
                    lost += 1
                    await temp.write_value(20.0)
                    await until_trip(False, time.monotonic())
                else:
                    delays.append(d)
                await asyncio.sleep(0.3)
        stop.set()
        await asyncio.to_thread(poller.join)
        await asyncio.to_thread(sampler.join)
        s1, _ = await asyncio.to_thread(get_status, http_port)
        c1, wall = thread_cpu(agent.pid), time.monotonic() - w0
        cpu = {k: round((v - c0.get(k, 0.0)) / wall, 2) for k, v in c1.items()}
        cpu = {k: v for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if v >= 0.01}
        gaps = [y - x for x, y in zip(beats[b0:], beats[b0 + 1 :], strict=False)]
        p0 = {p["pipeline"]: p for p in s0["pipelines"]}
        pipes = {}
        for p in s1["pipelines"]:
            q = p0[p["pipeline"]]
            pipes[p["pipeline"]] = {
                "items": p["items"] - q["items"],
                "results": p["results"] - q["results"],
                "dropped": p["dropped"] - q["dropped"],
                "p50_ms": round(p["latency_ms"]["p50"] or 0, 1),
            }
        srcs = {
            n: {
                "received": s["received"] - s0["sources"][n]["received"],
                "dropped": s["dropped"] - s0["sources"][n]["dropped"],
            }
            for n, s in s1["sources"].items()
            if n.startswith("cam")
        }
        out = {
            "phase": label,
            "frames_written_per_camera": feeder.sent - sent0,
            "trip_median_ms": round(statistics.median(delays) * 1000, 1) if delays else None,
            "trip_max_ms": round(max(delays) * 1000, 1) if delays else None,
            "trips": len(delays),
            "lost": lost,
            "heartbeat_max_gap_s": round(max(gaps), 3) if gaps else None,
            "status_median_ms": round(statistics.median(answers) * 1000, 1) if answers else None,
            "status_max_ms": round(max(answers) * 1000, 1) if answers else None,
            "loop_lag_max_ms": round(max(lags), 1) if lags else None,
            "rss_mb": s1["agent"]["rss_mb"],
            "runnable_threads_mean": round(statistics.mean(r for r, _ in ready), 2) if ready else None,
            "threads": max((n for _, n in ready), default=None),
            "cores_used": {"agent": round(sum(v for k, v in cpu.items() if k != "machine"), 2), **cpu},
            "pipelines": pipes,
            "forms": sorted({(m.get("selection") or {}).get("summary", "")[:80] for m in s1["models"]}),
            "camera_sources": srcs,
        }
        print(json.dumps(out), flush=True)
        return out

    phases = [await phase("no camera load")]
    feeder.on.set()
    await asyncio.sleep(3.0)
    phases.append(await phase(f"saturated: {a.cameras} cameras x {fps} fps ({demand:.0%} of a core)"))
    feeder.on.clear()
    await asyncio.sleep(3.0)
    phases.append(await phase("after (+3 s)"))
    agent.terminate()
    agent.wait(60)
    watcher.cancel()
    vibrator.cancel()
    await srv.stop()
    broker.stop()
    return {
        "per_frame_ms": round(per_frame * 1000, 2),
        "fps": fps,
        "cameras": a.cameras,
        "demand_cores": round(demand, 2),
        "phases": phases,
        "agent_log_tail": (tmp / "agent.log").read_text()[-2000:],
    }


def hot_path(n: int = 200_000, blocks: int = 5) -> dict:
    """Per item: what the fix adds to a pipeline's hop (the pool thread's start time returned with the result,
    ``Pipeline._started_infer``) against the call alone; alternating blocks, medians, ns."""

    def infer(item):
        return item

    def started(item):
        return time.perf_counter(), infer(item)

    res: dict[str, list[float]] = {"started": [], "bare": []}
    for _ in range(blocks):
        for k, f in (("started", started), ("bare", infer)):
            t = time.perf_counter()
            for i in range(n):
                f(i)
            res[k].append((time.perf_counter() - t) / n * 1e9)
    med = {k: statistics.median(v) for k, v in res.items()}
    return {
        "started_infer_ns": round(med["started"], 1),
        "bare_call_ns": round(med["bare"], 1),
        "added_ns_per_item": round(med["started"] - med["bare"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.saturated_bench")
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--load", type=float, default=2.0, help="the cameras' inference demand, in cores")
    ap.add_argument(
        "--fps", type=float, default=None, help="frames a second per camera (default: from --load)"
    )
    ap.add_argument("--width", type=float, default=1.0, help="MobileNetV2 width (1.0: the standard network)")
    ap.add_argument("--vib-hz", type=float, default=5.0, help="vibration blocks (one window each) a second")
    ap.add_argument("--cycles", type=int, default=6, help="trips (and resets) of the rule per phase")
    ap.add_argument("--give-up-s", type=float, default=10.0)
    ap.add_argument("--label", default="", help="a name for this run in the output files")
    a = ap.parse_args(argv)
    from bench._machine import machine, machine_line
    from model_packager.cpu import cpu_flags

    result = {
        "name": "saturated",
        "cpu_flags": " ".join(cpu_flags()),
        "machine": machine(),
        "argv": sys.argv[1:],
        **asyncio.run(run(a)),
        "hot_path": hot_path(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = f"-{a.label}" if a.label else ""
    (OUT / f"saturated_bench{suffix}.json").write_text(json.dumps(result, indent=2))
    base = result["phases"][0]
    rows = []
    for p in result["phases"]:
        ratio = (
            f"{p['trip_median_ms'] / base['trip_median_ms']:.2f}"
            if p["trip_median_ms"] and base["trip_median_ms"]
            else "-"
        )
        pipes = "; ".join(
            f"{n} {q['results']}/{q['items']} (drop {q['dropped']}, p50 {q['p50_ms']})"
            for n, q in p["pipelines"].items()
        )
        rows.append(
            f"| {p['phase']} | {p['trip_median_ms']} | {p['trip_max_ms']} | {p['trips']}/{p['lost']} | {ratio} | "
            f"{p['heartbeat_max_gap_s']} | {p['status_median_ms']} / {p['status_max_ms']} | {p['loop_lag_max_ms']} | "
            f"{p['rss_mb']} | {pipes} |"
        )
    md = (
        f"### Saturation by the agent's own models{(' (' + a.label + ')') if a.label else ''}\n\n"
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; `nice -n 10 .venv/bin/python -m bench.saturated_bench "
        f"{' '.join(sys.argv[1:])}`; slot.infer {result['per_frame_ms']} ms a 640x480 frame (224-px MobileNetV2 "
        f"INT8, one thread); {a.cameras} cameras x {result['fps']} fps = {result['demand_cores']} cores of "
        f"inference.\n\n{machine_line()}\n\n"
        "| phase | trip median ms | trip max ms | trips/lost | median / unloaded | heartbeat max gap s (500 ms) | "
        "/status median / max ms | loop lag max ms | RSS MB | per pipeline: results/items (drops, p50 ms) |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
        + "\n".join(rows)
        + f"\n\nHot path: a pipeline's hop returns its pool thread's start time with the result: "
        f"{result['hot_path']['added_ns_per_item']} ns an item ({result['hot_path']['started_infer_ns']} against "
        f"{result['hot_path']['bare_call_ns']} ns for the call alone).\n"
    )
    (OUT / f"saturated_bench{suffix}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
