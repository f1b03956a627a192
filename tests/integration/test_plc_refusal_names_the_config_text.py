"""A config's number refused by a node or metric is named as the config writes it. The text of a number YAML reads
into another form is kept (``4.9e-324``, ``1.0e-320``, ``0x8000``, ``2.50``, ``1.50``), but a refusal named the number
YAML made of it: a Double node refused ``4.9e-324`` as "cannot write 5e-324", an Int16 node ``0x8000`` as "cannot write
32768", a Boolean node ``2.50`` as "cannot write 2.5", an array node ``0x10`` as "16 (ShownInt)": numbers the file does
not hold, for a line engineer searching it for them (review /work/notes60/review_plc/findings.md L2). At connect, at
the write, and in a Sparkplug command, each is named by its text now. Against a real asyncua server and a real
Mosquitto broker on 127.0.0.1."""

from __future__ import annotations

import pytest
from asyncua import ua

from devices.mqtt.client import SparkplugTypeMismatch
from devices.opcua.client import OpcUaTypeMismatch
from edge_agent.config import ConfigError, load_config
from protocols import sparkplug as sp
from tests.integration.test_sparkplug_commands import _born
from tests.support.plc import agent_side, plc

# action -> (node, its value as the config writes it, the number YAML reads it as)
WRITTEN = {
    "tiny": ("Level", "4.9e-324", "5e-324"),
    "small": ("Small", "1.0e-320", "1e-320"),
    "word": ("Word", "0x8000", "32768"),
    "flag": ("Flag", "2.50", "2.5"),
    "due": ("Due", "1.50", "1.5"),
    "levels": ("Levels", "0x10", "16"),  # a single value to an array node: was "16 (ShownInt)"
}


async def test_an_opcua_node_refuses_a_configs_number_naming_it_as_written_at_connect_and_at_the_write(
    tmp_path,
):
    async with plc(
        {
            "Level": ua.Variant(0.0, ua.VariantType.Double),
            "Small": ua.Variant(0.0, ua.VariantType.Double),
            "Word": ua.Variant(0, ua.VariantType.Int16),
            "Flag": ua.Variant(False, ua.VariantType.Boolean),
            "Due": ua.Variant(None, ua.VariantType.DateTime),
            "Levels": ua.Variant([0.0, 0.0], ua.VariantType.Double),
        }
    ) as p:
        path = p.config_file(
            tmp_path, {a: (node, f"{text}, reset_value: 0") for a, (node, text, _) in WRITTEN.items()}
        )
        cfg = load_config(path)
        async with agent_side(cfg) as (src, _runner):
            said = dict(src.target_errors)
            at_write = {}
            for a, (node, _, _) in WRITTEN.items():
                with pytest.raises(OpcUaTypeMismatch) as refused:
                    await src.write(p.node_id(node), cfg.actions[a].value)
                at_write[a] = str(refused.value)
    for a, (node, text, number) in WRITTEN.items():
        # was "cannot write 5e-324 (float)", "cannot write 32768 (int)", "cannot write 2.5 (float)"
        assert f"actions.{a}.value: node {p.node_id(node)} is " in said[p.node_id(node)], said
        assert f"cannot write {text} (" in said[p.node_id(node)], said
        assert f"cannot write {text} (" in at_write[a], at_write
        assert f"cannot write {number} (" not in said[p.node_id(node)] + at_write[a]
    assert "cannot write 0x10 (int): write a list of values" in said[p.node_id("Levels")], said


async def test_a_sparkplug_metric_refuses_a_configs_number_naming_it_as_written(mosquitto, tmp_path):
    path = tmp_path / "line1.yaml"
    out = "{type: sparkplug_command, source: bus, group: g, edge_node: n1"
    path.write_text(
        f"""agent: {{id: gw}}
sources:
  bus: {{type: mqtt, port: {mosquitto.port}, subscriptions: [{{topic: "spBv1.0/#", codec: sparkplug_b}}]}}
actions:
  tiny: {out}, metric: level, value: 4.9e-324}}
  word: {out}, metric: word, value: 0x8000}}
  flag: {out}, metric: flag, value: 2.50}}
  due: {out}, metric: due, value: 1.50}}
"""
    )
    cfg = load_config(path)
    typed = tmp_path / "typed.yaml"
    typed.write_text(path.read_text().replace("metric: due,", "metric: due, datatype: DateTime,"))
    with pytest.raises(ConfigError) as at_load:
        load_config(typed)
    # was "a DateTime metric takes a time; 1.5 is no time"
    assert any(
        "actions.due: value: a DateTime metric takes a time; 1.50 is no time" in e
        for e in at_load.value.errors
    ), at_load.value.errors
    said = {}
    async with _born(
        mosquitto.port,
        cfg,
        sp.Metric("level", None, sp.DataType.DOUBLE, 0.0),
        sp.Metric("word", None, sp.DataType.INT16, 0),
        sp.Metric("flag", None, sp.DataType.BOOLEAN, False),
        sp.Metric("due", None, sp.DataType.DATETIME, 0),
    ) as (node, src, _runner):
        for a in ("tiny", "word", "flag", "due"):
            action = cfg.actions[a]
            with pytest.raises(SparkplugTypeMismatch) as refused:
                await src.command("g", "n1", None, action.metric, action.value)
            said[a] = str(refused.value)
        assert await node.wait_cmds(1, timeout_s=0.3) == []  # none of them sent
    assert "metric g/n1/level is Double; cannot send 4.9e-324 (float)" in said["tiny"], said  # was 5e-324
    assert "metric g/n1/word is Int16; cannot send 0x8000 (int): out of range" in said["word"], (
        said
    )  # was 32768
    assert "metric g/n1/flag is Boolean; cannot send 2.50 (float)" in said["flag"], said  # was 2.5
    assert "metric g/n1/due is DateTime; cannot send 1.50 (float): 1.50 is no time" in said["due"], (
        said
    )  # was 1.5
