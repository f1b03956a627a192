"""Writes to a PLC are safe: a quoted "false" never reaches a Boolean coil as TRUE, a wrong target is
named before the first defect (``validate --online`` and at connect), a write that cannot succeed is
not retried, and ``mode: level | on_change | pulse`` gives the output semantics a PLC programmer
expects. All against the real asyncua machine server on a free loopback port."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
import yaml

from devices.opcua.client import OpcUaSource, OpcUaTypeMismatch
from devices.opcua.settings import OpcUaSettings
from edge_agent.actions import ActionRunner
from edge_agent.config import parse_config
from edge_agent.types import Result
from simulators.machine import NAMESPACE_URI, MachineServer
from tests.support.peers import free_port, opcua_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def machine():
    srv = MachineServer(free_port(), seed=1, period_ms=200, window_samples=64)
    await srv.start()
    yield srv
    await srv.stop()


def _settings(endpoint: str, nodes=(), **kw) -> OpcUaSettings:
    return OpcUaSettings(
        endpoint=endpoint,
        nodes=list(nodes),
        publishing_interval_ms=50,
        reconnect_initial_s=0.1,
        reconnect_max_s=0.5,
        connect_timeout_s=2.0,
        keepalive_check_s=0.3,
        **kw,
    )


async def _connected(src: OpcUaSource, timeout_s: float = 8.0) -> None:
    for _ in range(int(timeout_s * 20)):
        if src.state.value == "connected":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not connected: {src.stats.last_error}")


def _writes(machine: MachineServer, tag: str = "Reject") -> list:
    return [v for t, v in machine.writes if t == tag]


async def test_string_false_is_never_written_as_true_and_the_error_names_node_and_type(machine):
    src = OpcUaSource("m", _settings(machine.endpoint))
    await src.start()
    try:
        await _connected(src)
        for bad in ("false", "yes", "hot"):
            with pytest.raises(OpcUaTypeMismatch, match=r"Machine1\.Reject is Boolean; cannot write") as ei:
                await src.write(machine.node_id("Reject"), bad)
            assert ei.value.retryable is False
        with pytest.raises(
            OpcUaTypeMismatch, match=r"Machine1\.RejectCount is Int32; cannot write 'hot' \(str\)"
        ):
            await src.write(machine.node_id("RejectCount"), "hot")
        await asyncio.sleep(0.3)
        assert _writes(machine) == []
        await src.write(machine.node_id("Reject"), False)
        await src.write(machine.node_id("Reject"), 1)  # 0/1 are accepted for a Boolean
        await asyncio.sleep(0.3)
        assert _writes(machine) == [False, True]
    finally:
        await src.stop()


async def test_namespace_uri_node_ids_are_resolved(machine):
    src = OpcUaSource(
        "m",
        _settings(
            machine.endpoint,
            [
                {"node_id": f"nsu={NAMESPACE_URI};s=Machine1.Speed"},
                {"node_id": "nsu=urn:nowhere;s=Machine1.Load"},
            ],
        ),
    )
    await src.start()
    try:

        async def first():
            async for r in src.items():
                return r

        r = await asyncio.wait_for(first(), 8)
        assert r.tag == "Speed"
        assert "urn:nowhere" in src.node_errors["nsu=urn:nowhere;s=Machine1.Load"]
        await src.write(f"nsu={NAMESPACE_URI};s=Machine1.Reject", True)
        await asyncio.sleep(0.3)
        assert _writes(machine) == [True]
    finally:
        await src.stop()


async def test_bad_write_targets_are_named_at_connect_not_at_the_first_defect(machine):
    src = OpcUaSource("m", _settings(machine.endpoint))
    src.expect_writes(
        [
            (machine.node_id("Reject"), "hot"),
            (machine.node_id("RejectCount"), 1),
            ("ns=2;s=Machine1.Rejekt", True),
            (machine.node_id("Alarm"), True),
        ]
    )
    await src.start()
    try:
        await _connected(src)
        for _ in range(40):
            if len(src.target_errors) >= 3:
                break
            await asyncio.sleep(0.05)
        errs = src.target_errors
        assert "is Boolean; cannot write 'hot'" in errs[machine.node_id("Reject")]
        assert "read-only" in errs[machine.node_id("RejectCount")]
        assert "does not exist" in errs["ns=2;s=Machine1.Rejekt"]
        assert machine.node_id("Alarm") not in errs
        assert src.stats.errors_by_reason["write_target"] == 3
    finally:
        await src.stop()


async def test_validate_online_checks_nodes_writability_and_type(machine, tmp_path):
    cfg = {
        "agent": {"id": "gw1"},
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": machine.endpoint,
                "nodes": [
                    {"node_id": machine.node_id("Speed")},
                    {"node_id": "ns=2;s=Machine1.Sped"},
                    {"node_id": "ns=2;s=Machine1.Truth.FaultType"},
                    {"node_id": "i=2258"},
                ],
            }
        },  # a numeric NodeId: its tag is unknown offline
        # so the rules' tags are checked online, against the browse names the server gives
        "rules": [
            {"name": "r", "source": "plc", "tag": "FaultType", "above": 1.0},
            {"name": "s", "source": "plc", "tag": "speed", "above": 1.0},
        ],
        "actions": {
            "reject": {
                "type": "opcua_write",
                "source": "plc",
                "node_id": machine.node_id("Reject"),
                "value": "hot",
            },
            "count": {
                "type": "opcua_write",
                "source": "plc",
                "node_id": machine.node_id("RejectCount"),
                "value": 1,
            },
            "typo": {
                "type": "opcua_write",
                "source": "plc",
                "node_id": "ns=2;s=Machine1.Rejct",
                "value": True,
            },
            "fine": {
                "type": "opcua_write",
                "source": "plc",
                "node_id": machine.node_id("Alarm"),
                "value": True,
            },
        },
    }
    p = tmp_path / "line.yaml"
    p.write_text(yaml.safe_dump(cfg))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_agent.cli",
        "validate",
        "--online",
        str(p),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().splitlines()
    assert proc.returncode == 1, (out, err)
    assert (
        f"{p}: sources.plc.nodes[1].node_id: node ns=2;s=Machine1.Sped cannot be read (BadNodeIdUnknown); "
        "check the node_id (edge-agent browse)" in lines
    ), lines
    assert any(
        x.startswith(f"{p}: actions.reject.value: node ns=2;s=Machine1.Reject is Boolean; cannot write 'hot'")
        for x in lines
    ), lines
    assert any(
        x.startswith(f"{p}: actions.count.node_id: node ns=2;s=Machine1.RejectCount is read-only")
        for x in lines
    ), lines
    assert any(
        x.startswith(f"{p}: actions.typo.node_id: node ns=2;s=Machine1.Rejct does not exist") for x in lines
    )
    assert not any("actions.fine" in x for x in lines)
    assert (
        f"{p}: rules[1].tag: source 'plc' produces no tag 'speed' (browse names read from the server); did you "
        "mean 'Speed'? (or set `tag:` on the node)" in lines
    ), lines
    assert not any("rules[0]" in x for x in lines)
    assert "5 error(s)" in lines[-1]


def _result(verdict: str, seq: int) -> Result:
    return Result(
        pipeline="inspect",
        source="cam",
        item_seq=seq,
        captured_at=time.time(),
        model="m",
        model_version="1.0.0",
        engine="onnxruntime",
        verdict=verdict,
        score=0.9,
    )


async def _drive(machine, action: dict, verdicts: str, gap_s: float = 0.05, settle_s: float = 0.5) -> tuple:
    cfg = parse_config(
        {
            "agent": {"id": "gw1"},
            "sources": {"plc": {"type": "opcua", "endpoint": machine.endpoint}},
            "actions": {
                "out": {
                    "type": "opcua_write",
                    "source": "plc",
                    "node_id": machine.node_id("Reject"),
                    "when": {"verdict": "NG"},
                    **action,
                }
            },
        }
    )
    src = OpcUaSource("plc", cfg.sources["plc"])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await _connected(src)
        for i, v in enumerate(verdicts):
            await runner.handle(["out"], _result("NG" if v == "N" else "OK", i), None)
            await asyncio.sleep(gap_s)
        await asyncio.sleep(settle_s)
        await runner.flush()
        await asyncio.sleep(0.2)
    finally:
        await src.stop()
    return _writes(machine), dict(runner.stats["out"])


async def test_level_mode_writes_every_result_and_the_reset_value_when_given(machine):
    writes, stats = await _drive(machine, {"mode": "level", "reset_value": False}, "NNOO")
    assert writes == [True, True, False, False] and stats["ok"] == 4


async def test_level_mode_without_reset_value_writes_only_while_the_condition_holds(machine):
    writes, _ = await _drive(machine, {}, "NONO")  # the default, as before output modes existed
    assert writes == [True, True]


async def test_on_change_mode_writes_only_when_the_level_changes(machine):
    writes, _ = await _drive(machine, {"mode": "on_change"}, "ONNNNOOON")
    assert writes == [False, True, False, True]


async def test_pulse_mode_writes_value_on_the_rising_edge_then_resets_after_pulse_ms(machine):
    t0 = time.monotonic()
    writes, _ = await _drive(machine, {"mode": "pulse", "pulse_ms": 300}, "NNNNNOOOOOOOOOOON", gap_s=0.05)
    assert writes == [True, False, True, False]
    assert time.monotonic() - t0 > 0.3


async def test_a_type_mismatch_is_not_retried(machine):
    cfg_action = {"mode": "level", "value": "hot", "retry": {"max_attempts": 5, "backoff_s": 0.01}}
    writes, stats = await _drive(machine, cfg_action, "N")
    assert (
        writes == [] and stats["failed"] == 1 and stats["attempt_failures"] == 1 and not stats.get("retried")
    )


async def test_heartbeat_toggles_a_watchdog_node_while_connected(machine):
    src = OpcUaSource(
        "m", _settings(machine.endpoint, heartbeat={"node_id": machine.node_id("Alarm"), "period_ms": 100})
    )
    await src.start()
    try:
        await _connected(src)
        for _ in range(60):
            if len(_writes(machine, "Alarm")) >= 4:
                break
            await asyncio.sleep(0.05)
    finally:
        await src.stop()
    assert _writes(machine, "Alarm")[:4] == [True, False, True, False]
    assert src.target_errors == {}


async def test_sparkplug_dcmd_write_back_is_typed_by_the_birth_and_pulses(mosquitto):
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from devices.mqtt.client import MqttSource
    from protocols import sparkplug as sp

    seen: list = []
    node = paho.Client(CallbackAPIVersion.VERSION2)  # plays the edge node: births out, commands in
    node.on_message = lambda c, u, m: seen.append((m.topic, sp.decode(m.payload)))
    node.connect("127.0.0.1", mosquitto.port)
    node.subscribe("spBv1.0/line1/+/press1/#")
    node.loop_start()
    cfg = parse_config(
        {
            "agent": {"id": "gw1"},
            "sources": {
                "bus": {
                    "type": "mqtt",
                    "port": mosquitto.port,
                    "subscriptions": [{"topic": "spBv1.0/line1/#", "codec": "sparkplug_b"}],
                }
            },
            "actions": {
                "gate": {
                    "type": "sparkplug_command",
                    "source": "bus",
                    "group": "line1",
                    "edge_node": "press1",
                    "device": "gate",
                    "metric": "reject",
                    "mode": "pulse",
                    "pulse_ms": 200,
                    "when": {"verdict": "NG"},
                },
                "speed": {
                    "type": "sparkplug_command",
                    "source": "bus",
                    "group": "line1",
                    "edge_node": "press1",
                    "metric": "speed_set",
                    "value": "slow",
                },
            },
        }
    )
    src = MqttSource("bus", cfg.sources["bus"])
    await src.start()
    runner = ActionRunner(cfg, {"bus": src})
    try:
        await asyncio.wait_for(src.connected.wait(), 5)
        await asyncio.sleep(0.2)
        now = int(time.time() * 1000)
        node.publish(
            "spBv1.0/line1/NBIRTH/press1",
            sp.encode(
                sp.Payload(
                    now,
                    0,
                    [
                        sp.Metric(sp.BDSEQ_METRIC, None, sp.DataType.INT64, 0),
                        sp.Metric("speed_set", None, sp.DataType.INT32, 100),
                    ],
                )
            ),
            qos=1,
        )
        node.publish(
            "spBv1.0/line1/DBIRTH/press1/gate",
            sp.encode(sp.Payload(now, 1, [sp.Metric("reject", None, sp.DataType.BOOLEAN, False)])),
            qos=1,
        )

        async def consume():
            async for _ in src.items():
                pass

        pump = asyncio.create_task(consume())
        for _ in range(50):
            if src.sparkplug.births >= 2:
                break
            await asyncio.sleep(0.05)
        for i, v in enumerate("NNO"):
            await runner.handle(["gate", "speed"], _result("NG" if v == "N" else "OK", i), None)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        await runner.flush()
        await asyncio.sleep(0.2)
        pump.cancel()
    finally:
        node.loop_stop()
        await src.stop()
    cmds = [(t, [(m.name, m.datatype, m.value) for m in p.metrics]) for t, p in seen if "CMD" in t]
    assert cmds == [
        ("spBv1.0/line1/DCMD/press1/gate", [("reject", sp.DataType.BOOLEAN, True)]),
        ("spBv1.0/line1/DCMD/press1/gate", [("reject", sp.DataType.BOOLEAN, False)]),
    ], cmds
    # 'slow' for an Int32 metric: refused with metric and type named, never sent, not retried
    st = runner.stats["speed"]
    assert st["failed"] == 3 and st["attempt_failures"] == 3 and not st.get("ok")


async def test_float_and_double_setpoints_get_finite_numbers_only():
    """Another vendor's PLC with REAL (Float) and LREAL (Double) setpoints: a number lands with the
    node's own type; NaN, infinity, and a value a Float cannot hold are refused before any write (a
    PLC's comparisons with NaN are all false, so a limit fed NaN would never trip)."""
    from asyncua import ua

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:setpoints", "Press")
    real = await obj.add_variable(ua.NodeId("Limit", idx), "Limit", 1.5, ua.VariantType.Float)
    lreal = await obj.add_variable(ua.NodeId("Gain", idx), "Gain", 2.5, ua.VariantType.Double)
    for n in (real, lreal):
        await n.set_writable()
    await srv.start()
    src = OpcUaSource("plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/"))
    await src.start()
    try:
        await _connected(src)
        for node, t in ((f"ns={idx};s=Limit", "Float"), (f"ns={idx};s=Gain", "Double")):
            for bad in (float("nan"), float("inf"), -float("inf"), 10**400):
                with pytest.raises(OpcUaTypeMismatch, match=rf"node {node} is {t}; cannot write"):
                    await src.write(node, bad)
        with pytest.raises(OpcUaTypeMismatch, match="out of range of a 32-bit Float"):
            await src.write(f"ns={idx};s=Limit", 1e39)
        assert await real.read_value() == 1.5 and await lreal.read_value() == 2.5  # untouched
        await src.write(f"ns={idx};s=Limit", 7)
        await src.write(f"ns={idx};s=Gain", 1e300)
        dv = await real.read_data_value()
        assert dv.Value.VariantType == ua.VariantType.Float and dv.Value.Value == 7.0
        assert await lreal.read_value() == 1e300
    finally:
        await src.stop()
        await srv.stop()


async def test_text_time_bytes_and_guid_nodes_get_their_own_types_and_others_are_refused_by_name():
    """A PLC's LocalizedText message, DateTime stamp, ByteString and Guid nodes: each value lands as
    the node's own type (the former code sent text to LocalizedText and anything to DateTime as is,
    which the encoder rejected with an AttributeError that was then retried); a time without its zone
    is ambiguous and refused, and a node of a type the agent does not write is refused by name before
    anything is sent."""
    import datetime as dt
    import uuid

    from asyncua import ua

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:types", "Cell")

    async def var(name, value, vtype):
        node = await obj.add_variable(ua.NodeId(name, idx), name, value, vtype)
        await node.set_writable()
        return node

    msg = await var("Message", ua.LocalizedText("idle"), ua.VariantType.LocalizedText)
    stamp = await var("LastReject", dt.datetime(2020, 1, 1, tzinfo=dt.UTC), ua.VariantType.DateTime)
    blob = await var("Recipe", b"\x00", ua.VariantType.ByteString)
    guid = await var("Batch", uuid.UUID(int=0), ua.VariantType.Guid)
    name = await var("Name", ua.QualifiedName("x", idx), ua.VariantType.QualifiedName)
    await srv.start()
    src = OpcUaSource("plc", _settings(f"opc.tcp://127.0.0.1:{port}/plc/"))
    await src.start()
    try:
        await _connected(src)
        node = f"ns={idx};s="
        await src.write(node + "Message", "NG: scratch")
        assert (await msg.read_value()).Text == "NG: scratch"
        await src.write(node + "LastReject", "2026-11-30T12:00:00+01:00")
        assert await stamp.read_value() == dt.datetime(2026, 11, 30, 11, 0, tzinfo=dt.UTC)
        await src.write(node + "Recipe", b"\x01\x02")
        assert await blob.read_value() == b"\x01\x02"
        await src.write(node + "Batch", "72962b91-fa75-4ae6-8d28-b404dc7daf63")
        assert await guid.read_value() == uuid.UUID("72962b91-fa75-4ae6-8d28-b404dc7daf63")

        refused = [
            ("LastReject", "2026-11-30T12:00:00", "the time has no zone"),
            ("LastReject", 1764504000, "write an ISO 8601 time with its zone"),
            ("Recipe", "0102", "a ByteString node takes bytes"),
            ("Batch", "batch-7", "write a GUID"),
            ("Name", "x", "the agent writes only Boolean"),
        ]
        for target, value, why in refused:
            with pytest.raises(OpcUaTypeMismatch, match=rf"node {node}{target} is \w+; cannot write .*{why}"):
                await src.write(node + target, value)
        assert await stamp.read_value() == dt.datetime(2026, 11, 30, 11, 0, tzinfo=dt.UTC)  # untouched
        assert await blob.read_value() == b"\x01\x02" and (await name.read_value()).Name == "x"
    finally:
        await src.stop()
        await srv.stop()
