"""The fleet store's writer threads (``cloud_trainer.fleet.writers.StoreWriters``): ``size`` writes of any tenants,
past them one of each tenant with none running up to ``most``, the rest waiting in order holding no thread; a write
cancelled while it waits never runs and leaves the queue; threads past ``size`` are retired when their writes end."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cloud_trainer.fleet.writers import StoreWriters
from tests.support.waits import until


def _held(release: threading.Event, started: list[str], name: str):
    def write() -> str:
        started.append(name)
        release.wait(30)
        return name

    return write


async def test_a_tenant_with_no_write_running_gets_a_thread_past_the_shared_ones_up_to_the_most():
    pool = StoreWriters(size=2, most=3, name="test-store-write-cap")
    release, started = threading.Event(), []
    try:
        a1 = pool.submit("a", _held(release, started, "a1"))
        a2 = pool.submit("a", _held(release, started, "a2"))
        a3 = pool.submit(
            "a", _held(release, started, "a3")
        )  # a has 2 running and the 2 shared threads are taken
        b1 = pool.submit("b", _held(release, started, "b1"))  # b has none: a thread of its own (3 = most)
        c1 = pool.submit("c", _held(release, started, "c1"))  # c has none, but most are running: waits
        await until(lambda: sorted(started) == ["a1", "a2", "b1"], what="a1, a2 and b1 running")
        assert pool.running() == {"a": 2, "b": 1} and pool.queued() == 2
        assert not (a3.running() or c1.running())
        assert a3.cancel() and pool.queued() == 1  # cancelled while waiting: out of the queue, never run
    finally:
        release.set()
    assert [await asyncio.wrap_future(f) for f in (a1, a2, b1, c1)] == ["a1", "a2", "b1", "c1"]
    assert "a3" not in started and pool.queued() == 0
    await until(
        lambda: pool.running() == {}, what="no write counted as running"
    )  # counted out after its result

    def threads() -> int:
        return sum(t.name.startswith("test-store-write-cap-") for t in threading.enumerate())

    await until(
        lambda: threads() <= 2, what="the thread past the 2 retired"
    )  # the 2 wait for the next writes
    assert await asyncio.wrap_future(pool.submit("d", lambda: "d1")) == "d1"  # an idle thread's
    pool.shutdown()
    await until(lambda: threads() == 0, what="the idle threads retired at shutdown")


async def test_a_write_that_fails_hands_its_exception_to_its_future_and_its_thread_to_the_next():
    pool = StoreWriters(size=1, most=1, name="test-store-write-fail")

    def fails() -> None:
        raise OSError("disk full")

    bad = pool.submit("a", fails)
    good = pool.submit("b", lambda: 42)
    with pytest.raises(OSError, match="disk full"):
        await asyncio.wrap_future(bad)
    assert await asyncio.wrap_future(good) == 42
    pool.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit("a", lambda: 1)


class _Records:  # stands for a batch's records (the service's writes hold them through their fn)
    pass


def _write_of(records: _Records):
    return lambda: records is not None


async def _no_batch_alive(batch, what: str) -> None:
    """The batch is freed by reference counting alone: gc is off (as `serve`'s quiet_gc all but turns it off)."""
    await until(lambda: batch() is None, timeout_s=30, what=what)


async def test_a_write_handed_to_an_idle_thread_keeps_no_batch_alive_once_it_ended_without_a_gc():
    import gc
    import weakref

    pool = StoreWriters(size=1, most=1, name="test-store-write-forget")
    gc.disable()
    try:
        assert pool.submit("a", lambda: 1).result(30) == 1  # the thread's first write
        records = _Records()
        batch = weakref.ref(records)
        fut = pool.submit("a", _write_of(records))  # the same thread's next one
        del records
        assert fut.result(30) is True
        del fut
        await _no_batch_alive(batch, "the write's batch freed (not held by its future's done callback)")
    finally:
        gc.enable()
        pool.shutdown()


async def test_a_writer_threads_first_write_keeps_no_batch_alive_while_the_thread_waits_for_the_next():
    import gc
    import weakref

    pool = StoreWriters(size=1, most=1, name="test-store-write-first")
    gc.disable()
    try:
        records = _Records()
        batch = weakref.ref(records)
        fut = pool.submit("a", _write_of(records))  # starts the thread, which then waits IDLE_S for the next
        del records
        assert fut.result(30) is True
        del fut
        await _no_batch_alive(batch, "the thread's first batch freed (not held by its Thread's args)")
    finally:
        gc.enable()
        pool.shutdown()


async def test_a_thread_that_cannot_be_started_for_any_reason_fails_the_write_and_counts_it_out(monkeypatch):
    import cloud_trainer.fleet.writers as writers

    class NoThread(threading.Thread):
        def start(self) -> None:
            raise MemoryError("no memory for a thread's stack")

    monkeypatch.setattr(writers.threading, "Thread", NoThread)
    pool = StoreWriters(size=1, most=1, name="test-store-write-nothread")
    fut = pool.submit("a", lambda: 1)  # the caller gets its future, failed
    with pytest.raises(MemoryError, match="no memory"):
        fut.result(30)
    assert pool.running() == {} and pool.queued() == 0
    monkeypatch.undo()
    assert await asyncio.wrap_future(pool.submit("b", lambda: 2)) == 2  # the pool still runs writes
    pool.shutdown()


async def test_a_write_whose_thread_cannot_start_keeps_no_batch_alive_once_its_caller_dropped_it(monkeypatch):
    import gc
    import weakref

    import cloud_trainer.fleet.writers as writers

    class NoThread(threading.Thread):
        def start(self) -> None:
            raise MemoryError("no memory for a thread's stack")

    monkeypatch.setattr(writers.threading, "Thread", NoThread)
    pool = StoreWriters(size=1, most=1, name="test-store-write-nothread-freed")
    gc.disable()  # as serve's quiet_gc: a cycle through the failure's traceback would hold the batch for long
    try:
        records = _Records()
        batch = weakref.ref(records)
        fut = pool.submit("a", _write_of(records))
        del records
        with pytest.raises(MemoryError):
            fut.result(30)
        del fut
        await _no_batch_alive(batch, "the batch of a write whose thread could not start freed")
    finally:
        gc.enable()
        monkeypatch.undo()
        pool.shutdown()
