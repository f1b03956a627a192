"""Learned patch features for the vision family's ``patch`` recipe: a small fully convolutional net
(two pools, dilated context; ~100 k weights) learnt on the user's own good images with synthetic
defects drawn on them, and scored on the labelled defect images it never trained on.

Fixed texture features at 128 px do not single out a 1-px scratch or a faint crack on a turned or
brushed finish whose own texture varies part to part (bench/RESULTS.md, issue 13). Nothing is
downloaded: the net learns, self-supervised, what the user's good surface looks like
against generic surface defects drawn on it (thin lines of either contrast, discoloured blobs,
shaded dents, a small dark hole inside the part covered with the part's own surface: the contract's
defect kinds, at random sizes, contrasts and places on the bright part), each training crop then
seen through random light (gain, offset, gradient, colour tilt; for half of them first the part's face
level moved apart from its relief, ``face_light``), rotation, blur, noise and JPEG, so
that another lamp is not taken for a defect; its input is each pixel against its 17-px
neighbourhood. The target is the synthetic defect's own mask at 1/4 of the input (the heat map's
grid): the net localises by construction. It starts from weights shipped with the trainer
(``PRETRAINED``, ~0.4 MB): the same task learnt once on the simulator's good parts of both finishes
(``bench/pretrain_patch_net.py``), then trained on the user's images as from random weights.

The labelled defect images (and a quarter of the good ones) are held out of the net's training and
give the threshold: ``patch_classifier.calibrate`` on their scores (the good ones also under another
light, ``perturb.camera_copy``), and the defect-type head. One ONNX graph (``image`` → ``logits``,
``heatmap``), the classifier contract of ``patch_classifier``, served in FP32. The classifier can serve
the mean of the net's maps over the input's mirrors and quarter turns (``views`` 2, 4 or 8: one batch
through the net inside the graph, that many times the net's cost per frame). From random weights 8
views separated better; from the shipped weights 2 views did not beat 1 within the spread of two
build seeds (bench/RESULTS.md, round 6 and "shipped starting weights"), so ``VIEWS`` = 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from cloud_trainer.train import common
from cloud_trainer.train.patch_classifier import GOOD_FRR

WIDTH = 24  # channels of the first stage (2x after the first pool)
CROP = 64  # training crops (input pixels): the net is fully convolutional
BATCH = 32
STEPS_PER_EPOCH = 60
SYNTHETIC_RATE = 0.5  # share of training crops with a synthetic defect
POS_WEIGHT = 10.0  # a defect covers a few cells of the map
HELD_OUT_GOOD = 0.25  # share of the good images kept out of the net's training for the threshold
LIGHT_COPIES = 2  # relit copies of each held-out good image in the threshold's good scores
# another lamp (a dome against a raking ring, a dimmer face under the same glints) moves the level of a part's
# flat face while its relief (chamfer rings, grain) and the background keep theirs, which a whole-crop gain never
# shows the net: FACE_LIGHT_RATE of the training crops have their face level (the pixels above the image's Otsu
# threshold, the level blurred at FACE_LIGHT_SIGMA model pixels) times U(1 - FACE_LIGHT_GAIN, 1 + FACE_LIGHT_GAIN)
# before the usual light change (bench/RESULTS.md, issue 13: the face-level light)
FACE_LIGHT_RATE = 0.5
FACE_LIGHT_GAIN = 0.6
FACE_LIGHT_SIGMA = 4.0
# the face is told from the background only where the image's Otsu split holds this share of its grey variance:
# a part against its background 0.93-0.98 (three generators' frames); a region of the face alone (an roi inside
# the part, a tile) has one grain, which the split would cut in two (0.64 for Gaussian grain, 0.81 for a pure
# sinusoid), its brighter half then lit apart from its darker: a relief 3-7 times its own taught as good
FACE_SPLIT = 0.85
# the net's starting weights: the same self-supervised task run once for 4800 steps on the simulator's good
# parts of both finishes (bench/pretrain_patch_net.py writes this file; ~0.4 MB)
PRETRAINED = Path(__file__).resolve().parent / "weights" / "patch_net.npz"

VIEWS = 1  # views of the frame whose maps the served map averages (2: its mirror too; 8: all quarter turns)


def _modules():
    import torch
    from torch import nn
    from torch.nn import functional as F

    from cloud_trainer.train.patch_classifier import _model_class

    PatchClassifier = _model_class()[0]

    def box(x, k: int = 17):
        """The mean over a k x k neighbourhood (the image's pixels only), as two 1-D passes."""
        x = F.avg_pool2d(x, (k, 1), 1, (k // 2, 0), count_include_pad=False)
        return F.avg_pool2d(x, (1, k), 1, (0, k // 2), count_include_pad=False)

    class PatchNet(nn.Module):
        """image → (features (N, 2W, h/4, w/4), defect logit map (N, 1, h/4, w/4))."""

        def __init__(self, width: int = WIDTH, channels: int = 3) -> None:
            super().__init__()

            def block(cin: int, cout: int, dilation: int = 1):
                return nn.Sequential(
                    nn.Conv2d(cin, cout, 3, 1, dilation, dilation=dilation),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(),
                )

            w = width
            self.body = nn.Sequential(
                block(channels, w),
                block(w, w),
                nn.MaxPool2d(2),
                block(w, 2 * w),
                block(2 * w, 2 * w),
                nn.MaxPool2d(2),
                block(2 * w, 2 * w),
                block(2 * w, 2 * w, 2),
                block(2 * w, 2 * w, 4),
            )
            self.head = nn.Conv2d(2 * w, 1, 1)

        def forward(self, x):
            # local contrast: each pixel against its 17-px neighbourhood (the light's gain, offset and
            # gradient out; a crop and the whole image see the same values away from the border)
            mu = box(x)
            f = self.body((x - mu) / torch.sqrt(box((x - mu).pow(2).mean(1, keepdim=True)) + 0.01))
            return f, self.head(f)

    def _view(x, k: int):
        """The k-th of the 8 symmetries of the square: transposed when k >= 4, then mirrored (bit 0:
        left-right, bit 1: up-down); 0-3 are the mirrors alone, which fit any shape."""
        x = x.transpose(2, 3) if k >= 4 else x
        dims = [d for bit, d in ((1, 3), (2, 2)) if k & bit]
        return torch.flip(x, dims) if dims else x

    def _unview(m, k: int):
        dims = [d for bit, d in ((1, 3), (2, 2)) if k & bit]
        m = torch.flip(m, dims) if dims else m
        return m.transpose(2, 3) if k >= 4 else m

    class LearnedPatchClassifier(nn.Module):
        """image → (logits (N, K), heatmap (N, 1, h/4, w/4)): ``patch_classifier``'s contract with the
        learnt net's defect map as the score map and its features as the head's patch inputs."""

        blur: torch.Tensor  # buffers (register_buffer), declared for the type checker
        head_w: torch.Tensor
        head_b: torch.Tensor
        log_centre: torch.Tensor

        def __init__(
            self, net, head_w: np.ndarray, head_b: np.ndarray, centre: float, slope: float, views: int = VIEWS
        ) -> None:
            super().__init__()
            self.net = net
            self.views = int(views)
            t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
            g = np.outer(*(2 * [np.array([1.0, 2.0, 1.0]) / 4.0]))
            self.register_buffer("blur", t(g)[None, None])
            self.register_buffer("head_w", t(head_w))
            self.register_buffer("head_b", t(head_b)[None])
            self.register_buffer("log_centre", t([centre])[None])  # the score threshold (a logit)
            self.slope = float(slope)

        def inputs(self, image):
            """The identity view's features and the defect map averaged over the image's ``views``
            (quarter turns and mirrors, one batch through the net, each map turned back)."""
            square = image.shape[-1] == image.shape[-2]
            n = self.views if square else min(self.views, 4)
            xs = [_view(image, k) for k in range(n)]
            f, m = self.net(torch.cat(xs) if n > 1 else image)
            if n > 1:
                ms = m.reshape(n, -1, *m.shape[1:])
                m = sum(_unview(ms[k], k) for k in range(n)) / n
                f = f.reshape(n, -1, *f.shape[1:])[0]
            return torch.cat([f, m], 1)

        def score_map(self, z):
            return F.conv2d(F.pad(z[:, -1:], (1, 1, 1, 1), mode="replicate"), self.blur)

        forward = PatchClassifier.forward  # score map → NG logit at the threshold, defect type at its peak

    return PatchNet, LearnedPatchClassifier


def synthetic_defect(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One generic surface defect drawn on the bright part of a BGR (or grey) uint8 image, and its
    mask (uint8 0/255): a thin polyline of either contrast (scratch, crack), a discoloured blob
    (stain), a shaded disc (dent), of random size, contrast and place, or a small dark region inside
    the part (a hole) covered with the part's surface (a missing hole)."""
    import cv2

    h, w = img.shape[:2]
    g = img.reshape(h, w, -1).mean(2)
    ys, xs = np.nonzero(g > g.mean())  # the part: brighter than the image's mean
    if len(ys) == 0:
        ys, xs = np.nonzero(np.ones_like(g))
    k = int(rng.integers(len(ys)))
    cy, cx = float(ys[k]), float(xs[k])
    out = img.astype(np.float32).reshape(h, w, -1)
    layer = np.zeros((h, w), np.uint8)
    scale = min(h, w) / 200.0
    kind = int(rng.integers(4))
    if kind == 3:  # a feature missing: a small dark hole inside the part filled with its surface
        filled = _fill_hole(out, g, rng)
        if filled is not None:
            out, layer = filled
            return np.clip(out, 0, 255).astype(np.uint8).reshape(img.shape), layer
        kind = int(rng.integers(3))
    if kind == 0:  # a thin line, straight or jagged
        pts, a = [(cx, cy)], rng.uniform(0, 2 * math.pi)
        for _ in range(int(rng.integers(1, 6))):
            a += rng.uniform(-0.7, 0.7)
            step = rng.uniform(4, 25) * scale
            pts.append((pts[-1][0] + math.cos(a) * step, pts[-1][1] + math.sin(a) * step))
        cv2.polylines(
            layer, [np.round(np.asarray(pts)).astype(np.int32)], False, 255, int(rng.integers(1, 3))
        )
        layer &= (g > 0.8 * g.mean()).astype(np.uint8) * 255
        out[layer > 0] += rng.choice([-1.0, 1.0]) * rng.uniform(15, 80)
    elif kind == 1:  # a discoloured blob of a few overlapping discs
        yy, xx = np.ogrid[:h, :w]
        blob: np.ndarray = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(1, 5))):
            ox, oy = rng.uniform(-8, 8, 2) * scale
            br = rng.uniform(2.5, 10) * scale
            blob = np.maximum(blob, np.clip(1 - ((xx - cx - ox) ** 2 + (yy - cy - oy) ** 2) / br**2, 0, 1))
        blob = cv2.GaussianBlur(blob, (0, 0), rng.uniform(0.5, 2))
        colour = rng.uniform(0, 255, out.shape[2]).astype(np.float32)
        alpha = blob[:, :, None] * rng.uniform(0.3, 0.7)
        out = out * (1 - alpha) + colour * alpha
        layer[blob > 0.25] = 255
    else:  # a dent: a depression lit from one side, bright on one flank and dark on the other
        dr = rng.uniform(3, 10) * scale
        yy, xx = np.mgrid[:h, :w].astype(np.float32)
        r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / dr
        inside = r <= 1
        a = rng.uniform(0, 2 * math.pi)
        along = ((xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)) / dr
        if rng.random() < 0.5:  # sharp-rimmed (an impact): the shading steps at the rim
            shade = along
        else:  # a smooth bowl (depth cos^2 of the radius): the slope along the light, no step at the rim
            shade = np.where(inside, along * np.sinc(r), 0.0)
            shade /= max(float(np.abs(shade).max()), 1e-6)
        out[inside] += (shade[inside] * rng.uniform(15, 45))[:, None]
        layer[inside] = 255
    return np.clip(out, 0, 255).astype(np.uint8).reshape(img.shape), layer


def _fill_hole(out: np.ndarray, g: np.ndarray, rng: np.random.Generator):
    """A small dark region enclosed by the bright part (a hole, a marking) covered by the part's own
    surface from elsewhere (the same image shifted to where it is bright all over); None when the
    image has no such region."""
    import cv2

    h, w = g.shape
    bright = (g > g.mean()).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(1 - bright, connectivity=8)
    x0, y0, bw, bh, area = (stats[1:, k] for k in range(5))
    ok = (x0 > 0) & (y0 > 0) & (x0 + bw < w) & (y0 + bh < h) & (area >= 4) & (area <= 0.01 * h * w)
    cand = np.nonzero(ok)[0] + 1
    if len(cand) == 0:
        return None
    c = int(rng.choice(cand))
    region = cv2.dilate((lab == c).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2) > 0
    ys, xs = np.nonzero(region)
    for _ in range(20):  # a source offset where the covered region lands on the bright part only
        dy, dx = (rng.uniform(-0.3, 0.3, 2) * (h, w)).astype(int)
        sy, sx = ys + dy, xs + dx
        if sy.min() < 0 or sx.min() < 0 or sy.max() >= h or sx.max() >= w or not bright[sy, sx].all():
            continue
        res = out.copy()
        res[ys, xs] = out[sy, sx]
        layer = np.zeros((h, w), np.uint8)
        layer[region] = 255
        return res, layer
    return None


def face_threshold(region: np.ndarray) -> float | None:
    """The grey level (Otsu's, on the mean of the channels) above which a pixel of ``region`` is taken for
    the part's face in ``face_light``: one threshold a training image, no knowledge of the part. None where
    the split does not tell a face from a background (``FACE_SPLIT``: a region of the face alone, a flat
    one): no face light for that image."""
    import cv2

    g = region.reshape(region.shape[0], region.shape[1], -1).astype(np.float64).mean(2)  # face_light's grey
    threshold = float(cv2.threshold(g.astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0])
    face = g > threshold  # the pixels face_light lights
    share = float(face.mean())
    if share in (0.0, 1.0):
        return None
    between = share * (1 - share) * (g[face].mean() - g[~face].mean()) ** 2
    # the variance counts a grey level's 8-bit rounding (1/12): a face whose noise is a grey level or less (a
    # smooth face, one clipped at white) takes two adjacent levels, which the split would otherwise hold whole
    return threshold if between >= FACE_SPLIT * (g.var() + 1 / 12) else None


def face_light(img: np.ndarray, threshold: float, gain: float, sigma: float) -> np.ndarray:
    """``img`` (uint8, grey or colour) with the part's face (the pixels brighter than ``threshold``) lit
    ``gain`` times its level (the face's mean blurred at ``sigma`` px, so a face's relief is not flattened),
    its relief and the background as they were: another lamp's light on the face, not on the chamfers.
    Costs two Gaussian blurs of the crop."""
    import cv2

    f = img.astype(np.float32)
    f3 = f.reshape(f.shape[0], f.shape[1], -1)
    grey = f3.mean(2)
    face = (grey > threshold).astype(np.float32)
    level = cv2.GaussianBlur(grey * face, (0, 0), sigma) / np.maximum(
        cv2.GaussianBlur(face, (0, 0), sigma), 1e-3
    )
    lit = f3 + ((gain - 1) * level * face)[..., None]
    return np.clip(lit.reshape(f.shape), 0, 255).astype(np.uint8)


def augment(
    img: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    scale: float = 1.0,
    face_level: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotation by quarter turns, a mirror, another light (stronger than the camera check's; with a
    ``face_level`` threshold, for ``FACE_LIGHT_RATE`` of the crops first the part's face lit apart from its
    relief, ``face_light``), blur, sensor noise and JPEG: what must not be taken for a defect. ``scale``:
    crop pixels per model input pixel."""
    import cv2

    from cloud_trainer.train import perturb

    k = int(rng.integers(4))
    img, mask = np.rot90(img, k), np.rot90(mask, k)
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    img, mask = np.ascontiguousarray(img), np.ascontiguousarray(mask)
    if face_level is not None and rng.random() < FACE_LIGHT_RATE:
        gain = float(rng.uniform(1 - FACE_LIGHT_GAIN, 1 + FACE_LIGHT_GAIN))
        img = face_light(img, face_level, gain, FACE_LIGHT_SIGMA * scale)
    img = perturb.lighting(img, rng, gain=0.5, offset=30.0, gradient_amount=0.4, temperature=0.1)
    f: np.ndarray = img.astype(np.float32)
    if rng.random() < 0.3:
        f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.3, 0.9))
    f += rng.standard_normal(f.shape).astype(np.float32) * rng.uniform(0, 5)
    img = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        img = perturb.jpeg(img, int(rng.integers(55, 96)))
    return img, mask


def pretrained_state(path: Path, channels: int = 3) -> tuple[dict, str] | None:
    """The PatchNet's starting weights stored at ``path`` (``save_state``'s file) as a state dict for a
    net of ``channels`` inputs (grey: the first convolution's colour weights summed), and what they
    were learnt on; None when there is no such file or it was made for another net."""
    import torch

    if not path.is_file():
        return None
    PatchNet, _ = _modules()
    want = PatchNet(WIDTH, channels).state_dict()
    with np.load(path, allow_pickle=False) as z:
        stored = {k: z[k] for k in z.files if k != "about"}
        about = json.loads(str(z["about"])) if "about" in z.files else {}
    if set(stored) != set(want):
        return None
    state = {}
    for k, v in stored.items():
        if v.ndim == 4 and v.shape[1] == 3 and want[k].shape[1] == 1:  # a grey net: one channel of the sum
            v = v.sum(1, keepdims=True)
        if tuple(v.shape) != tuple(want[k].shape):
            return None
        state[k] = torch.from_numpy(np.ascontiguousarray(v))
    return state, str(about.get("trained_on", path.name))


def save_state(net, path: Path, about: dict) -> None:
    """The net's weights and buffers as a numpy archive (no pickled code), with ``about`` as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    with open(path, "wb") as f:
        np.savez_compressed(f, about=np.array(json.dumps(about, sort_keys=True)), **arrays)


def fit_net(
    images: list[np.ndarray],
    pre,
    seed: int,
    steps: int,
    log=common.stderr_log,
    channels: int = 3,
    init: Path | None = PRETRAINED,
):
    """The PatchNet from good images only: each step a batch of crops (``CROP`` model pixels, cut from
    the frame's region, ``working_image``), half of them holding a synthetic defect, each seen
    through ``augment``; the loss per cell of the map against the defect's mask. It starts from the
    weights at ``init`` where they fit the net (else, and with ``init=None``, from random ones).
    Returns the net and what it started from."""
    import time

    import torch
    from torch.nn import functional as F

    from cloud_trainer.train.vision import tensors
    from model_packager.preprocess import image_region

    PatchNet, _ = _modules()
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 31])
    net = PatchNet(WIDTH, channels)
    start = "random weights"
    got = pretrained_state(init, channels) if init is not None else None
    if got is not None:
        net.load_state_dict(got[0])
        start = f"the shipped weights ({got[1]})"
    log(f"vision (patch, learned): the net starts from {start}")
    opt = common.optimizer(torch.optim.AdamW, net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=max(1, steps), pct_start=0.15)
    regions = [working_image(image_region(im, pre), pre) for im in images]
    face_levels = [face_threshold(r) for r in regions]
    side = min(CROP, pre.height, pre.width) // 4 * 4
    crop_pre = pre.model_copy(update={"roi": None, "crop": None, "width": side, "height": side})
    t0, running = time.perf_counter(), 0.0
    pos_weight = torch.tensor(POS_WEIGHT)
    for step in range(steps):
        crops, masks = [], []
        for i in rng.integers(0, len(regions), BATCH):
            img = regions[i]
            h, w = img.shape[:2]
            chh, cww = min(h, round(side * h / pre.height)), min(w, round(side * w / pre.width))
            m = np.zeros((h, w), np.uint8)
            if rng.random() < SYNTHETIC_RATE:
                img, m = synthetic_defect(img, rng)
            ys, xs = np.nonzero(m)
            if len(ys):  # the crop around a point of the defect
                k = int(rng.integers(len(ys)))
                y0 = int(np.clip(ys[k] - rng.integers(chh // 8, chh - chh // 8), 0, h - chh))
                x0 = int(np.clip(xs[k] - rng.integers(cww // 8, cww - cww // 8), 0, w - cww))
            else:
                y0, x0 = int(rng.integers(0, h - chh + 1)), int(rng.integers(0, w - cww + 1))
            crop, crop_mask = img[y0 : y0 + chh, x0 : x0 + cww], m[y0 : y0 + chh, x0 : x0 + cww]
            c, cm = augment(crop, crop_mask, rng, chh / side, face_levels[i])
            crops.append(c)
            masks.append(cm)
        _, out = net(torch.from_numpy(tensors(crops, crop_pre)))
        loss = F.binary_cross_entropy_with_logits(out, _cells(masks, crop_pre), pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if (step + 1) % max(1, steps // 5) == 0:
            log(
                f"vision (patch, learned): step {step + 1}/{steps}, loss {running / max(1, steps // 5):.3f}, "
                f"{time.perf_counter() - t0:.0f}s"
            )
            running = 0.0
    return net.eval(), start


WORK_SCALE = 2  # the synthetic defects are drawn on the frame at most this many times the model's input


def working_image(region: np.ndarray, pre) -> np.ndarray:
    """The image the training crops and their synthetic defects are drawn on: the frame's region itself
    up to ``WORK_SCALE`` times the model's input, else brought down to that (with the agent's
    interpolation). A 5-MP frame drawn on whole took ~15 s a step (32 defects, each over all its pixels)
    for a model that sees it at 128 px; a frame of up to twice the input is drawn on as it is, as before."""
    import cv2

    from model_packager.preprocess import _INTERPOLATION

    h, w = region.shape[:2]
    f = min(h / (WORK_SCALE * pre.height), w / (WORK_SCALE * pre.width))
    if f <= 1:
        return region
    size = (max(1, round(w / f)), max(1, round(h / f)))
    return cv2.resize(region, size, interpolation=_INTERPOLATION[pre.interpolation])


def _cells(masks: list[np.ndarray], pre):
    """Masks (input-image pixels) → (N, 1, h/4, w/4) targets: a cell is a defect where any of it is."""
    import cv2
    import torch
    from torch.nn import functional as F

    m = np.stack(
        [cv2.resize(mm, (pre.width, pre.height), interpolation=cv2.INTER_AREA) for mm in masks]
    ).astype(np.float32)
    return (F.max_pool2d(torch.from_numpy(m / 255.0)[:, None], 4) > 0.15).float()


def held_out_good(
    good_rows: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(held out for the threshold, the net's training) of the good rows: ``HELD_OUT_GOOD`` of them at
    random, and for a tiled build's tiles by their source image, so that the threshold's good scores are
    not of tiles whose overlapping neighbours of the same part the net trained on (too low, they placed it
    among good parts)."""
    if groups is None:
        good_rows = rng.permutation(good_rows)
        n_held = max(3, int(round(HELD_OUT_GOOD * len(good_rows))))
        return good_rows[:n_held], good_rows[n_held:]
    image_of = np.asarray(groups)[good_rows]
    images = rng.permutation(np.unique(image_of))
    held = np.isin(image_of, images[: max(3, int(round(HELD_OUT_GOOD * len(images))))])
    return rng.permutation(good_rows[held]), rng.permutation(good_rows[~held])


def train(
    data,
    size: int,
    seed: int,
    log=common.stderr_log,
    threads: int | None = None,
    pre=None,
    epochs: int = 20,
    false_reject_rate: float = GOOD_FRR,
) -> dict:
    """The net from the good images of the training split (less a held-out quarter); the threshold
    and the defect-type head from the held-out good images (and their relit copies) and every labelled
    defect image of the train + validation split; the test split stays unseen for the gate."""
    import time

    import torch

    from cloud_trainer.train import perturb
    from cloud_trainer.train.patch_classifier import _head, _model_class, calibrate, outcome, prepare
    from cloud_trainer.train.vision import tensors

    t0 = time.perf_counter()
    pre, tpre, x, y, (tr, va, te), split_rule = prepare(data, size, seed, threads, pre)
    rows = np.concatenate([tr, va])
    good_rows = rows[y[rows] == 0]
    rng = np.random.default_rng([seed, 23])
    held, fit_rows = held_out_good(good_rows, data.groups, rng)
    n_held = len(held)
    steps = max(1, epochs) * STEPS_PER_EPOCH
    net, start = fit_net([data.images[i] for i in fit_rows], tpre, seed, steps, log, x.shape[1])
    _, Classifier = _modules()
    model = Classifier(net, np.zeros((4 * WIDTH + 3, 1)), np.zeros(1), 0.0, 1.0).eval()
    defect_rows = rows[y[rows] != 0]
    light = tensors(
        [perturb.camera_copy(data.images[i], rng) for i in held for _ in range(LIGHT_COPIES)], tpre
    )

    def z_of(xs):
        with torch.no_grad():
            return torch.cat([model.inputs(torch.from_numpy(xs[i : i + 64])) for i in range(0, len(xs), 64)])

    def scores(z):
        with torch.no_grad():
            return model.score_map(z).flatten(1).amax(1).numpy()

    good_s = scores(z_of(np.concatenate([x[held], light])))
    z_ng = z_of(x[defect_rows]) if len(defect_rows) else None
    ng_s = scores(z_ng) if z_ng is not None else np.zeros(0)
    cal = calibrate(good_s, ng_s, false_reject_rate)
    if z_ng is not None:
        with torch.no_grad():
            flat = model.score_map(z_ng).flatten(1)
            pooled = _model_class()[2](z_ng, flat, flat.amax(1, keepdim=True)).numpy()
        head_w, head_b, head_acc = _head(pooled, y[defect_rows], len(data.classes), seed)
    else:
        k = max(1, len(data.classes) - 1)
        head_w, head_b, head_acc = np.zeros((4 * WIDTH + 3, k), np.float32), np.zeros(k, np.float32), 1.0
    model = Classifier(net, head_w, head_b, cal["centre"], cal["slope"]).eval()
    truth = np.r_[np.zeros(len(good_s), bool), np.ones(len(ng_s), bool)]
    separation = common.auroc(truth, np.r_[good_s, ng_s]) if len(ng_s) else float("nan")
    cal.update(
        good_scores={"median": float(np.median(good_s)), "max": float(good_s.max())},
        ng_scores={"median": float(np.median(ng_s)), "min": float(ng_s.min())} if len(ng_s) else None,
        held_out_auroc=separation,
        head_train_accuracy=head_acc,
        good_images=int(len(good_rows)),
        net_good_images=int(len(fit_rows)),
        held_out_good_images=int(n_held),
        defect_images=int(len(defect_rows)),
        steps=steps,
        net_start=start,
        scorer="learnt patch net (self-supervised on the good images with synthetic defects)",
    )
    log(
        f"vision (patch, learned): net from {len(fit_rows)} good images ({steps} steps); threshold from "
        f"{n_held} held-out good images (+ {LIGHT_COPIES} relit copies each) and {len(defect_rows)} "
        f"defect images: held-out AUROC {separation:.3f}; score threshold {cal['centre']:.4g} "
        f"({cal['rule']}); defect-type head accuracy {head_acc:.2f}; {len(te)} images left for the gate"
    )
    return outcome(model, pre, x, y, (tr, va, te), time.perf_counter() - t0, cal, split_rule)
