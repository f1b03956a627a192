"""``--name``: a second product's model gets its own package name, and a name the registry would refuse is
refused at once.

``cloud-trainer build vision --name flange-inspection`` took the option and left it unread: the classifier of
the second product was published as the next version of ``part-inspection``, the first product's package, which
a deployment of that name's latest version would then install on the first product's line (and the gate held
it against the other product's model). And ``build anomaly --name "Flange Inspection"`` (a name as one types
it) trained the whole build and then failed with the manifest's traceback. The build reuses the patch
recipe's (``test_patch_classifier``: made once per run); only its evaluation, packaging and publication run here,
on a copy of its work folder."""

from __future__ import annotations

import json
import shutil

import pytest

from cloud_trainer.cli import main as cloud_main
from tests.integration.test_patch_classifier import _build
from tests.support.once import built_once


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return built_once(tmp_path_factory, "patch-classifier", _build)


def test_build_vision_name_names_the_package_and_leaves_part_inspection_alone(
    built, tmp_path, monkeypatch, capsys
):
    from cloud_trainer.train import onnx_tools, pipeline

    monkeypatch.setattr(pipeline, "_engines", lambda: ["onnxruntime"])
    monkeypatch.setattr(onnx_tools, "latency_ms", lambda *a, **k: 1.0)
    # the copied work folder holds the trained and quantized model: the build's later stages run on it
    monkeypatch.setattr(pipeline, "stage_train", lambda s, log: None)
    monkeypatch.setattr(pipeline, "stage_quantize", lambda s, log: None)
    work = tmp_path / "work"
    shutil.copytree(built["settings"].workdir, work)
    reg = tmp_path / "reg"
    code = cloud_main(
        [
            "build",
            "vision",
            "--dataset",
            str(built["settings"].dataset),
            "--work",
            str(work),
            "--registry",
            str(reg),
        ]
        + [
            "--key",
            str(built["settings"].signing_key),
            "--no-openvino",
            "--force",
            "--name",
            "flange-inspection",
        ]
    )
    assert code == 0
    published = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert published["name"] == "flange-inspection", published
    assert (reg / "flange-inspection" / "1.0.0").is_dir() and not (reg / "part-inspection").exists()


@pytest.mark.parametrize("family", ["vision", "anomaly"])
@pytest.mark.parametrize(
    ("option", "said"),
    [
        (
            ["--name", "Flange Inspection"],
            "argument --name: 'Flange Inspection': a package name is lowercase letters, digits, '-' and '_' (at "
            "most 63, the first a letter or digit), e.g. 'flange-inspection'",
        ),
        # the manifest refused it once the build had trained: a traceback, after minutes
        (
            ["--version", "1.0"],
            "argument --version: '1.0': a package version is semantic, e.g. 1.2.0 or 1.2.0-rc.1",
        ),
    ],
    ids=["name", "version"],
)
def test_a_name_or_version_the_package_refuses_is_refused_before_anything_is_read(
    family, option, said, tmp_path, capsys
):
    with pytest.raises(SystemExit) as exc:
        cloud_main(
            ["build", family, "--dataset", str(tmp_path / "nowhere"), *option]
            + ["--registry", str(tmp_path / "reg"), "--key", str(tmp_path / "k.key")]
        )
    assert exc.value.code == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "reg").exists() and not (tmp_path / "k.key").exists()


@pytest.mark.parametrize(
    "option",
    [["--light-variation", "lamp"], ["--features", "texture"], ["--backbone-weights", "resnet18.pth"]],
)
def test_the_anomaly_familys_options_are_refused_by_the_vision_build_not_ignored(option, tmp_path, capsys):
    """``build vision --light-variation lamp`` built the patch recipe without a word of it (as the anomaly
    family once took the vision family's ``--gray``, which it refuses now)."""
    code = cloud_main(
        ["build", "vision", "--dataset", str(tmp_path / "nowhere"), *option]
        + ["--registry", str(tmp_path / "reg"), "--key", str(tmp_path / "k.key")]
    )
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"cloud-trainer build vision: {option[0]} is the anomaly family's option, not taken by the vision family "
        "(cloud-trainer build anomaly reads it)"
    ]
    assert not (tmp_path / "k.key").exists()
