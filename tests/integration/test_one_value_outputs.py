"""An ``anomaly_score`` (or ``remaining_life``) output giving more than one value per item.

The manifest's shape is (N,) or (N,1): one value per item. A model whose output held several (per-region
scores under a symbolic dimension, which the install check matches to any size) had its first value read and
the others dropped: a defect scored in any other region came out OK on every item. Such an output is not
read: the build and the agent's load refuse the package naming the output and its shape."""

from __future__ import annotations

import numpy as np
import pytest

from model_packager import GoldenError, build_package, load_trusted_keys
from tests.support.models import golden_inputs, make_keypair, make_package, make_signal_onnx, signal_spec
from tests.support.swaps import swap_once, with_model


def _two_scores(src, out):
    """The signal model with ``anomaly_score`` of two values per item under a symbolic dimension: 0 first,
    the model's own score (100 times it) second."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    for n in g.node:
        n.output[:] = ["score1" if o == "anomaly_score" else o for o in n.output]
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
            numpy_helper.from_array(np.array([100.0], np.float32), "hundred"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Mul", ["score1", "zero"], ["first"]),
            helper.make_node("Mul", ["score1", "hundred"], ["second"]),
            helper.make_node("Concat", ["first", "second"], ["anomaly_score"], axis=1),
        ]
    )
    out_vi = next(o for o in g.output if o.name == "anomaly_score")
    out_vi.CopyFrom(helper.make_tensor_value_info("anomaly_score", TensorProto.FLOAT, ["batch", "scores"]))
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one-value")
    key, pub = make_keypair(tmp / "keys")
    v1 = make_package(tmp, kind="signal", version="1.0.0", key=key)
    hostile = _two_scores(make_signal_onnx(tmp / "src.onnx"), tmp / "model.onnx")
    return tmp, key, pub, v1, hostile


def test_an_anomaly_score_of_two_values_per_item_is_refused_at_build_naming_it(kit, tmp_path):
    _, key, _, _, hostile = kit
    with pytest.raises(GoldenError) as ei:
        build_package(
            hostile,
            signal_spec("machine-health", "1.1.0"),
            tmp_path / "out",
            signing_key=key,
            golden_inputs=golden_inputs("signal"),
        )
    msg = str(ei.value)
    assert "output 'anomaly_score' (anomaly_score) gives 2 values for one item (shape [1, 2])" in msg, msg


async def test_a_signed_package_whose_anomaly_score_gives_two_values_is_refused_and_the_old_model_serves(
    kit, tmp_path
):
    """Its golden outputs recorded from the model itself (a packager that did not check, a valid
    signature): every item's first value is 0, so the former code served it OK on every window."""
    import onnxruntime as ort

    _, key, pub, v1, hostile = kit
    inputs = golden_inputs("signal")
    sess = ort.InferenceSession(str(hostile), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    expected = dict(zip(names, sess.run(None, inputs), strict=True))
    assert expected["anomaly_score"][:, 1].max() >= 0.5  # NG on the model's own second value
    good = make_package(tmp_path, kind="signal", version="1.1.0", key=key)
    bad = with_model(good, key, hostile, expected, tmp_path / "bad")
    outcome, version = await swap_once(
        "signal", v1, bad, "onnxruntime", tmp_path / "data", load_trusted_keys([pub])
    )
    assert not outcome.ok and outcome.stage == "golden", outcome
    assert "output 'anomaly_score' (anomaly_score) gives 2 values for one item" in outcome.reason, outcome
    assert version == "1.0.0"
