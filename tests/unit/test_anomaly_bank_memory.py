"""The anomaly family's build memory is bounded whatever the number of good frames and tiles.

Every patch of every good view (tile) and of its relit copy was held at once, and concatenated again
for each fold's coreset: 200 good 5-MP frames in 5x4 tiles of 224 px made ~25 M patches (3.6 GB of
texture features, ~23 GB with a CNN's), and the tensors of every tile (2.4 GB) beside them. A build now
keeps at most ``MAX_BANK_PATCHES`` of them for the coreset (the same number of each view's, drawn at
random, seeded) and turns views into tensors and features a batch at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train import anomaly as A
from tests.support.bracket_frames import frame

CAP = 4096
SIZE, TILES = 64, [2, 2]


def _tiled(n_frames: int) -> A.AnomalyData:
    views = []
    for i in range(n_frames):  # sheets of 256x192 in 2x2 tiles at 64 px: 256 patches a tile
        views += A.cut_tiles(frame(9, i, 256, 192, kind="sheet")[0], SIZE, TILES, Path(f"{i}.png"))
    ds = A.AnomalyData(views, [f"{i}.png" for i in range(n_frames)])
    ds.per_frame = 4
    return ds


@pytest.mark.parametrize("n_frames", [20, 60])
def test_a_tiled_build_keeps_a_bounded_number_of_patches_whatever_the_number_of_frames(monkeypatch, n_frames):
    monkeypatch.setattr(A, "MAX_BANK_PATCHES", CAP, raising=False)
    seen: dict[str, list[int]] = {"coreset_rows": [], "feature_views": []}
    coreset, patch_features = A.coreset, A.patch_features

    def spy_coreset(patches, k, seed, *a, **kw):
        seen["coreset_rows"].append(len(patches))
        return coreset(patches, k, seed, *a, **kw)

    def spy_features(feat, x, *a, **kw):
        seen["feature_views"].append(len(x))
        return patch_features(feat, x, *a, **kw)

    monkeypatch.setattr(A, "coreset", spy_coreset)
    monkeypatch.setattr(A, "patch_features", spy_features)
    s = A.AnomalySettings(
        Path("."), Path("."), Path("."), Path("."), size=SIZE, tiles=TILES, bank_size=256, folds=3
    )
    fitted = A.fit(_tiled(n_frames), s, log=lambda m: None)
    # 20 frames x 4 tiles x 256 patches, and their relit copies, are 40,960 patches (122,880 from 60
    # frames): the coreset's pool never holds more than the cap, whatever the number of frames
    assert seen["coreset_rows"] and max(seen["coreset_rows"]) <= CAP, seen["coreset_rows"]
    # and the features are taken a batch of views at a time, never of every view at once
    assert max(seen["feature_views"]) <= 32, seen["feature_views"]
    assert fitted["bank"] == 256 and np.isfinite(fitted["threshold"]) and fitted["threshold"] > 0
    assert len(fitted["cv_scores"]) == n_frames  # every frame still scored on all its tiles' patches
