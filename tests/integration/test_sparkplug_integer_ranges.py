"""Sparkplug B integers a node sends past the range of the datatype its birth declares, through a real Mosquitto:
refused naming the metric, never cut to the type's low bits and passed on as another number."""

from __future__ import annotations

import asyncio

from protocols import sparkplug as sp
from tests.integration.test_sparkplug_rebirth_requests import _asker
from tests.support.mqtt_read import read_published
from tests.support.sparkplug_pb import pb_metric as _metric
from tests.support.waits import until

D = sp.DataType
T0_MS = 1_700_000_000_000  # a node whose clock is set


def _payload(seq: int, *metrics: dict) -> bytes:
    p = sp._pb().Payload()
    p.timestamp, p.seq = T0_MS + seq, seq
    for m in metrics:
        _metric(p, **m)
    return p.SerializeToString()


async def test_an_integer_past_its_births_datatype_is_refused_naming_the_metric_never_cut_to_its_low_bits(
    mosquitto, caplog
):
    """A node whose Int16 counter went past 32767 (its PLC tag widened, the birth not sent again) sends 70000
    in its data, without a datatype as Sparkplug 3.0 has data do: read by the birth's Int16 it was cut to its
    low 16 bits, 4464, and passed on GOOD as the node's value; 2**32 + 5 for an Int32 was 5, 300 for an Int8
    was 44. Each is refused now (``wrong_type`` naming the metric, the value and the datatype), the other
    metrics of the message read; so is one whose data message states the datatype, a UInt8 of 300 (passed on
    before as a value no UInt8 holds), and an Int16 DataSet column's cell. Negative values in two's complement
    (sign-extended to 32 or 64 bits, or in the type's own bits) keep their sign, as before."""
    birth = _payload(
        0,
        {"name": "bdSeq", "datatype": D.INT64, "long_value": 0},
        {"name": "count", "alias": 1, "datatype": D.INT16, "int_value": 5},
        {"name": "total", "alias": 2, "datatype": D.INT32, "int_value": 5},
        {"name": "step", "alias": 3, "datatype": D.INT8, "int_value": 5},
        {"name": "level", "alias": 4, "datatype": D.UINT8, "int_value": 5},
        {"name": "temp", "alias": 5, "datatype": D.DOUBLE, "double_value": 20.0},
    )
    table = sp._pb().Payload.Metric()
    d = table.dataset_value
    d.num_of_columns = 1
    d.columns.append("Pos")
    d.types.append(D.INT16)
    d.rows.add().elements.add().int_value = 70000
    data = _payload(
        1,
        {"alias": 1, "int_value": 70000},
        {"alias": 2, "long_value": 2**32 + 5},
        {"alias": 3, "int_value": 300},
        {"alias": 4, "int_value": 300},
        {"alias": 5, "double_value": 21.0},
    )
    stated = _payload(2, {"alias": 1, "datatype": D.INT16, "int_value": 70000})
    pb = sp._pb().Payload()
    pb.ParseFromString(_payload(3))
    m = pb.metrics.add()
    m.CopyFrom(table)
    m.name, m.datatype = "table", D.DATASET
    negative = _payload(
        4,
        {"alias": 1, "int_value": 2**32 - 5},  # -5, as Tahu's Java nodes sign-extend it
        {"alias": 2, "long_value": 2**64 - 5},
        {"alias": 3, "int_value": 200},  # -56 in the type's own 8 bits
        {"alias": 5, "double_value": 22.0},
    )
    got, src = await read_published(
        mosquitto.port,
        [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}, {"topic": "end"}],
        [
            ("spBv1.0/G/NBIRTH/E", birth),
            ("spBv1.0/G/NDATA/E", data),
            ("spBv1.0/G/NDATA/E", stated),
            ("spBv1.0/G/NDATA/E", pb.SerializeToString()),
            ("spBv1.0/G/NDATA/E", negative),
            ("end", b'{"v": 1}'),
        ],
        "end/v",
    )
    assert [(r.tag, r.value) for r in got[5:-1]] == [
        ("E/temp", 21.0),
        ("E/count", -5),
        ("E/total", -5),
        ("E/step", -56),
        ("E/temp", 22.0),
    ]
    # count, total, step, level; count stated Int16; the table's column
    assert src.stats.errors_by_reason == {"wrong_type": 6}, src.stats.errors_by_reason
    assert "DataSet 'table' column 'Pos'" in src.stats.last_error, src.stats.last_error
    said = [r.getMessage() for r in caplog.records if "wrong_type" in r.getMessage()]
    assert "metric 'count': 70000 is out of the range of its datatype, Int16" in said[0], said


async def test_an_integer_by_a_name_no_birth_declared_and_without_a_datatype_is_skipped_not_read_unsigned(
    mosquitto, caplog
):
    """A node's NDATA carrying a metric its NBIRTH did not declare (Sparkplug 3.0 has a birth declare every metric of
    the session), without a datatype (data should leave it out): -5 as an Int32 arrives as 4294967291, and was
    passed on GOOD as that, as was a DateTime's milliseconds as a count; nothing said, no rebirth asked (Ignition's
    MQTT Engine asks one). Such an integer is now skipped (``wrong_type`` naming it) and a rebirth asked, once per
    node; one every integer type reads alike (under 2**31), or one whose data states its datatype, is read."""
    asker, asked = _asker(mosquitto.port, "spBv1.0/G/NCMD/E")
    birth = _payload(
        0,
        {"name": "bdSeq", "datatype": D.INT64, "long_value": 0},
        {"name": "temp", "alias": 5, "datatype": D.DOUBLE, "double_value": 20.0},
    )
    data = _payload(
        1,
        {"name": "offset", "int_value": 2**32 - 5},  # -5, an Int32 no birth declared
        {"name": "made_at", "long_value": T0_MS},  # a DateTime, or a count: unknown
        {"name": "count", "int_value": 7},
        {"name": "level", "datatype": D.INT32, "int_value": 2**32 - 5},
        {"alias": 5, "double_value": 21.0},
    )
    again = _payload(2, {"name": "offset", "int_value": 2**32 - 6}, {"alias": 5, "double_value": 22.0})
    try:
        got, src = await read_published(
            mosquitto.port,
            [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}, {"topic": "end"}],
            [
                ("spBv1.0/G/NBIRTH/E", birth),
                ("spBv1.0/G/NDATA/E", data),
                ("spBv1.0/G/NDATA/E", again),
                ("end", b'{"v": 1}'),
            ],
            "end/v",
        )
        await until(lambda: asked == ["E"], 5, "a rebirth asked")
    finally:
        asker.disconnect()
        asker.loop_stop()
    assert [(r.tag, r.value) for r in got[:-1]] == [
        ("E/temp", 20.0),
        ("E/count", 7),
        ("E/level", -5),
        ("E/temp", 21.0),
        ("E/temp", 22.0),
    ]
    assert src.stats.errors_by_reason == {"wrong_type": 3}, src.stats.errors_by_reason
    said = [r.getMessage() for r in caplog.records if "wrong_type" in r.getMessage()]
    assert "metric 'offset' has no datatype, in its NDATA nor in a birth" in said[0], said
    assert asked == ["E"]  # once per node, not at every such message


async def test_an_integer_a_birth_declared_past_the_nodes_metric_bound_is_read_as_before_not_skipped(
    mosquitto, caplog, monkeypatch
):
    """A node's births hold more than MAX_NODE_METRICS metrics (notice too_many_node_metrics): the types of those
    past the bound are not kept, though the birth declared them. Their data without a datatype (as Sparkplug 3.0
    has data leave it out) was read as the wire's number; since ee993bb0 every integer of 2**31 or more among them
    (a UInt32 or UInt64 count, every DateTime) was skipped as ``wrong_type`` with "no datatype ... nor in a birth",
    which was false, and a rebirth asked that brings the same birth. It is read as before the bound's cut."""
    from devices.mqtt import sparkplug_host

    monkeypatch.setattr(sparkplug_host, "MAX_NODE_METRICS", 3)  # a node of 100,000 and more, made small
    asker, asked = _asker(mosquitto.port, "spBv1.0/G/NCMD/E")
    birth = _payload(
        0,
        {"name": "bdSeq", "datatype": D.INT64, "long_value": 0},
        {"name": "temp", "alias": 5, "datatype": D.DOUBLE, "double_value": 20.0},
        {"name": "count", "datatype": D.INT32, "int_value": 1},
        {"name": "total", "datatype": D.UINT32, "long_value": 5},  # past the bound: its type not kept
        {"name": "energy", "datatype": D.UINT64, "long_value": 5},
    )
    data = _payload(
        1,
        {"name": "total", "long_value": 3_000_000_000},
        {"name": "energy", "long_value": 2**40},
        {"alias": 5, "double_value": 21.0},
    )
    try:
        got, src = await read_published(
            mosquitto.port,
            [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}, {"topic": "end"}],
            [("spBv1.0/G/NBIRTH/E", birth), ("spBv1.0/G/NDATA/E", data), ("end", b'{"v": 1}')],
            "end/v",
        )
        await asyncio.sleep(0.5)
    finally:
        asker.disconnect()
        asker.loop_stop()
    read = [(r.tag, r.value) for r in got[:-1]]
    assert read[-3:] == [("E/total", 3_000_000_000), ("E/energy", 2**40), ("E/temp", 21.0)], read
    assert "wrong_type" not in src.stats.errors_by_reason, src.stats.errors_by_reason
    assert not [r for r in caplog.records if "nor in a birth" in r.getMessage()]
    assert asked == []  # a rebirth would bring the same birth, cut at the same bound


async def test_an_integer_of_a_birth_without_a_datatype_is_skipped_as_its_data_is_not_read_unsigned(
    mosquitto, caplog
):
    """A birth's metric without a datatype (Sparkplug 3.0 has a birth give each metric's; a node's bug) holding an
    integer of 2**31 or more was passed on GOOD as the wire's unsigned number: -5 as an Int32, int_value
    4294967291, gave E/offset = 4294967291, while the same in its NDATA is skipped as wrong_type since ee993bb0.
    Now the birth's is skipped the same way (wrong_type naming it and the birth), without a rebirth asked (it would
    bring the same birth); a smaller integer (every integer type reads it alike) is read."""
    birth = _payload(
        0,
        {"name": "bdSeq", "datatype": D.INT64, "long_value": 0},
        {"name": "offset", "alias": 1, "int_value": 2**32 - 5},  # no datatype
        {"name": "count", "alias": 2, "int_value": 7},  # no datatype, read alike by every type
        {"name": "temp", "alias": 5, "datatype": D.DOUBLE, "double_value": 20.0},
    )
    got, src = await read_published(
        mosquitto.port,
        [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}, {"topic": "end"}],
        [("spBv1.0/G/NBIRTH/E", birth), ("end", b'{"v": 1}')],
        "end/v",
    )
    assert [(r.tag, r.value) for r in got[:-1]] == [("E/count", 7), ("E/temp", 20.0)]
    assert src.stats.errors_by_reason == {"wrong_type": 1}, src.stats.errors_by_reason
    said = [r.getMessage() for r in caplog.records if "wrong_type" in r.getMessage()]
    assert "metric 'offset' has no datatype in its NBIRTH" in said[0], said
    # no rebirth asked, nor wanted (queued to be asked): the host's own record, taken as the birth was read
    assert src.sparkplug.rebirths_requested == 0 and not src.sparkplug._asking, (
        src.sparkplug.rebirths_requested
    )
