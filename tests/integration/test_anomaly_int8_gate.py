"""The anomaly family's INT8 form is judged as the other families' are (pipeline._int8_parity):
verdict by verdict against FP32 on every image, its score within 5 % of the threshold, and its
golden inputs hold the images nearest the threshold on either side, so that an agent's parity check
on its own CPU sees an INT8 form that flips verdicts there.

A tiny build (64-px plates of tests/support/plates.py, 20 good images, a random CNN backbone of
width 8) whose INT8 form moves scores by more than the threshold: the former build served FP32 too,
but its report had no served/served_why, its golden set was 8 good images and the first 4 defective
ones (nothing near the threshold), and an INT8 form it held carried a score bound up to 15 % of the
threshold and no decision check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from cloud_trainer.train import anomaly as A
from tests.support.models import make_keypair
from tests.support.plates import write_plates

SIZE = 64


def _build(tmp: Path, **kw):
    key, pub = make_keypair(tmp / "keys")
    data = write_plates(tmp / "plates", n_train=20, n_good=6, n_ng=8, seed=4, size=SIZE)
    s = A.AnomalySettings(
        dataset=data,
        registry=tmp / "registry",
        signing_key=key,
        workdir=tmp / "work",
        size=SIZE,
        features="cnn",
        width=8,
        relight=False,
        bank_size=256,
        folds=3,
        openvino=False,
        threads=2,
        floors={"image_auroc": 0.0},  # the point is INT8 against FP32, not this tiny model's AUROC
        **kw,
    )
    res = A.build(s, log=lambda m: None)
    from model_packager import load_trusted_keys, open_package

    opened = open_package(Path(res["package"]), tmp / "open", load_trusted_keys([pub]))
    return s, data, res["report"], opened


def _views(s, data):
    ds = A.load_good(data, size=SIZE)
    return ds, A.tensors([*ds.good, *ds.test], A.preprocessing(SIZE))


def _scores(model: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate(
        [sess.run(["anomaly_score"], {"image": x[i : i + 16]})[0] for i in range(0, len(x), 16)]
    )[:, 0]


def test_an_int8_form_that_flips_verdicts_is_served_fp32_and_the_golden_set_straddles_the_threshold(tmp_path):
    s, data, rep, opened = _build(tmp_path)
    thr = rep["threshold"]
    parity = rep["int8_parity"]["forms"]["int8"]
    # INT8 judged image by image: it flips verdicts and moves scores far past 5 % of the threshold here
    assert parity["agreement"] < 0.99 and parity["max_deviation"]["anomaly_score"] > 0.05 * thr, parity
    assert rep["served"] == "fp32" and rep["form"] == "fp32"
    assert "decides otherwise than FP32" in rep["served_why"] and "'anomaly_score'" in rep["served_why"]
    assert opened.manifest.parity is None and opened.fp32_model_path is None

    # the golden set holds the images nearest the threshold on either side of it
    _, x = _views(s, data)
    score = _scores(opened.model_path, x)
    gold = np.load(opened.golden_inputs)["image"]
    expected = np.load(opened.golden_expected)["anomaly_score"][:, 0]
    assert (expected >= thr).any() and (expected < thr).any(), (expected, thr)
    below, above = np.flatnonzero(score < thr), np.flatnonzero(score >= thr)
    nearest = [below[np.argmax(score[below])], above[np.argmin(score[above])]]
    for i in nearest:
        assert any(np.array_equal(g, x[i]) for g in gold), (i, score[i], thr, expected)


def test_an_int8_form_let_through_states_bounds_measured_on_every_image(tmp_path):
    # limits opened wide, as a user may: INT8 is served, and what the package states is what was measured
    s, data, rep, opened = _build(tmp_path, int8_max_deviation=10.0, int8_min_agreement=0.0, int8_margin=1.0)
    assert rep["served"] == "int8"
    measured = rep["int8_parity"]["forms"]["int8"]["max_deviation"]
    bound = opened.manifest.parity
    assert bound is not None and bound.min_agreement == 0.0 and opened.fp32_model_path is not None
    assert bound.output_atol["anomaly_score"] == pytest.approx(3 * measured["anomaly_score"], rel=1e-4)
    assert bound.output_atol["anomaly_map"] == pytest.approx(3 * measured["anomaly_map"], rel=1e-4)
    # golden items: none whose verdict INT8 changes on this machine (an agent's flip then means its CPU)
    _, x = _views(s, data)
    gold = np.load(opened.golden_inputs)["image"]
    g32 = _scores(opened.fp32_model_path, gold)
    g8 = _scores(opened.model_path, gold)
    thr = rep["threshold"]
    assert np.array_equal(g32 >= thr, g8 >= thr)
