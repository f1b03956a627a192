"""Under overload a verdict must not act on an item captured several item-times ago: items older than the
pipeline's ``queue.max_age_ms`` when inference would take them are dropped unjudged and counted, an
``items_stale`` event marks the episode, and every result carries its item's capture time and its age at the
verdict (so an action's condition and the cloud can tell). A real ONNX Runtime session on a test package; the
overload is the one inference thread held (by another pipeline's frame, or by this model's own slow frame) for
longer than the bound, so what is stale is known by construction, not by timing."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from devices.base import Frame
from edge_agent import pipelines
from edge_agent.conditions import compile_condition
from edge_agent.config import PipelineSettings
from edge_agent.metrics import Metrics
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from tests.support.models import make_keypair, make_package
from tests.support.waits import until

MAX_AGE_MS = 1000.0
HELD_S = 1.3  # the thread is held this long after the old frames were queued: they are older than the bound


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stalepkg")
    key, pub = make_keypair(tmp / "keys")
    return make_package(tmp, kind="vision", key=key), pub


def _frame(seq: int) -> Frame:
    image = np.random.default_rng(seq).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return Frame("cam", seq, time.time(), image)


async def test_an_overloaded_pipeline_drops_items_too_old_to_act_on_and_results_carry_their_age(
    tmp_path, package, monkeypatch
):
    # Before: a full queue of 8 frames was judged in turn however long it had waited, so a reject gate's
    # write and the MQTT result acted on a frame captured more than a second earlier (its part long gone),
    # and nothing in the record said so.
    monkeypatch.setattr(pipelines, "STALE_QUIET_S", 0.0)  # the episode's end is reported at the next result
    pkg, pub = package
    slot = ModelSlot(
        "vision", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "d", [str(pub)]
    )
    await slot.start()
    entered, release = threading.Event(), threading.Event()
    infer = slot.infer

    def slow_infer(item, *a, **kw):  # frame 0 is the slow one: the model holds the one thread with it
        if item.seq == 0:
            entered.set()
            release.wait(30)
        return infer(item, *a, **kw)

    slot.infer = slow_infer  # type: ignore[method-assign]
    pool = ThreadPoolExecutor(max_workers=1)
    results, events, frames = [], [], {}

    async def on_result(res, item) -> None:
        results.append(res)

    settings = PipelineSettings(
        name="inspect", source="cam", model="vision", queue={"size": 8, "max_age_ms": MAX_AGE_MS}
    )
    pipe = Pipeline(settings, slot, pool, on_result, on_event=events.append)
    pipe.prepare()
    pipe.start()
    try:

        async def offer(seq: int) -> None:
            frames[seq] = _frame(seq)
            await pipe.offer(frames[seq])

        await offer(0)
        await asyncio.to_thread(entered.wait, 30)
        for seq in range(1, 8):  # queued behind the slow frame
            await offer(seq)
        await asyncio.sleep(HELD_S)  # frames 1-7 are now older than the bound
        for seq in (8, 9):  # fresh frames: the full queue drops its oldest (frame 1) for frame 9
            await offer(seq)
        release.set()
        await until(lambda: len(results) >= 3, what="the results of frames 0, 8 and 9")
        await until(lambda: len(events) >= 2, what="the episode's end")
        st = pipe.status()
        metrics = Metrics()
        metrics._agent = SimpleNamespace(
            pipelines=[pipe],
            sources={},
            source_notices={},
            actions=SimpleNamespace(stats={}, alarm_state={}),
        )
        exposition = metrics.exposition().decode()
    finally:
        release.set()
        await pipe.stop()
        pool.shutdown()
        await slot.stop()

    # frame 0 was fresh when its thread took it; frames 2-7 waited past the bound: dropped unjudged
    assert [r.item_seq for r in results] == [0, 8, 9]
    assert st["dropped_stale"] == 6 and st["dropped_queue"] == 1 and st["dropped"] == 7
    assert st["items"] == 10 and st["results"] == 3
    assert st["max_age_ms"] == MAX_AGE_MS and st["last_stale"]["seq"] == 7
    assert st["last_stale"]["age_ms"] > MAX_AGE_MS
    assert 'edge_pipeline_dropped_by_reason_total{pipeline="inspect",reason="stale"} 6.0' in exposition
    assert 'edge_pipeline_dropped_by_reason_total{pipeline="inspect",reason="queue"} 1.0' in exposition
    assert 'edge_pipeline_dropped_total{pipeline="inspect"} 7.0' in exposition

    # one event when it started (at frame 2), one when it ended (frame 8 judged fresh), with the count
    start, end = events
    assert start["kind"] == "items_stale" and start["active"] is True and start["pipeline"] == "inspect"
    assert start["max_age_ms"] == MAX_AGE_MS and start["age_ms"] > MAX_AGE_MS and start["dropped"] == 1
    assert "item 2 of source cam" in start["message"] and "max_age_ms" in start["message"]
    assert end["kind"] == "items_stale" and end["active"] is False and end["dropped"] == 6

    # every record carries its item's capture time and its age at the verdict
    for res in results:
        body = res.to_json_dict()
        assert body["captured_at"] == frames[res.item_seq].captured_at
        assert body["age_ms"] == round((body["finished_at"] - body["captured_at"]) * 1000, 3)
    # frame 0's verdict came after the hold: its record says it is late, and an action can refuse it
    assert results[0].age_ms >= HELD_S * 1000
    fresh_enough = compile_condition(
        {"all": [{"verdict": {"in": ["OK", "NG"]}}, {"age_ms": {"lte": MAX_AGE_MS}}]}
    )
    assert not fresh_enough(results[0])
    assert results[1].age_ms < results[0].age_ms


async def test_an_item_that_went_stale_waiting_for_a_thread_is_not_inferred(tmp_path, package):
    # The pool is shared by every pipeline: a frame fresh when its worker took it from the queue may wait
    # for a thread behind another pipeline's inference; past the bound it is dropped there, before the model.
    pkg, pub = package
    slot = ModelSlot(
        "vision", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "d", [str(pub)]
    )
    await slot.start()
    inferred: list[int] = []
    infer = slot.infer

    def recording_infer(item, *a, **kw):
        inferred.append(item.seq)
        return infer(item, *a, **kw)

    slot.infer = recording_infer  # type: ignore[method-assign]
    pool = ThreadPoolExecutor(max_workers=1)
    results, events = [], []

    async def on_result(res, item) -> None:
        results.append(res)

    settings = PipelineSettings(
        name="inspect", source="cam", model="vision", queue={"max_age_ms": MAX_AGE_MS}
    )
    pipe = Pipeline(settings, slot, pool, on_result, on_event=events.append)
    pipe.prepare()
    pipe.start()
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:  # another pipeline's frame holds the one thread
        busy.set()
        release.wait(30)

    pool.submit(hold)
    try:
        await asyncio.to_thread(busy.wait, 30)
        await pipe.offer(_frame(1))
        await until(lambda: len(pipe.queue) == 0, what="the worker took the frame")  # waiting for a thread
        await asyncio.sleep(HELD_S)
        release.set()
        await until(lambda: pipe.status()["dropped_stale"] == 1, what="the frame dropped as stale")
        await pipe.offer(_frame(2))
        await until(lambda: results, what="the next frame's result")
    finally:
        release.set()
        await pipe.stop()
        pool.shutdown()
        await slot.stop()
    assert inferred == [2] and [r.item_seq for r in results] == [2]
    # ends only after 10 s without a stale item, or at the stop
    assert [e["active"] for e in events] == [True, False] and "stopped" in events[1]["message"], events


async def test_a_signal_pipeline_bounds_its_windows_age_only_when_told(tmp_path, tmp_path_factory):
    # Windows are a series (the baseline, the wear trend and the sensor checks read them in turn) timed on the
    # source's clock: auto leaves them unbounded, so a backlog a PLC replays after a reconnect is still
    # judged; a bound in the config drops a window whose last sample is older than it.
    from devices.base import Reading
    from tests.support.models import SIGNAL_WINDOW

    tmp = tmp_path_factory.mktemp("stalesig")
    key, pub = make_keypair(tmp / "keys")
    pkg = make_package(tmp, kind="signal", key=key)
    slot = ModelSlot(
        "health", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "d", [str(pub)]
    )
    await slot.start()
    pool = ThreadPoolExecutor(max_workers=1)
    got: dict[str, list] = {"bounded": [], "auto": []}
    events: list = []
    pipes = []
    for name, queue in (("bounded", {"max_age_ms": 5000}), ("auto", {})):

        async def on_result(res, item, name=name) -> None:
            got[name].append(res)

        s = PipelineSettings(name=name, source="plc", model="health", window={"waveform": "vib"}, queue=queue)
        p = Pipeline(s, slot, pool, on_result, on_event=events.append)
        p.prepare()
        p.start()
        pipes.append(p)
    rng = np.random.default_rng(0)
    now = time.time()
    try:
        for ts in (now - 60.0, now):  # a minute-old window (replayed after a reconnect), then a current one
            r = Reading("plc", "vib", rng.normal(0, 1, SIGNAL_WINDOW), ts, now)
            for p in pipes:
                await p.offer(r)
        await until(lambda: len(got["auto"]) == 2 and got["bounded"], what="the windows' results")
        bounded, auto = (p.status() for p in pipes)
    finally:
        for p in pipes:
            await p.stop()
        pool.shutdown()
        await slot.stop()
    assert [r.item_seq for r in got["bounded"]] == [1] and bounded["dropped_stale"] == 1
    assert [r.item_seq for r in got["auto"]] == [0, 1] and auto["dropped_stale"] == 0
    assert auto["max_age_ms"] is None and "signal windows" in auto["max_age"]
    assert got["auto"][0].age_ms > 59_000  # judged, and its record says how old it was
    evt, end = events  # (its end at the stop)
    assert evt["pipeline"] == "bounded" and "source's clock" in evt["message"]
    assert end["pipeline"] == "bounded" and end["active"] is False, end


def test_the_agent_bounds_a_live_cameras_pipeline_and_not_a_replayed_folders(tmp_path, package):
    # auto depends on what the pipeline reads: the agent hands each pipeline its source's settings
    from edge_agent.agent import Agent
    from edge_agent.config import parse_config

    pkg, pub = package
    (tmp_path / "parts").mkdir()
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "data_dir": str(tmp_path / "data")},
                "trusted_keys": [str(pub)],
                "http": {"enabled": False},
                "sources": {
                    "live": {"type": "camera", "url": "http://127.0.0.1:9/stream.mjpg", "fps": 5},
                    "replay": {"type": "camera", "url": str(tmp_path / "parts")},
                },
                "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
                "pipelines": [
                    {"name": "inspect", "source": "live", "model": "vision"},
                    {"name": "dataset", "source": "replay", "model": "vision"},
                ],
            }
        )
    )
    try:
        live, replay = agent.pipelines
        assert live.age.auto and live.status()["max_age"].startswith("auto")
        for i in range(8):  # 5 fps
            live.age.note(1_700_000_000.0 + i * 0.2)
        assert live.status()["max_age_ms"] == 400.0
        assert not replay.age.auto and replay.status()["max_age_ms"] is None
        assert "replayed" in replay.status()["max_age"]
    finally:
        agent.executor.shutdown()
