"""Cost per item of the stale-item check (``queue.max_age_ms``) against the former pipeline, same run.

1. The pipeline's path per frame (offer, queue, worker, executor hop, ``Result``, no actions) with a stub slot
   whose ``infer`` returns a prepared ``Inference`` (the model's time would hide what is measured): the former
   ``edge_agent/pipelines.py`` (read from git at ``--former``, loaded beside the current one) against the current
   one with no bound (``max_age_ms: null``), a bound never reached, and ``auto`` on a live camera (the frames'
   rate noted per frame). Blocks of ``--n`` frames alternate between the variants (their order rotated from
   block to block); medians of µs per frame.
2. The check alone: ``AgeGate.stale`` on a fresh frame, ns per call, against an empty method call.

    .venv/bin/python -m bench.stale_bench [--n 2000] [--blocks 15] [--former a13b603 | path/to/pipelines.py]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
FORMER = "a13b603"  # the last commit before the stale-item check


def former_module(rev: str):
    """The former ``edge_agent/pipelines.py``: at git revision ``rev``, or the file ``rev`` names."""
    if Path(rev).is_file():
        src = Path(rev).read_text()
    else:
        src = subprocess.run(
            ["git", "show", f"{rev}:edge_agent/pipelines.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    path = Path(tempfile.mkdtemp()) / "former_pipelines.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("former_pipelines", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["former_pipelines"] = mod
    spec.loader.exec_module(mod)
    return mod


class StubSlot:
    def __init__(self) -> None:
        from edge_agent.models.slot import Inference
        from model_packager.preprocess import Interpretation

        self.inf = Inference(
            Interpretation("OK", 0.1, "ok", {"ok": 0.9, "ng": 0.1}, 0.8),
            {"logits": np.zeros((1, 2), np.float32)},
            "m",
            "1.0.0",
            "onnxruntime",
            0.0,
            0.0,
            0.0,
        )

    def infer(self, item, tolerance=None):
        return self.inf


async def per_frame_us(pipeline_cls, settings, source, n: int, pool) -> float:
    from devices.base import Frame

    done = asyncio.Event()
    count = 0

    async def on_result(res, item) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    kw = {"source_settings": source} if source is not None else {}
    p = pipeline_cls(settings, StubSlot(), pool, on_result, **kw)
    p.prepare()
    p.start()
    image = np.zeros((8, 8, 3), np.uint8)
    t0 = time.time()
    frames = [Frame("cam", i, t0 + i / 30, image) for i in range(n)]  # a 30-fps camera's capture times
    start = time.perf_counter()
    for f in frames:
        await p.offer(f)
    await done.wait()
    took = time.perf_counter() - start
    await p.stop()
    assert p.status()["dropped"] == 0
    return took / n * 1e6


def check_ns(calls: int = 200_000) -> dict:
    from devices.base import Frame
    from edge_agent.config import PipelineSettings
    from edge_agent.pipelines import AgeGate

    gate = AgeGate("p", PipelineSettings(name="p", source="cam", model="m", queue={"max_age_ms": 60_000}))
    off = AgeGate("p", PipelineSettings(name="p", source="cam", model="m", queue={"max_age_ms": None}))
    frame = Frame("cam", 0, time.time(), np.zeros((1, 1, 3), np.uint8))

    class Empty:
        def stale(self, item):
            return None

    empty = Empty()
    from devices.camera.settings import CameraSettings

    auto = AgeGate("p", PipelineSettings(name="p", source="cam", model="m"), CameraSettings(url="usb:0"))

    def per_frame(g: AgeGate, i: int) -> None:  # what a frame meets: note at offer, two checks, the end test
        g.note(frame.captured_at + i / 30)
        g.stale(frame)
        g.stale(frame)
        if g.active:
            g.fresh(0.0)

    out: dict[str, list[float]] = {
        "empty_call": [],
        "no_bound": [],
        "bound": [],
        "a frame's added work, auto": [],
    }
    for _ in range(7):
        for name, g in (("empty_call", empty), ("no_bound", off), ("bound", gate)):
            f = g.stale
            t = time.perf_counter()
            for _ in range(calls):
                f(frame)
            out[name].append((time.perf_counter() - t) / calls * 1e9)
        t = time.perf_counter()
        for i in range(calls):
            per_frame(auto, i)
        out["a frame's added work, auto"].append((time.perf_counter() - t) / calls * 1e9)
    return {k: statistics.median(v) for k, v in out.items()}


async def main_async(args) -> dict:
    from devices.camera.settings import CameraSettings
    from edge_agent import pipelines
    from edge_agent.config import PipelineSettings

    former = former_module(args.former)
    q = {"size": args.n + 1}
    live = CameraSettings(url="usb:0")
    variants = {
        "former": (former.Pipeline, PipelineSettings(name="p", source="cam", model="m", queue=q), None),
        "no bound (null)": (
            pipelines.Pipeline,
            PipelineSettings(name="p", source="cam", model="m", queue={**q, "max_age_ms": None}),
            live,
        ),
        "bound, never reached": (
            pipelines.Pipeline,
            PipelineSettings(name="p", source="cam", model="m", queue={**q, "max_age_ms": 60_000}),
            live,
        ),
        "auto, live camera": (
            pipelines.Pipeline,
            PipelineSettings(name="p", source="cam", model="m", queue=q),
            live,
        ),
    }
    pool = ThreadPoolExecutor(1)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for cls, s, src in variants.values():  # warm-up
        await per_frame_us(cls, s, src, 200, pool)
    names = list(variants)
    for b in range(args.blocks):  # each block in another order: no variant always runs first or last
        for name in names[b % len(names) :] + names[: b % len(names)]:
            cls, s, src = variants[name]
            times[name].append(await per_frame_us(cls, s, src, args.n, pool))
    pool.shutdown()
    base = statistics.median(times["former"])
    return {
        "per_frame_us": {
            k: {"median": statistics.median(v), "min": min(v), "ratio": statistics.median(v) / base}
            for k, v in times.items()
        },
        "check_ns": check_ns(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--former", default=FORMER)
    args = ap.parse_args()
    from bench._machine import machine, machine_line

    print(machine_line(), flush=True)
    res = asyncio.run(main_async(args))
    res["machine"] = machine()
    OUT.mkdir(exist_ok=True)
    (OUT / "stale_bench.json").write_text(json.dumps(res, indent=2))
    print("| path | µs per frame (median) | min | ratio to former |")
    print("| --- | ---: | ---: | ---: |")
    for k, v in res["per_frame_us"].items():
        print(f"| {k} | {v['median']:.1f} | {v['min']:.1f} | {v['ratio']:.3f} |")
    c = res["check_ns"]
    print()
    print("| check alone | ns per call (median) |")
    print("| --- | ---: |")
    for k, v in c.items():
        print(f"| {k} | {v:.0f} |")


if __name__ == "__main__":
    main()
