"""What a PLC gets from an action's value must be the value written in the config, or nothing: a whole
number a REAL (Float) or LREAL (Double) cannot hold arrived as another number (16777217 as 16777216 on a
Beckhoff REAL), a value too small for a REAL as 0. Against a real asyncua server on a free loopback port
with the node types PLCs expose (a TwinCAT REAL and LREAL, a Siemens INT beside them): such a value is
refused before anything is sent, named with the node and what it would have become, counted, and the
agent's other outputs are written on."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pytest
from asyncua import ua
from asyncua.common.callback import CallbackType

from devices.opcua.client import OpcUaSource, OpcUaTypeMismatch
from edge_agent.actions import ActionRunner, write_targets
from edge_agent.config import load_config, parse_config
from tests.support.peers import free_port, opcua_server, text_node
from tests.support.plc import agent_side, plc
from tests.support.results import result
from tests.support.waits import until


def _config(port: int, actions: dict | None = None):
    """An agent with one opcua source, the server on ``port``, and ``actions``."""
    return parse_config(_config_data(port, actions))


def _config_data(port: int, actions: dict | None = None) -> dict:
    """``_config``'s mapping, as a config file holds it."""
    return {
        "agent": {"id": "gw"},
        "sources": {
            "plc": {
                "type": "opcua",
                "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                "connect_timeout_s": 2.0,
                "keepalive_check_s": 0.3,
            }
        },
        "actions": actions or {},
    }


async def test_a_whole_number_a_real_or_lreal_cannot_hold_is_refused_before_anything_is_sent(caplog):
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    nodes = {}
    for name, variant in (
        ("Speed", ua.Variant(0.0, ua.VariantType.Float)),  # TwinCAT REAL
        ("Total", ua.Variant(0.0, ua.VariantType.Double)),  # TwinCAT LREAL
        ("Gain", ua.Variant(1.0, ua.VariantType.Float)),
        ("Mode", ua.Variant(0, ua.VariantType.Int16)),  # Siemens INT
    ):
        nodes[name] = await obj.add_variable(ua.NodeId(name, idx), name, variant)
        await nodes[name].set_writable()
    sent: list[tuple[str, object]] = []  # every value a write request carried, taken or not

    async def on_write(event, _dispatcher) -> None:
        for wv in event.request_params.NodesToWrite:
            if wv.NodeId.NamespaceIndex == idx:
                sent.append((wv.NodeId.Identifier, wv.Value.Value.Value))

    srv.subscribe_server_callback(CallbackType.PreWrite, on_write)
    await srv.start()

    def out(node: str, value) -> dict:
        return {
            "type": "opcua_write",
            "source": "plc",
            "node_id": f"ns={idx};s={node}",
            "value": value,
            "when": {"verdict": "NG"},
        }

    cfg = _config(
        port,
        {
            "speed": out("Speed", 16777217),  # 2**24 + 1
            "total": out("Total", 9007199254740993),  # 2**53 + 1
            "gain": out("Gain", 1.0e-50),
            "mode": out("Mode", 7),
        },
    )
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes(
        [(node_id, value) for _, node_id, value in write_targets(cfg)["plc"]]
    )  # as the agent does
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    caplog.set_level(logging.WARNING)
    try:
        await until(lambda: src.state.value == "connected", 30, "the source connected")
        for i in range(3):
            await runner.handle(["speed", "total", "gain", "mode"], result("NG", i), None)
            await runner.flush(timeout_s=5)
        # the same values within what the types hold are written exactly
        await src.write(f"ns={idx};s=Speed", 16777216)
        await src.write(f"ns={idx};s=Total", 9007199254740992)
        await src.write(f"ns={idx};s=Gain", 2.7)  # a fraction: the nearest REAL, as the PLC shows 2.7
        assert await nodes["Speed"].read_value() == 16777216.0
        assert await nodes["Total"].read_value() == 9007199254740992.0
        assert await nodes["Gain"].read_value() == float(np.float32(2.7))
        with pytest.raises(
            OpcUaTypeMismatch, match=rf"node ns={idx};s=Speed is Float; cannot write -16777217"
        ):
            await src.write(f"ns={idx};s=Speed", -16777217)
    finally:
        await src.stop()
        await srv.stop()
    # before: 16777217 arrived as 16777216.0, 2**53 + 1 as 2**53, 1e-50 as 0.0, at every result
    assert [s for s in sent if s[0] != "Mode"] == [
        ("Speed", 16777216.0),
        ("Total", 9007199254740992.0),
        ("Gain", float(np.float32(2.7))),
    ], sent
    assert [s for s in sent if s[0] == "Mode"] == [("Mode", 7)] * 3, sent  # the agent served on
    for name in ("speed", "total", "gain"):
        st = runner.stats[name]
        assert (st["failed"], st.get("retried", 0), st.get("ok", 0)) == (3, 0, 0), (name, dict(st))
    assert runner.stats["mode"]["ok"] == 3, dict(runner.stats["mode"])
    said = [r.getMessage() for r in caplog.records if r.name == "edge_agent.actions"]
    speed = [m for m in said if "'speed'" in m]
    assert len(speed) == 1, said  # said once, counted every time
    assert f"node ns={idx};s=Speed is Float; cannot write 16777217 (int)" in speed[0], speed
    assert "would arrive as 16777216" in speed[0], speed
    assert any(f"ns={idx};s=Total is Double" in m and "would arrive as 9007199254740992" in m for m in said)
    assert any(f"ns={idx};s=Gain is Float" in m and "would arrive as 0" in m for m in said), said
    # and each was named at connect, before the first result
    assert set(src.target_errors) == {f"ns={idx};s={n}" for n in ("Speed", "Total", "Gain")}, (
        src.target_errors
    )


async def test_a_text_longer_than_a_plc_string_holds_is_refused_before_anything_is_sent():
    """A Siemens STRING[20] (a batch or recipe name) states its MaxStringLength: the former code sent a
    longer text, which a server cuts (the PLC then works on another batch name) or refuses; it is now refused
    before anything is sent, counting UTF-8 bytes as the property does, and named at connect."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    batch, _ = await text_node(obj, idx, "Batch", 20)
    sent: list[object] = []

    async def on_write(event, _dispatcher) -> None:
        sent.extend(
            wv.Value.Value.Value for wv in event.request_params.NodesToWrite if wv.NodeId == batch.nodeid
        )

    srv.subscribe_server_callback(CallbackType.PreWrite, on_write)
    await srv.start()
    node_id = f"ns={idx};s=Batch"
    src = OpcUaSource("plc", _config(port).sources["plc"])
    src.expect_writes([(node_id, "B-2026-11-30-LINE3-0001")])  # 23 bytes
    await src.start()
    try:
        await until(lambda: src.target_errors, 30, "the write target checked at connect")
        assert "holds at most 20 bytes of text (its MaxStringLength" in src.target_errors[node_id], (
            src.target_errors
        )
        await src.write(node_id, "B-2026-11-30-L3-0001")  # 20 bytes: fits
        for text in ("B-2026-11-30-LINE3-0001", "Ä" * 11):  # 23 bytes; 11 characters but 22 UTF-8 bytes
            with pytest.raises(OpcUaTypeMismatch, match=rf"node {node_id} holds at most 20 bytes of text"):
                await src.write(node_id, text)
        assert await batch.read_value() == "B-2026-11-30-L3-0001"
    finally:
        await src.stop()
        await srv.stop()
    assert sent == ["B-2026-11-30-L3-0001"], sent  # before: both longer texts were sent (and stored)


async def test_a_whole_number_with_a_point_a_real_would_hold_as_another_number_is_refused_before_anything_is_sent():
    """``value: 16777217.0`` for a TwinCAT REAL arrived as 16777216 (and 123456789.0 as 123456792), while
    ``16777217`` was refused: the point made it "the nearest REAL". Now a whole number with or without its
    point arrives as itself or is refused, named at connect and at the write with what it would have
    become, and nothing is sent; a fraction is its nearest REAL, as a PLC's HMI stores it (2.7, 0.1, a
    setpoint 1234.5678), and so are 1.0e+20, the largest REAL as printed and a model's float32."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    speed = await obj.add_variable(ua.NodeId("Speed", idx), "Speed", ua.Variant(0.0, ua.VariantType.Float))
    await speed.set_writable()
    sent: list[object] = []

    async def on_write(event, _dispatcher) -> None:
        sent.extend(
            wv.Value.Value.Value for wv in event.request_params.NodesToWrite if wv.NodeId == speed.nodeid
        )

    srv.subscribe_server_callback(CallbackType.PreWrite, on_write)
    await srv.start()
    node_id = f"ns={idx};s=Speed"
    cfg = _config(
        port,
        {"speed": {"type": "opcua_write", "source": "plc", "node_id": node_id, "value": 16777217.0}},
    )
    src = OpcUaSource("plc", cfg.sources["plc"])
    src.expect_writes([(n, v) for _, n, v in write_targets(cfg)["plc"]])
    await src.start()
    runner = ActionRunner(cfg, {"plc": src})
    try:
        await until(lambda: src.target_errors, 30, "the write target checked at connect")
        assert "16777217.0 would arrive as 16777216;" in src.target_errors[node_id], src.target_errors
        await runner.handle(["speed"], result("NG", 0), None)
        await runner.flush(timeout_s=5)
        assert runner.stats["speed"]["failed"] == 1 and not runner.stats["speed"].get("ok"), runner.stats
        for value, arrives in ((123456789.0, "123456792"), (123456790.0, "123456792")):
            with pytest.raises(
                OpcUaTypeMismatch, match=rf"cannot write {value!r} .*would arrive as {arrives};"
            ):
                await src.write(node_id, value)
        assert sent == []
        for value in (2.7, 0.1, 1234.5678, 100000.001, 1.0e20, 3.4028235e38, np.float32(0.1), 16777216.0):
            await src.write(node_id, value)
            assert await speed.read_value() == float(np.float32(value)), value
    finally:
        await src.stop()
        await srv.stop()


async def test_an_exact_whole_number_with_a_point_or_an_exponent_reaches_an_integer_node_at_connect_and_at_writes():
    """``value: 1.0e+16`` (a counter preset, an ID) for an Int64 node is the float 1e16, which is the number written
    exactly: it loads, the check at connect finds the node fine, and the PLC gets 10000000000000000, as
    9007199254740992.0 and -1.0e17 get theirs. Only a float that is not the number its text shows is refused, at
    load (``9007199254740993.0``)."""
    async with plc({"Total": ua.Variant(0, ua.VariantType.Int64)}) as p:
        out = {"type": "opcua_write", "source": "plc", "node_id": p.node_id("Total")}
        cfg = _config(p.port, {"total": {**out, "value": 1.0e16}})
        events: list = []
        async with agent_side(cfg, events) as (src, runner):
            assert p.node_id("Total") not in src.target_errors, src.target_errors
            await runner.handle(["total"], result("NG", 0), None)
            await runner.flush(timeout_s=5)
            assert await p.nodes["Total"].read_value() == 10**16
            for value, meant in ((9007199254740992.0, 2**53), (-1.0e17, -(10**17))):
                await src.write(p.node_id("Total"), value)
                assert await p.nodes["Total"].read_value() == meant
        assert runner.stats["total"]["ok"] == 1 and not runner.stats["total"].get("failed"), runner.stats
        assert not [e for e in events if e["kind"] == "write_failing"], events


async def test_a_whole_number_with_an_exponent_a_float_cannot_hold_reaches_an_integer_node_as_the_config_shows(
    tmp_path,
):
    """``value: 9.007199254740993e+15`` in the config file for an Int64 counter is the float 9007199254740992.0 to
    YAML, and the PLC got 9007199254740992, counted ok, nothing said. The file's text is kept: the write value is
    the whole number it shows, so the Int64 node gets 9007199254740993 (a list's element too), an exact one
    (``1.0e+16``) is written as before, and a Double node gets the same double as before."""
    async with plc(
        {
            "Total": ua.Variant(0, ua.VariantType.Int64),
            "Preset": ua.Variant(0, ua.VariantType.Int64),
            "Ids": ua.Variant([0, 0], ua.VariantType.Int64),
            "Level": ua.Variant(0.0, ua.VariantType.Double),
        }
    ) as p:
        path = p.config_file(
            tmp_path,
            {
                "total": ("Total", "9.007199254740993e+15"),
                "preset": ("Preset", "1.0e+16"),
                "ids": ("Ids", "[1.0e+16, -9.007199254740993e+15]"),
                "level": ("Level", "9.007199254740993e+15"),
            },
        )
        cfg = load_config(path)
        events: list = []
        async with agent_side(cfg, events) as (src, runner):
            assert not src.target_errors, src.target_errors
            await runner.handle(["total", "preset", "ids", "level"], result("NG", 0), None)
            await runner.flush(timeout_s=5)
            assert await p.read() == {
                "Total": 2**53 + 1,
                "Preset": 10**16,
                "Ids": [10**16, -(2**53 + 1)],
                "Level": 9007199254740992.0,
            }
        assert all(runner.stats[a]["ok"] == 1 for a in ("total", "preset", "ids", "level")), runner.stats
        assert not [e for e in events if e["kind"] == "write_failing"], events


async def test_an_exact_value_shared_by_a_yaml_alias_or_merge_key_reaches_every_integer_node_it_is_given_to(
    tmp_path,
):
    """A value written once and shared (``value: *big``, or an output's settings taken by ``<<: *out``) is the
    same text for every action that takes it: each Int64 node gets 9007199254740993. The exact number was kept
    only where the text is written; the actions sharing it wrote 9007199254740992, counted ok, nothing said."""
    async with plc({n: ua.Variant(0, ua.VariantType.Int64) for n in ("A", "B", "C", "D")}) as p:
        path = p.config_file(
            tmp_path,
            more=f"""  a: &out {{type: opcua_write, source: plc, node_id: "{p.node_id("A")}", value: &big 9.007199254740993e+15}}
  b: {{<<: *out, node_id: "{p.node_id("B")}"}}
  c: {{type: opcua_write, source: plc, node_id: "{p.node_id("C")}", value: *big}}
  d: {{<<: {{type: opcua_write, source: plc, value: -9.007199254740993e+15}}, node_id: "{p.node_id("D")}"}}
""",
        )
        cfg = load_config(path)
        events: list = []
        async with agent_side(cfg, events) as (src, runner):
            await runner.handle(["a", "b", "c", "d"], result("NG", 0), None)
            await runner.flush(timeout_s=5)
            assert await p.read() == {"A": 2**53 + 1, "B": 2**53 + 1, "C": 2**53 + 1, "D": -(2**53 + 1)}
        assert all(runner.stats[a]["ok"] == 1 for a in "abcd"), runner.stats


async def test_a_fraction_whose_float_is_whole_or_a_number_past_int64_is_refused_by_an_integer_node(
    tmp_path, caplog
):
    """``9007199254740992.5`` and ``1.0000000000000000001`` are whole floats to YAML: an Int64 node got
    9007199254740992 and 1, counted ok, while 2.5 is refused. ``-9.223372036854775809e+18`` is -2**63 as a float:
    the node got -9223372036854775808. Each is now refused by its text, named at connect and at the write
    (counted failed, nothing sent); a Double node still gets the float, and exact forms (``3.0``, ``1.0e+16``)
    still reach an Int64 node."""
    async with plc(
        {
            **{n: ua.Variant(0, ua.VariantType.Int64) for n in ("Half", "Tiny", "Low", "Three", "Big")},
            "Level": ua.Variant(0.0, ua.VariantType.Double),
        }
    ) as p:
        values = {
            "half": ("Half", "9007199254740992.5"),
            "tiny": ("Tiny", "1.0000000000000000001"),
            "low": ("Low", "-9.223372036854775809e+18"),
            "three": ("Three", "3.0"),
            "big": ("Big", "1.0e+16"),
            "level": ("Level", "9007199254740992.5"),
        }
        path = p.config_file(tmp_path, values)
        cfg = load_config(path)
        caplog.set_level(logging.WARNING)
        async with agent_side(cfg) as (src, runner):
            await until(lambda: len(src.target_errors) == 3, 30, "the write targets checked at connect")
            await runner.handle(list(values), result("NG", 0), None)
            await runner.flush(timeout_s=5)
            assert await p.read() == {
                "Half": 0,
                "Tiny": 0,
                "Low": 0,
                "Three": 3,
                "Big": 10**16,
                "Level": 9007199254740992.0,
            }
        errors = src.target_errors
    fraction = "a fraction is never rounded or truncated for an integer node"
    assert (
        f"cannot write 9007199254740992.5 (float): write a whole number; {fraction}"
        in errors[p.node_id("Half")]
    )
    assert (
        f"cannot write 1.0000000000000000001 (float): write a whole number; {fraction}"
        in errors[p.node_id("Tiny")]
    )
    # named as written, as every refusal (before: by the digits its text shows, -9223372036854775809)
    assert "cannot write -9.223372036854775809e+18 (int): out of range" in errors[p.node_id("Low")], errors
    for action in ("half", "tiny", "low"):
        assert runner.stats[action]["failed"] == 1 and not runner.stats[action].get("ok"), runner.stats
    for action in ("three", "big", "level"):
        assert runner.stats[action]["ok"] == 1, runner.stats
    said = [r.getMessage() for r in caplog.records if r.name == "edge_agent.actions"]
    assert any("'half'" in m and "9007199254740992.5" in m and fraction in m for m in said), said
    assert any("'low'" in m and "-9.223372036854775809e+18 (int)" in m for m in said), said


async def test_a_string_node_gets_a_number_a_float_does_not_hold_as_the_config_writes_it(tmp_path):
    """``value: 9.007199254740993e+15`` to a String node (an HMI's recipe field, a record a MES reads) arrived as
    '9007199254740992.0', another number, counted ok, nothing said; ``9007199254740992.5`` as '9007199254740992.0'
    too, its fraction gone. The text is the number the line engineer wrote: a String node gets it as written
    (an array's element too), a plain float its text as before (``2.5``), an Int64 node still the whole number.
    So is every number: ``9.007199254740992e+15``, which a float holds, arrived as '9007199254740992.0', ``1.50`` as
    '1.5', ``1.0e+3`` as '1000.0', ``1.0e+16`` as '1e+16', ``0x7FFF`` as '32767'; a Double and an integer node still
    get their numbers."""
    async with plc(
        {
            "Label": ua.Variant("", ua.VariantType.String),
            "Half": ua.Variant("", ua.VariantType.String),
            "Plain": ua.Variant("", ua.VariantType.String),
            "Codes": ua.Variant(["", ""], ua.VariantType.String),
            "Total": ua.Variant(0, ua.VariantType.Int64),
            "Even": ua.Variant("", ua.VariantType.String),
            "Tenth": ua.Variant("", ua.VariantType.String),
            "Kilo": ua.Variant("", ua.VariantType.String),
            "Gain": ua.Variant(0.0, ua.VariantType.Double),
            "Count": ua.Variant(0, ua.VariantType.Int32),
            "Code": ua.Variant("", ua.VariantType.String),
            "Mask": ua.Variant(0, ua.VariantType.UInt16),
        }
    ) as p:
        path = p.config_file(
            tmp_path,
            {
                "label": ("Label", "9.007199254740993e+15"),
                "half": ("Half", "9007199254740992.5"),
                "plain": ("Plain", "2.5"),
                "codes": ("Codes", "[-9.007_199_254_740_993e+15, 1.0e+16]"),
                "total": ("Total", "9.007199254740993e+15"),
                "even": ("Even", "9.007199254740992e+15"),
                "tenth": ("Tenth", "1.50"),
                "kilo": ("Kilo", "1.0e+3"),
                "gain": ("Gain", "1.50"),
                "count": ("Count", "1.0e+3"),
                "code": ("Code", "0x7FFF"),
                "mask": ("Mask", "0x7FFF"),
            },
        )
        cfg = load_config(path)
        actions = list(cfg.actions)
        async with agent_side(cfg) as (src, runner):
            assert not src.target_errors, src.target_errors
            await runner.handle(list(actions), result("NG", 0), None)
            await runner.flush(timeout_s=5)
            assert await p.read() == {
                "Label": "9.007199254740993e+15",  # was '9007199254740992.0'
                "Half": "9007199254740992.5",  # was '9007199254740992.0'
                "Plain": "2.5",
                "Codes": ["-9.007199254740993e+15", "1.0e+16"],  # was '1e+16'
                "Total": 2**53 + 1,
                "Even": "9.007199254740992e+15",  # was '9007199254740992.0'
                "Tenth": "1.50",  # was '1.5'
                "Kilo": "1.0e+3",  # was '1000.0'
                "Gain": 1.5,
                "Count": 1000,
                "Code": "0x7FFF",  # was '32767'
                "Mask": 32767,
            }
        assert all(runner.stats[a]["ok"] == 1 for a in actions), runner.stats


async def test_a_string_node_gets_a_time_as_the_config_writes_it(tmp_path):
    """``value: 2026-11-30T12:00:00Z`` (unquoted: a time YAML reads) to a String node (an HMI's shift start, a
    record a MES reads) arrived as '2026-11-30T12:00:00+00:00', ``.5Z`` as '.500000+00:00', text the file does not
    hold, while quoted it arrived as written. It arrives as written, as a number does; a DateTime node gets the
    same instant as before, and a form the agent's ISO reading does not take (several spaces before the time)
    reaches a String node as its ISO text, as before."""
    async with plc(
        {
            "Start": ua.Variant("", ua.VariantType.String),
            "Half": ua.Variant("", ua.VariantType.String),
            "Shifts": ua.Variant(["", ""], ua.VariantType.String),
            "Spaced": ua.Variant("", ua.VariantType.String),
            "When": ua.Variant(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), ua.VariantType.DateTime),
        }
    ) as p:
        path = p.config_file(
            tmp_path,
            {
                "start": ("Start", "2026-11-30T12:00:00Z"),
                "half": ("Half", "2026-11-30 12:00:00.5Z"),
                "shifts": ("Shifts", "[2026-11-30T06:00:00+01:00, 2026-11-30T14:00:00-00:00]"),
                "spaced": ("Spaced", "2026-11-30   12:00:00Z"),
                "when": ("When", "2026-11-30 12:00:00.5Z"),
            },
        )
        cfg = load_config(path)
        async with agent_side(cfg) as (src, runner):
            assert not src.target_errors, src.target_errors
            await runner.handle(list(cfg.actions), result("NG", 0), None)
            await runner.flush(timeout_s=5)
            got = await p.read()
        assert {k: v for k, v in got.items() if k != "When"} == {
            "Start": "2026-11-30T12:00:00Z",  # was '2026-11-30T12:00:00+00:00'
            "Half": "2026-11-30 12:00:00.5Z",  # was '2026-11-30T12:00:00.500000+00:00'
            "Shifts": ["2026-11-30T06:00:00+01:00", "2026-11-30T14:00:00-00:00"],  # the second was '+00:00'
            "Spaced": "2026-11-30T12:00:00+00:00",
        }
        assert got["When"].replace(tzinfo=dt.UTC) == dt.datetime(
            2026, 11, 30, 12, 0, 0, 500000, tzinfo=dt.UTC
        )
        assert all(runner.stats[a]["ok"] == 1 for a in cfg.actions), runner.stats


async def test_a_number_too_small_for_a_double_is_refused_by_a_float_or_double_node_not_written_as_0(
    tmp_path, caplog
):
    """``value: 1.0e-400`` (a limit, a gain written in a unit too coarse) is 0.0 to YAML, past a double's smallest
    (4.9e-324), as ``1.0e-330`` is: a REAL and an LREAL node got 0.0 (``-1.0e-400``: -0.0), counted ok, nothing
    said, while ``1.0e-50`` to a REAL is refused as it would arrive as 0. Each is now refused by its text, named
    at connect and at the write (counted failed, nothing sent); a String node still gets the text, and a REAL
    the smallest it holds. ``1.0e-320``, which an LREAL holds only as a subnormal (below about 2.2e-308, its digits
    going), arrived as 9.99988867182683e-321, counted ok: refused as a REAL's below 1.2e-38 is."""
    async with plc(
        {
            "Gain": ua.Variant(5.0, ua.VariantType.Float),  # TwinCAT REAL
            "Limit": ua.Variant(5.0, ua.VariantType.Double),  # TwinCAT LREAL
            "Low": ua.Variant(5.0, ua.VariantType.Double),
            "Neg": ua.Variant(5.0, ua.VariantType.Double),
            "Sub": ua.Variant(5.0, ua.VariantType.Double),
            "Label": ua.Variant("", ua.VariantType.String),
            "Small": ua.Variant(5.0, ua.VariantType.Float),
        }
    ) as p:
        values = {
            "gain": ("Gain", "1.0e-400"),
            "limit": ("Limit", "1.0e-400"),
            "low": ("Low", "1.0e-330"),
            "neg": ("Neg", "-1.0e-400"),
            "sub": ("Sub", "1.0e-320"),
            "label": ("Label", "1.0e-400"),
            "small": ("Small", "1.2e-38"),
        }
        path = p.config_file(tmp_path, values)
        cfg = load_config(path)
        caplog.set_level(logging.WARNING)
        async with agent_side(cfg) as (src, runner):
            await until(lambda: len(src.target_errors) == 5, 30, "the write targets checked at connect")
            await runner.handle(list(values), result("NG", 0), None)
            await runner.flush(timeout_s=5)
            # before: Gain, Limit and Low held 0.0, Neg -0.0
            assert await p.read() == {
                "Gain": 5.0,
                "Limit": 5.0,
                "Low": 5.0,
                "Neg": 5.0,
                "Sub": 5.0,
                "Label": "1.0e-400",
                "Small": float(np.float32(1.2e-38)),
            }
        errors = src.target_errors
    for node, text, kind in (
        ("Gain", "1.0e-400", "Float"),
        ("Limit", "1.0e-400", "Double"),
        ("Low", "1.0e-330", "Double"),
        ("Neg", "-1.0e-400", "Double"),
    ):
        error = errors[p.node_id(node)]
        assert f"is {kind}; cannot write {text} (float): too small for a " in error, error
        assert error.endswith("; write 0"), error
    assert (
        "a 64-bit Double (LREAL)" in errors[p.node_id("Limit")]
        and "would arrive as 0;" in errors[p.node_id("Limit")]
    )
    assert "would arrive as -0;" in errors[p.node_id("Neg")], errors
    assert errors[p.node_id("Sub")].endswith(
        "cannot write 1.0e-320 (float): too small for a 64-bit Double (LREAL) (below about 2.2e-308): it would arrive "
        "as 9.99988867e-321, its digits lost; write 0"
    ), errors
    for action in ("gain", "limit", "low", "neg", "sub"):
        assert runner.stats[action]["failed"] == 1 and not runner.stats[action].get("ok"), runner.stats
    for action in ("label", "small"):
        assert runner.stats[action]["ok"] == 1, runner.stats
    said = [r.getMessage() for r in caplog.records if r.name == "edge_agent.actions"]
    assert any("'low'" in m and "1.0e-330" in m and "would arrive as 0" in m for m in said), said
