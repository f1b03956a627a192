"""Training data from what the fleet saw: the cloud store's uploaded samples, with labels.

``cloud-trainer dataset`` turns the vision samples agents uploaded (kept in the cloud store, images
in its blob store) into a dataset folder that ``train``/``build`` read, optionally on top of a base
dataset (e.g. the simulator's). Labels are ground truth, never the model's own verdicts: they come
from a labels file (JSON lines ``{"sha256": ..., "label": ...}``, e.g. from an inspector's station or
the simulators' ground truth), are recorded in the store (``label_state = 'labelled'``) so they
accumulate across exports, and every labelled sample of the model is exported. Unlabelled samples
are counted and left out.

A labels file naming a sample the store does not have, or a label that is not a class, is an error
that names the line; nothing is written then.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cloud_trainer.train.data import VISION_CLASSES, DatasetError, dataset_classes

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp"}


def read_labels(path: Path, classes: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DatasetError(f"labels file {path}: {exc.strerror}") from exc
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            sha, label = str(row["sha256"]).removeprefix("sha256:"), row["label"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path}:{n}: not a label row with 'sha256' and 'label' ({exc})") from exc
        if label not in classes:
            raise DatasetError(f"{path}:{n}: label {label!r} is not one of {classes}")
        out[sha] = label
    return out


def export(cloud_data: Path, model: str, out: Path, base: Path | None = None, labels_file: Path | None = None,
           classes: list[str] | None = None) -> dict:
    from cloud_trainer.blobs import BlobNotFound, LocalBlobStore
    from cloud_trainer.fleet.store import SQLiteStore

    classes = classes or (dataset_classes(base) if base is not None else None) or VISION_CLASSES
    db = Path(cloud_data) / "fleet.db"
    if not db.is_file():
        raise DatasetError(f"{cloud_data}: no fleet store (fleet.db); point --cloud-data at `cloud-trainer serve --data`")
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} exists and is not empty; choose a new dataset folder")
    labels = read_labels(labels_file, classes) if labels_file else {}
    store = SQLiteStore(db)
    try:
        samples = [s for s in store.samples(model=model) if (s["ext"] or "").lower() in IMAGE_EXTS]
        known = {s["sha256"] for s in samples}
        missing = [sha for sha in labels if sha not in known]
        if missing:
            raise DatasetError(f"labels file {labels_file} names {len(missing)} sample(s) the store has no "
                               f"{model} image for, e.g. {missing[:3]}")
        if labels:
            store.set_labels(labels)
            samples = [s for s in store.samples(model=model) if (s["ext"] or "").lower() in IMAGE_EXTS]
    finally:
        store.db.close()
    blobs = LocalBlobStore(Path(cloud_data) / "blobs")
    rows, seen, no_blob = [], set(), 0
    for s in samples:
        if s["label_state"] != "labelled" or s["sha256"] in seen:
            continue
        if s["label"] not in classes:
            raise DatasetError(f"the store labels sample {s['sha256'][:16]} {s['label']!r}, not one of {classes}")
        try:
            src = blobs.path(s["sha256"])
        except BlobNotFound:
            no_blob += 1
            continue
        seen.add(s["sha256"])
        rows.append((src, s))
    if base is not None:
        if not (Path(base) / "labels.jsonl").is_file():
            raise DatasetError(f"base dataset {base}: no labels.jsonl")
        shutil.copytree(base, out, dirs_exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    with open(out / "labels.jsonl", "a") as f:
        for src, s in rows:
            name = f"images/upload-{s['sha256'][:16]}{s['ext'].lower()}"
            shutil.copyfile(src, out / name)
            f.write(json.dumps({"id": f"upload-{s['sha256'][:16]}", "file": name, "label": s["label"],
                                "defect": s["label"] != "ok", "source": {"agent": s["agent"], "seq": s["seq"],
                                                                          "sha256": s["sha256"]}}) + "\n")
    return {"samples": len(samples), "exported": len(rows), "unlabelled": sum(s["label_state"] != "labelled"
                                                                              for s in samples),
            "missing_images": no_blob, "labels_applied": len(labels), "out": str(out)}


def main(argv: list[str]) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="cloud-trainer dataset",
                                 description="export the fleet's labelled uploaded images as a training dataset")
    ap.add_argument("--cloud-data", type=Path, default=Path("var/cloud"), help="the fleet service's --data folder")
    ap.add_argument("--model", default="part-inspection", help="samples of this model")
    ap.add_argument("--out", type=Path, required=True, help="new dataset folder")
    ap.add_argument("--base", type=Path, help="a dataset folder to start from (copied)")
    ap.add_argument("--labels", type=Path, help='JSON lines {"sha256": ..., "label": ...}, recorded in the store')
    a = ap.parse_args(argv)
    try:
        res = export(a.cloud_data, a.model, a.out, a.base, a.labels)
    except DatasetError as exc:
        print(f"cloud-trainer dataset: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res))
    return 0
