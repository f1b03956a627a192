"""Store-and-forward faults, each against a real gRPC fleet service (mTLS) and real SQLite files:
cloud down then up, server killed mid-stream, agent SIGKILLed while writing, disk budget, corrupt
outbox, and clients that may not write (no valid certificate, or another agent's identity)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from cloud_trainer.fleet.guard import QuotaLimits, Quotas
from cloud_trainer.fleet.service import FleetServer, channel_credentials
from cloud_trainer.fleet.store import SQLiteStore
from cloud_trainer.pki import init_ca, issue
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink import client as uplink_client
from edge_agent.uplink.client import Uplink
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import ROOT, ServerProcess, cloud_settings, make_pki
from tests.support.peers import free_port
from tests.support.waits import until


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@contextlib.asynccontextmanager
async def drained_to_a_fleet_service(tmp_path: Path, pki: Path, ob: Outbox):
    """A fleet service on a free port (data in ``tmp_path / "cloud"``) and an uplink draining ``ob`` to it, as gw1:
    (server, uplink); both stopped and ``ob`` closed after."""
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    up = Uplink(cloud_settings(pki, port), ob)
    await up.start()
    try:
        yield srv, up
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


def cloud_seqs(db: Path, agent: str = "gw1") -> list[int]:
    con = sqlite3.connect(db)
    try:
        return [r[0] for r in con.execute("SELECT seq FROM records WHERE agent = ? ORDER BY seq", (agent,))]
    finally:
        con.close()


async def test_cloud_down_then_up_everything_arrives_once_in_order(tmp_path, pki):
    port = free_port()
    ob = Outbox(OutboxSettings(), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, port), ob)
    await up.start()
    for i in range(300):  # produced while the cloud is down
        ob.append("result", {"i": i})
        if i % 50 == 0:
            await asyncio.sleep(0.05)
    # every record waits in the outbox (committed within its interval) and the uplink waits between
    # failed attempts ("backoff"; an attempt in flight reads "sending")
    await until(
        lambda: up.state == "backoff" and ob.stats()["depth"] == 300,
        what="the 300 records kept while the uplink backs off from the absent cloud",
    )
    assert up.acked == 0
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    try:
        for i in range(300, 400):
            ob.append("result", {"i": i})
        ob.flush()  # the 100 appends committed: the depth counts committed rows, and read 0 before them
        await until(lambda: ob.stats()["depth"] == 0, what="the outbox to drain")
        seqs = cloud_seqs(tmp_path / "cloud" / "fleet.db")
        assert seqs == list(range(1, 401))
        recs = srv.store.records("gw1", limit=1000)
        assert [json.loads(json.dumps(r["payload"]))["i"] for r in recs] == list(range(400))
        assert srv.store.gaps("gw1") == [] and srv.store.stats("gw1")["duplicates"] == 0
        assert {r["epoch"] for r in recs} == {ob.epoch} and ob.epoch > 0
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


async def test_server_killed_mid_stream_resumes_without_loss_or_duplicate(tmp_path, pki):
    server = ServerProcess(tmp_path / "cloud", pki).start()
    ob = Outbox(OutboxSettings(), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, server.port, batch_max_records=50, bandwidth_cap_bytes_per_s=20_000), ob)
    await up.start()
    try:
        for i in range(3000):
            ob.append("result", {"i": i, "pad": "x" * 20})
        await until(lambda: up.acked > 200, what="some batches acknowledged")
        server.kill()  # SIGKILL mid-stream
        acked_at_kill = up.acked
        await asyncio.sleep(0.5)
        server.start()
        await until(lambda: ob.stats()["depth"] == 0, timeout_s=60, what="the outbox to drain after restart")
        assert up.reconnects >= 1 and acked_at_kill < 3000
    finally:
        await up.stop()
        ob.close()
        server.stop()
    seqs = cloud_seqs(tmp_path / "cloud" / "fleet.db")
    assert seqs == list(range(1, 3001))  # every record, once, no gap (a replay is stored once)


async def test_server_killed_while_writing_a_large_batch_resumes_without_loss_or_duplicate(tmp_path, pki):
    """Batches of ~2.7 MB (records of 300 KB), which the service writes in ranges of 1 MiB, each its own
    transaction (so that another tenant's heartbeat need not wait for the whole batch): the service is killed
    (SIGKILL) while some records it has stored are not acknowledged yet, mid-batch when the timing allows; once it
    is back the agent sends the unacknowledged batches again and every record is in the store once."""
    server = ServerProcess(tmp_path / "cloud", pki).start()
    db = tmp_path / "cloud" / "fleet.db"
    ob = Outbox(OutboxSettings(), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, server.port, batch_max_bytes=3_000_000), ob)
    await up.start()
    try:
        for i in range(60):
            ob.append("result", {"i": i, "pad": "x" * 300_000})
        await until(lambda: up.acked >= 9, what="a first batch acknowledged")

        def stored_not_acked(within_s: float) -> bool:
            # blocks this event loop, which the uplink runs on: an ack that arrives meanwhile waits in gRPC's
            # core and up.acked stays, while the service (its own process) goes on storing the batch it has;
            # polling with the loop free could miss the few milliseconds between the store and the ack
            deadline = time.monotonic() + within_s
            while time.monotonic() < deadline:
                if len(cloud_seqs(db)) > up.acked:
                    return True
                time.sleep(0.002)
            return False

        # a block may start while no batch is on its way (the uplink between an ack and its next batch): let the
        # loop run a moment and block again
        for _ in range(100):
            if stored_not_acked(0.5):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("no moment found with records stored and not acknowledged")
        server.kill()  # SIGKILL while a batch is being written (or just written), its ack not taken
        assert up.acked < 60
        await asyncio.sleep(0.3)
        server.start()
        await until(lambda: ob.stats()["depth"] == 0, timeout_s=60, what="the outbox to drain after restart")
    finally:
        await up.stop()
        ob.close()
        server.stop()
    assert cloud_seqs(db) == list(range(1, 61))  # every record, once, no gap


WRITER = r"""
import sys, time
from pathlib import Path
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
ob = Outbox(OutboxSettings(commit_interval_ms=20), Path(sys.argv[1]))
ob.open()
i = 0
while True:
    ob.append("result", {"i": i, "pad": "y" * 200})
    i += 1
    if i == 2000:
        print("WRITING", flush=True)
"""


async def test_agent_sigkilled_while_writing_reopens_cleanly_and_every_committed_record_arrives_once(
    tmp_path, pki
):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "agent")], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "WRITING"
    await asyncio.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ob = Outbox(OutboxSettings(), tmp_path / "agent")
    ob.open()  # opens cleanly after the kill
    assert ob.moved_aside is None
    committed = [r[0] for r in sqlite3.connect(ob.path).execute("SELECT seq FROM records ORDER BY seq")]
    # what was committed is a gap-free prefix, and no more than the bounded uncommitted window was lost
    assert committed == list(range(1, len(committed) + 1)) and len(committed) >= 2000 - 3 * 500
    async with drained_to_a_fleet_service(tmp_path, pki, ob):
        nxt = ob.append("event", {"after": "restart"})
        assert nxt == committed[-1] + 1  # sequence continues, never reused
        await until(lambda: ob.stats()["depth"] == 0, timeout_s=60, what="drain")
    assert cloud_seqs(tmp_path / "cloud" / "fleet.db") == committed + [nxt]


def test_disk_budget_drops_by_policy_and_counts(tmp_path):
    events = []
    budget = 200_000
    ob = Outbox(
        OutboxSettings(max_bytes=budget, commit_interval_ms=5), tmp_path / "a", on_event=events.append
    )
    ob.open()
    for i in range(20):
        ob.append("event", {"alarm": i})
    for i in range(200):
        ob.append("sample", {"i": i}, sample=os.urandom(1500), sample_ext=".png")
    for i in range(300):
        ob.append("result", {"i": i, "pad": "z" * 100})
    ob.flush()
    time.sleep(0.1)
    ob.flush()
    time.sleep(0.2)  # the writer measures and drops right after each commit
    st = ob.stats()
    assert st["disk_bytes"] <= budget and ob.disk_bytes() <= budget
    assert st["by_kind"]["event"] >= 20  # events are the last to go (the outbox's own drop events among them)
    assert st["dropped"].get("budget:sample", 0) > 0
    drops = [e for e in events if e["kind"] == "outbox_budget"]
    assert drops and drops[0]["epoch"] == ob.epoch and drops[0]["ranges"]
    from edge_agent.metrics import Metrics

    m = Metrics()  # Prometheus counts records, per kind and cause
    m.outbox(ob.dropped)
    m.outbox(ob.dropped)  # a second scrape adds nothing new
    n = st["dropped"]["budget:sample"]
    assert (
        f'edge_outbox_dropped_records_total{{cause="budget",kind="sample"}} {float(n)}'
        in m.exposition().decode()
    )
    # sample files of dropped rows are gone too: the folder never outgrows the budget
    assert sum(p.stat().st_size for p in (tmp_path / "a" / "outbox").rglob("*") if p.is_file()) <= budget
    ob.close()
    drops = [e for e in events if e["kind"] == "outbox_budget"]  # every dropped record is in an event
    assert sum(e["dropped"] for e in drops) == sum(ob.dropped.values())
    assert len(drops) <= 3  # merged: not one per enforcement
    ob2 = Outbox(
        OutboxSettings(max_bytes=budget, drop_policy="oldest_first", commit_interval_ms=5), tmp_path / "b"
    )
    ob2.open()
    for i in range(2000):
        ob2.append("event", {"i": i, "pad": "q" * 150})
    ob2.flush()
    time.sleep(0.1)
    ob2.flush()
    first = sqlite3.connect(ob2.path).execute("SELECT MIN(seq) FROM records").fetchone()[0]
    assert first > 1 and ob2.stats()["dropped"].get("budget:event", 0) == first - 1
    assert ob2.disk_bytes() <= budget
    ob2.close()
    total = ob2.dropped_total["budget:event"]
    ob2 = Outbox(OutboxSettings(max_bytes=budget), tmp_path / "b")  # the counts survive a restart
    ob2.open()
    assert ob2.dropped_total["budget:event"] == total >= first - 1 and not ob2.dropped
    ob2.close()


async def test_one_megabyte_budget_bounds_the_folder_on_disk_through_a_long_outage(tmp_path, pki):
    """The WAL, free pages and sample files are all counted: the folder stays within 1.1 MB at every poll."""
    budget = 1_000_000
    ob = Outbox(OutboxSettings(max_bytes=budget), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, free_port()), ob)  # nobody listens: a long outage
    await up.start()
    folder = tmp_path / "agent" / "outbox"
    worst = 0
    try:
        for i in range(6000):
            ob.append("result", {"i": i, "pad": "r" * 300})
            if i % 10 == 0:
                ob.append("sample", {"i": i}, sample=os.urandom(4000), sample_ext=".png")
            if i % 200 == 0:
                await asyncio.sleep(0.06)  # let the writer commit, as a real line would
                worst = max(worst, sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()))
        ob.flush()
        await asyncio.sleep(0.1)
        worst = max(worst, sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()))
        assert worst <= 1.1 * budget, worst
        assert ob.stats()["dropped"].get("budget:sample", 0) > 0
    finally:
        await up.stop()
        ob.close()


def test_orphan_sample_files_are_swept_at_open(tmp_path):
    ob = Outbox(OutboxSettings(), tmp_path)
    ob.open()
    ob.append("sample", {"i": 1}, sample=b"kept", sample_ext=".png")
    ob.close()
    orphan = tmp_path / "outbox" / "samples" / ("0" * 64)  # written before its row, then kill -9
    orphan.write_bytes(b"x" * 1000)
    (tmp_path / "outbox" / "samples" / "abc.tmp").write_bytes(b"half")
    ob = Outbox(OutboxSettings(), tmp_path)
    ob.open()
    assert sorted(p.name for p in (tmp_path / "outbox" / "samples").iterdir()) == [
        __import__("hashlib").sha256(b"kept").hexdigest()
    ]
    assert ob.disk_bytes() >= 4
    ob.close()


def test_corrupt_outbox_is_moved_aside_and_a_fresh_one_starts(tmp_path, caplog):
    ob = Outbox(OutboxSettings(), tmp_path)
    ob.open()
    for i in range(100):
        ob.append("result", {"i": i})
    ob.close()
    path = tmp_path / "outbox" / "outbox.db"
    data = bytearray(path.read_bytes())
    data[100:4000] = os.urandom(3900)  # scribble over the header and first pages
    path.write_bytes(bytes(data))
    events = []
    ob = Outbox(OutboxSettings(), tmp_path, on_event=events.append)
    ob.open()
    assert ob.moved_aside is not None and ob.moved_aside.exists()
    assert ob.dir not in ob.moved_aside.parents  # outside the budgeted folder
    assert "is corrupt" in caplog.text and str(ob.moved_aside) in caplog.text
    assert events[0]["kind"] == "outbox_corrupt"
    assert ob.append("result", {"fresh": True}) >= 1
    ob.flush()
    assert ob.stats()["depth"] == 2  # the outbox recorded its own outbox_corrupt event for the cloud
    ob.close()


async def test_fresh_outbox_after_a_corrupt_one_continues_in_a_new_epoch_and_the_cloud_keeps_every_record(
    tmp_path, pki
):
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    agent = tmp_path / "agent"
    try:
        ob = Outbox(OutboxSettings(), agent)
        ob.open()
        first_epoch = ob.epoch
        up = Uplink(cloud_settings(pki, port), ob)
        await up.start()
        for i in range(100):
            ob.append("result", {"i": i})
        ob.flush()
        await until(lambda: ob.stats()["depth"] == 0, what="the first outbox to drain")
        for i in range(20):  # never sent: the link is stopped, then the file is found corrupt
            ob.append("result", {"lost": i})
        await up.stop()
        ob.close()
        path = agent / "outbox" / "outbox.db"
        data = bytearray(path.read_bytes())
        data[100:4000] = os.urandom(3900)
        path.write_bytes(bytes(data))
        ob = Outbox(OutboxSettings(), agent)
        ob.open()
        assert ob.moved_aside is not None and ob.epoch > first_epoch
        up = Uplink(cloud_settings(pki, port), ob)
        await up.start()
        for i in range(100):
            ob.append("result", {"j": i})
        ob.flush()
        await until(lambda: ob.stats()["depth"] == 0, what="the fresh outbox to drain")
        await up.stop()
        ob.close()
        st = srv.store.stats("gw1")
        assert st["duplicates"] == 0  # nothing taken for a replay and thrown away
        assert st["records"] == 100 + 100 + 1  # both epochs, and the outbox_corrupt event
        recs = srv.store.records("gw1", limit=1000)
        assert [r["payload"]["j"] for r in recs if "j" in (r["payload"] or {})] == list(range(100))
        corrupt = [r for r in recs if r["kind"] == "event" and r["payload"]["kind"] == "outbox_corrupt"]
        assert corrupt and corrupt[0]["payload"]["previous_epoch"] == first_epoch
        gaps = srv.store.gaps("gw1")
        assert gaps == [{"epoch": first_epoch, "first": 101, "last": 0, "cause": "outbox_corrupt"}]
        # admins see the same through the wire
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(pki / "ca.pem", pki / "admins" / "alice.pem", pki / "admins" / "alice.key"),
        ) as ch:
            reply = await rpc.AdminStub(ch).IngestStats(pb.IngestStatsRequest(agent="gw1"), timeout=5)
        assert [(g.epoch, g.first, g.last, g.cause) for g in reply.gaps] == [
            (first_epoch, 101, 0, "outbox_corrupt")
        ]
    finally:
        await srv.stop()


async def test_budget_drops_reach_the_cloud_as_gaps_with_their_cause_and_counts_in_the_heartbeat(
    tmp_path, pki
):
    port = free_port()
    ob = Outbox(OutboxSettings(max_bytes=200_000, commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    for i in range(3000):  # produced during an outage: far over the budget
        ob.append("result", {"i": i, "pad": "p" * 200})
    ob.flush()
    await asyncio.sleep(0.1)
    ob.flush()
    assert ob.stats()["dropped"]["budget:result"] > 0
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    up = Uplink(cloud_settings(pki, port), ob)
    await up.start()
    try:
        await until(lambda: ob.stats()["depth"] == 0, what="drain")
        # the last drop event follows within DROP_EVENT_S even with nothing more appended
        await until(
            lambda: {g["cause"] for g in srv.store.gaps("gw1")} == {"budget"}, what="every gap explained"
        )
        dropped = dict(ob.dropped_total)
        assert set(dropped) <= {"budget:result", "budget:event"}
        gaps = srv.store.gaps("gw1")
        assert sum(g["last"] - g["first"] + 1 for g in gaps) == sum(dropped.values())
        # (no agent row until the first heartbeat lands)
        await until(
            # (v4 agents' rows also keep the report's number, "report": not this test's subject)
            lambda: (
                [{k: a["outbox"].get(k) for k in ("epoch", "dropped")} for a in srv.store.agents()]
                == [{"epoch": ob.epoch, "dropped": dropped}]
            ),
            what="the heartbeat's drop counts",
        )
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


async def test_a_record_the_cloud_refuses_for_good_is_dropped_counted_and_the_rest_arrive(tmp_path, pki):
    """A record the cloud answers INVALID_ARGUMENT for (a sample whose metadata is not a JSON object, as
    another agent version might write) is refused whatever the retry: it once stayed at the head of the
    outbox and blocked every record behind it for good. The batch is sent again one record at a time,
    the refused record is dropped and counted (``refused``), the cloud sees the gap with its cause, and
    every other record arrives."""
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    for i in range(5):
        ob.append("result", {"i": i})
    bad = ob.append("sample", b"[1, 2]", sample=b"\x89PNG-not-really", sample_ext="png")
    for i in range(5, 10):
        ob.append("result", {"i": i})
    ob.flush()
    async with drained_to_a_fleet_service(tmp_path, pki, ob) as (srv, up):
        # the uplink counts the refusal after the outbox dropped the record: depth 0 alone can come first
        await until(
            lambda: ob.stats()["depth"] == 0 and up.refused > 0,
            what="the outbox to drain past the refused record, counted",
        )
        # the gap is 'unknown' until the agent's outbox_refused event arrives and names its cause
        await until(
            lambda: (
                [(g["first"], g["last"], g["cause"]) for g in srv.store.gaps("gw1")]
                == [(bad, bad, "refused")]
            ),
            what="the drop reported with its cause",
        )
        recs = srv.store.records("gw1", limit=100)
        assert sorted(r["payload"]["i"] for r in recs if r["kind"] == "result") == list(range(10))
        assert up.refused == 1 and dict(ob.dropped_total) == {"refused:sample": 1}


@pytest.mark.parametrize("corrupt", [False, True], ids=["sound", "corrupt"])
async def test_rows_removed_as_damaged_reach_the_cloud_as_a_gap_named_damaged(tmp_path, pki, corrupt):
    """Rows whose kind the disk's damage garbled are no record: the outbox's read removes them from a sound store,
    the start's copy out of a corrupt one leaves them out (counted corrupt:damaged). Their seqs were told to nobody:
    the cloud's gap view showed them as ``unknown`` ("possibly still on their way") for good. Now an
    ``outbox_damaged`` event names them."""
    from tests.integration.test_outbox_damaged_rows import GARBLED, damaged_store

    damaged_store(tmp_path / "agent", corrupt=corrupt)
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    ob.flush()  # (a start's copy out of a corrupt store: its drops told now, not at the writer's report, <= 5 s)
    async with drained_to_a_fleet_service(tmp_path, pki, ob) as (srv, _up):
        # the store read back sound: its read removes them; corrupt: the start's copy into a new epoch leaves them
        # out, the old epoch ended (outbox_corrupt); either way the seqs are holes in the epoch the records are in
        ended = [(1, 0, "outbox_corrupt")] if corrupt else []
        await until(
            lambda: (
                [(g["first"], g["last"], g["cause"]) for g in srv.store.gaps("gw1")]
                == [*ended, (min(GARBLED), max(GARBLED), "damaged")]
            ),
            what="the damaged rows' gap named",
        )
        await until(lambda: ob.stats()["depth"] == 0, what="the outbox drained")
        # events: outbox_damaged, and outbox_corrupt for a corrupt store
        assert srv.store.stats("gw1")["by_kind"] == {"result": 297, "event": 2 if corrupt else 1}
        assert ob.dropped == {"corrupt:damaged": 3}


async def test_a_record_larger_than_the_clouds_message_limit_is_dropped_counted_and_the_rest_arrive(
    tmp_path, pki, caplog
):
    """A record the fleet service's gRPC receive limit (``max_message_bytes``, 16 MiB by default) cannot take: a
    PLC's 15 MB ByteString forwarded with ``outbox: true`` is 20 MB of base64 in one telemetry record, under the
    outbox's own bound (1/16 of its budget, 64 MiB). gRPC refused the message (RESOURCE_EXHAUSTED, "message
    larger than max") at every try, the uplink took it for a quota and backed off, and the record stayed at the
    head of the outbox: nothing behind it ever reached the cloud. It is sent alone, dropped, counted (``refused``)
    and its gap reported, as a record the cloud refuses for good; every other record arrives. (Here the limit is
    256 KiB and the record 400 KB, so that it costs milliseconds.)"""
    port = free_port()
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    for i in range(3):
        ob.append("telemetry", {"tag": "Counter", "value": i})
    big = ob.append("telemetry", {"tag": "Uid", "value": "AQEB" * 100_000})
    for i in range(3, 6):
        ob.append("telemetry", {"tag": "Counter", "value": i})
    ob.flush()
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        quotas=Quotas(QuotaLimits(max_message_bytes=256 * 1024)),
    )
    await srv.start()
    up = Uplink(cloud_settings(pki, port), ob)
    await up.start()
    try:
        await until(
            lambda: ob.stats()["depth"] == 0 and up.refused > 0,
            timeout_s=30,
            what="the outbox to drain past the record over the cloud's message limit, counted",
        )
        await until(
            lambda: (
                [(g["first"], g["last"], g["cause"]) for g in srv.store.gaps("gw1")]
                == [(big, big, "refused")]
            ),
            what="the drop reported with its cause",
        )
        recs = srv.store.records("gw1", limit=100)
        assert sorted(r["payload"]["value"] for r in recs if r["kind"] == "telemetry") == list(range(6))
        assert up.refused == 1 and dict(ob.dropped_total) == {"refused:telemetry": 1}
        said = [r.getMessage() for r in caplog.records if "refused record" in r.getMessage()]
        assert (
            len(said) == 1 and f"[{big}]" in said[0] and "over the fleet service's message limit" in said[0]
        )
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


async def test_a_successful_heartbeat_ends_the_push_backoff(tmp_path, pki, monkeypatch):
    port = free_port()
    ob = Outbox(OutboxSettings(), tmp_path / "agent")
    ob.open()
    # the push's backoff is fixed at 60 s (its random draw fixed): without the reset, nothing is sent for 60 s.
    # The heartbeat's own reconnect waits at most backoff_max_s (1 s), so a heartbeat gets through soon after
    # the cloud is up, and only that can end the push's wait before the 60 s.
    waits: list[float] = []

    def push_wait(delay: float) -> float:
        waits.append(delay)
        return 60.0

    monkeypatch.setattr(uplink_client, "_push_wait", push_wait)
    up = Uplink(cloud_settings(pki, port, backoff_initial_s=1, backoff_max_s=1, heartbeat_s=0.3), ob)
    await up.start()
    srv = None
    try:
        ob.append("result", {"i": 0})
        ob.flush()
        await until(lambda: up.state == "backoff" and waits, what="a failed push waiting its 60 s")
        srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
        await srv.start()
        await until(lambda: up.last_heartbeat_at is not None, timeout_s=30, what="a heartbeat to get through")
        # well before the push's 60 s are out: the push resumed because the heartbeat got through
        await until(
            lambda: ob.stats()["depth"] == 0, timeout_s=30, what="sending to resume after a heartbeat"
        )
        assert srv.store.stats("gw1")["records"] == 1
    finally:
        await up.stop()
        ob.close()
        if srv is not None:
            await srv.stop()


async def test_clients_without_a_valid_certificate_or_as_another_agent_are_refused(tmp_path, pki):
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    rogue = tmp_path / "rogue"
    init_ca(rogue)  # a CA the fleet does not trust
    issue(rogue, "gw1", "agent", rogue / "agents" / "gw1")
    batch = pb.RecordBatch(records=[pb.Record(seq=1, kind="result", t=time.time(), payload=b"{}")])

    async def push(creds) -> list:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            call = rpc.FleetStub(ch).PushRecords(iter([batch]))
            return [a async for a in call]

    try:
        with pytest.raises(grpc.aio.AioRpcError) as ei:  # a certificate from another CA: TLS refuses it
            await push(
                channel_credentials(
                    pki / "ca.pem", rogue / "agents" / "gw1.pem", rogue / "agents" / "gw1.key"
                )
            )
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError):  # no client certificate at all
            async with grpc.aio.secure_channel(
                f"127.0.0.1:{port}", grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
            ) as ch:
                await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(), timeout=5)
        # gw2 writes: its records are stored as gw2, whatever it sends (no agent id on the wire)
        acks = await push(
            channel_credentials(pki / "ca.pem", pki / "agents" / "gw2.pem", pki / "agents" / "gw2.key")
        )
        assert list(acks[0].seqs) == [1]
        assert srv.store.stats("gw2")["records"] == 1 and srv.store.stats("gw1")["records"] == 0
        # an admin certificate may not push records, an agent certificate may not call admin methods
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await push(
                channel_credentials(
                    pki / "ca.pem", pki / "admins" / "alice.pem", pki / "admins" / "alice.key"
                )
            )
        assert (
            ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
            and "needs an agent certificate" in ei.value.details()
        )
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key"),
        ) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await rpc.AdminStub(ch).ListAgents(pb.ListAgentsRequest(), timeout=5)
        assert (
            ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
            and "needs an admin certificate" in ei.value.details()
        )
    finally:
        await srv.stop()


def test_store_reports_gaps_per_agent_and_epoch_with_their_cause(tmp_path):
    st = SQLiteStore(tmp_path / "f.db")
    recs = [{"seq": s, "kind": "result", "t": 0.0, "payload": "{}"} for s in (1, 2, 3, 7, 8, 12)]
    assert st.ingest("gw9", recs)[1:] == (6, 0)
    assert st.ingest("gw9", recs[:2])[1:] == (0, 2)  # a replay is stored once
    assert st.gaps("gw9") == [
        {"epoch": 0, "first": 4, "last": 6, "cause": "unknown"},
        {"epoch": 0, "first": 9, "last": 11, "cause": "unknown"},
    ]
    drop = {"kind": "outbox_budget", "epoch": 0, "ranges": [[4, 5], [10, 11]]}
    st.ingest("gw9", [{"seq": 13, "kind": "event", "t": 0.0, "payload": json.dumps(drop)}])
    assert [(g["first"], g["last"], g["cause"]) for g in st.gaps("gw9")] == [
        (4, 5, "budget"),
        (6, 6, "unknown"),
        (9, 9, "unknown"),
        (10, 11, "budget"),
    ]
    # a new epoch numbers from 1 again: new records, not replays; the old epoch's end is a known gap
    assert st.ingest(
        "gw9", [{"epoch": 5, "seq": s, "kind": "result", "t": 0.0, "payload": "{}"} for s in (1, 2)]
    )[1:] == (2, 0)
    assert st.gaps("gw9")[-1] == {"epoch": 0, "first": 14, "last": 0, "cause": "epoch_change"}
    assert (
        st.stats("gw9")["records"] == 9 and st.stats("gw9")["epoch"] == 5 and st.stats("gw9")["last_seq"] == 2
    )
    st.close()


def test_store_migrates_a_v1_file_keyed_by_agent_and_seq(tmp_path):
    con = sqlite3.connect(tmp_path / "f.db")
    con.executescript("""
CREATE TABLE records (agent TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, t REAL NOT NULL,
  received REAL NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (agent, seq)) WITHOUT ROWID;
CREATE TABLE samples (sha256 TEXT NOT NULL, agent TEXT NOT NULL, seq INTEGER NOT NULL, t REAL NOT NULL, model TEXT,
  version TEXT, pipeline TEXT, reason TEXT, verdict TEXT, label TEXT, label_state TEXT NOT NULL DEFAULT 'unlabelled',
  ext TEXT, PRIMARY KEY (agent, seq));
CREATE INDEX samples_by_model ON samples (model, label_state, reason, t);
CREATE TABLE agents (id TEXT PRIMARY KEY, labels TEXT NOT NULL DEFAULT '{}', last_seen REAL,
  slots TEXT NOT NULL DEFAULT '[]', health TEXT NOT NULL DEFAULT '{}', outbox_depth INTEGER DEFAULT 0);
CREATE TABLE ingest (agent TEXT PRIMARY KEY, duplicates INTEGER NOT NULL DEFAULT 0);
INSERT INTO records VALUES ('gw1', 1, 'result', 0, 0, '{}'), ('gw1', 2, 'result', 0, 0, '{}');
INSERT INTO samples (sha256, agent, seq, t) VALUES ('ab', 'gw1', 2, 0);
""")
    con.close()
    st = SQLiteStore(tmp_path / "f.db")
    assert [(r["epoch"], r["seq"]) for r in st.records("gw1")] == [(0, 1), (0, 2)]
    assert st.samples()[0]["epoch"] == 0
    assert st.ingest("gw1", [{"seq": 2, "kind": "result", "t": 0.0, "payload": "{}"}])[1:] == (0, 1)
    st.close()


def _redate(pem: Path, pki_dir: Path, days: int) -> None:
    """Sign ``pem`` again with the CA, valid for 30 days from ``days`` days away: as a gateway whose clock
    was stepped the other way sees it."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    b = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=30))
    )
    for e in cert.extensions:
        b = b.add_extension(e.value, e.critical)
    pem.write_bytes(b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "which,days,said",
    [
        (
            "server.pem",
            400,
            "the certificate the fleet service at 127.0.0.1:{port} presents (CN=fleet-service) is not valid yet",
        ),
        (
            "server.pem",
            -400,
            "the certificate the fleet service at 127.0.0.1:{port} presents (CN=fleet-service) has expired",
        ),
        ("agents/gw1.pem", -400, "this agent's certificate {pki}/agents/gw1.pem (CN=gw1) has expired"),
    ],
)
async def test_a_certificate_outside_its_dates_is_named_with_its_dates_and_the_clock(
    tmp_path, which, days, said
):
    """A gateway clock stepped far back or forward (or a certificate past its end): the uplink's error
    names the certificate, its validity dates and this gateway's clock, not an opaque TLS failure."""
    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=())
    _redate(pki / which, pki, days)
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    ob = Outbox(OutboxSettings(), tmp_path / "agent")
    ob.open()
    ob.append("result", {"i": 1})
    up = Uplink(cloud_settings(pki, port), ob)
    await up.start()
    try:
        await until(
            lambda: "clock reads" in (up.last_error or ""), timeout_s=30, what="the uplink to say why"
        )
        assert said.format(port=port, pki=pki) in up.last_error, up.last_error
        assert "valid from 20" in up.last_error and ob.stats()["depth"] == 1
    finally:
        await up.stop()
        await srv.stop()
        ob.close()
