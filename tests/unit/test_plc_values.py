"""Values bound for a PLC through a Sparkplug command: typed strictly by the metric's datatype. The
OPC UA side is checked against a real server in tests/integration/test_safe_outputs.py."""

from __future__ import annotations

import numpy as np
import pytest

from devices.mqtt.client import SparkplugTypeMismatch, _sparkplug_value
from protocols import sparkplug as sp


@pytest.mark.parametrize("dt", [sp.DataType.FLOAT, sp.DataType.DOUBLE])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), np.float32("nan"), 10**400])
def test_a_float_metric_never_gets_nan_infinity_or_an_overflow(dt, bad):
    with pytest.raises(SparkplugTypeMismatch, match=rf"metric g/n/m is {dt.name.title()}; cannot send"):
        _sparkplug_value(dt, bad, "g/n/m")


def test_a_float_metric_takes_numbers_within_its_range():
    assert _sparkplug_value(sp.DataType.FLOAT, 3, "g/n/m") == 3.0
    assert _sparkplug_value(sp.DataType.FLOAT, np.float32(2.5), "g/n/m") == 2.5
    assert _sparkplug_value(sp.DataType.DOUBLE, 1e300, "g/n/m") == 1e300
    with pytest.raises(SparkplugTypeMismatch, match="out of range of a 32-bit Float"):
        _sparkplug_value(sp.DataType.FLOAT, 1e39, "g/n/m")


def test_numpy_scalars_count_as_their_values_and_strings_never_do():
    assert _sparkplug_value(sp.DataType.BOOLEAN, np.bool_(True), "g/n/m") is True
    assert _sparkplug_value(sp.DataType.INT32, np.int64(7), "g/n/m") == 7
    for bad in ("false", "0"):
        with pytest.raises(SparkplugTypeMismatch, match="write true or false without quotes"):
            _sparkplug_value(sp.DataType.BOOLEAN, bad, "g/n/m")


def test_an_opcua_base_data_type_node_gets_the_values_own_kind_strictly():
    """A node declared BaseDataType (any value) that holds nothing yet: the written Variant's type comes
    from the value, a whole number as Int32 unless it needs Int64, and the float and mixed-array rules hold."""
    from asyncua import ua

    from devices.opcua.client import OpcUaTypeMismatch, to_variant

    V = ua.VariantType
    cases = [(True, V.Boolean), (3, V.Int32), (2**40, V.Int64), (1.5, V.Double), ("NG", V.String)]
    for value, kind in cases:
        got = to_variant(V.Variant, value, "ns=2;s=Any")
        assert (got.Value, got.VariantType) == (value, kind)
    got = to_variant(V.Variant, [1, 2**40], "ns=2;s=Any")
    assert (got.Value, got.VariantType) == ([1, 2**40], V.Int64)
    assert to_variant(V.Variant, np.float32(2.5), "n").VariantType == V.Double
    for bad, why in [
        (float("nan"), "NaN and infinity are never sent"),
        (2**70, "out of range of an Int64"),
        ([1, "a"], "an array needs elements of one kind"),
        (b"x", "write true/false, a number or text"),
    ]:
        with pytest.raises(OpcUaTypeMismatch, match=f"node ns=2;s=Any is .*{why}"):
            to_variant(V.Variant, bad, "ns=2;s=Any")


def test_an_opcua_base_data_type_node_gets_the_type_it_holds_by_that_types_rules():
    """A BaseDataType node holding a Double written 5 got an Int32 (a lenient server retypes the node under
    the PLC program reading an LREAL); now the held type is kept, and a value it cannot take refused."""
    from asyncua import ua

    from devices.opcua.client import OpcUaTypeMismatch, to_variant

    V = ua.VariantType
    for value, held, want in [
        (5, V.Double, 5.0),
        (1, V.Boolean, True),
        (12, V.String, "12"),
        (3.0, V.UInt16, 3),
        ([1, 2], V.Float, [1.0, 2.0]),
    ]:
        got = to_variant(V.Variant, value, "n", held=held)
        assert (got.Value, got.VariantType) == (want, held) and type(got.Value) is type(want)
    # the elements of a Variant[] array hold any type: the value's own kind
    assert to_variant(V.Variant, 5, "n", held=V.Variant).VariantType == V.Int32
    for value, held, why in [
        ("1.5", V.Double, "is BaseDataType holding a Double; cannot write '1.5' .*without quotes"),
        (2.5, V.Int32, "is BaseDataType holding an Int32; cannot write 2.5 .*never rounded"),
        (5, V.NodeId, "is BaseDataType holding a NodeId; cannot write 5 .*the agent writes only"),
        ([1, "a"], V.Double, "is BaseDataType holding a Double; cannot write 'a'"),
    ]:
        with pytest.raises(OpcUaTypeMismatch, match=f"node n {why}.*the node's type is kept"):
            to_variant(V.Variant, value, "n", held=held)


def test_opcua_number_integer_and_uinteger_nodes_get_a_concrete_type_that_fits():
    """The abstract numeric DataTypes (no value is of them): Int32 else Int64 for Integer, UInt32 else
    UInt64 for UInteger (never negative), Double for a Number's fractions; an array gets the widest."""
    from asyncua import ua

    from devices.opcua.client import AbstractType, OpcUaTypeMismatch, to_variant

    V, A = ua.VariantType, AbstractType
    for kind, value, want in [
        (A.Integer, 5, V.Int32),
        (A.Integer, -(2**40), V.Int64),
        (A.UInteger, 5, V.UInt32),
        (A.UInteger, 2**40, V.UInt64),
        (A.Number, 1.5, V.Double),
        (A.Number, 7, V.Int32),
    ]:
        got = to_variant(kind, value, "ns=2;s=N")
        assert (got.Value, got.VariantType) == (value, want)
    assert to_variant(A.UInteger, [1, 2**40], "n").VariantType == V.UInt64
    assert to_variant(A.Number, [1, 2.5], "n").Value == [1.0, 2.5]
    assert to_variant(A.Integer, 5, "n", held=V.Int16).VariantType == V.Int16  # the type the node holds
    # a value that does not fit the held type is refused naming it: sent as an Int32, a lenient server changed
    # the node's type under the PLC's INT
    with pytest.raises(
        OpcUaTypeMismatch, match="node n is Integer holding an Int16; cannot write 70000 .*kept"
    ):
        to_variant(A.Integer, 70000, "n", held=V.Int16)
    # true/false are 1/0 to Integer and UInteger, as to the concrete integer types, and to a Number holding one
    for kind, held, want in [
        (A.Integer, None, V.Int32),
        (A.UInteger, V.UInt16, V.UInt16),
        (A.Number, V.Int16, V.Int16),
    ]:
        got = to_variant(kind, True, "n", held=held)
        assert (type(got.Value), got.Value, got.VariantType) == (int, 1, want)
    for kind, bad, why in [
        (A.UInteger, -1, "a UInteger node takes whole numbers >= 0"),
        (A.Integer, "5", "write a whole number"),
        (A.Integer, 2**63, "out of range of an Int64"),
        (A.Number, False, "write a number; true and false are a Boolean node's values"),
        (A.Number, float("nan"), "NaN and infinity are never sent"),
    ]:
        with pytest.raises(OpcUaTypeMismatch, match=f"node ns=2;s=N is {kind.name}; cannot write .*{why}"):
            to_variant(kind, bad, "ns=2;s=N")


def test_opcua_times_outside_a_datetimes_range_and_non_finite_text_are_refused():
    """1500-01-01 used to be sent as OPC UA's null time (no time at all), and NaN to a String node as the
    text 'nan'; a String node takes text or a finite number (as its text)."""
    from asyncua import ua

    from devices.opcua.client import OpcUaTypeMismatch, to_variant

    V = ua.VariantType
    for bad in ("1500-01-01T00:00:00Z", "0001-01-01T00:00:00Z"):
        with pytest.raises(
            OpcUaTypeMismatch, match="node n is DateTime; cannot write .*1601-01-01..9999-12-31"
        ):
            to_variant(V.DateTime, bad, "n")
    assert to_variant(V.DateTime, "9999-12-31T23:59:59Z", "n").Value.year == 9999
    for bad in (float("nan"), float("inf"), np.float64("nan")):
        with pytest.raises(OpcUaTypeMismatch, match="node n is String; cannot write .*NaN and infinity"):
            to_variant(V.String, bad, "n")
    assert to_variant(V.String, 12, "n").Value == "12" and to_variant(V.String, 2.5, "n").Value == "2.5"


@pytest.mark.parametrize(
    ("written", "named"),
    [
        ("0x" + "F" * 4000, "too long a number (0xFFFF"),
        ("-0x" + "F" * 4000, "too long a number (-0xFFF"),
        ("0b1" + "0" * 14000, "too long a number (0b1000"),
        ("0x10000000000000001", "0x10000000000000001 is held by no integer node"),
    ],
)
@pytest.mark.parametrize(
    "target", ["opcua_write, source: plc, node_id: 'ns=2;s=Serial'", "sparkplug_command"]
)
def test_a_whole_number_no_node_holds_is_refused_naming_it_as_written_and_how_many_digits_it_has(
    tmp_path, written, named, target
):
    """A pasted key of 4000 hex digits as a write value was refused naming the file and field, but in Python's
    words ("Exceeds the limit (4300 digits) for integer string conversion; use sys.set_int_max_str_digits()"):
    a fix for the interpreter, not the config. It is said in the config's: too long a number, its two ends and
    how many digits it has; a shorter one no node holds (2**64 + 1) is named as written, not by its digits."""
    from edge_agent.config import ConfigError, load_config

    if target == "sparkplug_command":
        target = "sparkplug_command, source: broker, group: g, edge_node: e, metric: Serial"
    path = tmp_path / "line3.yaml"
    path.write_text(
        "agent: {id: gw}\n"
        "sources:\n"
        "  plc: {type: opcua, endpoint: 'opc.tcp://127.0.0.1:4840/plc/'}\n"
        "  broker: {type: mqtt, host: 127.0.0.1, sparkplug: {}}\n"
        f"actions:\n  out: {{type: {target}, value: {written}}}\n"
    )
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    (error,) = ei.value.errors
    assert error.startswith(f"{path}: actions.out: value: {named}"), error
    assert "Exceeds the limit" not in error and "set_int_max_str_digits" not in error, error
    if written.startswith(("0x", "-0x", "0b")) and len(written) > 80:
        digits = len(written.lstrip("-")) - 2
        assert f"{digits} {'hex' if 'x' in written else 'binary'} digits)" in error, error
        assert "quote it" in error and "quote it:" not in error, error  # no 4000-digit quote
    else:
        assert error.endswith(f"quote it: value: '{written}'"), error
