"""A drop folder's file names come from whoever writes into it (a camera's FTP upload, an SMB share, a USB stick):
quoted raw in the camera's log lines, a name holding a line feed forged a line of the agent's log (``... cut_short:
drop/evil`` then ``2026-12-07 01:00:00,000 CRITICAL edge_agent.agent: FORGED.png: ...``) and an ANSI escape
coloured the terminal of whoever read it. Each character that is not printable is written as its escape now
(``\\n``, ``\\x1b``), in the log and on ``/status``, so that a line says what it is."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_drop_folder_by_content import connected
from tests.integration.test_camera_source import take


async def test_a_drop_folder_file_name_with_a_line_feed_or_an_escape_cannot_forge_a_log_line(
    tmp_path, caplog
):
    drop = tmp_path / "drop"
    drop.mkdir()
    forged = "evil\n2026-12-07 01:00:00,000 CRITICAL edge_agent.agent: FORGED\x1b[31m.png"
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=50, keep_files=None))
    caplog.set_level(logging.WARNING, logger="devices.camera.capture")
    await src.start()
    try:
        await connected(src)
        (drop / forged).mkdir()  # named as an image, not a file: corrupt_frame at once, naming it
        (drop / "x\r\x1b[2Kno extension").write_bytes(b"\x00" * 16)  # no image by its bytes: file_skipped
        (drop / "whole.png").write_bytes(
            cv2.imencode(".png", np.full((20, 24, 3), 90, np.uint8))[1].tobytes()
        )
        assert (
            len(await take(src, 1)) == 1
        )  # after the two others were judged (a pass reads in written order)
    finally:
        await src.stop()
    said = [r.getMessage() for r in caplog.records]
    assert any("FORGED" in m for m in said) and any("no extension" in m for m in said), said
    for m in said:
        assert m.isprintable(), repr(m)  # one line, no terminal control: the name's characters escaped
    assert any("evil\\n2026-12-07" in m and "FORGED\\x1b[31m.png" in m for m in said), said
    assert "FORGED" in (src.stats.last_error or "") and src.stats.last_error.isprintable()  # /status's text
