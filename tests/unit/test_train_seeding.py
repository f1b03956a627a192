"""Seeding before a training: PyTorch's deterministic algorithms are on (warnings only where an operation has
none), set without importing TorchDynamo and Inductor (``torch.use_deterministic_algorithms`` imports them to
set torch.compile's own flag: ~1.5-2 s of CPU in every process that trains, which nothing here compiles)."""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture
def flags_kept():
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    threads = torch.get_num_threads()
    yield
    torch._C._set_deterministic_algorithms(before[0], warn_only=before[1])
    torch.set_num_threads(threads)


def test_seeding_turns_deterministic_algorithms_on_without_the_compilers_import(monkeypatch, flags_kept):
    from cloud_trainer.train.common import seed_everything

    def imports_the_compiler(*args, **kwargs):
        raise AssertionError("torch.use_deterministic_algorithms imports TorchDynamo and Inductor")

    monkeypatch.setattr(torch, "use_deterministic_algorithms", imports_the_compiler)
    torch._C._set_deterministic_algorithms(False, warn_only=False)
    seed_everything(7, threads=1)
    assert (
        torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    )
    assert torch.get_num_threads() == 1
    drawn = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(7)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == drawn
