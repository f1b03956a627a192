"""The vibration import's labels CSV was read whole into memory (``fh.read()``): a recording or a log given in
its place by mistake filled the trainer's memory before its header was looked at, where a dataset's labels are
refused past ``LABELS_MAX_BYTES`` unread. An unclosed quote running past the csv field size limit ended the
import in a ``_csv.Error`` traceback. Each is refused now in one line naming the file."""

from __future__ import annotations

import pytest

from cloud_trainer.train import signals
from cloud_trainer.train.data import DatasetError
from cloud_trainer.train.signals import read_labels


def test_a_labels_csv_past_the_limit_is_refused_unread_naming_the_file_and_limit(tmp_path, monkeypatch):
    labels = tmp_path / "labels.csv"
    labels.write_text("run,fault,start_s,end_s\nrun1,healthy,0,10\nrun2,imbalance,0,10\n")
    size = labels.stat().st_size
    # the limit is hundreds of MiB: lowered here below this small file's size (raising=False: the former code
    # had none, and read the file whole)
    monkeypatch.setattr(signals, "LABELS_MAX_BYTES", size - 1, raising=False)
    with pytest.raises(DatasetError) as refused:
        read_labels(labels)
    said = str(refused.value)
    assert said.startswith(
        f"labels file {labels}: {size} bytes, more than the {size - 1} a labels file may take; refused unread"
    ), said
    assert "\n" not in said
    monkeypatch.undo()
    rows = read_labels(labels)  # within the limit: read as before
    assert [(r.run, r.fault, r.start_s, r.end_s) for r in rows] == [
        ("run1", "healthy", 0.0, 10.0),
        ("run2", "imbalance", 0.0, 10.0),
    ]


def test_a_labels_csv_with_an_unclosed_quote_is_refused_in_one_line_naming_the_file(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text('run,fault\nrun1,"healthy\n' + "x" * 200_000 + "\n")
    with pytest.raises(DatasetError) as refused:
        read_labels(labels)
    said = str(refused.value)
    assert said.startswith(f"{labels}: line 2: not readable as CSV"), said
    assert "quote" in said and "\n" not in said
