"""A model from elsewhere whose input or output is of an element type no manifest takes (a bool label or mask beside
an anomalib score, a float64 input from a scikit-learn or TensorFlow export): `build` names the type and what to
do. It said "output is onnx-type-9", which named neither."""

from __future__ import annotations

import pytest

from model_packager import SpecMismatchError, build_package
from tests.support.models import make_keypair, signal_spec


def _model(path, in_type, out_type):
    import onnx
    from onnx import helper

    g = helper.make_graph(
        [helper.make_node("Cast", ["features"], ["anomaly_score"], to=out_type)],
        "g",
        [helper.make_tensor_value_info("features", in_type, ["batch", 68])],
        [helper.make_tensor_value_info("anomaly_score", out_type, ["batch", 68])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _spec():
    s = signal_spec()
    s["outputs"] = [
        {"name": "anomaly_score", "dtype": "float32", "shape": ["batch", 68], "role": "raw"},
    ]
    return s


@pytest.mark.parametrize(
    ("in_type", "out_type", "said"),
    [
        (
            1,
            9,
            "manifest output 'anomaly_score' dtype float32 but model.onnx output is bool, which no manifest takes",
        ),
        (
            11,
            1,
            "manifest input 'features' dtype float32 but model.onnx input is float64, which no manifest takes",
        ),
    ],
)
def test_an_element_type_no_manifest_takes_is_named_with_what_to_do(tmp_path, in_type, out_type, said):
    key, _ = make_keypair(tmp_path / "keys")
    model = _model(tmp_path / "model.onnx", in_type, out_type)
    with pytest.raises(SpecMismatchError) as ei:
        build_package(model, _spec(), tmp_path / "out", signing_key=key)
    msg = str(ei.value)
    assert said in msg and "cast it in the graph" in msg, msg
    assert ("leave the output out of the manifest" in msg) == (out_type == 9), msg
