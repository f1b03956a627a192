"""`cloud-trainer dataset import` on files nobody here made: folders copied from a Mac, a Windows stick
or a NAS, masks that contradict their images, PNGs with transparency, multi-page TIFFs, broken links and
file names that are not one line of text. Each is read or refused by a stated rule, one line each."""

from __future__ import annotations

import json
import os
import stat
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_trainer.cli import main as cloud_main
from cloud_trainer.train.data import DatasetError, load_parts
from cloud_trainer.train.images import import_images
from tests.unit.test_image_import import img, leftovers, per_class


def _mvtec(root: Path) -> Path:
    for i in range(20):
        img(root / "train" / "good" / f"{i:03d}.png", i)
    img(root / "test" / "good" / "000.png", 50)
    for i in range(2):
        img(root / "test" / "dent" / f"{i:03d}.png", 60 + i)
    (root / "ground_truth" / "dent").mkdir(parents=True)
    return root


def _mask(path: Path, box: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((10, 12), np.uint8)
    if box:
        m[2:5, 3:6] = 255
    assert cv2.imwrite(str(path), m)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(w: int, h: int, colour_type: int, rows: list[bytes], extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + extra
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def test_folders_that_macs_windows_and_nas_boxes_add_are_skipped_not_classes_or_images(tmp_path):
    """A zip made on a Mac brings __MACOSX/ (AppleDouble ._ files), a USB stick $RECYCLE.BIN/ and System
    Volume Information/, a Synology NAS an @eaDir/ in every folder holding its JPEG thumbnails. They used
    to fail the import as empty classes, or worse, the NAS's thumbnails were imported as part images."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    (src / "__MACOSX" / "ok").mkdir(parents=True)
    (src / "__MACOSX" / "ok" / "._ok0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (src / "$RECYCLE.BIN").mkdir()
    (src / "System Volume Information").mkdir()
    img(src / "ok" / "@eaDir" / "ok0.png" / "SYNOPHOTO_THUMB_S.jpg", 7)
    img(src / "@eaDir" / "dent" / "SYNOPHOTO_THUMB_M.jpg", 8)
    (src / "ok" / "._ok1.png").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble beside its image
    (src / "ok" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (src / "ok" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    res = import_images(src, tmp_path / "ds")
    assert res["classes"] == ["ok", "dent"] and res["counts"] == {"ok": 20, "dent": 2}
    mv = _mvtec(tmp_path / "mv")
    img(mv / "train" / "good" / "@eaDir" / "000.png" / "SYNOPHOTO_THUMB_S.jpg", 9)
    img(mv / "ground_truth" / "dent" / "@eaDir" / "000_mask.png" / "SYNOPHOTO_THUMB_S.jpg", 9)
    (mv / "test" / "__MACOSX").mkdir()
    assert import_images(mv, tmp_path / "ds2")["counts"] == {"good": 21, "dent": 2}


def test_a_mask_that_contradicts_its_image_is_refused_naming_both(tmp_path):
    """An all-black mask on a defect image would teach a tiled model that the defect's tiles are good; a
    mask with defect pixels on a good image says the opposite of its label; two masks for one image left
    one of them unused. Each used to be imported without a word."""
    src = _mvtec(tmp_path / "a")
    empty = _mask(src / "ground_truth" / "dent" / "000_mask.png", box=False)
    with pytest.raises(DatasetError, match=rf"{empty}: an empty mask \(no defect pixel\) for .*000.png"):
        import_images(src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []
    _mask(empty)  # now it marks the dent
    good_mask = _mask(src / "ground_truth" / "good" / "000_mask.png")
    with pytest.raises(DatasetError, match=rf"{good_mask}: .* defect pixels on a good image"):
        import_images(src, tmp_path / "ds")
    _mask(good_mask, box=False)  # an all-black mask for a good image says nothing wrong: accepted
    assert import_images(src, tmp_path / "ds")["counts"] == {"good": 21, "dent": 2}
    b = _mvtec(tmp_path / "b")
    _mask(b / "ground_truth" / "dent" / "001_mask.png")
    _mask(b / "ground_truth" / "dent" / "001.png")
    with pytest.raises(
        DatasetError, match=r"two masks for .*test/dent/001.png: .*001.png and .*001_mask.png"
    ):
        import_images(b, tmp_path / "ds2")


def test_a_png_with_transparent_pixels_is_refused_an_opaque_alpha_channel_is_not(tmp_path):
    """A part cut out onto a transparent background: the decoder drops the alpha and the model would learn
    whatever colours are stored beneath it, a background the camera never shows. It used to be imported
    silently; now it is refused with the file and how much is transparent. A PNG saved with an alpha
    channel that is opaque everywhere (many tools do) is read as before."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    a = np.zeros((10, 12, 4), np.uint8)
    a[..., :3] = 200
    a[..., 3] = 255
    assert cv2.imwrite(str(src / "ok" / "opaque.png"), a)
    assert import_images(src, tmp_path / "ds")["counts"] == {"ok": 21, "dent": 2}
    a[:5, :, 3] = 0
    cut = src / "ok" / "cut_out.png"
    assert cv2.imwrite(str(cut), a)
    with pytest.raises(DatasetError, match=rf"{cut}: 60 of its 120 pixels are transparent"):
        import_images(src, tmp_path / "ds2")
    cut.unlink()
    pal = src / "dent" / "palette.png"  # a palette PNG whose colour 0 is transparent (tRNS)
    rows = [bytes(k % 3 for k in range(12))] * 10
    pal.write_bytes(_png(12, 10, 3, rows, _chunk(b"PLTE", bytes(range(9))) + _chunk(b"tRNS", b"\x00")))
    with pytest.raises(DatasetError, match=rf"{pal}: 40 of its 120 pixels are transparent"):
        import_images(src, tmp_path / "ds3")
    assert leftovers(tmp_path) == []


def test_a_multi_page_tiff_is_refused_not_cut_to_its_first_page(tmp_path):
    """A TIFF holding several images (a camera's exposure series, a scanned batch) used to become one
    training image, its first page, the others dropped without a word."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    stack = src / "dent" / "series.tif"
    assert cv2.imwritemulti(str(stack), [np.full((10, 12, 3), 40 * k, np.uint8) for k in range(3)])
    with pytest.raises(DatasetError, match=rf"{stack}: a TIFF of 3 pages"):
        import_images(src, tmp_path / "ds")
    stack.unlink()
    assert cv2.imwritemulti(str(stack), [np.full((10, 12, 3), 40, np.uint8)])  # one page: read
    assert import_images(src, tmp_path / "ds")["counts"] == {"ok": 20, "dent": 3}


def test_a_broken_or_looping_link_named_as_an_image_is_refused_not_skipped(tmp_path):
    """``ok/042.png -> /mnt/old/042.png`` (gone) was skipped without a word: a class one image short,
    or 'add 1 more' good images for a folder that shows 20."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    (src / "ok" / "042.png").symlink_to(src / "gone" / "042.png")
    with pytest.raises(DatasetError, match=rf"{src / 'ok' / '042.png'}: a link to .*gone/042.png, which"):
        import_images(src, tmp_path / "ds")
    # one leading out of the source is refused as a link out, whether or not its target is there
    (src / "ok" / "042.png").unlink()
    (src / "ok" / "042.png").symlink_to(tmp_path / "gone" / "042.png")
    with pytest.raises(DatasetError, match=rf"{src / 'ok' / '042.png'}: a link to .*gone/042.png, outside"):
        import_images(src, tmp_path / "ds")
    (src / "ok" / "042.png").unlink()
    (src / "ok" / "043.png").symlink_to(src / "ok" / "043.png")  # a link to itself
    with pytest.raises(DatasetError, match=rf"{src / 'ok' / '043.png'}: a link to .*, which"):
        import_images(src, tmp_path / "ds")
    (src / "ok" / "043.png").unlink()
    img(src / ".elsewhere" / "044.png", 44)  # a hidden folder of the source: not a class
    (src / "ok" / "044.png").symlink_to(src / ".elsewhere" / "044.png")  # a link to an image inside: read
    assert import_images(src, tmp_path / "ds")["counts"] == {"ok": 21, "dent": 2}


def test_a_file_name_with_a_newline_or_bytes_that_are_not_utf8_is_one_line_in_the_error(tmp_path, capsys):
    """The refusal names the file; a name holding a newline used to split the one line in two (and a
    terminal escape in a name would be obeyed). Such characters are shown escaped."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    (src / "ok" / "bad\nname\x1b[2J.png").write_bytes(b"not an image")
    assert cloud_main(["dataset", "import", str(src), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.split("cloud-trainer dataset import: ")[1]  # after the good-class note
    assert err.count("\n") == 1 and err.endswith("\n") and "\x1b" not in err
    assert "ok/bad\\nname\\x1b[2J.png: not a PNG" in err
    (src / "ok" / "bad\nname\x1b[2J.png").unlink()
    Path(os.fsdecode(os.fsencode(src / "ok") + b"/caf\xe9.png")).write_bytes(b"not an image")  # Latin-1
    assert cloud_main(["dataset", "import", str(src), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.split("cloud-trainer dataset import: ")[1]
    assert err.count("\n") == 1 and "ok/caf\\xe9.png: not a PNG" in err


def test_the_dataset_folder_gets_the_usual_permissions_not_the_temporary_folders(tmp_path):
    """The import writes into a temporary folder and renames it: that folder used to keep mkdtemp's
    owner-only mode, so a trainer running as another user (a service account) could not read it."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    old = os.umask(0o022)
    try:
        import_images(src, tmp_path / "ds")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "ds").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o755
    assert len(load_parts(tmp_path / "ds").images) == 22


def test_images_in_no_class_folder_are_refused_not_left_out(tmp_path):
    """Images dropped beside the class folders (or in MVTec's train/ or test/ itself) belong to no class;
    they used to be left out without a word, so the dataset was not the one the user saw."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    stray = img(src / "part_0815.png", 3)
    with pytest.raises(DatasetError, match=rf"{src}: 1 image in no class folder \(part_0815.png\)"):
        import_images(src, tmp_path / "ds")
    stray.unlink()
    (src / "notes.txt").write_text("lamp 3 replaced on 2026-11-02")  # not an image: no harm
    assert import_images(src, tmp_path / "ds")["counts"] == {"ok": 20, "dent": 2}
    mv = _mvtec(tmp_path / "mv")
    img(mv / "test" / "001.png", 4)
    img(mv / "test" / "002.png", 5)
    with pytest.raises(
        DatasetError, match=rf"{mv / 'test'}: 2 images in no class folder \(001.png, 002.png\)"
    ):
        import_images(mv, tmp_path / "ds2")
    assert leftovers(tmp_path) == []


def test_a_class_name_with_a_space_at_either_end_is_refused(tmp_path):
    """'scratch ' (a trailing space, easy to type when renaming a folder) was a class of its own, which a
    config naming 'scratch' would never match, and which prints exactly like 'scratch'."""
    src = per_class(tmp_path / "src", {"ok": 20, "scratch ": 2, "deep scratch": 2})
    with pytest.raises(DatasetError, match=r"class folder 'scratch ' begins or ends with a space"):
        import_images(src, tmp_path / "ds")
    (src / "scratch ").rename(src / "scratch")
    assert import_images(src, tmp_path / "ds")["classes"] == ["ok", "deep scratch", "scratch"]


def test_jfif_files_are_read_and_files_of_other_kinds_are_said_not_silently_left_out(tmp_path):
    """Windows saves JPEGs from a browser as .jfif: they were left out unsaid, as were an iPhone's .heic
    photos, so a class could be smaller than its folder. .jfif and .jpe are JPEG and read; a file of
    another kind is left out and the import says how many, with examples."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    j = src / "dent" / "from_browser.jfif"
    j.write_bytes(cv2.imencode(".jpg", np.full((10, 12, 3), 90, np.uint8))[1].tobytes())
    (src / "ok" / "IMG_0042.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (src / "ok" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")  # the system's own files: not mentioned
    notes: list[str] = []
    assert import_images(src, tmp_path / "ds", log=notes.append)["counts"] == {"ok": 20, "dent": 3}
    said = [n for n in notes if "left out" in n]
    assert len(said) == 1 and "1 file that is not a PNG, JPEG, BMP, TIFF, WebP or PNM image" in said[0]
    assert "ok/IMG_0042.HEIC" in said[0] and "Thumbs.db" not in said[0]


def test_class_folders_differing_only_in_case_are_refused_as_one_name_written_two_ways(tmp_path):
    """'Scratch' and 'scratch' (two people's folders merged on Linux) became two classes; copied to Windows
    or a Mac they are one folder, and a config or an inspector naming one means both."""
    src = per_class(tmp_path / "src", {"ok": 20, "Scratch": 2, "scratch": 2})
    with pytest.raises(
        DatasetError, match=r"class folders '\w+' and '\w+' differ only in upper and lower case"
    ):
        import_images(src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    upper = per_class(tmp_path / "upper", {"OK": 20, "Deep Scratch": 2})  # case kept as the folder has it
    assert import_images(upper, tmp_path / "ds")["classes"] == ["OK", "Deep Scratch"]


def test_a_class_folder_whose_name_is_not_utf8_is_refused_saying_so(tmp_path, capsys):
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    os.rename(src / "dent", os.fsdecode(os.fsencode(src) + b"/d\xe9faut"))  # Latin-1 from an old PC
    assert cloud_main(["dataset", "import", str(src), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert "class folder 'd\\xe9faut' holds a byte that is not UTF-8" in err


def test_a_tiff_with_transparent_pixels_is_refused_like_a_png(tmp_path):
    """A cut-out saved as TIFF (RGB and alpha) lost its alpha unsaid, as a PNG did."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    a = np.zeros((10, 12, 4), np.uint8)
    a[..., :3] = 200
    a[..., 3] = 255
    assert cv2.imwrite(str(src / "ok" / "opaque.tif"), a)  # RGB + an alpha opaque everywhere: read
    assert import_images(src, tmp_path / "ds")["counts"] == {"ok": 21, "dent": 2}
    a[:3, :, 3] = 0
    cut = src / "dent" / "cut_out.tiff"
    assert cv2.imwrite(str(cut), a)
    with pytest.raises(DatasetError, match=rf"{cut}: 36 of its 120 pixels are transparent"):
        import_images(src, tmp_path / "ds2")


def test_a_truncated_png_or_bmp_is_one_line_without_the_decoders_own_messages(tmp_path, capfd):
    """libpng wrote 'libpng error: PNG input buffer is incomplete' and OpenCV a multi-line '[ERROR:0@...]
    can't read data' report to the terminal beside the import's own line about the same file."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    png = cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, (40, 60, 3), np.uint8))[1].tobytes()
    (src / "dent" / "cut.png").write_bytes(png[: len(png) // 2])
    assert cloud_main(["dataset", "import", str(src), "--out", str(tmp_path / "ds"), "--good", "ok"]) == 2
    err = capfd.readouterr().err
    assert err.splitlines() == [
        f"cloud-trainer dataset import: {src / 'dent' / 'cut.png'}: a PNG header for 60x40 pixels, but the "
        "image data is truncated or corrupt; replace or remove it"
    ]
    (src / "dent" / "cut.png").unlink()
    bmp = cv2.imencode(".bmp", np.zeros((40, 60, 3), np.uint8))[1].tobytes()
    (src / "dent" / "cut.bmp").write_bytes(bmp[: len(bmp) // 2])
    assert cloud_main(["dataset", "import", str(src), "--out", str(tmp_path / "ds"), "--good", "ok"]) == 2
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1 and "cut.bmp: a BMP header for 60x40 pixels" in err
    # the agent's own process is not touched: stderr works as before after the import
    os.write(2, b"still here\n")
    assert capfd.readouterr().err == "still here\n"


def test_the_same_image_in_two_classes_is_refused_naming_both_files(tmp_path):
    """A photo copied into ok/ and into scratch/ (a sorting slip) taught the model one image as both a good
    part and a defect; now the import names both files. The same image twice in one class is one image
    (the copy left out: tests/unit/test_dataset_copies_splits_memory.py)."""
    src = per_class(tmp_path / "src", {"ok": 20, "scratch": 2})
    (src / "ok" / "ok1_copy.jpg").write_bytes((src / "ok" / "ok1.jpg").read_bytes())
    assert import_images(src, tmp_path / "ds")["counts"] == {"ok": 20, "scratch": 2}
    (src / "scratch" / "maybe.jpg").write_bytes((src / "ok" / "ok1.jpg").read_bytes())
    with pytest.raises(
        DatasetError,
        match=r"scratch/maybe.jpg \('scratch'\) is the same image as .*ok/ok1.jpg \('ok'\), byte for byte",
    ):
        import_images(src, tmp_path / "ds2")
    assert not (tmp_path / "ds2").exists() and leftovers(tmp_path) == []


def test_a_dataset_folder_inside_its_source_or_given_as_the_source_is_refused(tmp_path):
    """`import photos --out photos/dataset` worked once; the next import of photos took dataset/ for a class
    holding every image. A dataset folder given as the source was read as classes 'images' and 'masks'."""
    src = per_class(tmp_path / "src", {"ok": 20, "scratch": 2})
    with pytest.raises(DatasetError, match=rf"--out {src / 'ds'} is inside the source {src}"):
        import_images(src, src / "ds")
    assert not (src / "ds").exists() and leftovers(src) == []
    import_images(src, tmp_path / "ds")
    with pytest.raises(DatasetError, match=rf"{tmp_path / 'ds'}: already a dataset .*build --dataset"):
        import_images(tmp_path / "ds", tmp_path / "ds2")


def test_a_subfolder_that_cannot_be_listed_is_refused_not_skipped(tmp_path, monkeypatch):
    """A day's folder the importing user may not read (a NAS share's permissions) was skipped by the walk
    without a word: the class came out smaller than the user's folder. (Root reads every folder, so the
    listing is refused here the way the file system refuses it to another user.)"""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    for i in range(3):
        img(src / "ok" / "day2" / f"{i}.png", 40 + i)
    locked = src / "ok" / "day2"

    def refusing(real):
        def listing(path="."):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        return listing

    monkeypatch.setattr(os, "scandir", refusing(os.scandir))
    monkeypatch.setattr(os, "listdir", refusing(os.listdir))
    with pytest.raises(DatasetError, match=rf"{locked}: cannot be listed \(Permission denied\)"):
        import_images(src, tmp_path / "ds")
    assert leftovers(tmp_path) == []
    locked = src  # the source itself: one line, not a traceback
    with pytest.raises(DatasetError, match=rf"{src}: cannot be listed \(Permission denied\)"):
        import_images(src, tmp_path / "ds")


def test_other_folders_beside_an_mvtec_layout_are_said_to_be_left_out(tmp_path):
    """MVTec AD 2 adds validation/ and test_public/ beside train/: their images were left out without a
    word. The import reads the MVTec AD layout it documents and now says which folders it did not read."""
    mv = _mvtec(tmp_path / "mv")
    for i in range(3):
        img(mv / "validation" / "good" / f"{i:03d}.png", 80 + i)
    (mv / "__MACOSX").mkdir()  # a system folder: not mentioned
    notes: list[str] = []
    assert import_images(mv, tmp_path / "ds", log=notes.append)["counts"] == {"good": 21, "dent": 2}
    said = [n for n in notes if "validation" in n]
    assert len(said) == 1 and "not read" in said[0] and "3 images" in said[0] and "__MACOSX" not in said[0]


def test_a_symlinked_folder_inside_a_class_is_said_not_followed(tmp_path):
    """ok/day3 -> /mnt/archive/day3: not followed (a link could loop back), and its images used to be missing
    from the class without a word; the import now says which links it did not follow."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    for i in range(4):
        img(tmp_path / "archive" / "day3" / f"{i}.png", 70 + i)
    (src / "ok" / "day3").symlink_to(tmp_path / "archive" / "day3", target_is_directory=True)
    notes: list[str] = []
    assert import_images(src, tmp_path / "ds", log=notes.append)["counts"] == {"ok": 20, "dent": 2}
    said = [n for n in notes if "not followed" in n]
    assert len(said) == 1 and "ok/day3" in said[0] and "archive/day3" in said[0]


def test_a_tiff_whose_first_image_is_a_preview_is_refused_not_read_as_the_part(tmp_path):
    """A TIFF that opens with a reduced-resolution copy (a preview; NewSubfileType 1) and holds the image
    after it: the decoder reads the first directory, so a 5x4 preview was imported as the part's image."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    ok, buf = cv2.imencodemulti(
        ".tif", [np.full((4, 5, 3), 10, np.uint8), np.full((40, 50, 3), 200, np.uint8)]
    )
    data = bytearray(buf.tobytes())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        if struct.unpack_from("<H", data, ifd + 2 + 12 * k)[0] == 254:  # NewSubfileType: 1, a preview
            struct.pack_into("<HHII", data, ifd + 2 + 12 * k, 254, 4, 1, 1)
    preview = src / "dent" / "with_preview.tif"
    preview.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=rf"{preview}: its first image is a reduced-resolution copy"):
        import_images(src, tmp_path / "ds")


def test_a_jpeg_cut_short_and_closed_with_an_end_marker_is_refused_not_imported_grey(tmp_path, capfd):
    """libjpeg only warns of a JPEG whose coded data runs out (a camera's buffer overflowed, a copy cut
    short, then closed with an end marker): OpenCV decoded it with its lower half flat grey, and that image
    was imported as a part of its class. It is refused with its path, as the camera source skips it."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    y, x = np.mgrid[0:120, 0:160]
    part = np.dstack([(x * 1.5) % 256, (y * 2) % 256, (x + y) % 256]).astype(np.uint8)
    whole = cv2.imencode(".jpg", part, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    cut = whole[: len(whole) // 2] + b"\xff\xd9"
    assert cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR) is not None  # decodes, grey-filled
    (src / "dent" / "whole.jpg").write_bytes(whole)
    assert cloud_main(["dataset", "import", str(src), "--out", str(tmp_path / "ok"), "--good", "ok"]) == 0
    capfd.readouterr()
    (src / "dent" / "cut.jpg").write_bytes(cut)
    assert cloud_main(["dataset", "import", str(src), "--out", str(tmp_path / "ds"), "--good", "ok"]) == 2
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert f"{src / 'dent' / 'cut.jpg'}: a JPEG whose coded data runs out before its last blocks" in err
    assert "replace or remove it" in err and not (tmp_path / "ds").exists()


def test_an_extensionless_webp_or_bmp_is_named_as_an_image_by_content_in_an_mvtec_layout(tmp_path):
    """A camera's WebP or BMP saved without an extension (or under one of no image kind) was named among
    text files as 'not a PNG, JPEG, BMP, TIFF or WebP image by its name': the user was not told it is an
    image, nor how to import it. It is named apart with its kind and the extension to give it; a text that
    happens to begin with 'BM' stays a file of another kind."""
    src = _mvtec(tmp_path / "bottle")
    frame = np.random.default_rng(7).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    (src / "train" / "good" / "cam1_0042").write_bytes(cv2.imencode(".webp", frame)[1].tobytes())
    (src / "test" / "dent" / "cam2_0007.raw").write_bytes(cv2.imencode(".bmp", frame)[1].tobytes())
    (src / "train" / "good" / "BMW.txt").write_text("BMW line 3 parts, camera 2, shift B\n")
    notes: list[str] = []
    res = import_images(src, tmp_path / "ds", log=notes.append)
    assert res["counts"] == {"good": 21, "dent": 2}
    said = "\n".join(notes)
    assert (
        "left out 2 files that are images by content but not by name (no extension, or another): "
        "'test/dent/cam2_0007.raw' (BMP), 'train/good/cam1_0042' (WebP); give each its extension "
        "(.bmp for BMP, .webp for WebP) to import them"
    ) in said
    assert (
        "left out 1 file that is not a PNG, JPEG, BMP, TIFF, WebP or PNM image by its name: train/good/BMW.txt"
        in said
    )


def test_an_image_of_another_kind_than_its_extension_is_read_as_what_it_is_and_said(tmp_path):
    """A JPEG saved under .png (a PNG under .webp) was read by its content, as the agent's camera reads it,
    but copied into the dataset under the name it had, without a word: a lossy JPEG passed for a lossless
    PNG. It is read as before, stored under its kind's extension, and named in one note."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    frame = np.random.default_rng(8).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
    (src / "dent" / "export.png").write_bytes(jpeg)
    (src / "ok" / "shot.webp").write_bytes(cv2.imencode(".png", frame[::-1].copy())[1].tobytes())
    notes: list[str] = []
    res = import_images(src, tmp_path / "ds", log=notes.append)
    assert res["counts"] == {"ok": 21, "dent": 3}
    said = [n for n in notes if "another kind" in n]
    assert said == [
        "dataset import: 2 images are of another kind than their extensions say, read and stored as what they are: "
        "dent/export.png (a JPEG), ok/shot.webp (a PNG); rename them to match if other tools read your folder"
    ]
    rows = {r["source"]: r["file"] for r in map(json.loads, (tmp_path / "ds" / "labels.jsonl").open())}
    assert rows["dent/export.png"].endswith(".jpg") and rows["ok/shot.webp"].endswith(".png")
    assert (tmp_path / "ds" / rows["dent/export.png"]).read_bytes() == jpeg  # copied unchanged
    ds = load_parts(tmp_path / "ds")
    assert len(ds.images) == 24


def _os2_bmp(a: np.ndarray) -> bytes:
    """A 24-bit BMP under the 12-byte OS/2 core header (ImageMagick's ``bmp2:``), rows bottom-up."""
    h, w = a.shape[:2]
    pad = b"\0" * (-w * 3 % 4)
    pixels = b"".join(a[y].tobytes() + pad for y in range(h - 1, -1, -1))
    return (
        b"BM"
        + struct.pack("<IHHI", 26 + len(pixels), 0, 0, 26)
        + struct.pack("<IHHHH", 12, w, h, 1, 24)
        + pixels
    )


def test_one_photo_as_png_in_one_class_and_as_an_os2_bmp_in_another_is_refused_as_in_both(tmp_path):
    """OpenCV's any-colour read calls a 24-bit OS/2 BMP grey: the import judged a grey image that training (a
    colour read) never sees, so the same photo saved as PNG under ok/ and as such a BMP under scratch/ was not
    found in both classes, and the model learnt one part as good and as a defect."""
    src = per_class(tmp_path / "src", {"ok": 20, "scratch": 2})
    photo = cv2.imread(str(src / "ok" / "ok2.bmp"), cv2.IMREAD_COLOR)  # a colour one (ok0, ok3: grey)
    (src / "scratch" / "photo.bmp").write_bytes(_os2_bmp(photo))
    assert cv2.imdecode(np.frombuffer(_os2_bmp(photo), np.uint8), cv2.IMREAD_COLOR).tolist() == photo.tolist()
    with pytest.raises(
        DatasetError, match=r"scratch/photo.bmp \('scratch'\) is the same image as .*ok/ok2.bmp"
    ):
        import_images(src, tmp_path / "ds")
