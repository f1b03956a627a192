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
