"""A dataset folder is the user's, and so is its ``dataset.yaml``: what it holds is refused in one line naming
the file, never a traceback or a walk through billions of values. ``yaml.safe_load`` read it unbounded: nested
aliases of a few hundred bytes stood for millions of class names, which the error message then printed (a
400-byte file: 6 GB of memory and no end); deep nesting raised RecursionError, a date such as 2024-13-45
ValueError, a byte that is not UTF-8 UnicodeDecodeError, each a traceback of ``cloud-trainer train``."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_trainer.train.data import (
    DATASET_YAML_MAX_BYTES,
    DatasetError,
    dataset_classes,
    load_vibration,
)


def _laughs(levels: int) -> str:
    """``classes:`` standing for 9**levels names once its aliases are expanded, in ~40 bytes a level."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nclasses: *a{levels - 1}\n"


HOSTILE = [
    (_laughs(7).encode(), "YAML more than 1000000 nodes once aliases are expanded; refused"),
    (b"classes: " + b"[" * 20_000 + b"]" * 20_000 + b"\n", "YAML nested deeper than 32 levels; refused"),
    (
        b"classes: [ok, dent]\ncreated: 2024-13-45\n",
        "not valid YAML (cannot read '2024-13-45' as a date or time (month must be in 1..12); quote it if it is "
        "text)",
    ),
    (b"classes: [ok, d\xe9nt]\n", "not UTF-8 text (invalid continuation byte at byte 15)"),
    (
        b"classes: [ok]\n# " + b"x" * DATASET_YAML_MAX_BYTES + b"\n",
        f"larger than {DATASET_YAML_MAX_BYTES} bytes; refused",
    ),
    (
        b"classes: [ok, dent]\nclasses: [ok]\n",
        "not valid YAML (classes: key given twice (lines 1 and 2); keep one)",
    ),
    (  # a lone surrogate escape (or the two halves JSON writes for a character beyond U+FFFF): before, "not valid
        # YAML (while parsing a quoted scalar)", naming neither where nor what
        b'{"classes": ["ok", "dent \\ud83d\\udd27"]}\n',
        "not valid YAML at line 1, column 28: found invalid Unicode character escape code (a \\uD800-\\uDFFF escape "
        "is half of a UTF-16 pair, no character: write the character itself, or \\U0001F600 for one beyond U+FFFF)",
    ),
]


@pytest.mark.timeout(120)  # the former code's expansion took minutes and gigabytes: a guard, not a timing
@pytest.mark.parametrize(
    "data, why", HOSTILE, ids=["aliases", "nesting", "date", "utf8", "size", "twice", "surrogate"]
)
def test_a_hostile_dataset_yaml_is_refused_in_one_line_naming_it(tmp_path, data, why):
    (tmp_path / "dataset.yaml").write_bytes(data)
    with pytest.raises(DatasetError) as exc:
        dataset_classes(tmp_path)
    assert str(exc.value) == f"{tmp_path / 'dataset.yaml'}: {why}"


def test_a_vibration_dataset_reads_its_dataset_yaml_within_the_same_bounds(tmp_path):
    np.savez(tmp_path / "windows.npz", waveform=np.zeros((1, 8), np.float32))
    (tmp_path / "dataset.yaml").write_bytes(b"window_samples: 8\nbearing: " + b"{a: " * 100 + b"\n")
    with pytest.raises(DatasetError, match=r"dataset\.yaml: YAML nested deeper than 32 levels; refused$"):
        load_vibration(tmp_path)


def test_a_listing_of_classes_that_is_not_names_is_shown_shortened(tmp_path):
    """Within the bounds, a wrong ``classes:`` is still shown, but not as its 59,049 names."""
    (tmp_path / "dataset.yaml").write_text(_laughs(5))
    with pytest.raises(DatasetError, match="'classes' must be a list of distinct names") as exc:
        dataset_classes(tmp_path)
    assert len(str(exc.value)) < 500


@pytest.mark.parametrize(
    "row, why",
    [
        ("[" * 30_000 + "]" * 30_000, "not a label row (maximum recursion depth exceeded"),  # within 64 KiB
        ("[1, 2]", "not a label row with 'file' and 'label' (text), got [1, 2]"),
        ('{"file": 7, "label": "ok"}', "not a label row with 'file' and 'label' (text)"),
        ('{"file": "images/0.png"', "not a label row (Expecting ',' delimiter"),
    ],
    ids=["nested", "list", "number", "cut"],
)
def test_a_hostile_labels_row_is_refused_naming_its_line_by_both_families(tmp_path, row, why):
    """``load_parts`` (the classifier) raised RecursionError or TypeError; ``load_good`` (the anomaly family)
    raised whatever ``json.loads`` raised, a broken line included."""
    from cloud_trainer.train.anomaly import AnomalyDataError, load_good
    from cloud_trainer.train.data import load_parts

    (tmp_path / "dataset.yaml").write_text("kind: parts\nclasses: [ok, dent]\ngood: ok\n")
    (tmp_path / "labels.jsonl").write_text(row + "\n")
    where = f"{tmp_path / 'labels.jsonl'}:1: "
    with pytest.raises(DatasetError) as exc:
        load_parts(tmp_path)
    assert str(exc.value).startswith(where + why)
    with pytest.raises(AnomalyDataError) as exc2:
        load_good(tmp_path, min_good=1)
    assert str(exc2.value).startswith(where + why)
