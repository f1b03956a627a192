"""Vision inspection: a compact CNN trained from scratch on part images (no downloaded weights).

Architecture (class-activation style, so the heat map comes for free): four conv blocks (16-32-64-64 channels; the first with stride 2, then stride-2
pooling: the default 128-px input gives an 8×8 map) → a 1×1 convolution to one map per class →
logits are the spatial mean of the class maps; ``heatmap`` is the largest defect-class map
(N,1,h,w), i.e. where the network sees a defect. Inputs are made with
``model_packager.preprocess.image_tensor`` from the manifest's ``ImagePreprocessing`` (size, region
of interest, tiles, colour: ``preprocessing``), exactly as the agent makes them; a tiled model
learns from tiles labelled by the defects' masks (``as_tiles``).

Training augments half of each batch with ordinary camera variation (``perturb.TRAIN``: exposure,
light gradient, blur, sensor noise, JPEG, small pose changes) on the full-resolution images before
preprocessing, as a camera would produce them.

The NG threshold (on 1 − p(ok), from the FP32 model's validation scores) is the operating point
``operating_point`` picks: the highest NG recall at NG precision ≥ ``min_precision``, placed in the
middle (in logit space) of the gap between the scores that bound it, not at its edge: a threshold
equal to the lowest NG score on validation rejects good parts as soon as the light changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cloud_trainer.train import common
from cloud_trainer.train.data import PartsData, split_parts
from model_packager.manifest import ImagePreprocessing
from model_packager.preprocess import image_tensor

INPUT, OUTPUTS = "image", ["logits", "heatmap"]


DEFAULT_SIZE = 128


def preprocessing(
    size: int = DEFAULT_SIZE,
    roi: list[int] | None = None,
    tiles: list[int] | None = None,
    color: str = "rgb",
    tile_overlap: float = 0.125,
) -> ImagePreprocessing:
    """The model's geometry: an optional pixel box (``roi``), optional ``tiles`` ([columns, rows])
    over it, each resized (linear, as the agent does) to ``size`` x ``size``; colour or grey."""
    c = 1 if color == "gray" else 3
    return ImagePreprocessing(
        width=size,
        height=size,
        color=color,
        layout="NCHW",
        mean=[0.5] * c,
        std=[0.25] * c,
        interpolation="linear",
        roi=roi,
        tiles=tiles,
        tile_overlap=tile_overlap if tiles else 0.0,
    )


def heatmap_shape(pre: dict) -> tuple[int, int]:
    """The heat map's (h, w) for an input of ``pre``'s height x width (a stride-2 convolution, three pools)."""
    return tuple((((n + 1) // 2) // 8) for n in (pre["height"], pre["width"]))


def tensors(images: list[np.ndarray], pre: ImagePreprocessing) -> np.ndarray:
    from model_packager.preprocess import PreprocessError

    try:
        return np.concatenate([image_tensor(im, pre) for im in images]).astype(np.float32)
    except PreprocessError as exc:  # e.g. a --roi outside the dataset's images
        from cloud_trainer.train.data import DatasetError

        raise DatasetError(f"the dataset's images do not fit the model's geometry: {exc}") from None


def roi_fits(data, preprocessing: dict, folder: Path) -> None:
    """Every image of ``data`` (``PartsData`` of the dataset ``folder``) holds the model's ``roi``, or
    ``DatasetError`` naming the first that does not (a 1x1 export among 1280x1024 frames) by its file and the
    file it was imported from: said of the whole batch, the user had to find which image was of that size."""
    import json

    from cloud_trainer.train.data import DatasetError, label_lines
    from model_packager.manifest import ImagePreprocessing
    from model_packager.preprocess import PreprocessError, region_box

    pre = ImagePreprocessing.model_validate(preprocessing)
    for img, y, ident in zip(data.images, data.labels, data.ids, strict=True):
        try:
            region_box(img.shape[0], img.shape[1], pre)
        except PreprocessError:
            named = f"image {ident} ({data.classes[y]})"
            for _, line in label_lines(folder / "labels.jsonl"):  # read as training read it: checked already
                row = json.loads(line)
                if row.get("id") == ident:
                    came = f", imported from {row['source']}" if isinstance(row.get("source"), str) else ""
                    named = f"{folder / row['file']} ({data.classes[y]}{came})"
                    break
            # said of the dataset's image and the --roi given, not of a camera's frame (the agent's wording)
            rx, ry, rw, rh = pre.roi or (0, 0, 0, 0)
            raise DatasetError(
                f"{named}: the model's roi [x={rx}, y={ry}, width={rw}, height={rh}] reaches outside the "
                f"{img.shape[1]}x{img.shape[0]} frame of this dataset image (--roi {rx},{ry},{rw},{rh} needs one "
                f"of at least {rx + rw}x{ry + rh} pixels); give a --roi that every image of the dataset holds, or "
                "remove the images of another size"
            ) from None


def tile_pre(pre: ImagePreprocessing) -> ImagePreprocessing:
    """The preprocessing of one tile already cut out of the frame (what the model sees per row);
    ``pre`` itself for a model without tiles (it takes the whole frame)."""
    if not pre.tiles:
        return pre
    return pre.model_copy(update={"roi": None, "crop": None, "tiles": None, "tile_overlap": 0.0})


def as_tiles(data: PartsData, pre: ImagePreprocessing) -> PartsData:
    """A tiled model learns from tiles: the frame's tiles (``preprocess.tile_boxes``), each labelled
    from the defect's mask (a tile holding at least 4 of its pixels carries the defect's class, the
    others are good). Frames of a defect class without a mask cannot be labelled per tile: refused."""
    from cloud_trainer.train.data import DatasetError
    from model_packager.preprocess import PreprocessError, image_region, tile_boxes

    images, labels, ids, groups, splits = [], [], [], [], []
    for n, (img, y, ident, mask) in enumerate(
        zip(data.images, data.labels, data.ids, data.masks or [None] * len(data.ids), strict=True)
    ):
        try:
            region = image_region(img, pre)
        except PreprocessError as exc:
            raise DatasetError(f"image {ident}: {exc}") from None
        mreg = image_region(mask, pre) if mask is not None else None
        if y != 0 and mreg is None:
            raise DatasetError(
                f"image {ident} ({data.classes[y]}) has no defect mask: a tiled model needs masks "
                "to label its tiles (MVTec ground_truth/, or masks/ in the dataset); use --roi "
                "without --tiles instead"
            )
        for k, (x0, y0, w, h) in enumerate(tile_boxes(region.shape[0], region.shape[1], pre)):
            images.append(np.ascontiguousarray(region[y0 : y0 + h, x0 : x0 + w]))
            hit = y != 0 and mreg is not None and int(np.count_nonzero(mreg[y0 : y0 + h, x0 : x0 + w])) >= 4
            labels.append(int(y) if hit else 0)
            ids.append(f"{ident}#t{k}")
            groups.append(n)  # the build splits by source image: all of a frame's tiles on one side
            splits.append(data.splits[n] if data.splits else None)
    return PartsData(
        images,
        np.asarray(labels),
        ids,
        data.classes,
        data.digest,
        groups=np.asarray(groups, dtype=np.int64),
        splits=splits if data.splits else None,
        frames=[_stats_frame(img) for img in data.images],
        frame_shapes=[img.shape[:2] for img in data.images],
        camera_sizes=data.camera_sizes,
    )


STATS_SIDE = 512  # a tiled build keeps its whole frames at most this large for the input statistics (128 px)


def _stats_frame(img: np.ndarray) -> np.ndarray:
    """A whole frame kept for the input statistics (measured at 128 px): shrunk (area) to at most
    ``STATS_SIDE`` px on its longer side, as the anomaly family keeps its frames."""
    import cv2

    h, w = img.shape[:2]
    k = STATS_SIDE / max(h, w)
    if k >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)


def build_model(n_classes: int, width: int = 16, channels: int = 3):
    import torch
    from torch import nn

    def block(i, o, stride=1):
        return nn.Sequential(
            nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)
        )

    class VisionNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            # a stride-2 first convolution (its 3x3 kernel still sees every pixel): a 128-px input
            # costs what a 64-px one did
            self.features = nn.Sequential(
                block(channels, w, 2),
                nn.MaxPool2d(2),
                block(w, 2 * w),
                nn.MaxPool2d(2),
                block(2 * w, 4 * w),
                nn.MaxPool2d(2),
                block(4 * w, 4 * w),
            )
            self.classmaps = nn.Conv2d(4 * w, n_classes, 1)

        def forward(self, image):
            maps = self.classmaps(self.features(image))
            logits = maps.mean(dim=(2, 3))
            heatmap = torch.amax(maps[:, 1:], dim=1, keepdim=True) - maps[:, :1]
            return logits, heatmap

    return VisionNet()


def train(
    data: PartsData,
    size: int,
    seed: int,
    epochs: int,
    log=common.stderr_log,
    threads: int | None = None,
    patience: int = 10,
    init_state: dict | None = None,
    augment: float = 0.5,
    qat_epochs: int = 4,
    pre: ImagePreprocessing | None = None,
) -> dict:
    """Train from scratch, or fine-tune from ``init_state`` (a parent version's weights; a lower
    learning rate, so that the new data refines what the parent knew rather than replacing it).
    ``data`` holds frames, or for a tiled ``pre`` its tiles (``as_tiles``; the pipeline cuts them)."""
    import torch
    from torch import nn

    common.seed_everything(seed, threads)
    pre = pre or preprocessing(size)
    x = tensors(data.images, tile_pre(pre))
    y = data.labels.astype(np.int64)
    tr, va, te, split_rule = split_parts(data, seed)
    if len(va) == 0 or len(tr) == 0:
        from cloud_trainer.train.data import DatasetError

        raise DatasetError(f"{len(y)} images are too few to split into train/validation/test")
    dev = common.device()  # a GPU when present, else the CPU; no code change either way
    model = build_model(len(data.classes), channels=x.shape[1])
    if init_state is not None:
        try:
            model.load_state_dict(init_state)
        except RuntimeError as exc:
            said = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][
                :2
            ]  # the heading and the first why
            raise ValueError(
                f"the weights to start from do not fit this model ({len(data.classes)} classes, "
                f"{x.shape[1]} input channel(s)): {' '.join(said)[:400]}"
            ) from None
    model = model.to(dev)
    xt, yt = torch.from_numpy(x[tr]).to(dev), torch.from_numpy(y[tr]).to(dev)
    xv, yv = torch.from_numpy(x[va]).to(dev), torch.from_numpy(y[va]).to(dev)
    # each class weighs as much as the others in the loss, however few its images: unweighted, 300 good
    # parts beside 10 scratches trained a model that called every part good
    loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(class_weights(y[tr], len(data.classes))).to(dev))
    g = torch.Generator().manual_seed(seed)

    from cloud_trainer.train import perturb

    aug_rng = np.random.default_rng([seed, 31])
    tpre = tile_pre(pre)
    tr_images = [data.images[i] for i in tr]

    epoch = [0]

    def augmented(idx) -> torch.Tensor:
        """The batch with up to ``augment`` of its images replaced by a perturbed copy (camera
        variation); the share ramps up over the first half of training, so that a small dataset
        learns its classes before it learns to ignore the light."""
        xb = xt[idx].clone()
        rows = idx.cpu().numpy()
        share = augment * min(1.0, epoch[0] / max(1.0, epochs / 2))
        pick = np.flatnonzero(aug_rng.random(len(rows)) < share)
        if len(pick):
            aug = np.concatenate(
                [
                    image_tensor(perturb.perturb(tr_images[rows[j]], aug_rng, perturb.TRAIN), tpre)
                    for j in pick
                ]
            )
            xb[torch.from_numpy(pick).to(dev)] = torch.from_numpy(aug).to(dev)
        return xb

    def batches():
        epoch[0] += 1
        perm = torch.randperm(len(xt), generator=g).to(dev)
        for i in range(0, len(perm), 32):
            idx = perm[i : i + 32]
            xb = augmented(idx) if augment > 0 else xt[idx]
            if torch.rand(1, generator=g).item() < 0.5:
                xb = xb.flip(3)
            if torch.rand(1, generator=g).item() < 0.5:
                xb = xb.flip(2)
            yield xb, yt[idx]

    def step(m, opt, b):
        opt.zero_grad()
        loss = loss_fn(m(b[0])[0], b[1])
        loss.backward()
        opt.step()
        return float(loss.detach())

    def val_loss(m):
        return loss_fn(m(xv)[0], yv)

    present = [c for c in range(1, len(data.classes)) if bool((yv == c).any())]

    def val_acc(m):
        """Balanced accuracy chooses the epoch kept, good parts and defects half each as in the loss (the
        good parts' recall, and the defect classes' mean recall): plain accuracy on 300 good parts and 2
        scratches is best for the model that calls every part good."""
        hit = m(xv)[0].argmax(1) == yv
        parts = [float(hit[yv == 0].float().mean())] if bool((yv == 0).any()) else []
        if present:
            parts.append(float(np.mean([float(hit[yv == c].float().mean()) for c in present])))
        return float(np.mean(parts)) if parts else 0.0

    log(
        f"vision: {len(tr)} train / {len(va)} val / {len(te)} test {'tiles' if pre.tiles else 'images'} at "
        f"{pre.width}x{pre.height}, {len(data.classes)} classes {data.classes}"
    )
    lr = 5e-4 if init_state is not None else 2e-3
    hist = common.fit(
        model, step, val_loss, batches, epochs, patience, lr, log, val_acc, select_on_metric=True
    )
    if qat_epochs > 0:
        # weights learn to sit on the INT8 grid the quantizer will use (7-bit, per output channel),
        # so the INT8 form loses (almost) nothing to the FP32 one; the FP32 model keeps those weights
        log(f"vision: {qat_epochs} epochs with weights on the 7-bit INT8 grid")
        convs = _weights_on_int8_grid(model)
        qat = common.fit(
            model,
            step,
            val_loss,
            batches,
            qat_epochs,
            qat_epochs,
            lr / 10,
            log,
            val_acc,
            select_on_metric=True,
        )
        _fix_weights(convs)
        hist["epochs"] += [
            {**h, "epoch": len(hist["epochs"]) + h["epoch"], "int8_grid": True} for h in qat["epochs"]
        ]
    return {
        "model": model.cpu(),
        "pre": pre,
        "x": x,
        "y": y,
        "split": (tr, va, te),
        "split_rule": split_rule,
        "history": hist,
    }


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Loss weights from the class counts in ``y`` (the training rows), class 0 the good parts: good parts
    and defects weigh half each in total, and the defect classes present weigh alike within their half (a
    class absent from ``y``: 1). 300 good parts beside 10 scratches get 0.52 and 15.5; a dataset as many
    defects as good parts (1,000 good, five defects of 200) stays close to unweighted, so that its
    operating point is not moved: weighting each of six classes alike there made the defects five sixths
    of the loss, and good parts scored as defects (NG precision 0.70 where unweighted gave 0.99)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes)[:n_classes].astype(np.float64)
    total = counts.sum()
    w = np.ones(n_classes, dtype=np.float64)
    defects = [c for c in range(1, n_classes) if counts[c] > 0]
    if total == 0 or counts[0] == 0 or not defects:
        return w.astype(np.float32)
    w[0] = 0.5 * total / counts[0]
    for c in defects:
        w[c] = 0.5 * total / (len(defects) * counts[c])
    return w.astype(np.float32)


WEIGHT_LEVELS = 64  # ONNX Runtime's reduced-range INT8 weights: symmetric, q in [-64, 64] (onnx_tools)


def _weights_on_int8_grid(model) -> list:
    """Fake-quantize every convolution's weights per output channel on the grid ONNX Runtime's
    quantizer uses with ``reduce_range`` (scale = max|w| / 64), with a straight-through gradient.
    Per-channel scaling commutes with folding BatchNorm into the convolution, so the folded
    weights land on the same grid and quantizing them again changes nothing."""
    import torch
    from torch import nn
    from torch.nn.utils import parametrize

    class OnGrid(nn.Module):
        def forward(self, w):
            absmax = w.detach().abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True).clamp_min(1e-12)
            scale = absmax / WEIGHT_LEVELS
            q = torch.clamp(torch.round(w / scale), -WEIGHT_LEVELS, WEIGHT_LEVELS) * scale
            return w + (q - w).detach()

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for c in convs:
        parametrize.register_parametrization(c, "weight", OnGrid())
    return convs


def _fix_weights(convs: list) -> None:
    from torch.nn.utils import parametrize

    for c in convs:
        parametrize.remove_parametrizations(c, "weight", leave_parametrized=True)


def ng_score(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return 1.0 - p[:, 0]


def _logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def operating_curve(scores: np.ndarray, is_ng: np.ndarray, n: int = 41) -> list[dict]:
    """NG recall and precision at ``n`` thresholds evenly spaced in logit space (NG when score >= t)."""
    ts = 1 / (1 + np.exp(-np.linspace(-9, 9, n)))
    out = []
    for t in ts:
        ng = scores >= t
        tp = int((ng & is_ng).sum())
        out.append(
            {
                "threshold": float(t),
                "ng_recall": tp / max(1, int(is_ng.sum())),
                "ng_precision": tp / max(1, int(ng.sum())),
                "ok_rejected": float(ng[~is_ng].mean()) if (~is_ng).any() else 0.0,
            }
        )
    return out


def operating_point(
    scores: np.ndarray,
    is_ng: np.ndarray,
    min_precision: float = 0.98,
    min_recall: float = 0.98,
    fallback_recall: float = 0.995,
) -> float:
    """The threshold (NG when score >= it) with the highest NG recall on these (validation) scores
    at which NG precision stays >= ``min_precision``, then the best precision among those, placed
    in the middle (in logit space) of the gap between the two scores that bound it, so that scores
    moving a little either way (light, focus, another day) keep their verdicts.

    Recall first: a missed defect costs more than a good part set aside. The precision bound keeps
    one NG outlier scored among the good parts from dragging the threshold down into them (that
    would reject ~10 % of good parts to catch one odd defect). Where that recall is below
    ``min_recall`` (a model that separates the classes poorly), recall wins after all: the best
    precision at NG recall >= ``fallback_recall``, so that a weak model rejects too many parts (and
    fails the gate's precision floor) rather than letting defects through."""
    scores = np.asarray(scores, dtype=np.float64)
    is_ng = np.asarray(is_ng, dtype=bool)
    if not is_ng.any() or is_ng.all():
        return 0.5
    z = np.unique(_logit(scores))  # candidate cuts: below, between and above the distinct scores
    cuts = np.concatenate([[z[0] - 1.0], (z[:-1] + z[1:]) / 2, [z[-1] + 1.0]])
    zs = _logit(scores)
    n_ng = int(is_ng.sum())
    rows = []
    for c in cuts:
        ng = zs >= c
        tp = int((ng & is_ng).sum())
        rows.append((tp / n_ng, tp / max(1, int(ng.sum()))))
    feasible = [k for k, (_, p) in enumerate(rows) if p >= min_precision]
    best_recall = max((rows[k][0] for k in feasible), default=0.0)
    if best_recall >= min_recall:
        top = [k for k in feasible if rows[k][0] >= best_recall - 1e-12]
    else:
        top = [k for k, (r, _) in enumerate(rows) if r + 1e-12 >= fallback_recall]
    best_precision = max(rows[k][1] for k in top)
    good = [k for k in top if rows[k][1] >= best_precision - 1e-12]
    runs, start = [], good[0]  # consecutive cut indices with the same (best) outcome
    for a, b in zip(good, good[1:], strict=False):
        if b != a + 1:
            runs.append((start, a))
            start = b
    runs.append((start, good[-1]))
    k_lo, k_hi = max(runs, key=lambda r: cuts[r[1]] - cuts[r[0]])
    left = z[k_lo - 1] if k_lo > 0 else cuts[k_lo]  # the scores around the run
    right = z[k_hi] if k_hi < len(z) else cuts[k_hi]
    mid = (left + right) / 2
    return float(1 / (1 + np.exp(-np.clip(mid, -16, 16))))


def metrics(logits: np.ndarray, y: np.ndarray, classes: list[str], threshold: float) -> dict:
    k = len(classes)
    pred = logits.argmax(1)
    cm = common.confusion(y, pred, k)
    f1 = common.f1_per_class(cm)
    s = ng_score(logits)
    is_ng = y != 0
    ng = s >= threshold
    tp = int((ng & is_ng).sum())
    recall = tp / max(1, is_ng.sum())
    precision = tp / max(1, ng.sum())
    return {
        "accuracy": float((pred == y).mean()),
        "f1_macro": float(np.mean(f1)),
        "f1_per_class": dict(zip(classes, f1, strict=True)),
        "ng_recall": float(recall),
        "ng_precision": float(precision),
        "ng_auroc": common.auroc(is_ng, s),
        "threshold": threshold,
        "confusion": cm.tolist(),
        "n": int(len(y)),
    }
