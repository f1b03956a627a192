"""What an OPC UA source writes and watches beyond plain numbers and text, against a real asyncua server on a
free loopback port: a ByteString's bytes and a DateTime written from a YAML file (each checked at load, the
bytes held to the node's and the server's stated limit before anything is sent), a write-only source on a PLC
that states it has no room for one more subscription (none is asked for, said on /status), and a server whose
session stays open while it says its values are not current (its state not Running, its clock standing
still): its tags' readings turn BAD and the source reconnects, counted and said."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from pathlib import Path

import pytest
from asyncua import Client, ua

from devices.base import Quality
from devices.opcua.client import OpcUaSource, OpcUaTypeMismatch
from edge_agent.actions import write_targets
from edge_agent.config import ConfigError, load_config, parse_config
from tests.support.peers import free_port, node_ids_written, opcua_server
from tests.support.waits import until

_CONFIG = """\
agent: {{id: gw}}
sources:
  plc:
    type: opcua
    endpoint: opc.tcp://127.0.0.1:{port}/plc/
    connect_timeout_s: 2
    keepalive_check_s: 0.3
actions:
  blob:
    type: opcua_write
    source: plc
    node_id: ns=2;s=Blob
    value: {blob}
    reset_value: {{hex: '00'}}
  stamp:
    type: opcua_write
    source: plc
    node_id: ns=2;s=Stamp
    value: {stamp}
  long:
    type: opcua_write
    source: plc
    node_id: ns=2;s=Long
    value: {{base64: '{long}'}}
"""
_LONG = bytes(range(12))  # over the server's MaxByteStringLength of 8


def _settings(port: int, **kw):
    source = {"type": "opcua", "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/", "connect_timeout_s": 2, **kw}
    return parse_config({"agent": {"id": "gw"}, "sources": {"plc": source}}).sources["plc"]


def _write(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "agent.yaml"
    blob, stamp = "{hex: 'de ad be ef'}", "2026-11-30T12:00:00+01:00"
    path.write_text(_CONFIG.format(port=port, blob=blob, stamp=stamp, long=base64.b64encode(_LONG).decode()))
    return path


async def test_bytes_and_a_time_from_a_yaml_file_reach_their_nodes_and_bytes_over_the_servers_limit_are_not_sent(
    tmp_path,
) -> None:
    """A ByteString output stated as {hex: ...} and a DateTime output written as a YAML time with its offset
    are loaded from the file (the time as its ISO text, as readings give it) and written to a real server as
    bytes and as that instant; bytes over the
    server's ServerCapabilities.MaxByteStringLength (the node states none) are named at connect and never
    sent. Before, the file was refused: a mapping was no write value, and a YAML time was to be quoted."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    assert idx == 2
    nodes = {}
    for name, variant in (
        ("Blob", ua.Variant(b"", ua.VariantType.ByteString)),
        ("Long", ua.Variant(b"", ua.VariantType.ByteString)),
        ("Stamp", ua.Variant(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), ua.VariantType.DateTime)),
    ):
        nodes[name] = await obj.add_variable(ua.NodeId(name, idx), name, variant)
        await nodes[name].set_writable()
    await srv.write_attribute_value(
        ua.NodeId(ua.ObjectIds.Server_ServerCapabilities_MaxByteStringLength),
        ua.DataValue(ua.Variant(8, ua.VariantType.UInt32)),
    )
    sent = node_ids_written(srv, idx)
    await srv.start()
    cfg = load_config(_write(tmp_path, port))
    assert cfg.actions["blob"].value == b"\xde\xad\xbe\xef" and cfg.actions["blob"].reset == b"\x00"
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(node_id, value) for _, node_id, value in write_targets(cfg)["plc"]])
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        assert set(src.target_errors) == {"ns=2;s=Long"}, src.target_errors
        said = src.target_errors["ns=2;s=Long"]
        assert "holds at most 8 bytes (the server's MaxByteStringLength" in said and "12 bytes" in said, said
        await src.write("ns=2;s=Blob", cfg.actions["blob"].value)
        await src.write("ns=2;s=Stamp", cfg.actions["stamp"].value)
        with pytest.raises(OpcUaTypeMismatch, match="the server's MaxByteStringLength"):
            await src.write("ns=2;s=Long", cfg.actions["long"].value)
        assert await nodes["Blob"].read_value() == b"\xde\xad\xbe\xef"
        stamp = await nodes["Stamp"].read_value()
        assert stamp.replace(tzinfo=dt.UTC) == dt.datetime(2026, 11, 30, 11, 0, tzinfo=dt.UTC), stamp
    finally:
        await src.stop()
        await srv.stop()
    assert "Long" not in sent and sorted(sent) == ["Blob", "Stamp"], sent


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (
            "{base64: 'AA!!'}",
            "{base64: ...} (4 characters) is not base64 text (its character 3 is not a base64 digit)",
        ),
        ("{hex: '0g'}", "{hex: ...} (2 characters) is not hex text (its character 2 is not a hex digit)"),
        ("{base32: 'AA'}", "{base64: 'AAECAw=='} or {hex: '00010203'}"),
        ("2026-11-30T12:00:00", "2026-11-30T12:00:00 has no zone"),
        ("1600-12-31T23:00:00Z", "out of the range of an OPC UA DateTime"),
        # YAML keeps a time's fraction to the microsecond: .1234567 was written to the PLC as .123456
        (
            "2026-11-30T12:00:00.1234567Z",
            "2026-11-30T12:00:00.1234567Z (line 3) is read by YAML to the microsecond, not as it shows",
        ),
        # tagged (quoted or not) it was read the same way, rounded without a word
        (
            "!!timestamp 2026-11-30T12:00:00.1234567Z",
            "!!timestamp 2026-11-30T12:00:00.1234567Z (line 3) is read by YAML to the microsecond",
        ),
        (
            "!!timestamp '2026-11-30 12:00:00.000000500+01:00'",
            "!!timestamp 2026-11-30 12:00:00.000000500+01:00 (line 3) is read by YAML to the microsecond",
        ),
        # before: "... or a list of those (found [1, 2])", its first row, read as a wrong number
        (
            "[[1, 2], [3, 4]]",
            "a matrix (a list of lists) is not supported as a write value",
        ),
    ],
    ids=[
        "bad_base64",
        "bad_hex",
        "unknown_encoding",
        "naive_time",
        "year_1600",
        "finer_than_a_microsecond",
        "finer_than_a_microsecond_tagged",
        "finer_than_a_microsecond_tagged_quoted",
        "matrix",
    ],
)
def test_bad_bytes_text_a_time_without_zone_or_out_of_range_is_refused_at_load_naming_file_and_field(
    tmp_path, value, said
) -> None:
    """Before, bad base64 or hex got the generic 'must be true/false, a number, text', and a YAML time without a
    zone (or before 1601) was told to be quoted. Quoted, such a time is text, a String node's: it loads with a
    warning (tests/unit/test_write_values_at_load.py) and a DateTime node refuses it online."""
    path = tmp_path / "agent.yaml"
    path.write_text(
        "agent: {id: gw}\nsources: {plc: {type: opcua, endpoint: 'opc.tcp://127.0.0.1:4840/'}}\n"
        f"actions: {{out: {{type: opcua_write, source: plc, node_id: ns=2;s=Out, value: {value}}}}}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"{path}: actions.out.value: " in str(e.value) and said in str(e.value), str(e.value)


def test_a_sparkplug_command_refuses_bytes_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"actions\.cmd: .*value: a Sparkplug command carries"):
        parse_config(
            {
                "agent": {"id": "gw"},
                "sources": {"mq": {"type": "mqtt", "host": "127.0.0.1"}},
                "actions": {
                    "cmd": {
                        "type": "sparkplug_command",
                        "source": "mq",
                        "group": "g",
                        "edge_node": "n",
                        "metric": "m",
                        "value": {"hex": "00"},
                        "reset_value": {"hex": "01"},
                    }
                },
            }
        )


async def test_a_write_only_source_asks_no_subscription_of_a_plc_stating_it_has_no_room() -> None:
    """A small PLC states MaxSubscriptions 1 and that it holds 1 (an HMI's): a source that only writes does
    not ask for the subscription its write-target watch would need, says so on /status, stays connected and
    writes. Before, it asked and was refused (BadTooManySubscriptions), said only as a refusal."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "S7-1200")
    srv.iserver.max_subscriptions = 1
    reject = await obj.add_variable(ua.NodeId("Reject", idx), "Reject", False)
    await reject.set_writable()
    for oid, n in (
        (ua.ObjectIds.Server_ServerCapabilities_MaxSubscriptions, 1),
        (ua.ObjectIds.Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSubscriptionCount, 1),
    ):
        await srv.write_attribute_value(ua.NodeId(oid), ua.DataValue(ua.Variant(n, ua.VariantType.UInt32)))
    await srv.start()
    hmi = Client(f"opc.tcp://127.0.0.1:{port}/plc/")
    await hmi.connect()
    await hmi.create_subscription(500, None)
    service = srv.iserver.subscription_service
    create, asked = service.create_subscription, []

    async def counted(params, *a, **kw):
        asked.append(params)
        return await create(params, *a, **kw)

    service.create_subscription = counted
    settings = _settings(port)
    src = OpcUaSource("plc", settings)
    src.expect_writes([(f"ns={idx};s=Reject", True)])
    try:
        await src.start()
        await until(lambda: "targets_unwatched" in src.notices.counts, 30, "the watch said not made")
        await src.write(f"ns={idx};s=Reject", True)
        state, written = src.state.value, await reject.read_value()
    finally:
        await src.stop()
        await hmi.disconnect()
        await srv.stop()
    said = src.notices.status()["targets_unwatched"]["message"]
    assert "states MaxSubscriptions 1, and it holds 1" in said and "none is asked for" in said, said
    assert asked == [] and state == "connected" and written is True, (asked, state, src.stats.last_error)


async def _halt_clock(srv) -> None:
    """asyncua's server moves ServerStatus.CurrentTime every second from one task: a frozen runtime's clock."""
    task, srv.iserver.time_task = srv.iserver.time_task, None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _suspend(srv) -> None:
    await srv.write_attribute_value(
        ua.NodeId(ua.ObjectIds.Server_ServerStatus_State),
        ua.DataValue(ua.Variant(int(ua.ServerState.Suspended), ua.VariantType.Int32)),
    )


@pytest.mark.parametrize(
    ("halt", "reason", "said"),
    [
        (_halt_clock, "server_clock_frozen", "ServerStatus.CurrentTime) has stood"),
        (_suspend, "server_not_running", "ServerStatus.State) is Suspended, not Running"),
    ],
    ids=["clock_frozen", "suspended"],
)
async def test_a_server_whose_session_stays_open_but_says_its_values_are_not_current_turns_its_tags_bad(
    halt, reason, said
) -> None:
    """The session and its keep-alives go on, but the server's clock stands still (a frozen runtime) or it
    says it is Suspended: the source passes each tag on BAD once, counts the reason and reconnects. Before,
    it saw a live session and its consumers kept the last values as current."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    settings = _settings(port, keepalive_check_s=0.3, nodes=[{"node_id": f"ns={idx};s=Speed"}])
    src = OpcUaSource("plc", settings)
    got: list = []

    async def collect() -> None:
        async for r in src.items():
            got.append(r)

    reader = None
    try:
        await src.start()
        reader = asyncio.create_task(collect())
        await until(lambda: got, 30, "the first value")
        # the clock's update period learned first (two changes seen: a server whose clock never moves is not
        # judged by it); the former code kept no such watch
        await until(lambda: getattr(src, "clock_period_s", 1.0), 30, "the server's clock period learned")
        await halt(srv)
        await until(lambda: src.stats.reconnects >= 1, 20, "the source reconnected")
    finally:
        if reader is not None:
            reader.cancel()
        await src.stop()
        await srv.stop()
    assert got[0].quality is Quality.GOOD and got[0].value == 1.0
    bad = [r for r in got if r.quality is Quality.BAD]
    assert bad and bad[0].tag == "Speed" and bad[0].value is None, got
    assert src.stats.errors_by_reason.get(reason, 0) >= 1 and src.halts >= 1, src.stats.errors_by_reason
    assert said in (src.stats.last_error or ""), src.stats.last_error


async def test_quoted_text_shaped_as_a_time_reaches_a_string_node_as_written_and_a_datetime_node_refuses_it(
    tmp_path,
) -> None:
    """'0000-00-00 00:00:00' (an HMI's way to clear a date field) and '2026-11-30 12:00' are a String node's
    text: loaded (with a warning) and written as they are, while a DateTime node refuses the zoneless time at
    the write, naming the node. Before, the file was refused at load, and the agent did not start."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    label = await obj.add_variable(ua.NodeId("Label", idx), "Label", "x")
    stamp = await obj.add_variable(
        ua.NodeId("Stamp", idx),
        "Stamp",
        ua.Variant(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), ua.VariantType.DateTime),
    )
    for node in (label, stamp):
        await node.set_writable()
    await srv.start()
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"agent: {{id: gw, data_dir: {tmp_path / 'data'}}}\n"
        f"sources: {{plc: {{type: opcua, endpoint: 'opc.tcp://127.0.0.1:{port}/plc/', connect_timeout_s: 2}}}}\n"
        "actions:\n"
        "  clear: {type: opcua_write, source: plc, node_id: ns=2;s=Label, value: '0000-00-00 00:00:00',"
        " reset_value: '2026-11-30 12:00'}\n"
        "  stamp: {type: opcua_write, source: plc, node_id: ns=2;s=Stamp, value: '2026-11-30 12:00'}\n"
        "  fine: {type: opcua_write, source: plc, node_id: ns=2;s=Stamp, value: '2026-11-30T12:00:00.1234567Z'}\n"
    )
    cfg = load_config(path)
    assert len(cfg.warnings) == 3, cfg.warnings
    src = OpcUaSource("plc", cfg.sources["plc"])
    await src.start()
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        await src.write("ns=2;s=Label", cfg.actions["clear"].value)
        cleared = await label.read_value()
        await src.write("ns=2;s=Label", cfg.actions["clear"].reset)
        relabelled = await label.read_value()
        with pytest.raises(OpcUaTypeMismatch, match=r"ns=2;s=Stamp.*no zone"):
            await src.write("ns=2;s=Stamp", cfg.actions["stamp"].value)
        # a time finer than the microsecond the agent writes: it went out as .123456
        with pytest.raises(OpcUaTypeMismatch, match=r"ns=2;s=Stamp.*\.1234567, is finer than a microsecond"):
            await src.write("ns=2;s=Stamp", cfg.actions["fine"].value)
        kept = await stamp.read_value()
    finally:
        await src.stop()
        await srv.stop()
    assert (cleared, relabelled) == ("0000-00-00 00:00:00", "2026-11-30 12:00")
    assert kept == dt.datetime(2000, 1, 1, tzinfo=dt.UTC), kept
