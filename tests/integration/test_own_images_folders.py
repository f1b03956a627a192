"""`cloud-trainer dataset import` on folders laid out as users bring them rather than as the docs draw them: the
MVTec AD archive's folder of categories given whole, and one class folder written two ways (`ok/` beside `OK/`).
Each is refused with the line that names what is wrong, never imported as a dataset other than the one the user
has. Images made here with OpenCV, the import run through the CLI as a user runs it."""

from __future__ import annotations

import struct
import zlib
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

    # a grey mask whose tRNS grey makes its white background transparent (its defect black), read without alpha:
    # every background pixel was 255, a defect pixel; made transparent black instead, it reads as it shows
    from tests.unit.test_image_readers_agree import _png

    for key in (255, 0):
        grey = np.where(marked, 255 - key, key).astype(np.uint8)
        ihdr = struct.pack(">IIBBBBB", 40, 40, 8, 0, 0, 0, 0)
        idat = zlib.compress(b"".join(b"\0" + row.tobytes() for row in grey))
        keyed = _png([(b"IHDR", ihdr), (b"tRNS", struct.pack(">H", key)), (b"IDAT", idat), (b"IEND", b"")])
        mask_file.write_bytes(keyed)
        if key:
            with pytest.raises(
                AnomalyDataError, match=f"{clear} of its 1600 pixels are transparent but not black"
            ):
                read_mask(mask_file)
        else:
            assert np.array_equal(read_mask(mask_file) > 0, marked)

    overlay(0)  # black beneath: read the same with or without the alpha, imported
    code, said = run_import(capsys, str(src), "--out", str(out))
    assert code == 0, said
    stored = [
        cv2.imread(str(m), cv2.IMREAD_GRAYSCALE) > 0 for m in sorted((out / "masks").iterdir())
    ]  # the masks of test/scratch/000-002 in order
    assert np.array_equal(stored[1], marked)
    assert np.array_equal(read_mask(mask_file) > 0, marked)


def test_the_anomaly_family_given_a_folder_refuses_images_in_its_subfolders_it_would_not_read(tmp_path):
    # `build anomaly --dataset my-part` reads the images lying in the folder (or in train/good, test/<defect>)
    # itself; a camera PC's archive kept by day (my-part/day2/*.png) was left unread without a word, the model
    # trained on fewer images than given, and a folder of day folders only was "0 good image(s)"
    from cloud_trainer.train.anomaly import AnomalyDataError, load_good

    good = tmp_path / "my-part"
    (good / "day2").mkdir(parents=True)
    for i in range(22):
        assert cv2.imwrite(str(good / f"{i:03d}.png"), part(i))
    for i in range(3):
        assert cv2.imwrite(str(good / "day2" / f"{i:03d}.png"), part(100 + i))
    with pytest.raises(AnomalyDataError) as refused:
        load_good(good)
    assert str(refused.value) == (
        f"{good / 'day2'}: 3 images in a subfolder, which the anomaly family does not read (it reads the images "
        f"lying in {good} itself): move them into {good} to use them, or out of it"
    )
    # what a copy adds is no subfolder of images: a Synology NAS's thumbnails, a hidden folder, a Mac's zip
    for i in range(3):
        (good / "day2" / f"{i:03d}.png").rename(good / f"d2-{i:03d}.png")
    (good / "day2").rmdir()
    for junk in ("@eaDir/000.png", ".thumbs/000.png", "__MACOSX/._000.png"):
        (good / junk).parent.mkdir()
        (good / junk).write_bytes((good / "000.png").read_bytes())
    assert len(load_good(good).good_names) == 25

    # a link out in a subfolder is said as one, whether or not anything is where it leads (another tenant's tree
    # on a shared trainer), never counted as an image of the subfolder
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "there.png").write_bytes((good / "000.png").read_bytes())
    (good / "day3").mkdir()
    said = []
    for target in ("there.png", "nothing.png"):
        (good / "day3" / "x.png").unlink(missing_ok=True)
        (good / "day3" / "x.png").symlink_to(tmp_path / "elsewhere" / target)
        with pytest.raises(AnomalyDataError) as refused:
            load_good(good)
        said.append(str(refused.value).replace(target, "T"))
    assert said[0] == said[1] and "outside the folder" in said[0], said
    (good / "day3" / "x.png").unlink()
    (good / "day3").rmdir()

    # an MVTec AD folder's test/<defect>/ alike: its subfolders' defects were never scored
    mv = tmp_path / "mvtec"
    mvtec_category(mv, 0)
    assert len(load_good(mv).test_kind) == 6
    (mv / "test" / "scratch" / "day2").mkdir()
    (mv / "test" / "scratch" / "002.png").rename(mv / "test" / "scratch" / "day2" / "002.png")
    with pytest.raises(
        AnomalyDataError, match=r"test/scratch/day2: 1 image in a subfolder, which the anomaly"
    ):
        load_good(mv)


@pytest.mark.parametrize("name", ["{}_mask.PNG", "{}.png", "{}_mask.bmp"])
def test_the_anomaly_family_reads_an_mvtec_folders_masks_as_the_import_finds_them(tmp_path, name):
    # only <name>_mask.png was looked for: a mask saved as .PNG (a Windows tool), named as its image (which
    # `dataset import` takes) or saved in another kind was left out without a word, and the heat map unscored
    from cloud_trainer.train.anomaly import AnomalyDataError, load_good

    mv = mvtec_category(tmp_path / "bottle", 0)
    gt = mv / "ground_truth" / "scratch"
    drawn = {}
    for i in range(3):
        m = cv2.imread(str(gt / f"{i:03d}_mask.png"), cv2.IMREAD_GRAYSCALE)
        (gt / f"{i:03d}_mask.png").unlink()
        assert cv2.imwrite(str(gt / name.format(f"{i:03d}").lower()), m)
        (gt / name.format(f"{i:03d}").lower()).rename(gt / name.format(f"{i:03d}"))
        drawn[i] = m
    (
        mv / "ground_truth" / "good"
    ).mkdir()  # an all-black mask for a good image: taken, as the import takes it
    assert cv2.imwrite(str(mv / "ground_truth" / "good" / "000_mask.png"), np.zeros((40, 40), np.uint8))
    ds = load_good(mv)
    read = [m for m, k in zip(ds.test_masks, ds.test_kind, strict=True) if k == "scratch"]
    assert all(m is not None for m in read) and all(np.array_equal(read[i], drawn[i]) for i in range(3))

    # a mask of another size than its image was stretched to the map: refused, as the import refuses it
    wrong = gt / name.format("001")
    assert cv2.imwrite(str(wrong.with_name("x" + wrong.name.lower())), np.full((20, 30), 255, np.uint8))
    wrong.with_name("x" + wrong.name.lower()).replace(wrong)
    with pytest.raises(AnomalyDataError) as refused:
        load_good(mv)
    assert str(refused.value) == (
        f"{wrong}: mask is 30x20, its image {mv / 'test' / 'scratch' / '001.png'} is 40x40; they must be the same size"
    )


def test_an_empty_mask_for_a_defect_image_is_refused_by_the_anomaly_family_as_by_the_import(tmp_path, capsys):
    # a labelling tool's all-black mask for a defect it was never drawn on: `dataset import` refuses it, while
    # `build anomaly --dataset` reading the MVTec AD folder directly scored the image's heat map against a mask
    # with no defect pixel, a miss counted in map_hit_rate for every such image (1 of 3 here: 0.67 where the map
    # found each defect), without a word
    from cloud_trainer.train.anomaly import AnomalyDataError, load_good

    mv = mvtec_category(tmp_path / "bottle", 0)
    empty = mv / "ground_truth" / "scratch" / "001_mask.png"
    assert cv2.imwrite(str(empty), np.zeros((40, 40), np.uint8))
    code, said = run_import(capsys, str(mv), "--out", str(tmp_path / "ds"))
    assert code == 2 and f"{empty}: an empty mask (no defect pixel)" in said
    with pytest.raises(AnomalyDataError) as refused:
        load_good(mv)
    assert str(refused.value) == (
        f"{empty}: an empty mask (no defect pixel) for {mv / 'test' / 'scratch' / '001.png'}, a 'scratch' image; "
        "its heat map would be scored against no defect, a miss counted in map_hit_rate: mark the defect's "
        "pixels, or remove the mask"
    )
    empty.unlink()  # no mask: the image is scored, its heat map not
    ds = load_good(mv)
    assert [m is None for m, k in zip(ds.test_masks, ds.test_kind, strict=True) if k == "scratch"] == [
        False,
        True,
        False,
    ]


def test_masks_saved_as_jpeg_are_imported_with_a_line_counting_the_faint_pixels_their_noise_adds(
    tmp_path, capsys
):
    # a mask is 0 for good pixels and anything else for defect: a JPEG's ringing around a drawn scratch more than
    # doubled its defect pixels, and the import said nothing (the docs' advice to save masks as PNG aside)
    src = mvtec_category(tmp_path / "bottle", 0)
    code, said = run_import(capsys, str(src), "--out", str(tmp_path / "png"))
    assert code == 0 and "saved as JPEG" not in said
    gt = src / "ground_truth" / "scratch"
    faint = marked = 0
    for i in range(3):
        m = cv2.imread(str(gt / f"{i:03d}_mask.png"), cv2.IMREAD_GRAYSCALE)
        (gt / f"{i:03d}_mask.png").unlink()
        assert cv2.imwrite(str(gt / f"{i:03d}_mask.jpg"), m)
        back = cv2.imread(str(gt / f"{i:03d}_mask.jpg"), cv2.IMREAD_GRAYSCALE)
        faint += int(((back > 0) & (back < 128)).sum())
        marked += int((back >= 128).sum())
    assert faint > 0
    code, said = run_import(capsys, str(src), "--out", str(tmp_path / "jpeg"))
    assert code == 0, said  # read, as before: the mask is the user's
    assert (
        "dataset import: 3 masks saved as JPEG (ground_truth/scratch/000_mask.jpg, ground_truth/scratch/001_mask.jpg, "
        f"ground_truth/scratch/002_mask.jpg) hold {faint:,} faint pixels (1-127) beside {marked:,} marked ones "
        "(128-255): JPEG's noise around a defect, each counted as a defect pixel; save masks as PNG to keep the "
        "defect as drawn"
    ) in said


def test_a_build_whose_roi_an_image_cannot_hold_names_that_image_and_the_file_it_came_from(tmp_path, capsys):
    # a 1-pixel export among the line's 40x40 frames (the import says it is far from the others' size, and keeps
    # it): `build --roi` refused "the model's roi ... reaches outside the 1x1 frame", naming no image
    src = tmp_path / "photos"
    for label, n, seed in (("ok", 20, 0), ("scratch", 3, 200)):
        (src / label).mkdir(parents=True)
        for i in range(n):
            assert cv2.imwrite(str(src / label / f"{label}{i:02d}.png"), part(seed + i, label == "scratch"))
    assert cv2.imwrite(str(src / "ok" / "export.png"), part(99)[:1, :1])
    ds = tmp_path / "ds"
    code, said = run_import(capsys, str(src), "--out", str(ds))
    assert code == 0 and "ok/export.png 1x1" in said
    row = next(r for r in (ds / "labels.jsonl").read_text().splitlines() if '"ok/export.png"' in r)
    stored = row.split('"file": "')[1].split('"')[0]
    code = cloud_main(
        [
            "train",
            "vision",
            "--dataset",
            str(ds),
            "--work",
            str(tmp_path / "w"),
            "--size",
            "16",
            "--roi",
            "4,4,30,30",
        ]
    )
    said = capsys.readouterr().err
    assert code != 0
    assert (
        f"{ds / stored} (ok, imported from ok/export.png): the model's roi [x=4, y=4, width=30, height=30] reaches "
        "outside the 1x1 frame"
    ) in said


def folder_per_class(root: Path, n_good: int, n_defect: int = 3) -> Path:
    for label, n, seed in (("ok", n_good, 0), ("scratch", n_defect, 200)):
        (root / label).mkdir(parents=True)
        for i in range(n):
            assert cv2.imwrite(str(root / label / f"{label}{i:02d}.png"), part(seed + i, label == "scratch"))
    return root


def test_the_anomaly_family_keeps_good_images_out_of_training_to_test_a_folder_per_class_dataset(
    tmp_path, capsys
):
    # a folder per class has no test split: every good image trained and the test set held the defects only, so
    # the gate's AUROC (good against defect scores) was nan and every build failed "image_auroc nan < floor 0.9"
    from cloud_trainer.train.anomaly import load_good

    ds = tmp_path / "ds"
    code, said = run_import(capsys, str(folder_per_class(tmp_path / "photos", 24)), "--out", str(ds))
    assert code == 0, said
    data = load_good(ds)
    assert data.held_out == 4 and data.n_good == 20  # 15 %, seeded; as many as the family needs still train
    assert sorted(data.test_kind) == ["good"] * 4 + ["scratch"] * 3
    assert sorted(load_good(ds).good_names) == sorted(data.good_names)  # the same ones every time
    held = [t for t, k in zip(data.test, data.test_kind, strict=True) if k == "good"]
    assert not any(np.array_equal(t, g) for t in held for g in data.good)  # never trained on


def test_an_anomaly_gate_that_cannot_measure_auroc_says_what_the_test_set_lacks(tmp_path, capsys):
    # 20 good images: none can be kept out, and the gate said "image_auroc nan < floor 0.9"
    ds = tmp_path / "ds"
    code, said = run_import(capsys, str(folder_per_class(tmp_path / "photos", 20)), "--out", str(ds))
    assert code == 0, said
    code = cloud_main(
        ["build", "anomaly", "--dataset", str(ds), "--work", str(tmp_path / "w"), "--size", "16"]
        + ["--registry", str(tmp_path / "reg"), "--no-openvino"]
    )
    said = capsys.readouterr().err
    assert code != 0 and "nan" not in said
    assert (
        "image_auroc not measured (floor 0.9): the test set holds 0 good and 3 defect images, and AUROC compares "
        "the scores of both: add test images of both"
    ) in said


def test_an_anomaly_model_is_exported_by_the_torchscript_exporter_its_file_checked_on_test_images(
    tmp_path, capsys, monkeypatch
):
    # the export check ran ONNX Runtime on the file and PyTorch on the model for the first two training images,
    # whose patches the bank holds at distance ~0: outputs so small that the two runtimes' FP32 rounding passed
    # the check's bounds, and the build went on to the dynamo exporter (~9 s more CPU) for a file giving the
    # same outputs, bit for bit. On two test images (never in the bank) the TorchScript exporter's file passes
    import torch

    exporters: list[str] = []  # each torch.onnx.export the build ran, by exporter
    export = torch.onnx.export

    def recorded(*args, **kwargs):
        exporters.append("dynamo" if kwargs.get("dynamo") else "torchscript")
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", recorded)
    ds = tmp_path / "ds"
    code, said = run_import(capsys, str(folder_per_class(tmp_path / "photos", 20)), "--out", str(ds))
    assert code == 0, said
    cloud_main(  # its gate fails (test_an_anomaly_gate_that_cannot_measure_auroc...), after the export
        ["build", "anomaly", "--dataset", str(ds), "--work", str(tmp_path / "w"), "--size", "16"]
        + ["--registry", str(tmp_path / "reg"), "--no-openvino"]
    )
    assert exporters == ["torchscript"], exporters


def test_the_good_images_kept_out_for_the_anomaly_test_leave_the_twenty_that_train(tmp_path, capsys):
    from cloud_trainer.train.anomaly import load_good

    ds = tmp_path / "ds"
    code, said = run_import(capsys, str(folder_per_class(tmp_path / "photos", 22)), "--out", str(ds))
    assert code == 0, said
    data = load_good(ds)
    assert (data.held_out, data.n_good) == (2, 20)  # 15 % of 22 is 3, which would leave 19


def test_images_that_look_like_masks_in_a_folder_per_class_are_imported_with_a_line_naming_them(
    tmp_path, capsys
):
    # scratch/masks/*_mask.png beside the scratch photos: a folder per class reads no masks, and the drawings were
    # imported as scratch images without a word, a defect class learnt partly from black-and-white masks
    src = folder_per_class(tmp_path / "photos", 20)
    code, said = run_import(capsys, str(src), "--out", str(tmp_path / "plain"))
    assert code == 0 and "look like masks" not in said
    (src / "scratch" / "masks").mkdir()
    for i in range(3):
        m = np.zeros((40, 40), np.uint8)
        cv2.line(m, (2, 2), (37, 37), 255, 2)
        m[0, i] = 255
        assert cv2.imwrite(str(src / "scratch" / "masks" / f"scratch{i:02d}_mask.png"), m)
    code, said = run_import(capsys, str(src), "--out", str(tmp_path / "ds"))
    assert code == 0 and '"scratch": 6' in said  # imported as they are: the names may be the user's own
    assert (
        "dataset import: 3 images that look like masks (scratch/masks/scratch00_mask.png, "
        "scratch/masks/scratch01_mask.png, scratch/masks/scratch02_mask.png) imported as part images of their "
        "class: a folder per class reads no masks; give masks in the MVTec AD layout (test/<defect>/NAME.png with "
        "ground_truth/<defect>/NAME_mask.png), or remove them"
    ) in said


def test_the_packagers_input_images_skip_the_folders_a_nas_or_windows_copy_adds_as_the_import_does(tmp_path):
    # `model-packager build --input-images DIR` read a Synology NAS's @eaDir/ (a small JPEG thumbnail of every
    # image) and a Windows drive's $RECYCLE.BIN/ into the training inputs' statistics the agent's UNSURE check
    # compares frames with; `dataset import` skips them
    from cloud_trainer.train.images import SYSTEM_FOLDERS
    from model_packager import image_folder

    photos = tmp_path / "photos"
    (photos / "day1").mkdir(parents=True)
    for i in range(4):
        assert cv2.imwrite(str(photos / "day1" / f"{i}.PNG"), part(i))
    for junk in (
        "@eaDir/0.PNG/SYNOPHOTO_THUMB_M.jpg",
        "day1/@eaDir/1.PNG/SYNOPHOTO_THUMB_S.jpg",
        "$RECYCLE.BIN/$RABC123.png",
        "#recycle/old.png",
        "System Volume Information/x.jpg",
    ):
        (photos / junk).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(photos / junk), part(99)[:8, :8])
    read = image_folder.ImageFolder(photos)
    assert [p.relative_to(photos).as_posix() for p in read.paths] == [f"day1/{i}.PNG" for i in range(4)]
    assert all(img.shape == (40, 40, 3) for img in read)
    assert image_folder.SYSTEM_FOLDERS == SYSTEM_FOLDERS  # one list, kept in two packages


def test_a_folder_per_class_given_to_the_anomaly_family_is_told_to_import_it(tmp_path, capsys):
    from cloud_trainer.train.anomaly import AnomalyDataError, load_good

    src = folder_per_class(tmp_path / "photos", 24)
    with pytest.raises(AnomalyDataError) as refused:
        load_good(src)
    assert str(refused.value) == (
        f"{src / 'ok'}: 24 images in a subfolder (and 1 more subfolder), which the anomaly family does not read (it "
        f"reads the images lying in {src} itself): for a folder per class (ok/, scratch/), import it (cloud-trainer "
        f"dataset import {src} --task anomaly --out DIR) and build from DIR; for good images kept by day, move them "
        f"into {src} to use them, or out of it"
    )
    # as it says
    code, said = run_import(capsys, str(src), "--task", "anomaly", "--out", str(tmp_path / "ds"))
    assert code == 0, said
    assert load_good(tmp_path / "ds").n_good == 20


def test_an_mvtec_folder_named_in_another_case_is_refused_saying_to_rename_it(tmp_path, capsys):
    # Train/Good, Test/, Ground_Truth/ as typed on Windows: read as a folder per class, it asked which of
    # 'Ground_Truth', 'Test', 'Train' was good (and with --good Train imported the masks as part images); test/Good
    # beside train/good was told to be "merged" with it
    src = mvtec_category(tmp_path / "bottle", 0)
    (src / "test" / "good").rename(src / "test" / "Good")
    code, said = run_import(capsys, str(src), "--out", str(tmp_path / "ds"))
    assert code != 0 and not (tmp_path / "ds").exists()
    assert (
        f"{src}: an MVTec AD folder with 'test/Good' named in another case than the layout's train/, test/, good/ "
        "and ground_truth/ (one folder each on Windows): rename it in lower case"
    ) in said
    for old, new in (
        ("train/good", "train/Good"),
        ("train", "Train"),
        ("test", "Test"),
        ("ground_truth", "GT"),
    ):
        (src / old).rename(src / new)
    (src / "GT").rename(src / "Ground_Truth")
    for good in ([], ["--good", "Train"]):
        code, said = run_import(capsys, str(src), "--out", str(tmp_path / "ds"), *good)
        assert code != 0 and not (tmp_path / "ds").exists()
        assert (
            f"{src}: an MVTec AD folder with 'Ground_Truth', 'Test', 'Test/Good', 'Train', 'Train/Good' named in "
            "another case than the layout's train/, test/, good/ and ground_truth/ (one folder each on Windows): "
            "rename them in lower case"
        ) in said


def test_a_class_folder_of_no_image_read_says_what_it_holds_that_is_not_read(tmp_path, capsys):
    # scratch/ holding only an iPhone's HEIC photos, or images hidden by a leading dot: "holds no images ...; add
    # images" was all the refusal said
    src = folder_per_class(tmp_path / "photos", 20)
    for p in sorted((src / "scratch").iterdir()):
        p.rename(p.with_name("." + p.name))
    for junk in ("Thumbs.db", ".DS_Store", "._scratch00.png"):  # what a system adds is not counted
        (src / "scratch" / junk).write_bytes(b"\0\5\x16\7")
    code, said = run_import(capsys, str(src), "--out", str(tmp_path / "ds"))
    assert code != 0
    assert (
        "or its subfolders; it holds 3 hidden images (a name beginning with a dot), not read: rename them without "
        "the dot to use them; add images or remove the folder"
    ) in said
    for p in sorted((src / "scratch").glob(".scratch*")):
        p.unlink()
    for i in range(4):
        (src / "scratch" / f"IMG_{i}.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    code, said = run_import(capsys, str(src), "--out", str(tmp_path / "ds"))
    assert code != 0
    assert (
        "; it holds 4 files of other kinds (IMG_0.HEIC, IMG_1.HEIC, IMG_2.HEIC, ...), not read: save them as PNG to "
        "use them; add images or remove the folder"
    ) in said
