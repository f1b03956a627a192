"""Real agents (camera folder → ONNX Runtime → outbox): one agent per data folder, held for its lifetime;
a pipeline's rate counts elapsed time, so a wall clock stepped by NTP does not empty it; every result reaches
the outbox, whatever its actions did."""

from __future__ import annotations

import asyncio
import json
import os
import time

import cv2
import numpy as np
import pytest

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.models.slot import SlotError  # what `edge-agent run` reports in one line
from edge_agent.outbox.selector import SampleSelector
from edge_agent.outbox.settings import SampleSelectionSettings
from tests.support.models import make_keypair, make_package
from tests.support.waits import until


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agentpkg")
    key, pub = make_keypair(tmp / "keys")
    return make_package(tmp, kind="vision", key=key), pub


def config(tmp_path, name: str, data_dir, package=None, loop: bool = True):
    doc: dict = {
        "agent": {"id": name, "site": "s1", "line": "l1", "data_dir": str(data_dir)},
        "outbox": {},
        "http": {"enabled": False},
    }
    if package is not None:  # a camera folder's frames to its pipeline
        pkg, pub = package
        imgs = tmp_path / "imgs"
        imgs.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(3):
            cv2.imwrite(str(imgs / f"img{i}.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        doc |= {
            "trusted_keys": [str(pub)],
            "sources": {"cam": {"type": "camera", "url": str(imgs), "fps": 20, "loop": loop}},
            "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
            "pipelines": [{"name": "inspect", "source": "cam", "model": "vision", "actions": []}],
        }
    return parse_config(doc, f"{name}.yaml", str(tmp_path))


async def test_a_second_agent_on_a_data_folder_in_use_is_refused_until_the_first_stops(tmp_path):
    data = tmp_path / "data"
    first = Agent(config(tmp_path, "first", data))
    await first.start()
    try:
        second = Agent(config(tmp_path, "second", data))
        with pytest.raises(SlotError) as exc:
            await second.start()
        assert str(exc.value) == (
            f"data folder {data} is in use by another agent (pid {os.getpid()}); give each agent its own "
            "agent.data_dir"
        )
        await second.stop()  # as a host does after a failed start: must not free the first one's folder
        with pytest.raises(SlotError):
            await Agent(config(tmp_path, "third", data)).start()
        assert first.outbox is not None and first.outbox.is_open
        assert (data / "agent.lock").read_text().strip() == str(os.getpid())
    finally:
        await first.stop()
    again = Agent(config(tmp_path, "again", data))
    await again.start()
    await again.stop()


async def test_the_pipeline_rate_survives_a_wall_clock_step(tmp_path, package, monkeypatch):
    agent = Agent(config(tmp_path, "clock", tmp_path / "data", package))
    await agent.start()
    try:
        stats = agent.pipelines[0].stats
        await until(lambda: stats.results >= 40, 60, "40 results")
        before = stats.rate()
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 2 * 3600)  # NTP steps the clock forward
        await asyncio.sleep(0.2)
        assert stats.rate() >= 0.8 * before
        monkeypatch.setattr(time, "time", lambda: real() - 86400)  # and back a day
        n = stats.results
        # results go on (a ceiling, not a pace: 1 s with no result on a loaded machine is no stall)
        await until(lambda: stats.results > n, 30, "a result after the clock went back")
        assert stats.rate() >= 0.8 * before
    finally:
        await agent.stop()


async def test_a_result_whose_actions_raise_still_reaches_the_outbox_once(tmp_path, package):
    # Before: the actions ran first and the outbox record after them, so an error dispatching one result's
    # actions (counted errors.action_dispatch) skipped its record and sample: the cloud missed it for good
    agent = Agent(config(tmp_path, "record", tmp_path / "data", package, loop=False))
    agent.selector = SampleSelector(
        SampleSelectionSettings(ok_fraction=1.0, unsure_fraction=1.0)
    )  # all sampled
    handle, handed = agent.actions.handle, []

    async def breaks_on_the_second(names, res, item):
        handed.append(res.item_seq)
        if len(handed) == 2:
            raise RuntimeError("dispatch broke")
        await handle(names, res, item)

    agent.actions.handle = breaks_on_the_second  # type: ignore[method-assign]
    await agent.start()
    try:
        await until(lambda: len(handed) >= 3, 60, "3 results")
    finally:
        await agent.stop()
    assert agent.pipelines[0].stats.errors == {"action_dispatch": 1}
    assert agent.outbox is not None
    agent.outbox.open()
    recs = agent.outbox.pending(limit=100, max_bytes=50_000_000)
    for kind in ("result", "sample"):  # each result once, the broken one included, in order
        assert [json.loads(r.payload)["seq"] for r in recs if r.kind == kind] == handed, kind
