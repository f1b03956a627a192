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
