"""Sparkplug commands (``MqttSource.command`` and the ``sparkplug_command`` action) across an edge node's
lifecycle, against a real Mosquitto with a raw paho client playing the node: a command is typed by the
node's current birth only, is not sent to a node that is dead, and a level the node missed while dead is
sent again when it is born again; a birth datatype this host cannot write is a type mismatch."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt import client as client_module
from devices.mqtt import sparkplug_host
from devices.mqtt.client import MqttError, MqttSource, SparkplugTypeMismatch
from devices.mqtt.settings import MqttSettings
from edge_agent.actions import ActionRunner
from edge_agent.config import ConfigError, load_config, parse_config
from edge_agent.types import Result
from protocols import sparkplug as sp
from tests.support.sparkplug_pb import pb_metric
from tests.support.waits import until

D = sp.DataType


class Node:
    """A raw paho client playing edge node ``g/n1``: publishes births and deaths, records the commands
    sent to it (NCMD, DCMD)."""

    def __init__(self, port: int) -> None:
        self.cmds: list[tuple[str, sp.Payload, object]] = []
        self.c = paho.Client(CallbackAPIVersion.VERSION2)
        self.c.on_message = lambda c, u, m: self.cmds.append(
            (m.topic, sp.decode(m.payload), sp._pb().Payload.FromString(m.payload))
        )
        self.c.connect("127.0.0.1", port, 30)
        self.c.subscribe([("spBv1.0/g/NCMD/n1", 1), ("spBv1.0/g/DCMD/n1/#", 1)])
        self.c.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def nbirth(self, bd: int, *metrics: sp.Metric) -> None:
        self.publish(
            "spBv1.0/g/NBIRTH/n1",
            sp.encode(
                sp.Payload(int(time.time() * 1000), 0, [sp.Metric("bdSeq", None, D.INT64, bd), *metrics])
            ),
        )

    async def wait_cmds(self, n: int, timeout_s: float = 5.0) -> list:
        for _ in range(int(timeout_s * 20)):
            if len(self.cmds) >= n:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # and nothing more after them
        return self.cmds

    def stop(self) -> None:
        self.c.disconnect()  # first: paho's thread ends once it is written, not at its next 1 s select
        self.c.loop_stop()


async def _host(port: int, **kw) -> tuple[MqttSource, asyncio.Task]:
    src = MqttSource(
        "bus", MqttSettings(port=port, subscriptions=[{"topic": "spBv1.0/#", "codec": "sparkplug_b"}], **kw)
    )
    await src.start()
    async with asyncio.timeout(5):
        await src.connected.wait()
        await src.subscribed.wait()

    async def pump():
        async for _ in src.items():
            pass

    return src, asyncio.create_task(pump())


async def _births(src: MqttSource, n: int) -> None:
    for _ in range(600):
        if src.sparkplug.births >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{src.sparkplug.births} births seen, waited for {n}")


@contextlib.asynccontextmanager
async def _born(port: int, cfg, *metrics: sp.Metric) -> AsyncIterator[tuple[Node, MqttSource, ActionRunner]]:
    """(node, host, runner): the edge node ``g/n1`` born with ``metrics``, the Sparkplug host ``bus`` that read its
    birth, and ``cfg``'s actions on it. Stopped on the way out."""
    node = Node(port)
    src, pump = await _host(port)
    runner = ActionRunner(cfg, {"bus": src})
    try:
        node.nbirth(0, *metrics)
        await _births(src, 1)
        yield node, src, runner
    finally:
        pump.cancel()
        await src.stop()
        node.stop()


def _sent(cmd) -> tuple:
    """(topic, top metric name, its datatype, what it carries) of a recorded command."""
    topic, _, pb = cmd
    m = pb.metrics[0]
    if m.datatype == D.TEMPLATE:
        return topic, m.name, m.datatype, [(x.name, x.datatype) for x in m.template_value.metrics]
    return topic, m.name, m.datatype, getattr(m, m.WhichOneof("value"))


def _command_config(port: int, name: str, action: dict):
    """An agent config with one Sparkplug host source `bus` and one `sparkplug_command` action on it."""
    return parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {
                "bus": {
                    "type": "mqtt",
                    "port": port,
                    "subscriptions": [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}],
                }
            },
            "actions": {
                name: {
                    "type": "sparkplug_command",
                    "source": "bus",
                    "group": "g",
                    "edge_node": "n1",
                    **action,
                }
            },
        }
    )


def _ng_result() -> Result:
    """A result every `when: {verdict: NG}` takes."""
    now = time.time()
    return Result(
        pipeline="p",
        source="s",
        item_seq=0,
        captured_at=now,
        model="m",
        model_version="1",
        engine="e",
        verdict="NG",
        score=1.0,
        label="x",
        finished_at=now,
    )


async def test_a_rebirth_forgets_the_datatypes_and_template_members_of_the_births_before(mosquitto):
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    try:
        nb = sp._pb().Payload()  # speed Int32 and a Template instance M1 with member Speed (Float)
        nb.timestamp, nb.seq = int(time.time() * 1000), 0
        m = nb.metrics.add()
        m.name, m.datatype, m.long_value = "bdSeq", D.INT64, 0
        m = nb.metrics.add()
        m.name, m.datatype, m.int_value = "speed", D.INT32, 5
        m = nb.metrics.add()
        m.name, m.datatype = "M1", D.TEMPLATE
        m.template_value.template_ref = "Motor"
        x = m.template_value.metrics.add()
        x.name, x.datatype, x.float_value = "Speed", D.FLOAT, 1.0
        node.publish("spBv1.0/g/NBIRTH/n1", nb.SerializeToString())
        node.publish(
            "spBv1.0/g/DBIRTH/n1/d1",
            sp.encode(sp.Payload(int(time.time() * 1000), 1, [sp.Metric("level", None, D.FLOAT, 0.5)])),
        )
        await _births(src, 2)
        await src.command("g", "n1", None, "speed", 1)
        await src.command("g", "n1", None, "M1/Speed", 2.0)
        await src.command("g", "n1", "d1", "level", 1)
        # the node is born again: speed is gone, "M1/Speed" is now a plain Double metric; d1 has not
        # re-DBIRTHed yet, so its old datatypes are gone with the node's, and it is not alive until it does
        node.nbirth(1, sp.Metric("M1/Speed", None, D.DOUBLE, 0.0), sp.Metric("rate", None, D.FLOAT, 0.0))
        await _births(src, 3)
        await src.command("g", "n1", None, "speed", 1)
        await src.command("g", "n1", None, "M1/Speed", 2.0)
        with pytest.raises(MqttError, match="device g/n1/d1 is not alive"):  # not sent typed by the value
            await src.command("g", "n1", "d1", "level", 1)
        # d1 is born again with level now Int16
        node.publish(
            "spBv1.0/g/DBIRTH/n1/d1",
            sp.encode(sp.Payload(int(time.time() * 1000), 1, [sp.Metric("level", None, D.INT16, 0)])),
        )
        await _births(src, 4)
        await src.command("g", "n1", "d1", "level", 1)
        cmds = [_sent(c) for c in await node.wait_cmds(6)]
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    n, d = "spBv1.0/g/NCMD/n1", "spBv1.0/g/DCMD/n1/d1"
    assert cmds == [
        (n, "speed", D.INT32, 1),
        (n, "M1", D.TEMPLATE, [("Speed", D.FLOAT)]),
        (d, "level", D.FLOAT, 1.0),
        # before, the first birth's Int32, Template and Float were used after the rebirth
        (n, "speed", D.INT64, 1),  # not in the current birth: typed by the value
        (n, "M1/Speed", D.DOUBLE, 2.0),  # a plain metric now, not a Template member
        (d, "level", D.INT16, 1),
    ], cmds


async def test_a_command_to_a_dead_or_never_born_node_is_not_sent_and_may_be_retried(mosquitto):
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    try:
        node.nbirth(0, sp.Metric("rate", None, D.FLOAT, 0.0))
        await _births(src, 1)
        node.publish("spBv1.0/g/NDEATH/n1", sp.death_payload(0))
        for _ in range(600):
            if not src.sparkplug.node_alive("g", "n1"):
                break
            await asyncio.sleep(0.05)
        with pytest.raises(MqttError) as dead:
            await src.command("g", "n1", None, "rate", 2.5)
        with pytest.raises(MqttError) as unborn:
            await src.command("g", "n2", None, "rate", 2.5)
        cmds = await node.wait_cmds(1, timeout_s=0.5)
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert [t for t, _, _ in cmds] == []  # before: both were published and reported "sent"
    assert dead.value.retryable and unborn.value.retryable
    assert "g/n1/rate not sent: edge node g/n1 is not alive" in str(dead.value)
    assert "edge node g/n2 is not alive" in str(unborn.value)


async def test_a_birth_datatype_this_host_cannot_write_is_a_type_mismatch_naming_metric_and_number(mosquitto):
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    try:
        nb = sp._pb().Payload()
        nb.timestamp, nb.seq = int(time.time() * 1000), 0
        m = nb.metrics.add()
        m.name, m.datatype, m.long_value = "bdSeq", D.INT64, 0
        m = nb.metrics.add()
        m.name, m.datatype, m.bytes_value = "arr", 24, b"\x01\x00\x00\x00"  # Sparkplug 3.0 Int32Array
        m = nb.metrics.add()
        m.name, m.datatype, m.int_value = "untyped", 0, 3  # Unknown
        node.publish("spBv1.0/g/NBIRTH/n1", nb.SerializeToString())
        await _births(src, 1)
        errors = []
        for metric in ("arr", "untyped"):
            with pytest.raises(SparkplugTypeMismatch) as e:  # before: a ValueError, retried in vain
                await src.command("g", "n1", None, metric, 1)
            errors.append(e.value)
        cmds = await node.wait_cmds(1, timeout_s=0.5)
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert [t for t, _, _ in cmds] == []
    assert not any(e.retryable for e in errors)
    assert "metric 'arr' datatype 24, which this host cannot write" in str(errors[0])
    assert "metric 'untyped' datatype 0, which this host cannot write" in str(errors[1])


async def test_an_on_change_command_a_dead_node_missed_is_sent_when_it_is_born_again(mosquitto):
    node = Node(mosquitto.port)
    cfg = _command_config(
        mosquitto.port,
        "gate",
        {
            "metric": "stop",
            "mode": "on_change",
            "when": {"verdict": "NG"},
            "retry": {"max_attempts": 2, "backoff_s": 0.05},
        },
    )
    src, pump = await _host(mosquitto.port)
    runner = ActionRunner(cfg, {"bus": src})
    result = _ng_result()
    try:
        node.nbirth(0, sp.Metric("stop", None, D.BOOLEAN, False))
        await _births(src, 1)
        node.publish("spBv1.0/g/NDEATH/n1", sp.death_payload(0))
        for _ in range(600):
            if not src.sparkplug.node_alive("g", "n1"):
                break
            await asyncio.sleep(0.05)
        await runner.handle(["gate"], result, None)  # stop = true, while the node is dead
        await runner.flush()
        missed = dict(runner.stats["gate"])
        assert [t for t, _, _ in node.cmds] == []
        node.nbirth(1, sp.Metric("stop", None, D.BOOLEAN, False))  # back; no new result comes
        cmds = await node.wait_cmds(3)
        await runner.flush()
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    # before: counted ok while the node was dead, and never sent again (on_change: the level held)
    assert missed == {"attempt_failures": 2, "retried": 1, "failed": 1}, missed
    sent = [(t, [(m.name, m.value) for m in p.metrics]) for t, p, _ in cmds]
    assert sent == [("spBv1.0/g/NCMD/n1", [("stop", True)])], sent
    assert runner.stats["gate"]["resent"] == 1 and runner.stats["gate"]["ok"] == 1


async def test_a_dcmd_to_a_dead_or_never_born_device_is_not_sent_and_is_sent_again_at_its_birth(mosquitto):
    node = Node(mosquitto.port)
    cfg = _command_config(
        mosquitto.port,
        "gate",
        {
            "device": "d1",
            "metric": "stop",
            "mode": "on_change",
            "when": {"verdict": "NG"},
            "retry": {"max_attempts": 1},
        },
    )

    def dmsg(kind: str, seq: int, *metrics: sp.Metric) -> None:
        node.publish(
            f"spBv1.0/g/{kind}/n1/d1", sp.encode(sp.Payload(int(time.time() * 1000), seq, list(metrics)))
        )

    src, pump = await _host(mosquitto.port)
    runner = ActionRunner(cfg, {"bus": src})
    result = _ng_result()
    try:
        node.nbirth(0)
        await _births(src, 1)
        with pytest.raises(MqttError) as unborn:  # the node is alive, its device never said DBIRTH
            await src.command("g", "n1", "d1", "stop", True)
        dmsg("DBIRTH", 1, sp.Metric("stop", None, D.BOOLEAN, False))
        await _births(src, 2)
        dmsg("DDEATH", 2)
        for _ in range(1500):
            if not src.sparkplug.device_alive("g", "n1", "d1"):
                break
            await asyncio.sleep(0.02)
        await runner.handle(["gate"], result, None)  # stop = true, while the device is dead
        await runner.flush()
        missed = dict(runner.stats["gate"])
        assert [t for t, _, _ in node.cmds] == []  # before: a DCMD its node drops, counted ok
        dmsg("DBIRTH", 3, sp.Metric("stop", None, D.BOOLEAN, False))  # back; no new result comes
        cmds = await node.wait_cmds(1)
        await runner.flush()
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert unborn.value.retryable and "device g/n1/d1 is not alive" in str(unborn.value)
    assert missed == {"attempt_failures": 1, "failed": 1}, missed
    sent = [(t, [(m.name, m.value) for m in p.metrics]) for t, p, _ in cmds]
    assert sent == [("spBv1.0/g/DCMD/n1/d1", [("stop", True)])], sent
    assert runner.stats["gate"]["resent"] == 1 and runner.stats["gate"]["ok"] == 1


async def test_a_level_the_gateway_could_not_send_while_it_was_away_is_sent_at_the_rebirth_it_asks(mosquitto):
    """The gateway's own broker connection drops while its node stays up: a level command then fails (QoS 0,
    not connected) and is kept for the node's next birth, which never came, as the node had not died: the
    PLC kept the old speed. Now the gateway asks a rebirth of its nodes once it is back, and the kept
    command goes out at that birth, typed by it."""
    node = Node(mosquitto.port)
    cfg = _command_config(
        mosquitto.port,
        "slow",
        {
            "metric": "speed",
            "value": 1500,
            "mode": "level",
            "when": {"verdict": "NG"},
            "retry": {"max_attempts": 1},
        },
    )
    src, pump = await _host(mosquitto.port, client_id="gw-cmd")
    runner = ActionRunner(cfg, {"bus": src})
    result = _ng_result()
    kicker = paho.Client(CallbackAPIVersion.VERSION2, client_id="gw-cmd")  # takes the gateway's session
    try:
        node.nbirth(0, sp.Metric("speed", None, D.FLOAT, 1000.0))
        await _births(src, 1)
        kicker.connect("127.0.0.1", mosquitto.port, 30)
        kicker.loop_start()
        async with asyncio.timeout(5):
            while src.connected.is_set():
                await asyncio.sleep(0.02)
        await runner.handle(["slow"], result, None)  # speed = 1500 while the gateway is away
        await runner.flush()
        missed = dict(runner.stats["slow"])
        kicker.disconnect()
        kicker.loop_stop()
        cmds = await node.wait_cmds(1, timeout_s=3.0)  # the gateway is back (about 1 s): it asks a rebirth
        if cmds:
            node.nbirth(0, sp.Metric("speed", None, D.DOUBLE, 1000.0))  # still up (same bdSeq), now Double
            cmds = await node.wait_cmds(2, timeout_s=3.0)
        await runner.flush()
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert missed == {"attempt_failures": 1, "failed": 1}, missed
    sent = [_sent(c) for c in cmds]
    n = "spBv1.0/g/NCMD/n1"
    # before: nothing at all; the node stayed up, so no birth came to send the kept level at
    assert sent == [(n, "Node Control/Rebirth", D.BOOLEAN, True), (n, "speed", D.DOUBLE, 1500.0)], sent
    assert runner.stats["slow"]["resent"] == 1 and runner.stats["slow"]["ok"] == 1


async def test_a_datetime_metric_is_written_from_iso_text_with_its_zone_or_epoch_ms_as_its_birth_declares(
    mosquitto,
):
    """Before, no command could write a DateTime metric (readings of one are ISO 8601 text): the host refused
    every value ("only Boolean, integer, Float, Double and String metrics"), and an action's datatype could not
    be DateTime. Now ISO 8601 text with its zone (as a reading gives it) or epoch milliseconds is sent as the
    metric's milliseconds since 1970, by the birth's datatype or the action's ``datatype: DateTime``; a time
    without a zone is refused (a type mismatch, not retried), and so is ``datatype: DateTime`` for a metric its
    birth declares otherwise."""
    node = Node(mosquitto.port)
    cfg = _command_config(
        mosquitto.port,
        "due",
        {
            "metric": "due",
            "datatype": "DateTime",
            "value": "2026-12-03T06:17:50.123+01:00",
            "when": {"verdict": "NG"},
        },
    )
    src, pump = await _host(mosquitto.port)
    runner = ActionRunner(cfg, {"bus": src})
    try:
        node.nbirth(0, sp.Metric("due", None, D.DATETIME, 0), sp.Metric("count", None, D.INT64, 0))
        await _births(src, 1)
        await src.command("g", "n1", None, "due", "2026-12-03T05:17:50Z")  # typed by the birth
        await src.command("g", "n1", None, "due", 1_796_275_070_000)  # epoch ms
        await runner.handle(["due"], _ng_result(), None)
        await runner.flush()
        errors = []
        for metric, value, datatype in (
            ("due", "2026-12-03T05:17:50", None),  # no zone
            ("due", "1969-12-31T23:59:59Z", None),  # before 1970
            ("count", "2026-12-03T05:17:50Z", "DateTime"),  # the birth says Int64
        ):
            with pytest.raises(SparkplugTypeMismatch) as e:
                await src.command("g", "n1", None, metric, value, datatype)
            errors.append(str(e.value))
        cmds = await node.wait_cmds(3)
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert [_sent(c) for c in cmds] == [("spBv1.0/g/NCMD/n1", "due", D.DATETIME, 1_796_275_070_000)] * 2 + [
        ("spBv1.0/g/NCMD/n1", "due", D.DATETIME, 1_796_275_070_123)
    ]
    assert runner.stats["due"]["ok"] == 1
    assert "has no zone" in errors[0] and "out of the range of a Sparkplug DateTime" in errors[1], errors
    assert "the birth gives metric 'count' datatype 4" in errors[2], errors


async def test_a_value_that_does_not_fit_the_births_datatype_is_refused_whatever_the_actions_datatype_says(
    mosquitto,
):
    """Before, an action's ``datatype`` other than the birth's (DateTime aside) was used as it was: 300 as an
    Int16 went to a UInt8 metric (a node casting it sets 44), 1.5 as a Double to an Int32 one, 1e300 to a Float
    one, the text "false" as a String to a Boolean one, NaN as the text "nan". Now the birth decides the
    datatype sent; a value that does not fit it (or the action's) is refused naming the metric and both types,
    not sent, not retried, and counted (``failed``) by the action; one that fits is sent typed by the birth."""
    cfg = _command_config(
        mosquitto.port,
        "level",
        {"metric": "level", "datatype": "Int16", "value": 300, "when": {"verdict": "NG"}},
    )
    async with _born(
        mosquitto.port,
        cfg,
        sp.Metric("level", None, D.UINT8, 0),
        sp.Metric("speed", None, D.INT32, 0),
        sp.Metric("temp", None, D.FLOAT, 0.0),
        sp.Metric("open", None, D.BOOLEAN, False),
        sp.Metric("label", None, D.STRING, ""),
    ) as (node, src, runner):
        await runner.handle(["level"], _ng_result(), None)
        await runner.flush()
        errors = []
        for metric, value, datatype in (
            ("level", -1, "Int32"),
            ("speed", 1.5, "Double"),
            ("temp", 1e300, "Double"),
            ("open", "false", "String"),
            ("label", float("nan"), "String"),
        ):
            with pytest.raises(SparkplugTypeMismatch) as e:
                await src.command("g", "n1", None, metric, value, datatype)
            errors.append(e.value)
        with pytest.raises(SparkplugTypeMismatch) as nan:  # typed by the birth alone: never the text 'nan'
            await src.command("g", "n1", None, "label", float("nan"))
        await src.command("g", "n1", None, "level", 5, "Int32")  # fits: sent as the birth's UInt8
        await src.command("g", "n1", None, "temp", 2, "Int64")  # fits: sent as the birth's Float
        cmds = [_sent(c) for c in await node.wait_cmds(2)]
    n = "spBv1.0/g/NCMD/n1"
    assert cmds == [(n, "level", D.UINT8, 5), (n, "temp", D.FLOAT, 2.0)], cmds  # before: all seven sent
    assert runner.stats["level"]["failed"] == 1 and runner.stats["level"]["ok"] == 0, runner.stats["level"]
    assert not any(e.retryable for e in errors)
    said = [str(e) for e in errors]
    assert (
        "level not sent: the birth gives metric 'level' datatype 5 (UInt8) (the action's datatype: Int32)"
        in said[0]
    )
    assert "metric g/n1/level is UInt8; cannot send -1 (int): out of range 0..255" in said[0], said
    assert "metric g/n1/speed is Int32; cannot send 1.5 (float)" in said[1], said
    assert "metric g/n1/temp is Float; cannot send 1e+300 (float): out of range of a 32-bit" in said[2], said
    assert "metric g/n1/open is Boolean; cannot send 'false' (str)" in said[3], said
    assert "metric g/n1/label is String; cannot send nan (float): NaN and infinity" in said[4], said
    assert "metric g/n1/label is String; cannot send nan" in str(nan.value)


async def test_string_command_text_with_a_nul_or_control_character_is_refused_not_sent(mosquitto):
    """A String command with a NUL (or ESC, BEL, a C1 control) was published as it was: a PLC's C string ends at
    the NUL, so the node's tag held half of what was written, and an ESC sequence reached an operator's screen.
    Now it is refused naming the metric and the character, not sent, not retried, typed by the birth or by the
    action's datatype alike; tab, line feed and carriage return are text and are sent."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    errors = []
    try:
        node.nbirth(0, sp.Metric("label", None, D.STRING, ""), sp.Metric("count", None, D.INT32, 0))
        await _births(src, 1)
        for metric, value, datatype in (
            ("label", "LOT-7\x00junk", None),
            ("label", "\x1b[2Jok", "String"),
            ("other", "bell\x07", None),  # a metric no birth declares: typed String by its value
            ("other", "c1\x85", "String"),
        ):
            with pytest.raises(SparkplugTypeMismatch) as e:
                await src.command("g", "n1", None, metric, value, datatype)
            errors.append(e.value)
        await src.command("g", "n1", None, "label", "line 1\nline 2\tend\r")
        cmds = [_sent(c) for c in await node.wait_cmds(1)]
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert cmds == [("spBv1.0/g/NCMD/n1", "label", D.STRING, "line 1\nline 2\tend\r")], cmds
    assert not any(e.retryable for e in errors)
    said = [str(e) for e in errors]
    assert "metric g/n1/label is String; cannot send 'LOT-7\\x00junk'" in said[0], said
    assert "control character '\\x00' (at 5)" in said[0], said
    assert "'\\x1b' (at 0)" in said[1] and "metric g/n1/other" in said[2] and "'\\x85' (at 2)" in said[3], (
        said
    )


async def test_a_command_its_node_refuses_or_misses_is_a_write_failing_episode_like_an_opcua_targets(
    mosquitto,
):
    """A command the node's birth types refuse (300 for an Int8 metric) and one a dead node misses past its retries
    were counted on the gateway only, where an OPC UA target's are told to the cloud (write_failing): the console
    showed the line's Sparkplug write-back healthy. Now each is an episode naming the metric; the missed one ends
    once the node, born again, takes the command sent again at its birth."""
    node = Node(mosquitto.port)
    cfg = parse_config(
        {
            **_command_config(mosquitto.port, "x", {"metric": "m"}).model_dump(include={"agent", "sources"}),
            "actions": {
                name: {
                    "type": "sparkplug_command",
                    "source": "bus",
                    "group": "g",
                    "edge_node": "n1",
                    "when": {"verdict": "NG"},
                    "retry": {"max_attempts": 2, "backoff_s": 0.05},
                    **action,
                }
                for name, action in (
                    ("gate", {"metric": "stop", "mode": "on_change"}),
                    ("speed", {"metric": "speed", "value": 300, "mode": "on_change", "reset_value": 0}),
                )
            },
        }
    )
    src, pump = await _host(mosquitto.port)
    events: list = []
    runner = ActionRunner(cfg, {"bus": src}, on_event=events.append)
    runner.write_recovered_after_s = 0.3
    metrics = (sp.Metric("stop", None, D.BOOLEAN, False), sp.Metric("speed", None, D.INT8, 0))

    def failing() -> list[tuple]:
        return [(e["action"], e["node_id"], e["active"]) for e in events if e["kind"] == "write_failing"]

    try:
        node.nbirth(0, *metrics)
        await _births(src, 1)
        await runner.handle(["speed"], _ng_result(), None)  # 300 for an Int8: refused
        await runner.flush()
        node.publish("spBv1.0/g/NDEATH/n1", sp.death_payload(0))
        for _ in range(600):
            if not src.sparkplug.node_alive("g", "n1"):
                break
            await asyncio.sleep(0.05)
        await runner.handle(["gate"], _ng_result(), None)  # the node dead: out of retries
        await runner.flush()
        assert failing() == [("speed", "g/n1/speed", True), ("gate", "g/n1/stop", True)], events
        node.nbirth(1, *metrics)  # back: the missed command is sent again and taken
        await node.wait_cmds(1)
        for _ in range(600):
            if len(failing()) == 3:
                break
            await asyncio.sleep(0.05)
        await runner.flush()
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert failing() == [
        ("speed", "g/n1/speed", True),
        ("gate", "g/n1/stop", True),
        ("gate", "g/n1/stop", False),
    ], events
    told = [e for e in events if e["kind"] == "write_failing"]
    assert "300" in told[0]["reason"] and "Int8" in told[0]["reason"], told[0]
    assert "sent again at the edge node's next birth" in told[1]["message"], told[1]


async def test_a_whole_number_with_an_exponent_past_2_53_reaches_an_int64_metric_as_the_config_shows(
    mosquitto, tmp_path
):
    """``value: 9.007199254740993e+15`` in the config file for an Int64 metric (a counter preset) is the float
    9007199254740992.0 to YAML; its command carried 9007199254740992, with nothing said, whether the action's
    datatype said Int64 or the birth did. The number the text shows is sent now (9007199254740993); a Double
    metric still gets the float, and an exact form (``1.0e+16``) is sent as before. An action sharing the value
    by a merge key (``<<: *total``) sends the same number (it sent 9007199254740992), and a fraction whose float
    is whole (``9007199254740992.5``) is refused by the Int64 metric as 2.5 is (it was sent as 9007199254740992):
    at load with the action's datatype, naming the field, at the send without one."""
    path = tmp_path / "line1.yaml"
    out = "{type: sparkplug_command, source: bus, group: g, edge_node: n1, when: {verdict: NG}"
    path.write_text(
        f"""agent: {{id: gw}}
sources:
  bus: {{type: mqtt, port: {mosquitto.port}, subscriptions: [{{topic: "spBv1.0/#", codec: sparkplug_b}}]}}
actions:
  total: &total {out}, metric: total, datatype: Int64, value: 9.007199254740993e+15}}
  total2: {{<<: *total, metric: total2}}
  preset: {out}, metric: preset, value: -9.007199254740993e+15}}
  big: {out}, metric: big, value: 1.0e+16}}
  level: {out}, metric: level, value: 9.007199254740993e+15}}
  half: {out}, metric: half, value: 9007199254740992.5}}
"""
    )
    cfg = load_config(path)
    typed = tmp_path / "typed.yaml"
    typed.write_text(path.read_text().replace("metric: half,", "metric: half, datatype: Int64,"))
    with pytest.raises(ConfigError) as refused:
        load_config(typed)
    assert any(
        "actions.half: value: metric g/n1/half is Int64; cannot send 9007199254740992.5 (float)" in e
        and "a fraction" in e
        for e in refused.value.errors
    ), refused.value.errors
    async with _born(
        mosquitto.port,
        cfg,
        sp.Metric("total", None, D.INT64, 0),
        sp.Metric("total2", None, D.INT64, 0),
        sp.Metric("preset", None, D.INT64, 0),
        sp.Metric("half", None, D.INT64, 0),
        sp.Metric("big", None, D.UINT64, 0),
        sp.Metric("level", None, D.DOUBLE, 0.0),
    ) as (node, _src, runner):
        await runner.handle(["total", "total2", "preset", "big", "level", "half"], _ng_result(), None)
        await runner.flush()
        cmds = {c.metrics[0].name: c.metrics[0].value for _, c, _ in await node.wait_cmds(5)}
    assert cmds == {
        "total": 2**53 + 1,
        "total2": 2**53 + 1,
        "preset": -(2**53 + 1),
        "big": 10**16,
        "level": 9007199254740992.0,
    }, cmds
    assert runner.stats["half"]["failed"] == 1 and not runner.stats["half"].get("ok"), runner.stats


async def test_a_command_refused_at_the_send_names_the_field_at_fault_metric_datatype_or_value(
    mosquitto, caplog
):
    """A command refused at the send is said naming the config file and the field at fault: ``metric`` when the
    birth gives the metric a type this host cannot write, ``datatype`` when the action's contradicts the birth's
    (a count to a DateTime metric), ``value`` when the value does not fit. Before, each was named at ``value``."""
    import logging

    actions = {
        "arr": {"metric": "arr", "value": 1},
        "stamp": {"metric": "stamp", "datatype": "Int32", "value": 1},
        "level": {"metric": "level", "value": 300},
    }
    where = "/etc/edge/bus.yaml"
    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "sources": {
                "bus": {
                    "type": "mqtt",
                    "port": mosquitto.port,
                    "subscriptions": [{"topic": "spBv1.0/#", "codec": "sparkplug_b"}],
                }
            },
            "actions": {
                name: {
                    "type": "sparkplug_command",
                    "source": "bus",
                    "group": "g",
                    "edge_node": "n1",
                    "when": {"verdict": "NG"},
                    **a,
                }
                for name, a in actions.items()
            },
        },
        where,
    )
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    runner = ActionRunner(cfg, {"bus": src})
    caplog.set_level(logging.WARNING, logger="edge_agent.actions")
    try:
        nb = sp._pb().Payload()
        nb.timestamp, nb.seq = int(time.time() * 1000), 0
        for name, datatype in (("bdSeq", D.INT64), ("stamp", D.DATETIME), ("level", D.UINT8)):
            m = nb.metrics.add()
            m.name, m.datatype, m.long_value = name, datatype, 0
        m = nb.metrics.add()
        m.name, m.datatype, m.bytes_value = "arr", 24, b"\x01\x00\x00\x00"  # Sparkplug 3.0 Int32Array
        node.publish("spBv1.0/g/NBIRTH/n1", nb.SerializeToString())
        await _births(src, 1)
        await runner.handle(list(actions), _ng_result(), None)
        await runner.flush()
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    said = [r.getMessage() for r in caplog.records if r.name == "edge_agent.actions"]
    for place, why in (
        ("actions.arr.metric", "datatype 24, which this host cannot write"),
        ("actions.stamp.datatype", "the action's datatype is Int32, and the birth gives metric 'stamp'"),
        ("actions.level.value", "cannot send 300 (int): out of range 0..255"),
    ):
        name = place.split(".")[1]
        line = [s for s in said if s.startswith(f"{where}: {place}: action {name!r} failed")]
        assert len(line) == 1 and why in line[0], (place, said)


async def test_two_points_a_nodes_births_name_as_one_tag_are_neither_read_into_it_nor_commanded(mosquitto):
    """A plain metric named ``M1/Speed`` beside a Template instance ``M1`` whose member ``Speed`` is tagged the
    same, and a node metric ``d1/level`` beside device ``d1``'s ``level``: each pair names one tag. The tag took
    both points' values in turn (5, then 1.5; 0.25, 300, 0.75), data by the plain metric's alias was judged by the
    member's type (7 skipped as a Float's value in an integer field), and a command to ``M1/Speed`` went to the
    member. Now neither point of a pair is read into the tag (``tag_name_clash``, counted) nor commanded, and the
    node's other metrics are read on."""
    node = Node(mosquitto.port)
    src = MqttSource(
        "bus",
        MqttSettings(port=mosquitto.port, subscriptions=[{"topic": "spBv1.0/#", "codec": "sparkplug_b"}]),
    )
    got: list = []

    async def pump():
        async for r in src.items():
            got.append((r.tag, r.value, r.quality.name, r.reason))

    await src.start()
    task = asyncio.create_task(pump())
    try:
        async with asyncio.timeout(5):
            await src.connected.wait()
            await src.subscribed.wait()
        nb = sp._pb().Payload()
        nb.timestamp, nb.seq = int(time.time() * 1000), 0
        pb_metric(nb, "bdSeq", None, D.INT64, long_value=0)
        pb_metric(nb, "M1/Speed", 1, D.INT32, int_value=5)
        pb_metric(nb, "d1/level", 3, D.FLOAT, float_value=0.25)
        pb_metric(nb, "rate", 5, D.DOUBLE, double_value=1.0)
        motor = pb_metric(nb, "M1", 2, D.TEMPLATE).template_value
        motor.template_ref = "Motor"
        pb_metric(motor, "Speed", None, D.FLOAT, float_value=1.5)
        node.publish("spBv1.0/g/NBIRTH/n1", nb.SerializeToString())
        node.publish(
            "spBv1.0/g/DBIRTH/n1/d1",
            sp.encode(sp.Payload(int(time.time() * 1000), 1, [sp.Metric("level", 4, D.INT16, 300)])),
        )
        nd = sp._pb().Payload()
        nd.timestamp, nd.seq = int(time.time() * 1000), 2
        pb_metric(nd, alias=1, int_value=7)
        pb_metric(nd, alias=3, float_value=0.75)
        pb_metric(nd, alias=5, double_value=2.0)
        node.publish("spBv1.0/g/NDATA/n1", nd.SerializeToString())
        async with asyncio.timeout(5):
            while ("n1/rate", 2.0, "GOOD", None) not in got:
                await asyncio.sleep(0.02)
        refused = []
        for device, metric in ((None, "M1/Speed"), (None, "d1/level"), ("d1", "level")):
            with pytest.raises(SparkplugTypeMismatch, match="name two points") as e:
                await src.command("g", "n1", device, metric, 2)
            refused.append(str(e.value))
        await src.command("g", "n1", None, "rate", 3.0)  # the node's other metrics are commanded as ever
        cmds = [_sent(c) for c in await node.wait_cmds(1)]
    finally:
        task.cancel()
        await src.stop()
        node.stop()
    # the node metric d1/level's birth value came before d1's birth showed the clash: made BAD by that birth (it
    # stood GOOD at 0.25 while its new values were skipped), none after it
    assert got == [
        ("n1/d1/level", 0.25, "GOOD", None),
        ("n1/rate", 1.0, "GOOD", None),
        ("n1/d1/level", 0.25, "BAD", "tag_name_clash"),
        ("n1/rate", 2.0, "GOOD", None),
    ], got
    assert src.stats.errors_by_reason == {"tag_name_clash": 5}, src.stats.errors_by_reason
    assert "(metric 'M1/Speed' and member 'Speed' of Template 'M1')" in refused[0], refused
    assert "(the node's metric 'd1/level' and metric 'level' of device 'd1')" in refused[2], refused
    assert cmds == [("spBv1.0/g/NCMD/n1", "rate", D.DOUBLE, 3.0)], cmds


async def test_a_command_carries_the_alias_the_births_gave_its_metric_beside_its_name(mosquitto):
    """Sparkplug 3.0 has a host command an aliased metric by its alias (tck-id-payloads-alias-data-cmd-requirement):
    a node that looks its commands up by alias found none in a command by name alone, or (reading an alias not
    sent as 0) took it for the metric of alias 0 and set that one. The alias goes on the metric the birth gave it
    (a Template instance's, not its member's); the name stays beside it for nodes that look up by name; a metric
    without an alias, or one whose alias its births gave two metrics, is sent by name alone."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    try:
        nb = sp._pb().Payload()
        nb.timestamp, nb.seq = int(time.time() * 1000), 0
        pb_metric(nb, "bdSeq", datatype=D.INT64, long_value=0)
        pb_metric(nb, "zero", alias=0, datatype=D.INT32, int_value=0)
        pb_metric(nb, "speed", alias=7, datatype=D.INT32, int_value=5)
        pb_metric(nb, "plain", datatype=D.INT32, int_value=1)
        pb_metric(nb, "a", alias=4, datatype=D.INT32, int_value=1)
        pb_metric(nb, "b", alias=4, datatype=D.INT32, int_value=2)  # one alias for two: neither has it
        m = pb_metric(nb, "M1", alias=9, datatype=D.TEMPLATE)
        m.template_value.template_ref = "Motor"
        pb_metric(m.template_value, "Speed", datatype=D.FLOAT, float_value=1.0)
        node.publish("spBv1.0/g/NBIRTH/n1", nb.SerializeToString())
        db = sp._pb().Payload()
        db.timestamp, db.seq = int(time.time() * 1000), 1
        pb_metric(db, "level", alias=3, datatype=D.FLOAT, float_value=0.5)
        node.publish("spBv1.0/g/DBIRTH/n1/d1", db.SerializeToString())
        await _births(src, 2)
        await src.command("g", "n1", None, "speed", 1)
        await src.command("g", "n1", "d1", "level", 2)
        await src.command("g", "n1", None, "M1/Speed", 3)
        await src.command("g", "n1", None, "plain", 4)
        await src.command("g", "n1", None, "a", 5)
        await src.command("g", "n1", None, "zero", 6)
        cmds = await node.wait_cmds(7)  # and the rebirth the clash of alias 4 asks
    finally:
        pump.cancel()
        await src.stop()
        node.stop()

    def alias(pb) -> int | None:
        return pb.alias if pb.HasField("alias") else None

    sent = [
        (m.name, alias(m), [(x.name, alias(x)) for x in m.template_value.metrics])
        for m in (pb.metrics[0] for _, _, pb in cmds)
        if m.name != "Node Control/Rebirth"
    ]
    assert sent == [
        ("speed", 7, []),
        ("level", 3, []),
        ("M1", 9, [("Speed", None)]),
        ("plain", None, []),
        ("a", None, []),
        ("zero", 0, []),
    ], sent


async def _consume(src: MqttSource) -> None:
    async for _ in src.items():
        pass


def _aliased_birth(bd: int, speed: int, setpoint: int) -> bytes:
    """An NBIRTH of ``g/n1`` giving metrics speed and setpoint these aliases."""
    nb = sp._pb().Payload()
    nb.timestamp, nb.seq = int(time.time() * 1000), 0
    pb_metric(nb, "bdSeq", datatype=D.INT64, long_value=bd)
    pb_metric(nb, "speed", alias=speed, datatype=D.INT32, int_value=5)
    pb_metric(nb, "setpoint", alias=setpoint, datatype=D.INT32, int_value=50)
    return nb.SerializeToString()


async def _sent_once_read(src: MqttSource, node: Node, births: int, n: int) -> list[tuple[str, int]]:
    """With the consumer back, once ``births`` births are read: a command to speed; (name, alias) of the ``n``
    commands the node got."""
    pump = asyncio.create_task(_consume(src))
    try:
        await _births(src, births)
        await src.command("g", "n1", None, "speed", 1)
        cmds = await node.wait_cmds(n)
    finally:
        pump.cancel()
    return [(pb.metrics[0].name, pb.metrics[0].alias) for _, _, pb in cmds]


async def _held_command(src: MqttSource, node: Node, release, n: int) -> list:
    """A command to speed, not done 0.1 s later; once ``release()`` is called, sent: the ``n`` commands the node got."""
    command = asyncio.create_task(src.command("g", "n1", None, "speed", 1))
    await asyncio.sleep(0.1)
    assert not command.done()
    release()
    assert await command == "sent"
    return await node.wait_cmds(n)


async def test_a_command_waits_for_a_birth_not_yet_read_whose_aliases_may_name_other_metrics(mosquitto):
    """A node restarts and gives its aliases anew (speed 7 -> 8, setpoint 8 -> 7) while its death and birth wait
    unread (the host's consumer busy): a command to speed carried alias 7 from the birth read last, and a node
    looking commands up by alias set its setpoint. Refused (retryable) until the new birth is read; then sent with
    the new alias."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    birth = _aliased_birth
    try:
        node.publish("spBv1.0/g/NBIRTH/n1", birth(0, 7, 8))
        await _births(src, 1)
        pump.cancel()  # the consumer busy: what comes now waits in the source's queue
        death = sp._pb().Payload()
        pb_metric(death, "bdSeq", datatype=D.INT64, long_value=0)
        node.publish("spBv1.0/g/NDEATH/n1", death.SerializeToString())
        node.publish("spBv1.0/g/NBIRTH/n1", birth(1, 8, 7))
        for _ in range(1500):
            if len(src._channel) >= 2:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(MqttError, match="not read yet") as ei:
            await src.command("g", "n1", None, "speed", 1)
        assert ei.value.retryable is True
        sent = await _sent_once_read(src, node, 2, 1)  # back: the death and the new birth are read
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert sent == [("speed", 8)], sent  # before: ("speed", 7), the node's setpoint now


async def test_a_command_waits_while_a_death_of_its_node_is_read_a_stale_one_holds_nothing(mosquitto):
    """A death of the node's former connection (its will, of the bdSeq before: stale, read and ignored) waits in the
    queue while the consumer is busy with a message. Refused at once, the command's retries ran out before it was
    read, and a level command was kept for the node's next birth, which never came: the node lives. It waits for
    the death to be read, then goes."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    gate = asyncio.Event()

    async def busy() -> None:
        async for r in src.items():
            if r.tag.endswith("/speed") and r.value == 6:
                await gate.wait()  # its readers busy with this reading

    try:
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 7, 8))
        await _births(src, 1)
        pump.cancel()
        pump = asyncio.create_task(busy())
        data = sp.encode(sp.Payload(int(time.time() * 1000), 1, [sp.Metric("speed", None, D.INT32, 6)]))
        node.publish("spBv1.0/g/NDATA/n1", data)
        node.publish("spBv1.0/g/NDEATH/n1", sp.death_payload(0))  # stale: the node is at bdSeq 1
        await until(lambda: src._rebirth_unread("g", "n1", None), 5, "the death come and not read")
        cmds = await _held_command(src, node, gate.set, 1)  # before: refused at once, "not read yet"
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert [(pb.metrics[0].name, pb.metrics[0].alias) for _, _, pb in cmds] == [("speed", 7)]


async def test_a_command_waits_after_a_reconnect_until_the_node_is_born_again(mosquitto):
    """This host's broker connection drops; the node restarts meanwhile and gives its aliases anew (speed 7 -> 8,
    setpoint 8 -> 7), a birth this host never sees. Back, the old birth stood as current until the consumer's next
    batch took every node as not born (``session_lost``): with the consumer behind, a command to speed carried
    alias 7, the node's setpoint. Refused (retryable) until then; sent with the new alias once its birth is read."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port, reconnect_min_s=0.1)
    try:
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(0, 7, 8))
        await _births(src, 1)
        pump.cancel()  # the consumer busy: the reconnect is not caught up
        node.stop()
        mosquitto.restart()
        node = Node(mosquitto.port)
        await until(lambda: src._sessions == 1, 30, "the host's reconnect")
        with pytest.raises(MqttError, match="came back and is not caught up yet") as ei:
            await src.command("g", "n1", None, "speed", 1)
        assert ei.value.retryable
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 8, 7))  # its answer to the rebirth asked
        sent = await _sent_once_read(src, node, 2, 2)
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    # before: ("speed", 7) at the reconnect, the node's setpoint now
    assert ("speed", 7) not in sent and sent[-1] == ("speed", 8), sent


async def _born_then_unknown_alias(src: MqttSource, node: Node):
    """``g/n1`` born with speed 7 and setpoint 8, read; then its data (seq 1) by alias 9, which that birth did not
    give (a node that restarted and gave its aliases anew, its birth missed). The data payload, to send again."""
    node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(0, 7, 8))
    await _births(src, 1)
    data = _alias_9_data()
    node.publish("spBv1.0/g/NDATA/n1", data.SerializeToString())
    return data


def _alias_9_data():
    data = sp._pb().Payload()
    data.timestamp, data.seq = int(time.time() * 1000), 1
    pb_metric(data, None, alias=9, datatype=D.INT32, int_value=3)
    return data


def _rebirth_then(cmds: list) -> tuple[str, int] | list:
    """(name, alias) of the one command after the rebirth this host asked, or every command sent when not so."""
    sent = [(pb.metrics[0].name, pb.metrics[0].alias) for _, _, pb in cmds]
    return sent[1] if len(sent) == 2 and sent[0][0] == "Node Control/Rebirth" else sent


async def test_a_command_waits_for_the_birth_asked_when_the_nodes_data_showed_one_missed(mosquitto):
    """The node restarted and gave its aliases anew (speed 7 -> 8, setpoint 8 -> 7), and this host, connected, missed
    its death and birth (dropped from a full queue, or by the broker for a slow subscriber): its next data carries an
    alias the births read did not give, and this host asks its birth. A command meanwhile carried alias 7, the node's
    setpoint now. It waits for the birth asked, and goes with the new alias; the node's next data, by aliases its
    births gave, does not end the wait (it did: such data told the aliases known again)."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    try:
        data = await _born_then_unknown_alias(src, node)
        await until(lambda: node.cmds, 5, "the rebirth asked")
        data.seq = 2
        data.metrics[0].alias = 8
        node.publish("spBv1.0/g/NDATA/n1", data.SerializeToString())
        await until(lambda: not src.sparkplug._nodes[("g", "n1")].alias_asked, 5, "the next data read")
        answer = _aliased_birth(1, 8, 7)
        # before: sent at once, with alias 7
        cmds = await _held_command(src, node, lambda: node.publish("spBv1.0/g/NBIRTH/n1", answer), 2)
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert _rebirth_then(cmds) == ("speed", 8), cmds


@pytest.mark.parametrize("late", [False, True])
async def test_a_node_command_waits_for_the_device_births_following_the_birth_asked_read_between_its_looks(
    mosquitto, monkeypatch, late
):
    """The birth asked (data by an alias the births did not give) is read between two looks of the waiting NCMD, as
    it mostly is: the device birth following it (d3's, giving its valve alias 8 as the new NBIRTH gives speed,
    against Sparkplug) came after the command, and was not waited for: sent with alias 8 while d3's birth was
    unread (the consumer held at the NBIRTH's readings). It waits for it; once read, speed goes by name alone. Its
    looks made 0.5 s apart, so that both births come and the NBIRTH is read between two of them; ``late``: d3's
    birth comes after the look that saw the NBIRTH read (another TCP read), within BIRTH_SETTLE_S (made 1 s): it
    was not waited for, nothing being unread at that look."""
    if late:
        monkeypatch.setattr(client_module, "BIRTH_SETTLE_S", 1.0)
    else:
        monkeypatch.setattr(client_module, "UNREAD_POLL_S", 0.5)
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    at_nb, gate = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        async for r in src.items():
            if r.tag == "n1/setpoint":  # the new NBIRTH's
                at_nb.set()
                await gate.wait()

    try:
        await _born_then_unknown_alias(src, node)
        await until(lambda: node.cmds, 5, "the rebirth asked")
        pump.cancel()
        pump = asyncio.create_task(slow())
        command = asyncio.create_task(src.command("g", "n1", None, "speed", 1))
        await asyncio.sleep(0.1)
        assert not command.done()  # the birth asked unread
        db = sp._pb().Payload()
        db.timestamp, db.seq = int(time.time() * 1000) + 1, 1
        pb_metric(db, "valve", alias=8, datatype=D.INT32, int_value=0)
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 8, 7))
        if late:
            await asyncio.wait_for(at_nb.wait(), 5)
            await asyncio.sleep(0.1)  # looks made since the NBIRTH was read
        node.publish("spBv1.0/g/DBIRTH/n1/d3", db.SerializeToString())
        await asyncio.wait_for(at_nb.wait(), 5)
        await until(lambda: src._rebirth_unread("g", "n1", None), 5, "d3's birth queued")
        await asyncio.sleep(0.1 if late else 0.6)  # a look made since
        assert not command.done()  # before: sent with alias 8
        gate.set()
        assert await asyncio.wait_for(command, 2) == "sent"
        cmds = await node.wait_cmds(2)  # the rebirth asked for the alias, the command
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    got = [
        (pb.metrics[0].name, pb.metrics[0].alias if pb.metrics[0].HasField("alias") else None)
        for _, _, pb in cmds
        if pb.metrics[0].name != "Node Control/Rebirth"
    ]
    assert got == [("speed", None)]


async def test_a_node_command_waits_for_the_device_births_its_nodes_last_birth_had_when_they_may_share_its_aliases(
    mosquitto, monkeypatch
):
    """A node whose device d3 gave its valve the alias of the node's speed (against Sparkplug) restarts: speed now
    alias 8, and d3's birth, giving valve 8 again, comes 0.5 s after the NBIRTH (past BIRTH_SETTLE_S): an NCMD to
    speed went with alias 8, d3's valve's too. It waits for d3's birth; read, the clash has speed go by name alone.
    d3 not born again within REBORN_DEVICES_WAIT_S (made 0.5 s) of the next NBIRTH: taken as gone, speed goes by
    name alone until d3's birth is read, then by its alias. A command whose own wait ends first is refused,
    retryable, naming d3."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)

    def command() -> Awaitable[tuple[str, int | None]]:
        return _speed_command(src, node)

    try:
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(0, 7, 8))
        node.publish("spBv1.0/g/DBIRTH/n1/d3", _valve_birth(7))  # valve given speed's alias
        await _births(src, 2)
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 8, 7))
        await _births(src, 3)
        monkeypatch.setattr(client_module, "LEARNING_WAIT_S", 0.3)
        with pytest.raises(MqttError, match=r"devices its node's last birth had \(d3\)") as refused:
            await src.command("g", "n1", None, "speed", 1)
        assert refused.value.retryable is True
        monkeypatch.setattr(client_module, "LEARNING_WAIT_S", 5.0)
        # before: sent with alias 8 once BIRTH_SETTLE_S was over
        assert await _held_until_valve_born(src, node, 8, 0.5) == ("speed", None)
        monkeypatch.setattr(sparkplug_host, "REBORN_DEVICES_WAIT_S", 0.5)
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(2, 7, 8))
        await _births(src, 5)
        assert await asyncio.wait_for(command(), 5) == ("speed", None)  # d3 taken as gone: by name alone
        node.publish("spBv1.0/g/DBIRTH/n1/d3", _valve_birth(100))
        await _births(src, 6)
        assert await command() == ("speed", 7)
    finally:
        pump.cancel()
        await src.stop()
        node.stop()


def _valve_birth(alias: int, seq: int = 1) -> bytes:
    """A DBIRTH of ``g/n1/d3`` giving its metric valve ``alias``."""
    return _device_birth("valve", alias, seq)


async def _speed_command(src: MqttSource, node: Node) -> tuple[str, int | None]:
    """An NCMD setting speed, sent: (name, alias) of the command the node got (None: by name alone)."""
    n = len(node.cmds)
    assert await src.command("g", "n1", None, "speed", 1) == "sent"
    await until(lambda: any(c[2].metrics[0].name == "speed" for c in node.cmds[n:]), 5, "the command")
    m = next(c[2].metrics[0] for c in node.cmds[n:] if c[2].metrics[0].name == "speed")
    return m.name, m.alias if m.HasField("alias") else None


async def _held_until_valve_born(
    src: MqttSource, node: Node, alias: int, held_s: float
) -> tuple[str, int | None]:
    """An NCMD to speed, still waiting ``held_s`` later (d3's birth awaited); d3 then born giving its valve
    ``alias``: (name, alias) the command went with."""
    waiting = asyncio.create_task(_speed_command(src, node))
    await asyncio.sleep(held_s)
    assert not waiting.done()
    node.publish("spBv1.0/g/DBIRTH/n1/d3", _valve_birth(alias))
    return await asyncio.wait_for(waiting, 5)


async def test_a_node_command_is_not_sent_by_an_alias_a_late_device_birth_may_share_after_two_births_or_its_death(
    mosquitto, monkeypatch
):
    """A node whose device d3 gave its valve the alias of the node's speed (against Sparkplug) sends two NBIRTHs in
    a row (two rebirth requests answered) before d3's birth, late: d3, of the birth before the last, is waited for
    still (the second NBIRTH found no device born since the first: an NCMD went at once with speed's alias 8, which
    d3's valve then took too). The node shuts down saying d3 dead (DDEATH) before its NDEATH, and restarts with
    speed alias 7: d3, dead, is not waited for, but speed goes by name alone until d3's birth is read (it went with
    alias 7 at once, d3's birth able to give valve 7 too), then by its alias. The node dies before d3's birth and is
    born again after d3's wait would have ended: d3 is waited for after that birth (it was forgotten)."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    try:
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(0, 7, 8))
        node.publish("spBv1.0/g/DBIRTH/n1/d3", _valve_birth(7))  # valve given speed's alias: sharing
        await _births(src, 2)
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 8, 7))
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 8, 7))
        await _births(src, 4)
        # before: sent with alias 8 at once; the clash read: by name alone
        assert await _held_until_valve_born(src, node, 8, 0.3) == ("speed", None)
        ddeath = sp._pb().Payload()
        ddeath.timestamp, ddeath.seq = int(time.time() * 1000), 2
        node.publish("spBv1.0/g/DDEATH/n1/d3", ddeath.SerializeToString())
        node.publish("spBv1.0/g/NDEATH/n1", sp.death_payload(1))
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(2, 7, 8))
        await _births(src, 6)
        assert await asyncio.wait_for(_speed_command(src, node), 1) == ("speed", None)  # before: ("speed", 7)
        node.publish("spBv1.0/g/DBIRTH/n1/d3", _valve_birth(100))
        await _births(src, 7)
        assert await _speed_command(src, node) == ("speed", 7)
        # dead (NDEATH) before d3's birth, born again once d3's wait (made 0.5 s) is over: d3 is awaited still
        monkeypatch.setattr(sparkplug_host, "REBORN_DEVICES_WAIT_S", 0.5)
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(3, 8, 7))
        node.publish("spBv1.0/g/NDEATH/n1", sp.death_payload(3))
        await asyncio.sleep(0.6)
        monkeypatch.setattr(sparkplug_host, "REBORN_DEVICES_WAIT_S", 5.0)
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(4, 8, 7))
        await _births(src, 9)
        assert await _held_until_valve_born(src, node, 8, 0.1) == (
            "speed",
            None,
        )  # before: sent with alias 8 at once
    finally:
        pump.cancel()
        await src.stop()
        node.stop()


def _device_birth(metric: str, alias: int, seq: int) -> bytes:
    """A DBIRTH (of a device of ``g/n1``) giving its ``metric`` ``alias``."""
    db = sp._pb().Payload()
    db.timestamp, db.seq = int(time.time() * 1000) + 1, seq
    pb_metric(db, metric, alias=alias, datatype=D.INT32, int_value=0)
    return db.SerializeToString()


async def _node_and_devices_born(src: MqttSource, node: Node, valve: int, pump: int) -> None:
    """``g/n1`` born (speed alias 7, setpoint 8), then d3 (its valve ``valve``) and d4 (its pump ``pump``); read."""
    node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(0, 7, 8))
    node.publish("spBv1.0/g/DBIRTH/n1/d3", _device_birth("valve", valve, 1))
    node.publish("spBv1.0/g/DBIRTH/n1/d4", _device_birth("pump", pump, 2))
    await _births(src, 3)


async def test_a_device_command_waits_for_the_late_birth_of_another_device_its_node_gave_the_same_alias(
    mosquitto,
):
    """d3's valve and d4's pump given one alias, 9 (against Sparkplug); the node restarts, d4 born again at once
    and d3 0.3 s later: a DCMD to d4's pump went with alias 9, which d3's birth then gave its valve too (a node
    looking aliases up across its devices set the valve). It waits for d3's birth and, the clash read, goes by
    name alone."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    try:
        await _node_and_devices_born(src, node, 9, 9)
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 7, 8))
        node.publish("spBv1.0/g/DBIRTH/n1/d4", _device_birth("pump", 9, 1))
        await _births(src, 5)
        await _pump_held_then_by_name(
            src, node, 0.3, lambda: node.publish("spBv1.0/g/DBIRTH/n1/d3", _device_birth("valve", 9, 2))
        )
    finally:
        pump.cancel()
        await src.stop()
        node.stop()


async def _pump_held_then_by_name(src: MqttSource, node: Node, held_s: float, release) -> None:
    """A DCMD to ``g/n1/d4``'s pump, not done ``held_s`` later; once ``release()`` is called, sent by name alone."""
    command = asyncio.create_task(src.command("g", "n1", "d4", "pump", 1))
    await asyncio.sleep(held_s)
    assert not command.done()  # before: sent with alias 9
    release()
    assert await asyncio.wait_for(command, 5) == "sent"
    await until(lambda: any("DCMD" in c[0] for c in node.cmds), 5, "the DCMD")
    sent = [(t, pb.metrics[0].name, pb.metrics[0].HasField("alias")) for t, _, pb in node.cmds if "DCMD" in t]
    assert sent == [("spBv1.0/g/DCMD/n1/d4", "pump", False)], sent


async def _unknown_alias_then_quiet(port: int, retry_max_s: float) -> tuple[Node, MqttSource, asyncio.Task]:
    """``g/n1`` born, then its data by an alias its birth did not give (a rebirth asked), then quiet: asked again
    every 0.1 s, given up after 1 s (rebirth_give_up_s), taken as silent once probed and not answering within
    ``retry_max_s``."""
    node = Node(port)
    quick = {
        "rebirth_min_interval_s": 0,
        "rebirth_retry_s": 0.1,
        "rebirth_retry_max_s": retry_max_s,
        "rebirth_give_up_s": 1,
    }
    src, pump = await _host(port, sparkplug=quick)
    try:
        await _born_then_unknown_alias(src, node)
    except BaseException:
        pump.cancel()
        await src.stop()
        node.stop()
        raise
    return node, src, pump


async def test_a_command_is_held_still_once_the_birth_asked_when_the_nodes_data_showed_one_missed_is_given_up(
    mosquitto, monkeypatch
):
    """The rebirth asked for an alias its births did not give goes unanswered, the node silent, until it is given
    up (rebirth_give_up_s, made 1 s): a command then went with alias 7 of the birth the node may have replaced. It
    is still held: refused, retryable, at once, saying the rebirth was given up (it waited the whole 5 s for an
    answer nothing asks, then said the birth "is not read yet")."""
    # the wait it was held to made long: at once is well within half of it, however loaded the machine
    monkeypatch.setattr(client_module, "LEARNING_WAIT_S", 60.0)
    node, src, pump = await _unknown_alias_then_quiet(mosquitto.port, 5)
    try:
        await until(lambda: src.sparkplug.rebirths_given_up, 30, "the rebirth given up")
        assert src.sparkplug.node_alive("g", "n1")
        node.cmds.clear()
        began = time.monotonic()
        with pytest.raises(
            MqttError, match="the birth this host asked .* was given up on"
        ) as ei:  # was: sent
            await src.command("g", "n1", None, "speed", 1)
        assert time.monotonic() - began < client_module.LEARNING_WAIT_S / 2  # at once, not after the wait
        cmds = await node.wait_cmds(1, 0.3)
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert ei.value.retryable
    assert not [pb for _, _, pb in cmds if pb.metrics[0].name == "speed"], cmds


async def test_a_command_to_a_node_gone_silent_after_its_data_showed_a_birth_missed_is_refused_as_not_alive(
    mosquitto,
):
    """The node's data showed a birth missed, then it went quiet: probed, no answer within rebirth_retry_max_s, it is
    taken as silent (notice node_silent), its rebirth so given up too. A command is refused, retryable, as to a node
    not alive (it said the rebirth was given up, "no answer nor anything else from it for rebirth_give_up_s")."""
    node, src, pump = await _unknown_alias_then_quiet(mosquitto.port, 0.3)
    try:
        await until(lambda: src.sparkplug.nodes_silent, 5, "the node taken as silent")
        assert src.sparkplug.birth_owed("g", "n1", None) == "given_up"
        with pytest.raises(MqttError, match="edge node g/n1 is not alive .* node_silent") as ei:
            await src.command("g", "n1", None, "speed", 1)
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert ei.value.retryable


async def test_a_node_command_waits_for_an_unread_device_birth_that_may_give_its_alias_to_a_device_metric(
    mosquitto,
):
    """A DBIRTH giving device metric d1/valve alias 7, speed's (against Sparkplug, whose aliases are unique across a
    node and its devices), waits unread (the consumer busy): an NCMD to speed went with alias 7 at once. It waits for
    the DBIRTH to be read, and, the clash seen, goes by name alone."""
    node = Node(mosquitto.port)
    src = MqttSource(
        "bus",
        MqttSettings(port=mosquitto.port, subscriptions=[{"topic": "spBv1.0/#", "codec": "sparkplug_b"}]),
    )
    await src.start()
    free = asyncio.Event()
    free.set()

    async def busy() -> None:
        async for _ in src.items():
            await free.wait()

    pump = asyncio.create_task(busy())
    db = sp._pb().Payload()
    db.timestamp, db.seq = int(time.time() * 1000), 2
    pb_metric(db, "valve", alias=7, datatype=D.INT32, int_value=0)
    data = sp._pb().Payload()
    data.timestamp, data.seq = int(time.time() * 1000), 1
    pb_metric(data, None, alias=7, datatype=D.INT32, int_value=6)
    try:
        await src.subscribed.wait()
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(0, 7, 8))
        await _births(src, 1)
        free.clear()  # the consumer held at the next reading: the data's, stamped after the birth
        data.timestamp = int(time.time() * 1000) + 1
        arrived = src._channel.arrived
        node.publish("spBv1.0/g/NDATA/n1", data.SerializeToString())
        node.publish("spBv1.0/g/DBIRTH/n1/d1", db.SerializeToString())
        await until(lambda: src._channel.arrived >= arrived + 2, 5, "the data and the DBIRTH queued")
        cmds = await _held_command(src, node, free.set, 2)  # before: sent at once, alias 7
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    sent = [(pb.metrics[0].name, pb.metrics[0].HasField("alias")) for _, _, pb in cmds]
    assert ("speed", False) in sent and ("speed", True) not in sent, sent


@pytest.mark.parametrize("after", ["d2_birth", "own_birth"])
async def test_a_node_command_waits_for_the_device_births_come_before_it_not_for_those_come_after(
    mosquitto, after
):
    """A node whose devices birth often while the consumer reads: an NCMD waited for every DBIRTH of the node
    unread, each new one coming while the last was read, and was refused after 5 s (the consumer behind, 8 of 8).
    It waits for those come before it only: once d1's is read it goes, d2's (come after it) unread. A birth of the
    node itself coming after it (the node restarted, speed now alias 8) is waited for still (it went with alias 7),
    and so is the device birth following that birth (d3's, giving its valve alias 8 too, against Sparkplug: it went
    with alias 8 before the clash was read); once read, speed goes by name alone."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    at_data, at_d1, at_nb = asyncio.Event(), asyncio.Event(), asyncio.Event()
    gate, gate_d1, gate_nb = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def busy() -> None:
        async for r in src.items():
            if (
                r.tag == "n1/speed" and r.value == 6
            ):  # held at the node's data, at d1's birth, at the new NBIRTH
                at_data.set()
                await gate.wait()
            elif r.tag == "n1/d1/valve":
                at_d1.set()
                await gate_d1.wait()
            elif r.tag == "n1/setpoint":
                at_nb.set()
                await gate_nb.wait()

    def dbirth(device: str, seq: int, alias: int) -> bytes:
        db = sp._pb().Payload()
        db.timestamp, db.seq = int(time.time() * 1000) + 1, seq
        pb_metric(db, "valve", alias=alias, datatype=D.INT32, int_value=0)
        return db.SerializeToString()

    try:
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(0, 7, 8))
        await _births(src, 1)
        pump.cancel()
        pump = asyncio.create_task(busy())
        data = sp.encode(sp.Payload(int(time.time() * 1000) + 1, 1, [sp.Metric("speed", None, D.INT32, 6)]))
        node.publish("spBv1.0/g/NDATA/n1", data)
        await asyncio.wait_for(at_data.wait(), 5)
        node.publish("spBv1.0/g/DBIRTH/n1/d1", dbirth("d1", 2, 100))
        await until(lambda: src._rebirth_unread("g", "n1", None), 5, "d1's birth queued")
        command = asyncio.create_task(src.command("g", "n1", None, "speed", 1))
        await asyncio.sleep(0.1)
        assert not command.done()  # d1's birth, come before it, unread
        arrived = src._channel.arrived
        if after == "d2_birth":
            node.publish("spBv1.0/g/DBIRTH/n1/d2", dbirth("d2", 3, 101))
        else:
            node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 8, 7))
            node.publish("spBv1.0/g/DBIRTH/n1/d3", dbirth("d3", 1, 8))
            # d1 born again after it (as Sparkplug has a node's devices do): the clash read, d1 of the birth before
            # is awaited as a sharing node's would be
            node.publish("spBv1.0/g/DBIRTH/n1/d1", dbirth("d1", 2, 100))
        await until(
            lambda: src._channel.arrived > arrived + (after == "own_birth"), 5, "the later births queued"
        )
        gate.set()
        await asyncio.wait_for(at_d1.wait(), 5)
        if after == "own_birth":
            await asyncio.sleep(0.1)
            assert not command.done()  # the node's new birth unread (before: sent with alias 7)
            gate_d1.set()
            await asyncio.wait_for(at_nb.wait(), 5)
            await asyncio.sleep(0.1)
            assert not command.done()  # d3's birth unread (before: sent with alias 8, d3/valve's too)
            gate_nb.set()
        assert await asyncio.wait_for(command, 2) == "sent"  # d2's: before, held by it, refused after 5 s
        assert bool(src._rebirth_unread("g", "n1", None)) == (after == "d2_birth")  # d2's birth still unread
        cmds = await node.wait_cmds(1 + (after == "own_birth"))  # and the rebirth the clash asks
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    cmds = [c for c in cmds if c[2].metrics[0].name != "Node Control/Rebirth"]
    alias = 7 if after == "d2_birth" else None  # d3's clash read: by name alone
    got = [
        (pb.metrics[0].name, pb.metrics[0].alias if pb.metrics[0].HasField("alias") else None)
        for _, _, pb in cmds
    ]
    assert got == [("speed", alias)]


async def test_with_rebirths_off_a_command_after_data_that_showed_a_birth_missed_is_refused_until_a_birth(
    mosquitto,
):
    """With rebirth_on_unknown off no rebirth is asked, so nothing held a command after the node's data showed a birth
    missed (an alias its births did not give; a seq gap): it carried alias 7, the setpoint of a node that restarted
    and gave its aliases anew. Refused now, retryable, counted, until a birth of the node is read."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port, sparkplug={"rebirth_on_unknown": False})
    data = _alias_9_data()

    async def refused(why: str) -> MqttError:
        errors = src.stats.errors
        node.publish("spBv1.0/g/NDATA/n1", data.SerializeToString())
        await until(lambda: src.stats.errors > errors, 5, "the data read (unknown_alias, seq_gap)")
        with pytest.raises(MqttError, match=f"rebirth_on_unknown.*{why}|{why}.*rebirth_on_unknown") as ei:
            await src.command("g", "n1", None, "speed", 1)  # before: sent, alias 7
        return ei.value

    try:
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(0, 7, 8))
        await _births(src, 1)
        first = await refused("an alias its births did not give")
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 8, 7))  # the node's birth, sent by itself
        await _births(src, 2)
        assert await src.command("g", "n1", None, "speed", 1) == "sent"
        data.seq, data.metrics[0].alias = 5, 8  # a seq gap (1..4 lost), by aliases its birth gave
        second = await refused("a seq gap, 5 after 0")
        cmds = await node.wait_cmds(1)
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert first.retryable and second.retryable
    assert [(pb.metrics[0].name, pb.metrics[0].alias) for _, _, pb in cmds] == [("speed", 8)]
    assert src.notices.counts["command_alias_unsure"] == 2


async def _dropped(src: MqttSource, port: int, meanwhile=lambda: None) -> None:
    """This host's connection (client id host1) dropped by the broker, another client taking its client id; once
    ``meanwhile()`` is done, back (reconnected)."""
    thief = paho.Client(CallbackAPIVersion.VERSION2, client_id="host1")
    drops, sessions = src._drops, src._sessions
    thief.connect("127.0.0.1", port, 30)
    thief.loop_start()
    try:
        await until(lambda: src._drops == drops + 1, 5, "the host's connection dropped")
        meanwhile()
    finally:
        thief.disconnect()
        thief.loop_stop()
    await until(lambda: src._sessions == sessions + 1, 5, "the host's reconnect")


async def test_data_after_a_reconnect_is_not_read_by_the_aliases_of_before_when_a_second_drop_follows(
    mosquitto,
):
    """The consumer read the first drop while this host was away and then fell behind; the node gave its aliases anew
    meanwhile (speed 7 -> 8), and its data by alias 8 came on the new connection, then the connection dropped again.
    The births held are taken as stale before that data is read (it waits for the node's birth), not at the second
    drop's mark after it: read by the aliases of before, its speed was passed on as the setpoint."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port, client_id="host1", reconnect_min_s=0.3, reconnect_max_s=0.3)
    got: list = []

    async def collect() -> None:
        async for r in src.items():
            got.append((r.tag, r.value, r.reason))

    pump.cancel()
    pump = asyncio.create_task(collect())
    try:
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(0, 7, 8))
        await _births(src, 1)

        async def read_then_behind() -> None:
            await until(lambda: ("n1/speed", 5, "connection_lost") in got, 5, "the drop read")
            pump.cancel()  # the consumer behind from now on
            node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 8, 7))  # while this host is away: unseen

        held = asyncio.create_task(read_then_behind())
        await _dropped(src, mosquitto.port, lambda: None)
        await held
        data = sp._pb().Payload()
        data.timestamp, data.seq = int(time.time() * 1000), 1
        pb_metric(data, None, alias=8, datatype=D.INT32, int_value=42)  # speed 42, by the node's new aliases
        node.publish("spBv1.0/g/NDATA/n1", data.SerializeToString())
        await until(lambda: len(src._channel) >= 1, 5, "the data queued")
        await _dropped(src, mosquitto.port)
        got.clear()
        pump = asyncio.create_task(collect())
        await until(lambda: src._sessions_seen == src._sessions, 5, "the reconnects caught up")
        await asyncio.sleep(0.1)
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert not [g for g in got if g[1] == 42], got


async def test_a_birth_read_after_a_reconnect_but_sent_before_the_drop_does_not_make_the_node_current(
    mosquitto,
):
    """A birth from before this host's connection dropped was still unread (the consumer behind) when it came back;
    the node gave its aliases anew meanwhile (speed 7 -> 8, setpoint 8 -> 7), a birth this host never saw. Every node
    was taken as not born at the batch that ended with the drop, before that old birth in it was read: read then, it
    made the node current again, and a command to speed carried alias 7, the node's setpoint. Now the births are taken
    as stale once all the lost connection brought is read: the command waits for the node's birth answering the
    rebirth asked, and carries alias 8."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port, client_id="host1", reconnect_min_s=0.5, reconnect_max_s=0.5)
    try:
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(0, 7, 8))
        await _births(src, 1)
        pump.cancel()  # the consumer behind: this birth waits unread across the drop
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 7, 8))
        await until(lambda: len(src._channel) >= 1, 5, "the birth queued")
        # while this host is away: unseen
        await _dropped(
            src, mosquitto.port, lambda: node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(2, 8, 7))
        )
        pump = asyncio.create_task(_consume(src))
        await _births(src, 2)
        await until(lambda: node.cmds, 5, "the rebirth the reconnect asks")
        with pytest.raises(MqttError, match="is not alive") as ei:  # before: sent, alias 7
            await src.command("g", "n1", None, "speed", 1)
        assert ei.value.retryable is True
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(3, 8, 7))  # its answer
        await _births(src, 3)
        await src.command("g", "n1", None, "speed", 1)
        cmds = await node.wait_cmds(2)
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
    assert _rebirth_then(cmds) == ("speed", 8), cmds


async def test_a_device_command_waits_for_another_devices_unread_birth_on_a_node_known_to_share_aliases(
    mosquitto,
):
    """d3's valve and d4's pump given one alias once (against Sparkplug), then unique ones at a rebirth: d3
    restarts, its DDEATH and DBIRTH (valve 9 again) wait unread (the consumer busy). A DCMD to d4's pump went at once
    by alias 9, which that birth, come before it, gave the valve too; an NCMD waited for it. It waits too and, the
    clash read, goes by name alone."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    free = asyncio.Event()
    free.set()

    async def busy() -> None:
        async for _ in src.items():
            await free.wait()

    pump.cancel()
    pump = asyncio.create_task(busy())
    try:
        for bd, valve in ((0, 9), (0, 10)):  # the second: a rebirth, every alias its own
            node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(bd, 7, 8))
            node.publish("spBv1.0/g/DBIRTH/n1/d4", _device_birth("pump", 9, 1))
            node.publish("spBv1.0/g/DBIRTH/n1/d3", _device_birth("valve", valve, 2))
        await _births(src, 6)
        free.clear()  # the consumer held at the next reading: d4's data, stamped after the births
        data = sp._pb().Payload()
        data.timestamp, data.seq = int(time.time() * 1000) + 5, 3
        pb_metric(data, None, alias=9, datatype=D.INT32, int_value=6)
        arrived = src._channel.arrived
        node.publish("spBv1.0/g/DDATA/n1/d4", data.SerializeToString())
        node.publish("spBv1.0/g/DBIRTH/n1/d3", _device_birth("valve", 9, 4))
        await until(lambda: src._channel.arrived >= arrived + 2, 5, "the data and d3's birth queued")
        await _pump_held_then_by_name(src, node, 0.1, free.set)
    finally:
        pump.cancel()
        await src.stop()
        node.stop()


@pytest.mark.parametrize("born_again", ["restart", "two_rebirths", "two_restarts"])
async def test_a_node_command_waits_for_a_late_device_of_its_session_before_once_its_first_clash_is_read(
    mosquitto, born_again
):
    """A node never seen sharing aliases (d3's valve and d4's pump their own) restarts (or answers two rebirths
    before its DBIRTHs, or restarts twice within its wait: a crash loop) with a new map (setpoint now alias 7); d4's
    DBIRTH gives its pump speed's alias 8 (against Sparkplug: the first clash, the node known to share from it), and
    d3's DBIRTH is late. An NCMD to setpoint went at once by alias 7, which d3's late birth then gave its valve too:
    the node was not known to share at its NBIRTH, so nothing was awaited. d3, of its session before, is now awaited
    as if the node had been known to share at that birth; its birth read, setpoint goes by name alone (the clash)."""
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    try:
        await _node_and_devices_born(src, node, 100, 101)
        if born_again == "two_rebirths":
            node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(0, 8, 7))
        else:
            node.publish("spBv1.0/g/NDEATH/n1", sp.death_payload(0))
        if born_again == "two_restarts":  # born and dead again at once, no DBIRTH between
            node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 8, 7))
            node.publish("spBv1.0/g/NDEATH/n1", sp.death_payload(1))
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1 + (born_again == "two_restarts"), 8, 7))
        node.publish("spBv1.0/g/DBIRTH/n1/d4", _device_birth("pump", 8, 1))  # the first clash: speed's alias
        await _births(src, 5 + (born_again != "restart"))
        n = len(node.cmds)
        waiting = asyncio.create_task(src.command("g", "n1", None, "setpoint", 1))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # before: sent by alias 7 once BIRTH_SETTLE_S was over
        node.publish("spBv1.0/g/DBIRTH/n1/d3", _device_birth("valve", 7, 2))
        assert await asyncio.wait_for(waiting, 5) == "sent"

        def setpoints() -> list:  # (the rebirth the clash asks, sent at the host's next tick, may come first)
            return [c[2].metrics[0] for c in node.cmds[n:] if c[2].metrics[0].name == "setpoint"]

        await until(setpoints, 5, "the command")
        await asyncio.sleep(0.1)  # and no other after it
        assert [(m.name, m.HasField("alias")) for m in setpoints()] == [("setpoint", False)]
    finally:
        pump.cancel()
        await src.stop()
        node.stop()


async def test_a_node_command_by_name_alone_for_a_device_of_its_session_before_never_born_again_is_counted(
    mosquitto, monkeypatch
):
    """A node known to share aliases (d3's valve given speed's alias) restarts and d3 never comes back (removed):
    each NCMD waits for d3 REBORN_DEVICES_WAIT_S (made 0.3 s) after the NBIRTH, then goes by name alone for the
    whole session, which nothing said. Now each such command is counted (notice devices_not_reborn, said once per
    node, naming d3); a device said dead (DDEATH) is by design, not counted."""
    monkeypatch.setattr(sparkplug_host, "REBORN_DEVICES_WAIT_S", 0.3)
    node = Node(mosquitto.port)
    src, pump = await _host(mosquitto.port)
    try:
        await _node_and_devices_born(src, node, 7, 101)  # valve given speed's alias: sharing
        node.publish("spBv1.0/g/NDEATH/n1", sp.death_payload(0))
        node.publish("spBv1.0/g/NBIRTH/n1", _aliased_birth(1, 7, 8))
        node.publish("spBv1.0/g/DBIRTH/n1/d4", _device_birth("pump", 101, 1))  # d3 never again
        await _births(src, 5)
        await asyncio.sleep(0.35)
        for n in (1, 2):
            assert await _speed_command(src, node) == ("speed", None)
            assert src.notices.counts.get("devices_not_reborn") == n, src.notices.counts  # before: none
        assert "d3" in src.notices.messages["devices_not_reborn"]
        with pytest.raises(SparkplugTypeMismatch):  # refused, not sent: not counted
            await src.command("g", "n1", None, "speed", 2**40)
        assert src.sparkplug.commands_by_name == 2
    finally:
        pump.cancel()
        await src.stop()
        node.stop()
