"""A maintenance pipeline with a baseline whose model fails on its windows (NaN out).

The baseline judges the machine without the model; the pipeline dropped every window the model failed on,
baseline and all. A package whose model gives NaN (its golden NaN matches NaN, so it installs) kept the
baseline commissioning for ever: no result, a bearing fault unseen, only `nonfinite_output` counted. The
baseline now still learns and scores such a window: NG when it alarms, never OK (UNSURE naming the model's
failure) otherwise, the model's error counted as before."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from bench._bearing_signals import Machine
from devices.base import Quality, Reading
from edge_agent.config import PipelineSettings, WindowSettings
from edge_agent.maintenance.settings import BaselineSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from tests.support.models import make_keypair, make_package


async def test_a_model_giving_nan_leaves_the_baseline_to_learn_and_alarm_never_ok(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="signal", key=key, nan=True)
    slot = ModelSlot(
        "health", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [str(pub)]
    )
    await slot.start()
    m = Machine(21, fs=25600.0, n=5248, rpm=2100.0)
    settings = PipelineSettings(
        name="pump",
        source="plc",
        model="health",
        window=WindowSettings(waveform="Vibration", sample_rate_hz=25600, scalars={}),
        baseline=BaselineSettings(windows=40, speed_tag="Speed"),
    )
    results = []

    async def on_result(res, item):
        results.append(res)

    pipe = Pipeline(
        settings, slot, ThreadPoolExecutor(1), on_result, on_event=lambda e: None, data_dir=tmp_path / "data"
    )
    pipe.prepare()
    pipe.start()

    async def feed(n, severity=0.0, fault="healthy"):
        for i in range(n):
            await pipe.offer(Reading("plc", "Speed", 2100.0, 0.0, 0.0, Quality.GOOD))
            await pipe.offer(
                Reading("plc", "Vibration", m.window(severity, fault), float(i), float(i), Quality.GOOD)
            )
            while len(pipe.queue):
                await asyncio.sleep(0.005)

    try:
        await feed(50)
        await feed(4, 0.6, "bearing_outer")
    finally:
        await pipe.stop()
        await slot.stop()
    assert pipe.stats.errors["nonfinite_output"] == 54  # the model's failures, counted as before
    assert len(results) == 54, len(results)  # none on the former code: every window dropped
    assert pipe.status()["baseline"]["state"] == "ready"
    assert all(r.outputs["model_error"] == "nonfinite_output" for r in results)
    assert "OK" not in {r.verdict for r in results}
    healthy = [r for r in results[40:50] if r.verdict == "UNSURE"]
    assert healthy and all("the model failed on this window (nonfinite_output)" in r.reason for r in healthy)
    assert results[-1].verdict == "NG" and results[-1].label == "bearing_outer", results[-1]
