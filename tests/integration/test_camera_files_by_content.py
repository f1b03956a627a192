"""The agent's folder camera on files named otherwise than their kind (a line camera's tool writing 'img_0001' or
'.raw'): it reads images by their names, and its refusal of a folder that holds none by name says which files are
images by their bytes (``protocols.image_header.image_kind``, the import's test too) and the extension to give each,
instead of only listing the extensions it reads."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings


async def test_a_folder_of_images_without_their_extensions_is_refused_naming_them_and_their_kinds(tmp_path):
    """Before, the refusal was "holds no images (.bmp, .jfif, ...)" for a folder of PGM and PNG frames without
    extensions: a user looking at a folder of images read it as a wrong path."""
    rng = np.random.default_rng(9)
    (tmp_path / "img_0001").write_bytes(b"P5\n# line camera\n12 10\n255\n" + rng.bytes(120))
    (tmp_path / "img_0002.raw").write_bytes(
        cv2.imencode(".ppm", rng.integers(0, 256, (10, 12, 3), np.uint8))[1]
    )
    (tmp_path / "img_0003").write_bytes(cv2.imencode(".png", rng.integers(0, 256, (10, 12), np.uint8))[1])
    (tmp_path / "notes.txt").write_bytes(b"P1 is the first measuring point\n")
    src = CameraSource("cam", CameraSettings(url=str(tmp_path), fps=50, reconnect_initial_s=5))
    try:
        await src.start()
        for _ in range(1500):  # the first refusal is counted at once; 30 s at most on a loaded machine
            if src.stats.last_error:
                break
            await asyncio.sleep(0.02)
    finally:
        await src.stop()
    last = src.stats.last_error
    assert f"folder {tmp_path} holds no images (" in last, last
    assert (
        "; 3 of its files are images by content but not by name: 'img_0001' (PNM: .pgm), 'img_0002.raw' (PNM: .ppm), "
        "'img_0003' (PNG: .png); give them their extensions to read them"
    ) in last, last
    assert "notes.txt" not in last


async def test_a_replayed_folder_copied_from_a_mac_skips_its_hidden_files_as_the_drop_folder_does(tmp_path):
    """A folder of recorded frames copied from a Mac to a share or a USB drive holds a `._` AppleDouble file beside
    every image (`._part1.png`: the Mac's metadata, no image) and a `.DS_Store`. A drop folder (`watch: true`),
    `dataset import` and `model-packager build --input-images` skip hidden files; the replayed folder read
    `._part1.png` as a frame, counted a corrupt_frame for each on every pass, and a hidden image (`.part0.png`, a
    tool's temporary) as a part. Hidden files are left alone now; a folder holding only hidden images holds none."""
    from tests.integration.test_camera_foreign import _frames

    rng = np.random.default_rng(4)
    part = rng.integers(0, 256, (10, 12, 3), np.uint8)
    assert cv2.imwrite(str(tmp_path / "part1.png"), part)
    (tmp_path / "._part1.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64))
    assert cv2.imwrite(str(tmp_path / ".part0.png"), np.zeros((10, 12, 3), np.uint8))
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    frames, src = await _frames(str(tmp_path), 3, fps=200, loop=True)
    assert len(frames) == 3 and all(np.array_equal(f.image, part) for f in frames)
    assert src.stats.errors_by_reason == {}, src.stats.errors_by_reason

    (tmp_path / "part1.png").unlink()
    frames, src = await _frames(str(tmp_path), 1, timeout_s=1.0, fps=200, reconnect_initial_s=5)
    assert frames == []
    assert f"folder {tmp_path} holds no images (" in src.stats.last_error, src.stats.last_error
