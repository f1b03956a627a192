"""Why an image file is not read as the agent's camera would read it, from its bytes: the checks of
``protocols.image_header`` that ``model-packager build --input-images`` needs, kept the same here because
``model_packager`` imports nothing of ours (DESIGN.md). A TIFF of several pages, or with a preview first
(decoders read the first directory only), an image with transparent pixels (OpenCV's colour read drops
the alpha: the colours beneath it are no part a camera shows), and the kinds OpenCV cannot decode (a 12-bit
or lossless JPEG, a TIFF of 2-7-bit grey pixels) are refused with the camera's reason, so the statistics
are never taken from pixels the agent would not judge. tests/unit/test_image_readers_agree.py holds the
two readers to the same pixels or refusals; change both together."""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["not_one_image", "transparent", "undecodable_kind"]

_TIFF_MAGIC = frozenset({b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"})
_TIFF_MAX_DIRECTORIES, _TIFF_MAX_TAGS = 256, 1024  # a crafted chain of overlapping directories stays cheap
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # JPEG frame headers (C4, C8, CC are not)
_LOSSLESS_SOF = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RST0-7, SOI: no length field


def not_one_image(data: bytes) -> str | None:
    """Why a TIFF is not read as one image (several full-resolution pages, or a reduced-resolution copy
    first), or None: ``protocols.image_header.tiff_not_one_image``."""
    dirs = _tiff_directories(data)
    if dirs and dirs[0].get(254, 0) & 1 and len(dirs) > 1:
        return (
            "its first image is a reduced-resolution copy (a preview), which is what would be read; save "
            "the full image alone in the file"
        )
    pages = sum(not d.get(254, 0) & 1 for d in dirs)
    if pages > 1:
        more = " or more" if len(dirs) == _TIFF_MAX_DIRECTORIES else ""
        return (
            f"a TIFF of {pages}{more} pages (images); one image per file is read (the first, the others "
            "would be lost): save each page as its own file"
        )
    return None


def transparent(data: bytes) -> str | None:
    """Why an image with transparent pixels is not read (``protocols.image_header.transparent_pixels`` and
    the camera's refusal), or None; decoded a second time only when its header allows alpha."""
    if not _may_be_transparent(data):
        return None
    import cv2
    import numpy as np

    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if full is None or full.ndim != 3 or full.shape[2] not in (2, 4):
        return None
    alpha = full[:, :, -1]
    if alpha.dtype not in (np.uint8, np.uint16):
        return None
    if data[:2] == b"BM" and not alpha.any():  # a BMP's alpha left 0 everywhere: unused, not clear
        return None
    clear = int(np.count_nonzero(alpha < (255 if alpha.dtype == np.uint8 else 65535)))
    if not clear:
        return None
    return (
        f"{clear} of its {alpha.size} pixels are transparent (an alpha channel); the model would judge the "
        "colours stored beneath them: save the images without transparency"
    )


def undecodable_kind(data: bytes) -> str | None:
    """Why a file OpenCV could not decode is of a kind it does not read (``protocols.image_header.
    _undecodable_kind``), or None: then it is taken as damaged."""
    if data[:2] == b"\xff\xd8":
        frame = _jpeg_frame(data)
        if frame is None:
            return None
        if frame[1] != 8:
            return (
                f"a {frame[1]}-bit JPEG, which this reader cannot decode (8-bit JPEGs only): have the camera "
                "or tool save 8-bit JPEG, or 16-bit PNG or TIFF (read by pixel_bits / --pixel-bits)"
            )
        if frame[0] in _LOSSLESS_SOF:
            return (
                "a lossless JPEG, which this reader cannot decode: have the camera or tool save PNG or TIFF, "
                "or baseline JPEG"
            )
        return None
    first = (_tiff_directories(data) or [{}])[0]
    bits, photometric = first.get(258, 1), first.get(262, -1)
    if photometric in (0, 1) and bits not in (1, 8, 10, 12, 14, 16, 32, 64):  # the grey ones OpenCV reads
        return f"a TIFF of {bits}-bit grey pixels, which this reader cannot decode: save it as 8-bit grey"
    return None


def _may_be_transparent(data: bytes) -> bool:
    magic = data[:4]
    if magic[:2] == b"BM":  # 32-bit, with an alpha mask (a V3-V5 header's, or BI_ALPHABITFIELDS's fourth)
        if len(data) < 70:
            return False
        header, (bpp, compression) = (
            struct.unpack_from("<I", data, 14)[0],
            struct.unpack_from("<HI", data, 28),
        )
        return (
            bpp == 32
            and compression in (3, 6)
            and (header >= 56 or compression == 6)
            and struct.unpack_from("<I", data, 66)[0] != 0
        )
    if magic == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8X":
            return len(data) > 20 and bool(data[20] & 0x10)
        return chunk == b"VP8L" and len(data) >= 25 and bool(data[24] & 0x10)
    if magic == b"\x89PNG" and len(data) >= 26:
        idat = data.find(b"IDAT")
        return data[25] in (4, 6) or data.find(b"tRNS", 0, idat if idat > 0 else len(data)) >= 0
    if magic not in _TIFF_MAGIC:
        return False
    first = (_tiff_directories(data) or [{}])[0]
    colours = {0: 1, 1: 1, 2: 3}.get(first.get(262, -1))  # PhotometricInterpretation: grey or RGB
    return colours is not None and first.get(277, 1) > colours and first.get(338, 2) != 0


def _tiff_directories(data: bytes) -> list[dict[int, int]]:
    """Each page's SHORT/LONG tags' first values (``protocols.image_header.tiff_directories``)."""
    if data[:4] not in _TIFF_MAGIC:
        return []
    e = "<" if data[:1] == b"I" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    fmt_off, fmt_count, entry, value_at = ("Q", "Q", 20, 12) if big else ("I", "H", 12, 8)
    size_count = struct.calcsize(fmt_count)
    found: list[dict[int, int]] = []
    seen = set[int]()
    try:
        off = struct.unpack_from(e + fmt_off, data, 8 if big else 4)[0]
        while off and off not in seen and len(seen) < _TIFF_MAX_DIRECTORIES:
            seen.add(off)
            count = struct.unpack_from(e + fmt_count, data, off)[0]
            if count > _TIFF_MAX_TAGS:
                break
            tags: dict[int, int] = {}
            for k in range(count):
                p = off + size_count + k * entry
                tag, typ = struct.unpack_from(e + "HH", data, p)
                if typ in (3, 4):  # SHORT, LONG
                    fmt, size = ("H", 2) if typ == 3 else ("I", 4)
                    at = p + value_at
                    if (
                        struct.unpack_from(e + ("Q" if big else "I"), data, p + 4)[0] * size
                        > entry - value_at
                    ):
                        at = struct.unpack_from(e + fmt_off, data, at)[0]  # stored elsewhere
                    try:
                        tags[tag] = struct.unpack_from(e + fmt, data, at)[0]
                    except struct.error:
                        pass
            found.append(tags)
            off = struct.unpack_from(e + fmt_off, data, off + size_count + count * entry)[0]
    except struct.error:
        pass
    return found


def _jpeg_frame(data: Any) -> tuple[int, int, int, int] | None:
    """``(marker, precision, width, height)`` of the first JPEG frame header, found as libjpeg finds it."""
    n, i = len(data), 2
    while i < n:
        while i < n and data[i] != 0xFF:
            i += 1
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA) or i + 2 > n:
            return None
        length = (data[i] << 8) | data[i + 1]
        if length < 2:
            return None
        if marker in _SOF:
            if i + 7 > n or length < 8:
                return None
            return marker, data[i + 2], (data[i + 5] << 8) | data[i + 6], (data[i + 3] << 8) | data[i + 4]
        i += length
    return None
