"""``cloud-trainer dataset --base BASE``: the base is a dataset folder, a user's or a tenant's, copied into
the export. A row of its ``labels.jsonl`` naming ``../tenant-b/images/x.png`` or an absolute path was read
and its file's bytes counted into the export's digest, and ``copytree`` copied what any link in the base led
to (another tenant's folder) into the new dataset. Such a row is refused by its line, and such a link naming it,
before anything is written."""

from __future__ import annotations

import json

import pytest

from cloud_trainer.train.data import DatasetError, load_parts
from cloud_trainer.train.uploads import export
from tests.integration.test_uploads_dataset import _base_and_uploads, _png, write_labels


@pytest.mark.parametrize("absolute", [False, True])
def test_a_base_row_naming_a_file_out_of_the_base_is_refused_by_its_line_and_nothing_is_written(
    tmp_path, absolute
):
    data, shas = _base_and_uploads(tmp_path, 1)
    secret = tmp_path / "tenant-b" / "images" / "x.png"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(_png(77))
    base_labels = tmp_path / "base" / "labels.jsonl"
    lines = base_labels.read_text().splitlines()
    name = str(secret) if absolute else "../tenant-b/images/x.png"
    base_labels.write_text(
        "\n".join([*lines[:2], json.dumps({**json.loads(lines[2]), "file": name}), *lines[3:]])
    )
    labels = write_labels(tmp_path / "l.jsonl", {shas[0]: "pass"})
    with pytest.raises(DatasetError) as exc:
        export(data, "part-inspection", tmp_path / "ds", base=tmp_path / "base", labels_file=labels)
    assert str(exc.value).startswith(
        f"{base_labels}:3: names {name!r}, which leads out of the dataset folder {tmp_path / 'base'};"
    )
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")] == []


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_link_out_of_the_base_is_refused_naming_it_and_one_inside_is_copied(tmp_path, what):
    data, shas = _base_and_uploads(tmp_path, 1)
    other = tmp_path / "tenant-b"
    (other / "images").mkdir(parents=True)
    (other / "images" / "x.png").write_bytes(_png(77))
    base = tmp_path / "base"
    (base / "images" / "z.png").symlink_to("000000.png")  # inside the base: copied as before
    link, to = (
        (base / "images" / "y.png", other / "images" / "x.png")
        if what == "file"
        else (base / "theirs", other)
    )
    link.symlink_to(to, target_is_directory=what == "folder")
    labels = write_labels(tmp_path / "l.jsonl", {shas[0]: "pass"})
    with pytest.raises(DatasetError) as exc:
        export(data, "part-inspection", tmp_path / "ds", base=base, labels_file=labels)
    assert str(exc.value).startswith(
        f"base dataset {base}: {link} is a link to {to}, outside the base's folder;"
    )
    assert not (tmp_path / "ds").exists()
    link.unlink()
    assert export(data, "part-inspection", tmp_path / "ds", base=base, labels_file=labels)["exported"] == 1
    ds = tmp_path / "ds"
    assert (ds / "images" / "z.png").read_bytes() == (ds / "images" / "000000.png").read_bytes()
    assert len(load_parts(ds).images) == 23


def test_a_link_to_a_folder_inside_the_base_is_refused_naming_it_not_copied_again_and_again(tmp_path):
    # copytree follows a linked folder: one leading back up ('images/again -> ..') copied the base 40 levels
    # deep before the system's link limit stopped it, and two such links made it run for ever, filling the disk
    data, shas = _base_and_uploads(tmp_path, 1)
    base = tmp_path / "base"
    link = base / "images" / "again"
    link.symlink_to("..", target_is_directory=True)
    labels = write_labels(tmp_path / "l.jsonl", {shas[0]: "pass"})
    with pytest.raises(DatasetError) as exc:
        export(data, "part-inspection", tmp_path / "ds", base=base, labels_file=labels)
    assert str(exc.value).startswith(
        f"base dataset {base}: {link} is a link to the folder ..; a base is copied"
    )
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")] == []
