"""The cost of reading FFmpeg's log (``devices.camera.ffmpeg_log``) against a bare capture, per MJPEG frame.

FFmpeg calls the log callback for every line at every level (``av_log_set_level`` filters only in its own
callback), and its MJPEG decoder logs some 29 debug lines a frame. A ctypes callback takes the GIL for each, so with
a busy Python thread beside the reader (the agent's pipelines, MQTT, the HTTP server) a frame waits for the GIL
that many times. Three modes, alternated in one process, each frame ``grab()`` + ``retrieve()`` of a 5 MP MJPEG
file opened with one decoding thread (as the cameras open theirs):

- ``bare``: FFmpeg's own callback, its level quiet (no Python);
- ``python``: the callback, filtering by level in Python (the line enters Python, then returns);
- ``native``: the callback behind the machine-code filter (``_native_filter``), as installed where it can be.

Usage: ``python -m bench.ffmpeg_log_bench [--frames 20] [--rounds 5] [--sizes 2592x1944,640x480]``; writes
``bench/out/ffmpeg_log_bench.{json,md}``."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def _video(path: Path, width: int, height: int, frames: int) -> Path:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height))
    base = np.linspace(0, 255, width, dtype=np.float32)[None, :, None].repeat(height, 0).repeat(3, 2)
    for i in range(frames):
        noise = rng.normal(0, 12, (height // 8, width // 8, 3)).astype(np.float32)
        img = base + cv2.resize(noise, (width, height)) + i
        w.write(np.clip(img, 0, 255).astype(np.uint8))
    w.release()
    return path


def _per_frame(path: Path, frames: int) -> list[float]:
    """Milliseconds of each frame's grab() + retrieve()."""
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    try:
        cap.grab()  # the first frame opens the decoder
        took = []
        for _ in range(frames):
            t = time.perf_counter()
            if not cap.grab():
                break
            cap.retrieve()
            took.append((time.perf_counter() - t) * 1000)
        return took
    finally:
        cap.release()


def run(frames: int, rounds: int, width: int, height: int) -> dict:
    from devices.camera import ffmpeg_log as F

    if not F.install():
        raise SystemExit("the FFmpeg log callback cannot be installed here")
    lib = ctypes.CDLL(F._libavutil())
    lib.av_log_set_callback.argtypes = [F._CALLBACK]
    lib.av_log_set_callback.restype = None
    modes = {
        "bare": ctypes.cast(lib.av_log_default_callback, F._CALLBACK),
        "python": F._installed[0],
    }
    if F._filtered:
        modes["native"] = F._filtered[0]
    calls = [0]
    code = F._on_log.__code__
    counting = F._CALLBACK(lambda *a: calls.__setitem__(0, calls[0] + 1))
    with tempfile.TemporaryDirectory() as tmp:
        video = _video(Path(tmp) / "mjpeg.avi", width, height, frames + 2)
        lib.av_log_set_callback(counting)
        _per_frame(video, frames)
        lines = calls[0] / (frames + 1)
        entered = {}  # times a frame's log lines entered Python (the callback's first line), per mode
        for m, cb in modes.items():
            lib.av_log_set_callback(cb)
            calls[0] = 0
            sys.setprofile(
                lambda f, e, _: calls.__setitem__(0, calls[0] + (e == "call" and f.f_code is code))
            )
            try:
                _per_frame(video, frames)
            finally:
                sys.setprofile(None)
            entered[m] = calls[0] / (frames + 1)
        lib.av_log_set_level(-8)  # the bare mode's FFmpeg callback: quiet, as OpenCV's is without the hook
        res: dict = {
            "frames": frames,
            "rounds": rounds,
            "size": f"{width}x{height}",
            "log_lines_per_frame": lines,
            "python_entries_per_frame": entered,
        }
        for beside in ("idle", "busy"):
            stop = threading.Event()

            def busy(stop: threading.Event = stop) -> None:
                x = 0
                while not stop.is_set():
                    for i in range(1000):
                        x += i

            th = threading.Thread(target=busy, daemon=True)
            if beside == "busy":
                th.start()
            got: dict[str, list[float]] = {m: [] for m in modes}
            for r in range(rounds):
                order = list(modes) if r % 2 == 0 else list(reversed(modes))
                for m in order:
                    lib.av_log_set_callback(modes[m])
                    got[m] += _per_frame(video, frames)
            stop.set()
            if beside == "busy":
                th.join()
            # the median frame waits for the GIL once at most (the lines of one grab come fast, and the thread
            # holding it keeps it through them); the mean carries the waits
            mean = {m: statistics.fmean(v) for m, v in got.items()}
            res[beside] = {
                "mean_ms": mean,
                "median_ms": {m: statistics.median(v) for m, v in got.items()},
                "mean_to_bare": {m: mean[m] / mean["bare"] for m in modes},
            }
    lib.av_log_set_callback(F._filtered[0] if F._filtered else F._installed[0])
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", default="2592x1944,640x480", help="comma-separated WIDTHxHEIGHT")
    a = ap.parse_args(argv)
    from bench._machine import machine, machine_line

    out: dict = {"machine": machine(), "sizes": {}}
    md = [
        f"FFmpeg log callback: mean ms a frame of MJPEG (grab + retrieve, one decoding thread) over {a.rounds} "
        f"rounds x {a.frames} frames, modes alternated; ratio to the bare capture's mean; load average "
        f"{os.getloadavg()[0]:.1f} at the end",
        "",
        "| size, beside the reader | bare | python | native |",
        "| --- | --- | --- | --- |",
    ]
    for size in a.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        res = run(a.frames, a.rounds, width, height)
        out["sizes"][size] = res
        for beside in ("idle", "busy"):
            r = res[beside]
            md.append(
                f"| {size}, {'a busy Python thread' if beside == 'busy' else 'nothing'} | "
                + " | ".join(
                    f"{v:.1f} (x{r['mean_to_bare'][m]:.2f}; median {r['median_ms'][m]:.1f})"
                    for m, v in r["mean_ms"].items()
                )
                + " |"
            )
        md.append(
            f"| {size}: Python entered a frame ({res['log_lines_per_frame']:.0f} log lines) | "
            + " | ".join(f"{v:.0f}" for v in res["python_entries_per_frame"].values())
            + " |"
        )
    md += ["", machine_line()]
    OUT.mkdir(exist_ok=True)
    (OUT / "ffmpeg_log_bench.json").write_text(json.dumps(out, indent=2))
    (OUT / "ffmpeg_log_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
