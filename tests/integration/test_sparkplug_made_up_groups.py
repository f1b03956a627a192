"""The Sparkplug host's state per group and per node name against made-up names, through a real Mosquitto: a
publisher on a shared broker sending data under ever new group names (spBv1.0/<random group>/NDATA/x) while the
source subscribes only NDATA grows neither the groups it keeps nor its notice keys without bound, and a node's
inflate budget is kept while it sends, however many made-up names come. The bounds are made small (module
constants) to keep the tests short."""

from __future__ import annotations

import time

from devices.mqtt import sparkplug_host
from protocols import sparkplug as sp
from tests.integration.test_sparkplug_rebirth_requests import _host
from tests.support.shifted_clock import ShiftedClock
from tests.support.waits import until

D = sp.DataType


def _data(seq: int = 1) -> bytes:
    return sp.encode(sp.Payload(int(time.time() * 1000), seq, [sp.Metric("Temp", None, D.DOUBLE, 1.0)]))


async def test_data_under_ever_new_group_names_keeps_the_groups_said_and_the_notice_keys_bounded(
    mosquitto, monkeypatch
):
    """Only NDATA subscribed, so no rebirth can be read: each group was said once (notice
    births_unsubscribed:<group>) and its name kept for good, a notice key and an entry per made-up group: months
    of such traffic grew the memory and /status without bound. Now one notice key, births_unsubscribed, counts
    the groups said; the groups kept are at most MAX_UNREACHED_GROUPS, the least recently seen forgotten
    (counted, notice unreached_groups_forgotten), and a group whose data keeps coming is said once only."""
    # raising=False: the former code, which this test is checked against, has no MAX_UNREACHED_GROUPS
    monkeypatch.setattr(sparkplug_host, "MAX_UNREACHED_GROUPS", 5, raising=False)
    subs = [{"topic": "spBv1.0/+/NDATA/#", "codec": "sparkplug_b", "qos": 1}]
    async with _host(mosquitto.port, "spBv1.0/+/NCMD/+", subscriptions=subs) as (src, asked, pub):
        host = src.sparkplug
        for i in range(60):
            pub.publish(f"spBv1.0/junk{i:03d}/NDATA/x", _data(), qos=1)
            if i % 3 == 0:  # a real line's node, its births unsubscribed too: seen all along
                pub.publish("spBv1.0/line1/NDATA/plc", _data(), qos=1)
        await until(lambda: host.data_before_birth == 80, 20, "every message handled")
        assert len(host._unreached) <= 5, len(host._unreached)
        unsubscribed = [k for k in src.notices.counts if k.startswith("births_unsubscribed")]
        assert unsubscribed == ["births_unsubscribed"], unsubscribed
        # every made-up group said once; the real group once, never forgotten while its data comes
        assert src.notices.counts["births_unsubscribed"] == 61, src.notices.counts
        assert "line1" in host._unreached
        assert host.unreached_forgotten == 61 - 5
        assert src.notices.counts["unreached_groups_forgotten"] == 61 - 5
        assert asked == [] and host.rebirths_requested == 0
        assert len(src.notices.counts) <= 4, src.notices.counts  # data_before_birth and these


async def test_a_nodes_inflate_budget_is_kept_while_it_sends_however_many_made_up_names_come(
    mosquitto, monkeypatch
):
    """The inflate budgets per node were kept for the MAX_NODES names seen first and forgotten oldest first: a
    node sending all along lost its budget (spent or not) to every MAX_NODES made-up names, and got a full one
    again. Now the least recently used is forgotten: a node that keeps sending keeps its budget, and the budgets
    stay at most MAX_NODES."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 4)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NDATA/steady", _data(), qos=1)
        await until(lambda: host.data_before_birth == 1, 30, "its first message handled")
        budget = host._inflate_budgets[("g", "steady")]
        for i in range(40):
            pub.publish(f"spBv1.0/g/NDATA/junk{i:03d}", _data(), qos=1)
            if i % 2 == 0:
                pub.publish("spBv1.0/g/NDATA/steady", _data(), qos=1)
        await until(lambda: host.data_before_birth == 61, 20, "every message handled")
        assert len(host._inflate_budgets) <= 4 and len(host._births_budgets) <= 4
        assert host._inflate_budgets.get(("g", "steady")) is budget  # the same, not a fresh full one


def _birth(seq: int, metrics: list[sp.Metric]) -> bytes:
    return sp.encode(sp.Payload(int(time.time() * 1000), seq, metrics))


async def test_a_nodes_births_of_ever_new_devices_and_aliases_keep_its_tables_bounded(mosquitto, monkeypatch):
    """A node's DBIRTHs of ever new device names without metrics (MAX_NODE_METRICS did not hold them) each added
    a device kept until its node's next birth, and a device born again and again with new aliases each time
    kept every alias it was ever given (its names were forgotten at each birth, its aliases not): a broken or
    hostile node grew the host's memory without bound. Now at most MAX_NODE_DEVICES devices are born at once
    (a new one's DBIRTH past it is skipped: notice too_many_node_devices), a device's DBIRTH forgets the aliases
    of its last one, and a node's aliases are held to MAX_NODE_METRICS (notice too_many_node_metrics)."""
    # raising=False: the former code, which this test is checked against, has no MAX_NODE_DEVICES
    monkeypatch.setattr(sparkplug_host, "MAX_NODE_DEVICES", 5, raising=False)
    monkeypatch.setattr(sparkplug_host, "MAX_NODE_METRICS", 8)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/n", _birth(0, [sp.Metric("bdSeq", None, D.INT64, 0)]), qos=1)
        for i in range(30):  # ever new devices, no metrics
            pub.publish(f"spBv1.0/g/DBIRTH/n/d{i:03d}", _birth(i + 1, []), qos=1)
        await until(
            lambda: host.births + src.notices.counts.get("too_many_node_devices", 0) == 31,
            30,
            "every birth handled",
        )
        node = host._nodes[("g", "n")]
        assert len(node.devices) <= 5, len(node.devices)
        assert host.device_alive("g", "n", "d000")  # the first ones are born
        born = host.births
        pub.publish("spBv1.0/g/NBIRTH/n", _birth(0, [sp.Metric("bdSeq", None, D.INT64, 1)]), qos=1)
        for i in range(30):  # one device, born again and again with a new alias each time
            m = sp.Metric("Temp", 100 + i, D.DOUBLE, float(i))
            pub.publish("spBv1.0/g/DBIRTH/n/d", _birth(i + 1, [m]), qos=1)
        await until(lambda: host.births == born + 31, 30, "the device's births read")
        node = host._nodes[("g", "n")]
        assert len(node.aliases) + len(node.clashes) <= 8, (len(node.aliases), len(node.clashes))
        assert host.device_alive("g", "n", "d") and node.aliases == {129: ("d", "Temp")}


async def test_data_of_a_device_past_the_nodes_device_bound_asks_no_rebirth_that_would_be_skipped_again(
    mosquitto, monkeypatch
):
    """A node with more devices than MAX_NODE_DEVICES: the last one's DBIRTH is skipped (too_many_node_devices),
    and its DDATA was taken as data before its birth, which asked the node a rebirth. The node answers with its
    NBIRTH and every DBIRTH, the last one skipped again, its next DDATA asks again: a real node with that many
    devices was reborn whole at every rebirth_min_interval_s for ever. Now its data is skipped and counted, and
    no rebirth asked while the node is at the bound; once a DDEATH makes room, its data asks one."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODE_DEVICES", 3)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/n", _birth(0, [sp.Metric("bdSeq", None, D.INT64, 0)]), qos=1)
        for i in range(4):
            pub.publish(
                f"spBv1.0/g/DBIRTH/n/d{i}", _birth(i + 1, [sp.Metric("Temp", None, D.DOUBLE, 1.0)]), qos=1
            )
        pub.publish("spBv1.0/g/DDATA/n/d3", _birth(5, [sp.Metric("Temp", None, D.DOUBLE, 2.0)]), qos=1)
        await until(lambda: host.data_before_birth == 1, 30, "the skipped device's data handled")
        assert src.notices.counts.get("too_many_node_devices", 0) >= 1, src.notices.counts
        assert host.rebirths_requested == 0 and asked == [], asked  # before: asked at once
        assert not host.device_alive("g", "n", "d3")
        pub.publish("spBv1.0/g/DDEATH/n/d0", _birth(6, []), qos=1)
        pub.publish("spBv1.0/g/DDATA/n/d3", _birth(7, [sp.Metric("Temp", None, D.DOUBLE, 3.0)]), qos=1)
        await until(lambda: host.data_before_birth == 2, 30, "its data after the room was made handled")
        await until(lambda: asked == ["n"], 30, "a rebirth asked once there is room")


async def test_devices_of_a_node_not_sharing_aliases_cut_past_its_device_bound_at_a_rebirth_are_counted(
    mosquitto, monkeypatch
):
    """A node not known to share aliases keeps its session before's devices (``named_before``) through a rebirth
    within its wait, those born since over them; past MAX_NODE_DEVICES together the old ones were cut silently
    (a node known to share counted the same cut: too_many_node_devices). Now counted there too."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODE_DEVICES", 3)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        for devices in (
            ("d0", "d1", "d2"),
            ("d3", "d4"),
            (),
        ):  # three NBIRTHs in a row (rebirths), within 5 s
            seq = 0
            pub.publish("spBv1.0/g/NBIRTH/n", _birth(0, [sp.Metric("bdSeq", None, D.INT64, 0)]), qos=1)
            for d in devices:
                seq += 1
                pub.publish(f"spBv1.0/g/DBIRTH/n/{d}", _birth(seq, []), qos=1)
        await until(lambda: host.births == 8, 30, "every birth read")
        node = host._nodes[("g", "n")]
        assert len(node.named_before) <= 4 and sparkplug_host._FORGOTTEN in node.named_before, (
            node.named_before
        )
        assert src.stats.errors_by_reason == {"too_many_node_devices": 1}, (
            src.stats.errors_by_reason
        )  # before: {}


async def test_device_names_held_by_all_nodes_together_are_bounded_a_new_devices_birth_past_it_refused(
    mosquitto, monkeypatch
):
    """MAX_NODE_DEVICES bounds a node; nothing bounded the device names all nodes hold together (10,000 nodes of
    10,000 devices born and dead under ever new names, with no metrics: 10^8 names). Now at MAX_TOTAL_DEVICES (made
    6) a node's own dead names are forgotten first (too_many_node_devices); past that the birth of a device new to
    its node is refused (notice too_many_total_devices), its data skipped with no rebirth asked (it would be
    refused again), until a death frees names."""
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_DEVICES", 6, raising=False)  # (the former code has none)
    bd0 = [sp.Metric("bdSeq", None, D.INT64, 0)]
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/a", _birth(0, bd0), qos=1)
        for i in range(3):  # devices that come and go under new names: 3 dead names held
            pub.publish(f"spBv1.0/g/DBIRTH/a/a{i}", _birth(2 * i + 1, []), qos=1)
            pub.publish(f"spBv1.0/g/DDEATH/a/a{i}", _birth(2 * i + 2, []), qos=1)
        pub.publish(
            "spBv1.0/g/NDATA/a", _birth(7, []), qos=1
        )  # a node that speaks: kept (no room made of it)
        pub.publish("spBv1.0/g/NBIRTH/b", _birth(0, bd0), qos=1)
        for i in range(3):  # b0 and b1 born (2 names each), b2 past the bound
            pub.publish(f"spBv1.0/g/DBIRTH/b/b{i}", _birth(i + 1, []), qos=1)
        pub.publish("spBv1.0/g/DDATA/b/b2", _birth(4, [sp.Metric("Temp", None, D.DOUBLE, 1.0)]), qos=1)
        await until(lambda: host.data_before_birth == 1, 30, "b2's data handled")
        assert not host.device_alive("g", "b", "b2")  # before: born
        assert src.notices.counts.get("too_many_total_devices") == 2, (
            src.notices.counts
        )  # its birth, its data
        assert asked == [] and host.devices_refused == 2
        pub.publish("spBv1.0/g/DBIRTH/a/a3", _birth(8, []), qos=1)  # a's own dead names make room
        await until(lambda: host.device_alive("g", "a", "a3"), 30, "a3 born")
        assert src.stats.errors_by_reason.get("too_many_node_devices") == 1, src.stats.errors_by_reason
        pub.publish("spBv1.0/g/NDEATH/b", sp.death_payload(0), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/b", _birth(0, [sp.Metric("bdSeq", None, D.INT64, 1)]), qos=1)
        pub.publish("spBv1.0/g/DBIRTH/b/b2", _birth(1, []), qos=1)
        await until(lambda: host.device_alive("g", "b", "b2"), 30, "b2 born once b's death freed names")
        assert host._names == sum(n.names_held for n in host._nodes.values()) <= 6 + 2


async def test_a_node_restarting_at_the_total_device_bound_keeps_its_own_devices(mosquitto, monkeypatch):
    """At a live NBIRTH a node's devices move to its session before's (``named_before``, or ``expected`` of a node
    sharing aliases): at MAX_TOTAL_DEVICES (made 12) the births of its own devices after its restart were taken as
    new names and refused past the first half (too_many_total_devices), their data skipped. Now a name of its
    session before coming back is no new name."""
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_DEVICES", 12)
    temp = [sp.Metric("Temp", None, D.DOUBLE, 1.0)]
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        for node in ("r", "h"):  # 3 live devices each: 12 names held, at the bound
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _birth(0, [sp.Metric("bdSeq", None, D.INT64, 0)]), qos=1)
            for i in range(3):
                pub.publish(f"spBv1.0/g/DBIRTH/{node}/d{i}", _birth(i + 1, temp), qos=1)
        pub.publish("spBv1.0/g/NDEATH/r", sp.death_payload(0), qos=1)  # r restarts, the same 3 devices
        pub.publish("spBv1.0/g/NBIRTH/r", _birth(0, [sp.Metric("bdSeq", None, D.INT64, 1)]), qos=1)
        for i in range(3):
            pub.publish(f"spBv1.0/g/DBIRTH/r/d{i}", _birth(i + 1, temp), qos=1)
        await until(lambda: host.births + host.devices_refused >= 12, 30, "every birth handled")
        assert [host.device_alive("g", "r", f"d{i}") for i in range(3)] == [True] * 3, src.notices.counts
        assert host.devices_refused == 0 and host._names == 12  # before: d2 refused


async def test_no_other_node_is_forgotten_for_a_new_devices_birth_at_the_total_device_bound(
    mosquitto, monkeypatch
):
    """At MAX_TOTAL_DEVICES (made 8) a new device's birth made room of other nodes chosen by their quiet (births
    only, no data for an hour): a real node reporting by exception, its values unchanged for an hour, was forgotten
    for a births-only flood's new device names, its next data skipped and its own devices' births refused after.
    Now no other node is forgotten for device room: the new device is refused (too_many_total_devices)."""
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_DEVICES", 8)
    bd0 = [sp.Metric("bdSeq", None, D.INT64, 0)]
    temp = [sp.Metric("Temp", None, D.DOUBLE, 1.0)]
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/real", _birth(0, bd0), qos=1)
        for i in range(2):  # 2 live devices (4 names), with junk's 8 names held, at the bound
            pub.publish(f"spBv1.0/g/DBIRTH/real/d{i}", _birth(i + 1, temp), qos=1)
        pub.publish("spBv1.0/g/DDATA/real/d0", _birth(3, temp), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/junk", _birth(0, bd0), qos=1)  # births only
        for i in range(2):
            pub.publish(f"spBv1.0/g/DBIRTH/junk/x{i}", _birth(i + 1, []), qos=1)
        await until(lambda: host._names >= 8, 30, "at the bound")
        monkeypatch.setattr(sparkplug_host, "TALKING_KEEP_S", 0.0)  # an hour later, real's values unchanged
        pub.publish("spBv1.0/g/NBIRTH/more", _birth(0, bd0), qos=1)
        pub.publish("spBv1.0/g/DBIRTH/more/x", _birth(1, []), qos=1)
        pub.publish("spBv1.0/g/DDATA/real/d1", _birth(4, temp), qos=1)  # real's value changes
        pub.publish("spBv1.0/g/DBIRTH/more/y", _birth(2, []), qos=1)
        await until(lambda: host.births + host.devices_refused >= 9, 30, "more's births handled")
        assert host.device_alive("g", "real", "d1") and host.data_before_birth == 0, src.notices.counts
        assert host.device_alive("g", "junk", "x1") and host.born_forgotten == 0  # before: real forgotten
        assert asked == [] and src.notices.counts.get("too_many_total_devices") == 2


async def test_data_of_a_device_refused_at_the_total_device_bound_asks_its_birth_once_names_are_freed(
    mosquitto, monkeypatch
):
    """A device refused at MAX_TOTAL_DEVICES (made 8): its data is skipped with no rebirth asked while the bound
    holds (the answer would be refused again); once a node's death frees names, its data asks its birth, and the
    birth answering is read."""
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_DEVICES", 8)
    bd0 = [sp.Metric("bdSeq", None, D.INT64, 0)]
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        for node in ("a", "b"):  # 2 live devices each, and data: 8 names held, at the bound
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _birth(0, bd0), qos=1)
            for i in range(2):
                pub.publish(f"spBv1.0/g/DBIRTH/{node}/d{i}", _birth(i + 1, []), qos=1)
            pub.publish(f"spBv1.0/g/NDATA/{node}", _birth(3, []), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/r", _birth(0, bd0), qos=1)
        pub.publish("spBv1.0/g/DBIRTH/r/r0", _birth(1, []), qos=1)
        pub.publish("spBv1.0/g/DDATA/r/r0", _birth(2, []), qos=1)
        await until(lambda: host.devices_refused == 2, 30, "r0 refused, its data skipped")
        assert asked == []
        pub.publish("spBv1.0/g/NDEATH/a", sp.death_payload(0), qos=1)  # a's 2 live devices free 2 names
        pub.publish("spBv1.0/g/DDATA/r/r0", _birth(3, []), qos=1)
        await until(lambda: "r" in asked, 30, "r0's birth asked")
        pub.publish("spBv1.0/g/NBIRTH/r", _birth(0, bd0), qos=1)  # the answer
        pub.publish("spBv1.0/g/DBIRTH/r/r0", _birth(1, []), qos=1)
        await until(lambda: host.device_alive("g", "r", "r0"), 30, "r0 born")
        assert host.device_alive("g", "b", "d1") and host.born_forgotten == 0, src.notices.counts


async def test_a_node_restarting_at_the_total_device_bound_is_not_forgotten_for_another_nodes_new_device(
    mosquitto, monkeypatch
):
    """Between a node's NBIRTH and its devices' DBIRTHs it has sent births only: at MAX_TOTAL_DEVICES (made 12)
    another node's new device born then took its room, the restarting node forgotten and its own devices' births
    then read as before its birth. No other node is forgotten for device room: the new device is refused."""
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_DEVICES", 12)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        for node in ("r", "h"):  # 3 live devices each, and data: 12 names held
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _birth(0, [sp.Metric("bdSeq", None, D.INT64, 0)]), qos=1)
            for i in range(3):
                pub.publish(f"spBv1.0/g/DBIRTH/{node}/d{i}", _birth(i + 1, []), qos=1)
            pub.publish(f"spBv1.0/g/NDATA/{node}", _birth(4, []), qos=1)
        pub.publish("spBv1.0/g/NDEATH/r", sp.death_payload(0), qos=1)  # r restarts
        pub.publish("spBv1.0/g/NBIRTH/r", _birth(0, [sp.Metric("bdSeq", None, D.INT64, 1)]), qos=1)
        for i in range(3):  # h's new devices fill the names r's restart freed, the third at the bound
            pub.publish(f"spBv1.0/g/DBIRTH/h/new{i}", _birth(5 + i, []), qos=1)
        for i in range(3):
            pub.publish(f"spBv1.0/g/DBIRTH/r/d{i}", _birth(i + 1, []), qos=1)
        await until(lambda: host.births + host.devices_refused >= 15, 30, "every birth handled")
        assert [host.device_alive("g", "r", f"d{i}") for i in range(3)] == [True] * 3, src.notices.counts
        assert host.devices_refused == 1 and not host.device_alive("g", "h", "new2")  # before: r forgotten


async def test_a_births_only_bursts_device_names_are_freed_once_its_nodes_go_silent(mosquitto, monkeypatch):
    """A burst of made-up NBIRTHs and DBIRTHs, then nothing, held its device names for good at MAX_TOTAL_DEVICES
    (made 8): a real node's new device was refused (too_many_total_devices) until the burst's nodes died, were
    forgotten for the node table or the metrics, or the agent restarted. Now a node gone silent (quiet
    rebirth_give_up_s, and no answer to the birth then asked within rebirth_retry_max_s) is forgotten for device
    room, least recently heard first; a node that speaks is never (the real one here sends data when asked)."""
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_DEVICES", 8)
    clock = ShiftedClock()
    monkeypatch.setattr(sparkplug_host, "time", clock)
    bd0 = [sp.Metric("bdSeq", None, D.INT64, 0)]
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/real", _birth(0, bd0), qos=1)
        pub.publish("spBv1.0/g/DBIRTH/real/d0", _birth(1, []), qos=1)
        pub.publish("spBv1.0/g/NDATA/real", _birth(2, []), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/junk", _birth(0, bd0), qos=1)  # births only, then nothing
        for i in range(3):
            pub.publish(f"spBv1.0/g/DBIRTH/junk/x{i}", _birth(i + 1, []), qos=1)
        await until(lambda: host._names >= 8, 30, "at the bound")
        clock.ahead += 86_400  # rebirth_give_up_s: both quiet, both asked their birth
        await until(lambda: "junk" in asked and "real" in asked, 30, "their births asked")
        pub.publish("spBv1.0/g/NDATA/real", _birth(3, []), qos=1)  # the real node speaks
        await until(lambda: host._nodes[("g", "real")].probed == float("inf"), 30, "its data read")
        clock.ahead += 300  # rebirth_retry_max_s: junk did not answer
        await until(lambda: host.nodes_silent == 1, 30, "junk silent")
        assert host._nodes[("g", "junk")].silent and not host._nodes[("g", "real")].silent
        pub.publish("spBv1.0/g/DBIRTH/real/d1", _birth(4, []), qos=1)  # real's new device
        await until(lambda: host.device_alive("g", "real", "d1"), 30, "d1 born")  # before: refused
        assert ("g", "junk") not in host._nodes and host.devices_refused == 0, src.notices.counts
        assert "junk" in src.notices.messages["born_nodes_forgotten"]
        assert host._names == sum(n.names_held for n in host._nodes.values()) <= 8


async def test_at_the_device_bound_births_only_nodes_are_asked_their_birth_and_freed_if_they_do_not_answer(
    mosquitto, monkeypatch
):
    """At MAX_TOTAL_DEVICES (made 8) a births-only burst's names were freed only once its nodes went silent:
    rebirth_give_up_s (a day) of quiet, then an unanswered ask. Now a new device refused there asks the births-only
    nodes holding names, quiet rebirth_retry_max_s, their birth at once: one that answers is kept and never marked
    silent, one that does not goes silent rebirth_retry_max_s later and makes room."""
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_DEVICES", 8)
    clock = ShiftedClock()
    monkeypatch.setattr(sparkplug_host, "time", clock)
    bd0 = [sp.Metric("bdSeq", None, D.INT64, 0)]
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        for node, devices in (("real", 1), ("quiet", 1), ("junk", 2)):  # 8 names: at the bound
            pub.publish(f"spBv1.0/g/NBIRTH/{node}", _birth(0, bd0), qos=1)
            for i in range(devices):
                pub.publish(f"spBv1.0/g/DBIRTH/{node}/d{i}", _birth(i + 1, []), qos=1)
        pub.publish("spBv1.0/g/NDATA/real", _birth(2, []), qos=1)
        await until(lambda: host._names >= 8 and host._nodes[("g", "real")].seq == 2, 30, "at the bound")
        clock.ahead += 300  # rebirth_retry_max_s of quiet
        pub.publish("spBv1.0/g/DDATA/real/d1", _birth(3, []), qos=1)  # real's new device: refused
        await until(
            lambda: "quiet" in asked and "junk" in asked, 30, "the births-only asked"
        )  # before: never
        assert host.devices_refused == 1 and "real" not in asked, src.notices.counts
        # quiet is a real node reporting by exception: it answers
        pub.publish("spBv1.0/g/NBIRTH/quiet", _birth(0, bd0), qos=1)
        pub.publish("spBv1.0/g/DBIRTH/quiet/d0", _birth(1, []), qos=1)
        await until(lambda: host._nodes[("g", "quiet")].probed == float("inf"), 30, "its answer read")
        clock.ahead += 300  # junk did not answer within rebirth_retry_max_s
        await until(lambda: host.nodes_silent == 1, 30, "junk silent")
        pub.publish("spBv1.0/g/DDATA/real/d1", _birth(4, []), qos=1)  # junk forgotten: d1's birth asked
        await until(lambda: "real" in asked, 30, "d1's birth asked")
        pub.publish("spBv1.0/g/NBIRTH/real", _birth(0, bd0), qos=1)  # the answer
        pub.publish("spBv1.0/g/DBIRTH/real/d0", _birth(1, []), qos=1)
        pub.publish("spBv1.0/g/DBIRTH/real/d1", _birth(2, []), qos=1)
        await until(lambda: host.device_alive("g", "real", "d1"), 30, "d1 born")
        assert host.device_alive("g", "quiet", "d0") and ("g", "junk") not in host._nodes
        assert host.nodes_silent == 1 and host.nodes_forgotten == 1, src.notices.counts  # quiet never silent
        assert "junk" in src.notices.messages["born_nodes_forgotten"]
