"""Small, deterministic ONNX models and signed packages for tests (built with onnx.helper, no torch).

``make_vision_onnx``: image [batch,3,H,W] -> logits [batch,len(labels)] + heatmap [batch,1,H/2,W/2]
(conv, relu, 1x1 conv heat map, global pooling, dense). ``make_signal_onnx``: features
[batch,F] -> anomaly_score [batch,1], fault_logits [batch,5], remaining_life [batch,1].
``nan=True`` makes a model whose classifier output is NaN (for health-check rollback tests);
``bias`` shifts the classifier so that a version can be made to call everything NG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VISION_LABELS = ("ok", "scratch", "dent", "crack", "missing_hole", "stain")
FAULTS = ("healthy", "imbalance", "misalignment", "bearing_outer", "bearing_inner")
SIGNAL_WINDOW = 2048
SIGNAL_RATE_HZ = 10000.0
SIGNAL_FEATURES = 64 + 4


def _save(model, path: Path) -> Path:
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_vision_onnx(
    path,
    *,
    width: int = 64,
    height: int = 64,
    labels=VISION_LABELS,
    heatmap: bool = True,
    seed: int = 0,
    nan: bool = False,
    bias: float = 0.0,
    input_dtype: str = "float32",
) -> Path:
    """``input_dtype="uint8"``: the model takes the pixels as they are and scales them by 1/255
    itself (a Cast and a Mul before the first convolution), as many exported models do."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c = len(labels)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (1, 8, 1, 1)).astype(np.float32), "wh"),
        numpy_helper.from_array(rng.normal(0, 1.0, (8, c)).astype(np.float32), "wd"),
        numpy_helper.from_array((rng.normal(0, 0.1, (c,)) + np.eye(c)[0] * bias).astype(np.float32), "bd"),
        numpy_helper.from_array(np.array([np.nan if nan else 1.0], dtype=np.float32), "scale"),
    ]
    first = "image"
    nodes = []
    if input_dtype == "uint8":
        inits.append(numpy_helper.from_array(np.array([1 / 255], dtype=np.float32), "pixel_scale"))
        nodes += [
            helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["image_f", "pixel_scale"], ["image_s"]),
        ]
        first = "image_s"
    nodes += [
        helper.make_node("Conv", [first, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["fl"]),
        helper.make_node("Gemm", ["fl", "wd", "bd"], ["raw"]),
        helper.make_node("Mul", ["raw", "scale"], ["logits"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", c])]
    if heatmap:
        nodes.append(helper.make_node("Conv", ["r1", "wh"], ["heatmap"]))
        outputs.append(
            helper.make_tensor_value_info(
                "heatmap", TensorProto.FLOAT, ["batch", 1, (height + 1) // 2, (width + 1) // 2]
            )
        )
    graph = helper.make_graph(
        nodes,
        "vision",
        [
            helper.make_tensor_value_info(
                "image",
                TensorProto.UINT8 if input_dtype == "uint8" else TensorProto.FLOAT,
                ["batch", 3, height, width],
            )
        ],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    return _save(model, path)


def make_signal_onnx(
    path, *, n_features: int = SIGNAL_FEATURES, faults=FAULTS, seed: int = 0, nan: bool = False
) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    k = len(faults)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.2, (n_features, 16)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (16,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (16, k)).astype(np.float32), "wf"),
        numpy_helper.from_array(np.zeros(k, np.float32), "bf"),
        numpy_helper.from_array(np.abs(rng.normal(0, 0.5, (16, 1))).astype(np.float32), "wl"),
        numpy_helper.from_array(np.array([1.0], np.float32), "bl"),
        numpy_helper.from_array(np.array([0.01], np.float32), "ascale"),
        numpy_helper.from_array(np.array([np.nan if nan else 1.0], dtype=np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("Gemm", ["features", "w1", "b1"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("ReduceSumSquare", ["h"], ["ss"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["ss", "ascale"], ["anomaly_score"]),
        helper.make_node("Gemm", ["h", "wf", "bf"], ["fraw"]),
        helper.make_node("Mul", ["fraw", "scale"], ["fault_logits"]),
        helper.make_node("Gemm", ["h", "wl", "bl"], ["l0"]),
        helper.make_node("Relu", ["l0"], ["remaining_life"]),
    ]
    graph = helper.make_graph(
        nodes,
        "signal",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])],
        [
            helper.make_tensor_value_info("anomaly_score", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("fault_logits", TensorProto.FLOAT, ["batch", k]),
            helper.make_tensor_value_info("remaining_life", TensorProto.FLOAT, ["batch", 1]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    return _save(model, path)


def vision_spec(
    name: str = "part-inspection",
    version: str = "1.0.0",
    *,
    width: int = 64,
    height: int = 64,
    labels=VISION_LABELS,
    threshold: float = 0.5,
    heatmap: bool = True,
) -> dict:
    outputs = [
        {
            "name": "logits",
            "dtype": "float32",
            "shape": ["batch", len(labels)],
            "role": "class_logits",
            "labels": list(labels),
            "ok_label": "ok",
            "threshold": threshold,
        }
    ]
    if heatmap:
        outputs.append(
            {
                "name": "heatmap",
                "dtype": "float32",
                "shape": ["batch", 1, (height + 1) // 2, (width + 1) // 2],
                "role": "heatmap",
            }
        )
    return {
        "name": name,
        "version": version,
        "task": "vision_inspection",
        "inputs": [
            {"name": "image", "dtype": "float32", "shape": ["batch", 3, height, width], "layout": "NCHW"}
        ],
        "outputs": outputs,
        "preprocessing": {
            "kind": "image",
            "width": width,
            "height": height,
            "color": "rgb",
            "layout": "NCHW",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
        },
        "provenance": {"trainer": "tests.support.models", "seed": 0},
    }


def signal_spec(
    name: str = "machine-health",
    version: str = "1.0.0",
    *,
    faults=FAULTS,
    anomaly_threshold: float = 0.5,
    window_samples: int = SIGNAL_WINDOW,
    sample_rate_hz: float = SIGNAL_RATE_HZ,
) -> dict:
    return {
        "name": name,
        "version": version,
        "task": "equipment_maintenance",
        "inputs": [
            {"name": "features", "dtype": "float32", "shape": ["batch", SIGNAL_FEATURES], "layout": "NC"}
        ],
        "outputs": [
            {
                "name": "anomaly_score",
                "dtype": "float32",
                "shape": ["batch", 1],
                "role": "anomaly_score",
                "threshold": anomaly_threshold,
            },
            {
                "name": "fault_logits",
                "dtype": "float32",
                "shape": ["batch", len(faults)],
                "role": "class_logits",
                "labels": list(faults),
                "ok_label": "healthy",
            },
            {
                "name": "remaining_life",
                "dtype": "float32",
                "shape": ["batch", 1],
                "role": "remaining_life",
                "unit": "h",
            },
        ],
        "preprocessing": {
            "kind": "signal",
            "waveform": "vibration",
            "window_samples": window_samples,
            "sample_rate_hz": sample_rate_hz,
            "n_bands": 64,
            "time_features": True,
        },
        "provenance": {"trainer": "tests.support.models", "seed": 0},
    }


def make_keypair(directory) -> tuple[Path, Path]:
    from model_packager import generate_keypair

    d = Path(directory)
    priv, pub = d / "signing.key", d / "signing.pub"
    if not priv.exists():
        generate_keypair(priv, pub)
    return priv, pub


def golden_inputs(kind: str, n: int = 4, *, width: int = 64, height: int = 64, seed: int = 0) -> dict:
    """Inputs shaped like real ones (preprocessed images in [-2, 2], features of a vibration-like range)."""
    rng = np.random.default_rng(seed)
    if kind == "vision":
        return {"image": rng.uniform(-2, 2, (n, 3, height, width)).astype(np.float32)}
    return {"features": rng.normal(0, 1, (n, SIGNAL_FEATURES)).astype(np.float32)}


def make_package(
    tmp_dir,
    *,
    kind: str = "vision",
    version: str = "1.0.0",
    name: str | None = None,
    key: Path | None = None,
    openvino: bool = False,
    out_dir=None,
    **model_kw,
) -> Path:
    """A signed package with golden inputs; the key pair lives in ``tmp_dir/keys`` unless given."""
    tmp = Path(tmp_dir)
    key = Path(key) if key else make_keypair(tmp / "keys")[0]
    work = tmp / "build" / f"{kind}-{version}-{abs(hash(tuple(sorted(model_kw.items())))) % 10**8}"
    if kind == "vision":
        w, h = model_kw.get("width", 64), model_kw.get("height", 64)
        model = make_vision_onnx(work / "model.onnx", **model_kw)
        spec = vision_spec(
            name or "part-inspection", version, width=w, height=h, heatmap=model_kw.get("heatmap", True)
        )
        inputs = golden_inputs("vision", width=w, height=h)
    elif kind == "signal":
        model = make_signal_onnx(work / "model.onnx", **model_kw)
        spec = signal_spec(name or "machine-health", version)
        inputs = golden_inputs("signal")
    else:
        raise ValueError(f"kind {kind!r}: expected 'vision' or 'signal'")
    return build_package_for_tests(model, spec, out_dir or tmp / "packages", key, inputs, openvino)


def build_package_for_tests(model, spec, out_dir, key, inputs, openvino: bool) -> Path:
    from model_packager import build_package

    return build_package(model, spec, out_dir, signing_key=key, golden_inputs=inputs, openvino=openvino)
