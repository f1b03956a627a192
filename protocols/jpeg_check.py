"""A JPEG damaged past its header, told from a whole one without a second decoder.

libjpeg only *warns* about a JPEG whose coded data is cut short or corrupt ("premature end of data
segment", "found marker 0xd5 instead of RST3"): OpenCV prints the warning and returns an image whose
missing part is filled in, so a damaged frame would reach the model as a part. Two checks catch the
damage cameras really produce (a part cut short and closed with an end marker, a lost chunk, a run of
zeros, two frames spliced), each cheap beside the decode itself (measured: 2-5 % of a 640x480 or
1920x1080 decode):

- ``coded_damage(data)``: walks the markers as libjpeg does; in a JPEG with restart markers, those in
  each scan's coded data must come in order (RST0..RST7, RST0, ...) and, in every scan of a baseline,
  extended or progressive image closed by the end marker, be no fewer than the MCUs it codes (a scan of one
  component: its blocks) and the restart interval make; a scan must end at a marker (a JPEG without one is
  cut short). numpy finds the markers, so this is a pass over the bytes in C; a JPEG without
  restart markers costs only the walk over its header (extraneous and fill bytes stepped over in C, at most
  ``_JPEG_MAX_SEGMENTS`` markers and ``_JPEG_MAX_NOTES`` comment or application segments holding bytes: a
  crafted file of more, which decoded, is not checked further).
- ``grey_filled(data, image)``, after decoding: what libjpeg fills in where the coded data ran out is
  blocks of exactly 128 in every channel (64 for a CMYK JPEG), down to the image's last block. When a
  corner block (the last block is bottom-right, or another corner once the decode applied the JPEG's EXIF
  orientation) is that grey, the JPEG is decoded once more with other bytes put before its end marker: a
  whole JPEG ignores them (same image), one that ran out decodes them as data (another image). So a real
  image that happens to end in that flat grey is not refused, and the second decode runs only for such
  images.

Limits: coded data that is damaged but neither runs out nor breaks the restart markers needs a full
entropy decode to be seen and is not caught: a single bit flipped, or, in a JPEG without restart markers,
damage that leaves more coded data than the image needs (libjpeg's "extraneous bytes" warning; about
half of two frames spliced, measured); a progressive JPEG's cut-short later scans leave a blurred image,
not grey: one closed before its scans have sent every coefficient is refused before the decode
(``image_header.jpeg_scans_over``), one cut within its last scan is caught by its restart markers only (the
standard scripts' last scan refines the luminance's finest bit: the rows after the cut ~1.4 grey levels off).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["coded_damage", "damaged_jpeg", "grey_filled"]

_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# the processes whose scans' restart markers are counted by MCU (Huffman-coded: baseline, extended, progressive)
_COUNTED = frozenset({0xC0, 0xC1, 0xC2})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RST0-7, SOI: no length field
# a JPEG's extraneous bytes before a marker, then its fill bytes (0xFF): stepped over in C, as libjpeg steps over them;
# a 0xFF followed by 0x00 (a stuffed byte) is no marker but extraneous bytes too (T.81 B.1.1.2; libjpeg's next_marker):
# the walks step over it as one of their markers (one pattern stepping over stuffed bytes too ran its loop in C at
# ~20 ns a byte, 2 s for 100 MB of them, and the walk's bound on markers no longer bounded it)
_TO_MARKER = re.compile(rb"[^\xff]*+\xff*+")
_STUFFED = 0x00  # after 0xFF: a stuffed byte, no marker
# a JPEG's markers walked at most (tens in a JPEG's header, a few hundred with an ICC profile or XMP in pieces): a
# crafted header of 1-byte or empty segments (up to 50 million in the 201 MB a frame may take) held the camera's
# thread for tens of seconds; past it the file is not read further
_JPEG_MAX_SEGMENTS = 1 << 12
# ... of which this many more may be comment or application segments holding bytes (COM, APPn: an ICC profile, XMP,
# a camera's notes in pieces; a legal JPEG of 5,000 comments was refused): each steps over 5 bytes or more (65,536
# one-byte comments made a frame cost ~15 times a normal one's walk, in a loop holding the GIL)
_JPEG_MAX_NOTES = 1 << 13
# put before the end marker to see whether a decode ran out of data: varied bytes, no 0xFF (not zero bytes:
# libjpeg itself decodes zero bits where data runs out; nor one repeated byte: measured to change nothing in
# about a third of the cases)
_FILL = bytes((i * 167 + 13) % 255 for i in range(256))
# what a block libjpeg filled in decodes to: 128 (YCbCr, grey), 64 (CMYK, as OpenCV turns it)
_FILLED = (128, 64)


def damaged_jpeg(data: bytes, image: Any, flags: int) -> str | None:
    """Why a JPEG that decoded (``image``, from ``data`` with ``flags``) is damaged past its header, or None
    (also for anything that is not a JPEG): what the camera source skips as ``corrupt_frame`` and the
    trainer's image reading refuses with the file's path."""
    damage = coded_damage(data)
    if damage is not None:
        return f"a JPEG whose coded data is damaged: {damage}"
    if grey_filled(data, image, flags):
        return (
            "a JPEG whose coded data runs out before its last blocks (the decoder fills them in grey): cut "
            "short or damaged, then closed with an end marker"
        )
    return None


def coded_damage(data: bytes) -> str | None:
    """Why the coded data of this JPEG is damaged (one line), or None when its markers are in order (and
    for anything that is not a JPEG). Never raises on malformed input."""
    if data[:2] != b"\xff\xd8":
        return None
    try:
        return _walk(data)
    except (IndexError, ValueError):
        return None  # a header libjpeg refuses by itself: the decode says so


def _walk(data: bytes) -> str | None:

    n = len(data)
    i = 2
    restart = 0  # DRI: MCUs per restart interval, 0 = none
    # marker, width, height, its components (id, h, v) in frame order
    sof: tuple[int, int, int, list[tuple[int, int, int]]] | None = None
    scans = 0
    steps = 0
    for _ in range(_JPEG_MAX_SEGMENTS + _JPEG_MAX_NOTES):
        if steps >= _JPEG_MAX_SEGMENTS:
            break
        steps += 1  # (given back below for a comment or application segment holding bytes)
        # a marker: extraneous and fill bytes skipped as libjpeg skips them
        i = _TO_MARKER.match(data, i).end()  # type: ignore[union-attr]
        if i >= n:
            return "cut short (no end-of-image marker)" if scans else None
        m = data[i]
        i += 1
        if m == 0xD9:
            return None
        if m == _STUFFED or m in _STANDALONE:  # (a stuffed byte: extraneous, one step of the walk)
            continue
        if i + 2 > n:
            return "cut short (no end-of-image marker)" if scans else None
        length = (data[i] << 8) | data[i + 1]
        if length > 2 and (m == 0xFE or m & 0xF0 == 0xE0):
            steps -= 1
        if m == 0xDD and length >= 4:
            restart = (data[i + 2] << 8) | data[i + 3]
        elif m in _SOF and sof is None and length >= 8:
            h = (data[i + 3] << 8) | data[i + 4]
            w = (data[i + 5] << 8) | data[i + 6]
            # its components in frame order, (id, h, v): an id may repeat (against T.81, yet libjpeg-turbo decodes
            # such a file), and a table by id lost the sampling of all but one of them
            comps = [
                (data[i + 8 + 3 * c], data[i + 9 + 3 * c] >> 4, data[i + 9 + 3 * c] & 15)
                for c in range(data[i + 7])
            ]
            sof = (m, w, h, comps)
        if m != 0xDA:
            i += length
            continue
        # a scan: its header, then coded data up to the first marker that is not a restart marker
        if not restart:  # nothing to check in coded data without restart markers (a cut one: the decode)
            return None
        scans += 1
        ns, start = data[i + 2], i + 3  # its components, and where the first one's id is
        i += length
        count, i, wrong = _restart_markers(data, i)  # restart markers in this scan, the marker ending it
        if i < 0:
            return "cut short (its coded data ends without an end-of-image marker)"
        if wrong is not None:
            return (
                f"restart marker RST{wrong[1]} where RST{wrong[2]} belongs (at byte {wrong[0]}): "
                "part of the coded data is missing or out of place"
            )
        # every scan of a sequential or progressive image (Huffman-coded), not its first alone: a progressive JPEG cut
        # within its last scan and closed with an end marker sends all its scans, so the scan count passes it
        # (a one-component scan whose id the frame gives to components of different samplings: which one it codes
        # is the decoder's guess, its count not checked; a scan of several counts MCUs, whatever the ids)
        if (
            sof is not None
            and sof[0] in _COUNTED
            and ns
            and (ns > 1 or len({(c[1], c[2]) for c in sof[3] if c[0] == data[start]}) <= 1)
        ):
            _, w, h, comps = sof
            hmax = max((c[1] for c in comps), default=1) or 1
            vmax = max((c[2] for c in comps), default=1) or 1
            # one component (every AC scan of a progressive image): its blocks, not MCUs of the largest sampling
            if ns == 1:
                # (an id of no component: not counted)
                ch, cv = next(((c[1], c[2]) for c in comps if c[0] == data[start]), (0, 0))
                mcus = -(-w * ch // (8 * hmax)) * -(-h * cv // (8 * vmax))
            else:
                mcus = -(-w // (8 * hmax)) * -(-h // (8 * vmax))
            want = -(-mcus // restart) - 1
            # fewer: coded data missing; one more is what some encoders put before the end marker (no harm)
            if count < want and data[i + 1] == 0xD9:
                return (
                    f"{count} restart markers in scan {scans} where its size and restart interval make {want}: "
                    "part of the coded data is missing"
                )
    return None  # more markers than an encoder writes (a crafted file that decoded): not checked further


# the coded data is looked through this many bytes at a time (a whole file's positions of 0xFF at once, in int64,
# took 11 bytes for each byte of a file of FF 00 pairs: 2 GB for the 190 MB a 5000x5000 image's file may take)
_CODED_WINDOW = 1 << 20
# ... starting with this many and doubling each round (a window of 1 MB for every scan of a file of thousands of
# tiny scans before 1 MB of coded data looked through 1 MB a scan: 20 s for one frame)
_CODED_FIRST = 1 << 12


def _restart_markers(data: bytes | memoryview, i: int) -> tuple[int, int, tuple[int, int, int] | None]:
    """A scan's coded data from ``i``: how many restart markers it holds, where the marker ending it is (-1:
    none, cut short) and the first restart marker out of order (RST0..RST7, RST0, ...: its byte, its number,
    the number that belongs there) or None; looked through in C, ``_CODED_FIRST`` bytes, then twice as many
    each round up to ``_CODED_WINDOW``."""
    import numpy as np

    a = np.frombuffer(data, np.uint8)
    n, count = len(a), 0
    first_wrong: tuple[int, int, int] | None = None
    size = min(_CODED_FIRST, _CODED_WINDOW)
    while i < n - 1:
        end = min(n, i + size + 1)
        w = a[i:end]
        ff = np.flatnonzero(w[:-1] == 0xFF)
        nxt = w[ff + 1]
        keep = (nxt != 0) & (nxt != 0xFF)
        marks, codes = ff[keep] + i, nxt[keep]
        ends = np.flatnonzero((codes < 0xD0) | (codes > 0xD7))
        stop = int(ends[0]) if len(ends) else len(codes)
        rst = codes[:stop].astype(np.int64) - 0xD0
        wrong = np.flatnonzero(rst != (np.arange(stop) + count) % 8)
        if len(wrong) and first_wrong is None:
            at = int(wrong[0])
            first_wrong = (int(marks[at]), int(rst[at]), (count + at) % 8)
        count += stop
        if len(ends):
            return count, int(marks[stop]), first_wrong
        i = end - 1
        size = min(2 * size, _CODED_WINDOW)
    return count, -1, first_wrong


def grey_filled(data: bytes, image: Any, flags: int) -> bool:
    """True when ``image`` (``data`` decoded with ``flags``) ends in the flat grey libjpeg fills in where
    coded data ran out, and the coded data is seen to have run out: bytes put before the end marker change
    the image (a whole JPEG ignores them). Decodes again only for an image with a corner block that grey."""
    import numpy as np

    if data[:2] != b"\xff\xd8" or image is None or image.dtype != np.uint8:
        return False
    # the coded image's last block, at the corner its EXIF orientation (applied by the decode) turned it to
    corners = (image[-8:, -8:], image[-8:, :8], image[:8, -8:], image[:8, :8])
    if image.size == 0 or not any(c.flat[0] in _FILLED and (c == c.flat[0]).all() for c in corners):
        return False
    end = data.rfind(b"\xff\xd9")
    if end < 0:
        return False  # no end marker: the decode refuses it by itself
    end = len(data[:end].rstrip(b"\xff"))  # before fill bytes too: a cut after 0xFF would make a marker
    import cv2

    def same(b: bytes) -> bool:
        again = cv2.imdecode(np.frombuffer(b, np.uint8), flags)
        return again is not None and again.shape == image.shape and np.array_equal(again, image)

    return not same(data[:end] + _FILL + data[end:])
