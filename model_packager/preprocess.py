"""Reference preprocessing and postprocessing declared by a package manifest.

One implementation serves both sides: the trainer builds training and calibration inputs with
it, the agent builds inference inputs with it, so the features a model sees at the edge are
exactly those it was trained on. Pure NumPy (OpenCV only for image resize, imported lazily).

Batch-friendly: ``image_tensor`` and ``signal_features`` return a batch of one; stack them
with ``np.concatenate`` for larger batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model_packager.manifest import (
    ColorOrder,
    ImagePreprocessing,
    Manifest,
    OutputRole,
    SignalPreprocessing,
)


class PreprocessError(ValueError):
    """The input does not fit the manifest's preprocessing (wrong shape, wrong length, NaN)."""


def image_tensor(image_bgr: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """BGR uint8 HxWx3 (or HxW gray) image -> float32 (1, C, H, W) or (1, H, W, C)."""
    import cv2

    img = np.asarray(image_bgr)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise PreprocessError(f"expected a BGR image HxWx3, got shape {img.shape}")
    if spec.crop is not None:
        h, w = img.shape[:2]
        side = int(round(min(h, w) * spec.crop))
        y0, x0 = (h - side) // 2, (w - side) // 2
        img = img[y0 : y0 + side, x0 : x0 + side]
    interp = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}[
        spec.interpolation
    ]
    if img.shape[1] != spec.width or img.shape[0] != spec.height:
        img = cv2.resize(img, (spec.width, spec.height), interpolation=interp)
    if spec.color is ColorOrder.RGB:
        img = img[:, :, ::-1]
    elif spec.color is ColorOrder.GRAY:
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2GRAY)[:, :, None]
    x = img.astype(np.float32) * np.float32(spec.scale)
    c = x.shape[2]
    mean = np.asarray(spec.mean[:c], dtype=np.float32)
    std = np.asarray(spec.std[:c], dtype=np.float32)
    x = (x - mean) / std
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None, ...], dtype=np.float32)


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
    out = np.concatenate(feats)
    if spec.mean is not None:
        out = out - np.asarray(spec.mean)
    if spec.std is not None:
        out = out / np.asarray(spec.std)
    return out.astype(np.float32)[None, :]


@dataclass
class Interpretation:
    """What one model output means, per the manifest. Batch of one."""

    verdict: str  # "OK", "NG", or "UNSURE" (set by the agent when the input is far off; see ``reason``)
    score: float  # the number the verdict was taken on (NG probability or anomaly score)
    label: str | None = None  # top class of the first classifier output
    probabilities: dict[str, float] = field(default_factory=dict)
    margin: float | None = None  # top1 - top2 probability (low = uncertain)
    anomaly_score: float | None = None
    remaining_life: float | None = None
    remaining_life_unit: str | None = None
    heatmap: np.ndarray | None = None  # 2-D float32, values in [0, 1]
    extra: dict[str, dict[str, float]] = field(default_factory=dict)  # further classifier outputs
    reason: str | None = None  # why UNSURE


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.max(z)
    e = np.exp(z)
    return e / e.sum()


def interpret(manifest: Manifest, outputs: dict[str, np.ndarray]) -> Interpretation:
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
            v = val.reshape(-1).astype(np.float64)
            if v.shape[0] != len(spec.labels):
                raise PreprocessError(
                    f"output {spec.name!r} has {v.shape[0]} values for {len(spec.labels)} labels"
                )
            p = _softmax(v) if spec.role is OutputRole.CLASS_LOGITS else v
            probs = {lab: float(q) for lab, q in zip(spec.labels, p, strict=True)}
            order = np.argsort(p)[::-1]
            if first_classifier:
                res.label = spec.labels[int(order[0])]
                res.probabilities = probs
                res.margin = float(p[order[0]] - (p[order[1]] if len(p) > 1 else 0.0))
                first_classifier = False
            else:
                res.extra[spec.name] = probs
            if spec.ok_label is not None and spec.threshold is not None:
                ng_score = 1.0 - probs[spec.ok_label]
                ng = ng or ng_score >= spec.threshold
                if not scored:
                    res.score, scored = ng_score, True
        elif spec.role is OutputRole.ANOMALY_SCORE:
            s = float(val.reshape(-1)[0])
            res.anomaly_score = s
            ng = ng or s >= spec.threshold
            if not scored:
                res.score, scored = s, True
        elif spec.role is OutputRole.REMAINING_LIFE:
            res.remaining_life = float(val.reshape(-1)[0])
            res.remaining_life_unit = spec.unit
        elif spec.role is OutputRole.HEATMAP:
            h = val.reshape(val.shape[-2], val.shape[-1]).astype(np.float32)
            lo, hi = float(h.min()), float(h.max())
            res.heatmap = (h - lo) / (hi - lo) if hi > lo else np.zeros_like(h)
        elif spec.role is OutputRole.ANOMALY_MAP:  # in score units: the threshold shows mid-scale
            h = val.reshape(val.shape[-2], val.shape[-1]).astype(np.float32)
            res.heatmap = np.clip(h / np.float32(2.0 * spec.threshold), 0.0, 1.0) if spec.threshold > 0 else \
                np.zeros_like(h)
    res.verdict = "NG" if ng else "OK"
    return res
