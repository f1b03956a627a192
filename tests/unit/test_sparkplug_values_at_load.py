"""A ``sparkplug_command`` action whose ``datatype`` is given is checked when the config is loaded: each value
the YAML fixes must fit that datatype, as the command converts it (``sparkplug_host.command_value``), or the
config is refused naming the file, the field and the metric. The former code checked only ``DateTime`` and
loaded the rest, to fail at every result (``300`` for a ``UInt8`` metric, text for an ``Int8`` one)."""

from __future__ import annotations

import pytest

from edge_agent.config import ConfigError, load_config
from tests.unit.test_sparkplug_datetime_at_load import HEAD


def _load(tmp_path, datatype: str, tail: str):
    path = tmp_path / "line3.yaml"
    path.write_text(
        HEAD.format(data=tmp_path / "data").replace("datatype: DateTime", f"datatype: {datatype}") + tail
    )
    return path, load_config(path)


# a value each datatype takes: the same action with it loads
FITS = {
    "UInt8": "    value: 255\n",
    "Int8": "    value: -128\n    mode: pulse\n    reset_value: 0\n",
    "UInt16": "    value: 65535\n",
    "Int16": "    value: 1\n",
    "Int32": "    value: 3.0\n",  # a whole number written with a point
    "Boolean": "    value: true\n",
    "Float": "    value: 2.5\n",
    "Double": "    value: 0.0\n",
}


@pytest.mark.parametrize(
    ("datatype", "tail", "field", "expected"),
    [
        (
            "UInt8",
            "    value: 300\n",
            "value",
            "metric g/n1/due is UInt8; cannot send 300 (int): out of range 0..255",
        ),
        ("Int8", "    value: 300\n", "value", "is Int8; cannot send 300 (int): out of range -128..127"),
        ("UInt16", "    value: -1\n", "value", "is UInt16; cannot send -1 (int): out of range 0..65535"),
        ("Int32", "    value: 1.5\n", "value", "is Int32; cannot send 1.5 (float): write a whole number"),
        ("Int8", "    value: abc\n", "value", "is Int8; cannot send 'abc' (str)"),
        ("Boolean", "    value: 2\n", "value", "is Boolean; cannot send 2 (int): write true or false"),
        ("Boolean", "    value: open\n", "value", "is Boolean; cannot send 'open' (str)"),
        ("Float", "    value: 1.0e+39\n", "value", "out of range of a 32-bit Float"),
        # true/false has no quotes to remove (it said "write a number without quotes")
        (
            "Float",
            "    value: true\n",
            "value",
            "is Float; cannot send True (bool): write a number; true and false are a Boolean metric's values",
        ),
        ("Float", "    value: 16777217\n", "value", "would arrive as 16777216"),
        # 0.0 to YAML, past a double's smallest: the metric got 0.0 (-0.0), as 1.0e-50 to a Float is refused
        (
            "Float",
            "    value: 1.0e-400\n",
            "value",
            "is Float; cannot send 1.0e-400 (float): too small for a 32-bit Float (REAL)",
        ),
        (
            "Double",
            "    value: -1.0e-330\n",
            "value",
            "cannot send -1.0e-330 (float): too small for a 64-bit Double",
        ),
        (
            "UInt8",
            "    value: 1\n    mode: pulse\n    reset_value: -1\n",
            "reset_value",
            "is UInt8; cannot send -1 (int): out of range 0..255",
        ),
        ("Int16", "    value: [1, 2]\n", "value", "a Sparkplug command carries one value"),
    ],
)
def test_a_commands_value_that_does_not_fit_its_datatype_is_refused_at_load_naming_file_field_and_metric(
    tmp_path, datatype, tail, field, expected
):
    path = tmp_path / "line3.yaml"
    with pytest.raises(ConfigError) as ei:
        _load(tmp_path, datatype, tail)
    errors = ei.value.errors
    assert any(e.startswith(f"{path}: actions.due") and f"{field}:" in e and expected in e for e in errors), (
        errors
    )
    _, cfg = _load(tmp_path, datatype, FITS[datatype])
    assert cfg.actions["due"].datatype == datatype


@pytest.mark.parametrize("datatype", ["String", None])
@pytest.mark.parametrize(
    ("tail", "field", "shown"),
    [
        ('    value: "STOP\\0RESET"\n', "value", "'\\x00' (at 4)"),
        ('    value: "\\e[2Jcleared"\n', "value", "'\\x1b' (at 0)"),
        ('    value: run\n    mode: pulse\n    reset_value: "idle\\x07"\n', "reset_value", "'\\x07' (at 4)"),
    ],
)
def test_a_string_commands_text_with_a_nul_or_another_control_character_is_refused_at_load(
    tmp_path, datatype, tail, field, shown
):
    """A ``sparkplug_command`` writing a String metric with a NUL, ESC or BEL in its fixed YAML value loaded and
    sent it as it was (a PLC's C string ends at the NUL: the node's tag held half of what was written). Now it
    is refused at load naming the file, the field and the metric, with or without a ``datatype`` (no datatype
    takes such text); tab, line feed and carriage return are text and load."""
    path = tmp_path / "line3.yaml"
    with pytest.raises(ConfigError) as ei:
        _load(tmp_path, datatype or "String", tail) if datatype else _load_untyped(tmp_path, tail)
    errors = ei.value.errors
    assert any(
        e.startswith(f"{path}: actions.due") and f"{field}:" in e and "g/n1/due" in e and shown in e
        for e in errors
    ), errors
    _, cfg = _load_untyped(tmp_path, '    value: "line 1\\nline 2\\tend\\r"\n')
    assert cfg.actions["due"].value == "line 1\nline 2\tend\r"


def _load_untyped(tmp_path, tail: str):
    path = tmp_path / "line3.yaml"
    path.write_text(HEAD.format(data=tmp_path / "data").replace("    datatype: DateTime\n", "") + tail)
    return path, load_config(path)
