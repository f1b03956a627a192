"""Part images in the MVTec AD folder layout, for the good-only anomaly family.

``write_mvtec(out, n_train, n_test_good, n_test_ng, ...)`` writes::

    out/train/good/000.png ...              good parts only
    out/test/good/000.png ...
    out/test/<defect>/000.png ...           one folder per defect kind
    out/ground_truth/<defect>/000_mask.png  its mask (255 = defect)

``surface`` chooses the disc's finish (``parts.SURFACES``): "cast" is a finish the classifier's
data never shows. ``edge-sim dataset mvtec --out DIR`` runs it from the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from simulators.parts import DEFECTS, PartGenerator, PartsError


def write_mvtec(
    out: Path,
    n_train: int = 200,
    n_test_good: int = 50,
    n_test_ng: int = 50,
    seed: int = 0,
    size: int = 128,
    surface: str = "cast",
    difficulty: float = 1.0,
    jpeg_quality: int | None = None,
) -> Path:
    """``jpeg_quality``: store each image as the camera's MJPEG stream delivers it (JPEG at that quality,
    saved losslessly as PNG), so that a model learns the frames it will see."""
    import cv2

    out = Path(out)
    gen = PartGenerator(seed, size, size, 0.0, difficulty, surface=surface)
    idx = 0

    def save(folder: Path, name: str, img) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if jpeg_quality and not name.endswith("_mask.png"):
            img = cv2.imdecode(
                cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])[1], cv2.IMREAD_COLOR
            )
        cv2.imwrite(str(folder / name), img)

    for i in range(n_train):
        save(out / "train" / "good", f"{i:03d}.png", gen.make(idx, "ok").image)
        idx += 1
    for i in range(n_test_good):
        save(out / "test" / "good", f"{i:03d}.png", gen.make(idx, "ok").image)
        idx += 1
    counts: dict[str, int] = {}
    for i in range(n_test_ng):
        kind = DEFECTS[i % len(DEFECTS)]
        p = gen.make(idx, kind)
        idx += 1
        k = counts.get(kind, 0)
        counts[kind] = k + 1
        save(out / "test" / kind, f"{k:03d}.png", p.image)
        save(out / "ground_truth" / kind, f"{k:03d}_mask.png", p.mask)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="edge-sim dataset mvtec", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--train", type=int, default=200, help="good training images (default 200)")
    ap.add_argument("--test-good", type=int, default=50)
    ap.add_argument("--test-ng", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--surface", default="cast", help="brushed | cast (default cast)")
    ap.add_argument("--difficulty", type=float, default=1.0)
    ap.add_argument(
        "--jpeg-quality",
        type=int,
        default=None,
        help="images as a camera's JPEG stream of this "
        "quality delivers them (edge-sim camera serves 90); default: uncompressed",
    )
    a = ap.parse_args(argv)
    try:
        write_mvtec(
            a.out, a.train, a.test_good, a.test_ng, a.seed, a.size, a.surface, a.difficulty, a.jpeg_quality
        )
    except PartsError as e:
        print(f"edge-sim dataset mvtec: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(a.out)}))
    return 0
