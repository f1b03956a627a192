"""A video file damaged in one frame, or cut short, read by a camera (OpenCV's FFmpeg reader, as a camera reads an
RTSP stream). FFmpeg conceals a damaged frame (its missing blocks filled in) and OpenCV hands it back as a good
one: it was judged by the model, and FFmpeg's own error lines went raw to the agent's standard error. A file that
ends early (damaged midway, or cut short) ended, or looped, without a word. Now the damaged frame is counted as
``corrupt_frame`` and skipped, FFmpeg prints nothing, and a pass that ends short of the frames the file declares is
``cut_short``, once per pass; the camera goes on."""

from __future__ import annotations

import functools
import http.server
import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from devices.camera import ffmpeg_log
from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_source import take

FRAMES = 12


def _levels_video(path) -> bytes:
    """A 32x24 MJPEG AVI of FRAMES frames, frame i grey at 20*i+10 with noise (told apart by its mean)."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    rng = np.random.default_rng(5)
    for i in range(FRAMES):
        out.write(np.clip(rng.normal(20 * i + 10, 6, (24, 32, 3)), 0, 255).astype(np.uint8))
    out.release()
    return path.read_bytes()


def _frame_chunks(data: bytes) -> list[int]:
    """Where each frame's chunk ('00dc', its size, its JPEG) starts in the AVI's movi list."""
    movi = data.find(b"movi")
    return [i for i in range(movi, len(data) - 4) if data[i : i + 4] == b"00dc"]


async def _read(src: CameraSource, n: int) -> list:
    """The camera's first ``n`` frames, then stopped."""
    await src.start()
    try:
        return await take(src, n)
    finally:
        await src.stop()


def _level(img: np.ndarray) -> int:
    return round((float(img.mean()) - 10) / 20)


@pytest.fixture(scope="module")
def hooked() -> None:
    if not ffmpeg_log.install():
        pytest.skip("FFmpeg's log callback cannot be installed with this OpenCV (said in the log)")


def _damaged_video(tmp_path) -> Path:
    """The levels video with 40 bytes of frame 4's JPEG data (after its scan header) overwritten."""
    data = bytearray(_levels_video(tmp_path / "whole.avi"))
    at = _frame_chunks(bytes(data))[4] + 8  # frame 4's JPEG
    sos = data.find(b"\xff\xda", at)
    data[sos + 14 : sos + 54] = np.random.default_rng(1).integers(0, 255, 40, dtype=np.uint8).tobytes()
    video = tmp_path / "damaged.avi"
    video.write_bytes(bytes(data))
    return video


async def test_a_frame_ffmpeg_conceals_is_counted_and_never_passed_on(tmp_path, capfd, caplog, hooked):
    video = _damaged_video(tmp_path)
    capfd.readouterr()
    src = CameraSource("line", CameraSettings(url=str(video), fps=200, loop=False))
    caplog.set_level(logging.WARNING, "devices.camera.capture")
    frames = await _read(src, FRAMES - 1)
    assert [_level(f.image) for f in frames] == [i for i in range(FRAMES) if i != 4]
    # and no cut_short: the file was read to its end
    assert src.stats.errors_by_reason == {"corrupt_frame": 1}
    said = [r.getMessage() for r in caplog.records if "corrupt_frame" in r.getMessage()]
    assert len(said) == 1 and "frame 5 is damaged" in said[0] and "mjpeg" in said[0], said
    err = capfd.readouterr().err
    assert "mjpeg" not in err and "error" not in err.lower(), err  # nothing of FFmpeg's raw


async def test_frames_predicted_from_a_damaged_one_are_skipped_until_the_next_key_frame(tmp_path, hooked):
    """MPEG-4 (OpenCV's 'FMP4': a key frame every 12): a P frame's damage is carried into the frames predicted from
    it, without an error of their own; they are skipped too, up to the next key frame, and the stream goes on."""
    if not hasattr(cv2, "CAP_PROP_FRAME_TYPE"):
        pytest.skip("this OpenCV does not say a frame's type")
    path = tmp_path / "line.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FMP4"), 10, (64, 48))
    rng = np.random.default_rng(5)
    base = rng.integers(0, 64, (48, 64, 3), dtype=np.uint8)
    for i in range(24):
        out.write(base + np.uint8(8 * i))
    out.release()
    data = bytearray(path.read_bytes())
    at = _frame_chunks(bytes(data))[3]  # frame 3, a P frame
    size = int.from_bytes(data[at + 4 : at + 8], "little")
    data[at + 8 + size // 3 : at + 8 + size // 3 + 12] = rng.integers(0, 255, 12, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    src = CameraSource("line", CameraSettings(url=str(path), fps=200, loop=False))
    frames = await _read(src, 24 - 9)
    assert [round((float(f.image.mean()) - 31.5) / 8) for f in frames] == [0, 1, 2, *range(12, 24)]
    assert src.stats.errors_by_reason == {"corrupt_frame": 9}  # frame 3, and 4-11 predicted from it


async def test_a_streams_frame_ffmpeg_conceals_is_skipped_too(tmp_path, caplog, hooked):
    """The same file served over HTTP as a video (not MJPEG parts): read by OpenCV's FFmpeg as a live stream, as
    an RTSP camera's is (its frames grabbed and retrieved on the reader thread)."""
    video = _damaged_video(tmp_path)
    files = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{video.name}"
    src = CameraSource("line", CameraSettings(url=url, fps=None, frozen_after_s=None, queue_max_items=64))
    caplog.set_level(logging.WARNING, "devices.camera.capture")
    try:
        frames = await _read(src, FRAMES - 1)
    finally:
        server.shutdown()
        server.server_close()
    assert [_level(f.image) for f in frames] == [i for i in range(FRAMES) if i != 4]
    said = [r.getMessage() for r in caplog.records if "corrupt_frame" in r.getMessage()]
    assert said and "frame 5 is damaged" in said[0], said


async def test_a_file_cut_short_is_said_at_each_pass_and_the_camera_goes_on(tmp_path, caplog, hooked):
    data = _levels_video(tmp_path / "whole.avi")
    chunks = _frame_chunks(bytes(data))
    video = tmp_path / "cut.avi"
    video.write_bytes(data[: chunks[7]])  # frames 0-6 whole, then nothing: its header declares FRAMES
    src = CameraSource("line", CameraSettings(url=str(video), fps=200, loop=True))
    caplog.set_level(logging.WARNING, "devices.camera.capture")
    frames = await _read(src, 7 * 2 + 1)  # two passes, and into the third
    assert [_level(f.image) for f in frames] == [*range(7), *range(7), 0]
    assert src.stats.errors_by_reason.get("cut_short", 0) >= 2, src.stats.errors_by_reason  # once a pass
    assert set(src.stats.errors_by_reason) == {"cut_short"}
    said = [r.getMessage() for r in caplog.records if "cut_short" in r.getMessage()]
    assert said and f"ended after 7 of the {FRAMES} frames its header declares" in said[0], said
    assert "replayed from its start" in said[0]


def test_without_the_callback_ffmpegs_log_is_set_quiet_and_the_reason_given(monkeypatch):
    """An OpenCV whose FFmpeg is linked in statically (no libavutil of its own to hook): FFmpeg's raw lines would
    reach the agent's standard error again; its log is set quiet for OpenCV's first open, and why is said."""
    for var in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_FFMPEG_DEBUG"):  # put back as they were after
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setattr(ffmpeg_log, "_libavutil", lambda: None)
    why = ffmpeg_log._install()
    assert "no libavutil of OpenCV's found" in why and "set quiet" in why
    assert ffmpeg_log.os.environ["OPENCV_FFMPEG_LOGLEVEL"] == "-8"
    monkeypatch.setenv("OPENCV_FFMPEG_DEBUG", "1")  # the user asks for FFmpeg's own log: left as asked
    assert "OPENCV_FFMPEG_DEBUG set" in ffmpeg_log._install()
