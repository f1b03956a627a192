"""CameraSource against real inputs: image folders, video files and the MJPEG camera simulator
over a real socket (OpenCV's FFmpeg client)."""

from __future__ import annotations

import asyncio
import os

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from devices.base import ConnectionState
from devices.camera.capture import CameraSource
from devices.camera.settings import CameraSettings
from simulators.camera import CameraServer, write_folder, write_video
from tests.support.peers import free_port
from tests.support.waits import until


async def take(src: CameraSource, n: int, timeout_s: float = 20.0) -> list:
    frames = []

    async def run():
        async for f in src.items():
            frames.append(f)
            if len(frames) >= n:
                return

    await asyncio.wait_for(run(), timeout_s)
    return frames


async def test_folder_frames_in_order_with_corrupt_and_empty_files_counted_and_skipped(tmp_path):
    folder = write_folder(tmp_path / "imgs", 6, seed=0, defect_rate=0.5, size=64)
    png = (folder / "000002.png").read_bytes()
    (folder / "000002.png").write_bytes(png[: len(png) // 3])  # truncated PNG
    (folder / "000004.png").write_bytes(b"")  # empty file
    src = CameraSource("cam", CameraSettings(url=str(folder), fps=200))
    await src.start()
    frames = [f async for f in src.items()]  # not looping: ends after one pass
    await src.stop()
    assert len(frames) == 4
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert all(f.image.shape == (64, 64, 3) for f in frames)
    assert src.stats.errors_by_reason.get("corrupt_frame") == 2
    expected = cv2.imread(str(folder / "000003.png"))
    assert np.array_equal(frames[2].image, expected)


async def test_folder_images_declaring_too_many_pixels_are_skipped_undecoded(tmp_path):
    from tests.support.image_bombs import jpeg_declaring, png_declaring

    folder = write_folder(tmp_path / "imgs", 3, seed=0, defect_rate=0.5, size=64)
    (folder / "000001b.png").write_bytes(png_declaring(40000, 40000))  # 1.6 Gpx: ~4.8 GB as BGR
    (folder / "000002b.jpg").write_bytes(jpeg_declaring(8000, 6000))  # 48 Mpx: over the default 25
    os.mkfifo(folder / "000002c.png")  # opening a pipe to read blocks until someone writes: never read
    src = CameraSource("cam", CameraSettings(url=str(folder), fps=200))
    await src.start()
    frames = [f async for f in src.items()]
    await src.stop()
    assert [f.seq for f in frames] == [0, 1, 2] and all(f.image.shape == (64, 64, 3) for f in frames)
    assert src.stats.errors_by_reason.get("oversize_frame") == 2
    assert src.stats.errors_by_reason.get("corrupt_frame") == 1  # the pipe
    # the limit is the line engineer's: 64x64 frames (0.004 Mpx) are over 0.001, and a 1.2-MB file is
    # more than any image of 0.001 Mpx needs (refused by its size, not read)
    (folder / "000003.png").write_bytes(bytes(1_200_000))
    small = CameraSource("cam2", CameraSettings(url=str(folder), fps=200, max_megapixels=0.001))
    await small.start()
    assert [f async for f in small.items()] == []
    await small.stop()
    assert small.stats.errors_by_reason.get("oversize_frame") == 6


async def test_a_mono12_cameras_16_bit_files_are_skipped_by_name_or_read_by_pixel_bits(tmp_path):
    """A machine-vision camera saving Mono12 pixels in 16-bit PNG (at most 4095), and one 8-bit file. Read
    as OpenCV reads colour, the 16-bit images would be black (divided by 256). Without ``pixel_bits`` they
    are skipped and counted as unsupported_frame, naming the setting; with ``pixel_bits: 12`` each is the
    top 8 of its 12 bits, as the trainer's import stores it (--pixel-bits 12). 8-bit files are unchanged."""
    folder = write_folder(tmp_path / "imgs", 1, seed=0, defect_rate=0.0, size=64)
    rng = np.random.default_rng(5)
    mono12 = [rng.integers(0, 4096, (48, 64), dtype=np.uint16) for _ in range(2)]
    for i, m in enumerate(mono12):
        assert cv2.imwrite(str(folder / f"00000{i + 1}.png"), m)
    eight = cv2.imread(str(folder / "000000.png"))
    src = CameraSource("cam", CameraSettings(url=str(folder), fps=200))
    await src.start()
    frames = [f async for f in src.items()]
    await src.stop()
    assert len(frames) == 1 and np.array_equal(frames[0].image, eight)
    assert src.stats.errors_by_reason.get("unsupported_frame") == 2
    assert "16-bit pixels" in src.stats.last_error and "with pixel_bits" in src.stats.last_error
    src = CameraSource("cam", CameraSettings(url=str(folder), fps=200, pixel_bits=12))
    await src.start()
    frames = [f async for f in src.items()]
    await src.stop()
    assert len(frames) == 3 and np.array_equal(frames[0].image, eight) and not src.stats.errors_by_reason
    for f, m in zip(frames[1:], mono12, strict=True):
        want = (m >> 4).astype(np.uint8)
        assert f.image.shape == (48, 64, 3) and all(np.array_equal(f.image[..., c], want) for c in range(3))


async def test_a_replayed_folder_that_is_written_to_says_its_new_images_are_not_read(tmp_path):
    """A folder a camera writes into, given without watch: true, is replayed as it was at the start: its old
    images inspected again at every pass, its new ones never read, and nothing said. Its new images are now
    counted (notice folder_unread, on /status) and said once, naming them and watch: true; each is counted once."""
    folder = write_folder(tmp_path / "imgs", 2, seed=0, defect_rate=0.0, size=64)
    src = CameraSource("cam", CameraSettings(url=str(folder), fps=50, loop=True))
    await src.start()
    try:
        await take(src, 2)
        (folder / "part_0100.png").write_bytes((folder / "000000.png").read_bytes())
        await take(src, 8)  # a few passes after it was written
    finally:
        await src.stop()
    said = src.notices.status()["folder_unread"]
    assert said["count"] == 1, said
    assert "(part_0100.png) are not read" in said["message"] and "set watch: true" in said["message"], said


async def test_a_replayed_folder_a_camera_rotates_keeps_no_more_names_than_the_folder_holds(tmp_path):
    """A replayed folder that a camera writes into and rotates (its software deletes the older images): each image
    written is counted once, as before, but the names of those deleted since are forgotten. 65df506 kept every name
    ever written for as long as the agent ran (measured: 12,000 written, 203 in the folder, 12,000 names held)."""
    folder = write_folder(tmp_path / "imgs", 2, seed=0, defect_rate=0.0, size=32)
    data = (folder / "000000.png").read_bytes()
    src = CameraSource("cam", CameraSettings(url=str(folder), fps=200, loop=True))

    async def drain() -> None:
        async for _ in src.items():
            pass

    def counted() -> int:
        return src.notices.status().get("folder_unread", {}).get("count", 0)

    await src.start()
    await take(src, 2)  # the replay has begun: the folder as it was at the start is read
    drainer = asyncio.create_task(drain())
    try:
        for r in range(6):  # 10 images written a round, the round before deleted
            for k in range(10):
                (folder / f"cam_{r:02d}_{k:02d}_2026-12-05T05-00-00.png").write_bytes(data)
            for old in folder.glob(f"cam_{r - 1:02d}_*.png"):
                old.unlink()
            # a pass has seen this round's images (a fixed 2 s went on silently when a loaded machine took longer,
            # and a round's images deleted unseen were never counted)
            await until(lambda r=r: counted() >= 10 * (r + 1), 30, f"round {r}'s images counted")
        in_folder = {p.name for p in folder.iterdir()}
        # and a pass after the last round's deletes: one between its writes and its deletes counted its images
        # while the round before was still there
        await until(lambda: set(src._unread) <= in_folder, 30, "the names deleted forgotten")
        held = set(src._unread)
    finally:
        await src.stop()
        drainer.cancel()
    assert counted() == 60  # each image written counted once
    assert held <= in_folder and len(held) == 10, sorted(held)


async def test_video_file_loops_with_increasing_sequence_and_resize(tmp_path):
    video = write_video(tmp_path / "line.avi", 5, fps=10, seed=1, defect_rate=0.5, size=64)
    src = CameraSource("cam", CameraSettings(url=str(video), fps=200, loop=True, width=32, height=32))
    await src.start()
    frames = await take(src, 12)
    await src.stop()
    seqs = [f.seq for f in frames]
    # strictly increasing across the loops (12 frames of a 5-frame video); a slow taker (a loaded machine) sees
    # the hand-over drop the oldest frames of a looping file (counted, as for a live camera): each seq missing is one
    assert len(seqs) == 12 and all(a < b for a, b in zip(seqs, seqs[1:], strict=False)), seqs
    assert seqs[-1] + 1 - len(seqs) <= src.stats.dropped, (seqs, src.stats.dropped)
    assert all(f.image.shape == (32, 32, 3) for f in frames)
    assert src.state is ConnectionState.STOPPED


async def test_mjpeg_stream_keeps_target_fps_by_skipping_and_counts_a_corrupt_frame():
    server = CameraServer(free_port(), fps=30, seed=2).start()
    src = CameraSource("cam", CameraSettings(url=server.url, fps=10))
    try:
        await src.start()
        first = await take(src, 3)
        more: list = []
        # the simulator serves only its newest image: on a loaded machine the good image made right after the
        # corrupt one can replace it before it is sent, so the corrupt one is asked for again until it is met
        for _ in range(20):
            if src.stats.errors_by_reason.get("corrupt_frame", 0):
                break
            server.inject_garbage()
            more += await take(src, 1)
        if len(more) < 12:
            more += await take(src, 12 - len(more))
    finally:
        await src.stop()
        server.stop()
    frames = first + more
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert all(b.captured_at >= a.captured_at for a, b in zip(frames, frames[1:], strict=False))
    assert src.skipped > 0  # the 30 fps stream was thinned towards 10 fps
    assert src.stats.errors_by_reason.get("corrupt_frame", 0) >= 1


async def test_a_stream_or_video_over_max_megapixels_is_not_read(tmp_path):
    """Four queued 8K frames are 800 MB: a camera set far above what the model needs must not take the
    gateway's memory. A stream or video declaring frames over ``max_megapixels`` is not read (asked again
    after the backoff, so a camera set back to a sane resolution is taken up)."""
    big = CameraServer(free_port(), fps=20, seed=3, width=160, height=120).start()  # 0.0192 Mpx
    video = write_video(tmp_path / "line.avi", 5, fps=10, seed=1, defect_rate=0.5, size=160)  # 0.0256 Mpx
    refused = [
        CameraSource(
            "stream", CameraSettings(url=big.url, fps=10, max_megapixels=0.01, reconnect_initial_s=0.2)
        ),
        CameraSource(
            "video", CameraSettings(url=str(video), fps=50, max_megapixels=0.01, reconnect_initial_s=0.2)
        ),
    ]
    try:
        for src in refused:
            await src.start()
        await asyncio.sleep(2.0)
        for src in refused:
            assert src._seq == 0, src.name  # not a frame read
            assert src.stats.errors_by_reason.get("oversize_frame", 0) >= 2, (
                src.stats.errors_by_reason
            )  # again
            assert "over max_megapixels 0.01" in src.stats.last_error and "160x" in src.stats.last_error
    finally:
        for src in refused:
            await src.stop()
        big.stop()


async def test_stream_reconnects_after_the_camera_restarts(caplog):
    import logging

    caplog.set_level(logging.INFO)
    port = free_port()
    server = CameraServer(port, fps=20, seed=3).start()
    src = CameraSource(
        "cam",
        CameraSettings(
            url=f"http://127.0.0.1:{port}/stream.mjpg",
            read_timeout_s=1.0,
            max_consecutive_failures=3,
            reconnect_initial_s=0.1,
            reconnect_max_s=0.5,
        ),
    )
    try:
        await src.start()
        before = await take(src, 3)
        server.stop()
        await asyncio.sleep(1.5)
        server = CameraServer(port, fps=20, seed=4).start()
        after = await take(src, 5, timeout_s=30)
    finally:
        await src.stop()
        server.stop()
    assert after[0].seq > before[-1].seq  # sequence keeps increasing across the reconnect
    assert src.stats.reconnects >= 1
    assert src.stats.errors_by_reason.get("stream_lost", 0) >= 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]  # routine: no ERROR


async def test_unreachable_stream_backs_off_without_crashing():
    src = CameraSource(
        "cam",
        CameraSettings(
            url=f"http://127.0.0.1:{free_port()}/stream.mjpg",
            open_timeout_s=1,
            reconnect_initial_s=0.1,
            reconnect_max_s=0.2,
        ),
    )
    await src.start()
    for _ in range(300):
        if src.stats.errors_by_reason.get("open_failed", 0) >= 2:
            break
        await asyncio.sleep(0.1)
    assert src.stats.errors_by_reason.get("open_failed", 0) >= 2
    assert src.state in (ConnectionState.BACKOFF, ConnectionState.CONNECTING)
    assert "cannot open" in src.stats.last_error
    await src.stop()
    assert src.state is ConnectionState.STOPPED


async def test_a_stream_url_that_404s_says_so():
    port = free_port()
    server = CameraServer(port, fps=5, seed=1).start()
    src = CameraSource(
        "cam",
        CameraSettings(
            url=f"http://127.0.0.1:{port}/stream.mjpeg",
            open_timeout_s=2,
            reconnect_initial_s=0.2,
            reconnect_max_s=0.5,
        ),
    )
    try:
        await src.start()
        for _ in range(300):
            if src.stats.errors_by_reason.get("open_failed", 0) >= 1:
                break
            await asyncio.sleep(0.1)
    finally:
        await src.stop()
        server.stop()
    assert "the camera answers HTTP 404 Not Found; check the path of the stream URL" in src.stats.last_error


async def test_a_watched_drop_folder_gives_each_new_image_once_and_never_a_half_written_one(tmp_path):
    """A smart camera's FTP upload or its vendor software saving into a folder: images already there at
    the start are old parts and are left; each new one is read once, after it stopped changing; a file
    written slowly in two parts is read whole; a rewritten file is read again; other files are not."""
    drop = tmp_path / "drop"
    drop.mkdir()
    rng = np.random.default_rng(0)

    def image(v: int) -> bytes:
        a = np.full((40, 48, 3), v, np.uint8)
        a[::7] = rng.integers(0, 255, a[::7].shape, dtype=np.uint8)
        return cv2.imencode(".png", a)[1].tobytes()

    (drop / "old.png").write_bytes(image(10))
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=1000))
    await src.start()
    try:
        for _ in range(1500):  # CONNECTED once the files already there are listed (and left)
            if src.state is ConnectionState.CONNECTED:
                break
            await asyncio.sleep(0.02)
        slow = image(50)
        with open(drop / "slow.png", "wb") as f:  # an upload that stalls half-way
            f.write(slow[: len(slow) // 2])
            f.flush()
            await asyncio.sleep(0.15)
            f.write(slow[len(slow) // 2 :])
        (drop / "notes.txt").write_text("not an image")
        (drop / ".partial.png").write_bytes(image(70)[:20])  # a hidden temporary upload
        (drop / "b.png").write_bytes(image(90))
        first = await take(src, 2, 10)
        os.utime(drop / "slow.png")  # rewritten (same bytes, newer time): read again
        again = await take(src, 1, 10)
        with pytest.raises(TimeoutError):  # and nothing else comes
            await take(src, 1, 1.5)
    finally:
        await src.stop()
    assert sorted(int(f.image[1, 1, 0]) for f in first) == [50, 90]  # never the old part, never half a file
    assert int(again[0].image[1, 1, 0]) == 50
    assert [f.seq for f in first + again] == [0, 1, 2]
    assert not src.stats.errors_by_reason  # the half-written file was never decoded
    with pytest.raises(ValidationError, match="watch is for a folder of images"):
        CameraSettings(url="usb:0", watch=True)


async def test_a_drop_folder_keeps_keep_files_images_once_read_and_never_deletes_an_unread_one(tmp_path):
    """Months of parts dropped into a folder nothing else empties: the images read (and those there at the
    start) past keep_files are deleted, oldest first; every image is still read once; other files stay."""
    drop = tmp_path / "drop"
    drop.mkdir()
    rng = np.random.default_rng(3)

    def png() -> bytes:  # each part its own image (a camera repeating one image is a frozen camera)
        return cv2.imencode(".png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))[1].tobytes()

    (drop / "old.png").write_bytes(png())  # a part of the run before
    os.utime(drop / "old.png", ns=(10**18 - 10**9,) * 2)
    (drop / "notes.txt").write_text("not an image")
    src = CameraSource("cam", CameraSettings(url=str(drop), watch=True, settle_ms=0, keep_files=3))
    await src.start()
    try:
        for _ in range(1500):
            if src.state is ConnectionState.CONNECTED:
                break
            await asyncio.sleep(0.02)
        for n in range(12):  # one part after another, each read before the next arrives
            p = drop / f"part-{n:02d}.png"
            p.write_bytes(png())
            os.utime(p, ns=(10**18 + n * 10**9,) * 2)  # written in this order
            (frame,) = await take(src, 1, 10)
            assert frame.seq == n
        for _ in range(1500):  # the last part is trimmed too once read
            if len(list(drop.glob("*.png"))) <= 3:
                break
            await asyncio.sleep(0.02)
    finally:
        await src.stop()
    assert not src.stats.errors_by_reason
    assert sorted(p.name for p in drop.iterdir()) == [
        "notes.txt",
        "part-09.png",
        "part-10.png",
        "part-11.png",
    ]


def test_settings_are_validated_with_clear_messages():
    with pytest.raises(ValidationError, match="give both 'width' and 'height'"):
        CameraSettings(url="usb:0", width=100)
    with pytest.raises(ValidationError, match="usb:"):
        CameraSettings(url="usb:front")
    with pytest.raises(ValidationError, match="extra"):
        CameraSettings(url="usb:0", fsp=10)
    assert CameraSettings(url="rtsp://cam/stream").kind.value == "stream"


def test_sample_config_is_valid_and_documents_every_default():
    from pathlib import Path

    import yaml

    sample = Path(__file__).resolve().parents[2] / "devices" / "camera" / "sample.yaml"
    CameraSettings.model_validate(yaml.safe_load(sample.read_text()))
    text = sample.read_text()
    for name in CameraSettings.model_fields:
        assert name in text, f"sample.yaml does not mention {name}"


async def test_a_drop_folder_that_goes_away_and_comes_back_loses_no_part_and_repeats_none(tmp_path):
    """A network share that drops, or a folder moved away and back: the images written meanwhile are read
    after the reader's backoff, and those read before are not read again, even when the folder first
    comes back empty (an unmounted share's mount point) and its images reappear later."""
    drop, away, parked = tmp_path / "drop", tmp_path / "away", tmp_path / "parked"
    drop.mkdir()
    parked.mkdir()

    def image(v: int) -> bytes:
        return cv2.imencode(".png", np.full((24, 32, 3), v, np.uint8))[1].tobytes()

    src = CameraSource(
        "cam",
        CameraSettings(
            url=str(drop), watch=True, settle_ms=100, reconnect_initial_s=0.2, reconnect_max_s=0.4
        ),
    )
    await src.start()
    try:
        for _ in range(1500):
            if src.state is ConnectionState.CONNECTED:
                break
            await asyncio.sleep(0.02)
        (drop / "a.png").write_bytes(image(10))
        first = await take(src, 1, 10)
        drop.rename(away)  # the share drops
        for _ in range(600):
            if src.stats.errors_by_reason.get("reader_failed"):
                break
            await asyncio.sleep(0.05)
        (away / "b.png").write_bytes(image(20))  # written while the gateway could not see it
        for f in away.iterdir():  # it comes back empty first (a mount point before the remount) ...
            f.rename(parked / f.name)
        away.rename(drop)
        await asyncio.sleep(0.6)
        for f in parked.iterdir():  # ... then with its images
            f.rename(drop / f.name)
        second = await take(src, 1, 10)
        with pytest.raises(TimeoutError):  # a.png is not read again
            await take(src, 1, 1.0)
    finally:
        await src.stop()
    assert [int(f.image[0, 0, 0]) for f in first + second] == [10, 20]


class HostileMjpeg:
    """An MJPEG camera on 127.0.0.1 that misbehaves as ``serve(wfile, part)`` says, once per connection;
    ``part(data, length=None)`` writes one part (Content-Length given, or the one passed, or none if -1).
    Counts connections, their times and the bytes each was sent."""

    def __init__(
        self, serve, content_type: str = "multipart/x-mixed-replace; boundary=frame", tls=None
    ) -> None:
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.opened: list[float] = []
        self.sent: list[int] = []
        me = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                me.opened.append(time.monotonic())
                k = len(me.sent)
                me.sent.append(0)
                self.send_response(200)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.end_headers()

                def write(b: bytes) -> None:
                    self.wfile.write(b)
                    me.sent[k] += len(b)

                def part(data: bytes, length: int | None = None) -> None:
                    n = len(data) if length is None else length
                    head = b"--frame\r\nContent-Type: image/jpeg\r\n"
                    head += b"" if n < 0 else b"Content-Length: %d\r\n" % n
                    write(head + b"\r\n" + data + b"\r\n")
                    time.sleep(0.01)

                try:
                    serve(write, part)
                except OSError:  # the client left
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        if tls is not None:  # (certificate, key) files: served over HTTPS
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.url = "https" + self.url[4:]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _jpeg(seed: int, w: int = 64, h: int = 48) -> bytes:
    a = cv2.resize(np.random.default_rng(seed).integers(30, 225, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
    return cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


async def test_a_cut_short_jpeg_in_an_mjpeg_stream_is_counted_and_skipped_never_passed_on():
    """A camera or link that cuts parts short (Content-Length saying the cut length): OpenCV's FFmpeg
    reader filled the missing half in (solid green) and passed the frame on, counting nothing. Each
    part is now decoded as a folder's file is: whole parts, with or without Content-Length, are frames;
    cut ones are corrupt_frame and skipped."""
    whole = _jpeg(1)
    want = cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_COLOR)

    def serve(write, part):
        while True:
            part(whole)
            part(whole[: len(whole) // 2])
            part(whole, length=-1)  # no Content-Length: up to the next boundary
            part(whole[: len(whole) * 2 // 3], length=-1)

    cam = HostileMjpeg(serve)
    src = CameraSource("cam", CameraSettings(url=cam.url, read_timeout_s=2))
    try:
        await src.start()
        frames = await take(src, 8)
    finally:
        await src.stop()
        cam.stop()
    assert all(np.array_equal(f.image, want) for f in frames)  # never a half-filled frame
    assert src.stats.errors_by_reason.get("corrupt_frame", 0) >= 6
    assert "truncated or corrupt" in src.stats.last_error
    assert len(cam.opened) == 1  # a cut part is skipped, the stream goes on


async def test_a_stream_that_opens_but_gives_no_good_frame_is_reopened_ever_less_often(caplog):
    """The backoff used to start again as soon as the stream opened, so a camera answering with nothing
    usable was reopened every ~0.4 s for good. It starts again only after a good frame: the gaps between
    connections grow towards reconnect_max_s, and the message says the silence is since the open."""
    import logging

    caplog.set_level(logging.WARNING)
    cut = _jpeg(2)[:300]

    def serve(write, part):
        while True:
            part(cut)

    cam = HostileMjpeg(serve)
    settings = CameraSettings(
        url=cam.url, max_consecutive_failures=3, reconnect_initial_s=0.1, reconnect_max_s=2.0
    )
    src = CameraSource("cam", settings)
    try:
        await src.start()
        for _ in range(600):
            if len(cam.opened) >= 5:
                break
            await asyncio.sleep(0.05)
    finally:
        await src.stop()
        cam.stop()
    assert len(cam.opened) >= 5
    # the 4th delay's base is 0.1 x 2^3 = 0.8 s, of which the jitter keeps at least half
    assert cam.opened[4] - cam.opened[3] >= 0.4
    lost = [r.getMessage() for r in caplog.records if "stream_lost" in r.getMessage()]
    assert "since the stream opened (3 failed reads); reopening" in lost[0]


async def test_an_mjpeg_part_that_never_ends_or_declares_a_huge_length_is_dropped_bounded():
    """A part that never reaches its boundary (a broken camera streaming bytes) used to be buffered for
    read_timeout_s at link speed (~700 MB on loopback), and a Content-Length of 10^12 was taken on trust.
    Both are cut off at the bytes an image under max_megapixels can need (max_file_bytes): counted as
    oversize_frame, the connection dropped and the stream reopened."""
    from protocols.image_header import max_file_bytes

    good = _jpeg(3)
    junk = bytes(range(256)) * 4096  # 1 MiB, no boundary in it

    def serve(write, part):
        part(good)
        part(good)
        if len(cam.sent) % 2:  # first connection: one endless part
            write(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8")
            while True:
                write(junk)
        part(good, length=10**12)  # second: a part declaring a terabyte
        while True:
            write(junk)

    cam = HostileMjpeg(serve)
    settings = CameraSettings(url=cam.url, max_megapixels=0.05, reconnect_initial_s=0.1, read_timeout_s=5)
    src = CameraSource("cam", settings)
    try:
        await src.start()
        frames = await take(src, 4)  # two from each of the first two connections
        for _ in range(600):
            if src.stats.errors_by_reason.get("oversize_frame", 0) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await src.stop()
        cam.stop()
    assert len(frames) >= 4 and len(cam.opened) >= 2
    assert src.stats.errors_by_reason.get("oversize_frame", 0) >= 2
    # what the camera got to send before the reader hung up: the cap plus socket buffers, not gigabytes
    assert max(cam.sent[:2]) < max_file_bytes(0.05) + 32 * 2**20


async def test_a_stream_lost_says_whether_the_camera_stalled_or_hung_up_within_a_part_or_between_parts():
    """Three cameras each give a good part, then one sends half a part (by its Content-Length) and stalls, one
    sends half a part (no Content-Length) and closes the connection, one falls silent between parts. Each was
    stream_lost as 'no frame for 0.5s since the last good frame' or 'the camera closed the stream': a user
    watching /status could not tell a camera that hangs halfway through an image from one that stops between
    images. The message now says where the stream broke, and how much of the part had come."""
    import time

    good = _jpeg(1)

    def camera(how):
        def serve(write, part):
            part(good)
            if how == "silent":
                time.sleep(30)
                return
            length = b"Content-Length: %d\r\n" % len(good) if how == "stall" else b""
            write(b"--frame\r\nContent-Type: image/jpeg\r\n" + length + b"\r\n" + good[:500])
            if how == "stall":
                time.sleep(30)

        return HostileMjpeg(serve)

    cams = {how: camera(how) for how in ("stall", "close", "silent")}
    srcs = {
        how: CameraSource(
            how, CameraSettings(url=cam.url, read_timeout_s=0.5, reconnect_initial_s=30, reconnect_max_s=30)
        )
        for how, cam in cams.items()
    }

    async def lost(src):
        await src.start()
        try:
            assert len(await take(src, 1, 10)) == 1
            for _ in range(600):
                if src.stats.errors_by_reason.get("stream_lost"):
                    return src.stats.last_error
                await asyncio.sleep(0.05)
            return None
        finally:
            await src.stop()

    try:
        said = dict(zip(srcs, await asyncio.gather(*(lost(src) for src in srcs.values())), strict=True))
    finally:
        for cam in cams.values():
            cam.stop()
    assert "since the last good frame: it stalled within a part (500 of the " in said["stall"], said
    assert f"{len(good)} bytes its Content-Length declares had come); reopening" in said["stall"], said
    assert "the camera closed the stream within a part (500 bytes of it had come" in said["close"], said
    assert "since the last good frame: it stalled between parts; reopening" in said["silent"], said
