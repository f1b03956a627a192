"""``dataset import`` checked that every image leads inside the source (``_no_links_out``), then read each by
its path again: an image replaced in between by a link to another factory's file (the source is the user's
folder, written while the import runs) was stored in the dataset, which its user reads. Each image and mask is
checked where it lies once opened, and one that leads out then is refused naming it, with nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_trainer.train import images
from cloud_trainer.train.data import DatasetError
from cloud_trainer.train.images import import_images
from tests.unit.test_image_import import img, leftovers, per_class


def test_an_image_replaced_by_a_link_out_after_the_check_is_refused_not_stored(tmp_path, monkeypatch):
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    secret = img(tmp_path / "tenant-b" / "secret.png", 99)
    target = src / "dent" / "dent0.png"
    check = images._no_links_out

    def check_then_swap(found, s):
        check(found, s)
        target.unlink()  # the moment after the check: a link out in its place
        target.symlink_to(secret)

    monkeypatch.setattr(images, "_no_links_out", check_then_swap)
    with pytest.raises(DatasetError) as exc:
        import_images(src, tmp_path / "ds", log=lambda m: None)
    assert str(exc.value).startswith(
        f"{target} (a link to {secret}): leads outside the source {src} once opened; "
    )
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []
    # unchanged after the check, and with a link inside the source, the import reads as before
    monkeypatch.setattr(images, "_no_links_out", check)
    target.unlink()
    img(target, 21)
    (src / "ok" / "z.png").symlink_to(Path("..") / "dent" / "dent1.png")
    with pytest.raises(DatasetError, match="is the same image as"):  # one image in two classes, as before
        import_images(src, tmp_path / "ds", log=lambda m: None)
    (src / "ok" / "z.png").unlink()
    img(src / ".pool" / "q.png", 98)
    (src / "ok" / "z.png").symlink_to(Path("..") / ".pool" / "q.png")
    assert import_images(src, tmp_path / "ds", log=lambda m: None)["counts"] == {"ok": 21, "dent": 2}


def test_training_refuses_an_image_replaced_by_a_link_out_after_its_row_was_checked(tmp_path, monkeypatch):
    # load_parts checked each row's file (dataset_file), then read it by its path: another factory's image
    # put in its place trained this dataset's model
    from cloud_trainer.train import data
    from cloud_trainer.train.data import load_parts

    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    ds = Path(import_images(src, tmp_path / "ds", log=lambda m: None)["out"])
    secret = img(tmp_path / "tenant-b" / "secret.png", 99)
    target = ds / "images" / "000000.png"
    check = data.dataset_file

    def check_then_swap(folder, file, where):
        out = check(folder, file, where)
        if out == target:
            target.unlink()
            target.symlink_to(secret)
        return out

    monkeypatch.setattr(data, "dataset_file", check_then_swap)
    with pytest.raises(DatasetError) as exc:
        load_parts(ds)
    assert str(exc.value).startswith(
        f"{target} (labels.jsonl line 1) (a link to {secret}): leads outside the dataset folder {ds} once opened; "
    )


@pytest.mark.parametrize("given", ["folder", "imported"])
def test_the_anomaly_family_refuses_an_image_replaced_by_a_link_out_after_its_check(
    tmp_path, monkeypatch, given
):
    # load_good checked each image (_inside, or dataset_file for an imported dataset's rows), then read it by
    # its path: another factory's image put in its place trained the bank
    from cloud_trainer.train import anomaly
    from cloud_trainer.train.anomaly import AnomalyDataError, load_good

    secret = img(tmp_path / "tenant-b" / "secret.png", 99)
    if given == "folder":
        root = tmp_path / "good"
        for i in range(20):
            img(root / f"{i:03d}.png", i)
        target, what, name, check = root / "000.png", "the folder", "_inside", anomaly._inside
    else:
        src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
        root = Path(import_images(src, tmp_path / "ds", task="anomaly", log=lambda m: None)["out"])
        target, what, name = root / "images" / "000005.png", "the dataset folder", "dataset_file"
        check = anomaly.dataset_file

    def check_then_swap(*args):
        out = check(*args)
        if out == target:
            target.unlink()
            target.symlink_to(secret)
        return out

    monkeypatch.setattr(anomaly, name, check_then_swap)
    with pytest.raises(AnomalyDataError) as exc:
        load_good(root)
    assert str(exc.value).startswith(
        f"{target} (a link to {secret}): leads outside {what} {root} once opened; "
    )
