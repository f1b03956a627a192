"""An OPC UA server whose clock (ServerStatus.CurrentTime) stands still while its values keep changing (its
ServerStatus thread died, its clock node is cached: a failure of embedded servers) is a broken clock, not a
halted server: its values go on GOOD as the server states them, said once (notice ``server_clock_stuck``),
and a genuine freeze (clock and values both stopped) is still caught. A clock node stating a huge
MinimumSamplingInterval does not put the frozen verdict off for hours. Against a real asyncua server on a
free loopback port."""

from __future__ import annotations

import asyncio

from asyncua import ua

from devices.base import Quality
from devices.opcua import client as client_module
from devices.opcua.client import OpcUaSource
from tests.integration.test_opcua_halt_recovery import _after_bad, _Collect, _line, _settings, _stop_clock
from tests.support.peers import free_port
from tests.support.waits import until


async def _chatter(srv, idx: int) -> None:
    """The machine's speed changes every 0.1 s: a runtime that is alive."""
    speed = srv.get_node(ua.NodeId("Speed", idx))
    n = 1.0
    while True:
        n += 1.0
        await speed.write_value(n)
        await asyncio.sleep(0.1)


async def test_a_clock_that_stands_still_while_values_change_is_said_once_and_the_values_go_on_good() -> None:
    """The server's clock, seen moving, stops while its speed keeps changing: the source says so once
    (``server_clock_stuck``), neither turns the tag BAD nor reconnects, and the values go on GOOD. Before, it
    was called a frozen runtime: the tag went BAD, the source reconnected, and in the new session (whose clock
    never moves) every value was held for good, silently."""
    port = free_port()
    srv, idx = await _line(port)
    src = OpcUaSource("plc", _settings(port, nodes=[{"node_id": f"ns={idx};s=Speed", "tag": "speed"}]))
    out, writer = None, asyncio.create_task(_chatter(srv, idx))
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: src.clock_period_s, 30, "the server's clock period learned")
        await _stop_clock(srv)
        await until(lambda: "server_clock_stuck" in src.notices.counts, 20, "the stuck clock said")
        seen = len(out.got)
        await until(lambda: len(out.got) >= seen + 10, 30, "values after it was said")
        halts, reconnects = src.halts, src.stats.reconnects
    finally:
        writer.cancel()
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    assert halts == 0 and reconnects == 0, (src.stats.errors_by_reason, src.stats.last_error)
    assert all(r.quality is Quality.GOOD for r in out.got), [
        r for r in out.got if r.quality is not Quality.GOOD
    ]
    speeds = [r.value for r in out.got]
    assert speeds == sorted(speeds), speeds
    assert src.notices.counts["server_clock_stuck"] == 1, src.notices.counts
    assert "ServerStatus.CurrentTime" in src.notices.status()["server_clock_stuck"]["message"]


async def test_after_a_genuine_freeze_values_that_change_again_go_on_good_though_the_clock_stays_stuck() -> (
    None
):
    """Clock and values both stop (a frozen runtime): still caught, the tag goes BAD and the source
    reconnects, holding the new session's stale first value. Then the values change again while the clock
    stays stuck: the held value and the new ones go on GOOD, and the broken clock is said. Before, they were
    held for good (only a clock seen moving ended the hold), with no further reconnect or notice."""
    port = free_port()
    srv, idx = await _line(port)
    src = OpcUaSource("plc", _settings(port, nodes=[{"node_id": f"ns={idx};s=Speed", "tag": "speed"}]))
    out, writer = None, None
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: out.got, 30, "the first value")
        await until(lambda: src.clock_period_s, 30, "the server's clock period learned")
        await _stop_clock(srv)
        await until(lambda: src.halts >= 1, 20, "the frozen runtime caught")
        await until(lambda: src.stats.reconnects >= 1, 20, "the source reconnected")
        await until(lambda: src.state.value == "connected", 30, "the source connected again")
        stale = _after_bad(out.got)
        writer = asyncio.create_task(_chatter(srv, idx))
        await until(lambda: len(_after_bad(out.got)) >= 5, 20, "values once they change again")
    finally:
        if writer is not None:
            writer.cancel()
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    assert src.stats.errors_by_reason.get("server_clock_frozen", 0) >= 1, src.stats.errors_by_reason
    assert stale == [], stale  # the frozen server's stale value was not passed on GOOD before
    after = _after_bad(out.got)
    assert after[0].value == 1.0, after  # the held (reconnect's) value goes on first, then the changes
    values = [r.value for r in after]
    assert values == sorted(values), values
    assert "server_clock_stuck" in src.notices.counts, src.notices.counts


async def test_a_clock_node_stating_an_hour_as_its_sampling_interval_is_still_caught_frozen(
    monkeypatch,
) -> None:
    """The clock node states a MinimumSamplingInterval of an hour (a server's mistake, or a coarse claim):
    it is taken as the clock's least period only up to ``_CLOCK_SAMPLING_MAX_S`` (10 s; lowered here so the
    test is short), so a frozen runtime (clock and values stopped) is still caught. Before, the limit was
    three times the stated hour."""
    monkeypatch.setattr(client_module, "_CLOCK_SAMPLING_MAX_S", 0.5, raising=False)
    port = free_port()
    srv, idx = await _line(port)
    await srv.write_attribute_value(
        ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime),
        ua.DataValue(ua.Variant(3_600_000.0, ua.VariantType.Double)),
        ua.AttributeIds.MinimumSamplingInterval,
    )
    src = OpcUaSource("plc", _settings(port, nodes=[{"node_id": f"ns={idx};s=Speed"}]))
    try:
        await src.start()
        await until(lambda: src.clock_period_s, 30, "the server's clock period learned")
        await _stop_clock(srv)
        await until(lambda: src.halts >= 1, 20, "the frozen runtime caught")
    finally:
        await src.stop()
        await srv.stop()
    assert src.stats.errors_by_reason.get("server_clock_frozen", 0) >= 1, src.stats.errors_by_reason
