"""A tiny signal model to package and run as your own: 8 spectrum bands + 4 time features of a
vibration window + 1 scalar (temperature) -> an anomaly score in 0..1.

Stands in for the model your training produces (exported to ONNX from PyTorch, scikit-learn via
skl2onnx, Keras via tf2onnx, ...): what matters to the agent is the ONNX graph's input and output
names, dtypes and shapes, which ``spec.yaml`` declares. Built with onnx.helper, no framework needed:

    python examples/own-model/make_model.py out/model.onnx
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save

N_FEATURES = 8 + 4 + 1  # n_bands + time features (rms, peak, crest, kurtosis) + scalars


def make(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (N_FEATURES, 1)).astype(np.float32)
    b = np.array([-1.0], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["z0"]),
            helper.make_node("Add", ["z0", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["anomaly_score"]),
        ],
        "tiny-anomaly",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", N_FEATURES])],
        [helper.make_tensor_value_info("anomaly_score", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="example")
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


if __name__ == "__main__":
    print(make(Path(sys.argv[1] if len(sys.argv) > 1 else "model.onnx")))
