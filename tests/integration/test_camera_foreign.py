"""CameraSource against cameras nobody here made, over real sockets on 127.0.0.1: MJPEG streams whose parts
are not 8-bit colour JPEGs, cameras that answer each GET with one image (snapshot URLs), cameras that change
their resolution midway, that accept a connection and never answer, that send far faster than ``fps``."""

from __future__ import annotations

import asyncio
import logging

import cv2
import numpy as np

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_source import HostileMjpeg, take


def _mono12(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, (h, w), dtype=np.uint16)


async def _frames(url: str, n: int, timeout_s: float = 3.0, **settings) -> tuple[list, CameraSource]:
    src = CameraSource("cam", CameraSettings(url=url, **settings))
    try:
        await src.start()
        try:
            frames = await take(src, n, timeout_s)
        except TimeoutError:
            frames = []
    finally:
        await src.stop()
    return frames, src


async def test_an_mjpeg_streams_16_bit_parts_are_refused_by_name_or_read_by_pixel_bits(caplog):
    """A 12-bit mono camera streaming 16-bit PNG and TIFF parts: decoded as 8-bit colour they came out
    nearly black (4095 / 256 = 15) and were passed to the model as frames, pixel_bits or not. They are now
    read as a folder's files are: unsupported_frame naming pixel_bits, or with pixel_bits: 12 the top 8 of
    the 12 bits."""
    mono = [_mono12(1), _mono12(2)]
    parts = [cv2.imencode(".png", mono[0])[1].tobytes(), cv2.imencode(".tif", mono[1])[1].tobytes()]

    def serve(write, part):
        while True:
            for p in parts:
                part(p)

    cam = HostileMjpeg(serve)
    try:
        caplog.set_level(logging.WARNING)
        refused, src = await _frames(cam.url, 1, timeout_s=1.0, reconnect_initial_s=5)
        assert refused == []
        assert src.stats.errors_by_reason.get("unsupported_frame", 0) >= 2
        text = caplog.text
        assert "unsupported_frame" in text and "16-bit pixels" in text and "with pixel_bits" in text
        # the reopen says why no frame came: not a silent camera, parts it could not use
        assert "(10 failed reads); reopening (the last read: unsupported_frame)" in text
        frames, src = await _frames(cam.url, 4, pixel_bits=12)
    finally:
        cam.stop()
    assert len(frames) == 4 and not src.stats.errors_by_reason
    wanted = [(m >> 4).astype(np.uint8) for m in mono]
    for f in frames:
        assert f.image.shape == (48, 64, 3)
        assert any(np.array_equal(f.image[..., 0], w) for w in wanted)


async def test_a_camera_that_accepts_the_connection_but_never_answers_is_not_called_unreachable():
    """A hung camera (its web server's socket still accepting, nothing behind it) was reported as "cannot
    reach 127.0.0.1:port (timed out); is the camera on and the address right?", sending the line engineer to
    check cables and addresses that are fine. The message now says it connects and does not answer."""
    import socket

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://admin:s3cret@127.0.0.1:{hung.getsockname()[1]}/stream.mjpg"
        src = CameraSource("cam", CameraSettings(url=url, open_timeout_s=0.3, reconnect_initial_s=5))
        try:
            await src.start()
            for _ in range(100):
                if src.stats.errors_by_reason.get("open_failed"):
                    break
                await asyncio.sleep(0.02)
        finally:
            await src.stop()
    last = src.stats.last_error
    assert src.stats.errors_by_reason.get("open_failed") == 1
    assert "cannot reach" not in last and "accepts the connection but sends no answer within 0.3s" in last
    assert "s3cret" not in last and "admin:***@" in last
