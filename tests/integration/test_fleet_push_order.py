"""A stream never gets an older desired state after a newer one (cloud_trainer.fleet.stream). A fleet-wide
push reads every agent's desired state once and queues it slice by slice with pauses in between; an agent
reached late in that push that was sent a newer state meanwhile (the admin rolled the version back, and the
agent reconnected or reported) was then sent the push's older one, rolled back to the version the admin
withdrew, and installed it again. Real control state (SQLite ``control.db``) and the real hub."""

from __future__ import annotations

import asyncio

from cloud_trainer.fleet import stream
from cloud_trainer.fleet.control import Control
from cloud_trainer.fleet.store import open_store
from cloud_trainer.fleet.stream import PUSH_SLICE, StreamHub
from cloud_trainer.registry import Registry


async def test_a_paused_fleet_wide_push_never_sends_an_agent_an_older_state_than_it_got(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(stream, "PUSH_PAUSE_S", 0.3)  # wide enough to act inside a pause on a busy machine
    store = open_store(None, tmp_path)
    control = Control(tmp_path / "control.db", Registry(tmp_path / "registry"), store)
    agents = [f"gw{i:03d}" for i in range(PUSH_SLICE + 20)]
    keys = [("default", a) for a in agents]

    def desire(agents: list[str], version: str, digest: str, dep: str) -> None:
        with control._write():
            for a in agents:
                control._set_desired(a, "vision", "part-inspection", version, digest, 1, dep)

    desire(agents, "1.1.0", "b" * 64, "dep1")  # a rollout of 1.1.0 to every agent
    hub = StreamHub(store=store, control=control)
    for k in keys:
        hub.streams[k] = asyncio.Queue(maxsize=8)
    fleet_wide = asyncio.create_task(hub.push(keys))
    while hub.pushes < PUSH_SLICE:  # the first slice is queued, then the push pauses
        await asyncio.sleep(0.005)
    assert not fleet_wide.done()
    late = next(k for k in keys if hub.streams[k].empty())  # an agent the push reaches after its pause

    desire([late[1]], "1.0.0", "a" * 64, "dep2:rollback")  # the admin rolls 1.1.0 back on this agent
    await hub.push([late])  # as at its reconnect or its report of an older generation
    await fleet_wide

    msgs = []
    while not hub.streams[late].empty():
        msgs.append(hub.streams[late].get_nowait().desired)
    assert msgs and [d.version for d in msgs[-1].desired] == ["1.0.0"], [
        (m.generation, [d.version for d in m.desired]) for m in msgs
    ]
    assert msgs[-1].desired[0].rollback and hub.sent[late] == msgs[-1].generation
    first = hub.streams[next(k for k in keys if k != late)]  # the others got the rollout, once
    assert first.qsize() == 1 and first.get_nowait().desired.desired[0].version == "1.1.0"
    store.close()
