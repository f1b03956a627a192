"""Kills that come again before the outbox recovered from the last one: real SQLite files, real child processes killed
with SIGKILL, one start after the other on the same data folder. Every record is in the store after the last start or
counted, and each ``outbox_corrupt`` event the gateway owes is told exactly once."""

from __future__ import annotations

import json
import sqlite3

import pytest

from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from tests.integration.test_outbox_store_faults import KILLED_AT_OPEN_AFTER_MOVE, _killed_in_renewal
from tests.support.outbox_kills import killed_child

SETTINGS = OutboxSettings(commit_interval_ms=10, retention={})


def _told(ob: Outbox) -> tuple[list[int], list[dict]]:
    """The results' seqs in the store and its ``outbox_corrupt`` events."""
    ob.flush()
    recs = ob.pending(10_000, 10**9)
    events = [json.loads(r.payload) for r in recs if r.kind == "event"]
    return sorted(r.seq for r in recs if r.kind == "result"), [
        e for e in events if e["kind"] == "outbox_corrupt"
    ]


# the start is killed once the corrupt store was moved aside and its new store has its epoch, before the copy began
KILLED_AT_OPEN_BEFORE_THE_COPY = """
cut_before(store.Outbox, "_salvage")
store.Outbox(OutboxSettings(), sys.argv[1]).open()
"""


# killed once the new store's epoch is committed, before it numbers on after the old store
KILLED_AT_OPEN_BEFORE_THE_NUMBERING = """
cut_before(store.Outbox, "_number_after")
store.Outbox(OutboxSettings(), sys.argv[1]).open()
"""


@pytest.mark.parametrize(
    "second",
    [KILLED_AT_OPEN_AFTER_MOVE, KILLED_AT_OPEN_BEFORE_THE_NUMBERING, KILLED_AT_OPEN_BEFORE_THE_COPY],
    ids=["move", "numbering", "copy"],
)
def test_a_start_killed_after_moving_aside_a_store_whose_renewal_was_killed_before_its_move_loses_no_record(
    tmp_path, second
):
    # a renewal while running (an ack met the damage) killed once its marker was written, before its move; the next
    # start finds the store corrupt, moves it aside and is killed in turn (right after the move, or before its copy)
    data = _killed_in_renewal(tmp_path, "before")
    killed_child(second, data)
    ob = Outbox(SETTINGS, data)
    ob.open()
    try:
        seqs, told = _told(ob)
        # formerly the second start's marker named the acknowledged seqs 1-100 with "last_seq" 0: the third start
        # refused it ("acked seqs beyond 0") and dropped it, and the 2,900 records stayed in outbox-corrupt/, neither
        # sent nor counted, under an outbox_corrupt event saying "salvaged 0"
        assert seqs == list(range(101, 3001))
        assert [e["salvaged"] for e in told] == [2900] and "salvaged_at_least" not in told[0]
        assert not (data / "outbox-salvaging").exists()
    finally:
        ob.close()


KILLED_IN_AN_IDLE_WRITE = """
class CutAfterTheZeros:  # the store's connection: the power cut once the idle write's zeros are committed
    def __init__(self, db):
        self.db, self.zeros = db, False

    def execute(self, sql, *args):
        got = self.db.execute(sql, *args)
        if "zeroblob" in sql:
            self.zeros = True
        elif self.zeros and sql == "COMMIT":
            power_cut()
        return got

    def __getattr__(self, name):
        return getattr(self.db, name)


ob = store.Outbox(OutboxSettings(commit_interval_ms=10, retention={}), sys.argv[1])
ob.open()
ob._db, ob._probe_bytes = CutAfterTheZeros(ob._db), store.WRITE_PROBE_MAX
ob._probe_write()
"""


def test_the_zeros_of_an_idle_write_a_kill_left_are_given_back_at_the_next_start(tmp_path):
    """The idle write that learns whether the disk takes writes again (``WRITE_PROBE_MAX`` bytes of zeros in a meta
    row, then a small value) killed between its two commits: the zeros stayed in the store for good (1 MiB)."""
    data = killed_child(KILLED_IN_AN_IDLE_WRITE, tmp_path / "data")
    ob = Outbox(SETTINGS, data)
    ob.open()
    ob.close()
    con = sqlite3.connect(ob.path)
    try:
        assert con.execute("SELECT value FROM meta WHERE key = 'write_probe'").fetchall() == []
    finally:
        con.close()
