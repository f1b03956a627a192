"""An idle uplink looks at its outbox now and then for records appended without a poke (the outbox's own events):
at most every ``POLL_MIN_S``, whatever ``max_delay_ms``. Before, it looked every ``max_delay_ms``: at 1 ms an idle
gateway read its outbox ~300 times a second (a quarter of a core on a quiet line, measured against a real fleet
service), at 10 ms ~6 % of a core."""

from __future__ import annotations

import asyncio

from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import POLL_MIN_S, Uplink
from edge_agent.uplink.settings import CloudSettings


async def test_an_idle_uplink_at_a_small_max_delay_does_not_poll_its_outbox_every_millisecond(
    tmp_path,
) -> None:
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    try:
        s = CloudSettings(endpoint="127.0.0.1:1", ca_file="c", cert_file="c", key_file="k", max_delay_ms=1)
        up = Uplink(s, ob)  # never started: its gather alone, no link
        looks = [0]
        pending = ob.pending

        def counted(*a, **kw):
            looks[0] += 1
            return pending(*a, **kw)

        ob.pending = counted  # type: ignore[method-assign]
        assert not await up._gather(None, 0.5)  # nothing recorded: idle for 0.5 s
        assert looks[0] <= 0.5 / POLL_MIN_S + 1, looks[0]
        # an event the outbox records itself (no poke) is still found by the next look
        ob.append("event", {"kind": "outbox_dropped"})
        ob.flush()
        assert await asyncio.wait_for(up._gather(None, None), POLL_MIN_S * 5)
    finally:
        ob.close()
