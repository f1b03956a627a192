"""A CSV time column of Excel serial days: a date-and-time cell saved as a plain number (a column formatted
"General" or "Number" before the CSV was saved, German Excel's ``45567,5``) holds days since 1900, not seconds.
Read as seconds, the rate came out 86,400 times the real one (a 10 Hz logger trained as 864 kHz), without a
word. It is refused in one line naming the file, the column and the date the number is, and how to fix it;
the same numbers under a column that says its unit in seconds (``timestamp [s]``) are read as seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train.cli import main_dataset as dataset_main  # the `cloud-trainer dataset` verb
from cloud_trainer.train.data import DatasetError
from cloud_trainer.train.signals import read_recording

DAY0 = 45567.5  # 2024-10-02 12:00:00 in Excel's 1900 date system
RATE = 10.0


def _excel_csv(path: Path, header: str, n: int = 2000, sep: str = ",", comma: bool = False) -> Path:
    t = DAY0 + np.arange(n) / RATE / 86400.0
    x = np.sin(np.arange(n) * 0.3)
    rows = [f"{a:.12f}{sep}{b:.6f}" for a, b in zip(t, x, strict=True)]
    if comma:
        rows = [r.replace(".", ",") for r in rows]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_a_time_column_of_excel_serial_days_is_refused_naming_the_file_column_and_date(tmp_path, capsys):
    path = _excel_csv(tmp_path / "run1.csv", "timestamp,accel")
    with pytest.raises(DatasetError) as refused:
        read_recording(path)
    said = str(refused.value)
    assert said.startswith(f"{path}: time column 'timestamp' starts at 45567.5: Excel serial days"), said
    assert "2024-10-02 12:00:00" in said and "86,400" in said and "'timestamp [s]'" in said, said
    assert "\n" not in said
    # German Excel: semicolons and decimal commas
    de = _excel_csv(tmp_path / "run2.csv", "Zeitstempel;Beschleunigung [g]", sep=";", comma=True)
    with pytest.raises(
        DatasetError, match=r"time column 'Zeitstempel' starts at 45567\.5: Excel serial days"
    ):
        read_recording(de)
    # the CLI: one line, exit 2, nothing written
    out = tmp_path / "ds"
    labels = tmp_path / "labels.csv"
    labels.write_text("run,fault\nrun1,healthy\n")
    argv = ["import", "--kind", "vibration", str(path), "--labels", str(labels), "--out", str(out)]
    assert dataset_main(argv) == 2
    err = capsys.readouterr().err
    assert "Excel serial days" in err and not out.exists()


def test_the_same_numbers_in_a_column_that_says_seconds_or_elapsed_are_seconds(tmp_path):
    # a logger's seconds since its start that happen to lie in the same range, said as seconds
    t = 45567.5 + np.arange(2000) / 25600.0
    x = np.sin(np.arange(2000) * 0.3)
    for header in ("timestamp [s]", "time_s", "elapsed"):
        path = tmp_path / f"{header.replace(' ', '_').replace('[', '').replace(']', '')}.csv"
        path.write_text(f"{header},a\n" + "".join(f"{a:.9f},{b:.6f}\n" for a, b in zip(t, x, strict=True)))
        assert read_recording(path).rate_hz == 25600.0, header
    # seconds from 0, and epoch seconds, as before
    for t0 in (0.0, 1_700_000_000.0):
        path = tmp_path / f"t{int(t0)}.csv"
        t = t0 + np.arange(2000) / 100.0
        path.write_text("time,a\n" + "".join(f"{a:.3f},{b:.6f}\n" for a, b in zip(t, x, strict=True)))
        assert read_recording(path).rate_hz == 100.0


def test_iso_times_of_a_clock_never_set_are_not_taken_for_excel_days(tmp_path):
    """1970-01-01T12:39:27 (a logger whose clock was never set) is 45567 seconds since 1970: read as the time."""
    import datetime as dt

    start = dt.datetime(1970, 1, 1, 12, 39, 27)
    stamps = [
        (start + dt.timedelta(milliseconds=10 * i)).isoformat(timespec="milliseconds") for i in range(2000)
    ]
    path = tmp_path / "unset.csv"
    path.write_text("timestamp,a\n" + "".join(f"{s},{i % 7}\n" for i, s in enumerate(stamps)))
    assert read_recording(path).rate_hz == 100.0
