"""The AVI layouts OpenCV's FFmpeg reader takes the process down on, told from the file's RIFF headers before it opens.

An uncompressed AVI of 24-bit rows stored bottom-up (``BI_RGB``, a positive ``biHeight``: the usual DIB layout
Windows tools write) is flipped by FFmpeg's raw decoder through a negative line stride; OpenCV 5.1.0 returns one
frame of it and then aborts the whole process (``malloc_consolidate(): invalid chunk size``, or a segmentation fault
for an odd width). That layout alone is already in OpenCV's BGR output format, so OpenCV's handling of such a frame
is the likely fault (inferred, not traced in its source). Measured on every
uncompressed layout: 1, 4 and 8-bit paletted, 16 and 32-bit (``BI_RGB`` and ``BI_BITFIELDS``), widths needing row
padding, top-down (a negative ``biHeight``) are all read whole; only 24-bit ``BI_RGB`` bottom-up crashes.

The headers are walked as FFmpeg's AVI demuxer walks them (flat: a ``LIST`` is entered, never skipped by its size),
up to the ``movi`` list, reading a few bytes per chunk: a truncated file or one whose sizes lie ends the walk, and
at most ``_MAX_CHUNKS`` chunk headers are read, so a hostile header can neither hang it nor make it allocate."""

from __future__ import annotations

import struct
from pathlib import Path

__all__ = ["crashing_layout"]

# FFmpeg's avidec probe: the RIFF forms it opens as AVI
_FORMS = {
    (b"RIFF", b"AVI "),
    (b"RIFF", b"AVIX"),
    (b"RIFF", b"AVI\x19"),
    (b"RIFF", b"AMV "),
    (b"ON2 ", b"ON2f"),
}
_MAX_CHUNKS = 10_000  # an AVI's header holds a few dozen; hostile input stops here
_BI_RGB = bytes(4)


def crashing_layout(path: str | Path) -> str | None:
    """What in ``path``'s first video stream OpenCV's reader would abort the process on (a phrase), or None: not an
    AVI, not such a stream, or headers too damaged to tell (then OpenCV judges the file as before)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or (head[:4], head[8:12]) not in _FORMS:
                return None
            pos, video = 12, False
            for _ in range(_MAX_CHUNKS):
                f.seek(pos)
                h = f.read(12)
                if len(h) < 8:
                    return None
                fcc, size = h[:4], struct.unpack("<I", h[4:8])[0]
                if fcc in (b"LIST", b"RIFF"):
                    if h[8:12] == b"movi" or len(h) < 12:
                        return None  # the header is over: no such stream
                    pos += 12  # entered, as FFmpeg does
                    continue
                if fcc == b"strh":
                    if video:
                        return None  # a later stream: OpenCV reads the first video stream
                    video = h[8:12] == b"vids"
                elif fcc == b"strf" and video:
                    f.seek(pos + 8)
                    bmp = f.read(20)  # BITMAPINFOHEADER: size, width, height, planes, bit count, compression
                    if len(bmp) < 20:
                        return None
                    _, width, height, _, bits, compression = struct.unpack("<IiiHH4s", bmp)
                    if compression == _BI_RGB and bits == 24 and height > 0:
                        return f"uncompressed 24-bit RGB rows stored bottom-up ({width}x{height})"
                    return None
                pos += 8 + size + (size & 1)
    except OSError:
        return None  # OpenCV's open says what is wrong
    return None
