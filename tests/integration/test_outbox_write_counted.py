"""A result's outbox record or sample that cannot be written is counted as the outbox's error.

A real agent (camera folder, ONNX Runtime, outbox) whose second result's sample cannot be encoded: that error
was raised to the pipeline and counted (and logged on every result) as ``errors.action_dispatch``, an error
handing the result to its actions, which had none. It is now counted under ``errors.outbox_write``, logged
once naming the outbox, and the result's record (written before its sample) stays in the outbox. An error of
the actions is still ``action_dispatch``, its record written all the same."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from edge_agent import agent as agent_module
from edge_agent.agent import Agent
from edge_agent.outbox.selector import SampleSelector
from edge_agent.outbox.settings import SampleSelectionSettings
from tests.integration.test_agent_data_dir_and_clock import config
from tests.support.models import make_keypair, make_package
from tests.support.waits import until


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outboxpkg")
    key, pub = make_keypair(tmp / "keys")
    return make_package(tmp, kind="vision", key=key), pub


async def test_a_sample_that_cannot_be_written_is_counted_as_outbox_write_not_action_dispatch(
    tmp_path, package, monkeypatch, caplog
):
    agent = Agent(config(tmp_path, "record", tmp_path / "data", package, loop=False))
    agent.selector = SampleSelector(
        SampleSelectionSettings(ok_fraction=1.0, unsure_fraction=1.0)
    )  # all sampled
    encode, encoded = agent_module._encode_sample, []

    def breaks_on_the_second(item):  # a frame the sample's encoder refuses
        encoded.append(item.seq)
        if len(encoded) == 2:
            raise ValueError("the encoder refused this frame")
        return encode(item)

    monkeypatch.setattr(agent_module, "_encode_sample", breaks_on_the_second)
    handle, handed = agent.actions.handle, []

    async def breaks_on_the_third(names, res, item):
        handed.append(res.item_seq)
        if len(handed) == 3:
            raise RuntimeError("dispatch broke")
        await handle(names, res, item)

    agent.actions.handle = breaks_on_the_third  # type: ignore[method-assign]
    await agent.start()
    try:
        with caplog.at_level(logging.ERROR, logger="edge_agent.agent"):
            await until(lambda: len(encoded) >= 3, 60, "3 results")
    finally:
        await agent.stop()
    # {'action_dispatch': 2} on the former code: the outbox's error said to be the actions'
    assert agent.pipelines[0].stats.errors == {"outbox_write": 1, "action_dispatch": 1}
    logged = [r.getMessage() for r in caplog.records if "errors.outbox_write" in r.getMessage()]
    assert len(logged) == 1 and "the encoder refused this frame" in logged[0], logged
    assert agent.outbox is not None
    agent.outbox.open()
    recs = agent.outbox.pending(limit=100, max_bytes=50_000_000)
    results = [json.loads(r.payload)["seq"] for r in recs if r.kind == "result"]
    samples = [json.loads(r.payload)["seq"] for r in recs if r.kind == "sample"]
    assert results == handed, results  # every result's record, the two broken ones included
    assert samples == [handed[0], handed[2]], samples  # the second one's sample could not be encoded


async def test_a_frame_the_png_encoder_refuses_is_counted_and_its_record_kept_with_no_empty_sample(
    tmp_path, package, caplog
):
    """OpenCV's PNG encoder refuses a frame wider than libpng's limit (1,000,000 pixels): ``cv2.imencode``
    returns False, which was not looked at (OpenCV 5 then gives an empty tuple: the error said only
    ``'tuple' object has no attribute 'tobytes'``; others give an empty buffer, saved as an empty sample)."""
    from devices.base import Frame
    from edge_agent.types import Result

    agent = Agent(config(tmp_path, "wide", tmp_path / "data", package, loop=False))
    agent.selector = SampleSelector(SampleSelectionSettings(ok_fraction=1.0, unsure_fraction=1.0))
    await agent.start()
    try:
        await until(lambda: agent.pipelines[0].stats.results >= 3, 60, "3 results")
        frame = Frame("cam", 99, 1.0, np.zeros((1, 1_000_001, 3), np.uint8))
        res = Result("inspect", "cam", 99, 1.0, "m", "1", "onnxruntime", "OK", 0.1)
        with caplog.at_level(logging.ERROR, logger="edge_agent.agent"):
            await agent._keep(res, frame)
    finally:
        await agent.stop()
    assert agent.pipelines[0].stats.errors == {"outbox_write": 1}
    logged = [r.getMessage() for r in caplog.records if "errors.outbox_write" in r.getMessage()]
    assert len(logged) == 1, logged
    assert (
        "sample of frame 99 of source cam (1x1000001x3 uint8): OpenCV's PNG encoder refused it" in logged[0]
    )
    assert agent.outbox is not None
    agent.outbox.open()
    recs = agent.outbox.pending(limit=100, max_bytes=50_000_000)
    assert [json.loads(r.payload)["seq"] for r in recs if r.kind == "result"][-1] == 99  # the record kept
    assert 99 not in [json.loads(r.payload)["seq"] for r in recs if r.kind == "sample"]
