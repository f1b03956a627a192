"""Pre-train the vision patch recipe's net once and write the weights it starts from
(``cloud_trainer/train/learned_patches.PRETRAINED``, shipped with the trainer; ~0.4 MB, no pickled code).

The task is the recipe's own (``learned_patches.fit_net``: crops of good images, half with a synthetic
defect drawn on them, seen through random light, blur, noise and JPEG; the loss per cell against the
defect's mask), run for more steps than a build can afford, on the project's simulator's good parts of
both finishes (``simulators/parts.py``: brushed and cast, 200 px, seed 901) at the recipe's default
input (128 px). No defect image of any generator is used, and none of the images the own-images bench
judges on (tests/support/own_parts.py). A build then trains on the user's good images from these
weights, for its usual number of steps (bench/vision_own_images_bench.py measures the effect).

    .venv/bin/python -m bench.pretrain_patch_net [--steps 4800] [--per-surface 300] [--out PATH]

~38 min on one thread of the 2-core machine for 4800 steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from cloud_trainer.train import common
    from cloud_trainer.train import learned_patches as lp

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4800)
    ap.add_argument("--per-surface", type=int, default=300, help="good parts of each finish")
    ap.add_argument("--size", type=int, default=128, help="model input px (the recipe's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=lp.PRETRAINED)
    a = ap.parse_args(argv)
    from cloud_trainer.train.vision import preprocessing, tile_pre
    from simulators.parts import SURFACES, PartGenerator

    common.seed_everything(a.seed, 1)
    images = []
    for surface in SURFACES:
        gen = PartGenerator(seed=901, width=200, height=200, defect_rate=0.0, surface=surface)
        images += [gen.make(i, "ok").image for i in range(a.per_surface)]
    t0 = time.perf_counter()
    net, _ = lp.fit_net(images, tile_pre(preprocessing(a.size)), a.seed, a.steps, init=None)
    about = {
        "trained_on": f"{len(images)} good simulator parts ({', '.join(SURFACES)}), {a.steps} steps",
        "steps": a.steps,
        "seed": a.seed,
        "input_px": a.size,
        "width": lp.WIDTH,
        "seconds": round(time.perf_counter() - t0),
    }
    lp.save_state(net, a.out, about)
    print(f"wrote {a.out}: {about}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
