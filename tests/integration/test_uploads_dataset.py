"""`cloud-trainer dataset`: the images agents uploaded, held in the cloud store, become a training
dataset with ground-truth labels from a labels file; labels persist in the store; a labels file
naming unknown samples or classes is refused with nothing written."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_trainer.blobs import LocalBlobStore
from cloud_trainer.fleet.store import SQLiteStore
from cloud_trainer.train.data import DatasetError, load_parts
from cloud_trainer.train.uploads import export
from simulators.parts import write_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cloud(tmp_path):
    """A cloud data folder as `cloud-trainer serve` keeps it, with 12 uploaded part images from gw1
    (stored through the same ingest path the fleet service uses) and one vibration sample."""
    # seed 17: each of the six classes dataset.yaml names has an image (training refuses a class without one)
    parts = write_dataset(tmp_path / "parts", count=12, seed=17, size=32, defect_rate=0.5)
    rows = [json.loads(x) for x in (parts / "labels.jsonl").read_text().splitlines()]
    data = tmp_path / "cloud"
    store, blobs = SQLiteStore(data / "fleet.db"), LocalBlobStore(data / "blobs")
    records, truth = [], {}
    for seq, r in enumerate(rows, 1):
        img = (parts / r["file"]).read_bytes()
        sha = blobs.put_bytes(img)
        assert sha == hashlib.sha256(img).hexdigest()
        truth[sha] = r["label"]
        records.append(
            {
                "seq": seq,
                "kind": "sample",
                "t": 1000.0 + seq,
                "sample_sha256": sha,
                "sample_ext": ".png",
                "payload": json.dumps(
                    {
                        "model": "part-inspection",
                        "model_version": "1.0.0",
                        "verdict": "OK",
                        "label": "ok",
                        "reason": "low_confidence",
                    }
                ),
            }
        )
    records.append(
        {
            "seq": 99,
            "kind": "sample",
            "t": 2000.0,
            "sample_sha256": blobs.put_bytes(b"\0" * 64),
            "sample_ext": ".npy",
            "payload": json.dumps({"model": "machine-health"}),
        }
    )
    store.ingest("gw1", records)
    store.db.close()
    return data, parts, truth


def write_labels(path: Path, labels: dict) -> Path:
    path.write_text("\n".join(json.dumps({"sha256": k, "label": v}) for k, v in labels.items()) + "\n")
    return path


def test_uploaded_samples_become_a_dataset_with_ground_truth_labels(tmp_path, cloud):
    data, parts, truth = cloud
    half = dict(list(truth.items())[:6])
    res = export(
        data, "part-inspection", tmp_path / "ds1", labels_file=write_labels(tmp_path / "l1.jsonl", half)
    )
    assert res["exported"] == 6 and res["unlabelled"] == 6 and res["labels_applied"] == 6
    rows = [json.loads(x) for x in (tmp_path / "ds1" / "labels.jsonl").read_text().splitlines()]
    # the labels are the ground truth, not the agent's verdict ("ok" for every upload above)
    assert {r["source"]["sha256"]: r["label"] for r in rows} == half
    for r in rows:
        assert (
            hashlib.sha256((tmp_path / "ds1" / r["file"]).read_bytes()).hexdigest() == r["source"]["sha256"]
        )
    # without a base, dataset.yaml names the classes the samples were labelled in, the good one first: the default
    # six it named were refused by training, 'scratch' and 'stain' named without an image
    import yaml

    assert yaml.safe_load((tmp_path / "ds1" / "dataset.yaml").read_text())["classes"] == [
        "ok",
        "dent",
        "crack",
        "missing_hole",
    ]
    assert len(load_parts(tmp_path / "ds1").images) == 6
    # as an export made before one on a base dropped the base's rows left it: a sample in twice, in two classes;
    # and a row of the user's whose JSON holds a raw U+2028 (str.splitlines splits there, the file does not)
    first = rows[0]
    user = {"id": "user-1", "file": first["file"], "label": first["label"], "note": "drawn\u2028checked"}
    again = {**first, "label": "crack" if first["label"] != "crack" else "dent"}
    labels = tmp_path / "ds1" / "labels.jsonl"
    labels.write_text(
        json.dumps(user, ensure_ascii=False) + "\n" + labels.read_text() + json.dumps(again) + "\n",
        encoding="utf-8",
    )
    # an export on that export takes the classes labelled since ('scratch', 'stain'), in the default's order; it
    # refused them ("label 'scratch' is not one of ['ok', 'dent', 'crack', 'missing_hole']")
    rest = dict(list(truth.items())[6:])
    export(
        data,
        "part-inspection",
        tmp_path / "ds1b",
        base=tmp_path / "ds1",
        labels_file=write_labels(tmp_path / "l1b.jsonl", rest),
    )
    meta = yaml.safe_load((tmp_path / "ds1b" / "dataset.yaml").read_text())
    assert meta["classes"] == ["ok", "dent", "crack", "missing_hole", "scratch", "stain"]
    # each sample once (the six of ds1 were in twice, under one id; the one in twice in ds1, three times), with
    # the store's label, the newest; the user's row kept (the rows after it were dropped one off: refused)
    assert meta["fleet_export"]["classes"] == "labelled" and len(load_parts(tmp_path / "ds1b").images) == 13
    rows = [json.loads(x) for x in (tmp_path / "ds1b" / "labels.jsonl").read_text().split("\n") if x]
    assert rows[0] == user and meta["count"] == 13
    assert {r["source"]["sha256"]: r["label"] for r in rows[1:]} == truth and len(rows[1:]) == 12
    # labels accumulate in the store: a later export with the other half brings all twelve, on top of a base
    res = export(
        data,
        "part-inspection",
        tmp_path / "ds2",
        base=parts,
        labels_file=write_labels(tmp_path / "l2.jsonl", rest),
    )
    assert res["exported"] == 12 and res["unlabelled"] == 0
    ds = load_parts(tmp_path / "ds2")
    assert len(ds.images) == 24  # 12 base images + 12 uploads
    store = SQLiteStore(data / "fleet.db")
    assert {
        s["sha256"]: s["label"] for s in store.samples(model="part-inspection", label_state="labelled")
    } == truth
    store.db.close()


def test_an_export_on_an_export_leaves_no_image_that_no_row_names(tmp_path, cloud):
    """Each sample of a base that is an earlier export is written again and the base's row for it dropped; where
    the base named its image otherwise (a release that named a PNG uploaded as .jpg by that extension), the base's
    file stayed in images/, named by no row, one more at each export in the chain."""
    data, _, truth = cloud
    export(data, "part-inspection", tmp_path / "ds1", labels_file=write_labels(tmp_path / "l.jsonl", truth))
    labels = tmp_path / "ds1" / "labels.jsonl"
    rows = [json.loads(x) for x in labels.read_text().splitlines()]
    for r in rows[:2]:
        renamed = r["file"].replace(".png", ".jpg")
        (tmp_path / "ds1" / r["file"]).rename(tmp_path / "ds1" / renamed)
        r["file"] = renamed
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    export(data, "part-inspection", tmp_path / "ds2", base=tmp_path / "ds1")
    named = [json.loads(x)["file"] for x in (tmp_path / "ds2" / "labels.jsonl").read_text().splitlines()]
    held = [f"images/{p.name}" for p in (tmp_path / "ds2" / "images").iterdir()]
    assert len(named) == 12 and sorted(held) == sorted(named)


def test_an_export_into_its_base_is_refused_before_anything_is_written(tmp_path, cloud):
    """--out inside --base: the base was copied into a hidden folder inside itself, so the export held a partial copy
    of itself (that '.new.<host>.<pid>.<random>.tmp' folder, images and all); under images/ the copy went on until
    'File name too long'."""
    data, _, truth = cloud
    base = tmp_path / "ds1"
    export(data, "part-inspection", base, labels_file=write_labels(tmp_path / "l.jsonl", truth))
    held = sorted(base.rglob("*"))
    for out in (base / "new", base / "images" / "new"):
        with pytest.raises(
            DatasetError, match=r"--out .*/ds1/(images/)?new is inside the base .*/ds1; choose"
        ):
            export(data, "part-inspection", out, base=base)
    assert sorted(base.rglob("*")) == held


def test_an_out_inside_its_base_is_told_through_another_mount_of_it(tmp_path):
    """The same folder under another path (a bind mount, a share mounted twice, another case on a file system that
    ignores it) passed the check by names: the export copied its base into itself until 'File name too long'. The
    check compares the folders themselves (here through a bind mount, in a mount namespace of its own)."""
    import shutil

    if (
        not shutil.which("unshare")
        or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode
    ):
        pytest.skip("no unprivileged mount namespace here")
    base, other = tmp_path / "ds1", tmp_path / "mnt"
    (base / "images").mkdir(parents=True)
    other.mkdir()
    check = (
        "import sys; from pathlib import Path; from cloud_trainer.train.images import inside; "
        "print([inside(Path(sys.argv[1], *p), Path(sys.argv[2])) for p in (('images', 'new'), ('new',), ('..', 'x'))])"
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", 'mount --bind "$1" "$2" && exec "$3" -c "$4" "$2" "$1"', "-"]
        + [str(base), str(other), sys.executable, check],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split("\n")[0] == "[True, True, False]", done.stderr[-500:]


def test_bad_labels_are_refused_and_nothing_is_written(tmp_path, cloud):
    data, _, truth = cloud
    bad = write_labels(tmp_path / "bad.jsonl", {**truth, "ab" * 32: "ok"})
    with pytest.raises(
        DatasetError, match="names 1 sample\\(s\\) the store has no part-inspection image for"
    ):
        export(data, "part-inspection", tmp_path / "ds", labels_file=bad)
    assert not (tmp_path / "ds").exists()
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"sha256": next(iter(truth)), "label": "bent"}) + "\n")
    with pytest.raises(DatasetError, match="wrong.jsonl:1: label 'bent' is not one of"):
        export(data, "part-inspection", tmp_path / "ds", labels_file=wrong)
    store = SQLiteStore(data / "fleet.db")
    assert store.samples(model="part-inspection", label_state="labelled") == []  # store unchanged
    store.db.close()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloud_trainer.cli",
            "dataset",
            "--cloud-data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "ds"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 2 and "no fleet store (fleet.db)" in r.stderr


def test_a_labels_file_as_windows_tools_write_it_reads_and_one_that_contradicts_itself_is_refused(
    tmp_path, cloud
):
    """The inspectors' labels file is made by their own tools. Saved with a UTF-8 byte order mark and CRLF
    (Notepad, PowerShell), it was refused as "Unexpected UTF-8 BOM" (a dataset's labels.jsonl is read past
    one); saved as UTF-16 (Windows PowerShell's `>`), it ended the export in a UnicodeDecodeError traceback;
    digests in capitals (PowerShell's Get-FileHash) were refused as samples the store has not; and a sample
    labelled twice, differently (two inspectors' rows appended), was stored with the last label without a word,
    a defect trained as good. The first and third read now, the second and the last are one line naming the
    file and line(s), the store left unchanged."""
    data, _, truth = cloud
    items = list(truth.items())[:4]
    rows = [json.dumps({"sha256": sha, "label": label}) for sha, label in items]
    windows = tmp_path / "windows.jsonl"
    windows.write_bytes(
        ("\ufeff" + "\r\n".join(rows) + "\r\n").replace(items[0][0], items[0][0].upper()).encode()
    )
    res = export(data, "part-inspection", tmp_path / "ds1", labels_file=windows, log=lambda m: None)
    assert res["labels_applied"] == 4 and res["exported"] == 4
    labelled = {s["sha256"]: s["label"] for s in _labelled(data)}
    assert labelled == dict(items)

    other = next(c for c in ("ok", "scratch") if c != items[1][1])
    twice = tmp_path / "twice.jsonl"
    twice.write_text("\n".join([*rows, json.dumps({"sha256": items[1][0], "label": other})]) + "\n")
    with pytest.raises(DatasetError) as refused:
        export(data, "part-inspection", tmp_path / "ds2", labels_file=twice)
    assert str(refused.value) == (
        f"{twice}:5: labels sample {items[1][0][:16]} {other!r}, but line 2 labels it {items[1][1]!r}; give "
        "each sample one label"
    )
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_bytes("\n".join(rows).encode("utf-16"))
    with pytest.raises(DatasetError) as refused:
        export(data, "part-inspection", tmp_path / "ds3", labels_file=utf16)
    assert str(refused.value) == (
        f"{utf16}:1: not UTF-8 (byte 0xff at column 1; a UTF-16 file, as Windows PowerShell writes one): save "
        "the labels file as UTF-8"
    )
    assert not (tmp_path / "ds2").exists() and not (tmp_path / "ds3").exists()
    assert {s["sha256"]: s["label"] for s in _labelled(data)} == dict(items)  # the store unchanged


def _labelled(data: Path) -> list[dict]:
    store = SQLiteStore(data / "fleet.db")
    try:
        return store.samples(model="part-inspection", label_state="labelled")
    finally:
        store.db.close()


def test_an_export_reads_one_tenants_samples_and_refuses_another_tenants_labels(tmp_path):
    """acme and beta upload through the same store and blob store; each export sees its own tenant only."""
    data = tmp_path / "cloud"
    store, blobs = SQLiteStore(data / "fleet.db"), LocalBlobStore(data / "blobs")
    shas = {}
    for tenant in ("acme", "beta"):
        img = _png(1 if tenant == "acme" else 2)  # a real image: the export checks it as training reads it
        shas[tenant] = blobs.for_tenant(tenant).put_bytes(img)
        store.ingest(
            "gw1",
            [
                {
                    "seq": 1,
                    "kind": "sample",
                    "t": 1.0,
                    "sample_sha256": shas[tenant],
                    "sample_ext": ".png",
                    "payload": json.dumps({"model": "part-inspection"}),
                }
            ],
            tenant=tenant,
        )
    store.close()
    # acme's admin names beta's sample: refused as a sample that does not exist, nothing labelled or written
    with pytest.raises(
        DatasetError,
        match="names 1 sample\\(s\\) the store has no part-inspection image for in tenant 'acme'",
    ):
        export(
            data,
            "part-inspection",
            tmp_path / "x",
            tenant="acme",
            labels_file=write_labels(tmp_path / "l.jsonl", {shas["beta"]: "ok"}),
        )
    assert not (tmp_path / "x").exists()
    res = export(
        data,
        "part-inspection",
        tmp_path / "acme",
        tenant="acme",
        labels_file=write_labels(tmp_path / "a.jsonl", {shas["acme"]: "scratch"}),
    )
    assert (res["samples"], res["exported"]) == (1, 1)
    rows = [json.loads(x) for x in (tmp_path / "acme" / "labels.jsonl").read_text().splitlines()]
    assert [r["source"]["sha256"] for r in rows] == [shas["acme"]]
    assert (tmp_path / "acme" / rows[0]["file"]).read_bytes() == _png(1)
    beta = export(
        data, "part-inspection", tmp_path / "beta", tenant="beta"
    )  # beta's sample is still unlabelled
    assert (beta["samples"], beta["exported"], beta["unlabelled"]) == (1, 0, 1)
    assert export(data, "part-inspection", tmp_path / "dflt")["samples"] == 0  # the default tenant has none
    with pytest.raises(DatasetError, match="--tenant: tenant id"):
        export(data, "part-inspection", tmp_path / "y", tenant="../beta")


def _base_and_uploads(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    """A user's dataset of classes "pass" (20) and "Kratzer" (2) imported into ``tmp_path/base``, and a cloud
    data folder holding ``n`` PNG samples of part-inspection uploaded by gw1: (cloud data, their digests)."""
    from cloud_trainer.train.images import import_images

    src = tmp_path / "src"
    for c, k in (("pass", 20), ("Kratzer", 2)):
        for i in range(k):
            (src / c).mkdir(parents=True, exist_ok=True)
            Path(src / c / f"{i}.png").write_bytes(_png(i if c == "pass" else 50 + i))  # each its own image
    import_images(src, tmp_path / "base", log=lambda m: None)
    data = tmp_path / "cloud"
    store, blobs = SQLiteStore(data / "fleet.db"), LocalBlobStore(data / "blobs")
    shas = [blobs.put_bytes(_png(100 + i)) for i in range(n)]
    store.ingest(
        "gw1",
        [
            {
                "seq": i + 1,
                "kind": "sample",
                "t": 1.0 + i,
                "sample_sha256": sha,
                "sample_ext": ".png",
                "payload": json.dumps({"model": "part-inspection"}),
            }
            for i, sha in enumerate(shas)
        ],
    )
    store.close()
    return data, shas


def test_fleet_samples_of_the_good_class_are_not_marked_defects_whatever_its_name(tmp_path):
    """The export marked every sample whose label was not "ok" as a defect: on top of a user's dataset whose
    good class is "pass", every good part uploaded from the line was a defect in labels.jsonl."""
    data, shas = _base_and_uploads(tmp_path, 2)
    labels = write_labels(tmp_path / "l.jsonl", {shas[0]: "pass", shas[1]: "Kratzer"})
    export(data, "part-inspection", tmp_path / "ds", base=tmp_path / "base", labels_file=labels)
    rows = [json.loads(x) for x in (tmp_path / "ds" / "labels.jsonl").read_text().splitlines()]
    assert {(r["label"], r["defect"]) for r in rows} == {("pass", False), ("Kratzer", True)}
    assert sum(1 for r in rows if str(r["id"]).startswith("upload-")) == 2


def test_an_export_on_a_base_records_the_merged_datasets_count_classes_and_digest(tmp_path):
    """The export copied the base's dataset.yaml whole: its count, counts and digest described the base alone,
    so the merged dataset said it held 22 images of the base's digest while training read 24 of another."""
    data, shas = _base_and_uploads(tmp_path, 3)
    labels = write_labels(tmp_path / "l.jsonl", {shas[0]: "pass", shas[1]: "Kratzer", shas[2]: "Kratzer"})
    export(data, "part-inspection", tmp_path / "ds", base=tmp_path / "base", labels_file=labels)
    import yaml

    meta = yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())
    base = yaml.safe_load((tmp_path / "base" / "dataset.yaml").read_text())
    assert (base["count"], base["counts"]) == (22, {"pass": 20, "Kratzer": 2})
    assert (meta["count"], meta["counts"]) == (25, {"pass": 21, "Kratzer": 4})
    assert meta["digest"] == load_parts(tmp_path / "ds").digest != base["digest"]


def test_a_base_row_whose_mask_is_missing_is_refused_as_training_refuses_it(tmp_path, cloud):
    """A mask's bytes are in the dataset's digest, which the export writes: a base row naming a mask that is not
    there was refused as "not a label row with a readable 'file' and a 'label' (FileNotFoundError...)"."""
    data, parts, truth = cloud
    rows = [json.loads(x) for x in (parts / "labels.jsonl").read_text().splitlines()]
    n, row = next((n, r) for n, r in enumerate(rows, 1) if r.get("mask"))
    (parts / row["mask"]).unlink()
    said = f"{parts / 'labels.jsonl'}:{n}: mask {row['mask']} is missing; fix or drop the row's 'mask'"
    with pytest.raises(DatasetError) as ei:
        export(data, "part-inspection", tmp_path / "ds", base=parts)
    assert str(ei.value) == said and not (tmp_path / "ds").exists()
    with pytest.raises(DatasetError, match="is missing; fix or drop"):
        load_parts(parts)


def test_an_export_on_a_base_whose_last_label_row_has_no_newline_takes_the_base_whole(tmp_path):
    """A base's labels.jsonl written with "\\n".join (no newline after its last row), which training reads, had
    the first sample's row appended to its last line: the export refused the good base as having a broken
    row (before it recorded counts, training refused the merged dataset). The rows now each stay a line."""
    data, shas = _base_and_uploads(tmp_path, 2)
    base_labels = tmp_path / "base" / "labels.jsonl"
    base_labels.write_text(base_labels.read_text().rstrip("\n"))
    assert len(load_parts(tmp_path / "base").images) == 22  # a good dataset as it is
    labels = write_labels(tmp_path / "l.jsonl", {shas[0]: "pass", shas[1]: "Kratzer"})
    res = export(data, "part-inspection", tmp_path / "ds", base=tmp_path / "base", labels_file=labels)
    assert res["exported"] == 2
    assert len(load_parts(tmp_path / "ds").images) == 24


def _png(seed: int) -> bytes:
    import cv2
    import numpy as np

    a = np.random.default_rng(seed).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", a)
    assert ok
    return buf.tobytes()


def own_base(tmp_path: Path) -> Path:
    """``tmp_path/base``: the user's own images per class (20 'pass', 2 'Kratzer'), imported: a retraining's base."""
    from cloud_trainer.train.images import import_images

    src = tmp_path / "src"
    for c, n in (("pass", 20), ("Kratzer", 2)):
        (src / c).mkdir(parents=True)
        for i in range(n):
            (src / c / f"{i}.png").write_bytes(_png(i if c == "pass" else 50 + i))
    import_images(src, tmp_path / "base", log=lambda m: None)
    return tmp_path / "base"


def test_fleet_samples_are_taken_in_every_image_kind_the_import_reads_and_others_are_said(tmp_path):
    """The export took .png, .jpg, .jpeg and .bmp samples only: a fleet sample uploaded as TIFF, WebP or a
    Windows JPEG (.jfif), or with its extension in capitals or without its dot, was left out of the
    dataset without a word (and a labels file naming it was refused as a sample the store did not have).
    Each is now exported under its extension in lower case and read by training; samples of the model that
    are no images (a waveform's .npy, no extension) are counted and said in one line."""
    import cv2
    import numpy as np

    own_base(tmp_path)
    data = tmp_path / "cloud"
    store, blobs = SQLiteStore(data / "fleet.db"), LocalBlobStore(data / "blobs")
    frame = lambda seed: np.random.default_rng(seed).integers(0, 255, (10, 12, 3), dtype=np.uint8)  # noqa: E731
    uploads = {  # sample_ext as sent -> the bytes of that kind
        ".tif": cv2.imencode(".tif", frame(200))[1].tobytes(),
        ".TIFF": cv2.imencode(".tiff", frame(201))[1].tobytes(),
        ".webp": cv2.imencode(".webp", frame(202), [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes(),
        ".jfif": cv2.imencode(".jpg", frame(203))[1].tobytes(),
        ".jpe": cv2.imencode(".jpg", frame(204))[1].tobytes(),
        "png": _png(205),
        ".npy": b"\x93NUMPY a window",
        "": b"no extension",
    }
    shas = {ext: blobs.put_bytes(b) for ext, b in uploads.items()}
    store.ingest(
        "gw1",
        [
            {
                "seq": i + 1,
                "kind": "sample",
                "t": 1.7e9 + i,
                "sample_sha256": shas[ext],
                "sample_ext": ext,
                "payload": json.dumps({"model": "part-inspection"}),
            }
            for i, ext in enumerate(uploads)
        ],
    )
    store.close()
    images = [e for e in uploads if e not in (".npy", "")]
    labels = write_labels(
        tmp_path / "l.jsonl", {shas[e]: "Kratzer" if e == ".tif" else "pass" for e in images}
    )
    said: list[str] = []
    res = export(
        data, "part-inspection", tmp_path / "ds", base=tmp_path / "base", labels_file=labels, log=said.append
    )
    assert (res["samples"], res["exported"], res["not_images"]) == (6, 6, 2)
    assert said == [
        "left out 2 samples of part-inspection that are no image by their extensions nor, when labelled, by "
        "their bytes (1 '.npy', 1 ''; images are .png, .jpg, .jpeg, .jpe, .jfif, .bmp, .tif, .tiff, .webp, .pgm, .ppm, .pbm, .pnm): an agent "
        "uploading other data under this model's name?"
    ]
    rows = [json.loads(x) for x in (tmp_path / "ds" / "labels.jsonl").read_text().splitlines()]
    files = {r["source"]["sha256"]: r["file"] for r in rows if r["id"].startswith("upload-")}
    assert {Path(files[shas[e]]).suffix for e in images} == {
        ".tif",
        ".tiff",
        ".webp",
        ".jfif",
        ".jpe",
        ".png",
    }
    ds = load_parts(tmp_path / "ds")  # training reads every one of them
    assert len(ds.images) == 22 + 6
    by_id = dict(zip(ds.ids, ds.images, strict=True))
    webp = by_id[f"upload-{shas['.webp'][:16]}"]
    assert np.array_equal(webp, frame(202))  # lossless WebP: the frame's own pixels


def test_a_labels_file_is_bounded_as_a_datasets_labels_are_and_refused_in_one_line(
    tmp_path, cloud, monkeypatch
):
    """The inspectors' labels file was read whole into memory (``Path.read_bytes``): a file of gigabytes given by
    mistake (a log, an image archive) filled the trainer's memory before its first line was looked at, where a
    dataset's labels.jsonl is refused past LABELS_MAX_BYTES unread. A line nested thousands deep ended the export
    in a RecursionError traceback. Each is refused now in one line naming the file (and the line), the store
    unchanged and nothing written."""
    from cloud_trainer.train import uploads
    from cloud_trainer.train.data import LABELS_MAX_LINE_BYTES

    data, _, truth = cloud
    items = list(truth.items())[:4]
    labels = write_labels(tmp_path / "l.jsonl", dict(items))
    size = labels.stat().st_size
    # the limit is hundreds of MiB: lowered here below this small file's size (raising=False: the former code
    # had none, and read the file whole)
    monkeypatch.setattr(uploads, "LABELS_MAX_BYTES", size - 1, raising=False)
    with pytest.raises(DatasetError) as refused:
        export(data, "part-inspection", tmp_path / "ds1", labels_file=labels)
    assert str(refused.value).startswith(
        f"labels file {labels}: {size} bytes, more than the {size - 1} a labels file may take; refused unread"
    ), refused.value
    monkeypatch.undo()
    long = tmp_path / "long.jsonl"
    row = json.dumps({"sha256": items[0][0], "label": items[0][1], "note": "x" * LABELS_MAX_LINE_BYTES})
    long.write_text(row + "\n")
    with pytest.raises(DatasetError) as refused:
        export(data, "part-inspection", tmp_path / "ds2", labels_file=long)
    assert str(refused.value).startswith(
        f"{long}:1: a line of {len(row)} bytes, more than the {LABELS_MAX_LINE_BYTES} a label row may take"
    ), refused.value
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 50_000 + "\n")
    with pytest.raises(DatasetError, match=rf"^{deep}:1: not a label row with 'sha256' and 'label' "):
        export(data, "part-inspection", tmp_path / "ds3", labels_file=deep)
    assert not any((tmp_path / d).exists() for d in ("ds1", "ds2", "ds3"))
    assert _labelled(data) == []  # the store unchanged
    res = export(data, "part-inspection", tmp_path / "ds4", labels_file=labels, log=lambda m: None)
    assert res["labels_applied"] == 4  # a file within the limit is read as before
