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
from tests.support.results import result

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


async def _connected(src: OpcUaSource, timeout_s: float = 30.0) -> None:
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
        for _ in range(600):
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
    return result(
        verdict, seq, pipeline="inspect", source="cam", model_version="1.0.0", engine="onnxruntime", score=0.9
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
        for _ in range(600):
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
        await asyncio.wait_for(src.subscribed.wait(), 30)  # the SUBACK: nothing published is missed
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
        for _ in range(600):
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


async def _plc(name: str, add) -> tuple:
    """Another vendor's PLC: a bare asyncua server with the variables ``add(obj, idx)`` puts on its one
    object, started; (server, namespace index, endpoint)."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", f"urn:test:{name}", "Cell")
    await add(obj, idx)
    await srv.start()
    return srv, idx, f"opc.tcp://127.0.0.1:{port}/plc/"


async def test_a_write_target_of_a_data_type_the_client_cannot_resolve_is_named_and_reading_goes_on():
    """A vendor DataType without a HasSubtype path to ns=0, or a DataType node the server does not
    expose: the former code let asyncua's plain UaError out of the connect, so the source reconnected
    forever and no tag was read; and a write raised that UaError (retried by actions) instead of an
    OpcUaError. Now that target is named with its DataType, the other targets and tags are unaffected."""
    from asyncua import ua

    async def add(obj, idx):
        await obj.add_variable(ua.NodeId("Temp", idx), "Temp", 20.0)
        fake = await obj.add_object(ua.NodeId("RecipeType", idx), "RecipeType")  # no HasSubtype to ns=0
        for name, dtype in (("Recipe", fake.nodeid), ("Mode", ua.NodeId(3003, 3))):  # 3003: no such node
            node = await obj.add_variable(
                ua.NodeId(name, idx), name, ua.Variant(1, ua.VariantType.Int16), None, dtype
            )
            await node.set_writable()
        ok = await obj.add_variable(ua.NodeId("Count", idx), "Count", ua.Variant(0, ua.VariantType.Int16))
        await ok.set_writable()

    srv, idx, endpoint = await _plc("vendor", add)
    recipe, mode, count = (f"ns={idx};s={n}" for n in ("Recipe", "Mode", "Count"))
    src = OpcUaSource("plc", _settings(endpoint, [{"node_id": f"ns={idx};s=Temp"}]))
    src.expect_writes([(recipe, 1), (mode, 1), (count, 1)])
    await src.start()
    try:

        async def first():
            async for r in src.items():
                return r

        assert (await asyncio.wait_for(first(), 8)).tag == "Temp"
        assert src.state.value == "connected" and src.stats.reconnects == 0
        assert (
            f"node {recipe} has DataType ns={idx};s=RecipeType, which the server does not derive"
            in (src.target_errors[recipe])
        )
        assert f"node {mode} has DataType ns=3;i=3003" in src.target_errors[mode]
        assert count not in src.target_errors
        for node, dtype in ((recipe, f"ns={idx};s=RecipeType"), (mode, "ns=3;i=3003")):
            with pytest.raises(OpcUaTypeMismatch, match=f"node {node} has DataType {dtype}") as ei:
                await src.write(node, 1)
            assert ei.value.retryable is False
        await src.write(count, 7)
    finally:
        await src.stop()
        await srv.stop()


async def test_a_node_retyped_while_the_session_stays_up_is_written_with_its_new_type():
    """A TwinCAT/Codesys online change turns an INT setpoint into a REAL without ending the session. The
    former code kept the type it read first: 2.5 was refused as 'Int16', and 3 was sent as an Int16 that
    the server refused (BadTypeMismatch) on every later write. Now the type is read again and the write
    lands with the node's new type."""
    from asyncua import ua

    nodes = {}

    async def add(obj, idx):
        nodes["sp"] = await obj.add_variable(
            ua.NodeId("Setpoint", idx), "Setpoint", ua.Variant(0, ua.VariantType.Int16)
        )
        await nodes["sp"].set_writable()

    srv, idx, endpoint = await _plc("online", add)
    sp, node = f"ns={idx};s=Setpoint", nodes["sp"]
    src = OpcUaSource("plc", _settings(endpoint))
    src.expect_writes([(sp, 1)])
    await src.start()
    try:
        await _connected(src)
        await src.write(sp, 5)
        # the online change: DataType Float; the value is reset (null) until the program writes one
        await node.write_attribute(
            ua.AttributeIds.DataType,
            ua.DataValue(ua.Variant(ua.NodeId(ua.ObjectIds.Float), ua.VariantType.NodeId)),
        )
        await node.write_value(
            ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData))
        )
        await src.write(sp, 3)  # fits the old Int16: the server's BadTypeMismatch says it changed
        dv = await node.read_data_value()
        assert (dv.Value.VariantType, dv.Value.Value) == (ua.VariantType.Float, 3.0)
        await src.write(sp, 2.5)
        assert await node.read_value() == 2.5
        with pytest.raises(OpcUaTypeMismatch, match=rf"node {sp} is Float; cannot write 'x'"):
            await src.write(sp, "x")
    finally:
        await src.stop()
        await srv.stop()


async def test_a_heartbeat_counter_wraps_at_what_a_byte_node_holds():
    """A Siemens SINT life counter (SByte): the former counter ran to 32767 whatever the node, so it
    stopped at the 128th beat and the PLC's watchdog tripped. Now it wraps at 127. A counter on a
    Boolean node (which takes 0 and 1, so the former start check's value 1 passed) is named at start."""
    from asyncua import ua

    nodes = {}

    async def add(obj, idx):
        nodes["life"] = await obj.add_variable(
            ua.NodeId("Life", idx), "Life", ua.Variant(0, ua.VariantType.SByte)
        )
        flag = await obj.add_variable(ua.NodeId("Flag", idx), "Flag", False)
        for n in (nodes["life"], flag):
            await n.set_writable()

    srv, idx, endpoint = await _plc("life", add)
    base = _settings(endpoint, heartbeat={"node_id": f"ns={idx};s=Life", "kind": "counter"})
    # a fast beat (1 ms, under the 100 ms a config may set) to reach the wrap in a second
    fast = base.model_copy(update={"heartbeat": base.heartbeat.model_copy(update={"period_ms": 1})})
    src = OpcUaSource("plc", fast)
    await src.start()
    seen = set()
    try:
        await _connected(src)
        for _ in range(3000):
            seen.add(await nodes["life"].read_value())
            if src.heartbeats >= 300:
                break
            await asyncio.sleep(0.01)
        assert src.heartbeats >= 300, src.stats.last_error
        assert "heartbeat" not in src.stats.errors_by_reason, src.stats.last_error
        assert src.target_errors == {} and max(seen) <= 127
    finally:
        await src.stop()
    flag = OpcUaSource(
        "plc", _settings(endpoint, heartbeat={"node_id": f"ns={idx};s=Flag", "kind": "counter"})
    )
    await flag.start()
    try:
        await _connected(flag)
        for _ in range(600):
            if flag.target_errors:
                break
            await asyncio.sleep(0.05)
        assert (
            f"node ns={idx};s=Flag is Boolean; cannot write 32767" in flag.target_errors[f"ns={idx};s=Flag"]
        )
    finally:
        await flag.stop()
        await srv.stop()


async def test_a_list_for_a_scalar_node_and_a_single_value_for_an_array_node_are_refused_before_writing():
    """A lenient server stored [1, 2] in a scalar INT and 7 in an INT[3] (a strict PLC refuses them only
    at the first write, mid-production): the node's ValueRank (and ArrayDimensions) is now checked at
    connect and on every write; ValueRank -2 (any) still takes both."""
    from asyncua import ua

    nodes = {}

    async def add(obj, idx):
        nodes["speed"] = await obj.add_variable(
            ua.NodeId("Speed", idx), "Speed", ua.Variant(0, ua.VariantType.Int16)
        )
        nodes["bins"] = await obj.add_variable(
            ua.NodeId("Bins", idx), "Bins", ua.Variant([0, 0, 0], ua.VariantType.Int16)
        )
        await nodes["bins"].write_value_rank(1)
        await nodes["bins"].write_array_dimensions([3])
        nodes["any"] = await obj.add_variable(
            ua.NodeId("Any", idx), "Any", ua.Variant(0, ua.VariantType.Int16)
        )
        await nodes["any"].write_value_rank(-2)
        for n in nodes.values():
            await n.set_writable()

    srv, idx, endpoint = await _plc("rank", add)
    speed, bins, any_ = (f"ns={idx};s={n}" for n in ("Speed", "Bins", "Any"))
    src = OpcUaSource("plc", _settings(endpoint))
    src.expect_writes([(speed, [1, 2]), (bins, 7), (any_, [1, 2])])
    await src.start()
    try:
        await _connected(src)
        for _ in range(600):
            if len(src.target_errors) >= 2:
                break
            await asyncio.sleep(0.05)
        assert "is a single Int16 (ValueRank -1); cannot write [1, 2]" in src.target_errors[speed]
        assert (
            "is an array of Int16 (ValueRank 1, ArrayDimensions [3]); cannot write 7"
            in src.target_errors[bins]
        )
        assert any_ not in src.target_errors
        refused = [
            (speed, [1, 2], "write one value, not an array"),
            (bins, 7, "write a list of values, not a single one"),
            (bins, [1, 2, 3, 4], "4 elements, at most 3 fit"),
        ]
        for node, value, why in refused:
            with pytest.raises(OpcUaTypeMismatch, match=rf"node {node} is .*; cannot write .*{why}"):
                await src.write(node, value)
        assert await nodes["speed"].read_value() == 0 and await nodes["bins"].read_value() == [0, 0, 0]
        await src.write(speed, 5)
        await src.write(bins, [4, 5, 6])
        await src.write(any_, [1, 2])
        assert await nodes["speed"].read_value() == 5 and await nodes["bins"].read_value() == [4, 5, 6]
        assert await nodes["any"].read_value() == [1, 2]
    finally:
        await src.stop()
        await srv.stop()


async def test_number_integer_and_uinteger_nodes_get_a_concrete_type_they_take():
    """The abstract DataTypes Number / Integer / UInteger have no values of their own: the former code sent
    the BaseDataType rules' Int32 (refused by a UInteger node, and by one holding a Double or an Int16) and
    passed text to an Integer node for the server to refuse. Now the type the node holds is kept when the
    value fits it (else Int32/Int64, UInt32/UInt64, Double), true/false are 1/0 to Integer and UInteger as to
    the concrete integer types, and text, true/false to a Number holding a Double and a negative UInteger are
    refused by the real DataType's name."""
    from asyncua import ua

    V, nodes = ua.VariantType, {}

    async def add(obj, idx):
        for name, init, vt, dtype in (
            ("Number", 0.0, V.Double, ua.ObjectIds.Number),
            ("Integer", 0, V.Int16, ua.ObjectIds.Integer),
            ("UInteger", 0, V.UInt32, ua.ObjectIds.UInteger),
        ):
            nodes[name] = await obj.add_variable(
                ua.NodeId(name, idx), name, ua.Variant(init, vt), None, ua.NodeId(dtype)
            )
            await nodes[name].set_writable()

    srv, idx, endpoint = await _plc("abstract", add)
    src = OpcUaSource("plc", _settings(endpoint))
    await src.start()
    try:
        await _connected(src)
        for name, value, kind in (
            ("Number", 1, V.Double),
            ("Integer", 5, V.Int16),
            ("UInteger", 5, V.UInt32),
        ):
            await src.write(f"ns={idx};s={name}", value)
            dv = await nodes[name].read_data_value()
            assert (dv.Value.VariantType, dv.Value.Value) == (kind, value)
        # true and false are 1 and 0 to Integer and UInteger, as to an Int16 or a UInt32 node (an action's
        # default value: true); they were refused ("write a whole number"), the concrete types taking them
        for name, value, kind, written in (
            ("Integer", True, V.Int16, 1),
            ("UInteger", True, V.UInt32, 1),
            ("Integer", False, V.Int16, 0),
        ):
            await src.write(f"ns={idx};s={name}", value)
            dv = await nodes[name].read_data_value()
            assert (dv.Value.VariantType, type(dv.Value.Value), dv.Value.Value) == (kind, int, written)
        refused = [
            ("UInteger", -1, "a UInteger node takes whole numbers >= 0"),
            ("Integer", "text", "write a whole number"),
            ("Integer", 1.5, "write a whole number"),
            ("Number", True, "write a number; true and false are a Boolean node's values"),
            ("Number", "1.5", "write a number without quotes"),
        ]
        for name, value, why in refused:
            with pytest.raises(
                OpcUaTypeMismatch, match=rf"node ns={idx};s={name} is {name}; cannot write .*{why}"
            ):
                await src.write(f"ns={idx};s={name}", value)
    finally:
        await src.stop()
        await srv.stop()
