"""Why an image file is not read as the agent's camera would read it, from its bytes: the checks of
``protocols.image_header`` and ``protocols.jpeg_check`` that ``model-packager build --input-images`` needs,
kept the same here because ``model_packager`` imports nothing of ours (DESIGN.md). ``read_image`` decodes a
file as the agent's folder camera does (``devices.camera.capture._decode``) or refuses it with the camera's
reason: a header declaring more than the camera's ``max_megapixels`` (default 25, ``CAMERA_MAX_MEGAPIXELS``)
is refused before anything is decoded (a 50-KB PNG can declare 30000 x 30000 pixels, 2.7 GB once decoded), a
file larger than such an image can need is not read at all (``max_file_bytes``), and a damaged file (a JPEG
cut short or with coded data missing, which libjpeg decodes with the missing part filled in grey; a PNG whose
data is cut or fails its CRC; a TIFF whose strips point at its header or at each other, which libtiff decodes
into garbage rows) is refused as the camera skips it as ``corrupt_frame``. A TIFF of several pages, or with a
preview first (decoders read the first directory only), an image with transparent pixels (OpenCV's colour read
drops the alpha: the colours beneath it are no part a camera shows), and the kinds OpenCV cannot decode (a
12-bit or lossless JPEG, a TIFF of 2-7-bit grey pixels) are refused with the camera's reason, so the statistics
are never taken from pixels the agent would not judge. tests/unit/test_image_readers_agree.py holds the
readers to the same pixels or refusals; change them together."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from typing import Any

__all__ = [
    "CAMERA_MAX_MEGAPIXELS",
    "FORMATS",
    "Refused",
    "animated",
    "damaged_jpeg",
    "deep_pixels",
    "image_kind",
    "image_size",
    "jpeg_scans_over",
    "max_file_bytes",
    "not_one_image",
    "pnm_maxval_not_255",
    "read_image",
    "tiff_data_misplaced",
    "tiles_over",
    "transparent",
    "undecodable_kind",
]

CAMERA_MAX_MEGAPIXELS = (
    25.0  # the agent's camera setting max_megapixels, its default (devices.camera.settings)
)
FORMATS = "PNG, JPEG, BMP, TIFF, WebP or PNM"
_BYTES_PER_PIXEL = 8  # no file of these kinds needs more for its first image (16-bit RGBA, uncompressed)
_PNG = b"\x89PNG\r\n\x1a\n"

_TIFF_MAGIC = frozenset({b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"})
# a crafted chain of overlapping directories stays cheap: at most so many directories, tags in one, and tags read
# across the chain (``protocols.image_header``'s limits)
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
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # JPEG frame headers (C4, C8, CC are not)
# the processes whose scans' restart markers are counted by MCU (Huffman-coded: baseline, extended, progressive)
_COUNTED = frozenset({0xC0, 0xC1, 0xC2})
_LOSSLESS_SOF = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
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
# put before a JPEG's end marker to see whether its decode ran out of data (``protocols.jpeg_check._FILL``)
_FILL = bytes((i * 167 + 13) % 255 for i in range(256))
_FILLED = (128, 64)  # what a block libjpeg filled in decodes to: 128 (YCbCr, grey), 64 (CMYK)


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


class Refused(ValueError):
    """Why a file is not read, in the camera's words (``protocols.image_header.ImageRejected``); ``oversize``:
    its header declares more pixels than the limit, ``unsupported``: a whole file of a kind not read as one
    frame (both else: damaged, the camera's ``corrupt_frame``)."""

    def __init__(self, reason: str, oversize: bool = False, unsupported: bool = False) -> None:
        super().__init__(reason)
        self.oversize = oversize
        self.unsupported = unsupported


def max_file_bytes(max_megapixels: float = CAMERA_MAX_MEGAPIXELS) -> int:
    """The largest file worth reading at all under the pixel limit (``protocols.image_header.max_file_bytes``)."""
    return int(_BYTES_PER_PIXEL * max_megapixels * 1e6) + 2**20


def read_image(data: bytes, max_megapixels: float = CAMERA_MAX_MEGAPIXELS) -> Any:
    """The image as the agent's folder camera decodes it (OpenCV's colour read at the file's own depth: a
    16-bit file stays 16-bit), or ``Refused`` with the camera's reason (``protocols.image_header.decode_image``,
    then ``protocols.jpeg_check.damaged_jpeg`` and the transparency check, as ``devices.camera.capture._decode``
    does them): its size is read from the header and checked against ``max_megapixels`` before any decoding."""
    import cv2
    import numpy as np

    if len(data) == 0:
        raise Refused("empty file")
    size = image_size(data)
    if size is None and image_kind(data) == "GIF":  # a kind browsers show, not one a camera sends
        raise Refused(
            f"a GIF image, which is not read here (a {FORMATS} image is): save it as PNG", unsupported=True
        )
    # a TIFF whose first directory cannot be read here (libtiff may read it: the checks below could not)
    if size is None and bytes(data[:4]) in _TIFF_MAGIC and not _tiff_directories(data):
        raise Refused(_TIFF_UNREAD)
    # a JPEG whose frame header lies past the markers the header walk reads: said so, with the bound, not "not a
    # JPEG" (a crafted file, or a tool's metadata in thousands of pieces: saved again without it, it is read)
    if size is None and bytes(data[:2]) == b"\xff\xd8" and (why := jpeg_scans_over(data)) is not None:
        raise Refused(why)
    if size is None:
        raise Refused(f"not a {FORMATS} image (or its header is cut short)")
    kind, w, h = size
    if w <= 0 or h <= 0:
        raise Refused(f"its {kind} header declares {w}x{h} pixels")
    if w * h > max_megapixels * 1e6:
        raise Refused(
            f"its {kind} header declares {w}x{h} pixels ({w * h / 1e6:.1f} Mpx), over the "
            f"{max_megapixels:g}-Mpx limit",
            oversize=True,
        )
    if kind == "JPEG" and (why := jpeg_scans_over(data)) is not None:  # a pass over the image per scan
        raise Refused(why)
    # libtiff's buffer is a whole tile, whatever the image's size
    if kind == "TIFF" and (why := tiles_over(data, max_megapixels)) is not None:
        raise Refused(why, oversize=True)
    # refused once decoded, its decode at 12 to 32 bytes a pixel
    if kind == "TIFF" and (why := deep_pixels(data)) is not None:
        raise Refused(why, unsupported=True)
    if kind == "TIFF" and (why := not_one_image(data)) is not None:
        raise Refused(why, unsupported=True)
    if kind in ("PNG", "WebP") and (why := animated(data)) is not None:  # the first frame of several
        raise Refused(why, unsupported=True)
    if kind == "PNM" and (why := pnm_maxval_not_255(data)) is not None:  # text: scaled, unlike binary
        raise Refused(why, unsupported=True)
    if kind == "TIFF" and (why := tiff_data_misplaced(data)) is not None:
        raise Refused(why)
    if kind == "PNG" and (why := _png_chunk_overrun(data)) is not None:  # libpng would allocate what it says
        raise Refused(f"a PNG header for {w}x{h} pixels, but the image data is truncated or corrupt ({why})")
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    try:
        img = cv2.imdecode(np.frombuffer(_samples_ended(data), np.uint8), flags)
    except cv2.error as exc:  # some headers OpenCV refuses by raising: a side over 2^20 pixels (its limit)
        said = " ".join(str(exc).split()).split(" error: ", 1)[-1][:160]  # without OpenCV's source path
        raise Refused(
            f"a {kind} header for {w}x{h} pixels, which OpenCV's decoder refuses ({said}): the header is "
            "damaged, or the image is of a size no reader here takes"
        ) from None
    if img is None or img.size == 0:
        if (why := undecodable_kind(data)) is not None:
            raise Refused(why, unsupported=True)
        raise Refused(f"a {kind} header for {w}x{h} pixels, but the image data is truncated or corrupt")
    if (why := damaged_jpeg(data, img, flags)) is not None:
        raise Refused(why)
    if (why := transparent(data)) is not None:
        raise Refused(why, unsupported=True)
    return img


def _samples_ended(data: bytes | memoryview) -> bytes | memoryview:
    """``data`` as OpenCV is given it (``protocols.image_header._samples_ended``): a plain PGM or PPM whose last
    sample ends the file with a line end after it."""
    if bytes(data[:2]) in (b"P2", b"P3") and bytes(data[-1:]).isdigit():
        return bytes(data) + b"\n"
    return data


def tiles_over(data: bytes, max_megapixels: float) -> str | None:
    """Why a tiled TIFF is not decoded, or None (``protocols.image_header.tiff_tiles_over``): tiles of more
    pixels than ``max_megapixels``, which OpenCV's decoder would allocate whole (up to 1 GiB) whatever size the
    image declares."""
    dirs = _tiff_directories(data)
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


def deep_pixels(data: bytes) -> str | None:
    """Why a TIFF of float pixels or of more than 16 bits a sample is not decoded, or None
    (``protocols.image_header.tiff_deep_pixels``): refused once decoded, its decode takes 12 to 32 bytes a pixel."""
    dirs = _tiff_directories(data)
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


def not_one_image(data: bytes) -> str | None:
    """Why a TIFF is not read as one image (several full-resolution pages, or a reduced-resolution copy
    first), or None: ``protocols.image_header.tiff_not_one_image``."""
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


def transparent(data: bytes) -> str | None:
    """Why an image with transparent pixels is not read (``protocols.image_header.transparent_pixels`` and
    the camera's refusal), or None; decoded a second time only when its header allows alpha."""
    if not _may_be_transparent(data):
        return None
    import cv2
    import numpy as np

    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if full is None:
        return None
    key = _png_key_colour(data)
    alpha: np.ndarray
    if key is not None and len(key) == (1 if full.ndim == 2 else full.shape[2]):
        # a grey or RGB PNG with a transparent colour: read without alpha, its pixels of that colour are clear
        clear = np.all(full.reshape(*full.shape[:2], -1) == np.asarray(key, full.dtype), axis=2)
        alpha = np.where(clear, 0, 255).astype(np.uint8)
    elif full.ndim != 3 or full.shape[2] not in (2, 4):
        return None
    else:
        alpha = full[:, :, -1]
    if alpha.dtype not in (np.uint8, np.uint16):
        return None
    if data[:2] == b"BM" and not alpha.any():  # a BMP's alpha left 0 everywhere: unused, not clear
        return None
    clear = int(np.count_nonzero(alpha < (255 if alpha.dtype == np.uint8 else 65535)))
    if not clear:
        return None
    return (
        f"{clear} of its {alpha.size} pixels are transparent (an alpha channel, or a colour made transparent); "
        "the model would judge the colours stored beneath them: save the images without transparency"
    )


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


def undecodable_kind(data: bytes) -> str | None:
    """Why a file OpenCV could not decode is of a kind it does not read (``protocols.image_header.
    _undecodable_kind``), or None: then it is taken as damaged."""
    if data[:2] == b"BM":
        return bmp_not_decodable(data)
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
    if first.get(339) == 3:  # IEEE float samples: OpenCV's colour read of a grey one fails outright
        return (
            f"a TIFF of {bits}-bit float pixels; 8-bit and 16-bit images are read (measurements or an analysis "
            "tool's export, not a camera's frame): save it as an 8-bit image scaled to 0-255 as your camera "
            "delivers it"
        )
    if photometric in (0, 1) and bits not in (1, 8, 10, 12, 14, 16, 32, 64):  # the grey ones OpenCV reads
        return f"a TIFF of {bits}-bit grey pixels, which this reader cannot decode: save it as 8-bit grey"
    return None


def _png_key_colour(data: bytes | memoryview) -> tuple[int, ...] | None:
    """A grey or RGB PNG's transparent colour (its ``tRNS`` chunk before the image data) as OpenCV's unchanged read
    holds it: a grey value (1-, 2- and 4-bit ones scaled to 8 bits, as libpng expands them) or (blue, green, red);
    None for another PNG or file. OpenCV's read keeps a grey one without alpha (a palette's ``tRNS`` becomes an
    alpha channel, and an RGB one's here), so its transparent pixels are those of that colour."""
    head = bytes(data[:33])
    if len(head) < 33 or head[:8] != _PNG or head[25] not in (0, 2):
        return None
    colour, depth = head[25], head[24]
    for typ, at, length in _png_chunks(data):
        if typ == b"tRNS":
            # one of another length than its colour's, or whose CRC is wrong, libpng drops (warned of only): the
            # image is read opaque, by OpenCV and viewers alike
            if length != (2 if colour == 0 else 6) or not _png_chunk_crc_ok(data, at, length):
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
        alpha = data[25] in (4, 6) or data.find(b"tRNS", 0, idat if idat > 0 else len(data)) >= 0
        return alpha and _png_chunk_overrun(data) is None  # never decoded with a chunk past its end (4 GiB)
    if magic not in _TIFF_MAGIC:
        return False
    first = (_tiff_directories(data) or [{}])[0]
    colours = {0: 1, 1: 1, 2: 3}.get(first.get(262, -1))  # PhotometricInterpretation: grey or RGB
    return colours is not None and first.get(277, 1) > colours and first.get(338, 2) != 0


def _tiff_directories(data: bytes | memoryview) -> list[dict[int, int]]:
    """Each page's SHORT/LONG tags' first values (``protocols.image_header.tiff_directories``)."""
    return _tiff_chain(data)[0]


def _tiff_chain(data: bytes | memoryview) -> tuple[list[dict[int, int]], bool]:
    """``_tiff_directories``, and whether a limit stopped the walk before the chain's end (more may follow)."""
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


# ``protocols.image_header``'s telling of a file's kind by its bytes, the same code

SNIFF_BYTES = 512  # of a file's start, what ``image_kind`` reads: a PNM header after a comment line or two
_BMP_INFO_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})  # BMP's info header sizes
_ANIMATION_MAX_CHUNKS = 4096  # chunks read looking for an animation's frames: a crafted file stays cheap
# ``_png_chunk_overrun``: chunks walked at most, or one per so many bytes of the file when more (encoders cut the
# image data into chunks of 8 KiB or more, or one a row): a crafted file of 16 million empty chunks held the decode
# ~10 s; a PNG of more is refused
_PNG_MAX_CHUNKS, _PNG_CHUNK_BYTES = 1 << 16, 4096


def image_kind(head: bytes | memoryview) -> str | None:
    """The kind of image (a key of ``protocols.image_header.KIND_SUFFIXES``) a file is by its first bytes (``SNIFF_BYTES`` of them are
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
    in both encodings (``pixel_bits``)."""
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


def _png_chunks(data: bytes | memoryview) -> Iterator[tuple[bytes, int, int]]:
    """Each chunk of a PNG before its image data (``IDAT``) or end (``IEND``), as (type, where its data starts, its
    length), for as long as each lies wholly in the file: headers read by offset, nothing copied, wherever in the
    file the chunk is (a ``tRNS`` or ``tEXt`` after 64 KiB of text chunks, or after 64 chunks, was not seen). At most
    ``_PNG_MAX_CHUNKS`` chunks, or one per ``_PNG_CHUNK_BYTES`` of the file when more (``_png_chunk_overrun``'s bound:
    a file of more is refused as damaged). A copy of ``protocols.image_header.png_chunks`` (``model_packager``
    imports nothing of ours), kept the same code by a test, as this module's other copies are."""
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


def _png_chunk_crc_ok(data: bytes | memoryview, at: int, length: int) -> bool:
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


# ``protocols.image_header``'s header reading, the same code


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


def _jpeg(data: bytes | memoryview) -> tuple[str, int, int] | None:
    frame = _jpeg_frame(data)
    return None if frame is None else ("JPEG", frame[2], frame[3])


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
    """ImageWidth (256) and ImageLength (257) of the first directory as libtiff reads them (``_tiff_directories``):
    whatever integer type holds them, a tag given twice at its first value; None when that directory cannot be
    read or lacks either. (Read as SHORT/LONG/LONG8 only, a repeated tag at its last value, a 252-KB TIFF given
    as 64x16000 pixels was decoded to 16000x16000 under a 25-Mpx limit: 558 MB.)"""
    first = (_tiff_directories(data) or [{}])[0]
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


# ``protocols.jpeg_check``, the same code


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
