"""A PLC write target that refuses an action's writes for good (a node the PLC does not let the agent write, a
value its type cannot hold) is told to the cloud once, as an episode: a ``write_failing`` event at the first
refusal, one when the target takes writes again, however often the action writes meanwhile. Before, each
refusal was counted and shown on the gateway's ``/status`` only: a fleet admin never learned that a line's
write-back was dead. Against a real asyncua server on a free loopback port."""

from __future__ import annotations

import asyncio

from asyncua import ua

from devices.opcua.client import OpcUaSource
from edge_agent.actions import ActionRunner
from tests.integration.test_plc_exact_values import _config
from tests.integration.test_plc_locked_edges import _locked_gate
from tests.support.peers import free_port, opcua_server
from tests.support.results import result
from tests.support.waits import until


def _failing(events: list) -> list[dict]:
    return [e.to_json_dict() for e in events if e["kind"] == "write_failing"]


async def test_a_locked_node_refusing_a_level_output_at_100_hz_is_one_event_and_its_unlock_one_more():
    port = free_port()
    srv, gate, node_id, _sent = await _locked_gate(port)  # not writable: BadUserAccessDenied
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": True, "reset_value": False}
    cfg = _config(port, {"gate": {**out, "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    events: list = []
    runner = ActionRunner(cfg, {"plc": src}, on_event=events.append)
    runner.write_recovered_after_s = 0.5
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 10, "connected")
        for i in range(60):  # a level output at 100 Hz: a write at every result, each refused
            await runner.handle(["gate"], result("NG" if i % 2 else "OK", i), None)
            await asyncio.sleep(0.01)
        await runner.flush(timeout_s=5)
        refused = runner.stats["gate"]["failed"]
        assert refused >= 5, dict(runner.stats["gate"])
        started = _failing(events)
        # before: no event at all, the refusals counted on the gateway only
        assert len(started) == 1, started
        assert {
            k: started[0][k] for k in ("action", "source", "node_id", "active", "failed", "failing_s")
        } == {
            "action": "gate",
            "source": "plc",
            "node_id": node_id,
            "active": True,
            "failed": 1,
            "failing_s": None,
        }, started
        assert "BadUserAccessDenied" in started[0]["reason"], started
        await gate.set_writable(True)  # the PLC lets the agent write the node again
        await until(lambda: node_id not in src.target_errors, 10, "the unlock seen")
        for i in range(5):
            await runner.handle(["gate"], result("NG", 100 + i), None)
            await asyncio.sleep(0.01)
        await until(lambda: runner.stats["gate"]["ok"] >= 1, 10, "a write taken")  # no flush: a stop's
        assert runner.stats["gate"]["ok"] >= 1 and await gate.read_value() is True, dict(runner.stats["gate"])
        assert len(_failing(events)) == 1, _failing(events)  # not ended at the first write taken
        # no result comes any more: the end is told after 0.5 s without a refusal all the same
        await until(lambda: len(_failing(events)) == 2, 5, "the end of the episode")
        await asyncio.sleep(0.3)
    finally:
        await src.stop()
        await srv.stop()
    ended = _failing(events)
    assert len(ended) == 2, ended
    end = ended[1]
    assert (end["active"], end["node_id"], end["failed"]) == (False, node_id, refused), end
    assert end["failing_s"] > 0 and "BadUserAccessDenied" in end["reason"], end


async def test_a_real_refusing_a_whole_number_it_cannot_hold_raises_one_event_naming_node_and_reason():
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    speed = await obj.add_variable(ua.NodeId("Speed", idx), "Speed", ua.Variant(0.0, ua.VariantType.Float))
    await speed.set_writable()
    await srv.start()
    node_id = f"ns={idx};s=Speed"
    cfg = _config(
        port, {"speed": {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": 16777217}}
    )
    src = OpcUaSource("plc", cfg.sources["plc"])
    events: list = []
    runner = ActionRunner(cfg, {"plc": src}, on_event=events.append)
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 10, "connected")
        for i in range(30):
            await runner.handle(["speed"], result("NG", i), None)
            await asyncio.sleep(0.01)
        await runner.flush(timeout_s=5)
    finally:
        await src.stop()
        await srv.stop()
    assert await speed.read_value() == 0.0
    assert runner.stats["speed"]["failed"] >= 5, dict(runner.stats["speed"])
    told = _failing(events)
    assert len(told) == 1 and told[0]["active"] is True and told[0]["node_id"] == node_id, told
    assert "Float" in told[0]["reason"] and "16777217" in told[0]["reason"], told


async def test_an_alarm_mirror_on_a_locked_node_is_told_once_as_its_alarm_goes_and_comes():
    port = free_port()
    srv, _gate, node_id, _sent = await _locked_gate(port)
    alarm = {"type": "alarm", "opcua_source": "plc", "node_id": node_id, "raise_after": 1, "clear_after": 1}
    cfg = _config(port, {"lamp": {**alarm, "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    events: list = []
    runner = ActionRunner(cfg, {"plc": src}, on_event=events.append)
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 10, "connected")
        for i in range(6):  # raised, cleared, raised ...: each transition's mirror write refused
            await runner.handle(["lamp"], result("OK" if i % 2 else "NG", i), None)
            await runner.flush(timeout_s=5)
    finally:
        await src.stop()
        await srv.stop()
    assert runner.stats["lamp"]["failed"] == 6, dict(runner.stats["lamp"])
    told = _failing(events)
    assert [(e["action"], e["source"], e["node_id"], e["active"]) for e in told] == [
        ("lamp", "plc", node_id, True)
    ], told
    assert "BadUserAccessDenied" in told[0]["reason"], told


async def _int16_plc():
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    count = await obj.add_variable(ua.NodeId("Count", idx), "Count", ua.Variant(0, ua.VariantType.Int16))
    await count.set_writable()
    await srv.start()
    return port, srv, count, f"ns={idx};s=Count"


async def test_a_reset_taken_while_the_value_is_still_refused_ends_nothing_however_rare_the_ng():
    """An INT given 70000 (it can never hold it) with reset_value 0 (taken): one NG now and then, the reset
    written between. Before, each taken reset ended the episode after the quiet time ('taken again') and the
    next NG started another: two events per NG for a value that never reached the PLC."""
    port, srv, count, node_id = await _int16_plc()
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": 70000, "reset_value": 0}
    cfg = _config(port, {"mark": {**out, "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    events: list = []
    runner = ActionRunner(cfg, {"plc": src}, on_event=events.append)
    runner.write_recovered_after_s = 0.3
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 10, "connected")
        for i in range(60):  # results at 20 Hz, an NG every 0.75 s (at the default 10 s: one in 25 s)
            await runner.handle(["mark"], result("NG" if i % 15 == 0 else "OK", i), None)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)
    finally:
        await runner.flush(timeout_s=5)
        await src.stop()
        await srv.stop()
    st = runner.stats["mark"]
    assert st["ok"] >= 1 and st["failed"] + st["reset_refused"] >= 3, dict(st)
    assert await count.read_value() == 0
    told = _failing(events)
    assert [e["active"] for e in told] == [True], told  # one episode, not ended while 70000 is refused


async def test_an_episode_is_ended_by_the_next_agent_once_its_fixed_target_takes_writes(tmp_path):
    """The agent stops mid-episode (flush, as Agent.stop does): no timer outlives it and the episode is kept in
    the data folder; the next agent, its config fixed (7000 for the 70000 the INT could not hold), tells the end
    once the node takes its writes. A later agent whose config no longer has the action ends an episode left
    open at once. Before, the new agent never told the end: the cloud showed the target failing for ever."""
    port, srv, count, node_id = await _int16_plc()
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "when": {"verdict": "NG"}}
    try:
        events: list = []
        cfg = _config(port, {"mark": {**out, "value": 70000}})
        src = OpcUaSource("plc", cfg.sources["plc"])
        runner = ActionRunner(cfg, {"plc": src}, on_event=events.append, state_dir=tmp_path)
        runner.write_recovered_after_s = 0.3
        await src.start()
        await until(lambda: src.state.value == "connected", 10, "connected")
        runner.start()
        for i in range(3):
            await runner.handle(["mark"], result("NG", i), None)
        await runner.flush(timeout_s=5)
        refused = runner.stats["mark"]["failed"]
        assert refused >= 1 and runner._recover_timer is None, dict(runner.stats["mark"])
        await src.stop()
        assert [e["active"] for e in _failing(events)] == [True], _failing(events)
        assert (tmp_path / "write-failing.json").exists()

        events2: list = []
        cfg2 = _config(port, {"mark": {**out, "value": 7000}})
        src2 = OpcUaSource("plc", cfg2.sources["plc"])
        runner2 = ActionRunner(cfg2, {"plc": src2}, on_event=events2.append, state_dir=tmp_path)
        runner2.write_recovered_after_s = 0.3
        await src2.start()
        await until(lambda: src2.state.value == "connected", 10, "connected")
        runner2.start()
        assert _failing(events2) == []  # still the same episode: no second start
        await runner2.handle(["mark"], result("NG", 10), None)
        await until(lambda: runner2.stats["mark"]["ok"] == 1, 10, "7000 written")
        await until(lambda: len(_failing(events2)) == 1, 5, "the end of the episode")
        end = _failing(events2)[0]
        assert (end["active"], end["action"], end["node_id"], end["failed"]) == (
            False,
            "mark",
            node_id,
            refused,
        ), end
        assert end["failing_s"] > 0, end
        await runner2.flush(timeout_s=5)
        await src2.stop()
        assert await count.read_value() == 7000

        # an episode left open by an action the next config no longer has: ended at once, failing_s null
        src3 = OpcUaSource("plc", cfg.sources["plc"])
        runner3 = ActionRunner(cfg, {"plc": src3}, on_event=events.append, state_dir=tmp_path)
        await src3.start()
        await until(lambda: src3.state.value == "connected", 10, "connected")
        await runner3.handle(["mark"], result("NG", 20), None)  # 70000 refused again: a new episode
        await runner3.flush(timeout_s=5)
        await src3.stop()
        assert [e["active"] for e in _failing(events)] == [True, True], _failing(events)
        events4: list = []
        runner4 = ActionRunner(_config(port, {}), {}, on_event=events4.append, state_dir=tmp_path)
        runner4.start()
        gone = _failing(events4)
        assert [(e["active"], e["action"], e["failing_s"]) for e in gone] == [(False, "mark", None)], gone
        ActionRunner(_config(port, {}), {}, on_event=events4.append, state_dir=tmp_path).start()
        assert len(_failing(events4)) == 1  # told once
    finally:
        await srv.stop()
