"""A write to a PLC's enumeration node (a machine mode, a recipe state) must be one of the values its
DataType defines: an Int32 outside them is taken by a lenient server and leaves the PLC program in a state
it does not define. Against a real asyncua server on a free loopback port, with an enumeration described
by a DataTypeDefinition (OPC UA 1.04) and an older one described only by EnumStrings."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import ua
from asyncua.common.structures104 import new_enum

from devices.opcua.client import OpcUaSource, OpcUaTypeMismatch, OpcUaWriteRefused
from devices.opcua.settings import OpcUaSettings
from tests.support.peers import free_port, opcua_server


async def test_a_value_outside_an_enumeration_is_refused_naming_its_values_and_one_inside_is_written():
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    mode_type = await new_enum(srv, idx, "MachineMode", ["Stopped", "Running", "Fault"])
    legacy_type = await srv.nodes.enum_data_type.add_data_type(idx, "LegacyState")
    await legacy_type.add_property(
        ua.NodeId("LegacyState.EnumStrings", idx),
        ua.QualifiedName("EnumStrings", 0),
        [ua.LocalizedText("Off"), ua.LocalizedText("On")],
    )
    nodes = {}
    for name, dtype in (("Mode", mode_type), ("Legacy", legacy_type)):
        nodes[name] = await obj.add_variable(
            ua.NodeId(name, idx), name, ua.Variant(0, ua.VariantType.Int32), datatype=dtype.nodeid
        )
        await nodes[name].set_writable()
    await srv.start()
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{port}/plc/", connect_timeout_s=2.0, keepalive_check_s=0.3
        ),
    )
    try:
        await src.start()
        for _ in range(1500):
            if src.state.value == "connected":
                break
            await asyncio.sleep(0.02)
        await src.write(f"ns={idx};s=Mode", 2)
        await src.write(f"ns={idx};s=Legacy", 1)
        assert (await nodes["Mode"].read_value(), await nodes["Legacy"].read_value()) == (2, 1)
        # before: 7 and 2 were written as Int32 and taken; the PLC's mode became one it does not have
        with pytest.raises(OpcUaTypeMismatch, match=r"enumeration .* of the values 0, 1, 2; cannot write 7"):
            await src.write(f"ns={idx};s=Mode", 7)
        with pytest.raises(OpcUaTypeMismatch, match=r"of the values 0, 1; cannot write 2"):
            await src.write(f"ns={idx};s=Legacy", 2)
        assert (await nodes["Mode"].read_value(), await nodes["Legacy"].read_value()) == (2, 1)
    finally:
        await src.stop()
        await srv.stop()


async def test_a_multi_state_node_takes_only_the_states_its_own_enum_strings_or_values_name():
    """Part 8's MultiStateDiscreteType (a UInteger value indexing the variable's own EnumStrings) and
    MultiStateValueDiscreteType (an integer one of its own EnumValues): the states are the variable's
    property, not its DataType's. 7 was written as a plain UInt32 and taken by the server, the PLC left in
    a state it does not define; it is refused at connect and at the write, naming the states."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    mode = await obj.add_variable(
        ua.NodeId("Mode", idx),
        "Mode",
        ua.Variant(0, ua.VariantType.UInt32),
        datatype=ua.NodeId(ua.ObjectIds.UInt32),
    )
    await mode.add_property(
        0,
        "EnumStrings",
        ua.Variant(
            [ua.LocalizedText(t) for t in ("Stopped", "Running", "Fault")], ua.VariantType.LocalizedText
        ),
    )
    grade = await obj.add_variable(
        ua.NodeId("Grade", idx),
        "Grade",
        ua.Variant(10, ua.VariantType.Int16),
        datatype=ua.NodeId(ua.ObjectIds.Int16),
    )
    await grade.add_property(
        0,
        "EnumValues",
        ua.Variant(
            [ua.EnumValueType(Value=v, DisplayName=ua.LocalizedText(n)) for v, n in ((10, "A"), (20, "B"))],
            ua.VariantType.ExtensionObject,
        ),
    )
    for node in (mode, grade):
        await node.set_writable()
    await srv.start()
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{port}/plc/", connect_timeout_s=2.0, keepalive_check_s=0.3
        ),
    )
    mode_id, grade_id = f"ns={idx};s=Mode", f"ns={idx};s=Grade"
    src.expect_writes([(mode_id, 7), (grade_id, 20)])
    try:
        await src.start()
        for _ in range(1500):
            if src.state.value == "connected" and src.write_misfit(mode_id, 7) is not None:
                break
            await asyncio.sleep(0.02)
        assert "whose EnumStrings define the values 0, 1, 2; cannot write 7" in (
            src.write_misfit(mode_id, 7) or ""
        )
        assert src.write_misfit(grade_id, 20) is None
        await src.write(mode_id, 2)
        await src.write(grade_id, 20)
        with pytest.raises(
            OpcUaTypeMismatch, match=r"multi-state node \(UInt32\) whose EnumStrings .* 7 is none"
        ):
            await src.write(mode_id, 7)
        with pytest.raises(OpcUaTypeMismatch, match=r"\(Int16\) whose EnumValues define the values 10, 20;"):
            await src.write(grade_id, 15)
        assert (await mode.read_value(), await grade.read_value()) == (2, 20)
    finally:
        await src.stop()
        await srv.stop()


async def test_a_multi_state_node_whose_states_a_download_changed_is_judged_by_its_new_states():
    """A PLC download gives a multi-state node other EnumStrings while the session stays up, and the server
    flags the node's next value SemanticsChanged (Part 4, 7.39.1). Its writes were judged by the states read
    at connect until a reconnect: a state the download took away (2 of 0..1) was written, the PLC left in a
    state it no longer defines, and one it added (3) stayed refused in the target's check. The node's type and
    states are read again at the flag, said naming the node. A node written but not subscribed (no flag comes)
    has its states read before each write: the removed state was written to it too."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    mode = await obj.add_variable(
        ua.NodeId("Mode", idx),
        "Mode",
        ua.Variant(0, ua.VariantType.UInt32),
        datatype=ua.NodeId(ua.ObjectIds.UInt32),
    )

    def states(*names: str) -> ua.Variant:
        return ua.Variant([ua.LocalizedText(n) for n in names], ua.VariantType.LocalizedText)

    enum_strings = await mode.add_property(0, "EnumStrings", states("Stopped", "Running", "Fault"))
    step = await obj.add_variable(
        ua.NodeId("Step", idx),
        "Step",
        ua.Variant(0, ua.VariantType.UInt16),
        datatype=ua.NodeId(ua.ObjectIds.UInt16),
    )
    step_strings = await step.add_property(0, "EnumStrings", states("Load", "Press", "Eject"))
    for node in (mode, step):
        await node.set_writable()
    await srv.start()
    mode_id, step_id = f"ns={idx};s=Mode", f"ns={idx};s=Step"
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{port}/plc/",
            connect_timeout_s=2.0,
            keepalive_check_s=0.3,
            publishing_interval_ms=50,
            nodes=[{"node_id": mode_id, "tag": "mode"}],
        ),
    )
    src.expect_writes([(mode_id, 1), (step_id, 1)])

    async def download(names: tuple[str, ...], value: int, settled) -> None:
        await enum_strings.write_value(states(*names))
        flagged = ua.DataValue(ua.Variant(value, ua.VariantType.UInt32), StatusCode=ua.StatusCode(0x4000))
        await srv.write_attribute_value(mode.nodeid, flagged)
        for _ in range(1500):
            if settled():
                return
            await asyncio.sleep(0.02)

    async def drain() -> None:
        async for _ in src.items():
            pass

    reader = asyncio.create_task(drain())
    try:
        await src.start()
        for _ in range(1500):
            if src.state.value == "connected" and src.write_misfit(mode_id, 3) is not None:
                break
            await asyncio.sleep(0.02)
        # read again: 3 taken and 4 refused (a node whose type is being read again judges nothing meanwhile)
        await download(
            ("Stopped", "Running", "Fault", "Setup"),
            1,
            lambda: src.write_misfit(mode_id, 3) is None and src.write_misfit(mode_id, 4) is not None,
        )
        assert src.write_misfit(mode_id, 3) is None  # before: "... define the values 0, 1, 2; cannot write 3"
        await src.write(mode_id, 3)
        await download(("Stopped", "Running"), 0, lambda: src.write_misfit(mode_id, 2) is not None)
        with pytest.raises(
            OpcUaTypeMismatch, match=r"whose EnumStrings define the values 0, 1; cannot write 2"
        ):
            await src.write(mode_id, 2)  # before: written, the PLC in a state it no longer defines
        assert await mode.read_value() == 0
        await src.write(step_id, 2)
        await step_strings.write_value(states("Load", "Press"))  # a download, no flag: Step is no tag
        # an output's reset is judged before its value goes out (``ensure_type``, then ``write_misfit``): by the
        # states read now (before: by those of the last write, 2 judged fine, the value written and its reset
        # refused, the node keeping the value)
        await src.ensure_type(step_id)
        assert "cannot write 2" in (src.write_misfit(step_id, 2) or "")
        with pytest.raises(
            OpcUaTypeMismatch, match=r"whose EnumStrings define the values 0, 1; cannot write 2"
        ):
            await src.write(step_id, 2)  # before: written, judged by the states read at connect
        await src.write(step_id, 1)
        assert await step.read_value() == 1
        assert src.notices.counts.get("target_semantics_changed") == 2, src.notices.counts
        assert (
            f"write target {mode_id}: the server flagged" in src.notices.messages["target_semantics_changed"]
        )
    finally:
        reader.cancel()
        await src.stop()
        await srv.stop()


async def test_an_enumeration_the_server_holds_as_an_int16_is_written_as_one_and_refusals_name_it():
    """A server (a PLC's) that holds an enumeration's value as an Int16, not the Int32 of OPC UA's encoding:
    every value was sent as an Int32 and refused by the server, the refusal naming the Int32 ("BadTypeMismatch:
    the node is Int32"), which the server does not hold, so no state could be written. It is written as the
    Int16 the server holds, and a value outside the enumeration is refused naming that type."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    mode_type = await new_enum(srv, idx, "MachineMode", ["Stopped", "Running", "Fault"])
    mode = await obj.add_variable(
        ua.NodeId("Mode", idx), "Mode", ua.Variant(0, ua.VariantType.Int16), datatype=mode_type.nodeid
    )
    await mode.set_writable()
    await srv.start()
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{port}/plc/", connect_timeout_s=2.0, keepalive_check_s=0.3
        ),
    )
    mode_id = f"ns={idx};s=Mode"
    try:
        await src.start()
        for _ in range(1500):
            if src.state.value == "connected":
                break
            await asyncio.sleep(0.02)
        await src.write(mode_id, 2)
        held = await mode.read_data_value()
        assert (held.Value.Value, held.Value.VariantType) == (2, ua.VariantType.Int16)
        with pytest.raises(
            OpcUaTypeMismatch, match=r"held by the server as Int16\) of the values 0, 1, 2; cannot write 7"
        ):
            await src.write(mode_id, 7)
        assert await mode.read_value() == 2
    finally:
        await src.stop()
        await srv.stop()


@pytest.mark.parametrize(("held", "initial"), [("Double", 0.0), ("String", "Stopped"), ("Boolean", False)])
async def test_an_enumeration_the_server_holds_as_no_integer_is_refused_naming_the_type_it_holds(
    held, initial
):
    """A server (a gateway showing the state's name) holding an enumeration's value as a Double, a String or a
    Boolean refuses the Int32 the agent writes: the refusal said 'the node is Int32', a type the server does not
    hold. It names the type held and that the agent writes enumerations as integers."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    mode_type = await new_enum(srv, idx, "MachineMode", ["Stopped", "Running", "Fault"])
    vt = getattr(ua.VariantType, held)
    mode = await obj.add_variable(
        ua.NodeId("Mode", idx), "Mode", ua.Variant(initial, vt), datatype=mode_type.nodeid
    )
    await mode.set_writable()
    await srv.start()
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{port}/plc/", connect_timeout_s=2.0, keepalive_check_s=0.3
        ),
    )
    try:
        await src.start()
        for _ in range(1500):
            if src.state.value == "connected":
                break
            await asyncio.sleep(0.02)
        with pytest.raises(OpcUaWriteRefused) as e:
            await src.write(f"ns={idx};s=Mode", 2)
        said = str(e.value)
        assert f"an enumeration held by the server as {held}" in said, said
        assert "writes an enumeration's values as integers" in said and "the node is Int32" not in said, said
        assert (await mode.read_data_value()).Value.VariantType is vt
    finally:
        await src.stop()
        await srv.stop()
