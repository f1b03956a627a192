"""The vision family's ``patch`` recipe: OK/NG from a memory bank of good patches, calibrated on
the labelled defects; the defect type from a small head at the hottest region.

A compact CNN learned from scratch on a few hundred of a factory's own images does not learn its
defects (bench/RESULTS.md: NG AUROC ~0.6 on independently made parts). This recipe learns nothing
that needs many images, in the manner of Lookout for Vision (20 normal + 10 anomalous images):

1. patch features at 1/4 of the input: the anomaly family's fixed texture and colour features with
   their 44-px context (``anomaly._modules``), each image (or tile) first brought to zero mean and
   unit spread, so that the camera's gain and offset do not move them, and every feature then taken
   relative to its own image's mean and spread (a part's finish varies; a defect stands out of it);
2. a memory bank of the good training images' patches, and of a copy of each under another light
   (``perturb.lighting``: gain, offset, a mild gradient, colour temperature), thinned by a greedy
   coreset; a patch's distance to its nearest bank patch is the heat map, its maximum the score;
3. optionally a per-patch scorer (a 1x1 MLP on the features and the log distance) learnt from the
   labelled defect images by multiple-instance learning (an image is as bad as its worst patch),
   kept only when its out-of-fold scores separate good from defect better than the distance alone
   (at least 20 defect images); every image's distances come from a bank built without it (5-fold);
4. the threshold from those out-of-fold scores: between the good images' 1 % false-reject quantile
   and the defects' 2 % quantile (the middle when they do not overlap; else the good quantile: a
   stated false-reject rate beats a guess);
5. the defect type: a multinomial logistic regression on the patch inputs pooled around the hottest
   region (softly, so that every engine pools the same region), trained on the defect images.

The whole thing is one ONNX graph with the classifier's contract: ``logits`` (N, classes; the good
class first) and ``heatmap`` (N, 1, size/4, size/4). The logits are built so that
``1 - p(good) = sigmoid(slope * (score - threshold))`` (score: the log distance or the learnt
scorer): the manifest's threshold is 0.5 on the NG score, and p(defect k) splits the rest by the
head's probabilities. FP32 only: the features
are fixed filters with no learned weights to quantize.
"""

from __future__ import annotations

import numpy as np

from cloud_trainer.train import common

INPUT, OUTPUTS = "image", ["logits", "heatmap"]
FOLDS = 5
BANK_SIZE = 2048
GOOD_FRR = 0.01  # false rejects of good images the threshold is placed at (at most)
NG_MISS = 0.02  # share of the labelled defects the threshold may let through when the classes overlap
MIN_DEFECTS_TO_LEARN = 20  # fewer labelled defects: the distance alone scores
SCHEME = "none (patch recipe: fixed texture features or a small patch net, served in FP32)"


def _model_class():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class PatchClassifier(nn.Module):
        """image → (logits (N, K), heatmap (N, 1, h, w)); bank, scorer and head are constants of the graph."""

        bank_t: torch.Tensor  # buffers (register_buffer), declared for the type checker
        bank_sq: torch.Tensor
        blur: torch.Tensor
        head_w: torch.Tensor
        head_b: torch.Tensor
        log_centre: torch.Tensor

        def __init__(
            self,
            features,
            bank: np.ndarray,
            scorer,
            head_w: np.ndarray,
            head_b: np.ndarray,
            centre: float,
            slope: float,
        ) -> None:
            super().__init__()
            self.features = features
            self.scorer = scorer  # per-patch MLP on (features, log distance); None: the log distance itself
            t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
            self.register_buffer("bank_t", t(bank.T))
            self.register_buffer("bank_sq", t((bank.astype(np.float32) ** 2).sum(1)[None, None, :]))
            g = np.outer(*(2 * [np.array([1.0, 2.0, 1.0]) / 4.0]))
            self.register_buffer("blur", t(g)[None, None])
            self.register_buffer("head_w", t(head_w))  # (2D + 1, K - 1)
            self.register_buffer("head_b", t(head_b)[None])
            self.register_buffer("log_centre", t(np.log([max(centre, 1e-9)]))[None])
            self.slope = float(slope)

        def inputs(self, image):
            """Per patch: the standardised features and the log distance to the nearest good patch."""
            f = self.features(image)
            n, d, h, w = f.shape
            p = f.flatten(2).transpose(1, 2)  # (N, h*w, D)
            d2 = (p * p).sum(-1, keepdim=True) - 2.0 * torch.matmul(p, self.bank_t) + self.bank_sq
            dist = torch.sqrt(torch.clamp(d2.amin(-1), min=0.0)).reshape(n, 1, h, w)
            return torch.cat([f, torch.log(dist + 1e-3)], 1)

        def score_map(self, z):
            s = z[:, -1:] if self.scorer is None else self.scorer(z)
            return F.conv2d(F.pad(s, (1, 1, 1, 1), mode="replicate"), self.blur)

        def forward(self, image):
            z = self.inputs(image)
            smap = self.score_map(z)
            flat = smap.flatten(1)
            score = flat.amax(1, keepdim=True)
            pooled = _pool(z, flat, score)
            kind = torch.log_softmax(pooled @ self.head_w + self.head_b, dim=1)
            ng = self.slope * (score - self.log_centre)
            return torch.cat([torch.zeros_like(score), ng + kind], 1), smap

    def _pool(z, flat, score):
        """The head's input: the patch inputs around the hottest region (softmax weights, so that every
        engine pools the same region), their image mean, and the score."""
        p = z.flatten(2).transpose(1, 2)
        w = torch.softmax((flat - score) * 4.0, dim=1)
        return torch.cat([(w.unsqueeze(-1) * p).sum(1), p.mean(1), score], 1)

    def scorer(d: int, hidden: int = 16):
        return nn.Sequential(nn.Conv2d(d, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, 1, 1))

    return PatchClassifier, scorer, _pool


def calibrate(good: np.ndarray, ng: np.ndarray, false_reject_rate: float = GOOD_FRR) -> dict:
    """The score threshold (``centre``) and the logit ``slope`` from held-out good and defect scores
    (log-scale scores: exp(score) is positive and its log-normal fit is a normal fit of the score).
    ``false_reject_rate``: the share of good parts the threshold may reject where the classes overlap
    (``--false-reject-rate``: more catches more defects and rejects more good parts)."""
    from cloud_trainer.train.anomaly import threshold_at

    frr = float(false_reject_rate)
    lo_e, rule = threshold_at(np.exp(good), frr)
    lo = float(np.log(lo_e))
    if len(ng) == 0:
        return {
            "centre": lo,
            "slope": 4.0,
            "rule": f"good images only, {frr:.1%} false rejects: {rule}",
            "good_quantile": lo,
            "ng_quantile": None,
            "false_reject_rate": frr,
            "curve": _curve(good, ng, lo, 4.0),
        }
    hi = float(np.quantile(np.sort(ng), NG_MISS, method="lower"))
    if hi > lo:
        centre, how = (lo + hi) / 2, "the middle of the gap between them"
    else:
        centre, how = lo, "they overlap: the good images' quantile (the stated false-reject rate) wins"
    slope = 4.0 / max(abs(hi - lo), 0.25)
    return {
        "centre": centre,
        "slope": float(slope),
        "good_quantile": lo,
        "ng_quantile": hi,
        "rule": f"good images' {1 - frr:.1%} quantile ({rule}) and the defects' {NG_MISS:.0%} quantile; "
        + how,
        "false_reject_rate": frr,
        "curve": _curve(good, ng, centre, float(slope)),
    }


def _curve(good: np.ndarray, ng: np.ndarray, centre: float, slope: float) -> list[dict]:
    """NG recall, precision and good parts rejected at thresholds of the NG score (1 - p(ok)) on the scores the
    threshold was placed on: the model's NG score of a patch score ``s`` is the logistic of
    ``slope * (s - centre)`` (the defect-type head's softmax sums to 1), so 0.5 is ``centre``."""
    from cloud_trainer.train.vision import operating_curve

    s = np.r_[np.asarray(good, float), np.asarray(ng, float)]
    ng_score = 0.5 * (1 + np.tanh(0.5 * slope * (s - centre)))  # the logistic, without overflow
    return operating_curve(ng_score, np.r_[np.zeros(len(good), bool), np.ones(len(ng), bool)])


def _head(z: np.ndarray, y: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Multinomial logistic regression (L2) on standardised inputs of the defect images: classes 1..k-1."""
    import torch

    d = z.shape[1]
    if k <= 2 or len(z) == 0 or len(set(y.tolist())) < 2:
        return np.zeros((d, max(1, k - 1)), np.float32), np.zeros(max(1, k - 1), np.float32), 1.0
    mu, sd = z.mean(0), z.std(0) + 1e-3
    zt = torch.from_numpy(((z - mu) / sd).astype(np.float32))
    yt = torch.from_numpy((y - 1).astype(np.int64))
    torch.manual_seed(seed)
    lin = torch.nn.Linear(d, k - 1)
    opt = common.optimizer(torch.optim.LBFGS, lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(zt), yt) + 1e-2 * (lin.weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    wt = lin.weight.detach().numpy()
    w = wt.T / sd[:, None]  # the standardisation folded into the weights
    b = lin.bias.detach().numpy() - (mu / sd) @ wt.T
    acc = float((lin(zt).argmax(1) == yt).float().mean())
    return w.astype(np.float32), b.astype(np.float32), acc


def _fit_scorer(z, ng: np.ndarray, seed: int, steps: int = 150, top: int = 8, rounds: int = 5):
    """Multiple-instance learning of the per-patch scorer: an image's score is its hottest (smoothed)
    patch; good images must have none, defect images at least one. z: (N, D + 1, h, w) tensor. Each
    round trains on every image's ``top`` hottest patches under the current scorer (whole maps scored
    without gradients), so that the cost is that of ``top`` patches, not all of them."""
    import torch

    PatchClassifier, scorer, _ = _model_class()
    torch.manual_seed(seed)
    net = scorer(z.shape[1])
    holder = PatchClassifier(None, np.zeros((1, 1)), net, np.zeros((1, 1)), np.zeros(1), 1.0, 1.0)
    y = torch.from_numpy(ng.astype(np.float32))
    pos = float(max(1, ng.sum()))
    weight = torch.where(y > 0, (len(ng) - pos) / pos, torch.ones_like(y))
    opt = common.optimizer(torch.optim.Adam, net.parameters(), lr=1e-2, weight_decay=1e-4)
    blur = holder.blur.reshape(-1)
    n, d, h, w = z.shape
    zp = torch.nn.functional.pad(z, (1, 1, 1, 1), mode="replicate")
    for _ in range(rounds):
        with torch.no_grad():
            idx = holder.score_map(z).flatten(1).topk(min(top, h * w), dim=1).indices  # (N, top)
        # each chosen patch with its 3x3 neighbours: its smoothed score is the blur of theirs
        ix = idx[:, None, :].expand(n, d, idx.shape[1])
        sel = torch.stack(
            [
                torch.gather(zp[:, :, i : i + h, j : j + w].reshape(n, d, h * w), 2, ix)
                for i in range(3)
                for j in range(3)
            ],
            2,
        )  # (N, D, 9, top)
        for _ in range(steps // rounds):
            opt.zero_grad()
            s = net(sel.reshape(n, d, 9 * idx.shape[1], 1)).reshape(n, 9, -1)
            score = (s * blur[None, :, None]).sum(1).amax(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(score, y, weight=weight)
            loss.backward()
            opt.step()
    return net.eval()


def train(
    data,
    size: int,
    seed: int,
    log=common.stderr_log,
    threads: int | None = None,
    pre=None,
    false_reject_rate: float = GOOD_FRR,
) -> dict:
    """Bank from the good images of the train + validation split (the test split stays unseen for the
    gate), patch scorer, threshold and head from out-of-fold scores; returns what ``vision.train`` returns."""
    import time

    import torch

    from cloud_trainer.train import anomaly, perturb
    from cloud_trainer.train.vision import tensors

    t0 = time.perf_counter()
    pre, tpre, x, y, (tr, va, te), split_rule = prepare(data, size, seed, threads, pre)
    rows = np.concatenate([tr, va])
    ng = y[rows] != 0
    rng = np.random.default_rng([seed, 17])
    x_light = tensors(
        [perturb.camera_copy(data.images[i], rng) for i in rows], tpre
    )  # another lamp, same parts
    _, Features, _ = anomaly._modules()
    feat = Features(None, texture=True, context=True, channels=x.shape[1], instance=True).eval()
    feat.standardise(np.concatenate([x[rows[~ng]], x_light[~ng]]))
    PatchClassifier, _, pool = _model_class()
    patches = anomaly.patch_features(feat, x[rows])
    light = anomaly.patch_features(feat, x_light)
    dims = patches.shape[-1]
    fold_of = folds_by_image(rows, data.groups, rng)
    probe = PatchClassifier(feat, patches[0], None, np.zeros((2 * dims + 3, 1)), np.zeros(1), 1.0, 1.0)

    def z_of(xs, bank):
        _set_bank(probe, bank)
        with torch.no_grad():
            return torch.cat([probe.inputs(torch.from_numpy(xs[i : i + 64])) for i in range(0, len(xs), 64)])

    z: list = [None] * FOLDS
    for f in range(FOLDS):  # each image's distances from a bank built without it (nor its relit copy)
        keep = (fold_of != f) & ~ng
        bank_f = anomaly.coreset(
            np.concatenate([patches[keep], light[keep]]).reshape(-1, dims), BANK_SIZE, seed + f
        )
        z[f] = (z_of(x[rows[fold_of == f]], bank_f), z_of(x_light[fold_of == f], bank_f))
    z_all = torch.empty((len(rows), *z[0][0].shape[1:]))
    z_light = torch.empty_like(z_all)
    for f in range(FOLDS):
        z_all[torch.from_numpy(fold_of == f)] = z[f][0]
        z_light[torch.from_numpy(fold_of == f)] = z[f][1]
    holder = PatchClassifier(None, np.zeros((1, 1)), None, np.zeros((1, 1)), np.zeros(1), 1.0, 1.0)
    with torch.no_grad():  # the distance alone, out of fold
        oof = holder.score_map(z_all).flatten(1).amax(1).numpy()
    net, learnt_auroc = None, float("nan")
    if ng.sum() >= MIN_DEFECTS_TO_LEARN:  # a patch scorer learnt from the labelled defects, kept when its
        learnt = np.zeros(len(rows))  # out-of-fold scores separate better than the distance alone
        for f in range(FOLDS):
            fit = torch.from_numpy(fold_of != f)
            holder.scorer = _fit_scorer(
                torch.cat([z_all[fit], z_light[fit]]), np.r_[ng[fold_of != f], ng[fold_of != f]], seed + f
            )
            with torch.no_grad():
                learnt[fold_of == f] = (
                    holder.score_map(z_all[torch.from_numpy(fold_of == f)]).flatten(1).amax(1).numpy()
                )
        learnt_auroc = common.auroc(ng, learnt)
        if learnt_auroc > common.auroc(ng, oof) + 0.01:
            net, oof = _fit_scorer(torch.cat([z_all, z_light]), np.r_[ng, ng], seed), learnt
    holder.scorer = None
    cal = calibrate(oof[~ng], oof[ng], false_reject_rate)
    bank = anomaly.coreset(np.concatenate([patches[~ng], light[~ng]]).reshape(-1, dims), BANK_SIZE, seed)
    holder.scorer = net
    with torch.no_grad():
        zn = z_all[torch.from_numpy(ng)]
        flat = holder.score_map(zn).flatten(1)
        pooled = pool(zn, flat, flat.amax(1, keepdim=True)).numpy()
    head_w, head_b, head_acc = _head(pooled, y[rows][ng], len(data.classes), seed)
    model = PatchClassifier(
        feat, bank, net, head_w, head_b, float(np.exp(cal["centre"])), cal["slope"]
    ).eval()
    model.log_centre.fill_(cal["centre"])
    separation = common.auroc(ng, oof) if ng.any() else float("nan")
    cal.update(
        good_scores={"median": float(np.median(oof[~ng])), "max": float(oof[~ng].max())},
        ng_scores={"median": float(np.median(oof[ng])), "min": float(oof[ng].min())} if ng.any() else None,
        held_out_auroc=separation,
        head_train_accuracy=head_acc,
        bank=len(bank),
        feature_dims=dims,
        good_images=int((~ng).sum()),
        defect_images=int(ng.sum()),
        learnt_scorer_auroc=learnt_auroc,
        scorer="patch MLP learnt from the defect images (multiple-instance)"
        if net is not None
        else "nearest-good-patch distance (a learnt scorer did not separate better out of fold)",
    )
    log(
        f"vision (patch): {int((~ng).sum())} good + {int(ng.sum())} defect images (+ relit copies), bank "
        f"{len(bank)} x {dims}; out-of-fold AUROC {separation:.3f}; score threshold {cal['centre']:.4g} "
        f"({cal['rule']}); defect-type head train accuracy {head_acc:.2f}; {len(te)} images left for the gate"
    )
    return outcome(model, pre, x, y, (tr, va, te), time.perf_counter() - t0, cal, split_rule)


def folds_by_image(rows: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """The out-of-fold scoring's fold of each row: at random, and for a tiled build's tiles by their
    source image, so that no tile is scored by a bank holding its overlapping neighbours of the same part
    (those scores, too low, placed the threshold among good parts)."""
    if groups is None:
        return rng.permutation(len(rows)) % FOLDS
    _, image_of = np.unique(np.asarray(groups)[rows], return_inverse=True)
    return (rng.permutation(int(image_of.max()) + 1) % FOLDS)[image_of]


def prepare(data, size: int, seed: int, threads: int | None, pre):
    """A patch recipe's start: seeds and threads, the preprocessing (and a tile's), the input tensors,
    labels and split; refused with fewer than ``2 * FOLDS`` good images in the train + validation split."""
    from cloud_trainer.train.data import DatasetError, split_parts
    from cloud_trainer.train.vision import preprocessing, tensors, tile_pre

    common.seed_everything(seed, threads)
    pre = pre or preprocessing(size)
    tpre = tile_pre(pre)
    x = tensors(data.images, tpre)
    y = data.labels.astype(np.int64)
    tr, va, te, rule = split_parts(data, seed)
    n_good = int((y[np.concatenate([tr, va])] == 0).sum())
    if n_good < FOLDS * 2:
        raise DatasetError(
            f"{n_good} good images in the training split; the patch recipe needs at "
            f"least {FOLDS * 2} (20 or more recommended)"
        )
    return pre, tpre, x, y, (tr, va, te), rule


def outcome(model, pre, x, y, split, seconds: float, cal: dict, split_rule: str = "") -> dict:
    """What a patch recipe's ``train`` returns (``vision.train``'s keys)."""
    hist = {"epochs": [{"epoch": 0, "seconds": seconds, "held_out_auroc": cal["held_out_auroc"]}]}
    return {
        "model": model,
        "pre": pre,
        "x": x,
        "y": y,
        "split": split,
        "split_rule": split_rule,
        "history": hist,
        "calibration": cal,
    }


def _set_bank(model, bank: np.ndarray) -> None:
    import torch

    model.bank_t = torch.from_numpy(np.ascontiguousarray(bank.T, np.float32))
    model.bank_sq = torch.from_numpy((bank.astype(np.float32) ** 2).sum(1)[None, None, :])


def heatmap_shape(pre: dict) -> tuple[int, int]:
    """The heat map's (h, w): the features' 1/4 of the input."""
    return pre["height"] // 4, pre["width"] // 4
