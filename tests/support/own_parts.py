"""Part images made independently of ``simulators/parts.py``, from ``docs/camera-and-parts.md``'s
contract only: a machined flange (disc, centre bore, four bolt holes) on a dark belt; good parts and
parts with one ``scratch``, ``dent``, ``crack``, ``missing_hole`` or ``stain``, each with its mask.

Everything else differs on purpose from the project's simulator: the surface finish (brushed,
turned or cast, chosen per part), the light (gain, colour temperature, a gradient from any side,
vignetting, plus ``light_shift`` for another day's lamp), the pose (offset, scale, rotation, a slight
ellipse for a tilted camera), sensor noise, blur, JPEG, and small, faint defects. Deterministic in
``(seed, index)``. Tests use it to check that the trainer learns the *contract*, not our simulator.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

DEFECTS = ("scratch", "dent", "crack", "missing_hole", "stain")
# defects on the part's edge (not the contract's kinds; the bench's rim set): a scratch along the rim just
# inside it, a chip out of the rim (the belt shows), a burr standing out of it, the chamfer missing over an arc
RIM_DEFECTS = ("rim_scratch", "chipped_rim", "burr", "missing_chamfer")


def _finish(rng, size: int, kind: str, angle: float) -> np.ndarray:
    """A zero-mean surface texture of the given finish, about +-1."""
    import cv2

    noise = rng.standard_normal((size, size)).astype(np.float32)
    if kind == "brushed":  # streaks along one direction
        k = np.zeros((15, 15), np.float32)
        k[7, :] = 1.0 / 15
        rot = cv2.getRotationMatrix2D((7, 7), math.degrees(angle), 1.0)
        k = cv2.warpAffine(k, rot, (15, 15))
        t = cv2.filter2D(noise, -1, k / max(k.sum(), 1e-6))
    elif kind == "turned":  # concentric lathe rings
        yy, xx = np.mgrid[:size, :size].astype(np.float32) - size / 2
        r = np.sqrt(xx * xx + yy * yy)
        t = np.sin(r * rng.uniform(0.8, 1.6)) * 0.6 + cv2.GaussianBlur(noise, (0, 0), 1.0)
    else:  # cast: blotchy
        t = cv2.GaussianBlur(noise, (0, 0), rng.uniform(2.0, 4.0))
    return (t / (t.std() + 1e-6)).astype(np.float32)


MIN_DEFECT_PX = 6  # a defect's least pixels on the metal, at 200 px (scaled with the image's area)


def _defect(rng, defect, img, mask, u, v, r, metal, cx, cy, ct, st, squash):
    """``(image, mask)`` with ``defect`` drawn on copies of them (the metal only), or None for a defect
    drawn before the finish (a missing hole) or none."""
    import cv2

    s = img.shape[0]
    if defect in ("scratch", "crack"):
        img, mask = img.copy(), mask.copy()
        layer = np.zeros((s, s), np.uint8)
        if defect == "scratch":
            a = rng.uniform(0, math.pi)
            length = r * rng.uniform(0.25, 0.6)
            px, py = rng.uniform(-0.45, 0.45, 2) * r
            p0 = (px - math.cos(a) * length / 2, py - math.sin(a) * length / 2)
            p1 = (px + math.cos(a) * length / 2, py + math.sin(a) * length / 2)
            pts = [p0, p1]
        else:  # a jagged crack from the rim inwards
            a = rng.uniform(0, 2 * math.pi)
            pts, cur = [], (math.cos(a) * r * 0.98, math.sin(a) * r * 0.98)
            for _ in range(int(rng.integers(4, 7))):
                pts.append(cur)
                a2 = a + math.pi + rng.uniform(-0.6, 0.6)
                step = r * rng.uniform(0.06, 0.12)
                cur = (cur[0] + math.cos(a2) * step, cur[1] + math.sin(a2) * step)
            pts.append(cur)
        to_img = [(cx + (p[0] * ct - p[1] * squash * st), cy + (p[0] * st + p[1] * squash * ct)) for p in pts]
        poly = np.round(np.asarray(to_img)).astype(np.int32)
        cv2.polylines(layer, [poly], False, 255, int(rng.integers(1, 3)) if defect == "scratch" else 1)
        layer &= metal.astype(np.uint8) * 255
        if defect == "scratch":
            delta = rng.choice([-1, 1]) * rng.uniform(30, 60)
        else:
            delta = -rng.uniform(50, 90)
        on = layer > 0
        img[on] += delta
        mask |= layer
        return img, mask
    if defect == "dent":
        img, mask = img.copy(), mask.copy()
        a, rr = rng.uniform(0, 2 * math.pi), r * rng.uniform(0.35, 0.8)
        ex, ey = math.cos(a) * rr * 0.9, math.sin(a) * rr * 0.9
        dr = r * rng.uniform(0.06, 0.11)
        d2 = ((u - ex) ** 2 + (v - ey) ** 2) / dr**2
        inside = (d2 <= 1) & metal
        shade = ((u - ex) * math.cos(a + 1) + (v - ey) * math.sin(a + 1)) / dr  # lit on one side
        img[inside] += (shade[inside] * rng.uniform(25, 45))[:, None]
        mask[inside] = 255
        return img, mask
    if defect == "stain":
        mask = mask.copy()
        blob = np.zeros((s, s), np.float32)
        sx, sy = rng.uniform(-0.5, 0.5, 2) * r
        for _ in range(int(rng.integers(3, 6))):
            ox, oy = rng.uniform(-0.08, 0.08, 2) * r
            br = r * rng.uniform(0.05, 0.11)
            blob = np.maximum(blob, np.clip(1 - ((u - sx - ox) ** 2 + (v - sy - oy) ** 2) / br**2, 0, 1))
        blob = cv2.GaussianBlur(blob, (0, 0), 1.5) * metal
        colour = np.asarray(
            [rng.uniform(20, 50), rng.uniform(45, 75), rng.uniform(70, 110)], np.float32
        )  # BGR brown
        alpha = blob[:, :, None] * rng.uniform(0.45, 0.7)
        img = img * (1 - alpha) + colour * alpha
        mask[blob > 0.25] = 255
        return img, mask
    return None


def make_part(
    seed: int,
    index: int,
    size: int = 200,
    defect: str | None = None,
    light_shift: float = 0.0,
    jpeg: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One BGR uint8 image and its defect mask (uint8 0/255; empty for a good part)."""
    import cv2

    rng = np.random.default_rng([seed, index, 7331])
    s = size
    # the belt: dark, slightly coloured, with a fabric weave
    belt = rng.uniform(18, 48)
    tint = rng.uniform(0.85, 1.15, 3)
    img = np.empty((s, s, 3), np.float32)
    weave = np.sin(np.arange(s, dtype=np.float32) * rng.uniform(0.9, 1.4))[:, None] * 3
    for c in range(3):
        img[:, :, c] = belt * tint[c] + weave
    # the part: pose
    cx = s / 2 + rng.uniform(-0.07, 0.07) * s
    cy = s / 2 + rng.uniform(-0.07, 0.07) * s
    r = s * rng.uniform(0.31, 0.38)
    theta = rng.uniform(0, 2 * math.pi)
    squash = rng.uniform(0.93, 1.0)  # camera tilt: a slight ellipse
    yy, xx = np.mgrid[:s, :s].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    ct, st = math.cos(theta), math.sin(theta)
    u, v = dx * ct + dy * st, (-dx * st + dy * ct) / squash
    rad = np.sqrt(u * u + v * v)
    disc = rad <= r
    bore = rad <= r * rng.uniform(0.2, 0.28)
    holes = np.zeros((s, s), bool)
    hole_r = r * rng.uniform(0.08, 0.11)
    centres = []
    for k in range(4):
        a = k * math.pi / 2 + math.pi / 4
        hx, hy = 0.64 * r * math.cos(a), 0.64 * r * math.sin(a)
        centres.append((hx, hy))
        holes |= (u - hx) ** 2 + (v - hy) ** 2 <= hole_r**2
    mask = np.zeros((s, s), np.uint8)
    if defect == "missing_hole":
        k = int(rng.integers(4))
        hx, hy = centres[k]
        this = (u - hx) ** 2 + (v - hy) ** 2 <= hole_r**2
        holes &= ~this
        mask[this] = 255
    metal = disc & ~bore & ~holes
    finish = str(rng.choice(["brushed", "turned", "cast"]))
    base = rng.uniform(120, 200)
    surf = base + _finish(rng, s, finish, rng.uniform(0, math.pi)) * rng.uniform(4, 10)
    rim = np.clip((rad - (r - 4)) / 4, 0, 1)  # a chamfer darker at the edge
    if defect in RIM_DEFECTS:  # where on the rim, over which arc (from the part's axis)
        arc = np.abs(np.angle(np.exp(1j * (np.arctan2(v, u) - rng.uniform(-math.pi, math.pi)))))
        arc_w = math.radians(rng.uniform(20, 60)) / 2
        if defect == "missing_chamfer":
            gone = disc & (rad > r - 4) & (arc <= arc_w)
            rim = np.where(gone, 0.0, rim)
            mask[gone & metal] = 255
    surf = surf * (1 - 0.35 * rim)
    metal_tint = rng.uniform(0.95, 1.05, 3)
    for c in range(3):
        img[:, :, c] = np.where(metal, surf * metal_tint[c], img[:, :, c])
    # defects, on the metal only: one that fell on the bore, a hole or off the part (an empty or nearly
    # empty mask) is drawn again elsewhere, so that a part labelled defective shows its defect (a stain wholly
    # inside the bore was a good part under a defect's label); the first draw takes the same random numbers
    # as before, so every part whose defect landed on the metal is the image it was
    least = max(2, round(MIN_DEFECT_PX * (s / 200) ** 2))
    at = s / 200  # pixels per pixel at 200 px
    if defect == "rim_scratch":  # a thin arc a few pixels inside the rim, brighter or darker
        depth = rng.uniform(1.5, 4) * at
        line = metal & (np.abs(rad - (r - depth)) <= 0.6 * max(at, 1)) & (arc <= arc_w)
        img[line] += rng.choice([-1.0, 1.0]) * rng.uniform(25, 60)
        mask[line] = 255
    elif defect in ("chipped_rim", "burr"):  # a bite out of the rim, or metal standing out of it
        a0 = float(np.arctan2(v, u)[arc == arc.min()][0])
        side = 1.0 if defect == "burr" else -0.3
        px, py = (r + side * 2 * at) * math.cos(a0), (r + side * 2 * at) * math.sin(a0)
        bite = (u - px) ** 2 + (v - py) ** 2 <= (rng.uniform(2.5, 5) * at) ** 2
        if defect == "chipped_rim":
            bite &= metal
            img[bite] = np.median(img[~disc], axis=0)
        else:
            bite &= ~disc
            img[bite] = (surf[bite] * (1 - 0.35))[:, None] * metal_tint
        mask[bite] = 255
    for _ in range(50 if defect not in RIM_DEFECTS else 0):
        drawn = _defect(rng, defect, img, mask, u, v, r, metal, cx, cy, ct, st, squash)
        if drawn is None or int(np.count_nonzero(drawn[1])) >= least:
            break
    if defect not in RIM_DEFECTS and drawn is not None:
        img, mask = drawn
    # light: gain, colour temperature, a gradient from any side, vignetting; then another day's lamp
    gain = rng.uniform(0.85, 1.15) * (1 + light_shift * rng.uniform(-1, 1))
    temp = rng.uniform(-0.06, 0.06) + light_shift * rng.uniform(-0.1, 0.1)
    ga = rng.uniform(0, 2 * math.pi)
    grad = (
        1
        + rng.uniform(0, 0.15 + 0.2 * light_shift)
        * ((xx - s / 2) * math.cos(ga) + (yy - s / 2) * math.sin(ga))
        / s
    )
    vign = 1 - rng.uniform(0, 0.2) * ((xx - s / 2) ** 2 + (yy - s / 2) ** 2) / (s * s / 2)
    light = (gain * grad * vign)[:, :, None] * np.asarray([1 - temp, 1.0, 1 + temp], np.float32)
    img = img * light
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 0.9))
    img += rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(1.5, 5)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if jpeg and rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 95))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out, mask


def write_folders(
    out: Path,
    seed: int,
    n: int,
    size: int = 200,
    defect_rate: float = 0.5,
    good: str = "good",
    light_shift: float = 0.0,
    masks: Path | None = None,
) -> dict[str, int]:
    """``out/<class>/*.png`` (a folder per class; the good class named ``good``); optionally each
    defect's mask as ``masks/<class>/<name>.png``. Returns the count per class."""
    import cv2

    rng = np.random.default_rng([seed, 99])
    counts: dict[str, int] = {}
    for i in range(n):
        label = str(rng.choice(DEFECTS)) if rng.random() < defect_rate else good
        img, mask = make_part(seed, i, size, None if label == good else label, light_shift)
        (out / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / label / f"part{i:05d}.png"), img)
        if masks is not None and label != good:
            (masks / label).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(masks / label / f"part{i:05d}.png"), mask)
        counts[label] = counts.get(label, 0) + 1
    return counts
