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
contract) and ``check(..., local=LocalStats)`` applies them after the four (``LOCAL_MARGINS``), the light
over the frame (``shading``: a gradient, a vignette, the exposure and the colour against the same scene's)
last. Before the four, ``LocalStats.shape``: a frame of other proportions than the training frames
(``frame``'s aspect), or, for a model with a ``roi`` (a pixel box), of another size, which every statistic
taken at 128x128 measured as if it were the training view.
Cost of ``check`` with them: ~0.3 ms on a 128-px frame, ~0.5 ms on a 224-px one (2 cores under load);
on a 640x480 one (AVX-512, 2 cores at a 1-min load of 2.5-4, 2026-12-03) 0.72-0.76 ms of CPU called in a
loop (0.88-0.90 ms before the exact area path, ``_exact_plan``) and 0.96-1.06 ms right after an engine
run has emptied the caches (``bench/inference_224_bench.py``'s "check alone"; 1.11-1.23 ms before). Most
of it: the two passes over the whole frame that the statistics need exactly (the grey conversion and the
colour's block sums, ~0.1 ms each in a loop), the grey's rows shrink, and the fixed cost of ~90 small
NumPy and OpenCV calls, each two to three times its tight-loop cost once the caches are cold. Every OpenCV call
stays in the calling thread (``_SERIAL_PIXELS``): OpenCV's worker thread, woken by two of them, spun 0.3-0.6 ms
of CPU a 640x480 frame on the core the engine runs on.
Pure NumPy plus OpenCV.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Any

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
    factors (0.88 ms for a 640x480 frame to 128 px on a 2-core AVX2 gateway). Where ``_exact_plan`` proves
    that these passes round every pixel as its exact area mean does (640x480 to 128 and to 32 px among
    others), ``_exact_area`` takes that mean from integer sums instead: the same pixels, fewer passes.
    Enlargements and other dtypes go to OpenCV as they are."""
    import cv2

    H, W = img.shape[:2]
    if img.dtype != np.uint8 or H <= h or W <= w:
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3):  # (OpenCV drops a single channel's axis)
        plan = _exact_plan(H, W, 1 if img.ndim == 2 else 3, h, w)
        if plan is not None:
            return _exact_area(img, plan)
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


class _Plan:
    """How ``_exact_area`` shrinks a uint8 image of one shape: rows in periods of ``q`` input rows giving
    ``p`` output rows (``weights``: their integer area weights, p x q, None where p == 1: a plain sum), then
    the columns in blocks of ``c``; each pixel is its exact integer sum ``N`` times ``scale`` (float32 1/D,
    D = q x c), rounded."""

    __slots__ = ("h", "w", "q", "c", "weights", "cols", "scale")

    def __init__(self, h: int, w: int, q: int, c: int, chans: int, weights: np.ndarray | None) -> None:
        self.h, self.w, self.q, self.c, self.weights = h, w, q, c, weights
        # the columns' sums as one product: (h*w, c*chans) @ cols, cols[k*chans + j, j] = 1
        cols = np.tile(np.eye(chans, dtype=np.float32), (c, 1))
        cols.setflags(write=False)
        self.cols = cols
        self.scale = np.float32(1 / (q * c))


_PLANS: dict[tuple[int, int, int, int, int], _Plan | None] = {}
_U = 2.0**-24  # float32's unit roundoff


def _exact_plan(H: int, W: int, chans: int, h: int, w: int) -> _Plan | None:
    """A plan for ``_exact_area`` where it gives exactly the pixels of the passes in ``_area`` below it,
    else None (those passes then run). Each output pixel's exact mean is N / D, N an integer sum of input
    pixels times integer area weights, D = q x c (rows from q, columns from c input pixels a period).

    - integer factors (``_area``'s first branch): that branch rounds N x float32(1/D) as we do, its N
      recovered exactly from OpenCV's float column mean where N x 3 x 2^-24 < 1/2 (N <= 255 D);
    - rows by ``_rows`` then OpenCV's integer-factor column pass: where D is odd, N / D is at least
      1/(2D) away from any tie (2N - (2m+1)D is odd), and the passes' float error, at most
      255 x (q + c + 3) x 2^-24 (weights, sums of at most q and c terms, scalings), is kept 4x below that,
      so they round to the same integer as N / D does, and so do we (N x float32(1/D): 255 x 2^-23 off).

    Other shapes (non-integer column factors, even D: 1280x720 to 128 px, long periods: 1080 rows) keep
    those passes."""
    key = (H, W, chans, h, w)
    if key in _PLANS:
        return _PLANS[key]
    plan = None
    if W % w == 0:
        c = W // w
        if H % h == 0 and H // h <= 257 and 255 * (H // h) * c < 1 << 22:
            if 255 * (H // h) * c * 6 < 1 << 24:
                plan = _Plan(h, w, H // h, c, chans, None)
        else:
            d = math.gcd(H, h)
            p, q = h // d, H // d
            if (p == 1 and q <= 257) or (p <= _ROWS_PERIOD and q <= _ROWS_SPAN):
                D = q * c
                if D % 2 == 1 and 4 * 2 * D * 255 * (q + c + 3) * _U < 1 and 255 * D < 1 << 24:
                    wts = None
                    if p > 1:  # k / q per ``_row_weights``: k the overlap in units of 1/p of an input row
                        wts = np.array(
                            [
                                [max(0, min((j + 1) * q, (i + 1) * p) - max(j * q, i * p)) for i in range(q)]
                                for j in range(p)
                            ],
                            np.float32,
                        )
                        wts.setflags(write=False)
                    plan = _Plan(h, w, q, c, chans, wts)
    if len(_PLANS) < 64:  # a few frame sizes per process; plain dict writes are atomic
        _PLANS[key] = plan
    return plan


def _exact_area(img: np.ndarray, plan: _Plan, dtype: type = np.uint8) -> np.ndarray:
    """The area shrink of ``_exact_plan``: exact integer sums (uint16 for plain row sums, float32 holding
    integers below 2^24 for weighted ones and for the columns: any order of summation gives them exactly),
    then one rounding of each pixel's N x 1/D. ``dtype`` float32: the same levels as floats (the grey
    frame the statistics take, without a round trip through uint8)."""
    H = img.shape[0]
    h, w, q = plan.h, plan.w, plan.q
    flat = img.reshape(H, -1)  # channels side by side: the rows' pass treats them alike
    if plan.weights is None:
        rows = flat.reshape(H // q, q, -1).sum(1, dtype=np.uint16).astype(np.float32)
    else:
        rows = np.matmul(plan.weights, flat.astype(np.float32).reshape(H // q, q, -1))
    n = rows.reshape(h * w, -1) @ plan.cols
    n *= plan.scale
    out = np.rint(n, out=n)  # N / D <= 255: no clip needed
    return (out if dtype == np.float32 else out.astype(dtype)).reshape(h, w, *img.shape[2:])


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
    return _grey_and_colour(np.asarray(image), False)[0]


# OpenCV hands a call on more pixels than this (a colour conversion of a frame) or on more than one row (a
# ``reduce``) to its worker thread, which then spins waiting for more: 0.46-0.58 ms of CPU a call (2-core AMD
# EPYC, 2026-12-05; a 90-us conversion), on the gateway's other core, which the engine runs on while the check
# runs (``ModelSlot.infer``). The check's calls stay below it and in the calling thread.
_SERIAL_PIXELS = 1 << 16


def _bgr_to_grey(img: np.ndarray) -> np.ndarray:
    """``cv2.cvtColor(img, COLOR_BGR2GRAY)``, the same pixels (each is converted on its own), in bands of rows
    OpenCV converts in the calling thread (``_SERIAL_PIXELS``)."""
    import cv2

    h, w = img.shape[:2]
    rows = max(1, _SERIAL_PIXELS // max(w, 1))
    if h <= rows:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    out = np.empty((h, w), img.dtype)
    for y in range(0, h, rows):
        band = out[y : y + rows]
        got = cv2.cvtColor(img[y : y + rows], cv2.COLOR_BGR2GRAY, dst=band)
        if got is not band:  # OpenCV allocated its own
            band[...] = got
    return out


def _colour_now(img: np.ndarray) -> bool:
    """Whether ``local_stats``' colour shrink of ``img`` may be taken with its grey (``_grey_and_colour``):
    a uint8 BGR frame, which that shrink cannot fail on."""
    return img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def _grey_and_colour(img: np.ndarray, colour: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The grey frame at WORK px (float32) and, with ``colour`` (a frame ``_colour_now`` accepts), the
    colour frame at COLOUR px that ``local_stats`` measures. The colour shrink reads the frame right after
    the grey conversion has, while it is still in the cache: after the grey's shrink it was not (its
    float copy of the frame's rows is larger than a core's cache), and a frame read again from memory cost
    most of the colour shrink."""
    c = None
    if img.ndim == 3:
        if img.shape[2] == 3:
            grey = _bgr_to_grey(img)
            if colour:
                c = _area(img, COLOUR, COLOUR)
            img = grey
        else:
            img = img[:, :, 0]
    H, W = img.shape[:2]
    if img.dtype == np.uint8 and H > WORK and W > WORK:
        plan = _exact_plan(H, W, 1, WORK, WORK)
        if plan is not None:
            return _exact_area(img, plan, np.float32), c
    return _area(img, WORK, WORK).astype(np.float32), c


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


_THUMBS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _thumb_matrices(n: int, thumb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A stacked over A B, A', (A B)') for ``_thumb`` at ``n`` px to ``thumb``, made once (A B was
    multiplied again for every frame)."""
    got = _THUMBS.get((n, thumb))
    if got is not None:
        return got
    a = _matrix(("area", n, thumb))
    ab = a @ _matrix(("blur", n, LOW / 8))
    got = (np.vstack([a, ab]), np.ascontiguousarray(a.T), np.ascontiguousarray(ab.T))
    for m in got:
        m.setflags(write=False)  # shared by every thread's frames
    if len(_THUMBS) < 16:  # a thumbnail size or two per process; plain dict writes are atomic
        _THUMBS[(n, thumb)] = got
    return got


def _thumb(lo: np.ndarray, thumb: int = THUMB, mean: float | None = None) -> np.ndarray:
    """``lo``: the 128-px grey frame area-averaged to LOW px (``_low``); ``mean``: its mean where the caller
    has it (the grey frame's: the same float, both being exact sums over a power of two)."""
    # structure, not the light's slow gradient: the frame minus its 16-px blur (at 128 px). The blur is
    # taken on the frame area-averaged to LOW px, a sixteenth of the work of a 97-tap blur at 128 px
    # (the costliest step of the check: ~60 % of it); a thumbnail differs from the one blurred at
    # 128 px by at most ~0.03 (unit-norm thumbnails), well inside the scene margin's floor (0.08).
    # Blur and shrink are linear: shrink(lo - blur(lo)) = A lo A' - (A B) lo (A B)', A the area
    # shrink's matrix and B the blur's, the same sums as OpenCV's calls in another order (in double). On
    # the frame minus its mean, which the difference does not see: a flat frame's is exactly zero, as from
    # OpenCV's calls, where the blur's rows summing to 1 only to float precision left a residue to normalise
    both, a_t, ab_t = _thumb_matrices(lo.shape[0], thumb)
    x = lo.astype(np.float64)
    x -= x.mean() if mean is None else mean
    y = both @ x  # A x and (A B) x in one product
    t = (y[:thumb] @ a_t - y[thumb:] @ ab_t).ravel()
    t -= t.mean()
    n2 = np.linalg.norm(t)
    return t / n2 if n2 > 1e-6 else t


def _measure(
    image: np.ndarray, thumb: int, colour: bool = False
) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``colour``: the colour frame ``local_stats`` will measure is taken too, where ``_colour_now``
    allows (else None)."""
    import cv2

    img = np.asarray(image)
    g, c = _grey_and_colour(img, colour and _colour_now(img))
    lap = cv2.Laplacian(g, cv2.CV_32F)
    mean, std = cv2.meanStdDev(g)
    _, lap_std = cv2.meanStdDev(lap)
    st = {
        "brightness": float(mean[0, 0]),
        "contrast": float(std[0, 0]),
        "sharpness": float(np.log10(float(lap_std[0, 0]) ** 2 + 1e-3)),
    }
    lo = _low(g)
    # a uint8 frame's grey holds whole levels: its mean and the 64-px one's are exact sums over powers of
    # two, the same float
    return st, _thumb(lo, thumb, st["brightness"] if img.dtype == np.uint8 else None), g, lo, c


def frame_stats(image: np.ndarray, thumb: int = THUMB) -> tuple[dict[str, float], np.ndarray]:
    """(brightness, contrast, sharpness) of one BGR or grey frame, and its normalised
    ``thumb`` x ``thumb`` thumbnail."""
    st, t, _, _, _ = _measure(image, thumb)
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
    stats: InputStats,
    image: np.ndarray,
    tolerance: float = 1.0,
    local: LocalStats | None = None,
    camera_size: tuple[int, int] | None = None,
) -> str | None:
    """Why this frame is far outside the training inputs (e.g. "blurred: sharpness 1.2 < 2.3"),
    or None when it is not. The first failing statistic in the order of ``MARGINS`` is named, then
    (with ``local``, the package's ``LOCAL_FILE``) those of ``LOCAL_MARGINS``. ``camera_size``: the
    camera's (width, height) where its source resized ``image`` (``LocalStats.shape``)."""
    if local is not None and (why := local.shape(image, tolerance, camera_size)) is not None:
        return why
    scene, b = _prepared(stats, tolerance)
    # the thumbnail at the package's own size (a package may carry another than THUMB)
    st, t, g, small, c = _measure(image, stats.thumb, local is not None)
    st["scene_distance"] = float(np.linalg.norm(t - scene))
    for k, (lo, hi) in b.items():
        v = st[k]
        if v < lo:
            return f"{REASONS[(k, 'low')]}: {k} {v:.3g} < {lo:.3g}"
        if v > hi:
            return f"{REASONS[(k, 'high')]}: {k} {v:.3g} > {hi:.3g}"
    return local.check(image, g, small, tolerance, c) if local is not None else None


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
# a frame of another shape than every training frame (``frame`` in LOCAL_FILE): beyond their aspect range by
# more than this log ratio (about 10 %: a 5:4 camera's frames against 4:3 training ones pass, 16:9, a portrait
# mounting or a partial frame do not), or, for a model with a ``roi`` (a pixel box), of another size
ASPECT_MARGIN = 0.1
MAX_SIZES = 32
# a camera size a training frame names (or a dataset declares) outside these is no camera's (a hand-made or
# damaged sample, width and height given the wrong way round by a plugin): it would widen the training cameras'
# aspect range for the whole model (one sample naming 999999x1 took every wider camera for sure)
CAMERA_SIDES = (8, 20_000)
CAMERA_MAX_ASPECT = 10.0
# camera sensors' proportions, long side to short (``sensor_shape_problem``): 5328x4608's 1.156, 6:5 (2448x2048), 5:4
# (1280x1024), 4:3, 4096x3000's 1.365, 1608x1104's and 3216x2208's 1.457, 3:2, 752x480's 1.567, 16:10, 5:3 (800x480),
# 16:9, DCI 4K's 1.896; within 2 % of one. A square sensor (or one within 1 % of square: 2856x2848) is one of at least
# SQUARE_SENSOR_MIN px a side (2048x2048, 1024x1024): a smaller square, or proportions of none of these, is more
# likely a dataset resized or cropped since its camera took it (96x96 from 640x480)
SENSOR_ASPECTS = (1.156, 1.2, 1.25, 4 / 3, 1.365, 1.457, 1.5, 1.567, 1.6, 5 / 3, 16 / 9, 1.896)
SENSOR_ASPECT_TOLERANCE = 0.02
SQUARE_SENSOR_MIN = 1000
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
    ("tilt", "high"): "uneven light (gradient or vignetting)",
    ("dome", "low"): "uneven light (gradient or vignetting)",
    ("dome", "high"): "uneven light (gradient or vignetting)",
    ("exposure", "low"): "darker than training (exposure)",
    ("exposure", "high"): "brighter than training (exposure)",
    ("cast_b", "low"): "colour cast (white balance)",
    ("cast_b", "high"): "colour cast (white balance)",
    ("cast_r", "low"): "colour cast (white balance)",
    ("cast_r", "high"): "colour cast (white balance)",
}

# The light over the frame (``shading``). The scene thumbnail is the frame minus its 16-px blur, blind by
# design to a light that changes slowly over the frame, and the other statistics are means or local: a
# light gradient or a lens's vignetting passed them all, and the anomaly model called 55-100 % of good
# frames of a cap or a pcb under one NG. The frame's grey, area-averaged to SHADE x SHADE cells, as the log
# ratio to the training frames' mean cells (``ref``), is fitted by least squares with 1, u, v and r^2 (u, v
# the cells' centres in -1..1, r^2 less its mean): the constant is the ``exposure`` (the light against the
# training's mean view of the same scene: the brightness statistic's range mixes the part's content with the
# light, so that a lamp 20 % dimmer passed it, and the model called most good frames of a pcb NG), ``tilt`` the
# slope's length (a gradient: 0.075 for 15 % across the frame), ``dome`` the r^2 term (a vignette: negative; a
# spot: either). Left out of the fit: cells the reference holds near black
# (no light to measure) or near white, and the frame's own near black or white (clipped: the glare's); then
# the cells more than SHADE_TRIM robust spreads off the fit (a part's feature moved, missing or defective,
# not the light) and the rest fitted again.
SHADE = 8
SHADE_DARK = 16.0  # a reference cell this dark or darker is left out (grey levels)
SHADE_BLACK = 4.0  # a frame's cell this dark is left out
SHADE_BRIGHT = 240.0  # a reference's or frame's cell this bright is left out (near white: clips)
SHADE_TRIM = 2.5
SHADE_MIN = 4  # fewer than SHADE * SHADE / SHADE_MIN cells left: the light is not measured (0, 0, 0)
SHADE_ROUNDS = 6
# as LOCAL_MARGINS (not among them: ``stats`` of LOCAL_FILE holds none of these), in log ratio: a slope of 6 %
# of the light from edge to edge; the light at r^2 = 1 (the middle of an edge) 3 % off the centre's; the whole
# frame's light 3 % beyond the training's darkest or brightest (twice their spread where that is more: a lamp
# of +-8 % gives ~0.1 beyond them, a frame ~20 % darker than the training's mean light is past it)
SHADE_MARGINS = {
    "tilt": (2.0, 0.03, 0.0, "high"),
    "dome": (2.0, 0.03, 0.0, "both"),
    "exposure": (2.0, 0.03, 0.0, "both"),
    "cast_b": (2.0, 0.03, 0.0, "both"),
    "cast_r": (2.0, 0.03, 0.0, "both"),
}
SHADE_KEYS = ("tilt", "dome", "exposure")  # ``shading``'s numbers, in its order
# The light's colour against the same scene's (``cast_b``, ``cast_r``). The whole-frame chroma ranges mix the
# part's own colours with the light's, so they are wide, and a lamp of another colour temperature (each channel
# within +-8 %) passed them on most frames, and the model called 20-38 % of good caps NG under it. The colour frame
# at COLOUR px, area-averaged to SHADE x SHADE cells per channel, as each channel's log ratio to the training's
# mean cells of that channel: a light's gradient or vignette moves the three alike, so the difference of the
# blue's (red's) and the green's, cell by cell, is the cast alone: its mean over the cells (those measured in
# all three, the cells more than SHADE_TRIM robust spreads off it left out, a part's coloured feature moved
# or missing). Its margin: 3 % in the channels' ratio beyond the training's own (2 x spread where more).
CAST_KEYS = ("cast_b", "cast_r")
_SHADE_MATRICES: dict[tuple[str, int, int], np.ndarray] = {}


def _shade_basis(n: int) -> np.ndarray:
    """1, u, v, r^2 (less its mean) at the centres of ``n`` x ``n`` cells (u, v in -1..1), one row a cell."""
    got = _SHADE_MATRICES.get(("basis", n, 0))
    if got is None:
        c = (np.arange(n) + 0.5) / n * 2 - 1
        v, u = np.meshgrid(c, c, indexing="ij")
        r2 = u * u + v * v
        got = np.stack([np.ones_like(u), u, v, r2 - r2.mean()], -1).reshape(-1, 4)
        got.setflags(write=False)  # shared by every thread's frames
        if len(_SHADE_MATRICES) < 16:  # plain dict writes are atomic
            _SHADE_MATRICES[("basis", n, 0)] = got
    return got


def _shade_area(m: int, n: int) -> np.ndarray:
    """``_matrix``'s area shrink of ``m`` rows to ``n``, in float32 (a product with the float32 grey frame)."""
    got = _SHADE_MATRICES.get(("area", m, n))
    if got is None:
        got = _matrix(("area", m, n)).astype(np.float32)
        got.setflags(write=False)
        if len(_SHADE_MATRICES) < 16:
            _SHADE_MATRICES[("area", m, n)] = got
    return got


def shade_cells(lo: np.ndarray, n: int = SHADE) -> np.ndarray:
    """The grey frame (at WORK or LOW px, ``_low``) area-averaged to ``n`` x ``n`` cells, flat (float64)."""
    a = _shade_area(lo.shape[0], n)
    b = a if lo.shape[1] == lo.shape[0] else _shade_area(lo.shape[1], n)
    return (a @ lo.astype(np.float32, copy=False) @ b.T).ravel().astype(np.float64)


class ShadeRef:
    """A reference's cells (``shade_cells`` of the training frames, their mean) made ready for ``shading``
    once per package: the cells it can measure (neither near black nor near white), their basis and its
    pseudo-inverse (a fit is one product)."""

    def __init__(self, ref: np.ndarray) -> None:
        n = int(round(math.sqrt(ref.size)))
        self.n = n
        self.use = (ref >= SHADE_DARK) & (ref <= SHADE_BRIGHT)
        self.basis = np.ascontiguousarray(_shade_basis(n)[self.use])
        self.log_ref = np.log(ref[self.use] + 1.0)
        self.least = ref.size // SHADE_MIN
        self.pinv = np.linalg.pinv(self.basis) if self.basis.shape[0] >= self.least else None
        for a in (self.use, self.basis, self.log_ref, self.pinv):
            if a is not None:
                a.setflags(write=False)  # shared by every thread's frames


def _shade_fit(r: ShadeRef, y: np.ndarray, out: np.ndarray, coef: np.ndarray) -> np.ndarray | None:
    """The least-squares fit of ``y`` over ``r``'s cells but those ``out``, from ``coef`` (the fit of them
    all): each left-out cell given the fit's value and fitted again, SHADE_ROUNDS times (the fit of the
    others to ~1e-6 where a few are out; one product a round, no solve), or None (too few cells left)."""
    n_out = np.count_nonzero(out)
    if n_out == 0:
        return coef
    if out.size - n_out < r.least:
        return None
    assert r.pinv is not None
    fill = y.copy()
    b = r.basis[out]
    for _ in range(SHADE_ROUNDS):
        fill[out] = b @ coef
        coef = r.pinv @ fill
    return coef


def _robust_spread(e: np.ndarray) -> np.ndarray:
    """The robust spread of residual magnitudes ``e`` along their last axis (1.4826 times their median, a normal
    law's standard deviation), plus 0.02 in log ratio as a floor: the bound ``shading`` and ``cast`` trim by."""
    k = e.shape[-1] // 2
    return 1.4826 * np.partition(e, k, axis=-1)[..., k] + 0.02


def shading(cells: np.ndarray, ref: ShadeRef) -> tuple[float, float, float]:
    """(tilt, dome, exposure) of a frame's ``shade_cells`` against a reference's (the training frames' mean);
    (0, 0, 0) where too few cells measure the light."""
    if ref.pinv is None:
        return 0.0, 0.0, 0.0
    c = cells[ref.use]
    y = np.log(c + 1.0) - ref.log_ref
    out = (c < SHADE_BLACK) | (c > SHADE_BRIGHT)
    coef = _shade_fit(ref, y, out, ref.pinv @ y)
    if coef is None:
        return 0.0, 0.0, 0.0
    e = np.abs(y - ref.basis @ coef)
    spread = float(_robust_spread(e[~out]))
    trimmed = _shade_fit(ref, y, out | (e > SHADE_TRIM * spread), coef)
    if trimmed is not None:
        coef = trimmed
    return math.hypot(float(coef[1]), float(coef[2])), float(coef[3]), float(coef[0])


def colour_cells(c: np.ndarray, n: int = SHADE) -> np.ndarray:
    """The colour frame at COLOUR px (B, G, R) area-averaged to ``n`` x ``n`` cells, per channel: (3, n * n)."""
    import cv2

    f = cv2.resize(c.astype(np.float32), (n, n), interpolation=cv2.INTER_AREA)
    return f.reshape(n * n, 3).T.astype(np.float64)


class CastRef:
    """A reference's ``colour_cells`` (the training frames' mean) made ready for ``cast``: the cells measured
    in all three channels, their logs."""

    def __init__(self, ref: np.ndarray) -> None:
        self.n = int(round(math.sqrt(ref.shape[1])))
        self.use = ((ref >= SHADE_DARK) & (ref <= SHADE_BRIGHT)).all(0)
        self.log_ref = np.log(ref[:, self.use] + 1.0)
        self.least = ref.shape[1] // SHADE_MIN
        for a in (self.use, self.log_ref):
            a.setflags(write=False)


def cast(cells: np.ndarray, ref: CastRef) -> tuple[float, float]:
    """(cast_b, cast_r) of a frame's ``colour_cells`` against a reference's: the blue's and the red's log
    ratio to the reference less the green's, over the cells, trimmed; (0, 0) where too few cells measure it."""
    c = cells[:, ref.use]
    keep = ((c >= SHADE_BLACK) & (c <= SHADE_BRIGHT)).all(0)
    if np.count_nonzero(keep) < ref.least:
        return 0.0, 0.0
    y = np.log(c[:, keep] + 1.0) - ref.log_ref[:, keep]
    d = y[::2] - y[1]  # blue less green, red less green
    e = np.abs(d - d.mean(1, keepdims=True))
    spread = _robust_spread(e)  # per row, as ``shading``'s
    inside = e <= SHADE_TRIM * spread[:, None]  # half the cells at least
    got = (d * inside).sum(1) / inside.sum(1)
    return float(got[0]), float(got[1])


def local_stats(
    image: np.ndarray, g: np.ndarray | None = None, lo: np.ndarray | None = None, c: np.ndarray | None = None
) -> dict:
    """One frame's local statistics: ``chroma_b``/``chroma_r`` (log ratio of the blue/red channel's
    mean to the green's; absent for a grey frame), ``saturation`` (the mean per-pixel spread of
    the channels over the mean level, on the frame area-averaged to COLOUR px), ``clipped`` (the share of the
    128-px grey frame at 250 or more: glare), ``banding`` (log10 ratio of the row profile's fine variation
    to the column profile's: a flickering light on a rolling shutter bands the rows) and ``cells``
    (log10 of the mean squared Laplacian in each of GRID x GRID regions). ``g``, ``lo``, ``c``: the frame's
    grey at WORK and LOW px and its colour at COLOUR px where the caller has them already."""
    import cv2

    if g is None or lo is None:
        g = _grey(image)
        lo = _low(g)
    out: dict = {}
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 3:
        if c is None:
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
    if img.dtype == np.uint8 and g.shape[0] == g.shape[1] == WORK:
        # whole levels (the grey frame of a uint8 one): every sum exact in any order and the means exact (WORK is a
        # power of two), as cv2.reduce's, which hands each to OpenCV's worker thread (``_SERIAL_PIXELS``)
        prof = np.stack([g.mean(1, dtype=np.float64), g.mean(0, dtype=np.float64)], 1).astype(np.float32)
    else:
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


def camera_wh(size: Any) -> tuple[int, int] | None:
    """``Frame.camera_size`` as (width, height), whole numbers > 0 (a float that is one: a plugin's
    ``cap.get``), or None for any other form (a plugin's string, one value, three): not used, the frame checked
    by its own shape. It raised in the check before, ``bad_input`` on every frame, counted as the model's errors
    (a fleet canary rolls such a package back)."""
    if size is None:  # a frame as the camera gave it (every frame of most lines)
        return None
    try:
        w, h = size
        if isinstance(w, (bool, str, bytes)) or isinstance(h, (bool, str, bytes)):
            return None
        fw, fh = float(w), float(h)
    except (TypeError, ValueError, OverflowError):
        return None
    if not (0 < fw < 1e6 and 0 < fh < 1e6 and fw.is_integer() and fh.is_integer()):
        return None
    return int(fw), int(fh)


def camera_problem(size: tuple[int, int]) -> str | None:
    """Why ``size`` (width, height) is no camera's size, or None: a side under ``CAMERA_SIDES[0]`` or over
    ``CAMERA_SIDES[1]`` px, or one side more than ``CAMERA_MAX_ASPECT`` times the other."""
    w, h = size
    lo, hi = CAMERA_SIDES
    if not (lo <= w <= hi and lo <= h <= hi):
        return f"a side under {lo} or over {hi} px"
    if max(w, h) > CAMERA_MAX_ASPECT * min(w, h):
        return f"one side more than {CAMERA_MAX_ASPECT:g} times the other"
    return None


def sensor_shape_problem(size: tuple[int, int]) -> str | None:
    """Why ``size`` (width, height) is unlike a camera sensor's frame (a small square, proportions of no common
    sensor: ``SENSOR_ASPECTS``), or None: said where images name no camera and share that size, which then stands
    for their camera's (``dataset import``, the builds)."""
    w, h = size
    long, short = max(w, h), min(w, h)
    r = long / short
    if r <= 1.01:  # square, or within 1 % of it
        if short >= SQUARE_SENSOR_MIN:
            return None
        shape = f"a square of {short} px a side" if long == short else f"nearly square ({w}x{h})"
        return f"{shape}; square camera sensors are {SQUARE_SENSOR_MIN} px or more"
    if any(abs(r / a - 1) <= SENSOR_ASPECT_TOLERANCE for a in SENSOR_ASPECTS):
        return None
    return f"proportions {r:.3g}:1, no common camera sensor's (4:3, 5:4, 3:2, 16:10, 16:9, ...)"


def _counted(sizes: list[tuple[int, int]]) -> dict[str, int] | None:
    """``{"WxH": frames}`` of ``sizes`` in their order, None past ``MAX_SIZES`` different ones."""
    out = Counter(f"{w}x{h}" for w, h in sizes)
    return dict(out) if len(out) <= MAX_SIZES else None


def frame_shapes(shapes, cameras=None) -> dict:
    """The training frames' shape, as ``LOCAL_FILE``'s ``frame`` holds it: the range of their aspect
    (width / height), and their sizes (``[width, height]``, at most ``MAX_SIZES`` different ones; None past
    that) for a model whose ``roi`` is a pixel box of them. ``shapes``: the frames' ``(height, width)``.
    ``cameras``: per frame, the (width, height) of the camera it came from where known (a sample the agent
    uploaded names it: ``protocols.sample_camera``), else None. Where any frame's camera is known, ``camera``
    holds the range of the frames' camera aspect (a known camera's; an unknown one's taken as the frame's own),
    the known cameras' sizes, and ``unknown``: the frame sizes some of whose frames named no camera (an outside
    dataset's images, perhaps resized from a camera of other proportions): a frame resized to one of those is
    checked at it (``LocalStats.shape``). ``frames`` and ``unknown_frames`` count the frames of each (the build
    says them). A camera size that is no camera's (``camera_problem``) counts as none named, the frames' own
    size standing for it, and is counted in ``camera_ignored``. Where no frame names its camera, ``camera_unknown``
    counts the frames of each size (None past ``MAX_SIZES``): a record for the build's line and whoever reads the
    package; the agent's check is the one for no ``camera`` (it and an agent before ``camera`` ignore the key)."""
    each = [(int(w), int(h)) for h, w in shapes]  # each frame's (width, height)
    sizes = sorted(set(each))
    aspects = [w / h for w, h in sizes]
    out: dict = {
        "aspect": [min(aspects), max(aspects)],
        "sizes": [list(wh) for wh in sizes] if len(sizes) <= MAX_SIZES else None,
    }
    if cameras is None or all(c is None for c in cameras):
        out["camera_unknown"] = _counted(each)
        return out
    if len(cameras) != len(shapes):
        raise ValueError(f"{len(cameras)} camera sizes for {len(shapes)} frames")
    given = [None if c is None else (int(c[0]), int(c[1])) for c in cameras]
    ignored = Counter(c for c in given if c is not None and camera_problem(c) is not None)
    if ignored:
        out["camera_ignored"] = {f"{w}x{h}": n for (w, h), n in sorted(ignored.items())[:MAX_SIZES]}
        given = [None if c in ignored else c for c in given]
        if all(c is None for c in given):
            out["camera_unknown"] = _counted(each)
            return out
    named_all = sorted(c for c in given if c is not None)
    unknown_all = sorted(wh for wh, c in zip(each, given, strict=True) if c is None)
    named, unknown = sorted(set(named_all)), sorted(set(unknown_all))
    own = [w / h for w, h in named] + [w / h for w, h in unknown]
    out["camera"] = {
        "aspect": [min(own), max(own)],
        "sizes": [list(wh) for wh in named] if len(named) <= MAX_SIZES else None,
        "unknown": [list(wh) for wh in unknown] if len(unknown) <= MAX_SIZES else None,
        "frames": _counted(named_all),
        "unknown_frames": _counted(unknown_all),
    }
    return out


def camera_lines(frame: dict) -> list[str]:
    """What a build says of its training frames' cameras (``frame_shapes``' record): those named, with their
    frames; the sizes of frames naming none, where a frame resized to one is checked at it; sizes left out."""
    lines = []
    cam, ignored = frame.get("camera"), frame.get("camera_ignored")
    if ignored:
        shown = ", ".join(f"{k} ({n} frame{'s' * (n != 1)})" for k, n in ignored.items())
        lines.append(
            f"training frames' cameras: left out {shown}: no camera's size ({CAMERA_SIDES[0]}-{CAMERA_SIDES[1]} "
            f"px a side, at most {CAMERA_MAX_ASPECT:g}:1); those frames count as naming none"
        )
    if "camera_unknown" in frame:
        counted = frame["camera_unknown"]
        shown = (
            ", ".join(f"{k} ({n})" for k, n in counted.items()) if counted else f"more than {MAX_SIZES} sizes"
        )
        line = (
            f"training frames' cameras: unknown (no image names one, as a user's folder imported without "
            f"--camera-size): their own sizes stand for their cameras', {shown}; a frame resized to such a size by "
            "the camera's width and height is checked at it (a camera of other proportions set to it is not told)"
        )
        odd = []
        for k in counted or {}:
            w, h = (int(v) for v in k.split("x"))
            if why := sensor_shape_problem((w, h)):
                odd.append(f"{k}: {why}")
        if odd:
            line += (
                f"; {'; '.join(odd)}: if they were resized or cropped since the camera took them, import them "
                "again with --camera-size WIDTHxHEIGHT (the camera's own frame size) and build again"
            )
        lines.append(line)
    if cam:
        named, unknown = cam.get("frames"), cam.get("unknown_frames")
        shown = ", ".join(f"{k} ({n})" for k, n in named.items()) if named else f"more than {MAX_SIZES} sizes"
        lines.append(
            f"training frames' cameras (frames): {shown}; the agent measures a frame's camera proportions "
            f"against {cam['aspect'][0]:.3g}-{cam['aspect'][1]:.3g}"
        )
        if unknown:
            sizes = ", ".join(f"{k} ({n})" for k, n in unknown.items())
            lines.append(
                f"training frames naming no camera: {sizes}: a frame resized to such a size is checked at it (a "
                "camera of other proportions set to it is not told); import them with --camera-size to name it"
            )
    return lines


def summarize_local(images, also=(), shapes=None, cameras=None) -> dict:
    """The training images' local statistics, as ``LOCAL_FILE`` holds them (JSON). Colour only when
    every image is a colour (3-channel) frame. ``also``: as ``summarize``'s, the ranges of ``LOCAL_REACHED``
    reach theirs (a lamp of another colour takes colour from a tinted part as well as giving it), the low
    side of ``saturation`` not so far that a grey frame (a mono camera) passes (``_grey_floor``).
    ``shapes``: the frames' ``(height, width)`` as the camera gave them, where ``images`` were shrunk to
    other proportions (default: the images' own); their aspect and sizes are ``frame`` (``frame_shapes``),
    with ``cameras`` (per frame, its camera's (width, height) where known, else None)."""
    rows: list[dict] = []
    seen: list[tuple[int, ...]] = []
    lit: list[np.ndarray] = []
    tint: list[np.ndarray] = []
    for img in images:
        g = _grey(img)
        lo = _low(g)
        a = np.asarray(img)
        c = _area(a, COLOUR, COLOUR) if a.ndim == 3 and a.shape[2] == 3 else None
        rows.append(local_stats(img, g, lo, c))
        lit.append(shade_cells(lo))
        if c is not None:
            tint.append(colour_cells(c))
        seen.append(img.shape[:2])
    if not rows:
        raise ValueError("no images to take input statistics from")
    more = [local_stats(img) for img in also]
    out: dict = {"format": LOCAL_FORMAT, "count": len(rows), "grid": GRID, "stats": {}}
    out["frame"] = frame_shapes(seen if shapes is None else shapes, cameras)
    for k in ("chroma_b", "chroma_r", "saturation", "clipped", "banding"):
        if all(k in r for r in rows):
            own = _rng([r[k] for r in rows])
            rng = _rng_reach(own, [m[k] for m in more if k in m]) if k in LOCAL_REACHED else own
            if k == "saturation" and more:
                rng["p01"] = max(rng["p01"], _grey_floor(own))
            out["stats"][k] = rng
    cells = np.asarray([r["cells"] for r in rows])
    out["cells"] = [_rng(cells[:, i]) for i in range(cells.shape[1])]
    if not more:
        # a build made to accept other light (``also``: its frames under it, a curved light's among them) is
        # not checked for it: its copies sample that light too thinly to bound it (a vignette 30-40 % darker
        # in the corners, which such a build's model holds, lay beyond all 320 curved copies of a cap's frames)
        out["shading"] = _summarize_shading(np.asarray(lit))
        if len(tint) == len(rows):  # every frame a colour one
            out["shading"].update(_summarize_cast(np.asarray(tint)))
    return out


def _summarize_shading(lit: np.ndarray) -> dict:
    """``LOCAL_FILE``'s ``shading``: the training frames' mean cells (``ref``) and the range of each frame's
    ``shading`` against the mean of the others (as a frame at the agent, not in the mean). Outside
    ``stats``: an agent before it refuses a statistic it does not know there, and ignores this; an agent
    before ``exposure`` reads ``tilt`` and ``dome`` alone."""
    ref = lit.mean(0)
    n = len(lit)
    own = [shading(c, ShadeRef((n * ref - c) / (n - 1) if n > 1 else ref)) for c in lit]
    return {
        "cells": SHADE,
        "ref": [round(float(v), 3) for v in ref],
        **{k: _rng([t[i] for t in own]) for i, k in enumerate(SHADE_KEYS)},
    }


def _summarize_cast(tint: np.ndarray) -> dict:
    """``shading``'s ``colour_ref`` (the training frames' mean ``colour_cells``, B, G, R) and the range of
    each frame's ``cast`` against the mean of the others. An agent before it ignores these keys."""
    ref = tint.mean(0)
    n = len(tint)
    own = [cast(c, CastRef((n * ref - c) / (n - 1) if n > 1 else ref)) for c in tint]
    return {
        "colour_ref": [[round(float(v), 3) for v in ch] for ch in ref],
        **{k: _rng([t[i] for t in own]) for i, k in enumerate(CAST_KEYS)},
    }


class LocalStats:
    """A package's ``LOCAL_FILE``, read and checked once (``LocalStats.parse``); ``check`` says why a
    frame is far outside it, or None."""

    def __init__(self, data: dict, colour: bool = True, roi: bool = False) -> None:
        """``colour=False``: a model that sees grey images (its preprocessing's ``color: gray``) is not
        affected by colour, so its frames' colour is not checked. ``roi``: the model cuts a pixel box of the
        frame, so a frame of another size than the training frames' (``frame``'s ``sizes``) is far off."""

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
        # packages before ``frame``: no shape check
        self.aspect: tuple[float, float] | None = None
        self.roi = roi
        # the training frames' sizes (none known past MAX_SIZES different ones)
        self.trained_sizes: frozenset[tuple[int, int]] = frozenset()
        # ``frame``'s ``camera`` (``frame_shapes``): the range of the training frames' camera aspect, the named
        # cameras' sizes, the frame sizes some of whose frames named no camera; None: a package before it
        self.camera: tuple[float, float] | None = None
        self.cameras: list[tuple[int, int]] = []
        self.unknown_sizes: frozenset[tuple[int, int]] = frozenset()
        frame = data.get("frame")
        if frame is not None:
            lo, hi = (float(v) for v in frame["aspect"])
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
                raise ValueError(f"a frame aspect range {frame['aspect']!r} is not 0 < low <= high")
            self.aspect = (lo, hi)
            if frame.get("sizes"):
                self.trained_sizes = frozenset((int(w), int(h)) for w, h in frame["sizes"])
            cam = frame.get("camera")
            if cam is not None:  # packages before it: the frames' own shape stands for their camera's
                lo, hi = (float(v) for v in cam["aspect"])
                if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
                    raise ValueError(f"a camera aspect range {cam['aspect']!r} is not 0 < low <= high")
                self.camera = (lo, hi)
                self.cameras = sorted((int(w), int(h)) for w, h in cam.get("sizes") or ())
                self.unknown_sizes = frozenset((int(w), int(h)) for w, h in cam.get("unknown") or ())
        # packages before ``shading``: the light over the frame is not checked
        self.shade: tuple[ShadeRef, dict[str, tuple[float, float, float, float]]] | None = None
        self.cast: tuple[CastRef, dict[str, tuple[float, float, float, float]]] | None = None
        shade = data.get("shading")
        if shade is not None:
            if not isinstance(shade, dict):
                raise ValueError("shading is not a JSON object")
            n = shade.get("cells")
            ref = np.asarray(shade.get("ref", []), np.float64)
            if (
                not isinstance(n, int)
                or not 3 <= n <= LOW
                or ref.shape != (n * n,)
                or not np.isfinite(ref).all()
            ):
                raise ValueError(f"shading: {n!r} cells with {ref.size} reference values")
            # packages before ``exposure``: tilt and dome alone, as before
            keys = [k for k in SHADE_KEYS if k in ("tilt", "dome") or k in shade]
            self.shade = (ShadeRef(ref), {k: rng(shade[k]) for k in keys})
            # packages before ``cast_b``/``cast_r``, and a model that sees grey images: no cast checked
            tint = shade.get("colour_ref")
            if colour and tint is not None and all(k in shade for k in CAST_KEYS):
                cref = np.asarray(tint, np.float64)
                if cref.shape != (3, n * n) or not np.isfinite(cref).all():
                    raise ValueError(f"shading: colour_ref of shape {cref.shape}, expected (3, {n * n})")
                self.cast = (CastRef(cref), {k: rng(shade[k]) for k in CAST_KEYS})

    @property
    def sizes(self) -> frozenset[tuple[int, int]] | None:
        """The sizes a roi model's frames must have (its training frames'; the roi is a pixel box of them), or
        None where no size is checked (not a roi model, or no training size known)."""
        return self.trained_sizes if self.roi and self.trained_sizes else None

    @classmethod
    def parse(cls, text: str, colour: bool = True, roi: bool = False) -> LocalStats:
        import json

        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls(data, colour, roi)

    def shape(
        self, image: np.ndarray, tolerance: float = 1.0, camera_size: tuple[int, int] | None = None
    ) -> str | None:
        """Why this frame's shape is far from every training frame's (another size where the model's
        ``roi`` is a pixel box of them; another aspect: a camera of other proportions, turned, or a partial
        frame), or None. Checked first: on such a frame the other statistics' reasons would mislead.
        ``camera_size``: the camera's (width, height) where its source resized the frame to its ``width`` x
        ``height``: the aspect is the camera's (resized to other proportions, the part is stretched, as the
        model sees the camera's own frame; the resized one's aspect said nothing), the roi's size the frame's.
        Not where the training frames had the resized frame's very size and named no camera (``frame``'s
        ``camera`` ``unknown``; every size in a package before it): they were such a camera's resized frames or
        images made to its size (a dataset resized to a square, the camera's ``width`` and ``height`` set to
        match), stretched as this frame is, and its shape is the one the model learned. Where the package
        knows its training frames' cameras (``camera``: the samples an agent uploads name theirs), the frame's
        camera aspect is measured against theirs, the reason naming both: a camera of other proportions put in
        place of one whose ``width`` x ``height`` is the training frames' size is no longer judged."""
        h, w = image.shape[:2]
        if self.sizes is not None and (w, h) not in self.sizes:
            known = ", ".join(f"{a}x{b}" for a, b in sorted(self.sizes)[:4])
            return (
                f"frame size unlike training: {w}x{h}, the model's roi is a pixel box of {known} frames "
                "(the camera's resolution changed?)"
            )
        if self.aspect is None or h == 0:
            return None
        lo, hi = self.aspect
        m = math.exp(ASPECT_MARGIN * tolerance)
        cam = camera_wh(camera_size)
        if cam == (w, h):
            cam = None  # as the camera gave it
        # resized to a size training frames of no named camera had: checked at it, as the model learned it
        at_size = cam is not None and (w, h) in (
            self.trained_sizes if self.camera is None else self.unknown_sizes
        )
        by_camera = self.camera is not None and not at_size
        lo, hi = self.camera if by_camera and self.camera is not None else (lo, hi)
        cw, ch = cam if cam is not None and not at_size else (w, h)
        a = cw / ch
        if lo / m <= a <= hi * m:
            return None  # (the reason's text is made only for a frame that fails: this runs on every frame)
        shown = (
            f"{w}x{h}"
            if (cw, ch) == (w, h)
            else f"{cw}x{ch} (resized to {w}x{h} by the camera's width and height)"
        )
        of = ""
        if by_camera:
            named = ", ".join(f"{x}x{y}" for x, y in self.cameras[:4]) + (
                ", ..." if len(self.cameras) > 4 else ""
            )
            of = f" of the training frames' camera{'s' if len(self.cameras) != 1 else ''}" + (
                f" ({named})" if named else ""
            )
        return (
            f"frame shape unlike training (camera resolution, rotation or a partial frame): {shown}, "
            f"aspect {a:.3g} outside {lo / m:.3g}-{hi * m:.3g}{of}"
        )

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

    def _shading(self, lo: np.ndarray, tolerance: float, c: np.ndarray | None = None) -> str | None:
        """Why the light over this frame (``lo``: its grey at LOW px; ``c``: its colour at COLOUR px, None
        for a grey frame) is far from the training frames', or None."""
        assert self.shade is not None
        ref, ranges = self.shade
        got = dict(zip(SHADE_KEYS, shading(shade_cells(lo, ref.n), ref), strict=True))
        if self.cast is not None and c is not None:
            cref, cranges = self.cast
            ranges = {**ranges, **cranges}
            got.update(zip(CAST_KEYS, cast(colour_cells(c, cref.n), cref), strict=True))
        for k, v in got.items():
            if k not in ranges:
                continue
            p01, p50, p99, std = ranges[k]
            k_std, floor, rel, sides = SHADE_MARGINS[k]
            m = tolerance * max(k_std * std, floor, rel * abs(p50))
            if sides != "high" and v < p01 - m:
                return f"{LOCAL_REASONS[(k, 'low')]}: {k} {v:.3g} < {p01 - m:.3g}"
            if sides != "low" and v > p99 + m:
                return f"{LOCAL_REASONS[(k, 'high')]}: {k} {v:.3g} > {p99 + m:.3g}"
        return None

    def check(self, image: np.ndarray, g=None, lo=None, tolerance: float = 1.0, c=None) -> str | None:
        b, cells_low = self.bounds(tolerance)
        if g is None or lo is None:
            g = _grey(image)
            lo = _low(g)
        img = np.asarray(image)
        if c is None and img.ndim == 3 and img.shape[2] == 3:
            c = _area(img, COLOUR, COLOUR)
        st = local_stats(image, g, lo, c)
        for k, (low, hi) in b.items():
            if k not in st:  # a grey frame has no chroma: its saturation says it
                continue
            v = st[k]
            if v < low:
                return f"{LOCAL_REASONS[(k, 'low')]}: {k} {v:.3g} < {low:.3g}"
            if v > hi:
                return f"{LOCAL_REASONS[(k, 'high')]}: {k} {v:.3g} > {hi:.3g}"
        short = np.asarray(st["cells"]) - cells_low
        i = int(np.argmin(short))
        if short[i] < 0:
            v, low = st["cells"][i], cells_low[i]
            return (
                f"{LOCAL_REASONS[('cells', 'low')]}: sharpness {v:.3g} < {low:.3g} in region "
                f"{i // GRID + 1},{i % GRID + 1} of {GRID}x{GRID}"
            )
        # last: a smear over part of the frame also moves its light, and is named as what it is above
        return self._shading(lo, tolerance, c) if self.shade is not None else None
