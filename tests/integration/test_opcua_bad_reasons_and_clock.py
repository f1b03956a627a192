"""What a BAD OPC UA reading says and when it is stamped, and how long a halt the agent reports lasted, against a
real asyncua server on a free loopback port.

A BAD or UNCERTAIN reading carried no reason: a rule, an action or a user reading the tag could not tell a
halted server from a sensor the server itself calls failed (BadSensorFailure). Now ``Reading.reason`` is the
status code's name where the server gave one and the source's own reason key (``server_not_running``, ...)
where the source made the BAD. After a halt, the BAD reading was stamped when the halt was seen while the next
GOOD value kept its older source time: the tag's history went back in time. Now that value is stamped when it
came (never before the BAD), its source time kept in ``source_ts``. A halt that began while the gateway's clock
was not yet set (1970: no battery-backed clock, NTP later) was said to have lasted about 56 years: durations now
come from the monotonic clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from asyncua import ua

from devices.base import Quality
from devices.opcua import client as client_module
from devices.opcua.client import OpcUaSource
from edge_agent import agent as agent_module
from tests.integration.test_opcua_halt_event import _agent, _plc
from tests.integration.test_opcua_halt_recovery import _Collect, _set_state, _settings, _stop_clock
from tests.support.peers import free_port, opcua_server
from tests.support.waits import until


async def _line(port: int):
    """A PLC with a healthy tag, a failed sensor and a value of doubtful use; its clock never moves (its state
    alone halts it)."""
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await obj.add_variable(ua.NodeId("Probe", idx), "Probe", 20.0)
    await obj.add_variable(ua.NodeId("Level", idx), "Level", 3.0)
    await srv.start()
    await _stop_clock(srv)
    for name, code in (("Probe", "BadSensorFailure"), ("Level", "UncertainLastUsableValue")):
        # the Overflow info bit set on one: the reason is the code's name without it
        status = ua.StatusCode(getattr(ua.StatusCodes, code) | (0x480 if name == "Level" else 0))
        await srv.write_attribute_value(
            ua.NodeId(name, idx), ua.DataValue(ua.Variant(7.0, ua.VariantType.Double), status)
        )
    return srv, idx


def _nodes(idx: int, *names: str) -> list[dict]:
    return [{"node_id": f"ns={idx};s={n}", "tag": n} for n in names]


async def _halted_and_back(srv, idx: int, port: int, then=None) -> list:
    """A source of the line's Speed tag started, its first value read, its server Suspended (the halt's BAD
    reading) and Running again (the tag GOOD again); ``then(got)`` awaited after that; every reading passed on."""
    src = OpcUaSource("plc", _settings(port, reconnect_initial_s=0.1, nodes=_nodes(idx, "Speed")))
    out = None
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: out.got, 30, "the first value")
        await _set_state(srv, ua.ServerState.Suspended)
        await until(lambda: any(r.quality is Quality.BAD for r in out.got), 20, "the halt's BAD reading")
        await _set_state(srv, ua.ServerState.Running)
        await until(lambda: out.got[-1].quality is Quality.GOOD and len(out.got) >= 3, 20, "GOOD again")
        if then is not None:
            await then(out.got)
    finally:
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    return out.got


async def test_bad_and_uncertain_readings_say_the_servers_status_code_or_the_sources_own_reason() -> None:
    """The server says BadSensorFailure of one node and UncertainLastUsableValue of another: their readings
    carry those names as their reason; a GOOD one carries none. The server then says Suspended: the BAD
    readings the source makes of each tag say ``server_not_running``, not a status code the server never
    gave. Before, no reading had a reason: a halted server and a failed sensor read alike."""
    port = free_port()
    srv, idx = await _line(port)
    src = OpcUaSource("plc", _settings(port, nodes=_nodes(idx, "Speed", "Probe", "Level")))
    out = None
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: {r.tag for r in out.got} >= {"Speed", "Probe", "Level"}, 30, "every tag's value")
        await _set_state(srv, ua.ServerState.Suspended)
        await until(lambda: src.halts >= 1 and len(out.got) >= 6, 20, "the halt's BAD readings")
    finally:
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    first = {}
    for r in out.got:
        first.setdefault(r.tag, r)
    assert first["Speed"].quality is Quality.GOOD and first["Speed"].reason is None, first
    assert first["Probe"].quality is Quality.BAD and first["Probe"].reason == "BadSensorFailure", first
    assert first["Level"].quality is Quality.UNCERTAIN, first
    assert first["Level"].reason == "UncertainLastUsableValue", first
    made = [r for r in out.got[3:] if r.value is None]
    assert {r.tag for r in made} == {"Speed", "Probe", "Level"}, out.got
    assert all(r.quality is Quality.BAD and r.reason == "server_not_running" for r in made), made


async def test_after_a_halt_the_tags_history_never_goes_back_in_time_and_keeps_the_source_time() -> None:
    """A tag read GOOD, the server halted (its BAD stamped then), Running again: the tag's next GOOD value, the
    same one its server dates from before the halt, is stamped after the BAD it ends, its own source time in
    ``source_ts``. Before, it kept its older source time: ordered by time, the GOOD came before the BAD."""
    port = free_port()
    srv, idx = await _line(port)
    got = await _halted_and_back(srv, idx, port)
    good, bad, again = got[0], got[1], got[2]
    assert good.quality is Quality.GOOD and bad.quality is Quality.BAD, got
    assert again.quality is Quality.GOOD and again.value == good.value, got
    assert again.timestamp > bad.timestamp >= good.timestamp, got
    assert again.source_ts == good.timestamp and good.source_ts is None and bad.source_ts is None, got
    times = [r.timestamp for r in got]
    assert times == sorted(times), got


async def _write(srv, idx: int, value: float, source_t: float) -> None:
    """The PLC's tag set to ``value``, dated ``source_t`` by the PLC's own clock."""
    stamp = dt.datetime.fromtimestamp(source_t, dt.UTC)
    await srv.write_attribute_value(
        ua.NodeId("Speed", idx),
        ua.DataValue(ua.Variant(value, ua.VariantType.Double), SourceTimestamp=stamp, ServerTimestamp=stamp),
    )


async def test_a_server_whose_clock_is_behind_ours_gets_its_own_times_back_soon_after_a_halt() -> None:
    """A PLC whose clock is 2 s behind the gateway's (well within max_clock_skew_s) halts and runs again; its
    tag's values after that are dated before the BAD the halt gave the tag (and before the time the first of
    them was stamped). They are stamped after it, in order, only until the PLC's clock passes it: then each
    value has its own source time again. Before, each was stamped when it came, and the next dated before that:
    every later value of the tag was re-stamped with the gateway's receive time for good, its own time only in
    ``source_ts`` (so would a queue's samples be, whose next notification holds samples dated before the time
    the last of the previous one came)."""
    behind_s = 2.0
    port = free_port()
    srv, idx = await _line(port)
    await _write(srv, idx, 1.0, time.time() - behind_s)
    value = 1.0

    async def values_until_its_own_time(got: list) -> None:
        async def own_time_again() -> bool:
            nonlocal value
            last = got[-1]
            if last.value == value and last.quality is Quality.GOOD and last.source_ts is None:
                return True
            if last.value == value:  # the last one written is in: the next, dated by the PLC's clock
                value += 1.0
                await _write(srv, idx, value, time.time() - behind_s)
            return False

        # a value every ~0.2 s: the PLC's clock passes the BAD 2 s (and some) after it
        await until(own_time_again, 30, "a value with its own source time again", every_s=0.2)

    got = await _halted_and_back(srv, idx, port, values_until_its_own_time)
    bad = next(r for r in got if r.quality is Quality.BAD)
    after = got[got.index(bad) + 1 :]
    assert all(r.timestamp > bad.timestamp for r in after), got
    times = [r.timestamp for r in got]
    assert times == sorted(times) and len(set(times)) == len(times), got
    assert all(r.source_ts is not None for r in after[:2]), after  # dated before the BAD: stamped after it
    assert after[-1].timestamp < after[-1].received_at - behind_s / 2, after[-1]  # the PLC's own time


async def test_the_bad_a_halt_gives_a_tag_is_never_dated_before_the_value_it_follows() -> None:
    """A PLC whose clock is a minute ahead of the gateway's (within max_clock_skew_s) dates its tag's value a
    minute ahead; it halts: the BAD reading the halt gives the tag is dated after that value, and the value it sends
    again once running is dated after the BAD. Before, the BAD was stamped by the gateway's clock alone: a minute
    before the GOOD value it follows, so a consumer ordering the tag's history by time had the halt hidden
    behind the last GOOD value."""
    port = free_port()
    srv, idx = await _line(port)
    await _write(srv, idx, 1.0, time.time() + 60.0)
    got = await _halted_and_back(srv, idx, port)
    good, bad, again = got[0], got[1], got[2]
    assert good.quality is Quality.GOOD and bad.quality is Quality.BAD and bad.reason == "server_not_running"
    assert again.quality is Quality.GOOD and again.value == good.value, got
    assert again.timestamp > bad.timestamp > good.timestamp, got
    assert bad.timestamp > bad.received_at, bad  # not by the gateway's clock: after the value it follows
    assert again.source_ts == good.timestamp, got


class _Clock:
    """The ``time`` module as the agent and the OPC UA source see it: the wall clock ``behind_s`` behind (a
    gateway that booted in 1970 and has not heard from NTP yet), the monotonic clock as it is."""

    def __init__(self, behind_s: float) -> None:
        self.behind_s = behind_s

    def time(self) -> float:
        return time.time() - self.behind_s

    def __getattr__(self, name: str):
        return getattr(time, name)


async def test_a_halt_that_began_before_ntp_set_the_clock_lasts_what_it_lasted_not_56_years(
    tmp_path: Path, monkeypatch
) -> None:
    """The gateway's clock says 1970 when the PLC halts (its source_halted says no since rather than a 1970
    one); NTP sets the clock; the PLC runs again: the halt's end says how long it lasted by the monotonic clock,
    and since when by the clock as now set. Before, halted_s was the wall clock's step: about 56 years."""
    clock = _Clock(time.time() - 100_000.0)  # 1970-01-02
    monkeypatch.setattr(agent_module, "time", clock)
    monkeypatch.setattr(client_module, "time", clock)
    port = free_port()
    srv, idx = await _line(port)
    agent = _agent(tmp_path, _plc(port, idx))
    agent.source_down_after_s = 1.0  # 30 s in service

    def halts() -> list[dict]:
        return [dict(e) for e in agent.events if e["kind"] == "source_halted"]

    began = time.monotonic()
    try:
        await agent.start()
        await until(lambda: agent.tags["plc"], 20, "the first value")
        await _set_state(srv, ua.ServerState.Suspended)
        await until(halts, 30, "source_halted")
        clock.behind_s = 0.0  # NTP has set the clock
        await asyncio.sleep(0)
        await _set_state(srv, ua.ServerState.Running)
        await until(lambda: len(halts()) >= 2, 30, "source_halted's end")
        spent = time.monotonic() - began
    finally:
        await agent.stop()
        await srv.stop()
    start, end = halts()
    assert end["active"] is False and end["halted_s"] is not None, end
    assert start["halted_s"] <= end["halted_s"] <= spent, (end, spent)
    assert start["active"] is True and start["since"] is None, start  # the clock said 1970: unknown
    # since when, by the clock as set now: within the test's own run
    since = end["since"]
    assert since is not None and since >= time.strftime(
        "%Y-%m-%dT%H:%M", time.gmtime(time.time() - spent - 60)
    )


async def test_a_value_the_server_flags_with_semantics_changed_is_passed_on_and_said_naming_the_tag() -> None:
    """A PLC download makes a temperature tag's unit °F (its EngineeringUnits changed): the server sends the next
    value Good with the SemanticsChanged info bit (OPC UA Part 4, 7.39). The value goes on GOOD as before, and
    the change is said once, naming the tag (notice ``semantics_changed`` on ``/status``): a model or a rule made
    for the former unit or range now misjudges it. Before, only a waveform whose sample rate the source reads
    from its x axis heeded the bit: any other tag's change went unsaid."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    await obj.add_variable(ua.NodeId("Temp", idx), "Temp", 20.0)
    await srv.start()
    src = OpcUaSource("plc", _settings(port, nodes=_nodes(idx, "Temp")))
    out = None
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: out.got, 30, "the first value")
        flagged = ua.DataValue(ua.Variant(68.0, ua.VariantType.Double), ua.StatusCode(0x4000))
        await srv.write_attribute_value(ua.NodeId("Temp", idx), flagged)
        await until(lambda: any(r.value == 68.0 for r in out.got), 30, "the flagged value")
    finally:
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    (r,) = [r for r in out.got if r.value == 68.0]
    assert r.quality is Quality.GOOD and r.reason is None, r
    assert src.notices.counts.get("semantics_changed") == 1, src.notices.counts
    said = src.notices.messages["semantics_changed"]
    assert "tag Temp" in said and "SemanticsChanged" in said, said


async def test_a_tag_whose_values_change_type_is_said_once_naming_both_types_and_passed_on(caplog) -> None:
    """A PLC download turns a temperature REAL in °C into an INT in tenths (Double -> Int16) without the
    SemanticsChanged bit, as most PLCs do: each value is still passed on, and the change is said once as a
    WARNING naming the tag, the node and both types (notice ``type_changed`` on ``/status``), the changes that
    follow within the spell counted, not said. A server widening a value within its family (Int16 -> Int64)
    is not a change. Before, rules and models judged numbers ten times too large without one line."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    # a node of BaseDataType (a soft PLC's or gateway's ANY): the server takes a value of any type for it
    # (asyncua's own server keeps a node to the type of its first value: made lenient, as such a server is)
    srv.iserver.aspace._is_expected_variant_type = lambda *_: True
    for name, first in (("Temp", 20.5), ("Press", 1.25)):
        await obj.add_variable(
            ua.NodeId(name, idx),
            name,
            ua.Variant(first, ua.VariantType.Double),
            None,
            ua.NodeId(ua.ObjectIds.BaseDataType),
        )
    await srv.start()
    src = OpcUaSource("plc", _settings(port, nodes=_nodes(idx, "Temp", "Press")))
    out = None
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: len(out.got) >= 2, 30, "the first values")
        for name, v, vt in (
            ("Temp", 205, ua.VariantType.Int16),
            ("Temp", 206, ua.VariantType.Int64),
            ("Temp", 20.7, ua.VariantType.Double),
            ("Press", 125, ua.VariantType.Int32),  # the same download retyped a second tag
        ):
            await srv.write_attribute_value(ua.NodeId(name, idx), ua.DataValue(ua.Variant(v, vt)))
            await until(lambda v=v: any(r.value == v for r in out.got), 30, f"the value {v}")
    finally:
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    temp = [r.value for r in out.got if r.quality is Quality.GOOD and r.tag == "Temp"]
    assert temp[-3:] == [205, 206, 20.7], out.got
    # Int16, then Double again; Press's Int32
    assert src.notices.counts.get("type_changed") == 3, src.notices.counts
    said = [r.getMessage() for r in caplog.records if "changed type" in r.getMessage()]
    assert len(said) == 2 and all(
        r.levelname == "WARNING" for r in caplog.records if "changed type" in r.getMessage()
    )  # once per tag
    assert f"tag Temp (node ns={idx};s=Temp)" in said[0] and "as Int16, before as Double" in said[0], said
    assert f"tag Press (node ns={idx};s=Press)" in said[1] and "as Int32, before as Double" in said[1], said
    # as /status shows it: each tag's first message (the first 8 tags), and how many tags changed type. Before,
    # the first tag's alone: a download that retyped several tags showed one
    assert src.notices.status()["type_changed"] == {
        "count": 3,
        "message": said[0],
        "more": [said[1]],
        "causes": 2,
    }
