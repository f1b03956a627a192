"""Text that is not valid Unicode in an MQTT JSON message (a lone surrogate escape, ``"\\ud800"``, which JSON
allows to be written, or a surrogate's own bytes: Python's decoder hands both over) goes on as valid text, each
lone surrogate U+FFFD, counted per source (``invalid_text``). An agent against a real Mosquitto, forwarding the
source's tags back to it and to its outbox, read by a raw paho subscriber and checked as a strict consumer
(serde_json, PostgreSQL jsonb) reads JSON: UTF-8, no lone surrogate."""

from __future__ import annotations

import json

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.support.mqtt_read import read_published
from tests.support.waits import until


def _strict(payload: bytes) -> dict:
    """The message as a strict consumer reads it: Python's json takes a lone surrogate escape, UTF-8 does not."""
    msg = json.loads(payload)
    json.dumps(msg, ensure_ascii=False).encode()  # UnicodeEncodeError: the consumer refuses the whole message
    return msg


async def test_a_lone_surrogate_in_json_text_goes_on_as_valid_text_and_is_counted(
    tmp_path, mosquitto
) -> None:
    """Before, "x\\ud800y" went on to the forward's MQTT messages, the outbox and the cloud as that escape,
    which strict JSON parsers refuse with the whole message; a key holding one named a tag that did the same."""
    cfg = {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "http": {"enabled": False},
        "outbox": {},
        "sources": {
            "broker": {
                "type": "mqtt",
                "port": mosquitto.port,
                "subscriptions": [
                    {"topic": "line/label", "json_mapping": {"values": {"name": "name", "pair": "pair"}}},
                    {"topic": "line/oven"},
                ],
            }
        },
        "forward": [{"name": "all", "source": "broker", "to": "broker", "outbox": True}],
    }
    agent = Agent(parse_config(cfg))
    got: list[bytes] = []
    sub = paho.Client(CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("factory/#", qos=1)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    src = agent.sources["broker"]
    try:
        await agent.start()
        await until(lambda: src.subscribed.is_set(), what="the SUBACK")
        # as written by a device: escapes, a valid pair (an emoji) among them
        pub.publish("line/label", b'{"name": "x\\ud800y", "pair": "\\ud83d\\ude00"}', qos=1)
        pub.publish("line/oven", b'{"t\\udfffemp": 21.5, "n": 1}', qos=1)
        # a surrogate's own bytes (CESU-8, Java's modified UTF-8), which Python's json takes where UTF-8 fails
        pub.publish("line/label", b'{"name": "x\xed\xa0\x80z", "pair": "ok"}', qos=1)
        await until(lambda: len(got) >= 6, timeout_s=30, what="the forwarded messages")
        agent.outbox.flush()
        stored = [r.payload for r in agent.outbox.pending(100, 10**7) if r.kind == "telemetry"]
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.disconnect()
        sub.loop_stop()
        await agent.stop()
    for name, payloads in (("MQTT", got), ("outbox", stored)):
        values = [(m["tag"], m["value"]) for m in map(_strict, payloads)]
        assert sorted(values) == [
            ("line/label/name", "x\ufffdy"),
            ("line/label/name", "x\ufffdz"),
            ("line/label/pair", "ok"),
            ("line/label/pair", "\U0001f600"),
            ("line/oven/n", 1),
            ("line/oven/t\ufffdemp", 21.5),
        ], name
    assert src.stats.errors_by_reason["invalid_text"] == 3


async def test_two_keys_that_differ_only_by_text_that_is_not_unicode_are_never_read_into_one_tag(
    mosquitto,
) -> None:
    """A device's keys "t\\ud800" and "t\\udc00" (two fields of Latin-1 names, each byte that is no UTF-8 a lone
    surrogate) are both "t\\ufffd" once made valid: the two fields' values went on as one tag, alternating, and the
    log named only the first key (its invalid_text line said once per burst). They are refused as a key given
    twice is (``duplicate_key``, naming both as they came), the message's other values read; a key given alone
    and a historian's batch of one key's samples are read as before."""
    errors: list[str] = []
    got, src = await read_published(
        mosquitto.port,
        [{"topic": "dev/#"}, {"topic": "end"}],
        [
            ("dev/a", b'{"t\\ud800": 1, "t\\udc00": 2, "n": 3}'),
            ("dev/b", b'{"t\\ufffd": 4, "t\\udcff": 5}'),  # one valid already: the same tag all the same
            ("dev/c", b'{"t\\udc00": 6}'),
            ("dev/d", b'[{"t\\udc00": 7, "ts": 1700000000}, {"t\\udc00": 8, "ts": 1700000001}]'),
            ("end", b'{"e": 1}'),
        ],
        "end/e",
        errors=errors,
    )
    assert [(r.tag, r.value) for r in got] == [
        ("dev/a/n", 3),
        ("dev/c/t\ufffd", 6),
        ("dev/d/t\ufffd", 7),
        ("dev/d/t\ufffd", 8),
        ("end/e", 1),
    ]
    clashes = [e for e in errors if e.startswith("duplicate_key")]
    assert len(clashes) == 2 and src.stats.errors_by_reason["duplicate_key"] == 2, errors
    assert "'dev/a/t\\ud800'" in clashes[0] and "'dev/a/t\\udc00'" in clashes[0], clashes


async def test_a_clash_of_thousands_of_names_is_said_in_a_bounded_line(mosquitto) -> None:
    """A message of 8,000 keys that all differ only by text that is not valid Unicode ("\\udc80\\udc80",
    "\\udc80\\udc81", ...) made a duplicate_key line joining every name: 176,220 characters in last_error, /status
    and the log. The first names are said, then how many more."""
    keys = [f'"\\udc{a:02x}\\udc{b:02x}": 1' for a in range(0x80, 0x100) for b in range(0x80, 0x100)][:8000]
    errors: list[str] = []
    got, src = await read_published(
        mosquitto.port,
        [{"topic": "dev/#"}, {"topic": "end"}],
        [("dev/a", ("{" + ", ".join(keys) + ', "n": 3}').encode()), ("end", b'{"e": 1}')],
        "end/e",
        errors=errors,
    )
    assert [(r.tag, r.value) for r in got] == [("dev/a/n", 3), ("end/e", 1)]
    (clash,) = [e for e in errors if e.startswith("duplicate_key")]
    assert len(clash) < 1000 and "'dev/a/\\udc80\\udc80'" in clash and "and 7,997 more" in clash, clash[:2000]
    assert len(src.stats.last_error or "") < 1000
