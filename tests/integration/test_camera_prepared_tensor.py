"""A model's input tensor made where the camera decoded the frame (``CameraSource.prepare_with``,
``ModelSlot.prepare``), while the image is still in the cache, not on the inference thread after the previous
model run evicted it: the same bytes as the preprocessing the trainer and ``infer`` use
(``model_packager.preprocess.image_tensor``), for every geometry and input a package declares, through real
camera sources (an MJPEG stream over 127.0.0.1, kept compressed until taken; a video file OpenCV decodes on the
reader thread); and several models of different inputs on one camera each get their own."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from devices.base import Frame
from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from model_packager.manifest import ImagePreprocessing
from model_packager.preprocess import image_tensor
from tests.support.models import make_keypair, make_package
from tests.support.waits import until

# (name, preprocessing, input dtype): ROI, tiles, grey, colour (RGB and BGR, NCHW and NHWC), uint8 and float32
SPECS = [
    ("rgb-f32", ImagePreprocessing(width=64, height=48, interpolation="linear"), "float32"),
    ("rgb-u8", ImagePreprocessing(width=64, height=48, mean=[0.0] * 3, std=[1.0] * 3, scale=1.0), "uint8"),
    ("bgr-nhwc-u8", ImagePreprocessing(width=40, height=40, color="bgr", layout="NHWC", scale=1.0), "uint8"),
    (
        "grey-roi-f32",
        ImagePreprocessing(width=32, height=32, color="gray", mean=[0.5], std=[0.25], roi=[10, 8, 60, 50]),
        "float32",
    ),
    (
        "grey-u8",
        ImagePreprocessing(width=24, height=24, color="gray", mean=[0.0], std=[1.0], scale=1.0),
        "uint8",
    ),
    (
        "tiles-roi-f32",
        ImagePreprocessing(
            width=32,
            height=32,
            roi=[4, 4, 88, 80],
            tiles=[2, 2],
            tile_overlap=0.25,
            mean=[0.485, 0.456, 0.406],
            std=[0.229, 0.224, 0.225],
        ),
        "float32",
    ),
    ("tiles-u8", ImagePreprocessing(width=48, height=48, tiles=[3, 1], scale=1.0), "uint8"),
    ("crop-f16", ImagePreprocessing(width=32, height=32, crop=0.8), "float16"),
]


def _camera(kind: str, tmp_path) -> tuple[CameraSettings, object]:
    from simulators.camera import CameraServer, write_video

    if kind == "mjpeg":
        sim = CameraServer(0, width=96, height=96, fps=20, seed=5).start()
        return CameraSettings(url=sim.url), sim.stop
    video = write_video(tmp_path / "line.avi", 12, fps=20, seed=5, defect_rate=0.5, size=96)
    return CameraSettings(url=str(video), fps=40, loop=True), lambda: None


@pytest.mark.parametrize("kind", ["mjpeg", "video"])
async def test_the_tensor_made_where_the_frame_is_decoded_is_the_preprocessing_to_the_byte(tmp_path, kind):
    """Each consumer's ``fn`` runs on the frame's image right after its decoding (the reader thread for a
    frame OpenCV decodes, the taking thread for an MJPEG part) and its result is the frame's
    ``prepared[key]``: equal, byte for byte and in dtype and shape, to the preprocessing made later from the
    frame's image, for every geometry and input dtype; a consumer whose ``fn`` raises or gives None finds
    nothing of its own, and the others are not disturbed."""
    settings, stop_sim = _camera(kind, tmp_path)
    src = CameraSource("cam", settings)
    for name, spec, dtype in SPECS:
        src.prepare_with(name, lambda f, img, spec=spec, dtype=dtype: image_tensor(img, spec, dtype))
    src.prepare_with("raises", lambda f, img: 1 / 0)
    src.prepare_with("none", lambda f, img: None)
    frames: list[Frame] = []
    try:
        await src.start()
        async with asyncio.timeout(30):
            async for f in src.untaken_items():
                take = getattr(f, "take", None)
                if take is not None:  # an MJPEG part: decoded (and prepared) by the thread that takes it
                    assert not f.prepared
                    assert await asyncio.to_thread(take)
                frames.append(f)
                if len(frames) >= 3:
                    break
    finally:
        await src.stop()
        stop_sim()
    assert frames
    for f in frames:
        assert set(f.prepared) == {name for name, _, _ in SPECS}, sorted(f.prepared)
        for name, spec, dtype in SPECS:
            got, want = f.prepared[name], image_tensor(f.image, spec, dtype)
            assert got.dtype == want.dtype and got.shape == want.shape, name
            assert got.tobytes() == want.tobytes(), name


async def test_several_models_of_different_inputs_on_one_camera_each_infer_on_their_own_prepared_tensor(
    tmp_path,
):
    """A real agent, one MJPEG camera over 127.0.0.1 and two pipelines on two models of different inputs (64 and
    32 px): each slot's tensor is made once per frame where the frame was decoded, each pipeline infers on its
    own, and a model's result on a prepared frame is its result on the bare frame."""
    from simulators.camera import CameraServer

    key, pub = make_keypair(tmp_path / "keys")
    big = make_package(tmp_path, key=key, name="big", heatmap=False)
    small = make_package(tmp_path, key=key, name="small", width=32, height=32, heatmap=False)
    sim = CameraServer(0, width=96, height=96, fps=20, seed=7).start()
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "trusted_keys": [str(pub)],
                "http": {"enabled": False},
                "sources": {"cam": {"type": "camera", "url": sim.url}},
                "models": {
                    "big": {"package": str(big), "engine": "onnxruntime"},
                    "small": {"package": str(small), "engine": "onnxruntime"},
                },
                "pipelines": [
                    {"name": "p-big", "source": "cam", "model": "big"},
                    {"name": "p-small", "source": "cam", "model": "small"},
                ],
            }
        )
    )
    seen: dict[str, list] = {"big": [], "small": []}
    for name, slot in agent.slots.items():
        infer = slot.infer

        def spy(item, *a, _name=name, _slot=slot, _infer=infer, **kw):
            ready = item.prepared.get(_slot)
            out = _infer(item, *a, **kw)
            if ready is None:
                seen[_name].append(None)
                return out
            # the tensor against the preprocessing of the frame, and the outputs against the model's run on that
            act = ready.active
            want = image_tensor(item.image, act.manifest.preprocessing, act.input_dtype)
            bare = act.engine.run({act.input_name: want})
            same_out = set(bare) == set(out.outputs) and all(
                np.array_equal(out.outputs[k], bare[k]) for k in bare
            )
            seen[_name].append((ready.tensor.shape, ready.tensor.tobytes() == want.tobytes(), same_out))
            return out

        slot.infer = spy  # type: ignore[method-assign]
    await agent.start()
    try:
        await until(
            lambda: all(sum(c is not None for c in v) >= 3 for v in seen.values()), 30, "prepared frames"
        )
    finally:
        await agent.stop()
        sim.stop()
    for name, calls in seen.items():
        done = [c for c in calls if c is not None]
        assert {shape for shape, _, _ in done} == {(1, 3, 64, 64) if name == "big" else (1, 3, 32, 32)}, name
        assert all(same_tensor and same_out for _, same_tensor, same_out in done), (name, done)


async def test_a_tensor_prepared_for_the_model_before_a_swap_is_not_used_by_the_one_after(tmp_path):
    """A frame prepared while one model was active and inferred after a swap: the new model makes its own tensor
    (the former's may be of another size, colour or dtype) and gives its result on the frame."""
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot

    key, pub = make_keypair(tmp_path / "keys")
    slot = ModelSlot("v", ModelConfig(package=str(make_package(tmp_path, key=key))), tmp_path / "data", [pub])
    await slot.start()
    try:
        image = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
        bare = slot.infer(Frame("cam", 0, 0.0, image)).outputs
        frame = Frame("cam", 1, 0.0, image)
        stale = slot.prepare(image)
        assert stale is not None
        stale.active = object()  # the model it was made for, swapped out since
        stale.tensor = np.zeros((1, 3, 8, 8), np.float32)
        frame.prepared[slot] = stale
        got = slot.infer(frame).outputs
        assert all(np.array_equal(got[k], bare[k]) for k in bare)
        fresh = Frame("cam", 2, 0.0, image)
        fresh.prepared[slot] = slot.prepare(image)
        assert all(np.array_equal(slot.infer(fresh).outputs[k], bare[k]) for k in bare)
    finally:
        await slot.stop()
