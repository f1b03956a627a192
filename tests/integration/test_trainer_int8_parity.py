"""The trainer's INT8 form of machine-health decides as its FP32 form on windows it never saw, within the
bounds its package states, or the package serves FP32.

A small maintenance package is built (the stage verbs, seconds) on the vibration simulator's windows;
the windows of other machines from the same simulator (another seed), preprocessed as the agent does
from their waveforms, go through the package's forms on ONNX Runtime. A package carrying an INT8 form
(``model.onnx`` beside ``model.fp32.onnx``) must keep every window within its ``parity`` bounds and
decisions, the bounds an agent's own check on the golden inputs relies on; a package without one
serves FP32, and its report says why. The INT8 gate judges INT8 on the whole held-out split: where it
lets INT8 through (limits opened wide here), the stated bounds hold on every held-out window.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cloud_trainer.train import maintenance, onnx_tools
from cloud_trainer.train.data import load_vibration
from cloud_trainer.train.pipeline import (
    BuildSettings,
    stage_evaluate,
    stage_package,
    stage_quantize,
    stage_train,
)
from model_packager import load_trusted_keys, open_package
from model_packager.golden import parity, parity_problems
from simulators.vibration import write_dataset
from tests.support.models import make_keypair


def quiet(msg: str) -> None:
    pass


def settings(tmp_path, vib, **kw) -> BuildSettings:
    key, _ = make_keypair(tmp_path / "keys")
    base = dict(
        family="maintenance",
        dataset=vib,
        registry=tmp_path / "registry",
        signing_key=key,
        workdir=tmp_path / "work",
        epochs=20,
        threads=2,
        floors={"anomaly_auroc": 0.0, "fault_accuracy": 0.0},
        int8_margin=1.0,
        calibration=32,
        openvino=False,  # no OpenVINO form in the package: the bounds checked here are the ONNX forms'
    )
    base.update(kw)
    return BuildSettings(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained and exported machine-health (20 epochs on 10 machines x 24 windows): its settings."""
    tmp = tmp_path_factory.mktemp("m8")
    vib = write_dataset(tmp / "ds", n_runs=10, windows_per_run=24, seed=1)
    s = settings(tmp, vib)
    stage_train(s, log=quiet)
    stage_quantize(s, log=quiet)
    return s


@pytest.fixture(scope="module")
def other_machines(tmp_path_factory):
    """Windows of five machines the trainer never saw (healthy and each fault, to near failure)."""
    return load_vibration(
        write_dataset(tmp_path_factory.mktemp("live") / "ds", n_runs=5, windows_per_run=16, seed=7)
    )


def _forms(pkg, key_dir, tmp_path):
    opened = open_package(pkg, tmp_path / "opened", load_trusted_keys([key_dir / "signing.pub"]))
    return opened, opened.manifest


def _outputs(path, x):
    return onnx_tools.run(path, x)


def _windows(d, m) -> np.ndarray:
    """The model's inputs for the windows of ``d``, made from their waveforms as the agent makes them
    (``model_packager.preprocess.signal_features`` with the package's preprocessing, standardised)."""
    return maintenance.features(d.waveforms, m.preprocessing, d.speed_rpm)


def test_the_int8_form_served_holds_its_bounds_on_other_machines_windows_or_fp32_is_served(
    trained, other_machines, tmp_path
):
    s = trained
    stage_evaluate(s, log=quiet)
    pkg = stage_package(s, log=quiet)
    report = json.loads((s.workdir / "report.json").read_text())
    opened, m = _forms(pkg, s.signing_key.parent, tmp_path)
    with np.load(s.workdir / "train.npz") as z:
        held_out = z["x"][z["test"]]  # the split's windows, unseen machines of the training set
    if opened.fp32_model_path is not None:  # INT8 served (where the agent's check passes): held to its bounds
        assert report["served"] == "int8"
        for x in (held_out, _windows(other_machines, m)):
            dev, agree = parity(m, _outputs(opened.fp32_model_path, x), _outputs(opened.model_path, x))
            assert parity_problems(m, dev, agree) == [], (dev, agree, m.parity)
    else:  # FP32 served, and the report names INT8's deviation on the held-out set
        assert report["served"] == "fp32" and m.quantization.scheme.startswith("fp32")
        assert (
            "from FP32 on the held-out set" in report["served_why"]
            or "decides otherwise" in report["served_why"]
        )
        assert report["int8_parity"]["problems"]


def test_where_the_gate_lets_int8_through_its_stated_bounds_hold_on_every_held_out_window(trained, tmp_path):
    """Limits opened wide (any deviation, half the decisions): INT8 is served, and the bounds the package
    states for it, which an agent checks its CPU against, cover every window of the held-out split (not
    only the golden ones), INT8 deciding as FP32 on the golden windows."""
    s = settings(tmp_path, trained.dataset, int8_max_deviation=10.0, int8_min_agreement=0.5)
    s.workdir.mkdir()
    for name in ("train.json", "train.npz", "model.fp32.onnx", "model.int8.onnx"):
        shutil.copy2(trained.workdir / name, s.workdir / name)
    rep = stage_evaluate(s, log=quiet)
    assert rep["served"] == "int8" and rep["int8_parity"]["problems"] == []
    pkg = stage_package(s, log=quiet)
    opened, m = _forms(pkg, s.signing_key.parent, tmp_path)
    assert opened.fp32_model_path is not None and m.parity is not None and m.parity.min_agreement == 0.5
    with np.load(s.workdir / "train.npz") as z:
        x, te, y = z["x"], z["test"], z["y"]
    ref, got = _outputs(opened.fp32_model_path, x[te]), _outputs(opened.model_path, x[te])
    dev, _ = parity(m, ref, got)
    assert all(dev[k] <= m.parity.output_atol[k] for k in dev), (dev, m.parity)
    # the golden windows cover the split: every fault, the most anomalous and the nearest to failure
    with np.load(opened.golden_inputs) as z:
        golden = z[m.inputs[0].name]
    assert len(golden) == 32 and len({tuple(r) for r in golden.round(5)}) == 32
    rows = [int(np.flatnonzero(np.all(np.isclose(x[te], g), axis=1))[0]) for g in golden]
    assert set(y[te][rows]) == set(y[te])
    for out in ("anomaly_score", "remaining_life"):
        assert {int(np.argmax(ref[out])), int(np.argmin(ref[out]))} <= set(rows)
