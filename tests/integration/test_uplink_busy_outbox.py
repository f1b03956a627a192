"""The uplink against an outbox whose thread is busy (a large sample on a slow disk, an append waiting for room), with
a real fleet service: the commit the uplink asks for before a read (after an alarm, or a fill that ended full) waits
at most ``URGENT_FLUSH_S``, and past it the read goes without. Before, that wait's TimeoutError ended the uplink's
push loop when no stream was open: no record went up again until the agent restarted, and nothing said so."""

from __future__ import annotations

import time

import pytest

from tests.integration.test_uplink_batching import _peers
from tests.support.fleet import make_pki
from tests.support.waits import until


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=("gw1",))


async def test_an_alarm_taken_while_the_outbox_thread_stays_busy_does_not_stop_the_uplink(
    tmp_path, pki, monkeypatch
) -> None:
    monkeypatch.setattr("edge_agent.uplink.client.URGENT_FLUSH_S", 0.2)  # the bound, shortened for the test
    async with _peers(tmp_path, pki, max_delay_ms=500) as (ob, up, _, alarm_stored):
        await until(lambda: up.state == "idle", what="the uplink waiting for records (no stream open)")
        alarm = ob.append_soon("alarm", {"what": "overtemp"})
        ob._executor.submit(time.sleep, 0.6)  # the outbox's thread busy right after taking the alarm
        up.poke(urgent=alarm)
        await until(alarm_stored, timeout_s=30, what="the alarm stored in the cloud")
        await ob.append_async("result", {"i": 0})
        up.poke()
        await until(lambda: ob.stats()["acked"] == 2, timeout_s=30, what="a record recorded afterwards acked")
        assert not up._tasks[0].done()
