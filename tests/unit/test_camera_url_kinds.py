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


@pytest.mark.parametrize(
    "url,kind,ffmpeg",
    [
        ("RTSP://127.0.0.1:8554/cam", CameraKind.STREAM, True),
        ("Rtsps://127.0.0.1:8322/cam", CameraKind.STREAM, True),
        ("HTTP://127.0.0.1:8081/image.png", CameraKind.STREAM, False),
        ("USB:0", CameraKind.USB, True),
    ],
)
def test_a_url_scheme_in_upper_case_is_the_same_camera_as_in_lower_case(url, kind, ffmpeg):
    # RFC 3986: schemes are case-insensitive; FFmpeg compares its protocol names exactly, so the url it is
    # given is written with the scheme in lower case (the rest as it was: a path's or a stream name's case matters)
    cam = CameraSettings(url=url)
    assert cam.kind is kind
    assert cam._read_by_ffmpeg() is ffmpeg
    scheme, rest = url.split(":", 1)
    assert cam.url == f"{scheme.lower()}:{rest}"


def test_a_path_that_begins_like_a_scheme_stays_a_path_as_written():
    cam = CameraSettings(url="/data/RTSP:/cam.avi")
    assert cam.kind is CameraKind.PATH
    assert cam.url == "/data/RTSP:/cam.avi"
