"""Statistics of a vision model's training inputs, and the check that calls a frame ``UNSURE``.

At build time ``summarize(images)`` measures every training image (raw BGR frames, before the
model's preprocessing) and the result travels in the manifest (``Manifest.input_stats``). At
inference the agent measures each frame the same way (``frame_stats``) and ``check`` says why it is
far outside what the model was trained on, or None:

- ``brightness`` (mean grey level): under- or over-exposed, lights off, lens covered;
- ``contrast`` (std of grey levels): washed out, fogged, saturated;
- ``sharpness`` (log10 variance of the Laplacian): blurred (focus, motion) or much noisier;
- ``scene`` (distance of a 16×16 zero-mean unit-norm thumbnail of the grey frame's structure (the
  frame minus its 16-px blur) to the training images' mean thumbnail): a wrong scene, a moved camera,
  another product.

Every statistic is taken on the frame resized to 128×128, so that it does not depend on the
camera's resolution. "Far outside": below the training 1st percentile or above the 99th by more
than ``tolerance`` × a margin per statistic (``MARGINS``: twice of the training spread with an
absolute floor, so that a tightly controlled training set does not make every small change
unsure). Costs well under a millisecond per frame. Pure NumPy plus OpenCV.
"""

from __future__ import annotations

import numpy as np

from model_packager.manifest import InputStats, StatRange

WORK = 128  # every statistic is measured on the frame resized to WORK x WORK
THUMB = 16
# statistic -> (multiple of the training std, absolute floor, relative floor x |median|) of the margin
MARGINS = {
    "brightness": (2.0, 12.0, 0.25),
    "contrast": (2.0, 4.0, 0.35),
    "sharpness": (2.0, 0.35, 0.0),
    "scene_distance": (2.0, 0.08, 0.25),
}
REASONS = {
    ("brightness", "low"): "underexposed",
    ("brightness", "high"): "overexposed",
    ("contrast", "low"): "low contrast",
    ("contrast", "high"): "high contrast",
    ("sharpness", "low"): "blurred",
    ("sharpness", "high"): "noisier than training",
    ("scene_distance", "high"): "wrong scene or camera moved",
}


def _grey(image: np.ndarray) -> np.ndarray:
    import cv2

    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.shape[2] == 3 else img[:, :, 0]
    return cv2.resize(img, (WORK, WORK), interpolation=cv2.INTER_AREA).astype(np.float32)


def _thumb(g: np.ndarray) -> np.ndarray:
    import cv2

    g = g - cv2.GaussianBlur(g, (0, 0), WORK / 8)  # structure, not the light's slow gradient
    t = cv2.resize(g, (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel().astype(np.float64)
    t -= t.mean()
    n = np.linalg.norm(t)
    return t / n if n > 1e-6 else t


def frame_stats(image: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """(brightness, contrast, sharpness) of one BGR or grey frame, and its normalised thumbnail."""
    import cv2

    g = _grey(image)
    lap = cv2.Laplacian(g, cv2.CV_32F)
    return (
        {
            "brightness": float(g.mean()),
            "contrast": float(g.std()),
            "sharpness": float(np.log10(float(lap.var()) + 1e-3)),
        },
        _thumb(g),
    )


def _range(v: np.ndarray) -> StatRange:
    v = np.asarray(v, np.float64)
    return StatRange(
        p01=float(np.percentile(v, 1)),
        p50=float(np.percentile(v, 50)),
        p99=float(np.percentile(v, 99)),
        mean=float(v.mean()),
        std=float(v.std()),
    )


def summarize(images) -> InputStats:
    """The training images' statistics (any number ≥ 1 of BGR or grey frames of any size)."""
    rows, thumbs = [], []
    for img in images:
        st, t = frame_stats(img)
        rows.append(st)
        thumbs.append(t)
    if not rows:
        raise ValueError("no images to take input statistics from")
    scene = np.mean(thumbs, axis=0)
    dist = np.linalg.norm(np.asarray(thumbs) - scene, axis=1)
    return InputStats(
        count=len(rows),
        thumb=THUMB,
        scene=[round(float(v), 6) for v in scene],
        scene_distance=_range(dist),
        **{k: _range(np.asarray([r[k] for r in rows])) for k in ("brightness", "contrast", "sharpness")},
    )


def bounds(stats: InputStats, tolerance: float = 1.0) -> dict[str, tuple[float, float]]:
    """statistic -> (low, high) outside which a frame is unsure."""
    out = {}
    for k, (k_std, floor, rel) in MARGINS.items():
        r: StatRange = getattr(stats, k)
        margin = tolerance * max(k_std * r.std, floor, rel * abs(r.p50))
        out[k] = (r.p01 - margin if k != "scene_distance" else -np.inf, r.p99 + margin)
    return out


def check(stats: InputStats, image: np.ndarray, tolerance: float = 1.0) -> str | None:
    """Why this frame is far outside the training inputs (e.g. "blurred: sharpness 1.2 < 2.3"),
    or None when it is not. The first failing statistic in the order of ``MARGINS`` is named."""
    st, t = frame_stats(image)
    scene = np.asarray(stats.scene, np.float64)
    st["scene_distance"] = float(np.linalg.norm(t - scene)) if len(scene) == len(t) else 0.0
    for k, (lo, hi) in bounds(stats, tolerance).items():
        v = st[k]
        if v < lo:
            return f"{REASONS[(k, 'low')]}: {k} {v:.3g} < {lo:.3g}"
        if v > hi:
            return f"{REASONS[(k, 'high')]}: {k} {v:.3g} > {hi:.3g}"
    return None
