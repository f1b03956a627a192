"""`cloud-trainer dataset import`: a folder per class and the MVTec AD layout become a dataset that
training reads, with class names from the data; every bad input is refused with its own message and
leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from cloud_trainer.cli import main as cloud_main
from cloud_trainer.train.data import DatasetError, load_parts
from cloud_trainer.train.images import import_images


def img(path: Path, seed: int = 0, grey: bool = False, size=(12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (size[1], size[0]) if grey else (size[1], size[0], 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), a)
    return path


def per_class(root: Path, classes: dict[str, int], exts=(".png", ".jpg", ".bmp", ".tif")) -> Path:
    k = 0
    for c, n in classes.items():
        for i in range(n):
            img(root / c / f"{c}{i}{exts[k % len(exts)]}", k, grey=k % 3 == 0, size=(12 + k % 5, 10))
            k += 1
    return root


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_folder_per_class_any_names_any_format(tmp_path):
    src = per_class(tmp_path / "src", {"pass": 20, "burr": 3, "chipped_edge": 2})
    out = tmp_path / "ds"
    notes: list[str] = []
    res = import_images(src, out, log=notes.append)
    assert res["classes"] == ["pass", "burr", "chipped_edge"] and res["good"] == "pass"
    assert any("good class: 'pass'" in n for n in notes)  # inferred from its name, and said
    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    assert meta["classes"][0] == "pass" and meta["counts"] == {"pass": 20, "burr": 3, "chipped_edge": 2}
    ds = load_parts(out)
    assert ds.classes == ["pass", "burr", "chipped_edge"] and ds.digest == meta["digest"]
    assert len(ds.images) == 25 and all(
        im.ndim == 3 and im.shape[2] == 3 for im in ds.images
    )  # grey read as BGR
    assert sorted(np.bincount(ds.labels).tolist()) == [2, 3, 20]


def test_good_class_named_explicitly(tmp_path):
    src = per_class(tmp_path / "src", {"accepted": 20, "flash": 2})
    with pytest.raises(
        DatasetError,
        match=r"cannot tell which class is good among \['accepted', 'flash'\]; "
        "name it with --good",
    ):
        import_images(src, tmp_path / "a")
    assert import_images(src, tmp_path / "b", good="accepted")["classes"] == ["accepted", "flash"]


def test_mvtec_layout_with_masks(tmp_path):
    src = tmp_path / "bottle"
    for i in range(20):
        img(src / "train" / "good" / f"{i:03d}.png", i)
    img(src / "test" / "good" / "000.png", 50)
    for i in range(2):
        img(src / "test" / "broken_large" / f"{i:03d}.png", 60 + i)
        m = np.zeros((10, 12), np.uint8)
        m[2:5, 3:6] = 255
        (src / "ground_truth" / "broken_large").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(src / "ground_truth" / "broken_large" / f"{i:03d}_mask.png"), m)
    res = import_images(src, tmp_path / "ds")
    assert res["layout"] == "mvtec" and res["classes"] == ["good", "broken_large"]
    ds = load_parts(tmp_path / "ds", masks=True)
    defect = [m for m, y in zip(ds.masks, ds.labels, strict=True) if y == 1]
    assert len(defect) == 2 and all(m is not None and m.max() == 255 for m in defect)
    rows = (tmp_path / "ds" / "labels.jsonl").read_text().splitlines()
    assert sum('"split": "train"' in r for r in rows) == 20 and sum('"split": "test"' in r for r in rows) == 3


def mvtec_dents(src: Path, size: tuple[int, int], mask: bytes, ext: str = ".png") -> Path:
    """An MVTec AD folder of 20 good training images and two dents of ``size`` (width, height), each dent's mask
    file ``mask``'s bytes."""
    for i in range(20):
        img(src / "train" / "good" / f"{i:03d}.png", i, size=size)
    (src / "ground_truth" / "dent").mkdir(parents=True)
    for i in range(2):
        img(src / "test" / "dent" / f"{i:03d}.png", 60 + i, size=size)
        (src / "ground_truth" / "dent" / f"{i:03d}_mask{ext}").write_bytes(mask)
    return src


def _mvtec_with_colour_masks(src: Path, red_rows: int = 3, dim: tuple[int, int] = (0, 0)) -> Path:
    """An MVTec folder of 20 good training images, a good test image with a dim colour mask, and two dents whose
    colour masks mark ``red_rows`` rows of 3 pixels from row 2 in red (0, 0, 200) in BGR, and ``dim`` (first row,
    rows) in (0, 0, 1): a class-index mask's defect, grey 0, or beside the red rows the faint edge of an
    anti-aliased brush."""
    for i in range(20):
        img(src / "train" / "good" / f"{i:03d}.png", i)
    img(src / "test" / "good" / "000.png", 50)
    (src / "ground_truth" / "good").mkdir(parents=True)
    faint = np.zeros((10, 12, 3), np.uint8)
    faint[2:5, 3:6] = (0, 0, 1)
    assert cv2.imwrite(str(src / "ground_truth" / "good" / "000_mask.png"), faint)
    (src / "ground_truth" / "dent").mkdir(parents=True)
    for i in range(2):
        img(src / "test" / "dent" / f"{i:03d}.png", 60 + i)
        m = np.zeros((10, 12, 3), np.uint8)
        m[2 : 2 + red_rows, 3:6] = (0, 0, 200)
        m[dim[0] : dim[0] + dim[1], 3:6] = (0, 0, 1)
        assert cv2.imwrite(str(src / "ground_truth" / "dent" / f"{i:03d}_mask.png"), m)
    return src


@pytest.mark.parametrize(
    ("red_rows", "dim", "refused"),
    [
        (0, (2, 3), "its 9 marked pixels are all 0 once read as grey, as masks are read"),
        # some only, a region apart from the red one: imported, and trained, with 9 defect pixels of the 12 drawn
        (3, (7, 1), "3 of its 12 marked pixels are 0 once read as grey, as masks are read"),
        # the faint edge of the red region, as an anti-aliased brush draws it (a red or blue brush's faintest
        # pixels read 0 in grey): the region stays, it imports (it was refused for its edge's pixels)
        (3, (5, 1), None),
        (3, (0, 0), None),
    ],
    ids=["dim", "partly-dim", "faint-edge", "red"],
)
def test_a_colour_mask_is_judged_by_the_grey_pixels_training_reads(tmp_path, red_rows, dim, refused):
    """A class-index mask saved in colour, its defect (0, 0, 1) in BGR, was counted as marked in colour at import
    and read by training as grey: 0, an empty mask on a defect image, whose tiles a tiled model learns as good.
    One whose marked pixels vanish in grey only in part, a region of them beyond one pixel of those that stay, is
    refused too (it imported with fewer defect pixels than drawn). A red overlay's pixels stay marked in grey and
    import, its anti-aliased edge too; a good image's dim colour mask reads
    empty, as a good image's mask is: it imports (it was refused as marking its pixels too dark to count as a
    defect)."""
    src = _mvtec_with_colour_masks(tmp_path / "bottle", red_rows, dim)
    if refused:
        with pytest.raises(DatasetError, match=rf"dent/000_mask.png: {refused}"):
            import_images(src, tmp_path / "ds")
        assert not (tmp_path / "ds").exists()
        return
    import_images(src, tmp_path / "ds")
    masks = [m for m in load_parts(tmp_path / "ds", masks=True).masks if m is not None]
    assert sorted(np.count_nonzero(m) for m in masks) == [0, 9, 9]  # the good image's, the two dents'


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "masks"


@pytest.mark.parametrize(
    "mask", ["feathered_blue.png", "feathered_red.png", "around-a-dot", "beside-a-bright-class"]
)
def test_a_feathered_colour_mask_imports_and_a_region_lost_around_a_bright_dot_does_not(tmp_path, mask):
    """A soft brush's or a feathered selection's edge fades to black: its last pixels read 0 in grey, a band
    several pixels wide around the stroke (ImageMagick's blur of a blue stroke at sigma 8: 8316 of 16525 marked
    pixels; its PNG's gamma chunk has libpng read blue up to 40 as grey 0). Such masks were refused as too dark
    (ImageMagick's from a 1-px feather, the same re-encoded by OpenCV from 2 px). A region of
    (0, 0, 1), a class index, that merely touches a bright dot is no fade: still refused; nor is one of one colour
    drawn against a bright class of its size (it imported as good, the bright class alone as the defect)."""
    m = np.zeros((160, 200, 3), np.uint8)
    if mask == "around-a-dot":
        m[10:150, 10:190] = (0, 0, 1)
        m[78:82, 98:102] = (0, 0, 255)
    elif mask == "beside-a-bright-class":
        m[50:80, 20:50] = (0, 0, 1)
        m[50:80, 50:80] = (0, 0, 255)
    # the tool's file, as it wrote it
    drawn = (FIXTURES / mask).read_bytes() if mask.endswith(".png") else cv2.imencode(".png", m)[1].tobytes()
    src = mvtec_dents(tmp_path / "bottle", (200, 160), drawn)
    if not mask.endswith(".png"):
        lost = {"around-a-dot": "25164 of its 25200", "beside-a-bright-class": "870 of its 1800"}[mask]
        with pytest.raises(DatasetError, match=rf"000_mask.png: {lost} marked pixels are 0 once read"):
            import_images(src, tmp_path / "ds")
        return
    import_images(src, tmp_path / "ds")
    drawn = np.count_nonzero(cv2.imread(str(FIXTURES / mask), cv2.IMREAD_GRAYSCALE))
    masks = [x for x in load_parts(tmp_path / "ds", masks=True).masks if x is not None]
    assert [np.count_nonzero(x) for x in masks] == [drawn] * 2 and drawn > 5000


def test_the_dataset_digest_covers_the_masks(tmp_path):
    """A mask changed after `train` (a tiled model learns its tiles' labels from it) gave the same digest, so
    `build` took the dataset as the one trained on. The import records the digest training computes, whether
    or not training reads the masks."""
    out = tmp_path / "ds"
    import_images(_mvtec_with_colour_masks(tmp_path / "bottle"), out)
    recorded = yaml.safe_load((out / "dataset.yaml").read_text())["digest"]
    assert load_parts(out).digest == load_parts(out, masks=True).digest == recorded
    mask = next((out / "masks").iterdir())
    m = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    m[0, 0] = 255
    assert cv2.imwrite(str(mask), m)
    assert load_parts(out).digest == load_parts(out, masks=True).digest != recorded


def test_the_anomaly_familys_digest_covers_the_masks(tmp_path):
    """The anomaly family judges its pixel metrics by the test masks, and its digest (the package's provenance)
    left them out. An imported dataset's is the digest `dataset import` recorded; an MVTec AD folder's changes
    with a mask."""
    from cloud_trainer.train.anomaly import AnomalyDataError, load_good

    src, out = _mvtec_with_colour_masks(tmp_path / "bottle"), tmp_path / "ds"
    import_images(src, out)
    recorded = yaml.safe_load((out / "dataset.yaml").read_text())["digest"]
    before = load_good(src).digest
    assert load_good(out).digest == recorded
    for mask in (next((out / "masks").iterdir()), src / "ground_truth" / "dent" / "001_mask.png"):
        m = cv2.imread(str(mask), cv2.IMREAD_COLOR)
        m[0, 0] = 255
        assert cv2.imwrite(str(mask), m)
    assert load_good(out).digest != recorded and load_good(src).digest != before
    # a row whose mask is gone is refused, as training refuses it (its heat map went unscored without a word)
    mask = next((out / "masks").iterdir())
    mask.unlink()
    with pytest.raises(
        AnomalyDataError, match=rf"labels.jsonl:\d+: mask masks/{mask.name} is missing; fix or drop"
    ):
        load_good(out)


def test_a_class_the_dataset_names_without_an_image_is_refused_naming_it(tmp_path):
    """dataset.yaml's classes became the model's outputs: one no image has was trained on nothing, an output
    that answered at random on every part."""
    out = tmp_path / "ds"
    import_images(per_class(tmp_path / "src", {"pass": 20, "burr": 3}), out)
    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    meta["classes"] = [*meta["classes"], "chipped_edge", "crack"]
    (out / "dataset.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(DatasetError) as ei:
        load_parts(out)
    assert str(ei.value) == (
        f"{out}: dataset.yaml names class 'chipped_edge', which no image in labels.jsonl has (nor 'crack'): the "
        "model would get an output for it that no image trained; add its images, or remove it from the classes"
    )


def _jpeg_turned_by_exif(path: Path, seed: int, orientation: int = 6) -> None:
    """A 40x20 JPEG whose EXIF orientation (6: turn 90 degrees clockwise) makes it a 20x40 portrait, as a
    phone or some cameras write it; viewers and labelling tools show the portrait. Another orientation than 5-8
    (3: upside down) is given a 20x40 JPEG, the same portrait as shown."""
    import struct

    shape = (20, 40, 3) if orientation > 4 else (40, 20, 3)
    a = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    j = cv2.imencode(".jpg", a)[1].tobytes()
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(j[:2] + b"\xff\xe1" + struct.pack(">H", 8 + len(tiff)) + b"Exif\x00\x00" + tiff + j[2:])


def test_exif_orientation_is_applied_on_import_as_in_training_and_at_the_agent(tmp_path):
    """A mask drawn on the portrait the user sees fits the image on import and in training alike (the
    import used to check it against the unturned pixels, which training and the agent never see). The images
    with a mask that their orientation turns where its size cannot tell are named, to be checked: a mask drawn
    on the stored pixels by a tool that ignores the tag fits a square image, or one turned by 180 degrees, as
    well, and imported unsaid; one of a portrait turned by 90 degrees would be refused by its size, so those are
    not named (every one was, a phone's portraits all said to be checked)."""
    src = tmp_path / "part"
    for i in range(20):
        _jpeg_turned_by_exif(src / "train" / "good" / f"{i:03d}.jpg", i)
    _jpeg_turned_by_exif(src / "test" / "good" / "000.jpg", 50)
    m = np.zeros((40, 20), np.uint8)  # the portrait's size: 20 wide, 40 high
    m[5:9, 3:7] = 255
    (src / "ground_truth" / "dent").mkdir(parents=True)
    for i in range(3):
        _jpeg_turned_by_exif(src / "test" / "dent" / f"{i:03d}.jpg", 60 + i, 3 if i == 2 else 6)
        assert cv2.imwrite(str(src / "ground_truth" / "dent" / f"{i:03d}_mask.png"), m)
    said: list[str] = []
    import_images(src, tmp_path / "ds", log=said.append)
    assert [s for s in said if "EXIF orientation" in s] == [
        "dataset import: 1 image with a mask is turned or mirrored by its EXIF orientation "
        "(test/dent/002.jpg (3)): each mask is read as drawn on the image as viewers show "
        "it, as training and the agent's folder camera turn the image; a mask drawn on the stored pixels, by a "
        "tool that ignores the orientation, does not fit: check them over the image as a viewer shows it (a "
        "misplaced one: turn it as the tag turns the image, or remove the tag)"
    ]
    assert yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())["image_sizes"] == ["20x40"]
    ds = load_parts(tmp_path / "ds", masks=True)
    assert {im.shape for im in ds.images} == {(40, 20, 3)}
    assert [mm.shape for mm in ds.masks if mm is not None] == [(40, 20)] * 3


def test_a_class_kept_in_dated_subfolders_is_read_whole_and_hidden_or_looping_folders_are_not(tmp_path):
    """A factory's archive keeps each class by day, camera or shift (ok/2026-11-01/*.png): the class is
    every image below its folder (before, 'holds no images'), except hidden folders; a symlinked folder
    is not followed, so a link back up cannot loop."""
    src = tmp_path / "src"
    for i in range(20):
        img(src / "ok" / f"2026-11-{1 + i % 3:02d}" / "cam1" / f"{i}.png", i)
    for i in range(3):
        img(src / "burr" / "shift-b" / f"{i}.jpg", 100 + i)
    img(src / "burr" / "direct.png", 200)
    img(src / "ok" / ".thumbs" / "t.png", 300)  # a viewer's cache: not a training image
    (src / "ok" / "2026-11-01" / "loop").symlink_to(src, target_is_directory=True)
    res = import_images(src, tmp_path / "ds")
    assert res["counts"] == {"ok": 20, "burr": 4}
    (src / "dent" / "day1").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"class folder 'dent' holds no images .* in it or its subfolders"):
        import_images(src, tmp_path / "ds2")


def test_a_symlinked_class_folder_is_refused_naming_it_not_made_a_class_of_every_image(tmp_path):
    """A link back to the dataset's root (src/all -> src) used to become an extra defect class holding
    every image; a symlinked class folder is refused, naming it, and nothing is written."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    (src / "all").symlink_to(src, target_is_directory=True)
    with pytest.raises(DatasetError, match=rf"{src / 'all'}: a symlinked folder .*not followed"):
        import_images(src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []
    mv = tmp_path / "mv"  # the same in the MVTec layout: test/<defect> as a link
    for i in range(20):
        img(mv / "train" / "good" / f"{i:03d}.png", i)
    (mv / "test").mkdir()
    (mv / "test" / "dent").symlink_to(src / "dent", target_is_directory=True)
    with pytest.raises(DatasetError, match=rf"{mv / 'test' / 'dent'}: a symlinked folder"):
        import_images(mv, tmp_path / "ds2")


def test_mvtec_images_in_subfolders_are_read_with_their_masks_at_the_same_place(tmp_path):
    """MVTec AD folders kept by day (test/dent/day2/*.png, train/good/day2/*.png) used to lose those
    images without a word; they are read, as in the folder-per-class layout, and a mask below
    ground_truth at the same place belongs to its image."""
    src = tmp_path / "mv"
    for i in range(18):
        img(src / "train" / "good" / f"{i:03d}.png", i)
    for i in range(18, 22):
        img(src / "train" / "good" / "day2" / f"{i:03d}.png", i)
    img(src / "test" / "good" / "000.png", 50)
    img(src / "test" / "dent" / "000.png", 60)
    img(src / "test" / "dent" / "day2" / "000.png", 61)  # the same name one level down: its own image
    img(src / "test" / "dent" / "day2" / "001.png", 62)
    m = np.zeros((10, 12), np.uint8)
    m[2:5, 3:6] = 255
    (src / "ground_truth" / "dent" / "day2").mkdir(parents=True)
    assert cv2.imwrite(str(src / "ground_truth" / "dent" / "day2" / "001_mask.png"), m)
    res = import_images(src, tmp_path / "ds")
    assert res["counts"] == {"good": 23, "dent": 3}
    rows = [yaml.safe_load(r) for r in (tmp_path / "ds" / "labels.jsonl").read_text().splitlines()]
    masked = [r["source"] for r in rows if "mask" in r]
    assert masked == ["test/dent/day2/001.png"]
    orphan = img(src / "ground_truth" / "dent" / "day3" / "000_mask.png", 3, grey=True)
    with pytest.raises(DatasetError, match=rf"{orphan}: a mask without an image .*test/dent/day3/000.png"):
        import_images(src, tmp_path / "ds2")


def test_empty_class_folder_is_refused(tmp_path):
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    (src / "crack").mkdir()
    with pytest.raises(DatasetError, match=r"crack: class folder 'crack' holds no images"):
        import_images(src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_unreadable_image_names_its_path_and_nothing_is_written(tmp_path):
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    bad = src / "dent" / "truncated.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match=rf"{bad}: not a PNG, JPEG, BMP, TIFF, WebP or PNM image"):
        import_images(src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []


def test_mask_without_an_image_is_refused(tmp_path):
    src = tmp_path / "mv"
    for i in range(20):
        img(src / "train" / "good" / f"{i:03d}.png", i)
    img(src / "test" / "crack" / "000.png", 1)
    img(src / "test" / "crack" / "001.png", 2)
    orphan = img(src / "ground_truth" / "crack" / "007_mask.png", 3, grey=True)
    with pytest.raises(DatasetError, match=rf"{orphan}: a mask without an image"):
        import_images(src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_a_single_class_is_refused_for_a_classifier(tmp_path):
    src = per_class(tmp_path / "src", {"ok": 25})
    with pytest.raises(
        DatasetError,
        match=r"a single class \['ok'\]; a classifier needs the good class and at "
        "least one defect class",
    ):
        import_images(src, tmp_path / "ds")
    assert import_images(src, tmp_path / "ds2", task="anomaly")["classes"] == [
        "ok"
    ]  # good-only is fine there


def test_too_few_good_images_says_how_many_are_needed(tmp_path):
    src = per_class(tmp_path / "src", {"ok": 7, "scratch": 4})
    with pytest.raises(DatasetError, match=r"7 good images \('ok'\); at least 20 are needed \(add 13 more\)"):
        import_images(src, tmp_path / "ds")


def test_an_existing_dataset_is_never_overwritten(tmp_path):
    src = per_class(tmp_path / "src", {"ok": 20, "scratch": 2})
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="exists and is not empty; choose a new dataset folder"):
        import_images(src, tmp_path / "ds")
    assert (tmp_path / "ds" / "keep.txt").read_text() == "mine"


def test_cli_imports_and_reports_bad_input_in_one_line(tmp_path, capsys):
    src = per_class(tmp_path / "src", {"good": 20, "scratch": 2})
    assert cloud_main(["dataset", "import", str(src), "--out", str(tmp_path / "ds")]) == 0
    assert '"classes": ["good", "scratch"]' in capsys.readouterr().out
    assert (
        cloud_main(["dataset", "import", "--out", str(tmp_path / "ds2"), str(tmp_path / "src" / "scratch")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cloud-trainer dataset import:" in err[0] and "no class folders" in err[0]
    (tmp_path / "nothing").mkdir()
    assert cloud_main(["dataset", "import", str(tmp_path / "nothing"), "--out", str(tmp_path / "ds3")]) == 2
    assert "cannot tell what to import (no images found); name it with --kind" in capsys.readouterr().err


def test_cli_dispatches_the_fleet_kind_to_the_fleet_export(tmp_path, capsys):
    (tmp_path / "cloud").mkdir()
    assert (
        cloud_main(
            ["dataset", "import", "--kind", "fleet", str(tmp_path / "cloud"), "--out", str(tmp_path / "ds")]
        )
        == 2
    )
    assert f"{tmp_path / 'cloud'}: no fleet store (fleet.db)" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_an_image_declaring_a_huge_size_is_refused_undecoded_and_the_limit_travels(tmp_path):
    from tests.support.image_bombs import png_declaring

    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    bomb = src / "dent" / "bomb.png"
    bomb.write_bytes(png_declaring(40000, 40000))  # ~100 bytes claiming 1.6 Gpx
    with pytest.raises(DatasetError) as e:
        import_images(src, tmp_path / "ds")
    msg = str(e.value)
    assert f"{bomb}: its PNG header declares 40000x40000 pixels (1600.0 Mpx), over the 25-Mpx limit" in msg
    assert "--max-megapixels" in msg
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []
    bomb.unlink()
    # the limit is the user's (a line-scan camera's images may be larger) and is recorded with the
    # dataset, so that training reads the files under the same limit
    assert cloud_main(["dataset", "import", "--kind", "images", str(src), "--out", str(tmp_path / "ds"),
                       "--max-megapixels", "0.0002"]) == 0  # fmt: skip
    meta = yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())
    assert meta["max_megapixels"] == 0.0002
    assert len(load_parts(tmp_path / "ds").images) == 22
    meta["max_megapixels"] = 0.0001  # 12x10 px and larger now over it
    (tmp_path / "ds" / "dataset.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(
        DatasetError, match=r"\(labels.jsonl line 1\): its .* header declares .* over the 0.0001-Mpx"
    ):
        load_parts(tmp_path / "ds")
    # a file far larger than any image under the limit is refused by its size, before it is read
    (src / "dent" / "huge.png").write_bytes(bytes(1_100_000))
    with pytest.raises(DatasetError, match=r"huge.png: 1100000 bytes, more than an image of the 0.0002-Mpx"):
        import_images(src, tmp_path / "ds3", max_megapixels=0.0002)
    with pytest.raises(DatasetError, match="--max-megapixels must be a positive number"):
        import_images(src, tmp_path / "ds2", max_megapixels=0)


def test_a_machine_vision_cameras_16_bit_images_are_refused_by_name_or_brought_to_8_bits(tmp_path):
    """A Mono12 camera's images in 16-bit PNG (at most 4095): OpenCV's colour read divides by 256 and
    they come out black. The import refuses them naming --pixel-bits; with it they are stored as 8-bit
    PNG, the top 8 of the 12 bits, as the agent's camera reads them with the same pixel_bits."""
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2})
    rng = np.random.default_rng(3)
    twelve = rng.integers(0, 4096, (10, 12), dtype=np.uint16)
    assert cv2.imwrite(str(src / "dent" / "mono12.png"), twelve)
    with pytest.raises(DatasetError) as e:
        import_images(src, tmp_path / "ds")
    assert (
        f"{src / 'dent' / 'mono12.png'}: 16-bit pixels (the brightest here {twelve.max()}): say how many bits carry the image with --pixel-bits"
        in str(e.value)
    )
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []
    assert cloud_main(["dataset", "import", "--kind", "images", str(src), "--out", str(tmp_path / "ds"),
                       "--pixel-bits", "12"]) == 0  # fmt: skip
    ds = load_parts(tmp_path / "ds")
    meta = yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())
    assert meta["pixel_bits"] == 12 and len(ds.images) == 23
    stored = [ln for ln in (tmp_path / "ds" / "labels.jsonl").read_text().splitlines() if "mono12" in ln]
    row = yaml.safe_load(stored[0])
    back = cv2.imread(str(tmp_path / "ds" / row["file"]), cv2.IMREAD_UNCHANGED)
    assert row["file"].endswith(".png") and back.dtype == np.uint8
    np.testing.assert_array_equal(back, (twelve >> 4).astype(np.uint8))
    with pytest.raises(DatasetError, match="--pixel-bits must be 8 to 16"):
        import_images(src, tmp_path / "ds2", pixel_bits=20)
    # the anomaly family reading a folder directly refuses it too, pointing at the import
    from cloud_trainer.train.anomaly import AnomalyDataError, read_image

    with pytest.raises(AnomalyDataError, match="mono12.png: 16-bit pixels .* dataset import --pixel-bits"):
        read_image(src / "dent" / "mono12.png")


def test_class_names_from_folders_are_labels_a_config_can_name(tmp_path):
    """A class name is the label that configs and results name. A folder made on macOS writes "défaut" with
    a separate accent (Unicode's decomposed form): taken as it is, a label typed in a config looked the
    same and never matched; it is stored composed, and two folders that differ only so are one class
    written two ways. A name with a newline broke every line that names it. A folder name as long as the
    file system allows (255 bytes) ended the import with a traceback: the stored file names held it."""
    import unicodedata

    nfd, nfc = unicodedata.normalize("NFD", "défaut"), "défaut"
    src = per_class(tmp_path / "src", {"ok": 20, nfd: 2, "擦" * 82: 2})
    res = import_images(src, tmp_path / "a", good="ok")
    assert res["classes"] == ["ok", nfc, "擦" * 82]
    assert load_parts(tmp_path / "a").classes == ["ok", nfc, "擦" * 82]
    # --good typed composed names the decomposed folder
    src2 = per_class(tmp_path / "src2", {nfd: 20, "dent": 2})
    assert import_images(src2, tmp_path / "b", good=nfc)["good"] == nfc
    twice = per_class(tmp_path / "twice", {"ok": 20, nfd: 2, nfc: 2})
    with pytest.raises(DatasetError, match="one name written two ways"):
        import_images(twice, tmp_path / "c")
    newline = per_class(tmp_path / "newline", {"ok": 20, "scr\natch": 2})
    with pytest.raises(DatasetError, match=r"class folder 'scr\\natch' holds a control character"):
        import_images(newline, tmp_path / "d")
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_a_defect_class_named_good_is_scored_as_defects_by_the_anomaly_family(tmp_path):
    """With `--good ok`, a defect folder called "good" is a defect class: the import marks it so, and the
    anomaly family's reader counted its images as good parts in its held-out evaluation."""
    from cloud_trainer.train.anomaly import load_good

    src = per_class(tmp_path / "src", {"ok": 20, "good": 3, "dent": 3})
    import_images(src, tmp_path / "ds", good="ok", task="anomaly")
    ds = load_good(tmp_path / "ds", min_good=20)
    assert (
        sorted(zip(ds.test_kind, ds.test_ng.tolist(), strict=True))
        == [("dent", True)] * 3 + [("good", True)] * 3
    )


def test_an_image_file_of_megabytes_of_metadata_is_noted_kept_as_it_is(tmp_path):
    """A 12x10 JPEG carrying 2 MB of EXIF segments (or any file far larger than its pixels need) was imported
    without a word, kept byte for byte in the dataset and read at every build: one line names it now."""
    import struct

    src = per_class(tmp_path / "src", {"pass": 20, "burr": 3})
    jpg = (src / "burr" / "burr1.jpg").read_bytes()
    seg = (
        b"\xff\xe1" + struct.pack(">H", 65535) + b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + bytes(65519)
    )
    (src / "burr" / "burr1.jpg").write_bytes(jpg[:2] + seg * 32 + jpg[2:])  # 2.1 MB for 120 pixels
    notes: list[str] = []
    import_images(src, tmp_path / "ds", log=notes.append)
    (line,) = [n for n in notes if "far larger than" in n]
    assert "1 image file far larger than its pixels need: burr/burr1.jpg 2.1 MB for 13x10" in line, line
    assert "save it again without its metadata" in line
    assert len([p for p in (tmp_path / "ds" / "images").iterdir() if p.stat().st_size > 2_000_000]) == 1
