"""Dataset folders are the user's, and on a shared trainer one factory's folder lies beside another's: what
``dataset import`` copies and what a dataset's ``labels.jsonl`` names must stay inside the folder given. A link
in an imported class folder (to an image, or MVTec's ``train`` to a folder) leading out of the source, and a
``labels.jsonl`` row naming ``../other/x.png`` or an absolute path, were read through silently; a row naming a
file in bytes that are not UTF-8, or with a ``"\\udc80"`` escape, failed with a UnicodeDecodeError traceback or
a "does not exist" that printed a character that is none. Each is refused now, in one line naming it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train.anomaly import AnomalyDataError, load_good
from cloud_trainer.train.data import DatasetError, load_parts, load_vibration
from cloud_trainer.train.images import import_images, scan
from tests.unit.test_image_import import img, leftovers, per_class


def test_a_link_to_an_image_outside_the_source_is_refused_naming_it_and_nothing_is_written(tmp_path):
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    img(tmp_path / "tenant-b" / "secret.png", 99)
    (src / "dent" / "x.png").symlink_to(tmp_path / "tenant-b" / "secret.png")
    with pytest.raises(DatasetError) as exc:
        import_images(src, tmp_path / "ds", log=lambda m: None)
    assert str(exc.value).startswith(
        f"{src / 'dent' / 'x.png'}: a link to {tmp_path / 'tenant-b' / 'secret.png'}, outside the source {src};"
    )
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []
    # a link that stays inside the source is read through, as before
    (src / "dent" / "x.png").unlink()
    img(src / ".pool" / "q.png", 98)  # a hidden folder: not a class, read only through the link
    (src / "ok" / "z.png").symlink_to(Path("..") / ".pool" / "q.png")
    res = import_images(src, tmp_path / "ds", log=lambda m: None)
    assert res["counts"] == {"ok": 21, "dent": 2}


def test_an_mvtec_folder_or_mask_linked_out_of_the_source_is_refused_naming_the_link(tmp_path):
    other = tmp_path / "tenant-b"
    for i in range(20):
        img(other / "train" / "good" / f"{i:03d}.png", i)
    mv = tmp_path / "mv"
    for i in range(3):
        img(mv / "test" / "good" / f"{i:03d}.png", 40 + i)
        img(mv / "test" / "dent" / f"{i:03d}.png", 50 + i)
    (mv / "train").symlink_to(other / "train", target_is_directory=True)
    with pytest.raises(
        DatasetError, match=rf"^{mv / 'train'}: a link to {other / 'train'}, outside the source"
    ):
        import_images(mv, tmp_path / "ds", task="anomaly", log=lambda m: None)
    (mv / "train").unlink()
    for i in range(20):
        img(mv / "train" / "good" / f"{i:03d}.png", i)
    mask = other / "000_mask.png"
    img(mask, 7, grey=True)
    (mv / "ground_truth" / "dent").mkdir(parents=True)
    (mv / "ground_truth" / "dent" / "000_mask.png").symlink_to(mask)
    with pytest.raises(
        DatasetError, match=rf"^{mv / 'ground_truth' / 'dent' / '000_mask.png'}: a link to {mask}"
    ):
        import_images(mv, tmp_path / "ds", task="anomaly", log=lambda m: None)
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []


def _dataset(tmp_path: Path) -> Path:
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    return Path(import_images(src, tmp_path / "ds", log=lambda m: None)["out"])


def _first_row(ds: Path, **change) -> bytes:
    lines = (ds / "labels.jsonl").read_text().splitlines()
    row = {**json.loads(lines[0]), **change}
    return (json.dumps(row) + "\n" + "\n".join(lines[1:]) + "\n").encode()


@pytest.mark.parametrize("how", ["../", "absolute", "link"])
def test_a_labels_row_naming_a_file_out_of_the_dataset_folder_is_refused_by_its_line(tmp_path, how):
    ds = _dataset(tmp_path)
    secret = img(tmp_path / "tenant-b" / "images" / "000000.png", 99)
    if how == "link":
        (ds / "images" / "000000.png").unlink()
        (ds / "images" / "000000.png").symlink_to(secret)
        name = "images/000000.png"
    else:
        name = "../tenant-b/images/000000.png" if how == "../" else str(secret)
        (ds / "labels.jsonl").write_bytes(_first_row(ds, file=name))
    said = f"{ds / 'labels.jsonl'}:1: names {name!r}, which leads out of the dataset folder {ds};"
    with pytest.raises(DatasetError) as exc:
        load_parts(ds)
    assert str(exc.value).startswith(said)
    with pytest.raises(AnomalyDataError) as exc2:  # the anomaly family reads an imported dataset's rows too
        load_good(ds)
    assert str(exc2.value).startswith(said)


def test_a_labels_rows_mask_out_of_the_dataset_folder_is_refused_by_its_line(tmp_path):
    ds = _dataset(tmp_path)
    mask = img(tmp_path / "tenant-b" / "m.png", 5, grey=True)
    (ds / "labels.jsonl").write_bytes(_first_row(ds, mask=str(mask)))
    with pytest.raises(
        DatasetError, match=rf"^{ds / 'labels.jsonl'}:1 \(its mask\): names '{mask}', which leads out"
    ):
        load_parts(ds, masks=True)


def test_a_labels_row_not_utf8_or_with_a_lone_surrogate_is_refused_by_its_line(tmp_path):
    ds = _dataset(tmp_path)
    (ds / "images" / "000000.png").rename(Path(os.fsdecode(os.fsencode(ds / "images") + b"/caf\xe9.png")))
    row = _first_row(ds, file="images/XX.png")
    (ds / "labels.jsonl").write_bytes(b"\n" + row.replace(b"XX", b"caf\xe9"))  # the name's Latin-1 bytes
    with pytest.raises(DatasetError) as exc:
        load_parts(ds)
    assert str(exc.value).startswith(f"{ds / 'labels.jsonl'}:2: not UTF-8 (byte 0xe9 at column ")
    (ds / "labels.jsonl").write_bytes(row.replace(b"XX", b"caf\\udce9"))  # a JSON escape of the same byte
    with pytest.raises(DatasetError) as exc:
        load_parts(ds)
    assert str(exc.value).startswith(
        f"{ds / 'labels.jsonl'}:1: its 'file' 'images/caf\\udce9.png' holds a lone surrogate"
    )
    with pytest.raises(AnomalyDataError, match=r"labels.jsonl:1: its 'file' .* holds a lone surrogate"):
        load_good(ds)


def test_a_labels_row_naming_a_file_with_a_nul_character_is_refused_by_its_line_not_a_traceback(tmp_path):
    # the check of where a name leads (os.path.realpath) raised ValueError "embedded null byte" on it
    ds = _dataset(tmp_path)
    with_mask = _first_row(ds, mask="m\u0000.png")
    (ds / "labels.jsonl").write_bytes(_first_row(ds, file="images/000000.png\u0000.txt"))
    said = f"{ds / 'labels.jsonl'}:1: names 'images/000000.png\\x00.txt', which holds a NUL character"
    with pytest.raises(DatasetError) as exc:
        load_parts(ds)
    assert str(exc.value).startswith(said)
    with pytest.raises(AnomalyDataError) as exc2:
        load_good(ds)
    assert str(exc2.value).startswith(said)
    (ds / "labels.jsonl").write_bytes(with_mask)
    with pytest.raises(
        DatasetError, match=r"labels.jsonl:1 \(its mask\): names 'm\\x00.png', which holds a NUL"
    ):
        load_parts(ds, masks=True)


def test_a_labels_file_saved_by_windows_tools_with_a_byte_order_mark_and_crlf_is_read(tmp_path):
    # Notepad's and PowerShell's "UTF-8 with BOM": line 1 was refused as "Unexpected UTF-8 BOM"
    ds = _dataset(tmp_path)
    before = load_parts(ds)
    text = (ds / "labels.jsonl").read_text()
    (ds / "labels.jsonl").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    after = load_parts(ds)
    assert after.digest == before.digest and len(after.labels) == len(before.labels) == 22
    assert load_good(ds).n_good == 20


def test_a_file_named_as_no_image_that_links_out_of_the_source_is_not_read_to_tell_its_kind(tmp_path):
    # the note on files that are images by content opened it through the link: it said what kind of file
    # another factory's 'x.png' is (or that it exists), and read its first bytes
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    secret = img(tmp_path / "tenant-b" / "x.png", 99)
    (src / "ok" / "notes").symlink_to(secret)
    img(src / "ok" / "img_0001.png", 98).rename(src / "ok" / "img_0001")  # inside: still told by content
    notes = " | ".join(scan(src).notes)
    assert "image by content but not by name (no extension, or another): 'ok/img_0001' (PNG)" in notes
    assert (
        "'ok/notes'" not in notes
        and "not a PNG, JPEG, BMP, TIFF, WebP or PNM image by its name: ok/notes" in notes
    )


def test_the_anomaly_family_given_a_folder_refuses_an_image_or_folder_linked_out_of_it(tmp_path):
    # `build anomaly DIR` on a folder of good images or an MVTec AD root (not an imported dataset) read
    # through every link: another factory's images trained the bank, or scored the model
    other = tmp_path / "tenant-b"
    for i in range(20):
        img(other / "good" / f"{i:03d}.png", 100 + i)
    good = tmp_path / "good"
    for i in range(20):
        img(good / f"{i:03d}.png", i)
    (good / "020.png").symlink_to(other / "good" / "000.png")
    with pytest.raises(AnomalyDataError) as exc:
        load_good(good)
    assert str(exc.value).startswith(
        f"{good / '020.png'}: a link to {other / 'good' / '000.png'}, outside the folder {good}; "
    )
    # a link that stays inside is read through, and the folder given may itself be a link
    (good / "020.png").unlink()
    img(good / ".pool" / "q.png", 77)
    (good / "020.png").symlink_to(Path(".pool") / "q.png")
    (tmp_path / "linked").symlink_to(good, target_is_directory=True)
    assert load_good(tmp_path / "linked").n_good == 21
    # an MVTec AD root: train/ linked out, then a test class and a mask
    mv = tmp_path / "mv"
    (mv / "train").mkdir(parents=True)
    (mv / "train" / "good").symlink_to(other / "good", target_is_directory=True)
    with pytest.raises(
        AnomalyDataError, match=rf"^{mv / 'train' / 'good'}: a link to {other / 'good'}, outside"
    ):
        load_good(mv)
    (mv / "train" / "good").unlink()
    for i in range(20):
        img(mv / "train" / "good" / f"{i:03d}.png", i)
    img(mv / "test" / "good" / "000.png", 40)
    (mv / "test" / "dent").symlink_to(other / "good", target_is_directory=True)
    with pytest.raises(
        AnomalyDataError, match=rf"^{mv / 'test' / 'dent'}: a link to {other / 'good'}, outside"
    ):
        load_good(mv)
    (mv / "test" / "dent").unlink()
    img(mv / "test" / "dent" / "000.png", 50)
    secret_mask = img(other / "000_mask.png", 7, grey=True)
    (mv / "ground_truth" / "dent").mkdir(parents=True)
    (mv / "ground_truth" / "dent" / "000_mask.png").symlink_to(secret_mask)
    with pytest.raises(
        AnomalyDataError, match=rf"^{mv / 'ground_truth' / 'dent' / '000_mask.png'}: a link to {secret_mask}"
    ):
        load_good(mv)
    (mv / "ground_truth" / "dent" / "000_mask.png").unlink()
    img(mv / "ground_truth" / "dent" / "000_mask.png", 7, grey=True)
    assert load_good(mv).n_good == 20


@pytest.mark.parametrize("name", ["labels.jsonl", "dataset.yaml"])
def test_a_datasets_labels_or_yaml_linked_out_of_its_folder_is_refused_naming_the_link(tmp_path, name):
    # read as this dataset's own: another factory's rows trained on this folder's images (imports name their
    # images alike), its labels and names said back in errors
    ds = _dataset(tmp_path)
    other = tmp_path / "tenant-b"
    other.mkdir()
    (ds / name).rename(other / name)
    (ds / name).symlink_to(other / name)
    said = rf"^{ds / name}: a link to {other / name}, outside the dataset folder {ds}; "
    with pytest.raises(DatasetError, match=said):
        load_parts(ds)
    with pytest.raises(AnomalyDataError, match=said):
        load_good(ds)
    # one that stays inside the folder is read
    (ds / name).unlink()
    (ds / ".kept").mkdir()
    (other / name).rename(ds / ".kept" / name)
    (ds / name).symlink_to(Path(".kept") / name)
    assert len(load_parts(ds).labels) == 22


@pytest.mark.parametrize("mask", [5, ["m.png"], {"file": "m.png"}])
def test_a_labels_rows_mask_that_is_not_text_is_refused_by_its_line_not_a_traceback(tmp_path, mask):
    # joined to the folder as a path (or searched for a NUL): TypeError, a traceback of training
    ds = _dataset(tmp_path)
    (ds / "labels.jsonl").write_bytes(_first_row(ds, mask=mask))
    said = rf"^{ds / 'labels.jsonl'}:1: its 'mask' is .*, not text; give the mask's file name"
    with pytest.raises(DatasetError, match=said):
        load_parts(ds, masks=True)
    with pytest.raises(AnomalyDataError, match=said):
        load_good(ds)
    (ds / "labels.jsonl").write_bytes(_first_row(ds, mask=None))  # null: no mask, as imports write it
    assert len(load_parts(ds, masks=True).labels) == 22


def test_a_vibration_datasets_windows_linked_out_of_its_folder_is_refused_naming_the_link(tmp_path):
    # another factory's recorded windows trained this dataset's model
    other = tmp_path / "tenant-b"
    other.mkdir()
    np.savez(other / "windows.npz", waveform=np.zeros((1, 8), np.float32))
    ds = tmp_path / "vib"
    ds.mkdir()
    (ds / "dataset.yaml").write_text("window_samples: 8\n")
    (ds / "windows.npz").symlink_to(other / "windows.npz")
    with pytest.raises(
        DatasetError,
        match=rf"^{ds / 'windows.npz'}: a link to {other / 'windows.npz'}, outside the dataset folder",
    ):
        load_vibration(ds)


def test_what_a_link_inside_the_source_leads_to_is_imported_and_not_said_unread(tmp_path):
    # MVTec's train/ linked to a folder inside the source was imported, yet the notes said "symlinked folder
    # not followed, its images not read: train -> .alt/train" and "not read: 20 images in hidden folders"
    mv = tmp_path / "mv"
    for i in range(20):
        img(mv / ".alt" / "train" / "good" / f"{i:03d}.png", i)
    img(mv / ".alt" / "spare.png", 90)  # in a hidden folder and read by no link: still said
    for i in range(3):
        img(mv / "test" / "good" / f"{i:03d}.png", 40 + i)
    (mv / "train").symlink_to(Path(".alt") / "train", target_is_directory=True)
    found = scan(mv)
    assert len(found.items) == 23
    notes = " | ".join(found.notes)
    assert "symlinked folder" not in notes and "train -> .alt/train" not in notes
    assert (
        "not read: 1 image in hidden folders or files (a name beginning with a dot): .alt/ (1 image)" in notes
    )
    # a folder linked inside a class is still not followed, and said
    (mv / "test" / "good" / "more").symlink_to(Path("..") / ".." / ".alt", target_is_directory=True)
    assert "its images not read: test/good/more -> ../../.alt" in " | ".join(scan(mv).notes)
