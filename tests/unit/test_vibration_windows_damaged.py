"""A vibration dataset's ``windows.npz`` is the user's file (copied in, or written by a tool of theirs): one that
is no NPZ, is cut short, holds an array of Python objects or of text where numbers belong, or an array with
another count of values than there are windows, stopped ``train`` and ``build maintenance`` with a ValueError,
BadZipFile or IndexError traceback. Each is refused in one line naming the file, as ``dataset.yaml`` beside it
is."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train.data import DatasetError, load_vibration, not_finite


def _arrays(n: int = 4) -> dict[str, np.ndarray]:
    # as edge-sim dataset vibration and dataset import --kind vibration write them
    return {
        "waveform": np.zeros((n, 8), np.float32),
        "fault": np.asarray(["healthy", "imbalance"] * (n // 2), dtype=np.str_),
        "health": np.ones(n, np.float32),
        "rul_s": np.full(n, np.nan),
        "run_id": np.arange(n, dtype=np.int64),
        "t_s": np.zeros(n),
    }


def _folder(tmp_path: Path) -> Path:
    ds = tmp_path / "vib"
    ds.mkdir()
    (ds / "dataset.yaml").write_text("window_samples: 8\nsample_rate_hz: 1000\n")
    return ds


def _cut_short(path: Path) -> None:
    np.savez_compressed(path, **_arrays())
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize(
    "write",
    [
        lambda p: p.write_bytes(b"run,fault\n1,healthy\n"),  # a CSV saved under the name
        _cut_short,
        lambda p: np.savez(p, **{**_arrays(), "waveform": np.array([{}, 1, 2, 3], dtype=object)}),
    ],
    ids=["not-an-npz", "cut-short", "objects"],
)
def test_a_windows_file_numpy_cannot_read_is_refused_naming_it(tmp_path, write):
    ds = _folder(tmp_path)
    write(ds / "windows.npz")
    with pytest.raises(DatasetError, match=rf"^{ds / 'windows.npz'}: not a readable windows file \("):
        load_vibration(ds)


@pytest.mark.parametrize(
    "change, said",
    [
        ({"waveform": np.full((4, 8), "a")}, "array 'waveform' holds <U1 values, not numbers"),
        ({"health": np.asarray(["1"] * 4)}, "array 'health' holds <U1 values, not numbers"),
        (
            {"run_id": np.arange(3)},
            r"array 'run_id' holds 3 values \(shape \(3,\)\), not one for each of the 4 windows",
        ),
        (
            {"fault": np.asarray(["healthy", "imbalance"])},
            r"array 'fault' holds 2 values \(shape \(2,\)\), not one",
        ),
    ],
)
def test_a_windows_array_of_text_or_of_another_length_is_refused_naming_it(tmp_path, change, said):
    ds = _folder(tmp_path)
    np.savez_compressed(ds / "windows.npz", **{**_arrays(), **change})
    with pytest.raises(DatasetError, match=rf"^{ds / 'windows.npz'}: {said}"):
        load_vibration(ds)


def test_a_windows_file_as_the_tools_write_it_is_read(tmp_path):
    ds = _folder(tmp_path)
    np.savez_compressed(ds / "windows.npz", **_arrays(), speed_rpm=np.full(4, 1500.0))
    assert load_vibration(ds).waveforms.shape == (4, 8)


@pytest.mark.parametrize(
    "array, value, said",
    [
        (
            "waveform",
            np.nan,
            r"array 'waveform' holds 1 value\(s\) that are not finite \(NaN or Inf\), the first in ",
        ),
        ("waveform", np.inf, r"array 'waveform' holds 1 value\(s\) that are not finite"),
        ("health", np.nan, r"array 'health' holds 1 value\(s\) that are not finite"),
    ],
)
def test_a_windows_array_holding_nan_or_inf_is_refused_naming_it_and_the_window(tmp_path, array, value, said):
    # a NaN sample stopped `train maintenance` in the features with PreprocessError's traceback ("window of
    # 'Vibration' holds NaN or Inf", no file, no window); a NaN health trained the remaining-life head on NaN
    ds = _folder(tmp_path)
    arrays = _arrays()
    arrays[array] = arrays[array].astype(np.float64)
    arrays[array].reshape(len(arrays["waveform"]), -1)[2, -1] = value
    np.savez_compressed(ds / "windows.npz", **arrays)
    with pytest.raises(DatasetError, match=rf"^{ds / 'windows.npz'}: {said}.*window 2"):
        load_vibration(ds)


@pytest.mark.parametrize(
    "meta, said",
    [
        ("window_samples: 8\n", "no sample_rate_hz; give the rate the windows were sampled at"),
        ("window_samples: 8\nsample_rate_hz: 25.6 kHz\n", "sample_rate_hz is '25.6 kHz'; it is the windows'"),
        ("window_samples: 8\nsample_rate_hz: 0\n", "sample_rate_hz is 0; it is"),
        ("window_samples: 8\nsample_rate_hz: .nan\n", "sample_rate_hz is nan; it is"),
        (
            "window_samples: 8 samples\nsample_rate_hz: 1000\n",
            "window_samples is '8 samples'; it is the samples",
        ),
    ],
    ids=["missing", "text", "zero", "nan", "samples-text"],
)
def test_a_sample_rate_or_window_length_that_is_no_number_of_hz_is_refused_naming_dataset_yaml(
    tmp_path, meta, said
):
    # a dataset.yaml without sample_rate_hz (the user's own tool wrote windows.npz) trained and declared a
    # package at 10 kHz whatever the signal's rate; one written as text ended in float()'s traceback
    ds = _folder(tmp_path)
    (ds / "dataset.yaml").write_text(meta)
    np.savez_compressed(ds / "windows.npz", **_arrays())
    with pytest.raises(DatasetError, match=rf"^{ds / 'dataset.yaml'}: {said}"):
        load_vibration(ds)


@pytest.mark.parametrize("rng", ["[3000, 600]", "600-3000", "[0, 600]"])
def test_a_dataset_speed_range_that_is_not_two_rising_rpm_is_refused_naming_dataset_yaml(tmp_path, rng):
    # written as text it ended in pydantic's ValidationError traceback; reversed, it went into the package
    from cloud_trainer.train.maintenance import raw_preprocessing

    ds = _folder(tmp_path)
    (ds / "dataset.yaml").write_text(f"window_samples: 8\nsample_rate_hz: 1000\nspeed_range_rpm: {rng}\n")
    np.savez_compressed(ds / "windows.npz", **_arrays())
    with pytest.raises(DatasetError, match=rf"^{ds}/dataset.yaml: speed_range_rpm is .*; it is the slowest"):
        raw_preprocessing(load_vibration(ds))


@pytest.mark.parametrize(
    "meta",
    [
        "window_samples: 8\nsample_rate_hz: '1000'\nspeed_range_rpm: ['600', '3000']\n",
        "window_samples: '8'\nsample_rate_hz: 1e3\nspeed_range_rpm: [6e2, 3e3]\n",
    ],
    ids=["quoted", "exponent-without-sign"],
)
def test_numbers_that_yaml_reads_as_text_are_read_as_the_numbers_they_are(tmp_path, meta):
    # PyYAML reads 1e3 (YAML 1.1: the exponent's sign missing) and a quoted '1000' as text; they were read as
    # their numbers before the values were checked, and a dataset so written must still train at its rate
    from cloud_trainer.train.maintenance import raw_preprocessing

    ds = _folder(tmp_path)
    (ds / "dataset.yaml").write_text(meta)
    np.savez_compressed(ds / "windows.npz", **_arrays())
    data = load_vibration(ds)
    assert (data.window_samples, data.sample_rate_hz) == (8, 1000.0)
    pre = raw_preprocessing(data)
    assert pre.condition is not None and pre.condition.speed_range_rpm == (600.0, 3000.0)


def test_a_dataset_imported_at_20_mhz_from_its_timestamps_is_read_at_its_rate(tmp_path):
    # `dataset import` takes an NPZ run's own rate or its nanosecond timestamps' (an acoustic-emission capture);
    # bounded at 10 MHz, training refused the dataset the import had just written
    ds = _folder(tmp_path)
    (ds / "dataset.yaml").write_text("window_samples: 8\nsample_rate_hz: 20000000.0\n")
    np.savez_compressed(ds / "windows.npz", **_arrays())
    assert load_vibration(ds).sample_rate_hz == 2e7


def test_the_nan_check_allocates_no_flag_per_value_and_still_finds_the_first_window(tmp_path):
    # a flag per value cost 512 MB more at the 2 GiB a waveform may hold; NaN and Inf carry through min/max
    wf = np.zeros((256, 1024), np.float32)  # 1 MB of samples: 256 KB of flags
    tracemalloc.start()
    try:
        assert not_finite(wf) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16_384
    wf[200, 5], wf[100, 1000], wf[255, 0] = np.nan, np.inf, -np.inf
    # in whichever memory order numpy read the file, the first window counts along the windows
    assert not_finite(wf) == not_finite(np.asfortranarray(wf)) == (3, 100)
