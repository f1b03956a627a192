"""Datasets for training: dataset folders (simulator, imported images, uploaded samples), checked strictly.

``load_parts(folder)`` reads ``labels.jsonl`` + images; ``load_vibration(folder)`` reads
``windows.npz`` + ``dataset.yaml``. Both raise ``DatasetError`` with a clear message for an empty
or single-class dataset, a corrupt image, a labels file naming missing samples, or windows of the
wrong length. ``split`` is seeded and fixed; ``digest`` identifies the data (images, labels, masks).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import re
import reprlib
import stat
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


class DatasetError(ValueError):
    pass


def path_text(path: str | os.PathLike[str]) -> str:
    r"""``path`` as text any reader takes, for what a dataset, a report or a manifest records of it: each byte
    of a name that is not UTF-8 (a factory share's Latin-1 names, which Python keeps as U+DC80-U+DCFF) written
    ``\xfc``, as refusals print it (``Pr\xfcfteile``). Kept as it was, such a name made the import's
    ``dataset.yaml`` unreadable to training (libyaml refuses its ``\uDCFC`` escape) and the build's report a
    UnicodeEncodeError. Not for opening the file: the path itself stays as the system gave it."""
    text = os.fspath(path)
    try:
        text.encode()
    except UnicodeEncodeError:
        return "".join(
            f"\\x{ord(c) - 0xDC00:02x}"
            if 0xDC80 <= ord(c) <= 0xDCFF
            else "\ufffd"
            if 0xD800 <= ord(c) <= 0xDFFF
            else c
            for c in text
        )
    return text


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISREG, "a file"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_a(path: Path, want: str) -> str:
    """Why ``path`` is not the ``want`` ("folder" or "file") a command was given, in one line: ``no such
    folder`` when nothing is there (or a link leads nowhere), else what it is (``a named pipe, not a folder``),
    or why it cannot be looked at."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"{path}: no such {want}"
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    what = next((w for test, w in _KINDS if test(mode)), "not a regular file")
    return f"{path}: {what}, not a {want}"


# ``dataset.yaml`` is written by an import or an export, but a dataset folder is the user's: read it as
# untrusted. ``yaml.safe_load`` was unbounded: a 400-byte file of nested aliases stood for 387 million names
# that an error message then showed (6 GB and no end), 50,000 "[" raised RecursionError, and a date such as
# 2024-13-45 or a byte that is not UTF-8 gave a traceback. The largest we write (a vibration import of 100,000
# runs, one path and channel each) is ~10 MB and 300,000 nodes.
DATASET_YAML_MAX_BYTES = 16 * 1024 * 1024
DATASET_YAML_MAX_DEPTH = 32
DATASET_YAML_MAX_ALIASES = 1_000
DATASET_YAML_MAX_NODES = 1_000_000  # once aliases are expanded


def label_row(line: str, where: str) -> dict:
    """One row of a dataset's ``labels.jsonl``: a JSON object whose ``file`` and ``label`` are text;
    ``DatasetError`` naming ``where`` (``labels.jsonl:12``) otherwise. A line nested thousands deep raised
    RecursionError, a list, a number or a ``file`` (or ``mask``) that is not text TypeError: tracebacks of
    training."""
    try:
        row = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise DatasetError(f"{where}: not a label row ({str(exc).splitlines()[0]})") from None
    if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("file", "label")):
        raise DatasetError(f"{where}: not a label row with 'file' and 'label' (text), got {_SHORT.repr(row)}")
    if row.get("mask") is not None and not isinstance(row["mask"], str):  # (a TypeError joining it to a path)
        raise DatasetError(
            f"{where}: its 'mask' is {_SHORT.repr(row['mask'])}, not text; give the mask's file name relative "
            "to the dataset folder, or null for none"
        )
    for key in ("file", "label", "mask"):
        # a "\udc80" escape: no character, so no UTF-8 name; as a path it named a byte the line never held
        value = row.get(key)
        if isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise DatasetError(
                f"{where}: its '{key}' {ascii(value)} holds a lone surrogate (a \\udXXX escape), which is no "
                "character and names no file; write the name as UTF-8 text"
            )
    return row


# ``labels.jsonl`` is the user's too, and was read whole: a file of gigabytes (or one line of them, no line end)
# filled the trainer's memory before its first row was looked at. A row an import writes is ~150 bytes and a
# fleet export's ~250; its longest part, the source's relative path, at most the system's 4096 bytes (24 KiB
# JSON-escaped). 256 MiB is a million rows of 256 bytes, more images than training holds in memory.
LABELS_MAX_BYTES = 256 * 1024 * 1024
LABELS_MAX_LINE_BYTES = 64 * 1024


def read_capped(fh: BinaryIO, limit: int) -> tuple[bytes, int]:
    """The bytes of the open file ``fh`` and its size; past ``limit`` bytes (its size looked at first, then
    what it gives while read: a file still growing, a pipe) only the size, nothing kept, for the caller to
    refuse it. Read a MiB at a time: read(limit + 1) took the limit's memory for every file, however small."""
    size = os.fstat(fh.fileno()).st_size
    if size > limit:
        return b"", size
    chunks, got = [], 0
    while chunk := fh.read(min(1 << 20, limit + 1 - got)):
        chunks.append(chunk)
        got += len(chunk)
    return (b"".join(chunks), got) if got <= limit else (b"", got)


def label_lines(labels_file: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of each line of a dataset's ``labels.jsonl`` that is not blank (a UTF-8 byte
    order mark at its start and Windows line ends are read past); a line that is not UTF-8 (a file name
    written by a tool as the bytes of a code page) is a ``DatasetError`` naming it, where reading the whole
    file as text raised UnicodeDecodeError at a byte offset. A file larger than ``LABELS_MAX_BYTES`` (its size
    looked at before it is read) or a line longer than ``LABELS_MAX_LINE_BYTES`` is refused naming it and
    the limit."""
    in_its_folder(labels_file)
    out = []
    try:
        with open(labels_file, "rb") as fh:
            opened_in_its_folder(fh.fileno(), labels_file)
            data, size = read_capped(fh, LABELS_MAX_BYTES)
    except OSError as exc:
        raise DatasetError(f"{labels_file}: cannot read it ({exc.strerror or exc})") from None
    if size > LABELS_MAX_BYTES:
        raise DatasetError(
            f"{labels_file}: {size} bytes, more than the {LABELS_MAX_BYTES} a dataset's labels may take; refused "
            "unread (a million rows is more images than training holds in memory): split the dataset"
        )
    # a byte order mark opening the file (Notepad's and PowerShell's "UTF-8 with BOM"): no part of line 1's
    # JSON, which json.loads refused as "Unexpected UTF-8 BOM"; dataset.yaml beside it is read past one
    data = data.removeprefix(b"\xef\xbb\xbf")
    for n, raw in enumerate(data.splitlines(), 1):
        if len(raw) > LABELS_MAX_LINE_BYTES:
            raise DatasetError(
                f"{labels_file}:{n}: a line of {len(raw)} bytes, more than the {LABELS_MAX_LINE_BYTES} a label "
                "row may take; refused (a row names a file and its label: is this a labels file?)"
            )
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"{labels_file}:{n}: not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}: a name "
                "written in another encoding); write the line as UTF-8, the name as the file is named"
            ) from None
        if line.strip():
            out.append((n, line))
    return out


def within(real: str, root: str) -> bool:
    """Whether the resolved path ``real`` is the resolved folder ``root`` or lies below it."""
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def link_out(path: Path, root: Path) -> tuple[Path, str] | None:
    """For ``path`` below the folder ``root``: None when it lies inside ``root`` once its links are followed,
    else the first link on the way that leads out and what the link holds, as its owner wrote it
    (``root/train``, ``../b/train``). Where it leads once resolved, and whether anything is there, is not
    handed back: a refusal that said so let a tenant of a shared trainer probe another's tree (does
    ``/srv/tenants/b/x`` exist, where do its links lead). ``root`` may itself be a link or lie below one
    (``/data -> /mnt/nas/data``): what counts is where it leads."""
    top = os.path.realpath(root)
    if within(os.path.realpath(path), top):
        return None
    cur = root
    for part in path.relative_to(root).parts:
        cur = cur / part
        if os.path.islink(cur) and not within(os.path.realpath(cur), top):
            return cur, os.readlink(cur)
    # not reached: a path below root leads out only through a link
    return path, str(path)


def link_text(path: Path | str) -> str:
    """`` (a link to TEXT)`` when ``path`` is a link now, TEXT as written in it; else nothing: said where a
    file leads out once opened, rather than where it leads (another tenant's tree)."""
    try:
        return f" (a link to {os.readlink(path)})"
    except OSError:
        return ""


def in_its_folder(path: Path) -> None:
    """A dataset folder's own file (``labels.jsonl``, ``dataset.yaml``) must lie in that folder: one linked
    out (to another factory's dataset beside it on a shared trainer) was read as this dataset's, its rows
    and labels said back in errors or trained on this folder's images. ``DatasetError`` naming the link."""
    if (out := link_out(path, path.parent)) is not None:
        link, shown = out
        raise DatasetError(
            f"{link}: a link to {shown}, outside the dataset folder {path.parent}; a dataset reads "
            "only the files inside its folder: copy the file in, or remove the link"
        )


def missing(path: Path) -> bool:
    """Whether a dataset folder's own file (``labels.jsonl``, ``dataset.yaml``) is not there, unless it is a
    link out of the folder: that one is refused as a link where it is read (``in_its_folder``), whether or
    not anything is where it leads; said missing, it told a tenant that another's file is not there."""
    return link_out(path, path.parent) is None and not path.is_file()


def opened_at(fd: int, path: Path | str) -> str:
    """Where the file open as ``fd`` (opened by ``path``) lies, its real path: read from ``/proc/self/fd``
    (Linux), which no link put in place of ``path`` after the open can change; else ``path``'s real path,
    marked as changed unless it is still the very file open."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = os.path.realpath(path)
        try:
            seen, st = os.stat(real), os.fstat(fd)
        except OSError:
            return f"{real} (changed while read)"
        return (
            real if (seen.st_dev, seen.st_ino) == (st.st_dev, st.st_ino) else f"{real} (changed while read)"
        )


def opened_in_its_folder(fd: int, path: Path) -> None:
    """``in_its_folder`` once the file is open (as ``fd``): one replaced by a link out after that check (the
    folder is the user's, written while training runs) is refused naming it, not read as this dataset's."""
    if not within(opened_at(fd, path), os.path.realpath(path.parent)):
        raise DatasetError(
            f"{path}{link_text(path)}: leads outside the dataset folder {path.parent} once opened; a link put "
            "in its place after it was checked: copy the file in, or remove the link"
        )


def dataset_file(folder: Path, file: str, where: str) -> Path:
    """The path of a file that a row of ``folder``'s ``labels.jsonl`` names (``file``, relative to
    ``folder``). A dataset folder is the user's (or a tenant's): a name that leads out of it, an absolute
    path, a ``../`` step or a link out, is refused naming ``where``; it read another folder's files (another
    factory's images on a shared trainer) into the model. So is one that cannot be looked at (too long for a
    file name, in a folder the trainer may not search), which stopped training with an OSError traceback."""
    if "\0" in file:  # no file's name holds one: os.path.realpath raised ValueError, a traceback
        raise DatasetError(
            f"{where}: names {file!r}, which holds a NUL character (\\u0000) that no file name holds; write the "
            "name as the file is named"
        )
    path = folder / file
    real = os.path.realpath(path)
    if not within(real, os.path.realpath(folder)):
        raise DatasetError(
            f"{where}: names {file!r}, which leads out of the dataset folder {folder}; a dataset reads only "
            "the files inside its folder: copy the file in and name it relative to the folder"
        )
    try:  # a name no file system takes (a part over 255 bytes), a folder not to be searched: OSError tracebacks
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass  # said by the caller, which names what is missing
    except OSError as exc:
        if exc.errno != errno.ELOOP:  # a link leading round (said missing, as is_file finds it)
            raise DatasetError(
                f"{where}: names {file!r}, which cannot be looked at ({exc.strerror or exc}); name a file of "
                "the dataset folder as it is named, one the trainer may read"
            ) from None
    return path


_SHORT = reprlib.Repr()  # a value shown in an error: a few items of two levels, never the whole of it
_SHORT.maxlevel = 2


def read_dataset_yaml(meta_file: Path) -> Any:
    """The document of a dataset folder's ``dataset.yaml`` (a mapping, or whatever the file holds), within the
    limits above; ``DatasetError`` with one line naming the file when it cannot be read, is not a file, is
    larger, is not UTF-8, not valid YAML (a key given twice too) or passes a limit."""
    from model_packager.safe_yaml import check_limits, load_document, where_and_why

    in_its_folder(meta_file)
    try:
        with open(meta_file, "rb") as fh:
            opened_in_its_folder(fh.fileno(), meta_file)
            data = fh.read(DATASET_YAML_MAX_BYTES + 1)
    except OSError as exc:
        raise DatasetError(f"{meta_file}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > DATASET_YAML_MAX_BYTES:
        raise DatasetError(f"{meta_file}: larger than {DATASET_YAML_MAX_BYTES} bytes; refused")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{meta_file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    problem = check_limits(
        text,
        max_depth=DATASET_YAML_MAX_DEPTH,
        max_aliases=DATASET_YAML_MAX_ALIASES,
        max_nodes=DATASET_YAML_MAX_NODES,
    )
    if problem is not None:
        raise DatasetError(f"{meta_file}: YAML {problem}; refused")
    try:
        return load_document(text)
    except Exception as exc:  # PyYAML's constructors raise more than YAMLError (ValueError, ...)
        if getattr(exc, "context", None) and (at := where_and_why(exc)) is not None:
            # its first line is the context ("while parsing a quoted scalar"), naming neither the place nor what
            raise DatasetError(f"{meta_file}: not valid YAML {at}") from None
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"{meta_file}: not valid YAML ({first})") from None


# every image training reads, unless its dataset records another limit (``dataset import --max-megapixels``):
# the agent camera's max_megapixels default (devices.camera.settings; model_packager.image_file keeps the same).
# The camera skips larger frames, so an image over it would train a model on what the line never shows it
CAMERA_MAX_MEGAPIXELS = 25.0


def decode_checked(data: bytes, flags: int | None = None, max_megapixels: float | None = None) -> Any:
    """The decoded image, with the checks training makes (``decode_image``: kind, size limit, truncation; a
    JPEG decoded with a missing part filled in grey), or ``ImageRejected`` saying why not."""
    import cv2

    from protocols.image_header import ImageRejected, decode_image
    from protocols.jpeg_check import damaged_jpeg

    img = decode_image(data, flags, max_megapixels)
    why = damaged_jpeg(data, img, cv2.IMREAD_COLOR if flags is None else flags)
    if why is not None:  # decoded with its missing part filled in grey: not the part as it was
        raise ImageRejected(why)
    return img


# how to take images over a dataset's limit: import it again with a higher one; the agent's camera skips frames
# over its max_megapixels (default 25, the import's default), so a model trained on larger images would never
# see one from the line
IMPORT_RAISE = (
    "import the dataset with `cloud-trainer dataset import --max-megapixels N` if images this large are meant, "
    "and set the agent's camera max_megapixels as high (it skips larger frames)"
)
# a fleet export's (``dataset.yaml``: ``fleet_export``): its images came from cameras, which sent them
EXPORT_RAISE = (
    "export the dataset again with `cloud-trainer dataset --max-megapixels N` if images this large are meant"
)


def read_image_file(
    path: Path,
    flags: int | None = None,
    max_megapixels: float | None = None,
    named_by: str = "",
    raise_limit: str = IMPORT_RAISE,
    inside: tuple[Path, str] | None = None,
) -> tuple[bytes, Any]:
    """(file bytes, decoded image) of one image file, its size read from the header first (a file that
    declares more than ``max_megapixels``, default ``CAMERA_MAX_MEGAPIXELS``, is never decoded).
    Any refusal is a ``DatasetError`` naming the file, why, and what to do; ``named_by`` says where
    the file was listed, ``raise_limit`` how to take images over the limit (``limit_advice``). ``inside``:
    (folder, what it is: "the source"), the folder the file was checked to lie in (``link_out``,
    ``dataset_file``); the file is checked again where it lies once opened, so that one replaced by a link out
    after the check (the folder is the user's, written meanwhile) is refused, not read."""
    from protocols.image_header import ImageRejected

    # one limit for all reads: `build anomaly --good DIR`'s folder, a dataset that records none
    if max_megapixels is None:
        max_megapixels = CAMERA_MAX_MEGAPIXELS
    data = read_image_bytes(path, max_megapixels, named_by, raise_limit, inside)
    where = f" ({named_by})" if named_by else ""
    try:
        return data, decode_checked(data, flags, max_megapixels)
    except ImageRejected as exc:
        fix = f"shrink or crop it, or {raise_limit}" if exc.oversize else "replace or remove it"
        if exc.unsupported:  # its reason says what to do (a TIFF of several pages: save each on its own)
            raise DatasetError(f"{path}{where}: {exc}") from None
        raise DatasetError(f"{path}{where}: {exc}; {fix}") from None


def read_image_bytes(
    path: Path,
    max_megapixels: float | None = None,
    named_by: str = "",
    raise_limit: str = IMPORT_RAISE,
    inside: tuple[Path, str] | None = None,
) -> bytes:
    """The bytes of an image file, read as ``read_image_file`` reads them (where it lies checked once open, its
    size bounded by ``max_megapixels``), not decoded."""
    from protocols.image_header import max_file_bytes

    where = f" ({named_by})" if named_by else ""
    if max_megapixels is None:
        max_megapixels = CAMERA_MAX_MEGAPIXELS
    try:
        with open(
            os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)), "rb"
        ) as fh:
            if inside is not None and not within(opened_at(fh.fileno(), path), os.path.realpath(inside[0])):
                raise DatasetError(
                    f"{path}{where}{link_text(path)}: leads outside {inside[1]} {inside[0]} once opened; a link "
                    "put in its place after it was checked: copy the file in, or remove the link"
                )
            size = os.fstat(fh.fileno()).st_size
            if size > max_file_bytes(max_megapixels):
                raise DatasetError(
                    f"{path}{where}: {size} bytes, more than an image of the "
                    f"{max_megapixels:g}-Mpx limit needs; remove it, or {raise_limit}"
                )
            return fh.read()
    except OSError as exc:
        raise DatasetError(
            f"{path}{where}: unreadable ({exc.strerror}); fix its permissions or remove it"
        ) from None


def digest_part(h: Any, image: bytes, label: str, mask: bytes | None = None) -> None:
    """One labelled image's share of a parts dataset's ``digest`` (``load_parts``; ``dataset import`` and a fleet
    export record the same): its bytes' sha256, its label and, where its row names one, its mask's sha256. The
    mask was left out, so a mask changed after ``train`` (which a tiled model learns its tiles' labels from) gave
    the same digest, and ``build`` took the dataset as the one trained on."""
    h.update(hashlib.sha256(image).digest())
    h.update(label.encode())
    if mask is not None:  # (a dataset without masks keeps the digest it had)
        digest_mask(h, mask)


def digest_camera(h: Any, declared: tuple[int, int] | None) -> None:
    """A declared camera's share of a dataset's digest (``dataset.yaml``: ``camera_size``, after every image's):
    it changes the package (the training cameras the agent measures a frame's against), and the same images
    imported with and without it gave one digest. A dataset without it keeps the digest it had."""
    if declared is not None:
        h.update(b"\x00camera_size%dx%d" % declared)


def digest_mask(h: Any, mask: bytes) -> None:
    """A mask's share of a dataset's digest (``digest_part``; the anomaly family's MVTec AD folders)."""
    h.update(b"\x00mask")
    h.update(hashlib.sha256(mask).digest())


def _eight_bit_only(img: Any, path: Path, named_by: str, mask: bool = False) -> None:
    """A dataset folder holds 8-bit images (``dataset import`` writes a camera's 10-16-bit files so, by
    ``--pixel-bits``); one of more bits, put there by hand, is refused naming it rather than read divided by
    256 (a Mono12 image black, a 16-bit mask's defect pixels of 1 good)."""
    if img.dtype == np.uint8:
        return
    depth = "16-bit" if img.dtype == np.uint16 else str(img.dtype)
    fix = (
        "save the mask as an 8-bit image (0: good, other: defect)"
        if mask
        else "import the images with `cloud-trainer dataset import --pixel-bits N`, which stores them as "
        "the agent's camera reads them with pixel_bits"
    )
    raise DatasetError(f"{path} ({named_by}): {depth} pixels, and training reads 8-bit images; {fix}")


def limit_advice(folder: Path) -> str:
    """How to take images over the limit of the dataset folder: export it again (a fleet export, ``dataset.yaml``
    has ``fleet_export``) or import it again."""
    return EXPORT_RAISE if _dataset_value(Path(folder) / "dataset.yaml", "fleet_export") else IMPORT_RAISE


def _dataset_value(meta_file: Path, key: str) -> Any:
    """``dataset.yaml``'s ``key``, None where it or the file is absent (or unreadable: said by
    ``dataset_classes`` with the file's name)."""
    try:
        meta = read_dataset_yaml(meta_file) if meta_file.is_file() else None
    except DatasetError:
        return None
    return meta.get(key) if isinstance(meta, dict) else None


def dataset_max_megapixels(folder: Path) -> float | None:
    """The image-size limit a dataset was imported with (``dataset.yaml``: ``max_megapixels``), if any."""
    meta_file = Path(folder) / "dataset.yaml"
    v = _dataset_value(meta_file, "max_megapixels")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
        raise DatasetError(f"{meta_file}: 'max_megapixels' must be a positive number, got {v!r}")
    return float(v)


def dataset_camera_size(folder: Path) -> tuple[int, int] | None:
    """The camera size a dataset's images were declared taken with (``dataset.yaml``: ``camera_size``, from
    ``dataset import --camera-size``): the camera of each image that names none (``protocols.sample_camera``)."""
    meta_file = Path(folder) / "dataset.yaml"
    v = _dataset_value(meta_file, "camera_size")
    if v is None:
        return None
    from model_packager.inputstats import camera_problem
    from protocols.sample_camera import size_text

    size = (
        size_text(f"{v[0]}x{v[1]}")
        if isinstance(v, list) and len(v) == 2 and all(type(n) is int for n in v)
        else None
    )
    if size is None:
        raise DatasetError(f"{meta_file}: 'camera_size' must be [width, height] in pixels, got {v!r}")
    if why := camera_problem(size):
        raise DatasetError(f"{meta_file}: 'camera_size' {v!r} is no camera's size ({why})")
    return size


def declared_camera(row: dict, declared: tuple[int, int] | None) -> tuple[int, int] | None:
    """The camera of ``row``'s image where the image names none: the dataset's declared one
    (``dataset_camera_size``), but not for a fleet sample (``cloud-trainer dataset``'s row, ``source.sha256``):
    one an agent uploaded before samples named their camera came from its line's camera, which a base's
    declared camera does not describe; it stays unknown (``inputstats.frame_shapes``)."""
    source = row.get("source")
    return None if isinstance(source, dict) and "sha256" in source else declared


VISION_CLASSES = ["ok", "scratch", "dent", "crack", "missing_hole", "stain"]
FAULTS = ["healthy", "imbalance", "misalignment", "bearing_outer", "bearing_inner"]
# a fault class a dataset may name beyond FAULTS (``looseness``, ``cavitation``, ``rotor_bar``: the agent's
# baseline names families the simulator does not make): a lower-case word, as the labels file and dataset.yaml
# give it
FAULT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# names other datasets and historians give the healthy class (CWRU's 'normal', in any case: 'Normal', 'OK'):
# taken as a fault class of their own they trained every healthy window as a fault; refused naming the class to
# use and --healthy. Other names of the four faults ('outer_race', 'inner_race', 'unbalance') are not here: like
# 'outer' or 'unbalanced' they are a class of the dataset's own, kept as given alone and refused beside the fault's
# own class (``reads_as_fault``); refused alone as synonyms, they told a user of MaFaulDa's 'outer_race' to rename
# it while 'outer' was kept
FAULT_SYNONYMS = {
    "normal": "healthy",
    "ok": "healthy",
    "good": "healthy",
}


def fault_synonym(name: str) -> str | None:
    """Why ``name`` is refused as a fault class of its own (another name of ``healthy``, in any case:
    'Normal', 'OK'), or None."""
    real = FAULT_SYNONYMS.get(name.lower())
    return None if real is None else f"is another name of {real!r}: use the real class name {real!r}"


# a class name's words: split at anything not a letter (``_``, ``-``, digits) and where CamelCase starts a word
# (``NoFault``, ``NormalRun``, ``OKRun``); digits split words, so a trailing number (``no_fault1``, ``normal2``)
# leaves the words before it whole
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def name_words(name: str) -> list[str]:
    """The lower-case words of a class name (``no_fault1`` -> no, fault; ``NormalRun2`` -> normal, run)."""
    return [w for w in re.split(r"[^a-z]+", _CAMEL.sub("_", name).lower()) if w]


def lower_case_name(name: str) -> str | None:
    """``name`` written as a fault name (``FAULT_NAME``: ``OuterRace`` -> ``outer_race``, ``Outer 007`` ->
    ``outer_007``), or None when it has no such form (another script)."""
    # accents folded first (``Außenring`` -> ``aussenring``, ``Déséquilibre`` -> ``desequilibre``): dropped as
    # non-ASCII they garbled the name (``au_enring``)
    folded = "".join(
        c for c in unicodedata.normalize("NFKD", name.replace("ß", "ss")) if not unicodedata.combining(c)
    )
    written = re.sub(r"[^a-z0-9]+", "_", _CAMEL.sub("_", folded).lower()).strip("_")
    return written if FAULT_NAME.fullmatch(written) else None


# words that name the healthy machine in a class name of a user's own (``nominal``, ``good_bearing``,
# ``normal_baseline``, ``healthy_1``, ``ok_run``, German ``gut``): taken as a fault class, its windows trained
# as a fault beside the real healthy ones (a healthy machine then read as that "fault"), or, the only healthy
# name, training refused the dataset. Such a class is refused unless ``--healthy`` names it (the import then
# writes its windows as ``healthy``), or ``--fault`` keeps it a fault (``baseline_drift``, ``normal_wear``). A
# word only counts whole (``name_words``: between ``_`` and digits, or CamelCase), and not right after a negation
# (``not_ok``, ``no_good`` are faults; ``healthy_no_load``, ``nominal_non_drive_end``, ``baseline_no2`` are healthy
# names)
HEALTHY_WORDS = frozenset(
    {
        "healthy",
        "normal",
        "nominal",
        "baseline",
        "reference",
        "ok",
        "okay",
        "good",
        "intact",
        "gut",
        "gesund",
        "intakt",
        "fehlerfrei",
        "sain",
        "normale",
        "sano",
        "bueno",
        "bom",
        "saudavel",
    }
)
# the same said as the absence of a fault (``no_fault``, ``fault_free``)
HEALTHY_PHRASES = re.compile(
    r"(^|_)(non?_?(fault|defect|damage|failure)s?|(fault|defect|damage)_?(free|less))(_|$)"
)
_NEGATIONS = frozenset({"not", "no", "non", "un", "nicht", "kein", "pas"})


def reads_healthy(name: str) -> str | None:
    """The word or phrase by which a class name of a dataset's own names the healthy machine, or None (one of
    ``FAULTS`` never does: ``healthy`` is the healthy class)."""
    if name in FAULTS:
        return None
    # "no" before a number is a number (``motor_no3_fault``, ``pump_no_2_damage``: a fault of machine 3), not
    # the "no" of ``no_fault``: dropped with its number first
    words = name_words(re.sub(r"(?i)(?<![a-z])no_?\d+", "_", name))
    # on the words, not the name: a number after the phrase (``no_fault1``, ``fault_free2``) or CamelCase
    # (``NoFault``) kept it from matching, and ``no_fault1`` beside ``healthy`` trained its healthy windows as a fault
    phrase = HEALTHY_PHRASES.search("_".join(words))
    if phrase:
        return phrase.group(2)
    # a negation cancels only the word it stands before: anywhere in the name it cancelled every healthy word
    # (``healthy_no_load``, ``normal_no_load``, ``baseline_no2``: digits split words) and those read as faults
    return next(
        (w for k, w in enumerate(words) if w in HEALTHY_WORDS and not (k and words[k - 1] in _NEGATIONS)),
        None,
    )


# words by which a name says its fault is absent or undone (``imbalance_free``, ``misalignment_corrected``; and
# a negation right before the fault's word: ``not_misaligned``): such a name does not read as the fault it names
# (``reads_as_fault``)
_UNDONE = frozenset({"free", "corrected", "repaired", "removed", "without"})


# words by which a class name of a dataset's own names one of FAULTS' faults (``outer``, ``outer_007``,
# ``misaligned_shaft``, ``unbalanced``; BPFO, BPFI: the bearing's outer and inner race defect frequencies): such a
# class beside that fault's own class splits one fault into two outputs (``data.reads_as_fault``)
FAULT_WORDS = {
    "outer": "bearing_outer",
    "outerrace": "bearing_outer",
    "bpfo": "bearing_outer",
    "inner": "bearing_inner",
    "innerrace": "bearing_inner",
    "bpfi": "bearing_inner",
    "imbalance": "imbalance",
    "imbalanced": "imbalance",
    "unbalance": "imbalance",
    "unbalanced": "imbalance",
    "unwucht": "imbalance",
    "misalignment": "misalignment",
    "misalign": "misalignment",
    "misaligned": "misalignment",
}


# words naming another fault, part or place than FAULT_WORDS' (``outer_housing_loose``: the outer housing is
# loose, not the bearing's outer race; ``belt_misalignment``): a name with one of them is a fault of its own. Not
# the words that say how or where the same fault shows (a cracked or fluted outer race is an outer-race fault, an
# impeller's or a fan's imbalance an imbalance): those names read as that fault (found in review: with crack,
# fluting, impeller, fan in this list, ``outer_race_crack`` beside ``bearing_outer`` split one fault in two outputs)
OTHER_FAULT_WORDS = frozenset(
    "housing loose looseness belt pulley gear gearbox tooth teeth rub rubbing bent foot cavitation ball balls "
    "roller rollers cage seal lubrication".split()
)


def reads_as_fault(name: str) -> str | None:
    """The fault of ``FAULTS`` (not healthy) a class name of a dataset's own reads as by its words (``FAULT_WORDS``,
    ``name_words``), or None: None also when they name two of them (a combined fault, ``inner_outer``,
    ``imbalance_misalignment``) or a word names another fault, part or place (``OTHER_FAULT_WORDS``:
    ``outer_housing_loose``), or one says the fault is absent or undone (``_UNDONE``: ``not_misaligned``,
    ``imbalance_free``, ``misalignment_corrected``; told to merge with the fault, the machine without it trained as
    it); a name of ``FAULTS`` is none. Such names were refused beside the one fault's class as that fault under two
    names."""
    if name in FAULTS:
        return None
    words = name_words(name)
    known = {FAULT_WORDS[w] for w in words if w in FAULT_WORDS}
    if len(known) != 1 or any(w in OTHER_FAULT_WORDS or w in _UNDONE for w in words):
        return None
    # a negation only before the fault's word (``not_misaligned``, ``no_outer``; ``outer_no_2`` is outer no. 2)
    if any(w in FAULT_WORDS and k and words[k - 1] in _NEGATIONS for k, w in enumerate(words)):
        return None
    return known.pop()


def fault_classes(meta: Any, where: Path) -> list[str]:
    """The fault classes of a vibration dataset, in the order the model's ``fault_logits`` hold them:
    ``FAULTS`` (healthy first, the indices every package so far used), then the others its ``dataset.yaml``
    lists under ``faults`` (``cloud-trainer dataset import`` writes those its labels file named)."""
    listed = meta.get("faults") if isinstance(meta, dict) else None
    if listed is None:
        return list(FAULTS)
    if not isinstance(listed, list) or not all(
        isinstance(f, str) and FAULT_NAME.fullmatch(f) for f in listed
    ):
        raise DatasetError(
            f"{where}: 'faults' must be a list of fault names (lower-case words), got {_SHORT.repr(listed)}"
        )
    for f in listed:
        why = fault_synonym(f)
        if why:
            raise DatasetError(
                f"{where}: fault {f!r} under 'faults' {why}, and import the dataset again with the label corrected"
            )
    return [*FAULTS, *dict.fromkeys(f for f in listed if f not in FAULTS)]


def healthy_looking_faults(meta: Any, classes: list[str], where: Path) -> list[str]:
    """Warnings for a vibration dataset's fault classes whose names read as the healthy machine's
    (``reads_healthy``: ``nominal``, ``baseline``) and that its import's ``--fault`` did not name (``dataset.yaml``:
    ``fault_labels``). The import refuses such a class since d0de0c0a; a ``dataset.yaml`` of the former import
    lists it under ``faults`` with no record, and its model trained it and may name it in agents' rules
    (``when: {label: ...}``). It was refused at training: a scheduled retrain stopped after the upgrade and the only
    way on renamed the model's label. It is warned about, training goes on as before (the loader has checked that
    the dataset has healthy windows)."""
    kept = meta.get("fault_labels") if isinstance(meta, dict) else None
    if kept is not None and not (isinstance(kept, list) and all(isinstance(f, str) for f in kept)):
        raise DatasetError(f"{where}: 'fault_labels' must be a list of class names, got {_SHORT.repr(kept)}")
    out = []
    for f in classes:
        word = reads_healthy(f)
        if word and f not in (kept or ()):
            out.append(
                f"{where}: fault {f!r} reads as a name of the healthy machine ({word!r}) and is trained as a fault, "
                "as its import wrote it: if its runs are healthy, import the dataset again with --healthy "
                f"{f} (a healthy machine reads as it now); if it is a fault, import it again with --fault {f} "
                "to say so"
            )
    return out


@dataclass
class PartsData:
    images: list[np.ndarray]  # BGR uint8
    labels: np.ndarray  # int index into classes
    ids: list[str]
    classes: list[str]
    digest: str
    masks: list[np.ndarray | None] | None = None  # defect masks (uint8), when asked for and present
    # per row: the source image it was cut from (a tiled build's tiles; None: each row is its own image),
    # and the dataset's own split of it ("train" | "test" of an MVTec AD import; None where there is none)
    groups: np.ndarray | None = None
    splits: list[str | None] | None = None
    # a tiled build's whole source images (by ``groups`` index), shrunk to at most ``STATS_SIDE`` px: the
    # agent measures each whole frame against the input statistics, so they are taken on these, not on tiles
    frames: list[np.ndarray] | None = None
    frame_shapes: list[tuple[int, ...]] | None = None  # their (height, width) as the camera gave them
    # per image (a tiled build's: per source image, as ``frame_shapes``): the (width, height) of the camera it
    # came from where its file names it (a sample the agent uploaded: ``protocols.sample_camera``), else None
    camera_sizes: list[tuple[int, int] | None] | None = None


@dataclass
class VibrationData:
    waveforms: np.ndarray  # (N, window) float32
    fault: np.ndarray  # int index into FAULTS
    health: np.ndarray
    rul_s: np.ndarray  # NaN where no failure is coming
    run_id: np.ndarray
    t_s: np.ndarray  # machine time of each window within its run
    window_samples: int
    sample_rate_hz: float
    digest: str
    speed_rpm: np.ndarray | None = (
        None  # per window, when windows.npz has a ``speed_rpm`` array (a speed tag)
    )
    meta: dict = field(default_factory=dict)  # dataset.yaml (e.g. the machine's ``bearing``)
    source: str = ""  # the dataset folder (for messages)
    # the fault classes ``fault`` indexes (``fault_classes``)
    classes: list[str] = field(default_factory=lambda: list(FAULTS))


def dataset_classes(folder: str | Path) -> list[str] | None:
    """The class names a dataset folder's ``dataset.yaml`` declares, the good class first (its
    ``good``, else the first listed), or None when it declares none (an older simulator dataset)."""
    meta_file = Path(folder) / "dataset.yaml"
    if missing(meta_file):
        return None
    meta = read_dataset_yaml(meta_file) or {}
    classes = meta.get("classes") if isinstance(meta, dict) else None
    if not classes:
        return None
    if (
        not isinstance(classes, list)
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise DatasetError(
            f"{meta_file}: 'classes' must be a list of distinct names, got {_SHORT.repr(classes)}"
        )
    good = meta.get("good", classes[0])
    if good not in classes:
        raise DatasetError(f"{meta_file}: good class {good!r} is not one of classes {classes}")
    return [good, *[c for c in classes if c != good]]


def load_parts(folder: str | Path, classes: list[str] | None = None, masks: bool = False) -> PartsData:
    """Images and labels of a dataset folder; class names from its ``dataset.yaml`` (the good class
    is index 0), else the simulator's six. ``masks``: also read each row's defect ``mask`` (grey)."""
    import cv2

    from protocols.sample_camera import camera_size

    folder = Path(folder)
    # classes the caller or dataset.yaml names must each have an image; the simulator's six, taken where
    # neither names any, need not
    declared = "the classes given" if classes else ""
    if not classes:
        classes = dataset_classes(folder)
        declared = "dataset.yaml" if classes else ""
    classes = classes or VISION_CLASSES
    labels_file = folder / "labels.jsonl"
    if missing(labels_file):
        raise DatasetError(
            f"{folder}: no labels.jsonl; write one with `edge-sim dataset parts --out {folder}`"
        )
    h = hashlib.sha256()
    max_mp, raise_limit = dataset_max_megapixels(folder), limit_advice(folder)
    declared_wh = dataset_camera_size(folder)
    images, labels, ids, mask_list, splits = [], [], [], [], []
    cameras: list[tuple[int, int] | None] = []
    lines = label_lines(labels_file)
    memory = _MemoryBudget(folder, len(lines), " with their tiles and masks" * masks)
    for n, line in lines:
        row = label_row(line, f"{labels_file}:{n}")
        file, label = row["file"], row["label"]
        if label not in classes:
            raise DatasetError(f"{labels_file}:{n}: label {label!r} is not one of {classes}")
        path = dataset_file(folder, file, f"{labels_file}:{n}")
        if not path.is_file():
            raise DatasetError(f"{labels_file}:{n}: names {file}, which does not exist in {folder}")
        # at its own depth: a 16-bit image put in by hand would be divided by 256 (a Mono12 one: black)
        data, img = read_image_file(
            path,
            cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH,
            max_mp,
            f"{labels_file.name} line {n}",
            raise_limit,
            inside=(folder, "the dataset folder"),
        )
        _eight_bit_only(img, path, f"{labels_file.name} line {n}")
        mdata, mask = _mask(folder, row.get("mask"), img.shape[:2], labels_file, n, max_mp, masks)
        digest_part(h, data, label, mdata)
        # a tiled build (masks) copies each image's tiles beside it and holds its grey mask: 2 1/3 times
        memory.add(img, img.nbytes * 4 // 3 if masks else 0)
        images.append(img)
        cameras.append(camera_size(data) or declared_camera(row, declared_wh))
        labels.append(classes.index(label))
        ids.append(str(row.get("id", file)))
        splits.append(row.get("split") if row.get("split") in ("train", "test") else None)
        if masks:
            mask_list.append(mask)
    if not images:
        raise DatasetError(f"{folder}: the dataset is empty")
    digest_camera(h, declared_wh)
    lab = np.asarray(labels)
    present = sorted({classes[i] for i in lab})
    if len(present) < 2:
        raise DatasetError(
            f"{folder}: only class {present} present; a classifier needs at least two classes "
            "(ok and at least one defect)"
        )
    if classes[0] not in present:
        raise DatasetError(
            f"{folder}: no image of the good class {classes[0]!r}; a classifier needs good parts too"
        )
    absent = [c for c in classes if c not in present]
    if absent and declared:
        # the model gets an output for each class: one that no image taught answered at random on every part
        more = (
            f" (nor {', '.join(map(repr, absent[1:4]))}{', ...' if len(absent) > 4 else ''})"
            if absent[1:]
            else ""
        )
        raise DatasetError(
            f"{folder}: {declared} names class {absent[0]!r}, which no image in labels.jsonl has{more}: the model "
            "would get an output for it that no image trained; add its images, or remove it from the classes"
        )
    return PartsData(
        images,
        lab,
        ids,
        classes,
        "sha256:" + h.hexdigest(),
        mask_list if masks else None,
        splits=splits if any(splits) else None,
        camera_sizes=cameras,
    )


# training holds every decoded image in memory (and its tensors, models and copies beside them): the
# images may take this share of the memory free when the build starts
MEMORY_SHARE = 0.6


class _MemoryBudget:
    """The decoded images of ``load_parts`` against the memory free: a dataset whose images would not fit
    is refused as soon as that shows (after 16 images, by their mean size; or when they no longer fit),
    with its figures, rather than the build being killed for want of memory part-way (a 5-MP colour
    image takes 15 MB decoded: 5,000 of them 75 GB)."""

    def __init__(self, folder: Path, count: int, beside: str = ""):
        self.folder, self.count, self.read, self.bytes, self.beside = folder, count, 0, 0, beside
        free = memory_available_bytes()
        self.free, self.budget = free, None if free is None else int(free * MEMORY_SHARE)

    def add(self, img: np.ndarray, beside: int = 0) -> None:
        """One image read, and ``beside`` bytes that training will hold for it (tiles, a mask)."""
        self.read += 1
        self.bytes += img.nbytes + beside
        if self.budget is None or self.free is None:
            return
        whole = self.bytes * self.count // self.read
        if self.bytes > self.budget or (self.read >= min(16, self.count) and whole > self.budget):
            raise DatasetError(
                f"{self.folder}: its {self.count} images take about {_amount(whole)} decoded{self.beside} (the first "
                f"{self.read}: {_amount(self.bytes)}), and training holds them all in memory; "
                f"{_amount(self.free)} is free here. Import them smaller (cropped to the part, or scaled to "
                "what the model needs), or fewer, or build on a machine with more memory"
            )


def _amount(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


# where a cgroup's memory limit, usage and its statistics' reclaimable page-cache lines are (v2, then v1)
CGROUP_MEMORY = (
    ("/sys/fs/cgroup", "memory.max", "memory.current", ("inactive_file", "active_file")),
    (
        "/sys/fs/cgroup/memory",
        "memory.limit_in_bytes",
        "memory.usage_in_bytes",
        ("total_inactive_file", "total_active_file"),
    ),
)


def _own_cgroups(folder: str, v1: bool, lines: list[str]) -> list[Path]:
    """``folder`` (the cgroup file system's root as mounted here) and, where this process's cgroup (``lines``:
    /proc/self/cgroup's) lies below it, that cgroup and each above it: without a cgroup namespace (a Slurm job, a
    systemd unit's MemoryMax=, a container run with the host's cgroups) the root is the machine's, unlimited,
    and the limit is on the process's own cgroup."""
    found = [Path(folder)]
    for line in lines:  # "0::/path" (v2), "4:memory:/path" (v1)
        controllers, _, path = line.partition(":")[2].partition(":")
        if (v1 and "memory" in controllers.split(",")) or (not v1 and not controllers and path):
            parts = [p for p in path.strip().split("/") if p and p not in (".", "..")]
            found += [Path(folder, *parts[:i]) for i in range(len(parts), 0, -1)]
    return found


def memory_available_bytes(
    meminfo: str = "/proc/meminfo", cgroups=CGROUP_MEMORY, own: str = "/proc/self/cgroup"
) -> int | None:
    """The memory this process may still take: Linux's MemAvailable, or less when a cgroup (a container's,
    a job scheduler's; this process's own or one above it) limits it; None when neither can be read."""
    found = []
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        lines = Path(own).read_text().splitlines()
    except OSError:
        lines = []
    levels = [
        (level, limit_name, used_name, cache_names)
        for root, limit_name, used_name, cache_names in cgroups
        for level in _own_cgroups(root, limit_name == "memory.limit_in_bytes", lines)
    ]
    for folder, limit_name, used_name, cache_names in levels:
        try:
            limit = Path(folder, limit_name).read_text().strip()
            if limit == "max" or int(limit) >= 1 << 60:  # no limit (v1 writes a huge number for it)
                continue
            used = int(Path(folder, used_name).read_text())
            # the usage counts the page cache (the files just read): given back on demand before the cgroup's
            # process is killed, its inactive part and its active one (a file read twice: an import run again)
            # alike, as MemAvailable counts the machine's
            for line in Path(folder, "memory.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key in cache_names:
                    used -= int(value)
            found.append(max(0, int(limit) - used))
        except (OSError, ValueError):
            pass
    return min(found) if found else None


def _mask(
    folder: Path,
    file: str | None,
    shape: tuple[int, int],
    labels_file: Path,
    n: int,
    max_mp: float | None,
    decode: bool = True,
) -> tuple[bytes | None, np.ndarray | None]:
    """(its bytes, the grey mask, or None unless ``decode``) of a row's mask; (None, None) for a row without one.
    Its bytes are read whether or not it is decoded: they are part of the dataset's digest."""
    import cv2

    if not file:
        return None, None
    path = dataset_file(folder, file, f"{labels_file}:{n} (its mask)")
    if not path.is_file():
        raise DatasetError(f"{labels_file}:{n}: mask {file} is missing; fix or drop the row's 'mask'")
    named_by = f"the mask of {labels_file.name} line {n}"
    if not decode:
        return read_image_bytes(path, max_mp, named_by, inside=(folder, "the dataset folder")), None
    data, m = read_image_file(
        path,
        cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH,
        max_mp,
        named_by,
        inside=(folder, "the dataset folder"),
    )
    _eight_bit_only(m, path, named_by, mask=True)  # a 16-bit mask's defect value 1 would be read as 0 (good)
    if m.shape != shape:
        raise DatasetError(f"{path}: mask is {m.shape[1]}x{m.shape[0]}, its image {shape[1]}x{shape[0]}")
    return data, m


# An NPZ (``windows.npz``, a run the vibration import reads) is a zip of ``.npy`` members, the user's file:
# numpy allocates what a member's header declares and inflates what the zip holds, and a few KB of deflated
# zeros stand for gigabytes (a zip bomb), which filled the shared trainer's memory, every tenant's jobs with
# it. The arrays of one NPZ may together hold at most this much, checked from the zip's declared sizes and
# each ``.npy`` header before anything is allocated or inflated: 512 million float32 samples, 250,000
# windows of 2048 (14 hours of a 10 kHz signal cut end to end), more than training holds for one job.
NPZ_MAX_BYTES = 2 * 1024 * 1024 * 1024
# the arrays of a vibration dataset's windows.npz that training reads (any other member is left unread)
VIBRATION_ARRAYS = ("waveform", "fault", "health", "rul_s", "run_id", "t_s", "speed_rpm")


class NpzObjectArray(ValueError):
    """An NPZ member holds Python objects (a pickle), which is never loaded; ``args[1]``: the array's name."""

    def __str__(self) -> str:
        return str(self.args[0])


def npz_arrays(
    source: Any, path: Path | str, names: set[str] | None = None, limit: int | None = None
) -> dict[str, np.ndarray]:
    """The arrays of the NPZ ``source`` (a path or a binary file object), or only those named in ``names``,
    each read from its ``.npy`` member with no more memory than its header declares. An NPZ whose members
    declare more than ``limit`` bytes (default ``NPZ_MAX_BYTES``) in the zip's directory or their
    ``.npy`` headers is a ``DatasetError`` naming ``path`` and the member, raised before anything is
    inflated; a member whose data is longer than declared is read no further. Anything else numpy or the zip
    cannot read raises as they do (``zipfile.BadZipFile``, ``ValueError``, ``EOFError``, ...);
    ``NpzObjectArray`` for Python objects."""
    import zipfile

    fmt = np.lib.format
    cap = NPZ_MAX_BYTES if limit is None else limit
    out: dict[str, np.ndarray] = {}
    total = 0
    with zipfile.ZipFile(source) as zf:
        for info in zf.infolist():
            key = info.filename.removesuffix(".npy")
            if names is not None and key not in names:
                continue
            total += info.file_size
            if info.file_size > cap or total > cap:
                raise DatasetError(
                    f"{path}: member {info.filename!r} declares {info.file_size:,} bytes uncompressed"
                    f"{f' ({total:,} with the members before it)' if total != info.file_size else ''}, more "
                    f"than the {cap:,} an NPZ may hold; refused unread (a zip bomb, or more data than "
                    "training holds for one job: split it)"
                )
            with zf.open(info) as member:
                version = fmt.read_magic(member)
                if version not in ((1, 0), (2, 0), (3, 0)):
                    raise ValueError(f"{info.filename}: .npy format version {version} is not read here")
                if version == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(member)
                else:  # 3.0 is 2.0 with a UTF-8 header
                    shape, fortran, dtype = fmt.read_array_header_2_0(member)
                if dtype.hasobject:
                    raise NpzObjectArray(
                        f"{info.filename}: Object arrays cannot be loaded when allow_pickle=False", key
                    )
                count = 1
                for d in shape:
                    count *= d
                nbytes = count * dtype.itemsize
                if nbytes > info.file_size:
                    # the zip gives no more than its declared size: such a member is cut short anyway
                    raise DatasetError(
                        f"{path}: member {info.filename!r} declares an array of shape {shape} ({nbytes:,} "
                        f"bytes) in {info.file_size:,} bytes; refused unread (a damaged or crafted file)"
                    )
                data = np.empty(count, dtype=dtype)
                buf = data.view(np.uint8).data if nbytes else memoryview(b"")
                got = 0
                assert isinstance(member, io.BufferedIOBase)  # zipfile's ZipExtFile: it has readinto
                while got < nbytes:  # a MiB at a time, into the array itself: never more than declared
                    n = member.readinto(buf[got : got + (1 << 20)])
                    if not n:
                        raise EOFError(f"{info.filename}: cut short ({got:,} of {nbytes:,} bytes)")
                    got += n
            out[key] = data.reshape(shape, order="F" if fortran else "C")
    return out


# the highest rate a vibration dataset may state: 1 GHz, the finest a nanosecond timestamp can state. `dataset
# import --kind vibration` takes a run's rate from its NPZ or its timestamps unbounded (a WAV header's and
# --rate-hz at most 10 MHz, signals.MAX_WAV_RATE_HZ): bounded at 10 MHz here, an acoustic-emission capture at
# 20 MHz imported and was refused by training, which had trained it
MAX_SAMPLE_RATE_HZ = 1_000_000_000


NOT_FINITE_CHUNK = (
    1 << 22
)  # values judged at a time once an array is known to hold a NaN or Inf: 4 MB of flags


def not_finite(a: np.ndarray) -> tuple[int, int] | None:
    """(how many values of ``a`` are NaN or Inf, the first one's index along its first axis: its window), or
    None when every value is finite (or ``a`` holds no floats). Its smallest and largest values tell (NaN and Inf
    carry through both) without a flag per value: ``np.isfinite`` over a 2 GiB waveform allocated 512 MB more
    at the trainer's peak. Counted in chunks only when there is something to count."""
    if a.dtype.kind != "f" or not a.size or (np.isfinite(a.min()) and np.isfinite(a.max())):
        return None
    rows = max(1, NOT_FINITE_CHUNK // max(1, a.size // len(a)))  # whole windows: a view of any memory order
    count, first = 0, 0
    for start in range(0, len(a), rows):
        bad = ~np.isfinite(a[start : start + rows])
        if (n := int(np.count_nonzero(bad))) and not count:
            first = start + int(np.argmax(bad.reshape(len(bad), -1).any(axis=1)))
        count += n
    return count, first


def yaml_number(value: Any) -> float | None:
    """A ``dataset.yaml`` number as the file gives it (None when it is none): a YAML number, or text that reads
    as one, as these values were read before they were checked (``float()``): PyYAML reads ``1e4`` (YAML 1.1:
    an exponent without its sign) and a quoted ``'25600'`` as text. NaN, Inf and bounds are the caller's."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except (ValueError, OverflowError):  # text that is no number; an integer past float's range
        return None


def _vibration_meta(meta: Any, meta_file: Path, samples: int, stated: bool) -> tuple[int, float]:
    """``dataset.yaml``'s ``window_samples`` (``samples`` when absent or not ``stated``: the caller's or the
    windows' own) and ``sample_rate_hz``, each refused in one line naming the file when it is not a number
    that can be: the rate was taken as 10 kHz when missing (a model trained and declared at a rate its signal
    never had) and ended in a traceback when written as text (``25.6 kHz``)."""
    meta = meta if isinstance(meta, dict) else {}
    ws = meta.get("window_samples", samples) if stated else samples
    n = yaml_number(ws)
    if n is None or not math.isfinite(n) or n != int(n) or n < 8:
        raise DatasetError(
            f"{meta_file}: window_samples is {_SHORT.repr(ws)}; it is the samples in each window, a whole number "
            "of 8 or more"
        )
    if "sample_rate_hz" not in meta:
        raise DatasetError(
            f"{meta_file}: no sample_rate_hz; give the rate the windows were sampled at, in Hz "
            "(sample_rate_hz: 25600): the model's features and the agent's windows depend on it"
        )
    rate = meta["sample_rate_hz"]
    hz = yaml_number(rate)
    if hz is None or not math.isfinite(hz) or not 0 < hz <= MAX_SAMPLE_RATE_HZ:
        raise DatasetError(
            f"{meta_file}: sample_rate_hz is {_SHORT.repr(rate)}; it is the windows' sample rate, a number of Hz "
            f"above 0 and at most {MAX_SAMPLE_RATE_HZ:,} (sample_rate_hz: 25600)"
        )
    return int(n), hz


def load_vibration(folder: str | Path, window_samples: int | None = None) -> VibrationData:
    folder = Path(folder)
    npz, meta_file = folder / "windows.npz", folder / "dataset.yaml"
    if missing(npz) or missing(meta_file):
        raise DatasetError(
            f"{folder}: needs windows.npz and dataset.yaml (`edge-sim dataset vibration --out {folder}`)"
        )
    meta = read_dataset_yaml(meta_file) or {}
    in_its_folder(npz)
    try:  # read once: where it lies checked once open, and the digest of the very bytes trained on
        with open(npz, "rb") as fh:
            opened_in_its_folder(fh.fileno(), npz)
            # an NPZ holds its arrays and a little zip: larger is refused unread, not read whole
            if (size := os.fstat(fh.fileno()).st_size) > NPZ_MAX_BYTES + NPZ_MAX_BYTES // 64:
                raise DatasetError(
                    f"{npz}: {size:,} bytes, more than the arrays an NPZ may hold ({NPZ_MAX_BYTES:,} bytes); "
                    "refused unread: split the dataset"
                )
            windows = fh.read()
    except OSError as exc:
        raise DatasetError(f"{npz}: cannot read it ({exc.strerror or exc})") from None
    try:
        z: dict[str, Any] = npz_arrays(io.BytesIO(windows), npz, set(VIBRATION_ARRAYS))
        try:
            wf, fault = z["waveform"], z["fault"]
            health, rul, run = z["health"], z["rul_s"], z["run_id"]
            t_s, speed = z.get("t_s"), z.get("speed_rpm")
        except KeyError as exc:
            raise DatasetError(f"{npz}: missing array {exc}") from exc
    except DatasetError:
        raise
    except (
        Exception
    ) as exc:  # the user's file: no NPZ, cut short, Python objects (ValueError, BadZipFile, ...)
        said = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise DatasetError(
            f"{npz}: not a readable windows file ({type(exc).__name__}: {said}); write the dataset again "
            "(`cloud-trainer dataset import --kind vibration`, `edge-sim dataset vibration`)"
        ) from None
    if wf.ndim != 2 or wf.shape[0] == 0:
        raise DatasetError(f"{npz}: the dataset is empty")
    t_s = np.zeros(len(wf)) if t_s is None else t_s
    # numbers, one a window (the fault's names are checked below): text or another count stopped training
    # with a ValueError or IndexError traceback
    per_window = {
        "fault": fault,
        "health": health,
        "rul_s": rul,
        "run_id": run,
        "t_s": t_s,
        "speed_rpm": speed,
    }
    for name, a in {"waveform": wf, **per_window}.items():
        if a is not None and name != "fault" and a.dtype.kind not in "iuf":
            raise DatasetError(f"{npz}: array {name!r} holds {a.dtype} values, not numbers; write it again")
    for name, a in per_window.items():
        if a is not None and a.shape != (len(wf),):
            raise DatasetError(
                f"{npz}: array {name!r} holds {a.size} values (shape {a.shape}), not one for each of the "
                f"{len(wf)} windows; write it again"
            )
    speed = None if speed is None else speed.astype(np.float64)
    for name, a in {"waveform": wf, "health": health, "t_s": t_s, "speed_rpm": speed}.items():
        if a is not None and (bad := not_finite(a)) is not None:
            raise DatasetError(
                f"{npz}: array {name!r} holds {bad[0]} value(s) that are not finite (NaN or Inf), the first in "
                f"window {bad[1]}; write it again without them (a gap in a recording is a cut between runs)"
            )
    expect, rate = _vibration_meta(meta, meta_file, window_samples or wf.shape[1], window_samples is None)
    if wf.shape[1] != expect:
        raise DatasetError(
            f"{npz}: windows have {wf.shape[1]} samples, expected {expect} "
            "(window_samples in dataset.yaml / the model spec)"
        )
    classes = fault_classes(meta, meta_file)
    unknown = sorted(set(fault.tolist()) - set(classes))
    if unknown:
        raise DatasetError(
            f"{npz}: unknown fault labels {unknown}; expected {classes} (list others under 'faults' in "
            "dataset.yaml)"
        )
    idx = np.asarray([classes.index(f) for f in fault.tolist()])
    if len(set(idx.tolist())) < 2:
        raise DatasetError(f"{folder}: only one fault class present; need healthy and faulty runs")
    if not (idx == 0).any():
        raise DatasetError(
            f"{folder}: no healthy runs: no window is labelled 'healthy' (faults {sorted(set(fault.tolist()))}); "
            "the model learns a fault against the healthy machine: label the healthy runs 'healthy', or import "
            "the dataset again with --healthy NAME naming the class that holds them"
        )
    for warning in healthy_looking_faults(meta, classes, meta_file):
        print(f"warning: {warning}", file=sys.stderr)
    h = hashlib.sha256(windows).hexdigest()
    return VibrationData(
        wf.astype(np.float32),
        idx,
        health.astype(np.float32),
        rul.astype(np.float64),
        run.astype(np.int64),
        t_s.astype(np.float64),
        expect,
        rate,
        "sha256:" + h,
        speed,
        meta if isinstance(meta, dict) else {},
        str(folder),
        classes,
    )


def split_indices(
    n: int, seed: int, val: float = 0.15, test: float = 0.15, labels: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    """(train, validation, test) rows, seeded. With ``labels``, every class of three or more images has
    at least one in each split, and the defect images together too (class 0 is good): a
    random split of 3 defect images beside 300 good ones left the test split without a defect 62 % of
    the time, and the gate then reported an NG recall of 0 for a model it could not judge. The sizes
    stay; an image of the class most present in that split goes to training in exchange."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(n * test)), int(round(n * val))
    tr, va, te = perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]
    if labels is None or not len(va) or not len(te):
        return tr, va, te
    y = np.asarray(labels)
    groups = [y == c for c in np.unique(y)] + [y != 0]  # each class, then the defect images together
    parts = [tr.copy(), va.copy(), te.copy()]
    for member in groups:
        if member.sum() < 3:
            continue
        for k in (2, 1, 0):  # test, validation, training
            if member[parts[k]].any():
                continue
            # in exchange: an image of the class most present in this split, so that none leaves it
            classes, counts = np.unique(y[parts[k]], return_counts=True)
            if counts.max() < 2:
                continue  # a split of one image per class: any exchange would empty another class
            give_at = np.flatnonzero(y[parts[k]] == classes[counts.argmax()])[-1]
            # taken from the split holding most of them (two or more: it keeps one), training first
            src = max((j for j in (0, 1, 2) if j != k), key=lambda j: member[parts[j]].sum())
            take_at = np.flatnonzero(member[parts[src]])[0]
            parts[k][give_at], parts[src][take_at] = parts[src][take_at], parts[k][give_at]
    return parts[0], parts[1], parts[2]


def split_parts(data: PartsData, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(train, validation, test) rows of a vision dataset, and how they were chosen (for the report).

    By source image: a tiled build's tiles of one image (``data.groups``) all go to one side; split
    tile by tile, the gate's test tiles had neighbours (overlapping pixels of the same part) in training
    and its figures were optimistic. The dataset's own split (MVTec AD's ``train/`` and ``test/``,
    ``data.splits``), when its ``test/`` holds good and defect images: ``test/good`` is the gate's, never
    trained on, and so is about half of each defect class of ``test/`` (seeded; the layout keeps every
    defect image there, and a classifier needs some to learn its threshold and defect names from); the
    rest train and validate. Otherwise ``split_indices`` over the images (70/15/15, every class on each
    side); rows of an untiled dataset without a split of its own are split exactly as before."""
    y = np.asarray(data.labels)
    groups = np.arange(len(y)) if data.groups is None else np.asarray(data.groups)
    keys, first, inv = np.unique(groups, return_index=True, return_inverse=True)
    members: list[list[int]] = [[] for _ in keys]
    for row, g in enumerate(inv.tolist()):
        members[g].append(row)
    glab = np.zeros(len(keys), np.int64)  # an image's class: its tiles' defect class, if any tile has it
    np.maximum.at(glab, inv, y)
    tiled = data.groups is not None
    what = f"{len(keys)} images ({len(y)} tiles; every tile of an image on one side)" if tiled else "images"
    gsplit = [data.splits[i] for i in first] if data.splits else [None] * len(keys)
    in_test = np.asarray([sp == "test" for sp in gsplit], bool)
    if in_test.any() and (glab[in_test] == 0).any() and (glab[in_test] != 0).any():
        gtr, gva, gte, rule = _layout_split(glab, in_test, seed)
        rule += f"; split by source image, {what}" if tiled else ""
    else:
        gtr, gva, gte = split_indices(len(keys), seed, labels=glab)
        rule = f"seeded split of the {what}: 70/15/15, every class on each side"
        if in_test.any():
            rule += (
                "; the dataset's own test/ holds no "
                + ("defect" if (glab[in_test] == 0).all() else "good")
                + " image, so it is not the gate's test set alone"
            )

    def rows(gs: np.ndarray) -> np.ndarray:
        return np.asarray([r for g in gs.tolist() for r in members[g]], dtype=np.int64)

    return rows(gtr), rows(gva), rows(gte), rule


def _layout_split(
    label: np.ndarray, in_test: np.ndarray, seed: int, val: float = 0.15
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``split_parts`` on a dataset with its own test/ (images, not rows)."""
    rng = np.random.default_rng([seed, 41])
    test = list(np.flatnonzero(in_test & (label == 0)))
    n_defects = int((in_test & (label != 0)).sum())
    for c in np.unique(label[in_test & (label != 0)]):
        imgs = rng.permutation(np.flatnonzero(in_test & (label == c)))
        test += list(imgs[: len(imgs) // 2 if len(imgs) >= 2 else 0])
    n_test_good = int((in_test & (label == 0)).sum())
    n_test_defects = len(test) - n_test_good
    rest = np.setdiff1d(np.arange(len(label)), test)
    train: list[int] = []
    valid: list[int] = []
    for c in np.unique(label[rest]):  # validation: a share of each class (one at least, from three)
        imgs = rng.permutation(rest[label[rest] == c])
        k = max(1, int(round(val * len(imgs)))) if len(imgs) >= 3 else 0
        valid += list(imgs[:k])
        train += list(imgs[k:])
    as_rows = lambda v: rng.permutation(np.asarray(v, dtype=np.int64))  # noqa: E731
    rule = (
        f"the dataset's own split (MVTec AD layout): the gate's test set is test/good ({n_test_good} images, "
        f"never trained on) and {n_test_defects} of the {n_defects} defect images of test/ (about half of each "
        "class, seeded); train/good and the other defect images train and validate (the layout holds no other "
        "defect images to learn the threshold and the defect names from)"
    )
    return as_rows(train), as_rows(valid), as_rows(test), rule


def split_runs(run_id: np.ndarray, fault: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    """By run, so that test machines are unseen: per fault class, runs go to train/val/test in turn."""
    rng = np.random.default_rng(seed)
    train: list[Any] = []
    val: list[Any] = []
    test: list[Any] = []
    for f in sorted(set(fault.tolist())):
        runs = sorted(set(run_id[fault == f].tolist()))
        rng.shuffle(runs)
        for k, r in enumerate(runs):  # train first, then test, then val, then train again
            (train, test, val)[k].append(r) if k < 3 else train.append(r)
    pick = lambda rs: np.flatnonzero(np.isin(run_id, rs))  # noqa: E731
    return pick(train), pick(val), pick(test)
