"""Store-and-forward faults, each against a real gRPC fleet service (mTLS) and real SQLite files:
cloud down then up, server killed mid-stream, agent SIGKILLed while writing, disk budget, corrupt
outbox, and clients that may not write (no valid certificate, or another agent's identity)."""

from __future__ import annotations

import asyncio
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

from cloud_trainer.fleet.service import FleetServer, channel_credentials
from cloud_trainer.fleet.store import SQLiteStore
from cloud_trainer.pki import init_ca, issue
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import ROOT, ServerProcess, cloud_settings, make_pki
from tests.support.peers import free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


async def until(pred, timeout_s=30.0, what="condition"):
    for _ in range(int(timeout_s * 20)):
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


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
    await asyncio.sleep(0.5)
    assert up.state == "backoff" and ob.stats()["depth"] == 300
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    try:
        for i in range(300, 400):
            ob.append("result", {"i": i})
        await until(lambda: ob.stats()["depth"] == 0, what="the outbox to drain")
        seqs = cloud_seqs(tmp_path / "cloud" / "fleet.db")
        assert seqs == list(range(1, 401))
        recs = srv.store.records("gw1", limit=1000)
        assert [json.loads(json.dumps(r["payload"]))["i"] for r in recs] == list(range(400))
        assert srv.store.gaps("gw1") == [] and srv.store.stats("gw1")["duplicates"] == 0
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


async def test_agent_sigkilled_while_writing_reopens_cleanly_and_every_committed_record_arrives_once(tmp_path, pki):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "agent")], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
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
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    up = Uplink(cloud_settings(pki, port), ob)
    await up.start()
    try:
        nxt = ob.append("event", {"after": "restart"})
        assert nxt == committed[-1] + 1  # sequence continues, never reused
        await until(lambda: ob.stats()["depth"] == 0, timeout_s=60, what="drain")
    finally:
        await up.stop()
        ob.close()
        await srv.stop()
    assert cloud_seqs(tmp_path / "cloud" / "fleet.db") == committed + [nxt]


def test_disk_budget_drops_by_policy_and_counts(tmp_path):
    events = []
    ob = Outbox(OutboxSettings(max_bytes=40_000, commit_interval_ms=5), tmp_path / "a", on_event=events.append)
    ob.open()
    for i in range(20):
        ob.append("event", {"alarm": i})
    for i in range(100):
        ob.append("sample", {"i": i}, sample=os.urandom(600), sample_ext=".png")
    for i in range(100):
        ob.append("result", {"i": i, "pad": "z" * 100})
    ob.flush()
    time.sleep(0.1)
    ob.flush()
    st = ob.stats()
    assert st["bytes"] <= 40_000
    assert st["by_kind"]["event"] == 20  # events are the last to go
    assert st["dropped"].get("budget:sample", 0) > 0
    assert any(e["kind"] == "outbox_budget" for e in events)
    # sample files of dropped rows are gone too: the folder never outgrows the budget
    assert sum(p.stat().st_size for p in (tmp_path / "a" / "outbox" / "samples").iterdir()) <= 40_000
    ob.close()
    ob2 = Outbox(OutboxSettings(max_bytes=40_000, drop_policy="oldest_first", commit_interval_ms=5), tmp_path / "b")
    ob2.open()
    for i in range(400):
        ob2.append("event", {"i": i, "pad": "q" * 150})
    ob2.flush()
    time.sleep(0.1)
    ob2.flush()
    first = sqlite3.connect(ob2.path).execute("SELECT MIN(seq) FROM records").fetchone()[0]
    assert first > 1 and ob2.stats()["dropped"].get("budget:event", 0) == first - 1
    ob2.close()


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
    assert "is corrupt" in caplog.text and str(ob.moved_aside) in caplog.text
    assert events[0]["kind"] == "outbox_corrupt"
    assert ob.append("result", {"fresh": True}) >= 1
    ob.flush()
    assert ob.stats()["depth"] == 1
    ob.close()


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
            await push(channel_credentials(pki / "ca.pem", rogue / "agents" / "gw1.pem", rogue / "agents" / "gw1.key"))
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError):  # no client certificate at all
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(
                    (pki / "ca.pem").read_bytes())) as ch:
                await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(), timeout=5)
        # gw2 writes: its records are stored as gw2, whatever it sends (no agent id on the wire)
        acks = await push(channel_credentials(pki / "ca.pem", pki / "agents" / "gw2.pem", pki / "agents" / "gw2.key"))
        assert list(acks[0].seqs) == [1]
        assert srv.store.stats("gw2")["records"] == 1 and srv.store.stats("gw1")["records"] == 0
        # an admin certificate may not push records, an agent certificate may not call admin methods
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await push(channel_credentials(pki / "ca.pem", pki / "admins" / "alice.pem", pki / "admins" / "alice.key"))
        assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials(
                pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await rpc.AdminStub(ch).ListAgents(pb.ListAgentsRequest(), timeout=5)
        assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED and "needs a admin certificate" in ei.value.details()
    finally:
        await srv.stop()


def test_store_reports_gaps_per_agent(tmp_path):
    st = SQLiteStore(tmp_path / "f.db")
    recs = [{"seq": s, "kind": "result", "t": 0.0, "payload": "{}"} for s in (1, 2, 3, 7, 8, 12)]
    assert st.ingest("gw9", recs)[1:] == (6, 0)
    assert st.ingest("gw9", recs[:2])[1:] == (0, 2)  # a replay is stored once
    assert st.gaps("gw9") == [(4, 6), (9, 11)]
    st.close()
