"""Other vendors' brokers and their refusals, emulated by a real Mosquitto configured strictly: an ACL that
refuses a publish (MQTT 5 PUBACK 0x87), the limits an MQTT 5 CONNACK states (no retain, QoS 0 only, a
maximum packet size; AWS IoT Core, Azure Event Grid, EMQX and HiveMQ state theirs), and two gateways that
share a client_id (cloned from one disk image)."""

from __future__ import annotations

import asyncio

import pytest

from devices.mqtt import client as mqtt_client
from devices.mqtt.client import MqttSource, MqttTooLarge
from devices.mqtt.settings import MqttSettings
from edge_agent.actions import ActionRunner
from edge_agent.config import parse_config
from tests.support.mqtt_wire import read_packet
from tests.support.peers import Mosquitto
from tests.support.results import result

KEEP_USER = "user root\n"  # run as root, Mosquitto would drop to a user who cannot read pytest's folders


async def _until(cond, what: str, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.01)


async def _read_until(src, last_tag: str, got: list, timeout_s: float = 3.0) -> None:
    """The source's readings as (tag, value) into ``got``, up to ``last_tag`` (or ``timeout_s``)."""

    async def read() -> None:
        async for r in src.items():
            got.append((r.tag, r.value))
            if r.tag == last_tag:
                return

    await asyncio.wait([asyncio.create_task(read())], timeout=timeout_s)


async def test_mqtt5_a_publish_the_brokers_acl_refuses_fails_with_its_reason_instead_of_counting_ok(tmp_path):
    """MQTT 5 brokers answer a publish their ACL refuses with PUBACK 0x87 (Not authorized) and drop the
    message. The agent counted the result publish and the alarm as sent (the alarm nobody sees); each is now
    failed with the reason, not retried (a retry cannot mend an ACL), and counted publish_refused."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite plant/#\n")  # results and alarms under factory/... are refused
    broker = Mosquitto(tmp_path / "mosq", extra_conf=f"acl_file {acl}\n{KEEP_USER}").start()
    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {"bus": {"type": "mqtt", "port": broker.port, "protocol": "mqtt5"}},
            "actions": {
                "allowed": {"type": "mqtt_publish", "source": "bus", "qos": 1, "topic": "plant/results"},
                "results": {"type": "mqtt_publish", "source": "bus", "qos": 1},
                "al": {"type": "alarm", "raise_after": 1, "when": {"verdict": "NG"}, "publish_to": "bus"},
            },
        }
    )
    bus = MqttSource("bus", cfg.sources["bus"])
    await bus.start()
    runner = ActionRunner(cfg, {"bus": bus})
    try:
        await _until(bus.connected.is_set, "the MQTT source to connect")
        await runner.handle(["allowed", "results", "al"], result("NG", 0), None)
        st = runner.stats
        await _until(lambda: st["results"]["failed"] and st["al"]["failed"], "both refusals known")
        await runner.flush(timeout_s=2)
        refused_by_actions = dict(bus.stats.errors_by_reason)
        # a forward's stream is not confirmed message by message: its refusal is counted by the source
        assert await bus.publish("factory/telemetry", b"{}", qos=1) == "sent"
        await _until(lambda: bus.stats.errors_by_reason["publish_refused"] == 3, "the forward's refusal")
    finally:
        await bus.stop()
        broker.stop()
    assert dict(st["allowed"]) == {"ok": 1}  # the broker itself takes what its ACL allows
    assert st["results"]["failed"] == 1 and "ok" not in st["results"] and "retried" not in st["results"]
    assert st["al"]["failed"] == 1 and "resent" not in st["al"]
    assert refused_by_actions == {"publish_refused": 2}
    assert "0x87" in bus.stats.last_error and "ACL" in bus.stats.last_error


async def test_mqtt5_a_brokers_connack_limits_are_honoured_instead_of_costing_the_connection(tmp_path):
    """A broker without retain (RetainAvailable 0), of QoS 0 only (MaximumQoS 0) or with a Maximum Packet
    Size drops the connection of a client that sends past them, and paho sent the same message again after
    each reconnect: an alarm (QoS 1, retained) made the gateway reconnect every second for good, nothing else
    published, no subscription read. Now a retained message goes without the flag, QoS 1 at QoS 0 (each said
    once, counted), and a message over the size is refused before it is sent (MqttTooLarge, not retried)."""
    broker = Mosquitto(
        tmp_path / "mosq", extra_conf=f"retain_available false\nmax_qos 0\nmax_packet_size 2000\n{KEEP_USER}"
    ).start()
    src = MqttSource(
        "bus", MqttSettings(port=broker.port, protocol="mqtt5", subscriptions=[{"topic": "plant/#"}])
    )
    await src.start()
    got: list = []
    try:
        async with asyncio.timeout(5):
            await src.subscribed.wait()
        assert await src.publish("plant/alarm", {"active": 1}, qos=1, retain=True) == "sent"
        with pytest.raises(MqttTooLarge, match="maximum packet size of 2000 bytes"):
            await src.publish("plant/batch", {"v": [1.5] * 1000}, qos=0)
        assert await src.publish("plant/after", {"v": 2}, qos=1) == "sent"

        await _read_until(src, "plant/after/v", got)
    finally:
        await src.stop()
        broker.stop()
    assert got == [("plant/alarm/active", 1), ("plant/after/v", 2)]
    assert src.stats.reconnects == 0
    assert src.stats.errors_by_reason == {"publish_too_large": 1}
    notes = src.notices.status()
    assert notes["retain_unavailable"]["count"] == 1 and notes["publish_qos_downgraded"]["count"] == 2
    assert src.broker_limits["max_packet_bytes"] == 2000


async def test_two_gateways_with_one_client_id_are_told_apart_and_back_off(tmp_path, monkeypatch):
    """Two gateways cloned from one disk image share a client_id: each connect takes the other's session
    over, so each reconnected every second for good (paho's backoff starts afresh at every accepted
    connect), and the log said only "lost broker; reconnecting". The pattern (connections lost right after
    their CONNACK, in a row; MQTT 5: reason 0x8E) is now said once, naming the client_id and the fix, and the
    reconnect delay grows while it lasts."""
    monkeypatch.setattr(
        mqtt_client, "SHORT_SESSIONS", 1, raising=False
    )  # the first short session is enough here
    broker = Mosquitto(tmp_path / "mosq", extra_conf=KEEP_USER).start()
    settings = MqttSettings(port=broker.port, client_id="gw-17", subscriptions=[{"topic": "plant/#"}])
    a, b = MqttSource("a", settings), MqttSource("b", settings)
    try:
        await a.start()
        async with asyncio.timeout(5):
            await a.subscribed.wait()
        await b.start()  # takes gw-17's session over: a is dropped right after its connect
        await _until(lambda: "session_taken_over" in a.notices.status(), "the takeover said")
    finally:
        await asyncio.gather(a.stop(), b.stop())  # each may wait out paho's 1-s sleep of its backoff
        broker.stop()
    note = a.notices.status()["session_taken_over"]["message"]
    assert "same client_id 'gw-17'" in note and "give each gateway its own client_id" in note
    assert a._kicked_delay >= 2.0  # the next reconnect waits longer than the settings' reconnect_min_s


async def test_mqtt5_what_paho_held_while_the_broker_was_away_is_sent_within_its_limits(tmp_path):
    """An alarm raised while the broker is away is held by paho (QoS 1, retained) and sent the moment the
    connection is up, before any publish() could look at the broker's limits: to a broker without retain
    that cost the connection, and the same message was sent again after every reconnect. The CONNACK's
    limits now apply to the held messages too: it goes without the flag, and the connection stays."""
    broker = Mosquitto(tmp_path / "mosq", extra_conf=f"retain_available false\n{KEEP_USER}")  # not started
    src = MqttSource(
        "bus",
        MqttSettings(
            port=broker.port, protocol="mqtt5", reconnect_min_s=0.1, subscriptions=[{"topic": "plant/#"}]
        ),
    )
    await src.start()  # the broker is away: held
    got: list = []
    try:
        assert await src.publish("plant/alarm", {"active": 1}, qos=1, retain=True) == "queued"
        broker.start()
        async with asyncio.timeout(5):
            await src.subscribed.wait()
        assert await src.publish("plant/after", {"v": 2}, qos=1) == "sent"

        await _read_until(src, "plant/after/v", got)
    finally:
        await src.stop()
        broker.stop()
    # paho sends the SUBSCRIBE (made in on_connect) before what it held: the alarm is read back too
    assert got == [("plant/alarm/active", 1), ("plant/after/v", 2)]
    assert src.stats.reconnects == 0
    assert src.notices.status()["retain_unavailable"]["count"] == 1


async def test_mqtt5_a_brokers_receive_maximum_bounds_the_messages_in_flight():
    """A broker stating Receive Maximum 2 in its CONNACK (EMQX and HiveMQ can be set so, and drop a client
    that sends past it: 0x93) got paho's 20 unacknowledged QoS 1 messages at once. Now no more than it
    stated are in flight. The broker here is scripted: it acknowledges nothing and counts the PUBLISHes."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    publishes: list[int] = []

    def broker() -> None:
        conn, _ = server.accept()
        with conn:
            while (packet := read_packet(conn)) is not None:
                kind, body = packet
                if kind == 1:  # CONNECT: CONNACK with the property Receive Maximum (0x21) = 2
                    conn.sendall(b"\x20\x06\x00\x00\x03\x21\x00\x02")
                elif kind == 3:
                    publishes.append(1)
                elif kind == 14:  # DISCONNECT
                    return

    threading.Thread(target=broker, daemon=True).start()
    src = MqttSource("bus", MqttSettings(port=port, protocol="mqtt5"))
    await src.start()
    try:
        async with asyncio.timeout(5):
            await src.connected.wait()
        tasks = [asyncio.create_task(src.publish(f"plant/{i}", b"1", qos=1)) for i in range(5)]
        await _until(lambda: len(publishes) >= 2, "the first publishes")
        await asyncio.sleep(0.2)  # any further one would arrive by now
        sent = len(publishes)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await src.stop()
        server.close()
    assert sent == 2


async def test_mqtt311_a_message_the_broker_answers_by_closing_the_connection_is_not_sent_forever(
    tmp_path, monkeypatch, caplog
):
    """Over MQTT 3.1.1 a broker states no limits, and many refuse a message by closing the connection
    (AWS IoT Core's policies, Azure IoT Hub's topics, Mosquitto's retain_available false or max_qos 0):
    paho sent the same message again after every reconnect, so one retained alarm made the gateway
    reconnect for good, nothing else published. The message left unacknowledged by such drops in a row is
    now taken out (publish_dropped, naming its topic) and the connection stays up for the rest."""
    monkeypatch.setattr(mqtt_client, "POISON_DROPS", 1, raising=False)  # 3 in a row by default
    broker = Mosquitto(tmp_path / "mosq", extra_conf=f"retain_available false\n{KEEP_USER}").start()
    src = MqttSource("bus", MqttSettings(port=broker.port, subscriptions=[{"topic": "plant/#", "qos": 1}]))
    await src.start()
    got: list = []
    try:
        async with asyncio.timeout(5):
            await src.subscribed.wait()
        assert await src.publish("plant/alarm", {"active": 1}, qos=1, retain=True) == "sent"  # no way to know
        await _until(lambda: "publish_dropped" in src.stats.errors_by_reason, "the message taken out")
        async with asyncio.timeout(5):
            await src.subscribed.wait()
        await src.publish("plant/after", {"v": 2}, qos=1)

        await _read_until(src, "plant/after/v", got)
    finally:
        await src.stop()
        broker.stop()
    assert got == [("plant/after/v", 2)]
    assert src.stats.errors_by_reason["publish_dropped"] == 1
    said = [r.getMessage() for r in caplog.records if "publish_dropped" in r.getMessage()]
    assert len(said) == 1 and "the message to 'plant/alarm' was sent: not sent again" in said[0], said


async def test_a_will_the_broker_cannot_keep_is_named_as_the_reason_it_refuses_the_connection(tmp_path):
    """A broker that keeps no retained messages refuses a CONNECT whose will is retained (MQTT 5: CONNACK
    0x9A; MQTT 3.1.1: it closes the socket). The source never connected, and said "check username/password
    and ACLs" (MQTT 5) or only "lost broker (Unspecified error)" (3.1.1). Both now name the will and the fix."""
    broker = Mosquitto(tmp_path / "mosq", extra_conf=f"retain_available false\n{KEEP_USER}").start()
    will = {"topic": "plant/gw/status", "retain": True}
    v5 = MqttSource("v5", MqttSettings(port=broker.port, protocol="mqtt5", will=will))
    v3 = MqttSource("v3", MqttSettings(port=broker.port, will=will))
    try:
        await v5.start()
        await v3.start()
        await _until(
            lambda: v5.stats.errors_by_reason and v3.stats.errors_by_reason, "both connects turned down"
        )
    finally:
        await asyncio.gather(v5.stop(), v3.stop())  # each may wait out paho's 1-s sleep of its backoff
        broker.stop()
    assert "Retain not supported (0x9A)" in v5.stats.last_error
    assert "set will.retain false" in v5.stats.last_error
    assert "closed the connection at CONNECT" in v3.stats.last_error
    assert "set will.retain false" in v3.stats.last_error


async def test_mqtt311_an_actions_message_the_broker_drops_the_connection_for_is_not_counted_ok(tmp_path):
    """Over MQTT 3.1.1 a broker states no limits and refuses a message by closing the connection (Mosquitto's
    retain_available false, AWS IoT Core's policies). An action's QoS 1 message was counted ok once paho had
    it, before any PUBACK: a result the broker never took was ok. Actions now wait for the PUBACK under 3.1.1
    too: ok when it comes, queued while the broker keeps dropping the connection, failed once the message is
    taken out of the queue (publish_dropped)."""
    broker = Mosquitto(tmp_path / "mosq", extra_conf=f"retain_available false\n{KEEP_USER}").start()
    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {"bus": {"type": "mqtt", "port": broker.port, "protocol": "mqtt311"}},
            "actions": {
                "plain": {"type": "mqtt_publish", "source": "bus", "qos": 1, "topic": "plant/plain"},
                "kept": {
                    "type": "mqtt_publish",
                    "source": "bus",
                    "qos": 1,
                    "retain": True,
                    "topic": "plant/kept",
                },
            },
        }
    )
    bus = MqttSource("bus", cfg.sources["bus"])
    await bus.start()
    runner = ActionRunner(cfg, {"bus": bus})
    try:
        await _until(bus.connected.is_set, "the MQTT source to connect")
        await runner.handle(["plain"], result("NG", 0), None)
        await runner.handle(["kept"], result("NG", 0), None)
        st = runner.stats
        await _until(lambda: st["kept"], "the retained message's outcome")
        await _until(lambda: bus.stats.errors_by_reason.get("publish_dropped"), "the message dropped", 20)
        await runner.flush(timeout_s=2)
    finally:
        await bus.stop()
        broker.stop()
    assert dict(st["plain"]) == {"ok": 1}  # the broker's PUBACK under 3.1.1
    assert "ok" not in st["kept"] and (st["kept"]["queued"] or st["kept"]["failed"]) == 1
