"""A patch-recipe build's report.md is what a user reads to choose the threshold: it said "Operating point:
threshold 0.5 on the NG score (1 − p(ok)); patch recipe: score threshold -1.2 ..." (two thresholds, of two scales,
side by side) above a table of other thresholds with a header and no row. It now says that the NG score's 0.5 is
the patch score the calibration placed, and the table holds the NG score's thresholds on the held-out scores the
threshold was placed on. The build is ``test_patch_classifier``'s (made once per run)."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_patch_classifier import _build
from tests.support.once import built_once


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return built_once(tmp_path_factory, "patch-classifier", _build)


def test_the_patch_recipes_report_gives_one_threshold_and_a_table_of_others(built):
    wd = built["settings"].workdir
    op = json.loads((wd / "report.json").read_text())["operating_point"]
    cal = op["calibration"]
    assert op["threshold"] == 0.5 and cal["defect_images"] > 0
    md = (wd / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("Operating point:"))
    assert "threshold 0.5 on the NG score" in line and "score threshold" not in line, line
    assert f"the NG score is 0.5 where the patch score (log scale) is {cal['centre']:.4g}" in line, line
    head = md.index("| threshold | NG recall | NG precision | good parts rejected |")
    rows = [x for x in md[head:].splitlines()[2:] if x.startswith("|")]
    assert len(rows) >= 5 and rows[0].split(" | ")[0] != "| engine, threads", md
    at_half = next(x for x in rows if x.startswith("| 0.5 |"))
    assert float(at_half.split(" | ")[1]) > 0  # the defects' held-out scores at the threshold served
    assert len(op["validation_curve"]) == 41
