"""Historian data for training: ``cloud-trainer dataset import --kind vibration`` (or ``signals``).

Reads vibration recordings, one file per machine run, and writes a dataset folder that ``train`` /
``build`` read (``windows.npz`` + ``dataset.yaml``, as ``edge-sim dataset vibration`` writes):

- CSV: a time column (``timestamp``/``time``/``t``/``zeit``/``zeitstempel``/``datetime``/``elapsed``,
  see ``TIME_COLUMNS``: seconds, ISO 8601 or ``25.10.2026 02:59:59,123``; ``time [ms]`` / ``time (us)`` /
  ``time_ms`` scaled; Excel serial days, a date saved as a number, refused naming the fix: ``_not_excel_days``) and
  one column per channel (a unit in brackets is dropped from its name, and kept: runs naming different
  units for the channel used are refused, a speed channel's Hz or rad/s made rpm); without a time column
  ``--rate-hz`` is required. As spreadsheets export it: a UTF-8 byte-order mark, semicolon or tab
  delimiters with decimal commas (where a file uses them, ``1.500`` is 1500), a single column of
  decimal-comma numbers, blank lines, empty trailing columns, CR / LF / CR LF line ends (read as a
  stream: memory is the numbers' and their checks', not the text's; a file that would not fit in the memory
  free is refused before it is read). A row with more fields than the header,
  a time that is not a number and a row of units under the header are refused naming the line. The
  rate is measured from the time column (a whole number of Hz when within the timestamps' rounding of
  one) and, when ``--rate-hz`` is also given, checked against it (1 %).
- WAV (PCM 8/16/24/32-bit or IEEE float 32/64-bit, plain or WAVE_FORMAT_EXTENSIBLE, any channels; other
  chunks skipped; mapped, a channel read when used): the rate is the header's; compressed WAV (ADPCM,
  A-law, MP3) is refused by name.
- NPZ: a numeric array per channel (or one (samples, channels) array: ``data[0]``, ``data[1]``, ...) and either ``sample_rate_hz`` (one number above 0) or a time array
  named as a time column (numbers, or numpy datetime64 / timedelta64); a file numpy cannot read, or an array of text or objects, is refused by name.
- Parquet (pyarrow, the ``cloud`` extra): read like CSV: a time column (seconds as numbers, an Arrow
  timestamp of any unit, a duration, decimal seconds, or ISO 8601 strings; ``time [ms]`` scaled; a
  pandas time index) and one numeric column per channel
  (``accel_x [g]`` is channel ``accel_x``); a null time is refused naming the column and row.
- A missing value in a channel (an empty CSV cell, a Parquet null, NaN) is refused only in a channel the
  import uses, naming its line or row: a slow channel logged beside the signal does not refuse the run.

Labels (``--labels``, CSV with a header ``run,fault[,start_s,end_s,failure_s]``; never read as a run: left
out of the files when they name it, another CSV with its columns refused as a labels file): ``run`` is the
file's path from the files' common folder without the suffix (``healthy/run1`` beside ``outer/run1``: a folder
per class), or its stem when no other file has it; one file given twice, or files of one name holding the same
bytes, are refused; a row without start/end labels the whole run; ``failure_s`` (seconds from the run's start) gives
remaining life. Windows nobody labelled are left out (counted). One clear error each
for gaps, time going back, mixed rates (inside a file or across files without ``--resample-to``),
an unknown channel or fault, a default channel that rises at every sample (a time column under
a name not known as one), and default channels that differ between files holding the same ones (columns
in another order: give ``--channel``); nothing is written then.

For the maintenance trainer's condition features: ``--speed-channel NAME`` (a channel with the shaft
speed in rpm, e.g. a tachometer's) gives each window its mean speed (``speed_rpm`` in ``windows.npz``,
what ``build maintenance --speed-tag`` trains on); ``--bearing N,BALL_MM,PITCH_MM[,ANGLE_DEG]`` records
the machine's bearing geometry in ``dataset.yaml`` (``bearing``), which the trainer takes by default.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import itertools
import json
import math
import os
import re
import sys
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from operator import contains
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import yaml

from cloud_trainer.train.data import (
    DATASET_YAML_MAX_BYTES,
    FAULT_NAME,
    FAULT_WORDS,
    FAULTS,
    LABELS_MAX_BYTES,
    MAX_SAMPLE_RATE_HZ,
    NPZ_MAX_BYTES,
    VIBRATION_ARRAYS,
    DatasetError,
    NpzObjectArray,
    fault_synonym,
    lower_case_name,
    memory_available_bytes,
    name_words,
    not_a,
    npz_arrays,
    path_text,
    read_capped,
    reads_as_fault,
    reads_healthy,
)
from model_packager.condition import RateError, resample, resample_plan

# Names a time column goes by (lower case; spaces, '-' and '/' read as '_'): also with a unit in
# brackets (``Zeit [s]``, ``time (ms)``) or as a suffix (``time_ms``, ``elapsed_s``). Any other column
# is a channel, so a time column under a name missing here would be trained on as a signal.
TIME_COLUMNS = (
    "timestamp",
    "time",
    "t",
    "time_stamp",
    "datetime",
    "date_time",
    "elapsed",
    "elapsed_time",
    "time_elapsed",
    "relative_time",
    "zeit",
    "zeitstempel",
    "zeitpunkt",
)
RATE_TOLERANCE = 0.01
RATE_SNAP = 1e-5  # a measured rate this close (relative) to a whole number of Hz is that number
MAX_WAV_RATE_HZ = 10_000_000
MAX_NPZ_CHANNELS = 16  # a 2-D NPZ array with more on its shorter axis is not (samples, channels)


@dataclass
class Recording:
    run: str
    rate_hz: float
    channels: Mapping[str, np.ndarray]
    source: Path
    # relative uncertainty of a rate measured from timestamps (0: the rate is stated, e.g. a header's)
    rate_tolerance: float = 0.0
    # where sample i is in the file ("line 12", "row 10"), for messages; None: "sample i"
    row: Callable[[int], str] | None = None
    # every channel the file has, when only some were read (``pick``); empty: those in ``channels``
    available: tuple[str, ...] = ()
    # a channel's unit as its header writes it (``accel [g]``: "g"); absent or "": none written (WAV, NPZ)
    units: dict[str, str] = field(default_factory=dict)


# a day-first dotted date and time: 25.10.2026 02:59:59,123 (a date with slashes is refused: 10/11/2026
# is the 10th of November in some places and the 11th of October in others)
_DOTTED = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})[ T]+(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?")

# a cell that starts as a date (2026-03-29, 29.03.2026, 03/29/2026) or a time of day (00:59:59) does: in a channel
# column it is a time column under a name not known as one (WinCC's 'Datum;Zeit', 'Date'), refused saying so, not
# as a number written with a decimal point
_DATE_OR_CLOCK = re.compile(
    r"\s*(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./]\d{1,2}[./]\d{2,4}|\d{1,2}:\d{2})(?![\d.,])"
)


def _time_value(v: str, where: str, scale: float = 1.0, reason: str = "") -> float:
    try:
        return float(v) * scale
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
    except ValueError:
        m = _DOTTED.fullmatch(v.strip())
        if m:  # 25.10.2026 02:59:59,123 as Excel writes dates in German-speaking and other locales
            day, month, year, hh, mm, ss, frac = m.groups()
            try:
                d = datetime(int(year), int(month), int(day), int(hh), int(mm), int(ss or 0), tzinfo=UTC)
            except ValueError:
                pass
            else:
                return d.timestamp() + (float(f"0.{frac}") if frac else 0.0)
        shown = v if len(v) <= 40 else v[:40] + "..."
        raise DatasetError(
            f"{where}: time {shown!r} is neither seconds nor an ISO 8601 timestamp (nor DD.MM.YYYY "
            f"hh:mm:ss){f' ({reason})' if reason else ''}"
        ) from None
    # without a zone: the logger's clock as written (read as UTC), not this computer's local time, in
    # which a daylight-saving change would put a 1-h gap or jump into the recording
    return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()


def _measured_rate(t: np.ndarray) -> tuple[float, float]:
    """(rate, its relative uncertainty) over the whole span: timestamps are often rounded, so the
    rate is snapped to a whole number of Hz when it lies within that uncertainty of one (131072 Hz
    timestamps rounded to the microsecond still give 131072, not 131071.97)."""
    span = float(t[-1] - t[0])
    rate = (len(t) - 1) / span
    # how far the timestamps stray from an even clock through the first and last: their rounding
    resid = float(np.max(np.abs((t - t[0]) - np.arange(len(t)) * (span / (len(t) - 1)))))
    tol = min(max(RATE_SNAP, 2 * resid / span), RATE_TOLERANCE / 10)
    whole = round(rate)
    if whole >= 1 and abs(rate - whole) <= tol * rate:
        rate = float(whole)
    return rate, tol


def _times_rate(
    t: np.ndarray, path: Path, stated: float | None, row: Callable[[int], str] | None = None
) -> tuple[float, float]:
    """(rate, relative tolerance: 0 when ``stated``) the time column shows; DatasetError for a time
    that is not a number, time going back, a gap or a rate change. ``row(i)`` names sample i's row."""
    bad = np.flatnonzero(~np.isfinite(t))
    if bad.size:
        i = int(bad[0])
        raise DatasetError(
            f"{path}: {row(i) if row else f'sample {i}'}: the time is {float(t[i])}; every row needs a time "
            "(remove the row or fill in its time)"
        )
    if len(t) < 2:
        raise DatasetError(f"{path}: fewer than two samples")
    dt = np.diff(t)
    back = np.flatnonzero(dt <= 0)
    if back.size and not (dt[back] < 0).any() and (res := _coarse_clock(t, dt, path)):
        # the slope of a straight line through all the times (a rounded clock's errors mostly average
        # out); good, at worst, to two resolution steps over the span
        k = np.arange(len(t), dtype=np.float64) - (len(t) - 1) / 2
        rate = float(np.dot(k, k) / np.dot(k, t - t[0]))
        span = float(t[-1] - t[0])
        tol = max(RATE_SNAP, 2 * res / span)
        if stated is not None:
            if abs(rate - stated) > (RATE_TOLERANCE + tol) * stated:
                raise DatasetError(
                    f"{path}: --rate-hz says {stated:g} Hz but the time column shows {rate:.6g} Hz; "
                    "fix --rate-hz or the time column"
                )
            return stated, 0.0
        if tol > RATE_TOLERANCE / 10:
            raise DatasetError(
                f"{path}: the time column counts in steps of {res:.3g} s, coarser than the samples; over "
                f"{span:.6g} s it gives the rate only to {100 * tol:.2g} % ({rate:.6g} Hz): give --rate-hz "
                "(checked against the time column), or export finer times or a longer run"
            )
        if round(rate) >= 1 and abs(rate - round(rate)) <= tol * rate:
            rate = float(round(rate))
        return rate, tol
    if back.size:
        i = int(back[0])
        raise DatasetError(
            f"{path}: time does not increase at sample {i + 1} ({float(t[i])!r} then {float(t[i + 1])!r}); "
            "sort the rows by time and remove duplicates"
        )
    half = len(dt) // 2
    if half >= 8:
        a, b = float(np.median(dt[:half])), float(np.median(dt[half:]))
        if abs(a - b) > RATE_TOLERANCE * min(a, b):
            raise DatasetError(
                f"{path}: mixed rates inside one file ({1 / a:.6g} Hz, then {1 / b:.6g} Hz); "
                "split it where the rate changes"
            )
    step = float(np.median(dt))
    gaps = np.flatnonzero(dt > 1.5 * step)
    if gaps.size:
        i = int(gaps[0])
        raise DatasetError(
            f"{path}: gap of {dt[i]:.6g} s after sample {i} (t={t[i]:.6f}) where samples come every "
            f"{step:.6g} s; split the recording at the gap into separate files (runs)"
        )
    rate, tol = _measured_rate(t)
    if stated is not None and abs(rate - stated) > RATE_TOLERANCE * stated:
        raise DatasetError(
            f"{path}: --rate-hz says {stated:g} Hz but the time column shows {rate:.6g} Hz; "
            "fix --rate-hz or the time column"
        )
    return (stated, 0.0) if stated is not None else (rate, tol)


def _coarse_clock(t: np.ndarray, dt: np.ndarray, path: Path) -> float:
    """The resolution of a time column that repeats values when it is a clock coarser than the
    sampling (a logger writing milliseconds at 25.6 kHz: 0.000, 0.000, ..., 0.001), not duplicated
    rows: its resolution (the smallest step) is 1.5 mean sample periods or more, and every time lies
    within 1.5 resolution steps of an even clock through the first and last. 0 for duplicated rows;
    DatasetError when such a clock strays further (a gap or a rate change under the rounding)."""
    res = float(np.min(dt[dt > 0])) if (dt > 0).any() else 0.0
    span = float(t[-1] - t[0])
    if res <= 0 or span <= 0 or res < 1.5 * span / (len(t) - 1):
        # a clock about as fine as the samples: a repeat is a duplicated row (a third of the times
        # repeated at least, as a clock 1.5 samples coarse gives, is not a few duplicates)
        return 0.0
    stray = np.abs((t - t[0]) - np.arange(len(t)) * (span / (len(t) - 1)))
    i = int(np.argmax(stray))
    if stray[i] > 1.5 * res:
        raise DatasetError(
            f"{path}: the time column counts in steps of {res:.3g} s, coarser than the samples "
            f"({(len(t) - 1) / span:.6g} a second on average), and strays {stray[i]:.6g} s from an even "
            f"clock at sample {i} (t={t[i]:.6f}): a gap or a rate change; split the recording there"
        )
    return res


def check_times(
    t: np.ndarray, path: Path, stated: float | None, row: Callable[[int], str] | None = None
) -> float:
    """The rate the time column shows; DatasetError for a time that is not a number, time going back,
    a gap or a rate change."""
    return _times_rate(t, path, stated, row)[0]


_TIME_UNITS = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
# other spellings: the Greek mu (U+03BC, a Greek keyboard's, and what NFKC makes of the micro sign) looks like
# the micro sign and was refused 'use one of ... µs'; msec, usec and nsec as loggers write them
_TIME_ALIASES = {"\u03bcs": "us", "msec": "ms", "usec": "us", "nsec": "ns"}
_UNIT = re.compile(r"^(.*?)\s*[\[(]\s*([^\])]*?)\s*[\])]\s*$")  # "time [ms]", "Accel X (g)"
# "time_ms", "elapsed_s": a time column's name ending in one of the units
_TIME_SUFFIX = re.compile(r"(.+)_(" + "|".join(map(re.escape, [*_TIME_UNITS, *_TIME_ALIASES])) + ")")


def _split_unit(name: str) -> tuple[str, str]:
    """``accel_x [g]`` -> (``accel_x``, ``g``); a name without a unit -> (name, '')."""
    m = _UNIT.match(name.strip())
    return (m.group(1).strip(), m.group(2).strip()) if m else (name.strip(), "")


def _time_unit(name: str, unit: str) -> str | None:
    """The unit ('' for seconds or ISO 8601) of a time column called ``name`` (its bracketed unit
    ``unit``); None when the column is not a time column."""
    key = re.sub(r"[\s/-]+", "_", name.strip().lower())
    if key in TIME_COLUMNS:
        return unit
    m = _TIME_SUFFIX.fullmatch(key)
    if m and m.group(1) in TIME_COLUMNS:
        return unit or m.group(2)
    return None


def _time_scale(path: Path, column: str, unit: str) -> float:
    if not unit:
        return 1.0
    scale = _TIME_UNITS.get(unit, _TIME_UNITS.get(_TIME_ALIASES.get(unit.lower(), unit.lower())))
    if scale is None:
        raise DatasetError(
            f"{path}: time column {column!r}: unit {unit!r} not understood; "
            f"use one of {', '.join(_TIME_UNITS)} (or ISO 8601 times)"
        )
    return scale


_TIME_HINT = "/".join(("timestamp", "time", "t", "zeit", "datetime", "elapsed", "time_ms", "..."))

# A number written with a decimal comma, "0,0125", "-1,5E-03", "1.234,5" (German grouping).
_COMMA_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d*),\d+(?:[eE][+-]?\d+)?")
# "1.500", "12.345,6"; never "0.179": a number grouped in thousands does not begin with 0 (read so, a cell pasted
# with a decimal point among decimal commas was a thousand times its neighbours)
_GROUPED = re.compile(r"[+-]?[1-9]\d{0,2}(?:\.\d{3})+(?:,\d+)?(?:[eE][+-]?\d+)?")


# "sep=;": Excel's delimiter line; the named character first, then blanks or delimiters (a sheet that shows the
# line saved it padded with its empty cells: '"sep=;";;', or 'sep=;<TAB><TAB>' saved as tab-delimited text)
_EXCEL_SEP = re.compile(r'"?sep=(.)"?((?:[ \t,;]|\1)*)', re.IGNORECASE)


def _excel_sep(line: str) -> re.Match | None:
    """Excel's ``sep=X`` line naming the delimiter, a tab included (``strip()`` took the tab for blank space: the
    line was refused as the header, "needs a header ... (found 'sep=\\t')"), with the blanks or delimiters that
    may follow it (``sep=;`` and a tab was refused as the header: "line 2 has 3 fields but the header 2")."""
    return _EXCEL_SEP.fullmatch(line.strip(" \r\n"))


def _sep_delimiter(sep: re.Match, header: str) -> str:
    """The delimiter a ``sep=`` line names; the one it is padded with where the header holds that one and not the
    named one (a sheet showing ``sep=;`` saved as tab-delimited text: its header was read as one column)."""
    named, pad = sep.group(1), sep.group(2).replace(" ", "")
    if named not in header and len(set(pad)) == 1 and pad[0] in header:
        return pad[0]
    return named


def _csv_dialect(text: str) -> tuple[str, bool, bool]:
    """(delimiter, decimal comma allowed, decimal comma used) from the header line and the rows: a
    comma, or a semicolon or tab as spreadsheets in many locales write them (then numbers may use a
    decimal comma, ``0,125``, and where one does, a point groups thousands: ``1.500`` is 1500). A
    single column under a header without any delimiter whose rows each hold at most one comma is
    decimal-comma numbers (``0,012573``), not two fields."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    sep = _excel_sep(lines[0]) if lines else None
    if sep:  # Excel's own line naming the delimiter, before the header
        delimiter, body = _sep_delimiter(sep, lines[1] if len(lines) > 1 else ""), lines[2:]
        if delimiter not in ";\t":
            return delimiter, False, False
        cells = (c for ln in body for c in ln.split(delimiter))
        return delimiter, True, any(_COMMA_NUMBER.fullmatch(c.strip().strip('"')) for c in cells)
    header, body = (lines[0], lines[1:]) if lines else ("", [])
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    # a first line of decimal-comma numbers between ';' or tabs (a file without a header): its commas are
    # decimal, not delimiters ("0,147760;-0,147760" was split at its commas and refused for '147760;-0')
    numbers_in = next((d for d in (";", "\t") if counts[d] and _comma_numbers(header.split(d))), None)
    if numbers_in or counts[";"] > counts[","] or counts["\t"] > counts[","]:
        delimiter = numbers_in or (";" if counts[";"] >= counts["\t"] else "\t")
        cells = (c for ln in body for c in ln.split(delimiter))
        return delimiter, True, any(_COMMA_NUMBER.fullmatch(c.strip().strip('"')) for c in cells)
    if (
        not any(counts.values())
        and body
        and all(ln.count(",") <= 1 and ";" not in ln and "\t" not in ln for ln in body)
        and any(_COMMA_NUMBER.fullmatch(ln.strip().strip('"')) for ln in body)
    ):
        return ";", True, True  # one column: no ';' in it, so every row stays one field
    return ",", False, False


def _comma_numbers(cells: list[str]) -> bool:
    """Whether every cell is a number and at least one is written with a decimal comma."""
    cells = [c.strip().strip('"') for c in cells]
    return all(_is_number(c, True) or _is_number(c, False) for c in cells if c) and any(
        _COMMA_NUMBER.fullmatch(c) for c in cells
    )


def _number(v: str, decimal_comma: bool) -> float:
    """A cell as a number; in a file written with decimal commas ``1.500`` is 1500 (a point groups
    thousands there) and any other value with a point is refused: it would be read 1000 times off."""
    if not decimal_comma:
        return float(v)
    s = v.strip()
    if _GROUPED.fullmatch(s):
        s = s.replace(".", "")
    elif "." in s:
        raise ValueError("a decimal point in a file written with decimal commas")
    if s.count(",") > 1:
        raise ValueError("more than one decimal comma")
    return float(s.replace(",", "."))


def _is_number(v: str, decimal_comma: bool) -> bool:
    try:
        _number(v, decimal_comma)
    except ValueError:
        return False
    return True


CSV_SNIFF_LINES = 4096  # the delimiter and number format are read from a file's first lines
CSV_CHUNK_ROWS = 1 << 16  # rows parsed together: what a CSV read holds as text at a time ...
CSV_CHUNK_CELLS = 1 << 19  # ... fewer in a wide file: about 40 MB of cells


class _CommaLater(Exception):
    """A decimal-comma number below the lines the dialect was read from: read the file again as one
    written with decimal commas (where ``1.500`` is 1500), as if its whole text had been looked at."""


def _csv_open(path: Path) -> Any:
    return open(path, newline="", encoding="utf-8-sig", errors="strict")


Keep = Callable[[list[str]], list[str]]  # a file's channel names -> the ones to read


def read_csv(path: Path, rate_hz: float | None, pick: Keep | None = None) -> Recording:
    """CSV as historians and spreadsheets export it: a UTF-8 byte-order mark (Excel) is dropped, the
    delimiter is a comma, semicolon or tab (the latter two with decimal commas allowed), blank lines are
    skipped, empty trailing columns (``time;accel_x;``) dropped, and a unit in the header is read:
    ``time [ms]`` / ``time (us)`` / ``time_ms`` is scaled to seconds, a channel's unit is dropped from
    its name (``accel_x [g]`` is channel ``accel_x``). Errors name the line in the file.

    Read as a stream, ``CSV_CHUNK_ROWS`` rows at a time: what stays in memory is the numbers and their checks
    (``_rows_fit``: about 56 bytes a row for the time, 18 for each channel read), not the text; a file whose rows,
    counted through the file (``_csv_rows``), would not fit in the memory free is refused before it is read. The
    dialect is read from the first ``CSV_SNIFF_LINES`` lines; a decimal-comma number further down
    reads the file again as a decimal-comma file."""
    refuse_wide_text(path)
    try:
        with _csv_open(path) as fh:
            sniffed = list(itertools.islice(fh, CSV_SNIFF_LINES))
            head = "".join(sniffed)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
    delimiter, comma_ok, decimal_comma = _csv_dialect(head)
    rows = max(len(sniffed), _csv_rows(path))  # what its read takes (``_rows_fit``)
    del sniffed
    first = next((ln for ln in head.splitlines() if ln.strip()), "")
    skip = 1 if _excel_sep(first) else 0
    index = _pandas_index(head, delimiter, skip)
    del head  # (up to CSV_SNIFF_LINES lines of text: not held while the file is read)
    try:
        return _read_csv(path, rate_hz, delimiter, comma_ok, decimal_comma, skip, pick, index, rows)
    except _CommaLater:
        return _read_csv(path, rate_hz, delimiter, True, True, skip, pick, index, rows)


_CSV_ROW_SAMPLES, _CSV_ROW_SAMPLE_BYTES = 16, 1 << 16


def _csv_rows(path: Path) -> int:
    """The rows a CSV file holds, about: its line ends counted in the whole file, or in ``_CSV_ROW_SAMPLES`` pieces
    spread through a larger one, a piece held at a time. Its first lines alone misjudge it: a run starting with the
    machine idle logs '0' where it later logs '-0.123456789012', and its rows reckoned from them were 1.8 times
    those it holds."""
    size = path.stat().st_size
    whole = size <= _CSV_ROW_SAMPLES * _CSV_ROW_SAMPLE_BYTES
    step = _CSV_ROW_SAMPLE_BYTES if whole else (size - _CSV_ROW_SAMPLE_BYTES) // (_CSV_ROW_SAMPLES - 1)
    read = lf = cr = 0
    with open(path, "rb") as fh:
        for k in range(_CSV_ROW_SAMPLES):
            fh.seek(k * step)
            piece = fh.read(_CSV_ROW_SAMPLE_BYTES)
            read, lf, cr = read + len(piece), lf + piece.count(b"\n"), cr + piece.count(b"\r")
    return round(size * (lf or cr) / max(read, 1))  # LF and CR LF, or CR alone


_INDEX = "\x00index"  # the header of a pandas index column that is not the time


def _pandas_index(head: str, delimiter: str, skip: int) -> str | None:
    """What a first column without a name holds, as pandas' ``DataFrame.to_csv()`` writes its index
    there: ``"time"`` (dates, and no column named as a time), ``"rows"`` (row labels, dropped), or None
    (the first column has a name)."""
    try:
        rows = [r for r in csv.reader(head.splitlines()[:64], delimiter=delimiter) if "".join(r).strip()]
    except csv.Error:  # (a value over the field limit: the read itself says so, with its line)
        return None
    rows = rows[skip:]
    if len(rows) < 2 or len(rows[0]) < 2 or rows[0][0].strip() or not rows[1][0].strip():
        return None
    names = [_split_unit(c) for c in rows[0][1:]]
    if any(_time_unit(*n) is not None for n in names):
        return "rows"
    cell = rows[1][0].strip()
    if _is_number(cell, False):
        return "rows"
    try:
        _time_value(cell, "")
    except DatasetError:
        return "rows"
    return "time"


WIDE_TEXT_PROBE = 4096  # the bytes a text file's encoding is told from (``refuse_wide_text``)


def refuse_wide_text(path: Path, data: bytes | None = None) -> None:
    """UTF-32 or UTF-16 text (a historian's, a script's or PowerShell's export) is refused naming its
    encoding, read from the first ``WIDE_TEXT_PROBE`` bytes (``data``, else read from ``path``). Without a
    byte-order mark it is valid UTF-8 to a reader: each ASCII character a byte and zeros, so it was refused
    as a row of 1 field, a value that is not a number or a NUL byte, which sent the engineer to fix rows that
    are right. Told by where its zeros are: UTF-16, (nearly) every other byte and (nearly) none between;
    UTF-32, three bytes of (nearly) every four. UTF-32's byte-order marks are tested first: the
    little-endian one opens with UTF-16's (a UTF-32 file was called UTF-16)."""
    if data is None:
        with path.open("rb") as fh:
            data = fh.read(WIDE_TEXT_PROBE)
    data = data[:WIDE_TEXT_PROBE]
    for bits, boms in ((32, (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")), (16, (b"\xff\xfe", b"\xfe\xff"))):
        if data.startswith(boms):
            raise DatasetError(
                f"{path}: UTF-{bits} text (it starts with UTF-{bits}'s byte-order mark), not UTF-8; export it "
                "as UTF-8"
            )
    for bits, width in ((32, 4), (16, 2)):
        units = len(data) // width
        if units < 4:
            continue
        lanes = [data[i : units * width : width] for i in range(width)]  # byte i of each code unit
        for order, text in (("little", 0), ("big", width - 1)):
            zeros = [lane.count(0) for i, lane in enumerate(lanes) if i != text]
            if min(zeros) >= 0.9 * units and lanes[text].count(0) <= 0.1 * units:
                raise DatasetError(
                    f"{path}: reads as UTF-{bits} text without a byte-order mark ({order}-endian: "
                    f"{'three bytes of every four are' if bits == 32 else 'every other byte is'} 0), not as "
                    "UTF-8; export it as UTF-8"
                )


def _parquet_out_of_its_range(path: Path, table: Any) -> str | None:
    """Why a Parquet file's numbers read are not what it was written with, or None: a value of a row group's number
    column outside the smallest and largest the writer stated for it (its statistics, written by pandas, pyarrow,
    Spark and parquet-mr by default). pandas and pyarrow write no page CRC by default: a value page damaged on the
    way (a bad sector, a copy patched) was read as other numbers, without a word. A damaged value that stays within
    its column's range is not seen (a CRC sees it); a healthy file's values never leave it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError):
        return None  # read a moment ago: one replaced since is read again by no one
    where = {meta.schema.column(j).path: j for j in range(meta.num_columns)}
    groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
    for name in table.column_names:
        j = where.get(name)
        typ = table.schema.field(name).type
        if (
            j is None
            or not (pa.types.is_integer(typ) or pa.types.is_floating(typ))
            or pa.types.is_float16(typ)
        ):
            continue  # (a float16's statistics are bytes; a nested or renamed column's not read here)
        # one piece, sliced by each row group in constant time: a slice of the read's chunks walks them from the
        # first, and a logger's file of 20,000 one-row groups took 500 s to check after a 16 s read
        column, start = None, 0
        for g, group in enumerate(groups):
            start, rows = start + group.num_rows, group.num_rows
            stats = group.column(j).statistics
            if stats is None or not stats.has_min_max or rows == 0:
                continue
            low, high = stats.min, stats.max
            if not (isinstance(low, int | float) and isinstance(high, int | float)):
                continue
            if column is None:
                column = table.column(name).combine_chunks()
            got = pc.min_max(column.slice(start - rows, rows)).as_py()
            lo, hi = got["min"], got["max"]
            if lo is None or hi is None:
                continue
            if lo < low or hi > high:
                return (
                    f"row group {g}, column {name!r}: values from {lo!r} to {hi!r} read, where its writer stated "
                    f"{low!r} to {high!r}: the file is damaged (a page CRC would have said where: pandas and pyarrow "
                    "write them with write_page_checksum=True); copy it again from its source"
                )
    return None


def _not_utf8(path: Path, exc: UnicodeDecodeError, block: int = 1 << 20) -> DatasetError:
    """The line and byte where a text file stops being UTF-8 (an export in Latin-1 or UTF-16). Lines end as the
    reader ends them, at LF, CRLF or a lone CR: a file whose lines end in CR only was named "line 1" whatever its
    line; read ``block`` bytes at a time (such a file is one line to a byte reader, held whole)."""
    import codecs

    where = ""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, offset, cr_end = 1, 0, False  # the line at ``offset``; the bytes before ended in CR
    with path.open("rb") as fh:
        while True:
            data = fh.read(block)
            held = len(decoder.getstate()[0])  # bytes of a character begun before ``data``
            try:
                decoder.decode(data, final=not data)
            except UnicodeDecodeError as bad:
                at = offset - held + bad.start
                line += _line_ends(data[: max(0, at - offset)], cr_end)
                where = f" in line {line} at byte {at}"
                byte = bad.object[bad.start : bad.start + 1]
                # a Windows code page's export (German Excel's "CSV (Trennzeichen-getrennt)": 0xB0 for °); Windows-1252
                # only: Latin-1 has C1 controls at 0x80-0x9F, not the '€' or '–' named there
                try:
                    where += f": {byte[0]:#04x}, {byte.decode('cp1252')!r} in Windows-1252"
                except UnicodeDecodeError:
                    where += f": {byte[0]:#04x}"
                break
            if not data:
                break
            line += _line_ends(data, cr_end)
            cr_end, offset = data.endswith(b"\r"), offset + len(data)
    # not read in a code page guessed: the bytes do not tell Windows-1252 from 1250, 437 or Latin-1, and a header
    # or a label read under the wrong one is another name (a class split in two, a --channel not found)
    return DatasetError(
        f"{path}: not UTF-8 text ({exc.reason}{where}); export it as UTF-8 (in Excel: 'CSV UTF-8'), the text "
        "encoding read here"
    )


def _line_ends(data: bytes, cr_end: bool) -> int:
    """How many lines end in ``data`` (LF, CRLF, a lone CR); ``cr_end``: the bytes before it ended in CR (an LF
    first here ends no further line: that CRLF was counted)."""
    return (
        data.count(b"\n")
        + data.count(b"\r")
        - data.count(b"\r\n")
        - (1 if cr_end and data.startswith(b"\n") else 0)
    )


def _csv_damage(path: Path, reader: Any, exc: Exception, last: int) -> DatasetError:
    """One line for a damaged file (text that is not UTF-8, an unbalanced quote running past the field
    size limit, a NUL byte) naming the line, not the csv module's traceback. ``last``: the line of
    the last row read whole (0: none)."""
    if isinstance(exc, UnicodeDecodeError):
        return _not_utf8(path, exc)
    if "field larger" in str(exc):
        return DatasetError(
            f"{path}: line {last + 1}: not readable as CSV ({exc}): "
            + (
                f'a quote (") opened there or soon after is not closed, so lines {last + 1}-'
                f"{reader.line_num} read as one value; fix or remove it"
                if reader.line_num > last + 1
                else "one value of over 128 KiB (a line without delimiters?); one sample per line, a "
                "column per channel"
            )
        )
    return DatasetError(f"{path}: line {reader.line_num}: not readable as CSV ({exc})")


def _numbering(cells: list[str]) -> bool:
    """Whether a header's cells number the columns: whole numbers counting up by one from 0 or 1."""
    if not cells or not all(c.isascii() and c.isdigit() for c in cells):
        return False
    first = int(cells[0])
    return first in (0, 1) and [int(c) for c in cells] == list(range(first, first + len(cells)))


def _read_csv(
    path: Path,
    rate_hz: float | None,
    delimiter: str,
    comma_ok: bool,
    decimal_comma: bool,
    skip: int = 0,
    pick: Keep | None = None,
    index: str | None = None,
    rows: int = 0,
) -> Recording:
    with _csv_open(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            filled = (r for r in reader if "".join(r).strip())
            for _ in range(skip):  # Excel's "sep=;" line
                next(filled, None)
            top = next(filled, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise _csv_damage(path, reader, exc, 0) from None
        if top is None:
            raise DatasetError(f"{path}: needs a header and at least two rows")
        top_line, written = reader.line_num, delimiter.join(top)[:60]
        # numpy.savetxt's header, '# time,x' (its comments='# '): the time column was '# time', not found, and
        # given --rate-hz read as the first channel; a column named '#' alone (a row number) is left as it is, and
        # so are names all numbered with '#' ('#1,#2': the first lost its '#' alone)
        if re.fullmatch(r"\s*#+\s*\S.*", top[0]) and not any(c.lstrip().startswith("#") for c in top[1:]):
            top = [top[0].lstrip().lstrip("#").strip(), *top[1:]]
        if index is not None:  # pandas' index in the first column: the time, or row labels
            top = ["timestamp" if index == "time" else _INDEX, *top[1:]]
        width = len(top)
        # a first line of measurements, in either decimal form: a ';' or tab file may be written with decimal
        # points, where '0.038' is no decimal-comma number (its first row was taken as the channels' names, its
        # first samples lost). Whole numbers are names only where they number the columns from 0 or 1
        # (1;2;3): a first row of counts (512;498) was read as channels called '512' and '498'.
        cells = [c.strip() for c in top if c.strip()]
        if all(_is_number(c, comma_ok) or _is_number(c, False) for c in cells) and not _numbering(cells):
            whole = all(c.isdigit() for c in cells)
            raise DatasetError(
                f"{path}: line {top_line} ({delimiter.join(top)[:60]!r}) holds numbers, not column names: the "
                "file has no header; add one (a time column, then a name per channel)"
                + (
                    "; whole numbers are names only where they number the columns 1, 2, 3 or 0, 1, 2"
                    if whole
                    else ""
                )
            )
        # a column without a name: a spreadsheet's trailing delimiter, as long as it holds no value
        keep = [i for i in range(width) if top[i].strip()]
        unnamed = [i for i in range(width) if not top[i].strip()]
        need = max(keep) + 1 if keep else 0
        header, units = [], []
        for i in keep:
            name, unit = _split_unit(top[i])
            if not name:
                raise DatasetError(
                    f"{path}: column {i + 1} has no name in the header but holds values; name it"
                )
            header.append(name)
            units.append(unit)
        raw = [top[i].strip() for i in keep]
        times = [k for k, h in enumerate(header) if _time_unit(h, units[k]) is not None]
        tcol = times[0] if times else None
        chans = [k for k in range(len(header)) if k not in times and header[k] != _INDEX]
        if not chans:
            raise DatasetError(f"{path}: no channel column besides the time column")
        twice = sorted({header[k] for k in chans if [header[j] for j in chans].count(header[k]) > 1})
        if twice:
            raise DatasetError(
                f"{path}: more than one column is called {twice[0]!r} (units aside); rename one"
            )
        available = tuple(header[k] for k in chans)
        if pick is not None:  # only these columns are parsed and kept
            wanted = set(pick(list(available)))
            chans = [k for k in chans if header[k] in wanted]
        scale = (
            _time_scale(path, raw[tcol], str(_time_unit(header[tcol], units[tcol])))
            if tcol is not None
            else 1.0
        )
        chunk = max(1, min(CSV_CHUNK_ROWS, CSV_CHUNK_CELLS // max(width, 1)))
        parts: dict[int, list[np.ndarray]] = {k: [] for k in chans}
        tparts: list[np.ndarray] = []
        line_parts: list[np.ndarray] = []
        read = chans if tcol is None else [*chans, tcol]  # the columns parsed: the rest is dropped
        _rows_fit(path, rows, tcol is not None, len(chans), "about ")
        cols: dict[int, list[str]] = {
            k: [] for k in read
        }  # their cells of the rows held, parsed a chunk at a time
        lines: list[int] = []

        def flush() -> None:
            for k in read:
                cells = cols[k]
                if (
                    comma_ok
                    and not decimal_comma
                    and any("," in c and _COMMA_NUMBER.fullmatch(c.strip().strip('"')) for c in cells)
                ):
                    raise _CommaLater
                if k == tcol:
                    tparts.append(_csv_times(path, cells, lines, scale, comma_ok, decimal_comma))
                else:
                    parts[k].append(_csv_numbers(path, cells, lines, header[k], decimal_comma))
            line_parts.append(np.asarray(lines, dtype=np.int64))
            for k in read:
                cols[k].clear()
            lines.clear()

        n_rows = 0
        first_time = ""  # the time column's first cell, as written
        firsts: list[tuple[list[str], int]] = []  # the first two rows and their lines

        def check(r: list[str], n: int) -> bool:
            """A row that is not plain (another width, an unnamed column, no first cell) at line ``n``:
            False for a blank line, a DatasetError for a row that cannot be read, else True."""
            if not "".join(r).strip():
                return False
            if len(r) > width and "".join(r[width:]).strip():
                # a header of one field above rows of several: a logger's title or comment line taken for it
                above = (
                    f" (the header, line {top_line}, is {written!r}: a title or comment above "
                    "the column names? delete the lines above them)"
                    if width == 1
                    else ""
                )
                raise DatasetError(
                    f"{path}: line {n} has {len(r)} fields but the header {width} ({delimiter!r} "
                    f"between fields{', a comma in the numbers' if comma_ok else ''}); fix the row "
                    f"or the header{above}"
                )
            if len(r) < need:
                raise DatasetError(
                    f"{path}: line {n} has {len(r)} fields but the header {width}; fix the row"
                )
            held = next((i for i in unnamed if i < len(r) and r[i].strip()), None)
            if held is not None:
                raise DatasetError(
                    f"{path}: column {held + 1} has no name in the header but holds values (line {n}); name it"
                )
            return True

        def take(got: list[str], at: list[int], span: int) -> None:
            """Rows read, their cells one after another (``span`` a row; at these lines of the file), in
            order: the second is checked against a row of units under the header, and every ``chunk``
            rows are parsed as numbers."""
            nonlocal n_rows, first_time
            if n_rows < 2 and at:
                if n_rows == 0 and tcol is not None:
                    first_time = got[keep[tcol]]
                firsts.extend(
                    (got[j * span : (j + 1) * span], at[j]) for j in range(min(2 - n_rows, len(at)))
                )
                if len(firsts) == 2:
                    _not_a_unit_row(
                        path,
                        [[r[i] for i in keep] for r, _ in firsts],
                        [n for _, n in firsts],
                        header,
                        chans,
                        delimiter,
                        decimal_comma,
                    )
                    firsts.clear()
            n_rows += len(at)
            i = 0
            while i < len(at):
                room = chunk - len(lines)
                for k in read:
                    cols[k].extend(got[i * span + keep[k] : (i + room) * span : span])
                lines.extend(at[i : i + room])
                i += room
                if len(lines) >= chunk:
                    flush()

        # Read a block of lines at a time. Without a quote in it, each line is one row (its line in the
        # file known without asking a reader row by row) and its cells are the text between delimiters: a
        # block whose lines all hold the header's fields is split at once, and each column taken whole.
        # From a block with a quote in it (a value may run over lines), the rest is read row by row.
        base = top_line  # lines of the file read so far
        slow: Any = None
        limit = csv.field_size_limit()
        repeat = itertools.repeat
        buf: list[str] = []
        buf_at: list[int] = []
        bad: UnicodeDecodeError | None = None  # text further on that is not UTF-8
        try:
            while True:
                block: list[str] = []
                try:  # (the lines read before it are kept: their rows' errors come first)
                    block.extend(itertools.islice(fh, max(1, min(chunk - len(lines), chunk // 2))))
                except UnicodeDecodeError as exc:
                    bad = exc
                if not block:
                    if bad is not None:
                        raise bad
                    break
                if any(map(contains, block, repeat('"'))) or max(map(len, block)) > limit:
                    rest = fh if bad is None else _raising(bad)
                    slow = csv.reader(itertools.chain(block, rest), delimiter=delimiter)
                    break
                at = list(range(base + 1, base + 1 + len(block)))
                base += len(block)
                bare = list(map(str.rstrip, block, repeat("\r\n")))
                del block
                plain, plain_at = _plain_rows(bare, at, delimiter, width)
                if plain is not None:
                    got = delimiter.join(plain).split(delimiter)
                    # every row has its first cell, and a column the header leaves unnamed holds nothing
                    if all(map(str.strip, got[::width])) and not any(
                        map(str.strip, itertools.chain.from_iterable(got[u::width] for u in unnamed))
                    ):
                        del bare, plain
                        take(got, plain_at, width)
                        del got
                        if bad is not None:  # not read on past it: the lines after it are cut where it was
                            raise bad
                        continue
                    del got, plain
                for ln, n in zip(bare, at, strict=True):
                    r = ln.split(delimiter) if ln else []
                    if (len(r) != width or unnamed or not r[0].strip()) and not check(r, n):
                        continue
                    take(r, [n], len(r))
                del bare
                if bad is not None:
                    raise bad
            if slow is not None:  # plain rows taken a batch at a time, in order with the others
                for r in slow:
                    if len(r) == width and not unnamed and r[0].strip():
                        buf += r
                        buf_at.append(base + slow.line_num)
                        if len(buf_at) >= 1024 or n_rows < 2:  # (the units row checked at once)
                            take(buf, buf_at, width)
                            buf, buf_at = [], []
                        continue
                    take(buf, buf_at, width)
                    buf, buf_at = [], []
                    n = base + slow.line_num
                    if check(r, n):
                        take(r, [n], len(r))
                take(buf, buf_at, width)
        except (csv.Error, UnicodeDecodeError) as exc:
            # the rows read before the damage first: a row, a units row or a value there is the first error
            take(buf, buf_at, width)
            buf, buf_at = [], []
            last = lines[-1] if lines else int(line_parts[-1][-1]) if line_parts else top_line
            where = SimpleNamespace(line_num=base + (slow.line_num if slow is not None else 0))
            raise _csv_damage(path, where, exc, last) from None
        if n_rows < 2:
            raise DatasetError(f"{path}: needs a header and at least two rows")
        flush()
    data = {header[k]: np.concatenate(parts[k]) for k in chans}
    t = np.concatenate(tparts) if tcol is not None else None
    if t is not None and tcol is not None and _time_unit(header[tcol], units[tcol]) == "":
        # (a number: an ISO time of 1970-01-01, a clock never set, is the same count of seconds)
        if re.fullmatch(r"[\d.,]+", first_time.strip().strip('"')):
            _not_excel_days(path, raw[tcol], header[tcol], t)
    line_of = np.concatenate(line_parts)
    rec = _table_recording(path, data, t, rate_hz, lambda i: f"line {int(line_of[i])}", scale)
    rec.available = available
    rec.units = {header[k]: units[k] for k in chans}
    return rec


def _plain_rows(
    bare: list[str], at: list[int], delimiter: str, width: int
) -> tuple[list[str] | None, list[int]]:
    """(the lines of a block without quotes, their line numbers) when each is one plain row of ``width`` fields, as
    ``read_csv`` splits a block at once: a blank line dropped (a row of none, skipped row by row too) and a row
    ending in one delimiter too many (a spreadsheet's trailing delimiter: its last field empty, which the row's
    check lets by) taken without it; (None, ``at``) when any line is another shape, and the block is read row by
    row. Such a block (one blank line in it, or every row with a trailing delimiter) went row by row, 0.7-0.8x the
    former reader."""
    counts = set(map(str.count, bare, itertools.repeat(delimiter)))
    if counts == {width - 1}:
        return bare, at
    if not counts <= {0, width - 1, width}:
        return None, at
    rows: list[str] = []
    rows_at: list[int] = []
    for ln, n in zip(bare, at, strict=True):
        c = ln.count(delimiter)
        if c == width - 1:
            rows.append(ln)
        elif c == width and ln.endswith(delimiter):
            rows.append(ln[: -len(delimiter)])
        elif not ln.strip():
            continue
        else:
            return None, at
        rows_at.append(n)
    return (rows, rows_at) if rows else (None, at)


def _raising(exc: Exception) -> Iterator[str]:
    """No lines, but ``exc`` raised when the next one is asked for."""
    raise exc
    yield ""


def _not_a_unit_row(
    path: Path,
    body: list[list[str]],
    lines: list[int],
    header: list[str],
    chans: list[int],
    delimiter: str,
    decimal_comma: bool,
) -> None:
    """A row of units under the header (``s;g;g``) is refused: its cells are not numbers, the next row's are."""
    if not any(_is_number(c, decimal_comma) for c in body[0] if c.strip()):
        if all(_is_number(body[1][i], decimal_comma) for i in chans):
            raise DatasetError(
                f"{path}: line {lines[0]} ({delimiter.join(body[0])!r}) looks like units under the header; "
                f"write each unit in its header ({header[chans[0]]} [unit]) and delete that line"
            )


def _csv_numbers(
    path: Path, cells: list[str], lines: list[int], column: str, decimal_comma: bool
) -> np.ndarray:
    """A chunk of one channel column as numbers: numpy parses the cells at once (as ``float`` would);
    a cell it cannot read is looked for one by one to name its line."""
    try:
        if not decimal_comma:
            return np.array(cells, dtype=np.float64)
        if not any("." in c for c in cells):  # no thousands point to remove or refuse
            return np.array([c.replace(",", ".") for c in cells], dtype=np.float64)
    except ValueError:
        pass
    x = np.empty(len(cells))
    for k, v in enumerate(cells):
        try:
            x[k] = _number(v, decimal_comma) if v.strip() else np.nan  # empty: no value (a sparse channel)
        except ValueError as exc:
            spans = len(v.splitlines()) - 1
            if spans > 0:  # a quoted value over several lines: a quote opened and closed lines later
                raise DatasetError(
                    f'{path}: line {lines[k] - spans}: column {column!r}: a quote (") opened there is closed '
                    f"only at line {lines[k]}, so those lines read as one value ({v[:40]!r}...); fix or "
                    "remove it"
                ) from None
            if _DATE_OR_CLOCK.match(v):  # a date or a time of day under a name not known as a time column
                raise DatasetError(
                    f"{path}: line {lines[k]}: column {column!r} holds a date or a time of day "
                    f"({v if len(v) <= 60 else v[:60] + '...'!r}), not a number: the time column is told by its "
                    f"name ({', '.join(TIME_COLUMNS[:5])}, zeit, ...) and holds the date and time in one cell; "
                    "rename it so, joining a date column and a time column into one"
                ) from None
            why = str(exc) if decimal_comma and "decimal" in str(exc) else ""
            if not decimal_comma and _COMMA_NUMBER.fullmatch(
                v.strip()
            ):  # quoted in a file delimited by commas
                why = (
                    "a comma in a number of a file delimited by commas: a decimal comma or a thousands separator "
                    "(1,500), which cannot be told apart; export it with ';' between fields for decimal commas, "
                    "or without thousands separators"
                )
            raise DatasetError(
                f"{path}: line {lines[k]}: column {column!r} holds a value that is not a number "
                f"({v if len(v) <= 60 else v[:60] + '...'!r}{'; ' + why if why else ''})"
            ) from None
    return x


def _csv_times(
    path: Path, cells: list[str], lines: list[int], scale: float, comma_ok: bool, decimal_comma: bool
) -> np.ndarray:
    """A chunk of the time column in seconds: numbers at once where the file's numbers are plain,
    else (ISO 8601, decimal commas) cell by cell."""
    try:
        if not decimal_comma:
            return np.array(cells, dtype=np.float64) * scale
        if not any("." in c for c in cells):  # seconds with a decimal comma, no thousands point
            return np.array([c.replace(",", ".") for c in cells], dtype=np.float64) * scale
    except ValueError:
        pass
    return np.asarray(
        [
            _csv_time(v, f"{path}: line {n}", scale, comma_ok, decimal_comma)
            for v, n in zip(cells, lines, strict=True)
        ]
    )


def _csv_time(v: str, where: str, scale: float, comma_ok: bool, decimal_comma: bool) -> float:
    """A CSV time cell: seconds (scaled) in the file's number format, or ISO 8601."""
    reason = ""
    if comma_ok and ("," in v or decimal_comma):
        try:
            return _number(v, True) * scale
        except ValueError as exc:
            reason = str(exc)
    return _time_value(v, where, scale, reason)


# Excel's serial day numbers of 1990-01-01 and 2100-01-01 (its 1900 date system): a date-and-time cell saved in a
# column formatted as a number gives days since 1900 (45567.5: 2024-10-02 12:00), which read as seconds make the
# rate 86,400 times the real one. Seconds there (9 to 20 hours) lasting under a week are refused too, with the
# fix (the unit in the column's name) said; a name that says elapsed time is never a date.
_EXCEL_DAYS = (32874.0, 73051.0)
_EXCEL_SPAN_DAYS = 7.0
_ELAPSED = ("elapsed", "elapsed_time", "time_elapsed", "relative_time")


def _not_excel_days(path: Path, column: str, name: str, t: np.ndarray) -> None:
    """DatasetError when a time column without a unit holds Excel serial days, not seconds."""
    if len(t) < 2 or re.sub(r"[\s/-]+", "_", name.strip().lower()) in _ELAPSED:
        return
    first, last = float(t[0]), float(t[-1])
    if not (_EXCEL_DAYS[0] <= first <= _EXCEL_DAYS[1] and 0 < last - first < _EXCEL_SPAN_DAYS):
        return
    from datetime import timedelta

    when = datetime(1899, 12, 30) + timedelta(days=first)  # Excel's day 0 (its 1900 leap day counted)
    raise DatasetError(
        f"{path}: time column {column!r} starts at {first:.10g}: Excel serial days (a date and time saved as a "
        f"number: {when:%Y-%m-%d %H:%M:%S}), not seconds: read as seconds, the rate would be "
        f"{(len(t) - 1) / (last - first):.6g} Hz, 86,400 times the real one; format the column as a date and time "
        f"(yyyy-mm-dd hh:mm:ss.000) before saving the CSV, or, if these are seconds, name the column with its "
        f"unit: '{name} [s]'"
    )


def _table_recording(
    path: Path,
    data: dict[str, np.ndarray],
    t: np.ndarray | None,
    rate_hz: float | None,
    row: Callable[[int], str] | None = None,
    unit_s: float = 1.0,
) -> Recording:
    """A table's run: channels, and the rate from its time column (checked against ``rate_hz``) or ``rate_hz``;
    ``unit_s``: the seconds a count of the time column's declared unit is (``time [ms]``: 1e-3; 1: none)."""
    if t is None:
        if rate_hz is None:
            raise DatasetError(f"{path}: no time column ({_TIME_HINT}); give --rate-hz")
        return Recording(path.stem, rate_hz, data, path, row=row)
    if len(t) and abs(float(t[0])) >= 1e11:
        raise DatasetError(
            f"{path}: the time column starts at {float(t[0]):.6g}, past the year 5000 as seconds: "
            + _epoch_unit(float(t[0]) / unit_s, unit_s)
        )
    rate, tol = _times_rate(t, path, rate_hz, row)
    return Recording(path.stem, rate, data, path, tol, row)


# epoch times past the year 5000 as seconds: the unit their size says (now: 1.7e9 s, 1.7e12 ms, 1.7e15 us, 1.7e18 ns)
_EPOCH_UNITS = ((1e-3, "milliseconds", "ms"), (1e-6, "microseconds", "us"), (1e-9, "nanoseconds", "ns"))


def _epoch_unit(written: float, unit_s: float) -> str:
    """The unit a time column's first value (``written``, as the file holds it; ``unit_s`` the seconds a count of
    the column's declared unit is) most likely counts in: the coarsest finer than the declared one that puts it
    before the year 5000. From the value in seconds, a 'time [ms]' column of microseconds was told to be called
    'time [us]', and then 'time [ms]' again."""
    declared = next((f", not {u} as its name says" for s, u, _ in _EPOCH_UNITS if s == unit_s), "")
    for s, unit, short in _EPOCH_UNITS:
        if s < unit_s and abs(written) * s < 1e11:
            return f"epoch {unit}{declared}? name the column 'time [{short}]'"
    return "past it even as nanoseconds: a damaged time column?"


# the memory a table's read takes a row, measured (pyarrow 26, numpy 2.4; CSV and Parquet alike): its time column
# ~51-53 bytes (the text's or the table's copy, the seconds, the checks on their steps, a CSV row's line number),
# each channel read ~17 bytes (its copy and its float64)
_TIME_BYTES_A_ROW, _VALUE_BYTES_A_ROW = 56, 18


def _rows_fit(path: Path, rows: int, timed: bool, channels: int, about: str = "") -> None:
    """DatasetError when ``rows`` rows of a time column (``timed``) and ``channels`` channels would not fit in the
    memory free as numbers: a file larger than the memory, or a small Parquet file declaring millions of rows (1 MB
    of a constant channel and a delta-encoded time took 6.5 GB), ended with the process killed without a word.
    ``about``: "about " where the rows are estimated (a CSV's, counted through the file)."""
    need = rows * (_TIME_BYTES_A_ROW * timed + _VALUE_BYTES_A_ROW * channels)
    free = memory_available_bytes()
    if free is not None and need > free:
        raise DatasetError(
            f"{path}: {about}{rows:,} rows of {channels + timed} column(s) to read, about {need / 1e9:.1f} GB as "
            f"numbers, and {free / 1e9:.1f} GB is free here; split the run into shorter files, read only the "
            "channel used (--channel), or import it on a machine with more memory"
        )


def read_parquet(path: Path, rate_hz: float | None, pick: Keep | None = None) -> Recording:
    """Parquet, read like CSV (pyarrow: the cloud extra): the same time column names, a unit in a
    column's name (``time [ms]``, ``accel_x [g]``) read as there."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(
            f"{path}: Parquet needs pyarrow, which is not installed here (pip install "
            "'factory-edge[cloud]'); or export the run as CSV (timestamp + channel columns), WAV or "
            "NPZ"
        ) from None
    try:
        schema = pq.read_schema(path)
        rows = pq.read_metadata(path).num_rows
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file ({str(exc)[:200]})") from None
    names = list(schema.names)
    split = {n: _split_unit(n) for n in names}
    times = [n for n in names if _time_unit(*split[n]) is not None]
    # pandas stores a DataFrame's index as a column (``__index_level_0__`` when unnamed): a time index
    # is the time column when no column is named as one; any index is a row label, not a signal
    try:
        meta = schema.pandas_metadata or {}
        index = [c for c in meta.get("index_columns", []) if c in names]
    except (ValueError, TypeError, AttributeError):  # metadata another tool wrote under that key
        index = []
    if not times:
        at = [c for c in index if pa.types.is_timestamp(schema.field(c).type)]
        at += [c for c in index if pa.types.is_duration(schema.field(c).type)]
        times = at[:1]
        split.update({c: (c, "") for c in times})
    names = [n for n in names if n not in index or n in times]
    tcol = times[0] if times else None
    chans = [split[n][0] for n in names if n not in times]
    twice = sorted({c for c in chans if chans.count(c) > 1})
    if twice:
        raise DatasetError(f"{path}: more than one column is called {twice[0]!r} (units aside); rename one")
    if pick is not None:  # only these columns are read from the file
        wanted = set(pick(chans))
        names = [n for n in names if n == tcol or (n not in times and split[n][0] in wanted)]
    # the rows a file declares, not its size, are what its read takes
    _rows_fit(path, rows, tcol is not None, len(names) - (tcol is not None))
    try:
        # a page's CRC, where the writer stored one (parquet-mr and Spark do by default), checked: a damaged page
        # read without it gave other numbers than were written, without a word
        table = pq.read_table(path, columns=names, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file ({str(exc)[:200]})") from None
    if (why := _parquet_out_of_its_range(path, table)) is not None:
        raise DatasetError(f"{path}: not a readable Parquet file ({why})")
    if table.num_rows < 2:
        raise DatasetError(f"{path}: fewer than two rows")
    data, t, unit_s = {}, None, 1.0  # (unit_s: the seconds a count of the time column's declared unit is)
    for name in names:
        col = table.column(name)
        if col.null_count and name == tcol:  # a channel's nulls are NaN: refused if that channel is used
            row = int(pc.index(pc.is_null(col), True).as_py())
            raise DatasetError(
                f"{path}: column {name!r} has {col.null_count} missing values (the first at row "
                f"{row}); fill them or split the run there"
            )
        typ = col.type
        if name == tcol:
            scale = _time_scale(path, name, _time_unit(*split[name]) or "")
            if pa.types.is_floating(typ) and typ.bit_width < 64:
                own = col.to_numpy()  # float32 or float16: the spacing of its own type's largest time
                raw = own.astype(np.float64)
                if len(raw) > 1 and 10 * float(np.spacing(np.max(np.abs(own)))) > np.median(np.diff(raw)):
                    raise DatasetError(
                        f"{path}: time column {name!r} is {typ}, which holds about {7 if typ.bit_width == 32 else 3} "
                        f"digits: times up to {np.max(np.abs(raw)):.6g} cannot tell samples apart; store the "
                        "time as float64 or a timestamp"
                    )
            if pa.types.is_timestamp(typ) or pa.types.is_duration(typ):
                # any unit, any zone: seconds since the epoch (a duration, pandas' timedelta: elapsed), from the
                # column's own counts (UTC), not cast to nanoseconds, which overflowed (pyarrow's traceback) past
                # the year 2262
                t = col.cast(pa.int64()).to_numpy().astype(np.float64) / _ARROW_UNITS[typ.unit]
                if pa.types.is_timestamp(typ) and len(t) and abs(float(t[0])) >= 1e11:
                    raise DatasetError(
                        f"{path}: time column {name!r} is {typ} and starts "
                        f"{float(t[0]) * _ARROW_UNITS[typ.unit]:.6g} {typ.unit} after 1970, past the year 5000: "
                        f"its values are in a finer unit than the column declares ({_FINER[typ.unit]}); write them "
                        "with their own unit"
                    )
            elif pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
                # unsafe: an integer past 2^53 (epoch nanoseconds, as InfluxDB and Spark write them) rounded as numpy
                # rounds it; the safe cast raised pyarrow's ArrowInvalid, a traceback naming no file
                t, unit_s = col.cast(pa.float64(), safe=False).to_numpy() * scale, scale
            elif _text(pa, typ):
                t, unit_s = (
                    np.asarray(
                        [_time_value(v, f"{path}: row {i}", scale) for i, v in enumerate(col.to_pylist())]
                    ),
                    scale,
                )
            else:
                raise DatasetError(
                    f"{path}: time column {name!r} is {typ}; expected seconds, a timestamp, a duration or "
                    "ISO 8601 strings"
                )
        elif name in times:
            continue  # a second time column (an ISO stamp beside elapsed seconds): not a signal
        elif pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
            data[split[name][0]] = col.cast(pa.float64(), safe=False).fill_null(float("nan")).to_numpy()
        else:
            raise DatasetError(
                f"{path}: column {name!r} is {typ}, not a number; a channel column holds numbers "
                f"(the time column is called {_TIME_HINT})"
            )
    if not chans:
        raise DatasetError(f"{path}: no channel column besides the time column")
    rec = _table_recording(path, data, t, rate_hz, lambda i: f"row {i}", unit_s)
    rec.available = tuple(chans)
    rec.units = {split[n][0]: split[n][1] for n in names if n not in times}
    return rec


def _text(pa: Any, typ: Any) -> bool:
    """Whether an Arrow type holds text: a string, a large string, a string view (Polars 1.38 and Rust's arrow
    writers keep that type in a Parquet file) or a dictionary of any of them (a pandas category)."""
    if pa.types.is_dictionary(typ):
        return _text(pa, typ.value_type)
    view = getattr(pa.types, "is_string_view", None)  # pyarrow 16 and later
    return bool(pa.types.is_string(typ) or pa.types.is_large_string(typ) or (view is not None and view(typ)))


# an Arrow timestamp's or duration's counts a second, by its unit; what a count too large in each most likely is
_ARROW_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
_FINER = {
    "s": "milliseconds in a second column?",
    "ms": "microseconds in a millisecond column?",
    "us": "nanoseconds in a microsecond column?",
    "ns": "a damaged column?",
}


_WAV_PCM, _WAV_FLOAT, _WAV_EXTENSIBLE = 1, 3, 0xFFFE
_WAV_KINDS = {2: "MS ADPCM", 6: "A-law", 7: "mu-law", 17: "IMA ADPCM", 85: "MP3", 0x161: "WMA"}
_WAV_STREAMING_SIZES = (0, 0xFFFFFFFF)  # a size a streaming writer leaves before it knows the length


def _wav_layout(path: Path) -> tuple[int, int, int, int, int, int]:
    """(format 1 PCM | 3 float, channels, rate, bytes per sample, data offset, data bytes) from the RIFF
    chunks: ``fmt `` (plain, or WAVE_FORMAT_EXTENSIBLE with its sub-format) and ``data``, skipping any
    other chunk (LIST, fact, bext, cue, ...) with its pad byte. A data size of 0xFFFFFFFF (left by a
    streaming writer) means: to the end of the file; so does 0 when the RIFF size is unset too (0 or
    0xFFFFFFFF) or the bytes after the data chunk's header run to the end of the file without a chunk
    in them; a data chunk of size 0 followed by another chunk holds no samples."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) >= 12 and head[:4] == b"RIFX" and head[8:12] == b"WAVE":
            raise DatasetError(f"{path}: a big-endian WAV file (RIFX); export it little-endian (RIFF)")
        # BW64 (ITU-R BS.2088, broadcast): RF64's layout under another id, its ADM chunks (axml, chna) skipped
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
            raise DatasetError(f"{path}: not a WAV file (no RIFF/WAVE header)")
        fmt: tuple[int, int, int, int, int] | None = None
        ds64: int | None = (
            None  # RF64's data size (EBU Tech 3306: its ds64 chunk, the data chunk's says 0xFFFFFFFF)
        )
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, n = f.read(4), int.from_bytes(f.read(4), "little")
            body = pos + 8
            if cid == b"fmt ":
                raw = f.read(min(n, 40))
                if len(raw) < 16:
                    raise DatasetError(f"{path}: the WAV format chunk is cut short ({len(raw)} bytes)")
                tag, ch, rate = (
                    int.from_bytes(raw[i : i + k], "little") for i, k in ((0, 2), (2, 2), (4, 4))
                )
                align, bits = int.from_bytes(raw[12:14], "little"), int.from_bytes(raw[14:16], "little")
                if tag == _WAV_EXTENSIBLE:
                    if len(raw) < 40:
                        raise DatasetError(f"{path}: WAVE_FORMAT_EXTENSIBLE without its sub-format")
                    tag = int.from_bytes(raw[24:26], "little")  # the sub-format GUID's first two bytes
                fmt = (tag, ch, rate, align, bits)
            elif cid == b"ds64" and head[:4] in (b"RF64", b"BW64") and n >= 24:
                ds64 = int.from_bytes(f.read(24)[8:16], "little")  # after the RIFF size: the data size
            elif cid == b"data":
                if fmt is None:
                    raise DatasetError(f"{path}: the WAV data chunk comes before its format chunk")
                tag, ch, rate, align, bits = fmt
                if tag not in (_WAV_PCM, _WAV_FLOAT):
                    kind = _WAV_KINDS.get(tag, f"format tag {tag}")
                    raise DatasetError(
                        f"{path}: {kind} WAV is compressed or not sampled values; export PCM or float WAV, "
                        "or CSV/Parquet"
                    )
                width = (bits + 7) // 8
                ok = {_WAV_PCM: (1, 2, 3, 4), _WAV_FLOAT: (4, 8)}[tag]
                if width not in ok or ch < 1 or align != ch * width:
                    raise DatasetError(
                        f"{path}: {'PCM' if tag == _WAV_PCM else 'float'} WAV with {bits}-bit samples, {ch} "
                        f"channel(s) and {align}-byte frames is not readable; PCM takes 8/16/24/32 bits, float "
                        "32/64"
                    )
                if rate <= 0 or rate > MAX_WAV_RATE_HZ:
                    raise DatasetError(
                        f"{path}: the WAV header gives a sample rate of {rate} Hz"
                        + (f", above {MAX_WAV_RATE_HZ:,} Hz: a damaged header" if rate else "")
                    )
                left = size - body
                if n == 0xFFFFFFFF and ds64:  # an RF64 file's (its ds64 chunk has the size; 0: never set)
                    n = ds64
                streaming = n == 0xFFFFFFFF or (
                    n == 0 and int.from_bytes(head[4:8], "little") in _WAV_STREAMING_SIZES
                )
                if n == 0 and not streaming:
                    nxt = _chunk_at(f, body, size)
                    if left < align or nxt is not None:
                        raise DatasetError(
                            f"{path}: the WAV data chunk holds no samples (its size is 0"
                            + (f" and a {nxt!r} chunk follows it" if nxt else "")
                            + "); export the recording again"
                        )
                    streaming = True  # samples to the end of the file: a writer that never set sizes
                if streaming:  # to the end of the file, or to the chunks a writer appended after its data
                    if (end := _trailing_chunks(f, body, size, align)) is not None:
                        left = end - body
                    n = left - left % align
                elif n > left:
                    raise DatasetError(
                        f"{path}: the WAV data chunk declares {n} bytes but the file holds {left}: "
                        "truncated; export the recording again"
                    )
                if n % align:
                    raise DatasetError(f"{path}: the WAV data ({n} bytes) is not whole {align}-byte frames")
                return tag, ch, rate, width, body, n
            pos = body + n + (n & 1)
    raise DatasetError(f"{path}: no {'data' if fmt else 'format'} chunk in the WAV file")


# chunks a WAV writer puts after the data (metadata, tags, markers, padding)
_WAV_TRAILERS = (
    b"LIST", b"id3 ", b"ID3 ", b"bext", b"cue ", b"smpl", b"inst", b"fact", b"JUNK", b"junk", b"PAD ", b"FLLR",
    b"iXML", b"axml", b"_PMX", b"DISP", b"acid", b"cart", b"umid", b"labl", b"note", b"ltxt", b"plst", b"PEAK",
    b"levl", b"regn", b"afsp", b"chna", b"dbmd",
)  # fmt: skip
_WAV_TAIL_BYTES = 1 << 20  # how far before the end a streaming file's trailing chunks are looked for


def _trailing_chunks(f: Any, body: int, size: int, align: int) -> int | None:
    """Where the chunks appended after a streaming data chunk (size 0 or 0xFFFFFFFF: the writer did not know the
    length) begin, or None: in the file's last ``_WAV_TAIL_BYTES``, the first place a whole frame (or its pad
    byte) after the data's start where a known chunk begins and chunk follows chunk up to the end of the file
    exactly. Read as samples, a LIST chunk's text was 17 samples of noise at the recording's end."""
    start = max(body, size - _WAV_TAIL_BYTES)
    f.seek(start)
    tail = f.read(size - start)
    spots = sorted({start + i for cid in _WAV_TRAILERS for i in _find_all(tail, cid)})
    # chunk starts whose chain does not reach the end: a chain from a place is always the same, so each place is
    # walked once (walked again from every spot, a MiB of JUNK chunks falling short of the end took hours)
    failed: set[int] = set()
    for pos in spots:
        data = pos - body
        if data % align and not (
            (data - 1) % 2 and (data - 1) % align == 0
        ):  # (after an odd size: a pad byte)
            continue
        at, walked = pos, []
        while at + 8 <= size and at not in failed:
            walked.append(at)
            head = tail[at - start : at - start + 8]
            if not all(0x20 <= b <= 0x7E for b in head[:4]):
                break
            n = int.from_bytes(head[4:8], "little")
            at += 8 + n + (n & 1)
            if at == size or (n & 1 and at == size + 1):  # (an odd last chunk's pad byte may be left out)
                return pos
        failed.update(walked)  # (not a chain to the end: samples that look like a chunk's id)
    return None


def _find_all(data: bytes, sub: bytes) -> Iterator[int]:
    i = data.find(sub)
    while i >= 0:
        yield i
        i = data.find(sub, i + 1)


def _chunk_at(f: Any, pos: int, size: int) -> str | None:
    """The id of the RIFF chunk whose header is at ``pos`` (four printable ASCII bytes and a size
    that fits the file), or None."""
    f.seek(pos)
    head = f.read(8)
    if len(head) < 8 or not all(0x20 <= b <= 0x7E for b in head[:4]):
        return None
    return head[:4].decode("ascii") if pos + 8 + int.from_bytes(head[4:8], "little") <= size else None


def read_wav(path: Path, rate_hz: float | None, pick: Keep | None = None) -> Recording:
    """PCM (8-bit unsigned, 16/24/32-bit signed) and IEEE float (32/64-bit) WAV, plain or
    WAVE_FORMAT_EXTENSIBLE, any channels; samples scaled to full scale +-1 (float as written): integer
    samples divided by 2^(bits-1) (8-bit: 128 after removing its offset), so -full scale is exactly -1. Not
    Python's ``wave``, which reads neither float nor (before 3.12) extensible files, what DAQ and audio
    tools often write."""
    tag, n_ch, rate, width, offset, n = _wav_layout(path)
    channels = _WavChannels(path, tag, n_ch, width, offset, n)
    if not channels.frames:
        raise DatasetError(f"{path}: the WAV file holds no samples")
    if tag == _WAV_FLOAT:
        channels.check_finite()
    if rate_hz is not None and abs(rate - rate_hz) > RATE_TOLERANCE * rate_hz:
        raise DatasetError(
            f"{path}: the WAV header says {rate} Hz, --rate-hz says {rate_hz:g} Hz; fix --rate-hz"
        )
    return Recording(path.stem, float(rate), channels, path)


# the memory a WAV channel takes to read and check, a sample: its float64, and a byte of the import's checks on it (is
# it finite, does it rise like a clock); the integers it is converted through are a block's only
# (_WAV_BLOCK_FRAMES): read whole, they took up to 11 bytes more (24-bit: 19 measured against 16 reckoned, so a
# channel between the two passed the check and was killed for memory)
_WAV_BYTES_A_SAMPLE = 9
_WAV_BLOCK_FRAMES = 1 << 16


class _WavChannels(Mapping[str, np.ndarray]):
    """A WAV file's channels ``ch0``, ``ch1``, ..., each read from the file and scaled to float64 when first used,
    a block of ``_WAV_BLOCK_FRAMES`` frames at a time: a 2-GB, 8-channel recording costs the memory of the channel an
    import uses (8 bytes a sample), not of all eight, nor of the integers it is converted through."""

    def __init__(self, path: Path, tag: int, n_ch: int, width: int, offset: int, n: int) -> None:
        self.frames = n // (width * n_ch)
        self._tag, self._width, self._path, self._offset = tag, width, path, offset
        self._names = [f"ch{i}" for i in range(n_ch)]
        self._done: dict[str, np.ndarray] = {}
        self._frame: tuple[int, ...] = (n_ch, 3) if width == 3 else (n_ch,)
        if width == 3:
            self._dtype = np.dtype(np.uint8)
        elif tag == _WAV_FLOAT:
            self._dtype = np.dtype(f"<f{width}")
        else:
            self._dtype = np.dtype({1: "u1", 2: "<i2", 4: "<i4"}[width])

    def _blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first frame, its block of frames as written), each block mapped from the file while it is used (one
        mapping of the whole file kept the pages read through in the process's memory, up to the file's size)."""
        frame_bytes = int(np.prod(self._frame)) * self._dtype.itemsize
        for a in range(0, self.frames, _WAV_BLOCK_FRAMES):
            k = min(_WAV_BLOCK_FRAMES, self.frames - a)
            yield (
                a,
                np.memmap(  # (unmapped once the caller lets it go: at its next block)
                    self._path,
                    self._dtype,
                    "r",
                    offset=self._offset + a * frame_bytes,
                    shape=(k, *self._frame),
                ),
            )

    def check_finite(self) -> None:
        """Float samples: one line for the first NaN or Inf, counting them all."""
        first, count, value = -1, 0, 0.0
        for a, raw in self._blocks():
            flat = raw.reshape(-1)
            bad = np.flatnonzero(~np.isfinite(flat))
            if bad.size and first < 0:
                first, value = a * len(self._names) + int(bad[0]), float(flat[bad[0]])
            count += bad.size
        if count:
            n_ch = len(self._names)
            raise DatasetError(
                f"{self._path}: sample {first // n_ch} of channel {first % n_ch} is {value}; "
                f"{count} non-finite value(s) in the recording"
            )

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._done:
            if name not in self._names:
                raise KeyError(name)
            self._fits(name)
            i = self._names.index(name)
            x = np.empty(self.frames, dtype=np.float64)
            for a, raw in self._blocks():
                self._scaled(raw[:, i], x[a : a + len(raw)])
            self._done[name] = x
        return self._done[name]

    def _scaled(self, raw: np.ndarray, out: np.ndarray) -> None:
        """One block of a channel's samples, as written, into ``out`` scaled to full scale +-1."""
        if self._tag == _WAV_FLOAT:
            out[:] = raw
        elif self._width == 3:
            v = raw[:, 0].astype(np.int32)
            v |= raw[:, 1].astype(np.int32) << 8
            v |= raw[:, 2].astype(np.int32) << 16
            v[v >= 1 << 23] -= 1 << 24
            np.divide(v, float(1 << 23), out=out)
        elif self._width == 1:
            np.subtract(raw, 128.0, out=out)
            out /= 128
        else:
            np.divide(raw, float(1 << (8 * self._width - 1)), out=out)

    def _fits(self, name: str) -> None:
        """DatasetError when the channel, read as float64 and checked (``_WAV_BYTES_A_SAMPLE``, and a block of the
        integers it is converted through), would not fit in the memory free: a multi-GB recording (RF64's reason to be) ended with the
        process killed for want of memory, without a word (at 10-19 bytes a sample, read whole: 30 GB for a 6-GB
        16-bit file), where RF64 had been refused in one line."""
        need = self.frames * _WAV_BYTES_A_SAMPLE + _WAV_BLOCK_FRAMES * int(np.prod(self._frame)) * 16
        free = memory_available_bytes()
        if free is not None and need > free:
            raise DatasetError(
                f"{self._path}: channel {name} holds {self.frames:,} samples, about {need / 1e9:.1f} GB to read "
                f"as numbers, and {free / 1e9:.1f} GB is free here; split the recording into shorter files (runs), "
                "or import it on a machine with more memory"
            )

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an NPZ file; one DatasetError line for anything numpy cannot read as numbers."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if not magic:
        raise DatasetError(f"{path}: empty file (0 bytes); save the run again with numpy.savez")
    if magic[:2] != b"PK":
        raise DatasetError(
            f"{path}: not an NPZ archive (numpy.savez writes a zip file; this one starts with {magic!r}); "
            "save the run with numpy.savez"
        )
    try:  # within bounds: a zip bomb of a few KB is refused from its declared sizes (``npz_arrays``)
        arrays = npz_arrays(path, path)
    except NpzObjectArray as exc:
        raise DatasetError(
            f"{path}: array {exc.args[1]!r} holds Python objects, not numbers; save numeric arrays"
        ) from None
    except DatasetError:
        raise
    except Exception as exc:  # a damaged archive: BadZipFile, zlib.error, EOFError, ValueError, ...
        raise DatasetError(
            f"{path}: not a readable NPZ file ({type(exc).__name__}: {str(exc)[:200]}); save the run "
            "again with numpy.savez"
        ) from None
    for k, v in arrays.items():
        # numpy's datetime64 / timedelta64: a time array's, not a channel's
        if v.dtype.kind not in "iuf" and not (
            v.dtype.kind in "Mm" and _time_unit(*_split_unit(k)) is not None
        ):
            raise DatasetError(
                f"{path}: array {k!r} holds {v.dtype} values, not numbers; an NPZ run holds numeric "
                "channel arrays, sample_rate_hz or a timestamp array only"
            )
    return arrays


def read_npz(path: Path, rate_hz: float | None, pick: Keep | None = None) -> Recording:
    """NPZ: numeric arrays, one per channel, and ``sample_rate_hz`` (one number) and/or a time array
    (named as a time column: ``timestamp``, ``time_ms``, ...)."""
    arrays = _npz_arrays(path)
    rate = None
    if "sample_rate_hz" in arrays:
        given = arrays.pop("sample_rate_hz")
        if given.size != 1:
            raise DatasetError(
                f"{path}: sample_rate_hz holds {given.size} values (shape {given.shape}); it is one number, "
                "the rate in Hz"
            )
        rate = float(given.reshape(-1)[0])
        if not (np.isfinite(rate) and rate > 0):
            raise DatasetError(f"{path}: sample_rate_hz is {rate:g}; the rate is a number of Hz above 0")
        if rate_hz is not None and abs(rate - rate_hz) > RATE_TOLERANCE * rate_hz:
            raise DatasetError(
                f"{path}: sample_rate_hz in the file is {rate:g} Hz, --rate-hz says {rate_hz:g} Hz"
            )
    tol = 0.0
    times = [k for k in arrays if _time_unit(*_split_unit(k)) is not None]
    if times:
        tkey = times[0]
        scale = _time_scale(path, tkey, str(_time_unit(*_split_unit(tkey))))
        raw = arrays.pop(tkey).ravel()
        if (
            raw.dtype.kind in "Mm"
        ):  # numpy's datetime64 / timedelta64 (its unit in its type): seconds from the first
            t = (raw - raw[0]) / np.timedelta64(1, "s") if len(raw) else np.zeros(0)
        else:
            t = np.asarray(raw, dtype=np.float64) * scale
        for k in times[1:]:
            arrays.pop(k)
        rate, tol = _times_rate(t, path, rate if rate is not None else rate_hz)
    rate = rate if rate is not None else rate_hz
    if rate is None:
        raise DatasetError(f"{path}: no sample_rate_hz or timestamp array; give --rate-hz")
    chans = {}
    for k, v in arrays.items():
        a = np.asarray(v, dtype=np.float64)
        if a.ndim > 1 and sum(d > 1 for d in a.shape) <= 1:
            a = a.reshape(-1)  # (n, 1) or (1, n): one channel
        if a.ndim == 1:
            chans[k] = a
        elif a.ndim == 2 and min(a.shape) <= MAX_NPZ_CHANNELS and a.shape[0] != a.shape[1]:
            # an (n, channels) or (channels, n) array: the longer axis is time; each channel k[i]
            for i, c in enumerate(a.T if a.shape[0] > a.shape[1] else a):
                chans[f"{k}[{i}]"] = np.ascontiguousarray(c)
        elif a.ndim >= 2:
            raise DatasetError(
                f"{path}: array {k!r} has shape {a.shape}: save one 1-D array per channel, or one "
                f"(samples, channels) array of at most {MAX_NPZ_CHANNELS} channels"
            )
    if not chans:
        raise DatasetError(f"{path}: no channel array")
    if times:
        wrong = next(((k, len(c)) for k, c in chans.items() if len(c) != len(t)), None)
        if wrong:
            raise DatasetError(
                f"{path}: array {wrong[0]!r} holds {wrong[1]} samples but the time array {times[0]!r} "
                f"{len(t)}; one time per sample"
            )
    return Recording(path.stem, rate, chans, path, tol)


def read_recording(path: Path, rate_hz: float | None = None, pick: Keep | None = None) -> Recording:
    """One run's recording. ``pick``: given the file's channel names, the ones to read (CSV and
    Parquet read only those columns; WAV channels are read when used anyway); None: all."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DatasetError(not_a(path, "file"))
    readers = {".csv": read_csv, ".wav": read_wav, ".npz": read_npz, ".parquet": read_parquet}
    if suffix not in readers:
        raise DatasetError(f"{path}: unknown format {suffix!r}; expected .csv, .parquet, .wav or .npz")
    try:
        return readers[suffix](path, rate_hz, pick)
    except OSError as exc:  # a failing disk or share, no permission: one line, not a traceback
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from None


@dataclass
class LabelRow:
    run: str
    fault: str
    start_s: float | None
    end_s: float | None
    failure_s: float | None
    line: int = 0  # its line in the labels file
    # the fault as the file writes it (``nominal`` given to --healthy: its fault is healthy)
    written: str = ""


def read_labels(path: Path, healthy: Collection[str] = (), faults: Collection[str] = ()) -> list[LabelRow]:
    """The labels CSV as a spreadsheet saves it too: a byte-order mark, Excel's ``sep=;`` line, ``;`` or tab
    between fields with decimal commas (numbers read as a run's CSV reads them: in a file with decimal commas
    a point groups thousands, ``3.600`` is 3600 and ``3.6`` is refused), header names in any case; UTF-16 or
    UTF-32 text is refused naming it. A time that is not a finite number, a start not
    before its end, and a failure before the labelled span's end are refused naming the line. It is bounded
    as a dataset's labels are (``LABELS_MAX_BYTES``): a file of gigabytes (a recording given in its place) was
    read whole into memory. A fault ``healthy`` names (``--healthy nominal``, as the file writes it) is
    ``healthy``; one ``faults`` names (``--fault misalignment_h``) is not read as a misspelt known fault."""
    try:
        with open(path, "rb") as fh:
            data, size = read_capped(fh, LABELS_MAX_BYTES)
    except OSError as exc:
        raise DatasetError(f"labels file {path}: {exc.strerror or exc}") from None
    if size > LABELS_MAX_BYTES:
        raise DatasetError(
            f"labels file {path}: {size} bytes, more than the {LABELS_MAX_BYTES} a labels file may take; refused "
            "unread (a row is a run, its fault and times: is this the labels file?)"
        )
    refuse_wide_text(Path(path), data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(Path(path), exc) from None
    delimiter, _, decimal_comma = _csv_dialect(text)
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    rows: list[tuple[int, list[str]]] = []
    last = 0  # the line of the last row read whole
    try:
        for cells in reader:
            if "".join(cells).strip():
                rows.append((reader.line_num, cells))
            last = reader.line_num
    except csv.Error as exc:  # an unclosed quote running past the field size limit: one line, not a traceback
        raise _csv_damage(Path(path), reader, exc, last) from None
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if rows and _excel_sep(first):  # Excel's "sep=;" line, before the header
        rows = rows[1:]
    head = [c.strip().lower() for c in rows[0][1]] if rows else []
    if "run" not in head or "fault" not in head:
        raise DatasetError(
            f"{path}: needs a header with run,fault[,start_s,end_s,failure_s] (found {delimiter.join(head)!r})"
        )
    out = []
    for n, cells in rows[1:]:
        r = dict(zip(head, (c.strip() for c in cells), strict=False))
        written = r.get("fault") or ""
        why = None if written in healthy else _not_a_fault(written, faults)
        if why:
            raise DatasetError(f"{path}:{n}: fault {r.get('fault')!r} {why}")
        times: list[float | None] = []
        for k in ("start_s", "end_s", "failure_s"):
            v = r.get(k) or ""
            try:  # as a run's CSV reads it: in a file of decimal commas, "3.600" is 3600 (a thousands point)
                t = _number(v, decimal_comma) if v else None
            except ValueError as exc:
                why = f" ({exc})" if decimal_comma and "decimal" in str(exc) else ""
                raise DatasetError(f"{path}:{n}: {k} {v!r} is not a number of seconds{why}") from None
            if t is not None and not np.isfinite(t):
                raise DatasetError(f"{path}:{n}: {k} is {v!r}; leave it empty or give a number of seconds")
            times.append(t)
        start, end, failure = times
        if start is not None and end is not None and not start < end:
            raise DatasetError(f"{path}:{n}: start_s {start:g} is not before end_s {end:g}; swap them")
        if failure is not None and end is not None and failure < end:
            raise DatasetError(
                f"{path}:{n}: failure_s {failure:g} is before end_s {end:g}: windows after the failure would "
                "have a negative remaining life; end the label at the failure"
            )
        fault = "healthy" if written in healthy else written
        out.append(LabelRow(r.get("run", ""), fault, start, end, failure, n, written))
    return out


def _not_a_fault(name: str, faults: Collection[str] = ()) -> str | None:
    """Why a labels file's fault is refused, or None. Besides ``FAULTS``, a fault class of the dataset's own
    (a ``looseness``, a ``cavitation``: the trained model gets an output for it, ``data.fault_classes``), unless
    it reads as a misspelt one of those (it would train a class of its own) and ``faults`` (``--fault``) does not
    name it: ``misalignment_h`` (horizontal) or a grade ``bearing_outer2`` was refused as a typo with no way to
    keep the name. A name made of words naming a known fault (``misaligned``, ``imbalanced``) is no typo: kept as
    given alone like ``unbalanced``, refused beside the fault's own class (``_one_class_per_fault``)."""
    if name in FAULTS:
        return None
    synonym = fault_synonym(name)
    if synonym:
        return synonym + (f", or give --healthy {name}" if "'healthy'" in synonym else "")
    if not FAULT_NAME.fullmatch(name):
        said = f"is not a fault name (a lower-case word: {', '.join(FAULTS)}, or a class of your own)"
        # CamelCase and digits split into words: 'NormalRun', 'NoFault' read as the healthy machine
        word = reads_healthy(name)
        written = lower_case_name(name)
        if word:
            # a fault with a healthy word ('NormalWear', 'BaselineDrift') is told how to stay a fault too
            return (
                f"{said}; it reads as a name of the healthy machine ({word!r}): if its runs are healthy, give "
                f"--healthy {name}"
                + (
                    f"; if it is a fault, write it as {written!r} and give --fault {written}"
                    if written
                    else ""
                )
            )
        return (
            said
            + (f"; write it as {written!r}" if written else "")
            + f"; if it names the healthy machine, give --healthy {name}"
        )
    # 'healthy_1' is no typo: refused with the dataset's other such names (_healthy_names)
    if reads_healthy(name) or name in faults or all(w in FAULT_WORDS for w in name_words(name)):
        return None
    near = difflib.get_close_matches(name, FAULTS, n=1, cutoff=0.8)
    if near:
        return (
            f"is not one of {FAULTS}; is it a typo of {near[0]!r}? (if it is a class of your own, give "
            f"--fault {name})"
        )
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:  # either missing: said when it is read
        return False


def _a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _not_a_labels_file(path: Path) -> None:
    """A CSV that failed to read as a run: refused as a labels file (another than --labels names: a copy,
    a former version beside the runs) when its header has the labels' run and fault columns and its first
    row's run is not a number (a run's name). Its first row's fault is not asked: a class misspelt, another
    name of one ('Normal', 'OK') or a number is refused when the file is given as --labels, not read as a
    run's recording."""
    if path.suffix.lower() != ".csv":
        return
    try:
        with _csv_open(path) as fh:
            head = fh.read(1 << 16)
    except (OSError, UnicodeDecodeError):
        return
    delimiter, _, _ = _csv_dialect(head)
    lines = [ln for ln in head.splitlines() if ln.strip()]
    lines = lines[1:] if lines and _excel_sep(lines[0]) else lines
    try:
        rows = [[c.strip().lower() for c in r] for r in csv.reader(lines[:2], delimiter=delimiter)]
    except csv.Error:
        return
    names = rows[0] if rows else []
    # a recording with channels called run and fault (a counter, a code) is not one: its run is a number
    first = dict(zip(names, rows[1], strict=False)) if len(rows) > 1 else {}
    if "run" in names and "fault" in names and not _a_number(first.get("run", "")):
        raise DatasetError(
            f"{path}: its columns ({','.join(names)[:80]}) are a labels file's, not a run's recording; leave it "
            "out of the files to import (name the runs' files, not the whole folder) or give it as --labels"
        )


def import_vibration(
    files: list[Path],
    out: Path,
    labels_file: Path,
    *,
    channel: str | None = None,
    rate_hz: float | None = None,
    resample_to: float | None = None,
    window_samples: int = 2048,
    hop_samples: int | None = None,
    speed_channel: str | None = None,
    bearing: list[float] | None = None,
    healthy: list[str] | None = None,
    faults: list[str] | None = None,
    unit: str | None = None,
    scale: float | None = None,
) -> dict:
    """``unit``: the signal's unit in the files that name none (WAV, NPZ, a header without ``[unit]``), ``scale``:
    what their samples are multiplied by to be in it (a PCM WAV's full scale in ``unit``); see ``_one_unit``."""
    for option, hz in (("--rate-hz", rate_hz), ("--resample-to", resample_to)):
        if hz is not None and not (np.isfinite(hz) and 0 < hz <= MAX_WAV_RATE_HZ):
            raise DatasetError(f"{option} {hz:g}: a sample rate is a number of Hz above 0 (at most 10 MHz)")
    for option, count, least in (("--window-samples", window_samples, 8), ("--hop-samples", hop_samples, 1)):
        if count is not None and count < least:
            raise DatasetError(f"{option} {count}: a number of samples, at least {least}")
    out = Path(out)
    # as `dataset import` of images: written into it, another dataset's dataset.yaml (an image dataset's, by a
    # slip) was replaced, or an earlier import's windows without a word
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} exists and is not empty; choose a new dataset folder")
    # a glob of the runs' folder (`data/*.csv --labels data/labels.csv`) names the labels file too: it is
    # the labels, never a run (it was read as one: "column 'run' holds a value that is not a number")
    given = len(files)
    files = [f for f in files if not _same_file(Path(f), Path(labels_file))]
    if given and not files:  # only the labels file: "no files to import" said neither which nor why
        raise DatasetError(
            f"no files to import: the only file given, {labels_file}, is the labels file (--labels; its rows name "
            "the runs, their faults and times, it is not a run); give the runs' recordings beside it, one file per "
            "run named as the labels' run column names it (CSV, Parquet, WAV or NPZ)"
        )
    _one_recording_each([Path(f) for f in files])
    names = run_names([Path(f) for f in files])
    # two files a run each of one name (run1.csv beside run1.wav, run1.CSV beside run1.csv, or a folder made on
    # macOS beside one typed): one labels row would label both and split_runs could put one in train, the other
    # in test; refused as before runs were paths
    first: dict[str, Path] = {}
    for f, run in zip(files, names, strict=True):
        if (twin := first.setdefault(run, Path(f))) != Path(f):
            raise DatasetError(
                f"{twin} and {f} are both run {run!r} (a run is its file's path from the files' common folder "
                "without the suffix, as the labels name it); rename one"
            )
    recs, used = [], {}
    # without --channel: (a file, the channel taken, its channels), one per layout of the files read
    firsts: list[tuple[Path, str, tuple[str, ...]]] = []
    for f, run in zip(files, names, strict=True):
        # read and keep only the channels this import uses: the others of every run need not be parsed
        # nor stay in memory
        try:
            rec = read_recording(Path(f), rate_hz, partial(_used_channels, channel, speed_channel))
        except DatasetError:
            _not_a_labels_file(Path(f))
            raise
        rec.run = run
        available = rec.available or tuple(rec.channels)
        name = channel or next((c for c in available if c != speed_channel), "")
        for c in (name, speed_channel):
            if c is not None and c not in rec.channels:
                raise DatasetError(f"{rec.source}: no channel {c!r}; it has {sorted(available)}")
        if channel is None:
            _one_first_channel(firsts, rec.source, name, available)
        if len(available) > 1 + bool(speed_channel):  # say which of several was taken
            used[rec.run] = f"{name} (of {', '.join(available)})"
        else:
            used[rec.run] = name
        rec.channels = {c: rec.channels[c] for c in dict.fromkeys((name, speed_channel)) if c is not None}
        recs.append(rec)
    if not recs:
        raise DatasetError("no files to import")
    given_unit = unit
    unit, bare = _one_unit(recs, channel, unit, scale)
    if bearing is not None:
        from cloud_trainer.train.maintenance import bearing_geometry

        bearing = list(bearing_geometry(bearing, "--bearing"))
    _settle_rates(recs)
    rates = sorted({r.rate_hz for r in recs})
    if resample_to is None and len(rates) > 1:
        listing = ", ".join(f"{r.source.name} {r.rate_hz:.8g} Hz" for r in recs)
        raise DatasetError(f"mixed rates: {listing}; import each rate separately or give --resample-to HZ")
    target = resample_to or rates[0]
    if target > MAX_SAMPLE_RATE_HZ:
        # an NPZ's stated rate or float-second timestamps are bounded by nothing else: written, the dataset
        # was refused by training, which reads at most the finest a nanosecond timestamp states
        raise DatasetError(
            f"{recs[0].source}: sampled at {target:.8g} Hz, above the {MAX_SAMPLE_RATE_HZ:,} Hz a vibration "
            "dataset may be trained at; give --resample-to HZ"
        )
    labels = read_labels(labels_file, healthy or (), faults or ())
    _healthy_names(labels, labels_file, healthy or [], faults or [])
    _one_class_per_fault(labels, labels_file)
    _labelled_runs(labels, labels_file, recs)
    # a sample counter taken by default is told to pick --channel, not that the runs are copies
    if channel is None:
        for rec in recs:
            _not_a_time_ramp(rec, next((c for c in rec.channels if c != speed_channel), ""))
    _no_copies(recs, labels, channel, speed_channel)
    # (a run no labels row names gives no window: not asked of)
    labelled, bare_runs = {lab.run for lab in labels}, {r.run for r in bare}
    said = _unitless(recs, [r for r in bare if r.run in labelled], unit, given_unit)
    hop = hop_samples if hop_samples is not None else window_samples
    waves, fault, health, rul, run_id, t_s, speeds = [], [], [], [], [], [], []
    from cloud_trainer.train.maintenance import VISIBLE_HEALTH

    fault_health = VISIBLE_HEALTH - 0.01  # the most health a window labelled with a fault is given
    skipped = swings = 0
    matched: set[int] = set()  # the label rows that labelled a window
    length: dict[str, float] = {}  # each run's length in seconds
    for k, rec in enumerate(recs):
        name = channel or next((c for c in rec.channels if c != speed_channel), "")
        x = _channel(rec, name, target)
        if scale is not None and rec.run in bare_runs:
            x = x * scale
        speed = _channel(rec, speed_channel, target) * _rpm_per(rec, speed_channel) if speed_channel else None
        mine = [lab for lab in labels if lab.run == rec.run]
        length[rec.run] = len(x) / target
        for start in range(0, len(x) - window_samples + 1, hop):
            t0, t1 = start / target, (start + window_samples) / target
            hits = [
                lab
                for lab in mine
                if (lab.start_s is None or t0 >= lab.start_s) and (lab.end_s is None or t1 <= lab.end_s)
            ]
            if not hits:
                skipped += 1
                continue
            lab = hits[0]
            matched.update(id(h) for h in hits)
            other = next((h for h in hits if (h.fault, h.failure_s) != (lab.fault, lab.failure_s)), None)
            if other is not None:
                raise DatasetError(
                    f"{labels_file}: lines {lab.line} and {other.line} both label run {rec.run!r} from "
                    f"{t0:g} to {t1:g} s, one {lab.fault}"
                    + (f" failing at {lab.failure_s:g} s" if lab.failure_s is not None else "")
                    + f", the other {other.fault}"
                    + (f" failing at {other.failure_s:g} s" if other.failure_s is not None else "")
                    + "; give each time span one label"
                )
            if lab.failure_s is not None and lab.failure_s < t1:
                raise DatasetError(
                    f"{labels_file}:{lab.line}: failure_s {lab.failure_s:g} is before the end of run "
                    f"{rec.run!r}'s window at {t1:g} s: windows after the failure would have a negative "
                    "remaining life; end the label at the failure (end_s)"
                )
            waves.append(x[start : start + window_samples].astype(np.float32))
            if len(waves) * window_samples * 4 > NPZ_MAX_BYTES:  # before they fill the memory
                raise _too_many_windows(len(waves) * window_samples * 4, window_samples, hop)
            if speed is not None:
                seg = speed[start : start + window_samples]
                speeds.append(float(np.mean(seg)))
                swings += bool(np.std(seg) > 0.5 * abs(speeds[-1]))
            fault.append(lab.fault)
            # health: the fraction of the run's life left where its failure time is known (what the
            # trainer's remaining-life output learns: life = health x a machine's mean life), kept
            # below the trainer's VISIBLE_HEALTH: a window labelled with a fault shows it, however far
            # the failure; a fault without a failure time 0.5, as before
            if lab.fault == "healthy":
                health.append(1.0)
            elif lab.failure_s is not None and lab.failure_s > 0:
                health.append(min(fault_health, max(0.0, (lab.failure_s - t1) / lab.failure_s)))
            else:
                health.append(0.5)
            rul.append(lab.failure_s - t1 if lab.failure_s is not None else np.nan)
            run_id.append(k)
            t_s.append(t1)
    idle = next((lab for lab in labels if id(lab) not in matched), None)
    n = round(length[idle.run] * target) if idle is not None else window_samples
    if idle is not None and n < window_samples:
        # a run shorter than a window (a DAQ's short capture, a test trigger) gives no window at all: said as
        # such, naming its file, not as a span to correct
        source = next(r.source for r in recs if r.run == idle.run)
        raise DatasetError(
            f"{source}: run {idle.run!r} holds {n} samples ({length[idle.run]:g} s), fewer than a window of "
            f"{window_samples} ({window_samples / target:g} s): it gives no window, and {labels_file}:{idle.line} "
            "labels it; leave the run out"
            + (
                f", or give --window-samples {n} or less for every run"
                if n >= 8
                else " (a window is 8 samples at least)"
            )
        )
    if idle is not None:  # a row that labels nothing: seconds from another origin (epoch, ms), a typo
        raise DatasetError(
            f"{labels_file}:{idle.line}: labels no window of run {idle.run!r}: it spans "
            f"{idle.start_s if idle.start_s is not None else 0:g}-"
            f"{idle.end_s if idle.end_s is not None else length[idle.run]:g} s, the run 0-{length[idle.run]:g} s "
            f"in windows of {window_samples / target:g} s (times are seconds from the run's start)"
        )
    if speed_channel and swings > len(speeds) / 2:
        raise DatasetError(
            f"--speed-channel {speed_channel}: in {swings} of {len(speeds)} windows it swings by more than half "
            "its mean within the window, as a tachometer's pulse train or a noisy voltage does, not a speed: "
            "give a channel holding the shaft speed in rpm, or leave --speed-channel out (the trainer then "
            "finds the speed in the spectrum)"
        )
    if not waves:
        raise DatasetError(
            f"no labelled window of {window_samples} samples: check {labels_file} (runs, start_s/end_s)"
        )
    if len(set(fault)) < 2:
        raise DatasetError(
            f"only fault {sorted(set(fault))} is labelled; training needs healthy and faulty runs"
        )
    if "healthy" not in fault:  # training refused it: a fault is learned against the healthy machine
        raise DatasetError(
            f"{labels_file}: no class is the healthy machine (labelled windows: {sorted(set(fault))}): the model "
            "learns each fault against the healthy machine; label its runs 'healthy', or name their class with "
            "--healthy NAME (a name of your own: --healthy nominal)"
        )
    meta = {
        "generator": "cloud-trainer dataset import --kind vibration",
        "window_samples": window_samples,
        "sample_rate_hz": float(target),
        # a folder named in bytes that are not UTF-8 as \xfc: kept as "\uDCFC", training's reader refused the file
        "runs": {k: path_text(r.source) for k, r in enumerate(recs)},
        "channels": used,  # the channel each run's windows are from (of the file's channels)
        "labels": path_text(labels_file),
        # the labels' classes imported as healthy (--healthy), as the labels file writes them
        **({"healthy_labels": list(healthy)} if healthy else {}),
        # the labels' classes whose names read as healthy imported as faults (--fault): training honours them
        **({"fault_labels": list(faults)} if faults else {}),
        # the fault classes, those the labels file names beyond FAULTS after them (data.fault_classes)
        "faults": [*FAULTS, *sorted(set(fault) - set(FAULTS))],
        "windows": len(waves),
        "unlabelled_windows_skipped": skipped,
    }
    if bearing is not None:
        meta["bearing"] = {
            "n_elements": int(bearing[0]),
            "ball_d_mm": bearing[1],
            "pitch_d_mm": bearing[2],
            "contact_angle_deg": bearing[3],
        }
    if unit:
        # the signal's, as the headers write it (the simulator's datasets' form: a unit per array); build
        # maintenance's features need it
        meta["units"] = {"waveform": unit}
    if speed_channel:
        meta["speed_channel"] = speed_channel
    meta_text = yaml.safe_dump(meta, sort_keys=False)
    if len(meta_text.encode()) > DATASET_YAML_MAX_BYTES:
        # training reads dataset.yaml within this bound: refused here, before anything is written
        raise DatasetError(
            f"{len(recs)} runs make a dataset.yaml of {len(meta_text.encode())} bytes, over the"
            f" {DATASET_YAML_MAX_BYTES} training reads: import the runs in parts (or from shorter paths)"
        )
    arrays: dict[str, Any] = {
        "waveform": np.stack(waves),
        "fault": np.asarray(fault),
        "health": np.asarray(health, np.float32),
        "rul_s": np.asarray(rul),
        "run_id": np.asarray(run_id),
        "t_s": np.asarray(t_s),
    }
    if speed_channel:
        arrays["speed_rpm"] = np.asarray(speeds)
    digest = _write_dataset(out, arrays, meta_text, hop)
    return {
        "dataset": str(out),
        "windows": len(waves),
        "runs": len(recs),
        "channels": used,
        "sample_rate_hz": target,
        "unlabelled_windows_skipped": skipped,
        "faults": {f: fault.count(f) for f in sorted(set(fault))},
        **({"healthy_labels": list(healthy)} if healthy else {}),
        **({"fault_labels": list(faults)} if faults else {}),
        "unit": unit,
        **({"scaled": {"runs": len(bare), "by": scale}} if scale is not None and bare else {}),
        **({"warning": said} if said else {}),
        "digest": digest,
    }


def run_names(files: list[Path]) -> list[str]:
    """Each file's run: its path from the files' common folder, without the suffix, ``/`` between folders
    (``healthy/run1`` and ``outer/run1`` for a folder per class whose DAQ names each class's files run1,
    run2, ...; the stem alone when the files share one folder, as before). A run was its file's stem: two class
    folders of a run1 each were refused as one run given twice. In Unicode's composed form (NFC), as
    ``_labelled_runs`` reads the labels: a folder made on macOS names ``gesund_lager_ö`` with a separate accent
    (NFD), and a label typed as one character matched no run."""
    paths = [Path(os.path.abspath(f)) for f in files]
    if not paths:
        return []
    root = Path(os.path.commonpath([p.parent for p in paths]))
    return [_nfc(p.relative_to(root).with_suffix("").as_posix()) for p in paths]


def _nfc(name: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFC", name)


_HEAD_BYTES = 1 << 16


def _digest(path: Path, whole: bool) -> str:
    """A file's bytes' digest: its first and last 64 KiB (``whole`` False: files of equal size told apart
    without reading them), or all of it."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if whole:
            for block in iter(partial(fh.read, 1 << 20), b""):
                h.update(block)
        else:
            h.update(fh.read(_HEAD_BYTES))
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - _HEAD_BYTES))
            h.update(fh.read(_HEAD_BYTES))
    return h.hexdigest()


def _one_recording_each(files: list[Path]) -> None:
    """Refuse a recording given twice: one file named twice (two globs, a link to it), and files of one name
    holding the same bytes (a copy of ``healthy/run1.csv`` as ``outer/run1.csv``: its windows would be trained
    twice, under two labels). Files of one name were refused as one run before runs were paths; those whose
    bytes differ (a folder per class, each with its run1) are runs of their own. Only files of one name and
    size are read, their first and last 64 KiB first, so a DAQ's runs of one length cost little."""
    seen: dict[tuple[int, int], Path] = {}
    by_name: dict[tuple[str, int], list[Path]] = {}
    for f in files:
        try:
            st = f.stat()
        except OSError:  # missing or unreadable: said when it is read
            continue
        if not f.is_file():
            continue
        twin = seen.get((st.st_dev, st.st_ino))
        if twin is not None:
            same = (
                "given twice" if os.path.abspath(twin) == os.path.abspath(f) else f"the same file as {twin}"
            )
            raise DatasetError(
                f"{f} is {same}: one run is one file; name each once (do two globs or a link name it again?)"
            )
        seen[st.st_dev, st.st_ino] = f
        by_name.setdefault((f.name, st.st_size), []).append(f)
    for group in by_name.values():
        for heads in _same_digest(group, False):
            for twins in _same_digest(heads, True):
                raise DatasetError(
                    f"{twins[0]} and {twins[1]} hold the same bytes: one recording given twice (a copy), its "
                    "windows would be trained twice (under two labels when the copy sits in another class's "
                    "folder); leave the copy out"
                )


# two runs are one recording when COPY_SHARE of their aligned windows of _COPY_WINDOW samples hold the same AC
# samples up to scale and sign: each window's mean removed, the residual RMS under COPY_TOLERANCE of the window's
# own or within the runs' rounding (a 16-bit WAV of a run's quiet part). Measured
# (/work/notes53/probe_vibimport/p1c_ratio.out): a CSV a logger wrote with 6 decimals beside the 16-bit WAV of the
# same run differs by the WAV's rounding, 0.04 % for a run peaking at 8 % of its range, 0.4 % at 0.8 %; two
# recordings of one machine differ by 135 %, two tach-triggered runs of a steady machine (0.2 mg of noise under a
# 0.05 g 1x) by 0.8 %. Per window and not over the whole run: a start-up transient, a trigger click, a DC level or
# a full-scale channel two genuine runs share is one window or none, not the run
# (/work/notes53/review_vibimport/p2_edges.out: such runs were refused as copies), and a copy whose converter
# clipped one impact is still one. Two triggered captures of one pure tone are the same waveform: refused.
# COPY_TOLERANCE gates pairs (probes); a window is alike within WINDOW_TOLERANCE and the runs' rounding: a copy
# differs by its rounding alone, while two tach-synchronous averages of one healthy gearbox (200 revolutions
# averaged) or two once-per-rev captures of a fan differed by under 0.5 % and were refused at it
# (/work/notes53/review_vibmend/q1.out). A window within 2 rounding steps of flat in either run is neither alike nor
# not: a quiet machine's 1 g logged to 1 mg matched "within rounding" whatever it held. Past MAX_COMPARED_SAMPLES
# pairs compared in full the check stops, saying so: 2,000 triggered captures with their event at one offset pass
# both gates and took 32-37 min (q2.out)
COPY_TOLERANCE = 0.005
WINDOW_TOLERANCE = 1e-4
# samples of pairs compared in full (5,000 pairs of 256,000 samples, ~1.2-4 ms each: seconds); counted in samples,
# not pairs: a pair of 10-min runs at 25.6 kHz took 80 ms
MAX_COMPARED_SAMPLES = 5_000 * 256_000
COPY_SHARE = 0.9
_COPY_WINDOW = 2048
_COPY_PROBES = 64  # samples compared first, spread over the run: runs differing there are not read further
_COPY_SEGMENTS = 256  # and the RMS of as many equal segments: quiet runs (a ring in silence) differ there


def _copy_signature(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A run's probes and segment RMS profile, its mean removed and over its RMS; None for a run with no
    variation to tell apart (flat, stuck at a level, pinned at full scale) or not finite (refused later)."""
    with np.errstate(
        invalid="ignore", over="ignore"
    ):  # an Inf or NaN sample: no signature, refused later, alone
        mean = float(np.mean(x))
        rms = float(np.std(x))
    if not (np.isfinite(rms) and rms > 1e-9 * max(1.0, abs(mean))):
        return None
    probes = (x[np.linspace(0, len(x) - 1, _COPY_PROBES).astype(np.int64)] - mean) / rms
    m = len(x) // _COPY_SEGMENTS * _COPY_SEGMENTS
    segments = np.zeros(_COPY_SEGMENTS)
    if m:
        segments = np.sqrt(np.mean(np.square((x[:m] - mean) / rms).reshape(_COPY_SEGMENTS, -1), axis=1))
    return probes, segments


def _no_copies(
    recs: list[Recording], labels: list[LabelRow], channel: str | None, speed_channel: str | None
) -> int:
    """Refuse two labelled runs holding one recording under two names (``healthy/run1.csv`` copied as
    ``outer/run7.csv``, a run's WAV beside a CSV written from it, in one class or two): its windows trained twice,
    under two labels a contradiction, and the split could hold one out while training the other (a gate passed on
    a run it trained on). Compared on the decoded samples of the channel used, window by window, each window's mean
    removed and up to scale and sign (a copy in another unit or scale, 16-bit counts beside a float CSV, negated,
    its DC removed, is one too; the trained features are the same for all of these), not on bytes:
    ``_one_recording_each`` compares only files of one name. Runs of one length are compared, a pair in full only
    when its probes and segment profiles allow a copy. Returns how many pairs were compared in full."""
    runs = {lab.run for lab in labels}
    by_length: dict[int, list[tuple[Recording, np.ndarray, np.ndarray, np.ndarray]]] = {}
    for rec in recs:
        if rec.run not in runs:
            continue
        x = rec.channels[channel or next(c for c in rec.channels if c != speed_channel)]
        if not len(x) or (sig := _copy_signature(x)) is None:
            continue
        by_length.setdefault(len(x), []).append((rec, x, *sig))
    labelled: dict[str, list[str]] = {}
    for lab in labels:
        labelled.setdefault(lab.run, [])
        if lab.written not in labelled[lab.run]:
            labelled[lab.run].append(lab.written)
    full = compared = 0
    steps: dict[int, float] = {}
    for group in by_length.values():
        if len(group) < 2:
            continue
        probes = np.stack([g[2] for g in group])
        segments = np.stack([g[3] for g in group])
        for i, (a, xa, pa, sa) in enumerate(group[:-1]):
            # gates a true copy always passes: 3/4 of its probes agree up to sign (a copy differs in at most
            # 1 - COPY_SHARE of its windows), and segment profiles of two unit-RMS runs differ (RMS over the
            # segments) by at most the RMS of the runs' difference (triangle inequality), small for a copy
            close = (
                np.minimum(np.abs(probes[i + 1 :] - pa), np.abs(probes[i + 1 :] + pa)) <= 8 * COPY_TOLERANCE
            )
            apart = np.sqrt(np.mean(np.square(segments[i + 1 :] - sa), axis=1))
            for j in np.flatnonzero((close.mean(axis=1) >= 0.75) & (apart <= 0.5)) + i + 1:
                b, xb, _, _ = group[j]
                if compared >= MAX_COMPARED_SAMPLES:
                    print(
                        f"cloud-trainer dataset import: the check for one recording under two names stopped after "
                        f"{full} pairs compared in full (runs alike at every probe, e.g. triggered captures): "
                        "copies among the rest are not looked for",
                        file=sys.stderr,
                    )
                    return full
                full += 1
                compared += len(xa)
                if (ratio := _same_windows(xa, xb, steps)) is not None:
                    scaled = (
                        f", one {abs(ratio):.4g}x the other" if abs(abs(ratio) - 1) > COPY_TOLERANCE else ""
                    ) + (", negated" if ratio < 0 else "")
                    raise DatasetError(
                        f"{a.source} and {b.source} hold the same samples{scaled} (run {a.run!r}, labelled "
                        f"{'/'.join(labelled[a.run])}; run {b.run!r}, labelled {'/'.join(labelled[b.run])}): one "
                        "recording under two names, its windows would train twice (under two labels, each against "
                        "the other) and the split could test one on the model trained on the other; leave the copy "
                        "out"
                    )
    return full


def _same_windows(xa: np.ndarray, xb: np.ndarray, steps: dict[int, float], block: int = 32) -> float | None:
    """For two runs of one length holding the same samples (``COPY_SHARE`` of their aligned windows alike up to
    scale and sign, windows flat in both counted with neither), the second's scale over the first's, negative
    when negated; else None. A window is alike when what is left of the second after the first's part is taken
    out is under ``WINDOW_TOLERANCE`` of it or within both runs' rounding (a 16-bit WAV of a run's quiet part is
    its rounding: a copy all the same); a window within 2 rounding steps of flat in either run holds nothing to
    compare. ``steps`` caches each run's rounding step by id."""
    for x in (xa, xb):
        if id(x) not in steps:
            steps[id(x)] = _value_step(x)
    qa, qb = steps[id(xa)], steps[id(xb)]
    n = min(_COPY_WINDOW, len(xa))
    m = len(xa) // n * n
    match = live = 0
    dots = norms = 0.0
    for k in range(0, m, block * n):
        a = xa[k : min(m, k + block * n)].reshape(-1, n)
        b = xb[k : min(m, k + block * n)].reshape(-1, n)
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean(axis=1, keepdims=True)
        aa, bb, dot = np.sum(a * a, axis=1), np.sum(b * b, axis=1), np.sum(a * b, axis=1)
        scale = np.divide(dot, aa, out=np.zeros(len(a)), where=aa > 0)
        left = np.sqrt(np.maximum(bb - scale * dot, 0.0) / n)  # the RMS of b - scale a
        rounding = 1.2 * (qa * np.abs(scale) + qb) / np.sqrt(12.0)
        on_a, on_b = np.sqrt(aa / n) > 2 * qa, np.sqrt(bb / n) > 2 * qb  # above the rounding: something held
        alike = (aa > 0) & (bb > 0) & on_a & on_b & (left <= WINDOW_TOLERANCE * np.sqrt(bb / n) + rounding)
        match += int(np.sum(alike))
        live += int(np.sum(((aa > 0) & on_a) | ((bb > 0) & on_b)))
        dots += float(np.sum(dot[alike]))
        norms += float(np.sum(aa[alike]))
    if not live or match < COPY_SHARE * live or not norms:
        return None
    return dots / norms


def _value_step(x: np.ndarray) -> float:
    """The smallest step between a run's values: its rounding (1/32768 for a 16-bit WAV, 1e-6 for a CSV of 6
    decimals), about nothing for a float recording; over at most 65,536 samples spread over the run."""
    values = np.unique(x[:: max(1, len(x) // 65536)])
    return float(np.min(np.diff(values))) if len(values) > 1 else 0.0


def _same_digest(files: list[Path], whole: bool) -> list[list[Path]]:
    """The files of one digest (``_digest``), for each digest two or more of them have."""
    if len(files) < 2:
        return []
    digests: dict[str, list[Path]] = {}
    for f in files:
        try:
            digests.setdefault(_digest(f, whole), []).append(f)
        except OSError:  # said when it is read
            continue
    return [g for g in digests.values() if len(g) > 1]


def _labelled_runs(labels: list[LabelRow], labels_file: Path, recs: list[Recording]) -> None:
    """Each labels row's run made the run of a file (``LabelRow.run``): a run's path without the suffix as
    ``run_names`` gives it (``healthy/run1``; ``\\`` as Windows writes it, or with the file's suffix, read alike),
    or its file's stem when no other file has that stem (labels written before runs were paths). A stem
    several files have is refused naming them and their runs; a run no file has, naming the runs."""
    runs = {r.run for r in recs}
    by_stem: dict[str, list[Recording]] = {}
    for r in recs:
        by_stem.setdefault(_nfc(r.source.stem), []).append(r)
    suffixed = {r.run + _nfc(r.source.suffix): r.run for r in recs}
    unknown = []
    for lab in labels:
        name = _nfc(lab.run.replace("\\", "/").strip("/"))
        name = suffixed.get(name, name)
        if name in runs:
            lab.run = name
            continue
        same = by_stem.get(name, [])
        if len(same) == 1:
            lab.run = same[0].run
        elif same:
            raise DatasetError(
                f"{labels_file}:{lab.line}: run {lab.run!r} is the name of {len(same)} files "
                f"({', '.join(str(r.source) for r in same)}); name the run by its path: "
                f"{' or '.join(repr(r.run) for r in same)}"
            )
        else:
            unknown.append(lab.run)
    if unknown:
        raise DatasetError(
            f"{labels_file}: names run(s) {sorted(set(unknown))} that no imported file has (a run is its file's "
            f"path from the files' common folder without the suffix, or its stem: {sorted(runs)})"
        )


def _healthy_names(
    labels: list[LabelRow], labels_file: Path, healthy: list[str], faults: list[str] | None = None
) -> None:
    """Refuse a ``--healthy`` that names no class of the labels or a fault of ``FAULTS``, a ``--fault`` that
    names no class, ``healthy`` or one ``--healthy`` names, and a class whose name reads as the healthy machine's
    (``nominal``, ``good_bearing``, ``healthy_1``; ``data.reads_healthy``) that neither names: imported as a class
    of its own, its windows trained as a fault (beside 'healthy', a healthy machine then read as that fault;
    alone, training refused the dataset). ``--fault`` keeps a genuine fault of such a name (``baseline_drift``,
    ``normal_wear``) a class of its own, recorded as ``fault_labels`` for training."""
    written = sorted({lab.written for lab in labels})
    for name in faults or []:
        if name == "healthy" or name in healthy:
            raise DatasetError(
                f"--fault {name}: {name!r} is "
                + (
                    "the healthy class"
                    if name == "healthy"
                    else "given to --healthy too; give it to one of them"
                )
            )
        if name not in written:
            raise DatasetError(
                f"--fault {name}: no row of {labels_file} names the class {name!r} (its classes: "
                f"{', '.join(written)}); give the fault class as the labels write it"
            )
    for name in healthy:
        if name in FAULTS and name != "healthy":
            raise DatasetError(
                f"--healthy {name}: {name!r} is a fault class ({', '.join(FAULTS[1:])}), not healthy"
            )
        if name not in written:
            raise DatasetError(
                f"--healthy {name}: no row of {labels_file} names the class {name!r} (its classes: "
                f"{', '.join(written)}); give the healthy class as the labels write it"
            )
    looks = [
        (f, w) for f in written if f not in healthy and f not in (faults or ()) and (w := reads_healthy(f))
    ]
    if looks:
        names = ", ".join(f"{f!r}" + (f" (the word {w!r})" if w != f else "") for f, w in looks)
        every = ",".join(dict.fromkeys([*healthy, *(f for f, _ in looks)]))
        raise DatasetError(
            f"{labels_file}: class(es) {names} read as names of the healthy machine: imported as a fault class, "
            "its windows would train as a fault (a healthy machine then reads as it); if their runs are healthy, "
            f"give --healthy {every}; if one is a fault (baseline_drift, normal_wear), give --fault NAME"
        )


def _one_class_per_fault(labels: list[LabelRow], labels_file: Path) -> None:
    """Refuse a class of the dataset's own that reads as one of the four faults (``outer``, ``outer_007``,
    ``misaligned``: ``data.reads_as_fault``) beside that fault's own class (``bearing_outer``): one fault under
    two names, from two sources or two people's labels, was imported as two classes, the model's two outputs
    splitting its windows. Alone, such a name is the user's class, kept as given (and so are several, such as
    severity grades ``outer_007``, ``outer_014``, beside no ``bearing_outer``)."""
    classes = {lab.fault for lab in labels}
    for name in sorted(classes):
        real = reads_as_fault(name)
        if real in classes:
            line = next(lab.line for lab in labels if lab.fault == name)
            raise DatasetError(
                f"{labels_file}: classes {name!r} (line {line}) and {real!r} are both there, and {name!r} reads "
                f"as {real!r}: one fault under two names trains two outputs that split its windows; merge them "
                f"(label the rows of {name!r} {real!r}), or, if it is another fault or grade, give it a name that does "
                f"not read as {real!r}; if its runs are the healthy machine, give --healthy {name}"
            )


def _too_many_windows(size: int, window_samples: int, hop: int) -> DatasetError:
    return DatasetError(
        f"the labelled windows of {window_samples} samples make {size:,} bytes, more than the {NPZ_MAX_BYTES:,} "
        "training reads from one windows.npz: import fewer or shorter runs (or label less of them), a larger "
        f"--hop-samples ({hop} now), or the runs in several datasets"
    )


def _write_dataset(out: Path, arrays: dict[str, Any], meta_text: str, hop: int) -> str:
    """``windows.npz`` and ``dataset.yaml`` written into a hidden folder beside ``out`` (empty or absent) and
    renamed to it at the end, as ``dataset import`` of images writes its datasets: a full disk or a stop leaves
    nothing half-written (a windows.npz beside another import's dataset.yaml). Returns the windows' digest."""
    import zipfile

    from cloud_trainer.train.images import new_dataset_folder

    with new_dataset_folder(out, lambda m: print(m, file=sys.stderr)) as tmp:
        np.savez_compressed(tmp / "windows.npz", **arrays)
        with zipfile.ZipFile(tmp / "windows.npz") as zf:  # as training counts them (``data.npz_arrays``)
            size = sum(
                i.file_size for i in zf.infolist() if i.filename.removesuffix(".npy") in VIBRATION_ARRAYS
            )
        if size > NPZ_MAX_BYTES:  # the windows alone were within it, the arrays beside them are not
            raise _too_many_windows(size, len(arrays["waveform"][0]), hop)
        (tmp / "dataset.yaml").write_text(meta_text)
        with open(tmp / "windows.npz", "rb") as fh:  # up to 2 GiB: hashed as read, not held whole
            digest = "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()
    return digest


def _unit_key(unit: str) -> str:
    """One spelling per unit: ``m/s^2``, ``m/s²``, ``M/S2`` -> ``m/s2``."""
    return re.sub(r"\s+", "", unit).lower().replace("²", "2").replace("^2", "2").replace("**2", "2")


def _one_unit(
    recs: list[Recording], channel: str | None, given: str | None = None, scale: float | None = None
) -> tuple[str | None, list[Recording]]:
    """Refuse runs whose signal channel's headers name different units (``accel [g]`` in one file,
    ``accel [m/s2]`` in another): written as one channel, the model would learn the level step between
    them. Returns the signal's unit (the headers', else ``given``, --unit: recorded in dataset.yaml as ``units``,
    which ``build maintenance`` reads; None when none) and the runs whose files name none (WAV, NPZ, a bare
    header; ``_unitless`` says what is done with them). ``scale`` (--scale, with --unit only) multiplies their
    samples into the unit."""
    if scale is not None and (given is None or not (math.isfinite(scale) and scale > 0)):
        raise DatasetError(
            f"--scale {scale:g}: a factor above 0 that makes the samples of the files naming no unit the --unit's "
            "(a 16-bit WAV recorded over +-50 g: --unit g --scale 50)"
            if given is not None
            else f"--scale {scale:g} needs --unit: the unit the scaled samples are in"
        )
    seen: tuple[Recording, str, str] | None = None
    bare: list[Recording] = []
    for rec in recs:
        name = channel or next(iter(rec.channels), "")
        unit = rec.units.get(name, "")
        if not unit:
            bare.append(rec)
            continue
        if seen is None:
            seen = (rec, name, unit)
        elif _unit_key(unit) != _unit_key(seen[2]):
            raise DatasetError(
                f"{seen[0].source} has {seen[1]} in {seen[2]!r}, {rec.source} in {unit!r}: runs in different "
                "units would be trained as one signal (its level stepping between runs); convert them to "
                "one unit first, or import each unit separately"
            )
    if scale is not None and not bare:  # (it multiplied nothing, without a word)
        raise DatasetError(
            f"--scale {scale:g}: every file names its signal's unit ({seen[2] if seen else ''!r}), and --scale "
            "multiplies only the samples of files naming none; convert the files, or leave --scale out"
        )
    if seen is not None and given is not None and _unit_key(given) != _unit_key(seen[2]):
        raise DatasetError(
            f"--unit {given}, and {seen[0].source} has {seen[1]} in {seen[2]!r}: --unit says the unit of the files "
            "naming none; give the headers' unit, or import each unit separately"
        )
    return (seen[2] if seen is not None else given), bare


def _pcm_wav(rec: Recording) -> bool:
    """A PCM WAV's samples are read as fractions of its full scale: never in a unit of their own."""
    try:
        return rec.source.suffix.lower() == ".wav" and _wav_layout(rec.source)[0] == _WAV_PCM
    except (DatasetError, OSError, ValueError):
        return False


def _unitless(
    recs: list[Recording], bare: list[Recording], unit: str | None, given: str | None
) -> str | None:
    """What is done with the runs whose files name no unit (``bare``) when --unit does not say theirs, as a
    warning (the import's result and stderr); None when nothing is assumed. A PCM WAV beside files whose headers
    name a unit is refused: its samples, fractions of its full scale, were written as that unit without a word
    (a 16-bit WAV beside CSVs in g: its runs trained 50 times quieter). Other such files (an NPZ, a float WAV, a
    header without [unit]) are taken in the headers' unit, as a DAQ's own export is, and said; with no unit
    named anywhere, the dataset records none and build maintenance takes the samples as g."""
    if given is not None or not bare:
        return None
    names = ", ".join(str(r.source.name) for r in bare[:3]) + (
        f" and {len(bare) - 3} more" if len(bare) > 3 else ""
    )
    if unit is not None:
        pcm = next((r for r in bare if _pcm_wav(r)), None)
        if pcm is not None:
            raise DatasetError(
                f"{pcm.source} is a PCM WAV (its samples fractions of its full scale, no unit) beside files whose "
                f"headers name {unit!r}: written as one signal it would train as {unit} at the file's scale; give "
                f"--unit {unit} --scale FULL_SCALE (the WAV's full scale in {unit}: +-50 {unit} is --scale 50), or "
                "import it separately"
            )
        return (
            f"{len(bare)} of the {len(recs)} runs name no unit ({names}): taken as {unit}, the unit the other files' "
            "headers name; give --unit and --scale if they are in another"
        )
    return (
        f"no run names the signal's unit ({names}: a WAV's, an NPZ's or a header without [unit]): the dataset records "
        "none and build maintenance takes the samples as g as they are (a PCM WAV's are fractions of its full "
        "scale); give --unit (and --scale: what makes them that unit) to say what they are"
    )


# a speed channel's unit -> rpm per unit ("" : none written, taken as rpm)
_SPEED_UNITS = {
    "": 1.0,
    "rpm": 1.0,
    "1/min": 1.0,
    "r/min": 1.0,
    "min-1": 1.0,
    "min^-1": 1.0,
    "u/min": 1.0,
    "hz": 60.0,
    "1/s": 60.0,
    "rps": 60.0,
    "r/s": 60.0,
    "rad/s": 60.0 / (2 * math.pi),
}


def _rpm_per(rec: Recording, name: str) -> float:
    """What one unit of the speed channel ``name`` is in rpm, from the unit its header writes."""
    unit = rec.units.get(name, "")
    factor = _SPEED_UNITS.get(re.sub(r"\s+", "", unit).lower())
    if factor is None:
        raise DatasetError(
            f"{rec.source}: --speed-channel {name} is in {unit!r}, not a shaft speed: give a channel holding "
            "the speed in rpm, 1/min, Hz or rad/s (its unit in the header: 'speed [rpm]')"
        )
    return factor


def _used_channels(channel: str | None, speed_channel: str | None, names: list[str]) -> list[str]:
    """The channels an import reads of a file's ``names``: ``channel`` (else the first besides the
    speed channel) and ``speed_channel``."""
    first = channel or next((c for c in names if c != speed_channel), "")
    return [c for c in (first, speed_channel) if c]


def _one_first_channel(
    firsts: list[tuple[Path, str, tuple[str, ...]]], source: Path, name: str, available: tuple[str, ...]
) -> None:
    """Without --channel each run's windows come from its file's first channel: refused when that is
    another channel than an earlier file's first while one of the two files holds both (a logger's columns
    in another order: one run would train on accel_x, the next on accel_y, and the model learn which axis
    was recorded). Files whose channels share no name (a CSV's ``accel`` beside a WAV's ``ch0``) are not
    compared. Adds this file to ``firsts``."""
    for other, taken, has in firsts:
        shared = taken if taken in available else name if name in has else None
        if name != taken and shared is not None:
            raise DatasetError(
                f"{source}: its first channel is {name!r}, {other}'s {taken!r}, and both files hold {shared!r} "
                "(their channels in another order): without --channel each run's windows come from its "
                "file's first channel, so these runs would train on different channels; give --channel NAME"
            )
    if not any(taken == name and has == available for _, taken, has in firsts):  # one per layout
        firsts.append((source, name, available))


def _settle_rates(recs: list[Recording]) -> None:
    """A rate measured from timestamps takes the rate of another file in the set (a WAV header's,
    NPZ's, ``--rate-hz``, or a measured one met first) that lies within its uncertainty: one DAQ's
    CSV and WAV are one rate, not "mixed rates"."""
    settled = sorted({r.rate_hz for r in recs if not r.rate_tolerance})
    for rec in sorted(recs, key=lambda r: r.rate_tolerance):
        if rec.rate_tolerance:
            near = [r for r in settled if abs(r - rec.rate_hz) <= rec.rate_tolerance * r]
            if near:
                rec.rate_hz = min(near, key=lambda r: abs(r - rec.rate_hz))
            else:
                settled.append(rec.rate_hz)


def _not_a_time_ramp(rec: Recording, name: str) -> None:
    """The channel taken by default must not be a time column under a name not known as one: its
    values would rise at every sample, a ramp that trains nothing."""
    x = rec.channels.get(name)
    if x is not None and len(x) > 2 and bool(np.all(x[1:] > x[:-1])):  # (not np.diff: 8 bytes a sample more)
        raise DatasetError(
            f"{rec.source}: channel {name!r}, the first and taken by default, rises at every one of its "
            f"{len(x)} samples like a clock, not a signal: if it is the time, call its column time, "
            "timestamp or zeit (a unit as 'time [ms]' or time_ms); else pick the signal with --channel"
        )


def _channel(rec: Recording, name: str, target: float) -> np.ndarray:
    """One channel of a recording, checked finite and resampled to ``target``."""
    if name not in rec.channels:
        raise DatasetError(f"{rec.source}: no channel {name!r}; it has {sorted(rec.channels)}")
    x = rec.channels[name]
    finite = np.isfinite(x)  # (a byte a sample: ``_WAV_BYTES_A_SAMPLE``; a second only where one is not)
    bad = np.zeros(0, dtype=np.intp) if finite.all() else np.flatnonzero(~finite)
    del finite
    if bad.size:
        i = int(bad[0])
        raise DatasetError(
            f"{rec.source}: {rec.row(i) if rec.row else f'sample {i}'}: channel {name!r} has no value "
            f"({'empty, null or NaN' if np.isnan(x[i]) else x[i]}; {bad.size} of its {len(x)} samples): fill "
            "the gaps or split the run there, or pick another channel with --channel"
        )
    if rec.rate_hz != target:
        try:
            up, down = resample_plan(rec.rate_hz, target, f"{rec.source.name}")
        except RateError as exc:
            raise DatasetError(str(exc)) from None
        x = resample(x[: len(x) // down * down], up, down)
    return x


def main_import(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="cloud-trainer dataset import --kind vibration",
        description="import historian vibration recordings as a training dataset",
    )
    ap.add_argument("files", nargs="+", type=Path, help="one file per run: .csv, .parquet, .wav, .npz")
    ap.add_argument("--labels", required=True, type=Path, help="CSV: run,fault[,start_s,end_s,failure_s]")
    ap.add_argument("--out", required=True, type=Path, help="new dataset folder (must not exist or be empty)")
    ap.add_argument("--channel", help="the channel (column / array) to use; default: the first")
    ap.add_argument("--rate-hz", type=float, help="the recording's rate (checked against time columns)")
    ap.add_argument("--resample-to", type=float, help="resample every run to this rate (e.g. the model's)")
    ap.add_argument("--window-samples", type=int, default=2048)
    ap.add_argument("--hop-samples", type=int)
    ap.add_argument(
        "--speed-channel",
        help="a channel with the shaft speed (rpm; its header's unit read: 'speed [Hz]' is made rpm): each "
        "window's mean is recorded (speed_rpm) for `build maintenance --speed-tag`",
    )
    ap.add_argument(
        "--bearing",
        help="the machine's bearing: N_ELEMENTS,BALL_D_MM,PITCH_D_MM[,CONTACT_ANGLE_DEG] "
        "(recorded in dataset.yaml; the maintenance trainer's condition features use it)",
    )
    ap.add_argument(
        "--healthy",
        action="append",
        metavar="NAME[,NAME...]",
        help="the labels' class(es) holding the healthy machine under a name of your own (nominal, baseline, "
        "normal, ...): imported as 'healthy'. Without it only 'healthy' is; a class whose name reads as a "
        "healthy one, or labels without a healthy class, are refused",
    )
    ap.add_argument(
        "--fault",
        action="append",
        metavar="NAME[,NAME...]",
        help="the labels' class(es) of a fault whose name reads as a healthy one (baseline_drift, normal_wear) "
        "or as a misspelt known fault (misalignment_h): imported as a fault class of its own (recorded in "
        "dataset.yaml as fault_labels)",
    )
    ap.add_argument(
        "--unit",
        help="the signal's unit in the files that name none (WAV, NPZ, a header without [unit]), e.g. g or m/s2; "
        "recorded in dataset.yaml. Needed where such files are imported beside files whose headers name one",
    )
    ap.add_argument(
        "--scale",
        type=float,
        help="multiply the samples of the files that name no unit by this to put them in --unit (a 16-bit WAV "
        "recorded over +-50 g: --unit g --scale 50)",
    )
    a = ap.parse_args(argv)
    from cloud_trainer.train.images import stopped_cleanly

    try:
        with stopped_cleanly():  # SIGTERM, SIGHUP and Ctrl-C remove the hidden folder being written
            res = import_vibration(
                a.files,
                a.out,
                a.labels,
                channel=a.channel,
                rate_hz=a.rate_hz,
                resample_to=a.resample_to,
                window_samples=a.window_samples,
                hop_samples=a.hop_samples,
                speed_channel=a.speed_channel,
                bearing=a.bearing.split(",") if a.bearing is not None else None,
                healthy=[n.strip() for v in a.healthy or [] for n in v.split(",") if n.strip()] or None,
                faults=[n.strip() for v in a.fault or [] for n in v.split(",") if n.strip()] or None,
                unit=a.unit,
                scale=a.scale,
            )
    except DatasetError as exc:  # it may name a file as the source names it: one printable line
        from cloud_trainer.train.cli import one_line

        print(f"cloud-trainer dataset import: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # writing the dataset: a full disk, no permission
        print(f"cloud-trainer dataset import: {a.out}: cannot be written ({exc})", file=sys.stderr)
        return 2
    if "warning" in res:
        print(f"cloud-trainer dataset import: warning: {res['warning']}", file=sys.stderr)
    print(json.dumps(res))
    return 0
