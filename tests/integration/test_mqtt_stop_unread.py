"""QoS 1 messages that come while the agent stops, against a real Mosquitto (MQTT 3.1.1 and 5).

The agent stops its readers first, then (after its pipelines, actions and outbox) its sources: meanwhile the
source is still connected and the broker goes on delivering. paho acknowledged every QoS 1 message on receipt,
so those were acknowledged and then dropped with the source's queue: with ``persistent_session`` the broker,
which would have kept them for the next start, had forgotten them; without one they were lost uncounted.
Here the reader is cancelled as the agent does, messages are published and received, the source is stopped
and a new one started with the same client_id: it gets exactly the messages the first never handed on, none
twice (a malformed one handed on before is not sent again either); without a persistent session they are
counted. The last test does the same through a real agent: messages published once its stop has reached its
sources are read by the next agent with the same config, once each. A fence published last ends each wait: one session's messages come in order, so once it is read
every redelivery has been too."""

from __future__ import annotations

import asyncio
import json

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.support.waits import until

TAKEN = 30  # handed on before the stop (one of them malformed)
DURING = 25  # published after the readers stopped: more than the 20 Mosquitto keeps in flight to one client


class Reader:
    """The agent's reader of a source: every ``n`` read, until cancelled as the agent's stop does; held at
    each ``n`` in ``hold`` (``held[n]`` set), as a pipeline's full blocking queue holds it, until ``go[n]``."""

    def __init__(self, src: MqttSource, topic: str, hold: tuple[int, ...] = ()) -> None:
        self.ns: list[float] = []
        self.held = {n: asyncio.Event() for n in hold}
        self.go = {n: asyncio.Event() for n in hold}
        self.fenced = asyncio.Event()
        self._tag, self._fence = f"{topic}/n", f"{topic}/fence/fence"
        self.task = asyncio.create_task(self._read(src))

    async def _read(self, src: MqttSource) -> None:
        async for r in src.items():
            if r.tag == self._tag:
                self.ns.append(r.value)
                if r.value in self.held:
                    self.held[int(r.value)].set()
                    await self.go[int(r.value)].wait()
            elif r.tag == self._fence:
                self.fenced.set()

    async def until(self, pred, what: str) -> None:
        async with asyncio.timeout(60):
            while not pred():
                await asyncio.sleep(0.02)

    async def cancel(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def _publisher(port: int, cid: str) -> paho.Client:
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    return pub


def _publish(pub: paho.Client, topic: str, payloads: list[bytes]) -> None:
    for p in payloads:
        pub.publish(topic, p, qos=1).wait_for_publish(30)


def _ns(a: int, b: int) -> list[bytes]:
    return [json.dumps({"n": i}).encode() for i in range(a, b)]


async def _stop_amid(src: MqttSource, pub: paho.Client, topic: str, sent: int) -> Reader:
    """Start ``src``, hand on ``TAKEN`` messages (one malformed), cancel the reader, publish ``DURING`` more,
    wait until the source has received the ``sent`` of them the broker sends it, and stop it."""
    reader = Reader(src, topic)
    await src.start()
    async with asyncio.timeout(60):
        await src.subscribed.wait()
    await asyncio.to_thread(_publish, pub, topic, [*_ns(0, 10), b'{"n": oops', *_ns(10, TAKEN - 1)])
    await reader.until(lambda: len(reader.ns) == TAKEN - 1, "the first messages read")
    await reader.cancel()  # the agent's stop: its readers first, its sources last
    await asyncio.to_thread(_publish, pub, topic, _ns(TAKEN, TAKEN + DURING))
    await reader.until(lambda: src.stats.received >= TAKEN + sent, "the messages sent during the stop")
    await src.stop()
    return reader


@pytest.mark.parametrize("protocol", ["mqtt311", "mqtt5"])
async def test_qos1_messages_that_come_while_stopping_arrive_after_restart_once(mosquitto, protocol) -> None:
    topic = f"stop/{protocol}/line1"
    settings = MqttSettings(
        port=mosquitto.port,
        protocol=protocol,
        client_id=f"gw-stop-{protocol}",
        persistent_session=True,
        subscriptions=[{"topic": f"stop/{protocol}/#", "qos": 1}],
    )
    pub = _publisher(mosquitto.port, f"device-{protocol}")
    first = MqttSource("mq", settings)
    again = MqttSource("mq", settings)
    try:
        # Mosquitto sends a client 20 unacknowledged messages at a time (max_inflight_messages)
        reader = await _stop_amid(first, pub, topic, 20)
        assert reader.ns == list(range(TAKEN - 1)), reader.ns
        assert first.stats.errors_by_reason.get("malformed_json") == 1, first.stats.errors_by_reason
        assert first.notices.counts.get("left_at_stop", 0) >= 20, first.notices.status()
        assert "dropped_at_stop" not in first.notices.counts, first.notices.status()

        after = Reader(again, topic)
        await again.start()
        async with asyncio.timeout(60):
            await again.subscribed.wait()
        await asyncio.to_thread(_publish, pub, f"{topic}/fence", [b'{"fence": 1}'])
        async with asyncio.timeout(60):
            await after.fenced.wait()
        await after.cancel()
    finally:
        await first.stop()
        await again.stop()
        pub.disconnect()
        pub.loop_stop()
    # every message published during the stop, once; none of those handed on before, nor the malformed one
    assert after.ns == list(range(TAKEN, TAKEN + DURING)), after.ns
    assert "malformed_json" not in again.stats.errors_by_reason, again.stats.errors_by_reason


@pytest.mark.parametrize(
    ("protocol", "sparkplug"),
    [("mqtt311", ""), ("mqtt5", ""), ("mqtt5", "subscription"), ("mqtt5", "host_id")],
)
async def test_messages_that_come_while_stopping_without_a_persistent_session_are_counted(
    mosquitto, protocol, sparkplug
) -> None:
    """Counted as lost, the notice saying that persistent_session keeps them: except on a source that also reads
    Sparkplug or publishes a host's STATE (sparkplug.host_id, JSON subscriptions only), where persistent_session
    is refused at load (a Sparkplug host connects with a clean session)."""
    topic = f"stopclean/{protocol}/{sparkplug}/line1"
    subscriptions: list[dict] = [{"topic": f"stopclean/{protocol}/{sparkplug}/#", "qos": 1}]
    extra: dict = {}
    if sparkplug == "subscription":
        subscriptions.append({"topic": "spBv1.0/stopclean/#", "codec": "sparkplug_b"})
    elif sparkplug == "host_id":
        extra["sparkplug"] = {"host_id": f"scada-stopclean-{protocol}"}
    settings = MqttSettings(port=mosquitto.port, protocol=protocol, subscriptions=subscriptions, **extra)
    src = MqttSource("mq", settings)
    pub = _publisher(mosquitto.port, f"device-clean-{protocol}")
    try:
        reader = await _stop_amid(src, pub, topic, DURING)  # acknowledged on receipt: all sent at once
    finally:
        await src.stop()
        pub.disconnect()
        pub.loop_stop()
    assert reader.ns == list(range(TAKEN - 1)), reader.ns
    # each received after the reader left: none handed on, each counted
    assert src.notices.counts.get("dropped_at_stop") == DURING, src.notices.status()
    assert src.stats.dropped == DURING
    # before: advised persistent_session: true on a Sparkplug source too (a sparkplug_b subscription, or only
    # sparkplug.host_id), which its load refuses
    assert ("persistent_session: true" in src.notices.messages["dropped_at_stop"]) is not bool(sparkplug)


@pytest.mark.parametrize("protocol", ["mqtt311", "mqtt5"])
async def test_an_agent_restarted_gets_the_qos1_messages_published_during_its_stop_once(
    tmp_path, mosquitto, protocol
) -> None:
    """The same through the agent: messages published once its stop has reached its sources (its readers,
    pipelines and outbox already stopped) are read by the next agent with the same config, once each."""
    topic = f"agentstop/{protocol}/line1"
    cfg = parse_config(
        {
            "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
            "http": {"enabled": False},
            "sources": {
                "mq": {
                    "type": "mqtt",
                    "port": mosquitto.port,
                    "protocol": protocol,
                    "client_id": f"gw-agent-stop-{protocol}",
                    "persistent_session": True,
                    "subscriptions": [{"topic": f"agentstop/{protocol}/#", "qos": 1}],
                }
            },
        }
    )
    pub = _publisher(mosquitto.port, f"device-agent-{protocol}")
    first, again = Agent(cfg), Agent(cfg)
    try:
        await first.start()
        src = first.sources["mq"]
        await until(src.subscribed.is_set, 60, "the first agent's SUBACK")
        await asyncio.to_thread(_publish, pub, topic, _ns(0, TAKEN))
        await until(lambda: first.source_items["mq"] == TAKEN, 60, "the first messages read")
        stop = src.stop

        async def publishing_stop(timeout_s: float = 5.0) -> None:
            # the agent's stop has reached its sources: its readers are gone, the source is still connected
            src.stop = stop
            await asyncio.to_thread(_publish, pub, topic, _ns(TAKEN, TAKEN + DURING))
            await until(lambda: src.stats.received >= TAKEN + 20, 60, "the messages sent during the stop")
            await stop(timeout_s)

        src.stop = publishing_stop
        await first.stop()
        assert first.source_items["mq"] == TAKEN  # none of them handed on by the stopping agent

        await again.start()
        await until(again.sources["mq"].subscribed.is_set, 60, "the second agent's SUBACK")
        await asyncio.to_thread(_publish, pub, f"{topic}/fence", [b'{"fence": 1}'])
        await until(lambda: f"{topic}/fence/fence" in again.tags["mq"], 60, "the fence")
        items, last = again.source_items["mq"], again.tags["mq"][f"{topic}/n"].value
    finally:
        await first.stop()
        await again.stop()
        pub.disconnect()
        pub.loop_stop()
    # every message published during the stop, once (and the fence); none of those read before
    assert (items, last) == (DURING + 1, TAKEN + DURING - 1)
