"""A dataset's ``labels.jsonl`` is the user's (a tenant's, on a shared trainer) and was read whole into memory
(``Path.read_bytes``): a file of gigabytes, or one line of them with no line end, filled the trainer's memory
before the first row was looked at. It is read within a limit per line and one for the whole file, each refused
naming the file (and the line) and the limit; and a row naming a file whose name is longer than a file system
takes stopped training with an OSError traceback. Each is refused now, in one line naming it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cloud_trainer.train import data
from cloud_trainer.train.anomaly import AnomalyDataError, load_good
from cloud_trainer.train.data import DatasetError, label_lines, load_parts
from cloud_trainer.train.images import import_images
from tests.unit.test_image_import import per_class


def _dataset(tmp_path: Path) -> Path:
    src = per_class(tmp_path / "src", {"ok": 20, "dent": 2}, exts=(".png",))
    return Path(import_images(src, tmp_path / "ds", log=lambda m: None)["out"])


# the limits (the former code had none: getattr's default stands for them there)
LINE_LIMIT = getattr(data, "LABELS_MAX_LINE_BYTES", 64 * 1024)


def test_a_labels_line_longer_than_a_row_needs_is_refused_naming_the_line_and_the_limit(tmp_path):
    ds = _dataset(tmp_path)
    lines = (ds / "labels.jsonl").read_text().splitlines()
    # a row whose 'defect' note is a long text: valid JSON, but far past any row an import or export writes
    long = json.dumps({**json.loads(lines[1]), "note": "x" * (LINE_LIMIT + 1)})
    (ds / "labels.jsonl").write_text("\n".join([lines[0], long, *lines[2:]]) + "\n")
    said = (
        rf"^{ds / 'labels.jsonl'}:2: a line of {len(long)} bytes, more than the {LINE_LIMIT} "
        "a label row may take; "
    )
    with pytest.raises(DatasetError, match=said):
        load_parts(ds)
    with pytest.raises(AnomalyDataError, match=said):
        load_good(ds)
    # a row just within the limit is read
    within = json.dumps({**json.loads(lines[1]), "note": ""})
    within = within[:-1] + ', "pad": "' + "y" * (LINE_LIMIT - len(within) - 11) + '"}'
    assert len(within) == LINE_LIMIT
    (ds / "labels.jsonl").write_text("\n".join([lines[0], within, *lines[2:]]) + "\r\n")
    assert len(load_parts(ds).labels) == 22


def test_a_labels_file_larger_than_the_limit_is_refused_naming_it_and_the_limit_unread(tmp_path, monkeypatch):
    ds = _dataset(tmp_path)
    size = (ds / "labels.jsonl").stat().st_size
    # the limit is hundreds of MiB: lowered here below this small file's size (raising=False: the former code
    # had no limit, and read the file)
    monkeypatch.setattr(data, "LABELS_MAX_BYTES", size - 1, raising=False)
    with pytest.raises(
        DatasetError,
        match=rf"^{ds / 'labels.jsonl'}: {size} bytes, more than the {size - 1} a dataset's labels may take; ",
    ):
        label_lines(ds / "labels.jsonl")
    monkeypatch.setattr(data, "LABELS_MAX_BYTES", size, raising=False)
    assert len(label_lines(ds / "labels.jsonl")) == 22


@pytest.mark.parametrize("key", ["file", "mask"])
def test_a_labels_row_naming_a_file_longer_than_a_file_system_takes_is_refused_by_its_line(tmp_path, key):
    # os.stat raised OSError 'File name too long' out of training: a traceback, not the row
    ds = _dataset(tmp_path)
    lines = (ds / "labels.jsonl").read_text().splitlines()
    name = "images/" + "a" * 300 + ".png"
    row = {**json.loads(lines[0]), key: name}
    (ds / "labels.jsonl").write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    where = f"{ds / 'labels.jsonl'}:1" + (" (its mask)" if key == "mask" else "")
    said = rf"^{re.escape(where)}: names '{name}', which cannot be looked at \(File name too long\); "
    with pytest.raises(DatasetError, match=said):
        load_parts(ds, masks=True)
    with pytest.raises(AnomalyDataError, match=said):
        load_good(ds)
