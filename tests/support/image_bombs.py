"""Image files whose header declares far more pixels than their data holds: what a hostile or broken
source drops into a camera folder or a dataset. Each starts from a real small file made by OpenCV, with
the size fields of its header rewritten (the PNG's chunk CRC recomputed, so the header is valid)."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np


def small(ext: str, seed: int = 0, params: list[int] | None = None) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (23, 37, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok
    return buf.tobytes()


def png_declaring(w: int, h: int) -> bytes:
    b = bytearray(small(".png"))
    b[16:24] = struct.pack(">II", w, h)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))  # IHDR's CRC over type + data
    return bytes(b)


def jpeg_declaring(w: int, h: int) -> bytes:
    b = bytearray(small(".jpg"))
    i = b.index(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
    b[i + 5 : i + 9] = struct.pack(">HH", h, w)
    return bytes(b)


def bmp_declaring(w: int, h: int) -> bytes:
    b = bytearray(small(".bmp"))
    b[18:26] = struct.pack("<ii", w, -h)  # a top-down bitmap: negative height
    return bytes(b)


def tiff_declaring(w: int, h: int) -> bytes:
    """A little-endian TIFF whose first directory's ImageWidth/ImageLength say ``w`` x ``h``."""
    b = bytearray(small(".tif"))
    (off,) = struct.unpack_from("<I", b, 4)
    (count,) = struct.unpack_from("<H", b, off)
    for k in range(count):
        p = off + 2 + 12 * k
        tag, typ = struct.unpack_from("<HH", b, p)
        if tag in (256, 257):
            v = w if tag == 256 else h
            if typ != 3 or v >= 65536:  # as a LONG (type 4), which holds any size
                struct.pack_into("<HI", b, p + 2, 4, 1)
                struct.pack_into("<I", b, p + 8, v)
            else:
                struct.pack_into("<H", b, p + 8, v)
    return bytes(b)


def webp_declaring(w: int, h: int) -> bytes:
    """An extended (VP8X) WebP header with a ``w`` x ``h`` canvas around a small lossy frame."""
    inner = small(".webp")[12:]  # the VP8 chunk
    vp8x = (
        b"VP8X"
        + struct.pack("<I", 10)
        + bytes(4)
        + (w - 1).to_bytes(3, "little")
        + (h - 1).to_bytes(3, "little")
    )
    body = b"WEBP" + vp8x + inner
    return b"RIFF" + struct.pack("<I", len(body)) + body


DECLARING = {
    "PNG": png_declaring,
    "JPEG": jpeg_declaring,
    "BMP": bmp_declaring,
    "TIFF": tiff_declaring,
    "WebP": webp_declaring,
}
