"""The PatchCore bank's greedy k-center coreset: each step takes the pool patch farthest from those
already chosen, so the bank covers every kind of good patch, not only the common ones."""

from __future__ import annotations

import numpy as np

from cloud_trainer.train.anomaly import coreset


def _greedy_by_definition(patches: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The same draws as ``coreset`` (pool, projection, first patch), distances taken literally."""
    rng = np.random.default_rng(seed)
    pool = np.arange(len(patches))
    proj = rng.normal(size=(patches.shape[1], 32)).astype(np.float32) / np.sqrt(patches.shape[1])
    z = (patches @ proj).astype(np.float64)
    chosen = [int(rng.integers(len(pool)))]
    for _ in range(k - 1):
        d = ((z[:, None, :] - z[chosen][None, :, :]) ** 2).sum(-1).min(1)
        chosen.append(int(np.argmax(d)))
    return patches[pool[np.asarray(chosen)]]


def test_the_coreset_is_the_greedy_k_center_choice_and_keeps_the_rare_patches():
    rng = np.random.default_rng(4)
    common = rng.normal(0.0, 1.0, size=(3000, 18))
    rare = rng.normal(0.0, 1.0, size=(5, 18)) + 12.0  # a few far-off patches (a bright edge, a hole)
    patches = np.concatenate([common, rare]).astype(np.float32)
    bank = coreset(patches, 64, seed=3)
    assert bank.shape == (64, 18)
    np.testing.assert_array_equal(bank, _greedy_by_definition(patches, 64, seed=3))
    # greedy farthest-point: every rare patch is either chosen or close to a chosen one
    near = np.sqrt(((rare[:, None, :] - bank[None, :, :]) ** 2).sum(-1)).min(1)
    assert (near < np.sqrt(((rare[:, None] - rare[None]) ** 2).sum(-1)).max()).all()
    assert ((bank - 12.0) ** 2).sum(1).min() < ((common - 12.0) ** 2).sum(1).min()  # one of them is in


def test_a_pool_smaller_than_the_bank_is_kept_whole():
    patches = np.arange(40, dtype=np.float32).reshape(10, 4)
    assert coreset(patches, 16, seed=0) is patches
