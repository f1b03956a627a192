"""What a PLC's own rules on array lengths, and a PLC download or mode change while the session stays up, do
to the agent's writes. Against a real asyncua server on a free loopback port, which (like a lax gateway)
takes an array of any length and checks a written value only against the type of the value it holds, not
against the node's DataType: a fixed PLC array (an S7-1500's Array[0..9]) is written whole or not at all, an
array past the node's MaxArrayLength is refused, and a node retyped (an INT made a REAL) or locked (a PLC put
where the session may not write) while the agent is connected is read again at once, without a reconnect."""

from __future__ import annotations

import asyncio
import logging

import pytest
from asyncua import ua
from asyncua.common.callback import CallbackType
from asyncua.common.structures104 import new_enum

from devices.opcua import client as opcua_client
from devices.opcua.client import OpcUaSource, OpcUaTypeMismatch
from edge_agent.actions import ActionRunner, write_targets
from tests.integration.test_plc_exact_values import _config
from tests.support.peers import free_port, opcua_server
from tests.support.results import result
from tests.support.waits import until


async def _any_state(srv, idx: int, obj):
    """A writable node ``State`` of a PLC's ANY (a subtype of BaseDataType) holding the String "idle": asyncua's
    server holds the type of the value last written to it."""
    anyvalue = await srv.nodes.base_data_type.add_data_type(ua.NodeId("AnyValue", idx), "AnyValue")
    state = await obj.add_variable(
        ua.NodeId("State", idx), "State", ua.Variant("idle", ua.VariantType.String), None, anyvalue.nodeid
    )
    await state.set_writable()
    return state


async def _sent_to(srv, idx: int) -> list[tuple[str, object]]:
    """Every value a write request carried to a node of namespace ``idx`` (taken or not), as it arrives."""
    sent: list[tuple[str, object]] = []

    async def on_write(event, _dispatcher) -> None:
        for wv in event.request_params.NodesToWrite:
            if wv.NodeId.NamespaceIndex == idx:
                sent.append((wv.NodeId.Identifier, wv.Value.Value))

    srv.subscribe_server_callback(CallbackType.PreWrite, on_write)
    return sent


async def test_a_plc_array_is_written_whole_and_never_past_its_max_array_length():
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    # an S7-1500 Array[0..9] of INT: ArrayDimensions [10], and its value always holds 10
    recipe = await obj.add_variable(
        ua.NodeId("Recipe", idx), "Recipe", ua.Variant([0] * 10, ua.VariantType.Int16)
    )
    # a buffer that grows up to 100 (ArrayDimensions as the maximum Part 3 makes it): it holds 4 now
    buffer = await obj.add_variable(
        ua.NodeId("Buffer", idx), "Buffer", ua.Variant([0] * 4, ua.VariantType.Int16)
    )
    # an array of any length up to its MaxArrayLength, 5
    limits = await obj.add_variable(
        ua.NodeId("Limits", idx), "Limits", ua.Variant([0.0], ua.VariantType.Double)
    )
    for node, dims in ((recipe, [10]), (buffer, [100]), (limits, [0])):
        await node.write_value_rank(1)
        await node.write_array_dimensions(dims)
        await node.set_writable()
    await limits.add_property(
        ua.NodeId("Limits.MaxArrayLength", idx),
        ua.QualifiedName("MaxArrayLength", 0),
        ua.Variant(5, ua.VariantType.UInt32),
    )
    sent = await _sent_to(srv, idx)
    await srv.start()
    ids = {n: f"ns={idx};s={n}" for n in ("Recipe", "Buffer", "Limits")}
    src = OpcUaSource("plc", _config(port).sources["plc"])
    src.expect_writes([(ids["Recipe"], [1, 2, 3]), (ids["Limits"], [1.0] * 6)])
    await src.start()
    try:
        await until(lambda: len(src.target_errors) == 2, 30, "both write targets judged at connect")
        assert "3 elements; it holds exactly 10" in src.target_errors[ids["Recipe"]], src.target_errors
        assert "an array of at most 5 Double (its MaxArrayLength)" in src.target_errors[ids["Limits"]], (
            src.target_errors
        )
        for short in ([1, 2, 3], []):
            with pytest.raises(
                OpcUaTypeMismatch,
                match=rf"node {ids['Recipe']} is an array of Int16 \(ValueRank 1, ArrayDimensions \[10\]\); "
                rf"cannot write .*: {len(short)} elements; it holds exactly 10 .*Array\[0..9\].*write all 10",
            ):
                await src.write(ids["Recipe"], short)
        with pytest.raises(OpcUaTypeMismatch, match=r"at most 5 Double .*: 6 elements.*write at most 5"):
            await src.write(ids["Limits"], [1.0] * 6)
        await src.write(ids["Recipe"], list(range(10)))
        await src.write(ids["Buffer"], [7, 8, 9])  # shorter than its ArrayDimensions: a maximum here
        await src.write(ids["Limits"], [1.0] * 5)
        assert await recipe.read_value() == list(range(10))
        assert await buffer.read_value() == [7, 8, 9]
    finally:
        await src.stop()
        await srv.stop()
    # before: [1, 2, 3] and [] reached the fixed array (a lax server stores them), 6 limits the server of 5
    assert [(n, len(v.Value)) for n, v in sent] == [("Recipe", 10), ("Buffer", 3), ("Limits", 5)], sent


async def test_a_node_retyped_while_the_session_stays_up_is_written_as_it_is_now(caplog):
    """A PLC download makes an INT a REAL; the session stays up and the server checks no written value
    against the node's type: the former code went on sending Int16 (a gateway stores it as such, a PLC reads
    its bits as another REAL) until a reconnect."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    # a lax server: it stores whatever a write carries (asyncua's own checks it against the value held)
    srv.iserver.aspace._is_expected_variant_type = lambda *_: True
    speed = await obj.add_variable(ua.NodeId("Speed", idx), "Speed", ua.Variant(0, ua.VariantType.Int16))
    await speed.set_writable()
    sent = await _sent_to(srv, idx)
    await srv.start()
    node_id = f"ns={idx};s=Speed"
    src = OpcUaSource("plc", _config(port).sources["plc"])
    src.expect_writes([(node_id, 7)])
    caplog.set_level(logging.INFO, logger="devices.opcua")
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        await src.write(node_id, 7)
        # the download: Speed is a REAL now (DataType Float), while its value is still the old Int16
        await srv.write_attribute_value(
            speed.nodeid,
            ua.DataValue(ua.Variant(ua.NodeId(ua.ObjectIds.Float), ua.VariantType.NodeId)),
            ua.AttributeIds.DataType,
        )

        def noticed() -> bool:
            return any("its DataType changed (i=4 -> i=10)" in r.getMessage() for r in caplog.records)

        await until(noticed, 30, "the retype noticed while the session stayed up")
        await src.write(node_id, 7)
        assert src.target_errors == {}, src.target_errors
    finally:
        await src.stop()
        await srv.stop()
    # before: the second 7 went as Int16 too
    assert [(n, v.VariantType, v.Value) for n, v in sent] == [
        ("Speed", ua.VariantType.Int16, 7),
        ("Speed", ua.VariantType.Float, 7.0),
    ], sent


async def test_a_node_locked_at_run_time_is_failed_said_once_and_the_other_outputs_go_on(caplog):
    """A PLC put where the agent's session may not write a node (its AccessLevel changed at run time: the
    server answers BadUserAccessDenied, a Siemens one BadNotWritable) fails that output, not retried, said
    once with the node, counted at every result, while the other outputs are written; the target is judged
    again when the node's access changes, both ways, without a reconnect."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    nodes = {}
    for name in ("Reject", "Lamp"):
        nodes[name] = await obj.add_variable(
            ua.NodeId(name, idx), name, ua.Variant(False, ua.VariantType.Boolean)
        )
        await nodes[name].set_writable()
    sent = await _sent_to(srv, idx)
    await srv.start()

    def out(node: str) -> dict:
        return {
            "type": "opcua_write",
            "source": "plc",
            "node_id": f"ns={idx};s={node}",
            "value": True,
            "when": {"verdict": "NG"},
        }

    cfg = _config(port, {"reject": out("Reject"), "lamp": out("Lamp")})
    reject = f"ns={idx};s=Reject"
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(node_id, value) for _, node_id, value in write_targets(cfg)["plc"]])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    caplog.set_level(logging.INFO)
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        await runner.handle(["reject", "lamp"], result("NG", 0), None)
        await runner.flush(timeout_s=5)
        await nodes["Reject"].set_writable(False)  # AccessLevel and UserAccessLevel: CurrentRead only
        await until(lambda: reject in src.target_errors, 30, "the lock noticed without a reconnect")
        assert "read-only for this session" in src.target_errors[reject], src.target_errors
        for i in range(1, 4):
            await runner.handle(["reject", "lamp"], result("NG", i), None)
            await runner.flush(timeout_s=5)
        st = runner.stats["reject"]
        assert (st["ok"], st["failed"], st.get("retried", 0)) == (1, 3, 0), dict(st)
        assert runner.stats["lamp"]["ok"] == 4, dict(runner.stats["lamp"])
        said = [r.getMessage() for r in caplog.records if r.name == "edge_agent.actions"]
        assert len([m for m in said if "'reject'" in m]) == 1, said
        assert f"write of True to {reject} refused by the server (BadUserAccessDenied)" in said[0], said
        await nodes["Reject"].set_writable(True)
        await until(lambda: reject not in src.target_errors, 30, "the unlock noticed without a reconnect")
        await runner.handle(["reject", "lamp"], result("NG", 4), None)
        await runner.flush(timeout_s=5)
        assert runner.stats["reject"]["ok"] == 2, dict(runner.stats["reject"])
    finally:
        await src.stop()
        await srv.stop()
    assert [n for n, _ in sent].count("Lamp") == 5, sent


@pytest.mark.parametrize("mode", ["level", "on_change", "pulse"])
async def test_an_output_refused_for_what_a_base_data_type_node_held_is_written_once_it_holds_what_fits(
    caplog, mode
):
    """A BaseDataType node held a String, so an output's reset False would be refused and its True was not
    written (reset_refused). The judgement used the type read at connect and sent nothing, so nothing read the
    node again: after a PLC download made it hold a Boolean, the output stayed suppressed until a reconnect
    (an on_change or pulse output besides judged only its edge, and the condition still held: no edge came).
    Now the value it holds is read again (at most once a second) while it refuses, a refused edge is judged
    again at the next result, and the output is written once the node fits; the refusal is said once."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    state = await _any_state(srv, idx, obj)
    sent = await _sent_to(srv, idx)
    await srv.start()
    node_id = f"ns={idx};s=State"
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": True, "reset_value": False}
    cfg = _config(port, {"lamp": {**out, "mode": mode, "pulse_ms": 100, "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(n, v) for _, n, v in write_targets(cfg)["plc"]])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    caplog.set_level(logging.INFO)
    try:
        await until(lambda: node_id in src.target_errors, 30, "the String it holds judged at connect")
        await runner.handle(["lamp"], result("NG", 0), None)
        await runner.flush(timeout_s=5)
        assert runner.stats["lamp"]["reset_refused"] == 1, dict(runner.stats["lamp"])
        assert sent == [], sent
        # the PLC download: the node holds a Boolean now (the session stays up)
        await state.write_value(
            ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData))
        )
        await state.write_value(ua.Variant(False, ua.VariantType.Boolean))
        sent.clear()  # the server's own writes
        for i in range(1, 100):
            await runner.handle(["lamp"], result("NG", i), None)
            await runner.flush(timeout_s=5)
            if any(v.Value is True for _, v in sent):
                break
            await asyncio.sleep(0.1)
        assert any(v.Value is True for _, v in sent), "the output stayed suppressed"
        await until(lambda: node_id not in src.target_errors, 30, "the target judged again")
        said = [r.getMessage() for r in caplog.records if r.name == "edge_agent.actions"]
        assert len([m for m in said if "'lamp'" in m and "not written" in m]) == 1, said
    finally:
        await src.stop()
        await srv.stop()
    assert all(v.VariantType is ua.VariantType.Boolean for _, v in sent), sent
    # one pulse, ended by its reset; a level or on_change output's True (every result, once)
    expected = [True, False] if mode == "pulse" else [True] * (1 if mode == "on_change" else len(sent))
    assert [v.Value for _, v in sent] == expected, sent


async def test_a_write_refused_for_what_a_base_data_type_node_holds_reads_the_node_once():
    """A heartbeat (or any write) refused for good by the type a BaseDataType node holds, read at the write:
    the former code then read the node's whole type again (its DataType, ValueRank, ArrayDimensions, its
    supertypes, its limits, its value) before refusing, at every write. The held value read at the write is
    what refuses it: one read now, and the refusal is the same."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    await (
        await obj.add_variable(
            ua.NodeId("Beat", idx),
            "Beat",
            ua.Variant("idle", ua.VariantType.String),
            None,
            ua.NodeId(ua.ObjectIds.BaseDataType),
        )
    ).set_writable()
    reads: list[str] = []

    async def on_read(event, _dispatcher) -> None:
        if event.is_external:
            reads.extend(
                f"{rv.NodeId.Identifier}:{ua.AttributeIds(rv.AttributeId).name}"
                for rv in event.request_params.NodesToRead
                if rv.NodeId.NamespaceIndex == idx
            )

    srv.subscribe_server_callback(CallbackType.PreRead, on_read)
    sent = await _sent_to(srv, idx)
    await srv.start()
    node_id = f"ns={idx};s=Beat"
    src = OpcUaSource("plc", _config(port).sources["plc"])
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        with pytest.raises(OpcUaTypeMismatch, match="BaseDataType holding a String"):
            await src.write(node_id, True)  # its type read
        for _ in range(2):
            reads.clear()
            with pytest.raises(OpcUaTypeMismatch, match="BaseDataType holding a String"):
                await src.write(node_id, True)
            assert reads == ["Beat:Value"], reads
    finally:
        await src.stop()
        await srv.stop()
    assert sent == [], sent


@pytest.mark.parametrize("mode", ["level", "on_change", "pulse"])
async def test_an_output_whose_value_would_make_a_node_holding_nothing_refuse_its_reset_is_not_written(mode):
    """A BaseDataType node holding nothing takes any kind, and then holds the kind written to it: the output's
    value 1 made it hold an Int32, so its reset 0.5 was refused at the write and the node kept 1 for good. The
    reset was judged by what the node held before the value (nothing), so reset_refused let the value out.
    Now the reset is judged by what the node would hold once the value is written: the value is not written
    (reset_refused), as for a node that holds an Int32 already."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    state = await _any_state(srv, idx, obj)
    await state.write_value(  # its String dropped (a Bad status has no value) ...
        ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData))
    )
    # ... then the node holds nothing: a null value, Good (a value read Bad holds something unknown)
    await state.write_value(ua.DataValue(ua.Variant(None, ua.VariantType.Null)))
    sent = await _sent_to(srv, idx)
    await srv.start()
    node_id = f"ns={idx};s=State"
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": 1, "reset_value": 0.5}
    cfg = _config(port, {"lamp": {**out, "mode": mode, "pulse_ms": 100, "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(n, v) for _, n, v in write_targets(cfg)["plc"]])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        await runner.handle(["lamp"], result("NG", 0), None)
        await runner.flush(timeout_s=5)
        assert runner.stats["lamp"]["reset_refused"] == 1, dict(runner.stats["lamp"])
    finally:
        await src.stop()
        await srv.stop()
    assert sent == [], sent


async def test_a_refused_node_whose_array_only_changes_length_is_not_judged_again_nor_said(
    caplog, monkeypatch
):
    """A BaseDataType node holding an Int16 array refuses an output's single True and False (its shape is
    kept), so its value is read again while results come. When the PLC changed only the array's length (a
    buffer that grows), each read found it "changed": an INFO line, the node's whole type read again and the
    target judged again (an error counted), every second for as long as the buffer kept changing. The
    lengths decide nothing (only the kind and the number of dimensions do): now they are kept quietly."""
    monkeypatch.setattr("devices.opcua.client.HELD_RECHECK_S", 0.0)  # each refused result reads it again
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    buf = await obj.add_variable(
        ua.NodeId("Buf", idx),
        "Buf",
        ua.Variant([0] * 3, ua.VariantType.Int16),
        None,
        ua.NodeId(ua.ObjectIds.BaseDataType),
    )
    await buf.write_value_rank(-2)
    await buf.set_writable()
    sent = await _sent_to(srv, idx)
    await srv.start()
    node_id = f"ns={idx};s=Buf"
    out = {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": True, "reset_value": False}
    cfg = _config(port, {"lamp": {**out, "mode": "level", "when": {"verdict": "NG"}}})
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(n, v) for _, n, v in write_targets(cfg)["plc"]])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    caplog.set_level(logging.INFO)
    try:
        await until(lambda: node_id in src.target_errors, 30, "the array it holds judged at connect")
        errors = src.stats.errors
        for n in (4, 5):
            await buf.write_value(ua.Variant([0] * n, ua.VariantType.Int16))
            sent.clear()  # the server's own write
            await runner.handle(["lamp"], result("NG", n), None)
            await runner.flush(timeout_s=5)
            await until(lambda n=n: src._types[node_id].held_shape == (n,), 30, "its value read again")
            await until(lambda: not src._target_checks, 30, "the read done")
        said = [r.getMessage() for r in caplog.records if "now holds" in r.getMessage()]
        assert said == [], said
        assert src.stats.errors == errors
        assert runner.stats["lamp"]["reset_refused"] == 2, dict(runner.stats["lamp"])
    finally:
        await src.stop()
        await srv.stop()
    assert sent == [], sent


async def test_a_number_node_refused_for_the_type_it_held_is_judged_by_what_it_holds_after_a_download(
    monkeypatch,
):
    """A node of DataType Number (Part 8's AnalogItem default) holding an INT judges a value by that type (321f323):
    an output's reset of 0.5 is refused. After a PLC download makes it hold a REAL (its DataType stays Number, so
    the target watch sees nothing), the reset check reads the node again in the background, as a BaseDataType
    node's, and takes 0.5. Before (found in review), it stayed refused for the whole session."""
    monkeypatch.setattr("devices.opcua.client.HELD_RECHECK_S", 0.2)
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:number", "Line")
    num = await obj.add_variable(
        ua.NodeId("Num", idx),
        "Num",
        ua.Variant(0, ua.VariantType.Int16),
        datatype=ua.NodeId(ua.ObjectIds.Number),
    )
    await num.set_writable()
    srv.iserver.aspace._is_expected_variant_type = lambda *_: True  # a lenient server: a download retypes it
    await srv.start()
    node_id = f"ns={idx};s=Num"
    src = OpcUaSource("plc", _config(port).sources["plc"])
    src.expect_writes([(node_id, 1)])
    await src.start()
    try:
        await until(
            lambda: src.write_misfit(node_id, 0.5, after=1) is not None, 30, "the INT it holds judged"
        )
        await srv.write_attribute_value(num.nodeid, ua.DataValue(ua.Variant(0.0, ua.VariantType.Double)))
        await until(lambda: src.write_misfit(node_id, 0.5, after=1) is None, 30, "the REAL it holds now")
    finally:
        await src.stop()
        await srv.stop()


async def _converting_plc(port: int, silent: list[bool], kind: str = "INT"):
    """A started PLC whose writable node ``Set`` a download may retype within the session (``retype``), on a gateway
    converting what it is sent to the node's DataType (to the type it holds, for a DataType no built-in one): past
    the new type's range it answers BadOutOfRange, or, ``silent``, stores the value converted with no status (an INT's
    -1 stored as a USINT's 255, its 2 as a BOOL's true). ``kind``: the node an INT (an Int16 DataType), an Integer
    (the abstract DataType) holding an Int16, or an enumeration the gateway holds as a Double ("enum"). (server, node
    id, retype, the values the write requests carried)."""
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    datatype = {"INT": None, "Integer": ua.NodeId(ua.ObjectIds.Integer)}.get(kind)
    held = ua.Variant(0, ua.VariantType.Int16)
    if kind == "enum":
        datatype = (await new_enum(srv, idx, "MachineMode", ["Stopped", "Running", "Fault"])).nodeid
        held = ua.Variant(0.0, ua.VariantType.Double)
    setpoint = await obj.add_variable(ua.NodeId("Set", idx), "Set", held, datatype=datatype)
    await setpoint.set_writable()
    aspace = srv.iserver.aspace
    stored = aspace.write_attribute_value

    async def converting(nodeid, attr, dv):
        if nodeid == setpoint.nodeid and attr == ua.AttributeIds.Value and dv.Value is not None:
            dt = aspace.read_attribute_value(nodeid, ua.AttributeIds.DataType).Value.Value
            builtin = dt.NamespaceIndex == 0 and dt.Identifier in ua.VariantType._value2member_map_
            vt = (
                ua.VariantType(dt.Identifier)
                if builtin
                else aspace.read_attribute_value(nodeid, attr).Value.VariantType
            )
            v = dv.Value.Value
            if vt is not dv.Value.VariantType and vt in (ua.VariantType.SByte, ua.VariantType.Byte):
                lo = -128 if vt is ua.VariantType.SByte else 0
                if silent[0]:
                    v = (v - lo) % 256 + lo
                elif not lo <= v <= lo + 255:
                    return ua.StatusCode(ua.StatusCodes.BadOutOfRange)
                dv = ua.DataValue(ua.Variant(int(v), vt))
            elif vt is not dv.Value.VariantType and vt in (ua.VariantType.Boolean, ua.VariantType.Double):
                if vt is ua.VariantType.Boolean and not silent[0] and v not in (0, 1):
                    return ua.StatusCode(ua.StatusCodes.BadOutOfRange)
                dv = ua.DataValue(ua.Variant(bool(v) if vt is ua.VariantType.Boolean else float(v), vt))
        return await stored(nodeid, attr, dv)

    async def retype(vt: ua.VariantType, datatype: bool = True) -> None:
        """The download: ``Set`` made of type ``vt``, holding 0 of it; its DataType kept (an abstract one) when not
        ``datatype``."""
        if datatype:
            await setpoint.write_attribute(
                ua.AttributeIds.DataType, ua.DataValue(ua.Variant(ua.NodeId(vt.value), ua.VariantType.NodeId))
            )
        held = aspace._nodes[setpoint.nodeid].attributes[ua.AttributeIds.Value]
        held.value = ua.DataValue(ua.Variant(0, vt))

    aspace.write_attribute_value = converting
    sent = await _sent_to(srv, idx)
    await srv.start()
    return srv, f"ns={idx};s=Set", retype, sent


async def _unwatched_source(port: int, node_id: str) -> OpcUaSource:
    """A started, connected source of ``_converting_plc``'s PLC writing ``node_id``, its write targets not watched."""
    settings = _config(port).sources["plc"].model_copy(update={"watch_write_targets": False})
    src = OpcUaSource("plc", settings)
    src.expect_writes([(node_id, 1)])
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
    except BaseException:
        await src.stop()
        raise
    return src


async def test_a_heartbeat_beside_a_watch_sends_no_beat_as_the_type_a_download_replaced():
    """A source watching its write targets, its heartbeat a counter on an INT that a download makes a BOOL, on a
    gateway storing what it is sent converted with no status. Watched, the beats went without the Read of the node's
    attributes, until the watch's notice came a sampling and a publishing interval later: each beat meanwhile (14 at
    100 ms under a 2 s publishing interval) went out as the INT and was stored as true. Each beat reads them: the
    next one is refused naming the Boolean, never sent."""
    port = free_port()
    srv, node_id, retype, sent = await _converting_plc(port, [True])
    settings = _config(port).sources["plc"]
    # a beat an hour (its first at connect), a notice of the watch not published within the test
    hb = {"node_id": node_id, "kind": "counter", "period_ms": 3_600_000}
    settings = type(settings).model_validate(
        {**settings.model_dump(), "heartbeat": hb, "publishing_interval_ms": 2_000.0}
    )
    src = OpcUaSource("plc", settings)
    await src.start()
    try:
        await until(lambda: src.heartbeats == 1, 30, "the first beat")
        await src.write(node_id, 1, beat=True)
        await retype(ua.VariantType.Boolean)  # the download
        with pytest.raises(OpcUaTypeMismatch, match=r"is Boolean; cannot write 2 \(int\)"):
            await src.write(node_id, 2, beat=True)
    finally:
        await src.stop()
        await srv.stop()
    writes = [v.Value for n, v in sent if v.VariantType is not ua.VariantType.NodeId]
    assert writes == [0, 1], writes  # was [0, 1, 2]: 2 stored as true


async def test_a_value_a_converting_server_refuses_out_of_range_after_a_retype_is_judged_by_the_new_type(
    monkeypatch,
):
    """A download makes an INT write target a SINT within its type's hold (not watched: no notice); the gateway
    converts what it is sent to the node's DataType and answers BadOutOfRange past it. The former code took the
    answer as the value out of the node's limits and kept the INT: every later 300 went out as an INT again (and
    every value as an INT) until the hold ended. A target not watched now has its attributes read before each write:
    the change is counted and the value judged by the SINT: 300 refused by the agent, never sent; 50 goes out as a
    SINT. A second download makes it a USINT on a gateway that then stores what it is sent converted, wrapped, with
    no status: -1, judged by the type read before, went out as that type and the PLC read 255; now refused naming
    the USINT, never sent; 7 goes out as a Byte. A ValueRank the server answers Bad for a moment leaves the type read
    before judging (the DataType, answered, compared): 51 goes out (it was refused, the full read raising the status)."""
    from asyncua.server.internal_session import InternalSession

    port = free_port()
    silent, bad_rank = [False], [False]
    srv, node_id, retype, sent = await _converting_plc(port, silent)
    read = InternalSession.read

    async def rank_bad(self, params):
        got = await read(self, params)
        for i, r in enumerate(params.NodesToRead):
            if bad_rank[0] and r.AttributeId == ua.AttributeIds.ValueRank:
                got[i] = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadInternalError))
        return got

    monkeypatch.setattr(InternalSession, "read", rank_bad)
    # each download here comes within a second of a write: the Read before a write stands for that long (as a
    # watched target's DataType sample), so each write reads it here
    monkeypatch.setattr(opcua_client, "_PRE_CHECK_HOLD_S", 0.0)
    src = await _unwatched_source(port, node_id)
    try:
        await src.write(node_id, 100)
        await retype(ua.VariantType.SByte)  # the download: a SINT now, holding a SINT
        for _ in range(2):
            with pytest.raises(OpcUaTypeMismatch, match=r"is SByte; cannot write 300 \(int\): out of range"):
                await src.write(node_id, 300)
        await src.write(node_id, 50)
        assert src.notices.counts.get("write_type_changed") == 1, src.notices.counts
        bad_rank[0] = True
        await src.write(node_id, 51)
        bad_rank[0] = False
        silent[0] = True
        await retype(ua.VariantType.Byte)
        with pytest.raises(OpcUaTypeMismatch, match=r"is Byte; cannot write -1 \(int\): out of range"):
            await src.write(node_id, -1)  # before: written as a SINT, stored as 255
        await src.write(node_id, 7)
        assert src.notices.counts.get("write_type_changed") == 2, src.notices.counts
    finally:
        await src.stop()
        await srv.stop()
    writes = [(v.VariantType, v.Value) for n, v in sent if v.VariantType is not ua.VariantType.NodeId]
    # before 28f81740: (Int16, 300) twice and (Int16, 50); before the attributes' Read: (Int16, 300) once, and
    # (SByte, -1) stored as 255
    assert writes == [
        (ua.VariantType.Int16, 100),
        (ua.VariantType.SByte, 50),
        (ua.VariantType.SByte, 51),
        (ua.VariantType.Byte, 7),
    ], writes


@pytest.mark.parametrize(
    ("kind", "first", "vt", "value"),
    [
        # within the pre-write hold (a second): an INT made a USINT, -1 stored as 255; made a BOOL, 2 stored as true
        ("INT", (100, 1), ua.VariantType.Byte, -1),
        ("INT", (100, 1), ua.VariantType.Boolean, 2),
        # within the type's minute, where no pre-write Read was made at all: an abstract Integer node made a USINT,
        # an enumeration the gateway holds as a Double made a BOOL
        ("Integer", (100,), ua.VariantType.Byte, -1),
        ("enum", (1,), ua.VariantType.Boolean, 2),
        # an abstract Integer node made to hold a SINT, its DataType kept: no Read of its attributes sees it
        ("Integer held", (100,), ua.VariantType.SByte, 200),
        # a heartbeat counter's beats (1, then 2) to an INT made a BOOL: its beats had no Read before them, 2 was
        # stored as true (a constant true, beat after beat, until the type's minute ended)
        ("INT beat", (1,), ua.VariantType.Boolean, 2),
    ],
)
async def test_a_retype_of_an_unwatched_target_never_sends_a_value_a_converting_gateway_stores_as_another(
    monkeypatch, kind, first, vt, value
):
    """An unwatched target written, then a download retypes it on a gateway storing what it is sent converted to the
    node's new type with no status. Within the pre-write hold (its attributes' Read found unchanged a moment
    before) a -1 to an INT made a USINT was sent as the INT, unread, and the PLC held 255; a 2 to an INT made a BOOL
    held true. An abstract Integer node and an enumeration the server holds as no integer had no Read before a write
    at all within the type's minute (-1 held as 255, the enumeration's 2 as true). The hold spares that Read only
    0, 1 and a Boolean; every other write Reads it: the value is refused naming the new type, never sent. An
    abstract Integer node made to hold a SINT, its DataType kept, is judged by what it holds, read at each write
    as a BaseDataType node's (its attributes' Read does not see that: 200 was held as -56). A heartbeat's beats had
    no such Read at all (a counter's 2 to an INT made a BOOL held as true): they have it as any write."""
    monkeypatch.setattr(opcua_client, "_PRE_CHECK_HOLD_S", 3600.0)  # not a timing test: within the hold
    port = free_port()
    srv, node_id, retype, sent = await _converting_plc(port, [True], kind.split()[0])
    src = await _unwatched_source(port, node_id)
    beat = kind.endswith("beat")
    try:
        for v in first:
            await src.write(node_id, v, beat=beat)  # its type read; then its attributes read, unchanged: held
        await retype(
            vt, datatype=not kind.endswith("held")
        )  # the download, within the hold and the type's minute
        # the new type named (an abstract node's: "is Integer holding a Byte")
        with pytest.raises(
            OpcUaTypeMismatch, match=rf"(is|holding an?) {vt.name}; cannot write {value} \(int\)"
        ):
            await src.write(node_id, value, beat=beat)
    finally:
        await src.stop()
        await srv.stop()
    writes = [v.Value for n, v in sent if v.VariantType is not ua.VariantType.NodeId]
    assert writes == list(first), writes
