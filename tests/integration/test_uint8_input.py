"""A model that takes its pixels as uint8 and normalises them itself (as many exported models do, and
the cheapest input for a gateway: no float pass over the frame) is fed uint8 pixels by the agent, on
real ONNX Runtime and OpenVINO sessions; its results equal a bare session's on the same pixels."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from devices.base import Frame
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from model_packager import build_package
from model_packager.runtimes import ort_session
from tests.support.models import make_keypair, make_vision_onnx, vision_spec


@pytest.fixture(scope="module")
def u8(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("u8")
    key, pub = make_keypair(tmp / "keys")
    model = make_vision_onnx(tmp / "m" / "model.onnx", width=48, height=40, input_dtype="uint8", seed=3)
    spec = vision_spec("pixels-in", width=48, height=40)
    spec["inputs"][0]["dtype"] = "uint8"
    spec["preprocessing"].update(scale=1.0, mean=[0, 0, 0], std=[1, 1, 1], interpolation="linear")
    golden = {"image": np.random.default_rng(0).integers(0, 256, (3, 3, 40, 48), dtype=np.uint8)}
    pkg = build_package(model, spec, tmp / "pkg", signing_key=key, golden_inputs=golden, openvino=True)
    return model, pkg, pub


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
async def test_a_uint8_input_model_gets_the_frames_pixels_and_answers_as_a_bare_session(tmp_path, u8, engine):
    model, pkg, pub = u8
    s = ModelSlot("vision", ModelConfig(package=str(pkg), engine=engine), tmp_path / "data", [pub])
    await s.start()
    try:
        assert s.engine_name == engine
        bare = ort_session(model, threads=1)
        for seed in range(3):
            img = np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)
            inf = s.infer(Frame("cam", seed, time.time(), img))
            # what the model is made for: the frame resized, in RGB order, NCHW, values 0..255 untouched
            pixels = cv2.resize(img, (48, 40), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
            want = bare.run(None, {"image": np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])})[0]
            np.testing.assert_allclose(inf.outputs["logits"], want, rtol=1e-3, atol=1e-3)
            assert inf.interpretation.verdict in ("OK", "NG") and inf.heatmap is not None
    finally:
        await s.stop()
