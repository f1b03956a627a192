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


def _package(tmp_path, key, version: str, rate_hz: float):
    model = make_signal_onnx(tmp_path / "build" / version / "model.onnx")
    spec = signal_spec("fan-level", version, sample_rate_hz=rate_hz)
    return build_package_for_tests(model, spec, tmp_path / "packages", key, golden_inputs("signal"), False)


def _pipeline(tmp_path, slot, rate_hz: float) -> Pipeline:
    settings = PipelineSettings(
        name="fan",
        source="plc",
        model="level",
        window=WindowSettings(waveform="VibRMS", sample_rate_hz=rate_hz),
        baseline=BaselineSettings(windows=20, units="mm/s"),
    )
    return Pipeline(settings, slot, ThreadPoolExecutor(1), lambda res, item: None, data_dir=tmp_path / "data")


async def test_a_baseline_on_a_one_hertz_model_is_refused_naming_the_rate(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    pkg = _package(tmp_path, key, "1.0.0", 1.0)
    slot = ModelSlot(
        "level", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [str(pub)]
    )
    await slot.start()
    try:
        with pytest.raises(SlotError, match=r"pipeline fan: .*at 1 Hz; the baseline.*200 Hz or more"):
            _pipeline(tmp_path, slot, 1.0).prepare()
    finally:
        await slot.stop()


async def test_a_one_hertz_model_swapped_in_under_a_baseline_is_refused_in_the_start_checks_words(tmp_path):
    """A fleet rollout's hot swap was not checked so: the 1-Hz package became the slot's model, every window's
    baseline failed, and the waveform model that passed the start check no longer served. Now the swap is refused
    at verify in the start check's words and the old model keeps serving."""
    key, pub = make_keypair(tmp_path / "keys")
    good = _package(tmp_path, key, "1.0.0", 1000.0)
    slow = _package(tmp_path, key, "1.1.0", 1.0)
    slot = ModelSlot(
        "level", ModelConfig(package=str(good), engine="onnxruntime"), tmp_path / "data", [str(pub)]
    )
    await slot.start()
    try:
        _pipeline(tmp_path, slot, 1000.0).prepare()
        outcome = await slot.swap(slow)
        assert not outcome.ok and outcome.stage == "verify", outcome
        assert outcome.reason is not None and outcome.reason.startswith(
            "pipeline fan: model fan-level takes its signal at 1 Hz; the baseline's condition features need a "
            "vibration waveform at 200 Hz or more"
        ), outcome.reason
        assert slot.version == "1.0.0" and slot.state == "active"
    finally:
        await slot.stop()
