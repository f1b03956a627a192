"""Camera frames of a line, and the faults a line's camera gives, made independently of the project's
simulator and of ``own_parts``/``plates``: a brass hex fitting with a bore and a brushed (directional)
finish on a dark woven belt, seen from above at 160x120, under ordinary variation (exposure within
+-12 %, a slow light gradient, a few px of placement, any turn of the hex, its own brushing, sensor
noise); and ``FAULTS``: what a line's camera really does (focus drift, motion blur along the belt, a
smudged lens, fog, glare, mains flicker on a rolling shutter, exposure hunting, a bumped camera, an
empty belt, two parts, a hand, another product, sensor noise, a mono camera, a wrong white balance,
JPEG at q=20). Deterministic in ``(seed, index)``."""

from __future__ import annotations

import math

import numpy as np

W, H = 160, 120
BRASS = np.array([70.0, 150.0, 190.0])  # BGR
BELT = np.array([58.0, 52.0, 48.0])


def _rng(seed: int, index: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, index, salt, 2311])


def _belt(rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    import cv2

    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    weave = 5.0 * np.sin(2 * math.pi * (xx + shift) / 6.0) * np.sin(2 * math.pi * yy / 6.0)
    grit = cv2.GaussianBlur(rng.normal(0, 6, (H, W)).astype(np.float32), (0, 0), 1.0)
    return BELT[None, None, :] + (weave + grit)[..., None]


def _hex_mask(cx: float, cy: float, r: float, turn: float, scale: float = 1.0) -> np.ndarray:
    import cv2

    pts = np.array(
        [
            (
                cx + r * scale * math.cos(turn + k * math.pi / 3),
                cy + r * scale * math.sin(turn + k * math.pi / 3),
            )
            for k in range(6)
        ]
    )
    m = np.zeros((H, W), np.uint8)
    cv2.fillConvexPoly(m, np.round(pts * 16).astype(np.int32), 255, cv2.LINE_AA, 4)
    cv2.circle(m, (int(cx * 16), int(cy * 16)), int(r * scale * 0.42 * 16), 0, -1, cv2.LINE_AA, 4)
    return m.astype(np.float32) / 255


def _brushed(rng: np.random.Generator, angle: float) -> np.ndarray:
    import cv2

    n = rng.normal(0, 14, (H, W)).astype(np.float32)
    k = np.zeros((15, 15), np.float32)
    k[7, :] = 1 / 15
    rot = cv2.getRotationMatrix2D((7, 7), math.degrees(angle), 1.0)
    k = cv2.warpAffine(k, rot, (15, 15))
    return cv2.filter2D(n, -1, k / max(k.sum(), 1e-6))


def _put_part(img, rng, cx, cy, turn, scale=1.0, colour=BRASS, defect=None):
    import cv2

    m = _hex_mask(cx, cy, 34, turn, scale)
    tex = _brushed(rng, turn)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    shade = 1.0 + 0.12 * ((xx - cx) * 0.7 - (yy - cy)) / 34  # a bevel lit from the upper left
    part = colour[None, None, :] * shade[..., None] + tex[..., None]
    img[:] = img * (1 - m[..., None]) + part * m[..., None]
    mask = np.zeros((H, W), np.uint8)
    if defect is not None:
        a = rng.uniform(0, 2 * math.pi)
        d = rng.uniform(20, 28) * scale
        x, y = int(cx + d * math.cos(a)), int(cy + d * math.sin(a))
        if defect == "dent":
            cv2.circle(mask, (x, y), 3, 255, -1)
            img[mask > 0] *= 0.45
        else:  # scratch
            b = rng.uniform(0, math.pi)
            p1 = (int(x - 9 * math.cos(b)), int(y - 9 * math.sin(b)))
            p2 = (int(x + 9 * math.cos(b)), int(y + 9 * math.sin(b)))
            cv2.line(mask, p1, p2, 255, 1)
            img[mask > 0] = (235, 240, 240)
    return m, mask


def good(seed: int, index: int, defect: str | None = None) -> np.ndarray:
    """A frame as the line gives it every day (the contract's variation); with ``defect`` ('dent' or
    'scratch') a defective part."""
    return _frame(seed, index, defect)[0]


def _frame(seed, index, defect=None, **kw):
    rng = _rng(seed, index, 1)
    img = _belt(rng, rng.uniform(0, 6))
    cx = W / 2 + rng.uniform(-3, 3) + kw.get("dx", 0.0)
    cy = H / 2 + rng.uniform(-3, 3) + kw.get("dy", 0.0)
    turn = rng.uniform(0, math.pi / 3) + kw.get("turn", 0.0)
    _, mask = _put_part(img, rng, cx, cy, turn, kw.get("scale", 1.0), defect=defect)
    if kw.get("second"):
        _put_part(img, rng, cx + kw["second"], cy - 8, turn + 0.3)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    g = rng.uniform(0.88, 1.12) * (1 + 0.06 * ((xx / W) * math.cos(rng.uniform(0, 6.3)) + yy / H - 0.5))
    img = img * g[..., None] + rng.normal(0, 2.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def _u8(x) -> np.ndarray:
    return np.clip(x, 0, 255).astype(np.uint8)


# ---- faults: name -> f(seed, index, level) -> frame; level 0..2 from mild to strong ----------------
def focus(seed, index, level):
    import cv2

    return cv2.GaussianBlur(good(seed, index), (0, 0), (1.2, 2.0, 3.5)[level])


def motion(seed, index, level):
    import cv2

    n = (5, 9, 15)[level]
    k = np.zeros((n, n), np.float32)
    k[n // 2, :] = 1 / n  # along the belt (x)
    return cv2.filter2D(good(seed, index), -1, k)


def smudge(seed, index, level):
    import cv2

    img = good(seed, index).astype(np.float32)
    rng = _rng(seed, index, 5)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, cy = rng.uniform(0.3, 0.7) * W, rng.uniform(0.3, 0.7) * H
    r = (25, 35, 45)[level]
    a = 0.85 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))
    soft = cv2.GaussianBlur(img, (0, 0), 6) * 0.7 + 60
    return _u8(img * (1 - a[..., None]) + soft * a[..., None])


def fog(seed, index, level):
    a = (0.45, 0.6, 0.75)[level]
    img = good(seed, index).astype(np.float32)
    return _u8(img * (1 - a) + 170 * a)


def glare(seed, index, level):
    img = good(seed, index).astype(np.float32)
    rng = _rng(seed, index, 6)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, cy = W / 2 + rng.uniform(-20, 20), H / 2 + rng.uniform(-15, 15)
    r = (8, 12, 18)[level]
    return _u8(img + 400 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))[..., None])


def flicker(seed, index, level):
    img = good(seed, index).astype(np.float32)
    amp = (0.25, 0.4, 0.55)[level]
    rows = np.arange(H, dtype=np.float32)
    band = 1 + amp * np.sin(2 * math.pi * rows / 17.0 + index)  # 100 Hz on a rolling shutter
    return _u8(img * band[:, None, None])


def exposure_hunt(seed, index, level):
    gain = (0.45, 1.9, 0.3)[level]
    return _u8(good(seed, index).astype(np.float32) * gain)


def bumped(seed, index, level):
    return _frame(
        seed, index, **({"dx": 30, "dy": 18}, {"scale": 1.35, "dx": 12}, {"dx": 62, "dy": -5})[level]
    )[0]


def bumped_turn(seed, index, level):
    import cv2

    img = good(seed, index)
    m = cv2.getRotationMatrix2D((W / 2 + 25, H / 2), (12, 20, 35)[level], (0.8, 1.0, 1.25)[level])
    return cv2.warpAffine(img, m, (W, H), borderMode=cv2.BORDER_REFLECT)


def empty(seed, index, level):
    rng = _rng(seed, index, 1)
    return _u8(_belt(rng, rng.uniform(0, 6)) * rng.uniform(0.9, 1.1) + rng.normal(0, 2, (H, W, 3)))


def two_parts(seed, index, level):
    return _frame(seed, index, dx=-30, second=(50, 56, 62)[level])[0]


def hand(seed, index, level):
    import cv2

    img = good(seed, index).astype(np.float32)
    m = np.zeros((H, W), np.float32)
    rng = _rng(seed, index, 7)
    x0 = int(rng.uniform(30, 90))
    reach = (45, 65, 85)[level]
    cv2.rectangle(m, (x0, H - reach), (x0 + 50, H), 1.0, -1)  # palm from the front edge
    for k in range(4):
        cv2.rectangle(
            m,
            (x0 + 3 + 12 * k, H - reach - 22 + int(4 * abs(k - 1.5))),
            (x0 + 11 + 12 * k, H - reach),
            1.0,
            -1,
        )
    m = cv2.GaussianBlur(m, (0, 0), 2)
    skin = (
        np.array([110.0, 140.0, 200.0])[None, None, :]
        + cv2.GaussianBlur(rng.normal(0, 6, (H, W)).astype(np.float32), (0, 0), 2)[..., None]
    )
    return _u8(img * (1 - m[..., None]) + skin * m[..., None])


def other_product(seed, index, level):
    """A round blue plastic cap with a knurled rim, a gear, or a large square plate instead."""
    import cv2

    rng = _rng(seed, index, 8)
    img = _belt(rng, rng.uniform(0, 6))
    c = (int(W / 2 + rng.uniform(-3, 3)), int(H / 2 + rng.uniform(-3, 3)))
    if level == 0:
        cv2.circle(img, c, 38, (150, 90, 40), -1, cv2.LINE_AA)
        for k in range(36):
            a = k * math.pi / 18
            cv2.circle(
                img, (int(c[0] + 36 * math.cos(a)), int(c[1] + 36 * math.sin(a))), 2, (100, 60, 30), -1
            )
        cv2.circle(img, c, 14, (170, 110, 60), -1, cv2.LINE_AA)
    elif level == 1:
        for k in range(12):
            a = k * math.pi / 6 + rng.uniform(0, 0.5)
            cv2.circle(
                img, (int(c[0] + 34 * math.cos(a)), int(c[1] + 34 * math.sin(a))), 6, (170, 170, 175), -1
            )
        cv2.circle(img, c, 32, (170, 170, 175), -1, cv2.LINE_AA)
        cv2.circle(img, c, 9, BELT.tolist(), -1, cv2.LINE_AA)
    else:
        cv2.rectangle(img, (c[0] - 45, c[1] - 40), (c[0] + 45, c[1] + 40), (200, 200, 205), -1)
        cv2.circle(img, (c[0] - 30, c[1] - 25), 5, BELT.tolist(), -1)
        cv2.circle(img, (c[0] + 30, c[1] + 25), 5, BELT.tolist(), -1)
    return _u8(img + rng.normal(0, 2, img.shape))


def noise(seed, index, level):
    rng = _rng(seed, index, 9)
    if level == 0:
        return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    if level == 1:
        return _u8(rng.normal(128, 40, (H, W, 3)))
    return _u8(np.repeat(rng.normal(30, 12, (H, W, 1)), 3, 2))  # a dark sensor's noise, no lens cap off


def mono(seed, index, level):
    import cv2

    g = cv2.cvtColor(good(seed, index), cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)


def white_balance(seed, index, level):
    gains = ((1.35, 1.0, 0.75), (0.7, 1.0, 1.35), (1.6, 1.1, 0.6))[level]
    return _u8(good(seed, index).astype(np.float32) * np.array(gains)[None, None, :])


def jpeg(seed, index, level):
    import cv2

    q = (20, 12, 6)[level]
    ok, buf = cv2.imencode(".jpg", good(seed, index), [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def frozen(seed, index, level):
    return good(seed, 0)  # the same frame, again and again


def ordinary_light(seed, index, level):
    """Within the contract: the lamp a little dimmer/brighter than in training days, and a noisier sensor."""
    img = good(seed, index).astype(np.float32)
    return _u8(
        img * (0.92, 1.08, 1.0)[level] + _rng(seed, index, 10).normal(0, (0, 0, 3.0)[level], img.shape)
    )


FAULTS = {
    f.__name__: f
    for f in (
        focus,
        motion,
        smudge,
        fog,
        glare,
        flicker,
        exposure_hunt,
        bumped,
        bumped_turn,
        empty,
        two_parts,
        hand,
        other_product,
        noise,
        mono,
        white_balance,
        jpeg,
        frozen,
    )
}
