"""What reaches a real asyncua server (a free loopback port) from ``OpcUaSource.write`` for each built-in type:
every value is either written as meant (read back from the server) or refused before anything is sent, with
an ``OpcUaTypeMismatch`` naming the node, the value and the type, in a message of bounded length. Never
silently changed: text never becomes a Boolean or a number, a fraction is never rounded for an integer node,
a number beyond a REAL's range never becomes infinity, text UTF-8 cannot encode never leaves as an encoder's
traceback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math

import numpy as np
import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.common.callback import CallbackType

from devices.base import FLOAT32_MAX
from devices.opcua.client import OpcUaSource, OpcUaTypeMismatch, OpcUaWriteRefused, check_server
from edge_agent.config import parse_config
from tests.support.peers import free_port, node_ids_written, opcua_server, text_node
from tests.support.waits import until

# one event loop for the file: the PLC of the ``plc`` fixture serves every test that takes it (started once, its nodes
# set back before each test)
pytestmark = pytest.mark.asyncio(loop_scope="module")


@contextlib.asynccontextmanager
async def _serving(srv, port: int):
    """``srv`` started and an OPC UA source connected to it (yielded); both stopped after."""
    await srv.start()
    source = {"type": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/", "connect_timeout_s": 2}
    src = OpcUaSource("plc", parse_config({"agent": {"id": "gw"}, "sources": {"plc": source}}).sources["plc"])
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        yield src
    finally:
        await src.stop()
        await srv.stop()


VT = ua.VariantType
_NODES = {
    "Bool": ua.Variant(False, VT.Boolean),
    "SByte": ua.Variant(0, VT.SByte),
    "Byte": ua.Variant(0, VT.Byte),
    "Int16": ua.Variant(0, VT.Int16),
    "UInt16": ua.Variant(0, VT.UInt16),
    "Int32": ua.Variant(0, VT.Int32),
    "UInt32": ua.Variant(0, VT.UInt32),
    "Int64": ua.Variant(0, VT.Int64),
    "UInt64": ua.Variant(0, VT.UInt64),
    "Float": ua.Variant(0.0, VT.Float),
    "Double": ua.Variant(0.0, VT.Double),
    "String": ua.Variant("", VT.String),
    "Text": ua.Variant(ua.LocalizedText(""), VT.LocalizedText),
    "TextDe": ua.Variant(ua.LocalizedText("Anlage läuft", "de"), VT.LocalizedText),
    "Time": ua.Variant(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), VT.DateTime),
    "Bytes": ua.Variant(b"", VT.ByteString),
    "Arr3": ua.Variant([0.0, 0.0, 0.0], VT.Double),
    "Texts": ua.Variant(["", ""], VT.String),
}
# nodes of DataType BaseDataType (any value) and the value each holds; asyncua's server, like many gateways
# and soft PLCs, takes a value of any type for them and changes the node's type to it
_ANY = {
    "AnyDouble": ua.Variant(0.0, VT.Double),
    "AnyFloat": ua.Variant(0.0, VT.Float),
    "AnyInt16": ua.Variant(0, VT.Int16),
    "AnyBool": ua.Variant(False, VT.Boolean),
    "AnyString": ua.Variant("", VT.String),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plc_server():
    """(server, source, nodes by name, names of the nodes a write request reached, each node's first value, a
    function making AnyNull anew) on a server started once for the file (its start and the source's connect were
    most of each test's CPU)."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    assert idx == 2
    nodes = {}
    for name, variant in _NODES.items():
        nodes[name] = await obj.add_variable(ua.NodeId(name, idx), name, variant)
        await nodes[name].set_writable()
    await nodes["Arr3"].write_value_rank(1)
    await nodes["Arr3"].write_array_dimensions([3])
    # a PLC's fixed matrix, an S7-1500's Array[0..1, 0..2] of Int: it holds 2 x 3 when read
    nodes["Mat"] = await obj.add_variable(
        ua.NodeId("Mat", idx), "Mat", ua.Variant([[0, 0, 0], [0, 0, 0]], VT.Int16, Dimensions=[2, 3])
    )
    await nodes["Mat"].write_value_rank(2)
    await nodes["Mat"].write_array_dimensions([2, 3])
    await nodes["Mat"].set_writable()
    # an enumeration: the standard ServerState (Running 0 .. Unknown 7)
    nodes["Enum"] = await obj.add_variable(
        ua.NodeId("Enum", idx), "Enum", ua.Variant(0, VT.Int32), datatype=ua.NodeId(ua.ObjectIds.ServerState)
    )
    await nodes["Enum"].set_writable()
    for name, variant in _ANY.items():
        nodes[name] = await obj.add_variable(
            ua.NodeId(name, idx), name, variant, None, ua.NodeId(ua.ObjectIds.BaseDataType)
        )
        await nodes[name].set_writable()
    # null, of a vendor's subtype of BaseDataType (a PLC's ANY): asyncua's server takes the first value of any
    # type for it, then holds that type (a null value of BaseDataType itself it takes only as a Variant)
    anyvalue = await srv.nodes.base_data_type.add_data_type(ua.NodeId("AnyValue", idx), "AnyValue")

    async def any_null():
        """The node AnyNull made anew, holding nothing (a null value is refused when written, even in the address
        space, to a node that holds a type)."""
        with contextlib.suppress(KeyError):
            await srv.delete_nodes([nodes.pop("AnyNull")])
        nodes["AnyNull"] = await obj.add_variable(
            ua.NodeId("AnyNull", idx), "AnyNull", ua.Variant(), None, anyvalue.nodeid
        )
        await nodes["AnyNull"].set_writable()

    await any_null()
    sent = node_ids_written(srv, idx)
    first = {name: await node.read_data_value() for name, node in nodes.items() if name != "AnyNull"}
    async with _serving(srv, port) as src:
        yield srv, src, nodes, sent, first, any_null


@pytest_asyncio.fixture(loop_scope="module")
async def plc(plc_server):
    """(source, nodes by name, names of the nodes a write request reached) on a started server, each node holding
    its first value and type again (a BaseDataType node's type is the last value's, a null one's none), nothing
    written yet."""
    srv, src, nodes, sent, first, any_null = plc_server
    # set in the address space (what the source writes is checked against it)
    for name, held in first.items():
        await srv.write_attribute_value(nodes[name].nodeid, held)
        now = await nodes[name].read_data_value()
        assert (now.Value, now.StatusCode) == (held.Value, held.StatusCode), name
    await any_null()
    assert (await nodes["AnyNull"].read_data_value()).Value.VariantType is VT.Null
    sent.clear()
    yield src, nodes, sent


async def test_an_empty_list_loads_quietly_and_only_a_target_that_cannot_take_it_is_named(
    plc, tmp_path
) -> None:
    """``value: []`` clears a variable-length array node (``Texts``): the config loads without a warning (one was
    said at every start of a config that was right) and the source's check of its write targets (at connect,
    here run again on the connected source) names no error for it; the same value to a single-value node
    (``Double``) and to a fixed-length array (``Arr3``, ArrayDimensions [3], an S7-1500 Array[0..2]) is named
    there, before any write, and refused at a write."""
    from edge_agent.actions import write_targets
    from edge_agent.config import load_config

    src, nodes, _ = plc
    path = tmp_path / "agent.yaml"
    path.write_text(
        "agent: {id: gw}\nsources:\n  plc: {type: opcua, endpoint: 'opc.tcp://127.0.0.1:4840/plc/'}\nactions:\n"
        + "".join(
            f"  {n.lower()}: {{type: opcua_write, source: plc, node_id: 'ns=2;s={n}', value: []}}\n"
            for n in ("Texts", "Double", "Arr3")
        )
    )
    cfg = load_config(path)
    assert cfg.warnings == [], cfg.warnings
    src.expect_writes([(node_id, value) for _, node_id, value in write_targets(cfg)["plc"]])
    try:
        assert src._client is not None
        await src._check_targets(src._client, quiet=True)  # as at connect
        assert set(src.target_errors) == {"ns=2;s=Double", "ns=2;s=Arr3"}, src.target_errors
        assert "write one value, not an array" in src.target_errors["ns=2;s=Double"], src.target_errors
        await src.write("ns=2;s=Texts", [])
        assert await nodes["Texts"].read_value() == []
        with pytest.raises(OpcUaTypeMismatch):
            await src.write("ns=2;s=Double", [])
    finally:
        src.expect_writes([])
        src.target_errors.clear()


_WRITTEN = [
    ("Bool", True, True),
    ("Bool", 0, False),
    ("Bool", 1.0, True),
    ("Int16", 32767.0, 32767),
    ("Int16", -(2**15), -(2**15)),
    ("UInt16", 65535, 65535),
    ("Int64", 2**63 - 1, 2**63 - 1),
    ("UInt64", 2**64 - 1, 2**64 - 1),
    ("Float", 1.5, 1.5),
    ("Float", 0.1, float(np.float32(0.1))),  # the nearest REAL, as the PLC shows it
    ("Double", 0.1, 0.1),
    ("String", 12, "12"),
    ("String", "a\tb\r\n", "a\tb\r\n"),  # the layout of text arrives as it is (NUL, ESC: refused)
    ("Time", "2026-11-30T12:00:00+01:00", dt.datetime(2026, 11, 30, 11, 0, tzinfo=dt.UTC)),
    ("Bytes", b"\x00\xff", b"\x00\xff"),
    ("Arr3", [1, 2.5, 3], [1.0, 2.5, 3.0]),
    ("Enum", 7, 7),
]


@pytest.mark.parametrize(("node", "value", "arrives"), _WRITTEN, ids=[f"{n}-{v!r}" for n, v, _ in _WRITTEN])
async def test_a_value_the_node_takes_arrives_as_meant(plc, node, value, arrives) -> None:
    src, nodes, _ = plc
    await src.write(f"ns=2;s={node}", value)
    got = await nodes[node].read_value()
    if isinstance(got, dt.datetime):
        got = got.replace(tzinfo=dt.UTC)
    assert got == arrives and type(got) is type(arrives), got


_AS_TEXT = [
    ("String", np.float32(0.1), "0.1"),
    ("String", np.float32(3.4028235e38), "3.4028235e+38"),
    ("String", np.float32(16777216.0), "16777216.0"),  # Python's form, not NumPy's "1.6777216e+07"
    ("String", np.float16(0.1), "0.1"),
    ("String", np.array(np.float32(0.25)), "0.25"),
    ("String", 0.1, "0.1"),  # a double: its repr, as before
    ("String", np.float64(0.1), "0.1"),
    ("String", 0.30000000000000004, "0.30000000000000004"),  # every digit a double needs
    ("String", np.int16(-7), "-7"),
    ("Text", np.float32(0.1), ua.LocalizedText("0.1")),
    ("AnyString", np.float32(0.1), "0.1"),
    ("Texts", np.array([0.1, 2.5], dtype=np.float32), ["0.1", "2.5"]),
]


@pytest.mark.parametrize(("node", "value", "arrives"), _AS_TEXT, ids=[f"{n}-{v!r}" for n, v, _ in _AS_TEXT])
async def test_a_number_written_to_a_text_node_is_the_shortest_text_of_its_own_precision(
    plc, node, value, arrives
) -> None:
    """A float32 score (what a model gives) written to a String node arrived as the text of the double it
    widens to, "0.10000000149011612"; now it is the shortest text that reads back as the same float32, "0.1",
    in Python's form. A double is its repr as before (every digit it needs), an integer its digits."""
    src, nodes, _ = plc
    await src.write(f"ns=2;s={node}", value)
    assert await nodes[node].read_value() == arrives


_REFUSED = [
    ("Bool", "false", "write true or false without quotes"),
    ("Bool", "0", "write true or false without quotes"),
    ("Bool", "off", "write true or false without quotes"),
    ("Bool", "False ", "write true or false without quotes"),
    ("Bool", 2, "write true or false"),
    ("Bool", None, "write true or false"),
    ("Int16", 70000, "out of range -32768..32767"),
    ("UInt16", -1, "out of range 0..65535"),
    ("UInt64", 2**64, "out of range 0..18446744073709551615"),
    ("Int16", 1.5, "a fraction is never rounded or truncated"),
    ("Int32", "1e3", "write a number without quotes"),
    ("Int32", "0x10", "write a number without quotes"),
    ("SByte", math.nan, "NaN and infinity are never written"),
    ("Int64", math.inf, "NaN and infinity are never written"),
    ("Float", 1e39, "out of range of a 32-bit Float"),
    ("Float", -1e39, "out of range of a 32-bit Float"),
    ("Float", math.nan, "NaN and infinity are never sent"),
    ("Float", 16777217, "would arrive as 16777216"),
    ("Double", "1.5", "write a number without quotes"),
    ("Double", math.inf, "NaN and infinity are never sent"),
    ("String", {"a": 1}, "write text"),
    ("String", b"ab", "write text"),
    ("String", True, "write text"),
    ("Time", 1.7e9, "write an ISO 8601 time with its zone"),
    ("Time", "2026-11-30T12:00:00", "the time has no zone"),
    # an offset no time zone has (a typo, a garbled field; refused so on MQTT): the PLC's time was a day off
    ("Time", "2026-11-30T12:00:00+15:00", "its UTC offset +15:00 is no time zone's"),
    ("Bytes", "abc", "a ByteString node takes bytes"),
    ("Arr3", 1.0, "write a list of values, not a single one"),
    ("Arr3", [1.0, 2.0], "it holds exactly 3"),
    ("Arr3", [1.0, "a", 3.0], "write a number without quotes"),
    ("Enum", 8, "is none of them"),
    # an action's default value, true, is no state: written as 1 it set whichever state 1 is (Failed, here)
    ("Enum", True, "true and false are no state of it"),
    ("Enum", False, "true and false are no state of it"),
]


@pytest.mark.parametrize(("node", "value", "said"), _REFUSED, ids=[f"{n}-{v!r}" for n, v, _ in _REFUSED])
async def test_a_value_the_node_does_not_take_is_refused_naming_node_value_and_type_and_never_sent(
    plc, node, value, said
) -> None:
    src, nodes, sent = plc
    before = await nodes[node].read_value()
    with pytest.raises(OpcUaTypeMismatch) as e:
        await src.write(f"ns=2;s={node}", value)
    assert said in str(e.value) and f"node ns=2;s={node} is" in str(e.value), e.value
    assert await nodes[node].read_value() == before
    assert sent == []


async def test_text_utf8_cannot_encode_is_refused_naming_the_node_not_raised_as_an_encoder_error(plc) -> None:
    """A lone surrogate (YAML's "\\ud800" loads as one) has no UTF-8 form. Before, asyncua's encoder raised a
    bare UnicodeEncodeError, which named no node and which an action took as a passing fault and retried
    forever."""
    src, nodes, sent = plc
    for node in ("String", "Text"):
        with pytest.raises(OpcUaTypeMismatch, match=rf"node ns=2;s={node} is .*not valid Unicode"):
            await src.write(f"ns=2;s={node}", "ok \ud800")
    assert sent == []
    assert await nodes["String"].read_value() == ""
    # the check `edge-agent validate --online` makes (and the source at each connect) names it too; before,
    # it passed the value as fine
    _, writes, _, _ = await check_server(
        src.settings, [("ns=2;s=String", "ok \ud800"), ("ns=2;s=String", "ok")]
    )
    assert "node ns=2;s=String is String" in (writes[0] or "") and "not valid Unicode" in (writes[0] or "")
    assert writes[1] is None


async def test_text_holding_a_nul_or_another_control_character_is_refused_naming_the_node_and_never_sent(
    plc,
) -> None:
    """A NUL ends a PLC's C string there (OPC UA Part 6: strings with embedded nulls are not interoperable), and
    ESC, BEL or backspace are no text an HMI shows: such text is refused naming the node, at load too, as a
    Sparkplug String metric's is. Before, ``STOP\\x00RESET`` reached the String node, which a CODESYS PLC
    reads as ``STOP``. Tab, line feed and carriage return are text and are written as they are."""
    src, nodes, sent = plc
    for node in ("String", "Text", "AnyString", "AnyNull"):
        for text in ("STOP\x00RESET", "\x1b[2J", "a\x85b"):
            with pytest.raises(OpcUaTypeMismatch, match=rf"node ns=2;s={node} is .*control character"):
                await src.write(f"ns=2;s={node}", text)
    assert sent == []
    assert await nodes["String"].read_value() == ""
    await src.write("ns=2;s=String", "line 1\r\n\tline 2")
    assert await nodes["String"].read_value() == "line 1\r\n\tline 2"
    with pytest.raises(
        ValueError, match=r"actions\.label: value: node ns=2;s=S: .*control character '\\x00' \(at 4\)"
    ):
        parse_config(
            {
                "agent": {"id": "gw"},
                "sources": {"plc": {"type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840/"}},
                "actions": {
                    "label": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": "ns=2;s=S",
                        "value": "STOP\x00RESET",
                    }
                },
            }
        )


async def test_a_refused_huge_value_is_named_in_short(plc) -> None:
    """A megabyte of text refused by an Int16 node: the message names node, type and value, bounded. Before,
    the whole text was copied into the message (and so into the log line and /status)."""
    src, _, sent = plc
    for value in ("9" * 1_000_000, 10**1000, [1.0, "x" * 1_000_000, 3.0]):
        node = "Arr3" if isinstance(value, list) else "Int16"
        with pytest.raises(OpcUaTypeMismatch) as e:
            await src.write(f"ns=2;s={node}", value)
        said = str(e.value)
        assert f"node ns=2;s={node} is" in said and len(said) < 400, said[:500]
    assert sent == []


async def test_text_to_a_localized_text_node_goes_out_in_the_locale_the_node_holds(plc) -> None:
    """A LocalizedText node showing German text: the text written replaces it in German, and in the locale an
    HMI gave the node since. Before, it went out with no locale, which sets the invariant locale's text (Part
    4, 5.11.4.1): a multi-locale server's German clients kept seeing the old text."""
    src, nodes, _ = plc
    await src.write("ns=2;s=TextDe", "Störung")
    assert await nodes["TextDe"].read_value() == ua.LocalizedText("Störung", "de")
    await src.write("ns=2;s=TextDe", 42)
    assert await nodes["TextDe"].read_value() == ua.LocalizedText("42", "de")
    await nodes["TextDe"].write_value(ua.Variant(ua.LocalizedText("Running", "en"), VT.LocalizedText))
    await src.write("ns=2;s=TextDe", "Fault")
    assert await nodes["TextDe"].read_value() == ua.LocalizedText("Fault", "en")
    # a node holding the invariant locale keeps it
    await src.write("ns=2;s=Text", "Fault")
    assert await nodes["Text"].read_value() == ua.LocalizedText("Fault")


async def test_a_value_too_large_for_the_session_to_send_is_refused_naming_it_and_the_session_stays() -> None:
    """Text to a String node stating no MaxStringLength, more than a request of the session may carry (the
    server's MaxMessageSize, here the 64 KiB the source's max_message_bytes states in its Hello): refused before
    it is sent, naming the node, the size and the limit; the session stays and the next write is taken. Before,
    it was sent: the server answered BadRequestTooLarge and dropped the session (the source reconnected, every
    tag BAD for a moment)."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    label = await obj.add_variable(ua.NodeId("Label", idx), "Label", ua.Variant("", VT.String))
    await label.set_writable()
    texts = await obj.add_variable(
        ua.NodeId("Texts", idx),
        "Texts",
        ua.Variant([ua.Variant("a", VT.String)], VT.Variant),
        datatype=ua.NodeId(ua.ObjectIds.BaseDataType),
    )
    await texts.set_writable()
    await srv.start()
    source = {"type": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/", "max_message_bytes": 65_536}
    src = OpcUaSource("plc", parse_config({"agent": {"id": "gw"}, "sources": {"plc": source}}).sources["plc"])
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        most = 65_536 - 131  # the bytes of the rest of the request
        await src.write("ns=2;s=Label", "y" * most)
        assert len(await label.read_value()) == most
        with pytest.raises(OpcUaWriteRefused) as e:
            await src.write("ns=2;s=Label", "x" * 100_000)
        said = str(e.value)
        assert "ns=2;s=Label" in said and "100131 bytes" in said and "MaxMessageSize 65536" in said, said
        assert len(said) < 500, said
        await asyncio.sleep(0.5)  # a dropped session is noticed within this
        await src.write("ns=2;s=Label", "ok")
        assert await label.read_value() == "ok"
        assert src.stats.reconnects == 0 and src.state.value == "connected"
        # a BaseDataType node takes a list as Variants, each of which the first estimate counted as 16 bytes:
        # three 40,000-character texts went out unmeasured, answered BadRequestTooLarge (found in review)
        with pytest.raises(OpcUaWriteRefused) as e:
            await src.write("ns=2;s=Texts", ["x" * 40_000] * 3)
        assert "ns=2;s=Texts" in str(e.value) and "MaxMessageSize 65536" in str(e.value), str(e.value)
    finally:
        await src.stop()
        await srv.stop()


async def test_the_largest_real_as_a_plc_shows_it_is_written_and_beyond_it_refused(plc) -> None:
    """3.4028235e38, a REAL's largest value as PLCs and every shortest-form printer show it, is a double a hair
    above it that a REAL rounds to it. Before, it was refused as out of range of a 32-bit Float; a value that
    a REAL would round up to infinity still is."""
    src, nodes, sent = plc
    for value in (3.4028235e38, -3.4028235e38):
        await src.write("ns=2;s=Float", value)
        assert await nodes["Float"].read_value() == math.copysign(FLOAT32_MAX, value)
    for value in (3.4028236e38, 2.0**128 - 2.0**103, 1e39):
        with pytest.raises(OpcUaTypeMismatch, match="out of range of a 32-bit Float"):
            await src.write("ns=2;s=Float", value)
    assert sent == ["Float", "Float"]


async def test_a_zero_dimensional_array_is_written_as_its_value(plc) -> None:
    """NumPy's 0-d array (what a reduction of a model output gives) is a single value. Before, the conversion
    failed with TypeError ('bool' object is not iterable), naming no node."""
    src, nodes, _ = plc
    await src.write("ns=2;s=Bool", np.array(True))
    assert await nodes["Bool"].read_value() is True
    await src.write("ns=2;s=Int16", np.array(7, dtype=np.int64))
    assert await nodes["Int16"].read_value() == 7
    with pytest.raises(OpcUaTypeMismatch, match="a fraction is never rounded"):
        await src.write("ns=2;s=Int16", np.array(1.5))
    with pytest.raises(OpcUaTypeMismatch, match="write a list of values"):
        await src.write("ns=2;s=Arr3", np.array(1.0))


async def test_a_value_an_enumeration_cannot_take_is_refused_naming_the_enumeration(plc) -> None:
    """Text or a fraction for an enumeration node (the standard ServerState) names the enumeration and its
    values. Before, the message said the node "is Int32", the type its values travel as."""
    src, _, sent = plc
    for value, fix in (("Running", "write a number without quotes"), (1.5, "a fraction is never rounded")):
        with pytest.raises(OpcUaTypeMismatch) as e:
            await src.write("ns=2;s=Enum", value)
        said = str(e.value)
        assert (
            f"node ns=2;s=Enum is an enumeration (DataType i={ua.ObjectIds.ServerState}) of the values 0, 1, "
            in said
        )
        assert f"cannot write {value!r}" in said and fix in said and "Int32" not in said, said
    assert sent == []


async def test_a_name_for_an_enumeration_is_refused_saying_which_value_it_names(plc) -> None:
    """A line engineer gives an enumeration node (the standard ServerState, named by its EnumStrings) the
    name of the state meant. It is refused, as any text for it (the PLC's names may be localized), and the
    refusal says which value the name stands for, or, for a name the enumeration lacks, its values by name.
    Before, it said only "write a number without quotes" and the values 0, 1, 2, ...: which one was
    "Suspended" had to be looked up on the PLC."""
    src, nodes, sent = plc
    with pytest.raises(OpcUaTypeMismatch) as e:
        await src.write("ns=2;s=Enum", "suspended ")
    assert "write a number without quotes: 'suspended ' names its value 3 (Suspended): write 3" in str(
        e.value
    )
    with pytest.raises(OpcUaTypeMismatch) as e:
        await src.write("ns=2;s=Enum", "Paused")
    said = str(e.value)
    assert "its values by name: 0 Running, 1 Failed, 2 NoConfiguration, 3 Suspended, 4 Shutdown" in said, said
    assert sent == [] and await nodes["Enum"].read_value() == 0


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ([[1, 2, 3], [4]], "rows of different lengths"),  # went out as 2 x 3 holding 4 values
        ([[1, 2, 3], 4], "rows of different lengths"),  # an encoder's UaError, retried as a passing fault
        ([[1, 2, 3], [4, 5, 6], [7, 8, 9]], "3x3 elements, at most 2x3 fit"),  # a lax server stored 3 x 3
        ([[1, 2], [3, 4]], "2x2 elements; it holds exactly 2x3"),  # a lax one keeps the old rest
    ],
    ids=["ragged", "row_and_value", "longer", "shorter"],
)
async def test_a_matrix_not_of_the_fixed_shape_a_plc_matrix_holds_is_refused_and_never_sent(
    plc, value, said
) -> None:
    """A two-dimensional node of fixed ArrayDimensions [2, 3] (an S7-1500's Array[0..1, 0..2]) takes a 2 x 3
    matrix only; each other shape is refused naming the node and both shapes before anything is sent. Before,
    rows of different lengths went out with the first row's dimensions and fewer values (the server stored
    them), a row beside a single value failed in asyncua's encoder as a retryable error, and a 3 x 3 or 2 x 2
    matrix was written: only a one-dimensional array was held to its ArrayDimensions."""
    src, nodes, sent = plc
    with pytest.raises(OpcUaTypeMismatch) as e:
        await src.write("ns=2;s=Mat", value)
    assert "node ns=2;s=Mat is an array of Int16 (ValueRank 2, ArrayDimensions [2, 3])" in str(e.value)
    assert said in str(e.value), str(e.value)
    assert sent == [] and await nodes["Mat"].read_value() == [[0, 0, 0], [0, 0, 0]]
    await src.write("ns=2;s=Mat", [[1, 2, 3], [4, 5, 6]])
    assert await nodes["Mat"].read_value() == [[1, 2, 3], [4, 5, 6]]


_KEPT = [
    ("AnyDouble", 5, 5.0, VT.Double),
    ("AnyDouble", 0.5, 0.5, VT.Double),
    ("AnyFloat", 0.1, float(np.float32(0.1)), VT.Float),
    ("AnyInt16", 7.0, 7, VT.Int16),
    ("AnyBool", 1, True, VT.Boolean),
    ("AnyBool", 0, False, VT.Boolean),
    ("AnyString", 12, "12", VT.String),
    ("AnyString", "NG", "NG", VT.String),
    ("AnyNull", 5, 5, VT.Int32),  # holds nothing yet: the value's own kind
    ("AnyNull", 2.5, 2.5, VT.Double),
    ("AnyNull", "NG", "NG", VT.String),
]


@pytest.mark.parametrize(
    ("node", "value", "arrives", "kind"), _KEPT, ids=[f"{n}-{v!r}" for n, v, *_ in _KEPT]
)
async def test_a_base_data_type_node_is_written_as_the_type_it_holds(plc, node, value, arrives, kind) -> None:
    """A BaseDataType (Variant) node holding a Double written 5: the value's own kind, an Int32, was sent,
    and a lenient server (asyncua's, many gateways and soft PLCs) changed the node's type under the PLC
    program reading it as an LREAL. Now the type the node holds is kept; one holding nothing yet takes the
    value's own kind."""
    src, nodes, _ = plc
    await src.write(f"ns=2;s={node}", value)
    dv = await nodes[node].read_data_value()
    assert (dv.Value.VariantType, dv.Value.Value) == (kind, arrives) and type(dv.Value.Value) is type(arrives)


_NOT_KEPT = [
    ("AnyDouble", "1.5", "Double", "write a number without quotes"),
    ("AnyDouble", True, "Double", "write a number; true and false are a Boolean node's values"),
    ("AnyFloat", 1e39, "Float", "out of range of a 32-bit Float"),
    ("AnyInt16", 2.5, "Int16", "a fraction is never rounded or truncated"),
    ("AnyInt16", 70000, "Int16", "out of range -32768..32767"),
    ("AnyBool", 2, "Boolean", "write true or false"),
    ("AnyBool", "true", "Boolean", "write true or false without quotes"),
    ("AnyString", True, "String", "write text"),
]


@pytest.mark.parametrize(
    ("node", "value", "holds", "said"), _NOT_KEPT, ids=[f"{n}-{v!r}" for n, v, *_ in _NOT_KEPT]
)
async def test_a_value_that_does_not_fit_the_type_a_base_data_type_node_holds_is_refused(
    plc, node, value, holds, said
) -> None:
    """Before, "1.5" went to a Double-holding BaseDataType node as a String and 2.5 to an Int16-holding one
    as a Double: a lenient server took them and the node's type changed. Now they are refused by the rules
    of the type the node holds, naming it, and nothing is sent."""
    src, nodes, sent = plc
    before = await nodes[node].read_data_value()
    with pytest.raises(OpcUaTypeMismatch) as e:
        await src.write(f"ns=2;s={node}", value)
    assert f"node ns=2;s={node} is BaseDataType holding a" in str(e.value), e.value
    assert f" {holds}; cannot write {value!r}" in str(e.value) and said in str(e.value), e.value
    after = await nodes[node].read_data_value()
    assert (after.Value.VariantType, after.Value.Value) == (before.Value.VariantType, before.Value.Value)
    assert sent == []


async def test_a_value_that_does_not_fit_the_type_an_abstract_numeric_node_holds_is_refused_and_never_sent():
    """A node of DataType Number, Integer or UInteger (an AnalogItem's default DataType is Number) holds a
    value of one concrete type, that of the PLC variable behind it. The former code sent a value that did not
    fit it as another type: 1.5 to a Number node holding an Int16 as a Double, 40000 to an Integer one holding
    an Int16 as an Int32, 16777217 to a Number one holding a Float as an Int32, 300 to a UInteger one holding
    a Byte as a UInt32. asyncua's server refused them once they had gone out (BadTypeMismatch); a lenient
    server took them and changed the node's type under the PLC variable (measured: the INT node then held
    Double 1.5). Now each is refused before anything is sent, naming the node, the value and the type held; a
    value that fits goes out as that type."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    nodes = {}
    for name, held, dtype in (
        ("Speed", ua.Variant(0, VT.Int16), ua.ObjectIds.Number),
        ("Level", ua.Variant(0.0, VT.Float), ua.ObjectIds.Number),
        ("Count", ua.Variant(0, VT.Int16), ua.ObjectIds.Integer),
        ("Small", ua.Variant(0, VT.Byte), ua.ObjectIds.UInteger),
    ):
        nodes[name] = await obj.add_variable(ua.NodeId(name, idx), name, held, None, ua.NodeId(dtype))
        await nodes[name].set_writable()
    sent = node_ids_written(srv, idx)
    async with _serving(srv, port) as src:
        for name, value, shown, said in (
            ("Speed", 1.5, "Number holding an Int16", "a fraction is never rounded or truncated"),
            ("Count", 40000, "Integer holding an Int16", "out of range -32768..32767"),
            ("Level", 16777217, "Number holding a Float", "16777217 would arrive as 16777216"),
            ("Small", 300, "UInteger holding a Byte", "out of range 0..255"),
        ):
            with pytest.raises(OpcUaTypeMismatch) as e:
                await src.write(f"ns={idx};s={name}", value)
            assert f"node ns={idx};s={name} is {shown}; cannot write {value!r}" in str(e.value), e.value
            assert said in str(e.value) and "the node's type is kept" in str(e.value), e.value
        assert sent == []
        for name, value, kind in (("Speed", 7, VT.Int16), ("Level", 2.5, VT.Float), ("Small", True, VT.Byte)):
            await src.write(f"ns={idx};s={name}", value)
            dv = await nodes[name].read_data_value()
            assert (dv.Value.VariantType, dv.Value.Value) == (kind, value)
        assert sent == ["Speed", "Level", "Small"]


async def test_a_base_data_type_node_that_held_nothing_keeps_the_type_first_written(plc) -> None:
    """A null BaseDataType node takes the value's own kind; from then on it holds that type, so a later
    value of another kind is refused, as after a reconnect (when the type is read again), rather than
    changing the node's type at each write."""
    src, nodes, sent = plc
    await src.write("ns=2;s=AnyNull", 5)
    with pytest.raises(OpcUaTypeMismatch, match=r"is BaseDataType holding an Int32; cannot write 2\.5"):
        await src.write("ns=2;s=AnyNull", 2.5)
    await src.write("ns=2;s=AnyNull", 6.0)  # a whole float: an Int32 by that type's rules
    dv = await nodes["AnyNull"].read_data_value()
    assert (dv.Value.VariantType, dv.Value.Value) == (VT.Int32, 6)
    assert sent == ["AnyNull", "AnyNull"]


async def test_a_base_data_type_node_is_written_as_the_type_it_holds_now_not_at_the_last_read() -> None:
    """The type a BaseDataType node holds is whatever was last written to it, by anyone. The former code kept
    the one read at the first write (or at the connect's target check): after a PLC download made an
    Int16-holding node an LREAL, 5 was sent as an Int16, and to a node that held nothing then but an LREAL
    now, as an Int32. asyncua's server refuses that (BadTypeMismatch, and the agent read the type again and
    wrote once more), but a lenient one took it and changed the node's type back under the PLC program. Now
    the held type is read at each write, and only a Double is ever sent."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    anyvalue = await srv.nodes.base_data_type.add_data_type(ua.NodeId("AnyValue", idx), "AnyValue")
    nodes = {}
    for name, held in (("Setpoint", ua.Variant(0, VT.Int16)), ("Spare", ua.Variant())):
        nodes[name] = await obj.add_variable(ua.NodeId(name, idx), name, held, None, anyvalue.nodeid)
        await nodes[name].set_writable()
    sent: list[tuple[str, ua.VariantType]] = []

    async def on_write(event, _dispatcher) -> None:
        if event.is_external:
            sent.extend(
                (wv.NodeId.Identifier, wv.Value.Value.VariantType) for wv in event.request_params.NodesToWrite
            )

    srv.subscribe_server_callback(CallbackType.PreWrite, on_write)
    async with _serving(srv, port) as src:
        await src.write(f"ns={idx};s=Setpoint", 7)  # its type read: an Int16
        with pytest.raises(OpcUaTypeMismatch):  # its type read while it holds nothing
            await src.write(f"ns={idx};s=Spare", {"not": "a value"})
        for node in nodes.values():  # a PLC download: each node an LREAL now
            await node.write_value(
                ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData))
            )
            await node.write_value(ua.Variant(2.5, VT.Double))
        sent.clear()
        for name in nodes:
            await src.write(f"ns={idx};s={name}", 5)
            dv = await nodes[name].read_data_value()
            assert (dv.Value.VariantType, dv.Value.Value) == (VT.Double, 5.0)
        assert sent == [("Setpoint", VT.Double), ("Spare", VT.Double)]


async def test_a_base_data_type_node_holding_a_variant_array_gets_each_element_as_its_own_kind(plc) -> None:
    """A BaseDataType node holding a Variant[] (an array whose elements each carry their own type): the former
    code sent [2, "b"] nowhere (refused: "an array needs elements of one kind") and [1, 2] as an Int32[],
    which the server refused (BadTypeMismatch) and a lenient one took, changing the node's type. Now the
    array goes as a Variant[], each element its own kind, as the node holds it."""
    src, nodes, _ = plc
    node = await nodes["AnyDouble"].get_parent()
    mixed = await node.add_variable(
        ua.NodeId("AnyMixed", 2),
        "AnyMixed",
        ua.Variant([ua.Variant(0, VT.Int32), ua.Variant("", VT.String)], VT.Variant),
        None,
        ua.NodeId(ua.ObjectIds.BaseDataType),
    )
    await mixed.set_writable()
    for value, kinds in (([2, "b"], [VT.Int32, VT.String]), ([1, 2.5], [VT.Int32, VT.Double])):
        await src.write("ns=2;s=AnyMixed", value)
        dv = await mixed.read_data_value()
        assert dv.Value.VariantType is VT.Variant
        assert [(v.VariantType, v.Value) for v in dv.Value.Value] == list(zip(kinds, value, strict=True))


async def test_a_heartbeat_counter_on_a_base_data_type_node_wraps_at_what_the_held_type_holds() -> None:
    """A life counter on a BaseDataType node holding an SByte (a PLC's SINT in an ANY): the counter ran to
    32767 whatever the node held, so the connect's check named the node as unable to take it ("use an integer
    node") and, the held type kept, the 128th beat was refused and the PLC's watchdog tripped. Now it wraps at
    what the held type holds (127), and the node is not named at connect."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    life = await obj.add_variable(
        ua.NodeId("Life", idx), "Life", ua.Variant(0, VT.SByte), None, ua.NodeId(ua.ObjectIds.BaseDataType)
    )
    await life.set_writable()
    await srv.start()
    source = {
        "type": "opcua",
        "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
        "connect_timeout_s": 2,
        "heartbeat": {"node_id": f"ns={idx};s=Life", "kind": "counter"},
    }
    settings = parse_config({"agent": {"id": "gw"}, "sources": {"plc": source}}).sources["plc"]
    hb = settings.heartbeat
    assert hb is not None
    # a fast beat (1 ms, under the 100 ms a config may set) to reach the wrap in a second
    src = OpcUaSource(
        "plc", settings.model_copy(update={"heartbeat": hb.model_copy(update={"period_ms": 1})})
    )
    await src.start()
    seen = set()
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        await until(lambda: src.heartbeats >= 1, 30, "a first beat")
        assert src.target_errors == {}
        while src.heartbeats < 300 and "heartbeat" not in src.stats.errors_by_reason:
            seen.add(await life.read_value())
            await asyncio.sleep(0.01)
        assert "heartbeat" not in src.stats.errors_by_reason, src.stats.last_error
        assert max(seen) <= 127 and (await life.read_data_value()).Value.VariantType is VT.SByte
    finally:
        await src.stop()
        await srv.stop()


# nodes whose ValueRank leaves the shape open and the value each holds: asyncua's server, like many gateways
# and soft PLCs, stores a value of either shape for them and so changes the PLC variable's shape
_SHAPED = {
    # (value held, DataType (None: the value's own), ValueRank)
    "AnyArray": (ua.Variant([1, 2, 3], VT.Int32), ua.NodeId(ua.ObjectIds.BaseDataType), -2),
    "AnyArrayOr1": (ua.Variant([1, 2, 3], VT.Int32), ua.NodeId(ua.ObjectIds.BaseDataType), -3),
    "AnyVariants": (
        ua.Variant([ua.Variant(1, VT.Int32), ua.Variant("a", VT.String)], VT.Variant),
        ua.NodeId(ua.ObjectIds.BaseDataType),
        -2,
    ),
    "AnyScalar": (ua.Variant(1.0, VT.Double), ua.NodeId(ua.ObjectIds.BaseDataType), -2),
    "DoublesOneOrMore": (ua.Variant([1.0, 2.0], VT.Double), None, 0),
}


@pytest_asyncio.fixture(loop_scope="module")
async def shaped():
    """(source, nodes by name, names of the nodes a write request reached) for the ``_SHAPED`` nodes."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    nodes = {}
    for name, (variant, dtype, rank) in _SHAPED.items():
        nodes[name] = await obj.add_variable(ua.NodeId(name, idx), name, variant, None, dtype)
        await nodes[name].write_value_rank(rank)
        await nodes[name].set_writable()
    sent = node_ids_written(srv, idx)
    async with _serving(srv, port) as src:
        yield src, nodes, sent


_RESHAPED = [
    ("AnyArray", 5, "an array of 3 Int32", "write a list of values, not a single one"),
    ("AnyArrayOr1", 5, "an array of 3 Int32", "write a list of values, not a single one"),
    ("AnyVariants", 5, "an array of 2 Variant", "write a list of values, not a single one"),
    ("AnyScalar", [1.0, 2.0], "a single Double", "write one value, not an array"),
    ("AnyScalar", [], "a single Double", "write one value, not an array"),  # an empty list clears no scalar
    ("DoublesOneOrMore", 5.0, "ValueRank 0", "write a list of values, not a single one"),
]


@pytest.mark.parametrize(("node", "value", "holds", "said"), _RESHAPED, ids=[n for n, *_ in _RESHAPED])
async def test_a_value_of_another_shape_than_a_node_of_any_shape_holds_is_refused_and_never_sent(
    shaped, node, value, holds, said
) -> None:
    """A BaseDataType node whose ValueRank leaves the shape open (-2 any, -3 scalar or 1-D) holding an array,
    written a single value: the former code sent it, and asyncua's server (like many gateways and soft PLCs)
    stored it, so the PLC variable read as an array became a single value (one holding a Variant[] answered a
    bare BadTypeMismatch, which said nothing of a list); a list to one holding a single value changed it the
    other way, and a single value to a ValueRank 0 node (one or more dimensions: never a scalar) was sent too.
    Now each is refused before anything is sent, naming the node, what it holds (an array's length) and the
    shape to write."""
    src, nodes, sent = shaped
    before = await nodes[node].read_data_value()
    with pytest.raises(OpcUaTypeMismatch) as e:
        await src.write(f"ns=2;s={node}", value)
    assert f"node ns=2;s={node} is" in str(e.value) and holds in str(e.value), e.value
    assert f"cannot write {value!r}" in str(e.value) and said in str(e.value), e.value
    after = await nodes[node].read_data_value()
    assert (after.Value.VariantType, after.Value.Value) == (before.Value.VariantType, before.Value.Value)
    assert sent == []


async def test_a_node_of_any_shape_takes_the_shape_it_holds(shaped) -> None:
    """The shape a BaseDataType node of any shape holds is written as it holds it: an array for an array (any
    length: the length is not fixed by a ValueRank of -2), a single value for a single value; a ValueRank 0
    node takes a list."""
    src, nodes, sent = shaped
    for node, value in (("AnyArray", [4, 5]), ("AnyScalar", 2.5), ("DoublesOneOrMore", [3.0])):
        await src.write(f"ns=2;s={node}", value)
        got = await nodes[node].read_value()
        assert got == (value if isinstance(value, list) else float(value)), (node, got)
    assert sent == ["AnyArray", "AnyScalar", "DoublesOneOrMore"]


async def test_the_shape_a_base_data_type_node_holds_is_read_at_each_write(shaped) -> None:
    """A BaseDataType node holds whatever was last written to it, by anyone: its shape, like its type, is read
    at each write, so a node another client made an array takes a list and refuses a single value."""
    src, nodes, sent = shaped
    await src.write("ns=2;s=AnyScalar", 2.5)
    await nodes["AnyScalar"].write_value(ua.Variant([1.0, 2.0], VT.Double))  # another client
    sent.clear()
    with pytest.raises(OpcUaTypeMismatch, match="an array of 2 Double"):
        await src.write("ns=2;s=AnyScalar", 3.5)
    await src.write("ns=2;s=AnyScalar", [3.5, 4.5])
    assert await nodes["AnyScalar"].read_value() == [3.5, 4.5]
    assert sent == ["AnyScalar"]


@pytest.mark.parametrize("named_two_ways", [False, True], ids=["one_spelling", "ns_and_nsu"])
async def test_two_first_writes_at_once_to_a_node_that_holds_nothing_send_one_kind(
    named_two_ways: bool,
) -> None:
    """Two writes at the same moment to a BaseDataType node that holds nothing yet: the former code had both
    read the node (both saw it hold nothing) and each sent its own kind, an Int32 and then a Double, so a
    lenient server changed the node's type between the two (asyncua's refused the second with
    BadTypeMismatch, after it was sent). Now the first write's type decision is one per node: the second waits
    for the first, sees the Int32 it holds then and is refused before anything is sent, as it would be one
    write later.

    ``ns_and_nsu``: the node named by namespace index (ns=2;s=Spare) and by namespace URI (nsu=urn:plc;s=Spare),
    each spelling's node and type known first: each spelling took a lock of its own (the same two kinds sent).
    Now the lock is the node's, as the server resolves it."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    anyvalue = await srv.nodes.base_data_type.add_data_type(ua.NodeId("AnyValue", idx), "AnyValue")
    spare = await obj.add_variable(ua.NodeId("Spare", idx), "Spare", ua.Variant(), None, anyvalue.nodeid)
    await spare.set_writable()
    sent: list[ua.VariantType] = []

    async def on_write(event, _dispatcher) -> None:
        if event.is_external:
            sent.extend(wv.Value.Value.VariantType for wv in event.request_params.NodesToWrite)

    srv.subscribe_server_callback(CallbackType.PreWrite, on_write)
    second_name = "nsu=urn:plc;s=Spare" if named_two_ways else f"ns={idx};s=Spare"
    async with _serving(srv, port) as src:
        for spelling in (f"ns={idx};s=Spare", second_name) if named_two_ways else ():
            with pytest.raises(OpcUaTypeMismatch, match="a lone surrogate"):
                await src.write(spelling, "\ud800")  # refused before anything is sent: it holds nothing still
        first, second = await asyncio.gather(
            src.write(f"ns={idx};s=Spare", 5), src.write(second_name, 2.5), return_exceptions=True
        )
        assert first is None, first
        assert isinstance(second, OpcUaTypeMismatch), second
        assert "is BaseDataType holding an Int32; cannot write 2.5" in str(second), second
        assert sent == [VT.Int32]
        dv = await spare.read_data_value()
        assert (dv.Value.VariantType, dv.Value.Value) == (VT.Int32, 5)


async def test_a_base_data_type_node_holding_a_shape_its_value_rank_forbids_takes_the_shape_it_declares() -> (
    None
):
    """A BaseDataType node of ValueRank 0 (one or more dimensions) holding a single value (a lenient server stored
    one: the former code itself sent a single value to such a node), or of ValueRank -3 (a single value or a
    one-dimensional array) holding a 2-D array: the former code kept the held shape and refused the other
    besides, so every write was refused, with two hints that contradicted each other (a single value: "write a
    list"; a list: "write one value"), and the node could never be written again. The ValueRank is the node's
    contract: a value of the shape it declares is written (the held shape is kept only where the ValueRank
    allows it), one it forbids is refused as before."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    base = ua.NodeId(ua.ObjectIds.BaseDataType)
    nodes = {}
    for name, variant, rank in (
        ("OneOrMore", ua.Variant(1.0, VT.Double), 0),
        ("ScalarOr1D", ua.Variant([[1, 2], [3, 4]], VT.Int32, [2, 2]), -3),
    ):
        nodes[name] = await obj.add_variable(ua.NodeId(name, idx), name, variant, None, base)
        await nodes[name].write_value_rank(rank)
        await nodes[name].set_writable()
    async with _serving(srv, port) as src:
        await src.write(f"ns={idx};s=OneOrMore", [2.0, 3.0])
        assert await nodes["OneOrMore"].read_value() == [2.0, 3.0]
        await src.write(f"ns={idx};s=ScalarOr1D", [5, 6])
        assert await nodes["ScalarOr1D"].read_value() == [5, 6]
        with pytest.raises(OpcUaTypeMismatch, match="ValueRank 0.*write a list of values, not a single one"):
            await src.write(f"ns={idx};s=OneOrMore", 4.0)
        with pytest.raises(OpcUaTypeMismatch, match=r"ValueRank -3.*2 dimensions"):
            await src.write(f"ns={idx};s=ScalarOr1D", [[7, 8], [9, 10]])
        assert await nodes["OneOrMore"].read_value() == [2.0, 3.0]
        assert await nodes["ScalarOr1D"].read_value() == [5, 6]


async def test_a_value_a_node_refuses_has_its_type_read_again_once_not_at_each_refused_value(
    plc, monkeypatch
) -> None:
    """A cached type that refuses a value is read again first (the PLC may have changed the node). Read again and
    found unchanged, it was read again at every later refused value: for a node of 10,000 references a whole paged
    Browse a refusal (an action firing at each result). Once found unchanged, the node's refusals are judged by it
    until it changes, for a minute at most; a value it takes is still written."""
    from devices.opcua import client

    src, nodes, sent = plc
    reads = []
    read = client._node_type

    async def counted(*args, **kw):
        reads.append(args[1])
        return await read(*args, **kw)

    await src.write("ns=2;s=Int16", 7)  # its type read and cached
    monkeypatch.setattr(client, "_node_type", counted)
    for _ in range(4):
        with pytest.raises(OpcUaTypeMismatch, match="ns=2;s=Int16"):
            await src.write("ns=2;s=Int16", 100000)
    # once at most (none when a refusal of an earlier test on this module's source found it unchanged already)
    assert len(reads) <= 1, reads  # was: read again at each of the 4
    await src.write("ns=2;s=Int16", -3)
    assert await nodes["Int16"].read_value() == -3 and len(reads) <= 1


async def test_a_node_or_data_type_said_unknown_with_info_bits_is_named_so_not_retried_as_busy(
    plc_server,
) -> None:
    """A server may set info bits (0x400) on any status. asyncua names BadNodeIdUnknown | 0x400 plain "Bad": a
    target's type read answered so was "type cannot be read (Bad)", retried as busy for good, where the node does not
    exist; and a Browse of its DataType faulted so was that of the target itself (no such node), where the agent
    cannot tell how to encode for a DataType the server does not expose. Matched by the code alone, both are said as
    they are."""
    from asyncua.common.utils import ServiceError

    from devices.opcua.client import OpcUaNodeError

    srv, src, nodes, _, _, _ = plc_server
    gone = ua.StatusCodes.BadNodeIdUnknown | 0x400
    vendor_type = ua.NodeId("VendorType", 2)  # a DataType node the server does not expose
    vendor = await nodes["Int16"].get_parent()
    node = await vendor.add_variable(
        ua.NodeId("Vendor", 2), "Vendor", ua.Variant(0, VT.Int16), None, vendor_type
    )
    views = srv.iserver.view_service
    browse = views.browse

    def faulting(params):
        if any(d.NodeId == vendor_type for d in params.NodesToBrowse):
            raise ServiceError(gone)
        return browse(params)

    async def unknown(event, _dispatcher) -> None:
        for i, dv in enumerate(event.response_params or ()):
            if dv.StatusCode is not None and dv.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown:
                event.response_params[i] = ua.DataValue(StatusCode=ua.StatusCode(gone))

    srv.subscribe_server_callback(CallbackType.PostRead, unknown)
    views.browse = faulting
    try:
        with pytest.raises(OpcUaNodeError, match="node 'ns=2;s=Absent' does not exist on the server"):
            await src.ensure_type("ns=2;s=Absent")  # was OpcUaServerBusy "type cannot be read (Bad)"
        with pytest.raises(
            OpcUaTypeMismatch, match="has DataType ns=2;s=VendorType, which the server does not"
        ):
            await src.ensure_type("ns=2;s=Vendor")  # was OpcUaServerBusy "(Bad)" too
    finally:
        views.browse = browse
        srv.unsubscribe_server_callback(CallbackType.PostRead, unknown)
        await srv.delete_nodes([node])


def _tag_only_source(endpoint: str, name: str) -> OpcUaSource:
    """A second source on the module's server reading ``ns=2;s=<name>`` as a tag, write targets not watched: the
    tag's item is the one notice it gets of a download taking that node away (not started)."""
    tag = name.lower()
    source = {
        "type": "opcua",
        "endpoint": endpoint,
        "connect_timeout_s": 2,
        "watch_write_targets": False,
        "nodes": [{"node_id": f"ns=2;s={name}", "tag": tag}],
    }
    return OpcUaSource(tag, parse_config({"agent": {"id": "gw"}, "sources": {tag: source}}).sources[tag])


async def _made_again_shorter(srv, parent, made: list, reader: OpcUaSource, sent: list) -> None:
    """A download: the text node ``made`` ([node, its MaxStringLength]) taken away, ``reader``'s tag told so (its
    gone notice awaited), and made again under its id as a STRING[10] (``made`` now holds the new one); ``sent``
    cleared."""
    from tests.support.peers import take_node_away

    await srv.delete_nodes([made[1]])
    await take_node_away(srv, made[0])
    await until(lambda: reader._gone, 30, "the tag's gone notice")
    made[:] = await text_node(parent, 2, made[0].nodeid.Identifier, 10)
    sent.clear()


async def test_a_limit_a_download_lowers_unnoticed_judges_writes_once_the_type_read_is_older_than_its_hold(
    plc_server, monkeypatch
) -> None:
    """A write target neither watched nor read as a tag gets no notice of a download that lowers its limit in place
    (a STRING[20] made STRING[10]): its type read at the first write judged every later one until a reconnect, and
    a 14-byte text went out for the PLC to cut or refuse. A type read longer ago than its hold (a minute; shortened
    here) is read again before it judges a write: the text is refused naming the new limit, never sent."""
    from devices.opcua import client

    srv, src, nodes, sent, _, _ = plc_server
    node, prop = await text_node(await nodes["Int16"].get_parent(), 2, "Batch", 20)
    try:
        await src.write("ns=2;s=Batch", "B-2026-L3-0001")  # 14 bytes: its type read, cached
        await prop.write_value(ua.Variant(10, VT.UInt32))  # the download, in place: no notice
        monkeypatch.setattr(client, "_TYPE_HOLD_S", 0.05, raising=False)
        monkeypatch.setattr(
            client, "_TYPE_READ_SHARE", 1e6, raising=False
        )  # the hold alone, however long the read
        await asyncio.sleep(0.1)  # the type read is older than the hold
        sent.clear()
        with pytest.raises(OpcUaTypeMismatch, match="at most 10"):
            await src.write("ns=2;s=Batch", "B-2026-L3-0002")  # was written, the cached STRING[20] judging it
        assert "Batch" not in sent, sent
    finally:
        await srv.delete_nodes([prop, node])


async def test_a_type_read_a_download_ends_is_read_again_not_stored_over_its_gone_notice(
    plc_server, monkeypatch
) -> None:
    """A write's type read whose answers came before a download, returning after the download's gone notice dropped
    the node's type (a target read as a tag, its watch off): the old type was stored back over the drop and judged
    the write, so a 14-byte text went out to the node made again as a STRING[10]. A read a drop spans is read once
    more: the text is refused naming the node's new limit, never sent."""
    from devices.opcua import client

    srv, src, nodes, sent, _, _ = plc_server
    parent = await nodes["Int16"].get_parent()
    made = list(await text_node(parent, 2, "Lot", 20))
    lot = _tag_only_source(src.settings.endpoint, "Lot")
    read = client._node_type
    armed = [True]

    async def download_during(node, node_id, *args, **kw):
        nt = await read(node, node_id, *args, **kw)  # answered as the node was: a STRING[20]
        if armed[0] and node_id == "ns=2;s=Lot":
            armed[0] = False
            await _made_again_shorter(srv, parent, made, lot, sent)
        return nt

    await lot.start()
    try:
        await until(lambda: lot.state.value == "connected", 30, "the source connected")
        lot.expect_writes([("ns=2;s=Lot", "")])  # after the connect's check: its type is read at the write
        monkeypatch.setattr(client, "_node_type", download_during)
        with pytest.raises(OpcUaTypeMismatch, match="at most 10"):
            await lot.write(
                "ns=2;s=Lot", "B-2026-L3-0001"
            )  # was written, judged by the STRING[20] stored back
        assert not armed[0] and "Lot" not in sent, sent
    finally:
        await lot.stop()
        await srv.delete_nodes(made)


async def test_a_type_older_than_its_hold_that_cannot_be_read_again_now_judges_on_and_the_write_goes_out(
    plc, plc_server, monkeypatch
) -> None:
    """A type read again once older than its hold, the server answering that read busy (a PLC busy for a while, a
    node whose Browse it cannot page now): the write was refused as busy, every write of the node (a heartbeat's:
    the PLC's watchdog trips) for as long as the read failed. The type read before judges on, read again after
    another hold; the value goes out."""
    from devices.opcua import client

    src, nodes, _ = plc
    server = plc_server[0]
    await src.write("ns=2;s=Int16", 5)  # its type read and cached
    target = nodes["Int16"].nodeid
    busy = [0]

    async def too_busy(event, _dispatcher) -> None:
        for i, rv in enumerate(event.request_params.NodesToRead):
            if rv.NodeId == target and rv.AttributeId == ua.AttributeIds.DataType:
                busy[0] += 1
                event.response_params[i] = ua.DataValue(
                    StatusCode=ua.StatusCode(ua.StatusCodes.BadServerTooBusy)
                )

    server.subscribe_server_callback(CallbackType.PostRead, too_busy)
    monkeypatch.setattr(client, "_TYPE_HOLD_S", 0.05, raising=False)
    monkeypatch.setattr(
        client, "_TYPE_READ_SHARE", 1e6, raising=False
    )  # the hold alone, however long the read
    try:
        await asyncio.sleep(0.1)  # its type read is older than the hold
        await src.write("ns=2;s=Int16", 6)  # was OpcUaServerBusy (BadServerTooBusy), not sent
        assert await nodes["Int16"].read_value() == 6 and busy[0] >= 1, busy
    finally:
        server.unsubscribe_server_callback(CallbackType.PostRead, too_busy)


async def _type_reads_counted(nodes, name: str, late_s: float = 0.0):
    """A writable Int16 node ``name`` beside the module's nodes, and a PostRead callback counting the Reads of its
    DataType, each answered ``late_s`` late: (node, [the count], the callback, to subscribe)."""
    node = await (await nodes["Int16"].get_parent()).add_variable(
        ua.NodeId(name, 2), name, ua.Variant(0, VT.Int16)
    )
    await node.set_writable()
    reads = [0]

    async def counted(event, _dispatcher) -> None:
        wanted = ua.AttributeIds.DataType
        if any(
            rv.NodeId == node.nodeid and rv.AttributeId == wanted for rv in event.request_params.NodesToRead
        ):
            reads[0] += 1
            await asyncio.sleep(late_s)

    return node, reads, counted


async def _retype(srv, node, type_id: int, held: ua.Variant) -> None:
    """A download's retype of ``node`` in place: its DataType ``type_id``, holding ``held``."""
    await node.write_attribute(
        ua.AttributeIds.DataType, ua.DataValue(ua.Variant(ua.NodeId(type_id), VT.NodeId))
    )
    srv.iserver.aspace._nodes[node.nodeid].attributes[ua.AttributeIds.Value].value = ua.DataValue(held)


def _write_answered(monkeypatch, node, value, code: int, said: asyncio.Event | None = None) -> None:
    """The server answers a Write of ``value`` to ``node`` ``code`` (an EURange check's BadOutOfRange), having taken
    nothing of it (``said`` set once it has answered so); other writes as it does."""
    from asyncua.server.internal_session import InternalSession

    write = InternalSession.write

    async def answered(self, params):
        mine = [wv.NodeId == node.nodeid and wv.Value.Value.Value == value for wv in params.NodesToWrite]
        rest = [wv for wv, m in zip(params.NodesToWrite, mine, strict=True) if not m]
        results = await write(self, ua.WriteParameters(NodesToWrite=rest)) if rest else []
        if said is not None and any(mine):
            said.set()
        return [ua.StatusCode(code) if m else results.pop(0) for m in mine]

    monkeypatch.setattr(InternalSession, "write", answered)


async def test_a_heartbeat_held_across_a_reconnect_is_no_longer_shown_held_once_written_again(
    plc_server,
) -> None:
    """A heartbeat held (a pipeline on a failed slot) when its session ended, the hold ending before the next
    session: that session's beats clear ``heartbeat_held`` (/status, ``edge-agent status``). It stayed set for
    good, 'since' the first session's hold, while the beats were written."""
    from tests.support.tcp_cut import CutRelay

    srv, src, nodes, _, _, _ = plc_server
    beat, _, _ = await _type_reads_counted(nodes, "BeatHeld")
    port = int(src.settings.endpoint.rsplit(":", 1)[1].split("/", 1)[0])
    relay = CutRelay(port)
    endpoint = src.settings.endpoint.replace(f":{port}", f":{relay.port}")
    source = {"type": "opcua", "endpoint": endpoint, "connect_timeout_s": 2}
    source["heartbeat"] = {"node_id": "ns=2;s=BeatHeld", "kind": "counter", "period_ms": 500}
    settings = parse_config({"agent": {"id": "gw"}, "sources": {"hb": source}}).sources["hb"]
    hb = OpcUaSource("hb", settings)
    why: list[str | None] = ["slot vision failed"]
    hb.heartbeat_hold = lambda: why[0]
    await hb.start()
    try:
        await until(lambda: hb.heartbeat_held is not None, 30, "the heartbeat held")
        relay.cut()
        await until(lambda: hb.state.value != "connected", 30, "the session ended")
        why[0] = None  # the hold ends while the session is down
        await until(lambda: hb.stats.reconnects >= 1 and hb.state.value == "connected", 30, "a new session")
        await until(lambda: hb.heartbeats >= 2, 30, "beats written again")
        assert hb.heartbeat_held is None  # was: still held, 'since' the first session's hold
    finally:
        await hb.stop()
        relay.close()
        await srv.delete_nodes([beat])


async def test_a_type_whose_read_takes_long_is_read_again_less_often_than_each_hold(
    plc_server, monkeypatch
) -> None:
    """A node whose type read takes long (a node of 10,000 references: its properties' paged Browse, seconds of a few
    thousand requests) was read again at each hold, that Browse a minute on the PLC; the hold of such a type is a
    hundred times its read at least (1 % of the time): here a read of 0.05 s (the server slowed) with the hold cut to
    0.05 s is not read again 0.1 s later."""
    from devices.opcua import client

    srv, src, nodes, _, _, _ = plc_server
    node, _, slow = await _type_reads_counted(nodes, "Slow", 0.05)
    reads, read = [], client._node_type

    # its type read in full, counted (not the one Read of its attributes before a write)
    async def counted(*args, **kw):
        reads.append(args[1])
        return await read(*args, **kw)

    srv.subscribe_server_callback(CallbackType.PostRead, slow)
    monkeypatch.setattr(client, "_TYPE_HOLD_S", 0.05, raising=False)
    monkeypatch.setattr(client, "_node_type", counted)
    try:
        await src.write("ns=2;s=Slow", 1)  # its type read, slowly
        await asyncio.sleep(0.1)  # older than the hold, not than a hundred times its read
        await src.write("ns=2;s=Slow", 2)
        assert len(reads) == 1 and await node.read_value() == 2, reads  # was read again: 2
    finally:
        srv.unsubscribe_server_callback(CallbackType.PostRead, slow)
        await srv.delete_nodes([node])


@pytest.mark.parametrize("stated", [4.0, 4.5])
async def test_a_max_string_length_stated_as_a_double_holds(plc_server, stated) -> None:
    """An odd server states a STRING[4]'s MaxStringLength as the Double 4.0 (Part 3 gives it as UInt32), or 4.5: each
    was taken as none stated, and a 6-byte text went out for the PLC to cut."""
    srv, src, nodes, _, _, _ = plc_server
    node, prop = await text_node(await nodes["Int16"].get_parent(), 2, "Code", 4)
    held = srv.iserver.aspace._nodes[prop.nodeid].attributes[ua.AttributeIds.Value]
    held.value = ua.DataValue(ua.Variant(stated, VT.Double))
    try:
        with pytest.raises(OpcUaTypeMismatch, match="holds at most 4 bytes"):
            await src.write("ns=2;s=Code", "abcdef")
        await src.write("ns=2;s=Code", "abcd")
    finally:
        await srv.delete_nodes([prop, node])


async def test_a_write_a_faulty_server_answers_with_no_result_is_an_adapter_error_retried(
    plc_server, monkeypatch
) -> None:
    """A server answering a Write of one node with no result: IndexError ("list index out of range") escaped the
    adapter's errors. It is an OpcUaError naming the fault, retried (whether it was written is not known)."""
    from asyncua.server.internal_session import InternalSession

    from devices.opcua.client import OpcUaError

    srv, src, nodes, _, _, _ = plc_server
    node, _, _ = await _type_reads_counted(nodes, "NoAnswer")
    write = InternalSession.write

    async def no_result(self, params):
        results = await write(self, params)
        return [] if any(wv.NodeId == node.nodeid for wv in params.NodesToWrite) else results

    monkeypatch.setattr(InternalSession, "write", no_result)
    try:
        with pytest.raises(OpcUaError, match=r"answered the Write with 0 result\(s\) for 1") as e:
            await src.write("ns=2;s=NoAnswer", 5)
        assert e.value.retryable, e.value
    finally:
        await srv.delete_nodes([node])


async def test_a_write_a_faulty_server_answers_with_two_results_takes_the_first(
    plc_server, monkeypatch
) -> None:
    """A server answering a Write of one node with two results: the first is the node's (Part 4 orders them as the
    operations). It was an error, "whether it was done is not known", retried for ever though the PLC took it."""
    from asyncua.server.internal_session import InternalSession

    srv, src, nodes, _, _, _ = plc_server
    node, _, _ = await _type_reads_counted(nodes, "TwoAnswers")
    write = InternalSession.write

    async def two_results(self, params):
        results = await write(self, params)
        mine = any(wv.NodeId == node.nodeid for wv in params.NodesToWrite)
        return results + [ua.StatusCode(ua.StatusCodes.BadInternalError)] if mine else results

    monkeypatch.setattr(InternalSession, "write", two_results)
    try:
        assert await src.write("ns=2;s=TwoAnswers", 5) is None  # was: OpcUaError "with 2 result(s) for 1"
        assert (await node.read_value()) == 5
    finally:
        await srv.delete_nodes([node])


async def _holding_real(srv, nodes, name: str):
    """An INT node ``name`` holding a REAL (a gateway's, a PLC's odd answer): every write is answered BadTypeMismatch.
    (node, [its DataType Reads], the callback counting them, subscribed)."""
    node, reads, counted = await _type_reads_counted(nodes, name)
    srv.iserver.aspace._nodes[node.nodeid].attributes[ua.AttributeIds.Value].value = ua.DataValue(
        ua.Variant(0.5, VT.Double)
    )
    srv.subscribe_server_callback(CallbackType.PostRead, counted)
    return node, reads, counted


async def test_a_node_the_server_refuses_for_its_type_for_good_is_not_read_again_at_each_write(
    plc_server, monkeypatch
) -> None:
    """An INT node holding a REAL: every write is answered BadTypeMismatch. Each had the node's type read again in full
    (a Read and a Browse of its properties), at each beat for a heartbeat's; read again once and found unchanged, its
    later refusals cost one Read of its DataType, ValueRank and ArrayDimensions for a minute, and are still refused."""
    from asyncua.server.internal_session import InternalSession

    srv, src, nodes, _, _, _ = plc_server
    node, reads, counted = await _holding_real(srv, nodes, "HoldsReal")
    browse, browses = InternalSession.browse, [0]

    async def browse_counted(self, params):
        browses[0] += any(bd.NodeId == node.nodeid for bd in params.NodesToBrowse)
        return await browse(self, params)

    monkeypatch.setattr(InternalSession, "browse", browse_counted)
    try:
        for v in range(1, 6):
            with pytest.raises(OpcUaWriteRefused, match=r"BadTypeMismatch: the node is Int16, DataType i=4"):
                await src.write("ns=2;s=HoldsReal", v)
        assert browses[0] == 2, browses  # its first read, and one read again; was 6: one more at each refusal
        # those two, and one Read of its attributes at each of the 4 later writes (a download fixing it is seen; made
        # before the write, this source's targets being unwatched, and not again at its refusal)
        assert reads[0] == 6, reads
    finally:
        srv.unsubscribe_server_callback(CallbackType.PostRead, counted)
        await srv.delete_nodes([node])


async def test_a_node_refused_for_its_type_for_good_then_fixed_by_a_download_takes_the_next_write(
    plc_server,
) -> None:
    """An INT node holding a REAL, refused BadTypeMismatch for good (its type read again, found unchanged); a download
    then makes it a REAL within the minute (not watched). The next write goes out as a REAL: it was refused until the
    minute ended, naming the INT."""
    srv, src, nodes, _, _, _ = plc_server
    node, _, counted = await _holding_real(srv, nodes, "FixedToReal")
    try:
        for v in (1, 2):
            with pytest.raises(OpcUaWriteRefused, match=r"BadTypeMismatch: the node is Int16"):
                await src.write("ns=2;s=FixedToReal", v)
        await _retype(srv, node, ua.ObjectIds.Double, ua.Variant(0.5, VT.Double))
        # as a beat: no Read of this unwatched target's attributes before it; the one after its refusal sees the fix
        assert await src.write("ns=2;s=FixedToReal", 5, beat=True) is None
        dv = await node.read_data_value()
        assert (dv.Value.VariantType, dv.Value.Value) == (VT.Double, 5.0), dv
    finally:
        srv.unsubscribe_server_callback(CallbackType.PostRead, counted)
        await srv.delete_nodes([node])


async def test_the_read_before_a_write_stands_for_the_next_writes_until_a_type_status(
    plc_server, monkeypatch
) -> None:
    """An unwatched target's DataType, ValueRank and ArrayDimensions, read before a write and found unchanged, are not
    read again for the next writes within the hold (each write paid that Read: twice a write's round trips): one
    Read for three writes of 0 and false (a pulse's reset); a value not every integer and Boolean type stores alike
    (2: a BOOL's true) is read before all the same. A write
    the server answers with a type status ends the hold: its type read again, and the next write reads the
    attributes before it again."""
    from devices.opcua import client as opcua_client

    srv, src, nodes, _, _, _ = plc_server
    monkeypatch.setattr(
        opcua_client, "_PRE_CHECK_HOLD_S", 3600.0
    )  # not a timing test: the hold never ends here
    node, reads, counted = await _type_reads_counted(nodes, "HeldPreCheck")
    _write_answered(monkeypatch, node, 1, ua.StatusCodes.BadOutOfRange)
    srv.subscribe_server_callback(CallbackType.PostRead, counted)
    try:
        await src.write("ns=2;s=HeldPreCheck", 7)  # its type read, cached
        first = reads[0]
        for v in (0, False, 0):
            await src.write("ns=2;s=HeldPreCheck", v)
        assert reads[0] == first + 1, (first, reads)  # was first + 3: one Read before each write
        # a value another type would store otherwise (a download to a BOOL within the hold) is read before
        await src.write("ns=2;s=HeldPreCheck", 2)
        assert reads[0] == first + 2, (first, reads)
        with pytest.raises(OpcUaWriteRefused, match="BadOutOfRange"):
            await src.write("ns=2;s=HeldPreCheck", 1)
        assert reads[0] == first + 3, (
            first,
            reads,
        )  # no Read before it (held), its type read again for the answer
        await src.write("ns=2;s=HeldPreCheck", 5)
        assert reads[0] == first + 4, (first, reads)  # the hold ended with the type status
        assert (await node.read_data_value()).Value.Value == 5
    finally:
        srv.unsubscribe_server_callback(CallbackType.PostRead, counted)
        await srv.delete_nodes([node])


async def test_a_refusal_after_a_pre_write_read_that_could_not_read_the_type_reads_it(
    plc_server, monkeypatch
) -> None:
    """An INT node holding a REAL, refused BadTypeMismatch for good (its type read again, found unchanged); a download
    then makes it a REAL within the minute (not watched), and the Read of its attributes before the next write has
    its DataType answered Bad. That Read told nothing, yet it was taken as the INT confirmed: the write was refused
    naming the INT, its refusal's own Read skipped. Now the refusal reads the attributes, sees the REAL: 5 goes out
    as a REAL."""
    from asyncua.server.internal_session import InternalSession

    srv, src, nodes, _, _, _ = plc_server
    node, _, counted = await _holding_real(srv, nodes, "UnreadBeforeWrite")
    read, armed = InternalSession.read, [False]

    async def data_type_bad_once(self, params):
        got = await read(self, params)
        for i, r in enumerate(params.NodesToRead):
            if armed[0] and r.NodeId == node.nodeid and r.AttributeId == ua.AttributeIds.DataType:
                armed[0] = False
                got[i] = ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadInternalError))
        return got

    monkeypatch.setattr(InternalSession, "read", data_type_bad_once)
    try:
        for v in (1, 2):
            with pytest.raises(OpcUaWriteRefused, match=r"BadTypeMismatch: the node is Int16"):
                await src.write("ns=2;s=UnreadBeforeWrite", v)
        await _retype(srv, node, ua.ObjectIds.Double, ua.Variant(0.5, VT.Double))
        armed[0] = True
        assert await src.write("ns=2;s=UnreadBeforeWrite", 5) is None  # was: refused naming the Int16
        assert not armed[0]  # the pre-write Read was the one answered Bad
        dv = await node.read_data_value()
        assert (dv.Value.VariantType, dv.Value.Value) == (VT.Double, 5.0), dv
    finally:
        srv.unsubscribe_server_callback(CallbackType.PostRead, counted)
        await srv.delete_nodes([node])


@pytest.mark.parametrize(
    ("refused", "answer", "retyped", "then"),
    [
        # the agent refuses 40000 for the INT; made a REAL, 5 answered BadTypeMismatch was refused naming the INT
        (40000, None, (ua.ObjectIds.Float, ua.Variant(0.0, VT.Float)), ua.Variant(5.0, VT.Float)),
        # the agent refuses 40000 for the INT; made a DINT, 40000 again was refused by the agent, naming the INT
        (40000, None, (ua.ObjectIds.Int32, ua.Variant(0, VT.Int32)), ua.Variant(40000, VT.Int32)),
        # the server answers 300 BadOutOfRange (an EURange check); made a DINT, 40000 was refused by the agent
        (
            300,
            ua.StatusCodes.BadOutOfRange,
            (ua.ObjectIds.Int32, ua.Variant(0, VT.Int32)),
            ua.Variant(40000, VT.Int32),
        ),
    ],
)
async def test_a_type_found_unchanged_for_one_refusal_is_read_again_for_another_kind(
    plc_server, monkeypatch, refused, answer, retyped, then
) -> None:
    """An INT's type read again for a refused value and found unchanged is not read again for that kind of refusal for
    a minute; a download then retypes the node within that minute (not watched). The next value, refused for another
    kind (the server's BadTypeMismatch after the agent's refusal; the agent's own after a BadOutOfRange), has the
    type read again and is written as the new type: it was refused until the minute ended, naming the INT."""
    srv, src, nodes, _, _, _ = plc_server
    name = f"RetypedAfterRefusal{refused}To{retyped[0]}"  # a node of its own: the source keeps what it read of each
    node, _, _ = await _type_reads_counted(nodes, name)
    if answer is not None:
        _write_answered(monkeypatch, node, refused, answer)
    try:
        await src.write(f"ns=2;s={name}", 1)  # its type read, cached
        with pytest.raises(
            OpcUaWriteRefused if answer else OpcUaTypeMismatch, match="BadOutOfRange|out of range"
        ):
            await src.write(f"ns=2;s={name}", refused)
        await _retype(srv, node, *retyped)
        # as a heartbeat's beat: no Read of this unwatched target's attributes before it (that Read would see the
        # retype first); the reads a refusal makes are what is tested here
        await src.write(f"ns=2;s={name}", int(then.Value), beat=True)
        dv = await node.read_data_value()
        assert (dv.Value.VariantType, dv.Value.Value) == (then.VariantType, then.Value), dv
    finally:
        await srv.delete_nodes([node])


async def test_a_bad_out_of_range_whose_type_read_again_is_not_answered_says_so(
    plc_server, monkeypatch
) -> None:
    """A Write answered BadOutOfRange has the node's type read again (a download may have retyped it); that read not
    answered within connect_timeout_s, the write is retried, the type read at the next try. It was said "not
    answered", the server's answer to the Write unsaid.

    The read is answered only once the write has failed, however loaded the machine, on a source of its own whose
    check of the server comes after the test: asyncua's server answers a connection's requests one at a time, so a
    check of the module's source sent while that read was held waited behind it and, past connect_timeout_s, took
    the server for stalled and closed the session under the write ("connection lost")."""
    from devices.opcua.client import OpcUaServerBusy

    srv, shared, nodes, _, _, _ = plc_server
    # checked every 10 min: never while the type read is held
    source = {"type": "opcua", "endpoint": shared.settings.endpoint, "connect_timeout_s": 2}
    source["keepalive_check_s"] = 600
    src = OpcUaSource("own", parse_config({"agent": {"id": "gw"}, "sources": {"own": source}}).sources["own"])
    node, _, _ = await _type_reads_counted(nodes, "RangeSlowType")
    refused, gave_up = asyncio.Event(), asyncio.Event()
    _write_answered(monkeypatch, node, 300, ua.StatusCodes.BadOutOfRange, refused)

    # the type read after the refusal, answered once the write failed
    async def late(event, _dispatcher) -> None:
        if refused.is_set() and any(
            rv.NodeId == node.nodeid and rv.AttributeId == ua.AttributeIds.DataType
            for rv in event.request_params.NodesToRead
        ):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gave_up.wait(), 60)

    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        await src.write("ns=2;s=RangeSlowType", 1)  # its type read, cached
        srv.subscribe_server_callback(CallbackType.PostRead, late)
        with pytest.raises(OpcUaServerBusy, match=r"answered BadOutOfRange, and the node's type, read again"):
            await src.write("ns=2;s=RangeSlowType", 300)
        assert src.state.value == "connected" and src.stats.errors_by_reason == {}, src.stats.errors_by_reason
    finally:
        gave_up.set()
        srv.unsubscribe_server_callback(CallbackType.PostRead, late)
        await src.stop()
        await srv.delete_nodes([node])


async def test_a_type_read_again_that_fails_across_a_download_does_not_judge_the_write(
    plc_server, monkeypatch
) -> None:
    """A type older than its hold read again while a download takes the node away and makes it again as a
    STRING[10] (its tag's gone notice comes during the read), the server answering that read busy (as a PLC in a
    download does): the type read before (a STRING[20]) judged the write, and a 14-byte text went out. The write
    now waits (retried, as busy); made again, it is judged by the node's new type."""
    from devices.opcua import client
    from devices.opcua.client import OpcUaServerBusy

    srv, src, nodes, sent, _, _ = plc_server
    parent = await nodes["Int16"].get_parent()
    made = list(await text_node(parent, 2, "Code", 20))
    code = _tag_only_source(src.settings.endpoint, "Code")
    armed = [True]

    async def download_then_busy(event, _dispatcher) -> None:
        for i, rv in enumerate(event.request_params.NodesToRead):
            if armed[0] and rv.NodeId == made[0].nodeid and rv.AttributeId == ua.AttributeIds.DataType:
                armed[0] = False
                await _made_again_shorter(srv, parent, made, code, sent)
                event.response_params[i] = ua.DataValue(
                    StatusCode=ua.StatusCode(ua.StatusCodes.BadServerTooBusy)
                )

    await code.start()
    try:
        await until(lambda: code.state.value == "connected", 30, "the source connected")
        code.expect_writes([("ns=2;s=Code", "")])  # after the connect's check: its type is read at the write
        await code.write("ns=2;s=Code", "B-1")  # its type read: a STRING[20]
        monkeypatch.setattr(client, "_TYPE_HOLD_S", 0.05, raising=False)
        monkeypatch.setattr(client, "_TYPE_READ_SHARE", 1e6, raising=False)  # the hold alone
        await asyncio.sleep(0.1)  # its type read is older than the hold
        srv.subscribe_server_callback(CallbackType.PostRead, download_then_busy)
        with pytest.raises(OpcUaServerBusy, match="changed while its type was read again"):
            await code.write("ns=2;s=Code", "B-2026-L3-0001")  # was written, the STRING[20] judging it
        assert not armed[0] and "Code" not in sent, sent
        with pytest.raises(OpcUaTypeMismatch, match="at most 10"):
            await code.write("ns=2;s=Code", "B-2026-L3-0001")  # retried: judged by the node made again
        assert "Code" not in sent, sent
    finally:
        srv.unsubscribe_server_callback(CallbackType.PostRead, download_then_busy)
        await code.stop()
        await srv.delete_nodes(made)


def _fast_heartbeat(src: OpcUaSource, node_id: str, period_ms: int = 1) -> OpcUaSource:
    """A source on ``src``'s server beating a counter on ``node_id`` every ``period_ms`` (by default 1 ms, under the
    100 ms a config may set: many beats in a few milliseconds). Not started."""
    source = {"type": "opcua", "endpoint": src.settings.endpoint, "connect_timeout_s": 2}
    source["heartbeat"] = {"node_id": node_id, "kind": "counter"}
    settings = parse_config({"agent": {"id": "gw"}, "sources": {"hb": source}}).sources["hb"]
    assert settings.heartbeat is not None
    return OpcUaSource(
        "hb",
        settings.model_copy(
            update={"heartbeat": settings.heartbeat.model_copy(update={"period_ms": period_ms})}
        ),
    )


async def test_a_heartbeat_write_failing_unexpectedly_is_counted_and_the_beats_go_on(plc_server) -> None:
    """A heartbeat write raising anything but the adapter's errors (an IndexError of a faulty server's answer did)
    ended the heartbeat's task for the session while the source read connected: the PLC's watchdog tripped. It is
    counted (errors_by_reason['heartbeat'] on /status) and the beats go on."""
    srv, src, nodes, _, _, _ = plc_server
    beat, _, _ = await _type_reads_counted(nodes, "BeatOn")
    hb = _fast_heartbeat(src, "ns=2;s=BeatOn")
    write, faults = hb.write, [3]

    async def faulty(*args, **kwargs):
        if faults[0]:
            faults[0] -= 1
            raise RuntimeError("a faulty answer")
        return await write(*args, **kwargs)

    hb.write = faulty  # type: ignore[method-assign]
    await hb.start()
    try:
        await until(lambda: hb.heartbeats >= 2, 30, "beats after the faults")  # was: none, the task ended
        assert hb.stats.errors_by_reason["heartbeat"] == 3, hb.stats.errors_by_reason
    finally:
        await hb.stop()
        await srv.delete_nodes([beat])


async def test_a_heartbeats_next_beat_starts_a_period_after_the_last_began_however_long_it_took(
    plc_server, monkeypatch
) -> None:
    """The heartbeat slept a whole period after each beat's Read and Write: on a slow, healthy PLC the beats came a
    period and two round trips apart, and a watchdog set near the period tripped. Now the wait after a beat is what
    is left of the period since it began, and nothing after a beat that took longer than the period (the next beat
    goes at once; the missed ones are not made up in a burst). Each wait is checked against the time the beat's
    write was seen to take (its round trips made slower here), not against a clock."""
    from devices.opcua import client

    srv, src, nodes, _, _, _ = plc_server
    beat, _, _ = await _type_reads_counted(nodes, "BeatPaced")
    period = 0.2
    hb = _fast_heartbeat(src, "ns=2;s=BeatPaced", period_ms=int(period * 1000))
    loop = asyncio.get_running_loop()
    write, took, began = hb.write, [0.05], [0.0]
    waits: list[tuple[float, float]] = []  # (the wait asked after a beat, how long its write took by then)

    async def slow(*args, **kwargs):  # a slow link: each beat's round trips take ``took`` more
        began[0] = loop.time()
        try:
            return await write(*args, **kwargs)
        finally:
            await asyncio.sleep(took[0])

    class _Paced:  # the client module's asyncio, its heartbeat's waits seen
        def __getattr__(self, name):
            return getattr(asyncio, name)

        @staticmethod
        async def sleep(delay, result=None):
            task = asyncio.current_task()
            if task is not None and task.get_coro().__qualname__.endswith("._heartbeat"):
                waits.append((delay, loop.time() - began[0]))
            return await asyncio.sleep(delay, result)

    hb.write = slow  # type: ignore[method-assign]
    monkeypatch.setattr(client, "asyncio", _Paced())
    await hb.start()
    try:
        await until(lambda: len(waits) >= 3, 30, "beats taking less than the period")
        took[0] = period + 0.1  # then longer than the period
        await until(lambda: sum(w[1] > period for w in waits) >= 2, 30, "beats taking more than the period")
        for wait, taken in waits:  # was: the whole period after each
            assert wait <= max(0.0, period - taken) + 0.02, waits
    finally:
        await hb.stop()
        await srv.delete_nodes([beat])


async def test_a_heartbeat_does_not_wait_for_its_type_read_again(plc_server, monkeypatch) -> None:
    """The heartbeat's write read its node's type again once that was older than its hold: a server whose Browse
    answers in seconds (a gateway browsing the device) held the beat as long, once a hold, and one not answering it
    held it connect_timeout_s each hold, for the PLC's watchdog to trip. Never read again, a counter's node made a
    SINT by a download on a server that converts what it is sent had its beats refused past 127 for hours. The read
    is made beside the beats: here it is held 0.3 s at the source before it is sent (asyncua's server answers one
    request of a connection at a time: a read held there would hold the beats' Reads too), and beats are sent
    meanwhile."""
    from devices.opcua import client

    srv, src, nodes, _, _, _ = plc_server
    beat, _, _ = await _type_reads_counted(nodes, "Beat")
    hb = _fast_heartbeat(src, "ns=2;s=Beat")
    during: list[int] = []  # beats sent while each type read again was held
    type_again = hb._type_again
    hooked = [False]
    write_value, sent = client._write_value, [0]

    async def counted(*args, **kwargs):
        sent[0] += 1
        return await write_value(*args, **kwargs)

    async def late(node, node_id, nt):
        if hooked[0]:
            was = sent[0]
            await asyncio.sleep(0.3)
            during.append(sent[0] - was)
        return await type_again(node, node_id, nt)

    monkeypatch.setattr(client, "_write_value", counted)
    monkeypatch.setattr(hb, "_type_again", late)
    await hb.start()
    try:
        await until(lambda: hb.heartbeats >= 1, 30, "a first beat")  # its type read at the connect's check
        hooked[0] = True
        monkeypatch.setattr(client, "_TYPE_HOLD_S", 0.0, raising=False)  # every type older than its hold
        monkeypatch.setattr(client, "_TYPE_READ_SHARE", 1e6, raising=False)  # the hold alone
        await until(lambda: during, 30, "the beat's type read again")  # was: never (76cc55e4)
        assert during[0] > 0, during  # was: none, the beat waiting for the read
    finally:
        hooked[0] = False
        await hb.stop()
        await srv.delete_nodes([beat])
