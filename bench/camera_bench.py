"""Camera ingest: frames/s through ``CameraSource`` vs a bare ``cv2.VideoCapture`` loop on the same
MJPEG stream from the camera simulator, same run, alternating; medians.

The simulator serves at a rate above what either client can take (``--fps 1000``), so each
client reads as fast as it can; the adapter adds the reader thread, the hand-over to asyncio
and the Frame object. No target fps (no skipping).

    .venv/bin/python -m bench.camera_bench [--frames 300] [--runs 3] [--size 128]
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=128)
    a = ap.parse_args(argv)
    server = CameraServer(0, fps=1000, seed=0, width=a.size, height=a.size).start()
    b, d = [], []
    try:
        for _ in range(a.runs):
            b.append(bare(server.url, a.frames))
            d.append(asyncio.run(adapter(server.url, a.frames)))
    finally:
        server.stop()
    res = {
        "bench": "camera",
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
    ]
    (OUT / "camera_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
