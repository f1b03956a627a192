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
