"""Tags without a model: readings forwarded to MQTT (with deadband and rate limit), and rules on plain
tags that raise alarms and write PLC outputs through the ordinary actions. Against the asyncua
machine server and a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from edge_agent.config import ConfigError, parse_config
from edge_agent.status_board import tag_rows
from simulators.machine import MachineServer
from tests.support.peers import free_port
from tests.support.waits import until as wait_for


class Subscriber:
    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, dict]] = []
        self.raw: list[bytes] = []
        self.lock = threading.Lock()
        self.c = paho.Client(CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(topic, 1)
        self.c.loop_start()

    def _on(self, client, userdata, msg) -> None:
        with self.lock:
            self.raw.append(msg.payload)
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def stop(self) -> None:
        self.c.disconnect()  # first: paho's thread ends once it is written, not at its next 1 s select
        self.c.loop_stop()


def config(tmp_path, mqtt_port: int, endpoint: str, machine: MachineServer) -> dict:
    return {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": endpoint,
                "nodes": [
                    {"node_id": machine.node_id("Speed"), "tag": "speed"},
                    {"node_id": machine.node_id("Temperature"), "tag": "temperature"},
                    {"node_id": machine.node_id("Vibration"), "tag": "Vibration"},
                ],
            },
            "broker": {"type": "mqtt", "port": mqtt_port},
        },
        "forward": [
            {"name": "plc", "source": "plc", "to": "broker"},
            {"name": "slow", "source": "plc", "tags": ["speed"], "to": "broker", "deadband": 1e9},
        ],
        "rules": [
            {
                "name": "hot",
                "source": "plc",
                "tag": "temperature",
                "above": -1000.0,
                "hysteresis": 1.0,
                "actions": ["hot_alarm", "hot_lamp"],
            },
            {
                "name": "cold",
                "source": "plc",
                "tag": "temperature",
                "scale": 2.0,
                "below": -1000.0,
                "actions": ["cold_alarm"],
            },
        ],
        "actions": {
            "hot_alarm": {
                "type": "alarm",
                "raise_after": 2,
                "clear_after": 2,
                "when": {"verdict": "NG"},
                "publish_to": "broker",
            },
            "cold_alarm": {
                "type": "alarm",
                "raise_after": 1,
                "when": {"verdict": "NG"},
                "publish_to": "broker",
            },
            "hot_lamp": {
                "type": "opcua_write",
                "source": "plc",
                "node_id": machine.node_id("Alarm"),
                "mode": "on_change",
                "when": {"verdict": "NG"},
            },
        },
    }


async def test_forwarding_and_rules_on_plain_tags(tmp_path, mosquitto):
    machine = MachineServer(free_port(), period_ms=100)
    await machine.start()
    sub = Subscriber(mosquitto.port, "factory/#")
    agent = Agent(parse_config(config(tmp_path, mosquitto.port, machine.endpoint, machine)))
    try:
        await agent.start()

        def on(topic: str) -> list[dict]:
            with sub.lock:
                return [m for t, m in sub.messages if t == topic]

        base = "factory/plant/line1/gw1"
        await wait_for(
            lambda: len([m for m in on(f"{base}/tags/plc") if m["tag"] == "speed"]) >= 3,
            what="forwarded speed readings",
        )
        await wait_for(lambda: on(f"{base}/alarms/hot_alarm"), what="the rule's alarm")
        await wait_for(lambda: [v for t, v in machine.writes if t == "Alarm"], what="the rule's PLC output")
        await asyncio.sleep(0.5)
        st = agent.status()
        agent.metrics.refresh(agent)
        metrics = agent.metrics.exposition().decode()
    finally:
        await agent.stop()
        sub.stop()
        await machine.stop()
    fwd = on(f"{base}/tags/plc")
    assert {m["tag"] for m in fwd} == {
        "speed",
        "temperature",
    }  # the waveform array is not forwarded unless named
    assert all(isinstance(m["value"], float) and m["quality"] == "good" and m["source"] == "plc" for m in fwd)
    assert len(on(f"{base}/tags/slow")) == 1  # the deadband held back every later speed reading
    slow = next(f for f in st["forward"] if f["name"] == "slow")
    assert slow["forwarded"] == 1 and slow["deadband"] >= 2
    assert on(f"{base}/alarms/hot_alarm")[0]["active"] is True
    # never below the threshold: its only state since start is clear, published once as such (an alarm's
    # first state is signalled, so that a raise left retained by an agent before this one is cleared)
    assert [(m["active"], m.get("initial")) for m in on(f"{base}/alarms/cold_alarm")] == [(False, True)]
    assert [v for t, v in machine.writes if t == "Alarm"] == [True]  # on_change: one write while it stays hot
    rules = {r["name"]: r for r in st["rules"]}
    assert (
        rules["hot"]["active"] is True and rules["cold"]["active"] is False and rules["hot"]["readings"] >= 3
    )
    assert "unread" not in st["sources"]["plc"]["silent_drops"]
    assert (
        'edge_rule_active{rule="hot"} 1.0' in metrics
        and 'edge_forward_total{forward="slow",outcome="forwarded"} 1.0' in metrics
    )


def test_forward_and_rule_config_errors_name_path_and_fix(tmp_path):
    m = MachineServer(1)
    data = config(tmp_path, 1883, "opc.tcp://127.0.0.1:4840/", m)
    data["forward"].append({"name": "x", "source": "plc"})
    data["rules"][0]["tag"] = "Temperature"
    data["rules"][1]["actions"] = ["cold_alarn"]
    data["rules"].append({"name": "y", "source": "plc", "tag": "speed", "actions": []})
    try:
        parse_config(data, "plant.yaml")
    except ConfigError as exc:
        errs = exc.errors
    else:
        raise AssertionError("accepted")
    assert (
        "plant.yaml: forward[2]: forward needs a destination: to: <an mqtt source>, or outbox: true" in errs
    ), errs
    assert any(
        e.startswith(
            "plant.yaml: rules[0].tag: source 'plc' produces no tag 'Temperature'; did you mean "
            "'temperature'?"
        )
        for e in errs
    ), errs
    assert "plant.yaml: rules[1].actions[0]: unknown action 'cold_alarn'; did you mean 'cold_alarm'?" in errs
    assert "plant.yaml: rules[2]: a rule needs a threshold: above: <value> and/or below: <value>" in errs


def _strict(text):
    """``json.loads`` as a browser, Node-RED or Jackson parses: bare NaN/Infinity are errors."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


async def test_a_nan_reading_goes_out_as_null_in_json_that_strict_parsers_accept(tmp_path, mosquitto):
    """Another vendor's PLC reports NaN for a failed sensor (passed on with quality BAD). Python's json
    writes it as a bare NaN, which is not JSON: the forwarded MQTT message and the status page's tag
    API carry ``null`` beside the quality instead, so a strict consumer keeps reading the stream."""
    import urllib.request

    from asyncua import ua

    from tests.support.peers import opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:nan", "Press")
    await obj.add_variable(ua.NodeId("Pressure", idx), "Pressure", float("nan"), ua.VariantType.Double)
    await obj.add_variable(ua.NodeId("Stroke", idx), "Stroke", 12.5, ua.VariantType.Double)
    await srv.start()
    sub = Subscriber(mosquitto.port, "factory/#")
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"port": 0},
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                "nodes": [
                    {"node_id": f"ns={idx};s=Pressure", "tag": "pressure"},
                    {"node_id": f"ns={idx};s=Stroke", "tag": "stroke"},
                ],
            },
            "broker": {"type": "mqtt", "port": mosquitto.port},
        },
        "forward": [{"name": "plc", "source": "plc", "to": "broker"}],
    }
    agent = Agent(parse_config(cfg))
    try:
        await agent.start()
        await wait_for(lambda: len(sub.raw) >= 2, what="both forwarded tags")
        url = f"http://127.0.0.1:{agent.http.port}"
        tags = _strict(urllib.request.urlopen(url + "/api/tags", timeout=5).read())
        _strict(urllib.request.urlopen(url + "/status", timeout=5).read())
    finally:
        await agent.stop()
        sub.stop()
        await srv.stop()
    forwarded = {m["tag"]: m for m in map(_strict, sub.raw)}
    assert forwarded["pressure"]["value"] is None and forwarded["pressure"]["quality"] == "bad"
    assert forwarded["stroke"]["value"] == 12.5 and forwarded["stroke"]["quality"] == "good"
    rows = {r["tag"]: r for r in tags["plc"]}
    assert rows["pressure"]["value"] is None and rows["pressure"]["quality"] == "bad"


async def test_a_dead_sensors_retained_value_is_shown_but_raises_no_alarm(tmp_path, mosquitto):
    """A temperature node that publishes with the retain flag died hot yesterday; the broker still holds its
    last message. The agent starts: the value is shown and forwarded as uncertain, and the rule does not
    raise its alarm on it; the first live reading over the limit does."""
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    pub.publish("oven/zone1", json.dumps({"temperature": 95.0}), qos=1, retain=True).wait_for_publish(5)
    sub = Subscriber(mosquitto.port, "factory/#")
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "sources": {
            "broker": {"type": "mqtt", "port": mosquitto.port, "subscriptions": [{"topic": "oven/#"}]}
        },
        "forward": [{"name": "oven", "source": "broker", "tags": ["oven/zone1/temperature"], "to": "broker"}],
        "rules": [
            {
                "name": "hot",
                "source": "broker",
                "tag": "oven/zone1/temperature",
                "above": 80.0,
                "actions": ["hot_alarm"],
            }
        ],
        "actions": {
            "hot_alarm": {
                "type": "alarm",
                "raise_after": 1,
                "when": {"verdict": "NG"},
                "publish_to": "broker",
            }
        },
    }
    base = "factory/plant/line1/gw1"

    def on(topic: str) -> list[dict]:
        with sub.lock:
            return [m for t, m in sub.messages if t == topic]

    agent = Agent(parse_config(cfg))
    try:
        await agent.start()
        await wait_for(lambda: on(f"{base}/tags/oven"), what="the retained value forwarded")
        await asyncio.sleep(0.5)
        alarms_before = on(f"{base}/alarms/hot_alarm")
        pub.publish("oven/zone1", json.dumps({"temperature": 96.0}), qos=1, retain=True).wait_for_publish(5)
        await wait_for(lambda: on(f"{base}/alarms/hot_alarm"), what="the alarm on the live reading")
        st = agent.status()
    finally:
        await agent.stop()
        sub.stop()
        pub.publish("oven/zone1", b"", qos=1, retain=True).wait_for_publish(5)
        pub.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        pub.loop_stop()
    assert not alarms_before
    fwd = on(f"{base}/tags/oven")
    assert [(m["value"], m["quality"]) for m in fwd][:2] == [(95.0, "uncertain"), (96.0, "good")]
    assert on(f"{base}/alarms/hot_alarm")[0]["active"] is True
    assert st["sources"]["broker"]["silent_drops"]["retained"]["count"] == 1


@pytest.mark.parametrize("qos", [0, 1])
async def test_a_forward_of_large_values_holds_a_bounded_number_of_bytes_while_the_broker_is_away(
    tmp_path, monkeypatch, qos
):
    """A forward of an OPC UA ByteString of 1 MB (1.4 MB of JSON a message) while the broker is away: the
    forward held up to 1,000 messages (QoS 0) and the MQTT client up to 10,000 (QoS 1, held for the broker's
    return), counted but not weighed: a 2 MB ByteString changing 18 times a second added 880 MB in 20 s, on
    the way to 2.7 GB (QoS 0) or 27 GB (QoS 1). The messages waiting, in the forward and handed to the MQTT
    client, are held to ``MAX_PENDING_BYTES`` (here 4 MiB), the oldest dropped and counted; once the broker is
    back the newest value goes out."""
    import base64

    from asyncua import ua

    from edge_agent import tags as tags_mod
    from tests.support.peers import Mosquitto, opcua_server

    bound = 4 * 2**20
    monkeypatch.setattr(tags_mod, "MAX_PENDING_BYTES", bound, raising=False)
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Plc")
    node = await obj.add_variable(
        ua.NodeId("Blob", idx), "Blob", ua.Variant(bytes(2**20), ua.VariantType.ByteString)
    )
    await srv.start()
    broker = Mosquitto(tmp_path / "mq")  # its port, not yet listening: the broker is away
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                "publishing_interval_ms": 50,
                "nodes": [{"node_id": f"ns={idx};s=Blob", "tag": "blob"}],
            },
            "broker": {"type": "mqtt", "port": broker.port, "reconnect_max_s": 0.5},
        },
        "forward": [{"name": "blobs", "source": "plc", "tags": ["blob"], "to": "broker", "qos": qos}],
    }
    agent = Agent(parse_config(cfg))
    fwd = agent.forwarders[0]
    mqtt = agent.sources["broker"]
    sub = None

    def held() -> int:  # in the forward's queue, and handed to the MQTT client for the broker's return
        out = getattr(mqtt._client, "_out_messages", {}) if mqtt._client is not None else {}
        return sum(map(len, fwd._queue)) + sum(len(m.payload) for m in list(out.values()))

    try:
        await agent.start()
        most = 0
        for i in range(1, 25):
            await srv.write_attribute_value(
                node.nodeid, ua.DataValue(ua.Variant(bytes([i]) * 2**20, ua.VariantType.ByteString))
            )
            await asyncio.sleep(0.06)
            most = max(most, held())
        await wait_for(lambda: fwd.stats["forwarded"] >= 20, what="the values offered to the forward")
        most = max(most, held())
        assert most <= bound + 1_500_000, most  # the bound and the one message over it
        assert fwd.stats["dropped"] > 0
        broker.start()
        sub = Subscriber(broker.port, "factory/#")
        await wait_for(lambda: mqtt.state.value == "connected", what="the broker connected again")
        await srv.write_attribute_value(
            node.nodeid, ua.DataValue(ua.Variant(bytes([99]) * 2**20, ua.VariantType.ByteString))
        )
        last = base64.b64encode(bytes([99]) * 2**20).decode()
        await wait_for(
            lambda: any(m.get("value") == last for _, m in sub.messages), what="a value forwarded once back"
        )
    finally:
        await agent.stop()
        if sub is not None:
            sub.stop()
        broker.stop()
        await srv.stop()


async def test_a_rule_and_its_actions_compare_an_int64_counter_past_2_53_exactly(tmp_path, mosquitto):
    """An energy or piece counter (Int64/UInt64) past 2**53 sent as a JSON integer: a rule ``above: 2**53`` trips
    on 2**53 + 1, an action's condition on the rule's score compares it exactly (a number and a number written as
    text), its result carries every digit, and the tags view shows an int64 array's last item whole. Before, the
    reading was made a float64: 2**53 + 1 was 2**53, not above it, so nothing tripped nor was published, and the
    array's last item was shown as 9.223e+18."""
    big = 2**53
    sub = Subscriber(mosquitto.port, "factory/#")
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "sources": {
            "broker": {
                "type": "mqtt",
                "port": mosquitto.port,
                "subscriptions": [
                    {
                        "topic": "meter/#",
                        "qos": 1,
                        "json_mapping": {"values": {"count": "count", "ids": "ids"}},
                    }
                ],
            }
        },
        "rules": [
            {
                "name": "over",
                "source": "broker",
                "tag": "meter/e/count",
                "above": big,
                "actions": ["each", "one"],
            }
        ],
        "actions": {
            "each": {"type": "mqtt_publish", "source": "broker", "qos": 1, "topic": "factory/each"},
            "one": {
                "type": "mqtt_publish",
                "source": "broker",
                "qos": 1,
                "topic": "factory/one",
                "when": {"score": {"gt": big, "lte": str(big + 1)}},  # 2**53 + 1 alone
            },
        },
    }

    def on(topic: str) -> list[dict]:
        with sub.lock:
            return [m for t, m in sub.messages if t == topic]

    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    agent = Agent(parse_config(cfg))
    src = agent.sources["broker"]
    try:
        await agent.start()
        await wait_for(lambda: src.subscribed.is_set(), what="the SUBACK")
        for n in (big, big + 1, big + 2):
            pub.publish("meter/e", json.dumps({"count": n, "ids": [1, 2**63 - 1]}), qos=1)
        await wait_for(lambda: len(on("factory/each")) == 3, what="a result of each reading")
        rule = agent.status()["rules"][0]
        rows = {r["tag"]: r for r in tag_rows(list(agent.tags["broker"].values()))}
    finally:
        await agent.stop()
        sub.stop()
        pub.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        pub.loop_stop()
    assert [(m["verdict"], m["score"]) for m in on("factory/each")] == [
        ("OK", big),
        ("NG", big + 1),  # before: OK, 9007199254740992.0
        ("NG", big + 2),
    ]
    assert [m["score"] for m in on("factory/one")] == [big + 1]  # before: none
    assert (rule["active"], rule["side"], rule["value"]) == (True, "above", big + 2)
    assert rows["meter/e/ids"]["value"] == f"[2 values, last {2**63 - 1}]"  # before: last 9.223e+18
    assert rows["meter/e/count"]["value"] == big + 2


async def test_a_rule_or_forward_naming_a_tag_renamed_by_the_slash_encoding_is_told_the_name_to_write(
    tmp_path, mosquitto
):
    """A name from an MQTT payload holding '/' is one level of its tag since ca41f9ef: a gateway's records
    named ``Line1/Speed`` on ``gw/1`` are the tag ``gw/1/Line1%2FSpeed``, no longer ``gw/1/Line1/Speed``. A
    rule and a forward written for the old name stopped without a word after the upgrade. The first reading of
    such a tag, while the old name a rule, forward or pipeline names is never seen, now says so once per tag
    (``tag_renamed``), naming them and the name to write; a tag no one names, or holding no %2F, says nothing,
    nor does one holding a %2 the encoding did not make (``Valve%20Open``, a URL-encoded space, kept as it came:
    it was told renamed, to itself)."""
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    records = {"array": "values", "name": "id", "value": "v", "timestamp": None}
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "sources": {
            "broker": {
                "type": "mqtt",
                "port": mosquitto.port,
                "subscriptions": [{"topic": "gw/#", "qos": 1, "json_mapping": {"records": records}}],
            }
        },
        "forward": [{"name": "speeds", "source": "broker", "tags": ["gw/1/Line1/Speed"], "to": "broker"}],
        "rules": [
            {
                "name": "fast",
                "source": "broker",
                "tag": "gw/1/Line1/Speed",
                "above": 80.0,
                "actions": ["log"],
            },
            {"name": "hot", "source": "broker", "tag": "gw/1/Temp", "above": 80.0, "actions": ["log"]},
            {
                "name": "valve",
                "source": "broker",
                "tag": "gw/1/Valve%20Open",
                "above": 0.5,
                "actions": ["log"],
            },
        ],
        "actions": {"log": {"type": "log"}},
    }
    agent = Agent(parse_config(cfg))
    body = {
        "values": [
            {"id": "Line1/Speed", "v": 50.0},
            {"id": "Other/Name", "v": 1.0},
            {"id": "Temp", "v": 2},
            {"id": "Valve%20Open", "v": 1.0},
        ]
    }
    try:
        await agent.start()
        await wait_for(lambda: agent.sources["broker"].subscribed.is_set(), what="the subscription")
        for _ in range(2):
            pub.publish("gw/1", json.dumps(body), qos=1).wait_for_publish(5)
        await wait_for(lambda: agent.source_items["broker"] >= 8, what="both messages' readings")
        drops = agent.status()["sources"]["broker"]["silent_drops"]
    finally:
        await agent.stop()
        pub.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        pub.loop_stop()
    said = drops.get("tag_renamed")
    assert said is not None and said["count"] == 1, drops
    assert "Valve" not in said["message"], said
    assert (
        "tag 'gw/1/Line1/Speed', which rule 'fast', forward 'speeds' name(s), is never seen"
        in said["message"]
    )
    assert said["message"].endswith("write 'gw/1/Line1%2FSpeed'"), said["message"]
    assert "more" not in said, said  # gw/1/Other%2FName: no one names gw/1/Other/Name
