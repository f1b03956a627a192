"""A health window resumed after a restart keeps its verdict to itself until it has one: a real fleet service (gRPC,
mTLS, SQLite, a registry of signed packages) and a real agent (camera folder, ONNX Runtime) restarted inside the
window of a version it installed."""

from __future__ import annotations

import asyncio

from edge_agent.agent import Agent
from tests.integration.test_fleet_control import _restart_with_health, fleet, until, version  # noqa: F401

FOR_GOOD = {"window_s": 120.0, "min_items": 100_000, "min_latency_increase_ms": 10_000}  # ends in no test


async def test_a_swap_refused_beside_a_resumed_window_does_not_confirm_its_candidate(fleet):  # noqa: F811
    """gw1 installs 1.1.0 and is restarted inside its health window: the window starts again. The admin rolls gw1
    back to 1.3.0 (signed by a key gw1 does not trust), which goes through beside the window and is refused. The
    refusal set the slot ``active`` while the watch ran on 1.1.0, and the manager, reading the state, reported
    1.1.0 healthy before its verdict. Now the slot says its watch runs on the model it serves: still watching, and
    1.1.0 is not confirmed."""
    srv, agents, _ = fleet
    gw1 = await _restart_with_health(agents, "gw1", **FOR_GOOD)
    dep = srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "agents": ["gw1"],
            "strategy": "all_at_once",
        }
    )
    await until(lambda: srv.control._get(dep["id"])["targets"]["gw1"]["status"] == "active", what="the swap")
    await gw1.stop()  # orderly, inside the health window
    agents["gw1"] = gw1 = Agent(gw1.cfg)
    await gw1.start()
    slot, mgr = gw1.slots["vision"], gw1.manager
    assert version(gw1) == "1.1.0" and slot.state == "watching"  # resumed for a whole new window
    srv.control.rollback("part-inspection", "1.3.0", "vision", ["gw1"])
    await until(
        lambda: any(s["step"] == "failed" and s["version"] == "1.3.0" for s in mgr.steps),
        what="gw1 to refuse 1.3.0",
    )
    await asyncio.sleep(1.0)  # (several heartbeats: the pending file of 1.1.0 is looked at each time)
    assert slot.state == "watching" and slot.watches_active(), slot.state
    assert not any(s["step"] == "healthy" and s["version"] == "1.1.0" for s in mgr.steps), mgr.steps
