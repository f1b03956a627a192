"""Package build and verify vs the floor: plain ``hashlib.sha256`` over the same bytes, same run.

For a 10 MB and a 100 MB model (an ONNX graph with one large random initializer, so the bytes
do not compress and the graph is real), it times ``build_package`` (spec check, golden run on
ONNX Runtime, hashing, signing, tar write; no OpenVINO) and ``verify_package`` (signature, every
hash and size, the graph check), each beside a sha256 of the model file read from disk. Runs
alternate; medians are reported, with the ratio to the hash floor.

    .venv/bin/python -m bench.packager_bench [--sizes-mb 10 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from model_packager import build_package, load_trusted_keys, open_package, verify_package
from tests.support.models import make_keypair

OUT = Path(__file__).resolve().parent / "out"


def big_model(path: Path, size_mb: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = size_mb * 1024 * 1024 // 4 // 64
    w = np.random.default_rng(0).standard_normal((64, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def spec(n: int) -> dict:
    return {
        "name": "bench-model",
        "version": "1.0.0",
        "task": "equipment_maintenance",
        "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 64]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", n]}],
        "preprocessing": {"kind": "signal", "window_samples": 64, "sample_rate_hz": 1000.0, "n_bands": 60},
    }


def sha_file(path: Path) -> float:
    t = time.perf_counter()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    h.hexdigest()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        key, pub = make_keypair(tmp / "keys")
        trusted = load_trusted_keys([pub])
        golden = {"x": np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)}
        for size in args.sizes_mb:
            model = big_model(tmp / f"m{size}.onnx", size)
            n = int(model.stat().st_size // 4 // 64)
            out_spec = spec(n)
            import onnx

            out_spec["outputs"][0]["shape"] = [
                "batch",
                onnx.load(str(model)).graph.output[0].type.tensor_type.shape.dim[1].dim_value,
            ]
            t_hash, t_build, t_verify, t_open, t_hash_pkg, t_full = [], [], [], [], [], []
            for i in range(args.runs):
                t_hash.append(sha_file(model))
                t = time.perf_counter()
                pkg = build_package(model, out_spec, tmp / "out", signing_key=key, golden_inputs=golden)
                t_build.append(time.perf_counter() - t)
                t_hash_pkg.append(sha_file(pkg))
                t = time.perf_counter()
                verify_package(pkg, trusted, check_model_spec=False)
                t_verify.append(time.perf_counter() - t)
                t = time.perf_counter()
                verify_package(pkg, trusted)
                t_full.append(time.perf_counter() - t)
                t = time.perf_counter()
                open_package(pkg, tmp / f"open{size}-{i}", trusted)
                t_open.append(time.perf_counter() - t)
            med = {
                k: statistics.median(v)
                for k, v in (
                    ("hash", t_hash),
                    ("hash_pkg", t_hash_pkg),
                    ("build", t_build),
                    ("verify", t_verify),
                    ("full", t_full),
                    ("open", t_open),
                )
            }
            rows.append(
                {
                    "size_mb": round(pkg.stat().st_size / 2**20, 1),
                    "sha256_s": med["hash"],
                    "sha256_package_s": med["hash_pkg"],
                    "build_s": med["build"],
                    "verify_s": med["verify"],
                    "verify_graph_s": med["full"],
                    "open_s": med["open"],
                    "build_ratio": med["build"] / med["hash"],
                    "verify_ratio": med["verify"] / med["hash_pkg"],
                    "verify_graph_ratio": med["full"] / med["hash_pkg"],
                    "open_ratio": med["open"] / med["hash_pkg"],
                    "runs": args.runs,
                }
            )
    from bench._machine import machine, machine_line

    OUT.mkdir(exist_ok=True)
    (OUT / "packager_bench.json").write_text(
        json.dumps({"bench": "packager", "machine": machine(), "rows": rows}, indent=2)
    )
    md = [
        "### Model packages: build / verify / open vs plain sha256 of the same bytes (medians)",
        "",
        "| package MB | sha256 s | build s (ratio) | verify s (ratio) | verify + graph check s (ratio) "
        "| open+extract s (ratio) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['size_mb']} | {r['sha256_package_s']:.3f} | {r['build_s']:.3f} ({r['build_ratio']:.2f}x) | "
            f"{r['verify_s']:.3f} ({r['verify_ratio']:.2f}x) | "
            f"{r['verify_graph_s']:.3f} ({r['verify_graph_ratio']:.2f}x) | {r['open_s']:.3f} ({r['open_ratio']:.2f}x) |"
        )
    md += [
        "",
        "Build includes the spec check and a golden run on ONNX Runtime; verify = signature + every "
        "hash and size; the graph check parses the ONNX model against the manifest; open also extracts; ratios are to sha256 of the same file read in the same run.",
        "",
        machine_line(),
    ]
    (OUT / "packager_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
