"""Values bound for an integer PLC node (Int16, Byte, ... and the abstract Integer / UInteger): the error
says what was given and why it is refused; a fraction is never rounded, NaN and infinity never written."""

from __future__ import annotations

import re

import numpy as np
import pytest
from asyncua import ua

from devices.opcua.client import AbstractType, OpcUaTypeMismatch, convert_value

V = ua.VariantType


@pytest.mark.parametrize("kind", [V.Int16, V.Byte, V.UInt32, AbstractType.Integer, AbstractType.UInteger])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), np.float32("nan")])
def test_nan_and_infinity_to_an_integer_node_are_refused_as_such(kind, bad):
    # before: "write a whole number", as if the value had been a fraction
    with pytest.raises(OpcUaTypeMismatch, match="NaN and infinity are never written to an integer node"):
        convert_value(kind, bad, "ns=2;s=Count")


def test_a_fraction_is_never_rounded_and_the_error_says_so():
    with pytest.raises(OpcUaTypeMismatch, match=r"cannot write 2\.5 \(float\): .*never rounded or truncated"):
        convert_value(V.Int16, 2.5, "ns=2;s=Count")
    assert convert_value(V.Int16, 3.0, "n") == 3  # a whole float is its whole number


def test_an_out_of_range_float_is_named_as_the_float_it_was():
    # before: "cannot write 100000000000000000000 (int)", a number nobody wrote
    with pytest.raises(
        OpcUaTypeMismatch, match=r"node ns=2;s=Speed is Int16; cannot write 1e\+20 \(float\): out of range"
    ):
        convert_value(V.Int16, 1e20, "ns=2;s=Speed")
    with pytest.raises(
        OpcUaTypeMismatch, match=r"cannot write 70000\.0 \(float\): out of range -32768\.\.32767"
    ):
        convert_value(V.Int16, 70000.0, "ns=2;s=Speed")


@pytest.mark.parametrize(
    ("text", "kind"),
    [("-9.223372036854775809e+18", "Int64"), ("1.8446744073709551617e+19", "UInt64"), ("-1.0e+0", "UInt64")],
)
def test_a_whole_number_with_an_exponent_an_integer_node_refuses_is_named_as_written(text, kind):
    """``value: -9.223372036854775809e+18`` (-2**63 as a float, a WholeFloat keeping the number it shows) to an
    Int64 node or metric (2**64 + 1 to a UInt64): refused naming the text as the config writes it, as every other refusal of a config's
    number; it was named by its digits (-9223372036854775809), which the file does not hold."""
    from devices.mqtt.sparkplug_host import command_value
    from edge_agent.config import read_yaml
    from protocols import sparkplug as sp

    v = read_yaml(f"actions:\n  a:\n    value: {text}\n", "f.yaml")["actions"]["a"]["value"]
    dt = sp.DataType[kind.upper()]
    with pytest.raises(
        OpcUaTypeMismatch, match=rf"cannot write {re.escape(text)} \((int|float)\): out of range"
    ):
        convert_value(ua.VariantType[kind], v)
    with pytest.raises(ValueError, match=rf"cannot send {re.escape(text)} \((int|float)\): out of range"):
        command_value(dt, v, "g/n/m")


@pytest.mark.parametrize("text", ["0x7FFF", "1.50", "1.0e+3", "+1", "9.007199254740993e+15"])
def test_a_basedatatype_node_holding_text_gets_a_config_number_as_written_as_a_string_node_does(text):
    """``value: 0x7FFF`` to a BaseDataType node holding a String (a PLC's Variant HMI field) arrived as '32767'
    ('1.5' for ``1.50``, '1000.0' for ``1.0e+3``) while a String node got the text as written; it gets it as
    written now, and a BaseDataType node holding an integer still gets the number."""
    from edge_agent.config import read_yaml

    v = read_yaml(f"actions:\n  a:\n    value: {text}\n", "f.yaml")["actions"]["a"]["value"]
    assert convert_value(V.String, v) == text.replace("_", "")
    assert convert_value(V.Variant, v, "ns=2;s=X", V.String) == (text, V.String)
    whole = {"0x7FFF": 32767, "1.0e+3": 1000, "+1": 1, "9.007199254740993e+15": 9007199254740993}
    if text in whole:  # the number its text shows
        assert convert_value(V.Variant, v, "ns=2;s=X", V.Int64) == (whole[text], V.Int64)
