"""Rows read back damaged out of a corrupt store: a kind zeroed or garbled by the damage is no record of any kind. Real
SQLite files; the store's rows rewritten in place as a damaged page reads them back, then its index damaged."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import REQUEUE_DAMAGED_MAX, Outbox
from protocols.events import EventKind
from tests.integration.test_outbox_store_faults import wait_for
from tests.support.outbox_kills import damage_index, killed_child

SETTINGS = OutboxSettings(commit_interval_ms=10, retention={})
# kinds as a damaged cell reads them back: zeroed, garbled, not text at all
GARBLED = {7: "\x00" * 6, 8: "r\x00s\x01lt", 9: b"\x00\xffresult"}


def damaged_store(data: Path, owner: tuple[str, str] | None = None, corrupt: bool = True) -> Path:
    """An outbox of ``data`` with 300 results, three of whose kinds read back as ``GARBLED``, the store corrupt (else
    sound: cells garbled in place)."""
    ob = Outbox(SETTINGS, data, owner=owner)
    ob.open()
    for i in range(300):
        ob.append("result", {"i": i})
    ob.flush()
    ob.close()
    con = sqlite3.connect(ob.path)
    con.executemany("UPDATE records SET kind = ? WHERE seq = ?", [(k, q) for q, k in GARBLED.items()])
    con.commit()
    con.close()
    if corrupt:
        damage_index(ob.path)
    return ob.path


def test_rows_whose_kind_the_damage_garbled_are_counted_as_damaged_not_salvaged_as_records(tmp_path, caplog):
    damaged_store(tmp_path / "data")
    ob = Outbox(SETTINGS, tmp_path / "data")
    caplog.set_level("WARNING", logger="edge_agent.outbox.store")
    ob.open()
    try:
        ob.flush()
        recs = ob.pending(10_000, 10**9)
        # formerly the three were copied as records of kinds "\x00\x00\x00\x00\x00\x00" and "r\x00s\x01lt", counted
        # in stats and the event's salvaged_by_kind, and sent to the cloud as such
        assert {r.kind for r in recs} == {"result", "event"}
        assert sorted(r.seq for r in recs if r.kind == "result") == [
            q for q in range(1, 301) if q not in GARBLED
        ]
        told = {e["kind"]: e for e in (json.loads(r.payload) for r in recs if r.kind == "event")}
        assert told["outbox_corrupt"]["salvaged_by_kind"] == {"result": 297}
        # their seqs, holes in the new epoch: told (formerly the cloud showed them as unknown for good)
        damaged = told["outbox_damaged"]
        assert damaged["ranges"] == [[7, 9]] and damaged["epoch"] == ob.epoch and damaged["dropped"] == 3
        assert ob.stats()["by_kind"] == {"result": 297, "event": 2}
        assert ob.dropped == {"corrupt:damaged": 3}
        (said,) = [r.getMessage() for r in caplog.records if "no record kind" in r.getMessage()]
        assert "3 rows" in said and r"'\x00\x00\x00\x00\x00\x00'" in said and "corrupt:damaged" in said
    finally:
        ob.close()
    # durable, as the rows a read removes as damaged are (formerly this process's ``dropped`` only: 0 since the
    # epoch began, in /status and the heartbeat, from the start on)
    assert ob.dropped_total == {"corrupt:damaged": 3}
    again = Outbox(SETTINGS, tmp_path / "data")
    again.open()
    try:
        assert again.stats()["dropped_total"] == {"corrupt:damaged": 3}
    finally:
        again.close()


def test_a_row_whose_kind_is_sound_and_whose_body_was_damaged_is_counted_and_told_by_its_kind(
    tmp_path, caplog
):
    """A copy at start leaves out a row whose body the damage cut (zeros where JSON was), its kind still read right:
    it is counted as corrupt:result and told as a result in the outbox_damaged event. Formerly counted and told as
    corrupt:damaged, as a row with no record kind is: the cloud and /status lost which kind of record it was."""
    path = damaged_store(tmp_path / "data", corrupt=False)
    con = sqlite3.connect(path)
    con.execute("UPDATE records SET payload = ? WHERE seq = 20", (b"{" + bytes(9),))
    con.commit()
    con.close()
    damage_index(path)
    caplog.set_level("WARNING", logger="edge_agent.outbox.store")
    ob = Outbox(SETTINGS, tmp_path / "data")
    ob.open()
    try:
        ob.flush()
        recs = ob.pending(10_000, 10**9)
        assert 20 not in {r.seq for r in recs}
        told = {e["kind"]: e for e in (json.loads(r.payload) for r in recs if r.kind == "event")}
        damaged = told["outbox_damaged"]
        assert damaged["ranges"] == [[7, 9], [20, 20]] and damaged["by_kind"] == {"damaged": 3, "result": 1}
        assert ob.dropped == ob.dropped_total == {"corrupt:damaged": 3, "corrupt:result": 1}
        (said,) = [r.getMessage() for r in caplog.records if "other cells damaged" in r.getMessage()]
        assert "1 rows" in said and "result 1" in said and "corrupt:<kind>" in said, said
    finally:
        ob.close()


def damage_leaf(path: Path, root: bool = False) -> None:
    """Zero one leaf page of the records table in the middle of the file (the WAL folded in first): every row on it
    unreadable, whether read by a range of seqs or by its own seq. ``root``: the table's root page instead (no row
    can be read; its indexes are left whole)."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    page = con.execute("PRAGMA page_size").fetchone()[0]
    leaves = [
        n for (n,) in con.execute("SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = 'leaf'")
    ]
    (top,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'records'").fetchone()
    con.close()
    with open(path, "r+b") as f:
        f.seek(((top if root else sorted(leaves)[len(leaves) // 2]) - 1) * page)
        f.write(bytes(page))


def leaf_lost_store(data: Path, garbled: bool = False, index_to: int | None = None) -> None:
    """An outbox of ``data`` with 300 results, one leaf page of its table lost (``damage_leaf``); with ``garbled``,
    the kinds of ``GARBLED`` too; with ``index_to``, its priority index listing seqs up to that one only, its schema
    saying all (index pages older than the table's, as a power cut with fsync off leaves them)."""
    ob = Outbox(SETTINGS, data)
    ob.open()
    for i in range(300):
        ob.append("result", {"i": i, "pad": "x" * 200})
    ob.flush()
    ob.close()
    if garbled:
        con = sqlite3.connect(ob.path)
        con.executemany("UPDATE records SET kind = ? WHERE seq = ?", [(k, q) for q, k in GARBLED.items()])
        con.commit()
        con.close()
    if index_to is not None:
        con = sqlite3.connect(ob.path, isolation_level=None)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        con.execute("DROP INDEX records_by_priority")
        con.execute(f"CREATE INDEX records_by_priority ON records (priority, seq) WHERE seq <= {index_to}")
        con.execute("PRAGMA writable_schema=ON")
        con.execute(
            "UPDATE sqlite_master SET sql = 'CREATE INDEX records_by_priority ON records (priority, seq)' "
            "WHERE name = 'records_by_priority'"
        )
        con.close()
    damage_leaf(ob.path)


def reopened(data: Path) -> tuple[Outbox, list, set[int]]:
    """The outbox of ``data`` opened again and flushed: it, its pending records, the seqs of the results among them."""
    ob = Outbox(SETTINGS, data)
    ob.open()
    ob.flush()
    recs = ob.pending(10_000, 10**9)
    return ob, recs, {r.seq for r in recs if r.kind == "result"}


def test_seqs_a_copy_at_start_cannot_read_at_all_are_told_as_damaged_and_counted_durably(tmp_path, caplog):
    """A corrupt store whose table lost a page: the seqs on it cannot be read even one by one. Formerly they were
    told to nobody (the cloud showed their gap as unknown, possibly still on its way, for good) and counted nowhere."""
    data = tmp_path / "data"
    leaf_lost_store(data)
    caplog.set_level("WARNING", logger="edge_agent.outbox.store")
    ob, recs, copied = reopened(data)
    try:
        told = {e["kind"]: e for e in (json.loads(r.payload) for r in recs if r.kind == "event")}
        lost = {q for a, b in told["outbox_damaged"]["ranges"] for q in range(a, b + 1)}
        # every seq is either copied or told, never both
        assert copied and lost and copied | lost == set(range(1, 301)) and not copied & lost, (copied, lost)
        assert told["outbox_damaged"]["epoch"] == ob.epoch and told["outbox_damaged"]["dropped"] == len(lost)
        assert ob.dropped == ob.dropped_total == {"corrupt:damaged": len(lost)}
        (said,) = [r.getMessage() for r in caplog.records if "could not be read at all" in r.getMessage()]
        assert f"{len(lost)} seqs" in said and f"{min(lost)}-{max(lost)}" in said, said
    finally:
        ob.close()
    again = Outbox(SETTINGS, data)
    again.open()
    try:
        assert again.stats()["dropped_total"] == {"corrupt:damaged": len(lost)}
    finally:
        again.close()


def test_only_the_seqs_that_held_a_row_are_told_as_damaged_when_no_seq_can_be_read(tmp_path):
    """A store numbered far past its rows (the records before acknowledged and removed, over months) whose table lost
    its root page: no seq can be read. The seqs its priority index lists are told and counted as damaged, no more;
    formerly every seq from the first to the store's last (20,050 for 50 records), each tried on its own."""
    data = tmp_path / "data"
    ob = Outbox(SETTINGS, data)
    ob.open()
    for i in range(50):
        ob.append("result", {"i": i})
    ob.flush()
    ob.close()
    con = sqlite3.connect(ob.path)
    with con:
        con.execute("UPDATE records SET seq = seq + 20000")
        con.execute("UPDATE meta SET value = value + 20000 WHERE key = 'last_seq'")
    con.close()
    damage_leaf(ob.path, root=True)
    ob = Outbox(SETTINGS, data)
    ob.open()
    try:
        ob.flush()
        told = [json.loads(r.payload) for r in ob.pending(10_000, 10**9) if r.kind == "event"]
        (damaged,) = [e for e in told if e["kind"] == "outbox_damaged"]
        assert damaged["ranges"] == [[20001, 20050]] and damaged["dropped"] == 50, damaged
        assert ob.dropped == ob.dropped_total == {"corrupt:damaged": 50}
    finally:
        ob.close()


# the child: the copy at start of the damaged store done (its slices committed, the rows left out counted), then the
# power cut before the outbox_damaged event that tells their seqs is committed
KILLED_AFTER_THE_COPY = """
cut_after(store.Outbox, "_salvage")
store.Outbox(OutboxSettings(commit_interval_ms=10, retention={}), sys.argv[1]).open()
"""


def test_seqs_a_copy_at_start_left_out_are_told_after_a_kill_before_their_event(tmp_path):
    """A kill -9 after the copy at start counted the rows it left out (unreadable seqs, kinds garbled) but before
    their outbox_damaged event was committed: the next start resumes after the copy's mark and tells them still.
    Formerly their seqs were held only in memory: counted in dropped_total, told in no event (the cloud showed them
    as unknown for good, the count and the events disagreed)."""
    data = tmp_path / "data"
    leaf_lost_store(data, garbled=True)
    killed_child(KILLED_AFTER_THE_COPY, data)
    ob, recs, copied = reopened(data)
    try:
        (at, told) = next(
            (r.seq, e)
            for r in recs
            if r.kind == "event" and (e := json.loads(r.payload))["kind"] == "outbox_damaged"
        )
        lost = {q for a, b in told["ranges"] for q in range(a, b + 1)}
        # every seq copied or told, never both; the count told as the count kept
        assert set(GARBLED) <= lost and copied | lost == set(range(1, 301)), (copied, lost)
        assert not copied & lost, copied & lost
        assert told["dropped"] == len(lost) == ob.stats()["dropped_total"]["corrupt:damaged"], told
    finally:
        ob.close()
    again = Outbox(SETTINGS, data)  # told once: not again at the next start
    again.open()
    try:
        again.flush()
        assert [r.seq for r in again.pending(10_000, 10**9) if b'"outbox_damaged"' in r.payload] == [at]
    finally:
        again.close()


def keeping(data: Path, last_seq: int, kept: list) -> Path:
    """A fresh outbox of ``data`` as a start killed after its copy's slices left it: numbered past ``last_seq``, the
    seqs ``kept`` (``[[first, last, kind], ...]``) in its ``untold:damaged`` key. Its store's path."""
    ob = Outbox(SETTINGS, data)
    ob.open()
    ob.close()
    con = sqlite3.connect(ob.path)
    with con:
        con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?)", (last_seq,))
        con.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('untold:damaged', ?)", (json.dumps(kept),)
        )
    con.close()
    return ob.path


def assert_all_told(path: Path) -> None:
    """Nothing kept in the store for the next start to tell again."""
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT value FROM meta WHERE key = 'untold:damaged'").fetchone() is None
    finally:
        con.close()


def test_a_kept_run_of_a_million_damaged_seqs_is_told_in_pieces_and_bounds_the_memory_of_a_start(tmp_path):
    """The seqs a copy left out are kept as ranges until told (``untold:damaged``); a long run of unreadable seqs is
    one range, and kills during the copy at start make it longer. A start queues them REQUEUE_DAMAGED_MAX at a time,
    the next piece once the event telling the one before is committed: every seq told once, the rest kept until told.
    Formerly a start expanded every kept seq into memory at once (~100 MB a million seqs, at every start)."""
    data = tmp_path / "data"
    run = 1_000_000
    keeping(data, run, [[1, run, "damaged"]])
    ob = Outbox(SETTINGS, data)
    tracemalloc.start()
    try:
        ob.open()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    try:
        assert peak < 30 << 20, f"{peak >> 20} MB at open"
        for _ in range(run // REQUEUE_DAMAGED_MAX + 1):
            ob.flush()
        told = [
            e
            for e in (json.loads(r.payload) for r in ob.pending(10_000, 10**9) if r.kind == "event")
            if e["kind"] == "outbox_damaged"
        ]
        assert len(told) == run // REQUEUE_DAMAGED_MAX and all(
            e["dropped"] <= REQUEUE_DAMAGED_MAX for e in told
        )
        ranges = sorted(r for e in told for r in e["ranges"])
        assert ranges == [[q, q + REQUEUE_DAMAGED_MAX - 1] for q in range(1, run, REQUEUE_DAMAGED_MAX)], (
            ranges[:3]
        )
        assert sum(e["dropped"] for e in told) == run
    finally:
        ob.close()
    assert_all_told(ob.path)


# the child's start: a kept run of 30 damaged seqs told 10 at a time, the first piece told and its event committed
TOLD_IN_PIECES = """
store.REQUEUE_DAMAGED_MAX = 10
ob = store.Outbox(OutboxSettings(commit_interval_ms=10, retention={}), sys.argv[1])
ob.open()
ob.flush()
"""

KILLED_AFTER_A_RENEWAL_BETWEEN_PIECES = (
    TOLD_IN_PIECES
    + """
if sys.argv[3] == "moved":  # the renewal cut off once the old store is moved aside, before the new one has its epoch
    cut_after(store.Outbox, "_move_aside")
os.replace(ob.path, ob.path.with_name("moved.db"))  # the file replaced under the agent: the store renewed
t0 = time.monotonic()
while ob.renewals < 1 and time.monotonic() - t0 < 30:
    time.sleep(0.02)
ob.flush()  # the second piece told in the new epoch
power_cut()
"""
)


def assert_the_kept_run_told_once(data: Path) -> None:
    """The next start on ``data`` (after a child killed while it told seqs 1-30 in pieces): each seq told once, in
    the events its store holds (those of the child's copied in), and nothing kept to tell again."""
    ob = Outbox(SETTINGS, data)
    ob.open()
    try:
        ob.flush()
        told = [json.loads(r.payload) for r in ob.pending(10_000, 10**9) if b'"outbox_damaged"' in r.payload]
        assert sorted(q for e in told for a, b in e["ranges"] for q in range(a, b + 1)) == list(
            range(1, 31)
        ), told
    finally:
        ob.close()
    assert_all_told(ob.path)


@pytest.mark.parametrize("kill", ["after the second piece", "moved"])
def test_a_kept_run_told_in_pieces_is_told_whole_after_a_renewal_and_a_kill(tmp_path, kill):
    """A renewal while a kept run of damaged seqs is told in pieces, then a kill -9: the pieces not told yet were kept
    in the old store's key only (and in memory), the renewed store had none, so the next start told nothing of them:
    counted, told by no event, shown as unknown at the cloud for good. Now the renewal keeps them in the new store,
    and in its marker until the new store has its epoch ("moved": the next start makes the new store)."""
    data = tmp_path / "data"
    keeping(data, 40, [[1, 30, "damaged"]])  # three pieces of 10 in the child
    killed_child(KILLED_AFTER_A_RENEWAL_BETWEEN_PIECES, data, kill)
    # the first piece (copied into the new epoch), the second, and the third after the kill ("moved": the second and
    # the third after it, in one piece of this start's)
    assert_the_kept_run_told_once(data)


# the child: the store turns corrupt (an ack's DELETE meets a damaged index) while the second piece is queued; its
# renewal is killed once its marker is written, before it moves the store aside
CORRUPT_RENEWAL_KILLED_BEFORE_THE_MOVE = (
    TOLD_IN_PIECES
    + """
ob.append("result", {"i": 1})
ob.flush()
cut_after(store.Outbox, "_write_salvaging", when=lambda self, job: job is not None)
renew_by_ack(ob, [r.seq for r in ob.pending(10, 10**9) if r.kind == "result"])
"""
)


def test_kept_damaged_seqs_of_a_store_found_corrupt_at_start_are_told(tmp_path):
    """A store holding damaged seqs not told yet found corrupt at start (here: its renewal while running killed
    before the move): the start's copy reads records, not that key, and the seqs were told by no event. Now the
    start reads the key from the corrupt store (else from the renewal's marker) into the new store's."""
    data = tmp_path / "data"
    keeping(data, 40, [[1, 30, "damaged"]])
    killed_child(CORRUPT_RENEWAL_KILLED_BEFORE_THE_MOVE, data)
    assert_the_kept_run_told_once(data)


# the child: tenant acme's store, its first piece told; the file replaced under the agent, the renewal killed right
# after it moved the store aside (its marker keeping the seqs not told yet)
TENANTS_RENEWAL_KILLED_AFTER_THE_MOVE = """
store.REQUEUE_DAMAGED_MAX = 10
ob = store.Outbox(OutboxSettings(commit_interval_ms=10, retention={}), sys.argv[1], owner=("acme", "gw1"))
ob.open()
ob.flush()
cut_after(store.Outbox, "_move_aside")
os.replace(ob.path, ob.path.with_name("moved.db"))
time.sleep(30)
"""


def acmes_renewal_killed_after_the_move(data: Path) -> Path:
    """Tenant acme's store keeping seqs 1-30 untold, its renewal killed after the move with 11-30 in its marker."""
    acme = Outbox(SETTINGS, data, owner=("acme", "gw1"))
    acme.open()
    acme.close()
    keeping(data, 40, [[1, 30, "damaged"]])
    return killed_child(TENANTS_RENEWAL_KILLED_AFTER_THE_MOVE, data)


def test_a_former_tenants_kept_damaged_seqs_are_not_told_to_the_new_tenant(tmp_path):
    """The damaged seqs a renewal keeps in its marker, the renewal killed after its move, and the gateway moved to
    another tenant meanwhile: that tenant's start told them as its own drops (another tenant's seqs and counts)."""
    data = acmes_renewal_killed_after_the_move(tmp_path / "data")
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        ob.flush()
        assert not [r for r in ob.pending(10_000, 10**9) if b'"outbox_damaged"' in r.payload]
    finally:
        ob.close()
    assert_all_told(ob.path)


def test_kept_damaged_seqs_reach_their_tenant_back_after_a_killed_start_of_another(tmp_path):
    """Then tenant beta's start is killed before it holds acme's file, and the certificate names acme again: acme's
    start copied the records into a store of its own but left the seqs the marker kept (11-30) out: counted in the
    killed process, told by no event."""
    from tests.integration.test_outbox_held_counts import KILLED_BEFORE_A_FORMER_TENANTS_CORRUPT_STORE_IS_HELD

    data = acmes_renewal_killed_after_the_move(tmp_path / "data")
    killed_child(KILLED_BEFORE_A_FORMER_TENANTS_CORRUPT_STORE_IS_HELD, data)
    ob = Outbox(SETTINGS, data, owner=("acme", "gw1"))
    ob.open()
    try:
        ob.flush()
        told = [json.loads(r.payload) for r in ob.pending(10_000, 10**9) if b'"outbox_damaged"' in r.payload]
        assert sorted(q for e in told for a, b in e["ranges"] for q in range(a, b + 1)) == list(range(1, 31))
    finally:
        ob.close()
    assert_all_told(ob.path)


def test_kept_damaged_seqs_named_twice_in_the_key_are_told_once(tmp_path):
    """A garbled or hand-edited key naming the same seqs in several ranges: they were told again range by range (a
    few thousand such ranges kept the writer busy for half a minute, and the seqs then told by no event)."""
    keeping(tmp_path / "data", 40, [[1, 5, "damaged"]] * 3 + [[3, 8, "damaged"]])
    ob = Outbox(SETTINGS, tmp_path / "data")
    ob.open()
    try:
        ob.flush()
        told = [json.loads(r.payload) for r in ob.pending(10_000, 10**9) if b'"outbox_damaged"' in r.payload]
        assert [(e["ranges"], e["dropped"]) for e in told] == [([[1, 8]], 8)]
    finally:
        ob.close()


def test_kept_damaged_seqs_past_the_stores_last_seq_are_not_told(tmp_path, caplog):
    """A copy leaves out only seqs its store numbered past already: a garbled or hand-edited key naming seqs past the
    store's last seq was told 100,000 seqs every 5 s for ever, each event claiming 100,000 dropped."""
    data = tmp_path / "data"
    keeping(data, 40, [[1, 10**15, "damaged"], [10**16, 10**16 + 5, "result"]])
    caplog.set_level("WARNING", logger="edge_agent.outbox.store")
    ob = Outbox(SETTINGS, data)
    ob.open()
    try:
        ob.flush()
        told = [json.loads(r.payload) for r in ob.pending(10_000, 10**9) if b'"outbox_damaged"' in r.payload]
        assert [(e["ranges"], e["dropped"]) for e in told] == [([[1, 40]], 40)], told
        assert "past the store's last seq 40 (41-1000000000000000, 10000000000000000-" in caplog.text
    finally:
        ob.close()
    assert_all_told(ob.path)


@pytest.mark.parametrize("corrupt", [True, False], ids=["corrupt", "sound"])
def test_a_kept_key_nested_past_the_parsers_depth_is_nothing_kept(tmp_path, corrupt):
    """A garbled or hand-edited ``untold:damaged`` nested deeper than JSON is parsed raised RecursionError out of the
    start, at every start; of a store found corrupt at start, read before it is moved aside, too."""
    data = tmp_path / "data"
    path = keeping(data, 40, [])
    con = sqlite3.connect(path)
    with con:
        con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('untold:damaged', ?)", ("[" * 5000,))
    con.close()
    if corrupt:
        damage_index(path)
    ob = Outbox(SETTINGS, data)
    ob.open()
    try:
        assert ob.moved_aside is not None if corrupt else ob.moved_aside is None
    finally:
        ob.close()


@pytest.mark.parametrize("corrupt", [True, False], ids=["corrupt", "sound"])
def test_a_held_stores_rows_whose_kind_the_damage_garbled_are_noted_as_damaged_not_as_records(
    tmp_path, caplog, corrupt
):
    damaged_store(tmp_path / "data", owner=("acme", "gw1"), corrupt=corrupt)
    ob = Outbox(SETTINGS, tmp_path / "data", owner=("beta", "gw1"))
    caplog.set_level("WARNING", logger="edge_agent.outbox.store")
    ob.open()  # formerly, of a sound store: TypeError (the blob kind a key of the note's JSON), the agent not started
    try:
        (one,) = ob.held
        # formerly by_kind {"result": 297, "\x00\x00\x00\x00\x00\x00": 1, "r\x00s\x01lt": 1}, 299 records; and
        # the damaged rows were counted nowhere
        assert one["by_kind"] == {"result": 297} and one["records"] == 297 and one["damaged"] == 3
        said = " ".join(r.getMessage() for r in caplog.records)
        assert "297 records, 3 damaged rows" in said
        if corrupt:
            assert "3 rows read with no record kind" in said and "not counted as records" in said
    finally:
        ob.close()


def test_a_renewal_while_running_counts_rows_whose_kind_the_damage_garbled_as_damaged(tmp_path):
    # the three garbled rows read back so in a store still sound at start (a cell garbled in place), counted by the
    # kinds they read as; then the store turns corrupt and the cloud's ack meets the damage: renewed while running
    data = tmp_path / "data"
    damaged_store(data, corrupt=False)
    events: list = []
    ob = Outbox(SETTINGS, data, on_event=events.append)
    ob.open()
    try:
        assert ob.moved_aside is None
        damage_index(ob.path)
        ob.ack(list(range(101, 111)))
        wait_for(lambda: ob.renewals == 1, what="the renewal")
        (told,) = [e.data for e in events if e.kind is EventKind.OUTBOX_CORRUPT]
        # formerly the blob kind stopped the renewal (TypeError writing its event: no event until the next start,
        # the rows counted nowhere), and text ones were told as lost records of kinds "\x00\x00\x00\x00\x00\x00", ...
        assert told["lost_by_kind"] == {"damaged": 3} and told["salvaged_by_kind"] == {"result": 287}
        assert ob.dropped == {"corrupt:damaged": 3}
        ob.flush()
        (holes,) = [
            e.data for e in events if e.kind is EventKind.OUTBOX_DAMAGED
        ]  # (their seqs, in the new epoch)
        assert holes["ranges"] == [[7, 9]] and holes["epoch"] == ob.epoch
        assert ob.stats()["by_kind"] == {"result": 287, "event": 2}
    finally:
        ob.close()


def test_rows_whose_kind_was_garbled_in_a_sound_store_are_not_handed_to_the_uplink(tmp_path):
    damaged_store(tmp_path / "data", corrupt=False)
    events: list = []
    ob = Outbox(SETTINGS, tmp_path / "data", on_event=events.append)
    ob.open()
    try:
        # before a read (the cloud out of reach): counted as damaged; formerly the blob was a key of by_kind, and the
        # agent's /status failed (JSON keys must be text) until the uplink's first read
        assert ob.stats()["by_kind"] == {"result": 297, "damaged": 3}
        json.dumps(ob.stats())
        # formerly handed out as they read: the uplink failed on the blob kind (not UTF-8) at every batch, and no
        # record behind it was ever sent (nor the alarms before it: they go in the same batch)
        recs = ob.pending(10_000, 10**9)
        assert [r.seq for r in recs] == [q for q in range(1, 301) if q not in GARBLED]
        assert ob.dropped == {"corrupt:damaged": 3}
        # (the writer may have committed the event telling them already: its commit interval runs meanwhile)
        assert {k: n for k, n in ob.stats()["by_kind"].items() if k != "event"} == {"result": 297}
        # told with their seqs, as the outbox's other drops are: formerly untold, the cloud showed their gap as
        # unknown ("possibly still on its way") for good
        (told,) = [e.data for e in events if e.kind is EventKind.OUTBOX_DAMAGED]
        assert told["ranges"] == [[7, 9]] and told["by_kind"] == {"damaged": 3} and told["epoch"] == ob.epoch
        ob.flush()
        (rec,) = [json.loads(r.payload) for r in ob.pending(10_000, 10**9) if r.kind == "event"]
        assert rec["kind"] == "outbox_damaged" and rec["ranges"] == [[7, 9]]
    finally:
        ob.close()
    again = Outbox(SETTINGS, tmp_path / "data")
    again.open()
    try:
        assert again.dropped_total["corrupt:damaged"] == 3 and again.stats()["by_kind"] == {
            "result": 297,
            "event": 1,
        }
    finally:
        again.close()


@pytest.mark.parametrize("corrupt", [False, True], ids=["sound", "corrupt"])
def test_a_kind_garbled_into_text_that_is_not_utf8_is_removed_and_counted(tmp_path, corrupt):
    path = damaged_store(tmp_path / "data", corrupt=False)
    con = sqlite3.connect(path)
    # the cell keeps its type (TEXT), its bytes garbled: formerly the fetch itself failed ("Could not decode to
    # UTF-8"): the start (the counts of a sound store, the copy out of a corrupt one: the agent did not start) and,
    # met while running, every read of the uplink (nothing sent any more)
    con.execute("UPDATE records SET kind = CAST(X'72ff73fe6c74' AS TEXT) WHERE seq = 20")
    con.commit()
    con.close()
    if corrupt:
        damage_index(path)
    ob = Outbox(SETTINGS, tmp_path / "data")
    ob.open()
    try:
        ob.flush()
        recs = ob.pending(10_000, 10**9)
        results = [r.seq for r in recs if r.kind == "result"]
        assert results == [q for q in range(1, 301) if q not in GARBLED and q != 20]
        assert ob.dropped == {"corrupt:damaged": 4}
        ob.flush()  # the events telling them: outbox_damaged (and, corrupt, the start's outbox_corrupt)
        assert ob.stats()["by_kind"] == {"result": 296, "event": 2 if corrupt else 1}
    finally:
        ob.close()


def test_append_refuses_a_kind_that_is_no_record_kind_and_numbers_nothing(tmp_path):
    ob = Outbox(SETTINGS, tmp_path / "data")
    ob.open()
    try:
        first = ob.append("result", {"i": 0})
        # formerly stored and numbered: the next read removed it as damaged (no record of any kind), a gap at the cloud
        for kind in ("results", "", "Result"):
            with pytest.raises(ValueError, match=f"{kind!r} is no record kind.*event, alarm, result"):
                ob.append(kind, {"i": 1})
        assert ob.append("alarm", {"i": 2}) == first + 1  # no seq taken by the refused ones
        ob.flush()
        assert [r.kind for r in ob.pending()] == ["alarm", "result"] and not ob.dropped
    finally:
        ob.close()


def test_every_event_the_outbox_records_itself_is_one_the_agent_does_not_record_again():
    from edge_agent.outbox.store import SELF_RECORDED

    # outbox_refused was missing: the agent recorded each such event a second time
    assert {k for k in EventKind if k.value.startswith("outbox_")} == SELF_RECORDED


def test_rows_the_priority_index_does_not_list_are_still_copied_from_a_damaged_table(tmp_path):
    """A damaged store whose priority index lists fewer rows than its table holds (index pages older than the table's,
    as a power cut with fsync off leaves them): a range that cannot be read is still narrowed down by the table, every
    row it can give copied. Formerly the range was narrowed to the index's rows and the rest never read: 120 of the
    284 rows still readable here were neither copied, counted nor told."""
    data = tmp_path / "data"
    leaf_lost_store(data, index_to=120)
    path = data / "outbox" / "outbox.db"
    con = sqlite3.connect(path)
    readable = set()
    for q in range(1, 301):
        with contextlib.suppress(sqlite3.DatabaseError):
            readable |= {s for (s,) in con.execute("SELECT seq FROM records WHERE seq = ?", (q,))}
    con.close()
    ob = Outbox(SETTINGS, data)
    ob.open()
    try:
        ob.flush()
        got = {json.loads(r.payload)["i"] + 1 for r in ob.pending(10_000, 10**9) if r.kind == "result"}
        assert 120 < len(readable) < 300 and got == readable, sorted(readable - got)
    finally:
        ob.close()
