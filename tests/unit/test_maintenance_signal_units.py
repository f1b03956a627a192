"""The unit a historian's header names for the signal (`accel [m/s2]`, `velocity [mm/s]`) reaches the
maintenance package: `dataset import --kind vibration` records it in dataset.yaml, and `build maintenance`
computes the condition features in it (g or m/s2) or refuses a signal that is no acceleration. Before, the
unit was read (runs in different units were refused) and dropped: every package declared g, a velocity
sensor's mm/s and a voltage were trained on as acceleration, and nothing in the package said what the
model was trained in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from cloud_trainer.train.data import DatasetError, load_vibration
from cloud_trainer.train.maintenance import raw_preprocessing
from cloud_trainer.train.signals import import_vibration

RATE = 10000.0


def _dataset(tmp_path: Path, header: str) -> Path:
    rng = np.random.default_rng(3)
    t = np.arange(4096) / RATE
    (tmp_path / "runs").mkdir()
    for run, amp in (("m1_healthy", 1.0), ("m1_imbalance", 6.0)):
        x = amp * 0.05 * np.sin(2 * np.pi * 24.6 * t) + 0.01 * rng.standard_normal(t.size)
        rows = [f"time,{header}"] + [f"{a:.6f},{b:.6f}" for a, b in zip(t, x, strict=True)]
        (tmp_path / "runs" / f"{run}.csv").write_text("\n".join(rows) + "\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("run,fault,start_s,end_s,failure_s\nm1_healthy,healthy,,,\nm1_imbalance,imbalance,,,\n")
    out = tmp_path / "ds"
    import_vibration(sorted((tmp_path / "runs").glob("*.csv")), out, labels)
    return out


@pytest.mark.parametrize(("header", "units"), [("accel [m/s^2]", "m/s2"), ("accel [g]", "g"), ("accel", "g")])
def test_an_acceleration_is_packaged_in_the_unit_its_header_names(tmp_path, header, units):
    ds = _dataset(tmp_path, header)
    meta = yaml.safe_load((ds / "dataset.yaml").read_text())
    assert meta.get("units") == ({"waveform": header.split("[")[1].rstrip("]")} if "[" in header else None)
    pre = raw_preprocessing(load_vibration(ds))
    assert pre.condition is not None and pre.condition.units == units


def test_a_dataset_stating_a_unit_per_array_as_the_simulators_do_is_read_by_its_waveforms(tmp_path):
    """dataset.yaml's ``units`` is a unit per array (``waveform: g``, ``temperature: degC``): the import writes the
    signal's there too, and build maintenance reads the waveform's (it took the whole mapping for the signal's
    unit and refused every simulator dataset, the demo's among them)."""
    from simulators.vibration import write_dataset

    ds = write_dataset(tmp_path / "sim", n_runs=5, windows_per_run=2, seed=1, window_samples=1024)
    assert yaml.safe_load((ds / "dataset.yaml").read_text())["units"]["waveform"] == "g"
    pre = raw_preprocessing(load_vibration(ds))
    assert pre.condition is not None and pre.condition.units == "g"
    meta = yaml.safe_load((ds / "dataset.yaml").read_text())
    meta["units"]["waveform"] = "mm/s"
    (ds / "dataset.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(DatasetError, match="in 'mm/s', not an acceleration"):
        raw_preprocessing(load_vibration(ds))


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("velocity [mm/s]", "a velocity sensor's"),
        ("accel [mV]", "a voltage"),
        ("accel [mg]", "divide it by 1000"),
    ],
)
def test_a_signal_that_is_no_acceleration_is_refused_by_the_condition_features_naming_its_unit(
    tmp_path, header, why
):
    ds = _dataset(tmp_path, header)
    unit = header.split("[")[1].rstrip("]")
    with pytest.raises(DatasetError, match="not an acceleration") as e:
        raw_preprocessing(load_vibration(ds))
    assert f"in {unit!r}" in str(e.value) and why in str(e.value) and "dataset.yaml" in str(e.value)
    raw_preprocessing(load_vibration(ds), features="bands")  # band energies take any signal, as before


def test_a_pipeline_reading_its_sensor_in_another_unit_than_its_models_is_a_warning_naming_both(tmp_path):
    """A package built on m/s2 computes its features as from m/s2; a pipeline whose baseline reads its sensor
    in g (or mm/s) hands it other numbers: validate says so, naming the pipeline, both units and the model."""
    from edge_agent.config import parse_config
    from tests.support.models import (
        SIGNAL_FEATURES,
        build_package_for_tests,
        make_keypair,
        make_signal_onnx,
        signal_spec,
    )

    key, pub = make_keypair(tmp_path / "keys")
    n = SIGNAL_FEATURES + 2
    spec = signal_spec("machine-health-ms2")
    spec["inputs"][0]["shape"] = ["batch", n]
    spec["preprocessing"]["condition"] = {"names": ["order_1x", "env_bpfo"], "units": "m/s2"}
    model = make_signal_onnx(tmp_path / "build" / "model.onnx", n_features=n)
    inputs = {"features": np.random.default_rng(0).normal(0, 1, (4, n)).astype(np.float32)}
    package = build_package_for_tests(model, spec, tmp_path / "packages", key, inputs, False)

    def config(units: str) -> dict:
        return {
            "agent": {"id": "gw1"},
            "trusted_keys": [str(pub)],
            "sources": {
                "plc": {
                    "type": "opcua",
                    "endpoint": "opc.tcp://127.0.0.1:4840/",
                    "nodes": [{"node_id": "ns=2;s=M.Vibration"}],
                }
            },
            "models": {"health": {"package": str(package)}},
            "pipelines": [
                {
                    "name": "pump1",
                    "source": "plc",
                    "model": "health",
                    "window": {"waveform": "Vibration"},
                    "baseline": {"units": units},
                }
            ],
        }

    assert parse_config(config("m/s2"), "line3.yaml").warnings == []
    for units in ("g", "mm/s"):
        w = parse_config(config(units), "line3.yaml").warnings
        assert len(w) == 1 and w[0].startswith("line3.yaml: pipelines[0].baseline.units: "), w
        assert f"{units}, but model machine-health-ms2 was built on a signal in m/s2" in w[0]
