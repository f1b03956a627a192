"""The vision trainer on imported images made independently of the project's simulator
(``tests.support.own_parts``): a tiled model from an MVTec AD layout with masks runs through every
stage into a signed package that declares its geometry and the data's class names; tiles without
masks are refused with a clear line. Tiny images and one epoch: plumbing, not the quality bar (that
is ``bench/vision_own_images_bench.py``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from cloud_trainer.train.data import DatasetError
from cloud_trainer.train.images import import_images
from cloud_trainer.train.pipeline import (
    BuildSettings,
    stage_evaluate,
    stage_package,
    stage_quantize,
    stage_train,
)
from tests.support.once import built_once
from tests.support.own_parts import make_part
from tests.support.vision_builds import vision_settings


def mvtec(root: Path, n_good: int = 24, defects=("scratch", "stain"), per_defect: int = 6) -> Path:
    k = 0
    for split, label, n in [("train", "good", n_good), ("test", "good", 4)] + [
        ("test", d, per_defect) for d in defects
    ]:
        (root / split / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, mask = make_part(5, k, 96, None if label == "good" else label)
            cv2.imwrite(str(root / split / label / f"{i:03d}.png"), img)
            if label != "good":
                (root / "ground_truth" / label).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "ground_truth" / label / f"{i:03d}_mask.png"), mask)
            k += 1
    return root


def settings(tmp_path: Path, dataset: Path, **kw) -> BuildSettings:
    kw = {"epochs": 1, "size": 32, "floors": {"ng_recall": 0.0, "ng_precision": 0.0}, **kw}
    return vision_settings(tmp_path, dataset, **kw)[0]


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def tiled(tmp_path_factory) -> dict:
    """The tiled build (2x2 tiles in a roi) of an MVTec folder with masks, every stage up to the signed package,
    that the two tests below judge: made once per run (``built_once``), read by them, never changed."""
    return built_once(tmp_path_factory, "vision-own-images-tiled", _tiled)


def _tiled(tmp: Path) -> dict:
    from cloud_trainer.train import onnx_tools, pipeline

    with pytest.MonkeyPatch.context() as mp:
        # plumbing only: the report's latency table and the OpenVINO rows are covered by test_trainer
        mp.setattr(pipeline, "_engines", lambda: ["onnxruntime"])
        mp.setattr(onnx_tools, "latency_ms", lambda *a, **k: 1.0)
        import_images(mvtec(tmp / "src"), tmp / "ds", log=quiet)
        s = settings(tmp, tmp / "ds", tiles=[2, 2], roi=[8, 8, 80, 80])
        meta = stage_train(s, log=quiet)
        stage_quantize(s, log=quiet)
        rep = stage_evaluate(s, log=quiet)
        package = stage_package(s, log=quiet)
    return {
        "meta": meta,
        "report": rep,
        "package": package,
        "work": s.workdir,
        "pub": tmp / "keys" / "signing.pub",
    }


def test_a_tiled_model_from_an_mvtec_folder_is_packaged_with_its_geometry_and_classes(tiled):
    from model_packager import read_manifest

    meta, rep = tiled["meta"], tiled["report"]
    assert meta["classes"] == ["good", "scratch", "stain"]
    assert rep["split"]["train"] + rep["split"]["val"] + rep["split"]["test"] == 4 * (24 + 4 + 12)  # tiles
    # the gate's test set: MVTec's test/good and half its defects, every tile of an image on one side
    assert rep["split"]["test"] == 4 * (4 + 6)
    assert "test/good (4 images, never trained on)" in rep["split_rule"]
    assert "every tile of an image on one side" in rep["split_rule"]
    assert f"Test set: {rep['split_rule']}." in (tiled["work"] / "report.md").read_text()
    man = read_manifest(tiled["package"])
    assert man.preprocessing.tiles == [2, 2] and man.preprocessing.roi == [8, 8, 80, 80]
    assert man.preprocessing.interpolation == "linear"
    assert man.outputs[0].labels == ["good", "scratch", "stain"] and man.outputs[0].ok_label == "good"
    assert meta["recipe"] == "patch"  # an imported dataset: the patch recipe, per tile
    assert man.outputs[1].shape == ["batch", 1, 8, 8]  # its heat map at 1/4 of the 32-px tile
    # the training frames' local statistics (colour, banding, sharpness by region) travel with it
    from model_packager.inputstats import LOCAL_FILE

    assert man.input_stats is not None and any(f.path == LOCAL_FILE for f in man.files)


def test_tiles_need_defect_masks(tmp_path):
    src = tmp_path / "src"
    for label, n in (("ok", 20), ("dent", 3)):
        (src / label).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(
                str(src / label / f"{i}.png"), make_part(6, i, 64, None if label == "ok" else label)[0]
            )
    import_images(src, tmp_path / "ds", log=quiet)
    with pytest.raises(DatasetError, match=r"\(dent\) has no defect mask: a tiled model needs masks"):
        stage_train(settings(tmp_path, tmp_path / "ds", tiles=[2, 2]), log=quiet)
    with pytest.raises(
        DatasetError,
        match=r"the model's roi \[x=0, y=0, width=100, height=100\] reaches outside "
        "the 64x64 frame",
    ):
        stage_train(settings(tmp_path, tmp_path / "ds", roi=[0, 0, 100, 100]), log=quiet)


async def test_a_tiled_models_unsure_check_measures_whole_frames_as_the_agent_does(tmp_path, tiled):
    """The agent measures each whole frame against the package's input statistics; a tiled build took them
    on its tiles, whose scene (a corner of the part) is no frame's and whose spread is wider, so a foreign
    scene and a camera moved by a fifth of the frame passed as sure and got OK or NG. Real build, real
    ``ModelSlot`` on ONNX Runtime."""
    import time

    import numpy as np

    from devices.base import Frame
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot

    package = tiled["package"]  # the build judged here, shared with the test above
    good = [make_part(5, k, 96, None)[0] for k in range(100, 104)]  # parts the build never saw
    rng = np.random.default_rng(5)
    far = {
        "another scene": cv2.resize(
            rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), (96, 96), interpolation=cv2.INTER_NEAREST
        ),
        "camera moved": np.roll(good[0], 20, axis=1),
    }
    slot = ModelSlot(
        "vision",
        ModelConfig(package=str(package), engine="onnxruntime"),
        tmp_path / "data",
        [tiled["pub"]],
    )
    await slot.start()
    try:

        def verdict(img):
            it = slot.infer(Frame("cam", 1, time.time(), img), unsure_tolerance=1.0).interpretation
            return it.verdict, it.reason

        assert [verdict(g)[0] for g in good].count("UNSURE") == 0
        for name, img in far.items():
            assert verdict(img)[0] == "UNSURE", (name, verdict(img))
    finally:
        await slot.stop()
