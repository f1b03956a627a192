"""A link leading out of a source or dataset folder is refused, and the refusal said where the link really led
once resolved (``a link to /tmp/hop/x.png (/srv/tenants/b/x.png)``), whether that was a folder or a file, and,
by the check coming after a look for the file, whether anything was there: on a shared trainer a tenant
probed another's tree with it (does ``/srv/tenants/b/x`` exist, where do its links lead). A refusal now says
only what the tenant wrote, the link's own text, and that it leads outside; a link to a link elsewhere never
shows the final target."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train.anomaly import AnomalyDataError, load_good
from cloud_trainer.train.data import DatasetError, load_parts, load_vibration
from cloud_trainer.train.images import import_images
from tests.unit.test_image_import import img, per_class


def _hop(tmp_path: Path, name: str, exists: bool = True, folder: bool = False) -> tuple[Path, Path]:
    """``tmp_path/hop/NAME``, a link to ``tmp_path/tenant-b/NAME`` (another tenant's file or folder, there or
    not): (the hop, the final target)."""
    final = tmp_path / "tenant-b" / name
    if exists and folder:
        for i in range(3):
            img(final / "good" / f"{i:03d}.png", 100 + i)
    elif exists:
        img(final, 99) if name.endswith(".png") else (final.parent.mkdir(parents=True), final.write_text("x"))
    hop = tmp_path / "hop" / name
    hop.parent.mkdir(parents=True, exist_ok=True)
    hop.symlink_to(final, target_is_directory=folder)
    return hop, final


def _said_as_written(said: str, link: Path, hop: Path, tmp_path: Path) -> None:
    assert said.startswith(f"{link}: a link to {hop}, outside "), said
    assert "tenant-b" not in said, said  # neither the final target's path nor its name


def test_an_import_refuses_a_link_to_a_link_out_by_its_own_text(tmp_path):
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    hop, _ = _hop(tmp_path, "secret.png")
    (src / "dent" / "x.png").symlink_to(hop)
    with pytest.raises(DatasetError) as exc:
        import_images(src, tmp_path / "ds", log=lambda m: None)
    _said_as_written(str(exc.value), src / "dent" / "x.png", hop, tmp_path)
    assert "copy the file or folder in, or remove the link" in str(exc.value)


def test_an_import_says_a_linked_folder_out_as_a_linked_file_is_said(tmp_path):
    # "copy the folder in" told that what the link leads to is a folder
    mv = tmp_path / "mv"
    img(mv / "test" / "good" / "000.png", 40)
    hop, _ = _hop(tmp_path, "train", folder=True)
    (mv / "train").symlink_to(hop, target_is_directory=True)
    with pytest.raises(DatasetError) as exc:
        import_images(mv, tmp_path / "ds", log=lambda m: None)
    _said_as_written(str(exc.value), mv / "train", hop, tmp_path)
    assert "copy the file or folder in, or remove the link" in str(exc.value)


def test_the_anomaly_family_refuses_a_link_to_a_link_out_by_its_own_text(tmp_path):
    good = tmp_path / "good"
    for i in range(20):
        img(good / f"{i:03d}.png", i)
    hop, _ = _hop(tmp_path, "000.png")
    (good / "020.png").symlink_to(hop)
    with pytest.raises(AnomalyDataError) as exc:
        load_good(good)
    _said_as_written(str(exc.value), good / "020.png", hop, tmp_path)
    assert "copy the file or folder in, or remove the link" in str(exc.value)


@pytest.mark.parametrize("exists", [True, False], ids=["target-there", "target-missing"])
def test_a_datasets_own_file_linked_out_is_refused_alike_whether_or_not_its_target_exists(tmp_path, exists):
    # before, a link to a missing file was "needs windows.npz" and one to a file there was refused as a link
    ds = tmp_path / "vib"
    ds.mkdir()
    (ds / "dataset.yaml").write_text("window_samples: 8\n")
    hop, final = _hop(tmp_path, "windows.npz", exists=False)
    if exists:
        final.parent.mkdir(parents=True)
        np.savez(final, waveform=np.zeros((1, 8), np.float32))
    (ds / "windows.npz").symlink_to(hop)
    with pytest.raises(DatasetError) as exc:
        load_vibration(ds)
    _said_as_written(str(exc.value), ds / "windows.npz", hop, tmp_path)
    assert str(exc.value).endswith("copy the file in, or remove the link")


@pytest.mark.parametrize("name", ["labels.jsonl", "dataset.yaml"])
@pytest.mark.parametrize("exists", [True, False], ids=["target-there", "target-missing"])
def test_a_parts_datasets_own_file_linked_out_is_refused_by_its_own_text(tmp_path, name, exists):
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    ds = Path(import_images(src, tmp_path / "ds", log=lambda m: None)["out"])
    hop, final = _hop(tmp_path, name, exists=False)
    if exists:
        final.parent.mkdir(parents=True)
        (ds / name).rename(final)
    else:
        (ds / name).unlink()
    (ds / name).symlink_to(hop)
    with pytest.raises(DatasetError) as exc:
        load_parts(ds)
    _said_as_written(str(exc.value), ds / name, hop, tmp_path)


def test_a_labels_row_through_a_link_to_a_link_out_does_not_say_where_it_leads(tmp_path):
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    ds = Path(import_images(src, tmp_path / "ds", log=lambda m: None)["out"])
    first = sorted((ds / "images").iterdir())[0]
    hop, _ = _hop(tmp_path, "secret.png")
    first.unlink()
    first.symlink_to(hop)
    with pytest.raises(DatasetError) as exc:
        load_parts(ds)
    said = str(exc.value)
    assert "which leads out of the dataset folder" in said and "tenant-b" not in said, said
    assert os.path.realpath(first) not in said


@pytest.mark.parametrize("exists", [True, False], ids=["target-there", "target-missing"])
def test_a_fleet_export_base_with_a_link_to_a_link_out_is_refused_alike_whether_or_not_its_target_exists(
    tmp_path, exists
):
    # before, a link out whose target was missing passed the check (the copy said it missing), one whose
    # target was there was refused with where it led
    from cloud_trainer.train.uploads import check_base

    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    base = Path(import_images(src, tmp_path / "ds", log=lambda m: None)["out"])
    hop, _ = _hop(tmp_path, "secret.png", exists=exists)
    (base / "images" / "extra.png").symlink_to(hop)
    with pytest.raises(DatasetError) as exc:
        check_base(base)
    said = str(exc.value)
    assert said.startswith(
        f"base dataset {base}: {base / 'images' / 'extra.png'} is a link to {hop}, outside the base's folder; "
    ), said
    assert "tenant-b" not in said, said


@pytest.mark.parametrize("exists", [True, False], ids=["target-there", "target-missing"])
def test_an_import_refuses_a_link_named_as_an_image_out_alike_whether_or_not_its_target_exists(
    tmp_path, exists
):
    # before, one whose target was missing was "a link to ..., which does not exist", one whose target was
    # there was refused as leading outside
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    hop, _ = _hop(tmp_path, "secret.png", exists=exists)
    (src / "dent" / "x.png").symlink_to(hop)
    with pytest.raises(DatasetError) as exc:
        import_images(src, tmp_path / "ds", log=lambda m: None)
    _said_as_written(str(exc.value), src / "dent" / "x.png", hop, tmp_path)
    assert "does not exist" not in str(exc.value)


def test_an_mvtec_split_folder_linked_out_is_refused_before_its_files_are_listed(tmp_path):
    # listed first, its loose images were named in the refusal ("1 image in no class folder (payroll.png)")
    mv = tmp_path / "mv"
    for i in range(3):
        img(mv / "train" / "good" / f"{i:03d}.png", i)
    other = tmp_path / "tenant-b" / "test"
    img(other / "good" / "000.png", 50)
    img(other / "payroll.png", 51)
    hop = tmp_path / "hop" / "test"
    hop.parent.mkdir(parents=True)
    hop.symlink_to(other, target_is_directory=True)
    (mv / "test").symlink_to(hop, target_is_directory=True)
    with pytest.raises(DatasetError) as exc:
        import_images(mv, tmp_path / "ds", log=lambda m: None)
    _said_as_written(str(exc.value), mv / "test", hop, tmp_path)
    assert "payroll" not in str(exc.value)
