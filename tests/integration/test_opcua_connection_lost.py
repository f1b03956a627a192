"""A lost OPC UA connection makes the tags BAD until the server is back, against a real asyncua server.

A server that closes or resets its connections (its restart or crash, a PLC rebooting) made no reading BAD: the
source reconnected with a growing pause while every consumer (a rule, a pipeline's last values, a forward to
MQTT, ``/status``) took each tag's last GOOD value as current for as long as the server stayed away. Only a
stalled or halted server's tags were made BAD. Now each tag passed on gets one BAD reading without a value,
reason ``connection_lost``, at the loss; the reconnect's first values go on GOOD after it."""

from __future__ import annotations

import asyncio

from asyncua import ua
from asyncua.common.callback import CallbackType

from devices.base import Quality
from devices.opcua.client import OpcUaSource
from tests.integration.test_opcua_bad_reasons_and_clock import _nodes
from tests.integration.test_opcua_halt_recovery import _Collect, _settings
from tests.support.peers import free_port, opcua_server
from tests.support.tcp_cut import CutRelay
from tests.support.waits import until


async def _plc(port: int):
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    await obj.add_variable(ua.NodeId("Speed", idx), "Speed", 1.0)
    await obj.add_variable(ua.NodeId("Temp", idx), "Temp", 40.0)
    await srv.start()
    return srv, idx


async def test_a_server_gone_makes_each_tag_bad_once_and_its_return_good_again_after_the_bad() -> None:
    port = free_port()
    srv, idx = await _plc(port)
    src = OpcUaSource(
        "plc",
        _settings(port, reconnect_initial_s=0.1, reconnect_max_s=0.2, nodes=_nodes(idx, "Speed", "Temp")),
    )
    out = None
    try:
        await src.start()
        out = _Collect(src)
        await until(lambda: {r.tag for r in out.got} == {"Speed", "Temp"}, 10, "both tags' values")
        await srv.stop()  # its connections closed: the source's session is lost
        await until(lambda: len(out.got) >= 4, 10, "the loss's BAD readings")
        # several reconnects refused while it is away (a pause of at most 0.2 s): no BAD reading again
        await until(lambda: src.stats.errors_by_reason.get("unreachable", 0) >= 3, 20, "reconnects refused")
        assert len(out.got) == 4, out.got
        srv, idx = await _plc(port)
        await until(lambda: len(out.got) >= 6, 20, "both tags' values after the reconnect")
        await asyncio.sleep(0.5)  # anything more the source would pass on
    finally:
        if out is not None:
            out.cancel()
        await src.stop()
        await srv.stop()
    first, lost, again = out.got[:2], out.got[2:4], out.got[4:]
    assert all(r.quality is Quality.GOOD for r in first + again), out.got
    assert {r.tag for r in lost} == {"Speed", "Temp"}, out.got
    assert all(
        r.quality is Quality.BAD and r.value is None and r.reason == "connection_lost" for r in lost
    ), lost
    bad_at = {r.tag: r.timestamp for r in lost}
    for r in again:  # its history in time order: GOOD, BAD, GOOD
        assert r.timestamp > bad_at[r.tag], out.got
    assert len(again) == 2, out.got


async def test_a_server_that_drops_each_session_at_once_is_tried_again_with_a_growing_pause() -> None:
    """A server (or a link) that takes each session and drops it again before the source's first check of it
    finds it healthy: the reconnect pause keeps growing, so the cycles of one BAD reading per tag at the loss
    and its value again at the reconnect come ever more slowly (at most one per ``reconnect_max_s``); a session
    that lives to a check starts the pause again from its shortest. Before, each session made reset the
    backoff: a flapping server was reconnected at the shortest pause for as long as it flapped, each cycle
    sending every tag's BAD reading and value again (to MQTT, the outbox, rules, ``/status``)."""
    port = free_port()
    srv, idx = await _plc(port)
    relay = CutRelay(port)
    src = OpcUaSource(
        "plc",
        _settings(
            relay.port,
            keepalive_check_s=3,
            reconnect_initial_s=0.05,
            reconnect_max_s=5,
            nodes=_nodes(idx, "Speed", "Temp"),
        ),
    )
    out = None
    attempts = []
    try:
        await src.start()
        out = _Collect(src)
        for cycle in range(1, 4):
            await until(lambda n=2 * cycle: _good(out.got) >= n, 10, "both tags' values in this session")
            relay.cut()  # dropped before the session's first check
            await until(lambda n=cycle: src.stats.reconnects >= n, 10, "the reconnect")
        await until(lambda: _good(out.got) >= 8, 10, "both tags' values after the third reconnect")
        attempts.append(src.backoff_attempts)
        await until(lambda: src.backoff_attempts == 0, 10, "the pause reset by a healthy check")
    finally:
        if out is not None:
            out.cancel()
        await src.stop()
        relay.close()
        await srv.stop()
    assert attempts == [3], (attempts, src.stats.errors_by_reason)
    lost = [r for r in out.got if r.quality is Quality.BAD]
    assert len(lost) == 6 and {r.reason for r in lost} == {"connection_lost"}, out.got


def _good(got: list) -> int:
    return sum(r.quality is Quality.GOOD for r in got)


async def test_a_session_lost_while_connecting_after_values_went_out_makes_those_tags_bad() -> None:
    """A session lost partway through connecting, after the first group of nodes (one sampling interval) was
    subscribed and its values passed on GOOD, while the server makes the second group's monitored items: the
    tags whose values went out get one BAD reading (``connection_lost``), and their values of the next session
    go on GOOD after it; a tag whose value never went out gets none. Before, only a session that had finished
    connecting was marked lost: those tags looked current for as long as the server stayed away.

    The server's own hook for created monitored items (``ItemSubscriptionCreated``, awaited before it answers)
    holds its answer to the second group until the first group's values have reached the consumer, then the
    relay between them is cut: the loss falls at that point of the connect every time."""
    port = free_port()
    srv, idx = await _plc(port)
    relay = CutRelay(port)
    out = None
    calls = []

    async def second_group_cut(event, _dispatcher) -> None:
        calls.append(len(event.request_params.ItemsToCreate))
        if len(calls) == 2:  # the first session's second group: the first's values went out
            await until(
                lambda: out is not None and {r.tag for r in out.got} == {"Speed"}, 10, "Speed's value"
            )
            relay.cut()

    srv.subscribe_server_callback(CallbackType.ItemSubscriptionCreated, second_group_cut)
    nodes = _nodes(idx, "Speed", "Temp")
    nodes[1]["sampling_interval_ms"] = 250.0  # a group (a create_monitored_items call) of its own
    src = OpcUaSource("plc", _settings(relay.port, reconnect_initial_s=0.1, reconnect_max_s=0.2, nodes=nodes))
    try:
        # the first attempt (which ``start`` awaits) ends only once a consumer got Speed's value
        starting = asyncio.create_task(src.start())
        await asyncio.sleep(0)  # ``start`` has bound the source's queue to this loop
        out = _Collect(src)
        await starting
        await until(lambda: any(r.tag == "Temp" for r in out.got), 20, "the next session's values")
        await asyncio.sleep(0.5)  # anything more the source would pass on
    finally:
        if out is not None:
            out.cancel()
        await src.stop()
        relay.close()
        await srv.stop()
    assert calls[:2] == [1, 1], calls  # the loss fell while the second group was made
    speed = [(r.quality, r.reason) for r in out.got if r.tag == "Speed"]
    assert speed == [(Quality.GOOD, None), (Quality.BAD, "connection_lost"), (Quality.GOOD, None)], out.got
    assert [r.quality for r in out.got if r.tag == "Temp"] == [Quality.GOOD], out.got
    first, bad, again = (r for r in out.got if r.tag == "Speed")
    assert bad.value is None and first.timestamp < bad.timestamp < again.timestamp, out.got
