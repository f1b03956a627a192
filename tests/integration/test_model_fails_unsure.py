"""A model that fails on the line's frames (NaN/Inf out) gives UNSURE results, acted on and told, not drops.

A signed package whose golden items are finite installs and serves, but its logits are NaN on frames unlike
them (an INT8 overflow on over-exposed frames, a product it never saw). Each such frame was dropped as
``nonfinite_output``: no result on MQTT nor in the outbox, no action (a ``when: {verdict: UNSURE}`` divert to
manual check never ran), one WARNING for the whole run, the pipeline's status silent. Now each is a result
``UNSURE`` naming the failure, handed on like any UNSURE, and a sustained failure is an episode: a
``model_failing`` event (start and end), ``model_failing`` on the pipeline's ``/status``."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import urllib.request
from types import SimpleNamespace

import cv2
import numpy as np
import onnx
from onnx import helper, numpy_helper

from tests.integration.test_agent_runtime import Subscriber, wait_for
from tests.support.models import (
    build_package_for_tests,
    golden_inputs,
    make_keypair,
    make_vision_onnx,
    vision_spec,
)
from tests.support.recorded import recorded_events

GOOD, BAD, AFTER = 4, 10, 16  # frames: judged, then NaN, then judged again (the episode ends)


def _nan_when_bright(tmp_path):
    """The test vision model plus ``0 * sqrt(0.05 - |mean(image)|)`` on its logits: finite on the golden
    inputs (their mean ~0), NaN on a frame whose mean is far from mid-grey (a bright one)."""
    src = make_vision_onnx(tmp_path / "src.onnx", heatmap=False)
    m = onnx.load(str(src))
    g = m.graph
    for n in g.node:
        n.output[:] = ["logits_pre" if o == "logits" else o for o in n.output]
    g.initializer.extend(
        numpy_helper.from_array(np.array([v], np.float32), name) for name, v in (("thr", 0.05), ("zero", 0.0))
    )
    g.node.extend(
        [
            helper.make_node("ReduceMean", ["image"], ["mean"], keepdims=0),
            helper.make_node("Abs", ["mean"], ["amean"]),
            helper.make_node("Sub", ["thr", "amean"], ["d"]),
            helper.make_node("Sqrt", ["d"], ["sq"]),
            helper.make_node("Mul", ["sq", "zero"], ["z"]),
            helper.make_node("Add", ["logits_pre", "z"], ["logits"]),
        ]
    )
    onnx.checker.check_model(m)
    onnx.save(m, str(tmp_path / "model.onnx"))
    key, pub = make_keypair(tmp_path / "keys")
    pkg = build_package_for_tests(
        tmp_path / "model.onnx",
        vision_spec(heatmap=False),
        tmp_path / "pkg",
        key,
        golden_inputs("vision"),
        False,
    )
    return pkg, pub


def _frames(folder) -> list[bool]:
    """Mid-grey noisy frames (mean ~0 once normalised), then bright ones (NaN), then mid-grey again."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    bright = [False] * GOOD + [True] * BAD + [False] * AFTER
    for i, b in enumerate(bright):
        img = (
            rng.integers(215, 235, (64, 64, 3), np.uint8)
            if b
            else rng.integers(0, 256, (64, 64, 3), np.uint8)
        )
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return bright


async def test_frames_the_model_fails_on_are_unsure_acted_on_and_a_sustained_failure_is_told(
    tmp_path, mosquitto, caplog, monkeypatch, capsys
):
    from edge_agent import pipelines
    from edge_agent.agent import Agent
    from edge_agent.cli import _status

    monkeypatch.setattr(
        pipelines, "FAIL_QUIET_S", 0.0
    )  # the episode ends at the first item of a quiet window
    from edge_agent.config import parse_config

    pkg, pub = _nan_when_bright(tmp_path)
    bright = _frames(tmp_path / "frames")
    cfg = parse_config(
        {
            "agent": {"id": "gw1", "site": "plant", "line": "line2", "data_dir": str(tmp_path / "data")},
            "trusted_keys": [str(pub)],
            "http": {"port": 0},
            "sources": {
                # every frame held for the pipeline (4 by default: a loaded machine dropped one, and no result came
                # for it)
                "cam": {"type": "camera", "url": str(tmp_path / "frames"), "fps": 60, "queue_max_items": 64},
                "broker": {"type": "mqtt", "port": mosquitto.port},
            },
            "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
            "pipelines": [
                {
                    "name": "inspect",
                    "source": "cam",
                    "model": "vision",
                    "actions": ["publish", "manual_check"],
                    "queue": {"policy": "block"},
                }
            ],
            "actions": {
                "publish": {"type": "mqtt_publish", "source": "broker", "qos": 1},
                "manual_check": {  # a divert-to-manual-check gate
                    "type": "mqtt_publish",
                    "source": "broker",
                    "qos": 1,
                    "topic": "gate/manual",
                    "when": {"verdict": "UNSURE"},
                },
            },
            "outbox": {},
            # every UNSURE one uploaded as a sample, no other
            "upload": {"unsure_fraction": 1.0, "ok_fraction": 0.0, "uncertain_margin": 0.0},
        }
    )
    sub = Subscriber(mosquitto.port, "#")
    agent = Agent(cfg)
    try:
        with caplog.at_level(logging.INFO, logger="edge_agent.pipelines"):
            await agent.start()
            pipe = agent.pipelines[0]
            # the former code: no result for a NaN frame, so never as many results as frames
            await wait_for(
                lambda: pipe.stats.results >= len(bright), what="a result for every frame", timeout_s=20
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{agent.http.port}/status", timeout=5) as r:
                status = json.loads(r.read())
            # the pipeline health the fleet sees in the heartbeat: the failed frames as such, not a line without
            # defects at full rate
            health = agent._cloud_status()["health"]["inspect"]
            # `edge-agent status` names the failure (the former code printed only the pipeline's error count)
            capsys.readouterr()
            assert _status(SimpleNamespace(url=f"http://127.0.0.1:{agent.http.port}", json=False)) == 0
            printed = capsys.readouterr().out
            await asyncio.sleep(0.3)  # the last publishes
    finally:
        await agent.stop()
        sub.stop()
    agent.outbox.open()
    recs = agent.outbox.pending(limit=500, max_bytes=50_000_000)
    results = sorted((json.loads(r.payload) for r in recs if r.kind == "result"), key=lambda r: r["seq"])
    assert [r["seq"] for r in results] == list(range(len(bright)))
    failed = [r for r in results if bright[r["seq"]]]
    for r in failed:
        assert r["verdict"] == "UNSURE" and r["label"] is None, r
        assert r["reason"] == "the model failed on this frame (nonfinite_output): not judged", r
        assert r["outputs"]["model_error"] == "nonfinite_output", r
        # not judged: no score (0.0 read as a good part's on a dashboard)
        assert r["score"] is None, r
    assert all("model_error" not in r["outputs"] for r in results if not bright[r["seq"]])
    assert all(isinstance(r["score"], float) for r in results if not bright[r["seq"]])
    # each failed frame's sample names the failure ('unsure' before: a frame the model judged far from its training)
    samples = {
        json.loads(r.payload)["seq"]: json.loads(r.payload)["reason"] for r in recs if r.kind == "sample"
    }
    assert {seq: why for seq, why in samples.items() if bright[seq]} == {
        i: "nonfinite_output" for i, b in enumerate(bright) if b
    }, samples
    # and counted so by the selector (it counted them 'unsure' while the agent rewrote the sample's reason)
    assert agent.selector is not None and agent.selector.chosen == collections.Counter(samples.values())
    # the UNSURE gate acted on each failed frame; the plain publish, as for any UNSURE, did not
    gate = [
        m
        for t, m in sub.messages
        if t == "gate/manual" and m.get("reason", "").startswith("the model failed")
    ]
    assert sorted(m["seq"] for m in gate) == [i for i, b in enumerate(bright) if b], gate
    # told: the pipeline's errors as before, one episode (start, end) as events, and on /status
    assert pipe.stats.errors["nonfinite_output"] == BAD
    events = [json.loads(r.payload) for r in recs if r.kind == "event"]
    failing = [e for e in events if e["kind"] == "model_failing"]
    assert [e["active"] for e in failing] == [True, False], failing
    assert failing[0]["pipeline"] == "inspect" and failing[0]["slot"] == "vision"
    assert failing[0]["reasons"] == {"nonfinite_output": failing[0]["failed"]} and failing[1]["failed"] == BAD
    shown = next(p for p in status["pipelines"] if p["pipeline"] == "inspect")
    assert shown["model_failing"]["failed_total"] == BAD and shown["model_failing"]["active"] is False
    assert "nonfinite_output" in shown["model_failures"]
    assert (health["model_failed"], health["unsure"], health["errors"]) == (BAD, BAD, BAD), health
    assert "model failures (those items UNSURE, not judged):" in printed, printed
    assert any(
        "pipeline inspect" in line
        and f"nonfinite_output       {BAD:<8}" in line
        and "produced NaN/Inf" in line
        for line in printed.splitlines()
    ), printed
    warned = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "model" in r.getMessage()
    ]
    assert any("fails on" in w and "nonfinite_output" in w for w in warned), warned


async def test_windows_a_maintenance_model_fails_on_without_a_baseline_are_unsure_naming_the_failure(
    tmp_path, monkeypatch
):
    """... and the episode ends on time when its source stops: it ended only at an item, so a stopped source's
    stood on /status and in the heartbeat for ever."""
    from devices.base import Quality, Reading
    from edge_agent import pipelines
    from tests.support.models import SIGNAL_WINDOW

    results, events = [], []

    async def on_result(res, item):
        results.append(res)

    pipe, slot = await _nan_window_pipeline(tmp_path, on_result, events.append)
    pipe.prepare()
    pipe.start()
    rng = np.random.default_rng(0)
    # no item for this long ends the episode (60 s in service); longer than the 8 windows' run on a busy machine
    monkeypatch.setattr(pipelines, "FAIL_IDLE_S", 3.0)
    try:
        for i in range(8):
            x = rng.normal(0, 1, SIGNAL_WINDOW)
            await pipe.offer(Reading("plc", "Vibration", x, float(i), float(i), Quality.GOOD))
        await wait_for(lambda: len(results) >= 8, what="a result for every window", timeout_s=20)
        assert [(e["kind"], e["active"]) for e in events] == [("model_failing", True)], events
        during = pipe.status()["model_failing"]
        # the source stops: no item comes; the episode ends on time
        await wait_for(lambda: len(events) >= 2, what="the episode's end", timeout_s=10)
    finally:
        await pipe.stop()
        await slot.stop()
    assert pipe.stats.errors["nonfinite_output"] == 8  # counted as before
    for r in results:  # none on the former code: every window dropped
        assert r.verdict == "UNSURE" and r.label is None and r.remaining_life is None, r
        assert r.reason == "the model failed on this window (nonfinite_output): not judged", r
        assert r.score is None and r.to_json_dict()["score"] is None, r  # not judged: no score (0.0 before)
    assert during["active"] is True
    assert [(e["kind"], e["active"]) for e in events] == [("model_failing", True), ("model_failing", False)]
    assert events[1]["failed"] == 8 and "no item has reached the model" in events[1]["message"], events[1]
    assert pipe.status()["model_failing"]["active"] is False
    # the fleet config gate's error rate for a model failing on every window: 1.0, as when such windows were
    # dropped (the former code counted each failed window as an error and a result: 0.5, so a max_error_rate
    # of 0.5 passed a config under which nothing was judged)
    from types import SimpleNamespace

    from edge_agent.fleet_config import _pipeline_health

    health = _pipeline_health(SimpleNamespace(pipelines=[pipe], heartbeat_feeds={}))
    assert (health["error_rate"], health["results"]) == (1.0, 0), health
    assert health["model_failed"] == 8, health


async def _nan_window_pipeline(tmp_path, on_result, on_event):
    """A maintenance pipeline (no baseline) whose model gives NaN on every window, prepared, and its slot."""
    from concurrent.futures import ThreadPoolExecutor

    from edge_agent.config import PipelineSettings, WindowSettings
    from edge_agent.models.config import ModelConfig
    from edge_agent.models.slot import ModelSlot
    from edge_agent.pipelines import Pipeline
    from tests.support.models import SIGNAL_RATE_HZ, make_package

    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="signal", key=key, nan=True)  # NaN on every window (its golden NaN too)
    slot = ModelSlot(
        "health", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [str(pub)]
    )
    await slot.start()
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
        on_event=on_event,
    )
    pipe.prepare()
    return pipe, slot


async def test_a_pipeline_stop_cut_from_outside_still_stops_its_workers_and_ends_its_episode(tmp_path):
    """A stop cut short by its caller (a bound shorter than its own wait, a cancel): its workers went on with the
    queued items and the episode's timer stayed armed, so a "stopped" pipeline told an episode's end, then another's
    start. Now the workers are cancelled and the episode ended, at the cut."""
    from devices.base import Quality, Reading
    from tests.support.models import SIGNAL_WINDOW

    results, events, gate = [], [], asyncio.Event()

    async def on_result(res, item):  # an action that hangs from the 8th result on
        results.append(res)
        if len(results) >= 8:
            await gate.wait()

    pipe, slot = await _nan_window_pipeline(tmp_path, on_result, events.append)
    pipe.start()
    rng = np.random.default_rng(0)
    try:
        for i in range(12):
            await pipe.offer(
                Reading("plc", "Vibration", rng.normal(0, 1, SIGNAL_WINDOW), float(i), float(i), Quality.GOOD)
            )
        await wait_for(lambda: len(results) >= 8, what="8 results", timeout_s=20)
        assert [e["active"] for e in events] == [True], events
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                await pipe.stop()  # its own wait is 10 s
        await asyncio.sleep(0)
        assert all(t.done() for t in pipe._tasks) and pipe.failures._timer is None
        gate.set()
        await asyncio.sleep(0.3)  # (the queued windows would have been run by now)
    finally:
        await pipe.stop()
        await slot.stop()
    assert len(results) == 8, len(results)
    assert [e["active"] for e in events] == [True, False] and "stopped" in events[1]["message"], events


# a child agent: started on the config in argv[3], killed (SIGKILL: a power cut) once its model_failing episode has
# begun and been recorded ("begun"), right after its pipeline's stop has told that episode's end ("ended": before
# the outbox's commit), or as soon as it has started ("started")
_KILLED_AGENT = """
import asyncio, json
from edge_agent.agent import Agent
from edge_agent.config import parse_config

if sys.argv[4] == "ended":
    cut_after(Agent, "_event", lambda self, e: e["kind"] == "model_failing" and "stopped" in e["message"])

async def main():
    agent = Agent(parse_config(json.loads(open(sys.argv[3]).read())))
    await agent.start()
    while sys.argv[4] != "started" and not any(e["kind"] == "model_failing" and e["active"] for e in agent.events):
        await asyncio.sleep(0.02)
    agent.outbox.flush()
    if sys.argv[4] == "ended":
        await agent.pipelines[0].stop()
    power_cut()

asyncio.run(main())
"""


async def test_an_episode_under_way_when_the_agent_is_killed_is_ended_once_by_the_next_agent(tmp_path):
    """An agent killed (a power cut) during a model_failing episode: its start was the cloud's last word on it, for
    good. The next agent ends it, even with the pipeline no longer configured, and tells it once: killed again
    right after its start, the agent after it tells nothing more. Killed right after an episode's end is told
    (before the outbox commits it), the end is not lost: the file forgets the episode once its end is committed."""
    from edge_agent.agent import EPISODES_FILE, Agent
    from edge_agent.config import parse_config
    from tests.support.outbox_kills import killed_child

    pkg, pub = _nan_when_bright(tmp_path)
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(8):  # bright: the model gives NaN on each
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(215, 235, (64, 64, 3), np.uint8))
    data = tmp_path / "data"
    bare = {
        "agent": {"id": "gw1", "site": "plant", "line": "line2", "data_dir": str(data)},
        "http": {"enabled": False},
        "outbox": {},
    }
    failing = {
        **bare,
        "trusted_keys": [str(pub)],
        "sources": {"cam": {"type": "camera", "url": str(folder), "fps": 60, "queue_max_items": 64}},
        "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
        "pipelines": [{"name": "inspect", "source": "cam", "model": "vision", "queue": {"policy": "block"}}],
    }
    (tmp_path / "failing.json").write_text(json.dumps(failing))
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    killed_child(_KILLED_AGENT, data, str(tmp_path / "failing.json"), "begun")
    assert list(json.loads((data / EPISODES_FILE).read_text())) == ["model_failing:inspect"]
    # ends it at its start, begins another, killed as its stop tells that one's end
    killed_child(_KILLED_AGENT, data, str(tmp_path / "failing.json"), "ended")
    killed_child(
        _KILLED_AGENT, data, str(tmp_path / "bare.json"), "started"
    )  # ends what is left, then killed
    agent = Agent(parse_config(bare))
    await agent.start()
    try:
        rows = recorded_events(agent, "model_failing")
    finally:
        await agent.stop()
    assert [r["active"] for r in rows] == [True, False, True, False], rows
    start, end = rows[:2]
    assert end["pipeline"] == "inspect" and end["model_version"] == start["model_version"], end
    assert "the agent restarted during this episode" in end["message"], end["message"]
    assert json.loads((data / EPISODES_FILE).read_text()) == {}


async def test_an_altered_episodes_file_reaches_the_cloud_only_as_bounded_text_and_numbers(tmp_path):
    """The data folder is anyone's with the gateway's shell: what pipeline-episodes.json holds is ended as the
    episodes it names, its values kept only where they are what the event's fields are."""
    from edge_agent.agent import EPISODES_FILE, Agent
    from edge_agent.config import parse_config

    data = tmp_path / "data"
    data.mkdir()
    told = {
        "model_failing:inspect": {
            "since": "2026-01-01T00:00:00+00:00",
            "pipeline": {"deep": [1, 2]},
            "slot": 5,
            "model_version": "1.0\x1b[31m" + "x" * 5000,
            "reasons": {"nonfinite_output": 7, "bad": True, "worse": "y"},
            "failed": -1,
        },
        "no_such_kind:inspect": {"since": "s"},
        "items_stale:line": {"since": "s", "max_age_ms": "500"},
    }
    (data / EPISODES_FILE).write_text(json.dumps(told))
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(data)},
                "http": {"enabled": False},
                "outbox": {},
            }
        )
    )
    await agent.start()
    try:
        failing, stale = recorded_events(agent, "model_failing"), recorded_events(agent, "items_stale")
    finally:
        await agent.stop()
    (end,) = failing
    assert (end["pipeline"], end["slot"], end["reasons"], end["failed"]) == (
        "inspect",
        None,
        {"nonfinite_output": 7},
        None,
    )
    assert end["model_version"].startswith("1.0") and "\x1b" not in end["model_version"]
    assert len(end["model_version"]) < 300, len(end["model_version"])  # (5,000 characters written)
    assert [(e["pipeline"], e["active"], e["max_age_ms"]) for e in stale] == [("line", False, None)]
    assert json.loads((data / EPISODES_FILE).read_text()) == {}
