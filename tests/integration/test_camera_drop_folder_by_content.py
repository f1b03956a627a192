"""The agent's camera watching a drop folder (``watch: true``) that a line camera's FTP upload fills with frames
named 'frame_0001', '.raw' or '.dat': the watcher listed only files named as images and ignored the others without a
word, so no part was ever inspected. Files not named as images are judged by their first bytes now, once settled;
what is no image the camera reads (a '.txt' sidecar, a GIF, a named pipe) is skipped, said once per kind, and left
in the folder."""

from __future__ import annotations

import asyncio
import logging
import os
import zlib

import cv2
import numpy as np
import pytest

from devices.base import ConnectionState
from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_source import take


async def connected(src: CameraSource) -> None:
    """Until the watcher has taken its first listing (what is there then is left alone)."""
    for _ in range(1500):
        if src.state is ConnectionState.CONNECTED:
            return
        await asyncio.sleep(0.02)


async def test_a_drop_folder_reads_frames_named_without_an_image_extension_by_their_bytes(tmp_path, caplog):
    drop = tmp_path / "drop"
    drop.mkdir()
    rng = np.random.default_rng(11)

    def grey(v: int) -> np.ndarray:
        a = np.full((20, 24), v, np.uint8)
        a[::5] = rng.integers(0, 255, a[::5].shape, dtype=np.uint8)
        return a

    (drop / "frame_0000").write_bytes(cv2.imencode(".png", grey(5))[1].tobytes())  # there at the start: left
    if hasattr(os, "mkfifo"):
        os.mkfifo(drop / "camera.fifo")  # a tool's pipe: never opened for reading in blocking mode
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=100, keep_files=50))
    caplog.set_level(logging.WARNING, logger="devices.camera.capture")
    await src.start()
    try:
        await connected(src)
        if hasattr(os, "mkfifo"):
            os.mkfifo(drop / "frame_pipe")  # dropped in after the start: judged, skipped, not waited on
        (drop / "frame_0001").write_bytes(b"P5\n# line camera\n24 20\n255\n" + grey(40).tobytes())
        (drop / "frame_0002.raw").write_bytes(cv2.imencode(".png", grey(80))[1].tobytes())
        (drop / "frame_0003.dat").write_bytes(cv2.imencode(".bmp", grey(120))[1].tobytes())
        (drop / "frame_0001.txt").write_text("exposure 120 us\n")
        (drop / "frame_0002.txt").write_text("exposure 130 us\n")
        (drop / "logo.dat").write_bytes(b"GIF89a" + bytes([1, 0, 1, 0, 0, 0, 0]) + b";")
        frames = await take(src, 3, 20)
        for _ in range(1500):  # the skipped files are judged in the same pass or the next ones
            if src.notices.counts.get("file_skipped", 0) >= 3 + hasattr(os, "mkfifo"):
                break
            await asyncio.sleep(0.02)
        with pytest.raises(TimeoutError):  # nothing else is read: not the old frame, not a skipped file again
            await take(src, 1, 1.0)
    finally:
        await src.stop()
    assert sorted(int(f.image[1, 1, 0]) for f in frames) == [40, 80, 120]
    assert not src.stats.errors_by_reason
    assert src.notices.counts["file_skipped"] == 3 + hasattr(os, "mkfifo")  # once each, not once per poll
    said = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    # the first said is on /status, and the count in edge_silent_drops_total
    assert src.notices.status()["file_skipped"]["message"] in said
    txt = [m for m in said if "'.txt'" in m]
    assert len(txt) == 1, said  # two sidecars, one line
    assert "no image by its name nor by its bytes" in txt[0]
    assert any("logo.dat" in m and "a GIF image by its bytes" in m for m in said), said
    if hasattr(os, "mkfifo"):
        assert any("frame_pipe" in m and "not a regular file" in m for m in said), said
    # nothing that is not an image read is deleted by keep_files, nor the frame there at the start
    assert {"frame_0000", "frame_0001.txt", "frame_0002.txt", "logo.dat"} <= {p.name for p in drop.iterdir()}


async def test_a_temporary_upload_file_cut_short_is_not_read_and_its_renamed_frame_is_read_once(
    tmp_path, caplog
):
    """An FTP or SFTP client writes 'frame.jpg.part' (WinSCP '.filepart', '.tmp') and renames it when done. A
    stalled upload leaves the temporary file unchanged past settle_ms: judged by its bytes, its cut-short JPEG was
    read as a frame (or a corrupt one), and the whole frame read again under its final name: one part inspected
    twice, once half. A file not named as an image whose bytes are an image cut short is now left until it
    changes."""
    drop = tmp_path / "drop"
    drop.mkdir()
    rng = np.random.default_rng(5)
    whole = cv2.imencode(".jpg", rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))[1].tobytes()
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=100, keep_files=None))
    caplog.set_level(logging.WARNING, logger="devices.camera.capture")
    await src.start()
    try:
        await connected(src)
        part = drop / "frame_0001.jpg.part"
        part.write_bytes(whole[: len(whole) // 2])  # the upload stalls half way, long enough to settle
        marker = drop / "zz_marker.txt"
        marker.write_text("judged after the part file, in the same pass or a later one\n")
        os.utime(part, (os.path.getmtime(part) - 10,) * 2)
        os.utime(marker, (os.path.getmtime(marker) - 5,) * 2)
        for _ in range(1000):
            if any("zz_marker.txt" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the marker was never judged")
        part.write_bytes(whole)  # the upload ends and is renamed into place
        part.rename(drop / "frame_0001.jpg")
        frames = await take(src, 1, 20)
        with pytest.raises(TimeoutError):  # the part is inspected once
            await take(src, 1, 1.0)
    finally:
        await src.stop()
    expected = cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(frames[0].image, expected)
    assert not src.stats.errors_by_reason
    said = [r.getMessage() for r in caplog.records if "frame_0001.jpg.part" in r.getMessage()]
    assert len(said) == 1 and "cut short" in said[0], said


async def test_a_drop_folder_crowded_with_files_it_never_deletes_is_said_once_and_frames_still_read(
    tmp_path, caplog
):
    """A camera's FTP upload leaves a '.txt' sidecar beside every frame: keep_files deletes the frames read, never
    the sidecars, so over months the folder holds 100,000 files that every poll (20 a second) lists and stats:
    most of a core on a 2-core gateway, without a word. Past CROWDED_FILES the folder is said once, with the
    count and the fix, and its polls are paced by their own cost; frames are still read."""
    CROWDED_FILES = 10_000  # as docs/camera-and-parts.md says

    drop = tmp_path / "drop"
    drop.mkdir()
    for n in range(CROWDED_FILES + 1):
        (drop / f"frame_{n:06d}.txt").write_bytes(b"exposure 120 us\n")
    caplog.set_level(logging.WARNING, logger="devices.camera.capture")
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=50, keep_files=5))
    await src.start()
    try:
        await connected(src)
        png = cv2.imencode(".png", np.full((12, 16), 90, np.uint8))[1].tobytes()
        (drop / "part.png").write_bytes(png)
        frames = await take(src, 1, 30)
        # the folder hovers about the mark (sidecars come, frames are trimmed): said once, not at every crossing
        for n in range(3):
            (drop / f"frame_{n:06d}.txt").unlink()
        (drop / "part2.png").write_bytes(png)
        frames += await take(src, 1, 30)  # listed below the mark
        for n in range(3):
            (drop / f"frame_{n:06d}.txt").write_bytes(b"exposure 120 us\n")
        (drop / "part3.png").write_bytes(png)
        frames += await take(src, 1, 30)  # listed above it again
        with pytest.raises(TimeoutError):
            await take(src, 1, 1.0)
    finally:
        await src.stop()
    assert [int(f.image[1, 1, 0]) for f in frames] == [90] * 3
    said = [r.getMessage() for r in caplog.records if "is crowded:" in r.getMessage()]
    assert len(said) == 1, said  # once, not once per poll nor per crossing
    # the sidecars, and the part when it is listed first
    assert any(f"crowded: {CROWDED_FILES + k} files" in said[0] for k in (1, 2)), said
    assert str(drop) in said[0], said
    assert "keep_files never deletes" in said[0], said


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
async def test_a_named_pipe_in_a_drop_folder_is_never_opened(tmp_path):
    """Opening a named pipe or a device has effects beyond reading it: a tool blocked opening its FIFO to write is
    let go by any reader's open (and gets a broken pipe when the reader closes); a serial port's open resets the
    board behind it. The watcher opened every file not named as an image to judge its bytes, a pipe or device
    included (non-blocking, then refused by fstat). A file that is no regular file is now judged by its stat."""
    import threading

    drop = tmp_path / "drop"
    drop.mkdir()
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=50, keep_files=None))
    await src.start()
    pipe = drop / "frame_pipe"
    writer_opened = threading.Event()

    def writer() -> None:  # a tool waiting for its reader
        fd = os.open(pipe, os.O_WRONLY)
        writer_opened.set()
        os.close(fd)

    try:
        await connected(src)
        os.mkfifo(pipe)
        os.utime(pipe, (os.path.getmtime(pipe) - 5,) * 2)
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        for _ in range(1000):
            if src.notices.counts.get("file_skipped", 0) >= 1:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the pipe was never judged")
        opened = await asyncio.to_thread(writer_opened.wait, 1.0)
    finally:
        await src.stop()
        fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # let the writer go
        t.join(5)
        os.close(fd)
    assert not opened, "the watcher opened the named pipe"
    assert "not a regular file" in src.notices.status()["file_skipped"]["message"]


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="Linux: a thread's wait read from /proc")
def test_a_named_pipe_in_a_read_files_place_is_not_opened_to_tell_whether_it_was_rewritten(tmp_path):
    """A file read before whose status changed but not its size and time (a chmod, a hard-link backup, a file
    replaced by a rename) is told rewritten or not by its sampled bytes (``_file_fingerprint``): that opened the
    path before checking it was a regular file, so a named pipe put in its place let a tool blocked opening it to
    write go (to a broken pipe when it was closed), and a device's open has effects of its own. It is judged by its
    stat first now, as a file not named as an image is."""
    import glob
    import threading

    from devices.camera.capture import _file_fingerprint

    pipe = tmp_path / "last.bmp"
    os.mkfifo(pipe)
    writer_opened = threading.Event()

    def writer() -> None:  # a tool waiting for its reader
        fd = os.open(pipe, os.O_WRONLY)
        writer_opened.set()
        os.close(fd)

    def writer_waits() -> bool:  # in open(), for a reader (Linux's wait for a FIFO's other end)
        for wchan in glob.glob("/proc/self/task/*/wchan"):
            try:
                if open(wchan).read().strip() == "wait_for_partner":
                    return True
            except OSError:
                pass
        return False

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        for _ in range(500):
            if writer_waits():
                break
            writer_opened.wait(0.01)
        else:
            raise AssertionError("the writer never waited on the pipe")
        assert _file_fingerprint(pipe, 0) is None
        opened = writer_opened.wait(1.0)
    finally:
        fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # let the writer go
        t.join(5)
        os.close(fd)
    assert not opened, "the named pipe was opened"
    (tmp_path / "whole.bmp").write_bytes(b"BM" + bytes(200))  # a regular file: its fingerprint as before
    assert _file_fingerprint(tmp_path / "whole.bmp", 202) == zlib.crc32(b"BM" + bytes(200))
    assert _file_fingerprint(tmp_path / "whole.bmp", 201) is None  # another size than listed
