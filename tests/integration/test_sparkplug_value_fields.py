"""A Sparkplug B metric whose value comes in another field than its datatype's (a Float carrying int_value, an
Int32 a double), through a real Mosquitto. Sparkplug 3.0 ("Datatype Details") gives each datatype one protobuf
field, and Eclipse Tahu reads that field only (test_mqtt_sparkplug_interop.py): such a value is wrong_type,
counted and skipped, the message's other metrics read, no rebirth asked. The two integer fields stand for each
other (UInt32 in int_value or long_value: Tahu's own libraries differ), and so do float and double."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import Quality
from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from protocols import sparkplug as sp
from tests.integration.test_sparkplug_compressed import T0_MS, _consume, _ready
from tests.integration.test_sparkplug_rebirth_requests import _asker, closed
from tests.support.sparkplug_pb import pb_metric as _metric
from tests.support.waits import until

D = sp.DataType


@dataclass
class _Peers:
    src: MqttSource
    asked: list[str]  # the nodes asked a rebirth
    pub: paho.Client  # the nodes' publisher
    got: list  # the readings


@pytest.fixture
async def peers(mosquitto) -> AsyncIterator[_Peers]:
    """A Sparkplug source on spBv1.0/g/# consumed, the nodes' rebirth asks heard, and a publisher for the nodes."""
    sub = {"topic": "spBv1.0/g/#", "codec": "sparkplug_b", "qos": 1}
    src = MqttSource("mq", MqttSettings(port=mosquitto.port, subscriptions=[sub]))
    await src.start()
    asker, asked = _asker(mosquitto.port, "spBv1.0/g/NCMD/+")
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port, 30)
    pub.loop_start()
    got, task = _consume(src)
    try:
        await _ready(src)
        yield _Peers(src, asked, pub, got)
    finally:
        task.cancel()
        closed(pub)
        closed(asker)
        await src.stop()


async def test_a_value_in_another_field_than_its_datatypes_is_wrong_type_and_skipped(peers, caplog):
    """Before, each was passed on GOOD as it came: the Float tag took the integer 4294967291 (-5.0 cast to an
    integer, or the number?), the Boolean 1, the Int32 2.5 (no Int32), the String a number, the Double's birth
    value an integer."""
    src, asked, pub, got = peers.src, peers.asked, peers.pub, peers.got
    b = sp._pb().Payload()
    b.timestamp, b.seq = T0_MS, 0
    _metric(b, "bdSeq", datatype=D.INT64, long_value=0)
    _metric(b, "Temp", alias=1, datatype=D.FLOAT, float_value=20.5)
    _metric(b, "Running", alias=2, datatype=D.BOOLEAN, boolean_value=True)
    _metric(b, "Count", alias=3, datatype=D.INT32, int_value=4)
    _metric(b, "Mode", alias=4, datatype=D.STRING, string_value="auto")
    _metric(b, "Speed", alias=5, datatype=D.DOUBLE, int_value=1500)  # in the birth too: its value skipped
    _metric(b, "Total", alias=6, datatype=D.UINT32, long_value=7)  # the other integer field: read
    pub.publish("spBv1.0/g/NBIRTH/n", b.SerializeToString(), qos=1)
    d = sp._pb().Payload()
    d.timestamp, d.seq = T0_MS + 1, 1
    _metric(d, alias=1, int_value=4294967291)  # Float
    _metric(d, alias=2, int_value=1)  # Boolean
    _metric(d, alias=3, double_value=2.5)  # Int32
    _metric(d, alias=4, double_value=3.5)  # String
    _metric(d, alias=5, float_value=1500.0)  # Double in float_value: read
    _metric(d, alias=6, int_value=8)  # UInt32 in int_value: read
    pub.publish("spBv1.0/g/NDATA/n", d.SerializeToString(), qos=1)
    await until(lambda: src.stats.errors_by_reason.get("wrong_type") == 5, 30, "the five refused")
    await until(lambda: len(got) == 7, 30, "the values read")
    await asyncio.sleep(0.2)
    assert [(r.tag, r.value, r.quality) for r in got] == [
        ("n/Temp", 20.5, Quality.GOOD),
        ("n/Running", True, Quality.GOOD),
        ("n/Count", 4, Quality.GOOD),
        ("n/Mode", "auto", Quality.GOOD),
        ("n/Total", 7, Quality.GOOD),
        ("n/Speed", 1500.0, Quality.GOOD),
        ("n/Total", 8, Quality.GOOD),
    ]
    assert src.stats.errors_by_reason == {"wrong_type": 5} and asked == []
    # the first said (repeats within a burst are counted, not logged), and the last
    assert (
        "g/n/: metric 'Speed' is a Double (stated in its NBIRTH) but its value 1500 came in an integer field, not "
        "in double_value or float_value as Sparkplug writes it; skipped" in caplog.text
    )
    assert (
        "g/n/: metric 'Mode' is a String (by its birth) but its value 3.5 came in a floating-point field, not in "
        "string_value" in (src.stats.last_error or "")
    )


@pytest.mark.parametrize("stated", [False, True])
async def test_a_plain_value_by_the_alias_of_a_template_or_dataset_is_wrong_type_not_a_tag_of_its_own(
    peers, stated
):
    """A number by the alias of a Template instance or a DataSet metric (no member, no column of it) was read into a
    tag of the instance's or DataSet's own name, GOOD, beside its members' or columns' tags; it is wrong_type,
    skipped as a value in another field than its datatype's is, the message's other metrics read. So too when the
    data metric states a plain datatype (Eclipse Tahu's encoders state one on every metric): judged by the birth's."""
    src, asked, pub, got = peers.src, peers.asked, peers.pub, peers.got
    b = sp._pb().Payload()
    b.timestamp, b.seq = T0_MS, 0
    _metric(b, "bdSeq", datatype=D.INT64, long_value=0)
    motor = _metric(b, "Motor", datatype=D.TEMPLATE).template_value
    motor.is_definition = True
    _metric(motor, "Speed", datatype=D.INT32)
    m1 = _metric(b, "M1", alias=1, datatype=D.TEMPLATE).template_value
    m1.template_ref = "Motor"
    _metric(m1, "Speed", datatype=D.INT32, int_value=5)
    table = _metric(b, "tbl", alias=2, datatype=D.DATASET).dataset_value
    table.num_of_columns = 1
    table.columns.append("a")
    table.types.append(D.INT32)
    table.rows.add().elements.add().int_value = 1
    _metric(b, "Count", alias=3, datatype=D.INT32, int_value=4)
    pub.publish("spBv1.0/g/NBIRTH/n", b.SerializeToString(), qos=1)
    d = sp._pb().Payload()
    d.timestamp, d.seq = T0_MS + 1, 1
    _metric(d, alias=1, int_value=12, **({"datatype": D.INT32} if stated else {}))  # the Template instance's
    _metric(d, alias=2, double_value=1.5, **({"datatype": D.DOUBLE} if stated else {}))  # the DataSet's
    _metric(d, alias=3, int_value=6)
    pub.publish("spBv1.0/g/NDATA/n", d.SerializeToString(), qos=1)
    await until(lambda: any(r.tag == "n/Count" and r.value == 6 for r in got), 30, "the data read")
    await asyncio.sleep(0.2)
    assert [(r.tag, r.value) for r in got if r.timestamp > T0_MS / 1000] == [
        ("n/Count", 6)
    ]  # before: n/M1, n/tbl
    assert src.stats.errors_by_reason == {"wrong_type": 2} and asked == []
    assert (
        "metric 'tbl' is a Dataset (by its birth) but its value 1.5 came in a floating-point field, not in "
        "dataset_value" in (src.stats.last_error or "")
    )


async def test_a_value_of_a_metric_declared_a_propertyset_is_wrong_type_not_a_tag(peers):
    """PropertySet and PropertySetList (datatypes 20, 21) are Sparkplug's for property values: a metric has no field
    for them. A birth (or data) giving one to a metric with a number in int_value had it read GOOD, a tag typed as
    nothing any birth can declare. It is wrong_type, skipped, the message's other metrics read; one without a value
    stays the unsupported notice it was."""
    src, asked, pub, got = peers.src, peers.asked, peers.pub, peers.got
    b = sp._pb().Payload()
    b.timestamp, b.seq = T0_MS, 0
    _metric(b, "bdSeq", datatype=D.INT64, long_value=0)
    _metric(b, "Props", alias=1, datatype=20, int_value=5)
    _metric(b, "List", alias=2, datatype=21, string_value="x")
    _metric(b, "Count", alias=3, datatype=D.INT32, int_value=4)
    pub.publish("spBv1.0/g/NBIRTH/n", b.SerializeToString(), qos=1)
    d = sp._pb().Payload()
    d.timestamp, d.seq = T0_MS + 1, 1
    _metric(d, alias=1, int_value=6)  # by the birth's PropertySet
    _metric(d, alias=3, int_value=7)
    pub.publish("spBv1.0/g/NDATA/n", d.SerializeToString(), qos=1)
    await until(lambda: any(r.tag == "n/Count" and r.value == 7 for r in got), 30, "the data read")
    await asyncio.sleep(0.2)
    assert [(r.tag, r.value) for r in got] == [
        ("n/Count", 4),
        ("n/Count", 7),
    ]  # before: n/Props 5 and 6, n/List
    assert src.stats.errors_by_reason == {"wrong_type": 3} and asked == []
    assert (
        "metric 'Props' is a PropertySet (by its birth) but its value 6 came in an integer field, while a "
        in (src.stats.last_error or "")
    )


async def test_a_number_or_text_in_an_array_bytes_or_file_metric_is_wrong_type_not_read(peers):
    """An array (Sparkplug 3.0: Int32Array, FloatArray, ...), Bytes or File metric's value is bytes_value's. A
    number, truth value or text in one's metric was read GOOD: a scalar where a waveform pipeline takes an array,
    a value where Bytes and File give none. It is wrong_type, skipped, the message's other metrics and an array in
    bytes_value read."""
    src, asked, pub, got = peers.src, peers.asked, peers.pub, peers.got
    b = sp._pb().Payload()
    b.timestamp, b.seq = T0_MS, 0
    _metric(b, "bdSeq", datatype=D.INT64, long_value=0)
    _metric(b, "Wave", alias=1, datatype=24, bytes_value=(7).to_bytes(4, "little"))  # Int32Array [7]
    _metric(b, "Blob", alias=2, datatype=D.BYTES, int_value=5)
    _metric(b, "Doc", alias=3, datatype=D.FILE, string_value="x")
    _metric(b, "Flags", alias=4, datatype=32, boolean_value=True)  # BooleanArray
    _metric(b, "Names", alias=5, datatype=33, string_value="a")  # StringArray: text, not its bytes
    pub.publish("spBv1.0/g/NBIRTH/n", b.SerializeToString(), qos=1)
    d = sp._pb().Payload()
    d.timestamp, d.seq = T0_MS + 1, 1
    _metric(d, alias=1, int_value=8)  # by the birth's Int32Array
    _metric(d, alias=2, double_value=1.5)
    _metric(d, alias=1, bytes_value=(9).to_bytes(4, "little"))
    pub.publish("spBv1.0/g/NDATA/n", d.SerializeToString(), qos=1)
    await until(lambda: sum(r.tag == "n/Wave" for r in got) == 2, 30, "the arrays read")
    await asyncio.sleep(0.2)
    assert [(r.tag, r.value.tolist()) for r in got] == [
        ("n/Wave", [7]),
        ("n/Wave", [9]),
    ]  # before: 5, "x", ...
    assert src.stats.errors_by_reason == {"wrong_type": 6} and asked == []
    assert (
        "metric 'Blob' is a Bytes (by its birth) but its value 1.5 came in a floating-point field, not in "
        in (src.stats.last_error or "")
    )


async def test_a_64_bit_integer_in_int_value_is_read_below_2_31_and_refused_above(peers, caplog):
    """int_value is 32 bits: an Int64 of -5 written there by a 32-bit encoder is 4294967291, as is the number.
    Before, it was read as 4294967291, GOOD; below 2**31 the number is the same either way, and a UInt32 (Tahu
    Python's and SparkplugNet's int_value) is read whole."""
    src, asked, pub, got = peers.src, peers.asked, peers.pub, peers.got
    b = sp._pb().Payload()
    b.timestamp, b.seq = T0_MS, 0
    _metric(b, "bdSeq", datatype=D.INT64, long_value=0)
    _metric(b, "Offset", alias=1, datatype=D.INT64, int_value=4294967291)  # -5 cut to 32 bits, or the number
    _metric(b, "Count", alias=2, datatype=D.UINT64, int_value=7)  # below 2**31: read
    _metric(b, "Energy", alias=3, datatype=D.UINT32, int_value=4_000_000_000)  # a UInt32's own field: read
    _metric(b, "Delta", alias=4, datatype=D.INT64, long_value=(1 << 64) - 5)  # long_value: -5
    pub.publish("spBv1.0/g/NBIRTH/n", b.SerializeToString(), qos=1)
    d = sp._pb().Payload()
    d.timestamp, d.seq = T0_MS + 1, 1
    _metric(d, alias=1, int_value=5)  # Int64 by its birth, below 2**31: read
    _metric(d, alias=2, int_value=3_000_000_000)  # UInt64 by its birth: refused
    _metric(d, alias=3, int_value=4_000_000_001)
    pub.publish("spBv1.0/g/NDATA/n", d.SerializeToString(), qos=1)
    await until(lambda: src.stats.errors_by_reason.get("wrong_type") == 2, 30, "the two refused")
    await until(lambda: len(got) == 5, 30, "the values read")
    await asyncio.sleep(0.2)
    assert [(r.tag, r.value, r.quality) for r in got] == [
        ("n/Count", 7, Quality.GOOD),
        ("n/Energy", 4_000_000_000, Quality.GOOD),
        ("n/Delta", -5, Quality.GOOD),
        ("n/Offset", 5, Quality.GOOD),
        ("n/Energy", 4_000_000_001, Quality.GOOD),
    ]
    assert src.stats.errors_by_reason == {"wrong_type": 2} and asked == []
    assert (
        "g/n/: metric 'Offset' is an Int64 (stated in its NBIRTH) but its value 4294967291 came in int_value "
        "(32 bits), not in long_value as Sparkplug writes it: -5 cut to 32 bits or the number" in caplog.text
    )
    assert "metric 'Count' is a UInt64 (by its birth) but its value 3000000000 came in int_value" in (
        src.stats.last_error or ""
    )
    # a UInt64 is never negative: its other meaning is a larger number cut (it said "-1294967296 cut to 32 bits",
    # review /work/notes56/review_mqtt L4)
    assert "a number of 2**32 or more cut to its low 32 bits, or the number" in (src.stats.last_error or "")


async def test_a_datasets_64_bit_column_in_int_value_is_read_below_2_31_and_refused_above(peers):
    """A DataSet cell is read as a metric's value is: an Int64 cell of -1 written in int_value by a 32-bit
    encoder is 4294967295, as is the number, so its column is wrong_type, counted and skipped, the table's
    other columns read (below 2**31 the number is the same either way). Before, the column was read GOOD with
    4294967295 for -1. Eclipse Tahu reads an Int64 from long_value only (Java: 0; JavaScript: no DataSet)."""
    src, pub, got = peers.src, peers.pub, peers.got
    b = sp._pb().Payload()
    b.timestamp, b.seq = T0_MS, 0
    _metric(b, "bdSeq", datatype=D.INT64, long_value=0)
    ds = _metric(b, "T", alias=1, datatype=D.DATASET).dataset_value
    ds.num_of_columns = 4
    ds.columns.extend(["i64", "u64", "small", "long"])
    ds.types.extend([D.INT64, D.UINT64, D.INT64, D.INT64])
    for cells in ((4294967295, 7, 5, (1 << 64) - 1), (3, 3_000_000_000, 7, 2)):
        row = ds.rows.add()
        for i, v in enumerate(cells):
            if i == 3:
                row.elements.add().long_value = v
            else:
                row.elements.add().int_value = v
    pub.publish("spBv1.0/g/NBIRTH/n", b.SerializeToString(), qos=1)
    await until(lambda: src.stats.errors_by_reason.get("wrong_type") == 2, 30, "the two columns refused")
    await until(lambda: len(got) == 2, 30, "the other columns read")
    assert [(r.tag, r.value.tolist(), r.quality) for r in got] == [
        ("n/T/small", [5, 7], Quality.GOOD),
        ("n/T/long", [-1, 2], Quality.GOOD),
    ]
    assert src.stats.errors_by_reason == {"wrong_type": 2} and peers.asked == []
    assert (
        "g/n/: DataSet 'T' column 'u64': a cell 3000000000 of a column of a UInt64 came in int_value (32 bits), "
        "not in long_value as Sparkplug writes it: a number of 2**32 or more cut to its low 32 bits, or the number"
        in (src.stats.last_error or "")
    )
