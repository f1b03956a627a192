"""An image generator independent of the project's simulator, for the anomaly family's tests: a
sand-blasted blue-grey plate under a lighting gradient (another finish, light and part than
simulators/parts.py), with small defects (a dark pit, a thin bright scratch, an oily smudge) and
their masks, written in the MVTec AD layout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

DEFECTS = ("pit", "scratch", "smudge")


def plate(seed: int, index: int, defect: str | None, size: int = 96) -> tuple[np.ndarray, np.ndarray | None]:
    import cv2

    rng = np.random.default_rng([seed, index, 77])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    light = rng.uniform(0.9, 1.1) * (0.85 + 0.3 * (xx * math.cos(rng.uniform(0, 6.3)) + yy * 0.5))
    grain = cv2.GaussianBlur(rng.normal(0, 9, (size, size)).astype(np.float32), (0, 0), 0.7)
    base = np.stack([130 + grain, 120 + grain, 105 + grain], -1) * light[..., None]
    # four machined slots at fixed places, two rivets jittered by a pixel or two
    img = base.copy()
    for k in range(2):
        cx = int(size * (0.3 + 0.4 * k) + rng.integers(-2, 3))
        cy = int(size * 0.78 + rng.integers(-2, 3))
        cv2.circle(img, (cx, cy), max(2, size // 24), (60, 60, 60), -1, cv2.LINE_AA)
    cv2.rectangle(
        img, (size // 6, size // 6), (size // 6 + size // 4, size // 6 + size // 24), (80, 85, 90), -1
    )
    mask = None
    if defect is not None:
        mask = np.zeros((size, size), np.uint8)
        x, y = int(rng.integers(size // 5, 4 * size // 5)), int(rng.integers(size // 3, 2 * size // 3))
        layer = img.copy()
        if defect == "pit":
            r = int(rng.integers(2, 4))
            cv2.circle(mask, (x, y), r, 255, -1)
            cv2.circle(layer, (x, y), r, (35, 35, 40), -1)
        elif defect == "scratch":
            a = rng.uniform(0, math.pi)
            n = rng.uniform(0.08, 0.14) * size
            p1 = (int(x - n * math.cos(a)), int(y - n * math.sin(a)))
            p2 = (int(x + n * math.cos(a)), int(y + n * math.sin(a)))
            cv2.line(mask, p1, p2, 255, 1)
            cv2.line(layer, p1, p2, (215, 215, 220), 1)
        else:
            cv2.ellipse(
                mask,
                (x, y),
                (int(rng.integers(4, 7)), int(rng.integers(3, 5))),
                float(rng.uniform(0, 180)),
                0,
                360,
                255,
                -1,
            )
            layer = np.where(mask[..., None] > 0, layer * np.array([0.55, 0.75, 0.95]), layer)
        img = layer
    img = img + rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def write_plates(root: Path, n_train: int, n_good: int, n_ng: int, seed: int = 0, size: int = 96) -> Path:
    import cv2

    i = 0
    for folder, n in (("train/good", n_train), ("test/good", n_good)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            cv2.imwrite(str(root / folder / f"{k:03d}.png"), plate(seed, i, None, size)[0])
            i += 1
    for k in range(n_ng):
        d = DEFECTS[k % len(DEFECTS)]
        img, mask = plate(seed, i, d, size)
        i += 1
        (root / "test" / d).mkdir(parents=True, exist_ok=True)
        (root / "ground_truth" / d).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "test" / d / f"{k:03d}.png"), img)
        cv2.imwrite(str(root / "ground_truth" / d / f"{k:03d}_mask.png"), mask)
    return root
