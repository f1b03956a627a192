"""Part images for vision inspection: a machined flange on a conveyor, with or without a defect.

Each part is a bright brushed-metal disc with a centre bore and four bolt holes, photographed
from above on a dark belt, under varying light, with pose jitter (offset, rotation, scale) and
sensor noise. A defective part carries exactly one of:

    scratch       a thin bright or dark line across the face
    dent          a shaded elliptical depression (dark core, bright rim on the light side)
    crack         a jagged dark polyline running in from the rim
    missing_hole  one bolt hole not drilled
    stain         a translucent brownish irregular blob

with its ground-truth mask and bounding box. Everything is a pure function of (seed, index), so a
dataset and a camera stream with the same seed show the same parts. ``difficulty`` (default 1.0)
scales defect size and contrast down as it grows (2.0 = half the contrast, smaller defects).

    gen = PartGenerator(seed=0, width=128, height=128, defect_rate=0.3)
    part = gen.next()        # Part(image BGR uint8, label, defect, bbox, mask, part_id)

``edge-sim dataset parts --out DIR --count N`` writes ``images/*.png``, ``masks/*.png``,
``labels.jsonl`` ({id, file, label, defect, bbox, mask}) and ``dataset.yaml``.

Limits: one defect per part; the part and belt never change type; no motion blur.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ["ok", "scratch", "dent", "crack", "missing_hole", "stain"]
DEFECTS = CLASSES[1:]
GENERATOR_VERSION = "parts-1"
SURFACES = ["brushed", "cast"]  # the disc's finish: brushed (default, the classifier's data) or cast


class PartsError(ValueError):
    pass


@dataclass(frozen=True)
class Part:
    part_id: str
    index: int
    image: np.ndarray  # BGR uint8 HxWx3
    label: str  # one of CLASSES
    mask: np.ndarray | None  # uint8 HxW, 255 where the defect is
    bbox: tuple[int, int, int, int] | None  # x, y, w, h

    @property
    def defect(self) -> bool:
        return self.label != "ok"


class PartGenerator:
    def __init__(
        self,
        seed: int = 0,
        width: int = 128,
        height: int = 128,
        defect_rate: float = 0.3,
        difficulty: float = 1.0,
        classes: list[str] | None = None,
        surface: str = "brushed",
    ) -> None:
        if width < 32 or height < 32:
            raise PartsError(f"image size {width}x{height} is too small; use at least 32x32")
        if not 0.0 <= defect_rate <= 1.0:
            raise PartsError(f"defect_rate must be within [0, 1], got {defect_rate}")
        if difficulty <= 0:
            raise PartsError(f"difficulty must be > 0, got {difficulty}")
        self.seed, self.width, self.height = int(seed), int(width), int(height)
        self.defect_rate, self.difficulty = float(defect_rate), float(difficulty)
        self.defects = [c for c in (classes or DEFECTS) if c != "ok"]
        unknown = set(self.defects) - set(DEFECTS)
        if unknown:
            raise PartsError(f"unknown defect classes {sorted(unknown)}; known: {DEFECTS}")
        if surface not in SURFACES:
            raise PartsError(f"unknown surface {surface!r}; known: {SURFACES}")
        self.surface = surface
        self.index = 0

    def next(self) -> Part:
        part = self.make(self.index)
        self.index += 1
        return part

    def make(self, index: int, label: str | None = None) -> Part:
        import cv2

        rng = np.random.default_rng([self.seed, index])
        if label is None:
            label = (
                "ok"
                if rng.random() >= self.defect_rate or not self.defects
                else str(rng.choice(self.defects))
            )
        w, h = self.width, self.height
        s = min(w, h) / 128.0  # geometry is designed at 128 px and scaled
        img = self._belt(rng, w, h)
        cx = w / 2 + rng.uniform(-6, 6) * s
        cy = h / 2 + rng.uniform(-6, 6) * s
        r = rng.uniform(40, 46) * s
        rot = rng.uniform(0, math.pi / 2)
        light = rng.uniform(0.85, 1.15)
        light_dir = rng.uniform(0, 2 * math.pi)

        # brushed metal disc with a radial light gradient
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2) <= r * r
        grad = 0.5 + 0.5 * ((xx - cx) * math.cos(light_dir) + (yy - cy) * math.sin(light_dir)) / (2 * r)
        if self.surface == "brushed":
            texture = rng.normal(0, 4, (1, w)).astype(np.float32).repeat(h, 0)
        else:  # "cast": isotropic sand-blasted grain, darker, with soft mottling
            grain = rng.normal(0, 6, (h, w)).astype(np.float32)
            mottle = cv2.GaussianBlur(rng.normal(0, 40, (h, w)).astype(np.float32), (0, 0), 6 * s)
            texture = cv2.GaussianBlur(grain, (0, 0), 0.8) + mottle - 25
        metal = (165 + 45 * grad + texture) * light
        for c, tint in enumerate((1.0, 1.0, 0.97)):
            img[..., c] = np.where(disc, metal * tint, img[..., c])
        cv2.circle(img, (int(cx), int(cy)), int(r), (120 * light,) * 3, max(1, int(1.5 * s)), cv2.LINE_AA)
        # centre bore
        cv2.circle(img, (int(cx), int(cy)), int(12 * s), (35, 35, 38), -1, cv2.LINE_AA)
        cv2.circle(img, (int(cx), int(cy)), int(12 * s), (95, 95, 100), max(1, int(s)), cv2.LINE_AA)
        holes = [
            (cx + 28 * s * math.cos(rot + k * math.pi / 2), cy + 28 * s * math.sin(rot + k * math.pi / 2))
            for k in range(4)
        ]
        missing = int(rng.integers(0, 4)) if label == "missing_hole" else -1
        for k, (hx, hy) in enumerate(holes):
            if k != missing:
                cv2.circle(img, (int(hx), int(hy)), max(2, int(5 * s)), (30, 30, 33), -1, cv2.LINE_AA)

        mask = np.zeros((h, w), np.uint8)
        contrast = 1.0 / self.difficulty
        size = 1.0 / math.sqrt(self.difficulty)
        if label == "scratch":
            ang = rng.uniform(0, math.pi)
            length = rng.uniform(0.6, 1.1) * r * size
            off = rng.uniform(-0.45, 0.45) * r
            mx, my = cx + off * math.cos(ang + math.pi / 2), cy + off * math.sin(ang + math.pi / 2)
            p1 = (int(mx - length / 2 * math.cos(ang)), int(my - length / 2 * math.sin(ang)))
            p2 = (int(mx + length / 2 * math.cos(ang)), int(my + length / 2 * math.sin(ang)))
            tone = 255 if rng.random() < 0.5 else 70
            cv2.line(mask, p1, p2, 255, max(2, int(2 * s)), cv2.LINE_AA)
            self._blend(img, mask, (tone, tone, tone), 0.85 * contrast)
        elif label == "dent":
            a = rng.uniform(0.2, 0.55) * r
            dx, dy = cx + a * math.cos(rng.uniform(0, 6.3)), cy + a * math.sin(rng.uniform(0, 6.3))
            ax = (max(3, int(rng.uniform(6, 10) * s * size)), max(2, int(rng.uniform(4, 7) * s * size)))
            ang = float(rng.uniform(0, 180))
            cv2.ellipse(mask, (int(dx), int(dy)), ax, ang, 0, 360, 255, -1, cv2.LINE_AA)
            self._blend(img, mask, (60, 60, 65), 0.7 * contrast)
            rim = np.zeros_like(mask)
            cv2.ellipse(
                rim,
                (int(dx + 2 * math.cos(light_dir)), int(dy + 2 * math.sin(light_dir))),
                ax,
                ang,
                0,
                360,
                255,
                max(1, int(s)),
                cv2.LINE_AA,
            )
            self._blend(img, rim, (250, 250, 250), 0.6 * contrast)
        elif label == "crack":
            ang = rng.uniform(0, 2 * math.pi)
            pts = [(cx + r * math.cos(ang), cy + r * math.sin(ang))]
            depth = rng.uniform(0.35, 0.6) * r * size
            steps = 6
            for i in range(1, steps + 1):
                d = r - depth * i / steps
                jitter = rng.uniform(-0.18, 0.18)
                pts.append((cx + d * math.cos(ang + jitter), cy + d * math.sin(ang + jitter)))
            cv2.polylines(mask, [np.array(pts, np.int32)], False, 255, max(2, int(1.6 * s)), cv2.LINE_AA)
            self._blend(img, mask, (25, 25, 28), 0.9 * contrast)
        elif label == "missing_hole":
            hx, hy = holes[missing]
            cv2.circle(mask, (int(hx), int(hy)), max(3, int(7 * s)), 255, -1)
        elif label == "stain":
            a = rng.uniform(0.1, 0.6) * r
            sx, sy = cx + a * math.cos(rng.uniform(0, 6.3)), cy + a * math.sin(rng.uniform(0, 6.3))
            n = 7
            radii = rng.uniform(5, 11, n) * s * size
            poly = [
                (sx + radii[i] * math.cos(2 * math.pi * i / n), sy + radii[i] * math.sin(2 * math.pi * i / n))
                for i in range(n)
            ]
            cv2.fillPoly(mask, [np.array(poly, np.int32)], 255, cv2.LINE_AA)
            self._blend(img, mask, (40, 80, 120), 0.55 * contrast)  # BGR brown
        if label != "ok":
            mask = np.where(disc, mask, 0).astype(np.uint8) if label != "crack" else mask

        img += rng.normal(0, 3.0, img.shape).astype(np.float32)
        image = np.clip(img, 0, 255).astype(np.uint8)
        bbox = None
        m = None
        if label != "ok":
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:  # the defect fell outside the disc: make it again, deterministically
                return self.make(index + 1_000_000, label)
            bbox = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
            m = mask
        return Part(f"p{self.seed}-{index:06d}", index, image, label, m, bbox)

    @staticmethod
    def _belt(rng, w: int, h: int) -> np.ndarray:
        base = rng.uniform(45, 60)
        img = np.full((h, w, 3), base, np.float32)
        stripes = (np.sin(np.arange(w, dtype=np.float32) / 3.0 + rng.uniform(0, 6)) * 3).astype(np.float32)
        img += stripes[None, :, None]
        return img

    @staticmethod
    def _blend(img: np.ndarray, mask: np.ndarray, color, alpha: float) -> None:
        a = (mask.astype(np.float32) / 255.0 * min(1.0, alpha))[..., None]
        img[:] = img * (1 - a) + np.asarray(color, np.float32)[None, None, :] * a


# -- dataset ------------------------------------------------------------------------------------


def write_dataset(
    out_dir: Path,
    count: int,
    seed: int = 0,
    size: int = 128,
    defect_rate: float = 0.5,
    difficulty: float = 1.0,
) -> Path:
    """Write images/*.png, masks/*.png, labels.jsonl and dataset.yaml (with a content digest)."""
    import cv2
    import yaml

    if count < 1:
        raise PartsError(f"count must be >= 1, got {count}")
    gen = PartGenerator(seed, size, size, defect_rate, difficulty)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(exist_ok=True)
    digest = hashlib.sha256()
    counts = dict.fromkeys(CLASSES, 0)
    with open(out_dir / "labels.jsonl", "w") as labels:
        for _ in range(count):
            p = gen.next()
            name = f"{p.part_id}.png"
            ok, png = cv2.imencode(".png", p.image)
            (out_dir / "images" / name).write_bytes(png.tobytes())
            digest.update(png.tobytes())
            mask_file = None
            if p.mask is not None:
                mask_file = f"masks/{name}"
                cv2.imwrite(str(out_dir / mask_file), p.mask)
            row = {
                "id": p.part_id,
                "file": f"images/{name}",
                "label": p.label,
                "defect": p.defect,
                "bbox": list(p.bbox) if p.bbox else None,
                "mask": mask_file,
            }
            labels.write(json.dumps(row) + "\n")
            digest.update(json.dumps(row, sort_keys=True).encode())
            counts[p.label] += 1
    meta = {
        "kind": "parts",
        "classes": CLASSES,
        "count": count,
        "counts": counts,
        "seed": seed,
        "width": size,
        "height": size,
        "defect_rate": defect_rate,
        "difficulty": difficulty,
        "generator": GENERATOR_VERSION,
        "digest": "sha256:" + digest.hexdigest(),
    }
    (out_dir / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return out_dir


def dataset_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="edge-sim dataset parts", description=write_dataset.__doc__)
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--count", type=int, default=2000, help="number of parts (default 2000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=128, help="image width and height in pixels (default 128)")
    ap.add_argument(
        "--defect-rate", type=float, default=0.5, help="fraction of defective parts (default 0.5)"
    )
    ap.add_argument("--difficulty", type=float, default=1.0, help="> 1 makes defects smaller and fainter")
    a = ap.parse_args(argv)
    try:
        out = write_dataset(a.out, a.count, a.seed, a.size, a.defect_rate, a.difficulty)
    except PartsError as e:
        print(f"edge-sim dataset parts: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out), "count": a.count}))
    return 0
