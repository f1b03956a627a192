"""INT8 activations: signed (S8S8, the trainer's recipe until now) vs unsigned (U8S8) against FP32, on the
CPU this runs on, both engines. Same FP32 model quantized both ways with ``onnx_tools.quantize`` (QDQ,
per-channel 7-bit weights, MinMax), batch 1, one thread, alternating blocks of 5 calls in one process,
medians. Also each INT8 form's largest output deviation from FP32 on held-out inputs, relative to the
FP32 outputs' range, and how often its top class differs (random weights: timing and agreement only;
accuracy on trained models is the gate's, docs/trainer.md).

Models: the trainer's vision CNN (``vision.build_model``, 128 px, width 16, the classifier family's
default) and MobileNetV2 at width 1.0, 224 px (``bench.inference_224_bench.mobilenet_v2``).

    .venv/bin/python -m bench.int8_activations_bench [--n 400]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def models():
    from bench.inference_224_bench import mobilenet_v2
    from cloud_trainer.train.vision import build_model

    yield "vision CNN 128 px (trainer default)", build_model(6), 128
    yield "MobileNetV2 1.0, 224 px", mobilenet_v2(1.0), 224


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    a = ap.parse_args(argv)
    from bench._machine import machine, machine_line
    from cloud_trainer.train import onnx_tools
    from model_packager.cpu import cpu_flags
    from model_packager.runtimes import load, ort_session, ov_compile

    ov = load("openvino")  # without its usage telemetry (model_packager.runtimes)

    load_before = os.getloadavg()[0]
    rows = []
    rng = np.random.default_rng(0)
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for label, net, size in models():
            calib = rng.uniform(-2, 2, (32, 3, size, size)).astype(np.float32)
            held = rng.uniform(-2, 2, (16, 3, size, size)).astype(np.float32)
            d = tmp / str(size)
            fp32 = onnx_tools.export(
                net, calib[:1], d / "fp32.onnx", "image", ["logits", "heatmap"][: _n_out(net)]
            )
            forms = {
                "fp32": fp32,
                "int8 s8s8": onnx_tools.quantize(fp32, d / "s8.onnx", calib, "image", activations="s8"),
                "int8 u8s8": onnx_tools.quantize(fp32, d / "u8.onnx", calib, "image", activations="u8"),
            }
            calls, outs = {}, {}
            for form, path in forms.items():
                sess = ort_session(path, threads=1, single_stream=True)
                calls[("onnxruntime", form)] = (lambda s: lambda x: s.run(None, {"image": x})[0])(sess)
                # opened as the agent opens a package's ONNX on OpenVINO (ov_compile: converted with convert_model,
                # which can round an INT8 graph otherwise than Core.read_model of the path)
                compiled = ov_compile(
                    path,
                    {
                        "PERFORMANCE_HINT": "LATENCY",
                        "INFERENCE_NUM_THREADS": 1,
                        "INFERENCE_PRECISION_HINT": "f32",
                    },
                    core=core,
                )
                req = compiled.create_infer_request()
                calls[("openvino", form)] = (lambda r: lambda x: next(iter(r.infer({"image": x}).values())))(
                    req
                )
            for key, f in calls.items():
                outs[key] = np.concatenate([np.asarray(f(held[i : i + 1])) for i in range(len(held))])
            times: dict = {k: [] for k in calls}
            x = held[:1]
            for f in calls.values():
                for _ in range(10):
                    f(x)
            for _ in range(max(1, a.n // 5)):
                for k, f in calls.items():
                    for _ in range(5):
                        t = time.perf_counter()
                        f(x)
                        times[k].append(time.perf_counter() - t)
            for (engine, form), ts in times.items():
                ref = outs[(engine, "fp32")]
                got = outs[(engine, form)]
                span = float(ref.max() - ref.min()) or 1.0
                rows.append(
                    {
                        "model": label,
                        "engine": engine,
                        "form": form,
                        "p50_ms": float(np.median(ts)) * 1e3,
                        "vs_fp32": float(np.median(ts)) / float(np.median(times[(engine, "fp32")])),
                        "max_dev_rel": float(np.abs(got - ref).max()) / span,
                        "top_differs": float(
                            np.mean(
                                got.reshape(len(held), -1).argmax(1) != ref.reshape(len(held), -1).argmax(1)
                            )
                        ),
                    }
                )
    load_after = os.getloadavg()[0]
    res = {
        "bench": "int8_activations",
        "cpu_flags": " ".join(cpu_flags()),
        "machine": machine(),
        "cpu_count": os.cpu_count(),
        "load_1min_before": load_before,
        "load_1min_after": load_after,
        "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "n": a.n,
        "rows": rows,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "int8_activations_bench.json").write_text(json.dumps(res, indent=2))
    md = [
        f"Measured {res['utc']} UTC, {res['cpu_count']} cores, CPU flags `{res['cpu_flags']}`; 1-min load "
        f"{load_before:.1f} before, {load_after:.1f} after; batch 1, one thread, {a.n} calls of each, p50.",
        "",
        "| model | engine | form | p50 ms | vs FP32 | max deviation / FP32 range | top class differs |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['model']} | {r['engine']} | {r['form']} | {r['p50_ms']:.2f} | {r['vs_fp32']:.2f} | "
            f"{r['max_dev_rel']:.4f} | {r['top_differs']:.2f} |"
        )
    md += ["", machine_line()]
    (OUT / "int8_activations_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def _n_out(net) -> int:
    import torch

    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 3, 32, 32))
    return len(out) if isinstance(out, tuple) else 1


if __name__ == "__main__":
    raise SystemExit(main())
