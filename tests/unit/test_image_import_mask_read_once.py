"""``dataset import`` checked each mask where it leads (inside the source), decoded it, and then copied it into
the dataset by its path a second time (``shutil.copyfile``): a mask replaced in between by a link to another
factory's file (the source folder is the user's, written while the import runs) had that file copied into the
dataset, which its user reads. The bytes checked and decoded are the bytes stored."""

from __future__ import annotations

import json
from pathlib import Path

from cloud_trainer.train import images
from cloud_trainer.train.images import import_images
from tests.unit.test_image_import import img


def test_the_mask_stored_is_the_one_checked_not_a_file_put_in_its_place_after(tmp_path, monkeypatch):
    mv = tmp_path / "mv"
    for i in range(20):
        img(mv / "train" / "good" / f"{i:03d}.png", i)
    for i in range(2):
        img(mv / "test" / "good" / f"{i:03d}.png", 40 + i)
        img(mv / "test" / "dent" / f"{i:03d}.png", 50 + i)
        img(mv / "ground_truth" / "dent" / f"{i:03d}_mask.png", 7 + i, grey=True)
    checked = {p: p.read_bytes() for p in (mv / "ground_truth" / "dent").iterdir()}
    secret = img(tmp_path / "tenant-b" / "secret_mask.png", 99, grey=True)
    decode = images._decode

    def decode_then_swap(path, *args, mask=False, **kw):
        out = decode(path, *args, mask=mask, **kw)
        if mask:  # the file checked and decoded, replaced the moment after by a link out
            Path(path).unlink()
            Path(path).symlink_to(secret)
        return out

    monkeypatch.setattr(images, "_decode", decode_then_swap)
    out = Path(import_images(mv, tmp_path / "ds", task="anomaly", log=lambda m: None)["out"])
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    stored = {r["source"]: (out / r["mask"]).read_bytes() for r in rows if r.get("mask")}
    assert len(stored) == 2
    for source, data in stored.items():
        name = Path(source).stem + "_mask.png"
        assert data == checked[mv / "ground_truth" / "dent" / name] and data != secret.read_bytes()
