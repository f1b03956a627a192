"""A camera on a bad cable: away for a few seconds, back, away again. No outage lasted ``source_down_after_s``,
so nothing reached the cloud however long it went on. Now a source bad for that long in total within
``flap_window_s`` raises one ``source_down`` (flapping: ``flaps`` > 1), recorded in the outbox, and one end once
it has been connected for ``flap_clear_s`` without a break (edge_agent.flapping; the rule over hours of flaps
with a fake clock is in tests/unit/test_source_flapping.py)."""

from __future__ import annotations

import pytest

from edge_agent.agent import Agent
from tests.integration.test_source_down import PASS_S, _downs, camera_agent
from tests.support.models import make_keypair, make_package
from tests.support.recorded import recorded_events
from tests.support.waits import until


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flappkg")
    key, pub = make_keypair(tmp / "keys")
    return make_package(tmp, kind="vision", key=key), pub


def _seen_down(agent: Agent) -> bool:
    """The agent's source watch (every ``PASS_S`` here) has seen the camera not connected: the flap is one it counts."""
    watch = getattr(agent, "_down_watch", {}).get("cam")
    if watch is None:  # the agent before flapping was counted kept only the outage's start
        return "cam" in getattr(agent, "_down_since", {})
    return bool(watch._stretches) and watch._stretches[-1][1] is None


def _seen_up(agent: Agent) -> bool:
    watch = getattr(agent, "_down_watch", {}).get("cam")
    if watch is None:
        return "cam" not in getattr(agent, "_down_since", {})
    return not watch._stretches or watch._stretches[-1][1] is not None


async def test_a_camera_that_keeps_dropping_out_raises_one_source_down_and_one_end(tmp_path, package):
    from simulators.camera import CameraServer

    sim = CameraServer(0, fps=10, seed=4).start()
    port = sim.port
    agent = camera_agent(tmp_path, package, sim.url)  # its source watch passes every PASS_S (2 s in service)
    # in service 30 s, 2 minutes, 2 minutes; the rule's spans in the watch's passes: each outage here is seen
    # by one pass or two, far below 6 in total; and the camera, back, is dropped again well within 6 passes
    agent.source_down_after_s = 6 * PASS_S
    agent.flap_window_s = 600.0
    agent.flap_clear_s = 6 * PASS_S
    cam = agent.sources["cam"]
    await agent.start()
    try:
        await until(lambda: agent.pipelines[0].stats.results >= 2, 30, "first results")
        flaps = 0
        while flaps < 30 and not _downs(agent):
            sim.stop()  # the cable drops out
            await until(lambda: _seen_down(agent), 30, "the outage seen by the source watch")
            sim = CameraServer(port, fps=10, seed=5 + flaps).start()  # and is back
            await until(lambda: cam.state.value == "connected" and _seen_up(agent), 30, "the camera back")
            flaps += 1
        (down,) = _downs(agent)
        assert down["source"] == "cam" and down["active"] is True and down["flaps"] >= 2, down
        for _ in range(2):  # it goes on flapping: the same episode, no end at each return
            sim.stop()
            await until(lambda: _seen_down(agent), 30, "the outage seen by the source watch")
            sim = CameraServer(port, fps=10, seed=40).start()
            await until(lambda: cam.state.value == "connected" and _seen_up(agent), 30, "the camera back")
        assert len(_downs(agent)) == 1, _downs(agent)
        await until(lambda: len(_downs(agent)) >= 2, 60, "source_down's end once steadily connected")
        end = _downs(agent)[1]
        assert end["active"] is False and end["flaps"] >= down["flaps"] + 2, end
        rows = recorded_events(agent, "source_down")
    finally:
        await agent.stop()
        sim.stop()
    assert [r["active"] for r in rows] == [True, False], rows  # recorded for the cloud, in order
