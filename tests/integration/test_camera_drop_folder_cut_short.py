"""The agent's camera watching a drop folder (``watch: true``) that cameras fill over FTP or SMB, with files
written by the test in stages as an upload writes them: the watcher told a cut-short upload from a whole image for
JPEG and PNG only, so a half-written BMP or TIFF (what industrial cameras write most) that settled was decoded
(``corrupt_frame``, or a torn image inspected); and a file overwritten with the same size and modification time (a
camera rewriting 'last.bmp' within its file system's time resolution, a copy keeping the original's time) was not
read again. Every kind is told whole or cut short by its structure now (``protocols.image_complete``); a cut-short
file is read again while it may still be uploading and, cut short past the bound, counted once with its path and
never inspected; a rewritten file is told by its status-change time and inode, and read again when its bytes
differ."""

from __future__ import annotations

import asyncio
import logging
import os
import struct

import cv2
import numpy as np
import pytest

from devices.camera import capture
from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_drop_folder_by_content import connected
from tests.integration.test_camera_source import take
from tests.support.waits import until


def tiff_strips_after_directory(img: np.ndarray, rows_per_strip: int = 8) -> bytes:
    """An 8-bit grey TIFF as cameras' SDKs write one: its image directory first, then its strips (OpenCV's
    libtiff writes the directory last, where a cut file loses it)."""
    h, w = img.shape
    starts = list(range(0, h, rows_per_strip))
    entries = 9
    ifd_end = 8 + 2 + entries * 12 + 4
    arrays = ifd_end  # StripOffsets then StripByteCounts, out of the directory
    data_at = arrays + 8 * len(starts)
    offsets, counts, at = [], [], data_at
    for y in starts:
        n = min(rows_per_strip, h - y) * w
        offsets.append(at)
        counts.append(n)
        at += n
    tags = [
        (256, 3, 1, w),
        (257, 3, 1, h),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, len(starts), arrays),
        (277, 3, 1, 1),
        (278, 3, 1, rows_per_strip),
        (279, 4, len(starts), arrays + 4 * len(starts)),
    ]
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", entries))
    for tag, typ, count, value in tags:
        out += struct.pack("<HHI", tag, typ, count)
        out += struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
    out += struct.pack("<I", 0)
    out += struct.pack(f"<{len(starts)}I", *offsets) + struct.pack(f"<{len(starts)}I", *counts)
    out += img.tobytes()
    return bytes(out)


def grey(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w), dtype=np.uint8)


async def judged(src: CameraSource, caplog, marker: str) -> None:
    """Until a sidecar written after the files before it has been judged: those were judged in the same pass or an
    earlier one (each pass takes its files in the order they were written)."""
    for _ in range(1000):
        if any(marker in r.getMessage() for r in caplog.records):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{marker} was never judged")


async def test_half_a_bmp_is_never_inspected_and_the_whole_one_is_read_once(tmp_path, caplog):
    drop = tmp_path / "drop"
    drop.mkdir()
    img = cv2.cvtColor(grey(1), cv2.COLOR_GRAY2BGR)
    whole = cv2.imencode(".bmp", img)[1].tobytes()
    caplog.set_level(logging.WARNING, logger="devices.camera.capture")
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=100, keep_files=None))
    await src.start()
    try:
        await connected(src)
        part = drop / "part_0001.bmp"
        with open(part, "wb") as f:  # the upload stalls half way, long past settle_ms
            f.write(whole[: len(whole) // 2])
            f.flush()
            await asyncio.sleep(0.05)
            (drop / "part_0001.txt").write_text("exposure 120 us\n")  # the camera's sidecar, after it
            await judged(src, caplog, "part_0001.txt")
            await asyncio.sleep(0.3)  # a few more polls: the half is read again, never handed on
            f.write(whole[len(whole) // 2 :])  # the upload goes on and ends
        frames = await take(src, 1, 20)
        with pytest.raises(TimeoutError):  # read once
            await take(src, 1, 1.0)
    finally:
        await src.stop()
    assert np.array_equal(frames[0].image, img)
    assert not src.stats.errors_by_reason  # the half was never decoded: no corrupt_frame


async def test_half_a_png_holding_a_thumbnail_png_is_never_inspected_and_the_whole_one_is_read_once(
    tmp_path, caplog
):
    """A PNG was whole once IEND's 12 bytes were anywhere in it: a camera's PNG keeping a thumbnail PNG in an
    ancillary chunk before its image data (as C2PA's claim thumbnails are kept), its upload stalled within the image
    data, was decoded (``corrupt_frame``). Its chunk chain is walked now: the half waits, the whole is read once."""
    import zlib

    drop = tmp_path / "drop"
    drop.mkdir()
    img = cv2.cvtColor(grey(3), cv2.COLOR_GRAY2BGR)
    png = cv2.imencode(".png", img)[1].tobytes()
    thumb = cv2.imencode(".png", img[:8, :8])[1].tobytes()
    chunk = struct.pack(">I", len(thumb)) + b"thUm" + thumb + struct.pack(">I", zlib.crc32(b"thUm" + thumb))
    whole = png[:33] + chunk + png[33:]  # after its IHDR
    half = len(whole) - 200  # within its image data, after the thumbnail's IEND
    assert b"IEND" in whole[:half]
    caplog.set_level(logging.WARNING, logger="devices.camera.capture")
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=100, keep_files=None))
    await src.start()
    try:
        await connected(src)
        with open(drop / "part_0001.png", "wb") as f:  # the upload stalls within the image data
            f.write(whole[:half])
            f.flush()
            await asyncio.sleep(0.05)
            (drop / "part_0001.txt").write_text("exposure 120 us\n")  # the camera's sidecar, after it
            await judged(src, caplog, "part_0001.txt")
            await asyncio.sleep(0.3)  # a few more polls: the half is read again, never handed on
            f.write(whole[half:])  # the upload goes on and ends
        frames = await take(src, 1, 20)
        with pytest.raises(TimeoutError):  # read once
            await take(src, 1, 1.0)
    finally:
        await src.stop()
    assert np.array_equal(frames[0].image, img)
    assert not src.stats.errors_by_reason  # the half was never decoded: no corrupt_frame


async def test_a_tiff_whose_strips_end_past_the_file_is_skipped_once_past_the_bound_then_read_when_whole(
    tmp_path, caplog
):
    """A camera's TIFF upload that stalls within its strips (its directory written first) stays cut short: it is
    read again for a while (the upload may still be running), then counted once as cut_short with its path, and
    never decoded; when the upload resumes and ends, the whole image is read. Hostile files beside it (a TIFF
    whose directories loop, one whose directory lies far past its end, a BMP and a PNM declaring huge sizes)
    neither stop the watcher nor are inspected."""
    drop = tmp_path / "drop"
    drop.mkdir()
    img = grey(2)
    whole = tiff_strips_after_directory(img)
    assert np.array_equal(cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_GRAYSCALE), img)
    caplog.set_level(logging.WARNING, logger="devices.camera.capture")
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=50, keep_files=None))
    await src.start()
    try:
        await connected(src)
        cut = len(whole) - 700  # within its strips: the directory and the first strips are there
        (drop / "part_0002.tif").write_bytes(whole[:cut])
        looped = bytearray(whole)
        looped[8 + 2 + 9 * 12 : 8 + 2 + 9 * 12 + 4] = struct.pack("<I", 8)  # the next directory: itself
        (drop / "hostile_loop.tif").write_bytes(bytes(looped))
        (drop / "hostile_far.tif").write_bytes(b"II*\x00" + struct.pack("<I", 0xFFFFFFF0) + bytes(100))
        bmp = bytearray(cv2.imencode(".bmp", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
        bmp[18:26] = struct.pack("<ii", 2**30, -(2**30))
        (drop / "hostile_huge.bmp").write_bytes(bytes(bmp))
        (drop / "hostile_huge.pgm").write_bytes(b"P5\n999999999 999999999\n65535\n" + bytes(64))
        for _ in range(600):  # the bound is CUT_SHORT_WAIT_S (5 s) at this settle_ms
            if src.stats.errors_by_reason.get("cut_short", 0) >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # said once, not again at each poll
        assert src.stats.errors_by_reason.get("cut_short") == 2, src.stats.errors_by_reason
        (drop / "part_0002.tif").write_bytes(whole)  # the upload resumes and ends
        frames = await take(src, 2, 20)  # it, and the looping TIFF: one image, its chain read once round
        with pytest.raises(TimeoutError):
            await take(src, 1, 1.0)
    finally:
        await src.stop()
    assert all(np.array_equal(f.image[:, :, 0], img) for f in frames)
    # the cut-short TIFFs never decoded (no corrupt_frame), the huge ones refused by their headers, the reader never
    # stopped by any of them
    assert src.stats.errors_by_reason == {"cut_short": 2, "oversize_frame": 2}, src.stats.errors_by_reason
    said = [r.getMessage() for r in caplog.records if "cut_short" in r.getMessage()]
    assert any("part_0002.tif" in m and "strip" in m and "past its end" in m for m in said), said
    assert sum("part_0002.tif" in m for m in said) == 1, said


async def test_a_file_overwritten_with_the_same_size_and_time_is_read_again_and_a_chmod_is_not(tmp_path):
    """A camera overwriting 'last.bmp' in place within its file system's time resolution (or a copy setting the
    time back) leaves size and modification time as they were: the watcher, keyed on those, never read the new
    part. Its status-change time tells now, and its bytes decide: a new image is read, a file whose mode alone
    changed (or that was renamed away and back) is not read twice; one replaced by a rename keeping size and time is
    read again."""
    drop = tmp_path / "drop"
    drop.mkdir()
    first, second = (cv2.cvtColor(grey(s), cv2.COLOR_GRAY2BGR) for s in (3, 4))
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=100, keep_files=None))
    await src.start()
    try:
        await connected(src)
        last = drop / "last.bmp"
        last.write_bytes(cv2.imencode(".bmp", first)[1].tobytes())
        (a,) = await take(src, 1, 20)
        st = last.stat()
        with open(last, "r+b") as f:  # in place: same inode, same size
            f.write(cv2.imencode(".bmp", second)[1].tobytes())
        os.utime(last, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the time it had
        assert (last.stat().st_size, last.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        (b,) = await take(src, 1, 20)
        os.chmod(last, 0o600)  # its status alone: not read again
        with pytest.raises(TimeoutError):
            await take(src, 1, 1.5)
        hidden = drop / ".last.bmp.tmp"  # saved aside, its time set to the one before, renamed over it
        hidden.write_bytes(cv2.imencode(".bmp", first)[1].tobytes())
        os.utime(hidden, ns=(st.st_atime_ns, st.st_mtime_ns))
        hidden.rename(last)
        (c,) = await take(src, 1, 20)
    finally:
        await src.stop()
    assert np.array_equal(a.image, first)
    assert np.array_equal(b.image, second)
    assert np.array_equal(c.image, first)
    assert not src.stats.errors_by_reason


async def test_files_there_at_the_start_whose_status_alone_changes_are_never_inspected(tmp_path):
    """Files in the folder when the watcher starts are left alone (old parts: inspecting them again would drive the
    PLC for parts long gone). Their status-change time moves without a byte written: a mode or owner changed for
    the folder, a hard-link backup (rsnapshot, rsync --link-dest), a Windows backup clearing the archive bit on the
    share. Keyed on that time too, each such file was read and inspected as new, named or not ('frame_0001', a
    line camera's upload); now one whose size, modification time and inode are as at the start is still left."""
    drop = tmp_path / "drop"
    drop.mkdir()
    old = [cv2.cvtColor(grey(s), cv2.COLOR_GRAY2BGR) for s in (5, 6)]
    (drop / "part_old.bmp").write_bytes(cv2.imencode(".bmp", old[0])[1].tobytes())
    (drop / "frame_0001").write_bytes(cv2.imencode(".bmp", old[1])[1].tobytes())
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=100, keep_files=None))
    await src.start()
    try:
        await connected(src)
        for name in ("part_old.bmp", "frame_0001"):
            os.chmod(drop / name, 0o600)  # its status alone
            os.link(drop / name, tmp_path / f"backup-{name}")  # a hard-link backup: its link count
        new = cv2.cvtColor(grey(7), cv2.COLOR_GRAY2BGR)
        await asyncio.sleep(0.02)  # written after: the older files' turn comes first
        (drop / "part_new.bmp").write_bytes(cv2.imencode(".bmp", new)[1].tobytes())
        (first,) = await take(src, 1, 20)
        with pytest.raises(TimeoutError):
            await take(src, 1, 1.0)
    finally:
        await src.stop()
    assert np.array_equal(first.image, new)
    assert not src.stats.errors_by_reason


def _bytes_read() -> int:
    """What this process has read through read(2) and its kin, all threads (``rchar`` of /proc/self/io)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


async def test_a_file_read_before_whose_status_alone_changes_is_told_by_its_sampled_bytes_not_read_whole(
    tmp_path,
):
    """A file read before whose status alone changed (a chmod of the folder, an hourly hard-link backup raising
    every file's link count, an archive bit cleared) was read whole again to compare its fingerprint, which samples
    80 KiB: 200 kept 25-Mpx BMPs (keep_files' default) were 15 GB read, ahead of the new frames. Now only the
    bytes the fingerprint samples are read; a file rewritten with other bytes is still read."""
    drop = tmp_path / "drop"
    drop.mkdir()
    images = [cv2.cvtColor(grey(s, 600, 1000), cv2.COLOR_GRAY2BGR) for s in (8, 9, 10, 11)]  # 1.8 MB BMPs
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=100, keep_files=None))
    await src.start()
    try:
        await connected(src)
        for k, img in enumerate(images):
            (drop / f"part_{k}.bmp").write_bytes(cv2.imencode(".bmp", img)[1].tobytes())
        await take(src, len(images), 20)
        before = _bytes_read()
        for k in range(len(images)):
            os.chmod(drop / f"part_{k}.bmp", 0o600)  # its status alone
        keys = {f"part_{k}.bmp": (drop / f"part_{k}.bmp").stat().st_ctime_ns for k in range(len(images))}
        for _ in range(1000):  # until the watcher has judged each again
            record = src._dropped_in or {}
            if all(name in record and record[name][0][3] == ctime for name, ctime in keys.items()):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the files whose mode changed were never judged again")
        read = _bytes_read() - before
        with pytest.raises(TimeoutError):  # and none is handed on again
            await take(src, 1, 0.5)
    finally:
        await src.stop()
    whole = sum((drop / f"part_{k}.bmp").stat().st_size for k in range(len(images)))
    assert read < whole / 4, (
        f"{read} bytes read to judge {len(images)} files of {whole} bytes whose mode changed"
    )
    assert not src.stats.errors_by_reason


async def test_a_plain_pnm_without_a_line_end_after_its_last_sample_is_read_once_its_wait_is_over(tmp_path):
    """A plain (text) PGM or PPM whose last sample ends the file, as the format allows (no line end after it), was
    cut short for ever: its last number might still be being written, so it was read again for the wait, then
    skipped as ``cut_short``, the whole image never inspected. Unchanged past the wait, it is read now, named as an
    image or not ('frame_0004' by its bytes); one missing a sample is still skipped, never inspected."""
    drop = tmp_path / "drop"
    drop.mkdir()
    rng = np.random.default_rng(12)
    grey_img, colour = rng.integers(0, 256, (4, 6), np.uint8), rng.integers(0, 256, (4, 6, 3), np.uint8)
    pgm = ("P2\n6 4\n255\n" + " ".join(str(v) for v in grey_img.ravel())).encode()
    ppm = ("P3\n6 4\n255\n" + " ".join(str(v) for v in colour[:, :, ::-1].ravel())).encode()
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=50, keep_files=None))
    await src.start()
    try:
        await connected(src)
        (drop / "part_0003.pgm").write_bytes(pgm)
        await asyncio.sleep(0.1)  # written in this order: read in it
        (drop / "frame_0004").write_bytes(ppm)
        (drop / "part_0005.pgm").write_bytes(pgm.rsplit(b" ", 1)[0])  # its last sample never written
        frames = await take(src, 2, 30)  # after the wait (CUT_SHORT_WAIT_S, 5 s at this settle_ms)
        for _ in range(600):
            if src.stats.errors_by_reason.get("cut_short"):
                break
            await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):  # each read once
            await take(src, 1, 1.0)
    finally:
        await src.stop()
    assert np.array_equal(frames[0].image, cv2.cvtColor(grey_img, cv2.COLOR_GRAY2BGR))
    assert np.array_equal(frames[1].image, colour)
    assert src.stats.errors_by_reason == {"cut_short": 1}, src.stats.errors_by_reason
    assert "part_0005.pgm" in (src.stats.last_error or ""), src.stats.last_error


async def test_a_plain_pnm_without_a_line_end_after_its_last_sample_is_decoded_only_when_taken(tmp_path):
    """A folder's image is kept compressed and decoded only when a pipeline takes it (``UntakenFrame``: one a full
    queue drops costs no decoding), unless it plainly is not whole (``looks_whole``). A plain PGM whose last
    sample ends the file was read after its wait (a drop folder) or at once (a replayed folder) but, its last digits
    taken for a number still being written, decoded at once on the camera's thread, every frame so. A folder's
    file is settled when it is read: such a file is whole, and decoded when taken as any other."""
    from devices.camera.capture import UntakenFrame

    async def untaken(src: CameraSource, timeout_s: float) -> object:
        async def first() -> object:
            async for f in src.untaken_items():
                return f
            return None

        return await asyncio.wait_for(first(), timeout_s)

    grey_img = np.random.default_rng(13).integers(0, 256, (4, 6), np.uint8)
    pgm = ("P2\n6 4\n255\n" + " ".join(str(v) for v in grey_img.ravel())).encode()
    assert pgm[-1:].isdigit()
    replayed, drop = tmp_path / "replayed", tmp_path / "drop"
    replayed.mkdir()
    drop.mkdir()
    (replayed / "part.pgm").write_bytes(pgm)
    src = CameraSource("cam", CameraSettings(url=str(replayed), fps=200))
    await src.start()
    try:
        frame = await untaken(src, 10)
        assert isinstance(frame, UntakenFrame) and src.decoded == 0, (frame, src.decoded)
        assert np.array_equal(frame.image, cv2.cvtColor(grey_img, cv2.COLOR_GRAY2BGR))
    finally:
        await src.stop()
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=50, keep_files=None))
    await src.start()
    try:
        await connected(src)
        (drop / "part_0001.pgm").write_bytes(pgm)
        frame = await untaken(src, 30)  # after the wait (CUT_SHORT_WAIT_S, 5 s at this settle_ms)
        assert isinstance(frame, UntakenFrame) and src.decoded == 0, (frame, src.decoded)
        assert np.array_equal(frame.image, cv2.cvtColor(grey_img, cv2.COLOR_GRAY2BGR))
    finally:
        await src.stop()
    assert not src.stats.errors_by_reason, src.stats.last_error


async def test_a_whole_png_damaged_in_a_chunks_length_or_type_is_counted_as_damaged_once_its_wait_is_over(
    tmp_path, caplog
):
    """A whole PNG damaged in a chunk's length or type (one bit flipped by storage or a network copy) breaks its
    chunk chain as a stalled upload does: it was read again for 5 s (CUT_SHORT_WAIT_S), then counted as cut_short
    ('an upload that stalled, a writer that stopped, or a damaged file'). Ending with its IEND chunk, its chain
    broken at written bytes, it waits the same (a rewrite in place paused looks so) and is then counted as
    corrupt_frame, saying where its chain breaks, never as cut_short; an upload cut short is counted cut_short."""
    drop = tmp_path / "drop"
    drop.mkdir()
    img = cv2.resize(np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8), (64, 48))
    png = cv2.imencode(".png", img)[1].tobytes()
    at = png.index(b"IDAT") - 4  # its image data's chunk: its length, then its type
    length_flipped = png[:at] + bytes([png[at] ^ 0x10]) + png[at + 1 :]
    type_damaged = png[: at + 4] + b"ID\x00T" + png[at + 8 :]
    caplog.set_level(logging.WARNING, logger="devices.camera.capture")
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=50, keep_files=None))
    await src.start()
    try:
        await connected(src)
        (drop / "uploading.png").write_bytes(png[: len(png) // 2])  # an upload that stalls: cut_short
        os.utime(drop / "uploading.png", (os.path.getmtime(drop / "uploading.png") - 10,) * 2)  # judged first
        (drop / "length_flipped.png").write_bytes(length_flipped)
        (drop / "type_damaged.png").write_bytes(type_damaged)
        await until(
            lambda: sum(src.stats.errors_by_reason.values()) >= 3, what="the three files' waits to end"
        )
        assert src.stats.errors_by_reason == {"corrupt_frame": 2, "cut_short": 1}, src.stats.errors_by_reason
    finally:
        await src.stop()
    # the first of each reason logged, the second corrupt_frame counted in its burst and kept as the last error
    said = [r.getMessage() for r in caplog.records] + [src.stats.last_error]
    assert not any("uploading.png" in m and "corrupt_frame" in m for m in said), said
    for name, where in (
        ("length_flipped.png", "'IDAT' chunk at byte 33 declares"),
        ("type_damaged.png", "no chunk"),
    ):
        lines = [m for m in said if f"{name}: a PNG damaged in its chunk chain" in m]
        assert lines and all(where in m and "not an upload under way" not in m for m in lines), said


async def test_a_png_rewritten_in_place_and_paused_is_waited_for_never_counted_damaged_and_read_once_written(
    tmp_path, monkeypatch
):
    """A PNG rewritten in place under its final name (rsync --inplace, a writer opening it r+b: no truncation) and
    paused is the new bytes then the old file's tail, ending with the old IEND and its chain broken at written bytes
    (no zeros). png_damaged refused it at the first look as corrupt_frame (a single-IDAT writer: 9,738 of 9,757
    pauses). It waits now as any file cut short, and its new frame is read once written."""
    drop = tmp_path / "drop"
    drop.mkdir()

    def enc(seed: int, blur: int) -> tuple[np.ndarray, bytes]:
        img = cv2.GaussianBlur(
            np.random.default_rng(seed).integers(0, 256, (160, 320), np.uint8), (blur,) * 2, 0
        )
        return img, cv2.imencode(".png", img)[1].tobytes()

    _, old = enc(1, 3)  # the old frame the longer: its tail and IEND stay after the new bytes
    img_new, new = enc(2, 5)
    assert len(old) > len(new)
    i = 8
    while True:  # the header of the new frame's last IDAT
        length = struct.unpack_from(">I", new, i)[0]
        if i + 12 + length >= len(new) - 12:
            break
        i += 12 + length
    k = i + 12 + 1000  # paused 1000 bytes into it
    monkeypatch.setattr(capture, "CUT_SHORT_WAIT_S", 600.0)  # the paused state lasts, whatever the load
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=50, keep_files=5))
    await src.start()
    try:
        await connected(src)
        f = drop / "last.png"
        f.write_bytes(old)
        await take(src, 1, 20)  # the previous frame, read
        with open(f, "r+b") as w:  # rewritten in place
            w.write(new[:k])
            w.flush()
            os.fsync(w.fileno())
            # the writer held until the watcher has judged the paused bytes (waiting, or counted)
            await until(
                lambda: "last.png" in src._cut or src.stats.errors_by_reason, what="the paused file judged"
            )
            assert not src.stats.errors_by_reason, src.stats.last_error
            w.write(new[k:])
            w.truncate()
        frames = await take(src, 1, 20)
    finally:
        await src.stop()
    assert np.array_equal(frames[0].image, cv2.cvtColor(img_new, cv2.COLOR_GRAY2BGR))
    assert not src.stats.errors_by_reason, src.stats.last_error


async def test_a_copy_tools_temporary_file_holding_a_broken_png_chain_is_left_never_counted_nor_deleted(
    tmp_path, caplog
):
    """A copy tool's temporary file ('NAME.png.<hash>.partial', rclone's multi-thread copy: its last segment written
    first, the gap zeros) whose bytes end with an IEND chunk and break their chunk chain (png_damaged) was refused
    as corrupt_frame and recorded among the images read, so keep_files deleted it while the copy ran. A file not
    named as an image is now left as any temporary upload cut short (file_skipped), never counted as a frame nor
    deleted; once the copy has written it whole and renamed it, its frame is read."""
    drop = tmp_path / "drop"
    drop.mkdir()
    img = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (160, 320), np.uint8), (5, 5), 0)
    png = cv2.imencode(".png", img)[1].tobytes()
    heads, i = [], 8  # where each chunk's header starts
    while i < len(png):
        heads.append(i)
        i += 12 + struct.unpack_from(">I", png, i)[0]
    frontier = heads[3] + 4  # the copy paused 4 bytes into a chunk's header, a later segment written
    segmented = png[:frontier] + bytes(8192) + png[frontier + 8192 :]
    at = heads[2]  # a copy of a PNG one bit of whose chunk lengths storage flipped
    flipped = png[:at] + bytes([png[at] ^ 0x10]) + png[at + 1 :]
    caplog.set_level(logging.WARNING, logger="devices.camera.capture")
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=50, keep_files=2))
    await src.start()
    try:
        await connected(src)
        parts = {"frame_0001.png.8f3a.partial": segmented, "frame_0002.png.1c9d.partial": flipped}
        for name, data in parts.items():
            (drop / name).write_bytes(data)
            os.utime(drop / name, (os.path.getmtime(drop / name) - 10,) * 2)  # the oldest: trimmed first
        (drop / "after.txt").write_text("exposure 120 us\n")  # the camera's sidecar, after them
        await judged(src, caplog, "after.txt")
        for k in range(4):  # frames keep arriving and are read; keep_files deletes the oldest of those read
            small = np.full((24, 32), 10 * k + 5, np.uint8)
            (drop / f"other_{k}.png").write_bytes(cv2.imencode(".png", small)[1].tobytes())
            await take(src, 1, 20)
        await until(
            lambda: len(list(drop.glob("other_*.png"))) <= 2, what="keep_files to trim the frames read"
        )
        left = {p.name for p in drop.iterdir()}
        assert set(parts) <= left, left  # the copy's temporary files: never deleted
        assert "corrupt_frame" not in src.stats.errors_by_reason, src.stats.errors_by_reason
        assert src.notices.counts.get("file_skipped", 0) >= 3  # the two temporary files and the sidecar
        (drop / "frame_0001.png.8f3a.partial").write_bytes(png)  # the copy ends and renames it into place
        (drop / "frame_0001.png.8f3a.partial").rename(drop / "frame_0001.png")
        frames = await take(src, 1, 20)
    finally:
        await src.stop()
    assert np.array_equal(frames[0].image, cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    assert "corrupt_frame" not in src.stats.errors_by_reason, src.stats.errors_by_reason
