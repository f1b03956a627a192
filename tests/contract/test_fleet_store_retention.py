# ruff: noqa: F811  (the store fixture imported from test_fleet_store is a parameter here)
"""Retention (``Store.retire``, ``cloud-trainer serve --retain-days``) on every fleet store: records and sample rows
received before a time are deleted, each epoch's lowest seqs first, in bounded steps; sample bytes go once no row of
the tenant names them; the retired seqs are never a gap (a hand deletion made them ``unknown``), stats and usage say
what was retired. Rows are made old by setting their receipt time, no waiting."""

from __future__ import annotations

import json

import pytest

from cloud_trainer.blobs import LocalBlobStore
from tests.contract.test_fleet_store import _sample, postgres_server, postgres_url, rec, store  # noqa: F401


def _age(store, before_seq: int, received: float, epoch: int = 1) -> None:
    """Records of gw1 (tenant acme) up to ``before_seq`` of ``epoch`` as if received at ``received``."""
    with store._tx() as ex:
        ex(
            store.q(
                "UPDATE records SET received = ? WHERE tenant = 'acme' AND agent = 'gw1' AND epoch = ? AND seq <= ?"
            ),
            (received, epoch, before_seq),
        )
        # (their epochs' age as the store keeps it: set so, records are received at that time)
        ex(
            store.q(
                "UPDATE record_counts SET first_received = ? WHERE tenant = 'acme' AND agent = 'gw1' AND epoch = ? "
                "AND first_received > ?"
            ),
            (received, epoch, received),
        )


def _one_pass(store, before: float, blobs=None, most: int = 2000) -> dict:
    total, after = {"records": 0, "samples": 0, "blobs": 0}, None
    while True:
        step = store.retire(before, blobs=blobs, after=after, most=most)
        assert step["records"] <= most
        after = step.pop("after")
        total = {k: total[k] + step[k] for k in total}
        if after is None:
            return total


def test_retention_deletes_old_records_samples_and_unnamed_bytes_and_never_shows_them_lost(store, tmp_path):
    root = LocalBlobStore(tmp_path / "blobs")
    blobs = root.for_tenant("acme")
    a, b = {**_sample(3, b"a" * 50), "epoch": 1}, {**_sample(4, b"b" * 50), "epoch": 1}
    again = {**_sample(6, b"a" * 50), "epoch": 1}  # the same bytes as seq 3
    recs = [rec(1, epoch=1), rec(2, epoch=1), a, b, rec(5, epoch=1), again, rec(9, epoch=1), rec(10, epoch=1)]
    assert store.ingest("gw1", recs, tenant="acme", blobs=blobs)[1] == 8
    hole = [{"epoch": 1, "first": 7, "last": 8, "cause": "unknown"}]  # a real one: it stays
    assert store.gaps("gw1", tenant="acme") == hole
    _age(store, 4, 1000.0)
    # only what is that old, and only from the epoch's lowest seq on
    assert _one_pass(store, 2000.0, root) == {"records": 4, "samples": 2, "blobs": 1}
    assert blobs.exists(a["sample_sha256"]) and not blobs.exists(
        b["sample_sha256"]
    )  # seq 6 still names a's bytes
    assert store.gaps("gw1", tenant="acme") == hole
    st = store.stats("gw1", tenant="acme")
    assert st["records"] == 4 and st["samples"] == 1 and st["last_seq"] == 10
    assert st["retired"] == {"records": 4, "samples": 2, "received_to": 1000.0}
    assert store.usage()["acme"] == {
        "agents": 0,
        "records": 4,
        "samples": 1,
        "retired_records": 4,
        "retired_samples": 2,
    }
    assert store.has_sample(a["sample_sha256"], tenant="acme")
    # a second pass retires nothing more; then the rest, the hole above the retired seqs still a gap
    assert _one_pass(store, 2000.0, root) == {"records": 0, "samples": 0, "blobs": 0}
    _age(store, 6, 1500.0)
    assert _one_pass(store, 2000.0, root) == {"records": 2, "samples": 1, "blobs": 1}
    assert not blobs.exists(a["sample_sha256"]) and not store.has_sample(a["sample_sha256"], tenant="acme")
    assert store.gaps("gw1", tenant="acme") == hole
    # the whole epoch retired, then the agent's outbox starts afresh: the old epoch ended after its last seq, not
    # lost from seq 1
    _age(store, 10, 1500.0)
    assert _one_pass(store, 2000.0, root)["records"] == 2
    assert store.gaps("gw1", tenant="acme") == hole  # (the records around it gone: still a loss)
    store.ingest("gw1", [rec(1, epoch=2)], tenant="acme")
    assert store.gaps("gw1", tenant="acme") == [
        *hole,
        {"epoch": 1, "first": 11, "last": 0, "cause": "epoch_change"},
    ]
    st = store.stats("gw1", tenant="acme")
    assert (st["records"], st["epoch"], st["retired"]["records"]) == (1, 2, 8)


def _records_reads(store, monkeypatch) -> list[int]:
    """[how many reads of records the store's passes make from now on] (a pass reads records through ``_rows`` to
    learn an epoch's age, then in the transaction of each epoch it retires)."""
    reads, rows = [0], store._rows

    def counted(sql, *a):
        reads[0] += "FROM records" in sql
        return rows(sql, *a)

    monkeypatch.setattr(store, "_rows", counted)
    return reads


def test_a_pass_reads_only_the_epochs_that_can_hold_records_past_the_age(store, monkeypatch):
    """Each pass read every epoch's lowest record (an agent at the day's most epochs for 30 days: ~259,000 reads a
    pass, every 10 min); it reads the epochs whose records can be that old, by the age each epoch's counts keep."""
    for e in range(1, 41):
        store.ingest("gw1", [rec(1, epoch=e), rec(2, epoch=e)], tenant="acme")
    _age(store, 2, 1000.0, epoch=3)
    reads = _records_reads(store, monkeypatch)
    assert _one_pass(store, 2000.0)["records"] == 2
    assert reads[0] == 1  # epoch 3's
    assert [g for g in store.gaps("gw1", tenant="acme")] == [
        {"epoch": e, "first": 3, "last": 0, "cause": "epoch_change"} for e in range(1, 40)
    ]
    # a store of before it (the epochs' age not known): the first pass reads each once, the next none
    with store._tx() as ex:
        ex(store.q("UPDATE record_counts SET first_received = 0"))
    reads[0] = 0
    assert _one_pass(store, 2000.0, most=7)["records"] == 0
    assert reads[0] == 39
    reads[0] = 0
    assert _one_pass(store, 2000.0)["records"] == 0 and reads[0] == 0
    # a new epoch whose record was received that long ago: found
    store.ingest("gw1", [rec(1, epoch=41)], tenant="acme")
    _age(store, 1, 1000.0, epoch=41)
    assert _one_pass(store, 2000.0)["records"] == 1 and reads[0] == 1


def test_retention_steps_are_bounded_and_take_a_prefix_of_old_seqs_only(store):
    store.ingest("gw1", [rec(s, epoch=1) for s in range(1, 11)], tenant="acme")
    store.ingest("gw2", [rec(s, epoch=1) for s in range(1, 4)], tenant="acme")
    _age(store, 10, 1000.0)
    with store._tx() as ex:  # seq 6 arrived later (a late batch): retention stops below it
        ex(store.q("UPDATE records SET received = 3000 WHERE agent = 'gw1' AND seq = 6"))
    steps = []
    after = None
    while True:
        step = store.retire(2000.0, after=after, most=2)
        steps.append(step["records"])
        if (after := step["after"]) is None:
            break
    assert steps == [2, 2, 1]  # gw1's 1..5, in steps of 2; gw2's are new
    assert [r["seq"] for r in store.records("gw1", tenant="acme")] == [6, 7, 8, 9, 10]
    assert store.stats("gw1", tenant="acme")["retired"]["records"] == 5
    assert store.stats("gw2", tenant="acme")["retired"] == {"records": 0, "samples": 0, "received_to": None}
    assert store.gaps("gw1", tenant="acme") == []


def test_a_seq_stored_again_after_its_retirement_never_shows_the_retired_seqs_above_it_lost(store):
    """A batch sent again after retention took it (its ack lost, the gateway off for days) is stored again: the
    retired seqs between it and the lowest kept one showed as a gap of cause ``unknown``."""
    store.ingest("gw1", [rec(s, epoch=1) for s in (1, 2, 3, 4, 5, 6, 9)], tenant="acme")
    _age(store, 5, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 5
    store.ingest("gw1", [rec(2, epoch=1)], tenant="acme")
    assert store.gaps("gw1", tenant="acme") == [{"epoch": 1, "first": 7, "last": 8, "cause": "unknown"}]


def test_a_record_of_seq_0_is_retired_and_never_stops_the_pass(store, monkeypatch, caplog):
    """The wire allows seq 0 (gaps count from 1): no step read it, and the step retiring the seqs above it failed on
    the epoch's age (NULL), at every pass, which then started again from the first agent: retention stopped for
    every epoch after it, whichever tenant. Any epoch whose rows the database refuses so is passed over, logged once
    and counted, and the epochs after it are retired."""
    store.ingest("gw1", [rec(s, epoch=1) for s in (0, 1, 2)], tenant="acme")
    store.ingest("gw2", [rec(s, epoch=1) for s in (1, 2)], tenant="acme")
    with store._tx() as ex:
        ex(store.q("UPDATE records SET received = 1000.0"))
        ex(store.q("UPDATE record_counts SET first_received = 1000.0"))
    assert _one_pass(store, 2000.0)["records"] == 5
    assert store.records("gw1", tenant="acme") == store.records("gw2", tenant="acme") == []
    assert store.gaps("gw1", tenant="acme") == []

    # an epoch the database refuses to retire (here a NOT NULL it breaks), sorted before the others
    keep = store._keep_holes

    def refused(ex, key, *args):
        if key[1] == "gw0":
            ex(
                store.q(
                    "INSERT INTO retired (tenant, agent, epoch, last_seq, received_to) VALUES (?,?,?,NULL,0)"
                ),
                key,
            )
        keep(ex, key, *args)

    monkeypatch.setattr(store, "_keep_holes", refused)
    for agent in ("gw0", "gw3"):
        store.ingest(agent, [rec(s, epoch=2) for s in (1, 2)], tenant="beta")
    with store._tx() as ex:
        ex(store.q("UPDATE records SET received = 1000.0 WHERE tenant = 'beta'"))
        ex(store.q("UPDATE record_counts SET first_received = 1000.0 WHERE tenant = 'beta'"))
    for retired in (2, 1):  # a pass, then another with a record of gw3 more
        step = store.retire(2000.0)
        assert (step["records"], step.get("skipped"), step["after"]) == (retired, 1, None)
        assert len(store.records("gw0", tenant="beta")) == 2 and store.records("gw3", tenant="beta") == []
        store.ingest("gw3", [rec(3, epoch=2)], tenant="beta")
        with store._tx() as ex:
            ex(store.q("UPDATE records SET received = 1000.0 WHERE tenant = 'beta'"))
            ex(store.q("UPDATE record_counts SET first_received = 1000.0 WHERE tenant = 'beta'"))
    assert len([r for r in caplog.records if "cannot be retired" in r.getMessage()]) == 1


def test_a_record_stored_in_an_epoch_retention_emptied_shows_the_seqs_missing_below_it_lost(store):
    """An epoch retention emptied counts on from the seq after its retired ones; a record stored in it again (the agent
    quiet for longer than the age, then seqs lost) kept that count as the epoch's first, and the seqs missing between
    the retired ones and it were listed by nothing."""
    store.ingest("gw1", [rec(s, epoch=1) for s in range(1, 5)], tenant="acme")
    _age(store, 4, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 4
    store.ingest("gw1", [rec(7, epoch=1), rec(9, epoch=1)], tenant="acme")
    assert [(g["first"], g["last"], g["cause"]) for g in store.gaps("gw1", tenant="acme")] == [
        (5, 6, "unknown"),
        (8, 8, "unknown"),
    ]


def test_real_losses_among_and_below_the_retired_seqs_stay_in_the_gap_list(store, monkeypatch):
    """Seqs that never arrived are a gap, not a record: once retention deleted the records around them they vanished
    from the list (the agent's own account of them too). They stay, as loss rows bounded like those it told."""

    from cloud_trainer.fleet import store as store_module

    # (7..8 told too, but stored: sent, their ack lost, then dropped: not a loss, before or after)
    drop = {"kind": "outbox_budget", "epoch": 1, "ranges": [[5, 5], [7, 8], [10, 10]]}
    told = rec(13, epoch=1, kind="event", payload=json.dumps(drop))
    store.ingest("gw1", [*(rec(s, epoch=1) for s in (3, 4, 7, 8, 9, 12)), told], tenant="acme")
    before = store.gaps("gw1", tenant="acme")
    assert [(g["first"], g["last"], g["cause"]) for g in before] == [
        (1, 2, "unknown"),
        (5, 5, "budget"),
        (6, 6, "unknown"),
        (10, 10, "budget"),
        (11, 11, "unknown"),
    ]
    _age(store, 8, 1000.0)
    assert _one_pass(store, 2000.0, most=3)["records"] == 4  # two steps: 3, 4, 7 then 8
    assert store.gaps("gw1", tenant="acme") == before
    _age(store, 12, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 2
    assert store.gaps("gw1", tenant="acme") == before
    # (13 is the event itself, received now; the whole epoch gone, then a new one: its end after the retired seqs)
    _age(store, 13, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 1
    store.ingest("gw1", [rec(1, epoch=2)], tenant="acme")
    assert store.gaps("gw1", tenant="acme") == [
        *before,
        {"epoch": 1, "first": 14, "last": 0, "cause": "epoch_change"},
    ]
    # bounded as the agent's own account: past LOSS_ROWS_PER_AGENT its oldest loss ranges make room
    monkeypatch.setattr(store_module, "LOSS_ROWS_PER_AGENT", 4)
    store.ingest("gw1", [rec(s, epoch=2) for s in range(3, 20, 2)], tenant="acme")
    _age(store, 19, 1000.0, epoch=2)
    assert _one_pass(store, 2000.0)["records"] == 10
    with store._tx(write=False) as ex:
        kept = ex(store.q("SELECT loss_rows FROM ingest WHERE agent = 'gw1'")).fetchone()[0]
        rows = ex(store.q("SELECT COUNT(*) FROM gaps WHERE agent = 'gw1' AND last <> 0")).fetchone()[0]
    assert kept == rows <= 4


def test_a_record_that_comes_after_its_hole_was_kept_as_a_loss_is_no_loss(store):
    """A record the agent sent days after the records around it (set aside, then sent), its hole kept as a loss
    row when they were retired: once stored it is no loss."""
    store.ingest("gw1", [rec(s, epoch=1) for s in (1, 3, 4)], tenant="acme")
    _age(store, 4, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 3
    assert store.gaps("gw1", tenant="acme") == [{"epoch": 1, "first": 2, "last": 2, "cause": "unknown"}]
    store.ingest("gw1", [rec(2, epoch=1), rec(5, epoch=1)], tenant="acme")
    assert store.gaps("gw1", tenant="acme") == []
    assert store.gaps("gw1", tenant="acme", newest=10) == []
    # nor once it is retired in its turn; nor a seq of a range told as dropped that came so (7 of 7..8)
    drop = {"kind": "outbox_budget", "epoch": 1, "ranges": [[7, 8]]}
    store.ingest(
        "gw1", [rec(6, epoch=1), rec(9, epoch=1, kind="event", payload=json.dumps(drop))], tenant="acme"
    )
    _age(store, 9, 3000.0)
    assert _one_pass(store, 4000.0)["records"] == 4
    store.ingest("gw1", [rec(7, epoch=1)], tenant="acme")
    _age(store, 7, 5000.0)
    assert _one_pass(store, 6000.0)["records"] == 1
    assert store.gaps("gw1", tenant="acme") == [{"epoch": 1, "first": 8, "last": 8, "cause": "budget"}]


def test_a_record_an_older_service_counts_into_an_epoch_retention_emptied_is_retired_in_its_turn(store):
    """An emptied epoch's age is "never" (passes go by it); a service of before ``first_received`` (a replica during a
    rolling upgrade, a rollback) counting a record into it left it so: that record was never retired."""
    store.ingest("gw1", [rec(s, epoch=1) for s in (1, 2, 3)], tenant="acme")
    _age(store, 3, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 3
    _older_service_stores(store, 4)
    assert _one_pass(store, 2000.0)["records"] == 1
    assert store.stats("gw1", tenant="acme")["retired"]["records"] == 4


def _older_service_stores(store, seq: int) -> None:
    """What a service of before ``first_received`` writes for gw1's record ``seq`` of epoch 1 (received at 1500): its
    upsert of the counts does not name ``first_received``."""
    with store._tx() as ex:
        ex(
            store.q(
                "INSERT INTO records (tenant, agent, epoch, seq, kind, t, received, payload) "
                "VALUES ('acme', 'gw1', 1, ?, 'result', ?, 1500, '{}')"
            ),
            (seq, seq),
        )
        ex(
            store.q(
                "INSERT INTO record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq) "
                "VALUES ('acme', 'gw1', 1, 'result', 1, ?, ?) ON CONFLICT (tenant, agent, epoch, kind) DO UPDATE "
                "SET records = record_counts.records + excluded.records, last_seq = excluded.last_seq"
            ),
            (seq, seq),
        )


def test_a_fleet_db_whose_emptied_epoch_an_older_service_counted_into_before_the_trigger_is_repaired(
    tmp_path, monkeypatch
):
    """Such an epoch of a fleet.db written before the trigger that reopens it was in the file: PostgreSQL's migration
    0028 marks those epochs, SQLite did not, and no pass read them again (their records kept for good). Once, at an
    open: a later open does not look for them again."""
    from cloud_trainer.fleet.store import SQLiteStore
    from tests.support.sqlite_trace import traced_statements

    store = SQLiteStore(tmp_path / "fleet.db")
    store.ingest("gw1", [rec(s, epoch=1) for s in (1, 2, 3)], tenant="acme")
    _age(store, 3, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 3
    with store._tx() as ex:  # a file of before both
        ex("DROP TRIGGER record_counts_reopened")
        ex("DROP TABLE IF EXISTS store_repairs")
    _older_service_stores(store, 4)
    assert _one_pass(store, 2000.0)["records"] == 0  # (the file as it was: never)
    store.close()
    store = SQLiteStore(tmp_path / "fleet.db")
    assert _one_pass(store, 2000.0)["records"] == 1
    assert store.stats("gw1", tenant="acme")["retired"]["records"] == 4
    store.close()
    # done once: recorded, and a later open runs nothing of it
    statements = traced_statements(monkeypatch)
    SQLiteStore(tmp_path / "fleet.db").close()
    assert statements and not [
        s for s in statements if s.startswith("UPDATE record_counts SET first_received = 0")
    ]
    # two processes opening the file at once, both finding it to do: the second's row was refused by the first's
    # (UNIQUE constraint failed: store_repairs.name), and its open failed
    import sqlite3

    from cloud_trainer.fleet.store import SQLITE_REPAIRS

    monkeypatch.undo()
    real_connect, path = sqlite3.connect, tmp_path / "fleet.db"
    con = real_connect(path)
    con.execute("DELETE FROM store_repairs")
    con.commit()

    read = []

    # another open's repair recorded between this open's read of the names and its transaction
    def other_opens_meanwhile(sql: str) -> None:
        if sql.startswith("SELECT name FROM store_repairs"):
            read.append(sql)
        elif read and sql == "BEGIN IMMEDIATE":
            con.executemany("INSERT INTO store_repairs VALUES (?, 0)", [(n,) for n, _s in SQLITE_REPAIRS])
            con.commit()
            read.clear()

    def connect(*args, **kw):
        db = real_connect(*args, **kw)
        db.set_trace_callback(other_opens_meanwhile)
        return db

    monkeypatch.setattr(sqlite3, "connect", connect)
    SQLiteStore(path).close()
    con.close()


def test_a_fleet_db_counted_again_at_open_tells_a_replay_of_an_epoch_retention_emptied_from_a_new_epoch(
    tmp_path,
):
    """An open counts the records again where the counts differ from them (an older service's write, a record deleted by
    hand): the counts of an epoch retention emptied, which tell a batch of it sent again from a new epoch, were deleted
    with it, and such a batch (its ack lost) was taken as the agent's new epoch: its live epoch ended, shown lost past
    its last seq for good."""
    from cloud_trainer.fleet.store import SQLiteStore

    st = SQLiteStore(tmp_path / "fleet.db")
    st.ingest("gw1", [rec(s, epoch=1) for s in (1, 2, 3)], tenant="acme")
    _age(st, 3, 1000.0)
    assert _one_pass(st, 2000.0)["records"] == 3
    st.ingest("gw1", [rec(s, epoch=2) for s in (1, 2, 3)], tenant="acme")
    listed = st.gaps("gw1", tenant="acme")
    with st._tx() as ex:  # an older service's write, not counted
        ex(
            "INSERT INTO records (tenant, agent, epoch, seq, kind, t, received, payload) "
            "VALUES ('acme', 'gw1', 2, 4, 'result', 4, 1e10, '{}')"
        )
    st.close()
    st = SQLiteStore(tmp_path / "fleet.db")
    try:
        st.ingest("gw1", [rec(3, epoch=1)], tenant="acme")
        st.ingest("gw1", [rec(5, epoch=2)], tenant="acme")
        assert st.gaps("gw1", tenant="acme") == listed and st.stats("gw1", tenant="acme")["epoch"] == 2
        assert (
            _one_pass(st, 2000.0)["records"] == 0
        )  # (the emptied epoch's rows aged never; the replay is young)
    finally:
        st.close()


def test_an_epoch_end_an_older_service_wrote_from_seq_1_never_shows_the_retired_seqs_lost(store):
    """Rolled back to a service released before retention, which ends a wholly retired epoch after ``MAX(seq)`` of no
    record (0), then upgraded again: the end is read from past the retired seqs."""
    store.ingest("gw1", [rec(s, epoch=1) for s in range(1, 4)], tenant="acme")
    _age(store, 3, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 3
    with store._tx() as ex:  # the older service's end of epoch 1 when the agent's epoch 2 came
        ex(
            store.q(
                "INSERT INTO gaps (tenant, agent, epoch, first, last, cause, t) "
                "VALUES ('acme', 'gw1', 1, 1, 0, 'epoch_change', 5000)"
            )
        )
    assert store.gaps("gw1", tenant="acme") == [{"epoch": 1, "first": 4, "last": 0, "cause": "epoch_change"}]


def test_deleting_old_sample_bytes_never_holds_up_the_tenants_other_sample_batches(postgres_url, tmp_path):
    """PostgreSQL (SQLite has one writer anyway): retention deletes bytes no row names under a guard of that digest,
    not of the whole tenant. One guard per tenant, held across 100 deletions (a bucket: a round trip or two each),
    failed the tenant's other sample batches once their lock wait passed 2 s; a deletion held here stands for that."""
    import threading

    from cloud_trainer.fleet.store import open_store

    class Held(LocalBlobStore):
        def for_tenant(self, tenant):
            return Held(self.root / "tenants" / tenant)

        def delete(self, digest: str) -> bool:
            deleting.set()
            assert go.wait(30)
            return super().delete(digest)

    deleting, go = threading.Event(), threading.Event()
    st = open_store(postgres_url, tmp_path)
    root = Held(tmp_path / "blobs")
    blobs = root.for_tenant("acme")
    done: list = []
    step = threading.Thread(target=lambda: done.append(st.retire(2000.0, blobs=root)))
    try:
        st.ingest("gw1", [{**_sample(1, b"old" * 20), "epoch": 1}], tenant="acme", blobs=blobs)
        _age(st, 1, 1000.0)
        step.start()
        assert deleting.wait(30)
        new = {**_sample(1, b"new" * 20), "epoch": 1}
        assert st.ingest("gw2", [new], tenant="acme", blobs=blobs)[1] == 1  # not waiting for the deletion
        assert blobs.exists(new["sample_sha256"])
    finally:
        go.set()
        if step.is_alive():
            step.join(30)
        st.close()
    assert done[0]["blobs"] == 1


def test_bytes_a_batch_is_writing_are_kept_and_the_steps_other_bytes_deleted(postgres_url, tmp_path):
    """PostgreSQL: a sample batch of the same bytes holds their guard past retention's lock wait (its other uploads):
    those bytes are kept (the batch names them) and the step goes on; it failed, and the step's other bytes were
    left named by no row, never deleted."""
    import threading

    from cloud_trainer.fleet.store import open_store

    class Held(LocalBlobStore):
        calls = 0

        def exists(self, digest: str) -> bool:
            if digest == shared["sample_sha256"]:
                Held.calls += 1
                if Held.calls == 2:  # the batch's check inside its transaction, under the guard
                    inside.set()
                    assert go.wait(30)
            return super().exists(digest)

    inside, go = threading.Event(), threading.Event()
    st = open_store(postgres_url, tmp_path)
    st.row_lock_timeout_s = 0.2
    blobs = LocalBlobStore(tmp_path / "blobs").for_tenant("acme")
    shared, other = {**_sample(1, b"same" * 20), "epoch": 1}, {**_sample(2, b"other" * 20), "epoch": 1}
    writer = threading.Thread(
        target=lambda: st.ingest("gw2", [shared], tenant="acme", blobs=Held(blobs.root)), daemon=True
    )
    try:
        st.ingest("gw1", [shared, other], tenant="acme", blobs=blobs)
        _age(st, 2, 1000.0)
        writer.start()
        assert inside.wait(30)
        got = st.retire(2000.0, blobs=LocalBlobStore(tmp_path / "blobs"))
    finally:
        go.set()
        writer.join(30)
        st.close()
    assert (got["records"], got["blobs"]) == (2, 1)
    assert blobs.exists(shared["sample_sha256"]) and not blobs.exists(other["sample_sha256"])


def test_sample_bytes_a_stopped_step_left_are_deleted_by_the_next_pass(store, tmp_path):
    """A step stopped (``stop()``, a kill, a failing bucket) between its rows' deletion and its bytes' left files no
    row named, and no later pass found their digests again: they stayed for good. The next pass deletes them."""

    class Failing(LocalBlobStore):
        def for_tenant(self, tenant):
            return Failing(self.root / "tenants" / tenant)

        def delete(self, digest: str) -> bool:
            raise OSError("the bucket went away")

    blobs = LocalBlobStore(tmp_path / "blobs").for_tenant("acme")
    old = [{**_sample(s, b"old%d" % s * 9), "epoch": 1} for s in (1, 2, 3)]
    store.ingest("gw1", old, tenant="acme", blobs=blobs)
    _age(store, 3, 1000.0)
    with pytest.raises(OSError):
        store.retire(2000.0, blobs=Failing(tmp_path / "blobs"))
    assert store.stats("gw1", tenant="acme")["retired"]["records"] == 3  # rows gone, bytes still there
    assert _one_pass(store, 2000.0, blobs=LocalBlobStore(tmp_path / "blobs"))["blobs"] == 3
    assert not any(blobs.exists(r["sample_sha256"]) for r in old)


@pytest.mark.parametrize("days", ["0", "-1", "x", "nan", "inf", "0.0001", "0.99"])
def test_serve_refuses_a_retention_that_is_no_number_of_days_of_1_or_more(days, capsys):
    from cloud_trainer.fleet.server import main

    assert main(["--retain-days", days, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"--retain-days '{days}' must be a number of days, 1 or more" in err


@pytest.mark.parametrize("days", [True, 0.5, "2"])
def test_the_fleet_server_refuses_a_retention_that_is_no_number_of_days_of_1_or_more(days, tmp_path):
    from cloud_trainer.fleet.service import FleetServer

    with pytest.raises(ValueError, match="--retain-days .* expected a number of days, 1 or more"):
        FleetServer(tmp_path, 0, tmp_path / "ca", tmp_path / "cert", tmp_path / "key", retain_days=days)


def test_an_agent_whose_rows_another_session_holds_waits_and_the_pass_goes_on(postgres_url, tmp_path):
    """PostgreSQL: an agent's rows held past retention's lock wait (its batch uploading to a bucket, an admin's open
    transaction): that agent's epoch waits for a later pass and the pass retires the agents after it; the step
    failed there, and no agent after it was retired while the hold lasted."""
    import psycopg

    from cloud_trainer.fleet.store import open_store

    st = open_store(postgres_url, tmp_path)
    st.row_lock_timeout_s = 0.2
    try:
        for agent in ("gw0", "gw1"):
            st.ingest(agent, [rec(1, epoch=1), rec(2, epoch=1)], tenant="acme")
        with st._tx() as ex:
            ex("UPDATE records SET received = 1000.0 WHERE tenant = 'acme'")
            ex("UPDATE record_counts SET first_received = 1000.0 WHERE tenant = 'acme'")
        with psycopg.connect(postgres_url) as held:
            held.execute("SELECT 1 FROM ingest WHERE tenant = 'acme' AND agent = 'gw0' FOR UPDATE")
            got = _one_pass(st, 2000.0)
        assert got["records"] == 2
        assert [r["seq"] for r in st.records("gw0", tenant="acme")] == [1, 2]
        assert st.records("gw1", tenant="acme") == []
        assert _one_pass(st, 2000.0)["records"] == 2  # the hold ended: the next pass retires it
    finally:
        st.close()


def _received(store, seq: int, t: float, epoch: int = 1) -> None:
    """gw1's record ``seq`` as if received at ``t`` (its epoch's age too, as ``ingest`` keeps it)."""
    with store._tx() as ex:
        args = (t, epoch, seq)
        ex(store.q("UPDATE records SET received = ? WHERE agent = 'gw1' AND epoch = ? AND seq = ?"), args)
        ex(
            store.q(
                "UPDATE record_counts SET first_received = ? WHERE agent = 'gw1' AND epoch = ? AND first_received > ?"
            ),
            (t, epoch, t),
        )


def test_a_late_record_below_the_retired_seqs_never_holds_the_older_records_above_them(store, tmp_path):
    """The outbox sends by priority (a sample days behind the records around it): a record stored below the retired
    seqs was the epoch's lowest, and while it was young no pass retired anything above it; a backlog of such records
    kept the epoch's older records past the age for as long as it drained, plus the age. Each is retired once it is
    that old; a young one is never; the seqs that never came stay listed lost."""
    store.ingest("gw1", [rec(s, epoch=1) for s in (1, 3, 5, 7)], tenant="acme")
    _age(store, 7, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 4  # 2, 4, 6 kept as losses
    store.ingest("gw1", [rec(s, epoch=1) for s in range(9, 21)], tenant="acme")
    _age(store, 20, 3000.0)
    late = (2, 4, 6, 8)
    blobs = LocalBlobStore(tmp_path / "blobs").for_tenant("acme")
    for i, seq in enumerate(late):  # one a 1,000 s; a pass 900 s after each (an age of 1,000 s); samples
        t = 6000.0 + 1000 * i
        sample = {**_sample(seq, b"late%d" % seq), "epoch": 1}
        store.ingest("gw1", [sample], tenant="acme", blobs=blobs)
        _received(store, seq, t)
        _one_pass(store, t - 100)
        assert [r["seq"] for r in store.records("gw1", tenant="acme")] == [seq]
        assert store.stats("gw1", tenant="acme")["samples"] == 1 and store.has_sample(
            sample["sample_sha256"], tenant="acme"
        )
        assert [(g["first"], g["last"], g["cause"]) for g in store.gaps("gw1", tenant="acme")] == [
            (s, s, "unknown") for s in late[i + 1 :]
        ]
    assert _one_pass(store, 10_000.0)["records"] == 1
    assert store.stats("gw1", tenant="acme")["retired"]["records"] == 20
    assert store.gaps("gw1", tenant="acme") == []


def test_counts_above_the_records_never_make_an_emptied_epoch_read_at_every_pass(store, monkeypatch):
    """A record deleted by hand leaves its epoch's counts above its records: once retention retired the rest, the count
    left (1) beside no record marked the epoch's age not known, and every pass read the epoch again, for good."""
    store.ingest("gw1", [rec(s, epoch=1) for s in (1, 2, 3)], tenant="acme")
    with store._tx() as ex:
        ex(store.q("DELETE FROM records WHERE agent = 'gw1' AND seq = 3"))
    _age(store, 3, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 2
    reads = _records_reads(store, monkeypatch)
    assert _one_pass(store, 2000.0)["records"] == 0 and reads[0] == 0
    assert store.stats("gw1", tenant="acme")["records"] == 0
    # an epoch left so before: read by one pass, which counts it right, then by none
    with store._tx() as ex:
        ex(store.q("UPDATE record_counts SET records = 1, first_received = 0 WHERE agent = 'gw1'"))
    assert _one_pass(store, 2000.0)["records"] == 0 and reads[0] == 1
    assert _one_pass(store, 2000.0)["records"] == 0 and reads[0] == 1
    assert store.stats("gw1", tenant="acme")["records"] == 0
    # a record stored again in it: found and retired in its turn
    store.ingest("gw1", [rec(4, epoch=1)], tenant="acme")
    _age(store, 4, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 1


def test_a_told_range_ending_at_seq_0_or_starting_at_it_is_never_an_epochs_end(store):
    """An epoch's end is a ``gaps`` row whose last seq is 0: a drop event's range ending at 0 (``[5, 0]``, ``[0, 0]``)
    was written so, and one starting at 0 (``[0, 4]``) became the piece ``(0, 0)`` once retention cut it by the
    seqs it retired: the gap list said the epoch ended there (cause ``budget``), and each counted among the epochs
    the agent opened within the day. A range is taken where first <= last, from seq 1 (the list starts there)."""
    drop = {"kind": "outbox_budget", "epoch": 1, "ranges": [[0, 4], [5, 0], [0, 0], [7, 6]]}
    told = rec(9, epoch=1, kind="event", payload=json.dumps(drop))
    store.ingest("gw1", [rec(1, epoch=1), rec(8, epoch=1), told], tenant="acme")
    listed = [(2, 4, "budget"), (5, 7, "unknown")]
    assert [(g["first"], g["last"], g["cause"]) for g in store.gaps("gw1", tenant="acme")] == listed
    _age(store, 9, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 3
    assert [(g["first"], g["last"], g["cause"]) for g in store.gaps("gw1", tenant="acme")] == listed
    assert store.stats("gw1", tenant="acme")["epochs_24h"] == 0


def test_an_epochs_end_written_from_a_told_range_ending_at_seq_0_is_deleted_once(store, tmp_path):
    """Such ends written before (a drop cause, last 0) go at the next start: PostgreSQL migration 0031, a fleet.db's
    repair ``gaps_told_ends``; the agent's loss rows are counted again; real ends stay, and so does one such a row took
    the place of before (gw2: its epoch ended on it, the same first; gw3: a late batch moved both ends past it, keeping
    its cause): the repair deleted it, the old outbox's tail no longer listed lost."""
    from cloud_trainer.fleet.store import SQLiteStore, open_store

    def told_end(
        agent: str, epoch: int, first: int
    ) -> None:  # what the service wrote for a range [first, 0] before
        with store._tx() as ex:
            ex(
                store.q(
                    "INSERT INTO gaps (tenant, agent, epoch, first, last, cause, t) VALUES ('acme', ?, ?, ?, 0, "
                    "'budget', 1)"
                ),
                (agent, epoch, first),
            )

    drop = {"kind": "outbox_budget", "epoch": 1, "ranges": [[2, 4]]}
    store.ingest(
        "gw1",
        [rec(1, epoch=1), rec(8, epoch=1), rec(9, epoch=1, kind="event", payload=json.dumps(drop))],
        tenant="acme",
    )
    store.ingest("gw1", [rec(1, epoch=2)], tenant="acme")  # (epoch 1's real end)
    listed = store.gaps("gw1", tenant="acme")
    store.ingest("gw2", [rec(s, epoch=1) for s in (1, 2)], tenant="acme")
    store.ingest("gw2", [rec(1, epoch=2)], tenant="acme")
    told_end("gw2", 2, 3)  # (its current epoch's: no end)
    store.ingest("gw3", [rec(1, epoch=1)], tenant="acme")
    store.ingest("gw3", [rec(1, epoch=2)], tenant="acme")
    store.ingest("gw3", [rec(s, epoch=1) for s in (2, 3, 4)], tenant="acme")
    told_end("gw1", 1, 5)
    with store._tx() as ex:
        ex(store.q("UPDATE ingest SET loss_rows = 2 WHERE agent = 'gw1'"))
        # (gw2, gw3: the end as such a service left it, the row's cause and time on the real end's seq)
        ex(store.q("UPDATE gaps SET cause = 'budget', t = 1 WHERE agent IN ('gw2', 'gw3') AND epoch = 1"))
        if isinstance(store, SQLiteStore):
            ex("DELETE FROM store_repairs WHERE name = 'gaps_told_ends'")
        else:
            ex("DELETE FROM schema_version WHERE version >= 31")  # (those after it run again too)
    assert store.gaps("gw1", tenant="acme") == listed  # (read as no end since)
    store.close()
    store = SQLiteStore(store.path) if isinstance(store, SQLiteStore) else open_store(store.url, tmp_path)
    try:
        assert store.gaps("gw1", tenant="acme") == listed
        for agent, first in (("gw2", 3), ("gw3", 5)):
            assert store.gaps(agent, tenant="acme") == [
                {"epoch": 1, "first": first, "last": 0, "cause": "epoch_change"}
            ]
        with store._tx(write=False) as ex:
            assert ex(store.q("SELECT loss_rows FROM ingest WHERE agent = 'gw1'")).fetchone()[0] is None
            assert (
                ex(store.q("SELECT COUNT(*) FROM gaps WHERE last = 0 AND cause = 'budget'")).fetchone()[0]
                == 0
            )
    finally:
        store.close()


def _replayed(store, n: int, above: int) -> None:
    """gw1's epoch 1: seqs 1..n retired, then sent again (young) with ``above`` new seqs after them, those received
    at 1,500 s."""
    store.ingest("gw1", [rec(s, epoch=1) for s in range(1, n + 1)], tenant="acme")
    _age(store, n, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == n
    store.ingest("gw1", [rec(s, epoch=1) for s in range(1, n + above + 1)], tenant="acme")
    with store._tx() as ex:
        ex(store.q("UPDATE records SET received = 1500.0 WHERE agent = 'gw1' AND seq > ?"), (n,))
        ex(store.q("UPDATE record_counts SET first_received = 1500.0 WHERE agent = 'gw1'"))


def test_a_young_replay_of_retired_seqs_adds_nothing_to_the_steps_retiring_the_records_above_them(tmp_path):
    """An agent sending its retired seqs again (a restored outbox, a batch whose ack was lost): while young they are
    kept, and each step retiring the epoch's older records above them read them all, twice, then scanned them in the
    records' and samples' deletions (SQLite's write turn held meanwhile): a pass's cost grew with the replay. Counted
    in SQLite's virtual machine steps: a replay 10 times larger costs the pass about the same."""
    from cloud_trainer.fleet.store import SQLiteStore

    steps = []
    for n in (200, 2000):
        st = SQLiteStore(tmp_path / f"{n}.db")
        try:
            _replayed(st, n, 40)
            count = [0]

            def tick(count=count) -> int:
                count[0] += 1
                return 0

            st.db.set_progress_handler(tick, 100)
            assert _one_pass(st, 2000.0, most=10)["records"] == 40  # four steps of ten
            st.db.set_progress_handler(None, 100)
            steps.append(count[0])
            assert [r["seq"] for r in st.records("gw1", tenant="acme", limit=5000)] == list(range(1, n + 1))
        finally:
            st.close()
    assert steps[1] < 2 * steps[0], steps


def test_a_replay_below_the_retired_seqs_is_retired_once_old_also_when_stored_before_late_records(
    store, tmp_path
):
    """Records stored at or below the retired seqs are retired once that old, young ones kept; one deleted by hand
    (or by a service of before ``late_records``) is taken out of it and counted nowhere. A store of before the table
    (SQLite: it or a trigger missing at open; PostgreSQL: migration 0032) holding such records: filled from them."""
    from cloud_trainer.fleet.store import SQLiteStore, open_store

    _replayed(store, 6, 2)
    with store._tx() as ex:
        ex(store.q("UPDATE records SET received = 1000.0 WHERE agent = 'gw1' AND seq IN (1, 2, 3)"))
        ex(store.q("DELETE FROM records WHERE agent = 'gw1' AND seq = 2"))
    assert _one_pass(store, 2000.0)["records"] == 4  # 1, 3 (late and old), 7, 8 (above)
    assert [r["seq"] for r in store.records("gw1", tenant="acme")] == [4, 5, 6]
    with store._tx(write=False) as ex:
        assert ex(store.q("SELECT seq FROM late_records ORDER BY seq")).fetchall() == [(4,), (5,), (6,)]
    _age(store, 6, 1000.0)
    assert _one_pass(store, 2000.0)["records"] == 3
    assert store.stats("gw1", tenant="acme")["retired"]["records"] == 6 + 4 + 3
    with store._tx(write=False) as ex:
        assert ex(store.q("SELECT COUNT(*) FROM late_records")).fetchone()[0] == 0
    # the store as a service of before it left it, with two records below the retired seqs
    with store._tx() as ex:
        for statement in ("DROP TRIGGER late_records_add", "DROP TABLE late_records"):
            ex(statement if isinstance(store, SQLiteStore) else statement.replace("_add", "_add ON records"))
        if not isinstance(store, SQLiteStore):
            ex("DELETE FROM schema_version WHERE version >= 32")
    store.ingest("gw1", [rec(s, epoch=1) for s in (2, 3)], tenant="acme")
    store.close()
    store = SQLiteStore(store.path) if isinstance(store, SQLiteStore) else open_store(store.url, tmp_path)
    try:
        _age(store, 3, 1000.0)
        assert _one_pass(store, 2000.0)["records"] == 2
        assert store.records("gw1", tenant="acme") == []
    finally:
        store.close()


def test_an_epochs_end_an_older_service_writes_from_a_told_range_after_the_repair_is_no_end(store):
    """A service of before 9034521b (a replica still running during a rolling upgrade, a rollback) writes a drop
    range ending at seq 0 as an epoch's end after the one-time repair ran: the gap list said the epoch ended there
    and listed its real losses no more, it counted among the epochs the agent opened within the day, and the real
    end written on its seq later kept its drop cause and time (``ON CONFLICT DO NOTHING``). Read as no end; the real
    end takes its place."""
    import time

    def told_end(
        agent: str, epoch: int, first: int
    ) -> None:  # what such a service writes for a range [first, 0]
        with store._tx() as ex:
            ex(
                store.q(
                    "INSERT INTO gaps (tenant, agent, epoch, first, last, cause, t) VALUES ('acme', ?, ?, ?, 0, "
                    "'budget', 1)"
                ),
                (agent, epoch, first),
            )

    store.ingest("gw1", [rec(1, epoch=1), rec(8, epoch=1)], tenant="acme")
    told_end("gw1", 1, 5)
    assert [(g["first"], g["last"], g["cause"]) for g in store.gaps("gw1", tenant="acme")] == [
        (2, 7, "unknown")
    ]
    assert store.stats("gw1", tenant="acme")["epochs_24h"] == 0
    store.ingest("gw2", [rec(s, epoch=1) for s in (1, 2)], tenant="acme")
    told_end("gw2", 1, 3)
    t = time.time()
    store.ingest("gw2", [rec(1, epoch=2)], tenant="acme")  # epoch 1 ends after seq 2: on the row's seq
    assert store.gaps("gw2", tenant="acme") == [{"epoch": 1, "first": 3, "last": 0, "cause": "epoch_change"}]
    assert store.stats("gw2", tenant="acme")["epochs_24h"] == 1
    with store._tx(write=False) as ex:
        assert ex(store.q("SELECT t FROM gaps WHERE agent = 'gw2'")).fetchone()[0] >= t - 1


def test_a_late_record_stored_again_after_an_older_service_retired_it_is_aged_by_its_new_receipt(store):
    """A service of before ``late_records`` (a replica still running during a rolling upgrade) retires late records
    without taking their rows out of it; the agent sends those seqs again, young. The row kept the old receipt (the
    trigger's insert ignored): a step read such rows first, as old, retired none of them (young), and a step's share
    of them left the records above the retired seqs unread, so those stayed past the age until the replay was that
    old too. A pass takes the receipt the record has; the next retires the records above."""
    _replayed(store, 6, 2)  # 1..6 retired, stored again young; 7, 8 above them received at 1,500 s
    with store._tx() as ex:
        ex(store.q("UPDATE records SET received = 1000.0 WHERE agent = 'gw1' AND seq <= 3"))
        # (that service's deletion: the records only)
        ex(store.q("DELETE FROM records WHERE agent = 'gw1' AND seq <= 3 AND received < 2000.0"))
    store.ingest("gw1", [rec(s, epoch=1) for s in (1, 2, 3)], tenant="acme")  # sent again
    got = _one_pass(store, 2000.0, most=3)["records"] + _one_pass(store, 2000.0, most=3)["records"]
    assert got == 2
    assert [r["seq"] for r in store.records("gw1", tenant="acme")] == [1, 2, 3, 4, 5, 6]
    with store._tx(write=False) as ex:
        rows = ex(
            store.q(
                "SELECT COUNT(*) FROM late_records l JOIN records r ON r.tenant = l.tenant AND r.agent = l.agent "
                "AND r.epoch = l.epoch AND r.seq = l.seq WHERE l.received = r.received"
            )
        ).fetchone()[0]
    assert rows == 6


def test_migration_0032_fills_late_records_while_writes_to_the_records_go_on(postgres_url, tmp_path):
    """PostgreSQL migration 0032 fills ``late_records`` from the records below the retired seqs after making its
    triggers, outside their transaction: in one with them, every write to the records waited for the fill (3.4 s at
    100,000 retired epochs, past a batch's 2 s lock wait). Here a run stopped after making the table is run again
    while a session holds the table (the fill waits): another agent's record is stored meanwhile; then the rows are
    those of the records below the retired seqs, and a record stored there later has its row."""
    import shutil
    import threading
    import time

    import psycopg

    from cloud_trainer.fleet.store import _statements
    from cloud_trainer.fleet.store_pg import MIGRATIONS, migrate, migration_files

    older = tmp_path / "older"
    older.mkdir()
    for v, path in migration_files():
        if v < 32:
            shutil.copy(path, older / path.name)
    add = (
        "INSERT INTO records (tenant, agent, epoch, seq, kind, t, received, payload) "
        "VALUES ('acme', %s, 1, %s, 'result', 1, 1000, '{}')"
    )
    done: list = []

    def upgrading() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            done.append(migrate(conn, MIGRATIONS))

    with (
        psycopg.connect(postgres_url, autocommit=True) as admin,
        psycopg.connect(postgres_url) as holding,
        psycopg.connect(postgres_url, autocommit=True) as writer,
    ):
        migrate(admin, older)
        for s in (1, 3, 4):
            admin.execute(add, ("gw1", s))
        admin.execute(
            "INSERT INTO retired (tenant, agent, epoch, last_seq, records, samples, received_to) "
            "VALUES ('acme', 'gw1', 1, 3, 0, 0, 0)"
        )
        admin.execute(_statements((MIGRATIONS / "0032_late_records.sql").read_text())[0])
        holding.execute("LOCK TABLE late_records IN SHARE MODE")
        upgrade = threading.Thread(target=upgrading)
        upgrade.start()
        try:
            for _ in range(1200):  # until the fill waits for that session (or the upgrade ended)
                waiting = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE '%late_records%' "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                ).fetchone()[0]
                if waiting or not upgrade.is_alive():
                    break
                time.sleep(0.05)
            assert waiting, "the migration never waited to fill late_records"
            writer.execute("SET lock_timeout = '500ms'")
            writer.execute(add, ("gw2", 1))
        finally:
            holding.commit()
            upgrade.join(60)
        assert done and 32 in done[0]
        admin.execute(add, ("gw1", 2))
        assert admin.execute("SELECT agent, seq FROM late_records ORDER BY seq").fetchall() == [
            ("gw1", 1),
            ("gw1", 2),
            ("gw1", 3),
        ]
