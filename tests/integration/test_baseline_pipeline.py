"""A signal pipeline with a baseline on a real ONNX Runtime slot: a 25.6 kHz tag resampled into the
10 kHz model, commissioning results UNSURE, then OK on healthy windows and NG with the fault family
once a bearing fault shows; events recorded; the status carries the baseline's progress and date; a
``temperature_tag`` rides with the windows and the baseline learns the running temperature."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bench._bearing_signals import Machine
from devices.base import Quality, Reading
from edge_agent.config import PipelineSettings, WindowSettings
from edge_agent.maintenance.settings import BaselineSettings, BearingSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from tests.support.models import make_keypair, make_package


async def test_commissioning_then_scoring_through_the_pipeline(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="signal", key=key)
    slot = ModelSlot(
        "health", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [str(pub)]
    )
    await slot.start()
    m = Machine(21, fs=25600.0, n=5248, rpm=2100.0)
    b = m.bearing
    settings = PipelineSettings(
        name="pump",
        source="plc",
        model="health",
        window=WindowSettings(waveform="Vibration", sample_rate_hz=25600, scalars={}),
        baseline=BaselineSettings(
            windows=40,
            speed_tag="Speed",
            temperature_tag="BearingTemp",
            bearing=BearingSettings(
                n_elements=b.n_elements,
                ball_d_mm=b.ball_d_mm,
                pitch_d_mm=b.pitch_d_mm,
                contact_angle_deg=b.contact_angle_deg,
            ),
        ),
    )
    results, events = [], []

    async def on_result(res, item):
        results.append(res)

    pipe = Pipeline(
        settings, slot, ThreadPoolExecutor(1), on_result, on_event=events.append, data_dir=tmp_path / "data"
    )
    pipe.prepare()
    pipe.start()

    async def feed(n, severity=0.0, fault="healthy"):
        for i in range(n):
            await pipe.offer(Reading("plc", "Speed", 2100.0, 0.0, 0.0, Quality.GOOD))
            await pipe.offer(Reading("plc", "BearingTemp", 48.0, 0.0, 0.0, Quality.GOOD))
            await pipe.offer(
                Reading("plc", "Vibration", m.window(severity, fault), float(i), float(i), Quality.GOOD)
            )
            while len(pipe.queue):
                await asyncio.sleep(0.005)

    await feed(40)
    await feed(20)
    await feed(6, 0.6, "bearing_outer")
    await pipe.stop()
    await slot.stop()
    assert len(results) == 66
    assert {r.verdict for r in results[:39]} == {"UNSURE"}
    healthy = results[40:60]
    assert sum(r.verdict == "NG" for r in healthy) <= 1
    assert results[-1].verdict == "NG" and results[-1].label == "bearing_outer"
    assert results[-1].outputs["baseline"]["speed_estimated"] is False
    assert np.isfinite(results[-1].score) and "fault_logits" in results[-1].outputs
    kinds = [e["kind"] for e in events]
    assert "baseline_learning" in kinds and "baseline_learned" in kinds
    st = pipe.status()["baseline"]
    assert st["state"] == "ready" and st["learned_at"] and st["progress"] == 1.0
    assert st["temp_running"] == 48.0  # the temperature tag reached the baseline with each window
