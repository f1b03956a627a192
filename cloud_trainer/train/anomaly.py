"""The good-only anomaly family: `cloud-trainer build anomaly` (PatchCore-style).

Trained on good images only (works from 20; better with more). A small ResNet-like backbone
(torchvision's ResNet-18 layout: ``conv1``/``bn1``/``layer1``/``layer2``, so a ResNet-18 state dict
loads as is) gives patch features at 1/4 and 1/8 of the input; they are averaged over a 3×3
neighbourhood, concatenated, and compared with a memory bank of good patches (a greedy coreset of
all training patches). A patch's anomaly is its distance to the nearest bank patch; the anomaly
map is that distance, smoothed and upsampled to the input; the image score is the map's maximum.

Backbone weights: ``--backbone-weights PATH`` loads a local state dict (a torchvision ResNet-18
``.pth`` or any dict with the same keys; never downloaded). Without it the backbone keeps its
seeded random initialisation and only its batch-norm statistics are set from the good images:
random convolutional features, which on textured parts find local defects well (measured in
docs/trainer.md and bench/RESULTS.md) but know nothing of semantics.

The threshold: every good image is scored by a bank built without it (k-fold), and the threshold
is the ``1 - false_reject_rate`` quantile of those scores (default 1 %). The whole thing (backbone,
bank, distances, smoothing, upsampling) is one ONNX graph: ``image`` in, ``anomaly_score`` (N, 1)
and ``anomaly_map`` (N, 1, H, W) out. The convolutions are quantized to INT8 when that form holds the
other families' INT8 gate on every held-out image (verdicts, score within 5 % of the threshold, AUROC):
each good image scored by its fold's bank (built without it, as the threshold was set) and the test
images; otherwise the package carries the FP32 form only, and says so (``served_why``). The golden inputs
an agent checks each form with on its CPU hold good views made to score just below and just above the
threshold (``near_threshold``): the good images themselves, which the bank holds, score far below it.

Input: a folder of good images, or an MVTec AD root (``train/good`` to train on; ``test/good``,
``test/<defect>`` and optional ``ground_truth/<defect>/<name>_mask.png`` to evaluate on), or a folder holding
``good/`` beside defect folders (``scratch/``, ``dent/``: evaluated on), or a dataset ``dataset import`` wrote.
A folder read directly is read as the import would read it: copies left out (``_Copies``), and with defect
images to test but no good one, a seeded share of the good images kept out of training for the test. PNG, JPEG,
BMP, TIFF; 8-bit grey or colour; any size (resized to ``--size``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cloud_trainer.train import common
from cloud_trainer.train.data import (
    DatasetError,
    dataset_camera_size,
    dataset_file,
    dataset_max_megapixels,
    declared_camera,
    digest_camera,
    digest_mask,
    digest_part,
    label_lines,
    label_row,
    link_out,
    path_text,
    read_dataset_yaml,
    read_image_bytes,
    read_image_file,
)
from protocols import json_codec
from protocols.sample_camera import camera_size

INPUT = "image"
OUTPUTS = ["anomaly_score", "anomaly_map"]
NAME = "part-anomaly"
MIN_GOOD = 20
# an imported dataset without good test images keeps this share of its good images out of training for the test
# set (the vision family's split keeps 15 % for its gate alike)
HELD_OUT_GOOD = 0.15
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# the whole frames kept for the input statistics (measured at 128 px) when the model sees a --roi box
STATS_SIDE = 512
# --tiles: neighbouring tiles overlap by this share of a tile (the vision family's), so that a defect on
# a seam is whole in at least one tile
TILE_OVERLAP = 0.125
# --tiles: the smallest input per tile. The features look at 4x4-px patches with 3x3 neighbourhoods and
# a 44-px context window, and the map is smoothed over 3 patches: on a 48-px tile the context is the
# whole tile and every patch touches its border
MIN_TILE_SIZE = 64
# --tiles: the most model pixels per frame (tiles x size x size). The bank distances dominate a frame's
# cost (every patch against every bank patch). Measured (bench/anomaly_tiles_bench.py, 2-core AVX2, ONNX
# Runtime FP32, 2 threads): 5x4 tiles of 224 px (1.0 M) 416 ms a frame bare, 477 ms through the agent's
# preprocessing and stitching; 5x4 of 256 px (1.3 M) 2.2 s on the machine loaded by four other builds.
# 1 Mi (16 tiles of 256 px, 20 of 224: a 1280x1024 frame at 0.8 of its resolution) is about half a
# second a frame on a quiet gateway
MAX_TILE_PIXELS = 1 << 20
MS_PER_MPX = 450.0


class AnomalyDataError(ValueError):
    """A dataset the anomaly family cannot train on; the message names the file or folder and the fix."""


# -- reading ------------------------------------------------------------------------------------


def _shrink(img: np.ndarray, max_side: int, size: int | None = None) -> np.ndarray:
    """``img`` shrunk (area) to at most ``max_side`` px on its longer side. With the model's input ``size``,
    so that the model input made from it is the one the agent makes from the whole frame: each side goes
    to a whole multiple of ``size`` (the aspect kept to within one ``size`` step; the model squares the
    image anyway), so the model's own area resize to ``size`` is an exact box over the area shrink, which
    together are the agent's one area resize (at most 1 grey level apart, the shrunk image's rounding).
    A plain shrink to 1024 px put a 2448x2048 frame's input up to 8 grey levels (mean 1.4) from the
    agent's, a 300x5000 strip's far more; an image with a side under ``size`` is kept whole."""
    import cv2

    h, w = img.shape[:2]
    k = max_side / max(h, w)
    if k >= 1:
        return img
    if size is not None:
        if h < size or w < size:  # the model enlarges that side: the agent's resize of the whole frame
            return img
        kh, kw = max(1, int(h * k) // size), max(1, int(w * k) // size)
        return cv2.resize(img, (kw * size, kh * size), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)


def _decode(path: Path, max_megapixels: float | None, inside: tuple[Path, str] | None = None) -> np.ndarray:
    """``inside``: (the folder ``path`` was checked to lie in, what it is), checked again once the file is open
    (``read_image_file``): one replaced by a link out after the check is refused, never trained on."""
    import cv2

    from cloud_trainer.train.images import refuse_transparency
    from protocols.image_header import ImageRejected, eight_bit

    try:  # at its own depth: a 16-bit image read as colour would be divided by 256 (a Mono12 one: black)
        data, img = read_image_file(
            path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH, max_megapixels, inside=inside
        )
        # as `dataset import` refuses it: the model would learn the colours stored beneath the alpha
        refuse_transparency(path, data)
        return eight_bit(
            img, None, "`cloud-trainer dataset import --pixel-bits` (then build from that dataset)"
        )
    except DatasetError as exc:
        raise AnomalyDataError(str(exc)) from None
    except ImageRejected as exc:
        raise AnomalyDataError(f"{path}: {exc}") from None


def _cut(img: np.ndarray, roi: list[int] | None, path: Path) -> np.ndarray:
    """The ``--roi`` box of a frame (the whole frame without one); a box reaching outside it is refused."""
    if roi is None:
        return img
    x, y, w, h = roi
    if x + w > img.shape[1] or y + h > img.shape[0]:
        raise AnomalyDataError(
            f"{path}: --roi {x},{y},{w},{h} reaches outside this {img.shape[1]}x{img.shape[0]} image; "
            "give a box inside the camera's frame (X,Y,WIDTH,HEIGHT in its pixels)"
        )
    return img[y : y + h, x : x + w]


def read_image(
    path: Path,
    max_side: int = 1024,
    max_megapixels: float | None = None,
    roi: list[int] | None = None,
    size: int | None = None,
    inside: tuple[Path, str] | None = None,
) -> np.ndarray:
    """Any 8-bit PNG/JPEG/BMP/TIFF, grey or colour → BGR uint8, shrunk (area) to at most ``max_side``
    pixels on its longer side, so that 200 images of a 5-MP camera do not fill the memory; with ``roi``,
    that box of the frame (cut at the camera's resolution, then shrunk); with the model's input ``size``,
    shrunk so that the model's input is the agent's (``_shrink``). A file whose header declares more
    than ``max_megapixels`` (default: the import's limit) is refused undecoded."""
    return _shrink(_cut(_decode(path, max_megapixels, inside), roi, path), max_side, size)


def read_view(
    path: Path,
    roi: list[int] | None,
    max_megapixels: float | None = None,
    size: int | None = None,
    inside: tuple[Path, str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(what the model sees: the ``roi`` box or the frame, as ``read_image``; the whole frame, shrunk to
    at most STATS_SIDE px, for the input statistics, or None without ``roi``)."""
    if roi is None:
        return read_image(path, max_megapixels=max_megapixels, size=size, inside=inside), None
    img = _decode(path, max_megapixels, inside)
    return _shrink(_cut(img, roi, path), 1024, size), _shrink(img, STATS_SIDE)


def tile_grid(region_hw: tuple[int, int], size: int, tiles: list[int], overlap: float = TILE_OVERLAP):
    """``(x, y, w, h)`` of each tile of a frame region as the agent cuts it (``preprocess.tile_boxes``)."""
    from model_packager.preprocess import tile_boxes

    return tile_boxes(*region_hw, preprocessing(size, tiles=tiles, tile_overlap=overlap))


def cut_tiles(
    region: np.ndarray, size: int, tiles: list[int], path: Path, overlap: float = TILE_OVERLAP
) -> list[np.ndarray]:
    """The region's tiles, each area-resized to ``size`` x ``size``: what the agent makes of the same
    frame before normalising it (the same crops, the same resize), so the trainer's tensors are the
    agent's. A tile smaller than ``size`` is refused: it would be enlarged, costing a run for no detail."""
    import cv2

    boxes = tile_grid(region.shape[:2], size, tiles, overlap)
    _, _, tw, th = boxes[0]
    if min(tw, th) < size:
        cols = max(1, int(region.shape[1] / size))
        rows = max(1, int(region.shape[0] / size))
        raise AnomalyDataError(
            f"{path}: --tiles {tiles[0]}x{tiles[1]} cuts its {region.shape[1]}x{region.shape[0]}-px view (the "
            f"frame, or the --roi box) into {tw}x{th}-px tiles, smaller than --size "
            f"{size}: each would be enlarged, {len(boxes)} runs a frame for no detail; use at most about "
            f"{cols}x{rows} tiles at --size {size}, or a smaller --size"
        )
    out = []
    for x, y, w, h in boxes:
        t = region[y : y + h, x : x + w]
        out.append(
            cv2.resize(t, (size, size), interpolation=cv2.INTER_AREA) if (h, w) != (size, size) else t.copy()
        )
    return out


def read_views(
    path: Path,
    roi: list[int] | None,
    max_megapixels: float | None = None,
    size: int | None = None,
    tiles: list[int] | None = None,
    inside: tuple[Path, str] | None = None,
) -> tuple[list[np.ndarray], np.ndarray | None, float]:
    """(the model's views of a frame: one image as ``read_view``, or with ``tiles`` the frame's (or
    ``roi`` box's) tiles, cut at the camera's resolution and resized to ``size``; the whole frame shrunk
    for the input statistics, or None when the model's one view is the whole frame; the tiles' scale,
    model pixels per camera pixel along a tile's shorter side, 1.0 untiled)."""
    return views_of(_decode(path, max_megapixels, inside), path, roi, size, tiles)


def views_of(
    whole: np.ndarray,
    path: Path,
    roi: list[int] | None,
    size: int | None = None,
    tiles: list[int] | None = None,
) -> tuple[list[np.ndarray], np.ndarray | None, float]:
    """``read_views`` of a frame decoded already (``whole``, the file ``path``'s)."""
    if tiles is None:
        frame = None if roi is None else _shrink(whole, STATS_SIDE)
        return [_shrink(_cut(whole, roi, path), 1024, size)], frame, 1.0
    assert size is not None  # tiles are always cut at the model's size
    region = _cut(whole, roi, path)
    _, _, tw, th = tile_grid(region.shape[:2], size, tiles)[0]
    return cut_tiles(region, size, tiles, path), _shrink(whole, STATS_SIDE), size / min(tw, th)


def read_mask(
    path: Path, max_megapixels: float | None = None, inside: tuple[Path, str] | None = None
) -> np.ndarray:
    """A defect mask file → grey uint8 (same header check as ``read_image``). Read at its own depth: a 16-bit
    mask is refused naming it, as ``dataset import`` refuses one, rather than read divided by 256 (its defect
    pixels of 1 good, and the map's hit rate judged against a mask with no defect)."""
    import cv2

    from cloud_trainer.train.images import refuse_mask_beneath_clear

    try:
        data, m = read_image_file(
            path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH, max_megapixels, "a mask", inside=inside
        )
        refuse_mask_beneath_clear(path, data)  # as `dataset import` refuses it
    except DatasetError as exc:
        raise AnomalyDataError(str(exc)) from None
    if m.dtype != np.uint8:
        raise AnomalyDataError(f"{path}: {m.dtype} pixels; a mask is an 8-bit image (0: good, other: defect)")
    return m


def image_files(folder: Path) -> list[Path]:
    from cloud_trainer.train.images import is_image  # one list of image kinds with `dataset import`

    return sorted(p for p in folder.iterdir() if is_image(p))


def _no_images_below(folder: Path, root: Path) -> None:
    """Images in a subfolder of a folder whose own images are read (a folder of good images kept by day,
    ``test/dent/day2/``) are refused: left unread, the model trained on fewer images than the user gave, or
    a folder of subfolders only was "0 good images", without a word of where they lie. A link among them
    that leads out of ``root`` is refused as such first, whether or not anything is where it leads."""
    from cloud_trainer.train.images import images_in_subfolders

    try:
        found = images_in_subfolders(folder)
    except DatasetError as exc:  # a folder that cannot be listed, a link that leads nowhere
        if isinstance(path := getattr(exc, "path", None), Path):
            _inside(path, root)
        raise AnomalyDataError(str(exc)) from None
    below: dict[Path, int] = {}
    for p in found:
        _inside(p, root)
        top = folder / p.relative_to(folder).parts[0]
        below[top] = below.get(top, 0) + 1
    if below:
        sub, n = min(below.items())
        more = (
            f" (and {len(below) - 1} more subfolder{'s' if len(below) > 2 else ''})" if len(below) > 1 else ""
        )
        fix = f"move them into {folder} to use them, or out of it"
        if folder == root and not image_files(folder):  # a folder of folders: a folder per class, most likely
            fix = (
                f"for a folder per class (ok/, scratch/), import it (cloud-trainer dataset import {root} --task "
                f"anomaly --out DIR) and build from DIR; for good images kept by day, {fix}"
            )
        raise AnomalyDataError(
            f"{sub}: {n} image{'s' if n != 1 else ''} in a subfolder{more}, which the anomaly family does not "
            f"read (it reads the images lying in {folder} itself): {fix}"
        )


def _inside(path: Path, root: Path) -> Path:
    """``path`` (below the folder ``root`` the family was given), once sure that it lies inside ``root`` with
    its links followed. A link out (an image, ``good/``, MVTec's ``train/`` or ``test/dent/``, a mask) was read
    through: on a shared trainer another factory's images trained or scored a model. Refused before it is
    listed or read, naming the link and what it holds (not where it leads once resolved, nor what is there:
    another tenant's tree); links that stay inside keep working."""
    if (out := link_out(path, root)) is not None:
        link, shown = out
        raise AnomalyDataError(
            f"{link}: a link to {shown}, outside the folder {root}; the anomaly family reads only "
            "what lies inside the folder it is given: copy the file or folder in, or remove the link"
        )
    return path


@dataclass
class AnomalyData:
    good: list[np.ndarray]  # training images (good only)
    good_names: list[str]
    test: list[np.ndarray] = field(default_factory=list)  # evaluation images (MVTec test/)
    test_ng: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    test_kind: list[str] = field(default_factory=list)  # "good" or the defect class's name (test_ng decides)
    test_masks: list[np.ndarray | None] = field(default_factory=list)
    digest: str = ""
    layout: str = "folder"
    # with --roi: the whole frames of ``good`` (shrunk), whose statistics the agent's UNSURE check compares
    # each whole frame with; empty: ``good`` are the whole frames
    frames: list[np.ndarray] = field(default_factory=list)
    # the good training frames' (height, width) as the camera gave them (``good`` and ``frames`` are shrunk):
    # the agent's UNSURE check compares a frame's shape with theirs (``inputstats.frame_shapes``)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    # per ``shapes``: the (width, height) of the camera each came from, where its file names it (a sample the
    # agent uploaded: ``protocols.sample_camera``), else None
    cameras: list[tuple[int, int] | None] = field(default_factory=list)
    # with --tiles: ``good`` and ``test`` hold each frame's tiles in a row (this many a frame); the labels,
    # kinds, masks and names stay one per frame
    per_frame: int = 1
    # with --tiles: the model's pixels per camera pixel along a tile's shorter side (<= 1: tiles are shrunk)
    tile_scale: float = 1.0
    # good images kept out of training for the test set, which had defect images but no good one (HELD_OUT_GOOD)
    held_out: int = 0
    # the copies left out of a folder read directly (``dataset import`` leaves them out of its datasets): said
    copies: str = ""

    @property
    def stats_images(self) -> list[np.ndarray]:
        return self.frames or self.good

    @property
    def n_good(self) -> int:
        """Good training frames (``good`` holds their tiles when tiled)."""
        return len(self.good) // self.per_frame


def load_good(
    root: str | Path,
    min_good: int = MIN_GOOD,
    roi: list[int] | None = None,
    size: int | None = None,
    tiles: list[int] | None = None,
) -> AnomalyData:
    """A folder of good images (or one holding ``good/``), an MVTec AD root, or a dataset written by
    ``cloud-trainer dataset import`` (its good class trains; its test split and defects evaluate).
    With ``roi`` (X, Y, WIDTH, HEIGHT in the frames' pixels) the images (and masks) are that box of each
    frame, and ``frames`` the whole frames. With the model's input ``size``, large images are shrunk so
    that the model's input made from them is the one the agent makes from the whole frame. With
    ``tiles`` ([columns, rows]), ``good`` and ``test`` hold each frame's tiles (``read_views``)."""
    root = Path(root)
    if not root.is_dir():
        raise AnomalyDataError(f"{root}: no such folder; give a folder of good images or an MVTec AD root")
    if (root / "dataset.yaml").is_file() and (root / "labels.jsonl").is_file():
        return _load_imported(root, min_good, roi, size, tiles)
    h = hashlib.sha256()
    mvtec = (root / "train" / "good").is_dir()
    good_dir = root / "train" / "good" if mvtec else root / "good" if (root / "good").is_dir() else root
    files = [_inside(p, root) for p in image_files(_inside(good_dir, root))]
    _no_images_below(good_dir, root)
    beside = _classes_beside(root) if good_dir == root / "good" else []
    if len(files) < min_good:
        raise AnomalyDataError(
            f"{good_dir}: {len(files)} good image(s); the anomaly family needs at least "
            f"{min_good} (more is better: 200 measured in docs/trainer.md)"
        )
    copies = _Copies(root)
    read = []
    for p in files:
        if (whole := copies.read(p, "good")) is not None:
            data = p.read_bytes()
            read.append((p, whole.shape[:2], camera_size(data), *views_of(whole, p, roi, size, tiles)))
            h.update(hashlib.sha256(data).digest())
    ds = AnomalyData([], [], layout="mvtec" if mvtec else "folders" if beside else "folder")
    if mvtec and (root / "test").is_dir():
        _load_test(root, ds, h, roi, size, tiles, copies)
    # a folder per class's defect classes: test images, as `dataset import --task anomaly` has them
    for d in beside:
        for p in image_files(d):
            if (whole := copies.read(_inside(p, root), d.name)) is not None:
                ds.test += views_of(whole, p, roi, size, tiles)[0]
                h.update(d.name.encode() + hashlib.sha256(p.read_bytes()).digest())
                ds.test_kind.append(d.name)
                ds.test_masks.append(None)
    # defect images to test but no good one: a share of the good images is kept out of training for the test
    held = _kept_out(len(read), min_good, [k != "good" for k in ds.test_kind])
    for i, (p, shape, camera, views, frame, scale) in enumerate(read):
        if i in held:
            ds.test += views
            ds.test_kind.append("good")
            ds.test_masks.append(None)
            continue
        ds.good += views
        ds.shapes.append(shape)
        ds.cameras.append(camera)
        if frame is not None:
            ds.frames.append(frame)
        ds.good_names.append(p.name)
        ds.tile_scale = scale
    ds.test_ng = np.asarray([k != "good" for k in ds.test_kind], bool)
    ds.held_out = len(held)
    if copies.in_two:  # said once every image and mask is read: what else is wrong is said first
        raise AnomalyDataError(copies.in_two)
    if copies.left:  # as `dataset import` leaves them out: in training and in the test at once
        from cloud_trainer.train.images import copies_note

        ds.copies = copies_note(copies.left, root)
        if len(ds.good_names) < min_good:
            raise AnomalyDataError(
                f"{good_dir}: {len(ds.good_names)} good image(s) once copies are left out ({ds.copies}); the "
                f"anomaly family needs at least {min_good} (more is better: 200 measured in docs/trainer.md)"
            )
    ds.per_frame = len(ds.good) // max(1, len(ds.good_names))
    ds.digest = "sha256:" + h.hexdigest()
    return ds


class _Seen(NamedTuple):
    path: Path
    label: str  # "good" or the defect class's folder


class _Copies:
    """The images of a folder read directly, by their pixels, as ``dataset import`` finds copies
    (``images.SamePixels``): a copy in its own class is left out (``left``: (copy, the image kept)), since one in
    train/good and test/good, or twice in good/, sat in the bank and in the test or the threshold's folds at once
    and made the gate's figures look better than the model is; one photo in two classes is refused
    (``in_two``, the first such)."""

    def __init__(self, root: Path) -> None:
        from cloud_trainer.train.images import SamePixels

        self.root = root
        self.same: SamePixels[_Seen] = SamePixels(lambda o: _decode(o.path, None, (root, "the folder")))
        self.left: list[tuple[_Seen, _Seen]] = []
        self.in_two = ""

    def read(self, path: Path, label: str) -> np.ndarray | None:
        """``path``'s frame decoded, or None for a copy of an image of its class read before (left out)."""
        from cloud_trainer.train.images import in_two_classes

        whole = _decode(path, None, (self.root, "the folder"))
        first = self.same.earlier(seen := _Seen(path, label), whole)
        if first is None:
            return whole
        if first.label == label:
            self.left.append((seen, first))
            return None
        if not self.in_two:
            self.in_two = in_two_classes(path, label, first.path, first.label, path.read_bytes())
        return whole


def _classes_beside(root: Path) -> list[Path]:
    """The class folders beside ``root/good`` (``good/``, ``scratch/``, ``dent/``: a folder per class with the
    conventional good class): their images are the test's defect images, as `dataset import --task anomaly`
    makes them; they were left unread without a word. Images lying in ``root`` itself (in no class), a class
    folder of no image and a masks folder are refused: a folder per class has no masks."""
    from cloud_trainer.train.images import skipped_folder

    if loose := image_files(root):
        n = len(loose)
        raise AnomalyDataError(
            f"{root}: {n} image{'s' if n > 1 else ''} beside good/ in no class folder "
            f"({', '.join(p.name for p in loose[:3])}{', ...' if n > 3 else ''}); move "
            f"{'them' if n > 1 else 'it'} into good/ or a defect's folder, or out of {root}"
        )
    found = []
    for d in sorted(p for p in root.iterdir() if p.name != "good" and not skipped_folder(p.name)):
        if not d.is_dir():
            continue
        _inside(d, root)
        if d.name.casefold() == "good":  # `Good/` beside `good/`: one folder on Windows or a Mac
            raise AnomalyDataError(
                f"{d}: beside good/, a folder of the same name in another case (one folder on Windows or a Mac); "
                "merge them into good/"
            )
        if d.name.lower() in ("ground_truth", "masks", "mask"):
            raise AnomalyDataError(
                f"{d}: masks beside good/ and its defect folders; a folder per class reads no masks: give them in "
                "the MVTec AD layout (train/good, test/<defect>/NAME.png, ground_truth/<defect>/NAME_mask.png)"
            )
        _no_images_below(d, root)
        if not image_files(d):
            raise AnomalyDataError(
                f"{d}: class folder {d.name!r} beside good/ holds no images; its images are read as the test's "
                "defect images: add them, or remove the folder"
            )
        found.append(d)
    return found


def _kept_out(n_good: int, min_good: int, ngs: list[bool]) -> set[int]:
    """Which of ``n_good`` good images to keep out of training for the test set when it holds defect images
    (``ngs``: each test image NG or not) but no good one: the gate's AUROC, which compares the two, was nan and
    failed every such build. A seeded share (HELD_OUT_GOOD), as the vision family's split keeps one, while as
    many as the family needs remain."""
    k = min(max(1, round(HELD_OUT_GOOD * n_good)), n_good - min_good)
    if not (any(ngs) and all(ngs) and k > 0):
        return set()
    return {int(i) for i in np.random.default_rng(0).choice(n_good, k, replace=False)}


def _load_imported(
    root: Path,
    min_good: int,
    roi: list[int] | None = None,
    size: int | None = None,
    tiles: list[int] | None = None,
) -> AnomalyData:

    try:
        meta = read_dataset_yaml(root / "dataset.yaml")
        max_mp = dataset_max_megapixels(root)
        declared_wh = dataset_camera_size(root)
    except DatasetError as exc:
        raise AnomalyDataError(str(exc)) from None
    good_label = (meta if isinstance(meta, dict) else {}).get("good", "good")
    inside = (
        root,
        "the dataset folder",
    )  # each row's file checked to lie there (dataset_file), again once open
    h = hashlib.sha256()
    good, names, test, kinds, masks, frames, scale = [], [], [], [], [], [], 1.0
    shapes: list[tuple[int, ...]] = []
    cameras: list[tuple[int, int] | None] = []
    ngs: list[bool] = []
    good_files: list[tuple[Path, tuple[int, int] | None]] = []  # with the camera each names
    try:
        lines = label_lines(root / "labels.jsonl")
    except DatasetError as exc:
        raise AnomalyDataError(str(exc)) from None
    for n, line in lines:
        try:
            rec = label_row(line, f"{root / 'labels.jsonl'}:{n}")
            p = dataset_file(root, rec["file"], f"{root / 'labels.jsonl'}:{n}")
            mp = (
                dataset_file(root, rec["mask"], f"{root / 'labels.jsonl'}:{n} (its mask)")
                if rec.get("mask")
                else None
            )
        except DatasetError as exc:
            raise AnomalyDataError(str(exc)) from None
        if not p.is_file():
            raise AnomalyDataError(
                f"{p}: listed in {root / 'labels.jsonl'} but missing; import the dataset again"
            )
        if mp is not None and not mp.is_file():  # as training refuses it (its map went unscored)
            raise AnomalyDataError(
                f"{root / 'labels.jsonl'}:{n}: mask {rec['mask']} is missing; fix or drop the row's 'mask'"
            )
        # the digest `dataset import` records (``digest_part``), masks with it: they were left out, and the
        # package's provenance named the same dataset after a mask the pixel metrics are judged by had changed.
        # Read as the decoders read them (checked where they lie once open, the size bounded): by their path, a
        # file of gigabytes was read whole before its size was refused, a link put in its place read outside
        try:
            data = read_image_bytes(p, max_mp, inside=inside)
            mdata = read_image_bytes(mp, max_mp, "a mask", inside=inside) if mp is not None else None
        except DatasetError as exc:
            raise AnomalyDataError(str(exc)) from None
        digest_part(h, data, rec["label"], mdata)
        if rec["label"] == good_label and rec.get("split") != "test":
            # the chunk is read from the bytes the digest took (``protocols.sample_camera``)
            good_files.append((p, camera_size(data) or declared_camera(rec, declared_wh)))
            continue
        mask = None
        if mp is not None:
            mask = _cut(read_mask(mp, max_mp, inside), roi, mp)
        test += read_views(p, roi, max_mp, size, tiles, inside)[0]
        kinds.append("good" if rec["label"] == good_label else rec["label"])
        ngs.append(rec["label"] != good_label)  # by the label: a defect class may be called "good"
        masks.append(mask)
    # defect images to test but no good one (a folder per class has no test split): _kept_out
    held = _kept_out(len(good_files), min_good, ngs)
    for i, (p, camera) in enumerate(good_files):
        if i in held:
            test += read_views(p, roi, max_mp, size, tiles, inside)[0]
            kinds.append("good")
            ngs.append(False)
            masks.append(None)
            continue
        whole = _decode(p, max_mp, inside)
        views, frame, scale = views_of(whole, p, roi, size, tiles)
        good += views
        shapes.append(whole.shape[:2])
        cameras.append(camera)
        if frame is not None:
            frames.append(frame)
        names.append(p.name)
    if len(names) < min_good:
        raise AnomalyDataError(
            f"{root}: {len(names)} good training image(s) (class '{good_label}'); the anomaly "
            f"family needs at least {min_good} (more is better: 200 measured in docs/trainer.md)"
        )
    ds = AnomalyData(
        good,
        names,
        test,
        np.asarray(ngs, bool),
        kinds,
        masks,
        layout="imported",
        frames=frames,
        shapes=shapes,
        cameras=cameras,
    )
    ds.per_frame = len(good) // len(names)
    ds.tile_scale = scale
    ds.held_out = len(held)
    digest_camera(h, declared_wh)
    ds.digest = "sha256:" + h.hexdigest()
    return ds


def _load_test(
    root: Path,
    ds: AnomalyData,
    h,
    roi: list[int] | None = None,
    size: int | None = None,
    tiles: list[int] | None = None,
    copies: _Copies | None = None,
) -> None:
    copies = _Copies(root) if copies is None else copies
    kinds = ds.test_kind
    # an image's mask as `dataset import` finds it: ground_truth/<class>/<name>_mask.<ext> or <name>.<ext>, any
    # image extension in any case (only <name>_mask.png was looked for: a mask saved as .PNG or .jpg, or named
    # as its image, was left out without a word and the heat map went unscored)
    masks = _masks_by_image(root)
    masks_seen: set[Path] = set()
    subs = sorted(p for p in _inside(root / "test", root).iterdir() if p.is_dir())
    _masks_named_as_tests(root, {label for label, _ in masks}, subs)
    for sub in subs:
        _no_images_below(_inside(sub, root), root)
        for p in image_files(_inside(sub, root)):
            frame = copies.read(_inside(p, root), sub.name)
            mp = masks.get((sub.name, p.stem))
            if mp is not None:
                masks_seen.add(mp)
            if frame is None:  # a copy of an image of its class read before: left out, its mask with it
                continue
            views = views_of(frame, p, roi, size, tiles)[0]
            h.update(sub.name.encode() + hashlib.sha256(p.read_bytes()).digest())
            if mp is not None:  # (a folder without masks keeps the digest it had)
                digest_mask(h, mp.read_bytes())
            mask = None
            if mp is not None:
                whole = read_mask(mp, inside=(root, "the folder"))
                # the image as decoded, its EXIF orientation applied (as the mask is drawn on what the user sees)
                shape = frame.shape[:2]
                if whole.shape[:2] != shape:  # stretched to the map, it scored the heat map against elsewhere
                    raise AnomalyDataError(
                        f"{mp}: mask is {whole.shape[1]}x{whole.shape[0]}, its image {p} is {shape[1]}x{shape[0]}; "
                        "they must be the same size"
                    )
                if sub.name == "good":  # as `dataset import`: an all-black mask for a good image is fine
                    if marked := int(np.count_nonzero(whole)):
                        raise AnomalyDataError(
                            f"{mp}: {marked} defect pixels on a good image ({p}); a good image's mask is empty: "
                            "move the image to its defect's folder, or remove the mask"
                        )
                elif not np.any(whole):  # as `dataset import`: the map would be scored against no defect
                    raise AnomalyDataError(
                        f"{mp}: an empty mask (no defect pixel) for {p}, a {sub.name!r} image; its heat map would "
                        "be scored against no defect, a miss counted in map_hit_rate: mark the defect's pixels, or "
                        "remove the mask"
                    )
                else:
                    mask = _cut(whole, roi, mp)
            ds.test += views
            kinds.append(sub.name)
            ds.test_masks.append(mask)
    for (label, stem), mp in sorted(masks.items()):
        if mp not in masks_seen:
            raise AnomalyDataError(
                f"{mp}: a mask without an image (expected test/{label}/{stem}.<ext>); add the image or remove "
                "the mask"
            )
    ds.test_ng = np.asarray([k != "good" for k in kinds], bool)


def _masks_named_as_tests(root: Path, labels: set[str], subs: list[Path]) -> None:
    """A ``ground_truth/<defect>`` folder named as a ``test/`` folder only in another case is refused saying so, as
    ``dataset import`` refuses it (``images.masks_in_other_case``)."""
    from cloud_trainer.train.images import masks_in_other_case

    if said := masks_in_other_case(root, labels, [s.name for s in subs]):
        raise AnomalyDataError(said)


def _masks_by_image(root: Path) -> dict[tuple[str, str], Path]:
    """The masks below ``root/ground_truth``, by (class, the name of their image without its extension)."""
    from cloud_trainer.train.images import skipped_folder

    gt = root / "ground_truth"
    masks: dict[tuple[str, str], Path] = {}
    if not gt.is_dir():
        return masks
    for d in sorted(p for p in _inside(gt, root).iterdir() if p.is_dir() and not skipped_folder(p.name)):
        _no_images_below(_inside(d, root), root)
        for mp in image_files(d):
            key = (d.name, mp.stem.removesuffix("_mask"))
            if key in masks:  # 005.png and 005_mask.png: which one is meant cannot be told
                raise AnomalyDataError(
                    f"{d}: two masks for one image: {masks[key].name} and {mp.name}; keep one"
                )
            masks[key] = _inside(mp, root)
    return masks


# -- the model ------------------------------------------------------------------------------------


def _modules():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class BasicBlock(nn.Module):
        """torchvision's ResNet BasicBlock (same parameter names)."""

        def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            y = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(y)) + idt)

    class Backbone(nn.Module):
        """ResNet-18's first stages (conv1 7×7/2, max-pool, layer1 at 1/4, layer2 at 1/8), ``width``
        channels in layer1 (64 = ResNet-18, whose weights load into it)."""

        def __init__(self, width: int = 64) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = nn.Sequential(BasicBlock(width, width), BasicBlock(width, width))
            self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 2 * width))

        def forward(self, x):
            f1 = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
            return f1, self.layer2(f1)

    class Texture(nn.Module):
        """Fixed multi-scale texture and colour features at 1/4 of the input: local colour mean (4 and
        12 px), local colour std, gradient energy, |Laplacian| mean and max, difference-of-Gaussians
        energy. No weights to learn."""

        k3: torch.Tensor  # buffers (register_buffer), declared for the type checker
        g5: torch.Tensor
        mean: torch.Tensor
        std: torch.Tensor

        def __init__(
            self, context: bool = False, channels: int = 3, normalise: bool = True, colour: bool = False
        ) -> None:
            super().__init__()
            self.context = context
            self.normalise = normalise
            self.colour = colour
            self.groups = [3 * channels + 4] + ([channels + 2] if context else [])  # feature counts
            self.size = sum(self.groups)
            sob = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
            lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
            self.register_buffer("k3", torch.stack([sob, sob.T, lap])[:, None])
            g1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
            self.register_buffer("g5", torch.outer(g1, g1)[None, None])
            if colour:  # the input's normalisation (``preprocessing``), undone for the grey world
                self.register_buffer("mean", torch.tensor(MEAN[:channels])[None, :, None, None])
                self.register_buffer("std", torch.tensor(STD[:channels])[None, :, None, None])

        def forward(self, x):
            if self.colour:  # grey world: each colour channel's light scaled to the view's mean light, so
                # a lamp's colour (a gain per channel) is out (--light-variation lamp); on the light itself,
                # not on the input's per-channel offsets, so that the spread below takes a lamp's gain out
                # exactly (the offsets left a share of it in the colour features)
                p = torch.clamp(x * self.std + self.mean, min=0.0)
                c = p.mean((2, 3), keepdim=True)
                x = p * (c.mean(1, keepdim=True) / (c + 1e-3))
            if self.normalise:  # camera gain and offset out: each image (or tile) to zero mean, unit spread
                mu = x.mean((1, 2, 3), keepdim=True)
                x = (x - mu) / torch.sqrt((x - mu).pow(2).mean((1, 2, 3), keepdim=True) + 1e-4)
            m4 = F.avg_pool2d(x, 4)
            sd = torch.sqrt(torch.clamp(F.avg_pool2d(x * x, 4) - m4 * m4, min=0.0) + 1e-6)
            g = x.mean(1, keepdim=True)
            d = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), self.k3)
            grad = torch.log1p(F.avg_pool2d(d[:, :1] ** 2 + d[:, 1:2] ** 2, 4) * 16.0)
            lap = d[:, 2:3].abs()
            b1 = F.conv2d(F.pad(g, (2, 2, 2, 2), mode="replicate"), self.g5)
            b2 = F.conv2d(F.pad(F.avg_pool2d(b1, 2), (2, 2, 2, 2), mode="replicate"), self.g5)
            dog = F.avg_pool2d(
                (b1 - F.interpolate(b2, size=b1.shape[-2:], mode="bilinear", align_corners=False)).abs(), 4
            )
            f = torch.cat([m4, sd, grad, F.avg_pool2d(lap, 4), F.max_pool2d(lap, 4), dog], 1)
            parts = [f, F.avg_pool2d(m4, 3, 1, 1, count_include_pad=False)]
            if self.context:  # 44-px context: what surrounds the patch (a feature missing nearby)
                parts.append(F.avg_pool2d(torch.cat([m4, grad, dog], 1), 11, 1, 5, count_include_pad=False))
            return torch.cat(parts, 1)

    class Features(nn.Module):
        """Patch features at 1/4 of the input: the fixed texture features, and (with a backbone)
        layer1 and upsampled layer2, each averaged over 3×3; every feature scaled to unit spread on
        the good images (``scale``), each group to an equal share of the distance."""

        def __init__(
            self,
            backbone,
            texture: bool = True,
            context: bool = False,
            channels: int = 3,
            normalise: bool = True,
            instance: bool = False,
            colour: bool = False,
        ) -> None:
            super().__init__()
            self.backbone = backbone
            self.texture = Texture(context, channels, normalise, colour) if texture else None
            self.instance = instance
            self.register_buffer("shift", torch.zeros(1))
            self.register_buffer("scale", torch.ones(1))

        def raw(self, x):
            parts = []
            if self.texture is not None:
                parts.append(self.texture(x))
            if self.backbone is not None:
                f1, f2 = self.backbone(x)
                f1 = F.avg_pool2d(f1, 3, 1, 1, count_include_pad=False)
                f2 = F.avg_pool2d(f2, 3, 1, 1, count_include_pad=False)
                f2 = F.interpolate(f2, size=f1.shape[-2:], mode="bilinear", align_corners=False)
                parts += [f1, f2]
            f = torch.cat(parts, 1)
            if self.instance:  # each feature relative to the rest of its own image (or tile)
                mu = f.mean((2, 3), keepdim=True)
                f = (f - mu) / torch.sqrt((f - mu).pow(2).mean((2, 3), keepdim=True) + 1e-4)
            return f

        def forward(self, x):
            return (self.raw(x) - self.shift) * self.scale

        def standardise(self, x) -> None:
            """Per-feature centring and scaling from the good images (an array, or an iterable of
            batches: a tiled build's tensors are never all in memory); each group (texture, layer1,
            layer2) then weighted to the same total variance. Sums in float64, batch by batch: the
            features of every patch of 200 frames' tiles were concatenated here (several GB)."""
            batches = (x[i : i + 32] for i in range(0, len(x), 32)) if isinstance(x, np.ndarray) else x
            n, s1, s2 = 0, torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
            with torch.no_grad():
                for b in batches:
                    f = self.raw(torch.from_numpy(b)).double()
                    n += f.shape[0] * f.shape[2] * f.shape[3]
                    s1 = s1 + f.sum((0, 2, 3))
                    s2 = s2 + (f * f).sum((0, 2, 3))
            mu64 = s1 / n
            mu = mu64.float()
            sd = (
                torch.sqrt(torch.clamp((s2 - n * mu64 * mu64) / max(1, n - 1), min=0.0))
                .float()
                .clamp(min=1e-4)
            )
            sizes = []
            if self.texture is not None:
                sizes += self.texture.groups
            if self.backbone is not None:
                sizes += [
                    self.backbone.layer1[0].conv1.out_channels,
                    self.backbone.layer2[0].conv1.out_channels,
                ]
            w = torch.cat([torch.full((n,), 1.0 / np.sqrt(n)) for n in sizes])
            self.shift = mu[None, :, None, None]
            self.scale = (w / sd)[None, :, None, None]

    class PatchCore(nn.Module):
        """image → (score (N,1), map (N,1,H,W)); the memory bank is a constant of the graph."""

        bank_t: torch.Tensor  # buffers (register_buffer), declared for the type checker
        bank_sq: torch.Tensor
        blur: torch.Tensor
        ref: torch.Tensor | None

        def __init__(self, features, bank: np.ndarray, size: int, ref: np.ndarray | None = None) -> None:
            super().__init__()
            self.features = features
            # tiled, fixed camera: each tile position's good distance map (positions, 1, h, w); a batch's
            # row i is the tile at position i % positions (the agent runs a frame's tiles as one batch)
            self.register_buffer(
                "ref", None if ref is None else torch.from_numpy(np.ascontiguousarray(ref, np.float32))
            )
            self.register_buffer("bank_t", torch.from_numpy(np.ascontiguousarray(bank.T, np.float32)))
            self.register_buffer(
                "bank_sq", torch.from_numpy((bank.astype(np.float32) ** 2).sum(1)[None, None, :])
            )
            g = np.outer(*(2 * [np.array([1.0, 2.0, 1.0]) / 4.0])).astype(np.float32)
            self.register_buffer("blur", torch.from_numpy(g)[None, None])
            self.size = size

        def forward(self, image):
            f = self.features(image)
            n, d, h, w = f.shape
            p = f.flatten(2).transpose(1, 2)  # (N, h*w, D)
            d2 = (p * p).sum(-1, keepdim=True) - 2.0 * torch.matmul(p, self.bank_t) + self.bank_sq
            dist = torch.sqrt(torch.clamp(d2.amin(-1), min=0.0)).reshape(n, 1, h, w)
            dist = F.conv2d(F.pad(dist, (1, 1, 1, 1), mode="replicate"), self.blur)
            if self.ref is not None:
                pos = torch.remainder(torch.arange(n), self.ref.shape[0])
                dist = dist / torch.index_select(self.ref, 0, pos)
            amap = F.interpolate(dist, size=(self.size, self.size), mode="bilinear", align_corners=False)
            return amap.amax(dim=(2, 3)), amap

    return Backbone, Features, PatchCore


def backbone(weights: Path | None, width: int, seed: int):
    """The backbone: a local state dict when given (never downloaded), else seeded random weights."""
    import torch

    Backbone, _, _ = _modules()
    torch.manual_seed(seed)
    net = Backbone(64 if weights else width)
    if weights:
        weights = Path(weights)
        if not weights.is_file():
            raise AnomalyDataError(
                f"--backbone-weights {weights}: no such file (a torchvision ResNet-18 state dict, .pth)"
            )
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise AnomalyDataError(
                f"--backbone-weights {weights}: not a weights file ({type(exc).__name__})"
            ) from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        own = net.state_dict()
        take = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        missing = [k for k in own if k not in take and not k.endswith("num_batches_tracked")]
        if missing:
            raise AnomalyDataError(
                f"--backbone-weights {weights}: {len(missing)} tensors of the ResNet-18 "
                f"layout missing or of another shape (e.g. {missing[0]}); give a torchvision "
                "ResNet-18 state dict"
            )
        net.load_state_dict(take, strict=False)
    return net


def tensors(images: list[np.ndarray], pre) -> np.ndarray:
    from model_packager.preprocess import image_tensor

    return (
        np.concatenate([image_tensor(im, pre) for im in images])
        if images
        else np.zeros((0, 3, 1, 1), np.float32)
    )


def preprocessing(
    size: int,
    roi: list[int] | None = None,
    tiles: list[int] | None = None,
    tile_overlap: float = TILE_OVERLAP,
):
    """The model's input as the agent makes it from a frame. The trainer's images are already the
    ``roi`` box of their frames (``read_view``), or its tiles at ``size`` (``read_views``), so it makes
    its tensors with ``preprocessing(size)``; the package declares the box and the tiles, and the agent
    cuts them from each frame (one batch row per tile)."""
    from model_packager.manifest import ImagePreprocessing

    return ImagePreprocessing(
        width=size,
        height=size,
        color="rgb",
        mean=MEAN,
        std=STD,
        interpolation="area",
        roi=roi,
        tiles=tiles,
        tile_overlap=tile_overlap if tiles else 0.0,
    )


def _calibrate_bn(net, batches) -> None:
    """Random weights: set every batch-norm's statistics from the good images (cumulative average over
    ``batches``, an iterable of tensors of 32)."""
    import torch

    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for b in batches:
            net(torch.from_numpy(b))
    net.eval()


BATCH = 32  # views turned into tensors and features at a time


def _batches(images: list[np.ndarray], pre, rows: np.ndarray | None = None, batch: int = BATCH):
    """The views' tensors, ``BATCH`` at a time (of ``rows`` only, when given): a tiled build's tensors
    of every tile of every frame are never held at once (200 5-MP frames in 5x4 tiles of 224 px: 2.4 GB)."""
    idx = np.arange(len(images)) if rows is None else rows
    for i in range(0, len(idx), batch):
        yield tensors([images[j] for j in idx[i : i + batch]], pre)


def _relit_batches(images: list[np.ndarray], pre, seed: int, curved: bool = False, lamp: bool = False):
    """The good views' relit copies (``relit_copy``), ``BATCH`` at a time; the same copies at every
    pass (one generator, seeded as before, drawn in the views' order). ``curved`` (``--light-variation
    curved``): each copy also under a curved light (``curved_light``), drawn from a generator of its own,
    so that the copies' other draws are those of the default build; ``lamp`` (``--light-variation lamp``,
    with ``curved``): then also under another lamp's colour and spot (``lamp_light``), from a third."""
    lrng = np.random.default_rng([seed, 17])
    crng = np.random.default_rng([seed, 19]) if curved or lamp else None
    srng = np.random.default_rng([seed, 23]) if lamp else None
    for i in range(0, len(images), BATCH):
        copies = [relit_copy(im, lrng) for im in images[i : i + BATCH]]
        if crng is not None:
            copies = [curved_light(c, crng) for c in copies]
        if srng is not None:
            copies = [lamp_light(c, srng) for c in copies]
        yield tensors(copies, pre)


# The most patches a build keeps (of the good views and their relit copies) for the bank's coreset.
# Every view's patches were kept (n views x h*w patches x D features, and their relit copies, and a
# copy per fold): 200 5-MP frames in 5x4 tiles of 224 px made ~25 M patches, 3.6 GB at 18 features and
# ~23 GB with a CNN's 114, before the coreset drew its 24,000 candidates from them. Above this, each view
# keeps the same number of its patches, drawn at random (seeded by the build's seed): 2^18 patches are
# 19 MB at 18 features, 120 MB at 114; an untiled build of up to 128 images at 128 px keeps them all
# (the same bank as before)
MAX_BANK_PATCHES = 1 << 18


def _keep_rows(n_views: int, hw: int) -> int:
    """Patches kept per view (good view or relit copy) for a build of ``n_views`` of them."""
    return hw if n_views * hw <= MAX_BANK_PATCHES else max(1, MAX_BANK_PATCHES // n_views)


def _kept_patches(feat, batches, hw: int, keep: int, rng: np.random.Generator) -> np.ndarray:
    """(views, keep, D): each view's patches, or ``keep`` of them drawn at random, batch by batch."""
    out = []
    for b in batches:
        f = patch_features(feat, b)
        if keep < hw:
            pick = np.sort(np.argsort(rng.random((len(f), hw)), axis=1)[:, :keep], axis=1)
            f = np.take_along_axis(f, pick[:, :, None], axis=1)
        out.append(np.ascontiguousarray(f))
    return np.concatenate(out)


def patch_features(feat, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """(N, h*w, D) float32."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            f = feat(torch.from_numpy(x[i : i + batch]))
            outs.append(f.flatten(2).transpose(1, 2).numpy())
    return np.concatenate(outs)


def coreset(patches: np.ndarray, k: int, seed: int, candidates: int = 24_000) -> np.ndarray:
    """Greedy k-center coreset (PatchCore) on a 32-d random projection, from at most ``candidates``
    patches drawn at random (the greedy pass is O(candidates x k)).

    Each step's squared distances are |z|^2 - 2 z.z_i + |z_i|^2: one matrix-vector product instead of
    a subtract, a square and a row sum over the whole pool (14x faster, 0.36 s against 5.2 s for
    24,000 patches and k = 2048 on a 2-core AVX2 CPU; the same patches chosen).

    The k - 1 products run in torch on one thread: NumPy's OpenBLAS hands each small product to its
    worker threads, and on a busy machine every step then waits for a thread to be scheduled (measured
    on 2 cores under load: 20.6 s per coreset, 134 s of a 20-image build's 179 s; 1.0 s this way)."""
    import torch

    n = len(patches)
    if n <= k:
        return patches
    rng = np.random.default_rng(seed)
    pool = rng.choice(n, candidates, replace=False) if n > candidates else np.arange(n)
    proj = rng.normal(size=(patches.shape[1], 32)).astype(np.float32) / np.sqrt(patches.shape[1])
    z = np.ascontiguousarray(patches[pool] @ proj, np.float32)
    sq = np.einsum("ij,ij->i", z, z)
    chosen = [int(rng.integers(len(pool)))]
    dmin = ((z - z[chosen[0]]) ** 2).sum(1)
    d = np.empty_like(sq)
    zt, dt = torch.from_numpy(z), torch.from_numpy(d)  # the product written into d's memory
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(k - 1):
            i = int(np.argmax(dmin))
            chosen.append(i)
            torch.mv(zt, zt[i], out=dt)
            d *= -2.0
            d += sq
            d += sq[i]
            np.minimum(dmin, d, out=dmin)
    finally:
        torch.set_num_threads(threads)
    return patches[pool[np.asarray(chosen)]]


def _nn_maps(query: np.ndarray, bank: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(N, h, w) smoothed distance maps at the patches' resolution, as the exported graph computes them."""
    import torch
    from torch.nn import functional as F

    b = torch.from_numpy(bank)
    q = torch.from_numpy(query.reshape(-1, query.shape[-1]))
    g = torch.tensor([1.0, 2.0, 1.0]) / 4.0
    k = torch.outer(g, g)[None, None]
    with torch.no_grad():
        d = torch.cat([torch.cdist(q[i : i + 8192], b).amin(1) for i in range(0, len(q), 8192)])
        d = F.conv2d(F.pad(d.reshape(len(query), 1, *hw), (1, 1, 1, 1), mode="replicate"), k)
        return d[:, 0].numpy()


def _map_scores(maps: np.ndarray, size: int) -> np.ndarray:
    """Image scores of (N, h, w) maps: upsampled to ``size`` as the graph does, their maximum."""
    import torch
    from torch.nn import functional as F

    with torch.no_grad():
        up = F.interpolate(
            torch.from_numpy(maps[:, None]), size=(size, size), mode="bilinear", align_corners=False
        )
        return up.amax(dim=(1, 2, 3)).numpy().astype(np.float64)


def _nn_scores(
    query: np.ndarray, bank: np.ndarray, hw: tuple[int, int], size: int, ref: np.ndarray | None = None
) -> np.ndarray:
    """Image scores as the exported graph computes them (same smoothing and upsampling), in torch; with
    ``ref`` (N, h, w), each map divided by its row's reference first."""
    maps = _nn_maps(query, bank, hw)
    return _map_scores(maps if ref is None else maps / ref, size)


# --tiles: each tile position's reference map (the highest good distance there) is smoothed by a max over
# this many patches (a part shifting a few pixels moves its edges by a patch or so) and never below this
# share of the median reference (a quiet place's noise is not blown up)
REF_SPREAD = 3
REF_FLOOR = 0.5


def position_refs(maps: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """From the good frames' held-out distance maps (frames x ``t`` tiles in a row, (n, h, w)): each tile
    position's reference map (t, h, w), and each view's reference without its own frame (n, h, w), for
    the held-out scores (a frame's own distances in its reference would lower its score).

    The reference is the highest good distance at each place, not the mean: a frame's score is the
    maximum over every patch of its tiles, so it is set by the places whose good distances spread
    widest (a tile's border, where the features see less of their window: 75-85 % of good frames'
    maxima lay within 4 patches of a tile's border, a quarter of a tile's area), and a mean leaves
    those places hotter than the rest. Measured (bench/anomaly_scratch_bench.py and
    bench/anomaly_tiles_bench.py's frames, 1280x1024, 5x4 tiles of 224 px, 30 good frames): a bracket's
    AUROC 0.50 -> 0.71 and NG recall at the threshold 0.05 -> 0.40, a sheet's 0.89 -> 0.995 and 0.15 ->
    0.40; thin scratches on turned and honed faces +0.005-0.03 AUROC, recall the same or higher; no
    more good frames rejected in any."""
    import torch
    from torch.nn import functional as F

    n, h, w = maps.shape
    nf = n // t
    m = maps.reshape(nf, t, h, w).astype(np.float64)
    top = m.max(0)
    # each frame's reference without it: the highest of the others (the second highest where it is the top)
    second = np.sort(m, axis=0)[-2] if nf > 1 else top

    def smooth(r: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(r.reshape(-1, 1, h, w))
        p = REF_SPREAD // 2
        x = F.max_pool2d(F.pad(x, (p, p, p, p), mode="replicate"), REF_SPREAD, 1)
        return x.numpy().reshape(r.shape)

    ref = smooth(top)
    floor = REF_FLOOR * float(np.median(ref))
    loo = (
        smooth(np.where(m >= top[None], second[None], top[None])) if nf > 1 else np.broadcast_to(ref, m.shape)
    )
    return (
        np.maximum(ref, floor).astype(np.float32),
        np.maximum(loo, floor).reshape(n, h, w).astype(np.float32),
    )


@dataclass
class AnomalySettings:
    dataset: Path
    registry: Path
    signing_key: Path
    workdir: Path
    size: int = 128
    roi: list[int] | None = None  # [x, y, width, height] of the frame the model looks at (--roi)
    tiles: list[int] | None = None  # [columns, rows] of tiles over the frame (or roi), each at size (--tiles)
    seed: int = 0
    false_reject_rate: float = 0.01
    backbone_weights: Path | None = None
    features: str = "texture+context"  # any of "texture", "context", "cnn" joined by "+" (weights add "cnn")
    width: int = 32  # random backbone: layer1 channels (ResNet-18 = 64, used with --backbone-weights)
    bank_size: int = 2048
    # --tiles: each tile's distances divided by the good frames' highest at that place (``position_refs``)
    positions: bool = True
    # the bank also holds each good image under another lamp (--light-variation, ``LIGHT_VARIATIONS``)
    light_variation: str = "linear"
    folds: int = 5
    threads: int | None = None
    version: str | None = None
    floors: dict = field(default_factory=dict)
    int8_margin: float = 0.01
    # INT8 against FP32 on every image, as the other families' gate (pipeline._int8_parity): the share of
    # views whose verdict must agree, and how far the score may move, as a share of the threshold
    int8_min_agreement: float = 0.99
    int8_max_deviation: float = 0.05
    require_int8: bool = False  # refuse a candidate whose INT8 form misses these instead of serving FP32
    openvino: bool = True
    force: bool = False
    name: str = NAME


def _white(img: np.ndarray) -> float:
    """The share of the image at white (>= 250 in grey), as the agent's UNSURE check counts glare."""
    import cv2

    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 and img.shape[2] == 3 else img
    return float(np.count_nonzero(g >= 250)) / max(1, g.size)


def relit_copy(img: np.ndarray, rng: np.random.Generator, tries: int = 4) -> np.ndarray:
    """``perturb.camera_copy`` of a good image (another lamp, JPEG for half), but never one whose light
    drives more of it to white than the agent's UNSURE check lets a frame have (1 % more than the
    image): on a bright product on a light table a +30 % lamp turned most of a copy flat white, a
    frame the agent would never judge (UNSURE, glare), and its flat patches in the bank moved the
    threshold (caps of tests/support/products.py, sets of 20 images: one found 3 of 20 shallow dents, 9
    now; one rejected 6 % of good caps at a stated 1 %, 1 % now; docs/trainer.md).
    Redrawn up to ``tries`` times, else the least clipped draw. A darker product's first draw always
    passes: its copies, and so its builds, are those of before."""
    from cloud_trainer.train import perturb

    base = _white(img) + 0.01
    best, best_white = img, float("inf")
    for _ in range(tries):
        c = perturb.camera_copy(img, rng)
        w = _white(c)
        if w <= base:
            return c
        if w < best_white:
            best, best_white = c, w
    return best


# --light-variation: what the bank's relit copy of each good view (one per view) holds.
# - none: no copy (the bank is the good views alone);
# - linear (default): another lamp or camera setting (``perturb.camera_copy``: gain, grey offset, a linear
#   gradient, a colour tilt, JPEG for half), a light flat or sloping across the view;
# - curved: the same copies, each also under a curved light (``curved_light``: a lens's vignetting, a
#   lamp's spot off the centre). Measured (bench/anomaly_light_bench.py, docs/trainer.md): good frames
#   under vignetting pass where the default rejects 38-100 % of them (a lamp spot: fewer rejected), at a
#   threshold 1.5-22 % higher (a faint defect may pass), so it is a choice for a line whose light varies.
# - lamp: the curved copies, each also under another lamp's colour and a bright spot of its own colour
#   (``lamp_light``), and each view's colour channels scaled to its mean light before the texture
#   features (grey world: a lamp's colour out of the features, ``Texture(colour=True)``; inside the graph,
#   so the agent's input and preprocessing are as before). Measured (bench/anomaly_light_bench.py,
#   docs/trainer.md): good frames under a colour cast pass, under a spot mostly; a whole bracket under a
#   spot or vignetting still does not. Scaling each channel to its own spread as well (tried) rejected
#   more good frames under vignetting on a part on a pale fixture.
# curved and lamp builds' input statistics (the agent's UNSURE check) also cover their light (``stats_copies``).
LIGHT_VARIATIONS = ("none", "linear", "curved", "lamp")

# curved_light: the brightest point anywhere within half a view of it (a lamp off to the side, a lens's
# axis off the view's centre: a tile of a frame is lit from wherever its frame's centre or lamp is), and
# the light up to this share darker at the view's farthest pixel from it (0.45: a lens at full aperture
# loses about that much to its corners, 0.9 stop; a lamp spot's edge as much)
CURVED_CENTRE_SPAN = 0.5
CURVED_MAX_DEPTH = 0.45


def curved_light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``img`` under a curved light: multiplied by a dome falling off with the square of the distance from
    its brightest point (the leading term of a lens's cos^4 vignetting and of a broad lamp spot), that
    point drawn anywhere within ``CURVED_CENTRE_SPAN`` of a view beyond its edges, and the farthest
    pixel 0-``CURVED_MAX_DEPTH`` darker. Only darkens: never a copy driven to white."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    span = CURVED_CENTRE_SPAN
    cx = float(rng.uniform(-span, 1 + span)) * w
    cy = float(rng.uniform(-span, 1 + span)) * h
    r2 = (xx - cx) ** 2 + (yy - cy) ** 2
    field = 1.0 - float(rng.uniform(0.0, CURVED_MAX_DEPTH)) * r2 / max(float(r2.max()), 1e-6)
    out = img.astype(np.float32) * (field[..., None] if img.ndim == 3 else field)
    return np.clip(out, 0, 255).astype(np.uint8)


# lamp_light: another lamp's colour temperature within this many mired of the line's (30: 5000 K drawn
# anywhere from 4350 to 5900 K, blue +-12 % against red), a green-magenta tint within this share (a
# fluorescent or LED lamp off the Planckian locus), and a spot up to this much brighter than its
# surroundings, its colour within LAMP_SPOT_MIRED of the lamp's
LAMP_MIRED = 30.0
LAMP_TINT = 0.06
LAMP_SPOT_GAIN = 0.4
LAMP_SPOT_MIRED = 60.0
_RGB_NM = np.asarray([465.0, 550.0, 610.0])  # BGR order: blue, green, red


def lamp_colour(mired: float) -> np.ndarray:
    """BGR gains of a black body at ``mired`` (1e6 / kelvin) against one at 5000 K, green = 1 (Planck's
    law at three wavelengths: a lamp's colour temperature moves blue against red along the locus)."""
    c2 = 1.4388e-2  # m K
    lam = _RGB_NM * 1e-9

    def planck(kelvin: float) -> np.ndarray:
        return 1.0 / (lam**5 * np.expm1(c2 / (lam * kelvin)))

    g = planck(1e6 / mired) / planck(5000.0)
    return (g / g[1]).astype(np.float32)


def lamp_light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``img`` under another lamp: its colour temperature shifted along the Planckian locus (within
    ``LAMP_MIRED``) with a green-magenta tint (``LAMP_TINT``), and a lamp's spot: a cos^n lobe (n 2-8,
    as a lamp at a height of 0.15-1 view above a point anywhere within half a view beyond the edges),
    up to ``LAMP_SPOT_GAIN`` brighter there, of its own colour temperature. Scaled so that it only
    darkens: never a copy driven to white."""
    h, w = img.shape[:2]
    colour = img.ndim == 3 and img.shape[2] == 3
    mired = 200.0 + float(rng.uniform(-LAMP_MIRED, LAMP_MIRED))
    cast = lamp_colour(mired) * np.asarray([1.0, 1.0 + float(rng.uniform(-LAMP_TINT, LAMP_TINT)), 1.0])
    spot = lamp_colour(mired + float(rng.uniform(-LAMP_SPOT_MIRED, LAMP_SPOT_MIRED)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = float(rng.uniform(-CURVED_CENTRE_SPAN, 1 + CURVED_CENTRE_SPAN)) * w
    cy = float(rng.uniform(-CURVED_CENTRE_SPAN, 1 + CURVED_CENTRE_SPAN)) * h
    height = float(rng.uniform(0.15, 1.0)) * max(h, w)
    lobe = (height / np.sqrt(height * height + (xx - cx) ** 2 + (yy - cy) ** 2)) ** float(rng.uniform(2, 8))
    gain = float(rng.uniform(0.0, LAMP_SPOT_GAIN))
    if colour:
        field = (1.0 + gain * lobe[..., None] * spot[None, None, :]) * cast[None, None, :].astype(np.float32)
    else:
        field = 1.0 + gain * lobe
    out = img.astype(np.float32) * (field / float(field.max()))
    return np.clip(out, 0, 255).astype(np.uint8)


# The input statistics (the agent's UNSURE check) of a curved or lamp build also measure the training
# frames under that build's light, this many copies of each (at most STATS_COPIES_MAX in all)
STATS_COPIES, STATS_COPIES_MAX = 8, 512


def stats_copies(images: list[np.ndarray], s: AnomalySettings) -> list[np.ndarray]:
    """The training frames under the light a ``curved`` or ``lamp`` build was made to accept, whose
    statistics the package's input ranges reach (``inputstats.summarize(also=)``); none for the other
    builds, whose statistics are those of before. Each copy: the frame area-shrunk to the check's own
    ``inputstats.WORK`` px a side (its statistics within ~0.02 of the whole frame's, a 5-MP frame's light
    not computed), under ``curved_light`` (and for ``lamp`` then ``lamp_light``), and brought back to the
    frame's mean grey level, as far as no pixel is driven to white: both lights only darken (so that the
    bank's copies never clip), an artefact of the copies, not the light accepted (each view is normalised
    before the features), and a darker copy would lower the brightness, sharpness and regions' sharpness
    on which underexposed and blurred rest. None of ``relit_copy``'s gain and offset: exposure is what the
    check is for. A grey frame (a mono camera's, read as three equal channels: ``_is_grey``) is lit grey:
    a mono camera sees another lamp's colour as light alone, so its copies give the colour statistics
    nothing to reach (a lamp build of a mono camera's frames let a colour camera's frame through).
    Seeded by the build's seed, apart from the bank's copies."""
    if s.light_variation not in ("curved", "lamp") or not images:
        return []
    import cv2

    from model_packager.inputstats import WORK

    crng = np.random.default_rng([s.seed, 29])
    srng = np.random.default_rng([s.seed, 31])
    n = len(images)
    total = min(STATS_COPIES * n, STATS_COPIES_MAX)
    # past STATS_COPIES_MAX / STATS_COPIES frames, one copy each of frames spread over the whole set (not
    # its first ones: a set in the order of its files may hold another batch, finish or lamp further on),
    # and only those shrunk (a set of thousands is not copied again)
    picks = (
        [i % n for i in range(total)] if total == STATS_COPIES * n else [i * n // total for i in range(total)]
    )
    small = {j: cv2.resize(images[j], (WORK, WORK), interpolation=cv2.INTER_AREA) for j in sorted(set(picks))}
    out = []
    for j in picks:
        img = small[j]
        grey = img.ndim == 3 and _is_grey(img)  # lit as one channel (the same draws as a colour frame's)
        c = curved_light(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if grey else img, crng)
        if s.light_variation == "lamp":
            c = lamp_light(c, srng)
        if grey:
            c = cv2.cvtColor(c, cv2.COLOR_GRAY2BGR)
        gain = max(1.0, min(_grey_mean(img) / max(_grey_mean(c), 1e-3), 255.0 / max(float(c.max()), 1.0)))
        out.append(np.clip(np.rint(c.astype(np.float32) * np.float32(gain)), 0, 255).astype(np.uint8))
    return out


# a frame is grey (``stats_copies``) when no pixel's channels differ by more than this at the check's 128 px
GREY_SPREAD = 2


def _is_grey(img: np.ndarray) -> bool:
    """Three channels equal (to within ``GREY_SPREAD`` levels: a mono camera's frame saved through a colour
    path), or one channel."""
    if img.ndim == 2 or img.shape[2] == 1:
        return True
    c = img.astype(np.int16)
    return int(np.abs(c - c[:, :, 1:2]).max()) <= GREY_SPREAD


def _grey_mean(img: np.ndarray) -> float:
    """The mean grey level, as ``inputstats`` takes brightness (BGR to grey)."""
    import cv2

    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 and img.shape[2] == 3 else img
    return float(np.mean(g))


def _channelwise(s: AnomalySettings) -> bool:
    """Each view's colour channels to its mean light before the texture features (grey world,
    ``--light-variation lamp``)."""
    return s.light_variation == "lamp"


def fit(ds: AnomalyData, s: AnomalySettings, log=common.stderr_log) -> dict:
    """Backbone → features of the good images → coreset bank; k-fold scores → threshold."""
    if s.light_variation not in LIGHT_VARIATIONS:
        raise ValueError(
            f"light_variation {s.light_variation!r}: expected one of {', '.join(LIGHT_VARIATIONS)}"
        )
    common.seed_everything(s.seed, s.threads)
    pre = preprocessing(s.size)
    n = len(ds.good)
    use_cnn = s.backbone_weights is not None or "cnn" in s.features
    net = backbone(s.backbone_weights, s.width, s.seed) if use_cnn else None
    if net is not None and s.backbone_weights is None:
        _calibrate_bn(net, _batches(ds.good, pre))
    _, Features, PatchCore = _modules()
    feat = Features(
        net.eval() if net is not None else None,
        texture="texture" in s.features,
        context="context" in s.features,
        colour=_channelwise(s),
    ).eval()
    relight = s.light_variation != "none"
    curved = s.light_variation == "curved"
    lamp = s.light_variation == "lamp"
    if relight:  # each good image also under another lamp (gain, offset, a gradient, colour tilt)
        feat.standardise(
            itertools.chain(_batches(ds.good, pre), _relit_batches(ds.good, pre, s.seed, curved, lamp))
        )
    else:
        feat.standardise(_batches(ds.good, pre))
    hw = patch_features(feat, tensors(ds.good[:1], pre)).shape[1]
    # the bank's candidates: every patch of every view, or (many frames x tiles) as many of each view's
    # as MAX_BANK_PATCHES allows, drawn at random
    keep = _keep_rows(n * (2 if relight else 1), hw)
    prng = np.random.default_rng([s.seed, 43])
    patches = _kept_patches(feat, _batches(ds.good, pre), hw, keep, prng)
    light = (
        _kept_patches(feat, _relit_batches(ds.good, pre, s.seed, curved, lamp), hw, keep, prng)
        if relight
        else None
    )
    d = patches.shape[2]
    side = int(round(np.sqrt(hw)))
    rng = np.random.default_rng(s.seed)
    t = ds.per_frame
    folds = min(s.folds, n // t)
    # by frame: a tiled frame's tiles all on one side (a held-out tile's overlapping neighbour in the bank
    # would hide what the fold is there to measure); untiled, the permutation of before
    fold_of = np.repeat(rng.permutation(n // t) % folds, t)
    cv_maps = np.zeros((n, side, side), np.float32)
    fold_banks: list[np.ndarray] = []  # the INT8 gate scores each good view again by its fold's bank
    bank_of = (
        (lambda keep: np.concatenate([patches[keep], light[keep]]))
        if light is not None
        else (lambda keep: patches[keep])
    )
    for f in range(folds):  # each good image scored by a bank built without it (nor its relit copy)
        train = bank_of(fold_of != f).reshape(-1, d)
        bank_f = (
            coreset(train, min(s.bank_size, len(train)), s.seed + f) if len(train) > s.bank_size else train
        )
        fold_banks.append(np.ascontiguousarray(bank_f, np.float32))
        rows = np.flatnonzero(fold_of == f)
        # a held-out view is scored on all its patches: taken again, a batch at a time, when not all kept
        cv_maps[rows] = (
            _nn_maps(patches[rows], bank_f, (side, side))
            if keep == hw
            else np.concatenate(
                [
                    _nn_maps(patch_features(feat, b), bank_f, (side, side))
                    for b in _batches(ds.good, pre, rows)
                ]
            )
        )
    ref, fold_refs = None, None
    if t > 1 and s.positions:  # fixed camera: a tile position's always-hot edge or hole is normal there
        ref, loo = position_refs(cv_maps, t)
        cv_scores = _map_scores(cv_maps / loo, s.size)
        # the INT8 gate scores each good frame again by its fold's model: its references without the fold's
        # frames, as each frame's score here has its own left out (with every frame's, the held-out scores
        # came out 1.3 % below these, a median over 20 sheets, all of them below)
        fold_refs = [position_refs(cv_maps[fold_of != f], t)[0] for f in range(folds)]
    else:
        cv_scores = _map_scores(cv_maps, s.size)
    bank = coreset(bank_of(np.ones(n, bool)).reshape(-1, d), s.bank_size, s.seed)
    # a frame's score is its worst tile's (the agent's verdict: NG when any tile is), so the threshold is
    # taken on frames and the stated false-reject rate is per frame, not per tile
    cv_scores = cv_scores.reshape(-1, t).max(1)
    thr, rule = threshold_at(cv_scores, s.false_reject_rate)
    floor = noise_floor(feat, ds.good, bank, pre, (side, side), s, t, ds.tile_scale, ref)
    top = float(cv_scores.max())
    if floor > thr and floor <= top:
        # the noisy score lies within the good images' own held-out scores (many varied images, a bank far
        # smaller than their patches: the floor is one more draw of their spread, above the fitted quantile
        # about as often as below): the raise is kept, but nothing says the images vary less than noise
        rule += (
            f"; raised to {floor:.4g}, the good images' score with {NOISE_FLOOR_SIGMA:g} grey levels of sensor "
            f"noise (within their own held-out scores, up to {top:.3g})"
        )
    elif floor > thr:
        log(
            f"anomaly: the good images vary less than a camera's noise (flat or near-identical images, "
            f"held-out scores up to {top:.3g}): the threshold {thr:.3g} would reject any frame "
            f"with sensor noise; it is raised to {floor:.3g}, the score of these good images with "
            f"{NOISE_FLOOR_SIGMA:g} grey levels of noise. Give images of several parts over days if you can"
        )
        rule += (
            f"; raised to {floor:.4g}, the good images' score with {NOISE_FLOOR_SIGMA:g} grey levels of sensor "
            f"noise (their own scores, up to {top:.3g}, are below a camera's noise: flat or "
            "near-identical images)"
        )
    thr = max(thr, floor)
    log(
        f"anomaly: {n // t} good images{f' ({n} tiles)' if t > 1 else ''}, {n * hw} patches of {d} features{f' ({keep} of each view kept, at random)' if keep < hw else ''} → bank of {len(bank)}; threshold {thr:.4g} "
        f"at {s.false_reject_rate:.1%} false rejects ({folds}-fold scores of the good images)"
    )
    model = PatchCore(feat, bank, s.size, None if ref is None else ref[:, None]).eval()
    return {
        "model": model,
        # the first views' tensors (export example, INT8 calibration): never all of them
        "x": tensors(ds.good[:64], pre),
        "positions": ref is not None,
        "bank_candidates": len(patches) * patches.shape[1] * (2 if light is not None else 1),
        "pre": pre,
        "threshold": thr,
        "cv_scores": cv_scores,
        "fold_of": fold_of,
        "fold_banks": fold_banks,
        "fold_refs": fold_refs,
        "bank": len(bank),
        "cnn": net is not None,
        "threshold_rule": rule,
        "features": d,
    }


NOISE_FLOOR_SIGMA = 2.0  # grey levels: an ordinary camera's sensor noise (perturb.TEST's least)
NOISE_FLOOR_IMAGES = 32


def noise_floor(
    feat,
    good: list[np.ndarray],
    bank: np.ndarray,
    pre,
    hw: tuple[int, int],
    s,
    per_frame: int = 1,
    tile_scale: float = 1.0,
    ref: np.ndarray | None = None,
) -> float:
    """The lowest threshold the good images allow: their score (the false-reject quantile) with
    ``NOISE_FLOOR_SIGMA`` grey levels of sensor noise they were not shown, against the final bank.
    Good images that carry no variation of their own (20 copies of one frame, a flat plate) gave
    held-out scores of ~0 and a threshold of 1e-9, and then every real frame was NG; for images of
    several parts this floor lies far below their own threshold and changes nothing. Tiled
    (``per_frame`` tiles a frame), whole frames are picked and scored by their worst tile, the noise
    added to the tiles at the model's size, as much as the camera's left after the tiles' area shrink
    (``tile_scale`` model pixels per camera pixel: the camera's noise over 1/scale^2 pixels averaged;
    the full 2 grey levels at the model's size raised a 512x384 sheet's threshold above its 2-px
    scratches)."""
    from cloud_trainer.train import perturb

    rng = np.random.default_rng([s.seed, 29])
    t = per_frame
    nf = len(good) // t
    pick = np.unique(np.linspace(0, nf - 1, min(nf, NOISE_FLOOR_IMAGES)).round().astype(int))
    sigma = NOISE_FLOOR_SIGMA * min(1.0, tile_scale) if per_frame > 1 else NOISE_FLOOR_SIGMA
    noisy = [perturb.noise(good[i * t + k], sigma, rng) for i in pick for k in range(t)]
    maps = np.concatenate([_nn_maps(patch_features(feat, b), bank, hw) for b in _batches(noisy, pre)])
    if ref is not None:  # the tiles in frame order: row i is at position i % t
        maps = maps / ref[np.arange(len(maps)) % t]
    scores = _map_scores(maps, s.size).reshape(-1, t).max(1)
    return float(np.quantile(scores, 1 - s.false_reject_rate, method="higher"))


def threshold_at(good_scores: np.ndarray, false_reject_rate: float) -> tuple[float, str]:
    """The score above which ``false_reject_rate`` of good images fall, and how it was taken: the
    empirical quantile when at least 5 good images are expected above it, else the quantile of a
    log-normal fitted to the good scores (an empirical 1 % quantile of 30 images is their maximum,
    which a single odd image sets), never below the median good score."""
    from statistics import NormalDist

    s = np.sort(np.asarray(good_scores, np.float64))
    if len(s) * false_reject_rate >= 5:
        return float(np.quantile(s, 1 - false_reject_rate, method="higher")), "empirical quantile"
    # images found exactly in the others' bank (copies of one frame, a flat plate) score 0: at log(1e-9)
    # beside the others they made the fit's spread huge (a threshold of 367 against scores of 0.36, a
    # scratch at 78 passed); the fit is of the scores above 0, and the noise floor (``noise_floor``) below
    pos = s[s > 1e-9]
    logs = np.log(pos if len(pos) >= 3 else np.maximum(s, 1e-9))
    z = NormalDist().inv_cdf(1 - false_reject_rate)
    thr = float(np.exp(logs.mean() + z * logs.std(ddof=1))) if len(logs) >= 2 else 0.0
    # never below the empirical quantile: good scores have a heavier tail than a log-normal (measured on
    # the demo's cast flanges: the fit alone rejected 6.5 % of held-out good parts at a stated 1 %)
    emp = float(np.quantile(s, 1 - false_reject_rate, method="higher"))
    # nor below an exponential tail fitted to the top 20 % (peaks over a threshold)
    u = float(np.quantile(s, 0.8))
    top = s[s > u]
    pot = u + float((top - u).mean()) * np.log(0.2 / false_reject_rate) if len(top) >= 3 else emp
    return max(thr, emp, pot, float(np.median(s))), (
        f"log-normal fit (n = {len(s)}, too few for an empirical "
        "quantile), never below the empirical quantile nor an "
        "exponential fit of the top 20 %"
    )


# -- evaluation ---------------------------------------------------------------------------------


def hottest_hits(maps: np.ndarray | list[np.ndarray], masks: list[np.ndarray | None]) -> list[bool | None]:
    """Per image: does the map's hottest region (the connected pixels at ≥ 90 % of its maximum that
    hold the maximum) touch the defect's mask (resized to the map)? None where there is no mask."""
    import cv2

    out: list[bool | None] = []
    for m, mask in zip(maps, masks, strict=True):
        if mask is None:
            out.append(None)
            continue
        m = np.asarray(m, np.float32).reshape(m.shape[-2], m.shape[-1])
        mk = cv2.resize(mask, (m.shape[1], m.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        hot = (m >= 0.9 * m.max()).astype(np.uint8)
        _, lab = cv2.connectedComponents(hot)
        region = lab == lab[np.unravel_index(int(np.argmax(m)), m.shape)]
        out.append(bool((region & mk).any()))
    return out


def frame_maps(maps: np.ndarray, masks: list[np.ndarray | None], s: AnomalySettings) -> list[np.ndarray]:
    """A tiled model's maps (one per tile, each frame's in a row) stitched per frame as the agent
    stitches them (``preprocess.heatmap_on_frame``: overlaps take the larger value), on the frame's
    region at the size of its mask (a frame without a mask: a zero map, it is not scored for hits)."""
    from model_packager.preprocess import heatmap_on_frame

    assert s.tiles is not None
    t = s.tiles[0] * s.tiles[1]
    pre = preprocessing(s.size, tiles=s.tiles)  # the region's tiles: the test images are cut to the roi
    out = []
    for i, mask in enumerate(masks):
        if mask is None:
            out.append(np.zeros((1, 1), np.float32))
            continue
        m = [np.asarray(a, np.float32).reshape(a.shape[-2], a.shape[-1]) for a in maps[i * t : (i + 1) * t]]
        out.append(heatmap_on_frame(m, mask.shape[:2], pre, max_side=512, scaled=True))
    return out


def evaluate(
    path: Path,
    ds: AnomalyData,
    pre,
    threshold: float,
    engine: str = "onnxruntime",
    s: AnomalySettings | None = None,
) -> dict:
    from cloud_trainer.train import onnx_tools

    if not ds.test:
        return {}
    x = tensors(ds.test, pre)
    # a tiled model reads each row's tile position from its place in the batch: whole frames a run
    out = onnx_tools.run(path, x, engine=engine, batch=16 if ds.per_frame == 1 else ds.per_frame)
    # a frame's score is its worst tile's, as the agent judges it
    score = out["anomaly_score"].reshape(-1, ds.per_frame).max(1)
    ng = ds.test_ng
    maps = (
        out["anomaly_map"]
        if ds.per_frame == 1 or s is None
        else frame_maps(out["anomaly_map"], ds.test_masks, s)
    )
    hits = [h for h in hottest_hits(maps, ds.test_masks) if h is not None]
    m: dict[str, Any] = {
        "n": int(len(score)),
        "n_ng": int(ng.sum()),
        "image_auroc": common.auroc(ng, score),
        "ng_recall": float(np.mean(score[ng] >= threshold)) if ng.any() else float("nan"),
        "ok_rejected": float(np.mean(score[~ng] >= threshold)) if (~ng).any() else float("nan"),
        "map_hit_rate": float(np.mean(hits)) if hits else float("nan"),
    }
    for kind in sorted({k for k, n in zip(ds.test_kind, ng, strict=True) if n}):
        sel = np.asarray([k == kind or not n for k, n in zip(ds.test_kind, ng, strict=True)])
        m[f"auroc_{kind}"] = common.auroc(ng[sel], score[sel])
    m["scores"] = score
    return m


# -- build ---------------------------------------------------------------------------------------


def _unmeasured(metric: str, floor: float, ds: AnomalyData) -> str | None:
    """Why the gate's AUROC could not be measured, when the test set lacks good or defect images: "image_auroc
    nan < floor 0.9" told the user nothing of what to add."""
    if metric != "image_auroc" or (ds.test_ng.any() and (~ds.test_ng).any()):
        return None
    n_good, n_ng = int((~ds.test_ng).sum()), int(ds.test_ng.sum())
    return (
        f"image_auroc not measured (floor {floor}): the test set holds {n_good} good and {n_ng} defect images, and "
        "AUROC compares the scores of both: add test images of both (an MVTec AD folder's test/good and "
        f"test/<defect>; a dataset without a test split keeps good ones out of training when it holds more than "
        f"{MIN_GOOD} good images), or give --floor image_auroc=0 to build without it"
    )


def build(s: AnomalySettings, log=common.stderr_log) -> dict:
    """good images → model → ONNX (FP32, INT8 if it holds) → evaluation → gate → signed package →
    registry. Raises ``GateFailed`` (registry unchanged) when a floor is not met."""
    from cloud_trainer.registry import Registry
    from cloud_trainer.train import onnx_tools
    from cloud_trainer.train.pipeline import GateFailed

    t0 = time.perf_counter()
    if not 0 < s.false_reject_rate < 0.5:
        raise AnomalyDataError(
            f"--false-reject-rate {s.false_reject_rate}: give a share in (0, 0.5), e.g. 0.01"
        )
    if s.roi is not None and (len(s.roi) != 4 or min(s.roi) < 0 or min(s.roi[2:]) < 1):
        raise AnomalyDataError(
            f"--roi {','.join(map(str, s.roi))}: expected X,Y,WIDTH,HEIGHT in the frames' pixels, width and "
            "height at least 1"
        )
    check_tiles(s)
    ds = load_good(s.dataset, roi=s.roi, size=s.size, tiles=s.tiles)
    if ds.copies:
        log(f"anomaly: {ds.copies}")
    if ds.held_out:
        log(
            f"anomaly: {ds.held_out} of the dataset's {ds.held_out + ds.n_good} good images kept out of training "
            "for the test set (seeded): it holds defect images but no test split of good images"
        )
    s.workdir.mkdir(parents=True, exist_ok=True)
    fitted = fit(ds, s, log)
    pre, thr = fitted["pre"], fitted["threshold"]
    # the export check's two images come from the test set where it holds two, which the bank never held: a
    # training image's patches lie at distance ~0 from the bank, where its outputs are so small that the two
    # runtimes' FP32 rounding passed the check's bounds, and the build went on to the slow dynamo exporter
    # (~9 s of CPU) for a file giving the same outputs as the TorchScript exporter's
    example = tensors(ds.test[:2], pre) if len(ds.test) >= 2 else fitted["x"][:2]
    fp32 = onnx_tools.export(fitted["model"], example, s.workdir / "model.fp32.onnx", INPUT, OUTPUTS)
    m32 = evaluate(fp32, ds, pre, thr, s=s)
    m8, drift, int8_ok, note = (
        {},
        float("nan"),
        False,
        ("fixed texture features have no learned convolutions to quantize: FP32 form only"),
    )
    labels = np.concatenate(
        [np.zeros(len(ds.good), np.int64), np.repeat(ds.test_ng.astype(np.int64), ds.per_frame)]
    )
    specs = _output_specs(s, thr)
    score_specs = [o for o in specs if o.name == "anomaly_score"]
    parity: dict = {}
    judged_runs: list[dict[str, np.ndarray]] = []
    judged_ref: dict[str, np.ndarray] = {}
    forms: dict[str, tuple[Path, str]] = {}
    runs: dict[str, dict[str, np.ndarray]] = {}
    if fitted["cnn"]:  # the CNN's convolutions in INT8, held to FP32 as the other families' INT8 forms are
        int8 = onnx_tools.quantize(
            fp32,
            s.workdir / "model.int8.onnx",
            fitted["x"][: min(len(fitted["x"]), 64)],
            INPUT,
            op_types=["Conv"],
        )  # the bank distances stay FP32
        engines = ["onnxruntime", *(["openvino"] if s.openvino and _has_openvino() else [])]
        forms = {("int8" if e == "onnxruntime" else f"int8_{e}"): (int8, e) for e in engines}
        ref, runs, map_dev = _view_runs(fp32, forms, ds, pre)
        # judged item by item on held-out images only: each good view scored by its fold's model (a bank
        # built without it, as the threshold was set: near the threshold) and the test views. The final
        # model's scores of the good views it was built from lie far below the threshold: judged on them,
        # a good-only build (no test set) saw easy images only and served an INT8 form that moves held-out
        # good images' scores across the threshold. Verdicts at the threshold agree on int8_min_agreement
        # of them, no score moves beyond int8_max_deviation of the threshold
        from cloud_trainer.train.families import load_family
        from cloud_trainer.train.pipeline import _int8_parity

        held_ref, held_runs = _held_out_runs(
            fp32,
            forms,
            ds,
            pre,
            fitted["fold_of"],
            fitted["fold_banks"],
            s.workdir,
            fitted["model"],
            fitted["fold_refs"],
        )
        g = len(ds.good)
        judged_ref = {"anomaly_score": np.concatenate([held_ref, ref["anomaly_score"][g:]])}
        judged = {
            f: {"anomaly_score": np.concatenate([held_runs[f], r["anomaly_score"][g:]])}
            for f, r in runs.items()
        }
        parity = _int8_parity(
            load_family("anomaly"),
            {"settings": s},
            0,
            thr,
            {"fp32": judged_ref, **judged},
            s,  # type: ignore[arg-type]
        )
        parity["judged"] = _judged_what(ds, fitted)
        for form, dev in map_dev.items():  # a map is shown, not decided on: measured, not limited
            parity["forms"][form]["max_deviation"]["anomaly_map"] = dev
        drift = float(max(r["max_deviation"]["anomaly_score"] for r in parity["forms"].values()) / thr)
        m8 = evaluate(int8, ds, pre, thr, s=s)
        problems = list(parity["problems"])
        if m32 and m8["image_auroc"] < m32["image_auroc"] - s.int8_margin:
            problems.append(
                f"int8 image_auroc {m8['image_auroc']:.4f} loses more than --int8-margin {s.int8_margin} to "
                f"FP32 ({m32['image_auroc']:.4f})"
            )
        int8_ok = not problems
        judged_runs = list(judged.values()) if int8_ok else []
        note = (
            "convolutions INT8 (QDQ, 7-bit weights), bank distances FP32; within its parity limits on every "
            f"one of the {parity['judged']}"
            if int8_ok
            else "; ".join(problems)
            + f"; judged on the {parity['judged']}"
            + ": the package carries the FP32 form only"
            + (" (--require-int8 refuses instead)" if not s.require_int8 else "")
        )
    else:
        ref = _view_runs(fp32, {}, ds, pre)[0]
    served = s.workdir / "model.int8.onnx" if int8_ok else fp32
    metrics = m8 if int8_ok else m32
    floors = {"image_auroc": 0.90, **s.floors} if m32 else dict(s.floors)
    reasons = [
        _unmeasured(k, v, ds) or f"{k} {metrics.get(k, float('nan')):.4f} < floor {v}"
        for k, v in floors.items()
        if not metrics.get(k, float("nan")) >= v
    ]
    if s.require_int8 and not int8_ok:
        reasons.append(f"--require-int8: {note}")
    reg = Registry(s.registry)
    # reserved when the gate passed (or is forced): another build choosing now gets the next one (registry)
    version = s.version or (
        reg.reserve_version(s.name) if not reasons or s.force else reg.next_version(s.name)
    )
    clean = lambda m: {k: float(v) for k, v in m.items() if isinstance(v, int | float)}  # noqa: E731
    report = {
        "name": s.name,
        "version": version,
        "family": "anomaly",
        "dataset": path_text(s.dataset),  # as text: a folder's name in bytes that are not UTF-8 as \xfc
        "dataset_digest": ds.digest,
        "layout": ds.layout,
        "seed": s.seed,
        "size": s.size,
        "roi": s.roi,
        "tiles": s.tiles,
        "good_images": ds.n_good,
        "threshold": thr,
        "false_reject_rate": s.false_reject_rate,
        "threshold_rule": f"{min(s.folds, ds.n_good)}-fold scores of the {ds.n_good} good images (each scored "
        f"by a bank built without it{', by its worst tile' if s.tiles else ''}), quantile 1 - "
        f"{s.false_reject_rate}: {fitted['threshold_rule']}",
        "good_cv_scores": {
            "max": float(fitted["cv_scores"].max()),
            "median": float(np.median(fitted["cv_scores"])),
        },
        "features": s.features + ("+cnn" if s.backbone_weights and "cnn" not in s.features else ""),
        "light_variation": s.light_variation,
        "backbone": (
            f"ResNet-18 layout, weights {s.backbone_weights}"
            if s.backbone_weights
            else f"random ResNet-like, width {s.width}, seed {s.seed}, batch-norm statistics from the good images"
            if fitted["cnn"]
            else "none (fixed texture features)"
        ),
        "bank": fitted["bank"],
        "positions": fitted["positions"],
        "feature_dims": fitted["features"],
        "form": "int8" if int8_ok else "fp32",
        "int8": {"held": int8_ok, "score_drift_vs_threshold": drift, "note": note},
        # as the other families' report.json: what is served and why, INT8 against FP32 on every view
        "served": "int8" if int8_ok else "fp32",
        "served_why": note,
        "int8_min_agreement": s.int8_min_agreement,
        "int8_max_deviation": s.int8_max_deviation,
        "int8_parity": parity or None,
        "metrics": {"fp32": clean(m32), "int8": clean(m8)},
        "floors": floors,
        "gate": {"passed": not reasons, "reasons": reasons},
        "sizes": {
            "fp32_bytes": fp32.stat().st_size,
            "int8_bytes": served.stat().st_size if int8_ok else None,
        },
        "seconds": 0.0,
    }
    _write_report(s.workdir, report)
    if reasons and not s.force:
        raise GateFailed(reasons, s.workdir / "report.md")
    golden, near_ref, near_runs, near_maps = _golden(
        ds, fitted, fp32, forms if int8_ok else {}, labels, ref, runs, parity, s
    )
    parity_spec = None
    if int8_ok:
        from cloud_trainer.train.pipeline import _parity_spec

        # the score's bound: measured on the judged (held-out) views, on every view of the model served and
        # on the made near-threshold ones (the golden inputs are among them), with the same headroom
        both = {
            "anomaly_score": np.concatenate([judged_ref["anomaly_score"], ref["anomaly_score"], near_ref])
        }
        parity_spec = _parity_spec(
            both,
            [
                {"anomaly_score": np.concatenate([j["anomaly_score"], r["anomaly_score"], near_runs[f]])}
                for j, (f, r) in zip(judged_runs, runs.items(), strict=True)
            ],
            score_specs,
            report,
        )
        # the map's bound: as measured on every view, made ones too, with the same headroom
        if parity_spec is not None:
            from model_packager.package import PARITY_HEADROOM

            for f, r in parity["forms"].items():  # the made views' among them: the report states it
                r["max_deviation"]["anomaly_map"] = max(
                    r["max_deviation"]["anomaly_map"], near_maps.get(f, 0.0)
                )
            worst = max(r["max_deviation"]["anomaly_map"] for r in parity["forms"].values())
            parity_spec["output_atol"]["anomaly_map"] = round(max(PARITY_HEADROOM * worst, 2e-3), 6)
    notes: list[str] = []
    pkg = _package(
        s, report, served, fp32 if int8_ok else None, fitted["x"], golden, ds, parity_spec, notes, log
    )
    for note in notes:  # the golden set's blind spots, as model-packager build says them
        log(f"warning: {note}")
    report["golden_notes"] = notes
    report["seconds"] = time.perf_counter() - t0
    _write_report(s.workdir, report)
    key = clean(metrics) | {"threshold": thr, "good_images": ds.n_good}
    if reasons:
        key["forced_past_gate"] = 1
    files = [s.workdir / "report.json", s.workdir / "report.md"]
    entry = reg.publish(pkg, [*files, pkg], key, ds.digest, None)
    log(
        f"published {entry['name']} {entry['version']} ({report['form'].upper()}) in {report['seconds']:.0f}s"
    )
    return {"entry": entry, "package": str(reg.package_path(entry)), "report": report}


def _golden(
    ds: AnomalyData,
    fitted: dict,
    fp32: Path,
    forms: dict[str, tuple[Path, str]],
    labels: np.ndarray,
    ref: dict[str, np.ndarray],
    runs: dict[str, dict[str, np.ndarray]],
    parity: dict,
    s: AnomalySettings,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, float]]:
    """The package's golden inputs; of the made views among them, the FP32 scores, each INT8 form's
    (``forms``: those served) and the largest move of its map (the package's bounds cover them).

    As the other families' (``pipeline._golden_rows``), of the good and test views: those nearest the
    threshold on either side, the lowest and highest scores, those INT8 moved most, then good and
    defective in turn, leaving out those whose verdict INT8 changes here. A good-only build's are all far
    below the threshold (its bank holds them), and were its golden set: an agent's check could not see a
    form that flips verdicts near the threshold on its CPU. So ``NEAR_GOLDEN`` of them give way to made
    views (``_near_views``), the nearest below and above the threshold in turn, but none that INT8 flips
    here or moves past the trainer's limit (the agent's parity check would refuse INT8 on this very CPU).
    A model of tile positions (one good frame before) gets whole frames, its tiles in order: the nearest
    made frame below the threshold and above it, the middle good frame, more made ones, up to
    ``GOLDEN_VIEWS`` tiles but at least 2 frames."""
    from cloud_trainer.train.pipeline import _golden_rows
    from model_packager.golden import decisions

    pre, thr = fitted["pre"], fitted["threshold"]
    specs = [o for o in _output_specs(s, thr) if o.name == "anomaly_score"]
    t = ds.per_frame if fitted["positions"] else 1
    near, near_ref, near_runs, near_maps = _near_views(fp32, forms, ds, pre, thr, s.seed, t)
    # made groups INT8 moves here past the trainer's limit on the score, or whose verdict it changes: not
    # golden items (an agent's parity check would refuse INT8 on this very CPU)
    limit = ((parity.get("limits") or {}).get("output_atol") or {}).get("anomaly_score", np.inf)
    ok = np.ones(len(near_ref), bool)
    for got in near_runs.values():
        ok &= np.abs(got[:, 0].astype(np.float64) - near_ref[:, 0]) <= limit
        ok &= np.all(
            decisions(specs, {"anomaly_score": got}) == decisions(specs, {"anomaly_score": near_ref}), 1
        )
    fine = np.flatnonzero(ok.reshape(-1, t).all(1))
    score = near_ref[:, 0].reshape(-1, t).max(1)  # a frame's: its worst tile's
    # nearest first, below and above the threshold in turn
    below, above = [i for i in fine if score[i] < thr], [i for i in fine if score[i] >= thr]
    made = [int(i) for pair in itertools.zip_longest(below, above) for i in pair if i is not None]
    if fitted["positions"]:
        # whole frames, their tiles in order (a row's tile position is its place in the batch); None: the
        # middle good frame
        good = list(ds.good[(ds.n_good // 2) * t : (ds.n_good // 2 + 1) * t])
        order = [*made[:2], None, *made[2:]][: max(2, GOLDEN_VIEWS // t)]
        golden = tensors([v for i in order for v in (good if i is None else near[i])], pre)
        made = [i for i in order if i is not None]
    else:
        made = made[:NEAR_GOLDEN]
        rows = _golden_rows(
            labels,
            np.arange(len(labels)),
            specs,
            ref,
            [r for f, r in runs.items() if f in forms],
            n=GOLDEN_VIEWS - len(made),
        )
        views = [*ds.good, *ds.test]
        golden = tensors([views[i] for i in rows] + [near[i][0] for i in made], pre)
    at = np.asarray([i * t + k for i in made for k in range(t)], np.int64)
    map_dev = {f: float(v[at].max(initial=0.0)) for f, v in near_maps.items()}
    return golden, near_ref[at], {f: v[at] for f, v in near_runs.items()}, map_dev


def check_tiles(s: AnomalySettings) -> None:
    """``--tiles`` that cannot work, refused before any image is read (tiles smaller than ``--size``
    are refused on the first frame, ``cut_tiles``)."""
    if s.tiles is None:
        return
    cols, rows = s.tiles
    if not (1 <= cols <= 64 and 1 <= rows <= 64):
        raise AnomalyDataError(f"--tiles {cols}x{rows}: give COLUMNSxROWS, each 1..64 (e.g. 4x3)")
    if s.size < MIN_TILE_SIZE:
        raise AnomalyDataError(
            f"--tiles with --size {s.size}: a tile needs at least {MIN_TILE_SIZE} px (the features' 44-px "
            f"context and 3x3 patch neighbourhoods would cover the whole tile); give --size {MIN_TILE_SIZE} "
            "or more, and fewer tiles if the frame is small"
        )
    px = cols * rows * s.size * s.size
    if px > MAX_TILE_PIXELS:
        fit_n = max(1, MAX_TILE_PIXELS // (s.size * s.size))
        raise AnomalyDataError(
            f"--tiles {cols}x{rows} at --size {s.size} runs {cols * rows} tiles, {px / 1e6:.1f} M model pixels "
            f"a frame: about {px / 1e6 * MS_PER_MPX:.0f} ms a frame on a quiet 2-core gateway, several times "
            f"that on a busy one (bound {MAX_TILE_PIXELS / 1e6:.2f} M, ~{MAX_TILE_PIXELS / 1e6 * MS_PER_MPX:.0f} "
            f"ms); use at most {fit_n} tiles at --size {s.size}, a smaller --size, or --roi on the part"
        )


GOLDEN_VIEWS = 16  # golden inputs of an untiled model (a view at 128 px: 196 KB in the package)

# Golden inputs near the threshold. The final bank is made of every good view's patches, so the final
# model scores them far below the threshold (24 sheets at 128 px, the default bank: 0.27-0.64 of it; ~0
# when the bank holds every patch), and a good-only build has no other views: its golden inputs were
# those alone, and an agent's check of a form on its own CPU (INT8, or FP32 at OpenVINO's bf16) could not
# see one that flips verdicts near the threshold, where none of them was. A held-out good view is held out of the fold banks only; the deployed model has seen it. So views
# are made that it has not seen: a good view with a disc of seeded noise, its amplitude bisected until the
# final FP32 model scores the view just below, then just above, the threshold.
NEAR_SHARE = 0.02  # the scores searched for: this share of the threshold below and above it
# none nearer than this: an item a hair from the threshold would flip on any INT8 CPU, refusing a form that
# moves scores well within its bounds
NEAR_MIN_SHARE = 0.005
# nor farther than this: a made view far above it (noise of 96 grey levels: 13 times it on 64-px plates)
# is no item a line's verdicts turn on, and INT8 moves its map most
NEAR_MAX_SHARE = 0.25
NEAR_GOLDEN = 4  # made views among an untiled model's golden inputs: two on either side
NEAR_BASES = 4  # good views (a model of tile positions: frames) made into near-threshold ones
NEAR_STEPS = 8  # bisection steps for each side: the amplitude to 0.4 grey levels
NEAR_MAX_SIGMA = 96.0  # grey levels: the noise's largest amplitude tried


def noise_spot(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``img`` with Gaussian noise of ``sigma`` grey levels in a disc of a quarter of its shorter side, at
    a seeded place in its middle half: the same disc and noise pattern at any ``sigma``, so that the
    score grows with ``sigma`` (a made defect of graded strength)."""
    rng = np.random.default_rng([seed, 31])
    h, w = img.shape[:2]
    r = max(2, min(h, w) // 8)
    cy = int(rng.integers(h // 4, max(h // 4 + 1, 3 * h // 4)))
    cx = int(rng.integers(w // 4, max(w // 4 + 1, 3 * w // 4)))
    yy, xx = np.ogrid[:h, :w]
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32)
    z = rng.standard_normal(img.shape).astype(np.float32)
    add = sigma * z * (disc[..., None] if img.ndim == 3 else disc)
    return np.clip(np.rint(img.astype(np.float32) + add), 0, 255).astype(np.uint8)


def near_threshold(score, k: int, threshold: float) -> list[tuple[int, float, float]]:
    """``(base, sigma, score)`` of every view tried, ``k`` bases at a time: each base's noise amplitude
    bisected towards a score ``NEAR_SHARE`` of the threshold below it, then as much above it, to
    ``NEAR_MAX_SIGMA / 2**NEAR_STEPS`` grey levels (``score``: (bases, sigmas) -> the final FP32 model's
    scores of the made views)."""
    idx = np.arange(k)
    tried: list[tuple[int, float, float]] = []

    def run(sig: np.ndarray) -> np.ndarray:
        got = np.asarray(score(idx, sig), dtype=np.float64)
        tried.extend((int(b), float(g), float(v)) for b, g, v in zip(idx, sig, got, strict=True))
        return got

    for target in (threshold * (1 - NEAR_SHARE), threshold * (1 + NEAR_SHARE)):
        # each base's bracket from the views tried so far (the score grows with the amplitude): the second
        # search starts where the first left off, and takes a few runs, not NEAR_STEPS
        lo = np.array([max((g for c, g, v in tried if c == b and v < target), default=0.0) for b in idx])
        hi = np.array(
            [min((g for c, g, v in tried if c == b and v >= target), default=NEAR_MAX_SIGMA) for b in idx]
        )
        hi = np.maximum(hi, lo)
        for _ in range(NEAR_STEPS):
            if (hi - lo).max() <= NEAR_MAX_SIGMA / 2**NEAR_STEPS:
                break
            mid = (lo + hi) / 2
            below = run(mid) < target
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return tried


def _near_views(
    fp32: Path,
    forms: dict[str, tuple[Path, str]],
    ds: AnomalyData,
    pre,
    threshold: float,
    seed: int,
    unit: int,
) -> tuple[list[list[np.ndarray]], np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Made views near the threshold: of those ``near_threshold`` tried, between ``NEAR_MIN_SHARE`` and
    ``NEAR_MAX_SHARE`` of the threshold from it, the ``NEAR_GOLDEN`` nearest below and above it, nearest
    first. Groups of ``unit`` views (a whole frame's tiles for a model of tile positions, the noise on its
    first: searched a tile at a time, alone in its batch at the first position; else one view), the FP32
    model's score of each row (ONNX Runtime, (rows, 1)), each other form's (name -> (model, engine)) and
    the largest move of its anomaly map from FP32's on each row."""
    from cloud_trainer.train import onnx_tools

    groups = len(ds.good) // unit
    bases = np.unique(np.linspace(0, groups - 1, min(groups, NEAR_BASES)).round().astype(int))
    run = 16 if unit == 1 else unit  # a model of tile positions: a frame a run, its tiles in order
    sess = onnx_tools._ort_session(fp32, 1)  # one session for the search's runs

    def scores(x: np.ndarray, batch: int) -> np.ndarray:
        return np.concatenate(
            [sess.run(["anomaly_score"], {INPUT: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
        )[:, 0]

    def made(b: int, sigma: float) -> list[np.ndarray]:
        views = list(ds.good[bases[b] * unit : (bases[b] + 1) * unit])
        views[0] = noise_spot(views[0], sigma, seed * 100_003 + int(bases[b]))
        return views

    # a frame's score is its worst tile's: the tiles left as they are, scored once
    rest = np.zeros(len(bases))
    if unit > 1 and len(bases):
        x = tensors([v for b in range(len(bases)) for v in made(b, 0.0)], pre)
        rest = scores(x, unit).reshape(-1, unit)[:, 1:].max(1)

    def score(idx: np.ndarray, sig: np.ndarray) -> np.ndarray:
        x = tensors([made(int(b), float(g))[0] for b, g in zip(idx, sig, strict=True)], pre)
        return np.maximum(rest[idx], scores(x, 1 if unit > 1 else run))

    tried = {(b, g): v for b, g, v in near_threshold(score, len(bases), threshold)} if groups else {}
    near = sorted(
        (abs(v - threshold), v >= threshold, b, g)
        for (b, g), v in tried.items()
        if NEAR_MIN_SHARE * threshold <= abs(v - threshold) <= NEAR_MAX_SHARE * threshold
    )
    below, above = [c for c in near if not c[1]], [c for c in near if c[1]]
    group_views = [made(b, g) for _, _, b, g in sorted(below[:NEAR_GOLDEN] + above[:NEAR_GOLDEN])]
    if not group_views:
        none = np.zeros((0, 1), np.float32)
        return [], none, dict.fromkeys(forms, none), dict.fromkeys(forms, np.zeros(0))
    x = tensors([v for g in group_views for v in g], pre)
    o32 = onnx_tools.run(fp32, x, batch=run)
    runs, map_dev = {}, {}
    for f, (path, engine) in forms.items():
        o = onnx_tools.run(path, x, engine=engine, batch=run)
        runs[f] = o["anomaly_score"].reshape(-1, 1)
        d = np.abs(o["anomaly_map"].astype(np.float64) - o32["anomaly_map"]).reshape(len(x), -1)
        map_dev[f] = np.nan_to_num(d, nan=np.inf).max(1)
    return group_views, o32["anomaly_score"].reshape(-1, 1), runs, map_dev


def _outputs(s: AnomalySettings, threshold: float) -> list[dict]:
    """The manifest's outputs (score and map, both with the threshold)."""
    return [
        {
            "name": "anomaly_score",
            "dtype": "float32",
            "shape": ["batch", 1],
            "role": "anomaly_score",
            "threshold": threshold,
            "description": f"max of the anomaly map; threshold at {s.false_reject_rate:.1%} false rejects"
            + (" per frame (a frame's score: its worst tile's)" if s.tiles else ""),
        },
        {
            "name": "anomaly_map",
            "dtype": "float32",
            "shape": ["batch", 1, s.size, s.size],
            "role": "anomaly_map",
            "threshold": threshold,
            "description": "patch distance to the nearest good patch, in score units",
        },
    ]


def _output_specs(s: AnomalySettings, threshold: float) -> list:
    from model_packager.manifest import OutputSpec

    return [OutputSpec.model_validate(o) for o in _outputs(s, threshold)]


def _view_runs(
    fp32: Path, forms: dict[str, tuple[Path, str]], ds: AnomalyData, pre
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """The FP32 model's scores on every good and test view (ONNX Runtime, the reference), each other
    form's (name -> (model, engine)) and the largest move of its anomaly map from FP32's, a batch at a
    time (the maps of every view are not kept). A tiled model reads a row's tile position from its place
    in the batch: whole frames' tiles in each run."""
    from cloud_trainer.train import onnx_tools

    t = ds.per_frame
    rows, run = (BATCH, 16) if t == 1 else (t * max(1, BATCH // t),) * 2
    ref: list[np.ndarray] = []
    got: dict[str, list[np.ndarray]] = {f: [] for f in forms}
    map_dev = dict.fromkeys(forms, 0.0)
    for b in itertools.chain(_batches(ds.good, pre, batch=rows), _batches(ds.test, pre, batch=rows)):
        o32 = onnx_tools.run(fp32, b, batch=run)
        ref.append(o32["anomaly_score"].reshape(-1, 1))
        for f, (path, engine) in forms.items():
            o = onnx_tools.run(path, b, engine=engine, batch=run)
            got[f].append(o["anomaly_score"].reshape(-1, 1))
            d = np.abs(o["anomaly_map"].astype(np.float64) - o32["anomaly_map"])
            map_dev[f] = max(map_dev[f], float(np.nan_to_num(d, nan=np.inf).max()) if d.size else 0.0)
    return (
        {"anomaly_score": np.concatenate(ref)},
        {f: {"anomaly_score": np.concatenate(v)} for f, v in got.items()},
        map_dev,
    )


def _with_bank(path: Path, bank: np.ndarray, out: Path, model, ref: np.ndarray | None = None) -> Path:
    """The model at ``path`` (FP32 or INT8: its bank distances are FP32 either way) with another memory
    bank: its ``bank_t`` and ``bank_sq`` constants (``model``'s, the PatchCore exported: found by name,
    else by value) replaced as ``PatchCore`` makes them; with ``ref`` (t, h, w), a model of tile
    positions' reference maps too."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    new = {
        "bank_t": np.ascontiguousarray(bank.T, np.float32),
        "bank_sq": (bank.astype(np.float32) ** 2).sum(1)[None, None, :],
    }
    if ref is not None:
        new["ref"] = np.ascontiguousarray(ref[:, None], np.float32)
    old = {k: getattr(model, k).numpy() for k in new}
    found = set()
    for i, init in enumerate(m.graph.initializer):
        key = init.name if init.name in new else None
        if key is None and init.data_type == onnx.TensorProto.FLOAT:
            a = numpy_helper.to_array(init)
            key = next((k for k, v in old.items() if a.shape == v.shape and np.array_equal(a, v)), None)
        if key is not None and key not in found:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(new[key], init.name))
            found.add(key)
    if found != set(new):
        raise RuntimeError(f"{path}: no {sorted(set(new) - found)} constant to give a fold's bank")
    del m.graph.value_info[:]  # shapes inferred for the other bank's size
    onnx.save(m, str(out))
    return out


def _held_out_runs(
    fp32: Path,
    forms: dict[str, tuple[Path, str]],
    ds: AnomalyData,
    pre,
    fold_of: np.ndarray,
    fold_banks: list[np.ndarray],
    workdir: Path,
    model,
    fold_refs: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each good view's score (N, 1) as the threshold was set on it: by the model whose bank is its
    fold's (built without it), FP32 on ONNX Runtime (the reference) and each other form (name ->
    (model, engine)). A model of tile positions gets its fold's reference maps (``fold_refs``: of the
    good frames not in the fold); with those of every good frame, its own among them, its score here
    was a little below the one the threshold took."""
    import shutil

    from cloud_trainer.train import onnx_tools

    t = ds.per_frame
    rows_at, run = (BATCH, 16) if t == 1 else (t * max(1, BATCH // t),) * 2
    n = len(ds.good)
    ref = np.zeros((n, 1), np.float32)
    got = {f: np.zeros((n, 1), np.float32) for f in forms}
    tmp = workdir / "held_out_models"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        for f, bank in enumerate(fold_banks):
            rows = np.flatnonzero(fold_of == f)
            if not len(rows):
                continue
            made: dict[Path, Path] = {}
            for src in [fp32, *(p for p, _ in forms.values())]:
                if src not in made:
                    made[src] = _with_bank(
                        src,
                        bank,
                        tmp / f"fold{f}.{len(made)}.onnx",
                        model,
                        None if fold_refs is None else fold_refs[f],
                    )
            # whole frames in each batch: a fold holds a tiled frame's tiles together, in order
            for i, b in zip(
                range(0, len(rows), rows_at), _batches(ds.good, pre, rows, batch=rows_at), strict=True
            ):
                at = rows[i : i + rows_at]
                ref[at] = onnx_tools.run(made[fp32], b, batch=run)["anomaly_score"].reshape(-1, 1)
                for name, (path, engine) in forms.items():
                    o = onnx_tools.run(made[path], b, engine=engine, batch=run)
                    got[name][at] = o["anomaly_score"].reshape(-1, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ref, got


def _judged_what(ds: AnomalyData, fitted: dict) -> str:
    """The views the INT8 gate judged, in words (report.json's ``int8_parity.judged``, ``served_why``)."""
    t = ds.per_frame
    unit = f"tiles ({t} a frame)" if t > 1 else "images"
    folds = len(fitted["fold_banks"])
    out = (
        f"{len(ds.good)} good {unit}, each scored by a bank built without it ({folds}-fold, as the threshold "
        "was set"
        + ("; the tile positions' reference maps also without it" if fitted["positions"] else "")
        + ")"
    )
    return out + (f" and {len(ds.test)} test {unit}" if ds.test else ", no test set")


def golden_tolerance(threshold: float) -> dict:
    """The golden check's tolerance on the model's own scale: 2e-3 of the threshold, at most the
    ``manifest.MAX_GOLDEN_ATOL`` a build takes, and ``rtol`` 2e-2 (the scores near the threshold are held by it).
    Near-black frames cut in tiles (the positions' reference maps near 0) set a threshold of 1.07e6, whose
    2e-3, 2138, ended the build in a traceback refusing golden.atol; OpenVINO's largest deviation from ONNX
    Runtime on that package's golden inputs was 21."""
    from model_packager.manifest import MAX_GOLDEN_ATOL

    return {"atol": min(2e-3 * max(1.0, threshold), MAX_GOLDEN_ATOL), "rtol": 2e-2}


def _package(
    s: AnomalySettings,
    report: dict,
    model: Path,
    fp32: Path | None,
    x: np.ndarray,
    golden: np.ndarray,
    ds: AnomalyData,
    parity: dict | None = None,
    notes: list[str] | None = None,
    log=common.stderr_log,
) -> Path:
    from model_packager import build_package

    size = s.size
    spec = {
        "name": s.name,
        "version": report["version"],
        "task": "anomaly_detection",
        "description": f"good-only anomaly model (PatchCore-style) trained on {ds.n_good} good images of "
        f"{path_text(Path(s.dataset).name)}"
        + (f", {s.tiles[0]}x{s.tiles[1]} tiles each at {size} px" if s.tiles else "")
        + f"; form {report['form'].upper()}",
        "inputs": [{"name": INPUT, "dtype": "float32", "shape": ["batch", 3, size, size], "layout": "NCHW"}],
        "outputs": _outputs(s, report["threshold"]),
        "preprocessing": preprocessing(size, s.roi, s.tiles).model_dump(mode="json"),
        "golden": golden_tolerance(report["threshold"]),
        "quantization": {
            "scheme": "int8-qdq-conv-only-7bit-weights" if fp32 else "none",
            "calibration_samples": min(len(x), 64),
            "metric_name": "image_auroc",
            "fp32_metric": report["metrics"]["fp32"].get("image_auroc"),
            "int8_metric": report["metrics"]["int8"].get("image_auroc"),
            "fp32_size_bytes": report["sizes"]["fp32_bytes"],
            "int8_size_bytes": report["sizes"]["int8_bytes"] if fp32 else None,
        },
        "provenance": {
            "dataset_digest": ds.digest,
            "trainer": "cloud_trainer.train.anomaly 0.1",
            "seed": s.seed,
            "onnx_opset": 18,
            "dynamic_batch": True,
            "metrics": {k: v for k, v in report["metrics"]["int8" if fp32 else "fp32"].items()},
            "notes": report["int8"]["note"] + "; backbone: " + report["backbone"],
        },
    }
    if parity is not None:  # INT8's bounds: measured on every view (``build``), which an agent re-checks
        spec["parity"] = parity
    (s.workdir / "report.json").write_text(json_codec.dumps(report, indent=1, default=float))
    from model_packager.inputstats import LOCAL_FILE, camera_lines, summarize, summarize_local

    # the training images' statistics for the agent's UNSURE check: the manifest's input_stats, and their
    # local statistics (colour, light banding, sharpness by region) signed beside it; a curved or lamp
    # build's ranges also reach the frames under the light it was made to accept (``stats_copies``)
    also = stats_copies(ds.stats_images, s)
    spec["input_stats"] = summarize(ds.stats_images, also=also).model_dump(mode="json")
    local = summarize_local(
        ds.stats_images, also=also, shapes=ds.shapes or None, cameras=ds.cameras if ds.shapes else None
    )
    (s.workdir / LOCAL_FILE).write_text(json.dumps(local))
    for line in camera_lines(local["frame"]):  # the cameras the frame-shape check accepts
        log(f"anomaly: {line}")
    return build_package(
        model,
        spec,
        s.workdir,
        signing_key=s.signing_key,
        golden_inputs={INPUT: golden},
        openvino=s.openvino and _has_openvino(),
        fp32_model=fp32,
        extra_files={"report.json": s.workdir / "report.json", LOCAL_FILE: s.workdir / LOCAL_FILE},
        notes=notes,
    )


def _has_openvino() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _write_report(workdir: Path, r: dict) -> None:
    (workdir / "report.json").write_text(json_codec.dumps(r, indent=1, default=float))
    f = lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"  # noqa: E731
    md = [
        f"# {r['name']} {r['version']} — anomaly model report",
        "",
        f"Dataset `{r['dataset']}` ({r['layout']}, {r['good_images']} good training images; "
        f"{r['dataset_digest'][:19]}…). Features: {r['features']}; backbone: {r['backbone']}; light variation: "
        f"{r['light_variation']} (the bank's relit copies, --light-variation). Bank {r['bank']} "
        f"patches × {r['feature_dims']} features. Served form: **{r['form'].upper()}** ({r['int8']['note']}).",
        "",
        f"Threshold {r['threshold']:.4g}: {r['threshold_rule']}.",
        "",
        f"Gate: **{'passed' if r['gate']['passed'] else 'FAILED'}** "
        + ("" if r["gate"]["passed"] else "— " + "; ".join(r["gate"]["reasons"])),
        "",
    ]
    from cloud_trainer.train.pipeline import _parity_md

    md += _parity_md(r.get("int8_parity"))  # INT8 against FP32 on every view, as the other families' report
    if (r.get("int8_parity") or {}).get("judged"):  # which views those held-out items are
        md[-1:] = ["", f"Judged on the {r['int8_parity']['judged']}.", ""]
    if r["metrics"]["fp32"]:
        md += ["| metric (test set) | FP32 | INT8 | floor |", "|---|---:|---:|---:|"]
        for k, v in r["metrics"]["fp32"].items():
            md.append(f"| {k} | {f(v)} | {f(r['metrics']['int8'].get(k))} | {r['floors'].get(k, '')} |")
        if not r["metrics"]["int8"]:
            md.append("\n(no INT8 form: " + r["int8"]["note"] + ")")
    else:
        md.append(
            "No test set (a folder of good images only): no AUROC; the threshold rests on the good images."
        )
    (workdir / "report.md").write_text("\n".join(md) + "\n")
