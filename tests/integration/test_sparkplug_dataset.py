"""Sparkplug B DataSet metrics (Ignition's Dataset tags, Tahu's DataSet type) through a real Mosquitto."""

from __future__ import annotations

import asyncio

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import Quality
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from protocols import sparkplug as sp
from tests.support.mqtt_read import read_published
from tests.support.sparkplug_pb import pb_metric as _metric

D = sp.DataType
T0_MS = 1_700_000_000_000  # a node whose clock is set (a time before 2001 is a clock never set)
T0 = T0_MS / 1000
COLUMNS = (("Pos", D.INT32), ("Force", D.FLOAT), ("Ok", D.BOOLEAN), ("Label", D.STRING), ("At", D.DATETIME))
FIELD = {D.INT32: "int_value", D.FLOAT: "float_value", D.BOOLEAN: "boolean_value", D.STRING: "string_value"}
FIELD[D.DATETIME] = "long_value"


def _table(m, rows, columns=COLUMNS):
    """Fill ``m`` as Tahu's encoder writes a DataSet: names, datatypes, rows of cells (None: left empty)."""
    d = m.dataset_value
    d.num_of_columns = len(columns)
    d.columns.extend(c for c, _ in columns)
    d.types.extend(t for _, t in columns)
    for row in rows:
        r = d.rows.add()
        for (_, t), v in zip(columns, row, strict=False):
            e = r.elements.add()
            if v is not None:
                field = "string_value" if isinstance(v, str) else FIELD[t]
                setattr(e, field, v & 0xFFFFFFFF if field == "int_value" else v)


def _shown(v):
    return str(v.tolist()) if isinstance(v, np.ndarray) else v


async def test_sparkplug_dataset_columns_are_read_as_arrays(mosquitto):
    """An Ignition Dataset tag (a PLC's last strokes: position, force, ok, label, time) comes as a DataSet
    metric. Before, it gave no reading at all (the unsupported_metric notice). Now each column of numbers,
    truth values or times gives a reading {metric}/{column} whose value is its rows as an array, typed by
    the column (a negative Int32 keeps its sign, an empty Float cell is NaN); a text column gives none (the
    notice, naming it); a column with a cell of another type, or a table of the wrong shape, is wrong_type
    while the rest of the message is read; a null DataSet makes its columns' last values BAD."""
    src = MqttSource(
        "mq",
        MqttSettings(port=mosquitto.port, subscriptions=[{"topic": "spBv1.0/g/#", "codec": "sparkplug_b"}]),
    )
    await src.start()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port, 30)
    pub.loop_start()
    t = 1_700_000_000_000
    birth = sp._pb().Payload()
    birth.timestamp, birth.seq = T0_MS + 1000, 0
    _metric(birth, "bdSeq", datatype=D.INT64, long_value=0)
    _metric(birth, "Temp", alias=1, datatype=D.DOUBLE, double_value=20.0)
    _table(
        _metric(birth, "Strokes", alias=2, datatype=D.DATASET),
        [(1, 0.5, True, "a", t), (-2, 1.25, False, "b", t + 1)],
    )
    data = sp._pb().Payload()  # by alias, without a datatype, as Sparkplug 3.0 has data messages
    data.timestamp, data.seq = T0_MS + 2000, 1
    _table(_metric(data, alias=2), [(4, None, False, "d", t + 3), (5, 3.5, True, "e", t + 4)])
    mixed = sp._pb().Payload()
    mixed.timestamp, mixed.seq = T0_MS + 3000, 2
    _table(_metric(mixed, alias=2), [("x", 1.0, True, "f", t + 5)])  # text in the Int32 column
    _metric(mixed, alias=1, double_value=21.0)
    shape = sp._pb().Payload()
    shape.timestamp, shape.seq = T0_MS + 4000, 3
    _table(_metric(shape, alias=2), [(6, 2.0)])  # a row of 2 cells under 5 columns
    _metric(shape, alias=1, double_value=22.0)
    null = sp._pb().Payload()
    null.timestamp, null.seq = T0_MS + 5000, 4
    _metric(null, alias=2, is_null=True)
    _metric(null, alias=1, double_value=23.0)
    got: list = []
    try:
        async with asyncio.timeout(5):
            await src.connected.wait()
            await src.subscribed.wait()
        for kind, body in (
            ("NBIRTH", birth),
            ("NDATA", data),
            ("NDATA", mixed),
            ("NDATA", shape),
            ("NDATA", null),
        ):
            pub.publish(f"spBv1.0/g/{kind}/n", body.SerializeToString(), qos=1)
        try:
            async with asyncio.timeout(10):
                async for r in src.items():
                    got.append(r)
                    if r.tag == "n/Temp" and r.timestamp == T0 + 5.0:
                        break
        except TimeoutError:
            pass  # what came is asserted below
    finally:
        pub.loop_stop()
        await src.stop()
    G, B = Quality.GOOD, Quality.BAD
    assert [(r.tag, _shown(r.value), r.timestamp, r.quality) for r in got] == [
        ("n/Temp", 20.0, T0 + 1.0, G),
        ("n/Strokes/Pos", "[1, -2]", T0 + 1.0, G),
        ("n/Strokes/Force", "[0.5, 1.25]", T0 + 1.0, G),
        ("n/Strokes/Ok", "[True, False]", T0 + 1.0, G),
        ("n/Strokes/At", f"[{t}, {t + 1}]", T0 + 1.0, G),
        ("n/Strokes/Pos", "[4, 5]", T0 + 2.0, G),
        ("n/Strokes/Force", "[nan, 3.5]", T0 + 2.0, G),
        ("n/Strokes/Ok", "[False, True]", T0 + 2.0, G),
        ("n/Strokes/At", f"[{t + 3}, {t + 4}]", T0 + 2.0, G),
        ("n/Strokes/Force", "[1.0]", T0 + 3.0, G),  # Pos refused, the rest of the table read
        ("n/Strokes/Ok", "[True]", T0 + 3.0, G),
        ("n/Strokes/At", f"[{t + 5}]", T0 + 3.0, G),
        ("n/Temp", 21.0, T0 + 3.0, G),
        ("n/Temp", 22.0, T0 + 4.0, G),  # the table refused whole, the message's other metric read
        ("n/Strokes/Pos", "[4, 5]", T0 + 5.0, B),  # the null table: each column's last value BAD
        ("n/Strokes/Force", "[1.0]", T0 + 5.0, B),
        ("n/Strokes/Ok", "[True]", T0 + 5.0, B),
        ("n/Strokes/At", f"[{t + 5}]", T0 + 5.0, B),
        ("n/Temp", 23.0, T0 + 5.0, G),
    ]
    assert (
        got[1].value.dtype == np.int32 and got[2].value.dtype == np.float32 and got[4].value.dtype == np.int64
    )
    assert src.stats.errors_by_reason == {"wrong_type": 2}
    assert "'Strokes/Label'" in src.notices.status()["unsupported_metric"]["message"]


async def test_a_dataset_column_named_as_a_plain_metric_of_the_node_is_neither_read_into_that_tag(mosquitto):
    """A DataSet ``T`` whose column ``Force`` is tagged ``T/Force``, beside a plain metric named ``T/Force``: the
    tag took the metric's 5.0 and the column's [1.5] in turn. Both are now skipped (``tag_name_clash``), the
    DataSet's other columns read."""
    birth = sp._pb().Payload()
    birth.timestamp, birth.seq = T0_MS, 0
    _metric(birth, "bdSeq", datatype=D.INT64, long_value=0)
    _metric(birth, "T/Force", alias=1, datatype=D.FLOAT, float_value=5.0)
    _table(_metric(birth, "T", alias=2, datatype=D.DATASET), [(1, 1.5, True, None, T0_MS)])
    got, src = await read_published(
        mosquitto.port,
        [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}, {"topic": "end"}],
        [("spBv1.0/G/NBIRTH/E", birth.SerializeToString()), ("end", b'{"v": 1}')],
        "end/v",
    )
    assert [(r.tag, _shown(r.value)) for r in got] == [
        ("E/T/Pos", "[1]"),
        ("E/T/Ok", "[True]"),
        ("E/T/At", f"[{T0_MS}]"),
        ("end/v", 1),
    ], got
    assert src.stats.errors_by_reason == {"tag_name_clash": 2}, src.stats.errors_by_reason
