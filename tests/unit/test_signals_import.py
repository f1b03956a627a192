"""`cloud-trainer dataset import --kind vibration`: historian CSV / Parquet / WAV / NPZ into a training dataset,
with one clear error each for gaps, time going back and mixed rates."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train.cli import main_dataset as dataset_main  # the `cloud-trainer dataset` verb
from cloud_trainer.train.data import DatasetError, load_vibration
from cloud_trainer.train.signals import import_vibration

RATE = 10000.0


def _csv(path: Path, x: np.ndarray, t: np.ndarray | None = None, rate: float = RATE) -> Path:
    t = np.arange(len(x)) / rate + 1_700_000_000.0 if t is None else t
    lines = ["timestamp,accel_x,accel_y"] + [f"{a:.6f},{b:.6f},{-b:.6f}" for a, b in zip(t, x, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


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
    _csv(tmp_path / "pump2.csv", x.astype(np.float64))
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
    assert np.allclose(data.waveforms[:4], data.waveforms[4:], atol=1e-5)  # the same samples as the CSV copy
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
            {"accel_y": [1.0, None] * 2048},
            None,
            "column 'accel_y' has 2048 missing values (the first at row 1)",
        ),
        ({"state": ["run"] * 4096}, None, "column 'state' is string, not a number"),
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
                np.round(x * 32767).astype("<i2").tobytes(),
                tag=1,
                channels=3,
                rate=25600,
                bits=16,
                data_size=0xFFFFFFFF,
            ),
            1 / 32767,
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
    assert np.allclose(read_wav(tmp_path / "stdlib.wav", None).channels["ch0"], np.arange(-100, 100) / 32767)


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
