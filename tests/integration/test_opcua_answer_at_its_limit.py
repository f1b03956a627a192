"""A PLC's answer that comes in the same turn of the event loop as the source's time limit on it (a loaded gateway
holds its loop past the limit: here the test's own asyncua server holds it with ``time.sleep`` while it answers).
asyncua's ``wait_for`` (Python < 3.12) then raises ``CancelledWithResultError``, a ``CancelledError`` that
``asyncio.timeout`` does not turn into ``TimeoutError``; the source took it for its own stop and its task ended for
good: ``start()`` waited for ever on a first connect (a CI run hung 360 s), and a live source stayed "connected"
and read nothing more. Now it is the time limit it is: the source reconnects."""

from __future__ import annotations

import asyncio
import time

import pytest
from asyncua import ua
from asyncua.common.callback import CallbackType
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import struct_from_binary

from devices.opcua.client import _OPERATION_LIMITS, OpcUaError, OpcUaSource, browse_server, check_server
from tests.integration.test_plc_target_watch_limits import _plc, _settings
from tests.support.peers import free_port
from tests.support.waits import until


async def test_an_answer_at_the_watchs_time_limit_on_the_first_connect_does_not_leave_start_waiting() -> None:
    """The write-target watch's CreateMonitoredItems answered while the loop is held past its 4-s limit."""
    port = free_port()
    srv, idx = await _plc(port, 100, False, ["T0"], ["Reject"])
    service = srv.iserver.subscription_service
    create = service.create_monitored_items
    held = [False]

    async def answered_late(params):
        got = await create(params)
        if not held[0] and any(
            i.ItemToMonitor.AttributeId != ua.AttributeIds.Value for i in params.ItemsToCreate
        ):
            held[0] = True
            time.sleep(5.0)  # the loop held while the answer goes out: past the watch's limit (2 x 2 s)
        return got

    service.create_monitored_items = answered_late
    line = OpcUaSource("line", _settings(port, [f"ns={idx};s=T0"]))
    line.expect_writes([(f"ns={idx};s=Reject", True)])
    try:
        async with asyncio.timeout(60):  # before: for ever
            await line.start()
        assert held[0]
        await until(lambda: line.state.value == "connected", 60, "the source connected after the late answer")
        assert line._task is not None and not line._task.done()
    finally:
        await line.stop()
        await srv.stop()


async def test_a_keepalive_answered_at_its_time_limit_makes_a_live_source_reconnect_not_stop_reading() -> (
    None
):
    """One keep-alive read (the server's status) answered while the loop is held past its 2-s limit."""
    port = free_port()
    srv, idx = await _plc(port, 100, False, ["T0"], [])
    armed = [False]

    async def post_read(event, _d) -> None:
        ids = [r.NodeId for r in event.request_params.NodesToRead]
        if armed[0] and any(n.NamespaceIndex == 0 and n.Identifier in (2256, 2258, 2259) for n in ids):
            armed[0] = False
            time.sleep(3.0)  # the loop held while the answer goes out: past the source's 2-s limit

    srv.subscribe_server_callback(CallbackType.PostRead, post_read)
    line = OpcUaSource("line", _settings(port, [f"ns={idx};s=T0"]))
    try:
        await line.start()
        await until(lambda: line.state.value == "connected", 30, "the source connected")
        armed[0] = True
        await until(lambda: not armed[0], 30, "a keep-alive read answered late")
        await until(lambda: line.stats.reconnects >= 1, 60, "the source reconnected after the late answer")
        assert line._task is not None and not line._task.done()
    finally:
        await line.stop()
        await srv.stop()


def _held_once(srv, hit) -> list[bool]:
    """The loop held 3 s (past the 2-s limit) while the answer to the first Read ``hit`` picks goes out."""
    armed = [True]

    async def post_read(event, _d) -> None:
        if armed[0] and hit(event.request_params.NodesToRead):
            armed[0] = False
            time.sleep(3.0)

    srv.subscribe_server_callback(CallbackType.PostRead, post_read)
    return armed


async def test_validate_online_and_browse_with_an_answer_at_their_time_limit_end_as_timeouts_not_cancelled() -> (
    None
):
    """The one-off connections of ``validate --online`` and ``browse``: a read answered as its time limit ran out
    raised asyncua's CancelledWithResultError out of them (their ``except Exception`` let a CancelledError
    through): validate --online ended in a traceback where a node's value read late is "not judged", and browse
    where the server's OperationLimits read late is an OpcUaError naming the server. Now each is the time limit
    it is."""
    port = free_port()
    srv, idx = await _plc(port, 100, False, ["T0"], [])
    try:
        value_read = _held_once(
            srv,
            lambda ids: any(
                r.NodeId.NamespaceIndex == idx and r.AttributeId == ua.AttributeIds.Value for r in ids
            ),
        )
        async with asyncio.timeout(60):
            nodes, _, tags, _ = await check_server(_settings(port, [f"ns={idx};s=T0"]), [])
        assert not value_read[0]
        # its shape not judged: no value read in time
        assert nodes == [None] and tags == ["T0"], (nodes, tags)
        limits = set(_OPERATION_LIMITS.values())
        limits_read = _held_once(srv, lambda ids: any(r.NodeId.Identifier in limits for r in ids))
        # the late answer is the gateway's own held loop, not a hung server: the browse goes on when the
        # server's clock is answered after it (``_still_answers``), or ends as that time limit; never cancelled
        try:
            async with asyncio.timeout(60):
                tree = await browse_server(_settings(port))
        except OpcUaError as e:
            assert "no answer within 2.0s" in str(e), e
        else:
            assert any(n.get("node_id") == f"ns={idx};s=T0" for n in _flat(tree)), tree
        assert not limits_read[0]
    finally:
        await srv.stop()


def _flat(tree: list[dict]) -> list[dict]:
    return [m for n in tree for m in (n, *_flat(n.get("children") or []))]


async def test_validate_online_and_browse_go_on_when_only_the_operation_limits_read_goes_unanswered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PLC that answers every request but the optional OperationLimits Read (which it drops) is not hung: its
    clock answers (``_still_answers``). validate --online and browse ended with "gave no answer within 2.0s:
    busy or hung" against it; now they read the node and browse, with no limits stated."""
    dropped = [0]
    process = UaProcessor._process_message
    limits = {ua.NodeId(i) for i in _OPERATION_LIMITS.values()}

    async def drop_limits_read(self, typeid, hdr, seq, body):
        if typeid == ua.NodeId(ua.ObjectIds.ReadRequest_Encoding_DefaultBinary):
            params = struct_from_binary(ua.ReadParameters, body.copy())
            if any(r.NodeId in limits for r in params.NodesToRead):
                dropped[0] += 1
                return True  # no answer
        return await process(self, typeid, hdr, seq, body)

    port = free_port()
    srv, idx = await _plc(port, 100, False, ["T0"], [])
    monkeypatch.setattr(UaProcessor, "_process_message", drop_limits_read)
    try:
        async with asyncio.timeout(60):
            nodes, _, tags, _ = await check_server(_settings(port, [f"ns={idx};s=T0"]), [])
        assert nodes == [None] and tags == ["T0"], (nodes, tags)
        async with asyncio.timeout(60):
            tree = await browse_server(_settings(port))
        assert any(n.get("node_id") == f"ns={idx};s=T0" for n in _flat(tree)), tree
        assert dropped[0] >= 2
    finally:
        monkeypatch.undo()
        await srv.stop()
