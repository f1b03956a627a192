"""A source lost for good (a camera unplugged, a PLC switched off, a broker gone) was a metric
(``edge_source_up`` 0), an error count and a log line on the gateway: nothing reached the cloud, so a line
whose camera had been dead for a week looked like a quiet line. A source not connected for
``source_down_after_s`` (30 s) now raises ``source_down`` (active, with its state and last error), recorded in
the outbox like every event; connected again, the same kind with active false and how long it was down."""

from __future__ import annotations

import functools

import pytest

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.support.models import make_keypair, make_package
from tests.support.recorded import recorded_events
from tests.support.waits import until

PASS_S = 0.5  # the agent's source watch passes every 2 s in service; here every 0.5 s (``quick_watch``)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("downpkg")
    key, pub = make_keypair(tmp / "keys")
    return make_package(tmp, kind="vision", key=key), pub


def _downs(agent: Agent) -> list[dict]:
    return [dict(e) for e in agent.events if e["kind"] == "source_down"]


def quick_watch(agent: Agent) -> Agent:
    """The agent with its source watch passing every ``PASS_S``: an outage is told within a pass of it."""
    agent._watch_sources = functools.partial(agent._watch_sources, PASS_S)  # type: ignore[method-assign]
    return agent


def camera_agent(tmp_path, package, url: str) -> Agent:
    """An agent inspecting the frames of the camera at ``url``, which it reopens quickly when lost (its source
    watch passing every ``PASS_S``)."""
    pkg, pub = package
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "trusted_keys": [str(pub)],
                "http": {"enabled": False},
                "outbox": {},
                "sources": {
                    "cam": {
                        "type": "camera",
                        "url": url,
                        "open_timeout_s": 1,
                        "read_timeout_s": 1,
                        "reconnect_initial_s": 0.2,
                        "reconnect_max_s": 0.5,
                    }
                },
                "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
                "pipelines": [{"name": "inspect", "source": "cam", "model": "vision"}],
            }
        )
    )
    return quick_watch(agent)


async def test_a_camera_down_for_long_raises_source_down_and_its_return_ends_it(tmp_path, package):
    from simulators.camera import CameraServer

    sim = CameraServer(0, fps=10, seed=4).start()
    port = sim.port
    agent = camera_agent(tmp_path, package, sim.url)
    agent.source_down_after_s = 1.0  # 30 s in service
    await agent.start()
    try:
        await until(lambda: agent.pipelines[0].stats.results >= 2, 30, "first results")
        assert not _downs(agent)
        sim.stop()  # the camera is gone
        await until(lambda: _downs(agent), 30, "source_down")
        down = _downs(agent)[0]
        assert down["source"] == "cam" and down["active"] is True and down["state"] != "connected", down
        assert down["last_error"] and down["down_s"] >= 1.0, down
        results = agent.pipelines[0].stats.results
        sim = CameraServer(port, fps=10, seed=5).start()  # back, at the same address
        await until(lambda: len(_downs(agent)) >= 2, 30, "source_down's end")
        up = _downs(agent)[1]
        assert up["source"] == "cam" and up["active"] is False and up["down_s"] >= 1.0, up
        await until(lambda: agent.pipelines[0].stats.results > results, 30, "results again")
        assert len(_downs(agent)) == 2  # one episode: one start, one end
        rows = recorded_events(agent, "source_down")
    finally:
        await agent.stop()
        sim.stop()
    assert [r["active"] for r in rows] == [True, False], rows  # recorded for the cloud, in order


async def test_an_outage_that_ends_while_the_agent_restarts_has_its_end_said_by_the_next_agent(tmp_path):
    """A PLC (a real asyncua server) that is away: the agent tells the cloud (source_down, active) and is stopped
    (a restart, a config reload); the PLC is back before the next agent starts. The next agent records the end in
    the same outbox once connected. Before, it knew nothing of the outage: the cloud had the PLC down for good."""
    from tests.integration.test_opcua_halt_event import _plc
    from tests.integration.test_opcua_halt_recovery import _line
    from tests.support.peers import free_port

    port = free_port()
    config = {
        "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "outbox": {},
        "sources": {"plc": _plc(port, 2)},
    }
    first = quick_watch(Agent(parse_config(config)))
    first.source_down_after_s = 1.0  # 30 s in service
    second: Agent | None = None
    srv = None
    try:
        await first.start()
        await until(lambda: _downs(first), 30, "source_down")
        await first.stop()
        srv, _ = await _line(port)  # the PLC is back
        second = quick_watch(Agent(parse_config(config)))
        second.source_down_after_s = 1.0
        await second.start()
        await until(lambda: _downs(second), 30, "the outage's end from the next agent")
        rows = recorded_events(second, "source_down")
    finally:
        if second is not None:
            await second.stop()
        await first.stop()
        if srv is not None:
            await srv.stop()
    (end,) = _downs(second)
    assert end["source"] == "plc" and end["active"] is False and end["down_s"] >= 1.0, end
    assert [r["active"] for r in rows] == [True, False], rows
