"""The outbox against faults of its store that nobody here made: records larger than its budget allows, a
database that turns corrupt or is removed while the agent runs, an empty file at start. Real SQLite files;
the agent keeps appending throughout, and every record is either stored or counted."""

from __future__ import annotations

import os

from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from tests.integration.test_outbox_disk_faults import in_thread


def test_a_record_larger_than_the_budget_allows_is_dropped_at_once_counted_and_reported(tmp_path):
    events: list = []
    ob = Outbox(OutboxSettings(max_bytes=1_000_000, commit_interval_ms=5), tmp_path, on_event=events.append)
    ob.open()
    ob.append("event", {"before": 1})

    def huge() -> list[int]:
        seqs = [
            ob.append("sample", {"i": i}, sample=os.urandom(3_000_000), sample_ext=".png") for i in range(3)
        ]
        return seqs + [ob.append("result", {"heat_map": "h" * 2_000_000})]

    seqs = in_thread(huge, 20)  # formerly each waited 10 s for room that its own size never left
    assert ob.max_record_bytes == 1_000_000 // 16
    ob.append("result", {"after": 1})  # the next record is taken as usual
    ob.flush()
    assert ob.dropped == {"budget:sample": 3, "budget:result": 1}
    assert not any(ob.samples_dir.iterdir())  # never written to the disk
    assert ob.stats()["by_kind"]["result"] == 1
    ob.close()
    reported = [e for e in events if e["kind"] == "outbox_budget"]
    assert sorted(q for e in reported for a, b in e["ranges"] for q in range(a, b + 1)) == seqs
    again = Outbox(OutboxSettings(max_bytes=1_000_000), tmp_path)
    again.open()  # the counts are durable
    assert again.dropped_total["budget:sample"] == 3 and again.dropped_total["budget:result"] == 1
    again.close()
