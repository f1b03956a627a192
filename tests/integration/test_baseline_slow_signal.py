"""A pipeline's baseline on a model of a slow signal (a package built with --signal-features bands from a
historian's 1-Hz overall level, a 4-20 mA vibration transmitter's mm/s RMS) is refused when the pipeline is
prepared, naming the pipeline, the rate and what to do. The baseline's condition features need a waveform: it
was taken, every window's baseline failed in numpy's words ('the baseline could not score a window: attempt to
get argmax of an empty sequence', once), and the results were the package's own verdicts, judged without the
asset's commissioning the pipeline asked for."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from edge_agent.config import PipelineSettings, WindowSettings
from edge_agent.maintenance.settings import BaselineSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot, SlotError
from edge_agent.pipelines import Pipeline
from tests.support.models import (
    build_package_for_tests,
    golden_inputs,
    make_keypair,
    make_signal_onnx,
    signal_spec,
)


async def test_a_baseline_on_a_one_hertz_model_is_refused_naming_the_rate(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    model = make_signal_onnx(tmp_path / "build" / "model.onnx")
    spec = signal_spec("fan-level", sample_rate_hz=1.0)
    pkg = build_package_for_tests(model, spec, tmp_path / "packages", key, golden_inputs("signal"), False)
    slot = ModelSlot(
        "level", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [str(pub)]
    )
    await slot.start()
    try:
        settings = PipelineSettings(
            name="fan",
            source="plc",
            model="level",
            window=WindowSettings(waveform="VibRMS", sample_rate_hz=1.0),
            baseline=BaselineSettings(windows=20, units="mm/s"),
        )
        pipe = Pipeline(
            settings, slot, ThreadPoolExecutor(1), lambda res, item: None, data_dir=tmp_path / "data"
        )
        with pytest.raises(SlotError, match=r"pipeline fan: .*at 1 Hz; the baseline.*200 Hz or more"):
            pipe.prepare()
    finally:
        await slot.stop()
