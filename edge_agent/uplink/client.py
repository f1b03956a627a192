"""Uplink: drains the outbox to the fleet service over gRPC with TLS and a client certificate.

One long-lived ``PushRecords`` stream: batches (bounded by records, bytes and ``max_delay_ms``,
gzip-compressed) go up in priority order, acks come back by sequence number, and only acked rows
are deleted from the outbox. Once a record arrives after the outbox was drained, the uplink waits up to
``max_delay_ms`` for more to fill the batch (unless ``batch_max_records`` arrive sooner, or an alarm or event
is recorded: it goes at once, first in the batch); the stream stays
open while idle, up to ``stream_idle_s``, so that records arriving a few a second go up as batches on one
stream, not one stream each. At most one batch is in flight, so after any disconnect the stream
resumes from the oldest unacknowledged record; the cloud stores a replayed record once. Failures
back off exponentially with jitter; a successful heartbeat ends the wait and resets the backoff, so
sending resumes within one heartbeat of the cloud answering again, except after a refusal on purpose (a quota's
RESOURCE_EXHAUSTED), which the cloud answering does not mend: that wait is kept. A stream refused as beyond the
agent's ``concurrent_streams`` (a package download holds the place) is tried again every ``STREAMS_FULL_RETRY_S``
instead, an alarm at once. An optional bandwidth cap paces the bytes sent; a stream opens once its first batch is
paced, and that batch goes as it opens. Every record carries the outbox's epoch: its identity at the cloud is
``(agent, epoch, seq)``. A link that fails because a certificate is outside its dates (a gateway clock
stepped far back or forward, an expired certificate) says which certificate, its dates and this
gateway's clock (``edge_agent.uplink.tls_check``), in ``last_error`` and the log.

State and desired state: the agent opens one long-lived ``Connect`` stream and sends a state report
(slots, labels, pipeline health, the outbox's epoch and its cumulative drop counts) whenever one of
them changes, looked at every ``heartbeat_s``, and at least every ``report_s`` (30 s) for health;
the server pushes the desired state when the stream opens and whenever it changes. Against a server
without ``Connect`` (``UNIMPLEMENTED``) the agent falls back to a unary ``Heartbeat`` every
``heartbeat_s``, as before. Either way the latest desired state is handed to ``on_desired`` (the
model manager) every ``heartbeat_s``, so that its retries keep their pace. Each report on the stream asks for the
service's acknowledgement (``report_id``): a stream on which the service says nothing for ``keepalive_timeout_s``
after a report is ended and opened again (a service hung, a middlebox holding the connection).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from devices.base import BurstLogger
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.fleet_client import FleetClient
from edge_agent.uplink.settings import CloudSettings
from protocols.refusals import EPOCHS_BOUND, REFUSAL_KEY, STREAMS_FULL, STREAMS_LIMIT_KEY

# the outbox's own events (``outbox_corrupt``, drops) are recorded by the outbox, never hidden as they are
_OUTBOX_OWN = b'"kind":"outbox_'

log = logging.getLogger(__name__)

# the longest a batch waits for the outbox to commit an alarm or event recorded while it filled (its thread is
# slow: a sample being written, a full hand-over); past it the batch goes without, and the alarm in the next
URGENT_FLUSH_S = 1.0

# the most often an idle uplink looks at the outbox for records appended without a poke: at max_delay_ms 1 it looked
# every millisecond (~300 reads a second, a quarter of a core on a quiet line); a poked record does not wait for it
POLL_MIN_S = 0.2

# the fleet service's refusal of a stream beyond the agent's ``concurrent_streams`` (its guard's words, "(limit N
# concurrent streams)"): another of this agent's streams holds the place, a rollout's package download mostly, and
# gives it back once done; the push tries again this often (with jitter), not at its doubling backoff, and an alarm
# recorded meanwhile at once. Each try's first batch is one record (the service reads it whole before refusing)
STREAMS_FULL_RETRY_S = 0.25
# a streak of such refusals (no batch acked since the first) longer than STREAMS_FULL_FAST_S (a download that long, or
# a place never given back: concurrent_streams 1, a stream the service keeps, another implementation's words) is tried
# ever less often: the pace doubles every STREAMS_FULL_DOUBLE_S up to STREAMS_FULL_MAX_S. Kept at 0.25 s, a refusal
# for good cost 4 streams a second for ever (the doubling backoff's was one per backoff_max_s). An alarm or event ends
# a wait at once at most once per STREAMS_FULL_RETRY_S: a storm of them tried once per round trip (15-20 a second)
STREAMS_FULL_FAST_S = 30.0
# the fleet service's refusal of a batch for the epochs its agent opened within a day (its store's words, "N epochs
# opened within 24 h"; a fleet service of before 2026-12-07 refused every batch opening one past 24 a day, for up to
# a day): the push waits this long (with jitter) before trying again, doubling at each such refusal up to
# EPOCHS_WAIT_MAX_S, and its next try is one record. At its backoff (15-30 s) the agent sent its whole batch again
# ~4,000 times a day. Counted (``epochs_refused``) and shown on the status page
EPOCHS_WAIT_S = 120.0
EPOCHS_WAIT_MAX_S = 1800.0
STREAMS_FULL_DOUBLE_S = 10.0
STREAMS_FULL_MAX_S = 5.0
# once the Connect stream gave its place to the records (``Uplink._yield_connect``: concurrent_streams 1), it is tried
# again after this long, the wait doubling at each refusal up to CONNECT_AGAIN_MAX_S: the service's limit may have
# been raised. Before, the agent stayed on unary Heartbeat until it restarted
CONNECT_AGAIN_S = 300.0
CONNECT_AGAIN_MAX_S = 3600.0

# the fleet service's time to store a batch and answer once its bytes are in: a batch's acknowledgement is waited for
# this plus ``keepalive_timeout_s``, the time its bytes may take on the link (on a slow one keep keepalive_timeout_s
# above batch_max_bytes / the link's bytes per second: the keepalive's ping waits behind them too). A service that
# takes batches and never answers is left after that, said in ``last_error``. The wait was 60 s flat, counted from
# the batch's hand-over to gRPC: a batch longer on the link (1 MB at 16 KB/s, samples on a cellular modem) was cut
# before its end and sent again from its start, for ever, nothing acknowledged, the outbox filling to its drops
ACK_WAIT_S = 60.0
# the fewest bytes a failed batch halves the next batches' to (``Uplink._fit_link``; batch_max_bytes if smaller): a
# batch this small that failed says nothing of the link's size (a path that died with a record or two in flight); 16 KB
# take 2.7 s at 6 KB/s. Formerly the halving went down to half the failed batch's bytes: a silent cut with two small
# records in flight left 7 bytes, one record per batch, and acks taking keepalive_timeout_s / 2 or more (a slow fleet
# service, a long round trip) never grew it back: one record per round trip until a restart
FIT_FLOOR = 16384

# a record alone in its batch whose sending failed on its way this many times, each after half of keepalive_timeout_s
# or more (its bytes too many for the link within keepalive_timeout_s: a large image on a slow cellular link), is set
# aside (``Uplink._lone_failed``): kept in the outbox and out of the reads, so that the records behind it go on. It is
# tried again after ASIDE_RETRY_S (doubling each time it is set aside again, up to ASIDE_RETRY_MAX_S), or at once
# when an acknowledged batch of as many bytes or more shows that the link carries it now. Before, it failed for ever
# and every sample behind it waited, ``last_error`` saying only "ping timeout"
ASIDE_AFTER = 3
ASIDE_RETRY_S = 600.0
ASIDE_RETRY_MAX_S = 6 * 3600.0

# the most acknowledged seqs the uplink keeps in memory while the outbox cannot record them (its disk full or
# read-only, ``Uplink._unrecorded``): the records behind them go on being sent meanwhile (each read skips these,
# reading this many more rows); past it, sending waits until the outbox records them
UNRECORDED_MAX = 5000

# the learned bound of a batch's bytes (``Uplink._fit_link``) is kept in this file of the data folder, so that an
# agent restarted (a crash loop, a fleet configuration rollout) starts from it instead of relearning the link by
# failures; read back, it doubles for every LINK_RELAX_S since it was written (a link that got better is found again)
LINK_FILE = "uplink-link.json"
LINK_RELAX_S = 3600.0

# beyond two of the outbox's commit rounds, what a read after a fill ended by time waits for its commit (the
# writer's round takes its own time: a checkpoint, retention)
COMMIT_WAIT_SLACK_S = 0.1


def reconnect_delay(previous: float, lasted_s: float, s, refused: bool = False) -> float:
    """The ceiling of the next Connect attempt's random wait (the wait is uniform in [0, ceiling]).

    A stream that lived at least ``report_s`` was healthy: the ceiling starts again from ``heartbeat_s`` (a
    server restart spreads its agents' reconnections over that window). A stream that failed sooner doubles
    it, up to ``backoff_max_s``: an overloaded or unreachable server sees fewer attempts each round instead
    of every agent every few seconds. A refusal on purpose (quota, certificate) waits the longest at once."""
    if refused:
        return s.backoff_max_s
    if lasted_s >= s.report_s:
        return s.heartbeat_s
    return min(s.backoff_max_s, max(previous, s.heartbeat_s) * 2)


def _push_wait(delay: float) -> float:
    """The push loop's wait after a failure: uniform in [delay / 2, delay] (one place, so a test can fix the draw)."""
    return random.uniform(delay / 2, delay)


def _refused_on_purpose(exc: Exception) -> bool:
    """The cloud answered and refused (a quota: RESOURCE_EXHAUSTED; a certificate): asking again soon, or once a
    heartbeat got through, will not change the answer."""
    import grpc

    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    )


def _streams_full(exc: Exception) -> bool:
    """The fleet service refused the stream as beyond the agent's ``concurrent_streams``: a place another of this
    agent's streams gives back (a download), not a quota of the day or a rate that a long wait mends. Told by the
    refusal's mark in the trailing metadata (``protocols.refusals``); a service of before the mark by its words."""
    return _refusal_is(exc, STREAMS_FULL, "concurrent streams)")


def _epochs_refused(exc: Exception) -> bool:
    """The fleet service refused the batch for the epochs this agent opened within a day (its outbox started afresh
    that often: a data folder not kept across restarts): a wait of hours mends it, not the backoff's seconds."""
    return _refusal_is(exc, EPOCHS_BOUND, " epochs opened within ")


def _refusal_is(exc: Exception, mark: str, words: str) -> bool:
    """Whether ``exc`` is the fleet service's RESOURCE_EXHAUSTED refusal marked ``mark`` (``REFUSAL_KEY`` in the
    trailing metadata, ``protocols.refusals``), or, from a service of before the marks, whose details say ``words``."""
    import grpc

    if not isinstance(exc, grpc.aio.AioRpcError) or exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    marks = [v for k, v in (exc.trailing_metadata() or ()) if k == REFUSAL_KEY]
    if marks:  # the mark decides
        return marks[0] == mark
    return words in (exc.details() or "")


def _streams_limit(exc: Exception) -> int | None:
    """The agent's ``concurrent_streams`` as the fleet service's refusal marks it (``STREAMS_LIMIT_KEY`` in the
    trailing metadata), else as its words say it ("(limit N concurrent streams)": a service of before the mark), None
    where neither does."""
    trailing = getattr(exc, "trailing_metadata", lambda: None)() or ()
    for k, v in trailing:
        if k == STREAMS_LIMIT_KEY:
            try:
                return int(v)
            except (TypeError, ValueError):
                return None
    m = re.search(r"\(limit (\d+) concurrent streams\)", getattr(exc, "details", lambda: "")() or "")
    return int(m.group(1)) if m else None


def _streams_full_pace(streak_s: float) -> float:
    """The push's wait after a refusal at ``concurrent_streams``, ``streak_s`` into a streak of them (before jitter):
    ``STREAMS_FULL_RETRY_S`` for ``STREAMS_FULL_FAST_S``, then doubling every ``STREAMS_FULL_DOUBLE_S`` up to
    ``STREAMS_FULL_MAX_S``."""
    over = max(0.0, streak_s - STREAMS_FULL_FAST_S)
    return min(STREAMS_FULL_MAX_S, STREAMS_FULL_RETRY_S * 2 ** min(over / STREAMS_FULL_DOUBLE_S, 64.0))


def _too_large(exc: Exception) -> bool:
    """gRPC's own refusal of a message over a receive (or send) limit: the fleet service's ``max_message_bytes``
    (its message says "Received message larger than max", "Decompressed ..." for a gzip batch), or the agent's
    send limit ("Sent message larger than max"). Not a quota of the cloud's, which a later try may pass."""
    import grpc

    return (
        isinstance(exc, grpc.aio.AioRpcError)
        and exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        and "message larger than max" in (exc.details() or "")
    )


def _open_stream(method, outq: asyncio.Queue, name: str):
    """A stream-stream call of ``method`` and the task of the uplink's own that writes its requests from ``outq`` to
    it (``_write_requests``): (call, task); ended together by ``_end_stream``. Formerly the call was given an async
    generator of the requests, which grpc consumes in a task of its own that ``call.cancel()`` cancels only while the
    call is not done: on a slow link a keepalive ping timed out behind a write still in progress ("Stream removed
    (Delayed close due to in-progress write (ping timeout))") ended the call with that task still waiting for its
    write, never cancelled, and once garbage-collected asyncio logged "Task was destroyed but it is pending!" as an
    ERROR (grpc's ``_consume_request_iterator``), one per such failure."""
    call = method()
    return call, asyncio.create_task(_write_requests(call, outq), name=name)


async def _write_requests(call, outq: asyncio.Queue) -> None:
    """Write the requests ``outq`` holds to ``call`` until None (then half-close), or until the call ends."""
    try:
        while (item := await outq.get()) is not None:
            await call.write(item)
        await call.done_writing()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the call ended (its read says how) or was cancelled
        log.debug("uplink: a stream's writes ended: %r", exc)


def _end_stream(call, writer: asyncio.Task | None) -> None:
    """Cancel a stream's call and its writer (``_open_stream``), whatever state either is in; never blocks."""
    call.cancel()
    if writer is not None:
        writer.cancel()


class Uplink:
    def __init__(
        self,
        settings: CloudSettings,
        outbox: Outbox,
        base_dir: Path = Path("."),
        status: Callable[[], dict] | None = None,
        on_desired=None,
        commands=None,
        for_cloud: Callable[..., str] | None = None,
        event_for_cloud: Callable[[bytes], bytes] | None = None,
        recorded_hidden_from: int = 0,
    ) -> None:
        """``for_cloud``: a text the agent sends (a command's result, a deployment step's reason) as the cloud may
        be told it (``edge_agent.cloud_text``: no gateway variable, no login); ``event_for_cloud``: a stored event's
        or alarm's payload so (the outbox's own events, a backlog stored before events were hidden), applied to
        those alone: the outbox's own events and records of a seq below ``recorded_hidden_from`` (the outbox's
        next seq when this agent opened it; every event it recorded since was hidden as it was recorded: a second
        pass cost ~0.1 ms an event on a backlog's drain, and leaves a text hidden already as it is)."""
        self.s = settings
        self.outbox = outbox
        self.base = Path(base_dir)
        self.status_fn = status or (lambda: {})
        self.for_cloud = for_cloud or _same
        self.event_for_cloud = event_for_cloud
        self.recorded_hidden_from = recorded_hidden_from
        self.on_desired = on_desired
        self.commands = commands  # edge_agent.uplink.commands.CommandRunner: the fleet's one-off commands
        self.state = "stopped"
        self.sent = 0
        self.acked = 0
        self.batches = 0
        self.bytes_sent = 0
        self.reconnects = 0
        self.streams = 0  # PushRecords streams opened
        self.refused = 0  # records the cloud refused for good, dropped from the outbox (``_refused``)
        # pushes refused as beyond the agent's concurrent_streams (``_streams_full_wait``), and whether the next
        # stream's first batch is one record, so that a try refused again costs the link little
        self.streams_refused = 0
        self._probe = False
        # batches refused for the epochs opened within a day (``_epochs_refused``), and the wait before the next try
        self.epochs_refused = 0
        self._epochs_wait = EPOCHS_WAIT_S
        # since when the pushes are refused so (None: a batch was acked since), and when an alarm last ended such a
        # wait early (``_streams_full_wait``)
        self._full_since: float | None = None
        self._full_early_at = float("-inf")
        # the state channel: Connect (``cloud.stream``) until a refusal shows that the service allows this agent one
        # stream, which Connect holds for good (``_streams_full_wait``); then unary Heartbeat, and why (``mode_why``)
        self._streaming = settings.stream
        self.mode_why: str | None = None
        # when (monotonic) the Connect stream is tried again after it gave its place (``_yield_connect``), and the
        # wait after the next such refusal
        self._connect_again_at: float | None = None
        self._connect_again_s = CONNECT_AGAIN_S
        self._connect_live = False  # the open Connect stream was answered (the service took it)
        self._connect_wake: asyncio.Event | None = None  # wakes the Connect stream's wait (``_connected``)
        self._sent_batch: list[int] = []  # the seqs of the batch awaiting its acknowledgement
        # their bytes (payloads and samples), said when the cloud refuses one as too large
        self._sent_bytes = 0
        # seqs the cloud acknowledged that the outbox could not record, with their bytes (``_record_acks``), and when
        # the outbox is asked again (monotonic) after what wait
        self._unrecorded: dict[int, int] = {}
        self._record_at = 0.0
        self._record_delay = settings.backoff_initial_s
        # records set aside (``_lone_failed``): seq -> (bytes, kind, when tried again (monotonic)); how many times each
        # was (its wait doubles), how often the record alone in the batch in flight failed on its way (seq -> count),
        # and how many records were set aside since the start
        self._aside: dict[int, tuple[int, str, float]] = {}
        self._aside_times: dict[int, int] = {}
        self._lone_fails: dict[int, int] = {}
        self.set_aside = 0
        # (seq, kind, bytes) of a batch of one record in flight
        self._lone: tuple[int, str, int] | None = None
        # (monotonic) when the channel last got a connection (``_watch_link``), and the last push failure's time: a
        # record's failure counts towards setting it aside only with a connection made since the failure before
        self._connected_at = 0.0
        self._push_failed_at: float | None = None
        self._one_by_one = 0  # batches still to send one record each, to find a refused record
        # a batch's bytes at most (``_fit_link``): batch_max_bytes, halved after a batch of several records failed in
        # flight, grown back as acked batches show the link carries more; and the batch in flight (records, bytes,
        # when handed to gRPC), None once acknowledged
        self._batch_bytes = self._learned_bytes()
        self._in_flight: tuple[int, int, float] | None = None
        self.last_error: str | None = None
        self.last_ack_at: float | None = None
        self.last_heartbeat_at: float | None = None
        self.generation = 0
        self.mode = "connecting"  # stream | heartbeat (a server without Connect) | reconnecting
        self._burst = BurstLogger(log)
        self._tasks: list[asyncio.Task] = []
        # the channel and stubs, shared with the model manager
        self.client = FleetClient(settings, self.base, self.for_cloud)
        self._wake = asyncio.Event()
        # when the first record poked since the last read of the outbox arrived (time.monotonic), and how many
        # were poked since: a batch waits for more until max_delay_ms after the first, or until it is full
        self._first_poke: float | None = None
        self._pokes = 0
        self._poked_bytes = 0
        self._filled = False  # the last fill ended full (records or bytes poked)
        self._seq_at_read = (
            0  # the outbox's last seq at the last read, if not committed before it (``_missed``)
        )
        self._flagged_seq = 0  # the highest such seq flagged as missed
        self._poked_before_read = False  # pokes were reset by the last read (``_missed``)
        self._urgent = False  # an alarm or event was recorded since: the fill ends at once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link_up = asyncio.Event()  # set by a successful heartbeat: ends a backoff wait early
        self._tls_hint: tuple[float, str | None] = (-1e9, None)  # (when, certificate dates vs the clock)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.open()
        self._tasks = [
            asyncio.create_task(self._push_loop(), name="uplink-push"),
            asyncio.create_task(self._heartbeat_loop(), name="uplink-heartbeat"),
            asyncio.create_task(self._watch_link(), name="uplink-link-watch"),
        ]

    async def _watch_link(self) -> None:
        """Note when the channel gets a connection (``_connected_at``: each time it is READY): the link carried a TLS
        handshake both ways then. A link too slow for one record reconnects between its failures; a link that is down
        (a black-holed path, a cellular dead zone) does not (``_lone_failed``)."""
        import grpc

        channel = getattr(self.client, "channel", None)
        if channel is None:
            return
        try:
            state = channel.get_state(try_to_connect=False)
            while True:
                if state == grpc.ChannelConnectivity.READY:
                    self._connected_at = time.monotonic()
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=False)
        except Exception as exc:
            # (a channel closed under it): from then on no failure counts for setting a record aside
            log.debug("uplink: the channel's state is not watched any more: %r", exc)

    def poke(self, urgent: Future | None = None, nbytes: int = 0) -> None:
        """New records were appended: wake the sender early. ``urgent``: the outbox's future of an alarm or event
        handed to its thread (``append_soon``); once that thread has taken it, a batch filling for ``max_delay_ms``
        is committed and sent at once, the alarm first in it (it does not wait out the fill). ``nbytes``: the bytes
        appended, as far as the caller knows them (a sample's image): a fill ends once ``batch_max_bytes`` were
        poked, as it does at ``batch_max_records``."""
        if self._first_poke is None:
            self._first_poke = time.monotonic()
        self._pokes += 1
        self._poked_bytes += nbytes
        self._wake.set()
        if urgent is not None and self._loop is not None:
            loop = self._loop

            def taken(_f) -> None:  # on the outbox's thread
                try:
                    loop.call_soon_threadsafe(self._urgent_now)
                except RuntimeError:  # the loop is closed: the agent stopped
                    pass

            urgent.add_done_callback(taken)

    def _urgent_now(self) -> None:
        self._urgent = True
        self._wake.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._tasks:  # bounded: a task that ignores its cancellation must not hold up shutdown
            _, stuck = await asyncio.wait(self._tasks, timeout=5)
            if stuck:
                log.warning("uplink: %s did not stop within 5 s", ", ".join(t.get_name() for t in stuck))
        # let go of the ended tasks: a cancelled task keeps its CancelledError, whose traceback keeps the
        # Connect stream's frame and so its call, and a call keeps its gRPC connection open (and pinging)
        # after the channel's close; held here, they lived until Python's cycle collector happened to run,
        # one more connection per agent restart (each fleet config rollout)
        self._tasks = []
        await self.client.close()
        self.state = "stopped"

    def _error(self, where: str, exc: Exception, hint: str | None = None) -> None:
        import grpc

        detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
        code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
        if hint:  # a certificate's dates against this gateway's clock: said first, in plain words
            detail = f"{hint} (TLS: {detail})"
        self.last_error = f"{where}: {code}: {detail}"
        self._burst.log(
            where,
            "uplink to %s: %s failed (%s: %s); retrying with backoff",
            self.s.endpoint,
            where,
            code,
            detail,
        )

    async def _failed(self, where: str, exc: Exception) -> None:
        """``_error``, naming the certificate and its dates when a handshake failed on them."""
        import grpc

        from edge_agent.uplink import tls_check

        hint = None
        if isinstance(exc, grpc.aio.AioRpcError) and exc.code() is grpc.StatusCode.UNAVAILABLE:
            now = time.monotonic()
            if now - self._tls_hint[0] > 30.0:  # looked at again at most every 30 s, whatever the retry pace
                try:
                    async with asyncio.timeout(5):
                        found = await asyncio.to_thread(
                            functools.partial(
                                tls_check.explain,
                                self.s.endpoint,
                                self.client._path(self.s.ca_file),
                                self.client._path(self.s.cert_file),
                                self.client._path(self.s.key_file),
                                server=tls_check.looks_like_certificate_failure(exc.details() or ""),
                            )
                        )
                except Exception:  # the explanation is a courtesy: never a failure of its own
                    found = None
                self._tls_hint = (now, found)
            hint = self._tls_hint[1]
        self._error(where, exc, hint)

    # ---- records ---------------------------------------------------------------------------
    async def _push_loop(self) -> None:
        from protocols.gen import fleet_pb2 as pb

        delay = self.s.backoff_initial_s
        while True:
            if self._unrecorded:
                await self._record_acks()
            await self._new_batch()  # records poked from now on: gathered below
            pending = await asyncio.to_thread(self._unsent, self.s.batch_max_records, self.s.batch_max_bytes)
            self._missed(pending, self.s.batch_max_records)
            if not pending:
                self.state = "idle" if self.state != "backoff" else self.state
                # nothing else to send while acknowledgements wait: the outbox asked again at its time (a poke or a
                # poll reads the records anew)
                if self._unrecorded:
                    if self._first_poke is None:
                        self._wake.clear()
                        await self._woken(
                            None, min(self._poll_s(), max(0.01, self._record_at - time.monotonic()))
                        )
                    continue
                # the first record, then up to max_delay_ms for more to fill the batch
                await self._gather(None, None)
                continue
            try:
                await self._stream(self.client.stub, pb)
                delay = self.s.backoff_initial_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                flight, self._in_flight = self._in_flight, None
                try:
                    if await self._refused(exc):
                        continue
                except Exception as why:  # the outbox could not drop it: retried below, like any failure
                    log.warning("uplink: a refused record could not be dropped: %r", why)
                if _streams_full(exc):  # a download holds the place: it comes back within moments of its end
                    await self._streams_full_wait(exc)
                    continue
                self.state = "backoff"
                self.reconnects += 1
                self._fit_link(flight)
                # another failure ends a streak of refusals at concurrent_streams: the next such refusal (a new
                # download after a service restart, say) is tried again at the fast pace, not the streak's grown one
                self._full_since = None
                await self._failed("PushRecords", exc)
                self._lone_failed(flight)  # (after: its last_error says a record was set aside)
                self._link_up.clear()
                wait = _push_wait(delay)
                delay = min(self.s.backoff_max_s, delay * 2)
                if _epochs_refused(exc):  # refused until the fleet's day window lets one more epoch in
                    self.epochs_refused += 1
                    wait = max(wait, _push_wait(self._epochs_wait))
                    self._epochs_wait = min(EPOCHS_WAIT_MAX_S, self._epochs_wait * 2)
                    self._probe = True  # the next try: one record (the batch's size was never the reason)
                # the cloud is up and said no (a quota): a heartbeat getting through mends nothing
                if _refused_on_purpose(exc):
                    await asyncio.sleep(wait)
                    continue
                try:  # a heartbeat that gets through proves the cloud is back: stop waiting
                    async with asyncio.timeout(wait):
                        await self._link_up.wait()
                    delay = self.s.backoff_initial_s
                except TimeoutError:
                    pass

    def _fit_link(self, flight: tuple[int, int, float] | None, acked: bool = False) -> None:
        """A batch's bytes at most, to what the link carries. A batch of several records that failed in flight after
        half of ``keepalive_timeout_s`` or more halves it, down to ``FIT_FLOOR`` (a batch that small, or a failure
        sooner, a refused connection, says nothing of the batch's size); an acknowledged one's rate (its bytes over
        the time to its ack) grows it to what the link carries in half of ``keepalive_timeout_s``, at most
        ``batch_max_bytes``. A keepalive ping waits behind the batch being sent: on a link too slow for a whole
        ``batch_max_bytes`` within ``keepalive_timeout_s`` (1 MB at 6 KB/s, 20 s) the ping timed out, and the batch
        went again from its start, for ever, nothing acknowledged, the outbox filling to its drops."""
        if flight is None:
            return
        n, nbytes, sent_at = flight
        took = max(time.monotonic() - sent_at, 1e-3)
        half = self.s.keepalive_timeout_s / 2
        if acked:
            fits = min(self.s.batch_max_bytes, int(nbytes / took * half))
            if fits > self._batch_bytes:
                self._batch_bytes = fits
                if fits >= self.s.batch_max_bytes:  # the whole bound again: nothing left to remember
                    self._keep_learned(None)
        elif n > 1 and nbytes > FIT_FLOOR and nbytes // 2 < self._batch_bytes and took >= half:
            self._batch_bytes = max(min(FIT_FLOOR, self.s.batch_max_bytes), nbytes // 2)
            self._keep_learned(self._batch_bytes)
            log.info(
                "uplink to %s: a batch of %d records (%d bytes) failed on its way; the next take at most %d bytes "
                "until acknowledged ones show the link carries more",
                self.s.endpoint,
                n,
                nbytes,
                self._batch_bytes,
            )

    def _link_file(self) -> Path | None:
        """``LINK_FILE`` in the outbox's data folder (None: an outbox without one)."""
        epoch_path = getattr(self.outbox, "epoch_path", None)
        return None if epoch_path is None else Path(epoch_path).parent / LINK_FILE

    def _learned_bytes(self) -> int:
        """A batch's bytes at most at the start: what a former run of this agent learned of the link to this endpoint
        (``_keep_learned``), doubled for every ``LINK_RELAX_S`` since, within ``FIT_FLOOR`` and ``batch_max_bytes``;
        ``batch_max_bytes`` when nothing (readable) was kept. A crash-looping agent on a slow link relearned it at each
        start by failed batches (each up to ``keepalive_timeout_s`` on the link and sent again)."""
        from edge_agent.files import read_json_state

        top = self.s.batch_max_bytes
        path = self._link_file()
        if path is None:
            return top
        try:
            kept = read_json_state(path, 4096)
            if kept.get("endpoint") != self.s.endpoint:
                return top
            learned, at = kept["batch_bytes"], kept["at"]
            # as _keep_learned writes them: a positive whole number of bytes and a finite time. Taken through int() and
            # float(), 1e400 (read as infinity) or a 400-digit number raised OverflowError out of the agent's start
            if (
                type(learned) is not int
                or learned < 1
                or type(at) not in (int, float)
                or not math.isfinite(at)
            ):
                raise ValueError(f"batch_bytes {learned!r}, at {at!r}: not as written")
        except FileNotFoundError:
            return top
        except (OSError, ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            log.debug("uplink: %s not read (%s); batches start at batch_max_bytes", path, exc)
            return top
        age = max(0.0, time.time() - at)  # (a clock stepped back: taken as written now)
        grown = min(learned, top) * 2 ** min(age / LINK_RELAX_S, 64.0)
        start = int(min(top, max(min(FIT_FLOOR, top), grown)))
        if start < top:
            log.info(
                "uplink to %s: batches start at %d bytes at most, as the link carried before this start (%s)",
                self.s.endpoint,
                start,
                path,
            )
        return start

    def _keep_learned(self, nbytes: int | None) -> None:
        """Keep the learned bound for the next start (``_learned_bytes``); None: forget it. A disk that refuses is
        only logged: the bound is then relearned after a restart, as before."""
        from edge_agent.files import atomic_write_json

        path = self._link_file()
        if path is None:
            return
        try:
            if nbytes is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write_json(
                    path, {"endpoint": self.s.endpoint, "batch_bytes": nbytes, "at": time.time()}
                )
        except OSError as exc:
            log.debug("uplink: %s not written (%s)", path, exc)

    def _skipped(self) -> dict[int, int]:
        """The records each read leaves out, with their bytes: acknowledged ones the outbox has not recorded yet
        (``_record_acks``) and records set aside (``_lone_failed``); a set-aside one whose wait is over is let back."""
        if self._aside:
            now = time.monotonic()
            for seq in [q for q, (_, _, at) in self._aside.items() if at <= now]:
                self._let_back(seq, "its wait is over")
        if not self._unrecorded:
            return {q: a[0] for q, a in self._aside.items()}
        return {**self._unrecorded, **{q: a[0] for q, a in self._aside.items()}}

    def _unsent(self, limit: int, max_bytes: int) -> list:
        """``outbox.pending`` without the records ``_skipped`` names (off the loop), left out by its query."""
        return self.outbox.pending(limit, max_bytes, skip=self._skipped())

    def _let_back(self, seq: int, why: str) -> None:
        nbytes, kind, _ = self._aside.pop(seq)
        # one more failure on its way sets it aside again (its wait doubled)
        self._lone_fails = {seq: ASIDE_AFTER - 1}
        log.info(
            "uplink to %s: record %d (%s, %d bytes) is tried again: %s",
            self.s.endpoint,
            seq,
            kind,
            nbytes,
            why,
        )

    def _lone_failed(self, flight: tuple[int, int, float] | None) -> None:
        """The batch in flight failed: if it was one record alone, of more than ``FIT_FLOOR`` bytes, and failed on its
        way after half of ``keepalive_timeout_s`` or more, count it; the ``ASIDE_AFTER``-th time, set it aside.
        Not counted without a connection made since the push failed before (``_watch_link``): an outage (a
        black-holed path, a cellular dead zone) fails every batch after the keepalive or the connect timeout, whatever
        its size, and a large sample at the head was set aside as too large for a fast link, its WARNING blaming its
        size, and held ``ASIDE_RETRY_S`` after the link came back."""
        prev, self._push_failed_at = self._push_failed_at, time.monotonic()
        lone, self._lone = self._lone, None
        if flight is None or lone is None or flight[0] != 1:
            return
        if time.monotonic() - flight[2] < self.s.keepalive_timeout_s / 2:  # refused, not cut on its way
            return
        seq, kind, nbytes = lone
        if nbytes <= min(FIT_FLOOR, self.s.batch_max_bytes):
            # too small to be too large for any link (16 KB: 2.7 s at 6 KB/s): a path dead or a service away meanwhile
            # (a black-holed connection fails after the keepalive); an alarm alone in the outbox was set aside so
            return
        # no connection made since the failure before: the link down
        if prev is not None and self._connected_at < prev:
            return
        fails = self._lone_fails.get(seq, 0) + 1
        self._lone_fails = {seq: fails}  # (only the head's: another record's failures end a streak)
        if fails < ASIDE_AFTER:
            return
        self._lone_fails = {}
        times = self._aside_times[seq] = self._aside_times.get(seq, 0) + 1
        while len(self._aside_times) > 1000:  # (bounded: the oldest forgotten)
            del self._aside_times[next(iter(self._aside_times))]
        wait = min(ASIDE_RETRY_MAX_S, ASIDE_RETRY_S * 2 ** min(times - 1, 32))
        self._aside[seq] = (nbytes, kind, time.monotonic() + wait)
        self.set_aside += 1
        self.last_error = (
            f"PushRecords: record {seq} ({kind}, {nbytes} bytes) failed on its way {fails} times, each after "
            f"keepalive_timeout_s / 2 or more: too large for this link within keepalive_timeout_s "
            f"({self.s.keepalive_timeout_s:g} s); set aside (kept in the outbox), tried again in {wait:g} s"
        )
        log.warning(
            "uplink to %s: record %d (%s, %d bytes) failed on its way %d times, each after keepalive_timeout_s / 2 "
            "or more: the link does not carry it within keepalive_timeout_s (%g s). It is set aside, kept in the "
            "outbox, and the records behind it are sent; it is tried again in %g s, or once a batch as large is "
            "acknowledged. To send such records on this link, raise cloud.keepalive_timeout_s above its bytes / the "
            "link's bytes per second",
            self.s.endpoint,
            seq,
            kind,
            nbytes,
            fails,
            self.s.keepalive_timeout_s,
            wait,
        )

    async def _record_acks(self) -> None:
        """Record in the outbox the acknowledgements it could not take (``_unrecorded``: its disk full or read-only),
        tried at the doubling backoff until it does. Meanwhile the records behind them are sent (each read leaves
        the acknowledged ones out, ``_unsent``), so an alarm or event committed before the disk filled goes up; past
        ``UNRECORDED_MAX`` seqs kept, nothing more is sent until the outbox records them. Formerly nothing at all was
        sent while one acknowledgement waited (the disk full over a weekend: every alarm behind it waited too); and
        before that, the failure was taken for the link's and the same batch uploaded about every second, each a
        duplicate at the cloud. A renewed outbox (a new epoch) keeps them, acknowledged as they are: its salvage copies
        the old store's records with their seqs (the outbox's numbering goes on, so an old seq names the same record
        there, never another); forgotten at the renewal, they were handed out again and stored twice at the cloud,
        once per epoch."""
        while self._unrecorded:
            now = time.monotonic()
            if now < self._record_at:
                if len(self._unrecorded) < UNRECORDED_MAX:
                    return
                await asyncio.sleep(self._record_at - now)
                continue
            seqs = list(self._unrecorded)
            try:
                n = await asyncio.to_thread(self.outbox.ack, seqs)
            except Exception as exc:
                self._error("recording an acknowledgement", exc)
                self._record_at = time.monotonic() + _push_wait(self._record_delay)
                self._record_delay = min(self.s.backoff_max_s, self._record_delay * 2)
                continue
            log.info(
                "uplink to %s: the outbox recorded the acknowledgement of %d records it could not before",
                self.s.endpoint,
                len(seqs),
            )
            self.acked += n
            for q in seqs:
                self._unrecorded.pop(q, None)
            self._record_delay = self.s.backoff_initial_s

    def _unrecorded_ack(self, seqs, recs: list, exc: Exception) -> None:
        """The outbox could not record an acknowledgement (``_record_acks``)."""
        sizes = {r.seq: r.size for r in recs}
        first = not self._unrecorded
        self._unrecorded.update((q, sizes.get(q, 0)) for q in seqs)
        if first:
            self._record_at = time.monotonic() + _push_wait(self._record_delay)
        self._error("recording an acknowledgement", exc)

    async def _streams_full_wait(self, exc: Exception) -> None:
        """The push was refused as beyond the agent's ``concurrent_streams`` (``_streams_full``): wait
        ``STREAMS_FULL_RETRY_S`` (uniform in half to one and a half of it; longer once the refusals have lasted
        ``STREAMS_FULL_FAST_S``, ``_streams_full_pace``), ended at once by an alarm or event recorded meanwhile (at
        most once per ``STREAMS_FULL_RETRY_S``), and try again, the first batch one record (the highest in priority:
        an alarm first). The push's doubling backoff is neither waited nor doubled: at ``concurrent_streams`` 2 a
        rollout's download held the place for its whole length and the uplink's retries then doubled past it (an
        alarm waited ~5 s behind a 4-s download)."""
        self.state = "backoff"
        self.streams_refused += 1
        self._probe = True
        self.last_error = f"PushRecords: RESOURCE_EXHAUSTED: {exc.details()}"  # type: ignore[attr-defined]
        if _streams_limit(exc) == 1 and self.mode == "stream" and self._streaming:
            self._yield_connect()
            return  # tried again at once: the place is given back as the Connect stream ends
        self._burst.log(
            "streams_full",
            "uplink to %s: PushRecords refused while another stream of this agent's holds its place (%s); the "
            "records wait, tried again every %g s (alarms at once), less often after %g s (up to every %g s)",
            self.s.endpoint,
            exc.details(),  # type: ignore[attr-defined]
            STREAMS_FULL_RETRY_S,
            STREAMS_FULL_FAST_S,
            STREAMS_FULL_MAX_S,
        )
        now = time.monotonic()
        if self._full_since is None:
            self._full_since = now
        end = now + random.uniform(0.5, 1.5) * _streams_full_pace(now - self._full_since)
        # woken by an alarm alone (a line's results poked meanwhile would each make a try refused again), and by one
        # at most once per STREAMS_FULL_RETRY_S (an alarm or event storm tried once per round trip)
        while (left := end - time.monotonic()) > 0:
            if self._urgent:
                if (t := time.monotonic()) - self._full_early_at >= STREAMS_FULL_RETRY_S:
                    self._full_early_at = t
                    return
                left = min(left, self._full_early_at + STREAMS_FULL_RETRY_S - t)
            self._wake.clear()
            await self._woken(None, left)

    def _yield_connect(self) -> None:
        """The fleet service allows this agent one stream at once (``concurrent_streams`` 1, told by the refusal's
        ``STREAMS_LIMIT_KEY``), which the agent's own Connect stream holds for as long as it is open: no push could
        ever be taken (before, tried every 5-7.5 s for ever, nothing delivered). The Connect stream is ended and the
        state goes by unary Heartbeat every ``heartbeat_s`` (as with ``cloud.stream: false``), so that the records go;
        said in a WARNING and in ``/status`` (``uplink.mode`` ``heartbeat``, ``mode_why``). The Connect stream is
        tried again after ``CONNECT_AGAIN_S``, the wait doubling at each such refusal up to ``CONNECT_AGAIN_MAX_S``
        (formerly never, until the agent restarted): once the service takes it beside a push, all is as before."""
        wait = self._connect_again_s
        self._connect_again_at = time.monotonic() + wait
        self._connect_again_s = min(CONNECT_AGAIN_MAX_S, wait * 2)
        self._streaming = False
        first = self.mode_why is None
        self.mode_why = (
            "the fleet service allows this agent 1 stream at once (concurrent_streams 1), which its Connect stream "
            "held: no record could be sent; the state goes by unary Heartbeat every heartbeat_s instead (as with "
            f"cloud.stream: false), the Connect stream tried again in {wait:g} s; give the agent concurrent_streams 3 "
            "or more on the service to have the Connect stream (and records sent during a rollout's download)"
        )
        (log.warning if first else log.info)("uplink to %s: %s", self.s.endpoint, self.mode_why)
        if self._connect_wake is not None:
            self._connect_wake.set()

    def _connect_again(self) -> bool:
        """The Connect stream given up for unary Heartbeat (``_yield_connect``) is due to be tried again."""
        at = self._connect_again_at
        if at is None or self._streaming or time.monotonic() < at:
            return False
        self._connect_again_at = None
        self._streaming = True
        log.info(
            "uplink to %s: the Connect stream is tried again (concurrent_streams 1 before)", self.s.endpoint
        )
        return True

    async def _refused(self, exc: Exception) -> bool:
        """The cloud refused a batch as no store can hold it (INVALID_ARGUMENT: a record of another agent
        version, say), or as a message larger than gRPC takes (RESOURCE_EXHAUSTED, "message larger than max":
        one record over the fleet service's ``max_message_bytes``, a PLC's 15 MB ByteString forwarded), which
        a retry never mends: left alone, it would block every record behind it for good. The batch's records
        are sent again one per batch to find the one refused; that one is dropped from the outbox, counted and
        reported (``refused``) with the cloud's reason in the log."""
        import grpc

        if not (
            isinstance(exc, grpc.aio.AioRpcError)
            and (exc.code() is grpc.StatusCode.INVALID_ARGUMENT or _too_large(exc))
        ):
            return False
        batch, self._sent_batch = self._sent_batch, []
        if len(batch) > 1:
            self._one_by_one = len(batch)
            return True
        n = await asyncio.to_thread(self.outbox.refuse, batch)
        self.refused += n
        log.warning(
            "uplink to %s: the cloud refused record %s for good (%s%s); dropped from the outbox and counted "
            "as refused, so that the records behind it are sent",
            self.s.endpoint,
            batch,
            exc.details(),
            f": {self._sent_bytes} bytes, over the fleet service's message limit (16 MiB by default); leave such "
            "values out of what is forwarded or uploaded"
            if _too_large(exc)
            else "",
        )
        return True

    def _poll_s(self) -> float:
        """How often an idle uplink looks at the outbox for records appended without a poke (the outbox's own
        events; a poke that came before its record was committed): every max_delay_ms, never more often than every
        POLL_MIN_S."""
        return max(self.s.max_delay_ms / 1000, POLL_MIN_S)

    async def _woken(self, reading: asyncio.Future | None, timeout: float) -> None:
        """Wait for a poke, the stream's end (``reading`` done) or ``timeout`` s, whichever comes first."""
        if timeout <= 0:
            return
        woke = asyncio.ensure_future(self._wake.wait())
        try:
            # FIRST_COMPLETED: asyncio.wait's default waits for all, and an idle stream's read is done only when the
            # stream ends: a poke on an open stream woke nothing, its batch waited a poll and then its fill (up to
            # twice max_delay_ms), and an alarm the whole of both
            await asyncio.wait(
                {woke} if reading is None else {woke, reading},
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            woke.cancel()

    async def _gather(self, reading: asyncio.Future | None, idle_s: float | None) -> bool:
        """Wait for a record (at most ``idle_s`` s; None: as long as it takes), then up to ``max_delay_ms`` after
        the first one poked for more to fill the batch (unless ``batch_max_records`` were poked sooner, or an
        alarm or event was recorded: ``poke(urgent=)``). True:
        there are records to read; False: none came within ``idle_s``, or the stream ended (``reading``)."""
        deadline = None if idle_s is None else time.monotonic() + idle_s
        while self._first_poke is None:
            if reading is not None and reading.done():
                return False
            if self._urgent:  # an alarm poked before the last read, taken by the outbox's thread after it
                return True
            left = self._poll_s() if deadline is None else min(self._poll_s(), deadline - time.monotonic())
            if left <= 0:
                return False
            self._wake.clear()
            if self._first_poke is not None:
                break
            await self._woken(reading, left)
            if self._first_poke is None and (reading is None or not reading.done()):
                # appended without a poke: sent at once (nothing says more are coming)
                if await asyncio.to_thread(self._unsent, 1, self.s.batch_max_bytes):
                    return True
        end = self._first_poke + self.s.max_delay_ms / 1000
        while (
            self._pokes < self.s.batch_max_records
            and self._poked_bytes < self.s.batch_max_bytes
            and (left := end - time.monotonic()) > 0
        ):
            if reading is not None and reading.done():
                return False
            if self._urgent:  # an alarm or event handed to the outbox: the batch goes now (``_new_batch``)
                break
            self._wake.clear()
            await self._woken(reading, left)
        # a fill that ended full: committed before the read (``_new_batch``); a backlog's reads wait for no fill
        self._filled = self._pokes >= self.s.batch_max_records or self._poked_bytes >= self.s.batch_max_bytes
        return reading is None or not reading.done()

    async def _idle(self, reading: asyncio.Future) -> bool:
        """``_gather`` on an open stream for up to ``stream_idle_s``, asking the outbox again meanwhile to record the
        acknowledgements it could not (``_record_acks``) at their time: an idle stream held them for its whole
        ``stream_idle_s`` (30 s)."""
        until = time.monotonic() + self.s.stream_idle_s
        while True:
            left = until - time.monotonic()
            if self._unrecorded:
                left = min(left, max(0.01, self._record_at - time.monotonic()))
            if await self._gather(reading, left):
                return True
            if reading.done() or not self._unrecorded or time.monotonic() >= until:
                return False
            await self._record_acks()

    async def _new_batch(self) -> None:
        """Before a read of the outbox: records poked from now on fill the next batch. An alarm or event that the
        outbox's thread took since the last read (``poke(urgent=)``) is committed first (not at the writer's next
        interval), so that the read holds it, first; one it takes during this read keeps ``_urgent`` set, and the
        next ``_gather`` returns at once for it: its poke came before this read and is not counted again, so that
        flag is what wakes the uplink for it (before, it waited for the next poll, max_delay_ms). So is a fill
        that ended full (``_filled``): it ends within moments of the last append, and a read before its commit
        missed it until the next poll."""
        urgent = self._urgent or self._filled
        self._urgent = self._filled = False
        self._poked_before_read = (
            self._pokes > 0
        )  # (``_missed``: a poke after the read starts a fill of its own)
        self._first_poke, self._pokes, self._poked_bytes = None, 0, 0
        # appended by now, committed or not (``_missed``): the agent pokes once its append is done, so every record
        # poked so far is at or below it; one appended during the wait below is poked into the next fill
        top = self.outbox.last_seq
        if not urgent and self._poked_before_read and top > self.outbox.committed_seq:
            # a fill that ended by time: its last records were appended in its last moments and the writer commits
            # them at its next round (commit_interval_ms). Waited for, not forced (no fsync, no drop report): read
            # before it, they went alone right after (``_missed``'s flush), nearly every fill of a steady line
            # split in two; ``_missed`` stays for a commit later than the bound
            waited = asyncio.ensure_future(
                asyncio.to_thread(self.outbox.wait_committed, top, self._commit_wait_s())
            )
            while not waited.done() and not self._urgent:  # an alarm poked meanwhile is not held up by it
                self._wake.clear()
                await self._woken(waited, URGENT_FLUSH_S)
            urgent, self._urgent = self._urgent, False
        if urgent:
            try:
                await asyncio.to_thread(self.outbox.flush, URGENT_FLUSH_S)
            except Exception as exc:
                # the outbox's thread busy past URGENT_FLUSH_S (a large sample on a slow disk, an append waiting for
                # room): its wait raises TimeoutError. The read goes without what was not committed, as the bound
                # says; raised here it ended the push loop for good (no stream open) and no record went up again
                log.debug("uplink: the outbox did not commit before the read (%r); read without", exc)
            top = self.outbox.last_seq  # with what its thread took meanwhile
        # (``_missed``) 0: everything appended by now was committed before the read, which misses none of it (a read
        # of records a poke during the wait above already took along finds nothing, and flags nothing)
        self._seq_at_read = top if self.outbox.committed_seq < top else 0

    def _commit_wait_s(self) -> float:
        """How long a read after a fill ended by time waits for the outbox's own commit: its writer's round
        (commit_interval_ms; the commit comes within about two), never more than URGENT_FLUSH_S."""
        return min(URGENT_FLUSH_S, 2 * self.outbox.s.commit_interval_ms / 1000 + COMMIT_WAIT_SLACK_S)

    def _missed(self, recs: list, limit: int) -> None:
        """After a read that was not full: records appended before it and not committed by it (poked in the last
        moments of a fill, committed at the writer's next interval) had their pokes reset with the read; the flag of
        an alarm's wakes the uplink for them (the next gather returns at once, ``_new_batch`` commits first). Each
        seq is flagged once: a record the outbox lost or refused keeps its seq and never commits. Before, they
        waited for the uplink's next look at the outbox, max_delay_ms."""
        top = self._seq_at_read
        if not self._poked_before_read or top <= self._flagged_seq or len(recs) >= limit:
            return
        if 2 * sum(r.size for r in recs) >= self._batch_bytes:  # full by bytes: the rest is read next
            return
        if not recs or max(r.seq for r in recs) < top:
            self._flagged_seq = top
            self._urgent = True

    def _ended_idle(self, reading: asyncio.Future) -> None:
        """The server ended the stream while no batch was in flight (it restarted; the keepalive found the path
        dead): nothing is lost, the next record opens a new stream (whose failure, if the cloud is still away,
        is a failure like any other, with its backoff)."""
        import grpc

        exc = None if reading.cancelled() else reading.exception()
        if exc is None and not reading.cancelled() and reading.result() not in (None, grpc.aio.EOF):
            log.warning("uplink to %s: an ack for no batch on an idle stream; stream ended", self.s.endpoint)
        log.debug("uplink to %s: the idle PushRecords stream ended (%r)", self.s.endpoint, exc)

    async def _stream(self, stub, pb) -> None:
        """One stream: batches go up one at a time, each once gathered (``_gather``); the stream stays open
        while idle up to ``stream_idle_s`` and returns then, or when the server ends it while idle (nothing in
        flight: the next record opens a new one); raises on any failure with a batch in flight."""
        import grpc

        outq: asyncio.Queue = asyncio.Queue(maxsize=1)
        writer: asyncio.Task | None = None  # (``_open_stream``)
        # opened once its first batch is built and paced (``_pace``), so that the batch goes as the stream opens: a
        # stream opened before waited meanwhile, and the fleet service at its concurrent_streams limit ended it for
        # another of the agent's streams before its first batch, a failure with its backoff
        call: grpc.aio.StreamStreamCall | None = None
        self.state = "sending"
        # the stream's next message: the ack of the batch in flight, or, while idle, the stream's end
        reading: asyncio.Future | None = None
        gathered = True  # the push loop gathered the first batch before the stream opened
        carried = 0  # batches acked on this stream
        try:
            while True:
                limit = 1 if self._one_by_one or self._probe else self.s.batch_max_records
                if not gathered and not self._one_by_one:
                    assert call is not None  # (a stream is open once a batch went: gathered is True before)
                    if reading is None:
                        reading = asyncio.ensure_future(call.read())
                    self.state = "idle"
                    if not await self._idle(reading):
                        if reading.done():  # the server ended the idle stream (a restart, a dead path)
                            self._ended_idle(reading)
                        break
                gathered = False
                if self._unrecorded:  # tried at its backoff (waits here only past UNRECORDED_MAX)
                    await self._record_acks()
                await self._new_batch()  # records poked from now on fill the next batch
                recs = await asyncio.to_thread(self._pending, limit)
                self._missed(recs, limit)
                if not recs:  # (none left to send one by one either: dropped meanwhile)
                    self._one_by_one = 0
                    if call is None:  # nothing to open a stream for
                        break
                    continue
                self.state = "sending"
                self._sent_batch = [r.seq for r in recs]
                self._sent_bytes = sum(r.size for r in recs)
                self._lone = (recs[0].seq, recs[0].kind, recs[0].size) if len(recs) == 1 else None
                batch = pb.RecordBatch()
                nbytes = 0
                for r in recs:
                    pr = batch.records.add(
                        seq=r.seq, epoch=self.outbox.epoch, kind=r.kind, t=r.t, payload=r.payload
                    )
                    if r.sample_sha256:
                        data = await asyncio.to_thread(self.outbox.sample_bytes, r)
                        if data is not None:
                            pr.sample = data
                            pr.sample_sha256 = r.sample_sha256
                            pr.sample_ext = r.sample_ext or ""
                    nbytes += r.size
                await self._pace(nbytes)
                if call is None:
                    call, writer = _open_stream(stub.PushRecords, outq, "uplink-push-write")
                    self.streams += 1
                elif reading is not None and reading.done():  # ended while idle: sent on a new stream
                    self._ended_idle(reading)
                    break
                self._in_flight = (len(recs), nbytes, time.monotonic())
                await outq.put(batch)
                if reading is None:
                    reading = asyncio.ensure_future(call.read())
                wait = ACK_WAIT_S + self.s.keepalive_timeout_s
                try:
                    async with asyncio.timeout(wait):
                        ack = await asyncio.shield(reading)
                except TimeoutError:
                    raise TimeoutError(
                        f"no acknowledgement of a batch of {len(recs)} records ({nbytes} bytes) within {wait:g} s "
                        f"({ACK_WAIT_S:g} s for the fleet service, keepalive_timeout_s {self.s.keepalive_timeout_s:g} s "
                        "for the link); a service hung, or a link too slow for batch_max_bytes in keepalive_timeout_s"
                    ) from None
                if ack is None or ack is grpc.aio.EOF:
                    reading = None
                    if carried:
                        self._in_flight = None  # (not the link's failure)
                        # ended cleanly (status OK) as this batch went: the fleet service gave the stream to another
                        # of this agent's (its concurrent_streams limit) before reading it; sent again on a new stream,
                        # no failure; a stream that carried none fails as before, with its backoff (no loop without
                        # a batch acknowledged on each stream)
                        log.debug("uplink to %s: the stream ended before its batch was read", self.s.endpoint)
                        break
                    raise ConnectionError("the server closed the stream")
                carried += 1
                flight, self._in_flight = self._in_flight, None
                self._fit_link(flight, acked=True)
                self._probe = False  # the stream is this agent's: its next batches are whole
                self._epochs_wait = EPOCHS_WAIT_S
                if self.mode_why is not None and self._connect_live:
                    # a push taken beside the Connect stream tried again: the service allows both now
                    self.mode_why, self._connect_again_s = None, CONNECT_AGAIN_S
                    log.info(
                        "uplink to %s: the Connect stream and the records go together again", self.s.endpoint
                    )
                self._full_since = None  # (a refusal at concurrent_streams after this starts a streak afresh)
                # the stream's next message read from now on: an end of the stream by the server while this side
                # gathers or paces its next batch (the fleet service's at its concurrent_streams limit, to take
                # another stream of this agent's) is seen before that batch is sent into it
                reading = asyncio.ensure_future(call.read())
                # the outbox's disk full or read-only: the acknowledgement is recorded later, the batch not sent again
                try:
                    n = await asyncio.to_thread(self.outbox.ack, list(ack.seqs))
                except Exception as exc:
                    self._unrecorded_ack(ack.seqs, recs, exc)
                    n = 0
                else:
                    if self._unrecorded:  # the disk takes writes again: the ones kept are recorded at once
                        self._record_at = 0.0
                if self._lone_fails:
                    for q in ack.seqs:
                        self._lone_fails.pop(q, None)
                # a batch as large as a record set aside went through: the link carries it now
                for q in [q for q, a in self._aside.items() if a[0] <= nbytes]:
                    self._let_back(q, f"a batch of {nbytes} bytes was acknowledged")
                self._one_by_one = max(0, self._one_by_one - 1)
                self.sent += len(recs)
                self.acked += n
                self.batches += 1
                self.bytes_sent += nbytes
                self.last_ack_at = time.time()
                # more behind (a full batch: a backlog): read at once; else the next batch is gathered
                gathered = len(recs) >= limit or 2 * nbytes >= self._batch_bytes
        finally:
            if reading is not None:
                reading.cancel()
            if call is not None:  # never blocks (this also runs on cancellation)
                _end_stream(call, writer)
        self.state = "idle"

    async def _pace(self, nbytes: int) -> None:
        cap = self.s.bandwidth_cap_bytes_per_s
        if cap:
            await asyncio.sleep(nbytes / cap)

    # ---- state and desired state ---------------------------------------------------------------
    async def _report(self):
        from protocols import json_codec
        from protocols.gen import fleet_pb2 as pb

        boot, seq = self.client.next_report()  # numbered before it is read: a step after it is numbered after
        before = list(self.client.runs_before)  # (of the run just numbered: no await between)
        st = self.status_fn()
        ob = await asyncio.to_thread(self.outbox.stats)
        req = pb.HeartbeatRequest(
            labels=st.get("labels", {}),
            # JSON a strict reader takes: a source's last error may quote a file name that was not UTF-8
            health_json=json_codec.dumps(st.get("health", {})),
            outbox_depth=ob["depth"],
            generation_seen=self.generation,
            slots=[pb.SlotState(**s) for s in st.get("slots", [])],
            epoch=ob.get("epoch", 0),
            dropped=ob.get("dropped_total", {}),
            command_results=self._command_results(pb),
            report_seq=seq,
            boot_id=boot,
            runs_before=before,
        )
        if st.get("config"):
            req.config.CopyFrom(pb.ConfigState(**st["config"]))
        return req

    def _pending(self, limit: int) -> list:
        """The outbox's next records, the free text of an event or alarm this agent did not hide as it recorded it
        hidden as the cloud may be told it (off the loop: a JSON read per such event)."""
        recs = self._unsent(limit, self._batch_bytes)
        hide = self.event_for_cloud
        if hide is None:
            return recs
        out = []
        for r in recs:
            if r.kind in ("event", "alarm") and (
                r.seq < self.recorded_hidden_from or _OUTBOX_OWN in r.payload
            ):
                shown = hide(r.payload)
                out.append(r if shown is r.payload else dataclasses.replace(r, payload=shown))
            else:
                out.append(r)
        return out

    def _command_results(self, pb) -> list:
        if self.commands is None:
            return []
        out = []
        for r in self.commands.results():
            if r.get("detail"):  # the command and pipeline it names are sent in clear beside it
                named = [v for k, v in r.items() if k != "detail" and isinstance(v, str)]
                r = {**r, "detail": self.for_cloud(r["detail"], named)}
            out.append(pb.CommandResult(**r))
        return out

    async def _run_commands(self, reply) -> None:
        """The desired state's commands (each id once; a failure is the command's result, never the link's)."""
        if self.commands is None:
            return
        try:
            await self.commands.run(reply.commands)
        except (
            Exception
        ) as exc:  # e.g. the data folder cannot be written: nothing ran, the command stays listed
            self._burst.log(
                "commands",
                "uplink: fleet commands not run (%s: %s); they stay in the desired state and are tried again",
                type(exc).__name__,
                exc,
            )

    async def _desired(self, reply) -> None:
        self.generation = reply.generation
        self.last_heartbeat_at = time.time()
        self._link_up.set()
        await self._run_commands(reply)
        if self.on_desired is not None and self.s.follow_desired_state:
            await self.on_desired(reply)

    async def _heartbeat_loop(self) -> None:
        import grpc

        delay = self.s.heartbeat_s
        while True:
            if self._streaming:
                opened = time.monotonic()
                slow = False
                try:
                    await self._connected()
                    if not self._streaming:  # ended to give its place to the records (``_yield_connect``)
                        continue
                except asyncio.CancelledError:
                    raise
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                        log.info("uplink: %s has no Connect stream; using unary heartbeats", self.s.endpoint)
                        self._streaming = False
                        continue
                    if self.mode_why is not None and _streams_full(exc):  # tried again: the place still taken
                        self._yield_connect()
                        continue
                    # refused on purpose (a quota, a certificate): asking again soon will not change the answer
                    slow = _refused_on_purpose(exc)
                    await self._failed("Connect", exc)
                except Exception as exc:
                    await self._failed("Connect", exc)
                self.mode = "reconnecting"
                delay = reconnect_delay(delay, time.monotonic() - opened, self.s, slow)
                await asyncio.sleep(random.uniform(0, delay))  # full jitter: no herd after a restart
                continue
            self.mode = "heartbeat"
            try:
                reply = await self.client.stub.Heartbeat(await self._report(), timeout=10)
                await self._desired(reply)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed("Heartbeat", exc)
            await asyncio.sleep(self.s.heartbeat_s)
            self._connect_again()

    async def _connected(self) -> None:
        """One Connect stream: reports on change and every ``report_s``; returns or raises when it ends."""
        from protocols.gen import fleet_pb2 as pb

        outq: asyncio.Queue = asyncio.Queue(maxsize=2)
        call, writer = _open_stream(self.client.stub.Connect, outq, "uplink-connect-write")
        latest: list = [None]
        arrived = self._connect_wake = asyncio.Event()
        # since when a report has gone unanswered (None: the service said something since the last one sent). Each
        # report carries a report_id, which the service acknowledges as it receives it: a stream left open and
        # silent (a service hung, or a middlebox between that holds the connection and answers its pings) is ended
        # after keepalive_timeout_s without a word, as a dead path is by the keepalive; it waited for ever (no
        # desired state, no rollout, no configuration until the agent restarted)
        unanswered: list[float | None] = [None]
        answer_s = self.s.keepalive_timeout_s

        async def read() -> None:
            async for msg in call:
                unanswered[0] = None
                self._connect_live = True
                self.client.heard()  # (the run is named after it: ``FleetClient.new_run``)
                if msg.HasField("desired"):
                    latest[0] = msg.desired
                    arrived.set()

        def silent() -> TimeoutError:
            # a link loss (the stream is cancelled, which tells the fleet client nothing): a gateway restored from a
            # VM memory snapshot whose old connection died without a word ends it this way, and its next stream may
            # go over a fresh connection; under the snapshot's run and count, its reports were dropped as late
            self.client.link_lost()
            return TimeoutError(
                f"no answer from the fleet service on the Connect stream for {answer_s:g} s (keepalive_timeout_s) "
                "after a state report: the stream is open but silent; reconnecting"
            )

        reader = asyncio.create_task(read(), name="uplink-connect-read")
        last_key, last_sent = None, 0.0
        report_id = 0
        try:
            while not reader.done():
                if not self._streaming:  # its place given to the records (``_yield_connect``)
                    return
                req = await self._report()
                key = (
                    sorted(req.labels.items()),
                    [s.SerializeToString() for s in req.slots],
                    req.epoch,
                    sorted(req.dropped.items()),
                    req.generation_seen,
                    [r.SerializeToString() for r in req.command_results],
                    req.config.SerializeToString(),
                )
                now = time.monotonic()
                if key != last_key or now - last_sent >= self.s.report_s:
                    report_id += 1
                    try:  # a service that reads nothing leaves grpc's send (and so this queue) full
                        async with asyncio.timeout(answer_s):
                            await outq.put(pb.AgentMessage(report=req, report_id=report_id))
                    except TimeoutError:
                        raise silent() from None
                    if unanswered[0] is None:
                        unanswered[0] = now
                    last_key, last_sent = key, now
                    self.mode = "stream"
                wait = self.s.heartbeat_s
                if unanswered[0] is not None:
                    wait = min(wait, max(0.0, unanswered[0] + answer_s - time.monotonic()))
                try:  # wake at once when the desired state arrives, else after heartbeat_s
                    async with asyncio.timeout(wait):
                        await arrived.wait()
                except TimeoutError:
                    pass
                arrived.clear()
                if (asked := unanswered[0]) is not None and time.monotonic() - asked >= answer_s:
                    raise silent()
                if latest[0] is not None:
                    await self._desired(latest[0])
            await reader  # raises what ended the stream
            raise ConnectionError("the server ended the Connect stream")
        finally:
            self._connect_live = False
            reader.cancel()
            _end_stream(call, writer)

    def status(self) -> dict:
        return {
            "endpoint": self.s.endpoint,
            "state": self.state,
            "sent": self.sent,
            "acked": self.acked,
            "batches": self.batches,
            "bytes_sent": self.bytes_sent,
            "reconnects": self.reconnects,
            "streams": self.streams,
            "streams_refused": self.streams_refused,
            "refused": self.refused,
            # records set aside since the start, as too large for the link (``_lone_failed``), and those now
            "set_aside": self.set_aside,
            "aside_now": len(self._aside),
            "unrecorded_acks": len(self._unrecorded),
            # batches refused for the epochs opened within a day, since the start, and whether no batch was acked since
            "epochs_refused": self.epochs_refused,
            "epochs_refused_now": self._epochs_wait > EPOCHS_WAIT_S,
            "last_error": self.last_error,
            "last_ack_at": self.last_ack_at,
            "generation": self.generation,
            "mode": self.mode,
            "mode_why": self.mode_why,
        }


def _same(text: str, clear=()) -> str:
    return text
