"""The patch recipe has no INT8 form (its ``model.int8.onnx`` is the FP32 model, and the package holds the FP32
model), yet its evaluation report said "Served form: **INT8** (INT8 within the margin of FP32 ...)", its
``served`` was ``int8`` and its latency table set the FP32 model against itself as an INT8 speed-up: a user read
that the gateway runs an INT8 model. The build is ``test_patch_classifier``'s (made once per run)."""

from __future__ import annotations

import pytest

from tests.integration.test_patch_classifier import _build
from tests.support.once import built_once


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return built_once(tmp_path_factory, "patch-classifier", _build)


def test_the_patch_recipes_report_says_the_fp32_model_it_packages_is_served(built, tmp_path):
    from model_packager import load_trusted_keys, open_package

    rep = built["report"]
    assert rep["recipe"] == "patch"
    assert rep["served"] == "fp32" and "no INT8 form" in rep["served_why"], rep["served_why"]
    md = (built["settings"].workdir / "report.md").read_text()
    assert "Served form: **FP32** (the patch recipe has no INT8 form" in md
    opened = open_package(built["pkg"], tmp_path, load_trusted_keys([built["pub"]]))
    assert opened.manifest.quantization.scheme.startswith("none (patch recipe")
