"""A frame of another shape than the training frames is UNSURE, named, never OK or NG.

Every UNSURE statistic is taken on the frame resized to 128x128, so a frame of other proportions (a 16:9
camera for a model trained on 4:3 frames, a camera mounted turned, a 1-px-high partial frame) was measured
as if it were the training view, and a model with a ``roi`` (a pixel box) cut another part of a frame of
the same view at a higher resolution: a good part was NG. The package's local statistics now carry the
training frames' aspect and sizes (``inputstats.frame_shapes``). Real anomaly builds (small), real
``ModelSlot`` on ONNX Runtime and OpenVINO."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_trainer.train import anomaly as A
from model_packager import load_trusted_keys
from tests.support.models import make_keypair
from tests.support.once import built_once
from tests.support.plates import DEFECTS, plate

W, H = 160, 120  # 4:3 training frames: the plate on a dark fixture


def frame(seed: int, i: int, defect: str | None = None, w: int = W, h: int = H):
    img, m = plate(seed, i, defect, h)
    out = np.full((h, w, 3), 40, np.uint8)
    x = (w - h) // 2
    out[:, x : x + h] = img
    mask = None
    if m is not None:
        mask = np.zeros((h, w), np.uint8)
        mask[:, x : x + h] = m
    return out, mask


def write(root, w: int = W, h: int = H):
    i = 0
    for folder, n in (("train/good", 24), ("test/good", 4)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            cv2.imwrite(str(root / folder / f"{k:03d}.png"), frame(6, i, None, w, h)[0])
            i += 1
    for k in range(3):
        img, mask = frame(6, i, DEFECTS[k], w, h)
        i += 1
        (root / "test" / DEFECTS[k]).mkdir(parents=True, exist_ok=True)
        (root / "ground_truth" / DEFECTS[k]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "test" / DEFECTS[k] / f"{k:03d}.png"), img)
        cv2.imwrite(str(root / "ground_truth" / DEFECTS[k] / f"{k:03d}_mask.png"), mask)
    return root


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The three packages (OpenVINO forms too, but the wide one's), built once per run (``built_once``: every xdist worker running
    a test of this module gets the same); each test's slot keeps its data in its own ``tmp_path``."""
    return built_once(tmp_path_factory, "unsure-frame-shape", _builds)


def _build(tmp: Path, key: Path, name: str, data, openvino: bool = True, **kw) -> str:
    """A small real anomaly build of ``data`` in ``tmp``: its package's path."""
    s = A.AnomalySettings(
        dataset=data,
        registry=tmp / f"registry-{name}",
        signing_key=key,
        workdir=tmp / f"work-{name}",
        size=64,
        bank_size=256,
        folds=3,
        openvino=openvino,
        threads=2,
        force=True,  # a small build: its quality gate is not what these tests judge
        **kw,
    )
    return A.build(s, log=lambda m: None)["package"]


def _builds(tmp: Path) -> dict:
    key, pub = make_keypair(tmp / "keys")

    def build(name: str, data, openvino: bool = True, **kw) -> str:
        return _build(tmp, key, name, data, openvino, **kw)

    data = write(tmp / "plates")
    return {
        "pub": pub,
        "whole": build("whole", data),
        "roi": build("roi", data, roi=[20, 0, 120, 120]),
        # 2048x254 frames (a long part) are shrunk for the build to whole multiples of the model's size,
        # 1024x64 (16:1): the shape checked is the camera's, 8.1:1 (on ONNX Runtime only: no OpenVINO form)
        "wide": build("wide", write(tmp / "wide", 2048, 254), openvino=False),
    }


async def _verdicts(
    builds, data: Path, name: str, engine: str, frames: dict, as_frames: bool = False
) -> dict:
    """Each frame's (verdict, reason) from a real slot; ``frames``: images, or ``Frame``s when ``as_frames``."""
    from devices.base import Frame
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot

    s = ModelSlot(
        "vision",
        ModelConfig(package=builds[name], engine=engine),
        data / f"d-{name}",
        # the key loaded: installed in this process, no install child (the install is not judged here)
        load_trusted_keys([builds["pub"]]),
    )
    await s.start()
    try:
        out = {}
        for k, img in frames.items():
            item = img if as_frames else Frame("cam", 1, time.time(), img)
            it = s.infer(item, unsure_tolerance=1.0).interpretation
            out[k] = (it.verdict, it.reason or "")
        return out
    finally:
        await s.stop()


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
async def test_a_frame_of_other_proportions_is_unsure_and_the_same_view_at_another_resolution_is_not(
    builds, engine, tmp_path
):
    good = frame(91, 1)[0]
    sure = {
        "good": good,
        "the same view at twice the resolution": cv2.resize(good, (2 * W, 2 * H)),
        "a 5:4 camera's frame of the view": cv2.resize(good, (1280, 1024), interpolation=cv2.INTER_AREA),
    }
    off = {
        "a 1-px-high partial frame": np.ascontiguousarray(good[:1]),
        "a camera mounted turned (portrait)": np.ascontiguousarray(np.rot90(good)),
        "a 16:9 frame": cv2.resize(good, (1920, 1080)),
    }
    got = await _verdicts(builds, tmp_path, "whole", engine, {**sure, **off})
    assert all(got[k][0] != "UNSURE" for k in sure), got
    for k in off:
        assert got[k][0] == "UNSURE" and got[k][1].startswith("frame shape unlike training"), (k, got[k])
    assert "160x1, aspect 160 outside 1.21-1.47" in got["a 1-px-high partial frame"][1]


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
async def test_a_roi_models_frame_of_another_size_is_unsure_not_cut_elsewhere(builds, engine, tmp_path):
    """The roi is a pixel box of the training frames: on a frame of the same view at twice the resolution it
    cut the top left of the part, and a good part was NG."""
    good = frame(91, 1)[0]
    got = await _verdicts(
        builds, tmp_path, "roi", engine, {"good": good, "2x": cv2.resize(good, (2 * W, 2 * H))}
    )
    assert got["good"][0] != "UNSURE", got
    assert got["2x"] == (
        "UNSURE",
        "frame size unlike training: 320x240, the model's roi is a pixel box of 160x120 frames "
        "(the camera's resolution changed?)",
    )


async def test_the_shape_checked_is_the_cameras_not_the_builds_shrunk_frames(builds, tmp_path):
    got = await _verdicts(builds, tmp_path, "wide", "onnxruntime", {"good": frame(91, 1, None, 2048, 254)[0]})
    assert not got["good"][1].startswith("frame shape"), got


def _whole_slot(builds, data: Path):
    """A real slot serving the whole-frame build on ONNX Runtime, its data in ``data``."""
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot

    return ModelSlot(
        "vision",
        ModelConfig(package=builds["whole"], engine="onnxruntime"),
        data,
        load_trusted_keys([builds["pub"]]),
    )


@pytest.mark.parametrize("tolerance", [1.0, None])
async def test_a_frame_of_other_than_8_bit_pixels_is_refused_named_never_judged(builds, tolerance, tmp_path):
    """A plugin source's 16-bit frame (a Mono12 camera's values in uint16) or float one was scaled as 8-bit
    pixels: without the UNSURE check (``unsure.enabled: false``, a package without statistics) a good part
    was NG, with it the reason was 'overexposed'. It is ``bad_input``, counted, naming the pixels' type."""
    from devices.base import Frame
    from edge_agent.models.slot import InferenceError

    good = frame(91, 1)[0]
    s = _whole_slot(builds, tmp_path / "d-bits")
    await s.start()
    try:
        assert (
            s.infer(Frame("cam", 1, time.time(), good), unsure_tolerance=tolerance).interpretation.verdict
            == "OK"
        )
        for img in (good.astype(np.uint16) * 16, good.astype(np.float32) / 255):
            held = f"{img.dtype} up to {img.max()}" if img.dtype == np.uint16 else str(img.dtype)
            with pytest.raises(
                InferenceError, match=f"the frame's pixels are {held}, the model takes 8-bit"
            ) as e:
                s.infer(Frame("cam", 2, time.time(), img), unsure_tolerance=tolerance)
            assert e.value.reason == "bad_input"
    finally:
        await s.stop()


async def test_a_frame_of_8_bit_values_in_a_wider_integer_type_is_judged_as_its_uint8_form(builds, tmp_path):
    """A plugin source's frame of integers 0-255 in int32 or int64 (``np.array`` of a list of pixels) is read as
    8-bit pixels, as the slot says; at any size other than the model's it failed on every frame with OpenCV's
    resize assertion (``func != 0 && cn <= 4``) as ``preprocess_error``, never judged."""
    from devices.base import Frame

    good = frame(91, 1)[0]
    s = _whole_slot(builds, tmp_path / "d-wide-ints")
    await s.start()
    try:
        want = s.infer(Frame("cam", 1, time.time(), good), unsure_tolerance=1.0).interpretation
        for k, dtype in enumerate((np.int32, np.int64), start=2):
            got = s.infer(
                Frame("cam", k, time.time(), good.astype(dtype)), unsure_tolerance=1.0
            ).interpretation
            assert (got.verdict, got.score) == (want.verdict, want.score)
    finally:
        await s.stop()


@pytest.mark.parametrize("kind", ["folder", "video"])
async def test_a_frame_the_camera_resized_to_other_proportions_is_unsure_by_the_cameras_shape(
    builds, kind, tmp_path
):
    """A camera source's ``width`` and ``height`` resize every frame: a 16:9 camera's frame (the camera
    replaced, or set to another resolution) was stretched to the 4:3 size given, and the shape check saw
    only that size, so the frame was judged (here a 4:3 view shown at 16:9 and squeezed back: OK). The
    frame's shape is now the camera's (``Frame.camera_size``), through a real ``CameraSource`` reading a
    folder (decoded when taken) and a video file (decoded by its reader); the same view at another size of
    the training proportions stays sure. The size given (320x240) is not the training frames' (160x120): a
    frame resized to their very size is checked at it (``LocalStats.shape``: the model may have been trained
    on frames stretched so)."""
    from devices.base import Frame
    from devices.camera.capture import CameraSource
    from devices.camera.settings import CameraSettings
    from tests.integration.test_camera_source import take

    good = frame(91, 1)[0]
    views = {
        "a-4x3": cv2.resize(good, (2 * W, 2 * H)),
        "b-16x9": cv2.resize(good, (320, 180)),
    }  # read by name
    if kind == "folder":
        url = tmp_path / "cam"
        url.mkdir()
        for name, img in views.items():
            cv2.imwrite(str(url / f"{name}.png"), img)
    else:
        url = tmp_path / "cam.avi"
        out = cv2.VideoWriter(str(url), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 180))
        out.write(views["b-16x9"])
        out.release()
    src = CameraSource("cam", CameraSettings(url=str(url), fps=100, width=2 * W, height=2 * H))
    await src.start()
    try:
        frames = await take(src, len(views) if kind == "folder" else 1, 10.0)
    finally:
        await src.stop()
    got = await _verdicts(
        builds, tmp_path, "whole", "onnxruntime", {f"{f.seq}": f for f in frames}, as_frames=True
    )
    assert all(f.image.shape == (2 * H, 2 * W, 3) for f in frames)
    wide = got[str(frames[-1].seq)]
    assert wide[0] == "UNSURE", got
    assert wide[1].startswith(
        "frame shape unlike training (camera resolution, rotation or a partial frame): 320x180 (resized to "
        "320x240 by the camera's width and height), aspect 1.78"
    ), wide
    if kind == "folder":
        assert got[str(frames[0].seq)][0] != "UNSURE", got
    # the same stretched image handed over without the camera's size: the check cannot see it (judged)
    squeezed = cv2.resize(views["b-16x9"], (W, H), interpolation=cv2.INTER_AREA)
    plain = await _verdicts(builds, tmp_path / "plain", "whole", "onnxruntime", {"x": squeezed})
    assert plain["x"][0] != "UNSURE" and Frame("cam", 1, 0.0, squeezed).camera_size is None, plain


async def _camera_frames(folder: Path, **size) -> list:
    """The frames a real folder ``CameraSource`` gives of ``folder``'s images, in name order."""
    from devices.camera.capture import CameraSource
    from devices.camera.settings import CameraSettings
    from tests.integration.test_camera_source import take

    src = CameraSource("cam", CameraSettings(url=str(folder), fps=100, **size))
    await src.start()
    try:
        return await take(src, len(list(folder.iterdir())), 10.0)
    finally:
        await src.stop()


async def test_a_frame_sample_names_its_cameras_own_size(tmp_path):
    """The sample an agent uploads is the frame the pipeline got: resized by the camera's ``width`` and
    ``height``, its pixels no longer tell the camera's proportions. Each frame sample (PNG) now names the
    camera's size (``protocols.sample_camera``), the frame's own where the camera gave it as it is."""
    from edge_agent.agent import _encode_sample
    from protocols.sample_camera import camera_size

    good = frame(91, 1)[0]
    (tmp_path / "cam").mkdir()
    cv2.imwrite(str(tmp_path / "cam" / "a.png"), good)
    cv2.imwrite(str(tmp_path / "cam" / "b.png"), cv2.resize(good, (320, 180)))
    squashed = await _camera_frames(tmp_path / "cam", width=96, height=96)
    as_given = await _camera_frames(tmp_path / "cam")
    got = [(f.image.shape[:2], camera_size(_encode_sample(f)[0])) for f in squashed + as_given]
    assert got == [((96, 96), (W, H)), ((96, 96), (320, 180)), ((H, W), (W, H)), ((180, 320), (320, 180))]
    data = _encode_sample(squashed[0])[0]
    assert (cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) == squashed[0].image).all()


@pytest.fixture(scope="module")
def samples_build(tmp_path_factory):
    """A package trained on a line's own samples: a 4:3 camera's frames squashed to 96x96 by its ``width`` and
    ``height``, each sample naming the camera (160x120), as ``_encode_sample`` writes them."""
    return built_once(tmp_path_factory, "unsure-frame-shape-samples", _samples_build)


def _samples_build(tmp: Path) -> dict:
    from devices.base import Frame
    from edge_agent.agent import _encode_sample

    key, pub = make_keypair(tmp / "keys")
    root = write(tmp / "plates")
    for p in root.rglob("*.png"):
        mask = p.parts[-3] == "ground_truth"
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        small = cv2.resize(img, (96, 96), interpolation=cv2.INTER_NEAREST if mask else cv2.INTER_AREA)
        if mask:  # squashed as its image, no camera of its own
            cv2.imwrite(str(p), small)
        else:
            p.write_bytes(_encode_sample(Frame("cam", 0, 0.0, small, camera_size=(W, H)))[0])
    return {"pub": pub, "samples": _build(tmp, key, "samples", root, openvino=False)}


async def test_a_camera_of_other_proportions_set_to_the_training_frames_size_is_unsure_for_a_model_of_its_samples(
    samples_build, tmp_path
):
    """A frame resized to the training frames' very size was checked at it (those may be a dataset squashed to
    the size the camera is set to), so a 16:9 camera put in place of the 4:3 one whose squashed samples trained
    the model was judged; and the same 4:3 camera set to another square (64x64) was UNSURE on every frame. The
    package now records its samples' camera (160x120): a frame's camera is measured against it."""
    good = frame(91, 1)[0]
    (tmp_path / "cam").mkdir()
    cv2.imwrite(str(tmp_path / "cam" / "a-4x3.png"), good)
    cv2.imwrite(str(tmp_path / "cam" / "b-4x3-twice.png"), cv2.resize(good, (2 * W, 2 * H)))
    cv2.imwrite(str(tmp_path / "cam" / "c-16x9.png"), cv2.resize(good, (320, 180)))
    frames = {
        f"{side}-{i}": f
        for side in (96, 64)
        for i, f in enumerate(await _camera_frames(tmp_path / "cam", width=side, height=side))
    }
    got = await _verdicts(samples_build, tmp_path, "samples", "onnxruntime", frames, as_frames=True)
    for side in (96, 64):
        assert [got[f"{side}-{i}"][0] != "UNSURE" for i in range(2)] == [True, True], got
        assert got[f"{side}-2"] == (
            "UNSURE",
            "frame shape unlike training (camera resolution, rotation or a partial frame): 320x180 (resized to "
            f"{side}x{side} by the camera's width and height), aspect 1.78 outside 1.21-1.47 of the training "
            "frames' camera (160x120)",
        ), got
