"""Historian data for training: ``cloud-trainer dataset import --kind vibration`` (or ``signals``).

Reads vibration recordings, one file per machine run, and writes a dataset folder that ``train`` /
``build`` read (``windows.npz`` + ``dataset.yaml``, as ``edge-sim dataset vibration`` writes):

- CSV: a time column (``timestamp``/``time``/``t``: seconds or ISO 8601; ``time [ms]`` / ``time (us)``
  scaled) and one column per channel (a unit in brackets is dropped from its name); without a time
  column ``--rate-hz`` is required. As spreadsheets export it: a UTF-8 byte-order mark, semicolon or tab
  delimiters with decimal commas, blank lines. The rate is inferred from the time column and,
  when ``--rate-hz`` is also given, checked against it (1 %).
- WAV (PCM 8/16/24/32-bit or IEEE float 32/64-bit, plain or WAVE_FORMAT_EXTENSIBLE, any channels; other
  chunks skipped): the rate is the header's; compressed WAV (ADPCM, A-law, MP3) is refused by name.
- NPZ: an array per channel and either ``sample_rate_hz`` or a ``timestamp`` array.
- Parquet (pyarrow, the ``cloud`` extra): read like CSV: a time column (seconds as numbers, an Arrow
  timestamp of any unit, or ISO 8601 strings) and one numeric column per channel; missing values
  (nulls) are refused naming the column and row.

Labels (``--labels``, CSV with a header ``run,fault[,start_s,end_s,failure_s]``): ``run`` is the
file's stem; a row without start/end labels the whole run; ``failure_s`` (seconds from the run's
start) gives remaining life. Windows nobody labelled are left out (counted). One clear error each
for gaps, time going back, mixed rates (inside a file or across files without ``--resample-to``),
an unknown channel or fault; nothing is written then.

For the maintenance trainer's condition features: ``--speed-channel NAME`` (a channel with the shaft
speed in rpm, e.g. a tachometer's) gives each window its mean speed (``speed_rpm`` in ``windows.npz``,
what ``build maintenance --speed-tag`` trains on); ``--bearing N,BALL_MM,PITCH_MM[,ANGLE_DEG]`` records
the machine's bearing geometry in ``dataset.yaml`` (``bearing``), which the trainer takes by default.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cloud_trainer.train.data import FAULTS, DatasetError
from model_packager.condition import RateError, resample, resample_plan

TIME_COLUMNS = ("timestamp", "time", "t", "time_s")
RATE_TOLERANCE = 0.01


@dataclass
class Recording:
    run: str
    rate_hz: float
    channels: dict[str, np.ndarray]
    source: Path


def _time_value(v: str, where: str, scale: float = 1.0) -> float:
    try:
        return float(v) * scale
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(v.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise DatasetError(f"{where}: time {v!r} is neither seconds nor an ISO 8601 timestamp") from None


def check_times(t: np.ndarray, path: Path, stated: float | None) -> float:
    """The rate the time column shows; DatasetError for time going back, a gap or a rate change."""
    if len(t) < 2:
        raise DatasetError(f"{path}: fewer than two samples")
    dt = np.diff(t)
    back = np.flatnonzero(dt <= 0)
    if back.size:
        i = int(back[0])
        raise DatasetError(
            f"{path}: time does not increase at sample {i + 1} ({t[i]!r} then {t[i + 1]!r}); sort the "
            "rows by time and remove duplicates"
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
    rate = float(f"{(len(t) - 1) / (t[-1] - t[0]):.5g}")  # over the whole span: timestamps are often rounded
    if stated is not None and abs(rate - stated) > RATE_TOLERANCE * stated:
        raise DatasetError(
            f"{path}: --rate-hz says {stated:g} Hz but the time column shows {rate:.6g} Hz; "
            "fix --rate-hz or the time column"
        )
    return stated or rate


_TIME_UNITS = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
_UNIT = re.compile(r"^(.*?)\s*[\[(]\s*([^\])]*?)\s*[\])]\s*$")  # "time [ms]", "Accel X (g)"


def _csv_dialect(first_line: str) -> tuple[str, bool]:
    """(delimiter, decimal comma allowed) from the header line: a comma, or a semicolon or tab as
    spreadsheets in many locales write them (then numbers may use a decimal comma, ``0,125``)."""
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    if counts[";"] > counts[","] or counts["\t"] > counts[","]:
        return (";" if counts[";"] >= counts["\t"] else "\t"), True
    return ",", False


def _number(v: str, decimal_comma: bool) -> float:
    try:
        return float(v)
    except ValueError:
        if decimal_comma and v.count(",") == 1 and "." not in v:
            return float(v.replace(",", "."))
        raise


def read_csv(path: Path, rate_hz: float | None) -> Recording:
    """CSV as historians and spreadsheets export it: a UTF-8 byte-order mark (Excel) is dropped, the
    delimiter is a comma, semicolon or tab (the latter two with decimal commas allowed), blank lines are
    skipped, and a unit in the header is read: ``time [ms]`` / ``time (us)`` is scaled to seconds, a
    channel's unit is dropped from its name (``accel_x [g]`` is channel ``accel_x``)."""
    with open(path, newline="", encoding="utf-8-sig", errors="strict") as fh:
        try:
            text = fh.read()
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); export it as UTF-8"
            ) from None
    delimiter, decimal_comma = _csv_dialect(text.split("\n", 1)[0])
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    if len(rows) < 3:
        raise DatasetError(f"{path}: needs a header and at least two rows")
    header, units = [], []
    for h in rows[0]:
        m = _UNIT.match(h.strip())
        header.append(m.group(1).strip() if m else h.strip())
        units.append(m.group(2).strip() if m else "")
    tcol = next((i for i, h in enumerate(header) if h.lower() in TIME_COLUMNS), None)
    chans = [i for i in range(len(header)) if i != tcol]
    if not chans:
        raise DatasetError(f"{path}: no channel column besides the time column")
    twice = sorted({header[i] for i in chans if [header[j] for j in chans].count(header[i]) > 1})
    if twice:
        raise DatasetError(f"{path}: more than one column is called {twice[0]!r} (units aside); rename one")
    data = {}
    for i in chans:
        try:
            data[header[i]] = np.asarray([_number(r[i], decimal_comma) for r in rows[1:]], dtype=np.float64)
        except (ValueError, IndexError) as exc:
            raise DatasetError(
                f"{path}: column {header[i]!r} holds a value that is not a number ({exc})"
            ) from None
    t = None
    if tcol is not None:
        unit = units[tcol]
        if unit and unit.lower() not in _TIME_UNITS and unit not in _TIME_UNITS:
            raise DatasetError(
                f"{path}: time column {rows[0][tcol].strip()!r}: unit {unit!r} not understood; "
                f"use one of {', '.join(_TIME_UNITS)} (or ISO 8601 times)"
            )
        scale = _TIME_UNITS.get(unit, _TIME_UNITS.get(unit.lower(), 1.0)) if unit else 1.0
        t = np.asarray(
            [
                _time_value(r[tcol].replace(",", ".") if decimal_comma else r[tcol], f"{path}:{n}", scale)
                for n, r in enumerate(rows[1:], 2)
            ]
        )
    return _table_recording(path, data, t, rate_hz)


def _table_recording(
    path: Path, data: dict[str, np.ndarray], t: np.ndarray | None, rate_hz: float | None
) -> Recording:
    """A table's run: channels, and the rate from its time column (checked against ``rate_hz``) or ``rate_hz``."""
    if t is None:
        if rate_hz is None:
            raise DatasetError(f"{path}: no time column ({'/'.join(TIME_COLUMNS)}); give --rate-hz")
        return Recording(path.stem, rate_hz, data, path)
    if len(t) and abs(float(t[0])) >= 1e11:
        raise DatasetError(
            f"{path}: the time column starts at {float(t[0]):.6g}, past the year 5000 as seconds: epoch "
            "milliseconds? name the column 'time [ms]' (or 'time [us]')"
        )
    return Recording(path.stem, check_times(t, path, rate_hz), data, path)


def read_parquet(path: Path, rate_hz: float | None) -> Recording:
    """Parquet, read like CSV (pyarrow: the cloud extra)."""
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
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file ({str(exc)[:200]})") from None
    if table.num_rows < 2:
        raise DatasetError(f"{path}: fewer than two rows")
    names = table.column_names
    tcol = next((n for n in names if n.strip().lower() in TIME_COLUMNS), None)
    data, t = {}, None
    for name in names:
        col = table.column(name)
        if col.null_count:
            row = int(pc.index(pc.is_null(col), True).as_py())
            raise DatasetError(
                f"{path}: column {name!r} has {col.null_count} missing values (the first at row "
                f"{row}); fill them or split the run there"
            )
        typ = col.type
        if name == tcol:
            if pa.types.is_timestamp(typ):  # any unit, any zone: seconds since the epoch
                t = (
                    col.cast(pa.timestamp("ns", tz=typ.tz)).cast(pa.int64()).to_numpy().astype(np.float64)
                    / 1e9
                )
            elif pa.types.is_integer(typ) or pa.types.is_floating(typ):
                t = col.to_numpy().astype(np.float64)
            elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
                t = np.asarray([_time_value(v, f"{path}: row {i}") for i, v in enumerate(col.to_pylist())])
            else:
                raise DatasetError(
                    f"{path}: time column {name!r} is {typ}; expected seconds, a timestamp or ISO 8601 "
                    "strings"
                )
        elif pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
            data[name] = col.cast(pa.float64()).to_numpy()
        else:
            raise DatasetError(
                f"{path}: column {name!r} is {typ}, not a number; a channel column holds numbers "
                f"(the time column is one of {'/'.join(TIME_COLUMNS)})"
            )
    if not data:
        raise DatasetError(f"{path}: no channel column besides the time column")
    return _table_recording(path, data, t, rate_hz)


_WAV_PCM, _WAV_FLOAT, _WAV_EXTENSIBLE = 1, 3, 0xFFFE
_WAV_KINDS = {2: "MS ADPCM", 6: "A-law", 7: "mu-law", 17: "IMA ADPCM", 85: "MP3", 0x161: "WMA"}
_WAV_STREAMING_SIZES = (0, 0xFFFFFFFF)  # a data size a streaming writer leaves before it knows the length


def _wav_layout(path: Path) -> tuple[int, int, int, int, int, int]:
    """(format 1 PCM | 3 float, channels, rate, bytes per sample, data offset, data bytes) from the RIFF
    chunks: ``fmt `` (plain, or WAVE_FORMAT_EXTENSIBLE with its sub-format) and ``data``, skipping any
    other chunk (LIST, fact, bext, cue, ...) with its pad byte. A data size of 0 or 0xFFFFFFFF (left by a
    streaming writer) means: to the end of the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise DatasetError(f"{path}: not a WAV file (no RIFF/WAVE header)")
        if head[:4] == b"RF64":
            raise DatasetError(
                f"{path}: an RF64 (over 4 GB) WAV file; split the recording or export CSV/Parquet"
            )
        fmt: tuple[int, int, int, int, int] | None = None
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
                if rate <= 0:
                    raise DatasetError(f"{path}: the WAV header gives a sample rate of {rate} Hz")
                left = size - body
                if n in _WAV_STREAMING_SIZES:
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


def read_wav(path: Path, rate_hz: float | None) -> Recording:
    """PCM (8-bit unsigned, 16/24/32-bit signed) and IEEE float (32/64-bit) WAV, plain or
    WAVE_FORMAT_EXTENSIBLE, any channels; samples scaled to full scale +-1 (float as written). Not
    Python's ``wave``, which reads neither float nor (before 3.12) extensible files, what DAQ and audio
    tools often write."""
    tag, n_ch, rate, width, offset, n = _wav_layout(path)
    if tag == _WAV_FLOAT:
        x = np.fromfile(path, dtype=f"<f{width}", count=n // width, offset=offset).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            raise DatasetError(
                f"{path}: sample {bad[0] // n_ch} of channel {bad[0] % n_ch} is {x[bad[0]]}; "
                f"{bad.size} non-finite value(s) in the recording"
            )
    elif width == 3:
        b = np.fromfile(path, dtype=np.uint8, count=n, offset=offset).reshape(-1, 3)
        v = b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (b[:, 2].astype(np.int32) << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v) / float(1 << 23)
    else:
        dtypes: dict[int, type[np.integer]] = {1: np.uint8, 2: np.int16, 4: np.int32}
        dtype = dtypes[width]
        x = np.fromfile(path, dtype=np.dtype(dtype).newbyteorder("<"), count=n // width, offset=offset)
        x = x.astype(np.float64)
        x = (x - 128) / 128 if width == 1 else x / float(np.iinfo(dtype).max)
    x = x.reshape(-1, n_ch)
    if not len(x):
        raise DatasetError(f"{path}: the WAV file holds no samples")
    if rate_hz is not None and abs(rate - rate_hz) > RATE_TOLERANCE * rate_hz:
        raise DatasetError(
            f"{path}: the WAV header says {rate} Hz, --rate-hz says {rate_hz:g} Hz; fix --rate-hz"
        )
    return Recording(path.stem, float(rate), {f"ch{i}": x[:, i] for i in range(n_ch)}, path)


def read_npz(path: Path, rate_hz: float | None) -> Recording:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    rate = None
    if "sample_rate_hz" in arrays:
        rate = float(arrays.pop("sample_rate_hz"))
        if rate_hz is not None and abs(rate - rate_hz) > RATE_TOLERANCE * rate_hz:
            raise DatasetError(
                f"{path}: sample_rate_hz in the file is {rate:g} Hz, --rate-hz says {rate_hz:g} Hz"
            )
    tkey = next((k for k in arrays if k.lower() in TIME_COLUMNS), None)
    if tkey is not None:
        rate = check_times(np.asarray(arrays.pop(tkey), dtype=np.float64), path, rate or rate_hz)
    rate = rate or rate_hz
    if rate is None:
        raise DatasetError(f"{path}: no sample_rate_hz or timestamp array; give --rate-hz")
    chans = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in arrays.items() if np.asarray(v).ndim >= 1}
    if not chans:
        raise DatasetError(f"{path}: no channel array")
    return Recording(path.stem, rate, chans, path)


def read_recording(path: Path, rate_hz: float | None = None) -> Recording:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    readers = {".csv": read_csv, ".wav": read_wav, ".npz": read_npz, ".parquet": read_parquet}
    if suffix not in readers:
        raise DatasetError(f"{path}: unknown format {suffix!r}; expected .csv, .parquet, .wav or .npz")
    return readers[suffix](path, rate_hz)


@dataclass
class LabelRow:
    run: str
    fault: str
    start_s: float | None
    end_s: float | None
    failure_s: float | None


def read_labels(path: Path) -> list[LabelRow]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DatasetError(f"labels file {path}: {exc.strerror}") from None
    out = []
    for n, r in enumerate(rows, 2):
        if "run" not in r or "fault" not in r:
            raise DatasetError(f"{path}: needs a header with run,fault[,start_s,end_s,failure_s]")
        if r["fault"] not in FAULTS:
            raise DatasetError(f"{path}:{n}: fault {r['fault']!r} is not one of {FAULTS}")
        try:
            start, end, failure = (
                float(r[k]) if r.get(k) not in (None, "") else None for k in ("start_s", "end_s", "failure_s")
            )
            out.append(LabelRow(r["run"], r["fault"], start, end, failure))
        except ValueError as exc:
            raise DatasetError(f"{path}:{n}: a time is not a number of seconds ({exc})") from None
    return out


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
) -> dict:
    recs = [read_recording(Path(f), rate_hz) for f in files]
    if not recs:
        raise DatasetError("no files to import")
    if bearing is not None:
        from cloud_trainer.train.maintenance import bearing_geometry

        bearing = list(bearing_geometry(bearing, "--bearing"))
    rates = sorted({r.rate_hz for r in recs})
    if resample_to is None and len(rates) > 1:
        listing = ", ".join(f"{r.source.name} {r.rate_hz:g} Hz" for r in recs)
        raise DatasetError(f"mixed rates: {listing}; import each rate separately or give --resample-to HZ")
    target = resample_to or rates[0]
    labels = read_labels(labels_file)
    runs = {r.run for r in recs}
    unknown = sorted({lab.run for lab in labels} - runs)
    if unknown:
        raise DatasetError(
            f"{labels_file}: names run(s) {unknown} that no imported file has (runs are file stems: "
            f"{sorted(runs)})"
        )
    hop = hop_samples or window_samples
    waves, fault, health, rul, run_id, t_s, speeds = [], [], [], [], [], [], []
    skipped = 0
    for k, rec in enumerate(recs):
        name = channel or next((c for c in rec.channels if c != speed_channel), "")
        x = _channel(rec, name, target)
        speed = _channel(rec, speed_channel, target) if speed_channel else None
        mine = [lab for lab in labels if lab.run == rec.run]
        for start in range(0, len(x) - window_samples + 1, hop):
            t0, t1 = start / target, (start + window_samples) / target
            lab = next(
                (
                    lab
                    for lab in mine
                    if (lab.start_s is None or t0 >= lab.start_s) and (lab.end_s is None or t1 <= lab.end_s)
                ),
                None,
            )
            if lab is None:
                skipped += 1
                continue
            waves.append(x[start : start + window_samples].astype(np.float32))
            if speed is not None:
                speeds.append(float(np.mean(speed[start : start + window_samples])))
            fault.append(lab.fault)
            health.append(1.0 if lab.fault == "healthy" else 0.5)
            rul.append(lab.failure_s - t1 if lab.failure_s is not None else np.nan)
            run_id.append(k)
            t_s.append(t1)
    if not waves:
        raise DatasetError(
            f"no labelled window of {window_samples} samples: check {labels_file} (runs, start_s/end_s)"
        )
    if len(set(fault)) < 2:
        raise DatasetError(
            f"only fault {sorted(set(fault))} is labelled; training needs healthy and faulty runs"
        )
    out.mkdir(parents=True, exist_ok=True)
    npz = out / "windows.npz"
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
    np.savez_compressed(npz, **arrays)
    meta = {
        "generator": "cloud-trainer dataset import --kind vibration",
        "window_samples": window_samples,
        "sample_rate_hz": float(target),
        "runs": {k: str(r.source) for k, r in enumerate(recs)},
        "labels": str(labels_file),
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
    if speed_channel:
        meta["speed_channel"] = speed_channel
    (out / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return {
        "dataset": str(out),
        "windows": len(waves),
        "runs": len(recs),
        "sample_rate_hz": target,
        "unlabelled_windows_skipped": skipped,
        "faults": {f: fault.count(f) for f in sorted(set(fault))},
        "digest": "sha256:" + hashlib.sha256(npz.read_bytes()).hexdigest(),
    }


def _channel(rec: Recording, name: str, target: float) -> np.ndarray:
    """One channel of a recording, checked finite and resampled to ``target``."""
    if name not in rec.channels:
        raise DatasetError(f"{rec.source}: no channel {name!r}; it has {sorted(rec.channels)}")
    x = rec.channels[name]
    if not np.all(np.isfinite(x)):
        raise DatasetError(
            f"{rec.source}: channel {name!r} holds NaN or Inf at sample "
            f"{int(np.flatnonzero(~np.isfinite(x))[0])}; clean the export"
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
    ap.add_argument("files", nargs="+", type=Path, help="one file per run: .csv, .wav, .npz")
    ap.add_argument("--labels", required=True, type=Path, help="CSV: run,fault[,start_s,end_s,failure_s]")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--channel", help="the channel (column / array) to use; default: the first")
    ap.add_argument("--rate-hz", type=float, help="the recording's rate (checked against time columns)")
    ap.add_argument("--resample-to", type=float, help="resample every run to this rate (e.g. the model's)")
    ap.add_argument("--window-samples", type=int, default=2048)
    ap.add_argument("--hop-samples", type=int)
    ap.add_argument(
        "--speed-channel",
        help="a channel with the shaft speed in rpm: each window's mean is recorded "
        "(speed_rpm) for `build maintenance --speed-tag`",
    )
    ap.add_argument(
        "--bearing",
        help="the machine's bearing: N_ELEMENTS,BALL_D_MM,PITCH_D_MM[,CONTACT_ANGLE_DEG] "
        "(recorded in dataset.yaml; the maintenance trainer's condition features use it)",
    )
    a = ap.parse_args(argv)
    try:
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
        )
    except DatasetError as exc:
        print(f"cloud-trainer dataset import: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res))
    return 0
