"""Every pluggable kind is one row in its table and documents itself: each source type has a
sample.yaml that validates and names every option; each action type has a section in the action
reference naming every option."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from devices import SOURCE_TYPES, load_object
from edge_agent.config import ACTION_TYPES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", sorted(SOURCE_TYPES))
def test_each_source_type_has_a_sample_config_naming_every_option(kind):
    sample = ROOT / "devices" / kind / "sample.yaml"
    cls = load_object(SOURCE_TYPES[kind][0])
    cls.model_validate(yaml.safe_load(sample.read_text()))
    text = sample.read_text()
    missing = [f for f in cls.model_fields if f not in text]
    assert not missing, f"{sample.relative_to(ROOT)} does not mention {missing}"


@pytest.mark.parametrize("kind", sorted(ACTION_TYPES))
def test_each_action_type_is_in_the_action_reference_with_every_option(kind):
    doc = (ROOT / "docs" / "actions.md").read_text()
    m = re.search(rf"^## `{kind}`\n(.*?)(?=^## |\Z)", doc, re.S | re.M)
    assert m, f"docs/actions.md has no section ## `{kind}`"
    common = re.search(r"^## Options every action has\n(.*?)(?=^## )", doc, re.S | re.M).group(1)
    text = m.group(1) + common + (doc if kind == "sparkplug_command" else "")  # it refers to opcua_write's modes
    missing = [f for f in ACTION_TYPES[kind].model_fields if f"`{f}" not in text]
    assert not missing, f"docs/actions.md: section {kind} does not mention {missing}"
