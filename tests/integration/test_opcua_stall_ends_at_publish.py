"""A stalled OPC UA server's readings go on as soon as its new subscription publishes data again, against a
real asyncua server on a free loopback port: not held until keep-alive checks see it (two checks, 4 s at the
defaults, over which a busy source's readings past the hold's bound were dropped), and an array tag that
never changes comes back GOOD, not dropped as a waveform sent twice."""

from __future__ import annotations

import asyncio

from asyncua import ua

from devices.base import Quality
from devices.opcua.client import OpcUaSource
from tests.integration.test_opcua_halt_recovery import _Collect
from tests.integration.test_opcua_stalls_and_array_limits import _settings, _stalls_while
from tests.support.peers import free_port, opcua_server
from tests.support.waits import until


async def test_a_stalled_servers_readings_go_on_once_it_publishes_data_again_without_waiting_for_a_check() -> (
    None
):
    """The server's subscriptions stall (no data, no keep-alive, sessions up) and stay so through a
    reconnect; right after a check of the new session found it still stalled, the server publishes again
    while its value changes every 50 ms: the new values come GOOD and the halt ends before the next check
    (keepalive_check_s 2 s) could find it still halted. Before, the halt ended only at a check that saw the
    subscription's publish time move since the one before: the readings were held for up to two checks,
    and those past the hold's bound (10,000) dropped, for a server publishing normally."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:stall", "Line")
    var = await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    stalled = asyncio.Event()
    _stalls_while(srv, stalled)
    src = OpcUaSource("plc", _settings(port, keepalive_check_s=2.0, nodes=[{"node_id": f"ns={idx};s=Speed"}]))
    out = None
    churn = None
    seen: list[int] = []  # the checks that found it still halted, as the wait for its end saw them

    async def change() -> None:
        n = 10
        while True:
            n += 1
            await var.write_value(float(n))
            await asyncio.sleep(0.05)

    def ended() -> bool:
        h = src.halted
        if h is not None:
            seen.append(h["checks"])
        return h is None

    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: out.got, 30, "the first value")
        stalled.set()
        await until(lambda: any(r.quality is Quality.BAD for r in out.got), 20, "a BAD reading for the stall")
        await until(lambda: src.stats.reconnects >= 1 and src.state.value == "connected", 20, "reconnected")
        halted = src.halted
        assert halted is not None and halted["reason"] == "subscription_stalled", halted
        checks = halted["checks"]
        await until(
            lambda: (src.halted or {}).get("checks", checks) > checks and src.state.value == "connected",
            20,
            "a check of the new session that found the server still stalled",
        )
        after_check = src.halted
        assert after_check is not None, "the stall ended while the server stayed silent"
        stalled.clear()  # the next check is keepalive_check_s away
        churn = asyncio.create_task(change())
        await until(ended, 20, "the halt's end once the server publishes again")
        await until(lambda: out.got[-1].quality is Quality.GOOD and out.got[-1].value > 10, 30, "a new value")
    finally:
        if churn is not None:
            churn.cancel()
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    assert max(seen) == after_check["checks"], (seen, after_check)
    assert src.stats.dropped == 0, src.stats.dropped


async def test_an_array_tag_that_never_changes_is_good_again_after_a_stall() -> None:
    """An array tag whose value never changes (a recipe's profile, a table of setpoints) is turned BAD by a
    stall and comes back GOOD, with the same samples, once the server publishes again. Before, the new
    subscription's first value (the same source time and samples as the one passed on before the stall) was
    dropped as a waveform sent twice: the tag stayed BAD downstream until its value changed, for good on a
    quiet one."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:stall", "Line")
    await obj.add_variable(
        ua.NodeId("Profile", idx), "Profile", ua.Variant([1.0, 2.0, 3.0, 4.0], ua.VariantType.Double)
    )
    await srv.start()
    stalled = asyncio.Event()
    _stalls_while(srv, stalled)
    src = OpcUaSource("plc", _settings(port, nodes=[{"node_id": f"ns={idx};s=Profile"}]))
    out = None
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: out.got, 30, "the first value")
        stalled.set()
        await until(lambda: any(r.quality is Quality.BAD for r in out.got), 30, "a BAD reading for the stall")
        stalled.clear()
        await until(lambda: src.halted is None and src.stats.reconnects >= 1, 20, "the stall's end")
        await until(lambda: out.got[-1].quality is Quality.GOOD, 30, "the profile GOOD again")
    finally:
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    last = out.got[-1]
    assert last.tag == "Profile" and list(last.value) == [1.0, 2.0, 3.0, 4.0], out.got


async def test_a_server_that_stays_stalled_through_reconnects_turns_each_tag_bad_once() -> None:
    """The server stays stalled through several reconnects (each new subscription silent too): each tag gets
    one BAD reading for the halt, not one more at every reconnect that finds the server still silent, and
    is GOOD again once it publishes. Before, each reconnect's stall passed every tag on BAD again: a forward
    to MQTT or the cloud outbox got a BAD record per tag per reconnect for as long as the server stayed
    silent, the tags being BAD all along."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:stall", "Line")
    for name in ("Speed", "Load"):
        await obj.add_variable(ua.NodeId(name, idx), name, 1.0)
    await srv.start()
    stalled = asyncio.Event()
    _stalls_while(srv, stalled)
    src = OpcUaSource(
        "plc", _settings(port, nodes=[{"node_id": f"ns={idx};s={n}"} for n in ("Speed", "Load")])
    )
    out = None
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: len(out.got) >= 2, 30, "the first values")
        stalled.set()
        await until(lambda: any(r.quality is Quality.BAD for r in out.got), 30, "a BAD reading for the stall")
        await until(lambda: src.halts >= 3, 30, "the stall seen again after two reconnects")
        while_silent = list(out.got)
        stalled.clear()
        await until(lambda: src.halted is None, 20, "the stall's end")
        await until(lambda: sum(r.quality is Quality.GOOD for r in out.got) >= 4, 30, "both tags GOOD again")
    finally:
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    bad = sorted(r.tag for r in while_silent if r.quality is Quality.BAD)
    assert bad == ["Load", "Speed"], while_silent
    assert {r.tag for r in out.got[len(while_silent) :] if r.quality is Quality.GOOD} == {"Load", "Speed"}


async def test_a_server_that_stays_suspended_shows_its_halt_going_on_in_the_checks_on_status() -> None:
    """A server that says it is Suspended and stays so: every check of every reconnect finds it still halted,
    and ``halted['checks']`` (on /status) grows with them, as it does for a frozen clock. Before, such a check
    ended in a reconnect without being counted: the checks stood at 0 for as long as it lasted, as if no
    check had looked since the first warning."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await srv.start()
    src = OpcUaSource("plc", _settings(port, nodes=[{"node_id": f"ns={idx};s=Speed"}]))
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "connected")
        await srv.write_attribute_value(
            ua.NodeId(ua.ObjectIds.Server_ServerStatus_State),
            ua.DataValue(ua.Variant(int(ua.ServerState.Suspended), ua.VariantType.Int32)),
        )
        await until(lambda: src.halts >= 4, 30, "halted again at three reconnects")
        halted = src.halted
    finally:
        await src.stop()
        await srv.stop()
    assert halted is not None and halted["reason"] == "server_not_running", halted
    assert halted["checks"] >= 2, halted
