"""The patch recipe's training step on 5-MP frames: synthetic defects drawn on the whole frame (the former
way, ``learned_patches.WORK_SCALE`` out of reach) against the working image (``working_image``: at most
twice the model's input), in the same run, on frames nobody here made (tests/support/products.py).

    .venv/bin/python -m bench.patch_net_step_bench [--steps 3] [--frames 6]

Prints a markdown table and one JSON line (seconds a step, with the set-up spread over the steps)."""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    from bench._machine import machine, machine_line
    from cloud_trainer.train import learned_patches as L
    from cloud_trainer.train import vision
    from tests.support.products import product

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--frames", type=int, default=6)
    a = ap.parse_args()
    print(machine_line(), flush=True)
    kinds = ["cap", "leather", "pcb"]
    frames = [product(kinds[i % 3], 3, i, size=(1944, 2592))[0] for i in range(a.frames)]
    pre = vision.preprocessing(128)
    out = {}
    for label, scale in (("whole frame (former)", 10**9), ("working image", L.WORK_SCALE)):
        keep, L.WORK_SCALE = L.WORK_SCALE, scale
        try:
            t = time.perf_counter()
            L.fit_net(frames, pre, 0, a.steps, log=lambda m: None)
            out[label] = (time.perf_counter() - t) / a.steps
        finally:
            L.WORK_SCALE = keep
    print("| synthetic defects drawn on | s a step |\n|---|---:|")
    for k, v in out.items():
        print(f"| {k} | {v:.2f} |")
    print(json.dumps({"machine": machine(), "frames": a.frames, "steps": a.steps, "seconds_a_step": out}))


if __name__ == "__main__":
    main()
