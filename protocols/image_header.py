"""Image files as they arrive (a camera's image folder, a user's dataset, the fleet's samples): their
pixel size read from the file's header before anything is decoded, so that a small file cannot make a
decoder allocate gigabytes (a "decompression bomb": a 50-KB PNG can declare 30000 x 30000 pixels, which
OpenCV would decode into 2.7 GB; its own cap is 2^30 pixels and cannot be lowered once it has loaded).

``image_size`` reads PNG, JPEG, BMP, TIFF (and BigTIFF), WebP and binary or text PNM headers, the kinds
the agent's folder camera and the trainer's importers accept, the way their decoders read them (the
first JPEG frame header, TIFF's first directory). ``decode_image`` refuses a file whose header it
cannot read or whose size passes the limit, with the reason, and only then decodes it with OpenCV; a TIFF
that is not one image (several pages, or a reduced-resolution preview first: the decoder reads the first
directory only) is refused too (``tiff_directories``), so that the trainer and the agent's cameras never
take a preview, or one page of several, for the part.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterator
from typing import Any

__all__ = [
    "BAYER_PATTERNS",
    "DEFAULT_MAX_MEGAPIXELS",
    "FORMATS",
    "IMAGE_TYPES",
    "KIND_SUFFIXES",
    "KIND_TYPES",
    "BROWSER_KINDS",
    "SNIFF_BYTES",
    "ImageRejected",
    "animated",
    "decode_image",
    "demosaic",
    "eight_bit",
    "exif_orientation",
    "image_kind",
    "image_size",
    "jpeg_scans_over",
    "kind_suffix",
    "max_file_bytes",
    "orient",
    "png_chunk_crc_ok",
    "png_chunks",
    "png_key_colour",
    "pnm_maxval_not_255",
    "tiff_data_misplaced",
    "tiff_deep_pixels",
    "tiff_directories",
    "tiff_not_one_image",
    "tiff_tiles_over",
    "transparent_pixels",
]

DEFAULT_MAX_MEGAPIXELS = 50.0  # 10x a 5-MP line camera; ~150 MB once decoded as 8-bit colour
FORMATS = "PNG, JPEG, BMP, TIFF, WebP or PNM"
# file extension -> (media type, ``image_size``'s format) of the image files the trainer imports, the agent's folder
# camera reads and the fleet takes as samples (.jpe, .jfif: JPEGs; Windows saves a browser's JPEG as .jfif);
# model_packager.image_folder.SUFFIXES is a copy (tests/unit/test_image_readers_agree.py compares them)
IMAGE_TYPES = {
    ".png": ("image/png", "PNG"),
    ".jpg": ("image/jpeg", "JPEG"),
    ".jpeg": ("image/jpeg", "JPEG"),
    ".jpe": ("image/jpeg", "JPEG"),
    ".jfif": ("image/jpeg", "JPEG"),
    ".bmp": ("image/bmp", "BMP"),
    ".tif": ("image/tiff", "TIFF"),
    ".tiff": ("image/tiff", "TIFF"),
    ".webp": ("image/webp", "WebP"),
    # PNM (machine-vision tools' and ImageMagick's raw exports): 8- or 16-bit grey or colour, binary or text
    ".pgm": ("image/x-portable-graymap", "PNM"),
    ".ppm": ("image/x-portable-pixmap", "PNM"),
    ".pbm": ("image/x-portable-bitmap", "PNM"),
    ".pnm": ("image/x-portable-anymap", "PNM"),
}
_BYTES_PER_PIXEL = 8  # no file of these kinds needs more for its first image (16-bit RGBA, uncompressed)
# the image kinds told from a file's bytes (``image_kind``): those read here (``IMAGE_TYPES``' formats), each with the
# extensions it is read under (its usual one first), and GIF, which browsers show and nothing here reads
KIND_SUFFIXES = {
    **{fmt: tuple(e for e, (_, f) in IMAGE_TYPES.items() if f == fmt) for _, fmt in IMAGE_TYPES.values()},
    "GIF": (".gif",),
}
KIND_TYPES = {
    **{fmt: mime for mime, fmt in reversed(IMAGE_TYPES.values())},
    "PNM": "image/x-portable-anymap",
    "GIF": "image/gif",
}
BROWSER_KINDS = frozenset({"PNG", "JPEG", "GIF", "WebP", "BMP"})  # what every browser shows in an <img>
SNIFF_BYTES = 512  # of a file's start, what ``image_kind`` reads: a PNM header after a comment line or two


def max_file_bytes(max_megapixels: float | None = None) -> int:
    """The largest file worth reading at all under the pixel limit: a bigger one is refused by its size
    before a byte of it is read into memory."""
    limit = DEFAULT_MAX_MEGAPIXELS if max_megapixels is None else max_megapixels
    return int(_BYTES_PER_PIXEL * limit * 1e6) + 2**20  # + 1 MB of headers and metadata


_PNG = b"\x89PNG\r\n\x1a\n"
# JPEG frame headers (SOF0-SOF15) carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
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


# a progressive (or non-interleaved) JPEG's scans read at most: libjpeg makes a pass over the whole image for each
# (an encoder writes 1 to 18: libjpeg's progressive script 6 for grey, 10 for colour, 18 for CMYK); a crafted file
# repeating one small scan thousands of times (14 bytes each) held the decode for minutes, then gave a frame
_JPEG_MAX_SCANS = 64
_ALL_SENT = (1 << 64) - 1  # every coefficient of a component (64 a block) sent at full precision
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})  # frame headers of the progressive processes


def jpeg_scans_over(data: bytes | memoryview) -> str | None:
    """Why a JPEG is not decoded, or None: more than ``_JPEG_MAX_SCANS`` scans, each a pass of libjpeg over the
    whole image (a 30-KB file of 1,000 repeated scans of a 2000x2000 image took 8 s to decode, and was taken as
    a frame). A baseline JPEG whose first scan holds every component is not walked further (libjpeg reads no
    other scan of it); markers are walked as ``_jpeg_frame`` walks them, the coded data stepped over in C; a
    file of more than ``_JPEG_MAX_SEGMENTS`` markers outside its coded data is refused (4,100 TEM markers hid a
    1,000-scan file from a walk that gave up and let it be decoded). So is a file whose end marker comes before
    its scans have sent every component's 64 coefficients at full precision (a progressive or multi-scan JPEG cut
    short and closed: libjpeg makes the rest zero, a blurred or discoloured image with no grey to be seen), or
    a legal one written with a scan script that never sends some bits, which the scans cannot tell apart."""
    n, i, scans, frame = len(data), 2, 0, None
    steps = 0
    sent: dict[int, int] = {}  # component -> a bit per coefficient its scans sent at full precision
    for _ in range(_JPEG_MAX_SEGMENTS + _JPEG_MAX_NOTES):
        if steps >= _JPEG_MAX_SEGMENTS:
            break
        steps += 1  # (given back below for a comment or application segment holding bytes)
        i = _TO_MARKER.match(data, i).end()  # type: ignore[union-attr]  # (extraneous bytes: libjpeg skips them)
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker == _STUFFED or marker in _STANDALONE:
            continue
        if marker == 0xD9 and any(v != _ALL_SENT for v in sent.values()):
            # its scans end before every coefficient of every component is sent: libjpeg decodes the rest as
            # zero, a blurred or discoloured image, where a progressive file was cut short and closed; a legal file
            # whose encoder's scan script leaves bits out (the colour's DC only, AC never refined to its last bit)
            # looks the same, and is refused alike: its message tells its owner what to do
            c = next(c for c, v in sent.items() if v != _ALL_SENT)
            return (
                f"a JPEG whose scans end before its image is complete (component {c}'s coefficients are not all "
                "sent at full precision; the decoder would make the rest zero): cut short or damaged and then closed "
                "with an end marker, or written with a scan script that leaves them out: save it again (a baseline "
                "JPEG, or a progressive one of the encoder's standard script, is read), from its source if cut"
            )
        if marker == 0xD9 or i + 3 > n:
            return None
        length = (data[i] << 8) | data[i + 1]
        if length > 2 and (marker == 0xFE or marker & 0xF0 == 0xE0):
            steps -= 1
        if marker in _SOF and frame is None and i + 8 <= n:
            frame = (marker, data[i + 7])  # the process, its components
            sent = dict.fromkeys(bytes(data[i + 8 : i + 8 + 3 * data[i + 7] : 3]), 0)
        if marker != 0xDA:
            i += length
            continue
        scans += 1
        if frame is None or (scans == 1 and frame[0] not in _PROGRESSIVE and data[i + 2] >= frame[1]):
            return None
        if scans > _JPEG_MAX_SCANS:
            return (
                f"a JPEG of more than {_JPEG_MAX_SCANS} scans (an encoder writes 1 to 18; each is a pass of the "
                "decoder over the whole image): crafted or damaged, not decoded"
            )
        ns, at = data[i + 2], i + 3 + 2 * data[i + 2]
        if at + 3 <= n:  # what it sends: a sequential scan all of each component, a progressive one a band
            ss, se, al = (
                (data[at], data[at + 1], data[at + 2] & 15) if frame[0] in _PROGRESSIVE else (0, 63, 0)
            )
            for k in range(ns if al == 0 and ss <= se < 64 else 0):
                if data[i + 3 + 2 * k] in sent:
                    sent[data[i + 3 + 2 * k]] |= (1 << (se + 1)) - (1 << ss)
        i += length
        i = _next_marker(data, i)
        if i < 0:
            return None  # its coded data runs to the end: cut short, as the decode says
    if steps < _JPEG_MAX_SEGMENTS:  # the walk ran past its comment or application segments holding bytes
        return (
            f"a JPEG of more than {_JPEG_MAX_NOTES} comment or application segments (an encoder writes a few, a "
            "camera's notes in pieces some hundreds): crafted or damaged, not decoded; save the image again without "
            "them (its metadata)"
        )
    return (
        f"a JPEG of more than {_JPEG_MAX_SEGMENTS} markers outside its coded data (an encoder writes tens): crafted "
        "or damaged, not decoded; save the image again"
    )


# the coded data is looked through this many bytes at a time for the marker that ends it (a whole file's positions
# of 0xFF at once, in int64, took 11 bytes for each byte of a file of FF 00 pairs: 2 GB for the 190 MB a
# 5000x5000 image's file may take)
_CODED_WINDOW = 1 << 20
# ... starting with this many and doubling each round (a window of 1 MB for every scan of a file of thousands of
# tiny scans before 1 MB of coded data looked through 1 MB a scan: 20 s for one frame)
_CODED_FIRST = 1 << 12


def _next_marker(data: bytes | memoryview, i: int) -> int:
    """Where the first marker at or after ``i`` that ends a scan's coded data is (FF xx, xx none of 00, FF,
    RST0-7), or -1: looked for in C, ``_CODED_FIRST`` bytes, then twice as many each round up to
    ``_CODED_WINDOW``."""
    import numpy as np

    a = np.frombuffer(data, np.uint8)
    n = len(a)
    size = min(_CODED_FIRST, _CODED_WINDOW)
    while i < n - 1:
        end = min(n, i + size + 1)
        w = a[i:end]
        ff = np.flatnonzero(w[:-1] == 0xFF)
        nxt = w[ff + 1]
        hit = np.flatnonzero((nxt != 0) & (nxt != 0xFF) & ((nxt < 0xD0) | (nxt > 0xD7)))
        if len(hit):
            return i + int(ff[hit[0]])
        i = end - 1
        size = min(2 * size, _CODED_WINDOW)
    return -1


class ImageRejected(ValueError):
    """Why an image file was not decoded (the caller adds its path and what to do); ``oversize``: its
    header declares more pixels than the limit (the file may be fine, only too large)."""

    def __init__(self, reason: str, oversize: bool = False, unsupported: bool = False) -> None:
        super().__init__(reason)
        self.oversize = oversize
        self.unsupported = unsupported  # a whole file of a kind not read as one frame (a multi-page TIFF)


def image_size(data: bytes | memoryview) -> tuple[str, int, int] | None:
    """``(format, width, height)`` from the header, or None when the bytes are none of the kinds above
    or the header is cut short or declares a negative size. Never decodes pixels and never raises on
    malformed input."""
    b = bytes(data[:64]) if len(data) > 64 else bytes(data)
    try:
        if b.startswith(_PNG):
            if len(b) >= 24 and b[12:16] == b"IHDR":
                w, h = struct.unpack(">II", b[16:24])
                return "PNG", w, h
            return None
        if b.startswith(b"\xff\xd8"):
            return _jpeg(data)
        if b.startswith(b"BM"):
            return _bmp(b)
        if b[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff(data)
        if b.startswith(b"RIFF") and b[8:12] == b"WEBP":
            return _webp(b)
        if len(b) >= 2 and b[0:1] == b"P" and b[1:2] in b"123456":
            return _pnm(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def image_kind(head: bytes | memoryview) -> str | None:
    """The kind of image (a key of ``KIND_SUFFIXES``) a file is by its first bytes (``SNIFF_BYTES`` of them are
    enough), whatever its name says, or None: none of those, or too little of it to tell. Each kind by its
    signature and, where a text may begin alike, its structure: a BMP by its reserved zeros and the size of its
    info header, a PNM (P1-P6) by a whole header (magic, width, height and, but for a bitmap, the maximum value,
    comments skipped) followed by whitespace, so that a text beginning 'BM' or 'P1' is no image. Never raises."""
    b = bytes(head[:SNIFF_BYTES])
    if b.startswith(_PNG):
        return "PNG"
    if b.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if b[:4] in _TIFF_MAGIC:
        return "TIFF"
    if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
        return "WebP"
    if b[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if b[:2] == b"BM" and b[6:10] == bytes(4) and len(b) >= 18:
        return "BMP" if int.from_bytes(b[14:18], "little") in _BMP_INFO_SIZES else None
    if _pnm_header(b) is not None:
        return "PNM"
    return None


def kind_suffix(head: bytes | memoryview) -> str | None:
    """The usual extension of the kind of image a file is by its first bytes (``image_kind``): a PNM's by its
    magic (.pbm for a bitmap, .pgm for grey, .ppm for colour), or None when it is no image of those kinds."""
    kind = image_kind(head)
    if kind == "PNM":
        return {b"1": ".pbm", b"4": ".pbm", b"2": ".pgm", b"5": ".pgm"}.get(bytes(head[1:2]), ".ppm")
    return None if kind is None else KIND_SUFFIXES[kind][0]


# the sizes of BMP's info headers (OS/2 core, BITMAPINFOHEADER, its V2-V5 forms): with its reserved zeros, what
# tells a BMP from a text beginning with 'BM'
_BMP_INFO_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})


def _pnm_header(b: bytes) -> tuple[int, ...] | None:
    """A PNM's header numbers (width, height and, but for a bitmap (P1, P4), the maximum value 1-65535), read
    as Netpbm reads them ('#' comments to the end of their line skipped, each number ended by whitespace), or
    None: no such header, or one cut short by the end of ``b``."""
    if len(b) < 3 or b[:1] != b"P" or b[1:2] not in b"123456" or not (b[2:3].isspace() or b[2:3] == b"#"):
        return None
    want = 2 if b[1:2] in b"14" else 3
    nums: list[int] = []
    i, n = 2, len(b)
    while len(nums) < want:
        if i >= n:
            return None
        c = b[i : i + 1]
        if c == b"#":
            while i < n and b[i : i + 1] not in (b"\n", b"\r"):
                i += 1
        elif c.isspace():
            i += 1
        elif c.isdigit():
            j = i
            while j < n and b[j : j + 1].isdigit():
                j += 1
            if j == n or j - i > 9 or not (b[j : j + 1].isspace() or b[j : j + 1] == b"#"):
                return None
            nums.append(int(b[i:j]))
            i = j
        else:
            return None
    if nums[0] < 1 or nums[1] < 1 or (want == 3 and not 1 <= nums[2] <= 65535):
        return None
    return tuple(nums)


def pnm_maxval_not_255(data: bytes | memoryview) -> str | None:
    """Why a text PGM or PPM (P2, P3) of 8-bit samples is not read, or None: a maximum value (maxval) below 255.
    OpenCV reads a binary file's samples (P5, P6) as they stand but scales a text file's to 255, so one image was
    read two ways by its encoding (maxval 15: 0-15, or 0-255). The binary ones are read as they stand, as the docs
    have always said (a line camera's P5 frames of maxval 200, a defect mask of maxval 1): only the text ones,
    whose reading did not match, are refused. Nor is a scale guessed: a tool that writes each image's brightest
    sample as its maxval would give each frame a gain of its own. 16-bit maxvals (256-65535) are read as stored
    in both encodings (``pixel_bits``); one of all ones below 16 bits (1023, 4095), no sample past it, declares its
    depth (``decode_image``)."""
    magic = bytes(data[:2])
    if magic not in (b"P2", b"P3"):
        return None
    nums = _pnm_header(bytes(data[:4096]))
    if nums is None or len(nums) < 3 or nums[2] >= 255:
        return None
    what, binary = ("PGM", "P5") if magic == b"P2" else ("PPM", "P6")
    return (
        f"a text {what} ({magic.decode()}) of maximum value {nums[2]} (its header's maxval), not 255: OpenCV "
        f"scales a text file's samples to 255 where a binary one's ({binary}) are read as they stand, so one "
        f"image would read two ways; save it as binary ({binary}) to keep its samples as they stand, or save it "
        "with maxval 255, scaled as the model should see it"
    )


_ANIMATION_MAX_CHUNKS = 4096  # chunks read looking for an animation's frames: a crafted file stays cheap
# ``_png_chunk_overrun``: chunks walked at most, or one per so many bytes of the file when more (encoders cut the
# image data into chunks of 8 KiB or more, or one a row): a crafted file of 16 million empty chunks held the decode
# ~10 s; a PNG of more is refused
_PNG_MAX_CHUNKS, _PNG_CHUNK_BYTES = 1 << 16, 4096


def _png_chunk_overrun(data: bytes | memoryview) -> str | None:
    """The PNG chunk, up to IEND, whose declared length runs past the end of the file, said in one line, or
    None (also for image data, IDAT, cut short: libpng reads it as it comes). libpng allocates a text or
    palette chunk's declared length before reading it: a 60-byte file whose tEXt chunk declares 4 GiB took
    OpenCV's decode 4 GiB of memory and seconds of CPU. Only a chunk that fits in the file is left to it. At
    most ``_PNG_MAX_CHUNKS`` chunks (or one per ``_PNG_CHUNK_BYTES`` of the file) are walked: a file of more is
    said to be damaged."""
    b = data if isinstance(data, bytes) else bytes(data)
    i, most = 8, max(_PNG_MAX_CHUNKS, len(b) // _PNG_CHUNK_BYTES)
    for _ in range(most):
        if i + 8 > len(b):
            return None
        length, typ = struct.unpack_from(">I4s", b, i)
        if length > len(b) - i - 12:
            if typ == b"IDAT":  # a file cut short in its image data: "truncated", as before
                return None
            return f"its {typ.decode('latin-1')!r} chunk at byte {i} declares {length} bytes, past the file's end"
        if typ == b"IEND":
            return None
        i += 12 + length
    return f"more than {most} chunks before its end (IEND), more than an encoder writes: damaged"


def png_chunks(data: bytes | memoryview) -> Iterator[tuple[bytes, int, int]]:
    """Each chunk of a PNG before its image data (``IDAT``) or end (``IEND``), as (type, where its data starts, its
    length), for as long as each lies wholly in the file: headers read by offset, nothing copied, wherever in the
    file the chunk is (a ``tRNS`` or ``tEXt`` after 64 KiB of text chunks, or after 64 chunks, was not seen). At most
    ``_PNG_MAX_CHUNKS`` chunks, or one per ``_PNG_CHUNK_BYTES`` of the file when more (``_png_chunk_overrun``'s bound:
    a file of more is refused as damaged)."""
    n = len(data)
    if n < 8 or bytes(data[:8]) != _PNG:
        return
    i = 8
    for _ in range(max(_PNG_MAX_CHUNKS, n // _PNG_CHUNK_BYTES)):
        if i + 8 > n:
            return
        length, typ = struct.unpack_from(">I4s", data, i)
        if typ in (b"IDAT", b"IEND") or length > n - i - 12:
            return
        yield typ, i + 8, length
        i += 12 + length


def png_chunk_crc_ok(data: bytes | memoryview, at: int, length: int) -> bool:
    """Whether the CRC of the PNG chunk whose data starts at ``at`` holds (libpng drops an ancillary chunk whose
    CRC is wrong, warned of only: a bit flipped in it is read as if the chunk were not there)."""
    import zlib

    return zlib.crc32(data[at - 4 : at + length]) == struct.unpack_from(">I", data, at + length)[0]


def animated(data: bytes | memoryview) -> str | None:
    """Why a PNG or WebP is not read as one image, or None: an animated one (a PNG's ``acTL`` chunk before its
    image data, or a WebP whose header says animation) of more than one frame, of which decoders read the first
    only, as of a multi-page TIFF. Read from its chunks, never decoded."""
    b = data if isinstance(data, bytes) else bytes(data)
    frames, kind = 0, "PNG"
    try:
        if b.startswith(_PNG):
            i = 8
            for _ in range(_ANIMATION_MAX_CHUNKS):
                if i + 8 > len(b):
                    break
                length, typ = struct.unpack_from(">I4s", b, i)
                if typ == b"IDAT":
                    break
                if typ == b"acTL" and length >= 8:
                    frames = struct.unpack_from(">I", b, i + 8)[0]
                    break
                i += 12 + length
        elif b[:4] == b"RIFF" and b[8:12] == b"WEBP" and b[12:16] == b"VP8X" and len(b) > 20 and b[20] & 0x02:
            kind, i = "WebP", 12
            for _ in range(_ANIMATION_MAX_CHUNKS):
                if i + 8 > len(b):
                    break
                typ, length = struct.unpack_from("<4sI", b, i)
                frames += typ == b"ANMF"
                i += 8 + length + (length & 1)
    except struct.error:
        return None
    if frames > 1:
        return (
            f"an animated {kind} of {frames} frames; one image per file is read (the first, the others would be "
            "lost): save each frame as its own file"
        )
    return None


def decode_image(
    data: bytes | memoryview, flags: int | None = None, max_megapixels: float | None = None
) -> Any:
    """The decoded image (OpenCV ``imdecode`` with ``flags``, default colour BGR), or ``ImageRejected``
    saying why not: empty, not a known kind, over ``max_megapixels`` (default ``DEFAULT_MAX_MEGAPIXELS``),
    or truncated/corrupt past its header; a whole file of a kind OpenCV cannot decode (a 12-bit or lossless
    JPEG, a TIFF of 4-bit grey pixels) is refused as ``unsupported``, naming it (``_undecodable_kind``). A
    TIFF of packed 10-, 12- or 14-bit samples, which OpenCV shifts to the top of 16 bits, comes back with them
    in the low bits, as a Mono12 camera's 16-bit PNG holds them (read with ``pixel_bits`` 12 alike); a PGM or PPM
    of maxval 511-32767 of all ones (4095), its samples within it, declares that depth alike (``eight_bit``)."""
    import cv2
    import numpy as np

    if len(data) == 0:
        raise ImageRejected("empty file")
    size = image_size(data)
    if size is None and image_kind(data) == "GIF":  # a kind browsers show, not one a camera sends
        raise ImageRejected(
            f"a GIF image, which is not read here (a {FORMATS} image is): save it as PNG", unsupported=True
        )
    # a TIFF whose first directory cannot be read here (libtiff may read it: the checks below could not)
    if size is None and bytes(data[:4]) in _TIFF_MAGIC and not tiff_directories(data):
        raise ImageRejected(_TIFF_UNREAD)
    # a JPEG whose frame header lies past the markers the header walk reads: said so, with the bound, not "not a
    # JPEG" (a crafted file, or a tool's metadata in thousands of pieces: saved again without it, it is read)
    if size is None and bytes(data[:2]) == b"\xff\xd8" and (why := jpeg_scans_over(data)) is not None:
        raise ImageRejected(why)
    if size is None:
        raise ImageRejected(f"not a {FORMATS} image (or its header is cut short)")
    kind, w, h = size
    if w <= 0 or h <= 0:
        raise ImageRejected(f"its {kind} header declares {w}x{h} pixels")
    limit = DEFAULT_MAX_MEGAPIXELS if max_megapixels is None else max_megapixels
    if w * h > limit * 1e6:
        raise ImageRejected(
            f"its {kind} header declares {w}x{h} pixels ({w * h / 1e6:.1f} Mpx), over the "
            f"{limit:g}-Mpx limit",
            oversize=True,
        )
    if kind == "JPEG" and (why := jpeg_scans_over(data)) is not None:  # a pass over the image per scan
        raise ImageRejected(why)
    if kind == "TIFF" and (why := tiff_tiles_over(data, limit)) is not None:  # libtiff's buffer: a whole tile
        raise ImageRejected(why, oversize=True)
    # refused once decoded, its decode at 12 to 32 bytes a pixel
    if kind == "TIFF" and (why := tiff_deep_pixels(data)) is not None:
        raise ImageRejected(why, unsupported=True)
    if kind == "TIFF" and (why := tiff_not_one_image(data)) is not None:
        raise ImageRejected(why, unsupported=True)
    if kind in ("PNG", "WebP") and (why := animated(data)) is not None:  # the first frame of several
        raise ImageRejected(why, unsupported=True)
    if kind == "PNM" and (why := pnm_maxval_not_255(data)) is not None:  # text: scaled, unlike binary
        raise ImageRejected(why, unsupported=True)
    if kind == "TIFF" and (why := tiff_data_misplaced(data)) is not None:  # libtiff would decode garbage
        raise ImageRejected(why)
    if kind == "PNG" and (why := _png_chunk_overrun(data)) is not None:  # libpng would allocate what it says
        raise ImageRejected(
            f"a PNG header for {w}x{h} pixels, but the image data is truncated or corrupt ({why})"
        )
    buf = np.frombuffer(_samples_ended(data), np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR if flags is None else flags)
    except cv2.error as exc:  # some headers OpenCV refuses by raising: a side over 2^20 pixels (its limit)
        said = " ".join(str(exc).split()).split(" error: ", 1)[-1][:160]  # without OpenCV's source path
        raise ImageRejected(
            f"a {kind} header for {w}x{h} pixels, which OpenCV's decoder refuses ({said}): the header is "
            "damaged, or the image is of a size no reader here takes"
        ) from None
    if img is None or img.size == 0:
        if (why := _undecodable_kind(kind, data)) is not None:  # a whole file of a kind OpenCV cannot read
            raise ImageRejected(why, unsupported=True)
        raise ImageRejected(f"a {kind} header for {w}x{h} pixels, but the image data is truncated or corrupt")
    if kind == "TIFF" and flags is not None and flags & cv2.IMREAD_IGNORE_ORIENTATION:
        # OpenCV's TIFF decoder turns the image by its Orientation tag whatever the flags say: turned back to
        # the pixels as stored, as the flag asks (a raw mosaic is demosaiced as stored, then turned)
        turned = (tiff_directories(data) or [{}])[0].get(274, 1)
        img = orient(img, {6: 8, 8: 6}.get(turned, turned))
    if kind == "TIFF" and img.dtype == np.uint16:
        bits = (tiff_directories(data) or [{}])[0].get(258, 16)
        # packed 10-, 12- or 14-bit samples: OpenCV shifts them to the top of 16 bits; put back in the low
        # bits, as a Mono12 camera's 16-bit PNG holds them (read with pixel_bits 12 alike)
        if bits in (10, 12, 14):
            # and said (``eight_bit``): a camera set to pixel_bits 16 for such files, as the refusal of one by
            # 12 advised before, keeps reading them at their depth, not 16 times too dark
            packed: Any = np.right_shift(img, 16 - bits).view(_packed_samples())
            packed.declared_bits = bits
            img = packed
    if kind == "PNM" and img.dtype == np.uint16:
        nums = _pnm_header(bytes(data[:4096]))
        top = nums[2] if nums is not None and len(nums) == 3 else 0
        # a PGM or PPM whose maxval is all ones below 16 bits (a Mono12 camera's 4095, a Mono10's 1023), no sample
        # past it, declares its depth as a packed TIFF does, read at it by any larger pixel_bits (16 read a 12-bit
        # file 16 times too dark). Any other maxval is no depth: tools write each frame's brightest sample there
        # (2000 taken as 11 bits made a dim 12-bit frame twice as bright as the others), or 4095 above Mono12
        # samples shifted to the top of 16 bits (read by pixel_bits 16)
        if 255 < top < 65535 and top & (top + 1) == 0 and int(img.max()) <= top:
            deep: Any = img.view(_packed_samples())
            deep.declared_bits = top.bit_length()
            img = deep
    return img


def _samples_ended(data: bytes | memoryview) -> bytes | memoryview:
    """``data`` as OpenCV is given it: a plain (text) PGM or PPM whose last sample ends the file, which the format
    allows, with a line end after it (OpenCV's reader looks past the end of the data for the number's end and
    refuses the whole file); any other file as it is."""
    if bytes(data[:2]) in (b"P2", b"P3") and bytes(data[-1:]).isdigit():
        return bytes(data) + b"\n"
    return data


@functools.cache
def _packed_samples() -> type:
    import numpy as np

    class PackedSamples(np.ndarray):
        """A TIFF's packed samples (``declared_bits``, its BitsPerSample: 10, 12 or 14) in the low bits, or a PGM's
        or PPM's of a maxval of all ones below 16 bits (its bits)."""

        declared_bits = 16

        def __array_finalize__(self, obj: object) -> None:  # a slice or copy keeps the depth it came with
            self.declared_bits = getattr(obj, "declared_bits", 16)

    return PackedSamples


# JPEG frame headers of the lossless process (SOF3, and SOF7/11/15: differential or arithmetic-coded)
_LOSSLESS_SOF = frozenset({0xC3, 0xC7, 0xCB, 0xCF})


def bmp_not_decodable(data: bytes | memoryview) -> str | None:
    """Why a whole BMP is of a form OpenCV's decoder does not read, or None: pixels in bit fields with an alpha
    mask (BI_ALPHABITFIELDS) at any depth, or 16-bit ones in bit fields (BI_BITFIELDS: RGB565, as GIMP and
    embedded cameras write it) under a header longer than the 40-byte one, under which it reads them. Measured
    with OpenCV 5.1 at every header size (40, 52, 56, 64, 108, 124); 32-bit bit fields are read under each."""
    if len(data) < 34 or bytes(data[:2]) != b"BM":
        return None
    size, bits, compression = (int.from_bytes(data[a:b], "little") for a, b in ((14, 18), (28, 30), (30, 34)))
    if compression == 6 or (compression == 3 and bits == 16 and size > 40):
        alpha = " with an alpha mask" if compression == 6 else ""
        return (
            f"a {bits}-bit BMP of pixels in bit fields{alpha} under a {size}-byte header (an RGB565 or RGBA "
            "export), which this reader cannot decode: save it as PNG, or as a 24-bit BMP"
        )
    return None


def _undecodable_kind(kind: str, data: bytes | memoryview) -> str | None:
    """Why a file OpenCV could not decode is of a kind its decoders do not read, or None (then it is taken
    as damaged): a 12- or 16-bit JPEG (libjpeg's 12-bit mode, some machine-vision and X-ray tools) or a
    lossless one, a BMP of bit fields OpenCV does not read (``bmp_not_decodable``), a TIFF of grey samples of 2-7, 9, 11, 13 or 15 bits, and a TIFF of float samples (OpenCV's
    colour read of a grey one fails outright; a colour one decodes, and is refused as float pixels). These are
    whole files that the camera's or tool's settings can save otherwise; called "truncated or corrupt", the
    user would look for a damage that is not there. Asked only after a decode failed: a file that decodes
    never pays for it."""
    if kind == "JPEG":
        frame = _jpeg_frame(data)
        if frame is None:
            return None
        marker, precision = frame[0], frame[1]
        if precision != 8:
            return (
                f"a {precision}-bit JPEG, which this reader cannot decode (8-bit JPEGs only): have the camera "
                "or tool save 8-bit JPEG, or 16-bit PNG or TIFF (read by pixel_bits / --pixel-bits)"
            )
        if marker in _LOSSLESS_SOF:
            return (
                "a lossless JPEG, which this reader cannot decode: have the camera or tool save PNG or TIFF, "
                "or baseline JPEG"
            )
        return None
    if kind == "BMP":
        return bmp_not_decodable(data)
    if kind == "TIFF":
        first = (tiff_directories(data) or [{}])[0]
        bits, photometric = first.get(258, 1), first.get(262, -1)
        if first.get(339) == 3:  # IEEE float samples: OpenCV's colour read of a grey one fails outright
            return (
                f"a TIFF of {bits}-bit float pixels; 8-bit and 16-bit images are read (measurements or an analysis "
                "tool's export, not a camera's frame): save it as an 8-bit image scaled to 0-255 as your camera "
                "delivers it"
            )
        if photometric in (0, 1) and bits not in (1, 8, 10, 12, 14, 16, 32, 64):  # the grey ones OpenCV reads
            return f"a TIFF of {bits}-bit grey pixels, which this reader cannot decode: save it as 8-bit grey"
    return None


def eight_bit(img: Any, pixel_bits: int | None, setting: str = "pixel_bits") -> Any:
    """An image as 8-bit pixels, what models are trained on and run with. Machine-vision cameras save
    10-, 12- or 14-bit pixels (Mono12, say) in 16-bit files: OpenCV's colour read divides them by 256, so
    a 12-bit image (at most 4095) comes out black. ``pixel_bits`` says how many low bits carry the image
    (16: the full range); the top 8 of them are kept. A 16-bit image without it (the error names
    ``setting``, the caller's name for it), one holding a value that ``pixel_bits`` bits cannot (a Mono12
    camera whose SDK shifts its pixels to the top of the 16 bits, read with 12: 94 % of a frame would
    saturate to white, judged as a part), or pixels of another type (a 32-bit float TIFF), raise
    ``ImageRejected``. Read the file with ``IMREAD_ANYDEPTH`` for this to see its depth. A TIFF of packed
    10-14-bit samples (``decode_image``: in the low bits) is read at its declared depth by any larger
    ``pixel_bits``, 16 included (what read such files when OpenCV gave them at the top of 16 bits)."""
    import numpy as np

    if img.dtype == np.uint8:
        return img
    if img.dtype != np.uint16:
        raise ImageRejected(f"{img.dtype} pixels; 8-bit and 16-bit images are read")
    if pixel_bits is None:
        raise ImageRejected(
            f"16-bit pixels (the brightest here {int(img.max())}): say how many bits carry the image with "
            f"{setting} (12 for a Mono12 camera, 16 for the full range); OpenCV alone would divide them by 256"
        )
    # a TIFF of packed 12-bit samples (``decode_image`` gives them in the low bits) declares its depth: read
    # at it with pixel_bits 16 too, which read such files right when OpenCV gave them at the top of 16 bits
    pixel_bits = min(pixel_bits, getattr(img, "declared_bits", 16))
    img = np.asarray(img)
    if pixel_bits < 16:
        top = int(img.max())  # 16-bit images only: an 8-bit frame never gets here
        if top >> pixel_bits:
            raise ImageRejected(
                f"16-bit pixels up to {top}, more than {pixel_bits} bits hold (at most {(1 << pixel_bits) - 1}): "
                f"a camera whose pixels fill the top of the 16 bits (Mono{pixel_bits} shifted up, as some "
                f"cameras' software saves it) is read with {setting} 16; else {setting} is below the "
                "camera's bit depth"
            )
    return (img >> (pixel_bits - 8)).astype(np.uint8)


# a crafted chain of overlapping directories stays cheap: at most so many directories, tags in one, and tags read
# across the chain (256 directories of 1,024 tags, a 3-MB file, cost ~0.4 s of Python per read, 4,096 tags ~6 ms;
# a real page has 10-30 tags, and a file of more than one full page is refused whatever the count)
_TIFF_MAX_DIRECTORIES, _TIFF_MAX_TAGS, _TIFF_MAX_TAGS_WALKED = 256, 1024, 1 << 12
# the integer types libtiff converts a tag's value from (BYTE, SHORT, LONG, SBYTE, SSHORT, SLONG, LONG8, SLONG8): a
# TileWidth written as SSHORT or SLONG is the decoder's tile width as much as a SHORT one
_TIFF_INTEGER = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 16: "Q", 17: "q"}
# the layouts OpenCV's decoder reads right at more than 8 bits a sample: grey with black at 0, or RGB, each pixel's
# samples together. It takes such samples as stored, without libtiff's colour conversion: a 16-bit grey TIFF with
# white at 0 (an X-ray detector's or a scanner's negative) came out as its negative, one in separate planes
# (PlanarConfiguration 2, a microscope's) with its colours scrambled, and a palette image as its indices
_TIFF_DEEP_READ = frozenset({1, 2})
_TIFF_PHOTOMETRIC = {
    0: "white-is-zero grey (a negative)",
    3: "palette",
    4: "transparency mask",
    5: "CMYK",
    6: "YCbCr",
    8: "CIE L*a*b*",
    9: "ICC L*a*b*",
    10: "ITU L*a*b*",
    32803: "raw mosaic (CFA)",
    34892: "linear raw",
}
# a TIFF whose first directory the checks cannot read (more tags than any real one, or cut within it) is not
# decoded: libtiff reads one of up to 4,096 tags, so a tile or depth check that read nothing let it through
_TIFF_UNREAD = (
    "a TIFF whose first image directory cannot be read (more than 1,024 tags, or past the file's end): crafted "
    "or damaged, not decoded"
)
_TIFF_MAGIC = frozenset({b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"})


def tiff_directories(data: bytes | memoryview) -> list[dict[int, int]]:
    """A TIFF's chain of image directories (one per page), each as its SHORT/LONG tags' first values
    (read where the entry points when they do not fit in it); ``[]`` when ``data`` is not a TIFF. A chain
    cut short or looping gives what was read, and at most ``_TIFF_MAX_DIRECTORIES`` directories of at
    most ``_TIFF_MAX_TAGS`` tags, ``_TIFF_MAX_TAGS_WALKED`` tags in all, are read."""
    return _tiff_chain(data)[0]


def _tiff_chain(data: bytes | memoryview) -> tuple[list[dict[int, int]], bool]:
    """``tiff_directories``, and whether a limit stopped the walk before the chain's end (more may follow)."""
    if bytes(data[:4]) not in _TIFF_MAGIC:
        return [], False
    e = "<" if bytes(data[:1]) == b"I" else ">"
    big = bytes(data[2:4]) in (b"+\x00", b"\x00+")
    fmt_off, fmt_count, entry, value_at = ("Q", "Q", 20, 12) if big else ("I", "H", 12, 8)
    size_count = struct.calcsize(fmt_count)
    found: list[dict[int, int]] = []
    seen = set[int]()
    walked, more = 0, False
    try:
        off = struct.unpack_from(e + fmt_off, data, 8 if big else 4)[0]
        while off and off not in seen and len(seen) < _TIFF_MAX_DIRECTORIES:
            seen.add(off)
            count = struct.unpack_from(e + fmt_count, data, off)[0]
            if count > _TIFF_MAX_TAGS:  # no real directory has this many: not read further
                break
            walked += count
            if walked > _TIFF_MAX_TAGS_WALKED:  # more than real pages have: the rest not read
                more = True
                break
            tags: dict[int, int] = {}
            for k in range(count):
                p = off + size_count + k * entry
                tag, typ = struct.unpack_from(e + "HH", data, p)
                fmt = _TIFF_INTEGER.get(typ)
                if fmt is None or tag in tags:  # not an integer, or given again (libtiff reads the first)
                    continue
                size = struct.calcsize(fmt)
                at = p + value_at
                values = struct.unpack_from(e + ("Q" if big else "I"), data, p + 4)[0]
                if values * size > entry - value_at:  # stored elsewhere (an RGB's 3 BitsPerSample)
                    at = struct.unpack_from(e + fmt_off, data, at)[0]
                try:
                    tags[tag] = struct.unpack_from(e + fmt, data, at)[0]
                except (struct.error, OverflowError):  # an offset past the end (or 2^63)
                    pass  # that tag unread, the others kept
            found.append(tags)
            off = struct.unpack_from(e + fmt_off, data, off + size_count + count * entry)[0]
    except (struct.error, OverflowError):  # (an offset past 2^63: a BigTIFF's)
        pass
    return found, more or len(found) == _TIFF_MAX_DIRECTORIES


# bytes per value of each TIFF field type (BYTE .. IFD8); a type not here is stepped over
_TIFF_TYPE_SIZE = {
    1: 1,
    2: 1,
    3: 2,
    4: 4,
    5: 8,
    6: 1,
    7: 1,
    8: 2,
    9: 4,
    10: 8,
    11: 4,
    12: 8,
    13: 4,
    16: 8,
    17: 8,
    18: 8,
}
# (offsets tag, byte counts tag, what a segment is called): StripOffsets/StripByteCounts, TileOffsets/TileByteCounts
_TIFF_SEGMENTS = ((273, 279, "strip"), (324, 325, "tile"))
# tiff_data_misplaced: strips or tiles in the file's order checked at a time; at most so many out of order, sorted
_TIFF_SEGMENTS_AT_ONCE, _TIFF_SORTED = 1 << 16, 1 << 20


def tiff_data_misplaced(data: bytes | memoryview) -> str | None:
    """Why the first image's strips (or tiles) cannot be where its pixels are, or None (also for anything
    that is not a TIFF, and for a directory too damaged to read: the decode says so). libtiff reads whatever
    bytes a strip's offset points at: a damaged StripOffsets entry that points into the file's header, its
    image directory, a tag's values or another strip decodes without a word into an image of garbage rows
    (measured: a strip's offset set to 0, or to another strip's, gave a whole image, the rows wrong), which a
    model would judge as a part. A segment reaching past the end of the file (cut short) is said too. Empty
    segments (a byte count of 0: a sparse file's) are not checked."""
    import numpy as np

    if bytes(data[:4]) not in _TIFF_MAGIC:
        return None
    e = "<" if bytes(data[:1]) == b"I" else ">"
    big = bytes(data[2:4]) in (b"+\x00", b"\x00+")
    fmt_off, fmt_count, entry, value_at = ("Q", "Q", 20, 12) if big else ("I", "H", 12, 8)
    size_count, n = struct.calcsize(fmt_count), len(data)
    arrays: dict[int, Any] = {}
    try:
        off = struct.unpack_from(e + fmt_off, data, 8 if big else 4)[0]
        count = struct.unpack_from(e + fmt_count, data, off)[0]
        if count > _TIFF_MAX_TAGS:
            return None
        # what no pixel data may lie over: the header, the directory, the values stored outside it
        used = [
            (0, 16 if big else 8, "its header"),
            (off, off + size_count + count * entry + struct.calcsize(fmt_off), "its image directory"),
        ]
        for k in range(count):
            p = off + size_count + k * entry
            tag, typ = struct.unpack_from(e + "HH", data, p)
            values = struct.unpack_from(e + fmt_off, data, p + 4)[0]
            size = _TIFF_TYPE_SIZE.get(typ)
            if size is None or values > n:  # an unknown type, or more values than the file has bytes
                continue
            at = p + value_at
            if values * size > entry - value_at:  # stored elsewhere
                at = struct.unpack_from(e + fmt_off, data, at)[0]
                used.append((at, at + values * size, f"tag {tag}'s values"))
            if tag in (273, 279, 324, 325) and typ in _TIFF_INT:
                # as an array, never as Python numbers: a crafted file's millions of strips cost C loops only
                arrays[tag] = np.frombuffer(
                    data, e + {"H": "u2", "I": "u4", "Q": "u8"}[_TIFF_INT[typ]], values, at
                )
    except (struct.error, OverflowError, ValueError):  # (an offset past 2^63: a BigTIFF's)
        return None
    regions = sorted(used)
    # the regions' starts and the furthest end of those up to each; offsets and sizes are clipped to 2^62 (only a
    # crafted BigTIFF's reach it), so that a start and a size add up within 64 bits
    cap, top = 1 << 62, 1 << 63
    region_starts = np.array([min(a, top) for a, _, _ in regions], np.uint64)
    region_reach = np.maximum.accumulate(np.array([min(b, top) for _, b, _ in regions], np.uint64))
    for offsets_tag, counts_tag, what in _TIFF_SEGMENTS:
        offsets, counts = arrays.get(offsets_tag), arrays.get(counts_tag)
        if offsets is None or counts is None or len(offsets) != len(counts):
            continue  # libtiff's own concern (it estimates missing byte counts)
        total = len(offsets)
        # in the file's order, as writers put them: checked a slice at a time, never copied whole to 64-bit arrays
        # (a crafted file's 22 million strips, 198 MB within the pixel limit, took 1.2 GB so); else sorted, as many
        # as a real image has out of order at most
        step, last, in_order = _TIFF_SEGMENTS_AT_ONCE, -1, True
        for s in range(0, total, step):
            piece = np.minimum(offsets[s : s + step][counts[s : s + step] != 0].astype(np.uint64), cap)
            if len(piece) and (int(piece[0]) <= last or not (piece[1:] > piece[:-1]).all()):
                in_order = False
                break
            last = int(piece[-1]) if len(piece) else last
        if in_order:
            far, far_no, done, pair = (
                np.uint64(0),
                -1,
                0,
                None,
            )  # the furthest end so far, whose; segments seen
            for s in range(0, total, step):
                nos = np.flatnonzero(counts[s : s + step]) + s  # empty segments are not checked
                if not len(nos):
                    continue
                starts = np.minimum(offsets[nos].astype(np.uint64), cap)
                ends = starts + np.minimum(counts[nos].astype(np.uint64), cap)
                furthest = np.maximum(np.maximum.accumulate(ends), far)
                over = _tiff_regions_over(starts, furthest, region_starts, region_reach)
                bad = np.flatnonzero(over | (ends > n))
                if len(bad):
                    return _tiff_misplaced(
                        what, total, int(nos[bad[0]]), bool(over[bad[0]]), offsets, counts, used, n
                    )
                if pair is None:  # the first that starts before the furthest end of those before it
                    before = np.concatenate((np.array([far], np.uint64), furthest[:-1]))
                    overlap = np.flatnonzero(starts < before)
                    overlap = overlap[overlap > 0] if not done else overlap
                    if len(overlap):
                        i = int(overlap[0])
                        by = int(nos[int(np.argmax(ends[:i]))]) if i and ends[:i].max() > far else far_no
                        pair = sorted((int(nos[i]) + 1, by + 1))
                top = int(np.argmax(ends))
                if ends[top] > far:
                    far, far_no = ends[top], int(nos[top])
                done += len(nos)
            if pair is not None:
                return (
                    f"a TIFF whose {what}s {pair[0]} and {pair[1]} of {total} lie over each other: its {what} "
                    "offsets are damaged, and the decoder would read garbage as pixels"
                )
            continue
        if total > _TIFF_SORTED:
            return (
                f"a TIFF whose {total} {what}s are out of the file's order, more than {_TIFF_SORTED} (no writer puts "
                f"so many so): its {what} offsets are damaged"
            )
        nos = np.flatnonzero(counts)  # empty segments are not checked
        starts = np.minimum(offsets[nos].astype(np.uint64), cap)
        ends = starts + np.minimum(counts[nos].astype(np.uint64), cap)
        if not len(nos):
            continue
        if not (starts[1:] > starts[:-1]).all():  # in the file's order already, as writers put them: no sort
            order = np.lexsort((nos, ends, starts))  # by start, end, then number
            nos, starts, ends = nos[order], starts[order], ends[order]
        # a region reaching past a segment's start lies over it: the regions starting before the furthest end of
        # the segments so far (one that starts at or after a segment's end was reached by an earlier segment, which
        # it lay over, and that was said)
        furthest = np.maximum.accumulate(ends)
        over = _tiff_regions_over(starts, furthest, region_starts, region_reach)
        bad = np.flatnonzero(over | (ends > n))
        if len(bad):
            return _tiff_misplaced(
                what, total, int(nos[bad[0]]), bool(over[bad[0]]), offsets, counts, used, n
            )
        # the furthest end of the segments before each one (all within the file here), and which one reaches it
        hit = np.flatnonzero(starts[1:] < furthest[:-1])
        if len(hit):
            i = int(hit[0]) + 1
            by = int(nos[int(np.argmax(ends[:i]))])
            first, second = sorted((int(nos[i]) + 1, by + 1))
            return (
                f"a TIFF whose {what}s {first} and {second} of {total} lie over each other: its {what} "
                "offsets are damaged, and the decoder would read garbage as pixels"
            )
    return None


def _tiff_regions_over(starts: Any, furthest: Any, region_starts: Any, region_reach: Any) -> Any:
    """Which segments (by start, ``furthest``: the furthest end of those up to each) a region of the file (its
    header, directory, a tag's values: ``region_starts`` sorted, ``region_reach`` the furthest end up to each)
    lies over: a region starting before the furthest end so far and reaching past the segment's start."""
    import numpy as np

    inside = np.searchsorted(region_starts, furthest, side="left")  # how many regions start before it
    reach = np.where(inside > 0, region_reach[np.maximum(inside, 1) - 1], 0)
    return (inside > 0) & (reach > starts)


def _tiff_misplaced(
    what: str, total: int, no: int, over: bool, offsets: Any, counts: Any, used: list, n: int
) -> str:
    """``tiff_data_misplaced``'s words for segment ``no`` (from 0): lying over another part of the file, or past its end."""
    start = int(offsets[no])
    end = start + int(counts[no])
    if over:
        name = next((nm for a, b, nm in used if start < b and a < end), "another part of the file")
        return (
            f"a TIFF whose {what} {no + 1} of {total} (bytes {start}-{end}) lies over {name}: its "
            f"{what} offsets are damaged, and the decoder would read garbage as pixels"
        )
    return (
        f"a TIFF whose {what} {no + 1} of {total} (bytes {start}-{end}) reaches past the end of the file "
        f"({n} bytes): cut short or damaged"
    )


def tiff_tiles_over(data: bytes | memoryview, max_megapixels: float) -> str | None:
    """Why a tiled TIFF is not decoded, or None: tiles (its first directory's TileWidth and TileLength) of more
    pixels than ``max_megapixels``. OpenCV's decoder allocates a whole tile, up to 1 GiB, whatever size the image
    declares: a 3-KB file declaring 64x48 pixels in one 16000x16000 tile passed the header's check and took
    1 GB and 3.6 s to be refused as truncated. Tiles are 256 or 512 pixels square, a small image's one tile at
    most its own size rounded up to 16: under the limit that bounds the image, such a tile is allowed."""
    dirs = tiff_directories(data)
    if not dirs:
        return _TIFF_UNREAD
    tw, th = dirs[0].get(322), dirs[0].get(323)
    if tw is None or th is None or tw * th <= max_megapixels * 1e6:
        return None
    size = image_size(data)
    of = "" if size is None else f" of {size[1]}x{size[2]} pixels"
    return (
        f"a TIFF{of} in tiles of {tw}x{th} pixels ({tw * th / 1e6:.1f} Mpx each), over the {max_megapixels:g}-Mpx "
        "limit: the decoder would allocate a whole tile; save it with tiles of 256 or 512 pixels, or in strips"
    )


def tiff_deep_pixels(data: bytes | memoryview) -> str | None:
    """Why a TIFF of float pixels or of more than 16 bits a sample is not decoded, or None (its first directory's
    SampleFormat and BitsPerSample). Such an image is refused once decoded (8-bit and 16-bit images are read), and
    its decode takes 12 to 32 bytes a pixel, past the 8 that bound any other image under ``max_megapixels``: a
    445-KB RGB float TIFF of 5000x5000 pixels (zeros, deflated) took 639 MB and 7.3 s to be refused."""
    dirs = tiff_directories(data)
    if not dirs:
        return _TIFF_UNREAD
    bits = dirs[0].get(258, 1)
    if dirs[0].get(339) == 3:
        return (
            f"a TIFF of {bits}-bit float pixels; 8-bit and 16-bit images are read (measurements or an analysis "
            "tool's export, not a camera's frame): save it as an 8-bit image scaled to 0-255 as your camera "
            "delivers it"
        )
    if bits > 16:
        return (
            f"a TIFF of {bits}-bit pixels; 8-bit and 16-bit images are read: save it as an 8-bit image, or as "
            "16-bit read by pixel_bits / --pixel-bits"
        )
    if bits > 8 and (photometric := dirs[0].get(262)) is not None and photometric not in _TIFF_DEEP_READ:
        kind = _TIFF_PHOTOMETRIC.get(photometric, f"PhotometricInterpretation {photometric}")
        return (
            f"a {bits}-bit {kind} TIFF, which this reader cannot read right (beyond 8 bits it reads grey with black "
            "at 0, or RGB): save it as grey with black at 0 or as RGB, 16-bit (read by pixel_bits / --pixel-bits) "
            "or 8-bit"
        )
    if bits > 8 and dirs[0].get(277, 1) > 1 and dirs[0].get(284, 1) == 2:
        return (
            f"a TIFF of {bits}-bit samples in separate planes (PlanarConfiguration 2), which this reader cannot "
            "read right (its colours come out scrambled): save it with each pixel's samples together (contiguous, "
            "the usual TIFF layout), or as 16-bit PNG"
        )
    return None


def tiff_not_one_image(data: bytes | memoryview) -> str | None:
    """Why a TIFF is not read as one image, or None: its first directory (the one decoders read) a
    reduced-resolution copy (a preview: NewSubfileType bit 0) with the image after it, or several
    full-resolution pages (a camera's exposure series, a scanned batch), of which only the first would
    be read. Reduced-resolution pages after the first (thumbnails) are not counted."""
    dirs, more = _tiff_chain(data)
    if dirs and dirs[0].get(254, 0) & 1 and len(dirs) > 1:
        return (
            "its first image is a reduced-resolution copy (a preview), which is what would be read; save "
            "the full image alone in the file"
        )
    pages = sum(not d.get(254, 0) & 1 for d in dirs)
    if pages > 1:
        return (
            f"a TIFF of {pages}{' or more' if more else ''} pages (images); one image per file is read (the first, the others "
            "would be lost): save each page as its own file"
        )
    return None


def transparent_pixels(data: bytes | memoryview) -> tuple[int, int]:
    """``(transparent, all)`` pixels of a PNG, TIFF, WebP or BMP whose header allows transparency (an alpha
    channel, a PNG palette or colour made transparent by ``tRNS``, a TIFF's extra sample not declared as
    other than alpha, a WebP's alpha, a 32-bit BMP's alpha mask, unless 0 everywhere); ``(0, 0)`` for any
    other file, read from its header alone (a JPEG, a PNG without alpha: no second decode). OpenCV's colour
    read drops the alpha, and the colours stored beneath it (often black) are no part a camera shows."""
    if not _may_be_transparent(data):  # first: the one check an ordinary frame pays (~1 us)
        return 0, 0
    import cv2
    import numpy as np

    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if full is None:
        return 0, 0
    key = png_key_colour(data)
    if key is not None and len(key) == (1 if full.ndim == 2 else full.shape[2]):
        # a grey or RGB PNG with a transparent colour: read without alpha, its pixels of that colour are clear
        clear = np.all(full.reshape(*full.shape[:2], -1) == np.asarray(key, full.dtype), axis=2)
        return int(np.count_nonzero(clear)), int(clear.size)
    if full.ndim != 3 or full.shape[2] not in (2, 4):
        return 0, 0
    alpha = full[:, :, -1]
    if alpha.dtype not in (np.uint8, np.uint16):
        return 0, 0  # float pixels: refused as such
    opaque = 255 if alpha.dtype == np.uint8 else 65535
    if bytes(data[:2]) == b"BM" and not alpha.any():  # a BMP's alpha left 0 everywhere: unused, not clear
        return 0, 0  # (as viewers show it: tools write 32-bit BMPs so, and mean them opaque)
    return int(np.count_nonzero(alpha < opaque)), int(alpha.size)


def png_key_colour(data: bytes | memoryview) -> tuple[int, ...] | None:
    """A grey or RGB PNG's transparent colour (its ``tRNS`` chunk before the image data) as OpenCV's unchanged read
    holds it: a grey value (1-, 2- and 4-bit ones scaled to 8 bits, as libpng expands them) or (blue, green, red);
    None for another PNG or file. OpenCV's read keeps a grey one without alpha (a palette's ``tRNS`` becomes an
    alpha channel, and an RGB one's here), so its transparent pixels are those of that colour."""
    head = bytes(data[:33])
    if len(head) < 33 or head[:8] != _PNG or head[25] not in (0, 2):
        return None
    colour, depth = head[25], head[24]
    for typ, at, length in png_chunks(data):
        if typ == b"tRNS":
            # one of another length than its colour's, or whose CRC is wrong, libpng drops (warned of only): the
            # image is read opaque, by OpenCV and viewers alike
            if length != (2 if colour == 0 else 6) or not png_chunk_crc_ok(data, at, length):
                return None
            if colour == 0:
                key: tuple[int, ...] = struct.unpack_from(">H", data, at)
            else:
                r, g, blue = struct.unpack_from(">HHH", data, at)
                key = (blue, g, r)
            if depth == 16:
                return key
            if depth not in (1, 2, 4, 8):
                return None
            # masked to the depth as libpng masks it (a key out of range only warned of: 65535 for a 1-bit PNG
            # raised here), then a 1-, 2- or 4-bit one scaled to 8 bits
            top = (1 << depth) - 1
            return tuple((v & top) * (255 // top) for v in key)
    return None


def _may_be_transparent(data: bytes | memoryview) -> bool:
    """Whether a file's header allows transparency: a PNG of grey or colour with alpha, or with ``tRNS``
    (a transparent palette entry or colour); a TIFF whose first page has an extra sample beside its grey
    or RGB ones that is not declared as something other than alpha (ExtraSamples 0); a WebP whose header
    says it has alpha; a 32-bit BMP with an alpha mask."""
    magic = bytes(data[:4])
    if magic[:2] == b"BM":  # 32-bit, with an alpha mask (a V3-V5 header's, or BI_ALPHABITFIELDS's fourth)
        if len(data) < 70:
            return False
        header, (bpp, compression) = (
            struct.unpack_from("<I", data, 14)[0],
            struct.unpack_from("<HI", data, 28),
        )
        return (
            bpp == 32
            and compression in (3, 6)  # BI_BITFIELDS, BI_ALPHABITFIELDS: OpenCV reads BGRA
            and (header >= 56 or compression == 6)
            and struct.unpack_from("<I", data, 66)[0] != 0
        )
    if magic == b"RIFF" and bytes(data[8:12]) == b"WEBP":  # the agent's cameras read WebP too
        chunk = bytes(data[12:16])
        if chunk == b"VP8X":  # extended: the alpha flag of its header (lossy images keep alpha here)
            return len(data) > 20 and bool(data[20] & 0x10)
        # lossless: the alpha_is_used bit after the two 14-bit sizes; a lossy simple image has no alpha
        return chunk == b"VP8L" and len(data) >= 25 and bool(data[24] & 0x10)
    if magic == b"\x89PNG" and len(data) >= 26:
        head = data if isinstance(data, bytes) else bytes(data)
        idat = head.find(b"IDAT")
        alpha = data[25] in (4, 6) or head.find(b"tRNS", 0, idat if idat > 0 else len(head)) >= 0
        return alpha and _png_chunk_overrun(head) is None  # never decoded with a chunk past its end (4 GiB)
    if magic not in _TIFF_MAGIC:
        return False
    first = (tiff_directories(data) or [{}])[0]
    colours = {0: 1, 1: 1, 2: 3}.get(first.get(262, -1))  # PhotometricInterpretation: grey or RGB
    return colours is not None and first.get(277, 1) > colours and first.get(338, 2) != 0


# a Bayer mosaic's pattern: its top-left 2x2 pixels, row by row (GenICam's BayerRG8 is rggb)
BAYER_PATTERNS = ("rggb", "bggr", "grbg", "gbrg")


def demosaic(img: Any, pattern: str, setting: str = "bayer", orientation: int = 1) -> Any:
    """A colour camera's raw frame (a Bayer mosaic: one colour per pixel, saved as a grey 8-bit image)
    as BGR, by OpenCV's bilinear demosaicing for ``pattern`` (``BAYER_PATTERNS``), then turned by the file's
    EXIF ``orientation`` (``exif_orientation``): decode the mosaic with ``IMREAD_IGNORE_ORIENTATION``, since a
    mosaic turned before demosaicing has its pattern shifted (a red part comes out green). A grey image read as
    three equal channels is taken as the mosaic it is; a colour image (channels that differ) raises
    ``ImageRejected`` naming ``setting``: it is no mosaic, and demosaicing it would be garbage."""
    import cv2
    import numpy as np

    if img.ndim == 3 and img.shape[2] == 3:
        if not (np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 0], img[:, :, 2])):
            raise ImageRejected(
                f"a colour image, but {setting} says the camera sends a Bayer mosaic (one grey channel); "
                f"remove {setting} for a camera that sends colour"
            )
        img = img[:, :, 0]
    code = {
        "rggb": cv2.COLOR_BayerRGGB2BGR,
        "bggr": cv2.COLOR_BayerBGGR2BGR,
        "grbg": cv2.COLOR_BayerGRBG2BGR,
        "gbrg": cv2.COLOR_BayerGBRG2BGR,
    }[pattern]
    if min(img.shape[:2]) < 2:
        raise ImageRejected(f"{img.shape[1]}x{img.shape[0]} pixels: too small for a Bayer mosaic ({setting})")
    return orient(cv2.cvtColor(np.ascontiguousarray(img), code), orientation)


# chunks or segments read looking for a file's EXIF orientation: a crafted file of millions of them stays cheap
_EXIF_MAX_CHUNKS = 4096


def exif_orientation(data: bytes | memoryview) -> int:
    """The EXIF orientation (1-8; 1: as stored) OpenCV's decode turns this file by unless told
    ``IMREAD_IGNORE_ORIENTATION`` (``decode_image``: a TIFF too): a JPEG's first Exif APP1 segment, a PNG's
    eXIf chunk (before or after its image data), a WebP's EXIF chunk, a TIFF's Orientation tag; 1 for a file
    without one or of another kind. For applying it after what must see the pixels as stored (``demosaic``);
    never raises on malformed input."""
    b = bytes(data)
    exif = b""
    try:
        if b[:2] == b"\xff\xd8":
            i = 2
            for _ in range(_EXIF_MAX_CHUNKS):
                i = _TO_MARKER.match(b, i).end()  # type: ignore[union-attr]
                if i >= len(b) or b[i] in (0xD9, 0xDA):  # the image's end, or its coded data: no more headers
                    break
                m = b[i]
                i += 1
                if m == _STUFFED or m in _STANDALONE:
                    continue
                length = struct.unpack_from(">H", b, i)[0]
                if m == 0xE1 and b[i + 2 : i + 8] == b"Exif\x00\x00":
                    exif = b[i + 8 : i + length]
                    break
                i += length
        elif b[:8] == _PNG:
            i = 8
            for _ in range(_EXIF_MAX_CHUNKS):
                length, kind = struct.unpack_from(">I4s", b, i)
                if kind == b"eXIf":
                    exif = b[i + 8 : i + 8 + length]
                    break
                if kind == b"IEND":
                    break
                i += 12 + length
        elif b[:4] == b"RIFF" and b[8:12] == b"WEBP":
            i = 12
            for _ in range(_EXIF_MAX_CHUNKS):
                kind, length = struct.unpack_from("<4sI", b, i)
                if kind == b"EXIF":
                    exif = b[i + 8 : i + 8 + length]
                    exif = exif[6:] if exif[:6] == b"Exif\x00\x00" else exif
                    break
                i += 8 + length + (length & 1)
        elif b[:4] in _TIFF_MAGIC:
            exif = b
    except struct.error:  # cut short before an orientation: none
        return 1
    value = (tiff_directories(exif) or [{}])[0].get(274, 1)
    return value if 1 <= value <= 8 else 1


def orient(img: Any, orientation: int) -> Any:
    """``img`` turned as OpenCV's decode turns a file of EXIF ``orientation`` (its ``ApplyExifOrientation``:
    2 mirrored, 3 upside down, 4 flipped, 5-8 the same after a transpose); 1 or any other value: as it is."""
    if orientation not in range(2, 9):
        return img
    import cv2

    if orientation >= 5:
        img = cv2.transpose(img)
    flip = {2: 1, 3: -1, 4: 0, 6: 1, 7: -1, 8: 0}.get(orientation)
    return img if flip is None else cv2.flip(img, flip)


def _jpeg(data: bytes | memoryview) -> tuple[str, int, int] | None:
    frame = _jpeg_frame(data)
    return None if frame is None else ("JPEG", frame[2], frame[3])


def _jpeg_frame(data: bytes | memoryview) -> tuple[int, int, int, int] | None:
    """``(marker, sample precision, width, height)`` of the first frame header, found as libjpeg finds it:
    markers in order, garbage before a marker and 0xFF fill bytes skipped, segments stepped over by their
    length, nothing after the scan; at most ``_JPEG_MAX_SEGMENTS`` markers (past them: None, not read)."""
    n, i = len(data), 2
    steps = 0
    for _ in range(_JPEG_MAX_SEGMENTS + _JPEG_MAX_NOTES):
        if steps >= _JPEG_MAX_SEGMENTS:
            break
        steps += 1  # (given back below for a comment or application segment holding bytes)
        i = _TO_MARKER.match(data, i).end()  # type: ignore[union-attr]  # (extraneous bytes: libjpeg skips them)
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker == _STUFFED or marker in _STANDALONE:  # (a stuffed byte: extraneous, one step of the walk)
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        if i + 2 > n:
            return None
        length = (data[i] << 8) | data[i + 1]
        if length > 2 and (marker == 0xFE or marker & 0xF0 == 0xE0):
            steps -= 1
        if length < 2:
            return None
        if marker in _SOF:
            if i + 7 > n or length < 8:
                return None
            h = (data[i + 3] << 8) | data[i + 4]
            w = (data[i + 5] << 8) | data[i + 6]
            return marker, data[i + 2], w, h
        i += length
    return None


def _bmp(b: bytes) -> tuple[str, int, int] | None:
    if len(b) < 26:
        return None
    (hs,) = struct.unpack_from("<I", b, 14)
    if hs == 12:  # OS/2 BITMAPCOREHEADER: 16-bit size
        w, h = struct.unpack_from("<HH", b, 18)
        return "BMP", w, h
    if hs >= 16:
        w, h = struct.unpack_from("<ii", b, 18)
        if w < 0:  # signed on the wire, but only the height's sign means something (top-down)
            return None
        return "BMP", w, abs(h)  # a negative height is a top-down bitmap
    return None


_TIFF_INT = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8 (BigTIFF)


def _tiff(data: bytes | memoryview) -> tuple[str, int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first directory as libtiff reads them (``tiff_directories``):
    whatever integer type holds them, a tag given twice at its first value; None when that directory cannot be
    read or lacks either. (Read as SHORT/LONG/LONG8 only, a repeated tag at its last value, a 252-KB TIFF given
    as 64x16000 pixels was decoded to 16000x16000 under a 25-Mpx limit: 558 MB.)"""
    first = (tiff_directories(data) or [{}])[0]
    w, h = first.get(256), first.get(257)
    if w is None or h is None:
        return None
    return "TIFF", w, h


def _webp(b: bytes) -> tuple[str, int, int] | None:
    chunk = b[12:16]
    if chunk == b"VP8X" and len(b) >= 30:  # extended: the canvas size, 24 bits each, minus one
        w = 1 + int.from_bytes(b[24:27], "little")
        h = 1 + int.from_bytes(b[27:30], "little")
        return "WebP", w, h
    if chunk == b"VP8L" and len(b) >= 25 and b[20] == 0x2F:  # lossless: 14 bits each, minus one
        (bits,) = struct.unpack_from("<I", b, 21)
        return "WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(b) >= 30 and b[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        w, h = struct.unpack_from("<HH", b, 26)
        return "WebP", w & 0x3FFF, h & 0x3FFF
    return None


def _pnm(data: bytes | memoryview) -> tuple[str, int, int] | None:
    """P1-P6: width and height from the whole header (``_pnm_header``: '#' comments skipped, each number ended by
    whitespace, a maximum value of 1-65535 but for a bitmap), what ``image_kind`` tells a PNM by."""
    nums = _pnm_header(bytes(data[:4096]))
    return None if nums is None else ("PNM", nums[0], nums[1])
