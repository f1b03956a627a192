"""The wire contracts as golden files: the MQTT topic scheme and the JSON the agent publishes on it,
and the model package's manifest schema. A change to any of them shows here as a diff; when it is
deliberate (with its version bump), regenerate the files with

    UPDATE_GOLDEN=1 pytest tests/contract

and commit them with the change. The fleet proto's messages and services are here too (its generated code has
its own check: tests/unit/test_protocols_gen.py).
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"


def check_golden(name: str, data) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
        return
    want = path.read_text() if path.exists() else ""
    if text != want:
        diff = "".join(
            difflib.unified_diff(want.splitlines(True), text.splitlines(True), f"golden/{name}", "now")
        )
        pytest.fail(
            f"the contract in golden/{name} changed (deliberate? bump its version and run "
            f"UPDATE_GOLDEN=1 pytest tests/contract):\n{diff}"
        )


def _result(**kw):
    from edge_agent.types import Latency, Result

    base = dict(
        pipeline="inspect",
        source="cam",
        item_seq=7,
        captured_at=1.7e9,
        model="part-inspection",
        model_version="1.2.0",
        engine="onnxruntime",
        verdict="NG",
        score=0.93,
        label="crack",
        probabilities={"ok": 0.07, "crack": 0.93},
        margin=0.86,
        latency=Latency(queue_ms=0.1, preprocess_ms=0.4, inference_ms=1.2, postprocess_ms=0.1),
        finished_at=1.7e9 + 0.01,
    )
    return Result(**{**base, **kw})


async def test_mqtt_topics_and_payloads_match_their_golden_file():
    from edge_agent.actions import ActionRunner
    from edge_agent.config import parse_config
    from protocols import topics

    scheme = {
        k.value: topics.build_topic(
            "plant1",
            "line1",
            "gw-1",
            k,
            "inspect"
            if k in (topics.Kind.RESULTS, topics.Kind.TAGS)
            else ("bearing" if k is topics.Kind.ALARMS else None),
        )
        for k in topics.Kind
    }
    events: list[dict] = []
    cfg = parse_config({"agent": {"id": "gw-1"}, "actions": {"bearing": {"type": "alarm", "raise_after": 1}}})
    runner = ActionRunner(cfg, sources={}, on_event=events.append)
    await runner.handle(["bearing"], _result(), None)  # raised: its event is the alarm payload
    await runner.flush()
    alarm = dict(events[0], t="<epoch s>")
    check_golden(
        "mqtt.json",
        {
            "topics": scheme,
            "status_payloads": [topics.STATUS_ONLINE, topics.STATUS_OFFLINE],
            "result_payload": _result().to_json_dict(),
            "alarm_payload": alarm,
        },
    )


def test_manifest_schema_matches_its_golden_file():
    from model_packager.manifest import Manifest

    check_golden("manifest.schema.json", Manifest.model_json_schema())


def test_fleet_proto_matches_its_golden_file():
    """Every message's fields (number, type, label) and every service's methods: a renumbered, retyped or
    removed field shows as a diff (a new field as an addition)."""
    from google.protobuf.descriptor import FieldDescriptor

    from protocols.gen import fleet_pb2

    fd = fleet_pb2.DESCRIPTOR

    def label(f) -> str:
        repeated = f.is_repeated if hasattr(f, "is_repeated") else f.label == FieldDescriptor.LABEL_REPEATED
        if repeated:
            return (
                "map" if f.message_type is not None and f.message_type.GetOptions().map_entry else "repeated"
            )
        return "optional" if f.has_presence and f.message_type is None else ""

    def type_of(f) -> str:
        if f.message_type is not None:
            return f.message_type.full_name
        return {
            v: k.removeprefix("TYPE_").lower()
            for k, v in vars(FieldDescriptor).items()
            if k.startswith("TYPE_")
        }[f.type]

    messages = {
        name: {f.name: " ".join(x for x in (label(f), type_of(f), f"= {f.number}") if x) for f in m.fields}
        for name, m in fd.message_types_by_name.items()
    }
    services = {
        name: {m.name: f"{m.input_type.name} -> {m.output_type.name}" for m in s.methods}
        for name, s in fd.services_by_name.items()
    }
    check_golden("fleet_proto.json", {"package": fd.package, "messages": messages, "services": services})
