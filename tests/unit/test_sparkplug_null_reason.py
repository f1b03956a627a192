"""Why a Sparkplug B metric sent with no value (``is_null``), or NaN, makes its tag BAD: its node's word when it
said one.

A node flags a metric ``is_null`` when its value is gone (Ignition: a tag whose PLC item is gone), often with a
Quality property saying why (``Bad_NotConnected``, a QualityCode). The OPC UA source passes a node's null value
with the server's status name, ``null_value`` only when the status said nothing more; the Sparkplug host said
``null_value`` always, the node's own word lost."""

from __future__ import annotations

from devices.base import Quality
from devices.mqtt.settings import SparkplugHostSettings
from devices.mqtt.sparkplug_host import SparkplugHost
from protocols import sparkplug as sp

D = sp.DataType
BAD_NOT_CONNECTED = 0x808A0000


def _host() -> SparkplugHost:
    return SparkplugHost("src", SparkplugHostSettings(), lambda t, b: None, lambda r, d: None)


def _born(h: SparkplugHost) -> None:
    member = sp.Metric("Speed", None, D.DOUBLE, 3.0)
    udt = sp.Template(version=None, ref="Motor", is_definition=False, metrics=[member])
    metrics = [
        sp.Metric("bdSeq", None, D.INT64, 0),
        sp.Metric("Temp", 1, D.DOUBLE, 20.0),
        sp.Metric("Level", 2, D.DOUBLE, 3.0),
        sp.Metric("Flow", 3, D.DOUBLE, 1.5),
        sp.Metric("Motor", 4, D.TEMPLATE, udt),
        sp.Metric("Pump", 5, D.TEMPLATE, udt),
    ]
    assert len(h.handle("spBv1.0/g/NBIRTH/n", sp.encode(sp.Payload(1000, 0, metrics)), 1.0)) == 5


def test_a_null_metric_with_a_quality_not_good_says_that_quality_a_bare_one_null_value():
    h = _host()
    _born(h)
    ndata = [
        sp.Metric(None, 1, D.DOUBLE, None, is_null=True, quality="Bad_NotConnected"),  # Ignition 8's text
        sp.Metric(None, 2, D.DOUBLE, None, is_null=True, quality=BAD_NOT_CONNECTED),  # its QualityCode
        sp.Metric(None, 3, D.DOUBLE, None, is_null=True),  # no word of why
        sp.Metric(None, 4, D.TEMPLATE, None, is_null=True, quality=500),  # a UDT instance, Ignition 7's stale
        sp.Metric(None, 5, D.TEMPLATE, None, is_null=True, quality=192),  # ... said good: no word of why
    ]
    got = h.handle("spBv1.0/g/NDATA/n", sp.encode(sp.Payload(2000, 1, ndata)), 2.0)
    assert [(r.tag, r.value, r.quality, r.reason) for r in got] == [
        ("n/Temp", 20.0, Quality.BAD, "Bad_NotConnected"),
        ("n/Level", 3.0, Quality.BAD, "BadNotConnected"),
        ("n/Flow", 1.5, Quality.BAD, "null_value"),
        ("n/Motor/Speed", 3.0, Quality.BAD, "Bad_Stale"),
        ("n/Pump/Speed", 3.0, Quality.BAD, "null_value"),
    ]


def test_a_nan_metric_with_a_quality_not_good_says_that_quality_a_bare_one_non_finite():
    """A NaN metric is BAD (``non_finite: bad``) whatever its Quality property says; its reason was
    ``non_finite`` even where the node said why, where the OPC UA source keeps a status's name for such a
    value and says ``non_finite`` only when the status said nothing more."""
    h = _host()
    _born(h)
    nan = float("nan")
    ndata = [
        sp.Metric(None, 1, D.DOUBLE, nan, quality="Bad_SensorFailure"),
        sp.Metric(None, 2, D.DOUBLE, nan, quality=0x808C0000),
        sp.Metric(None, 3, D.DOUBLE, nan),
        sp.Metric(None, 3, D.DOUBLE, float("inf"), quality=192),
    ]
    got = h.handle("spBv1.0/g/NDATA/n", sp.encode(sp.Payload(2000, 1, ndata)), 2.0)
    assert [(r.tag, r.quality, r.reason) for r in got] == [
        ("n/Temp", Quality.BAD, "Bad_SensorFailure"),
        ("n/Level", Quality.BAD, "BadSensorFailure"),
        ("n/Flow", Quality.BAD, "non_finite"),
        ("n/Flow", Quality.BAD, "non_finite"),
    ]
