"""A config path or file that is not what a config is gets one line naming the file, never a hang, a
traceback or the gateway's memory: a named pipe nothing writes to (``edge-agent validate`` and ``run``
waited on it for good, ``--fleet`` too), a file of gigabytes or a device (read whole before any check), a
source or model slot named ``on``, ``no``, ``~`` or ``1`` (YAML 1.1 reads them as a boolean, null or number:
a null one crashed validation in difflib), a control character (its error took two lines). What held
already is in tests/unit/test_agent_config.py and test_yaml_keys_given_twice.py."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from edge_agent import cli
from edge_agent.config import CONFIG_MAX_BYTES, ConfigError, load_config

AGENT = "agent:\n  id: hostile\n"


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.errors


@pytest.mark.timeout(60)  # the former code waited on the pipe for good: a hang guard, not a timing
def test_a_named_pipe_nothing_writes_to_is_refused_not_waited_for(tmp_path, capsys):
    fifo = tmp_path / "agent.yaml"
    os.mkfifo(fifo)
    assert _errors(fifo) == [f"{fifo}: a named pipe that nothing wrote to; give the path of the config file"]
    assert cli.main(["validate", "--fleet", str(fifo)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"{fifo}: a named pipe that nothing wrote to; give the path of the config file"
    )


@pytest.mark.timeout(60)
def test_a_pipe_with_a_writer_is_still_read_as_process_substitution_gives_one(tmp_path):
    """``edge-agent validate <(envsubst < line3.yaml)``: a pipe that something writes to is read to its end."""
    r, w = os.pipe()
    text = (AGENT + "sources:\n  on: {type: mqtt, host: 127.0.0.1}\n").encode()
    writer = threading.Thread(target=lambda: (os.write(w, text), os.close(w)))
    writer.start()
    try:
        errors = _errors(Path(f"/proc/self/fd/{r}"))
    finally:
        writer.join()
        os.close(r)
    assert any("sources.on: a name must be text" in e for e in errors), errors


def test_a_config_larger_than_the_bound_is_refused_before_it_is_read_whole(tmp_path):
    big = tmp_path / "agent.yaml"
    big.write_text(AGENT + "# " + "x" * CONFIG_MAX_BYTES + "\n")  # a valid config, but for its size
    assert _errors(big) == [
        f"{big}: larger than {CONFIG_MAX_BYTES} bytes, the most a config file may hold; is it the config file? "
        "If it is, give its sources to more than one agent, each with its own config"
    ]


def test_a_fleet_config_over_the_fleet_services_bound_is_refused_without_the_agent_config_advice(
    tmp_path, capsys
):
    """A fleet config goes to every agent of a rollout: splitting its sources over agents is no way out."""
    big = tmp_path / "fleet.yaml"
    big.write_text("sources: {}\n# " + "x" * 256 * 1024 + "\n")
    assert cli.main(["validate", "--fleet", str(big)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"{big}: larger than 262144 bytes, the most a config file may hold; is it the config file?"
    )


def test_a_config_generated_from_a_plants_tag_list_is_not_refused_for_its_size(tmp_path):
    """A config written by a generator from a large plant's tag list (12,000 OPC UA nodes, each with its tag
    and the description the generator puts beside it): 4.5 MB, valid before 60604bb, then refused as
    larger than 4 MiB, "is it the config file?", with no way out."""
    lines = [AGENT + "sources:\n  plc:\n    type: opcua\n    endpoint: opc.tcp://127.0.0.1:4840/\n    nodes:"]
    for i in range(12_000):
        area, unit = divmod(i, 400)
        lines += [
            f"      # {area:02d}-{unit:03d}: line {area} unit {unit} pressure transmitter PT-{i:05d}, 4-20 mA on AI "
            f"card {i % 16}, range 0-16 bar, alarm high 14 bar, high-high 15.5 bar, interlock I-{i:05d} (P&ID "
            f"sheet {area}-{unit // 20:02d}), calibrated yearly, installed 2019, vendor tag {i:08x}",
            f"      - node_id: ns=3;s=Plant.Area{area:02d}.Unit{unit:03d}.PT{i:05d}.PV",
            f"        tag: area{area:02d}_unit{unit:03d}_pt{i:05d}",
            "        sampling_interval_ms: 1000",
        ]
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    assert cfg.stat().st_size > 4 * 1024 * 1024
    loaded = load_config(cfg)
    assert len(loaded.sources["plc"].nodes) == 12_000


@pytest.mark.timeout(60)
def test_a_device_or_folder_given_as_the_config_is_named_not_read(tmp_path):
    """/dev/zero was read until memory ran out."""
    assert _errors(Path("/dev/zero")) == [
        "/dev/zero: is a character device, not a config file; give the path of the YAML file"
    ]
    assert _errors(tmp_path) == [
        f"{tmp_path}: is a folder, not a config file; give the path of the YAML file"
    ]


@pytest.mark.parametrize(
    "section, written, shown, read",
    [
        ("sources", "on: {type: mqtt, host: 127.0.0.1}", "on", "the boolean true"),  # named as written
        ("sources", "no: {type: mqtt, host: 127.0.0.1}", "no", "the boolean false"),
        ("sources", "~: {type: mqtt, host: 127.0.0.1}", "~", "null"),
        ("models", "1: {package: x.edgepkg}", "1", "the number 1"),
    ],
)
def test_a_name_yaml_reads_as_a_boolean_null_or_number_is_refused_naming_it(
    tmp_path, section, written, shown, read
):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        AGENT + f"{section}:\n  {written}\n" + "pipelines:\n  - {name: p, source: cam, model: vision}\n"
    )
    errors = _errors(cfg)
    assert any(
        e.startswith(f"{cfg}: {section}.{shown}: a name must be text; YAML read this one as {read}")
        and e.endswith("quote it, or choose another name")
        for e in errors
    ), errors


def test_a_control_character_is_one_line_with_its_line_and_column(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_bytes(b"agent:\n  id: quick\x00start\n")
    assert _errors(cfg) == [
        f"{cfg}: not valid YAML at line 2, column 12: the character #x0000 is not allowed in YAML (a control "
        "character or a non-character); remove it"
    ]


@pytest.mark.parametrize(
    "written, path, shown",
    [
        ("trusted_keys: [fleet.pub]", "trusted_keys[0]", "is a named pipe, not a key file"),
        ("models:\n  vision: {package: fleet.pub}", "models.vision.package", "is a named pipe, not a file"),
        (
            "sources:\n  broker: {type: mqtt, host: 127.0.0.1, tls: {ca_file: fleet.pub}}",
            "sources.broker.tls.ca_file",
            "is a named pipe, not a file",
        ),
    ],
)
def test_a_file_the_config_names_that_is_a_named_pipe_is_refused_before_the_agent_waits_on_it(
    tmp_path, written, path, shown
):
    """A key, package or certificate path naming a FIFO passed validation, and the agent's start then
    waited on it for good (reading the key, the package, the certificate)."""
    os.mkfifo(tmp_path / "fleet.pub")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + written + "\n")
    errors = _errors(cfg)
    assert any(e.startswith(f"{cfg}: {path}: ") and shown in e for e in errors), errors


@pytest.mark.parametrize(
    "written, shown",
    [
        (
            "on",
            " (found True); YAML reads on, off, yes and no (and true, false) unquoted as a boolean: quote the text",
        ),
        ("~", "; YAML read null (~, null or nothing written): write the text, quoted if it is ~ or null"),
    ],
)
def test_a_value_yaml_reads_as_a_boolean_or_null_where_text_is_wanted_says_quote_it(tmp_path, written, shown):
    """``model: on`` (a slot named on, quoted where it is defined) was refused with pydantic's "Input should be
    a valid string (found True)" only: the engineer sees "on" written, not why it is not text."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + f"pipelines:\n  - {{name: p, source: cam, model: {written}}}\n")
    errors = _errors(cfg)
    assert f"{cfg}: pipelines[0].model: Input should be a valid string{shown}" in errors, errors


def test_a_hex_literal_too_long_for_a_decimal_text_where_text_is_wanted_is_refused_naming_it(tmp_path):
    """``model: 0xFFFF...`` of 4000 digits (a pasted key or hash, unquoted): YAML reads an integer Python cannot
    write in decimal, and the message refusing it ended in a ValueError traceback from quoting it (no file, no
    field) instead of the refusal."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + "pipelines:\n  - {name: p, source: cam, model: 0x" + "F" * 4000 + "}\n")
    errors = _errors(cfg)
    shown = f"{cfg}: pipelines[0].model: Input should be a valid string (found a whole number of 16000 bits)"
    assert any(e.startswith(shown) for e in errors), errors


def test_an_octal_literal_too_long_to_read_in_decimal_is_refused_naming_its_line(tmp_path):
    """``value: 0777...`` of 6001 digits: the check of YAML 1.1's octal misread read it as a decimal too, and
    Python's digit limit ended ``validate`` in a ValueError traceback (no file, no field)."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + "pipelines:\n  - {name: p, source: cam, model: 0" + "7" * 6000 + "}\n")
    errors = _errors(cfg)
    assert any(
        e.startswith(f"{cfg}: pipelines[0].model: 07777777777777777777... (6001 characters) (line ")
        and e.endswith(": a number of more digits than can be read or shown; quote it if it is text")
        for e in errors
    ), errors


def test_two_merged_spellings_of_one_number_give_the_merge_specs_spelling():
    """``<<: [*a1, *a2]`` with ``value: 0x10`` in a1 and ``16`` in a2: one number, so not refused, but YAML's merge
    rule takes the first mapping's and PyYAML kept the last's spelling: a String node got '16' for the 0x10 the
    spec reads (review of b614885a)."""
    from devices.base import number_as_written
    from edge_agent.config import read_yaml

    for first, last in (("0x10", "16"), ("16", "0x10"), ("1.50", "1.5")):
        doc = read_yaml(
            f"a1: &a1 {{value: {first}}}\na2: &a2 {{value: {last}}}\nactions:\n  s: {{<<: [*a1, *a2]}}\n",
            "agent.yaml",
        )
        value = doc["actions"]["s"]["value"]
        assert (number_as_written(value) or str(value)) == first, (first, last, value)


@pytest.mark.parametrize(
    "written, alias",
    [
        ("sources: &s {cam: [*s]}\n", "*s at line 3, column 20 lies inside the &s"),
        ("models: &m\n  vision: {package: p, more: *m}\n", "*m at line 4, column 30 lies inside the &m"),
        ("sources: &s\n  <<: *s\n", "*s at line 4, column 7 lies inside the &s"),  # a merge key naming itself
    ],
    ids=["list", "mapping", "merge-key"],
)
def test_a_value_that_holds_itself_through_an_alias_is_refused_naming_its_line(
    tmp_path, capsys, written, alias
):
    """An alias inside the very node its anchor names (YAML allows it) made a value that holds itself, and
    validation walked it until ``RecursionError``: ``edge-agent validate`` (and ``run``, and a fleet config
    the agent received) ended in a 1,000-line traceback naming neither the file nor the line."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + written)
    line = f"{cfg}: YAML alias {alias} it names (a value that holds itself); refused"
    assert _errors(cfg) == [line]
    assert cli.main(["validate", "--fleet", str(cfg)]) == 1
    assert capsys.readouterr().err.strip() == line


PRESETS = "x-presets:\n  open: &open {value: true}\n  shut: &shut {value: false, when: {verdict: NG}}\n"


@pytest.mark.parametrize(
    "gate, expected",
    [
        (
            "    <<: [*open, *shut]\n",
            [
                "actions.gate.value: given differently in the mappings it merges (merge spec: line 4; PyYAML took line 5)"
            ],
        ),
        (
            "    <<: *open\n    <<: *shut\n",
            [
                "actions.gate.<<: key given twice (lines 10 and 11); keep one",
                "actions.gate.value: given differently in the mappings it merges (merge spec: line 4; PyYAML took line 5)",
            ],
        ),
    ],
    ids=["merge-list", "merge-key-twice"],
)
def test_a_plc_writes_value_given_differently_by_two_merged_mappings_is_refused_naming_both(
    tmp_path, gate, expected
):
    """``<<: [*open, *shut]`` wrote ``false`` to the reject gate (PyYAML took the last mapping's ``value``, the
    YAML merge spec the first: the file reads as ``true`` to one who knows the spec), and a merge key
    given twice was merged silently, the second winning, where any other key given twice is refused."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        AGENT + PRESETS + "actions:\n  gate:\n    type: opcua_write\n    node_id: ns=2;s=Gate\n" + gate
    )
    errors = _errors(cfg)
    assert [e.split(": YAML readers")[0] for e in errors] == [f"{cfg}: {line}" for line in expected], errors
    assert errors[-1].endswith(": YAML readers differ on which one wins; give it in this mapping itself")


def test_merged_mappings_that_agree_or_a_key_the_mapping_gives_itself_are_read_as_before():
    from edge_agent.config import read_yaml

    doc = read_yaml(
        PRESETS + "also: &also {value: true, node_id: x}\n"
        "actions:\n  a: {<<: [*open, *shut], value: true}\n  b: {<<: [*open, *also]}\n  c: {<<: *shut, value: true}\n",
        "agent.yaml",
    )
    assert doc["actions"] == {
        "a": {"value": True, "when": {"verdict": "NG"}},
        "b": {"value": True, "node_id": "x"},
        "c": {"value": True, "when": {"verdict": "NG"}},
    }


@pytest.mark.parametrize(
    "presets, expected",
    [
        ("a: &a {tags: [x, y]}\nb: &b {tags: [x, y], r: 2}\n", {"tags": ["x", "y"], "r": 2}),
        ("a: &a {enabled: yes}\nb: &b {enabled: true}\n", {"enabled": True}),
        ("a: &a {unit: ~}\nb: &b {unit: null}\n", {"unit": None}),
        ("a: &a {qos: 0x10}\nb: &b {qos: 16}\n", {"qos": 16}),
        ("a: &a {gain: 1.50}\nb: &b {gain: 1.5}\n", {"gain": 1.5}),
        ("a: &a {gain: 1.0e+3}\nb: &b {gain: 1000.0}\n", {"gain": 1000.0}),
        (  # a preset that overrides the base both merge: the merge spec and PyYAML both give qos 2
            "base: &base {qos: 1, retain: false}\na: &a {<<: *base, qos: 2}\nb: &b {<<: *base, topic: t}\n",
            {"qos": 2, "retain": False, "topic": "t"},
        ),
    ],
    ids=[
        "equal-lists",
        "yes-true",
        "tilde-null",
        "hex-decimal",
        "float-spelt-twice",
        "exponent-point",
        "override-of-a-shared-base",
    ],
)
def test_merged_mappings_that_agree_however_spelt_are_read_as_written(presets, expected):
    """c302631e refused these (``given differently by two merged mappings``): the mappings agree, and a
    config that validated the day before no longer started. Only a value PyYAML builds otherwise than the
    YAML merge spec has it is refused."""
    from edge_agent.config import read_yaml

    doc = read_yaml(
        "x-presets:\n" + "".join(f"  {line}\n" for line in presets.splitlines()) + "c: {<<: [*a, *b]}\n",
        "a.yaml",
    )
    assert doc["c"] == expected


def test_a_key_a_merged_mapping_overrides_is_refused_where_pyyaml_builds_the_one_it_overrides(tmp_path):
    """``mid: {<<: *base, x: 2}``, ``out: {<<: *mid}``: the merge spec gives ``out.x`` 2 (mid's own), PyYAML
    6.0.4 built 1 (base's) for a one-character key, without a word; a longer key it builds as 2 and is read."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        AGENT + "x-presets:\n  base: &base {x: 1}\n  mid: &mid {<<: *base, x: 2}\nout: {<<: *mid}\n"
    )
    assert _errors(cfg) == [
        f"{cfg}: out.x: given differently in the mappings it merges (merge spec: line 5; PyYAML took line 4): "
        "YAML readers differ on which one wins; give it in this mapping itself"
    ]
    from edge_agent.config import read_yaml

    doc = read_yaml("base: &base {xx: 1}\nmid: &mid {<<: *base, xx: 2}\nout: {<<: *mid}\n", "a.yaml")
    assert doc["out"] == {"xx": 2}


def test_a_clash_in_a_preset_is_told_once_where_the_preset_is_written_however_often_it_is_used(tmp_path):
    """A clashing pair of presets of 40 keys merged 100 times gave 4,040 errors (a 22-KB fleet config:
    240,000, 38 MB on stderr), each naming the mapping that merged them; one merged once more, behind an
    anchored preset that merges them, was told at the mapping that used the preset."""
    keys = ", ".join(f"k{i}: 0" for i in range(40))
    other = ", ".join(f"k{i}: 1" for i in range(40))
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        AGENT
        + f"x-presets:\n  a: &a {{{keys}}}\n  b: &b {{{other}}}\n  both: &both {{<<: [*a, *b]}}\n"
        + "x-uses:\n"
        + "".join(f"  - {{<<: *both, n: {i}}}\n" for i in range(100))
        + "".join("  - {<<: [*a, *b]}\n" for i in range(100))
    )
    errors = _errors(cfg)
    assert len(errors) == 21, errors[:3]
    assert errors[0].startswith(
        f"{cfg}: x-presets.both.k0: given differently in the mappings it merges (merge spec: line 4; PyYAML took "
        "line 5)"
    )
    assert errors[19].startswith(f"{cfg}: x-presets.both.k19: given differently")
    assert errors[20] == f"{cfg}: and 20 more"


def test_a_fleet_config_of_thousands_of_clashing_keys_is_refused_searching_only_for_the_lines_shown(
    monkeypatch,
):
    """Two presets giving 12,500 keys differently, one mapping merging both (a 253-KB fleet config, within its
    256 KiB): where PyYAML's value is was searched for every clash, each search walking the whole merged
    mapping (O(clashes x keys)): an agent's event loop was held 34.6 s before the config was refused. Only
    the 20 lines shown are searched now."""
    from edge_agent.fleet_config import MAX_BYTES, fleet_document
    from model_packager import safe_yaml

    searched = []
    source = safe_yaml._source
    monkeypatch.setattr(safe_yaml, "_source", lambda *a: searched.append(a[1]) or source(*a))
    k = 12_500
    a = "x-a: &a {" + ", ".join(f"k{i}: 1" for i in range(k)) + "}\n"
    b = "x-b: &b {" + ", ".join(f"k{i}: 2" for i in range(k)) + "}\n"
    data = (a + b + "x-c: {<<: [*a, *b]}\nsources: {}\n").encode()
    assert len(data) <= MAX_BYTES
    with pytest.raises(ConfigError) as exc:
        fleet_document(data, "fleet config")
    errors = exc.value.errors
    assert len(searched) <= 20, len(searched)  # the former code: 12,500
    assert len(errors) == 21, errors[:2]
    assert errors[0] == (
        "fleet config: x-c.k0: given differently in the mappings it merges (merge spec: line 1; PyYAML took "
        "line 2): YAML readers differ on which one wins; give it in this mapping itself"
    )
    assert errors[20] == "fleet config: and 12480 more"


def test_a_key_given_twice_in_a_merged_mapping_is_told_once_as_such(tmp_path):
    """``a: &a {1: x, true: y}``, ``b: {<<: *a}``: the key given twice was told, and again as a made-up line
    ``b.1: given differently by two merged mappings (line 3, columns 8 and 16)`` though b merges one mapping
    and the columns were a's repeat."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + "a: &a {1: x, true: y}\nb: {<<: *a}\n")
    assert _errors(cfg) == [f"{cfg}: a.1: key given twice (line 3, columns 8 and 14); keep one"]


def _preset_chain(links: int, spelt: str) -> str:
    """Presets that each merge the one before (``p1: &p1 {<<: *p0, k1: 1}``): the value is flat."""
    return "x-presets:\n  p0: &p0 {k0: 0}\n" + "".join(
        f"  p{i}: &p{i} {{<<: {spelt.format(i - 1)}, k{i}: {i}}}\n" for i in range(1, links)
    )


@pytest.mark.parametrize("spelt", ["*p{}", "[*p{}]"], ids=["alias", "list"])
def test_a_chain_of_presets_each_merging_the_one_before_is_read_not_refused_as_too_deep(tmp_path, spelt):
    """A merged mapping is flattened into the one that merges it, yet the expanded-depth check counted it as a
    level: a chain of 63 such presets (the list form: 32) was refused as nested deeper than 64 levels."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + _preset_chain(100, spelt) + "camera: {<<: *p99}\n")
    from edge_agent.config import read_yaml

    doc = read_yaml(cfg.read_text(), "agent.yaml")
    assert doc["camera"] == {f"k{i}": i for i in range(100)}
    deep = "x-p: &p {k: 0}\nx-deep: &deep " + "{a: " * 62 + "1" + "}" * 62 + "\n"  # 63 levels, 64 under a key
    for merged in ("{<<: *deep}", "{<<: [*deep]}", "{z: 1, <<: [*p, *deep]}"):
        assert read_yaml(deep + f"x: {merged}\n", "a.yaml")["x"]["a"]["a"]  # 64 levels: read
        with pytest.raises(ConfigError, match="nested deeper than 64 levels once aliases are expanded"):
            read_yaml(deep + f"x: {{y: {merged}}}\n", "a.yaml")  # 65


def test_an_alias_chain_deeper_than_the_limit_once_expanded_is_refused_naming_its_line(tmp_path, capsys):
    """Nine anchors, each nesting the one before in 60 brackets (1,253 bytes, every line within the 64 levels a
    config may nest) build a value 540 levels deep: ``edge-agent validate`` printed a 2,995-line
    ``RecursionError`` traceback."""
    cfg = tmp_path / "agent.yaml"
    chain = "x-presets:\n  a0: &a0 " + "[" * 60 + "1" + "]" * 60 + "\n"
    chain += "".join(f"  a{i}: &a{i} " + "[" * 60 + f"*a{i - 1}" + "]" * 60 + "\n" for i in range(1, 9))
    cfg.write_text(AGENT + chain)
    line = (
        f"{cfg}: YAML nested deeper than 64 levels once aliases are expanded (alias *a0 at line 5, column 71); "
        "refused (anchors and aliases may not multiply a config beyond that)"
    )
    assert _errors(cfg) == [line]
    assert cli.main(["validate", str(cfg)]) == 1
    assert line in capsys.readouterr().err
    from edge_agent.config import read_yaml

    shallow = read_yaml("a0: &a0 [[1]]\na1: &a1 [[*a0]]\na2: [*a1, *a1]\n", "a.yaml")  # read as before
    assert shallow["a2"] == [[[[[1]]]], [[[[1]]]]]


def test_an_anchor_defined_twice_is_refused_as_such(tmp_path):
    """``a: &a [&a 1, *a]`` was told as a value that holds itself."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + "x-a: &a [&a 1, *a]\n")
    assert _errors(cfg) == [
        f"{cfg}: YAML anchor &a defined twice (line 3, columns 6 and 10); give each its own name; refused"
    ]
