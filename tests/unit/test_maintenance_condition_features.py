"""The maintenance trainer's condition features (cloud_trainer.train.maintenance) reach the agent intact.

A package whose manifest declares ``condition`` features (relative amplitudes, a bearing's geometry,
the shaft speed from a scalar tag) is opened in a real ``ModelSlot`` (ONNX Runtime): the agent's
features and outputs equal the trainer's for the same windows; a window without the speed tag, a
dataset without per-window speeds and a malformed bearing are refused with one clear line.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench._bearing_signals import FAULTS, Machine
from cloud_trainer.train import maintenance
from cloud_trainer.train.data import DatasetError, VibrationData
from model_packager.condition import AMPLITUDE_FEATURES, FEATURES
from model_packager.manifest import SignalPreprocessing
from tests.support.models import build_package_for_tests, make_keypair, make_signal_onnx, signal_spec


def _data(speed: bool = True, meta: dict | None = None) -> VibrationData:
    waves, fault, rpm = [], [], []
    for seed in (7, 8):
        m = Machine(seed)
        for j, f in enumerate(FAULTS):
            for s in (0.5, 1.0):
                waves.append(m.window(s if j else 0.0, f))
                fault.append(j)
                rpm.append(m.rpm)
    n = len(waves)
    return VibrationData(
        np.asarray(waves, np.float32),
        np.asarray(fault),
        np.ones(n, np.float32),
        np.full(n, np.nan),
        np.arange(n) // 2,
        np.zeros(n),
        2048,
        10000.0,
        "test",
        np.asarray(rpm) if speed else None,
        meta or {},
        "/data/vib",
    )


def test_a_condition_package_runs_in_the_agent_exactly_as_trained(tmp_path):
    import onnxruntime as ort

    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import InferenceError, ModelSlot
    from edge_agent.types import Window

    d = _data(meta={"bearing": {"n_elements": 9, "ball_d_mm": 7.94, "pitch_d_mm": 39.04}})
    raw = maintenance.raw_preprocessing(d, speed_tag="Speed")
    assert (
        raw.condition is not None
        and raw.condition.relative
        and raw.condition.bearing == (9, 7.94, 39.04, 0.0)
    )
    assert raw.n_bands == 0 and raw.n_features == len(FEATURES)
    f = maintenance.features(d.waveforms, raw, d.speed_rpm)
    mean, std = f.mean(0), f.std(0) + 1e-6
    pre = raw.model_copy(update={"mean": mean.astype(float).tolist(), "std": std.astype(float).tolist()})
    x = ((f - mean) / std).astype(np.float32)
    # relative amplitudes: a sensor with twice the gain gives the same amplitude features
    g = maintenance.features(2 * d.waveforms[:3], raw, d.speed_rpm[:3])
    amp = [FEATURES.index(k) for k in AMPLITUDE_FEATURES]
    np.testing.assert_allclose(g[:, amp], f[:3, amp], atol=1e-4)

    model = make_signal_onnx(tmp_path / "m.onnx", n_features=len(FEATURES))
    spec = signal_spec()
    spec["inputs"][0]["shape"] = ["batch", len(FEATURES)]
    spec["preprocessing"] = pre.model_dump(mode="json")
    key, pub = make_keypair(tmp_path / "keys")
    pkg = build_package_for_tests(model, spec, tmp_path / "pkgs", key, {"features": x[:4]}, False)
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"features": x})
    slot = ModelSlot("health", ModelConfig(package=str(pkg)), tmp_path / "agent", [pub])

    async def run():
        await slot.start()
        try:
            got = [
                slot.infer(Window("plc", i, 0, 0, w.astype(np.float64), {"Speed": float(r)}))
                for i, (w, r) in enumerate(zip(d.waveforms, d.speed_rpm, strict=True))
            ]
            with pytest.raises(InferenceError, match="shaft speed scalar 'Speed'"):
                slot.infer(Window("plc", 99, 0, 0, d.waveforms[0].astype(np.float64), {}))
            return got
        finally:
            await slot.stop()

    got = asyncio.run(run())
    # the agent's validate asks the pipeline's window to carry the speed the package needs
    from edge_agent.config import ConfigError, parse_config
    from tests.support.models import make_package
    from tests.unit.test_agent_config import good

    d2 = good(
        {"pub": str(pub), "vision": str(make_package(tmp_path, kind="vision", key=key)), "signal": str(pkg)}
    )
    with pytest.raises(ConfigError) as ei:
        parse_config(d2, "line3.yaml")
    assert any(
        "pipelines[1].window.scalars: model machine-health needs scalar input 'Speed'" in e
        for e in ei.value.errors
    ), ei.value.errors
    d2["sources"]["plc"]["nodes"].append({"node_id": "ns=2;s=M.Speed"})
    d2["pipelines"][1]["window"]["scalars"] = ["Speed"]
    parse_config(d2, "line3.yaml")
    np.testing.assert_allclose(
        np.concatenate([r.outputs["anomaly_score"] for r in got]), want[0], rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        np.concatenate([r.outputs["fault_logits"] for r in got]), want[1], rtol=1e-4, atol=1e-5
    )


def test_the_trainer_refuses_what_condition_features_need_and_lack():
    with pytest.raises(
        DatasetError, match=r"--speed-tag Speed: /data/vib/windows.npz has no per-window 'speed_rpm'"
    ):
        maintenance.raw_preprocessing(_data(speed=False), speed_tag="Speed")
    with pytest.raises(DatasetError, match=r"/data/vib/dataset.yaml: bearing: .* is not a bearing"):
        maintenance.raw_preprocessing(_data(meta={"bearing": [9, 40.0, 39.0]}))
    with pytest.raises(DatasetError, match=r"--bearing: expected n_elements, ball_d_mm, pitch_d_mm"):
        maintenance.raw_preprocessing(_data(), bearing=["nine", 7.9, 39.0])
    with pytest.raises(DatasetError, match="apply to --signal-features condition, not bands"):
        maintenance.raw_preprocessing(_data(), features="bands", speed_tag="Speed")
    bands = maintenance.raw_preprocessing(
        _data(), features="bands"
    )  # the older packages' features, unchanged
    assert bands.condition is None and bands.n_features == 68
    with pytest.raises(ValueError, match="no features"):
        SignalPreprocessing(window_samples=2048, sample_rate_hz=1e4, n_bands=0, time_features=False)


def test_import_records_speed_and_bearing_that_the_trainer_then_uses(tmp_path):
    from cloud_trainer.train.data import load_vibration
    from cloud_trainer.train.signals import import_vibration

    m = Machine(3)
    for run, f in (("pump1", "healthy"), ("pump2", "bearing_outer")):
        x = np.concatenate([m.window(1.0 if f != "healthy" else 0.0, f) for _ in range(2)])
        np.savez(tmp_path / f"{run}.npz", speed=np.full(len(x), m.rpm), accel=x, sample_rate_hz=10000.0)
    (tmp_path / "labels.csv").write_text(
        "run,fault,start_s,end_s,failure_s\npump1,healthy,,,\npump2,bearing_outer,,,\n"
    )
    with pytest.raises(DatasetError, match="--bearing: expected n_elements"):
        import_vibration(
            sorted(tmp_path.glob("*.npz")), tmp_path / "ds", tmp_path / "labels.csv", bearing=["9", "x", "3"]
        )
    import_vibration(
        sorted(tmp_path.glob("*.npz")),
        tmp_path / "ds",
        tmp_path / "labels.csv",
        speed_channel="speed",
        bearing=[m.bearing.n_elements, m.bearing.ball_d_mm, m.bearing.pitch_d_mm],
    )
    d = load_vibration(tmp_path / "ds")
    assert d.speed_rpm is not None and np.allclose(d.speed_rpm, m.rpm) and len(d.speed_rpm) == 4
    pre = maintenance.raw_preprocessing(d, speed_tag="Speed")
    assert pre.condition is not None and pre.condition.bearing == (
        m.bearing.n_elements,
        m.bearing.ball_d_mm,
        m.bearing.pitch_d_mm,
        0.0,
    )
    assert np.allclose(
        d.waveforms[0], np.load(tmp_path / "pump1.npz")["accel"][:2048]
    )  # the vibration, not the speed
