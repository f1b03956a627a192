"""A persistent session's QoS 1 acknowledgements across a reconnect, against a real Mosquitto (MQTT 3.1.1 and 5).

The source acknowledges a QoS 1 message once it is taken (``_Unacked``), so messages received before a
connection dropped may be acknowledged on the next one. A packet id names a message only within its broker
session: when the broker lost the session (restarted without persistence, session expired, failed over), it
gives ids from 1 again to new messages, and a PUBACK for a message of the old session acknowledged the new
message under that id before the agent took it: stopped then, the agent lost it for good. When the broker
kept the session, it sends the unacknowledged messages again (DUP) at once, before the PUBACK for a message
taken while away reaches it, and the source acknowledged the DUP copy too: a second PUBACK for an id the
broker had freed (Mosquitto's debug log shows both; a broker that gives a freed id out again at once would
take it for a newer message's, acknowledged before the agent took it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import threading
from collections.abc import Callable

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt.client import MqttSource, _Unacked
from devices.mqtt.settings import MqttSettings
from tests.integration.test_mqtt_stop_unread import Reader
from tests.support.peers import Mosquitto
from tests.support.tcp_cut import CutRelay


async def _until(pred) -> None:
    async with asyncio.timeout(60):
        while not pred():
            await asyncio.sleep(0.02)


async def _wait(event: asyncio.Event) -> None:
    async with asyncio.timeout(60):
        await event.wait()


def _publish(port: int, cid: str, topic: str, payloads: list[bytes]) -> None:
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        for p in payloads:
            pub.publish(topic, p, qos=1).wait_for_publish(30)
    finally:
        pub.disconnect()
        pub.loop_stop()


def _ns(*ns: int) -> list[bytes]:
    return [json.dumps({"n": n}).encode() for n in ns]


@pytest.mark.parametrize("protocol", ["mqtt311", "mqtt5"])
async def test_a_message_of_a_session_the_broker_lost_never_acknowledges_a_new_one(
    mosquitto, protocol
) -> None:
    """Messages 0-2 come (packet ids 1-3); the reader is held at 0, as a full pipeline holds it; the broker
    restarts without persistence and the source reconnects to a new session; 10-14 come under ids 1-5. The
    reader goes on with 1 and 2, takes 10 and the agent stops. Before, the PUBACKs of 1 and 2 (ids 2 and 3)
    acknowledged 11 and 12, never taken: the next start got 13 and 14 only. Now it gets 11 to 14."""
    topic = f"lost/{protocol}/line1"
    settings = MqttSettings(
        port=mosquitto.port,
        protocol=protocol,
        client_id=f"gw-lost-{protocol}",
        persistent_session=True,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        subscriptions=[{"topic": f"lost/{protocol}/#", "qos": 1}],
    )
    first = MqttSource("mq", settings)
    again = MqttSource("mq", settings)
    reader = Reader(first, topic, hold=(0, 10))
    try:
        await first.start()
        await _wait(first.subscribed)
        await asyncio.to_thread(_publish, mosquitto.port, "device-a", topic, _ns(0, 1, 2))
        await _wait(reader.held[0])
        await _until(lambda: first.stats.received >= 3)
        await asyncio.to_thread(mosquitto.restart)  # persistence false: the session is gone
        await _until(lambda: first.stats.reconnects >= 1 and first.subscribed.is_set())
        await asyncio.to_thread(_publish, mosquitto.port, "device-b", topic, _ns(10, 11, 12, 13, 14))
        await _until(lambda: first.stats.received >= 8)
        reader.go[0].set()
        await _wait(reader.held[10])
        await reader.cancel()  # the agent's stop: its readers first, its sources last
        await first.stop()
        assert reader.ns == [0, 1, 2, 10], reader.ns

        after = Reader(again, topic)
        await again.start()
        await _wait(again.subscribed)
        await asyncio.to_thread(_publish, mosquitto.port, "device-c", f"{topic}/fence", [b'{"fence": 1}'])
        await _wait(after.fenced)
        await after.cancel()
    finally:
        await reader.cancel()
        await first.stop()
        await again.stop()
    # every message of the new session not taken before the stop, once
    assert after.ns == [11, 12, 13, 14], after.ns


@pytest.mark.parametrize("protocol", ["mqtt311", "mqtt5"])
async def test_a_message_taken_while_away_is_acknowledged_once_when_the_broker_kept_the_session(
    tmp_path, protocol
) -> None:
    """Messages 0-4 come; the reader is held at 4 (taken, its PUBACK not yet sent); the link is cut and the
    source reconnects to its kept session. It acknowledges what it took while away, and the broker, which sent
    those messages again right after its CONNACK, gets one PUBACK for each message, as its log says: before,
    each DUP copy was acknowledged as well, under an id the broker had freed by then."""
    mosquitto = Mosquitto(tmp_path / "mosq", extra_conf="log_type all").start()
    relay = CutRelay(mosquitto.port)
    topic = f"kept/{protocol}/line1"
    cid = f"gw-kept-{protocol}"
    src = MqttSource(
        "mq",
        MqttSettings(
            port=relay.port,
            protocol=protocol,
            client_id=cid,
            persistent_session=True,
            reconnect_min_s=0.1,
            reconnect_max_s=0.5,
            subscriptions=[{"topic": f"kept/{protocol}/#", "qos": 1}],
        ),
    )
    reader = Reader(src, topic, hold=(4,))
    try:
        await src.start()
        await _wait(src.subscribed)
        await asyncio.to_thread(_publish, mosquitto.port, "device-a", topic, _ns(0, 1, 2, 3, 4))
        await _wait(reader.held[4])
        relay.cut()
        await _until(lambda: src.stats.reconnects >= 1 and src.subscribed.is_set())
        await _until(lambda: src.notices.counts.get("redelivered", 0) >= 1)
        reader.go[4].set()
        await asyncio.to_thread(_publish, mosquitto.port, "device-b", f"{topic}/fence", [b'{"fence": 1}'])
        await _wait(reader.fenced)
        # the fence, taken, is acknowledged at once: awaited in the broker's log before the stop, so that what
        # is counted below is what the broker had when the session ended (the stop sends nothing more)
        try:
            await _until(lambda: 6 in _acks(mosquitto, cid))
        except TimeoutError:
            raise AssertionError(
                f"the fence (id 6) was never acknowledged: {_acks(mosquitto, cid)}; unacked "
                f"{list(src._unacked._cells) if src._unacked is not None else None}"
            ) from None
    finally:
        await reader.cancel()
        await src.stop()
        relay.close()
        mosquitto.stop()
    assert relay.connections == 2  # one reconnect, to the same session
    assert reader.ns == [0, 1, 2, 3, 4], reader.ns
    # a fresh broker gives this session's 6 messages ids 1-6: each acknowledged once
    acks = _acks(mosquitto, cid)
    assert sorted(acks) == [1, 2, 3, 4, 5, 6], acks


@pytest.mark.parametrize("protocol", ["mqtt311", "mqtt5"])
async def test_a_flush_while_the_connack_is_taken_in_acknowledges_no_message_twice(
    tmp_path, caplog, protocol
) -> None:
    """As above, but paho's thread is held in ``on_connect`` of the new connection (at its "reconnected to"
    line: paho has read the CONNACK and says it is connected) while the reader goes on from 4 and its batch's
    acknowledgements are flushed. Before, that flush sent them on the new connection as if on the old one,
    not noted as acknowledged late: the DUP copies that came next were acknowledged again (the batch's ids
    twice in the broker's log). Now nothing is acknowledged until the CONNACK is taken in, then each once."""
    mosquitto = Mosquitto(tmp_path / "mosq", extra_conf="log_type all").start()
    relay = CutRelay(mosquitto.port)
    topic = f"window/{protocol}/line1"
    cid = f"gw-window-{protocol}"
    src = MqttSource(
        "mq",
        MqttSettings(
            port=relay.port,
            protocol=protocol,
            client_id=cid,
            persistent_session=True,
            reconnect_min_s=0.1,
            reconnect_max_s=0.5,
            subscriptions=[{"topic": f"window/{protocol}/#", "qos": 1}],
        ),
    )
    parked, release = threading.Event(), threading.Event()

    def park(record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args[1:2] == ("reconnected to",):
            parked.set()  # paho's thread, the CONNACK read and not yet taken in
            release.wait(60)
        return True

    caplog.set_level(logging.INFO, logger="devices.mqtt.client")
    logger = logging.getLogger("devices.mqtt.client")
    logger.addFilter(park)
    reader = Reader(src, topic, hold=(4,))
    try:
        await src.start()
        await _wait(src.subscribed)
        await asyncio.to_thread(_publish, mosquitto.port, "device-a", topic, _ns(0, 1, 2, 3, 4))
        await _wait(reader.held[4])
        relay.cut()
        assert await asyncio.to_thread(parked.wait, 60)
        reader.go[4].set()
        # the reader's batch ended: its flush ran before the reader's next wait, in the same step
        await _until(lambda: src._pos >= len(src._held))
        release.set()
        await _until(lambda: src.stats.reconnects >= 1 and src.subscribed.is_set())
        await asyncio.to_thread(_publish, mosquitto.port, "device-b", f"{topic}/fence", [b'{"fence": 1}'])
        await _wait(reader.fenced)
        await _until(lambda: 6 in _acks(mosquitto, cid))
    finally:
        release.set()
        logger.removeFilter(park)
        await reader.cancel()
        await src.stop()
        relay.close()
        mosquitto.stop()
    assert relay.connections == 2
    assert reader.ns == [0, 1, 2, 3, 4], reader.ns
    acks = _acks(mosquitto, cid)
    assert sorted(acks) == [1, 2, 3, 4, 5, 6], acks


class _Acks:
    """paho's client as ``_Unacked`` sees it: connected, its PUBACKs recorded."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def is_connected(self) -> bool:
        return True

    def ack(self, mid: int, qos: int) -> int:
        self.acked.append(mid)
        return 0


class _HookedLock:
    """``_Unacked``'s lock, running ``after_release`` (once) just after its next release: the consumer's
    thread taking its turn there."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.after_release: Callable[[], None] | None = None

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        hook, self.after_release = self.after_release, None
        if hook is not None:
            hook()


def test_a_dup_copy_judged_while_the_consumer_flushes_its_first_copy_is_acknowledged_once() -> None:
    """A message comes (id 2), the link is cut before it is taken and the broker, which kept the session,
    sends it again (DUP) on the next connection. paho's thread judges the copy (``redelivered``) while the
    consumer takes the first copy and flushes its acknowledgement, which goes on the new connection and is
    noted as late. Before, the copy was judged under two holds of the lock: the flush in between found it
    neither late (not yet) nor waiting (no longer), and it was acknowledged a second time. paho's client is
    a recorder here: the consumer's turn is taken at a release of the lock, deterministically."""
    client = _Acks()
    unacked = _Unacked(client)  # type: ignore[arg-type]
    lock = _HookedLock()
    unacked._lock = lock  # type: ignore[assignment]
    first = unacked.add(2)  # queued for the consumer, not yet taken
    unacked.connecting()
    unacked.connected(True, True)  # the kept session: nothing taken, nothing acknowledged
    assert client.acked == []

    def consumer_takes_it() -> None:
        first[1] = True
        unacked.flush()

    lock.after_release = consumer_takes_it
    unacked.redelivered(2)  # its DUP copy (paho's thread)
    assert client.acked == [2], client.acked  # once, by the consumer's flush
    assert len(unacked) == 0


def test_the_relay_passes_each_end_on_behind_what_went_before_as_a_network_does() -> None:
    """The client's FIN reaches the server behind everything it sent, and the client's side stays open for
    the server's answer until the server's own end: a source whose stop sends its DISCONNECT, shuts its side
    and awaits the broker's close gets the broker's, once the broker has read everything. The relay closed
    the client's side at its FIN: the stop ended before a broker slow to read (a loaded CI machine) had read
    the last PUBACKs and the DISCONNECT, Mosquitto stopped next never logged them, and the test above saw
    the fence's PUBACK missing (ids 1-5 only)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(60)
    relay = CutRelay(server.getsockname()[1])

    def serve() -> None:
        conn, _ = server.accept()
        with conn, contextlib.suppress(OSError):
            got = 0
            while data := conn.recv(65536):
                got += len(data)
            conn.sendall(b"read %d" % got)  # only once the client's end came, behind its bytes

    threading.Thread(target=serve, daemon=True).start()
    back = b""
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=60) as c:
            c.sendall(b"x" * 100_000)
            c.shutdown(socket.SHUT_WR)
            while data := c.recv(65536):
                back += data
    finally:
        relay.close()
        server.close()
    assert back == b"read 100000", back


def _acks(mosquitto: Mosquitto, cid: str) -> list[int]:
    """The packet ids of the PUBACKs ``cid`` sent, as the broker's log says, in its order."""
    log = (mosquitto.workdir / "mosquitto.log").read_text(errors="replace")
    return [int(m) for m in re.findall(rf"Received PUBACK from {cid} \(Mid: (\d+)", log)]


@pytest.mark.parametrize("protocol", ["mqtt311", "mqtt5"])
async def test_messages_of_a_session_the_broker_lost_not_handed_on_at_the_stop_are_counted_lost(
    mosquitto, protocol
) -> None:
    """Messages 0-2 come, the reader is held at 0, the broker restarts without persistence and the source
    reconnects to a new session; the agent stops. 1 and 2 were never handed on, and the broker has forgotten
    them: they are counted as lost (``dropped_at_stop``). Before, the stop said the broker kept them for the
    next start (``left_at_stop``), which it did not."""
    topic = f"lostcount/{protocol}/line1"
    src = MqttSource(
        "mq",
        MqttSettings(
            port=mosquitto.port,
            protocol=protocol,
            client_id=f"gw-lostcount-{protocol}",
            persistent_session=True,
            reconnect_min_s=0.1,
            reconnect_max_s=0.5,
            subscriptions=[{"topic": f"lostcount/{protocol}/#", "qos": 1}],
        ),
    )
    reader = Reader(src, topic, hold=(0,))
    try:
        await src.start()
        await _wait(src.subscribed)
        await asyncio.to_thread(_publish, mosquitto.port, "device-a", topic, _ns(0, 1, 2))
        await _wait(reader.held[0])
        await _until(lambda: src.stats.received >= 3)
        await asyncio.to_thread(mosquitto.restart)  # persistence false: the session is gone
        await _until(lambda: src.stats.reconnects >= 1 and src.subscribed.is_set())
        await reader.cancel()  # the agent's stop: its readers first, its sources last
        await src.stop()
    finally:
        await reader.cancel()
        await src.stop()
    assert reader.ns == [0], reader.ns
    assert src.notices.counts.get("dropped_at_stop") == 2, src.notices.status()
    assert "left_at_stop" not in src.notices.counts, src.notices.status()
