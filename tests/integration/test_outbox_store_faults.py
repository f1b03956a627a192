"""The outbox against faults of its store that nobody here made: records larger than its budget allows, a
database that turns corrupt or is removed while the agent runs, an empty file at start. Real SQLite files;
the agent keeps appending throughout, and every record is either stored or counted."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import threading
import time

import pytest

from cloud_trainer.fleet.service import FleetServer
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from tests.integration.test_outbox_disk_faults import in_thread
from tests.support.fleet import cloud_settings, make_pki
from tests.support.outbox_kills import damage_index, killed_child
from tests.support.peers import free_port
from tests.support.waits import until


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


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


def scribble_pages(path, every: int = 8) -> None:
    """Overwrite one page in ``every`` past the first few with random bytes, as a failing SD card does, after
    the WAL was folded into the file (so the damage is what SQLite reads)."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    con.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:
        for off in range(8 * 4096, size - 4096, every * 4096):
            f.seek(off)
            f.write(os.urandom(4096))
        f.flush()
        os.fsync(f.fileno())


def fill_outbox(folder, n: int) -> Outbox:
    ob = Outbox(OutboxSettings(), folder)
    ob.open()
    for i in range(n):
        ob.append("result", {"i": i, "pad": "p" * 200})
    ob.flush()
    return ob


@pytest.mark.parametrize("damage", ["pages_scribbled", "cut_short"])
def test_a_corrupt_outbox_at_start_is_moved_aside_and_what_is_readable_goes_on_in_a_new_epoch(
    tmp_path, damage, caplog
):
    ob = fill_outbox(tmp_path, 3000)
    old_epoch = ob.epoch
    ob.close()
    path = tmp_path / "outbox" / "outbox.db"
    if damage == "pages_scribbled":
        scribble_pages(path, every=40)
    else:  # a power loss while the file system grew the file
        for suffix in ("-wal", "-shm"):
            (tmp_path / "outbox" / f"outbox.db{suffix}").unlink(missing_ok=True)
        os.truncate(path, path.stat().st_size // 2 + 1000)
    events: list = []
    ob = Outbox(OutboxSettings(), tmp_path, on_event=events.append)
    ob.open()
    assert ob.moved_aside is not None and ob.moved_aside.exists() and ob.epoch > old_epoch
    corrupt = [e for e in events if e["kind"] == "outbox_corrupt"]
    assert len(corrupt) == 1 and corrupt[0]["previous_epoch"] == old_epoch
    ob.flush()
    kept = {r.seq: json.loads(r.payload) for r in ob.pending(10_000, 10**9) if r.kind == "result"}
    assert len(kept) >= 1000  # formerly none: every record still readable in the file was thrown away
    assert len(kept) == corrupt[0]["salvaged"] == ob.stats()["salvaged"]
    # each keeps its seq (an ack in flight for the old epoch names the same record, never another one)
    assert all(body["i"] == seq - 1 for seq, body in kept.items())
    assert ob.stats()["renewals"] == 1 and ob.stats()["last_renewal"]["epoch"] == ob.epoch
    # the next seq follows the old outbox's last: none is given twice within the new epoch
    assert ob.append("result", {"new": 1}) > 3000
    ob.close()
    error_lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(error_lines) == 1 and "\n" not in error_lines[0] and str(ob.moved_aside) in error_lines[0]


def test_an_empty_outbox_file_of_a_known_epoch_is_moved_aside_and_reported_not_silently_restarted(tmp_path):
    ob = fill_outbox(tmp_path, 50)
    old_epoch = ob.epoch
    ob.close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / "outbox" / f"outbox.db{suffix}").unlink(missing_ok=True)
    os.truncate(tmp_path / "outbox" / "outbox.db", 0)  # a file system repair left it empty
    events: list = []
    ob = Outbox(OutboxSettings(), tmp_path, on_event=events.append)
    ob.open()
    # formerly SQLite took it for a new database: 50 records gone without a log line or an event
    assert [e["kind"] for e in events] == ["outbox_corrupt"]
    assert events[0]["previous_epoch"] == old_epoch and "empty" in events[0]["reason"]
    assert ob.moved_aside is not None and ob.moved_aside.stat().st_size == 0
    assert ob.epoch > old_epoch
    ob.close()


def wait_for(pred, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.02)


def test_an_outbox_removed_under_the_running_agent_goes_on_in_a_new_epoch_with_every_record(tmp_path):
    data = tmp_path / "data"
    events: list = []
    ob = Outbox(OutboxSettings(commit_interval_ms=10), data, on_event=events.append)
    ob.open()
    old_epoch = ob.epoch
    for i in range(100):
        ob.append("result", {"before": i})
    ob.flush()
    # a clean-up script, a careless operator (renamed first: the outbox may start afresh during rmtree)
    os.rename(data, tmp_path / "gone")
    shutil.rmtree(tmp_path / "gone")
    for i in range(300):
        ob.append("result", {"after": i})
    ob.flush()
    # formerly it wrote on into the removed file, unseen by any reader and gone at the next start
    wait_for(lambda: any(e["kind"] == "outbox_corrupt" for e in events), what="the outbox to start afresh")
    assert ob.epoch > old_epoch and [e["kind"] for e in events] == ["outbox_corrupt"]
    assert events[0]["lost"] == 0
    ob.append("result", {"later": 1})
    ob.close()
    again = Outbox(OutboxSettings(), data)
    again.open()
    assert again.epoch == ob.epoch and again.moved_aside is None
    assert again.stats()["by_kind"]["result"] == 100 + 300 + 1
    again.close()


def test_an_outbox_file_cut_short_under_the_running_agent_goes_on_in_a_new_epoch_with_every_record(tmp_path):
    data = tmp_path / "data"
    events: list = []
    # a small budget: a small WAL, so the writer folds it into the file (checkpoints) as it goes
    ob = Outbox(
        OutboxSettings(commit_interval_ms=10, max_bytes=2 * 1024 * 1024), data, on_event=events.append
    )
    ob.open()
    old_epoch = ob.epoch
    for i in range(300):
        ob.append("result", {"before": i, "pad": "p" * 200})
    ob.flush()
    # most of the records are in the file itself, not only in the WAL
    assert ob.path.stat().st_size > 64 * 1024
    # a tool empties the file in place (`truncate -s 0`, `> outbox.db`): the same inode, nothing looks removed
    os.truncate(ob.path, 0)
    for i in range(100):
        ob.append("result", {"after": i})
    ob.flush()
    # formerly the agent wrote on into the cut file and counted all 400 as kept; at the next start the file was
    # found corrupt and most of them were gone
    wait_for(lambda: any(e["kind"] == "outbox_corrupt" for e in events), what="the outbox to start afresh")
    assert ob.epoch > old_epoch and [e["kind"] for e in events] == ["outbox_corrupt"]
    assert "cut short" in events[0]["reason"] and events[0]["lost"] == 0
    ob.close()
    again = Outbox(OutboxSettings(max_bytes=2 * 1024 * 1024), data)
    again.open()
    assert again.epoch == ob.epoch and again.moved_aside is None
    assert again.stats()["by_kind"]["result"] == 300 + 100
    again.close()


async def test_an_outbox_turning_corrupt_while_running_is_renewed_and_the_cloud_gets_every_readable_record(
    tmp_path, pki
):
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    events: list = []
    ob = Outbox(OutboxSettings(commit_interval_ms=10), tmp_path / "agent", on_event=events.append)
    ob.open()
    old_epoch = ob.epoch
    up = None
    try:
        for i in range(2000):  # the link is down: they wait in the outbox
            ob.append("result", {"i": i, "pad": "p" * 200})
        ob.flush()
        scribble_pages(ob.path, every=40)  # a failing card, under the running agent
        up = Uplink(cloud_settings(pki, port), ob)
        await up.start()
        for i in range(200):  # the line goes on
            await ob.append_async("result", {"j": i})
        ob.flush()
        # formerly the uplink's read of the corrupt store raised out of its loop: nothing was sent again
        await until(
            lambda: (
                len([r for r in srv.store.records("gw1", limit=5000) if r["kind"] == "result"])
                + ob.dropped["corrupt:result"]
                == 2200
                and ob.stats()["depth"] == 0
            ),
            what="every result at the cloud or counted as lost, and the outbox drained",
        )
        assert ob.stats()["renewals"] == 1
        lost = ob.dropped["corrupt:result"]
        assert ob.epoch > old_epoch and 0 < lost < 2000
        corrupt = [e for e in events if e["kind"] == "outbox_corrupt"]
        assert len(corrupt) == 1 and corrupt[0]["lost"] == lost and corrupt[0]["previous_epoch"] == old_epoch
        # every result is at the cloud or counted as lost (those the failing card took)
        recs = srv.store.records("gw1", limit=5000)
        results = [r for r in recs if r["kind"] == "result"]
        assert len(results) == 2200 - lost
        assert {r["epoch"] for r in results} <= {old_epoch, ob.epoch}
        assert srv.store.stats("gw1")["duplicates"] == 0
    finally:
        if up is not None:
            await up.stop()
        ob.close()
        await srv.stop()


def test_records_acknowledged_on_a_store_turned_corrupt_are_neither_sent_again_nor_counted_as_lost(tmp_path):
    events: list = []
    # no retention: nothing but the acknowledgement meets the damage
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), tmp_path, on_event=events.append)
    ob.open()
    for i in range(300):
        ob.append("result", {"i": i, "pad": "p" * 200})
    ob.flush()
    sent = [r.seq for r in ob.pending(100, 10**9)]  # a batch at the cloud
    damage_index(ob.path)
    with contextlib.suppress(sqlite3.DatabaseError):  # (as the uplink takes a failed ack: it sends on later)
        ob.ack(sent)  # the cloud acknowledged them; their DELETE meets the damage
    wait_for(lambda: ob.stats()["renewals"] == 1, what="the store to be renewed")
    # formerly the renewal copied the 100 acknowledged records into the new store: sent again in its new epoch,
    # where the cloud cannot tell them for the ones it has, and stored twice
    left = [r.seq for r in ob.pending(1000, 10**9) if r.kind == "result"]
    assert not set(left) & set(sent) and len(left) == 200
    corrupt = [e for e in events if e["kind"] == "outbox_corrupt"]
    assert len(corrupt) == 1 and corrupt[0]["lost"] == 0 and corrupt[0]["salvaged"] == 200
    assert not ob.dropped and ob.stats()["by_kind"]["result"] == 200
    ob.flush()  # its event committed once; outbox-untold, which kept it until then, is gone with its told: key
    stored = [json.loads(r.payload) for r in ob.pending(1000, 10**9) if r.kind == "event"]
    assert [e["kind"] for e in stored] == ["outbox_corrupt"] and not (tmp_path / "outbox-untold").exists()
    con = sqlite3.connect(ob.path)
    try:
        assert con.execute("SELECT key FROM meta WHERE key LIKE 'told:%'").fetchall() == []
    finally:
        con.close()
    ob.close()


def test_a_corrupt_store_whose_renewal_cannot_start_hands_out_nothing_until_it_is_renewed(
    tmp_path, monkeypatch
):
    import errno

    import edge_agent.outbox.store as store

    monkeypatch.setattr(store, "RENEW_RETRY_S", 0.2)
    events: list = []
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), tmp_path, on_event=events.append)
    ob.open()
    for i in range(1500):
        ob.append("result", {"i": i, "pad": "p" * 200})
    ob.flush()

    def disk_full(
        self, keep=None, to=None
    ):  # outbox-corrupt/ cannot be made: the bad store stays where it is
        raise OSError(errno.ENOSPC, "No space left on device", str(self.corrupt_dir))

    monkeypatch.setattr(Outbox, "_move_aside", disk_full)
    sent = [r.seq for r in ob.pending(500, 10**9)]
    damage_index(ob.path)
    ob.ack(sent)  # at the cloud; the DELETE meets the damage and the renewal fails on the full disk
    wait_for(lambda: ob._renew_error is not None, what="the renewal to fail")
    # formerly the next batches were read from the damaged store and each of their acks was held in memory: the
    # whole backlog went so, with every poll reading more rows; now nothing leaves until the renewal
    for _ in range(5):
        assert ob.pending(500, 10**9) == []
        time.sleep(0.1)
    assert ob.stats()["depth"] == 1500 and len(ob._acked_unremoved) == 500
    monkeypatch.undo()  # the disk has room again: the next attempt renews the store
    monkeypatch.setattr(store, "RENEW_RETRY_S", 0.2)
    wait_for(lambda: ob.stats()["renewals"] == 1, what="the store to be renewed")
    left = [r.seq for r in ob.pending(2000, 10**9) if r.kind == "result"]
    assert sorted(left) == [q for q in range(1, 1501) if q not in set(sent)]
    corrupt = [e for e in events if e["kind"] == "outbox_corrupt"]
    assert [e["lost"] for e in corrupt] == [0] and not ob.dropped
    ob.close()


async def test_a_store_turning_corrupt_twice_is_renewed_each_time_and_the_cloud_gets_each_record_once(
    tmp_path, pki
):
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    events: list = []
    ob = Outbox(
        OutboxSettings(commit_interval_ms=10, retention={}), tmp_path / "agent", on_event=events.append
    )
    ob.open()
    try:
        for n in (1, 2):  # the store, then the store that renewed it
            for i in range(1000):  # the link is down: they wait in the outbox
                ob.append("result", {"i": (n - 1) * 1000 + i, "pad": "p" * 200})
            ob.flush()
            damage_index(ob.path)  # its rows all readable: nothing is lost
            up = Uplink(cloud_settings(pki, port), ob)
            await up.start()
            try:
                await until(
                    lambda n=n: ob.stats()["renewals"] == n and ob.stats()["depth"] == 0,
                    what=f"renewal {n} and the outbox drained",
                )
            finally:
                await up.stop()
            results = [r for r in srv.store.records("gw1", limit=5000) if r["kind"] == "result"]
            # formerly the 500 records of the batch whose acknowledgement met the damage were salvaged and sent
            # again in the new epoch: stored twice
            got = sorted(r["payload"]["i"] for r in results)
            assert got == list(range(n * 1000)), f"renewal {n}: {len(got)} results at the cloud"
        corrupt = [e for e in events if e["kind"] == "outbox_corrupt"]
        assert [e["lost"] for e in corrupt] == [0, 0] and not ob.dropped
        assert srv.store.stats("gw1")["duplicates"] == 0
    finally:
        ob.close()
        await srv.stop()


class SteppedClock:
    """The ``time`` module as the outbox sees it, with a wall clock that a test steps (the machine's own clock
    cannot be stepped under the other tests); every other function is the real one."""

    def __init__(self, offset_s: float) -> None:
        self.offset_s = offset_s

    def time(self) -> float:
        return time.time() + self.offset_s

    def __getattr__(self, name: str):
        return getattr(time, name)


def test_records_stamped_before_the_clock_steps_forward_are_kept_by_retention_with_their_times_set_right(
    tmp_path, monkeypatch
):
    import edge_agent.outbox.store as store

    # a gateway without a battery-backed clock, booted during an outage: its clock is a month behind
    clock = SteppedClock(-30 * 86400)
    monkeypatch.setattr(store, "time", clock)
    monkeypatch.setattr(store, "RETENTION_EVERY_S", 0.0)
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path)  # results: 7 days of retention
    ob.open()
    for i in range(100):
        ob.append("result", {"i": i})
    ob.flush()
    clock.offset_s = 0.0  # the link is back, NTP sets the clock
    for i in range(2):  # the second commit comes after the first round's retention: it has run since the step
        ob.append("result", {"after": i})
        ob.flush()
    # formerly the month-old-looking records were dropped unsent (counted as retention)
    assert not ob.dropped and ob.stats()["by_kind"]["result"] == 102
    now = time.time()
    assert all(abs(r.t - now) < 600 for r in ob.pending(500, 10**9))
    ob.close()


def test_another_process_reading_the_store_while_the_agent_writes_loses_no_record_at_a_power_cut(tmp_path):
    import subprocess
    import sys

    data = tmp_path / "data"
    ob = Outbox(OutboxSettings(commit_interval_ms=10), data)
    ob.open()
    for i in range(200):
        ob.append("result", {"i": i})
    ob.flush()
    wal = ob.path.with_name(ob.path.name + "-wal")
    assert wal.exists()
    # an engineer's `sqlite3 outbox.db`, a backup or monitoring script: a real connection of another process
    look = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "print(c.execute('SELECT COUNT(*) FROM records').fetchone()[0]); c.close()"
    )
    out = subprocess.run(
        [sys.executable, "-c", look, str(ob.path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "200", out.stderr
    # formerly the cut-short check's open()/close() of the file dropped the writer's locks on it: that process
    # took the file for its own on closing, checkpointed and deleted the WAL the agent went on writing into
    assert wal.exists()
    for i in range(300):
        ob.append("result", {"j": i})
    ob.flush()
    # a power cut now: what is on the disk is what the next start finds (formerly 200 of 500)
    cut = tmp_path / "after_power_cut"
    for src in (ob.path, wal, ob.epoch_path):
        if src.exists():
            (cut / src.relative_to(data)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, cut / src.relative_to(data))
    ob.close()
    again = Outbox(OutboxSettings(), cut)
    again.open()
    assert again.moved_aside is None and again.stats()["by_kind"]["result"] == 500
    again.close()


def test_an_ack_arriving_while_the_store_is_renewed_is_not_undone_by_the_salvage(tmp_path):
    import threading

    ob = fill_outbox(tmp_path, 300)
    sent = [r.seq for r in ob.pending(100, 10**9)]  # a batch in flight to the cloud
    old_epoch = ob.epoch

    class Gate(threading.Condition):
        def __init__(self) -> None:
            super().__init__()
            self.waited = threading.Event()

        def wait_for(self, predicate, timeout=None):
            if not predicate():
                self.waited.set()  # a reader (the ack) waits for the renewal
            return super().wait_for(predicate, timeout)

    ob._gate = gate = Gate()  # no reader is in: the outbox is idle
    acked: list = []
    acker = threading.Thread(target=lambda: acked.append(ob.ack(sent)))
    real_move_aside = ob._move_aside

    def move_aside(*args, **kwargs):  # the gate is closed: the renewal holds it until the ack waits there
        acker.start()
        assert gate.waited.wait(30)
        return real_move_aside(*args, **kwargs)

    real_salvage = ob._salvage

    def salvage(*args, **kwargs):  # the gate is open again: the ack is done before the old records come in
        acker.join(30)
        return real_salvage(*args, **kwargs)

    ob._move_aside, ob._salvage = move_aside, salvage
    ob._want_renewal("a reader met a corrupt page")
    ob.append("result", {"wakes": "the writer"})
    wait_for(lambda: ob.stats()["renewals"] == 1, what="the renewal and its salvage to end")
    assert ob.epoch > old_epoch and acked
    # formerly the ack deleted nothing from the new store and the salvage copied all 100 back: sent again
    # in the new epoch, where the cloud cannot tell them for the ones it has
    left = {r.seq for r in ob.pending(1000, 10**9)}
    assert not left & set(sent)
    # (the result appended to wake the writer is committed during the copy or just after the renewal: wait for it)
    wait_for(
        lambda: ob.stats()["by_kind"]["result"] == 300 - 100 + 1,
        what="the 200 unacknowledged and the new one",
    )
    ob.close()


def test_an_ack_of_a_batch_sent_in_the_old_epoch_arriving_as_a_salvage_slice_is_written_is_not_undone(
    tmp_path,
):
    import threading

    events: list = []
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), tmp_path, on_event=events.append)
    ob.open()
    for i in range(600):
        ob.append("result", {"i": i, "pad": "p" * 200})
    ob.flush()
    seqs = [r.seq for r in ob.pending(600, 10**9)]
    first, in_flight = seqs[:100], seqs[100:]  # at the cloud; the second batch's ack is on its way
    acked: list = []
    acker = threading.Thread(target=lambda: acked.append(ob.ack(in_flight)))
    fired = threading.Event()

    class Store:  # the renewed store's connection, as the writer uses it; the ack comes as a slice is written
        def __init__(self, db) -> None:
            self.db = db

        def execute(self, sql, *args):
            if sql.startswith("BEGIN") and not fired.is_set():
                fired.set()
                acker.start()
                acker.join(10)
            return self.db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.db, name)

    real_connect = ob._connect
    ob._connect = lambda: Store(real_connect())
    damage_index(ob.path)
    ob.ack(first)  # its DELETE meets the damage: the store is renewed
    wait_for(lambda: ob.stats()["renewals"] == 1, what="the store to be renewed")
    assert fired.is_set() and acked == [0]
    # formerly the slice being written looked at the acknowledged seqs before the ack noted its own, and wrote
    # its rows after the ack's DELETE had found nothing: 156 records of the batch the cloud had stored in the old
    # epoch were back, sent again in the new one (twice at the cloud)
    left = [r.seq for r in ob.pending(1000, 10**9) if r.kind == "result"]
    assert left == [] and ob.stats()["by_kind"].get("result", 0) == 0
    corrupt = [e for e in events if e["kind"] == "outbox_corrupt"]
    assert [e["lost"] for e in corrupt] == [0] and not ob.dropped
    ob.close()


def test_while_a_corrupt_store_is_salvaged_new_records_are_committed_and_readable(tmp_path, monkeypatch):
    import threading

    import edge_agent.outbox.store as store

    release = threading.Event()  # the salvage of a large outbox, made slow until the test has looked
    real_intact = store._intact
    monkeypatch.setattr(store, "_intact", lambda row: (release.wait(0.002) or True) and real_intact(row))
    ob = fill_outbox(tmp_path, 2000)
    scribble_pages(ob.path, every=40)
    old_epoch = ob.epoch
    assert ob.pending(5000, 10**9) == []  # the uplink's read meets the damage: the writer renews the store
    try:
        wait_for(lambda: ob.epoch != old_epoch, what="the new store to be in place")
        seq = ob.append("result", {"new": 1})
        # formerly the writer copied the old records first (seconds for a large outbox) while appends
        # piled up in the hand-over queue (then waited, then were dropped) and readers waited at the gate
        wait_for(
            lambda: any(r.seq == seq for r in ob.pending(5000, 10**9)),
            what="the new record to be committed while the old ones are salvaged",
        )
        assert ob.stats()["renewals"] == 0  # the salvage is still going on
    finally:
        release.set()
    wait_for(lambda: ob.stats()["renewals"] == 1, what="the salvage to end")
    assert ob.stats()["salvaged"] >= 1000 and ob.stats()["by_kind"]["result"] == ob.stats()["salvaged"] + 1
    ob.close()


def test_status_never_waits_on_a_store_being_renewed(tmp_path):
    ob = fill_outbox(tmp_path, 20)
    ob.ack([r.seq for r in ob.pending(5)])  # the oldest is gone: stats() would read MIN(seq) again
    assert ob._close_gate()  # as while a removed store is copied out (seconds at a large outbox)
    try:
        st = in_thread(ob.stats, 5)  # formerly it waited at the gate for up to 30 s
        assert st["depth"] == 15 and st["oldest_seq"] is not None and st["oldest_seq"] <= 6
    finally:
        ob._open_gate()
    assert ob.stats()["oldest_seq"] == 6
    ob.close()


def test_a_store_that_lost_its_last_commits_never_gives_a_seq_that_was_sent_again(tmp_path):
    ob = Outbox(OutboxSettings(commit_batch=50, commit_interval_ms=5), tmp_path / "live")
    ob.open()
    for i in range(100):
        ob.append("result", {"i": i})
    ob.flush()
    con = sqlite3.connect(ob.path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    con.close()
    for i in range(100, 200):  # these commits are only in the WAL
        ob.append("result", {"i": i})
    ob.flush()
    sent = max(r.seq for r in ob.pending(1000, 10**9))  # the uplink sends them: the cloud has 1..200
    assert sent == 200
    # a power loss on a card that garbled part of its WAL: the files as they are on the disk, one frame damaged
    shutil.copytree(tmp_path / "live", tmp_path / "after")
    ob.close()
    wal = tmp_path / "after" / "outbox" / "outbox.db-wal"
    with open(wal, "r+b") as f:
        f.seek(32 + 24 + 4096)  # the second frame's page
        f.write(os.urandom(64))
    again = Outbox(OutboxSettings(), tmp_path / "after")
    again.open()  # SQLite rolls the WAL back to before the damage, without a word: the store ends at 100
    assert again.stats()["depth"] < 200
    # formerly the next record took seq 101 in the same epoch: the cloud took it for a replay and dropped it
    assert again.append("result", {"new": 1}) == 201
    again.close()


KILLED_IN_SALVAGE = """
store.SALVAGE_CHUNK = 100
ob, acked = filled(sys.argv[1])
copied = [0]
real_intact = store._intact


def intact(row):  # the power is cut (kill -9) as the salvage has copied about 1000 records
    copied[0] += 1
    if copied[0] == 1000:
        power_cut()
    return real_intact(row)


store._intact = intact
renew_by_ack(ob, acked)  # at the cloud; the DELETE meets the damage: the store is renewed
"""


def test_an_agent_killed_while_a_renewal_copies_the_old_records_finishes_the_copy_at_its_next_start(tmp_path):
    data = killed_child(KILLED_IN_SALVAGE, tmp_path / "data")
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    ob.open()
    try:
        # formerly the next start found a healthy new store holding the ~900 records copied so far: the others
        # were left in outbox-corrupt/ (removed by the next renewal), neither sent nor counted
        seqs = [r.seq for r in ob.pending(5000, 10**9) if r.kind == "result"]
        assert sorted(seqs) == list(range(101, 3001))
        assert not (data / "outbox-salvaging").exists()
        ob.flush()  # (the event is queued at open)
        told = [json.loads(r.payload) for r in ob.pending(5000, 10**9) if r.kind == "event"]
        assert [e["kind"] for e in told] == ["outbox_corrupt"]  # (formerly none: the kill came before it)
        assert told[0]["salvaged"] == 2900  # (formerly what this start copied: ~1900)
    finally:
        ob.close()


def test_an_agent_stopped_while_a_renewal_copies_the_old_records_finishes_the_copy_at_its_next_start(
    tmp_path, monkeypatch
):
    import threading

    import edge_agent.outbox.store as store

    monkeypatch.setattr(store, "SALVAGE_CHUNK", 100)
    data = tmp_path / "data"
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    ob.open()
    for i in range(3000):
        ob.append("result", {"i": i, "pad": "p" * 200})
    ob.flush()
    acked = [r.seq for r in ob.pending(100, 10**9)]
    copied = [0]
    real_intact = store._intact

    def intact(row):  # a clean stop (SIGTERM: close()) as the salvage has copied about 1000 records
        copied[0] += 1
        if copied[0] == 1000:
            threading.Thread(target=ob.close).start()
            ob._stop.wait(5)  # close() has flushed and asked the writer to stop
        return real_intact(row)

    monkeypatch.setattr(store, "_intact", intact)
    damage_index(ob.path)
    ob.ack(acked)  # at the cloud; the DELETE meets the damage: the store is renewed
    deadline = time.monotonic() + 30
    while ob._opened and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not ob._opened
    # formerly the copy's end was taken for its completion: the rest counted as corrupt:result, the marker removed
    assert ob.dropped.get("corrupt:result", 0) == 0
    assert (data / "outbox-salvaging").exists()
    monkeypatch.setattr(store, "_intact", real_intact)
    again = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    again.open()
    try:
        seqs = [r.seq for r in again.pending(5000, 10**9) if r.kind == "result"]
        assert sorted(seqs) == list(range(101, 3001))
        assert not (data / "outbox-salvaging").exists()
    finally:
        again.close()


@pytest.mark.parametrize("what", ["fifo", "outside", "huge"])
def test_an_unfinished_salvage_marker_naming_a_pipe_or_huge_seqs_does_not_hold_up_the_start(tmp_path, what):
    import threading

    data = tmp_path / "data"
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    ob.open()
    ob.append("result", {"i": 0})
    ob.close()
    epoch = sqlite3.connect(ob.path).execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
    job: dict = {"epoch": epoch, "last_seq": 0, "acked": []}
    if what == "fifo":  # a named pipe in outbox-corrupt/: formerly open() blocked for ever on its first read
        (data / "outbox-corrupt").mkdir(exist_ok=True)
        os.mkfifo(data / "outbox-corrupt" / "outbox.db.corrupt-1")
        job["src"] = str(data / "outbox-corrupt" / "outbox.db.corrupt-1")
    elif what == "outside":  # another store's file: formerly its records were copied into this outbox
        other = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), tmp_path / "elsewhere")
        other.open()
        for i in range(3):
            other.append("result", {"other": i})
        other.close()
        job["src"] = str(other.path)
    else:  # seqs far beyond this store's numbering: formerly taken as its last_seq (the next record 10**9 + 1)
        (data / "outbox-corrupt").mkdir(exist_ok=True)
        job["src"] = str(shutil.copy(ob.path, data / "outbox-corrupt" / "outbox.db.corrupt-1"))
        job["last_seq"] = 10**9
    (data / "outbox-salvaging").write_text(json.dumps(job))
    again = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    opener = threading.Thread(target=again.open, daemon=True)
    opener.start()
    opener.join(10)
    try:
        assert not opener.is_alive(), "open() did not return"
        assert not (data / "outbox-salvaging").exists()
        assert [r.seq for r in again.pending(10, 10**9)] == [1]
        assert again.append("result", {"i": 1}) == 2
    finally:
        if what == "fifo" and opener.is_alive():  # (unblock the former code's reader)
            fd = os.open(job["src"], os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"x" * 100)
            os.close(fd)
            opener.join(10)
        again.close()


def test_a_store_found_corrupt_beside_a_renewal_marker_naming_acked_seqs_past_sqlites_integers_starts(
    tmp_path,
):
    """A renewal's marker killed before its move (a garbled or hand-edited one) names acked seqs up to 2**63 - 1 and
    the store is found corrupt at start: the new store was numbered there and OverflowError went out of every start.
    Such acks are not taken: the records are copied (sent again rather than lost)."""
    data = tmp_path / "data"
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    ob.open()
    for i in range(5):
        ob.append("result", {"i": i})
    ob.close()
    damage_index(ob.path)
    mark = {"src": str(data / "outbox-corrupt" / "outbox.db.corrupt-1"), "last_seq": 0, "from": 0}
    mark |= {"acked": [[1, 2**63 - 1]], "epoch": ob.epoch + 1, "previous_epoch": ob.epoch, "earlier": []}
    (data / "outbox-salvaging").write_text(json.dumps(mark))
    for _ in range(2):
        again = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
        again.open()
        try:
            assert [r.seq for r in again.pending(10, 10**9) if r.kind == "result"] == [1, 2, 3, 4, 5]
        finally:
            again.close()


@pytest.mark.parametrize("marker", ["deep", "pipe", "nul", "surrogate"])
def test_an_unfinished_salvage_marker_nested_past_the_parser_or_a_named_pipe_does_not_stop_the_start(
    tmp_path, marker
):
    """The marker itself nested past JSON's depth raised RecursionError out of every start; a named pipe in its place
    held the start for ever; a file name with a NUL or a lone surrogate raised ValueError or UnicodeEncodeError out of
    every start."""
    data = tmp_path / "data"
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    ob.open()
    ob.append("result", {"i": 0})
    ob.close()
    if marker == "deep":
        (data / "outbox-salvaging").write_text("[" * 100_000)
    elif marker == "pipe":
        os.mkfifo(data / "outbox-salvaging")
    else:
        src = "a\0b" if marker == "nul" else "a\ud800b"  # (json.dumps writes both as \u escapes)
        (data / "outbox-salvaging").write_text(json.dumps({"src": src, "epoch": 1, "previous_epoch": 0}))
    again = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    try:
        in_thread(again.open, 10)
        assert [r.seq for r in again.pending(10, 10**9)] == [1]
    finally:
        if marker == "pipe":  # (a reader the former code left waiting on it: let it go)
            with contextlib.suppress(OSError):
                os.close(os.open(data / "outbox-salvaging", os.O_WRONLY | os.O_NONBLOCK))
        again.close()


KILLED_IN_RENEWAL = """
ob, acked = filled(sys.argv[1])


def kill(*a, **k):  # the power is cut right after the old store was moved aside
    power_cut()


if sys.argv[3] == "moved":
    ob._connect = kill  # before the new store exists
elif sys.argv[3] == "half-made":
    ob._write_epoch_file = kill  # the new store made, its epoch not yet in it
else:  # its epoch written (formerly its numbering, last_seq, came in a commit of its own after it)
    connect = ob._connect
    ob._connect = lambda *a, **k: CutAfterTheEpoch(connect(*a, **k))
renew_by_ack(ob, acked)  # at the cloud; the DELETE meets the damage: the store is renewed
"""


@pytest.mark.parametrize("when", ["moved", "half-made", "epoch"])
def test_an_agent_killed_just_after_a_renewal_moved_the_store_aside_copies_it_at_its_next_start(
    tmp_path, when
):
    data = killed_child(KILLED_IN_RENEWAL, tmp_path / "data", when)
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    ob.open()
    try:
        # formerly the marker was written only once the new store had its epoch: the next start found a healthy
        # empty store and never went back to the moved-aside file (all 2,900 records neither sent nor counted);
        # "epoch": a store with its epoch and no numbering yet, the copy refused ("last_seq 3000 outside 0..0")
        seqs = [r.seq for r in ob.pending(5000, 10**9) if r.kind == "result"]
        assert sorted(seqs) == list(range(101, 3001))
        assert not (data / "outbox-salvaging").exists()
        # the renewal the kill cut off is told by the start that completes it (formerly no outbox_corrupt event)
        ob.flush()  # (the event is queued at open)
        told = [json.loads(r.payload) for r in ob.pending(5000, 10**9) if r.kind == "event"]
        assert [(e["kind"], e["salvaged"], e["epoch"]) for e in told] == [("outbox_corrupt", 2900, ob.epoch)]
        assert ob.append("result", {"new": 1}) == 3002  # (after the event, 3001)
    finally:
        ob.close()


# a corrupt store's renewal killed once it moved the store aside; then a start making the new store in the marker's
# epoch (``_adopt_epoch``: a marker naming no epoch it renews, as a WAL found alone writes it) killed once the statement
# writing that epoch is done
RENEWAL_KILLED_AFTER_THE_MOVE = """
ob, acked = filled(sys.argv[1], 100)
cut_after(store.Outbox, "_move_aside")
renew_by_ack(ob, acked[:1])
"""
START_KILLED_AS_IT_ADOPTS_THE_EPOCH = """
adopt = store.Outbox._adopt_epoch
store.Outbox._adopt_epoch = lambda self, db, job: adopt(self, CutAfterTheEpoch(db), job)
store.Outbox(OutboxSettings(commit_interval_ms=10, retention={}), sys.argv[1]).open()
"""


def test_a_start_killed_as_it_adopts_a_renewals_epoch_leaves_the_copy_to_the_next(tmp_path):
    """Formerly the adopted epoch and the numbering were two commits: a kill between them left a store the next start
    took as made and numbered 0, which refused the copy ("last_seq 100 outside 0..0"): the 99 records left in
    outbox-corrupt/, told by no event."""
    data = killed_child(RENEWAL_KILLED_AFTER_THE_MOVE, tmp_path / "data")
    marker = data / "outbox-salvaging"
    mark = json.loads(marker.read_text())
    del mark["previous_epoch"]
    marker.write_text(json.dumps(mark))
    killed_child(START_KILLED_AS_IT_ADOPTS_THE_EPOCH, data)
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    ob.open()
    try:
        assert sorted(r.seq for r in ob.pending(500, 10**9) if r.kind == "result") == list(range(2, 101))
    finally:
        ob.close()


# the store turns corrupt while the agent runs; its renewal copies every readable record and the power is cut right
# after it drops its marker (the copy done), before the writer commits its outbox_corrupt event
KILLED_ONCE_A_RENEWALS_COPY_IS_DONE = """
ob, acked = filled(sys.argv[1], 500)
real_write = store.Outbox._write_salvaging


def write(self, job):
    real_write(self, job)
    if job is None:
        power_cut()


store.Outbox._write_salvaging = write  # (after the open: the renewal's last marker write is the first with None)
renew_by_ack(ob, acked)  # at the cloud; the DELETE meets the damage: the store is renewed
"""


def test_an_agent_killed_once_a_renewals_copy_is_done_still_tells_that_renewal_once(tmp_path):
    data = killed_child(KILLED_ONCE_A_RENEWALS_COPY_IS_DONE, tmp_path / "data")
    assert not (data / "outbox-salvaging").exists()  # (the kill came after the marker was dropped)
    for start in range(2):
        ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
        ob.open()
        try:
            assert sorted(r.seq for r in ob.pending(5000, 10**9) if r.kind == "result") == list(
                range(101, 501)
            )
            ob.flush()  # (the event is committed at open)
            told = [json.loads(r.payload) for r in ob.pending(5000, 10**9) if r.kind == "event"]
            # formerly none: the kill came before the writer committed it, and nothing on disk said it was owed;
            # the renewal's counts as it made them (the 100 acknowledged records at the cloud, none lost)
            assert [(e["kind"], e["salvaged"], e["lost"]) for e in told] == [("outbox_corrupt", 400, 0)], (
                start
            )
            assert told[0]["epoch"] == ob.epoch and told[0]["previous_epoch"] < ob.epoch
            assert not (data / "outbox-untold").exists() and not ob.dropped
        finally:
            ob.close()


class SlowClock:
    """The ``time`` module as the outbox sees it, with a monotonic clock a test moves on (a copy that reaches its
    time limit without the test waiting for it); every other function is the real one."""

    def __init__(self) -> None:
        self.ahead_s = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead_s

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.mark.parametrize("cut", ["time_limit", "disk_error", "corrupt_at_next_start", "background"])
def test_a_renewal_while_an_earlier_copy_is_unfinished_copies_the_rest_of_that_one_too(
    tmp_path, monkeypatch, cut
):
    """A start's copy of a corrupt store's records cut off by its time limit (or, at the next start, by a disk
    error) is left for later; the store it copies into is then renewed in turn (while running, or found corrupt at
    the next start): the rest of the first copy is copied too, never dropped. Left alone, the copy goes on while the
    agent runs ("background")."""
    import edge_agent.outbox.store as store

    monkeypatch.setattr(store, "SALVAGE_CHUNK", 100)
    data = tmp_path / "data"
    fill_outbox(data, 3000).close()
    damage_index(
        data / "outbox" / "outbox.db"
    )  # corrupt at the next start: renewed there, its records copied
    clock = SlowClock()
    monkeypatch.setattr(store, "time", clock)
    copied = [0]
    real_intact = store._intact

    def intact(row):  # the start's copy reaches its 30-s limit after about 1000 records
        copied[0] += 1
        if copied[0] == 1000:
            clock.ahead_s += store.SALVAGE_S + 1
        return real_intact(row)

    monkeypatch.setattr(store, "_intact", intact)
    if cut != "background":  # (not gone on with while running yet when the store turns corrupt in its turn)
        monkeypatch.setattr(Outbox, "_go_on_copying", lambda self: None)
    settings = OutboxSettings(commit_interval_ms=10, retention={})
    ob = Outbox(settings, data)
    ob.open()
    monkeypatch.setattr(store, "_intact", real_intact)
    if cut == "background":  # formerly the rest waited for the next start
        wait_for(lambda: not (data / "outbox-salvaging").exists(), what="the copy to go on while running")
        seqs = sorted(r.seq for r in ob.pending(5000, 10**9) if r.kind == "result")
        assert seqs == list(range(1, 3001)) and ob.stats()["by_kind"]["result"] == 3000
        assert ob.stats()["salvaged"] == 3000 and not ob.dropped
        ob.close()
        return
    assert (data / "outbox-salvaging").exists()  # the rest is for later
    if cut == "disk_error":  # the next start cannot resume it (a disk error): left for later again
        ob.close()
        real_salvage = Outbox._salvage

        def refused(self, *a, **k):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(Outbox, "_salvage", refused)
        ob = Outbox(settings, data)
        ob.open()
        monkeypatch.setattr(Outbox, "_salvage", real_salvage)
        assert (data / "outbox-salvaging").exists()
    if cut == "corrupt_at_next_start":
        ob.close()
        damage_index(ob.path)
        ob = Outbox(settings, data)
        ob.open()  # formerly its marker replaced the earlier one: the ~2,000 records not yet copied were dropped
        seqs = sorted(r.seq for r in ob.pending(5000, 10**9) if r.kind == "result")
        assert seqs == list(range(1, 3001)) and not (data / "outbox-salvaging").exists()
        ob.close()
        return
    try:
        depth = ob.stats()["depth"]
        assert 0 < depth < 2000
        acked = [r.seq for r in ob.pending(100, 10**9)]
        damage_index(ob.path)  # the store turns corrupt while running: renewed again
        ob.ack(acked)
        wait_for(lambda: ob.stats()["renewals"] >= 1 + (cut == "time_limit"), what="the store to be renewed")
        # formerly this renewal's marker replaced the earlier one, and its move removed the earlier file: the
        # ~2,000 records the first copy had not reached were neither sent nor counted
        seqs = sorted(r.seq for r in ob.pending(5000, 10**9) if r.kind == "result")
        assert seqs == [q for q in range(1, 3001) if q not in acked]
        assert not ob.dropped
    finally:
        ob.close()
    again = Outbox(settings, data)
    again.open()
    try:
        assert sorted(r.seq for r in again.pending(5000, 10**9) if r.kind == "result") == [
            q for q in range(1, 3001) if q not in acked
        ]
        assert not (data / "outbox-salvaging").exists()
    finally:
        again.close()


KILLED_BEFORE_MOVE = """
ob, acked = filled(sys.argv[1], owner=tuple(sys.argv[4].split("/")) if len(sys.argv) > 4 else None)
real_mark = store.Outbox._write_mark
real_move = store._move_file


def mark(path, m):  # the power is cut: the renewal's marker written, its move not yet recorded ("before")
    if path.name == store.MOVING_FILE and m is not None and sys.argv[3] == "before":
        power_cut()
    real_mark(path, m)


def move(*a, **k):  # or the move recorded, no file moved yet ("recorded"); or right after the first file ("after")
    if sys.argv[3] == "recorded":
        power_cut()
    real_move(*a, **k)
    if sys.argv[3] == "after":
        power_cut()


store.Outbox._write_mark = staticmethod(mark)
store._move_file = move
renew_by_ack(ob, acked)  # at the cloud; the DELETE meets the damage: the store is renewed
"""


def _killed_in_renewal(tmp_path, when: str, *owner: str):
    return killed_child(KILLED_BEFORE_MOVE, tmp_path / "data", when, *owner)


@pytest.mark.parametrize("when", ["before", "recorded"])
def test_an_agent_killed_between_a_renewals_marker_and_its_move_does_not_send_acknowledged_records_again(
    tmp_path, when
):
    data = _killed_in_renewal(tmp_path, when)
    assert json.loads((data / "outbox-salvaging").read_text())["acked"] == [[1, 100]]
    # "before": the store still at its path, no move recorded (the window the start's _carried_at_open and
    # _renewal_cut_before_move handle); "recorded": the move recorded, the store not yet moved (_finish_move)
    assert (data / "outbox-moving").exists() == (when == "recorded")
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    ob.open()
    try:
        # formerly the start renewed the store with a marker of its own, without the acknowledged seqs: 1-100,
        # at the cloud in the old epoch, were copied into the new one and sent again (twice at the cloud)
        seqs = [r.seq for r in ob.pending(5000, 10**9) if r.kind == "result"]
        assert sorted(seqs) == list(range(101, 3001))
        assert not (data / "outbox-salvaging").exists()
    finally:
        ob.close()


def test_a_renewal_killed_after_its_move_is_held_when_the_gateway_starts_under_another_tenant(tmp_path):
    data = _killed_in_renewal(tmp_path, "after", "acme/gw1")
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data, owner=("beta", "gw1"))
    ob.open()
    try:
        # formerly the resume copied acme's 2,900 records into beta's new store, to be sent to beta
        assert ob.pending(5000, 10**9) == []
        held = ob.stats()["held"]
        assert [f["tenant"] for f in held["files"]] == ["acme"]
        kept = sqlite3.connect(held["files"][0]["file"])
        assert kept.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 3000
        kept.close()
        assert not (data / "outbox-salvaging").exists()
    finally:
        ob.close()
    again = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data, owner=("acme", "gw1"))
    again.open()  # moved back: acme's records stay held (as every held store), never lost
    try:
        assert len(again.stats()["held"]["files"]) == 1
    finally:
        again.close()


KILLED_AT_OPEN_AFTER_MOVE = """
real_move = store._move_file


def kill(*a, **k):  # the power is cut right after the corrupt store was moved aside at start
    real_move(*a, **k)
    power_cut()


store._move_file = kill
store.Outbox(OutboxSettings(), sys.argv[1]).open()
"""


def test_an_agent_killed_just_after_its_start_moved_a_corrupt_store_aside_copies_it_at_its_next_start(
    tmp_path,
):
    data = tmp_path / "data"
    fill_outbox(data, 3000).close()
    damage_index(data / "outbox" / "outbox.db")
    killed_child(KILLED_AT_OPEN_AFTER_MOVE, data)
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    ob.open()
    try:
        # formerly the start wrote its marker only after the move: the next start found no store and no marker,
        # started an empty one, and the 3,000 records were left in outbox-corrupt/ unnamed (removed by the next
        # renewal), neither sent nor counted
        seqs = [r.seq for r in ob.pending(5000, 10**9) if r.kind == "result"]
        assert sorted(seqs) == list(range(1, 3001))
        assert not (data / "outbox-salvaging").exists()
    finally:
        ob.close()


KILLED_BETWEEN_STORE_AND_WAL_MOVE = """
ob, _ = filled(sys.argv[1])
assert os.path.getsize(str(ob.path) + "-wal") > 0  # the last commits are in the WAL only
# another connection on the store (a reader): closing the writer's does not fold the WAL in and remove it
reader = store.sqlite3.connect(ob.path)
reader.execute("SELECT COUNT(*) FROM records").fetchall()
real_move = store._move_file


def kill(src, dst):  # the power is cut after the store was moved aside, before its -wal was
    real_move(src, dst)
    if src.name == "outbox.db":
        power_cut()


store._move_file = kill
ob._want_renewal("database disk image is malformed")
ob.append("result", {"i": 3000, "pad": "p"})
ob.flush()
time.sleep(30)
"""


def test_an_agent_killed_between_moving_a_store_aside_and_moving_its_wal_loses_no_record(tmp_path):
    data = killed_child(KILLED_BETWEEN_STORE_AND_WAL_MOVE, tmp_path / "data")
    assert (data / "outbox" / "outbox.db-wal").exists() and not (data / "outbox" / "outbox.db").exists()
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    ob.open()
    try:
        # formerly the new store was made beside the old store's WAL: SQLite replayed it, the store came up in the
        # old epoch, the copy was refused as another epoch's and its marker dropped (a later renewal removed the
        # file): records the old store committed last (in its WAL only) were neither sent nor counted
        seqs = [r.seq for r in ob.pending(5000, 10**9) if r.kind == "result"]
        assert sorted(seqs)[:3000] == list(range(1, 3001))
        assert not (data / "outbox-salvaging").exists()
        assert not ob.dropped
    finally:
        ob.close()


def test_close_wakes_a_wait_for_a_commit_that_an_ended_writer_never_makes(tmp_path):
    ob = Outbox(OutboxSettings(commit_interval_ms=10), tmp_path / "data")
    ob.open()
    ob.append("result", {"i": 0})
    ob._q.put(None)  # the writer commits what it holds and ends, as one that died would
    ob._writer.join(10)
    seq = ob.append("result", {"i": 1})  # taken into the hand-over queue; no writer commits it
    out: dict = {}
    waiter = threading.Thread(target=lambda: out.update(kept=ob.wait_committed(seq, 60)), daemon=True)
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # (waiting)
    ob.close()  # formerly its flush waited 10 s for the commit, and the waiter its own bound (the uplink's ~1 s)
    waiter.join(10)
    assert not waiter.is_alive() and out == {"kept": False}


def _wiped_starts_ingested(tmp_path, monkeypatch, clocks) -> list[int]:
    """A new outbox (a wiped data folder) started at each wall clock of ``clocks``, one record appended and ingested
    by one cloud store as agent gw1's (each must be stored, not taken for a duplicate); the outboxes' epochs."""
    from cloud_trainer.fleet.store import SQLiteStore
    from edge_agent.outbox import store as outbox_store

    epochs, cloud = [], SQLiteStore(tmp_path / "fleet.db")
    for n, clock in enumerate(clocks):
        monkeypatch.setattr(outbox_store.time, "time", lambda c=clock: c)
        ob = Outbox(OutboxSettings(), tmp_path / f"flash{n}")
        ob.open()
        ob.append("result", {"flash": n})
        ob.flush()
        recs = [
            {"epoch": ob.epoch, "seq": r.seq, "kind": r.kind, "t": r.t, "payload": r.payload.decode()}
            for r in ob.pending()
        ]
        assert cloud.ingest("gw1", recs)[1:] == (1, 0)  # stored, not a duplicate
        epochs.append(ob.epoch)
        ob.close()
    return epochs


def test_a_wiped_data_folder_started_twice_before_the_clock_was_set_takes_two_epochs_the_cloud_keeps_apart(
    tmp_path, monkeypatch
) -> None:
    """A gateway without a battery-backed clock starts the agent before NTP sets the clock (1970, 40 s after boot),
    on a wiped data folder (a re-flashed SD card), twice: each outbox is new, with no last epoch to follow. The epoch
    came from the clock: 40 both times, the second gateway's records (epoch 40, seq 1...) the first's identities,
    stored by the cloud as duplicates of them, i.e. lost. Now a clock before CLOCK_SET_AFTER gives a random epoch
    below any a set clock gives: the two differ, the cloud keeps both, and an outbox started once the clock is set
    is newer."""
    from edge_agent.outbox import store as outbox_store

    real = time.time
    epochs = _wiped_starts_ingested(tmp_path, monkeypatch, (40.0, 40.0))
    assert epochs[0] != epochs[1] and max(epochs) < real()
    monkeypatch.setattr(outbox_store.time, "time", real)  # NTP set the clock
    ob = Outbox(OutboxSettings(), tmp_path / "flash2")
    ob.open()
    assert ob.epoch > max(epochs)
    ob.close()


def test_two_reflashes_of_one_image_started_in_the_same_second_take_two_epochs_the_cloud_keeps_apart(
    tmp_path, monkeypatch
) -> None:
    """A gateway without a battery-backed clock boots at its image's date, not 1970 (systemd's build date or
    /usr/lib/clock-epoch, timesyncd's or fake-hwclock's saved time): two re-flashed cards of one image (2025-01-01)
    start the agent on a wiped data folder 40 s after boot, within the same second. The epoch was the unix time in
    seconds: 1735689640 both times, the second card's records (epoch, seq 1...) the first's identities, stored by
    the cloud as duplicates of them, i.e. lost. Now it is in microseconds: the two differ, above any epoch of
    seconds, and the cloud keeps both."""
    epochs = _wiped_starts_ingested(tmp_path, monkeypatch, (1_735_689_640.25, 1_735_689_640.75))
    assert epochs[0] != epochs[1] and min(epochs) > 2_000_000_000  # above any epoch in seconds (until 2033)
