"""A PLC write target that refuses an action's writes for good (a node the PLC does not let the agent write, a
value its type cannot hold) is told to the cloud once, as an episode: a ``write_failing`` event at the first
refusal, one when the target takes writes again, however often the action writes meanwhile. Before, each
refusal was counted and shown on the gateway's ``/status`` only: a fleet admin never learned that a line's
write-back was dead. Against a real asyncua server on a free loopback port."""

from __future__ import annotations

import asyncio

from asyncua import ua
from asyncua.common.callback import CallbackType
from asyncua.common.utils import ServiceError

from devices.opcua.client import OpcUaSource
from edge_agent.actions import ActionRunner
from edge_agent.config import parse_config
from tests.integration.test_plc_exact_values import _config, _config_data
from tests.integration.test_plc_locked_edges import _locked_gate
from tests.support.peers import free_port
from tests.support.plc import agent_side, plc
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
        await until(lambda: src.state.value == "connected", 30, "connected")
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
        await until(lambda: node_id not in src.target_errors, 30, "the unlock seen")
        for i in range(5):
            await runner.handle(["gate"], result("NG", 100 + i), None)
            await asyncio.sleep(0.01)
        await until(lambda: runner.stats["gate"]["ok"] >= 1, 30, "a write taken")  # no flush: a stop's
        assert runner.stats["gate"]["ok"] >= 1 and await gate.read_value() is True, dict(runner.stats["gate"])
        assert len(_failing(events)) == 1, _failing(events)  # not ended at the first write taken
        # no result comes any more: the end is told after 0.5 s without a refusal all the same
        await until(lambda: len(_failing(events)) == 2, 30, "the end of the episode")
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
    events: list = []
    async with plc({"Speed": ua.Variant(0.0, ua.VariantType.Float)}) as p:
        node_id = p.node_id("Speed")
        out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": 16777217}
        async with agent_side(_config(p.port, {"speed": out}), events) as (_src, runner):
            for i in range(30):
                await runner.handle(["speed"], result("NG", i), None)
                await asyncio.sleep(0.01)
            await runner.flush(timeout_s=5)
        assert await p.nodes["Speed"].read_value() == 0.0
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
        await until(lambda: src.state.value == "connected", 30, "connected")
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


_INT16 = {"Count": ua.Variant(0, ua.VariantType.Int16)}


async def test_a_reset_taken_while_the_value_is_still_refused_ends_nothing_however_rare_the_ng():
    """An INT given 70000 (it can never hold it) with reset_value 0 (taken): one NG now and then, the reset
    written between. Before, each taken reset ended the episode after the quiet time ('taken again') and the
    next NG started another: two events per NG for a value that never reached the PLC."""
    events: list = []
    async with plc(_INT16) as p:
        out = {
            "type": "opcua_write",
            "source": "plc",
            "node_id": p.node_id("Count"),
            "value": 70000,
            "reset_value": 0,
        }
        cfg = _config(p.port, {"mark": {**out, "when": {"verdict": "NG"}}})
        async with agent_side(cfg, events, recovered_after_s=0.3) as (_src, runner):
            try:
                for i in range(60):  # results at 20 Hz, an NG every 0.75 s (at the default 10 s: one in 25 s)
                    await runner.handle(["mark"], result("NG" if i % 15 == 0 else "OK", i), None)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.6)
            finally:
                await runner.flush(timeout_s=5)
        st = runner.stats["mark"]
        assert st["ok"] >= 1 and st["failed"] + st["reset_refused"] >= 3, dict(st)
        assert await p.nodes["Count"].read_value() == 0
    told = _failing(events)
    assert [e["active"] for e in told] == [True], told  # one episode, not ended while 70000 is refused


async def test_an_episode_is_ended_by_the_next_agent_once_its_fixed_target_takes_writes(tmp_path):
    """The agent stops mid-episode (flush, as Agent.stop does): no timer outlives it and the episode is kept in
    the data folder; the next agent, its config fixed (7000 for the 70000 the INT could not hold), tells the end
    once the node takes its writes. A later agent whose config no longer has the action ends an episode left
    open at once. Before, the new agent never told the end: the cloud showed the target failing for ever."""
    async with plc(_INT16) as p:
        port, count, node_id = p.port, p.nodes["Count"], p.node_id("Count")
        out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "when": {"verdict": "NG"}}
        events: list = []
        cfg = _config(port, {"mark": {**out, "value": 70000}})
        src = OpcUaSource("plc", cfg.sources["plc"])
        runner = ActionRunner(cfg, {"plc": src}, on_event=events.append, state_dir=tmp_path)
        runner.write_recovered_after_s = 0.3
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "connected")
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
        await until(lambda: src2.state.value == "connected", 30, "connected")
        runner2.start()
        assert _failing(events2) == []  # still the same episode: no second start
        await runner2.handle(["mark"], result("NG", 10), None)
        await until(lambda: runner2.stats["mark"]["ok"] == 1, 30, "7000 written")
        await until(lambda: len(_failing(events2)) == 1, 30, "the end of the episode")
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
        await until(lambda: src3.state.value == "connected", 30, "connected")
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


async def test_targets_the_check_at_connect_finds_failing_are_episodes_before_any_write_and_end_once_fixed(
    tmp_path,
):
    """A node that does not exist and an INT given 70000: the source's check at connect knows both will fail
    (target_errors), with no result yet. Before, no event until a write was refused, and none at all for an output
    that writes only on a rare NG or an alarm's mirror: the console showed the line's write-back healthy. Now each
    is an episode at once (failed 0: no write refused yet), the same one at the next connect (a restart), and it
    ends when the next agent, its config fixed, finds the target fine, with no write needed."""
    events: list = []
    async with plc(_INT16) as p:
        out = {"type": "opcua_write", "source": "plc", "when": {"verdict": "NG"}}
        cfg = _config(
            p.port,
            {
                "count": {**out, "node_id": p.node_id("Count"), "value": 70000},
                "gate": {**out, "node_id": p.node_id("Gate"), "value": True},
                "lamp": {"type": "alarm", "opcua_source": "plc", "node_id": p.node_id("Lamp")},
            },
        )
        async with agent_side(cfg, events, tmp_path) as (src, runner):
            runner.start()
            await until(lambda: len(_failing(events)) == 3, 30, "an episode a target")
            assert len(src.target_errors) == 3, src.target_errors
        started = {e["action"]: e for e in _failing(events)}
        assert {a: (e["active"], e["failed"], e["node_id"]) for a, e in started.items()} == {
            "count": (True, 0, p.node_id("Count")),
            "gate": (True, 0, p.node_id("Gate")),
            "lamp": (True, 0, p.node_id("Lamp")),
        }, started
        assert "70000" in started["count"]["reason"] and "does not exist" in started["gate"]["reason"], (
            started
        )
        async with agent_side(cfg, events, tmp_path) as (_src, runner):  # a restart: the same episodes
            runner.start()
            await asyncio.sleep(0.3)
        assert len(_failing(events)) == 3, _failing(events)
        for name in ("Gate", "Lamp"):  # a PLC download brings the nodes
            node = await p.server.nodes.objects.get_child([f"{p.idx}:PLC"])
            await (await node.add_variable(ua.NodeId(name, p.idx), name, False)).set_writable()
        fixed = _config(
            p.port,
            {**cfg.model_dump()["actions"], "count": {**out, "node_id": p.node_id("Count"), "value": 7000}},
        )
        async with agent_side(fixed, events, tmp_path, recovered_after_s=0.3) as (_src, runner):
            runner.start()
            await until(lambda: len(_failing(events)) == 6, 30, "the ends, no result needed")
        assert await p.read() == {"Count": 0}  # nothing written: the checks alone
    ended = {e["action"]: e for e in _failing(events)[3:]}
    assert {a: (e["active"], e["failed"]) for a, e in ended.items()} == {
        "count": (False, 0),
        "gate": (False, 0),
        "lamp": (False, 0),
    }, ended
    # nothing was written: the end says the check found it fine (before: 'are taken again, after 0 refused')
    assert all("found fine by the source's check" in e["message"] for e in ended.values()), ended


async def test_a_write_out_of_retries_is_an_episode_if_the_plc_refuses_it_not_if_the_plc_is_away():
    """A PLC away (its source not connected: a reboot, a network blip) is the source's ``source_down``, quiet for
    short outages: the values owed through it are no write_failing episode (before: one start and one end per
    output and outage, 30 events for 3 outages of 6 s with 5 outputs). A connected PLC that does not take the
    write within its retries (BadTooManyOperations: busy) is failing: an episode, ended once it takes the value."""
    events: list = []
    async with plc(
        {"Gate": ua.Variant(False, ua.VariantType.Boolean), "Lamp": ua.Variant(False, ua.VariantType.Boolean)}
    ) as p:
        busy = _busy(p, False)
        retry = {"max_attempts": 2, "backoff_s": 0.05}
        out = {"type": "opcua_write", "source": "plc", "value": True, "retry": retry}
        cfg = _config(
            p.port,
            {"gate": {**out, "node_id": p.node_id("Gate")}, "lamp": {**out, "node_id": p.node_id("Lamp")}},
        )
        src = OpcUaSource("plc", cfg.sources["plc"])
        runner = ActionRunner(cfg, {"plc": src}, on_event=events.append)
        runner.write_recovered_after_s = 0.3
        try:
            await runner.handle(["gate"], result("NG", 0), None)  # not connected: every attempt fails
            await until(lambda: runner.stats["gate"]["failed"] == 1, 30, "out of retries")
            await src.start()  # the PLC answers: the value tried again every second lands
            await until(lambda: runner.stats["gate"]["ok"] == 1, 30, "the owed value taken")
            assert _failing(events) == []  # before: a start and an end for an outage of a second
            busy["on"] = True
            await runner.handle(["lamp"], result("NG", 1), None)
            await until(lambda: len(_failing(events)) == 1, 30, "the episode")
            told = _failing(events)[0]
            assert (told["active"], told["failed"], told["node_id"]) == (True, 1, p.node_id("Lamp")), told
            assert (
                "BadTooManyOperations" in told["reason"] and "failed after 2 attempts" in told["message"]
            ), told
            busy["on"] = False
            await until(lambda: len(_failing(events)) == 2, 30, "the end")
        finally:
            await runner.flush(timeout_s=2)
            await src.stop()
        assert await p.nodes["Gate"].read_value() is True and await p.nodes["Lamp"].read_value() is True
    end = _failing(events)[1]
    assert (end["active"], end["failed"], end["node_id"]) == (False, 1, p.node_id("Lamp")), end


async def test_an_out_of_retries_episode_saved_at_stop_ends_after_a_restart_that_owes_nothing(tmp_path):
    """A value the busy PLC did not take within its retries is an episode; the agent stops, giving up the owed
    value (``flush``). Before, after a restart with the PLC fine, that episode stayed open until the action next
    wrote (days for a rare NG or alarm), the console showing a healthy target failing. Now nothing is owed, and it
    ends at the restart; one the check at connect finds failing still stays (another test)."""
    events: list = []
    async with plc({"Gate": ua.Variant(False, ua.VariantType.Boolean)}) as p:
        busy = _busy(p, True)
        retry = {"max_attempts": 2, "backoff_s": 0.05}
        out = {
            "type": "opcua_write",
            "source": "plc",
            "value": True,
            "retry": retry,
            "node_id": p.node_id("Gate"),
        }
        cfg = _config(p.port, {"gate": out})
        async with agent_side(cfg, events, state_dir=tmp_path) as (_src, runner):
            await runner.handle(["gate"], result("NG", 0), None)
            await until(lambda: len(_failing(events)) == 1, 30, "the episode")
            await runner.flush(timeout_s=0.5)  # stop: the owed value is given up
        assert _failing(events)[0]["active"] is True
        busy["on"] = False
        async with agent_side(cfg, events, state_dir=tmp_path) as (src, runner):
            await until(lambda: len(_failing(events)) == 2, 30, "the end after the restart")
            assert src.target_errors == {}
        end = _failing(events)[1]
        assert (end["active"], end["node_id"], end["failed"]) == (False, p.node_id("Gate"), 1), end
        assert "owed no longer" in end["message"], end


async def test_a_connected_plc_that_never_answers_a_write_is_an_episode_not_a_lost_connection(monkeypatch):
    """The session up (reads answered, keepalive fine) but no answer to any write: a gateway holding writes for a
    device behind it that does not answer. Before, the timeout was taken for a lost connection: no write_failing
    episode and, the source staying connected, no source_down either; the PLC never got the output and the fleet
    was never told. Now it is an episode, ended once the PLC takes the owed value."""
    from asyncua.server import uaprocessor

    hang = {"on": True}
    former = uaprocessor.UaProcessor._process_message

    async def no_answer_to_writes(self, typeid, requesthdr, seqhdr, body):
        if hang["on"] and typeid == ua.NodeId(ua.ObjectIds.WriteRequest_Encoding_DefaultBinary):
            return True  # dropped: no answer, ever
        return await former(self, typeid, requesthdr, seqhdr, body)

    monkeypatch.setattr(uaprocessor.UaProcessor, "_process_message", no_answer_to_writes)
    events: list = []
    async with plc({"Gate": ua.Variant(False, ua.VariantType.Boolean)}) as p:
        data = _config_data(p.port, {"gate": _gate(p)})
        data["sources"]["plc"]["connect_timeout_s"] = 0.5
        async with agent_side(parse_config(data), events, recovered_after_s=0.3) as (src, runner):
            await runner.handle(["gate"], result("NG", 0), None)
            await until(lambda: len(_failing(events)) == 1, 30, "the episode (before: none, for good)")
            told = _failing(events)[0]
            assert told["active"] is True and "not answered" in told["reason"], told
            assert src.state.value == "connected"
            hang["on"] = False
            await until(lambda: len(_failing(events)) == 2, 30, "the end once the value is taken")
            await runner.flush(timeout_s=1)
        assert await p.nodes["Gate"].read_value() is True


async def test_a_check_at_reconnect_does_not_end_the_episode_of_a_value_a_busy_plc_still_refuses():
    """A PLC answering BadTooManyOperations to every write (busy for good) passes the source's check of the node
    (it exists, is writable, its type fits). Before, the check at a reconnect after a blip ended the episode while
    the owed value was still refused: the console showed the target fine, the node never got the value. Now the
    episode stays until the owed value is taken."""
    events: list = []
    async with plc({"Gate": ua.Variant(False, ua.VariantType.Boolean)}) as p:
        busy = _busy(p, True)
        async with agent_side(_config(p.port, {"gate": _gate(p)}), events, recovered_after_s=0.3) as (
            src,
            runner,
        ):
            await runner.handle(["gate"], result("NG", 0), None)
            await until(lambda: len(_failing(events)) == 1, 30, "the episode")
            busy["on"] = False  # (the server's own writes at its start)
            await p.server.stop()  # a network blip: the check at reconnect finds the node fine
            await asyncio.sleep(0.5)
            await p.server.start()
            busy["on"] = True
            await until(lambda: src.state.value == "connected", 30, "reconnected")
            await asyncio.sleep(2.5)
            assert len(_failing(events)) == 1, _failing(events)  # before: ended by the check
            busy["on"] = False
            await until(lambda: len(_failing(events)) == 2, 30, "the end once the value is taken")
            await runner.flush(timeout_s=1)
        assert await p.nodes["Gate"].read_value() is True
    assert "found fine by the source's check" not in _failing(events)[1]["message"], _failing(events)[1]


def _busy(p, on: bool) -> dict:
    """The PLC ``p`` answers BadTooManyOperations (busy) to every write while the dict returned says ``on``."""
    busy = {"on": on}

    async def too_many(event, _dispatcher) -> None:
        if busy["on"]:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)

    p.server.subscribe_server_callback(CallbackType.PreWrite, too_many)
    return busy


def _gate(p) -> dict:
    retry = {"max_attempts": 2, "backoff_s": 0.05}
    return {
        "type": "opcua_write",
        "source": "plc",
        "value": True,
        "node_id": p.node_id("Gate"),
        "retry": retry,
    }


async def test_a_namespace_uri_the_server_does_not_know_is_the_targets_fault_at_connect_and_at_writes():
    """``node_id: nsu=urn:line2;s=Gate`` on a PLC whose namespace array has no urn:line2 (a copied config, a URI
    mistyped): the node cannot exist there, as a missing node cannot. The check at connect found it failing but
    told no one (a read that failed, like a busy PLC's), so no write_failing episode came before a write, and a
    rare NG output showed healthy on the console. Now it is an episode at once, naming the namespace, and a
    write is refused, not retried."""
    events: list = []
    async with plc(_INT16) as p:
        node_id = "nsu=urn:line2;s=Gate"
        cfg = _config(p.port, {"gate": {**_gate(p), "node_id": node_id, "when": {"verdict": "NG"}}})
        async with agent_side(cfg, events) as (src, runner):
            runner.start()
            await until(lambda: _failing(events), 30, "an episode at connect, before any write")
            assert "has no namespace 'urn:line2'" in src.target_errors[node_id], src.target_errors
            await runner.handle(["gate"], result("NG", 0), None)
            await runner.flush(timeout_s=5)
            assert runner.stats["gate"]["failed"] == 1 and not runner.stats["gate"].get("retried"), (
                runner.stats
            )
        (started,) = _failing(events)
        assert (started["active"], started["node_id"]) == (True, node_id), started
        assert "has no namespace 'urn:line2'" in started["reason"], started
