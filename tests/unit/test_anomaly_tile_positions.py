"""A tiled anomaly model of a fixed camera judges each tile against the good frames at its own place.

A tile position always sees the same region of the part: there a label printed in another shade and
contrast on every part (each good frame's hottest patches), elsewhere a quiet sheet. With one scale for
every tile, the label's distances set the per-frame threshold, and a dark spot on the quiet sheet,
farther from the good sheet than the sheet ever is but nearer than the label, passed as good (1 of 8
found). Each tile position's distances are now divided by the good frames' there (a reference map per
position, in the exported graph), so the label is normal at its place and the spot is NG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cloud_trainer.train import anomaly as A
from tests.support.bracket_frames import frame

W, H, TILES, SIZE = 192, 128, [3, 2], 64


def _scene(i: int, spot: bool = False) -> np.ndarray:
    img = frame(11, i, W, H, kind="sheet")[0].copy()
    rng = np.random.default_rng([11, i])
    dx, dy = (int(v) for v in rng.integers(-3, 4, 2))  # the part sits a few pixels off
    label = rng.integers(20, 236) + rng.normal(0, rng.uniform(0, 60), (20, 20, 1))
    img[24 + dy : 44 + dy, 24 + dx : 44 + dx] = np.clip(label, 0, 255).astype(np.uint8)
    if spot:  # an 8x8 dark spot on the sheet, in another tile
        img[88:96, 148:156] = np.clip(img[88:96, 148:156].astype(np.int16) - 80, 0, 255).astype(np.uint8)
    return img


def _tiles(img: np.ndarray) -> list[np.ndarray]:
    return A.cut_tiles(img, SIZE, TILES, Path("frame.png"))


def test_a_place_always_hot_in_good_frames_is_normal_there_and_a_spot_elsewhere_is_ng():
    ds = A.AnomalyData([t for i in range(20) for t in _tiles(_scene(i))], [f"{i}.png" for i in range(20)])
    ds.per_frame = 6
    s = A.AnomalySettings(
        Path("."), Path("."), Path("."), Path("."), size=SIZE, tiles=TILES, bank_size=256, folds=3
    )
    fitted = A.fit(ds, s, log=lambda m: None)

    def score(img: np.ndarray) -> float:  # the frame's tiles as one batch, as the agent runs them
        with torch.no_grad():
            x = torch.from_numpy(A.tensors(_tiles(img), fitted["pre"]))
            return float(fitted["model"](x)[0].max())

    thr = fitted["threshold"]
    good = [score(_scene(100 + i)) / thr for i in range(8)]
    spots = [score(_scene(200 + i, spot=True)) / thr for i in range(8)]
    # measured: good frames at most 0.82 of the threshold, spots 1.03-1.64 (one scale: 1 of 8 above it)
    assert max(good) < 1.0, good
    assert sum(v >= 1.0 for v in spots) >= 6, spots


def test_the_int8_gate_scores_each_good_frame_with_references_made_without_it(tmp_path):
    # the INT8 gate judges each good frame as the threshold was set on it: its fold's bank, and reference
    # maps without its frame. With every good frame's references, its own among them, every frame scored
    # below the score the threshold took (median 1.3 % below, at most 0.79 of the threshold against 0.83)
    from cloud_trainer.train import onnx_tools

    ds = A.AnomalyData([t for i in range(20) for t in _tiles(_scene(i))], [f"{i}.png" for i in range(20)])
    ds.per_frame = 6
    s = A.AnomalySettings(
        Path("."), Path("."), Path("."), Path("."), size=SIZE, tiles=TILES, bank_size=256, folds=3
    )
    fitted = A.fit(ds, s, log=lambda m: None)
    fp32 = onnx_tools.export(fitted["model"], fitted["x"][:6], tmp_path / "m.onnx", A.INPUT, A.OUTPUTS)
    held, _ = A._held_out_runs(
        fp32,
        {},
        ds,
        fitted["pre"],
        fitted["fold_of"],
        fitted["fold_banks"],
        tmp_path,
        fitted["model"],
        fitted["fold_refs"],
    )
    # (the references are the good frames' highest distances: without a whole fold's frames, a third of
    # them here, they sit a little lower than without one frame's, so the gate's scores are ~1.3 % above
    # the threshold's, on the strict side)
    ratio = held[:, 0].reshape(-1, 6).max(1) / fitted["cv_scores"]
    assert (ratio > 1.0).any() and abs(float(np.median(ratio)) - 1.0) < 0.02, ratio


def test_a_place_whose_good_distances_spread_wide_does_not_set_the_frame_score():
    # a frame's score is the maximum over every patch of its tiles, so it was set by the places whose good
    # distances spread widest (a tile's border: 75-85 % of 1280x1024 good frames' maxima lay there): with
    # the mean good distance as the reference, a place at 1.0 in most good frames and 3.0 in a few scored a
    # good frame 2.5, above a defect of twice the distance on a quiet place (2.0). The reference is now the
    # highest good distance at each place; each frame's held-out reference is the highest of the others'
    t, h = 2, 8
    maps = np.ones((10, t, h, h), np.float32)
    maps[[1, 4], 1, 3, 3] = 3.0  # tile position 1, one place: hot in 2 good frames of 10
    ref, loo = A.position_refs(maps.reshape(-1, h, h), t)
    good_frame = maps[4]  # a good frame with the hot place
    defect = np.ones((t, h, h), np.float32)
    defect[0, 5, 5] = 2.0  # twice the good distance, where good frames are always quiet
    assert float((good_frame / ref).max()) <= 1.0 < float((defect / ref).max())
    loo = loo.reshape(10, t, h, h)
    assert loo[4, 1, 3, 3] == 3.0  # frame 4 held out: frame 1 is still hot there
    maps[1, 1, 3, 3] = 1.0  # only frame 4 hot there: held out, its reference there is the others' 1.0
    _, loo = A.position_refs(maps.reshape(-1, h, h), t)
    assert loo.reshape(10, t, h, h)[4, 1, 3, 3] == 1.0
