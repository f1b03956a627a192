"""``pixel_bits`` and ``bayer`` on a camera OpenCV's FFmpeg reads (a video file, a USB device, an rtsp stream).

Both are applied to an image folder's files and an HTTP camera's images, where the camera reads the pixels
itself. FFmpeg decodes a video's frames to 8-bit colour first: a 16-bit Mono12 recording came out near black
with ``pixel_bits: 12`` set and nothing said, while the trainer's import of the same camera's PNG files with
``--pixel-bits 12`` stores them bright (one image read two ways). ``edge-agent validate`` (and the agent at start)
now says the setting does nothing there. The video is written here by OpenCV (FFV1, 16-bit grey) and read by a
real ``CameraSource``."""

from __future__ import annotations

import cv2
import numpy as np

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from edge_agent.config import parse_config
from tests.integration.test_camera_source import take


def _config(url: str, **camera) -> dict:
    return {"agent": {"id": "gw1"}, "sources": {"cam": {"type": "camera", "url": url, **camera}}}


async def test_pixel_bits_on_a_video_file_is_said_to_do_nothing_where_ffmpeg_reads_the_frames(tmp_path):
    mono12 = np.random.default_rng(3).integers(0, 4096, (48, 64), dtype=np.uint16)
    video = tmp_path / "mono12.mkv"
    out = cv2.VideoWriter(
        str(video),
        cv2.CAP_FFMPEG,
        cv2.VideoWriter_fourcc(*"FFV1"),
        10,
        (64, 48),
        [cv2.VIDEOWRITER_PROP_DEPTH, cv2.CV_16U, cv2.VIDEOWRITER_PROP_IS_COLOR, 0],
    )
    out.write(mono12)
    out.release()
    src = CameraSource("cam", CameraSettings(url=str(video), fps=100, pixel_bits=12))
    await src.start()
    try:
        (got,) = await take(src, 1, 10.0)
    finally:
        await src.stop()
    # what the setting would give (the top 8 of 12 bits) is not what FFmpeg gives: the top 8 of 16
    assert int(got.image.max()) <= 16 < int((mono12 >> 4).max())

    warned = parse_config(_config(str(video), pixel_bits=12), "line.yaml").warnings
    assert len(warned) == 1 and warned[0].startswith(
        f"line.yaml: sources.cam.pixel_bits: does nothing for '{video}': it applies to an image folder's files"
    ), warned
    # one 16-bit image given as the url is opened as a video of one frame (near black, pixel_bits or not, while
    # its folder as the url reads it bright), and so is a file of any other name (a device node too): said too
    one = tmp_path / "one.png"
    assert cv2.imwrite(str(one), mono12)
    video.rename(tmp_path / "mono12")
    for url in ("usb:0", "rtsp://127.0.0.1:8554/cam", str(one), str(tmp_path / "mono12")):
        (w,) = parse_config(_config(url, bayer="rggb"), "line.yaml").warnings
        assert w.startswith(f"line.yaml: sources.cam.bayer: does nothing for '{url}'"), w
    # where the camera reads the pixels itself, the settings apply: nothing said (a folder named as an image or a
    # video too: the camera opens it as the folder it is)
    (named := tmp_path / "shots.png").mkdir()
    for url in (str(tmp_path), str(named), "http://127.0.0.1:8081/image.png"):
        assert parse_config(_config(url, pixel_bits=12, bayer="rggb"), "line.yaml").warnings == []
