"""`cloud-trainer dataset import` on folders laid out as users bring them rather than as the docs draw them: the
MVTec AD archive's folder of categories given whole, and one class folder written two ways (`ok/` beside `OK/`).
Each is refused with the line that names what is wrong, never imported as a dataset other than the one the user
has. Images made here with OpenCV, the import run through the CLI as a user runs it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud_trainer.cli import main as cloud_main


def part(seed: int, defect: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = (120 + rng.integers(0, 30, (40, 40, 3))).astype(np.uint8)
    cv2.circle(img, (20, 20), 12, (200, 180, 160), -1)
    if defect:
        cv2.line(img, (2, 2), (37, 37), (20, 20, 20), 2)
    return img


def mvtec_category(root: Path, seed: int) -> Path:
    """One MVTec AD category: train/good, test/good, test/scratch and its masks."""
    k = seed
    for split, label, n in (("train", "good", 20), ("test", "good", 3), ("test", "scratch", 3)):
        (root / split / label).mkdir(parents=True)
        for i in range(n):
            assert cv2.imwrite(str(root / split / label / f"{i:03d}.png"), part(k, label != "good"))
            if label != "good":
                (root / "ground_truth" / label).mkdir(parents=True, exist_ok=True)
                mask = np.zeros((40, 40), np.uint8)
                cv2.line(mask, (2, 2), (37, 37), 255, 2)
                mask[0, k % 40] = 255  # each mask its own bytes
                assert cv2.imwrite(str(root / "ground_truth" / label / f"{i:03d}_mask.png"), mask)
            k += 1
    return root


def run_import(capsys, *argv: str) -> tuple[int, str]:
    code = cloud_main(["dataset", "import", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("good", [None, "bottle"])
def test_a_folder_of_mvtec_categories_is_refused_naming_the_category_to_import(tmp_path, capsys, good):
    # the MVTec AD archive unpacks to mvtec/bottle/, mvtec/screw/, ...: read as a folder per class, each category
    # was one class of all its images, test defects and ground-truth masks among them (with --good bottle, a
    # "good" class holding scratches and masks), and the import said nothing
    src = tmp_path / "mvtec"
    mvtec_category(src / "bottle", 0)
    mvtec_category(src / "screw", 1000)
    out = tmp_path / "ds"
    code, said = run_import(capsys, str(src), "--out", str(out), *(["--good", good] if good else []))
    assert code != 0 and not out.exists()
    assert (
        f"{src / 'bottle'}: class folder 'bottle' is itself an MVTec AD folder (train/good, test/<class>); "
        f"{src} is a folder of such folders, not a folder per class: import one of them "
        f"(cloud-trainer dataset import {src / 'bottle'} --out DIR)"
    ) in said
    # as it says: the category on its own imports as the MVTec AD layout, masks as masks
    code, said = run_import(capsys, str(src / "bottle"), "--out", str(out))
    assert code == 0, said
    assert '"layout": "mvtec"' in said and '"counts": {"good": 23, "scratch": 3}' in said
    assert len(list((out / "masks").iterdir())) == 3


def test_a_class_written_two_ways_is_said_so_before_the_good_class_is_looked_for(tmp_path, capsys):
    # ok/ from one camera PC, OK/ from another: the refusal was "cannot tell which class is good among ['OK',
    # 'ok', 'scratch']; name it with --good", and with --good ok the user was then told the real problem
    src = tmp_path / "photos"
    for label, n, seed in (("ok", 20, 0), ("OK", 5, 100), ("scratch", 3, 200)):
        (src / label).mkdir(parents=True)
        for i in range(n):
            assert cv2.imwrite(str(src / label / f"{label}{i}.png"), part(seed + i, label == "scratch"))
    for good in ([], ["--good", "ok"]):
        code, said = run_import(capsys, str(src), "--out", str(tmp_path / "ds"), *good)
        assert code != 0 and not (tmp_path / "ds").exists()
        assert "cannot tell which class is good" not in said
        assert (
            f"{src}: class folders 'OK' and 'ok' differ only in upper and lower case: one name written two ways "
            "(copied to Windows or a Mac they are one folder); merge them into one"
        ) in said


def test_a_mask_transparent_over_white_is_refused_and_one_transparent_over_black_is_read(tmp_path, capsys):
    # a labelling tool's overlay export: the defect drawn red, the background transparent; OpenCV's grey read
    # drops the alpha, so what lies beneath the transparent pixels is the mask. White beneath: every background
    # pixel was imported as a defect pixel (the whole image one defect), and nothing was said
    from cloud_trainer.train.anomaly import AnomalyDataError, read_mask

    src = mvtec_category(tmp_path / "bottle", 0)
    mask_file = src / "ground_truth" / "scratch" / "001_mask.png"
    marked = cv2.imread(str(mask_file), cv2.IMREAD_GRAYSCALE) > 0

    def overlay(beneath: int) -> None:
        rgba = np.full((40, 40, 4), beneath, np.uint8)
        rgba[..., 3] = 0
        rgba[marked] = (0, 0, 255, 255)
        assert cv2.imwrite(str(mask_file), rgba)

    overlay(255)
    out = tmp_path / "ds"
    code, said = run_import(capsys, str(src), "--out", str(out))
    assert code != 0 and not out.exists()
    clear = 40 * 40 - int(marked.sum())
    assert (
        f"{mask_file}: {clear} of its 1600 pixels are transparent but not black beneath; a mask is read as grey "
        "without its alpha, so they would count as defect pixels: save the mask without transparency, 0 (black) "
        "for good pixels and 255 for the defect's"
    ) in said
    with pytest.raises(
        AnomalyDataError, match="transparent but not black beneath"
    ):  # the anomaly family alike
        read_mask(mask_file)

    overlay(0)  # black beneath: read the same with or without the alpha, imported
    code, said = run_import(capsys, str(src), "--out", str(out))
    assert code == 0, said
    stored = [
        cv2.imread(str(m), cv2.IMREAD_GRAYSCALE) > 0 for m in sorted((out / "masks").iterdir())
    ]  # the masks of test/scratch/000-002 in order
    assert np.array_equal(stored[1], marked)
    assert np.array_equal(read_mask(mask_file) > 0, marked)
