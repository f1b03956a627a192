"""A dataset folder is the user's (or a tenant's), and its ``labels.jsonl`` names files as its rows wrote them:
a JSON escape puts any character in a name (``"images/x\\u001b[2J\\nOK published.png"``). ``cloud-trainer
train``, ``build anomaly`` and the fleet export with a ``--base`` printed such a refusal as it was, the escape
obeyed by the terminal (the screen cleared) and the newline starting a forged line of its own. Each prints its
refusal as one printable line now, the characters shown by their escapes, as ``dataset import`` does."""

from __future__ import annotations

import json

import pytest

from cloud_trainer.cli import main as cloud_main
from tests.integration.test_uploads_dataset import _base_and_uploads, write_labels
from tests.unit.test_image_import import per_class

HOSTILE = "images/x\u001b[2J\nOK published.png"
SHOWN = "images/x\\x1b[2J\\nOK published.png"


def _rename_first_row(labels_file) -> None:
    lines = labels_file.read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), "file": HOSTILE})
    labels_file.write_text("\n".join(lines) + "\n")


def _printed(capsys) -> str:
    out = capsys.readouterr()
    return out.out + out.err


@pytest.fixture
def dataset(tmp_path):
    from cloud_trainer.train.images import import_images

    src = per_class(tmp_path / "src", {"ok": 20, "dent": 3}, exts=(".png",))
    import_images(src, tmp_path / "ds", log=lambda m: None)
    _rename_first_row(tmp_path / "ds" / "labels.jsonl")
    return tmp_path / "ds"


def test_train_prints_a_refusal_naming_a_hostile_file_name_on_one_printable_line(tmp_path, dataset, capsys):
    code = cloud_main(["train", "vision", "--dataset", str(dataset), "--work", str(tmp_path / "w")])
    printed = _printed(capsys)
    assert code == 2
    assert printed.splitlines() == [
        f"cloud-trainer train: dataset error: {dataset / 'labels.jsonl'}:1: names {SHOWN}, which does not "
        f"exist in {dataset}"
    ]


def test_build_anomaly_prints_a_refusal_naming_a_hostile_file_name_on_one_printable_line(
    tmp_path, dataset, capsys
):
    code = cloud_main(
        ["build", "anomaly", "--dataset", str(dataset), "--registry", str(tmp_path / "reg")]
        + ["--key", str(tmp_path / "k.key")]
    )
    printed = _printed(capsys)
    assert code == 2
    assert (
        f"cloud-trainer build anomaly: dataset error: {dataset / SHOWN}: listed in {dataset / 'labels.jsonl'} "
        "but missing; import the dataset again"
    ) in printed.splitlines()
    assert "\x1b" not in printed and "\nOK published" not in printed


def test_the_fleet_export_prints_a_refusal_of_a_link_in_its_base_on_one_printable_line(tmp_path, capsys):
    data, shas = _base_and_uploads(tmp_path, 1)
    base = tmp_path / "base"
    (tmp_path / "tenant-b").mkdir()
    (base / HOSTILE).symlink_to(tmp_path / "tenant-b")  # a link out, named with the escape and the newline
    labels = write_labels(tmp_path / "l.jsonl", {shas[0]: "pass"})
    code = cloud_main(
        ["dataset", "--cloud-data", str(data), "--out", str(tmp_path / "out"), "--base", str(base)]
        + ["--labels", str(labels)]
    )
    printed = _printed(capsys)
    assert code == 2
    assert printed.splitlines() == [
        f"cloud-trainer dataset: base dataset {base}: {base / SHOWN} is a link to {tmp_path / 'tenant-b'}, "
        "outside the base's folder; a base is copied into the export whole, and only what lies inside it is: "
        "copy the file in, or remove the link; no dataset was written; "
        f"the 1 label(s) of {labels} are recorded in the store"
    ]


def test_a_vibration_import_prints_a_refusal_naming_a_hostile_file_name_on_one_printable_line(
    tmp_path, capsys
):
    run = tmp_path / "r\u001b[2J\nOK.csv"
    run.write_text("a,b\n1,2\n")  # one row: refused naming the file
    labels = tmp_path / "labels.csv"
    labels.write_text("run,fault\nr,healthy\n")
    code = cloud_main(
        ["dataset", "import", "--kind", "vibration", "--labels", str(labels), "--out", str(tmp_path / "out")]
        + [str(run)]
    )
    printed = _printed(capsys)
    assert code == 2
    assert printed.splitlines() == [
        f"cloud-trainer dataset import: {tmp_path}/r\\x1b[2J\\nOK.csv: needs a header and at least two rows"
    ]


@pytest.mark.parametrize("family", ["vision", "anomaly"])
def test_a_package_the_packager_refuses_ends_the_build_in_one_line(family, tmp_path, monkeypatch, capsys):
    """A ``PackageError`` from ``build_package`` after the model trained (an engine missing the golden outputs,
    a manifest field refused) ended ``cloud-trainer build`` in a traceback: one line now, exit code 2."""
    from cloud_trainer.train import anomaly, pipeline
    from model_packager.errors import GoldenError

    def refused(*args, **kwargs):
        raise GoldenError(
            "m.onnx: openvino output 'score' differs from the golden by 31.5 (atol 20.0)\nretrain"
        )

    monkeypatch.setattr(anomaly if family == "anomaly" else pipeline, "build", refused)
    code = cloud_main(
        ["build", family, "--dataset", str(tmp_path / "ds"), "--registry", str(tmp_path / "reg")]
        + ["--key", str(tmp_path / "k.key"), "--work", str(tmp_path / "w")]
    )
    assert code == 2
    verb = "build anomaly" if family == "anomaly" else "build"
    assert _printed(capsys).splitlines()[-1] == (  # after the line saying the signing key was created
        f"cloud-trainer {verb}: the model package was refused (golden_mismatch): m.onnx: openvino output 'score' "
        "differs from the golden by 31.5 (atol 20.0)\\nretrain; nothing published"
    )
