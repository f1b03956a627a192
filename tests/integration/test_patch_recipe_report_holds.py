"""A patch-recipe build's report says what its package holds: the FP32 model alone. Its report.md said
"Model size: FP32 0.19 MB, INT8 0.19 MB" (the same file twice), set the FP32 model against itself in a
latency table as an INT8 speed-up, and "1 epochs" (a bank of good patches, or 20 epochs of the patch net);
its report.json (the registry's copy too) held NaN (``learnt_scorer_auroc`` of a texture bank), which strict
JSON parsers (jq, a browser's JSON.parse, Go) refuse: it is null now. The build is ``test_patch_classifier``'s
(made once per run)."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_patch_classifier import _build
from tests.support.once import built_once


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return built_once(tmp_path_factory, "patch-classifier", _build)


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_the_patch_recipes_report_states_no_int8_size_latency_nor_epochs_and_is_strict_json(built):
    wd = built["settings"].workdir
    rep = _strict((wd / "report.json").read_text())
    assert rep["recipe"] == "patch" and rep["served"] == "fp32"
    assert rep["sizes"]["int8_bytes"] is None and rep["sizes"]["fp32_bytes"] > 0
    assert rep["latency_batch1"] and all(
        v["int8_ms"] is None and v["speedup"] is None and v["fp32_ms"] > 0
        for v in rep["latency_batch1"].values()
    )
    md = (wd / "report.md").read_text()
    assert "INT8 ms" not in md and "speed-up" not in md
    assert "MB, INT8" not in md and "epochs." not in md
    assert "FP32 ms" in md and "Model size: FP32" in md


def test_the_patch_recipes_report_md_says_no_int8_form_where_it_showed_fp32_again_as_int8(built):
    """Its metrics table had an INT8 (ORT) and an INT8 (OpenVINO) column, its parity table an int8 row (100 %
    agreement, deviation 0) and its perturbed table an int8 row: each the FP32 model's figures again."""
    wd = built["settings"].workdir
    rep = json.loads((wd / "report.json").read_text())
    assert "int8" in rep["metrics"]  # report.json keeps it: other code reads metrics.int8
    md = (wd / "report.md").read_text()
    assert "INT8 (ORT)" not in md and "INT8 (OpenVINO)" not in md, md
    assert "INT8 against FP32: no INT8 form" in md and "largest" not in md, md
    rows = [line for line in md.splitlines() if line.startswith("| int8 |")]
    assert rows and all("no INT8 form" in line for line in rows), md
    metric_rows = [line for line in md.splitlines() if line.startswith("| accuracy |")]
    assert metric_rows and all(line.split(" | ")[2] == "no INT8 form" for line in metric_rows), md
