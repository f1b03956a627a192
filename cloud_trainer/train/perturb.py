"""Ordinary camera variation, applied to part images: for training augmentation and for the
perturbed copy of the held-out split that every vision evaluation reports.

A line camera's images drift in ways nobody labels: exposure, a light gradient across the part,
focus (blur), sensor noise, JPEG compression, and small changes of pose. A model and a threshold
that only hold on the exact images they were trained on reject good parts the day the lamp ages.
Each function takes and returns a BGR uint8 image; ``perturb`` draws a seeded combination.

Two ranges: ``TEST`` is the variation the evaluation checks against (a ±25 % light gradient, JPEG
quality 75, noise of 2-3 grey levels, blur σ ≤ 0.8 px, exposure ±15 %, rotation ±5°, shift ±3 %,
scale ±4 %); ``TRAIN`` is wider, so that the test range sits inside what training has seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("exposure", "gradient", "blur", "noise", "jpeg", "pose")


@dataclass(frozen=True)
class Ranges:
    exposure: float  # gain in [1 - e, 1 + e]
    gradient: float  # light falls off by up to this fraction across the image
    blur_sigma: float  # px, at the image's own resolution
    noise_sigma: tuple[float, float]  # grey levels
    jpeg_quality: tuple[int, int]
    rotation_deg: float
    shift: float  # fraction of the image size
    scale: float  # fraction


TEST = Ranges(
    exposure=0.15,
    gradient=0.25,
    blur_sigma=0.8,
    noise_sigma=(2.0, 3.0),
    jpeg_quality=(75, 75),
    rotation_deg=5.0,
    shift=0.03,
    scale=0.04,
)
TRAIN = Ranges(
    exposure=0.25,
    gradient=0.35,
    blur_sigma=1.2,
    noise_sigma=(0.5, 4.0),
    jpeg_quality=(50, 95),
    rotation_deg=8.0,
    shift=0.04,
    scale=0.06,
)


def exposure(img: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def gradient(img: np.ndarray, amount: float, angle: float) -> np.ndarray:
    """Light falling off linearly by ``amount`` (0.25 = 25 %) across the image, in direction ``angle``."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.cos(angle) * (xx / max(1, w - 1) - 0.5) + np.sin(angle) * (yy / max(1, h - 1) - 0.5)
    r = (r - r.min()) / max(1e-6, float(r.max() - r.min()))  # 0..1 across the image
    gain = 1.0 + amount / 2 - amount * r
    return np.clip(img.astype(np.float32) * gain[..., None], 0, 255).astype(np.uint8)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return img if sigma <= 0.05 else cv2.GaussianBlur(img, (0, 0), sigmaX=sigma)


def noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    n = rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(img.astype(np.float32) + n, 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
    return out if out is not None else img


def pose(img: np.ndarray, degrees: float, dx: float, dy: float, scale: float) -> np.ndarray:
    """Rotate by ``degrees`` and scale about the centre, then shift by (dx, dy) fractions of the size;
    the border repeats the edge (the belt), not black."""
    import cv2

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, scale)
    m[0, 2] += dx * w
    m[1, 2] += dy * h
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def apply(img: np.ndarray, kind: str, rng: np.random.Generator, r: Ranges = TEST) -> np.ndarray:
    """One perturbation of ``kind`` with parameters drawn from ``r``."""
    u = lambda a: float(rng.uniform(-a, a))  # noqa: E731
    if kind == "exposure":
        return exposure(img, 1.0 + float(rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.0)) * r.exposure)
    if kind == "gradient":
        return gradient(img, float(rng.uniform(0.5, 1.0)) * r.gradient, float(rng.uniform(0, 2 * np.pi)))
    if kind == "blur":
        return blur(img, float(rng.uniform(0.3, 1.0)) * r.blur_sigma)
    if kind == "noise":
        return noise(img, float(rng.uniform(*r.noise_sigma)), rng)
    if kind == "jpeg":
        return jpeg(img, int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1)))
    if kind == "pose":
        return pose(img, u(r.rotation_deg), u(r.shift), u(r.shift), 1.0 + u(r.scale))
    raise ValueError(f"unknown perturbation {kind!r}; expected one of {KINDS}")


def perturb(img: np.ndarray, rng: np.random.Generator, r: Ranges = TEST, max_kinds: int = 3) -> np.ndarray:
    """A random combination of 1..``max_kinds`` perturbations, applied in a camera's order (pose,
    light, optics, sensor, compression)."""
    k = int(rng.integers(1, max_kinds + 1))
    chosen = set(rng.choice(KINDS, size=k, replace=False).tolist())
    for kind in ("pose", "exposure", "gradient", "blur", "noise", "jpeg"):
        if kind in chosen:
            img = apply(img, kind, rng, r)
    return img


def perturbed_copy(images: list[np.ndarray], seed: int, r: Ranges = TEST) -> list[np.ndarray]:
    """The held-out images as another day on the line would show them (seeded: the same copy for
    every model evaluated on it)."""
    rng = np.random.default_rng([seed, 7919])
    return [perturb(im, rng, r) for im in images]


def lighting(
    img: np.ndarray,
    rng: np.random.Generator,
    gain: float = 0.3,
    offset: float = 20.0,
    gradient_amount: float = 0.2,
    temperature: float = 0.05,
) -> np.ndarray:
    """Another lamp or camera setting on the same part: gain within ±``gain``, a grey-level offset
    within ±``offset``, a light gradient of up to ``gradient_amount`` across the image (any
    direction) and a colour-temperature tilt within ±``temperature`` (blue against red). The
    moderate shift a good part must survive (issue 13: ±30 % gain, ±20 grey levels, a mild gradient)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = float(rng.uniform(0, 2 * np.pi))
    r = np.cos(a) * (xx / max(1, w - 1) - 0.5) + np.sin(a) * (yy / max(1, h - 1) - 0.5)
    field = 1.0 + float(rng.uniform(0, gradient_amount)) * r / max(1e-6, float(np.abs(r).max()) * 2)
    g = 1.0 + float(rng.uniform(-gain, gain))
    out = (
        img.astype(np.float32) * (g * field)[..., None]
        if img.ndim == 3
        else img.astype(np.float32) * g * field
    )
    if img.ndim == 3 and img.shape[2] == 3:
        t = float(rng.uniform(-temperature, temperature))
        out = out * np.asarray([1 + t, 1.0, 1 - t], np.float32)  # BGR
    return np.clip(out + float(rng.uniform(-offset, offset)), 0, 255).astype(np.uint8)


def camera_copy(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``lighting``, then, for half of the images, JPEG at quality 70-95: what the same part looks like
    through another camera setting and a compressing camera (an IP camera's MJPEG stream). Good-image
    banks hold one such copy of each image, so that a frame's compression is not taken for a defect."""
    out = lighting(img, rng)
    return jpeg(out, int(rng.integers(70, 96))) if rng.random() < 0.5 else out
