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
unsure).

These four are grey and whole-frame: a mono or white-balance change, light banding, a smudge over part
of the frame passed them. ``summarize_local`` measures colour, banding and sharpness by region
(``local_stats``); they travel in the package as ``LOCAL_FILE`` (the manifest's schema is a fixed
contract) and ``check(..., local=LocalStats)`` applies them after the four (``LOCAL_MARGINS``).
Cost of ``check`` with them: ~0.3 ms on a 128-px frame, ~0.5 ms on a 224-px one (2 cores under load);
~0.6 ms of CPU on a 640x480 one (AVX-512, ``bench/inference_224_bench.py``), most of it the passes over
the whole frame (grey, its rows' area shrink, the colour's) and the fixed cost of small calls.
Pure NumPy plus OpenCV.
"""

from __future__ import annotations

import math
import threading

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


def _area(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """``cv2.resize(img, (w, h), interpolation=INTER_AREA)`` of a uint8 image, the same pixels (but for a
    float tie now and then: one level), faster on camera frames. A shrink is done as two one-dimensional
    area passes, the rows first (``_rows``: the costly one, over the whole frame) then the columns with
    OpenCV on the ``h`` rows left; OpenCV's two-dimensional area path is 1.5-2x slower on non-integer
    factors (0.88 ms for a 640x480 frame to 128 px on a 2-core AVX2 gateway). Enlargements and other
    dtypes go to OpenCV as they are."""
    import cv2

    H, W = img.shape[:2]
    if img.dtype != np.uint8 or H <= h or W <= w:
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    if H % h == 0 and W % w == 0 and H // h <= 257 and 255 * (H // h) * (W // w) < 1 << 22:
        # integer factors: OpenCV rounds each block's integer sum times 1/area (in float); so do we, from
        # the rows' exact sums (uint16) and the columns' mean of them (exact to far below one level: the
        # sums stay below 2^22, where float32 has a tenth of a level to spare)
        n = (H // h) * (W // w)
        s = img.reshape(h, H // h, -1).sum(1, dtype=np.uint16).reshape(h, W, *img.shape[2:])
        s = np.rint(cv2.resize(s.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) * (W // w))
        return np.clip(np.rint(s * np.float32(1 / n)), 0, 255).astype(np.uint8)
    f = _rows(img, h)
    if f is None:  # the columns first (OpenCV's fast path where the factor is an integer), then the rows
        f = cv2.resize(img.astype(np.float32), (w, H), interpolation=cv2.INTER_AREA)
        f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
    elif W != w:
        f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


# the rows' pass by weights (``_rows``) takes periods of at most this many output rows from at most this many
# input rows; past them (1080 -> 128 rows: 16 from 135) OpenCV's column pass first was faster here
_ROWS_PERIOD, _ROWS_SPAN = 8, 64
_ROW_WEIGHTS: dict[tuple[int, int], np.ndarray] = {}


def _row_weights(H: int, h: int) -> np.ndarray:
    """The area weights of one period of the shrink from ``H`` to ``h`` rows: p x q, where p output
    rows take q input rows (h / gcd, H / gcd); row j of the period averages rows [j H/h, (j+1) H/h)."""
    got = _ROW_WEIGHTS.get((H, h))
    if got is not None:
        return got
    d = math.gcd(H, h)
    p, q = h // d, H // d
    wts = np.zeros((p, q), np.float64)
    for j in range(p):
        a, b = j * q / p, (j + 1) * q / p
        for i in range(int(a), min(q, math.ceil(b))):
            wts[j, i] = (min(b, i + 1) - max(a, i)) * p / q
    wts32 = wts.astype(np.float32)
    wts32.setflags(write=False)  # shared by every thread's frames
    if len(_ROW_WEIGHTS) < 64:  # a few frame sizes per process; plain dict writes are atomic
        _ROW_WEIGHTS[(H, h)] = wts32
    return wts32


def _rows(img: np.ndarray, h: int) -> np.ndarray | None:
    """The area shrink of a uint8 image's rows to ``h`` (columns as they are), float32, or None where
    the columns' pass first is cheaper. The one pass over the whole frame: an integer factor (1 output
    row per q input rows) sums the rows in uint16, no float copy of the frame (a 640x480 colour frame to
    32 rows: 0.06 ms where OpenCV's integer-factor area takes 0.19 ms); a factor whose period is short
    (480 -> 128: 4 rows from 15) is one small float matrix product per period (0.05 ms with the float
    copy, against 0.13 ms for OpenCV's column pass then its row pass, in float)."""
    H = img.shape[0]
    d = math.gcd(H, h)
    p, q = h // d, H // d
    flat = img.reshape(H, -1)  # channels side by side: the rows' pass treats them alike
    if p == 1 and q <= 257:  # q rows of up to 255 sum within uint16
        out = flat.reshape(h, q, -1).sum(1, dtype=np.uint16).astype(np.float32)
        out *= np.float32(1 / q)
    elif p <= _ROWS_PERIOD and q <= _ROWS_SPAN:
        out = np.matmul(_row_weights(H, h), flat.astype(np.float32).reshape(H // q, q, -1)).reshape(h, -1)
    else:
        return None
    return out.reshape(h, *img.shape[1:])


def _grey(image: np.ndarray) -> np.ndarray:
    import cv2

    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.shape[2] == 3 else img[:, :, 0]
    return _area(img, WORK, WORK).astype(np.float32)


LOW = 64  # the structure's 16-px blur is taken at LOW x LOW (sigma 8 there)


def _low(g: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(g, (LOW, LOW), interpolation=cv2.INTER_AREA)


_MATRICES: dict[tuple, np.ndarray] = {}


def _matrix(key: tuple) -> np.ndarray:
    """The matrix of a fixed linear step on a small image, made once by applying it to the identity
    (the same kernel, borders and weights): ``("blur", n, sigma)``: OpenCV's Gaussian blur along the
    ``n`` rows of a column; ``("area", n, m)``: its area shrink of ``n`` rows to ``m``. On the check's
    64-px and 128-px images a product with it is several times cheaper than OpenCV's own call, whose
    fixed cost dominates there (a 65-tap blur of a 64 x 64 image: ~40 µs, as products: ~5 µs)."""
    got = _MATRICES.get(key)
    if got is not None:
        return got
    import cv2

    kind, n, arg = key
    eye = np.eye(n, dtype=np.float32)
    if kind == "blur":
        m = cv2.GaussianBlur(eye, (1, 0), 0, sigmaY=arg)
    else:
        m = cv2.resize(eye, (n, arg), interpolation=cv2.INTER_AREA)
    m = np.ascontiguousarray(m, np.float64)
    m.setflags(write=False)  # shared by every thread's frames
    if len(_MATRICES) < 64:  # a few shapes per process; a plain dict's writes are atomic
        _MATRICES[key] = m
    return m


def _thumb(lo: np.ndarray, thumb: int = THUMB) -> np.ndarray:
    """``lo``: the 128-px grey frame area-averaged to LOW px (``_low``)."""
    # structure, not the light's slow gradient: the frame minus its 16-px blur (at 128 px). The blur is
    # taken on the frame area-averaged to LOW px, a sixteenth of the work of a 97-tap blur at 128 px
    # (the costliest step of the check: ~60 % of it); a thumbnail differs from the one blurred at
    # 128 px by at most ~0.03 (unit-norm thumbnails), well inside the scene margin's floor (0.08).
    # Blur and shrink are linear: shrink(lo - blur(lo)) = A lo A' - (A B) lo (A B)', A the area
    # shrink's matrix and B the blur's, the same sums as OpenCV's calls in another order (in double). On
    # the frame minus its mean, which the difference does not see: a flat frame's is exactly zero, as from
    # OpenCV's calls, where the blur's rows summing to 1 only to float precision left a residue to normalise
    n = lo.shape[0]
    a = _matrix(("area", n, thumb))
    ab = a @ _matrix(("blur", n, LOW / 8))
    x = lo.astype(np.float64)
    x -= x.mean()
    t = ((a @ x) @ a.T - (ab @ x) @ ab.T).ravel()
    t -= t.mean()
    n2 = np.linalg.norm(t)
    return t / n2 if n2 > 1e-6 else t


def _measure(image: np.ndarray, thumb: int) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    import cv2

    g = _grey(image)
    lap = cv2.Laplacian(g, cv2.CV_32F)
    mean, std = cv2.meanStdDev(g)
    _, lap_std = cv2.meanStdDev(lap)
    st = {
        "brightness": float(mean[0, 0]),
        "contrast": float(std[0, 0]),
        "sharpness": float(np.log10(float(lap_std[0, 0]) ** 2 + 1e-3)),
    }
    lo = _low(g)
    return st, _thumb(lo, thumb), g, lo


def frame_stats(image: np.ndarray, thumb: int = THUMB) -> tuple[dict[str, float], np.ndarray]:
    """(brightness, contrast, sharpness) of one BGR or grey frame, and its normalised
    ``thumb`` x ``thumb`` thumbnail."""
    st, t, _, _ = _measure(image, thumb)
    return st, t


def _range(v: np.ndarray) -> StatRange:
    v = np.asarray(v, np.float64)
    return StatRange(
        p01=float(np.percentile(v, 1)),
        p50=float(np.percentile(v, 50)),
        p99=float(np.percentile(v, 99)),
        mean=float(v.mean()),
        std=float(v.std()),
    )


# The statistics that a light a build was made to accept reaches (``summarize(also=)``): a lamp's spot or
# fall-off adds contrast and moves the structure the scene thumbnail holds; its colour moves the channel
# ratios and the saturation (``LOCAL_REACHED``). Not brightness nor sharpness (exposure and focus are what the
# check is for: the copies keep their frame's exposure), nor glare, banding or the regions' sharpness (a smear
# over part of the frame): measured (bench/anomaly_light_bench.py, 64 frames a light), reaching the regions'
# sharpness too let 1 more of 64 frames under the bench's spot through, and 7 of 17 smeared frames and 5 of 61
# foreign ones that the check had caught; banding served no frame under any light
REACHED = ("contrast", "scene_distance")
LOCAL_REACHED = ("chroma_b", "chroma_r", "saturation")


def _reach(r: StatRange, also: list[float]) -> StatRange:
    """``r`` with its 1st and 99th percentiles reaching those of ``also`` (never narrowed); its median,
    mean and spread, on which the margins rest, stay those of the training images."""
    if not also:
        return r
    v = np.asarray(also, np.float64)
    lo, hi = float(np.percentile(v, 1)), float(np.percentile(v, 99))
    return r.model_copy(update={"p01": min(r.p01, lo), "p99": max(r.p99, hi)})


def summarize(images, thumb: int = THUMB, also=()) -> InputStats:
    """The training images' statistics (any number ≥ 1 of BGR or grey frames of any size).

    ``also``: the training images under the light the model was trained to accept (an anomaly build's
    ``--light-variation curved`` or ``lamp``): the ranges of ``REACHED`` reach as far as theirs do (the scene
    distance measured against the training images' own scene); the median, spread (so the margins) and
    scene stay the training images'. Without them, the statistics of before, value for value."""
    rows, thumbs = [], []
    for img in images:
        st, t = frame_stats(img, thumb)
        rows.append(st)
        thumbs.append(t)
    if not rows:
        raise ValueError("no images to take input statistics from")
    scene = np.mean(thumbs, axis=0)
    dist = np.linalg.norm(np.asarray(thumbs) - scene, axis=1)
    more: dict[str, list[float]] = {k: [] for k in REACHED}
    for img in also:
        st, t = frame_stats(img, thumb)
        st["scene_distance"] = float(np.linalg.norm(t - scene))
        for k in REACHED:
            more[k].append(st[k])
    return InputStats(
        count=len(rows),
        thumb=thumb,
        scene=[round(float(v), 6) for v in scene],
        scene_distance=_reach(_range(dist), more.get("scene_distance", [])),
        **{
            k: _reach(_range(np.asarray([r[k] for r in rows])), more.get(k, []))
            for k in ("brightness", "contrast", "sharpness")
        },
    )


def bounds(stats: InputStats, tolerance: float = 1.0) -> dict[str, tuple[float, float]]:
    """statistic -> (low, high) outside which a frame is unsure."""
    out = {}
    for k, (k_std, floor, rel) in MARGINS.items():
        r: StatRange = getattr(stats, k)
        margin = tolerance * max(k_std * r.std, floor, rel * abs(r.p50))
        out[k] = (r.p01 - margin if k != "scene_distance" else -np.inf, r.p99 + margin)
    return out


_PREPARED_LOCK = threading.Lock()
_PREPARED: dict[int, tuple[InputStats, float, np.ndarray, dict[str, tuple[float, float]]]] = {}


def _prepared(stats: InputStats, tolerance: float) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """The scene as an array and the bounds, made once per package and tolerance (a package's
    ``input_stats`` serve every frame: converting the 256-value scene list and the bounds again
    for each frame was a third of the check's cost on a 128-px frame)."""
    got = _PREPARED.get(id(stats))
    if got is not None and got[0] is stats and got[1] == tolerance:
        return got[2], got[3]
    scene = np.asarray(stats.scene, np.float64)
    b = bounds(stats, tolerance)
    with _PREPARED_LOCK:  # slots infer in worker threads
        if len(_PREPARED) >= 16:  # a few packages (slots, swaps) at a time: forget the oldest
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[id(stats)] = (stats, tolerance, scene, b)  # holds stats: its id is not reused meanwhile
    return scene, b


def check(
    stats: InputStats, image: np.ndarray, tolerance: float = 1.0, local: LocalStats | None = None
) -> str | None:
    """Why this frame is far outside the training inputs (e.g. "blurred: sharpness 1.2 < 2.3"),
    or None when it is not. The first failing statistic in the order of ``MARGINS`` is named, then
    (with ``local``, the package's ``LOCAL_FILE``) those of ``LOCAL_MARGINS``."""
    scene, b = _prepared(stats, tolerance)
    # the thumbnail at the package's own size (a package may carry another than THUMB)
    st, t, g, small = _measure(image, stats.thumb)
    st["scene_distance"] = float(np.linalg.norm(t - scene))
    for k, (lo, hi) in b.items():
        v = st[k]
        if v < lo:
            return f"{REASONS[(k, 'low')]}: {k} {v:.3g} < {lo:.3g}"
        if v > hi:
            return f"{REASONS[(k, 'high')]}: {k} {v:.3g} > {hi:.3g}"
    return local.check(image, g, small, tolerance) if local is not None else None


# ---- the local statistics: colour, light banding, sharpness by region ---------------------------------
# They travel in the package as a signed file (LOCAL_FILE, listed in the manifest with its hash) rather than
# in the manifest's ``input_stats``, whose schema is a fixed contract: agents before them ignore the file.
LOCAL_FILE = "input_stats_local.json"
LOCAL_FORMAT = 2  # 1: saturation in log10 (bb9a39b, never released): read as another format
GRID = 4  # sharpness by region: GRID x GRID cells of the 128-px frame
COLOUR = 32  # colour is measured on the frame area-averaged to COLOUR x COLOUR
# statistic -> (multiple of the training std, absolute floor, relative floor x |median|, sides checked)
LOCAL_MARGINS = {
    "chroma_b": (2.0, 0.10, 0.0, "both"),  # 10 % in the blue/green ratio
    "chroma_r": (2.0, 0.10, 0.0, "both"),
    # 60 % of the training's colour (a nearly grey part keeps some), at least 0.03 (a mono camera's
    # frames that are not exactly grey: 3 grey levels of spread at mid-grey)
    "saturation": (2.0, 0.03, 0.6, "both"),
    "clipped": (2.0, 0.01, 0.0, "high"),  # share of the frame at white (>= 250): 1 % more than training
    "banding": (2.0, 0.5, 0.0, "high"),  # rows 3.2 x finer-varied than training (against the columns)
    "cells": (2.0, 0.45, 0.0, "low"),  # a region's Laplacian energy 2.8 x below training's lowest
}
LOCAL_REASONS = {
    ("chroma_b", "low"): "colour cast (white balance)",
    ("chroma_b", "high"): "colour cast (white balance)",
    ("chroma_r", "low"): "colour cast (white balance)",
    ("chroma_r", "high"): "colour cast (white balance)",
    ("saturation", "low"): "less colour than training (mono camera, white balance)",
    ("saturation", "high"): "more colour than training",
    ("clipped", "high"): "glare or clipped highlights",
    ("banding", "high"): "light banding (flicker)",
    ("cells", "low"): "blurred or covered in part of the frame",
}


def local_stats(image: np.ndarray, g: np.ndarray | None = None, lo: np.ndarray | None = None) -> dict:
    """One frame's local statistics: ``chroma_b``/``chroma_r`` (log ratio of the blue/red channel's
    mean to the green's; absent for a grey frame), ``saturation`` (the mean per-pixel spread of
    the channels over the mean level, on the frame area-averaged to COLOUR px), ``clipped`` (the share of the
    128-px grey frame at 250 or more: glare), ``banding`` (log10 ratio of the row profile's fine variation
    to the column profile's: a flickering light on a rolling shutter bands the rows) and ``cells``
    (log10 of the mean squared Laplacian in each of GRID x GRID regions)."""
    import cv2

    if g is None or lo is None:
        g = _grey(image)
        lo = _low(g)
    out: dict = {}
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 3:
        c = _area(img, COLOUR, COLOUR)
        bm, gm, rm, _ = cv2.mean(c)
        ch = cv2.split(c)
        spread = cv2.mean(
            cv2.subtract(cv2.max(cv2.max(ch[0], ch[1]), ch[2]), cv2.min(cv2.min(ch[0], ch[1]), ch[2]))
        )
        out["chroma_b"] = math.log((bm + 8) / (gm + 8))
        out["chroma_r"] = math.log((rm + 8) / (gm + 8))
        out["saturation"] = spread[0] / ((bm + gm + rm) / 3 + 8)
    elif img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        out["saturation"] = 0.0  # no colour at all
    out["clipped"] = int(np.count_nonzero(g >= 250.0)) / g.size
    # the row and the column profiles side by side, each minus its 8-px blur (along the profile)
    prof = np.hstack([cv2.reduce(g, 1, cv2.REDUCE_AVG), cv2.reduce(g, 0, cv2.REDUCE_AVG).reshape(-1, 1)])
    d = prof - _matrix(("blur", prof.shape[0], 8)) @ prof  # the profiles' 8-px blur, as a product
    e_rows, e_cols = (d * d).mean(0).tolist()
    out["banding"] = math.log10(e_rows + 1e-3) - math.log10(e_cols + 1e-3)
    lap = cv2.Laplacian(lo, cv2.CV_32F)  # at LOW px: a JPEG's lost fine grain (q >= 75) does not count
    cells = cv2.resize(cv2.multiply(lap, lap), (GRID, GRID), interpolation=cv2.INTER_AREA)
    out["cells"] = [math.log10(v + 1e-3) for v in cells.ravel().tolist()]
    return out


def _rng(v) -> dict[str, float]:
    v = np.asarray(v, np.float64)
    return {
        "p01": float(np.percentile(v, 1)),
        "p50": float(np.percentile(v, 50)),
        "p99": float(np.percentile(v, 99)),
        "std": float(v.std()),
    }


def _rng_reach(r: dict[str, float], also) -> dict[str, float]:
    """``_reach`` of a local range (a dict)."""
    if len(also) == 0:
        return r
    v = np.asarray(also, np.float64)
    return {
        **r,
        "p01": min(r["p01"], float(np.percentile(v, 1))),
        "p99": max(r["p99"], float(np.percentile(v, 99))),
    }


def _grey_floor(r: dict[str, float]) -> float:
    """The lowest ``p01`` of the saturation's range (``r``: the training images' own) that still calls a
    grey frame (a mono camera: saturation 0, some JPEG noise) UNSURE: the low bound, p01 less the margin
    the agent takes, no lower than the margin's absolute floor (0.03: 3 grey levels of spread at mid-grey),
    or than the training images' own bound where that is lower (a nearly grey part)."""
    k_std, floor, rel, _ = LOCAL_MARGINS["saturation"]
    m = max(k_std * r["std"], floor, rel * abs(r["p50"]))
    return min(r["p01"] - m, floor) + m


def summarize_local(images, also=()) -> dict:
    """The training images' local statistics, as ``LOCAL_FILE`` holds them (JSON). Colour only when
    every image is a colour (3-channel) frame. ``also``: as ``summarize``'s, the ranges of ``LOCAL_REACHED``
    reach theirs (a lamp of another colour takes colour from a tinted part as well as giving it), the low
    side of ``saturation`` not so far that a grey frame (a mono camera) passes (``_grey_floor``)."""
    rows = [local_stats(img) for img in images]
    if not rows:
        raise ValueError("no images to take input statistics from")
    more = [local_stats(img) for img in also]
    out: dict = {"format": LOCAL_FORMAT, "count": len(rows), "grid": GRID, "stats": {}}
    for k in ("chroma_b", "chroma_r", "saturation", "clipped", "banding"):
        if all(k in r for r in rows):
            own = _rng([r[k] for r in rows])
            rng = _rng_reach(own, [m[k] for m in more if k in m]) if k in LOCAL_REACHED else own
            if k == "saturation" and more:
                rng["p01"] = max(rng["p01"], _grey_floor(own))
            out["stats"][k] = rng
    cells = np.asarray([r["cells"] for r in rows])
    out["cells"] = [_rng(cells[:, i]) for i in range(cells.shape[1])]
    return out


class LocalStats:
    """A package's ``LOCAL_FILE``, read and checked once (``LocalStats.parse``); ``check`` says why a
    frame is far outside it, or None."""

    def __init__(self, data: dict, colour: bool = True) -> None:
        """``colour=False``: a model that sees grey images (its preprocessing's ``color: gray``) is not
        affected by colour, so its frames' colour is not checked."""

        def rng(r) -> tuple[float, float, float, float]:
            p01, p50, p99, std = (float(r[k]) for k in ("p01", "p50", "p99", "std"))
            if not all(map(math.isfinite, (p01, p50, p99, std))) or std < 0 or not p01 <= p50 <= p99:
                raise ValueError(f"a range {r!r} is not p01 <= p50 <= p99 with std >= 0")
            return p01, p50, p99, std

        if data.get("format") != LOCAL_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this agent reads {LOCAL_FORMAT}")
        if data.get("grid") != GRID or len(data.get("cells", [])) != GRID * GRID:
            raise ValueError(
                f"grid {data.get('grid')!r} with {len(data.get('cells', []))} cells, expected {GRID}"
            )
        unknown = set(data.get("stats", {})) - set(LOCAL_MARGINS)
        if unknown:
            raise ValueError(f"unknown statistics {sorted(unknown)}")
        self.stats = {
            k: rng(v)
            for k, v in data["stats"].items()
            if colour or k not in ("chroma_b", "chroma_r", "saturation")
        }
        self.cells = [rng(c) for c in data["cells"]]
        self._bounds: dict[float, tuple[dict[str, tuple[float, float]], np.ndarray]] = {}

    @classmethod
    def parse(cls, text: str, colour: bool = True) -> LocalStats:
        import json

        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls(data, colour)

    def bounds(self, tolerance: float) -> tuple[dict[str, tuple[float, float]], np.ndarray]:
        got = self._bounds.get(tolerance)
        if got is not None:
            return got
        out = {}
        for k, (p01, p50, p99, std) in self.stats.items():
            k_std, floor, rel, sides = LOCAL_MARGINS[k]
            m = tolerance * max(k_std * std, floor, rel * abs(p50))
            out[k] = (p01 - m if sides != "high" else -np.inf, p99 + m if sides != "low" else np.inf)
        k_std, floor, _, _ = LOCAL_MARGINS["cells"]
        cells = np.asarray([p01 - tolerance * max(k_std * std, floor) for p01, _, _, std in self.cells])
        self._bounds[tolerance] = (out, cells)
        return out, cells

    def check(self, image: np.ndarray, g=None, lo=None, tolerance: float = 1.0) -> str | None:
        b, cells_low = self.bounds(tolerance)
        st = local_stats(image, g, lo)
        for k, (low, hi) in b.items():
            if k not in st:  # a grey frame has no chroma: its saturation says it
                continue
            v = st[k]
            if v < low:
                return f"{LOCAL_REASONS[(k, 'low')]}: {k} {v:.3g} < {low:.3g}"
            if v > hi:
                return f"{LOCAL_REASONS[(k, 'high')]}: {k} {v:.3g} > {hi:.3g}"
        c = np.asarray(st["cells"]) - cells_low
        i = int(np.argmin(c))
        if c[i] < 0:
            v, low = st["cells"][i], cells_low[i]
            return (
                f"{LOCAL_REASONS[('cells', 'low')]}: sharpness {v:.3g} < {low:.3g} in region "
                f"{i // GRID + 1},{i % GRID + 1} of {GRID}x{GRID}"
            )
        return None
