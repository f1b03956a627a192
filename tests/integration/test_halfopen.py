"""Connections that die without a word (half-open TCP): a NAT or firewall that timed out the flow, a switch
rebooting, a cable pulled beyond a switch. Neither side gets a FIN or an RST, both sockets stay ESTABLISHED
and writes go into the kernel's buffer; only a keepalive notices. Each test puts a freezing relay
(``tests.support.freeze_relay``) between a client of the project and its real peer on 127.0.0.1, with short
keepalives so that each takes seconds (detection times are measured in ``bench/halfopen_bench.py``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time

import grpc
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_trainer.fleet.guard import QuotaLimits, Quotas
from cloud_trainer.fleet.service import FleetServer, channel_credentials
from devices.base import ConnectionState
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import cloud_settings, make_pki
from tests.support.freeze_relay import FreezeRelay
from tests.support.peers import free_port
from tests.support.waits import until


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_the_uplink_leaves_a_dead_path_and_delivers_everything_once_in_order(tmp_path, pki) -> None:
    """The path to the fleet service dies silently (its NAT mapping dropped) while records are being sent;
    new connections get through. The gRPC keepalive ends the dead connection and the outbox drains over a new
    one: every record once, in order. Before, grpc timed the keepalive ping out by its 60 s
    ``ping_timeout_ms`` (keepalive_timeout_ms was not what ended it): about 70 s on the dead connection."""
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    relay = FreezeRelay(port)
    ob = Outbox(OutboxSettings(), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, relay.port, keepalive_s=5, keepalive_timeout_s=1), ob)
    try:
        await up.start()
        for i in range(20):
            ob.append("result", {"i": i})
        up.poke()
        await until(lambda: up.acked == 20 and up.mode == "stream", what="the first 20 records acknowledged")
        relay.freeze()
        for i in range(20, 40):  # written into the dead connection, never acknowledged
            ob.append("result", {"i": i})
        up.poke()
        await asyncio.sleep(0.5)
        relay.drop()  # the old flow is gone for good; a new connection gets through
        for i in range(40, 60):
            ob.append("result", {"i": i})
        up.poke()
        # keepalive_s + keepalive_timeout_s is 6 s here; the former code needed ~70 s
        await until(lambda: ob.stats()["depth"] == 0, timeout_s=20, what="the outbox drained after the drop")
        recs = srv.store.records("gw1", limit=1000)
        assert [r["payload"]["i"] for r in recs] == list(range(60))
        assert up.reconnects >= 1 and "ping timeout" in (up.last_error or ""), up.last_error
    finally:
        await up.stop()
        ob.close()
        relay.close()
        await srv.stop()


async def test_an_mqtt_source_on_a_dead_path_says_so_within_its_keepalive_and_loses_no_qos1_message(
    mosquitto,
) -> None:
    """The path to the broker dies silently while the gateway publishes results at QoS 1. paho's PINGREQ goes
    unanswered: the source closes the connection half a keepalive later, says why (a dead path, not the
    broker's doing), reconnects over a new path, and every message published while the path was dead
    arrives. Before, paho waited a whole keepalive for the PINGRESP (up to 2 keepalives after the path died)
    and the source said 'lost broker (Keep alive timeout)'."""
    got: list[int] = []
    watch = paho.Client(CallbackAPIVersion.VERSION2, client_id="watch")
    watch.on_message = lambda c, u, m: got.append(json.loads(m.payload)["i"])
    watch.connect("127.0.0.1", mosquitto.port)
    watch.subscribe("results/#", 1)
    watch.loop_start()
    relay = FreezeRelay(mosquitto.port)
    keepalive = 5
    settings = MqttSettings(
        port=relay.port,
        client_id="gw-halfopen",
        keepalive_s=keepalive,
        reconnect_min_s=0.1,
        reconnect_max_s=1.0,
    )
    src = MqttSource("mq", settings)
    try:
        await src.start()
        await until(lambda: src.state is ConnectionState.CONNECTED, what="the source connected")
        await src.publish("results/a", {"i": 0}, qos=1)
        await until(lambda: got == [0], what="the first result at the watcher")
        relay.freeze()
        frozen_at = time.monotonic()
        for i in range(1, 6):  # unconfirmed: written into the dead connection
            await src.publish("results/a", {"i": i}, qos=1)
        await until(
            lambda: src.state is not ConnectionState.CONNECTED,
            timeout_s=4 * keepalive,
            what="the source to notice the dead path",
        )
        noticed_s = time.monotonic() - frozen_at
        relay.drop()  # a new path: the NAT maps the next connection
        await until(lambda: src.state is ConnectionState.CONNECTED, what="the source reconnected")
        await until(lambda: set(got) == set(range(6)), what=f"all 6 results at the watcher (got {got})")
    finally:
        await src.stop()
        watch.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        watch.loop_stop()
        relay.close()
    last = src.stats.last_error or ""
    assert "the path died without closing" in last, (last, noticed_s)


async def test_the_fleet_service_releases_the_streams_of_an_agent_whose_path_died(tmp_path, pki) -> None:
    """An agent's path dies without a word while its Connect and PushRecords streams are open, and the agent
    never comes back on it (it lost power): the service's keepalive ping goes unanswered and the connection
    is ended within keepalive_s + keepalive_timeout_s, releasing the agent's streams (and their count against
    its concurrent_streams quota, which a flapping link would otherwise fill with dead streams until the
    agent was refused). Before, grpc timed the server's ping out by its 60 s ping_timeout_ms: ~120 s, not the
    80 s the service meant."""
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        keepalive_s=1,
        keepalive_timeout_s=1,
    )
    await srv.start()
    relay = FreezeRelay(port)
    ob = Outbox(OutboxSettings(), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, relay.port, heartbeat_s=5.0, keepalive_s=60), ob)
    agent = ("default", "gw1")
    try:
        await up.start()
        await until(lambda: agent in srv.hub.streams, what="the agent's Connect stream at the service")
        relay.freeze()
        for t in up._tasks:  # the agent is gone (power cut): nothing it does reaches the wire any more
            t.cancel()
        # the former code held them ~120 s
        await until(
            lambda: agent not in srv.hub.streams and not srv.quotas._streams.get(agent),
            timeout_s=30,
            what="the dead agent's streams released",
        )
    finally:
        await up.stop()
        ob.close()
        relay.close()
        await srv.stop()


async def test_an_agent_back_on_a_new_path_is_not_refused_for_the_stream_left_on_the_dead_one(
    tmp_path, pki
) -> None:
    """The agent's path dies silently while a PushRecords stream is open, and the agent comes back on a new
    connection before the service's keepalive has ended the old one. An agent at its stream limit has its
    PushRecords that has waited 5 s or more for a batch (IDLE_PUSH_S) ended for its new stream: the uplink
    sends one batch at a time and ends its stream when drained, so that one was left on the dead path, and
    the agent's records go on within seconds. Before, the dead stream still counted
    against the agent's concurrent_streams until the keepalive reaped it (~120 s): with a quota of 2 (Connect
    and PushRecords) the agent's new PushRecords was refused (RESOURCE_EXHAUSTED) and nothing it kept was
    sent meanwhile; with the default 4, a third silent drop within that time did the same."""
    port = free_port()
    quotas = Quotas(QuotaLimits(concurrent_streams=2))
    srv = FleetServer(
        tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", quotas=quotas
    )
    await srv.start()
    relay = FreezeRelay(port)
    agent = ("default", "gw1")
    # the stream left behind: gw1's PushRecords, one batch acknowledged, then its path dies
    dead = grpc.aio.secure_channel(
        f"127.0.0.1:{relay.port}",
        channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key"),
    )
    batches: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (b := await batches.get()) is not None:
            yield b

    call = rpc.FleetStub(dead).PushRecords(requests())
    await batches.put(
        pb.RecordBatch(records=[pb.Record(seq=1, epoch=7, kind="result", t=1.0, payload=b"{}")])
    )
    assert list((await call.read()).seqs) == [1]
    assert quotas._streams[agent] == 1
    relay.drop()  # the old connection is silent for good; new ones get through
    ob = Outbox(OutboxSettings(), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, relay.port), ob)
    try:
        await up.start()
        for i in range(30):
            ob.append("result", {"i": i})
        up.poke()
        await until(
            lambda: ob.stats()["acked"] == 30, timeout_s=30, what="the records sent over the new connection"
        )
        got = [r["payload"]["i"] for r in srv.store.records("gw1", limit=1000) if r["epoch"] == ob.epoch]
        assert got == list(range(30))
    finally:
        call.cancel()
        await dead.close(grace=None)
        await up.stop()
        ob.close()
        relay.close()
        await srv.stop()


async def test_a_live_agents_push_is_not_ended_for_another_stream_on_its_own_connection(
    tmp_path, pki, monkeypatch
) -> None:
    """A live agent at its stream limit whose PushRecords waits between batches (its uplink paces a batch to
    its bandwidth cap, or a large batch crosses a slow link) had that push ended by the service as "left on a
    dead path" whenever it opened another stream (a package download in a rollout) over the very connection the
    push was on: the batch was sent again over the capped link and the uplink counted a reconnect. A stream on
    the connection that just carried the new one is alive: a second PushRecords is refused (RESOURCE_EXHAUSTED),
    as a live agent's streams beyond its quota always were, and the push goes on (a package download makes it
    give way between two batches instead: test_uplink_stream_guard.py). (IDLE_PUSH_S shortened so that the
    pacing outlasts it within a second or two.)"""
    from cloud_trainer.fleet import service

    monkeypatch.setattr(service, "IDLE_PUSH_S", 0.3)
    port = free_port()
    quotas = Quotas(QuotaLimits(concurrent_streams=2))
    srv = FleetServer(
        tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", quotas=quotas
    )
    await srv.start()
    ob = Outbox(OutboxSettings(), tmp_path / "agent")
    ob.open()
    # ~130 B a record, 10 a batch: each batch paced ~1.3 s before it is written
    up = Uplink(cloud_settings(pki, port, bandwidth_cap_bytes_per_s=1024, batch_max_records=10), ob)
    try:
        await up.start()
        for i in range(30):
            ob.append("result", {"i": i, "pad": "x" * 100})
        up.poke()
        agent = ("default", "gw1")
        await until(lambda: quotas._streams[agent] == 2, what="Connect and PushRecords open")
        await until(lambda: ob.stats()["acked"] >= 10, timeout_s=30, what="a first batch acknowledged")
        await asyncio.sleep(0.5)  # the push now waits, pacing its next batch, longer than IDLE_PUSH_S
        # the agent's own third stream, on the uplink's channel: a second PushRecords
        other = up.client.stub.PushRecords(iter([]))
        try:
            await other.read()
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        # the former code: the push ended without a status; the uplink waited 60 s for its ack, then counted a
        # reconnect ('PushRecords: TimeoutError') and sent the batch again
        await until(lambda: ob.stats()["acked"] == 30, timeout_s=30, what="every record acknowledged")
        assert up.reconnects == 0, up.last_error
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        got = [r["payload"]["i"] for r in srv.store.records("gw1", limit=1000) if r["epoch"] == ob.epoch]
        assert got == list(range(30))
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


async def test_an_mqtt_source_sending_a_large_result_over_a_slow_uplink_keeps_its_connection(
    mosquitto,
) -> None:
    """A gateway on a slow uplink (a cellular modem at 32 KB/s) publishes a result of ~390 KB (an image, a big
    JSON) at QoS 1: ~12 s on the wire, 2.4 keepalives, nothing coming back meanwhile. paho's PINGREQ, due a
    keepalive after the connection began, waits behind the message, and so does its PINGRESP. The connection is
    alive, its bytes moving: it is kept and the result arrives once. Before, the source took the PINGREQ
    unanswered for half a keepalive as a dead path and closed the connection (fixed earlier); and paho itself
    closed it a whole keepalive after the PINGREQ ("Keep alive timeout", nothing received from the broker
    meanwhile): the message was sent again from its start over the next connection, to be cut again, never
    delivered."""
    got: list[int] = []
    watch = paho.Client(CallbackAPIVersion.VERSION2, client_id="watch-slow")
    watch.on_message = lambda c, u, m: got.append(json.loads(m.payload)["i"])
    watch.connect("127.0.0.1", mosquitto.port)
    watch.subscribe("results/#", 1)
    watch.loop_start()
    rate = 32_000
    keepalive = 5
    # ~2.4 keepalives on the wire from just after the connection began: the PINGREQ (at 1 keepalive) waits
    # past half a keepalive (the former check cut at ~1.5) and past a whole one (paho's own limit, at 2)
    blob = "x" * int(rate * (2.4 * keepalive + 0.25))
    relay = FreezeRelay(mosquitto.port, up_bytes_per_s=rate)
    settings = MqttSettings(
        port=relay.port, client_id="gw-slow", keepalive_s=keepalive, reconnect_min_s=0.1, reconnect_max_s=1.0
    )
    src = MqttSource("mq", settings)
    try:
        await src.start()
        await until(lambda: src.state is ConnectionState.CONNECTED, what="the source connected")
        await src.publish("results/img", {"i": 1, "image": blob}, qos=1)
        await until(
            lambda: got or src.stats.reconnects or src.state is not ConnectionState.CONNECTED,
            timeout_s=8 * keepalive,
            what="the result at the watcher, or the connection lost",
        )
        await until(lambda: got or src.stats.reconnects, what="the result, or a reconnect")
    finally:
        await src.stop()
        watch.disconnect()  # first: paho's thread ends now, not at its next 1 s select
        watch.loop_stop()
        relay.close()
    # the result arrived, once, over its first connection: neither the check nor paho took the moving
    # connection for dead
    assert got == [1], (got, src.stats.reconnects, src.stats.last_error)
    assert src.stats.reconnects == 0 and src.stats.last_error is None, src.stats.last_error


@contextlib.asynccontextmanager
async def _uplink_to_fleet(tmp_path, pki, up_bytes_per_s: int | None = None, **settings):
    """A started fleet service, an open outbox and a started uplink to the service, through a relay limited to
    ``up_bytes_per_s`` when given: (service, outbox, uplink); all stopped at the end."""
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    relay = FreezeRelay(port, up_bytes_per_s=up_bytes_per_s) if up_bytes_per_s else None
    ob = Outbox(OutboxSettings(), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, relay.port if relay else port, **settings), ob)
    try:
        await up.start()
        yield srv, ob, up
    finally:
        await up.stop()
        ob.close()
        if relay:
            relay.close()
        await srv.stop()


async def test_a_batch_longer_on_a_slow_link_than_the_services_answer_time_is_acknowledged_once(
    tmp_path, pki, monkeypatch
) -> None:
    """A gateway on a slow uplink sends a batch whose bytes take longer on the wire than the fleet service's time
    to answer (``ACK_WAIT_S``, 60 s; here 0.5 s, the link's time scaled down with it): 1 MB of samples at 16 KB/s
    takes 62 s. Its acknowledgement is waited for that time plus ``keepalive_timeout_s`` (the docs' bound for a
    batch's bytes on the link), so the batch goes once. Before, the wait was 60 s flat from the hand-over to gRPC:
    the batch was cut before its end and sent again from its start every minute, for ever, nothing acknowledged."""
    from edge_agent.uplink import client

    monkeypatch.setattr(client, "ACK_WAIT_S", 0.5)
    async with _uplink_to_fleet(
        tmp_path, pki, up_bytes_per_s=40_000, keepalive_s=5, keepalive_timeout_s=8
    ) as (srv, ob, up):
        # ~75 KB once compressed (random bytes in base64): ~2 s on this link, four times the service's time
        ob.append("result", {"i": 0, "blob": base64.b64encode(os.urandom(75_000)).decode()})
        up.poke()
        await until(lambda: up.acked == 1, timeout_s=20, what="the slow batch acknowledged")
        assert up.reconnects == 0, up.last_error
        assert [r["payload"]["i"] for r in srv.store.records("gw1", limit=10)] == [0]


def _hung_service(monkeypatch, answer_after_s: float = 0.0) -> dict:
    """The fleet service's PushRecords reads batches and never answers while the returned ``{"on": True}`` says so,
    then answers each ``answer_after_s`` after storing it; the agent's ack wait (``ACK_WAIT_S``) scaled down to 0.3 s."""
    from cloud_trainer.fleet.service import FleetServicer
    from edge_agent.uplink import client

    monkeypatch.setattr(client, "ACK_WAIT_S", 0.3)
    hung = {"on": True}
    serve = FleetServicer.PushRecords

    async def push_records(self, request_iterator, context):
        if hung["on"]:
            async for _ in request_iterator:  # read, never answered
                pass
            return
        async for ack in serve(self, request_iterator, context):
            await asyncio.sleep(answer_after_s)
            yield ack

    monkeypatch.setattr(FleetServicer, "PushRecords", push_records)
    return hung


async def test_a_fleet_service_that_takes_batches_and_never_answers_is_left_said_and_drained_once_back(
    tmp_path, pki, monkeypatch
) -> None:
    """The fleet service takes the PushRecords stream and its batches and never acknowledges one (hung behind its
    store; its connection alive, answering keepalive pings). The agent leaves the stream after ``ACK_WAIT_S`` +
    ``keepalive_timeout_s`` (60 + 20 s by default; scaled down here), says so in ``last_error`` and, once the
    service answers again, every record arrives once. Before, ``last_error`` read "PushRecords: TimeoutError: "."""
    hung = _hung_service(monkeypatch)
    async with _uplink_to_fleet(tmp_path, pki, keepalive_s=5, keepalive_timeout_s=1) as (srv, ob, up):
        for i in range(3):
            ob.append("result", {"i": i})
        up.poke()
        await until(lambda: up.reconnects >= 1, timeout_s=30, what="the unanswered stream left")
        assert "PushRecords: TimeoutError: no acknowledgement of a batch of 3 records" in up.last_error, (
            up.last_error
        )
        assert "within 1.3 s" in up.last_error, up.last_error
        hung["on"] = False
        await until(lambda: ob.stats()["depth"] == 0, timeout_s=20, what="the outbox drained once answered")
        assert [r["payload"]["i"] for r in srv.store.records("gw1", limit=10)] == [0, 1, 2]


async def test_a_link_too_slow_for_a_whole_batch_in_its_timeouts_gets_smaller_batches_and_delivers_everything(
    tmp_path, pki, monkeypatch
) -> None:
    """A backlog whose batch takes longer on the link than the agent waits for its acknowledgement (``ACK_WAIT_S`` +
    ``keepalive_timeout_s``; scaled down here: 1.8 s) or than a keepalive ping waits behind it (keepalive_timeout_s:
    at the defaults, 1 MB on a 6 KB/s link). The failed batch halves the next ones' bytes until a batch goes through;
    every record arrives once, in order. Before, the same whole batch was sent again from its start for ever."""
    from edge_agent.uplink import client

    monkeypatch.setattr(client, "ACK_WAIT_S", 0.8)
    async with _uplink_to_fleet(
        tmp_path, pki, up_bytes_per_s=20_000, keepalive_s=30, keepalive_timeout_s=1
    ) as (srv, ob, up):
        # ~15 KB each once compressed (random bytes in base64): 2.3 s on this link together
        for i in range(3):
            ob.append("result", {"i": i, "blob": base64.b64encode(os.urandom(15_000)).decode()})
        up.poke()
        await until(lambda: up.acked == 3, timeout_s=30, what="the backlog acknowledged")
        assert up.reconnects >= 1 and up._batch_bytes < up.s.batch_max_bytes, (up.reconnects, up.last_error)
        assert [r["payload"]["i"] for r in srv.store.records("gw1", limit=10)] == [0, 1, 2]
        # the agent restarts (a crash loop, a configuration rollout): it starts from what it learned of the link (kept
        # in its data folder), not from batch_max_bytes and the failures of whole batches again
        await up.stop()
        assert client.FIT_FLOOR <= Uplink(up.s, ob)._batch_bytes < up.s.batch_max_bytes


async def test_a_small_batch_lost_on_its_way_does_not_shrink_the_next_batches_below_a_useful_size(
    tmp_path, pki, monkeypatch
) -> None:
    """Two small records in flight when their stream fails after keepalive_timeout_s / 2 or more (a silent path
    death, a service hung: here one that never answers), then a service that answers each batch in that half or
    more (loaded; ``keepalive_timeout_s`` 1 s here, 20 s by default): a backlog goes in batches of many records.
    Formerly the failed 2-record batch halved the next batches' bytes to half its own (a few bytes): one record per
    batch, never grown back while acks took that long (30 records: 30 batches, one per answer)."""
    # once answering: each batch in keepalive_timeout_s / 2 or more
    hung = _hung_service(monkeypatch, answer_after_s=0.6)
    async with _uplink_to_fleet(tmp_path, pki, keepalive_s=5, keepalive_timeout_s=1) as (srv, ob, up):
        ob.append("result", {"i": 0})
        ob.append("result", {"i": 1})
        up.poke()
        await until(lambda: up.reconnects >= 1, timeout_s=30, what="the unanswered stream left")
        hung["on"] = False
        await until(lambda: up.acked == 2, timeout_s=30, what="the two records acknowledged")
        before = up.batches
        for i in range(2, 32):
            ob.append("result", {"i": i, "blob": base64.b64encode(os.urandom(1000)).decode()})
        up.poke()
        await until(lambda: up.acked == 32, timeout_s=30, what="the backlog acknowledged")
        assert up.batches - before <= 4, (up.batches - before, up._batch_bytes)
        assert [r["payload"]["i"] for r in srv.store.records("gw1", limit=100)] == list(range(32))


async def test_a_record_too_large_for_the_link_is_set_aside_and_the_samples_behind_it_are_sent(
    tmp_path, pki, monkeypatch, caplog
) -> None:
    """A sample whose bytes take longer on the link than the agent waits for it (``ACK_WAIT_S`` +
    ``keepalive_timeout_s``, or a keepalive ping behind it: a large image on a slow cellular link; scaled down here
    to 1.1 s against 2 s) fails on its way each time it is sent, alone in its batch. After ``ASIDE_AFTER`` such
    failures it is set aside, said and counted, kept in the outbox, and the samples behind it are sent. Before, it
    was sent again for ever and every sample behind it waited."""
    from edge_agent.uplink import client

    monkeypatch.setattr(client, "ACK_WAIT_S", 0.1)
    monkeypatch.setattr(client, "ASIDE_AFTER", 1, raising=False)  # (absent before)
    async with _uplink_to_fleet(
        tmp_path, pki, up_bytes_per_s=20_000, keepalive_s=30, keepalive_timeout_s=1, batch_max_records=1
    ) as (srv, ob, up):
        big = ob.append("sample", {"i": 0}, sample=os.urandom(40_000), sample_ext=".png")  # 2 s on this link
        for i in (1, 2):
            ob.append("sample", {"i": i}, sample=os.urandom(2_000), sample_ext=".png")
        up.poke()
        await until(lambda: up.acked == 2, timeout_s=20, what="the samples behind the large one acknowledged")
        assert [r["payload"]["i"] for r in srv.store.records("gw1", limit=10)] == [1, 2]
        st = up.status()
        assert st["set_aside"] == 1 and st["aside_now"] == 1, st
        said = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
        assert len(said) == 1 and f"record {big} (sample, 40" in said[0], said
        assert [r.seq for r in ob.pending(10, 10**6)] == [big]  # kept in the outbox


async def test_a_push_ended_with_its_write_still_in_progress_leaves_no_task_pending(
    tmp_path, pki, monkeypatch, caplog
) -> None:
    """On a slow link a keepalive ping times out behind a batch still being written: the call ends ("Stream removed
    (Delayed close due to in-progress write (ping timeout))") while that write never completes. Here the write is
    held (grpc's write of a request: the transport's in-progress write is the one part not staged on loopback) and
    the fleet service ends each stream. Before, grpc's own task consuming the request iterator was left waiting for
    the write, never cancelled (``cancel()`` of a call already ended does nothing), and once collected asyncio
    logged "Task was destroyed but it is pending!" as an ERROR, once per such failure."""
    import gc

    from grpc.aio import _call

    from cloud_trainer.fleet.service import FleetServicer

    async def in_progress(self, request) -> None:  # a write the transport never completes
        await asyncio.get_running_loop().create_future()

    async def push_records(self, request_iterator, context):
        await asyncio.sleep(0.1)  # (the batch handed to the write by then)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "Stream removed")
        yield

    monkeypatch.setattr(_call._StreamRequestMixin, "_write", in_progress)
    monkeypatch.setattr(FleetServicer, "PushRecords", push_records)
    async with _uplink_to_fleet(tmp_path, pki, stream=False) as (srv, ob, up):
        ob.append("result", {"i": 0})
        up.poke()
        await until(lambda: up.reconnects >= 2, what="the push ended twice")
    gc.collect()
    destroyed = [r.getMessage() for r in caplog.records if "Task was destroyed" in r.getMessage()]
    assert not destroyed, destroyed
