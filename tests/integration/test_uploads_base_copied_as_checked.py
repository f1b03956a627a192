"""``cloud-trainer dataset --base BASE`` checked that no link in the base leads out of it, then copied the base
with ``shutil.copytree``, which opened each file by its path again: a file replaced in between by a link to
another tenant's file (the base is the user's folder, written while the export runs) had that file copied into
the export, which its user reads. Each file is checked where it lies once opened, and one that leads out then
is refused naming it, with nothing written."""

from __future__ import annotations

import pytest

from cloud_trainer.train import uploads
from cloud_trainer.train.data import DatasetError, load_parts
from cloud_trainer.train.uploads import export
from tests.integration.test_uploads_dataset import _base_and_uploads, _png, write_labels


def test_a_base_file_replaced_by_a_link_out_after_the_check_is_refused_not_copied(tmp_path, monkeypatch):
    data, shas = _base_and_uploads(tmp_path, 1)
    secret = tmp_path / "tenant-b" / "images" / "x.png"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(_png(77))
    base = tmp_path / "base"
    target = base / "images" / "000000.png"
    original = target.read_bytes()
    check = uploads.check_base

    def check_then_swap(b):
        check(b)
        target.unlink()  # the moment after the check: a link out in its place
        target.symlink_to(secret)

    monkeypatch.setattr(uploads, "check_base", check_then_swap)
    labels = write_labels(tmp_path / "l.jsonl", {shas[0]: "pass"})
    with pytest.raises(DatasetError) as exc:
        export(data, "part-inspection", tmp_path / "ds", base=base, labels_file=labels)
    assert str(exc.value).startswith(
        f"base dataset {base}: {target} (a link to {secret}) leads outside the base's folder"
    )
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")] == []
    # unchanged after the check, the base is copied as before (a link to a file inside as the file)
    monkeypatch.setattr(uploads, "check_base", check)
    target.unlink()
    target.write_bytes(original)
    (base / "images" / "z.png").symlink_to("000000.png")
    assert export(data, "part-inspection", tmp_path / "ds", base=base, labels_file=labels)["exported"] == 1
    ds = tmp_path / "ds"
    assert (ds / "images" / "z.png").read_bytes() == original and not (ds / "images" / "z.png").is_symlink()
    assert len(load_parts(ds).images) == 23
