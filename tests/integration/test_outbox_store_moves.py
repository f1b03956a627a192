"""A store's three files (the database, its -wal and -shm) moved under kills: real SQLite files, real child processes
killed with SIGKILL between two of the files, and WALs found alone at the outbox's path. Every record is either in the
store after the next start or told."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from tests.integration.test_outbox_store_faults import fill_outbox
from tests.support.outbox_kills import damage_index, killed_child

SETTINGS = OutboxSettings(commit_interval_ms=10, retention={})

# first kill: the start renews the corrupt store and is cut off once the new store has its tables, before its epoch
KILLED_BEFORE_THE_NEW_STORES_EPOCH = """
store.Outbox._write_epoch_file = lambda self, epoch: power_cut()
store.Outbox(OutboxSettings(), sys.argv[1]).open()
"""

# second kill: the next start moves that half-made store aside and is cut off between its database and its -wal
KILLED_BETWEEN_A_HALF_MADE_STORE_AND_ITS_WAL = """
real_move = store._move_file


def move(src, dst):
    real_move(src, dst)
    if src.name == "outbox.db" and ".half-made-" in dst.name:
        power_cut()


store._move_file = move
store.Outbox(OutboxSettings(), sys.argv[1]).open()
"""


def events(ob: Outbox) -> list[dict]:
    ob.flush()  # (queued at open, committed by the writer)
    return [json.loads(r.payload) for r in ob.pending(10_000, 10**9) if r.kind == "event"]


def results(ob: Outbox) -> list[int]:
    return sorted(r.seq for r in ob.pending(10_000, 10**9) if r.kind == "result")


def test_two_kills_in_a_row_during_a_renewal_at_start_lose_no_record(tmp_path):
    data = tmp_path / "data"
    fill_outbox(data, 1000).close()
    damage_index(data / "outbox" / "outbox.db")
    killed_child(KILLED_BEFORE_THE_NEW_STORES_EPOCH, data)
    killed_child(KILLED_BETWEEN_A_HALF_MADE_STORE_AND_ITS_WAL, data)
    assert (data / "outbox" / "outbox.db-wal").exists() and not (data / "outbox" / "outbox.db").exists()
    ob = Outbox(SETTINGS, data)
    ob.open()
    try:
        # formerly the half-made store's WAL was put beside the old store's file (the one the unfinished copy names)
        # and SQLite replayed it into that file: its tables came back empty, none of the 1,000 records sent or counted
        assert results(ob) == list(range(1, 1001))
        assert not ob.dropped and not (data / "outbox-salvaging").exists()
        # the renewal the kills cut off is told once its move is completed
        told = [e for e in events(ob) if e["kind"] == "outbox_corrupt"]
        assert len(told) == 1 and told[0]["salvaged"] == 1000 and told[0]["epoch"] == ob.epoch
    finally:
        ob.close()


def test_a_wal_found_alone_at_the_path_is_neither_deleted_nor_replayed_its_records_are_copied_and_told(
    tmp_path,
):
    live = tmp_path / "live"
    ob = fill_outbox(live, 300)  # open: every page of the new store is in its WAL yet
    epoch = ob.epoch
    data = tmp_path / "data"
    (data / "outbox").mkdir(parents=True)
    # the database removed (by hand, a tool, a former release's move cut off): its WAL alone at the path
    shutil.copyfile(ob.path.with_name("outbox.db-wal"), data / "outbox" / "outbox.db-wal")
    shutil.copyfile(live / "outbox-epoch.json", data / "outbox-epoch.json")
    ob.close()
    again = Outbox(SETTINGS, data)
    again.open()
    try:
        # formerly a new store was made over it: SQLite deleted the WAL of a database of 0 bytes, 300 records gone
        # and nothing said
        assert results(again) == list(range(1, 301))
        assert again.epoch > epoch and not (data / "outbox-salvaging").exists()
        told = [e for e in events(again) if e["kind"] == "outbox_corrupt"]
        assert len(told) == 1 and told[0]["moved_to"].endswith("-wal") and "WAL" in told[0]["reason"]
        assert again.append("result", {"new": 1}) > 300
    finally:
        again.close()


def test_a_wal_left_at_the_path_beside_a_moved_store_that_has_one_already_is_copied_not_set_aside(tmp_path):
    data = tmp_path / "data"
    ob = fill_outbox(data, 100)
    epoch = ob.epoch
    ob.close()  # records 1-100 folded into the file
    aside = data / "outbox-corrupt" / "outbox.db.corrupt-1"
    aside.parent.mkdir()
    shutil.copyfile(ob.path, aside)
    ob = Outbox(OutboxSettings(), data)
    ob.open()
    for i in range(200):  # 101-300: in the WAL only
        ob.append("result", {"i": i, "pad": "p" * 200})
    ob.flush()
    wal = shutil.copyfile(ob.path.with_name("outbox.db-wal"), tmp_path / "wal")
    ob.close()
    # a renewal's move cut off by a former release (no record of the move): the database moved, its WAL at the path,
    # and beside the moved file a -wal of its own already (empty)
    ob.path.unlink()
    ob.path.with_name("outbox.db-shm").unlink(missing_ok=True)
    shutil.move(wal, ob.path.with_name("outbox.db-wal"))
    (aside.parent / "outbox.db.corrupt-1-wal").write_bytes(b"")
    marker = {"src": str(aside), "last_seq": 300, "acked": [], "from": 0, "epoch": epoch + 1}
    (data / "outbox-salvaging").write_text(json.dumps({**marker, "previous_epoch": epoch, "earlier": []}))
    again = Outbox(SETTINGS, data)
    again.open()
    try:
        # formerly the WAL was renamed outbox.db.leftover-<time>-wal and never read: records 101-300 neither sent nor
        # counted
        assert results(again) == list(range(1, 301))
        assert again.epoch == epoch + 1 and not again.dropped
        assert not (data / "outbox-salvaging").exists()
        # the renewal completed and the WAL found alone are told each with its own records: 300 in all (formerly
        # the resumed renewal's event counted the WAL's 200 too, 500 told for 300)
        told = [e for e in events(again) if e["kind"] == "outbox_corrupt"]
        assert len(told) == 2 and sum(e["salvaged"] for e in told) == 300
    finally:
        again.close()


# a tenant move: the start finds acme's store under beta's certificate and holds it; cut off once the note and the
# samples are in outbox-held/, before the store's move is recorded
KILLED_BETWEEN_A_HOLDS_NOTE_AND_ITS_STORE = """
real_move_store = store.Outbox._move_store


def move_store(self, src, dst):
    if dst.parent.name == "outbox-held":
        power_cut()
    return real_move_store(self, src, dst)


store.Outbox._move_store = move_store
store.Outbox(OutboxSettings(), sys.argv[1], owner=("beta", "gw1")).open()
"""


def acme_outbox(data: Path) -> set[str]:
    """acme's outbox in ``data``: 300 records, 20 of them with a sample (the sha256 names returned), closed."""
    ob = Outbox(SETTINGS, data, owner=("acme", "gw1"))
    ob.open()
    for i in range(300):
        sample = bytes([i % 256]) * 4000 if i < 20 else None
        ob.append("result", {"i": i, "pad": "p" * 200}, sample=sample, sample_ext=".png" if sample else "")
    ob.flush()
    shas = {p.name for p in ob.samples_dir.iterdir()}
    ob.close()
    assert len(shas) == 20
    return shas


def test_a_hold_killed_before_its_store_moved_is_held_again_with_its_samples_and_never_counted_as_dropped(
    tmp_path,
):
    data = tmp_path / "data"
    shas = acme_outbox(data)
    killed_child(KILLED_BETWEEN_A_HOLDS_NOTE_AND_ITS_STORE, data)
    held = data / "outbox-held"
    (note,) = held.glob("outbox.db.*.json")
    assert (data / "outbox" / "outbox.db").exists() and not (held / note.name[: -len(".json")]).exists()
    told = []
    ob = Outbox(
        OutboxSettings(commit_interval_ms=10, retention={}, max_bytes=131072),
        data,
        owner=("beta", "gw1"),
        on_event=told.append,
    )
    ob.open()
    try:
        # formerly the note stayed with no store, the store was held again as <name>.1 without the samples moved
        # already, and outbox-held/ past its bound removed that note: "300 records ... never sent", held_dropped
        # {'result': 300} and an outbox_budget event, while the 300 records were held (their samples removed)
        assert not ob.held_dropped
        assert [e for e in told if getattr(e, "cause", None) == "held"] == []
        (one,) = ob.stats()["held"]["files"]
        assert one["tenant"] == "acme" and one["records"] == 300
        kept = sqlite3.connect(one["file"])
        assert kept.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 300
        kept.close()
        assert {p.name for p in Path(one["file"] + ".samples").iterdir()} == shas
        assert [p.name for p in held.glob("*.json")] == [Path(one["file"]).name + ".json"]
        assert ob.pending(5000, 10**9) == []
    finally:
        ob.close()


def test_a_directory_where_the_move_record_goes_is_set_aside_and_the_outbox_starts(tmp_path, caplog):
    ob = fill_outbox(tmp_path, 100)
    ob.close()
    (tmp_path / "outbox-moving").mkdir()
    (tmp_path / "outbox-moving" / "left.txt").write_text("by hand")
    ob = Outbox(SETTINGS, tmp_path)
    ob.open()  # formerly: OutboxError "... Is a directory ...; free space on that disk or make the folder writable"
    try:
        assert len(ob.pending(5000, 10**9)) == 100
        (aside,) = tmp_path.glob("outbox-moving.bad-*")
        assert (aside / "left.txt").read_text() == "by hand" and not (tmp_path / "outbox-moving").exists()
        assert "outbox-moving is a directory" in caplog.text
    finally:
        ob.close()


def acme_outbox_held_by_beta(data: Path) -> tuple[Path, set[str]]:
    """acme's outbox (300 records, 20 of them with a sample) held whole by a start as beta: the held store and the
    sha256 names of its samples."""
    shas = acme_outbox(data)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    ob.close()
    (store,) = [
        p
        for p in (data / "outbox-held").iterdir()
        if p.name.startswith("outbox.db.") and "." not in p.name[10:]
    ]
    assert {p.name for p in Path(f"{store}.samples").iterdir()} == shas
    return store, shas


def test_a_store_the_former_code_held_again_keeps_every_sample_at_the_first_start_after_the_upgrade(tmp_path):
    data = tmp_path / "data"
    store, shas = acme_outbox_held_by_beta(data)
    # what the former code left after a hold killed before its store moved, then a start: the store held again as
    # <name>.1 with the one sample still in samples/; the orphan note kept the other 19
    again = store.with_name(store.name + ".1")
    store.rename(again)
    note = json.loads(Path(f"{store}.json").read_text())
    Path(f"{again}.json").write_text(json.dumps({**note, "file": str(again)}))
    Path(f"{again}.samples").mkdir()
    one = sorted(shas)[0]
    Path(f"{store}.samples", one).rename(Path(f"{again}.samples", one))
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        # formerly the 19 went to samples/, which the current store does not name: removed at this start
        assert {p.name for p in Path(f"{again}.samples").iterdir()} == shas
        assert not Path(f"{store}.json").exists() and not Path(f"{store}.samples").exists()
        (held,) = ob.stats()["held"]["files"]
        assert held["file"] == str(again) and held["records"] == 300 and not ob.held_dropped
    finally:
        ob.close()


def test_a_held_store_moved_out_by_hand_keeps_its_note_and_samples_and_is_held_again_once_put_back(tmp_path):
    data = tmp_path / "data"
    store, shas = acme_outbox_held_by_beta(data)
    store.rename(tmp_path / "exported.db")  # (to export it with sqlite3, as docs/store-and-forward.md says)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    ob.close()
    # formerly its note was removed and its 20 samples "put back" into samples/, then removed by the same start
    assert {p.name for p in Path(f"{store}.samples").iterdir()} == shas
    (tmp_path / "exported.db").rename(store)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        (held,) = ob.stats()["held"]["files"]
        assert held["file"] == str(store) and held["records"] == 300 and not ob.held_dropped
    finally:
        ob.close()


def test_a_held_notes_samples_folder_that_is_a_link_is_never_followed(tmp_path):
    data = tmp_path / "data"
    ob = Outbox(SETTINGS, data, owner=("acme", "gw1"))
    ob.open()
    ob.append("result", {"i": 1})
    ob.flush()
    epoch = ob.epoch
    ob.close()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("not the agent's")
    held = data / "outbox-held"
    held.mkdir()
    name = f"outbox.db.acme-{epoch}"
    (held / f"{name}.json").write_text(json.dumps({"tenant": "acme", "agent": "gw1", "epoch": epoch}))
    (held / f"{name}.samples").symlink_to(victim)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    ob.close()
    # formerly its files were moved into samples/ and removed there as samples no record names
    assert [p.name for p in victim.iterdir()] == ["keep.txt"]


def test_a_directory_where_the_move_record_goes_is_set_aside_beside_one_set_aside_in_the_same_second(
    tmp_path,
):
    ob = fill_outbox(tmp_path, 10)
    ob.close()
    (tmp_path / "outbox-moving").mkdir()
    now = int(time.time())
    for t in range(now, now + 5):  # (the same second's name taken, and not empty: a rename onto it failed)
        (tmp_path / f"outbox-moving.bad-{t}").mkdir()
        (tmp_path / f"outbox-moving.bad-{t}" / "old.txt").write_text("before")
    ob = Outbox(SETTINGS, tmp_path)
    ob.open()  # formerly: OutboxError "... [Errno 39] Directory not empty ..."
    try:
        assert len(ob.pending(5000, 10**9)) == 10 and not (tmp_path / "outbox-moving").exists()
        assert len(list(tmp_path.glob("outbox-moving.bad-*"))) == 6
    finally:
        ob.close()


# outbox-held/ on another file system than the outbox (a mount of its own): every move between the two is a copy then a
# removal (a rename fails with EXDEV)
ACROSS_DISKS = """
import errno, shutil
held = os.path.join(sys.argv[1], "outbox-held")
real_replace = os.replace


def replace(src, dst, *args, **kw):
    if str(src).startswith(held) != str(dst).startswith(held):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    return real_replace(src, dst, *args, **kw)


os.replace = replace
"""

# the next start (as beta) puts the samples of that cut-off hold back into samples/, and is killed halfway through the
# copy of the fifth of them
KILLED_HALFWAY_THROUGH_A_SAMPLES_COPY_BACK = """
real_copy, copied = shutil.copyfile, []


def copyfile(src, dst, *args, **kw):
    if "outbox-held" in str(src) and os.path.basename(os.path.dirname(dst)) == "samples":
        copied.append(src)
        if len(copied) == 5:
            body = open(src, "rb").read()
            with open(dst, "wb") as f:
                f.write(body[: len(body) // 2])
            power_cut()
    return real_copy(src, dst, *args, **kw)


shutil.copyfile = copyfile
store.Outbox(OutboxSettings(), sys.argv[1], owner=("beta", "gw1")).open()
"""


def test_a_kill_during_a_copy_across_disks_never_costs_the_file_copied(tmp_path):
    import hashlib

    data = tmp_path / "data"
    shas = acme_outbox(data)
    killed_child(ACROSS_DISKS + KILLED_BETWEEN_A_HOLDS_NOTE_AND_ITS_STORE, data)
    killed_child(ACROSS_DISKS + KILLED_HALFWAY_THROUGH_A_SAMPLES_COPY_BACK, data)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        (one,) = ob.stats()["held"]["files"]
        assert one["records"] == 300
        kept = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in Path(one["file"] + ".samples").iterdir()
        }
        # formerly the next start took the cut-short copy in samples/ for the moved file and removed the whole one in
        # outbox-held/: the store was held again without that sample whole
        assert set(kept) == shas and all(name == digest for name, digest in kept.items())
    finally:
        ob.close()


def test_stray_held_notes_cost_one_listing_and_one_read_of_the_store_at_start_and_those_naming_nothing_go(
    tmp_path, monkeypatch, caplog
):
    import os

    data = tmp_path / "data"
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    ob.append("result", {"i": 1})
    ob.close()
    held = data / "outbox-held"
    held.mkdir()
    # 300 notes of held stores deleted or moved out by hand: the first 150 with a sample left, the others naming
    # nothing any more
    for i in range(300):
        name = f"outbox.db.acme-{1000 + i}"
        (held / f"{name}.json").write_text(json.dumps({"tenant": "acme", "agent": "gw1", "epoch": 1000 + i}))
        if i < 150:
            (held / f"{name}.samples").mkdir()
            (held / f"{name}.samples" / ("ab" * 32)).write_bytes(b"png")
    listings, reads = [], []
    real_scandir, real_listdir, real_connect = os.scandir, os.listdir, sqlite3.connect

    def scandir(path="."):
        listings.append(Path(path))
        return real_scandir(path)

    def listdir(path="."):
        listings.append(Path(path))
        return real_listdir(path)

    def connect(database, *args, **kw):
        if "mode=ro" in str(database):
            reads.append(database)
        return real_connect(database, *args, **kw)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(sqlite3, "connect", connect)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        monkeypatch.undo()
        # formerly each note listed outbox-held/ again and opened the store at the path: 300 listings and 300 reads
        # at every start (1,000 such notes: 7-32 s on a gateway), and the 150 notes naming nothing stayed for good
        assert len([p for p in listings if p == held]) <= 3
        assert len(reads) <= 2
        left = sorted(p.name for p in held.glob("*.json"))
        assert left == sorted(f"outbox.db.acme-{1000 + i}.json" for i in range(150))
        assert all((held / f"outbox.db.acme-{1000 + i}.samples" / ("ab" * 32)).exists() for i in range(150))
        assert "outbox.db.acme-1299.json named a held store that is no longer there" in caplog.text
        assert ob.stats()["held"]["files"] == [] and not ob.held_dropped
    finally:
        ob.close()


# a WAL found alone at the path is moved aside, and the start is killed right after that move
KILLED_AFTER_A_LONE_WALS_MOVE = """
real_move_store = store.Outbox._move_store


def move_store(self, src, dst):
    moved = real_move_store(self, src, dst)
    if ".lone-" in dst.name:
        power_cut()
    return moved


store.Outbox._move_store = move_store
store.Outbox(OutboxSettings(), sys.argv[1]).open()
"""


def test_a_kill_right_after_a_lone_wal_is_moved_aside_still_tells_it(tmp_path):
    live = tmp_path / "live"
    ob = fill_outbox(live, 300)
    data = tmp_path / "data"
    (data / "outbox").mkdir(parents=True)
    shutil.copyfile(ob.path.with_name("outbox.db-wal"), data / "outbox" / "outbox.db-wal")
    shutil.copyfile(live / "outbox-epoch.json", data / "outbox-epoch.json")
    ob.close()
    killed_child(KILLED_AFTER_A_LONE_WALS_MOVE, data)
    again = Outbox(SETTINGS, data)
    again.open()
    try:
        assert results(again) == list(range(1, 301))
        # formerly the records were copied at this start and nothing told them: no outbox_corrupt event
        told = [e for e in events(again) if e["kind"] == "outbox_corrupt"]
        assert len(told) == 1 and told[0]["moved_to"].endswith("-wal") and told[0]["salvaged"] == 300
        assert not (data / "outbox-untold").exists()
    finally:
        again.close()


# a store found corrupt at start is moved aside and copied whole; the start is killed once the copy's marker is gone,
# before its outbox_corrupt event is committed
KILLED_ONCE_A_COPY_AT_START_IS_DONE = """
real_write = store.Outbox._write_salvaging


def write(self, job):
    real_write(self, job)
    if job is None:
        power_cut()


store.Outbox._write_salvaging = write
store.Outbox(OutboxSettings(), sys.argv[1]).open()
"""


def test_a_kill_once_a_copy_at_start_is_done_still_tells_its_renewal_once(tmp_path):
    data = tmp_path / "data"
    fill_outbox(data, 1000).close()
    damage_index(data / "outbox" / "outbox.db")
    killed_child(KILLED_ONCE_A_COPY_AT_START_IS_DONE, data)
    ob = Outbox(SETTINGS, data)
    ob.open()
    try:
        assert results(ob) == list(range(1, 1001))
        # formerly the event was lost with the process: the cloud saw a new epoch and no cause
        told = [e for e in events(ob) if e["kind"] == "outbox_corrupt"]
        assert len(told) == 1 and told[0]["salvaged"] == 1000 and told[0]["epoch"] == ob.epoch
        assert not (data / "outbox-untold").exists()
    finally:
        ob.close()
    ob = Outbox(SETTINGS, data)
    ob.open()
    try:  # told once: a later start tells nothing again
        assert len([e for e in events(ob) if e["kind"] == "outbox_corrupt"]) == 1
    finally:
        ob.close()
