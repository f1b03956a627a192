"""One deadline for the slow steps of a start: copying what a damaged store still holds and counting held stores share
it, so an agent comes up serving within a bounded time; what it leaves goes on while the agent runs (a copy) or at the
next start (a count), said in one WARNING. Real SQLite files; the outbox's monotonic clock moved on by the test (no
test waits out a limit)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_agent.outbox import store
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from tests.integration.test_outbox_held_counts import filled
from tests.integration.test_outbox_store_faults import SlowClock, wait_for
from tests.support.outbox_kills import damage_index, killed_child

SETTINGS = OutboxSettings(commit_interval_ms=10, retention={})


def test_a_start_copying_a_damaged_store_and_counting_held_ones_keeps_to_one_deadline(
    tmp_path, monkeypatch, caplog
):
    live = tmp_path / "live"
    acme = filled(live, 20, owner=("acme", "gw1"))
    epoch = acme.epoch
    acme.close()
    data = tmp_path / "data"
    filled(data, 1000, owner=("beta", "gw1")).close()
    damage_index(data / "outbox" / "outbox.db")  # beta's own store, corrupt: copied at the start
    held = data / "outbox-held"
    held.mkdir(parents=True)
    for i in (1, 2):  # two of acme's stores held before, taken out by hand and put back: counted at the start
        shutil.copyfile(acme.path, held / f"outbox.db.acme-{epoch}.{i}")
    monkeypatch.setattr(store, "SALVAGE_CHUNK", 100)
    clock, real_intact, rows = SlowClock(), store._intact, [0]

    def intact(row):  # the copy takes 12 s of the outbox's clock by its 300th record
        rows[0] += 1
        if rows[0] == 300:
            clock.ahead_s += 12.0
        return real_intact(row)

    monkeypatch.setattr(store, "time", clock)
    monkeypatch.setattr(store, "_intact", intact)
    caplog.set_level("WARNING", logger="edge_agent.outbox.store")
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        # formerly the copy had 30 s of its own and the held stores' counts 10 s more: both done within the start
        counts = {
            Path(h["file"]).name: (h["records"], h["records_at_least"]) for h in ob.stats()["held"]["files"]
        }
        assert counts == {f"outbox.db.acme-{epoch}.{i}": (0, True) for i in (1, 2)}
        assert ob.stats()["by_kind"]["result"] < 1000
        (said,) = [r.getMessage() for r in caplog.records if "left for later" in r.getMessage()]
        assert "outbox.db.corrupt-" in said and "goes on while the agent runs" in said
        assert f"outbox.db.acme-{epoch}.1 (at least 0 more records; goes on at the next start)" in said
        ob.append("result", {"i": "new"})  # the agent serves meanwhile; the copy goes on behind it
        wait_for(lambda: ob.stats()["by_kind"].get("result") == 1001, what="the copy to go on while running")
        assert sorted(r.seq for r in ob.pending(5000, 10**9) if r.kind == "result")[:1000] == list(
            range(1, 1001)
        )
    finally:
        ob.close()
    monkeypatch.setattr(store, "_intact", real_intact)
    again = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    again.open()  # the counts cut by the start's deadline go on at the next start
    try:
        counts = {
            Path(h["file"]).name: (h["records"], h["records_at_least"])
            for h in again.stats()["held"]["files"]
        }
        assert counts == {f"outbox.db.acme-{epoch}.{i}": (20, False) for i in (1, 2)}
    finally:
        again.close()


@pytest.mark.parametrize("limit", ["SALVAGE_S", "START_S"])
def test_a_copy_at_start_cut_before_it_read_the_damaged_store_numbers_on_after_that_store(
    tmp_path, monkeypatch, limit
):
    data = tmp_path / "data"
    filled(data, 1000, owner=None).close()
    damage_index(data / "outbox" / "outbox.db")
    monkeypatch.setattr(
        store, limit, 0.0, raising=False
    )  # (the start's time spent before the copy could begin)
    ob = Outbox(SETTINGS, data)
    ob.open()
    try:
        ob.flush()
        (told,) = [r for r in ob.pending(5000, 10**9) if r.kind == "event"]
        # formerly the start's outbox_corrupt event took seq 1, the old store's first record's: the copy going on
        # while running then skipped that record as held already (neither sent nor counted), and an ack in flight
        # for seq 1 of the old epoch would have removed the event
        assert told.seq == 1001
        # what the start copied, and that the rest is copied after it: formerly "salvaged 0" read as the whole
        event = json.loads(told.payload)
        assert event["salvaged"] == 0 and event["salvaged_at_least"] is True
        wait_for(lambda: not (data / "outbox-salvaging").exists(), what="the copy to go on while running")
        assert sorted(r.seq for r in ob.pending(5000, 10**9) if r.kind == "result") == list(range(1, 1001))

        # the whole copy, once done, is told: formerly the records copied after the start were told in no event
        def told_done() -> list:
            ob.flush()
            events = [json.loads(r.payload) for r in ob.pending(5000, 10**9) if r.kind == "event"]
            return [e for e in events if e["kind"] == "outbox_salvaged"]

        wait_for(told_done, what="the copy's end told")
        (salvaged,) = told_done()
        assert salvaged["salvaged"] == 1000 and salvaged["salvaged_by_kind"] == {"result": 1000}
        assert salvaged["epoch"] == ob.epoch and salvaged["previous_epoch"] == event["previous_epoch"]
        assert salvaged["moved_to"] == event["moved_to"]
    finally:
        ob.close()


def copy_cut_and_stopped(tmp_path: Path, monkeypatch) -> Path:
    """A data folder whose damaged store of 1,000 records a start's time limit cut the copy of; the agent stopped
    while the copy went on (its marker left for the next start)."""
    data = tmp_path / "data"
    filled(data, 1000, owner=None).close()
    damage_index(data / "outbox" / "outbox.db")
    monkeypatch.setattr(store, "SALVAGE_S", 0.0)
    # a slice or two a round: the copy outlasts the wait below
    monkeypatch.setattr(store, "SALVAGE_CHUNK", 8)
    monkeypatch.setattr(store, "COPY_ROUND_S", 0.005)
    ob = Outbox(SETTINGS, data)
    ob.open()
    wait_for(lambda: ob.salvaged > 0, what="the copy going on while running")
    ob.close()
    assert (data / "outbox-salvaging").exists()  # stopped before it was done
    return data


def test_a_cut_copy_done_at_a_later_start_tells_its_whole_count(tmp_path, monkeypatch):
    """A copy cut by the start's time limit goes on while the agent runs; the agent stops before it is done and the
    next start finishes it. Formerly that start told nothing: the cloud's last word was the first start's
    outbox_corrupt event, "at least" 0 salvaged (an outbox_salvaged event came only for a copy done while running)."""
    data = copy_cut_and_stopped(tmp_path, monkeypatch)
    monkeypatch.setattr(store, "SALVAGE_S", 30.0)
    ob = Outbox(SETTINGS, data)
    ob.open()
    try:
        ob.flush()
        events = [json.loads(r.payload) for r in ob.pending(5000, 10**9) if r.kind == "event"]
        corrupt, salvaged = events
        assert corrupt["kind"] == "outbox_corrupt" and corrupt["salvaged_at_least"] is True
        assert salvaged["kind"] == "outbox_salvaged" and salvaged["salvaged_by_kind"] == {"result": 1000}
        assert salvaged["epoch"] == ob.epoch and salvaged["previous_epoch"] == corrupt["previous_epoch"]
    finally:
        ob.close()


def test_a_cut_copy_done_at_a_later_start_killed_before_its_first_commit_is_told_at_the_next(
    tmp_path, monkeypatch
):
    """The start that finished a cut copy is killed right after (its marker removed, the writer's first commit not
    made): the outbox_salvaged event is told at the next start still. Formerly it was only queued in memory, the
    marker gone: told by no start, the cloud's last word the first start's "at least" count."""
    data = copy_cut_and_stopped(tmp_path, monkeypatch)
    killed_child(FINISHED_THEN_KILLED, data)
    assert_both_told_once(data)


def assert_both_told_once(data: Path) -> None:
    """After a kill once the copy was done: the next start has the outbox_corrupt event and the outbox_salvaged one
    with the whole count, each once (a start after it tells neither again)."""
    assert not (data / "outbox-salvaging").exists()  # (the copy finished)
    for _start in range(2):
        ob = Outbox(SETTINGS, data)
        ob.open()
        try:
            ob.flush()
            events = [json.loads(r.payload) for r in ob.pending(5000, 10**9) if r.kind == "event"]
            assert [e["kind"] for e in events] == ["outbox_corrupt", "outbox_salvaged"], events
            assert events[1]["salvaged_by_kind"] == {"result": 1000}
        finally:
            ob.close()


# the child: the start that finishes the copy, killed once it is done (before the writer's first commit)
FINISHED_THEN_KILLED = """
cut_after(store.Outbox, "_resume_salvage")
store.Outbox(OutboxSettings(commit_interval_ms=10, retention={}), sys.argv[1]).open()
"""


# the child: a start whose copy its time limit cut goes on while running; killed once the copy is done and its marker
# removed (the outbox_salvaged event queued, not committed yet)
DONE_WHILE_RUNNING_THEN_KILLED = """
store.SALVAGE_S = 0.0
cut_after(store.Outbox, "_write_salvaging", when=lambda self, job: job is None)
store.Outbox(OutboxSettings(commit_interval_ms=10, retention={}), sys.argv[1]).open()
time.sleep(60)
"""


def test_a_cut_copy_done_while_running_and_killed_before_its_event_is_committed_is_told_at_the_next_start(
    tmp_path,
):
    """A copy cut by the start's time limit is done while the agent runs, its marker removed, and the agent is killed
    before the outbox_salvaged event is committed: the next start tells it. Formerly it was queued in memory only: the
    cloud's last word stayed the outbox_corrupt event's "at least" count."""
    data = tmp_path / "data"
    filled(data, 1000, owner=None).close()
    damage_index(data / "outbox" / "outbox.db")
    killed_child(DONE_WHILE_RUNNING_THEN_KILLED, data)
    assert_both_told_once(data)
