"""Megapixel frames of a part nobody here made, for the anomaly family's small-defect measurements:
a bead-blasted aluminium bracket (a rounded plate with two slots and a row of holes) held on a pale
grey fixture under a ring light, seen whole in a frame of e.g. 1280x1024. Its defects are small on
that frame: a ``scratch`` 2-3 px wide, a ``stain`` a few pixels across, a ``chip`` of a few pixels
bitten out of the plate's edge, each with its mask.

Independent of ``simulators/parts.py`` and ``tests/support/own_parts.py`` (another part, finish,
fixture and light): pose (a shift of a few pixels and a rotation under 1.5 degrees), lamp gain,
a gradient, vignetting, sensor noise, JPEG for some. Deterministic in ``(seed, index)``; the frame's
size scales the part and keeps the defects' pixel sizes (so a smaller frame holds relatively larger
defects: 512x384 in the tests, 1280x1024 in ``bench/anomaly_tiles_bench.py``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

DEFECTS = ("scratch", "stain", "chip")
# ``sheet``: the same finish filling the frame (a rolled sheet under the camera, no edge, hole or fixture);
# a ``pit`` (a dark crater a few pixels across) instead of the chip
SHEET_DEFECTS = ("scratch", "stain", "pit")


def defects(kind: str = "bracket") -> tuple[str, ...]:
    return SHEET_DEFECTS if kind == "sheet" else DEFECTS


def part_box(width: int, height: int) -> list[int]:
    """[x, y, w, h] of a box holding the plate in every pose (the ``--roi`` a user would give)."""
    pw, ph = int(width * 0.74), int(height * 0.70)
    m = max(8, int(0.02 * width))
    return [max(0, (width - pw) // 2 - m), max(0, (height - ph) // 2 - m), pw + 2 * m, ph + 2 * m]


def frame(
    seed: int,
    index: int,
    width: int = 1280,
    height: int = 1024,
    defect: str | None = None,
    kind: str = "bracket",
) -> tuple[np.ndarray, np.ndarray]:
    """One BGR uint8 frame and its defect mask (uint8 0/255, empty for a good part); ``kind`` bracket
    (the part on its fixture) or sheet (the finish filling the frame)."""
    import cv2

    rng = np.random.default_rng([seed, index, 4242])
    w, h = width, height
    # the fixture: pale grey with a faint machined cross-hatch
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    fixture = 172 + 3 * np.sin(xx * 0.21) * np.sin(yy * 0.17)
    # the plate, drawn in its own (unrotated) frame, then posed
    pw, ph = (w + 40, h + 40) if kind == "sheet" else (int(w * 0.74), int(h * 0.70))
    plate = np.zeros((h, w), np.uint8)
    x0, y0 = (w - pw) // 2, (h - ph) // 2
    r = max(6, ph // 10)
    cv2.rectangle(plate, (x0 + r, y0), (x0 + pw - r, y0 + ph), 255, -1)
    cv2.rectangle(plate, (x0, y0 + r), (x0 + pw, y0 + ph - r), 255, -1)
    for cx, cy in (
        (x0 + r, y0 + r),
        (x0 + pw - r, y0 + r),
        (x0 + r, y0 + ph - r),
        (x0 + pw - r, y0 + ph - r),
    ):
        cv2.circle(plate, (cx, cy), r, 255, -1)
    holes = np.zeros((h, w), np.uint8)
    sw = max(3, ph // 14)
    for k in (0.3, 0.7) if kind != "sheet" else ():  # two slots
        sx = int(x0 + pw * k)
        cv2.line(holes, (sx, y0 + ph // 5), (sx, y0 + ph * 2 // 5), 255, sw * 2)
    for k in range(6) if kind != "sheet" else ():  # a row of holes
        cv2.circle(holes, (int(x0 + pw * (0.15 + 0.14 * k)), int(y0 + ph * 0.78)), max(3, ph // 24), 255, -1)
    body = cv2.subtract(plate, holes)
    mask = np.zeros((h, w), np.uint8)
    metal = body > 0
    # the finish: bead-blasted (fine grains) over a slow anodising mottle
    grain = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.8)
    grain /= grain.std() + 1e-6
    mottle = cv2.resize(rng.standard_normal((h // 64 + 2, w // 64 + 2)).astype(np.float32), (w, h))
    base = rng.uniform(120, 140)
    surf = base + 7 * grain + 5 * mottle
    edge = cv2.GaussianBlur(body.astype(np.float32) / 255, (0, 0), 2.0)
    surf = surf * (0.75 + 0.25 * edge)  # a darker chamfer at every edge
    img = np.where(metal, surf, fixture)
    dark_holes = holes > 0
    img = np.where(dark_holes & (plate > 0), 40 + 4 * grain, img)  # the fixture's pockets under the holes
    ok_zone = cv2.erode(body, np.ones((15, 15), np.uint8)) > 0  # defects off the edges and holes
    ys, xs = np.nonzero(ok_zone)
    if defect == "scratch":
        i = int(rng.integers(len(xs)))
        a = rng.uniform(0, math.pi)
        length = rng.uniform(50, 140)
        p0 = (xs[i] - math.cos(a) * length / 2, ys[i] - math.sin(a) * length / 2)
        p1 = (xs[i] + math.cos(a) * length / 2, ys[i] + math.sin(a) * length / 2)
        layer = np.zeros((h, w), np.uint8)
        cv2.line(
            layer,
            tuple(np.round(p0).astype(int)),
            tuple(np.round(p1).astype(int)),
            255,
            int(rng.integers(2, 4)),
        )
        layer &= ok_zone.astype(np.uint8) * 255
        img = np.where(layer > 0, img + rng.choice([-1, 1]) * rng.uniform(30, 50), img)
        mask |= layer
    elif defect == "stain":
        i = int(rng.integers(len(xs)))
        rad = rng.uniform(3, 6)
        d2 = ((xx - xs[i]) ** 2 + ((yy - ys[i]) * rng.uniform(0.7, 1.3)) ** 2) / rad**2
        blob = np.clip(1.2 - d2, 0, 1) * metal
        img = img * (1 - 0.55 * blob) + 60 * 0.55 * blob
        mask[blob > 0.2] = 255
    elif defect == "pit":  # a small crater: dark, with a lit rim on one side
        i = int(rng.integers(len(xs)))
        rad = rng.uniform(2, 4)
        d2 = ((xx - xs[i]) ** 2 + (yy - ys[i]) ** 2) / rad**2
        img = np.where(d2 <= 1, img - rng.uniform(45, 70), img)
        mask[d2 <= 1] = 255
    elif defect == "chip":  # a bite out of the plate's outer edge: the fixture shows through
        rim = (plate > 0) & (cv2.erode(plate, np.ones((3, 3), np.uint8)) == 0)
        ry, rx = np.nonzero(rim)
        i = int(rng.integers(len(rx)))
        rad = rng.uniform(3, 6)
        bite = ((xx - rx[i]) ** 2 + (yy - ry[i]) ** 2 <= rad**2) & (plate > 0)
        img = np.where(bite, fixture, img)
        mask[bite] = 255
    # pose: a few pixels' shift, under 1.5 degrees of rotation (the same warp for the mask)
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-1.5, 1.5), 1.0)
    rot[:, 2] += rng.uniform(-6, 6, 2)
    img = cv2.warpAffine(img.astype(np.float32), rot, (w, h), flags=cv2.INTER_LINEAR, borderValue=172)
    mask = cv2.warpAffine(mask, rot, (w, h), flags=cv2.INTER_NEAREST)
    # light: a ring light's falloff, lamp gain, a gradient from any side, a slight colour cast
    rr = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w * w / 4)
    ga = rng.uniform(0, 2 * math.pi)
    grad = 1 + rng.uniform(0, 0.08) * ((xx - w / 2) * math.cos(ga) + (yy - h / 2) * math.sin(ga)) / w
    light = rng.uniform(0.9, 1.1) * (1 - rng.uniform(0.05, 0.15) * rr) * grad
    cast = np.asarray([1 + rng.uniform(-0.03, 0.03), 1.0, 1 + rng.uniform(-0.03, 0.03)], np.float32)
    out = (img * light)[:, :, None] * cast
    out += rng.standard_normal(out.shape).astype(np.float32) * rng.uniform(1.0, 2.5)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(85, 96))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out, mask


def write_good_folder(
    out: Path, seed: int, n: int, width: int = 1280, height: int = 1024, kind: str = "bracket"
) -> Path:
    """A plain folder of good frames (the first format a user has for a new product)."""
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(out / f"{i:04d}.png"), frame(seed, i, width, height, kind=kind)[0])
    return out


def write_mvtec(
    root: Path,
    seed: int,
    n_train: int,
    n_good: int,
    n_ng: int,
    width: int = 1280,
    height: int = 1024,
    kind: str = "bracket",
) -> Path:
    """MVTec AD layout: ``train/good``, ``test/good``, ``test/<defect>`` and ``ground_truth/<defect>``
    masks; the test parts from other indices than the training ones."""
    import cv2

    write_good_folder(root / "train" / "good", seed, n_train, width, height, kind)
    (root / "test" / "good").mkdir(parents=True, exist_ok=True)
    for i in range(n_good):
        cv2.imwrite(
            str(root / "test" / "good" / f"{i:04d}.png"), frame(seed, 10_000 + i, width, height, kind=kind)[0]
        )
    for i in range(n_ng):
        d = defects(kind)[i % 3]
        img, mask = frame(seed, 20_000 + i, width, height, d, kind)
        for sub in (root / "test" / d, root / "ground_truth" / d):
            sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "test" / d / f"{i:04d}.png"), img)
        cv2.imwrite(str(root / "ground_truth" / d / f"{i:04d}_mask.png"), mask)
    return root
