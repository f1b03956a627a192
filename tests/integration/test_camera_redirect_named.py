"""A camera URL that redirects to another host, without a login in it: followed, and said once."""

from __future__ import annotations

import logging

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_https_login import PASSWORD, USER, Camera
from tests.integration.test_camera_source import HostileMjpeg, _jpeg, take


async def test_a_redirect_to_another_host_is_said_once_with_where_the_frames_come_from(caplog):
    """A camera's URL (here on 127.0.0.2) answered 302 to an MJPEG stream on another host (127.0.0.1): the
    frames were read from there without a word, the status and the log naming only the configured URL, so
    the verdicts were of another device's images. The redirect is still followed (no login to protect), and
    one WARNING names the other host; the reopens of the stream (it closes after two parts) say no more."""

    def two_parts(write, part):
        part(_jpeg(1))
        part(_jpeg(2))

    caplog.set_level(logging.INFO)
    other = HostileMjpeg(two_parts)
    hop = Camera([_jpeg(3)], host="127.0.0.2", redirect=other.url)
    url = hop.url.replace(f"{USER}:{PASSWORD}@", "")
    src = CameraSource("cam", CameraSettings(url=url, reconnect_initial_s=0.05, reconnect_max_s=0.1))
    try:
        await src.start()
        try:
            frames = await take(src, 5, 20)
        finally:
            await src.stop()
    finally:
        hop.stop()
        other.stop()
    assert len(frames) == 5 and len(other.opened) >= 3
    said = [r for r in caplog.records if "redirects to another host" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert other.url in said[0].getMessage() and url in said[0].getMessage()
