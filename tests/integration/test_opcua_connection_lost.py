"""A lost OPC UA connection makes the tags BAD until the server is back, against a real asyncua server.

A server that closes or resets its connections (its restart or crash, a PLC rebooting) made no reading BAD: the
source reconnected with a growing pause while every consumer (a rule, a pipeline's last values, a forward to
MQTT, ``/status``) took each tag's last GOOD value as current for as long as the server stayed away. Only a
stalled or halted server's tags were made BAD. Now each tag passed on gets one BAD reading without a value,
reason ``connection_lost``, at the loss; the reconnect's first values go on GOOD after it."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable

import pytest
from asyncua import ua
from asyncua.common.callback import CallbackType

from devices.base import Quality, Reading
from devices.opcua.client import OpcUaError, OpcUaSource, browse_server, check_server
from tests.integration.test_opcua_bad_reasons_and_clock import _nodes
from tests.integration.test_opcua_halt_recovery import _Collect, _set_state, _settings
from tests.integration.test_opcua_values_over_limit_together import _settings as _limited
from tests.support.freeze_relay import FreezeRelay
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
        await until(lambda: {r.tag for r in out.got} == {"Speed", "Temp"}, 30, "both tags' values")
        await srv.stop()  # its connections closed: the source's session is lost
        await until(lambda: len(out.got) >= 4, 30, "the loss's BAD readings")
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
            await until(lambda n=2 * cycle: _good(out.got) >= n, 30, "both tags' values in this session")
            relay.cut()  # dropped before the session's first check
            await until(lambda n=cycle: src.stats.reconnects >= n, 30, "the reconnect")
        await until(lambda: _good(out.got) >= 8, 30, "both tags' values after the third reconnect")
        attempts.append(src.backoff_attempts)
        await until(lambda: src.backoff_attempts == 0, 30, "the pause reset by a healthy check")
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
                lambda: out is not None and {r.tag for r in out.got} == {"Speed"}, 30, "Speed's value"
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


class _Hangs:
    """A PLC whose OPC UA stack hangs for new connections while its TCP stack still accepts them: connections are
    relayed to the server until ``hang``; those made after it are accepted and never answered. ``open``: how
    many of these the gateway has not closed."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port, self.hang, self.open, self.hung = upstream_port, False, 0, 0
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.hang:
            self.open += 1
            self.hung += 1
            try:
                while await reader.read(65536):
                    pass  # the Hello, unanswered
            except OSError:
                pass
            finally:
                self.open -= 1
                writer.close()
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except OSError:
                pass
            finally:
                w.close()

        for r, w in ((reader, up_w), (up_r, writer)):
            task = asyncio.create_task(pump(r, w))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()


async def test_the_close_of_a_left_session_on_a_plc_that_does_not_answer_leaves_no_connection_open() -> None:
    """A value grows over max_message_bytes: the source closes the connection and, before connecting again, the
    session that connection left on the PLC (2aa3f81a). A PLC whose OPC UA stack hangs while its TCP stack still
    accepts connections never answers that close's Hello: the attempt ended at connect_timeout_s with its
    connection left open, one more at every such cut, each holding one of the few connections an embedded PLC
    allows. Now it is closed when the attempt ends, answered or not."""
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:test:left-session-hung", "Line")
    scan = await obj.add_variable(
        ua.NodeId("Scan", idx), "Scan", ua.Variant([0.25] * 1000, ua.VariantType.Double)
    )
    await obj.add_variable(ua.NodeId("Force", idx), "Force", ua.Variant(1.5, ua.VariantType.Double))
    await srv.start()
    plc = _Hangs(port)
    settings = _limited(await plc.start(), [f"ns={idx};s=Scan", f"ns={idx};s=Force"]).model_copy(
        update={"connect_timeout_s": 0.5}
    )
    src = OpcUaSource("plc", settings)
    got: list[Reading] = []

    async def read() -> None:
        async for r in src.items():
            got.append(r)

    await src.start()
    reader = asyncio.create_task(read())
    try:
        await until(lambda: {"Scan", "Force"} <= {r.tag for r in got}, 30, "both tags")
        plc.hang = True
        await scan.write_value(ua.Variant([0.25] * 200_000, ua.VariantType.Double))  # 1.6 MB
        await until(lambda: src.stats.errors_by_reason.get("too_large", 0) >= 1, 30, "the cut")
        await until(lambda: plc.hung >= 2, 30, "the left session's close and the reconnect tried")
    finally:
        reader.cancel()
        await src.stop()
        await asyncio.sleep(0.3)
        # and a few turns of the loop: a close made at the stop reaches the PLC's handler in 3 (the transport's
        # close, the peer's EOF, its task); a 0.3-s stall of the process there had the sleep's timer go first
        for _ in range(20):
            await asyncio.sleep(0)
        left = plc.open
        await plc.close()
        await srv.stop()
    assert left == 0, f"{left} of the {plc.hung} connections made to the hung PLC left open"


class _Stalls:
    """A server whose OPC UA stack hangs: it accepts connections and never answers them (``hello``: it answers
    the Hello with an Acknowledge, then nothing). ``open``: how many of its connections the gateway has not
    closed; ``made``: how many were made."""

    def __init__(self, hello: bool) -> None:
        self.hello, self.open, self.made = hello, 0, 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.made += 1
        try:
            if self.hello and await reader.read(65536):
                # ProtocolVersion, ReceiveBufferSize, SendBufferSize, MaxMessageSize, MaxChunkCount
                body = struct.pack("<IIIII", 0, 65536, 65536, 0, 0)
                writer.write(b"ACKF" + struct.pack("<I", 8 + len(body)) + body)
            while await reader.read(65536):
                pass  # unanswered
        except OSError:
            pass
        finally:
            self.open -= 1
            writer.close()

    def close(self) -> None:
        self._server.close()


async def test_validate_online_and_browse_against_a_hung_server_leave_no_connection_open() -> None:
    """``edge-agent validate --online`` and ``browse`` connect once (``_one_off_client``). Against a server that
    accepts the connection and never answers, or answers the Hello and then nothing, each call ended at
    connect_timeout_s with an error, as it should, but its connection was left open (asyncua's cleanup does not
    run on the cancellation that ends the attempt): measured, 20 calls left 20 sockets open in the process and
    20 connections on the PLC, each holding one of the few an embedded PLC allows. Now each is closed."""
    for hello in (False, True):
        await _no_connection_left(_Stalls(hello))


async def _no_connection_left(plc: _Stalls) -> None:
    settings = _settings(await plc.start(), connect_timeout_s=0.5)
    try:
        with pytest.raises(OpcUaError, match="no answer within"):
            await check_server(settings, [])
        with pytest.raises(OpcUaError, match="no answer within"):
            await browse_server(settings)
        await until(lambda: plc.open == 0, 30, "the gateway's connections closed")
        assert plc.made >= 2, plc.made
    finally:
        plc.close()


class _Link:
    """A link between the gateway and the PLC that can go dead (``frozen``: nothing is read from either side, so
    what the gateway sends waits, as on a cut cable). ``ends``: how each of the gateway's connections ended, as
    the far side saw it once the link was back: ``reset`` (the gateway dropped what was still on its way) or
    ``eof`` (an orderly end behind every byte it had sent)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port, self.made = upstream_port, 0
        self.ends: dict[int, str] = {}
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.made += 1
        n = self.made
        await self._flowing.wait()
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def up() -> None:  # the gateway's bytes to the PLC, and how the gateway's connection ended
            try:
                while True:
                    await self._flowing.wait()
                    data = await reader.read(65536)
                    if not data:
                        self.ends[n] = "eof"
                        return
                    up_w.write(data)
            except ConnectionResetError:
                self.ends[n] = "reset"
            finally:
                up_w.close()
                writer.close()

        async def down() -> None:
            try:
                while True:
                    await self._flowing.wait()
                    data = await up_r.read(65536)
                    if not data:
                        return
                    writer.write(data)
            except OSError:
                pass

        for job in (up(), down()):
            task = asyncio.create_task(job)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()


async def test_a_connection_given_up_after_a_link_loss_is_reset_so_no_write_still_on_its_way_lands_later() -> (
    None
):
    """A link to the PLC goes dead while the session is up: the source finds the server silent and connects
    again. Its former connection was ended in order, so the gateway's kernel kept retransmitting what it held
    for it, unacknowledged on the dead link: a write that timed out (counted failed, or superseded by its reset)
    and its retries. When the link came back the PLC applied them in the session it still held, after the
    values written since on the new session: measured with a network namespace's loopback down for 4 s, a
    pulse's high value reached the PLC 2.3 s after its reset and the reject gate stayed open. Now a connection
    given up is reset, which drops what it still held (on a real link, in the gateway's kernel: nothing more is
    sent). The relay here holds the bytes itself (it acknowledged them), so the test asserts how the connection
    ended, which is what decides it on a real link."""
    port = free_port()
    srv, _ = await _plc(port)
    link = _Link(port)
    src = OpcUaSource("plc", _settings(await link.start(), connect_timeout_s=0.5, reconnect_initial_s=0.1))
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the first session")
        link.freeze()
        # the server found silent, the connection given up and another tried (accepted, not answered)
        await until(lambda: link.made >= 2, 30, "a reconnect after the loss")
        link.thaw()
        await until(lambda: 1 in link.ends, 30, "the first connection's end, once the link is back")
    finally:
        await src.stop()
        await link.close()
        await srv.stop()
    assert link.ends[1] == "reset", link.ends


async def test_validate_online_ends_at_the_first_read_a_connected_server_leaves_unanswered() -> None:
    """``edge-agent validate --online`` against a server that accepts the session and then stops answering (its
    OPC UA stack busy or hung, the link gone) waited connect_timeout_s for each node and each write target in
    turn, and blamed each ("cannot be read (TimeoutError()); check the node_id"): measured, 10 nodes and 5 targets
    at 1 s took 16 s, so a few hundred nodes at the default 5 s kept it for minutes. Now the first read left
    unanswered ends the check, naming the server's silence."""
    from asyncua.common.callback import CallbackType

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    names = [f"N{i}" for i in range(6)]
    for name in names:
        await (await obj.add_variable(ua.NodeId(name, idx), name, 1.0)).set_writable()
    asked: list[object] = []
    released = asyncio.Event()

    async def hold(
        event, _dispatcher
    ) -> None:  # the PLC's stack hung: a read of its variables never answered
        if any(rv.NodeId.NamespaceIndex == idx for rv in event.request_params.NodesToRead):
            asked.append(event.request_params.NodesToRead[0].NodeId.Identifier)
            await released.wait()

    srv.subscribe_server_callback(CallbackType.PreRead, hold)
    await srv.start()
    settings = _settings(port, connect_timeout_s=0.5, nodes=[{"node_id": f"ns={idx};s={n}"} for n in names])
    try:
        with pytest.raises(OpcUaError, match="stopped answering") as refused:
            await check_server(settings, [(f"ns={idx};s={n}", 1.0) for n in names[:3]])
    finally:
        released.set()
        await srv.stop()
    assert f"node ns={idx};s=N0" in str(refused.value), refused.value
    assert asked == ["N0"], asked  # one read waited for, not one per node and target


_ACTIVATE_SESSION, _CLOSE_SESSION = 467, 473  # their requests' binary encoding ids


class _ActivateUnanswered:
    """A link to a real PLC that takes the gateway's CreateSession and then leaves its ActivateSession unanswered
    (held here, as on a PLC busy or hung just then), and that keeps each connection's session as long as it holds
    it: its end of the connection stays open when the gateway closes its own, as a PLC keeps a session a
    connection left until its session timeout. The gateway's CloseSession passes on behind the held activation
    (the session is activated and closed), or, ``stall_close``, is held too (the PLC never answers the close),
    and ``on_close`` is called as it arrives (from the loop's handling of its bytes, before any timer of that
    turn). ``closes``: the CloseSession requests the gateway sent; ``open``: its connections not closed yet."""

    def __init__(self, upstream_port: int, stall_close: bool) -> None:
        self.upstream_port, self.stall_close, self.closes, self.open = upstream_port, stall_close, 0, 0
        self.on_close: Callable[[], object] | None = None
        self._kept: list[asyncio.BaseTransport] = []
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self._server = await asyncio.get_running_loop().create_server(lambda: _Leg(self), "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for t in self._kept:
            t.close()


class _Down(asyncio.Protocol):
    def __init__(self, to: asyncio.Transport) -> None:
        self.to = to

    def data_received(self, data: bytes) -> None:
        if not self.to.is_closing():
            self.to.write(data)


class _Leg(asyncio.Protocol):
    """The gateway's side of one connection through ``_ActivateUnanswered``."""

    def __init__(self, link: _ActivateUnanswered) -> None:
        self.link, self.buf, self.held = link, b"", []
        self.up: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.link.open += 1
        transport.pause_reading()  # until the PLC's end is open
        task = asyncio.create_task(self._open())
        self.link._tasks.add(task)
        task.add_done_callback(self.link._tasks.discard)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        up, _ = await loop.create_connection(
            lambda: _Down(self.transport), "127.0.0.1", self.link.upstream_port
        )
        self.link._kept.append(up)
        self.up = up
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        assert self.up is not None
        self.buf += data
        while len(self.buf) >= 8 and len(self.buf) >= (size := struct.unpack_from("<I", self.buf, 4)[0]):
            chunk, self.buf = self.buf[:size], self.buf[size:]
            # a message without security: its request's type id after 24 bytes of headers
            kind = struct.unpack_from("<H", chunk, 26)[0] if chunk[:3] == b"MSG" else None
            if kind == _CLOSE_SESSION:
                self.link.closes += 1
                if self.link.on_close is not None:
                    self.link.on_close()
                if not self.link.stall_close:
                    for c in self.held:
                        self.up.write(c)
                    self.held.clear()
            if kind == _ACTIVATE_SESSION or self.held or (kind == _CLOSE_SESSION and self.link.stall_close):
                self.held.append(chunk)  # and all behind it, in order
            else:
                self.up.write(chunk)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.open -= 1


async def test_a_session_made_and_not_activated_in_time_is_closed_by_validate_online() -> None:
    """A PLC that creates the session of ``validate --online`` (or ``browse``) and does not answer its activation
    within connect_timeout_s: the call ended with "no answer within", its connection was closed, but not the
    session, which the PLC kept, one of its few, until its session timeout (an hour by default). Now it is
    closed, waiting at most connect_timeout_s for the PLC's answer."""
    port = free_port()
    srv, _idx = await _plc(port)
    # as a PLC that keeps a session until its session timeout (asyncua's ends a connection left unactivated 30 s)
    srv.iserver.max_pending_activation_seconds = 3600
    link = _ActivateUnanswered(port, stall_close=False)
    settings = _settings(await link.start(), connect_timeout_s=0.5)
    try:
        with pytest.raises(OpcUaError, match="no answer within"):
            await check_server(settings, [])
        await until(lambda: link.open == 0, 30, "the gateway's connections closed")
        await until(lambda: not srv.iserver._external_sessions, 30, "the session closed on the PLC")
        assert link.closes == 1, link.closes
    finally:
        link.close()
        await srv.stop()


async def test_a_stop_while_a_one_off_connection_waits_for_its_close_is_not_taken_for_the_servers_silence() -> (
    None
):
    """The one-off connection (``validate --online``, ``browse``, the source's read of a value left out for its
    size) waits up to connect_timeout_s for the server to answer the close of its session. A cancellation then
    (the source's stop) was swallowed as if the server had not answered: the caller got an ``OpcUaError`` and
    went on, its stop left waiting on a task that outlived it. Now the cancellation reaches the caller, and the
    connection is closed."""
    port = free_port()
    srv, _idx = await _plc(port)
    link = _ActivateUnanswered(port, stall_close=True)
    # the close is held: the call is cancelled as its CloseSession arrives, before the close's timer can end it
    task = asyncio.create_task(check_server(_settings(await link.start(), connect_timeout_s=3), []))
    link.on_close = task.cancel
    try:
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), 60)
        assert link.closes == 1, link.closes
        await until(lambda: link.open == 0, 30, "the gateway's connection closed")
    finally:
        task.cancel()
        link.close()
        await srv.stop()


async def test_validate_online_blames_the_one_node_a_server_answering_others_leaves_unanswered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that answers every read but one (a node behind a device that is away, a request its stack
    drops) is not hung: validate --online names that node and target, and checks the others, as the source
    connects and reads them. f5d3165e ended the check there, calling the server busy or hung: it now reads the
    server's clock (ServerStatus.CurrentTime) after a read left unanswered, and ends only if that goes
    unanswered too."""
    from asyncua.server.uaprocessor import UaProcessor

    process = UaProcessor._process_message

    async def drop_slow(self, typeid, requesthdr, seqhdr, body):  # only a read of node Slow never answered
        if typeid == ua.NodeId(ua.ObjectIds.ReadRequest_Encoding_DefaultBinary) and b"Slow" in bytes(body):
            return True
        return await process(self, typeid, requesthdr, seqhdr, body)

    monkeypatch.setattr(UaProcessor, "_process_message", drop_slow)
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    names = ["N0", "Slow", "N2", "N3"]
    for name in names:
        await (await obj.add_variable(ua.NodeId(name, idx), name, 1.0)).set_writable()
    await srv.start()
    settings = _settings(port, connect_timeout_s=0.5, nodes=[{"node_id": f"ns={idx};s={n}"} for n in names])
    try:
        nodes, writes, tags, _ = await check_server(
            settings, [(f"ns={idx};s={n}", 1.0) for n in ("N2", "Slow")]
        )
    finally:
        await srv.stop()
    assert nodes[0] is None and nodes[2] is None and nodes[3] is None, nodes
    assert f"node ns={idx};s=Slow: no answer within 0.5s" in str(nodes[1]), nodes
    assert "server answers others" in str(nodes[1]), nodes
    assert tags == ["N0", None, "N2", "N3"], tags
    assert writes[0] is None and f"node ns={idx};s=Slow: no answer" in str(writes[1]), writes


def _sessions(srv) -> int:
    """The sessions the server holds (created and not closed or timed out)."""
    return len(srv.iserver._external_sessions)


async def test_a_session_given_up_after_a_link_loss_is_closed_at_the_reconnect_not_left_on_the_plc() -> None:
    """The connection given up after a link loss is reset (see above), which drops the CloseSession queued
    behind a stale write too: the PLC held the old session until session_timeout_s, one more at every cut
    (measured with a network namespace's loopback down 4 s, four times: 2, 3, 4 then 5 sessions held), and a
    PLC allowing a few sessions refused the source and its HMI. The source now closes that session at its next
    connect (ActivateSession on a new channel, then CloseSession), before it makes a new one. The relay drops
    the dead link's connection: nothing the source sent on it reaches the server."""
    port = free_port()
    srv, _ = await _plc(port)
    relay = FreezeRelay(port)
    src = OpcUaSource(
        "plc", _settings(relay.port, connect_timeout_s=0.5, reconnect_initial_s=0.1, session_timeout_s=600)
    )
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the first session")
        assert _sessions(srv) == 1
        relay.freeze()  # the link dead: the source finds the server silent and tries again, unanswered
        await until(lambda: src.state.value != "connected", 30, "the session given up")
        relay.drop()  # the link back, the old connection's flow gone (a NAT's state lost)
        await until(lambda: src.state.value == "connected", 30, "the session after the loss")
        await until(lambda: _sessions(srv) == 1, 30, "the old session closed")
    finally:
        await src.stop()
        relay.close()
        await srv.stop()


async def test_the_close_of_a_left_session_answered_as_its_time_limit_runs_out_is_tried_again_not_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The close of the session a link loss left (``_close_left``: ActivateSession on a new channel, then
    CloseSession) whose ActivateSession answer comes in the same turn of the loop as its time limit (a loaded
    gateway holds its loop: here the server holds it with ``time.sleep`` while its answer goes out). asyncua's
    ``wait_for`` (Python < 3.12) raised CancelledWithResultError through the close's ``except Exception``: the
    session was forgotten, its CloseSession never sent, and the PLC held it (and its subscription) beside the new
    one until session_timeout_s (measured: 2 sessions 8 s after the reconnect). Now it is the time limit it is:
    the session is kept and closed once the new connection is made."""
    from asyncua.server.uaprocessor import UaProcessor

    process = UaProcessor._process_message
    activate = ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)
    armed, held = [False], [0]

    async def answer_late(self, typeid, requesthdr, seqhdr, body):
        reuse = typeid == activate and self.session is None  # a session made on another channel: the close's
        done = await process(self, typeid, requesthdr, seqhdr, body)
        if reuse and armed[0]:
            armed[0] = False
            held[0] += 1
            time.sleep(1.5)  # the loop held while the answer goes out: past the close's 0.5-s limit
        return done

    monkeypatch.setattr(UaProcessor, "_process_message", answer_late)
    port = free_port()
    srv, idx = await _plc(port)
    relay = FreezeRelay(port)
    src = OpcUaSource(
        "plc",
        _settings(
            relay.port,
            connect_timeout_s=0.5,
            reconnect_initial_s=0.1,
            session_timeout_s=600,
            nodes=_nodes(idx, "Speed"),  # a session with a subscription outlives its connection on the server
        ),
    )
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the first session")
        relay.freeze()
        await until(lambda: src.state.value != "connected", 30, "the session given up")
        armed[0] = True
        relay.drop()
        await until(
            lambda: src.state.value == "connected" and src.stats.reconnects >= 1,
            30,
            "the session after the loss",
        )
        assert held[0] == 1
        await until(lambda: _sessions(srv) == 1, 30, "the old session closed")
    finally:
        await src.stop()
        relay.close()
        await srv.stop()


async def test_a_session_cut_while_the_close_of_the_one_before_is_still_pending_is_closed_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Session A's close at the reconnect answered as its time limit runs out, twice (kept, tried again: see
    above), and session B then cut too: the source kept one left session, A, and forgot B, which the PLC held
    beside the next session C until session_timeout_s (measured: 2 sessions 8 s after C connected). Now each left
    session is kept (up to LEFT_SESSIONS_MAX, each until its timeout) and both are closed once C is made."""
    from asyncua.server.uaprocessor import UaProcessor

    process = UaProcessor._process_message
    activate = ua.NodeId(ua.ObjectIds.ActivateSessionRequest_Encoding_DefaultBinary)
    armed, held = [0], [0]

    async def answer_late(self, typeid, requesthdr, seqhdr, body):
        reuse = typeid == activate and self.session is None  # a session made on another channel: the close's
        done = await process(self, typeid, requesthdr, seqhdr, body)
        if reuse and armed[0] > 0:
            armed[0] -= 1
            held[0] += 1
            time.sleep(1.5)  # the loop held while the answer goes out: past the close's 0.5-s limit
        return done

    monkeypatch.setattr(UaProcessor, "_process_message", answer_late)
    port = free_port()
    srv, idx = await _plc(port)
    relay = FreezeRelay(port)
    src = OpcUaSource(
        "plc",
        _settings(
            relay.port,
            connect_timeout_s=0.5,
            reconnect_initial_s=0.1,
            session_timeout_s=600,
            nodes=_nodes(idx, "Speed"),  # a session with a subscription outlives its connection on the server
        ),
    )
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "session A")
        relay.freeze()
        await until(lambda: src.state.value != "connected", 30, "session A given up")
        armed[0] = 2  # both closes of A at the reconnect (before and after B is made) answered at their limit
        relay.drop()
        await until(lambda: src.state.value == "connected" and src.stats.reconnects >= 1, 30, "session B")
        assert held[0] == 2
        relay.freeze()
        await until(lambda: src.state.value != "connected", 30, "session B given up")
        relay.drop()
        await until(lambda: src.state.value == "connected" and src.stats.reconnects >= 2, 30, "session C")
        await until(lambda: _sessions(srv) == 1, 30, "sessions A and B closed")
    finally:
        await src.stop()
        relay.close()
        await srv.stop()


def test_sessions_left_on_the_plc_are_kept_each_until_its_timeout_and_at_most_left_sessions_max() -> None:
    """The sessions kept to close at the next connect: each once (a connection closed on a message over the limit
    is recorded twice, at the cut and at its close), each given up at the timeout the server granted it, and no
    more than LEFT_SESSIONS_MAX however often the link is cut while the PLC cannot be reached."""
    from types import SimpleNamespace

    from devices.opcua import client as opc

    src = OpcUaSource("plc", _settings(4840, session_timeout_s=600))

    def cut(token: int, timeout_ms: float = 600_000) -> SimpleNamespace:
        session = SimpleNamespace(authentication_token=ua.NodeId(token, 1))
        return SimpleNamespace(uaclient=SimpleNamespace(session=session), session_timeout=timeout_ms)

    src._keep_left(cut(1))
    src._keep_left(cut(1))
    assert [left[0] for left in src._left_sessions] == [ua.NodeId(1, 1)]
    src._keep_left(cut(2, timeout_ms=1))  # the server drops it after 1 ms
    time.sleep(0.01)
    for token in range(3, 3 + opc.LEFT_SESSIONS_MAX + 1):
        src._keep_left(cut(token))
    kept = [left[0].Identifier for left in src._left_sessions]
    assert len(kept) == opc.LEFT_SESSIONS_MAX and 2 not in kept and kept[-1] == 3 + opc.LEFT_SESSIONS_MAX


async def test_a_halt_and_a_stop_on_a_healthy_link_end_the_connection_in_order() -> None:
    """Only a close the server did not answer resets the connection: a halted server's session (State
    Suspended) and a stop are closed in order on a healthy link, so a PLC that counts aborted connections sees
    none at a STOP or a program download, and the session is closed."""
    port = free_port()
    srv, _ = await _plc(port)
    link = _Link(port)
    src = OpcUaSource("plc", _settings(await link.start(), connect_timeout_s=0.5, reconnect_initial_s=0.1))
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the first session")
        await _set_state(srv, ua.ServerState.Suspended)
        await until(lambda: 1 in link.ends, 30, "the halted session's connection end")
        await _set_state(srv, ua.ServerState.Running)
        await until(lambda: src.state.value == "connected", 30, "the session after the halt")
        await src.stop()
        await until(lambda: len(link.ends) == link.made, 30, "the stopped session's connection end")
        assert set(link.ends.values()) == {"eof"}, link.ends
        assert _sessions(srv) == 0
    finally:
        await src.stop()
        await link.close()
        await srv.stop()


class _Blackout:
    """A link to the PLC through a firewall or NAT that loses its flows: ``cut()`` ends the gateway's connections
    of the moment (a reset; the PLC's ends stay open, so the PLC keeps their sessions, as it does until their
    timeout) and takes every connection made after it without passing anything on, for good (the PLC unseen:
    ``held`` counts them), until ``back()``: connections made from then on are relayed."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port, self.dark, self.held = upstream_port, False, 0
        self._live: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._kept: list[asyncio.StreamWriter] = []  # the PLC's ends of the connections cut
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.dark = True
        for writer, up_w in self._live:
            self._kept.append(up_w)
            writer.transport.abort()
        self._live.clear()

    def back(self) -> None:
        self.dark = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.dark:
            self.held += 1
            try:
                while await reader.read(65536):
                    pass  # lost on the way
            except OSError:
                pass
            writer.close()
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._live.append((writer, up_w))

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    if w.transport.is_closing():
                        return
                    w.write(data)
            except OSError:
                pass
            finally:
                if w is not up_w or up_w not in self._kept:  # a cut connection's PLC end stays open
                    w.close()

        for r, w in ((reader, up_w), (up_r, writer)):
            task = asyncio.create_task(pump(r, w))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for w in self._kept:
            w.close()


async def test_a_reconnect_once_the_link_is_back_is_not_held_by_the_close_of_the_session_the_cut_left() -> (
    None
):
    """The link to the PLC is lost (a firewall resets the flow, then drops the new ones) and comes back: the source
    first closes the session the cut left on the PLC (``_close_left``), and that close waited connect_timeout_s
    for the PLC's answer to its Hello, lost on the dead link, before each reconnect: measured through a relay
    gone silent, each attempt took 2 x connect_timeout_s, and a link back during that wait gave the PLC the source
    again only at its end. And when the new session was made after such a close went unanswered, the session
    the cut left was never closed (held on the PLC until session_timeout_s). Now a close whose Hello is
    unanswered within LEFT_HELLO_S (1 s) gives way to the reconnect, and the session is closed once the PLC
    answers the new connection. connect_timeout_s here is far beyond the test's waits."""
    port = free_port()
    srv, _ = await _plc(port)
    link = _Blackout(port)
    src = OpcUaSource(
        "plc",
        _settings(
            await link.start(),
            connect_timeout_s=60,
            reconnect_initial_s=0.1,
            reconnect_max_s=0.2,
            session_timeout_s=600,
        ),
    )
    try:
        await src.start()
        await until(lambda: src.state.value == "connected", 30, "the first session")
        link.cut()
        await until(lambda: link.held >= 1, 30, "the close of the session the cut left, tried while dark")
        link.back()  # the connection already made stays lost: its Hello is never answered
        await until(
            lambda: src.state.value == "connected" and src.stats.reconnects >= 1,
            30,
            "the reconnect once the link is back",
        )
        await until(lambda: _sessions(srv) == 1, 30, "the session the cut left closed")
    finally:
        await src.stop()
        link.close()
        await srv.stop()


_CREATE_SESSION, _CLOSE_SESSION_ID = 461, 473


class _StallsAfter:
    """A PLC whose OPC UA stack hangs once it has taken a CreateSession (``after`` "create") or an ActivateSession
    (``after`` "activate"): every request after it, on any connection, is held unanswered (its TCP stack still
    accepts connections and their Hello). ``made``: connections made; ``waited``: requests held other than a
    CloseSession (each one the gateway waits connect_timeout_s for)."""

    def __init__(self, upstream_port: int, after: str) -> None:
        self.upstream_port, self.made, self.waited, self.hung = upstream_port, 0, 0, False
        self.trigger = _CREATE_SESSION if after == "create" else _ACTIVATE_SESSION
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.made += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_w]

        async def down() -> None:
            try:
                while data := await up_r.read(65536):
                    writer.write(data)
            except OSError:
                pass

        task = asyncio.create_task(down())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        buf = b""
        try:
            while data := await reader.read(65536):
                buf += data
                while len(buf) >= 8 and len(buf) >= (size := struct.unpack_from("<I", buf, 4)[0]):
                    chunk, buf = buf[:size], buf[size:]
                    kind = struct.unpack_from("<H", chunk, 26)[0] if chunk[:3] == b"MSG" else None
                    if self.hung and chunk[:3] == b"MSG":
                        self.waited += kind != _CLOSE_SESSION_ID
                        continue
                    up_w.write(chunk)
                    self.hung = self.hung or kind == self.trigger
        except OSError:
            pass

    def close(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for w in self._writers:
            w.close()


@pytest.mark.parametrize("after", ["create", "activate"])
async def test_validate_online_and_browse_against_a_server_that_makes_the_session_and_stalls_wait_one_limit(
    after: str,
) -> None:
    """``validate --online`` and ``browse`` against a PLC that makes their session and then answers nothing took
    up to ~3x connect_timeout_s (measured at 2 s: 6 s when the activation went unanswered: the connect, the
    close, then an endpoint-list probe for a security the server had just answered on; 8 s when the first read
    did: the OperationLimits read, a node's read, the clock's read, then the close), and said "no answer within
    2.0s; check the endpoint and the server" or "browse of Objects failed (TimeoutError)". Now the first request
    left unanswered ends the call (after an activation: the OperationLimits read, and then the clock's read,
    ``_still_answers``: one unanswered request is not a hung server), naming the server and its stall, its close
    given SILENT_CLOSE_S."""
    port = free_port()
    srv, idx = await _plc(port)
    srv.iserver.max_pending_activation_seconds = 3600  # a PLC keeps a session made and not activated
    nodes = [{"node_id": f"ns={idx};s=Speed"}, {"node_id": f"ns={idx};s=Temp"}]
    try:
        for call in (lambda s: check_server(s, []), browse_server):
            plc = _StallsAfter(port, after)
            settings = _settings(await plc.start(), connect_timeout_s=0.5, nodes=nodes)
            try:
                with pytest.raises(
                    OpcUaError, match="made the session and then gave no answer within 0.5s"
                ) as e:
                    await call(settings)
            finally:
                plc.close()
            assert settings.endpoint in str(e.value), e.value
            assert plc.made == 1, plc.made  # no probe of the endpoint list: it answered on this security
            # the first request unanswered ends it (after an activation, once the clock's read goes unanswered too)
            assert plc.waited <= (1 if after == "create" else 2), plc.waited
    finally:
        await srv.stop()
