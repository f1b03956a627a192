"""A folder camera of TIFFs that OpenCV decodes well but libtiff warns about (an alpha channel without its
ExtraSamples tag, as OpenCV writes BGRA TIFFs; a vendor's private tag) printed two OpenCV warning lines on the
agent's standard error at every frame: ten lines a second at 5 fps, unbounded in its journal. The camera turns
OpenCV's warnings off for every kind of source now, as it did for a video capture alone (``OPENCV_LOG_LEVEL``
set by the user is kept)."""

from __future__ import annotations

import cv2
import numpy as np

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_source import take


async def test_a_folder_cameras_tiffs_that_libtiff_warns_of_print_nothing_at_each_frame(
    tmp_path, capfd, opencv_warnings_on
):
    folder = tmp_path / "cam"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for k in range(3):
        img = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        cv2.imwrite(
            str(folder / f"{k}.tif"), cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
        )  # alpha opaque everywhere
    capfd.readouterr()
    src = CameraSource("cam", CameraSettings(url=str(folder), fps=50))
    await src.start()
    try:
        frames = await take(src, 3)
    finally:
        await src.stop()
    assert [f.image.shape for f in frames] == [(24, 32, 3)] * 3
    err = capfd.readouterr().err
    assert "TIFF_Warning" not in err and "WARN" not in err, err
