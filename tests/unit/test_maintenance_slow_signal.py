"""A historian's 1-Hz overall level (a 4-20 mA vibration transmitter's mm/s RMS, logged once a second) imported
with `dataset import --kind vibration` is a valid dataset, but it holds no waveform: `build maintenance`'s
condition features (shaft orders, envelope, velocity over 10-1000 Hz) cannot be computed from it. It was taken,
and the build ended in numpy's traceback ('attempt to get argmax of an empty sequence') from the speed search.
Now the condition features refuse it in one line naming the rate and the choice (--signal-features bands)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_trainer.train.data import DatasetError, load_vibration
from cloud_trainer.train.maintenance import raw_preprocessing
from cloud_trainer.train.signals import import_vibration


def _overall_level(tmp_path: Path) -> Path:
    rng = np.random.default_rng(4)
    (tmp_path / "runs").mkdir()
    for run, level in (("fan_healthy", 2.0), ("fan_imbalance", 6.0)):
        x = level + 0.1 * rng.standard_normal(256)
        rows = ["time,rms"] + [f"{k:.1f},{v:.4f}" for k, v in enumerate(x)]
        (tmp_path / "runs" / f"{run}.csv").write_text("\n".join(rows) + "\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("run,fault\nfan_healthy,healthy\nfan_imbalance,imbalance\n")
    out = tmp_path / "ds"
    import_vibration(sorted((tmp_path / "runs").glob("*.csv")), out, labels, window_samples=64)
    return out


def test_a_one_hertz_overall_level_is_refused_by_the_condition_features_naming_its_rate(tmp_path):
    data = load_vibration(_overall_level(tmp_path))
    assert data.sample_rate_hz == 1.0
    with pytest.raises(DatasetError, match=r"sampled at 1 Hz.*--signal-features bands"):
        raw_preprocessing(data)
    pre = raw_preprocessing(data, features="bands")  # the level's own statistics: taken as it is
    assert pre.condition is None and pre.sample_rate_hz == 1.0
