"""The outbox on a real small disk that fills up or turns read-only (a 2 MB tmpfs mounted by the test; the
tests skip, saying why, where mounting is not permitted): appends never hang, lost records are counted as
write_failed and reported, the outbox writes again once there is room, close() is bounded; at start a full
or read-only disk refuses to start in one line and never moves a healthy outbox aside."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from edge_agent.outbox.errors import OutboxError
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from tests.support.peers import small_tmpfs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MB file system (tmpfs): SQLite meets ENOSPC / EROFS as it would on a gateway's disk."""
    with small_tmpfs(tmp_path / "disk", "2m") as mnt:
        yield mnt


def fill(disk: Path) -> Path:
    """Take every free byte of the disk."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            for size in (65536, 4096, 512, 1):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True)


def in_thread(fn, timeout_s: float):
    """Run fn in a thread; fail (instead of hanging the suite) if it does not return in time."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed back to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), f"{fn} did not return within {timeout_s} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_a_full_disk_drops_counted_records_without_hanging_and_the_outbox_writes_again_once_there_is_room(
    small_disk,
):
    events = []
    ob = Outbox(OutboxSettings(commit_batch=50), small_disk / "data", on_event=events.append)
    ob.open()
    for i in range(10):
        ob.append("result", {"i": i})
    ob.flush()
    filler = fill(small_disk)

    def burst():
        for i in range(1000):
            ob.append("result", {"i": i, "pad": "x" * 200})
        ob.flush()

    started = time.monotonic()
    in_thread(burst, 60)  # formerly: the writer thread died and append() blocked for ever
    assert time.monotonic() - started < 30
    assert ob._writer is not None and ob._writer.is_alive()
    lost = ob.dropped["write_failed:result"]
    assert lost > 0
    assert ob.stats()["by_kind"].get("result", 0) + lost == 1010  # every record is stored or counted

    filler.unlink()  # room again
    for i in range(20):
        ob.append("result", {"after": i})
    ob.flush()
    assert ob.stats()["by_kind"]["result"] == 1010 - lost + 20  # it writes again
    # reported once it could write again (a drop event queued while the disk was full is itself counted)
    failed = [e for e in events if e["kind"] == "outbox_write_failed"]
    lost_all = sum(n for k, n in ob.dropped.items() if k.startswith("write_failed:"))
    assert failed and sum(e["dropped"] for e in failed) == lost_all
    assert sum(e["by_kind"].get("result", 0) for e in failed) == lost
    assert all(e["ranges"] and e["epoch"] == ob.epoch for e in failed)
    in_thread(ob.close, 30)

    again = Outbox(OutboxSettings(), small_disk / "data")
    again.open()  # the count survives the process
    assert again.dropped_total["write_failed:result"] == lost
    again.close()


def test_wait_committed_tells_a_record_its_failed_commit_dropped_from_one_it_kept(small_disk):
    ob = Outbox(OutboxSettings(commit_interval_ms=10), small_disk / "data")
    ob.open()
    kept = ob.append("event", {"i": 0})
    assert ob.wait_committed(kept, 10) and not ob.lost(kept)
    filler = fill(small_disk)
    dropped = ob.append("event", {"i": 1, "pad": "x" * 300_000})  # the WAL must grow by it: no room
    # formerly True: a failed commit counted as reached, and a caller forgot what it owed (an episode's end)
    assert not in_thread(lambda: ob.wait_committed(dropped, 10), 30)
    assert ob.lost(dropped) and ob.committed_seq >= dropped and ob.write_failing
    assert ob.dropped == {"write_failed:event": 1}
    # a flush while the disk refuses (an alarm's, a start's) waits with the drop report: formerly it forced the
    # report, whose own commit failed, and the cloud showed the dropped seq's gap as unknown for good
    ob.flush(2)
    filler.unlink()
    again = ob.append("event", {"i": 2})
    assert ob.wait_committed(again, 10) and not ob.lost(again) and not ob.write_failing
    assert not ob.lost(kept)
    in_thread(ob.flush, 30)  # the drop report, now that the outbox writes
    told = [json.loads(r.payload) for r in ob.pending(100, 1 << 30) if r.kind == "event"]
    ranges = [q for t in told if t.get("kind") == "outbox_write_failed" for q in t["ranges"]]
    assert any(a <= dropped <= b for a, b in ranges), told
    in_thread(ob.close, 30)


def test_a_drop_report_lost_with_its_commit_on_a_nearly_full_disk_gives_its_seqs_to_the_next_report(
    small_disk,
):
    """A nearly full disk: a small commit goes through, the next round, with a big record, fails. The drop report
    told at the first good commit went in that round: formerly lost with it, and the seqs it carried were told by
    no report (the cloud showed their gap as unknown for good)."""
    ob = Outbox(OutboxSettings(commit_interval_ms=300), small_disk / "data")
    ob.open()
    filler = fill(small_disk)
    dropped = ob.append("event", {"i": 1, "pad": "x" * 300_000})
    assert not in_thread(lambda: ob.wait_committed(dropped, 10), 30) and ob.lost(dropped)
    filler.unlink()
    assert ob.wait_committed(ob.append("event", {"i": 2}), 10)  # the first good commit: the report is queued
    filler = fill(small_disk)
    big = ob.append("result", {"pad": "y" * 300_000})  # in the report's round: it fails
    assert not in_thread(lambda: ob.wait_committed(big, 10), 30)
    filler.unlink()
    assert ob.wait_committed(ob.append("event", {"i": 3}), 10)
    in_thread(ob.flush, 30)
    told = [json.loads(r.payload) for r in ob.pending(100, 1 << 30) if r.kind == "event"]
    ranges = [q for t in told if t.get("kind") == "outbox_write_failed" for q in t["ranges"]]
    assert any(a <= dropped <= b for a, b in ranges) and any(a <= big <= b for a, b in ranges), told
    in_thread(ob.close, 30)


def test_lost_knows_at_least_the_newest_seqs_its_bound_keeps_after_many_failed_commits(tmp_path):
    from edge_agent.outbox.store import LOST_SEQS_MAX

    ob = Outbox(OutboxSettings(), tmp_path / "data")
    ob.open()
    try:
        rounds = 3 * LOST_SEQS_MAX // 500
        with ob._lock:  # as the writer notes a failed commit's seqs (a full disk for a long while)
            for r in range(rounds):
                ob._note_lost(range(r * 500 + 1, (r + 1) * 500 + 1))
        newest = rounds * 500
        assert all(ob.lost(q) for q in range(newest - LOST_SEQS_MAX + 1, newest + 1))
        assert not ob.lost(1) and not ob.lost(newest + 1)
    finally:
        ob.close()


async def test_an_episodes_end_dropped_by_its_commit_on_a_full_disk_stays_owed_and_is_recorded_again(
    small_disk, monkeypatch, caplog
):
    import sqlite3

    import edge_agent.agent as agent_module
    import edge_agent.outbox.store as store_module
    from edge_agent.agent import EPISODES_FILE, Agent
    from edge_agent.config import parse_config
    from protocols.events import Event, EventKind
    from tests.support.recorded import recorded_events
    from tests.support.waits import until

    monkeypatch.setattr(agent_module, "EPISODE_RETELL_POLL_S", 0.05)
    # (the retry the former code made every 30 s while the disk stayed full, scaled down)
    monkeypatch.setattr(agent_module, "EPISODE_RETELL_S", 0.1, raising=False)
    monkeypatch.setattr(store_module, "WRITE_PROBE_S", 0.1)
    data = small_disk / "data"
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw1", "site": "plant", "line": "line2", "data_dir": str(data)},
                "http": {"enabled": False},
                "outbox": {"commit_interval_ms": 1000},  # the end and the record before it: one commit
            }
        )
    )
    await agent.start()
    fields = {
        "pipeline": "inspect",
        "slot": "vision",
        "model_version": "1.0.0",
        "share": 0.9,
        "items": 20,
        "reasons": {"nonfinite_output": 18},
        "failed": 18,
    }

    def owed() -> list:
        return list(json.loads((data / EPISODES_FILE).read_text()))

    async def episode_whose_end_is_dropped(n: int) -> Path:
        """An episode begun (committed), then its end dropped by a commit on the filled disk; the filler returned."""
        agent._event(Event(EventKind.MODEL_FAILING, active=True, message=f"failing {n}", **fields))
        await asyncio.to_thread(agent.outbox.flush)
        filler = fill(small_disk)
        # a record the WAL must grow for (no room), then the end, in the writer's same round: the commit fails
        await asyncio.to_thread(agent.outbox.append, "result", {"pad": "x" * 300_000})
        agent._event(Event(EventKind.MODEL_FAILING, active=False, message=f"ended {n}", **fields))
        await until(lambda: agent.outbox.dropped["write_failed:event"] == n, what=f"end {n} dropped")
        return filler

    def told() -> list:
        return [(r["active"], r["message"]) for r in recorded_events(agent, "model_failing")]

    try:
        caplog.set_level("INFO", logger="edge_agent")
        # a reader's snapshot (a backup script) keeps SQLite from writing the WAL over from its start: every write,
        # the smallest too, needs room the full disk does not have, as long as the disk stays full
        reader = sqlite3.connect(data / "outbox" / "outbox.db")
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM records").fetchone()
        filler = await episode_whose_end_is_dropped(1)
        await asyncio.sleep(1.5)  # the disk stays full over the writer's next rounds (1 s each)
        assert owed() == ["model_failing:inspect"]  # owed until its end is on disk
        # formerly tried again every 30 s while the disk stayed full, each try dropped too: one more write_failed
        # gap at the cloud each time, and an INFO line "recorded again" that was not true
        assert agent.outbox.dropped["write_failed:event"] == 1 and agent.outbox.write_failing
        assert "recorded again" not in caplog.text and "recorded once the outbox writes again" in caplog.text
        reader.close()
        filler.unlink()
        # nothing appended from here on (an idle agent): the outbox finds out by itself that it writes again
        # formerly the agent forgot the end at its failed commit (the file kept it only while the full disk failed
        # the file's own write too): never recorded again, the cloud's last word on the episode was its start
        await until(lambda: owed() == [], what="the end recorded again, then forgotten")
        assert told() == [(True, "failing 1"), (False, "ended 1")]
        assert agent.outbox.dropped["write_failed:event"] == 1
        # again, but the pipeline fails anew as the disk frees, before the end is retold: the newer start stands
        (await episode_whose_end_is_dropped(2)).unlink()
        agent._event(Event(EventKind.MODEL_FAILING, active=True, message="failing 3", **fields))
        await until(lambda: not agent._episode_waits, what="the second end's wait over")
        # formerly the dropped end was retold after the newer start: the cloud's newest word, ended, while failing
        assert told()[2:] == [(True, "failing 2"), (True, "failing 3")]
        assert owed() == ["model_failing:inspect"]
    finally:
        await agent.stop()


def test_an_idle_outbox_ends_a_write_failure_only_once_there_is_room_for_what_failed(small_disk, monkeypatch):
    """The write an idle outbox tries while its commits fail proves room for the batch that failed, not for a page:
    on a disk with room for a page and not for that batch, the failure ended for a moment at each try ("writing
    again"): the drop report (and an episode's end owed) recorded then was dropped again, one more gap each time."""
    import edge_agent.outbox.store as store_module
    from tests.integration.test_outbox_store_faults import wait_for

    monkeypatch.setattr(store_module, "WRITE_PROBE_S", 0.05)
    ob = Outbox(OutboxSettings(commit_interval_ms=10), small_disk / "data")
    ob.open()
    try:
        ob.append("result", {"i": 0})
        ob.flush()
        filler = fill(small_disk)
        ob.append("result", {"pad": "x" * 40_000})
        ob.flush()
        assert ob.write_failing
        os.truncate(filler, filler.stat().st_size - 16384)  # room for a few pages, not for the record
        time.sleep(0.5)  # about ten tries
        # formerly each try ended the failure ("writing again"), and the drop report that then went was dropped by
        # its own commit: one more outbox_write_failed event lost at each try (every 5 s for as long as it lasted)
        assert ob.dropped["write_failed:event"] == 0 and ob.write_failing
        filler.unlink()
        wait_for(lambda: not ob.write_failing, 10, "the failure ended once there is room")
    finally:
        in_thread(ob.close, 30)


def test_an_idle_outbox_on_a_full_disk_does_not_write_its_wal_again_at_every_try(small_disk, monkeypatch):
    """While the disk stays full, the write an idle outbox tries (as many bytes as the batch that failed) is not
    made while the file system says it has no room for it: each try wrote the WAL's free part again before it met
    the full disk (here ~700 KB a try; formerly 12 GB a day at the 5-s try, on a gateway's flash)."""
    import sqlite3

    import edge_agent.outbox.store as store_module

    def written() -> int:  # bytes this process handed to write(2) so far
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("wchar"))

    monkeypatch.setattr(store_module, "WRITE_PROBE_S", 0.05)
    ob = Outbox(OutboxSettings(commit_interval_ms=10), small_disk / "data")
    ob.open()
    try:
        ob.append("result", {"pad": "y" * 300_000})
        ob.flush()
        con = sqlite3.connect(ob.path)
        con.execute("PRAGMA wal_checkpoint(FULL)").fetchall()
        con.close()
        ob.append("result", {"i": 1})  # the WAL written again from its start: its free part ~700 KB
        ob.flush()
        fill(small_disk)
        ob.append("result", {"pad": "x" * 900_000})
        ob.flush()
        assert ob.write_failing
        before = written()
        time.sleep(0.5)  # about ten tries
        assert written() - before < 100_000 and ob.write_failing
    finally:
        in_thread(ob.close, 30)


def test_status_says_why_the_outbox_cannot_write_while_the_disk_refuses_and_no_more_once_it_writes(
    small_disk,
):
    ob = Outbox(OutboxSettings(commit_interval_ms=10), small_disk / "data")
    ob.open()
    ob.append("result", {"i": 0})
    ob.flush()
    assert ob.stats()["write_error"] is None
    filler = fill(small_disk)
    for i in range(200):
        ob.append("result", {"i": i, "pad": "x" * 200})
    ob.flush()
    assert ob.dropped["write_failed:result"] > 0
    # formerly /status showed only the write_failed counts growing, not that the disk refuses now, nor why
    error = ob.stats()["write_error"]
    assert error is not None and "SQLITE_FULL" in error["cause"] and error["since"] <= time.time()
    filler.unlink()
    ob.append("result", {"after": 1})
    ob.flush()
    assert ob.stats()["write_error"] is None
    in_thread(ob.close, 30)


def test_status_says_why_while_a_bad_store_cannot_be_renewed_on_a_full_disk(small_disk, monkeypatch):
    import edge_agent.outbox.store as store

    monkeypatch.setattr(store, "RENEW_RETRY_S", 0.2)
    ob = Outbox(OutboxSettings(commit_interval_ms=10), small_disk / "data")
    ob.open()
    ob.append("result", {"i": 0})
    ob.flush()
    filler = fill(small_disk)
    ob._want_renewal("a reader met a corrupt page")  # moved aside; no room for a new store
    ob.append("result", {"i": 1})
    ob.flush()
    assert ob.dropped["write_failed:result"] > 0 and ob.stats()["renewals"] == 0
    # formerly only "the outbox has no usable store", not why
    error = ob.stats()["write_error"]
    assert error is not None and "a new store cannot be started" in error["cause"]
    assert "SQLITE_FULL" in error["cause"] or "No space left" in error["cause"], error
    filler.unlink()
    until_renewed = time.monotonic() + 30
    while ob.stats()["renewals"] == 0:
        assert time.monotonic() < until_renewed, ob.stats()["write_error"]
        ob.append("result", {"wakes": "the writer"})
        ob.flush()
    ob.append("result", {"after": 1})
    ob.flush()
    assert ob.stats()["write_error"] is None
    in_thread(ob.close, 30)


async def test_appends_from_the_event_loop_keep_going_on_a_full_disk(small_disk):
    ob = Outbox(OutboxSettings(commit_batch=20), small_disk / "data")
    ob.open()
    fill(small_disk)
    seqs = []
    async with asyncio.timeout(60):  # an agent's on_result awaits this for every result
        for i in range(300):
            seqs.append(await ob.append_async("result", {"i": i, "pad": "y" * 500}))
            await ob.append_async("sample", {"i": i}, sample=os.urandom(2000), sample_ext=".png")
    assert seqs == sorted(seqs) and len(set(seqs)) == 300
    assert sum(n for k, n in ob.dropped.items() if k.startswith("write_failed:")) > 0
    await asyncio.wait_for(asyncio.to_thread(ob.close), 30)


def test_a_full_disk_at_start_refuses_to_start_and_keeps_the_healthy_outbox(small_disk):
    data = small_disk / "data"
    ob = Outbox(OutboxSettings(), data)
    ob.open()
    for i in range(100):
        ob.append("result", {"i": i})
    ob.close()
    for suffix in ("-wal", "-shm"):  # as after a crash: SQLite must create them again at open
        (data / "outbox" / f"outbox.db{suffix}").unlink(missing_ok=True)
    filler = fill(small_disk)
    with pytest.raises(OutboxError) as err:
        Outbox(OutboxSettings(), data).open()
    msg = str(err.value)
    assert str(data / "outbox") in msg and "full" in msg and "\n" not in msg
    assert (data / "outbox" / "outbox.db").exists()
    assert not (data / "outbox-corrupt").exists()  # formerly moved aside as corrupt

    filler.unlink()
    ob = Outbox(OutboxSettings(), data)
    ob.open()
    assert ob.moved_aside is None and ob.stats()["depth"] == 100  # nothing lost
    ob.close()


def test_an_outbox_on_a_disk_of_its_own_is_moved_aside_and_renewed_at_start_and_while_running(
    small_disk, tmp_path
):
    # outbox.dir on its own file system, the data folder on another
    settings = OutboxSettings(dir=str(small_disk / "outbox"), commit_interval_ms=10)
    data = tmp_path / "data"
    ob = Outbox(settings, data)
    ob.open()
    for i in range(100):
        ob.append("result", {"i": i})
    ob.close()
    os.truncate(ob.path, 0)  # an outbox of a known epoch left empty: moved aside at start
    events: list = []
    ob = Outbox(settings, data, on_event=events.append)
    ob.open()  # formerly OutboxError: "[Errno 18] Invalid cross-device link ...; free space on that disk"
    assert ob.moved_aside is not None and ob.moved_aside.parent == small_disk / "outbox" / "outbox-corrupt"
    assert ob.moved_aside.exists() and [e["kind"] for e in events] == ["outbox_corrupt"]
    for i in range(50):
        ob.append("result", {"j": i})
    ob.flush()
    ob.path.unlink()  # removed under the running agent: renewed with every record
    for i in range(50):
        ob.append("result", {"k": i})
    ob.flush()
    # formerly the renewal failed the same way every 5 s, for good, and every record was counted as write_failed
    until_renewed = time.monotonic() + 30
    while len(events) < 2:
        assert time.monotonic() < until_renewed, f"not renewed: {ob.stats()['dropped']}"
        time.sleep(0.02)
    assert events[1]["kind"] == "outbox_corrupt" and events[1]["lost"] == 0
    ob.close()
    again = Outbox(settings, data)
    again.open()
    assert again.moved_aside is None and again.stats()["by_kind"]["result"] == 100
    again.close()


def test_a_corrupt_store_larger_than_the_data_folders_small_disk_is_moved_aside_on_the_outboxs_own(
    small_disk, tmp_path
):
    from tests.integration.test_outbox_store_faults import scribble_pages

    # the data folder on a small system disk (2 MB), outbox.dir on a larger disk of its own
    settings = OutboxSettings(dir=str(tmp_path / "outbox"))
    data = small_disk / "data"
    ob = Outbox(settings, data)
    ob.open()
    for i in range(12000):
        ob.append("result", {"i": i, "pad": "p" * 200})
    ob.close()
    scribble_pages(ob.path, every=40)
    assert ob.path.stat().st_size > 3 * 1024 * 1024
    events: list = []
    ob = Outbox(settings, data, on_event=events.append)
    # formerly the store was copied into <data_dir>/outbox-corrupt/ on the small disk: OutboxError "No space
    # left on device ... free space on that disk", and the agent did not start
    ob.open()
    # in the outbox's own folder, the one of its disk the agent is sure to write (beside it, a unit's
    # ProtectSystem=strict with ReadWritePaths of the outbox, or a root-owned mount point, refused it: no start)
    aside = tmp_path / "outbox" / "outbox-corrupt"
    assert ob.moved_aside == aside / ob.moved_aside.name and ob.moved_aside.exists()
    assert not (data / "outbox-corrupt").exists() and [e["kind"] for e in events] == ["outbox_corrupt"]
    assert ob.stats()["by_kind"]["result"] == events[0]["salvaged"] > 10000
    ob.close()


def test_a_read_only_data_folder_at_start_is_an_outbox_error_not_a_traceback(small_disk):
    data = small_disk / "data"
    ob = Outbox(OutboxSettings(), data)
    ob.open()
    ob.append("result", {"i": 1})
    ob.close()
    for suffix in ("-wal", "-shm"):
        (data / "outbox" / f"outbox.db{suffix}").unlink(missing_ok=True)
    remount(small_disk, "ro")
    with pytest.raises(OutboxError) as err:
        Outbox(OutboxSettings(), data).open()
    assert str(data / "outbox") in str(err.value)
    assert (data / "outbox" / "outbox.db").exists() and not (data / "outbox-corrupt").exists()


def test_edge_agent_run_on_a_read_only_data_folder_exits_1_with_one_line(small_disk, tmp_path):
    data = small_disk / "data"
    ob = Outbox(OutboxSettings(), data)
    ob.open()
    ob.close()
    for suffix in ("-wal", "-shm"):
        (data / "outbox" / f"outbox.db{suffix}").unlink(missing_ok=True)
    remount(small_disk, "ro")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "agent": {"id": "ro", "site": "s1", "line": "l1", "data_dir": str(data)},
                "outbox": {},
                "http": {"enabled": False},
            }
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "run", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and str(data) in errors[0], out


def test_a_store_turning_corrupt_on_a_full_disk_is_renewed_and_salvaged_once_there_is_room(
    small_disk, monkeypatch
):
    import edge_agent.outbox.store as store
    from tests.integration.test_outbox_store_faults import scribble_pages, wait_for

    monkeypatch.setattr(store, "RENEW_RETRY_S", 0.2)
    events: list = []
    ob = Outbox(OutboxSettings(commit_interval_ms=10), small_disk / "data", on_event=events.append)
    ob.open()
    for i in range(1500):
        ob.append("result", {"i": i, "pad": "p" * 200})
    ob.flush()
    scribble_pages(ob.path, every=40)
    filler = fill(small_disk)
    assert (
        ob.pending(5000, 10**9) == []
    )  # the uplink's read meets the damage: the writer is to renew the store
    for i in range(50):
        ob.append("result", {"j": i})
    ob.flush()
    # while the disk cannot take a new store, the attempt fails (and is tried again)
    wait_for(lambda: ob._renew_failing, what="a renewal to fail on the full disk")
    assert ob.stats()["renewals"] == 0 and ob._writer is not None and ob._writer.is_alive()
    filler.unlink()
    wait_for(lambda: ob.stats()["renewals"] == 1, what="the store to be renewed once there is room")
    # the moved-aside file was kept through the failed attempts: what reads in it is in the new epoch
    assert ob.stats()["salvaged"] >= 1000
    assert ob.stats()["salvaged"] + ob.dropped["corrupt:result"] >= 1500
    assert [e["kind"] for e in events].count("outbox_corrupt") == 1
    in_thread(ob.close, 30)


def test_a_disk_filled_by_others_makes_room_by_dropping_the_oldest_samples_not_the_new_results(small_disk):
    events: list = []
    ob = Outbox(OutboxSettings(commit_interval_ms=5), small_disk / "data", on_event=events.append)
    ob.open()
    for i in range(40):  # within the outbox's budget: the disk is what runs out
        ob.append("sample", {"i": i}, sample=os.urandom(20_000), sample_ext=".png")
    ob.flush()
    fill(small_disk)  # logs, another program's files
    for i in range(300):
        ob.append("result", {"r": i, "pad": "x" * 100})
    ob.append("alarm", {"a": 1})
    ob.flush()
    # formerly every new result and the alarm were lost (write_failed) while the old samples stayed
    kinds = ob.stats()["by_kind"]
    assert kinds.get("result") == 300 and kinds.get("alarm") == 1
    dropped = ob.dropped["budget:sample"]
    assert dropped > 0 and kinds["sample"] == 40 - dropped
    assert not any(k.startswith("write_failed:") for k in ob.dropped)
    kept = sorted(json.loads(r.payload)["i"] for r in ob.pending(1000, 10**9) if r.kind == "sample")
    assert kept == list(range(dropped, 40))  # the oldest went first
    in_thread(ob.close, 30)
    reported = [e for e in events if e["kind"] == "outbox_budget"]
    assert sum(e["by_kind"].get("sample", 0) for e in reported) == dropped


def test_a_disk_filling_up_while_a_renewal_copies_into_the_new_store_loses_no_record(small_disk, monkeypatch):
    import edge_agent.outbox.store as store
    from tests.integration.test_outbox_store_faults import damage_index, wait_for

    monkeypatch.setattr(store, "SALVAGE_CHUNK", 100)
    monkeypatch.setattr(store, "RENEW_RETRY_S", 0.2)
    data = small_disk / "data"
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data)
    ob.open()
    try:
        for i in range(1500):
            ob.append("result", {"i": i, "pad": "p" * 200})
        ob.flush()
        acked = [r.seq for r in ob.pending(100, 10**9)]
        copied, filler = [0], []
        real_intact = store._intact

        def intact(row):  # the disk fills up as the renewal has copied about 500 records into the new store
            copied[0] += 1
            if copied[0] == 500:
                filler.append(fill(small_disk))
            return real_intact(row)

        monkeypatch.setattr(store, "_intact", intact)
        damage_index(ob.path)
        ob.ack(acked)  # at the cloud; the DELETE meets the damage: the store is renewed
        wait_for(lambda: ob.stats()["renewals"] == 1, what="the store to be renewed")
        # formerly the copy's failure counted every record not copied yet as corrupt:result, for good
        assert filler and not ob.dropped.get("corrupt:result")
        assert (data / "outbox-salvaging").exists()
        filler[0].unlink()  # room again: the copy goes on while the agent runs
        wait_for(lambda: not (data / "outbox-salvaging").exists(), what="the copy to go on")
        seqs = sorted(r.seq for r in ob.pending(5000, 10**9) if r.kind == "result")
        assert seqs == list(range(101, 1501)) and not ob.dropped.get("corrupt:result")
    finally:
        for f in filler:
            f.unlink(missing_ok=True)
        in_thread(ob.close, 30)


async def test_an_acknowledgement_the_full_disk_cannot_record_is_recorded_once_there_is_room_not_sent_again(
    small_disk, tmp_path
) -> None:
    """The cloud acknowledges a batch and the outbox cannot record it (its disk full): the uplink keeps the
    acknowledgement and records it at its backoff once there is room; that batch is not sent again, and the records
    behind it (an alarm committed before the disk filled, the rest of a backlog) are sent meanwhile. Before, the
    failure was taken for the link's: the batch went again, and the Connect stream's reports, proving the link up,
    ended each backoff at once: the same batch uploaded about every second for as long as the disk stayed full
    (45 times in 30 s on a running agent), each a duplicate at the cloud; and then nothing at all was sent while the
    acknowledgement waited (only the first of two batches reached the cloud)."""
    from cloud_trainer.fleet.service import FleetServer
    from edge_agent.uplink.client import Uplink
    from tests.support.fleet import cloud_settings, make_pki
    from tests.support.peers import free_port
    from tests.support.waits import until

    pki = make_pki(tmp_path / "pki", agents=("gw1",))
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    ob = Outbox(OutboxSettings(), small_disk / "data")
    ob.open()
    for i in range(6):
        ob.append("result", {"i": i, "pad": "x" * 2000})
    ob.flush()
    filler = fill(small_disk)
    up = Uplink(cloud_settings(pki, port, heartbeat_s=0.2, batch_max_records=3), ob)
    try:
        await up.start()
        await until(lambda: srv.store.stats("gw1")["records"] == 6, what="both batches stored at the cloud")
        await until(lambda: up.last_error, what="the acknowledgement's failure said")
        await asyncio.sleep(1.5)  # ~7 of the stream's reports, each proving the link up
        assert srv.store.stats("gw1")["duplicates"] == 0
        assert ob.stats()["depth"] == 6 and "recording an acknowledgement" in up.last_error, up.last_error
        assert up.status()["unrecorded_acks"] == 6
        filler.unlink()  # room again
        await until(lambda: ob.stats()["depth"] == 0, what="the acknowledgements recorded")
        assert srv.store.stats("gw1")["duplicates"] == 0 and up.acked == 6
    finally:
        await up.stop()
        in_thread(ob.close, 30)
        await srv.stop()
