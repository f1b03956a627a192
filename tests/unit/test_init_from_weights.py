"""``--init-from`` reads the user's weights file (a retrain's parent, or weights brought from elsewhere): one that
holds a tensor or a list ended in ``load_state_dict``'s TypeError traceback, another tool's training checkpoint
was said not to fit without saying why, and a NaN weight trained (every loss NaN) and exported a model answering
NaN. Each is refused in one line naming the file; a model's own weights load as they are."""

from __future__ import annotations

import pytest
import torch

from cloud_trainer.train.families.base import StageError
from cloud_trainer.train.families.vision import _init_state
from cloud_trainer.train.vision import build_model


def _weights(tmp_path, obj, name="w.pt"):
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def test_a_models_own_weights_load_as_they_are(tmp_path):
    sd = build_model(2, channels=3).state_dict()
    got = _init_state(_weights(tmp_path, sd))
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


@pytest.mark.parametrize(
    "make, said",
    [
        (lambda sd: torch.zeros(3), "holds Tensor, not a model's weights"),
        (lambda sd: [1, 2], "holds list, not a model's weights"),
        (
            lambda sd: {"epoch": 3, "state_dict": sd},
            "holds a dict of other things than named tensors, .*; a training checkpoint: save its 'state_dict' alone",
        ),
    ],
    ids=["tensor", "list", "checkpoint"],
)
def test_a_weights_file_that_is_no_state_dict_is_refused_naming_it(tmp_path, make, said):
    path = _weights(tmp_path, make(build_model(2, channels=3).state_dict()))
    with pytest.raises(StageError, match=rf"^--init-from {path}: {said}"):
        _init_state(path)


def test_weights_holding_nan_are_refused_naming_the_first(tmp_path):
    sd = build_model(2, channels=3).state_dict()
    first = next(k for k, v in sd.items() if v.is_floating_point())
    sd[first].view(-1)[0] = float("nan")
    path = _weights(tmp_path, sd)
    with pytest.raises(
        StageError, match=rf"^--init-from {path}: 1 of its weights hold NaN or Inf \(the first: '{first}'\)"
    ):
        _init_state(path)


def test_weights_that_do_not_fit_are_refused_saying_why_and_the_models_input_channels():
    # a grey model's weights for a colour dataset were said not to fit with torch's heading alone
    # ('Error(s) in loading state_dict for VisionNet:'), no reason; refused before any training
    import numpy as np

    from cloud_trainer.train.data import PartsData
    from cloud_trainer.train.vision import train

    rng = np.random.default_rng(0)
    data = PartsData(
        images=[rng.integers(0, 255, (16, 16, 3), np.uint8) for _ in range(12)],
        labels=np.array([0, 1] * 6),
        ids=[f"{i:02d}" for i in range(12)],
        classes=["good", "scratch"],
        digest="sha256:0",
    )
    with pytest.raises(ValueError, match=r"do not fit this model \(2 classes, 3 input channel\(s\)\): ") as e:
        train(data, 16, 0, 1, log=lambda *a: None, init_state=build_model(2, channels=1).state_dict())
    assert "size mismatch for" in str(e.value) and "\n" not in str(e.value), e.value
