"""The trainer's ONNX export (cloud_trainer/train/onnx_tools.export): the file ONNX Runtime runs
gives the PyTorch model's outputs at any batch size, with the names the manifest states, and the
check that keeps the fast TorchScript exporter honest catches a file that is not the model's."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")


def _model():
    from cloud_trainer.train.vision import build_model

    torch.manual_seed(0)
    return build_model(3).eval()


def test_an_exported_model_gives_the_models_outputs_at_any_batch_size(tmp_path):
    from cloud_trainer.train import onnx_tools

    model = _model()
    rng = np.random.default_rng(0)
    example = rng.normal(size=(1, 3, 48, 48)).astype(np.float32)
    path = onnx_tools.export(model, example, tmp_path / "m.onnx", "image", ["logits", "heat"])
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["logits", "heat"]
    assert not list(tmp_path.glob("*.data"))  # weights inside the file: a package carries one file
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 4, 9):
        x = rng.normal(size=(n, 3, 48, 48)).astype(np.float32)
        with torch.no_grad():
            want = [t.numpy() for t in model(torch.from_numpy(x))]
        got = sess.run(None, {"image": x})
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and np.allclose(g, w, rtol=1e-3, atol=1e-4)


def test_the_export_check_catches_a_file_that_is_not_the_models(tmp_path):
    from cloud_trainer.train import onnx_tools

    model = _model()
    example = np.random.default_rng(1).normal(size=(2, 3, 48, 48)).astype(np.float32)
    path = onnx_tools.export(model, example, tmp_path / "m.onnx", "image", ["logits", "heat"])
    assert onnx_tools._gives_the_models_outputs(model, example, path, "image")
    with torch.no_grad():  # the model changed after its file was written: the file is not this model
        next(model.parameters()).add_(0.5)
    assert not onnx_tools._gives_the_models_outputs(model, example, path, "image")
