"""A clean stop of the MQTT source against a real Mosquitto: what was published just before ``stop()`` reaches
the broker's subscribers, and the broker publishes no will (an agent restart, a config reload and SIGTERM
all stop their sources this way).

paho used to close its socket right after writing the DISCONNECT: with bytes from the broker still unread (a
subscription's messages, PUBACKs) the kernel answers with a TCP RST that throws away what it had not sent yet,
the DISCONNECT included, so the broker took a network error and published the will; and paho keeps all but
20 QoS 1 messages back until PUBACKs come, so a DISCONNECT sent at once ended the rest unsent. The source
subscribes to its own results (and, in the second test, to a feed), so bytes from the broker are unread at its
close, as on a gateway reading a busy topic tree. Each run below is repeated: a lost message or a will in any
of them fails the test.

Ordering: after ``stop()`` a raw client publishes two "fences" in turn to itself, each awaited; the broker
handles a connection's packets in order and its closing before a later round trip, so once both have come
back everything the source's connection brought, and a will, has been delivered (no sleeps, no timing)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import ConnectionState
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings

T0 = 1_700_000_000.0  # past 2001: not taken for an unset clock
RUNS = 3
STOP_S = (
    60.0  # the stop's bound (5 s by default): a machine under load must not turn a slow broker into a loss
)


class Watcher:
    """A raw paho subscriber to the results, the source's will topic and its own fences."""

    def __init__(self, port: int, will_topic: str) -> None:
        self.results: set[str] = set()
        self.wills = 0
        self._will_topic = will_topic
        self._fences: dict[str, threading.Event] = {}
        self._subscribed = threading.Event()
        c = self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"watch-{will_topic.replace('/', '-')}"
        )
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        c.subscribe([("results/#", 1), (will_topic, 1), ("fence/#", 1)])
        assert self._subscribed.wait(30), "the watcher's SUBACK did not come"

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.startswith("results/"):
            self.results.add(msg.topic)
        elif msg.topic == self._will_topic:
            self.wills += 1
        elif msg.topic in self._fences:
            self._fences[msg.topic].set()

    async def fence(self, name: str) -> None:
        for k in range(2):
            topic = f"fence/{name}/{k}"
            done = self._fences[topic] = threading.Event()
            self.client.publish(topic, b"", qos=1)
            async with asyncio.timeout(60):
                while not done.is_set():
                    await asyncio.to_thread(done.wait, 0.5)

    def close(self) -> None:
        self.client.disconnect()  # first: paho's loop ends once it is written, not at its next 1 s select
        self.client.loop_stop()


class Feed:
    """Messages on the source's subscription while it stops: bytes from the broker are unread at its close."""

    def __init__(self, port: int, topic: str) -> None:
        self._stop = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"feed-{topic.replace('/', '-')}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, args=(topic,), daemon=True)
        self._thread.start()

    def _run(self, topic: str) -> None:
        i = 0
        while not self._stop.is_set():
            self.client.publish(topic, json.dumps({"ts": T0 + i, "v": i}), qos=0)
            i += 1
            if i % 20 == 0:  # some 4,000 a second: enough to be unread at any moment, light on 2 cores
                self._stop.wait(0.005)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.client.disconnect()
        self.client.loop_stop()


async def _publish_then_stop(
    port: int, run: str, protocol: str, qos: int, n: int, fed: bool
) -> tuple[int, int]:
    """One source with a will publishes ``n`` results and is stopped at once: (results delivered, wills)."""
    will_topic = f"agents/{run}/status"
    watcher = Watcher(port, will_topic)
    feed = None
    src = MqttSource(
        "mq",
        MqttSettings(
            port=port,
            protocol=protocol,
            # its own results come back to it too: bytes from the broker are unread at any moment
            subscriptions=[{"topic": f"plant/{run}/#", "qos": 0}, {"topic": f"results/{run}/#", "qos": 0}],
            will={"topic": will_topic, "payload": "offline", "qos": 1, "retain": False},
        ),
    )
    try:
        await src.start()
        async with asyncio.timeout(30):
            await src.subscribed.wait()
        if fed:
            feed = Feed(port, f"plant/{run}/sensor")
        for i in range(n):
            await src.publish(f"results/{run}/{i}", {"ts": T0 + i, "verdict": "OK"}, qos=qos)
        await src.stop(timeout_s=STOP_S)
        await watcher.fence(run)
        return len(watcher.results), watcher.wills
    finally:
        await src.stop()
        if feed is not None:
            feed.close()
        watcher.close()


@pytest.mark.parametrize("protocol", ["mqtt311", "mqtt5"])
async def test_stop_sends_every_qos1_result_published_before_it(mosquitto, protocol):
    # paho holds all but 20 QoS 1 messages back until PUBACKs come: a stop right after publishing used to
    # send its DISCONNECT behind those 20 and end the rest unsent
    for r in range(RUNS):
        delivered, wills = await _publish_then_stop(
            mosquitto.port, f"q1-{protocol}-{r}", protocol, 1, 300, False
        )
        assert (delivered, wills) == (300, 0), (
            f"run {r}: {delivered} of 300 QoS 1 results delivered, {wills} will(s)"
        )


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("protocol", ["mqtt311", "mqtt5"])
async def test_clean_stop_while_messages_arrive_publishes_no_will_and_loses_nothing(mosquitto, protocol, qos):
    # the source's subscription receives messages up to the stop: its socket used to close with them unread,
    # the kernel's RST dropped the DISCONNECT (and unsent results) and the broker published the will
    for r in range(RUNS):
        delivered, wills = await _publish_then_stop(
            mosquitto.port, f"fed-{protocol}-{qos}-{r}", protocol, qos, 200, True
        )
        assert (delivered, wills) == (200, 0), (
            f"run {r}: {delivered} of 200 results delivered, {wills} will(s)"
        )


async def test_stop_ends_when_the_broker_takes_nothing_more(mosquitto):
    # a hung broker (here stopped with SIGSTOP; a path that died without FIN or RST is the same) leaves paho
    # writing into full send buffers: its thread lived on until its keepalive noticed (1.5x keepalive_s, past
    # systemd's stop timeout), and stop() raised TimeoutError with the source left connected and its queue open
    src = MqttSource(
        "mq",
        MqttSettings(
            port=mosquitto.port,
            client_id="hung-broker",
            keepalive_s=3600,
            will={"topic": "agents/hung/status", "payload": "offline", "qos": 1, "retain": False},
        ),
    )
    await src.start()
    async with asyncio.timeout(30):
        await src.connected.wait()
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)
    try:
        blob = "x" * 100_000
        for i in range(300):  # 30 MB: more than the socket buffers on both sides hold
            await src.publish(f"results/hung/{i}", {"ts": T0 + i, "blob": blob}, qos=0)
        await src.stop(timeout_s=1.0)
        assert src.state is ConnectionState.STOPPED
        assert not [t for t in threading.enumerate() if t.name.endswith("hung-broker")], (
            "paho's thread lives on"
        )
    finally:
        os.kill(mosquitto.proc.pid, signal.SIGCONT)
        await src.stop()
