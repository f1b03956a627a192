"""The tests' own wait (``tests.support.waits.until``): a condition that returns an Event, not whether it is
set, is refused at once. An Event object is always true, so such a wait returned at once, set or not: the
MQTT agent test that waited so for its source's SUBACK published its first window before the subscription
took, and waited 60 s for a result that never came (test_baseline_process_states, under CI's load)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.support.waits import until


@pytest.mark.parametrize("event", [asyncio.Event, threading.Event])
async def test_a_condition_returning_an_event_instead_of_whether_it_is_set_is_refused(event):
    never_set = event()
    with pytest.raises(TypeError, match=r"until\('the SUBACK'\): .*an Event.*is_set"):
        await until(lambda: never_set, timeout_s=1, what="the SUBACK")


async def test_a_condition_is_awaited_until_it_holds():
    ev = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, ev.set)
    await until(lambda: ev.is_set(), timeout_s=30, what="the event")
    assert ev.is_set()
