"""A value the agent writes to a PLC is checked when the config is loaded: one no node can take (NaN,
infinity, a date YAML built from an unquoted time) and one YAML 1.1 reads as another number than the file
shows (010 is the octal 8, 1:30 the base-60 90) are refused with the file and the field named, before
anything runs. The former code took them: NaN reached the source (refused there at every result), 010 was
written to the PLC as 8."""

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
actions:
  out:
    type: opcua_write
    source: plc
    node_id: ns=2;s=Recipe
"""


def _errors(tmp_path, tail: str) -> list[str]:
    path = tmp_path / "line3.yaml"
    path.write_text(HEAD.format(data=tmp_path / "data") + tail)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    return [e.replace(f"{path}: ", "line3.yaml: ", 1) for e in ei.value.errors]


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        # named as the file writes them (.nan, -.Inf, 1.0e+400), not as Python prints the float (nan, -inf, inf)
        (
            "    value: .nan\n",
            "line3.yaml: actions.out.value: .nan is never written: no node takes NaN or infinity",
        ),
        (
            "    value: [1, -.Inf]\n",
            "line3.yaml: actions.out.value[1]: -.Inf is never written",
        ),  # the element
        (
            "    value: 1\n    reset_value: .inf\n",
            "line3.yaml: actions.out.reset_value: .inf is never written",
        ),
        ("    value: 1.0e+400\n", "line3.yaml: actions.out.value: 1.0e+400 is never written"),
        # a time with its zone is taken, quoted or not (tests/integration/test_opcua_bytes_times_and_halts.py);
        # one without, YAML's or quoted, is refused: a PLC in another zone would take it as another instant
        (
            "    value: 2026-11-30T12:00:00\n",
            "line3.yaml: actions.out.value: 2026-11-30T12:00:00 has no zone: a DateTime node (or a PLC in another "
            "time zone) would take it as another instant; write value with Z (UTC) or an offset",
        ),
        (
            "    value: 2026-11-30T12:00:00+15:00\n",
            "line3.yaml: actions.out.value: 2026-11-30T12:00:00+15:00: its UTC offset +15:00 is no time zone's",
        ),
        (
            "    value: 2026-11-30\n",
            "line3.yaml: actions.out.value: 2026-11-30 was read by YAML as a date, which no node takes as such; "
            "for a DateTime node write value as a time with its zone: 2026-11-30T00:00:00Z",
        ),
        # YAML 1.1 reads 1e3 (no point, no sign in the exponent) as text however it is written: the former
        # message said "write value: 1e3 without quotes", which it already was
        (
            "    value: 1e3\n",
            "line3.yaml: actions.out.value: '1e3' is text to YAML, not a number (YAML 1.1 reads a number such "
            "as 1e3 or 08 as text, quoted or not): a Boolean or numeric node must never get a string; write "
            "value: 1000.0",
        ),
        # YAML 1.2's octal 0o17 (15) is text to YAML 1.1, quoted or not: it loaded, a String node got the
        # text '0o17' and a numeric node refused it only at connect ("without quotes": it had none)
        (
            "    value: 0o17\n",
            "line3.yaml: actions.out.value: '0o17' is text to YAML, not a number (YAML 1.1 reads an octal such "
            "as 0o17 as text, quoted or not; YAML 1.2 reads it as 15): a Boolean or numeric node must never get "
            "a string, and a String node would get the text '0o17'; write value: 15 (for a String node, state "
            "it as text: value: {text: '0o17'})",
        ),
        ("    value: [1, -0o7]\n", "line3.yaml: actions.out.value[1]: '-0o7' is text to YAML, not a number"),
        # 0x1F is 31 to YAML 1.1, 0X1F (a prefix in upper case) text, quoted or not: it loaded, a String node got
        # the text '0X1F' and a numeric node refused it only at connect ("without quotes": it had none)
        (
            "    value: 0X1F\n",
            "line3.yaml: actions.out.value: '0X1F' is text to YAML, not a number (YAML 1.1 reads a prefix in lower "
            "case only, 0x1F, and 0X1F as text, quoted or not; it means 31): a Boolean or numeric node must never "
            "get a string, and a String node would get the text '0X1F'; write value: 31 (for a String node, state "
            "it as text: value: {text: '0X1F'})",
        ),
        ("    value: 1\n    reset_value: -0B101\n", "actions.out.reset_value: '-0B101' is text to YAML"),
        ("    value: 0O17\n", "actions.out.value: '0O17' is text to YAML, not a number"),
        # y and n are text to PyYAML, quoted or not: the former message said to write false "without quotes"
        (
            "    value: 1\n    reset_value: n\n",
            "line3.yaml: actions.out.reset_value: 'n' is text to YAML, not a boolean (YAML 1.1 reads y and n as "
            "text, quoted or not): a Boolean or numeric node must never get a string; write reset_value: false",
        ),
        # YAML's !!set loaded as a list in the order of its members' hashes, another at each start: a String
        # array node got ['L2', 'L3', 'L1'] for {L1, L2, L3}, then ['L3', 'L2', 'L1']
        (
            "    value: !!set {L1, L2, L3}\n",
            "line3.yaml: actions.out.value: a set (!!set, 3 members) has no order, so an array node would get its "
            "members in another order at each start; write value as a list in the order the node holds them",
        ),
        ("    value: 1\n    reset_value: !!set {}\n", "actions.out.reset_value: a set (!!set, 0 members)"),
        # the former fix, "write value: 010 without quotes", loads as the octal 8
        (
            "    value: '010'\n",
            "line3.yaml: actions.out.value: '010' is quoted text, not a number: a Boolean or numeric node must "
            "never get a string; write value: 10 without quotes",
        ),
    ],
)
def test_a_write_value_no_node_takes_is_refused_at_load_naming_file_and_field(tmp_path, tail, expected):
    errs = _errors(tmp_path, tail)
    assert any(expected in e for e in errs), errs


@pytest.mark.parametrize(
    ("tail", "expected", "fixed"),
    [
        (
            "    value: 010\n",
            "line3.yaml: actions.out.value: 010 (line 13) is read by YAML as the octal number 8, not as it shows; "
            "write 8 if that is meant, or quote it if it is text",
            "    value: 8\n    reset_value: 07\n",  # 07 is 7 read either way
        ),
        (
            "    value: 1\n    reset_value: -017\n",
            "actions.out.reset_value: -017 (line 14) is read by YAML as the octal number -15",
            "    value: 1\n    reset_value: -15\n",
        ),
        (
            "    value: [1, 1:30]\n",
            "actions.out.value[1]: 1:30 (line 13) is read by YAML as the base-60 number 90",
            "    value: ['L1', '1:30', \"00:10:20\", '2026-11-30T12:00:00Z']\n",  # text, for a String array
        ),
        # a whole number past 2**53 written as a float: YAML's float rounds it, and an Int64 or UInt64 node got
        # 9007199254740992 for the 9007199254740993 the file shows without a word
        (
            "    value: 9007199254740993.0\n",
            "actions.out.value: 9007199254740993.0 (line 13) is read by YAML as the float 9007199254740992.0 "
            "(9007199254740992), not the whole number 9007199254740993 it shows",
            "    value: 9007199254740993\n    reset_value: 9007199254740992.0\n",  # a float held exactly
        ),
        (
            "    value: 1\n    pulse_ms: 0750\n",
            "actions.out.pulse_ms: 0750 (line 14) is read by YAML as the octal number 488",
            "    value: 1\n    pulse_ms: 750\n",
        ),
    ],
)
def test_a_number_yaml_reads_as_another_is_refused_naming_file_field_and_line_and_the_fix_loads(
    tmp_path, tail, expected, fixed
):
    errs = _errors(tmp_path, tail)
    assert any(e.startswith("line3.yaml: ") and expected in e for e in errs), errs
    path = tmp_path / "line3.yaml"
    path.write_text(HEAD.format(data=tmp_path / "data") + fixed)
    load_config(path)


@pytest.mark.parametrize(
    ("quoted", "said"),
    [
        ("2026-11-30 12:00", "2026-11-30 12:00 has no zone"),
        ("0000-00-00 00:00:00", "'0000-00-00 00:00:00' looks like an ISO 8601 time but is none"),
        ("1600-12-31T23:00:00+00:00", "1600-12-31T23:00:00+00:00 is out of the range of an OPC UA DateTime"),
    ],
    ids=["no_zone", "zero_date", "year_1600"],
)
def test_quoted_text_shaped_as_a_time_loads_as_written_for_a_string_node_with_a_warning(
    tmp_path, quoted, said
):
    """A String node's text that reads as a date and time ('2026-11-30 12:00' on an HMI, '0000-00-00 00:00:00'
    to clear a field) loaded until the DateTime checks at load came, which refused it: the agent would not
    start on a config that ran. The node's type is known only online, where a DateTime node refuses such text
    at each write; at load it is kept as written and said as a warning naming the file and the field."""
    path = tmp_path / "line3.yaml"
    path.write_text(
        HEAD.format(data=tmp_path / "data") + f"    value: '{quoted}'\n    reset_value: ['{quoted}']\n"
    )
    cfg = load_config(path)
    assert cfg.actions["out"].value == quoted and cfg.actions["out"].reset_value == [quoted]
    for field in ("value", "reset_value"):
        warned = [w for w in cfg.warnings if w.startswith(f"{path}: actions.out.{field}: ")]
        assert len(warned) == 1 and said in warned[0] and "a String node gets it as this text" in warned[0], (
            cfg.warnings
        )


def test_quoted_text_for_a_sparkplug_string_metric_is_not_warned_of(tmp_path):
    path = tmp_path / "line3.yaml"
    path.write_text(
        f"agent:\n  id: gw\n  data_dir: {tmp_path / 'data'}\nsources:\n  mq:\n    type: mqtt\n    host: 127.0.0.1\n"
        "actions:\n  out:\n    type: sparkplug_command\n    source: mq\n    group: g\n    edge_node: n\n"
        "    metric: m\n    datatype: String\n    value: '2026-11-30 12:00'\n"
    )
    cfg = load_config(path)
    assert cfg.actions["out"].value == "2026-11-30 12:00" and not cfg.warnings, cfg.warnings


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        # !!omap's pairs were refused in pydantic's words, "value.is-instance[WholeFloat]: Input should be an
        # instance of WholeFloat"
        (
            "    value: !!omap [{a: 1}, {b: 2}]\n",
            "line3.yaml: actions.out.value[0]: value[0] must be true/false, a number, text (or {text: ...}), a "
            "time with its zone, {base64: ...} / {hex: ...} bytes or a list of those (found ('a', 1))",
        ),
        (
            "    value: [1, 2, 3, '4']\n",
            "line3.yaml: actions.out.value[3]: '4' is quoted text, not a number: a Boolean or numeric node must "
            "never get a string; write value[3]: 4 without quotes",
        ),
        (
            "    value: [0, 1]\n    reset_value: [0, .nan]\n",
            "line3.yaml: actions.out.reset_value[1]: .nan is never",
        ),
        ("    value: [true, 0X1F, false]\n", "line3.yaml: actions.out.value[1]: '0X1F' is text to YAML"),
    ],
)
def test_a_list_elements_refusal_names_the_element_not_the_whole_field(tmp_path, tail, expected):
    """Before, 'actions.out.value: '4' is quoted text ...; write value: 4 without quotes': the place named the
    whole list, and its fix told to write the list as one number."""
    errs = _errors(tmp_path, tail)
    assert any(e.startswith(expected) for e in errs), errs


def test_an_empty_list_loads_as_one_without_a_warning(tmp_path) -> None:
    """``value: []`` is legitimate for a variable-length array node (clear it) and a mistake for a node that
    cannot take it; which one the node is, only the node read online says, and the source's check at connect
    names such a node (test_opcua_write_values.py). A warning at load said it at every start of a config that
    was right."""
    path = tmp_path / "line3.yaml"
    path.write_text(HEAD.format(data=tmp_path / "data") + "    value: [1, 2]\n    reset_value: []\n")
    cfg = load_config(path)
    assert cfg.actions["out"].reset_value == []
    assert cfg.warnings == [], cfg.warnings
