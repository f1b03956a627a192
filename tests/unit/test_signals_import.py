"""`cloud-trainer dataset import --kind vibration`: historian CSV / Parquet / WAV / NPZ into a training dataset,
with one clear error each for gaps, time going back and mixed rates."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train.cli import main_dataset as dataset_main  # the `cloud-trainer dataset` verb
from cloud_trainer.train.data import FAULTS, DatasetError, load_vibration
from cloud_trainer.train.signals import import_vibration

RATE = 10000.0


def _csv(path: Path, x: np.ndarray, t: np.ndarray | None = None, rate: float = RATE) -> Path:
    t = np.arange(len(x)) / rate + 1_700_000_000.0 if t is None else t
    t, x = np.asarray(t), np.asarray(x)
    assert len(t) == len(x)
    lines = [
        "timestamp,accel_x,accel_y",
        *map("{:.6f},{:.6f},{:.6f}".format, t.tolist(), x.tolist(), (-x).tolist()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _another(x: np.ndarray) -> np.ndarray:
    """Another recording of ``x``'s length and peak (not ``-x``: a negated copy trains the same features and is
    refused as a copy)."""
    return 0.6 * x + 0.4 * np.max(np.abs(x)) * np.sin(np.arange(len(x)) * 0.05)


def _labels(path: Path, rows: list[str]) -> Path:
    path.write_text("run,fault,start_s,end_s,failure_s\n" + "\n".join(rows) + "\n")
    return path


def test_csv_wav_npz_runs_become_a_dataset_the_trainer_reads(tmp_path, capsys):
    rng = np.random.default_rng(0)
    _csv(tmp_path / "pump1.csv", rng.normal(0, 0.1, 8192))
    with wave.open(str(tmp_path / "pump2.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(25600)
        w.writeframes((rng.normal(0, 0.1, 25600) * 32767).astype("<i2").tobytes())
    np.savez(tmp_path / "pump3.npz", accel_x=rng.normal(0, 0.2, 8192), sample_rate_hz=RATE)
    labels = _labels(
        tmp_path / "labels.csv", ["pump1,healthy,,,", "pump2,bearing_outer,0,0.6,2.0", "pump3,imbalance,,,"]
    )
    mixed = [str(tmp_path / f) for f in ("pump1.csv", "pump2.wav", "pump3.npz")]
    assert (
        dataset_main(
            ["import", "--kind", "vibration", *mixed, "--labels", str(labels), "--out", str(tmp_path / "ds")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "mixed rates: pump1.csv 10000 Hz, pump2.wav 25600 Hz, pump3.npz 10000 Hz" in err
    assert (
        dataset_main(
            [
                "import",
                "--kind",
                "vibration",
                *mixed,
                "--labels",
                str(labels),
                "--resample-to",
                "10000",
                "--out",
                str(tmp_path / "ds"),
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert (
        res["faults"] == {"bearing_outer": 2, "healthy": 4, "imbalance": 4}
        and res["unlabelled_windows_skipped"] == 2
    )
    data = load_vibration(tmp_path / "ds")
    assert data.waveforms.shape == (10, 2048) and data.sample_rate_hz == RATE
    outer = data.fault == 3
    assert np.allclose(data.rul_s[outer], [2.0 - 0.2048, 2.0 - 0.4096])


@pytest.mark.parametrize(
    "make, msg",
    [
        (lambda t: np.r_[t[:500], t[500:] + 0.25], "gap of 0.2501 s after sample 499"),
        (lambda t: np.r_[t[:500], t[499:1000], t[1001:]], "time does not increase at sample 500"),
        (
            lambda t: np.r_[t[:2000], t[1999] + np.arange(1, 2097) / 25600.0],
            "mixed rates inside one file (10000 Hz, then 25",
        ),
    ],
)
def test_gaps_time_going_back_and_a_rate_change_are_refused_in_one_line(tmp_path, make, msg):
    t = make(np.arange(4096) / RATE)
    _csv(tmp_path / "run.csv", np.zeros(len(t)), t)
    labels = _labels(tmp_path / "labels.csv", ["run,healthy,,,"])
    with pytest.raises(DatasetError) as ei:
        import_vibration([tmp_path / "run.csv"], tmp_path / "ds", labels)
    assert msg in str(ei.value) and "\n" not in str(ei.value)
    assert not (tmp_path / "ds").exists()


def test_a_stated_rate_is_checked_and_labels_must_name_a_run(tmp_path):
    _csv(tmp_path / "run.csv", np.zeros(4096))
    labels = _labels(tmp_path / "labels.csv", ["run,healthy,,,"])
    with pytest.raises(DatasetError, match=r"--rate-hz says 25600 Hz but the time column shows 10000 Hz"):
        import_vibration([tmp_path / "run.csv"], tmp_path / "ds", labels, rate_hz=25600)
    with pytest.raises(DatasetError, match=r"names run\(s\) \['other'\]"):
        import_vibration(
            [tmp_path / "run.csv"], tmp_path / "ds", _labels(tmp_path / "l2.csv", ["other,healthy,,,"])
        )


def _parquet(path: Path, x: np.ndarray, t=None, **extra) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = (
        pa.array(
            (np.arange(len(x)) * 100_000 + 1_700_000_000_000_000_000).astype("datetime64[ns]"),
            pa.timestamp("us", tz="UTC"),
        )
        if t is None
        else t
    )  # a historian's timestamp column, 10 kHz
    pq.write_table(pa.table({"Timestamp": t, "accel_x": pa.array(x, pa.float32()), **extra}), path)
    return path


def test_parquet_runs_read_like_csv_with_the_rate_from_their_timestamps(tmp_path, capsys):
    import pyarrow as pa

    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.1, 8192).astype(np.float32)
    _parquet(tmp_path / "pump1.parquet", x)
    _csv(tmp_path / "pump2.csv", _another(x.astype(np.float64)))  # not x: one recording twice is a copy
    labels = _labels(tmp_path / "labels.csv", ["pump1,healthy,,,", "pump2,imbalance,,,"])
    assert (
        dataset_main(
            [
                "import",
                "--kind",
                "vibration",
                str(tmp_path / "pump1.parquet"),
                str(tmp_path / "pump2.csv"),
                "--channel",
                "accel_x",
                "--labels",
                str(labels),
                "--out",
                str(tmp_path / "ds"),
            ]
        )
        == 0
    ), capsys.readouterr().err
    data = load_vibration(tmp_path / "ds")
    assert data.sample_rate_hz == RATE and data.waveforms.shape == (8, 2048)
    assert np.array_equal(data.waveforms[:4].ravel(), x)
    assert np.allclose(data.waveforms[4:].ravel(), _another(x.astype(np.float64)), atol=1e-6)  # as the CSV
    # seconds as numbers, a stated rate checked against them
    _parquet(tmp_path / "run.parquet", x[:4096], t=pa.array(np.arange(4096) / 25600.0))
    one = _labels(tmp_path / "one.csv", ["run,healthy,,,"])
    with pytest.raises(
        DatasetError, match=r"run.parquet: --rate-hz says 10000 Hz but the time column shows 25600 Hz"
    ):
        import_vibration([tmp_path / "run.parquet"], tmp_path / "ds2", one, rate_hz=10000)


@pytest.mark.parametrize(
    "extra, t, msg",
    [
        (
            {"accel_x": [1.0, None] * 2048},
            None,
            "run.parquet: row 1: channel 'accel_x' has no value (empty, null or NaN; 2048 of its 4096 samples)",
        ),
        (
            {},
            [*(np.arange(4095) / RATE), None],
            "column 'Timestamp' has 1 missing values (the first at row 4095)",
        ),
        ({"accel_x": ["run"] * 4096}, None, "column 'accel_x' is string, not a number"),
        ({}, np.r_[np.arange(2000), np.arange(2100, 4196)] / RATE, "gap of 0.0101 s after sample 1999"),
    ],
)
def test_parquet_nulls_text_channels_and_gaps_are_refused_in_one_line(tmp_path, extra, t, msg):
    import pyarrow as pa

    _parquet(tmp_path / "run.parquet", np.zeros(4096), t=None if t is None else pa.array(t), **extra)
    with pytest.raises(DatasetError) as ei:
        import_vibration(
            [tmp_path / "run.parquet"], tmp_path / "ds", _labels(tmp_path / "l.csv", ["run,healthy,,,"])
        )
    assert msg in str(ei.value) and "\n" not in str(ei.value)
    assert not (tmp_path / "ds").exists()
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match="bad.parquet: not a readable Parquet file"):
        import_vibration(
            [tmp_path / "bad.parquet"], tmp_path / "ds", _labels(tmp_path / "l.csv", ["bad,healthy,,,"])
        )


def test_a_parquet_page_failing_its_crc_or_rows_past_the_memory_free_are_refused_not_read(
    tmp_path, monkeypatch
):
    """A Parquet page damaged on the way (a bad sector, a copy cut and patched) was read as other numbers than
    were written, its CRC (written by Spark and parquet-mr by default, by pyarrow when asked) unchecked: refused
    now, naming the file. A file declaring more rows than the memory free holds as numbers (1 MB of a constant
    channel and a delta-encoded time can declare 100 million rows, 6.5 GB to read) is refused before it is read,
    where the process was killed without a word; the same file read when the memory is there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import cloud_trainer.train.signals as signals
    from cloud_trainer.train.signals import read_recording

    x = np.round(np.sin(np.arange(400) / 7), 6)
    table = pa.table({"time": np.arange(400) / RATE, "accel_x": x})
    pq.write_table(
        table, tmp_path / "run.parquet", compression="none", use_dictionary=False, write_page_checksum=True
    )
    data = bytearray((tmp_path / "run.parquet").read_bytes())
    at = data.find(x[200].tobytes())
    data[at + 7] ^= 0x40  # a bit of one value's exponent: another number, still finite
    (tmp_path / "damaged.parquet").write_bytes(bytes(data))
    assert np.array_equal(read_recording(tmp_path / "run.parquet").channels["accel_x"], x)
    with pytest.raises(DatasetError) as ei:
        read_recording(tmp_path / "damaged.parquet").channels["accel_x"]
    assert str(ei.value).startswith(
        f"{tmp_path / 'damaged.parquet'}: not a readable Parquet file (could not verify"
    )
    # written without CRCs (pandas' and pyarrow's default): the value out of the range its writer stated for its
    # column is seen (before: read as another number, without a word)
    pq.write_table(table, tmp_path / "plain.parquet", compression="none", use_dictionary=False)
    data = bytearray((tmp_path / "plain.parquet").read_bytes())
    data[data.find(x[200].tobytes()) + 7] ^= 0x40
    (tmp_path / "plain_damaged.parquet").write_bytes(bytes(data))
    with pytest.raises(
        DatasetError, match=r"plain_damaged.parquet: not a readable Parquet file \(row group 0, "
    ):
        read_recording(tmp_path / "plain_damaged.parquet")
    monkeypatch.setattr(signals, "memory_available_bytes", lambda: 400 * (56 + 18) - 1)
    with pytest.raises(DatasetError) as ei:
        read_recording(tmp_path / "run.parquet")
    assert str(ei.value).startswith(
        f"{tmp_path / 'run.parquet'}: 400 rows of 2 column(s) to read, about 0.0 GB"
    )
    monkeypatch.setattr(signals, "memory_available_bytes", lambda: 400 * (56 + 18))
    assert np.array_equal(read_recording(tmp_path / "run.parquet").channels["accel_x"], x)


def test_a_parquet_file_of_many_small_row_groups_is_checked_against_its_statistics_in_one_pass(tmp_path):
    """A logger writes a row group at each flush: here 300 of one row. The check of each group's values against the
    range its writer stated sliced the read's column once per group, and a slice of Arrow's chunked column walks
    its chunks from the first: the walks grew as the square of the groups (a file of 20,000 one-row groups of 11
    columns took 500 s to check after a 16 s read). Each chunk is now walked a bounded number of times, and a value
    damaged in the last group is still named."""
    import bisect

    import pyarrow as pa
    import pyarrow.parquet as pq

    from cloud_trainer.train.signals import _parquet_out_of_its_range, read_recording

    x = np.round(np.sin(np.arange(300) / 7), 6) + 2.0
    path = tmp_path / "logger.parquet"
    table = pa.table({"time": np.arange(300) / RATE, "accel_x": x})
    pq.write_table(table, path, row_group_size=1, compression="none", use_dictionary=False)
    read = pq.read_table(path)
    walked = [0]

    class Column:  # counts the chunks Arrow walks: to a slice's start, or all of them to make one piece
        def __init__(self, column: pa.ChunkedArray) -> None:
            self.column = column
            self.ends = np.cumsum([len(c) for c in column.chunks]).tolist()

        def slice(self, offset: int, length: int) -> pa.ChunkedArray:
            walked[0] += bisect.bisect_right(self.ends, offset) + 1
            return self.column.slice(offset, length)

        def combine_chunks(self) -> pa.Array:
            walked[0] += self.column.num_chunks
            return self.column.combine_chunks()

    class Table:
        column_names, schema = read.column_names, read.schema

        def column(self, name: str) -> Column:
            return Column(read.column(name))

    assert read.column("accel_x").num_chunks > 100  # the read's chunks, as many as the groups it read
    assert _parquet_out_of_its_range(path, Table()) is None
    assert walked[0] <= 4 * 2 * 300, walked  # before: 90,300 for 300 groups of 2 columns (now 600)
    data = bytearray(path.read_bytes())
    at = data.find(x[299].tobytes())  # its page header's 4 statistics, then the value: the fifth
    for _ in range(4):
        at = data.find(x[299].tobytes(), at + 1)
    data[at + 7] ^= 0x10  # a bit of its exponent: 1.045 read as about 9e-78
    (tmp_path / "damaged.parquet").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"\(row group 299, column 'accel_x': values from "):
        read_recording(tmp_path / "damaged.parquet")


def test_a_csv_whose_rows_would_not_fit_in_the_memory_free_is_refused_before_it_is_read(
    tmp_path, monkeypatch
):
    """A CSV's read holds its numbers and their checks (~70 bytes a row of a time and a channel, measured: 390 MB
    for a 91-MB file), so a file of a few GB on a trainer with less memory free was read until the process was
    killed, without a word. Its rows are estimated from its first lines and the file refused in one line before it
    is read, naming the channels read (--channel reads fewer); read when the memory is there, CR line ends too."""
    import cloud_trainer.train.signals as signals
    from cloud_trainer.train.signals import read_recording

    rows = "".join(f"{i / RATE:.4f},{i % 7}.5,{i % 3}\n" for i in range(400))
    (tmp_path / "run.csv").write_text("time,accel_x,temp\n" + rows)
    (tmp_path / "cr.csv").write_text(("time,accel_x,temp\n" + rows).replace("\n", "\r"), newline="")
    monkeypatch.setattr(signals, "memory_available_bytes", lambda: 401 * (56 + 2 * 18) - 100)
    for name in ("run.csv", "cr.csv"):
        with pytest.raises(DatasetError) as ei:
            read_recording(tmp_path / name)
        assert str(ei.value).startswith(f"{tmp_path / name}: about 401 rows of 3 column(s) to read"), name
    rec = read_recording(tmp_path / "run.csv", pick=lambda names: ["accel_x"])  # one channel read: fits
    assert np.array_equal(rec.channels["accel_x"], np.arange(400) % 7 + 0.5)
    monkeypatch.setattr(signals, "memory_available_bytes", lambda: None)  # unknown: read
    assert np.array_equal(read_recording(tmp_path / "cr.csv").channels["temp"], np.arange(400) % 3)


def test_a_csv_whose_first_lines_are_shorter_than_the_rest_is_not_refused_for_the_memory_its_rows_fit_in(
    tmp_path, monkeypatch
):
    """A run that starts with the machine idle logs '0' where it later logs '-0.123456789012': its rows reckoned
    from the bytes of its first lines alone were 1.8 times those it holds, and a file that fits in the memory free
    was refused as one that would not. The rows are counted over the whole file (or samples spread through it)."""
    import cloud_trainer.train.signals as signals
    from cloud_trainer.train.signals import read_recording

    idle = "".join(f"{i / RATE:.4f},0\n" for i in range(4096))
    written = [f"{v:.12f}" for v in np.sin(np.arange(4096) / 7) - 1.5]
    x = np.array([float(v) for v in written])
    running = "".join(f"{(4096 + i) / RATE:.4f},{v}\n" for i, v in enumerate(written))
    (tmp_path / "run.csv").write_text("time,accel_x\n" + idle + running)
    monkeypatch.setattr(signals, "memory_available_bytes", lambda: 8193 * (56 + 18) * 5 // 4)
    assert np.array_equal(read_recording(tmp_path / "run.csv").channels["accel_x"][4096:], x)
    monkeypatch.setattr(signals, "memory_available_bytes", lambda: 8193 * (56 + 18) - 1)
    with pytest.raises(DatasetError, match=r": about 8,193 rows of 2 column\(s\) to read"):
        read_recording(tmp_path / "run.csv")


def test_an_infinite_sample_in_the_channel_used_is_refused_in_one_line_without_numpys_warning(tmp_path):
    """A logger's 'inf' in the channel used (an overrange) printed numpy's 'RuntimeWarning: invalid value
    encountered in subtract' and two lines of its source before the import's own refusal naming the line."""
    import warnings

    x = np.sin(np.arange(4096) / 5)
    _csv(tmp_path / "a.csv", x)
    text = _csv(tmp_path / "b.csv", x * 0.5).read_text().splitlines()
    text[11] = text[11].split(",")[0] + ",inf,0"
    (tmp_path / "b.csv").write_text("\n".join(text) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DatasetError) as ei:
            import_vibration(
                [tmp_path / "a.csv", tmp_path / "b.csv"],
                tmp_path / "ds",
                _labels(tmp_path / "l.csv", ["a,healthy,,,", "b,healthy,,,"]),
                channel="accel_x",
            )
    assert str(ei.value).startswith(f"{tmp_path / 'b.csv'}: line 12: channel 'accel_x' has no value (inf")


def _riff(
    path: Path,
    samples: bytes,
    *,
    tag: int,
    channels: int,
    rate: int,
    bits: int,
    extensible: bool = False,
    before_data: bytes = b"",
    data_size: int | None = None,
    cut: int = 0,
) -> Path:
    """A WAV file written byte by byte as other tools write them: WAVE_FORMAT_EXTENSIBLE with its
    sub-format GUID, extra chunks (an odd-sized LIST with its pad byte) before the data, a streaming
    writer's placeholder data size, or a file cut short."""
    import struct

    align = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * align, align, bits)
    if extensible:
        guid_tail = bytes.fromhex("000000001000800000aa00389b71")
        fmt += struct.pack("<HHI", 22, bits, (1 << channels) - 1) + struct.pack("<H", tag) + guid_tail
    data = struct.pack("<4sI", b"data", len(samples) if data_size is None else data_size) + samples
    body = b"WAVE" + struct.pack("<4sI", b"fmt ", len(fmt)) + fmt + before_data + data
    raw = b"RIFF" + struct.pack("<I", len(body)) + body
    path.write_bytes(raw[: len(raw) - cut])
    return path


def test_float_extensible_and_odd_wav_files_from_other_tools_read_as_written(tmp_path):
    """DAQ and audio tools write IEEE-float WAV, WAVE_FORMAT_EXTENSIBLE (24-bit, or over two channels) and
    extra chunks; Python's wave module refused the first two ("unknown format: 3" / "65534")."""
    from cloud_trainer.train.signals import read_wav

    rng = np.random.default_rng(3)
    x = rng.uniform(-0.9, 0.9, (4000, 3))
    odd_list = b"LIST" + (5).to_bytes(4, "little") + b"INFOx" + b"\x00"  # 5 bytes + its pad byte
    f32 = x.astype("<f4").tobytes()
    cases = {
        "float32": (_riff(tmp_path / "f32.wav", f32, tag=3, channels=3, rate=25600, bits=32), 1e-7),
        "float64 extensible": (
            _riff(
                tmp_path / "f64.wav",
                x.astype("<f8").tobytes(),
                tag=3,
                channels=3,
                rate=25600,
                bits=64,
                extensible=True,
            ),
            0.0,
        ),
        "pcm24 extensible + LIST": (
            _riff(
                tmp_path / "p24.wav",
                b"".join(int(v).to_bytes(3, "little", signed=True) for v in np.round(x.ravel() * (1 << 23))),
                tag=1,
                channels=3,
                rate=25600,
                bits=24,
                extensible=True,
                before_data=odd_list,
            ),
            2.0**-23,
        ),
        "pcm16 streaming size": (
            _riff(
                tmp_path / "p16.wav",
                np.round(x * 32768).astype("<i2").tobytes(),
                tag=1,
                channels=3,
                rate=25600,
                bits=16,
                data_size=0xFFFFFFFF,
            ),
            2.0**-16,
        ),
        "pcm8": (
            _riff(
                tmp_path / "p8.wav",
                np.round(x * 128 + 128).clip(0, 255).astype(np.uint8).tobytes(),
                tag=1,
                channels=3,
                rate=25600,
                bits=8,
            ),
            1 / 128,
        ),
    }
    for name, (path, tol) in cases.items():
        rec = read_wav(path, None)
        assert rec.rate_hz == 25600 and list(rec.channels) == ["ch0", "ch1", "ch2"], name
        got = np.stack([rec.channels[f"ch{i}"] for i in range(3)], 1)
        assert got.shape == x.shape and np.abs(got - x).max() <= tol + 1e-12, name
    with wave.open(str(tmp_path / "stdlib.wav"), "wb") as w:  # the stdlib's own PCM file reads as before
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.arange(-100, 100, dtype="<i2").tobytes())
    # integer PCM is divided by 2^(bits-1) as 24-bit always was (16/32-bit were by 32767 / 2^31-1)
    assert np.array_equal(
        read_wav(tmp_path / "stdlib.wav", None).channels["ch0"], np.arange(-100, 100) / 32768
    )


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"tag": 2, "bits": 4}, "MS ADPCM WAV is compressed"),
        ({"tag": 85, "bits": 0}, "MP3 WAV is compressed"),
        ({"tag": 3, "bits": 16}, "float WAV with 16-bit samples"),
        ({"tag": 1, "bits": 16, "cut": 1001}, "declares 4000 bytes but the file holds 2999: truncated"),
        ({"tag": 1, "bits": 16, "rate": 0}, "sample rate of 0 Hz"),
        ({"tag": 3, "bits": 32, "nan": True}, "sample 7 of channel 0 is nan"),
    ],
)
def test_wav_files_that_cannot_be_read_as_samples_are_refused_in_one_line(tmp_path, kw, msg):
    from cloud_trainer.train.signals import read_wav

    nan = kw.pop("nan", False)
    samples = np.zeros(1000, "<f4") if kw["tag"] == 3 and kw["bits"] == 32 else b"\x00" * 4000
    if nan:
        samples[7] = np.nan
    path = _riff(
        tmp_path / "run.wav",
        samples if isinstance(samples, bytes) else samples.tobytes(),
        channels=1,
        rate=kw.pop("rate", 25600),
        **kw,
    )
    with pytest.raises(DatasetError) as ei:
        read_wav(path, None)
    assert msg in str(ei.value) and "\n" not in str(ei.value) and str(path) in str(ei.value)


def test_csv_as_spreadsheets_in_other_locales_export_it_reads_the_same_run(tmp_path):
    """Excel's UTF-8 byte-order mark (before, the time column was not found and, with --rate-hz given,
    the timestamps were read as a vibration channel), semicolons with decimal commas, tabs, blank lines,
    and units in the header (a time in milliseconds scaled to seconds)."""
    from cloud_trainer.train.signals import read_csv

    rng = np.random.default_rng(5)
    x = rng.normal(0, 0.1, 512)
    t = np.arange(512) / RATE
    plain = "timestamp,accel_x\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in zip(t, x, strict=True))
    variants = {
        "bom.csv": ("\ufeff" + plain).encode("utf-8"),
        "semicolon.csv": (
            "time [ms];Beschl. X (g)\r\n"
            + "".join(f"{a * 1000:.3f};{b:.6f}\r\n".replace(".", ",") for a, b in zip(t, x, strict=True))
            + "\r\n"
        ).encode(),
        "tab.csv": ("time (s)\taccel_x [g]\n\n" + plain.split("\n", 1)[1].replace(",", "\t")).encode(),
    }
    for name, raw in variants.items():
        (tmp_path / name).write_bytes(raw)
        rec = read_csv(tmp_path / name, None)
        assert rec.rate_hz == RATE, name
        (chan,) = rec.channels.values()
        assert np.allclose(chan, x, atol=1e-6), name
    assert list(read_csv(tmp_path / "tab.csv", None).channels) == ["accel_x"]
    assert list(read_csv(tmp_path / "semicolon.csv", None).channels) == ["Beschl. X"]


@pytest.mark.parametrize(
    "text, msg",
    [
        ("time [min],a\n1,2\n2,3\n3,4\n", "time column 'time [min]': unit 'min' not understood"),
        ("time,a [g],a [m/s2]\n0,1,2\n1,1,2\n2,1,2\n", "more than one column is called 'a'"),
        ("time;a\n0;1,5,3\n1;2\n2;3\n", "column 'a' holds a value that is not a number"),
        # WinCC's date and time in two columns, a date under a name not known as a time column: said so, not
        # "a decimal point in a file written with decimal commas"
        (
            "Datum;Zeit;a\n29.03.2026;00:59:59,900;1,5\n29.03.2026;00:59:59,901;2,5\n",
            "line 2: column 'Datum' holds a date or a time of day ('29.03.2026'), not a number: the time column "
            "is told by its name",
        ),
        (
            "Date,a\n2026-03-29T00:59:59.9,1\n2026-03-29T00:59:59.901,2\n",
            "column 'Date' holds a date or a time",
        ),
        # a logger's quoted decimal commas between commas, or a US export's quoted thousands: said so, not only
        # "not a number"
        (
            'time,a\n"0,001","4,5603"\n"0,002","1,5"\n',
            "line 2: column 'a' holds a value that is not a number ('4,5603'; a comma in a number of a file "
            "delimited by commas: a decimal comma or a thousands separator (1,500)",
        ),
    ],
)
def test_csv_headers_and_values_that_would_be_misread_are_refused(tmp_path, text, msg):
    from cloud_trainer.train.signals import read_csv

    (tmp_path / "run.csv").write_text(text)
    with pytest.raises(DatasetError) as ei:
        read_csv(tmp_path / "run.csv", None)
    assert msg in str(ei.value) and str(tmp_path / "run.csv") in str(ei.value)


def test_a_time_column_in_epoch_milliseconds_is_refused_with_the_header_to_write(tmp_path):
    """Read as seconds, a historian's epoch milliseconds made the rate 1000 times too low without a word."""
    from cloud_trainer.train.signals import read_csv

    t_ms = (np.arange(512) / RATE + 1_764_500_000.0) * 1000
    _csv(tmp_path / "run.csv", np.zeros(512), t_ms)
    with pytest.raises(DatasetError, match=r"epoch milliseconds\? name the column 'time \[ms\]'"):
        read_csv(tmp_path / "run.csv", None)
    text = (tmp_path / "run.csv").read_text().replace("timestamp,", "time [ms],", 1)
    (tmp_path / "run.csv").write_text(text)
    assert read_csv(tmp_path / "run.csv", None).rate_hz == RATE


def _de(v: float) -> str:
    """A number as a German spreadsheet writes it: decimal comma."""
    return f"{v:.6f}".replace(".", ",")


def _exact(x: np.ndarray) -> np.ndarray:
    """The values a file written with six decimals holds."""
    return np.asarray([float(f"{v:.6f}") for v in x])


@pytest.mark.parametrize("header", ["accel_x", "Beschleunigung [g]"])
def test_a_one_column_csv_with_decimal_commas_reads_its_values_not_whole_numbers(tmp_path, header):
    """The header has no delimiter, so ',' was taken for one: 0,012573 became 0 (the field after the
    comma ignored) and the run trained on zeros without a word."""
    from cloud_trainer.train.signals import read_csv

    x = np.random.default_rng(7).normal(0, 0.1, 600)
    path = tmp_path / "run.csv"
    path.write_text(f"{header}\r\n" + "".join(f"{_de(v)}\r\n" for v in x), encoding="utf-8-sig")
    rec = read_csv(path, RATE)
    (name,) = rec.channels
    assert name == header.split(" [")[0] and np.array_equal(rec.channels[name], _exact(x))


@pytest.mark.parametrize(
    "text, msg",
    [
        ("time,a\n0,1\n0.0001,0,5\n0.0002,2\n", "line 3 has 3 fields but the header 2"),
        ("a\n0,5,1\n0,25\n1\n", "line 2 has 3 fields but the header 1"),
        ("time;a\n\n0;1,5;7\n1;2\n2;3\n", "line 3 has 3 fields but the header 2"),
    ],
)
def test_a_csv_row_with_more_fields_than_its_header_is_refused_naming_the_line(tmp_path, text, msg):
    """Fields past the header's were dropped silently: a value cut at its decimal comma read as valid."""
    from cloud_trainer.train.signals import read_csv

    (tmp_path / "run.csv").write_text(text)
    with pytest.raises(DatasetError) as ei:
        read_csv(tmp_path / "run.csv", RATE)
    assert msg in str(ei.value) and str(tmp_path / "run.csv") in str(ei.value) and "\n" not in str(ei.value)


def test_time_columns_under_other_names_and_units_are_the_time_not_a_channel(tmp_path):
    """'Zeit [s]', 'time_ms' (CSV) and 'time [ms]' (Parquet, as the epoch-ms message tells the user to
    name it) were not found: with --rate-hz the time ramp became the training channel, without it
    the import was refused for a missing time column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cloud_trainer.train.signals import read_recording

    x = np.random.default_rng(8).normal(0, 0.1, 1024)
    t = np.arange(1024) / RATE
    (tmp_path / "de.csv").write_text(
        "\ufeffZeit [s];Beschleunigung [g]\r\n"
        + "".join(f"{_de(a)};{_de(b)}\r\n" for a, b in zip(t, x, strict=True))
    )
    (tmp_path / "ms.csv").write_text(
        "time_ms,accel_x\n" + "".join(f"{a * 1000:.1f},{b:.6f}\n" for a, b in zip(t, x, strict=True))
    )
    (tmp_path / "stamp.csv").write_text(
        "Zeitstempel;Elapsed [ms];accel_x\n"
        + "".join(
            f"2024-03-01 12:00:{a:09.6f};{_de(a * 1000)};{_de(b)}\n".replace("00:0", "00:0", 1)
            for a, b in zip(t, x, strict=True)
        )
    )
    pq.write_table(pa.table({"time [ms]": t * 1000 + 1.7645e12, "accel_x [g]": x}), tmp_path / "ms.parquet")
    pq.write_table(pa.table({"Zeit": t, "accel_x": x}), tmp_path / "zeit.parquet")
    for name in ("de.csv", "ms.csv", "stamp.csv", "ms.parquet", "zeit.parquet"):
        rec = read_recording(tmp_path / name)  # no --rate-hz: the rate is the time column's
        assert rec.rate_hz == RATE, name
        (chan,) = rec.channels.values()
        assert list(rec.channels) in (["accel_x"], ["Beschleunigung"]), name
        assert np.array_equal(chan, _exact(x)) if name.endswith(".csv") else np.array_equal(chan, x), name


def test_a_default_channel_that_rises_at_every_sample_is_refused_as_a_time_column(tmp_path):
    """A time column under a name not known as one was the first channel: the import trained on the
    time ramp. Two runs of a sample counter were told they hold the same samples: the ramp is checked first."""
    x = np.random.default_rng(9).normal(0, 0.1, 4096)
    t = np.arange(4096) / RATE
    (tmp_path / "run.csv").write_text(
        "Messzeit [s],accel_x\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in zip(t, x, strict=True))
    )
    labels = _labels(tmp_path / "labels.csv", ["run,healthy,0,0.2048,", "run,imbalance,0.2048,,"])
    with pytest.raises(DatasetError) as ei:
        import_vibration([tmp_path / "run.csv"], tmp_path / "ds", labels, rate_hz=RATE)
    msg = str(ei.value)
    assert "run.csv: channel 'Messzeit'" in msg and "rises at every one of its 4096 samples" in msg
    assert "--channel" in msg and "'time [ms]'" in msg and not (tmp_path / "ds").exists()
    res = import_vibration([tmp_path / "run.csv"], tmp_path / "ds", labels, rate_hz=RATE, channel="accel_x")
    assert res["windows"] == 2
    assert np.array_equal(load_vibration(tmp_path / "ds").waveforms[0], _exact(x)[:2048].astype(np.float32))
    # two runs whose first column is a sample counter: the same ramp in both, told to pick the signal with
    # --channel, not that the runs are copies of each other (the copy check ran first)
    runs = []
    for k in (1, 2):
        y = np.random.default_rng(k).normal(0, 0.01, 8192)
        runs.append(tmp_path / f"r{k}.csv")
        runs[-1].write_text("sample,accel [g]\n" + "".join(f"{i},{v:.6f}\n" for i, v in enumerate(y)))
    labels = _labels(tmp_path / "two.csv", ["r1,healthy,,,", "r2,outer,,,"])
    with pytest.raises(
        DatasetError, match=r"r1.csv: channel 'sample', the first and taken by default, rises"
    ):
        import_vibration(runs, tmp_path / "ds2", labels, rate_hz=RATE)


def test_a_time_that_is_not_a_number_is_refused_naming_its_row(tmp_path):
    """NaN in the time column switched the gap check off: NaN last gave a rate of nan Hz, NaN inside
    gave 10 kHz and hid a 1 s gap."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cloud_trainer.train.signals import read_recording

    t = np.r_[np.arange(2000), np.arange(2000, 4096) + 10000] / RATE  # a 1 s gap after sample 1999
    cells = [f"{v:.6f}" for v in t]
    cells[100] = "NaN"
    (tmp_path / "mid.csv").write_text("time,a\n\n" + "".join(f"{c},0.5\n" for c in cells))
    last = [f"{v:.6f}" for v in np.arange(4096) / RATE]
    last[-1] = "nan"
    (tmp_path / "last.csv").write_text("time,a\n" + "".join(f"{c},0.5\n" for c in last))
    tn = t.copy()
    tn[100] = np.nan
    pq.write_table(pa.table({"time": tn, "a": np.zeros(4096)}), tmp_path / "mid.parquet")
    for name, where in (("mid.csv", "line 103"), ("last.csv", "line 4097"), ("mid.parquet", "row 100")):
        with pytest.raises(DatasetError) as ei:
            read_recording(tmp_path / name)
        assert f"{tmp_path / name}: {where}: the time is nan" in str(ei.value), name


def test_in_a_decimal_comma_file_a_point_groups_thousands_or_is_refused(tmp_path):
    """'1.500' in a file written with decimal commas read as 1.5, a thousandth of the speed."""
    from cloud_trainer.train.signals import read_csv

    t = np.arange(6) / RATE
    rpm = ["1.500", "999,5", "1.234,5", "-2.000.000", "12", "1.500,25"]
    (tmp_path / "de.csv").write_text(
        "time;rpm\n" + "".join(f"{_de(a)};{v}\n" for a, v in zip(t, rpm, strict=True))
    )
    assert read_csv(tmp_path / "de.csv", None).channels["rpm"].tolist() == [
        1500.0,
        999.5,
        1234.5,
        -2000000.0,
        12.0,
        1500.25,
    ]
    # a semicolon file written with decimal points is not a decimal-comma file: 1.500 is 1.5 there
    (tmp_path / "points.csv").write_text("time;rpm\n" + "".join(f"{a:.6f};1.500\n" for a in t))
    assert read_csv(tmp_path / "points.csv", None).channels["rpm"].tolist() == [1.5] * 6
    (tmp_path / "mixed.csv").write_text(
        "time;rpm\n" + "".join(f"{_de(a)};{'1.5' if i == 3 else '2,5'}\n" for i, a in enumerate(t))
    )
    with pytest.raises(DatasetError) as ei:
        read_csv(tmp_path / "mixed.csv", None)
    assert f"{tmp_path / 'mixed.csv'}: line 5: column 'rpm' holds a value that is not a number ('1.5'" in str(
        ei.value
    ) and "decimal point in a file written with decimal commas" in str(ei.value)


@pytest.mark.parametrize("value", ["0.179", "-0.500", "+0.125,5", "00.125"])
def test_in_a_decimal_comma_file_a_point_after_a_leading_zero_is_refused_not_read_1000_times_off(
    tmp_path, value
):
    """A thousands group never begins with 0: '0.179' among '0,179's (a cell pasted with a point) was read as
    179, a thousand times the samples around it, without a word."""
    from cloud_trainer.train.signals import read_csv

    t = np.arange(6) / RATE
    (tmp_path / "de.csv").write_text(
        "time;accel_x\n" + "".join(f"{_de(a)};{value if i == 3 else '0,179'}\n" for i, a in enumerate(t))
    )
    with pytest.raises(DatasetError) as ei:
        read_csv(tmp_path / "de.csv", None)
    assert f"line 5: column 'accel_x' holds a value that is not a number ('{value}'" in str(ei.value)


def test_empty_trailing_columns_from_spreadsheet_exports_are_dropped(tmp_path):
    """'time;accel_x;' was refused: "column '' holds a value that is not a number"."""
    from cloud_trainer.train.signals import read_csv

    x = np.random.default_rng(10).normal(0, 0.1, 256)
    t = np.arange(256) / RATE
    for name, tail in (("one.csv", ";"), ("two.csv", ";;")):
        (tmp_path / name).write_text(
            f"time;accel_x{tail}\r\n"
            + "".join(f"{_de(a)};{_de(b)}{tail}\r\n" for a, b in zip(t, x, strict=True))
        )
        rec = read_csv(tmp_path / name, None)
        assert rec.rate_hz == RATE and list(rec.channels) == ["accel_x"], name
        assert np.array_equal(rec.channels["accel_x"], _exact(x)), name


def test_a_rate_measured_from_timestamps_is_kept_not_rounded_to_five_digits(tmp_path, capsys):
    """131072 Hz timestamps read as 131070 Hz: a CSV and a WAV of one DAQ were refused as mixed rates
    and --resample-to 65536 found no ratio."""
    from cloud_trainer.train.signals import read_csv

    rng = np.random.default_rng(11)
    t = np.arange(8192) / 131072.0
    (tmp_path / "r1.csv").write_text(
        "time,accel_x\n"
        + "".join(f"{a:.9f},{b:.6f}\n" for a, b in zip(t, rng.normal(0, 0.1, 8192), strict=True))
    )
    assert read_csv(tmp_path / "r1.csv", None).rate_hz == 131072.0
    with wave.open(str(tmp_path / "r2.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(131072)
        w.writeframes((rng.normal(0, 0.1, 8192) * 32768).astype("<i2").tobytes())
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    files = [tmp_path / "r1.csv", tmp_path / "r2.wav"]
    assert import_vibration(files, tmp_path / "ds", labels)["sample_rate_hz"] == 131072.0
    assert import_vibration(files, tmp_path / "ds2", labels, resample_to=65536)["windows"] == 4
    # a rate that is not whole is kept as measured ...
    t = np.arange(4096) / 10000.5
    (tmp_path / "odd.csv").write_text(
        "time,a\n" + "".join(f"{a:.9f},{b:.6f}\n" for a, b in zip(t, t, strict=True))
    )
    assert abs(read_csv(tmp_path / "odd.csv", None).rate_hz - 10000.5) < 1e-3
    # ... and takes another file's stated rate it matches within its timestamps' rounding
    rate = 51200 / 3
    t = np.arange(8192) / rate
    (tmp_path / "r1.csv").write_text(
        "time,accel_x\n"
        + "".join(f"{a:.6f},{b:.6f}\n" for a, b in zip(t, rng.normal(0, 0.1, 8192), strict=True))
    )
    assert read_csv(tmp_path / "r1.csv", None).rate_hz != rate
    np.savez(tmp_path / "r2.npz", accel_x=rng.normal(0, 0.1, 8192), sample_rate_hz=rate)
    res = import_vibration([tmp_path / "r1.csv", tmp_path / "r2.npz"], tmp_path / "ds3", labels)
    assert res["sample_rate_hz"] == rate and res["windows"] == 8


def test_a_wav_data_chunk_of_size_0_before_another_chunk_holds_no_samples(tmp_path):
    """Size 0 was always taken as a streaming writer's: the LIST chunk after it was read as samples."""
    from cloud_trainer.train.signals import read_wav

    info = (
        b"LIST"
        + (26).to_bytes(4, "little")
        + b"INFOISFT"
        + (14).to_bytes(4, "little")
        + b"DAQ-Writer 1\x00\x00"
    )
    path = _riff(tmp_path / "run.wav", info, tag=1, channels=1, rate=25600, bits=16, data_size=0)
    with pytest.raises(DatasetError) as ei:
        read_wav(path, None)
    assert (
        f"{path}: the WAV data chunk holds no samples (its size is 0 and a 'LIST' chunk follows it)"
        in str(ei.value)
    )
    with pytest.raises(DatasetError, match="holds no samples"):
        read_wav(_riff(tmp_path / "none.wav", b"", tag=1, channels=1, rate=25600, bits=16), None)
    # a streaming writer's file: size 0, samples to the end (RIFF size set or also left at 0)
    x = np.array([-32768, -1, 0, 1, 32767] * 40, "<i2")
    streamed = _riff(tmp_path / "s.wav", x.tobytes(), tag=1, channels=1, rate=25600, bits=16, data_size=0)
    assert np.array_equal(read_wav(streamed, None).channels["ch0"], x / 32768)
    raw = bytearray(streamed.read_bytes())
    raw[4:8] = b"\x00\x00\x00\x00"
    streamed.write_bytes(bytes(raw))
    assert np.array_equal(read_wav(streamed, None).channels["ch0"], x / 32768)


def test_a_streamed_wav_of_unknown_data_size_stops_at_the_chunks_written_after_its_data(tmp_path):
    """A writer streaming its data leaves the data size unset (0xFFFFFFFF, or 0 with the RIFF size 0; RF64 with its
    ds64 size 0) and may append chunks after it (a LIST of tags, an odd size with its pad byte): read to the end
    of the file, their bytes became samples at the recording's end (17 of noise for a 34-byte LIST)."""
    import struct

    from cloud_trainer.train.signals import read_wav

    info = b"LIST" + struct.pack("<I", 27) + b"INFOISFT" + struct.pack("<I", 15) + b"DAQ-Writer 1.0\x00\x00"
    x16 = np.array([-32768, -1, 0, 1, 32767] * 40, "<i2")
    x24 = (
        np.arange(-40, 41, dtype=np.int32) * 100_003
    )  # 81 samples of 3 bytes: an odd data size, its pad byte
    pcm24 = b"".join(int(v).to_bytes(3, "little", signed=True) for v in x24) + b"\x00"
    # samples that hold a chunk's id, not followed by chunks up to the end: samples still
    decoy = np.frombuffer(b"LIST\x02\x00\x00\x00" * 10, "<i2")
    for name, x, bits, pcm, size, riff in (
        ("ff", x16, 16, x16.tobytes(), 0xFFFFFFFF, None),
        ("zero", x16, 16, x16.tobytes(), 0, 0),
        ("odd24", x24, 24, pcm24, 0xFFFFFFFF, None),
        ("decoy", decoy, 16, decoy.tobytes(), 0xFFFFFFFF, None),
    ):
        path = _riff(
            tmp_path / f"{name}.wav", pcm + info, tag=1, channels=1, rate=25600, bits=bits, data_size=size
        )
        if riff is not None:
            path.write_bytes(path.read_bytes()[:4] + struct.pack("<I", riff) + path.read_bytes()[8:])
        want = x / float(1 << (bits - 1))
        assert np.array_equal(read_wav(path, None).channels["ch0"], want), name
    # RF64 whose ds64 data size was never set (0): the same
    rf64 = tmp_path / "rf.wav"
    with rf64.open("wb") as f:
        f.write(
            b"RF64"
            + struct.pack("<I", 0xFFFFFFFF)
            + b"WAVE"
            + b"ds64"
            + struct.pack("<IQQQI", 28, 0, 0, 0, 0)
        )
        f.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 25600, 51200, 2, 16))
        f.write(b"data" + struct.pack("<I", 0xFFFFFFFF) + x16.tobytes() + info)
    assert np.array_equal(read_wav(rf64, None).channels["ch0"], x16 / 32768)


def test_a_streamed_wav_whose_tail_is_chunks_short_of_the_end_is_walked_once_not_from_every_chunk(tmp_path):
    """A streamed WAV (data size unset) whose last bytes are chunk after chunk (JUNK of size 0) falling short of the
    end: each of them is a place the appended chunks might begin, and the chain from each was walked to the end
    again (a MiB of them: hours of the import's CPU); each place is walked once. Counted in the search's steps (lines
    run), not timed; the samples are read to the end as before, and the same chunks reaching the end are found."""
    import sys

    from cloud_trainer.train import signals

    junk = b"JUNK\x00\x00\x00\x00" * 2048
    x = np.arange(-64, 64, dtype="<i2")
    steps, most = [0], 30 * 2048  # the search's lines run, at most (walked from every chunk: ~7 x 2048^2 / 2)
    code = signals._trailing_chunks.__code__

    def count(frame, event, arg):
        steps[0] += 1
        if steps[0] > most:
            raise AssertionError(f"the trailing chunks' search took over {most} steps")
        return count

    def traced(path):
        sys.settrace(lambda frame, event, arg: count if frame.f_code is code else None)
        try:
            return signals.read_wav(path, None).channels["ch0"]
        finally:
            sys.settrace(None)

    short = _riff(tmp_path / "s.wav", x.tobytes() + junk + b"xy", tag=1, channels=1, rate=25600, bits=16,
                  data_size=0xFFFFFFFF)  # fmt: skip
    whole = np.frombuffer(x.tobytes() + junk + b"xy", "<i2")
    assert np.array_equal(traced(short), whole / 32768)  # no chain to the end: samples, as before
    steps[0] = 0
    ends = _riff(tmp_path / "e.wav", x.tobytes() + junk, tag=1, channels=1, rate=25600, bits=16,
                 data_size=0xFFFFFFFF)  # fmt: skip
    assert np.array_equal(traced(ends), x / 32768)


def test_pcm_wav_is_scaled_by_a_power_of_two_and_an_absurd_rate_is_refused(tmp_path):
    """16/32-bit PCM was divided by 32767 / 2^31-1 (24-bit by 2^23): -full scale read as -1.00003."""
    from cloud_trainer.train.signals import read_wav

    x16 = np.array([-32768, -16384, 0, 16384, 32767] * 20, "<i2")
    x32 = np.array([-(2**31), -(2**30), 0, 2**30, 2**31 - 1] * 20, "<i4")
    rec16 = read_wav(_riff(tmp_path / "a.wav", x16.tobytes(), tag=1, channels=1, rate=8000, bits=16), None)
    rec32 = read_wav(_riff(tmp_path / "b.wav", x32.tobytes(), tag=1, channels=1, rate=8000, bits=32), None)
    assert rec16.channels["ch0"][:4].tolist() == [-1.0, -0.5, 0.0, 0.5]
    assert rec32.channels["ch0"][:4].tolist() == [-1.0, -0.5, 0.0, 0.5]
    path = _riff(tmp_path / "c.wav", x16.tobytes(), tag=1, channels=1, rate=20_000_000, bits=16)
    with pytest.raises(
        DatasetError, match=r"c.wav: the WAV header gives a sample rate of 20000000 Hz, above"
    ):
        read_wav(path, None)


def test_a_unit_row_under_the_csv_header_is_refused_naming_the_line(tmp_path):
    from cloud_trainer.train.signals import read_csv

    (tmp_path / "run.csv").write_text(
        "time;accel_x\r\ns;g\r\n" + "".join(f"{_de(a)};0,5\r\n" for a in range(5))
    )
    with pytest.raises(DatasetError) as ei:
        read_csv(tmp_path / "run.csv", None)
    assert f"{tmp_path / 'run.csv'}: line 2 ('s;g') looks like units under the header" in str(ei.value)
    assert "accel_x [unit]" in str(ei.value)


def _npz_cases(d: Path) -> dict[str, str]:
    x = np.zeros(4096)
    (d / "empty.npz").write_bytes(b"")
    (d / "text.npz").write_bytes(b"time,accel_x\n0,1\n")
    (d / "cut.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    np.savez(d / "objects.npz", accel_x=np.array([1, "a", None], dtype=object), sample_rate_hz=RATE)
    np.savez(d / "names.npz", accel_x=x, name=np.array(["pump 1"]), sample_rate_hz=RATE)
    np.savez(d / "rates.npz", accel_x=x, sample_rate_hz=np.array([RATE, RATE]))
    np.savez(d / "zero.npz", accel_x=x, sample_rate_hz=0.0)
    np.savez(d / "nan.npz", accel_x=x, sample_rate_hz=np.nan)
    return {
        "empty.npz": "empty file (0 bytes)",
        "text.npz": "not an NPZ archive (numpy.savez writes a zip file",
        "cut.npz": "not a readable NPZ file (",
        "objects.npz": "array 'accel_x' holds Python objects, not numbers",
        "names.npz": "array 'name' holds <U6 values, not numbers",
        "rates.npz": "sample_rate_hz holds 2 values (shape (2,)); it is one number",
        "zero.npz": "sample_rate_hz is 0; the rate is a number of Hz above 0",
        "nan.npz": "sample_rate_hz is nan; the rate is a number of Hz above 0",
    }


def test_npz_files_numpy_cannot_read_as_numbers_are_refused_in_one_line(tmp_path, capsys):
    """They ended the CLI with a traceback (EOFError, ValueError about pickles, TypeError), and
    sample_rate_hz=0 was reported as missing."""
    from cloud_trainer.train.signals import read_npz

    for name, msg in _npz_cases(tmp_path).items():
        with pytest.raises(DatasetError) as ei:
            read_npz(tmp_path / name, None)
        assert f"{tmp_path / name}: {msg}" in str(ei.value) and "\n" not in str(ei.value), name
    np.savez(tmp_path / "good.npz", accel_x=np.zeros(8192), sample_rate_hz=RATE)
    labels = _labels(tmp_path / "labels.csv", ["empty,healthy,,,", "good,imbalance,,,"])
    argv = ["import", "--kind", "vibration", str(tmp_path / "empty.npz"), str(tmp_path / "good.npz")]
    assert dataset_main([*argv, "--labels", str(labels), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"cloud-trainer dataset import: {tmp_path / 'empty.npz'}: empty file (0 bytes); save the run again with numpy.savez\n"
    )


def test_a_csv_is_read_in_about_the_memory_of_its_numbers_not_held_whole_as_text(tmp_path, monkeypatch):
    """The whole file was read as text and then as lists of cell strings: ~19x the file in memory (an
    85 MB logger export took 1.6 GB; a 2 GB one would not fit). Now rows are parsed a chunk at a time
    and only the numbers stay: below twice the file here (the former code: ~10x)."""
    import tracemalloc

    from cloud_trainer.train import signals

    monkeypatch.setattr(
        signals, "CSV_CHUNK_ROWS", 256, raising=False
    )  # chunks and sniffing small beside this file
    monkeypatch.setattr(signals, "CSV_SNIFF_LINES", 64, raising=False)
    x = np.random.default_rng(3).normal(size=(5000, 3))
    path = tmp_path / "logger.csv"
    path.write_text(
        "time [ms],x [g],y [g],z [g]\n"
        + "".join(f"{i / 10:.1f},{a:.30f},{b:.30f},{c:.30f}\n" for i, (a, b, c) in enumerate(x))
    )
    signals.read_csv(path, None)  # warm: imports and compiled patterns are not the file's memory
    tracemalloc.start()
    try:
        rec = signals.read_csv(path, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rec.rate_hz == 10000.0 and np.allclose(rec.channels["z"], x[:, 2])
    assert peak < 2 * path.stat().st_size, (peak, path.stat().st_size)


def test_a_csv_read_a_block_of_lines_at_a_time_keeps_every_row_and_its_line(tmp_path, monkeypatch):
    """The reader splits a block of plain lines at once and reads a block with a quote row by row: a
    quoted value running over a block's end, blank lines, a row with a trailing empty field and a
    sparse cell still read as before, and a bad row after them is named by its line in the file."""
    from cloud_trainer.train import signals

    monkeypatch.setattr(signals, "CSV_CHUNK_ROWS", 8, raising=False)  # blocks of 4 lines
    x = np.arange(40) * 0.25
    rows = [f"{i / RATE:.6f},{v:.6f}" for i, v in enumerate(x)]
    rows[5] += ","  # a trailing empty field
    rows[9] += "\n"  # a blank line (line 12): not a row
    rows[20] = f"{20 / RATE:.6f},"  # a sparse cell: no value
    rows[33] += ",1"  # line 36: a field more than the header
    path = tmp_path / "run.csv"
    path.write_text("time,a\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"line 36 has 3 fields but the header 2"):
        signals.read_csv(path, None)
    rows[33] = rows[33][:-2]
    rows[12] = f'{12 / RATE:.6f},"{x[12]:.6f}'  # a quote opened on line 15 ...
    rows[13] = f'{x[13]:.6f}"'  # ... closed on line 16: one value, not a number
    path.write_text("time,a\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as ei:
        signals.read_csv(path, None)
    assert str(ei.value).startswith(f"{path}: line 15: column 'a': a quote (\") opened there"), ei.value
    rows[12], rows[13] = f'"{12 / RATE:.6f}","{x[12]:.6f}"', f"{13 / RATE:.6f},{x[13]:.6f}"
    rows[30] += ",1"  # line 33, read row by row after the quotes
    path.write_text("time,a\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"line 33 has 3 fields but the header 2"):
        signals.read_csv(path, None)
    rows[30] = rows[30][:-2]
    path.write_text("time,a\n" + "\n".join(rows) + "\n")
    a = signals.read_csv(path, RATE).channels["a"]
    want = x.copy()
    want[20] = np.nan
    assert np.array_equal(a, want, equal_nan=True)


def test_csv_files_the_csv_module_chokes_on_are_refused_or_read_not_a_traceback(tmp_path):
    """Lines ended by CR alone (Excel's 'CSV (Macintosh)') raised the csv module's 'new-line character
    seen in unquoted field' and an unclosed quote running past 128 KiB its 'field larger than field
    limit', both as tracebacks. Now the first reads; the second is one line naming where the quote
    opened; text that is not UTF-8 names its line."""
    from cloud_trainer.train.signals import read_recording

    x = np.sin(np.arange(3000) * 0.3)
    (tmp_path / "mac.csv").write_bytes(
        ("time,a\r" + "".join(f"{i / RATE:.6f},{v:.6f}\r" for i, v in enumerate(x))).encode()
    )
    rec = read_recording(tmp_path / "mac.csv")
    assert rec.rate_hz == RATE and np.allclose(rec.channels["a"], x, atol=1e-6)

    rows = [f"{i / RATE:.6f},{i % 7}.25" for i in range(10000)]  # > 128 KiB
    rows[9] = rows[9].replace(",", ',"')  # line 11: a quote that is never closed
    (tmp_path / "quote.csv").write_text("time,a\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as ei:
        read_recording(tmp_path / "quote.csv")
    assert str(ei.value).startswith(f"{tmp_path / 'quote.csv'}: line 11: not readable as CSV"), ei.value
    assert "not closed" in str(ei.value) and len(str(ei.value)) < 400
    rows[99] = rows[99] + '"'  # closed 90 lines on: those lines are one value, said in one short line
    (tmp_path / "quote.csv").write_text("time,a\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as ei:
        read_recording(tmp_path / "quote.csv")
    assert str(ei.value).startswith(f"{tmp_path / 'quote.csv'}: line 11: column 'a': a quote"), ei.value
    assert "closed only at line 101" in str(ei.value) and len(str(ei.value)) < 400

    (tmp_path / "latin1.csv").write_bytes("time;a\n0;1\n0,1;2\n0,2;Größe\n".encode("latin-1"))
    with pytest.raises(
        DatasetError,
        # the byte and what it is in a Windows code page (German Excel's CSV export): not read in one guessed
        match=r"latin1.csv: not UTF-8 text \(invalid start byte in line 4 at byte 23: 0xf6, 'ö' in Windows-1252\); "
        r"export it as UTF-8 \(in Excel: 'CSV UTF-8'\)",
    ):
        read_recording(tmp_path / "latin1.csv")
    # 0x80 is '€' in Windows-1252 alone (a C1 control in Latin-1): the message said "in Windows-1252 or Latin-1"
    (tmp_path / "euro.csv").write_bytes("time;Preis €\n0;1\n".encode("cp1252"))
    with pytest.raises(
        DatasetError, match=r"euro.csv: not UTF-8 text \(.*: 0x80, '€' in Windows-1252\); export"
    ):
        read_recording(tmp_path / "euro.csv")


@pytest.mark.parametrize(
    ("encoding", "said"),
    [
        # before: "line 52 has 1 fields but the header 2; fix the row" (LE), "column '\x00t\x00i...' holds a
        # value that is not a number" (BE): rows that are right to fix
        ("utf-16-le", "reads as UTF-16 text without a byte-order mark (little-endian"),
        ("utf-16-be", "reads as UTF-16 text without a byte-order mark (big-endian"),
        ("utf-16", "UTF-16 text (it starts with UTF-16's byte-order mark)"),
        # before: "UTF-16 text (it starts with UTF-16's byte-order mark)" (its mark opens with UTF-16's), and
        # without a mark "line 1: not readable as CSV (line contains NUL)"
        ("utf-32", "UTF-32 text (it starts with UTF-32's byte-order mark)"),
        (
            "utf-32-le",
            "reads as UTF-32 text without a byte-order mark (little-endian: three bytes of every four",
        ),
        (
            "utf-32-be",
            "reads as UTF-32 text without a byte-order mark (big-endian: three bytes of every four",
        ),
    ],
)
def test_a_utf16_csv_is_named_utf16_with_its_byte_order_mark_or_without(tmp_path, encoding, said):
    """A run's CSV, and the labels CSV as well (it had no such check: UTF-16 without a mark was 'needs a
    header with run,fault', UTF-32 'not UTF-8 text')."""
    from cloud_trainer.train.signals import read_labels, read_recording

    text = "time;accel_x\n" + "".join(f"{i / 1000};{i % 7}.5\n" for i in range(50))
    (tmp_path / "u16.csv").write_bytes(text.encode(encoding))
    labels = "run,fault,start_s,end_s,failure_s\n" + "".join(f"r{i},healthy,,,\n" for i in range(9))
    (tmp_path / "labels.csv").write_bytes(labels.encode(encoding))
    for path, read in ((tmp_path / "u16.csv", read_recording), (tmp_path / "labels.csv", read_labels)):
        with pytest.raises(DatasetError) as ei:
            read(path)
        assert str(ei.value).startswith(f"{path}: ") and said in str(ei.value), ei.value
        assert str(ei.value).endswith("export it as UTF-8"), ei.value


def test_a_csv_value_over_128_kib_in_the_first_lines_is_one_line_naming_its_line(tmp_path):
    """A value over the csv module's 128 KiB field limit within the first 64 lines (the lines read
    to see whether the first column is a pandas index) raised '_csv.Error: field larger than field
    limit' as a traceback; now it is the same one-line error as further down, naming the line."""
    from cloud_trainer.train.signals import read_recording

    rows = [f"{i / RATE:.6f},{i % 7}.25" for i in range(200)]
    rows[1] += "7" * 140_000  # line 3
    path = tmp_path / "long.csv"
    path.write_text("time,a\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as ei:
        read_recording(path)
    assert str(ei.value).startswith(f"{path}: line 3: not readable as CSV"), ei.value
    assert "field limit" in str(ei.value) and len(str(ei.value)) < 400


def test_a_csv_with_two_defects_is_refused_for_the_first_one(tmp_path):
    """A row's error (a field too many or too few, a units row under the header) was named before a
    damage further on (text that is not UTF-8, an unclosed quote past 128 KiB), as the csv module
    reaches them; reading blocks of lines named the later damage (line 20002) instead. Now the first."""
    from cloud_trainer.train.signals import read_recording

    rows = [f"{i / 25600:.6f},{i % 7}.25,{i % 5}.5" for i in range(21000)]
    rows[20000] += "\xb5"  # line 20002 (20003 under a units row): Latin-1, not UTF-8
    cases = {
        "extra.csv": (
            ["timestamp,ax,ay"] + rows[:100] + [rows[100] + ",5"] + rows[101:],
            "line 102 has 4 fields",
        ),
        "units.csv": (["timestamp,ax,ay", "s,g,g"] + rows, "line 2 ('s,g,g') looks like units"),
        "short.csv": (
            ["timestamp,ax,ay"] + rows[:5000] + ["", "5.0,1"] + rows[5002:],
            "line 5003 has 2 fields",
        ),
    }
    for name, (lines, want) in cases.items():
        (tmp_path / name).write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
        with pytest.raises(DatasetError) as ei:
            read_recording(tmp_path / name)
        assert str(ei.value).startswith(f"{tmp_path / name}: {want}"), ei.value
    # quoted (read row by row): a units row, then a value over 128 KiB at line 81
    q = ['"timestamp","ax","ay"', '"s","g","g"'] + ['"' + r.replace(",", '","') + '"' for r in rows[:200]]
    q[80] = q[80][:-1] + "7" * 140_000 + '"'
    (tmp_path / "quoted.csv").write_text("\n".join(q) + "\n")
    with pytest.raises(DatasetError) as ei:
        read_recording(tmp_path / "quoted.csv")
    assert str(ei.value).startswith(f"{tmp_path / 'quoted.csv'}: line 2 ('s,g,g') looks like units"), ei.value


def test_iso_times_without_a_zone_read_the_same_on_a_trainer_in_any_time_zone(tmp_path, monkeypatch):
    """ISO times without a zone were read in the trainer's local time: on a computer in Europe/Berlin a
    logger's run across 03:00 on 25 Oct 2026 (when clocks there fall back) was refused as a 3600 s
    gap, the same file read fine on one in UTC. Now they are the logger's clock as written (UTC)."""
    import datetime as dt
    import time

    from cloud_trainer.train.signals import read_recording

    start = dt.datetime(2026, 10, 25, 2, 59, 59)
    x = np.sin(np.arange(3000) * 0.3)
    stamps = [(start + dt.timedelta(milliseconds=i)).isoformat(timespec="milliseconds") for i in range(3000)]
    path = tmp_path / "run.csv"
    path.write_text("timestamp,a\n" + "".join(f"{s},{v:.6f}\n" for s, v in zip(stamps, x, strict=True)))
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        rec = read_recording(path)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert rec.rate_hz == 1000.0 and np.allclose(rec.channels["a"], x, atol=1e-6)


@pytest.mark.parametrize(
    "option",
    [
        ["--rate-hz", "-10000"],
        ["--rate-hz", "inf"],
        ["--rate-hz", "0"],
        ["--resample-to", "0"],
        ["--window-samples", "0"],
        ["--hop-samples", "0"],
    ],
)
def test_a_rate_or_window_option_that_is_not_one_is_refused_naming_it(tmp_path, capsys, option):
    """--rate-hz -10000 or inf on runs without a time column wrote a dataset 'sampled at' -10000 Hz or
    Infinity; --rate-hz 0 and --window-samples 0 ended in a ZeroDivisionError / ValueError traceback;
    --resample-to 0 and --hop-samples 0 were taken as 'not given'. Each is now one line naming the
    option, and nothing is written."""
    x = np.sin(np.arange(6000) * 0.3)
    for run in ("r1", "r2"):
        (tmp_path / f"{run}.csv").write_text("accel\n" + "".join(f"{v:.5f}\n" for v in x))
    labels = tmp_path / "labels.csv"
    labels.write_text("run,fault\nr1,healthy\nr2,imbalance\n")
    runs = [str(tmp_path / "r1.csv"), str(tmp_path / "r2.csv")]
    rate = [] if option[0] == "--rate-hz" else ["--rate-hz", "10000"]
    argv = ["import", "--kind", "vibration", *runs, "--labels", str(labels), "--out", str(tmp_path / "ds")]
    assert dataset_main([*argv, *rate, *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cloud-trainer dataset import: {option[0]} {option[1]}: a "), err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "ds").exists()


def _two_runs(tmp_path: Path) -> list[Path]:
    """Two 2-s runs at 10 kHz (nine 2048-sample windows each), two recordings (one twice is refused)."""
    return [
        _csv(tmp_path / f"{run}.csv", np.sin(np.arange(20000) * 0.3 + k))
        for k, run in enumerate(("r1", "r2"))
    ]


@pytest.mark.parametrize(
    "name, text, faults",
    [
        ("bom", "\ufeffrun,fault,start_s,end_s,failure_s\r\nr1,healthy,,,\r\nr2,imbalance,,,\r\n", (9, 9)),
        ("excel_de", "Run;Fault;start_s;end_s;failure_s\nr1;healthy;;;\nr2;imbalance;0,5;1,5;3,0\n", (9, 4)),
    ],
)
def test_a_labels_file_saved_by_a_spreadsheet_reads(tmp_path, name, text, faults):
    """Excel's byte-order mark or its ';' with decimal commas made the labels file 'need a header with
    run,fault' that it had."""
    labels = tmp_path / f"{name}.csv"
    labels.write_text(text, encoding="utf-8")
    res = import_vibration(_two_runs(tmp_path), tmp_path / "ds", labels)
    assert (res["faults"]["healthy"], res["faults"]["imbalance"]) == faults


def test_a_labels_file_of_decimal_commas_reads_its_numbers_as_a_run_file_does(tmp_path):
    """In a file written with decimal commas a point groups thousands: a run's CSV reads 3.600 as 3600, the
    labels file read it as 3.6 (its numbers were read one by one, a comma's only where it had one). Now both
    read 3600 and refuse 3.6 naming why; Excel's sep= line is read as in a run's CSV (it was 'needs a
    header')."""
    from cloud_trainer.train.signals import read_labels, read_recording

    labels = tmp_path / "labels.csv"
    labels.write_text("sep=;\nrun;fault;start_s;end_s;failure_s\nr1;imbalance;0,5;3.600;\n")
    (row,) = read_labels(labels)
    assert (row.start_s, row.end_s) == (0.5, 3600.0)
    run = tmp_path / "run.csv"  # the same cells in a run's CSV
    run.write_text("a;b\n0,5;1\n3.600;2\n")
    assert list(read_recording(run, RATE).channels["a"]) == [0.5, 3600.0]
    labels.write_text("run;fault;start_s;end_s;failure_s\nr1;imbalance;0,5;3.6;\n")
    with pytest.raises(DatasetError) as ei:
        read_labels(labels)
    assert str(ei.value) == (
        f"{labels}:2: end_s '3.6' is not a number of seconds (a decimal point in a file written with decimal commas)"
    )


@pytest.mark.parametrize(
    "rows, msg",
    [
        (["r2,imbalance,0,0.5,", "r2,imbalance,1.5,0.5,"], ":4: start_s 1.5 is not before end_s 0.5"),
        (["r2,imbalance,0,0.5,", "r2,bearing_outer,nan,,"], ":4: start_s is 'nan'"),
        (["r2,imbalance,,,1.0"], ":3: failure_s 1 is before the end of run 'r2''s window at 1.024 s"),
        (
            ["r2,imbalance,0,1.5,", "r2,bearing_outer,1.0,2.0,"],
            ": lines 3 and 4 both label run 'r2' from 1.024 to 1.2288 s",
        ),
    ],
)
def test_labels_that_would_be_ignored_or_train_a_wrong_target_are_refused_naming_the_line(
    tmp_path, rows, msg
):
    """A start after its end or a NaN start labelled nothing without a word (its windows counted as
    'unlabelled'); a failure before the end of the labelled windows trained a negative remaining life;
    two labels with different faults on one window kept the first. Each is now one line naming it."""
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", *rows])
    with pytest.raises(DatasetError) as ei:
        import_vibration(_two_runs(tmp_path), tmp_path / "ds", labels)
    assert str(ei.value).startswith(f"{labels}{msg}"), ei.value
    assert not (tmp_path / "ds").exists()


def test_a_sparse_channel_beside_the_signal_does_not_refuse_the_run(tmp_path):
    """Loggers write a slow channel (a temperature every 100th row) with empty cells or nulls between:
    such a file was refused whole ('not a number' / 'missing values') even with --channel naming the
    full-rate signal. Now an empty cell or null is a missing value, refused only in the channel the
    import uses, naming its line or row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.sin(np.arange(4096) * 0.3)
    temp = [f"{40 + i / 1000:.2f}" if i % 100 == 0 else "" for i in range(4096)]
    (tmp_path / "r1.csv").write_text(
        "time;accel [g];temp [°C]\n"
        + "".join(
            f"{i / RATE:.6f};{v:.6f};{c}\n".replace(".", ",")
            for i, (v, c) in enumerate(zip(x, temp, strict=True))
        )
    )
    pq.write_table(
        pa.table(
            {
                "time": np.arange(4096) / RATE,
                "accel [g]": _another(x),  # not x: one recording twice is refused as a copy
                "temp [°C]": pa.array([float(c) if c else None for c in temp]),
            }
        ),
        tmp_path / "r2.parquet",
    )
    runs = [tmp_path / "r1.csv", tmp_path / "r2.parquet"]
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    res = import_vibration(runs, tmp_path / "ds", labels, channel="accel")
    assert res["faults"] == {"healthy": 2, "imbalance": 2}
    data = load_vibration(tmp_path / "ds")
    assert np.allclose(data.waveforms[0], x[:2048], atol=1e-6) and np.allclose(
        data.waveforms[2], _another(x)[:2048]
    )
    for run, where in (("r2.parquet", "row 1"), ("r1.csv", "line 3")):
        runs = [tmp_path / run, *(r for r in runs if r.name != run)]  # the file read first is refused
        with pytest.raises(DatasetError) as ei:
            import_vibration(runs, tmp_path / "ds2", labels, channel="temp")
        assert str(ei.value).startswith(f"{tmp_path / run}: {where}: channel 'temp' has no value"), ei.value


def test_a_multichannel_wav_costs_the_memory_of_the_channel_used_not_of_all(tmp_path):
    """Every channel of a WAV file was converted to float64 at once (8 bytes a sample, plus the
    integer copy): an 8-channel 16-bit recording took over 5x its size in memory before a single
    channel was used, 2 GB of recording over 10 GB. The file is now mapped and a channel converted when
    used: the import of one channel of eight stays below the file's size."""
    import tracemalloc

    from cloud_trainer.train.signals import read_recording

    frames, n_ch = 20000, 8
    rng = np.random.default_rng(5)
    pcm = (rng.normal(0, 3000, (frames, n_ch))).astype("<i2")
    path = _riff(tmp_path / "daq.wav", pcm.tobytes(), tag=1, channels=n_ch, rate=25600, bits=16)
    tracemalloc.start()
    try:
        rec = read_recording(path)
        ch3 = rec.channels["ch3"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert list(rec.channels) == [f"ch{i}" for i in range(n_ch)]
    assert np.array_equal(ch3, pcm[:, 3] / 32768)
    assert peak < path.stat().st_size, (peak, path.stat().st_size)


def test_the_channel_taken_from_a_multichannel_file_is_stated_in_the_result_and_dataset(tmp_path):
    """A stereo or multi-channel recording gave its first channel's windows with no word of which
    channel, or that there were others. The result and dataset.yaml now name it per run."""
    import yaml

    x = np.sin(np.arange(4096) * 0.3) * 0.5
    stereo = (np.column_stack([x, -x / 2]) * 32767).astype("<i2")
    y = _another(x)  # two recordings: one twice is refused as a copy
    other = (np.column_stack([y, -y / 2]) * 32767).astype("<i2")
    for run, samples in (("r1", stereo), ("r2", other)):
        _riff(tmp_path / f"{run}.wav", samples.tobytes(), tag=1, channels=2, rate=10000, bits=16)
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    runs = [tmp_path / "r1.wav", tmp_path / "r2.wav"]
    res = import_vibration(runs, tmp_path / "ds", labels)
    assert res["channels"] == {"r1": "ch0 (of ch0, ch1)", "r2": "ch0 (of ch0, ch1)"}
    meta = yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())
    assert meta["channels"] == res["channels"]
    res = import_vibration(runs, tmp_path / "ds1", labels, channel="ch1")
    assert res["channels"]["r1"] == "ch1 (of ch0, ch1)"
    assert np.allclose(load_vibration(tmp_path / "ds1").waveforms[0], stereo[:2048, 1] / 32768)


def test_parquet_time_as_pandas_and_databases_write_it_is_the_time(tmp_path):
    """pandas writes a DataFrame's unnamed DatetimeIndex as a column '__index_level_0__' (named in the
    file's pandas metadata) and a Timedelta column as an Arrow duration; databases export fixed-point
    seconds as decimal. Each was refused ('not a number' / 'is duration[ns]' / 'is decimal128'), and an
    integer index beside a time column was taken as a channel. They are the time now, an index is never
    a channel, and a float32 time too coarse to tell samples apart is refused saying so."""
    import decimal
    import json as json_

    import pyarrow as pa
    import pyarrow.parquet as pq

    from cloud_trainer.train.signals import read_recording

    x = np.sin(np.arange(4096) * 0.3)
    ns = (np.arange(4096) * 100_000 + 1_767_225_600 * 10**9).astype(np.int64)  # 10 kHz

    def pandas_meta(table, index):
        return table.replace_schema_metadata({b"pandas": json_.dumps({"index_columns": [index]}).encode()})

    tables = {
        "index.parquet": pandas_meta(
            pa.table({"accel": x, "__index_level_0__": pa.array(ns).cast(pa.timestamp("ns"))}),
            "__index_level_0__",
        ),
        "duration.parquet": pa.table({"elapsed": pa.array(ns - ns[0]).cast(pa.duration("ns")), "accel": x}),
        "decimal.parquet": pa.table(
            {
                "time": pa.array([decimal.Decimal(i) / 10000 for i in range(4096)], pa.decimal128(12, 4)),
                "accel": x,
            }
        ),
        "rows.parquet": pandas_meta(
            pa.table({"time": np.arange(4096) / RATE, "accel": x, "__index_level_0__": np.arange(4096) + 7}),
            "__index_level_0__",
        ),
        "other_tool.parquet": pa.table({"time": np.arange(4096) / RATE, "accel": x}).replace_schema_metadata(
            {b"pandas": b"{not json"}  # another tool's metadata under pandas' key
        ),
    }
    for name, table in tables.items():
        pq.write_table(table, tmp_path / name)
        rec = read_recording(tmp_path / name)
        assert rec.rate_hz == RATE and list(rec.channels) == ["accel"], name
        assert np.array_equal(rec.channels["accel"], x), name
    pq.write_table(pa.table({"time": (ns / 1e9).astype(np.float32), "accel": x}), tmp_path / "f32.parquet")
    with pytest.raises(
        DatasetError, match=r"f32.parquet: time column 'time' is float, which holds about 7 digits"
    ):
        read_recording(tmp_path / "f32.parquet")


def test_a_time_column_coarser_than_the_samples_is_read_not_refused_as_duplicates(tmp_path):
    """A logger writing milliseconds at 25.6 kHz (0.000, 0.000, ..., 0.001) was refused: 'time does
    not increase at sample 1 ... remove duplicates' (which would delete 96 % of the run), with or without
    --rate-hz. Such a clock now gives the rate from all its times when the run is long enough to
    measure it to 0.1 %, is checked against --rate-hz when it is not, and a gap or a rate change under
    the rounding is still refused; duplicated rows of a fine clock are still duplicates."""
    from cloud_trainer.train.signals import read_recording

    def run(name: str, t: np.ndarray) -> Path:
        stamps = np.floor((t + 1_767_225_600.0) * 1000) / 1000  # epoch seconds, written in ms
        path = tmp_path / name
        path.write_text("timestamp,a\n" + "".join(f"{s:.3f},{i % 7}\n" for i, s in enumerate(stamps)))
        return path

    long = run("long.csv", np.arange(30000) / RATE)  # 3 s at 10 kHz in 1 ms steps: the rate to 0.07 %
    assert read_recording(long).rate_hz == RATE
    short = run("short.csv", np.arange(5000) / RATE)  # 0.5 s: to 0.4 % only
    with pytest.raises(
        DatasetError, match=r"short.csv: the time column counts in steps of 0.001 s.*give --rate-hz"
    ):
        read_recording(short)
    assert read_recording(short, RATE).rate_hz == RATE
    with pytest.raises(DatasetError, match=r"--rate-hz says 9000 Hz but the time column shows 1000\d"):
        read_recording(short, 9000.0)
    gap = run("gap.csv", np.r_[np.arange(15000), np.arange(15000, 30000) + 1000] / RATE)  # 0.1 s gap
    with pytest.raises(DatasetError, match=r"gap.csv: the time column .* strays 0.0\d+ s from an even clock"):
        read_recording(gap, RATE)
    fine = tmp_path / "dup.csv"
    fine.write_text(
        "time,a\n" + "".join(f"{s:.6f},1\n" for s in np.r_[np.arange(100), np.arange(99, 200)] / RATE)
    )
    with pytest.raises(DatasetError, match="time does not increase at sample 100"):
        read_recording(fine)


def test_day_first_dotted_dates_as_excel_writes_them_in_german_read_as_the_time(tmp_path):
    """Excel in German (and other) locales writes times as 25.10.2026 02:59:59,123: refused as 'neither
    seconds nor an ISO 8601 timestamp'. Day-first dotted dates now read (fractions kept to the
    digit); dates with slashes, whose order differs by country, are still refused."""
    import datetime as dt

    from cloud_trainer.train.signals import read_recording

    start = dt.datetime(2026, 10, 25, 2, 59, 59)
    x = np.sin(np.arange(5000) * 0.3)
    stamps = [
        (start + dt.timedelta(microseconds=100 * i)).strftime("%d.%m.%Y %H:%M:%S,%f") for i in range(5000)
    ]
    path = tmp_path / "export.csv"
    values = (f"{v:.6f}".replace(".", ",") for v in x)
    path.write_text(
        "Zeitstempel;Beschleunigung [g]\r\n"
        + "".join(f"{s};{v}\r\n" for s, v in zip(stamps, values, strict=True))
    )
    rec = read_recording(path)
    assert rec.rate_hz == RATE and np.allclose(rec.channels["Beschleunigung"], x, atol=1e-6)
    path.write_text("time,a\n10/11/2026 02:59:59,1\n10/11/2026 02:59:59.0001,1\n")
    with pytest.raises(DatasetError, match=r"line 2: time '10/11/2026 02:59:59' is neither seconds"):
        read_recording(path)


@pytest.mark.parametrize("sep", [";", "\t"], ids=["semicolon", "tab"])
def test_excels_sep_line_before_the_header_names_the_delimiter(tmp_path, sep):
    """Tools that write CSV for Excel put 'sep=;' above the header: the line was taken as the header
    ('column 2 has no name in the header but holds values'). It now names the delimiter; 'sep=' and a tab too (the
    tab was stripped as blank space: the labels file was refused, "needs a header ... (found 'sep=\\t')")."""
    from cloud_trainer.train.signals import read_labels, read_recording

    x = np.sin(np.arange(3000) * 0.3)
    rows = "".join(f"{i / RATE:.6f}{sep}{v:.6f}\n".replace(".", ",") for i, v in enumerate(x))
    (tmp_path / "excel.csv").write_text(f"sep={sep}\nZeit [s]{sep}Beschl [g]\n" + rows, encoding="utf-8-sig")
    rec = read_recording(tmp_path / "excel.csv")
    assert rec.rate_hz == RATE and list(rec.channels) == ["Beschl"]
    assert np.allclose(rec.channels["Beschl"], x, atol=1e-6)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        f"sep={sep}\nrun{sep}fault{sep}start_s{sep}end_s{sep}failure_s\nr1{sep}imbalance{sep}0,5{sep}3{sep}\n"
    )
    (row,) = read_labels(labels)
    assert (row.run, row.fault, row.start_s, row.end_s) == ("r1", "imbalance", 0.5, 3.0)


@pytest.mark.parametrize(
    ("first", "sep"),
    [
        ("sep=;\t", ";"),
        ("sep=; ", ";"),
        ('"sep=;"\t', ";"),
        ('"sep=;";;', ";"),
        ("SEP=;;;", ";"),
        ("sep=\t\t\t", "\t"),
        ("sep=;\t\t", "\t"),
        ('"sep=,",,', ","),
    ],
    ids=[
        "tab",
        "space",
        "quoted-tab",
        "quoted-padded",
        "padded",
        "tab-padded",
        "saved-as-tabs",
        "comma-padded",
    ],
)
@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_excels_sep_line_is_read_with_what_follows_it(tmp_path, first, sep, eol):
    """'sep=;' followed by a tab or a space, or padded with the empty cells of a sheet that shows it ('"sep=;";;'),
    was taken for the header: 'line 2 has 3 fields but the header 2', 'column 2 has no name in the header'. A sheet
    showing 'sep=;' saved as tab-delimited text ('sep=;' and tabs, then tabs between fields) is read with tabs."""
    from cloud_trainer.train.signals import read_csv, read_labels

    comma = "," if sep != "," else "."
    lines = [
        first,
        sep.join(["t", "x", "y"]),
        sep.join(["0", f"1{comma}5", "2"]),
        sep.join(["0.01", f"1{comma}6", "2"]),
    ]
    path = tmp_path / "run.csv"
    path.write_bytes(("\ufeff" + eol.join(lines) + eol).encode())
    rec = read_csv(path, None)
    assert list(rec.channels) == ["x", "y"] and list(rec.channels["x"]) == [1.5, 1.6] and rec.rate_hz == 100
    labels = tmp_path / "labels.csv"
    labels.write_bytes(eol.join([first, sep.join(["run", "fault"]), sep.join(["r1", "imbalance"])]).encode())
    assert [(r.run, r.fault) for r in read_labels(labels)] == [("r1", "imbalance")]


def test_numpy_savetxts_commented_header_names_the_time_column(tmp_path):
    """numpy.savetxt writes its header after '# ' ('# time,x'): the time column was called '# time', not found
    ('no time column ...; give --rate-hz'), and with --rate-hz given it was read as the first channel, the one a
    run's windows come from without --channel."""
    from cloud_trainer.train.signals import read_csv

    t = np.arange(400) / 1000
    np.savetxt(tmp_path / "run.csv", np.c_[t, np.sin(t * 300)], delimiter=",", header="time,x")
    for rate in (None, 1000.0):
        rec = read_csv(tmp_path / "run.csv", rate)
        assert rec.rate_hz == 1000 and list(rec.channels) == ["x"]
    # channels numbered with '#' keep it, all alike (the first alone lost it: '1' beside '#2')
    (tmp_path / "n.csv").write_text("#1,#2\n0.5,1.5\n0.6,1.6\n0.7,1.7\n")
    assert list(read_csv(tmp_path / "n.csv", 1000.0).channels) == ["#1", "#2"]


@pytest.mark.parametrize("title", ["# Device: DAQ-1", "% MATLAB export", "Vibration log 2024-01-01"])
def test_a_title_line_above_the_header_is_said_as_one(tmp_path, title):
    """A logger's title or comment line above the column names was taken for a header of one field: 'line 2 has 2
    fields but the header 1', with nothing to say which line was taken for the header."""
    from cloud_trainer.train.signals import read_csv

    (tmp_path / "run.csv").write_text(f"{title}\ntime,x\n0.000,1.5\n0.001,2.5\n0.002,3.5\n")
    with pytest.raises(DatasetError, match=r"run.csv: line 2 has 2 fields but the header 1 .*") as got:
        read_csv(tmp_path / "run.csv", None)
    assert f"(the header, line 1, is {title!r}: a title or comment above the column names?" in str(got.value)


def test_a_parquet_time_of_epoch_nanoseconds_as_integers_is_read_or_refused_in_one_line(tmp_path):
    """InfluxDB and Spark write the time as int64 epoch nanoseconds: past 2^53, pyarrow's safe cast to float raised
    ArrowInvalid ('Integer value 1700000000000000000 not in range'), naming no file. Named 'time [ns]' it reads;
    named 'timestamp' it is refused naming the unit its size says (it said milliseconds)."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from cloud_trainer.train.signals import read_parquet

    ns = np.arange(400, dtype=np.int64) * 39_062 + 1_700_000_000_000_000_000  # 25.6 kHz
    x = np.sin(np.arange(400) * 0.3)
    for name in ("time [ns]", "timestamp"):
        pq.write_table(pa.table({name: ns, "x": x, "count": ns}), tmp_path / "run.parquet")
        if name == "timestamp":
            with pytest.raises(
                DatasetError, match=r"run.parquet: .* epoch nanoseconds\? name the column 'time \[ns\]'"
            ):
                read_parquet(tmp_path / "run.parquet", None)
            continue
        rec = read_parquet(tmp_path / "run.parquet", None)
        assert rec.rate_hz == 25600 and np.array_equal(rec.channels["x"], x)
        assert rec.channels["count"][0] == float(ns[0])  # a channel past 2^53 too


@pytest.mark.parametrize(
    ("header", "rate"),
    [
        ("time [\u03bcs]", 1e6),
        ("time_\u03bcs", 1e6),
        ("time [msec]", 1e3),
        ("time (usec)", 1e6),
        ("time_msec", 1e3),
        ("time [nsec]", 1e9),
        ("time_nsec", 1e9),
    ],
    ids=["greek-mu", "greek-mu-suffix", "msec", "usec", "msec-suffix", "nsec", "nsec-suffix"],
)
def test_time_units_as_other_keyboards_and_loggers_spell_them(tmp_path, header, rate):
    """The Greek mu (U+03BC) looks like the micro sign and was refused 'unit 'μs' not understood; use one of s, sec,
    ms, us, µs, ns'; msec, usec and nsec (loggers' spellings) were refused too."""
    from cloud_trainer.train.signals import read_csv

    (tmp_path / "run.csv").write_text(f"{header},x\n0,1.5\n1,1.6\n2,1.7\n", encoding="utf-8")
    rec = read_csv(tmp_path / "run.csv", None)
    assert rec.rate_hz == rate and list(rec.channels) == ["x"]


def test_an_epoch_time_finer_than_its_column_says_is_refused_naming_the_unit_that_reads_it(tmp_path):
    """A 'time [ms]' column of epoch microseconds was told, from its value in seconds, to be called 'time [ms]' (what
    it was called), and a 'time [us]' one of nanoseconds 'time [ms]', then 'time [us]' again: the advice went
    round. The unit it names now reads the file."""
    from cloud_trainer.train.signals import read_csv

    us = np.arange(20, dtype=np.int64) * 1000 + 1_700_000_000_000_000  # 1 kHz
    for written, said, right in ((us, "time [ms]", "time [us]"), (us * 1000, "time [us]", "time [ns]")):
        (tmp_path / "run.csv").write_text(f"{said},x\n" + "".join(f"{v},0.5\n" for v in written))
        with pytest.raises(DatasetError, match=r"seconds as its name says\? name the column") as got:
            read_csv(tmp_path / "run.csv", None)
        assert str(got.value).endswith(f"name the column {right!r}")
        (tmp_path / "run.csv").write_text(f"{right},x\n" + "".join(f"{v},0.5\n" for v in written))
        assert read_csv(tmp_path / "run.csv", None).rate_hz == 1000


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "signals"


def test_an_rf64_wav_as_libsndfile_writes_it_is_read():
    """RF64 (its data size in a ds64 chunk; written by recorders and libsndfile, small files too) was refused as
    'an RF64 (over 4 GB) WAV file; split the recording'. A big-endian RIFX file is refused saying what it is (it was
    'not a WAV file')."""
    from cloud_trainer.train.signals import read_wav

    rec = read_wav(FIXTURES / "libsndfile_rf64_pcm24.wav", None)
    t = np.arange(1000) / 25600
    assert rec.rate_hz == 25600 and list(rec.channels) == ["ch0", "ch1"]
    assert np.allclose(rec.channels["ch0"], 0.8 * np.sin(2 * np.pi * 1000 * t), atol=1e-4)
    assert np.allclose(rec.channels["ch1"], 0.4 * np.cos(2 * np.pi * 250 * t), atol=1e-4)
    with pytest.raises(
        DatasetError, match=r"libsndfile_rifx_pcm16.wav: a big-endian WAV file \(RIFX\); export"
    ):
        read_wav(FIXTURES / "libsndfile_rifx_pcm16.wav", None)


def test_a_bw64_wav_is_read_as_the_rf64_it_is_under_another_id(tmp_path):
    """BW64 (ITU-R BS.2088, broadcast recorders and ADM tools) is RF64's layout under the id ``BW64``, with its ADM
    metadata chunks (``chna``, ``axml``): it was refused as "not a WAV file (no RIFF/WAVE header)"."""
    import struct

    from cloud_trainer.train.signals import read_wav

    x = np.array([-32768, -1, 0, 1, 32767] * 40, "<i2")
    path = tmp_path / "take.wav"
    chna = b"chna" + struct.pack("<I", 4) + struct.pack("<HH", 1, 1)
    with path.open("wb") as f:
        f.write(b"BW64" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE")
        f.write(b"ds64" + struct.pack("<IQQQI", 28, 0, x.nbytes, len(x), 0))
        f.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 48000, 96000, 2, 16) + chna)
        f.write(b"data" + struct.pack("<I", 0xFFFFFFFF) + x.tobytes())
        f.write(b"axml" + struct.pack("<I", 7) + b"<ebu/>\x00\x00")  # after the data, its pad byte
    rec = read_wav(path, None)
    assert rec.rate_hz == 48000 and np.array_equal(rec.channels["ch0"], x / 32768)


def test_an_rf64_recording_too_large_to_read_is_refused_in_one_line_not_killed_for_memory(tmp_path):
    """RF64 exists for recordings over 4 GB, refused in one line before; read then, a channel was converted whole
    to float64 (16-bit: 10 bytes a sample at the peak): a 6-GB recording took ~30 GB, the process killed for want of
    memory. A channel that would not fit in the memory free is refused, naming the sizes. (A sparse file: a
    terabyte of data that takes no disk.)"""
    import struct

    from cloud_trainer.train.signals import read_wav

    path, size = tmp_path / "long.wav", 1 << 40
    with path.open("wb") as f:
        f.write(b"RF64" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE")
        f.write(b"ds64" + struct.pack("<IQQQI", 28, 0, size, size // 2, 0))
        f.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 48000, 96000, 2, 16))
        f.write(b"data" + struct.pack("<I", 0xFFFFFFFF))
        f.truncate(f.tell() + size)
    rec = read_wav(path, None)  # mapped, not read
    with pytest.raises(
        DatasetError, match=r"long.wav: channel ch0 holds 549,755,813,888 samples, about 4947.8 GB"
    ):
        rec.channels["ch0"]


@pytest.mark.parametrize("tag,bits", [(1, 8), (1, 24), (1, 32), (3, 64)])
def test_a_wav_channel_is_read_and_checked_within_the_memory_its_check_reckons(tmp_path, tag, bits):
    """A channel was converted whole, through integers as large as the result: 24-bit took 19 bytes a sample against
    the 16 the memory check reckoned (a channel between the two passed it, then the process was killed for memory),
    and the import's time-ramp check took 9 more. Now read a block at a time into its float64 (8 bytes a sample), the
    checks a byte more: within ``_WAV_BYTES_A_SAMPLE`` (and a block), as numpy's allocations count them."""
    import tracemalloc

    from cloud_trainer.train import signals

    frames, width = 1_000_000, bits // 8
    rng = np.random.default_rng(bits)
    if tag == 3:
        samples = rng.uniform(-1, 1, 2 * frames).astype(f"<f{width}").tobytes()
    else:
        samples = rng.integers(0, 256, 2 * frames * width, dtype=np.uint8).tobytes()
    rec = signals.read_wav(
        _riff(tmp_path / "r.wav", samples, tag=tag, channels=2, rate=10_000, bits=bits), None
    )
    tracemalloc.start()
    try:
        x = rec.channels["ch1"]
        signals._not_a_time_ramp(rec, "ch1")
        signals._channel(rec, "ch1", rec.rate_hz)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 8 bytes a sample for the float64, 1 for the checks, and a block's integers (what the memory check reckons)
    assert peak <= frames * 9 + signals._WAV_BLOCK_FRAMES * 2 * 16, peak / frames
    assert signals._WAV_BYTES_A_SAMPLE >= 9
    raw = np.frombuffer(samples, dtype=np.uint8).reshape(frames, 2, width)[:, 1]
    if tag == 3:
        want = raw.copy().view(f"<f{width}")[:, 0].astype(np.float64)
    elif width == 1:
        want = (raw[:, 0].astype(np.float64) - 128) / 128
    else:
        v = sum(raw[:, k].astype(np.int64) << (8 * k) for k in range(width))
        want = np.where(v >= 1 << (bits - 1), v - (1 << bits), v) / float(1 << (bits - 1))
    np.testing.assert_array_equal(x, want)


def test_a_tachometer_pulse_train_as_the_speed_channel_is_refused_not_trained_as_rpm(tmp_path):
    """A tachometer's once-per-turn pulse train (0 V, a 5 V pulse each turn) given as --speed-channel
    was averaged into 'speed_rpm' of about 0.1 per window, which the condition features then took as
    the shaft speed: orders at 0.002 Hz, without a word. A speed channel that swings by more than half
    its mean within most windows is now refused saying what it looks like; one in rpm still reads."""
    t = np.arange(20000) / RATE
    x = np.sin(2 * np.pi * 25 * t)
    pulses = np.where((t * 25) % 1 < 0.02, 5.0, 0.0)  # 1500 rpm, one 0.8-ms pulse a turn
    rpm = 1500 + np.random.default_rng(2).normal(0, 2, len(t))
    for run, y in (("r1", x), ("r2", _another(x))):  # two recordings: one twice is refused as a copy
        (tmp_path / f"{run}.csv").write_text(
            "time,accel,tacho,speed\n"
            + "".join(
                f"{a:.6f},{b:.6f},{c:.1f},{d:.2f}\n" for a, b, c, d in zip(t, y, pulses, rpm, strict=True)
            )
        )
    runs = [tmp_path / "r1.csv", tmp_path / "r2.csv"]
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    with pytest.raises(DatasetError, match=r"--speed-channel tacho: in 18 of 18 windows it swings"):
        import_vibration(runs, tmp_path / "ds", labels, channel="accel", speed_channel="tacho")
    assert not (tmp_path / "ds").exists()
    import_vibration(runs, tmp_path / "ds", labels, channel="accel", speed_channel="speed")
    assert np.allclose(load_vibration(tmp_path / "ds").speed_rpm, 1500, atol=1)


def test_columns_the_import_does_not_use_are_not_read_and_cannot_refuse_the_run(tmp_path):
    """A historian export carries more than the signal: a machine state as text, other sensors. Every
    column was read (Parquet: the whole table, then each as float64; CSV: every cell parsed), and a text
    column refused the run even with --channel naming the signal. Only the time and the channels the
    import uses are read now; a text channel is still refused when it is the one used."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.sin(np.arange(4096) * 0.3)
    others = {f"temp_{i} [°C]": np.full(4096, 40.0 + i) for i in range(8)}
    pq.write_table(
        pa.table({"time": np.arange(4096) / RATE, "state": ["running"] * 4096, "accel [g]": x, **others}),
        tmp_path / "r1.parquet",
    )
    cells = "".join(
        f"{i / RATE:.6f},running,{v:.6f},{'x' if i == 9 else '1'}\n" for i, v in enumerate(_another(x))
    )
    (tmp_path / "r2.csv").write_text("time,state,accel [g],flag\n" + cells)
    runs = [tmp_path / "r1.parquet", tmp_path / "r2.csv"]
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    res = import_vibration(runs, tmp_path / "ds", labels, channel="accel")
    assert res["channels"]["r1"].startswith("accel (of state, accel, temp_0,")
    assert np.allclose(load_vibration(tmp_path / "ds").waveforms[2], _another(x)[:2048], atol=1e-6)
    with pytest.raises(DatasetError, match=r"r1.parquet: column 'state' is string, not a number"):
        import_vibration(runs, tmp_path / "ds2", labels)  # the first channel, taken by default


def test_a_2d_npz_array_is_split_into_channels_not_interleaved_into_one(tmp_path):
    """numpy.savez of a (samples, 3) array from a tri-axial sensor was flattened into one channel of
    x0, y0, z0, x1, ...: three axes interleaved, three times the samples, trained on without a word;
    a channel longer than its time array was not noticed. Now a (samples, channels) array (either
    way round) is one channel per column, 'data[0]', ..., and anything else is refused."""
    from cloud_trainer.train.signals import read_recording

    x = np.random.default_rng(4).normal(size=(5000, 3))
    np.savez(tmp_path / "triax.npz", data=x, sample_rate_hz=RATE)
    np.savez(tmp_path / "rows.npz", data=x.T.copy(), sample_rate_hz=RATE)
    for name in ("triax.npz", "rows.npz"):
        rec = read_recording(tmp_path / name)
        assert list(rec.channels) == ["data[0]", "data[1]", "data[2]"], name
        assert all(np.array_equal(rec.channels[f"data[{i}]"], x[:, i]) for i in range(3)), name
    np.savez(tmp_path / "windows.npz", data=np.zeros((100, 2048)), sample_rate_hz=RATE)
    with pytest.raises(DatasetError, match=r"windows.npz: array 'data' has shape \(100, 2048\)"):
        read_recording(tmp_path / "windows.npz")
    np.savez(tmp_path / "flat.npz", time=np.arange(5000) / RATE, data=x.reshape(-1))
    with pytest.raises(DatasetError, match=r"flat.npz: array 'data' holds 15000 samples but the time array"):
        read_recording(tmp_path / "flat.npz")


def test_a_csv_without_a_header_is_refused_not_read_with_its_first_samples_as_names(tmp_path):
    """A logger's CSV without a header line had its first row taken as the column names: the first
    sample lost and channels called '0.0123' and '-0.456', without a word. A first line of measurements
    is now refused as a missing header; whole numbers (channels numbered 1, 2, 3) are still names."""
    from cloud_trainer.train.signals import read_recording

    x = np.sin(np.arange(3000) * 0.3)
    (tmp_path / "raw.csv").write_text("".join(f"{v:.6f},{-v:.6f}\n" for v in x))
    with pytest.raises(
        DatasetError, match=r"raw.csv: line 1 \('0.000000,-0.000000'\) holds numbers, not column"
    ):
        read_recording(tmp_path / "raw.csv", RATE)
    (tmp_path / "numbered.csv").write_text(
        "1;2\n" + "".join(f"{v:.6f};{-v:.6f}\n".replace(".", ",") for v in x)
    )
    rec = read_recording(tmp_path / "numbered.csv", RATE)
    assert list(rec.channels) == ["1", "2"] and np.allclose(rec.channels["1"], x, atol=1e-6)


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_semicolon_or_tab_csv_of_decimal_points_without_a_header_is_refused_too(tmp_path, sep):
    """A ';' or tab file may hold decimal commas, so its first line was judged in that form only: '0.148123' was
    no number there and such a file without a header had its first row taken as the channels' names (the first
    samples lost, a channel called '0.148123'); '0.148' was caught only as a thousands group."""
    from cloud_trainer.train.signals import read_recording

    x = np.sin(np.arange(1, 3000) * 0.3) * 0.5
    for places in (3, 6):
        (tmp_path / "raw.csv").write_text("".join(f"{v:.{places}f}{sep}{-v:.{places}f}\n" for v in x))
        first = f"{x[0]:.{places}f}{sep}{-x[0]:.{places}f}"
        with pytest.raises(DatasetError) as ei:
            read_recording(tmp_path / "raw.csv", RATE)
        assert f"raw.csv: line 1 ({first!r}) holds numbers, not column names" in str(ei.value)


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_semicolon_or_tab_csv_of_decimal_commas_without_a_header_is_refused_as_headerless(tmp_path, sep):
    """Its first line's commas outnumbered its delimiters, so it was split at the decimal commas and refused for
    a value that is no number ("column '147760;-0' holds a value that is not a number"), sending the engineer
    to rows that are right."""
    from cloud_trainer.train.signals import read_recording

    x = np.sin(np.arange(1, 3000) * 0.3) * 0.5
    rows = [f"{v:.6f}{sep}{-v:.6f}".replace(".", ",") for v in x]
    (tmp_path / "raw.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as ei:
        read_recording(tmp_path / "raw.csv", RATE)
    assert f"raw.csv: line 1 ({rows[0]!r}) holds numbers, not column names" in str(ei.value), ei.value


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_a_first_row_of_whole_numbers_is_read_as_names_only_where_it_numbers_the_columns(tmp_path, sep):
    """A logger's counts (an ADC's 512;498) without a header had their first row read as channels called
    '512' and '498', the first samples lost without a word; 1;2 and 0;1 number the channels and stay names."""
    from cloud_trainer.train.signals import read_recording

    x = (np.sin(np.arange(3000) * 0.3) * 400 + 512).astype(int)
    rows = [f"{v}{sep}{1023 - v}" for v in x]
    (tmp_path / "counts.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as ei:
        read_recording(tmp_path / "counts.csv", RATE)
    assert f"counts.csv: line 1 ({rows[0]!r}) holds numbers, not column names" in str(ei.value), ei.value
    assert "whole numbers are names only where they number the columns" in str(ei.value)
    for names in (f"1{sep}2", f"0{sep}1"):
        (tmp_path / "numbered.csv").write_text(names + "\n" + "\n".join(rows) + "\n")
        rec = read_recording(tmp_path / "numbered.csv", RATE)
        assert list(rec.channels) == names.split(sep) and np.array_equal(rec.channels[names[0]], x)


def test_a_file_that_cannot_be_read_or_an_out_folder_that_cannot_be_written_is_one_line(tmp_path, capsys):
    """An I/O error reading a run (a failing disk or share; here /proc/self/mem, whose reads fail) and a
    dataset folder that cannot be created ended the import with an OSError traceback; each is now one
    line naming the file or folder, exit code 2."""
    if not Path("/proc/self/mem").exists():
        pytest.skip("needs Linux's /proc/self/mem for a file whose reads fail")
    x = np.sin(np.arange(4096) * 0.3)
    runs = [_csv(tmp_path / "r1.csv", x), _csv(tmp_path / "r2.csv", _another(x))]
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    argv = ["import", "--kind", "vibration", "--labels", str(labels)]
    for suffix in (".csv", ".wav", ".npz"):
        bad = tmp_path / f"bad{suffix}"
        bad.symlink_to("/proc/self/mem")
        assert dataset_main([*argv, str(bad), *map(str, runs), "--out", str(tmp_path / "ds")]) == 2
        err = capsys.readouterr().err
        assert err == f"cloud-trainer dataset import: {bad}: cannot be read (Input/output error)\n", err
    (tmp_path / "afile").write_text("")
    assert dataset_main([*argv, *map(str, runs), "--out", str(tmp_path / "afile" / "ds")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cloud-trainer dataset import: {tmp_path / 'afile' / 'ds'}: cannot be written (")
    assert len(err.splitlines()) == 1


def _class_run(fmt: str, path: Path, x: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        return _csv(path, x)
    if fmt == "parquet":
        return _parquet(path, x)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(int(RATE))
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("fmt", ["csv", "wav", "parquet"])
def test_a_folder_per_class_whose_files_share_names_is_imported_each_run_by_its_path(tmp_path, fmt):
    """One folder per class, the DAQ naming each class's files run1, run2: healthy/run1 and bearing_outer/run1
    were refused as 'both run 'run1' ... rename one'. A run is now its path from the files' common folder
    without the suffix: the labels name healthy/run1 (or with the suffix, or as Windows writes it); a stem two
    files have is refused naming both paths to give; a stem only one file has still names its run."""
    rng = np.random.default_rng(5)
    files = [
        _class_run(fmt, tmp_path / "data" / cls / f"run{i}.{fmt}", rng.normal(0, 0.1, 4096))
        for cls in ("healthy", "bearing_outer")
        for i in (1, 2)
    ]
    files.append(
        _class_run(fmt, tmp_path / "data" / "bearing_outer" / f"late.{fmt}", rng.normal(0, 0.1, 4096))
    )
    rows = [
        "healthy/run1,healthy,,,",
        "healthy\\run2,healthy,,,",
        f"bearing_outer/run1.{fmt},bearing_outer,,,",
    ]
    rows += ["bearing_outer/run2,bearing_outer,,,", "late,bearing_outer,,,"]
    res = import_vibration(files, tmp_path / "ds", _labels(tmp_path / "labels.csv", rows))
    assert res["runs"] == 5 and res["faults"] == {"bearing_outer": 6, "healthy": 4}, res
    assert sorted(res["channels"]) == [
        "bearing_outer/late",
        "bearing_outer/run1",
        "bearing_outer/run2",
        "healthy/run1",
        "healthy/run2",
    ]
    data = load_vibration(tmp_path / "ds")
    healthy_runs = {int(r) for r in data.run_id[data.fault == FAULTS.index("healthy")]}
    assert healthy_runs == {0, 1}  # healthy/run1 and healthy/run2, the files' order
    stem = _labels(tmp_path / "stem.csv", ["run1,healthy,,,", "run2,bearing_outer,,,"])
    with pytest.raises(DatasetError) as ei:
        import_vibration(files, tmp_path / "ds2", stem)
    assert str(ei.value) == (
        f"{stem}:2: run 'run1' is the name of 2 files ({files[0]}, {files[2]}); name the run by its path: "
        "'healthy/run1' or 'bearing_outer/run1'"
    )
    assert not (tmp_path / "ds2").exists()


def test_one_recording_given_twice_is_refused_as_a_copy_or_the_same_file(tmp_path):
    """A true duplicate is still refused: files of one name holding the same bytes (a copy in another class's
    folder: its windows trained twice, under two labels), and one file named twice (two globs). site1/pump.csv
    and site2/pump.csv, the same bytes, were refused as 'both run 'pump''; files of one name and size whose
    bytes differ are runs of their own."""
    x = np.sin(np.arange(4096) * 0.3)
    runs = []
    for site, y in (("site1", x), ("site2", x), ("site3", _another(x))):  # the same size, other bytes
        (tmp_path / site).mkdir()
        runs.append(_csv(tmp_path / site / "pump.csv", y))
    rows = ["site1/pump,healthy,,,", "site2/pump,imbalance,,,", "site3/pump,imbalance,,,"]
    labels = _labels(tmp_path / "labels.csv", rows)
    with pytest.raises(DatasetError) as ei:
        import_vibration(runs, tmp_path / "ds", labels)
    assert str(ei.value).startswith(f"{runs[0]} and {runs[1]} hold the same bytes: one recording given twice")
    with pytest.raises(DatasetError) as ei:
        import_vibration([runs[0], runs[2], runs[0]], tmp_path / "ds", labels)
    assert str(ei.value).startswith(f"{runs[0]} is given twice: one run is one file"), ei.value
    labels = _labels(tmp_path / "labels.csv", [rows[0], rows[2]])
    assert import_vibration(runs[::2], tmp_path / "ds", labels)["runs"] == 2
    assert not list(tmp_path.glob(".ds*"))


@pytest.mark.parametrize(
    "copy, cls, fmt",
    [
        ("bytes", "outer", "csv"),  # healthy/0_0.csv copied as outer/run7.csv: one run under two labels
        ("bytes", "healthy", "csv"),  # copied in its own class: trained twice, maybe tested on itself
        ("wav", "outer", "wav"),  # a 16-bit WAV of the run beside the CSV the logger wrote (6 decimals)
        ("parquet", "outer", "parquet"),
        ("m/s2", "outer", "parquet"),  # the same run in m/s2
        ("negated", "outer", "parquet"),  # its polarity flipped by a converter: the same features
        ("dc", "outer", "parquet"),  # a DC-coupled export of it (1 g of gravity added): the same features
    ],
)
def test_one_recording_under_two_names_is_refused_by_its_samples_naming_both(
    tmp_path, capsys, copy, cls, fmt
):
    """A user's folder per class (CSV as a logger writes it, written from physics) with one run copied under
    another name, or converted to another format: only files of one name were compared (by bytes), so the copy
    imported, its windows trained twice (under two labels: each against the other) and the split could test one
    on the model trained on the other. Runs are now compared by their decoded samples (each window's mean
    removed, up to scale and sign: a negated copy or one with a DC level added trains the same features):
    refused in one line naming both paths and their labels, nothing written; runs of one machine are no
    copies."""
    files, labels = _class_folders(tmp_path / "data", {"healthy": False, "outer": True}, "csv")
    first = Path(files[0])
    target = tmp_path / "data" / cls / f"run7.{fmt}"
    x = _machine(False, 0)  # healthy/0_0's samples
    if copy == "bytes":
        target.write_bytes(first.read_bytes())
    elif copy == "wav":
        _class_run("wav", target, x)
    else:
        _parquet(target, {"m/s2": x * 9.80665, "negated": -x, "dc": x + 1.0}.get(copy, x))
    with open(labels, "a") as fh:
        fh.write(f"{cls}/run7,{cls},,,\n")
    argv = ["import", "--kind", "vibration", *files, str(target), "--labels", str(labels)]
    assert dataset_main([*argv, "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    scaled = {"m/s2": ", one 9.807x the other", "negated": ", negated"}.get(copy, "")
    assert err.startswith(
        f"cloud-trainer dataset import: {first} and {target} hold the same samples{scaled} (run 'healthy/0_0', "
        f"labelled healthy; run '{cls}/run7', labelled {cls}): one recording under two names, its windows would "
        "train twice"
    ), err
    assert err.count("\n") == 1 and not list(tmp_path.glob(".ds*")) and not (tmp_path / "ds").exists()
    # without the copy the same runs import (and a copy no labels row names gives no window: not compared)
    labels.write_text("".join(labels.read_text().splitlines(keepends=True)[:-1]))
    assert dataset_main([*argv, "--out", str(tmp_path / "ds")]) == 0
    assert json.loads(capsys.readouterr().out)["faults"] == {"healthy": 8, "outer": 8}


def _quiet(n: int, seed: int) -> np.ndarray:
    """A triggered capture: 0.1 mg of noise and, somewhere, one impact's 400-sample ring."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1e-4, n)
    s = int(rng.integers(0, n - 400))
    x[s : s + 400] += np.exp(-np.arange(400) / 60) * np.sin(2 * np.pi * 3000 * np.arange(400) / _FS)
    return x


@pytest.mark.parametrize(
    "case",
    ["dc_coupled", "stuck", "pinned", "transient", "click", "tach", "sync_average", "coarse_csv", "fan"],
)
def test_genuine_runs_sharing_a_level_or_a_transient_are_no_copies(tmp_path, case):
    """Two genuine recordings (their noise independent) that share a constant part or one short event were
    refused as one recording under two names, with no way to import them: each run was divided by its peak and
    compared with its power, DC included (a DC-coupled accelerometer's 1 g on a quiet machine, a channel stuck
    at its bias or pinned at full scale, the DAQ's start-up settling, the same trigger click before silence).
    Now each window's mean is removed, a run with no variation is not compared, and a copy needs 90 % of the
    aligned windows alike: these import; tach-triggered runs of a steady machine (0.2 mg noise under its 1x)
    are no copies either."""
    n = 8192
    t = np.arange(n) / _FS
    rng = np.random.default_rng(3)
    click = np.zeros(n)
    click[:50] = np.hanning(50)
    make, fmt = {
        "dc_coupled": (lambda: 1.0 + rng.normal(0, 1e-3, n), "csv"),
        "stuck": (lambda: 0.5 + rng.normal(0, 1 / 32767, n), "wav"),
        "pinned": (lambda: np.ones(n), "wav"),
        "transient": (lambda: np.exp(-t / 0.1) + rng.normal(0, 5e-4, n), "csv"),
        "click": (lambda: click + rng.normal(0, 1e-4, n), "csv"),
        "tach": (lambda: 0.05 * np.sin(2 * np.pi * 25 * t) + rng.normal(0, 2e-4, n), "csv"),
        # a gearbox's tach-synchronous average (one revolution, 37 teeth, 200 revolutions averaged), day 1 and 2
        "sync_average": (
            lambda: (
                np.sin(37 * 2 * np.pi * np.arange(n) / n)
                + 0.3 * np.sin(74 * 2 * np.pi * np.arange(n) / n + 0.4)
                + rng.normal(0, 0.003 / np.sqrt(200), n)
            ),
            "csv",
        ),
        # a quiet axis of a DC-coupled sensor logged in g with 3 decimals (1 mg steps), 0.3 mg of noise
        "coarse_csv": (lambda: np.round((1.0 + rng.normal(0, 3e-4, n)) * 1000) / 1000, "csv"),
        # a fan's blade pass captured on its once-per-rev trigger, 0.2 % noise
        "fan": (
            lambda: (
                np.sin(2 * np.pi * 160 * t) + 0.2 * np.sin(2 * np.pi * 320 * t + 1) + rng.normal(0, 2e-3, n)
            ),
            "csv",
        ),
    }[case]
    files = [_class_run(fmt, tmp_path / "healthy" / f"{r}.{fmt}", make()) for r in ("a", "b")]
    files += [
        _class_run("csv", tmp_path / "outer" / f"{r}.csv", _machine(True, k)) for k, r in enumerate("cd")
    ]
    rows = ["healthy/a,healthy,,,", "healthy/b,healthy,,,", "outer/c,outer,,,", "outer/d,outer,,,"]
    res = import_vibration(files, tmp_path / "ds", _labels(tmp_path / "labels.csv", rows))
    assert res["runs"] == 4 and set(res["faults"]) == {"healthy", "outer"}, res


def test_the_copy_check_compares_few_pairs_of_quiet_runs_in_full_and_still_finds_a_copy():
    """Quiet runs (a ring in silence, triggered captures) agreed at nearly every probe, so nearly every pair
    was compared in full (500 runs of 256,000 samples: 112,104 of 124,750 pairs, 156 s; 2,000 runs projected
    at 42-65 min). The RMS of 256 segments of each run now gates pairs too (a copy's profile differs by at most
    the RMS of the difference): few pairs are compared in full, and a 16-bit WAV of one run among them is
    still found."""
    from cloud_trainer.train.signals import LabelRow, Recording, _no_copies

    def run(k: int, x: np.ndarray) -> tuple[Recording, LabelRow]:
        name, fault = f"c/run{k}", ("healthy" if k % 2 == 0 else "outer")
        rec = Recording(name, _FS, {"ch0": x}, Path(f"/data/{name}.wav"))
        return rec, LabelRow(name, fault, None, None, None, k + 2, fault)

    pairs = [run(k, _quiet(16384, k)) for k in range(500)]
    recs, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    full = _no_copies(recs, labels, None, None)
    assert full <= 2_500, full  # of 124,750 pairs
    copy, lab = run(501, np.round(recs[7].channels["ch0"] * 32767) / 32768)  # a 16-bit WAV of run 7
    with pytest.raises(DatasetError, match=r"/data/c/run7.wav and /data/c/run501.wav hold the same samples"):
        _no_copies([*recs, copy], [*labels, lab], None, None)


def test_the_copy_check_stops_after_its_bound_of_full_comparisons_saying_so(monkeypatch, capsys):
    """Triggered captures whose event sits at one offset pass both gates: 2,000 of them were compared pair by pair
    in full for 32-37 min (/work/notes53/review_vibmend/q2.out). Past MAX_COMPARED_SAMPLES the check stops and says
    that copies among the rest are not looked for; the import goes on."""
    import cloud_trainer.train.signals as signals

    def capture(k: int) -> np.ndarray:
        x = np.random.default_rng(k).normal(0, 1e-4, 16384)
        x[1000:1400] += np.exp(-np.arange(400) / 60) * np.sin(2 * np.pi * 3000 * np.arange(400) / _FS)
        return x

    recs = [
        signals.Recording(f"c/run{k}", _FS, {"ch0": capture(k)}, Path(f"/d/c/run{k}.wav")) for k in range(40)
    ]
    labels = [signals.LabelRow(f"c/run{k}", "healthy", None, None, None, k + 2, "healthy") for k in range(40)]
    monkeypatch.setattr(signals, "MAX_COMPARED_SAMPLES", 25 * 16384)  # 25 pairs of these runs
    assert signals._no_copies(recs, labels, None, None) == 25
    assert "stopped after 25 pairs compared in full" in capsys.readouterr().err


@pytest.mark.parametrize(
    "row, spans",
    [
        ("r2,bearing_outer,1767225601,1767225602,", "1.76723e+09-1.76723e+09 s"),  # epoch seconds
        ("r2,bearing_outer,1000,1500,", "1000-1500 s"),  # milliseconds
        ("r2,bearing_outer,1.0,1.1,", "1-1.1 s"),  # shorter than a window
    ],
)
def test_a_labels_row_that_labels_no_window_is_refused_not_dropped(tmp_path, row, spans):
    """Label times written in epoch seconds or milliseconds, or a span shorter than a window, labelled
    no window: the row was dropped without a word (its run's windows counted as 'unlabelled'), and the
    dataset built without that fault's examples. Now refused naming the row, its span and the run's."""
    runs = [
        _csv(tmp_path / f"{r}.csv", np.sin(np.arange(20000) * 0.3 + k)) for k, r in enumerate(("r1", "r2"))
    ]
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,0,0.5,", row])
    with pytest.raises(DatasetError) as ei:
        import_vibration(runs, tmp_path / "ds", labels)
    assert str(ei.value) == (
        f"{labels}:4: labels no window of run 'r2': it spans {spans}, the run 0-2 s in windows of 0.2048 s "
        "(times are seconds from the run's start)"
    )


def test_a_run_shorter_than_a_window_is_refused_naming_its_file_and_length(tmp_path, capsys):
    """A DAQ's short capture (1000 samples of a 24-bit WAV, windows of 2048) gives no window: it was refused as
    'labels no window of run 'b': it spans 0-0.1 s, the run 0-0.1 s ...', naming neither its file nor that the
    run, not the labels' times, is too short. Now one line naming the file, its samples and the fix; nothing
    is written."""
    x = np.sin(np.arange(4096) * 0.3) * 0.5
    codes = np.round(x * (2**23 - 1)).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
    a = _riff(tmp_path / "a.wav", codes.tobytes(), tag=1, channels=1, rate=int(RATE), bits=24)
    b = _riff(tmp_path / "b.wav", codes[:1000].tobytes(), tag=1, channels=1, rate=int(RATE), bits=24)
    labels = _labels(tmp_path / "labels.csv", ["a,healthy,,,", "b,imbalance,,,"])
    argv = [
        "import",
        "--kind",
        "vibration",
        str(a),
        str(b),
        "--labels",
        str(labels),
        "--out",
        str(tmp_path / "ds"),
    ]
    assert dataset_main(argv) == 2
    assert capsys.readouterr().err == (
        f"cloud-trainer dataset import: {b}: run 'b' holds 1000 samples (0.1 s), fewer than a window of 2048 "
        f"(0.2048 s): it gives no window, and {labels}:3 labels it; leave the run out, or give --window-samples "
        "1000 or less for every run\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav", "labels.csv"]
    assert dataset_main([*argv[:-1], str(tmp_path / "ds"), "--window-samples", "1000"]) == 0
    assert json.loads(capsys.readouterr().out)["faults"] == {"healthy": 4, "imbalance": 1}


def test_a_wide_csv_holds_a_few_rows_of_text_at_a_time_not_a_chunk_of_every_column(tmp_path, monkeypatch):
    """A logger's export with hundreds of columns, one of them used: 65,536 rows of every column's text
    were held at a time (a 171 MB, 200-column file took 1 GB to read one channel). A chunk is now
    bounded in cells, so the rows held shrink as the file widens (93 MB for that file)."""
    import tracemalloc

    from cloud_trainer.train import signals

    monkeypatch.setattr(signals, "CSV_SNIFF_LINES", 16)
    monkeypatch.setattr(signals, "CSV_CHUNK_CELLS", 2000, raising=False)  # 20 rows of this file
    x = np.random.default_rng(6).normal(size=(500, 100))
    path = tmp_path / "wide.csv"
    path.write_text(
        "time,"
        + ",".join(f"c{i}" for i in range(100))
        + "\n"
        + "".join(f"{i / RATE:.6f}," + ",".join(f"{v:.6f}" for v in row) + "\n" for i, row in enumerate(x))
    )
    signals.read_csv(path, None, lambda names: ["c3"])  # warm
    tracemalloc.start()
    try:
        rec = signals.read_csv(path, None, lambda names: ["c3"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert list(rec.channels) == ["c3"] and np.allclose(rec.channels["c3"], x[:, 3], atol=1e-6)
    assert peak < path.stat().st_size / 2, (peak, path.stat().st_size)  # the former code: 7x


def test_a_csv_written_by_pandas_to_csv_with_its_index_reads(tmp_path):
    """pandas' DataFrame.to_csv() writes the index as a first column without a name: row numbers
    beside a time column, or the timestamps of a DatetimeIndex. Either was refused ('column 1 has no
    name in the header but holds values'). Row labels are now dropped, and dates there are the time."""
    import datetime as dt

    from cloud_trainer.train.signals import read_recording

    x = np.sin(np.arange(3000) * 0.3)
    (tmp_path / "rows.csv").write_text(
        ",time,accel\n" + "".join(f"{i},{i / RATE:.6f},{v:.6f}\n" for i, v in enumerate(x))
    )
    start = dt.datetime(2026, 1, 1)
    (tmp_path / "dates.csv").write_text(
        ",accel\n"
        + "".join(
            f"{(start + dt.timedelta(microseconds=100 * i)).isoformat(' ')},{v:.6f}\n"
            for i, v in enumerate(x)
        )
    )
    for name in ("rows.csv", "dates.csv"):
        rec = read_recording(tmp_path / name)
        assert rec.rate_hz == RATE and list(rec.channels) == ["accel"], name
        assert np.allclose(rec.channels["accel"], x, atol=1e-6), name


def test_run_to_failure_windows_carry_the_fraction_of_life_left_as_their_health(tmp_path):
    """Every faulty window of an imported run got health 0.5, whatever its failure_s; the maintenance
    trainer's remaining-life output learns health x a machine's mean life, so a package built from a
    site's runs to failure answered about half the mean life at every window (measured: 3.0-3.5 s for
    true 0.6-6.3 s, correlation -0.37; 0.84 with this fix). Such windows now carry the fraction of the
    run's life left, below the trainer's VISIBLE_HEALTH (a window labelled with a fault shows it, so a
    failure long after the recording does not hide it); faulty windows without a failure time keep 0.5."""
    from cloud_trainer.train.maintenance import VISIBLE_HEALTH

    runs = [
        _csv(tmp_path / f"{r}.csv", np.sin(np.arange(20000) * 0.3 + k))
        for k, r in enumerate("h f g late".split())
    ]
    labels = _labels(
        tmp_path / "labels.csv",
        ["h,healthy,,,", "f,bearing_outer,,,2.5", "g,imbalance,,,", "late,misalignment,,,3600"],
    )
    import_vibration(runs, tmp_path / "ds", labels)
    data = load_vibration(tmp_path / "ds")
    failing = data.run_id == 1
    assert np.allclose(data.health[failing], (2.5 - data.t_s[failing]) / 2.5)
    assert np.allclose(data.rul_s[failing], 2.5 - data.t_s[failing])
    assert (data.health[data.run_id == 0] == 1).all() and (data.health[data.run_id == 2] == 0.5).all()
    assert (data.health[data.run_id == 3] < VISIBLE_HEALTH).all()


def test_runs_whose_dataset_yaml_training_would_refuse_are_refused_at_import_with_nothing_written(
    tmp_path, monkeypatch
):
    # a large import (about 120,000 runs with long paths) listed in a dataset.yaml over the size training reads
    # (data.read_dataset_yaml): the bound shrunk here so that two small runs pass it
    import cloud_trainer.train.signals as signals

    rng = np.random.default_rng(3)
    _csv(tmp_path / "pump1.csv", rng.normal(0, 0.1, 8192))
    _csv(tmp_path / "pump2.csv", rng.normal(0, 0.3, 8192))
    labels = _labels(tmp_path / "labels.csv", ["pump1,healthy,,,", "pump2,imbalance,,,"])
    runs = [tmp_path / "pump1.csv", tmp_path / "pump2.csv"]
    monkeypatch.setattr(signals, "DATASET_YAML_MAX_BYTES", 200)
    with pytest.raises(DatasetError, match=r"2 runs make a dataset.yaml of \d+ bytes, over the 200"):
        import_vibration(runs, tmp_path / "ds", labels)
    assert not (tmp_path / "ds").exists()
    monkeypatch.undo()
    import_vibration(runs, tmp_path / "ds", labels)
    assert len(load_vibration(tmp_path / "ds").fault) > 0


def test_runs_whose_files_order_their_channels_differently_are_refused_without_channel(tmp_path):
    """A logger's export changed its column order between two runs (`time,accel_x,accel_y`, then
    `time,accel_y,accel_x`): without --channel each run's windows came from its own file's first column, so
    the healthy run trained on accel_x and the faulty one on accel_y, a model learning which axis was
    recorded, said only in the result's `channels`. Refused now, naming both files and the shared channel,
    with nothing written; --channel takes the named channel from every run, and files whose channels share
    no name (a CSV's `accel` beside a WAV's `ch0`) still take their first channels."""
    x = np.sin(np.arange(4096) * 0.3) * 0.5
    y = np.sin(np.arange(4096) * 0.11) * 2.0
    t = np.arange(4096) / RATE
    rows = lambda a, b: "".join(f"{t[i]:.6f},{a[i]:.6f},{b[i]:.6f}\n" for i in range(4096))  # noqa: E731
    (tmp_path / "r1.csv").write_text("time,accel_x,accel_y\n" + rows(x, y))
    (tmp_path / "r2.csv").write_text("time,accel_y [g],accel_x [g]\n" + rows(y, _another(x)))  # not x: a copy
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    runs = [tmp_path / "r1.csv", tmp_path / "r2.csv"]
    with pytest.raises(DatasetError) as exc:
        import_vibration(runs, tmp_path / "ds", labels)
    assert str(exc.value) == (
        f"{runs[1]}: its first channel is 'accel_y', {runs[0]}'s 'accel_x', and both files hold 'accel_x' "
        "(their channels in another order): without --channel each run's windows come from its file's "
        "first channel, so these runs would train on different channels; give --channel NAME"
    )
    assert not (tmp_path / "ds").exists()
    res = import_vibration(runs, tmp_path / "ds", labels, channel="accel_x")
    assert res["channels"] == {"r1": "accel_x (of accel_x, accel_y)", "r2": "accel_x (of accel_y, accel_x)"}
    w = load_vibration(tmp_path / "ds")
    r2 = w.run_id == 1
    assert np.allclose(w.waveforms[~r2][0], x[:2048], atol=1e-6)
    assert np.allclose(w.waveforms[r2][0], _another(x)[:2048], atol=1e-6)
    # no channel name in common: each file's first, as before
    _riff(tmp_path / "r3.wav", (y * 1000).astype("<i2").tobytes(), tag=1, channels=1, rate=10000, bits=16)
    (tmp_path / "r4.csv").write_text("time,vib\n" + "".join(f"{t[i]:.6f},{x[i]:.6f}\n" for i in range(4096)))
    labels = _labels(tmp_path / "l2.csv", ["r3,healthy,,,", "r4,imbalance,,,"])
    res = import_vibration([tmp_path / "r3.wav", tmp_path / "r4.csv"], tmp_path / "ds2", labels)
    assert res["channels"] == {"r3": "ch0", "r4": "vib"}


def test_a_float16_time_column_too_coarse_is_refused_saying_so_not_as_rows_to_remove(tmp_path):
    """A Parquet time column of float16 (a tool downcasting every float column to save space) cannot tell
    1-kHz samples apart past 2 s. Its coarseness check measured float32's digits, so the file was refused as
    "time does not increase ... sort the rows by time and remove duplicates", advice that deletes samples. It
    is refused as a float32 time too coarse is, saying what the column holds; a float16 channel beside a
    float64 time reads as written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cloud_trainer.train.signals import read_recording

    t = np.arange(4096) / 1000.0
    x = np.sin(np.arange(4096) * 0.3).astype(np.float16)
    pq.write_table(pa.table({"time": t.astype(np.float16), "accel": x}), tmp_path / "f16.parquet")
    with pytest.raises(DatasetError) as exc:
        read_recording(tmp_path / "f16.parquet")
    assert str(exc.value).startswith(
        f"{tmp_path / 'f16.parquet'}: time column 'time' is halffloat, which holds about 3 digits: times up to "
    )
    pq.write_table(pa.table({"time": t, "accel": x}), tmp_path / "ok.parquet")
    rec = read_recording(tmp_path / "ok.parquet")
    assert rec.rate_hz == 1000.0 and np.array_equal(rec.channels["accel"], x.astype(np.float64))


def test_a_parquet_timestamp_in_a_finer_unit_than_its_column_declares_is_refused_not_a_traceback(
    tmp_path, capsys
):
    """A tool writing epoch microseconds into a timestamp[ms] column (or milliseconds into timestamp[s]) puts
    the run past the year 50000: the time was cast to nanoseconds, which overflowed, and `dataset import` ended in
    pyarrow's ArrowInvalid traceback. It is one line naming the file and column now; timestamps of every unit and
    zone, and durations, read as before."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cloud_trainer.train.signals import read_recording

    x = np.sin(np.arange(4096) * 0.3)
    us = 1_767_225_600_000_000 + np.arange(4096, dtype=np.int64) * 100  # 10 kHz in microseconds
    pq.write_table(
        pa.table({"timestamp": pa.array(us, pa.timestamp("ms")), "accel": x}), tmp_path / "r1.parquet"
    )
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,"])
    code = dataset_main(
        [
            "import",
            "--kind",
            "vibration",
            str(tmp_path / "r1.parquet"),
            "--labels",
            str(labels),
            "--out",
            str(tmp_path / "ds"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err == (
        f"cloud-trainer dataset import: {tmp_path / 'r1.parquet'}: time column 'timestamp' is timestamp[ms] and "
        "starts 1.76723e+15 ms after 1970, past the year 5000: its values are in a finer unit than the column "
        "declares (microseconds in a millisecond column?); write them with their own unit\n"
    )
    assert not (tmp_path / "ds").exists()
    for unit, k in (("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)):
        for tz in (None, "Europe/Berlin"):
            t = 1_767_225_600 * k + np.arange(4096, dtype=np.int64) * (k // 1 if unit == "s" else k // 1000)
            pq.write_table(
                pa.table({"timestamp": pa.array(t, pa.timestamp(unit, tz=tz)), "accel": x}),
                tmp_path / "t.parquet",
            )
            rec = read_recording(tmp_path / "t.parquet")
            assert rec.rate_hz == (1.0 if unit == "s" else 1000.0), (unit, tz)
        d = np.arange(4096, dtype=np.int64) * (k if unit == "s" else k // 1000)
        pq.write_table(
            pa.table({"elapsed": pa.array(d, pa.duration(unit)), "accel": x}), tmp_path / "d.parquet"
        )
        assert read_recording(tmp_path / "d.parquet").rate_hz == (1.0 if unit == "s" else 1000.0), unit


def test_an_existing_dataset_folder_as_out_is_refused_and_a_failed_write_leaves_nothing(
    tmp_path, capsys, monkeypatch
):
    """The vibration import wrote windows.npz and dataset.yaml into --out whatever it held: given an image
    dataset's folder by a slip, it replaced that dataset's dataset.yaml (its classes, good class and limits: the
    image dataset no longer trained) and said nothing; a second import to one folder replaced the first without a
    word; and a write that failed half-way (a full disk) left a windows.npz beside the dataset.yaml of before,
    another rate and window length. An existing, non-empty --out is refused now, as `dataset import` of images
    refuses it, and the dataset is written into a hidden folder beside it and renamed at the end: a failed
    write leaves nothing."""
    x = np.sin(np.arange(8192) * 0.3)
    runs = [_csv(tmp_path / "r1.csv", x), _csv(tmp_path / "r2.csv", _another(x))]
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    images = tmp_path / "parts"
    images.mkdir()
    (images / "dataset.yaml").write_text("kind: parts\nclasses: [ok, dent]\n")
    argv = ["import", "--kind", "vibration", *map(str, runs), "--labels", str(labels), "--out"]
    assert dataset_main([*argv, str(images)]) == 2
    assert capsys.readouterr().err == (
        f"cloud-trainer dataset import: {images} exists and is not empty; choose a new dataset folder\n"
    )
    assert (images / "dataset.yaml").read_text() == "kind: parts\nclasses: [ok, dent]\n"
    assert sorted(p.name for p in images.iterdir()) == ["dataset.yaml"]

    (tmp_path / "empty").mkdir()  # an empty folder is taken
    assert dataset_main([*argv, str(tmp_path / "empty")]) == 0
    assert load_vibration(tmp_path / "empty").waveforms.shape[0] > 0
    capsys.readouterr()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    assert dataset_main([*argv, str(tmp_path / "ds")]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".ds", "ds"))) == []


def test_windows_more_than_training_reads_from_one_npz_are_refused_at_import(tmp_path, monkeypatch):
    """Training reads a windows.npz of at most NPZ_MAX_BYTES (2 GiB: a zip bomb's bound), but the import wrote
    any number of windows (long runs, overlapping windows by --hop-samples), holding all of them in memory on the
    way: the dataset it wrote, after minutes and gigabytes, was then refused by `train` and `build`. The import
    refuses such windows now, as soon as they are cut past the bound (and, for the few bytes of the other arrays
    beside them, once written), naming the figures and what to change; nothing is written. The bound is shrunk
    here so that two small runs reach it."""
    import cloud_trainer.train.data as data
    import cloud_trainer.train.signals as signals

    rng = np.random.default_rng(3)
    runs = [
        _csv(tmp_path / "r1.csv", rng.normal(0, 0.1, 8192)),
        _csv(tmp_path / "r2.csv", rng.normal(0, 0.3, 8192)),
    ]
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    waveforms = 8 * 2048 * 4  # 8 windows of 2048 float32 samples
    for limit in (waveforms - 1, waveforms + 100):  # the windows alone over it; with the other arrays
        monkeypatch.setattr(data, "NPZ_MAX_BYTES", limit)
        monkeypatch.setattr(signals, "NPZ_MAX_BYTES", limit, raising=False)  # the former import had none
        with pytest.raises(DatasetError) as exc:
            import_vibration(runs, tmp_path / "ds", labels)
        assert f"bytes, more than the {limit:,} training reads from one windows.npz" in str(exc.value)
        assert "--hop-samples" in str(exc.value)
        assert not (tmp_path / "ds").exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")] == []
    monkeypatch.undo()
    import_vibration(runs, tmp_path / "ds", labels)
    assert load_vibration(tmp_path / "ds").waveforms.shape == (8, 2048)


def test_parquet_iso_times_stored_as_string_views_or_categories_are_the_time(tmp_path):
    """A Parquet run whose ISO 8601 times are stored as Arrow string views (Polars 1.38 and Rust's
    arrow/DataFusion writers keep that type in the file) or as a dictionary of strings (a pandas category) was
    refused as "time column 'time' is string_view; expected seconds, a timestamp, a duration or ISO 8601
    strings", which they are. They read as any ISO 8601 strings do."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cloud_trainer.train.signals import read_recording

    x = np.sin(np.arange(4096) * 0.3)
    iso = [f"2026-01-01T00:00:{i / 1000:06.3f}+01:00" for i in range(4096)]
    for name, times in (
        ("view", pa.array(iso, pa.string_view())),
        ("category", pa.array(iso).dictionary_encode()),
        ("plain", pa.array(iso)),
    ):
        pq.write_table(pa.table({"time": times, "accel": x}), tmp_path / f"{name}.parquet")
        rec = read_recording(tmp_path / f"{name}.parquet")
        assert rec.rate_hz == 1000.0 and np.array_equal(rec.channels["accel"], x), name


def test_an_npz_time_array_of_numpy_datetimes_or_timedeltas_is_the_time(tmp_path):
    """numpy's own time types are what a numpy user saves a run's times as (np.datetime64 timestamps, or
    np.timedelta64 elapsed times): such an NPZ was refused as "array 'timestamp' holds datetime64[us] values, not
    numbers; an NPZ run holds numeric channel arrays, sample_rate_hz or a timestamp array only", which it is. A
    time array of either reads as the time now (a gap in it refused as in any time array); a channel of them
    is still refused."""
    from cloud_trainer.train.signals import read_recording

    x = np.sin(np.arange(4096) * 0.3)
    start = np.datetime64("2026-01-01T00:00:00", "us")
    np.savez(tmp_path / "dt.npz", timestamp=start + np.arange(4096) * np.timedelta64(100, "us"), accel=x)
    np.savez(tmp_path / "td.npz", elapsed=np.arange(4096) * np.timedelta64(1, "ms"), accel=x)
    gap = start + np.arange(4096) * np.timedelta64(100, "us")
    gap[2000:] += np.timedelta64(1, "s")
    np.savez(tmp_path / "gap.npz", timestamp=gap, accel=x)
    np.savez(
        tmp_path / "chan.npz", sample_rate_hz=10000.0, accel=start + np.arange(4096) * np.timedelta64(1, "s")
    )
    rec = read_recording(tmp_path / "dt.npz")
    assert rec.rate_hz == 10000.0 and np.array_equal(rec.channels["accel"], x)
    assert read_recording(tmp_path / "td.npz").rate_hz == 1000.0
    with pytest.raises(DatasetError, match=r"gap.npz: gap of 1.0001 s after sample 1999"):
        read_recording(tmp_path / "gap.npz")
    with pytest.raises(
        DatasetError, match=r"chan.npz: array 'accel' holds datetime64\[us\] values, not numbers"
    ):
        read_recording(tmp_path / "chan.npz")


def _speed_runs(tmp_path: Path, accel_units: tuple[str, str], speed: tuple[str, float]) -> list[Path]:
    """Two runs of a 1500-rpm machine: time, accel [unit], speed [unit] (the speed written in that unit)."""
    t = np.arange(8192) / RATE
    runs = []
    for k, (run, unit, gain) in enumerate(zip(("r1", "r2"), accel_units, (1.0, 9.80665), strict=True)):
        # two recordings (phases of their own): one twice, even in two units, is refused as a copy
        x = gain * (0.02 * np.sin(2 * np.pi * 25 * t + k) + 0.001 * np.sin(2 * np.pi * 1300 * t))
        (tmp_path / f"{run}.csv").write_text(
            f"time,accel [{unit}],speed [{speed[0]}]\n"
            + "".join(f"{a:.6f},{b:.6f},{speed[1]:.4f}\n" for a, b in zip(t, x, strict=True))
        )
        runs.append(tmp_path / f"{run}.csv")
    return runs


@pytest.mark.parametrize(
    ("unit", "value"), [("rpm", 1500.0), ("Hz", 25.0), ("1/min", 1500.0), ("rad/s", 157.0796)]
)
def test_a_speed_channel_in_hz_is_read_as_hz_not_as_rpm(tmp_path, unit, value):
    """A historian's speed column written in Hz (`speed [Hz]`, 25 for a 1500-rpm shaft) was taken as rpm:
    `speed_rpm` 25, the orders of `--speed-tag` training at 0.42 Hz, without a word. A speed channel's
    unit in its header is read now: rpm (or none, or 1/min), Hz and rad/s; another is refused naming it."""
    runs = _speed_runs(tmp_path, ("g", "g"), (unit, value))
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    import_vibration(runs, tmp_path / "ds", labels, channel="accel", speed_channel="speed")
    assert np.allclose(load_vibration(tmp_path / "ds").speed_rpm, 1500, rtol=1e-4)


def test_a_speed_channel_in_a_unit_that_is_no_speed_is_refused(tmp_path):
    runs = _speed_runs(tmp_path, ("g", "g"), ("V", 2.5))
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    with pytest.raises(DatasetError, match=r"r1\.csv: --speed-channel speed is in 'V', not a shaft speed"):
        import_vibration(runs, tmp_path / "ds", labels, channel="accel", speed_channel="speed")
    assert not (tmp_path / "ds").exists()


def test_runs_whose_channel_is_in_different_units_are_refused_not_trained_together(tmp_path):
    """One run's accelerometer in g (`accel [g]`), another's in m/s2 (`accel [m/s2]`): the import dropped
    the units and wrote both as one channel, so the model learned a 9.8x level step between runs (its RMS
    feature is absolute) as part of their labels. Files that name different units for the channel are
    refused naming both; the same unit written otherwise (`m/s2`, `m/s^2`, `m/s²`) is one unit."""
    runs = _speed_runs(tmp_path, ("g", "m/s2"), ("rpm", 1500.0))
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    with pytest.raises(DatasetError, match=r"r1\.csv has accel in 'g', .*r2\.csv in 'm/s2'"):
        import_vibration(runs, tmp_path / "ds", labels, channel="accel")
    assert not (tmp_path / "ds").exists()
    runs = _speed_runs(tmp_path, ("m/s^2", "m/s²"), ("rpm", 1500.0))
    import_vibration(runs, tmp_path / "ds", labels, channel="accel")


def test_runs_in_a_folder_named_in_latin1_are_recorded_as_refusals_print_them_and_the_dataset_reads(tmp_path):
    # a historian export copied from a Windows share: /.../Pr\xfcfstand/pump1.csv. Before, dataset.yaml recorded
    # the runs and the labels file as "\uDCFC", which training's reader refused: "dataset.yaml: not valid YAML
    # (while parsing a quoted scalar)"
    import os

    import yaml

    rng = np.random.default_rng(0)
    made = tmp_path / "made"
    made.mkdir()
    for name in ("pump1", "pump2"):
        _csv(made / f"{name}.csv", rng.normal(0, 0.1, 8192))
    _labels(made / "labels.csv", ["pump1,healthy,,,", "pump2,imbalance,,,"])
    src = tmp_path / os.fsdecode(b"Pr\xfcfstand")
    made.rename(src)
    runs = [str(src / "pump1.csv"), str(src / "pump2.csv")]
    argv = [
        "import",
        "--kind",
        "vibration",
        *runs,
        "--labels",
        str(src / "labels.csv"),
        "--out",
        str(tmp_path / "ds"),
    ]
    assert dataset_main(argv) == 0
    text = (tmp_path / "ds" / "dataset.yaml").read_bytes().decode("utf-8")
    meta = yaml.load(text, Loader=yaml.CSafeLoader)
    assert meta["runs"][0] == f"{tmp_path}/Pr\\xfcfstand/pump1.csv"
    assert meta["labels"] == f"{tmp_path}/Pr\\xfcfstand/labels.csv"
    assert load_vibration(tmp_path / "ds").waveforms.shape == (8, 2048)


def test_the_labels_file_given_as_the_only_file_is_refused_naming_it_and_what_is_needed(tmp_path, capsys):
    """A glob of a folder holding only the labels (`data/*.csv --labels data/labels.csv`, the runs not copied yet)
    said "no files to import": neither which file was left out nor why. It names the labels file, says it is the
    labels, not a run, and what to give."""
    data = tmp_path / "data"
    data.mkdir()
    _labels(data / "labels.csv", ["pump1,healthy,,,"])
    globbed = [str(p) for p in data.glob("*.csv")]
    argv = ["import", "--kind", "vibration", *globbed, "--labels", str(data / "labels.csv")]
    assert dataset_main([*argv, "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"cloud-trainer dataset import: no files to import: the only file given, {data / 'labels.csv'}, is the "
        "labels file (--labels; its rows name the runs, their faults and times, it is not a run); give the runs' "
        "recordings beside it, one file per run named as the labels' run column names it (CSV, Parquet, WAV or "
        "NPZ)\n"
    ), err
    assert not (tmp_path / "ds").exists()


def test_the_labels_file_among_the_runs_a_glob_names_is_the_labels_not_a_run(tmp_path, capsys):
    """`data/*.csv --labels data/labels.csv` with the labels in the runs' folder read the labels file as a
    run: "line 2: column 'run' holds a value that is not a number", not saying it had taken the labels file
    for data. The file --labels names is left out of the runs (under any spelling of its path); another
    CSV with the labels' columns is refused saying it looks like a labels file and how to leave it out."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in ("pump1", "pump2"):
        _csv(data / f"{name}.csv", rng.normal(0, 0.1, 4096))
    _labels(data / "labels.csv", ["pump1,healthy,,,", "pump2,imbalance,,,"])
    globbed = sorted(str(p) for p in data.glob("*.csv"))
    assert str(data / "labels.csv") in globbed
    for spelling in (str(data / "labels.csv"), f"{data}/../data/labels.csv"):
        out = tmp_path / f"ds{len(spelling)}"
        argv = ["import", "--kind", "vibration", *globbed, "--labels", spelling, "--out", str(out)]
        assert dataset_main(argv) == 0, capsys.readouterr().err
        res = json.loads(capsys.readouterr().out)
        assert (res["runs"], res["faults"]) == (2, {"healthy": 2, "imbalance": 2}), res
        assert load_vibration(out).waveforms.shape == (4, 2048)
    # an older labels file beside them (a copy, a former version) is not a run either
    _labels(data / "labels_old.csv", ["pump1,healthy,,,"])
    globbed = sorted(str(p) for p in data.glob("*.csv"))
    argv = ["import", "--kind", "vibration", *globbed, "--labels", str(data / "labels.csv")]
    assert dataset_main([*argv, "--out", str(tmp_path / "ds_old")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"cloud-trainer dataset import: {data / 'labels_old.csv'}: its columns (run,fault,start_s,end_s,"
        "failure_s) are a labels file's, not a run's recording; leave it out of the files to import (name "
        "the runs' files, not the whole folder) or give it as --labels\n"
    ), err
    assert not (tmp_path / "ds_old").exists()
    # a recording with channels called run and fault (a counter, a code) keeps its own error
    (data / "labels_old.csv").unlink()
    rows = [f"{k / RATE:.6f},{k},{'x' if k == 3 else 0}" for k in range(4096)]
    (data / "pump3.csv").write_text("timestamp,run,fault\n" + "\n".join(rows) + "\n")
    argv = ["import", "--kind", "vibration", str(data / "pump3.csv"), "--labels", str(data / "labels.csv")]
    assert dataset_main([*argv, "--channel", "fault", "--out", str(tmp_path / "ds3")]) == 2
    err = capsys.readouterr().err
    assert "pump3.csv: line 5: column 'fault' holds a value that is not a number ('x')" in err, err


def test_a_fault_class_the_labels_file_names_beyond_the_simulators_is_trained_and_packaged(tmp_path):
    """A labels file naming ``looseness`` (a family the agent's baseline names, the simulator's five do not)
    was refused ("fault 'looseness' is not one of [...]"): its windows could not be trained at all. The class
    is now the dataset's own: written to dataset.yaml's ``faults``, read back after the five (their indices
    kept), trained as an output of its own and named in the package's labels; a misspelt known class is still
    refused, naming the one it looks like."""
    from cloud_trainer.train import maintenance
    from cloud_trainer.train.data import FAULTS
    from cloud_trainer.train.families.maintenance import MaintenanceFamily

    rng = np.random.default_rng(3)
    t = np.arange(20480) / RATE
    runs = []
    for k, run in enumerate(("h1", "h2", "l1", "l2")):
        x = 0.05 * np.sin(2 * np.pi * 25 * t) + 0.01 * rng.standard_normal(t.size)
        if run.startswith("l"):  # a loose joint's train of 1x harmonics
            x += sum(0.04 * 0.8**j * np.sin(2 * np.pi * 25 * (j + 1) * t + k) for j in range(10))
        runs.append(_csv(tmp_path / f"{run}.csv", x))
    labels = _labels(
        tmp_path / "labels.csv", ["h1,healthy,,,", "h2,healthy,,,", "l1,looseness,,,", "l2,looseness,,,"]
    )
    res = import_vibration(runs, tmp_path / "ds", labels)
    assert res["faults"] == {"healthy": 20, "looseness": 20}
    data = load_vibration(tmp_path / "ds")
    assert data.classes == [*FAULTS, "looseness"]
    assert set(data.fault.tolist()) == {0, len(FAULTS)}

    trained = maintenance.train(data, seed=0, epochs=1, log=lambda *_: None, threads=1)
    assert trained["model"].fault.out_features == len(FAULTS) + 1
    _, outputs, _, _ = MaintenanceFamily().package_io({"classes": data.classes}, 13, 1.0)
    logits = next(o for o in outputs if o["name"] == "fault_logits")
    assert logits["labels"] == [*FAULTS, "looseness"] and logits["shape"] == ["batch", len(FAULTS) + 1]

    typo = _labels(tmp_path / "typo.csv", ["h1,healthy,,,", "l1,imbalace,,,"])
    with pytest.raises(
        DatasetError, match=r"typo.csv:3: fault 'imbalace' is not one of .*typo of 'imbalance'"
    ):
        import_vibration(runs, tmp_path / "ds2", typo)


@pytest.mark.parametrize(
    "name, real",
    [
        ("normal", "healthy"),
        ("ok", "healthy"),
        ("good", "healthy"),
        ("Normal", "healthy"),
        ("OK", "healthy"),
    ],
)
def test_another_name_of_a_known_class_is_refused_naming_the_real_one(tmp_path, name, real):
    """'normal' (CWRU's healthy, many historians') became a class of its own: every healthy window was trained
    as a fault. Refused, naming it."""
    first = "r1,healthy,,," if real != "healthy" else "r1,imbalance,,,"
    labels = _labels(tmp_path / "labels.csv", [first, f"r2,{name},,,"])
    with pytest.raises(DatasetError) as ei:
        import_vibration(_two_runs(tmp_path), tmp_path / "ds", labels)
    assert f"use the real class name {real!r}" in str(ei.value), ei.value
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    "name, real",
    [
        ("outer_race", "bearing_outer"),
        ("inner_race", "bearing_inner"),
        ("unbalance", "imbalance"),
        ("misaligned", "misalignment"),
        ("imbalanced", "imbalance"),
    ],
)
def test_another_name_of_a_known_fault_is_kept_as_given_alone_and_refused_beside_it(tmp_path, name, real):
    """'outer_race', 'inner_race' and 'unbalance' were refused alone as other names of the fault ('use the real
    class name'), 'misaligned' and 'imbalanced' as typos of it, while 'outer', 'unbalanced' and
    'misaligned_shaft' were kept as given: a MaFaulDa-style 'outer_race' had to be renamed, a CWRU-style 'outer'
    not. Now each is a class of the dataset's own like 'outer': kept as given alone, refused beside the fault's
    own class as one fault under two names (written from physics: a CSV per run in a folder per class)."""
    # runs of 2 windows: the class names are what is judged
    files, labels = _class_folders(tmp_path / "data", {"healthy": False, name: True}, "csv", n=4096)
    res = import_vibration(list(map(Path, files)), tmp_path / "ds", labels)
    assert res["faults"] == {"healthy": 4, name: 4}, res
    assert load_vibration(tmp_path / "ds").classes == [*FAULTS, name]
    files, labels = _class_folders(
        tmp_path / "both", {"healthy": False, real: True, name: True}, "csv", n=4096
    )
    with pytest.raises(DatasetError) as ei:
        import_vibration(list(map(Path, files)), tmp_path / "ds2", labels)
    assert str(ei.value).startswith(
        f"{labels}: classes {name!r} (line 6) and {real!r} are both there, and {name!r} reads as {real!r}: "
    ), ei.value
    assert not (tmp_path / "ds2").exists()
    # in another case it is not a fault name, and is told its lower-case form, not to be renamed 'imbalance'
    upper = _labels(tmp_path / "upper.csv", ["0_0,healthy,,,", f"1_0,{name.title().replace('_', '')},,,"])
    with pytest.raises(DatasetError, match=f"is not a fault name .*; write it as {name!r}"):
        import_vibration(list(map(Path, files)), tmp_path / "ds3", upper)


@pytest.mark.parametrize(
    "name, real",
    [
        ("outer", "bearing_outer"),
        ("inner", "bearing_inner"),
        ("unbalanced", "imbalance"),
        ("misaligned_shaft", "misalignment"),
        ("outer_007", "bearing_outer"),
        ("outer_no_2", "bearing_outer"),  # 'no' not before the fault's word: a number, not a negation
        # how or where the same fault shows, not another fault (review: these were imported as classes of their own)
        ("outer_race_crack", "bearing_outer"),
        ("inner_race_crack", "bearing_inner"),
        ("outer_race_fluting", "bearing_outer"),
        ("impeller_unbalance", "imbalance"),
        ("unbalance_fan", "imbalance"),
    ],
)
def test_a_class_of_ones_own_beside_the_known_fault_it_names_is_refused_naming_both(tmp_path, name, real):
    """'outer' beside 'bearing_outer' (two sources' labels, two people's) was imported as two classes: one fault
    under two names, the model's two outputs splitting its windows. Refused naming both and how to merge them;
    alone, the user's names are kept as given ('outer', 'inner'; grades 'outer_007', 'outer_014'; 'ball')."""
    # runs of 2 windows: the class names are what is judged
    runs = [_csv(tmp_path / f"{run}.csv", np.sin(np.arange(4096) * 0.3 + k)) for k, run in enumerate("hab")]
    labels = _labels(tmp_path / "labels.csv", ["h,healthy,,,", f"a,{real},,,", f"b,{name},,,"])
    with pytest.raises(DatasetError) as ei:
        import_vibration(runs, tmp_path / "ds", labels)
    assert str(ei.value) == (
        f"{labels}: classes {name!r} (line 4) and {real!r} are both there, and {name!r} reads as {real!r}: one "
        f"fault under two names trains two outputs that split its windows; merge them (label the rows of {name!r} "
        f"{real!r}), or, if it is another fault or grade, give it a name that does not read as {real!r}; if its runs "
        f"are the healthy machine, give --healthy {name}"
    )
    assert not (tmp_path / "ds").exists()
    own = _labels(tmp_path / "own.csv", ["h,healthy,,,", f"a,{name},,,", "b,ball,,,"])
    res = import_vibration(runs, tmp_path / "ds", own)
    assert res["faults"] == {"ball": 2, "healthy": 2, name: 2}


@pytest.mark.parametrize(
    "name, beside",
    [
        ("inner_outer", ["bearing_inner", "bearing_outer"]),  # a combined fault
        ("imbalance_misalignment", ["imbalance", "misalignment"]),
        ("outer_housing_loose", ["bearing_outer"]),  # a place, not the bearing's race
        ("misaligned_belt", ["misalignment"]),  # another part
    ],
)
def test_a_combined_fault_or_another_parts_fault_beside_a_known_fault_is_imported(tmp_path, name, beside):
    """A combined fault ('inner_outer' beside 'bearing_inner') or a word naming another part or fault
    ('outer_housing_loose' beside 'bearing_outer') was refused as one fault under two names: it reads as no one
    of the four, and is imported as a class of its own."""
    classes = ["healthy", *beside, name]
    runs = [_csv(tmp_path / f"r{i}.csv", np.sin(np.arange(8192) * 0.3 + i)) for i in range(len(classes))]
    labels = _labels(tmp_path / "labels.csv", [f"r{i},{c},,," for i, c in enumerate(classes)])
    res = import_vibration(runs, tmp_path / "ds", labels)
    assert res["faults"] == {c: 4 for c in classes}, res


def test_a_dataset_without_healthy_windows_is_refused_at_import_and_at_training(tmp_path, capsys):
    """A dataset of faults only (its healthy runs labelled under another name, or left out) trained a model
    whose index 0, healthy, had no example: every machine a fault. The import refuses it naming its classes and
    --healthy (it was written, and refused only by training); load_vibration refuses one written otherwise, and
    a dataset.yaml whose faults name a synonym."""
    import yaml

    labels = _labels(tmp_path / "labels.csv", ["r1,looseness,,,", "r2,imbalance,,,"])
    runs = _two_runs(tmp_path)
    assert (
        dataset_main(
            [
                "import",
                "--kind",
                "vibration",
                *map(str, runs),
                "--labels",
                str(labels),
                "--out",
                str(tmp_path / "no"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err == (
        f"cloud-trainer dataset import: {labels}: no class is the healthy machine (labelled windows: "
        "['imbalance', 'looseness']): the model learns each fault against the healthy machine; label its runs "
        "'healthy', or name their class with --healthy NAME (a name of your own: --healthy nominal)\n"
    ), err
    assert not (tmp_path / "no").exists()
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    import_vibration(runs, tmp_path / "ds", labels)
    npz = tmp_path / "ds" / "windows.npz"
    with np.load(npz) as z:  # another tool's dataset of faults only
        arrays = {k: z[k] for k in z.files}
    arrays["fault"] = np.where(arrays["fault"] == "healthy", "looseness", arrays["fault"])
    np.savez(npz, **arrays)
    meta_file = tmp_path / "ds" / "dataset.yaml"
    meta = yaml.safe_load(meta_file.read_text())
    meta_file.write_text(yaml.safe_dump({**meta, "faults": [*meta["faults"], "looseness"]}, sort_keys=False))
    with pytest.raises(DatasetError) as ei:
        load_vibration(tmp_path / "ds")
    assert "no healthy runs" in str(ei.value) and "--healthy NAME" in str(ei.value), ei.value
    for name, says in (
        (
            "normal",
            ["use the real class name 'healthy'", "import the dataset again with the label corrected"],
        ),
    ):  # a healthy name of the user's own under 'faults' is warned about, not refused (a former import's)
        meta_file.write_text(yaml.safe_dump({**meta, "faults": [*meta["faults"], name]}, sort_keys=False))
        with pytest.raises(DatasetError) as ei:
            load_vibration(tmp_path / "ds")
        assert all(said in str(ei.value) for said in says), ei.value


_FS = 10_000.0


def _machine(fault: bool, seed: int, n: int = 8192) -> np.ndarray:
    """A pump's acceleration in g, written from physics (not the project's simulators): its 25 Hz shaft,
    broadband noise and, with an outer-race defect, impacts at the BPFO (107 Hz) each ringing the bearing
    housing's 3 kHz resonance."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / _FS
    x = 0.05 * np.sin(2 * np.pi * 25 * t + rng.uniform(0, 6)) + rng.normal(0, 0.01, n)
    if fault:
        k = np.arange(200)
        ring = np.exp(-k / 20.0) * np.sin(2 * np.pi * 3000 * k / _FS)
        hits = np.zeros(n)
        hits[:: int(_FS / 107)] = 0.3
        x = x + np.convolve(hits, ring)[:n]
    return x


def _class_folders(
    root: Path, classes: dict[str, bool], suffix: str, n: int = 8192
) -> tuple[list[str], Path]:
    """A user's dataset: a folder per class of two runs each (a logger's CSV, or 16-bit WAV) of ``n`` samples
    (8192: 4 windows), and the labels file naming each run's class as its folder does. ``classes``: name ->
    whether its runs are faulty."""
    files, rows = [], []
    for c, (name, fault) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(2):
            x, run = _machine(fault, 10 * c + i, n), f"{c}_{i}"
            if suffix == "csv":
                lines = list(map("{:.5f},{:.6f}".format, (np.arange(len(x)) / _FS).tolist(), x.tolist()))
                (root / name / f"{run}.csv").write_text("time [s],accel [g]\n" + "\n".join(lines) + "\n")
            else:
                with wave.open(str(root / name / f"{run}.wav"), "wb") as w:
                    w.setnchannels(1), w.setsampwidth(2), w.setframerate(int(_FS))
                    w.writeframes((x * 32767).astype("<i2").tobytes())
            files.append(str(root / name / f"{run}.{suffix}"))
            rows.append(f"{run},{name},,,")
    return files, _labels(root / "labels.csv", rows)


@pytest.mark.parametrize(
    "healthy, suffix, word",
    [
        (["nominal"], "csv", None),
        (["no_fault"], "wav", None),
        (["good_bearing"], "csv", "good"),
        (["normal_baseline"], "wav", "normal"),
        (["healthy_1", "healthy_2"], "csv", "healthy"),
        (["ok_run"], "wav", "ok"),
        (["baseline"], "csv", None),
        (["reference"], "wav", None),
        (["gut"], "csv", None),
        (["healthy", "nominal"], "csv", None),
        (["healthy", "baseline"], "wav", None),
        # a number right after the phrase: imported as a fault class beside 'healthy' (its windows trained as one)
        (["healthy", "no_fault1"], "wav", "no_fault"),
        (["fault_free2"], "csv", "fault_free"),
    ],
)
def test_a_healthy_class_under_a_name_of_its_own_is_refused_naming_it_and_the_healthy_option(
    tmp_path, capsys, healthy, suffix, word
):
    """Folders of runs per class whose healthy machine is named otherwise than 'healthy' ('nominal',
    'good_bearing', German 'gut', ...): imported as a fault class, training refused the dataset when it was the
    only healthy name, and beside 'healthy' trained its windows as a fault (a healthy machine then read as it;
    measured: /work/notes52/probe_maint_b/p1_before.out). Refused at import naming each and --healthy."""
    # runs of 2 windows: the class names are what is judged (the import's CPU is its CSV parse)
    files, labels = _class_folders(
        tmp_path / "data", {**dict.fromkeys(healthy, False), "outer": True}, suffix, n=4096
    )
    argv = ["import", "--kind", "vibration", *files, "--labels", str(labels), "--out", str(tmp_path / "ds")]
    assert dataset_main(argv) == 2
    err = capsys.readouterr().err
    odd = [h for h in healthy if h != "healthy"]
    names = ", ".join(f"{h!r}" + (f" (the word {word!r})" if word else "") for h in odd)
    assert err == (
        f"cloud-trainer dataset import: {labels}: class(es) {names} read as names of the healthy machine: "
        "imported as a fault class, its windows would train as a fault (a healthy machine then reads as it); if "
        f"their runs are healthy, give --healthy {','.join(odd)}; if one is a fault (baseline_drift, normal_wear), "
        "give --fault NAME\n"
    ), err
    assert not (tmp_path / "ds").exists()
    # said so, the same runs import with their healthy windows healthy, the fault beside them
    assert dataset_main([*argv, "--healthy", ",".join(odd)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["faults"] == {"healthy": 4 * len(healthy), "outer": 4} and res["healthy_labels"] == odd, res
    data = load_vibration(tmp_path / "ds")
    assert data.classes == [*FAULTS, "outer"] and np.bincount(data.fault).tolist() == [
        4 * len(healthy),
        0,
        0,
        0,
        0,
        4,
    ]


@pytest.mark.parametrize(
    "name, word",
    [
        ("motor_no3_fault", None),  # "no" before a number is a number: a fault of motor 3
        ("pump_no2_damage", None),
        ("bearing_no_1_failure", None),
        ("no_fault1", "no_fault"),  # still healthy
        ("baseline_no2", "baseline"),
        ("nonfault", "nonfault"),  # a healthy phrase with "non"
        ("non_fault", "non_fault"),
        ("NonFault", "non_fault"),
    ],
)
def test_a_number_marker_is_no_negation_and_non_fault_reads_healthy(name, word):
    """Digits split words, so 'motor_no3_fault' read as 'no_fault' and was refused as a healthy name; 'nonfault',
    'non_fault' and 'NonFault' read as faults (and 'NonFault' was told to write itself as 'non_fault', a fault
    then). "no" with its number is dropped first, and the phrases allow "non"."""
    from cloud_trainer.train.data import reads_healthy

    assert reads_healthy(name) == word


def test_a_lower_case_suggestion_folds_accents():
    """'Außenring' was told to write itself as 'au_enring', 'Déséquilibre' as 'd_s_quilibre'."""
    from cloud_trainer.train.data import lower_case_name

    assert lower_case_name("Außenring") == "aussenring"
    assert lower_case_name("Déséquilibre") == "desequilibre"
    assert lower_case_name("OuterRace") == "outer_race" and lower_case_name("正常") is None


def test_a_camelcase_fault_with_a_healthy_word_is_told_how_to_keep_it_a_fault(tmp_path, capsys):
    """'NormalWear' was told only 'it reads as a name of the healthy machine ('normal'): give --healthy
    NormalWear': following it trained a fault's windows as healthy. It is now told both ways, and the fault's
    way imports it as a fault."""
    files, labels = _class_folders(tmp_path / "data", {"healthy": False, "NormalWear": True}, "csv")
    argv = ["import", "--kind", "vibration", *files, "--labels", str(labels), "--out", str(tmp_path / "ds")]
    assert dataset_main(argv) == 2
    err = capsys.readouterr().err
    assert err.rstrip().endswith(
        "it reads as a name of the healthy machine ('normal'): if its runs are healthy, give --healthy NormalWear; "
        "if it is a fault, write it as 'normal_wear' and give --fault normal_wear"
    ), err
    labels.write_text(labels.read_text().replace(",NormalWear,", ",normal_wear,"))
    assert dataset_main([*argv, "--fault", "normal_wear"]) == 0
    assert json.loads(capsys.readouterr().out)["faults"] == {"healthy": 8, "normal_wear": 8}


def test_a_healthy_class_of_any_name_given_to_healthy_is_imported_as_healthy(tmp_path, capsys):
    """A name no rule could know (another script, a word of no list: '正常', 'stufe_a') imports as healthy when
    --healthy names it (given once per class, or comma-separated); it is recorded in dataset.yaml."""
    import yaml

    files, labels = _class_folders(tmp_path / "data", {"正常": False, "stufe_a": False, "outer": True}, "wav")
    argv = ["import", "--kind", "vibration", *files, "--labels", str(labels), "--out", str(tmp_path / "ds")]
    assert dataset_main(argv) == 2
    assert (
        "fault '正常' is not a fault name" in (err := capsys.readouterr().err) and "--healthy 正常" in err
    ), err
    assert dataset_main([*argv, "--healthy", "正常", "--healthy", "stufe_a"]) == 0
    assert json.loads(capsys.readouterr().out)["faults"] == {"healthy": 16, "outer": 8}
    assert yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())["healthy_labels"] == [
        "正常",
        "stufe_a",
    ]
    assert np.bincount(load_vibration(tmp_path / "ds").fault).tolist() == [16, 0, 0, 0, 0, 8]


@pytest.mark.parametrize(
    "healthy, message",
    [
        (
            "nominl",
            "--healthy nominl: no row of {labels} names the class 'nominl' (its classes: nominal, outer); "
            "give the healthy class as the labels write it",
        ),
        ("outer,nominal", None),  # two healthy classes and no fault: the labels' own refusal
        (
            "imbalance",
            "--healthy imbalance: 'imbalance' is a fault class (imbalance, misalignment, bearing_outer, "
            "bearing_inner), not healthy",
        ),
    ],
)
def test_a_healthy_option_naming_no_class_of_the_labels_or_a_fault_is_refused(
    tmp_path, capsys, healthy, message
):
    """--healthy naming a class the labels do not have (a typo: nothing would be healthy), or one of the known
    faults, is refused naming it; every class made healthy leaves no fault to learn."""
    files, labels = _class_folders(tmp_path / "data", {"nominal": False, "outer": True}, "csv")
    argv = ["import", "--kind", "vibration", *files, "--labels", str(labels), "--out", str(tmp_path / "ds")]
    assert dataset_main([*argv, "--healthy", healthy]) == 2
    err = capsys.readouterr().err
    expect = message.format(labels=labels) if message else "only fault ['healthy'] is labelled"
    assert err.startswith(f"cloud-trainer dataset import: {expect}"), err
    assert not (tmp_path / "ds").exists()


def test_a_negated_healthy_word_is_a_fault_class_and_a_misspelt_healthy_still_a_typo(tmp_path):
    """'not_ok', 'no_good' name a fault ("NOK" parts), not the healthy machine: they import as classes of their
    own; 'helthy' is still refused as a typo of 'healthy'."""
    files, labels = _class_folders(
        tmp_path / "data", {"healthy": False, "not_ok": True, "no_good": True}, "csv"
    )
    res = import_vibration(list(map(Path, files)), tmp_path / "ds", labels)
    assert res["faults"] == {"healthy": 8, "no_good": 8, "not_ok": 8}, res
    typo = _labels(tmp_path / "typo.csv", ["0_0,helthy,,,", "1_0,not_ok,,,"])
    with pytest.raises(DatasetError, match="fault 'helthy' is not one of .*typo of 'healthy'"):
        import_vibration(list(map(Path, files)), tmp_path / "ds2", typo)


@pytest.mark.parametrize(
    "name", ["healthy_no_load", "normal_no_load", "nominal_non_drive_end", "baseline_no2", "healthy_run_no_3"]
)
def test_a_healthy_name_with_a_negation_elsewhere_in_it_still_reads_healthy(tmp_path, capsys, name):
    """A negation word anywhere in a name cancelled every healthy word of it ('no' of 'no_load', 'non' of
    'non_drive_end', and of 'no2' as digits split words): 'healthy' + 'healthy_no_load' + 'outer' imported with
    healthy_no_load as a fault class, its healthy windows trained as a fault (/work/notes52/review_vibhealthy/
    p1_reads_healthy.d0de.out). Only the word right before a healthy word cancels it ('not_ok', 'no_good' stay
    faults: test_a_negated_healthy_word_is_a_fault_class_and_a_misspelt_healthy_still_a_typo)."""
    # runs of 2 windows: the class names are what is judged
    classes = {"healthy": False, name: False, "outer": True}
    files, labels = _class_folders(tmp_path / "data", classes, "csv", n=4096)
    argv = ["import", "--kind", "vibration", *files, "--labels", str(labels), "--out", str(tmp_path / "ds")]
    assert dataset_main(argv) == 2
    err = capsys.readouterr().err
    assert f"class(es) {name!r} (the word " in err and f"give --healthy {name};" in err, err
    assert not (tmp_path / "ds").exists()
    assert dataset_main([*argv, "--healthy", name]) == 0
    assert json.loads(capsys.readouterr().out)["faults"] == {"healthy": 8, "outer": 4}


def test_a_healthy_name_in_camelcase_is_told_it_reads_healthy_and_imports_given_to_healthy(tmp_path, capsys):
    """'NoFault', 'NormalRun' (a DAQ's folder names) are no fault names (not lower-case) and were told only 'if it
    names the healthy machine, give --healthy ...', as 'OuterRace' was; CamelCase now splits into words, so they
    are told they read as the healthy machine's, and import as healthy with --healthy."""
    files, labels = _class_folders(
        tmp_path / "data", {"NormalRun": False, "NoFault": False, "outer": True}, "wav"
    )
    argv = ["import", "--kind", "vibration", *files, "--labels", str(labels), "--out", str(tmp_path / "ds")]
    assert dataset_main(argv) == 2
    err = capsys.readouterr().err
    assert err.endswith(
        "fault 'NormalRun' is not a fault name (a lower-case word: healthy, imbalance, misalignment, bearing_outer, "
        "bearing_inner, or a class of your own); it reads as a name of the healthy machine ('normal'): if its runs "
        "are healthy, give --healthy NormalRun; if it is a fault, write it as 'normal_run' and give --fault "
        "normal_run\n"
    ), err
    assert dataset_main([*argv, "--healthy", "NormalRun,NoFault"]) == 0
    assert json.loads(capsys.readouterr().out)["faults"] == {"healthy": 16, "outer": 8}


def test_a_class_taken_for_a_misspelt_known_fault_is_imported_given_to_fault(tmp_path, capsys):
    """A class of the user's own close to a known fault's name ('misalignment_h' for horizontal, a grade
    'bearing_outer2') was refused as a typo, and --fault, which keeps a class as a fault of its own, was not
    asked: no way to import it but renaming the model's label. The typo refusal now names --fault, and --fault
    imports it as given."""
    classes = {"healthy": False, "misalignment_h": True, "bearing_outer2": True}
    files, labels = _class_folders(tmp_path / "data", classes, "csv")
    argv = ["import", "--kind", "vibration", *files, "--labels", str(labels), "--out", str(tmp_path / "ds")]
    assert dataset_main(argv) == 2
    err = capsys.readouterr().err
    assert err.endswith(
        "fault 'misalignment_h' is not one of ['healthy', 'imbalance', 'misalignment', 'bearing_outer', "
        "'bearing_inner']; is it a typo of 'misalignment'? (if it is a class of your own, give --fault "
        "misalignment_h)\n"
    ), err
    assert dataset_main([*argv, "--fault", "misalignment_h,bearing_outer2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["faults"] == {"bearing_outer2": 8, "healthy": 8, "misalignment_h": 8}, res
    assert res["fault_labels"] == ["misalignment_h", "bearing_outer2"]
    assert load_vibration(tmp_path / "ds").classes == [*FAULTS, "bearing_outer2", "misalignment_h"]


def test_a_fault_whose_name_reads_healthy_is_imported_as_a_fault_given_to_fault_and_trained(tmp_path, capsys):
    """A genuine fault named with a healthy word ('baseline_drift', 'normal_wear') was refused beside 'healthy'
    with no way to keep its name (an agent's rules name the model's label: when: {label: ...}). --fault imports
    it as a fault class, recorded in dataset.yaml as fault_labels; training takes it with no warning."""
    import yaml

    classes = {"healthy": False, "baseline_drift": True, "normal_wear": True}
    files, labels = _class_folders(tmp_path / "data", classes, "wav")
    argv = ["import", "--kind", "vibration", *files, "--labels", str(labels), "--out", str(tmp_path / "ds")]
    assert dataset_main(argv) == 2
    assert "give --fault NAME" in capsys.readouterr().err
    assert dataset_main([*argv, "--fault", "baseline_drift", "--fault", "normal_wear"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["faults"] == {"baseline_drift": 8, "healthy": 8, "normal_wear": 8}, res
    meta = yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())
    assert meta["fault_labels"] == ["baseline_drift", "normal_wear"], meta
    data = load_vibration(tmp_path / "ds")
    assert data.classes == [*FAULTS, "baseline_drift", "normal_wear"]
    assert np.bincount(data.fault).tolist() == [8, 0, 0, 0, 0, 8, 8]
    assert capsys.readouterr().err == ""
    # --fault naming no class of the labels, or the healthy class, is refused naming it
    for given, said in (("baseline_drft", "no row of"), ("healthy", "'healthy' is the healthy class")):
        assert dataset_main([*argv[:-1], str(tmp_path / given), "--fault", given]) == 2
        assert f"--fault {given}: " in (err := capsys.readouterr().err) and said in err, err


def test_a_dataset_of_the_former_import_with_a_fault_named_healthy_still_trains_with_a_warning(
    tmp_path, capsys, monkeypatch
):
    """A dataset.yaml the import wrote before d0de0c0a lists such a fault under 'faults' with no record of
    --fault: training refused it, so a scheduled retrain stopped after the upgrade and the only way on renamed the
    model's label. It has healthy windows (training refuses one without), so it trains as before, warning with
    the name, --healthy and --fault."""
    import yaml

    files, labels = _class_folders(tmp_path / "data", {"healthy": False, "nominal_load": True}, "csv")
    with monkeypatch.context() as m:  # the former import: no healthy-name check, no --fault
        m.setattr("cloud_trainer.train.signals.reads_healthy", lambda name: None)
        import_vibration(list(map(Path, files)), tmp_path / "ds", labels)
    meta_file = tmp_path / "ds" / "dataset.yaml"
    assert "fault_labels" not in yaml.safe_load(meta_file.read_text())
    data = load_vibration(tmp_path / "ds")
    assert data.classes == [*FAULTS, "nominal_load"]
    assert np.bincount(data.fault).tolist() == [8, 0, 0, 0, 0, 8]
    err = capsys.readouterr().err
    assert err.startswith(
        f"warning: {meta_file}: fault 'nominal_load' reads as a name of the healthy machine"
    ), err
    assert "--healthy nominal_load" in err and "--fault nominal_load" in err, err


@pytest.mark.parametrize(
    "name, real",
    [
        ("not_misaligned", "misalignment"),
        ("imbalance_free", "imbalance"),
        ("misalignment_corrected", "misalignment"),
        ("no_outer", "bearing_outer"),
    ],
)
def test_a_class_saying_a_known_fault_is_absent_is_not_told_to_merge_with_it(tmp_path, name, real):
    """'not_misaligned' beside 'misalignment' was refused as that fault under two names, told to label its rows
    'misalignment': a machine without the fault then trains as the fault. A name saying the fault is absent or
    undone reads as none of them, and is imported as a class of its own."""
    runs = [_csv(tmp_path / f"{run}.csv", np.sin(np.arange(8192) * 0.3 + k)) for k, run in enumerate("hab")]
    labels = _labels(tmp_path / "labels.csv", ["h,healthy,,,", f"a,{real},,,", f"b,{name},,,"])
    res = import_vibration(runs, tmp_path / "ds", labels)
    assert res["faults"] == {"healthy": 4, name: 4, real: 4}, res


def test_a_stray_labels_file_whose_first_row_is_a_class_of_its_own_is_refused_as_a_labels_file(
    tmp_path, capsys
):
    """A labels file beside the runs was recognised only when its first row's fault was one of the five: one
    starting with 'looseness' was read as a run ("column 'run' holds a value that is not a number")."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in ("pump1", "pump2"):
        _csv(data / f"{name}.csv", rng.normal(0, 0.1, 4096))
    _labels(data / "labels.csv", ["pump1,healthy,,,", "pump2,imbalance,,,"])
    _labels(data / "labels_old.csv", ["pump2,looseness,,,", "pump1,healthy,,,"])
    globbed = sorted(str(p) for p in data.glob("*.csv"))
    argv = ["import", "--kind", "vibration", *globbed, "--labels", str(data / "labels.csv")]
    assert dataset_main([*argv, "--out", str(tmp_path / "ds_old")]) == 2
    err = capsys.readouterr().err
    assert "labels_old.csv: its columns (run,fault,start_s,end_s,failure_s) are a labels file's" in err, err


@pytest.mark.parametrize("first", ["Normal", "OK", "imbalace", "outer race", "7"])
def test_a_stray_labels_file_is_told_by_its_header_and_run_name_whatever_its_first_rows_fault(
    tmp_path, capsys, first
):
    """ca2ef1a3 recognised a labels file beside the runs only when its first row's fault was a valid class: one
    starting with another name of a class ('Normal', 'OK'), a misspelt one or a number was read as a run ("column
    'run' holds a value that is not a number ('pump2')"). The header's run and fault columns and a run that is
    not a number (a name) tell it."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in ("pump1", "pump2"):
        _csv(data / f"{name}.csv", rng.normal(0, 0.1, 4096))
    _labels(data / "labels.csv", ["pump1,healthy,,,", "pump2,imbalance,,,"])
    _labels(data / "labels_old.csv", [f"pump2,{first},,,", "pump1,healthy,,,"])
    globbed = sorted(str(p) for p in data.glob("*.csv"))
    argv = ["import", "--kind", "vibration", *globbed, "--labels", str(data / "labels.csv")]
    assert dataset_main([*argv, "--out", str(tmp_path / "ds_old")]) == 2
    err = capsys.readouterr().err
    assert "labels_old.csv: its columns (run,fault,start_s,end_s,failure_s) are a labels file's" in err, err
    assert not (tmp_path / "ds_old").exists()


def test_a_published_model_is_scored_by_its_fault_labels_names_not_by_index(monkeypatch):
    """incumbent_metrics scored the published model's argmax as an index of this dataset's classes, but the
    classes beyond the five are sorted per dataset: a perfect model of [..., looseness] (5) read 0.5 against
    [..., cavitation, looseness] (looseness 6), and one of more classes than the dataset's raised IndexError
    (the comparison skipped). Its fault_logits are now mapped through its manifest's labels by name; a class
    the dataset has not counts wrong."""
    from types import SimpleNamespace

    from cloud_trainer.train import maintenance, onnx_tools
    from cloud_trainer.train.data import FAULTS
    from cloud_trainer.train.families.maintenance import MaintenanceFamily
    from model_packager.manifest import SignalPreprocessing

    n = 40

    def published(labels: list[str], pred: np.ndarray):
        logits = np.zeros((n, len(labels)), np.float32)
        logits[np.arange(n), pred] = 5.0
        out = {
            "anomaly_score": np.r_[np.zeros(20), np.ones(20)].astype(np.float32).reshape(-1, 1),
            "fault_logits": logits,
            "remaining_life": np.zeros((n, 1), np.float32),
        }
        monkeypatch.setattr(onnx_tools, "run", lambda path, x: out)
        outputs = [
            SimpleNamespace(name="anomaly_score", role=SimpleNamespace(value="anomaly_score"), threshold=0.5),
            SimpleNamespace(name="fault_logits", role=SimpleNamespace(value="class_logits"), threshold=None),
        ]
        outputs[1].labels = labels
        manifest = SimpleNamespace(preprocessing=SignalPreprocessing.model_construct(), outputs=outputs)
        return SimpleNamespace(manifest=manifest, model_path="model.onnx")

    monkeypatch.setattr(maintenance, "features", lambda w, pre, speed: np.zeros((len(w), 13), np.float32))

    def dataset(classes: list[str], fault: int):
        y = np.r_[np.zeros(20, int), np.full(20, classes.index(("looseness", "imbalance")[fault]))]
        ds = SimpleNamespace(
            waveforms=np.zeros((n, 8), np.float32),
            speed_rpm=None,
            health=np.r_[np.ones(20), np.zeros(20)],
            rul_s=np.full(n, np.nan),
            classes=classes,
        )
        return ds, y

    fam = MaintenanceFamily()
    te = np.arange(n)
    ctx = {"rul_mean": float("nan")}
    # learned [..., looseness]: looseness is its index 5; this dataset's looseness is 6
    opened = published([*FAULTS, "looseness"], np.r_[np.zeros(20, int), np.full(20, 5)])
    ds, y = dataset([*FAULTS, "cavitation", "looseness"], 0)
    assert fam.incumbent_metrics(opened, ds, te, y, 0.5, ctx)["fault_accuracy"] == 1.0
    # a model of more classes than this dataset's five: its looseness answers count wrong, no IndexError
    ds, y = dataset(list(FAULTS), 1)
    got = fam.incumbent_metrics(opened, ds, te, y, 0.5, ctx)
    assert got["fault_accuracy"] == 0.5 and got["f1_per_class"]["imbalance"] == 0.0, got
    assert np.asarray(got["confusion"]).shape == (len(FAULTS), len(FAULTS))


@pytest.mark.parametrize("where", ["", "healthy/"])
@pytest.mark.parametrize("other", ["run1.wav", "run1.CSV"])
def test_two_files_of_one_run_name_in_one_folder_are_refused_naming_both(tmp_path, where, other):
    """run1.csv beside run1.wav (or run1.CSV) in one folder, alone or a class's folder, were one run once runs
    became paths: one labels row labelled both, and the split could train one copy and test the other. Refused
    naming both files, as before runs were paths; nothing is written."""
    rng = np.random.default_rng(3)
    a = _class_run("csv", tmp_path / "data" / f"{where}run1.csv", rng.normal(0, 0.1, 4096))
    fmt = "wav" if other.endswith("wav") else "csv"
    b = _class_run(fmt, tmp_path / "data" / f"{where}{other}", rng.normal(0, 0.1, 4096))
    files = [a, b]
    rows = [f"{where}run1,healthy,,,"]
    if where:
        files.append(
            _class_run("csv", tmp_path / "data" / "bearing_outer" / "run1.csv", rng.normal(0, 0.1, 4096))
        )
        rows.append("bearing_outer/run1,bearing_outer,,,")
    with pytest.raises(DatasetError) as ei:
        import_vibration(files, tmp_path / "ds", _labels(tmp_path / "labels.csv", rows))
    assert str(ei.value) == (
        f"{a} and {b} are both run '{where}run1' (a run is its file's path from the files' common folder without "
        "the suffix, as the labels name it); rename one"
    )
    assert not (tmp_path / "ds").exists()


def test_a_run_in_a_folder_named_on_macos_matches_its_label_typed_composed(tmp_path):
    """A folder made on macOS names 'gesund_ö' with a separate accent (NFD); the labels typed 'ö' as one
    character (NFC) named a run no file had. Runs and the labels' runs are read in the composed form."""
    import unicodedata

    rng = np.random.default_rng(4)
    nfd = unicodedata.normalize("NFD", "gesund_ö")
    files = [
        _class_run("csv", tmp_path / "data" / nfd / "run1.csv", rng.normal(0, 0.1, 4096)),
        _class_run("csv", tmp_path / "data" / "bearing_outer" / "run1.csv", rng.normal(0, 0.1, 4096)),
    ]
    rows = [
        f"{unicodedata.normalize('NFC', 'gesund_ö')}/run1,healthy,,,",
        "bearing_outer/run1,bearing_outer,,,",
    ]
    res = import_vibration(files, tmp_path / "ds", _labels(tmp_path / "labels.csv", rows))
    assert res["faults"] == {"bearing_outer": 2, "healthy": 2}, res
    assert sorted(res["channels"]) == ["bearing_outer/run1", unicodedata.normalize("NFC", "gesund_ö/run1")]


def test_a_run_of_fewer_than_8_samples_is_not_told_to_take_a_window_that_short(tmp_path):
    """A labelled run of 5 samples was told 'give --window-samples 5 or less', a window the import refuses
    (at least 8): only 'leave the run out' is said."""
    x = np.sin(np.arange(4096) * 0.3) * 0.5
    a = _class_run("wav", tmp_path / "a.wav", x)
    b = _class_run("wav", tmp_path / "b.wav", x[[0, 3, 1, 4, 2]])  # not rising: not read as a time column
    labels = _labels(tmp_path / "labels.csv", ["a,healthy,,,", "b,imbalance,,,"])
    with pytest.raises(DatasetError) as ei:
        import_vibration([a, b], tmp_path / "ds", labels)
    assert str(ei.value).endswith(
        f"it gives no window, and {labels}:3 labels it; leave the run out (a window is 8 samples at least)"
    ), ei.value


def test_text_that_is_not_utf8_after_thousands_of_plain_rows_is_named_at_its_line_not_as_a_row_cut_short(
    tmp_path,
):
    """A plain CSV (the rows split a block at a time) with a Latin-1 byte at line 9001: the reader went on past the
    text it could not decode and refused the file for a row it had cut there ("line 8758 has 2 fields but the header
    3"), a row the file holds whole. It is refused for the text that is not UTF-8, naming its line."""
    from cloud_trainer.train.signals import read_csv

    rows = [
        "timestamp,ax [g],ay",
        *(f"{1700000000 + i / 1000:.3f},{(i % 7) / 10:.4f},{i % 5:.4f}" for i in range(12000)),
    ]
    rows[9000] += "\xb5"
    path = tmp_path / "latin1.csv"
    path.write_bytes(("\n".join(rows) + "\n").encode("latin-1"))
    with pytest.raises(
        DatasetError, match=r"latin1.csv: not UTF-8 text \(invalid start byte in line 9001 at byte"
    ):
        read_csv(path, None)


def test_blank_lines_and_a_trailing_delimiter_are_read_as_the_plain_rows_they_are(tmp_path, monkeypatch):
    """A block of lines with a blank line in it, or rows ending in a delimiter (a spreadsheet's export), is split
    at once as plain rows (it went row by row, 0.7-0.8x the former reader): the same values, and a value that is no
    number still named at its own line past the blank lines."""
    from cloud_trainer.train import signals

    assert signals._plain_rows(["1,2,3", "", " ", "4,5,6,"], [2, 3, 4, 5], ",", 3) == (
        ["1,2,3", "4,5,6"],
        [2, 5],
    )
    assert signals._plain_rows(["1,2,3", "4,5"], [2, 3], ",", 3) == (
        None,
        [2, 3],
    )  # a row cut short: row by row
    assert signals._plain_rows(["1,2,3", "4,5,6,7"], [2, 3], ",", 3) == (None, [2, 3])  # a field too many
    monkeypatch.setattr(signals, "CSV_CHUNK_ROWS", 8, raising=False)  # blocks of 4 lines
    x = np.round(np.sin(np.arange(40) * 0.3), 4)
    body = [f"{1700000000 + i / 100:.2f},{v:.4f},{-v:.4f}" for i, v in enumerate(x)]
    for name, lines in (
        ("blanks", [ln + ("\n" if i % 3 == 1 else "") for i, ln in enumerate(body)]),
        ("trailing", [ln + "," for ln in body]),
    ):
        path = tmp_path / f"{name}.csv"
        path.write_text("\n".join(["timestamp,accel_x,accel_y", *lines]) + "\n")
        rec = signals.read_csv(path, None)
        assert np.array_equal(rec.channels["accel_x"], x) and np.array_equal(rec.channels["accel_y"], -x), (
            name
        )
        lines[30] = lines[30].replace(f"{x[30]:.4f}", "abc", 1)
        path.write_text("\n".join(["timestamp,accel_x,accel_y", *lines]) + "\n")
        at = 1 + 30 + 1 + (sum(1 for i in range(30) if i % 3 == 1) if name == "blanks" else 0)
        with pytest.raises(DatasetError, match=rf"line {at}\b"):
            signals.read_csv(path, None)


@pytest.mark.parametrize("eol", ["\r", "\n", "\r\n"])
def test_text_that_is_not_utf8_is_named_at_its_line_whatever_ends_the_lines(tmp_path, eol):
    """A CSV whose lines end in CR only (an old Mac export) with a Latin-1 byte at line 5 was refused naming line 1:
    the line was counted at LF only. Lines are counted as the reader ends them (LF, CRLF, a lone CR), also across
    the blocks the file is read in (a CRLF split between two), and the byte is the file's."""
    import random
    import re

    from cloud_trainer.train import signals

    rows = ["timestamp,ax", *(f"{1700000000 + i / 100:.2f},{i % 7 / 10:.4f}" for i in range(8))]
    rows[4] += "\xb5"
    path = tmp_path / "old_mac.csv"
    path.write_bytes(eol.join(rows).encode("latin-1"))
    with pytest.raises(DatasetError, match=r"not UTF-8 text \(invalid start byte in line 5 at byte"):
        signals.read_csv(path, None)
    rng = random.Random(eol)
    EOLS = re.compile(rb"\r\n|\r|\n")
    for _ in range(40):  # line and byte against a whole-file count, for every block size
        text = "".join(
            rng.choice(["a", "é", "\r", "\n", "\r\n", ",", "1"]) for _ in range(rng.randrange(1, 60))
        )
        raw = bytearray(text.encode())
        raw.insert(rng.randrange(len(raw) + 1), rng.choice([0xB5, 0xFF, 0xC3]))
        path.write_bytes(bytes(raw))
        try:
            bytes(raw).decode("utf-8")
            continue
        except UnicodeDecodeError as exc:
            at = exc.start
            expected = f"line {len(re.split(EOLS, bytes(raw[:at])))} at byte {at}"
            for block in (1, 2, 3, 7, 1 << 20):
                assert expected in str(signals._not_utf8(path, exc, block)), (bytes(raw), block, at)


def test_runs_sampled_past_the_rate_training_takes_are_refused_at_import(tmp_path):
    # an oscilloscope's NPZ at 2.5 GHz imported, and training refused the dataset just written
    rng = np.random.default_rng(0)
    for run in ("r1", "r2"):
        np.savez(tmp_path / f"{run}.npz", accel_x=rng.normal(0, 0.1, 4096), sample_rate_hz=2.5e9)
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy", "r2,imbalance"])
    runs = [tmp_path / "r1.npz", tmp_path / "r2.npz"]
    with pytest.raises(
        DatasetError, match=r"r1.npz: sampled at 2.5e\+09 Hz, above the 1,000,000,000 Hz .*--resample-to"
    ):
        import_vibration(runs, tmp_path / "ds", labels, window_samples=1024)
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").iterdir())


def test_a_pcm_wav_beside_files_naming_their_unit_needs_unit_and_scale_and_files_naming_none_are_said(
    tmp_path, capsys
):
    """A CSV in 'accel [g]' beside a 16-bit WAV (its samples fractions of its full scale, no unit): the WAV's run
    was written as g without a word (its rms feature at the file's scale). Refused unless --unit says its unit;
    --scale puts its samples in it. Other files naming no unit are taken in the headers' unit, said; a dataset
    naming none at all is imported saying what build maintenance assumes."""
    import yaml

    rng = np.random.default_rng(3)
    x = rng.normal(0, 2.0, 8192)  # g
    t = np.arange(len(x)) / RATE
    (tmp_path / "r1.csv").write_text(
        "time,accel [g]\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in zip(t, x, strict=True))
    )
    with wave.open(str(tmp_path / "r2.wav"), "wb") as w:  # recorded over +-50 g
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(int(RATE))
        w.writeframes(np.round(_another(x) / 50 * 32767).astype("<i2").tobytes())
    labels = _labels(tmp_path / "labels.csv", ["r1,healthy,,,", "r2,imbalance,,,"])
    files = [tmp_path / "r1.csv", tmp_path / "r2.wav"]
    with pytest.raises(DatasetError, match=r"r2\.wav is a PCM WAV .* name 'g'.*--unit g --scale FULL_SCALE"):
        import_vibration(files, tmp_path / "ds", labels)
    with pytest.raises(DatasetError, match="--unit m/s2, and .*r1.csv has accel in 'g'"):
        import_vibration(files, tmp_path / "ds", labels, unit="m/s2")
    with pytest.raises(DatasetError, match="--scale 50 needs --unit"):
        import_vibration(files, tmp_path / "ds", labels, scale=50.0)
    # every file names its unit: --scale multiplied nothing, without a word
    named = [tmp_path / "r3.csv", tmp_path / "r4.csv"]
    for path, v in zip(named, (x, _another(x)), strict=True):
        path.write_text(
            "time,accel [m/s2]\n" + "".join(f"{a:.6f},{b:.6f}\n" for a, b in zip(t, v, strict=True))
        )
    only = _labels(tmp_path / "only.csv", ["r3,healthy,,,", "r4,imbalance,,,"])
    with pytest.raises(DatasetError, match=r"--scale 50: every file names its signal's unit \('m/s2'\)"):
        import_vibration(named, tmp_path / "ds", only, unit="m/s2", scale=50.0)
    res = import_vibration(files, tmp_path / "ds", labels, unit="g", scale=50.0)
    assert res["unit"] == "g" and res["scaled"] == {"runs": 1, "by": 50.0} and "warning" not in res
    data = load_vibration(tmp_path / "ds")
    assert yaml.safe_load((tmp_path / "ds" / "dataset.yaml").read_text())["units"] == {"waveform": "g"}
    wav_rms = float(np.sqrt(np.mean(data.waveforms[data.run_id == data.run_id[-1]] ** 2)))
    assert abs(wav_rms / float(np.sqrt(np.mean(_another(x) ** 2))) - 1) < 0.05  # in g, not fractions of 1
    # an NPZ (numbers as the logger wrote them) beside the CSV: taken as g, said
    np.savez(tmp_path / "r2.npz", accel=_another(x), sample_rate_hz=RATE)
    res = import_vibration([tmp_path / "r1.csv", tmp_path / "r2.npz"], tmp_path / "ds2", labels)
    assert res["unit"] == "g" and "1 of the 2 runs name no unit (r2.npz): taken as g" in res["warning"]
    # no file names a unit: imported as before, and said (stderr and the result) what build maintenance assumes
    np.savez(tmp_path / "r1.npz", accel=x, sample_rate_hz=RATE)
    argv = ["import", "--kind", "vibration", str(tmp_path / "r1.npz"), str(tmp_path / "r2.wav")]
    assert dataset_main([*argv, "--labels", str(labels), "--out", str(tmp_path / "ds3")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["unit"] is None and "takes the samples as g" in json.loads(out)["warning"]
    assert "warning: no run names the signal's unit (r1.npz, r2.wav" in err and "--unit" in err
