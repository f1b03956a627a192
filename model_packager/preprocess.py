"""Reference preprocessing and postprocessing declared by a package manifest.

One implementation serves both sides: the trainer builds training and calibration inputs with
it, the agent builds inference inputs with it, so the features a model sees at the edge are
exactly those it was trained on. Pure NumPy (OpenCV only for image resize, imported lazily).

Batch-friendly: ``image_tensor`` and ``signal_features`` return a batch of one; stack them
with ``np.concatenate`` for larger batches.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from model_packager.manifest import (
    ColorOrder,
    ImagePreprocessing,
    Manifest,
    OutputRole,
    OutputSpec,
    SignalPreprocessing,
)


class PreprocessError(ValueError):
    """The input does not fit the manifest's preprocessing (wrong shape, wrong length, NaN)."""


_INTERPOLATION = {"area": 3, "linear": 1, "nearest": 0}  # cv2.INTER_AREA, INTER_LINEAR, INTER_NEAREST


def image_region(image_bgr: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """The part of the frame the model looks at: ``roi`` (pixel box), then the center ``crop``. A
    view, no copy. Raises ``PreprocessError`` for a frame of the wrong shape or a box outside it."""
    img = np.asarray(image_bgr)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)) or img.size == 0:
        raise PreprocessError(f"expected a BGR image HxWx3 or a grey image HxW, got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    x, y, w, h = region_box(img.shape[0], img.shape[1], spec)
    return img[y : y + h, x : x + w]


def region_box(frame_h: int, frame_w: int, spec: ImagePreprocessing) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` in the frame of the region ``image_region`` cuts: ``roi``, then ``crop``."""
    x, y, w, h = 0, 0, frame_w, frame_h
    if spec.roi is not None:
        x, y, w, h = spec.roi
        if x + w > frame_w or y + h > frame_h:
            raise PreprocessError(
                f"the model's roi [x={x}, y={y}, width={w}, height={h}] reaches outside the "
                f"{frame_w}x{frame_h} frame; fix the camera's resolution or the model's roi"
            )
    if spec.crop is not None:
        side = int(round(min(h, w) * spec.crop))
        x, y, w, h = x + (w - side) // 2, y + (h - side) // 2, side, side
    return x, y, w, h


def heatmap_on_frame(
    maps: list[np.ndarray],
    frame_hw: tuple[int, int],
    spec: ImagePreprocessing,
    max_side: int = 256,
    scaled: bool = False,
) -> np.ndarray:
    """The model's heat maps (one per tile, or one) placed where they belong in the frame, at a
    resolution of at most ``max_side`` pixels (overlapping tiles: the larger value; outside the
    region: the lowest), scaled to [0, 1]. Resize it to the frame to overlay it. ``scaled``: the maps
    are in [0, 1] already (an anomaly map in threshold units), kept as they are, 0 outside the region."""
    import cv2

    fh, fw = frame_hw
    f = min(1.0, max_side / max(fh, fw))
    lo, hi = (0.0, 1.0) if scaled else _draw_range(np.concatenate([np.ravel(m) for m in maps]))
    out = np.full((max(1, round(fh * f)), max(1, round(fw * f))), lo, dtype=np.float32)
    rx, ry, rw, rh = region_box(fh, fw, spec)
    for m, (x, y, w, h) in zip(maps, tile_boxes(rh, rw, spec), strict=True):
        x0, y0 = round((rx + x) * f), round((ry + y) * f)
        x1, y1 = (
            min(out.shape[1], max(x0 + 1, round((rx + x + w) * f))),
            min(out.shape[0], max(y0 + 1, round((ry + y + h) * f))),
        )
        part = cv2.resize(np.asarray(m, np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        np.maximum(out[y0:y1, x0:x1], part, out=out[y0:y1, x0:x1])
    if scaled:
        return out
    return _to_unit(out, lo, min(hi, float(out.max())))  # a map shrunk to its place may have lost its top


_F32_MAX = float(np.finfo(np.float32).max)
# a heat map's cell whose magnitude passes HEATMAP_SPAN times the larger of 1 and the magnitude of the middle
# half of its cells is a broken or masked cell (-1e30): drawn from lowest to highest with it, every other cell
# came out 1.0 (or 0.0), the hot spot lost. It is left out of the drawing range and clipped to its nearer end.
HEATMAP_SPAN = 1e6


def _draw_range(h: np.ndarray) -> tuple[float, float]:
    """The lowest and highest of the heat map's cells that are drawn to scale: every finite cell but those
    beyond ``HEATMAP_SPAN`` (above); a map whose cells all lie within +-1e6 (any sound one) costs two passes."""
    lo, hi = float(h.min()), float(h.max())
    if max(-lo, hi) <= HEATMAP_SPAN:  # within the bound whatever the middle half's magnitude (at least 1)
        return lo, hi
    cells = h[np.isfinite(h)].astype(np.float64)
    if cells.size == 0:
        return 0.0, 0.0
    q1, q3 = np.percentile(cells, [25.0, 75.0])
    kept = cells[np.abs(cells) <= HEATMAP_SPAN * max(1.0, abs(float(q1)), abs(float(q3)))]
    return float(kept.min()), float(kept.max())


def _to_unit(h: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``h`` (float32) scaled from ``[lo, hi]`` to [0, 1] (``_draw_range``), a cell beyond clipped to the
    nearer end; when flat, 0 but for cells above it (1). In double when the span passes float32's largest
    value (a map from -3e38 to 3e38, every value finite): ``h - lo`` in float32 overflowed, the map came out
    0 and NaN, its hot spot drawn cold."""
    if not hi > lo:
        return (h > hi).astype(np.float32)
    if hi - lo <= _F32_MAX and float(h.min()) >= lo and float(h.max()) <= hi:
        return (h - lo) / (hi - lo)
    return np.clip((h.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def tile_boxes(height: int, width: int, spec: ImagePreprocessing) -> list[tuple[int, int, int, int]]:
    """``(x, y, w, h)`` of each tile in a region of ``width`` x ``height``, row-major; one box (the
    whole region) without tiles. Tiles are equal in size, cover the region, and overlap their
    neighbours by about ``tile_overlap`` of a tile."""
    if not spec.tiles:
        return [(0, 0, width, height)]
    cols, rows = spec.tiles
    ov = spec.tile_overlap
    tw = min(width, int(np.ceil(width / (cols - (cols - 1) * ov))))
    th = min(height, int(np.ceil(height / (rows - (rows - 1) * ov))))
    xs = [int(round(i * (width - tw) / (cols - 1))) if cols > 1 else (width - tw) // 2 for i in range(cols)]
    ys = [int(round(j * (height - th) / (rows - 1))) if rows > 1 else (height - th) // 2 for j in range(rows)]
    return [(x, y, tw, th) for y in ys for x in xs]


_AFFINE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _affine(spec: ImagePreprocessing, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel ``a, b`` with ``x * a + b == (x * scale - mean) / std`` (cached per spec)."""
    key = (spec.scale, tuple(spec.mean[:c]), tuple(spec.std[:c]), c)
    ab = _AFFINE.get(key)
    if ab is None:
        std = np.asarray(spec.std[:c], dtype=np.float64)
        ab = (
            (spec.scale / std).astype(np.float32),
            (-np.asarray(spec.mean[:c], dtype=np.float64) / std).astype(np.float32),
        )
        _AFFINE[key] = ab
    return ab


IMAGE_INPUT_DTYPES = ("float32", "float16", "uint8")


@dataclass(frozen=True)
class _ImagePlan:
    """What ``image_tensor`` does to a frame of one shape under one spec, worked out once: the frame's
    region, the tiles, the output's shape and each channel's source plane and ``a, b`` as Python floats.
    A frame pipeline sees one shape all day, and after each model run every Python line it executes is
    cold (code and data evicted by the engine's kernels): per frame, only the pixel passes remain."""

    spec: ImagePreprocessing  # held, so that the ``id`` the plan is cached under stays this spec's
    region: tuple[int, int, int, int]  # (x, y, w, h) in the frame
    boxes: tuple[tuple[int, int, int, int], ...]  # (x, y, w, h) of each tile in the region
    grey_in: bool  # a 2-D frame (or HxWx1)
    c: int
    shape: tuple[int, ...]  # the output's
    interp: int
    order: tuple[int, ...]  # the frame's plane for each output channel
    coefs: tuple[tuple[float, float], ...]  # ``a, b`` per output channel (float inputs)


_PLANS: dict[tuple[int, tuple[int, ...]], _ImagePlan] = {}
_MAX_PLANS = 256  # specs x frame shapes a process keeps plans for (a trainer reading images of every size)


def _image_plan(spec: ImagePreprocessing, img: np.ndarray) -> _ImagePlan:
    key = (id(spec), img.shape)
    plan = _PLANS.get(key)
    if plan is not None and plan.spec is spec:
        return plan
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)) or img.size == 0:
        raise PreprocessError(f"expected a BGR image HxWx3 or a grey image HxW, got shape {img.shape}")
    region = region_box(img.shape[0], img.shape[1], spec)
    gray = spec.color is ColorOrder.GRAY
    c = 1 if gray else 3
    hw = (spec.height, spec.width)
    boxes = tuple(tile_boxes(region[3], region[2], spec))
    a, b = _affine(spec, c)
    plan = _ImagePlan(
        spec=spec,
        region=region,
        boxes=boxes,
        grey_in=img.ndim == 2 or img.shape[2] == 1,
        c=c,
        shape=(len(boxes), c, *hw) if spec.layout == "NCHW" else (len(boxes), *hw, c),
        interp=_INTERPOLATION[spec.interpolation],
        order=tuple(range(c)) if spec.color is not ColorOrder.RGB else (2, 1, 0),
        coefs=tuple((float(a[ch]), float(b[ch])) for ch in range(c)),
    )
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


_SCRATCH = threading.local()
# bytes of buffers a thread keeps: a 224-px model's take 301 kB, a 1024-px one's 6 MiB. One inference thread serves
# every model of the gateway, so a model's pair must fit beside the others': a buffer over _MAX_SCRATCH_ONE (a
# 1106-px RGB model's) is allocated for its call and freed after it (a 5000x5000-px model's 75 MB, a 1280-px one's
# 4.7 MiB), and a large model's pair (7 MiB at most) always leaves a small one's in the budget. When the budget is
# full, the buffers used least lately are dropped (a swapped-out model's, one odd frame's): a thread never holds
# more than this
_MAX_SCRATCH_BYTES = 8 << 20
_MAX_SCRATCH_ONE = (_MAX_SCRATCH_BYTES - (1 << 20)) // 2


def _scratch(what: str, shape: tuple[int, ...]) -> list[np.ndarray]:
    """This thread's own uint8 buffers for the steps between the frame and the tensor (``what``: "resized", one
    ``shape`` array; "planes", three), reused by every ``image_tensor`` call: each is read back within the call
    and never returned. Fresh ones cost their allocation on every frame, and after a model run the new memory
    is cold too: a 224-px split into fresh planes took 46 µs, 90 µs after a run, into these 20 and 48 µs.
    At most ``_MAX_SCRATCH_BYTES`` are kept, none over ``_MAX_SCRATCH_ONE``, the least lately used dropped first."""
    held = getattr(_SCRATCH, "held", None)
    if held is None:
        held = _SCRATCH.held = {}
    key = (what, shape)
    bufs = held.pop(key, None)
    if bufs is not None:
        held[key] = bufs  # last used: the end of the order
        return bufs
    n = 3 if what == "planes" else 1
    size = n * math.prod(shape)
    bufs = [np.empty(shape, np.uint8) for _ in range(n)]
    if size <= _MAX_SCRATCH_ONE:
        kept = sum(b.nbytes for v in held.values() for b in v)
        while held and kept + size > _MAX_SCRATCH_BYTES:
            kept -= sum(b.nbytes for b in held.pop(next(iter(held))))
        held[key] = bufs
    return bufs


def image_tensor(image_bgr: np.ndarray, spec: ImagePreprocessing, dtype: str = "float32") -> np.ndarray:
    """BGR uint8 HxWx3 (or HxW grey) frame -> (T, C, H, W) or (T, H, W, C), T = 1 or the number of
    tiles, of the model input's ``dtype``. The one implementation the trainer and the agent use:
    region of interest, crop, tiles, resize, colour, then scale and normalisation fused into one
    pass per channel written into the output buffer. ``uint8``: the pixels as they are (the model
    normalises; the manifest's scale, mean and std are the identity), no float pass at all."""
    import cv2

    if dtype not in IMAGE_INPUT_DTYPES:
        raise PreprocessError(f"an image input is one of {list(IMAGE_INPUT_DTYPES)}, not {dtype}")
    img = np.asarray(image_bgr)
    plan = _image_plan(spec, img)
    x, y, w, h = plan.region
    img = img[y : y + h, x : x + w]
    if plan.grey_in:
        if img.ndim == 3:
            img = img[:, :, 0]
        if plan.c == 3:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if dtype == "uint8":
        return _pixel_tensor(img, plan)
    gray = plan.c == 1
    nchw = spec.layout == "NCHW"
    out = np.empty(plan.shape, dtype=np.float32)
    for k, (x, y, w, h) in enumerate(plan.boxes):
        t = img[y : y + h, x : x + w]
        if (h, w) != (spec.height, spec.width):
            into = _scratch("resized", (spec.height, spec.width, *t.shape[2:]))[0]
            t = cv2.resize(t, (spec.width, spec.height), dst=into, interpolation=plan.interp)
        if gray and t.ndim == 3:
            t = cv2.cvtColor(np.ascontiguousarray(t), cv2.COLOR_BGR2GRAY)
        if gray:
            t = t[:, :, None]
        if nchw and t.dtype == np.uint8:
            # one OpenCV pass per channel, uint8 plane -> float32 ``x * a + b`` straight into the output
            # plane (contiguous in NCHW): 0.6x the time of numpy's cast-multiply-add on a 224-px input,
            # computed in double and rounded once (the numpy form rounded twice)
            planes = cv2.split(t, _scratch("planes", t.shape[:2])) if not gray else (t[:, :, 0],)
            for ch, src in enumerate(plan.order):
                dst = out[k, ch]
                a, b = plan.coefs[ch]
                got = cv2.addWeighted(planes[src], a, planes[src], 0.0, b, dst=dst, dtype=cv2.CV_32F)
                if got is not dst:  # OpenCV allocated its own (it writes in place for a matching plane)
                    dst[...] = got
            continue
        for ch, src in enumerate(plan.order):
            dst = out[k, ch] if nchw else out[k, :, :, ch]
            a, b = plan.coefs[ch]
            np.multiply(t[:, :, src], np.float32(a), out=dst, casting="unsafe")
            dst += np.float32(b)
    return out.astype(np.float16) if dtype == "float16" else out


def _pixel_tensor(img: np.ndarray, plan: _ImagePlan) -> np.ndarray:
    """``image_tensor`` for a uint8 input: resize, colour and layout only, written into the output.
    The same geometry and resize as the float path, so a model gets the pixels the float path
    would have scaled."""
    import cv2

    spec = plan.spec
    hw = (spec.height, spec.width)
    nchw = spec.layout == "NCHW"
    gray = plan.c == 1
    out = np.empty(plan.shape, dtype=np.uint8)
    for k, (x, y, w, h) in enumerate(plan.boxes):
        t = img[y : y + h, x : x + w]
        if (h, w) != hw:
            direct = not nchw and not gray and spec.color is ColorOrder.BGR  # resized into the output
            dst = out[k] if direct else _scratch("resized", (spec.height, spec.width, *t.shape[2:]))[0]
            t = cv2.resize(t, (spec.width, spec.height), dst=dst, interpolation=plan.interp)
            if direct:
                if t is not dst:  # OpenCV allocated its own
                    out[k] = t
                continue
        if gray:
            g = cv2.cvtColor(np.ascontiguousarray(t), cv2.COLOR_BGR2GRAY) if t.ndim == 3 else t
            (out[k, 0] if nchw else out[k, :, :, 0])[...] = g
        elif nchw:  # each channel split straight into its output plane (RGB: the frame's B is plane 2)
            dst_planes = [out[k, 2], out[k, 1], out[k, 0]] if spec.color is ColorOrder.RGB else list(out[k])
            got = cv2.split(np.ascontiguousarray(t), dst_planes)
            for g, d in zip(got, dst_planes, strict=True):
                if g is not d:  # OpenCV allocated its own
                    d[...] = g
        else:
            out[k] = t[:, :, ::-1] if spec.color is ColorOrder.RGB else t
    return out


_RAW_FEATURE_CACHE: dict[tuple[int, float, int, float | None], tuple[np.ndarray, np.ndarray]] = {}


def _band_plan(spec: SignalPreprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Hann window and band edges (FFT bin indices) for this spec, cached."""
    key = (spec.window_samples, spec.sample_rate_hz, spec.n_bands, spec.f_max_hz)
    plan = _RAW_FEATURE_CACHE.get(key)
    if plan is None:
        n = spec.window_samples
        window = np.hanning(n).astype(np.float64)
        n_bins = n // 2 + 1
        f_max = spec.f_max_hz or spec.sample_rate_hz / 2
        last_bin = min(n_bins, int(np.floor(f_max / (spec.sample_rate_hz / n))) + 1)
        edges = np.linspace(1, last_bin, spec.n_bands + 1).astype(np.int64)  # skip DC
        edges[1:] = np.maximum(edges[1:], edges[:-1] + 1)
        plan = (window, edges)
        _RAW_FEATURE_CACHE[key] = plan
    return plan


def signal_features(
    waveform: np.ndarray, scalars: dict[str, float] | None, spec: SignalPreprocessing
) -> np.ndarray:
    """One window -> float32 (1, n_features), as declared by ``SignalPreprocessing``."""
    x = np.asarray(waveform, dtype=np.float64).ravel()
    if x.shape[0] != spec.window_samples:
        raise PreprocessError(
            f"window has {x.shape[0]} samples of {spec.waveform!r}, the model expects {spec.window_samples}"
        )
    if not np.all(np.isfinite(x)):
        raise PreprocessError(f"window of {spec.waveform!r} holds NaN or Inf")
    window, edges = _band_plan(spec)
    mag = np.abs(np.fft.rfft((x - x.mean()) * window)) * (2.0 / window.sum())
    power = mag * mag
    csum = np.concatenate([[0.0], np.cumsum(power)])
    lo, hi = edges[:-1], edges[1:]
    bands = (csum[np.minimum(hi, len(power))] - csum[np.minimum(lo, len(power))]) / np.maximum(hi - lo, 1)
    feats = [np.log(bands + spec.log_eps)]
    if spec.time_features:
        centered = x - x.mean()
        rms = float(np.sqrt(np.mean(centered**2)))
        peak = float(np.max(np.abs(centered)))
        crest = peak / rms if rms > 0 else 0.0
        var = float(np.mean(centered**2))
        kurt = float(np.mean(centered**4) / var**2) if var > 0 else 0.0
        feats.append(np.array([rms, peak, crest, kurt]))
    if spec.scalars:
        scalars = scalars or {}
        missing = [s for s in spec.scalars if s not in scalars]
        if missing:
            raise PreprocessError(f"window lacks scalar tag(s) {missing} that the model needs")
        feats.append(np.array([float(scalars[s]) for s in spec.scalars]))
    if spec.condition is not None:
        feats.append(_condition(x, scalars, spec))
    out = np.concatenate(feats)
    if spec.mean is not None:
        out = out - np.asarray(spec.mean)
    if spec.std is not None:
        out = out / np.asarray(spec.std)
    return out.astype(np.float32)[None, :]


def _condition(x: np.ndarray, scalars: dict[str, float] | None, spec: SignalPreprocessing) -> np.ndarray:
    from model_packager.condition import Bearing, condition_features, relative_to_rms

    c = spec.condition
    assert c is not None  # called only when the manifest declares condition features
    speed = None
    if c.speed_scalar is not None:
        scalars = scalars or {}
        if c.speed_scalar not in scalars:
            raise PreprocessError(
                f"window lacks the shaft speed scalar {c.speed_scalar!r} that the model needs"
            )
        speed = float(scalars[c.speed_scalar]) / 60.0
    bearing = Bearing(int(c.bearing[0]), *map(float, c.bearing[1:])) if c.bearing else None
    f = condition_features(
        x,
        spec.sample_rate_hz,
        speed,
        bearing,
        c.units,
        (c.speed_range_rpm[0] / 60, c.speed_range_rpm[1] / 60),
    )
    if c.relative:
        f = relative_to_rms(f)
    return np.array([f[n] for n in c.names])


@dataclass
class Interpretation:
    """What one model output means, per the manifest. Batch of one."""

    verdict: str  # "OK", "NG", or "UNSURE" (set by the agent when the input is far off; see ``reason``)
    score: float  # the number the verdict was taken on (NG probability or anomaly score)
    label: str | None = None  # top class of the first classifier output
    ok_label: str | None = None  # the first classifier output's ok class, if it names one
    probabilities: dict[str, float] = field(default_factory=dict)
    margin: float | None = None  # top1 - top2 probability (low = uncertain)
    anomaly_score: float | None = None
    remaining_life: float | None = None
    remaining_life_unit: str | None = None
    remaining_life_raw: float | None = None  # the model's value when below 0 (``remaining_life`` is then 0)
    heatmap: np.ndarray | None = None  # 2-D float32, values in [0, 1]
    extra: dict[str, dict[str, float]] = field(default_factory=dict)  # further classifier outputs
    tile: int | None = None  # tiled models: the (row-major) tile the verdict comes from
    raw_heatmap: np.ndarray | None = field(default=None, repr=False)  # the model's map, before scaling
    reason: str | None = None  # why UNSURE


# a class_probs output's values: probabilities, within the rounding of a float16 or 8-bit softmax
PROB_LOW, PROB_HIGH = -0.01, 1.01

# a remaining life, or its overshoot past the failure, longer than a century is a broken model's number; in the
# output's unit (a unit the agent does not know is read as seconds, the smallest bound)
MAX_LIFE_S = 100 * 365.25 * 86400.0
_LIFE_UNIT_S = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
# an anomaly score below -ANOMALY_SCORE_SPAN times its threshold's magnitude (at least 1) is a broken model's number
# (-1e30), which read OK below every threshold. The trainer's scores are distances, never below 0; an own model's
# may be (a log-likelihood), by far less. No bound above: a loud defect or a saturated sensor scores high, NG.
ANOMALY_SCORE_SPAN = 1e6


def _softmax(z: np.ndarray) -> list[float]:
    """In plain floats (double): a class vector is short, and a few Python operations cost less than
    numpy's per-call overhead, which counts on every frame."""
    return _softmax_values(z.tolist())


def _softmax_values(v: list[float]) -> list[float]:
    top = max(v)
    e = [math.exp(x - top) for x in v]
    s = math.fsum(e)
    return [x / s for x in e]


def interpret(
    manifest: Manifest, outputs: dict[str, np.ndarray], frame_hw: tuple[int, int] | None = None
) -> Interpretation:
    """Turn raw model outputs (batch of one) into a verdict as the manifest declares; for a tiled
    image model (one batch row per tile), the worst tile's verdict, label, probabilities and score
    (NG when any tile is NG) and the tiles' heat maps stitched in place into one map. Given the
    frame's ``frame_hw``, a model with a ``roi`` or ``tiles`` has its heat map placed in frame
    coordinates (``heatmap_on_frame``), so that it overlays the frame where the model looked."""
    pre = manifest.preprocessing
    n = pre.n_tiles if isinstance(pre, ImagePreprocessing) else 1
    if n == 1 or not isinstance(pre, ImagePreprocessing):
        res = _interpret_one(manifest, outputs)
        if frame_hw is not None and isinstance(pre, ImagePreprocessing) and (pre.roi or pre.crop):
            if res.raw_heatmap is not None:
                res.heatmap = heatmap_on_frame([res.raw_heatmap], frame_hw, pre)
            elif res.heatmap is not None:  # an anomaly map, already in threshold units: placed as it is
                res.heatmap = heatmap_on_frame([res.heatmap], frame_hw, pre, scaled=True)
        return res
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    for name, v in arrays.items():
        if v.ndim == 0 or v.shape[0] != n:
            raise PreprocessError(
                f"output {name!r} has {v.shape[0] if v.ndim else 0} rows for the model's {n} tiles"
            )
    tiles = [_interpret_one(manifest, {k: v[i : i + 1] for k, v in arrays.items()}) for i in range(n)]
    worst = max(range(n), key=lambda i: (tiles[i].verdict == "NG", tiles[i].score))
    res = tiles[worst]
    hm = [t.raw_heatmap for t in tiles if t.raw_heatmap is not None]
    am = [t.heatmap for t in tiles if t.raw_heatmap is None and t.heatmap is not None]
    # anomaly maps are in threshold units already (the threshold at mid-scale): stitched as they are, never
    # rescaled per frame, or the worst tile's map alone would have been the frame's
    scaled = len(am) == n
    maps = am if scaled else hm
    if frame_hw is not None and len(maps) == n:
        res.heatmap = heatmap_on_frame(maps, frame_hw, pre, scaled=scaled)
    elif len(maps) == n:
        assert pre.tiles is not None  # n > 1 only with tiles
        cols, rows = pre.tiles
        grid = np.concatenate(
            [np.concatenate(maps[r * cols : (r + 1) * cols], axis=1) for r in range(rows)], axis=0
        )
        res.heatmap = grid if scaled else _to_unit(grid, *_draw_range(grid))
    res.tile = worst
    return res


@dataclass(frozen=True)
class LogitsPlan:
    """A manifest whose one output is an untiled classifier's logits (the common vision and maintenance
    package), read once (``logits_plan``): ``interpret_logits`` then gives ``interpret``'s very result in a
    few float operations. Every Python line after a model run executes cold (its code and data evicted by
    the engine's kernels): the slot's finite test and ``interpret``'s general walk over the outputs took
    75-85 µs a frame so on a loaded 2-core gateway, this and its finite test 43-46 µs."""

    name: str
    labels: tuple[str, ...]
    ok_label: str | None
    threshold: float | None


def logits_plan(manifest: Manifest) -> LogitsPlan | None:
    """The plan for ``manifest`` when its one output is class logits and it is not tiled, else None."""
    pre = manifest.preprocessing
    if len(manifest.outputs) != 1 or (isinstance(pre, ImagePreprocessing) and pre.n_tiles != 1):
        return None
    spec = manifest.outputs[0]
    if spec.role is not OutputRole.CLASS_LOGITS or not spec.labels:
        return None
    return LogitsPlan(spec.name, tuple(spec.labels), spec.ok_label, spec.threshold)


def logits_values(plan: LogitsPlan, outputs: dict[str, np.ndarray]) -> list[float] | None:
    """The plan's logits as Python floats when ``outputs`` are exactly what it reads (its one output, a
    float32 or float16 array of one value per label); None otherwise (``interpret`` reads them then, and
    says what does not fit)."""
    if len(outputs) != 1:
        return None
    v = outputs.get(plan.name)
    if type(v) is not np.ndarray or v.dtype.kind != "f" or v.dtype.itemsize > 4 or v.size != len(plan.labels):
        return None
    return v.ravel().tolist()


def interpret_logits(plan: LogitsPlan, z: list[float]) -> Interpretation:
    """``interpret(manifest, outputs)`` for ``logits_values(plan, outputs)`` ``z`` (finite): the same verdict,
    score, label, probabilities and margin."""
    p = _softmax_values(z)
    labels = plan.labels
    probs = dict(zip(labels, p, strict=True))
    top = max(range(len(p)), key=p.__getitem__)
    res = Interpretation(
        verdict="OK",
        score=0.0,
        label=labels[top],
        ok_label=plan.ok_label,
        probabilities=probs,
        margin=p[top] - max((q for i, q in enumerate(p) if i != top), default=0.0),
    )
    if plan.ok_label is not None and plan.threshold is not None:
        res.score = 1.0 - probs[plan.ok_label]
        if res.score >= plan.threshold:
            res.verdict = "NG"
    return res


def _one_value(spec: OutputSpec, val: np.ndarray) -> float:
    """The one value per item of an ``anomaly_score`` or ``remaining_life`` output ((N,) or (N,1)). A model
    giving more (per-region scores under a symbolic dimension the install check cannot compare) had its first
    read and the others dropped: a defect scored in any other region was OK."""
    if val.size != 1:
        raise PreprocessError(
            f"output {spec.name!r} ({spec.role.value}) gives {val.size} values for one item (shape "
            f"{list(val.shape)}), not one: its manifest shape is (N,) or (N,1), one value per item"
        )
    return float(val.reshape(-1)[0])


def _interpret_one(manifest: Manifest, outputs: dict[str, np.ndarray]) -> Interpretation:
    """Turn raw model outputs (batch of one) into a verdict as the manifest declares.

    NG when any thresholded output reaches its threshold: a classifier with ``ok_label`` and
    ``threshold`` (NG score = 1 - p(ok)), or an anomaly score. ``score`` is the classifier's NG
    probability if there is one, else the anomaly score.
    """
    res = Interpretation(verdict="OK", score=0.0)
    ng = False
    scored = False
    first_classifier = True
    for spec in manifest.outputs:
        if spec.name not in outputs:
            raise PreprocessError(f"model produced no output {spec.name!r} declared in the manifest")
        val = np.asarray(outputs[spec.name])
        if spec.role in (OutputRole.CLASS_LOGITS, OutputRole.CLASS_PROBS):
            v = val.reshape(-1)
            labels = spec.labels
            assert labels is not None  # the manifest refuses a class output without labels
            if v.shape[0] != len(labels):
                raise PreprocessError(
                    f"output {spec.name!r} has {v.shape[0]} values for {len(labels)} labels"
                )
            p = _softmax(v) if spec.role is OutputRole.CLASS_LOGITS else v.tolist()
            if spec.role is OutputRole.CLASS_PROBS and not PROB_LOW <= min(p) <= max(p) <= PROB_HIGH:
                # logits declared as probabilities (a p(ok) of 1.7 gave an NG score of -0.7: OK whatever the
                # part), or a model broken on this item: no verdict, and negative "probabilities" published
                bad = min(p) if min(p) < PROB_LOW else max(p)
                raise PreprocessError(
                    f"output {spec.name!r} is class_probs but gives {labels[p.index(bad)]!r} {bad:.6g}, not a "
                    "probability in [0, 1]: declare role class_logits if the model outputs logits (the "
                    "softmax is applied to them)"
                )
            probs = dict(zip(labels, p, strict=True))
            if first_classifier:
                top = max(range(len(p)), key=p.__getitem__)
                res.label = labels[top]
                res.ok_label = spec.ok_label
                res.probabilities = probs
                res.margin = p[top] - max((q for i, q in enumerate(p) if i != top), default=0.0)
                first_classifier = False
            else:
                res.extra[spec.name] = probs
            if spec.ok_label is not None and spec.threshold is not None:
                ng_score = 1.0 - probs[spec.ok_label]
                ng = ng or ng_score >= spec.threshold
                if not scored:
                    res.score, scored = ng_score, True
        elif spec.role is OutputRole.ANOMALY_SCORE:
            assert spec.threshold is not None  # the manifest refuses an anomaly output without one
            s = _one_value(spec, val)
            floor = -ANOMALY_SCORE_SPAN * max(abs(spec.threshold), 1.0)
            if s < floor:  # -1e30 from a broken model: OK below every threshold, whatever the part
                raise PreprocessError(
                    f"output {spec.name!r} (anomaly_score) gives {s:.6g}, below {floor:.6g} (a million times the "
                    f"larger of 1 and its threshold {spec.threshold:.6g}, under 0): not an anomaly score"
                )
            res.anomaly_score = s
            ng = ng or s >= spec.threshold
            if not scored:
                res.score, scored = s, True
        elif spec.role is OutputRole.REMAINING_LIFE:
            life = _one_value(spec, val)
            bound, unit = MAX_LIFE_S / _LIFE_UNIT_S.get(spec.unit or "s", 1.0), f" {spec.unit or ''}".rstrip()
            if not abs(life) <= bound:  # -1e30 from a broken model: no "due now" alarm, no life published
                raise PreprocessError(
                    f"output {spec.name!r} (remaining_life) gives {life:.6g}{unit}: beyond a century "
                    f"({bound:.6g}{unit}) either way, not a remaining life"
                )
            if life < 0.0:  # a regression past the failure it predicts (-3 h): due now, published as 0
                res.remaining_life_raw = life
            res.remaining_life = max(life, 0.0)
            res.remaining_life_unit = spec.unit
        elif spec.role is OutputRole.HEATMAP:
            h = val.reshape(val.shape[-2], val.shape[-1]).astype(np.float32)
            res.raw_heatmap = h
            res.heatmap = _to_unit(h, *_draw_range(h))
        elif spec.role is OutputRole.ANOMALY_MAP:  # in score units: the threshold shows mid-scale
            assert spec.threshold is not None  # the manifest refuses an anomaly map without one
            h = val.reshape(val.shape[-2], val.shape[-1]).astype(np.float32)
            res.heatmap = (
                np.clip(np.divide(h, np.float32(2.0 * spec.threshold)), 0.0, 1.0)
                if spec.threshold > 0
                else np.zeros_like(h)
            )
    res.verdict = "NG" if ng else "OK"
    return res
