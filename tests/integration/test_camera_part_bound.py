"""An MJPEG part far longer than the image its own header declares: dropped at what that image can need."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from devices.camera.capture import CameraSource
from devices.camera.mjpeg import MjpegStream
from devices.camera.settings import CameraSettings
from tests.integration.test_camera_source import HostileMjpeg, _jpeg, take


async def _frames_from(cam: HostileMjpeg, n: int) -> tuple[CameraSource, list]:
    """The camera source on ``cam`` (reconnecting fast), its first ``n`` frames; both stopped after."""
    src = CameraSource("cam", CameraSettings(url=cam.url, reconnect_initial_s=0.05, reconnect_max_s=0.1))
    try:
        await src.start()
        try:
            frames = await take(src, n, 30)
        finally:
            await src.stop()
    finally:
        cam.stop()
    return src, frames


async def test_a_part_far_longer_than_its_images_header_declares_is_dropped_at_what_that_image_needs():
    """A part whose JPEG header declares 64x48 pixels, then 40 MB of junk (a broken camera's buffer, or a
    peer posing as one), by its Content-Length or without one: it was read whole, up to the 201 MB an image
    under max_megapixels 25 can need (a 190 MB one took 640 MB of the gateway's memory), before being found
    corrupt. It is now oversize_frame once the bytes pass what a 64x48 image can need (8 bytes a pixel +
    1 MB), naming the size; the connection is dropped, and the next one's frames come as before."""
    head = _jpeg(5)[:600]  # its header: 64x48 pixels
    junk = bytes(range(256)) * 4096  # 1 MiB, no boundary in it

    def serve(write, part):
        k = len(cam.sent)
        if k <= 2:  # the first two connections: one such part, by Content-Length, then without one
            length = 40 * len(junk) + len(head) if k == 1 else None
            n = b"" if length is None else b"Content-Length: %d\r\n" % length
            write(b"--frame\r\nContent-Type: image/jpeg\r\n" + n + b"\r\n" + head)
            for _ in range(40):
                write(junk)
        while True:
            part(_jpeg(1))

    cam = HostileMjpeg(serve)
    src, frames = await _frames_from(cam, 3)
    assert len(frames) == 3 and len(cam.opened) >= 3
    assert src.stats.errors_by_reason.get("oversize_frame") == 2, src.stats.errors_by_reason
    assert "corrupt_frame" not in src.stats.errors_by_reason
    assert "more than a JPEG of 64x48 pixels (its header) can need" in src.stats.last_error
    # what the camera got to send before the reader hung up: the image's bound plus socket buffers, not 40 MB
    assert max(cam.sent[:2]) < 16 * 2**20, cam.sent


async def test_a_snapshot_answer_far_longer_than_its_images_header_declares_is_dropped_at_what_that_image_needs():
    """The same from a snapshot URL (each GET one image): an answer of a 64x48 JPEG's header and 40 MB was
    read whole at every request, then corrupt_frame; it is now oversize_frame naming the size, and the
    next answers are frames."""
    from tests.integration.test_camera_https_login import PASSWORD, USER, Camera

    bad = _jpeg(5)[:600] + bytes(range(256)) * 4096 * 40
    cam = Camera([bad, _jpeg(1), _jpeg(2), _jpeg(3)], snapshot=True)
    url = cam.url.replace(f"{USER}:{PASSWORD}@", "")
    src = CameraSource("cam", CameraSettings(url=url, fps=20, reconnect_initial_s=0.05, reconnect_max_s=0.1))
    try:
        await src.start()
        try:
            frames = await take(src, 3, 30)
        finally:
            await src.stop()
    finally:
        cam.stop()
    assert len(frames) == 3
    assert src.stats.errors_by_reason == {"oversize_frame": 1}, src.stats.errors_by_reason
    assert "more than a JPEG of 64x48 pixels (its header) can need" in src.stats.last_error


async def test_a_part_running_on_past_a_too_short_content_length_is_held_to_what_its_images_header_declares():
    """A part whose Content-Length is short of its bytes (1000 bytes, then 1 MiB: both under what its 64x48
    JPEG's header can need), then 40 MB of junk without a boundary: the rest, read on to the boundary as a
    too-short Content-Length is, had the whole 201-MB cap to itself (150 MB of junk took 150 MB of the gateway's
    memory, then stream_lost at read_timeout_s). It is now held to what the image its header declares can need,
    as a part without Content-Length is: oversize_frame naming the size and the Content-Length."""
    head = _jpeg(5)[:600]  # its header: 64x48 pixels
    junk = bytes(range(256)) * 4096  # 1 MiB, no boundary in it

    def serve(write, part):
        k = len(cam.sent)
        if k <= 2:
            length = 1000 if k == 1 else len(junk)
            write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % length + head)
            for _ in range(40):
                write(junk)
        while True:
            part(_jpeg(1))

    cam = HostileMjpeg(serve)
    src, frames = await _frames_from(cam, 3)
    assert len(frames) == 3 and len(cam.opened) >= 3
    assert src.stats.errors_by_reason == {"oversize_frame": 2}, src.stats.errors_by_reason
    assert "more than a JPEG of 64x48 pixels (its header) can need" in src.stats.last_error
    assert f"its Content-Length: {len(junk)}" in src.stats.last_error
    assert max(cam.sent[:2]) < 16 * 2**20, cam.sent


async def test_a_part_with_no_image_header_is_dropped_at_256_kb_and_a_jpeg_with_1_mb_of_metadata_still_passes():
    """A part whose first 256 KB hold no image header (junk, no image's signature), by its Content-Length or
    without one, 40 MB to its boundary: no size bounded it but the 201-MB cap, so each was read whole, then
    corrupt_frame (150-MB parts took 450 MB of the gateway's memory). No image this reader decodes starts so: it
    is now oversize_frame once over 256 KB, naming why, the connection dropped. A JPEG whose frame header comes
    after 960 KB of metadata (within the 1 MB an image's bound allows for it) is still a frame."""
    junk = bytes(range(256)) * 4096  # 1 MiB, no boundary in it, no image's signature
    com = b"".join(b"\xff\xfe\xff\xff" + bytes(65533) for _ in range(15))  # 15 comment segments of 64 KB
    meta = _jpeg(1)[:2] + com + _jpeg(1)[2:]

    def serve(write, part):
        k = len(cam.sent)
        if k <= 2:
            n = b"Content-Length: %d\r\n" % (40 * len(junk)) if k == 1 else b""
            write(b"--frame\r\nContent-Type: image/jpeg\r\n" + n + b"\r\n")
            for _ in range(40):
                write(junk)
            write(b"\r\n")
        while True:
            part(meta)
            part(_jpeg(1), -1)

    cam = HostileMjpeg(serve)
    src, frames = await _frames_from(cam, 4)
    assert len(frames) == 4 and len(cam.opened) >= 3
    assert {f.image.shape for f in frames} == {(48, 64, 3)}  # the metadata-laden JPEG among them
    assert src.stats.errors_by_reason == {"oversize_frame": 2}, src.stats.errors_by_reason
    assert (
        "with no PNG, JPEG, BMP, TIFF, WebP or PNM header in its first 262144 bytes" in src.stats.last_error
    )
    assert max(cam.sent[:2]) < 16 * 2**20, cam.sent


async def test_a_jpeg_with_more_metadata_than_the_second_look_before_its_frame_header_is_still_a_frame():
    """A thermal camera's radiometric JPEG carries its raw image and a photo in APP1 segments before the frame
    header: 1.5 MB of them here, past the 1.25 MB at which 0552473 looked for that header a second time. Such a
    part was oversize_frame on every image, the connection dropped, no frame ever delivered (found in review).
    A JPEG whose start reads segment after segment as JPEG's keeps the part cap; junk after an SOI does not."""
    app1 = b"".join(b"\xff\xe1" + (65533).to_bytes(2, "big") + b"FLIR\0" + bytes(65526) for _ in range(24))
    thermal = _jpeg(1)[:2] + app1 + _jpeg(1)[2:]
    junk = b"\xff\xd8" + bytes(range(256)) * 8192  # an SOI, then 2 MB that is no segment

    def serve(write, part):
        if len(cam.sent) == 1:
            part(junk)
        while True:
            part(thermal)

    cam = HostileMjpeg(serve)
    src, frames = await _frames_from(cam, 3)
    assert len(frames) == 3 and {f.image.shape for f in frames} == {(48, 64, 3)}
    assert src.stats.errors_by_reason == {"oversize_frame": 1}, src.stats.errors_by_reason  # the junk's
    assert "segments stop reading as JPEG's" in src.stats.last_error, src.stats.last_error


def test_a_big_part_is_held_twice_at_most_while_it_is_taken():
    """A 24-MB part (a JPEG header declaring 4000x4000 pixels, which may need 129 MB), by its Content-Length and
    without one: taking it out of the read buffer copied it twice (a slice, then its bytes) and cutting its line
    end a third time; the reader held it 4 times (by Content-Length) or 3 times. Now twice: the buffer and the
    part handed on."""
    import tracemalloc

    from devices.camera.mjpeg import open_stream

    head = bytearray(_jpeg(5))
    sof = head.find(b"\xff\xc0")
    head[sof + 5 : sof + 9] = (4000).to_bytes(2, "big") * 2  # height, width
    body = bytes(head) + bytes(range(256)) * 4096 * 24 + b"\xff\xd9"  # built before tracing: sent as it is

    def serve(write, part):
        for length in (b"Content-Length: %d\r\n" % len(body), b""):
            write(b"--frame\r\nContent-Type: image/jpeg\r\n" + length + b"\r\n")
            write(body)
            write(b"\r\n")
        write(b"--frame\r\n")

    cam = HostileMjpeg(serve)
    stream = open_stream(cam.url, 5, 20, 201 * 2**20)
    try:
        for _ in range(2):
            tracemalloc.start()
            try:
                part = stream.next_part()
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert part == body
            assert peak < 2.5 * len(body), peak / len(body)
            del part
    finally:
        stream.close()
        cam.stop()


def test_a_stall_past_a_too_short_content_length_says_how_far_past_it_the_part_came():
    """A part read on to its boundary past a Content-Length too short (fd4b4b8), then the camera stalls: the stall's
    place said '5675 of the 100 bytes its Content-Length declares had come' (a1c18cd; found in review)."""
    import socket

    class Resp:  # the camera's answer as http.client hands it over: the part, then the stall
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks

        def read1(self, n: int) -> bytes:
            if self.chunks:
                return self.chunks.pop(0)
            raise TimeoutError("timed out")

        def close(self) -> None:
            pass

    body = _jpeg(1) + b"x" * 5000
    part = b"--b\r\nContent-Type: image/jpeg\r\nContent-Length: 100\r\n\r\n" + body
    a, b = socket.socketpair()
    try:
        stream = MjpegStream(Resp([part]), a, "b", 1.0, 10**8)
        with pytest.raises(TimeoutError) as e:  # the stall, told where it fell (``where``)
            stream.next_part()
        where = getattr(e.value, "where", "")
        assert f"{len(body)} bytes had come, past the 100 its Content-Length declares" in where, where
    finally:
        a.close()
        b.close()


def test_a_part_whose_content_length_is_too_long_is_handed_on_when_its_image_has_come():
    """A camera whose firmware declares each part 100 KB longer than it is, sending a part only once the one
    before was taken (a triggered camera: one per part on the belt): the reader waited for the declared bytes,
    which only the next parts bring, so no part came within read_timeout_s, the stream was lost at every open and
    no frame was ever taken (with 10 bytes too many, each frame waited for the next part). A whole image is now
    handed on as soon as it has come, before any byte of the next part."""
    import threading
    import time

    from devices.camera.mjpeg import open_stream

    images = [_jpeg(k) for k in range(1, 4)]
    # the next part is sent only once this one was handed on (not after a fixed 0.4 s, which a loaded machine
    # could take to hand it on): a reader waiting for the next part's bytes gets none, whatever the load
    taken = [threading.Event() for _ in images]
    sent = [0.0] * len(images)
    done = threading.Event()

    def serve(write, part):
        for k, image in enumerate(images):
            sent[k] = time.monotonic()
            part(image, len(image) + 100_000)
            if not taken[k].wait(30):
                return
        done.wait(30)

    cam = HostileMjpeg(serve)
    # a 60-s read timeout: a reader that hands a part on only when its read times out takes 60 s a part
    stream = open_stream(cam.url, 30, 60.0, 201 * 2**20)
    try:
        for k, image in enumerate(images):
            assert stream.next_part() == image, k
            waited = time.monotonic() - sent[k]
            assert waited < 30.0, (k, waited)  # as soon as it has come, well before the read timeout
            taken[k].set()
    finally:
        done.set()
        for t in taken:
            t.set()
        stream.close()
        cam.stop()


def test_a_tiff_bmp_or_pnm_part_whose_content_length_is_too_long_does_not_swallow_the_next_part():
    """A TIFF, BMP or PGM is whole by its header with any bytes after it, so a part whose Content-Length ran 50
    bytes into the next part was taken as declared: the next part's boundary and start went with it, and that
    part was lost without a count (3 of 10 parts here; a JPEG or PNG, which must end with its end marker, gave
    way to the boundary). The boundary now decides for every kind when a whole image comes before it."""
    import threading

    from devices.camera.mjpeg import open_stream

    rng = np.random.default_rng(0)
    images = [
        cv2.imencode(kind, rng.integers(0, 255, (48, 64) if kind == ".pgm" else (48, 64, 3), np.uint8))[
            1
        ].tobytes()
        for kind in (".tiff", ".bmp", ".pgm", ".png", ".jpg")
    ]
    done = threading.Event()

    def serve(write, part):
        for image in images:
            part(image, len(image) + 50)
            part(image)
        write(b"--frame\r\n")
        done.wait(5)

    cam = HostileMjpeg(serve)
    stream = open_stream(cam.url, 5, 2, 201 * 2**20)
    try:
        got = [stream.next_part() for _ in range(2 * len(images))]
    finally:
        done.set()
        stream.close()
        cam.stop()
    assert got == [image for image in images for _ in range(2)]


async def test_a_tiff_signature_followed_by_junk_is_held_to_where_its_header_puts_its_directory():
    """A TIFF's size is in its image directory, which may follow its pixels (as OpenCV and libtiff write it), so a
    part starting with a TIFF's signature kept the whole 201-MB cap: one followed by junk was read to 201 MB
    (205 MB of the agent's memory, measured) before being refused. It is now held to where its header puts that
    directory: one past the cap is oversize_frame at 256 KB, one within it once the directory has come and gives
    no size; a whole TIFF with its directory last is still a frame."""
    import struct

    far = b"II*\x00" + struct.pack("<I", 2**32 - 1)  # its directory at 4 GB
    near = b"MM\x00*" + struct.pack(">I", 6 * 2**20)  # at 6 MB, in the junk
    junk = bytes(range(256)) * 4096  # 1 MiB, no boundary in it
    tiff = cv2.imencode(".tiff", np.random.default_rng(1).integers(0, 255, (480, 640, 3), np.uint8))[
        1
    ].tobytes()
    assert struct.unpack("<I", tiff[4:8])[0] > len(tiff) // 2  # its directory after its pixels

    def serve(write, part):
        k = len(cam.sent)
        if k <= 2:
            write(b"--frame\r\nContent-Type: image/tiff\r\n\r\n" + (far if k == 1 else near))
            for _ in range(40):
                write(junk)
        while True:
            part(tiff, -1)

    cam = HostileMjpeg(serve)
    src, frames = await _frames_from(cam, 3)
    assert len(frames) == 3 and {f.image.shape for f in frames} == {(480, 640, 3)}
    assert src.stats.errors_by_reason == {"oversize_frame": 2}, src.stats.errors_by_reason
    assert "a TIFF whose image directory (at byte 6291456, its header) gives no width and height" in (
        src.stats.last_error
    )
    assert max(cam.sent[:2]) < 16 * 2**20, cam.sent


def _libtiff_layout(description_bytes: int) -> bytes:
    """A one-page 560x512 grey TIFF laid out as libtiff writes one: header, pixels, then its image directory (at
    286,728), then the tag values too long for it, here an ImageDescription of ``description_bytes`` (a camera's
    JSON metadata; an XMP packet or an ICC profile sits there as well)."""
    import struct

    w, h = 560, 512
    pixels = np.random.default_rng(0).integers(0, 255, (h, w), dtype=np.uint8).tobytes()
    at = 8 + len(pixels)
    tags = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 1), (262, 3, 1), (270, 2, None), (273, 4, 8)]
    tags += [(277, 3, 1), (278, 4, h), (279, 4, len(pixels))]
    described_at = at + 2 + 12 * len(tags) + 4
    directory = struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        if value is None:
            directory += struct.pack("<HHII", tag, kind, description_bytes, described_at)
        else:
            directory += struct.pack(
                "<HHIHH" if kind == 3 else "<HHII", tag, kind, 1, value, *([0] * (kind == 3))
            )
    description = b'{"calibration": "' + b"x" * (description_bytes - 20) + b'"}\x00'
    return b"II*\x00" + struct.pack("<I", at) + pixels + directory + struct.pack("<I", 0) + description


@pytest.mark.parametrize("split", [200_000, 310_000])
@pytest.mark.parametrize("snapshot", [True, False], ids=["snapshot", "mjpeg"])
async def test_a_whole_tiff_with_its_directory_past_256_kb_is_a_frame_however_its_bytes_arrive(
    snapshot, split
):
    """A TIFF whose image directory follows its pixels past the first 256 KB, with 30 KB of tag values after it (a
    long ImageDescription, XMP or ICC), written in two pieces (as a LAN delivers it): 3070f97 looked for the
    directory in the first 256 KB only, even when the bytes read held it, so when a read took the bytes past the
    directory and 20 KB the whole, valid image was oversize_frame (at every request or part, the camera unusable).
    The bound is now taken from every byte read up to the directory's reach."""
    import socket
    import struct
    import threading
    import time

    tiff = _libtiff_layout(30_000)
    assert struct.unpack("<I", tiff[4:8])[0] == 286_728 and len(tiff) == 316_854
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                try:
                    c.recv(65536)
                    if snapshot:
                        c.sendall(
                            b"HTTP/1.1 200 OK\r\nContent-Type: image/tiff\r\nContent-Length: %d\r\n"
                            % len(tiff)
                        )
                        c.sendall(b"Connection: close\r\n\r\n" + tiff[:split])
                        time.sleep(0.03)
                        c.sendall(tiff[split:])
                        continue
                    c.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
                    )
                    for _ in range(5):
                        head = b"--frame\r\nContent-Type: image/tiff\r\nContent-Length: %d\r\n\r\n" % len(
                            tiff
                        )
                        c.sendall(head + tiff[:split])
                        time.sleep(0.03)
                        c.sendall(tiff[split:] + b"\r\n")
                except OSError:  # the reader left
                    pass

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/" + ("snapshot.tiff" if snapshot else "video")
    src = CameraSource("cam", CameraSettings(url=url, fps=30, reconnect_initial_s=0.05, reconnect_max_s=0.1))
    try:
        await src.start()
        try:
            frames = await take(src, 2, 30)
        except TimeoutError:
            frames = []
        finally:
            await src.stop()
    finally:
        srv.close()
    assert src.stats.errors_by_reason == {}, src.stats.last_error
    assert [f.image.shape for f in frames] == [(512, 560, 3)] * 2
