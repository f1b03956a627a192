"""The agents' long-lived ``Connect`` streams: state reports in, desired state pushed out.

Why: a unary heartbeat costs the server ~1 ms of CPU in grpcio alone, plus a database write, so a
fleet of thousands polling every few seconds needs cores just to say "nothing changed". With one
stream per agent the steady state is nearly free: an agent reports when its state changes and at
least every ``report_s`` (30 s), and the server pushes the desired state the moment it changes.

- **Identity** is read once, when the stream opens (the certificate's agent id and tenant).
- **Coalesced writes**: a report only replaces the agent's entry in memory (``pending``); every
  ``flush_s`` the entries go to the store in one transaction (``Store.heartbeat_many``). A report is
  reconstructible state (the agent sends it again), so a crash loses at most ``flush_s`` of it. When that
  transaction fails, the reports are written one at a time, so that one agent's report the store refuses
  never costs another agent's (of any tenant) theirs: a report the store refuses as malformed
  (``ValueError``) is dropped and counted (``refused``), one that failed otherwise goes back to ``pending``
  for the next flush (unless a newer report of that agent came meanwhile), at most ``MAX_REPORT_ATTEMPTS``
  times, and ``pending`` holds at most ``max_pending`` agents. When the store itself fails (nothing can be
  written), every report waits for the next flush. A report whose agent's row another transaction holds
  (PostgreSQL: an admin's open transaction) is skipped by the store and waits for the next flush (counted:
  ``held``; with ``pending`` full, dropped and counted as ``refused``), the others are written (that row held every
  tenant's reports); written again, it is never written over a newer report of the agent (another replica's, a unary
  heartbeat's): such a one is dropped and counted (``stale``). Fresh reports are written as they come, whatever
  the row's ``last_seen`` (each process's own clock: one running ahead must not freeze its agents' state).
  At ``stop`` the last flush's held reports are lost: each agent reports at once on its next stream (a store failing
  then is logged, and the stop goes on); the reports its rows refused for another run are judged first, for at most
  ``STOP_JUDGE_S``, and those to be written after all are.
- **Push**: every ``poll_s`` the hub reads the control's change log (``changes_since``: which
  (tenant, agent) pairs got a new desired state, from this process or from another replica sharing
  the database) and sends each connected one its whole desired state. A report whose
  ``generation_seen`` is behind gets it at once too, as does a stream when it opens (gathered for
  ``push_batch_s``, 20 ms, so that a storm of new streams costs one control read per batch). Each push
  notes the control's generation before it reads, and never queues a state over one read later for the
  same stream (a fleet-wide push pauses between slices, while other pushes go on).
- One stream per agent: a second ``Connect`` of the same agent ends the first (a reconnect).

The hub keeps only connection state in memory; everything another replica needs is in the stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from cloud_trainer.fleet.commands import add_commands
from cloud_trainer.fleet.failures import RepeatedFailure

log = logging.getLogger(__name__)
# A fleet-wide change is pushed in slices: PUSH_SLICE streams, then a pause of PUSH_PAUSE_S (at most 2,000
# streams a second per process). Unpaced, 5,000 desired states queued at once held every stream's report
# acknowledgements behind their writes for 1.1-1.4 s (grpc drains ~5,000 writes a second here); paced, the
# reports keep most of the loop and a change still reaches 5,000 streams in ~2.5 s.
PUSH_SLICE = 100
PUSH_PAUSE_S = 0.05
FLUSH_FAILURE_LOG_S = 300.0  # a flush failing for the same reason is logged again at most this often
MAX_REPORT_ATTEMPTS = 3  # flushes a report that fails to be written (not refused as malformed) is tried in
STOP_JUDGE_S = 2.0  # how long ``stop`` waits for the judgments of reports the last flushes' rows refused
# how long each store call of ``stop`` waits for a pooled connection (PostgreSQL; the pool's 30 s else): with the
# database down the last flush (a batch, then two reports alone) waited 61 s, past a service manager's stop timeout
# (systemd's 90 s, with the rest of the stop). Its reports lost so are the agents' last state, which each agent
# sends again on its next stream; above ROW_LOCK_TIMEOUT_S (2 s), a write's lock wait
STOP_STORE_WAIT_S = 5.0


class StreamHub:
    def __init__(
        self,
        store,
        control,
        *,
        flush_s: float = 1.0,
        poll_s: float = 0.25,
        push_batch_s: float = 0.02,
        commands=None,
        max_pending: int = 200_000,
    ) -> None:
        self.store, self.control = store, control
        self.commands = commands  # pending agent commands ride in the desired state (fleet.commands)
        self.flush_s, self.poll_s, self.push_batch_s = flush_s, poll_s, push_batch_s
        self._to_push: set[tuple[str, str]] = set()  # streams owed their desired state (opened or behind)
        self._push_wanted = asyncio.Event()
        self.streams: dict[tuple[str, str], asyncio.Queue] = {}
        self.pending: dict[tuple[str, str], tuple] = {}
        self.max_pending = max_pending
        self._attempts: dict[tuple[str, str], int] = {}  # failed writes of a report put back into pending
        self.refused = 0  # reports the store refused as malformed, or that failed MAX_REPORT_ATTEMPTS times
        # reports put back for the next flush because another transaction held their agent's row
        self.held = 0
        # keys whose pending report is one held back so and written again: only over an older report of its agent
        self._again: set[tuple[str, str]] = set()
        # such reports not written at all: their agent's row had a newer report (another replica's, a unary one's)
        self.stale = 0
        # keys whose pending report is written only over a report of its own run, or of the run given (``report``'s
        # ``over``; "": none such); those the store refused at a flush: (key, the row's run, the report's args), given
        # to ``on_other_run`` after it (counted: ``other_run``)
        self._one_run: dict[tuple[str, str], str] = {}
        self._other_runs: list[tuple[tuple[str, str], str, tuple]] = []
        self.other_run = 0
        self.on_other_run: Callable[[list[tuple[tuple[str, str], str, tuple]]], Awaitable[None]] | None = None
        self._judging: set[asyncio.Task] = set()
        # a report's entry in ``pending`` and its marks (``_again``, ``_one_run``) change together: ``flush`` runs in a
        # worker thread and took the three in turn, so a report the loop put between them had its mark in the set of
        # the batch, not in the new one (a report of a known run written as it comes: over a newer run)
        self._marks = threading.Lock()
        # agents with a judgment of a refused report under way -> the newest report of theirs refused since (None:
        # none), judged when it ends: one judgment in flight an agent (one a flush piled up while the control
        # state was slow, each a read in a place of the tenant's heartbeats that its other agents wait for)
        self._judged_later: dict[tuple[str, str], tuple[tuple[str, str], str, tuple] | None] = {}
        self._held_said = float("-inf")  # when that was last logged
        self.sent: dict[tuple[str, str], int] = {}  # generation last pushed to each open stream
        # the control's generation when the state last queued to each open stream was read: a push whose read
        # is older (a fleet-wide push paused between its slices) never queues over a newer one
        self._read_at: dict[tuple[str, str], int] = {}
        self.reports = 0
        self.pushes = 0
        self.flushes = 0
        self.dropped = (
            0  # older messages a slow stream's full queue gave up (acks, superseded desired states)
        )
        self._tasks: list[asyncio.Task] = []
        self._generation = 0
        # a store that keeps failing (its disk full) is logged once, then every FLUSH_FAILURE_LOG_S: a flush a second
        self.flush_failures = RepeatedFailure(
            log, "fleet streams: writing state reports (they wait for the next flush)", FLUSH_FAILURE_LOG_S
        )
        # the poll of desired-state changes, every poll_s: it logged a traceback at each while the database was down
        self.poll_failures = RepeatedFailure(
            log, "fleet streams: pushing desired-state changes (retried at each poll)", FLUSH_FAILURE_LOG_S
        )

    async def start(self) -> None:
        if self.control is not None:
            self._generation = await asyncio.to_thread(self.control.generation)
        self._tasks = [asyncio.create_task(self._flusher(), name="fleet-stream-flush")]
        if self.control is not None:
            self._tasks.append(asyncio.create_task(self._poller(), name="fleet-stream-push"))
            self._tasks.append(asyncio.create_task(self._owed(), name="fleet-stream-first-push"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        with self.store.waiting_at_most(STOP_STORE_WAIT_S):
            await self._flush_at_stop()
        for q in list(self.streams.values()):
            offer(q, None)

    async def _flush_at_stop(self) -> None:
        flushed = await self._last_flush()
        # the last flush's refusals, and those under judgment, judged for at most STOP_JUDGE_S (they were cancelled
        # unjudged: a report its row refused for an older run, to be written after all, was lost), then written; not
        # when that flush failed (the store down: another flush waited as long again, a PostgreSQL pool's timeout
        # twice, 61 -> 123 s)
        if self._other_runs and self.on_other_run is not None:
            other, self._other_runs = self._other_runs, []
            self._judge_aside(other)
        if self._judging:
            _done, left = await asyncio.wait(set(self._judging), timeout=STOP_JUDGE_S)
            for t in left:
                t.cancel()
            for t in left:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if left:
                log.warning(
                    "fleet streams: %d agents' state reports their rows refused not judged within %g s at stop (their "
                    "agents report again on their next stream)",
                    len(left),
                    STOP_JUDGE_S,
                )
            if flushed:
                await self._last_flush()

    async def _last_flush(self) -> bool:
        """A flush at stop; whether it did not fail."""
        try:
            await asyncio.to_thread(self.flush, True)
        except Exception as exc:  # the store failing at the end: said, and the stop goes on
            log.warning(
                "fleet streams: the last flush at stop failed (%s: %s); %d state reports not written (their agents "
                "report again on their next stream)",
                type(exc).__name__,
                str(exc)[:200],
                len(self.pending),
            )
            return False
        return True

    # ---- the stream ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def attach(self, key: tuple[str, str]):
        """The queue of messages for the agent's stream; an older stream of the same agent is ended."""
        old = self.streams.get(key)
        if old is not None:
            offer(old, None)
        q: asyncio.Queue = asyncio.Queue(maxsize=8)
        self.streams[key] = q
        self.sent.pop(key, None)
        self._read_at.pop(key, None)
        try:
            yield q
        finally:
            if self.streams.get(key) is q:
                del self.streams[key]
                self.sent.pop(key, None)
                self._read_at.pop(key, None)

    async def report(
        self,
        key: tuple[str, str],
        args: tuple,
        generation_seen: int,
        report_id: int = 0,
        *,
        stale: bool = False,
        over: str | None = None,
    ) -> None:
        """A state report: kept for the next flush; the desired state goes out now if the agent has not got it
        yet on this stream or reports an older generation than the one last sent. ``report_id``: acknowledged
        (``ack``; the Connect stream acknowledges a report as it takes it, before its store calls, and passes none).
        ``stale``: numbered by its agent before a report already taken (``FleetServicer._fresh``): acknowledged
        and answered alike, never written. ``over``: written only over a report of its run, none, or of run ``over``
        (``""``: none such; None: as it comes): a row another replica wrote with another run, or with a later report
        of this one, is given to ``on_other_run`` after the flush (``FleetServicer._other_runs``), instead of read
        before each report (``FleetServicer._fresh`` says which)."""
        if not stale:
            with self._marks:
                if over == "" and key in self.pending:
                    # a later report of the run pending (``over`` "": the run its process took last) keeps that
                    # one's condition: its run's first here may be written over the run its row held then
                    over = self._one_run.get(key)
                self.pending[key] = args
                self._again.discard(key)
                if over is None:
                    self._one_run.pop(key, None)
                else:
                    self._one_run[key] = over
        self.reports += 1
        self.ack(key, report_id)
        sent = self.sent.get(key)
        if (sent is None or generation_seen < sent) and self.control is not None:
            self._to_push.add(key)
            self._push_wanted.set()

    def put_over(self, key: tuple[str, str], args: tuple, over: str) -> None:
        """A report ``on_other_run`` found to be written over its agent's row after all (the row's run ``over`` began
        before its own): written at the next flush over that run (another replica writing yet another run meanwhile:
        refused and judged again), a newer report of the agent pending meanwhile wins (over that run too, if of the
        same run). Past ``max_pending`` agents pending, dropped and counted (``refused``), as ``_hold`` does."""
        with self._marks:
            if key in self.pending:
                if self._one_run.get(key) == "":
                    self._one_run[key] = over
                return
            if len(self.pending) >= self.max_pending:
                self.refused += 1
                return
            self.pending[key] = args
            self._one_run[key] = over

    def ack(self, key: tuple[str, str], report_id: int) -> None:
        """Acknowledge the agent's report ``report_id`` (0: none asked) on its stream: the report was received."""
        if report_id and (q := self.streams.get(key)) is not None:
            from protocols.gen import fleet_pb2 as pb

            self.dropped += offer(q, pb.ServerMessage(acked=report_id))

    async def push(self, keys: list[tuple[str, str]]) -> None:
        keys = [k for k in keys if k in self.streams]
        if not keys or self.control is None:
            return
        from protocols.gen import fleet_pb2 as pb

        t0 = time.perf_counter()
        read_at, desired = await asyncio.to_thread(self._read_desired, keys)
        commands = (
            await asyncio.to_thread(self.commands.pending_many, keys) if self.commands is not None else {}
        )
        t1 = time.perf_counter()
        for n, (k, (gen, slots, config)) in enumerate(desired.items(), 1):
            q = self.streams.get(k)
            if q is None:
                continue
            if self._read_at.get(k, -1) > read_at:
                # another push (a reconnect, a report behind) sent this stream a state read later, during this
                # push's pauses: this older one would take the agent back (to a version rolled back since)
                continue
            self._read_at[k] = read_at
            reply = desired_reply(gen, slots, config)
            add_commands(reply, commands.get(k))
            self.sent[k] = gen
            self.dropped += offer(q, pb.ServerMessage(desired=reply))
            self.pushes += 1
            if n % PUSH_SLICE == 0 and n < len(desired):
                # let this slice's writers write, and the reports that came meanwhile be acknowledged
                await asyncio.sleep(PUSH_PAUSE_S)
        if len(keys) >= PUSH_SLICE:
            log.info(
                "desired state pushed to %d streams (read in %.2f s, queued in %.2f s)",
                len(keys),
                t1 - t0,
                time.perf_counter() - t1,
            )

    def _read_desired(self, keys: list[tuple[str, str]]) -> tuple[int, dict]:
        """(the control's generation, read first, the keys' desired states, read after it: at least as new)."""
        read_at = self.control.generation()
        return read_at, self.control.desired_many(keys)

    # ---- background --------------------------------------------------------------------------
    def flush(self, stopping: bool = False) -> int:
        """Write the pending reports; returns how many were written. ``stopping`` (the last flush at stop): written
        one at a time after the batch failed, the first failure ends it (``_flush_one_by_one``)."""
        if not self.pending:
            return 0
        with self._marks:
            batch, self.pending = self.pending, {}
            again, self._again = self._again, set()
            one_run, self._one_run = self._one_run, {}
        try:
            held = self.store.heartbeat_many(
                [
                    (tenant, agent, *args, (tenant, agent) in again, one_run.get((tenant, agent)))
                    for (tenant, agent), args in batch.items()
                ]
            )
        except Exception as exc:
            (log.debug if self.flush_failures.why is not None else log.warning)(  # said once per failure
                "fleet streams: writing %d state reports in one transaction failed (%s: %s); writing them "
                "one at a time",
                len(batch),
                type(exc).__name__,
                str(exc)[:200],
            )
            return self._flush_one_by_one(list(batch.items()), again, one_run, stopping)
        self.flushes += 1
        if self._attempts:
            for key in batch:
                self._attempts.pop(key, None)
        self._hold(held or [], batch, one_run)
        self.stale += len(stale := getattr(held, "stale", ()))
        other = getattr(held, "other", ())
        self._other_runs += [((t, a), boot, batch[t, a]) for t, a, boot in other]
        self.other_run += len(other)
        return len(batch) - len(held or []) - len(stale) - len(other)

    def _hold(self, held: list[tuple[str, str]], batch: dict, one_run: dict | None = None) -> None:
        """Reports the store did not write because another transaction holds their agent's row (PostgreSQL) wait
        in ``pending`` for the next flush (a newer report of the agent replaces them), said at most every
        ``FLUSH_FAILURE_LOG_S``: they are not failures of the store, and may wait as long as the lock is held."""
        if not held:
            return
        for key in held:
            if len(self.pending) < self.max_pending:
                # a newer report of the agent that came meanwhile wins, and is written as it comes
                with self._marks:
                    if self.pending.setdefault(key, batch[key]) is batch[key]:
                        self._again.add(key)
                        if one_run and key in one_run:  # (still only over its own run)
                            self._one_run[key] = one_run[key]
            # dropped (the agent reports again within its report_s) and counted, as _put_back does
            elif key not in self.pending:
                self.refused += 1
        self.held += len(held)
        now = time.monotonic()
        if now - self._held_said >= FLUSH_FAILURE_LOG_S:
            self._held_said = now
            log.warning(
                "fleet streams: %d state report(s) wait for the next flush, their agents' rows held by another "
                "transaction (e.g. agent %s of tenant %s; pg_stat_activity shows it 'idle in transaction'); "
                "said at most every %g s",
                len(held),
                held[0][1][:64],
                held[0][0],
                FLUSH_FAILURE_LOG_S,
            )

    def _flush_one_by_one(self, items: list, again: set, one_run: dict, stopping: bool = False) -> int:
        """The reports written one at a time; a report the store refuses (``ValueError``) dropped, one that failed
        put back for the next flush. Two failures with nothing written (the store down), or at stop any failure,
        put back the rest and raise: a database lost in the middle of the stop's flush had each report left wait
        for a connection (STOP_STORE_WAIT_S, 5 s: 20 agents pending, past a service manager's stop timeout)."""
        written = failed = 0
        for i, (key, args) in enumerate(items):
            try:
                held = self.store.heartbeat_many([(*key, *args, key in again, one_run.get(key))])
                if held:  # its row held elsewhere: the next flush (still only over its own run: ``one_run``)
                    self._hold([key], {key: args}, one_run)
                    continue
                if getattr(held, "stale", None):  # older than its agent's row: dropped, counted
                    self.stale += 1
                    self._attempts.pop(key, None)
                    continue
                if other := getattr(held, "other", None):  # its row holds another run: ``on_other_run``
                    self._other_runs.append((key, other[0][2], args))
                    self.other_run += 1
                    self._attempts.pop(key, None)
                    continue
            except ValueError as exc:  # this report can never be written: dropped, counted
                self.refused += 1
                self._attempts.pop(key, None)
                log.warning(
                    "fleet streams: state report of agent %s (tenant %s) refused by the store: %s; dropped",
                    key[1][:64],
                    key[0],
                    str(exc)[:200],
                )
                continue
            except Exception:
                failed += 1
                if stopping or (not written and failed > 1):  # the store fails: all wait
                    self._put_back(items[i:], failed=key, again=again, one_run=one_run)
                    raise
                self._put_back([(key, args)], failed=key, again=again, one_run=one_run)
                continue
            written += 1
            self._attempts.pop(key, None)
        self.flushes += 1
        return written

    def _put_back(
        self, items: list, failed: tuple[str, str], again: set, one_run: dict | None = None
    ) -> None:
        """Reports not written go back to ``pending`` for the next flush, unless a newer report of the same agent
        is there already; the one whose write failed is tried at most ``MAX_REPORT_ATTEMPTS`` times."""
        for key, args in items:
            if key == failed:
                n = self._attempts.get(key, 0) + 1
                if n >= MAX_REPORT_ATTEMPTS:
                    self._attempts.pop(key, None)
                    self.refused += 1
                    # while the store keeps failing (said once by flush_failures) one line per agent was a flood
                    (log.debug if self.flush_failures.why is not None else log.warning)(
                        "fleet streams: state report of agent %s (tenant %s) failed to be written %d times; "
                        "dropped (the agent reports again within its report_s)",
                        key[1][:64],
                        key[0],
                        n,
                    )
                    continue
                self._attempts[key] = n
            if len(self.pending) < self.max_pending:
                # atomic: a report that came meanwhile wins; a held-back one stays checked against newer ones
                with self._marks:
                    if self.pending.setdefault(key, args) is args:
                        if key in again:
                            self._again.add(key)
                        if one_run and key in one_run:  # (still only over its own run)
                            self._one_run[key] = one_run[key]
            else:
                self._attempts.pop(key, None)
                self.refused += 1

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await asyncio.to_thread(self.flush)
            except Exception as exc:  # the reports wait in ``pending`` for the next flush
                self.flush_failures.failed(exc)
            else:
                self.flush_failures.succeeded()
            if self._other_runs:
                other, self._other_runs = self._other_runs, []
                if self.on_other_run is not None:
                    self._judge_aside(other)

    def _judge_aside(self, other: list) -> None:
        """Judge each agent's report of ``other`` in a task of its own (it waits for its tenant's places, never the
        flushes, nor another agent's judgment: one task for the flush's refusals held an agent of another tenant
        behind a read waiting for the first one's places, its later refusals stashed behind it), but for the agents
        under judgment already: their newest refused report waits for that judgment's end (``_judged_later``)."""
        for item in other:
            if item[0] in self._judged_later:
                self._judged_later[item[0]] = item
            else:
                self._judged_later[item[0]] = None
                task = asyncio.create_task(self._judge(item))
                self._judging.add(task)
                task.add_done_callback(self._judging.discard)

    async def _judge(self, item: tuple[tuple[str, str], str, tuple] | None) -> None:
        """Judge the agent's refused report ``item``, then the newest of its refused meanwhile, till none is left."""
        while item is not None:
            try:
                if self.on_other_run is not None:
                    await self.on_other_run([item])
            except Exception:  # (its own failures are its to say: never the flusher's end)
                log.exception(
                    "fleet streams: judging a report its agent's row refused (agent %s)", item[0][1][:64]
                )
            finally:
                key, item = item[0], self._judged_later.pop(item[0], None)
            if item is not None:
                self._judged_later[key] = None

    async def _owed(self) -> None:
        """Streams owed their desired state (just opened, or reporting an older generation) get it in batches:
        one read of the control state per ``push_batch_s`` for all of them, instead of one thread hop and one
        lock turn per stream, which is what a connection storm (thousands of agents reconnecting after a
        restart) would cost otherwise."""
        while True:
            await self._push_wanted.wait()
            await asyncio.sleep(self.push_batch_s)
            self._push_wanted.clear()
            keys, self._to_push = list(self._to_push), set()
            try:
                await self.push(keys)
            except Exception:
                log.exception(
                    "fleet streams: sending the desired state to %d new streams failed; they get it "
                    "at their next report",
                    len(keys),
                )

    async def _poller(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                self._generation, changed = await asyncio.to_thread(
                    self.control.changes_since, self._generation
                )
                if changed:
                    await self.push(changed)
            except Exception as exc:  # the control database down: every poll (4 a second) fails alike
                self.poll_failures.failed(exc)
            else:
                self.poll_failures.succeeded()

    def snapshot(self) -> dict:
        return {
            "streams": len(self.streams),
            "reports": self.reports,
            "pushes": self.pushes,
            "flushes": self.flushes,
            "pending": len(self.pending),
            "dropped": self.dropped,
            "refused": self.refused,
            "held": self.held,
            "stale": self.stale,
            "other_run": self.other_run,
        }


def desired_reply(gen: int, slots: list[dict], config: dict | None):
    """An agent's whole desired state as a ``HeartbeatReply``: model slots, and its agent configuration if the
    fleet gives it one (``Control.desired_state``)."""
    from protocols.gen import fleet_pb2 as pb

    reply = pb.HeartbeatReply(
        generation=gen, server_time=time.time(), desired=[pb.DesiredSlot(**d) for d in slots]
    )
    if config is not None:
        reply.config.CopyFrom(pb.DesiredConfig(**config))
    return reply


def offer(q: asyncio.Queue, item) -> int:
    """Put without waiting: a slow stream keeps only the newest messages (each desired state is whole).
    Returns how many older messages were dropped to make room."""
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except asyncio.QueueFull:
            with contextlib.suppress(asyncio.QueueEmpty):
                q.get_nowait()
                dropped += 1
