"""Sparkplug B host state machine (pure, no broker): births, aliases, seq gaps, deaths, rebirth requests."""

import math
import struct

import pytest

from devices.base import Quality
from devices.mqtt import sparkplug_host
from devices.mqtt.settings import SparkplugHostSettings
from devices.mqtt.sparkplug_host import SparkplugHost
from protocols import sparkplug as sp
from tests.support.shifted_clock import ShiftedClock
from tests.support.sparkplug_pb import pb_metric

D = sp.DataType


def host(**kw):
    sent, errors = [], []
    h = SparkplugHost(
        "src", SparkplugHostSettings(**kw), lambda t, b: sent.append((t, b)), lambda r, d: errors.append(r)
    )
    return h, sent, errors


def birth(h, bd=0):
    nb = sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, bd), sp.Metric("uptime", 1, D.DOUBLE, 1.0)])
    db = sp.Payload(1000, 1, [sp.Metric("current", 10, D.DOUBLE, 4.0)])
    return h.handle("spBv1.0/g/NBIRTH/n", sp.encode(nb), 1.0) + h.handle(
        "spBv1.0/g/DBIRTH/n/m", sp.encode(db), 1.0
    )


def ddata(h, seq, alias=10, value=5.0):
    return h.handle(
        "spBv1.0/g/DDATA/n/m",
        sp.encode(sp.Payload(2000, seq, [sp.Metric(None, alias, D.DOUBLE, value)])),
        2.0,
    )


def test_birth_values_and_aliased_data_become_named_tags():
    h, _, _ = host()
    assert [(r.tag, r.value) for r in birth(h)] == [("n/uptime", 1.0), ("n/m/current", 4.0)]
    (r,) = ddata(h, 2)
    assert (r.tag, r.value, r.timestamp, r.quality) == ("n/m/current", 5.0, 2.0, Quality.GOOD)


def test_tag_map_renames_tags():
    h, _, _ = host(tag_map={"n/m/current": "motor_current"})
    birth(h)
    assert ddata(h, 2)[0].tag == "motor_current"


def test_seq_gap_is_counted_but_data_kept():
    h, _, errors = host()
    birth(h)
    assert len(ddata(h, 7)) == 1
    assert errors == ["seq_gap"]


def test_seq_wraps_from_255_to_0_without_gap():
    h, _, errors = host()
    birth(h)
    for seq in list(range(2, 256)) + [0, 1]:
        ddata(h, seq)
    assert errors == []


def test_unknown_alias_requests_one_rebirth_per_interval():
    h, sent, errors = host(rebirth_min_interval_s=60)
    birth(h)
    assert ddata(h, 2, alias=99) == [] and ddata(h, 3, alias=98) == []
    assert errors == ["unknown_alias", "unknown_alias"]
    assert [t for t, _ in sent] == ["spBv1.0/g/NCMD/n"]


def test_ndeath_marks_last_values_bad_and_stale_death_is_ignored():
    h, _, _ = host()
    birth(h, bd=3)
    stale = h.handle("spBv1.0/g/NDEATH/n", sp.death_payload(2), 3.0)
    assert stale == [] and h.node_alive("g", "n")
    dead = h.handle("spBv1.0/g/NDEATH/n", sp.death_payload(3), 3.0)
    assert {(r.tag, r.value, r.quality) for r in dead} == {
        ("n/uptime", 1.0, Quality.BAD),
        ("n/m/current", 4.0, Quality.BAD),
    }
    assert not h.node_alive("g", "n")


def test_ddeath_marks_only_that_device_bad():
    h, _, _ = host()
    birth(h)
    dead = h.handle("spBv1.0/g/DDEATH/n/m", sp.encode(sp.Payload(3, 2)), 3.0)
    assert [(r.tag, r.quality) for r in dead] == [("n/m/current", Quality.BAD)]


def test_a_nan_metric_is_counted_and_makes_its_tag_bad():
    """An open thermocouple a node sends as NaN: the tag's reading is BAD (as on OPC UA), not skipped with
    the last value left GOOD; ``non_finite="skip"`` keeps the former way (no reading). Counted either way."""
    h, _, errors = host()
    birth(h)
    (r,) = ddata(h, 2, value=float("inf"))
    assert (r.tag, r.value, r.quality) == ("n/m/current", float("inf"), Quality.BAD)
    assert errors == ["non_finite"]
    (r,) = ddata(h, 3, value=6.0)
    assert (r.value, r.quality) == (6.0, Quality.GOOD)
    sent, skipped = [], []
    h = SparkplugHost(
        "src",
        SparkplugHostSettings(),
        lambda t, b: sent.append(t),
        lambda r, d: skipped.append(r),
        non_finite="skip",
    )
    birth(h)
    assert ddata(h, 2, value=float("nan")) == []
    assert skipped == ["non_finite"]


def test_a_float_array_holding_nan_is_a_bad_reading_of_its_tag():
    h, _, errors = host()
    nb = sp._pb().Payload.FromString(sp.encode(sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0)])))
    wave = nb.metrics.add()
    wave.name, wave.alias, wave.datatype = "Vib", 2, 31  # DoubleArray
    wave.bytes_value = struct.pack("<3d", 1.0, float("nan"), 2.0)
    (r,) = h.handle("spBv1.0/g/NBIRTH/n", nb.SerializeToString(), 1.0)
    assert r.tag == "n/Vib" and r.quality is Quality.BAD and r.value[0] == 1.0 and r.value.size == 3
    assert errors == ["non_finite"]


def test_template_members_go_bad_on_death_and_a_tag_map_names_them():
    h, _, _ = host(tag_map={"n/m/Pump/Flow": "pump_flow"})
    birth(h)
    pump = sp.Template(
        [sp.Metric("Flow", None, D.DOUBLE, 3.5), sp.Metric("On", None, D.BOOLEAN, True)], ref="Pump"
    )
    db = sp.Payload(1500, 2, [sp.Metric("Pump", 20, D.TEMPLATE, pump)])
    got = h.handle("spBv1.0/g/DBIRTH/n/m", sp.encode(db), 1.5)
    assert [(r.tag, r.value) for r in got] == [("pump_flow", 3.5), ("n/m/Pump/On", True)]
    dead = h.handle("spBv1.0/g/DDEATH/n/m", sp.encode(sp.Payload(1600, 3, [])), 1.6)
    assert {r.tag for r in dead if r.quality is Quality.BAD} == {"n/m/current", "pump_flow", "n/m/Pump/On"}


def test_edge_node_names_from_the_outside_world_are_bounded(monkeypatch):
    """A publisher inventing node names (a bug, or hostile) must not grow the host's memory for months:
    past MAX_NODES, births of new names take the places of the made-up ones born before them (births only,
    said once), never of a node that sends data; known nodes keep being served."""
    from devices.mqtt import sparkplug_host

    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 3)
    h, _, _ = host()
    notes: list = []
    h.on_notice = lambda key, msg, n=1: notes.append((key, msg))
    birth(h)
    assert [r.value for r in ddata(h, 2)] == [5.0]
    for i in range(10):
        nb = sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("x", 1, D.DOUBLE, 1.0)])
        h.handle(f"spBv1.0/g/NBIRTH/spam{i}", sp.encode(nb), 1.0)
    assert len(h._nodes) == 3 and h.born_forgotten == 8
    assert notes and notes[0][0] == "born_nodes_forgotten" and "g/spam0, born, forgotten" in notes[0][1]
    assert [r.value for r in ddata(h, 3)] == [5.0]  # the first node is still served


def test_after_this_hosts_reconnect_every_node_is_asked_a_rebirth_and_its_data_waits_for_it():
    h, sent, errors = host()
    birth(h)
    ddata(h, 2, alias=99)  # an unknown alias: a rebirth asked just now (then the connection dropped)
    assert len(sent) == 1
    h.session_lost()  # asked again at once, the per-node interval notwithstanding: the first may be lost
    assert [t for t, _ in sent] == ["spBv1.0/g/NCMD/n", "spBv1.0/g/NCMD/n"]
    assert not h.node_alive("g", "n") and not h.device_alive("g", "n", "m")
    assert ddata(h, 3) == [] and h.data_before_birth == 1  # the old birth's alias 10 is not trusted
    assert [r.tag for r in birth(h, bd=1)] == ["n/uptime", "n/m/current"]
    assert h.device_alive("g", "n", "m") and [r.value for r in ddata(h, 2)] == [5.0]


def test_a_lost_connection_makes_live_nodes_tags_bad_once_at_the_drop_or_else_at_the_reconnect():
    """The drop marks a live node's tags BAD (connection_lost), its live devices' too, stamped no earlier than
    their last values; the reconnect (``session_lost``) marks them no second time, but does mark those of a node
    read since the drop (what the lost connection brought, read after it), whose data waits for its birth."""
    h, _, _ = host()
    birth(h)
    ddata(h, 2)  # stamped 2.0 by the node
    lost = h.connection_lost()
    assert [(r.tag, r.value, r.quality, r.reason) for r in lost] == [
        ("n/uptime", 1.0, Quality.BAD, "connection_lost"),
        ("n/m/current", 5.0, Quality.BAD, "connection_lost"),
    ]
    assert all(r.timestamp >= 2.0 for r in lost)
    h.session_lost()
    assert h.take_stale() == []  # BAD already
    birth(h, bd=1)
    ddata(h, 2, value=6.0)
    node_ts = 4e9  # the node's clock far ahead of the gateway's
    h.handle(
        "spBv1.0/g/DDATA/n/m",
        sp.encode(sp.Payload(int(node_ts * 1000), 3, [sp.Metric(None, 10, D.DOUBLE, 7.0)])),
        3,
    )
    h.session_lost()  # no drop marked first
    stale = h.take_stale()
    assert [(r.tag, r.value, r.reason) for r in stale] == [
        ("n/uptime", 1.0, "connection_lost"),
        ("n/m/current", 7.0, "connection_lost"),
    ]
    assert stale[1].timestamp == node_ts
    assert h.connection_lost() == []  # not born now: nothing more


def test_a_node_whose_seq_never_follows_is_asked_one_rebirth_not_one_at_every_birth():
    """A seq gap asks a rebirth (a lost message's change); a node whose seq is broken (counts past 255,
    or jumps) would then be asked again after every birth that answers it: asked once, until it sends a
    message in sequence again. A repeated seq (a redelivery) lost nothing and asks nothing."""
    h, sent, errors = host(rebirth_min_interval_s=0)
    birth(h)
    ddata(h, 2)
    ddata(h, 2)  # a repeat
    assert sent == []
    ddata(h, 300)  # a gap after messages in sequence: asked
    assert len(sent) == 1
    for _ in range(5):  # the node answers with births, each followed by its broken seq: not asked again
        birth(h)
        ddata(h, 300)
    assert len(sent) == 1
    birth(h)
    ddata(h, 2)  # in sequence again: a later gap is a lost message, asked
    ddata(h, 9)
    assert len(sent) == 2 and errors.count("seq_gap") == 8


def test_the_will_after_a_nodes_own_ndeath_is_the_same_death_not_a_second_one():
    """Sparkplug 3.0 (Edge Node Session Termination): a node that sends its NDEATH and drops the connection
    without a DISCONNECT gets its will delivered too, with the same bdSeq, which a host MUST ignore. Before,
    it counted a second death and marked every tag BAD again."""
    h, _, _ = host()
    birth(h, bd=4)
    assert len(h.handle("spBv1.0/g/NDEATH/n", sp.death_payload(4), 3.0)) == 2
    assert h.handle("spBv1.0/g/NDEATH/n", sp.death_payload(4), 4.0) == [] and h.deaths == 1
    birth(h, bd=5)  # the next session's death is a death again
    assert len(h.handle("spBv1.0/g/NDEATH/n", sp.death_payload(5), 5.0)) == 2 and h.deaths == 2


def test_a_dataset_column_is_named_by_tag_map_and_a_key_starting_with_the_group_is_said():
    """A DataSet's tags are its columns', ``{metric}/{column}``: a tag_map key names one, and a key written
    with the group in front (renaming nothing) is said, as for any metric."""
    h, _, _ = host(tag_map={"n/Strokes/Pos": "stroke_pos", "g/n/Strokes/Force": "stroke_force"})
    notes: list = []
    h.on_notice = lambda key, msg, n=1: notes.append(key)
    ds = sp.DataSet(["Pos", "Force"], [D.INT32, D.DOUBLE], [[1, 0.5]])
    nb = sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("Strokes", 1, D.DATASET, ds)])
    got = h.handle("spBv1.0/g/NBIRTH/n", sp.encode(nb), 1.0)
    assert [(r.tag, r.value.tolist()) for r in got] == [("stroke_pos", [1]), ("n/Strokes/Force", [0.5])]
    assert notes == ["tag_map:g/n/Strokes/Force"]


def test_a_waveform_holding_nan_sent_again_by_a_rebirth_is_not_passed_on_twice():
    """A birth answering a rebirth carries each array's last samples with their time: they are not passed
    on again. NaN is not equal to itself, so an array holding one (a DoubleArray with a dropped sample, a
    DataSet's empty Float cell) came again, and a pipeline scored the same samples twice."""
    h, _, _ = host()
    ds = sp.DataSet(["Force"], [D.FLOAT], [[None], [1.5]])
    nb = sp._pb().Payload.FromString(
        sp.encode(
            sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("S", 1, D.DATASET, ds)])
        )
    )
    wave = nb.metrics.add()
    wave.name, wave.alias, wave.datatype = "Vib", 2, 31  # DoubleArray: little-endian float64s
    wave.bytes_value = struct.pack("<2d", float("nan"), 2.0)
    first = h.handle("spBv1.0/g/NBIRTH/n", nb.SerializeToString(), 1.0)
    again = h.handle("spBv1.0/g/NBIRTH/n", nb.SerializeToString(), 2.0)
    assert [r.tag for r in first] == ["n/S/Force", "n/Vib"]
    assert again == []


def _compressed_ndata(seq: int, inflated: int) -> bytes:
    import zlib

    inner = sp._pb().Payload()
    inner.ParseFromString(sp.encode(sp.Payload(2000, seq, [sp.Metric(None, 1, D.DOUBLE, float(seq))])))
    inner.body = b"\0" * inflated
    out = sp._pb().Payload()
    out.uuid, out.seq, out.body = sp.COMPRESSED_UUID, seq, zlib.compress(inner.SerializeToString())
    return out.SerializeToString()


def test_each_node_has_its_own_inflate_budget_and_many_nodes_are_held_to_the_sources_total(monkeypatch):
    """A node flooding compressed data spends its own budget (max_inflated_bytes_per_s), not its neighbours';
    nodes together are held to INFLATE_TOTAL_NODES times it, so many hostile nodes (or names) do not multiply
    what the loop spends inflating; the message says which budget is spent. Budgets are kept for at most
    MAX_NODES nodes."""
    import devices.mqtt.sparkplug_host as host_mod
    from protocols.json_codec import CodecError

    h, _, _ = host(max_inflated_bytes_per_s=1000)  # a total of 4000 a second
    for i in range(6):
        nb = sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("t", 1, D.DOUBLE, 0.0)])
        h.handle(f"spBv1.0/g/NBIRTH/n{i}", sp.encode(nb), 1.0)

    def ndata(node: int, seq: int, inflated: int) -> str:
        try:
            h.handle(f"spBv1.0/g/NDATA/n{node}", _compressed_ndata(seq, inflated), 2.0)
        except CodecError as e:
            assert e.reason == "inflate_budget"
            return e.detail
        return "read"

    # n0 spends its 1000 bytes and goes into debt by about 3 s: its own budget is spent ...
    assert ndata(0, 1, 900) == "read" and ndata(0, 2, 2900) == "read"
    assert "edge node g/n0's" in ndata(0, 3, 10)
    assert ndata(1, 1, 10) == "read"  # ... not its neighbour's, read on its own budget
    # n1's budget had some left: its 20 KB are read, and the nodes together (about 24 KB) have spent the
    # total by 5 s: a third node, which has its whole budget, waits as well
    assert ndata(1, 2, 20_000) == "read"
    detail = ndata(2, 1, 10)
    assert "together" in detail and "4 x max_inflated_bytes_per_s (4000 bytes a second)" in detail
    monkeypatch.setattr(host_mod, "MAX_NODES", 3)  # budgets of ever new names do not grow the memory
    for i in range(
        6, 12
    ):  # nodes never born: their data is inflated (on their own budget) before it is known
        ndata(i, 1, 10)
    assert len(h._inflate_budgets) == 3


def _compressed(payload: sp.Payload, inflated: int = 0) -> bytes:
    import zlib

    inner = sp._pb().Payload()
    inner.ParseFromString(sp.encode(payload))
    inner.body = b"\0" * inflated
    out = sp._pb().Payload()
    out.uuid, out.body = sp.COMPRESSED_UUID, zlib.compress(inner.SerializeToString())
    if payload.seq is not None:
        out.seq = payload.seq
    return out.SerializeToString()


def test_a_node_storming_compressed_births_and_deaths_does_not_starve_other_nodes_data():
    """Before, births and deaths were inflated whatever the budget and charged to their node's budget and to
    the source's total, which other nodes' data is read on: one node sending compressed NBIRTHs in a loop (or
    large compressed deaths) spent the total, and every other node's compressed NDATA was inflate_budget.
    Now births and deaths have budgets of their own (per node, and 4 times it in total): a birth past its
    node's spent one is skipped (inflate_budget), the node stale (its tags BAD once, its data
    data_before_birth) and no rebirth asked while its answer would be skipped too; a death is always read, its
    inflating bounded by DEATH_MAX_INFLATED (past it a death all the same); other nodes' data is read on."""
    from protocols.json_codec import CodecError

    h, sent, errors = host(max_inflated_bytes_per_s=1000)  # births' debt paid back in about 20 s
    calm = sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("t", 1, D.DOUBLE, 0.0)])
    assert len(h.handle("spBv1.0/g/NBIRTH/calm", _compressed(calm), 1.0)) == 1

    def storm_birth(step: int) -> list:
        nb = sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("step", 1, D.DOUBLE, step)])
        return h.handle("spBv1.0/g/NBIRTH/storm", _compressed(nb, 20_000), 1.0)

    def calm_data(seq: int) -> list:
        try:
            return h.handle("spBv1.0/g/NDATA/calm", _compressed_ndata(seq, 10), 2.0)
        except CodecError as e:
            return [e.reason]

    assert [(r.value, r.quality) for r in storm_birth(0)] == [(0.0, Quality.GOOD)]  # read: some budget left
    assert [(r.value, r.quality) for r in storm_birth(1)] == [(0.0, Quality.BAD)]  # skipped: stale, BAD once
    for step in range(2, 20):
        assert storm_birth(step) == []
        assert [r.value for r in calm_data(step - 1)] == [float(step - 1)]
    assert errors == ["inflate_budget"] * 19 and h.births_skipped == 19
    # its data while stale: data_before_birth, and no rebirth asked while its answer would be skipped too
    plain = sp.Payload(2000, 1, [sp.Metric(None, 1, D.DOUBLE, 5.0)])
    assert h.handle("spBv1.0/g/NDATA/storm", sp.encode(plain), 2.0) == []
    assert h.data_before_birth == 1 and sent == [] and h.rebirths_requested == 0
    # a death is always read: one while its node's births budget is spent is not inflated (it would drive the
    # total, the other nodes' births, into debt), a death all the same
    death = sp.Payload(None, None, [sp.Metric("bdSeq", None, D.INT64, 0)])
    h.handle("spBv1.0/g/NDEATH/storm", _compressed(death, 1024 * 1024), 3.0)
    assert h.deaths == 1 and errors[-1] == "inflate_budget"
    assert [r.value for r in calm_data(20)] == [20.0]  # the calm node's data is read on
    # bounded: one inflating past DEATH_MAX_INFLATED (64 KiB) is a death all the same
    assert [r.quality for r in h.handle("spBv1.0/g/NDEATH/calm", _compressed(death, 1024 * 1024), 3.0)] == [
        Quality.BAD
    ]
    assert h.deaths == 2 and errors[-1] == "too_large"


def test_every_way_a_node_is_unknown_asks_one_rebirth_per_interval_the_later_ones_waiting_not_dropped():
    """A DBIRTH before its NBIRTH, data before birth, a retained NBIRTH (the broker's copy, of unknown age),
    an unknown alias and a seq gap, all within one rebirth_min_interval_s: one request. Before, the retained
    birth asked again whatever the interval, and a cause within the interval was dropped: a seq gap after a
    birth answered went unasked until the next one. Now the later causes wait and are asked once when the
    interval has passed (``tick``); a death with another bdSeq (an older session's will) is ignored and asks
    nothing; once the node's NDEATH is read it is asked nothing more."""
    import time

    # asked once: a node that does not answer is asked again after rebirth_retry_s (tested in
    # tests/integration/test_sparkplug_rebirth_requests.py), off here
    h, sent, errors = host(rebirth_min_interval_s=60, rebirth_retry_s=0)
    db = sp.Payload(1000, 1, [sp.Metric("current", 10, D.DOUBLE, 4.0)])
    assert h.handle("spBv1.0/g/DBIRTH/n/m", sp.encode(db), 1.0) == []  # before its NBIRTH: asked
    assert len(sent) == 1
    assert ddata(h, 2) == []  # data before birth: waits
    nb = sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 3), sp.Metric("uptime", 1, D.DOUBLE, 1.0)])
    h.retained = True
    h.handle("spBv1.0/g/NBIRTH/n", sp.encode(nb), 1.0)  # retained: its aliases learnt, a rebirth wanted
    h.retained = False
    h.handle("spBv1.0/g/DBIRTH/n/m", sp.encode(db), 1.0)
    assert ddata(h, 2, alias=99) == []  # an unknown alias
    assert len(ddata(h, 9)) == 1  # a seq gap
    assert h.handle("spBv1.0/g/NDEATH/n", sp.death_payload(2), 3.0) == []  # an older session's will
    assert len(sent) == 1 and h.rebirths_requested == 1  # before: 2 (the retained birth's, at once)
    now = time.monotonic()
    assert h.tick(now + 30) == 0  # within the interval: still waiting
    assert h.tick(now + 61) == 1 and len(sent) == 2  # once the interval has passed: asked once
    assert h.tick(now + 200) == 0
    assert ddata(h, 10, alias=98) == []  # another unknown alias (a rebirth waits), then its death
    assert h.handle("spBv1.0/g/NDEATH/n", sp.death_payload(3), 3.0) != []
    assert h.tick(now + 400) == 0 and len(sent) == 2  # a dead node is asked nothing
    assert errors.count("seq_gap") == 1 and errors.count("unknown_alias") == 2


def test_a_node_rebirth_that_names_two_points_as_one_tag_makes_its_value_read_before_bad():
    # the metric M1/Speed read GOOD at 5; the node's next birth adds Template M1 whose member Speed names the same
    # tag: neither point is read from then on, and the 5 stood GOOD (a rule or window read it as current)
    h, _, errors = host()
    nb = sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("M1/Speed", 1, D.INT32, 5)])
    assert [(r.tag, r.value, r.quality) for r in h.handle("spBv1.0/g/NBIRTH/n", sp.encode(nb), 1.0)] == [
        ("n/M1/Speed", 5, Quality.GOOD)
    ]
    member = sp.Template([sp.Metric("Speed", None, D.FLOAT, 1.5)], ref="Motor")
    nb = sp.Payload(
        2000,
        0,
        [
            sp.Metric("bdSeq", None, D.INT64, 1),
            sp.Metric("M1/Speed", 1, D.INT32, 6),
            sp.Metric("M1", 2, D.TEMPLATE, member),
        ],
    )
    got = [(r.tag, r.value, r.quality, r.reason) for r in h.handle("spBv1.0/g/NBIRTH/n", sp.encode(nb), 2.0)]
    assert got == [("n/M1/Speed", 5, Quality.BAD, "tag_name_clash")], got
    assert "tag_name_clash" in errors


def test_a_birth_read_changes_births_read_even_after_the_node_was_forgotten(monkeypatch):
    """A waiting NCMD compares births_read to see a birth of its node read between two of its looks. A node born
    once, pushed out of a full table by a new node's birth (born, it sent births only) and born again read 1 as
    before, a per-node count begun again: the birth missed, the device births following it not waited for."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODES", 2)
    h, _, _ = host()

    def nbirth(name: str, bd: int = 0) -> None:
        p = sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, bd), sp.Metric("speed", 8, D.INT32, 1)])
        h.handle(f"spBv1.0/g/NBIRTH/{name}", sp.encode(p), 1.0)

    nbirth("n")
    first = h.births_read("g", "n")
    nbirth("x")
    nbirth("y")  # the table full: n, born and mute, makes room
    assert h.births_read("g", "n") == 0 and h.nodes_forgotten == 1
    nbirth("n", 1)
    second = h.births_read("g", "n")
    assert second not in (0, first)
    nbirth("n", 2)
    assert h.births_read("g", "n") not in (0, first, second)


def test_devices_born_and_dead_again_and_again_under_new_names_keep_the_nodes_device_memory_bounded(
    monkeypatch,
):
    """The devices a node's next birth awaits (dead ones too: they may come back at its restart) are held to
    MAX_NODE_DEVICES: a node whose DBIRTHs and DDEATHs come under ever new device names kept every name until its
    next NBIRTH."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODE_DEVICES", 5)
    h, _, _ = host()
    birth(h)
    for i in range(30):
        h.handle(f"spBv1.0/g/DBIRTH/n/d{i}", sp.encode(sp.Payload(1000, 2 * i + 2, [])), 1.0)
        h.handle(f"spBv1.0/g/DDEATH/n/d{i}", sp.encode(sp.Payload(1000, 2 * i + 3, [])), 1.0)
    node = h._nodes[("g", "n")]
    assert len(node.named) <= 5 and node.named.get("m") is True and node.named.get("d29") is False


class _SharingNode:
    """Node ``g/n`` (speed, setpoint), its device d3 giving valve an alias of the node's (against Sparkplug): what
    an NCMD to it would do now: wait for devices' births (``devices_unborn``), else go by ``alias`` (None: name)."""

    def __init__(self, h: SparkplugHost) -> None:
        self.h, self.seq = h, 0
        self.nbirth(0, 7, 8)
        self.dbirth("d3", "valve", 7)

    @classmethod
    def bare(cls, h: SparkplugHost) -> "_SharingNode":
        """The node not yet born (no device sharing yet)."""
        node = cls.__new__(cls)
        node.h, node.seq = h, 0
        return node

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def nbirth(self, bd: int, speed: int, setpoint: int) -> None:
        self.seq = 0
        metrics = [sp.Metric("bdSeq", None, D.INT64, bd), sp.Metric("speed", speed, D.INT32, 1)]
        metrics.append(sp.Metric("setpoint", setpoint, D.INT32, 1))
        self.h.handle("spBv1.0/g/NBIRTH/n", sp.encode(sp.Payload(1000, 0, metrics)), 1.0)

    def dbirth(self, device: str, metric: str, alias: int) -> None:
        payload = sp.Payload(1000, self._next(), [sp.Metric(metric, alias, D.INT32, 0)])
        self.h.handle(f"spBv1.0/g/DBIRTH/n/{device}", sp.encode(payload), 1.0)

    def ddeath(self, device: str) -> None:
        self.h.handle(f"spBv1.0/g/DDEATH/n/{device}", sp.encode(sp.Payload(1000, self._next(), [])), 1.0)

    def command(self, metric: str = "speed", device: str | None = None) -> object:
        return self.h.devices_unborn("g", "n") or self.h.alias("g", "n", device, metric)


def test_a_node_sharing_aliases_goes_by_name_alone_past_its_devices_bound_never_by_a_forgotten_devices_alias(
    monkeypatch,
):
    """Past MAX_NODE_DEVICES the devices a node's next birth awaits were cut to those born since its last birth (at
    the NBIRTH), or its dead devices forgotten (at a new device's DBIRTH): a forgotten d3 born late at the node's
    restart gave its valve the alias an NCMD had just carried (speed 8). Now the node's metrics go by name alone
    until the birth after, counted (too_many_node_devices)."""
    monkeypatch.setattr(sparkplug_host, "MAX_NODE_DEVICES", 2)
    h, _, errors = host()
    node = _SharingNode(h)
    node.nbirth(1, 8, 7)  # d3 awaited
    node.dbirth("a", "x", 50)
    node.dbirth("b", "x", 51)
    node.nbirth(1, 8, 7)  # a rebirth: d3 and a, b: past the bound
    node.dbirth("a", "x", 50)
    node.dbirth("b", "x", 51)
    assert node.command() is None and errors.count("too_many_node_devices") == 1  # before: 8
    h, _, errors = host()
    node = _SharingNode(h)
    node.ddeath("d3")  # said dead (a node shutting down), then devices under new names: d3 forgotten
    node.dbirth("c", "x", 52)
    node.ddeath("c")
    node.dbirth("e", "x", 53)
    h.handle("spBv1.0/g/NDEATH/n", sp.death_payload(0), 1.0)
    node.nbirth(1, 8, 7)
    node.dbirth("e", "x", 53)
    assert node.command() is None and "too_many_node_devices" in errors  # before: 8


def test_a_node_sharing_aliases_goes_by_name_alone_after_a_rebirth_a_reconnect_or_a_device_death_not_its_alias(
    monkeypatch,
):
    """d3 not born within REBORN_DEVICES_WAIT_S of its node's restart: speed by name alone, until a rebirth
    (one asked, or this host's reconnect) answered before d3's late birth, which had speed go by alias 8 again; d3
    said dead while its node lives, then born again: setpoint went by its alias 8 at once. A retained NBIRTH after
    this host's reconnect in d3's wait held every command (5 s, refused) until d3 came or a live NBIRTH did."""
    h, _, _ = host()
    node = _SharingNode(h)
    monkeypatch.setattr(sparkplug_host, "REBORN_DEVICES_WAIT_S", 0.0)
    node.nbirth(1, 8, 7)
    assert node.command() is None  # d3 not back in its wait: by name alone
    node.nbirth(1, 8, 7)
    assert node.command() is None  # before: 8
    h.session_lost()
    node.nbirth(1, 8, 7)
    assert node.command() is None  # before: 8
    node.dbirth("d3", "valve", 100)
    assert node.command() == 8 and node.command("setpoint") == 7
    node.ddeath("d3")
    assert node.command("setpoint") is None  # before: 7
    node.dbirth("d3", "valve", 101)
    assert node.command("setpoint") == 7
    monkeypatch.setattr(sparkplug_host, "REBORN_DEVICES_WAIT_S", 60.0)
    node.nbirth(2, 8, 7)
    h.session_lost()  # in d3's wait
    h.retained = True
    node.nbirth(2, 8, 7)
    h.retained = False
    h.handle("spBv1.0/g/NDATA/n", sp.encode(sp.Payload(1000, 1, [sp.Metric(None, 8, D.INT32, 2)])), 1.0)
    assert node.command() == ["d3"]
    h._nodes[("g", "n")].expected_until -= 60.0  # d3's wait over
    assert node.command() is None  # before: ["d3"] for ever


def test_a_device_command_of_a_node_whose_devices_share_an_alias_goes_by_name_alone_while_one_is_unborn():
    """d3's valve and d4's pump given one alias (against Sparkplug; the node's data by it is read for whichever
    device sends it). After the node's restart, d4 born again and d3 not yet: d3 is awaited, and a DCMD to d4's
    pump went by alias 9, which d3's late birth then gave its valve too."""
    h, _, _ = host()
    node = _SharingNode.bare(h)
    node.nbirth(0, 7, 8)
    node.dbirth("d3", "valve", 9)
    node.dbirth("d4", "pump", 9)
    node.nbirth(1, 7, 8)
    node.dbirth("d4", "pump", 9)
    assert node.command("pump", "d4") == ["d3"]  # before: 9
    node.dbirth("d3", "valve", 9)
    assert node.command("pump", "d4") is None  # the clash read: by name alone
    node.nbirth(2, 7, 8)
    node.dbirth("d3", "valve", 9)
    node.dbirth("d4", "pump", 10)
    assert node.command("pump", "d4") == 10


def test_a_node_sharing_aliases_reborn_while_this_host_was_away_awaits_its_devices_after_its_retained_nbirth():
    """The node (retaining its births) reborn while this host's connection was lost: after the reconnect its
    retained NBIRTH, then a live DBIRTH of another device proving it; speed went at once by alias 8, which d3's
    birth, still to come, may give its valve. Now d3 is awaited as after a live NBIRTH."""
    h, _, _ = host()
    node = _SharingNode(h)
    h.session_lost()
    h.retained = True
    node.nbirth(1, 8, 7)
    h.retained = False
    node.dbirth("d4", "pump", 50)
    assert h.node_alive("g", "n") and node.command() == ["d3"]  # before: 8
    node.dbirth("d3", "valve", 51)
    assert node.command() == 8


def test_a_stale_retained_device_birth_clashing_with_the_nodes_alias_does_not_take_the_node_as_sharing_aliases():
    """A node retaining its births: a device removed long ago left its retained DBIRTH (valve 8, an old map) on the
    broker, read after the retained NBIRTH (setpoint 8) when this host subscribes. An alias clash, but the node was
    taken as one that shares aliases for good: its setpoint went by name alone while a device was said dead, and its
    commands waited for its devices' births after each NBIRTH. A live birth's clash still takes it so."""
    h, _, errors = host()
    node = _SharingNode.bare(h)
    h.retained = True
    node.nbirth(0, 7, 8)
    node.dbirth("d9", "valve", 8)
    h.retained = False
    node.nbirth(0, 7, 8)  # live, answering the rebirth asked
    node.dbirth("d1", "pump", 9)
    node.ddeath("d1")
    assert "alias_collision" in errors and node.command("setpoint") == 8  # before: None
    node.dbirth("d1", "pump", 7)  # live: speed's alias
    node.ddeath("d1")
    assert h.shares_aliases("g", "n") and node.command("setpoint") is None


def test_a_node_sharing_aliases_awaits_after_its_restart_a_device_born_before_a_rebirth_and_late_after_it(
    monkeypatch,
):
    """d3 born in the node's session, then a rebirth (asked: a seq gap) whose DBIRTHs lack d3 past its wait, then
    the node restarts: d3 was forgotten there (a rebirth had emptied the devices born since the last birth), and
    speed went by alias 8, which d3's late birth may give its valve. A device is forgotten only after a whole
    session of its node without its birth: awaited after this restart, kept after the next."""
    h, _, _ = host()
    node = _SharingNode(h)
    node.nbirth(0, 8, 7)  # a rebirth: d3 awaited
    h._nodes[("g", "n")].expected_until = -math.inf  # d3 not back within its wait
    h.handle("spBv1.0/g/NDEATH/n", sp.death_payload(0), 1.0)
    node.nbirth(1, 8, 7)
    assert node.command() == ["d3"]  # before: 8
    h._nodes[("g", "n")].expected_until = -math.inf
    assert node.command() is None
    h.handle("spBv1.0/g/NDEATH/n", sp.death_payload(1), 1.0)
    node.nbirth(2, 8, 7)  # a whole session without d3: forgotten
    assert node.command() == 8


def test_a_node_sharing_aliases_keeps_a_device_away_by_name_through_a_rebirth_whose_compressed_nbirth_was_skipped():
    """d3 not back within its wait after its node's restart: speed by name alone. A rebirth storm: a compressed
    NBIRTH read, the next skipped by the births' inflate budget, then a birth read: taken as a restart (the skip
    left the node not alive), d3 was forgotten and speed went by alias 8, which d3's late birth may give its
    valve. A skip after a death is a restart still: d3 forgotten after a whole session without it."""
    h, _, errors = host(max_inflated_bytes_per_s=1000)
    node = _SharingNode(h)
    h.handle("spBv1.0/g/NDEATH/n", sp.death_payload(0), 1.0)
    node.nbirth(1, 8, 7)
    h._nodes[("g", "n")].expected_until = -math.inf  # d3 not back within its wait
    assert node.command() is None
    rebirth = sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 1), sp.Metric("speed", 8, D.INT32, 1)])
    for _ in range(2):  # the first read (its budget had some left), the second skipped
        h.handle("spBv1.0/g/NBIRTH/n", _compressed(rebirth, 20_000), 1.0)
    assert h.births_skipped == 1 and errors[-1] == "inflate_budget"
    h._nodes[("g", "n")].expected_until = -math.inf  # the next birth read once the budget refilled, past it
    node.nbirth(1, 8, 7)
    assert node.command() is None  # before: 8
    h._nodes[("g", "n")].expected_until = -math.inf
    h.handle("spBv1.0/g/NDEATH/n", sp.death_payload(1), 1.0)
    h.handle("spBv1.0/g/NBIRTH/n", _compressed(rebirth, 20_000), 1.0)  # skipped after a death: a restart
    node.nbirth(2, 8, 7)
    assert h.births_skipped == 2 and node.command() == 8


@pytest.mark.parametrize("pump", [7, 60])
def test_a_device_said_dead_then_an_alias_given_again_by_another_devices_birth_the_nodes_or_the_dead_devices(
    pump,
):
    """d3 born and said dead while its node lives; then d4's birth gives pump an alias already given: speed's (7: the
    node now known to share), or d3's (60: a gateway handing on the aliases a dead device freed: an alias clash
    only). Speed's: setpoint went by alias 8, which d3's birth, when it comes back, may give its valve; now by name
    alone until then. d3's: the node was taken as sharing, its metrics by name alone while d3 was away and its
    commands held for its devices after each NBIRTH; now by their aliases."""
    h, _, errors = host()
    node = _SharingNode.bare(h)
    node.nbirth(0, 7, 8)
    node.dbirth("d3", "valve", 60)
    node.ddeath("d3")
    node.dbirth("d4", "pump", pump)
    assert "alias_collision" in errors and h.shares_aliases("g", "n") is (pump == 7)
    if pump == 7:
        assert node.command("setpoint") is None  # before: 8
        node.dbirth("d3", "valve", 61)
        assert node.command("setpoint") == 8
    else:
        assert node.command("setpoint") == 8  # before: None
        node.nbirth(1, 7, 8)
        assert node.command("setpoint") == 8  # before: ["d4"]


def test_a_birth_whose_seq_0_an_encoder_left_out_has_its_first_data_lost_seen():
    """Proto3 code from Sparkplug's .proto without ``optional`` writes no field at its default, so every NBIRTH of
    such a node (its seq is always 0) comes without one. It was taken as a birth holding no seq: the first data after
    it was checked against nothing, and with its seq 1 lost (a 2 read) the value that message carried stood unseen,
    no rebirth asked. Now it is checked as after 0; a node sending no seq at all is still only said so."""
    pb = sp._pb().Payload()
    pb.timestamp = 1000  # no seq: proto3 leaves out its 0
    for name, alias, datatype, field, value in (
        ("bdSeq", None, D.INT64, "long_value", 0),
        ("T", 1, D.DOUBLE, "double_value", 0.0),
    ):
        m = pb.metrics.add(name=name, datatype=datatype)
        if alias is not None:
            m.alias = alias
        setattr(m, field, value)
    h, sent, errors = host(rebirth_min_interval_s=0)
    h.handle("spBv1.0/g/NBIRTH/n", pb.SerializeToString(), 1.0)
    (r,) = h.handle(
        "spBv1.0/g/NDATA/n", sp.encode(sp.Payload(2000, 2, [sp.Metric(None, 1, D.DOUBLE, 2.0)])), 2.0
    )
    assert r.value == 2.0  # read all the same
    assert errors == ["seq_gap"] and [t for t, _ in sent] == ["spBv1.0/g/NCMD/n"]  # before: [] and []
    h, sent, errors = host(rebirth_min_interval_s=0)
    h.handle("spBv1.0/g/NBIRTH/n", pb.SerializeToString(), 1.0)
    for ts in (2000, 3000):  # a node sending no seq at all: no gap of it, no rebirth
        h.handle(
            "spBv1.0/g/NDATA/n", sp.encode(sp.Payload(ts, None, [sp.Metric(None, 1, D.DOUBLE, 1.0)])), 2.0
        )
    assert errors == ["message_without_seq"] * 2 and sent == []


def test_at_the_device_bound_births_only_nodes_without_devices_do_not_hide_those_holding_names(monkeypatch):
    """At MAX_TOTAL_DEVICES a new device refused asks the births-only nodes holding device names, quiet
    rebirth_retry_max_s, their birth (to free the room of those that do not answer). Only the first ASK_SCAN_MAX
    nodes of the births-only line were looked at, least recently heard first: that many NBIRTHs declaring no device
    ahead of a burst's (made-up names sent first, or a site's quiet device-less nodes) hid it for good, its names held
    for rebirth_give_up_s (a day). Nodes holding no names are now passed over; at most ASK_SCAN_MAX are asked."""

    clock = ShiftedClock()
    monkeypatch.setattr(sparkplug_host, "time", clock)
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_DEVICES", 8)
    monkeypatch.setattr(sparkplug_host, "ASK_SCAN_MAX", 3)
    h, sent, errors = host()
    nbirth = sp.encode(sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0)]))
    for i in range(3):  # births only, no device: ahead of the burst in the line
        h.handle(f"spBv1.0/g/NBIRTH/bare{i}", nbirth, 1.0)
    h.handle("spBv1.0/g/NBIRTH/real", nbirth, 1.0)
    h.handle("spBv1.0/g/DBIRTH/real/d0", sp.encode(sp.Payload(1000, 1, [])), 1.0)
    h.handle("spBv1.0/g/NDATA/real", sp.encode(sp.Payload(1000, 2, [])), 1.0)  # a node that speaks
    for node, devices in (("junk0", 2), ("junk1", 1)):  # 8 names held (a live device's 2): at the bound
        h.handle(f"spBv1.0/g/NBIRTH/{node}", nbirth, 1.0)
        for i in range(devices):
            h.handle(f"spBv1.0/g/DBIRTH/{node}/x{i}", sp.encode(sp.Payload(1000, i + 1, [])), 1.0)
    clock.ahead += 300  # rebirth_retry_max_s of quiet
    h.handle("spBv1.0/g/DDATA/real/d1", sp.encode(sp.Payload(1000, 3, [])), 1.0)  # refused
    h.tick()
    assert errors == ["too_many_total_devices"]
    assert [t for t, _ in sent] == ["spBv1.0/g/NCMD/junk0", "spBv1.0/g/NCMD/junk1"]  # before: none


def test_at_the_device_bound_silent_nodes_without_devices_do_not_hide_silent_ones_holding_names(monkeypatch):
    """At MAX_TOTAL_DEVICES nodes gone silent make room for a new device, least recently heard first. Only the first
    ASK_SCAN_MAX silent nodes were looked at, and those holding no device name stayed at the front: that many
    device-less nodes gone silent before a burst hid the burst's silent nodes for good, and every real node's new
    device was refused. Nodes holding no names are now passed over."""

    clock = ShiftedClock()
    monkeypatch.setattr(sparkplug_host, "time", clock)
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_DEVICES", 8)
    monkeypatch.setattr(sparkplug_host, "ASK_SCAN_MAX", 3)
    h, sent, _ = host()
    nbirth = sp.encode(sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0)]))
    for i in range(3):  # births only, no device: silent a day later, ahead of the burst in the silent line
        h.handle(f"spBv1.0/g/NBIRTH/bare{i}", nbirth, 1.0)
    h.handle("spBv1.0/g/NBIRTH/real", nbirth, 1.0)
    h.handle("spBv1.0/g/DBIRTH/real/d0", sp.encode(sp.Payload(1000, 1, [])), 1.0)
    clock.ahead += 86_400  # rebirth_give_up_s: all asked their birth
    h.tick()
    h.handle("spBv1.0/g/NDATA/real", sp.encode(sp.Payload(1000, 2, [])), 1.0)  # the real node speaks
    clock.ahead += 300  # rebirth_retry_max_s: the bare ones did not answer
    h.tick()
    assert h.nodes_silent == 3
    h.handle("spBv1.0/g/NBIRTH/junk", nbirth, 1.0)  # a burst: 8 names held (a live device's 2)
    for i in range(3):
        h.handle(f"spBv1.0/g/DBIRTH/junk/x{i}", sp.encode(sp.Payload(1000, i + 1, [])), 1.0)
    clock.ahead += 300
    h.handle("spBv1.0/g/DDATA/real/d1", sp.encode(sp.Payload(1000, 3, [])), 1.0)  # refused: junk asked
    h.tick()
    clock.ahead += 300  # junk did not answer
    h.tick()
    assert h.nodes_silent == 4 and h.devices_refused == 1
    sent.clear()
    h.handle("spBv1.0/g/DDATA/real/d1", sp.encode(sp.Payload(1000, 4, [])), 1.0)
    assert ("g", "junk") not in h._nodes and h.devices_refused == 1  # before: refused again, junk kept
    assert [t for t, _ in sent] == ["spBv1.0/g/NCMD/real"]  # d1's birth asked


def test_at_the_device_bound_dead_nodes_without_devices_do_not_hide_dead_ones_holding_names(monkeypatch):
    """At MAX_TOTAL_DEVICES nodes dead DEAD_KEEP_S make room for a new device, least recently heard first. Only the
    first ASK_SCAN_MAX dead nodes were looked at, and those holding no device name stayed at the front: that many
    device-less nodes dead before a node holding names hid it for good, and a real node's new device was refused."""
    clock = ShiftedClock()
    monkeypatch.setattr(sparkplug_host, "time", clock)
    monkeypatch.setattr(sparkplug_host, "MAX_TOTAL_DEVICES", 8)
    monkeypatch.setattr(sparkplug_host, "ASK_SCAN_MAX", 3)
    h, _, errors = host()
    nbirth = sp.encode(sp.Payload(1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0)]))
    ndeath = sp.encode(sp.Payload(1000, None, [sp.Metric("bdSeq", None, D.INT64, 0)]))
    for i in range(3):  # no device, dead: ahead in the dead line
        h.handle(f"spBv1.0/g/NBIRTH/bare{i}", nbirth, 1.0)
        h.handle(f"spBv1.0/g/NDEATH/bare{i}", ndeath, 1.0)
    for node, devices in (("real", 1), ("gone", 3)):
        h.handle(f"spBv1.0/g/NBIRTH/{node}", nbirth, 1.0)
        for i in range(devices):
            h.handle(f"spBv1.0/g/DBIRTH/{node}/d{i}", sp.encode(sp.Payload(1000, i + 1, [])), 1.0)
    h.handle("spBv1.0/g/NDEATH/gone", ndeath, 1.0)  # its 3 device names kept
    h.handle("spBv1.0/g/NBIRTH/other", nbirth, 1.0)  # 5 names held, 9 with its 2 devices
    for i in range(2):
        h.handle(f"spBv1.0/g/DBIRTH/other/d{i}", sp.encode(sp.Payload(1000, i + 1, [])), 1.0)
    assert h._names >= 8 and not errors  # at the bound
    clock.ahead += sparkplug_host.DEAD_KEEP_S
    h.handle("spBv1.0/g/DBIRTH/real/d1", sp.encode(sp.Payload(1000, 2, [])), 1.0)
    assert h.device_alive("g", "real", "d1") and ("g", "gone") not in h._nodes  # before: refused, gone kept
    assert errors == [] and h.nodes_forgotten == 1


def test_a_device_birth_whose_seq_0_was_left_out_after_a_loss_is_a_gap_asked():
    """A DBIRTH (or DDEATH) at seq 0 from an encoder that leaves out a field at its default comes with no seq. After
    messages lost (5, then that 0 with 6..255 lost) it was said to hold no seq (``message_without_seq``, the node told
    to send seq) and the gap seen a message later; with 1..255 lost not at all. A node whose DBIRTHs carried a seq
    before now has it taken as its 0: a gap, a rebirth asked. A node that numbers its data but not its DBIRTHs is
    still only said so, no gap at each of its DBIRTHs."""

    def run(first_dbirth_seq, death=False):
        h, sent, errors = host(rebirth_min_interval_s=0)
        nb = sp.Payload(
            1000, 0, [sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("uptime", 1, D.DOUBLE, 1.0)]
        )
        h.handle("spBv1.0/g/NBIRTH/n", sp.encode(nb), 1.0)
        db = sp.Payload(1000, first_dbirth_seq, [sp.Metric("current", 10, D.DOUBLE, 4.0)])
        h.handle("spBv1.0/g/DBIRTH/n/m", sp.encode(db), 1.0)
        start = 2 if first_dbirth_seq else 1
        for seq in range(start, start + 4):
            ddata(h, seq)
        errors.clear()
        late = sp.Payload(3000, None, [sp.Metric("level", 20, D.DOUBLE, 7.0)])  # its 0, 6..255 lost
        (r,) = h.handle("spBv1.0/g/DBIRTH/n/m2", sp.encode(late), 3.0)
        assert (r.tag, r.value) == ("n/m2/level", 7.0)  # read all the same
        if death:
            ddata(h, 1)
            h.handle("spBv1.0/g/DDEATH/n/m", sp.encode(sp.Payload(4000, None, [])), 4.0)
        return sent, errors

    sent, errors = run(1)
    # before: message_without_seq, and no rebirth asked
    assert errors == ["seq_gap"] and [t for t, _ in sent] == ["spBv1.0/g/NCMD/n"]
    sent, errors = run(1, death=True)  # its DBIRTHs numbered, never its DDEATHs: no gap of those
    assert errors == ["seq_gap", "message_without_seq"] and len(sent) == 1
    sent, errors = run(None)  # its DBIRTHs never numbered
    assert errors == ["message_without_seq"] and sent == []


def test_a_node_that_numbers_its_births_but_not_its_data_has_no_gap_at_each_data_message():
    """Its DBIRTH's seq 1 showed it numbers messages, and each data message without a seq was taken as its 0: a
    seq_gap at every one (a rebirth asked of a healthy node) and never the notice that its data holds no seq. A
    node's data is taken so only once its data carried a seq other than 0."""
    h, sent, errors = host(rebirth_min_interval_s=0)
    birth(h)
    for ts in (2000, 3000, 4000):
        h.handle(
            "spBv1.0/g/DDATA/n/m",
            sp.encode(sp.Payload(ts, None, [sp.Metric(None, 10, D.DOUBLE, ts / 1000)])),
            2.0,
        )
    assert errors == ["message_without_seq"] * 3 and sent == []  # before: seq_gap each, a rebirth asked


@pytest.mark.parametrize(
    "born, died",
    [
        ((D.INT64, "long_value", 2**64 - 1), (D.UINT64, "long_value", 2**64 - 1)),
        (
            (D.INT32, "int_value", 2**32 - 1),
            (D.UINT32, "int_value", 2**32 - 1),
        ),  # Int32 -1, UInt32 4294967295
        ((D.INT8, "int_value", 2**32 - 1), (D.UINT8, "int_value", 255)),  # Int8 -1, UInt8 255
        ((D.INT32, "int_value", 2**32 - 1), (D.INT64, "long_value", 2**64 - 1)),  # -1 and -1
        ((D.DOUBLE, "double_value", -1.0), (D.INT64, "long_value", 2**64 - 1)),  # -1.0 and -1
        ((D.UINT64, "long_value", 7), (D.UINT8, "int_value", 7)),
    ],
)
def test_a_death_whose_bdseq_has_its_births_bits_under_another_datatype_is_its_death(born, died):
    """A bdSeq declared under two datatypes with the same bits on the wire (Int64 -1 in the NBIRTH, UInt64
    2**64-1 in the NDEATH; Int32 -1 and UInt32 4294967295) or the same value (Double -1.0, Int64 -1) is one
    bdSeq. Compared as read, the death did not match its birth and was ignored: the dead node's tags stayed
    GOOD. A stale will (another bdSeq) is still ignored, and the log names a bdSeq as its birth declared it."""
    pb, said = sp._pb(), []
    h = SparkplugHost("src", SparkplugHostSettings(), lambda t, b: None, lambda r, d: said.append((r, d)))
    nb = pb.Payload(timestamp=1000, seq=0)
    pb_metric(nb, "bdSeq", None, born[0], **{born[1]: born[2]})
    pb_metric(nb, "T", 1, D.DOUBLE, double_value=1.0)
    h.handle("spBv1.0/g/NBIRTH/n", nb.SerializeToString(), 1.0)
    stale = pb.Payload(timestamp=1500)
    pb_metric(stale, "bdSeq", None, died[0], **{died[1]: 3 if died[1] != "double_value" else 3.0})
    assert h.handle("spBv1.0/g/NDEATH/n", stale.SerializeToString(), 1.5) == []
    h.handle("spBv1.0/g/NDEATH/n", b"", 1.6)  # no bdSeq: not taken, its birth's named as declared
    assert said[-1][0] == "missing_field"
    assert f"NBIRTH's bdSeq is {7 if born[2] == 7 else -1}:" in said[-1][1]  # before: 18446744073709551615
    nd = pb.Payload(timestamp=2000)
    pb_metric(nd, "bdSeq", None, died[0], **{died[1]: died[2]})
    (r,) = h.handle("spBv1.0/g/NDEATH/n", nd.SerializeToString(), 2.0)  # before: none, the death ignored
    assert (r.tag, r.quality, r.reason) == ("n/T", Quality.BAD, "node_death")


def test_a_node_that_numbers_its_ndata_but_not_its_ddata_has_no_gap_and_is_not_reborn_in_a_loop():
    """NDATA and DDATA were one kind of message: each DDATA without a seq after the node's NDATA carried one was
    taken as its 0, a seq_gap at every message and a rebirth asked at every rebirth_min_interval_s of a node that
    answers them. Its DDATA are now said to hold no seq, across its counter's top (255) too."""
    h, sent, errors = host(rebirth_min_interval_s=0)
    birth(h)
    answered, seq = 0, 2
    for i in range(300):
        h.handle("spBv1.0/g/NDATA/n", sp.encode(sp.Payload(2000 + 2 * i, seq % 256, [])), 2.0)
        seq += 1
        (r,) = h.handle(
            "spBv1.0/g/DDATA/n/m",
            sp.encode(sp.Payload(2001 + 2 * i, None, [sp.Metric(None, 10, D.DOUBLE, float(i))])),
            2.0,
        )
        assert r.value == float(i)
        if len(sent) > answered:  # it answers each rebirth
            answered, seq = len(sent), 2
            birth(h)
    assert set(errors) == {"message_without_seq"} and sent == []  # before: 480 seq_gap, 120 rebirths asked


def test_a_node_replaced_under_its_name_by_one_numbering_its_births_alone_has_no_gap_at_each_data_message():
    """The kinds of message a node numbered were kept past its death: the gateway replaced under its name by
    another maker's that numbers its births and not its data had each data message taken as its 0, a seq_gap at
    every one. They are its session's: forgotten at its death."""
    h, sent, errors = host(rebirth_min_interval_s=0)
    birth(h)
    for seq in range(2, 6):
        ddata(h, seq)
    h.handle(
        "spBv1.0/g/NDEATH/n", sp.encode(sp.Payload(3000, None, [sp.Metric("bdSeq", None, D.INT64, 0)])), 3.0
    )
    errors.clear()
    birth(h, bd=1)  # the new one: NBIRTH 0, DBIRTH 1, its data without a seq
    for ts in (4000, 5000, 6000):
        h.handle(
            "spBv1.0/g/DDATA/n/m", sp.encode(sp.Payload(ts, None, [sp.Metric(None, 10, D.DOUBLE, 1.0)])), 4.0
        )
    assert errors == ["message_without_seq"] * 3 and sent == []  # before: seq_gap each, a rebirth asked


def test_a_numbers_value_packed_in_bytes_value_is_wrong_type_not_said_to_be_a_bytes_metric():
    """An Int32 or a Double whose value came in bytes_value (an encoder packing the number's bytes) gave no reading
    and was said to be 'a Bytes or File metric', which it is not: now counted wrong_type naming its datatype and
    the field, in its birth and in data, its bytes by their number. A Bytes metric is still said to give no
    reading."""
    pb, notes = sp._pb(), []
    h, _, errors = host()
    h.on_notice = lambda key, msg, n=1, cause=None: notes.append(key)
    nb = pb.Payload(timestamp=1000, seq=0)
    pb_metric(nb, "bdSeq", None, D.INT64, long_value=0)
    pb_metric(nb, "count", 1, D.INT32, bytes_value=(7).to_bytes(4, "little"))
    pb_metric(nb, "speed", 2, D.DOUBLE, bytes_value=b"\0" * 8)
    pb_metric(nb, "T", 3, D.DOUBLE, double_value=1.0)
    assert [r.tag for r in h.handle("spBv1.0/g/NBIRTH/n", nb.SerializeToString(), 1.0)] == ["n/T"]
    assert errors == ["wrong_type", "wrong_type"] and notes == []  # before: [] and unsupported_metric
    nd = pb.Payload(timestamp=1100, seq=1)
    pb_metric(nd, None, 1, None, bytes_value=b"\xff" * 100_000)
    assert h.handle("spBv1.0/g/NDATA/n", nd.SerializeToString(), 1.1) == []
    assert errors[-1] == "wrong_type"
    nd = pb.Payload(timestamp=1200, seq=2)
    pb_metric(nd, "blob", None, D.BYTES, bytes_value=b"\x01")
    assert h.handle("spBv1.0/g/NDATA/n", nd.SerializeToString(), 1.2) == []
    assert errors.count("wrong_type") == 3 and notes == ["unsupported_metric"]
