"""A video file damaged in one frame, or cut short, read by a camera (OpenCV's FFmpeg reader, as a camera reads an
RTSP stream). FFmpeg conceals a damaged frame (its missing blocks filled in) and OpenCV hands it back as a good
one: it was judged by the model, and FFmpeg's own error lines went raw to the agent's standard error. A file that
ends early (damaged midway, or cut short) ended, or looped, without a word. Now the damaged frame is counted as
``corrupt_frame`` and skipped, FFmpeg prints nothing, and a pass that ends short of the frames the file declares is
``cut_short``, once per pass; the camera goes on."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import http.server
import logging
import os
import platform
import re
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from devices.camera import ffmpeg_log
from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_source import take

FRAMES = 12
# a file camera goes on at ``fps`` whatever its consumer takes, and its hand-over queue (default 4) drops the oldest
# frame when full (docs/agent.md): a test held up by a loaded machine lost a frame there. Every frame these tests
# read fits (a looped file's for 5 s at 200 fps), so that a lost one is the camera's, not the hand-over's.
HELD = 1000


def _levels_video(path, fps: float = 10) -> bytes:
    """A 32x24 MJPEG AVI of FRAMES frames, frame i grey at 20*i+10 with noise (told apart by its mean)."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (32, 24))
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
    src = CameraSource("line", CameraSettings(url=str(video), fps=200, loop=False, queue_max_items=HELD))
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
    path = _mpeg4_damaged_at_3(tmp_path, 24, 8)
    src = CameraSource("line", CameraSettings(url=str(path), fps=200, loop=False, queue_max_items=HELD))
    frames = await _read(src, 24 - 9)
    assert [round((float(f.image.mean()) - 31.5) / 8) for f in frames] == [0, 1, 2, *range(12, 24)]
    assert src.stats.errors_by_reason == {"corrupt_frame": 9}  # frame 3, and 4-11 predicted from it


def _mpeg4_damaged_at_3(tmp_path, n: int, step: int, gop: int | None = None) -> Path:
    """An MPEG-4 AVI (OpenCV's 'FMP4', 10 fps; a key frame every 12, or every ``gop``) of ``n`` frames, frame i
    a noise pattern brightened by ``step`` * i, its P frame 3 damaged."""
    if not hasattr(cv2, "CAP_PROP_FRAME_TYPE"):
        pytest.skip("this OpenCV does not say a frame's type")
    path = tmp_path / "line.avi"
    if gop is not None and not hasattr(cv2, "VIDEOWRITER_PROP_GOP_SIZE"):
        pytest.skip("this OpenCV's writer takes no GOP size")
    params = [] if gop is None else [cv2.VIDEOWRITER_PROP_GOP_SIZE, gop]
    out = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FMP4"), 10, (64, 48), params)
    rng = np.random.default_rng(5)
    base = rng.integers(0, 64, (48, 64, 3), dtype=np.uint8)
    for i in range(n):
        out.write(base + np.uint8(step * i))
    out.release()
    data = bytearray(path.read_bytes())
    at = _frame_chunks(bytes(data))[3]  # frame 3, a P frame
    size = int.from_bytes(data[at + 4 : at + 8], "little")
    data[at + 8 + size // 3 : at + 8 + size // 3 + 12] = rng.integers(0, 255, 12, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


async def test_a_stream_without_key_frames_is_passed_on_again_after_a_bounded_skip(tmp_path, hooked, caplog):
    """A camera refreshing its picture by intra refresh sends no key frame after its first: the frames after a
    damaged one were skipped for as long as it sent (the camera delivered nothing, and was never reopened). The
    skip ends after 5 s of frames (50 at 10 fps) when no key frame comes, and that is said."""
    path = _mpeg4_damaged_at_3(tmp_path, 64, 3, gop=1000)
    src = CameraSource("line", CameraSettings(url=str(path), fps=200, loop=False, queue_max_items=HELD))
    caplog.set_level(logging.WARNING, "devices.camera.capture")
    frames = await _read(src, 3 + 10)  # frames 0-2, then 54-63 (still carrying some of the damage)
    levels = [round((float(f.image.mean()) - float(frames[0].image.mean())) / 3) for f in frames]
    assert levels[:3] == [0, 1, 2] and min(levels[3:]) > 40, levels
    assert src.stats.errors_by_reason == {"corrupt_frame": 51}  # frame 3, and the 50 after it
    said = [r.getMessage() for r in caplog.records if "no key frame" in r.getMessage()]
    assert said and "frames are passed on again from frame 55" in said[0], said


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


async def test_a_streams_key_frame_interval_learned_before_a_reopen_bounds_the_skip_after_it(
    tmp_path, hooked
):
    """A stream of a key frame every 8 s (80 frames at 10 fps; 5 s is the bound when no interval is known): the
    interval it showed was forgotten at each reopen, so after one the frames predicted from a damaged frame were
    passed on again from 5 s, 3 s before the next key frame. Served twice over HTTP (the camera reopens when the
    first serving ends): the second pass skips up to that key frame."""
    path = _mpeg4_damaged_at_3(tmp_path, 96, 2, gop=80)  # key frames 0 and 80; P frame 3 damaged
    files = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
    src = CameraSource("line", CameraSettings(url=url, fps=None, frozen_after_s=None, queue_max_items=256))
    try:
        frames = await _read(src, 45 + 19)
    finally:
        server.shutdown()
        server.server_close()
    levels = [round((float(f.image.mean()) - float(frames[0].image.mean())) / 2) for f in frames]
    # the first pass: 4-53 skipped (5 s), 54-79 passed though predicted from the damage (their means a little off),
    # then the key frame 80 on; the second, skipped up to the key frame
    first, second = levels[:45], levels[45:]
    assert first[:3] == [0, 1, 2] and first[3] < 60 and first[-16:] == list(range(80, 96)), str(levels)
    assert second == [0, 1, 2, *range(80, 96)], str(levels)


async def test_a_stream_lost_after_damaged_frames_says_how_long_since_the_last_good_frame(
    tmp_path, hooked, caplog
):
    """A stream whose last good frame came before damaged ones, then whose camera went away: 'stream_lost' said
    'no frame for 0.0s since the last good frame', the time since the last damaged frame (each one skipped counted
    as the camera sending). Served over HTTP with a 1 s pause among the damaged frames, it says 1 s or more."""
    path = _mpeg4_damaged_at_3(tmp_path, 40, 3, gop=1000)  # frames 4-39 predicted from the damaged frame 3
    data = path.read_bytes()
    pause_at = _frame_chunks(data)[20]

    class Paused(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # frames 0-19 at once, the rest after a pause, then the camera hangs up
            self.send_response(200)
            self.send_header("Content-Type", "video/x-msvideo")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data[:pause_at])
                self.wfile.flush()
                time.sleep(1.0)
                self.wfile.write(data[pause_at:])
            except OSError:  # (the camera reopened at the end, then stopped)
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Paused)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/line.avi"
    src = CameraSource("line", CameraSettings(url=url, fps=None, frozen_after_s=None, queue_max_items=64))
    caplog.set_level(logging.WARNING, "devices.camera.capture")
    await src.start()
    try:
        assert len(await take(src, 3)) == 3  # frames 0-2
        for _ in range(600):
            if "stream_lost" in src.stats.errors_by_reason:
                break
            await asyncio.sleep(0.05)
    finally:
        await src.stop()
        server.shutdown()
        server.server_close()
    lost = [r.getMessage() for r in caplog.records if "stream_lost" in r.getMessage()]
    found = re.search(r"no frame for ([0-9.]+)s since the last good frame", lost[0] if lost else "")
    assert found and float(found.group(1)) >= 1.0, lost


@pytest.mark.parametrize("fps", [10, 0.5], ids=["10fps", "timelapse"])
async def test_a_file_cut_short_is_said_at_each_pass_and_the_camera_goes_on(tmp_path, caplog, hooked, fps):
    """At 0.5 fps too: its pass's time was measured against its count at 10 fps, and a cut timelapse was not said."""
    data = _levels_video(tmp_path / "whole.avi", fps)
    chunks = _frame_chunks(bytes(data))
    video = tmp_path / "cut.avi"
    video.write_bytes(data[: chunks[7]])  # frames 0-6 whole, then nothing: its header declares FRAMES
    src = CameraSource("line", CameraSettings(url=str(video), fps=200, loop=True, queue_max_items=HELD))
    caplog.set_level(logging.WARNING, "devices.camera.capture")
    frames = await _read(src, 7 * 2 + 1)  # two passes, and into the third
    assert src.stats.dropped == 0, [_level(f.image) for f in frames]  # the hand-over's (HELD)
    assert [_level(f.image) for f in frames] == [*range(7), *range(7), 0]
    assert src.stats.errors_by_reason.get("cut_short", 0) >= 2, src.stats.errors_by_reason  # once a pass
    assert set(src.stats.errors_by_reason) == {"cut_short"}
    said = [r.getMessage() for r in caplog.records if "cut_short" in r.getMessage()]
    assert said and f"ended after 7 of the {FRAMES} frames its header declares" in said[0], said
    assert "replayed from its start" in said[0]


def _slowed(data: bytearray, times: int) -> None:
    """Every time of a Matroska file (its duration, its clusters', its frames') multiplied by ``times``: its frames
    come less often than the rate its track declares, as a variable-rate recording's do."""

    def vint(i: int, marker: bool) -> tuple[int, int]:
        n = 9 - data[i].bit_length()
        v = int.from_bytes(data[i : i + n], "big")
        return (v if marker else v & ((1 << (7 * n)) - 1)), i + n

    def walk(i: int, end: int) -> None:
        while i < end:
            eid, j = vint(i, True)
            size, k = vint(j, False)
            if eid in (0x18538067, 0x1F43B675, 0x1549A966):  # Segment, Cluster, Info
                walk(k, min(end, k + size))
            elif eid == 0x4489:  # Duration, a float
                f = ">f" if size == 4 else ">d"
                data[k : k + size] = struct.pack(f, struct.unpack(f, data[k : k + size])[0] * times)
            elif eid == 0xE7:  # a cluster's time
                data[k : k + size] = (int.from_bytes(data[k : k + size], "big") * times).to_bytes(size, "big")
            elif eid == 0xA3:  # SimpleBlock: its track, then its time from its cluster's
                _, t = vint(k, False)
                data[t : t + 2] = struct.pack(">h", struct.unpack(">h", data[t : t + 2])[0] * times)
            i = k + size

    walk(0, len(data))


async def test_a_whole_variable_rate_file_whose_count_is_estimated_is_not_cut_short(tmp_path):
    """Matroska keeps no frame count: OpenCV declares its duration times its track's rate, which for a
    variable-rate recording is the base rate, not the average (a whole 20 s file of 240 frames declared 596). Its
    last frame reaches the declared length in time, as a cut file's does not: no cut_short."""
    path = tmp_path / "vfr.mkv"
    out = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), 30, (32, 24))
    for i in range(24):
        out.write(np.full((24, 32, 3), 10 * i + 10, np.uint8))
    out.release()
    data = bytearray(path.read_bytes())
    _slowed(data, 3)  # 24 frames over 2.4 s: 72 declared at 30 fps
    path.write_bytes(bytes(data))
    src = CameraSource("line", CameraSettings(url=str(path), fps=200, loop=True, queue_max_items=HELD))
    frames = await _read(src, 24 + 1)  # a whole pass, and into the next
    assert [round(float(f.image.mean()) / 10) - 1 for f in frames] == [*range(24), 0]
    assert src.stats.errors_by_reason == {}


def test_ffmpeg_never_calls_the_callback_after_the_interpreter_frees_it(tmp_path):
    """A capture released by the interpreter's teardown (here kept in ``sys``, cleared after the module that held
    the callback): FFmpeg's log calls on closing it went to the freed callback, a segmentation fault at exit."""
    video = tmp_path / "v.avi"
    _levels_video(video)
    code = (
        "import sys, cv2\n"
        "from devices.camera import ffmpeg_log\n"
        "if not ffmpeg_log.install(): sys.exit(3)\n"
        "sys.caps = [cv2.VideoCapture(sys.argv[1], cv2.CAP_FFMPEG) for _ in range(2)]\n"
        "[c.grab() for c in sys.caps]\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(video)], capture_output=True, timeout=60)
    if done.returncode == 3:
        pytest.skip("FFmpeg's log callback cannot be installed with this OpenCV")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-500:]


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


_NO_IMAGE_SIZE = """
import ctypes, sys
class Lib(ctypes.CDLL):  # a libavutil without av_opt_get_image_size: ctypes' own error for a symbol it lacks
    def __getattr__(self, name):
        if name == "av_opt_get_image_size":
            raise AttributeError(f"{self._name}: undefined symbol: {name}")
        return super().__getattr__(name)
ctypes.CDLL = Lib
from devices.camera import ffmpeg_log
if ffmpeg_log._libavutil() is None:
    sys.exit(3)
print("INSTALLED", ffmpeg_log.install(), ffmpeg_log.not_read() or "-")
lib = ctypes.CDLL(ffmpeg_log._libavutil())
with ffmpeg_log.watching() as errors:
    lib.av_log(None, 16, b"error while decoding MB %d %d, bytestream %td\\n", 1, 2, 3)  # AV_LOG_ERROR
    lib.av_log(None, 48, b"Format %s chosen by get_format().\\n", b"gray")  # AV_LOG_DEBUG: a new picture
print("COUNTED", errors.count, errors.pictures, errors.decoded)
"""


def test_a_libavutil_without_its_image_size_option_reader_still_has_ffmpegs_errors_read():
    """``av_opt_get_image_size`` (for the decoder's picture size) was looked up with the callback, so a libavutil
    lacking it left FFmpeg's log unread and set quiet: damaged frames were no longer told from whole ones. Only the
    decoder's size is then not read (a new picture's line is told by when it comes, as where no size is said)."""
    done = subprocess.run([sys.executable, "-c", _NO_IMAGE_SIZE], capture_output=True, timeout=60, text=True)
    if done.returncode == 3:
        pytest.skip("no libavutil of OpenCV's to hook")
    assert done.returncode == 0, done.stderr[-500:]
    assert "INSTALLED True -" in done.stdout and "COUNTED 1 1 None" in done.stdout, done.stdout


def test_error_lines_after_which_ffmpeg_decodes_the_picture_whole_are_not_damage(hooked):
    """'mmco: unref short failure' (some IP cameras' H.264 streams log it over and over, on frames FFmpeg decodes
    whole) refused every frame of such a camera, and the frames predicted from it. Logged through the libavutil of
    OpenCV's wheel, with its libavcodec's own format strings: those lines are not counted, a concealment is."""
    path = ffmpeg_log._libavutil()
    assert path is not None
    lib = ctypes.CDLL(path)
    whole = (b"mmco: unref short failure\n", b"SEI type %d size %d truncated at %d\n")
    codec = next(Path(path).parent.glob("libavcodec*"), None)
    if codec is not None:  # the lines are FFmpeg's own, word for word
        data = codec.read_bytes()
        assert all(fmt + b"\0" in data for fmt in whole)
    with ffmpeg_log.watching() as errors:
        for fmt in whole:
            lib.av_log(None, 16, fmt, 1, 2, 3)  # AV_LOG_ERROR
        assert errors.count == 0
        lib.av_log(None, 16, b"error while decoding MB %d %d, bytestream %td\n", 1, 2, 3)
    assert errors.count == 1 and errors.last == "error while decoding MB <n> <n>, bytestream <n>"


_CAMERA_NOTICES = """
import asyncio, ctypes, logging, sys
if sys.argv[2] == "mdwe" and ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN: W^X
    sys.exit(3)
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s %(message)s")
from devices.camera import ffmpeg_log
from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_source import take
async def main():
    src = CameraSource("line", CameraSettings(url=sys.argv[1], fps=200, loop=False))
    await src.start()
    try:
        await take(src, 3)
    finally:
        await src.stop()
    print("NOTICE", src.notices.status().get(sys.argv[3]), "FILTERED", len(ffmpeg_log._filtered))
    print("STATE", src.ffmpeg_log_in_python)
asyncio.run(main())
"""


def _camera_notices(tmp_path, mode: str, key: str, **env: str) -> subprocess.CompletedProcess:
    """A camera reading a levels video in a process of its own (``mode`` "mdwe": under the kernel's W^X), printing
    its notice ``key`` and how many machine-code filters were made (exit 3: no PR_SET_MDWE)."""
    video = tmp_path / "v.avi"
    _levels_video(video)
    return subprocess.run(
        [sys.executable, "-c", _CAMERA_NOTICES, str(video), mode, key],
        capture_output=True,
        timeout=60,
        text=True,
        env={**os.environ, **env},
    )


def test_a_refused_machine_code_filter_is_said_once_and_shown_by_the_camera(tmp_path):
    """Where the system refuses executable memory (systemd's MemoryDenyWriteExecute=, SELinux execmem; here the
    kernel's own PR_SET_MDWE) the filter fell back to Python without a word. It is said once, with why, and a
    camera opening a capture so shows it beside its state on /status (not as a silent drop: nothing is dropped)."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("the machine-code filter is made on Linux x86-64 only")
    done = _camera_notices(tmp_path, "mdwe", "ffmpeg_log_in_python")
    if done.returncode == 3:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 or later)")
    assert done.returncode == 0, done.stderr[-500:]
    lines = done.stdout.splitlines()
    said = [ln for ln in lines if "filtered in Python" in ln and not ln.startswith("NOTICE")]
    assert len(said) == 1 and said[0].startswith("WARNING devices.camera.ffmpeg_log"), done.stdout
    assert "executable memory refused: mprotect: Permission denied" in said[0]  # (EACCES, as the kernel says)
    (last,) = [ln for ln in lines if ln.startswith("NOTICE")]
    assert last == "NOTICE None FILTERED 0", last
    (state,) = [ln for ln in lines if ln.startswith("STATE")]
    assert "mprotect: Permission denied" in state, state


def test_log_lines_filtered_in_python_are_a_cameras_state_not_a_silent_drop_growing_at_each_reopen(
    tmp_path, hooked, monkeypatch
):
    """Where no machine-code filter is made (every ARM gateway: a Raspberry Pi, a Jetson) each camera counted
    'ffmpeg_log_in_python' among its silent drops at every open of its video: edge_silent_drops_total grew at each
    reconnect and fired alerts, though nothing is dropped. It is the camera's state on /status, with why."""
    why = "no machine-code filter on aarch64"  # (this platform's filter is made: its absence is set)
    monkeypatch.setattr(ffmpeg_log, "filtered_in_python", lambda: why)
    _levels_video(tmp_path / "v.avi")
    src = CameraSource("line", CameraSettings(url=str(tmp_path / "v.avi"), fps=10, loop=False))
    for _ in range(3):  # opened, and reopened twice
        src._open().release()
    assert src.notices.status() == {} and src.ffmpeg_log_in_python == why


def test_decoder_errors_not_read_are_counted_by_the_camera(tmp_path):
    """Without the callback (OpenCV's FFmpeg linked in statically, or its own log asked for) a damaged frame is not
    told from a whole one: said once in the log, and now counted by each camera opening a capture so, where its
    state is shown (it was in the log alone)."""
    # FFmpeg's own log asked for (quiet): no callback
    done = _camera_notices(tmp_path, "-", "ffmpeg_errors_unread", OPENCV_FFMPEG_LOGLEVEL="-8")
    assert done.returncode == 0, done.stderr[-500:]
    (last,) = [ln for ln in done.stdout.splitlines() if ln.startswith("NOTICE")]
    assert "'count': 1" in last and "decoder errors are not read (OPENCV_FFMPEG_LOGLEVEL set" in last, last


def test_debug_lines_never_enter_python_and_of_the_others_only_errors_and_new_picture_sizes_count(hooked):
    """FFmpeg calls the callback for every line at every level, and its MJPEG decoder logs 29 debug lines a frame:
    each took the GIL in the callback, which a busy Python thread beside the reader holds (a 5 MP frame's grab
    once measured at 2x as long: bench/RESULTS.md), and a capture's worker threads dropped without release() hung
    the process on it. On Linux x86-64 machine code in front of it returns on debug and trace lines; an error line
    is counted, and of the warning, information and verbose lines only those saying a new picture size. Of the
    debug lines one passes: a decoder's choice of a new picture's format, the only line an MJPEG decoder logs when
    grey frames change size (compared whole: a line only beginning so returns there)."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("no machine-code filter on this platform: Python filters the lines")
    assert ffmpeg_log._filtered, ffmpeg_log.filtered_in_python()  # refused here: said, not skipped
    lib = ctypes.CDLL(ffmpeg_log._libavutil())
    entered: list[str] = []
    sys.setprofile(lambda frame, event, _: entered.append(frame.f_code.co_name) if event == "call" else None)
    try:
        with ffmpeg_log.watching() as errors:
            for level in (48, 56):  # DEBUG, TRACE
                lib.av_log(None, level, b"marker=%x avail_size_in_buf=%d\n", 0xD8, 100)
            # nor a line that only begins as, or goes on past, a decoder's choice of a new picture's format
            lib.av_log(None, 48, b"Format %s chosen by get_format()", b"gray")
            lib.av_log(None, 48, b"Format %s chosen by get_format().\n?", b"gray")
            lib.av_log(None, 48, b"F", b"gray")
            debug = entered.count("_on_log")
            lib.av_log(
                None, 48, b"Format %s chosen by get_format().\n", b"gray"
            )  # but that choice: a new picture
            chosen = entered.count("_on_log")
            for level in (24, 32, 40):  # WARNING, INFO, VERBOSE
                lib.av_log(None, level, b"marker=%x avail_size_in_buf=%d\n", 0xD8, 100)
            lib.av_log(None, 40, b"Reinit context to %dx%d, pix_fmt: %s\n", 1920, 1080, b"yuv420p")
            lib.av_log(None, 16, b"error count: %d\n", 64)  # AV_LOG_ERROR
    finally:
        sys.setprofile(None)
    assert debug == 0 and chosen == 1 and entered.count("_on_log") == 6
    assert errors.count == 1 and errors.last == "error count: <n>" and errors.pictures == 2
