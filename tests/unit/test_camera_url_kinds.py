"""A camera's url decides its kind and whether OpenCV's FFmpeg decodes its frames, from one table of schemes
(``devices/camera/settings.py``): a stream scheme added for one and not the other would read a camera as a path, or
warn that ``pixel_bits`` does nothing where it applies."""

from __future__ import annotations

import pytest

from devices.camera.settings import CameraKind, CameraSettings


@pytest.mark.parametrize(
    "url,ffmpeg",
    [
        ("rtsp://127.0.0.1:8554/cam", True),
        ("rtsps://127.0.0.1:8322/cam", True),
        ("rtmp://127.0.0.1/live", True),
        ("udp://127.0.0.1:5000", True),
        ("tcp://127.0.0.1:5000", True),
        ("http://127.0.0.1:8081/image.png", False),
        ("https://127.0.0.1:8443/mjpeg", False),
    ],
)
def test_every_stream_scheme_is_a_stream_and_ffmpegs_are_decoded_by_it(url, ffmpeg):
    cam = CameraSettings(url=url)
    assert cam.kind is CameraKind.STREAM
    assert cam._read_by_ffmpeg() is ffmpeg
