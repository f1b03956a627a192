"""Decisions and speed of the trainer's packages at f32 and at OpenVINO's default precision on this CPU (bf16 on
AVX-512 BF16 and AMX CPUs), against ONNX Runtime at f32 (the precision the packages' thresholds were set at).

For each package, every form it carries runs on ONNX Runtime (the reference), on OpenVINO with
``INFERENCE_PRECISION_HINT: f32`` (what the agent does since ``openvino_f32`` defaults to true) and on OpenVINO
with nothing set (the CPU's default: what the agent did before). Items: part images for the vision package, a
good/defect cast set for the anomaly package, vibration windows for the maintenance package; each is preprocessed
as the agent does and interpreted by the manifest (``model_packager.preprocess.interpret``). Reported per
package, form and engine: verdicts (OK/NG) and top labels that differ from the reference, the largest difference
in score, remaining life and heat map (in its display scale), and the median ms of batch-1 runs (blocks of the
variants alternated).

The packages and items are those of a demo run (``make demo`` leaves them in its folder: registry/, keys/,
data/parts, data/vibration) plus a cast test set (``edge-sim dataset mvtec --out DIR --train 0 --test-good 200
--test-ng 100 --seed 8 --surface cast --jpeg-quality 90``)::

    .venv/bin/python -m bench.openvino_bf16_bench --demo /tmp/ds --cast DIR [--n 300]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _runners(opened, repeats: int) -> dict[str, Callable]:
    # OpenVINO as the project loads it (model_packager.runtimes.load): an ``import openvino`` of its own loaded
    # OpenVINO's conversion API with its usage telemetry on, which then posted from this process
    from model_packager.runtimes import load, ort_session, ov_read

    core = load("openvino").Core()
    forms = {"int8": opened.model_path, "fp32": opened.fp32_model_path} if opened.fp32_model_path else {}
    forms = forms or {"fp32": opened.model_path}
    out: dict[str, Callable] = {}
    for form, path in forms.items():
        sess = ort_session(path, threads=1)
        names = [o.name for o in sess.get_outputs()]
        out[f"{form}/onnxruntime"] = lambda feed, s=sess, n=names: dict(zip(n, s.run(n, feed), strict=True))
        # as the agent reads them (model_packager.runtimes.ov_read): the INT8 form from the package's IR when it has
        # one, else its ONNX converted as the IR is made, the FP32 form converted too. Not core.read_model of the
        # ONNX file: on an AMX Xeon (OpenVINO 2026.4) the trainer's INT8 vision CNN read so does not compile at the
        # CPU's default bf16 ("No suitable implementations"), which the agent never meets
        model = ov_read(opened.openvino_xml if form == "int8" and opened.openvino_xml else path, core)
        for prec in ("f32", "cpu-default"):
            props = {"INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY"}
            if prec == "f32":
                props["INFERENCE_PRECISION_HINT"] = "f32"
            compiled = core.compile_model(model, "CPU", props)
            req = compiled.create_infer_request()
            ports = [(p, p.get_any_name()) for p in compiled.outputs]

            def run(feed, req=req, ports=ports):
                req.infer(feed)
                return {n: np.array(req.get_tensor(p).data, copy=True) for p, n in ports}

            out[f"{form}/openvino-{prec}"] = run
    return out


def _p50s(runners: dict[str, Callable], feed: dict, repeats: int) -> dict[str, float]:
    ts: dict[str, list[float]] = {k: [] for k in runners}
    for run in runners.values():
        for _ in range(3):
            run(feed)
    for block in range(repeats):
        order = list(runners)
        order = order[block % len(order) :] + order[: block % len(order)]
        for k in order:
            t = time.perf_counter()
            for _ in range(5):
                runners[k](feed)
            ts[k].append((time.perf_counter() - t) / 5 * 1000)
    return {k: statistics.median(v) for k, v in ts.items()}


def compare(name: str, opened, feeds: list[dict], repeats: int) -> list[dict]:
    from model_packager.preprocess import interpret

    m = opened.manifest
    runners = _runners(opened, repeats)
    res = {k: [interpret(m, run(f)) for f in feeds] for k, run in runners.items()}
    p50 = _p50s(runners, feeds[0], repeats)
    rows = []
    for k in runners:
        form = k.split("/")[0]
        ref = res[f"{form}/onnxruntime"]
        a, b = ref, res[k]
        rows.append(
            {
                "package": name,
                "form": form,
                "engine": k.split("/")[1],
                "items": len(feeds),
                "NG": sum(x.verdict == "NG" for x in b),
                "verdicts_differ": sum(x.verdict != y.verdict for x, y in zip(a, b, strict=True)),
                "labels_differ": sum(x.label != y.label for x, y in zip(a, b, strict=True)),
                "max_score_diff": max(abs(x.score - y.score) for x, y in zip(a, b, strict=True)),
                "max_life_diff_s": max(
                    abs((x.remaining_life or 0.0) - (y.remaining_life or 0.0))
                    for x, y in zip(a, b, strict=True)
                ),
                "max_heatmap_diff": max(
                    (
                        float(np.abs(x.heatmap - y.heatmap).max())
                        for x, y in zip(a, b, strict=True)
                        if x.heatmap is not None and y.heatmap is not None
                    ),
                    default=0.0,
                ),
                "p50_ms": p50[k],
            }
        )
    return rows


def main() -> None:
    import cv2

    from bench._machine import machine, machine_line
    from model_packager import load_trusted_keys, open_package
    from model_packager.cpu import cpu_flags
    from model_packager.preprocess import image_tensor, signal_features

    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", type=Path, required=True, help="a demo run's folder (registry/, keys/, data/)")
    ap.add_argument(
        "--cast", type=Path, required=True, help="an edge-sim dataset mvtec folder (cast surface)"
    )
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("bench/out/openvino_bf16.json"))
    a = ap.parse_args()
    keys = load_trusted_keys([a.demo / "keys" / "fleet.pub"])
    tmp = Path(tempfile.mkdtemp())

    def pkg(name: str):
        return open_package(
            next(iter(sorted((a.demo / "registry" / name).glob("*/*.edgepkg")))), tmp / name, keys
        )

    rows = []
    cast = pkg("cast-anomaly")
    files = sorted((a.cast / "test").glob("*/*.*"))[: a.n]
    feeds = [
        {cast.manifest.inputs[0].name: image_tensor(cv2.imread(str(f)), cast.manifest.preprocessing)}
        for f in files
    ]
    rows += compare("cast-anomaly", cast, feeds, a.repeats)
    parts = pkg("part-inspection")
    files = sorted((a.demo / "data" / "parts" / "images").glob("*.png"))[: a.n]
    feeds = [
        {parts.manifest.inputs[0].name: image_tensor(cv2.imread(str(f)), parts.manifest.preprocessing)}
        for f in files
    ]
    rows += compare("part-inspection", parts, feeds, a.repeats)
    health = pkg("machine-health")
    d = np.load(a.demo / "data" / "vibration" / "windows.npz")
    pre = health.manifest.preprocessing
    feeds = [
        {health.manifest.inputs[0].name: signal_features(w, {"speed_rpm": float(s)}, pre)}
        for w, s in zip(d["waveform"][: a.n], d["speed"][: a.n], strict=True)
    ]
    rows += compare("machine-health", health, feeds, a.repeats)

    from model_packager.runtimes import load

    ov = load("openvino")  # without its usage telemetry (see _runners)
    flags = " ".join(cpu_flags())
    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    print(machine_line())
    print(
        f"{platform.machine()}, CPU flags: {flags}; OpenVINO {ov.__version__.split('-')[0]} default precision {default}"
    )
    print(
        "| package | form | engine | items | NG | verdicts differ | labels differ | max score diff | "
        "max life diff (s) | max heat-map diff | p50 ms |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['package']} | {r['form']} | {r['engine']} | {r['items']} | {r['NG']} | {r['verdicts_differ']} | "
            f"{r['labels_differ']} | {r['max_score_diff']:.2g} | {r['max_life_diff_s']:.2g} | "
            f"{r['max_heatmap_diff']:.2g} | {r['p50_ms']:.3f} |"
        )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {"cpu_flags": flags, "machine": machine(), "openvino_default": default, "rows": rows}, indent=1
        )
    )


if __name__ == "__main__":
    main()
