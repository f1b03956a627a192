"""The Sparkplug host against hostile and vanished edge nodes, through a real Mosquitto (the plant's broker is
shared: any client may publish under spBv1.0/): an alias one birth gives to a metric another birth holds is never
read into the wrong tag; made-up names sending valid births do not keep a real node out of the table; a node that
vanished without a death goes stale as a death would make it. The table's size is made small (``MAX_NODES``) to
keep the tests short."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import Quality
from devices.mqtt import sparkplug_host
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from protocols import sparkplug as sp
from tests.integration.test_sparkplug_compressed import _consume, _ready
from tests.integration.test_sparkplug_rebirth_requests import _asker
from tests.support.sparkplug_pb import pb_metric
from tests.support.waits import until

D = sp.DataType


def closed(c: paho.Client) -> None:
    """Disconnect a raw paho client and end its network thread. ``loop_stop`` alone waits for the thread's
    select to time out (paho's 1 s) before the thread sees the stop; the DISCONNECT wakes it at once."""
    c.disconnect()
    c.loop_stop()


@contextlib.asynccontextmanager
async def _host(port: int, **sparkplug) -> AsyncIterator[tuple[MqttSource, list, list[str], paho.Client]]:
    """A Sparkplug source on ``spBv1.0/g/#``, consumed (its readings gathered) and subscribed; the nodes asked a
    rebirth (``spBv1.0/g/NCMD/+``), and a publisher for the nodes."""
    src = MqttSource(
        "mq",
        MqttSettings(
            port=port,
            subscriptions=[{"topic": "spBv1.0/g/#", "codec": "sparkplug_b", "qos": 1}],
            sparkplug=sparkplug,
        ),
    )
    await src.start()
    asker, asked = _asker(port, "spBv1.0/g/NCMD/+")
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port, 30)
    pub.loop_start()
    got, task = _consume(src)
    try:
        await _ready(src)
        yield src, got, asked, pub
    finally:
        task.cancel()
        closed(pub)
        closed(asker)
        await src.stop()


# a node quiet 1 s is asked its birth, and stale if it sends nothing within 0.4 s of the ask
_QUIET_1_S = {
    "rebirth_min_interval_s": 0,
    "rebirth_retry_s": 0.2,
    "rebirth_retry_max_s": 0.4,
    "rebirth_give_up_s": 1,
}


def _payload(seq: int, *metrics: sp.Metric) -> bytes:
    return sp.encode(sp.Payload(int(time.time() * 1000), seq, list(metrics)))


def _values(got: list, tag: str) -> list:
    return [r.value for r in got if r.tag == tag]


async def test_an_alias_a_device_birth_reuses_is_refused_to_it_and_never_read_into_the_wrong_tag(mosquitto):
    """A DBIRTH giving a device metric the alias of a node metric took the alias from both until the node's next
    NBIRTH: the node's own pressure, sent by alias, went unread even after the device's next birth mended its
    map, and no rebirth was asked. A DDATA carrying the alias of a node metric (or an NDATA a device's) was read
    into that other metric's tag, GOOD. Now the metric that held the alias keeps it, the clashing birth's metric
    is refused it (counted: alias_collision; a rebirth asked once), and data by an alias is read only into a
    metric of the node or device whose message carries it."""
    async with _host(mosquitto.port, rebirth_min_interval_s=0) as (src, got, asked, pub):
        host = src.sparkplug
        pub.publish(
            "spBv1.0/g/NBIRTH/n1",
            _payload(
                0,
                sp.Metric("bdSeq", None, D.INT64, 0),
                sp.Metric("pressure", 5, D.DOUBLE, 1.0),
                sp.Metric("temp", 6, D.DOUBLE, 20.0),
            ),
            qos=1,
        )
        # the pump's flow takes alias 5, the node's pressure's
        pub.publish(
            "spBv1.0/g/DBIRTH/n1/pump",
            _payload(1, sp.Metric("flow", 5, D.DOUBLE, 30.0), sp.Metric("speed", 10, D.DOUBLE, 3.0)),
            qos=1,
        )
        await until(lambda: host.births == 2, 30, "the births read")
        await until(lambda: asked == ["n1"], 30, "a rebirth asked for the clash")
        pub.publish("spBv1.0/g/NDATA/n1", _payload(2, sp.Metric(None, 5, D.DOUBLE, 1.5)), qos=1)
        pub.publish("spBv1.0/g/DDATA/n1/pump", _payload(3, sp.Metric(None, 5, D.DOUBLE, 99.0)), qos=1)
        # a device's data by its node's alias 6 (temp): never the node's temp
        pub.publish("spBv1.0/g/DDATA/n1/pump", _payload(4, sp.Metric(None, 6, D.DOUBLE, 77.0)), qos=1)
        pub.publish("spBv1.0/g/DDATA/n1/pump", _payload(5, sp.Metric(None, 10, D.DOUBLE, 3.5)), qos=1)
        await until(lambda: 3.5 in _values(got, "n1/pump/speed"), 30, "the pump's speed by its own alias")
        # the pump born again with a map of its own: its flow by alias 11 read, the node's pressure by 5 as before
        pub.publish("spBv1.0/g/DBIRTH/n1/pump", _payload(6, sp.Metric("flow", 11, D.DOUBLE, 31.0)), qos=1)
        pub.publish("spBv1.0/g/DDATA/n1/pump", _payload(7, sp.Metric(None, 11, D.DOUBLE, 32.0)), qos=1)
        pub.publish("spBv1.0/g/NDATA/n1", _payload(8, sp.Metric(None, 5, D.DOUBLE, 1.7)), qos=1)
        await until(lambda: 1.7 in _values(got, "n1/pressure"), 30, "the node's pressure by alias 5")
        # the same clash again (a node whose map is fixed in its program): counted, no rebirth asked again
        pub.publish("spBv1.0/g/DBIRTH/n1/pump", _payload(9, sp.Metric("flow", 5, D.DOUBLE, 33.0)), qos=1)
        pub.publish("spBv1.0/g/NDATA/n1", _payload(10, sp.Metric(None, 5, D.DOUBLE, 1.9)), qos=1)
        await until(
            lambda: 1.9 in _values(got, "n1/pressure"), 30, "the node's pressure after the clash again"
        )
        errors = dict(src.stats.errors_by_reason)
    assert _values(got, "n1/pressure") == [1.0, 1.5, 1.7, 1.9], _values(got, "n1/pressure")
    assert 99.0 not in _values(got, "n1/pressure") and 99.0 not in _values(got, "n1/pump/flow")
    assert _values(got, "n1/temp") == [20.0]  # the pump's data by alias 6 is not the node's temp
    assert _values(got, "n1/pump/flow") == [30.0, 31.0, 32.0, 33.0]  # by name in its births, then by 11
    assert errors["alias_collision"] == 3, errors  # two births' clashes, the DDATA by the refused alias
    assert errors["unknown_alias"] == 1, errors  # the DDATA by the node's alias 6
    assert asked.count("n1") <= 2, asked  # the clash's once, the unknown alias's once
    assert all(r.quality is Quality.GOOD for r in got)


def _birth(*metrics: sp.Metric) -> bytes:
    return _payload(0, sp.Metric("bdSeq", None, D.INT64, 0), *metrics)


async def test_valid_births_under_made_up_names_never_keep_a_real_nodes_data_out(mosquitto, monkeypatch):
    """A client on the shared broker publishing valid NBIRTHs under made-up edge node names made each a born,
    live node, never forgotten: once they filled the table, a real node born later was refused (too_many_nodes)
    and its data never read. Now a new node's birth takes the place of a born node that sent births only, least
    recently heard first (counted, said once: born_nodes_forgotten), and a node that sends data is kept however
    many follow; a real node whose data comes before its birth while the table is full is asked its birth."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 8)
    async with _host(mosquitto.port, rebirth_min_interval_s=0) as (src, got, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/line1", _birth(sp.Metric("Temp", None, D.DOUBLE, 20.0)), qos=1)
        pub.publish("spBv1.0/g/NDATA/line1", _payload(1, sp.Metric("Temp", None, D.DOUBLE, 21.0)), qos=1)
        for i in range(40):  # the flood: valid births, nothing after them
            pub.publish(f"spBv1.0/g/NBIRTH/fake{i:03d}", _birth(sp.Metric("X", None, D.DOUBLE, 0.0)), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/line2", _birth(sp.Metric("Temp", None, D.DOUBLE, 30.0)), qos=1)
        pub.publish("spBv1.0/g/NDATA/line2", _payload(1, sp.Metric("Temp", None, D.DOUBLE, 31.0)), qos=1)
        for i in range(40, 80):
            pub.publish(f"spBv1.0/g/NBIRTH/fake{i:03d}", _birth(sp.Metric("X", None, D.DOUBLE, 0.0)), qos=1)
        pub.publish("spBv1.0/g/NDATA/line1", _payload(2, sp.Metric("Temp", None, D.DOUBLE, 22.0)), qos=1)
        pub.publish("spBv1.0/g/NDATA/line2", _payload(2, sp.Metric("Temp", None, D.DOUBLE, 32.0)), qos=1)
        await until(lambda: 32.0 in _values(got, "line2/Temp"), 30, "line2's data after the flood")
        await until(lambda: 22.0 in _values(got, "line1/Temp"), 30, "line1's data after the flood")
        # a node born before this host started: its data comes first, the table full of made-up births
        pub.publish("spBv1.0/g/NDATA/line3", _payload(5, sp.Metric("Temp", None, D.DOUBLE, 40.0)), qos=1)
        await until(lambda: "line3" in asked, 30, "line3 asked its birth")
        pub.publish("spBv1.0/g/NBIRTH/line3", _birth(sp.Metric("Temp", None, D.DOUBLE, 41.0)), qos=1)
        pub.publish("spBv1.0/g/NDATA/line3", _payload(1, sp.Metric("Temp", None, D.DOUBLE, 42.0)), qos=1)
        await until(lambda: 42.0 in _values(got, "line3/Temp"), 30, "line3's data after its birth")
        for i in range(80, 120):
            pub.publish(f"spBv1.0/g/NBIRTH/fake{i:03d}", _birth(sp.Metric("X", None, D.DOUBLE, 0.0)), qos=1)
        pub.publish("spBv1.0/g/NDATA/line3", _payload(2, sp.Metric("Temp", None, D.DOUBLE, 43.0)), qos=1)
        await until(lambda: 43.0 in _values(got, "line3/Temp"), 30, "line3's data after more of the flood")
        assert all(host.node_alive("g", n) for n in ("line1", "line2", "line3"))
        assert len(host._nodes) <= 8
        assert host.born_forgotten >= 100, host.born_forgotten
        assert src.notices.counts.get("born_nodes_forgotten") == host.born_forgotten, src.notices.counts
        # line3's data before its birth
        assert src.notices.counts.get("too_many_nodes") == 1, src.notices.counts
    assert _values(got, "line1/Temp") == [20.0, 21.0, 22.0]
    assert _values(got, "line2/Temp") == [30.0, 31.0, 32.0]
    assert _values(got, "line3/Temp") == [41.0, 42.0, 43.0]  # its data before its birth skipped, as ever


async def test_a_node_that_vanished_without_a_death_goes_stale_as_a_death_would_make_it(mosquitto):
    """A node that vanished with neither an NDEATH nor its will (a cable cut, a broker that lost the will) was
    kept live for good: its tags stood GOOD at their last values, and commands were sent to it. Now, silent for
    rebirth_give_up_s (made 1 s here) and asked its birth without an answer for rebirth_retry_max_s, its tags that had a value are passed on BAD as a death would make them,
    with no other message coming; it is counted and said once (node_silent), commands refused, asked nothing
    more. When it speaks again its data is read, GOOD, and its birth asked."""
    async with _host(mosquitto.port, **_QUIET_1_S) as (src, got, asked, pub):
        host = src.sparkplug
        pub.publish(
            "spBv1.0/g/NBIRTH/n1",
            _birth(sp.Metric("Temp", None, D.DOUBLE, 20.0), sp.Metric("Run", None, D.BOOLEAN, True)),
            qos=1,
        )
        pub.publish("spBv1.0/g/DBIRTH/n1/pump", _payload(1, sp.Metric("Flow", None, D.DOUBLE, 3.0)), qos=1)
        pub.publish("spBv1.0/g/NDATA/n1", _payload(2, sp.Metric("Temp", None, D.DOUBLE, 21.0)), qos=1)
        await until(lambda: 21.0 in _values(got, "n1/Temp"), 30, "its data read")
        assert host.node_alive("g", "n1")
        # then nothing at all: no death, no will
        await until(lambda: any(r.quality is Quality.BAD for r in got), 30, "its tags marked BAD")
        bad = {r.tag: r.value for r in got if r.quality is Quality.BAD}
        assert bad == {"n1/Temp": 21.0, "n1/Run": True, "n1/pump/Flow": 3.0}, bad
        assert host.nodes_silent == 1 and src.notices.counts.get("node_silent") == 1, src.notices.counts
        assert "g/n1 sent nothing for" in src.notices.messages["node_silent"]
        assert not host.node_alive("g", "n1") and not host.device_alive("g", "n1", "pump")
        asked_before = len(asked)
        pub.publish("spBv1.0/g/NDATA/n1", _payload(3, sp.Metric("Temp", None, D.DOUBLE, 22.0)), qos=1)
        await until(lambda: 22.0 in _values(got, "n1/Temp"), 30, "its data read again")
        await until(lambda: len(asked) > asked_before, 30, "its birth asked")
        assert host.node_alive("g", "n1") and host.nodes_silent == 1
    assert [r.quality for r in got if r.tag == "n1/Temp"][-1] is Quality.GOOD
    assert sum(r.quality is Quality.BAD for r in got) == 3  # said once, not at every tick


async def test_the_gateways_lost_broker_connection_makes_its_live_nodes_tags_bad_until_a_birth_is_read(
    mosquitto,
):
    """Sparkplug 3.0 (Host Session Establishment): all metric data of the edge nodes a host knows MUST be made
    STALE when it loses its connection to the broker: what they publish meanwhile, their death too, is not seen.
    The tags stood GOOD at their last values, and those of a node that died while the gateway was away (its will
    missed) stayed GOOD for good, asked its birth again and again. Now each live node's tags that had a value get a
    BAD reading at the drop, reason connection_lost (the OPC UA source's), a dead node's none more; a birth read
    after the reconnect brings GOOD values again."""
    async with _host(mosquitto.port, rebirth_min_interval_s=0) as (src, got, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/n1", _birth(sp.Metric("Temp", None, D.DOUBLE, 20.0)), qos=1)
        pub.publish("spBv1.0/g/DBIRTH/n1/pump", _payload(1, sp.Metric("Flow", None, D.DOUBLE, 3.0)), qos=1)
        # a device of the live node that died: its tags BAD (device_death) and stay so, not BAD again
        pub.publish("spBv1.0/g/DBIRTH/n1/valve", _payload(2, sp.Metric("Open", None, D.BOOLEAN, True)), qos=1)
        pub.publish("spBv1.0/g/DDEATH/n1/valve", _payload(3), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/gone", _birth(sp.Metric("Temp", None, D.DOUBLE, 9.0)), qos=1)
        pub.publish("spBv1.0/g/NDEATH/gone", sp.death_payload(0), qos=1)
        await until(
            lambda: host.device_alive("g", "n1", "pump") and host.deaths == 2,
            30,
            "births and deaths read",
        )
        src._client.socket().close()  # the gateway's connection to the broker drops
        await until(lambda: any(r.reason == "connection_lost" for r in got), 30, "its tags BAD at the drop")
        await until(lambda: "n1" in asked, 30, "its birth asked after the reconnect")
        pub.publish("spBv1.0/g/NBIRTH/n1", _birth(sp.Metric("Temp", None, D.DOUBLE, 21.0)), qos=1)
        await until(lambda: 21.0 in _values(got, "n1/Temp"), 30, "its answer read")
    lost = [(r.tag, r.value) for r in got if r.reason == "connection_lost"]
    # the dead node's tags and the dead device's are BAD already, for their own reason
    assert lost == [("n1/Temp", 20.0), ("n1/pump/Flow", 3.0)], lost
    assert [(r.value, r.quality, r.reason) for r in got if r.tag == "n1/valve/Open"] == [
        (True, Quality.GOOD, None),
        (True, Quality.BAD, "device_death"),
    ]
    assert all(r.quality is Quality.BAD for r in got if r.reason == "connection_lost")
    assert [(r.value, r.quality) for r in got if r.tag == "n1/Temp"] == [
        (20.0, Quality.GOOD),
        (20.0, Quality.BAD),
        (21.0, Quality.GOOD),
    ]


async def test_what_the_lost_connection_brought_before_the_drop_is_read_before_its_bad_never_after(mosquitto):
    """The drop was applied when the consumer next took a batch from the queue, before that batch: data the lost
    connection brought (a busy agent's backlog, up to 256 messages a batch, and the batches after) was read after
    the connection_lost BAD, the tags GOOD again at old values, and with the node gone meanwhile they stayed GOOD
    for good. Now the drop takes its place in the queue: the node's every message that came before it is read
    first, then its tags go BAD, stamped no earlier than their last values, and stay BAD (said once) after the
    reconnect until a birth is read."""
    src = MqttSource(
        "mq",
        MqttSettings(
            port=mosquitto.port,
            subscriptions=[{"topic": "spBv1.0/g/#", "codec": "sparkplug_b", "qos": 1}],
            sparkplug={"rebirth_min_interval_s": 0},
            reconnect_min_s=2,  # the queue read before the reconnect
        ),
    )
    await src.start()
    asker, asked = _asker(mosquitto.port, "spBv1.0/g/NCMD/+")
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", mosquitto.port, 30)
    pub.loop_start()
    got: list = []
    items = src.items()
    task = None
    try:
        await _ready(src)
        pub.publish("spBv1.0/g/NBIRTH/n1", _birth(sp.Metric("Temp", None, D.DOUBLE, 20.0)), qos=1)
        while not got:
            got.append(await asyncio.wait_for(anext(items), 5))
        # the consumer busy: 300 values queued (more than a batch), the node's clock 5 s ahead of the gateway's
        ahead_ms = int(time.time() * 1000) + 5000
        for i in range(1, 301):
            pub.publish(
                "spBv1.0/g/NDATA/n1",
                sp.encode(sp.Payload(ahead_ms + i, i % 256, [sp.Metric("Temp", None, D.DOUBLE, 20.0 + i)])),
                qos=1,
            )
        await until(lambda: src.stats.received == 301, 30, "the values queued")
        closed(pub)  # the node goes: no birth answers the rebirths asked
        src._client.socket().close()  # then the gateway's connection to the broker drops
        await until(lambda: not src.connected.is_set(), 30, "the drop seen")

        async def consume() -> None:
            async for r in items:
                got.append(r)

        task = asyncio.create_task(consume())
        await until(lambda: "n1" in asked, 30, "its birth asked after the reconnect")
        # the queue read to its BAD (2 s of reconnect delay were all a loaded machine had for its 300 values),
        # then a moment more for anything read after it
        await until(lambda: any(r.quality is Quality.BAD for r in got), 30, "the drop's BAD read")
        await asyncio.sleep(0.5)
    finally:
        if task is not None:
            task.cancel()
        closed(asker)
        await src.stop()
    temp = [r for r in got if r.tag == "n1/Temp"]
    assert [r.value for r in temp if r.quality is Quality.GOOD] == [20.0 + i for i in range(301)]
    bad = [r for r in temp if r.quality is Quality.BAD]
    assert [(r.value, r.reason) for r in bad] == [(320.0, "connection_lost")]
    assert temp[-1] is bad[0]  # after every value read, and BAD still
    assert bad[0].timestamp >= temp[-2].timestamp == (ahead_ms + 300) / 1000


def _answering_node(port: int, pub: paho.Client) -> tuple[paho.Client, list[int]]:
    """Edge node n1 as Tahu, Ignition's MQTT Transmission or Node-RED run it: born with a device, then quiet
    (reporting by exception, its values holding still), answering every NCMD ``Node Control/Rebirth`` with its
    NBIRTH and DBIRTH, as Sparkplug 3.0 requires of every edge node. Returns its NCMD listener and the times it was
    asked a rebirth (and answered)."""
    answered: list[int] = []

    def birth() -> None:
        pub.publish(
            "spBv1.0/g/NBIRTH/n1",
            _birth(
                sp.Metric("Temp", None, D.DOUBLE, 20.0),
                sp.Metric("Node Control/Rebirth", None, D.BOOLEAN, False),
            ),
            qos=1,
        )
        pub.publish("spBv1.0/g/DBIRTH/n1/pump", _payload(1, sp.Metric("Flow", None, D.DOUBLE, 3.0)), qos=1)

    def on_message(client, userdata, msg) -> None:
        if any(m.name == "Node Control/Rebirth" and m.value for m in sp.decode(msg.payload).metrics):
            birth()
            answered.append(len(answered) + 1)

    c = paho.Client(CallbackAPIVersion.VERSION2)
    c.on_message = on_message
    c.connect("127.0.0.1", port, 30)
    c.subscribe("spBv1.0/g/NCMD/n1", qos=1)
    c.loop_start()
    birth()
    return c, answered


async def test_a_quiet_node_that_answers_its_rebirth_is_never_taken_as_gone(mosquitto):
    """A node reporting by exception sends nothing while its values hold still, for days, its Sparkplug session
    valid (Sparkplug 3.0, Data Publish: data is sent only when it changes; a node gone is told by its death, the
    broker's will). Taken as gone after rebirth_give_up_s of quiet, such a healthy node had its tags passed on BAD
    and its commands refused (node_silent), and it was asked nothing that could have shown it lives. Now a node
    quiet that long is asked its birth first, and one that answers stays live, its tags GOOD, its commands sent;
    asked again only after as long a quiet (made 1 s here)."""
    async with _host(mosquitto.port, **_QUIET_1_S) as (src, got, asked, pub):
        host = src.sparkplug
        node, answered = _answering_node(mosquitto.port, pub)
        try:
            await until(lambda: host.device_alive("g", "n1", "pump"), 30, "its births read")
            # quiet for three times rebirth_give_up_s: asked whether it lives each time, it answers
            await until(lambda: len(answered) >= 3, 20, "asked its birth when quiet, and answering")
            # its answer's NBIRTH makes its devices unborn until their DBIRTH is read (Sparkplug 3.0): a loaded
            # machine's host may be between the two when the answer is counted
            await until(
                lambda: host.node_alive("g", "n1") and host.device_alive("g", "n1", "pump"),
                30,
                "its answer read",
            )
            assert host.nodes_silent == 0 and "node_silent" not in src.notices.counts, src.notices.counts
            bad = [r for r in got if r.quality is not Quality.GOOD]
            assert not bad, bad
            await src.command("g", "n1", None, "Temp", 25.0)  # sent: a live node's command
        finally:
            closed(node)


async def test_a_quiet_node_that_answered_its_rebirth_is_not_pushed_out_by_a_flood_of_made_up_births(
    mosquitto, monkeypatch
):
    """A born node that answers the rebirth it is asked (its values holding still: births only, no data since) was
    filed with the nodes that sent births only, as valid NBIRTHs under made-up names are: a flood of those pushed
    it out of the full table first, its commands refused until it sent data again. A node that answers on its NCMD
    is now kept as one that speaks."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 8)
    async with _host(mosquitto.port, **_QUIET_1_S) as (src, got, asked, pub):
        host = src.sparkplug
        node, answered = _answering_node(mosquitto.port, pub)
        try:
            await until(lambda: len(answered) >= 1, 20, "asked its birth when quiet, and answering")
            await until(lambda: host.births >= 2 * (1 + len(answered)), 30, "its answer read")
            for i in range(40):  # the flood: valid births, nothing after them
                pub.publish(
                    f"spBv1.0/g/NBIRTH/fake{i:03d}", _birth(sp.Metric("X", None, D.DOUBLE, 0.0)), qos=1
                )
            await until(lambda: host.born_forgotten >= 30, 30, "the flood read")
            # kept through the flood (pushed out, it is never alive again: nothing but its answers comes from it);
            # between an answer's NBIRTH and DBIRTH its device is unborn a moment, so waited for, not asserted
            await until(
                lambda: host.node_alive("g", "n1") and host.device_alive("g", "n1", "pump"),
                30,
                "n1 still live",
            )
            await src.command("g", "n1", "pump", "Flow", 4.0)  # sent: a live node's command
        finally:
            closed(node)


async def test_data_by_another_metrics_alias_asks_one_rebirth_not_one_at_every_message(mosquitto):
    """An NDATA carrying the alias its node's births gave to a device's metric (a node whose program sends a
    device's metric in its NDATA: the alias is unique across the node and its devices, so it names that metric
    plainly) is skipped, never read into another tag; but each such message asked a rebirth, so the node was
    reborn whole (every device's birth, seen by every host on the broker) at every rebirth_min_interval_s for
    ever, though its next birth brings the same map. Now a rebirth is asked once per node for it, and each such
    message is counted (unknown_alias)."""
    async with _host(mosquitto.port, rebirth_min_interval_s=0) as (src, got, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/n1", _birth(sp.Metric("Temp", 1, D.DOUBLE, 20.0)), qos=1)
        pub.publish("spBv1.0/g/DBIRTH/n1/pump", _payload(1, sp.Metric("Flow", 2, D.DOUBLE, 3.0)), qos=1)
        await until(lambda: host.device_alive("g", "n1", "pump"), 30, "its births read")
        for seq in range(2, 7):  # the pump's flow by its alias, in the node's NDATA, beside the node's temp
            pub.publish(
                "spBv1.0/g/NDATA/n1",
                _payload(
                    seq, sp.Metric(None, 2, D.DOUBLE, 3.0 + seq), sp.Metric(None, 1, D.DOUBLE, 20.0 + seq)
                ),
                qos=1,
            )
        await until(lambda: 26.0 in _values(got, "n1/Temp"), 30, "the five NDATA read")
        errors = dict(src.stats.errors_by_reason)
        assert errors.get("unknown_alias") == 5, errors
        assert host.rebirths_requested == 1, host.rebirths_requested
    assert _values(got, "n1/pump/Flow") == [3.0]  # never by the node's NDATA
    assert _values(got, "n1/Temp") == [20.0, 22.0, 23.0, 24.0, 25.0, 26.0]


async def test_a_death_without_the_births_bdseq_never_kills_the_live_session(mosquitto):
    """A client of the shared broker publishing 0 bytes on a node's NDEATH topic (MQTT Explorer's "delete" of a
    topic, a script clearing retained messages under spBv1.0/), or a death without a bdSeq metric, was taken as
    the node's death: its tags BAD and commands refused until its next birth, without a count, while a stale
    will with another bdSeq was ignored. Such a death cannot be matched to the current birth (Sparkplug 3.0: an
    NDEATH carries its NBIRTH's bdSeq): it is counted (missing_field) and the session lives on; the node's real
    death, with its bdSeq, is taken."""
    async with _host(mosquitto.port) as (src, got, _asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/n1", _birth(sp.Metric("Temp", 1, D.DOUBLE, 20.0)), qos=1)
        await until(lambda: host.node_alive("g", "n1"), 30, "its birth read")
        pub.publish("spBv1.0/g/NDEATH/n1", b"", qos=1)
        pub.publish("spBv1.0/g/NDEATH/n1", sp.encode(sp.Payload(None, None, [])), qos=1)
        pub.publish("spBv1.0/g/NDATA/n1", _payload(1, sp.Metric(None, 1, D.DOUBLE, 21.0)), qos=1)
        await until(lambda: 21.0 in _values(got, "n1/Temp"), 30, "its data after the deaths read")
        assert host.node_alive("g", "n1") and host.deaths == 0
        await src.command("g", "n1", None, "Temp", 5.0)  # a live node's command: not refused
        pub.publish("spBv1.0/g/NDEATH/n1", sp.death_payload(0), qos=1)  # its own death
        await until(lambda: host.deaths == 1, 30, "its real death read")
        errors = dict(src.stats.errors_by_reason)
    assert not host.node_alive("g", "n1")
    assert [(r.value, r.quality) for r in got if r.tag == "n1/Temp"] == [
        (20.0, Quality.GOOD),
        (21.0, Quality.GOOD),
        (21.0, Quality.BAD),
    ]
    assert errors == {"missing_field": 2}, errors


async def test_ids_of_tens_of_kilobytes_are_refused_and_never_kept(mosquitto):
    """MQTT allows topics of 65,535 bytes and Mosquitto delivers them, and the host's tables are bounded by a
    count of names (10,000 nodes, 10,000 devices a node, 1,000 groups): a client of the shared broker sending
    NDATA under 10,000 made-up edge node names of 60 KB made the gateway hold about 1.3 GB (3,000 of them: 0.4 GB),
    and each such name was asked a rebirth on its own 60 KB topic. A group, edge node or device id of over 1,024
    characters is now refused as bad_topic: never kept, never asked; the real node's messages are read."""
    long = "x" * 20_000
    async with _host(mosquitto.port, rebirth_min_interval_s=0) as (src, got, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/n1", _birth(sp.Metric("Temp", 1, D.DOUBLE, 20.0)), qos=1)
        for i in range(20):
            pub.publish(
                f"spBv1.0/g/NDATA/{i:02d}{long}", _payload(1, sp.Metric("T", None, D.DOUBLE, 1.0)), qos=1
            )
            pub.publish(f"spBv1.0/g/NBIRTH/b{i:02d}{long}", _birth(sp.Metric("T", 1, D.DOUBLE, 1.0)), qos=1)
            pub.publish(
                f"spBv1.0/g/DBIRTH/n1/{i:02d}{long}",
                _payload(i + 1, sp.Metric("P", None, D.DOUBLE, 1.0)),
                qos=1,
            )
        pub.publish("spBv1.0/g/NDATA/n1", _payload(1, sp.Metric(None, 1, D.DOUBLE, 21.0)), qos=1)
        await until(lambda: 21.0 in _values(got, "n1/Temp"), 30, "the real node's data read")
        errors = dict(src.stats.errors_by_reason)
        assert list(host._nodes) == [("g", "n1")], [k[1][:20] for k in host._nodes]
        assert asked == [], [a[:20] for a in asked]
    assert errors == {"bad_topic": 60}, errors
    assert _values(got, "n1/Temp") == [20.0, 21.0]
    assert all(len(r.tag) < 100 for r in got)


async def test_a_deleted_retained_birth_of_0_bytes_is_no_birth_and_no_death(mosquitto):
    """A node publishing its births retained (seen, against the specification), and a client of the broker
    deleting them (MQTT Explorer's "delete", a script clearing retained messages): the broker passes the empty
    message on live. Taken, a 0-byte NBIRTH was a birth declaring nothing (the node's aliases forgotten, its data
    by alias unread until a rebirth answered), a 0-byte DBIRTH the same for its device, and a 0-byte DDEATH the
    device's death (its tags BAD); a 0-byte NDATA or DDATA (a node retaining its data) was read as nothing, unsaid.
    Each is counted (missing_field) and not taken; the node's data reads on."""
    async with _host(mosquitto.port, rebirth_min_interval_s=0) as (src, got, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/n1", _birth(sp.Metric("Temp", 1, D.DOUBLE, 20.0)), qos=1)
        pub.publish("spBv1.0/g/DBIRTH/n1/pump", _payload(1, sp.Metric("Flow", 2, D.DOUBLE, 3.0)), qos=1)
        await until(lambda: host.device_alive("g", "n1", "pump"), 30, "its births read")
        for kind in ("NBIRTH/n1", "DBIRTH/n1/pump", "DDEATH/n1/pump", "NDATA/n1", "DDATA/n1/pump"):
            pub.publish(f"spBv1.0/g/{kind}", b"", qos=1, retain=True)
        pub.publish("spBv1.0/g/NDATA/n1", _payload(2, sp.Metric(None, 1, D.DOUBLE, 21.0)), qos=1)
        pub.publish("spBv1.0/g/DDATA/n1/pump", _payload(3, sp.Metric(None, 2, D.DOUBLE, 4.0)), qos=1)
        await until(lambda: 4.0 in _values(got, "n1/pump/Flow"), 30, "the device's data after them read")
        assert host.device_alive("g", "n1", "pump")
        errors = dict(src.stats.errors_by_reason)
    assert _values(got, "n1/Temp") == [20.0, 21.0]
    assert _values(got, "n1/pump/Flow") == [3.0, 4.0]
    assert all(r.quality is Quality.GOOD for r in got)
    assert errors == {"missing_field": 5}, errors  # before: 3, the data's deletes read as nothing, unsaid
    assert asked == []


async def test_births_of_metric_names_tens_of_kilobytes_long_are_refused_not_kept(mosquitto):
    """A node's births may declare 100,000 metrics (its devices' together), each of whose names the host keeps:
    births of names of 60 KB (40 DBIRTHs of 100 such metrics held 320 MB) could make a gateway hold gigabytes. A
    metric name of over 1,024 characters is not read, as a name that is not UTF-8 is not: the metric counted
    (name_too_long) and skipped, its name not kept; the node's other births and data are read."""
    async with _host(mosquitto.port, rebirth_min_interval_s=0) as (src, got, _asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/n1", _birth(sp.Metric("Temp", 1, D.DOUBLE, 20.0)), qos=1)
        for i in range(10):
            names = [f"{i}{j}" + "m" * 20_000 for j in range(10)]
            metrics = [sp.Metric(n, None, D.DOUBLE, 1.0) for n in names]
            pub.publish(f"spBv1.0/g/DBIRTH/n1/d{i}", _payload(1 + i, *metrics), qos=1)
        pub.publish("spBv1.0/g/DBIRTH/n1/pump", _payload(11, sp.Metric("Flow", 2, D.DOUBLE, 3.0)), qos=1)
        pub.publish("spBv1.0/g/DDATA/n1/pump", _payload(12, sp.Metric(None, 2, D.DOUBLE, 4.0)), qos=1)
        await until(lambda: 4.0 in _values(got, "n1/pump/Flow"), 30, "the pump's data read")
        errors = dict(src.stats.errors_by_reason)
        kept = max(len(name) for _device, name in host._nodes[("g", "n1")].types)
    assert kept <= 1024, kept
    assert errors == {"name_too_long": 100}, errors
    assert all(len(r.tag) < 100 for r in got)


async def test_a_backlog_of_messages_giving_no_reading_gives_the_loop_back_while_it_is_read(
    mosquitto, monkeypatch
):
    """Data of never-born nodes (made-up names on a shared broker, at QoS 0) gives no reading: the consumer, which
    gives the loop back between readings only (the agent's every 64 or 5 ms), saw none, and a backlog of them was
    read without the loop (20,000: 5.8 s; every OPC UA session, heartbeat and rule stalled, for as long as such a
    flood outran the consumer). The source gives the loop back between messages every ``YIELD_AFTER_S`` (made 0
    here: at every message); the real node's birth after them is read."""
    from devices.mqtt import client as client_module

    monkeypatch.setattr(client_module, "YIELD_AFTER_S", 0.0)
    src = MqttSource(
        "mq",
        MqttSettings(port=mosquitto.port, subscriptions=[{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}]),
    )
    await src.start()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.max_queued_messages_set(0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    try:
        await _ready(src)
        pub.connect("127.0.0.1", mosquitto.port, 30)
        pub.loop_start()
        n = 300
        for i in range(n):
            pub.publish(f"spBv1.0/g/NDATA/made{i}", _payload(1, sp.Metric("m", None, D.INT32, i)), qos=0)
        birth = _payload(0, sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("m", None, D.INT32, 7))
        pub.publish("spBv1.0/g/NBIRTH/real", birth, qos=1)
        await until(lambda: src._channel.arrived >= n + 1, 30, "the backlog queued")
        beat = asyncio.create_task(ticker())
        async with asyncio.timeout(30):
            async for r in src.items():
                if r.tag == "real/m":
                    break
        beat.cancel()
        assert ticks >= n // 2, ticks  # before: 0, the loop held until the birth was read
        assert r.value == 7
    finally:
        closed(pub)
        await src.stop()


async def test_an_nbirth_without_a_bdseq_is_read_and_said_once_per_node(mosquitto):
    """Sparkplug has every NBIRTH carry a bdSeq (its NDEATH the same), by which an older connection's will coming
    after the birth is told from the node's death. A birth without one was taken silently, and any NDEATH of the node
    then killed its live session. It is still read (older libraries send none), and said: each counted
    (birth_without_bdseq), one message per node; a birth with one says nothing."""
    async with _host(mosquitto.port) as (src, got, _asked, pub):
        temp = sp.Metric("Temp", 1, D.DOUBLE, 20.0)
        for _ in range(2):
            pub.publish("spBv1.0/g/NBIRTH/n1", _payload(0, temp), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/n2", _birth(temp), qos=1)
        await until(lambda: src.sparkplug.births == 3, 30, "the births read")
        counts = dict(src.notices.counts)
    assert counts.get("birth_without_bdseq") == 2, counts  # before: none
    assert "g/n1" in src.notices.messages["birth_without_bdseq"]
    assert _values(got, "n1/Temp") == [20.0, 20.0] and _values(got, "n2/Temp") == [20.0]


async def test_data_without_a_seq_is_read_and_said_once_per_node(mosquitto):
    """Sparkplug numbers every message but an NDEATH; a node whose library sends no seq had its data read with no
    sequence check, a message lost unseen (no rebirth asked), unsaid. It is read still, and said: each such message
    counted (message_without_seq), one line per node."""
    async with _host(mosquitto.port) as (src, got, asked, pub):
        pub.publish("spBv1.0/g/NBIRTH/n1", _birth(sp.Metric("Temp", 1, D.DOUBLE, 20.0)), qos=1)
        for v in (21.0, 22.0):
            data = sp._pb().Payload()
            data.timestamp = int(time.time() * 1000)  # no seq
            pb_metric(data, alias=1, double_value=v)
            pub.publish("spBv1.0/g/NDATA/n1", data.SerializeToString(), qos=1)
        await until(lambda: 22.0 in _values(got, "n1/Temp"), 30, "the data read")
        counts = dict(src.notices.counts)
    assert counts.get("message_without_seq") == 2, counts  # before: none
    assert "g/n1" in src.notices.messages["message_without_seq"]
    assert _values(got, "n1/Temp") == [20.0, 21.0, 22.0] and asked == []


async def test_a_seq_0_left_out_after_255_is_taken_as_0_not_said_and_no_gap(mosquitto):
    """An encoder that writes no field at its default (proto3 code from Sparkplug's .proto without ``optional``:
    eclipse-tahu/tahu#274) leaves out exactly seq 0, the message after each 255: that message was said to hold no
    seq (message_without_seq, "send seq"), and the 1 after it was a gap after 255 (seq_gap, a whole rebirth asked
    every 256 messages). Now it is that 0: no notice, no gap, nothing asked."""
    async with _host(mosquitto.port) as (src, got, asked, pub):
        pub.publish("spBv1.0/g/NBIRTH/n1", _birth(sp.Metric("Temp", 1, D.DOUBLE, 0.0)), qos=1)
        for i in range(1, 258):
            data = sp._pb().Payload()
            data.timestamp = int(time.time() * 1000)
            if i % 256:  # 256: the 0, left out
                data.seq = i % 256
            pb_metric(data, alias=1, double_value=float(i))
            pub.publish("spBv1.0/g/NDATA/n1", data.SerializeToString(), qos=1)
        await until(lambda: 257.0 in _values(got, "n1/Temp"), 30, "the data read")
        counts = dict(src.notices.counts)
    assert "message_without_seq" not in counts, counts  # before: said
    assert "seq_gap" not in src.stats.errors_by_reason and asked == [], (src.stats.errors_by_reason, asked)


def _proto3_data(seq: int, value: float, ts_ms: int) -> bytes:
    """An NDATA as proto3 code from Sparkplug's .proto without ``optional`` writes it: seq 0 left out."""
    data = sp._pb().Payload()
    data.timestamp = ts_ms
    if seq:
        data.seq = seq
    pb_metric(data, alias=1, double_value=value)
    return data.SerializeToString()


async def test_a_seq_0_left_out_after_a_loss_is_a_gap_asked_not_a_node_without_seq(mosquitto):
    """A node that numbers its data (proto3 code leaving out only its seq 0) whose messages 6..255 were lost: its
    next 0, holding no seq, was said to be a node sending none (message_without_seq, "set the node's library to send
    seq"), and the gap was seen one message later. With its 1..255 lost (255 messages), the 0 after its 0 was that
    notice alone and the 1 after it in sequence: the loss unseen, nothing asked. Now a node's message without a seq
    after it sent seqs is its 0: a gap after 5 at once; after its 0 (and a later timestamp: no redelivery), a gap of
    255 messages; each asked a rebirth. The same message again (a redelivery) is still a repeat."""
    async with _host(mosquitto.port, rebirth_min_interval_s=0) as (src, got, asked, pub):
        # each node's data stamped after its birth (stamped when made): however slow the machine, none is older
        # than the birth's value (out_of_order, not read)
        birth = _birth(sp.Metric("Temp", 1, D.DOUBLE, 0.0))
        t0 = int(time.time() * 1000)
        pub.publish("spBv1.0/g/NBIRTH/n1", birth, qos=1)
        for i in range(1, 6):
            pub.publish("spBv1.0/g/NDATA/n1", _proto3_data(i, float(i), t0 + i), qos=1)
        pub.publish("spBv1.0/g/NDATA/n1", _proto3_data(0, 256.0, t0 + 256), qos=1)  # 6..255 lost
        await until(lambda: asked == ["n1"], 30, "a rebirth asked for the gap")
        counts = dict(src.notices.counts)
        assert "message_without_seq" not in counts, counts  # before: said
        assert src.stats.errors_by_reason.get("seq_gap") == 1, src.stats.errors_by_reason
        birth = _birth(sp.Metric("Temp", 1, D.DOUBLE, 0.0))
        t0 = int(time.time() * 1000)
        pub.publish("spBv1.0/g/NBIRTH/n2", birth, qos=1)
        for i in range(1, 257):  # 1..255 and its 0, in sequence
            pub.publish("spBv1.0/g/NDATA/n2", _proto3_data(i % 256, float(i), t0 + i), qos=1)
        again = _proto3_data(0, 256.0, t0 + 256)
        pub.publish("spBv1.0/g/NDATA/n2", again, qos=1)  # its 0 redelivered: a repeat
        await until(lambda: _values(got, "n2/Temp").count(256.0) == 2, 30, "the redelivery read")
        assert "n2" not in asked, asked
        pub.publish("spBv1.0/g/NDATA/n2", _proto3_data(0, 512.0, t0 + 512), qos=1)  # 257..511 lost
        await until(lambda: "n2" in asked, 30, "a rebirth asked for the 255 lost")  # before: none
        # (the redelivery counted a seq_gap, as ever, and asked nothing)
        assert src.stats.errors_by_reason.get("seq_gap") == 3, src.stats.errors_by_reason
        assert "message_without_seq" not in src.notices.counts, src.notices.counts
    assert _values(got, "n2/Temp")[-3:] == [256.0, 256.0, 512.0]  # the data still read
