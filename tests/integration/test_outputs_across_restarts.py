"""A PLC output never stays at a value the agent has left: a pulse's reset or an alarm's clear that could
not be written while the PLC was away (past every retry) is written when it is back; a stop while a long
pulse is high ends the pulse with its reset; and a new agent (a restart, a config reload) clears what
the one before it may have left high: a pulse node at its first result that is no edge, an alarm's
OPC UA mirror and retained MQTT state once the alarm is found clear. Against a real asyncua server and
a real Mosquitto broker on free loopback ports."""

from __future__ import annotations

import asyncio
import json
import logging

import paho.mqtt.client as paho
from asyncua import ua
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt.client import MqttSource
from devices.opcua.client import OpcUaSource
from edge_agent import actions
from edge_agent.actions import ActionRunner
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from protocols import topics
from tests.support.peers import free_port, opcua_server
from tests.support.results import result
from tests.support.waits import until


async def _plc(port: int, gate: bool = False, lamp: bool = False):
    """The PLC: a Boolean ``Gate`` (a reject gate) and ``Lamp`` (an alarm lamp), writable, at the given
    values (a PLC that restarted keeps its outputs' values, or has them from its own program)."""
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    nodes = {}
    for name, v in (("Gate", gate), ("Lamp", lamp)):
        nodes[name] = await obj.add_variable(ua.NodeId(name, idx), name, v)
        await nodes[name].set_writable()
    nodes["Temp"] = await obj.add_variable(ua.NodeId("Temp", idx), "Temp", 80.0)  # always hot
    await srv.start()
    return srv, idx, nodes


def _config(port: int, idx: int, actions_: dict, mqtt_port: int | None = None):
    sources: dict = {
        "plc": {
            "type": "opcua",
            "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
            "reconnect_initial_s": 0.1,
            "reconnect_max_s": 0.2,
            "connect_timeout_s": 2.0,
            "keepalive_check_s": 0.3,
        }
    }
    if mqtt_port is not None:
        sources["bus"] = {"type": "mqtt", "port": mqtt_port}
    gate = {
        "type": "opcua_write",
        "source": "plc",
        "node_id": f"ns={idx};s=Gate",
        "mode": "pulse",
        "when": {"verdict": "NG"},
        "retry": {"max_attempts": 1, "backoff_s": 0.0},
    }
    lamp = {
        "type": "alarm",
        "raise_after": 1,
        "clear_after": 2,
        "when": {"verdict": "NG"},
        "opcua_source": "plc",
        "node_id": f"ns={idx};s=Lamp",
        "retry": {"max_attempts": 1, "backoff_s": 0.0},
    }
    return parse_config(
        {
            "agent": {"id": "gw", "site": "s", "line": "l"},
            "sources": sources,
            "actions": {
                "gate": {**gate, **actions_.get("gate", {})},
                "lamp": {**lamp, **actions_.get("lamp", {})},
            },
        }
    )


async def _connected(src: OpcUaSource) -> None:
    await until(lambda: src.state.value == "connected", 30, "the OPC UA source to connect")


async def test_a_pulse_reset_and_an_alarm_clear_that_failed_while_the_plc_was_away_land_when_it_is_back(
    monkeypatch,
):
    monkeypatch.setattr(actions, "OWED_RETRY_S", 0.2, raising=False)  # brief, to keep the test short
    port = free_port()
    srv, idx, nodes = await _plc(port)
    cfg = _config(port, idx, {"gate": {"pulse_ms": 500}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await _connected(src)
        await runner.handle(["gate", "lamp"], result("NG", 0), None)  # gate pulses, lamp raised
        await until(lambda: nodes["Gate"].read_value(), 30, "the gate high")
        await until(lambda: nodes["Lamp"].read_value(), 30, "the lamp on")
        await srv.stop()  # the PLC goes away while the gate is high (a reboot, a cable)
        for i in (1, 2):  # the alarm clears meanwhile; its clear cannot be written either
            await runner.handle(["gate", "lamp"], result("OK", i), None)
        st = runner.stats
        await until(lambda: st["gate"]["failed"] >= 1 and st["lamp"]["failed"] >= 1, 30, "both writes failed")
        # back, holding the outputs as they were: the gate open, the lamp on; no new result comes
        for n in (nodes["Gate"], nodes["Lamp"]):
            await n.write_value(True)
        await srv.start()
        # before: the reset and the clear were given up after their retries; the gate stayed open and
        # the lamp on until the next reject and the next alarm
        gate, lamp = nodes["Gate"], nodes["Lamp"]

        async def both_off() -> bool:
            return not await gate.read_value() and not await lamp.read_value()

        await until(both_off, 30, "the gate closed and the lamp off")
        # counted once the write's answer is back, a moment after the server took the value
        await until(
            lambda: st["gate"]["resent"] >= 1 and st["lamp"]["resent"] >= 1, 30, "both counted resent"
        )
        assert st["gate"]["resent"] == 1 and st["lamp"]["resent"] == 1, (dict(st["gate"]), dict(st["lamp"]))
        await runner.flush(timeout_s=5)
    finally:
        await src.stop()
        await srv.stop()


async def test_a_stop_while_a_long_pulse_is_high_writes_its_reset():
    port = free_port()
    srv, idx, nodes = await _plc(port)
    cfg = _config(port, idx, {"gate": {"pulse_ms": 600_000, "retry": {"max_attempts": 3, "backoff_s": 0.1}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await _connected(src)
        await runner.handle(["gate"], result("NG", 0, pipeline="b"), None)
        # a second pipeline on the same gate: its first result (no edge) does not end b's pulse
        await runner.handle(["gate"], result("OK", 0, pipeline="a"), None)
        await until(lambda: nodes["Gate"].read_value(), 30, "the gate high")
        await asyncio.sleep(0.3)  # a reset written by mistake would land by now
        assert await nodes["Gate"].read_value() is True
        assert runner.stats["gate"].get("reconciled", 0) == 0
        # the agent stops (SIGTERM, a config reload): before, flush waited out its bound with the pulse
        # still high and the source closed: the gate stayed open until the next start's next reject
        await runner.flush(timeout_s=4)
        assert await nodes["Gate"].read_value() is False
        assert runner.stats["gate"]["cut_at_stop"] == 1
    finally:
        await src.stop()
        await srv.stop()


async def test_a_new_agent_clears_a_pulse_and_an_alarm_the_one_before_it_left_high(mosquitto):
    port = free_port()
    srv, idx, nodes = await _plc(port, gate=True, lamp=True)  # left high by an agent killed mid-pulse
    cfg = _config(port, idx, {"lamp": {"publish_to": "bus"}}, mqtt_port=mosquitto.port)
    topic = topics.build_topic("s", "l", "gw", topics.Kind.ALARMS, "lamp")
    # ... which had also published the alarm raised, retained
    raised = {"kind": "alarm", "t": 1.0, "alarm": "lamp", "active": True, "pipeline": "p"}
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    pub.publish(topic, json.dumps(raised), qos=1, retain=True).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    src = OpcUaSource("plc", cfg.sources["plc"])
    bus = MqttSource("bus", cfg.sources["bus"])
    await src.start()
    await bus.start()
    events: list = []
    runner = ActionRunner(cfg, {"plc": src, "bus": bus}, on_event=events.append)
    try:
        await _connected(src)
        await until(lambda: bus.connected.is_set(), 30, "the MQTT source to connect")
        for i in range(3):  # no reject and no alarm since the start
            await runner.handle(["gate", "lamp"], result("OK", i), None)
        gate, lamp = nodes["Gate"], nodes["Lamp"]

        async def both_off() -> bool:
            return not await gate.read_value() and not await lamp.read_value()

        # before: a pulse node was written only at a rising edge, an alarm's outputs only at a transition
        # from a raise of its own: both stayed on for good
        await until(both_off, 30, "the gate closed and the lamp off")
        got: list = []
        sub = paho.Client(CallbackAPIVersion.VERSION2)
        sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
        sub.connect("127.0.0.1", mosquitto.port)
        sub.subscribe(topic, qos=1)
        sub.loop_start()
        try:
            await until(lambda: got and got[-1]["active"] is False, 30, "the retained alarm state cleared")
        finally:
            sub.loop_stop()
        assert got[-1]["initial"] is True
        assert runner.stats["gate"]["reconciled"] == 1 and runner.stats["gate"]["ok"] == 1
        st = runner.stats["lamp"]
        assert (st["reconciled"], st.get("cleared", 0), st.get("raised", 0)) == (1, 0, 0), dict(st)
        assert [(e["alarm"], e["active"], e["initial"]) for e in events] == [("lamp", False, True)]
        # once established, the alarm behaves as ever: raised, and cleared after clear_after misses
        await runner.handle(["lamp"], result("NG", 3), None)
        for i in (4, 5):
            await runner.handle(["lamp"], result("OK", i), None)
        assert (st["raised"], st["cleared"], st["reconciled"]) == (1, 1, 1)
        await runner.flush(timeout_s=5)
    finally:
        await src.stop()
        await bus.stop()
        await srv.stop()


async def test_an_alarm_clear_refused_by_a_full_mqtt_queue_is_published_once_the_broker_is_back(
    mosquitto, monkeypatch
):
    # the broker is away long enough for the client's queue to fill with results: the alarm's clear then
    # waits publish_timeout_s per attempt and fails them all
    monkeypatch.setattr(actions, "OWED_RETRY_S", 0.2, raising=False)  # brief, to keep the test short
    cfg = parse_config(
        {
            "agent": {"id": "gw", "site": "s", "line": "l"},
            "sources": {
                "bus": {
                    "type": "mqtt",
                    "port": mosquitto.port,
                    "publish_max_queued": 3,
                    "publish_timeout_s": 0.1,
                    "reconnect_min_s": 0.1,
                    "reconnect_max_s": 0.2,
                }
            },
            "actions": {
                "pub": {"type": "mqtt_publish", "source": "bus", "qos": 1, "retry": {"max_attempts": 1}},
                "al": {
                    "type": "alarm",
                    "raise_after": 1,
                    "clear_after": 1,
                    "when": {"verdict": "NG"},
                    "publish_to": "bus",
                    "retry": {"max_attempts": 2, "backoff_s": 0.05},
                },
            },
        }
    )
    bus = MqttSource("bus", cfg.sources["bus"])
    await bus.start()
    runner = ActionRunner(cfg, {"bus": bus})
    try:
        await until(lambda: bus.connected.is_set(), 30, "the MQTT source to connect")
        await runner.handle(["al"], result("NG", 0), None)  # raised, published retained
        await until(lambda: bus.published["sent"] == 1, 30, "the raise published")
        mosquitto.stop()
        await until(lambda: not bus.connected.is_set(), 30, "the MQTT source to see the broker gone")
        for i in range(1, 6):  # results fill the client's queue
            await runner.handle(["pub"], result("OK", i), None)
        await runner.handle(["al"], result("OK", 6), None)  # cleared: no room for it
        await until(lambda: runner.stats["al"]["failed"] == 1, 30, "the clear to fail its retries")
        mosquitto.start()
        got: list = []
        sub = paho.Client(CallbackAPIVersion.VERSION2)
        sub.on_message = lambda c, u, m: got.append(json.loads(m.payload)["active"])
        sub.connect("127.0.0.1", mosquitto.port)
        sub.subscribe(topics.build_topic("s", "l", "gw", topics.Kind.ALARMS, "al"), qos=1)
        sub.loop_start()
        try:
            # before: the clear was given up; the broker's retained state (or none, after its restart)
            # never said the alarm had cleared
            await until(lambda: got == [False], 30, "the alarm's clear at the broker")
            # the subscriber can have it before the agent's attempt returns (its PUBACK on the way, or
            # that task not yet run): the attempt is counted resent once it returns
            await until(lambda: runner.stats["al"]["resent"] == 1, 30, "the clear counted resent")
        finally:
            sub.loop_stop()
        assert got == [False]  # one clear: no attempt counted failed was also held by paho and sent
        assert runner.stats["al"]["resent"] == 1
        assert runner.stats["pub"]["queued"] == 3  # the oldest results are the ones held for the broker
        await runner.flush(timeout_s=5)
    finally:
        await bus.stop()


async def test_a_plc_that_restarted_gets_its_on_change_output_and_alarm_lamp_back():
    port = free_port()
    srv, idx, nodes = await _plc(port)
    cfg = _config(port, idx, {"gate": {"mode": "on_change"}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await _connected(src)
        await runner.handle(["gate", "lamp"], result("NG", 0), None)  # the level set, the alarm raised
        gate, lamp = nodes["Gate"], nodes["Lamp"]

        async def both_on() -> bool:
            return await gate.read_value() and await lamp.read_value()

        await until(both_on, 30, "the gate set and the lamp on")
        await srv.stop()  # the PLC restarts: its outputs come back at their initial values
        for n in (nodes["Gate"], nodes["Lamp"]):
            await n.write_value(False)
        await srv.start()
        await until(lambda: src.stats.reconnects == 1, 30, "the OPC UA source to reconnect")
        # the same level and the alarm still raised: no change to write, no transition to signal; before,
        # the gate and the lamp stayed off until the level changed and the alarm cleared and rose again
        await runner.handle(["gate", "lamp"], result("NG", 1), None)
        await until(both_on, 30, "the gate set and the lamp on again")
        assert runner.stats["gate"]["resent"] == 1 and runner.stats["lamp"]["resent"] == 1
        await runner.flush(timeout_s=5)
    finally:
        await src.stop()
        await srv.stop()


async def test_a_config_without_an_alarm_that_was_raised_clears_the_outputs_it_had(
    tmp_path, mosquitto, caplog
):
    # a fleet config reload (or a restart on an edited file) drops one alarm and renames the other, which
    # keeps its node: before, the dropped one's node and both old retained messages said "raised" for
    # good, as nothing owned them any more
    port = free_port()
    srv, idx, nodes = await _plc(port)

    def config(alarms: dict[str, str]) -> dict:
        return {
            "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
            "http": {"enabled": False},
            "sources": {
                "plc": {
                    "type": "opcua",
                    "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                    "nodes": [{"node_id": f"ns={idx};s=Temp", "tag": "temp"}],
                    "reconnect_initial_s": 0.1,
                },
                "bus": {"type": "mqtt", "port": mosquitto.port},
            },
            "rules": [
                {"name": "hot", "source": "plc", "tag": "temp", "above": 60.0, "actions": list(alarms)}
            ],
            "actions": {
                alarm: {
                    "type": "alarm",
                    "raise_after": 1,
                    "when": {"verdict": "NG"},
                    "publish_to": "bus",
                    "opcua_source": "plc",
                    "node_id": f"ns={idx};s={node}",
                }
                for alarm, node in alarms.items()
            },
        }

    async def value(name: str) -> bool:
        return await nodes[name].read_value()

    try:
        agent = Agent(parse_config(config({"overheat": "Lamp", "warm": "Gate"})))
        await agent.start()
        try:
            await until(lambda: nodes["Lamp"].read_value(), 30, "the overheat lamp on")
            await until(lambda: nodes["Gate"].read_value(), 30, "the warm gate on")
        finally:
            await agent.stop()
        got: dict[str, list] = {"overheat": [], "warm": []}
        sub = paho.Client(CallbackAPIVersion.VERSION2)
        sub.on_message = lambda c, u, m: got[m.topic.rsplit("/", 1)[1]].append(json.loads(m.payload))
        sub.connect("127.0.0.1", mosquitto.port)
        for name in got:
            sub.subscribe(topics.build_topic("s", "l", "gw", topics.Kind.ALARMS, name), qos=1)
        sub.loop_start()
        caplog.set_level(logging.INFO, logger="edge_agent.actions")
        agent = Agent(parse_config(config({"heat": "Lamp"})))  # warm dropped, overheat renamed heat
        await agent.start()
        try:

            async def gate_off() -> bool:
                return not await value("Gate")

            await until(gate_off, 30, "the dropped alarm's gate off")
            for name in got:
                await until(lambda n=name: got[n] and got[n][-1]["active"] is False, 30, f"{name} cleared")
                assert got[name][-1]["removed"] is True
            assert agent.actions.alarm_state[("heat", "hot")]["active"] is True
            assert await value("Lamp") is True  # heat's node too: never cleared for the name it had before
            cleared = [r.getMessage() for r in caplog.records if "is not in this config" in r.getMessage()]
            assert not [m for m in cleared if f"ns={idx};s=Lamp" in m], cleared
        finally:
            sub.loop_stop()
            await agent.stop()
        saved = json.loads((tmp_path / "data" / actions.RAISED_FILE).read_text())["raised"]
        assert [(t["alarm"], t["output"]) for t in saved] == [("heat", "mqtt"), ("heat", "opcua")], saved
    finally:
        await srv.stop()


async def test_an_output_whose_reset_the_node_refuses_does_not_write_its_value():
    """An output writes its value, then its reset when the condition ends (a pulse: pulse_ms later): when
    the node's type takes the value but not the reset (5 and -1 on a UInt16 diverter), the value went out
    and the reset was refused for good, so the diverter stayed at 5. Such a value is not written (counted
    reset_refused) in any mode; each node keeps its own."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    modes = ("pulse", "on_change", "level")
    nodes = {}
    for mode in modes:
        nodes[mode] = await obj.add_variable(ua.NodeId(mode, idx), mode, 0, ua.VariantType.UInt16)
        await nodes[mode].set_writable()
    await srv.start()
    cfg = _config(port, idx, {})
    base = {
        k: v for k, v in cfg.actions["gate"].model_dump().items() if k in ("type", "source", "when", "retry")
    }
    acts = {
        m: {**base, "node_id": f"ns={idx};s={m}", "value": 5, "reset_value": -1, "mode": m, "pulse_ms": 100}
        for m in modes
    }
    cfg = parse_config(
        {
            "agent": {"id": "gw", "site": "s", "line": "l"},
            "sources": {"plc": cfg.sources["plc"].model_dump()},
            "actions": acts,
        }
    )
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(a["node_id"], v) for a in acts.values() for v in (5, -1)])  # as the agent: at connect
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await until(lambda: len(src.target_errors) == 3, 30, "the resets named at connect")
        await runner.handle(list(modes), result("NG", 0), None)
        st = runner.stats
        await until(lambda: all(st[m]["reset_refused"] == 1 for m in modes), 30, "each value refused")
        await runner.flush(timeout_s=5)
        assert [await nodes[m].read_value() for m in modes] == [0, 0, 0]
        assert [st[m]["ok"] for m in modes] == [0, 0, 0]
    finally:
        await src.stop()
        await srv.stop()
