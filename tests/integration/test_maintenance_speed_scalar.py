"""A package built with `cloud-trainer build maintenance --speed-tag speed` (the shaft speed as the model's
scalar input) from historian CSVs labelled without failure times, served by a pipeline whose baseline reads the same PLC tag as its `speed_tag`: each window
carries the speed for both, and a tag in Hz (`speed_unit: hz`) reaches the model in rpm."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cloud_trainer.train.pipeline import BuildSettings, build
from cloud_trainer.train.signals import import_vibration
from devices.base import Quality, Reading
from edge_agent.config import PipelineSettings, WindowSettings
from edge_agent.maintenance.settings import BaselineSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from model_packager import load_trusted_keys
from tests.support.models import make_keypair
from tests.support.once import built_once

RATE = 10000.0
RPM = 1500.0


def machine_window(rng: np.random.Generator, t0: float, n: int, fault: str) -> np.ndarray:
    """A 1500-rpm shaft's 1x and 2x, an outer-race defect's impacts ringing a 3.1-kHz resonance, noise (g)."""
    fr = RPM / 60
    t = t0 + np.arange(n) / RATE
    x = 0.03 * (4 if fault == "imbalance" else 1) * np.sin(2 * np.pi * fr * t) + 0.01 * np.sin(
        4 * np.pi * fr * t
    )
    if fault == "bearing_outer":
        ring = np.exp(-np.arange(60) / 12) * np.sin(2 * np.pi * 3100 * np.arange(60) / RATE)
        for k in np.arange(np.ceil(t0 * 3.6 * fr), (t0 + n / RATE) * 3.6 * fr):
            i = int(round((k / (3.6 * fr) - t0) * RATE))
            x[i : i + 60] += 0.3 * ring[: len(x[i : i + 60])]
    return x + rng.normal(0, 0.006, n)


@pytest.fixture(scope="module", autouse=True)
def onnx_runtime_only():
    """The build evaluates, times and packages on ONNX Runtime only, as on a machine without OpenVINO (an
    optional extra): served on ONNX Runtime here, and each OpenVINO run of its evaluation opened the model in
    a helper process."""
    from cloud_trainer.train import pipeline

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "_engines", lambda: ["onnxruntime"])
        yield


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A maintenance package trained on historian CSVs (time, accel [g], speed [rpm]) with --speed-tag."""

    def make(tmp):
        rng = np.random.default_rng(5)
        files, rows = [], ["run,fault"]
        for i, fault in enumerate(
            ["healthy", "imbalance", "bearing_outer", "healthy", "imbalance", "bearing_outer"]
        ):
            x = machine_window(rng, 0.0, 8 * 2048, fault)
            t = np.arange(len(x)) / RATE
            path = tmp / f"r{i}.csv"
            path.write_text(
                "time,accel [g],speed [rpm]\n"
                + "".join(
                    f"{a:.5f},{b:.6f},{RPM + c:.2f}\n"
                    for a, b, c in zip(t, x, rng.normal(0, 1, len(x)), strict=True)
                )
            )
            files.append(path)
            rows.append(f"r{i},{fault}")
        (tmp / "labels.csv").write_text("\n".join(rows) + "\n")
        import_vibration(files, tmp / "ds", tmp / "labels.csv", channel="accel", speed_channel="speed")
        key, pub = make_keypair(tmp / "keys")
        out = build(
            BuildSettings(
                family="maintenance",
                dataset=tmp / "ds",
                registry=tmp / "registry",
                signing_key=key,
                workdir=tmp / "work",
                epochs=5,
                threads=1,
                speed_tag="speed",
                floors={"anomaly_auroc": 0.0, "fault_accuracy": 0.0},
                int8_margin=1.0,
                int8_min_agreement=0.0,
                int8_max_deviation=1e3,
                calibration=16,
                openvino=False,  # served on ONNX Runtime here: no OpenVINO form built
            ),
            log=lambda msg: None,
        )
        return out["package"], pub, out["report"]

    return built_once(tmp_path_factory, "maintenance-speed-scalar", make)


async def _pump(
    tmp_path, package, baseline, feed: list[tuple[float, float, np.ndarray]]
) -> tuple[list, dict]:
    """The package served by a pump's pipeline (speed scalar ``speed`` from tag ``Speed``), fed ``feed``'s
    ``(time, speed, vibration window)`` in turn, each one's result awaited (or the pipeline's first error): the
    results and the pipeline's status at the end."""
    pkg, pub, _ = package
    slot = ModelSlot(
        "health",
        ModelConfig(package=str(pkg), engine="onnxruntime"),
        tmp_path / "data",
        load_trusted_keys([pub]),  # loaded: installed in this process, no install child (not judged here)
    )
    await slot.start()
    results: list = []

    async def on_result(res, item):
        results.append(res)

    settings = PipelineSettings(
        name="pump",
        source="plc",
        model="health",
        window=WindowSettings(waveform="Vibration", scalars={"speed": "Speed"}),
        baseline=baseline,
    )
    pipe = Pipeline(settings, slot, ThreadPoolExecutor(1), on_result, data_dir=tmp_path / "data")
    pipe.prepare()
    pipe.start()
    try:
        for k, (t, speed, x) in enumerate(feed):
            await pipe.offer(Reading("plc", "Speed", speed, t, t, Quality.GOOD))
            await pipe.offer(Reading("plc", "Vibration", x, t, t, Quality.GOOD))
            for _ in range(15000):
                if len(results) > k or pipe.status()["errors"]:
                    break
                await asyncio.sleep(0.002)
    finally:
        status = pipe.status()
        await pipe.stop()
        await slot.stop()
    return results, status


async def _results(tmp_path, package, baseline, speed_value: float) -> list:
    rng = np.random.default_rng(9)
    feed = [(10.0 * k, speed_value, machine_window(rng, 10.0 * k, 2048, "healthy")) for k in range(24)]
    results, status = await _pump(tmp_path, package, baseline, feed)
    assert not status["errors"], status["errors"]  # every window dropped as lacking the model's speed
    return results


def model_outputs(results: list) -> np.ndarray:
    """The model's own outputs per window (a baseline's verdict replaces the result's score, not these)."""
    return np.array(
        [np.concatenate([np.ravel(r.outputs[k]) for k in ("anomaly_score", "fault_logits")]) for r in results]
    )


async def test_the_baseline_speed_tag_that_is_also_the_models_speed_scalar_feeds_both(tmp_path, package):
    """The tag went under the baseline's name only: every window was dropped (`bad_input`: "window lacks the
    shaft speed scalar 'speed' that the model needs"), no result at all."""
    alone = await _results(tmp_path / "a", package, None, RPM)
    both = await _results(tmp_path / "b", package, BaselineSettings(windows=20, speed_tag="Speed"), RPM)
    assert len(alone) == len(both) == 24
    assert all(r.remaining_life is None for r in alone)  # trained without failure times: no remaining life
    # the model saw the same speed either way: its outputs are the same window by window
    assert np.allclose(model_outputs(both), model_outputs(alone), atol=1e-5)
    assert both[-1].outputs["baseline"]["state"] == "ready"
    hz = await _results(
        tmp_path / "c", package, BaselineSettings(windows=20, speed_tag="Speed", speed_unit="hz"), RPM / 60
    )
    assert np.allclose(model_outputs(hz), model_outputs(alone), atol=1e-5)  # the model read rpm


def test_a_dataset_labelled_without_failure_times_passes_the_gate(package):
    """Fault labels without `failure_s` (no run to failure in the history): the gate held the remaining
    life's error against the naive mean's, NaN against NaN, and refused every such build ("remaining-life
    MAE nans does not beat the naive mean nans"; only --force, which skips the whole gate, built it)."""
    report = package[2]
    assert report["gate"]["passed"], report["gate"]["reasons"]
    # not measured: null in report.json (strict JSON)
    assert report["metrics"]["fp32"]["rul_mae_naive_s"] is None


def test_a_package_trained_without_failure_times_states_no_remaining_life(package):
    """Its remaining-life head learned nothing (no window had a failure time), and the package still declared
    the output: some 400 s on every window, healthy or not. It declares none now: results carry no
    remaining life (a baseline's trend gives one on site)."""
    from model_packager import read_manifest

    outputs = {o.name for o in read_manifest(package[0]).outputs}
    assert outputs == {"anomaly_score", "fault_logits"}


@pytest.mark.parametrize("speed", [0.0, float("nan")], ids=["zero", "nan"])
async def test_a_speed_scalar_reading_no_speed_is_not_judged_by_the_model_alone(
    tmp_path, package, speed, caplog
):
    """The PLC's speed tag reads 0 (a machine at rest, or a tag that reads 0 while it runs) or NaN: the model
    fell back to estimating the speed from the spectrum, which it was not trained on, without a word; on a
    machine at rest (the sensor's noise alone) it gave NG, bearing_outer. Not judged now: UNSURE, named,
    counted."""
    rng = np.random.default_rng(9)
    feed = []
    for k in range(6):
        at_rest = k % 2 == 1  # the machine at rest: the sensor's noise only
        x = rng.normal(0, 0.0005, 2048) if at_rest else machine_window(rng, 10.0 * k, 2048, "healthy")
        feed.append((10.0 * k, speed, x))
    feed.append((60.0, RPM, machine_window(rng, 60.0, 2048, "healthy")))
    results, status = await _pump(tmp_path, package, None, feed)
    assert len(results) == 7 and not status["errors"]
    shown = "nan" if speed != speed else "0"
    for r in results[:6]:
        assert (r.verdict, r.label) == ("UNSURE", None), (r.verdict, r.label)
        assert r.reason.startswith(f"speed scalar 'speed' reads {shown} rpm"), r.reason
    assert results[6].verdict == "OK" and results[6].reason is None  # a speed again: judged
    said = status["silent_drops"]["model_speed_unusable"]
    assert said["count"] == 6 and "tag 'Speed'" in said["message"], said
    assert (
        sum("model_speed" in r.getMessage() or "speed scalar" in r.getMessage() for r in caplog.records) == 1
    )
