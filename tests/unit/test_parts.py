"""Part-image generator and `edge-sim dataset parts`: deterministic, labelled, with truthful masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from simulators.cli import main as edge_sim
from simulators.parts import CLASSES, PartGenerator, PartsError


def test_same_seed_same_parts_other_seed_other_parts():
    a, b, c = PartGenerator(7), PartGenerator(7), PartGenerator(8)
    pa, pb, pc = [a.next() for _ in range(5)], [b.next() for _ in range(5)], [c.next() for _ in range(5)]
    assert all(np.array_equal(x.image, y.image) and x.label == y.label for x, y in zip(pa, pb, strict=True))
    assert not all(np.array_equal(x.image, y.image) for x, y in zip(pa, pc, strict=True))


@pytest.mark.parametrize("label", CLASSES)
def test_each_class_renders_with_a_mask_inside_the_image(label):
    gen = PartGenerator(1, 96, 96)
    p = gen.make(3, label)
    assert p.image.shape == (96, 96, 3) and p.image.dtype == np.uint8
    assert p.label == label
    if label == "ok":
        assert p.mask is None and p.bbox is None and not p.defect
    else:
        x, y, w, h = p.bbox
        assert p.defect and p.mask.shape == (96, 96) and p.mask.any()
        assert 0 <= x < 96 and 0 <= y < 96 and w > 0 and h > 0
        ok = gen.make(3, "ok")
        # the defect changes the pixels where its mask is (missing hole: the hole is filled)
        inside = p.mask > 0
        assert np.abs(p.image[inside].astype(int) - ok.image[inside].astype(int)).mean() > 8


def test_defect_rate_is_respected_and_all_defects_appear():
    gen = PartGenerator(0, 64, 64, defect_rate=0.5)
    labels = [gen.next().label for _ in range(400)]
    ng = sum(lab != "ok" for lab in labels) / len(labels)
    assert 0.4 < ng < 0.6
    assert set(labels) == set(CLASSES)


def test_bad_parameters_are_refused_clearly():
    with pytest.raises(PartsError, match="too small"):
        PartGenerator(0, 16, 16)
    with pytest.raises(PartsError, match="defect_rate"):
        PartGenerator(0, defect_rate=1.5)
    with pytest.raises(PartsError, match="unknown defect classes"):
        PartGenerator(0, classes=["ok", "rust"])


def test_dataset_cli_writes_the_contract(tmp_path, capsys):
    out = tmp_path / "parts"
    assert (
        edge_sim(["dataset", "parts", "--out", str(out), "--count", "40", "--seed", "3", "--size", "64"]) == 0
    )
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 40
    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    assert meta["classes"] == CLASSES and meta["count"] == 40 and meta["digest"].startswith("sha256:")
    assert sum(meta["counts"].values()) == 40
    import cv2

    for r in rows:
        assert set(r) == {"id", "file", "label", "defect", "bbox", "mask"}
        img = cv2.imread(str(out / r["file"]))
        assert img.shape == (64, 64, 3)
        assert (r["mask"] is None) == (r["label"] == "ok") == (not r["defect"])
        if r["mask"]:
            assert cv2.imread(str(out / r["mask"]), cv2.IMREAD_GRAYSCALE).any()
    again = tmp_path / "again"
    edge_sim(["dataset", "parts", "--out", str(again), "--count", "40", "--seed", "3", "--size", "64"])
    assert yaml.safe_load((again / "dataset.yaml").read_text())["digest"] == meta["digest"]
    assert edge_sim(["dataset", "parts", "--out", str(tmp_path / "x"), "--count", "0"]) == 2
    assert "count must be >= 1" in capsys.readouterr().err
