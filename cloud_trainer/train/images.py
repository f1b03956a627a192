"""Image datasets from the user's own folders: ``cloud-trainer dataset import --kind images``.

Two layouts are recognised (``layout_of``):

- **folder per class**: ``SRC/<class>/*.png`` (any class names; images in subfolders of a class folder
  belong to it, hidden folders and those systems add (``SYSTEM_FOLDERS``: ``__MACOSX``, ``@eaDir``,
  ``$RECYCLE.BIN``, ...) skipped, symlinked folders not followed but named in a note: a symlinked class folder is
  refused, naming it, since a link such as ``SRC/all -> SRC`` would otherwise become a class holding every
  image). The good class is the one named by
  ``--good``, else the one conventionally named ``ok``, ``good``, ``pass``, ``okay``, ``normal`` or
  ``nominal`` (said on stderr); every other folder is a defect class.
- **MVTec AD**: ``SRC/train/good``, ``SRC/test/good``, ``SRC/test/<defect>`` and optionally
  ``SRC/ground_truth/<defect>/<name>_mask.png`` (a defect's pixel mask); the good class is ``good``. As
  in the other layout, images in subfolders of these folders belong to them (``test/dent/day2/005.png``),
  and a mask sits at the same place below ``ground_truth`` (``ground_truth/dent/day2/005_mask.png``).

PNG, JPEG, BMP, TIFF, WebP and PNM (.pgm, .ppm, .pbm, .pnm) files are read, as the agent's folder camera reads
them (8-bit grey or colour; 16-bit with ``--pixel-bits``, stored as 8-bit PNG the way the agent's camera reads them; any size up to ``--max-megapixels``, default 25: the agent
camera's ``max_megapixels`` default, ``CAMERA_MAX_MEGAPIXELS``, and ``model-packager build --input-images``'s,
so that an image imported is one the camera reads and the package's statistics take; checked from the
file's header before decoding); every one is decoded once on import, so an
unreadable or damaged file is refused then, naming it, not half-way through a training run (a JPEG cut
short or with coded data missing, a PNG cut short or failing its CRC, a TIFF whose strips point at its header
or at each other: ``read_image_file``, the checks the agent's camera makes before it passes a frame on). The result is a dataset folder
that ``train``/``build`` read: ``images/`` (the files, copied unchanged but for 16-bit ones), ``masks/``,
``labels.jsonl`` (``{id, file, label, defect, split, source[, mask]}``) and ``dataset.yaml``
(``classes`` with the good class first, ``good``, counts, ``digest``: the same digest
``data.load_parts`` computes). It is written into a temporary folder beside ``--out`` and renamed
into place at the end: on any error nothing is left behind (nor on SIGTERM or SIGHUP, in the command).

Files nobody here made are read by stated rules (docs/trainer.md, "Train on your own images"): what the
agent's camera never delivers is refused, not guessed (transparent pixels, a multi-page TIFF, a TIFF that
opens with a preview); so are a mask that contradicts its image, one image in two classes, images in no
class folder, a link or folder that cannot be read, a link (to an image, a mask or a folder) leading out of the
source folder (``_no_links_out``); files of other kinds and symlinked folders are left
out with a note. The EXIF orientation is applied here as in training and at the agent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, NoReturn, Protocol, TypeVar

from cloud_trainer.train.data import (
    CAMERA_MAX_MEGAPIXELS,
    DatasetError,
    decode_checked,
    digest_camera,
    digest_part,
    link_out,
    not_a,
    path_text,
    read_image_file,
    within,
)
from protocols.image_header import (
    BAYER_PATTERNS,
    IMAGE_TYPES,
    KIND_SUFFIXES,
    SNIFF_BYTES,
    exif_orientation,
    image_kind,
    kind_suffix,
)

_T = TypeVar("_T")

# .jfif: Windows's JPEG; .webp as the agent's folder camera reads it (devices.camera.capture.IMAGE_SUFFIXES)
IMAGE_EXTS = tuple(IMAGE_TYPES)
IMAGE_KINDS = frozenset(fmt for _, fmt in IMAGE_TYPES.values())  # the kinds read (image_kind tells GIF too)
# CAMERA_MAX_MEGAPIXELS (cloud_trainer.train.data): the import's default, training's for a dataset recording none
GOOD_NAMES = ("ok", "good", "pass", "okay", "normal", "nominal")
MIN_GOOD = {"classifier": 20, "anomaly": 20}  # AWS Lookout for Vision's floor: 20 normal images
MIN_DEFECT = 2  # per defect class: at least one for validation and one for training
PROGRESS_S = (
    15.0  # a progress line this often: 5,000 5-MP photos take ~11 minutes, a silent terminal looks hung
)


# folders that operating systems and NAS boxes add to a copy of the user's folders, never part images:
# a Mac's zip (__MACOSX/, AppleDouble ._ files), a Windows drive's recycle bin and system folder, a
# Synology NAS's thumbnails (@eaDir/<image>/SYNOPHOTO_THUMB_*.jpg: JPEGs) and recycle bin, ext4's
# lost+found; compared in lower case. Hidden folders (a leading dot) are skipped too.
SYSTEM_FOLDERS = frozenset(
    {"__macosx", "@eadir", "#recycle", "#snapshot", "$recycle.bin", "system volume information", "lost+found"}
)


# files that operating systems leave in image folders: left out without a mention
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"})


def is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def _skipped(name: str) -> bool:
    """A hidden or system folder (``SYSTEM_FOLDERS``), not one of the user's."""
    return name.startswith(".") or name.lower() in SYSTEM_FOLDERS


skipped_folder = _skipped  # for the anomaly family's reading of a folder: the same folders skipped


def holds_images(src: Path) -> bool:
    """Whether a folder holds image files somewhere below it (the import's ``--kind`` default)."""
    for root, dirs, files in os.walk(src, followlinks=False):
        dirs[:] = [d for d in dirs if not _skipped(d)]
        if any(is_image(Path(root) / f) for f in files):
            return True
    return False


@dataclass
class _Item:
    path: Path
    label: str
    split: str | None = None
    mask: Path | None = None


@dataclass
class Found:
    layout: str  # "folders" | "mvtec"
    good: str
    classes: list[str]  # the good class first
    items: list[_Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _images_in(folder: Path, nested: bool = False) -> list[Path]:
    """Image files in ``folder``; ``nested``: also in its subfolders (a class's archive kept by day, camera
    or shift), hidden and system folders skipped and symlinked folders not followed (no loops). A link
    named as an image that leads nowhere is refused: skipped, the class would be an image short unsaid."""
    if not nested:
        return sorted(p for p in folder.iterdir() if _image_file(p))
    found = []
    for root, dirs, files in os.walk(folder, onerror=_unlistable, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        found += [p for p in (Path(root) / f for f in files) if _image_file(p)]
    return sorted(found)


def images_in_subfolders(folder: Path) -> list[Path]:
    """The images in the subfolders of ``folder``, found as the import finds a class's (hidden and system
    folders skipped, links to folders not followed): for a reader of one folder's own images, which reads none
    of them (the anomaly family given a folder). A link named as an image that leads nowhere raises
    ``DatasetError`` with its ``path``, to be refused as a link out when it leads out."""
    return [p for p in _images_in(folder, nested=True) if p.parent != folder]


def _unlistable(exc: OSError) -> NoReturn:
    """A folder below the source that cannot be listed (another user's permissions on a share): refused,
    since skipped (``os.walk``'s default) its images would be missing from their class unsaid."""
    raise DatasetError(
        f"{exc.filename}: cannot be listed ({exc.strerror or exc}); let the importing user read it, or move it "
        "out of the source"
    )


class _DanglingLink(DatasetError):
    """A link named as an image that leads nowhere (``path``); ``_scan`` refuses it as a link out instead when
    it leads out of the source, so that whether another tenant's file exists is not said."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def _image_file(p: Path) -> bool:
    if is_image(p):
        return True
    if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_symlink() and not p.exists():
        raise _DanglingLink(
            f"{p}: a link to {os.readlink(p)}, which does not exist (or links back to itself); copy the "
            "image in, or remove the link",
            p,
        )
    return False


def _subfolders(folder: Path) -> list[Path]:
    """The folders in ``folder`` (classes, splits), hidden ones skipped. A symlinked one is refused rather
    than followed or skipped: a link back up (``SRC/all -> SRC``) would be a class of every image, and one
    skipped quietly would be a class missing from the model."""
    found = []
    for p in sorted(folder.iterdir()):
        if _skipped(p.name) or not p.is_dir():
            continue
        if p.is_symlink():
            raise DatasetError(
                f"{p}: a symlinked folder (-> {os.readlink(p)}); symlinked folders are not followed "
                "(a link back into the dataset would count its images again): copy the folder in, or "
                "remove the link"
            )
        found.append(p)
    return found


def layout_of(src: Path) -> str:
    if (src / "train" / "good").is_dir() or ((src / "test").is_dir() and (src / "test" / "good").is_dir()):
        return "mvtec"
    return "folders"


def _mvtec_in_other_case(src: Path) -> None:
    """An MVTec AD folder whose folders are named in another case (`Train/Good`, `Test/`, `Ground_Truth/`: one
    folder each on Windows, where such names are typed) is refused naming them: read as a folder per class,
    `--good Train` imported every split as one class, masks among the images; `test/Good` beside `train/good` was
    told to be merged with it."""

    def folders(at: Path) -> list[Path]:  # links not followed here: the scan says what they are
        return sorted(p for p in at.iterdir() if not _skipped(p.name) and p.is_dir() and not p.is_symlink())

    splits = {
        p.name.casefold(): p for p in folders(src) if p.name.casefold() in ("train", "test", "ground_truth")
    }
    goods = {
        key: [c for c in folders(splits[key]) if c.name.casefold() == "good"]
        for key in ("train", "test")
        if key in splits
    }
    if not any(goods.values()):
        return
    wrong = [p.name for key, p in sorted(splits.items()) if p.name != key]
    wrong += [f"{splits[k].name}/{c.name}" for k, cs in sorted(goods.items()) for c in cs if c.name != "good"]
    if wrong:
        raise DatasetError(
            f"{src}: an MVTec AD folder with {', '.join(repr(n) for n in sorted(wrong))} named in another case than "
            "the layout's train/, test/, good/ and ground_truth/ (one folder each on Windows): rename "
            f"{'them' if len(wrong) > 1 else 'it'} in lower case"
        )


def _no_loose_images(folder: Path, what: str) -> None:
    """Images lying in ``folder`` itself belong to no class: refused, since left out they would make a
    dataset other than the one the user sees."""
    loose = _images_in(folder)
    if loose:
        n = len(loose)
        names = ", ".join(p.name for p in loose[:3]) + (", ..." if n > 3 else "")
        raise DatasetError(
            f"{folder}: {n} image{'s' if n > 1 else ''} in no class folder ({names}); move "
            f"{'each' if n > 1 else 'it'} into {what}, or remove {'them' if n > 1 else 'it'}"
        )


def _left_out(src: Path, items: list[_Item]) -> list[str]:
    """Notes naming what below ``src`` is not read: files that are not images of the kinds read (an
    iPhone's .heic, a .gif, a text file), symlinked folders and images in hidden folders or files (a
    leading dot), so that a class smaller than its folder, or missing, is said; system files and folders
    (``SYSTEM_FOLDERS``, ``SYSTEM_FILES``, AppleDouble ``._`` files) are not mentioned. What ``items`` (the
    scan's) read through a link inside the source is not said unread: MVTec's ``train -> .alt/train``, or
    ``ok/z.png -> ../.pool/z.png``, were said "not followed" and "not read" though they were imported."""
    # the scan's paths as it listed them, and where they lead: a link one passes through was followed, and
    # a hidden folder's image one leads to was read
    listed = [p for it in items for p in (it.path, it.mask) if p is not None]
    read_real = {os.path.realpath(p) for p in listed}
    other, links, hidden = [], [], []
    for root, dirs, files in os.walk(src, onerror=_unlistable, followlinks=False):
        # a folder named with a leading dot (`..scratch`, `.dent`) holding images: hidden, so skipped, but
        # said; a Mac's AppleDouble files (`._x.png`) are no images and stay unsaid
        hidden += [
            (Path(root, d).relative_to(src).as_posix() + "/", n)
            for d in sorted(dirs)
            if d.startswith(".")
            and not _system_hidden(d)
            and not os.path.islink(Path(root, d))
            and (n := _images_below(Path(root, d)) - _read_below(Path(root, d), read_real)) > 0
        ]
        hidden += [
            (Path(root, f).relative_to(src).as_posix(), 1)
            for f in sorted(files)
            if f.startswith(".") and not f.startswith("._") and Path(f).suffix.lower() in IMAGE_EXTS
        ]
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        links += [
            Path(root, d)
            for d in dirs
            if os.path.islink(Path(root, d)) and not any(p.is_relative_to(Path(root, d)) for p in listed)
        ]
        other += [
            Path(root, f).relative_to(src).as_posix()
            for f in sorted(files)
            if not f.startswith(".")
            and f.lower() not in SYSTEM_FILES
            and Path(f).suffix.lower() not in IMAGE_EXTS
        ]
    notes = []
    if links:  # inside a class (a class folder that is a link is refused): its images are not read
        shown = ", ".join(f"{p.relative_to(src).as_posix()} -> {os.readlink(p)}" for p in links[:3])
        notes.append(
            f"symlinked folder{'s' if len(links) > 1 else ''} not followed, {'their' if len(links) > 1 else 'its'}"
            f" images not read: {shown}{', ...' if len(links) > 3 else ''} (copy the folder in to use them)"
        )
    if hidden:
        n = sum(k for _, k in hidden)
        shown = ", ".join(
            f"{name} ({k} image{'s' if k > 1 else ''})" if name.endswith("/") else name
            for name, k in hidden[:3]
        )
        notes.append(
            f"not read: {n} image{'s' if n > 1 else ''} in hidden folders or files (a name beginning with a dot): "
            f"{shown}{', ...' if len(hidden) > 3 else ''}; rename {'them' if len(hidden) > 1 else 'it'} without "
            "the dot if they belong to the dataset"
        )
    # files named otherwise that are images by their first bytes (a line camera's 'img_0001' without an
    # extension, 'part.PNG ' with a space after it, a PGM saved as 'frame.raw'): said apart, with how to import
    # them; a GIF (no kind a camera sends, and not read) with what to save it as
    # (only inside the source: a link out, 'ok/notes -> /srv/tenants/b/x.png', is not read to say what it is)
    root = os.path.realpath(src)
    by_content = [
        (name, *found)
        for name in other
        if within(os.path.realpath(src / name), root) and (found := _image_kind(src / name))
    ]
    if by_content:
        named = {name for name, _, _ in by_content}
        other = [name for name in other if name not in named]
    read = [(name, kind, suffix) for name, kind, suffix in by_content if kind in IMAGE_KINDS]
    if read:
        n = len(read)
        shown = ", ".join(f"{name!r} ({kind})" for name, kind, _ in read[:3]) + (", ..." if n > 3 else "")
        order = list(KIND_SUFFIXES)
        forms = sorted({(order.index(k), x, x[1:].upper() if k == "PNM" else k) for _, k, x in read})
        exts = ", ".join(f"{x} for {form}" for _, x, form in forms)  # a PNM's by its form: PBM, PGM, PPM
        notes.append(
            f"left out {n} file{'s' if n > 1 else ''} that {'are images' if n > 1 else 'is an image'} by "
            f"content but not by name (no extension, or another): {shown}; give "
            f"{'each' if n > 1 else 'it'} its extension ({exts}) to import {'them' if n > 1 else 'it'}"
        )
    if unread := [name for name, kind, _ in by_content if kind not in IMAGE_KINDS]:
        n = len(unread)
        notes.append(
            f"left out {n} GIF image{'s' if n > 1 else ''}, a kind not read (PNG, JPEG, BMP, TIFF, WebP or PNM "
            f"{'are' if n > 1 else 'is'}): {', '.join(unread[:3])}{', ...' if n > 3 else ''}; save "
            f"{'them' if n > 1 else 'it'} as PNG to import {'them' if n > 1 else 'it'}"
        )
    if other:
        n = len(other)
        notes.append(
            f"left out {n} file{'s' if n > 1 else ''} that {'are' if n > 1 else 'is'} not a PNG, JPEG, BMP, "
            f"TIFF, WebP or PNM image by {'their names' if n > 1 else 'its name'}: {', '.join(other[:3])}"
            + (", ..." if n > 3 else "")
        )
    return notes


def _image_kind(path: Path) -> tuple[str, str] | None:
    """``(kind, usual extension)`` of the image a file is by its first bytes (``image_kind``, ``kind_suffix``:
    a PNM's by its magic), or None (not one, or unreadable: said elsewhere if it matters)."""
    try:  # a regular file only: opening a named pipe (a tool's FIFO in the folder) waits for a writer for ever
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            head = f.read(SNIFF_BYTES)
    except OSError:
        return None
    kind, suffix = image_kind(head), kind_suffix(head)
    return None if kind is None or suffix is None else (kind, suffix)


# hidden folders that systems keep on a drive or in a folder (a Mac's, Linux desktops' trash and
# thumbnails): left out unsaid like SYSTEM_FOLDERS; compared in lower case, '.trash-1000' by its start
SYSTEM_HIDDEN = frozenset(
    {".trashes", ".spotlight-v100", ".fseventsd", ".temporaryitems", ".documentrevisions-v100", ".thumbnails"}
)


def _system_hidden(name: str) -> bool:
    low = name.lower()
    return low in SYSTEM_HIDDEN or low.startswith(".trash")


def _read_below(folder: Path, read_real: set[str]) -> int:
    """How many of the files the scan read (``read_real``, their real paths) lie in ``folder`` or below it."""
    top = os.path.realpath(folder)
    return sum(within(r, top) for r in read_real)


def _images_below(folder: Path) -> int:
    """How many files named as images lie in ``folder`` or below it (links not followed; what cannot be
    listed is not counted: the folder is not read anyway)."""
    n = 0
    for _root, _dirs, files in os.walk(folder, followlinks=False):
        n += sum(Path(f).suffix.lower() in IMAGE_EXTS for f in files)
    return n


def _class_folder(folder: Path, label: str, nested: bool = False) -> list[Path]:
    files = _images_in(folder, nested)
    if not files:
        raise DatasetError(
            f"{folder}: class folder {label!r} holds no images ({', '.join(IMAGE_EXTS)})"
            + (" in it or its subfolders" if nested else "")
            + _unread_in(folder)
            + "; add images or remove the folder"
        )
    return files


def _unread_in(folder: Path) -> str:
    """What a class folder of no image read holds that is not read, for its refusal: images hidden by a leading dot
    (`.scratch01.png`, or in `.thumbs/`) and files of other kinds (an iPhone's `.HEIC`): "holds no images; add
    images" was all it said of a folder of them. System files and AppleDouble `._` files are not counted."""
    hidden, other = 0, []
    for root, dirs, names in os.walk(folder, onerror=_unlistable, followlinks=False):
        for f in sorted(names):
            if f.startswith("._") or f.lower() in SYSTEM_FILES or _system_hidden(f):
                continue
            if f.startswith("."):
                hidden += Path(f).suffix.lower() in IMAGE_EXTS
            elif Path(f).suffix.lower() not in IMAGE_EXTS:
                other.append(Path(root, f).relative_to(folder).as_posix())
        hidden += sum(
            _images_below(Path(root, d)) for d in dirs if d.startswith(".") and not _system_hidden(d)
        )
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
    said = ""
    if hidden:
        said += (
            f"; it holds {hidden} hidden image{'s' if hidden > 1 else ''} (a name beginning with a dot), not "
            f"read: rename {'them' if hidden > 1 else 'it'} without the dot to use {'them' if hidden > 1 else 'it'}"
        )
    if other:
        shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
        said += (
            f"; it holds {len(other)} file{'s' if len(other) > 1 else ''} of other kinds ({shown}), not read: save "
            f"{'them' if len(other) > 1 else 'it'} as PNG to use {'them' if len(other) > 1 else 'it'}"
        )
    return said


def scan_folders(src: Path, good: str | None) -> Found:
    classes = _subfolders(src)
    if not classes:
        raise DatasetError(
            f"{src}: no class folders; expected one folder per class (e.g. {src}/ok/, "
            f"{src}/scratch/) or the MVTec AD layout (train/good, test/<defect>)"
        )
    _no_loose_images(src, "its class's folder")
    for c in classes:
        _not_mvtec_inside(c, src)
    names = [c.name for c in classes]
    # the names first: two folders of one name written two ways (`ok/` and `OK/`) are what is wrong, not which
    # of them is good
    _refuse_bad_names(names, src)
    notes = []
    if good is None:
        conventional = [n for n in names if n.lower() in GOOD_NAMES]
        if len(conventional) != 1:
            raise DatasetError(
                f"{src}: cannot tell which class is good among {names}; name it with "
                f"--good CLASS (or call its folder one of {list(GOOD_NAMES)})"
            )
        good = conventional[0]
        notes.append(f"good class: {good!r} (by its name; --good to choose another)")
    elif good not in names:
        same = [n for n in names if _nfc(n) == _nfc(good)]  # typed one way, the folder named the other
        if len(same) != 1:
            raise DatasetError(f"--good {good!r}: {src} has no such class folder; its classes are {names}")
        good = same[0]
    items = [_Item(p, c.name) for c in classes for p in _class_folder(c, c.name, nested=True)]
    return Found("folders", good, [good, *[n for n in names if n != good]], items, notes)


def _not_mvtec_inside(folder: Path, src: Path) -> None:
    """A class folder holding an MVTec AD category (``train/good``, ``test/...``) is refused: that is a folder of
    categories (the MVTec AD archive as it unpacks, ``mvtec/bottle/``, ``mvtec/screw/``) given as the source,
    and read as a folder per class every category became one class of all its images, its test defects and its
    ground-truth masks among the good ones."""
    if layout_of(folder) == "mvtec":
        raise DatasetError(
            f"{folder}: class folder {folder.name!r} is itself an MVTec AD folder (train/good, test/<class>); "
            f"{src} is a folder of such folders, not a folder per class: import one of them "
            f"(cloud-trainer dataset import {folder} --out DIR)"
        )


def scan_mvtec(src: Path) -> Found:
    # a split folder linked out is refused before it is listed: listed, its refusals (images in no class
    # folder, a mask without an image) named another tenant's files
    for name in ("train", "test", "ground_truth"):
        _refuse_link_out(src / name, src)
    items: list[_Item] = []
    for split in ("train", "test"):
        if not (src / split).is_dir():
            continue
        _no_loose_images(src / split, f"{split}/good or {split}/<defect>")
        for c in _subfolders(src / split):
            if split == "train" and c.name != "good":
                raise DatasetError(
                    f"{c}: MVTec AD's train/ holds only good/ (defect images go in test/<defect>)"
                )
            # subfolders included, as in the folder-per-class layout (test/dent/day2/*.png)
            items += [_Item(p, c.name, split) for p in _class_folder(c, f"{split}/{c.name}", nested=True)]
    # an image's mask is found by its place below its class folder: test/dent/day2/005.png has
    # ground_truth/dent/day2/005_mask.png
    by_stem = {
        (it.label, it.path.relative_to(src / "test" / it.label).with_suffix("").as_posix()): it
        for it in items
        if it.split == "test"
    }
    gt = src / "ground_truth"
    if gt.is_dir():
        _no_loose_images(gt, "ground_truth/<defect>")
        gts = _subfolders(gt)
        tests = {it.label for it in items if it.split == "test"}
        if said := masks_in_other_case(src, [d.name for d in gts], tests):
            raise DatasetError(said)
        for d in gts:
            for m in _images_in(d, nested=True):
                stem = (m.relative_to(d).parent / m.stem.removesuffix("_mask")).as_posix()
                it = by_stem.get((d.name, stem))
                if it is None:
                    raise DatasetError(
                        f"{m}: a mask without an image (expected {src}/test/{d.name}/{stem}.png or "
                        "another image extension); remove the mask or add its image"
                    )
                if it.mask is not None:  # 005.png and 005_mask.png: which one is meant cannot be told
                    raise DatasetError(
                        f"{gt}: two masks for {it.path}: {it.mask.relative_to(gt)} and {m.relative_to(gt)}; "
                        "keep one"
                    )
                it.mask = m
    defects = sorted({it.label for it in items} - {"good"})
    notes = []
    for other in sorted(src.iterdir()):  # MVTec AD 2's validation/ and test_public/: not this layout's
        if (
            other.name not in ("train", "test", "ground_truth")
            and not _skipped(other.name)
            and other.is_dir()
            and not other.is_symlink()
        ):
            n = len(_images_in(other, nested=True))
            notes.append(
                f"{other}: not read ({n} image{'s' if n != 1 else ''}); an MVTec AD folder's images are in "
                "train/good, test/<class> and ground_truth/<defect>: move them there to use them"
            )
    return Found("mvtec", "good", ["good", *defects], items, notes)


def masks_in_other_case(src: Path, masks: Iterable[str], tests: Iterable[str]) -> str | None:
    """The refusal of a ``ground_truth/<defect>`` folder (of the names ``masks``) named as a ``test/`` folder (of the
    names ``tests``) only in another case (``ground_truth/Scratch`` beside ``test/scratch``: one folder each on
    Windows, where such a layout is made), or None: its masks matched no image, and the refusal said a mask had no
    image (expected test/Scratch/...) beside that very image."""
    names = set(tests)
    for label in sorted(set(masks) - names):
        same = sorted(n for n in names if n.casefold() == label.casefold())
        if same:
            return (
                f"{src / 'ground_truth' / label}: its masks' images would lie in test/{label}, but that folder is "
                f"test/{same[0]} (the names differ in case only: one folder on Windows, two here), so no mask is "
                f"matched to its image; rename it ground_truth/{same[0]}"
            )
    return None


def scan(src: Path, good: str | None = None) -> Found:
    src = Path(src)
    if not src.is_dir():
        raise DatasetError(not_a(src, "folder"))
    try:
        return _scan(src, good)
    except OSError as exc:  # a folder listed with iterdir: as _unlistable says it
        _unlistable(exc)


def _scan(src: Path, good: str | None) -> Found:
    try:
        _mvtec_in_other_case(src)
        if layout_of(src) == "mvtec":
            if good not in (None, "good"):
                raise DatasetError(f"--good {good!r}: an MVTec AD layout's good class is 'good'")
            found = _class_names(scan_mvtec(src), src)
        else:
            found = _class_names(scan_folders(src, good), src)
    except _DanglingLink as exc:
        _refuse_link_out(exc.path, src)  # one leading out: said so, as one whose target is there is
        raise
    _no_links_out(found, src)
    found.notes += _left_out(src, found.items)
    return found


def _no_links_out(found: Found, src: Path) -> None:
    """Every image and mask to import must lie inside ``src`` once its links are followed. A link to an image
    (``ok/042.png -> /srv/tenants/b/042.png``) or to a folder (MVTec's ``train -> /etc``) that leads out
    was read through: an import on a shared trainer would copy files of another factory, or of the system,
    into a dataset. Refused before anything is written, naming the link and what it holds (not where it
    leads once resolved, nor what is there: another tenant's tree); links that stay inside the source keep
    working."""
    for it in found.items:
        for path in (it.path, it.mask):
            if path is not None:
                _refuse_link_out(path, src)


def _refuse_link_out(path: Path, src: Path) -> None:
    """``DatasetError`` naming the link on the way to ``path`` that leads out of ``src``, if any, by its own
    text (``_no_links_out``)."""
    if (out := link_out(path, src)) is not None:
        cur, shown = out
        raise DatasetError(
            f"{cur}: a link to {shown}, outside the source {src}; an import reads only "
            "what lies inside its source: copy the file or folder in, or remove the link"
        )


def _nfc(name: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFC", name)


def _class_names(found: Found, src: Path) -> Found:
    """Class names as a config can name them: one line of text, in Unicode's composed form (NFC). A folder
    made on macOS names "défaut" with a separate accent (NFD): taken as it is, a label typed in a config
    would look the same and never match. Two folders whose names differ only so are one class written two
    ways, and a name with a control character (a newline) would break every line that names it."""
    _refuse_bad_names(found.classes, src)
    found.good = _nfc(found.good)
    found.classes = [_nfc(c) for c in found.classes]
    for it in found.items:
        it.label = _nfc(it.label)
    return found


def _refuse_bad_names(names: list[str], src: Path) -> None:
    """``_class_names``'s refusals, each naming the folder."""
    seen: dict[str, str] = {}
    cased: dict[str, str] = {}
    for name in names:
        if any(0xDC80 <= ord(c) <= 0xDCFF for c in name):  # bytes that are not UTF-8, kept by surrogateescape
            raise DatasetError(
                f"{src}: class folder '{name}' holds a byte that is not UTF-8 (a name written by an older "
                "system's code page); rename it: its name becomes the label that configs and results name"
            )
        if not name.isprintable():
            raise DatasetError(
                f"{src}: class folder {name!r} holds a control character (a newline, a tab); rename it: "
                "its name becomes the label that configs and results name"
            )
        if name != name.strip():
            raise DatasetError(
                f"{src}: class folder {name!r} begins or ends with a space; rename it to {name.strip()!r}: "
                "its name becomes the label that configs and results name, and it would print the same"
            )
        if (key := _nfc(name)) in seen:
            raise DatasetError(
                f"{src}: class folders {seen[key]!r} and {name!r} are one name written two ways (Unicode's "
                "composed and decomposed accents); merge them into one folder"
            )
        seen[key] = name
        if (folded := key.casefold()) in cased:
            raise DatasetError(
                f"{src}: class folders {cased[folded]!r} and {name!r} differ only in upper and lower case: one "
                "name written two ways (copied to Windows or a Mac they are one folder); merge them into one"
            )
        cased[folded] = name


def check(
    found: Found, src: Path, task: str = "classifier", min_good: int | None = None, after: str = ""
) -> None:
    """Enough images of each class; ``after``: what was left out before counting (said with a refusal)."""
    try:
        _check(found, src, task, min_good)
    except DatasetError as exc:
        if not after:
            raise
        raise DatasetError(f"{exc} ({after})") from None


FEW_DEFECT = 10  # fewer in a defect class: said at import (the gate's test split gets one or two of them)


def _few_defects_note(counts: dict[str, int], good: str, task: str) -> str | None:
    few = {c: n for c, n in counts.items() if c != good and n < FEW_DEFECT}
    if task != "classifier" or not few:
        return None
    shown = ", ".join(f"{c!r} ({n})" for c, n in few.items())
    return (
        f"few images in defect class{'es' if len(few) > 1 else ''} {shown} beside {counts.get(good, 0)} good "
        "ones: the build keeps about 15 % of each class for the gate's test split, so its NG figures rest on "
        "one or two of them"
        + (
            " (with fewer than 3 defect images in all it may get none, and its NG recall then reads 0)"
            if sum(n for c, n in counts.items() if c != good) < 3
            else ""
        )
        + "; 20 or more a defect class give figures to trust"
    )


def _check(found: Found, src: Path, task: str, min_good: int | None) -> None:
    counts = {c: 0 for c in found.classes}
    for it in found.items:
        counts[it.label] += 1
    need = MIN_GOOD[task] if min_good is None else min_good
    if counts.get(found.good, 0) < need:
        raise DatasetError(
            f"{src}: {counts.get(found.good, 0)} good images ({found.good!r}); at least {need} are "
            f"needed (add {need - counts.get(found.good, 0)} more)"
        )
    if task == "classifier":
        if len(found.classes) < 2:
            raise DatasetError(
                f"{src}: a single class {found.classes}; a classifier needs the good class and at "
                "least one defect class (or use an anomaly model, trained on good images only)"
            )
        few = [c for c in found.classes[1:] if counts[c] < MIN_DEFECT]
        if few:
            raise DatasetError(
                f"{src}: defect class(es) {few} have fewer than {MIN_DEFECT} images; add images "
                "or remove the folder"
            )


def _decode(
    path: Path,
    max_megapixels: float,
    pixel_bits: int | None = None,
    mask: bool = False,
    bayer: str | None = None,
    src: Path | None = None,
):
    """``(bytes to store, image, suffix to store them under or None: the file's own)``; with ``bayer``, a
    colour camera's raw mosaic demosaiced (after ``pixel_bits``) as the agent's camera does, stored as PNG.
    ``src``: the source folder the file was checked to lie in (``_no_links_out``), checked again once it is
    open: one replaced by a link out in between is refused, not stored in the dataset."""
    import cv2
    import numpy as np

    from protocols.image_header import ImageRejected, demosaic, eight_bit, exif_orientation

    # any depth (to see 16-bit images) and any colour, with the EXIF orientation applied as training
    # (IMREAD_COLOR) and the agent's folder camera apply it, so that a mask drawn on the image the user
    # sees is checked against the same pixels (IMREAD_UNCHANGED would ignore the orientation); a raw mosaic
    # as stored, turned after demosaicing (turned before, its pattern shifts: a red part turns green)
    raw = bayer is not None and not mask
    data, img = read_image_file(
        path,
        cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR | (cv2.IMREAD_IGNORE_ORIENTATION if raw else 0),
        max_megapixels,
        inside=None if src is None else (src, "the source"),
    )
    # a TIFF of several pages, or with a preview first, is refused by read_image_file (decode_image)
    if not mask:
        refuse_transparency(path, data)
    if img.ndim == 2 and not mask and not raw:
        # grey by the any-colour read: checked against the colour read training and the agent's camera make. A
        # decoder may call a colour file grey by its header (OpenCV does a 24-bit OS/2 BMP's): the copies and
        # flat-image checks then judged a grey image training never sees, and one photo saved as PNG in one
        # class and as such a BMP in another was not found in both. A grey file reads the same both ways
        colour = decode_checked(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR, max_megapixels)
        if not (
            np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 1], colour[..., 2])
        ):
            img = colour
    if img.dtype == np.uint8 and (bayer is None or mask):
        return data, img, None
    if mask:
        raise DatasetError(f"{path}: {img.dtype} pixels; a mask is an 8-bit image (0: good, other: defect)")
    try:  # a machine-vision camera's 10-16-bit pixels, as the agent's camera reads them (pixel_bits)
        img = eight_bit(img, pixel_bits, "--pixel-bits")
    except ImageRejected as exc:
        fix = (
            ""
            if img.dtype == np.uint16  # the message says to give --pixel-bits
            else " (measurements or an analysis tool's export, not a camera's frame): save it as an 8-bit "
            "image scaled to 0-255 as your camera delivers it, or remove it"
        )
        raise DatasetError(f"{path}: {exc}{fix}") from None
    if bayer is not None:  # a colour camera's raw mosaic, as the agent's camera reads it (bayer)
        try:
            img = demosaic(img, bayer, "--bayer", exif_orientation(data))
        except ImageRejected as exc:
            raise DatasetError(f"{path}: {exc}") from None
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise DatasetError(f"{path}: its 8-bit form could not be written as PNG")
    return png.tobytes(), img, ".png"


def refuse_transparency(path: Path, data: bytes) -> None:
    """A PNG, TIFF or 32-bit BMP with transparent pixels (an alpha channel, or a PNG palette or colour made
    transparent by ``tRNS``) is refused: decoding drops the alpha, so the model would learn whatever colours
    are stored beneath it (often black), a background no camera shows; the agent's camera skips such a
    frame. An alpha channel opaque everywhere is fine. Only files whose header allows transparency are
    decoded again (``transparent_pixels``)."""
    from protocols.image_header import transparent_pixels

    clear, total = transparent_pixels(data)
    if clear:
        raise DatasetError(
            f"{path}: {clear} of its {total} pixels are transparent (an alpha channel, or a colour made "
            "transparent); a camera delivers none, and the model would learn the colours stored beneath them: "
            "flatten it onto the background your camera sees, or save it without transparency"
        )


def refuse_mask_beneath_clear(path: Path, data: bytes) -> None:
    """A mask with fully transparent pixels that are not black beneath is refused: a mask is read as grey, its
    alpha dropped (by the import and by training alike), so a labelling tool's export whose transparent
    background holds white (or whose defect is drawn in the alpha alone) would mark every background pixel a
    defect, which the mask's viewer shows as background. A transparent background that is black beneath reads
    the same either way and is taken. A grey PNG whose ``tRNS`` grey is transparent (read without alpha) alike:
    its pixels of that grey are the clear ones, refused unless the grey is black."""
    import cv2
    import numpy as np

    from protocols.image_header import png_key_colour, transparent_pixels

    clear = transparent_pixels(data)[0]
    if not clear:  # from the header alone for a mask without alpha
        return
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if full is None:
        return
    key = png_key_colour(data)
    if key is not None and len(key) == (1 if full.ndim == 2 else full.shape[2]):
        hidden = clear if any(key) else 0  # the clear pixels are those of the key colour
    elif full.ndim != 3 or full.shape[2] not in (2, 4):
        return
    else:
        hidden = int(np.count_nonzero((full[:, :, -1] == 0) & full[:, :, :-1].any(axis=2)))
    if hidden:
        raise DatasetError(
            f"{path}: {hidden} of its {full.shape[0] * full.shape[1]} pixels are transparent but not black "
            "beneath; a mask is read as grey without its alpha, so they would count as defect pixels: save "
            "the mask without transparency, 0 (black) for good pixels and 255 for the defect's"
        )


def import_images(
    src: Path,
    out: Path,
    good: str | None = None,
    task: str = "classifier",
    min_good: int | None = None,
    log=None,
    max_megapixels: float = CAMERA_MAX_MEGAPIXELS,
    pixel_bits: int | None = None,
    progress_s: float = PROGRESS_S,
    bayer: str | None = None,
    camera_size: tuple[int, int] | None = None,
) -> dict:
    """``src`` (folder per class or MVTec AD) → a dataset folder ``out``; returns a summary; every
    ``progress_s`` seconds of reading, a line says how far it is. An image
    whose header declares more than ``max_megapixels`` is refused before it is decoded; the limit is
    recorded in ``dataset.yaml`` for the trainer's reading of the same files. 16-bit images are stored as
    8-bit PNG by ``pixel_bits`` (the bits that carry the image), and a colour camera's raw (Bayer) images
    demosaiced by ``bayer`` and stored as PNG, as the agent's camera reads them. ``camera_size``: the
    (width, height) of the camera the images were taken with where they were resized since (a dataset squashed
    to a square), recorded in ``dataset.yaml``: the builds take it as the camera of each image that names none
    (``data.dataset_camera_size``)."""
    if not max_megapixels > 0:
        raise DatasetError(f"--max-megapixels must be a positive number of megapixels, got {max_megapixels}")
    if pixel_bits is not None and not 8 <= pixel_bits <= 16:
        raise DatasetError(f"--pixel-bits must be 8 to 16 (12 for a Mono12 camera), got {pixel_bits}")
    if bayer is not None and bayer not in BAYER_PATTERNS:
        raise DatasetError(
            f"--bayer must be one of {', '.join(BAYER_PATTERNS)} (BayerRG8: rggb), got {bayer!r}"
        )
    if log is None:  # file names in the notes on one line, escapes shown, not obeyed (as in refusals)
        from cloud_trainer.train.cli import one_line

        log = lambda m: print(one_line(m), file=sys.stderr)  # noqa: E731
    src, out = Path(src), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} exists and is not empty; choose a new dataset folder")
    if inside(out, src):  # the next import of src would take it for a class
        raise DatasetError(f"--out {out} is inside the source {src}; choose a folder outside it")
    if (src / "dataset.yaml").is_file() and (src / "labels.jsonl").is_file():
        raise DatasetError(
            f"{src}: already a dataset (dataset.yaml, labels.jsonl), not a folder of images to import; give it "
            f"to `cloud-trainer build --dataset {src}` as it is"
        )
    found = scan(src, good)
    check(found, src, task, min_good)
    for n in found.notes:
        log(f"dataset import: {n}")
    try:
        with new_dataset_folder(out, log) as tmp:
            progress = _Progress(len(found.items), progress_s, log)
            summary, copies, shapes, flat, misnamed, lossy, turned, named, bulky = _write(
                found, src, tmp, max_megapixels, pixel_bits, progress, bayer, camera_size
            )
            if copies:  # left out: the classes must still hold enough images without them
                left = {id(a) for a, _ in copies}
                check(
                    Found(
                        found.layout,
                        found.good,
                        found.classes,
                        [it for it in found.items if id(it) not in left],
                    ),
                    src,
                    task,
                    min_good,
                    after=copies_note(copies, src),
                )
                log(f"dataset import: {copies_note(copies, src)}")
        for note in (
            _misnamed_note(misnamed),
            _odd_sizes_note(shapes),
            _camera_unknown_note(shapes, camera_size is not None or named > 0),
            _flat_note(flat),
            _bulky_note(bulky),
            _lossy_masks_note(lossy),
            _turned_masks_note(turned),
            _mask_like_note(found, src),
            _few_defects_note(summary["counts"], found.good, task),
        ):
            if note:
                log(f"dataset import: {note}")
    except (
        OSError
    ) as exc:  # a full disk, a folder that may not be written: one line, nothing left half-written
        raise DatasetError(
            f"{out}: the dataset could not be written ({exc.strerror or exc}: {exc.filename})"
        ) from None
    return {**summary, "out": str(out)}


@contextlib.contextmanager
def new_dataset_folder(out: Path, log) -> Iterator[Path]:
    """A hidden folder beside ``out`` (absent or empty: checked by the caller) to write a dataset into, renamed to
    ``out`` when the block ends and removed when it raises (a full disk, a refusal, a stop signal): nothing is
    left half-written. Made as any folder is (mkdtemp's would keep its owner-only mode after the rename: a
    trainer running as another user could not read the dataset); what killed imports left is removed first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out, log)
    tmp = out.parent / f".{out.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    held: int | None = None  # locked while written: an import whose process number means nothing here sees it
    try:  # made inside: a stop signal handled the moment mkdir returns still removes it
        tmp.mkdir()
        held = _lock(tmp)
        yield tmp
        if out.exists():
            out.rmdir()  # empty (checked before)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if held is not None:
            os.close(held)


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (there or not) is ``folder`` or below it, however either is spelled: a symlink, a relative
    path, or (compared as files, not names) another mount of the same folder (a bind mount, a share mounted
    twice) or another case on a file system that ignores it, which the resolved names did not tell."""
    path = Path(path).resolve()
    if path.is_relative_to(Path(folder).resolve()):
        return True
    try:
        that = os.stat(folder)
    except OSError:
        return False
    if not that.st_ino:  # a file system numbering no folder (some on Windows): the names alone tell
        return False
    for p in (path, *path.parents):
        try:
            if os.path.samestat(os.stat(p), that):
                return True
        except OSError:  # not there (yet)
            continue
    return False


def _host() -> str:
    import socket

    return socket.gethostname().replace("/", "_") or "host"


def _remove_stale(out: Path, log) -> None:
    """Remove the temporary folders that imports to ``out`` on this machine left when they were killed
    (SIGKILL, the kernel's out-of-memory killer, a power cut): hidden, never read, but each as large as the
    dataset, and a gateway re-importing every month would gather them. Only folders named for this host and
    a process that no longer runs: one of an import running now, or on another machine sharing the folder,
    is left alone."""
    import glob

    prefix, here = f".{out.name}.", _host()
    for p in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
        # .NAME.HOST.PID.RANDOM.tmp (HOST may hold dots)
        host, _, pid = p.name[len(prefix) : -len(".tmp")].rpartition(".")[0].rpartition(".")
        if host != here or not pid.isdigit() or not p.is_dir() or p.is_symlink():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # that process runs (an import now, or a process reusing the number): left alone
        except ProcessLookupError:
            pass
        except OSError:  # another user's process: it runs
            continue
        try:
            held = _lock(p)
        except BlockingIOError:  # written now by a process not seen here: another PID namespace (a container
            continue  # given this host's name, sharing the folder), whose process numbers mean nothing here
        shutil.rmtree(p, ignore_errors=True)
        if held is not None:
            os.close(held)
        log(f"dataset import: removed {p}, left by an import to {out} that was killed (process {pid})")


def _lock(folder: Path) -> int | None:
    """An exclusive lock on ``folder``, held until its descriptor is closed or the process ends, however (SIGKILL
    too); None where none is had (no flock: Windows; a file system refusing it). BlockingIOError: another process
    holds it."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    except OSError:
        os.close(fd)
        return None
    return fd


class _Progress:
    def __init__(self, total: int, every_s: float, log) -> None:
        import time

        self.total, self.every_s, self.log, self.clock = total, every_s, log, time.monotonic
        self.started = self.last = self.clock()

    def step(self, done: int) -> None:
        now = self.clock()
        if now - self.last >= self.every_s and done < self.total:
            self.last = now
            left = (now - self.started) / done * (self.total - done)
            eta = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
            self.log(
                f"dataset import: {done} of {self.total} images read ({100 * done // self.total} %), "
                f"about {eta} left"
            )


def _write(
    found: Found,
    src: Path,
    dst: Path,
    max_megapixels: float,
    pixel_bits: int | None,
    progress: _Progress | None = None,
    bayer: str | None = None,
    camera_size: tuple[int, int] | None = None,
) -> tuple[
    dict,
    list[tuple[_Item, _Item]],
    list[tuple[str, int, int]],
    list[str],
    list[tuple[str, str]],
    list[tuple[str, int, int]],
    list[tuple[str, int]],
    int,
    list[tuple[str, int, int, int]],
]:
    """The dataset folder's files in ``dst``; (its summary, the copies left out: (copy, the image kept), each
    image's (source, height, width), the images of one colour, the images of another kind than their
    extension says: (source, kind), stored under their kind's extension, the JPEG masks with faint pixels:
    (source, faint pixels, marked pixels), the images with a mask turned by their EXIF orientation: (source,
    orientation), how many images name their camera: an agent's samples, the files far larger than their pixels
    need: (source, bytes, height, width))."""
    import numpy as np
    import yaml

    from protocols.sample_camera import camera_size as named_camera

    (dst / "images").mkdir()
    (dst / "masks").mkdir()
    h = hashlib.sha256()  # as data.load_parts computes it, so `train` checks the same digest
    counts = dict.fromkeys(found.classes, 0)
    sizes: set[tuple[int, ...]] = set()
    # images by their pixels (a PNG saved again as BMP or TIFF is the same image): the items that had them
    first: SamePixels[_Item] = SamePixels(
        lambda o: _decode(o.path, max_megapixels, pixel_bits, bayer=bayer)[1]
    )
    copies: list[tuple[_Item, _Item]] = []  # (left out, the image it repeats) within one class
    shapes: list[tuple[str, int, int]] = []  # (source, height, width) of each image written
    flat: list[str] = []  # images of one colour: a covered lens, a missed trigger, a blank export
    misnamed: list[tuple[str, str]] = []  # (source, kind): a JPEG named .png, read as what it is
    lossy: list[tuple[str, int, int]] = []  # JPEG masks: (source, faint pixels, marked pixels)
    turned: list[tuple[str, int]] = []  # images with a mask that their EXIF orientation turns: (source, tag)
    named = 0  # images naming their camera (an agent's samples: a PNG text chunk)
    bulky: list[tuple[str, int, int, int]] = []  # (source, bytes, height, width): files over _bulky_bytes
    k = 0
    with open(dst / "labels.jsonl", "w") as f:
        for done, it in enumerate(found.items):
            if progress is not None and done:
                progress.step(done)
            data, img, suffix = _decode(it.path, max_megapixels, pixel_bits, bayer=bayer, src=src)
            same = first.earlier(it, img)
            if same is None:
                same = it
            if same.label != it.label:  # one photo sorted into two classes: a good part and a defect at once
                raise DatasetError(in_two_classes(it.path, it.label, same.path, same.label, data))
            if same is not it:  # a copy in its own class: in training and in the gate's test at once
                copies.append((it, same))
                continue
            sizes.add(img.shape[:2])
            rel = it.path.relative_to(src).as_posix()
            shapes.append((rel, img.shape[0], img.shape[1]))
            named += named_camera(data) is not None
            if _flat(img):
                flat.append(rel)
            # the decoders read a file by its content, whatever its name: one of another kind than its
            # extension says (a JPEG saved as .png) is read as what it is, stored under its kind's extension
            kind = image_kind(data[:SNIFF_BYTES]) if suffix is None else None
            if kind is not None and it.path.suffix.lower() not in KIND_SUFFIXES[kind]:
                misnamed.append((rel, kind))
                suffix = kind_suffix(data[:SNIFF_BYTES])  # a PNM's by its magic: .pbm, .pgm or .ppm
            # the label is in labels.jsonl, not the file's name: a class name may be as long as a folder's
            name = f"images/{k:06d}{suffix or it.path.suffix.lower()}"
            (dst / name).write_bytes(data)
            if len(data) > _bulky_bytes(img.shape[0], img.shape[1]):
                bulky.append((rel, len(data), img.shape[0], img.shape[1]))
            row = {
                "id": f"{k:06d}",
                "file": name,
                "label": it.label,
                "defect": it.label != found.good,
                "source": path_text(rel),  # a name in bytes that are not UTF-8 as refusals print it
            }
            if it.split:
                row["split"] = it.split
            stored: bytes | None = None  # the mask's bytes as stored
            if it.mask is not None:
                mdata, mask, _ = _decode(it.mask, max_megapixels, mask=True, src=src)
                refuse_mask_beneath_clear(it.mask, mdata)
                if mask.ndim == 3:
                    # judged as grey, as training reads it: counted in colour, a class-index mask's (0, 0, 1)
                    # was a defect pixel here and good (grey 0) in training, an empty mask on a defect image;
                    # on a good image grey 0 is what it should read. The colour pixels are counted only for
                    # the refusal (for every mask, that count cost more than its grey decode)
                    colour, mask = mask, _grey_mask(it.mask, mdata, max_megapixels)
                    marked = colour.any(axis=2)
                    # some of them only (a class-index mask's (0, 0, 1) region beside brighter ones; not the fading
                    # edge of an anti-aliased or soft brush: ``_lost_beyond_edge``) imported, and trained, with fewer
                    # defect pixels than drawn. A JPEG mask's faint noise may vanish so (said as lossy):
                    # refused there only when every marked pixel does
                    gone = marked & (mask == 0)
                    coloured = int(np.count_nonzero(marked))
                    lost = _lost_beyond_edge(gone, mask, coloured, colour)
                    if (
                        it.label != found.good
                        and lost
                        and (lost == coloured or image_kind(mdata[:SNIFF_BYTES]) != "JPEG")
                    ):
                        said = (
                            f"its {coloured} marked pixels are all"
                            if lost == coloured
                            else (f"{lost} of its {coloured} marked pixels are")
                        )
                        raise DatasetError(
                            f"{it.mask}: {said} 0 once read as grey, as masks are read (0 good, anything else "
                            "defect): their colours are too dark, and training would take them as good; save the "
                            "mask as a grey image with the defect's pixels 255"
                        )
                if mask.shape[:2] != img.shape[:2]:
                    raise DatasetError(
                        f"{it.mask}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {it.path} is "
                        f"{img.shape[1]}x{img.shape[0]}; they must be the same size"
                    )
                _check_mask(it, mask, found.good)
                # the mask fits as shown; as stored, unseen where its size cannot tell (a turn by 90 degrees of a
                # non-square image would make a mask drawn on the stored pixels another size: refused above)
                orientation = exif_orientation(data)
                if orientation in (2, 3, 4) or (orientation > 4 and img.shape[0] == img.shape[1]):
                    turned.append((rel, orientation))
                if image_kind(mdata) == "JPEG" and (shades := _faint_pixels(mask))[0]:
                    lossy.append((it.mask.relative_to(src).as_posix(), *shades))
                mname = f"masks/{k:06d}.png"
                if it.mask.suffix.lower() == ".png":
                    # the bytes checked and decoded, not the file copied by its path again: replaced in
                    # between by a link out (the source is the user's), another factory's file was stored
                    stored = mdata
                else:
                    stored = _png(mask, dst / mname)
                (dst / mname).write_bytes(stored)
                row["mask"] = mname
            digest_part(h, data, it.label, stored)
            counts[it.label] += 1
            f.write(json.dumps(row) + "\n")
            k += 1
    digest_camera(h, camera_size)
    sizes_txt = sorted(f"{w}x{hh}" for hh, w in sizes)
    meta = {
        "kind": "parts",
        "imported_from": path_text(src),
        "layout": found.layout,
        "classes": found.classes,
        "good": found.good,
        "count": k,
        "counts": counts,
        "image_sizes": sizes_txt[:20],
        "max_megapixels": max_megapixels,
        "digest": "sha256:" + h.hexdigest(),
    }
    if pixel_bits is not None:  # 16-bit images were stored as 8-bit PNG by it: the camera's must match
        meta["pixel_bits"] = pixel_bits
    if bayer is not None:  # raw images were demosaiced by it: the camera's bayer must match
        meta["bayer"] = bayer
    if camera_size is not None:  # the camera of the images that name none (``data.dataset_camera_size``)
        meta["camera_size"] = list(camera_size)
    (dst / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return (
        {
            "layout": found.layout,
            "classes": found.classes,
            "good": found.good,
            "counts": counts,
            "digest": meta["digest"],
        },
        copies,
        shapes,
        flat,
        misnamed,
        lossy,
        turned,
        named,
        bulky,
    )


def _turned_masks_note(turned: list[tuple[str, int]]) -> str | None:
    """Images with a mask whose EXIF orientation turns (or mirrors) them: the mask is taken as drawn on the
    image as viewers show it (turned), as labelling tools that apply the tag draw it. One drawn by a tool that
    ignores the tag (on the stored pixels) does not fit; the size check catches that only for a non-square image
    turned by 90 degrees (those are not named: their masks fit as shown), so the user is told which to check.
    Said, not refused: the masks are the user's."""
    if not turned:
        return None
    n = len(turned)
    names = ", ".join(f"{name} ({o})" for name, o in turned[:3]) + (", ..." if n > 3 else "")
    return (
        f"{n} image{'s' if n > 1 else ''} with a mask {'are' if n > 1 else 'is'} turned or mirrored by {'their' if n > 1 else 'its'} "
        f"EXIF orientation ({names}): each mask is read as drawn on the image as viewers show it, as training and "
        "the agent's folder camera turn the image; a mask drawn on the stored pixels, by a tool that ignores the "
        "orientation, does not fit: check them over the image as a viewer shows it (a misplaced one: turn it as "
        "the tag turns the image, or remove the tag)"
    )


def _faint_pixels(mask) -> tuple[int, int]:
    """A mask's pixels of 1 to 127 and of 128 to 255 (a colour mask's pixel by its brightest channel)."""
    import numpy as np

    m = mask.max(axis=2) if mask.ndim == 3 else mask
    return int(np.count_nonzero((m > 0) & (m < 128))), int(np.count_nonzero(m >= 128))


def _lossy_masks_note(lossy: list[tuple[str, int, int]]) -> str | None:
    """JPEG masks: its compression leaves faint values around each defect, which count as defect pixels (a
    mask is 0 for good pixels and anything else for defect). Said, not refused: the mask is the user's."""
    if not lossy:
        return None
    n, faint, marked = len(lossy), sum(f for _, f, _ in lossy), sum(m for _, _, m in lossy)
    names = ", ".join(name for name, _, _ in lossy[:3]) + (", ..." if n > 3 else "")
    return (
        f"{n} mask{'s' if n > 1 else ''} saved as JPEG ({names}) hold{'' if n > 1 else 's'} {faint:,} faint "
        f"pixels (1-127) beside {marked:,} marked ones (128-255): JPEG's noise around a defect, each counted as a "
        "defect pixel; save masks as PNG to keep the defect as drawn"
    )


_MASK_FOLDERS = frozenset({"masks", "mask", "ground_truth"})


def _mask_like_note(found: Found, src: Path) -> str | None:
    """Images of a folder per class that look like masks (named ``*_mask``, or in a ``masks/`` or
    ``ground_truth/`` folder inside a class): a folder per class reads no masks, so they are part images of
    their class, a defect class learnt from black-and-white drawings. Said, not refused: the names may be the
    user's own for part images."""
    if found.layout != "folders":
        return None
    like = [
        rel
        for it in found.items
        if (rel := it.path.relative_to(src)).stem.lower().endswith("_mask")
        or _MASK_FOLDERS & {part.lower() for part in rel.parts[1:-1]}
    ]
    if not like:
        return None
    n = len(like)
    names = ", ".join(r.as_posix() for r in like[:3]) + (", ..." if n > 3 else "")
    return (
        f"{n} image{'s' if n > 1 else ''} that look{'' if n > 1 else 's'} like masks ({names}) imported as part "
        "images of their class: a folder per class reads no masks; give masks in the MVTec AD layout "
        "(test/<defect>/NAME.png with ground_truth/<defect>/NAME_mask.png), or remove them"
    )


def _misnamed_note(misnamed: list[tuple[str, str]]) -> str | None:
    """A note naming the images read as another kind than their extension says (a JPEG named .png: lossy
    where its name promises lossless), or None."""
    if not misnamed:
        return None
    n = len(misnamed)
    shown = ", ".join(f"{name} (a {kind})" for name, kind in misnamed[:3]) + (", ..." if n > 3 else "")
    return (
        f"{n} image{'s are' if n > 1 else ' is'} of another kind than {'their extensions say' if n > 1 else 'its extension says'}, "
        f"read and stored as what {'they are' if n > 1 else 'it is'}: {shown}; rename {'them' if n > 1 else 'it'} "
        "to match if other tools read your folder"
    )


def _flat(img) -> bool:
    """Whether every pixel of ``img`` has one value (a sparse look first: most images differ there)."""
    sparse = img[::16, ::16]
    return bool(sparse.min() == sparse.max() and img.min() == img.max())


def _flat_note(flat: list[str]) -> str | None:
    if not flat:
        return None
    n = len(flat)
    return (
        f"{n} image{'s are' if n > 1 else ' is'} one colour throughout (a covered lens, a missed trigger, a "
        f"blank export): {', '.join(flat[:3])}{', ...' if n > 3 else ''}; check they belong to their class"
    )


# an image this much wider or taller for its height than most images, or this much smaller or larger in
# area, is not like the line camera's frames (the model scales every image to its square input)
_ODD_ASPECT, _ODD_AREA = 1.1, 4.0


def _bulky_bytes(h: int, w: int) -> int:
    """The most bytes a file of an image of ``h`` x ``w`` pixels needs (``max_file_bytes``'s rule, for its own
    pixels: 8 a pixel, and 1 MiB of headers and metadata)."""
    return 8 * h * w + 2**20


def _bulky_note(bulky: list[tuple[str, int, int, int]]) -> str | None:
    """A note naming images whose files are far larger than their pixels need (``_bulky_bytes``: a JPEG carrying
    megabytes of EXIF, XMP or comment segments, a PNG of text chunks, bytes after its image's end), which the dataset
    keeps byte for byte and every build reads again; None when none."""
    if not bulky:
        return None
    n = len(bulky)
    shown = ", ".join(f"{name} {size / 1e6:.1f} MB for {w}x{h}" for name, size, h, w in bulky[:3])
    return (
        f"{n} image file{'s' if n > 1 else ''} far larger than {'their' if n > 1 else 'its'} pixels need: {shown}"
        f"{', ...' if n > 3 else ''}; the rest is metadata (EXIF, XMP, comments, text chunks) or bytes after the "
        "image's end, kept byte for byte in the dataset and read at every build: save "
        f"{'them' if n > 1 else 'it'} again without {'their' if n > 1 else 'its'} metadata to keep the dataset small"
    )


def _odd_sizes_note(shapes: list[tuple[str, int, int]]) -> str | None:
    """A note naming images whose size is far from the one most images share (a 1x1 image, a 10000x20
    strip, a phone photo among camera frames), when most share one; None otherwise."""
    from collections import Counter

    if len(shapes) < 2:
        return None
    (h0, w0), n0 = Counter((h, w) for _, h, w in shapes).most_common(1)[0]
    if n0 * 2 < len(shapes):
        return None  # no size most images share (photos of many sizes): nothing to compare with

    def odd(h: int, w: int) -> bool:
        aspect = (w / h) / (w0 / h0)
        area = (w * h) / (w0 * h0)
        return not 1 / _ODD_ASPECT <= aspect <= _ODD_ASPECT or not 1 / _ODD_AREA <= area <= _ODD_AREA

    far = [(name, h, w) for name, h, w in shapes if odd(h, w)]
    if not far:
        return None
    n = len(far)
    shown = ", ".join(f"{name} {w}x{h}" for name, h, w in far[:3]) + (", ..." if n > 3 else "")
    return (
        f"{n} image{'s' if n > 1 else ''} far from the size {n0} of the {len(shapes)} images have ({w0}x{h0}): "
        f"{shown}; the model sees every image scaled to its square input, so {'these look' if n > 1 else 'it looks'} "
        "unlike the line camera's frames: check they belong, or crop or remove them"
    )


def _camera_unknown_note(shapes: list[tuple[str, int, int]], named: bool) -> str | None:
    """A note when every image has one size that is no camera sensor's shape (a 96x96 square, 300x100) and
    neither ``--camera-size`` nor the images (``named``: an agent's samples name theirs) name the camera: that size
    then stands for their camera's, and a camera of other proportions whose width and height resize its frames to
    it is not told (``frame.camera`` in ``model_packager.inputstats``); None otherwise (images of several sizes
    are each taken as their camera's own frame)."""
    from model_packager.inputstats import sensor_shape_problem

    sizes = {(w, h) for _, h, w in shapes}
    if named or len(sizes) != 1:
        return None
    ((w, h),) = sizes
    why = sensor_shape_problem((w, h))
    if why is None:
        return None
    return (
        f"all {len(shapes)} images are {w}x{h}, {why}: resized or cropped since the camera took them? They "
        f"name no camera, so the agent takes {w}x{h} for their camera's size, and a camera of other proportions "
        f"whose width and height resize its frames to {w}x{h} is not told (its part stretched, judged); if the "
        "camera's frames are another size, import them again with --camera-size WIDTHxHEIGHT (e.g. 640x480)"
    )


def _pixels_key(img) -> bytes:
    """A digest of an image's shape, type and every 8th row of pixels (the file's format and metadata
    aside): images with the same pixels share it; ones that share it are compared whole (``SamePixels``).
    An eighth of the pixels: ~5 ms for a 5-MP image, where the whole took ~35 ms beside a ~150-ms decode."""
    import numpy as np

    h = hashlib.sha256(f"{img.shape}{img.dtype}".encode())
    h.update(np.ascontiguousarray(img[::8]).data.cast("B"))
    return h.digest()


class SamePixels(Generic[_T]):
    """Images by their pixels (shape, type and values: a PNG saved again as BMP or TIFF is the same image),
    found by a digest of every 8th row (``_pixels_key``) and confirmed on the whole image, which ``decode``
    gives again for an earlier item (rare: only when the digests agree). What ``dataset import`` and the
    anomaly family's reading of a folder leave out as copies, and refuse as one image in two classes."""

    def __init__(self, decode: Callable[[_T], Any]) -> None:
        self._decode = decode
        self._first: dict[bytes, list[_T]] = {}

    def earlier(self, item: _T, img) -> _T | None:
        """The item seen before whose image has ``img``'s pixels, or None: ``item`` (``img`` its image) is
        the first with them, and remembered."""
        import numpy as np

        seen = self._first.setdefault(_pixels_key(img), [])
        for other in seen:
            o = self._decode(other)
            if o.shape == img.shape and o.dtype == img.dtype and bool(np.array_equal(o, img)):
                return other
        seen.append(item)
        return None


def in_two_classes(path: Path, label: str, other: Path, other_label: str, data: bytes) -> str:
    """The refusal of one photo sorted into two classes (a good part and a defect at once): ``path``
    (``data`` its bytes) has the pixels of ``other``, of another class."""
    how = "byte for byte" if other.read_bytes() == data else "the same pixels, saved again in another file"
    return (
        f"{path} ({label!r}) is the same image as {other} ({other_label!r}), {how}; keep it in its one class"
    )


class _Pathed(Protocol):
    @property
    def path(self) -> Path: ...


def copies_note(copies: Sequence[tuple[_Pathed, _Pathed]], src: Path) -> str:
    """The note (or the refusal's aside) naming the copies left out below ``src``: (copy, the image kept)."""
    n = len(copies)
    shown = ", ".join(
        f"{a.path.relative_to(src).as_posix()} = {b.path.relative_to(src).as_posix()}" for a, b in copies[:3]
    )
    return (
        f"left out {n} image{'s' if n > 1 else ''} with the same pixels as another image of {'their' if n > 1 else 'its'} "
        f"class (a copy would sit in training and in the gate's test at once and make its figures look better "
        f"than the model is): {shown}{', ...' if n > 3 else ''}"
    )


def _check_mask(it: _Item, mask, good: str) -> None:
    """A mask must agree with its image's label: an all-black one on a defect image would label the
    defect's tiles good, defect pixels on a good image contradict it (an all-black one there is fine)."""
    import numpy as np

    marked = int(np.count_nonzero(mask))
    if it.label != good and not marked:
        raise DatasetError(
            f"{it.mask}: an empty mask (no defect pixel) for {it.path}, a {it.label!r} image; a tiled model "
            "would learn its tiles as good: mark the defect's pixels, or remove the mask"
        )
    if it.label == good and marked:
        raise DatasetError(
            f"{it.mask}: {marked} defect pixels on a good image ({it.path}); a good image's mask is empty: "
            "move the image to its defect's folder, or remove the mask"
        )


def _grey_mask(path: Path, data: bytes, max_megapixels: float):
    """A colour mask's bytes decoded as training decodes a mask (``data._mask``: grey, any depth)."""
    import cv2

    from protocols.image_header import ImageRejected

    try:
        return decode_checked(data, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH, max_megapixels)
    except ImageRejected as exc:
        raise DatasetError(f"{path}: {exc}") from None


def _lost_beyond_edge(gone, mask, marked: int, colour) -> int:
    """How many of a colour mask's ``marked`` pixels read 0 in grey (``gone``) are a region lost (a class-index
    mask's (0, 0, 1)), not the fading edge of a brush; all of them when every marked pixel is. Forgiven: those
    within one pixel of a pixel that stays marked (an anti-aliased brush's faintest edge: a pure red or blue overlay
    drawn so lost 0.5-2.6 % of its pixels there), and a soft (feathered) brush's fade: a lost region touching a
    region that stays and holds a bright pixel (a quarter of full scale or more in a channel; a pixel reading 0 is at
    most 4 of 255, or 24 red / 40 blue in a PNG with a gamma chunk, as ImageMagick writes it: libpng turns those grey
    in linear light), when the fades hold at most twice the pixels of the bright regions they touch (ImageMagick
    `-blur 0x8` of a red or blue stroke: 0.7-1.0 times). Feathered red or blue masks were refused as too dark.
    Not a fade: a lost region of one colour touching a pixel of half scale or more (a fade passes through the middle
    values): a class index drawn beside a bright class, a (0, 0, 1) object inside a 255 border, which imported as
    good with the border alone as the defect."""
    import cv2
    import numpy as np

    lost = int(np.count_nonzero(gone))
    if not lost or lost == marked:
        return lost
    stays = (mask > 0).astype(np.uint8)
    square = np.ones((3, 3), np.uint8)
    beyond = gone & ~(cv2.dilate(stays, square) > 0)
    if not beyond.any():
        return 0
    _, regions = cv2.connectedComponents(stays, connectivity=8)
    top = colour[..., :3].max(axis=2)
    lit = np.unique(regions[(top >= np.iinfo(colour.dtype).max // 4) & (stays > 0)])
    bright = np.isin(regions, lit[lit > 0])
    if bright.any():
        count, fades = cv2.connectedComponents(gone.astype(np.uint8), connectivity=8)
        touching = np.unique(fades[gone & (cv2.dilate(bright.astype(np.uint8), square) > 0)])
        # not a fade: a region of one colour touching a pixel of half scale or more (a class index)
        which, rgb = fades[gone], colour[..., :3][gone]
        first = np.zeros((count, rgb.shape[1]), colour.dtype)
        first[which] = rgb
        varied = np.zeros(count, bool)
        varied[which[(rgb != first[which]).any(axis=1)]] = True
        hard = np.unique(
            fades[gone & (cv2.dilate((top > np.iinfo(colour.dtype).max // 2).astype(np.uint8), square) > 0)]
        )
        touching = touching[(touching > 0) & (varied[touching] | ~np.isin(touching, hard))]
        faded = gone & np.isin(fades, touching)
        if np.count_nonzero(faded) <= 2 * np.count_nonzero(bright):
            beyond &= ~faded
    return int(np.count_nonzero(beyond))


def _png(mask, path: Path) -> bytes:
    """The mask encoded as PNG, for ``path`` (named in the error)."""
    import cv2

    # encoded, then written by Python: OpenCV given a path holding a byte that is not UTF-8 (a dataset folder
    # under a Latin-1 share's name) crashed the process (SIGSEGV), the hidden folder left half-written
    ok, data = cv2.imencode(".png", mask)
    if not ok:
        raise DatasetError(f"{path}: the mask could not be encoded as PNG")
    return data.tobytes()


def main(argv: list[str]) -> int:
    """``cloud-trainer dataset import --kind images`` (argv after the kind dispatch)."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="cloud-trainer dataset import --kind images",
        description="a dataset from a folder per class or an MVTec AD folder",
    )
    ap.add_argument(
        "source", type=Path, help="folder per class (ok/, scratch/, ...) or MVTec AD (train/good, ...)"
    )
    ap.add_argument("--out", type=Path, required=True, help="new dataset folder (must not exist or be empty)")
    ap.add_argument("--good", help="the class of good parts (default: a folder named ok, good, pass, ...)")
    ap.add_argument(
        "--task",
        choices=sorted(MIN_GOOD),
        default="classifier",
        help="what the dataset is for: classifier (good + defect classes) or anomaly (good only is fine)",
    )
    ap.add_argument(
        "--min-good", type=int, help=f"fewest good images accepted (default {MIN_GOOD['classifier']})"
    )
    ap.add_argument(
        "--max-megapixels",
        type=float,
        default=CAMERA_MAX_MEGAPIXELS,
        help="refuse an image whose header declares more pixels than this, before decoding it (default "
        f"{CAMERA_MAX_MEGAPIXELS:g}, the agent camera's max_megapixels: it skips larger frames; raise both "
        "together, and model-packager build --max-megapixels; guards against decompression bombs)",
    )
    ap.add_argument(
        "--pixel-bits",
        type=int,
        help="16-bit images (a machine-vision camera's Mono12, say): the bits that carry the image, 8 to 16 "
        "(12 for Mono12, 16 for the full range); they are stored as 8-bit PNG as the agent's camera "
        "reads them with the same pixel_bits. Without it a 16-bit image is refused",
    )
    ap.add_argument(
        "--bayer",
        choices=BAYER_PATTERNS,
        help="a colour camera's raw images (a Bayer mosaic saved as grey): its pattern, the top-left 2x2 "
        "pixels row by row (BayerRG8: rggb); each is demosaiced and stored as PNG, as the agent's camera "
        "reads them with the same bayer setting. A colour image is then refused",
    )
    ap.add_argument(
        "--camera-size",
        type=_camera_size_arg,
        metavar="WIDTHxHEIGHT",
        help="the camera's own size where the images were resized since (a dataset squashed to 96x96 from a "
        "4:3 camera's 640x480 frames: 640x480): recorded, so that the agent measures a camera's proportions "
        "against it. Without it an image's own size stands for its camera's, except where a camera is resized "
        "to exactly that size. Fleet samples keep their own: an agent names its camera in each",
    )
    a = ap.parse_args(argv)
    with _decoders_quiet(), stopped_cleanly():
        res = import_images(
            a.source,
            a.out,
            a.good,
            a.task,
            a.min_good,
            max_megapixels=a.max_megapixels,
            pixel_bits=a.pixel_bits,
            bayer=a.bayer,
            camera_size=a.camera_size,
        )
    print(json.dumps(res))
    return 0


def _camera_size_arg(text: str) -> tuple[int, int]:
    """``--camera-size``'s ``WIDTHxHEIGHT`` (``640x480``), whole numbers > 0."""
    import argparse

    from model_packager.inputstats import camera_problem
    from protocols.sample_camera import size_text

    size = size_text(text.strip().replace("X", "x", 1))
    if size is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT in pixels, e.g. 640x480")
    if why := camera_problem(size):
        raise argparse.ArgumentTypeError(f"{text!r} is no camera's size ({why})")
    return size


@contextlib.contextmanager
def stopped_cleanly():
    """SIGTERM (a job scheduler's timeout, a pod's eviction, ``kill``) and SIGHUP (the terminal closed)
    end the command as an exception would, so that the import removes its temporary folder; by default
    they end the process at once and leave it behind. SIGKILL cannot be caught: it leaves only that
    hidden folder, which nothing reads. Ctrl-C (SIGINT) ends it the same way, saying so in one line instead
    of a KeyboardInterrupt traceback, with 130."""
    import signal

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    kinds = [k for k in ("SIGTERM", "SIGHUP") if hasattr(signal, k)]
    try:
        before = {k: signal.signal(getattr(signal, k), stop) for k in kinds}
    except ValueError:  # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    except KeyboardInterrupt as exc:
        # Ctrl-C: the temporary folder is gone (import_images); one line, no traceback, saying what was written all
        # the same where something was (the fleet export's labels given: ``uploads._labels_told``)
        said = exc.args[0] if exc.args and isinstance(exc.args[0], str) else "nothing was written"
        print(
            f"cloud-trainer dataset import: stopped (Ctrl-C) before the end; {said}: run it again to import",
            file=sys.stderr,
        )
        raise SystemExit(128 + signal.SIGINT) from None
    finally:
        for k, handler in before.items():
            signal.signal(getattr(signal, k), handler)


@contextlib.contextmanager
def _decoders_quiet():
    """The command's stderr without what the image decoders print themselves about a bad file (libpng's
    'libpng error: ...', OpenCV's multi-line '[ERROR:0@...] ... can't read data'): the import says it in
    one line naming the file. The C libraries write to file descriptor 2, which points at /dev/null
    meanwhile; Python's own ``sys.stderr`` (the import's notes, then its refusal) keeps the real one. For
    the command only (one thread), never the library function."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError):  # no stderr to speak of
        yield
        return
    swapped, before = False, sys.stderr
    try:
        if _fd(sys.stderr) == 2:  # the real stderr: its writes go to a copy of the real descriptor
            sys.stderr = open(
                real, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace", closefd=False
            )
            swapped = True
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        if swapped:
            sys.stderr.flush()
            sys.stderr = before
        os.dup2(real, 2)
        os.close(real)


def _fd(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
