"""A package with a region of interest and tiles, on a real ONNX Runtime session in a ModelSlot: the
agent runs every tile of a large frame, and its inputs and outputs are those the trainer makes from
the same frame (``vision.as_tiles`` + ``tile_pre``), tile for tile."""

from __future__ import annotations

import time

import numpy as np

from cloud_trainer.train import vision
from cloud_trainer.train.data import PartsData
from devices.base import Frame
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from model_packager.manifest import ImagePreprocessing
from tests.support.models import build_package_for_tests, make_keypair, make_vision_onnx, vision_spec


async def test_agent_and_trainer_see_the_same_tiles(tmp_path):
    import onnxruntime as ort

    key, pub = make_keypair(tmp_path / "keys")
    model = make_vision_onnx(tmp_path / "m.onnx", width=32, height=32, seed=3, labels=("ok", "dent"))
    spec = vision_spec(width=32, height=32, labels=("ok", "dent"), threshold=0.5)
    spec["preprocessing"].update(
        roi=[10, 20, 300, 200], tiles=[3, 2], tile_overlap=0.125, interpolation="linear"
    )
    golden = {"image": np.random.default_rng(0).uniform(-2, 2, (4, 3, 32, 32)).astype(np.float32)}
    pkg = build_package_for_tests(model, spec, tmp_path / "pkgs", key, golden, openvino=False)
    s = ModelSlot("vision", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [pub])
    await s.start()
    try:
        image = np.random.default_rng(1).integers(0, 255, (240, 400, 3), dtype=np.uint8)
        inf = s.infer(Frame("cam", 1, time.time(), image))
    finally:
        await s.stop()
    assert inf.outputs["logits"].shape == (6, 2)
    pre = ImagePreprocessing.model_validate(spec["preprocessing"])
    tiles = vision.as_tiles(PartsData([image], np.asarray([0]), ["f"], ["ok", "dent"], "d", [None]), pre)
    x = vision.tensors(tiles.images, vision.tile_pre(pre))
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(["logits"], {"image": x})[
        0
    ]
    np.testing.assert_allclose(inf.outputs["logits"], ref, rtol=1e-5, atol=1e-5)
    ng = 1 - np.exp(ref[:, 0]) / np.exp(ref).sum(1)
    assert inf.interpretation.tile == int(ng.argmax()) and abs(inf.interpretation.score - ng.max()) < 1e-5
    assert inf.interpretation.verdict == ("NG" if ng.max() >= 0.5 else "OK")
    assert inf.heatmap.shape == (154, 256)  # in frame coordinates (at most 256 px), for the overlay
