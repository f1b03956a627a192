"""A frame the model is not trusted on is UNSURE naming no fault, on a real ONNX Runtime slot and pipeline:
one far outside the package's training inputs (a dark frame: ``input_stats``) and one a frozen camera
resent. Before, such a result kept the classifier's top class as its label (UNSURE with "scratch"), read on
the status page, in the outbox and over MQTT as a defect found on a frame the model was not trusted on, as
a maintenance window the baseline does not judge was before. The model's guess stays in ``probabilities``
and the heat map; frames it is trusted on keep their label."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from devices.base import Frame
from edge_agent.config import PipelineSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from model_packager import build_package
from tests.support.models import (
    VISION_LABELS,
    golden_inputs,
    make_keypair,
    make_vision_onnx,
    vision_spec,
)


async def test_an_unsure_frame_names_no_fault_and_keeps_the_models_guess_in_probabilities(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    # a model that names a fault on every frame (its "ok" class held down): what it guesses is never "ok"
    model = make_vision_onnx(tmp_path / "m" / "model.onnx", seed=1, bias=-20.0)
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(8)]
    pkg = build_package(
        model,
        vision_spec(),
        tmp_path / "out",
        signing_key=key,
        golden_inputs=golden_inputs("vision"),
        input_images=frames,
    )
    slot = ModelSlot("inspect", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [pub])
    await slot.start()
    results = []

    async def on_result(res, item):
        results.append(res)

    pipe = Pipeline(
        PipelineSettings(name="inspect", source="cam", model="inspect", queue={"policy": "block"}),
        slot,
        ThreadPoolExecutor(1),
        on_result,
    )
    pipe.prepare()
    pipe.start()
    now = time.time()
    good = np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    try:
        await pipe.offer(Frame("cam", 1, now, good))  # trusted: NG, naming its fault
        await pipe.offer(Frame("cam", 2, now, np.full((64, 64, 3), 4, np.uint8)))  # dark: input_stats
        await pipe.offer(Frame("cam", 3, now, good, unchanged_s=30.0))  # a frozen camera's resent image
        async with asyncio.timeout(30):  # a guard, not a measure
            while len(results) < 3:
                await asyncio.sleep(0.01)
    finally:
        await pipe.stop()
        await slot.stop()
    trusted, dark, frozen = sorted(results, key=lambda r: r.item_seq)
    assert trusted.verdict == "NG" and trusted.label in VISION_LABELS[1:]
    assert dark.verdict == "UNSURE" and (dark.reason or "").startswith("underexposed"), dark.reason
    assert frozen.verdict == "UNSURE" and (frozen.reason or "").startswith("camera frozen"), frozen.reason
    for r in (dark, frozen):
        assert r.label is None, (r.reason, r.label)
        assert r.to_json_dict()["label"] is None  # what the outbox and MQTT carry
        # the model's guess is where guesses live
        assert set(r.probabilities) == set(VISION_LABELS) and r.probabilities["ok"] < 0.5
        assert r.heatmap is not None
