"""A whole number bound for a PLC's REAL or LREAL arrives as itself or is refused (devices.base.float_for_plc,
shared by OPC UA writes and Sparkplug commands): 16777217 sent as a Sparkplug Float arrived as 16777216. The
OPC UA side is checked against a real server in tests/integration/test_plc_exact_values.py."""

from __future__ import annotations

import numpy as np
import pytest

from devices.base import float_for_plc
from devices.mqtt.client import SparkplugTypeMismatch, _sparkplug_value
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
    # whole numbers within 2**24 (and beyond it, those a REAL holds exactly), a number with a point as its
    # nearest REAL when that REAL reads as the number given (2.7, 1.0e+20), a NumPy float32 as itself
    # or its 9 digits (0.100000001: the REAL 0.1 printed in full)
    for v in (
        16777216,
        -16777216,
        2**31,
        2**100,
        0,
        2.7,
        1.0e-30,
        1.0e20,
        3.4028235e38,
        np.float32(0.1),
        0.100000001,
    ):
        assert float_for_plc(v, single=True) == float(v)


@pytest.mark.parametrize(
    ("value", "arrives"),
    [
        (16777217.0, "16777216.0"),
        (123456789.0, "123456790.0"),
        (100000.001, "100000.0"),
        (3.14159265, "3.1415927"),
    ],
)
def test_a_number_with_a_point_a_real_holds_as_another_number_is_refused_naming_it(value, arrives):
    """16777217.0 was written to a REAL as 16777216 while 16777217 was refused: the point made it "the nearest
    REAL" whatever number that was. A Sparkplug Float metric takes the same rule."""
    with pytest.raises(
        ValueError, match=rf"holds about 7 significant digits: {value!r} would arrive as {arrives};"
    ):
        float_for_plc(value, single=True)
    with pytest.raises(SparkplugTypeMismatch, match=rf"would arrive as {arrives};"):
        _sparkplug_value(sp.DataType.FLOAT, value, "g/n/m")
    assert float_for_plc(value, single=False) == value  # an LREAL holds it
