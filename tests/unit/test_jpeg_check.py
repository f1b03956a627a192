"""The damaged-JPEG checks (``protocols.jpeg_check`` and the packager's copy) on crafted files: walked within a
bound, counted in Python line events (not timed), and still telling real damage."""

from __future__ import annotations

import importlib

import cv2
import numpy as np
import pytest

from tests.support.line_events import line_events

MODULES = ["protocols.jpeg_check", "model_packager.image_file"]


def _jpeg(image: np.ndarray, restart_rows: int = 0) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 90]
    if restart_rows:
        params += [cv2.IMWRITE_JPEG_RST_INTERVAL, restart_rows]
    ok, buf = cv2.imencode(".jpg", image, params)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("module", MODULES)
def test_a_decodable_jpeg_with_millions_of_fill_bytes_in_its_header_is_walked_within_a_bound(module):
    """libjpeg steps over 0xFF fill bytes before a marker in C, so a JPEG with 2 MB of them in its header decodes;
    the damage check after the decode then stepped over them a byte at a time in Python (~0.15 s for 2 MB, ~15 s
    of the camera's or the inference thread for the 201 MB a frame may take)."""
    check = importlib.import_module(module).coded_damage
    real = _jpeg(np.full((32, 48, 3), 90, np.uint8), restart_rows=1)
    for crafted in (
        real[:2] + b"\xff" * 2_000_000 + real[2:],
        real[:2] + b"\xff\xfe\x00\x02" * 500_000 + real[2:],
    ):
        assert cv2.imdecode(np.frombuffer(crafted, np.uint8), cv2.IMREAD_COLOR) is not None
        got: list = []
        lines = line_events(lambda c=crafted, g=got: g.append(check(c)), 200_000)
        assert lines <= 200_000, f"over 200000 lines run for {len(crafted)} bytes"
        assert got == [None]


@pytest.mark.parametrize("module", MODULES)
def test_restart_markers_out_of_order_are_still_told_behind_fill_bytes(module):
    check = importlib.import_module(module).coded_damage
    rng = np.random.default_rng(3)
    real = _jpeg(rng.integers(0, 256, (64, 64, 3), np.uint8), restart_rows=1)
    assert check(real) is None
    first = real.find(b"\xff\xd0")
    assert first > 0
    swapped = real[:first] + b"\xff\xd1" + real[first + 2 :]  # RST1 where RST0 belongs
    padded = swapped[:2] + b"\xff" * 1000 + bytes(1000) + swapped[2:]
    assert "RST1 where RST0 belongs" in (check(padded) or "")


@pytest.mark.parametrize("module", MODULES)
def test_the_grey_fill_check_steps_back_over_millions_of_fill_bytes_before_the_end_within_a_bound(module):
    """A flat grey image (each corner block the grey libjpeg fills in) with 2 MB of 0xFF fill bytes before its end
    marker decodes; the check stepped back over them a byte at a time in Python. It is whole: not refused."""
    grey_filled = importlib.import_module(module).grey_filled
    real = _jpeg(np.full((32, 48, 3), 128, np.uint8))
    crafted = real[:-2] + b"\xff" * 2_000_000 + real[-2:]
    image = cv2.imdecode(np.frombuffer(crafted, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and (image == 128).all()
    got: list = []
    lines = line_events(lambda: got.append(grey_filled(crafted, image, cv2.IMREAD_COLOR)), 200_000)
    assert lines <= 200_000, f"over 200000 lines run for {len(crafted)} bytes"
    assert got == [False]
