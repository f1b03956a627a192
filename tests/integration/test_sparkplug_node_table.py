"""The Sparkplug host's table of edge nodes against made-up and churning node names, through a real Mosquitto:
names that hold nothing worth keeping (never born, given up on, dead long ago) make room for new nodes, born
live nodes are never pushed out, and a flood of made-up names asks rebirths at the source's rate only, its
queues bounded by the table. The table's size is made small (``MAX_NODES``) to keep the tests short."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt import sparkplug_host
from protocols import sparkplug as sp
from tests.integration.test_sparkplug_compressed import _compressed
from tests.integration.test_sparkplug_rebirth_requests import _GIVING_UP_IN_1_S, _host
from tests.integration.test_sparkplug_rebirth_requests import _birth as _padded_birth
from tests.support.shifted_clock import ShiftedClock
from tests.support.waits import until

D = sp.DataType


def _birth(bd: int = 0) -> bytes:
    return sp.encode(
        sp.Payload(
            int(time.time() * 1000),
            0,
            [sp.Metric("bdSeq", None, D.INT64, bd), sp.Metric("Temp", None, D.DOUBLE, 20.0)],
        )
    )


def _deaths(host, n: int) -> bool:
    return bool(host.deaths == n)


def _data(seq: int, value: float = 1.0) -> bytes:
    return sp.encode(sp.Payload(int(time.time() * 1000), seq, [sp.Metric("Temp", None, D.DOUBLE, value)]))


def restart_amid_a_birth(pub: paho.Client, birth: bytes, reborn: bytes, data: Callable[[int], bytes]) -> None:
    """Nodes a and r born and sending data (r with a device d); r restarts (NDEATH, ``reborn``), and node x's birth
    comes between r's NBIRTH and its DBIRTH."""
    dbirth = sp.encode(sp.Payload(int(time.time() * 1000), 1, [sp.Metric("V", None, D.DOUBLE, 1.0)]))
    for seq, node in enumerate(("a", "r"), 1):
        pub.publish(f"spBv1.0/g/NBIRTH/{node}", birth, qos=1)
        if node == "r":
            pub.publish("spBv1.0/g/DBIRTH/r/d", dbirth, qos=1)
        pub.publish(f"spBv1.0/g/NDATA/{node}", data(seq), qos=1)
    pub.publish("spBv1.0/g/NDEATH/r", sp.death_payload(0), qos=1)  # r restarts
    pub.publish("spBv1.0/g/NBIRTH/r", reborn, qos=1)
    pub.publish("spBv1.0/g/NBIRTH/x", birth, qos=1)  # another node's birth, before r's DBIRTH
    pub.publish("spBv1.0/g/DBIRTH/r/d", dbirth, qos=1)


async def test_made_up_node_names_make_room_for_a_new_real_node_and_never_push_out_a_live_one(
    mosquitto, monkeypatch
):
    """A client publishing NDATA under made-up edge node names (never born) filled the host's table of nodes
    for good; a real node born after that was refused (too_many_nodes) until the agent restarted. Now a new
    node takes the place of the least recently heard node that holds nothing worth keeping (counted: notice
    nodes_forgotten); born, live nodes and a node dead less than DEAD_KEEP_S are kept."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 8)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        for name in ("live1", "live2", "dead"):
            pub.publish(f"spBv1.0/g/NBIRTH/{name}", _birth(), qos=1)
        pub.publish("spBv1.0/g/NDEATH/dead", sp.death_payload(0), qos=1)
        await until(lambda: host.births == 3 and host.deaths == 1, 30, "the births and the death read")
        for i in range(50):  # made-up names, never born
            pub.publish(f"spBv1.0/g/NDATA/junk{i:03d}", _data(1), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/real", _birth(), qos=1)  # a real node, new (its name changed, say)
        await until(lambda: host.node_alive("g", "real"), 30, "the new node's birth read")
        for i in range(50, 100):  # more made-up names: the born nodes stay
            pub.publish(f"spBv1.0/g/NDATA/junk{i:03d}", _data(1), qos=1)
        pub.publish("spBv1.0/g/NDATA/junk099", _data(2), qos=1)
        await until(lambda: host.data_before_birth >= 101, 30, "the made-up names' data handled")
        assert all(host.node_alive("g", n) for n in ("live1", "live2", "real"))
        assert host.datatype("g", "dead", None, "Temp") == D.DOUBLE  # dead a moment ago: kept
        assert host.nodes_forgotten >= 90, host.nodes_forgotten
        assert src.notices.counts.get("nodes_forgotten") == host.nodes_forgotten, src.notices.counts
        assert "junk" in src.notices.messages["nodes_forgotten"]
        assert "too_many_nodes" not in src.notices.counts
        # bounded by the table: the made-up names forgotten leave the rebirth queue and the table
        assert len(host._nodes) <= 8 and len(host._asking) <= 8
        # a live node's data is read as before, not taken as data before its birth
        pub.publish("spBv1.0/g/NDATA/live1", _data(1), qos=1)
        pub.publish("spBv1.0/g/NDATA/junk100", _data(1), qos=1)
        await until(lambda: host.data_before_birth >= 102, 30, "the next made-up name's data handled")
        assert host.data_before_birth == 102 and host.node_alive("g", "live1")


async def test_a_gateway_whose_edge_node_id_changes_at_every_restart_keeps_being_read(mosquitto, monkeypatch):
    """Some gateways put a boot id in their edge node id: each restart is a new node, the old one dead. Before,
    the dead names filled the table and the gateway's later boots were refused for good. Now a node dead
    DEAD_KEEP_S (made 0 here) is forgotten when a new one needs its place; the live node beside is kept."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 4)
    # raising=False: the former code, which this test is checked against, has no DEAD_KEEP_S
    monkeypatch.setattr(sparkplug_host, "DEAD_KEEP_S", 0.0, raising=False)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/steady", _birth(), qos=1)
        for boot in range(10):
            name = f"gw-{boot:02d}"
            pub.publish(f"spBv1.0/g/NBIRTH/{name}", _birth(boot), qos=1)
            await until(functools.partial(host.node_alive, "g", name), 30, f"boot {boot}'s birth read")
            pub.publish(f"spBv1.0/g/NDEATH/{name}", sp.death_payload(boot), qos=1)
            await until(functools.partial(_deaths, host, boot + 1), 30, f"boot {boot}'s death read")
        assert host.node_alive("g", "steady")
        assert host.nodes_forgotten == 10 - 3, host.nodes_forgotten  # 4 places: steady, and 3 boots
        assert "too_many_nodes" not in src.notices.counts, src.notices.counts


async def test_a_table_full_of_live_nodes_refuses_made_up_names_and_a_flood_asks_rebirths_at_the_rate_only(
    mosquitto, monkeypatch
):
    """Made-up names never push out born, live nodes: a table full of them refuses new names (too_many_nodes).
    Before that, while there was room, a flood of NDATA from hundreds of never-born names asks rebirths no faster
    than rebirth_max_per_s, and its rebirth queue holds no more than the table."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 16)
    rate = 5.0
    async with _host(
        mosquitto.port, "spBv1.0/g/NCMD/+", sparkplug={"rebirth_max_per_s": rate, "rebirth_min_interval_s": 0}
    ) as (src, asked, pub):
        host = src.sparkplug
        began = time.monotonic()
        for i in range(400):
            pub.publish(f"spBv1.0/g/NDATA/junk{i:03d}", _data(1), qos=1)
        await until(lambda: host.data_before_birth == 400, 20, "the made-up names' data handled")
        elapsed = time.monotonic() - began
        assert host.rebirths_requested <= rate * (elapsed + 1) + 1, (host.rebirths_requested, elapsed)
        assert len(host._nodes) <= 16 and len(host._asking) <= 16 and len(host._named) == 0
        for i in range(16):  # real nodes born: they take every place
            pub.publish(f"spBv1.0/g/NBIRTH/n{i:02d}", _birth(), qos=1)
        await until(lambda: all(host.node_alive("g", f"n{i:02d}") for i in range(16)), 30, "16 nodes born")
        for i in range(400, 450):
            pub.publish(f"spBv1.0/g/NDATA/junk{i:03d}", _data(1), qos=1)
        await until(
            lambda: src.notices.counts.get("too_many_nodes", 0) == 50, 30, "the made-up names refused"
        )
        assert all(host.node_alive("g", f"n{i:02d}") for i in range(16))


async def test_the_unanswered_rebirth_notice_of_a_born_node_says_its_data_is_read_meanwhile(mosquitto):
    """A born node asked its birth for a seq gap that does not answer is asked again (notice rebirth_unanswered).
    The notice said "its data is skipped until a birth of it is read", which is true of a node not born only: a
    born node's data is read meanwhile. Now it says so, and the message of a node not born is kept beside it."""
    async with _host(
        mosquitto.port,
        "spBv1.0/g/NCMD/+",
        sparkplug={"rebirth_min_interval_s": 0, "rebirth_retry_s": 0.2, "rebirth_retry_max_s": 0.4},
    ) as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/n1", _birth(), qos=1)
        await until(lambda: host.node_alive("g", "n1"), 30, "its birth read")
        pub.publish("spBv1.0/g/NDATA/n1", _data(1), qos=1)
        pub.publish("spBv1.0/g/NDATA/n1", _data(5), qos=1)  # 2..4 lost: a rebirth asked, not answered
        await until(lambda: host.rebirths_repeated >= 1, 30, "its birth asked again")
        said = src.notices.messages["rebirth_unanswered"]
        assert "g/n1 did not answer" in said and "its data is read meanwhile" in said, said
        assert "skipped" not in said, said
        pub.publish("spBv1.0/g/NDATA/mute", _data(1), qos=1)  # a node not born, asked, mute
        await until(lambda: "rebirth_unanswered" in src.notices.status() and len(_said(src)) == 2, 30, "both")
        assert any("g/mute" in m and "its data is skipped until a birth" in m for m in _said(src)), _said(src)
        assert host.data_before_birth == 1  # n1's data read all along


def _said(src) -> list[str]:
    s = src.notices.status()["rebirth_unanswered"]
    return [s["message"], *s.get("more", [])]


async def test_a_born_live_node_given_up_on_while_quiet_is_never_pushed_out_by_made_up_names(
    mosquitto, monkeypatch
):
    """A born node reporting by exception, quiet, whose rebirth (asked for a seq gap) is never answered (a
    read-only host whose NCMDs the broker's ACL drops) is given up on after rebirth_give_up_s: asked nothing more,
    but born and live, its data read. The table took every node given up on as holding nothing worth keeping, so
    made-up names pushed it out: its next data was skipped as data before its birth (never answered), its
    commands refused, its tags' last values forgotten. Now a born, live node given up on is kept."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 4)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+", sparkplug=_GIVING_UP_IN_1_S) as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/quiet", _birth(), qos=1)
        await until(lambda: host.node_alive("g", "quiet"), 30, "its birth read")
        pub.publish("spBv1.0/g/NDATA/quiet", _data(1), qos=1)
        pub.publish("spBv1.0/g/NDATA/quiet", _data(5), qos=1)  # 2..4 lost: a rebirth asked, never answered
        await until(lambda: host.rebirths_given_up == 1, 20, "the quiet node given up on")
        # silent rebirth_give_up_s, it is also stale (``test_sparkplug_hostile_nodes``): kept all the same
        assert host.datatype("g", "quiet", None, "Temp") == D.DOUBLE
        for i in range(20):  # made-up names
            pub.publish(f"spBv1.0/g/NDATA/junk{i:03d}", _data(1), qos=1)
        await until(lambda: host.data_before_birth == 20, 30, "the made-up names' data handled")
        assert host.nodes_forgotten >= 16, host.nodes_forgotten
        assert host.datatype("g", "quiet", None, "Temp") == D.DOUBLE
        pub.publish("spBv1.0/g/NDATA/quiet", _data(6, 2.0), qos=1)  # it speaks again: read, not skipped
        pub.publish("spBv1.0/g/NDATA/junk100", _data(1), qos=1)
        await until(lambda: host.data_before_birth >= 21, 30, "the next made-up name's data handled")
        assert host.data_before_birth == 21 and host.node_alive("g", "quiet")


async def test_after_the_gateways_reconnect_the_nodes_that_lived_are_asked_before_made_up_names_waiting(
    mosquitto, monkeypatch
):
    """Made-up names never born now share the table with real nodes, and each waits in the rebirth queue (asked
    at rebirth_max_per_s). At this gateway's reconnect every live node's birth is missed and its data skipped
    until it is asked and answers; it was queued behind every made-up name waiting (10,000 at 20 a second: eight
    minutes of a real line's data skipped). Now the nodes that lived at the drop are asked first. The host's clock
    is held (moved on once the reconnect is taken in): the names asked meanwhile are the rate's, not the time a
    loaded machine takes to reconnect."""
    monkeypatch.setattr(sparkplug_host, "time", clock := ShiftedClock(held=True))
    async with _host(
        mosquitto.port,
        "spBv1.0/g/NCMD/+",
        client_id="gw-sp-table",
        sparkplug={"rebirth_max_per_s": 2, "rebirth_min_interval_s": 60, "rebirth_retry_s": 0},
    ) as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/real", _birth(), qos=1)
        await until(lambda: host.node_alive("g", "real"), 30, "its birth read")
        for i in range(40):  # made-up names: asked two a second, the rest waiting
            pub.publish(f"spBv1.0/g/NDATA/junk{i:03d}", _data(1), qos=1)
        await until(lambda: host.data_before_birth == 40, 30, "the made-up names' data handled")
        await until(lambda: len(asked) == 2, 30, "a second's worth of them asked")  # the clock held: no more
        before = len(asked)
        # takes the gateway's session
        kicker = paho.Client(CallbackAPIVersion.VERSION2, client_id="gw-sp-table")
        kicker.connect("127.0.0.1", mosquitto.port, 30)
        kicker.loop_start()
        await until(lambda: not src.connected.is_set(), 30, "the gateway's connection gone")
        kicker.disconnect()
        kicker.loop_stop()
        await until(lambda: src.stats.reconnects == 1 and src.subscribed.is_set(), 30, "the gateway back")
        # a message through the consumer: the reconnect is taken in (``items``)
        pub.publish("spBv1.0/g/NDATA/junk000", _data(2), qos=1)
        await until(lambda: host.data_before_birth == 41, 30, "the reconnect taken in")
        clock.ahead += 1.0  # a second's worth of requests: the real node's first
        await until(lambda: "real" in asked, 60, "the real node asked its birth")
        assert asked.index("real") == before, asked  # before: behind the thirty-eight made-up names waiting


async def test_made_up_names_whose_compressed_births_are_skipped_make_room_for_a_real_nodes_birth(
    mosquitto, monkeypatch
):
    """A client flooding compressed NBIRTHs under made-up names spends the births' inflate budget: each later one is
    skipped (inflate_budget), its node never born. Such a node was filed as a live node in a storm and held its
    place in the table until given up on (rebirth_give_up_s, a day): 10,000 births of 386 bytes (7.7 s) filled the
    table and a real node's birth was refused (too_many_nodes). Now a node whose birth was skipped and that never
    spoke holds nothing worth keeping: it makes room as a name never born does (nodes_forgotten). A born node that
    sent data keeps its place through the storm."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 8)
    # the host's clock held: the budgets refill not at all, however long a loaded machine takes over the flood
    monkeypatch.setattr(sparkplug_host, "time", ShiftedClock(held=True))
    async with _host(
        mosquitto.port,
        "spBv1.0/g/NCMD/+",
        max_message_bytes=64 * 1024,
        # 4 KiB a second a node, 16 KiB all nodes: a 12 KiB birth or two are read, the next ones skipped
        sparkplug={"max_inflated_bytes_per_s": 4096},
    ) as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/steady", _birth(), qos=1)  # a real node, plain: never charged
        pub.publish("spBv1.0/g/NDATA/steady", _data(1), qos=1)
        await until(lambda: host.node_alive("g", "steady") and host.births == 1, 30, "its birth read")
        for i in range(30):
            pub.publish(f"spBv1.0/g/NBIRTH/junk{i:03d}", _compressed(_padded_birth(i, 12 * 1024)), qos=1)
        await until(lambda: host.births + host.births_skipped >= 31, 30, "the flood handled")
        assert host.births_skipped >= 20, host.births_skipped
        pub.publish("spBv1.0/g/NBIRTH/real", _birth(), qos=1)  # plain: not charged to the spent budget
        await until(lambda: host.node_alive("g", "real"), 30, "the real node's birth read")
        assert "too_many_nodes" not in src.notices.counts, src.notices.counts
        assert host.node_alive("g", "steady")  # a node that spoke is never pushed out by the flood
        assert len(host._nodes) <= 8


async def test_a_quiet_node_born_then_caught_in_a_storm_is_not_pushed_out_by_made_up_names_and_is_asked_its_birth(
    mosquitto, monkeypatch
):
    """A real node born by its own NBIRTH, reporting by exception (no data since), whose next compressed birth the
    births' inflate budget skips is stale until a birth of it is read. It was filed as a name never born: a flood of
    NDATA under made-up names (the table full) pushed it out at once, its rebirth request dropped with it, and it
    was asked no birth until it spoke again, which such a node may not do for days. Now it is forgotten as a born
    node that sent births only is (never for a never-born name's data unless silent an hour), and asked its birth
    once its budget refills."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 8)
    async with _host(
        mosquitto.port,
        "spBv1.0/g/NCMD/+",
        max_message_bytes=64 * 1024,
        # 4 KiB a second a node: its first 12 KiB birth is read and leaves a debt, the next ones are skipped
        sparkplug={"max_inflated_bytes_per_s": 4096, "rebirth_min_interval_s": 0, "rebirth_max_per_s": 1000},
    ) as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/quiet", _padded_birth(0).SerializeToString(), qos=1)
        await until(lambda: host.node_alive("g", "quiet"), 30, "its birth read")
        for step in range(1, 4):
            pub.publish("spBv1.0/g/NBIRTH/quiet", _compressed(_padded_birth(step, 12 * 1024)), qos=1)
        await until(lambda: host.births_skipped >= 1, 30, "a birth of it skipped")
        assert not host.node_alive("g", "quiet")
        for i in range(30):  # made-up names, never born: the table full
            pub.publish(f"spBv1.0/g/NDATA/junk{i:03d}", _data(1), qos=1)
        await until(lambda: "quiet" in asked, 30, "its birth asked once its budget refilled")
        assert ("g", "quiet") in host._nodes and host.nodes_forgotten >= 20, host.nodes_forgotten
        pub.publish("spBv1.0/g/NBIRTH/quiet", _padded_birth(4).SerializeToString(), qos=1)  # its answer
        await until(lambda: host.node_alive("g", "quiet"), 30, "its answer read")


async def test_a_node_restarting_in_a_full_table_is_not_forgotten_for_a_new_nodes_birth_before_its_dbirths(
    mosquitto, monkeypatch
):
    """Between its NBIRTH and its devices' DBIRTHs a restarting node has sent births only: in a full table a new
    node's birth then took its place, and its DBIRTH was read as before its birth. As at MAX_TOTAL_METRICS, one
    heard within REBORN_DEVICES_WAIT_S awaiting devices of its session before is kept; the new node refused."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 2)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        restart_amid_a_birth(pub, _birth(), _birth(1), _data)
        await until(lambda: host.births + host.data_before_birth >= 5, 30, "r's births handled")
        assert host.device_alive("g", "r", "d") and asked == [], src.notices.counts  # before: r forgotten
        assert not host.node_alive("g", "x") and host.node_alive("g", "a")


async def test_a_flood_of_node_restarts_without_their_devices_keeps_no_place_in_a_full_table(
    mosquitto, monkeypatch
):
    """A node restarting (its NBIRTH heard within REBORN_DEVICES_WAIT_S, awaiting devices of its session before) is
    kept in a full table (MAX_NODES, made 2). A name born once with a device, then NDEATH and NBIRTH again and again
    within 5 s, never its DBIRTH nor data, kept its place so for good: every real node's birth refused
    (too_many_nodes). Now only a restart ending a session that showed a node (a device born, data read) is so kept;
    the churn's second restart is not, and a new node's birth takes its place."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 2)
    dbirth = sp.encode(sp.Payload(int(time.time() * 1000), 1, [sp.Metric("V", None, D.DOUBLE, 1.0)]))
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/a", _birth(), qos=1)
        pub.publish("spBv1.0/g/NDATA/a", _data(1), qos=1)  # a real node, speaking
        pub.publish("spBv1.0/g/NBIRTH/j", _birth(), qos=1)
        pub.publish("spBv1.0/g/DBIRTH/j/d", dbirth, qos=1)
        for bd in range(3):  # then restarts only
            pub.publish("spBv1.0/g/NDEATH/j", sp.death_payload(bd), qos=1)
            pub.publish("spBv1.0/g/NBIRTH/j", _birth(bd + 1), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/x", _birth(), qos=1)
        await until(lambda: host.births >= 7, 30, "x's birth handled")  # before: refused (too_many_nodes)
        assert host.node_alive("g", "x") and host.node_alive("g", "a"), src.notices.counts
        assert ("g", "j") not in host._nodes and host.born_forgotten == 1
