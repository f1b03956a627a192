"""A model's small outputs (16 values or fewer) in each result: a flag (bool) and float16 values.

A result carries every output of up to 16 values, rounded to 6 decimals. numpy's round multiplies by 10^6 in
the array's own type: on a bool output (a model's defect flag) it raised, which ended the pipeline's worker
on its first frame (no result, no error counted, "Task exception was never retrieved"); on a float16 output
every value past 0.066 overflowed and was published as null. Both now come through as they are: bools as
bools, float16 values rounded in double."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from devices.base import Frame
from edge_agent.config import PipelineSettings
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from model_packager import build_package
from protocols import json_codec
from tests.support.models import golden_inputs, make_keypair, make_vision_onnx, vision_spec


def _with_flag_and_half(src, out):
    """The vision model with two more outputs: ``logits16`` (its logits as float16, declared raw) and
    ``flag`` (logits > 0, bool, undeclared)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array([0.0], np.float32), "zero"))
    g.node.extend(
        [
            helper.make_node("Cast", ["logits"], ["logits16"], to=TensorProto.FLOAT16),
            helper.make_node("Greater", ["logits", "zero"], ["flag"]),
        ]
    )
    g.output.extend(
        [
            helper.make_tensor_value_info("logits16", TensorProto.FLOAT16, ["batch", 6]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, ["batch", 6]),
        ]
    )
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


async def test_a_bool_and_a_float16_output_reach_each_result_as_they_are(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    model = _with_flag_and_half(
        make_vision_onnx(tmp_path / "src.onnx", heatmap=False), tmp_path / "model.onnx"
    )
    spec = vision_spec(heatmap=False)
    spec["outputs"].append({"name": "logits16", "dtype": "float16", "shape": ["batch", 6], "role": "raw"})
    pkg = build_package(model, spec, tmp_path / "out", signing_key=key, golden_inputs=golden_inputs("vision"))
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
        on_event=lambda evt: None,
    )
    pipe.prepare()
    pipe.start()
    rng = np.random.default_rng(0)
    try:
        for i in range(3):
            await pipe.offer(Frame("cam", i, time.time(), rng.integers(0, 256, (64, 64, 3), np.uint8)))
        for _ in range(15000):
            if len(results) == 3 or pipe.stats.errors:
                break
            await asyncio.sleep(0.002)
    finally:
        await pipe.stop()
        await slot.stop()
    assert len(results) == 3 and not pipe.stats.errors, (results, dict(pipe.stats.errors))
    for res in results:
        out = json.loads(json_codec.dumps(res.to_json_dict()))["outputs"]
        logits = np.asarray(out["logits"])
        assert out["flag"] == (logits > 0).tolist(), out
        assert None not in out["logits16"], out  # past 0.066: null on the former code
        assert np.abs(np.asarray(out["logits16"]) - logits).max() < 0.01, out
