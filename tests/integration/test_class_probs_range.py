"""A ``class_probs`` output that does not hold probabilities.

The NG score of a class output is 1 - p(ok_label). A model whose ``class_probs`` output held logits (an own
model exported without its softmax, declared as probabilities) or values past 1 on some frames gave an NG
score below 0 whenever p(ok) passed 1: OK whatever the part, its "probabilities" (negative, above 1) published
as they were. Such an output is not read: the build and the agent's load refuse the package naming the output
and the value, and a live frame that gives one is the model's error (counted, no verdict), never OK."""

from __future__ import annotations

import time

import numpy as np
import pytest
import yaml

from devices.base import Frame
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import InferenceError, ModelSlot
from model_packager import GoldenError, build_package, load_trusted_keys
from tests.support.models import golden_inputs, make_keypair, make_package, make_vision_onnx, vision_spec
from tests.unit.test_package_bad_input import members, resign, write


def _probs_spec(version: str) -> dict:
    spec = vision_spec(version=version)
    spec["outputs"][0]["role"] = "class_probs"
    return spec


def _probs_past_one_on_bright_frames(src, out):
    """The vision model's softmax, scaled by 1 + relu(mean pixel - 1): probabilities on the golden inputs
    (uniform in [-2, 2], mean ~0) and on a dark frame, up to twice them on a white one (mean 2)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    for n in g.node:
        n.output[:] = ["pre" if o == "logits" else o for o in n.output]
    g.initializer.append(numpy_helper.from_array(np.array([1.0], np.float32), "one"))
    g.node.extend(
        [
            helper.make_node("Softmax", ["pre"], ["sm"], axis=1),
            helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Unsqueeze", ["mean", "axis1"], ["mean1"]),
            helper.make_node("Sub", ["mean1", "one"], ["over"]),
            helper.make_node("Relu", ["over"], ["extra"]),
            helper.make_node("Add", ["extra", "one"], ["factor"]),
            helper.make_node("Mul", ["sm", "factor"], ["logits"]),
        ]
    )
    g.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probs")
    key, pub = make_keypair(tmp / "keys")
    v1 = make_package(tmp, kind="vision", version="1.0.0", key=key)
    return tmp, key, pub, v1


def test_logits_declared_as_class_probs_are_refused_at_build_naming_the_output(kit, tmp_path):
    tmp, key, _, _ = kit
    model = make_vision_onnx(tmp_path / "model.onnx")
    with pytest.raises(GoldenError) as ei:
        build_package(
            model,
            _probs_spec("1.1.0"),
            tmp_path / "out",
            signing_key=key,
            golden_inputs=golden_inputs("vision"),
        )
    msg = str(ei.value)
    assert "output 'logits' is class_probs but gives " in msg and "not a probability in [0, 1]" in msg, msg
    assert "declare role class_logits" in msg, msg


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
async def test_a_signed_package_whose_class_probs_are_logits_is_refused_and_the_old_model_serves(
    kit, tmp_path, engine
):
    """Built with a packager that did not check (the signature is valid): the agent's load refuses it."""
    tmp, key, pub, v1 = kit
    good = make_package(tmp_path, kind="vision", version="1.1.0", key=key, seed=2)
    ents = members(good)
    doc = yaml.safe_load(dict((m.name, d) for m, d in ents)["manifest.yaml"])
    doc["outputs"][0]["role"] = "class_probs"
    man = yaml.safe_dump(doc, sort_keys=False).encode()
    new = {"manifest.yaml": man, "manifest.sig": resign(man, key)}
    (tmp_path / "bad").mkdir()
    bad = write(tmp_path / "bad" / good.name, [(m, new.get(m.name, d)) for m, d in ents])
    s = ModelSlot(
        "vision", ModelConfig(package=str(v1), engine=engine), tmp_path / "data", load_trusted_keys([pub])
    )
    await s.start()
    try:
        outcome = await s.swap(bad, watch=False)
        assert not outcome.ok and outcome.stage == "golden", outcome
        assert "output 'logits' is class_probs but gives " in outcome.reason, outcome.reason
        assert s.version == "1.0.0"
    finally:
        await s.stop()


async def test_a_frame_whose_class_probs_pass_one_is_the_models_error_never_ok(kit, tmp_path):
    tmp, key, pub, v1 = kit
    model = _probs_past_one_on_bright_frames(
        make_vision_onnx(tmp_path / "src.onnx", bias=30.0), tmp_path / "model.onnx"
    )
    pkg = build_package(
        model, _probs_spec("1.2.0"), tmp_path / "out", signing_key=key, golden_inputs=golden_inputs("vision")
    )
    s = ModelSlot(
        "vision",
        ModelConfig(package=str(v1), engine="onnxruntime"),
        tmp_path / "data",
        load_trusted_keys([pub]),
    )
    await s.start()
    try:
        assert (await s.swap(pkg, watch=False)).ok and s.version == "1.2.0"
        dark = s.infer(Frame("cam", 1, time.time(), np.zeros((64, 64, 3), np.uint8))).interpretation
        assert 0.0 <= min(dark.probabilities.values()) <= max(dark.probabilities.values()) <= 1.0
        errors = s.counters["errors"]
        with pytest.raises(InferenceError) as ei:  # p(ok) about 2 here: NG score -1, OK on the former code
            s.infer(Frame("cam", 2, time.time(), np.full((64, 64, 3), 255, np.uint8)))
        assert ei.value.reason == "model_error"
        assert "output 'logits' is class_probs but gives 'ok' " in str(ei.value), ei.value
        assert s.counters["errors"] == errors + 1
    finally:
        await s.stop()
