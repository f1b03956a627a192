"""A model's heat map as the status page draws it over a non-square frame (``interpret`` then ``overlay_png``).

A ``heatmap`` output is drawn min to max. A map whose values span more than float32's largest value (-3e38 to
3e38, every one finite, so not ``nonfinite_output``) was scaled in float32: ``h - lo`` overflowed and the map
came out 0 and NaN, its hot spot drawn cold (and a RuntimeWarning per frame). It is scaled in double then. The
map lands where the model looked for a whole-frame model (stretched as the frame was), a ``crop`` and tiles."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from edge_agent.status_board import overlay_png
from model_packager.manifest import Manifest
from model_packager.preprocess import interpret
from tests.support.models import vision_spec

FRAME_HW = (480, 640)
LOGITS = np.array([[5, 0, 0, 0, 0, 0]], np.float32)


def _manifest(**pre) -> Manifest:
    d = vision_spec(width=64, height=64)
    d["preprocessing"].update(pre)
    return Manifest.model_validate({**d, "files": []})


def _hottest(m: Manifest, maps: np.ndarray) -> tuple[int, int]:
    """(y, x) of the reddest pixel of the status page's overlay on a black frame."""
    res = interpret(m, {"logits": np.repeat(LOGITS, len(maps), 0), "heatmap": maps}, FRAME_HW)
    png = overlay_png(np.zeros((*FRAME_HW, 3), np.uint8), res.heatmap)
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == FRAME_HW
    red = img[:, :, 2].astype(int) - img[:, :, 0].astype(int)
    y, x = np.unravel_index(np.argmax(red), red.shape)
    return int(y), int(x)


def test_a_map_spanning_more_than_float32_is_drawn_with_its_hot_spot():
    h = np.zeros((1, 1, 32, 32), np.float32)
    h[0, 0, 8, 24], h[0, 0, 30, 2] = 3e38, -3e38
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow and a NaN cast warned on every frame
        res = interpret(_manifest(), {"logits": LOGITS, "heatmap": h}, FRAME_HW)
        assert np.isfinite(res.heatmap).all(), res.heatmap
        assert res.heatmap[8, 24] == 1.0 and res.heatmap[30, 2] == 0.0, (res.heatmap.max(), res.heatmap.min())
        assert res.heatmap[0, 0] == pytest.approx(0.5)
        y, x = _hottest(_manifest(), h)
    assert abs(y - 8.5 / 32 * 480) <= 16 and abs(x - 24.5 / 32 * 640) <= 21, (y, x)


@pytest.mark.parametrize(
    ("pre", "tile", "at"),
    [
        ({}, 0, (8.5 / 32 * 480, 24.5 / 32 * 640)),  # stretched to the frame as the frame was to the model
        ({"crop": 0.5}, 0, (120 + 8.5 / 32 * 240, 200 + 24.5 / 32 * 240)),
        ({"tiles": [2, 1], "tile_overlap": 0.0}, 1, (8.5 / 32 * 480, 320 + 24.5 / 32 * 320)),
    ],
    ids=["whole-frame", "crop", "tiles"],
)
def test_the_map_lands_where_the_model_looked_on_a_non_square_frame(pre, tile, at):
    m = _manifest(**pre)
    maps = np.zeros((m.preprocessing.n_tiles, 1, 32, 32), np.float32)
    maps[tile, 0, 8, 24] = 1.0
    y, x = _hottest(m, maps)
    assert abs(y - at[0]) <= 16 and abs(x - at[1]) <= 21, ((y, x), at)
