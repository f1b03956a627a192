"""An MJPEG part that is a camera's text message, not an image: corrupt_frame quoting what it says."""

from __future__ import annotations

import logging

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_source import HostileMjpeg, _jpeg, take


async def test_a_part_that_is_the_cameras_error_text_is_counted_quoting_it_escaped(caplog):
    """A camera writing its error message into the stream as a part (an HTML page, "sensor busy") had it
    counted as corrupt_frame "not a PNG, JPEG, ... image (57 bytes)": what the camera said, the one clue to
    the fault, was never shown. The message now quotes the text, escaped (its line ends and a forged log
    line stay inside the quotes); the image parts around it are frames."""
    page = b"<html><body>500 Internal error: sensor busy</body></html>\r\nERROR forged line"

    def serve(write, part):
        while True:
            part(_jpeg(1))
            part(page)

    caplog.set_level(logging.WARNING)
    cam = HostileMjpeg(serve)
    src = CameraSource("cam", CameraSettings(url=cam.url))
    try:
        await src.start()
        try:
            frames = await take(src, 3, 20)
        finally:
            await src.stop()
    finally:
        cam.stop()
    assert len(frames) == 3 and src.stats.errors_by_reason.get("corrupt_frame", 0) >= 2
    said = [r.getMessage() for r in caplog.records if "corrupt_frame" in r.getMessage()]
    assert said and "it reads as text: '<html><body>500 Internal error: sensor busy</body></html>" in said[0]
    assert "\\r\\nERROR forged line'" in said[0] and "\n" not in said[0]
