"""Training data from what the fleet saw: the cloud store's uploaded samples, with labels.

``cloud-trainer dataset`` turns the vision samples agents uploaded (kept in the cloud store, images
in its blob store) into a dataset folder that ``train``/``build`` read, optionally on top of a base
dataset (e.g. the simulator's). Labels are ground truth, never the model's own verdicts: they come
from a labels file (JSON lines ``{"sha256": ..., "label": ...}``, e.g. from an inspector's station or
the simulators' ground truth), are recorded in the store (``label_state = 'labelled'``) so they
accumulate across exports, and every labelled sample of the model is exported. Unlabelled samples
are counted and left out.

Images are taken in every kind the import reads (``images.IMAGE_EXTS``: PNG, JPEG under .jpg/.jpeg/.jpe/.jfif,
BMP, TIFF, WebP, PNM), their extension compared in any case and with or without its dot (``.TIF``, ``png``), and
written under it in lower case with its dot. A sample is an image by its bytes as the import and the console
judge it (``protocols.image_header.image_kind``): one whose bytes are another image kind than its extension says (a
JPEG uploaded as ``.png``) is exported under its kind's extension, as the import stores it, and all such are said
in one line; a labelled sample whose extension is of no image kind (``.npy``, none at all) is exported when its
first bytes are an image the trainer reads (a PNG uploaded as ``.npy``), read for that (one ranged read of
``SNIFF_BYTES``) only when labelled or named in the labels file, so a store of signal windows is not read. The
others are left out, counted (``not_images``; an unlabelled sample under another extension among them, its
bytes unread) and said in one line with their extensions.

Each exported sample is checked as training reads it (``sample_problem``: decoded with the camera's image checks,
``protocols.image_header.decode_image``; 8-bit): a damaged, 16-bit, non-image or oversized upload is left out,
counted (``refused``) and said in one line naming its digest, agent, seq and why, instead of stopping ``train``
later. The size limit is the base's (``dataset.yaml``: ``max_megapixels``),
else training's default, or ``--max-megapixels`` (not below the base's); it is recorded in the dataset's
``dataset.yaml`` with ``fleet_export`` (model, tenant), so that training reads the samples by it and its advice
for an image over it names this export, not ``dataset import``.

A labels file naming a sample the store does not have, or a label that is not a class, is an error
that names the line; nothing is written then.

Tenants: an export reads one tenant's samples (``--tenant``, the default tenant when not given) from its
rows in the store and its blobs (``BlobStore.for_tenant``), and labels only that tenant's samples: a
labels file naming another tenant's sample is refused like a sample that does not exist, with nothing
written. The store and blob store are the service's (``--store``, ``--blobs``, ``--s3-endpoint``: the same
options as ``cloud-trainer serve``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path

from cloud_trainer.train.data import (
    CAMERA_MAX_MEGAPIXELS,
    LABELS_MAX_BYTES,
    LABELS_MAX_LINE_BYTES,
    VISION_CLASSES,
    DatasetError,
    dataset_classes,
    dataset_file,
    dataset_max_megapixels,
    label_lines,
    label_row,
    link_text,
    opened_at,
    read_capped,
    within,
)
from cloud_trainer.train.images import IMAGE_EXTS, inside, new_dataset_folder, stopped_cleanly

# ``fleet_export: {classes: labelled}`` in an export's dataset.yaml: its classes are the ones its samples were
# labelled in (no base chose them), so an export on it may add the ones the fleet labels later
CLASSES_OF_SAMPLES = "labelled"


def image_ext(sample: dict) -> str | None:
    """The image extension a sample is stored under (``.tif`` for ``.TIF`` or ``tif``), or None when its
    extension is of no image kind the trainer reads (``images.IMAGE_EXTS``)."""
    from cloud_trainer.fleet.store import sample_kind

    ext = sample_kind(sample["ext"])
    return ext if ext in IMAGE_EXTS else None


def kind_ext(head: bytes) -> tuple[str, str] | None:
    """``(kind, extension)`` of the image a sample's first bytes are (``image_kind``; a PNM's extension by its
    magic), when it is of a kind the trainer reads (``images.IMAGE_EXTS``: not GIF), else None."""
    from protocols.image_header import image_kind, kind_suffix

    kind, suffix = image_kind(head), kind_suffix(head)
    return (kind, suffix) if kind is not None and suffix in IMAGE_EXTS else None


def _images_by_bytes(blobs, samples: list[dict]) -> dict[str, str]:
    """``{sha256: extension}`` of those ``samples`` (under no image extension) whose first bytes are an image the
    trainer reads: one ranged read each; a blob missing or unreadable is none."""
    from protocols.image_header import SNIFF_BYTES

    out: dict[str, str] = {}
    for s in samples:
        if s["sha256"] in out:
            continue
        try:  # not found, an object store's error, an empty blob (S3 refuses its range): no image by its bytes
            head = blobs.read_range(s["sha256"], 0, SNIFF_BYTES)
        except Exception:
            continue
        if found := kind_ext(head):
            out[s["sha256"]] = found[1]
    return out


def sample_problem(data: bytes, max_megapixels: float) -> str | None:
    """Why training would refuse a sample's bytes, or None: what training checks (``data.decode_checked``: kind,
    ``max_megapixels``, truncated or damaged data; 8-bit pixels). Its extension is not asked: the export stores
    it under the kind its bytes are (``kind_ext``), as the import does and as the decoders read it."""
    import cv2
    import numpy as np

    from cloud_trainer.train.data import decode_checked
    from protocols.image_header import ImageRejected

    try:
        img = decode_checked(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH, max_megapixels)
    except ImageRejected as exc:
        return (
            f"{exc}; export with --max-megapixels N to take images this large" if exc.oversize else str(exc)
        )
    if img.dtype != np.uint8:  # training reads 8-bit images (the agent's camera sends them so)
        return f"{'16-bit' if img.dtype == np.uint16 else img.dtype} pixels, and training reads 8-bit images"
    return None


def _not_images_note(model: str, others: list[dict]) -> str:
    """One line naming the samples of ``model`` left out as no images (by extension; a labelled one's bytes
    read and of no image kind either), by extension."""
    from collections import Counter

    by_ext = Counter(repr(s["ext"] or "") for s in others)
    shown = ", ".join(f"{n} {ext}" for ext, n in by_ext.most_common(5)) + (", ..." if len(by_ext) > 5 else "")
    n = len(others)
    return (
        f"left out {n} sample{'s' if n > 1 else ''} of {model} that {'are' if n > 1 else 'is'} no image by "
        f"{'their extensions' if n > 1 else 'its extension'} nor, when labelled, by {'their' if n > 1 else 'its'} "
        f"bytes ({shown}; images are {', '.join(IMAGE_EXTS)}): an agent uploading other data under this model's "
        "name?"
    )


def read_labels(path: Path, classes: list[str]) -> dict[str, str]:
    """The inspectors' labels file, ``{"sha256": ..., "label": ...}`` a line, as their tools write it: a UTF-8
    byte order mark and CRLF line ends (Notepad, PowerShell) are read past, a digest in capitals (PowerShell's
    ``Get-FileHash``) is the same digest. A line that is not UTF-8 (a UTF-16 file) and a sample given two
    labels are refused naming the line(s). It is bounded as a dataset's ``labels.jsonl`` is (``LABELS_MAX_BYTES``,
    ``LABELS_MAX_LINE_BYTES``): a file of gigabytes (a wrong file given, a log) was read whole into memory."""
    out: dict[str, str] = {}
    lines: dict[str, int] = {}  # the line each sample's label came from
    try:
        with open(path, "rb") as fh:
            data, size = read_capped(fh, LABELS_MAX_BYTES)
    except OSError as exc:
        raise DatasetError(f"labels file {path}: {exc.strerror or exc}") from exc
    if size > LABELS_MAX_BYTES:
        raise DatasetError(
            f"labels file {path}: {size} bytes, more than the {LABELS_MAX_BYTES} a labels file may take; refused "
            "unread: give it in parts, one export each (the labels of each are kept in the store, so the last "
            "export holds them all)"
        )
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
    for n, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        if len(raw) > LABELS_MAX_LINE_BYTES:
            raise DatasetError(
                f"{path}:{n}: a line of {len(raw)} bytes, more than the {LABELS_MAX_LINE_BYTES} a label row may "
                "take; refused (a row is a sample's sha256 and its label: is this a labels file?)"
            )
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            kind = "; a UTF-16 file, as Windows PowerShell writes one" if utf16 else ""
            raise DatasetError(
                f"{path}:{n}: not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}{kind}): save the "
                "labels file as UTF-8"
            ) from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            sha, label = str(row["sha256"]).strip().lower().removeprefix("sha256:"), row["label"]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise DatasetError(
                f"{path}:{n}: not a label row with 'sha256' and 'label' ({str(exc).splitlines()[0][:200]})"
            ) from None
        if label not in classes:
            raise DatasetError(f"{path}:{n}: label {label!r} is not one of {classes}")
        if out.get(sha, label) != label:  # two inspectors' rows appended: which is right cannot be told
            raise DatasetError(
                f"{path}:{n}: labels sample {sha[:16]} {label!r}, but line {lines[sha]} labels it {out[sha]!r}; "
                "give each sample one label"
            )
        out[sha], lines[sha] = label, lines.get(sha, n)
    return out


def export(
    cloud_data: Path,
    model: str,
    out: Path,
    base: Path | None = None,
    labels_file: Path | None = None,
    classes: list[str] | None = None,
    *,
    tenant: str = "default",
    store: str | None = None,
    blobs=None,
    s3_endpoint: str | None = None,
    log=None,
    max_megapixels: float | None = None,
) -> dict:
    """Export ``tenant``'s labelled images of ``model``. ``store``: a ``postgresql://`` URL (default: the SQLite
    file in ``cloud_data``); ``blobs``: a ``BlobStore``, ``s3://bucket[/prefix]`` or a folder (default:
    ``<cloud_data>/blobs``); ``log``: where the notes on samples left out go, one line each (default:
    stderr); ``max_megapixels``: the dataset's image-size limit (default: the base's, else training's default
    for a dataset that records none), recorded in its ``dataset.yaml``."""
    from cloud_trainer.blobs import open_blobs
    from cloud_trainer.fleet.store import open_store
    from cloud_trainer.pki import check_tenant

    try:
        check_tenant(tenant)
    except ValueError as exc:
        raise DatasetError(f"--tenant: {exc}") from exc
    grows = classes is None and base is not None and _classes_of_samples(Path(base))
    classes = classes or (dataset_classes(base) if base is not None else None) or VISION_CLASSES
    if grows:  # a base-less export as the base: its classes grow by those the fleet labelled since
        classes = [*classes, *(c for c in VISION_CLASSES if c not in classes)]
    if max_megapixels is not None and (
        isinstance(max_megapixels, bool)
        or not isinstance(max_megapixels, int | float)
        or not max_megapixels > 0
    ):
        raise DatasetError(f"--max-megapixels must be a positive number of megapixels, got {max_megapixels}")
    base_mp = dataset_max_megapixels(base) if base is not None else None
    if max_megapixels is not None and base_mp is not None and max_megapixels < base_mp:
        raise DatasetError(
            f"--max-megapixels {max_megapixels:g} is below the base dataset's {base_mp:g} ({base}/dataset.yaml), "
            "which its images were imported within: training would refuse them; give at least that"
        )
    # a base that records no limit is read by training at its default, CAMERA_MAX_MEGAPIXELS: kept so
    limit = float(max_megapixels or base_mp or CAMERA_MAX_MEGAPIXELS)
    if store is None and not (Path(cloud_data) / "fleet.db").is_file():
        raise DatasetError(
            f"{cloud_data}: no fleet store (fleet.db); point --cloud-data at `cloud-trainer serve --data`"
        )
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} exists and is not empty; choose a new dataset folder")
    # copied into a hidden folder inside itself, the base was copied again into that copy: the export held a partial
    # copy of itself (that folder, images and all), and under images/ it went on until 'File name too long'
    if base is not None and inside(Path(out), Path(base)):
        raise DatasetError(f"--out {out} is inside the base {base}; choose a folder outside it")
    labels = read_labels(labels_file, classes) if labels_file else {}
    try:
        db = open_store(store, Path(cloud_data))
        if blobs is None or isinstance(blobs, str):
            blobs = open_blobs(blobs, Path(cloud_data), s3_endpoint=s3_endpoint)
    except (ConnectionError, ValueError) as exc:
        raise DatasetError(str(exc)) from exc
    blobs = blobs.for_tenant(tenant)
    if log is None:
        import sys

        log = lambda m: print(f"cloud-trainer dataset: {m}", file=sys.stderr)  # noqa: E731
    try:
        every = db.samples(model=model, tenant=tenant)
        # samples the service's retention (--retain-days) deleted: never in an export, said so
        retired = db.retired(tenant=tenant)
        gone = _retired_note(tenant, retired)
        known = {s["sha256"] for s in every if image_ext(s)}
        # a labelled sample under another extension is an image if its bytes are one (a PNG uploaded as .npy)
        known |= set(
            _images_by_bytes(blobs, [s for s in every if s["sha256"] in labels and s["sha256"] not in known])
        )
        missing = [sha for sha in labels if sha not in known]
        if missing:  # another tenant's samples are not in this tenant's rows: refused the same way
            raise DatasetError(
                f"labels file {labels_file} names {len(missing)} sample(s) the store has no "
                f"{model} image for in tenant {tenant!r}, e.g. {missing[:3]}" + (f" ({gone})" if gone else "")
            )
        if labels:
            db.set_labels(labels, tenant=tenant)
            with _labels_told(len(labels), labels_file, log):  # recorded: a stop in the read again says so
                every = db.samples(model=model, tenant=tenant)
    finally:
        db.close()
    if gone:
        log(gone)
    with _labels_told(len(labels), labels_file, log):  # recorded: a stop past here says so
        by_bytes = _images_by_bytes(
            blobs,
            [s for s in every if not image_ext(s) and s["label_state"] == "labelled"],
        )
        samples = [s for s in every if image_ext(s) or s["sha256"] in by_bytes]
        others = [s for s in every if not image_ext(s) and s["sha256"] not in by_bytes]
        if others:
            log(_not_images_note(model, others))
        rows, seen = [], set()
        for s in samples:
            if s["label_state"] != "labelled" or s["sha256"] in seen:
                continue
            if s["label"] not in classes:
                raise DatasetError(
                    f"the store labels sample {s['sha256'][:16]} {s['label']!r}, not one of {classes}"
                )
            seen.add(s["sha256"])
            rows.append(s)
        if base is not None:
            check_base(Path(base))
        # written into a hidden folder beside --out and renamed at the end, one sample read at a time: an
        # export that stops part way (a bad base file, a corrupt blob, a full disk, a kill) leaves no dataset
        # that a later build would take for the whole one
        try:
            # (what exports killed part way left beside it removed first)
            with new_dataset_folder(out, log) as tmp:
                exported, no_blob, refused = _write(tmp, rows, blobs, base, classes, limit, log, by_bytes)
                _record_export(tmp, model, tenant, limit, classes, grows)
        except (OSError, shutil.Error) as exc:
            why = exc.args[0][0][2] if isinstance(exc, shutil.Error) and exc.args and exc.args[0] else exc
            raise DatasetError(
                f"{out}: the dataset could not be written ({why}); nothing was written"
            ) from None
    return {
        "samples": len(samples),
        "exported": exported,
        "unlabelled": sum(s["label_state"] != "labelled" for s in samples),
        "missing_images": no_blob,
        "refused": refused,
        "max_megapixels": limit,
        "not_images": len(others),
        "labels_applied": len(labels),
        "retired_samples": int(retired.get("samples") or 0),
        "out": str(out),
    }


def _retired_note(tenant: str, retired: dict) -> str:
    """What the fleet service's retention deleted of ``tenant``'s samples (any model), or ''."""
    if not retired.get("samples"):
        return ""
    import datetime

    upto = datetime.datetime.fromtimestamp(float(retired.get("received_to") or 0), datetime.UTC)
    return (
        f"{retired['samples']} samples of tenant {tenant!r} (any model) received up to {upto:%Y-%m-%d %H:%M} UTC were "
        "deleted by the fleet service's retention (serve --retain-days): this export holds none of them"
    )


@contextlib.contextmanager
def _labels_told(n: int, labels_file: Path | None, log):
    """What stops the export after the labels of ``--labels`` were recorded in the store says so: it said "nothing
    was written" (an error, Ctrl-C) or nothing (SIGTERM, SIGHUP), though they were (running it again records the
    same labels)."""
    if not n:
        yield
        return
    note = f"no dataset was written; the {n} label(s) of {labels_file} are recorded in the store"
    try:
        yield
    except DatasetError as exc:
        raise DatasetError(f"{str(exc).replace('; nothing was written', '')}; {note}") from None
    except KeyboardInterrupt:  # (said by ``stopped_cleanly``)
        raise KeyboardInterrupt(note) from None
    except SystemExit:  # SIGTERM, SIGHUP (``stopped_cleanly``)
        log(note)
        raise


def check_base(base: Path) -> None:
    """A base dataset's ``labels.jsonl`` as training reads it, before anything is written: each line UTF-8, a
    label row, naming a file inside the base's folder; and no link in the base leading out of it, nor one to
    a folder. A ``../`` step, an absolute path or a link out would copy another folder's files (another
    tenant's, on a shared trainer) into the export; a linked folder is copied again, without end when it
    leads back up."""
    labels_file = base / "labels.jsonl"
    if not labels_file.is_file():
        raise DatasetError(f"base dataset {base}: no labels.jsonl")
    root = os.path.realpath(base)
    for folder, dirs, files in os.walk(base):  # the base is copied whole, its links read through
        for name in dirs + files:
            p = os.path.join(folder, name)
            # said as written in the link, whether or not anything is where it leads (nor where that is once
            # resolved: another tenant's tree); one inside that leads nowhere is refused by the copy, naming it
            if os.path.islink(p) and not within(os.path.realpath(p), root):
                raise DatasetError(
                    f"base dataset {base}: {p} is a link to {os.readlink(p)}, outside the base's "
                    "folder; a base is copied into the export whole, and only what lies inside it is: copy the "
                    "file in, or remove the link"
                )
            # inside, but copied whole a linked folder is copied again, and one leading back up ('..') without
            # end: two such links made the copy of a small base run for ever, filling the disk
            if os.path.islink(p) and os.path.isdir(p):
                raise DatasetError(
                    f"base dataset {base}: {p} is a link to the folder {os.readlink(p)}; a base is copied into the "
                    "export whole, a linked folder again beside its original (one leading back up without end): "
                    "copy the folder in, or remove the link"
                )
    for n, line in label_lines(labels_file):
        row = label_row(line, f"{labels_file}:{n}")
        if not dataset_file(base, row["file"], f"{labels_file}:{n}").is_file():
            raise DatasetError(f"{labels_file}:{n}: names {row['file']}, which does not exist in {base}")
        # said as training says it: a missing mask was "not a label row with a readable 'file' and a 'label'"
        # (its bytes are in the digest, ``data.digest_part``)
        mask = row.get("mask")
        if (
            isinstance(mask, str)
            and mask
            and not dataset_file(base, mask, f"{labels_file}:{n} (its mask)").is_file()
        ):
            raise DatasetError(f"{labels_file}:{n}: mask {mask} is missing; fix or drop the row's 'mask'")


def _copy_inside(src: Path, dst: Path, base: Path, root: str) -> None:
    """Copy one file of the base, once sure that the file opened lies inside the base's folder (``root``, its
    real path). ``check_base`` looked at every link before; copied by its path again, a file replaced in
    between by a link out (the base is the user's folder, written while the export runs) put another tenant's
    file in the export. Where the open file lies: ``data.opened_at``."""
    fd = os.open(src, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fsrc:
        st = os.fstat(fd)
        if not within(opened_at(fd, src), root):
            raise DatasetError(
                f"base dataset {base}: {src}{link_text(src)} leads outside the base's folder when copied (a link "
                "put in its place after the base was checked); only what lies inside the base is copied: copy "
                "the file in, or remove the link; nothing was written"
            )
        if not stat.S_ISREG(st.st_mode):  # a named pipe, a device: as shutil.copyfile refuses one
            raise shutil.SpecialFileError(f"`{src}` is not a regular file")
        with open(dst, "wb") as fdst:
            shutil.copyfileobj(fsrc, fdst)
    os.chmod(dst, stat.S_IMODE(st.st_mode))  # its permissions, as copy2 kept them (not by the path again)


def _base_samples(labels: Path) -> dict[str, list[int]]:
    """The fleet samples an earlier export wrote into a base's ``labels.jsonl`` (``source.sha256``), each with the
    indexes (from 0) of the lines holding it: more than one in a base an export made before it dropped the base's
    rows (a sample in twice, in two classes where it had been labelled again)."""
    found: dict[str, list[int]] = {}
    with open(labels, encoding="utf-8") as f:
        for n, line in enumerate(f):
            try:
                source = json.loads(line).get("source")
            except (ValueError, AttributeError):
                continue
            if isinstance(source, dict) and isinstance(source.get("sha256"), str):
                found.setdefault(source["sha256"], []).append(n)
    return found


def _files_named(line: str) -> set[str]:
    """The files a ``labels.jsonl`` row names (its image, its mask), as ``os.path.normpath`` writes them."""
    try:
        row = json.loads(line)
    except ValueError:
        return set()
    names = (row.get(k) for k in ("file", "mask")) if isinstance(row, dict) else ()
    return {os.path.normpath(n) for n in names if isinstance(n, str) and n}


def _classes_of_samples(base: Path) -> bool:
    """Whether ``base`` is a fleet export whose classes are the ones its samples were labelled in (made without a
    base, or on such an export): an export on it refused a class the fleet labelled later ("label 'dent' is not
    one of ['ok', 'scratch']") where one without a base takes every label the store holds."""
    from cloud_trainer.train.data import read_dataset_yaml

    meta_file = base / "dataset.yaml"
    meta = read_dataset_yaml(meta_file) if meta_file.is_file() else None
    made = meta.get("fleet_export") if isinstance(meta, dict) else None
    return isinstance(made, dict) and made.get("classes") == CLASSES_OF_SAMPLES


def _record_export(
    dst: Path, model: str, tenant: str, limit: float, classes: list[str], grows: bool = False
) -> None:
    """``dataset.yaml`` (the base's, copied, or a new one) with the export's image-size limit, which training
    reads, and ``fleet_export``, which says how to raise it (and, ``classes: labelled``, that its classes are
    those its samples were labelled in: an export on it takes more)."""
    import yaml

    from cloud_trainer.train.data import dataset_camera_size, digest_camera, digest_part, read_dataset_yaml

    meta_file = dst / "dataset.yaml"
    meta = read_dataset_yaml(meta_file) if meta_file.is_file() else None
    meta = meta if isinstance(meta, dict) else {}
    own = grows or not meta.get("classes")
    if own:  # no base (or one without them, or a base-less export): the classes the samples were labelled in
        meta.update(classes=classes, good=classes[0])
    # the base's count, counts and digest describe the base alone: the merged dataset's are written, the
    # digest as ``data.load_parts`` computes it (``digest_part``: each file's sha256, its label and its mask's
    # sha256, in labels.jsonl's order)
    h, counts, k = hashlib.sha256(), dict.fromkeys(meta["classes"], 0), 0
    lines = label_lines(dst / "labels.jsonl")  # the base's checked (check_base) before it was copied
    for n, line in lines:
        try:
            row = json.loads(line)
            data = (dst / row["file"]).read_bytes()
            mask = (dst / row["mask"]).read_bytes() if row.get("mask") else None
            digest_part(h, data, row["label"], mask)
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
            # the base's row (the samples' are written here): training would refuse it the same way
            raise DatasetError(
                f"the base dataset's labels.jsonl line {n}: not a label row with a readable 'file' and a "
                f"'label' ({exc!r}); nothing was written"
            ) from None
        counts[row["label"]] = counts.get(row["label"], 0) + 1
        k += 1
    if own:
        # of those, the good one and the ones a sample has: the default six, each written, were each a class
        # training refuses as named by dataset.yaml without an image (an output nothing would train)
        meta["classes"] = [c for c in meta["classes"] if c == meta["good"] or counts.get(c)]
        counts = {c: counts.get(c, 0) for c in meta["classes"]}
    try:  # the base's declared camera, as ``load_parts`` takes it into the digest
        digest_camera(h, dataset_camera_size(dst))
    except DatasetError:
        pass  # a camera_size that is no camera's: the build refuses it, naming it
    meta.update(count=k, counts=counts, digest="sha256:" + h.hexdigest())
    meta["max_megapixels"] = limit
    meta["fleet_export"] = {"model": model, "tenant": tenant} | (
        {"classes": CLASSES_OF_SAMPLES} if own else {}
    )
    meta_file.write_text(yaml.safe_dump(meta, sort_keys=False))


def _write(
    dst: Path, rows: list, blobs, base: Path | None, classes: list[str], limit: float, log, by_bytes: dict
) -> tuple[int, int, int]:
    """The base dataset (copied) and each sample's image into ``dst``: ``(exported, missing blobs, refused)``;
    a sample training would refuse (``sample_problem``) is left out and said in one line; one of another image
    kind than its extension says is written under its kind's extension, all such said in one line."""
    from cloud_trainer.blobs import BlobCorrupt, BlobNotFound
    from cloud_trainer.fleet.store import sample_kind
    from protocols.image_header import KIND_SUFFIXES, SNIFF_BYTES

    if base is not None:
        root = os.path.realpath(base)
        shutil.copytree(
            base,
            dst,
            dirs_exist_ok=True,
            copy_function=lambda s, d: _copy_inside(Path(s), Path(d), base, root),
        )
    (dst / "images").mkdir(parents=True, exist_ok=True)
    exported = no_blob = refused = 0
    misnamed: list[tuple[dict, str, str, str]] = []  # (sample, uploaded as, kind, exported as)
    # a base whose last row has no newline (written with "\n".join, as training reads it): the first sample's
    # row appended after it made one line of two, refused as the base's
    with open(dst / "labels.jsonl", "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    resent = _base_samples(dst / "labels.jsonl") if base is not None else {}
    again: set[int] = set()  # lines of the base's for a sample written again below
    with open(dst / "labels.jsonl", "a") as f:
        for s in rows:
            try:
                data = blobs.get_bytes(s["sha256"])  # digest checked
            except BlobNotFound:
                no_blob += 1
                continue
            except BlobCorrupt as exc:
                raise DatasetError(
                    f"sample {s['sha256'][:16]} (agent {s['agent']}, seq {s['seq']}): {exc}; nothing was written"
                ) from None
            sent = image_ext(s) or sample_kind(s["ext"]) or repr(s["ext"] or "")
            ext = image_ext(s) or by_bytes[s["sha256"]]  # rows are images by their extension or their bytes
            # read as what its bytes are, whatever its name (the decoders do): stored under its kind's extension
            found = kind_ext(data[:SNIFF_BYTES])
            if found and (ext not in KIND_SUFFIXES[found[0]] or not image_ext(s)):
                ext = found[1]
            else:
                found = None
            if why := sample_problem(data, limit):
                refused += 1
                log(
                    f"left out sample {s['sha256'][:16]} (agent {s['agent']}, seq {s['seq']}, labelled "
                    f"{s['label']!r}, uploaded as {sent}): {why}"
                )
                continue
            name = f"images/upload-{s['sha256'][:16]}{ext}"
            (dst / name).write_bytes(data)
            f.write(
                json.dumps(
                    {
                        "id": f"upload-{s['sha256'][:16]}",
                        "file": name,
                        "label": s["label"],
                        "defect": s["label"] != classes[0],  # the good class comes first (dataset_classes)
                        "source": {"agent": s["agent"], "seq": s["seq"], "sha256": s["sha256"]},
                    }
                )
                + "\n"
            )
            exported += 1
            again.update(resent.get(s["sha256"], ()))
            if found:
                misnamed.append((s, sent, *found))
    if again:
        # a base that is an earlier export holds some of these samples: its rows for them are dropped, the store's
        # label (the newest) kept; they were in twice, under one id, in two classes where the label had changed
        # split as ``_base_samples`` numbered them (str.splitlines splits at U+2028 and U+0085 too, which JSON
        # holds raw in a string: the lines after such a row were dropped one off)
        with open(dst / "labels.jsonl", encoding="utf-8") as f:
            lines = f.readlines()
        kept = [x for n, x in enumerate(lines) if n not in again]
        (dst / "labels.jsonl").write_text("".join(kept), encoding="utf-8")
        # and a dropped row's image, where no row names it now: written again under another name (an export of a
        # release that named a PNG uploaded as .jpg by its extension), it stayed in images/, named by no row
        named = set().union(*(_files_named(x) for x in kept))
        for name in set().union(*(_files_named(lines[n]) for n in again)) - named:
            if re.fullmatch(r"images/upload-[0-9a-f]{16}\.\w+", name):  # as exports name them; nothing else
                (dst / name).unlink(missing_ok=True)
    if misnamed:
        n = len(misnamed)
        shown = ", ".join(
            f"{s['sha256'][:16]} (uploaded as {sent}, a {kind}: {ext})" for s, sent, kind, ext in misnamed[:3]
        )
        many = n > 1
        log(
            f"{n} sample{'s are' if many else ' is'} of another image kind than "
            f"{'their extensions say' if many else 'its extension says'}, exported under "
            f"{'their kinds' if many else 'its kind'}' extension{'s' if many else ''}, as training reads "
            f"{'them' if many else 'it'}: {shown}{', ...' if n > 3 else ''}"
        )
    return exported, no_blob, refused


def main(argv: list[str]) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        prog="cloud-trainer dataset",
        description="export the fleet's labelled uploaded images as a training dataset",
    )
    ap.add_argument(
        "--cloud-data", type=Path, default=Path("var/cloud"), help="the fleet service's --data folder"
    )
    ap.add_argument("--model", default="part-inspection", help="samples of this model")
    ap.add_argument("--out", type=Path, required=True, help="new dataset folder")
    ap.add_argument("--base", type=Path, help="a dataset folder to start from (copied)")
    ap.add_argument(
        "--labels", type=Path, help='JSON lines {"sha256": ..., "label": ...}, recorded in the store'
    )
    ap.add_argument(
        "--tenant", default="default", help="export this tenant's samples only (default: default)"
    )
    ap.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="the service's postgresql:// store (default: <cloud-data>/fleet.db)",
    )
    ap.add_argument(
        "--blobs",
        default=None,
        metavar="WHERE",
        help="the service's blob store: s3://BUCKET[/PREFIX] or a folder (default: <cloud-data>/blobs)",
    )
    ap.add_argument(
        "--s3-endpoint",
        default=None,
        metavar="URL",
        help="S3-compatible server (default: $AWS_ENDPOINT_URL_S3, else AWS)",
    )
    ap.add_argument(
        "--max-megapixels",
        type=float,
        default=None,
        metavar="N",
        help=f"the dataset's image-size limit, recorded for training (default: the base dataset's, else "
        f"{CAMERA_MAX_MEGAPIXELS:g}, training's default); larger samples are left out, each said in a line",
    )
    a = ap.parse_args(argv)
    try:
        with stopped_cleanly():  # SIGTERM, SIGHUP and Ctrl-C remove the hidden folder being written
            res = export(
                a.cloud_data,
                a.model,
                a.out,
                a.base,
                a.labels,
                tenant=a.tenant,
                store=a.store,
                blobs=a.blobs,
                s3_endpoint=a.s3_endpoint,
                max_megapixels=a.max_megapixels,
            )
    except DatasetError as exc:  # it may name a file as the base's labels.jsonl wrote it: one printable line
        from cloud_trainer.train.cli import one_line

        print(f"cloud-trainer dataset: {one_line(str(exc))}", file=sys.stderr)
        return 2
    print(json.dumps(res))
    return 0
