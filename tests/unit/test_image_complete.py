"""Images told whole or cut short by their structure (``protocols.image_complete.cut_short``), every kind
``image_kind`` knows: the camera's drop folder and MJPEG reader told only a JPEG or PNG cut short, and took any BMP,
TIFF, PNM, WebP or GIF as whole, so half an upload was decoded (a torn image, or ``corrupt_frame``)."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from devices.camera.mjpeg import looks_whole
from tests.support.line_events import line_events

RNG = np.random.default_rng(7)
COLOUR = RNG.integers(0, 255, (60, 80, 3), dtype=np.uint8)
# a 1x1 GIF: header, screen with a 2-colour table, graphic control extension, image, LZW data, trailer
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00"
    b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def encoded(ext: str, img: np.ndarray = COLOUR, params: tuple = ()) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


WHOLE = {
    "bmp colour": encoded(".bmp"),
    "bmp grey (palette)": encoded(".bmp", COLOUR[:, :, 0]),
    "tiff (directory last)": encoded(".tif"),
    "tiff lzw": encoded(".tif", params=(cv2.IMWRITE_TIFF_COMPRESSION, 5)),
    "ppm": encoded(".ppm"),
    "pgm 16-bit": encoded(".pgm", (COLOUR[:, :, 0].astype(np.uint16) * 200)),
    "pbm": encoded(".pbm", (COLOUR[:, :, 0] > 127).astype(np.uint8) * 255),
    "webp lossy": encoded(".webp"),
    "webp lossless": encoded(".webp", params=(cv2.IMWRITE_WEBP_QUALITY, 101)),
    "png": encoded(".png"),
    "jpeg": encoded(".jpg"),
    "plain pgm": b"P2\n# a comment\n3 2\n255\n1 2 3\n4 5 255\n",
    "plain pbm": b"P1\n4 2\n0101\n1 1 1 1\n",
}


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_every_kind_cut_anywhere_is_not_taken_as_whole(name):
    data = WHOLE[name]
    assert looks_whole(data), name
    for k in sorted({1, 2, 7, 17, 40, 90, len(data) // 3, len(data) // 2, len(data) - 3, len(data) - 1}):
        if 0 < k < len(data) and not (
            name == "plain pbm" and data[k:].isspace()
        ):  # (its digits are its samples)
            assert not looks_whole(data[:k]), f"{name} cut at {k} of {len(data)} bytes taken as whole"


def test_a_gif_and_a_tiff_with_its_directory_first_cut_anywhere_are_cut_short():
    from protocols.image_complete import cut_short
    from tests.integration.test_camera_drop_folder_cut_short import tiff_strips_after_directory

    tiff = tiff_strips_after_directory(COLOUR[:, :, 0])
    assert cut_short(GIF) is None and cut_short(tiff) is None
    for k in range(1, len(GIF)):
        assert cut_short(GIF[:k]) is not None, k
    for k in range(1, len(tiff), 97):
        assert cut_short(tiff[:k]) is not None, k
    why = cut_short(tiff[: len(tiff) - 10])
    assert why is not None and "strip 8 of 8" in why and "past its end" in why, why


def test_a_jpeg_with_bytes_after_its_end_is_whole_but_one_cut_after_its_thumbnail_is_not():
    """A trailer after the end marker (some cameras append one) is no cut; an EXIF thumbnail's end marker, inside
    its header, is not the image's. An MJPEG part told by its Content-Length must end with its marker."""
    from protocols.image_complete import cut_short

    jpeg = WHOLE["jpeg"]
    assert cut_short(jpeg + b"camera trailer 0001") is None
    assert cut_short(jpeg + b"camera trailer", exact_end=True) is not None
    assert cut_short(jpeg + b"\r\n", exact_end=True) is None
    thumb = encoded(".jpg", COLOUR[:8, :8])
    app1 = b"Exif\x00\x00" + thumb  # (not a real EXIF directory: its bytes are what matters here)
    with_thumb = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]
    assert cut_short(with_thumb) is None
    assert cut_short(with_thumb[: len(with_thumb) // 2]) is not None
    assert cut_short(b"") is not None  # nothing written yet


def test_a_bmp_cut_within_its_pixels_says_where_they_end():
    from protocols.image_complete import cut_short

    bmp = WHOLE["bmp colour"]
    why = cut_short(bmp[:1000])
    assert (
        why
        == f"a BMP cut short (1000 bytes): its pixel data ends at byte {len(bmp)} (the header's offset and size)"
    )


def test_hostile_headers_never_raise_nor_allocate_by_what_they_declare():
    from protocols.image_complete import cut_short

    tiff = bytearray(WHOLE["tiff (directory last)"])
    (ifd,) = struct.unpack_from("<I", tiff, 4)
    looped = bytearray(tiff)
    (count,) = struct.unpack_from("<H", looped, ifd)
    struct.pack_into("<I", looped, ifd + 2 + 12 * count, ifd)  # the next directory: itself
    assert cut_short(bytes(looped)) is None  # read once round
    huge = bytearray(tiff)
    for k in range(count):  # StripOffsets: 2^32 - 1 of them
        p = ifd + 2 + 12 * k
        if struct.unpack_from("<H", huge, p)[0] == 273:
            struct.pack_into("<I", huge, p + 4, 0xFFFFFFFF)
    assert "past its end" in (cut_short(bytes(huge)) or "")
    big = b"II+\x00\x08\x00\x00\x00" + struct.pack("<Q", 2**63 + 5) + bytes(32)  # BigTIFF, directory at 2^63
    assert cut_short(big) is not None
    bmp = bytearray(WHOLE["bmp colour"])
    struct.pack_into("<ii", bmp, 18, 2**31 - 1, -(2**31))
    assert cut_short(bytes(bmp)) is not None
    assert cut_short(b"P2\n999999999 999999999\n65535\n1 2 3\n") is not None
    assert cut_short(b"RIFF\xff\xff\xff\xffWEBPVP8 ") is not None
    # every byte of each kind's header damaged in turn, and random bytes after each signature: never raises
    rng = np.random.default_rng(3)
    for data in WHOLE.values():
        for i in range(min(len(data), 160)):
            for v in (0, 0xFF, int(rng.integers(0, 256))):
                bad = bytearray(data)
                bad[i] = v
                cut_short(bytes(bad))
    for start in (b"BM", b"II*\x00", b"MM\x00*", b"II+\x00", b"RIFF", b"GIF89a", b"P5\n", b"\xff\xd8\xff"):
        for _ in range(200):
            cut_short(start + rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes())


def test_a_tiff_libtiff_is_still_writing_its_directory_not_yet_linked_is_cut_short():
    """libtiff (OpenCV's, most vision software's TIFF writer) writes its header with the first directory's offset
    0, then the pixels, and links its directory in last: a file it is writing into the drop folder, stalled or
    slow, was taken as whole (no directory to check), decoded and counted as ``corrupt_frame`` (an upload's '.part'
    too), an error for a frame still coming."""
    from protocols.image_complete import cut_short

    tiff = WHOLE["tiff (directory last)"]
    (ifd,) = struct.unpack_from("<I", tiff, 4)
    unlinked = tiff[:4] + bytes(4) + tiff[8:]
    # its pixels written, then its directory too, not yet linked in
    for k in (8, 9, ifd // 2, ifd, len(tiff)):
        why = cut_short(unlinked[:k])
        assert why is not None and "no image directory yet" in why, (k, why)
        assert not looks_whole(unlinked[:k])
    assert cut_short(tiff) is None


def tiff_of_one_byte_strips(strips: int) -> bytes:
    """A 1-pixel-wide TIFF of ``strips`` rows, one strip each, its strip tables between its directory and pixels."""
    tags = [(256, 4, 1, 1), (257, 4, 1, strips), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    tables = 8 + 2 + 8 * 12 + 4
    tags += [(273, 4, strips, tables), (278, 4, 1, 1), (279, 4, strips, tables + 4 * strips)]
    pixels = tables + 8 * strips
    head = b"II*\x00" + struct.pack("<IH", 8, len(tags))
    head += b"".join(struct.pack("<HHII", *t) for t in tags) + struct.pack("<I", 0)
    offsets = np.arange(pixels, pixels + strips, dtype="<u4")
    return head + offsets.tobytes() + np.ones(strips, "<u4").tobytes() + bytes(strips)


def test_a_tiff_of_millions_of_strips_is_told_whole_or_cut_within_a_few_megabytes():
    """A crafted TIFF of millions of 1-byte strips (25 million fit in the 201 MB a 25-Mpx frame may take): its
    strip tables were copied whole to 64-bit arrays and compared, ~3.7 times the file (726 MB above a 198-MB
    file measured) on a gateway, before any decode. Now a slice of them at a time."""
    import tracemalloc

    from protocols.image_complete import cut_short

    tiff = tiff_of_one_byte_strips(2_000_000)  # 18 MB
    cut = tiff[:-1]
    tracemalloc.start()
    try:
        assert cut_short(tiff) is None
        why = cut_short(cut)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert why is not None and "strip 2000000 of 2000000" in why, why
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MB to check a {len(tiff) / 2**20:.0f}-MB TIFF"


@pytest.mark.parametrize(
    "name",
    ["jpeg, bytes before a marker", "jpeg, fill bytes", "jpeg, empty segments", "gif, 1-byte sub-blocks"],
)
def test_a_crafted_header_of_millions_of_tiny_parts_is_walked_within_a_bound(name):
    """A JPEG whose header is 2 MB of bytes before a marker, of fill bytes or of empty segments, or a GIF of
    1-byte sub-blocks, was walked a byte or a segment at a time in Python: ~0.75 s for 20 MB, so ~8 s of the
    camera's thread for the 201 MB a frame may take, again at each retry while it stayed cut short. Counted in
    Python line events, not timed: under 200,000 for 2 MB (4-6 million before)."""

    from protocols.image_complete import cut_short

    m = 2_000_000
    data = {
        "jpeg, bytes before a marker": b"\xff\xd8\xff" + bytes(m),
        "jpeg, fill bytes": b"\xff\xd8" + b"\xff" * m,
        "jpeg, empty segments": b"\xff\xd8" + b"\xff\xfe\x00\x02" * (m // 4),
        # (no colour table: its image descriptor, its LZW code size, then sub-blocks of 1 byte)
        "gif, 1-byte sub-blocks": b"GIF89a\x01\x00\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02"
        + b"\x01\x00" * (m // 2),
    }[name]
    budget = 200_000
    lines = line_events(lambda: cut_short(data), budget)
    assert lines <= budget, f"{name}: over {budget} lines run for {len(data)} bytes"


@pytest.mark.parametrize("magic", ["P1", "P2"])
def test_a_large_plain_pnm_is_told_whole_or_cut_within_a_few_megabytes(magic):
    """A plain (text) PNM's samples were counted over numpy masks of the whole file at once, about twice the file in
    temporaries: a 25-Mpx plain PGM a machine-vision tool exports is ~100 MB, so ~200 MB above it on a gateway, at
    each retry while it looked cut short. Counted a slice at a time now, the same count across slice boundaries
    (samples of several digits split by one). Traced, not timed."""
    import tracemalloc

    from protocols.image_complete import cut_short

    w, h = 3001, 1000
    sample = b"1 " if magic == "P1" else b"255 "
    header = f"{magic}\n{w} {h}\n".encode() + (b"" if magic == "P1" else b"255\n")
    whole = header + sample * (w * h)
    files = [whole, whole[:-3], whole.rstrip()]
    tracemalloc.start()
    try:
        verdicts = [cut_short(f) for f in files]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MB to check a {len(whole) / 2**20:.0f}-MB plain PNM"
    assert verdicts[0] is None
    assert f"{w * h - 1} of its {w * h} samples" in (verdicts[1] or ""), verdicts[1]
    # the last sample without a line end after it may be cut within its digits ('25' of '255'): as before
    assert (verdicts[2] is None) == (magic == "P1"), verdicts[2]


def tiff_of_many_tagged_directories(directories: int = 256, tags: int = 1024, last_next: int = 0) -> bytes:
    """A chain of ``directories`` image directories of ``tags`` SHORT tags each (the most the readers walk), 3 MB:
    the last one's next-directory offset ``last_next`` (past the end: the file keeps looking cut short)."""
    size = 2 + 12 * tags + 4
    entries = b"".join(struct.pack("<HHII", 256 + k, 3, 1, k) for k in range(tags))
    out = [b"II*\x00" + struct.pack("<I", 8)]
    for d in range(directories):
        following = 8 + (d + 1) * size if d + 1 < directories else last_next
        out.append(struct.pack("<H", tags) + entries + struct.pack("<I", following))
    return b"".join(out)


@pytest.mark.parametrize(
    "reader",
    [
        "protocols.image_complete:cut_short",
        "protocols.image_header:tiff_directories",
        "protocols.image_header:tiff_not_one_image",
        "model_packager.image_file:not_one_image",
    ],
)
# the whole chain; or one directory fewer, the last pointing past the end: cut short, retried, for 5 s by default
@pytest.mark.parametrize(("directories", "last_next"), [(256, 0), (255, 1 << 30)])
def test_a_crafted_tiff_of_many_directories_of_many_tags_is_walked_within_a_bound(
    reader, directories, last_next
):
    """A crafted TIFF of 256 directories of 1,024 tags each (within the limits on each, 3 MB) was walked a tag at a
    time in Python: ~0.4 s per read, read several times per decode attempt of the camera's drop folder (cut short,
    its check, the page count), again at each retry while it looked cut short. The tags walked across the chain are
    bounded now (4,096: 256 pages of 16; a real page has 10-30). Counted in Python line events, not timed: under
    100,000 (2.4-2.6 million before)."""
    import importlib

    module, name = reader.split(":")
    read = getattr(importlib.import_module(module), name)
    data = tiff_of_many_tagged_directories(directories, last_next=last_next)
    read(b"II*\x00" + bytes(4))  # (imports done outside the count)
    budget = 100_000
    lines = line_events(lambda: read(data), budget)
    assert lines <= budget, f"{reader}: over {budget} lines run for a {len(data)}-byte TIFF"


def test_opencvs_multi_page_tiffs_are_walked_to_their_last_page_as_before(tmp_path):
    """The bound on tags walked leaves real files as they were read: OpenCV's pages (14 tags each) are counted to
    the 256-directory limit by the camera's reader and the packager's alike, and a 255-page file cut within its
    last directory is still told cut short."""
    from model_packager.image_file import not_one_image
    from protocols.image_complete import cut_short
    from protocols.image_header import tiff_directories, tiff_not_one_image

    page = COLOUR[:, :, 0]
    for pages, said in (
        (20, "a TIFF of 20 pages"),
        (255, "a TIFF of 255 pages"),
        (300, "a TIFF of 256 or more pages"),
    ):
        path = tmp_path / f"{pages}.tiff"
        assert cv2.imwritemulti(str(path), [page] * pages)
        data = path.read_bytes()
        dirs = tiff_directories(data)
        assert len(dirs) == min(pages, 256) and all(d[256] == 80 and d[257] == 60 for d in dirs)
        assert said in (tiff_not_one_image(data) or ""), tiff_not_one_image(data)
        assert not_one_image(data) == tiff_not_one_image(data)
        assert cut_short(data) is None
        if pages == 255:
            assert "its image directory 255 " in (cut_short(data[:-1]) or ""), cut_short(data[:-1])


def test_a_plain_pnm_without_a_line_end_after_its_last_sample_is_whole_once_its_writer_is_done():
    """A plain PNM's last sample may end the file (no line end nor space after it: the format asks none). Digits at
    the end may be a number still being written ('25' of '255'), so it is cut short while its writer may be at
    work; but it was cut short for ever, so a drop folder skipped the whole image once its wait was over. Once
    ``settled`` (unchanged past the wait) its last number is whole; a sample missing is still missing."""
    from protocols.image_complete import cut_short

    for whole in (b"P2\n3 2\n255\n1 2 3\n4 5 255", b"P3 1 1 65535 1 2 30000", b"P2\n1 1\n9\n9"):
        assert cut_short(whole) is not None, whole  # its writer may still be at its last number
        assert cut_short(whole, settled=True) is None, whole
        assert cut_short(whole + b"\n") is None and cut_short(whole + b"\n", settled=True) is None
    for cut in (b"P2\n3 2\n255\n1 2 3\n4 5", b"P2\n3 2\n255\n1 2 3\n4 5 ", b"P3 1 1 65535 1 2"):
        # a sample missing: cut short, settled or not
        assert "of its" in (cut_short(cut, settled=True) or ""), cut
    assert cut_short(b"P1\n4 1\n0101", settled=True) is None  # a bitmap's digits are its samples, as before


def test_a_stuffed_byte_in_a_jpegs_header_is_no_marker_to_the_cut_short_check():
    """0xFF 0x00 in a JPEG's header is a stuffed byte, no marker (T.81 B.1.1.2; libjpeg steps over it): the
    cut-short check took it for a marker and the bytes after it for a length that stepped past the file's end, so
    a whole file that libjpeg decodes was cut short for ever (a drop folder skipped it, never inspected). Its
    header walk is libjpeg's now, as the size read's and the damage check's are (one pattern for the three)."""
    import protocols.image_header
    import protocols.jpeg_check
    from model_packager import image_file
    from protocols.image_complete import cut_short
    from tests.unit.test_image_header import stuffed_byte_jpegs

    _, decoy, past = stuffed_byte_jpegs()
    for data in (decoy, past):
        assert cut_short(data) is None
        assert looks_whole(data)
        for k in (len(data) // 2, len(data) - 2):
            assert cut_short(data[:k]) is not None, k
    patterns = {m._TO_MARKER.pattern for m in (protocols.image_header, protocols.jpeg_check, image_file)}
    assert len(patterns) == 1, patterns


def test_a_pnm_whose_comments_fill_more_than_its_sniffed_start_is_checked_for_being_cut_short():
    """A PNM is told by its first ``SNIFF_BYTES`` (``image_kind``), but read by its whole header (``image_size``:
    4 KiB, comments before its size skipped), so a PGM or PPM whose comments there fill more (a tool's long
    description) was no image to the cut-short check, and whole: a drop folder read it at once while it was being
    written, a binary one refused as truncated (``corrupt_frame``), a plain one cut within its last number
    ('20' of '200') decoded with that pixel wrong. It is checked as a PNM whatever the length of its comments."""
    from protocols.image_complete import cut_short
    from protocols.image_header import image_kind, image_size

    comment = b"# " + b"x" * 600 + b"\n"
    plain = b"P2\n" + comment + b"100 50\n255\n" + b" ".join([b"200"] * 5000)
    binary = b"P5\n" + comment + b"100 50\n255\n" + bytes(range(250)) * 20
    for data, cut_says in ((plain, "of its 5000 samples"), (binary, "its raster ends at byte")):
        assert image_kind(data) is None and image_size(data) == ("PNM", 100, 50)
        assert cut_short(data + b"\n") is None
        for cut in (data[:-1], data[: len(data) // 2]):
            assert cut_says in (cut_short(cut) or ""), (len(cut), cut_short(cut))
    assert cut_short(plain, settled=True) is None  # its last sample ends it: whole once its writer is done


def _png_chunk(typ: bytes, data: bytes) -> bytes:
    import zlib

    return struct.pack(">I", len(data)) + typ + data + struct.pack(">I", zlib.crc32(typ + data))


def test_a_png_is_whole_when_its_chunk_chain_ends_with_iend_not_when_iends_bytes_are_anywhere():
    """A PNG counted as whole when the IEND chunk's 12 bytes were found anywhere in it: one cut short within its
    image data after an ancillary chunk holding those bytes (a thumbnail PNG kept in a private chunk, as C2PA's
    claim thumbnails are; a text) or whose image data holds them was whole, so a drop folder or a snapshot camera
    read half an upload (``corrupt_frame``). Its chunks are walked by their lengths now: whole means the chain
    reaches IEND; bytes after it are allowed, but not in a part told by its Content-Length (``exact_end``)."""
    from protocols.image_complete import cut_short

    png = WHOLE["png"]
    end = png[-12:]
    assert end == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    thumb = encoded(".png", COLOUR[:8, :8])
    after_ihdr = 8 + 25
    with_thumb = png[:after_ihdr] + _png_chunk(b"prVw", thumb) + png[after_ihdr:]
    with_text = png[:after_ihdr] + _png_chunk(b"tEXt", b"Comment\x00" + end) + png[after_ihdr:]
    # image data whose bytes hold IEND's: a stored (uncompressed) deflate stream of rows that carry them
    rows = b"".join(b"\x00" + (end * 4)[:48] for _ in range(16))
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
    import zlib

    in_data = png[:8] + ihdr + _png_chunk(b"IDAT", zlib.compress(rows, 0)) + _png_chunk(b"IEND", b"")
    for data in (with_thumb, with_text, in_data):
        assert cut_short(data) is None and looks_whole(data)
        assert cut_short(data + b"trailer") is None  # bytes after its IEND: whole, as before
        assert cut_short(data + b"trailer", exact_end=True) is not None  # a part running into the next
        last = data.rfind(b"IDAT") - 4
        for k in (data.find(end) + 12, last + 40, len(data) - 13, len(data) - 1):
            assert end in data[:k]  # IEND's bytes are there, before the cut
            assert cut_short(data[:k]) is not None, k  # cut within it, after IEND's bytes elsewhere
            assert cut_short(data[:k], exact_end=True) is not None, k
        assert cut_short(data[:-1] + b"\x00") is None  # a damaged IEND CRC: the decode says so, not cut short
    # what is no chunk (a file sized first, its bytes not yet written) breaks the chain: cut short
    sized_first = png[: len(png) // 2] + bytes(len(png) - len(png) // 2 - 12) + end
    assert "no chunk at byte" in (cut_short(sized_first) or ""), cut_short(sized_first)
    said = cut_short(with_thumb[:-100])
    assert said is not None and "'IDAT' chunk at byte" in said and "no IEND chunk" in said, said


def test_a_whole_png_whose_chunk_chain_breaks_before_its_iend_is_damaged_never_an_upload_under_way():
    """A whole PNG with a bit flipped in a chunk's length or type breaks its chunk chain as an upload cut short does,
    and the drop folder waited 5 s for it to grow, then counted it as cut_short. Ending with its IEND chunk (written
    last) and broken at written bytes, it is damaged (``png_damaged``); a file cut anywhere, one sized first (zeros
    where it is not yet written) and one cut at the IEND of a thumbnail PNG it keeps in a chunk are not."""
    from protocols.image_complete import cut_short, png_damaged

    png = WHOLE["png"]
    end = png[-12:]
    at = png.index(b"IDAT") - 4
    text = _png_chunk(b"tEXt", b"Comment\x00hello")
    with_text = png[:33] + text + png[33:]
    length = struct.unpack_from(">I", png, at)[0]
    damaged = {
        "IDAT length, a bit flipped": png[:at] + bytes([png[at] ^ 0x10]) + png[at + 1 :],
        "IDAT type damaged": png[: at + 4] + b"ID\x00T" + png[at + 8 :],
        "IDAT length 4 short": png[:at] + struct.pack(">I", length - 4) + png[at + 4 :],
        "tEXt length, a bit flipped": with_text[:33] + bytes([with_text[33] ^ 0x01]) + with_text[34:],
    }
    for name, data in damaged.items():
        assert cut_short(data) is not None, name  # as before: its chain breaks off
        why = png_damaged(data)
        assert why is not None and "at byte" in why, (name, why)
        assert png_damaged(data + b"\r\n") is not None, name  # padding after its IEND, as cut_short allows
    thumb = encoded(".png", COLOUR[:8, :8])
    with_thumb = png[:33] + _png_chunk(b"prVw", thumb) + png[33:]
    sized_first = png[: len(png) // 2] + bytes(len(png) - len(png) // 2 - 12) + end
    whole_ones = (png, with_text, with_thumb, png + b"trailer")
    cuts = [d[:k] for d in whole_ones for k in range(1, len(d), 97)]
    cuts += [with_thumb[: with_thumb.find(end) + 12], sized_first, png[:-12] + bytes(12)]
    for data in (*whole_ones, *cuts):
        assert png_damaged(data) is None, len(data)
    assert cut_short(with_thumb[: with_thumb.find(end) + 12]) is not None  # waited for, as an upload
    assert png_damaged(b"not a png" + end) is None and png_damaged(WHOLE["jpeg"]) is None


def test_a_png_written_in_segments_paused_with_a_gap_at_a_chunk_header_is_waited_for_never_damaged():
    """A copy writing a file in segments (rclone's multi-thread copy, a download manager: its last segment written
    first, zeros between) leaves a PNG ending with its IEND whose chain breaks in the gap. Paused 3-7 bytes into a
    chunk's header (its written bytes not all zeros), or with a later segment begun 1-7 bytes into one (its length
    zeroed: the walk steps into image data), it was taken for a damaged PNG and refused at once; a run of 16 zeros
    at the header where the chain breaks, or at the last whole one before it, is bytes not yet written: waited for.
    A bit flipped in a chunk's header of a whole PNG is still damaged (the test above)."""
    from protocols.image_complete import cut_short, png_damaged

    img = cv2.GaussianBlur(np.random.default_rng(2).integers(0, 256, (160, 320), np.uint8), (5, 5), 0)
    png = encoded(".png", img)  # libpng: IDAT chunks of 8192 bytes
    heads, i = [], 8
    while i < len(png):
        heads.append(i)
        i += 12 + struct.unpack_from(">I", png, i)[0]
    assert len(heads) >= 6
    paused = []
    for h in heads[2:-1]:
        for k in range(1, 8):
            # the frontier k bytes into a header; a segment begun k bytes into one, after a long or a short gap
            paused.append(png[: h + k] + bytes(4096) + png[h + k + 4096 :])
            paused.append(png[: h + k - 4096] + bytes(4096) + png[h + k :])
            paused.append(png[: h + k - 20] + bytes(20) + png[h + k :])
    # (a gap over a length's high zero bytes alone leaves the chain whole: the decode tells by the CRC)
    cut = [data for data in paused if cut_short(data) is not None]  # cut short: read again, never inspected
    assert len(cut) >= len(paused) * 3 // 4, (len(cut), len(paused))
    for data in cut:
        assert png_damaged(data) is None, png_damaged(data)  # not refused as damaged: waited for
    flipped = 0  # one bit flipped in a chunk's length or type of the whole file: still damaged
    for h in heads[2:4]:
        for bit in range(64):
            data = bytearray(png)
            data[h + bit // 8] ^= 1 << bit % 8
            if cut_short(bytes(data)) is not None:
                flipped += 1
                assert png_damaged(bytes(data)) is not None, (h, bit)
    assert flipped >= 64


def test_a_crafted_png_of_millions_of_empty_chunks_is_walked_within_a_bound():
    """The chunk walk stops at the bound the decode's (``image_header._png_chunk_overrun``) has: a file of more
    chunks is damaged (the decode refuses it saying so), never walked chunk by chunk to its end. Counted in
    Python line events, not timed."""
    from protocols.image_complete import cut_short

    data = WHOLE["png"][:33] + _png_chunk(b"teXt", b"") * 1_000_000 + WHOLE["png"][33:]
    budget = 1_000_000  # ~7 lines a chunk, 65,536 chunks (12 million lines for the whole file)
    assert line_events(lambda: cut_short(data), budget) <= budget
    assert cut_short(data) is None


def test_a_png_read_in_pieces_has_its_chunk_chain_walked_on_from_where_the_last_read_left_it():
    """The snapshot and MJPEG readers ask after each read whether what has come is a whole image: a camera
    trickling a PNG of many small chunks, each read ending with IEND's bytes, had the whole chunk chain walked again
    in Python after every read (the snapshot reader's CPU 0.6 -> 1.5 s an answer). With a ``ChainWalked`` kept for
    the buffer the walk goes on from the last whole chunk it reached: work in proportion to the chunks, counted in
    Python line events, not timed; the answers the same as a walk from the signature at every read."""
    from protocols.image_complete import ChainWalked, cut_short

    end = WHOLE["png"][-12:]
    piece = _png_chunk(b"teXt", end[4:])  # a text holding IEND's last 8 bytes, so each read ends with them
    head, chunks = WHOLE["png"][:33], 3000
    buf, walked, said = bytearray(head), ChainWalked(), []

    def trickle() -> None:
        for _ in range(chunks):
            buf.extend(piece)
            said.append(cut_short(buf, walked=walked))  # type: ignore[arg-type]

    budget = 200_000  # ~30 lines a read; walked from the signature each time: ~30 million
    assert line_events(trickle, budget) <= budget
    assert len(said) == chunks
    fresh = bytearray(head)
    for k in (0, 1, 7, 1500, chunks - 1):  # what a walk from the signature says of the same bytes
        fresh[:] = head + piece * (k + 1)
        assert said[k] == cut_short(fresh) and said[k] is not None and "no IEND chunk" in said[k], said[k]
    buf.extend(WHOLE["png"][33:])  # the image data and IEND: whole, from where it was
    assert cut_short(buf, walked=walked) is None and cut_short(bytes(buf)) is None
    # where it goes on from: a chunk before that mark damaged since is not read again (bytes only added, as the
    # readers' buffers grow); a walk from the signature sees it
    damaged = bytearray(buf)
    damaged[37:41] = b"\x00\x00\x00\x00"
    assert cut_short(damaged, walked=walked) is None and "no chunk at byte 33" in (cut_short(damaged) or "")
