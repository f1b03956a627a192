"""A whole number bound for a PLC's REAL or LREAL arrives as itself or is refused (devices.base.float_for_plc,
shared by OPC UA writes and Sparkplug commands): 16777217 sent as a Sparkplug Float arrived as 16777216. The
OPC UA side is checked against a real server in tests/integration/test_plc_exact_values.py."""

from __future__ import annotations

import numpy as np
import pytest

from devices.base import FractionFloat, float_for_plc
from devices.mqtt.client import SparkplugTypeMismatch, _sparkplug_value
from devices.mqtt.sparkplug_host import command_value, datatype_name
from protocols import sparkplug as sp


@pytest.mark.parametrize(
    ("dt", "value", "arrives"),
    [
        (sp.DataType.FLOAT, 16777217, "16777216"),
        (sp.DataType.FLOAT, -16777217, "-16777216"),
        (sp.DataType.FLOAT, np.int64(16777217), "16777216"),  # a NumPy integer is the integer it holds
        (sp.DataType.DOUBLE, 2**53 + 1, "9007199254740992"),
    ],
)
def test_a_whole_number_a_float_metric_cannot_hold_is_refused_naming_what_it_would_become(dt, value, arrives):
    with pytest.raises(SparkplugTypeMismatch, match=rf"cannot send .*would arrive as {arrives};"):
        _sparkplug_value(dt, value, "g/n/m")
    with pytest.raises(ValueError, match=rf"would arrive as {arrives};"):
        float_for_plc(np.int64(value) if abs(value) < 2**63 else value, single=dt is sp.DataType.FLOAT)


def test_a_number_too_small_for_a_real_is_refused_and_what_a_real_holds_is_kept():
    with pytest.raises(ValueError, match="too small for a 32-bit Float .* would arrive as 0;"):
        float_for_plc(1.0e-50, single=True)
    assert float_for_plc(1.0e-50, single=False) == 1.0e-50
    # whole numbers within 2**24 (and beyond it, those a REAL holds exactly), a whole number with a point past
    # 2**53 as a magnitude (1.0e+20, the largest REAL as printed), a fraction as its nearest REAL whatever its
    # digits (a setpoint 1234.5678, 100000.001, 0.100000001, a script's 2.9700000000000006), a float32 as itself
    for v in (
        16777216,
        -16777216,
        2**31,
        2**100,
        0,
        16777216.0,
        2.7,
        1.0e-30,
        1.0e20,
        3.4028235e38,
        np.float32(0.1),
        0.100000001,
        1234.5678,
        100000.001,
        3.14159265,
        2.9700000000000006,
    ):
        assert float_for_plc(v, single=True) == float(v)


@pytest.mark.parametrize(
    ("value", "arrives"),
    [
        (16777217.0, "16777216"),
        (-16777217.0, "-16777216"),
        (123456789.0, "123456792"),
        (123456790.0, "123456792"),  # the number a REAL prints for 123456792, not the one it holds
        (np.float64(20000001.0), "20000000"),
    ],
)
def test_a_whole_number_with_a_point_a_real_cannot_hold_is_refused_naming_what_it_would_become(
    value, arrives
):
    """16777217.0 was written to a REAL as 16777216 while 16777217 was refused: the point made it "the nearest
    REAL". A whole number is a count or a recipe number with or without its point. A Sparkplug Float metric
    takes the same rule."""
    pattern = rf"exactly only up to \+-16777216 \(2\*\*24\): {float(value)!r} would arrive as {arrives};"
    with pytest.raises(ValueError, match=pattern):
        float_for_plc(value, single=True)
    with pytest.raises(SparkplugTypeMismatch, match=rf"would arrive as {arrives};"):
        _sparkplug_value(sp.DataType.FLOAT, value, "g/n/m")
    assert float_for_plc(value, single=False) == value  # an LREAL holds it


def test_a_config_number_too_small_for_a_double_is_refused_by_a_float_or_double_metric_naming_its_text():
    """``value: 1.0e-400`` (``1.0e-330``) is 0.0 to YAML (the loader keeps its text: a ``FractionFloat``): a Float or
    Double metric was sent 0.0 (-0.0 for ``-1.0e-400``), as 1.0e-50 to a Float is refused. Refused as that is, by
    the command's one check (``command_value``: at load against a ``datatype``, at send against the birth's);
    a String metric still gets the text, and a zero written is 0."""
    for text, shown in (("1.0e-400", "0"), ("-1.0e-400", "-0"), ("1.0e-330", "0")):
        value = FractionFloat(float(text), text)
        for dt, kind in (
            (sp.DataType.FLOAT, "a 32-bit Float (REAL)"),
            (sp.DataType.DOUBLE, "a 64-bit Double"),
        ):
            with pytest.raises(ValueError) as ei:
                command_value(dt, value, "g/n/limit")
            said = str(ei.value)
            assert said.startswith(
                f"metric g/n/limit is {datatype_name(dt)}; cannot send {text} (float): "
            ), said
            assert f"too small for {kind}" in said and said.endswith(f"would arrive as {shown}; write 0"), (
                said
            )
        assert command_value(sp.DataType.STRING, value, "g/n/limit") == text
    for zero in (0.0, -0.0, 0):
        assert command_value(sp.DataType.DOUBLE, zero, "g/n/limit") == 0.0
    assert command_value(sp.DataType.DOUBLE, 2.2250738585072014e-308, "g/n/limit") == 2.2250738585072014e-308


def test_a_number_an_lreal_holds_only_as_a_subnormal_is_refused_as_a_real_one_below_its_smallest_is():
    """``1.0e-320`` to an LREAL arrived as 9.99988867182683e-321 (a double below about 2.2e-308 holds ever fewer
    digits, none past 4.9e-324), counted ok, while a REAL refuses a number below its smallest normal one (1.2e-38)
    as it would arrive with its digits gone. Refused as that is, for an OPC UA node's and a Sparkplug metric's one
    check (``float_for_plc``), naming what it would arrive as; the smallest normal double arrives as itself."""
    for value in (1.0e-320, -1.0e-320, 5e-324, 2.2e-308, np.float64(1.0e-310)):
        with pytest.raises(ValueError) as ei:
            float_for_plc(value, single=False)
        said = str(ei.value)
        assert said.startswith("too small for a 64-bit Double (LREAL) (below about 2.2e-308)"), said
        assert said.endswith(f"would arrive as {float(value):.9g}, its digits lost; write 0"), said
        with pytest.raises(ValueError, match="cannot send .*too small for a 64-bit Double"):
            command_value(sp.DataType.DOUBLE, value, "g/n/limit")
    with pytest.raises(ValueError, match=r"would arrive as 9\.99988867e-321, its digits lost; write 0"):
        float_for_plc(1.0e-320, single=False)
    for ok in (2.2250738585072014e-308, -2.2250738585072014e-308, 1.0e-300, 0.0, -0.0):
        assert float_for_plc(ok, single=False) == ok


def test_a_string_metric_gets_every_config_number_as_written(tmp_path):
    """A String metric got a config's number as its float's text: ``9.007199254740992e+15`` as
    '9007199254740992.0', ``1.50`` as '1.5', ``1.0e+3`` as '1000.0'. It gets the text the config holds (YAML's
    ``_`` dropped), every other metric the number; a number elsewhere in the config stays a plain float. So does an
    integer written in another form than its digits: ``0x7FFF`` was sent as '32767', ``+1`` as '1'."""
    from edge_agent.config import load_config

    path = tmp_path / "line1.yaml"
    texts = [
        "9.007199254740992e+15",
        "1.50",
        "1.0e+3",
        "1_000.5",
        "2.5",
        "-0.0",
        "0x7FFF",
        "+1",
        "1_000",
        "7",
    ]
    path.write_text(
        "agent: {id: gw}\n"
        "sources:\n  plc: {type: opcua, endpoint: 'opc.tcp://127.0.0.1:4840/', connect_timeout_s: 2.50}\n"
        "actions:\n"
        + "".join(
            f"  a{i}: {{type: opcua_write, source: plc, node_id: 'ns=2;s=X', value: {t}}}\n"
            for i, t in enumerate(texts)
        )
    )
    cfg = load_config(path)
    values = [cfg.actions[f"a{i}"].value for i in range(len(texts))]
    assert [command_value(sp.DataType.STRING, v, "g/n/label") for v in values] == [
        "9.007199254740992e+15",
        "1.50",
        "1.0e+3",
        "1000.5",
        "2.5",
        "-0.0",
        "0x7FFF",
        "+1",
        "1000",
        "7",
    ]
    assert [command_value(sp.DataType.DOUBLE, v, "g/n/limit") for v in values] == [
        9007199254740992.0,
        1.5,
        1000.0,
        1000.5,
        2.5,
        -0.0,
        32767.0,
        1.0,
        1000.0,
        7.0,
    ]
    assert [command_value(sp.DataType.INT16, v, "g/n/count") for v in values[6:]] == [32767, 1, 1000, 7]
    assert command_value(sp.DataType.BOOLEAN, values[7], "g/n/flag") is True
    assert command_value(sp.DataType.INT64, values[2], "g/n/count") == 1000
    assert type(cfg.sources["plc"].connect_timeout_s) is float
    assert [type(v).__name__ for v in values[6:]] == ["ShownInt", "ShownInt", "ShownInt", "int"]
