"""Camera ingest: frames/s through ``CameraSource`` vs a bare ``cv2.VideoCapture`` loop on the same
MJPEG stream from the camera simulator, same run, alternating; medians.

The simulator serves at a rate above what either client can take (``--fps 1000``), so each
client reads as fast as it can; the adapter adds the reader thread, the hand-over to asyncio
and the Frame object. No target fps (no skipping).

    .venv/bin/python -m bench.camera_bench [--frames 300] [--runs 3] [--size 128]

``--cpu``: the CPU the agent's camera path costs when its model cannot keep up. An ``Agent`` reads
``--cameras`` MJPEG simulators (each in a process of its own, at ``--cam-fps``, ``--size`` square parts),
one pipeline per camera on one test package (ONNX Runtime) whose inference is made to take ``--model-s``
more (a sleep: the gateway's model behind its cameras, costing no CPU here), queue ``drop_oldest``. The
agent process's CPU seconds per second over ``--seconds`` (after 2 s), the former path (every part decoded
as it arrives, ``CameraSource.decode_when_taken = False``) against the present one (a part decoded when a
pipeline takes it), alternating, ``--runs`` each, same run; medians.

    .venv/bin/python -m bench.camera_bench --cpu [--cameras 3] [--cam-fps 40] [--size 480] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import cv2

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from simulators.camera import CameraServer

OUT = Path(__file__).resolve().parent / "out"


def bare(url: str, n: int) -> float:
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    got = 0
    t = time.perf_counter()
    while got < n:
        ok, img = cap.read()
        if ok:
            got += 1
    dt = time.perf_counter() - t
    cap.release()
    return n / dt


async def adapter(url: str, n: int) -> float:
    src = CameraSource("bench", CameraSettings(url=url, queue_max_items=1000))
    await src.start()
    got = 0
    t = None
    async for _ in src.items():
        if t is None:
            t = time.perf_counter()  # from the first frame: both clients exclude connection set-up
        got += 1
        if got >= n + 1:
            break
    dt = time.perf_counter() - t
    await src.stop()
    return n / dt


async def agent_cpu(urls: list[str], pkg: Path, pub: Path, data: Path, taken: bool, a) -> dict:
    """One run of the agent on the cameras: its CPU s/s and what its cameras and pipelines counted."""
    from edge_agent.agent import Agent
    from edge_agent.config import parse_config

    agent = Agent(
        parse_config(
            {
                "agent": {"id": "bench", "site": "s", "line": "l", "data_dir": str(data)},
                "trusted_keys": [str(pub)],
                "http": {"enabled": False},
                "sources": {f"cam{i}": {"type": "camera", "url": u} for i, u in enumerate(urls)},
                "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
                "pipelines": [
                    {
                        "name": f"p{i}",
                        "source": f"cam{i}",
                        "model": "vision",
                        "queue": {"policy": "drop_oldest"},
                    }
                    for i in range(len(urls))
                ],
            }
        )
    )
    slot = agent.slots["vision"]
    infer = slot.infer

    def behind(item, *args, **kw):  # the model behind its cameras (a sleep: no CPU of its own)
        out = infer(item, *args, **kw)
        time.sleep(a.model_s)
        return out

    slot.infer = behind  # type: ignore[method-assign]
    for src in agent.sources.values():
        src.decode_when_taken = taken  # type: ignore[attr-defined]
    await agent.start()
    try:
        await asyncio.sleep(2.0)
        before = {n: (s.stats.received, s.decoded) for n, s in agent.sources.items()}  # type: ignore[attr-defined]
        results0 = sum(p.stats.results for p in agent.pipelines)
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(a.seconds)
        cpu, dt = time.process_time() - cpu0, time.perf_counter() - t0
        received = sum(s.stats.received - before[n][0] for n, s in agent.sources.items())
        decoded = sum(s.decoded - before[n][1] for n, s in agent.sources.items())  # type: ignore[attr-defined]
        results = sum(p.stats.results for p in agent.pipelines) - results0
    finally:
        await agent.stop()
    return {
        "cpu_ms_per_frame": cpu * 1000 / max(1, received),
        "cpu_s_per_s": cpu / dt,
        "received_per_s": received / dt,
        "decoded_per_s": decoded / dt,
        "results_per_s": results / dt,
    }


def serve_parts(port: int, fps: float, size: int, seed: int) -> None:
    """An MJPEG camera for ``--cpu``, in a process of its own: 8 of the simulator's generated parts,
    encoded once and sent in turn at ``fps`` to each client (the simulator makes a new part for every frame,
    which on 2 cores took the CPU the agent was measured on, and the cameras' rate with it)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from simulators.parts import PartGenerator

    gen = PartGenerator(seed, size, size, 0.2)
    parts = [
        cv2.imencode(".jpg", gen.next().image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes() for _ in range(8)
    ]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            t, k = time.perf_counter(), 0
            try:
                while True:
                    jpg = parts[k % len(parts)]
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                    self.wfile.write(head + jpg + b"\r\n")
                    k += 1
                    time.sleep(max(0.0, t + k / fps - time.perf_counter()))
            except OSError:
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    threading.Event().wait()


def cpu_main(a) -> int:
    import platform
    import subprocess
    import sys
    import tempfile

    from bench._machine import machine, machine_line
    from model_packager.cpu import cpu_flags
    from tests.support.models import make_keypair, make_package
    from tests.support.peers import free_port

    tmp = Path(tempfile.mkdtemp(prefix="camera-bench-"))
    key, pub = make_keypair(tmp / "keys")
    pkg = make_package(tmp, kind="vision", key=key)
    ports = [free_port() for _ in range(a.cameras)]
    sims = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.camera_bench",
                "--serve",
                str(p),
                "--cam-fps",
                str(a.cam_fps),
                "--size",
                str(a.size),
                "--seed",
                str(i),
            ],
            stdout=subprocess.DEVNULL,
        )
        for i, p in enumerate(ports)
    ]
    urls = [f"http://127.0.0.1:{p}/stream.mjpg" for p in ports]
    runs: dict[str, list[dict]] = {"former": [], "taken": []}
    try:
        time.sleep(2.0)  # the simulators' start
        for r in range(a.runs):
            for mode in ("former", "taken") if r % 2 == 0 else ("taken", "former"):
                runs[mode].append(
                    asyncio.run(agent_cpu(urls, pkg, pub, tmp / f"data-{r}-{mode}", mode == "taken", a))
                )
                print(mode, {k: round(v, 3) for k, v in runs[mode][-1].items()}, flush=True)
    finally:
        for s in sims:
            s.terminate()
            s.wait(10)

    def med(mode: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[mode])

    flags = " ".join(cpu_flags())
    res = {
        "bench": "camera_cpu",
        "cameras": a.cameras,
        "cam_fps": a.cam_fps,
        "size": a.size,
        "model_s": a.model_s,
        "seconds": a.seconds,
        "runs": runs,
        "cpu": platform.processor() or platform.machine(),
        "flags": flags,
        "machine": machine(),
        "former_cpu_median": med("former", "cpu_s_per_s"),
        "taken_cpu_median": med("taken", "cpu_s_per_s"),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "camera_cpu_bench.json").write_text(json.dumps(res, indent=2))
    md = [
        f"### Camera path CPU, {a.cameras} MJPEG cameras at {a.cam_fps:g} fps ({a.size}x{a.size}), model "
        f"behind them ({a.model_s * 1000:.0f} ms a frame), drop_oldest; agent process CPU s/s over "
        f"{a.seconds:g} s, medians of {a.runs} (CPU flags: {flags})",
        "",
        "| path | CPU s/s | frames received/s | decoded/s | results/s | CPU ms per frame received |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, label in (
        ("former", "every part decoded as it arrives (former)"),
        ("taken", "a part decoded when taken (now)"),
    ):
        md.append(
            f"| {label} | {med(mode, 'cpu_s_per_s'):.3f} | {med(mode, 'received_per_s'):.0f} | "
            f"{med(mode, 'decoded_per_s'):.1f} | {med(mode, 'results_per_s'):.1f} | "
            f"{med(mode, 'cpu_ms_per_frame'):.2f} |"
        )
    md.append("")
    md.append(f"Ratio now / former CPU: {res['taken_cpu_median'] / res['former_cpu_median']:.2f}")
    md += ["", machine_line()]
    (OUT / "camera_cpu_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--cpu", action="store_true", help="the camera path's CPU, former vs now (see above)")
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--cam-fps", type=float, default=40.0)
    ap.add_argument("--model-s", type=float, default=0.1)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # --cpu's camera processes
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        serve_parts(a.serve, a.cam_fps, a.size, a.seed)
        return 0
    if a.cpu:
        return cpu_main(a)
    server = CameraServer(0, fps=1000, seed=0, width=a.size, height=a.size).start()
    b, d = [], []
    try:
        for _ in range(a.runs):
            b.append(bare(server.url, a.frames))
            d.append(asyncio.run(adapter(server.url, a.frames)))
    finally:
        server.stop()
    from bench._machine import machine, machine_line

    res = {
        "bench": "camera",
        "machine": machine(),
        "frames": a.frames,
        "runs": a.runs,
        "size": a.size,
        "bare_fps_median": statistics.median(b),
        "adapter_fps_median": statistics.median(d),
        "ratio": statistics.median(d) / statistics.median(b),
        "bare_fps": b,
        "adapter_fps": d,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "camera_bench.json").write_text(json.dumps(res, indent=2))
    md = [
        "### Camera: frames/s from the MJPEG simulator, CameraSource vs bare cv2.VideoCapture (medians)",
        "",
        "| image | bare VideoCapture fps | CameraSource fps | ratio |",
        "|---|---:|---:|---:|",
        f"| {a.size}x{a.size} JPEG | {res['bare_fps_median']:.0f} | {res['adapter_fps_median']:.0f} | "
        f"{res['ratio']:.2f} |",
        "",
        machine_line(),
    ]
    (OUT / "camera_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
