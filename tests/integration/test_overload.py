"""Overload and fairness: a source that floods the agent must not keep another source's rule from acting,
nor drop the one reading that mattered among its own redundant ones. Real Mosquitto peers; a burst is put
into a source's own hand-over queue as paho's thread would put it, so that its size and order are known."""

from __future__ import annotations

import json
import time

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.support.waits import until


def _agent(tmp_path, port: int) -> Agent:
    return Agent(
        parse_config(
            {
                "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "http": {"enabled": False},
                "sources": {
                    "flood": {"type": "mqtt", "port": port, "subscriptions": [{"topic": "flood/#"}]},
                    "cell": {
                        "type": "mqtt",
                        "port": port,
                        "subscriptions": [
                            {
                                "topic": "cell/temp",
                                "json_mapping": {"values": {"t": "Temp"}, "tag_prefix_topic": False},
                            }
                        ],
                    },
                },
                "rules": [
                    {"name": "noisy", "source": "flood", "tag": "flood/node1/f0", "above": 1e9},
                    {"name": "hot", "source": "cell", "tag": "Temp", "above": 50, "actions": ["trip"]},
                ],
                "actions": {
                    "trip": {"type": "mqtt_publish", "source": "cell", "when": {"verdict": "NG"}},
                },
            }
        )
    )


async def test_a_flooded_sources_burst_does_not_hold_another_sources_rule(tmp_path, mosquitto):
    # A misconfigured node's burst (here 2,000 messages of 4 fields: 8,000 readings) was handed to the rules
    # without the loop being given back once: a rule on another source, the OPC UA session's keep-alive and
    # the heartbeat waited for all of it (with 10,000 wide messages: over a minute, the PLC session timed out)
    agent = _agent(tmp_path, mosquitto.port)
    await agent.start()
    try:
        flood, cell = agent.sources["flood"], agent.sources["cell"]
        await until(lambda: flood.subscribed.is_set() and cell.subscribed.is_set(), what="subscriptions")
        hot = next(r for r in agent.rules if r.s.name == "hot")
        seen_at_trip: list[int] = []
        act = hot._act

        async def recording_act(names, res, item):
            if res.verdict == "NG":
                seen_at_trip.append(agent.source_items["flood"])
            await act(names, res, item)

        hot._act = recording_act
        burst = 2000
        payload = json.dumps({f"f{i}": float(i) for i in range(4)}).encode()
        now = time.time()
        for k in range(burst):  # queued first: its consumer wakes first
            flood._channel.put_threadsafe((f"flood/node{k % 10}", payload, now, False))
        cell._channel.put_threadsafe(("cell/temp", b'{"t": 60}', now, False))
        await until(lambda: agent.source_items["flood"] == 4 * burst and seen_at_trip, what="both handled")
        # the rule on the other source acted while the burst was still being read, not after all of it
        assert seen_at_trip[0] < 4 * burst
        await until(lambda: agent.actions.stats["trip"]["ok"] >= 1, what="the trip published")
    finally:
        await agent.stop()
