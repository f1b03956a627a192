"""Image files of kinds that machine-vision cameras and inspection tools save beside 8-bit PNG and JPEG, read by
the agent's folder camera and by ``cloud-trainer dataset import`` alike: a WebP with transparent pixels (its
alpha dropped by the decode, as a PNG's was), and whole files that OpenCV cannot decode (a 12-bit JPEG, a TIFF
of 4-bit grey pixels), which must be named for what they are, not called damaged. The files are written here
byte by byte (no tool here writes them) and are a few hundred bytes each."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.integration.test_camera_foreign import _frames


def _seg(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def flat_jpeg(value: int, precision: int = 12, w: int = 16, h: int = 16) -> bytes:
    """A whole grey JPEG of one ``value`` at ``precision`` bits (12: libjpeg's 12-bit mode, SOF1), written by
    hand: quantisation 1, one DC-only block per 8x8 pixels, Huffman tables of the two symbols it needs."""
    twelve = precision == 12
    dqt = bytes([0x10 if twelve else 0x00]) + (struct.pack(">64H", *[1] * 64) if twelve else bytes([1] * 64))
    sof = struct.pack(">BHHB", precision, h, w, 1) + bytes([1, 0x11, 0])
    dc = (value - (1 << (precision - 1))) * 8  # the level-shifted block's DC coefficient
    cat = abs(dc).bit_length()
    dht_dc = bytes([0x00, 1, 1] + [0] * 14 + [0, cat])  # codes: 0 -> category 0, 10 -> category cat
    dht_ac = bytes([0x10, 1] + [0] * 15 + [0])  # code 0 -> end of block
    diff = format(dc, "b") if dc >= 0 else format(dc + (1 << cat) - 1, f"0{cat}b")
    bits = "10" + diff + "0" + "00" * ((w // 8) * (h // 8) - 1)
    bits += "1" * (-len(bits) % 8)
    scan = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)).replace(b"\xff", b"\xff\x00")
    sos = bytes([1, 1, 0x00, 0, 63, 0])
    return (
        b"\xff\xd8"
        + _seg(0xDB, dqt)
        + _seg(0xC1 if twelve else 0xC0, sof)
        + _seg(0xC4, dht_dc)
        + _seg(0xC4, dht_ac)
        + _seg(0xDA, sos)
        + scan
        + b"\xff\xd9"
    )


def grey_tiff(values: np.ndarray, bits: int) -> bytes:
    """An uncompressed TIFF of grey (BlackIsZero) pixels of ``bits`` bits each, packed as TIFF packs them
    (rows start on a byte, most significant bit first): 4-bit grey, or 12-bit as some cameras' tools save
    Mono12 (Mono12Packed)."""
    h, w = values.shape
    rows = []
    for r in values:
        s = "".join(format(int(v), f"0{bits}b") for v in r)
        s += "0" * (-len(s) % 8)
        rows.append(bytes(int(s[i : i + 8], 2) for i in range(0, len(s), 8)))
    data = b"".join(rows)
    tags = [(256, 4, w), (257, 4, h), (258, 3, bits), (259, 3, 1), (262, 3, 1), (273, 4, 0), (277, 3, 1)]
    tags += [(278, 4, h), (279, 4, len(data))]
    at = 8 + 2 + 12 * len(tags) + 4  # the pixels right after the one directory
    ifd = struct.pack("<H", len(tags))
    for tag, typ, val in tags:
        val = at if tag == 273 else val
        ifd += (
            struct.pack("<HHIHH", tag, typ, 1, val, 0) if typ == 3 else struct.pack("<HHII", tag, typ, 1, val)
        )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 4 + data


def grey4_tiff() -> bytes:
    """Left half black, right half white, in 4-bit grey."""
    values = np.zeros((8, 16), int)
    values[:, 8:] = 15
    return grey_tiff(values, 4)


def test_the_hand_written_files_are_what_they_claim():
    """The writer's 8-bit form decodes to its value (so the 12-bit one is a well-formed file of its kind)."""
    eight = cv2.imdecode(np.frombuffer(flat_jpeg(187, precision=8), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert eight.shape == (16, 16) and int(eight.min()) == int(eight.max()) == 187


async def test_a_webp_with_transparent_pixels_is_unsupported_at_the_camera_an_opaque_one_is_read(tmp_path):
    """The folder camera reads WebP files too. One with transparent pixels (a tool's cut-out, lossless or
    lossy) was read with its alpha dropped, and the model judged the colours stored beneath it (black here),
    while a PNG of the same pixels is skipped as unsupported_frame. A WebP is now checked as a PNG is; one
    whose alpha is opaque everywhere is read as before."""
    folder = tmp_path / "drop"
    folder.mkdir()
    cut = np.zeros((8, 16, 4), np.uint8)
    cut[..., 1] = 200
    cut[..., 3] = 255
    cut[:, 8:, 3] = 0  # the right half transparent over black
    for name, quality in (("a_cut_out_lossless.webp", 101), ("b_cut_out_lossy.webp", 90)):
        assert cv2.imwrite(str(folder / name), cut, [cv2.IMWRITE_WEBP_QUALITY, quality])
    opaque = cut.copy()
    opaque[..., 3] = 255
    assert cv2.imwrite(str(folder / "c_opaque.webp"), opaque, [cv2.IMWRITE_WEBP_QUALITY, 101])
    frames, src = await _frames(str(folder), 1, fps=200)
    assert len(frames) == 1 and np.array_equal(frames[0].image, opaque[..., :3])
    assert src.stats.errors_by_reason.get("unsupported_frame") == 2
    assert "64 of its 128 pixels are transparent" in src.stats.last_error


async def test_a_12_bit_jpeg_or_a_4_bit_grey_tiff_is_named_as_such_not_called_damaged(tmp_path):
    """A 12-bit JPEG (libjpeg's 12-bit mode, as some machine-vision and X-ray tools save) and a TIFF of 4-bit
    grey pixels are whole files OpenCV cannot decode. The folder camera counted them as corrupt_frame and
    `dataset import` refused them as "truncated or corrupt", sending the user after a damage that is not
    there. They are now unsupported_frame and refused naming the kind and what to save instead; a file
    really cut short is still corrupt."""
    from cloud_trainer.train.data import DatasetError
    from cloud_trainer.train.images import import_images
    from tests.unit.test_image_import import per_class

    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a_mono12.jpg").write_bytes(flat_jpeg(3000))
    (folder / "b_grey4.tif").write_bytes(grey4_tiff())
    whole = cv2.imencode(".png", np.full((8, 16), 90, np.uint8))[1].tobytes()
    (folder / "c_cut_short.png").write_bytes(whole[: len(whole) - 30])
    assert cv2.imwrite(str(folder / "d_part.png"), np.full((8, 16), 90, np.uint8))
    frames, src = await _frames(str(folder), 1, fps=200)
    assert len(frames) == 1 and int(frames[0].image.max()) == 90
    assert src.stats.errors_by_reason.get("unsupported_frame") == 2
    assert src.stats.errors_by_reason.get("corrupt_frame") == 1

    classes = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    for name, data, said in (
        ("mono12.jpg", flat_jpeg(3000), r"mono12\.jpg: a 12-bit JPEG, which this reader cannot decode"),
        (
            "grey4.tif",
            grey4_tiff(),
            r"grey4\.tif: a TIFF of 4-bit grey pixels, which this reader cannot decode",
        ),
    ):
        (classes / "dent" / name).write_bytes(data)
        with pytest.raises(DatasetError, match=said) as got:
            import_images(classes, tmp_path / "ds", log=lambda m: None)
        assert "corrupt" not in str(got.value)
        (classes / "dent" / name).unlink()
    assert not Path(tmp_path / "ds").exists()


async def test_a_tiff_of_packed_12_bit_pixels_is_read_by_pixel_bits_12_as_a_mono12_png_is(tmp_path):
    """A Mono12 camera's tool saving packed 12-bit TIFFs (BitsPerSample 12): OpenCV shifts such pixels to the
    top of 16 bits, so with pixel_bits: 12 a bright frame was refused ("more than 12 bits hold") and a dark
    one (all under 256) passed 16 times too bright, at the camera and in `dataset import --pixel-bits 12`
    alike. Such a file is now read as the 16-bit PNG of the same pixels is: the top 8 of its 12 bits."""
    from cloud_trainer.train.data import load_parts
    from cloud_trainer.train.images import import_images
    from tests.unit.test_image_import import per_class

    rng = np.random.default_rng(5)
    dark = rng.integers(0, 256, (8, 16))  # a dim frame: nothing over 255 of 4095
    bright = rng.integers(0, 4096, (8, 16))
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a_dark.tif").write_bytes(grey_tiff(dark, 12))
    (folder / "b_bright.tif").write_bytes(grey_tiff(bright, 12))
    frames, src = await _frames(str(folder), 2, fps=200, pixel_bits=12)
    assert not src.stats.errors_by_reason, src.stats.last_error
    want = [(dark >> 4).astype(np.uint8), (bright >> 4).astype(np.uint8)]
    assert [f.image[..., 0].tolist() for f in frames] == [w.tolist() for w in want]

    classes = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    for p in [q for q in classes.rglob("*") if q.is_file()]:  # the camera's other frames: 16-bit PNG
        assert cv2.imwrite(
            str(p.with_suffix(".png")), cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.uint16) << 4
        )
        if p.suffix != ".png":
            p.unlink()
    (classes / "dent" / "dark.tif").write_bytes(grey_tiff(dark, 12))
    (classes / "dent" / "bright.tif").write_bytes(grey_tiff(bright, 12))
    import_images(classes, tmp_path / "ds", pixel_bits=12, log=lambda m: None)
    ds = load_parts(tmp_path / "ds")
    for w in want:  # the model's input on both sides
        assert any(np.array_equal(im[..., 0], w) for im in ds.images)


async def test_a_camera_set_to_pixel_bits_16_for_its_packed_12_bit_tiffs_keeps_reading_them_as_before(
    tmp_path,
):
    """A camera deployed with pixel_bits: 16 for its packed 12-bit TIFFs, as the former refusal of such a file
    with pixel_bits: 12 told the user to set ("... is read with pixel_bits 16"): OpenCV gave the pixels at the
    top of 16 bits and 16 read them right. Since such a TIFF is read with its pixels in the low 12 bits, 16
    took the top 8 of 16 bits of a 12-bit value: every frame 16 times too dark (at most 15), nothing said.
    The file declares its depth (BitsPerSample 12): it is read at that depth, by 16 as by 12."""
    rng = np.random.default_rng(6)
    bright = rng.integers(0, 4096, (8, 16))
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.tif").write_bytes(grey_tiff(bright, 12))
    frames, src = await _frames(str(folder), 1, fps=200, pixel_bits=16)
    assert not src.stats.errors_by_reason, src.stats.last_error
    assert frames[0].image[..., 0].tolist() == (bright >> 4).astype(np.uint8).tolist()
    # a 16-bit PNG's full range is still read by 16 as before
    (folder / "a.tif").unlink()
    full = rng.integers(0, 65536, (8, 16)).astype(np.uint16)
    assert cv2.imwrite(str(folder / "b.png"), full)
    frames, src = await _frames(str(folder), 1, fps=200, pixel_bits=16)
    assert frames[0].image[..., 0].tolist() == (full >> 8).astype(np.uint8).tolist()


async def test_a_32_bit_bmp_with_transparent_pixels_is_refused_one_whose_alpha_is_unused_is_read(tmp_path):
    """A 32-bit BMP with an alpha mask (as OpenCV itself and image editors write a cut-out) was read with its
    alpha dropped, at the camera and by `dataset import`, so the model judged or learnt the colours stored
    beneath the transparent pixels (black here), where a PNG of the same pixels is refused. It is now
    refused the same way; a BMP whose alpha is 0 everywhere (left unused by the tool that wrote it, and
    shown opaque by viewers) is read as before."""
    from cloud_trainer.train.data import DatasetError
    from cloud_trainer.train.images import import_images
    from tests.unit.test_image_import import per_class

    folder = tmp_path / "drop"
    folder.mkdir()
    cut = np.zeros((8, 16, 4), np.uint8)
    cut[..., 1] = 200
    cut[..., 3] = 255
    cut[:, 8:, 3] = 0
    assert cv2.imwrite(str(folder / "a_cut_out.bmp"), cut)
    unused = cut.copy()
    unused[..., 3] = 0
    assert cv2.imwrite(str(folder / "b_alpha_unused.bmp"), unused)
    frames, src = await _frames(str(folder), 1, fps=200)
    assert len(frames) == 1 and np.array_equal(frames[0].image, unused[..., :3])
    assert src.stats.errors_by_reason.get("unsupported_frame") == 1
    assert "64 of its 128 pixels are transparent" in src.stats.last_error

    classes = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    assert cv2.imwrite(str(classes / "dent" / "cut_out.bmp"), cut)
    with pytest.raises(DatasetError, match=r"cut_out\.bmp: 64 of its 128 pixels are transparent"):
        import_images(classes, tmp_path / "ds", log=lambda m: None)


def test_a_crop_of_a_packed_12_bit_tiff_keeps_its_declared_depth():
    """The decoded packed TIFF carries its declared depth (BitsPerSample 12) for `eight_bit`; a slice or copy
    of it (a region of interest cut before the 8-bit step) fell back to 16 and came out 16 times too dark."""
    from protocols.image_header import decode_image, eight_bit

    rng = np.random.default_rng(7)
    bright = rng.integers(0, 4096, (8, 16))
    img = decode_image(grey_tiff(bright, 12), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    want = (bright[2:6, 4:12] >> 4).astype(np.uint8).tolist()
    assert eight_bit(img[2:6, 4:12], 16).tolist() == want
    assert eight_bit(img[2:6, 4:12].copy(), 12).tolist() == want


def bigtiff(strip_offsets_at: int | None = None, next_directory: int = 0) -> bytes:
    """A whole 8x4 grey BigTIFF of two strips (their offsets and byte counts stored after the directory), or
    one damaged: ``strip_offsets_at`` the StripOffsets array's offset as written, ``next_directory`` the next
    directory's (0: none)."""
    w, h = 8, 4
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    tags += [(273, 16, 2, 0), (277, 3, 1, 1), (278, 3, 1, 2), (279, 16, 2, 0)]
    arrays_at = 16 + 8 + 20 * len(tags) + 8
    pixels_at = arrays_at + 32
    ifd = struct.pack("<Q", len(tags))
    for tag, typ, count, v in tags:
        if tag == 273:
            v = arrays_at if strip_offsets_at is None else strip_offsets_at
        elif tag == 279:
            v = arrays_at + 16
        ifd += struct.pack("<HHQQ", tag, typ, count, v)
    ifd += struct.pack("<Q", next_directory)
    arrays = struct.pack("<4Q", pixels_at, pixels_at + 2 * w, 2 * w, 2 * w)
    return b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + ifd + arrays + bytes(range(w * h))


async def test_a_bigtiff_whose_offsets_are_damaged_past_2_63_is_counted_not_raised_out_of_the_camera(
    tmp_path,
):
    """A BigTIFF's offsets are 64-bit: one damaged past 2^63 (the StripOffsets array's, or the next directory's)
    made the header checks raise OverflowError (Python's struct takes no offset that large) instead of saying
    the file damaged: it came out of the folder camera's items() into the pipeline, and out of dataset import
    and model-packager --input-images as a traceback. Such a file is now read or refused as its decode finds
    it, counted, and the folder's next files are read; the import and the packager name it."""
    from cloud_trainer.train.data import DatasetError, read_image_file
    from model_packager.image_file import Refused, read_image

    whole = bigtiff()
    assert cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_GRAYSCALE)[1, 0] == 8  # what it claims
    strips_lost, chain_lost = bigtiff(strip_offsets_at=2**63 + 16), bigtiff(next_directory=2**63 + 1)
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a_strips_lost.tif").write_bytes(strips_lost)
    (folder / "b_chain_lost.tif").write_bytes(chain_lost)
    assert cv2.imwrite(str(folder / "c_part.png"), np.full((4, 8), 90, np.uint8))
    frames, src = await _frames(str(folder), 2, fps=200)
    # the one whose next directory is lost is a whole image (libtiff reads the first); the other is damaged
    assert [int(f.image[1, 0, 0]) for f in frames] == [8, 90]
    assert src.stats.errors_by_reason == {"corrupt_frame": 1}
    assert "a_strips_lost.tif" in src.stats.last_error

    path = tmp_path / "strips_lost.tif"
    path.write_bytes(strips_lost)
    with pytest.raises(DatasetError, match=r"strips_lost\.tif: .*truncated or corrupt"):
        read_image_file(path)
    with pytest.raises(Refused, match="truncated or corrupt"):
        read_image(strips_lost)
    assert int(read_image(chain_lost)[1, 0, 0]) == 8


async def test_a_grey_float_tiff_is_named_as_float_pixels_not_called_damaged(tmp_path):
    """A TIFF of 32-bit float grey pixels (an analysis tool's or a depth camera's export, as OpenCV itself writes
    one) is a whole file that OpenCV's colour read cannot decode (a colour float TIFF it decodes, and is refused
    as float pixels). The folder camera counted the grey one as corrupt_frame, and `build anomaly --good DIR` and
    `model-packager build --input-images` refused it as "truncated or corrupt; replace or remove it" (`dataset
    import`, reading it at its own colours, said "float32 pixels"). It is now unsupported_frame, and refused
    naming its float pixels and what to save instead, at each reader."""
    from cloud_trainer.train.anomaly import AnomalyDataError, read_image
    from model_packager.image_file import Refused
    from model_packager.image_file import read_image as packager_read

    folder = tmp_path / "drop"
    folder.mkdir()
    depth = np.linspace(0, 1, 8 * 16, dtype=np.float32).reshape(8, 16)
    assert cv2.imwrite(str(folder / "a_depth.tif"), depth)
    assert cv2.imwrite(str(folder / "b_part.png"), np.full((8, 16), 90, np.uint8))
    frames, src = await _frames(str(folder), 1, fps=200)
    assert len(frames) == 1 and int(frames[0].image.max()) == 90
    assert src.stats.errors_by_reason.get("unsupported_frame") == 1, src.stats.errors_by_reason
    assert "corrupt_frame" not in src.stats.errors_by_reason
    assert "32-bit float pixels" in src.stats.last_error

    with pytest.raises(AnomalyDataError) as got:
        read_image(folder / "a_depth.tif")
    assert str(got.value).startswith(f"{folder / 'a_depth.tif'}: a TIFF of 32-bit float pixels")
    assert "corrupt" not in str(got.value) and "save it as an 8-bit image" in str(got.value)
    with pytest.raises(Refused, match="a TIFF of 32-bit float pixels") as refused:
        packager_read((folder / "a_depth.tif").read_bytes())
    assert refused.value.unsupported


def tiled_tiff(w: int, h: int, tile: int, value: int = 90) -> bytes:
    """A grey 8-bit TIFF of ``w`` x ``h`` pixels stored as one ``tile`` x ``tile`` tile of ``value``, uncompressed
    (a tile wider than the image is allowed, its extra pixels ignored): a few KB whatever ``tile`` says, its data
    holding as much of the tile as fits in 4 KB."""
    data = bytes([value]) * min(tile * tile, 4096)
    tags = {256: w, 257: h, 258: 8, 259: 1, 262: 1, 277: 1, 322: tile, 323: tile, 324: 0, 325: tile * tile}
    n = len(tags)
    at = 8 + 2 + 12 * n + 4  # the tile's data, after the directory
    out = b"II*\x00" + struct.pack("<IH", 8, n)
    for tag, value_ in sorted(tags.items()):
        value_ = at if tag == 324 else value_
        out += (
            struct.pack("<HHII", tag, 4, 1, value_)
            if tag in (256, 257, 322, 323, 324, 325)
            else struct.pack("<HHIHH", tag, 3, 1, value_, 0)
        )
    return out + struct.pack("<I", 0) + data


async def test_a_small_tiff_in_one_huge_tile_is_refused_undecoded_by_the_camera_the_import_and_the_packager(
    tmp_path,
):
    """A TIFF's header may declare a small image (64x48: under max_megapixels) in tiles far larger: OpenCV's decoder
    allocates a whole tile, up to 1 GiB, whatever the image's size (measured: a 3-KB file, one 16000x16000 tile,
    1 GB and 3.6 s of decoding, then refused as truncated; the same at the folder camera, an HTTP camera's part,
    `dataset import` and `model-packager build --input-images`). Tiles of more pixels than max_megapixels are now
    refused from the header (oversize_frame at the camera), the file named; a small image in one tile larger than
    itself, under the limit, is read."""
    from cloud_trainer.train.data import DatasetError
    from cloud_trainer.train.images import import_images
    from model_packager.image_file import Refused
    from model_packager.image_file import read_image as packager_read
    from tests.unit.test_image_import import per_class

    bomb, small = tiled_tiff(64, 48, 6000), tiled_tiff(40, 24, 64, value=77)  # 36-Mpx tiles; one of 64x64
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a_tiled.tif").write_bytes(bomb)
    (folder / "b_small_tile.tif").write_bytes(small)
    frames, src = await _frames(str(folder), 1, fps=200)
    assert len(frames) == 1 and frames[0].image.shape == (24, 40, 3) and int(frames[0].image.max()) == 77
    assert src.stats.errors_by_reason == {"oversize_frame": 1}, src.stats.errors_by_reason
    assert "a_tiled.tif: a TIFF of 64x48 pixels in tiles of 6000x6000 pixels" in (src.stats.last_error or "")

    with pytest.raises(Refused, match="in tiles of 6000x6000 pixels") as refused:
        packager_read(bomb)
    assert refused.value.oversize
    assert int(packager_read(small).max()) == 77

    classes = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    (classes / "dent" / "tiled.tif").write_bytes(bomb)
    with pytest.raises(
        DatasetError, match=r"tiled\.tif: a TIFF of 64x48 pixels in tiles of 6000x6000 pixels"
    ):
        import_images(classes, tmp_path / "ds", log=lambda m: None)
    assert not (tmp_path / "ds").exists()


def deflated_float_tiff(w: int, h: int) -> bytes:
    """An RGB TIFF of ``w`` x ``h`` 32-bit float pixels, all 0, in one deflated strip: a few hundred KB for 25 Mpx
    (as an analysis tool's export of a flat field compresses)."""
    pack = zlib.compressobj(9)
    row_block = bytes(w * 3 * 4 * 100)
    strip = b"".join(pack.compress(row_block) for _ in range(h // 100)) + pack.compress(
        bytes(w * 12 * (h % 100))
    )
    strip += pack.flush()
    n = 12
    at = 8 + 2 + 12 * n + 4  # the extra values (BitsPerSample, SampleFormat: 3 shorts each), then the strip
    extra = struct.pack("<3H", 32, 32, 32) + struct.pack("<3H", 3, 3, 3)
    tags = [
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, 3, at),
        (259, 3, 1, 8),  # deflate
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, at + len(extra)),
        (277, 3, 1, 3),
        (278, 4, 1, h),
        (279, 4, 1, len(strip)),
        (284, 3, 1, 1),
        (317, 3, 1, 1),  # no predictor
        (339, 3, 3, at + 6),  # SampleFormat: IEEE float
    ]
    out = b"II*\x00" + struct.pack("<IH", 8, n)
    for tag, typ, count, value in tags:
        inline = typ == 3 and count == 1
        out += (
            struct.pack("<HHIHH", tag, typ, count, value, 0)
            if inline
            else struct.pack("<HHII", tag, typ, count, value)
        )
    return out + struct.pack("<I", 0) + extra + strip


def test_a_float_tiff_is_refused_from_its_header_never_decoded_at_12_bytes_a_pixel(tmp_path):
    """A TIFF of float pixels (or of more than 16 bits a sample) is refused once decoded, by the camera, the import
    and the packager alike; its decode took 12 bytes a pixel for RGB float (32 for RGBA double), past the 8 that
    bound any other image under max_megapixels: a 0.3-MB file of 5000x5000 float pixels held 639 MB for 7 s, then
    was refused. Now refused from its header, named as float pixels (a colour one was 'float32 pixels')."""
    import subprocess
    import sys

    from model_packager.image_file import Refused
    from model_packager.image_file import read_image as packager_read
    from protocols.image_header import ImageRejected, decode_image

    big = tmp_path / "flat_field.tif"
    big.write_bytes(deflated_float_tiff(5000, 5000))
    child = (
        "import re, sys\n"
        "from protocols.image_header import ImageRejected, decode_image\n"
        "import cv2\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "try:\n"
        "    decode_image(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH, 25.0)\n"
        "    print('decoded')\n"
        "except ImageRejected as e:\n"
        "    print('refused', e.unsupported, e)\n"
        "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) // 1024)\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", child, str(big)], capture_output=True, text=True, timeout=120, cwd=root
    ).stdout.split("\n")
    assert out[0].startswith("refused True a TIFF of 32-bit float pixels"), out
    assert int(out[1]) < 200, out  # MB: its header read, not its 300 MB of pixels (639 MB peak when decoded)

    small = cv2.imencode(".tiff", np.random.default_rng(0).random((8, 12, 3), np.float32))[1].tobytes()
    with pytest.raises(ImageRejected, match="a TIFF of 32-bit float pixels") as got:
        decode_image(small, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    assert got.value.unsupported
    with pytest.raises(Refused, match="a TIFF of 32-bit float pixels"):
        packager_read(small)
    wide = cv2.imencode(".tiff", np.arange(96, dtype=np.int32).reshape(8, 12))[1].tobytes()
    with pytest.raises(ImageRejected, match="a TIFF of 32-bit pixels; 8-bit and 16-bit images are read"):
        decode_image(wide, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)


def repeated_scan_jpeg(w: int, h: int, copies: int) -> bytes:
    """A progressive JPEG (OpenCV's, of a flat grey image) whose last scan is repeated ``copies`` more times: a few
    bytes a scan, each a pass of libjpeg over the whole image (it warns of the odd progression and decodes on)."""
    data = cv2.imencode(".jpg", np.full((h, w), 90, np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    last = data.rindex(b"\xff\xda")
    end = data.rindex(b"\xff\xd9")
    return data[:end] + data[last:end] * copies + data[end:]


async def test_a_progressive_jpeg_of_thousands_of_scans_is_refused_undecoded_a_real_one_is_read(tmp_path):
    """libjpeg makes a pass over the whole image for each scan of a progressive JPEG, and decodes on through a
    progression that repeats itself: a crafted 30-KB file repeating one scan 1,000 times (14 bytes each) held the
    decode 8 s for a 2000x2000 image (minutes at 25 Mpx) and was then taken as a frame. A JPEG of more than 64
    scans (an encoder writes 1 to 18) is now refused undecoded: corrupt_frame at the camera, named by the import
    and the packager; a real progressive JPEG, colour or grey, is read."""
    from cloud_trainer.train.data import DatasetError
    from cloud_trainer.train.images import import_images
    from model_packager.image_file import Refused
    from model_packager.image_file import read_image as packager_read
    from tests.unit.test_image_import import per_class

    bomb = repeated_scan_jpeg(64, 48, 100)
    colour = np.random.default_rng(3).integers(0, 255, (48, 64, 3), np.uint8)
    progressive = cv2.imencode(".jpg", colour, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    grey = repeated_scan_jpeg(64, 48, 0)  # as written: 6 scans
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a_scans.jpg").write_bytes(bomb)
    (folder / "b_progressive.jpg").write_bytes(progressive)
    (folder / "c_grey.jpg").write_bytes(grey)
    frames, src = await _frames(str(folder), 2, fps=200)
    assert len(frames) == 2 and src.stats.errors_by_reason == {"corrupt_frame": 1}, src.stats.errors_by_reason
    assert "a_scans.jpg: a JPEG of more than 64 scans" in (src.stats.last_error or "")
    assert np.array_equal(
        frames[0].image, cv2.imdecode(np.frombuffer(progressive, np.uint8), cv2.IMREAD_COLOR)
    )
    assert int(frames[1].image.min()) == int(frames[1].image.max()) == 90

    with pytest.raises(Refused, match="a JPEG of more than 64 scans"):
        packager_read(bomb)
    classes = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    (classes / "dent" / "scans.jpg").write_bytes(bomb)
    with pytest.raises(DatasetError, match=r"scans\.jpg: a JPEG of more than 64 scans"):
        import_images(classes, tmp_path / "ds", log=lambda m: None)
    assert not (tmp_path / "ds").exists()


def test_the_scan_count_and_the_damage_check_look_through_coded_data_in_bounded_memory():
    """The scan count and the restart-marker check found the markers in a JPEG's coded data with int64 arrays over
    the whole rest of the file, 8 to 16 bytes for each 0xFF in it: a 190-MB file (what a 5000x5000 frame may take)
    of FF 00 pairs (stuffed bytes, legal in coded data) took 2 GB, of FF bytes 3.6 GB; the 24 MB here took 205 and
    384 MB. They now look through it a window at a time (measured in a child, as the camera's process would grow)
    and say what they said of it before."""
    import subprocess
    import sys

    child = (
        "import re, sys\n"
        "import cv2, numpy as np\n"
        "from protocols import image_header, jpeg_check\n"
        "from model_packager import image_file\n"
        "img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)\n"
        "flags = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_RST_INTERVAL, 1]\n"
        "real = cv2.imencode('.jpg', img, flags)[1].tobytes()\n"
        "s = real.find(b'\\xff\\xda')\n"
        "at = s + 2 + ((real[s + 2] << 8) | real[s + 3])\n"
        "fill = b'\\xff' if sys.argv[1] == 'ff' else b'\\xff\\x00'\n"
        "data = real[:at] + fill * ((24 << 20) // len(fill)) + real[at:]\n"
        "def hwm():\n"
        "    return int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) // 1024\n"
        "base = hwm()\n"
        "checks = (image_header.jpeg_scans_over, image_file.jpeg_scans_over, jpeg_check.coded_damage,\n"
        "          image_file.coded_damage)\n"
        "print(repr([f(data) for f in checks]))\n"
        "print(hwm() - base)\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    for fill, said in (
        ("stuffed", [None] * 4),
        # FF bytes run into the coded data: its next byte is read as a marker, as libjpeg reads it
        ("ff", [None, None] + ["cut short (no end-of-image marker)"] * 2),
    ):
        out = subprocess.run(
            [sys.executable, "-c", child, fill], capture_output=True, text=True, timeout=120, cwd=root
        ).stdout.split("\n")
        assert out[0] == repr(said), out
        assert int(out[1]) < 48, (fill, out)  # MB over the file itself (205 and 384 MB before)


def test_a_progressive_jpeg_hiding_its_scans_behind_thousands_of_markers_is_refused():
    """The scan count walked at most 4,096 markers and then let the file be decoded: 4,100 TEM markers (FF 01, two
    bytes each, which libjpeg steps over) before the first scan hid a 1,000-scan file from it (decoded in 19 s).
    A file of more markers than that outside its coded data is now refused; a real progressive one is read."""
    from model_packager.image_file import Refused
    from model_packager.image_file import read_image as packager_read
    from protocols.image_header import ImageRejected, decode_image

    bomb = repeated_scan_jpeg(64, 48, 100)
    first = bomb.index(b"\xff\xda")
    hidden = bomb[:first] + b"\xff\x01" * 4100 + bomb[first:]
    with pytest.raises(ImageRejected, match="a JPEG of more than 4096 markers outside its coded data"):
        decode_image(hidden, cv2.IMREAD_COLOR)
    with pytest.raises(Refused, match="a JPEG of more than 4096 markers outside its coded data"):
        packager_read(hidden)
    real = repeated_scan_jpeg(64, 48, 0)
    few = real[: real.index(b"\xff\xda")] + b"\xff\x01" * 100 + real[real.index(b"\xff\xda") :]
    for ok in (real, few):
        assert int(decode_image(ok, cv2.IMREAD_GRAYSCALE).max()) == 90
        assert packager_read(ok) is not None


def test_a_legal_jpeg_of_thousands_of_comment_or_application_segments_is_read_a_crafted_one_still_refused():
    """e2dbea3a's bound of 4,096 markers outside the coded data refused a legal JPEG of more comment or application
    segments (5,000 COM after its frame header, baseline or progressive; or before it), which OpenCV decodes.
    Those holding bytes have a bound of their own (8,192 more: 65,536 one-byte comments cost ~15 times a normal
    frame's walk); empty segments and TEM markers keep 4,096; a 1,000-scan file hidden behind 13,000 comments is
    refused saying so (it was refused for its scans, walked through its 65,536)."""
    from model_packager.image_file import Refused
    from model_packager.image_file import read_image as packager_read
    from protocols.image_header import ImageRejected, decode_image

    image = cv2.GaussianBlur(
        np.random.default_rng(0).integers(0, 255, (48, 64, 3)).astype(np.uint8), (5, 5), 0
    )
    comments = b"".join(b"\xff\xfe\x00\x05c%02d" % (k % 100) for k in range(5000))
    for params in ([], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]):
        real = cv2.imencode(".jpg", image, params)[1].tobytes()
        sof = real.index(b"\xff\xc2" if params else b"\xff\xc0")
        after = sof + 2 + int.from_bytes(real[sof + 2 : sof + 4], "big")
        for legal in (real[:after] + comments + real[after:], real[:2] + comments + real[2:]):
            want = cv2.imdecode(np.frombuffer(legal, np.uint8), cv2.IMREAD_COLOR)
            assert want is not None
            assert np.array_equal(decode_image(legal, cv2.IMREAD_COLOR), want)
            assert packager_read(legal) is not None
    bomb = repeated_scan_jpeg(64, 48, 1000)
    first = bomb.index(b"\xff\xda")
    for hidden, said in (
        (
            bomb[:first] + b"\xff\xfe\x00\x03c" * 13_000 + bomb[first:],
            "more than 8192 comment or application segm",
        ),
        (
            bomb[:first] + b"\xff\xfe\x00\x02" * 4100 + bomb[first:],
            "more than 4096 markers outside its coded",
        ),
    ):
        with pytest.raises(ImageRejected, match=said):
            decode_image(hidden, cv2.IMREAD_COLOR)
        with pytest.raises(Refused, match=said):
            packager_read(hidden)


def camera_jpeg_metadata() -> list[bytes]:
    """What a camera or its PC puts before a JPEG's frame header: an EXIF APP1 of 64 KB (maker notes), an XMP APP1,
    an ICC profile of ~200 KB in 4 APP2 segments, an Adobe APP14 (YCbCr) and a comment."""
    rng = np.random.default_rng(4)
    exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00" + bytes(65533 - 16)
    icc = rng.integers(0, 255, 4 * 50_000, np.uint8).tobytes()
    pieces = [icc[k : k + 50_000] for k in range(0, len(icc), 50_000)]
    return [
        _seg(0xE1, exif),
        _seg(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + b"<x:xmpmeta/>" * 1000),
        *(_seg(0xE2, b"ICC_PROFILE\x00" + bytes([k + 1, len(pieces)]) + p) for k, p in enumerate(pieces)),
        _seg(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01"),
        _seg(0xFE, b"line 3 camera 7 exposure 120 us"),
    ]


async def test_a_jpeg_of_too_many_segments_before_its_frame_header_is_refused_naming_the_bound(tmp_path):
    """A JPEG whose frame header lies past the markers the header walk reads (4,096, and 8,192 more comment or
    application segments holding bytes) was refused as 'not a PNG, JPEG, ... image (or its header is cut short)':
    its size unread, nothing said of the bound, so the user had nothing to change. It is refused saying the bound
    now, by the camera, the import and the packager alike; a camera's JPEG (EXIF of 64 KB, XMP, an ICC profile in
    pieces, Adobe's APP14, a comment) is read by the three as OpenCV reads it."""
    from cloud_trainer.train.data import DatasetError, read_image_file
    from model_packager.image_file import Refused
    from model_packager.image_file import read_image as packager_read
    from protocols.image_header import ImageRejected, decode_image

    image = cv2.GaussianBlur(
        np.random.default_rng(0).integers(0, 255, (48, 64, 3)).astype(np.uint8), (5, 5), 0
    )
    real = cv2.imencode(".jpg", image)[1].tobytes()
    # after its SOI and APP0, before its tables and frame header
    jfif_end = 4 + int.from_bytes(real[4:6], "big")
    camera = real[:jfif_end] + b"".join(camera_jpeg_metadata()) + real[jfif_end:]
    want = cv2.imdecode(np.frombuffer(real, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(cv2.imdecode(np.frombuffer(camera, np.uint8), cv2.IMREAD_COLOR), want)
    assert np.array_equal(decode_image(camera, cv2.IMREAD_COLOR), want)
    assert np.array_equal(packager_read(camera), want)
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "d_camera.jpg").write_bytes(camera)  # read after the two refused
    crafted = {
        "b_comments.jpg": (b"\xff\xfe\x00\x03c" * 13_000, "more than 8192 comment or application segments"),
        "c_empty.jpg": (b"\xff\xfe\x00\x02" * 4_200, "more than 4096 markers outside its coded data"),
    }
    for name, (notes, said) in crafted.items():
        data = real[:jfif_end] + notes + real[jfif_end:]
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV reads it
        with pytest.raises(ImageRejected, match=said):
            decode_image(data, cv2.IMREAD_COLOR)
        with pytest.raises(Refused, match=said):
            packager_read(data)
        (folder / name).write_bytes(data)
        with pytest.raises(DatasetError, match=f"{name}: a JPEG of {said}.*save the image again"):
            read_image_file(folder / name)
    frames, src = await _frames(str(folder), 1, fps=200)
    assert len(frames) == 1 and np.array_equal(frames[0].image, want)
    assert src.stats.errors_by_reason == {"corrupt_frame": 2}, src.stats.errors_by_reason
    assert "c_empty.jpg: a JPEG of more than 4096 markers" in src.stats.last_error


def cmyk_jpeg(planes: list[np.ndarray]) -> bytes:
    """A CMYK JPEG (Adobe APP14, no transform) of four 8-bit planes in four non-interleaved baseline scans, each the
    scan of a grey JPEG OpenCV wrote of one plane (same tables: one quality), its component renumbered."""

    def parts(jpeg: bytes) -> tuple[list[tuple[int, bytes]], bytes, bytes]:
        i, segs = 2, []
        while jpeg[i + 1] != 0xDA:
            length = int.from_bytes(jpeg[i + 2 : i + 4], "big")
            segs.append((jpeg[i + 1], jpeg[i + 4 : i + 2 + length]))
            i += 2 + length
        length = int.from_bytes(jpeg[i + 2 : i + 4], "big")
        return segs, jpeg[i + 4 : i + 2 + length], jpeg[i + 2 + length : jpeg.rindex(b"\xff\xd9")]

    grey = [parts(cv2.imencode(".jpg", p, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()) for p in planes]
    segs = grey[0][0]
    h, w = planes[0].shape
    comps = b"".join(bytes([k + 1, 0x11, 0]) for k in range(4))
    out = b"\xff\xd8" + _seg(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x00")
    out += b"".join(_seg(m, b) for m, b in segs if m == 0xDB)
    out += _seg(0xC0, bytes([8]) + struct.pack(">HH", h, w) + b"\x04" + comps)
    out += b"".join(_seg(m, b) for m, b in segs if m == 0xC4)
    for k, (_, head, coded) in enumerate(grey):
        out += _seg(0xDA, bytes([1, k + 1]) + head[2:]) + coded
    return out + b"\xff\xd9"


async def test_a_multi_scan_jpeg_closed_with_an_end_marker_before_its_scans_are_done_is_refused(tmp_path):
    """A progressive JPEG (or a CMYK one in four scans) cut short and closed with an end marker was decoded with
    its unsent coefficients made zero, a blurred or discoloured image passed as a part: the damage check looks for
    libjpeg's grey fill, which such a file has not. The scans are counted before the decode now: one whose scans
    end before every component's coefficients are sent at full precision is refused (the camera's corrupt_frame,
    the import and --input-images), a whole one read; a cut within the last scan still is not seen."""
    from cloud_trainer.train.data import DatasetError, read_image_file
    from model_packager.image_file import Refused
    from model_packager.image_file import read_image as packager_read
    from protocols.image_header import ImageRejected, decode_image

    rng = np.random.default_rng(6)
    small = rng.integers(0, 256, (12, 16, 3), np.uint8)
    image = cv2.resize(small, (128, 96), interpolation=cv2.INTER_CUBIC)
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    cmyk = cmyk_jpeg([image[:, :, k % 3] for k in range(4)])
    said = "a JPEG whose scans end before its image is complete"
    folder = tmp_path / "drop"
    folder.mkdir()
    for name, whole in (("progressive", progressive), ("cmyk", cmyk)):
        want = cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_COLOR)
        assert want is not None
        assert np.array_equal(decode_image(whole, cv2.IMREAD_COLOR), want)
        assert np.array_equal(packager_read(whole), want)
        (folder / f"z_{name}.jpg").write_bytes(whole)  # read after the cut ones
        last = whole.rindex(b"\xff\xda")  # its last scan
        decoded = []
        for k in range(whole.index(b"\xff\xda"), last, 97):  # cut anywhere before its last scan
            cut = whole[:k] + b"\xff\xd9"
            if cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR) is None:
                continue  # (cut within a table: OpenCV refuses it by itself)
            decoded.append(cut)  # OpenCV decodes it, its unsent coefficients made zero
            with pytest.raises(ImageRejected, match=said):
                decode_image(cut, cv2.IMREAD_COLOR)
            with pytest.raises(Refused, match=said):
                packager_read(cut)
        assert len(decoded) >= 10, len(decoded)
        (folder / f"a_{name}_cut.jpg").write_bytes(decoded[len(decoded) // 2])
        with pytest.raises(DatasetError, match=f"a_{name}_cut.jpg: {said}.*replace or remove it"):
            read_image_file(folder / f"a_{name}_cut.jpg")
    frames, src = await _frames(str(folder), 2, fps=200)
    assert len(frames) == 2, src.stats.last_error
    assert src.stats.errors_by_reason == {"corrupt_frame": 2}, src.stats.errors_by_reason


def tiff_of_entries(entries: list[tuple[int, int, bytes]], big: bool = False) -> bytes:
    """A grey 8-bit 64x48 TIFF (BigTIFF if ``big``) in one tile of 4 KB: ``entries`` (tag, type, its one value's
    bytes) replace or add to ImageWidth .. SamplesPerPixel, in tag order (a tag given twice, in the order given)."""
    given = {tag for tag, _, _ in entries}
    base = [(256, 4, struct.pack("<I", 64)), (257, 4, struct.pack("<I", 48)), (258, 3, struct.pack("<H", 8))]
    base += [(259, 3, struct.pack("<H", 1)), (262, 3, struct.pack("<H", 1)), (277, 3, struct.pack("<H", 1))]
    base += [(324, 4, b""), (325, 4, struct.pack("<I", 4096))]
    ents = sorted([e for e in base if e[0] not in given] + entries, key=lambda e: e[0])
    size = 8 if big else 4
    at = (16 + 8 + 20 * len(ents) + 8) if big else (8 + 2 + 12 * len(ents) + 4)
    out = (
        b"II+\x00" + struct.pack("<HHQQ", 8, 0, 16, len(ents))
        if big
        else b"II*\x00" + struct.pack("<IH", 8, len(ents))
    )
    for tag, typ, value in ents:
        value = struct.pack("<I", at) if tag == 324 else value
        out += struct.pack("<HH" + ("Q" if big else "I"), tag, typ, 1) + value.ljust(size, b"\x00")
    return out + bytes(size) + bytes([90]) * 4096


def test_a_tiffs_tile_and_depth_are_read_whatever_integer_type_holds_them_its_first_given_value_kept():
    """The tile and depth checks read only SHORT and LONG tags: a tile of 16000x16000 pixels typed SSHORT or SLONG
    (or LONG8 in a BigTIFF), a 32-bit float depth typed BYTE or SSHORT, all of which libtiff reads, were let
    through; a tag given twice was read at its last value, libtiff's at its first (a huge tile hidden behind a
    small one); a first directory of more than 1,024 tags was not read at all, and the file decoded (libtiff reads
    up to 4,096). The camera's reader and the packager's now refuse each, as they refuse a LONG one."""
    from model_packager.image_file import Refused
    from model_packager.image_file import read_image as packager_read
    from protocols.image_header import ImageRejected, decode_image

    def tile(typ: int, fmt: str) -> list[tuple[int, int, bytes]]:
        return [(322, typ, struct.pack(fmt, 16000)), (323, typ, struct.pack(fmt, 16000))]

    tiles = "in tiles of 16000x16000 pixels"
    crafted = {
        "SSHORT tile": (tiff_of_entries(tile(8, "<h")), tiles),
        "SLONG tile": (tiff_of_entries(tile(9, "<i")), tiles),
        "LONG8 tile in a BigTIFF": (tiff_of_entries(tile(16, "<Q"), big=True), tiles),
        "a tile given twice, huge first": (
            tiff_of_entries(tile(4, "<I")[:1] + [(322, 4, struct.pack("<I", 64))] + tile(4, "<I")[1:]),
            tiles,
        ),
        "BYTE float depth": (
            tiff_of_entries([(258, 1, bytes([32])), (339, 1, bytes([3]))]),
            "a TIFF of 32-bit float pixels",
        ),
        "SSHORT 32-bit depth": (
            tiff_of_entries([(258, 8, struct.pack("<h", 32))]),
            "a TIFF of 32-bit pixels",
        ),
        "1,100 tags": (
            tiff_of_entries(tile(4, "<I") + [(40000 + k, 1, b"\x00") for k in range(1100)]),
            "first image directory cannot be read",
        ),
    }
    for name, (data, said) in crafted.items():
        with pytest.raises(ImageRejected, match=said):
            decode_image(data, cv2.IMREAD_GRAYSCALE, 25.0)
        with pytest.raises(Refused, match=said):
            packager_read(data)
        assert name
    whole = tiff_of_entries([(322, 4, struct.pack("<I", 64)), (323, 8, struct.pack("<h", 64))])
    assert int(decode_image(whole, cv2.IMREAD_GRAYSCALE, 25.0).max()) == 90
    assert int(packager_read(whole).max()) == 90


def deflated_strips_tiff(w: int, h: int, width: list[tuple[int, int, bytes]], value: int = 0) -> bytes:
    """A grey 8-bit TIFF of ``w`` x ``h`` pixels of ``value`` in two or more deflated strips (of at most 256 rows),
    its ImageWidth given by the ``width`` entries (tag, type, its one value's bytes), in the order given:
    8000x8000 pixels take ~100 KB."""
    rows = min(256, (h + 1) // 2)  # two strips at least: their offsets and counts stored after the directory
    strip = zlib.compress(bytes([value]) * (w * rows), 9)
    n = (h + rows - 1) // rows
    ents = width + [
        (257, 4, struct.pack("<I", h)),
        (258, 3, struct.pack("<H", 8)),
        (259, 3, struct.pack("<H", 8)),
    ]
    ents += [(262, 3, struct.pack("<H", 1)), (273, 4, b""), (277, 3, struct.pack("<H", 1))]
    ents += [(278, 4, struct.pack("<I", rows)), (279, 4, b"")]
    offsets = 8 + 2 + 12 * len(ents) + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(ents))
    for tag, typ, val in ents:
        if tag in (273, 279):  # StripOffsets, StripByteCounts: n LONGs each, after the directory
            out += struct.pack("<HHII", tag, 4, n, offsets + (0 if tag == 273 else 4 * n))
        else:
            out += struct.pack("<HHI", tag, typ, 1) + val.ljust(4, b"\x00")
    out += bytes(4) + b"".join(struct.pack("<I", offsets + 8 * n + k * len(strip)) for k in range(n))
    return out + struct.pack("<I", len(strip)) * n + strip * n


def _size_bombs() -> dict[str, bytes]:
    """8000x8000 TIFFs whose header read as SHORT/LONG only, a repeated tag at its last value, says 64 wide."""
    big, small = struct.pack("<I", 8000), struct.pack("<I", 64)
    return {
        "LONG twice, huge first": deflated_strips_tiff(8000, 8000, [(256, 4, big), (256, 4, small)]),
        "SSHORT huge, then LONG": deflated_strips_tiff(
            8000, 8000, [(256, 8, struct.pack("<h", 8000)), (256, 4, small)]
        ),
        "SLONG huge, then LONG": deflated_strips_tiff(
            8000, 8000, [(256, 9, struct.pack("<i", 8000)), (256, 4, small)]
        ),
    }


async def test_a_tiffs_size_is_read_as_libtiff_reads_it_before_max_megapixels_is_judged(tmp_path):
    """image_size read a TIFF's ImageWidth/ImageLength as SHORT, LONG or LONG8 only and a repeated one at its last
    value; libtiff reads every integer type and keeps the first. A 141-KB 12000x12000 TIFF whose ImageWidth is
    given as SLONG 12000, then LONG 64, was judged 64x12000 against the 25-Mpx limit and decoded whole: the folder
    camera took it as a frame (+854 MB), an HTTP camera decoded it at every request (+882 MB), `dataset import`
    imported it (+296 MB), `--input-images` took 1.5 GB for 16000x16000. Its size is now read as libtiff reads it
    and refused before the decode (measured in a child, as the camera's process would grow); a small TIFF whose
    size is typed SSHORT or BYTE, refused before as no image, is read."""
    import subprocess
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cloud_trainer.train.data import DatasetError
    from cloud_trainer.train.images import import_images
    from devices.camera.capture import CameraSource
    from devices.camera.settings import CameraSettings
    from model_packager.image_file import read_image as packager_read
    from protocols.image_header import decode_image, image_size
    from tests.support.waits import until
    from tests.unit.test_image_import import per_class

    child = (
        "import re\n"
        "import cv2\n"
        "from protocols.image_header import decode_image, image_size\n"
        "from model_packager.image_file import read_image\n"
        "from tests.integration.test_camera_image_kinds import _size_bombs\n"
        "def hwm():\n"
        "    return int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) // 1024\n"
        "def outcome(read, data):\n"
        "    try:\n"
        "        return f'decoded {read(data).shape}'\n"
        "    except Exception as exc:\n"
        "        return str(exc)\n"
        "bombs = _size_bombs()\n"
        "base = hwm()\n"
        "for name, data in bombs.items():\n"
        "    print(image_size(data), '|', outcome(lambda d: decode_image(d, cv2.IMREAD_COLOR, 25.0), data), '|',\n"
        "          outcome(read_image, data))\n"
        "print(hwm() - base)\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, cwd=root
    ).stdout.split("\n")
    said = "its TIFF header declares 8000x8000 pixels (64.0 Mpx), over the 25-Mpx limit"
    assert out[:3] == [f"('TIFF', 8000, 8000) | {said} | {said}"] * 3, out
    assert int(out[3]) < 48, out  # MB over the files themselves (a decode: 192 MB or more)

    # a small one whose size is typed as libtiff also reads it
    for width in ([(256, 8, struct.pack("<h", 40))], [(256, 1, bytes([40]))]):
        small = deflated_strips_tiff(40, 24, width, value=77)
        assert image_size(small) == ("TIFF", 40, 24)
        assert decode_image(small, cv2.IMREAD_GRAYSCALE, 25.0).shape == (24, 40)
        assert int(packager_read(small).max()) == 77

    bomb = _size_bombs()["SLONG huge, then LONG"]
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a_bomb.tif").write_bytes(bomb)
    (folder / "b_small.tif").write_bytes(deflated_strips_tiff(40, 24, [(256, 8, struct.pack("<h", 40))], 77))
    frames, src = await _frames(str(folder), 1, fps=200)
    assert len(frames) == 1 and frames[0].image.shape == (24, 40, 3) and int(frames[0].image.max()) == 77
    assert src.stats.errors_by_reason == {"oversize_frame": 1}, src.stats.errors_by_reason
    assert "a_bomb.tif: its TIFF header declares 8000x8000 pixels" in (src.stats.last_error or "")

    class Snapshot(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/tiff")
            self.send_header("Content-Length", str(len(bomb)))
            self.end_headers()
            self.wfile.write(bomb)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Snapshot)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    cam = CameraSource("cam", CameraSettings(url=f"http://127.0.0.1:{httpd.server_address[1]}/snap.tif"))
    try:
        await cam.start()
        try:
            await until(lambda: cam.stats.errors_by_reason, what="the snapshot judged")
        finally:
            await cam.stop()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert set(cam.stats.errors_by_reason) == {"oversize_frame"}, cam.stats.errors_by_reason
    assert "frames of 8000x8000 (64.0 Mpx) are over max_megapixels 25" in (cam.stats.last_error or "")

    classes = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    (classes / "dent" / "bomb.tif").write_bytes(bomb)
    with pytest.raises(DatasetError, match=r"bomb\.tif: its TIFF header declares 8000x8000 pixels"):
        import_images(classes, tmp_path / "ds", log=lambda m: None)
    assert not (tmp_path / "ds").exists()


def _scans(jpeg: bytes) -> list[tuple[int, int, bytes, int, int, int, int]]:
    """Each scan of a JPEG, its header and coded data: (start, end, components, Ss, Se, Ah, Al)."""
    i, out = 2, []
    while jpeg[i + 1] != 0xD9:
        length = int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if jpeg[i + 1] != 0xDA:
            i += 2 + length
            continue
        ns = jpeg[i + 4]
        ss, se, a = jpeg[i + 5 + 2 * ns : i + 8 + 2 * ns]
        end = i + 2 + length
        while not (jpeg[end] == 0xFF and jpeg[end + 1] not in (0, *range(0xD0, 0xD8))):
            end += 1
        out.append((i, end, jpeg[i + 5 : i + 5 + 2 * ns : 2], ss, se, a >> 4, a & 15))
        i = end
    return out


def test_a_progressive_jpeg_whose_scan_script_leaves_bits_unsent_is_refused_saying_to_save_it_again(tmp_path):
    """A legal progressive JPEG whose encoder's scan script never sends some coefficient bits (the colour's DC
    only, or the AC coefficients never refined past their first pass: jpegtran -scans writes such files) is
    refused as one cut short and closed is: the two cannot be told apart from the scans. Its message blamed a cut
    only, which the owner of a whole, legal file cannot act on; it now says the file may have been written so
    and to save it again, by the camera's decode, the import and --input-images alike."""
    from cloud_trainer.train.data import DatasetError, read_image_file
    from model_packager.image_file import Refused
    from model_packager.image_file import read_image as packager_read
    from protocols.image_header import ImageRejected, decode_image

    rng = np.random.default_rng(6)
    small = rng.integers(0, 256, (12, 16, 3), np.uint8)
    image = cv2.resize(small, (128, 96), interpolation=cv2.INTER_CUBIC)
    whole = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    scans = _scans(whole)
    assert len(scans) == 10, scans  # libjpeg's progressive script for colour

    def without(drop) -> bytes:
        out, at = b"", 0
        for start, end, *scan in scans:
            if drop(*scan):
                out, at = out + whole[at:start], end
        return out + whole[at:]

    legal = {  # a script of its own: the colour's DC only; every AC coefficient's last bit never sent
        "chroma_dc_only.jpg": without(lambda comps, ss, se, ah, al: comps != b"\x01" and ss > 0),
        "ac_unrefined.jpg": without(lambda comps, ss, se, ah, al: ss > 0 and ah == 1 and al == 0),
    }
    said = (
        r"a JPEG whose scans end before its image is complete \(component \d's coefficients .*\): cut short or "
        r"damaged and then closed with an end marker, or written with a scan script that leaves them out: save it "
        r"again"
    )
    for name, data in legal.items():
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None, (
            name
        )  # libjpeg reads it
        with pytest.raises(ImageRejected, match=said):
            decode_image(data, cv2.IMREAD_COLOR)
        with pytest.raises(Refused, match=said):
            packager_read(data)
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DatasetError, match=f"{name}: {said}"):
            read_image_file(tmp_path / name)
