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
        await runner.flush(timeout_s=5)
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
