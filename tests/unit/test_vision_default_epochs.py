"""The vision family's patch recipe trains 2400 steps (``--epochs 40``) when ``--epochs`` is not given, the compact
CNN its own 20 epochs, and a given ``--epochs`` is taken by either (cloud_trainer.train.families.vision; the
figures behind 40: bench/RESULTS.md, "twice the steps"). Before, the patch recipe trained 1200 steps by default."""

from __future__ import annotations

import pytest

from cloud_trainer.train import cli, learned_patches
from cloud_trainer.train import vision as cnn
from cloud_trainer.train.families.vision import VisionFamily


def _trained_epochs(monkeypatch, tmp_path, recipe: str, extra: list[str]) -> int:
    seen: list[int] = []

    def patch_train(*a, epochs, **k):
        seen.append(epochs)
        raise RuntimeError("stop")

    def cnn_train(ds, size, seed, epochs, *a, **k):
        seen.append(epochs)
        raise RuntimeError("stop")

    monkeypatch.setattr(learned_patches, "train", patch_train)
    monkeypatch.setattr(cnn, "train", cnn_train)
    a = cli._parser("build").parse_args(
        ["vision", "--dataset", str(tmp_path), "--work", str(tmp_path / "w"), "--recipe", recipe, *extra]
    )
    s = cli._settings(a)
    with pytest.raises(RuntimeError, match="stop"):
        VisionFamily().train(s, None, None, lambda m: None)
    return seen[0]


@pytest.mark.parametrize(
    ("recipe", "extra", "epochs"),
    [("patch", [], 40), ("patch", ["--epochs", "20"], 20), ("cnn", [], 20), ("cnn", ["--epochs", "7"], 7)],
)
def test_the_patch_recipe_trains_twice_the_steps_by_default_and_a_given_epochs_is_kept(
    monkeypatch, tmp_path, recipe, extra, epochs
):
    assert _trained_epochs(monkeypatch, tmp_path, recipe, extra) == epochs
