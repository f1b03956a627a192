"""A camera's frame the model cannot be given, or cannot be checked on, is UNSURE naming why, never dropped.

A camera set to another resolution against a package with a ``roi`` made every frame ``bad_input``: no result,
no action (a ``when: {verdict: UNSURE}`` divert to manual check never ran), one WARNING for the whole run: the
reject gate let every part by, unjudged and untold. And when the check of a frame against the package's
training inputs (``input_stats``) itself failed, the model's verdict was thrown away the same way. Real
packages on a real ONNX Runtime slot and pipeline."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from devices.base import Frame
from edge_agent.config import PipelineSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from model_packager import build_package
from tests.support.models import golden_inputs, make_keypair, make_vision_onnx, vision_spec


async def _run(tmp_path, pkg, pub, frames, done=None) -> tuple[Pipeline, list, list]:
    """``frames`` through a pipeline on a slot of ``pkg`` (None: a slot never given a model), until ``done(pipe)``
    (by default: a result for each frame)."""
    if pkg is None:
        slot = ModelSlot("vision", ModelConfig(name="part-inspection"), tmp_path / "data", [])
    else:
        slot = ModelSlot(
            "vision", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [pub]
        )
        await slot.start()
    results: list = []
    events: list = []

    async def on_result(res, item):
        results.append(res)

    pipe = Pipeline(
        PipelineSettings(name="inspect", source="cam", model="vision", queue={"policy": "block"}),
        slot,
        ThreadPoolExecutor(1),
        on_result,
        on_event=events.append,
    )
    pipe.prepare()
    pipe.start()
    try:
        for i, img in enumerate(frames):
            await pipe.offer(Frame("cam", i, time.time(), img))
        async with asyncio.timeout(30):  # a guard, not a measure
            while not (done(pipe) if done else len(results) >= len(frames)):
                await asyncio.sleep(0.01)
    finally:
        await pipe.stop()
        await slot.stop()
    return pipe, sorted(results, key=lambda r: r.item_seq), events


async def test_a_camera_at_another_resolution_than_the_models_roi_gives_unsure_naming_it(tmp_path):
    from edge_agent.fleet_config import _pipeline_health

    key, pub = make_keypair(tmp_path / "keys")
    spec = vision_spec(heatmap=False)
    spec["preprocessing"]["roi"] = [0, 0, 64, 64]
    model = make_vision_onnx(tmp_path / "m" / "model.onnx", heatmap=False)
    pkg = build_package(model, spec, tmp_path / "out", signing_key=key, golden_inputs=golden_inputs("vision"))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 48, 3), np.uint8) for _ in range(8)]  # a camera switched to 48x48
    pipe, results, events = await _run(tmp_path, pkg, pub, frames)
    assert [r.item_seq for r in results] == list(range(8))
    for r in results:
        assert r.verdict == "UNSURE" and r.label is None, r
        assert (
            r.reason.startswith("the frame does not fit the model (bad_input): ") and "48x48" in r.reason
        ), r
        assert r.reason.endswith("; not judged") and r.outputs["model_error"] == "bad_input", r
    assert pipe.stats.errors["bad_input"] == 8 and pipe.status()["silent_drops"] == {}
    said = pipe.status()["model_failures"]["bad_input"]
    assert (
        said.startswith("pipeline inspect: a frame does not fit the model (bad_input): ") and "48x48" in said
    )
    # told as a sustained failure (ended when the pipeline stopped), and read by the fleet as failing on every frame
    assert [(e["kind"], e["active"]) for e in events] == [
        ("model_failing", True),
        ("model_failing", False),
    ], events
    assert "stopped" in events[1]["message"] and events[1]["failed"] == 8, events[1]
    assert _pipeline_health(SimpleNamespace(pipelines=[pipe], heartbeat_feeds={}))["error_rate"] == 1.0


async def test_a_frame_whose_check_against_the_training_inputs_fails_is_unsure_naming_the_check(
    tmp_path, monkeypatch
):
    """Whether the frame is like the model's training inputs is unknown: UNSURE (the package asks for its frames
    to be checked), naming the check's failure, and counted as the slot's error (so a package whose check fails on
    every frame is rolled back, and the fleet's canary reads its error rate); the former code dropped the frame
    (``bad_input``, no result)."""
    import model_packager.inputstats

    key, pub = make_keypair(tmp_path / "keys")
    model = make_vision_onnx(tmp_path / "m" / "model.onnx", seed=1)
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(8)]
    pkg = build_package(
        model,
        vision_spec(),
        tmp_path / "out",
        signing_key=key,
        golden_inputs=golden_inputs("vision"),
        input_images=frames,
    )

    def broken_check(*args, **kwargs):
        raise ValueError("local statistics of another layout")

    monkeypatch.setattr(model_packager.inputstats, "check", broken_check)
    pipe, results, _ = await _run(tmp_path, pkg, pub, frames[:3])
    assert [r.item_seq for r in results] == [0, 1, 2]
    for r in results:
        assert r.verdict == "UNSURE" and r.label is None, r
        assert r.reason.startswith("the frame does not fit the model (bad_input): "), r
        assert (
            "cannot be measured against part-inspection-1.0.0's training inputs: ValueError: local statistics "
            "of another layout" in r.reason
        ), r
    assert pipe.stats.errors.get("bad_input") == 3


async def test_frames_reaching_a_slot_without_a_model_are_unsure_counted_and_named(tmp_path, caplog):
    """A slot with no model (its configured package refused at the agent's start, nothing installed: the slot is
    failed and the agent serves the rest) judges none of its frames: each a result UNSURE naming ``no_model``, as an
    item its model fails on, counted under the pipeline's errors, the first said in a WARNING naming the slot. (They
    were dropped: a reject gate on UNSURE let every part by, unjudged.)"""
    import logging

    frames = [np.zeros((8, 8, 3), np.uint8)] * 3
    with caplog.at_level(logging.WARNING, logger="edge_agent.pipelines"):
        pipe, results, _ = await _run(tmp_path, None, None, frames, lambda p: p.stats.errors["no_model"] == 3)
    status = pipe.status()
    assert [r.verdict for r in results] == ["UNSURE"] * 3 and status["errors"] == {"no_model": 3}, status
    assert all(r.outputs == {"model_error": "no_model"} and r.score is None for r in results), results
    assert "model slot 'vision' has no model loaded" in results[0].reason, results[0]
    said = [r.getMessage() for r in caplog.records if "no_model" in r.getMessage()]
    assert len(said) == 1 and "no model serves its slot" in said[0] and "'vision'" in said[0], said
