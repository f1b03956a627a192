"""The threads the fleet store's writes of the agents' batches run in, shared by every tenant.

A write runs in a thread until it ends; a tenant stalled in the store (a lock of its rows held, its blob prefix on a
slow disk or bucket) holds its threads all that time. ``size`` writes of any tenants run at once; past that, a write
of a tenant with none running still gets a thread, up to ``most`` writes at once: so a stalled tenant's writes (at
most ``INGESTS_PER_TENANT`` each) leave the others a thread until ``most - size`` tenants are stalled. Any other write
waits in order (FIFO) for a thread, holding none, and is started when a write ends that leaves room for it; a write
cancelled while it waits (``Future.cancel``: its call ended) leaves the queue at once and never runs.

A thread whose write ended takes the next one it may start; with none, it waits ``IDLE_S`` for one if fewer than
``size`` threads wait so (a thread started per write cost the caller, the service's loop, ~100 us against ~25 us),
and is retired otherwise: the threads past ``size`` end with the stall that made them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

_Write = tuple[str, concurrent.futures.Future, Callable[[], Any]]  # (tenant, its future, the write)
IDLE_S = 60.0  # how long a thread with no write waits for one before it is retired


class StoreWriters:
    def __init__(self, size: int, most: int, name: str = "fleet-store-write") -> None:
        if not 1 <= size <= most:
            raise ValueError(f"store writers: size {size} and most {most}: 1 <= size <= most")
        self.size, self.most, self.name = size, most, name
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # an idle thread waits here for a write handed to it
        self._queue: collections.deque[_Write] = collections.deque()
        # writes given to idle threads, not taken yet
        self._handed: collections.deque[_Write] = collections.deque()
        self._waiting: dict[str, int] = {}  # tenant -> its writes in the queue
        # tenants with writes in the queue and none running (in the order they became so): past ``size``, only
        # theirs may start, so a write that ends looks through the queue only when there are some
        self._startable: dict[str, None] = {}
        self._idle = 0  # threads waiting for a write, less those a write was handed to
        self._running: dict[str, int] = {}  # tenant -> its writes running (a tenant with none is not a key)
        self._busy = 0  # writes running (or handed to a thread)
        self._closed = False
        self._names = itertools.count(1)  # the threads' names

    def submit(self, tenant: str, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """``fn()`` in a thread, as soon as the rules above give it one; its future."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        write = (tenant, fut, fn)
        with self._lock:
            if self._closed:
                raise RuntimeError("the fleet store's writers are shut down")
            # only this write is new: those waiting wait for a write to end (none may start while one waits, as
            # _take starts every one it may), so it alone is judged, not the whole queue again
            starts: list[_Write] = []
            if self._may_start(tenant):
                fut.set_running_or_notify_cancel()
                self._count_in(tenant)
                starts = self._hand([write])
            else:
                self._queue.append(write)
                self._waiting[tenant] = self._waiting.get(tenant, 0) + 1
                if not self._running.get(tenant):
                    self._startable[tenant] = None
        # not a partial of write: the future would hold itself (fut -> callback -> write -> fut)
        fut.add_done_callback(self._forget)
        for w in starts:
            self._start(w)
        return fut

    def queued(self) -> int:
        """Writes waiting for a thread."""
        with self._lock:
            return len(self._queue)

    def running(self) -> dict[str, int]:
        """tenant -> its writes running now."""
        with self._lock:
            return dict(self._running)

    def shutdown(self) -> None:
        """No new write; those waiting are cancelled (never run); those running end in their threads, and the
        idle threads now."""
        with self._lock:
            self._closed = True
            waiting, self._queue = list(self._queue), collections.deque()
            self._waiting.clear()
            self._startable.clear()
            self._wake.notify_all()
        for _, fut, _fn in waiting:
            fut.cancel()

    def _forget(self, fut: concurrent.futures.Future) -> None:
        """A write cancelled while it waits leaves the queue (its batch is not kept until a thread frees). Found by
        its future: a callback holding the write would make the future hold itself (fut -> callback -> write ->
        fut), so every batch stayed alive until a cycle collection, which `serve`'s quiet_gc all but turns off."""
        if not fut.cancelled():
            return
        with self._lock:
            at = next((i for i, w in enumerate(self._queue) if w[1] is fut), None)
            if at is None:
                return
            tenant = self._queue[at][0]
            del self._queue[at]
            self._unqueued(tenant)
        fut.set_running_or_notify_cancel()  # (False) cancelled and notified: concurrent.futures.wait sees it done

    def _unqueued(self, tenant: str) -> None:
        if (n := self._waiting[tenant] - 1) > 0:
            self._waiting[tenant] = n
        else:
            del self._waiting[tenant]
            self._startable.pop(tenant, None)

    def _take(self) -> list[_Write]:
        """The waiting writes that may start now, counted as running (under the lock), in order."""
        out: list[_Write] = []
        while self._queue and self._busy < self.most and (self._busy < self.size or self._startable):
            if self._busy < self.size:  # any tenant's: the oldest
                write = self._queue.popleft()
            else:  # the oldest of a tenant with none running
                at = next((i for i, w in enumerate(self._queue) if w[0] in self._startable), None)
                if at is None:  # (cannot be: each startable tenant has a write in the queue)
                    self._startable.clear()
                    break
                write = self._queue[at]
                del self._queue[at]
            self._unqueued(write[0])
            if write[
                1
            ].set_running_or_notify_cancel():  # False: cancelled meanwhile (its callback finds it gone)
                self._count_in(write[0])
                out.append(write)
        return out

    def _may_start(self, tenant: str) -> bool:
        return self._busy < self.size or (self._busy < self.most and not self._running.get(tenant))

    def _count_in(self, tenant: str) -> None:
        self._busy += 1
        self._running[tenant] = self._running.get(tenant, 0) + 1
        self._startable.pop(tenant, None)

    def _hand(self, writes: list[_Write]) -> list[_Write]:
        """Give writes to idle threads (under the lock); those left need a thread started for them."""
        while writes and self._idle:
            self._idle -= 1
            self._handed.append(writes.pop(0))
            self._wake.notify()
        return writes

    def _ended(self, tenant: str) -> list[_Write]:
        """A write of ``tenant`` ended (under the lock): the waiting writes that may start now."""
        self._busy -= 1
        if (left := self._running[tenant] - 1) > 0:
            self._running[tenant] = left
        else:
            del self._running[tenant]
            if tenant in self._waiting:
                self._startable[tenant] = None
        return [] if self._closed else self._take()

    def _start(self, write: _Write) -> None:
        name = f"{self.name}-{next(self._names)}"
        try:
            # in a box _run empties: a Thread keeps its args as long as it lives (its first batch, for good)
            threading.Thread(target=self._run, args=([write],), name=name, daemon=True).start()
        except BaseException as exc:  # no thread to be had (its limit, memory): the write fails, counted out
            # without its traceback: that holds this frame's write (its future, its batch) in a cycle, freed
            # only by a full collection, which serve's quiet_gc seldom runs
            write[1].set_exception(exc.with_traceback(None))
            with self._lock:
                starts = self._hand(self._ended(write[0]))
            for other in starts:
                self._start(other)

    def _next(self, tenant: str) -> _Write | None:
        """After a write of ``tenant`` ended: the write this thread runs next, or None (retired)."""
        with self._lock:
            starts = self._ended(tenant)
            if starts:
                write, others = starts[0], self._hand(starts[1:])
            elif self._idle >= self.size or self._closed:
                return None
            else:
                self._idle += 1
                deadline = time.monotonic() + IDLE_S
                while not self._handed and not self._closed and (left := deadline - time.monotonic()) > 0:
                    self._wake.wait(left)
                if not self._handed:  # the giver counted one idle thread less for each write handed
                    self._idle -= 1
                    return None
                return self._handed.popleft()
        for other in others:  # the write that ended left room for a tenant with none running, too
            self._start(other)
        return write

    def _run(self, box: list[_Write]) -> None:
        write: _Write | None = box.pop()
        while write is not None:
            tenant, fut, fn = write
            try:
                fut.set_result(fn())
            except BaseException as exc:  # the caller's to judge (as a ThreadPoolExecutor's future holds it)
                fut.set_exception(exc)
            del write, fut, fn  # the batch's records are not kept while the thread waits for the next
            write = self._next(tenant)
