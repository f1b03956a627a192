"""The metrics a Sparkplug source's nodes hold together, against valid births under made-up node names through a
real Mosquitto: each node was held to MAX_NODE_METRICS and the table to MAX_NODES, nothing held the total, and
NBIRTHs of 99,000 metrics under made-up names took ~660 bytes a metric (20 of them: 1.3 GB). Now the total is held
to MAX_TOTAL_METRICS (made small here): births-only nodes make room first, a node sending data is kept, and a birth
no room can be made for is refused (too_many_total_metrics)."""

from __future__ import annotations

import functools
import time

from devices.mqtt import sparkplug_host
from protocols import sparkplug as sp
from tests.integration.test_sparkplug_compressed import _compressed
from tests.integration.test_sparkplug_node_table import restart_amid_a_birth
from tests.integration.test_sparkplug_rebirth_requests import _birth as _padded_birth
from tests.integration.test_sparkplug_rebirth_requests import _host
from tests.support.sparkplug_pb import pb_metric as _metric
from tests.support.waits import until

D = sp.DataType


def _birth(n: int = 9) -> bytes:
    metrics = [sp.Metric("bdSeq", None, D.INT64, 0)]
    metrics += [sp.Metric(f"M{i}", None, D.DOUBLE, float(i)) for i in range(n)]
    return sp.encode(sp.Payload(int(time.time() * 1000), 0, metrics))


def _data(seq: int) -> bytes:
    return sp.encode(sp.Payload(int(time.time() * 1000), seq, [sp.Metric("M0", None, D.DOUBLE, 5.0)]))


def _held(host) -> int:
    return sum(len(n.types) for n in host._nodes.values())


async def test_births_under_made_up_names_forget_each_other_not_a_node_sending_data(mosquitto, monkeypatch):
    # raising=False: the former code, which this test is checked against, has no MAX_TOTAL_METRICS
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_METRICS", 30, raising=False)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/real", _birth(), qos=1)
        pub.publish("spBv1.0/g/NDATA/real", _data(1), qos=1)
        await until(lambda: host.node_alive("g", "real") and host.births == 1, 30, "the real node's birth")
        for i in range(10):  # valid births of 10 metrics each, under made-up names
            pub.publish(f"spBv1.0/g/NBIRTH/fake{i}", _birth(), qos=1)
        await until(lambda: host.node_alive("g", "fake9"), 30, "the made-up births read")
        assert _held(host) <= 30, _held(host)
        assert host.node_alive("g", "real") and host.datatype("g", "real", None, "M8") == D.DOUBLE
        assert host.born_forgotten == 8 and not host.node_alive("g", "fake0"), host.born_forgotten
        assert "MAX_TOTAL_METRICS" in src.notices.messages["born_nodes_forgotten"]
        pub.publish("spBv1.0/g/NDATA/real", _data(2), qos=1)  # its data read as before
        pub.publish("spBv1.0/g/NDATA/fake0", _data(1), qos=1)  # forgotten: asked its birth, counted
        await until(lambda: host.data_before_birth == 1, 30, "the forgotten node's data handled")
        assert host.node_alive("g", "real") and host.data_before_birth == 1


async def test_a_birth_no_room_can_be_made_for_is_refused_and_said(mosquitto, monkeypatch):
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_METRICS", 25, raising=False)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        for name in ("a", "b"):  # real nodes sending data: never forgotten for a new name
            pub.publish(f"spBv1.0/g/NBIRTH/{name}", _birth(), qos=1)
            pub.publish(f"spBv1.0/g/NDATA/{name}", _data(1), qos=1)
        pub.publish("spBv1.0/g/NBIRTH/fake", _birth(), qos=1)
        pub.publish("spBv1.0/g/NDATA/fake", _data(1), qos=1)
        await until(lambda: host.data_before_birth >= 1, 30, "the made-up node's data handled")
        assert not host.node_alive("g", "fake") and host.births == 2, host.births
        assert host.node_alive("g", "a") and host.node_alive("g", "b")
        assert _held(host) <= 25, _held(host)
        assert src.notices.counts.get("too_many_total_metrics") == 1 == host.births_refused, (
            src.notices.counts
        )
        said = src.notices.messages["too_many_total_metrics"]
        assert "g/fake" in said and "25" in said, said
        assert host.data_before_birth == 1  # its data skipped, as before a birth


async def test_data_by_names_no_birth_declared_keeps_no_last_value_past_the_total(mosquitto, monkeypatch):
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_METRICS", 30, raising=False)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/n", _birth(), qos=1)
        metrics = [
            sp.Metric(f"New{i}", None, D.DOUBLE, 1.0) for i in range(40)
        ]  # names its birth did not declare
        pub.publish("spBv1.0/g/NDATA/n", sp.encode(sp.Payload(int(time.time() * 1000), 1, metrics)), qos=1)
        await until(
            lambda: host.node_alive("g", "n") and "too_many_total_metrics" in src.notices.counts, 30, "said"
        )
        assert sum(len(n.last) for n in host._nodes.values()) <= 30
        assert "g/n/New" in src.notices.messages["too_many_total_metrics"], src.notices.messages


def _template_birth(members: int, *, definition: bool) -> bytes:
    """An NBIRTH of two metrics, bdSeq and a Template of ``members`` members: its definition, or an instance."""
    b = sp._pb().Payload()
    b.timestamp, b.seq = int(time.time() * 1000), 0
    _metric(b, "bdSeq", datatype=D.INT64, long_value=0)
    t = b.metrics.add()
    t.name, t.datatype = "Motor", D.TEMPLATE
    t.template_value.is_definition = definition
    if not definition:
        t.template_value.template_ref = "Motor"
    for i in range(members):
        _metric(t.template_value, f"m{i}", datatype=D.DOUBLE, double_value=1.0)
    return b.SerializeToString()


def _handled(host, births: int) -> bool:
    return bool(host.births + host.births_refused == births)


def _kept(host) -> int:
    """The metrics the nodes keep: datatypes (a Template instance's members each) and definitions' members."""
    return sum(len(n.types) + sum(len(d) for d in n.templates.values()) for n in host._nodes.values())


async def test_template_members_count_toward_the_total_as_the_birth_declares_them(mosquitto, monkeypatch):
    """A birth was judged against MAX_TOTAL_METRICS by its top-level metrics: one of two whose Template instance
    expands to 99,000 members passed with the source's nodes at 499,999 (594,012 held against Mosquitto), and the
    members of its Template definitions were never counted at all (30 NBIRTHs of one 99,000-member definition
    under made-up names: 2,970,060 entries kept, 60 counted, 379 MB). Now every member counts, as the birth is
    judged and as it is held: made-up births make room for each other, the node sending data is kept."""
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_METRICS", 40)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/real", _birth(), qos=1)  # 10 metrics
        pub.publish("spBv1.0/g/NDATA/real", _data(1), qos=1)
        await until(lambda: host.node_alive("g", "real") and host.births == 1, 30, "the real node's birth")
        for i in range(6):  # definitions of 20 members, then instances of 20 members: 22 metrics each
            pub.publish(f"spBv1.0/g/NBIRTH/fake{i}", _template_birth(20, definition=i < 3), qos=1)
            await until(functools.partial(_handled, host, i + 2), 30, f"fake{i}'s birth handled")
            assert _kept(host) <= 40, (i, _kept(host))
        assert (
            host.node_alive("g", "fake5")
            and host.template_member("g", "fake5", None, "Motor/m19") is not None
        )
        assert host.node_alive("g", "real") and host.datatype("g", "real", None, "M8") == D.DOUBLE
        assert host.born_forgotten == 5, host.born_forgotten


def _skipped_or_read(host, before: int) -> bool:
    return bool(host.births + host.births_skipped > before)


async def test_nodes_not_born_that_hold_metrics_make_room_for_a_real_nodes_birth(mosquitto, monkeypatch):
    """Made-up names each sending a valid NBIRTH and then compressed ones the births' inflate budget skips are not
    born, and hold the metrics of their last birth read. Under MAX_TOTAL_METRICS only dead and born nodes made
    room, so such nodes held the total for good (5 names of 99,990 metrics: 499,952 held, a real node's birth of
    51 refused, too_many_total_metrics; given up on, a day later, they still were not forgotten). Now nodes not
    born that hold metrics (given up on, or a birth skipped and never spoke) make room first."""
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_METRICS", 30)
    async with _host(
        mosquitto.port,
        "spBv1.0/g/NCMD/+",
        max_message_bytes=256 * 1024,
        sparkplug={"max_inflated_bytes_per_s": 4096},
    ) as (src, asked, pub):
        host = src.sparkplug
        compressed = _compressed(_padded_birth(0, 64 * 1024))  # 64 KiB inflated: 16 s of a node's budget
        for i in range(3):
            name = f"fake{i}"
            pub.publish(f"spBv1.0/g/NBIRTH/{name}", _birth(), qos=1)  # 10 metrics
            await until(functools.partial(host.node_alive, "g", name), 30, f"{name}'s birth read")
            for _ in range(10):  # until one is skipped: not born, its last birth's metrics held
                before = host.births + host.births_skipped
                pub.publish(f"spBv1.0/g/NBIRTH/{name}", compressed, qos=1)
                await until(functools.partial(_skipped_or_read, host, before), 30, f"{name}'s birth handled")
                if not host.node_alive("g", name):
                    break
            assert not host.node_alive("g", name)
        assert host._held == 30, host._held
        pub.publish("spBv1.0/g/NBIRTH/real", _birth(), qos=1)
        pub.publish("spBv1.0/g/NDATA/real", _data(1), qos=1)
        await until(lambda: host.node_alive("g", "real"), 30, "the real node's birth read")
        assert host.births_refused == 0 and "too_many_total_metrics" not in src.notices.counts, (
            src.notices.counts
        )
        assert ("g", "fake0") not in host._nodes and (
            "g",
            "fake2",
        ) in host._nodes  # least recently heard first
        assert host._held <= 30, host._held
        assert "not born" in src.notices.messages["nodes_forgotten"], src.notices.messages["nodes_forgotten"]


async def test_a_born_devices_birth_refused_at_the_total_counts_its_name_no_more(mosquitto, monkeypatch):
    """A born device's DBIRTH refused at MAX_TOTAL_METRICS leaves it not born, its name held in one place less; the
    device names' total (MAX_TOTAL_DEVICES) counted it still, one too many, until its node's next change."""
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_METRICS", 15, raising=False)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        pub.publish("spBv1.0/g/NBIRTH/a", _birth(), qos=1)  # 10 metrics
        pub.publish("spBv1.0/g/NDATA/a", _data(1), qos=1)  # a node that speaks: no room made of it
        for seq, n in ((2, 1), (3, 9)):  # d born with 1 metric, then again with 9: past 15, refused
            metrics = [sp.Metric(f"V{i}", None, D.DOUBLE, 1.0) for i in range(n)]
            pub.publish(
                "spBv1.0/g/DBIRTH/a/d", sp.encode(sp.Payload(int(time.time() * 1000), seq, metrics)), qos=1
            )
        await until(lambda: host.births_refused == 1, 30, "the second birth refused")
        node = host._nodes[("g", "a")]
        assert not host.device_alive("g", "a", "d")
        held = len(node.devices) + len(node.named) + len(node.named_before) + len(node.expected)
        assert node.names_held == held == host._names, (node.names_held, held)  # before: 2, 1


async def test_a_node_restarting_at_the_total_is_not_forgotten_for_another_nodes_birth_before_its_dbirths(
    mosquitto, monkeypatch
):
    """Between a node's NBIRTH and its devices' DBIRTHs it has sent births only: at MAX_TOTAL_METRICS another
    node's birth then took its room, the restarting node forgotten and its DBIRTH read as before its birth. A
    births-only node heard within REBORN_DEVICES_WAIT_S that awaits devices of its session before is kept; the
    other birth is refused (a flood's births declaring no device still make room of each other, above)."""
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_METRICS", 25, raising=False)
    async with _host(mosquitto.port, "spBv1.0/g/NCMD/+") as (src, asked, pub):
        host = src.sparkplug
        restart_amid_a_birth(pub, _birth(), _birth(), _data)
        await until(
            lambda: host.births + host.births_refused + host.data_before_birth >= 6, 30, "every birth handled"
        )
        assert host.device_alive("g", "r", "d") and asked == [], src.notices.counts  # before: r forgotten
        assert not host.node_alive("g", "x") and host.births_refused == 1
