"""Hostile datasets through the commands a user runs (``cloud-trainer dataset import``, ``train``, ``build
anomaly --dataset DIR``), not only the readers beneath them: a ``labels.jsonl`` row naming ``"\\ud800.png"`` (a
lone high surrogate, which no UTF-8 name holds) and an image in a folder that is a link to ``/etc/passwd``. Each
is one line naming the file (and the row's line), exit 2, never a UnicodeEncodeError traceback, and nothing is
written: no work folder, no registry entry, no dataset."""

from __future__ import annotations

import json
import os
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


def _latin1(parent: Path, name: bytes) -> Path:
    """``parent/name`` for a name in bytes that are not UTF-8 (a Windows share's Latin-1 names copied as they
    are): Python hands such a name over with each byte as a lone surrogate (surrogateescape)."""
    return parent / os.fsdecode(name)


def _strict_text(path: Path) -> str:
    """A file as a strict reader takes it: UTF-8, no lone surrogate escape (serde_json, PostgreSQL's jsonb and
    libyaml refuse ``\\udcfc``)."""
    text = path.read_bytes().decode("utf-8")
    assert "\\ud" not in text.lower(), text
    return text


def test_an_import_from_a_share_with_latin1_names_records_them_as_refusals_print_them_and_reads(
    tmp_path, capsys
):
    # Pr\xfcfteile/dent/kratzer_\xe4.png: the source folder's and an image's names are only recorded (the class
    # folders are UTF-8). Before, dataset.yaml's imported_from was written "\uDCFC", which training (libyaml)
    # refused: "dataset.yaml: not valid YAML (while parsing a quoted scalar)", and the row's source "\udce4"
    import yaml

    from cloud_trainer.train.data import load_parts

    src = _latin1(tmp_path, b"Pr\xfcfteile")  # made under UTF-8 names, renamed: OpenCV takes no such path
    per_class(tmp_path / "made", {"ok": 20, "dent": 3}, exts=(".png",)).rename(src)
    (src / "dent" / "dent0.png").rename(_latin1(src / "dent", b"kratzer_\xe4.png"))
    ds = tmp_path / "ds"
    assert cloud_main(["dataset", "import", str(src), "--out", str(ds)]) == 0, _printed(capsys)
    meta = yaml.load(_strict_text(ds / "dataset.yaml"), Loader=yaml.CSafeLoader)
    assert meta["imported_from"] == f"{tmp_path}/Pr\\xfcfteile"
    rows = [json.loads(line) for line in _strict_text(ds / "labels.jsonl").splitlines()]
    assert "dent/kratzer_\\xe4.png" in [r["source"] for r in rows]
    assert load_parts(ds).classes == ["ok", "dent"]  # as training reads it: dataset.yaml first


@pytest.mark.parametrize("family", ["anomaly", "vision"])
def test_a_dataset_under_a_latin1_folder_imports_with_its_masks_and_builds_a_package_that_verifies(
    tmp_path, capsys, family
):
    # Before: the import crashed (SIGSEGV: OpenCV given the path to write a BMP mask as PNG), leaving its hidden
    # folder; imported elsewhere, the build ended in a UnicodeEncodeError traceback writing report.md, and its
    # manifest's description would have held "\uDCFC", which no agent's YAML reader takes
    import cv2

    from model_packager import load_trusted_keys, read_manifest, verify_package
    from tests.integration.test_own_images_folders import mvtec_category

    src = mvtec_category(tmp_path / "bracket", 0)
    for m in (src / "ground_truth" / "scratch").iterdir():  # masks a labelling tool saved as BMP
        m.with_suffix(".bmp").write_bytes(cv2.imencode(".bmp", cv2.imread(str(m), cv2.IMREAD_GRAYSCALE))[1])
        m.unlink()
    ds = _latin1(tmp_path, b"Gr\xfcn/B\xfcgel")
    assert cloud_main(["dataset", "import", str(src), "--out", str(ds)]) == 0, _printed(capsys)
    assert os.listdir(ds.parent) == [ds.name]  # no hidden folder left beside it
    assert len(list((ds / "masks").glob("*.png"))) == 3
    reg = tmp_path / "reg"
    code = cloud_main(
        ["build", family, "--dataset", str(ds), "--registry", str(reg), "--key", str(tmp_path / "k.key")]
        + ["--work", str(tmp_path / "w"), "--size", "16", "--epochs", "1", "--no-openvino", "--force"]
        # vision: the fixed texture features' bank, not the learnt patch net (auto's choice for an imported dataset:
        # ~5 CPU s more). Both take the loaded dataset and leave the same "patch" build; the paths judged here are
        # the pipeline's (report, manifest, registry), not the recipe's
        + (["--recipe", "patch-texture"] if family == "vision" else [])
    )
    assert code == 0, _printed(capsys)
    assert f"Dataset `{tmp_path}/Gr\\xfcn/B\\xfcgel`" in _strict_text(tmp_path / "w" / "report.md")
    assert (
        json.loads(_strict_text(tmp_path / "w" / "report.json"))["dataset"]
        == f"{tmp_path}/Gr\\xfcn/B\\xfcgel"
    )
    (pkg,) = reg.rglob("*.edgepkg")
    verify_package(pkg, load_trusted_keys(tmp_path / "k.pub"))
    assert "B\\xfcgel" in (read_manifest(pkg).description or "")  # the folder's name, as refusals print it


def test_a_work_folder_whose_path_is_not_utf8_is_refused_in_one_line_before_training(tmp_path, capsys):
    # Before: `build anomaly` trained, then ONNX Runtime refused the model's path (a TypeError traceback); the
    # vision family's plots went to OpenCV, which crashed the process on such a path
    from tests.integration.test_own_images_folders import mvtec_category

    work = _latin1(tmp_path, b"Pr\xfcf")
    code = cloud_main(
        ["build", "anomaly", "--dataset", str(mvtec_category(tmp_path / "bracket", 0)), "--work", str(work)]
        + ["--registry", str(tmp_path / "reg"), "--key", str(tmp_path / "k.key"), "--size", "16"]
    )
    assert code == 2
    assert _printed(capsys) == [
        f"cloud-trainer build: --work {tmp_path}/Pr\\xfcf: the path holds a byte that is not UTF-8 (a name written "
        "in an older system's code page); give a work folder whose path is UTF-8"
    ]
    assert not work.exists() and not (tmp_path / "k.key").exists()
