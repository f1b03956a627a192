"""A write value's exact number (``WholeFloat``, ``FractionFloat``; edge_agent/config.py ``_exact_writes``) is kept
however the float is written: an explicit ``!!float`` tag skipped the check (review /work/notes57/review_mends1
LOW 5), so ``value: !!float 9007199254740992.5`` reached an Int64 metric as 9007199254740992 while the untagged
text is refused. Checked at load, as ``edge-agent validate`` does, with no peer."""

from __future__ import annotations

import pytest

from devices.base import FractionFloat, WholeFloat
from devices.mqtt.sparkplug_host import command_value
from edge_agent.config import ConfigError, load_config
from protocols import sparkplug as sp


def _sparkplug_config(tmp_path, value: str, datatype: str = "Int64"):
    path = tmp_path / "line1.yaml"
    path.write_text(
        f"""agent: {{id: gw}}
sources:
  bus: {{type: mqtt, port: 1883, subscriptions: [{{topic: "spBv1.0/#", codec: sparkplug_b}}]}}
actions:
  total: {{type: sparkplug_command, source: bus, group: g, edge_node: n1, when: {{verdict: NG}}, metric: total,
          datatype: {datatype}, value: {value}}}
"""
    )
    return path


@pytest.mark.parametrize("value", ["!!float 9007199254740992.5", "!!float 1.0000000000000000001"])
def test_a_fraction_tagged_float_is_refused_by_an_integer_metric_as_the_untagged_one_is(tmp_path, value):
    with pytest.raises(ConfigError, match=r"actions\.total: value: .*Int64; cannot send .*\.\d*[1-9]"):
        load_config(_sparkplug_config(tmp_path, value))
    with pytest.raises(ConfigError, match=r"actions\.total: value: .*Int64; cannot send"):
        load_config(_sparkplug_config(tmp_path, value.removeprefix("!!float ")))


@pytest.mark.parametrize("value", ["!!float 9007199254740993.0", "!!float 9007199254740993"])
def test_a_whole_number_a_tagged_float_does_not_hold_is_refused_at_load(tmp_path, value):
    with pytest.raises(
        ConfigError, match=r"not the whole number 9007199254740993 it shows.*without the !!float tag"
    ):
        load_config(_sparkplug_config(tmp_path, value))


def test_a_tagged_whole_number_with_an_exponent_reaches_an_integer_metric_as_the_config_shows(tmp_path):
    value = load_config(_sparkplug_config(tmp_path, "!!float 9.007199254740993e+15")).actions["total"].value
    assert command_value(sp.DataType.INT64, value, "total") == 2**53 + 1  # was 9007199254740992
    for plain in ("!!float 2.5", "!!float 10", "!!float 1.0e+16"):  # exact: the float, as before
        value = load_config(_sparkplug_config(tmp_path, plain, "Double")).actions["total"].value
        # the float (a String metric gets its text, ``ShownFloat``), not a number the text shows apart from it
        assert not isinstance(value, WholeFloat | FractionFloat) and value == float(plain.split()[1])
        assert command_value(sp.DataType.DOUBLE, value, "total") == float(plain.split()[1])
