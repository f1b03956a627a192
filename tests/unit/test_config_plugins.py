"""The agent config is validated once, through unions built from the plugin tables, and each plugin
owns the checks only it knows (``cross_check(name, cfg, report)``), reported with file and path."""

from __future__ import annotations

import pytest

from devices.mqtt.settings import MqttSettings
from devices.opcua.settings import OpcUaSettings
from edge_agent import config as config_mod
from edge_agent.config import AgentConfig, ConfigError, parse_config


def plain() -> dict:
    return {
        "agent": {"id": "gw1"},
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": "opc.tcp://127.0.0.1:4840/",
                "nodes": [{"node_id": "ns=2;s=M.Temp"}],
            },
            "broker": {"type": "mqtt"},
        },
        "rules": [{"name": "hot", "source": "plc", "tag": "Temp", "above": 80, "actions": ["reject", "pub"]}],
        "actions": {
            "reject": {"type": "opcua_write", "source": "plc", "node_id": "ns=2;s=M.Reject", "value": True},
            "pub": {"type": "mqtt_publish", "source": "broker"},
        },
    }


def errors_of(data) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        parse_config(data, "line3.yaml")
    return ei.value.errors


def test_each_value_is_validated_once(monkeypatch):
    calls = []
    real = config_mod._check_write_value
    monkeypatch.setattr(config_mod, "_check_write_value", lambda v, what: calls.append(what) or real(v, what))
    cfg = parse_config(plain())
    assert calls == ["value"], "the opcua_write action's value was validated more than once"
    assert isinstance(cfg.sources["plc"], OpcUaSettings) and isinstance(cfg.sources["broker"], MqttSettings)


def test_the_config_type_itself_validates_every_plugin_in_one_pass():
    """``AgentConfig`` declares sources and actions as unions from the tables: a plain model_validate
    gives the same typed config (without the cross-checks) and refuses a bad source option."""
    direct = AgentConfig.model_validate(plain())
    assert direct == parse_config(plain())
    bad = plain()
    bad["sources"]["broker"]["prot"] = 1884
    with pytest.raises(ValueError, match="prot"):
        AgentConfig.model_validate(bad)


def test_a_plugins_own_cross_check_reports_with_file_and_path():
    data = plain()
    data["actions"]["keep"] = {"type": "save_sample"}
    data["rules"][0]["actions"].append("keep")  # a rule has no model input: save_sample refuses it
    assert errors_of(data) == [
        "line3.yaml: rules[0].actions[2]: 'keep' saves model inputs; a rule has none, remove it"
    ]


def test_an_entry_without_a_type_names_the_choices_from_its_table():
    data = plain()
    del data["sources"]["broker"]["type"]
    data["actions"]["pub"].pop("type")
    errs = errors_of(data)
    assert f"line3.yaml: sources.broker.type: required; one of {sorted(config_mod.SOURCE_SETTINGS)}" in errs
    assert f"line3.yaml: actions.pub.type: required; one of {sorted(config_mod.ACTION_TYPES)}" in errs


def test_a_bad_entry_hides_neither_the_others_nor_the_cross_checks():
    data = plain()
    data["sources"]["plc"]["endpoint"] = "http://plc"  # the source itself is invalid ...
    data["rules"][0]["source"] = "plcc"  # ... a reference elsewhere is wrong ...
    data["rules"].append({"name": "cold", "source": "plc", "tag": "Temp"})  # ... and an entry is incomplete
    errs = errors_of(data)
    assert [e.split(":")[1].strip() for e in errs] == [
        "sources.plc.endpoint",
        "rules[1]",
        "rules[0].source",
    ], errs


def test_every_source_type_says_what_it_gives_pipelines():
    """The config's pipeline checks (frame or signal, tags or not) read ``produces``: a source type
    without it would skip them silently."""
    for key, cls in config_mod.SOURCE_SETTINGS.items():
        assert getattr(cls, "produces", None) in ("frames", "readings"), key
        assert cls.model_fields["type"].annotation.__args__ == (key,), key
