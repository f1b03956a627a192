"""Full-size (1280x1024) frames of machined surfaces with thin scratches, for issue 13's small-defect bar.

Made for bench/anomaly_scratch_bench.py, independent of ``simulators/`` and of
``tests/support/bracket_frames.py`` (other finishes, other light, other defects' drawing): the
surface fills the frame, as a camera looking at a machined face does.

- ``turned``: a face-turned surface, concentric tool marks (pitch 3-5 px) around a centre off the
  frame, their depth modulated along the circle (chatter), fine grain over it, a slow mottle;
- ``honed``: a honed or ground surface, two families of straight lines crossing at ±25-35° (plateau
  honing), an isotropic speckle between them and a few shallow long grinding streaks (normal: present
  in good frames too).

Light: lamp gain, a gradient from any side, vignetting, a colour cast; ``shift=True`` draws them from a
wider range (a lamp that has aged or been moved: the "lighting shift" of the issue's bar). Sensor noise
2-4 grey levels, JPEG (quality 80-95) for half of the frames. The surface's texture (pitch, centre,
line angles) is the product's and stays fixed for a ``seed``; each frame's grain and light are its own.

A scratch: a slightly curved line 1-3 px wide and 20-80 px long at any angle and place, brighter
(the edge of a groove catching the light) or darker than the surface by 18-45 grey levels, drawn
anti-aliased at sub-pixel precision; its mask is where it changes the frame by a quarter of its
contrast or more. Deterministic in ``(seed, index)``.
"""

from __future__ import annotations

import math

import numpy as np

KINDS = ("turned", "honed")


def _product(seed: int, kind: str) -> dict:
    """The product's fixed texture parameters (the same part in every frame of a seed)."""
    rng = np.random.default_rng([seed, 1313, KINDS.index(kind)])
    return {
        "pitch": rng.uniform(3.0, 5.0),
        "centre": (rng.uniform(-900, -300), rng.uniform(-600, 1600)),
        "angles": (rng.uniform(25, 35), -rng.uniform(25, 35)),
        "base": rng.uniform(115, 150),
        "tint": rng.uniform(0.94, 1.04, 3),
    }


def surface(rng: np.random.Generator, p: dict, kind: str, w: int, h: int) -> np.ndarray:
    import cv2

    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    grain = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.7)
    grain /= grain.std() + 1e-6
    mottle = cv2.resize(rng.standard_normal((h // 80 + 2, w // 80 + 2)).astype(np.float32), (w, h))
    if kind == "turned":
        cx, cy = p["centre"]
        r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        theta = np.arctan2(yy - cy, xx - cx)
        chatter = 1 + 0.35 * np.sin(theta * rng.uniform(180, 260) + rng.uniform(0, 6.3))
        marks = np.sin(2 * math.pi * r / p["pitch"] + rng.uniform(0, 6.3)) * chatter
        s = p["base"] + 9 * marks + 5 * grain + 4 * mottle
    else:
        s = p["base"] + 6 * grain + 4 * mottle
        for ang in p["angles"]:
            a = math.radians(ang)
            u = xx * math.cos(a) + yy * math.sin(a)
            # irregular lines: a sum of a few random pitches
            lines = sum(np.sin(2 * math.pi * u / pt + rng.uniform(0, 6.3)) for pt in rng.uniform(5, 11, 3))
            s += 2.5 * lines
        for _ in range(int(rng.integers(1, 4))):  # shallow long grinding streaks (normal)
            a = rng.uniform(0, math.pi)
            d = (xx - rng.uniform(0, w)) * math.sin(a) - (yy - rng.uniform(0, h)) * math.cos(a)
            s += rng.uniform(-6, 6) * np.exp(-(d**2) / (2 * rng.uniform(4, 12) ** 2))
    return s


def frame(
    seed: int,
    index: int,
    kind: str = "turned",
    scratch: bool = False,
    shift: bool = False,
    width: int = 1280,
    height: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """One BGR uint8 frame and its scratch mask (uint8 0/255, empty without a scratch)."""
    import cv2

    w, h = width, height
    p = _product(seed, kind)
    rng = np.random.default_rng([seed, index, 7331, KINDS.index(kind), int(scratch), int(shift)])
    img = surface(rng, p, kind, w, h)
    mask = np.zeros((h, w), np.uint8)
    if scratch:
        sub = 16  # cv2's sub-pixel shift (4 bits)
        length = rng.uniform(20, 80)
        width_px = rng.uniform(1.0, 3.0)
        a = rng.uniform(0, math.pi)
        bend = rng.uniform(-0.15, 0.15)
        cx, cy = rng.uniform(30, w - 30), rng.uniform(30, h - 30)
        n = 8
        pts = []
        for k in range(n + 1):
            t = (k / n - 0.5) * length
            off = bend * (t * t / length - length / 4)
            pts.append((cx + t * math.cos(a) - off * math.sin(a), cy + t * math.sin(a) + off * math.cos(a)))
        layer = np.zeros((h, w), np.float32)
        q = np.round(np.asarray(pts) * sub).astype(np.int32)
        cv2.polylines(layer, [q], False, 1.0, max(1, int(round(width_px))), cv2.LINE_AA, 4)
        layer = cv2.GaussianBlur(layer, (0, 0), 0.4 + 0.2 * width_px)
        layer /= max(1e-6, float(layer.max()))
        contrast = rng.choice([-1.0, 1.0]) * rng.uniform(18, 45)
        img = img + contrast * layer
        mask[layer >= 0.25] = 255
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    g, grad, vig = (0.7, 0.3, 0.25) if shift else (0.9, 0.12, 0.12)
    ga = rng.uniform(0, 2 * math.pi)
    light = rng.uniform(g, 2 - g) * (
        1 + rng.uniform(-grad, grad) * ((xx - w / 2) * math.cos(ga) + (yy - h / 2) * math.sin(ga)) / w
    )
    light *= 1 - rng.uniform(0, vig) * ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w * w / 4)
    cast = p["tint"] * rng.uniform(0.97, 1.03, 3) if not shift else p["tint"] * rng.uniform(0.92, 1.08, 3)
    bgr = (img * light)[..., None] * cast[None, None, :]
    bgr = bgr + rng.normal(0, rng.uniform(2, 4), bgr.shape)
    out = np.clip(bgr, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out, mask
