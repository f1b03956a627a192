"""A source, model slot or action named with a word YAML 1.1 reads as a boolean or null (``yes:``, ``on:``,
``Off:``, ``~:``, ``null:``) was refused as ``sources.True`` or ``actions.None``: a path the file nowhere holds,
for a user told to quote the name. It is named as the file writes it now, in an agent's config and in a fleet
config alike; a config given as a mapping, not as YAML, still names it by its value (nothing else is known)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import ConfigError, load_config, parse_config
from edge_agent.fleet_config import check_fleet_config

AGENT = "agent:\n  id: hostile\n"
SETTINGS = {
    "sources": "{type: mqtt, host: 127.0.0.1}",
    "models": "{package: x.edgepkg}",
    "actions": "{type: alarm}",
}


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.errors


@pytest.mark.parametrize(
    "section, written, read",
    [
        ("sources", "yes", "the boolean true"),
        ("sources", "Off", "the boolean false"),
        ("models", "on", "the boolean true"),
        ("models", "~", "null"),
        ("actions", "null", "null"),
        ("actions", "NO", "the boolean false"),
    ],
)
def test_a_name_yaml_reads_as_a_boolean_or_null_is_named_as_written(tmp_path, section, written, read):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(AGENT + f"{section}:\n  ok: {SETTINGS[section]}\n  {written}: {SETTINGS[section]}\n")
    said = [e for e in _errors(cfg) if "a name must be text" in e]
    assert said == [
        f"{cfg}: {section}.{written}: a name must be text; YAML read this one as {read}"
        + (
            " (YAML reads on, off, yes and no so)"
            if "boolean" in read
            else " (YAML reads ~, null and nothing so)"
        )
        + ": quote it, or choose another name"
    ]


def test_names_yaml_reads_as_both_booleans_and_null_are_each_named_as_written(tmp_path):
    cfg = tmp_path / "agent.yaml"
    body = SETTINGS["sources"]
    cfg.write_text(AGENT + f"sources:\n  yes: {body}\n  off: {body}\n  ~: {body}\n")
    said = sorted(e.split(": ")[1] for e in _errors(cfg) if "a name must be text" in e)
    assert said == ["sources.off", "sources.yes", "sources.~"]


def test_a_fleet_configs_name_yaml_reads_as_a_boolean_is_named_as_written():
    text = b"sources:\n  on: {type: mqtt, host: 127.0.0.1}\n"
    assert any(
        e.startswith("fleet.yaml: sources.on: a name must be text")
        for e in check_fleet_config(text, "fleet.yaml")
    )


def test_a_config_given_as_a_mapping_names_it_by_its_value():
    with pytest.raises(ConfigError) as exc:
        parse_config({"agent": {"id": "a"}, "sources": {True: {"type": "mqtt", "host": "127.0.0.1"}}}, "m")
    assert any(e.startswith("m: sources.True: a name must be text") for e in exc.value.errors)
