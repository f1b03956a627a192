"""The MQTT source's hand-over queue (``_BatchChannel``) and its marks: the lost connection's mark is handed over
after every message that came before it, whatever lane (a flooding topic, a quiet one, a Sparkplug node) holds
them and however many batches they take, and before any that came after it."""

from __future__ import annotations

import asyncio

from devices.base import DeviceStats
from devices.mqtt.client import _LOST, TAKE_MAX, _BatchChannel


def _batches(channel: _BatchChannel) -> list[list[list]]:
    async def take() -> list[list[list]]:
        out = []
        while len(channel) or channel._marks:
            out.append(await channel.get_many())
        return out

    return asyncio.run(take())


def test_a_lost_connections_mark_comes_after_all_that_came_before_it_and_before_all_after() -> None:
    channel = _BatchChannel(10_000, DeviceStats())
    topics = ["flood/a"] * 300 + ["quiet/b"] * 2 + ["spBv1.0/g/NDATA/n1", "spBv1.0/g/DDATA/n1/pump"] * 150
    for i, topic in enumerate(topics):
        channel.put_threadsafe((topic, b"%d" % i, 0.0, False))
    channel.mark_threadsafe(_LOST)
    for i, topic in enumerate(topics):
        channel.put_threadsafe((topic, b"after %d" % i, 0.0, False))
    batches = _batches(channel)
    assert all(len(b) <= TAKE_MAX + 1 for b in batches)
    taken = [e for b in batches for e in b]
    marks = [i for i, e in enumerate(taken) if e[1] is _LOST]
    assert marks == [len(topics)]  # once, after every message before it
    assert not any(e[1].startswith(b"after") for e in taken[: marks[0]])
    assert next(b for b in batches if b[-1][1] is _LOST)  # a batch ends with it
    assert [e[0] for e in batches[0]].count("quiet/b") == 2  # fair among the lanes before it too
    # each topic's messages in order on both sides
    for topic in set(topics):
        mine = [e[1] for e in taken if e[0] == topic]
        assert mine == [b"%d" % i for i, t in enumerate(topics) if t == topic] + [
            b"after %d" % i for i, t in enumerate(topics) if t == topic
        ]


def test_a_mark_with_nothing_queued_is_handed_over_alone_and_take_all_counts_no_mark() -> None:
    channel = _BatchChannel(100, DeviceStats())
    channel.mark_threadsafe(_LOST)
    assert [[e[1] for e in b] for b in _batches(channel)] == [[_LOST]]
    channel.put_threadsafe(("t", b"1", 0.0, False))
    channel.mark_threadsafe(_LOST)
    assert [e[1] for e in channel.take_all()] == [b"1"]  # the stop: messages only


class _CountingLanes(dict):
    """The channel's lanes, counting each visit of a lane by ``_take`` (a lookup of its entries)."""

    visits = 0

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        _CountingLanes.visits += 1
        return super().__getitem__(key)


def test_a_waiting_mark_does_not_make_a_take_walk_the_lanes_after_it_round_after_round() -> None:
    # a busy topic's backlog before the drop's mark, then the reconnect's retained messages of 1,000 topics: each
    # take walks the one lane before the mark, not 256 rounds of all 1,001 lanes under the lock in the event loop
    channel = _BatchChannel(10_000, DeviceStats())
    for i in range(5_000):
        channel.put_threadsafe(("plant/line1/vibration", b"%d" % i, 0.0, False))
    channel.mark_threadsafe(_LOST)
    for i in range(1_000):
        channel.put_threadsafe((f"plant/line1/tag{i}", b"y", 0.0, True))
    channel._lanes = _CountingLanes(channel._lanes)
    _CountingLanes.visits = 0

    async def to_the_mark() -> list[list[list]]:
        out = [await channel.get_many()]
        while out[-1][-1][1] is not _LOST:
            out.append(await channel.get_many())
        return out

    batches = asyncio.run(to_the_mark())
    assert [e[1] for b in batches for e in b] == [b"%d" % i for i in range(5_000)] + [_LOST]
    assert _CountingLanes.visits <= 3 * len(batches)  # was ~256 x 1,001 a take
    assert len(channel) == 1_000  # those after the mark: all still there, then taken
    assert sorted(e[0] for b in _batches(channel) for e in b) == sorted(
        f"plant/line1/tag{i}" for i in range(1_000)
    )


def test_drops_with_nothing_between_them_queue_one_mark_not_one_each() -> None:
    # a broker dropping and reconnecting ~2/s while the consumer is stalled: one mark while nothing came since it
    channel = _BatchChannel(100, DeviceStats())
    channel.put_threadsafe(("t", b"1", 0.0, False))
    for _ in range(1_000):
        channel.mark_threadsafe(_LOST)
    assert len(channel._marks) == 1
    channel.put_threadsafe(("t", b"2", 0.0, False))
    channel.mark_threadsafe(_LOST)
    channel.mark_threadsafe(_LOST)
    assert [[e[1] for e in b] for b in _batches(channel)] == [[b"1", _LOST], [b"2", _LOST]]


def test_marks_stay_bounded_by_the_messages_queued_when_each_reconnect_brings_a_message() -> None:
    # a stalled consumer, a queue of 100, a broker flapping and each reconnect re-sending one retained message:
    # the full queue drops the oldest messages, the marks between them coalesce (was one mark per flap: 100,000
    # flaps, 100,000 marks, 14.4 MB)
    channel = _BatchChannel(100, DeviceStats())
    for i in range(5_000):
        channel.put_threadsafe(("site/state", b"%d" % i, 0.0, True))
        channel.mark_threadsafe(_LOST)
        assert len(channel._marks) <= channel._live + 1
    taken = [e[1] for b in _batches(channel) for e in b]
    assert [p for p in taken if p is not _LOST] == [b"%d" % i for i in range(4_900, 5_000)]
    assert taken[-2:] == [b"4999", _LOST]  # the last drop's mark after everything that came before it
    # each message queued is followed by its drop's mark, before the next message (the first: 4,899's, dropped)
    assert taken == [_LOST] + [x for i in range(4_900, 5_000) for x in (b"%d" % i, _LOST)]
