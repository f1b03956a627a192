"""A config's floats are read once, by the loader that builds the document: a float whose text shows another
number than YAML's float (``9.007199254740993e+15``) is built as the number shown (``WholeFloat``) by the float
constructor itself, which reads the node's text (edge_agent/config.py ``_exact_loader``). The former code loaded
the YAML text again for each float of the file, and the whole file once more to build such numbers: a
24,000-float recipe config took 89 s to read (bench/config_load_bench.py). Checked at load, with no peer."""

from __future__ import annotations

import pytest
import yaml
from asyncua import ua

from devices.base import FractionFloat, WholeFloat
from devices.mqtt.sparkplug_host import command_value
from devices.opcua.client import OpcUaTypeMismatch, convert_value
from edge_agent.config import ConfigError, load_config, read_yaml
from protocols import sparkplug as sp


def test_a_float_heavy_config_is_parsed_a_fixed_number_of_times_not_once_per_float(monkeypatch):
    floats = ", ".join(f"{i * 0.25 + 0.5}" for i in range(2000))
    text = (
        "actions:\n"
        f"  a: {{value: [9.007199254740993e+15, {floats}]}}\n"
        "  b: {value: 9007199254740992.5, reset_value: 1.0000000000000000001}\n"
    )
    loaders = []
    init = yaml.constructor.SafeConstructor.__init__

    def counted(self):
        loaders.append(type(self).__name__)
        init(self)

    monkeypatch.setattr(yaml.constructor.SafeConstructor, "__init__", counted)
    doc = read_yaml(text, "line3.yaml")
    # the limits checked, the document built, its numbers YAML misreads looked for: one pass each
    assert len(loaders) <= 3, (len(loaders), loaders[:5])  # was 2,000 and more: one YAML load per float
    a, b = doc["actions"]["a"], doc["actions"]["b"]
    assert type(a["value"][0]) is WholeFloat and a["value"][0].whole == 2**53 + 1
    assert all(type(x) is float for x in a["value"][1:])
    assert type(b["value"]) is FractionFloat and type(b["reset_value"]) is FractionFloat


def test_a_number_kept_as_its_text_shows_is_so_only_where_a_value_is_written():
    """An alias shares the number the file writes once: an action's write value keeps it exact; the same number
    taken elsewhere (an action's option, another section) is YAML's float, as before, and the write value's
    list is not changed by what is made of it elsewhere."""
    doc = read_yaml(
        "actions:\n"
        "  a: {value: &big 9.007199254740993e+15, reset_value: &list [*big, 2.5], pulse_ms: *big}\n"
        "  b: {<<: {value: *big}, other: *list}\n"
        "agent: {id: gw, spare: *big, spares: *list}\n",
        "line3.yaml",
    )
    a, b, agent = doc["actions"]["a"], doc["actions"]["b"], doc["agent"]
    assert type(a["value"]) is WholeFloat and type(b["value"]) is WholeFloat
    assert type(a["reset_value"][0]) is WholeFloat
    assert type(a["pulse_ms"]) is float and type(agent["spare"]) is float
    assert [type(x) for x in agent["spares"]] == [float, float] and [type(x) for x in b["other"]] == [
        float,
        float,
    ]


def test_a_refusal_of_a_whole_number_written_with_an_exponent_names_it_as_written(tmp_path):
    """A Boolean or DateTime node's (or metric's) refusal of ``9.007199254740993e+15`` named
    9007199254740992.0, a number the config nowhere holds."""
    value = read_yaml("actions:\n  a: {value: 9.007199254740993e+15}\n", "line3.yaml")["actions"]["a"][
        "value"
    ]
    for vtype in (ua.VariantType.Boolean, ua.VariantType.DateTime):
        with pytest.raises(OpcUaTypeMismatch, match=r"cannot write 9\.007199254740993e\+15 \(float\)"):
            convert_value(vtype, value, "ns=2;s=B")
    for dtype in (sp.DataType.BOOLEAN, sp.DataType.DATETIME):
        with pytest.raises(ValueError, match=r"cannot send 9\.007199254740993e\+15 \(float\)"):
            command_value(dtype, value, "flag")
    assert command_value(sp.DataType.INT64, value, "total") == 2**53 + 1
    # a String node gets the number the text shows, as written (was the float's '9007199254740992.0', another number)
    assert convert_value(ua.VariantType.String, value, "ns=2;s=S") == "9.007199254740993e+15"
    path = tmp_path / "line1.yaml"
    path.write_text(
        "agent: {id: gw}\nsources:\n  bus: {type: mqtt, port: 1883}\nactions:\n"
        "  flag: {type: sparkplug_command, source: bus, group: g, edge_node: n1, metric: flag, datatype: Boolean,\n"
        "         value: 9.007199254740993e+15}\n"
    )
    with pytest.raises(ConfigError, match=r"actions\.flag: value: .*cannot send 9\.007199254740993e\+15 "):
        load_config(path)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (
            "!!float 1:30.5",
            "!!float 1:30.5 (line 2) is read by YAML as the base-60 number 90.5, not as it shows",
        ),
        ('!!float "1:30.5"', "!!float 1:30.5 (line 2) is read by YAML as the base-60 number 90.5"),
        ("!!int 1:30", "!!int 1:30 (line 2) is read by YAML as the base-60 number 90, not as it shows"),
        ("!!int 010", "!!int 010 (line 2) is read by YAML as the octal number 8, not as it shows"),
    ],
)
def test_a_tagged_number_yaml_11_reads_as_another_is_refused_as_the_untagged_one_is(value, said):
    """``!!float 1:30.5`` (a time, or a typo) was written to the PLC as 90.5 without a word, while the
    untagged ``1:30`` is refused: the tag does not change how YAML 1.1 reads the digits."""
    with pytest.raises(ConfigError) as refused:
        read_yaml(f"actions:\n  a: {{value: {value}}}\n", "line3.yaml")
    assert any(e.startswith(f"line3.yaml: actions.a.value: {said}") for e in refused.value.errors), (
        refused.value
    )
    assert (
        read_yaml("actions:\n  a: {value: !!float 010}\n", "x")["actions"]["a"]["value"] == 10.0
    )  # 10 either way


def test_two_merged_mappings_giving_one_double_as_two_whole_numbers_are_refused_as_a_clash():
    """``<<: [*a, *b]`` where a gives 1.8014398509481985e+16 and b 1.8014398509481986e+16 (one double, 2**54):
    the merge spec takes a's, PyYAML b's, and the two were judged alike by their double: the action wrote
    18014398509481986, a's number nowhere. Refused now as any value the merged mappings give differently."""
    text = (
        "actions:\n"
        "  a: &a {value: 1.8014398509481985e+16}\n"
        "  b: &b {value: 1.8014398509481986e+16}\n"
        "  c: {<<: [*a, *b]}\n"
    )
    with pytest.raises(ConfigError, match=r"actions\.c\.value: given differently in the mappings it merges"):
        read_yaml(text, "line3.yaml")
    same = read_yaml(text.replace("1.8014398509481986e+16", "1.8014398509481985e+16"), "line3.yaml")
    assert same["actions"]["c"]["value"].whole == 2**54 + 1


def test_two_merged_mappings_giving_one_whole_number_written_two_ways_are_no_clash():
    """``<<: [*a, *b]`` where a gives 1.8014398509481985e+16 and b 18014398509481.985e+3: one whole number, the
    same in either mapping. The former check compared the texts and refused it as given differently (review
    /work/notes58/review_proto/findings.md L7); a fraction written two ways is alike too."""
    text = (
        "actions:\n"
        "  a: &a {value: 1.8014398509481985e+16, reset_value: 9007199254740992.5}\n"
        "  b: &b {value: 18014398509481.985e+3, reset_value: 9007199254740992.50}\n"
        "  c: {<<: [*a, *b]}\n"
    )
    merged = read_yaml(text, "line3.yaml")["actions"]["c"]
    assert merged["value"].whole == 2**54 + 1
    assert repr(merged["reset_value"]) in ("9007199254740992.5", "9007199254740992.50")


def test_each_float_text_of_a_write_value_is_read_once(monkeypatch):
    """``_exact_float`` read a float's text twice (``_inexact_whole`` first, then again for a fraction): each float
    of a config's write values was parsed twice at load (review /work/notes59 D4). One reading now serves both."""
    import edge_agent.config as config

    read: list[str] = []
    own = config._yaml_float

    def counted(text: str, tagged: bool):
        read.append(text)
        return own(text, tagged)

    monkeypatch.setattr(config, "_yaml_float", counted)
    # exponents: the pass that looks for YAML's misreads leaves them (a magnitude, not every digit)
    doc = read_yaml("actions:\n  a: {value: [9.007199254740993e+15, 1.0e+16, 3.0e+0]}\n", "line3.yaml")
    assert type(doc["actions"]["a"]["value"][0]) is WholeFloat
    assert sorted(read) == ["1.0e+16", "3.0e+0", "9.007199254740993e+15"], read  # an exact one was read twice
