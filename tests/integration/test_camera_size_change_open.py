"""A video file or stream whose frames change size while OpenCV's FFmpeg reader has it open: OpenCV scales every
later frame to the size it opened with, and reports that size throughout, so a camera switched from 4:3 to 16:9
midway gave stretched frames at the old size, judged by the model, the frame-size and camera-shape checks blind to
it. FFmpeg says a new picture size in its log (``ffmpeg_log._NEW_PICTURE``): a stream is now reopened, to be read
at its own size, and a file's pass ends there; no stretched frame is passed on."""

from __future__ import annotations

import asyncio
import functools
import http.server
import logging
import re
import struct
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from devices.base import Backoff
from devices.camera import ffmpeg_log
from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_source import take
from tests.integration.test_camera_video_damage import _read, hooked  # noqa: F401 (a fixture)
from tests.support.waits import until

pytestmark = pytest.mark.usefixtures("hooked")  # FFmpeg's log read

CHANGE_AT, FRAMES = 4, 10
FIRST, THEN = (160, 120), (320, 180)
H264 = Path(__file__).parents[1] / "fixtures" / "video" / "size_change_160x120_to_320x180.h264"


def _level(img: np.ndarray) -> int:
    return round((float(img.mean()) - 40) / 20)


def _changing_video(
    path: Path, then=THEN, replaced=range(CHANGE_AT, FRAMES), params=(), grey: bool = False
) -> Path:
    """An MJPEG AVI of FRAMES frames, frame i grey at 20*i+40: 160x120 (noisy), but the ``replaced`` ones (from
    CHANGE_AT on) of size ``then`` (flat, encoded with ``params``; one-component JPEGs where ``grey``), each padded
    with a comment to its chunk's length so that the AVI's index still holds."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, FIRST)
    rng = np.random.default_rng(3)
    for i in range(FRAMES):
        out.write((20 * i + 40 + rng.integers(-30, 31, (FIRST[1], FIRST[0], 3))).astype(np.uint8))
    out.release()
    data = bytearray(path.read_bytes())
    movi = data.find(b"movi")
    chunks = [i for i in range(movi, len(data) - 4) if data[i : i + 4] == b"00dc"]
    for i in replaced:
        n = struct.unpack_from("<I", data, chunks[i] + 4)[0]
        flat = np.full((then[1], then[0]) if grey else (then[1], then[0], 3), 20 * i + 40, np.uint8)
        jpg = cv2.imencode(".jpg", flat, list(params))[1].tobytes()
        pad = n - len(jpg) - 4
        data[chunks[i] + 8 : chunks[i] + 8 + n] = (
            jpg[:2] + b"\xff\xfe" + struct.pack(">H", pad + 2) + bytes(pad) + jpg[2:]
        )
    path.write_bytes(bytes(data))
    return path


def _new_size_video(path: Path) -> Path:
    """The same camera once reopened: 320x180 frames of levels CHANGE_AT..FRAMES-1."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, THEN)
    for i in range(CHANGE_AT, FRAMES):
        out.write(np.full((THEN[1], THEN[0], 3), 20 * i + 40, np.uint8))
    out.release()
    return path


def _camera(videos: list[bytes]) -> type[http.server.BaseHTTPRequestHandler]:
    """A camera serving ``videos`` in turn, one to each of FFmpeg's requests, the last again after them (the
    camera's first look at the URL, to see whether it serves MJPEG parts, gets the first)."""
    served: list[int] = []

    class Camera(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            data = videos[min(len(served), len(videos) - 1)]
            if (self.headers.get("User-Agent") or "").startswith("Lavf"):  # not the camera's look at its type
                served.append(len(data))
            self.send_response(200)
            self.send_header("Content-Type", "video/x-msvideo")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    return Camera


async def _read_served(
    handler, path: str, n: int, reconnect_max_s=10.0, then=None, max_consecutive_failures=10
) -> tuple[CameraSource, list]:
    """The first ``n`` frames of a stream camera reading ``path`` from ``handler`` served over HTTP (a video, as
    OpenCV's FFmpeg reads an RTSP camera's), reopened at once when it asks; ``then(src)`` awaited before it stops."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{path}"
    src = CameraSource(
        "line",
        CameraSettings(
            url=url,
            fps=None,
            frozen_after_s=None,
            queue_max_items=64,
            reconnect_initial_s=0.05,
            reconnect_max_s=reconnect_max_s,
            max_consecutive_failures=max_consecutive_failures,
        ),
    )
    try:
        if then is None:
            return src, await _read(src, n)
        await src.start()
        try:
            frames = await take(src, n)
            await then(src)
        finally:
            await src.stop()
        return src, frames
    finally:
        server.shutdown()
        server.server_close()


async def _reopened_4_more_times(frames: list, src: CameraSource) -> None:
    """The frames ``src`` passes on (into ``frames``) while it is reopened 4 more times for a change of size."""

    async def collect() -> None:
        async for f in src.items():
            frames.append(f)

    task = asyncio.create_task(collect())
    try:
        await until(lambda: src.stats.errors_by_reason.get("frame_size_changed", 0) >= 2 * 5, 30, "reopens")
    finally:
        task.cancel()


@pytest.mark.parametrize("grey", [False, True], ids=["colour", "grey"])
async def test_a_video_file_whose_frames_change_size_ends_its_pass_there_not_stretched(
    tmp_path, caplog, grey
):
    """Grey JPEGs after colour ones (a camera switched to monochrome and to another size): swscale says nothing of a
    grey picture, and the 320x180 grey frames were passed on stretched to 160x120, never counted. The decoder's
    own size, read where it chooses the new picture's format, says it."""
    video = _changing_video(tmp_path / "change.avi", grey=grey)
    src = CameraSource("line", CameraSettings(url=str(video), fps=100, frozen_after_s=None, loop=True))
    caplog.set_level(logging.WARNING, "devices.camera.capture")
    frames = await _read(src, 2 * CHANGE_AT)
    # each pass: the frames at the size it opened with, then replayed; the 320x180 ones never scaled to 160x120
    assert [(_level(f.image), f.image.shape[:2]) for f in frames] == 2 * [
        (i, (120, 160)) for i in range(CHANGE_AT)
    ]
    said = [r.getMessage() for r in caplog.records if "frame_size_changed" in r.getMessage()]
    assert said and f"frames changed size at frame {CHANGE_AT + 1} while open" in said[0], said
    assert "(160x120), stretched: the rest of this pass is skipped, replayed from its start" in said[0], said
    assert "cut_short" not in src.stats.errors_by_reason  # it ended for the change, said as such


async def test_one_frame_of_another_size_in_a_video_file_is_skipped_the_rest_read(tmp_path):
    """One frame of another size (as one damaged frame whose JPEG header declares another height, which FFmpeg
    decodes without an error) ended the file's pass there, its later frames never read: FFmpeg's line again within
    the next frames (its decoder back at the file's size) skips only the frames between."""
    video = _changing_video(tmp_path / "one_odd.avi", replaced=[CHANGE_AT])
    seen, counted = await _read_file(video)
    assert seen == [(i, (120, 160)) for i in range(FRAMES) if i != CHANGE_AT], seen
    assert counted == {"corrupt_frame": 1}


async def test_a_stream_whose_frames_change_size_is_reopened_and_read_at_its_new_size(tmp_path, caplog):
    """Served over HTTP as a video (OpenCV's FFmpeg reads it as it reads an RTSP camera): the first request gets
    the stream that changes size, later ones (the camera reopened) the new size only (FFmpeg's requests counted:
    the camera first asks for the URL itself, to see whether it serves MJPEG parts)."""
    changing = _changing_video(tmp_path / "change.avi").read_bytes()
    after = _new_size_video(tmp_path / "after.avi").read_bytes()
    caplog.set_level(logging.WARNING, "devices.camera.capture")
    src, frames = await _read_served(_camera([changing, after]), "line.avi", CHANGE_AT + 2)
    seen = [(_level(f.image), f.image.shape[:2]) for f in frames]
    assert seen == [(i, (120, 160)) for i in range(CHANGE_AT)] + [(i, (180, 320)) for i in (4, 5)], seen
    said = [r.getMessage() for r in caplog.records if "frame_size_changed" in r.getMessage()]
    assert said and "stretched: reopening, to read them at their own size" in said[0], said
    # and once reopened, the change of size named as for a camera reopened at another resolution (one line a burst)
    # (what follows the end of the second serving, read before the camera stopped, is the reopen's, not asserted)
    assert src.stats.errors_by_reason["frame_size_changed"] == 2


@pytest.mark.parametrize("sizes_said", [True, False], ids=["sizes_said", "sizes_unsaid"])
async def test_a_stream_changing_its_chroma_subsampling_alone_is_read_on(
    tmp_path, caplog, monkeypatch, sizes_said
):
    """FFmpeg's line for a new picture comes for a new pixel format too: an MJPEG camera whose JPEGs alternate 4:2:0
    and 4:4:4 at one size was reopened at every frame. Where swscale's context says the frame's own size (FFmpeg 8
    and later), the line at the size opened with is read on, never reopened for. Where it does not, such a camera,
    opened again at the size it had twice in a row, the line again in its first frames each time, is read on, said
    once (its changes of size while open are then not told)."""
    if not sizes_said:  # (nor the decoder's: a line whose context says no size)
        monkeypatch.setattr(ffmpeg_log, "_sws_public", [False])
        monkeypatch.setattr(ffmpeg_log, "_opt_image_size", [])
    elif not ffmpeg_log._sws_public[0]:
        pytest.skip("this FFmpeg's swscale keeps its context's sizes to itself (before FFmpeg 8)")
    video = _changing_video(
        tmp_path / "alternating.avi",
        then=FIRST,
        replaced=range(1, FRAMES, 2),
        params=(cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
    )
    files = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    caplog.set_level(logging.WARNING, "devices.camera.capture")
    if sizes_said:
        src, frames = await _read_served(files, video.name, FRAMES)
        assert [_level(f.image) for f in frames] == list(range(FRAMES))
        assert "frame_size_changed" not in src.stats.errors_by_reason
        assert "size_changes_unseen" not in src.notices.status()  # nothing switched off
        return
    src, frames = await _read_served(
        files, video.name, 2 + FRAMES
    )  # frame 0 twice, then the third serving whole
    assert [_level(f.image) for f in frames] == [0, 0, *range(FRAMES)], [_level(f.image) for f in frames]
    assert src.stats.errors_by_reason["frame_size_changed"] == 2
    said = [
        r.getMessage() for r in caplog.records if "opened again at 160x120, the size it had" in r.getMessage()
    ]
    assert len(said) == 1 and "came for a change of pixel format (chroma subsampling), not of size" in said[0]
    assert src.notices.status()["size_changes_unseen"]["count"] == 1  # on /status, not a log line alone


@pytest.mark.parametrize("max_consecutive_failures", [10, 1])
async def test_a_camera_serving_its_old_size_at_each_connect_never_has_its_new_size_stretched(
    tmp_path, max_consecutive_failures
):
    """A camera switched from 160x120 to 320x180 that serves its old size's last frame first at every connect (or
    one alternating sizes every few frames) looked like one alternating chroma subsampling: after two reopens at the
    old size, FFmpeg's line again at once, size changes were no longer looked for and every later 320x180 frame was
    passed on stretched to 160x120. Swscale's context says the frame's size: each is reopened for, none stretched.
    The old size's frame skipped at a connect is no failed read: with ``max_consecutive_failures: 1`` it was one, the
    camera reopened at it (``stream_lost``), and the next session, not one after a change of size, passed it on."""
    if not ffmpeg_log._sws_public[0]:
        pytest.skip("this FFmpeg's swscale keeps its context's sizes to itself (before FFmpeg 8)")
    first = _changing_video(tmp_path / "first.avi").read_bytes()
    stale = _changing_video(tmp_path / "stale.avi", replaced=range(1, FRAMES)).read_bytes()
    frames: list = []
    sessions = functools.partial(_reopened_4_more_times, frames)
    src, first_frames = await _read_served(
        _camera([first, stale]),
        "line.avi",
        CHANGE_AT,
        reconnect_max_s=0.2,
        then=sessions,
        max_consecutive_failures=max_consecutive_failures,
    )
    seen = [(_level(f.image), f.image.shape[:2]) for f in [*first_frames, *frames]]
    # each later session: its stale 160x120 frame skipped (judged once a session, a part seen again, before), then
    # reopened at the 320x180 ones (never passed stretched)
    assert seen == [(i, (120, 160)) for i in range(CHANGE_AT)], seen
    assert "size_changes_unseen" not in src.notices.status()
    assert "stream_lost" not in src.stats.errors_by_reason
    # it passes no frame from then on: said on /status (its stale frame, judged at each connect, was named frozen)
    assert "320x180 are never read" in src.notices.status()["old_size_at_connect"]["message"]


@pytest.mark.parametrize("change_at", [2, 7])
async def test_a_stream_reopened_at_the_size_it_had_still_has_a_later_change_of_size_seen(
    tmp_path, monkeypatch, change_at
):
    """A stream reopened for FFmpeg's line and opened again at the size it had (the line came for one change of
    chroma subsampling, or the camera served its old size once more) was taken for a camera changing pixel format:
    such lines no longer reopened it, and a later change of size was passed on stretched, counted nowhere. Only the
    line again in the first frames after two such reopens in a row (a camera alternating formats) stops the
    reopening now: a change of size within the first frames after one (frame 3) is reopened for, as a later one.
    (Where swscale's context says the frame's size, a change of chroma is never reopened for: as before FFmpeg 8.)"""
    monkeypatch.setattr(ffmpeg_log, "_sws_public", [False])
    monkeypatch.setattr(ffmpeg_log, "_opt_image_size", [])  # nor the decoder's
    once_444 = _changing_video(
        tmp_path / "once_444.avi",
        then=FIRST,
        replaced=[CHANGE_AT],
        params=(cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
    ).read_bytes()
    later = _changing_video(tmp_path / "later.avi", replaced=range(change_at, FRAMES)).read_bytes()
    after = _new_size_video(tmp_path / "after.avi").read_bytes()
    src, frames = await _read_served(_camera([once_444, later, after]), "line.avi", 4 + change_at + 6)
    seen = [(_level(f.image), f.image.shape[:2]) for f in frames]
    # reopened at the 4:4:4 frame, at 160x120 again; then at the change of size: read at 320x180, not stretched
    assert seen == [(i, (120, 160)) for i in [*range(4), *range(change_at)]] + [
        (i, (180, 320)) for i in range(4, 10)
    ], seen


async def test_a_camera_flapping_between_sizes_is_reopened_ever_less_often(tmp_path, monkeypatch):
    """Each reopen for a change of size had a good frame, which restarted the backoff: a camera flapping between
    two sizes was reopened at reconnect_initial_s for ever (2.8 opens a second at the defaults, measured). A stream
    opened again for a change of size restarts the backoff only once it has given frames reconnect_max_s long."""
    waits: list[int] = []  # the backoff's pauses taken since its last restart, at each reopen
    next_delay = Backoff.next_delay
    monkeypatch.setattr(Backoff, "next_delay", lambda b: (waits.append(b.attempts), next_delay(b))[1])
    flapping = _changing_video(tmp_path / "flapping.avi", replaced=range(8, FRAMES)).read_bytes()
    src, frames = await _read_served(_camera([flapping]), "line.avi", 4 * 8 + 1, reconnect_max_s=5.0)
    # each session: levels 0..7 at 160x120, then the change of size (at frame 9: no change of format)
    assert {(_level(f.image), f.image.shape[:2]) for f in frames} == {(i, (120, 160)) for i in range(8)}
    assert waits[:4] == [0, 1, 2, 3], waits  # [0, 0, 0, 0] before
    assert src.stats.errors_by_reason["frame_size_changed"] >= 4
    assert "old_size_at_connect" not in src.notices.status()  # its frames of each size are read


async def test_an_h264_stream_whose_frames_change_size_ends_its_pass_there_not_stretched(caplog):
    """H.264, what most RTSP cameras send: a stream of 8 frames at 160x120 then 8 at 320x180, a new sequence
    parameter set at the change (tests/fixtures/video: made by GStreamer's x264enc; no H.264 encoder in the
    project's own stack). FFmpeg's decoder logs its reinit at the change; OpenCV gave all 16 frames at 160x120."""
    video = Path(__file__).parents[1] / "fixtures" / "video" / "size_change_160x120_to_320x180.h264"
    src = CameraSource("line", CameraSettings(url=str(video), fps=100, frozen_after_s=None))
    caplog.set_level(logging.WARNING, "devices.camera.capture")
    await src.start()
    try:
        frames = [f async for f in src.items()]  # a file not looped: it ends
    finally:
        await src.stop()
    # the frames before the change (the decoder may drop the last one or two it held at the change), none after
    assert 5 <= len(frames) <= 8 and {f.image.shape[:2] for f in frames} == {(120, 160)}, len(frames)
    assert src.stats.errors_by_reason == {"frame_size_changed": 1}
    said = [r.getMessage() for r in caplog.records if "frame_size_changed" in r.getMessage()]
    assert said and "(160x120), stretched: the rest of this pass is skipped, never read" in said[0], said


def _h264_old_size_first() -> bytes:
    """The H.264 fixture's first frame at 160x120 (its access unit: delimiter, parameter sets, key frame), then its
    320x180 half: a camera switched to 320x180 that serves its old size's last frame first at each connect."""
    data = H264.read_bytes()
    units = [m.start() for m in re.finditer(b"\x00\x00\x00\x01\x09", data)]  # access unit delimiters: 8 + 8
    return data[: units[1]] + data[units[8] :]


async def test_an_h264_camera_serving_its_old_size_at_each_connect_never_has_its_new_size_stretched():
    """H.264's line for a new picture says no size (its values are in the ``va_list``): such a camera, reopened
    twice at its old size with the line at once, was taken for one changing pixel format; size changes were no
    longer looked for and every later 320x180 frame was passed on stretched to 160x120. The decoder's own size,
    read from its context (not its coded size, padded to 16: 320x192), tells it: each connect is reopened for,
    none stretched, and said on /status."""
    frames: list = []
    sessions = functools.partial(_reopened_4_more_times, frames)
    src, first_frames = await _read_served(
        _camera([H264.read_bytes(), _h264_old_size_first()]),
        "line.h264",
        4,
        reconnect_max_s=0.2,
        then=sessions,
    )
    assert {f.image.shape[:2] for f in [*first_frames, *frames]} == {(120, 160)}
    assert len(frames) <= 4, len(frames)  # the first session's last frames before its change, none after
    assert "size_changes_unseen" not in src.notices.status()
    assert "320x180 are never read" in src.notices.status()["old_size_at_connect"]["message"]


async def test_a_turned_video_file_is_read_whole_at_its_turned_size(tmp_path):
    """A phone's video stored at 160x120 with a quarter turn in its track header: OpenCV opens it at 120x160 and
    turns each frame; its decoder says the stored size, which is no change of size."""
    out = cv2.VideoWriter(str(tmp_path / "turned.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, FIRST)
    for i in range(FRAMES):
        out.write(np.full((FIRST[1], FIRST[0], 3), 20 * i + 40, np.uint8))
    out.release()
    data = bytearray((tmp_path / "turned.mp4").read_bytes())
    at = (
        data.find(b"tkhd") + 4 + 4 + 20 + 8 + 8
    )  # version 0: its times, track, duration; layer, volume: the matrix
    struct.pack_into(">9i", data, at, 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    (tmp_path / "turned.mp4").write_bytes(bytes(data))
    await _read_whole(tmp_path / "turned.mp4", (160, 120))


async def _read_file(video: Path) -> tuple[list, dict]:
    """The file (not looped) read to its end by a camera: each frame's (level, shape), and what it counted."""
    src = CameraSource("line", CameraSettings(url=str(video), fps=100, frozen_after_s=None))
    await src.start()
    try:
        frames = [f async for f in src.items()]  # a file not looped: it ends
    finally:
        await src.stop()
    return [(_level(f.image), f.image.shape[:2]) for f in frames], dict(src.stats.errors_by_reason)


async def _read_whole(video: Path, shape: tuple[int, int]) -> None:
    """The file (not looped) read to its end: its FRAMES frames in order, each of ``shape``, nothing counted."""
    seen, counted = await _read_file(video)
    assert seen == [(i, shape) for i in range(FRAMES)]
    assert counted == {}


def _two_stream_avi(path: Path) -> Path:
    """An AVI of FRAMES frames whose first video stream (the one OpenCV reads) is uncompressed 160x120, frame i at
    20*i+40 (FFmpeg's raw decoder chooses no picture format, so logs no size), and whose second is MJPEG 320x180
    (a second camera's, a cover picture's): FFmpeg's stream probe, as the capture opens, decodes that one too."""

    def chunk(fcc: bytes, data: bytes) -> bytes:
        return fcc + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)

    def strl(codec: bytes, w: int, h: int, size: int) -> bytes:  # h < 0: rows top-down
        rate = (1, 10, 0, FRAMES, size, -1, 0)  # scale, rate, start, length, buffer, quality, sample size
        strh = b"vids" + codec + struct.pack("<IHHIIIIIIiI4h", 0, 0, 0, 0, *rate, 0, 0, w, -h)
        strf = struct.pack("<IiiHH4sIiiII", 40, w, h, 1, 24, codec, size, 0, 0, 0, 0)
        return chunk(b"LIST", b"strl" + chunk(b"strh", strh) + chunk(b"strf", strf))

    movi, index = b"", b""
    for i in range(FRAMES):
        raw = np.full((FIRST[1], FIRST[0], 3), 20 * i + 40, np.uint8).tobytes()
        jpg = cv2.imencode(".jpg", np.full((THEN[1], THEN[0], 3), 200, np.uint8))[1].tobytes()
        for fcc, data in ((b"00db", raw), (b"01dc", jpg)):
            index += fcc + struct.pack("<III", 0x10, 4 + len(movi), len(data))  # a key frame, where, how long
            movi += chunk(fcc, data)
    avih = struct.pack("<14I", 100000, 0, 0, 0x10, FRAMES, 0, 2, 0, *FIRST, 0, 0, 0, 0)
    hdrl = chunk(b"avih", avih) + strl(bytes(4), FIRST[0], -FIRST[1], len(raw)) + strl(b"MJPG", *THEN, 0)
    body = b"AVI " + chunk(b"LIST", b"hdrl" + hdrl) + chunk(b"LIST", b"movi" + movi) + chunk(b"idx1", index)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


async def test_a_video_file_with_a_second_video_stream_of_another_size_is_read_whole(tmp_path):
    """The probe's decoding of the second stream as the capture opened left its size as the decoder's: the reader's
    own decoder, which says none, was then taken for one already at another size at the first frame, and the
    healthy file's pass ended at frame 2 (frame_size_changed). Only the reading decoder's own lines count."""
    await _read_whole(_two_stream_avi(tmp_path / "two.avi"), (120, 160))


def test_swscale_contexts_sizes_are_read_where_its_layout_is_public_and_nothing_else_is(monkeypatch):
    """The sizes read from the context that logs swscale's line (``ffmpeg_log._scaled_sizes``) rest on libswscale's
    public ``SwsContext`` layout: checked on the FFmpeg OpenCV ships here, with a context made by libswscale itself;
    another FFmpeg object, or a layout not known public, gives None (the timing rule then stands)."""
    import ctypes

    if not ffmpeg_log._sws_public[0]:
        pytest.skip("this FFmpeg's swscale keeps its context's sizes to itself (before FFmpeg 8)")
    sws = ctypes.CDLL(ffmpeg_log._ffmpeg_library("libswscale"))
    sws.sws_getContext.restype = ctypes.c_void_p
    sws.sws_getContext.argtypes = [ctypes.c_int] * 7 + [ctypes.c_void_p] * 3
    sws.sws_freeContext.argtypes = [ctypes.c_void_p]
    fmt = ctypes.CDLL(ffmpeg_log._ffmpeg_library("libavformat"))
    fmt.avformat_alloc_context.restype = ctypes.c_void_p
    fmt.avformat_free_context.argtypes = [ctypes.c_void_p]
    ctx = sws.sws_getContext(161, 121, 0, 321, 181, 3, 4, None, None, None)  # yuv420p -> bgr24, bicubic
    other = fmt.avformat_alloc_context()
    try:
        assert ffmpeg_log._scaled_sizes(ctx) == ((161, 121), (321, 181))
        assert ffmpeg_log._scaled_sizes(other) is None  # (an AVFormatContext: not swscale's)
        assert ffmpeg_log._scaled_sizes(None) is None
        monkeypatch.setattr(ffmpeg_log, "_sws_public", [False])
        assert ffmpeg_log._scaled_sizes(ctx) is None
    finally:
        sws.sws_freeContext(ctx)
        fmt.avformat_free_context(other)


def test_swscale_contexts_are_read_only_for_the_libswscale_majors_whose_layout_was_checked(monkeypatch):
    """A major bump of libswscale may change its public ``SwsContext`` layout (FFmpeg's ABI rule): only the majors
    whose layout was checked (9 and 10) are read; an 11 (or an 8, before it was public) keeps the timing rule."""
    import ctypes
    from types import SimpleNamespace

    monkeypatch.setattr(ffmpeg_log, "_ffmpeg_library", lambda name: "libswscale.so")
    said = {}
    for major in (8, 9, 10, 11, 12):
        version = (major << 16) | (1 << 8) | 100
        monkeypatch.setattr(
            ctypes, "CDLL", lambda path, v=version: SimpleNamespace(swscale_version=lambda: v)
        )
        said[major] = ffmpeg_log._swscale_public()
    assert said == {8: False, 9: True, 10: True, 11: False, 12: False}
