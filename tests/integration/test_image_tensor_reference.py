"""The agent's per-frame preprocessing (``image_tensor``, worked out once per spec and frame shape) gives
exactly, bit for bit, the tensor of a plain reading of the manifest (region, crop, tiles, linear resize,
colour, ``(x * scale - mean) / std`` per channel as ``x * a + b``, layout), for every
geometry, colour, layout and input dtype, frame after frame; and on real ONNX Runtime and OpenVINO
sessions a frame's outputs, score and verdict through ``ModelSlot.infer`` are those of the engine run on
that reference tensor. A faster preprocessing must keep every score the packages were gated at."""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np
import pytest

from devices.base import Frame
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from model_packager import build_package
from model_packager.manifest import ImagePreprocessing
from model_packager.preprocess import image_tensor, interpret, tile_boxes
from tests.support.models import make_keypair, make_vision_onnx, vision_spec
from tests.support.plates import plate

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def reference(frame: np.ndarray, spec: ImagePreprocessing, dtype: str = "float32") -> np.ndarray:
    """The manifest read line by line, one tile and one channel at a time."""
    img = frame[:, :, 0] if frame.ndim == 3 and frame.shape[2] == 1 else frame
    x, y, w, h = 0, 0, img.shape[1], img.shape[0]
    if spec.roi is not None:
        x, y, w, h = spec.roi
    if spec.crop is not None:
        side = int(round(min(h, w) * spec.crop))
        x, y, w, h = x + (w - side) // 2, y + (h - side) // 2, side, side
    img = img[y : y + h, x : x + w]
    grey = spec.color.value == "gray"
    if img.ndim == 2 and not grey:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    rows = []
    for tx, ty, tw, th in tile_boxes(img.shape[0], img.shape[1], spec):
        t = img[ty : ty + th, tx : tx + tw]
        if (th, tw) != (spec.height, spec.width):
            t = cv2.resize(t, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)
        if grey:
            planes = [cv2.cvtColor(np.ascontiguousarray(t), cv2.COLOR_BGR2GRAY) if t.ndim == 3 else t]
        else:
            planes = [t[:, :, i] for i in ((2, 1, 0) if spec.color.value == "rgb" else (0, 1, 2))]
        chans = []
        for c, p in enumerate(planes):
            if dtype == "uint8":
                chans.append(p.copy())
                continue
            a = np.float32(spec.scale / np.float64(spec.std[c]))
            b = np.float32(-np.float64(spec.mean[c]) / np.float64(spec.std[c]))
            if spec.layout == "NCHW":  # in double, rounded once (OpenCV's addWeighted into the plane)
                chans.append((p.astype(np.float64) * np.float64(a) + np.float64(b)).astype(np.float32))
            else:  # in float32, rounded after the product and after the sum (numpy's)
                chans.append(p.astype(np.float32) * a + b)
        rows.append(np.stack(chans) if spec.layout == "NCHW" else np.stack(chans, axis=-1))
    out = np.stack(rows)
    return out.astype(np.float16) if dtype == "float16" else out


GEOMETRIES: dict[str, dict[str, Any]] = {
    "whole": {},
    "roi": {"roi": [10, 6, 90, 70]},
    "crop": {"crop": 0.8},
    "roi+crop": {"roi": [10, 6, 90, 70], "crop": 0.5},
    "tiles": {"tiles": [3, 2], "tile_overlap": 0.25},
    "model-size roi": {"roi": [5, 5, 40, 30]},  # a region of the model's size: no resize
}


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=list(GEOMETRIES))
@pytest.mark.parametrize("color", ["rgb", "bgr", "gray"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_the_tensor_of_every_frame_is_the_manifests_reading_bit_for_bit(geometry, color, layout):
    rng = np.random.default_rng(11)
    frames = {
        "colour": rng.integers(0, 256, (96, 128, 3), dtype=np.uint8),
        "grey": rng.integers(0, 256, (96, 128), dtype=np.uint8),
        "grey HxWx1": rng.integers(0, 256, (96, 128, 1), dtype=np.uint8),
        "other size": rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),
    }
    float_spec = ImagePreprocessing(
        kind="image", width=40, height=30, color=color, layout=layout, interpolation="linear",
        **IMAGENET, **GEOMETRIES[geometry],
    )  # fmt: skip
    pixel_spec = float_spec.model_copy(update={"scale": 1.0, "mean": [0.0] * 3, "std": [1.0] * 3})
    twin = ImagePreprocessing(**float_spec.model_dump())  # equal, another object
    for spec, dtypes in (
        (float_spec, ("float32", "float16")),
        (pixel_spec, ("uint8",)),
        (twin, ("float32",)),
    ):
        for _ in range(2):  # the second frame of a shape takes what the first worked out
            for kind, frame in frames.items():
                for dtype in dtypes:
                    got, want = image_tensor(frame, spec, dtype), reference(frame, spec, dtype)
                    assert got.dtype == want.dtype and got.shape == want.shape, (kind, dtype)
                    assert np.array_equal(got, want), (kind, dtype)
        frames["colour"][::7] = 255 - frames["colour"][::7]  # new content, same shape


def test_a_frame_of_a_wrong_shape_or_a_region_outside_it_is_refused_each_time():
    from model_packager.preprocess import PreprocessError

    spec = ImagePreprocessing(kind="image", width=40, height=30, roi=[10, 6, 90, 70])
    for _ in range(2):
        with pytest.raises(PreprocessError, match="reaches outside the 80x60 frame"):
            image_tensor(np.zeros((60, 80, 3), np.uint8), spec)
        with pytest.raises(PreprocessError, match=r"got shape \(96, 128, 2\)"):
            image_tensor(np.zeros((96, 128, 2), np.uint8), spec)
    assert image_tensor(np.zeros((96, 128, 3), np.uint8), spec).shape == (1, 3, 30, 40)


@pytest.fixture(scope="module")
def float_package(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    key, pub = make_keypair(tmp / "keys")
    model = make_vision_onnx(tmp / "m" / "model.onnx", width=48, height=40, seed=5, bias=2.0)
    spec = vision_spec("reference-pre", width=48, height=40, threshold=0.95)  # frames on both sides
    spec["preprocessing"].update(interpolation="linear", roi=[8, 4, 140, 110], **IMAGENET)
    pre = ImagePreprocessing(**spec["preprocessing"])
    frames = [np.random.default_rng(s).integers(0, 256, (120, 160, 3), dtype=np.uint8) for s in range(3)]
    golden = {"image": np.concatenate([reference(f, pre) for f in frames])}
    pkg = build_package(model, spec, tmp / "pkg", signing_key=key, golden_inputs=golden, openvino=True)
    return pkg, pub


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
async def test_a_frames_score_and_verdict_are_those_of_the_reference_tensor_on_each_engine(
    tmp_path, float_package, engine
):
    pkg, pub = float_package
    s = ModelSlot("vision", ModelConfig(package=str(pkg), engine=engine), tmp_path / "data", [pub])
    await s.start()
    try:
        assert s.engine_name == engine
        a = s._active
        assert a is not None and isinstance(a.manifest.preprocessing, ImagePreprocessing)
        verdicts = set()
        for seed in range(12):
            img = np.random.default_rng(100 + seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)
            img[:, : 8 * seed] //= 2  # some darker, some lighter: scores spread over the threshold
            inf = s.infer(Frame("cam", seed, time.time(), img))
            out = a.engine.run({"image": reference(img, a.manifest.preprocessing)})
            want = interpret(a.manifest, out, img.shape[:2])
            for name, v in out.items():
                assert np.array_equal(inf.outputs[name], v), name
            assert inf.interpretation.score == want.score
            assert inf.interpretation.verdict == want.verdict
            assert inf.interpretation.probabilities == want.probabilities
            verdicts.add(want.verdict)
        assert verdicts == {"OK", "NG"}
    finally:
        await s.stop()


@pytest.fixture(scope="module")
def classifier_packages(tmp_path_factory):
    """Classifiers whose one output is class logits (no heat map), on the whole frame, one taking float32 and
    one uint8 pixels, with their training frames' statistics: the packages ``ModelSlot.infer`` reads through
    ``LogitsPlan`` instead of ``interpret``'s general walk."""
    tmp = tmp_path_factory.mktemp("cls")
    key, pub = make_keypair(tmp / "keys")
    train = [plate(1, i, None, 96)[0] for i in range(30)]  # as tests/unit/test_inputstats.py's
    pkgs = {}
    for dtype in ("float32", "uint8"):
        model = make_vision_onnx(
            tmp / dtype / "model.onnx",
            width=48,
            height=40,
            seed=5,
            bias=2.0,
            heatmap=False,
            input_dtype=dtype,
        )
        spec = vision_spec(f"logits-{dtype}", width=48, height=40, threshold=0.95, heatmap=False)
        spec["inputs"][0]["dtype"] = dtype
        norm = {"scale": 1.0, "mean": [0, 0, 0], "std": [1, 1, 1]} if dtype == "uint8" else IMAGENET
        spec["preprocessing"].update(interpolation="linear", **norm)
        pre = ImagePreprocessing(**spec["preprocessing"])
        golden = {"image": np.concatenate([reference(f, pre, dtype) for f in train[:3]])}
        pkgs[dtype] = build_package(
            model,
            spec,
            tmp / dtype / "pkg",
            signing_key=key,
            golden_inputs=golden,
            openvino=True,
            input_images=train,
        )
    return pkgs, pub


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
async def test_a_classifiers_result_read_by_its_logits_plan_is_interprets_and_a_blurred_frame_is_unsure(
    tmp_path, classifier_packages, engine, dtype
):
    """The slot reads a plain classifier's logits without ``interpret``'s general walk (the per-frame cost the
    agent adds to a model run, issue 13): every field of the result is ``interpret``'s on the engine's output
    for the reference tensor, the counts are as before, and the UNSURE check still decides a blurred frame."""
    pkgs, pub = classifier_packages
    s = ModelSlot("vision", ModelConfig(package=str(pkgs[dtype]), engine=engine), tmp_path / "data", [pub])
    await s.start()
    try:
        assert s.engine_name == engine
        a = s._active
        assert a is not None and isinstance(a.manifest.preprocessing, ImagePreprocessing)
        assert a.logits is not None  # the plan reads this package's outputs
        verdicts = []
        for seed in range(12):
            img = np.random.default_rng(100 + seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)
            img[:, : 8 * seed] //= 2  # some darker, some lighter: scores spread over the threshold
            inf = s.infer(Frame("cam", seed, time.time(), img))
            out = a.engine.run({"image": reference(img, a.manifest.preprocessing, dtype)})
            want = interpret(a.manifest, out, img.shape[:2])
            assert inf.outputs.keys() == out.keys() and np.array_equal(inf.outputs["logits"], out["logits"])
            assert inf.interpretation == want  # verdict, score, label, ok_label, probabilities, margin, ...
            verdicts.append(want.verdict)
        if dtype == "float32":  # (the uint8 model's scores on these frames lie on one side of its threshold)
            assert set(verdicts) == {"OK", "NG"}
        blurred = s.infer(
            Frame("cam", 12, time.time(), cv2.GaussianBlur(plate(1, 60, None, 96)[0], (0, 0), 3)), 1.0
        )
        assert blurred.interpretation.verdict == "UNSURE" and blurred.interpretation.label is None
        assert (blurred.interpretation.reason or "").startswith("blurred"), blurred.interpretation.reason
        sharp = s.infer(Frame("cam", 13, time.time(), plate(1, 61, None, 96)[0]), 1.0).interpretation
        assert sharp.verdict in ("OK", "NG") and sharp.reason is None
        h = a.health
        ng = verdicts.count("NG") + (sharp.verdict == "NG")  # an UNSURE frame is not counted NG
        assert (h.n, h.errors, h.nonfinite, h.ng, s.counters["inferences"]) == (14, 0, 0, ng, 14)
    finally:
        await s.stop()
