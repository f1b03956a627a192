"""An NPZ is a zip of ``.npy`` members and the user's file: a vibration dataset's ``windows.npz`` and a run
``dataset import --kind vibration`` reads. numpy inflated and allocated whatever its members declared, so a zip
bomb of a few hundred KB of deflated zeros filled the shared trainer's memory (every tenant's jobs with it).
Each is now refused from the zip's declared sizes and the ``.npy`` headers, naming the file and the member,
before anything is inflated or allocated; a header declaring more than its member holds is refused too."""

from __future__ import annotations

import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cloud_trainer.train.data as D
from cloud_trainer.train.data import DatasetError, load_vibration
from cloud_trainer.train.signals import read_npz
from tests.unit.test_vibration_windows_damaged import _arrays

MIB = 1 << 20


def _npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    head = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}"
    head += " " * (63 - (10 + len(head)) % 64) + "\n"  # to a multiple of 64 bytes, as numpy writes it
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode("latin1")


def _bomb(path: Path, member: str, mib: int, small: dict[str, np.ndarray]) -> None:
    """``small`` as numpy writes them, and ``member``: an array of ``mib`` MiB of float64 zeros, deflated
    (a few hundred KB on disk); written a MiB at a time, so the test itself takes no such memory."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, a in small.items():
            with zf.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, a, allow_pickle=False)
        with zf.open(f"{member}.npy", "w", force_zip64=True) as f:
            f.write(_npy_header((mib * MIB // 64, 8)))
            zeros = bytes(MIB)
            for _ in range(mib):
                f.write(zeros)


def _declaring(path: Path, arrays: dict[str, np.ndarray], member: str, size: int) -> None:
    """A zip whose directory declares ``size`` bytes uncompressed for ``member`` (its data a few bytes)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, a in arrays.items():
            with zf.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, a, allow_pickle=False)
    data = bytearray(path.read_bytes())
    name = f"{member}.npy".encode()
    # the member's local header and its central directory entry: (signature, where its uncompressed size
    # lies, where its name starts)
    for sig, at, named in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        i = data.find(sig)
        while data[i + named : i + named + len(name)] != name:
            i = data.find(sig, i + 4)
        struct.pack_into("<I", data, i + at, size)
    path.write_bytes(bytes(data))


def _dataset(tmp_path: Path) -> Path:
    ds = tmp_path / "vib"
    ds.mkdir()
    (ds / "dataset.yaml").write_text("window_samples: 8\nsample_rate_hz: 1000\n")
    return ds


def _peak(fn) -> tuple[BaseException | None, int]:
    """What ``fn()`` raised, and the most memory (Python's and numpy's) it held at once."""
    tracemalloc.start()
    try:
        fn()
        raised = None
    except Exception as exc:  # handed back to the test
        raised = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return raised, peak


def test_a_zip_bomb_windows_file_is_refused_naming_its_member_before_it_is_inflated(tmp_path, monkeypatch):
    # the limit lowered to 64 MiB, so that the bomb (128 MiB inflated) is quick to make and, on code that
    # inflated it, the test took 128 MiB rather than gigabytes
    monkeypatch.setattr(D, "NPZ_MAX_BYTES", 64 * MIB, raising=False)
    ds = _dataset(tmp_path)
    windows = _arrays()
    del windows["waveform"]
    _bomb(ds / "windows.npz", "waveform", 128, windows)
    assert (ds / "windows.npz").stat().st_size < 1 * MIB
    raised, peak = _peak(lambda: load_vibration(ds))
    assert isinstance(raised, DatasetError)
    said = str(raised)
    assert said.startswith(f"{ds / 'windows.npz'}: member 'waveform.npy' declares 134,217,8"), said
    assert f"more than the {64 * MIB:,} an NPZ may hold; refused unread" in said
    assert peak < 32 * MIB, peak  # nothing of the 128 MiB allocated (reading dataset.yaml takes 16)


def test_a_zip_bomb_run_is_refused_by_the_import_before_it_is_inflated(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "NPZ_MAX_BYTES", 64 * MIB, raising=False)
    run = tmp_path / "run1.npz"
    _bomb(run, "accel_x", 128, {"sample_rate_hz": np.float64(10000.0)})
    raised, peak = _peak(lambda: read_npz(run, None))
    assert isinstance(raised, DatasetError)
    assert str(raised).startswith(f"{run}: member 'accel_x.npy' declares 134,217,8"), str(raised)
    assert peak < 32 * MIB, peak


def test_a_member_declaring_more_than_the_limit_is_refused_from_the_zip_directory(tmp_path):
    # the limit as shipped: a directory entry of 3 GiB (the data a few bytes) is refused from it alone
    ds = _dataset(tmp_path)
    _declaring(ds / "windows.npz", _arrays(), "health", 3 << 30)
    with pytest.raises(DatasetError) as ei:
        load_vibration(ds)
    assert str(ei.value).startswith(
        f"{ds / 'windows.npz'}: member 'health.npy' declares 3,221,225,472 bytes uncompressed"
    )
    assert f"more than the {D.NPZ_MAX_BYTES:,} an NPZ may hold" in str(ei.value)


def test_members_declaring_more_than_the_limit_together_are_refused_naming_the_one_over_it(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(D, "NPZ_MAX_BYTES", 3 * MIB, raising=False)
    run = tmp_path / "run1.npz"
    np.savez_compressed(run, accel_x=np.zeros(MIB // 8 * 2), accel_y=np.zeros(MIB // 8 * 2))
    with pytest.raises(DatasetError) as ei:
        read_npz(run, 10000.0)
    assert str(ei.value).startswith(
        f"{run}: member 'accel_y.npy' declares 2,097,280 bytes uncompressed (4,194,560 with the members before it), more than the 3,145,728"
    )


def test_a_header_declaring_more_than_its_member_holds_is_refused_unallocated(tmp_path):
    """A 1-GiB array in a member of a few hundred bytes: numpy allocated the header's gigabyte first."""
    ds = _dataset(tmp_path)
    with zipfile.ZipFile(ds / "windows.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, a in _arrays().items():
            with zf.open(f"{name}.npy", "w") as f:
                if name == "waveform":
                    f.write(_npy_header((1 << 24, 8)) + bytes(256))
                else:
                    np.lib.format.write_array(f, a, allow_pickle=False)
    raised, peak = _peak(lambda: load_vibration(ds))
    assert isinstance(raised, DatasetError)
    assert str(raised).startswith(
        f"{ds / 'windows.npz'}: member 'waveform.npy' declares an array of shape (16777216, 8) "
        "(1,073,741,824 bytes) in 384 bytes; refused unread"
    ), str(raised)
    assert peak < 32 * MIB, peak


def test_arrays_within_the_limit_are_read_as_numpy_wrote_them(tmp_path):
    arrays = {
        "a": np.arange(6, dtype=">i4").reshape(2, 3),
        "f": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "s": np.asarray(["x", "yy"]),
        "e": np.zeros((0, 4)),
        "r": np.float64(3.5),
        "st": np.zeros(3, dtype=[("x", "<i4"), ("y", "<f8")]),
    }
    np.savez_compressed(tmp_path / "x.npz", **arrays)
    got = D.npz_arrays(tmp_path / "x.npz", tmp_path / "x.npz")
    assert list(got) == list(arrays)
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape and np.array_equal(got[k], a), k
    assert got["f"].flags.f_contiguous
