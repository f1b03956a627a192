"""Uncompressed AVIs: the one layout OpenCV's FFmpeg reader aborts the process on (24-bit rows stored bottom-up, the
usual Windows DIB) is refused before OpenCV opens it; every other layout is left to OpenCV, which reads it whole."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from devices.camera.avi import crashing_layout

ROOT = Path(__file__).parents[2]


def _avi(bits: int, w: int, h: int, compression: bytes = bytes(4), frames: int = 3) -> bytes:
    """An uncompressed AVI of ``frames`` grey frames, ``bits`` per pixel (a palette at 8 and fewer), rows padded to 4
    bytes; ``h`` < 0: rows stored top-down."""

    def chunk(fcc: bytes, data: bytes) -> bytes:
        return fcc + struct.pack("<I", len(data)) + data + b"\0" * (len(data) & 1)

    size = (w * bits + 31) // 32 * 4 * abs(h)
    colours = 1 << bits if bits <= 8 else 0
    palette = b"".join(bytes((i, i, i, 0)) for i in range(colours))
    rate = (1, 10, 0, frames, size, -1, 0)  # scale, rate, start, length, buffer, quality, sample size
    strh = b"vids" + bytes(4) + struct.pack("<IHHIIIIIIiI4h", 0, 0, 0, 0, *rate, 0, 0, w, abs(h))
    strf = struct.pack("<IiiHH4sIiiII", 40, w, h, 1, bits, compression, size, 0, 0, colours, 0) + palette
    movi = b"".join(chunk(b"00db", bytes([60 + 40 * i]) * size) for i in range(frames))
    avih = struct.pack("<14I", 100000, 0, 0, 0, frames, 0, 1, 0, w, abs(h), 0, 0, 0, 0)
    strl = chunk(b"LIST", b"strl" + chunk(b"strh", strh) + chunk(b"strf", strf))
    body = b"AVI " + chunk(b"LIST", b"hdrl" + chunk(b"avih", avih) + strl) + chunk(b"LIST", b"movi" + movi)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# measured with OpenCV 5.1.0: each read whole; 24-bit BI_RGB bottom-up read 1 frame, then the process aborted
# (malloc_consolidate(): invalid chunk size, or SIGSEGV at an odd width)
READ_WHOLE = [(b, w, s) for b in (1, 4, 8, 16, 32) for w in (160, 161) for s in (1, -1)] + [(24, 161, -1)]


@pytest.mark.parametrize("bits, w, sign", READ_WHOLE)
def test_uncompressed_layouts_opencv_reads_are_left_to_it(tmp_path, bits, w, sign):
    path = tmp_path / "v.avi"
    path.write_bytes(_avi(bits, w, 120 * sign))
    assert crashing_layout(path) is None


@pytest.mark.parametrize("w", [160, 161, 162])
def test_a_bottom_up_24_bit_avi_is_named_at_any_width(tmp_path, w):
    path = tmp_path / "v.avi"
    path.write_bytes(_avi(24, w, 120))
    assert crashing_layout(path) == f"uncompressed 24-bit RGB rows stored bottom-up ({w}x120)"


def test_a_cut_or_lying_avi_header_ends_the_walk_without_hanging_or_raising(tmp_path):
    """Cut at every byte of its header, or with chunk sizes that lie (past the end, zero), the file is judged from
    what is there: a few bytes read per chunk, at most 10,000 chunks."""
    whole = _avi(24, 160, 120, frames=1)
    path = tmp_path / "v.avi"
    at = whole.index(b"movi")
    told = whole.index(b"strf") + 8 + 20  # its BITMAPINFOHEADER's compression read
    for cut in range(at + 4):
        path.write_bytes(whole[:cut])
        assert (crashing_layout(path) is not None) == (cut >= told), cut
    lying = bytearray(whole)
    lying[whole.index(b"avih") + 4 : whole.index(b"avih") + 8] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(lying))
    assert crashing_layout(path) is None  # the size skips past the end: no stream seen
    path.write_bytes(whole[:12] + (b"JUNK" + bytes(4)) * 20_000 + whole[12:])
    assert crashing_layout(path) is None  # gives up after 10,000 chunks
    path.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(64))  # not an AVI: OpenCV's
    assert crashing_layout(path) is None


def test_a_video_file_camera_refuses_a_bottom_up_avi_naming_it_and_how_to_convert_it_and_does_not_crash(
    tmp_path,
):
    """OpenCV 5.1.0 read one frame of it and aborted the whole process (the agent with it). The camera is opened
    in a child interpreter, so that the old code's abort fails this test rather than ending pytest."""
    path = tmp_path / "windows.avi"
    path.write_bytes(_avi(24, 160, 120))
    child = (
        "import asyncio, sys, time\n"
        "from devices.camera.capture import CameraSource\n"
        "from devices.camera.settings import CameraSettings\n"
        "async def main():\n"
        "    src = CameraSource('line', CameraSettings(url=sys.argv[1], fps=100, frozen_after_s=None))\n"
        "    await src.start()\n"
        "    try:\n"
        "        end = time.monotonic() + 60\n"
        "        while not src.stats.errors_by_reason and time.monotonic() < end:\n"
        "            await asyncio.sleep(0.05)\n"
        "        print('RECEIVED', src.stats.received, dict(src.stats.errors_by_reason), flush=True)\n"
        "        print('LAST', src.stats.last_error, flush=True)\n"
        "    finally:\n"
        "        await src.stop()\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", child, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, f"the camera took its process down ({run.returncode}): {run.stderr[-500:]}"
    assert "RECEIVED 0 {'unsupported_frame': 1}" in run.stdout, run.stdout + run.stderr[-500:]
    last = run.stdout.split("LAST ", 1)[1]
    assert str(path) in last and "bottom-up" in last and "ffmpeg -i" in last and "-c:v mjpeg" in last
