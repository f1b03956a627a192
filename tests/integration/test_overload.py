"""Overload and fairness: a source that floods the agent must not keep another source's rule from acting,
nor drop the one reading that mattered among its own redundant ones. Real Mosquitto peers; a burst is put
into a source's own hand-over queue as paho's thread would put it, so that its size and order are known."""

from __future__ import annotations

import asyncio
import json
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
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
                    "flood": {
                        "type": "mqtt",
                        "port": port,
                        "subscriptions": [
                            {"topic": "flood/#"},
                            {"topic": "big/#", "json_mapping": {"values": {"wave": "wave"}}},
                        ],
                    },
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


async def _watch_the_trip(agent: Agent) -> tuple:
    """The flooding and the quiet source, once subscribed, and a list that gets the flooding source's item
    count each time the quiet source's rule trips."""
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
    return flood, cell, seen_at_trip


async def test_a_flooded_sources_burst_does_not_hold_another_sources_rule(tmp_path, mosquitto):
    # A misconfigured node's burst (here 2,000 messages of 4 fields: 8,000 readings) was handed to the rules
    # without the loop being given back once: a rule on another source, the OPC UA session's keep-alive and
    # the heartbeat waited for all of it (with 10,000 wide messages: over a minute, the PLC session timed out)
    agent = _agent(tmp_path, mosquitto.port)
    await agent.start()
    try:
        flood, cell, seen_at_trip = await _watch_the_trip(agent)
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


async def test_a_few_large_messages_do_not_hold_another_sources_rule_either(tmp_path, mosquitto):
    # Counting items alone, a batch of a few large waveform messages (each ~1 MB of JSON: milliseconds of
    # decoding) was read whole before the loop was given back: the fan-out gives it back by time too
    agent = _agent(tmp_path, mosquitto.port)
    await agent.start()
    try:
        flood, cell, seen_at_trip = await _watch_the_trip(agent)
        payload = json.dumps({"wave": [0.5] * 200_000}).encode()  # ~1 MB: >= 10 ms to decode
        now = time.time()
        for k in range(2):
            flood._channel.put_threadsafe((f"big/node{k}", payload, now, False))
        cell._channel.put_threadsafe(("cell/temp", b'{"t": 60}', now, False))
        await until(lambda: agent.source_items["flood"] == 2 and seen_at_trip, what="both handled")
        assert seen_at_trip[0] < 2
    finally:
        await agent.stop()


async def _held(port: int, **kw) -> MqttSource:
    """An MQTT source subscribed to a flooding node and a quiet cell, whose readings are not taken yet."""
    subs = [
        {"topic": "flood/#", "qos": 1},
        {
            "topic": "cell/temp",
            "qos": 1,
            "json_mapping": {"values": {"t": "Temp"}, "tag_prefix_topic": False},
        },
    ]
    src = MqttSource("mq", MqttSettings(port=port, subscriptions=subs, **kw))
    await src.start()
    await until(lambda: src.subscribed.is_set(), what="the SUBACK")
    return src


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for topic, payload in messages:  # one connection, QoS 1: delivered in this order
            c.publish(topic, payload, qos=1)
        c.publish("flood/end", b'{"v": -1}', qos=1).wait_for_publish(5)
    finally:
        c.disconnect()  # before loop_stop: the network thread ends at once, not at its next 1-s select
        c.loop_stop()


async def _drain(src: MqttSource) -> list:
    got: list = []

    async def run() -> None:
        async for r in src.items():
            got.append(r)

    task = asyncio.create_task(run())
    await until(lambda: len(src._channel) == 0 and got, what="the queue taken")
    await asyncio.sleep(0)  # the batch taken is read without suspending: it is all in `got` by now
    task.cancel()
    return got


async def test_a_full_mqtt_queue_drops_the_flooding_topics_messages_and_keeps_the_quiet_ones(mosquitto):
    # The hand-over queue dropped the oldest message of all when full: a node flooding one topic pushed out
    # the one reading of another topic that arrived among its messages (an alarm threshold crossing), and
    # the drops were one number without a name
    src = await _held(mosquitto.port, queue_max_items=50)
    try:
        flood = [(f"flood/node{k % 2}", json.dumps({"v": k}).encode()) for k in range(220)]
        await asyncio.to_thread(
            _publish, mosquitto.port, flood[:20] + [("cell/temp", b'{"t": 60}')] + flood[20:]
        )
        await until(lambda: src.stats.received == 222, what="every message received")
        got = await _drain(src)
        assert [r.value for r in got if r.tag == "Temp"] == [60]
        assert src.stats.dropped == 222 - 50 and len(got) == 50
        notes = src.notices.counts
        assert notes["queue_full"] == 172
        assert notes["queue_full:flood/node0"] + notes["queue_full:flood/node1"] == 172
        assert "queue_full:cell/temp" not in notes and "flood/node" in src.notices.messages["queue_full"]
    finally:
        await src.stop()


async def test_the_mqtt_queue_is_bounded_in_bytes_as_in_messages(mosquitto):
    # 10,000 messages of 8 MiB (max_message_bytes) could be held at once: 80 GB. The payload bytes are bound
    # too; the newest message is always kept, however large
    src = await _held(mosquitto.port, queue_max_bytes=64 * 1024)
    try:
        big = json.dumps({"v": [0.5] * 4000}).encode()  # ~20 KB each
        await asyncio.to_thread(
            _publish, mosquitto.port, [("flood/node1", big)] * 30 + [("cell/temp", b'{"t": 1}')]
        )
        await until(lambda: src.stats.received == 32, what="every message received")
        assert src.stats.dropped >= 26  # 30 x 20 KB into 64 KiB
        assert src._channel._bytes <= 64 * 1024
        got = await _drain(src)
        assert [r.value for r in got if r.tag == "Temp"] == [1]
    finally:
        await src.stop()


def test_records_handed_to_the_outbox_faster_than_it_commits_are_bounded_and_counted(tmp_path):
    # append_soon (a forward's readings with outbox: true, events) queued every record on the outbox thread's
    # executor without bound: a flooding source's forward grew it by thousands a second (40,000 records and
    # +70 MB in 16 s in the probe). Past soon_max waiting, a record is dropped and counted; alarms and events
    # are never dropped so
    import threading

    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox

    ob = Outbox(OutboxSettings(), tmp_path / "data")
    ob.open()
    try:
        ob.soon_max = 100
        held = threading.Event()
        assert ob._executor is not None
        ob._executor.submit(held.wait, 30)  # the outbox's thread is busy (a slow disk)
        for i in range(150):
            ob.append_soon("telemetry", {"tag": "flood", "value": i})
        alarm = ob.append_soon("alarm", {"alarm": "hot", "active": True})
        assert alarm is not None and ob._executor._work_queue.qsize() == 101
        held.set()
        alarm.result(timeout=30)
        ob.flush()
        assert ob.dropped["backlog:telemetry"] == 50
        kinds = [r.kind for r in ob.pending(1000, 10**8)]
        assert kinds.count("telemetry") == 100 and kinds.count("alarm") == 1
    finally:
        ob.close()


async def test_an_opcua_nodes_burst_does_not_push_another_nodes_change_out_of_the_hand_over(tmp_path):
    # After a reconnect a node's server-side queue comes in one publish: with the hand-over full, the oldest
    # reading of all was dropped, here the temperature's crossing of its alarm threshold, which the server
    # never sends again until it changes again: the rule on it never acted (a probe with the defaults, a
    # 10,000-value burst: no PLC trip). Now the bursting node loses its own oldest values, counted by tag
    from asyncua import ua

    from devices.opcua.client import OpcUaSource
    from devices.opcua.settings import OpcUaSettings
    from tests.support.peers import free_port, opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    temp = await obj.add_variable(ua.NodeId("Line.Temp", idx), "Temp", 20.0)
    fast = await obj.add_variable(ua.NodeId("Line.Fast", idx), "Fast", 0.0)
    await srv.start()
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{port}/plc/",
            queue_max_items=50,  # nothing is taken until all is handed over: 121 readings for 50 places
            nodes=[
                {"node_id": f"ns={idx};s=Line.Temp", "tag": "Temp"},
                {"node_id": f"ns={idx};s=Line.Fast", "tag": "Fast", "queue_size": 200},
            ],
        ),
    )
    await src.start()
    try:
        await until(lambda: src.stats.received >= 2, what="the initial values")
        start = src.stats.received
        await temp.write_value(60.0)
        for i in range(120):
            await srv.write_attribute_value(
                fast.nodeid, ua.DataValue(ua.Variant(float(i + 1), ua.VariantType.Double))
            )
        await until(lambda: src.stats.received >= start + 121, what="the burst handed over")
        got = []
        async with asyncio.timeout(10):
            async for r in src.items():
                got.append(r)
                if len(src._channel) == 0:
                    break
        assert 60.0 in [r.value for r in got if r.tag == "Temp"]
        assert src.stats.dropped > 0 and set(src.stats.dropped_by_key) == {"Fast"}
        assert src.stats.dropped_by_key["Fast"] == src.stats.dropped
    finally:
        await src.stop()
        await srv.stop()
