"""`cloud-trainer build anomaly --light-variation curved|lamp` end to end: the choice reaches the build and
is recorded in the package's training report (report.json and report.md; the manifest is unchanged); a lamp
build's graph (each view's colours balanced to grey first) exports, signs and packages like the others."""

from __future__ import annotations

import json

import pytest

from cloud_trainer.train.cli import main_build
from tests.support.plates import write_plates


@pytest.mark.parametrize("light", ["curved", "lamp"])
def test_the_light_variation_chosen_on_the_command_line_is_in_the_training_report(tmp_path, light):
    data = write_plates(tmp_path / "plates", n_train=20, n_good=0, n_ng=0, seed=4, size=64)
    argv = [
        "anomaly",
        "--dataset",
        str(data / "train" / "good"),
        "--registry",
        str(tmp_path / "registry"),
        "--key",
        str(tmp_path / "keys" / "fleet.key"),
        "--work",
        str(tmp_path / "work"),
        "--size",
        "64",
        "--threads",
        "2",
        "--no-openvino",
        "--light-variation",
        light,
    ]
    assert main_build(argv) == 0
    report = json.loads((tmp_path / "work" / "report.json").read_text())
    assert report["light_variation"] == light
    assert f"light variation: {light}" in (tmp_path / "work" / "report.md").read_text()
