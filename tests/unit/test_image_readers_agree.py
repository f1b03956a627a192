"""The readers of image files other than `dataset import` (the anomaly family's own folder read, the
packager's `--input-images`, the agent's folder camera) on files from machine-vision cameras and tools:
each refuses, in one line, what the import refuses, so that no reader takes a preview, one page of a
series, the colours beneath an alpha channel, or a Mono12 image divided by 256 for the part."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_trainer.train.anomaly import AnomalyDataError, read_image
from model_packager.errors import PackageError
from model_packager.image_folder import ImageFolder


def series_tif(path: Path, preview_first: bool = False) -> Path:
    """A TIFF of two images: a camera's exposure series, or (``preview_first``) a 5x4 preview (NewSubfileType
    1) followed by the image, as some tools save them; decoders read the first directory only."""
    first = np.full((4, 5, 3), 10, np.uint8) if preview_first else np.full((40, 50, 3), 10, np.uint8)
    ok, buf = cv2.imencodemulti(".tif", [first, np.full((40, 50, 3), 200, np.uint8)])
    assert ok
    data = bytearray(buf.tobytes())
    if preview_first:
        ifd = struct.unpack_from("<I", data, 4)[0]
        for k in range(struct.unpack_from("<H", data, ifd)[0]):
            if struct.unpack_from("<H", data, ifd + 2 + 12 * k)[0] == 254:
                struct.pack_into("<HHII", data, ifd + 2 + 12 * k, 254, 4, 1, 1)
    path.write_bytes(bytes(data))
    return path


def _textured(w: int = 96, h: int = 64) -> np.ndarray:
    """A part-like image (smooth texture): a JPEG of it does not end in flat grey blocks by itself."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (h // 8, w // 8, 3), np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG of these chunks, each with its right CRC."""
    body = b"".join(
        struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks
    )
    return b"\x89PNG\r\n\x1a\n" + body


def damaged_files() -> dict[str, bytes]:
    """Files damaged as transfers, cards and tools damage them, each decodable by OpenCV or not: a JPEG cut
    short and closed with an end marker (libjpeg fills the rest in grey), one with restart markers that lost
    a chunk, a PNG with a bad IDAT CRC, a PNG whose image data is a whole zlib stream of half its rows, a
    TIFF whose last strip's offset points at the first strip's data (libtiff decodes garbage rows), a WebP
    cut in half."""
    img = _textured()
    jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    rst = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_RST_INTERVAL, 2])[1]
    rst = rst.tobytes()
    png = cv2.imencode(".png", img)[1].tobytes()
    at = png.index(b"IDAT")
    bad_crc = bytearray(png)
    bad_crc[at + 4 + struct.unpack(">I", png[at - 4 : at])[0]] ^= 1
    ihdr = (b"IHDR", png[16:29])
    rows = b"".join(b"\x00" + row.tobytes() for row in img[:, :, ::-1])  # filter 0, RGB
    tif = bytearray(
        cv2.imencode(".tif", img, [cv2.IMWRITE_TIFF_COMPRESSION, 1, cv2.IMWRITE_TIFF_ROWSPERSTRIP, 8])[
            1
        ].tobytes()
    )
    ifd = struct.unpack_from("<I", tif, 4)[0]
    for k in range(struct.unpack_from("<H", tif, ifd)[0]):
        tag, _, count, where = struct.unpack_from("<HHII", tif, ifd + 2 + 12 * k)
        if tag == 273:  # StripOffsets: the last one set to the first's
            struct.pack_into("<I", tif, where + 4 * (count - 1), struct.unpack_from("<I", tif, where)[0])
    webp = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 90])[1].tobytes()
    return {
        "cut.jpg": jpg[: len(jpg) * 2 // 3] + b"\xff\xd9",
        "lost_chunk.jpg": rst[: rst.index(b"\xff\xd3")] + rst[rst.index(b"\xff\xd4") :],
        "bad_crc.png": bytes(bad_crc),
        "half_rows.png": _png([ihdr, (b"IDAT", zlib.compress(rows[: len(rows) // 2])), (b"IEND", b"")]),
        "strips.tif": bytes(tif),
        "cut.webp": webp[: len(webp) // 2],
    }


async def _camera_and_packager(tmp_path: Path, files: dict[str, bytes]) -> dict[str, str]:
    """Each file alone in a folder, read by the agent's folder camera (default settings) and by
    `--input-images`: the same pixels, or the packager's one line naming the file with the camera's reason;
    {name: the camera's error reason} of the files refused."""
    from devices.camera.capture import CameraSource
    from devices.camera.settings import CameraSettings

    refused = {}
    for name, data in files.items():
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_bytes(bytes(data))
        src = CameraSource("cam", CameraSettings(url=str(folder), fps=200))
        await src.start()
        frames = [f.image async for f in src.items()]
        await src.stop()
        if frames:
            assert np.array_equal(next(iter(ImageFolder(folder))), frames[0]), name
            continue
        (refused[name],) = src.stats.errors_by_reason
        reason = re.sub(r" \(\d+ bytes\), skipped$", "", src.stats.last_error.split(f"{name}: ", 1)[1])
        with pytest.raises(PackageError) as got:
            list(ImageFolder(folder))
        line = str(got.value)
        assert len(line.splitlines()) == 1 and f"{name}: {reason}" in line, (line, reason)
    return refused


def test_the_anomaly_familys_folder_read_refuses_what_dataset_import_refuses(tmp_path):
    """`build anomaly --good DIR` reads the folder itself: a preview-first TIFF was read as its 5x4 preview,
    a two-page TIFF as its first page, and a PNG with transparent pixels as the colours beneath them."""
    preview = series_tif(tmp_path / "preview.tif", preview_first=True)
    with pytest.raises(AnomalyDataError, match=rf"{preview}: its first image is a reduced-resolution copy"):
        read_image(preview)
    series = series_tif(tmp_path / "series.tif")
    with pytest.raises(AnomalyDataError, match=rf"{series}: a TIFF of 2 pages \(images\)"):
        read_image(series)
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[10:30, 10:40] = (0, 200, 0, 255)
    assert cv2.imwrite(str(tmp_path / "cut_out.png"), rgba)
    with pytest.raises(AnomalyDataError, match=r"cut_out.png: 1400 of its 2000 pixels are transparent"):
        read_image(tmp_path / "cut_out.png")
    rgba[..., 3] = 255  # opaque throughout: read as before
    assert cv2.imwrite(str(tmp_path / "opaque.png"), rgba)
    assert np.array_equal(read_image(tmp_path / "opaque.png"), rgba[..., :3])
    one = tmp_path / "one.tif"
    assert cv2.imwrite(str(one), rgba[..., :3])
    assert np.array_equal(read_image(one), rgba[..., :3])


def test_input_images_of_a_mono12_camera_are_refused_not_read_as_black_frames(tmp_path):
    """`model-packager build --input-images`: a Mono12 camera's 16-bit PNGs were read by OpenCV's colour
    read, divided by 256 (3000 -> 11), so the package's statistics were those of a black frame and the
    agent, reading the same camera with pixel_bits: 12 (3000 -> 187), called every frame UNSURE."""
    folder = tmp_path / "train"
    folder.mkdir()
    for i in range(3):
        assert cv2.imwrite(str(folder / f"{i}.png"), np.full((40, 50), 3000 + i, np.uint16))
    with pytest.raises(PackageError, match=r"0\.png has 16-bit pixels; give the 8-bit images .*--pixel-bits"):
        list(ImageFolder(folder))
    for i in range(3):  # 8-bit images, grey or colour: read as the trainer reads them (BGR)
        assert cv2.imwrite(str(folder / f"{i}.png"), np.full((40, 50), 187 + i, np.uint8))
    got = list(ImageFolder(folder))
    assert [im.shape for im in got] == [(40, 50, 3)] * 3 and [int(im[0, 0, 0]) for im in got] == [
        187,
        188,
        189,
    ]


def test_a_mono12_image_shifted_to_the_top_of_16_bits_is_refused_under_pixel_bits_12(tmp_path):
    """Some cameras' software saves Mono12 shifted up (x16, filling the 16 bits). Read with --pixel-bits 12
    the top 8 of 12 bits saturated: 94 % of this image turned white and was imported as the part. A value
    12 bits cannot hold is now refused, saying to use 16, which reads it right."""
    from cloud_trainer.train.data import DatasetError
    from cloud_trainer.train.images import import_images
    from tests.unit.test_image_import import per_class

    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    twelve = np.random.default_rng(4).integers(0, 4096, (10, 12), dtype=np.uint16)
    shifted = src / "dent" / "mono12_msb.png"
    assert cv2.imwrite(str(shifted), twelve << 4)
    with pytest.raises(
        DatasetError, match=rf"{shifted}: 16-bit pixels up to \d+, more than 12 bits hold .* 16"
    ):
        import_images(src, tmp_path / "ds", pixel_bits=12)
    import_images(src, tmp_path / "ds", pixel_bits=16, log=lambda m: None)
    rows = [json.loads(r) for r in (tmp_path / "ds" / "labels.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["source"].endswith("mono12_msb.png"))
    back = cv2.imread(str(tmp_path / "ds" / row["file"]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back, (twelve >> 4).astype(np.uint8))


async def test_the_anomaly_familys_model_input_of_a_large_frame_is_the_agents_from_its_camera_folder(
    tmp_path,
):
    """The anomaly family shrank each image to 1024 px before the model's own resize to --size, so a
    2000x1100 frame gave the model up to 7 grey levels other than the agent makes from the same file (one
    resize of the whole frame; 8 for a 2448x2048 camera): the bank and the threshold were learnt on inputs
    the agent never makes. Now they are the agent's to the shrunk image's rounding (at most 1 level), with
    a roi too."""
    from cloud_trainer.train import anomaly
    from devices.camera.capture import CameraSource
    from devices.camera.settings import CameraSettings
    from model_packager.preprocess import image_tensor

    rng = np.random.default_rng(0)
    texture = cv2.resize(
        rng.integers(0, 256, (137, 250, 3), np.uint8), (2000, 1100), interpolation=cv2.INTER_CUBIC
    )
    frame = cv2.add(texture, rng.integers(0, 40, (1100, 2000, 3), np.uint8))  # a machined surface's grain
    folder = tmp_path / "camera"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "part.png"), frame, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    src = CameraSource("cam", CameraSettings(url=str(folder), fps=200))
    await src.start()
    frames = [f.image async for f in src.items()]
    await src.stop()
    assert len(frames) == 1
    level = 1 / (min(anomaly.STD) * 255)  # one grey level in the model's normalised units, at most
    for roi in (None, [150, 100, 1700, 900]):
        pre = anomaly.preprocessing(256, roi)
        agent = image_tensor(frames[0], pre)
        trainer = anomaly.tensors(
            anomaly.read_view(folder / "part.png", roi, size=256)[:1], anomaly.preprocessing(256)
        )
        assert trainer.shape == agent.shape
        assert np.abs(trainer - agent).max() <= 1.01 * level, roi


def test_training_refuses_a_16_bit_image_or_mask_put_into_a_dataset_folder_by_hand(tmp_path):
    """A dataset folder holds the 8-bit images `dataset import` writes. A Mono12 camera's 16-bit PNG copied
    into one by hand (an image replaced, a row added to labels.jsonl) was read by training divided by 256,
    black, and a 16-bit mask's defect pixels (1) read as 0, good: a model trained on them with nothing
    said. Both are now refused naming the file and what to do; the dataset's 8-bit files load as before."""
    from cloud_trainer.train.data import DatasetError, load_parts

    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    (ds / "masks").mkdir()
    rows = []
    for i in range(4):
        label = "ok" if i < 2 else "dent"
        assert cv2.imwrite(str(ds / "images" / f"{i}.png"), np.full((10, 12), 60 + i, np.uint8))
        rows.append({"id": str(i), "file": f"images/{i}.png", "label": label})
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:6] = 1  # defect pixels
    assert cv2.imwrite(str(ds / "masks" / "3.png"), mask)
    rows[3]["mask"] = "masks/3.png"
    (ds / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (ds / "dataset.yaml").write_text("classes: [ok, dent]\ngood: ok\n")
    got = load_parts(ds, masks=True)
    assert int(got.images[3].max()) == 63 and got.masks is not None and int(got.masks[3].sum()) == 9

    assert cv2.imwrite(str(ds / "masks" / "3.png"), mask.astype(np.uint16))
    with pytest.raises(DatasetError, match=r"3\.png \(the mask of labels\.jsonl line 4\): 16-bit pixels"):
        load_parts(ds, masks=True)
    assert cv2.imwrite(str(ds / "masks" / "3.png"), mask)
    assert cv2.imwrite(str(ds / "images" / "1.png"), np.full((10, 12), 3000, np.uint16))  # Mono12, by hand
    with pytest.raises(DatasetError, match=r"1\.png \(labels\.jsonl line 2\): 16-bit pixels.*--pixel-bits"):
        load_parts(ds)


async def test_input_images_are_read_as_the_agents_folder_camera_reads_the_same_files(tmp_path):
    """`model-packager build --input-images` took the colours beneath transparent pixels (a PNG, a 32-bit
    BMP, a WebP saved as .png), the first page of a two-page TIFF and the preview of a preview-first one, and
    called a 12-bit JPEG damaged: the package's statistics came from pixels the agent's camera never passes
    on (it skips these files as unsupported_frame). Each file now gives the packager the camera's pixels, or
    one line naming it with the camera's reason."""
    from tests.integration.test_camera_image_kinds import flat_jpeg

    cut = np.zeros((8, 16, 4), np.uint8)
    cut[..., 1], cut[..., 3] = 200, 255
    cut[:, 8:, 3] = 0  # the right half transparent, over black
    opaque, unused = cut.copy(), cut.copy()
    opaque[..., 3], unused[..., 3] = 255, 0  # a BMP's alpha left 0 everywhere is unused: read
    files = {
        "opaque.png": cv2.imencode(".png", opaque)[1],
        "cut_out.png": cv2.imencode(".png", cut)[1],
        "cut_out.bmp": cv2.imencode(".bmp", cut)[1],
        "alpha_unused.bmp": cv2.imencode(".bmp", unused)[1],
        "cut_out_webp.png": cv2.imencode(".webp", cut, [cv2.IMWRITE_WEBP_QUALITY, 101])[1],
        "one.tif": cv2.imencode(".tif", opaque[..., :3])[1],
        "series.tif": series_tif(tmp_path / "series.tif").read_bytes(),
        "preview.tif": series_tif(tmp_path / "preview.tif", preview_first=True).read_bytes(),
        "mono12.jpg": flat_jpeg(3000),
    }
    refused = await _camera_and_packager(tmp_path, files)
    assert set(refused.values()) == {"unsupported_frame"}
    assert set(refused) == {
        "cut_out.png",
        "cut_out.bmp",
        "cut_out_webp.png",
        "series.tif",
        "preview.tif",
        "mono12.jpg",
    }


def test_input_images_with_a_header_past_opencvs_limits_are_refused_naming_the_file(tmp_path):
    """A BMP whose header declares 2^20 + 1 pixels a side made `model-packager build --input-images` end in
    an OpenCV assertion traceback naming no file: OpenCV raises for a size past its limits, not returns None."""
    import struct

    from model_packager.image_folder import ImageFolder

    w, h = (1 << 20) + 1, 1
    row = (w * 3 + 3) // 4 * 4
    header = b"BM" + struct.pack("<IHHI", 54 + row * h, 0, 0, 54)
    header += struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, row * h, 2835, 2835, 0, 0)
    folder = tmp_path / "shots"
    folder.mkdir()
    (folder / "wide.bmp").write_bytes(header + bytes(64))
    with pytest.raises(
        PackageError, match=r"wide\.bmp: a BMP header for 1048577x1 pixels, which OpenCV's decoder refuses"
    ):
        list(ImageFolder(folder))


async def test_input_images_refuse_damaged_and_oversize_files_as_the_camera_does_and_read_webp(tmp_path):
    """`model-packager build --input-images` read a JPEG cut short (closed with an end marker) or missing a
    chunk, whose rest libjpeg fills in grey, and a TIFF whose strip offset points at another strip's data,
    decoded into garbage rows, where the agent's camera skips each as corrupt_frame; it decoded a header
    declaring 30 Mpx (the camera's max_megapixels is 25: oversize_frame, never decoded; 30000 x 30000 would
    have been 2.7 GB); and it skipped .webp files, which the camera reads. Now each gives the camera's
    pixels, or one line naming the file with the camera's reason."""
    from tests.support.image_bombs import png_declaring, tiff_declaring

    files = damaged_files()
    files["bomb.png"] = png_declaring(6000, 5000)
    files["bomb.tif"] = tiff_declaring(6000, 5000)
    files["part.webp"] = cv2.imencode(".webp", _textured(), [cv2.IMWRITE_WEBP_QUALITY, 90])[1].tobytes()
    files["lossless.webp"] = cv2.imencode(".webp", _textured(), [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    refused = await _camera_and_packager(tmp_path, files)
    assert refused == {
        "cut.jpg": "corrupt_frame",
        "lost_chunk.jpg": "corrupt_frame",
        "bad_crc.png": "corrupt_frame",
        "half_rows.png": "corrupt_frame",
        "strips.tif": "corrupt_frame",
        "cut.webp": "corrupt_frame",
        "bomb.png": "oversize_frame",
        "bomb.tif": "oversize_frame",
    }
    from devices.camera.settings import CameraSettings
    from model_packager.image_file import CAMERA_MAX_MEGAPIXELS

    assert CameraSettings.model_fields["max_megapixels"].default == CAMERA_MAX_MEGAPIXELS  # one default
    # the camera's limit is a setting: --max-megapixels reads a larger image, as max_megapixels 40 would
    big = tmp_path / "big"
    big.mkdir()
    assert cv2.imwrite(str(big / "wide.png"), np.zeros((2000, 13000), np.uint8))  # 26 Mpx, 26 KB
    with pytest.raises(
        PackageError, match=r"wide\.png: its PNG header declares 13000x2000 pixels .*--max-megapix"
    ):
        list(ImageFolder(big))
    assert next(iter(ImageFolder(big, max_megapixels=40))).shape == (2000, 13000, 3)


def test_dataset_import_refuses_a_damaged_or_oversize_file_naming_it_and_reads_webp(tmp_path):
    """`cloud-trainer dataset import` imported a TIFF whose strip offset points at another strip's data:
    libtiff decoded it into garbage rows, and they went into training as a part (the agent's camera now
    skips it as corrupt_frame). It left .webp files out, which the camera reads. Each damaged or oversize
    file is now refused naming its path, with nothing written; a WebP is imported with the camera's pixels.
    The anomaly family's own folder read refuses the TIFF alike."""
    from cloud_trainer.train.data import DatasetError
    from cloud_trainer.train.images import import_images
    from devices.camera.capture import _decode
    from tests.support.image_bombs import png_declaring
    from tests.unit.test_image_import import leftovers, per_class

    bad = damaged_files()
    bad["bomb.png"] = png_declaring(8000, 7000)  # 56 Mpx: over the import's 50
    for name, data in bad.items():
        src = per_class(tmp_path / name / "src", {"ok": 20, "dent": 2})
        (src / "dent" / name).write_bytes(data)
        with pytest.raises(DatasetError, match=rf"{re.escape(str(src / 'dent' / name))}: ") as got:
            import_images(src, tmp_path / name / "ds", log=lambda m: None)
        assert len(str(got.value).splitlines()) == 1, got.value
        assert not (tmp_path / name / "ds").exists() and leftovers(tmp_path / name) == [], name
    strips = tmp_path / "strips.tif" / "src" / "dent" / "strips.tif"
    with pytest.raises(
        AnomalyDataError, match=rf"{strips}: a TIFF whose strips 1 and 8 of 8 lie over each other"
    ):
        read_image(strips)

    src = per_class(tmp_path / "webp" / "src", {"ok": 20, "dent": 2})
    webp = cv2.imencode(".webp", _textured(), [cv2.IMWRITE_WEBP_QUALITY, 90])[1].tobytes()
    (src / "dent" / "part.webp").write_bytes(webp)
    out = tmp_path / "webp" / "ds"
    import_images(src, out, log=lambda m: None)
    rows = [json.loads(r) for r in (out / "labels.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["source"] == "dent/part.webp")
    assert row["label"] == "dent" and row["file"].endswith(".webp")
    stored = cv2.imread(str(out / row["file"]), cv2.IMREAD_COLOR)
    assert np.array_equal(stored, _decode(webp, 25.0))


def _bit_fields_bmp(bits: int, header: int, compression: int) -> bytes:
    """A 48x32 BMP of pixels in bit fields (RGB565 at 16 bits, BGRA at 32), bottom-up, under a header of
    ``header`` bytes (40: Windows 3's, the masks after it; 56, 108, 124: V3, V4, V5, the masks inside)."""
    w, h = 48, 32
    img = _textured(w, h)
    b, g, r = (img[..., k].astype(np.uint32) for k in range(3))
    if bits == 16:
        px, masks = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3), (0xF800, 0x07E0, 0x001F, 0)
        rows = px.astype("<u2")[::-1].tobytes()
    else:
        px, masks = (0xFF << 24) | (r << 16) | (g << 8) | b, (0xFF0000, 0xFF00, 0xFF, 0xFF000000)
        rows = px.astype("<u4")[::-1].tobytes()
    dib = struct.pack("<IiiHHIIiiII", header, w, h, 1, bits, compression, len(rows), 2835, 2835, 0, 0)
    dib += struct.pack("<4I", *masks) if compression == 6 or header > 40 else struct.pack("<3I", *masks[:3])
    dib = dib.ljust(header, b"\0") if header > 40 else dib
    return b"BM" + struct.pack("<IHHI", 14 + len(dib) + len(rows), 0, 0, 14 + len(dib)) + dib + rows


async def test_a_bmp_of_bit_fields_opencv_cannot_decode_is_named_so_alike_not_called_damaged(tmp_path):
    """A 16-bit RGB565 BMP under a V3-V5 header (GIMP's, an embedded camera's) and a BMP with an alpha bit
    field (BI_ALPHABITFIELDS) are whole files OpenCV does not decode: the import, `--input-images` and the
    folder camera called them "truncated or corrupt" (corrupt_frame), sending the user after a damage that is
    not there. They are now named as the kind they are, with what to save instead (unsupported_frame); the
    same RGB565 pixels under the 40-byte header are read alike."""
    from cloud_trainer.train.data import DatasetError
    from cloud_trainer.train.images import import_images
    from tests.unit.test_image_import import per_class

    files = {
        "v5.bmp": _bit_fields_bmp(16, 124, 3),
        "v3.bmp": _bit_fields_bmp(16, 56, 3),
        "alpha_bit_fields.bmp": _bit_fields_bmp(32, 40, 6),
        "win3.bmp": _bit_fields_bmp(16, 40, 3),
    }
    refused = await _camera_and_packager(tmp_path, files)
    assert refused == dict.fromkeys(("v5.bmp", "v3.bmp", "alpha_bit_fields.bmp"), "unsupported_frame")
    src = per_class(tmp_path / "import" / "src", {"ok": 20, "dent": 2})
    (src / "dent" / "v5.bmp").write_bytes(files["v5.bmp"])
    with pytest.raises(DatasetError) as got:
        import_images(src, tmp_path / "import" / "ds", log=lambda m: None)
    assert str(got.value) == (
        f"{src / 'dent' / 'v5.bmp'}: a 16-bit BMP of pixels in bit fields under a 124-byte header (an RGB565 or "
        "RGBA export), which this reader cannot decode: save it as PNG, or as a 24-bit BMP"
    )


async def test_a_grey_or_rgb_png_with_a_colour_made_transparent_is_refused_alike_as_a_palette_one_is(
    tmp_path,
):
    """A PNG's ``tRNS`` chunk makes a palette entry transparent, or, in a grey or RGB PNG, one colour (a tool's
    transparent background): OpenCV turns a palette's (and here an RGB one's) into an alpha channel, refused,
    but reads a grey one without alpha, so the import, `--input-images` and the folder camera took its
    transparent pixels as the grey stored there. Now they are refused alike, a 1-bit grey PNG's too (its key
    scaled to 8 bits as libpng expands it); a ``tRNS`` colour no pixel has is read as before. A ``tRNS`` after
    64 KiB of chunks, or after 64 chunks, was not looked for (read as stored): every chunk before the image data is."""
    from cloud_trainer.train.data import DatasetError
    from cloud_trainer.train.images import import_images
    from tests.unit.test_image_import import per_class

    def png(depth: int, colour: int, rows: list[bytes], key: bytes, before: tuple = ()) -> bytes:
        ihdr = struct.pack(
            ">IIBBBBB",
            len(rows[0]) * 8 // depth // (3 if colour == 2 else 1),
            len(rows),
            depth,
            colour,
            0,
            0,
            0,
        )
        idat = zlib.compress(b"".join(b"\x00" + r for r in rows))
        return _png([(b"IHDR", ihdr), *before, (b"tRNS", key), (b"IDAT", idat), (b"IEND", b"")])

    grey = [bytes([7] * 4 + [100] * 12)] * 10  # 16x10, the first 4 columns grey 7
    rgb = [bytes([10, 20, 30] * 4 + [200, 200, 200] * 12)] * 10
    one_bit = [b"\xf0\x00"] * 10  # 16x10, the first 4 columns white
    files = {
        "grey_key.png": png(8, 0, grey, struct.pack(">H", 7)),
        "rgb_key.png": png(8, 2, rgb, struct.pack(">HHH", 10, 20, 30)),
        "one_bit_key.png": png(1, 0, one_bit, struct.pack(">H", 1)),
        # a key out of range for the depth (libpng warns, and masks it to the depth: 1 here): refused, not raised
        "one_bit_key_over.png": png(1, 0, one_bit, struct.pack(">H", 0x0101)),
        "grey_key_unused.png": png(8, 0, grey, struct.pack(">H", 8)),
        "rgb_key_unused.png": png(8, 2, rgb, struct.pack(">HHH", 30, 20, 10)),
        # a tRNS of another length than its colour's: libpng drops it (warns), and the image is opaque; read
        "grey_key_long.png": png(8, 0, grey, struct.pack(">HH", 7, 7)),
        # its tRNS after a 70 KB text chunk, or after 65 of them: as transparent as the first
        "grey_key_far.png": png(8, 0, grey, struct.pack(">H", 7), ((b"tEXt", b"note\0" + bytes(70_000)),)),
        "grey_key_late.png": png(8, 0, grey, struct.pack(">H", 7), ((b"tEXt", b"n\0x"),) * 65),
    }
    bad_crc = bytearray(files["grey_key.png"])
    bad_crc[bad_crc.find(b"tRNS") + 6] ^= 0xFF  # its CRC: libpng drops it too
    files["grey_key_bad_crc.png"] = bytes(bad_crc)
    refused = await _camera_and_packager(tmp_path, files)
    assert refused == dict.fromkeys(
        (
            "grey_key.png",
            "rgb_key.png",
            "one_bit_key.png",
            "one_bit_key_over.png",
            "grey_key_far.png",
            "grey_key_late.png",
        ),
        "unsupported_frame",
    )
    src = per_class(tmp_path / "import" / "src", {"ok": 20, "dent": 2})
    (src / "dent" / "rgb_key_unused.png").write_bytes(files["rgb_key_unused.png"])
    assert import_images(src, tmp_path / "import" / "ds", log=lambda m: None)["counts"] == {
        "ok": 20,
        "dent": 3,
    }
    (src / "dent" / "rgb_key.png").write_bytes(files["rgb_key.png"])
    with pytest.raises(
        DatasetError,
        match=rf"{src / 'dent' / 'rgb_key.png'}: 40 of its 160 pixels are transparent \(an alpha channel, or a "
        r"colour made transparent\)",
    ):
        import_images(src, tmp_path / "import" / "ds2", log=lambda m: None)
    assert not (tmp_path / "import" / "ds2").exists()


# the camera's function and the packager's copy where their names differ
_PACKAGER_NAMES = {
    "tiff_tiles_over": "tiles_over",
    "tiff_deep_pixels": "deep_pixels",
    "tiff_not_one_image": "not_one_image",
    "tiff_directories": "_tiff_directories",
    "png_key_colour": "_png_key_colour",
    "png_chunks": "_png_chunks",
    "png_chunk_crc_ok": "_png_chunk_crc_ok",
}


@pytest.mark.parametrize(
    ("camera", "name"),
    [
        ("protocols.image_header", n)
        for n in (
            "image_size",
            "_jpeg",
            "_bmp",
            "_tiff",
            "_webp",
            "_pnm",
            "tiff_data_misplaced",
            "_tiff_misplaced",
            "_tiff_regions_over",
            "_jpeg_frame",
            "image_kind",
            "_pnm_header",
            "pnm_maxval_not_255",
            "animated",
            "_png_chunk_overrun",
            "png_key_colour",
            "png_chunks",
            "png_chunk_crc_ok",
            "_samples_ended",
            "jpeg_scans_over",
            "_next_marker",
            "bmp_not_decodable",
            "tiff_tiles_over",
            "tiff_deep_pixels",
            "tiff_not_one_image",
            "tiff_directories",
            "_tiff_chain",
        )
    ]
    + [
        ("protocols.jpeg_check", n)
        for n in ("damaged_jpeg", "coded_damage", "_walk", "_restart_markers", "grey_filled")
    ],
)
def test_the_packagers_copies_of_the_cameras_header_and_jpeg_checks_are_the_same_code(camera, name):
    """``model_packager`` imports nothing of ours, so ``image_file`` holds copies of the camera's header
    reading, TIFF strip check and damaged-JPEG check, and of the constants they read (the TIFF layouts read
    beyond 8 bits, a limit): a fix to one that misses the other makes `--input-images` read files the camera
    skips (or the reverse). Change both together. A copy named otherwise (``tiles_over`` for
    ``tiff_tiles_over``) is compared by ``_PACKAGER_NAMES``."""
    import ast
    import importlib
    import inspect

    import model_packager.image_file as packager

    def code(module, own: str, names: dict[str, str]) -> str:
        """The function's code, without its docstring, comments and type annotations, the functions it calls
        named by the camera's names."""
        tree = ast.parse(inspect.getsource(getattr(module, own)))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                node.id = names.get(node.id, node.id)
            if isinstance(node, ast.FunctionDef):
                node.name = names.get(node.name, node.name)
                node.returns = None
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    node.body = body[1:]
            if isinstance(node, ast.arg):
                node.annotation = None
        return ast.dump(tree)

    copy = _PACKAGER_NAMES.get(name, name)
    back = {v: k for k, v in _PACKAGER_NAMES.items()}
    module = importlib.import_module(camera)
    assert code(packager, copy, back) == code(module, name, {})
    # and the module's constants it reads (a layout's table, a limit): the same code reading another table refuses
    # other files
    read = {
        node.id
        for node in ast.walk(ast.parse(inspect.getsource(getattr(module, name))))
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }
    for constant in sorted(read):
        value = getattr(module, constant, None)
        if value is None or callable(value) or inspect.ismodule(value):
            continue
        own = _PACKAGER_NAMES.get(constant, constant)
        assert getattr(packager, own, None) == value, f"{camera}.{constant} and image_file.{own} differ"


async def test_an_image_the_camera_skips_at_its_default_size_limit_is_refused_by_the_import_too(tmp_path):
    """`dataset import` read images up to 50 Mpx by default, where the agent's camera skips frames over 25 Mpx
    (oversize_frame) and `model-packager build --input-images` refuses them: a 26-Mpx photo of a part was
    imported and trained on, then refused as the package's calibration image and never delivered by the
    camera. The import's default is the camera's now, its refusal says to raise both; raised together, the
    import, the camera and the packager read the image alike."""
    import yaml

    from cloud_trainer.train.data import DatasetError, load_parts
    from cloud_trainer.train.images import CAMERA_MAX_MEGAPIXELS, import_images
    from devices.camera.capture import CameraSource
    from devices.camera.settings import CameraSettings
    from model_packager.image_file import CAMERA_MAX_MEGAPIXELS as PACKAGER_DEFAULT

    assert CameraSettings.model_fields["max_megapixels"].default == CAMERA_MAX_MEGAPIXELS == PACKAGER_DEFAULT
    src = tmp_path / "bottle"  # MVTec AD layout
    rng = np.random.default_rng(0)
    for folder, n in (("train/good", 20), ("test/dent", 2)):
        (src / folder).mkdir(parents=True)
        for i in range(n):
            assert cv2.imwrite(
                str(src / folder / f"{i:03d}.png"), rng.integers(0, 256, (64, 96, 3), np.uint8)
            )
    wide = src / "train" / "good" / "wide.png"
    assert cv2.imwrite(str(wide), np.full((2000, 13000), 90, np.uint8))  # 26 Mpx, 26 KB
    with pytest.raises(DatasetError) as e:
        import_images(src, tmp_path / "ds", log=lambda m: None)
    assert str(e.value) == (
        f"{wide}: its PNG header declares 13000x2000 pixels (26.0 Mpx), over the 25-Mpx limit; shrink or crop "
        "it, or import the dataset with `cloud-trainer dataset import --max-megapixels N` if images this large "
        "are meant, and set the agent's camera max_megapixels as high (it skips larger frames)"
    )
    assert not (tmp_path / "ds").exists()
    # the camera at its default limit; a queue that holds the folder's 21 files: a slow taker (a loaded machine)
    # saw the hand-over drop its oldest ones (counted, as for a live camera) and read fewer than the folder holds
    cam = CameraSource("cam", CameraSettings(url=str(wide.parent), fps=200, queue_max_items=21))
    await cam.start()
    frames = [f.image.shape async for f in cam.items()]
    await cam.stop()
    assert len(frames) == 20 and cam.stats.errors_by_reason == {"oversize_frame": 1}
    with pytest.raises(PackageError, match=r"wide\.png: its PNG header declares 13000x2000 pixels"):
        list(ImageFolder(wide.parent))
    # raised together: the import records its limit for training, the packager and the camera read it too
    import_images(src, tmp_path / "ds", log=lambda m: None, max_megapixels=30)
    assert yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())["max_megapixels"] == 30
    assert len(load_parts(tmp_path / "ds").images) == 23
    assert (2000, 13000, 3) in {
        img.shape for img in ImageFolder(tmp_path / "ds" / "images", max_megapixels=30)
    }
    cam = CameraSource("cam", CameraSettings(url=str(wide.parent), fps=200, max_megapixels=30))
    await cam.start()
    assert (2000, 13000, 3) in [f.image.shape async for f in cam.items()]
    await cam.stop()


async def test_jfif_and_jpe_images_the_import_reads_are_read_by_the_camera_and_the_packager_too(tmp_path):
    """`dataset import` read .jfif and .jpe files (JPEGs: Windows saves a browser's JPEG as .jfif), but the
    agent's folder camera said the folder held no images and `model-packager build --input-images` left them
    out: a model trained on them could not be fed them, nor packaged with their statistics. The three read
    the same kinds of file now, and the same pixels."""
    from cloud_trainer.train.images import IMAGE_EXTS
    from devices.camera.capture import IMAGE_SUFFIXES, CameraSource
    from devices.camera.settings import CameraSettings
    from model_packager.image_folder import SUFFIXES

    assert set(IMAGE_EXTS) == IMAGE_SUFFIXES == SUFFIXES
    folder = tmp_path / "shots"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.jfif", "b.JPE", "c.jfif"):
        (folder / name).write_bytes(
            cv2.imencode(".jpg", rng.integers(0, 256, (40, 60, 3), np.uint8))[1].tobytes()
        )
    cam = CameraSource("cam", CameraSettings(url=str(folder), fps=200))
    await cam.start()
    frames = [f.image async for f in cam.items()]
    await cam.stop()
    packaged = list(ImageFolder(folder))
    assert len(frames) == len(packaged) == 3
    assert all(np.array_equal(a, b) for a, b in zip(frames, packaged, strict=True))


def test_the_anomaly_good_folder_and_a_dataset_recording_no_limit_are_read_under_the_cameras_25_mpx(tmp_path):
    """`build anomaly --good DIR` and a dataset folder whose dataset.yaml records no `max_megapixels` (the
    simulator's, one imported before the limit was recorded) read images up to 50 Mpx, where `dataset import`
    and the agent's camera stop at 25: a 26-Mpx image the camera skips (oversize_frame) trained the model.
    Every read of the trainer has the camera's limit now unless the dataset records another (`dataset import
    --max-megapixels N`, the option the refusal names), refused naming the file and its size."""
    import yaml

    from cloud_trainer.train.anomaly import load_good
    from cloud_trainer.train.data import DatasetError, load_parts

    good = tmp_path / "good"
    good.mkdir()
    wide = good / "wide.png"
    assert cv2.imwrite(str(wide), np.full((2000, 13000), 90, np.uint8))  # 26 Mpx, 26 KB
    said = f"{wide}: its PNG header declares 13000x2000 pixels (26.0 Mpx), over the 25-Mpx limit; shrink or crop it"
    with pytest.raises(AnomalyDataError) as e:
        load_good(good, min_good=1)
    assert str(e.value).startswith(said) and "`cloud-trainer dataset import --max-megapixels N`" in str(
        e.value
    )
    ds = tmp_path / "ds"
    (ds / "images").mkdir(parents=True)
    rows = []
    for i, label in enumerate(["ok", "ok", "dent"]):
        assert cv2.imwrite(str(ds / "images" / f"{i}.png"), np.full((40, 60, 3), 40 * i, np.uint8))
        rows.append({"file": f"images/{i}.png", "label": label})
    big = ds / "images" / "wide.png"
    assert cv2.imwrite(str(big), np.full((2000, 13000), 90, np.uint8))
    rows.append({"file": "images/wide.png", "label": "ok"})
    (ds / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    said = (
        f"{big} (labels.jsonl line 4): its PNG header declares 13000x2000 pixels (26.0 Mpx), over the 25-Mpx"
    )
    with pytest.raises(DatasetError, match=re.escape(said)):
        load_parts(ds)
    # the limit the dataset records (an import's --max-megapixels) is the one it is read under
    (ds / "dataset.yaml").write_text(yaml.safe_dump({"max_megapixels": 30}))
    assert (2000, 13000, 3) in {img.shape for img in load_parts(ds).images}


async def test_pnm_images_are_read_by_the_import_the_camera_and_the_packager_alike(tmp_path):
    """PNM files (.pgm, .ppm, .pbm, .pnm: machine-vision tools' raw exports), which OpenCV decodes and the
    header check sizes, were in no list of kinds: `dataset import` left them out as "not an image", the agent's
    folder camera said a folder of them held no images and `model-packager build --input-images` found none.
    They are one of the kinds now (protocols.image_header.IMAGE_TYPES, which the camera's list is and the
    packager's copy equals), read alike by the three, and taken by the fleet as samples."""
    from cloud_trainer.fleet.store import SAMPLE_KINDS
    from cloud_trainer.train.data import load_parts
    from cloud_trainer.train.images import IMAGE_EXTS, import_images
    from devices.camera.capture import IMAGE_SUFFIXES, CameraSource
    from devices.camera.settings import CameraSettings
    from model_packager.image_folder import SUFFIXES
    from protocols.image_header import IMAGE_TYPES

    pnm = {".pgm", ".ppm", ".pbm", ".pnm"}
    assert pnm <= set(IMAGE_TYPES) and pnm <= set(SAMPLE_KINDS)
    assert (
        set(IMAGE_TYPES) == set(IMAGE_EXTS) == IMAGE_SUFFIXES == SUFFIXES
    )  # the packager's copy is the list
    rng = np.random.default_rng(5)
    src = tmp_path / "parts"
    for cls, n in (("good", 20), ("dent", 2)):
        (src / cls).mkdir(parents=True)
        for i in range(n):
            kind = (".pgm", ".ppm", ".pbm", ".pnm", ".PGM")[i % 5]
            name = src / cls / f"{i:02d}{kind}"
            if kind == ".pnm":  # a text (P3) colour file with a comment, as some tools write them
                img = rng.integers(0, 256, (8, 12, 3), np.uint8)
                rgb = " ".join(str(v) for v in img[:, :, ::-1].ravel())
                name.write_text(f"P3\n# part {i}\n12 8\n255\n{rgb}\n")
                continue
            if kind == ".pbm":
                img = (rng.integers(0, 2, (40, 60)) * 255).astype(np.uint8)
            else:
                img = rng.integers(0, 256, (40, 60) if kind.lower() == ".pgm" else (40, 60, 3), np.uint8)
            ok, buf = cv2.imencode(kind.lower(), img)
            assert ok
            name.write_bytes(buf.tobytes())
    # a queue that holds the folder's 20 frames: a slow taker (a loaded machine) saw the hand-over drop its oldest
    # ones (counted, as for a live camera) and read fewer than the folder holds
    cam = CameraSource("cam", CameraSettings(url=str(src / "good"), fps=200, queue_max_items=20))
    await cam.start()
    frames = [f.image async for f in cam.items()]
    await cam.stop()
    packaged = list(ImageFolder(src / "good"))
    assert len(frames) == len(packaged) == 20
    assert all(np.array_equal(a, b) for a, b in zip(frames, packaged, strict=True))
    summary = import_images(src, tmp_path / "ds", log=lambda m: None)
    assert summary["counts"] == {"good": 20, "dent": 2}, summary
    data = load_parts(tmp_path / "ds")
    good = data.classes.index("good")
    trained = {
        (img.shape, img.tobytes()) for img, y in zip(data.images, data.labels, strict=True) if y == good
    }
    assert trained == {(img.shape, img.tobytes()) for img in frames}


async def test_a_plain_pnm_without_a_line_end_after_its_last_sample_is_read_alike_by_the_three(tmp_path):
    """A plain (text) PGM or PPM may end with its last sample's digits (the format asks no whitespace after it):
    OpenCV's reader looked past the end for the number's end and refused the file, so the camera skipped it as
    ``corrupt_frame``, the packager refused it and the import's decode did too. Read now, as with a line end, by
    the camera, the packager and the trainer's decode alike."""
    from devices.camera.capture import CameraSource
    from devices.camera.settings import CameraSettings
    from protocols.image_header import decode_image

    rng = np.random.default_rng(11)
    grey, colour = rng.integers(0, 256, (4, 6), np.uint8), rng.integers(0, 256, (4, 6, 3), np.uint8)
    files = {
        "grey.pgm": ("P2\n6 4\n255\n" + " ".join(str(v) for v in grey.ravel())).encode(),
        "colour.ppm": ("P3 6 4 255 " + " ".join(str(v) for v in colour[:, :, ::-1].ravel())).encode(),
    }
    wanted = {"grey.pgm": cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), "colour.ppm": colour}
    for name, data in files.items():
        assert data[-1:].isdigit()
        assert np.array_equal(decode_image(data + b"\n"), wanted[name])  # with a line end: read as it was
        assert np.array_equal(decode_image(data), wanted[name]), name
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_bytes(data)
        src = CameraSource("cam", CameraSettings(url=str(folder), fps=200))
        await src.start()
        frames = [f.image async for f in src.items()]
        await src.stop()
        assert not src.stats.errors_by_reason, src.stats.last_error
        (packaged,) = list(ImageFolder(folder))
        assert len(frames) == 1 and np.array_equal(frames[0], wanted[name]), name
        assert np.array_equal(packaged, wanted[name]), name


async def test_a_text_pgm_or_ppm_of_maxval_below_255_is_refused_alike_by_the_three_a_binary_one_read_as_stored(
    tmp_path,
):
    """A PGM or PPM of maxval below 255 read two ways by its encoding: a binary one (P5, P6) as its samples stand,
    a text one (P2, P3) scaled to 255 by OpenCV, so the same 4-bit image was 0-15 or 0-255. The text encodings
    are refused, by the import, the agent's folder camera and the packager, naming the file and its maxval (no
    scale guessed: a tool writing each image's brightest sample as its maxval would give each its own gain). A
    binary one is read as its samples stand, as the docs promised and as a line camera writing P5 frames of
    maxval 200 relies on (refusing it skipped every frame), and a defect mask saved as P5 of maxval 1 (0 good,
    1 defect) is imported; maxval 255, and 16-bit ones read by pixel_bits, still read alike in both encodings."""
    from cloud_trainer.train.data import DatasetError, load_parts
    from cloud_trainer.train.images import import_images
    from tests.unit.test_image_import import mvtec_dents, per_class

    rng = np.random.default_rng(15)
    grey, colour = rng.integers(0, 16, (6, 8)), rng.integers(0, 16, (6, 8, 3))

    def pnm(magic: str, values: np.ndarray, maxval: int) -> bytes:
        h, w = values.shape[:2]
        head = f"{magic}\n{w} {h}\n{maxval}\n".encode()
        if magic in ("P2", "P3"):
            return head + " ".join(str(int(v)) for v in values.ravel()).encode() + b"\n"
        return head + values.astype(">u2" if maxval > 255 else np.uint8).tobytes()

    refused = {
        "grey_text.pgm": pnm("P2", grey * 13, 200),
        "grey_text15.pgm": pnm("P2", grey, 15),
        "colour_text.ppm": pnm("P3", colour, 15),
    }
    for sub in ("one", "two", "three", "four"):
        (tmp_path / sub).mkdir()
    got = await _camera_and_packager(tmp_path / "one", refused)
    assert got == dict.fromkeys(refused, "unsupported_frame"), got
    stored = {  # read as their samples stand by the camera and the packager alike (_camera_and_packager)
        "line_camera.pgm": pnm("P5", grey * 13, 200),
        "mask.pgm": pnm("P5", grey % 2, 1),
        "colour_binary.ppm": pnm("P6", colour * 6, 100),
    }
    assert not await _camera_and_packager(tmp_path / "two", stored)
    for name, data in stored.items():
        (folder := tmp_path / "three" / name.replace(".", "_")).mkdir()
        (folder / name).write_bytes(data)
        (packaged,) = list(ImageFolder(folder))
        wanted = {"line_camera.pgm": grey * 13, "mask.pgm": grey % 2, "colour_binary.ppm": colour * 6}[name]
        wanted = np.dstack([wanted] * 3) if wanted.ndim == 2 else wanted[..., ::-1]  # read as BGR
        assert np.array_equal(packaged.reshape(wanted.shape), wanted), name
    read = {"text.pgm": pnm("P2", grey * 17, 255), "binary.pgm": pnm("P5", grey * 17, 255)}
    assert not await _camera_and_packager(tmp_path / "four", read)
    from protocols.image_header import decode_image

    read |= {"text16.pgm": pnm("P2", grey * 273, 4095), "binary16.pgm": pnm("P5", grey * 273, 4095)}
    pixels = {n: decode_image(d, cv2.IMREAD_UNCHANGED) for n, d in read.items()}  # as pixel_bits takes them
    assert np.array_equal(pixels["text.pgm"], pixels["binary.pgm"])
    assert np.array_equal(pixels["text16.pgm"], pixels["binary16.pgm"])
    classes = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    for name, data in refused.items():
        (classes / "dent" / name).write_bytes(data)
        maxval = 200 if name == "grey_text.pgm" else 15
        kind = "PGM" if name.endswith(".pgm") else "PPM"
        said = (
            rf"dent/{name}: a text {kind} \({'P2' if kind == 'PGM' else 'P3'}\) of maximum value {maxval} "
            r"\(its header's maxval\), not 255: .*save it with maxval 255"
        )
        with pytest.raises(DatasetError, match=said):
            import_images(classes, tmp_path / "ds", log=lambda m: None)
        (classes / "dent" / name).unlink()
    assert not (tmp_path / "ds").exists()
    # the line camera's frame imported as stored, and a defect mask of maxval 1 with its image (MVTec layout)
    (classes / "dent" / "line_camera.pgm").write_bytes(stored["line_camera.pgm"])
    import_images(classes, tmp_path / "ds", log=lambda m: None)
    ds = load_parts(tmp_path / "ds")
    (frame,) = [i for i in ds.images if i.shape[:2] == grey.shape]
    assert np.array_equal(frame.reshape(*grey.shape, -1)[..., 0], grey * 13), frame
    mvtec = mvtec_dents(tmp_path / "bottle", (8, 6), stored["mask.pgm"], ".pgm")
    import_images(mvtec, tmp_path / "ds_masks", log=lambda m: None)
    masks = load_parts(tmp_path / "ds_masks", masks=True).masks
    assert [np.array_equal(m != 0, grey % 2 != 0) for m in masks if m is not None] == [True, True]


def _tiff16(samples: np.ndarray, photometric: int, planar: int = 1) -> bytes:
    """An uncompressed little-endian TIFF of 16-bit samples (h, w) or (h, w, n) in one strip, in the layout a
    microscope's or an X-ray detector's software writes: ``photometric`` 0 (white at 0) or 1 (black at 0) for
    grey, 2 for RGB; ``planar`` 2 stores each sample's plane after the other (PlanarConfiguration)."""
    h, w = samples.shape[:2]
    n = 1 if samples.ndim == 2 else samples.shape[2]
    data = (np.moveaxis(samples, -1, 0) if planar == 2 and n > 1 else samples).astype("<u2").tobytes()
    bits_at = 8 + len(data)  # BitsPerSample's n values, when they do not fit in the entry
    first = bits_at + (2 * n if n > 2 else 0)
    tags = [
        (256, 3, 1, w),
        (257, 3, 1, h),
        (258, 3, n, 16 | 16 << 16 if n == 2 else 16 if n == 1 else bits_at),
        (259, 3, 1, 1),
        (262, 3, 1, photometric),
        (273, 4, 1, 8),
        (277, 3, 1, n),
        (278, 3, 1, h),
        (279, 4, 1, len(data)),
        (284, 3, 1, planar),
    ]
    if planar == 2 and n > 1:  # a strip per plane
        tags[5], tags[8] = (273, 4, n, first), (279, 4, n, first + 4 * n)
        plane = len(data) // n
        extra = struct.pack(f"<{n}I", *(8 + k * plane for k in range(n))) + struct.pack(
            f"<{n}I", *[plane] * n
        )
    else:
        extra = b""
    head = b"II*\x00" + struct.pack("<I", first + len(extra))
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags) + b"\0\0\0\0"
    return head + data + (struct.pack(f"<{n}H", *[16] * n) if n > 2 else b"") + extra + ifd


def test_a_16_bit_tiff_with_white_at_0_or_in_separate_planes_is_refused_not_read_as_its_negative(tmp_path):
    """OpenCV reads a TIFF of more than 8 bits a sample as stored, without libtiff's colour conversion: a 16-bit
    grey TIFF with white at 0 (PhotometricInterpretation 0: an X-ray detector's, a scanner's) came out as its
    negative, and an RGB one in separate planes (PlanarConfiguration 2: a microscope's) with its colours
    scrambled; the import (--pixel-bits 16) stored and trained on them, the agent's camera judged them. Both are
    refused alike by the import, the camera's decode and `--input-images`, naming the layout; grey with black at
    0 and interleaved RGB at 16 bits are read with exactly their values."""
    from cloud_trainer.train.data import DatasetError
    from cloud_trainer.train.images import import_images
    from model_packager.image_file import Refused
    from model_packager.image_file import read_image as packager_read
    from protocols.image_header import ImageRejected, decode_image
    from tests.unit.test_image_import import per_class

    rng = np.random.default_rng(5)
    grey = rng.integers(0, 65536, (6, 10), dtype=np.uint16)
    rgb = rng.integers(0, 65536, (6, 10, 3), dtype=np.uint16)  # R, G, B as written
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    (src / "dent" / "grey.tif").write_bytes(_tiff16(grey, 1))
    (src / "dent" / "rgb.tif").write_bytes(_tiff16(rgb, 2))
    out = tmp_path / "ds"
    import_images(src, out, pixel_bits=16, log=lambda m: None)
    rows = {r["source"]: r for r in map(json.loads, (out / "labels.jsonl").read_text().splitlines())}
    stored = cv2.imread(str(out / rows["dent/grey.tif"]["file"]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(stored, (grey >> 8).astype(np.uint8))
    stored = cv2.imread(str(out / rows["dent/rgb.tif"]["file"]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(stored, (rgb[..., ::-1] >> 8).astype(np.uint8))
    for name, data, why in (
        ("negative.tif", _tiff16(grey, 0), "a 16-bit white-is-zero grey (a negative) TIFF"),
        ("planes.tif", _tiff16(rgb, 2, planar=2), "a TIFF of 16-bit samples in separate planes"),
    ):
        with pytest.raises(ImageRejected, match=re.escape(why)) as camera:
            decode_image(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
        assert camera.value.unsupported
        with pytest.raises(Refused, match=re.escape(why)):
            packager_read(data)
        (src / "dent" / name).write_bytes(data)
        with pytest.raises(DatasetError, match=re.escape(f"{src / 'dent' / name}: {why}")):
            import_images(src, tmp_path / name, pixel_bits=16, log=lambda m: None)
        assert not (tmp_path / name).exists()
        (src / "dent" / name).unlink()
