"""Sparkplug B rebirth requests through a real Mosquitto: asked of stale nodes without waiting for their next
message, at most once per node per interval, at a bounded rate per source (the rest oldest first), and not
of dead nodes or of nodes whose births the source's subscriptions do not take."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt import sparkplug_host
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from protocols import sparkplug as sp
from tests.integration.test_sparkplug_compressed import T0_MS, _compressed, _consume, _ready
from tests.support.shifted_clock import ShiftedClock
from tests.support.sparkplug_pb import pb_metric as _metric
from tests.support.waits import until

D = sp.DataType


def closed(c: paho.Client) -> None:
    """Disconnect a raw paho client and end its network thread. ``loop_stop`` alone waits for the thread's
    select to time out (paho's 1 s) before the thread sees the stop; the DISCONNECT wakes it at once."""
    c.disconnect()
    c.loop_stop()


def _asker(port: int, topic: str) -> tuple[paho.Client, list[str]]:
    """A client recording the edge nodes asked a rebirth (NCMD ``Node Control/Rebirth``), in arrival order."""
    asked: list[str] = []

    def on_message(client, userdata, msg) -> None:
        if any(m.name == "Node Control/Rebirth" and m.value for m in sp.decode(msg.payload).metrics):
            asked.append(msg.topic.rsplit("/", 1)[-1])

    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.on_message = on_message
    c.connect("127.0.0.1", port, 30)
    c.subscribe(topic, qos=1)
    c.loop_start()
    return c, asked


@contextlib.asynccontextmanager
async def _host(
    port: int, asked_on: str, got: list | None = None, **settings
) -> AsyncIterator[tuple[MqttSource, list[str], paho.Client]]:
    """A Sparkplug source on ``spBv1.0/g/#`` (unless ``subscriptions`` says otherwise) consumed (its readings into
    ``got``, if given) and subscribed, the nodes asked a rebirth on ``asked_on``, and a publisher for the nodes."""
    settings.setdefault("subscriptions", [{"topic": "spBv1.0/g/#", "codec": "sparkplug_b", "qos": 1}])
    src = MqttSource("mq", MqttSettings(port=port, **settings))
    await src.start()
    asker, asked = _asker(port, asked_on)
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port, 30)
    pub.loop_start()
    _, task = _consume(src, got)
    try:
        await _ready(src)
        yield src, asked, pub
    finally:
        task.cancel()
        closed(pub)
        closed(asker)
        await src.stop()


# asked at once, again after 0.1 s, then every 0.2 s, and given up on after 1 s of silence
_GIVING_UP_IN_1_S = {
    "rebirth_min_interval_s": 0,
    "rebirth_retry_s": 0.1,
    "rebirth_retry_max_s": 0.2,
    "rebirth_give_up_s": 1.0,
}


def _sent_by(host: sparkplug_host.SparkplugHost) -> list[str]:
    """The edge nodes ``host`` asks a rebirth, in the order it publishes the requests: what it asked at once,
    however late the broker delivers it."""
    sent: list[str] = []
    publish = host._publish

    def recorded(topic: str, payload: bytes) -> None:
        sent.append(topic.rsplit("/", 1)[-1])
        publish(topic, payload)

    host._publish = recorded
    return sent


def _birth(step: int, inflated: int = 0):
    b = sp._pb().Payload()
    b.timestamp, b.seq = T0_MS + step, 0
    _metric(b, "bdSeq", datatype=D.INT64, long_value=0)
    _metric(b, "Step", alias=1, datatype=D.DOUBLE, double_value=float(step))
    if inflated:
        b.body = b"\0" * inflated  # inflated, a few dozen bytes sent
    return b


async def test_a_node_or_device_whose_birth_was_skipped_is_asked_a_rebirth_though_it_sends_nothing_more(
    mosquitto,
):
    """Before, a node whose NBIRTH was skipped by its births' inflate budget (a rebirth storm), or a device whose
    DBIRTH was, was asked a rebirth only at its next message: one that sent nothing more stayed stale for good,
    its tags BAD and commands refused. Now the source's periodic task asks each once its births budget has
    refilled, once (it sends nothing more: it is not asked again and again)."""
    async with _host(
        mosquitto.port,
        "spBv1.0/g/NCMD/+",
        max_message_bytes=64 * 1024,
        # 4 KB a second a node: a 12 KiB birth is read and leaves a debt, the next one is skipped
        sparkplug={"max_inflated_bytes_per_s": 4096, "rebirth_min_interval_s": 0.5},
    ) as (src, asked, pub):
        for step in range(2):  # the node "a": its second NBIRTH skipped
            pub.publish("spBv1.0/g/NBIRTH/a", _compressed(_birth(step, 12 * 1024)), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/b", _birth(0).SerializeToString(), qos=1)  # "b", plain: read
        for step in range(2):  # its device "d": the second DBIRTH skipped
            db = _birth(step, 12 * 1024)
            del db.metrics[0]  # a device's birth has no bdSeq
            db.metrics[0].alias, db.seq = 2, step + 1
            pub.publish("spBv1.0/g/DBIRTH/b/d", _compressed(db), qos=1)
        await until(lambda: src.sparkplug.births_skipped == 2, 30, "both second births skipped")
        await until(lambda: sorted(asked) == ["a", "b"], 30, "a rebirth asked of both, who sent nothing more")
        await asyncio.sleep(1.5)  # three intervals and more: nothing sent, nothing asked again
    assert sorted(asked) == ["a", "b"] and src.sparkplug.rebirths_requested == 2
    assert src.stats.errors_by_reason == {"inflate_budget": 2}


async def test_a_thousand_stale_nodes_are_asked_at_the_sources_rate_oldest_first_each_once_and_none_unreached(
    mosquitto, monkeypatch
):
    """A thousand nodes sending data the host has no birth for (it started mid-session, or the broker
    restarted): before, each message published a rebirth request at once, a thousand NCMDs in a burst, and a
    thousand births answering them. Now the source asks at most rebirth_max_per_s a second (a second's worth at
    once), the rest waiting oldest first: when all thousand messages have been handled, at most a few hundred
    were asked, and in the end each node exactly once, in the order its data came. Nodes of a group whose
    births no subscription takes (only its NDATA is subscribed) are asked nothing: their answer would never be
    read (said once, births_unsubscribed). The host's clock is held, moved a second at a time: the rate is the
    source's, whatever the machine's load (a loaded machine handling the thousand messages in over 5 s of real time
    had more than half of them asked by then)."""
    n = 1000
    names = [f"n{i:04d}" for i in range(n)]
    monkeypatch.setattr(sparkplug_host, "time", clock := ShiftedClock(held=True))
    async with _host(
        mosquitto.port,
        "spBv1.0/+/NCMD/+",
        subscriptions=[
            {"topic": "spBv1.0/g/#", "codec": "sparkplug_b", "qos": 1},
            {"topic": "spBv1.0/h/NDATA/#", "codec": "sparkplug_b", "qos": 1},
        ],
        sparkplug={"rebirth_max_per_s": 100, "rebirth_min_interval_s": 60},
    ) as (src, asked, pub):
        for i, name in enumerate(names):
            data = sp._pb().Payload()
            data.timestamp, data.seq = T0_MS + i, 1
            _metric(data, alias=1, double_value=float(i))
            pub.publish(f"spBv1.0/g/NDATA/{name}", data.SerializeToString(), qos=1)
            if i % 100 == 0:  # a node of group h, whose births this source does not subscribe
                pub.publish(f"spBv1.0/h/NDATA/{name}", data.SerializeToString(), qos=1)
        await until(lambda: src.sparkplug.data_before_birth == n + 10, 30, "every message handled")
        # a second's worth at once, no more however long the handling took; before: 1010, all at once
        assert src.sparkplug.rebirths_requested == 100
        for second in range(1, n // 100):  # each second of the host's: a second's worth more, no more
            clock.ahead += 1.0
            due = 100 * (second + 1)
            await until(lambda due=due: src.sparkplug.rebirths_requested >= due, 30, "a second's worth asked")
            assert src.sparkplug.rebirths_requested == due
        await until(lambda: len(asked) >= n, 30, "every node asked")
        await asyncio.sleep(0.5)  # nothing more comes
    assert asked == names  # each once, oldest first; none of group h
    assert src.sparkplug.rebirths_requested == n
    assert src.notices.counts.get("births_unsubscribed") == 1, src.notices.counts  # group h, said once


async def test_after_the_gateways_reconnect_a_node_dead_at_the_drop_is_asked_too_its_birth_meanwhile_was_missed(
    mosquitto,
):
    """This gateway's reconnect asks a rebirth of every node not born, the ones whose NDEATH it had read too:
    while it was away such a node may have come back, and its NBIRTH was missed. Before, a node dead at the drop
    was not asked; one that came back meanwhile and then sent nothing (report by exception: its values did not
    change) stayed unborn, its tags BAD from its death, until its next message. The requests keep to the
    source's rate and per-node interval."""
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+", client_id="gw-sp-dead") as (src, asked, pub):
        for name in ("alive", "dead"):
            b = sp.Payload(int(time.time() * 1000), 0, [sp.Metric("bdSeq", None, D.INT64, 0)])
            pub.publish(f"spBv1.0/g/NBIRTH/{name}", sp.encode(b), qos=1)
        pub.publish("spBv1.0/g/NDEATH/dead", sp.death_payload(0), qos=1)
        await until(lambda: src.sparkplug.deaths == 1, 30, "the death read")
        # takes the gateway's session
        kicker = paho.Client(CallbackAPIVersion.VERSION2, client_id="gw-sp-dead")
        kicker.connect("127.0.0.1", mosquitto.port, 30)
        kicker.loop_start()
        await until(lambda: not src.connected.is_set(), 30, "the gateway's connection gone")
        # the dead node comes back while the gateway is away: its birth is not for the gateway to read
        b = sp.Payload(int(time.time() * 1000), 0, [sp.Metric("bdSeq", None, D.INT64, 1)])
        pub.publish("spBv1.0/g/NBIRTH/dead", sp.encode(b), qos=1)
        kicker.disconnect()
        kicker.loop_stop()
        await until(lambda: src.stats.reconnects == 1 and src.subscribed.is_set(), 30, "the gateway back")
        # a message through the consumer: the reconnect is taken in (``items``)
        pub.publish("spBv1.0/g/NDATA/other", sp.encode(sp.Payload(None, 1, [])), qos=1)
        await until(lambda: "alive" in asked and "dead" in asked, 30, "both nodes asked")
        await asyncio.sleep(0.5)  # two ticks of the periodic task and more
    assert asked.count("alive") == asked.count("dead") == 1, asked  # before: "dead" never asked


async def test_a_node_that_does_not_answer_its_rebirth_is_asked_again_ever_less_often_until_it_answers(
    mosquitto, monkeypatch
):
    """Before, a node asked its birth once (NCMD Node Control/Rebirth) that never answered (the NCMD lost, the
    node restarting) was not asked again until it sent something more: one reporting by exception stayed
    unborn, its data skipped, for as long as its values did not change. Now it is asked again after
    rebirth_retry_s, then after twice as long each time up to rebirth_retry_max_s (counted: rebirths_repeated,
    notice rebirth_unanswered) until a birth of it is read; then it is asked nothing more. A node whose NDEATH
    was read is not asked again. The host's clock is held and moved past each back-off (and just short of it):
    what is asked is the host's doing, not how late a loaded machine delivered it."""
    monkeypatch.setattr(sparkplug_host, "time", clock := ShiftedClock(held=True))
    async with _host(
        mosquitto.port,
        "spBv1.0/g/NCMD/+",
        sparkplug={"rebirth_min_interval_s": 0, "rebirth_retry_s": 10, "rebirth_retry_max_s": 20},
    ) as (src, asked, pub):
        host = src.sparkplug
        sent = _sent_by(host)
        data = sp.Payload(int(time.time() * 1000), 1, [sp.Metric("Temp", None, D.DOUBLE, 1.0)])
        for name in ("mute", "dead"):  # data before their births: each asked a rebirth
            pub.publish(f"spBv1.0/g/NDATA/{name}", sp.encode(data), qos=1)
        pub.publish("spBv1.0/g/NDEATH/dead", sp.death_payload(0), qos=1)
        await until(lambda: host.deaths == 1 and "mute" in sent, 30, "the death read, the mute node asked")
        for back_off in (10, 20, 20):  # doubled, up to rebirth_retry_max_s
            before = sent.count("mute")
            clock.ahead += back_off - 0.5
            host.tick()
            assert sent.count("mute") == before, (back_off, sent)  # not yet
            clock.ahead += 0.5
            host.tick()
            assert sent.count("mute") == before + 1, (back_off, sent)  # before: asked once only
        assert host.rebirths_repeated == 3
        assert "rebirth_unanswered" in src.notices.counts, src.notices.counts
        await until(lambda: asked.count("mute") == 4, 30, "the four asks delivered")
        b = sp.Payload(int(time.time() * 1000), 0, [sp.Metric("bdSeq", None, D.INT64, 0)])
        pub.publish("spBv1.0/g/NBIRTH/mute", sp.encode(b), qos=1)  # it answers at last
        await until(lambda: host.node_alive("g", "mute"), 30, "its birth read")
        clock.ahead += 100  # five times the longest back-off: nothing more asked
        host.tick()
    assert sent.count("mute") == 4, sent
    assert sent.count("dead") <= 1, sent  # its death read: not asked again


async def test_a_node_that_stopped_without_a_death_is_given_up_on_and_asked_again_when_it_sends_anything(
    mosquitto, monkeypatch
):
    """A node taken out of service without a death (switched off, removed: its session may end without a will)
    was asked its birth every rebirth_retry_max_s for ever. Now one that answers no ask and sends nothing for
    rebirth_give_up_s is asked nothing more (counted: rebirths_given_up, notice rebirth_given_up, said once per
    node), and asked again, its back-off from the start, as soon as it sends anything. A node that keeps sending
    (its births lost) is never given up on. The host's clock is held and moved a second at a time, the chatty
    node heard at each: what is asked is the host's doing, not how late a loaded machine delivered it."""
    monkeypatch.setattr(sparkplug_host, "time", clock := ShiftedClock(held=True))
    async with _host(
        mosquitto.port,
        "spBv1.0/g/NCMD/+",
        sparkplug={
            "rebirth_min_interval_s": 0,
            "rebirth_retry_s": 1,
            "rebirth_retry_max_s": 2,
            "rebirth_give_up_s": 10,
        },
    ) as (src, asked, pub):
        host = src.sparkplug
        sent = _sent_by(host)
        data = sp.encode(sp.Payload(int(time.time() * 1000), 1, [sp.Metric("Temp", None, D.DOUBLE, 1.0)]))

        async def second() -> None:
            """A second of the host's clock, the chatty node (its births lost) heard meanwhile."""
            clock.ahead += 1
            pub.publish("spBv1.0/g/NDATA/chatty", data, qos=1)
            now = clock.monotonic()
            await until(lambda: host._nodes[("g", "chatty")].heard == now, 30, "the chatty node heard")
            host.tick()

        pub.publish("spBv1.0/g/NDATA/gone", data, qos=1)  # data before its birth: asked
        pub.publish("spBv1.0/g/NDATA/chatty", data, qos=1)
        await until(lambda: "gone" in sent and "chatty" in sent, 30, "both asked")
        for _ in range(12):  # rebirth_give_up_s and the back-off that ends past it
            await second()
        assert host.rebirths_given_up == 1
        given_up_after = sent.count("gone")
        assert given_up_after >= 3, sent  # asked again and again before
        for _ in range(10):  # five times the longest back-off: nothing asked meanwhile
            await second()
        assert sent.count("gone") == given_up_after, sent  # before: asked every rebirth_retry_max_s
        assert src.notices.counts.get("rebirth_given_up") == 1, src.notices.counts
        assert "g/gone answered no rebirth asked" in src.notices.messages["rebirth_given_up"]
        pub.publish("spBv1.0/g/NDATA/gone", data, qos=1)  # it is back: asked again at once
        await until(lambda: sent.count("gone") > given_up_after, 30, "the node asked again")
        await second()
        assert sent.count("gone") == given_up_after + 2, sent  # and again after rebirth_retry_s
        await until(lambda: asked.count("gone") == given_up_after + 2, 30, "every ask of it delivered")
        b = sp.Payload(int(time.time() * 1000), 0, [sp.Metric("bdSeq", None, D.INT64, 0)])
        pub.publish("spBv1.0/g/NBIRTH/gone", sp.encode(b), qos=1)  # and answers
        await until(lambda: host.node_alive("g", "gone"), 30, "its birth read")
    assert host.rebirths_given_up == 1  # the chatty node never given up on
    assert sent.count("chatty") >= 5, sent


async def test_a_live_node_given_up_on_after_a_seq_gap_is_asked_its_birth_again_when_it_sends_again(
    mosquitto,
):
    """A node born, then a seq gap (a data message lost: its change stands unseen here), asked its birth, which
    it answers none of and sends nothing for rebirth_give_up_s, is given up on. Before, when it sent again (in
    sequence after the gap), nothing asked its birth again: the rebirth that mends the gap was given up on for
    good, though the node was back, and the value the lost message carried stood unseen until it changed.
    "Asked again as soon as it sends anything" held only for a node not born. Now its next message asks what it
    was asked when given up."""
    async with _host(
        mosquitto.port,
        "spBv1.0/g/NCMD/+",
        sparkplug=_GIVING_UP_IN_1_S,
    ) as (src, asked, pub):
        now = int(time.time() * 1000)
        b = sp.Payload(now, 0, [sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("Temp", None, D.DOUBLE, 1.0)])
        pub.publish("spBv1.0/g/NBIRTH/n1", sp.encode(b), qos=1)
        await until(lambda: src.sparkplug.node_alive("g", "n1"), 30, "its birth read")

        def data(seq: int) -> bytes:
            return sp.encode(sp.Payload(now + seq, seq, [sp.Metric("Temp", None, D.DOUBLE, float(seq))]))

        pub.publish("spBv1.0/g/NDATA/n1", data(1), qos=1)  # in sequence
        pub.publish("spBv1.0/g/NDATA/n1", data(5), qos=1)  # 2..4 lost: a rebirth asked
        await until(lambda: "n1" in asked, 30, "its birth asked for the gap")
        await until(lambda: src.sparkplug.rebirths_given_up == 1, 20, "the silent node given up on")
        await asyncio.sleep(0.5)  # the last ask, published as it was given up on, delivered
        given_up_after = asked.count("n1")
        pub.publish("spBv1.0/g/NDATA/n1", data(6), qos=1)  # it is back, in sequence after the gap
        await until(lambda: asked.count("n1") > given_up_after, 30, "the node asked its birth again")
        assert src.sparkplug.node_alive("g", "n1")


def _by_alias(seq: int, alias: int) -> bytes:
    d = sp._pb().Payload()
    d.timestamp, d.seq = T0_MS + seq, seq
    _metric(d, alias=alias, double_value=float(seq))
    return d.SerializeToString()


async def test_data_by_an_alias_its_answered_birth_still_does_not_declare_asks_no_rebirth_again(mosquitto):
    """A node whose NBIRTH declares names only and whose NDATA use aliases (a node's bug: its aliases are in its
    data only) was asked a rebirth at each rebirth_min_interval_s for ever, as each birth it answered with
    declared no alias either: measured against Mosquitto, 5 NBIRTHs asked and sent in 9 s of NDATA every 0.3 s,
    all the data unknown_alias. Now the alias that a birth read after the ask still does not declare is counted
    (unknown_alias) and asks nothing more, until a data message of the node is read whole by its aliases: a node
    whose later birth with a new alias map was lost is asked again."""
    async with _host(
        mosquitto.port, "spBv1.0/g/NCMD/+", sparkplug={"rebirth_min_interval_s": 0, "rebirth_retry_s": 0}
    ) as (src, asked, pub):
        host = src.sparkplug
        names_only = sp._pb().Payload()
        names_only.timestamp, names_only.seq = T0_MS, 0
        _metric(names_only, "bdSeq", datatype=D.INT64, long_value=0)
        _metric(names_only, "A", datatype=D.DOUBLE, double_value=1.0)
        pub.publish("spBv1.0/g/NBIRTH/n", names_only.SerializeToString(), qos=1)
        pub.publish("spBv1.0/g/NDATA/n", _by_alias(1, 1), qos=1)
        await until(lambda: asked == ["n"], 30, "a rebirth asked for the unknown alias")
        pub.publish("spBv1.0/g/NBIRTH/n", names_only.SerializeToString(), qos=1)  # its answer: no alias again
        for seq in range(1, 4):
            pub.publish("spBv1.0/g/NDATA/n", _by_alias(seq, 1), qos=1)
        pub.publish("spBv1.0/g/NDATA/other", _by_alias(1, 1), qos=1)  # not born: asked, after any ask of n
        await until(lambda: "other" in asked, 30, "the node not born asked")
        assert asked == ["n", "other"], asked
        assert host.births == 2 and src.stats.errors_by_reason["unknown_alias"] == 4, (
            src.stats.errors_by_reason
        )
        # a birth declaring it, and data read whole by alias: an alias unknown later asks again
        pub.publish("spBv1.0/g/NBIRTH/n", _birth(0).SerializeToString(), qos=1)  # Step, alias 1
        pub.publish("spBv1.0/g/NDATA/n", _by_alias(1, 1), qos=1)
        pub.publish("spBv1.0/g/NDATA/n", _by_alias(2, 2), qos=1)
        await until(lambda: asked.count("n") == 2, 30, "asked again for a new unknown alias")
        assert host.births == 3 and src.stats.errors_by_reason["unknown_alias"] == 5, (
            src.stats.errors_by_reason
        )
