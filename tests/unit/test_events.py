"""Every event the agent emits is an ``Event`` of a kind listed in ``EventKind``, documented in
docs/events.md, and its wire form is the flat JSON the outbox, MQTT and the cloud have always read."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from protocols.events import Event, EventKind

ROOT = Path(__file__).resolve().parents[2]
EMITTING_PACKAGES = ("edge_agent", "devices")


def _python_files():
    for pkg in EMITTING_PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def test_every_kind_is_documented_with_its_fields():
    text = (ROOT / "docs" / "events.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| (.*?) \|", text, re.M))
    assert set(rows) == {k.value for k in EventKind}, "docs/events.md and EventKind list different kinds"
    for k in EventKind:
        assert re.findall(r"`([a-z0-9_]+)`", rows[k.value]) == list(k.fields), k


def test_no_event_is_built_as_a_plain_dict_and_every_kind_named_in_code_exists():
    """A ``{"kind": "..."}`` literal (constant or f-string) in the agent or the devices would bypass
    EventKind; an ``Event(EventKind.X)`` or ``_event(EventKind.X)`` must name a member."""
    bad, unknown = [], []
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for k, v in zip(node.keys, node.values, strict=True):
                    if (
                        isinstance(k, ast.Constant)
                        and k.value == "kind"
                        and isinstance(v, ast.Constant | ast.JoinedStr)
                    ):
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "EventKind"
            ):
                if node.attr not in EventKind.__members__ and node.attr not in ("fields", "meaning"):
                    unknown.append(f"{path.relative_to(ROOT)}:{node.lineno}: EventKind.{node.attr}")
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("Event", "_event")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                if node.args[0].value not in {k.value for k in EventKind}:
                    unknown.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.args[0].value!r}")
    assert not bad, f"events built as dicts (use protocols.events.Event): {bad}"
    assert not unknown, f"unknown event kinds: {unknown}"


def test_an_unknown_kind_or_a_missing_payload_field_is_refused_when_built():
    with pytest.raises(ValueError, match="unknown event kind 'swap_exploded'.*add it to protocols.events"):
        Event("swap_exploded", slot="vision")
    with pytest.raises(ValueError, match=r"event life_reset: payload field\(s\) \['reason'\] missing"):
        Event(EventKind.LIFE_RESET, pipeline="health")
    with pytest.raises(ValueError, match="unknown event kind"):
        Event.coerce({"kind": "nope", "t": 1.0})


def test_the_wire_form_is_flat_json_and_an_event_reads_like_it():
    e = Event(EventKind.SWAP_KEPT, t=12.5, slot="vision", version="1.3.0", inferences=40)
    wire = e.to_json_dict()
    assert wire == {"kind": "swap_kept", "t": 12.5, "slot": "vision", "version": "1.3.0", "inferences": 40}
    assert json.loads(json.dumps(wire)) == wire and type(wire["kind"]) is str
    assert e["kind"] == "swap_kept" and e.get("version") == "1.3.0" and e.get("nothing") is None
    assert dict(e) == wire and Event.coerce(wire).to_json_dict() == wire and Event.coerce(e) is e
    with pytest.raises(AttributeError):
        e.t = 0.0


def test_the_agent_refuses_an_unknown_kind_and_records_a_known_one_in_its_wire_form(tmp_path):
    from edge_agent.agent import Agent
    from edge_agent.config import parse_config

    agent = Agent(
        parse_config({"agent": {"id": "gw-1", "data_dir": str(tmp_path)}, "http": {"enabled": False}})
    )
    agent._event({"kind": "life_reset", "t": 3.0, "pipeline": "health", "reason": "bearing replaced"})
    with pytest.raises(ValueError, match="unknown event kind 'made_up'"):
        agent._event({"kind": "made_up", "t": 4.0})
    assert [e.kind for e in agent.events] == [EventKind.LIFE_RESET]
    assert agent.metrics.events.labels("life_reset")._value.get() == 1
