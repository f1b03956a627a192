"""A dataset folder's own files (``labels.jsonl``, ``dataset.yaml``, a vibration dataset's ``windows.npz``) were
checked not to be a link leading out of the folder (``in_its_folder``), then opened by their path again: one
replaced in between by a link to another factory's file (the folder is the user's, written while training runs)
was read as this dataset's, its rows trained on this folder's images, its windows trained the model. Each is
checked where it lies once opened, and refused naming it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train import data
from cloud_trainer.train.data import DatasetError, load_parts, load_vibration
from cloud_trainer.train.images import import_images
from tests.unit.test_image_import import per_class


def _vibration(folder: Path) -> Path:
    folder.mkdir(parents=True)
    np.savez(
        folder / "windows.npz",
        waveform=np.zeros((4, 8), np.float32),
        fault=np.asarray(["healthy", "imbalance"] * 2),
        health=np.ones(4, np.float32),
        rul_s=np.full(4, np.nan),
        run_id=np.arange(4),
    )
    (folder / "dataset.yaml").write_text("window_samples: 8\nsample_rate_hz: 1000\n")
    return folder


@pytest.mark.parametrize("name", ["labels.jsonl", "dataset.yaml", "windows.npz"])
def test_a_datasets_own_file_replaced_by_a_link_out_after_its_check_is_refused(tmp_path, monkeypatch, name):
    if name == "windows.npz":
        ds, other = _vibration(tmp_path / "ds"), _vibration(tmp_path / "tenant-b")
        load = load_vibration
    else:
        src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
        ds = Path(import_images(src, tmp_path / "ds", log=lambda m: None)["out"])
        other = tmp_path / "tenant-b"
        other.mkdir()
        (other / name).write_bytes((ds / name).read_bytes())
        load = load_parts
    target, check = ds / name, data.in_its_folder

    def check_then_swap(path):
        check(path)
        if path == target and not path.is_symlink():
            target.unlink()  # the moment after the check: a link out in its place
            target.symlink_to(other / name)

    monkeypatch.setattr(data, "in_its_folder", check_then_swap)
    with pytest.raises(DatasetError) as exc:
        load(ds)
    assert str(exc.value).startswith(
        f"{target} (a link to {other / name}): leads outside the dataset folder {ds} once opened; "
    )


def test_an_anomaly_datasets_image_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    """The anomaly family's imported-dataset loader read each listed image (and mask) whole by its path for the
    dataset's digest, before the decoder refused it by its size (and not checked where it lay once open): a file
    of gigabytes in the folder was read into memory first (2 GB read, 17 s, before the refusal). It is read as the
    decoders read images: refused by its size before a byte is read."""
    import tracemalloc

    from cloud_trainer.train.anomaly import AnomalyDataError, load_good

    src = per_class(tmp_path / "src", {"ok": 3, "dent": 2}, exts=(".png",))
    # at most ~1 MB a file under a limit of 0.01 Mpx
    ds = Path(import_images(src, tmp_path / "ds", min_good=2, max_megapixels=0.01, log=lambda m: None)["out"])
    assert len(load_good(ds, min_good=2).good_names) == 2  # one held out; (what it imports, imported first)
    first = ds / json.loads((ds / "labels.jsonl").read_text().splitlines()[0])["file"]
    with open(first, "r+b") as f:
        f.truncate(64 << 20)  # sparse: no disk taken
    tracemalloc.start()
    try:
        with pytest.raises(
            AnomalyDataError, match=f"^{re.escape(str(first))}: 67108864 bytes, more than an image"
        ):
            load_good(ds, min_good=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20  # dataset.yaml's bounded read takes 16 MB a moment; the file is 64 MB
