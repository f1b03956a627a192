"""The good-only anomaly family on products nobody here made (tests/support/products.py: a textured
surface, a cap turned anywhere on a light table, a small board), built as a user builds it
(`cloud-trainer build anomaly`) and run as the agent runs it (a real slot on ONNX Runtime)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_trainer.cli import main as trainer
from tests.support.models import make_keypair
from tests.support.products import framed

FRAME, AT, SIDE = (150, 200), (70, 30), 96  # a board of 96 px held in a fixture, in a 200x150 frame
ROI = [AT[0], AT[1], SIDE, SIDE]


def _write_frames(folder: Path, n: int) -> Path:
    (folder / "train" / "good").mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(
            str(folder / "train" / "good" / f"{i:03d}.png"), framed("pcb", 1, i, None, SIDE, FRAME, AT)[0]
        )
    return folder


def _build(tmp: Path, data: Path, *extra: str) -> int:
    return trainer(
        [
            "build",
            "anomaly",
            "--dataset",
            str(data),
            "--registry",
            str(tmp / "reg"),
            "--key",
            str(tmp / "keys" / "signing.key"),
            "--work",
            str(tmp / "work"),
            "--size",
            "64",
            "--threads",
            "2",
            "--no-openvino",
            *extra,
        ]
    )


async def test_build_anomaly_with_roi_looks_at_the_box_and_the_agent_places_its_map_on_the_frame(
    tmp_path, capsys
):
    # `build anomaly --roi` was accepted and ignored: the model saw the whole frame (the fixture, the
    # clamps) at 64 px, the package carried no roi, and the docs' advice to crop did nothing
    from devices.base import Frame
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot

    _, pub = make_keypair(tmp_path / "keys")
    data = _write_frames(tmp_path / "board", 20)
    assert _build(tmp_path, data, "--roi", ",".join(map(str, ROI))) == 0, capsys.readouterr().err
    pkg = next((tmp_path / "reg").rglob("*.edgepkg"))
    s = ModelSlot("board", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [pub])
    await s.start()
    try:
        assert s.manifest.preprocessing.roi == ROI

        def run(img):
            return s.infer(Frame("cam", 1, time.time(), img), unsure_tolerance=1.0).interpretation

        goods = [run(framed("pcb", 7, 500 + i, None, SIDE, FRAME, AT)[0]) for i in range(4)]
        assert [g.verdict for g in goods] == ["OK"] * 4, [(g.verdict, g.reason, g.score) for g in goods]
        img, mask = framed("pcb", 7, 600, "missing", SIDE, FRAME, AT)
        it = run(img)
        assert it.verdict == "NG"
        hm = it.heatmap  # in frame coordinates: the box placed where it is in the frame, cool outside it
        assert hm.shape[0] * FRAME[1] == hm.shape[1] * FRAME[0]
        y, x = np.unravel_index(int(np.argmax(hm)), hm.shape)
        ys, xs = np.nonzero(cv2.resize(mask, (hm.shape[1], hm.shape[0]), interpolation=cv2.INTER_NEAREST))
        assert ys.min() - 6 <= y <= ys.max() + 6 and xs.min() - 6 <= x <= xs.max() + 6, (
            (y, x),
            ys.mean(),
            xs.mean(),
        )
        k = hm.shape[1] / FRAME[1]
        assert hm[:, : int(AT[0] * k) - 1].max() == 0.0  # left of the box: the model did not look there
    finally:
        await s.stop()


@pytest.mark.parametrize(
    ("option", "word"),
    [(["--gray"], "--gray"), (["--roi", "150,0,96,96"], "--roi")],
)
def test_build_anomaly_refuses_geometry_it_cannot_honour_in_one_line(tmp_path, capsys, option, word):
    # --gray was accepted and silently ignored; a --roi outside the frames is named with the file
    # (--tiles is the family's own option now: tests/integration/test_anomaly_tiles.py)
    make_keypair(tmp_path / "keys")
    data = _write_frames(tmp_path / "board", 20)
    assert _build(tmp_path, data, *option) == 2
    err = capsys.readouterr().err
    assert err.startswith("cloud-trainer build anomaly: ") and err.count("\n") == 1 and word in err, err
    if word == "--roi":
        assert "000.png" in err and "outside this 200x150 image" in err
    assert not list((tmp_path / "reg").rglob("*.edgepkg"))
