"""Hostile datasets through the commands a user runs (``cloud-trainer dataset import``, ``train``, ``build
anomaly --dataset DIR``), not only the readers beneath them: a ``labels.jsonl`` row naming ``"\\ud800.png"`` (a
lone high surrogate, which no UTF-8 name holds) and an image in a folder that is a link to ``/etc/passwd``. Each
is one line naming the file (and the row's line), exit 2, never a UnicodeEncodeError traceback, and nothing is
written: no work folder, no registry entry, no dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud_trainer.cli import main as cloud_main
from tests.unit.test_image_import import per_class


def _printed(capsys) -> list[str]:
    out = capsys.readouterr()
    return (out.out + out.err).splitlines()


@pytest.fixture
def surrogate_dataset(tmp_path) -> Path:
    from cloud_trainer.train.images import import_images

    src = per_class(tmp_path / "src", {"ok": 20, "dent": 3}, exts=(".png",))
    ds = tmp_path / "ds"
    import_images(src, ds, log=lambda m: None)
    lines = (ds / "labels.jsonl").read_text().splitlines()
    lines[2] = json.dumps(
        {**json.loads(lines[2]), "file": "images/\ud800.png"}
    )  # written "\ud800" (ASCII JSON)
    (ds / "labels.jsonl").write_text("\n".join(lines) + "\n")
    assert "\\ud800" in (ds / "labels.jsonl").read_text()
    return ds


def test_train_refuses_a_labels_row_naming_a_lone_surrogate_in_one_line_and_writes_nothing(
    tmp_path, surrogate_dataset, capsys
):
    work = tmp_path / "w"
    code = cloud_main(["train", "vision", "--dataset", str(surrogate_dataset), "--work", str(work)])
    assert code == 2
    assert _printed(capsys) == [
        f"cloud-trainer train: dataset error: {surrogate_dataset / 'labels.jsonl'}:3: its 'file' "
        "'images/\\ud800.png' holds a lone surrogate (a \\udXXX escape), which is no character and names no "
        "file; write the name as UTF-8 text"
    ]
    assert not work.exists() or not any(work.rglob("*.onnx"))


def test_build_anomaly_refuses_a_labels_row_naming_a_lone_surrogate_in_one_line_and_publishes_nothing(
    tmp_path, surrogate_dataset, capsys
):
    reg = tmp_path / "reg"
    code = cloud_main(
        ["build", "anomaly", "--dataset", str(surrogate_dataset), "--registry", str(reg)]
        + ["--key", str(tmp_path / "k.key")]
    )
    assert code == 2
    assert (
        f"cloud-trainer build anomaly: dataset error: {surrogate_dataset / 'labels.jsonl'}:3: its 'file' "
        "'images/\\ud800.png' holds a lone surrogate (a \\udXXX escape), which is no character and names no "
        "file; write the name as UTF-8 text"
    ) in _printed(capsys)
    assert not reg.exists() or not any(reg.rglob("*.edgepkg"))


@pytest.mark.skipif(not Path("/etc/passwd").is_file(), reason="needs a file outside the folder to link to")
def test_build_anomaly_and_import_refuse_an_image_linked_to_etc_naming_the_link(tmp_path, capsys):
    good = per_class(tmp_path / "src", {"good": 20, "dent": 3}, exts=(".png",)) / "good"
    (good / "passwd.png").symlink_to("/etc/passwd")
    reg = tmp_path / "reg"
    code = cloud_main(
        ["build", "anomaly", "--dataset", str(good), "--registry", str(reg), "--key", str(tmp_path / "k.key")]
    )
    assert code == 2
    assert (
        f"cloud-trainer build anomaly: dataset error: {good / 'passwd.png'}: a link to /etc/passwd, outside the "
        f"folder {good}; "
    ) in "\n".join(_printed(capsys))
    assert not reg.exists() or not any(reg.rglob("*.edgepkg"))
    # the same folder imported (a folder per class): refused naming the link, no dataset written
    code = cloud_main(["dataset", "import", str(good.parent), "--out", str(tmp_path / "ds")])
    assert code == 2
    assert (
        f"cloud-trainer dataset import: {good / 'passwd.png'}: a link to /etc/passwd, outside the source "
        f"{good.parent}; "
    ) in "\n".join(_printed(capsys))
    assert not (tmp_path / "ds").exists()
