"""What an OK or UNSURE result of a maintenance package names: the package's fault classifier guesses a class on
every window, the verdict is the anomaly score's (or the baseline's). An OK result names the classifier's
``ok_label``, never a fault; one the baseline does not judge (commissioning, a stop, a speed or process state not
commissioned) is UNSURE naming nothing (``label`` None, as for a sensor fault), its reason in ``reason``; the guess
stays in ``probabilities``. Real ONNX Runtime slot."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench._bearing_signals import Machine
from devices.base import Quality, Reading
from edge_agent.config import PipelineSettings, WindowSettings
from edge_agent.maintenance.settings import BaselineSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from tests.support.models import (
    build_package_for_tests,
    golden_inputs,
    make_keypair,
    make_signal_onnx,
    signal_spec,
)


@pytest.mark.parametrize("baseline", [None, BaselineSettings(windows=20)], ids=["model_alone", "baseline"])
async def test_an_ok_result_names_no_fault_the_classifier_guessed(tmp_path, baseline):
    key, pub = make_keypair(tmp_path / "keys")
    # this model's fault head puts bearing_outer first on these healthy windows; its anomaly score stays far
    # under the package's threshold: the model's verdict is OK on each
    model = make_signal_onnx(tmp_path / "build" / "model.onnx", seed=3)
    spec = signal_spec(anomaly_threshold=1000.0)
    pkg = build_package_for_tests(model, spec, tmp_path / "packages", key, golden_inputs("signal"), False)
    slot = ModelSlot(
        "health", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [str(pub)]
    )
    await slot.start()
    m = Machine(21, fs=10000.0, n=2048, rpm=1500.0)
    settings = PipelineSettings(
        name="pump",
        source="plc",
        model="health",
        window=WindowSettings(waveform="Vibration", sample_rate_hz=10000, scalars={}),
        baseline=baseline,
    )
    results = []

    async def on_result(res, item):
        results.append(res)

    pipe = Pipeline(settings, slot, ThreadPoolExecutor(1), on_result, data_dir=tmp_path / "data")
    pipe.prepare()
    pipe.start()
    n = 6 if baseline is None else 26
    for i in range(n):
        w = m.window(0.0, "healthy")
        await pipe.offer(Reading("plc", "Vibration", w, float(i), float(i), Quality.GOOD))
        while len(pipe.queue):
            await asyncio.sleep(0.005)
    await pipe.stop()
    await slot.stop()
    ok = [r for r in results if r.verdict == "OK"]
    assert len(results) == n and len(ok) >= 5
    # the classifier's guess: a fault, on every window
    assert all(max(r.probabilities, key=r.probabilities.__getitem__) == "bearing_outer" for r in ok)
    assert {r.to_json_dict()["label"] for r in ok} == {"healthy"}
    if baseline is not None:  # the first 20 windows are commissioning: UNSURE, not judged, and no fault named
        unsure = [r for r in results if r.verdict == "UNSURE"]
        assert len(unsure) == 20 and all("commissioning" in (r.reason or "") for r in unsure)
        assert {r.to_json_dict()["label"] for r in unsure} == {None}, {r.label for r in unsure}
        assert all(max(r.probabilities, key=r.probabilities.__getitem__) == "bearing_outer" for r in unsure)
