"""Hot swap under load: results/s while a model slot swaps in a new package, against results/s without a
swap in the same run, and frames lost (missing sequence numbers) across every swap.

A synthetic camera feeds a frame pipeline at a fixed rate (``--fps``, 640×480 frames; it never skips a
frame: when the loop stalls it sends late, like a driver's buffer), through the agent's own ``Pipeline``
(bounded queue, drop-oldest) and ``ModelSlot``. After a settling time, each round measures the normal
rate over ``--normal-s`` seconds, then calls ``slot.swap()`` with a package of the next version (verify,
unpack, load and golden-check every allowed engine × form, switch) and measures the rate from the call to
its return (at least ``--min-window-s``). Baseline: the normal windows of the same run. Bar (issue 18):
during a swap ≥ 80 % of normal, 0 missing sequence numbers.

    .venv/bin/python -m bench.swap_bench [--fps 100] [--swaps 5] [--engines openvino:unisolated,openvino,auto]

``openvino:unisolated`` is the swap as it was before issue 18 (OpenVINO's ``convert_model`` of the new
model on the serving process's threads, holding the GIL): the before of the fix, in the same run.

Writes bench/out/swap_bench.json and bench/out/swap_bench.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def rate(times: list[float], t0: float, t1: float) -> float:
    return sum(1 for t in times if t0 <= t < t1) / (t1 - t0)


async def run_case(
    spec: str,
    pkgs: list[Path],
    pub: Path,
    tmp: Path,
    fps: float,
    normal_s: float,
    min_window_s: float,
    settle_s: float,
) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from devices.base import Frame
    from edge_agent.config import PipelineSettings
    from edge_agent.models import slot as slot_mod
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot
    from edge_agent.pipelines import Pipeline

    engine, _, variant = spec.partition(":")
    slot = ModelSlot(
        "vision",
        ModelConfig(package=str(pkgs[0]), engine=engine, openvino_f32=True),
        tmp / f"data-{spec.replace(':', '-')}",
        [pub],
    )
    await slot.start()
    if variant == "unisolated":  # the swap loads as before issue 18: on the serving process's threads
        real = slot_mod.select
        slot_mod.select = lambda opened, cfg, isolated=False: real(opened, cfg, isolated=False)
    finished: list[float] = []
    seqs: list[int] = []

    async def on_result(res, item) -> None:
        finished.append(time.perf_counter())
        seqs.append(res.item_seq)

    ex = ThreadPoolExecutor(1, thread_name_prefix="infer")
    p = Pipeline(PipelineSettings(name="inspect", source="cam", model="vision"), slot, ex, on_result)
    p.prepare()
    p.start()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    stop = asyncio.Event()
    produced = 0
    produced_at: list[float] = []

    async def camera() -> None:
        nonlocal produced
        period, next_t = 1.0 / fps, time.perf_counter()
        while not stop.is_set():
            produced_at.append(time.perf_counter())
            await p.offer(Frame("cam", produced, time.time(), images[produced % len(images)]))
            produced += 1
            next_t += period
            delay = next_t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)

    cam = asyncio.create_task(camera())
    await asyncio.sleep(settle_s)
    rounds = []
    windows: list[tuple[float, float]] = []
    for pkg in pkgs[1:]:
        t0 = time.perf_counter()
        await asyncio.sleep(normal_s)
        t1 = time.perf_counter()
        outcome = await slot.swap(pkg, watch=False)
        t2 = time.perf_counter()
        end = max(t2, t1 + min_window_s)
        await asyncio.sleep(max(0.0, end - time.perf_counter()) + 0.5)
        normal, during = rate(finished, t0, t1), rate(finished, t1, end)
        windows.append((t1, end))
        rounds.append(
            {
                "to": outcome.to_version,
                "ok": outcome.ok,
                "swap_s": round(t2 - t1, 3),
                "normal_per_s": round(normal, 1),
                "during_swap_per_s": round(during, 1),
                "ratio": round(during / normal, 3) if normal else None,
            }
        )
    stop.set()
    await cam
    await p.stop()
    ex.shutdown()
    serving = slot.status()
    await slot.stop()
    if variant == "unisolated":
        slot_mod.select = real
    lost = set(range(produced)) - set(seqs)
    in_swaps = sum(1 for q in lost if any(a <= produced_at[q] < b for a, b in windows))
    swap_s = sum(b - a for a, b in windows)
    other_s = (produced_at[-1] - produced_at[0]) - swap_s if produced_at else 0.0
    ratios = [r["ratio"] for r in rounds if r["ratio"] is not None]
    return {
        "engine": spec,
        "serving": serving.get("engine"),
        "fps": fps,
        "frames": produced,
        "results": len(seqs),
        "missing_seqs": len(lost),
        "missing_in_swaps": in_swaps,
        # lost frames per second in the swap windows and outside them (the machine's own noise)
        "missing_per_s_swaps": round(in_swaps / swap_s, 2) if swap_s else None,
        "missing_per_s_other": round((len(lost) - in_swaps) / other_s, 2) if other_s > 0 else None,
        "dropped_queue": p.queue.dropped,
        "swaps_ok": sum(r["ok"] for r in rounds),
        "swaps": len(rounds),
        "normal_per_s_median": statistics.median(r["normal_per_s"] for r in rounds),
        "during_swap_per_s_median": statistics.median(r["during_swap_per_s"] for r in rounds),
        "ratio_median": statistics.median(ratios) if ratios else None,
        "ratio_min": min(ratios) if ratios else None,
        "swap_s_median": statistics.median(r["swap_s"] for r in rounds),
        "rounds": rounds,
    }


def markdown(report: dict) -> str:
    lines = [
        f"fps {report['fps']}, {report['swaps']} swaps per engine choice, load average before "
        f"{report['loadavg_before']}, after {report['loadavg_after']}, {os.cpu_count()} cores",
        "",
        f"Machine: {report['machine']}",
        "",
        "| engine (serving) | normal results/s (median) | during a swap (median) | ratio median (min) | "
        "swap s (median) | frames | missing seqs (in swap windows) | missing/s in swaps, outside | swaps ok |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in report["cases"]:
        lines.append(
            f"| {c['engine']} ({c['serving']}) | {c['normal_per_s_median']:.1f} | "
            f"{c['during_swap_per_s_median']:.1f} | {c['ratio_median']:.2f} ({c['ratio_min']:.2f}) | "
            f"{c['swap_s_median']:.2f} | {c['frames']} | {c['missing_seqs']} ({c['missing_in_swaps']}) | "
            f"{c['missing_per_s_swaps']}, {c['missing_per_s_other']} | "
            f"{c['swaps_ok']}/{c['swaps']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from bench._machine import machine
    from model_packager.cpu import cpu_flags

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fps", type=float, default=100.0)
    ap.add_argument("--swaps", type=int, default=5)
    ap.add_argument(
        "--engines",
        default="openvino:unisolated,openvino,auto,onnxruntime",
        help="engine choices; ':unisolated' loads the new model the way it was before (baseline)",
    )
    ap.add_argument("--normal-s", type=float, default=3.0)
    ap.add_argument("--min-window-s", type=float, default=1.0)
    ap.add_argument("--settle-s", type=float, default=2.0)
    ap.add_argument("--size", type=int, default=128, help="the model's input size (square)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.models import make_keypair, make_package

    report: dict = {
        "fps": args.fps,
        "swaps": args.swaps,
        "cpu_flags": list(cpu_flags()),
        "machine": machine(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "cases": [],
    }
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        key, pub = make_keypair(tmp / "keys")
        pkgs = [
            make_package(
                tmp,
                kind="vision",
                version=f"1.{i}.0",
                key=key,
                width=args.size,
                height=args.size,
                seed=i,
                out_dir=tmp / f"pkgs-{i}",
            )
            for i in range(args.swaps + 1)
        ]
        for spec in args.engines.split(","):
            case = asyncio.run(
                run_case(spec, pkgs, pub, tmp, args.fps, args.normal_s, args.min_window_s, args.settle_s)
            )
            report["cases"].append(case)
            print(json.dumps({k: v for k, v in case.items() if k != "rounds"}), flush=True)
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    OUT.mkdir(exist_ok=True)
    (OUT / "swap_bench.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (OUT / "swap_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
