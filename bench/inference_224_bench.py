"""Agent overhead on a realistic model: full ``ModelSlot.infer`` of a 224-px INT8 CNN on a 640x480
BGR frame (preprocessing and postprocessing included) vs a bare ``InferenceSession.run`` of the same
model on an already-preprocessed 1x3x224x224 tensor (issues 13 and 18: ≤ 1.10x, ≤ 1.05x at p50).

The models: MobileNetV2 classifiers (inverted residual blocks with depthwise convs) at width 1.0 (the
standard network) and 0.5 (a third of its multiply-adds: the preprocessing's share is larger), random
weights (timing only), built in torch, exported and quantized to INT8 (static QDQ, a few
random calibration images) with the trainer's own ``cloud_trainer.train.onnx_tools``, packed and
signed with ``model_packager`` (manifest: 224-px colour image, linear resize, normalisation).

Same process, alternating blocks of 5 calls, medians (and p99) over ``--n`` calls each, every call (the
bare one too) from one thread lowered as the agent's inference threads are (``in_inference_thread``):
  bare   ``onnxruntime.InferenceSession`` with the agent's session options (1 intra-op thread,
         one inter-op thread, sequential, all graph optimizations) on the preprocessed tensor;
  engine the slot's engine call (``slot._active.engine.run``) on the same tensor;
  infer  ``slot.infer(Frame)`` on the 640x480 frame, without the UNSURE check;
  infer_unsure  ``slot.infer(Frame, tolerance)``: the exact call a frame pipeline makes (the packages
         carry the training inputs' statistics, manifest and local file, as trained ones do);
  pre    ``image_tensor`` alone (the preprocessing share), called in a row;
  pre_cold  the same right after an engine run (untimed), as ``infer`` meets it: the frame and the code
         read back from memory (the difference between ``pre`` and the preprocessing ``infer`` reports);
  check  the UNSURE check alone (its wall time and its CPU time: on a machine whose cores are busy,
         ``infer_unsure`` takes about the latter more than ``infer``; with a core free, about nothing more);
  copy   a plain copy of the frame right after an engine run (untimed): the floor of any preprocessing
         that reads the whole frame once with the caches as the model leaves them.
Beside the wall times, the process's CPU time of each ``bare``, ``infer`` and ``infer_unsure`` call (all its
threads: OpenVINO's request thread, the check's): on a shared machine other work stretches wall times by
whole time slices, and the CPU ratio says what the agent itself adds.
For OpenVINO the bare call is an infer request of the package's IR compiled apart with the engine's
properties, with shared inputs and outputs (no copies: what a lean caller does, as the slot's request).

    .venv/bin/python -m bench.inference_224_bench [--n 600] [--no-openvino] [--widths 1.0,0.5]
        [--inputs float32,uint8]

Two model inputs: float32 (the agent resizes and normalises the frame: ``image_tensor``) and uint8
(a model that takes the pixels as they are, made by ``pixels_in``: the agent only resizes and lays
out the frame).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
LABELS = ("ok", "scratch", "dent", "crack", "stain")


def mobilenet_v2(width: float = 0.5, n_classes: int = len(LABELS)):
    """A MobileNetV2 (Sandler et al. 2018) body at ``width``: the standard stage table."""
    import torch
    from torch import nn

    def ch(c: float) -> int:
        return max(8, int(c * width + 4) // 8 * 8)

    def cbr(i, o, k=3, s=1, g=1):
        return nn.Sequential(
            nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.ReLU6()
        )

    class Inverted(nn.Module):
        def __init__(self, i, o, s, t):
            super().__init__()
            h = i * t
            layers = ([cbr(i, h, 1)] if t != 1 else []) + [
                cbr(h, h, 3, s, h),
                nn.Conv2d(h, o, 1, bias=False),
                nn.BatchNorm2d(o),
            ]
            self.body = nn.Sequential(*layers)
            self.res = s == 1 and i == o

        def forward(self, x):
            y = self.body(x)
            return x + y if self.res else y

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            table = [
                (1, 16, 1, 1),
                (6, 24, 2, 2),
                (6, 32, 3, 2),
                (6, 64, 4, 2),
                (6, 96, 3, 1),
                (6, 160, 3, 2),
                (6, 320, 1, 1),
            ]
            c = ch(32)
            layers = [cbr(3, c, 3, 2)]
            for t, o, n, s in table:
                for k in range(n):
                    layers.append(Inverted(c, ch(o), s if k == 0 else 1, t))
                    c = ch(o)
            layers.append(cbr(c, 1280, 1))
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(1280, n_classes)

        def forward(self, image):
            return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(image), 1), 1))

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # BN statistics away from identity, so the INT8 ranges are not degenerate
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def build(tmp: Path, width: float, pixels: bool = False) -> tuple[Path, Path]:
    """(signed INT8 package, public key). ``pixels``: the model takes uint8 pixels (its first layers
    learn the normalisation; the input's quantization is the pixel itself, see ``pixels_in``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from cloud_trainer.train.onnx_tools import SCHEME, export, quantize
    from model_packager import build_package
    from model_packager.manifest import ImagePreprocessing
    from model_packager.preprocess import image_tensor
    from tests.support.models import make_keypair, vision_spec

    key, pub = make_keypair(tmp / "keys")
    spec = vision_spec("mobilenet-v2-224", width=224, height=224, labels=LABELS, heatmap=False)
    norm = (
        {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
        if pixels
        else {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    )
    spec["preprocessing"].update(interpolation="linear", **norm)
    spec["quantization"] = {"scheme": SCHEME, "calibration_samples": 8}
    pre = ImagePreprocessing(**spec["preprocessing"])
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    calib = np.concatenate([image_tensor(f, pre) for f in frames])
    fp32 = export(mobilenet_v2(width), calib[:1], tmp / "m" / "fp32.onnx", "image", ["logits"])
    # golden frames far apart (a dark one and a bright one): two random frames of one brightness gave this
    # random-weight network's INT8 logits within 0.0004 of each other, equal on OpenVINO, which the package
    # build refuses as a collapsed output (golden.collapse_problems)
    gold = [frames[0] // 4, 255 - frames[1] // 4]
    if not pixels:
        int8 = quantize(fp32, tmp / "m" / "model.int8.onnx", calib, "image")
        golden = {"image": np.concatenate([image_tensor(f, pre) for f in gold])}
    else:
        int8 = pixels_in(fp32, tmp / "m" / "model.u8.onnx", calib)
        spec["inputs"][0]["dtype"] = "uint8"
        spec["preprocessing"].update(scale=1.0)
        golden = {"image": np.concatenate([image_tensor(f, pre, "uint8") for f in gold])}
    # the training inputs' statistics a trained package carries (the manifest's and the local file), so
    # that the UNSURE check a frame pipeline runs is measured too (``infer_unsure``)
    from model_packager.inputstats import LOCAL_FILE, summarize_local

    (tmp / "m" / LOCAL_FILE).write_text(json.dumps(summarize_local(frames)))
    pkg = build_package(
        int8,
        spec,
        tmp / "pkg",
        signing_key=key,
        golden_inputs=golden,
        openvino=True,
        input_images=frames,
        extra_files={LOCAL_FILE: tmp / "m" / LOCAL_FILE},
    )
    return pkg, pub


def pixels_in(fp32: Path, out: Path, calib: np.ndarray) -> Path:
    """A static INT8 model that takes uint8 pixels, as integer-quantization toolkits emit them: QDQ
    with unsigned 8-bit activations (ONNX Runtime's U8S8, 7-bit weights as the trainer's), the input's
    quantization pinned to the pixel grid (scale 1/255, zero point 0 on inputs in [0, 1]), then its
    QuantizeLinear removed so the graph input is the uint8 tensor its DequantizeLinear reads."""
    import onnx
    from onnx import TensorProto, numpy_helper

    from cloud_trainer.train.onnx_tools import quantize

    q = quantize(fp32, out.with_name("qdq.onnx"), calib, "image", activations="u8")
    m = onnx.load(str(q))
    g = m.graph
    name = g.input[0].name
    inits = {i.name: i for i in g.initializer}
    readers = [n for n in g.node if name in n.input]
    if not readers or any(n.op_type != "QuantizeLinear" for n in readers):
        raise RuntimeError(f"the input is read by {[n.op_type for n in readers]}, not only QuantizeLinear")
    for node in readers:
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(np.array(1 / 255, np.float32), node.input[1]))
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(np.array(0, np.uint8), node.input[2]))
        for other in g.node:
            for i, x in enumerate(other.input):
                if x == node.output[0]:
                    other.input[i] = name
        g.node.remove(node)
    g.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


def q(xs, p) -> float:
    return float(np.percentile(np.asarray(xs), p)) * 1e6


def measure(pkg: Path, pub: Path, tmp: Path, engine: str, n: int, block: int = 5) -> dict:
    from devices.base import Frame
    from edge_agent.config import UnsureSettings
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot
    from model_packager.preprocess import image_tensor
    from model_packager.runtimes import ort_session

    cfg = ModelConfig(package=str(pkg), engine=engine)
    slot = ModelSlot("b", cfg, tmp / f"data-{engine}", [pub])
    asyncio.run(slot.start())
    a = slot._active
    m = a.manifest
    rng = np.random.default_rng(1)
    frame = Frame("cam", 0, 0.0, rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    dtype = m.inputs[0].dtype.value
    x = image_tensor(frame.image, m.preprocessing, dtype)
    name = m.inputs[0].name
    if a.engine.name == "onnxruntime":
        sess = ort_session(
            a.engine.source,
            threads=cfg.threads,
            single_stream=True,
            graph_optimization=cfg.graph_optimization.value,
        )
        bare = lambda: sess.run(None, {name: x})  # noqa: E731
    else:  # a model compiled apart with the engine's properties (a second request on the slot's own compiled
        # model, used from the same thread, ended in heap corruption within ~1000 calls here: see RESULTS.md)
        # opened as the engine opens it (ov_compile of the same file: an ONNX file is converted, not read)
        from model_packager.runtimes import ov_compile

        props = {"PERFORMANCE_HINT": cfg.openvino_hint.value.upper(), "INFERENCE_NUM_THREADS": cfg.threads}
        if a.engine.precision == "f32":
            props["INFERENCE_PRECISION_HINT"] = "f32"
        compiled = ov_compile(a.engine.source, props)
        req = compiled.create_infer_request()
        bare = lambda: req.infer({name: x}, share_inputs=True, share_outputs=True)  # noqa: E731
    parts: list[tuple[float, float, float]] = []

    def infer():
        r = slot.infer(frame)
        parts.append((r.preprocess_ms, r.inference_ms, r.postprocess_ms))

    from model_packager.inputstats import check

    tolerance = UnsureSettings().tolerance  # a frame pipeline's default
    assert m.input_stats is not None and a.local_stats is not None, "the package carries no input statistics"
    frame_copy = np.empty_like(frame.image)
    calls = {
        "bare": bare,
        "engine": lambda: a.engine.run({name: x}),
        "infer": infer,
        "infer_unsure": lambda: slot.infer(frame, tolerance),  # as a frame pipeline calls it
        "pre": lambda: image_tensor(frame.image, m.preprocessing, dtype),
        "pre_cold": lambda: image_tensor(frame.image, m.preprocessing, dtype),
        "check": lambda: check(m.input_stats, frame.image, tolerance, a.local_stats),
        "copy": lambda: np.copyto(frame_copy, frame.image),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    check_cpu: list[float] = []  # the check's CPU time (this thread's): what it takes from a busy core
    cpu: dict[str, list[float]] = {k: [] for k in ("bare", "infer", "infer_unsure")}  # the process's
    for f in calls.values():  # warm-up
        for _ in range(30):
            f()
    for _ in range(max(1, n // block)):  # short blocks: the load of the shared machine shifts within seconds
        for k, f in calls.items():
            ts = times[k]
            for _ in range(block):
                if k in ("copy", "pre_cold"):  # the caches as a model run leaves them (the run untimed)
                    a.engine.run({name: x})
                p = time.process_time()
                c = time.thread_time()
                t = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t)
                if k == "check":
                    check_cpu.append(time.thread_time() - c)
                elif k in cpu:
                    cpu[k].append(time.process_time() - p)
    inf = slot.infer(frame, tolerance)
    del (
        calls,
        bare,
    )  # our OpenVINO request goes before the slot drops its compiled model (else a crash at exit)
    if a.engine.name == "openvino":
        del req
    asyncio.run(slot.stop())
    r = {
        "engine": a.engine.name,
        "form": a.engine.form,
        "n": len(times["bare"]),
        "check": inf.interpretation.verdict,
    }
    for k, ts in times.items():
        r[f"{k}_p50_us"], r[f"{k}_p99_us"] = q(ts, 50), q(ts, 99)
    r["check_cpu_p50_us"] = q(check_cpu, 50)
    for k, ts in cpu.items():
        r[f"{k}_cpu_p50_us"] = q(ts, 50)
    for k in ("infer", "infer_unsure"):
        r[f"{k}_cpu_ratio_p50"] = r[f"{k}_cpu_p50_us"] / r["bare_cpu_p50_us"]
    for k, v in zip(
        ("slot_pre", "slot_engine", "slot_post"), np.median(np.asarray(parts), axis=0), strict=True
    ):
        r[f"{k}_p50_us"] = float(v) * 1000  # the slot's own split of its infer calls
    for k in ("engine", "infer", "infer_unsure"):
        r[f"{k}_ratio_p50"] = r[f"{k}_p50_us"] / r["bare_p50_us"]
        r[f"{k}_ratio_p99"] = r[f"{k}_p99_us"] / r["bare_p99_us"]
    return r


def in_inference_thread(fn, *args):
    """``fn(*args)`` in a thread lowered as the agent's inference threads are (``edge_agent.priority``:
    its pipelines call ``slot.infer`` in such threads, and the slot's UNSURE check threads are lowered as
    much). Measured from the main thread instead, the calls ran at a higher priority than the check they
    wait for, which on a loaded machine let the other processes take the check's core first."""
    from concurrent.futures import ThreadPoolExecutor

    from edge_agent.priority import lower_this_thread

    with ThreadPoolExecutor(1, initializer=lower_this_thread) as pool:
        return pool.submit(fn, *args).result()


def main(argv: list[str] | None = None) -> int:
    from bench._machine import machine, machine_line
    from model_packager.cpu import cpu_flags

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--no-openvino", action="store_true")
    ap.add_argument("--widths", default="1.0,0.5", help="MobileNetV2 widths to measure, comma-separated")
    ap.add_argument(
        "--inputs",
        default="float32,uint8",
        help="model inputs to measure: float32 (normalised by the agent) and/or uint8 (pixels as they are)",
    )
    ap.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.build_into:  # the child that builds: torch stays out of the measuring process, as out of the agent
        pkg, pub = build(a.build_into, float(a.widths), a.inputs == "uint8")
        print(json.dumps([str(pkg), str(pub)]))
        return 0
    from edge_agent.models.slot import SlotError

    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_s:
        for width, dtype in ((float(w), d) for w in a.widths.split(",") for d in a.inputs.split(",")):
            tmp = Path(tmp_s) / f"w{width}-{dtype}"
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.inference_224_bench",
                    "--build-into",
                    str(tmp),
                    "--widths",
                    str(width),
                    "--inputs",
                    dtype,
                ],
                capture_output=True,
                text=True,
                cwd=Path(__file__).resolve().parents[1],
                timeout=600,
            )
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-2000:])
            pkg, pub = (Path(p) for p in json.loads(r.stdout.strip().splitlines()[-1]))
            for engine in ("onnxruntime",) if a.no_openvino else ("onnxruntime", "openvino"):
                try:
                    got = in_inference_thread(measure, pkg, pub, tmp, engine, a.n)
                except SlotError as exc:  # (a load that fails its golden check here: said in the table)
                    got = {"engine": engine, "refused": str(exc)}
                rows.append({"width": width, "input": dtype, **got})
    load_after = os.getloadavg()[0]
    res = {
        "bench": "inference_224",
        "model": "MobileNetV2 at each width, 224 px, INT8 QDQ (float32 input: onnx_tools.quantize; "
        "uint8 input: pixels_in)",
        "frame": "640x480 BGR uint8",
        "cpu_flags": " ".join(cpu_flags()),
        "machine": machine(),
        "cpu_count": os.cpu_count(),
        "load_1min_before": load_before,
        "load_1min_after": load_after,
        "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "rows": rows,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "inference_224_bench.json").write_text(json.dumps(res, indent=2))
    md = [
        f"Measured {res['utc']} UTC, {res['cpu_count']} cores, CPU flags {res['cpu_flags']}; 1-min load average "
        f"{load_before:.1f} before, {load_after:.1f} after (other jobs on the same cores: absolute times are "
        "noisy, the ratios, from alternating blocks in one process, are what counts). "
        f"{max(r.get('n', 0) for r in rows)} calls of each kind.",
        "",
        "| MobileNetV2 width | input | engine | bare run p50 µs | engine call p50 (ratio) | `slot.infer` 640x480 p50 µs | "
        "**p50 ratio** | p99 ratio | with the UNSURE check: p50 µs | **p50 ratio** | p99 ratio | check alone p50 µs (CPU) | "
        "`image_tensor` alone p50 µs (right after a run) | in `infer`: pre / engine / post p50 µs | CPU p50 µs: bare / infer / with check "
        "| **CPU ratio**: infer / with check | frame copy after a run µs |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "refused" in r:
            md.append(f"| {r['width']:g} | {r['input']} | {r['engine']} | not measured: {r['refused']} |")
            continue
        md.append(
            f"| {r['width']:g} | {r['input']} | {r['engine']} | {r['bare_p50_us']:.0f} | {r['engine_p50_us']:.0f} ({r['engine_ratio_p50']:.3f})"
            f" | {r['infer_p50_us']:.0f} | **{r['infer_ratio_p50']:.3f}** | {r['infer_ratio_p99']:.3f} | "
            f"{r['infer_unsure_p50_us']:.0f} | **{r['infer_unsure_ratio_p50']:.3f}** | {r['infer_unsure_ratio_p99']:.3f} | "
            f"{r['check_p50_us']:.0f} ({r['check_cpu_p50_us']:.0f}) | "
            f"{r['pre_p50_us']:.0f} ({r['pre_cold_p50_us']:.0f}) | {r['slot_pre_p50_us']:.0f} / {r['slot_engine_p50_us']:.0f} / "
            f"{r['slot_post_p50_us']:.0f} | {r['bare_cpu_p50_us']:.0f} / {r['infer_cpu_p50_us']:.0f} / "
            f"{r['infer_unsure_cpu_p50_us']:.0f} | **{r['infer_cpu_ratio_p50']:.3f}** / "
            f"{r['infer_unsure_cpu_ratio_p50']:.3f} | {r['copy_p50_us']:.0f} |"
        )
    md += ["", machine_line()]
    (OUT / "inference_224_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
