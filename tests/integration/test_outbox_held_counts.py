"""Held and corrupt stores whose owner or records were told wrong: a store made before the gateway had a certificate,
a former tenant's corrupt store or lone WAL, a held store taken out by hand and put back, copies a kill cut short in
outbox-held/. Real SQLite files, real child processes killed with SIGKILL. Every count told is true, and a tenant is
never told of another's store."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from tests.support.outbox_kills import damage_index, killed_child

SETTINGS = OutboxSettings(commit_interval_ms=10, retention={})


def filled(data: Path, n: int, owner: tuple[str, str] | None, samples: int = 0) -> Outbox:
    """An outbox of ``data`` made under ``owner`` (None: no certificate), ``n`` results appended and committed, the
    first ``samples`` of them with a sample; left open (its last pages in its WAL)."""
    ob = Outbox(SETTINGS, data, owner=owner)
    ob.open()
    for i in range(n):
        sample = bytes([i % 256]) * 4000 if i < samples else None
        ob.append("result", {"i": i, "pad": "p" * 200}, sample=sample, sample_ext=".png" if sample else "")
    ob.flush()
    return ob


def wal_alone(tmp_path: Path) -> Path:
    """A data folder whose outbox's path holds acme's WAL alone, with its 300 results (acme's database removed by hand,
    or a former release's move cut off), and acme's epoch file."""
    live = tmp_path / "live"
    ob = filled(live, 300, owner=("acme", "gw1"))  # open: every page of acme's store is in its WAL yet
    data = tmp_path / "data"
    (data / "outbox").mkdir(parents=True)
    shutil.copyfile(ob.path.with_name("outbox.db-wal"), data / "outbox" / "outbox.db-wal")
    shutil.copyfile(live / "outbox-epoch.json", data / "outbox-epoch.json")
    ob.close()
    return data


def events(ob: Outbox) -> list[dict]:
    ob.flush()  # (queued at open, committed by the writer)
    return [json.loads(r.payload) for r in ob.pending(10_000, 10**9) if r.kind == "event"]


def results(ob: Outbox) -> list[int]:
    return sorted(r.seq for r in ob.pending(10_000, 10**9) if r.kind == "result")


def test_a_corrupt_store_made_before_the_gateway_had_a_certificate_is_salvaged_and_told_as_its_own(tmp_path):
    data = tmp_path / "data"
    ob = filled(data, 300, owner=None)  # (no certificate yet: outbox-epoch.json names no tenant)
    epoch = ob.epoch
    ob.close()
    assert "tenant" not in json.loads((data / "outbox-epoch.json").read_text())
    for page in (
        "meta",
        "sqlite_autoindex_meta_1",
    ):  # (its owner unreadable; every record readable by its seq)
        damage_index(ob.path, page)
    ob = Outbox(SETTINGS, data, owner=("default", "gw1"))
    ob.open()
    try:
        # formerly held as outbox.db.unknown-<epoch> with "0 records", nothing salvaged, and no event to the cloud
        assert results(ob) == list(range(1, 301))
        assert ob.stats()["held"]["files"] == [] and not (data / "outbox-held").exists()
        (told,) = [e for e in events(ob) if e["kind"] == "outbox_corrupt"]
        assert told["salvaged"] == 300 and told["previous_epoch"] == epoch and told["epoch"] == ob.epoch
    finally:
        ob.close()


def test_records_salvaged_at_a_start_with_no_certificate_stay_the_former_tenants(tmp_path):
    # acme's store turns corrupt; the gateway starts once with no certificate (re-provisioning): its records are
    # salvaged into a new store; enrolled into beta, that store is corrupt too (meta readable, or not)
    for damage in ("records_by_kind_t", "meta"):
        data = tmp_path / damage
        ob = filled(data, 300, owner=("acme", "gw1"))
        ob.close()
        damage_index(ob.path)
        ob = Outbox(SETTINGS, data, owner=None)
        ob.open()
        assert len(results(ob)) == 300
        ob.close()
        # formerly neither the new store's meta nor outbox-epoch.json named an owner: beta got acme's records
        assert json.loads((data / "outbox-epoch.json").read_text())["tenant"] == "acme"
        for page in ("records_by_kind_t",) if damage != "meta" else ("meta", "sqlite_autoindex_meta_1"):
            damage_index(ob.path, page)
        ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
        ob.open()
        try:
            assert results(ob) == [] and [e for e in events(ob) if e["kind"] == "outbox_corrupt"] == []
            assert [(h["tenant"], h["records"]) for h in ob.held] == [("acme", 301)]  # (and acme's event)
        finally:
            ob.close()


def test_a_corrupt_store_whose_epoch_file_names_no_owner_from_before_owners_were_carried_is_held(tmp_path):
    # an epoch file with no owner written before a start with no certificate carried the owner it had: the store may
    # be a tenant's (acme's, salvaged at such a start); with its meta unreadable, whose it is cannot be told
    data = tmp_path / "data"
    ob = filled(data, 300, owner=None)
    ob.close()
    epoch_file = data / "outbox-epoch.json"
    epoch_file.write_text(json.dumps({"epoch": json.loads(epoch_file.read_text())["epoch"]}))
    for page in ("meta", "sqlite_autoindex_meta_1"):
        damage_index(ob.path, page)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        assert results(ob) == []  # (formerly salvaged into beta's outbox as this gateway's)
        assert [(h["tenant"], h["records"]) for h in ob.held] == [("", 300)]
    finally:
        ob.close()


# a start with no certificate salvages acme's corrupt store and is killed once it kept the event it owes, before
# committing it
KILLED_AFTER_A_START_WITH_NO_CERTIFICATE_KEPT_ITS_EVENT = """
cut_after(store.Outbox, "_keep_untold")
store.Outbox(OutboxSettings(), sys.argv[1], owner=None).open()
"""


def test_the_event_a_start_with_no_certificate_owes_for_a_tenants_store_is_never_told_to_the_next_tenant(
    tmp_path,
):
    data = tmp_path / "data"
    ob = filled(data, 300, owner=("acme", "gw1"))
    ob.close()
    damage_index(ob.path)
    killed_child(KILLED_AFTER_A_START_WITH_NO_CERTIFICATE_KEPT_ITS_EVENT, data)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))  # enrolled into beta
    ob.open()
    try:
        # formerly the kept event named no tenant and went into beta's outbox: "salvaged 300", acme's epoch
        assert [e for e in events(ob) if e["kind"] == "outbox_corrupt"] == [] and results(ob) == []
    finally:
        ob.close()


# a start as beta holds acme's corrupt store and is killed right after the hold, before its salvage marker is dropped
KILLED_AFTER_A_FORMER_TENANTS_CORRUPT_STORE_IS_HELD = """
cut_after(store.Outbox, "_hold")
store.Outbox(OutboxSettings(), sys.argv[1], owner=("beta", "gw1")).open()
"""


def test_a_kill_after_a_former_tenants_corrupt_store_is_held_tells_the_new_tenant_nothing(tmp_path):
    data = tmp_path / "data"
    ob = filled(data, 300, owner=("acme", "gw1"))
    ob.close()
    damage_index(ob.path)
    killed_child(KILLED_AFTER_A_FORMER_TENANTS_CORRUPT_STORE_IS_HELD, data)
    for _start in range(2):
        ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
        ob.open()
        try:
            # formerly an outbox_corrupt event, "salvaged 0", naming acme's epoch, in beta's outbox (to its cloud)
            assert events(ob) == [] and results(ob) == []
            assert [(h["tenant"], h["records"]) for h in ob.held] == [("acme", 300)]
        finally:
            ob.close()


# a start as beta finds acme's store corrupt, moves it aside, makes beta's store (the epoch file now beta's) and is
# killed before it holds acme's
KILLED_BEFORE_A_FORMER_TENANTS_CORRUPT_STORE_IS_HELD = """
cut_before(store.Outbox, "_hold")
store.Outbox(OutboxSettings(), sys.argv[1], owner=("beta", "gw1")).open()
"""


def test_a_start_with_no_certificate_after_a_killed_tenant_move_holds_the_former_tenants_store(tmp_path):
    data = tmp_path / "data"
    ob = filled(data, 300, owner=("acme", "gw1"), samples=5)
    ob.close()
    damage_index(ob.path)
    killed_child(KILLED_BEFORE_A_FORMER_TENANTS_CORRUPT_STORE_IS_HELD, data)
    for owner in (
        None,
        ("beta", "gw1"),
        ("beta", "gw1"),
    ):  # (no cloud: section, then beta's certificate again)
        ob = Outbox(SETTINGS, data, owner=owner)
        ob.open()
        try:
            # formerly the start with no certificate copied acme's 300 records and its outbox_corrupt event into
            # beta's store (the owner it carries), and beta's next start sent them to beta's cloud
            assert events(ob) == [] and results(ob) == []
            (one,) = ob.held
            assert (one["tenant"], one["records"]) == ("acme", 300)
            assert len(list(Path(one["file"] + ".samples").iterdir())) == 5
            # held by the start with no certificate: its note says by which owner it was judged (formerly "the
            # gateway's certificate then named tenant ?")
            assert one["why"].endswith("; the gateway had no certificate, its outbox carried tenant beta")
        finally:
            ob.close()


@pytest.mark.parametrize("first", [("beta", "gw1"), None], ids=["beta", "no-certificate"])
def test_a_former_tenants_store_carried_into_a_renewal_at_start_is_held_not_copied(tmp_path, first):
    # beta's start is killed before it holds acme's corrupt store (its marker names acme's file, moved aside); beta's
    # own fresh store is then found corrupt too (the same failing card): the renewal at the next start carries acme's
    # file from the marker
    data = tmp_path / "data"
    ob = filled(data, 300, owner=("acme", "gw1"), samples=5)
    ob.close()
    damage_index(ob.path)
    killed_child(KILLED_BEFORE_A_FORMER_TENANTS_CORRUPT_STORE_IS_HELD, data)
    damage_index(data / "outbox" / "outbox.db")
    for owner in (first, ("beta", "gw1")):
        ob = Outbox(SETTINGS, data, owner=owner)
        ob.open()
        try:
            # formerly acme's 300 results and its 5 samples were copied into beta's renewed store, told by an
            # outbox_corrupt event "salvaged 300", and beta sent them all to its cloud
            assert results(ob) == []
            assert [e.get("salvaged") for e in events(ob) if e["kind"] == "outbox_corrupt"] in ([], [0])
            (one,) = ob.held
            assert (one["tenant"], one["records"]) == ("acme", 300)
            assert len(list(Path(one["file"] + ".samples").iterdir())) == 5
        finally:
            ob.close()


@pytest.mark.parametrize("beta_damaged", [True, False], ids=["beta-store-corrupt", "beta-store-healthy"])
def test_a_former_tenants_store_whose_meta_is_unreadable_stays_held_after_a_killed_tenant_move(
    tmp_path, beta_damaged
):
    # acme's corrupt store has its meta page among the damaged ones: its owner is known only from the epoch file, which
    # beta's start killed before the hold has already rewritten for beta's new store
    data = tmp_path / "data"
    ob = filled(data, 300, owner=("acme", "gw1"))
    ob.close()
    damage_index(ob.path, "meta")
    killed_child(KILLED_BEFORE_A_FORMER_TENANTS_CORRUPT_STORE_IS_HELD, data)
    if beta_damaged:
        damage_index(data / "outbox" / "outbox.db")
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        # formerly acme's file was judged beta's by that epoch file: its 300 results and an outbox_corrupt event
        # "salvaged 300" were copied into beta's outbox and sent to beta's cloud
        assert results(ob) == []
        assert [e.get("salvaged") for e in events(ob) if e["kind"] == "outbox_corrupt"] in ([], [0])
        (one,) = ob.held
        assert (one["tenant"], one["records"]) == ("acme", 300)
    finally:
        ob.close()


def test_a_former_tenants_corrupt_store_held_with_the_epoch_file_lost_names_its_own_epoch(tmp_path):
    data = tmp_path / "data"
    ob = filled(data, 300, owner=("acme", "gw1"))
    epoch = ob.epoch
    ob.close()
    damage_index(ob.path)
    (data / "outbox-epoch.json").unlink()  # (a data folder restored without it)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        # formerly held as outbox.db.acme-0, epoch 0: the epoch file's epoch, not the store's own
        (one,) = ob.held
        assert (one["tenant"], one["epoch"], one["records"]) == ("acme", epoch, 300)
        assert Path(one["file"]).name == f"outbox.db.acme-{epoch}"
    finally:
        ob.close()


def test_a_held_corrupt_stores_count_cut_by_its_time_limit_is_told_as_at_least(tmp_path, monkeypatch, caplog):
    # acme's corrupt store held at beta's start; counting its readable records takes longer than the limit (a store
    # of millions of records on a busy gateway): here the limit is 0 s, so nothing of it is read in time
    from edge_agent.outbox import store

    data = tmp_path / "data"
    ob = filled(data, 300, owner=("acme", "gw1"))
    ob.close()
    damage_index(ob.path)
    monkeypatch.setattr(store, "HELD_COUNT_S", 0.0, raising=False)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    caplog.set_level("WARNING", logger=store.log.name)
    ob.open()
    try:
        # formerly the partial number was told as the store's count: here "0 records", for 300 readable
        held = ob.stats()["held"]
        (one,) = held["files"]
        assert (
            one["tenant"] == "acme" and one["records_at_least"] is True and held["records_at_least"] is True
        )
        note = json.loads(Path(one["file"] + ".json").read_text())
        assert note["records_at_least"] is True
        assert f"at least {one['records']} records" in caplog.text
    finally:
        ob.close()
    # the next start has the time to count it: counted again, in full (formerly "at least 0" for good)
    monkeypatch.setattr(store, "HELD_COUNT_S", 10.0, raising=False)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        (one,) = ob.stats()["held"]["files"]
        assert (one["records"], one["records_at_least"]) == (300, False)
        assert "records_at_least" not in json.loads(Path(one["file"] + ".json").read_text())
    finally:
        ob.close()
    # counted in full: nothing says "at least"
    monkeypatch.setattr(store, "HELD_COUNT_S", 10.0, raising=False)
    data = tmp_path / "whole"
    ob = filled(data, 300, owner=("acme", "gw1"))
    ob.close()
    damage_index(ob.path)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        (one,) = ob.stats()["held"]["files"]
        assert (one["records"], one["records_at_least"]) == (300, False)
    finally:
        ob.close()


def test_a_held_store_whose_count_stays_cut_is_dropped_for_space_as_at_least(tmp_path, monkeypatch):
    # acme's corrupt store held at beta's start, its count cut by the time limit at every start (here 0 s); then the
    # gateway moves to gamma with a small budget: holding beta's store puts outbox-held/ past its bound, and acme's,
    # the oldest, is removed
    from edge_agent.outbox import store

    data = tmp_path / "data"
    ob = filled(data, 1000, owner=("acme", "gw1"))
    ob.close()
    damage_index(ob.path)
    monkeypatch.setattr(store, "HELD_COUNT_S", 0.0, raising=False)
    ob = filled(data, 10, owner=("beta", "gw1"))
    ob.close()
    ob = Outbox(
        OutboxSettings(commit_interval_ms=10, retention={}, max_bytes=128 * 1024),
        data,
        owner=("gamma", "gw1"),
    )
    ob.open()
    try:
        (drop,) = [e for e in events(ob) if e["kind"] == "outbox_budget" and e.get("cause") == "held"]
        # formerly told as an exact "dropped 0" of a store of 1000 readable records
        assert (drop["dropped"], drop.get("dropped_at_least")) == (0, True)
        assert [h["tenant"] for h in ob.held] == ["beta"]
        # /status says so too: formerly "dropped: {}" alone, as if nothing had been removed
        assert ob.stats()["held"]["dropped_at_least"] is True
    finally:
        ob.close()


def count_cut_after(monkeypatch, n: int) -> list[list[tuple[int, int]]]:
    """Each count of a held store's records cut by its time limit after ``n`` ranges of seqs (a store too big to
    count in 10 s); returns the ranges each count read, a list per count."""
    from edge_agent.outbox import store

    counts: list[list[tuple[int, int]]] = []
    real = store._SeqRanges.rows

    def rows(self, go_on, fatal=None):
        if not self.sql.startswith("SELECT kind, sample_sha256 "):  # (a salvage's read: not a count)
            yield from real(self, go_on, fatal)
            return
        read: list[tuple[int, int]] = []
        counts.append(read)
        for a, b, got in real(self, lambda: len(read) < n and go_on(), fatal):
            read.append((a, b))
            yield a, b, got

    monkeypatch.setattr(store._SeqRanges, "rows", rows)
    return counts


def test_a_held_stores_count_cut_by_its_time_limit_goes_on_at_the_next_starts_from_where_it_got(
    tmp_path, monkeypatch
):
    # acme's corrupt store of 3000 records held at beta's start, each count of it cut after 5 ranges of 256 seqs
    data = tmp_path / "data"
    ob = filled(data, 3000, owner=("acme", "gw1"))
    ob.close()
    damage_index(ob.path)
    counts = count_cut_after(monkeypatch, 5)
    seen: list[tuple[int, int]] = []
    for start in (1, 2, 3):
        counts.clear()
        ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
        ob.open()
        try:
            (one,) = ob.stats()["held"]["files"]
        finally:
            ob.close()
        # one count a start, each going on from where the last one got: formerly the start that held it counted
        # it twice (the hold's count, then the recount of every cut count), and each later start counted it again
        # from its first seq, cut at the same place (a store too big for 10 s: "at least N" for good, and 10 s
        # more at every start)
        (read,) = counts
        assert read and not set(read) & set(seen), (start, read, seen)
        assert read[0][0] == (seen[-1][1] + 1 if seen else 1)
        seen += read
        if start < 3:
            assert (one["records"], one["records_at_least"]) == (256 * 5 * start, True)
    assert (one["records"], one["records_at_least"]) == (3000, False)
    note = json.loads(Path(one["file"] + ".json").read_text())
    assert note["by_kind"] == {"result": 3000} and "records_at_least" not in note and "counted_to" not in note
    # counted in full: the next start counts it no more
    counts.clear()
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    ob.close()
    assert counts == []


def test_a_held_store_cut_short_put_back_whose_count_was_cut_is_counted_in_full_at_the_next_start(
    tmp_path, monkeypatch
):
    data = tmp_path / "data"
    filled(data, 3000, owner=("acme", "gw1")).close()
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()  # (acme's store held)
    ob.close()
    held = data / "outbox-held"
    (store,) = [p for p in held.iterdir() if p.name.startswith("outbox.db.") and "." not in p.name[10:]]
    for extra in held.iterdir():  # (taken out with its note; the copy put back is cut short)
        if extra != store:
            shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    with open(store, "r+b") as f:
        f.truncate(store.stat().st_size * 2 // 3)
    size = store.stat().st_size
    from edge_agent.outbox import store as store_mod

    real = store_mod._SeqRanges.rows
    count_cut_after(monkeypatch, 4)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()  # (noted again, its count cut)
    try:
        (one,) = ob.stats()["held"]["files"]
        assert (one["records"], one["records_at_least"]) == (1024, True)
    finally:
        ob.close()
    monkeypatch.setattr(store_mod._SeqRanges, "rows", real)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        # formerly the recount read the file as put back, unpadded: "0 records, partly", and "at least 1024" for good
        (one,) = ob.stats()["held"]["files"]
        assert one["records"] >= 1900 and one["records_at_least"] is False
        assert store.stat().st_size == size  # (given back the size it was put back with)
    finally:
        ob.close()


# a start as beta holds acme's corrupt store and is killed while the store's sample files move (3 of 6 moved)
KILLED_WHILE_A_CORRUPT_STORES_SAMPLES_MOVE = """
real_move, moved = store._move_file, [0]


def move(*args, **kw):
    moved[0] += 1
    if moved[0] == 7:  # (the first 3: the store moved aside into outbox-corrupt/)
        power_cut()
    return real_move(*args, **kw)


store._move_file = move
store.Outbox(OutboxSettings(), sys.argv[1], owner=("beta", "gw1")).open()
"""


def test_a_kill_while_a_former_tenants_corrupt_stores_samples_move_keeps_them_with_the_store(tmp_path):
    data = tmp_path / "data"
    ob = filled(data, 60, owner=("acme", "gw1"), samples=6)
    epoch = ob.epoch
    ob.close()
    damage_index(ob.path)
    killed_child(KILLED_WHILE_A_CORRUPT_STORES_SAMPLES_MOVE, data)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        # formerly two notes, each "acme, 60 records": one with no store and 3 samples kept for good, one with the
        # store and the other 3
        held = data / "outbox-held"
        (one,) = ob.stats()["held"]["files"]
        assert (one["tenant"], one["records"]) == ("acme", 60)
        # formerly held again under beta's epoch (the epoch file's at that start): "outbox.db.acme-<beta's epoch>"
        assert one["epoch"] == epoch and Path(one["file"]).name == f"outbox.db.acme-{epoch}"
        assert sorted(p.name for p in held.glob("*.json")) == [Path(one["file"]).name + ".json"]
        assert len(list(Path(one["file"] + ".samples").iterdir())) == 6
        assert results(ob) == [] and events(ob) == []
    finally:
        ob.close()


# outbox-held/ on another file system than the outbox: a move into it is a copy then a removal (a rename fails with
# EXDEV); a start as beta holds acme's store and is killed halfway through the copy of the store's database
KILLED_HALFWAY_THROUGH_A_HELD_STORES_COPY = """
import errno, shutil
held = os.path.join(sys.argv[1], "outbox-held")
real_replace, real_copy = os.replace, shutil.copyfile


def replace(src, dst, *args, **kw):
    if str(src).startswith(held) != str(dst).startswith(held):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    return real_replace(src, dst, *args, **kw)


def copyfile(src, dst, *args, **kw):
    if os.path.basename(dst).startswith(".outbox.db.") and os.path.basename(dst).endswith(".copying"):
        body = open(src, "rb").read()
        with open(dst, "wb") as f:
            f.write(body[: len(body) // 2])
        power_cut()
    return real_copy(src, dst, *args, **kw)


os.replace, shutil.copyfile = replace, copyfile
store.Outbox(OutboxSettings(), sys.argv[1], owner=("beta", "gw1")).open()
"""


def test_a_copy_into_outbox_held_cut_by_a_kill_is_swept_at_the_next_start(tmp_path, caplog):
    data = tmp_path / "data"
    filled(data, 300, owner=("acme", "gw1")).close()
    killed_child(KILLED_HALFWAY_THROUGH_A_HELD_STORES_COPY, data)
    held = data / "outbox-held"
    (part,) = held.glob(".*.copying")
    # the next start finds outbox-held/ on the outbox's disk (mounted back): the move completes by a rename
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        (one,) = ob.stats()["held"]["files"]
        assert one["tenant"] == "acme" and one["records"] == 300
        kept = sqlite3.connect(one["file"])
        assert kept.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 300
        kept.close()
        # formerly the cut-short copy stayed in outbox-held/ for good: outside the folder's bound, never removed
        assert list(held.glob(".*.copying")) == []
        assert f"{part}" in caplog.text and "removed" in caplog.text
    finally:
        ob.close()


def test_a_former_tenants_corrupt_store_is_held_with_its_readable_records_counted_and_its_samples(
    tmp_path, caplog
):
    data = tmp_path / "data"
    ob = filled(data, 300, owner=("acme", "gw1"), samples=20)
    shas = {p.name for p in ob.samples_dir.iterdir()}
    ob.close()
    damage_index(ob.path)  # (every row still readable by its seq; any change meets the damage)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    caplog.set_level("ERROR", logger="edge_agent.outbox.store")
    ob.open()
    try:
        # formerly its ERROR line said "a fresh outbox starts ... with the 0 records still readable in it"
        (said,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert (
            "; 300 records still readable in it are held, not salvaged" in said and " 0 records" not in said
        )
        # formerly its note said 0 records: /status, the start's WARNING and a later drop by the bound counted none
        (one,) = ob.held  # (its note)
        assert one["tenant"] == "acme" and one["corrupt"] is True
        assert one["records"] == 300 and one["by_kind"] == {"result": 300}
        assert ob.stats()["held"]["records"] == 300
        assert results(ob) == [] and events(ob) == []  # (nothing of it told to beta)
        # formerly its samples stayed in samples/, where the same start removed them as named by no record
        assert len(shas) == 20 and {p.name for p in Path(one["file"] + ".samples").iterdir()} == shas
        assert list(ob.samples_dir.iterdir()) == []
    finally:
        ob.close()


def test_a_former_tenants_corrupt_store_cut_short_is_held_with_its_readable_records_counted_and_its_samples(
    tmp_path, caplog
):
    data = tmp_path / "data"
    ob = filled(data, 3000, owner=("acme", "gw1"), samples=20)
    shas = {p.name for p in ob.samples_dir.iterdir()}
    ob.close()
    con = sqlite3.connect(ob.path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    with open(ob.path, "r+b") as f:  # (a power loss while the file grew, a bad copy: cut to 2/3 of its size)
        f.truncate(ob.path.stat().st_size * 2 // 3)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    caplog.set_level("ERROR", logger="edge_agent.outbox.store")
    ob.open()
    try:
        # formerly "0 records still readable in it are held" (the file read as it was cut, unlike a salvage, which
        # pads it and reads ~1,970 of them), and the same start removed acme's 20 samples as named by no record
        (one,) = ob.held
        assert one["tenant"] == "acme" and one["records"] >= 1900
        # every record readable in it, looked up one by one (formerly the last one before the cut was missed); a row
        # the zeros read back with a kind of NUL bytes is none (formerly counted as a record of that kind)
        con = sqlite3.connect(f"file:{one['file']}?mode=ro", uri=True)
        readable = 0
        for seq in range(1, 3001):
            try:
                row = con.execute("SELECT kind FROM records WHERE seq = ?", (seq,)).fetchone()
            except sqlite3.DatabaseError:
                continue
            readable += row is not None and row[0] == "result"
        con.close()
        assert one["records"] == readable
        (said,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert f"; {one['records']} records still readable in it are held" in said
        assert {p.name for p in Path(one["file"] + ".samples").iterdir()} == shas
        assert list(ob.samples_dir.iterdir()) == [] and results(ob) == [] and events(ob) == []
    finally:
        ob.close()


def test_a_former_tenants_store_none_of_whose_records_can_be_read_is_held_as_at_least_0_with_every_sample(
    tmp_path,
):
    data = tmp_path / "data"
    ob = filled(data, 300, owner=("acme", "gw1"), samples=20)
    shas = {p.name for p in ob.samples_dir.iterdir()}
    ob.close()
    con = sqlite3.connect(ob.path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    with open(ob.path, "r+b") as f:  # (its first page, the schema's, overwritten: nothing of it can be read)
        f.write(b"\0" * 4096)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))  # (whose it is: acme's, as outbox-epoch.json records)
    ob.open()
    try:
        # formerly held as exactly "0 records" and the same start removed acme's 20 samples as named by no record
        (one,) = ob.held
        assert (one["tenant"], one["records"], one.get("records_at_least")) == ("acme", 0, True)
        assert {p.name for p in Path(one["file"] + ".samples").iterdir()} == shas
        assert list(ob.samples_dir.iterdir()) == [] and results(ob) == [] and events(ob) == []
    finally:
        ob.close()


def test_a_held_store_with_no_sample_taken_out_across_a_start_and_put_back_is_held_again(tmp_path):
    data = tmp_path / "data"
    filled(data, 300, owner=("acme", "gw1")).close()
    Outbox(SETTINGS, data, owner=("beta", "gw1")).open()  # (acme's store held, then the outbox closed below)
    held = data / "outbox-held"
    (store,) = [p for p in held.iterdir() if not p.name.endswith(".json")]
    store.rename(tmp_path / "exported.db")  # (taken out to export it with sqlite3)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    ob.close()
    (tmp_path / "exported.db").rename(store)
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        # formerly its note was gone with it (naming nothing at that start) and it was never listed again: not in
        # /status, outside outbox-held/'s bound
        (one,) = ob.stats()["held"]["files"]
        assert one["file"] == str(store) and one["tenant"] == "acme" and one["records"] == 300
        assert one["epoch"] == int(store.name.rsplit("-", 1)[1]) and ob.stats()["held"]["by_kind"] == {
            "result": 300
        }
    finally:
        ob.close()


def test_a_held_store_cut_short_and_put_back_is_counted_without_changing_the_file_put_back(tmp_path):
    import hashlib

    data = tmp_path / "data"
    filled(data, 3000, owner=("acme", "gw1")).close()
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()  # (acme's store held)
    ob.close()
    held = data / "outbox-held"
    (store,) = [p for p in held.iterdir() if p.name.startswith("outbox.db.") and "." not in p.name[10:]]
    for (
        extra
    ) in held.iterdir():  # (taken out to export it, and its note with it; the copy put back is cut short)
        if extra != store:
            shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
    with open(store, "r+b") as f:
        f.truncate(store.stat().st_size * 2 // 3)
    put_back = hashlib.sha256(store.read_bytes()).hexdigest()
    ob = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    ob.open()
    try:
        (one,) = ob.stats()["held"]["files"]
        assert one["file"] == str(store) and one["records"] >= 1900  # (read as a salvage reads it: padded)
        # the admin's file as it was put back: formerly left extended with zeros to the size its header states
        assert hashlib.sha256(store.read_bytes()).hexdigest() == put_back
    finally:
        ob.close()


def test_a_wal_found_alone_of_the_former_tenant_is_held_and_never_told_to_the_new_one(tmp_path):
    data = wal_alone(tmp_path)
    again = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    again.open()
    try:
        # formerly beta was told an outbox_corrupt event of it (previous_epoch acme's, no tenant named, 0 records)
        assert events(again) == [] and results(again) == []
        (one,) = again.held
        assert one["tenant"] == "acme" and one["records"] == 300
        assert not (data / "outbox-untold").exists()
    finally:
        again.close()
    again = Outbox(SETTINGS, data, owner=("beta", "gw1"))
    again.open()
    try:  # nor at a later start
        assert events(again) == [] and len(again.held) == 1
    finally:
        again.close()


# a start finds acme's own store corrupt and copies its readable records into the new epoch; the power is cut once the
# copy is done and before its outbox_corrupt event is kept ("done"), or as the copy has read 150 of them ("midway")
KILLED_IN_A_SALVAGE_AT_START = """
store.SALVAGE_CHUNK = 50
if sys.argv[3] == "done":
    real_copy = store.Outbox._copy_jobs

    def copy(self, *args, **kw):
        real_copy(self, *args, **kw)
        power_cut()

    store.Outbox._copy_jobs = copy
else:
    real_intact, read = store._intact, [0]

    def intact(row):
        read[0] += 1
        if read[0] == 150:
            power_cut()
        return real_intact(row)

    store._intact = intact
store.Outbox(OutboxSettings(), sys.argv[1], owner=("acme", "gw1")).open()
"""


@pytest.mark.parametrize("when", ["done", "midway"])
def test_a_kill_during_a_salvage_at_start_tells_every_record_salvaged(tmp_path, when):
    data = tmp_path / "data"
    ob = filled(data, 300, owner=("acme", "gw1"))
    epoch = ob.epoch
    ob.close()
    damage_index(ob.path)
    killed_child(KILLED_IN_A_SALVAGE_AT_START, data, when)
    for start in range(2):
        ob = Outbox(SETTINGS, data, owner=("acme", "gw1"))
        ob.open()
        try:
            assert results(ob) == list(range(1, 301))
            # formerly "salvaged 0" ("done") or 150 ("midway"): the count of what this start copied, not of the copy
            told = [
                (e["kind"], e["salvaged"], e["salvaged_by_kind"], e["previous_epoch"]) for e in events(ob)
            ]
            assert told == [("outbox_corrupt", 300, {"result": 300}, epoch)], start
        finally:
            ob.close()


# a start finds acme's WAL alone at the outbox's path and is killed as it moves it aside (its base and marker made, the
# WAL not moved yet); the gateway is enrolled into beta since, or still acme's
KILLED_AS_A_WAL_FOUND_ALONE_MOVES_ASIDE = """
cut_before(store.Outbox, "_move_store", lambda self, src, dst, *a: str(dst).split("/")[-1].startswith("outbox.db.lone-"))
store.Outbox(OutboxSettings(), sys.argv[1], owner=(sys.argv[3], "gw1")).open()
"""


@pytest.mark.parametrize("tenant", ["beta", "acme"])
def test_a_kill_as_a_wal_found_alone_moves_aside_places_it_once(tmp_path, tenant):
    data = wal_alone(tmp_path)
    killed_child(KILLED_AS_A_WAL_FOUND_ALONE_MOVES_ASIDE, data, tenant)
    for start in range(2):
        again = Outbox(SETTINGS, data, owner=(tenant, "gw1"))
        again.open()
        try:
            if tenant == "beta":
                # formerly the start made a second base for the WAL and held both: acme's 300 records and an empty
                # store, also as acme's (two files in /status and the bound, one of them nothing)
                assert [(h["tenant"], h["records"]) for h in again.held] == [("acme", 300)], start
                assert events(again) == [] and results(again) == []
            else:
                assert results(again) == list(range(1, 301)) and again.held == []
                told = [(e["kind"], e["salvaged"]) for e in events(again)]
                assert told == [("outbox_corrupt", 300)], start
        finally:
            again.close()


def test_the_gateway_back_to_its_tenant_after_a_killed_tenant_move_sends_its_own_records(tmp_path, caplog):
    # a start as beta finds acme's WAL alone at the outbox's path, places it aside, makes beta's store (its meta
    # beta's, the marker naming acme's file) and is killed before it holds acme's
    data = wal_alone(tmp_path)
    killed_child(KILLED_BEFORE_A_FORMER_TENANTS_CORRUPT_STORE_IS_HELD, data)
    caplog.set_level("ERROR", logger="edge_agent.outbox.store")
    for start in range(2):  # (the certificate names acme again: a swap reverted)
        ob = Outbox(SETTINGS, data, owner=("acme", "gw1"))
        ob.open()
        try:
            # formerly acme's 300 records were held as tenant 'beta''s store, never sent to acme (and named beta
            # in /status, its WARNING and its held note)
            assert results(ob) == list(range(1, 301)), start
            assert [h["tenant"] for h in ob.held if h["records"]] == [], start
            # its outbox_corrupt event (kept by beta's start before it judged whose the WAL was) told once: formerly
            # never, as another tenant's
            told = [(e["kind"], e["salvaged"]) for e in events(ob) if e["kind"] == "outbox_corrupt"]
            assert told == [("outbox_corrupt", 300)], start
        finally:
            ob.close()
    # said as what it was (formerly "the salvage ... was cut off ...; resumed: 300 more records copied": no record of
    # it had been copied into acme's store before)
    assert "resumed:" not in caplog.text
    assert (
        "was being taken over by another tenant's start that was cut off (the agent killed): 300 records"
        in (caplog.text)
    )


# acme's store turns corrupt while the agent runs; its renewal is killed once it moved the store aside (the marker
# naming the store's numbering, 100)
ACMES_RENEWAL_KILLED_AFTER_THE_MOVE = """
ob, acked = filled(sys.argv[1], 100, owner=("acme", "gw1"))
cut_after(store.Outbox, "_move_aside")
renew_by_ack(ob, acked[:1])
"""


@pytest.mark.parametrize("last_seq", [None, 2**63 - 1], ids=["as-written", "edited-to-the-top"])
def test_the_gateway_back_to_its_tenant_after_a_killed_tenant_move_sends_its_running_renewals_records(
    tmp_path, last_seq
):
    """Then beta's start is killed before it holds acme's file, and the certificate names acme again: acme's start
    made its store in a new epoch without its numbering, and the copy was refused ("last_seq 100 outside 0..0"): the
    99 records never sent, the outbox_corrupt event saying salvaged 0. A marker edited to name the top seq numbered
    the store there, and every start raised OverflowError: now refused, the agent started."""
    data = killed_child(ACMES_RENEWAL_KILLED_AFTER_THE_MOVE, tmp_path / "data")
    killed_child(KILLED_BEFORE_A_FORMER_TENANTS_CORRUPT_STORE_IS_HELD, data)
    if last_seq is not None:
        mark = json.loads((data / "outbox-salvaging").read_text())
        (data / "outbox-salvaging").write_text(json.dumps({**mark, "last_seq": last_seq}))
    for _ in range(2 if last_seq else 1):
        ob = Outbox(SETTINGS, data, owner=("acme", "gw1"))
        ob.open()
        try:
            if last_seq is None:
                assert results(ob) == list(range(2, 101))
                assert [(e["kind"], e["salvaged"]) for e in events(ob)] == [("outbox_corrupt", 99)]
            else:
                assert results(ob) == []
        finally:
            ob.close()


@pytest.mark.parametrize("beta_damaged", [False, True], ids=["beta-store-healthy", "beta-store-corrupt"])
def test_the_gateway_back_to_its_tenant_after_a_killed_tenant_move_sends_its_own_corrupt_stores_records(
    tmp_path, beta_damaged
):
    # acme's store is corrupt with its meta page among the damaged ones; beta's start is killed before it holds it (the
    # epoch file already names beta's new store); then the certificate names acme again (a swap reverted)
    data = tmp_path / "data"
    ob = filled(data, 300, owner=("acme", "gw1"))
    ob.close()
    damage_index(ob.path, "meta")
    killed_child(KILLED_BEFORE_A_FORMER_TENANTS_CORRUPT_STORE_IS_HELD, data)
    if beta_damaged:
        damage_index(data / "outbox" / "outbox.db")
    for start in range(2):
        ob = Outbox(SETTINGS, data, owner=("acme", "gw1"))
        ob.open()
        try:
            # formerly acme's 300 records were held as tenant 'beta''s store (its owner read from the epoch file,
            # by then beta's), never sent to acme
            assert len(results(ob)) == 300, start
            assert [(h["tenant"], h["records"]) for h in ob.held if h["records"]] == [], start
            told = [e["salvaged"] for e in events(ob) if e["kind"] == "outbox_corrupt"]
            assert told == [300], (start, told)
        finally:
            ob.close()


def test_held_stores_put_back_by_hand_are_counted_within_one_time_limit_for_the_start(tmp_path, monkeypatch):
    import time

    from edge_agent.outbox import store

    live = tmp_path / "live"
    ob = filled(live, 20, owner=("acme", "gw1"))
    epoch = ob.epoch
    ob.close()
    held = tmp_path / "data" / "outbox-held"
    held.mkdir(parents=True)
    for i in range(
        1, 6
    ):  # five held stores taken out by hand across a start and put back: no note beside them
        shutil.copyfile(ob.path, held / f"outbox.db.acme-{epoch}.{i}")

    class Clock:  # (``time`` as the outbox sees it; counting one store's records takes 4 s of it)
        ahead_s = 0.0

        def monotonic(self) -> float:
            return time.monotonic() + self.ahead_s

        def __getattr__(self, name: str):
            return getattr(time, name)

    clock, real = Clock(), store._readable

    def readable(src, limit_s=None, *more):
        got = real(src, limit_s, *more)
        clock.ahead_s += 4.0
        return got

    monkeypatch.setattr(store, "time", clock)
    monkeypatch.setattr(store, "_readable", readable)
    ob = Outbox(SETTINGS, tmp_path / "data", owner=("beta", "gw1"))
    ob.open()
    try:
        notes = {
            Path(h["file"]).name: (h["records"], h["records_at_least"]) for h in ob.stats()["held"]["files"]
        }
        # formerly each store had 10 s of its own (1000 stores put back: hours of a start); now 10 s for them all,
        # and a count the limit cut says "at least"
        assert [notes[f"outbox.db.acme-{epoch}.{i}"] for i in range(1, 6)] == [
            (20, False),
            (20, False),
            (20, False),
            (0, True),
            (0, True),
        ]
    finally:
        ob.close()


def test_a_kill_once_a_wal_found_alone_is_copied_tells_every_record_copied(tmp_path):
    data = wal_alone(tmp_path)
    killed_child(KILLED_IN_A_SALVAGE_AT_START, data, "done")  # (the WAL's records copied, then the kill)
    for start in range(2):
        again = Outbox(SETTINGS, data, owner=("acme", "gw1"))
        again.open()
        try:
            assert results(again) == list(range(1, 301))
            # formerly "salvaged 0": the count kept before the copy, and nothing copied at this start
            told = [(e["kind"], e["salvaged"], e["moved_to"].endswith("-wal")) for e in events(again)]
            assert told == [("outbox_corrupt", 300, True)], start
        finally:
            again.close()


# a start as beta finds acme's WAL alone, places it aside, makes beta's store (its meta: owner beta, the new epoch;
# the epoch file still acme's) and is killed before it holds acme's file
KILLED_BEFORE_A_FORMER_TENANTS_LONE_WAL_IS_HELD = """
cut_before(store.Outbox, "_hold_unfinished")
store.Outbox(OutboxSettings(), sys.argv[1], owner=("beta", "gw1")).open()
"""


@pytest.mark.parametrize("half_owner", [False, True])
def test_a_start_with_no_certificate_after_a_killed_tenant_move_holds_the_former_tenants_lone_wal(
    tmp_path, half_owner
):
    data = wal_alone(tmp_path)
    killed_child(KILLED_BEFORE_A_FORMER_TENANTS_LONE_WAL_IS_HELD, data)
    # the epoch file still acme's, the store at the path beta's
    assert json.loads((data / "outbox-epoch.json").read_text())["tenant"] == "acme"
    if (
        half_owner
    ):  # (as a former release left it when killed between the two owner rows: beta's tenant alone)
        con = sqlite3.connect(data / "outbox" / "outbox.db")
        con.execute("DELETE FROM meta WHERE key = 'owner_agent'")
        con.commit()
        con.close()
    # no cloud: section, then beta's certificate again
    for owner in (None, ("beta", "gw1"), ("beta", "gw1")):
        ob = Outbox(SETTINGS, data, owner=owner)
        ob.open()
        try:
            # formerly the start with no certificate judged the copy by the epoch file's tenant (acme) (or read a
            # tenant with no agent id as no owner, this gateway's) and copied acme's 300 records into the store at
            # the path, beta's, and beta's next start sent them to its cloud
            assert events(ob) == [] and results(ob) == [], owner
            assert [(h["tenant"], h["records"]) for h in ob.held] == [("acme", 300)], owner
        finally:
            ob.close()
