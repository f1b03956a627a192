"""The threads the fleet store's writes of the agents' batches run in, shared by every tenant.

A write runs in a thread of its own until it ends; a tenant stalled in the store (a lock of its rows held, its blob
prefix on a slow disk or bucket) holds its threads all that time. ``size`` writes of any tenants run at once; past
that, a write of a tenant with none running still gets a thread, started for it, up to ``most`` writes at once: so a
stalled tenant's writes (at most ``INGESTS_PER_TENANT`` each) leave the others a thread until ``most - size`` tenants
are stalled. Any other write waits in order (FIFO) for a thread, holding none, and is started when a write ends that
leaves room for it; a write cancelled while it waits (``Future.cancel``: its call ended) leaves the queue at once and
never runs. A thread with no write it may start is retired, so the threads number those of the writes running.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

_Write = tuple[str, concurrent.futures.Future, Callable[[], Any]]  # (tenant, its future, the write)


class StoreWriters:
    def __init__(self, size: int, most: int, name: str = "fleet-store-write") -> None:
        if not 1 <= size <= most:
            raise ValueError(f"store writers: size {size} and most {most}: 1 <= size <= most")
        self.size, self.most, self.name = size, most, name
        self._lock = threading.Lock()
        self._queue: collections.deque[_Write] = collections.deque()
        self._running: dict[str, int] = {}  # tenant -> its writes running (a tenant with none is not a key)
        self._busy = 0  # writes running, each in a thread of its own
        self._closed = False
        self._names = itertools.count(1)  # the threads' names

    def submit(self, tenant: str, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """``fn()`` in a thread, as soon as the rules above give it one; its future."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        write = (tenant, fut, fn)
        with self._lock:
            if self._closed:
                raise RuntimeError("the fleet store's writers are shut down")
            self._queue.append(write)
            starts = self._take()
        fut.add_done_callback(partial(self._forget, write))
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
        """No new write; those waiting are cancelled (never run); those running end in their threads."""
        with self._lock:
            self._closed = True
            waiting, self._queue = list(self._queue), collections.deque()
        for _, fut, _fn in waiting:
            fut.cancel()

    def _forget(self, write: _Write, fut: concurrent.futures.Future) -> None:
        """A write cancelled while it waits leaves the queue (its batch is not kept until a thread frees)."""
        if not fut.cancelled():
            return
        with self._lock:
            try:
                self._queue.remove(write)
            except ValueError:
                pass

    def _take(self) -> list[_Write]:
        """The waiting writes that may start now, counted as running (under the lock), in order."""
        out: list[_Write] = []
        if self._busy >= self.most or not self._queue:
            return out
        kept: collections.deque[_Write] = collections.deque()
        while self._queue:
            write = self._queue.popleft()
            tenant, fut, _ = write
            if self._busy >= self.most or not (self._busy < self.size or not self._running.get(tenant)):
                kept.append(write)
            elif (
                fut.set_running_or_notify_cancel()
            ):  # False: cancelled meanwhile (its callback finds it gone)
                self._busy += 1
                self._running[tenant] = self._running.get(tenant, 0) + 1
                out.append(write)
        self._queue = kept
        return out

    def _ended(self, tenant: str) -> list[_Write]:
        """A write of ``tenant`` ended: the waiting writes that may start now."""
        with self._lock:
            self._busy -= 1
            if (left := self._running[tenant] - 1) > 0:
                self._running[tenant] = left
            else:
                del self._running[tenant]
            return [] if self._closed else self._take()

    def _start(self, write: _Write) -> None:
        name = f"{self.name}-{next(self._names)}"
        try:
            threading.Thread(target=self._run, args=(write,), name=name, daemon=True).start()
        except RuntimeError as exc:  # no thread to be had (the process's limit): the write fails, counted out
            write[1].set_exception(exc)
            for other in self._ended(write[0]):
                self._start(other)

    def _run(self, write: _Write) -> None:
        while True:
            tenant, fut, fn = write
            try:
                fut.set_result(fn())
            except BaseException as exc:  # the caller's to judge (as a ThreadPoolExecutor's future holds it)
                fut.set_exception(exc)
            del write, fut, fn  # the batch's records are not kept while the thread waits for nothing
            starts = self._ended(tenant)
            if not starts:
                return  # retired: no write it may start
            write = starts[0]
            for other in starts[1:]:  # the write that ended left room for a tenant with none running, too
                self._start(other)
