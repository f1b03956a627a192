"""Export to ONNX, static INT8 quantization with ONNX Runtime, and batch inference on either engine.

Export: ``torch.onnx.export`` with named inputs/outputs and a dynamic batch dimension, by the
TorchScript exporter (``dynamo=False``: ~0.7 s a model against ~10-20 s for the dynamo exporter on a
2-core machine, most of it the exporter's own start) when ONNX Runtime gives the PyTorch model's
outputs from its file at two batch sizes; otherwise (an operator it cannot export, outputs off, a
PyTorch without it) by the dynamo exporter (``dynamo=True, external_data=False``; FIELD-NOTES). Quantization: ``quant_pre_process`` then
``quantize_static`` (QDQ, per-channel weights, S8 activations, MinMax) calibrated on a held-out
slice of real inputs; OpenVINO runs the same QDQ model as INT8.

Weights are quantized to 7 bits (``reduce_range``): x86 CPUs without VNNI (AVX2 only, AVX-512
without VNNI: the Atoms, Celerons and older Cores of factory gateways) multiply u8 activations by
s8 weights with ``vpmaddubsw``, which adds each pair of products into a *saturating 16-bit* sum;
255 × 127 × 2 overflows it, 255 × 63 × 2 does not. Measured on the vision model (a Haswell CPU
emulated by QEMU, see ``bench/int8_cpu_bench.py``): full 8-bit weights gave accuracy 0.91 on ONNX
Runtime and 0.57 on OpenVINO against 0.99 in FP32; 7-bit weights 0.99 on both, and bit-identical
outputs on the VNNI machine. See docs/trainer.md for the alternatives measured.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 18
SCHEME = "int8-qdq-s8s8-per-channel-minmax-7bit-weights"


def export(model, example: np.ndarray, path: Path, input_name: str, output_names: list[str]) -> Path:
    import torch

    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(example)
    try:
        _export_torchscript(model, x, path, input_name, output_names)
        if _gives_the_models_outputs(model, example, path, input_name):
            return path
    except Exception:  # any failure of the fast path leaves it to the dynamo exporter
        pass
    path.unlink(missing_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=True,
        external_data=False,
        opset_version=OPSET,
        input_names=[input_name],
        output_names=output_names,
        dynamic_shapes={_forward_arg(model): {0: batch}},
        verbose=False,
    )
    return path


def _export_torchscript(model, x, path: Path, input_name: str, output_names: list[str]) -> None:
    import warnings

    import torch

    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, not gone (FIELD-NOTES)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[input_name],
            output_names=output_names,
            dynamic_axes={name: {0: "batch"} for name in [input_name, *output_names]},
            do_constant_folding=True,
        )


def _gives_the_models_outputs(model, example: np.ndarray, path: Path, input_name: str) -> bool:
    """ONNX Runtime runs the file at the example's batch size and at one more than twice it, and
    gives the PyTorch model's outputs: a trace that fixed a shape or took a branch for the example is
    caught here. Within 1 % and a thousandth of the outputs' range: the two runtimes' FP32 kernels
    differ by up to ~0.3 % on the patch families (memory-bank distances; the dynamo exporter's file
    alike), and the gate judges the exported file itself, not the PyTorch model."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (example, np.concatenate([example, example[::-1], example[:1]])):
        with torch.no_grad():
            want = model(torch.from_numpy(np.ascontiguousarray(x)))
        want = [want] if isinstance(want, torch.Tensor) else list(want)
        got = sess.run(None, {input_name: np.ascontiguousarray(x)})
        if len(got) != len(want):
            return False
        for g, w in zip(got, want, strict=True):
            w = w.detach().numpy()
            scale = float(np.abs(w).max()) if w.size else 0.0
            if g.shape != w.shape or not np.allclose(g, w, rtol=1e-2, atol=max(1e-3 * scale, 1e-6)):
                return False
    return True


def _forward_arg(model) -> str:
    import inspect

    return next(iter(inspect.signature(model.forward).parameters))


def quantize(
    fp32: Path,
    out: Path,
    calibration: np.ndarray,
    input_name: str,
    *,
    seven_bit_weights: bool = True,
    op_types: list[str] | None = None,
    activations: str = "s8",
) -> Path:
    """Static INT8 (QDQ). ``seven_bit_weights=False`` is the former recipe (full 8-bit weights), kept
    only to measure it against (it saturates on x86 without VNNI). ``op_types``: quantize only these
    operators (e.g. ``["Conv"]``; default all that ONNX Runtime quantizes). ``activations``: ``s8``
    (signed, the recipe) or ``u8`` (unsigned, ONNX Runtime's U8S8)."""
    if activations not in ("s8", "u8"):
        raise ValueError(f"activations is 's8' or 'u8', not {activations!r}")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration[i : i + 1] for i in range(len(calibration)))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {input_name: x}

    pre = out.with_name(out.stem + ".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=seven_bit_weights,
        activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=op_types,
    )
    pre.unlink(missing_ok=True)
    return out


def _ort_session(path: Path, threads: int):
    from model_packager.runtimes import ort_session

    return ort_session(path, threads=threads)


_OV_MODELS: dict[bytes, Any] = {}  # converted models of the files last compiled, by content digest


def _ov_compiled(path: Path, config: dict):
    """The ONNX model as the package's OpenVINO IR runs it (``model_packager.runtimes``: converted,
    not ``read_model`` of the ONNX file, whose INT8 graph can round differently).

    A build compiles each of its two files several times (batch outputs, then latency at 1 and 2
    threads); the conversion (0.6 s and more on a 2-core CPU) is done once per file content (its
    digest: a file rewritten in place within the clock's tick is not mistaken for the old one) and the
    converted model compiled each time (``compile_model`` leaves it unchanged)."""
    import hashlib

    from model_packager.runtimes import load, ov_read

    key = hashlib.sha256(path.read_bytes()).digest()
    model = _OV_MODELS.get(key)
    if model is None:
        if len(_OV_MODELS) >= 2:  # a build's FP32 and INT8 forms
            _OV_MODELS.pop(next(iter(_OV_MODELS)))
        model = _OV_MODELS[key] = ov_read(path)
    return load("openvino").Core().compile_model(model, "CPU", config)


def run(
    path: Path, x: np.ndarray, engine: str = "onnxruntime", threads: int = 1, batch: int = 64
) -> dict[str, np.ndarray]:
    """Outputs for all rows of ``x`` (batched), by output name."""
    if engine == "onnxruntime":
        sess = _ort_session(path, threads)
        name = sess.get_inputs()[0].name
        names = [v.name for v in sess.get_outputs()]
        parts = [sess.run(names, {name: x[i : i + batch]}) for i in range(0, len(x), batch)]
        return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)}
    compiled = _ov_compiled(path, {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
    outs: dict[str, list] = {}
    for i in range(0, len(x), batch):
        res = compiled(x[i : i + batch])
        for port in compiled.outputs:
            outs.setdefault(port.get_any_name(), []).append(np.asarray(res[port]))
    return {k: np.concatenate(v) for k, v in outs.items()}


def latency_ms(path: Path, x1: np.ndarray, engine: str, threads: int, n: int = 200) -> float:
    """Median batch-1 latency. OpenVINO at f32, as the agent runs it by default (``openvino_f32``):
    at the CPU's default (bf16 on AVX-512 BF16 and AMX CPUs) the report timed a precision no agent
    serves, and an FP32 form looked 1.7x as fast as it runs (a 96-px vision model on a Sapphire Rapids:
    0.113 ms against 0.191 at f32, so INT8 at 0.117 looked no faster)."""
    if engine == "onnxruntime":
        sess = _ort_session(path, threads)
        name = sess.get_inputs()[0].name
        call = lambda: sess.run(None, {name: x1})  # noqa: E731
    else:
        compiled = _ov_compiled(
            path,
            {
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        req = compiled.create_infer_request()
        call = lambda: req.infer(x1, share_inputs=True, share_outputs=True)  # noqa: E731
    for _ in range(20):
        call()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1000)
