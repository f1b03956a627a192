"""A model's heat map as the status page draws it over a non-square frame (``interpret`` then ``overlay_png``).

A ``heatmap`` output is drawn min to max over its cells but those far beyond the others (``HEATMAP_SPAN``: a
broken or masked cell at -1e30 made every other cell 1.0), which are clipped. A map whose values span more than
float32's largest value (-3e38 to 3e38, every one finite, so not ``nonfinite_output``) was scaled in float32:
``h - lo`` overflowed and the map came out 0 and NaN, its hot spot drawn cold (and a RuntimeWarning per frame).
It is scaled in double then. The map lands where the model looked for a whole-frame model (stretched as the
frame was), a ``crop`` and tiles."""

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
        # both far beyond the other cells (all 0): clipped to the ends, the flat rest drawn cold
        assert res.heatmap[0, 0] == 0.0
        y, x = _hottest(_manifest(), h)
        assert abs(y - 8.5 / 32 * 480) <= 16 and abs(x - 24.5 / 32 * 640) <= 21, (y, x)
        h[0, 0, :16], h[0, 0, 16:] = (
            -3e38,
            3e38,
        )  # half the cells at either end: all drawn to scale, in double
        h[0, 0, 0, 0] = 0.0
        drawn = interpret(_manifest(), {"logits": LOGITS, "heatmap": h}, FRAME_HW).heatmap
    assert drawn[0, 0] == pytest.approx(0.5) and drawn[0, 1] == 0.0 and drawn[31, 31] == 1.0


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


@pytest.mark.parametrize(
    ("pre", "frame_hw"),
    [({}, None), ({"crop": 0.5}, FRAME_HW), ({"tiles": [2, 1], "tile_overlap": 0.0}, None)],
    ids=["whole-frame", "crop", "tiles"],
)
@pytest.mark.parametrize("broken", [-1e30, 1e30], ids=["below", "above"])
def test_a_map_with_one_broken_cell_is_drawn_over_the_range_of_the_others(pre, frame_hw, broken):
    """One cell at -1e30 (a broken or masked cell), the others from 0 to 0.2 and a hot spot at 1: drawn min
    to max, every other cell came out 1.0 (the whole map hot, the hot spot lost); one at 1e30 left the rest
    at 0. The map is drawn over the range of the cells within a million times the larger of 1 and the
    middle half's magnitude; the broken cell clipped to the nearer end."""
    m = _manifest(**pre)
    maps = (np.random.default_rng(0).random((m.preprocessing.n_tiles, 1, 32, 32)) * 0.2).astype(np.float32)
    maps[0, 0, 8, 24], maps[0, 0, 30, 2] = 1.0, broken
    logits = np.repeat(LOGITS, len(maps), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drawn = interpret(m, {"logits": logits, "heatmap": maps}, frame_hw).heatmap
    assert drawn is not None and np.isfinite(drawn).all()
    shown = drawn[drawn > 0]  # outside the crop: the lowest, 0
    assert drawn.max() == 1.0 and 0.05 < float(np.median(shown)) < 0.2, float(np.median(shown))
    if frame_hw is None:
        assert drawn[8, 24] == 1.0 and drawn[30, 2] == (0.0 if broken < 0 else 1.0), (
            drawn[8, 24],
            drawn[30, 2],
        )
    if broken < 0:
        y, x = _hottest(m, maps)
        at = {"": (8.5 / 32 * 480, 24.5 / 32 * 640), "crop": (120 + 8.5 / 32 * 240, 200 + 24.5 / 32 * 240)}
        at["tiles"] = (8.5 / 32 * 480, 24.5 / 32 * 320)
        want = at["crop" if "crop" in pre else "tiles" if "tiles" in pre else ""]
        assert abs(y - want[0]) <= 16 and abs(x - want[1]) <= 21, ((y, x), want)
