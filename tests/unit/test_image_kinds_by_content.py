"""Image files told by their bytes, not their names (``protocols.image_header.image_kind``, the one sniffing function
the import, the console and the packager's copy use): a PNM of any form (P1-P6, binary or text, with comments) is
known without its extension, a text that begins like one is not; `dataset import` says each image it leaves out for
its name, stores one under another image kind's extension under its own, and refuses what the agent's camera would
not read as one image (an animated PNG or WebP, a GIF), in one line naming the file, as it does a 16-bit file without
--pixel-bits, a multi-page TIFF or an empty file; a CMYK JPEG is read."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_trainer.cli import main as cloud_main
from cloud_trainer.train.images import import_images
from tests.unit.test_image_import import per_class

SUPPORT = Path(__file__).parent.parent / "support"


def pnm_files() -> dict[str, tuple[bytes, str]]:
    """Each PNM form as tools write it: ``name -> (bytes, the extension its kind is stored under)``."""
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (10, 12), np.uint8)
    colour = rng.integers(0, 256, (10, 12, 3), np.uint8)
    bits = (rng.integers(0, 2, (10, 12)) * 255).astype(np.uint8)
    text = [cv2.IMWRITE_PXM_BINARY, 0]
    return {
        "P1": (cv2.imencode(".pbm", bits, text)[1].tobytes(), ".pbm"),
        "P2": (cv2.imencode(".pgm", grey, text)[1].tobytes(), ".pgm"),
        "P3": (cv2.imencode(".ppm", colour, text)[1].tobytes(), ".ppm"),
        "P4": (cv2.imencode(".pbm", bits)[1].tobytes(), ".pbm"),
        "P5": (b"P5\n# written by a line camera's tool\n12 10\n255\n" + grey.tobytes(), ".pgm"),
        "P6": (cv2.imencode(".ppm", colour)[1].tobytes(), ".ppm"),
        "P5-16": (cv2.imencode(".pgm", grey.astype(np.uint16) * 16)[1].tobytes(), ".pgm"),
    }


def test_a_pnm_of_every_form_is_told_by_its_bytes_and_a_text_that_begins_like_one_is_not():
    """``image_kind`` knew PNG, JPEG, BMP, TIFF and WebP by their bytes, never a PNM; the packager's copy is the
    same code (test_image_readers_agree)."""
    from model_packager import image_file
    from protocols.image_header import image_kind, kind_suffix

    for form, (data, suffix) in pnm_files().items():
        assert data[:2] == form[:2].encode()
        assert (image_kind(data), kind_suffix(data), image_file.image_kind(data)) == ("PNM", suffix, "PNM"), (
            form
        )
    for text in (
        b"P1 is the first measuring point\n",
        b"P5\nno size here\n",
        b"P2\n12 10\n",  # cut short: no maximum value
        b"P6\n0 10\n255\n",  # no pixels wide
        b"P5\n12 10\n70000\n",  # over 16 bits
        b"P7\nWIDTH 12\n",  # PAM: not read here
        b"BM is a text too\n",
        b"GIF8",
        b"",
    ):
        assert image_kind(text) is None, text
    assert image_kind(b"GIF89a\x0c\x00\x0a\x00") == "GIF"


def test_a_pnm_without_its_extension_is_said_as_an_image_by_content_not_as_no_image(tmp_path):
    """A PNM named otherwise ('cam1_0001' from a line camera, '.raw', '.dat') was left out as "not a PNG, JPEG, BMP,
    TIFF, WebP or PNM image by its name", while a PNG so named was said to be an image by content with its
    extension to give it. A PNM is told by content now, its extension by its form."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    files = pnm_files()
    (src / "ok" / "cam1_0001").write_bytes(files["P5"][0])
    (src / "ok" / "frame.raw").write_bytes(files["P6"][0])
    (src / "dent" / "mask.dat").write_bytes(files["P1"][0])
    (src / "dent" / "notes.txt").write_bytes(b"P1 is the first measuring point\n")
    notes: list[str] = []
    res = import_images(src, tmp_path / "ds", log=notes.append)
    assert res["counts"] == {"ok": 20, "dent": 2}
    said = "\n".join(notes)
    assert (
        "left out 3 files that are images by content but not by name (no extension, or another): "
        "'dent/mask.dat' (PNM), 'ok/cam1_0001' (PNM), 'ok/frame.raw' (PNM); give each its extension "
        "(.pbm for PBM, .pgm for PGM, .ppm for PPM) to import them"
    ) in said, said
    assert (
        "left out 1 file that is not a PNG, JPEG, BMP, TIFF, WebP or PNM image by its name: dent/notes.txt"
    ) in said, said


def test_a_pnm_under_another_image_kinds_extension_is_stored_under_its_own_and_said(tmp_path):
    """A PPM saved as '.png' was read by its content but copied into the dataset as '.png', without a word (a JPEG
    so named was said and stored as '.jpg'): a file named PNG that no PNG reader opens."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    files = pnm_files()
    (src / "dent" / "export.png").write_bytes(files["P6"][0])
    (src / "ok" / "shot.tif").write_bytes(files["P2"][0])
    notes: list[str] = []
    res = import_images(src, tmp_path / "ds", log=notes.append)
    assert res["counts"] == {"ok": 21, "dent": 3}
    rows = {
        r["source"]: r["file"]
        for r in map(json.loads, (tmp_path / "ds" / "labels.jsonl").read_text().splitlines())
    }
    assert rows["dent/export.png"].endswith(".ppm") and rows["ok/shot.tif"].endswith(".pgm")
    stored = tmp_path / "ds" / rows["dent/export.png"]
    assert stored.read_bytes() == files["P6"][0]
    assert [n for n in notes if "another kind" in n] == [
        "dataset import: 2 images are of another kind than their extensions say, read and stored as what they are: "
        "dent/export.png (a PNM), ok/shot.tif (a PNM); rename them to match if other tools read your folder"
    ]


def _animation(ext: str) -> bytes:
    frames = np.random.default_rng(4).integers(0, 256, (2, 16, 20, 3), np.uint8)
    a = cv2.Animation()
    a.frames, a.durations = [frames[0], frames[1]], [100, 100]
    ok, buf = cv2.imencodeanimation(ext, a)
    assert ok
    return buf.tobytes()


def _cases() -> dict[str, tuple[bytes, str]]:
    """``name -> (bytes, what the one line says)`` for the files of users' folders that are not one 8-bit image."""
    grey16 = np.random.default_rng(6).integers(0, 65536, (10, 12), np.uint16)
    ok, multi = cv2.imencodemulti(".tif", [np.zeros((10, 12), np.uint8), np.full((10, 12), 9, np.uint8)])
    assert ok
    return {
        "anim.png": (_animation(".png"), "an animated PNG of 2 frames; one image per file is read"),
        "anim.webp": (_animation(".webp"), "an animated WebP of 2 frames; one image per file is read"),
        "anim.gif.png": (_animation(".gif"), "a GIF image, which is not read here"),
        "deep.png": (cv2.imencode(".png", grey16)[1].tobytes(), "16-bit pixels"),
        "deep.tif": (cv2.imencode(".tif", grey16)[1].tobytes(), "16-bit pixels"),
        "pages.tif": (multi.tobytes(), "a TIFF of 2 pages (images); one image per file is read"),
        "empty.png": (b"", "empty file"),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_a_file_that_is_not_one_8_bit_image_is_refused_at_import_in_one_line_naming_it(
    tmp_path, capsys, name
):
    """An animated PNG or WebP was imported as its first frame without a word (the others lost, as a multi-page
    TIFF's would be, which is refused), and a GIF named .png was "not a PNG, JPEG, ... image": each is refused in
    one line naming the file now, as a 16-bit file without --pixel-bits, a multi-page TIFF and an empty file were
    already; no traceback."""
    data, why = _cases()[name]
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    (src / "dent" / name).write_bytes(data)
    assert cloud_main(["dataset", "import", str(src), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    line = err.split("cloud-trainer dataset import: ")[1]
    assert line.count("\n") == 1 and line.startswith(f"{src / 'dent' / name}: {why}"), err
    assert "Traceback" not in err and not (tmp_path / "ds").exists()


def test_a_cmyk_jpeg_is_read_at_import_and_an_animation_is_refused_by_the_packagers_reader_too(tmp_path):
    """A CMYK JPEG (ImageMagick's, as print workflows save them) is read as colour; the packager's
    `--input-images` reader (its own copy: model_packager imports nothing of ours) refuses an animation as the
    import and the agent's camera do."""
    from model_packager.image_file import Refused, read_image
    from protocols.image_header import ImageRejected, decode_image

    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    cmyk = (SUPPORT / "cmyk_camera.jpg").read_bytes()
    (src / "dent" / "print.jpg").write_bytes(cmyk)
    assert import_images(src, tmp_path / "ds", log=lambda _: None)["counts"] == {"ok": 20, "dent": 3}
    for ext in (".png", ".webp"):
        with pytest.raises(Refused, match="an animated") as packager:
            read_image(_animation(ext))
        with pytest.raises(ImageRejected, match="an animated") as camera:
            decode_image(_animation(ext))
        assert packager.value.unsupported and camera.value.unsupported
        assert str(packager.value) == str(camera.value)


def test_input_images_of_images_without_their_extensions_are_refused_naming_them(tmp_path):
    """`model-packager build --input-images` on a folder of frames without extensions said "no image in it", of
    a folder of images; it names the files that are images by their bytes now (its own copy of ``image_kind``)."""
    from model_packager.errors import PackageError
    from model_packager.image_folder import ImageFolder

    files = pnm_files()
    (tmp_path / "day1").mkdir()
    (tmp_path / "day1" / "img_0001").write_bytes(files["P5"][0])
    (tmp_path / "img_0002.raw").write_bytes(files["P3"][0])
    (tmp_path / "notes.txt").write_bytes(b"P1 is the first measuring point\n")
    with pytest.raises(PackageError) as err:
        ImageFolder(tmp_path)
    assert (
        f"--input-images {tmp_path}: no image in it (PNG, JPEG, BMP, TIFF, WebP or PNM) by name; 2 files are "
        "images by content: 'day1/img_0001' (PNM), 'img_0002.raw' (PNM): give them their extensions; give the "
        "folder of the images"
    ) in str(err.value)
