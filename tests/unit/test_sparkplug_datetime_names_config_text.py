"""A command to a metric whose birth says DateTime is checked at send time (``command_value``). A config's
``9.007199254740993e+15`` (a ``WholeFloat``: 9007199254740992.0 to YAML) is no time, and the refusal names it as
the config writes it: the former code said "9007199254740992.0 is no time", a number the config does not show
(review /work/notes58/review_proto/findings.md L2). The load-time check (``datatype: DateTime``) already named it."""

from __future__ import annotations

import pytest

from devices.base import WholeFloat
from devices.mqtt.sparkplug_host import command_value
from protocols import sparkplug as sp


def test_a_datetime_metrics_refusal_names_the_configs_text_not_its_float():
    written = WholeFloat(9007199254740992.0, 9007199254740993, "9.007199254740993e+15")
    with pytest.raises(ValueError) as refused:
        command_value(sp.DataType.DATETIME, written, "Due")
    assert "9.007199254740993e+15 is no time" in str(refused.value)
    assert "9007199254740992" not in str(refused.value)


def test_a_string_metric_gets_a_number_a_float_does_not_hold_as_the_config_writes_it():
    """``value: 9.007199254740993e+15`` in a command to a String metric was sent as '9007199254740992.0', another
    number, and ``9007199254740992.5`` as the same, its fraction gone (review /work/notes58/review_proto L3): the
    metric gets the text the config writes (YAML's ``_`` dropped), an integer metric the number it shows."""
    from edge_agent.config import read_yaml

    doc = read_yaml(
        "actions:\n  a: {value: [9.007199254740993e+15, 9007199254740992.5, 1.000_000_000_000_000_000_1, 2.5]}\n",
        "line3.yaml",
    )
    big, half, tiny, plain = doc["actions"]["a"]["value"]
    assert (
        command_value(sp.DataType.STRING, big, "Label") == "9.007199254740993e+15"
    )  # was '9007199254740992.0'
    assert (
        command_value(sp.DataType.STRING, half, "Label") == "9007199254740992.5"
    )  # was '9007199254740992.0'
    assert command_value(sp.DataType.STRING, tiny, "Label") == "1.0000000000000000001"  # was '1.0'
    assert command_value(sp.DataType.STRING, plain, "Label") == "2.5"
    assert command_value(sp.DataType.INT64, big, "Total") == 2**53 + 1


def test_a_fraction_whose_float_is_whole_is_no_time_and_is_named_as_the_config_writes_it():
    """``1700000000000.00000000001`` and ``9007199254740992.5`` (``FractionFloat``: whole floats to YAML) to a
    DateTime metric or node were refused as "1700000000000.0 is no time", "9007199254740992.0": numbers the config
    does not show, its fraction gone from the message. Each is refused, named as written."""
    from asyncua import ua

    from devices.opcua.client import OpcUaTypeMismatch, convert_value
    from edge_agent.config import read_yaml

    doc = read_yaml("actions:\n  a: {value: [1700000000000.00000000001, 9007199254740992.5]}\n", "line3.yaml")
    for value in doc["actions"]["a"]["value"]:
        text = value.text
        with pytest.raises(ValueError) as refused:
            command_value(sp.DataType.DATETIME, value, "Due")
        assert f"cannot send {text} (float): {text} is no time" in str(refused.value), str(refused.value)
        with pytest.raises(OpcUaTypeMismatch) as refused_node:
            convert_value(ua.VariantType.DateTime, value, "ns=2;s=Due")
        assert f"cannot write {text} (float)" in str(refused_node.value), str(refused_node.value)
