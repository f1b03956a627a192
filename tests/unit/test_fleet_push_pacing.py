"""A fleet-wide desired-state change goes out to the streams in slices, and reports are acknowledged between
the slices instead of waiting behind thousands of queued pushes (cloud_trainer.fleet.stream)."""

from __future__ import annotations

import asyncio

from cloud_trainer.fleet import stream
from cloud_trainer.fleet.stream import PUSH_SLICE, StreamHub


class Desired:
    """The control's two methods a push reads: every agent gets the same model slot at generation 7."""

    def generation(self):
        return 7

    def desired_many(self, keys):
        slot = {
            "slot": "vision",
            "package": "cast-ok",
            "version": "2.0.0",
            "digest": "d" * 64,
            "size": 1,
            "deployment_id": "dep1",
            "rollback": False,
        }
        return {k: (7, [slot], None) for k in keys}


async def test_a_fleet_wide_push_goes_out_in_slices_with_report_acks_in_between(monkeypatch):
    monkeypatch.setattr(stream, "PUSH_PAUSE_S", 0.2)  # wide enough to look inside a pause on a busy machine
    hub = StreamHub(store=None, control=Desired())
    keys = [("plant", f"a{i:03d}") for i in range(2 * PUSH_SLICE + 50)]
    for k in keys:
        hub.streams[k] = asyncio.Queue(maxsize=8)
    push = asyncio.create_task(hub.push(keys))
    while hub.pushes < PUSH_SLICE:  # the first slice goes out at once
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.02)
    assert hub.pushes == PUSH_SLICE  # and the push pauses before the next one

    last = keys[-1]  # an agent the push has not reached yet reports: its acknowledgement is sent now
    await hub.report(last, ("args",), 7, report_id=41)
    assert hub.streams[last].get_nowait().acked == 41
    assert not push.done()

    await push
    assert hub.pushes == len(keys)  # every stream got its desired state, once
    for k in keys:
        q = hub.streams[k]
        assert q.qsize() == 1
        msg = q.get_nowait()
        assert msg.desired.generation == 7 and msg.desired.desired[0].version == "2.0.0"
        assert hub.sent[k] == 7


async def test_a_slow_streams_full_queue_keeps_the_newest_messages_and_counts_what_it_dropped():
    hub = StreamHub(store=None, control=Desired())
    key = ("plant", "slow")
    hub.streams[key] = q = asyncio.Queue(maxsize=8)
    for rid in range(1, 11):  # nobody reads this stream: 10 acknowledgements into a queue of 8
        await hub.report(key, ("args",), 7, report_id=rid)
    assert hub.dropped == 2 and hub.snapshot()["dropped"] == 2
    assert [q.get_nowait().acked for _ in range(8)] == list(range(3, 11))
