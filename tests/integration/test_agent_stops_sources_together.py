"""An agent's sources are stopped together, not one after another: each may wait out its own peer (an MQTT
broker that takes nothing more holds a stop for up to ~9 s), and one after another a few dead peers passed the
service manager's stop timeout (systemd's TimeoutStopSec=30), which then kills the agent mid-stop."""

from __future__ import annotations

import asyncio

from devices.base import ConnectionState
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.support.waits import until


async def test_the_sources_stops_run_at_once_so_slow_peers_do_not_add_up(tmp_path, mosquitto):
    names = ("line1", "line2", "line3")
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
                "http": {"enabled": False},
                "sources": {n: {"type": "mqtt", "port": mosquitto.port} for n in names},
            }
        )
    )
    await agent.start()
    for n in names:
        await until(lambda n=n: agent.sources[n].connected.is_set())
    begun: dict[str, asyncio.Event] = {n: asyncio.Event() for n in names}
    overlapped: dict[str, bool] = {}

    def slow_stop(name: str, stop):
        async def wrapped():
            # a stop that waits on its peer: it ends once every other source's stop has begun too (or gives up
            # after 10 s, as a dead peer's would), then stops the real source
            begun[name].set()
            try:
                async with asyncio.timeout(10):
                    await asyncio.gather(*(e.wait() for e in begun.values()))
                overlapped[name] = True
            except TimeoutError:
                overlapped[name] = False
            await stop()

        return wrapped

    for n in names:
        src = agent.sources[n]
        src.stop = slow_stop(n, src.stop)
    await agent.stop()
    assert overlapped == dict.fromkeys(names, True), overlapped  # one after another: each waited in vain
    assert all(agent.sources[n].state is ConnectionState.STOPPED for n in names)
