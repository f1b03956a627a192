"""An ``anomaly_score`` far below any threshold: a broken model's -1e30.

NG is a score at or above the threshold, so -1e30 (or float32's lowest, -3.4e38) read OK whatever the part or
the machine: built, signed and served, each item published as a healthy one. A score below -1e6 times the
larger of 1 and the threshold's magnitude is now not read, like the remaining_life precedent: refused at build
(and by the agent's smoke test) naming the output and the value, and a live item giving one is the model's
error (``model_error``: an UNSURE result naming it, never OK). The trainer's scores are distances (never
below 0); a score far above the threshold (a loud defect, a saturated sensor) stays NG."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import InferenceError, ModelSlot
from edge_agent.types import Window
from model_packager import GoldenError, build_package
from model_packager.manifest import Manifest
from model_packager.preprocess import interpret
from tests.support.models import SIGNAL_WINDOW, golden_inputs, make_keypair, make_signal_onnx, signal_spec


def _score_of(src, out, *, when_loud: float | None = None, always: float | None = None):
    """The signal model whose ``anomaly_score`` is ``always`` on every item, or its own score but ``when_loud``
    on a window whose score passes 1e6 (a sensor's amplitude a thousand times the golden inputs')."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    for n in g.node:
        n.output[:] = ["s0" if o == "anomaly_score" else o for o in n.output]
    v = always if always is not None else when_loud
    g.initializer.extend(
        numpy_helper.from_array(np.array([x], np.float32), name)
        for name, x in (("loud", 1e6), ("odd", v), ("zero", 0.0))
    )
    if always is not None:
        nodes = [
            helper.make_node("Mul", ["s0", "zero"], ["s1"]),
            helper.make_node("Add", ["s1", "odd"], ["s2"]),
        ]
    else:
        nodes = [helper.make_node("Greater", ["s0", "loud"], ["is_loud"])]
        nodes.append(helper.make_node("Where", ["is_loud", "odd", "s0"], ["s2"]))
    nodes.append(helper.make_node("Identity", ["s2"], ["anomaly_score"]))
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


@pytest.mark.parametrize("score", [-1e30, -3.4e38, -2e6])
def test_an_anomaly_score_far_below_the_threshold_is_refused_at_build_naming_it(tmp_path, score):
    key, _ = make_keypair(tmp_path / "keys")
    model = _score_of(make_signal_onnx(tmp_path / "src.onnx"), tmp_path / "model.onnx", always=score)
    with pytest.raises(GoldenError) as ei:
        build_package(
            model, signal_spec(), tmp_path / "out", signing_key=key, golden_inputs=golden_inputs("signal")
        )
    msg = str(ei.value)
    assert f"output 'anomaly_score' (anomaly_score) gives {np.float32(score):.6g}, below -1e+06" in msg, msg


async def test_a_live_window_whose_anomaly_score_is_far_below_any_threshold_is_the_models_error(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    model = _score_of(make_signal_onnx(tmp_path / "src.onnx"), tmp_path / "model.onnx", when_loud=-1e30)
    pkg = build_package(
        model, signal_spec(), tmp_path / "out", signing_key=key, golden_inputs=golden_inputs("signal")
    )
    slot = ModelSlot("health", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [pub])
    await slot.start()
    try:
        x = np.random.default_rng(0).normal(0, 1, SIGNAL_WINDOW)
        assert slot.infer(Window("plc", 0, 0.0, 0.0, x)).interpretation.anomaly_score is not None
        with pytest.raises(InferenceError) as ei:  # OK on the former code
            slot.infer(Window("plc", 1, 0.0, 0.0, x * 1e6))
    finally:
        await slot.stop()
    assert ei.value.reason == "model_error", ei.value
    assert "output 'anomaly_score' (anomaly_score) gives -1e+30, below -1e+06" in str(ei.value)


def test_a_score_far_above_the_threshold_stays_ng_and_one_below_0_within_the_bound_reads():
    m = Manifest.model_validate(
        {**signal_spec(anomaly_threshold=-20.0), "files": []}  # a log-likelihood's threshold
    )
    logits = np.zeros((1, 5), np.float32)
    life = np.ones((1, 1), np.float32)

    def verdict(score: float) -> str:
        return interpret(
            m, {"anomaly_score": np.float32([[score]]), "fault_logits": logits, "remaining_life": life}
        ).verdict

    assert verdict(3e38) == "NG"
    assert verdict(-19.0) == "NG"
    assert verdict(-1.9e7) == "OK"  # above -1e6 x 20
    with pytest.raises(Exception, match=r"gives -2.1e\+07, below -2e\+07"):
        verdict(-2.1e7)
