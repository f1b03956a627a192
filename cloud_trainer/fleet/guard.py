"""What the fleet service does before a request reaches a servicer: malformed messages and quotas.

**Malformed messages.** grpcio answers a request it cannot deserialize with ``UNKNOWN: Unexpected
<class 'DecodeError'>``. ``MalformedRequests`` (a server interceptor) wraps every method's request
deserializer so that a decoding failure becomes ``INVALID_ARGUMENT`` naming the method, for unary and
streaming requests alike; ``json_field`` does the same for the JSON strings some messages carry.

**Batches in flight** (``Quotas.reserve``/``hold``, ``MalformedRequests``' ``held`` methods: ``PushRecords``): a
stream asks grpc for its next batch only while its tenant's batches received and not yet answered, plus those being
read, are within ``tenant_in_flight_bytes`` and every tenant's within ``in_flight_bytes``, at most
``tenant_receiving_batches`` of a tenant's read at once; the others wait unread (grpc reads a message whole once
asked for it), and one that found no room for ``in_flight_wait_s`` is ``RESOURCE_EXHAUSTED`` unparsed.

**Calls open** (``Quotas.open_call``, ``MalformedRequests._counted``): a caller's calls of every method open at
once, on however many connections, are at most ``concurrent_calls``; the one past it is ``RESOURCE_EXHAUSTED`` at
once, nothing of it read (grpc's Python server has no hook per connection: a call is what it sees).

**Per-agent quotas** (``Quotas``), each refused with ``RESOURCE_EXHAUSTED`` and a one-line reason:
concurrent streaming calls per agent, record bytes per second and records per second (token buckets
with one second of burst), and sample bytes per UTC day; and one message is at most
``max_message_bytes`` (grpc's receive limit), so that a flood costs at most streams × that in memory.
State reports (``Heartbeat`` calls, reports on the ``Connect`` stream) and deployment reports are
counted too (``take_report``: reports per second and their bytes per second, one second of burst), and
one report is at most ``max_report_bytes`` (``INVALID_ARGUMENT``: it could never pass). Every report is
a write to the store every tenant shares (SQLite: behind one lock, each commit an fsync), so without a
bound one agent heartbeating in a loop with megabytes of labels held that store and the service's loop
for all: another tenant's heartbeat and batch took 2 s instead of 7 ms (0.06 s now, the floor of a flood of
refused calls on the same 2 cores). Counters are kept per service process: with
N replicas behind a load balancer an agent can get up to N times the limits (bounded). The per-tenant
quotas that must hold across replicas (agents, records, record and sample bytes per day) are counted in the
store instead (``Store.admit_agent`` / ``ingest``, set by the platform operator). Their current
values are in ``snapshot()`` (the console's ``/api/quotas``). Counters are keyed by ``(tenant, agent)``,
never by a string built from both, so that no agent id of one tenant can name another tenant's agent's
counters; ``snapshot(tenant)`` is one tenant's counters only, keyed by agent id. Every refusal is logged too (a
WARNING naming the tenant, the caller and the limit), once per ``REFUSAL_LOG_S`` per caller and limit with the
count since: a cloud admin sees which gateway is refused, and an agent retrying in a loop does not fill the log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial

import grpc

from cloud_trainer.fleet.faults import Refusal

log = logging.getLogger(__name__)

REFUSAL_LOG_S = 60.0  # a caller's refusals of one limit are logged at most this often (with the count since)
# callers and limits whose last line is remembered (past it, those of the last minute are kept)
REFUSALS_SAID_KEPT = 100_000
REFUSED_AGENTS_KEPT = 10_000  # the distinct agents of a tenant a per-tenant line counts (names the first few)
# what a tenant's first batch is expected to take, before one of its batches was seen (agents send <= 1 MB)
EXPECTED_BATCH_BYTES = 1024 * 1024
# a read of a batch not in within this gives back its place among its tenant's tenant_receiving_batches and the
# bytes set aside for it (an idle stream on a dead path, a slow link): its bytes are counted once they are in, and
# it is refused unparsed if its tenant or the service has no room for them then (``Quotas.hold_late``)
RECEIVE_SLOT_S = 5.0
# the same for a stream's later messages: an agent's uplink keeps its PushRecords stream open while idle (a few
# records a second go up as batches on one stream), so a read of its next batch mostly waits for records that are
# not there yet; held 5 s, 40 idle agents of a tenant held its places and their batches waited up to 3 s for one
# (more agents: past in_flight_wait_s, refused). An agent draining a backlog sends its next batch within this of
# its ack: read within a place as before
NEXT_SLOT_S = 0.25
# the state of a tenant or agent idle this long is forgotten (``Quotas.forget_idle``, ``free_gates``): rate buckets
# full again, day budgets of days past, per-tenant gates no call holds. Kept, it grew with every tenant and agent the
# process ever saw (~1.4 KB each, measured), on a shared platform with agents replaced over months
IDLE_FORGET_S = 600.0


class _Malformed:
    def __init__(self, why: str) -> None:
        self.why = why


def _message(method: str, exc: Exception) -> str:
    return (
        f"{method}: the request is not a valid protobuf message ({type(exc).__name__}); nothing was processed"
    )


class MalformedRequests(grpc.aio.ServerInterceptor):
    """``max_bytes``: method -> the largest request message it takes, refused (``INVALID_ARGUMENT``) before it is
    parsed: parsing is done on the service's one event loop, and an 8-MB state report (70,000 labels) took
    0.23 s of it, so a refusal after the parse still let one agent stall every stream of every tenant.

    With ``quotas`` and ``caller`` (the context's caller: its quota key and how to name it), a method whose
    request is one message (``Heartbeat``, ``DownloadPackage``, every admin method) is served as a request stream
    of one message, so that the caller's calls whose request is being received are counted
    (``Quotas.open_request``) before grpc reads a byte of it: grpc holds a request whole, up to
    ``max_message_bytes`` (16 MB), before the method's handler runs, and one agent certificate holding 40 stalled
    15-MB heartbeats took the service from 67 to 683 MB (176 MB now: bench/stalled_requests_bench.py). The call past ``concurrent_requests`` is
    ``RESOURCE_EXHAUSTED`` at once and its bytes are dropped unread; the slot is given back once the request is
    received or the call ended. Streaming requests are bounded by the concurrent streams quota instead."""

    def __init__(
        self,
        max_bytes: dict[str, int] | None = None,
        quotas: Quotas | None = None,
        caller: Callable[[grpc.aio.ServicerContext], tuple[AgentKey, str]] | None = None,
        held: frozenset[str] = frozenset(),
    ) -> None:
        self.max_bytes = dict(max_bytes or {})
        self.quotas, self.caller = quotas, caller
        self.held = held  # streaming methods whose messages are counted before they are parsed (Quotas.hold)
        # tenant -> its held methods' messages grpc is asked to read (tenant_receiving_batches at once)
        self._receiving: dict[str, asyncio.Semaphore] = {}
        self._freed = asyncio.Event()  # set (and replaced) whenever a held message is answered: room, maybe

    async def _reserve(self, key: AgentKey, deadline: float) -> tuple[int, bool]:
        """(bytes set aside for the caller's next batch, whether there was room): waits until its tenant (and the
        service) have room for it (``Quotas.reserve``), until ``deadline`` (the loop's time: ``in_flight_wait_s``
        after the stream began to wait, its wait for a place to read included); then sets it aside all the same,
        for a batch that will be refused."""
        assert self.quotas is not None
        loop = asyncio.get_running_loop()
        while (reserved := self.quotas.reserve(key)) is None:
            freed = self._freed
            try:
                async with asyncio.timeout(deadline - loop.time()):
                    await freed.wait()
            except TimeoutError:
                forced = self.quotas.reserve(key, force=True)
                assert forced is not None
                return forced, False
        return reserved, True

    def _give_back(self, key: AgentKey, nbytes: int) -> None:
        """Bytes held or set aside for a caller's batch are free (it was answered, refused, or never came): every
        stream waiting for room looks again."""
        assert self.quotas is not None
        self.quotas.release(key, nbytes)
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()

    async def _one_request(self, method: str, requests, context):
        """The call's one request message, read within the caller's ``concurrent_requests``."""
        assert self.quotas is not None and self.caller is not None
        key, who = self.caller(context)
        try:
            self.quotas.open_request(key, who)
        except QuotaExceeded as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method}: {exc}")
        try:
            request = await anext(_taken(requests), None)
        finally:
            self.quotas.close_request(key)
        if request is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method}: the call carried no request")
        return request

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return handler
        if handler.request_deserializer is not None:
            handler = self._guarded(handler, details.method)
        if self.quotas is None or self.caller is None:
            return handler
        return self._counted(handler, details.method)

    async def _open_call(self, method: str, context) -> AgentKey:
        """The caller's key, its call counted (``Quotas.open_call``), or ``RESOURCE_EXHAUSTED`` at once past its
        ``concurrent_calls``: nothing of the call is read, and it is not waited for (the refusal of one stream
        past ``concurrent_streams`` waits up to 5 s for its first message, ``RequestStream``: with no bound on
        such calls, each held up to a stream window, 1 MiB, in grpc meanwhile)."""
        assert self.quotas is not None and self.caller is not None
        key, who = self.caller(context)
        try:
            self.quotas.open_call(key, who)
        except QuotaExceeded as exc:
            try:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method}: {exc}")
            except grpc.aio.AbortError as abort:
                _forget_frames(abort)
                raise
        return key

    def _counted(self, handler, method: str):
        """``handler`` with each call counted against its caller's ``concurrent_calls`` while it runs."""
        assert self.quotas is not None
        quotas, open_call = self.quotas, partial(self._open_call, method)
        if handler.unary_unary is not None or handler.stream_unary is not None:
            inner = handler.unary_unary or handler.stream_unary

            async def one_reply(request, context):
                key = await open_call(context)
                try:
                    return await inner(request, context)
                finally:
                    quotas.close_call(key)

            kind = "unary_unary" if handler.unary_unary is not None else "stream_unary"
            return handler._replace(**{kind: one_reply})
        inner_s = handler.unary_stream or handler.stream_stream

        async def replies(request, context):
            key = await open_call(context)
            try:
                async for reply in inner_s(request, context):
                    yield reply
            finally:
                quotas.close_call(key)

        kind = "unary_stream" if handler.unary_stream is not None else "stream_stream"
        return handler._replace(**{kind: replies})

    def _guarded(self, handler, method: str):
        """``handler`` with its requests checked (size, protobuf) and, with ``quotas``, counted while received."""
        deserialize = handler.request_deserializer
        most = self.max_bytes.get(method)

        def safe(raw: bytes):
            if most is not None and len(raw) > most:
                return _Malformed(
                    f"{method}: the request is {len(raw)} bytes, over the {most} bytes this method takes; nothing "
                    "was processed"
                )
            try:
                return deserialize(raw)
            except Exception as exc:  # DecodeError, and whatever else a parser raises on garbage
                return _Malformed(_message(method, exc))

        async def check(request, context) -> None:
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.why)

        def held(raw: bytes) -> _Held:
            return _Held(safe(raw))

        async def checked(requests, context):
            """The request stream's messages; a malformed one is a ``Refusal`` raised to whoever reads the stream (a
            ``Connect`` stream's reader task, which may not end the call: ``faults.Refusal``)."""
            async for r in _taken(requests):
                if isinstance(r, _Malformed):
                    raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, r.why)
                yield r
                del r  # not held while the next message is received

        def unparsed(data: bytes) -> _Held:
            return _Held(data)

        async def held_messages(requests, context):
            """The request stream's messages, each read once its tenant has room for it (``Quotas.reserve``) and
            counted from then until the handler asks for the next one or the call ends; one that found no room for
            ``in_flight_wait_s`` is ``RESOURCE_EXHAUSTED`` unparsed."""
            assert self.quotas is not None and self.caller is not None
            key, who = self.caller(context)
            # looked up at each read, never kept: a gate this stream holds no place in may be dropped meanwhile
            # (``free_gates``), and one kept from the stream's start was then a gate of its own, the tenant's
            # bound holding per gate (a new stream's batch read at once beside an older stream's place)
            gate = partial(tenant_gate, self._receiving, key[0], self.quotas.limits.tenant_receiving_batches)
            messages = _taken(requests)
            wait_s = self.quotas.limits.in_flight_wait_s
            slot_s = RECEIVE_SLOT_S  # the first message: sent as the stream opens
            while True:
                reserved, roomy, data = await _read_gated(
                    gate, messages, partial(self._reserve, key), partial(self._give_back, key), wait_s, slot_s
                )
                slot_s = NEXT_SLOT_S
                if data is None:  # the agent closed its side
                    self._give_back(key, reserved)
                    return
                n = len(data)
                # a read that gave its place and bytes back (``reserved`` 0, as ``reserve`` sets aside >= 1: an
                # idle stream's next batch, a batch crossing a slow link) is counted now, if its tenant and the
                # service have room for it; passed on unchecked, idle streams' batches sent at once were held
                # parsed past the bounds (10 agents of a tenant, 1.2-MB batches: 7.8-11.4 MB held against 3.1)
                over = False
                if reserved:
                    self.quotas.hold(key, reserved, n)
                elif not self.quotas.hold_late(key, n):
                    roomy, over, n = False, True, 0  # nothing held: nothing to give back
                if not roomy:
                    # no place or no room for in_flight_wait_s, or none when it came in late: refused unparsed, the
                    # agent backs off and sends it again on a new stream, whose first batch waits for room
                    # (read first: refused before its message was all sent, the agent's grpc saw INTERNAL, not
                    # RESOURCE_EXHAUSTED)
                    del data
                    exc = self.quotas.refuse_held(key, who, None if over else wait_s)
                    self._give_back(key, n)
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method}: {exc}")
                try:
                    one = [safe(data)]
                    del data
                    await check(one[0], context)
                    yield one.pop()  # held by the handler alone: answered, it asks for the next one
                finally:
                    self._give_back(key, n)

        counted = self.quotas is not None and self.caller is not None
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request, context):
                await check(request, context)
                return await inner_uu(request, context)

            if counted:

                async def one_unary(requests, context):
                    try:
                        return await unary_unary(await self._one_request(method, requests, context), context)
                    except grpc.aio.AbortError as exc:
                        _forget_frames(exc)
                        raise

                return handler._replace(
                    request_streaming=True,
                    unary_unary=None,
                    stream_unary=one_unary,
                    request_deserializer=held,
                )
            return handler._replace(unary_unary=unary_unary, request_deserializer=safe)
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream
            if counted:

                async def one_stream(requests, context):
                    try:
                        request = await self._one_request(method, requests, context)
                        await check(request, context)
                        async for reply in inner_us(request, context):
                            yield reply
                    except grpc.aio.AbortError as exc:
                        _forget_frames(exc)
                        raise

                return handler._replace(
                    request_streaming=True,
                    unary_stream=None,
                    stream_stream=one_stream,
                    request_deserializer=held,
                )

            async def unary_stream(request, context):
                await check(request, context)
                async for reply in inner_us(request, context):
                    yield reply

            return handler._replace(unary_stream=unary_stream, request_deserializer=safe)
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests, context):
                try:
                    return await inner_su(checked(requests, context), context)
                except Refusal as exc:
                    await context.abort(exc.code, exc.details)
                except grpc.aio.AbortError as exc:
                    _forget_frames(exc)
                    raise

            return handler._replace(stream_unary=stream_unary, request_deserializer=held)
        inner_ss = handler.stream_stream
        if counted and method in self.held:

            async def held_stream(requests, context):
                messages = held_messages(requests, context)
                try:
                    async for reply in inner_ss(messages, context):
                        yield reply
                except grpc.aio.AbortError as exc:
                    _forget_frames(exc)
                    raise
                finally:
                    await messages.aclose()  # the message held is given back now, not when collected

            return handler._replace(stream_stream=held_stream, request_deserializer=unparsed)

        async def stream_stream(requests, context):
            try:
                async for reply in inner_ss(checked(requests, context), context):
                    yield reply
            except Refusal as exc:
                await context.abort(exc.code, exc.details)
            except grpc.aio.AbortError as exc:
                _forget_frames(exc)
                raise

        return handler._replace(stream_stream=stream_stream, request_deserializer=held)


class _Held:
    """A request message as grpc's receiver of a request stream keeps it, emptied once taken (``_taken``): the
    receiver keeps the last message it gave until it reads the next one, with the call's state, which grpc never
    frees, and a call refused ends before that (an agent over its bytes per second): the refused batch stayed in
    the service's memory for good (one agent sending 15-MB batches over its rate: +170 MB a second)."""

    __slots__ = ("message",)

    def __init__(self, message) -> None:
        self.message = message


def tenant_gate(gates: dict[str, asyncio.Semaphore], tenant: str, size: int) -> asyncio.Semaphore:
    """The tenant's gate in ``gates``, made (an ``asyncio.Semaphore(size)``) if it has none."""
    gate = gates.get(tenant)
    if gate is None:
        gate = gates[tenant] = asyncio.Semaphore(size)
    return gate


def free_gates(gates: dict[str, asyncio.Semaphore], size: int) -> int:
    """Drop the tenants' gates (each an ``asyncio.Semaphore(size)``) that no call holds nor waits for: a new one is
    the same. Run on the loop, as every call looks its gate up each time it takes it (or waits in it), with no
    await between, and gives back the gate it took: no call is left with a dropped gate (a call that kept the gate
    it looked up once, taking it again after an await, took a dropped one: its tenant's bound then held per gate).
    Returns how many were dropped."""
    free = [t for t, g in gates.items() if g._value >= size and not g._waiters]  # (asyncio's own fields)
    for t in free:
        del gates[t]
    return len(free)


async def _read_gated(
    gate_now: Callable[[], asyncio.Semaphore],
    messages,
    reserve: Callable[[float], Awaitable[tuple[int, bool]]],
    give_back: Callable[[int], None],
    wait_s: float,
    slot_s: float = RECEIVE_SLOT_S,
) -> tuple[int, bool, bytes | None]:
    """(bytes set aside for it, whether it found a place and room, the stream's next message or None at its end),
    asked of grpc within a place in its tenant's gate (``gate_now()``, looked up when taken) once ``reserve()`` set
    bytes aside for it within its tenant's bounds: grpc reads a message whole once asked for it, so at most
    ``tenant_receiving_batches`` of a tenant's are asked for at once, and none past its bytes; the others wait here,
    unread (HTTP/2 flow control holds their agents' writes). A read not done within ``slot_s`` (``RECEIVE_SLOT_S``;
    ``NEXT_SLOT_S`` for a stream's later messages) gives its place and its bytes back and goes on: a stream idle
    between batches, or left idle on a dead path (until the keepalive ends it), or a batch crossing a slow link
    (whose bytes arrive as slowly) does not hold up the tenant's other streams for longer. The caller gives the
    bytes back (``give_back``), unless the read failed (the call ended): then this does. The wait for a place and
    for room together last ``wait_s``; a stream that found neither by then is read all the same (within a place) and
    said so, for the caller to refuse (the wait for a place had no bound: behind a queue of its tenant's streams a
    batch waited up to 7 times ``in_flight_wait_s``, past the agent's 60 s for an acknowledgement)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    late = False
    gate = gate_now()  # (the tenant's now: given back to the one taken)
    try:
        async with asyncio.timeout_at(deadline):
            await gate.acquire()
    except TimeoutError:
        # past the wait: refused, but read within a place all the same (read without one, every such batch was
        # in memory at once: 8-MB batches of 32 streams grew the service past 300 MB); places turn over fast
        # now, as no stream past its deadline waits in one for room
        late = True
        gate = gate_now()
        await gate.acquire()
    try:
        reserved, roomy = await reserve(deadline)
    except BaseException:
        gate.release()
        raise
    read = asyncio.ensure_future(anext(messages, None))
    try:
        try:
            await asyncio.wait({read}, timeout=slot_s)
        finally:
            gate.release()
        if not read.done():  # idle or slow: its bytes are counted when they are in (the caller's hold_late)
            give_back(reserved)
            reserved = 0
        return reserved, roomy and not late, await read
    except BaseException:
        read.cancel()  # the call ended (cancelled, aborted) while its read was under way
        give_back(reserved)
        raise


async def _taken(requests):
    """The request stream's messages, each taken out of the ``_Held`` grpc's receiver keeps."""
    async for held in requests:
        one = [held.message]
        held.message = None
        yield one.pop()  # this frame keeps nothing of it while the next message is received


def _forget_frames(exc: BaseException | None) -> None:
    """Drop the tracebacks of a call's abort and of the exceptions it arose from: grpc keeps the abort's exception
    with the call's state, and its traceback kept every frame it passed with their locals (the request refused,
    the handler's request iterators), for good."""
    while exc is not None:
        exc.__traceback__ = None
        exc = exc.__context__


async def json_field(context, text: str, name: str, *, max_bytes: int = 256 * 1024) -> dict:
    """A JSON object carried in a string field, or ``INVALID_ARGUMENT``."""
    import json

    if not text:
        return {}
    if len(text) > max_bytes:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {len(text)} bytes, over {max_bytes}")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"{name} is not valid JSON ({type(exc).__name__})"
        )
    if not isinstance(value, dict):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name} must be a JSON object")
    return value


INT64_MAX = 2**63 - 1  # the largest integer the stores hold (SQLite INTEGER, PostgreSQL BIGINT)


def over_int64(**fields: int) -> str | None:
    """Why one of these uint64 fields cannot be stored (above ``INT64_MAX``), or None."""
    for name, value in fields.items():
        if value > INT64_MAX:
            return f"{name} {value} is above {INT64_MAX}, the largest value the fleet stores"
    return None


async def report_fields(context, r, name: str) -> None:
    """``INVALID_ARGUMENT`` for a state report (``HeartbeatRequest``) with a stored uint64 field the stores cannot
    hold: its outbox depth, epoch or a dropped count. Checked before the report is kept, so that it never reaches
    a write it would fail (and, batched with other agents' reports, fail theirs)."""
    why = over_int64(outbox_depth=r.outbox_depth, epoch=r.epoch) or over_int64(
        **{f"dropped[{k[:40]!r}]": v for k, v in r.dropped.items()}
    )
    if why:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {why}; nothing of it was stored")


@dataclasses.dataclass(frozen=True)
class QuotaLimits:
    # Defaults sit above what one agent draining a backlog reaches on loopback (~35k records/s, see
    # bench/RESULTS.md) so that they stop floods, not catch-up; a site sets its own.
    concurrent_streams: int = 4
    record_bytes_per_s: float = 32 * 1024 * 1024
    records_per_s: float = 100_000.0
    sample_bytes_per_day: int = 4 * 1024**3
    # records' own bytes (their payloads; samples have the budget above) stored per UTC day: record_bytes_per_s
    # alone let one agent write ~78 GB an hour into the data folder every tenant's store shares; 16 GiB a day is
    # ~200 KB/s all day long, ~2,000 forwarded values a second
    record_bytes_per_day: int = 16 * 1024**3
    max_message_bytes: int = 16 * 1024 * 1024  # one batch (agents send <= 1 MB by default)
    # calls of one caller (agent, admin) whose one request message is being received: grpc holds each whole, up
    # to max_message_bytes, before a handler runs; an agent sends a heartbeat, a deployment report and a
    # download's request at most at once, an admin one call at a time
    concurrent_requests: int = 4
    # calls of one caller (agent, admin) open at once, every method together, refused at once past it, nothing of
    # them read: grpc holds up to a stream window (1 MiB) of each call's request before it is read, and one agent
    # certificate opening 600 connections, each a PushRecords refused past concurrent_streams, took the service
    # from 69 to 328 MB (the refusal waits for the first message: RequestStream). An agent holds a few (Connect,
    # PushRecords, a heartbeat, a report, a download), an admin one at a time
    concurrent_calls: int = 32
    # state reports (Heartbeat, Connect) and deployment reports, together: an agent reports at most once per
    # heartbeat_s (5 s by default, 0.2 s in the tests) plus a few steps per deployment, in a few KB each; one
    # report at most 128 KB, refused before it is parsed (a 128-KB map of labels parses in ~1 ms of the loop)
    reports_per_s: float = 20.0
    report_bytes_per_s: float = 512 * 1024
    max_report_bytes: int = 128 * 1024
    # batches (PushRecords messages) received and not yet answered, and those being read (each set aside as its
    # tenant's largest recent batch): grpc reads a message whole once asked for it, and every stream of a tenant
    # waiting for its turn to be written held its batch, parsed (32 agents x 4 streams x 12-MB batches of one
    # tenant took the service to 3 GB). A stream past a bound is not read (it waits, unread); a batch that
    # waited in_flight_wait_s for room is read and refused unparsed (RESOURCE_EXHAUSTED: the agent backs off).
    # A tenant holding nothing always has room: a batch up to max_message_bytes passes
    in_flight_bytes: int = 256 * 1024 * 1024  # of every tenant together (this process)
    tenant_in_flight_bytes: int = 64 * 1024 * 1024  # of one tenant
    tenant_receiving_batches: int = 8
    in_flight_wait_s: float = 20.0  # under the uplink's 60 s for an acknowledgement


class QuotaExceeded(Exception):
    def __init__(self, message: str = "", limit: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit  # the number refused at, where one is the whole limit (concurrent_streams)


class _Bucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.level = rate  # one second of burst
        self.t = time.monotonic()

    def take(self, n: float) -> bool:
        now = time.monotonic()
        self.level = min(self.rate, self.level + (now - self.t) * self.rate)
        self.t = now
        if n > self.level:
            return False
        self.level -= n
        return True


AgentKey = tuple[str, str]  # (tenant, agent id)


class Quotas:
    def __init__(self, limits: QuotaLimits | None = None, clock=time.time) -> None:
        self.limits = limits or QuotaLimits()
        self.clock = clock
        self._lock = threading.Lock()
        self._streams: dict[AgentKey, int] = defaultdict(int)  # (an agent with none open is no key)
        self._receiving: dict[AgentKey, int] = {}  # callers' requests being received (MalformedRequests)
        self._calls: dict[AgentKey, int] = {}  # callers' calls open, every method (MalformedRequests)
        self._held: dict[str, int] = {}  # tenant -> bytes of its batches received, not yet answered
        self._held_total = 0
        self._expect: dict[str, int] = {}  # tenant -> the bytes its next batch is expected to take (reserve)
        self.held_peak = 0  # the most bytes of batches held at once (every tenant), since the start
        self._bytes: dict[AgentKey, _Bucket] = {}
        self._records: dict[AgentKey, _Bucket] = {}
        self._samples: dict[AgentKey, tuple[int, int]] = {}  # (tenant, agent) -> (UTC day, bytes)
        self._payloads: dict[AgentKey, tuple[int, int]] = {}  # the same, of records' payloads
        self._seeded: dict[
            AgentKey, int
        ] = {}  # the UTC day whose stored bytes the two above were started from
        self._reports: dict[AgentKey, _Bucket] = {}
        self._report_bytes: dict[AgentKey, _Bucket] = {}
        self.refusals: dict[tuple[str, str, str], int] = defaultdict(int)  # (tenant, agent, kind) -> count
        # (tenant, agent, kind) -> (refusals not logged, when last logged): one line per REFUSAL_LOG_S
        self._refusals_said: dict[tuple[str, str, str], tuple[int, float]] = {}
        # (tenant, "", kind) -> the agents refused since its last line, for a limit logged per tenant
        self._refused_agents: dict[tuple[str, str, str], set[str]] = {}
        # samples stored whose bytes are not the kind their extension says (not refused: counted)
        self.samples_misnamed: dict[AgentKey, int] = defaultdict(int)
        # records stored whose time was past the service's clock by more than a day: stored at their receipt time
        self.records_retimed: dict[AgentKey, int] = defaultdict(int)

    def _refuse(self, agent: AgentKey, kind: str, why: str, limit: int | None = None) -> QuotaExceeded:
        self.refusals[(*agent, kind)] += 1
        self._say_refused(agent, kind, f"agent {agent[1][:80]!r}", why)
        return QuotaExceeded(f"agent {agent[1]}: {why}; slow down and retry later", limit)

    def refused(self, agent: AgentKey, kind: str, why: str, *, per_tenant: bool = False) -> None:
        """Count and log a refusal of the agent's for a quota counted elsewhere (its tenant's, in the store);
        ``per_tenant``: logged once a minute for all the tenant's agents (what holds one holds them all: a stuck
        migration, another session's lock of the tenant's rows), not once a minute each, naming the agents refused
        since the line before."""
        with self._lock:
            self.refusals[(*agent, kind)] += 1
            if per_tenant:
                self._say_refused((agent[0], ""), kind, "", why, agent=agent[1])
            else:
                self._say_refused(agent, kind, f"agent {agent[1][:80]!r}", why)

    def _say_refused(self, caller: AgentKey, kind: str, who: str, why: str, agent: str | None = None) -> None:
        """Log a refusal (under the lock): the first of a caller's limit at once, then at most one line per
        ``REFUSAL_LOG_S`` with the count since, as the service logs damaged samples. ``agent``: the caller is a
        tenant (``(tenant, "")``), the line naming the distinct agents refused since the last one (a few, then how
        many more)."""
        now, key = time.monotonic(), (*caller, kind)
        since, last = self._refusals_said.get(key, (0, float("-inf")))
        if agent is not None:
            named = self._refused_agents.setdefault(key, set())
            if len(named) < REFUSED_AGENTS_KEPT:
                named.add(agent[:80])
        if now - last < REFUSAL_LOG_S:
            self._refusals_said[key] = (since + 1, last)
            return
        per = "caller"
        if agent is not None:
            names = sorted(self._refused_agents.pop(key, set()) or {agent[:80]})
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            plural = "s" if len(names) > 1 else ""
            who = f"agent{plural} {', '.join(map(repr, names[:3]))}{more} (counted with the tenant's other agents)"
            per = "tenant"
        if len(self._refusals_said) >= REFUSALS_SAID_KEPT:  # many callers refused (a full tenant's)
            recent = {k: v for k, v in self._refusals_said.items() if now - v[1] < REFUSAL_LOG_S}
            self._refusals_said = recent if len(recent) < REFUSALS_SAID_KEPT // 2 else {}
            self._refused_agents = {k: v for k, v in self._refused_agents.items() if k in self._refusals_said}
        self._refusals_said[key] = (0, now)
        log.warning(
            "%s (tenant %s): refused RESOURCE_EXHAUSTED (%s), %d time(s) since the last such line: %s; said once "
            "a minute per %s and limit, counted at /api/quotas",
            who,
            caller[0],
            kind,
            since + 1,
            why,
            per,
        )

    def count(self, agent: AgentKey, kind: str, n: int = 1) -> None:
        """Count ``n`` things of the agent's refused for another reason (e.g. ``damaged`` samples)."""
        with self._lock:
            self.refusals[(*agent, kind)] += n

    def note_misnamed(self, agent: AgentKey, n: int) -> None:
        """Count ``n`` samples of the agent's stored whose bytes are not the kind their extension says."""
        with self._lock:
            self.samples_misnamed[agent] += n

    def note_retimed(self, agent: AgentKey, n: int) -> None:
        """Count ``n`` records of the agent's stored at their receipt time (their own was too far ahead)."""
        with self._lock:
            self.records_retimed[agent] += n

    def open_stream(self, agent: AgentKey) -> None:
        with self._lock:
            if self._streams[agent] >= self.limits.concurrent_streams:
                raise self._refuse(
                    agent,
                    "streams",
                    f"{self._streams[agent]} streams already open (limit "
                    f"{self.limits.concurrent_streams} concurrent streams)",
                    self.limits.concurrent_streams,
                )
            self._streams[agent] += 1

    def streams_full(self, agent: AgentKey) -> bool:
        """Whether the agent's next stream would be refused (before ``open_stream`` counts a refusal)."""
        with self._lock:
            return self._streams.get(agent, 0) >= self.limits.concurrent_streams

    def close_stream(self, agent: AgentKey) -> None:
        with self._lock:
            if (n := self._streams.get(agent, 0)) > 1:
                self._streams[agent] = n - 1
            else:  # none open: no entry (one per agent ever seen was kept at 0)
                self._streams.pop(agent, None)

    def forget_idle(self, idle_s: float = IDLE_FORGET_S) -> int:
        """Forget what is kept of agents and tenants idle ``idle_s`` or more, never of one in use: an agent's rate
        buckets untouched that long (full again: a new one is the same), day budgets of a UTC day past (read as 0
        for today already). Kept, they grew with every agent and tenant the process ever saw (~1.4 KB each with the
        service's gates). Refusal counts stay (the console shows them), and a tenant's expected batch size
        (``_expect``, one number a tenant): forgotten, the first wave after an outage was set aside at the 1-MiB
        default, not the tenant's 16-MB batches, and read 128 MB past the 64-MiB ``tenant_in_flight_bytes``.
        Returns the entries dropped."""
        now, day, dropped = time.monotonic(), self.day(), 0
        with self._lock:
            busy = {a for a, n in self._streams.items() if n} | set(self._receiving) | set(self._calls)
            for table in (self._bytes, self._records, self._reports, self._report_bytes):
                for agent in [a for a, b in table.items() if a not in busy and now - b.t >= idle_s]:
                    del table[agent]
                    dropped += 1
            for days in (self._payloads, self._samples):
                for agent in [a for a, (d, _) in days.items() if d != day]:
                    del days[agent]
                    dropped += 1
            for agent in [a for a, d in self._seeded.items() if d != day]:
                del self._seeded[agent]
                dropped += 1
        return dropped

    def open_request(self, caller: AgentKey, who: str) -> None:
        """One more call of ``caller`` (``who``: its role and name, for the refusal) whose request is being
        received, or ``QuotaExceeded`` past ``concurrent_requests``; ``close_request`` once it is received or the
        call ended."""
        lim = self.limits.concurrent_requests
        self._open(
            self._receiving, caller, who, "requests", lim, "requests of its are being received", "they are in"
        )

    def close_request(self, caller: AgentKey) -> None:
        self._close(self._receiving, caller)

    def open_call(self, caller: AgentKey, who: str) -> None:
        """One more call of ``caller`` open (``who``: its role and name, for the refusal), or ``QuotaExceeded``
        past ``concurrent_calls``; ``close_call`` once it ended."""
        lim = self.limits.concurrent_calls
        self._open(
            self._calls,
            caller,
            who,
            "calls",
            lim,
            "calls of its are open",
            "some have ended",
            ", every method",
        )

    def close_call(self, caller: AgentKey) -> None:
        self._close(self._calls, caller)

    def _open(
        self,
        table: dict,
        caller: AgentKey,
        who: str,
        kind: str,
        limit: int,
        what: str,
        until: str,
        of: str = "",
    ) -> None:
        """One more of ``caller``'s in ``table`` (a count per caller, none kept at 0), or ``QuotaExceeded`` (counted
        and logged as ``kind``) at ``limit``."""
        with self._lock:
            n = table.get(caller, 0)
            if n >= limit:
                self.refusals[(*caller, kind)] += 1
                why = f"{n} {what} (limit {limit} at once{of})"
                self._say_refused(caller, kind, who, why)
                raise QuotaExceeded(f"{who}: {why}; nothing of this one was read: retry once {until}")
            table[caller] = n + 1

    def _close(self, table: dict, caller: AgentKey) -> None:
        with self._lock:
            if (n := table.get(caller, 0)) > 1:
                table[caller] = n - 1
            else:
                table.pop(caller, None)

    def reserve(self, caller: AgentKey, force: bool = False) -> int | None:
        """Room for the caller's next batch, before grpc is asked to read it: the bytes set aside for it (its
        tenant's largest recent batch), or None when its tenant's batches held and set aside, with it, would pass
        ``tenant_in_flight_bytes`` or every tenant's ``in_flight_bytes`` (``force``: set aside all the same). The
        first batch of a tenant holding nothing always has room, so that one up to ``max_message_bytes`` passes."""
        lim, tenant = self.limits, caller[0]
        with self._lock:
            want = self._expect.get(tenant, EXPECTED_BATCH_BYTES)
            mine = self._held.get(tenant, 0)
            if (
                not force
                and mine
                and (
                    mine + want > lim.tenant_in_flight_bytes or self._held_total + want > lim.in_flight_bytes
                )
            ):
                return None
            self._held[tenant] = mine + want
            self._held_total += want
            return want

    def hold(self, caller: AgentKey, reserved: int, nbytes: int) -> None:
        """The caller's batch of ``nbytes`` is received (not parsed yet), for which ``reserved`` was set aside: held
        until it is answered (``release(caller, nbytes)``)."""
        tenant = caller[0]
        with self._lock:
            self._held[tenant] = self._held.get(tenant, 0) - reserved + nbytes
            self._held_total += nbytes - reserved
            self.held_peak = max(self.held_peak, self._held_total)
            # what the tenant's next batches are expected to take: its largest recent one, forgotten slowly
            self._expect[tenant] = max(nbytes, self._expect.get(tenant, EXPECTED_BATCH_BYTES) * 3 // 4, 1)

    def hold_late(self, caller: AgentKey, nbytes: int) -> bool:
        """The caller's batch of ``nbytes`` is received with nothing set aside for it (its read gave its bytes back
        while it waited): held as ``hold`` does and True if its tenant's batches held, with it, are within
        ``tenant_in_flight_bytes`` and every tenant's within ``in_flight_bytes`` (a tenant holding nothing always
        has room, as in ``reserve``); else nothing is held and False (for the caller to refuse it)."""
        lim, tenant = self.limits, caller[0]
        with self._lock:
            mine = self._held.get(tenant, 0)
            # what the tenant's next batches are expected to take, as in ``hold``
            self._expect[tenant] = max(nbytes, self._expect.get(tenant, EXPECTED_BATCH_BYTES) * 3 // 4, 1)
            if mine and (
                mine + nbytes > lim.tenant_in_flight_bytes or self._held_total + nbytes > lim.in_flight_bytes
            ):
                return False
            self._held[tenant] = mine + nbytes
            self._held_total += nbytes
            self.held_peak = max(self.held_peak, self._held_total)
            return True

    def refuse_held(self, caller: AgentKey, who: str, waited_s: float | None) -> QuotaExceeded:
        """The caller's batch found no room (``reserve``) for ``waited_s``, or none when it came in (``None``: read
        with nothing set aside, ``hold_late``): counted, logged, and the refusal."""
        lim = self.limits
        with self._lock:
            # the agent is told its own tenant's figure only: every tenant's bytes in flight would tell it how
            # busy the other tenants are (the log, the operator's, says both)
            when = "when it came in" if waited_s is None else f"for {waited_s:g} s"
            why = (
                f"no room for this batch {when}: its tenant's batches being received and stored hold "
                f"{self._held.get(caller[0], 0)} bytes (tenant_in_flight_bytes {lim.tenant_in_flight_bytes}), "
                "or the service's own bound for all its tenants is reached"
            )
            self.refusals[(*caller, "in_flight")] += 1
            self._say_refused(
                caller,
                "in_flight",
                who,
                f"{why} (every tenant's: {self._held_total} bytes, in_flight_bytes {lim.in_flight_bytes})",
            )
        return QuotaExceeded(f"{who}: {why}; the batch was not stored: send it again later")

    def release(self, caller: AgentKey, nbytes: int) -> None:
        """Bytes ``reserve`` set aside or ``hold`` took are free: the batch was answered, refused, or never came."""
        with self._lock:
            left = self._held.get(caller[0], 0) - nbytes
            if left > 0:
                self._held[caller[0]] = left
            else:
                self._held.pop(caller[0], None)
            self._held_total = max(0, self._held_total - nbytes)

    def take_batch(self, agent: AgentKey, records: int, nbytes: int) -> None:
        lim = self.limits
        with self._lock:
            rb = self._records.setdefault(agent, _Bucket(lim.records_per_s))
            bb = self._bytes.setdefault(agent, _Bucket(lim.record_bytes_per_s))
            if records > rb.rate or nbytes > bb.rate:
                raise self._refuse(
                    agent,
                    "batch",
                    f"one batch of {records} records / {nbytes} bytes is over the "
                    f"per-second limits ({lim.records_per_s:.0f} records/s, "
                    f"{lim.record_bytes_per_s:.0f} bytes/s)",
                )
            if not rb.take(records):
                raise self._refuse(agent, "records", f"over {lim.records_per_s:.0f} records/s")
            if not bb.take(nbytes):
                rb.level += records  # give the records back: nothing of the batch is taken
                raise self._refuse(agent, "bytes", f"over {lim.record_bytes_per_s:.0f} bytes/s")

    def take_report(self, agent: AgentKey, nbytes: int) -> None:
        """One state or deployment report of ``nbytes`` (at most ``max_report_bytes``, checked by the caller)."""
        lim = self.limits
        with self._lock:
            rb = self._reports.setdefault(agent, _Bucket(lim.reports_per_s))
            bb = self._report_bytes.setdefault(agent, _Bucket(lim.report_bytes_per_s))
            if not rb.take(1):
                raise self._refuse(agent, "reports", f"over {lim.reports_per_s:g} state reports/s")
            if not bb.take(nbytes):
                rb.level += 1  # give the report back: nothing of it is taken
                raise self._refuse(
                    agent, "report_bytes", f"over {lim.report_bytes_per_s:.0f} bytes/s of state reports"
                )

    def take_payload(self, agent: AgentKey, nbytes: int) -> int:
        """A batch's records' payload bytes against the agent's budget of the UTC day (``record_bytes_per_day``);
        refused whole past it, nothing taken. Returns the UTC day they were taken from (for ``give_payload``)."""
        lim = self.limits.record_bytes_per_day
        return self._take_day(
            self._payloads,
            agent,
            nbytes,
            lim,
            "record_bytes",
            lambda used: (
                f"record budget of {lim} bytes per UTC day spent ({used} stored today, this batch "
                f"{nbytes}); the records wait in the agent's outbox"
            ),
        )

    def _take_day(self, table: dict, agent: AgentKey, nbytes: int, limit: int, kind: str, why) -> int:
        """``nbytes`` more of the agent's ``table`` of the UTC day ((day, bytes) per agent), refused as ``kind``
        with ``why(used)`` past ``limit``, nothing taken; returns the day taken from."""
        day = int(self.clock() // 86400)
        with self._lock:
            d, used = table.get(agent, (day, 0))
            if d != day:
                used = 0
            if used + nbytes > limit:
                raise self._refuse(agent, kind, why(used))
            table[agent] = (day, used + nbytes)
        return day

    def day(self) -> int:
        """The UTC day (days since the epoch) the day budgets count."""
        return int(self.clock() // 86400)

    def seeded(self, agent: AgentKey, day: int) -> bool:
        """Whether the agent's day budgets of ``day`` were started from what the store holds (``seed_day``)."""
        with self._lock:
            return self._seeded.get(agent) == day

    def seed_day(self, agent: AgentKey, day: int, record_bytes: int, sample_bytes: int) -> None:
        """The agent's payload and sample bytes the store holds for ``day`` (stored by this process or before a
        restart, or by another replica until now): its day budgets count on from them, not from 0."""
        with self._lock:
            self._seeded[agent] = day
            for table, n in ((self._payloads, record_bytes), (self._samples, sample_bytes)):
                d, used = table.get(agent, (day, 0))
                if n > (used if d == day else 0):  # (nothing noted for an agent with nothing stored)
                    table[agent] = (day, n)

    def give_payload(self, agent: AgentKey, nbytes: int, day: int) -> None:
        """Payload bytes ``take_payload`` took on UTC ``day`` for a batch then refused by another limit: not
        stored, not spent (``_give_day``)."""
        self._give_day(self._payloads, agent, nbytes, day)

    def give_sample(self, agent: AgentKey, nbytes: int, day: int) -> None:
        """Sample bytes ``take_sample`` took on UTC ``day`` for a batch then not stored (its tenant's quota, a store
        that failed): not spent. Kept, each retry of a batch the tenant's quota refused spent them again, and the
        agent stayed refused on its own budget until 00:00 UTC after the operator raised the quota."""
        self._give_day(self._samples, agent, nbytes, day)

    def _give_day(self, table: dict, agent: AgentKey, nbytes: int, day: int) -> None:
        """``nbytes`` back to the agent's ``table`` while it still counts ``day``, the day they were taken from: a
        batch taken before 00:00 UTC and refused after credited the new day's budget with bytes it never spent."""
        with self._lock:
            d, used = table.get(agent, (day, 0))
            if d == day and used:
                table[agent] = (d, max(0, used - nbytes))

    def take_sample(self, agent: AgentKey, nbytes: int) -> int:
        """A batch's sample bytes against the agent's ``sample_bytes_per_day``; returns the UTC day taken from."""
        lim = self.limits.sample_bytes_per_day
        return self._take_day(
            self._samples,
            agent,
            nbytes,
            lim,
            "samples",
            lambda used: f"sample budget of {lim} bytes per day spent",
        )

    def snapshot(self, tenant: str | None = None) -> dict:
        """Limits and counters: of one tenant's agents, keyed by agent id (refusals ``<agent>:<kind>``), or with
        ``tenant`` None of every tenant's, keyed ``<tenant>/<agent>`` (a view for the platform's own logs)."""

        def name(key: tuple) -> str | None:
            if tenant is None:
                return f"{key[0]}/{key[1]}"
            return key[1] if key[0] == tenant else None

        def view(counters: dict, value=lambda v: v) -> dict:
            return {n: value(v) for k, v in counters.items() if (n := name(k)) is not None}

        with self._lock:
            return {
                "limits": dataclasses.asdict(self.limits),
                "streams": view(self._streams),
                "calls": view(self._calls),  # calls open, every method (concurrent_calls)
                "sample_bytes_today": view(self._samples, lambda v: v[1]),
                "record_bytes_today": view(self._payloads, lambda v: v[1]),
                "refusals": {
                    f"{n}:{k[2]}": v for k, v in self.refusals.items() if (n := name(k[:2])) is not None
                },
                "samples_misnamed": view(self.samples_misnamed),
                "records_retimed": view(self.records_retimed),
                # bytes of batches received and not yet answered: of this tenant, or of every tenant (and the peak)
                "in_flight_bytes": self._held.get(tenant, 0) if tenant is not None else self._held_total,
                **({"in_flight_peak_bytes": self.held_peak} if tenant is None else {}),
            }
