"""The training-input statistics a vision package carries, and the UNSURE check built on them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_agent.pipelines import UnsureWatch
from model_packager.inputstats import check, summarize
from model_packager.manifest import InputStats, OutputSpec
from tests.support.plates import plate


@pytest.fixture(scope="module")
def stats() -> InputStats:
    return summarize(plate(1, i, None, 96)[0] for i in range(30))


def test_training_like_frames_pass_and_far_off_ones_say_why(stats):
    # in range: other good plates, a defective one, a 1280x1024 frame of the same scene, a grey frame
    for i in range(30, 40):
        assert check(stats, plate(1, i, None, 96)[0]) is None
    assert check(stats, plate(1, 50, "pit", 96)[0]) is None
    big = cv2.resize(plate(1, 51, None, 96)[0], (1280, 1024), interpolation=cv2.INTER_CUBIC)
    assert check(stats, cv2.GaussianBlur(big, (0, 0), 1.0)) is None  # the same sharpness at 128 px
    assert check(stats, cv2.cvtColor(plate(1, 52, None, 96)[0], cv2.COLOR_BGR2GRAY)) is None
    img = plate(1, 60, None, 96)[0]
    assert check(stats, cv2.GaussianBlur(img, (0, 0), 3)).startswith("blurred")
    assert check(stats, (img * 0.2).astype(np.uint8)).startswith("underexposed")
    assert check(stats, np.clip(img.astype(int) * 3, 0, 255).astype(np.uint8)).startswith("overexposed")
    foreign = cv2.resize(
        np.random.default_rng(0).integers(0, 255, (6, 6, 3), dtype=np.uint8),
        (96, 96),
        interpolation=cv2.INTER_NEAREST,
    )
    assert check(stats, foreign) is not None
    moved = np.roll(img, 30, axis=1)  # the camera moved: the scene no longer matches
    assert check(stats, moved).startswith("wrong scene")
    assert (
        check(stats, cv2.GaussianBlur(img, (0, 0), 3), tolerance=50) is None
    )  # tolerance widens every margin
    InputStats.model_validate(stats.model_dump(mode="json"))  # round-trips through the manifest


def test_anomaly_map_needs_a_threshold():
    with pytest.raises(ValueError, match="anomaly_map needs 'threshold'"):
        OutputSpec(name="m", dtype="float32", shape=["batch", 1, 8, 8], role="anomaly_map")


def test_drift_event_once_per_excursion():
    w = UnsureWatch("p", window=10, max_share=0.3)
    events = [w.add(None) for _ in range(10)]
    assert not any(events)
    events = [w.add("blurred: sharpness 1 < 2") for _ in range(3)]
    assert events[:2] == [None, None] and events[2]["kind"] == "input_drift"
    assert events[2]["reasons"] == {"blurred": 3} and events[2]["share"] == 0.3
    assert [w.add("blurred: x") for _ in range(5)] == [None] * 5  # still high: not raised again
    for _ in range(10):
        w.add(None)  # back to normal: re-armed
    assert [w.add("underexposed: x") for _ in range(3)][-1]["kind"] == "input_drift"
