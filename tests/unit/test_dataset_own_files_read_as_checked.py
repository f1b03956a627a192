"""A dataset folder's own files (``labels.jsonl``, ``dataset.yaml``, a vibration dataset's ``windows.npz``) were
checked not to be a link leading out of the folder (``in_its_folder``), then opened by their path again: one
replaced in between by a link to another factory's file (the folder is the user's, written while training runs)
was read as this dataset's, its rows trained on this folder's images, its windows trained the model. Each is
checked where it lies once opened, and refused naming it."""

from __future__ import annotations

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
