"""`cloud-trainer build anomaly --dataset DIR` on a user's own folder read directly (not through `dataset import`),
and `build --roi` on an imported one: what either got wrong without a word. A copy of an image (in train/good and
test/good, or twice in good/) was trained on and scored as unseen at once; `good/` beside `scratch/` and `dent/`
trained on good/ and left the defect folders unread; `ground_truth/Scratch/` beside `test/scratch/` (a folder made
on Windows) said its masks had no image; a --roi larger than a dataset's images was refused as a camera's frame,
or a tiled model's image named by its number only. Images made here with OpenCV (PNG and JPEG), the commands run
through the CLI or the functions it calls, builds kept tiny."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_trainer.cli import main as cloud_main
from cloud_trainer.train import anomaly as A
from tests.support.models import make_keypair

SIDE = 40


def part(seed: int, defect: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (120 + rng.integers(0, 30, (SIDE, SIDE, 3))).astype(np.uint8)
    cv2.circle(img, (SIDE // 2, SIDE // 2), SIDE // 4, (200, 180, 160), -1)
    if defect:
        cv2.line(img, (2, 2), (SIDE - 3, SIDE - 3), (20, 20, 20), 2)
    return img


def write(folder: Path, n: int, seed: int, defect: bool = False, ext: str = ".png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:03d}{ext}" for i in range(n)]
    for i, p in enumerate(paths):
        assert cv2.imwrite(str(p), part(seed + i, defect))
    return paths


def mask(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    m = np.zeros((SIDE, SIDE), np.uint8)
    cv2.line(m, (2, 2), (SIDE - 3, SIDE - 3), 255, 2)
    assert cv2.imwrite(str(folder / name), m)


def build_anomaly(tmp_path: Path, capsys, dataset: Path, *more: str) -> tuple[int, str]:
    key, _ = make_keypair(tmp_path / "keys")
    code = cloud_main(
        [
            "build",
            "anomaly",
            "--dataset",
            str(dataset),
            "--registry",
            str(tmp_path / "reg"),
            "--key",
            str(key),
            "--work",
            str(tmp_path / "work"),
            *more,
        ]
    )
    out = capsys.readouterr()
    return code, out.out + out.err


def test_copies_across_train_and_test_or_within_good_are_left_out_and_said(tmp_path):
    # train/good/000.jpg copied into test/good and once more into train/good: read directly, each copy sat in the
    # bank and in the test (or in two of the threshold's folds) at once, scored as unseen while the bank held it
    root = tmp_path / "bottle"
    train = write(root / "train" / "good", 20, 0, ext=".jpg")
    write(root / "test" / "good", 2, 100)
    write(root / "test" / "scratch", 2, 200, defect=True)
    shutil.copy(train[0], root / "test" / "good" / "copy.jpg")
    shutil.copy(train[3], root / "train" / "good" / "again.jpg")
    ds = A.load_good(root, size=32)
    assert ds.n_good == 20 and len(ds.good_names) == 20 and "again.jpg" not in ds.good_names
    assert len(ds.test) == 4 and ds.test_kind == ["good", "good", "scratch", "scratch"]
    assert ds.copies == (
        "left out 2 images with the same pixels as another image of their class (a copy would sit in training and "
        "in the gate's test at once and make its figures look better than the model is): "
        "train/good/again.jpg = train/good/003.jpg, test/good/copy.jpg = train/good/000.jpg"
    )
    # too few good images once the copies are left out: said with them
    shutil.copy(train[5], root / "train" / "good" / "more.jpg")
    (root / "train" / "good" / "004.jpg").unlink()
    (root / "train" / "good" / "006.jpg").unlink()
    with pytest.raises(A.AnomalyDataError) as e:
        A.load_good(root, size=32)
    assert str(e.value).startswith(
        f"{root / 'train' / 'good'}: 18 good image(s) once copies are left out (left out 3 images with the same "
        "pixels as another image of their class"
    ) and str(e.value).endswith(
        "the anomaly family needs at least 20 (more is better: 200 measured in docs/trainer.md)"
    )


def test_one_image_in_good_and_in_a_defect_folder_is_refused_in_one_line(tmp_path, capsys):
    root = tmp_path / "bottle"
    train = write(root / "train" / "good", 20, 0)
    write(root / "test" / "good", 2, 100)
    write(root / "test" / "scratch", 2, 200, defect=True)
    shutil.copy(train[7], root / "test" / "scratch" / "009.png")
    code, said = build_anomaly(tmp_path, capsys, root)
    assert code == 2 and said.count("\n") == 1, said
    assert said == (
        f"cloud-trainer build anomaly: dataset error: {root / 'test' / 'scratch' / '009.png'} ('scratch') is the same "
        f"image as {train[7]} ('good'), byte for byte; keep it in its one class\n"
    )
    assert not (tmp_path / "reg" / "part-anomaly").exists()


def test_defect_folders_beside_good_are_the_tests_defect_images(tmp_path, capsys):
    # good/, scratch/, dent/ (a folder per class, as a line keeps it): only good/ was read, the model published
    # without a test set and nothing said the defect folders were unread
    root = tmp_path / "line2"
    write(root / "good", 22, 0, ext=".jpg")
    write(root / "scratch", 3, 200, defect=True)
    write(root / "dent", 2, 300, defect=True)
    # read as `dataset import --task anomaly` then `build` read it: the defect folders are the test's defect
    # images, and as that test holds no good image a seeded share of good/ is kept out of training for it
    ds = A.load_good(root, size=32)
    assert ds.layout == "folders" and ds.n_good == 20 and ds.held_out == 2
    assert ds.test_kind == ["dent"] * 2 + ["scratch"] * 3 + ["good"] * 2
    assert ds.test_ng.tolist() == [True] * 5 + [False] * 2 and len(ds.test) == 7
    # an MVTec AD folder whose test/ holds defect images only keeps good ones out alike (as its import does)
    mv = tmp_path / "mv"
    shutil.copytree(root / "good", mv / "train" / "good")
    shutil.copytree(root / "scratch", mv / "test" / "scratch")
    ds = A.load_good(mv, size=32)
    assert ds.n_good == 20 and ds.held_out == 2 and ds.test_kind == ["scratch"] * 3 + ["good"] * 2
    # what cannot be read so is refused in one line each, naming it
    (root / "scratch" / "000.png").rename(root / "loose.png")
    code, out = build_anomaly(tmp_path / "b", capsys, root)
    assert code == 2 and out.count("\n") == 1, out
    assert (
        f"dataset error: {root}: 1 image beside good/ in no class folder (loose.png); move it into good/ or a "
        f"defect's folder, or out of {root}\n"
    ) in out
    (root / "loose.png").unlink()
    (root / "bent").mkdir()
    code, out = build_anomaly(tmp_path / "c", capsys, root)
    assert (
        code == 2
        and (
            f"dataset error: {root / 'bent'}: class folder 'bent' beside good/ holds no images; its images are read as "
            "the test's defect images: add them, or remove the folder\n"
        )
        in out
    )
    (root / "bent").rmdir()
    mask(root / "ground_truth", "001_mask.png")
    code, out = build_anomaly(tmp_path / "d", capsys, root)
    assert (
        code == 2
        and f"dataset error: {root / 'ground_truth'}: masks beside good/ and its defect folders" in out
    )


def test_masks_in_a_folder_named_in_another_case_are_said_so(tmp_path, capsys):
    root = tmp_path / "bottle"
    write(root / "train" / "good", 20, 0)
    write(root / "test" / "good", 2, 100)
    write(root / "test" / "scratch", 2, 200, defect=True)
    for i in range(2):
        mask(root / "ground_truth" / "Scratch", f"{i:03d}_mask.png")
    line = (
        f"{root / 'ground_truth' / 'Scratch'}: its masks' images would lie in test/Scratch, but that folder is "
        "test/scratch (the names differ in case only: one folder on Windows, two here), so no mask is matched to "
        "its image; rename it ground_truth/scratch\n"
    )
    code, said = build_anomaly(tmp_path, capsys, root)
    assert code == 2 and said == f"cloud-trainer build anomaly: dataset error: {line}", said
    # `dataset import` says it alike (it said "a mask without an image (expected .../test/Scratch/000.png ...)")
    code = cloud_main(["dataset", "import", str(root), "--out", str(tmp_path / "ds")])
    said = capsys.readouterr().err
    assert code == 2 and said == f"cloud-trainer dataset import: {line}", said
    assert not (tmp_path / "ds").exists()
    # renamed as it says, the masks are read
    (root / "ground_truth" / "Scratch").rename(root / "ground_truth" / "scratch")
    ds = A.load_good(root, size=32)
    assert [m is not None for m in ds.test_masks] == [False, False, True, True]


@pytest.mark.parametrize("tiles", [[], ["--tiles", "2x2"]])
def test_a_roi_larger_than_the_datasets_images_names_the_image_and_the_roi(tmp_path, capsys, tiles):
    # said as of a camera ("reaches outside the 40x40 frame; fix the camera's resolution"), and of a tiled
    # model's image by its number only ("image 000000: ...")
    src = tmp_path / "photos"
    write(src / "ok", 20, 0)
    write(src / "scratch", 2, 200, defect=True)
    ds = tmp_path / "ds"
    assert cloud_main(["dataset", "import", str(src), "--out", str(ds)]) == 0
    capsys.readouterr()
    code = cloud_main(
        ["train", "vision", "--dataset", str(ds), "--work", str(tmp_path / "w"), "--size", "16"]
        + ["--roi", "8,4,60,30", *tiles]
    )
    said = capsys.readouterr().err
    assert code == 2 and said.count("\n") == 1, said
    assert (
        f"dataset error: {ds / 'images' / '000000.png'} (ok, imported from ok/000.png): the model's roi [x=8, y=4, "
        "width=60, height=30] reaches outside the 40x40 frame of this dataset image (--roi 8,4,60,30 needs one of "
        "at least 68x34 pixels); give a --roi that every image of the dataset holds, or remove the images of "
        "another size\n"
    ) in said
