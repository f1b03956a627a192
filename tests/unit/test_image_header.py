"""Image sizes read from file headers before decoding (``protocols.image_header``): the size each
kind's decoder will see, a file declaring too many pixels refused undecoded with the reason, and no
input of any shape making the header reader fail."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.image_header import ImageRejected, decode_image, image_size
from tests.support.image_bombs import DECLARING, small
from tests.support.line_events import line_events

ENCODED = [
    (".png", [], "PNG"),
    (".jpg", [], "JPEG"),
    (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], "JPEG"),
    (".bmp", [], "BMP"),
    (".tif", [], "TIFF"),
    (".tif", [cv2.IMWRITE_TIFF_COMPRESSION, 1], "TIFF"),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80], "WebP"),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], "WebP"),  # lossless
    (".ppm", [], "PNM"),
]


@pytest.mark.parametrize(("ext", "params", "kind"), ENCODED, ids=lambda v: str(v))
def test_the_header_gives_the_size_the_decoder_decodes(ext, params, kind):
    data = small(ext, params=params)
    assert image_size(data) == (kind, 37, 23)
    assert decode_image(data).shape == (23, 37, 3)


def _tiff(big: bool, endian: str, w: int = 8, h: int = 4) -> bytes:
    """A hand-made uncompressed 8-bit grey TIFF (classic or BigTIFF, either byte order)."""
    e = "<" if endian == "II" else ">"
    pixels = bytes(range(w * h))
    tags = [(256, w), (257, h), (258, 8), (259, 1), (262, 1), (273, 0), (277, 1), (278, h), (279, w * h)]
    if big:
        head = endian.encode() + struct.pack(e + "HHHQ", 43, 8, 0, 16)
        ifd_size = 8 + 20 * len(tags) + 8
        data_at = 16 + ifd_size
        ifd = struct.pack(e + "Q", len(tags))
        for tag, v in tags:
            ifd += struct.pack(e + "HHQQ", tag, 16, 1, data_at if tag == 273 else v)
        ifd += struct.pack(e + "Q", 0)
    else:
        head = endian.encode() + struct.pack(e + "HI", 42, 8)
        ifd_size = 2 + 12 * len(tags) + 4
        data_at = 8 + ifd_size
        ifd = struct.pack(e + "H", len(tags))
        for tag, v in tags:
            ifd += struct.pack(e + "HHII", tag, 4, 1, data_at if tag == 273 else v)
        ifd += struct.pack(e + "I", 0)
    return head + ifd + pixels


@pytest.mark.parametrize("big", [False, True], ids=["tiff", "bigtiff"])
@pytest.mark.parametrize("endian", ["II", "MM"])
def test_tiff_in_either_byte_order_and_bigtiff(big, endian):
    data = _tiff(big, endian)
    assert image_size(data) == ("TIFF", 8, 4)
    img = decode_image(data, cv2.IMREAD_GRAYSCALE)
    assert img.shape == (4, 8) and img[1, 0] == 8  # the decoder read the same layout


def test_text_pnm_with_comments():
    data = b"P2\n# made by a line scanner\n 3   2\n# max\n255\n0 1 2\n3 4 5\n"
    assert image_size(data) == ("PNM", 3, 2)
    assert decode_image(data, cv2.IMREAD_GRAYSCALE).tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("kind", sorted(DECLARING))
def test_a_file_declaring_a_huge_image_is_refused_before_decoding(kind):
    data = DECLARING[kind](30000, 20000)  # a few hundred bytes claiming 600 Mpx (1.8 GB as BGR)
    assert len(data) < 5000
    with pytest.raises(
        ImageRejected, match=rf"{kind} header declares 30000x20000 pixels \(600.0 Mpx\), over the 50-Mpx"
    ):
        decode_image(data)
    # the limit is the caller's: a real 37x23 image passes at 0.001 Mpx and is refused at 0.0008
    assert decode_image(small(".png"), max_megapixels=0.001).shape == (23, 37, 3)
    with pytest.raises(ImageRejected) as e:
        decode_image(small(".png"), max_megapixels=0.0008)
    assert e.value.oversize and "over the 0.0008-Mpx limit" in str(e.value)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty file"),
        (b"GIF89a" + bytes(20), "a GIF image, which is not read here"),  # said as what it is (by its bytes)
        (small(".png")[:20], "not a PNG"),  # the header itself cut short
        (small(".png")[:60], "a PNG header for 37x23 pixels, but the image data is truncated or corrupt"),
        (small(".bmp")[:30] + bytes(4), "BMP header for 37x23 pixels, but the image data"),
    ],
    ids=["empty", "gif", "cut-header", "cut-data", "cut-bmp"],
)
def test_unreadable_files_say_why(data, why):
    with pytest.raises(ImageRejected, match=why) as e:
        decode_image(data)
    assert not e.value.oversize


def test_a_bmp_declaring_a_negative_width_is_not_given_a_size():
    """BMP's width is a signed field; only the height's sign means something (a top-down bitmap)."""
    data = bytearray(small(".bmp"))
    data[21] = 0x80  # the width's top byte: -2147483611 wide
    assert image_size(bytes(data)) is None
    with pytest.raises(ImageRejected, match="not a PNG, JPEG, BMP"):
        decode_image(bytes(data))
    data = bytearray(small(".bmp"))
    data[22:26] = struct.pack("<i", -23)  # top-down
    assert image_size(bytes(data)) == ("BMP", 37, 23)


_HEADERS = [small(e) for e in (".png", ".jpg", ".bmp", ".tif", ".webp", ".ppm")] + [
    _tiff(True, "MM"),
    DECLARING["WebP"](9, 9),
]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(_HEADERS),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
)
def test_no_mangled_header_makes_the_reader_fail(base, edits, cut):
    """Any byte of the first 200 changed, any length: a size or None, never an exception."""
    b = bytearray(base[: cut or len(base)])
    for at, v in edits:
        if at < len(b):
            b[at] = v
    got = image_size(bytes(b))
    assert got is None or (isinstance(got[1], int) and isinstance(got[2], int) and got[1] >= 0)


@given(st.binary(max_size=300))
def test_no_bytes_at_all_make_the_reader_fail(data):
    got = image_size(data)
    assert got is None or got[0] in ("PNG", "JPEG", "BMP", "TIFF", "WebP", "PNM")
    if got is None:
        with pytest.raises(ImageRejected):
            decode_image(data)


@pytest.mark.parametrize("kind", ["BMP", "WebP"])
def test_a_header_wider_than_opencv_reads_is_refused_naming_its_size_not_raised_as_an_opencv_error(kind):
    """A header of 1,048,577 x 23 pixels (24 Mpx: under the megapixel limit) is past the 2^20 pixels a side
    that OpenCV's decoders take, and OpenCV raises instead of answering None. Refused as a damaged file,
    naming the size: the folder camera counts it as corrupt_frame and the import names the file, where the
    OpenCV error went up as the pipeline's 'unexpected' traceback (no file named) or the import's own."""
    data = DECLARING[kind](1_048_577, 23)
    assert image_size(data) == (kind, 1_048_577, 23)
    with pytest.raises(ImageRejected, match="1048577x23") as e:
        decode_image(data)
    assert not e.value.oversize and not e.value.unsupported


def _tiff_variants() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(3)
    colour = rng.integers(0, 256, (60, 70, 3)).astype("uint8")
    out = []
    for comp in (1, 5, 8, 32773):  # none, LZW, deflate, PackBits
        for rows in (1, 8, 0):  # a strip per row, 8 rows, the writer's choice
            params = [cv2.IMWRITE_TIFF_COMPRESSION, comp] + (
                [cv2.IMWRITE_TIFF_ROWSPERSTRIP, rows] if rows else []
            )
            out.append((f"colour {comp} {rows}", cv2.imencode(".tif", colour, params)[1].tobytes()))
            out.append(
                (
                    f"16-bit grey {comp} {rows}",
                    cv2.imencode(".tif", colour[..., 0].astype("uint16") * 250, params)[1].tobytes(),
                )
            )
    ok, two = cv2.imencodemulti(".tif", [colour, colour])
    assert ok
    return out + [("two pages", two.tobytes())]


@pytest.mark.parametrize(("what", "data"), _tiff_variants(), ids=lambda v: v if isinstance(v, str) else "")
def test_whole_tiffs_have_their_strips_where_their_pixels_are(what, data):
    from protocols.image_header import tiff_data_misplaced

    assert tiff_data_misplaced(data) is None
    if what != "two pages":  # refused as two pages (unsupported), not as damaged
        assert decode_image(data, cv2.IMREAD_UNCHANGED).shape[:2] == (60, 70)


def test_a_tiff_whose_strip_offsets_are_damaged_is_refused_before_it_is_decoded():
    """libtiff reads whatever an offset points at: a strip offset of 0 (the header), one into the image
    directory, or one shared with another strip decoded into an image of garbage rows, passed on as a part;
    one past the end of the file is said as cut short."""
    img = np.random.default_rng(4).integers(0, 256, (40, 30, 3)).astype("uint8")
    tif = cv2.imencode(".tif", img, [cv2.IMWRITE_TIFF_COMPRESSION, 1, cv2.IMWRITE_TIFF_ROWSPERSTRIP, 10])[1]
    tif = tif.tobytes()
    ifd = struct.unpack_from("<I", tif, 4)[0]
    for k in range(struct.unpack_from("<H", tif, ifd)[0]):
        tag, _, count, where = struct.unpack_from("<HHII", tif, ifd + 2 + 12 * k)
        if tag == 273:
            offsets_at, strips = where, count
    assert strips == 4

    def with_offset(strip: int, offset: int) -> bytes:
        b = bytearray(tif)
        struct.pack_into("<I", b, offsets_at + 4 * strip, offset)
        return bytes(b)

    for data, reason in (
        (with_offset(3, 0), r"strip 4 of 4 \(bytes 0-900\) lies over its header"),
        (with_offset(1, ifd), "strip 2 of 4 .* lies over its image directory"),
        (
            with_offset(2, struct.unpack_from("<I", tif, offsets_at)[0]),
            "strips 1 and 3 of 4 lie over each other",
        ),
        (with_offset(0, len(tif) + 10), "strip 1 of 4 .* reaches past the end of the file"),
    ):
        with pytest.raises(ImageRejected, match=reason) as got:
            decode_image(data)
        assert not got.value.oversize and not got.value.unsupported  # damaged: the camera's corrupt_frame


def _many_strips_and_tags(strips: int, tags: int) -> bytes:
    """A whole little-endian TIFF, 1 pixel wide and ``strips`` rows of one byte each, whose directory holds
    ``tags`` private tags besides, each with 8 bytes of values stored after it: nothing lies over anything."""
    base = [(256, 4, 1, 1), (257, 4, 1, strips), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    base += [(277, 3, 1, 1), (278, 4, 1, 1)]
    count = len(base) + 2 + tags
    values_at = 8 + 2 + 12 * count + 4
    offsets_at = values_at + 8 * tags
    counts_at = offsets_at + 4 * strips
    pixels_at = counts_at + 4 * strips
    entries = [struct.pack("<HHII", t, ty, c, v) for t, ty, c, v in base]
    entries += [struct.pack("<HHII", 40000 + k, 1, 8, values_at + 8 * k) for k in range(tags)]
    entries += [
        struct.pack("<HHII", 273, 4, strips, offsets_at),
        struct.pack("<HHII", 279, 4, strips, counts_at),
    ]
    entries.sort(key=lambda e: struct.unpack_from("<H", e)[0])
    return b"".join(
        [
            b"II*\x00",
            struct.pack("<IH", 8, count),
            *entries,
            b"\x00" * 4,
            b"x" * 8 * tags,
            struct.pack(f"<{strips}I", *range(pixels_at, pixels_at + strips)),
            struct.pack(f"<{strips}I", *[1] * strips),
            b"\x80" * strips,
        ]
    )


@pytest.mark.parametrize("module", ["protocols.image_header", "model_packager.image_file"])
def test_the_strip_check_of_a_tiff_of_many_strips_and_tags_costs_their_sum_not_their_product(module):
    """Each strip was compared with every region of the file's directory and tag values: strips x tags. A
    920-KB file of 100,000 one-byte strips and 1,000 tags took 1.4 s of the camera's thread before any decode
    (a 9-MB one, over 10 s; a file the camera reads may be 200 MB). It is now one sweep over both, sorted.
    Counted in Python line events, not timed: a file of 3,000 strips and 1,000 tags (3 million comparisons
    before) stays under 20 per strip and tag."""
    import importlib

    check = importlib.import_module(module).tiff_data_misplaced
    strips, tags = 3000, 1000
    data = _many_strips_and_tags(strips, tags)
    budget = 20 * (strips + tags)
    out: list = []
    lines = line_events(lambda: out.append(check(data)), budget)
    got = out[0] if out else "over budget"
    assert got is None, f"{got}: {lines} lines run, over {budget}"


@pytest.mark.parametrize("module", ["protocols.image_header", "model_packager.image_file"])
def test_the_strip_check_of_a_tiff_of_millions_of_strips_holds_a_few_megabytes(module):
    """A crafted TIFF of millions of 1-byte strips (22 million fit in 198 MB, within the 201 MB and 25 Mpx a frame
    may take: no oversize_frame) had its strip tables copied whole to 64-bit arrays, indices and sweeps: 1.2 GB
    above the file on a gateway before any decode. Strips in the file's order are checked a slice at a time now;
    out of order (sorted), as many as a real image has at most, more are damaged. Traced, not timed."""
    import importlib
    import tracemalloc

    from tests.unit.test_image_complete import tiff_of_one_byte_strips

    check = importlib.import_module(module).tiff_data_misplaced
    tiff = tiff_of_one_byte_strips(2_000_000)  # 18 MB
    (ifd,) = struct.unpack_from("<I", tiff, 4)
    offsets_at = ifd + 2 + 8 * 12 + 4
    swapped = bytearray(tiff)  # strips 1 and 2 change places: out of the file's order
    swapped[offsets_at : offsets_at + 8] = (
        tiff[offsets_at + 4 : offsets_at + 8] + tiff[offsets_at : offsets_at + 4]
    )
    over = bytearray(tiff)  # strip 2 of 2 bytes, in the file's order: it lies over strip 3
    struct.pack_into("<I", over, offsets_at + 4 * 2_000_000 + 4, 2)
    swapped_bytes, over_bytes = bytes(swapped), bytes(over)
    tracemalloc.start()
    try:
        verdicts = [check(tiff), check(over_bytes), check(swapped_bytes)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MB to check an {len(tiff) / 2**20:.0f}-MB TIFF"
    assert verdicts[0] is None
    assert "strips 2 and 3 of 2000000 lie over each other" in (verdicts[1] or ""), verdicts[1]
    assert "out of the file's order" in (verdicts[2] or ""), verdicts[2]


_CRAFTED_JPEG_HEADERS = {
    "bytes before a marker": b"\xff\xd8" + bytes(2_000_000),
    "fill bytes": b"\xff\xd8" + b"\xff" * 2_000_000,
    "empty segments": b"\xff\xd8" + b"\xff\xfe\x00\x02" * 500_000,
    "stuffed bytes": b"\xff\xd8" + b"\xff\x00" * 1_000_000,  # no markers (stepped over in C)
}


@pytest.mark.parametrize("module", ["protocols.image_header", "model_packager.image_file"])
@pytest.mark.parametrize("name", sorted(_CRAFTED_JPEG_HEADERS))
def test_the_header_of_a_crafted_jpeg_of_millions_of_tiny_parts_is_read_within_a_bound(module, name):
    """``image_size``, which the camera asks of every file and part before anything else (and again before the
    decode), walked a JPEG's header a byte or a segment at a time in Python: 2 MB of bytes before a marker, of
    fill bytes or of empty segments cost ~0.2 s, the 201 MB a frame may take ~20 s of the camera's thread, at
    each retry. 54bbf25 bounded the cut-short check's walk only. Counted in Python line events, not timed."""
    import importlib

    image_size_of = importlib.import_module(module).image_size
    got: list = []
    lines = line_events(lambda: got.append(image_size_of(_CRAFTED_JPEG_HEADERS[name])), 200_000)
    assert lines <= 200_000, f"{name}: over 200000 lines run for 2 MB"
    assert got == [None]
    # a real JPEG's header, behind the same kinds of bytes, is still read as libjpeg reads it
    real = cv2.imencode(".jpg", np.zeros((30, 40, 3), np.uint8))[1].tobytes()
    padded = real[:2] + bytes(1000) + b"\xff" * 1000 + b"\xff\xfe\x00\x02" * 100 + real[2:]
    assert image_size_of(padded) == ("JPEG", 40, 30)


def stuffed_byte_jpegs() -> tuple[np.ndarray, bytes, bytes]:
    """A 64x48 JPEG's image, and two crafted forms of its file with a stuffed byte (0xFF 0x00) after the start
    marker: ``decoy``, where the two bytes after it, read as a length, step into a comment holding an 8x8 frame
    header; ``past``, where they step past the file's end. libjpeg steps over the stuffed byte and what follows up
    to the next marker (extraneous bytes) and decodes both as the 64x48 image."""
    img = np.random.default_rng(3).integers(0, 256, (48, 64, 3), np.uint8)
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    decoy = b"\xff\xc0\x00\x11\x08\x00\x08\x00\x08\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    comment = b"\xff\xfe" + struct.pack(">H", 2 + len(decoy)) + decoy
    return (
        cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR),
        jpg[:2] + b"\xff\x00\x00\x06" + comment + jpg[2:],
        jpg[:2] + b"\xff\xff\x00\x7f\xf0" + jpg[2:],
    )


@pytest.mark.parametrize("module", ["protocols.image_header", "model_packager.image_file"])
def test_a_stuffed_byte_in_a_jpegs_header_is_no_marker_and_hides_no_frame_header(module):
    """0xFF 0x00 is a stuffed byte, never a marker (T.81 B.1.1.2): libjpeg steps over it with the bytes up to the
    next marker. The header walk took it for a marker 0x00 and the two bytes after it for its length, so a crafted
    header made it read a decoy frame header (8x8) in a comment while libjpeg decoded the image it hid (64x48):
    the size check against the pixel limit was made on the decoy's size. Both readers walk as libjpeg now."""
    import importlib

    reader = importlib.import_module(module)
    image, decoy, past = stuffed_byte_jpegs()
    for data in (decoy, past):
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(decoded, image)  # what libjpeg reads
        assert reader.image_size(data) == ("JPEG", 64, 48)
    refusal = ImageRejected if module == "protocols.image_header" else reader.Refused
    read = decode_image if module == "protocols.image_header" else reader.read_image
    with pytest.raises(refusal) as got:  # 3072 pixels: over a 0.002-Mpx limit, and said so undecoded
        read(decoy, max_megapixels=0.002)
    assert got.value.oversize and "64x48 pixels" in str(got.value), got.value
    assert np.array_equal(read(past, max_megapixels=0.004), image)


@pytest.mark.parametrize("module", ["protocols.image_header", "model_packager.image_file"])
def test_stuffed_bytes_in_a_jpegs_header_count_against_the_walks_bound_on_markers(module):
    """A stuffed byte (0xFF 0x00) in a JPEG's header is stepped over as libjpeg steps over it, but each one is a
    step of the walk, bounded as markers are (``_JPEG_MAX_SEGMENTS``): one pattern stepping over runs of them in C
    cost ~20 ns a byte outside that bound (a crafted 400-MB file of 0x00 0xFF pairs held the camera's thread ~7 s
    per walk, at each read of the cut-short wait). A header with more of them before its frame header than the
    bound is not read, as one of more markers is not; a few are stepped over as before."""
    import importlib

    from protocols.image_complete import cut_short
    from protocols.jpeg_check import coded_damage

    reader = importlib.import_module(module)
    jpg = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
    assert reader.image_size(jpg[:2] + b"\xff\x00" * 100 + b"\x00\xff" * 100 + b"\x00" + jpg[2:]) == (
        "JPEG",
        64,
        48,
    )
    for crafted in (b"\xff\x00" * 5000, b"\x00\xff" * 5000 + b"\x00"):
        data = jpg[:2] + crafted + jpg[2:]
        assert reader.image_size(data) is None
        assert cut_short(data) is None  # damaged past what tells its end: the decode says so
        assert coded_damage(data) is None


@pytest.mark.parametrize("magic", ["P5", "P2"])
def test_a_pgm_of_maxval_4095_is_read_at_12_bits_by_pixel_bits_16_not_16_times_too_dark(magic):
    """A Mono12 camera's PGM (maxval 4095, two bytes a sample) read with pixel_bits 16 came out 16 times too dark
    (4095 as 15); its maxval declares its depth as a packed TIFF's BitsPerSample does. A maxval between two depths
    of all ones declares a depth (``test_a_pgms_maxval_set_to_its_brightest_sample_gives_no_frame_a_gain``), and
    65535 is the full 16 bits."""
    from protocols.image_header import eight_bit

    def pgm(maxval: int, a: np.ndarray) -> bytes:
        head = f"{magic}\n{a.shape[1]} {a.shape[0]}\n{maxval}\n".encode()
        if magic == "P5":
            return head + a.astype(">u2").tobytes()
        return head + " ".join(map(str, a.ravel())).encode() + b"\n"

    a = np.array([[0, 4095], [2048, 100]], np.uint16)
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    got = eight_bit(decode_image(pgm(4095, a), flags), 16)[..., 0]
    assert got.tolist() == (a >> 4).tolist()
    assert eight_bit(decode_image(pgm(4095, a), flags), 12)[..., 0].tolist() == (a >> 4).tolist()
    full = np.array([[0, 65535], [32768, 100]], np.uint16)
    assert eight_bit(decode_image(pgm(65535, full), flags), 16)[..., 0].tolist() == (full >> 8).tolist()


@pytest.mark.parametrize("magic", ["P5", "P6"])
def test_a_pgms_maxval_set_to_its_brightest_sample_gives_no_frame_a_gain(magic):
    """Tools write a PGM's or PPM's maxval as each frame's brightest sample, or as 4095 above Mono12 samples shifted
    to the top of 16 bits. Taken as a depth, a 12-bit camera's dim frame (brightest 2000, maxval 2000) read by
    pixel_bits 12 came out twice as bright as its other frames (2000 as 250, not 125), a 16-bit one's (maxval
    20000) by 16 likewise, and the shifted frame, read right by pixel_bits 16 before, was refused. A maxval of all
    ones (1023, 4095) read as its depth, its samples within it; any other is read by pixel_bits."""
    from protocols.image_header import eight_bit

    def pnm(maxval: int, a: np.ndarray) -> bytes:
        a = a if magic == "P5" else np.repeat(a[..., None], 3, axis=2)
        return f"{magic}\n{a.shape[1]} {a.shape[0]}\n{maxval}\n".encode() + a.astype(">u2").tobytes()

    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH

    def read(maxval: int, a: list, pixel_bits: int) -> list:
        img = decode_image(pnm(maxval, np.array(a, np.uint16)), flags)
        return eight_bit(img, pixel_bits)[..., 0].tolist()

    assert read(2000, [[0, 2000], [1000, 16]], 12) == [[0, 125], [62, 1]]  # as in a frame of brightest 4095
    assert read(4095, [[0, 2000], [1000, 4095]], 12) == [[0, 125], [62, 255]]
    assert read(20000, [[0, 20000], [256, 512]], 16) == [[0, 78], [1, 2]]
    assert read(4095, [[0, 65520], [16, 32768]], 16) == [[0, 255], [0, 128]]  # Mono12 at the top of 16 bits
    assert read(1023, [[0, 1023], [512, 4]], 16) == [[0, 255], [128, 1]]  # a Mono10 one: its depth
