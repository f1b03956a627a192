"""A vision model the user brings (docs/own-model.md) packaged with ``model-packager build --input-images
DIR``: its training images' statistics travel in the package, so the agent calls frames far outside them
UNSURE as it does for the trainer's packages. Before, ``build`` had no way to take them: such a package
never said UNSURE, and a blurred, dark or mono camera's frames got an OK or NG."""

from __future__ import annotations

import json
import tarfile

import cv2
import numpy as np
import pytest
import yaml

from devices.base import Frame
from edge_agent.config import UnsureSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from model_packager.cli import main
from tests.support import line_frames
from tests.support.models import make_keypair, make_vision_onnx, signal_spec, vision_spec


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ownimg")
    key, pub = make_keypair(tmp / "keys")
    model = make_vision_onnx(tmp / "model.onnx", bias=20.0)  # "ok" to any frame
    spec = tmp / "spec.yaml"
    spec.write_text(yaml.safe_dump(vision_spec("own-vision", "1.0.0")))
    imgs = tmp / "train"
    (imgs / "day2").mkdir(parents=True)
    for i in range(24):  # a folder of the line's good frames, some in a sub-folder, as a user keeps them
        cv2.imwrite(str(imgs / ("day2" if i % 3 else ".") / f"IMG_{i:03d}.PNG"), line_frames.good(1, i))
    (imgs / "._IMG_000.PNG").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")  # not images
    (imgs / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (imgs / "notes.txt").write_text("camera 2, lamp replaced on day 2")
    out = tmp / "dist"
    code = main(
        ["build", str(model), str(spec), "--key", str(key), "--out", str(out), "--input-images", str(imgs)]
    )
    assert code == 0
    return tmp, key, pub, model, spec, next(out.glob("*.edgepkg"))


async def test_a_users_own_vision_model_says_unsure_for_frames_far_from_its_input_images(built):
    tmp, _key, pub, _model, _spec, pkg = built
    with tarfile.open(pkg) as tar:
        manifest = yaml.safe_load(tar.extractfile("manifest.yaml").read())
        local = json.loads(tar.extractfile("input_stats_local.json").read())
    assert manifest["input_stats"]["count"] == 24 and local["count"] == 24  # the junk files are no images
    assert "input_stats_local.json" in {f["path"] for f in manifest["files"]}  # listed, so signed
    slot = ModelSlot("own", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp / "data", [str(pub)])
    await slot.start()
    tol = UnsureSettings().tolerance
    try:
        verdicts = {
            kind: slot.infer(Frame("cam", i, 0.0, img), tol).interpretation
            for i, (kind, img) in enumerate(
                [
                    ("good", line_frames.good(7, 3)),  # another seed: a frame the folder does not hold
                    ("blurred", line_frames.focus(7, 4, 2)),
                    ("mono", line_frames.mono(7, 5, 2)),
                    ("dark", (line_frames.good(7, 6) * 0.3).astype(np.uint8)),
                ]
            )
        }
    finally:
        await slot.stop()
    assert verdicts["good"].verdict == "OK"
    for kind in ("blurred", "mono", "dark"):
        assert verdicts[kind].verdict == "UNSURE", (kind, verdicts[kind])


def test_build_refuses_input_images_it_cannot_use_with_one_line_each(built, capsys):
    tmp, key, _pub, model, spec, _pkg = built
    empty = tmp / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "._a.png").write_bytes(b"\x00\x05\x16\x07")
    damaged = tmp / "damaged"
    damaged.mkdir()
    cv2.imwrite(str(damaged / "a.png"), line_frames.good(1, 0))
    (damaged / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    sig = tmp / "signal.yaml"
    sig.write_text(yaml.safe_dump(signal_spec("pump", "1.0.0")))
    base = ["build", str(model), str(spec), "--key", str(key), "--out", str(tmp / "refused")]
    cases = [
        (base + ["--input-images", str(empty)], "no image in it"),
        (base + ["--input-images", str(damaged)], "b.jpg: not a PNG, JPEG, BMP, TIFF, WebP or PNM image"),
        (base + ["--input-images", str(tmp / "nowhere")], "not a folder"),
        (
            ["build", str(model), str(sig), "--key", str(key), "--out", str(tmp / "refused")]
            + ["--input-images", str(damaged)],
            "input images are for a model that takes images",
        ),
    ]
    for argv, words in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert not list(tmp.glob("refused/*.edgepkg"))  # nothing written


async def test_input_images_that_cannot_hold_the_models_roi_are_refused_not_built_into_unsure_on_every_frame(
    built, capsys
):
    """A model with a ``roi`` (a pixel box of the camera's frame) is trained on crops of that box, and the
    user gave those crops as ``--input-images``: the package was built with their size as the training
    frames', and the agent called every frame of the line UNSURE ("frame size unlike training: 160x120, the
    model's roi is a pixel box of 80x60 frames"). An image that cannot hold the roi is no frame it is cut
    from: refused naming it; the camera's whole frames build a package that calls a good frame OK."""
    tmp, key, pub, model, _spec, _pkg = built
    h, w = line_frames.good(1, 0).shape[:2]
    roi = [w // 4, h // 4, w // 2, h // 2]
    spec = vision_spec("own-roi", "1.0.0")
    spec["preprocessing"]["roi"] = roi
    (tmp / "roi.yaml").write_text(yaml.safe_dump(spec))
    crops, frames = tmp / "roi_crops", tmp / "roi_frames"
    crops.mkdir()
    frames.mkdir()
    x, y, rw, rh = roi
    for i in range(12):
        cv2.imwrite(str(frames / f"{i:03d}.png"), line_frames.good(1, i))
        cv2.imwrite(str(crops / f"{i:03d}.png"), line_frames.good(1, i)[y : y + rh, x : x + rw])
    base = ["build", str(model), str(tmp / "roi.yaml"), "--key", str(key)]
    assert main([*base, "--out", str(tmp / "roi_refused"), "--input-images", str(crops)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{crops / '000.png'}: {rw}x{rh} pixels, which do not hold the model's roi" in err, err
    assert "whole frames" in err, err
    assert not list(tmp.glob("roi_refused/*.edgepkg"))
    assert main([*base, "--out", str(tmp / "roi_dist"), "--input-images", str(frames)]) == 0
    pkg = next((tmp / "roi_dist").glob("*.edgepkg"))
    slot = ModelSlot("own", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp / "roi_data", [str(pub)])
    await slot.start()
    try:
        got = slot.infer(Frame("cam", 0, 0.0, line_frames.good(7, 3)), UnsureSettings().tolerance)
    finally:
        await slot.stop()
    assert got.interpretation.verdict == "OK", got.interpretation


async def test_crops_exactly_the_size_of_a_roi_at_the_origin_are_refused_unless_said_to_be_whole_frames(
    built, capsys
):
    """A model whose ``roi`` starts at [0, 0] is trained on crops of that box, which hold it exactly: the
    check that an image can hold the roi let them through, the package was built with their size as the
    training frames', and the agent called every frame of the line UNSURE ("frame size unlike training").
    Such an image cannot tell a crop from a frame the roi covers whole: it is refused naming the file and
    --whole-frames, which builds it when the camera's frames are that size; the camera's frames build a
    package that calls a good frame OK."""
    tmp, key, pub, model, _spec, _pkg = built
    h, w = line_frames.good(1, 0).shape[:2]
    roi = [0, 0, w // 2, h // 2]
    spec = vision_spec("own-roi0", "1.0.0")
    spec["preprocessing"]["roi"] = roi
    (tmp / "roi0.yaml").write_text(yaml.safe_dump(spec))
    crops, frames = tmp / "roi0_crops", tmp / "roi0_frames"
    crops.mkdir()
    frames.mkdir()
    for i in range(12):
        cv2.imwrite(str(frames / f"{i:03d}.png"), line_frames.good(1, i))
        cv2.imwrite(str(crops / f"{i:03d}.png"), line_frames.good(1, i)[: h // 2, : w // 2])
    base = ["build", str(model), str(tmp / "roi0.yaml"), "--key", str(key)]
    assert main([*base, "--out", str(tmp / "roi0_refused"), "--input-images", str(crops)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{crops / '000.png'}: {w // 2}x{h // 2} pixels, exactly the model's roi" in err, err
    assert "--whole-frames" in err and "whole frames" in err, err
    assert not list(tmp.glob("roi0_refused/*.edgepkg"))
    assert main([*base, "--out", str(tmp / "roi0_said"), "--whole-frames", "--input-images", str(crops)]) == 0
    capsys.readouterr()
    assert main([*base, "--out", str(tmp / "roi0_nowhere"), "--whole-frames"]) == 2  # says nothing alone
    assert "--whole-frames" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp / "roi0_dist"), "--input-images", str(frames)]) == 0
    pkg = next((tmp / "roi0_dist").glob("*.edgepkg"))
    slot = ModelSlot(
        "own", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp / "roi0_data", [str(pub)]
    )
    await slot.start()
    try:
        got = slot.infer(Frame("cam", 0, 0.0, line_frames.good(7, 3)), UnsureSettings().tolerance)
    finally:
        await slot.stop()
    assert got.interpretation.verdict == "OK", got.interpretation
