"""`cloud-trainer dataset` on samples whose bytes are not what their extension says. The import and the fleet
console judge an image by its bytes; the export refused a JPEG uploaded as .png ("its bytes are a JPEG image, not
the PNG ...") and left a PNG uploaded as .npy out as "no image by its extension". Now each is exported under the
kind its bytes are, said in one line, and what training would refuse (16-bit, truncated, not an image) is still
left out."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import cv2
import numpy as np

from cloud_trainer.blobs import LocalBlobStore
from cloud_trainer.fleet.store import SQLiteStore
from cloud_trainer.train.data import load_parts
from cloud_trainer.train.uploads import export
from tests.integration.test_uploads_dataset import _png, own_base, write_labels


def test_an_export_takes_each_sample_as_its_bytes_are_not_as_its_extension_says(tmp_path):
    own_base(tmp_path)  # the user's own images per class, the base of the retraining
    data = tmp_path / "cloud"
    store, blobs = SQLiteStore(data / "fleet.db"), LocalBlobStore(data / "blobs")
    frame = lambda seed: np.random.default_rng(seed).integers(0, 255, (10, 12, 3), dtype=np.uint8)  # noqa: E731
    window = io.BytesIO()
    np.save(window, np.zeros(64, np.float32))
    png = _png(300)
    uploads = {  # name -> (bytes, extension sent, label or None)
        "jpeg_as_png": (cv2.imencode(".jpg", frame(301))[1].tobytes(), ".png", "pass"),
        "png_as_npy": (_png(302), ".npy", "Kratzer"),
        "ppm_as_none": (cv2.imencode(".ppm", frame(303))[1].tobytes(), "", "pass"),
        "bmp_as_tif": (cv2.imencode(".bmp", frame(304))[1].tobytes(), ".TIF", "pass"),
        "window": (window.getvalue(), ".npy", None),  # a window (labelling it is refused, as before)
        "deep_as_npy": (
            cv2.imencode(".png", np.full((10, 12), 4000, np.uint16))[1].tobytes(),
            ".npy",
            "pass",
        ),
        "cut_as_png": (png[: len(png) // 2], ".png", "pass"),
        "unlabelled_window": (b"\x93NUMPY another window", ".npy", None),
    }
    shas = {k: blobs.put_bytes(d) for k, (d, _, _) in uploads.items()}
    store.ingest(
        "gw1",
        [
            {
                "seq": i + 1,
                "kind": "sample",
                "t": 1.7e9 + i,
                "sample_sha256": shas[k],
                "sample_ext": ext,
                "payload": json.dumps({"model": "part-inspection"}),
            }
            for i, (k, (_, ext, _)) in enumerate(uploads.items())
        ],
    )
    store.close()
    labels = write_labels(tmp_path / "l.jsonl", {shas[k]: lab for k, (_, _, lab) in uploads.items() if lab})
    said: list[str] = []
    res = export(
        data, "part-inspection", tmp_path / "ds", base=tmp_path / "base", labels_file=labels, log=said.append
    )
    assert (res["exported"], res["refused"], res["not_images"]) == (4, 2, 2), (res, said)
    rows = [json.loads(x) for x in (tmp_path / "ds" / "labels.jsonl").read_text().splitlines()]
    files = {r["source"]["sha256"]: r["file"] for r in rows if r["id"].startswith("upload-")}
    assert {k: Path(files[shas[k]]).suffix for k in uploads if shas[k] in files} == {
        "jpeg_as_png": ".jpg",
        "png_as_npy": ".png",
        "ppm_as_none": ".ppm",
        "bmp_as_tif": ".bmp",
    }
    misnamed = [m for m in said if "of another image kind than" in m]
    assert len(misnamed) == 1 and "\n" not in misnamed[0], said  # all in one line
    assert "4 samples are of another image kind than their extensions say" in misnamed[0]
    assert f"{shas['jpeg_as_png'][:16]} (uploaded as .png, a JPEG: .jpg)" in misnamed[0]
    refused = {k: m for k in uploads for m in said if m.startswith(f"left out sample {shas[k][:16]} ")}
    assert set(refused) == {"deep_as_npy", "cut_as_png"}, said
    assert "16-bit pixels, and training reads 8-bit images" in refused["deep_as_npy"]
    assert "uploaded as .npy" in refused["deep_as_npy"]
    assert "truncated or corrupt" in refused["cut_as_png"]
    assert any(m.startswith("left out 2 samples of part-inspection that are no image") for m in said), said
    ds = load_parts(tmp_path / "ds")  # training reads every one exported, each by its bytes
    assert len(ds.images) == 22 + 4
    by_id = dict(zip(ds.ids, ds.images, strict=True))
    assert np.array_equal(by_id[f"upload-{shas['bmp_as_tif'][:16]}"], frame(304))


def test_an_export_says_what_retention_deleted_and_a_label_naming_it_is_refused_so(tmp_path):
    """Samples the fleet service's retention (``serve --retain-days``) deleted are in no export: the export says how
    many and up to when, and a labels file naming one is refused saying why the store has it no more."""
    import pytest

    from cloud_trainer.train.uploads import DatasetError
    from tests.integration.test_uploads_dataset import write_labels

    data = tmp_path / "cloud"
    store, blobs = SQLiteStore(data / "fleet.db"), LocalBlobStore(data / "blobs")
    shas = [blobs.put_bytes(_png(400 + i)) for i in range(3)]
    sample = {"kind": "sample", "sample_ext": ".png", "payload": json.dumps({"model": "part-inspection"})}
    store.ingest(
        "gw1", [{**sample, "seq": i + 1, "t": 1.7e9 + i, "sample_sha256": s} for i, s in enumerate(shas)]
    )
    with store._tx() as ex:
        ex("UPDATE records SET received = 1000 WHERE seq <= 2")
        ex("UPDATE record_counts SET first_received = 1000")
    assert store.retire(2000.0, blobs=blobs)["samples"] == 2
    store.close()
    said = r"2 samples of tenant 'default' \(any model\) received up to 1970-01-01 00:16 UTC were deleted by the fleet"
    notes: list[str] = []
    with pytest.raises(DatasetError, match=said):
        export(
            data,
            "part-inspection",
            tmp_path / "a",
            labels_file=write_labels(tmp_path / "a.jsonl", {shas[0]: "ok"}),
        )
    got = export(
        data,
        "part-inspection",
        tmp_path / "b",
        labels_file=write_labels(tmp_path / "b.jsonl", {shas[2]: "ok"}),
        log=notes.append,
    )
    assert (got["retired_samples"], got["exported"]) == (2, 1)
    assert any(re.match(said, n) for n in notes)
