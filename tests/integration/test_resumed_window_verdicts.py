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


async def test_a_rollback_cut_between_its_mark_and_its_state_is_held_after_the_fleet_heard_it(fleet):  # noqa: F811
    """gw1 installs 1.1.0 and ends inside its health window just after the rollback's mark (``.rolled-back/<folder>``)
    and before its state.json (which still names 1.1.0 on probation). The start reconciles from the mark: 1.0.0
    serves again and the fleet hears ``rolled_back``. The fleet acknowledges it and still desires 1.1.0 (a halt not
    yet made); at the next start that deployment was installed again, the rollback's verdict lost with its words.
    Now it is held, as the health check's verdict: declined, not installed."""
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
    store = gw1.slots["vision"].store
    candidate = store.state()["current"]
    await gw1.stop()
    store.mark_rolled_back(
        candidate, "health"
    )  # (the health check's) the mark made, the state.json after it not: the end came between them
    heard: list[str] = []
    on_report = srv.control.on_report

    def acknowledged_only(agent, dep_id, slot, ver, step, *a, **kw):  # the rollout's halt not made yet
        if agent == "gw1" and ver == "1.1.0":
            heard.append(step)
            return True
        return on_report(agent, dep_id, slot, ver, step, *a, **kw)

    srv.control.on_report = acknowledged_only
    agents["gw1"] = gw1 = Agent(gw1.cfg)
    await gw1.start()
    assert version(gw1) == "1.0.0"  # restored from the mark
    await until(lambda: "rolled_back" in heard, what="the fleet to hear the rollback")
    await until(
        lambda: not list((gw1.cfg.data_dir / "deployments").glob("*.json")), what="the outcome settled"
    )
    await gw1.stop()
    agents["gw1"] = gw1 = Agent(gw1.cfg)
    await gw1.start()
    await until(
        lambda: any(
            s["step"] in ("failed", "downloading") and s["version"] == "1.1.0" for s in gw1.manager.steps
        ),
        what="the deployment, still desired, declined or installed",
    )
    assert version(gw1) == "1.0.0"
    assert not any(s["step"] == "downloading" for s in gw1.manager.steps), gw1.manager.steps
