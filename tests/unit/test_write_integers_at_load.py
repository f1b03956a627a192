"""A whole number no numeric node holds (beyond UInt64 and Int64, the widest integer types, and not held
exactly by a REAL or LREAL either) is refused when the config is loaded, with the file and the field, unless
the action can only write it as text (a Sparkplug String metric). The former code loaded 2**64 + 1 and
left the refusal to every result at run time; and such a number quoted, the only way to give it to an OPC
UA String node as text, was refused as 'a number in quotes'."""

from __future__ import annotations

import pytest

from edge_agent.config import ConfigError, load_config

HEAD = """\
agent:
  id: gw
  data_dir: {data}
sources:
  plc:
    type: opcua
    endpoint: opc.tcp://127.0.0.1:4840/
  broker:
    type: mqtt
    host: 127.0.0.1
    port: 1883
actions:
  out:
"""
OPCUA = "    type: opcua_write\n    source: plc\n    node_id: ns=2;s=Serial\n"
SPARKPLUG = (
    "    type: sparkplug_command\n    source: broker\n    group: g\n    edge_node: e\n    metric: Serial\n"
)
HELD_BY_NONE = "is held by no integer node (the widest, Int64 and UInt64, hold -9223372036854775808..18446744073709551615)"


def _load(tmp_path, tail: str):
    path = tmp_path / "line3.yaml"
    path.write_text(HEAD.format(data=tmp_path / "data") + tail)
    return path


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (
            OPCUA + "    value: 18446744073709551617\n",  # 2**64 + 1
            f"line3.yaml: actions.out: value: 18446744073709551617 {HELD_BY_NONE} and by no REAL or LREAL "
            "exactly (it would arrive as 1.8446744073709552e+19); if it is text for a String node (a serial "
            "number), quote it: value: '18446744073709551617'",
        ),
        (
            OPCUA + "    value: [1, -9223372036854775809]\n",
            f"line3.yaml: actions.out: value[1]: -9223372036854775809 {HELD_BY_NONE}",  # the element named
        ),
        (
            OPCUA + "    value: 1\n    mode: on_change\n    reset_value: 99999999999999999999999\n",
            f"line3.yaml: actions.out: reset_value: 99999999999999999999999 {HELD_BY_NONE}",
        ),
        (
            SPARKPLUG
            + "    value: 18446744073709551617\n",  # the metric's type, from its birth, is not known
            f"line3.yaml: actions.out: value: 18446744073709551617 {HELD_BY_NONE}",
        ),
    ],
)
def test_a_whole_number_no_numeric_node_holds_is_refused_at_load(tmp_path, tail, expected):
    path = _load(tmp_path, tail)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    errors = [e.replace(f"{path}: ", "line3.yaml: ", 1) for e in ei.value.errors]
    assert len(errors) == 1 and errors[0].startswith(expected), errors


@pytest.mark.parametrize(
    ("tail", "value"),
    [
        (OPCUA + "    value: 18446744073709551615\n", 2**64 - 1),  # a UInt64 holds it
        (OPCUA + "    value: -9223372036854775808\n", -(2**63)),  # an Int64 holds it
        (OPCUA + "    value: 1180591620717411303424\n", 2**70),  # an LREAL holds it exactly
        (OPCUA + "    value: '18446744073709551617'\n", "18446744073709551617"),  # text for a String node
        (SPARKPLUG + "    datatype: String\n    value: 18446744073709551617\n", 2**64 + 1),  # only text
    ],
)
def test_a_whole_number_some_node_takes_loads(tmp_path, tail, value):
    assert load_config(_load(tmp_path, tail)).actions["out"].value == value
