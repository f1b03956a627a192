"""A write to a PLC's enumeration node (a machine mode, a recipe state) must be one of the values its
DataType defines: an Int32 outside them is taken by a lenient server and leaves the PLC program in a state
it does not define. Against a real asyncua server on a free loopback port, with an enumeration described
by a DataTypeDefinition (OPC UA 1.04) and an older one described only by EnumStrings."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from asyncua import ua
from asyncua.common.structures104 import new_enum

from devices.opcua.client import OpcUaServerBusy, OpcUaTypeMismatch, OpcUaWriteRefused
from tests.support.plc import only_the_current_view, opcua_source, plc_server
from tests.support.waits import until


async def test_a_value_outside_an_enumeration_is_refused_naming_its_values_and_one_inside_is_written():
    async def build(srv, idx: int, obj) -> dict:
        mode_type = await new_enum(srv, idx, "MachineMode", ["Stopped", "Running", "Fault"])
        legacy_type = await srv.nodes.enum_data_type.add_data_type(idx, "LegacyState")
        await legacy_type.add_property(
            ua.NodeId("LegacyState.EnumStrings", idx),
            ua.QualifiedName("EnumStrings", 0),
            [ua.LocalizedText("Off"), ua.LocalizedText("On")],
        )
        return {
            name: await obj.add_variable(
                ua.NodeId(name, idx), name, ua.Variant(0, ua.VariantType.Int32), datatype=dtype.nodeid
            )
            for name, dtype in (("Mode", mode_type), ("Legacy", legacy_type))
        }

    async with plc_server(build) as p, opcua_source(p) as src:
        await src.write(p.node_id("Mode"), 2)
        await src.write(p.node_id("Legacy"), 1)
        assert await p.read() == {"Mode": 2, "Legacy": 1}
        # before: 7 and 2 were written as Int32 and taken; the PLC's mode became one it does not have
        with pytest.raises(OpcUaTypeMismatch, match=r"enumeration .* of the values 0, 1, 2; cannot write 7"):
            await src.write(p.node_id("Mode"), 7)
        with pytest.raises(OpcUaTypeMismatch, match=r"of the values 0, 1; cannot write 2"):
            await src.write(p.node_id("Legacy"), 2)
        assert await p.read() == {"Mode": 2, "Legacy": 1}


async def test_a_multi_state_node_takes_only_the_states_its_own_enum_strings_or_values_name():
    """Part 8's MultiStateDiscreteType (a UInteger value indexing the variable's own EnumStrings) and
    MultiStateValueDiscreteType (an integer one of its own EnumValues): the states are the variable's
    property, not its DataType's. 7 was written as a plain UInt32 and taken by the server, the PLC left in
    a state it does not define; it is refused at connect and at the write, naming the states. An EnumValues the
    agent cannot decode (a vendor's encoding of EnumValueType) beside an EnumStrings: judged by the EnumStrings
    only when it has as many entries, each still showing its value (integers, whole Doubles, Variants,
    EnumValueType's encoding), and those are 0..n-1; else refused (10, 20, 30, or entries showing none, a
    vendor's body or a text beside values 10, 20, 30: 1 was written)."""

    async def build(_srv, idx: int, obj) -> dict:
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
        values = [
            ua.EnumValueType(Value=v, DisplayName=ua.LocalizedText(n)) for v, n in ((10, "A"), (20, "B"))
        ]
        await grade.add_property(0, "EnumValues", ua.Variant(values, ua.VariantType.ExtensionObject))
        # states stated malformed (one text, a list of no EnumValueType) or not at all (an empty list)
        odd = {}
        for name, prop, v in (
            (
                "Text",
                "EnumStrings",
                ua.Variant(ua.LocalizedText("Stopped,Running,Fault"), ua.VariantType.LocalizedText),
            ),
            ("Listed", "EnumValues", ua.Variant([ua.LocalizedText("A")], ua.VariantType.LocalizedText)),
            ("Blank", "EnumStrings", ua.Variant([], ua.VariantType.LocalizedText)),
            ("Empty", "EnumStrings", ua.Variant(ua.LocalizedText(), ua.VariantType.LocalizedText)),
            ("Raw", "EnumValues", _raw(idx, 3)),
            ("Odd", "EnumValues", _raw(idx, 4)),
            ("Gaps", "EnumValues", _shown(idx, 10, 20, 30)),
            # entries showing no value the agent decodes: 1 was written, their EnumStrings judging
            ("Trailing", "EnumValues", _shown(idx, 10, 20, 30, tail=b"\x01")),
            ("Texted", "EnumValues", _vendor_int_text(idx, 10, 20, 30)),
            ("Strings", "EnumValues", ua.Variant(["10", "20", "30"], ua.VariantType.String)),
            ("Ints", "EnumValues", ua.Variant([0, 1, 2], ua.VariantType.Int64)),
            ("Whole", "EnumValues", ua.Variant([10.0, 20.0, 30.0], ua.VariantType.Double)),
            (
                "Wrapped",
                "EnumValues",
                ua.Variant([ua.Variant(v, ua.VariantType.Int32) for v in (10, 20, 30)]),
            ),
        ):
            odd[name] = await obj.add_variable(
                ua.NodeId(name, idx), name, ua.Variant(0, ua.VariantType.UInt32)
            )
            # its DataType stated: asyncua cannot guess it from the value
            raw = name in ("Raw", "Odd", "Gaps", "Ints", "Whole", "Wrapped", "Trailing", "Texted", "Strings")
            await odd[name].add_property(
                0, prop, v, datatype=ua.NodeId(ua.ObjectIds.EnumValueType) if raw else None
            )
            if raw:
                three = [ua.LocalizedText(t) for t in ("Stopped", "Running", "Fault")]
                await odd[name].add_property(
                    0, "EnumStrings", ua.Variant(three, ua.VariantType.LocalizedText)
                )
        return {"Mode": mode, "Grade": grade, **odd}

    async with plc_server(build) as p:
        mode_id, grade_id = p.node_id("Mode"), p.node_id("Grade")
        async with opcua_source(p, expect=[(mode_id, 7), (grade_id, 20)]) as src:
            await until(lambda: src.write_misfit(mode_id, 7) is not None, 30, "the targets checked")
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
            with pytest.raises(
                OpcUaTypeMismatch, match=r"\(Int16\) whose EnumValues define the values 10, 20;"
            ):
                await src.write(grade_id, 15)
            # taken as no states, 7 was written to a node whose EnumStrings read "Stopped,Running,Fault"
            for name, held in (
                ("Text", "one LocalizedText 'Stopped,Running,Fault'"),
                ("Listed", "a list of LocalizedText, not a list of EnumValueType"),
            ):
                with pytest.raises(OpcUaTypeMismatch, match=f"{name}: .*: the node has it, holding {held}"):
                    await src.write(p.node_id(name), 1)
            await src.write(p.node_id("Blank"), 7)  # an empty list states no states: nothing to check
            await src.write(p.node_id("Empty"), 7)  # nor an empty text (a null one's kind: it was refused)
            # an EnumValues not decoded is the node's truth the agent cannot read: refused, the valid 2 too
            for name in ("Raw", "Trailing", "Texted", "Strings"):
                with pytest.raises(
                    OpcUaTypeMismatch, match=f"{name}: .*0:EnumValues: .*its EnumValues could not be read"
                ):
                    await src.write(p.node_id(name), 2 if name == "Raw" else 1)
            with pytest.raises(
                OpcUaTypeMismatch, match=r"list of ExtensionObject.*names 3 states, not as many"
            ):
                await src.write(p.node_id("Odd"), 2)
            with pytest.raises(
                OpcUaTypeMismatch, match=r"entries show the values 10, 20, 30, where its Enum"
            ):
                await src.write(p.node_id("Gaps"), 1)
            await src.write(p.node_id("Ints"), 2)  # they show 0, 1, 2: as its EnumStrings
            # as Doubles (1 was written), or as Variants (AttributeError, every write failed)
            for name in ("Whole", "Wrapped"):
                with pytest.raises(OpcUaTypeMismatch, match=r"entries show the values 10, 20, 30, where"):
                    await src.write(p.node_id(name), 1)
            assert await p.read() == {
                **{"Mode": 2, "Grade": 20, "Text": 0, "Listed": 0, "Blank": 7},
                **{
                    "Empty": 7,
                    "Raw": 0,
                    "Trailing": 0,
                    "Texted": 0,
                    "Strings": 0,
                    "Odd": 0,
                    "Gaps": 0,
                    "Ints": 2,
                    "Whole": 0,
                    "Wrapped": 0,
                },
            }


def _shown(idx: int, *values: int, tail: bytes = b"") -> ua.Variant:
    """An EnumValues whose entries are EnumValueType's binary encoding under a vendor's TypeId (not decoded),
    each followed by ``tail`` (a vendor's field)."""
    from asyncua.ua.ua_binary import struct_to_binary

    bodies = [
        struct_to_binary(ua.EnumValueType(Value=v, DisplayName=ua.LocalizedText(f"S{v}"))) + tail
        for v in values
    ]
    return _vendor(idx, bodies)


def _vendor_int_text(idx: int, *values: int) -> ua.Variant:
    """An EnumValues whose entries are a vendor's structure: an Int32 value and a LocalizedText."""
    from asyncua.ua.ua_binary import struct_to_binary

    bodies = [
        v.to_bytes(4, "little", signed=True) + struct_to_binary(ua.LocalizedText(f"S{v}")) for v in values
    ]
    return _vendor(idx, bodies)


def _vendor(idx: int, bodies: list[bytes]) -> ua.Variant:
    raw = [ua.ExtensionObject(TypeId=ua.NodeId("VendorEnumValue", idx), Body=b) for b in bodies]
    return ua.Variant(raw, ua.VariantType.ExtensionObject)


def _raw(idx: int, n: int) -> ua.Variant:
    """An EnumValues of ``n`` entries the agent cannot decode: EnumValueType encoded under a vendor's TypeId."""
    raw = ua.ExtensionObject(TypeId=ua.NodeId("VendorEnumValue", idx), Body=b"\x00\x01")
    return ua.Variant([raw] * n, ua.VariantType.ExtensionObject)


async def test_a_multi_state_node_whose_states_a_download_changed_is_judged_by_its_new_states(monkeypatch):
    """A PLC download gives a multi-state node other EnumStrings while the session stays up, and the server
    flags the node's next value SemanticsChanged (Part 4, 7.39.1). Its writes were judged by the states read
    at connect until a reconnect: a state the download took away (2 of 0..1) was written, the PLC left in a
    state it no longer defines, and one it added (3) stayed refused in the target's check. The node's type and
    states are read again at the flag, said naming the node. A node written but not subscribed (no flag comes)
    has its states read before each write: the removed state was written to it too. One a download left holding
    one text is refused at each write with that one Read (its whole type was read again: 3 Reads and a Browse
    each), and written again once it holds a list."""

    def states(*names: str) -> ua.Variant:
        return ua.Variant([ua.LocalizedText(n) for n in names], ua.VariantType.LocalizedText)

    strings: dict = {}  # node name -> its EnumStrings property

    async def build(_srv, idx: int, obj) -> dict:
        nodes = {}
        for name, vtype, oid, names in (
            ("Mode", ua.VariantType.UInt32, ua.ObjectIds.UInt32, ("Stopped", "Running", "Fault")),
            ("Step", ua.VariantType.UInt16, ua.ObjectIds.UInt16, ("Load", "Press", "Eject")),
        ):
            nodes[name] = await obj.add_variable(
                ua.NodeId(name, idx), name, ua.Variant(0, vtype), datatype=ua.NodeId(oid)
            )
            strings[name] = await nodes[name].add_property(0, "EnumStrings", states(*names))
        return nodes

    async with plc_server(build) as p:
        mode_id, step_id = p.node_id("Mode"), p.node_id("Step")
        mode, step = p.nodes["Mode"], p.nodes["Step"]

        async def download(names: tuple[str, ...], value: int, settled) -> None:
            await strings["Mode"].write_value(states(*names))
            flagged = ua.DataValue(ua.Variant(value, ua.VariantType.UInt32), StatusCode=ua.StatusCode(0x4000))
            await p.server.write_attribute_value(mode.nodeid, flagged)
            await until(settled, 30, "the node's states read again")

        async with opcua_source(
            p,
            expect=[(mode_id, 1), (step_id, 1)],
            publishing_interval_ms=50,
            nodes=[{"node_id": mode_id, "tag": "mode"}],
        ) as src:
            reader = asyncio.create_task(_drain(src))
            try:
                await until(lambda: src.write_misfit(mode_id, 3) is not None, 30, "the targets checked")
                # read again: 3 taken and 4 refused (a node whose type is being read again judges nothing meanwhile)
                await download(
                    ("Stopped", "Running", "Fault", "Setup"),
                    1,
                    lambda: src.write_misfit(mode_id, 3) is None and src.write_misfit(mode_id, 4) is not None,
                )
                assert (
                    src.write_misfit(mode_id, 3) is None
                )  # before: "... define the values 0, 1, 2; cannot write 3"
                await src.write(mode_id, 3)
                await download(("Stopped", "Running"), 0, lambda: src.write_misfit(mode_id, 2) is not None)
                with pytest.raises(
                    OpcUaTypeMismatch, match=r"whose EnumStrings define the values 0, 1; cannot write 2"
                ):
                    await src.write(mode_id, 2)  # before: written, the PLC in a state it no longer defines
                assert await mode.read_value() == 0
                await src.write(step_id, 2)
                await strings["Step"].write_value(
                    states("Load", "Press")
                )  # a download, no flag: Step is no tag
                # an output's reset is judged before its value goes out (``ensure_type``, then ``write_misfit``): by
                # the states read now (before: by those of the last write, 2 judged fine, the value written and its
                # reset refused, the node keeping the value)
                await src.ensure_type(step_id)
                assert "cannot write 2" in (src.write_misfit(step_id, 2) or "")
                with pytest.raises(
                    OpcUaTypeMismatch, match=r"whose EnumStrings define the values 0, 1; cannot write 2"
                ):
                    await src.write(step_id, 2)  # before: written, judged by the states read at connect
                await src.write(step_id, 1)
                assert await step.read_value() == 1
                # a download leaving one text: judged by the states read before, 0 and 1 were still written
                await strings["Step"].write_value(
                    ua.Variant(ua.LocalizedText("Load,Press"), ua.VariantType.LocalizedText)
                )
                from asyncua.server.internal_session import InternalSession

                browses: list = []
                browse = InternalSession.browse

                async def counted(self, params):
                    browses.append(params)
                    return await browse(self, params)

                monkeypatch.setattr(InternalSession, "browse", counted)
                for _ in range(2):
                    with pytest.raises(
                        OpcUaTypeMismatch, match=r"EnumStrings: the node has it, holding one Local"
                    ):
                        await src.write(step_id, 0)
                assert browses == []  # its properties not Browsed again at each refusal
                assert await step.read_value() == 1
                await strings["Step"].write_value(states("Load", "Press"))
                await src.write(step_id, 0)
                assert await step.read_value() == 0
                assert src.notices.counts.get("target_semantics_changed") == 2, src.notices.counts
                assert (
                    f"write target {mode_id}: the server flagged"
                    in src.notices.messages["target_semantics_changed"]
                )
            finally:
                reader.cancel()


async def _drain(src) -> None:
    """Take the readings a source gives (its subscription runs), dropping them."""
    async for _ in src.items():
        pass


async def test_an_enumeration_the_server_holds_as_an_int16_is_written_as_one_and_refusals_name_it():
    """A server (a PLC's) that holds an enumeration's value as an Int16, not the Int32 of OPC UA's encoding:
    every value was sent as an Int32 and refused by the server, the refusal naming the Int32 ("BadTypeMismatch:
    the node is Int32"), which the server does not hold, so no state could be written. It is written as the
    Int16 the server holds, and a value outside the enumeration is refused naming that type."""
    async with plc_server(_machine_mode(ua.Variant(0, ua.VariantType.Int16))) as p, opcua_source(p) as src:
        await src.write(p.node_id("Mode"), 2)
        held = await p.nodes["Mode"].read_data_value()
        assert (held.Value.Value, held.Value.VariantType) == (2, ua.VariantType.Int16)
        with pytest.raises(
            OpcUaTypeMismatch, match=r"held by the server as Int16\) of the values 0, 1, 2; cannot write 7"
        ):
            await src.write(p.node_id("Mode"), 7)
        assert await p.read() == {"Mode": 2}


def _machine_mode(held: ua.Variant):
    """A ``plc_server`` build: the node Mode of an enumeration MachineMode (Stopped, Running, Fault), holding
    ``held``."""

    async def build(srv, idx: int, obj) -> dict:
        mode_type = await new_enum(srv, idx, "MachineMode", ["Stopped", "Running", "Fault"])
        return {
            "Mode": await obj.add_variable(ua.NodeId("Mode", idx), "Mode", held, datatype=mode_type.nodeid)
        }

    return build


@pytest.mark.parametrize(("held", "initial"), [("Double", 0.0), ("String", "Stopped"), ("Boolean", False)])
async def test_an_enumeration_the_server_holds_as_no_integer_is_refused_naming_the_type_it_holds(
    held, initial
):
    """A server (a gateway showing the state's name) holding an enumeration's value as a Double, a String or a
    Boolean refuses the Int32 the agent writes: the refusal said 'the node is Int32', a type the server does not
    hold. It names the type held and that the agent writes enumerations as integers."""
    vt = getattr(ua.VariantType, held)
    async with plc_server(_machine_mode(ua.Variant(initial, vt))) as p, opcua_source(p) as src:
        with pytest.raises(OpcUaWriteRefused) as e:
            await src.write(p.node_id("Mode"), 2)
        said = str(e.value)
        assert f"an enumeration held by the server as {held}" in said, said
        assert "writes an enumeration's values as integers" in said and "the node is Int32" not in said, said
        assert (await p.nodes["Mode"].read_data_value()).Value.VariantType is vt


@pytest.mark.parametrize("answer", ["BadServiceUnsupported", "BadNoMatch"])
async def test_a_plc_without_translate_browse_paths_still_has_its_enumerations_and_string_lengths_checked(
    monkeypatch, answer
):
    """An embedded server without the TranslateBrowsePathsToNodeIds service (Part 7's Nano and Micro profiles
    leave it out), or one answering a namespace-0 path BadNoMatch: the enumeration's EnumStrings and the String
    node's MaxStringLength were read by that service only, so nothing was checked and the PLC took 7 for an
    enumeration of 0..2 and ten characters for a String of 5. They are found by a Browse of the node's
    properties and checked as on any server."""
    from asyncua.server.internal_session import InternalSession

    async def translate(self, params):
        if answer == "BadServiceUnsupported":
            raise ua.UaStatusCodeError(ua.StatusCodes.BadServiceUnsupported)
        return [ua.BrowsePathResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadNoMatch)) for _ in params]

    monkeypatch.setattr(InternalSession, "translate_browsepaths_to_nodeids", translate)

    async def build(srv, idx: int, obj) -> dict:
        state = await srv.nodes.enum_data_type.add_data_type(idx, "State")
        await state.add_property(
            ua.NodeId("State.EnumStrings", idx),
            ua.QualifiedName("EnumStrings", 0),
            [ua.LocalizedText(t) for t in ("Off", "On", "Auto")],
        )
        label = await obj.add_variable(
            ua.NodeId("Label", idx), "Label", ua.Variant("", ua.VariantType.String)
        )
        await label.add_property(
            ua.NodeId("Label.MaxStringLength", idx),
            ua.QualifiedName("MaxStringLength", 0),
            ua.Variant(5, ua.VariantType.UInt32),
        )
        mode = await obj.add_variable(
            ua.NodeId("Mode", idx), "Mode", ua.Variant(0, ua.VariantType.Int32), datatype=state.nodeid
        )
        return {"Mode": mode, "Label": label}

    async with plc_server(build) as p, opcua_source(p) as src:
        await _three_states_and_five_characters_are_held_to(p, src)


async def test_a_write_targets_properties_cost_one_browse_a_node_at_connect(monkeypatch):
    """EnumValues, EnumStrings, MaxStringLength and MaxArrayLength were each asked by TranslateBrowsePaths, and
    each one a node does not state (most) by a Browse as well: two requests more per integer target at every
    connect and re-check. One Browse of the node's references answers them all, and the checks still hold. The
    Browse asks the current view (a null View Timestamp): a .NET server refused one at another time."""
    from asyncua.server.internal_session import InternalSession

    asked: list[str] = []
    translate = InternalSession.translate_browsepaths_to_nodeids

    async def counted_translate(self, params):
        asked.extend(f"translate {p.StartingNode.Identifier}" for p in params)
        return await translate(self, params)

    # an OPC Foundation .NET server: a Browse at another time refused
    only_the_current_view(monkeypatch, asked)
    monkeypatch.setattr(InternalSession, "translate_browsepaths_to_nodeids", counted_translate)

    async def build(_srv, idx: int, obj) -> dict:
        nodes = {}
        for name, v in (
            ("Mode", ua.Variant(0, ua.VariantType.UInt32)),
            ("Count", ua.Variant(0, ua.VariantType.Int16)),
        ):
            nodes[name] = await obj.add_variable(ua.NodeId(name, idx), name, v)
        for name in ("Label", "Note"):
            nodes[name] = await obj.add_variable(
                ua.NodeId(name, idx), name, ua.Variant("", ua.VariantType.String)
            )
        await nodes["Mode"].add_property(
            0,
            "EnumStrings",
            ua.Variant([ua.LocalizedText(t) for t in ("Off", "On")], ua.VariantType.LocalizedText),
        )
        await nodes["Label"].add_property(0, "MaxStringLength", ua.Variant(5, ua.VariantType.UInt32))
        return nodes

    async with plc_server(build) as p, opcua_source(p) as src:
        asked.clear()
        for name, value in (("Mode", 1), ("Count", 3), ("Label", "abcde"), ("Note", "text")):
            await src.write(p.node_id(name), value)
        assert sorted(asked) == ["browse Count", "browse Label", "browse Mode", "browse Note"], asked
        with pytest.raises(OpcUaTypeMismatch, match=r"define the values 0, 1; cannot write 2"):
            await src.write(p.node_id("Mode"), 2)
        with pytest.raises(OpcUaTypeMismatch, match="MaxStringLength"):
            await src.write(p.node_id("Label"), "abcdefghij")
        assert await p.read() == {"Mode": 1, "Count": 3, "Label": "abcde", "Note": "text"}


async def test_properties_are_read_through_every_browse_page_and_translated_when_a_browse_fails_for_the_node(
    monkeypatch,
):
    """A server pages a Browse (one reference at a time, the rest by BrowseNext) or, its continuation points used
    up, answers the node BadNoContinuationPoints: asyncua's get_references checks neither, and the checks were
    skipped (7 went to a three-state node, ten characters to a String of at most 5); a later page of Phase
    answers BadContinuationPointInvalid. One hands a continuation
    point for ever (Step): the write waited while BrowseNext requests ran back to back; its pages listing
    nothing new are bounded and the rest released, its properties translated. Wide's 120 properties take more
    pages than that bound, its translate refused (Nano, Micro): every page is read, not only the first 100. So is
    the browse of a folder (Cell) handed a point for ever: it ran until its caller's time bound."""
    from asyncua.server.internal_session import InternalSession

    endless: list[bool] = []  # the ReleaseContinuationPoints of each BrowseNext of Step's endless point
    cell: list[bool] = []  # and of Cell's
    translate = InternalSession.translate_browsepaths_to_nodeids

    def vendor_browse(d, r) -> bool:
        if d.NodeId.Identifier == "Label":
            r.StatusCode, r.References = ua.StatusCode(ua.StatusCodes.BadNoContinuationPoints), []
        elif d.NodeId.Identifier == "Step":
            r.References, r.ContinuationPoint = r.References[:1], b"endless"
        elif d.NodeId.Identifier == "Phase":  # its next page answered BadContinuationPointInvalid
            r.References, r.ContinuationPoint = r.References[:1], b"invalid"
        elif d.NodeId.Identifier == "Cell":
            r.ContinuationPoint = b"cell"  # its one child listed, then pages listing nothing, for ever
        else:
            return False
        return True

    def vendor_next(cp: bytes, release: bool, r) -> bool:
        if cp == b"invalid":
            r.StatusCode = ua.StatusCode(ua.StatusCodes.BadContinuationPointInvalid)
        elif cp in (b"endless", b"cell"):
            (got := endless if cp == b"endless" else cell).append(release)
            if not release and len(got) < 1000:
                r.ContinuationPoint = cp
        else:
            return False
        return True

    async def no_translate_for_wide(self, params):
        if any(path.StartingNode.Identifier == "Wide" for path in params):
            raise ua.UaStatusCodeError(ua.StatusCodes.BadServiceUnsupported)
        return await translate(self, params)

    _pages_served(monkeypatch, {}, odd=vendor_browse, odd_next=vendor_next)
    monkeypatch.setattr(InternalSession, "translate_browsepaths_to_nodeids", no_translate_for_wide)

    async def build(_srv, idx: int, obj) -> dict:
        mode = await obj.add_variable(ua.NodeId("Mode", idx), "Mode", ua.Variant(0, ua.VariantType.UInt32))
        label = await obj.add_variable(
            ua.NodeId("Label", idx), "Label", ua.Variant("", ua.VariantType.String)
        )
        step = await obj.add_variable(ua.NodeId("Step", idx), "Step", ua.Variant(0, ua.VariantType.UInt32))
        phase = await obj.add_variable(ua.NodeId("Phase", idx), "Phase", ua.Variant(0, ua.VariantType.UInt32))
        wide = await obj.add_variable(ua.NodeId("Wide", idx), "Wide", ua.Variant(0, ua.VariantType.UInt32))
        for k in range(120):
            await wide.add_property(idx, f"P{k}", ua.Variant(k, ua.VariantType.Int32))
        for node in (mode, label):  # the property sought last of the node's references
            await node.add_property(0, "ValuePrecision", ua.Variant(0.0, ua.VariantType.Double))
        states = [ua.LocalizedText(t) for t in ("Stopped", "Running", "Fault")]
        for node in (mode, step, phase, wide):
            await node.add_property(0, "EnumStrings", ua.Variant(states, ua.VariantType.LocalizedText))
        await label.add_property(0, "MaxStringLength", ua.Variant(5, ua.VariantType.UInt32))
        c = await obj.add_object(ua.NodeId("Cell", idx), "Cell")
        await c.add_variable(ua.NodeId("Count", idx), "Count", ua.Variant(0, ua.VariantType.UInt32))
        return {"Mode": mode, "Label": label, "Step": step, "Phase": phase, "Wide": wide}

    async with plc_server(build) as p, opcua_source(p) as src:
        await _three_states_and_five_characters_are_held_to(p, src, Step=1, Phase=2, Wide=1)
        for name in ("Step", "Phase", "Wide"):
            with pytest.raises(OpcUaTypeMismatch, match=r"values 0, 1, 2; cannot write 7"):
                await src.write(p.node_id(name), 7)
        assert endless[-1] and len(endless) < 1000, len(endless)  # released, not read for ever
        listed = await src.browse(p.node_id("Cell"), 1)
        assert [v["browse_name"] for v in listed] == ["Count"], listed
        assert cell[-1] and len(cell) < 1000, len(cell)  # was: 1000 pages, the server's own end


def _pages_served(monkeypatch, pages: dict, only=None, odd=None, odd_next=None, late_s: float = 0.0) -> None:
    """Have the server page a Browse of the nodes ``only`` names (None: every node) one reference a page, the rest
    kept in ``pages`` by continuation point, each next page by BrowseNext (answered ``late_s`` late; a point released
    is dropped). ``odd(description, result)`` / ``odd_next(point, release, result)``: a vendor's answer instead, True
    when it gave one."""
    from asyncua.server.internal_session import InternalSession
    from asyncua.server.uaprocessor import UaProcessor
    from asyncua.ua.ua_binary import struct_from_binary

    browse, process = InternalSession.browse, UaProcessor._process_message

    async def paging(self, params):
        results = await browse(self, params)
        for d, r in zip(params.NodesToBrowse, results, strict=True):
            if odd is not None and odd(d, r):
                continue
            if (only is None or d.NodeId.Identifier in only) and len(r.References) > 1:
                cp = b"cp%d" % len(pages)
                pages[cp], r.References, r.ContinuationPoint = r.References[1:], r.References[:1], cp
        return results

    async def with_browse_next(self, typeid, requesthdr, seqhdr, body):
        if typeid != ua.NodeId(ua.ObjectIds.BrowseNextRequest_Encoding_DefaultBinary):
            return await process(self, typeid, requesthdr, seqhdr, body)
        params, response = struct_from_binary(ua.BrowseNextParameters, body), ua.BrowseNextResponse()
        release = params.ReleaseContinuationPoints
        if late_s and not release and any(cp in pages for cp in params.ContinuationPoints):
            await asyncio.sleep(late_s)
        for cp in params.ContinuationPoints:
            rest, r = pages.pop(cp, []), ua.BrowseResult()
            if (odd_next is None or not odd_next(cp, release, r)) and not release:
                r.References = rest[:1]
                if rest[1:]:
                    r.ContinuationPoint = cp + b"+"
                    pages[r.ContinuationPoint] = rest[1:]
            response.Parameters.Results.append(r)
        self.send_response(requesthdr.RequestHandle, seqhdr, response)
        return True

    monkeypatch.setattr(InternalSession, "browse", paging)
    monkeypatch.setattr(UaProcessor, "_process_message", with_browse_next)


async def _three_states_and_five_characters_are_held_to(p, src, **others: int) -> None:
    """7 is refused for the three-state Mode and ten characters for the Label of at most 5; 2 and five are written
    (and ``others`` to the nodes they name)."""
    with pytest.raises(OpcUaTypeMismatch, match=r"values 0, 1, 2; cannot write 7"):
        await src.write(p.node_id("Mode"), 7)
    with pytest.raises(OpcUaTypeMismatch, match="MaxStringLength"):
        await src.write(p.node_id("Label"), "abcdefghij")
    await src.write(p.node_id("Mode"), 2)
    await src.write(p.node_id("Label"), "abcde")
    for name, value in others.items():
        await src.write(p.node_id(name), value)
    assert await p.read() == {"Mode": 2, "Label": "abcde", **others}


_TWO_PROPERTIES = ("Twice", "Both", "Hidden", "Busy", "Stalled", "Masked", "Veiled")
_DECOYS = ("Mode", "Grade", "Loose", "Exact", "Jammed", "Sloppy", *_TWO_PROPERTIES)
# reference types whose supertypes the server's Browse does not give
# ... their type nodes not exposed (the Browse answers BadNodeIdUnknown)
_NOT_EXPOSED = ("HasVendorPart", "HasMaskedProperty", "HasVeiledProperty")
_UNSTATED = ("HasHiddenProperty", "HasBusyProperty", *_NOT_EXPOSED)


async def test_a_node_s_states_are_its_has_property_enum_strings_not_another_reference_of_that_name(
    monkeypatch,
):
    """A vendor's node lists a component named EnumStrings (ten states of a diagnostic table) before its
    EnumStrings property (three states): the first reference of the name was read as the node's states, and 7
    went to a three-state node. Only a HasProperty reference (or one of a subtype: a vendor's, judged by the
    server along a HasProperty path) names a property. A node listing two properties of the name (ten states
    first), or, its Browse failing, a translate answering both the component and the property (going by the name
    alone), cannot say which states are the node's: its writes are refused (the first was taken, and 7 written).
    So does a node listing a HasProperty EnumStrings and another on a vendor's subtype of it. A translate ignoring
    IncludeSubtypes (BadNoMatch for a vendor's subtype) has the reference type's supertypes browsed; a server
    answering that Browse with another reference (an Organizes from a folder) says nothing of them (7 went to
    each, its states taken as absent). A vendor's component type whose supertypes' Browse answers BadNodeIdUnknown
    (a type node not exposed) leaves the translate to tell (every write was refused, the valid 2 too); without a
    translate nothing tells, and the refusal names both answers. A vendor's HasProperty subtype not exposed so, to
    a PropertyType node beside the HasProperty one, whose translate cannot follow it (the HasProperty one alone):
    two properties by that node's type definition (7 went by the ten states)."""
    from asyncua.server.internal_session import InternalSession

    translate, browse = InternalSession.translate_browsepaths_to_nodeids, InternalSession.browse
    jammed: list[int] = []
    told: list[int] = []
    veiled: list[int] = []

    async def failing_for_loose(self, params):
        results = await browse(self, params)
        for d, r in zip(params.NodesToBrowse, results, strict=True):
            if d.NodeId.Identifier == "Jammed" and d.ReferenceTypeId.is_null() and len(jammed) < 2:
                jammed.append(1)  # busy once, then out of continuation points once
                no = "BadTooManyOperations" if len(jammed) == 1 else "BadNoContinuationPoints"
                r.StatusCode, r.References = ua.StatusCode(getattr(ua.StatusCodes, no)), []
            if d.NodeId.Identifier == "Loose" and d.ReferenceTypeId.is_null():  # the property Browse
                r.StatusCode, r.References = ua.StatusCode(ua.StatusCodes.BadNoContinuationPoints), []
            if d.NodeId.Identifier == "HasSloppyProperty":  # its filter ignored, its supertype not exposed
                folder = ua.NodeId(ua.ObjectIds.ReferenceTypesFolder)
                organizes = ua.NodeId(ua.ObjectIds.Organizes)
                r.References = [
                    ua.ReferenceDescription(ReferenceTypeId=organizes, IsForward=False, NodeId=folder)
                ]
            if d.NodeId.Identifier in _UNSTATED:
                r.References = []  # its supertype not given
                if d.NodeId.Identifier == "HasBusyProperty":  # not now
                    r.StatusCode = ua.StatusCode(ua.StatusCodes.BadTooManyOperations)
                if d.NodeId.Identifier in _NOT_EXPOSED:
                    r.StatusCode = ua.StatusCode(ua.StatusCodes.BadNodeIdUnknown)
            if d.NodeId.Identifier == "Veiled.Three":  # its type definition: busy (info bits), then denied
                veiled.append(1)
                busy = ua.StatusCodes.BadTooManyOperations | 0x400
                r.References = []
                r.StatusCode = ua.StatusCode(busy if len(veiled) == 1 else ua.StatusCodes.BadUserAccessDenied)
        return results

    async def by_name_alone(self, params):
        results = await translate(self, params)
        for path, r in zip(params, results, strict=True):
            start = path.StartingNode.Identifier
            if start == ua.ObjectIds.Server and len(jammed) == 2 and not told:  # asked at Jammed's 2nd Browse
                told.append(1)
                r.Targets, r.StatusCode = [], ua.StatusCode(ua.StatusCodes.BadNoMatch)  # no subtypes followed
            if start in ("Exact", "Jammed", "Sloppy", "Bare"):  # no subtypes; no such service
                r.Targets = []
                no = "BadNoMatch" if start in ("Exact", "Jammed") else "BadServiceUnsupported"
                r.StatusCode = ua.StatusCode(getattr(ua.StatusCodes, no))
            if start in ("Masked", "Veiled"):  # the unexposed subtype not followed
                r.Targets = [t for t in r.Targets if t.TargetId.Identifier == f"{start}.Ten"]
            if path.StartingNode.Identifier == "Stalled":  # not now
                r.Targets, r.StatusCode = [], ua.StatusCode(ua.StatusCodes.BadTooManyOperations)
            if path.StartingNode.Identifier == "Loose":
                table = ua.NodeId("Loose.Table", path.StartingNode.NamespaceIndex)
                r.Targets.insert(
                    0, ua.BrowsePathTarget(TargetId=table, RemainingPathIndex=ua.Index(0xFFFFFFFF))
                )
        return results

    monkeypatch.setattr(InternalSession, "translate_browsepaths_to_nodeids", by_name_alone)
    monkeypatch.setattr(InternalSession, "browse", failing_for_loose)

    async def build(srv, idx: int, obj) -> dict:
        vendor_property = await srv.get_node(ua.ObjectIds.HasProperty).add_reference_type(
            ua.NodeId("HasVendorProperty", idx), ua.QualifiedName("HasVendorProperty", idx), symmetric=False
        )
        ten = ua.Variant([ua.LocalizedText(f"S{k}") for k in range(10)], ua.VariantType.LocalizedText)
        three = ua.Variant(
            [ua.LocalizedText(t) for t in ("Stopped", "Running", "Fault")], ua.VariantType.LocalizedText
        )
        sloppy_property = await srv.get_node(ua.ObjectIds.HasProperty).add_reference_type(
            ua.NodeId("HasSloppyProperty", idx), ua.QualifiedName("HasSloppyProperty", idx), symmetric=False
        )
        hidden = {
            name: await srv.get_node(ua.ObjectIds.HasProperty).add_reference_type(
                ua.NodeId(f"Has{name}Property", idx),
                ua.QualifiedName(f"Has{name}Property", idx),
                symmetric=False,
            )
            for name in ("Hidden", "Busy", "Masked", "Veiled")
        }
        # a vendor's component reference type, whose supertypes' Browse answers BadNodeIdUnknown
        part = await srv.get_node(ua.ObjectIds.HasComponent).add_reference_type(
            ua.NodeId("HasVendorPart", idx), ua.QualifiedName("HasVendorPart", idx), symmetric=False
        )
        nodes = {}
        for name in (*_DECOYS, "Unknown", "Bare"):
            node = nodes[name] = await obj.add_variable(
                ua.NodeId(name, idx), name, ua.Variant(0, ua.VariantType.UInt32)
            )
            if name in _TWO_PROPERTIES:  # two properties of the name, the ten states first
                await node.add_property(
                    ua.NodeId(f"{name}.Ten", idx), ua.QualifiedName("EnumStrings", 0), ten
                )
                states = await obj.add_property(
                    ua.NodeId(f"{name}.Three", idx), ua.QualifiedName("Three", 0), three
                )
                await states.write_attribute(
                    ua.AttributeIds.BrowseName, ua.DataValue(ua.Variant(ua.QualifiedName("EnumStrings", 0)))
                )
                kind = {"Twice": ua.NodeId(ua.ObjectIds.HasProperty), "Both": vendor_property.nodeid}
                await node.add_reference(states, kind.get(name) or hidden.get(name, hidden["Hidden"]).nodeid)
                continue
            table = await node.add_variable(
                ua.NodeId(f"{name}.Table", idx), ua.QualifiedName("EnumStrings", 0), ten
            )
            states = await node.add_property(
                ua.NodeId(f"{name}.EnumStrings", idx), ua.QualifiedName("EnumStrings", 0), three
            )
            if name in ("Unknown", "Bare"):  # the table hangs on the vendor's component type
                await node.delete_reference(table, ua.ObjectIds.HasComponent)
                await node.add_reference(table, part.nodeid)
                continue
            if name != "Mode":  # the others' states hang on the vendor's subtype of HasProperty
                await node.delete_reference(states, ua.ObjectIds.HasProperty)
                await node.add_reference(
                    states, (sloppy_property if name == "Sloppy" else vendor_property).nodeid
                )
        return nodes

    async with plc_server(build) as p, opcua_source(p) as src:
        # the Browse of the component's type answering BadNodeIdUnknown: the translate tells it is no property
        for name in ("Mode", "Grade", "Exact", "Unknown"):
            with pytest.raises(OpcUaTypeMismatch, match=r"values 0, 1, 2; cannot write 7"):
                await src.write(p.node_id(name), 7)
            await src.write(p.node_id(name), 2)
        # its Browse answered busy once beside that translate: retried, not judged by the translate's BadNoMatch
        # (7 written, the type kept)
        with pytest.raises(OpcUaServerBusy, match=r"BadTooManyOperations"):
            await src.write(p.node_id("Jammed"), 7)
        # ... and, out of continuation points (not busy), refused: that translate follows no subtypes (7 written)
        with pytest.raises(
            OpcUaTypeMismatch,
            match=r"Browse answered BadNoContinuationPoints, .* does not follow reference subtypes",
        ):
            await src.write(p.node_id("Jammed"), 7)
        with pytest.raises(OpcUaTypeMismatch, match=r"values 0, 1, 2; cannot write 7"):
            await src.write(p.node_id("Jammed"), 7)
        await src.write(p.node_id("Jammed"), 2)
        # ... and without a translate nothing tells: refused, naming what the server answered
        for value in (7, 2):
            with pytest.raises(
                OpcUaTypeMismatch,
                match=r"0:EnumStrings: .*reference type ns=\d+;s=HasVendorPart.* answered BadNodeIdUnknown.* "
                r"TranslateBrowsePathsToNodeIds answered BadServiceUnsupported",
            ):
                await src.write(p.node_id("Bare"), value)
        # a vendor's HasProperty subtype whose supertype the Browse does not give: the translate says (7 went
        # by the ten states); one answering that Browse busy is retried
        for name in ("Loose", "Twice", "Both", "Hidden", "Masked"):
            for value in (7, 2):
                with pytest.raises(OpcUaTypeMismatch, match=r"0:EnumStrings: .*which one .* cannot be told"):
                    await src.write(p.node_id(name), value)
        with pytest.raises(OpcUaTypeMismatch, match=r"answered BadServiceUnsupported"):
            await src.write(p.node_id("Sloppy"), 7)
        # ... and, nothing else telling, so is the Browse of that node's type definition answering busy (info bits
        # set); another Bad status leaves nothing to tell: refused (7 went by the ten states)
        with pytest.raises(OpcUaServerBusy, match=r"BadTooManyOperations"):
            await src.write(p.node_id("Veiled"), 7)
        with pytest.raises(OpcUaTypeMismatch, match=r"type definition answered BadUserAccessDenied"):
            await src.write(p.node_id("Veiled"), 7)
        # ... and so is the translate that would tell, answering busy (the ten states were taken, 7 written)
        for name in ("Busy", "Stalled"):
            with pytest.raises(OpcUaServerBusy, match=r"BadTooManyOperations"):
                await src.write(p.node_id(name), 7)
        assert await p.read() == {
            "Mode": 2,
            "Grade": 2,
            "Loose": 0,
            "Twice": 0,
            "Exact": 2,
            "Jammed": 2,
            "Sloppy": 0,
            "Both": 0,
            "Hidden": 0,
            "Busy": 0,
            "Stalled": 0,
            "Masked": 0,
            "Veiled": 0,
            "Unknown": 2,
            "Bare": 0,
        }


async def test_a_node_whose_properties_cannot_be_read_is_refused_unless_its_type_needs_none(monkeypatch):
    """A node listing more than 10,000 references (a page of them, a continuation point for more) on a server
    without TranslateBrowsePaths (Nano, Micro): its Browse is released and its properties were then taken as
    absent, so nothing was checked (7 went to a three-state node). Its writes are refused, naming why (its Browse
    not asked again at each write, and the refusal saying so); a Double node's are written, its DataType needing
    no property. A translate answered busy (BadServerTooBusy) is retried, not kept: it locked the node out of
    writes for 10 minutes. A node whose states hang on a vendor's subtype of HasProperty was refused on such a
    server: the reference type's supertypes, browsed, say it is a property. A property the Browse listed before its
    release is the node's (it was discarded, and every write refused). A Browse answered busy (BadTooManyOperations)
    is retried as a busy write: the write was refused for good (the translate's BadServiceUnsupported kept).

    A node that has its EnumStrings (or its enumeration DataType its DataTypeDefinition, its array its
    ArrayDimensions, its text its MaxStringLength) whose reads the server answers BadNotReadable or
    BadUserAccessDenied (the agent's user not allowed them): they were taken as absent, and 7 went to a three-state
    node, [9, 9] to an Array[0..2], ten characters to a STRING[5]. Each write is refused naming what could not be
    read; once the server gives them, the values are judged by them. (One server for all: its start is most of a
    test's cost.)"""
    from asyncua.common.callback import CallbackType
    from asyncua.server.internal_session import InternalSession

    from devices.opcua import properties

    # the limit made small, a cheap crowd over it: a server's 10,001 references cost seconds on a busy machine
    monkeypatch.setattr(properties, "BROWSE_REFERENCES", 50)
    browse = InternalSession.browse
    crowd = [
        ua.ReferenceDescription(
            ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasComponent),
            NodeId=ua.NodeId(k, 1),
            BrowseName=ua.QualifiedName(f"C{k}", 1),
        )
        for k in range(51)
    ]

    crowded: list[str] = []
    hiccups: list = []

    async def crowded_browse(self, params):
        results = await browse(self, params)
        for d, r in zip(params.NodesToBrowse, results, strict=True):
            if d.NodeId.Identifier in ("Mode", "Speed"):  # the first page of many, its states on a later one
                r.References, r.ContinuationPoint = crowd, b"more"
                crowded.append(d.NodeId.Identifier)
            if d.NodeId.Identifier == "Early" and d.ReferenceTypeId.is_null():  # its states on the first page
                r.References, r.ContinuationPoint = r.References + crowd, b"more"
            if d.NodeId.Identifier == "Hiccup" and not hiccups:  # busy once
                hiccups.append(d)
                r.References, r.StatusCode = [], ua.StatusCode(ua.StatusCodes.BadTooManyOperations)
        return results

    async def no_translate(self, params):
        busy = not crowded[1:]  # a hiccup the first time
        raise ua.UaStatusCodeError(
            ua.StatusCodes.BadServerTooBusy if busy else ua.StatusCodes.BadServiceUnsupported
        )

    monkeypatch.setattr(InternalSession, "browse", crowded_browse)
    monkeypatch.setattr(InternalSession, "translate_browsepaths_to_nodeids", no_translate)

    async def build(srv, idx: int, obj) -> dict:
        mode = await obj.add_variable(ua.NodeId("Mode", idx), "Mode", ua.Variant(0, ua.VariantType.UInt32))
        states = ua.Variant(
            [ua.LocalizedText(t) for t in ("Stopped", "Running", "Fault")], ua.VariantType.LocalizedText
        )
        await mode.add_property(0, "EnumStrings", states)
        speed = await obj.add_variable(
            ua.NodeId("Speed", idx), "Speed", ua.Variant(0.0, ua.VariantType.Double)
        )
        vendor = await obj.add_variable(
            ua.NodeId("Vendor", idx), "Vendor", ua.Variant(0, ua.VariantType.UInt32)
        )
        own = await vendor.add_property(
            ua.NodeId("Vendor.EnumStrings", idx), ua.QualifiedName("EnumStrings", 0), states
        )
        vendor_property = await srv.get_node(ua.ObjectIds.HasProperty).add_reference_type(
            ua.NodeId("HasVendorProperty", idx), ua.QualifiedName("HasVendorProperty", idx), symmetric=False
        )
        await vendor.delete_reference(own, ua.ObjectIds.HasProperty)
        await vendor.add_reference(own, vendor_property.nodeid)
        early = await obj.add_variable(
            ua.NodeId("Early", idx), "Early", ua.Variant("", ua.VariantType.String)
        )
        await early.add_property(0, "MaxStringLength", ua.Variant(5, ua.VariantType.UInt32))
        gate = await obj.add_variable(ua.NodeId("Gate", idx), "Gate", ua.Variant(0, ua.VariantType.UInt32))
        es = await gate.add_property(0, "EnumStrings", states)
        hiccup = await obj.add_variable(
            ua.NodeId("Hiccup", idx), "Hiccup", ua.Variant(0, ua.VariantType.UInt32)
        )
        await hiccup.add_property(0, "EnumStrings", states)
        mm_type = await new_enum(srv, idx, "MachineMode", ["Stopped", "Running", "Fault"])
        mm = await obj.add_variable(
            ua.NodeId("MM", idx), "MM", ua.Variant(0, ua.VariantType.Int32), datatype=mm_type.nodeid
        )
        fixed = await obj.add_variable(
            ua.NodeId("Fixed", idx), "Fixed", ua.Variant([1, 2, 3], ua.VariantType.Int16)
        )
        await fixed.write_value_rank(1)
        await fixed.write_array_dimensions([3])
        label = await obj.add_variable(
            ua.NodeId("Label", idx), "Label", ua.Variant("", ua.VariantType.String)
        )
        most = await label.add_property(0, "MaxStringLength", ua.Variant(5, ua.VariantType.UInt32))
        denied, unreadable = ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadNotReadable
        withheld.update(
            {
                (es.nodeid, ua.AttributeIds.Value): denied,
                (mm_type.nodeid, ua.AttributeIds.DataTypeDefinition): unreadable,
                (fixed.nodeid, ua.AttributeIds.ArrayDimensions): unreadable,
                (most.nodeid, ua.AttributeIds.Value): unreadable,
            }
        )
        kept.update(withheld)
        nodes.update({"MM": mm_type.nodeid, "Fixed": fixed.nodeid})

        async def on_read(event, _dispatcher) -> None:
            for i, rv in enumerate(event.request_params.NodesToRead):
                if event.is_external and (status := withheld.get((rv.NodeId, rv.AttributeId))) is not None:
                    event.response_params[i] = ua.DataValue(StatusCode=ua.StatusCode(status))

        srv.subscribe_server_callback(CallbackType.PostRead, on_read)
        return {
            "Mode": mode,
            "Speed": speed,
            "Vendor": vendor,
            "Early": early,
            "Gate": gate,
            "MM": mm,
            "Fixed": fixed,
            "Label": label,
            "Hiccup": hiccup,
        }

    withheld: dict[tuple[ua.NodeId, int], int] = {}
    kept: dict[tuple[ua.NodeId, int], int] = {}
    nodes: dict[str, ua.NodeId] = {}
    bad = {"Gate": 7, "MM": 7, "Fixed": [9, 9], "Label": "abcdefghij"}
    said_of = {
        "Gate": "0:EnumStrings: the node has it, and its Read answered BadUserAccessDenied",
        "MM": "its DataType's DataTypeDefinition answered BadNotReadable",
        "Fixed": "its ArrayDimensions answered BadNotReadable",
        "Label": "0:MaxStringLength: the node has it, and its Read answered BadNotReadable",
    }

    async with plc_server(build) as p, opcua_source(p) as src:
        with pytest.raises(OpcUaServerBusy, match=r"BadServerTooBusy"):
            await src.write(p.node_id("Mode"), 2)
        for value in (7, 2):
            with pytest.raises(OpcUaTypeMismatch, match=r"its properties could not be read") as e:
                await src.write(p.node_id("Mode"), value)
        said = str(e.value)
        assert "released after listing 51 references" in said and "BadServiceUnsupported" in said, said
        assert "not asked again for 10 minutes or until a reconnect" in said, said
        # the third write refused as the second was, without thousands of requests to find that out again; so is
        # one naming the node by its namespace's URI (it was Browsed again, kept by the id's spelling)
        with pytest.raises(OpcUaTypeMismatch, match=r"not asked again for 10 minutes"):
            await src.write("nsu=urn:plc;s=Mode", 7)
        assert crowded == ["Mode", "Mode"], crowded
        await src.write(p.node_id("Speed"), 1.5)
        # its MaxStringLength listed before the release: its limit (it was discarded, and every write refused)
        with pytest.raises(OpcUaTypeMismatch, match=r"MaxStringLength"):
            await src.write(p.node_id("Early"), "abcdefghij")
        await src.write(p.node_id("Early"), "abcde")
        with pytest.raises(OpcUaTypeMismatch, match=r"values 0, 1, 2; cannot write 7"):
            await src.write(p.node_id("Vendor"), 7)
        await src.write(p.node_id("Vendor"), 2)
        with pytest.raises(OpcUaServerBusy, match=r"BadTooManyOperations"):
            await src.write(p.node_id("Hiccup"), 2)
        await src.write(p.node_id("Hiccup"), 2)
        # any other answer but "no such attribute" leaves them unknown too: busy is retried, the others refused
        # (taken as absent, 7 went to MM and [9, 9] to Fixed, and the type so judged was kept for the session)
        withheld.clear()
        withheld[nodes["MM"], ua.AttributeIds.DataTypeDefinition] = ua.StatusCodes.BadTimeout
        withheld[nodes["Fixed"], ua.AttributeIds.ArrayDimensions] = ua.StatusCodes.BadInternalError
        withheld[nodes["Fixed"], ua.AttributeIds.ValueRank] = ua.StatusCodes.BadUserAccessDenied
        with pytest.raises(OpcUaServerBusy, match=r"BadTimeout"):
            await src.write(p.node_id("MM"), 7)
        with pytest.raises(OpcUaTypeMismatch, match=r"its ValueRank answered BadUserAccessDenied"):
            await src.write(p.node_id("Fixed"), [9, 9])
        del withheld[nodes["Fixed"], ua.AttributeIds.ValueRank]
        with pytest.raises(OpcUaTypeMismatch, match=r"its ArrayDimensions answered BadInternalError"):
            await src.write(p.node_id("Fixed"), [9, 9])
        withheld.clear()
        withheld.update(kept)
        for name, value in bad.items():
            with pytest.raises(OpcUaTypeMismatch, match=r"its properties could not be read") as e:
                await src.write(p.node_id(name), value)
            assert said_of[name] in str(e.value) and "access rights" in str(e.value), str(e.value)
        withheld.clear()
        for name, value in bad.items():
            with pytest.raises(OpcUaTypeMismatch, match=r"cannot write"):
                await src.write(p.node_id(name), value)
        good = {"Gate": 2, "MM": 2, "Fixed": [4, 5, 6], "Label": "abcde"}
        for name, value in good.items():
            await src.write(p.node_id(name), value)
        assert await p.read() == {"Mode": 0, "Speed": 1.5, "Vendor": 2, "Early": "abcde", "Hiccup": 2, **good}


async def test_a_browse_cancelled_between_pages_releases_the_continuation_point_it_was_handed(monkeypatch):
    """A write target's type read pages its properties' Browse (one reference a page, the next page answered late)
    and is cancelled while a BrowseNext is answered (its caller's time bound, a stop): the point that answer held
    was left on the session for its life, one of the few a PLC keeps per session, every later paged Browse then
    answered BadNoContinuationPoints. It is released once the answer comes; so is one of the live session's
    browse (``edge-agent browse`` through the agent) cancelled so."""
    pages: dict[bytes, list] = {}  # the continuation points the server holds, and their pages
    # the Browse of Wide's properties, and of the Objects folder, paged; each next page answered late
    _pages_served(monkeypatch, pages, only=("Wide", ua.ObjectIds.ObjectsFolder), late_s=0.3)

    async def build(_srv, idx: int, obj) -> dict:
        wide = await obj.add_variable(ua.NodeId("Wide", idx), "Wide", ua.Variant(0, ua.VariantType.UInt32))
        for k in range(4):
            await wide.add_property(idx, f"P{k}", ua.Variant(k, ua.VariantType.Int32))
        for k in range(4):
            await obj.add_variable(idx, f"V{k}", ua.Variant(k, ua.VariantType.Int32))
        return {"Wide": wide}

    async with plc_server(build) as p, opcua_source(p) as src:
        for call in (src.write(p.node_id("Wide"), 1), src.browse(None, 1)):
            task = asyncio.create_task(call)
            await until(lambda: bool(pages), 30, "a page asked")
            await asyncio.sleep(0.1)  # its BrowseNext sent, not answered
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await until(lambda: not pages, 30, f"every continuation point released: {sorted(pages)}")
