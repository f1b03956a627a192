"""One item's unexpected error never ends a pipeline's worker.

Past the model's run, a pipeline builds the item's result, judges it and hands it on (its latency to the
metrics, its drift events, its actions). Only the model's run and the actions were guarded: anything else
that raised on one item (a model's bool output once did) ended the pipeline's worker for good, silently: no
result any more, nothing counted, the pipeline still listed on /status. Now the item is skipped and counted
under ``errors.unexpected``, each distinct error logged once with its traceback, and the next items give
results."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from devices.base import Frame
from edge_agent.config import PipelineSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from model_packager import build_package
from tests.support.models import golden_inputs, make_keypair, make_vision_onnx, vision_spec


async def test_an_item_whose_handling_raises_is_counted_and_skipped_and_the_next_ones_served(
    tmp_path, caplog
):
    key, pub = make_keypair(tmp_path / "keys")
    model = make_vision_onnx(tmp_path / "model.onnx", heatmap=False)
    pkg = build_package(
        model,
        vision_spec(heatmap=False),
        tmp_path / "out",
        signing_key=key,
        golden_inputs=golden_inputs("vision"),
    )
    slot = ModelSlot("inspect", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [pub])
    await slot.start()
    results = []
    calls = []

    async def on_result(res, item):
        results.append(res)

    def on_latency(name, lat):  # the agent's metrics; raises on the second item, every time the same error
        calls.append(name)
        if len(calls) in (2, 3):
            raise ValueError("latency sink refused this item")

    pipe = Pipeline(
        PipelineSettings(name="inspect", source="cam", model="inspect", queue={"policy": "block"}),
        slot,
        ThreadPoolExecutor(1),
        on_result,
        on_latency,
        on_event=lambda evt: None,
    )
    pipe.prepare()
    pipe.start()
    rng = np.random.default_rng(0)
    try:
        with caplog.at_level(logging.ERROR, logger="edge_agent.pipelines"):
            for i in range(5):
                await pipe.offer(Frame("cam", i, time.time(), rng.integers(0, 256, (64, 64, 3), np.uint8)))
            for _ in range(15000):
                if len(calls) == 5 or all(t.done() for t in pipe._tasks):  # the worker ended (former code)
                    break
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.05)
    finally:
        await pipe.stop()
        await slot.stop()
    # items 1 and 2 raised before their actions: skipped; 0, 3 and 4 acted on
    assert [r.item_seq for r in results] == [0, 3, 4], (
        [r.item_seq for r in results],
        dict(pipe.stats.errors),
    )
    status = pipe.status()
    assert status["errors"] == {"unexpected": 2}, status["errors"]
    logged = [r for r in caplog.records if "latency sink refused" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None, [r.getMessage() for r in logged]
