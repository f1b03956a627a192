"""A good-only anomaly package's golden inputs hold views just below and just above its threshold, so
that the agent's check at load (``edge_agent.models.select.check``) refuses a form that flips verdicts
there on its CPU.

The final bank holds every good image, so the final model scores them ~0 (here: under 0.2 % of the
threshold), and a folder of good images has no others: the former golden set was those images alone
(of a model of tile positions: one good frame). A form whose scores and maps come out 5 % low (a
precision lost in proportion, as bf16's or an INT8 CPU's) moved them by nothing the golden tolerance
could see, passed the check, and let parts scored just above the threshold pass as good. The golden
set now also holds good views with a disc of noise made to score just below and just above the
threshold (``anomaly.near_threshold``): the same form deviates there by more than the tolerance, and
is refused.

Tiny builds: 20 plates of tests/support/plates.py at 32 px (a bank of 2,048 patches holds all of
theirs), and 20 sheets of tests/support/bracket_frames.py in 3x2 tiles of 64 px."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train import anomaly as A
from edge_agent.engines import OrtEngine
from edge_agent.models.config import ModelConfig
from edge_agent.models.select import check
from model_packager import load_trusted_keys, open_package
from model_packager.golden import decisions, run_engine
from tests.support.bracket_frames import write_good_folder
from tests.support.models import make_keypair
from tests.support.plates import write_plates

LOW = 0.95  # the flawed form's outputs: 5 % low


def _build(tmp: Path, data: Path, **kw):
    key, pub = make_keypair(tmp / "keys")
    s = A.AnomalySettings(
        dataset=data,
        registry=tmp / "registry",
        signing_key=key,
        workdir=tmp / "work",
        light_variation="none",
        folds=3,
        openvino=False,
        threads=2,
        **kw,
    )
    res = A.build(s, log=lambda m: None)
    opened = open_package(Path(res["package"]), tmp / "open", load_trusted_keys([pub]))
    return res["report"], opened


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plates")
    data = write_plates(tmp / "data", n_train=20, n_good=0, n_ng=0, seed=4, size=32) / "train" / "good"
    rep, opened = _build(tmp, data, size=32, bank_size=2048)
    return data, rep, opened


@pytest.fixture(scope="module")
def sheets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sheets")
    data = write_good_folder(tmp / "data", 11, 20, 192, 128, kind="sheet")
    rep, opened = _build(tmp, data, size=64, tiles=[3, 2], bank_size=256)
    return data, rep, opened


def _low_form(model: Path, out: Path) -> Path:
    """``model`` with each output multiplied by ``LOW``, in the ONNX graph."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(model))
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array(LOW, np.float32), "low_factor"))
    for o in g.output:
        inner = f"{o.name}_exact"
        for node in g.node:
            node.output[:] = [inner if v == o.name else v for v in node.output]
            node.input[:] = [inner if v == o.name else v for v in node.input]
        g.node.append(helper.make_node("Mul", [inner, "low_factor"], [o.name]))
    onnx.save(m, str(out))
    return out


def _agent_check(opened, model: Path, inputs: dict, expected: dict):
    """The agent's check at load of ``model`` as the package's form, on these golden inputs."""
    o = dataclasses.replace(opened, model_path=model)
    engine = OrtEngine(o, ModelConfig(package="part-anomaly", engine="onnxruntime"))
    try:
        return check(engine, o, inputs, expected)
    finally:
        engine.close()


def _golden(opened) -> tuple[dict, dict]:
    return dict(np.load(opened.golden_inputs)), dict(np.load(opened.golden_expected))


def test_a_good_only_packages_golden_set_holds_views_just_below_and_just_above_its_threshold(
    plates, sheets, tmp_path
):
    for _, rep, opened in (plates, sheets):
        thr = rep["threshold"]
        _, expected = _golden(opened)
        t = 6 if rep["tiles"] else 1
        score = expected["anomaly_score"][:, 0].reshape(-1, t).max(1)  # a frame's: its worst tile's
        assert ((score >= 0.9 * thr) & (score < thr)).any(), (score / thr, rep["tiles"])
        assert ((score >= thr) & (score <= 1.1 * thr)).any(), (score / thr, rep["tiles"])
    # a model of tile positions: whole frames, which the agent checks a frame at a time: the model as
    # built passes, a form 5 % low is refused
    _, rep, opened = sheets
    inputs, expected = _golden(opened)
    assert rep["positions"] and len(inputs["image"]) % 6 == 0
    assert _agent_check(opened, opened.model_path, inputs, expected).ok
    trial = _agent_check(opened, _low_form(opened.model_path, tmp_path / "low.onnx"), inputs, expected)
    assert not trial.ok and "'anomaly_score'" in (trial.reason or ""), trial


def test_the_agent_refuses_a_form_5_percent_low_that_the_former_golden_set_let_through(plates, tmp_path):
    data, rep, opened = plates
    thr = rep["threshold"]
    inputs, expected = _golden(opened)
    low = _low_form(opened.model_path, tmp_path / "low.onnx")
    # the form flips verdicts near the threshold: golden views scored just above it pass as good
    got = run_engine("onnxruntime", low, inputs)
    spec = [o for o in opened.manifest.outputs if o.name == "anomaly_score"]
    flipped = (decisions(spec, expected) != decisions(spec, got)).any(1)
    assert flipped.any() and (expected["anomaly_score"][flipped, 0] >= thr).all()

    # the former golden set, the good images the bank holds (scores ~0), could not see it
    ds = A.load_good(data, size=32)
    former = {"image": A.tensors(ds.good[::2], A.preprocessing(32))}
    former_expected = run_engine("onnxruntime", opened.model_path, former)
    assert former_expected["anomaly_score"].max() < 1e-2 * thr
    assert _agent_check(opened, low, former, former_expected).ok

    # the package's golden set: refused, the score named; the model as built passes
    trial = _agent_check(opened, low, inputs, expected)
    assert not trial.ok and "'anomaly_score'" in (trial.reason or ""), trial
    assert _agent_check(opened, opened.model_path, inputs, expected).ok
