"""bench/openvino_bf16_bench.py runs a package's INT8 form on OpenVINO at the CPU's default precision as the agent
reads it: a package built without an OpenVINO IR (the demo's builds) has its ONNX converted as the IR is made
(``model_packager.runtimes.ov_read``). Before, the bench compiled the ONNX file by path (``core.read_model``), and
on an AMX Xeon (OpenVINO 2026.4, default bf16) an INT8 QDQ vision model read so (the trainer's CNN, or the tests'
small one) does not compile: "No suitable implementations", and the bench stopped before measuring anything, on a
model the agent serves there."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def _default_precision() -> str:
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


@pytest.mark.skipif(
    _default_precision() == "f32",
    reason="this CPU's OpenVINO runs float layers at f32 by default: nothing differs",
)
def test_the_bench_runs_an_int8_vision_model_without_an_ir_at_the_cpus_default_precision(tmp_path):
    from bench.openvino_bf16_bench import _runners
    from cloud_trainer.train import onnx_tools
    from tests.support.models import make_vision_onnx

    x = np.random.default_rng(0).uniform(0, 1, (9, 3, 32, 32)).astype(np.float32)
    fp32 = make_vision_onnx(tmp_path / "fp32.onnx", width=32, height=32)
    int8 = onnx_tools.quantize(
        fp32, tmp_path / "int8.onnx", x[:8], "image"
    )  # QDQ, as the trainer's INT8 form
    opened = SimpleNamespace(model_path=int8, fp32_model_path=fp32, openvino_xml=None)

    runners = _runners(opened, 1)  # before: RuntimeError "No suitable implementations" compiling int8 at bf16
    assert set(runners) == {
        f"{form}/{engine}"
        for form in ("int8", "fp32")
        for engine in ("onnxruntime", "openvino-f32", "openvino-cpu-default")
    }
    for form in ("int8", "fp32"):
        ref = runners[f"{form}/onnxruntime"]({"image": x[8:]})["logits"]
        got = runners[f"{form}/openvino-cpu-default"]({"image": x[8:]})["logits"]
        assert np.abs(got - ref).max() < 0.05 * (np.ptp(ref) or 1.0), (form, got, ref)
