"""A model's ``remaining_life`` below 0, or far out of any machine's range.

A regression model near the failure it predicts overshoots it (-3 h): the value was published as it was, a
negative remaining life on MQTT, in the outbox and to PLCs (an unsigned register refuses it). Such a value is
now published as 0 (due now), the model's own value kept in ``outputs`` (its output, and
``remaining_life_below_zero``, the flag). A broken model's -1e30 (or a life past a century either way) is
not a remaining life: refused at build like the class_probs precedent, and a live item giving one is the
model's error (``model_error``: an UNSURE result naming it)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from devices.base import Quality, Reading
from edge_agent.config import PipelineSettings, WindowSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import InferenceError, ModelSlot
from edge_agent.pipelines import Pipeline
from edge_agent.types import Window
from model_packager import GoldenError, build_package
from tests.support.models import (
    SIGNAL_RATE_HZ,
    SIGNAL_WINDOW,
    golden_inputs,
    make_keypair,
    make_signal_onnx,
    signal_spec,
)


def _life_of(src, out, life: float):
    """The signal model whose ``remaining_life`` is ``life`` on every item (its own life head times 0)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    for n in g.node:
        n.output[:] = ["life0" if o == "remaining_life" else o for o in n.output]
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
            numpy_helper.from_array(np.array([life], np.float32), "life"),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Mul", ["life0", "zero"], ["life1"]),
            helper.make_node("Add", ["life1", "life"], ["remaining_life"]),
        ]
    )
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


@pytest.mark.parametrize("life", [-1e30, 1e30, -1e6])
def test_a_remaining_life_beyond_a_century_either_way_is_refused_at_build_naming_it(tmp_path, life):
    key, _ = make_keypair(tmp_path / "keys")
    model = _life_of(make_signal_onnx(tmp_path / "src.onnx"), tmp_path / "model.onnx", life)
    with pytest.raises(GoldenError) as ei:
        build_package(
            model, signal_spec(), tmp_path / "out", signing_key=key, golden_inputs=golden_inputs("signal")
        )
    msg = str(ei.value)
    assert (
        f"output 'remaining_life' (remaining_life) gives {np.float32(life):.6g} h: beyond a century" in msg
    ), msg


async def test_a_remaining_life_below_zero_is_published_as_0_its_raw_value_kept_and_flagged(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    model = _life_of(make_signal_onnx(tmp_path / "src.onnx"), tmp_path / "model.onnx", -3.0)
    pkg = build_package(
        model, signal_spec(), tmp_path / "out", signing_key=key, golden_inputs=golden_inputs("signal")
    )
    slot = ModelSlot("health", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [pub])
    await slot.start()
    results = []

    async def on_result(res, item):
        results.append(res)

    pipe = Pipeline(
        PipelineSettings(
            name="pump",
            source="plc",
            model="health",
            window=WindowSettings(waveform="Vibration", sample_rate_hz=SIGNAL_RATE_HZ, scalars={}),
            queue={"policy": "block"},
        ),
        slot,
        ThreadPoolExecutor(1),
        on_result,
        on_event=lambda e: None,
    )
    pipe.prepare()
    pipe.start()
    rng = np.random.default_rng(0)
    try:
        for i in range(2):
            x = rng.normal(0, 1, SIGNAL_WINDOW)
            await pipe.offer(Reading("plc", "Vibration", x, float(i), float(i), Quality.GOOD))
        for _ in range(15000):
            if len(results) == 2 or pipe.stats.errors:
                break
            await asyncio.sleep(0.002)
    finally:
        await pipe.stop()
        await slot.stop()
    assert len(results) == 2 and not pipe.stats.errors, (results, dict(pipe.stats.errors))
    for res in results:
        d = res.to_json_dict()
        assert d["remaining_life"] == 0.0, d  # -3.0 on the former code
        assert d["outputs"]["remaining_life"] == [-3.0], d["outputs"]  # the model's own value
        assert d["outputs"]["remaining_life_below_zero"] == -3.0, d["outputs"]


def _broken_when_loud(src, out):
    """The signal model whose ``remaining_life`` is 5 h, but -1e30 on a window whose anomaly score passes
    1e6 (a sensor's amplitude a million times the golden inputs'): a broken model the golden items pass."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    for n in g.node:
        n.output[:] = ["life0" if o == "remaining_life" else o for o in n.output]
    g.initializer.extend(
        numpy_helper.from_array(np.array([v], np.float32), name)
        for name, v in (("loud", 1e6), ("broken", -1e30), ("five", 5.0), ("zero", 0.0))
    )
    g.node.extend(
        [
            helper.make_node("Greater", ["anomaly_score", "loud"], ["is_loud"]),
            helper.make_node("Where", ["is_loud", "broken", "five"], ["life1"]),
            helper.make_node("Mul", ["life0", "zero"], ["life2"]),  # its own life head, times 0
            helper.make_node("Add", ["life1", "life2"], ["remaining_life"]),
        ]
    )
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


async def test_a_live_window_whose_remaining_life_is_far_out_of_range_is_the_models_error(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    model = _broken_when_loud(make_signal_onnx(tmp_path / "src.onnx"), tmp_path / "model.onnx")
    pkg = build_package(
        model, signal_spec(), tmp_path / "out", signing_key=key, golden_inputs=golden_inputs("signal")
    )
    slot = ModelSlot("health", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [pub])
    await slot.start()
    try:
        x = np.random.default_rng(0).normal(0, 1, SIGNAL_WINDOW)
        assert slot.infer(Window("plc", 0, 0.0, 0.0, x)).interpretation.remaining_life == 5.0
        with pytest.raises(InferenceError) as ei:  # published as the machine's remaining life before
            slot.infer(Window("plc", 1, 0.0, 0.0, x * 1e6))
    finally:
        await slot.stop()
    assert ei.value.reason == "model_error", ei.value
    assert "output 'remaining_life' (remaining_life) gives -1e+30 h: beyond a century" in str(ei.value)
