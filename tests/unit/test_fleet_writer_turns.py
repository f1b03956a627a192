"""SQLite's writer given in turns (cloud_trainer.fleet.store.WriterTurns): short writes go before a batch's range,
but a stream of them never keeps the range out for good."""

import threading
import time

from cloud_trainer.fleet.store import WriterTurns


def test_a_batchs_range_gets_the_writer_while_short_writes_never_stop():
    turns = WriterTurns()
    stop = threading.Event()
    shorts, ahead = [0], [0]

    def heartbeats() -> None:  # agents' heartbeats, an admin script's reads: a short write always waiting
        while not stop.is_set():
            with turns:
                shorts[0] += 1
                if turns._waiting[True]:  # a turn taken while the range waited (or as it came)
                    ahead[0] += 1
                time.sleep(0.001)

    threads = [threading.Thread(target=heartbeats, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        _wait_for(lambda: shorts[0] >= 3, "the heartbeats to run")  # a fixed sleep: none might have run yet
        got = []
        for _ in range(5):  # five ranges of one batch, each asking anew
            # counted while the range waits, not from a count read before acquire(): a loaded machine could keep
            # this thread from the GIL there while the heartbeats went on
            ahead[0] = 0
            assert turns.acquire(bulk=True, timeout=30.0), "a batch's range never got the writer"
            got.append(ahead[0])
            turns.release()
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    # short writes still went first, a few at a time, never without bound
    assert max(got) <= 3 * (WriterTurns.SHORT_AHEAD + 1)
    assert min(got) >= 1, got  # every range let a waiting short write go first


def test_a_waiting_short_write_still_goes_before_a_batchs_next_range():
    turns = WriterTurns()
    order = []
    turns.acquire(bulk=True)  # a range is being written
    bulk_waits = threading.Thread(
        target=lambda: (turns.acquire(bulk=True), order.append("range"), turns.release())
    )
    short_waits = threading.Thread(
        target=lambda: (turns.acquire(), order.append("heartbeat"), turns.release())
    )
    bulk_waits.start()
    _wait_for(lambda: turns._waiting[True], "the range to wait")  # a fixed sleep let a slow thread start late
    short_waits.start()
    _wait_for(lambda: turns._waiting[False], "the heartbeat to wait")
    turns.release()
    bulk_waits.join(30)
    short_waits.join(30)
    assert order == ["heartbeat", "range"]


def _wait_for(cond, what: str) -> None:
    deadline = time.monotonic() + 30
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def test_a_release_wakes_only_the_next_in_line_not_every_waiter(monkeypatch):
    # 100 tenants' batches each in a writer thread of its own (up to STORE_WRITERS_MOST) wait for SQLite's writer: a
    # release that woke them all had each take the GIL and the lock to find it was not its turn, for every turn
    turns, n, looks, order = WriterTurns(), 20, [0], []
    turn = turns._turn

    def counted(ticket, bulk):
        looks[0] += 1  # a waiter woken (or come) to see whether it is its turn
        return turn(ticket, bulk)

    monkeypatch.setattr(turns, "_turn", counted)
    turns.acquire(bulk=True)  # a range is being written

    def batch(i: int) -> None:
        turns.acquire(bulk=True)
        order.append(i)
        turns.release()

    threads = []
    for i in range(n):  # each waiting before the next comes: the order they go in is known
        threads.append(threading.Thread(target=batch, args=(i,), daemon=True))
        threads[-1].start()
        _wait_for(lambda k=i + 1: len(turns._waiting[True]) == k, f"batch {i} to wait")
    looks[0] = 0
    turns.release()
    for t in threads:
        t.join(30)
    assert order == list(range(n))  # in the order they came, as before
    assert looks[0] <= n + 2, looks[0]  # one wake each (a notify_all at each release woke all still waiting)
