"""Products nobody here made, for the good-only anomaly family: a small generator (NumPy + OpenCV)
independent of the simulator and of ``plates``/``own_parts`` (flanges on a dark belt), in the MVTec AD
layout (``train/good``, ``test/good``, ``test/<defect>``, ``ground_truth/<defect>/<name>_mask.png``).

- ``leather``: a textured surface filling the frame (grain and pores, colour), no part outline at all;
  defects: cut, hole, fold, colour spot.
- ``cap``: a bright moulded cap with a printed mark on a light background, turned anywhere in 360°
  and shifted; defects: crack, misprint (mark missing in part), dent (shaded spot).
- ``pcb``: a small green board with black chips, resistors and pads, shifted and turned a little;
  defects: missing component, solder bridge, scratch.

Each frame gets sensor noise, a lamp of its own (gain, offset) and JPEG at quality 80-95; ``grey``
writes one-channel frames. Deterministic per (kind, seed, index)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

KINDS = ("leather", "cap", "pcb")
DEFECTS = {
    "leather": ("cut", "hole", "fold", "color"),
    "cap": ("crack", "misprint", "dent"),
    "pcb": ("missing", "bridge", "scratch"),
}


def _finish(img: np.ndarray, rng: np.random.Generator, grey: bool) -> np.ndarray:
    """Lamp, sensor noise and JPEG, as a camera would give the frame."""
    f = img.astype(np.float32) * rng.uniform(0.92, 1.08) + rng.uniform(-6, 6)
    f += rng.normal(0, 2.5, f.shape)
    out = np.clip(f, 0, 255).astype(np.uint8)
    if grey:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def _leather(rng: np.random.Generator, size: tuple[int, int], defect: str | None):
    h, w = size
    base = np.array([40, 70, 120], np.float32) * rng.uniform(0.95, 1.05)  # BGR brown
    grain = np.zeros((h, w), np.float32)
    for s, a in ((1.2, 14.0), (3.0, 10.0), (8.0, 6.0)):
        n = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), s)
        grain += a * n / (n.std() + 1e-6)
    pores = (rng.random((h, w)) < 0.004).astype(np.float32)
    grain -= 25 * cv2.GaussianBlur(pores, (0, 0), 1.0) * 6
    img = base[None, None, :] * (1 + grain[..., None] / 100.0)
    mask = np.zeros((h, w), np.uint8)
    if defect:
        cy, cx = rng.integers(h // 6, 5 * h // 6), rng.integers(w // 6, 5 * w // 6)
        s = max(h, w) / 256
        if defect == "cut":
            ang = rng.uniform(0, np.pi)
            L = rng.uniform(25, 45) * s
            p1 = (int(cx - L * np.cos(ang)), int(cy - L * np.sin(ang)))
            p2 = (int(cx + L * np.cos(ang)), int(cy + L * np.sin(ang)))
            cv2.line(mask, p1, p2, 255, max(2, int(2 * s)))
            img[mask > 0] *= 0.35
        elif defect == "hole":
            cv2.circle(mask, (int(cx), int(cy)), int(rng.uniform(4, 8) * s), 255, -1)
            img[mask > 0] = 15
        elif defect == "fold":
            ang = rng.uniform(0, np.pi)
            L = rng.uniform(30, 60) * s
            p1 = (int(cx - L * np.cos(ang)), int(cy - L * np.sin(ang)))
            p2 = (int(cx + L * np.cos(ang)), int(cy + L * np.sin(ang)))
            ridge = np.zeros((h, w), np.float32)
            cv2.line(ridge, p1, p2, 1.0, max(3, int(4 * s)))
            ridge = cv2.GaussianBlur(ridge, (0, 0), 2 * s)
            shade = cv2.Sobel(ridge, cv2.CV_32F, 1, 1, ksize=3)
            img *= 1 + np.clip(ridge * 0.6 - shade * 2, -0.6, 0.8)[..., None]
            mask[ridge > 0.15] = 255
        else:  # a colour spot (dye)
            r = int(rng.uniform(6, 12) * s)
            cv2.circle(mask, (int(cx), int(cy)), r, 255, -1)
            soft = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 2)[..., None]
            img = img * (1 - 0.6 * soft) + np.array([120, 60, 40], np.float32) * 0.6 * soft
    return img, mask


def _cap(rng: np.random.Generator, size: tuple[int, int], defect: str | None):
    h, w = size
    img = np.full((h, w, 3), 215, np.float32) + np.array([4, 0, -4], np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img += (xx / w - 0.5)[..., None] * 12  # the light table's gradient
    r = min(h, w) * rng.uniform(0.26, 0.29)
    cx = w / 2 + rng.uniform(-0.15, 0.15) * w
    cy = h / 2 + rng.uniform(-0.15, 0.15) * h
    ang = rng.uniform(0, 360)
    d = np.hypot(xx - cx, yy - cy)
    body = d < r
    shadow = cv2.GaussianBlur(((np.hypot(xx - cx - 6, yy - cy - 6) < r) * 1.0).astype(np.float32), (0, 0), 6)
    img *= 1 - 0.25 * shadow[..., None]
    cap = np.array([235, 238, 245], np.float32) * (1 - 0.12 * (d / r) ** 2)[..., None]
    img[body] = cap[body]
    ring = (np.abs(d - 0.82 * r) < 1.5) | (np.abs(d - r) < 1.2)
    img[ring] *= 0.8
    # the printed mark: a bar and a dot, turned with the cap
    mark = np.zeros((h, w), np.uint8)
    M = cv2.getRotationMatrix2D((float(cx), float(cy)), ang, 1.0)
    pts = np.array(
        [
            [cx - 0.45 * r, cy - 0.08 * r],
            [cx + 0.45 * r, cy - 0.08 * r],
            [cx + 0.45 * r, cy + 0.08 * r],
            [cx - 0.45 * r, cy + 0.08 * r],
        ],
        np.float32,
    )
    pts = cv2.transform(pts[None], M)[0].astype(np.int32)
    cv2.fillPoly(mark, [pts], 255)
    dot = cv2.transform(np.array([[[cx, cy + 0.35 * r]]], np.float32), M)[0, 0]
    cv2.circle(mark, (int(dot[0]), int(dot[1])), int(0.1 * r), 255, -1)
    colour = np.array([160, 60, 30], np.float32)  # a blue print
    mask = np.zeros((h, w), np.uint8)
    if defect == "misprint":  # part of the bar not printed
        gap = np.zeros((h, w), np.uint8)
        g = cv2.transform(np.array([[[cx + rng.choice([-0.25, 0.25]) * r, cy]]], np.float32), M)[0, 0]
        cv2.circle(gap, (int(g[0]), int(g[1])), int(0.16 * r), 255, -1)
        mask = cv2.bitwise_and(gap, mark)
        mark = cv2.bitwise_and(mark, cv2.bitwise_not(gap))
    img[mark > 0] = colour
    if defect == "crack":
        a0 = rng.uniform(0, 2 * np.pi)
        p = [cx + r * np.cos(a0), cy + r * np.sin(a0)]
        pts = [p]
        for _ in range(6):
            a0 += rng.uniform(-0.5, 0.5)
            p = [p[0] - 0.07 * r * np.cos(a0), p[1] - 0.07 * r * np.sin(a0)]
            pts.append(p)
        cv2.polylines(mask, [np.asarray(pts, np.int32)], False, 255, 2)
        img[mask > 0] *= 0.45
    elif defect == "dent":
        a0, rr = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.7) * r
        px, py = cx + rr * np.cos(a0), cy + rr * np.sin(a0)
        dd = np.hypot(xx - px, yy - py)
        rad = 0.13 * r
        shade = np.clip(1 - dd / rad, 0, 1) * np.sign(xx - px + yy - py)
        img *= 1 + 0.35 * shade[..., None]
        mask[dd < rad] = 255
    return img, mask


def _pcb(rng: np.random.Generator, size: tuple[int, int], defect: str | None):
    h, w = size
    s = min(h, w) / 256
    img = np.zeros((h, w, 3), np.float32) + np.array([40, 110, 30], np.float32)  # solder mask green
    img += cv2.GaussianBlur(rng.normal(0, 6, (h, w)).astype(np.float32), (0, 0), 1.5)[..., None]
    layer = np.zeros((h, w, 3), np.float32)
    mask = np.zeros((h, w), np.uint8)
    parts = []  # (kind, x, y) on a fixed layout (the board's design)
    for i in range(3):
        parts.append(("chip", 50 + 70 * i, 70))
    for i in range(5):
        parts.append(("res", 40 + 42 * i, 160))
    for i in range(4):
        parts.append(("cap", 55 + 50 * i, 210))
    missing = int(rng.integers(len(parts))) if defect == "missing" else -1
    for y in range(30, 250, 40):  # traces
        cv2.line(
            img, (int(10 * s), int(y * s)), (int(246 * s), int(y * s)), (60, 150, 60), max(1, int(2 * s))
        )
    for k, (kind, x, y) in enumerate(parts):
        x, y = x * s, y * s
        if kind == "chip":
            pw, ph = 44 * s, 28 * s
            for j in range(6):  # pins
                px = x - pw / 2 + (j + 0.5) * pw / 6
                cv2.rectangle(
                    img,
                    (int(px - 2 * s), int(y - ph / 2 - 6 * s)),
                    (int(px + 2 * s), int(y + ph / 2 + 6 * s)),
                    (190, 195, 200),
                    -1,
                )
            box = (int(x - pw / 2), int(y - ph / 2)), (int(x + pw / 2), int(y + ph / 2))
            colour = (25, 25, 28)
        elif kind == "res":
            pw, ph = 22 * s, 10 * s
            box = (int(x - pw / 2), int(y - ph / 2)), (int(x + pw / 2), int(y + ph / 2))
            colour = (30, 30, 30)
            cv2.rectangle(
                img,
                (int(x - pw / 2 - 4 * s), int(y - ph / 2)),
                (int(x + pw / 2 + 4 * s), int(y + ph / 2)),
                (190, 195, 200),
                -1,
            )
        else:
            pw, ph = 16 * s, 10 * s
            box = (int(x - pw / 2), int(y - ph / 2)), (int(x + pw / 2), int(y + ph / 2))
            colour = (80, 130, 170)
            cv2.rectangle(
                img,
                (int(x - pw / 2 - 3 * s), int(y - ph / 2)),
                (int(x + pw / 2 + 3 * s), int(y + ph / 2)),
                (190, 195, 200),
                -1,
            )
        if k == missing:  # the pads stay, bare
            cv2.rectangle(mask, (box[0][0] - 3, box[0][1] - 3), (box[1][0] + 3, box[1][1] + 3), 255, -1)
            continue
        cv2.rectangle(img, box[0], box[1], colour, -1)
        if kind == "chip":
            cv2.circle(
                img, (box[0][0] + int(5 * s), box[0][1] + int(5 * s)), max(1, int(2 * s)), (90, 90, 90), -1
            )
    del layer
    if defect == "bridge":
        x, y = parts[int(rng.integers(3))][1:]
        px = x * s - 22 * s + (int(rng.integers(5)) + 1) * 44 * s / 6
        y0 = int(y * s + (14 + 2) * s)
        cv2.rectangle(mask, (int(px - 6 * s), y0), (int(px + 2 * s), int(y0 + 4 * s)), 255, -1)
        img[mask > 0] = (200, 205, 210)
    elif defect == "scratch":
        p1 = (int(rng.uniform(20, 230) * s), int(rng.uniform(100, 240) * s))
        ang = rng.uniform(0, np.pi)
        L = rng.uniform(25, 45) * s
        p2 = (int(p1[0] + L * np.cos(ang)), int(p1[1] + L * np.sin(ang)))
        cv2.line(mask, p1, p2, 255, max(1, int(1.5 * s)))
        img[mask > 0] = img[mask > 0] * 0.4 + 150
    # pose: a small shift and turn of the board under the camera
    M = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-3, 3), 1.0)
    M[:, 2] += rng.uniform(-0.03, 0.03, 2) * (w, h)
    img = cv2.warpAffine(img, M, (w, h), borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpAffine(mask, M, (w, h), flags=cv2.INTER_NEAREST)
    return img, mask


def product(
    kind: str,
    seed: int,
    i: int,
    defect: str | None = None,
    size: tuple[int, int] = (256, 256),
    grey: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(frame (BGR uint8, or grey), mask uint8) of one product image."""
    rng = np.random.default_rng(
        [KINDS.index(kind), seed, i, 0 if defect is None else 1 + DEFECTS[kind].index(defect)]
    )
    img, mask = {"leather": _leather, "cap": _cap, "pcb": _pcb}[kind](rng, size, defect)
    return _finish(img, rng, grey), mask


def write_product(
    root: Path,
    kind: str,
    n_train: int,
    n_good: int,
    n_ng: int,
    seed: int = 0,
    size: tuple[int, int] = (256, 256),
    grey: bool = False,
    ext: str = ".png",
) -> Path:
    """An MVTec AD folder of ``kind``: n_train good to train, n_good good and n_ng defective (each defect
    kind in turn) to test, with masks."""
    root = Path(root)
    for sub in ("train/good", "test/good"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        cv2.imwrite(str(root / "train/good" / f"{i:03d}{ext}"), product(kind, seed, i, None, size, grey)[0])
    for i in range(n_good):
        cv2.imwrite(
            str(root / "test/good" / f"{i:03d}{ext}"), product(kind, seed, 10_000 + i, None, size, grey)[0]
        )
    for i in range(n_ng):
        d = DEFECTS[kind][i % len(DEFECTS[kind])]
        img, mask = product(kind, seed, 20_000 + i, d, size, grey)
        (root / "test" / d).mkdir(parents=True, exist_ok=True)
        (root / "ground_truth" / d).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "test" / d / f"{i:03d}{ext}"), img)
        cv2.imwrite(str(root / "ground_truth" / d / f"{i:03d}_mask.png"), mask)
    return root


def framed(
    kind: str,
    seed: int,
    i: int,
    defect: str | None,
    side: int,
    frame: tuple[int, int],
    at: tuple[int, int],
    grey: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The product (``side`` px) at ``at`` (x, y) in a larger camera frame (h, w) of a fixture: brushed
    dark metal with a bright clamp at each side, which the product's own defects never touch."""
    img, mask = product(kind, seed, i, defect, (side, side), grey)
    rng = np.random.default_rng([seed, i, 99])
    h, w = frame
    base = 70 + cv2.GaussianBlur(rng.normal(0, 8, (h, w)).astype(np.float32), (0, 0), sigmaX=12, sigmaY=0.8)
    base = np.clip(base + rng.normal(0, 3, (h, w)), 0, 255).astype(np.uint8)
    out = base if grey else cv2.cvtColor(base, cv2.COLOR_GRAY2BGR)
    x, y = at
    cv2.rectangle(out, (x - 30, y + side // 3), (x - 4, y + 2 * side // 3), (200,) * (1 if grey else 3), -1)
    cv2.rectangle(
        out,
        (x + side + 4, y + side // 3),
        (x + side + 30, y + 2 * side // 3),
        (200,) * (1 if grey else 3),
        -1,
    )
    out[y : y + side, x : x + side] = img
    full = np.zeros((h, w), np.uint8)
    full[y : y + side, x : x + side] = mask
    return out, full
