"""Acknowledgements the outbox could not record (its disk full) are kept by the uplink and recorded later
(``Uplink._record_acks``). A renewal of the store meanwhile (found corrupt) salvages the old store's records into a new
epoch with their seqs, so the kept acknowledgements still name them there. Before, the uplink forgot them at the new
epoch and the salvaged copies were sent again: stored twice at the cloud, which cannot tell epochs' records apart. The
end-to-end case on a full disk is in tests/integration/test_outbox_disk_faults.py."""

from __future__ import annotations

import time

from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from edge_agent.uplink.settings import CloudSettings


async def test_acknowledgements_kept_over_a_renewal_of_the_outbox_are_recorded_in_the_new_epoch(
    tmp_path,
) -> None:
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), tmp_path / "agent")
    ob.open()
    try:
        for i in range(4):
            ob.append("result", {"i": i})
        ob.flush()
        s = CloudSettings(endpoint="127.0.0.1:1", ca_file="c", cert_file="c", key_file="k")
        up = Uplink(s, ob)  # never started
        recs = up._unsent(2, 10**6)  # a batch of two the cloud acknowledged, the disk full: not recorded
        acked = {r.seq for r in recs}
        up._unrecorded_ack(sorted(acked), recs, OSError(28, "database or disk is full"))
        old = ob.epoch
        ob._want_renewal("database disk image is malformed")
        ob.append("result", {"wakes": "the writer"})
        deadline = time.monotonic() + 20
        while ob.stats()["renewals"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ob.epoch != old
        up._record_at = 0.0  # the disk takes writes again
        await up._record_acks()
        assert up.status()["unrecorded_acks"] == 0
        assert not {r.seq for r in up._unsent(100, 10**6)} & acked  # never sent again
        assert {3, 4} <= {r.seq for r in ob.pending(100, 10**6)}  # the others are still to send
    finally:
        ob.close()
