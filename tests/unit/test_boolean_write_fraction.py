"""A fraction in a config whose float is whole (``FractionFloat``: ``1.0000000000000000001`` is 1.0 to YAML) is
refused by a Boolean node or metric as ``1.5`` is (review /work/notes57/review_mends1 LOW 6): it was written
``true``, counted ok, while 1.5 was refused. The value is the one the config file gives; the OPC UA node's type
is known only online, so its conversion is checked directly (the write path of every opcua_write)."""

from __future__ import annotations

import pytest
from asyncua import ua

from devices.mqtt.sparkplug_host import command_value
from devices.opcua.client import OpcUaTypeMismatch, convert_value
from edge_agent.config import ConfigError, load_config, read_yaml
from protocols import sparkplug as sp


def test_a_fraction_whose_float_is_one_is_refused_by_a_boolean_metric_at_load(tmp_path):
    path = tmp_path / "line1.yaml"
    path.write_text(
        """agent: {id: gw}
sources:
  bus: {type: mqtt, port: 1883, subscriptions: [{topic: "spBv1.0/#", codec: sparkplug_b}]}
actions:
  flag: {type: sparkplug_command, source: bus, group: g, edge_node: n1, when: {verdict: NG}, metric: flag,
         datatype: Boolean, value: 1.0000000000000000001}
"""
    )
    with pytest.raises(
        ConfigError, match=r"actions\.flag: value: .*Boolean; cannot send 1\.0000000000000000001 \(float\)"
    ):
        load_config(path)


@pytest.mark.parametrize("text", ["1.0000000000000000001", "0." + "0" * 330 + "1"])  # 1.0 and 0.0 to YAML
def test_a_fraction_whose_float_is_zero_or_one_is_refused_by_a_boolean_node_or_metric(text):
    value = read_yaml(f"actions:\n  a: {{value: {text}}}\n", "line1.yaml")["actions"]["a"]["value"]
    assert float(value) in (0.0, 1.0)
    with pytest.raises(ValueError, match=r"Boolean; cannot send .* \(float\): write true or false"):
        command_value(sp.DataType.BOOLEAN, value, "flag")
    with pytest.raises(
        OpcUaTypeMismatch, match=r"is Boolean; cannot write .* \(float\): write true or false"
    ):
        convert_value(ua.VariantType.Boolean, value, "ns=2;s=B")
    with pytest.raises(OpcUaTypeMismatch, match=r"holding a Boolean; cannot write"):  # a BaseDataType node
        convert_value(ua.VariantType.Variant, value, "ns=2;s=B", held=ua.VariantType.Boolean)
    # exact forms are the Boolean they were
    for exact, meant in ((1.0, True), (0, False), (True, True)):
        assert command_value(sp.DataType.BOOLEAN, exact, "flag") is meant
        assert convert_value(ua.VariantType.Boolean, exact, "ns=2;s=B") is meant
