"""Whether an image file is whole or cut short (an upload, a copy or a camera's write still under way, or
stalled), told from its structure without decoding it, for every kind ``image_header.image_kind`` knows.

``cut_short(data)`` says why ``data`` is an image cut short, or None: whole as far as its structure tells,
or no image of those kinds (nothing to say). Each kind by what says where it ends:

- JPEG: an end-of-image marker after the start of its coded data (its header's segments stepped over, so
  that an EXIF thumbnail's end marker is not taken for the image's); bytes after it are allowed (a
  trailer some cameras append);
- PNG: its chunks walked by their lengths to its IEND chunk (bytes after it allowed; an IEND's bytes within a
  chunk, a thumbnail PNG kept in an ancillary chunk, are no end), at most as many as ``image_header`` walks;
- BMP: its pixel array, from the header's pixel-data offset and the size its width, height and bit depth
  make (uncompressed), or the header's image size (RLE, an embedded JPEG/PNG), or failing both the
  header's file size;
- TIFF: every image directory of its chain, the tag values stored outside them and every strip's or
  tile's offset + byte count within the file (a chain that loops is read once round, at most 256
  directories of at most 1024 tags, 4096 tags in all: past that, not walked further);
- PNM: the raster its header's width, height and maximum value make (binary), or as many samples
  (plain, text);
- GIF: its blocks up to the trailer (0x3B);
- WebP: the RIFF size in its header.

``png_damaged(data)`` tells a PNG that is whole but damaged in its chunk chain from one cut short: it ends with its
IEND chunk (written last) and its chain breaks before it at written bytes. A file rewritten in place and paused
(the new bytes, then the old file's tail and IEND) looks so too: a caller judges it only once its bytes stay so.

With ``exact_end`` (an MJPEG part told whole by its Content-Length) a JPEG or PNG must *end* with its end
marker (line ends, spaces and zeros after it aside): a part whose declared length runs into the next part
is then not taken as whole.

A plain PNM's last sample may end the file without a line end or space after it, which the format allows; until
its writer is known to be done, digits at the end may be a number cut within its digits ('25' of '255') and
are not counted. With ``settled`` (a drop folder's file unchanged past its wait: its writer is done) they are:
a plain PNM with every sample there is then whole.

Limits: a file that is as long as its header says but not yet filled in (a writer that sets the size
first and writes the bytes later, a copy that preallocates) is whole by its structure: where the kind has
an end marker (JPEG, PNG, GIF), it is caught; a BMP's, a binary PNM's or an uncompressed TIFF's missing
pixels are not. Cheap beside a decode: header fields, a search from the end for the end marker, the
TIFF's strip tables as arrays (numpy), a plain PNM's digits counted in C (measured in
bench/camera_drop_bench.py). Never raises on malformed input, never allocates by what a header declares.
"""

from __future__ import annotations

import re
import struct

from protocols.image_header import (  # read as image_header reads them
    _PNG_CHUNK_BYTES,
    _PNG_MAX_CHUNKS,
    _STANDALONE,
    _STUFFED,
    _TIFF_MAX_DIRECTORIES,
    _TIFF_MAX_TAGS,
    _TIFF_MAX_TAGS_WALKED,
    _TIFF_SEGMENTS,
    _TIFF_TYPE_SIZE,
    _TO_MARKER,
    image_kind,
    image_size,
)

__all__ = ["ChainWalked", "cut_short", "png_damaged"]

_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # IEND: no data, then its CRC
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GAP = bytes(
    16
)  # a run of zeros at a chunk header this long: a gap not yet written, not damage (_unwritten_at)
_PAD = b"\r\n\x00 "  # what may follow an end marker in a multipart body or a padded write
# the first bytes of each kind: a file that is no more than a beginning of one of these is an image cut short
# within its header (a named upload that has written only a few bytes)
_STARTS = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"MM\x00+",
    b"RIFF",
    b"GIF87a",
    b"GIF89a",
)
_SEGMENTS_AT_ONCE = 1 << 16  # a TIFF's strips or tiles checked at a time (a few MB of arrays)
_PNM_AT_ONCE = 1 << 20  # a plain PNM's bytes counted at a time (a few MB of masks)
_HEADER_BYTES = 64  # shorter than any header these kinds need, but for a PNM with comments
# a PNM header cut short: its magic, then whitespace, comments and digits only (possessive: no backtracking)
_PNM_START = re.compile(rb"P[1-6]?(?:\s|#[^\r\n]*+|\d)*+\Z")
_PNM_FIELD = re.compile(rb"(?:\s|#[^\r\n]*+)*+(\d+)")
# a JPEG's header segments and a GIF's blocks and sub-blocks walked at most (tens in a JPEG, a few hundred with an ICC
# profile or XMP in pieces; 16 MB of a GIF, which the camera never reads): a crafted file of 1-byte ones (up to 100
# million in the 201 MB a frame may take) held the camera's thread for tens of seconds; past it the decode says
_JPEG_MAX_SEGMENTS, _GIF_MAX_BLOCKS = 1 << 12, 1 << 16


class ChainWalked:
    """How far ``cut_short`` walked a PNG's chunk chain in a buffer that grows (an answer or a part read in pieces):
    given again with the same buffer, more bytes after those it held and none of those changed, the walk goes on
    from the last whole chunk it reached instead of from the signature. A camera trickling a PNG of many small
    chunks had the whole chain walked again after each read (the snapshot reader's CPU 0.6 -> 1.5 s an answer)."""

    __slots__ = ("at", "chunks")

    def __init__(self) -> None:
        # the first chunk not known whole (the one after the signature), and how many chunks were walked to it
        self.at, self.chunks = 8, 0


def cut_short(
    data: bytes, exact_end: bool = False, settled: bool = False, walked: ChainWalked | None = None
) -> str | None:
    """Why ``data`` is an image cut short (one line: the kind, what is missing, its size), or None: whole by
    its structure, or not an image of a kind ``image_kind`` knows. An empty ``data`` is cut short (nothing
    written yet). See the module's docstring for each kind, ``exact_end`` and ``settled``; ``walked``, kept by
    the caller for one buffer that only grows, lets a PNG's walk go on where the last call left it."""
    n = len(data)
    if n == 0:
        return "an empty file (nothing of it written yet)"
    kind = image_kind(data)
    if kind is None and data[:1] == b"P" and image_size(data) is not None:
        # a PNM whose comments before its size fill more than image_kind reads (``SNIFF_BYTES``), as the decode
        # reads its header (``image_size``): checked as one, not taken as whole unread
        kind = "PNM"
    try:
        if kind is None:
            return _header_cut(data)
        # a plain PNM's digits at its end are a whole sample once its writer is done (``settled``)
        if kind == "PNM":
            why = _pnm(data, settled)
        elif kind == "PNG":
            why = _png(data, exact_end, walked)
        else:
            why = _CHECKS[kind](data, exact_end)
    except (struct.error, IndexError, ValueError, OverflowError):
        return None  # damaged past what tells its end: the decode says so
    return None if why is None else f"a {kind} cut short ({n} bytes): {why}"


def _header_cut(data: bytes) -> str | None:
    n = len(data)
    if n < _HEADER_BYTES and any(s.startswith(data[: len(s)]) for s in _STARTS):
        return f"an image cut short within its header ({n} bytes)"
    if n < 4096 and _PNM_START.match(data):
        return f"a PNM cut short within its header ({n} bytes)"
    return None


def _jpeg(data: bytes, exact_end: bool) -> str | None:
    if exact_end:
        return None if _ends_with(data, b"\xff\xd9") else "no end-of-image marker at its end"
    n, i = len(data), 2
    # the header's segments, as libjpeg steps over them, to the first scan
    for _ in range(_JPEG_MAX_SEGMENTS):
        # extraneous bytes and fill bytes before a marker, as libjpeg steps over them
        i = _TO_MARKER.match(data, i).end()  # type: ignore[union-attr]  # (it matches an empty run too)
        if i >= n:
            return "its header ends before its image data"
        marker = data[i]
        i += 1
        if marker == 0xD9:
            return None  # an end before any image data: no image, the decode says so
        if marker == _STUFFED or marker in _STANDALONE:  # (a stuffed byte: extraneous, one step of the walk)
            continue
        if i + 2 > n:
            return "its header ends before its image data"
        length = (data[i] << 8) | data[i + 1]
        if marker == 0xDA:
            break
        i += length
    else:
        return None  # more header segments than an encoder writes: damaged, the decode says so
    # in coded data a 0xFF is followed by 0x00 or a restart marker: an end marker there is the image's end
    return None if data.rfind(b"\xff\xd9", i) >= 0 else "no end-of-image marker after its image data"


def _png(data: bytes, exact_end: bool, walked: ChainWalked | None = None) -> str | None:
    # its chunks walked by their lengths from the signature: an IEND's bytes inside a chunk (a thumbnail PNG kept in
    # an ancillary chunk, a text, image data) are no end; the IEND the chain reaches is (a search for its bytes took
    # a file cut within its image data for whole, after such a chunk). With ``walked``, from the last whole chunk
    # an earlier call reached in the same buffer (bytes only added since: the chunks before it are as they were)
    mark = ChainWalked() if walked is None else walked
    n, i, k = len(data), mark.at, mark.chunks
    bound = max(_PNG_MAX_CHUNKS, n // _PNG_CHUNK_BYTES)
    while k < bound:
        mark.at, mark.chunks = i, k  # every chunk before ``i`` whole and walked
        if i + 8 > n:
            return f"its chunks end at byte {i}: no IEND chunk (its end)"
        length, typ = struct.unpack_from(">I4s", data, i)
        if typ == b"IEND":
            if data[i : i + 12] != _PNG_END:  # cut short, or damaged (the decode says so)
                return None if i + 12 <= n else f"its IEND chunk at byte {i} is cut short"
            if exact_end and data[i + 12 :].strip(_PAD):  # bytes after it: a part running into the next
                return f"bytes after its IEND chunk (at byte {i})"
            return None
        if not typ.isalpha():
            # what is there is no chunk: bytes not yet written (a copy that sized the file first), or damage
            return f"no chunk at byte {i} (its chunk chain breaks off before an IEND chunk, its end)"
        if length > n - i - 12:
            return f"its {typ.decode('latin-1')!r} chunk at byte {i} runs to byte {i + 12 + length}: no IEND chunk (its end)"
        i, k = i + 12 + length, k + 1
    mark.at, mark.chunks = i, k
    return None  # more chunks than an encoder writes: damaged, the decode says so


def png_damaged(data: bytes) -> str | None:
    """Why a PNG that ``cut_short`` finds cut short is whole but damaged in its chunk chain (one line), or None: the
    file ends with its IEND chunk, which a writer writes last, and the chain breaks before it at bytes that were
    written: where a chunk belongs, a type of no chunk (not four letters; its length and type not all zeros: a copy
    that sized the file first holds zeros where it has not written yet), or a chunk whose length runs past that
    IEND (unless its bytes hold a PNG signature: a thumbnail PNG kept in a chunk, which a file cut short may end
    with the IEND of). A bit flipped in a chunk's length or type by storage or a copy; but a rewrite in place paused
    (rsync --inplace: the new bytes, then the old file's tail and IEND) leaves one too, so the drop folder judges it
    only once unchanged for its wait. Not a gap not yet written that starts or ends within a header
    (``_unwritten_at``)."""
    n = len(data)
    if data[:8] != _PNG_SIGNATURE or not _ends_with(data, _PNG_END):
        return None
    i = last = 8  # ``last``: the header of the last whole chunk walked
    try:
        for _ in range(max(_PNG_MAX_CHUNKS, n // _PNG_CHUNK_BYTES)):
            if i + 8 > n:
                return None
            length, typ = struct.unpack_from(">I4s", data, i)
            if typ == b"IEND":
                return None
            if not typ.isalpha():
                if not data[i : i + 8].strip(b"\x00") or _unwritten_at(data, last, i):
                    return (
                        None  # zeros: not written yet (a copy that sized the file first, or writes segments)
                    )
                return f"no chunk at byte {i} (bytes {typ.hex()} where a chunk's type belongs), before its IEND chunk"
            if length > n - i - 12:
                if data.find(_PNG_SIGNATURE, i + 8) >= 0 or _unwritten_at(data, last, i):
                    return None  # an embedded PNG's IEND may be the one it ends with: cut short, maybe
                return (
                    f"its {typ.decode('latin-1')!r} chunk at byte {i} declares {length} bytes, past its IEND chunk "
                    "at the file's end"
                )
            last, i = i, i + 12 + length
    except struct.error:
        return None
    return None


def _unwritten_at(data: bytes, *heads: int) -> bool:
    """Whether a run of 16 zeros overlaps the 8 header bytes at one of ``heads`` (the chunk where the chain breaks,
    the last whole one before it): bytes not yet written, of a copy writing segments out of order (its last segment
    first, zeros between). Paused a few bytes into a header, it leaves a length or half a type (not all zeros) before
    the zeros; a segment begun within one leaves zeros before the rest of it, a length zeroed in part by which the
    walk steps into image data and breaks there. Either was taken for damage (of a 1280x1024 frame's 8-KiB chunks,
    1,275 of 4,858 gaps ending about a header and 204 of 290,217 frontiers), none now.
    A bit flipped in a whole file leaves no such run at a header (a type is letters, the CRC before it zeros once in
    2**32) except where the walk steps into image data holding zeros (a PNG stored uncompressed): waited for then,
    and counted cut short, as before ``png_damaged``."""
    return any(data.find(_GAP, max(0, h - len(_GAP) + 1), h + 8 + len(_GAP) - 1) >= 0 for h in heads)


def _ends_with(data: bytes, end: bytes) -> bool:
    tail = data[-64:].rstrip(_PAD)
    if not tail and len(data) > 64:  # a long run of padding: rare, the whole is stripped
        tail = data.rstrip(_PAD)
    return tail.endswith(end)


def _bmp(data: bytes, _: bool) -> str | None:
    n = len(data)
    file_size, offset, header = struct.unpack_from("<I4xII", data, 2)
    if header == 12:  # OS/2 core header: 16-bit sizes, no compression
        if n < 26:
            return "its header is incomplete"
        w, h, bpp = struct.unpack_from("<HH2xH", data, 18)
        compression, image_bytes = 0, 0
    else:
        if n < 38:
            return "its header is incomplete"
        w, h, bpp, compression, image_bytes = struct.unpack_from("<ii2xHII", data, 18)
        if header == 64 and compression == 3:  # OS/2 2.x: 3 is Huffman-coded, not bit fields
            compression = 1
    if compression in (0, 3, 6) and w > 0 and bpp in (1, 2, 4, 8, 16, 24, 32):
        end = offset + (w * bpp + 31) // 32 * 4 * abs(h)
    elif image_bytes:  # RLE, an embedded JPEG or PNG: the header's size of it
        end = offset + image_bytes
    else:
        end = max(offset, file_size)
    if n < end:
        return f"its pixel data ends at byte {end} (the header's offset and size)"
    return None


def _tiff(data: bytes, _: bool) -> str | None:
    import numpy as np

    n = len(data)
    e = "<" if data[:1] == b"I" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    fmt_off, fmt_count, entry, value_at = ("Q", "Q", 20, 12) if big else ("I", "H", 12, 8)
    size_off, size_count = struct.calcsize(fmt_off), struct.calcsize(fmt_count)
    if n < (16 if big else 8):
        return "its header is incomplete"
    off = struct.unpack_from(e + fmt_off, data, 8 if big else 4)[0]
    if off == 0:  # libtiff writes its header so, the pixels next, and links its directory in when it is done
        return "no image directory yet (its header's first directory offset is 0, filled in when written)"
    seen: set[int] = set()
    walked = 0  # tags read across the chain: a crafted one of 256 directories of 1,024 tags is not read whole
    while off and off not in seen and len(seen) < _TIFF_MAX_DIRECTORIES:
        page = len(seen) + 1
        seen.add(off)
        if off + size_count > n:
            return f"its image directory {page} (at byte {off}) lies past its end"
        count = struct.unpack_from(e + fmt_count, data, off)[0]
        if count > _TIFF_MAX_TAGS:
            return None  # no real directory has this many: damaged, the decode says so
        walked += count
        if walked > _TIFF_MAX_TAGS_WALKED:
            return None  # more than real pages have (a file of several is refused anyway): not walked further
        if count == 0:  # what a file sized before it is written holds where its directory will be
            return f"its image directory {page} (at byte {off}) is empty"
        end = off + size_count + count * entry + size_off
        if end > n:
            return f"its image directory {page} (bytes {off}-{end}) lies past its end"
        arrays: dict[int, tuple[int, int, str]] = {}
        for k in range(count):
            p = off + size_count + k * entry
            tag, typ = struct.unpack_from(e + "HH", data, p)
            values = struct.unpack_from(e + fmt_off, data, p + 4)[0]
            size = _TIFF_TYPE_SIZE.get(typ)
            if size is None:
                continue  # an unknown type: its size unknown, its values not checked
            at = p + value_at
            if values * size > entry - value_at:  # stored elsewhere
                at = struct.unpack_from(e + fmt_off, data, at)[0]
                if at + values * size > n:
                    return f"tag {tag}'s values of image directory {page} (bytes {at}-{at + values * size}) lie past its end"
            if tag in (273, 279, 324, 325) and typ in (3, 4, 16):
                arrays[tag] = (at, values, {3: "u2", 4: "u4", 16: "u8"}[typ])
        for offsets_tag, counts_tag, what in _TIFF_SEGMENTS:
            if offsets_tag not in arrays or counts_tag not in arrays:
                continue
            (at_o, k_o, t_o), (at_c, k_c, t_c) = arrays[offsets_tag], arrays[counts_tag]
            if k_o != k_c:
                continue  # libtiff's own concern (it estimates missing byte counts)
            # a slice of the tables at a time: a crafted file's 25 million strips (a 200-MB file within the pixel
            # limit) cost as many loops, never 700 MB of 64-bit copies of its tables
            size_o, size_c = int(t_o[1]), int(t_c[1])
            for s in range(0, k_o, _SEGMENTS_AT_ONCE):
                k = min(_SEGMENTS_AT_ONCE, k_o - s)
                offsets = np.frombuffer(data, e + t_o, k, at_o + s * size_o).astype(np.uint64)
                counts = np.frombuffer(data, e + t_c, k, at_c + s * size_c).astype(np.uint64)
                past = (counts > 0) & (
                    (offsets > n) | (counts > np.uint64(n) - np.minimum(offsets, np.uint64(n)))
                )
                if past.any():
                    i = int(np.argmax(past))
                    start, stop = int(offsets[i]), int(offsets[i]) + int(counts[i])
                    return f"its {what} {s + i + 1} of {k_o} (bytes {start}-{stop}) reaches past its end"
        off = struct.unpack_from(e + fmt_off, data, end - size_off)[0]
    return None


def _pnm(data: bytes, settled: bool) -> str | None:
    import numpy as np

    magic = data[1:2]
    want = 2 if magic in b"14" else 3
    i, nums = 2, []
    for _ in range(want):  # image_kind has read this header whole: here only where its raster starts
        m = _PNM_FIELD.match(data, i)
        if m is None:
            return None
        nums.append(int(m.group(1)))
        i = m.end()
    i += 1  # the one whitespace byte after the last field
    w, h = nums[0], nums[1]
    if magic in b"456":  # binary
        depth = 2 if want == 3 and nums[2] > 255 else 1
        raster = (w + 7) // 8 * h if magic == b"4" else w * h * depth * (3 if magic == b"6" else 1)
        if len(data) < i + raster:
            return f"its raster ends at byte {i + raster} ({w}x{h} pixels)"
        return None
    # plain (text): as many samples as the header makes; a bitmap's digits may run together. Counted a slice at a
    # time (masks of the whole file were twice its size: ~200 MB for a 25-Mpx plain PGM), a sample split by a
    # slice's end counted once
    samples = w * h * (3 if magic == b"3" else 1)
    got, last = 0, False  # last: whether the slice before ended in a digit
    for s in range(min(i, len(data)), len(data), _PNM_AT_ONCE):
        a = np.frombuffer(data, np.uint8, min(_PNM_AT_ONCE, len(data) - s), s)
        if magic == b"1":
            got += int(np.count_nonzero((a == 0x30) | (a == 0x31)))
            continue
        digit = (a >= 0x30) & (a <= 0x39)
        got += int(np.count_nonzero(digit[1:] & ~digit[:-1])) + int(bool(digit[0]) and not last)
        last = bool(digit[-1])
    # its last sample may be cut within its digits ('25' of '255'), unless its writer is done (``settled``): the
    # format needs no whitespace after it
    if magic != b"1" and got == samples and last and not settled:
        got -= 1
    return None if got >= samples else f"{got} of its {samples} samples"


def _gif(data: bytes, _: bool) -> str | None:
    n = len(data)
    if n < 13:
        return "its header is incomplete"
    i, steps = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0), 0
    while i < n:
        steps += 1
        if steps > _GIF_MAX_BLOCKS:
            return None  # more blocks than a GIF the camera would see has (it reads none): not walked further
        block = data[i]
        if block == 0x3B:
            return None
        if block == 0x21:  # an extension: its label, then sub-blocks
            i += 2
        elif block == 0x2C:  # an image: its descriptor, local colour table, LZW code size, sub-blocks
            if i + 10 > n:
                break
            flags = data[i + 9]
            i += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
        else:
            return None  # damaged, not cut: not a GIF reader's business here
        # sub-blocks, each its length first, up to an empty one
        while i < n and data[i] and steps <= _GIF_MAX_BLOCKS:
            i += data[i] + 1
            steps += 1
        i += 1
    return "no trailer (its end)"


def _webp(data: bytes, _: bool) -> str | None:
    if len(data) < 12:
        return "its header is incomplete"
    end = 8 + struct.unpack_from("<I", data, 4)[0]
    return None if len(data) >= end else f"its RIFF header says {end} bytes"


# every kind but PNM, asked apart (``settled``, not ``exact_end``)
_CHECKS = {"JPEG": _jpeg, "PNG": _png, "BMP": _bmp, "TIFF": _tiff, "GIF": _gif, "WebP": _webp}
