"""The agent's tags view (``Agent.tags``: /status, /api/tags, ``edge-agent tags``) against a real Mosquitto
carrying large waveforms and texts on many topics (a client of a shared broker, or sensors under a wildcard
subscription): the view shows an array as its size, type and last sample and keeps no more of it, and a text
as its first characters; the readings handed to rules, forwards and pipelines are whole."""

from __future__ import annotations

import json
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent import cli
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.status_board import tag_rows
from tests.support.waits import until


def _held_bytes(value: Any) -> int:
    """Bytes of memory an array value keeps alive (the array at the root of its views)."""
    root = value
    while getattr(root, "base", None) is not None:
        root = root.base
    return int(getattr(root, "nbytes", 0))


async def test_the_tags_view_keeps_an_arrays_summary_and_a_texts_start_not_the_whole_value(
    tmp_path, mosquitto
):
    """The view kept each tag's last reading whole: 60 waveforms of 8-MB messages on as many topics held 2 GB
    (a 4-million-sample float64 array each), and its 5,000 tags could hold 160 GB; it shows only an array's size,
    type and last sample. Now it keeps that: the row is as before, the array no longer held; a text over
    TAG_TEXT_CHARS is kept cut. A forward of the same tags (what rules and pipelines get too) sends them whole."""
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "sources": {
            "broker": {
                "type": "mqtt",
                "port": mosquitto.port,
                "subscriptions": [
                    {"topic": "line/#", "json_mapping": {"values": {"w": "w", "note": "note"}}}
                ],
            }
        },
        "forward": [
            {"name": "all", "source": "broker", "to": "broker", "tags": ["line/s0/w", "line/s0/note"]}
        ],
    }
    agent = Agent(parse_config(cfg))
    src = agent.sources["broker"]
    sent: list[bytes] = []
    watcher = paho.Client(CallbackAPIVersion.VERSION2)
    watcher.on_message = lambda _c, _u, m: sent.append(m.payload)
    watcher.connect("127.0.0.1", mosquitto.port)
    watcher.subscribe("factory/#")
    watcher.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    note = "n" * 50_000
    try:
        await agent.start()
        await until(lambda: src.subscribed.is_set(), 30, "the SUBACK")
        for i in range(20):  # 100,000 samples each: 800 KB as float64
            pub.publish(f"line/s{i}", json.dumps({"w": [1.0] * 99_999 + [float(i)], "note": note}), qos=1)
        # 20 JSON texts of about 1 MB decoded by the agent: over a minute on a loaded 2-core machine
        await until(lambda: len(agent.tags["broker"]) == 40, 120, "every tag in the view")
        await until(
            lambda: (
                any(note.encode() in p for p in sent)
                and any(b"99999" not in p and p.count(b"1.0") >= 99_999 for p in sent)
            ),
            60,
            "the forward of both tags",
        )
        rows = {r["tag"]: r for r in tag_rows(list(agent.tags["broker"].values()))}
        held = {t: _held_bytes(r.value) for t, r in agent.tags["broker"].items() if t.endswith("/w")}
    finally:
        for c in (pub, watcher):
            c.disconnect()
            c.loop_stop()
        await agent.stop()
    for i in range(20):
        assert rows[f"line/s{i}/w"]["value"] == f"[100000 values, last {i}]", rows[f"line/s{i}/w"]
        assert rows[f"line/s{i}/w"]["type"] == "array<float64>"
        assert rows[f"line/s{i}/note"]["value"] == "n" * 1024 + "…"  # TAG_TEXT_CHARS
    assert max(held.values()) <= 1024, held


async def test_the_tags_view_keeps_the_start_of_a_long_list_or_byte_string_not_the_whole_value(tmp_path):
    """An OPC UA ByteString of 2 MB (a raw parameter block, an image a PLC holds) and an Int64[] of 100,000
    counters past 2**53 (kept exact: a list of ints) were kept whole by the view, and every /api/tags (the status
    page asks every 2 s) answered them whole: 2.7 MB of base64 and 2 MB of JSON text per request (20 MB and
    0.19 s of the HTTP thread's CPU for a 15 MB ByteString). The view keeps their start and shows it as a long
    text is, cut with `…`, with the value's type; a forward to the outbox sends them whole."""
    import base64
    import urllib.request

    from asyncua import ua

    from tests.support.peers import free_port, opcua_server

    block = bytes(range(256)) * 8192  # 2 MiB
    counters = [2**60 + i for i in range(100_000)]
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Plc")
    await obj.add_variable(ua.NodeId("Block", idx), "Block", ua.Variant(block, ua.VariantType.ByteString))
    await obj.add_variable(ua.NodeId("Counters", idx), "Counters", ua.Variant(counters, ua.VariantType.Int64))
    await srv.start()
    tags = ("Block", "Counters")
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"port": 0},
        "outbox": {},
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                "nodes": [{"node_id": f"ns={idx};s={t}", "tag": t} for t in tags],
            }
        },
        "forward": [{"name": "all", "source": "plc", "tags": list(tags), "outbox": True}],
    }
    agent = Agent(parse_config(cfg))
    try:
        await agent.start()
        await until(lambda: set(agent.tags.get("plc", {})) == set(tags), what="both tags in the view")
        raw = urllib.request.urlopen(f"http://127.0.0.1:{agent.http.port}/api/tags", timeout=5).read()
        assert agent.outbox is not None
        agent.outbox.flush()
        sent = {
            m["tag"]: m["value"]
            for m in (json.loads(r.payload) for r in agent.outbox.pending(10, 10**8) if r.kind == "telemetry")
        }
    finally:
        await agent.stop()
        await srv.stop()
    assert len(raw) < 10_000, len(raw)
    rows = {r["tag"]: r for r in json.loads(raw)["plc"]}
    assert rows["Block"]["type"] == "bytes" and rows["Counters"]["type"] == "list"
    assert rows["Block"]["value"].endswith("…") and rows["Counters"]["value"].endswith("…")
    assert base64.b64encode(block).decode().startswith(rows["Block"]["value"][:-1])
    assert json.dumps(counters).startswith(rows["Counters"]["value"][:-1])
    assert sent == {
        "Block": base64.b64encode(block).decode(),
        "Counters": counters,
    }  # the cloud gets them whole


def test_edge_agent_tags_shows_numbers_whole_and_writes_strict_json(tmp_path, mosquitto, capsys):
    """``edge-agent tags`` against a real Mosquitto holding a device's retained message: a 46-digit integer and an
    Int64 array's last item are shown with every digit (the table cut every value at 40 characters, silently: 10**45
    was shown as 10**39), a long text is cut with `…`, and ``--json`` writes a BAD tag's NaN as null (it wrote
    ``NaN``, which jq and browsers refuse: /api/tags writes null)."""
    values = {"big": 10**45, "c": [1] * 99_999 + [2**63 - 1], "n": float("nan"), "t": "y" * 60}
    cfg = {
        "agent": {"id": "gw1"},
        "sources": {
            "broker": {
                "type": "mqtt",
                "port": mosquitto.port,
                "subscriptions": [{"topic": "dev/#", "json_mapping": {"values": {k: k for k in values}}}],
            }
        },
    }
    path = tmp_path / "tags.yaml"
    path.write_text(yaml.safe_dump(cfg))
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        pub.publish("dev/a", json.dumps(values), qos=1, retain=True).wait_for_publish(
            5
        )  # NaN: Python writes NaN
        outs = []
        for extra in ([], ["--json"]):
            assert cli.main(["tags", str(path), "--seconds", "3", *extra]) == 0
            outs.append(capsys.readouterr().out)
    finally:
        pub.publish("dev/a", b"", qos=1, retain=True).wait_for_publish(5)
        pub.disconnect()
        pub.loop_stop()
    text, as_json = outs
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.startswith("  dev/a/")}
    assert f" {10**45} " in lines["dev/a/big"], text  # before: 1 and 39 zeros
    assert f"[100000 values, last {2**63 - 1}] " in lines["dev/a/c"], text  # before: 9.223e+18
    assert " " + "y" * 39 + "… " in lines["dev/a/t"], text
    rows = {r["tag"]: r for r in json.loads(as_json, parse_constant=lambda c: c)["tags"]["broker"]}
    assert (rows["dev/a/n"]["value"], rows["dev/a/n"]["quality"]) == (None, "bad")  # before: the text NaN
    assert rows["dev/a/big"]["value"] == 10**45
