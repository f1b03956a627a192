"""Equipment maintenance from vibration windows: anomaly score, fault type, remaining life.

Features are the manifest's ``SignalPreprocessing``, one of two sets (``--signal-features``):

- ``condition`` (the default): the condition-monitoring features of ``model_packager.condition``
  (shaft orders 1x/2x/3x/4-8x, envelope-spectrum prominence at the bearing's defect frequencies,
  high-frequency and velocity RMS, kurtosis, crest), amplitudes as log ratios to the window's RMS
  (``relative``). Shaft speed from a speed tag (``speed_rpm`` per window in the dataset) or estimated
  from the spectrum; bearing geometry from ``--bearing`` or the dataset's ``bearing`` (absent: the
  envelope's strongest non-integer-order line stands in). These carry over to machines and speeds
  the training data never had far better than the bands (bench/maintenance_features_bench.py), but
  not well enough for the anomaly threshold to judge such a machine on its own: served without the
  asset's baseline, a package built on the simulator's dataset gave 0-152 NG episodes a day on healthy
  machines from an independent generator (docs/maintenance.md);
- ``bands``: 64 log band energies of the Hann-windowed spectrum + rms, peak, crest, kurtosis (the
  older packages; tied to one machine's speed and levels).

Both are computed with ``model_packager.preprocess.signal_features``
exactly as the agent computes them, standardised with the training mean/std recorded in the
manifest. One ONNX model, three outputs:

- ``anomaly_score``: reconstruction error of a small autoencoder trained on *healthy* windows only
  (a machine's faults are rare); its threshold is set on validation data;
- ``fault_logits``: healthy / imbalance / misalignment / bearing_outer / bearing_inner, trained on
  healthy runs and on faulty windows whose health has dropped below ``visible_health`` (before that
  a fault's signature is too weak to name, see simulators/vibration.py);
- ``remaining_life``: seconds (machine time) to failure, regressed on the degradation runs.

Splits are by machine run, so test machines are unseen.
"""

from __future__ import annotations

import math
import re
import reprlib
from typing import Literal

import numpy as np

from cloud_trainer.train import common
from cloud_trainer.train.data import FAULTS, DatasetError, VibrationData, split_runs, yaml_number
from model_packager.condition import FEATURES as CONDITION_FEATURES
from model_packager.condition import waveform_rate_floor_hz
from model_packager.manifest import ConditionFeatures, SignalPreprocessing
from model_packager.preprocess import signal_features

INPUT, OUTPUTS = "features", ["anomaly_score", "fault_logits", "remaining_life"]
VISIBLE_HEALTH = 0.97
NORMAL_HEALTH = 0.99
RUL_SCALE = 1000.0


FEATURE_SETS = ("condition", "bands")
DEFAULT_FEATURES = "condition"
BEARING_FORM = "n_elements, ball_d_mm, pitch_d_mm[, contact_angle_deg]"


def bearing_geometry(value, where: str) -> tuple[int, float, float, float]:
    """A bearing's geometry from a list ``[n, ball, pitch, angle]`` or a mapping with those names;
    ``DatasetError`` naming ``where`` when it is not one."""
    v = value
    if isinstance(v, dict):
        v = [v.get("n_elements"), v.get("ball_d_mm"), v.get("pitch_d_mm"), v.get("contact_angle_deg", 0.0)]
    try:
        n, ball, pitch, *rest = v
        geo = (int(float(n)), float(ball), float(pitch), float(rest[0]) if rest else 0.0)
        if len(rest) > 1 or geo[0] != float(n):  # a count of rolling elements is whole
            raise ValueError
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: expected {BEARING_FORM}, got {value!r}") from None
    if geo[0] < 3 or not 0 < geo[1] < geo[2] or not 0 <= geo[3] < 90:
        raise DatasetError(
            f"{where}: {list(geo)} is not a bearing (at least 3 rolling elements, 0 < ball diameter "
            f"< pitch diameter, contact angle 0-90 deg); give {BEARING_FORM} from its datasheet"
        )
    return geo


def acceleration_units(data: VibrationData) -> Literal["g", "m/s2"]:
    """The unit of the dataset's signal (``units.waveform`` in its dataset.yaml, as the imported headers wrote it
    or the simulator writes it; absent: g) as the condition features take it; a signal that is not an
    acceleration is refused: its velocity RMS, high band and envelope would be computed as if it were one (a
    velocity sensor's mm/s, a voltage)."""
    units = data.meta.get("units")
    unit = units.get("waveform") if isinstance(units, dict) else units
    if unit is None:
        return "g"
    key = re.sub(r"\s+", "", str(unit)).lower().replace("²", "2").replace("^2", "2").replace("**2", "2")
    if key in ("g", "m/s2"):
        return "g" if key == "g" else "m/s2"
    hint = {
        "mm/s": "a velocity sensor's: record an accelerometer, or differentiate the velocity to acceleration",
        "in/s": "a velocity sensor's: record an accelerometer, or differentiate the velocity to acceleration",
        "mv": "a voltage: divide it by the sensor's sensitivity (mV/g)",
        "v": "a voltage: divide it by the sensor's sensitivity (V/g)",
        "mg": "divide it by 1000",
    }.get(key, "convert it")
    raise DatasetError(
        f"{data.source or 'the dataset'}/dataset.yaml: the signal is in {unit!r}, not an acceleration: the condition "
        f"features (velocity, high band, envelope) are computed from acceleration in g or m/s2; {hint}, and import "
        "it as 'accel [g]' (or build with --signal-features bands)"
    )


def _speed_range(data: VibrationData) -> list[float] | None:
    """The dataset's ``speed_range_rpm`` (None when absent): two numbers of rpm, the lower above 0 and below the
    higher, else refused naming ``dataset.yaml`` (written as text, ``600-3000``, it ended in a validation
    traceback; reversed, it was declared in the package as it stood)."""
    rng = data.meta.get("speed_range_rpm")
    if rng is None:
        return None
    # '600' and 6e2 (text to PyYAML) are read as the numbers they are, as the package's settings read them
    given = [yaml_number(v) for v in rng] if isinstance(rng, list) and len(rng) == 2 else []
    rpm = [v for v in given if v is not None and math.isfinite(v)]
    if len(rpm) != 2 or not 0 < rpm[0] < rpm[1]:
        raise DatasetError(
            f"{data.source or 'the dataset'}/dataset.yaml: speed_range_rpm is {reprlib.repr(rng)}; it is the slowest and the "
            "fastest shaft speed in rpm, two numbers, the first above 0 and below the second (speed_range_rpm: "
            "[600, 3000])"
        )
    return rpm


def raw_preprocessing(
    data: VibrationData,
    waveform_tag: str = "Vibration",
    features: str = DEFAULT_FEATURES,
    bearing=None,
    speed_tag: str | None = None,
    log=None,
) -> SignalPreprocessing:
    """The model's preprocessing before standardisation. ``bearing``: the geometry (``--bearing``);
    None takes the dataset's ``bearing`` when it states one. ``speed_tag``: the scalar input carrying
    the shaft speed in rpm, which the dataset must then give per window (``speed_rpm``)."""
    base = dict(waveform=waveform_tag, window_samples=data.window_samples, sample_rate_hz=data.sample_rate_hz)
    if features == "bands":
        if speed_tag or bearing:
            raise DatasetError("--speed-tag and --bearing apply to --signal-features condition, not bands")
        return SignalPreprocessing(**base, n_bands=64, time_features=True)
    if features != "condition":
        raise DatasetError(f"--signal-features {features!r}: expected one of {list(FEATURE_SETS)}")
    if bearing is not None:
        geo: tuple | None = bearing_geometry(bearing, "--bearing")
    elif data.meta.get("bearing") is not None:
        geo = bearing_geometry(data.meta["bearing"], f"{data.source or 'the dataset'}/dataset.yaml: bearing")
    else:
        geo = None
        if log:
            log(
                "maintenance: no bearing geometry (--bearing or the dataset's bearing): defect lines are found "
                "from the envelope spectrum alone"
            )
    if speed_tag and data.speed_rpm is None:
        raise DatasetError(
            f"--speed-tag {speed_tag}: {data.source or 'the dataset'}/windows.npz has no per-window "
            "'speed_rpm' array; add the speed (rpm) of each window, or drop --speed-tag to estimate "
            "the speed from the spectrum"
        )
    rng = _speed_range(data)
    cond = ConditionFeatures(
        names=list(CONDITION_FEATURES),
        speed_scalar=speed_tag,
        bearing=geo,
        relative=True,
        units=acceleration_units(data),
        **({"speed_range_rpm": tuple(rng)} if rng else {}),
    )
    # the spectrum must reach the fastest shaft searched (its 1x): a slower signal is an overall level (a 4-20 mA
    # transmitter's RMS logged once a second), not a waveform, and the speed search found no line to take
    floor_hz = waveform_rate_floor_hz(cond.speed_range_rpm[1])
    if data.sample_rate_hz < floor_hz:
        raise DatasetError(
            f"{data.source or 'the dataset'}: the signal is sampled at {data.sample_rate_hz:g} Hz; the condition "
            f"features (shaft orders, envelope, velocity over 10-1000 Hz) need a vibration waveform sampled at "
            f"{floor_hz:g} Hz or more (its spectrum up to a {cond.speed_range_rpm[1]:g}-rpm shaft's 1x): import "
            "the accelerometer's waveform, or build with --signal-features bands to learn this signal as it is"
        )
    return SignalPreprocessing(**base, n_bands=0, time_features=False, condition=cond)


def features(waves: np.ndarray, pre: SignalPreprocessing, speed_rpm: np.ndarray | None = None) -> np.ndarray:
    """Rows of features, as the agent computes them (``speed_rpm``: per window, for a speed tag)."""
    tag = pre.condition.speed_scalar if pre.condition is not None else None
    rows = [
        signal_features(w, {tag: float(speed_rpm[i])} if tag and speed_rpm is not None else None, pre)
        for i, w in enumerate(waves)
    ]
    return np.concatenate(rows).astype(np.float32)


def build_model(n_features: int, n_faults: int, mean_life_s: float = RUL_SCALE):
    import torch
    from torch import nn

    class HealthNet(nn.Module):
        mean_life: torch.Tensor  # a buffer (register_buffer), declared for the type checker

        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(n_features, 32), nn.ReLU(), nn.Linear(32, 8))
            self.dec = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, n_features))
            self.trunk = nn.Sequential(nn.Linear(n_features, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
            self.fault = nn.Linear(32, n_faults)
            # remaining life has its own small head on the features: sharing the classifier's trunk
            # let the (easier) fault loss dominate what the trunk learns
            self.life = nn.Sequential(nn.Linear(n_features, 32), nn.ReLU(), nn.Linear(32, 1))
            self.register_buffer("mean_life", torch.tensor(float(mean_life_s)))

        def forward(self, features):
            recon = self.dec(self.enc(features))
            anomaly = ((features - recon) ** 2).mean(dim=1, keepdim=True)
            h = self.trunk(features)
            # remaining life = estimated health index x the mean life of a machine: the health a
            # window shows is observable, a machine's total life is not (E[RUL | health])
            health = torch.sigmoid(self.life(features))
            life = health * self.mean_life
            return anomaly, self.fault(h), life

    return HealthNet()


def train(
    data: VibrationData,
    seed: int,
    epochs: int,
    log=common.stderr_log,
    threads: int | None = None,
    patience: int = 15,
    feature_set: str = DEFAULT_FEATURES,
    bearing=None,
    speed_tag: str | None = None,
) -> dict:
    import torch
    from torch import nn

    common.seed_everything(seed, threads)
    raw = raw_preprocessing(data, features=feature_set, bearing=bearing, speed_tag=speed_tag, log=log)
    f = features(data.waveforms, raw, data.speed_rpm)
    tr, va, te = split_runs(data.run_id, data.fault, seed)
    if len(tr) == 0 or len(te) == 0:
        raise DatasetError(
            "too few machine runs to split into train/test by run; use at least 2 runs per fault"
        )
    if len(va) == 0:
        va = te  # tiny datasets: validate on the test runs (reported as such)
    mean, std = f[tr].mean(0), f[tr].std(0) + 1e-6
    pre = raw.model_copy(update={"mean": mean.astype(float).tolist(), "std": std.astype(float).tolist()})
    x = ((f - mean) / std).astype(np.float32)
    y = data.fault.astype(np.int64)
    visible = (y == 0) | (data.health < VISIBLE_HEALTH)
    rul_ok = np.isfinite(data.rul_s) & (y != 0)
    lives = [
        float(np.nanmax(data.rul_s[data.run_id == r] + data.t_s[data.run_id == r]))
        for r in np.unique(data.run_id[tr])
        if np.isfinite(data.rul_s[data.run_id == r]).any()
    ]
    mean_life = float(np.mean(lives)) if lives else RUL_SCALE
    dev = common.device()  # a GPU when present, else the CPU
    model = build_model(x.shape[1], len(data.classes), mean_life).to(dev)
    X = torch.from_numpy(x).to(dev)
    Y = torch.from_numpy(y).to(dev)
    R = torch.from_numpy(np.clip(np.nan_to_num(data.health, nan=1.0), 0, 1).astype(np.float32)).to(
        dev
    )  # health
    V = torch.from_numpy(visible).to(dev)
    RO = torch.from_numpy(rul_ok).to(dev)
    # The autoencoder learns "normal" from healthy runs and from the first, still-healthy windows of
    # every other run: many machines' operating points, not just the few healthy runs'.
    H = torch.from_numpy((y == 0) | (data.health >= NORMAL_HEALTH)).to(dev)
    ce = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    tr_t = torch.from_numpy(tr).to(dev)
    va_t = torch.from_numpy(va).to(dev)

    def loss_on(m, idx):
        a, logits, life = m(X[idx])
        loss = torch.zeros((), device=dev)
        healthy = H[idx]
        if healthy.any():
            loss = loss + a[healthy].mean()
        vis = V[idx]
        if vis.any():
            loss = loss + ce(logits[vis], Y[idx][vis])
        ro = RO[idx]
        if ro.any():
            loss = loss + 5.0 * ((life[ro, 0] / m.mean_life - R[idx][ro]) ** 2).mean()
        return loss

    def batches():
        perm = tr_t[torch.randperm(len(tr_t), generator=g).to(dev)]
        for i in range(0, len(perm), 64):
            yield perm[i : i + 64]

    def step(m, opt, idx):
        opt.zero_grad()
        loss = loss_on(m, idx)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def val_acc(m):
        _, logits, _ = m(X[va_t])
        vis = V[va_t]
        return float((logits[vis].argmax(1) == Y[va_t][vis]).float().mean())

    log(
        f"maintenance: {len(tr)} train / {len(va)} val / {len(te)} test windows (split by run), "
        f"{x.shape[1]} features"
    )
    hist = common.fit(model, step, lambda m: loss_on(m, va_t), batches, epochs, patience, 3e-3, log, val_acc)
    return {
        "model": model.cpu(),
        "pre": pre,
        "x": x,
        "y": y,
        "split": (tr, va, te),
        "history": hist,
        "visible": visible,
        "rul_ok": rul_ok,
        "rul_s": data.rul_s,
        "health": data.health,
    }


def anomaly_truth(y: np.ndarray, health: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(is_anomalous, counted): healthy runs are normal; faulty windows count once degraded."""
    anomalous = (y != 0) & (health < VISIBLE_HEALTH)
    counted = (y == 0) | anomalous
    return anomalous, counted


def choose_threshold(scores: np.ndarray, anomalous: np.ndarray) -> float:
    """Threshold with the best balanced accuracy on validation data, raised to at least 1.5x the
    99th percentile of normal windows so that an unseen healthy machine does not alarm."""
    cands = np.unique(scores)
    best, best_t = -1.0, float(np.median(scores))
    for t in cands[:: max(1, len(cands) // 400)]:
        pred = scores >= t
        tpr = (pred & anomalous).sum() / max(1, anomalous.sum())
        tnr = (~pred & ~anomalous).sum() / max(1, (~anomalous).sum())
        if (tpr + tnr) / 2 > best:
            best, best_t = (tpr + tnr) / 2, float(t)
    normal = scores[~anomalous]
    floor = 1.5 * float(np.percentile(normal, 99)) if len(normal) else best_t
    return max(best_t, floor)


def predicted_classes(logits: np.ndarray, labels: list[str], classes: list[str]) -> np.ndarray:
    """Each window's predicted class as an index of ``classes`` (a dataset's), from ``logits`` whose columns
    are ``labels`` (a model's, its manifest's ``fault_logits`` labels): by name, -1 where the model's class is
    not one of the dataset's. A published model's indices are not the dataset's: the classes beyond ``FAULTS``
    are sorted per dataset (looseness 5 in one, 6 in the next)."""
    names = [
        *labels,
        *[""] * (logits.shape[1] - len(labels)),
    ]  # outputs without a name: no class of the dataset's
    where = np.asarray([classes.index(c) if c in classes else -1 for c in names], dtype=np.int64)
    return where[logits.argmax(1)]


def metrics(
    out: dict[str, np.ndarray],
    y: np.ndarray,
    health: np.ndarray,
    rul_s: np.ndarray,
    threshold: float,
    train_rul_mean: float,
    classes: list[str] | None = None,
    pred: np.ndarray | None = None,
) -> dict:
    """``classes``: the dataset's fault classes (``VibrationData.classes``; None: ``FAULTS``). ``pred``: the
    predicted class per window as an index of ``classes`` (-1: a class the dataset has not, counted wrong),
    for a model whose ``fault_logits`` are of other classes (a published one: ``predicted_classes``);
    None: the argmax of ``fault_logits``, of ``classes``."""
    classes = classes or FAULTS
    anomalous, counted = anomaly_truth(y, health)
    s = out["anomaly_score"].reshape(-1)
    logits = out["fault_logits"]
    visible = (y == 0) | (health < VISIBLE_HEALTH)
    if pred is None:
        pred = logits.argmax(1)
    k = len(classes)
    # a class the dataset has not: a column of its own, so that it counts against the true class's recall
    cm = common.confusion(y[visible], np.where(pred[visible] < 0, k, pred[visible]), k + 1)[:k]
    rul_ok = np.isfinite(rul_s) & (y != 0)
    life = out["remaining_life"].reshape(-1)
    mae = float(np.abs(life[rul_ok] - rul_s[rul_ok]).mean()) if rul_ok.any() else float("nan")
    naive = float(np.abs(train_rul_mean - rul_s[rul_ok]).mean()) if rul_ok.any() else float("nan")
    det = s[counted] >= threshold
    return {
        "anomaly_auroc": common.auroc(anomalous[counted], s[counted]),
        "anomaly_threshold": threshold,
        "anomaly_recall": float((det & anomalous[counted]).sum() / max(1, anomalous[counted].sum())),
        "anomaly_false_alarm_rate": float(
            (det & ~anomalous[counted]).sum() / max(1, (~anomalous[counted]).sum())
        ),
        "fault_accuracy": float((pred[visible] == y[visible]).mean()),
        "f1_per_class": dict(zip(classes, common.f1_per_class(cm), strict=True)),
        "confusion": cm[:, :k].tolist(),
        "rul_mae_s": mae,
        "rul_mae_naive_s": naive,
        "n": int(len(y)),
    }
