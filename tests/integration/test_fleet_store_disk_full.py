# ruff: noqa: F811  (pytest fixtures imported from test_fleet_tenants are parameters here)
"""The fleet service's data folder full (a real small tmpfs) while agents upload records and samples and
heartbeat: each upload is refused UNAVAILABLE (the agent keeps it and sends it again), the error that is logged
and answered says the disk is full, another tenant's reads go on, and once the disk has room the same records
and samples are stored whole, the database intact."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import sqlite3
import time

import grpc
import pytest

from cloud_trainer.fleet.service import FleetServer, channel_credentials
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.integration.test_fleet_tenants import _code, world  # noqa: F401  (the fixture)
from tests.support.peers import free_port, small_tmpfs
from tests.support.waits import until


def _record(seq: int, sample: bytes | None = None) -> pb.Record:
    if sample is None:
        return pb.Record(seq=seq, kind="result", t=time.time(), payload=b'{"ok": true}')
    return pb.Record(
        seq=seq,
        kind="sample",
        t=time.time(),
        payload=b'{"model": "part-inspection", "reason": "ng"}',
        sample=sample,
        sample_sha256=hashlib.sha256(sample).hexdigest(),
        sample_ext=".npy",
    )


async def _push(ch, *records: pb.Record) -> list:
    return [
        a async for a in rpc.FleetStub(ch).PushRecords(iter([pb.RecordBatch(records=records)]), timeout=20)
    ]


async def test_a_full_data_folder_refuses_uploads_saying_so_and_takes_them_whole_once_it_has_room(
    world, tmp_path, caplog
):
    tmp, pki, certs, entries = world
    root = tmp_path / "cloud"
    with small_tmpfs(root, "4m"):
        port = free_port()
        srv = FleetServer(
            root, port, pki / "ca.pem", pki / "server.pem", pki / "server.key", registry=tmp / "registry"
        )
        await srv.start()
        chans = {
            k: grpc.aio.secure_channel(
                f"127.0.0.1:{port}",
                channel_credentials(
                    pki / "ca.pem", certs[k].with_suffix(".pem"), certs[k].with_suffix(".key")
                ),
            )
            for k in (("acme", "gw-a"), ("beta", "gw-b"), ("beta", "carol"))
        }
        acme, beta = chans[("acme", "gw-a")], chans[("beta", "gw-b")]
        try:
            for gw in (acme, beta):
                await rpc.FleetStub(gw).Heartbeat(pb.HeartbeatRequest(labels={"site": "plant"}), timeout=10)
                assert (await _push(gw, _record(1)))[0].stored == 1
            filler = root / "filler"
            with pytest.raises(OSError):  # (every byte of the folder's disk taken)
                filler.write_bytes(b"\0" * (shutil.disk_usage(root).free + 4096))
            records = [_record(seq) for seq in range(100, 150)]
            samples = [_record(seq, os.urandom(100_000 + seq)) for seq in range(1000, 1003)]
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="cloud_trainer.fleet.service"):
                for batch in (records, samples):
                    code, details = await _code(_push(acme, *batch))
                    assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
                    assert "nothing of it was stored, send it again later" in details, details
                    # the agent's last error says why (it said "OSError" alone), never the server's paths
                    assert "disk is full" in details or "No space left on device" in details, details
                    assert str(root) not in details, details
                for batch in (records, samples):  # sent again while the disk is still full: not logged again
                    code, _ = await _code(_push(acme, *batch))
                    assert code == grpc.StatusCode.UNAVAILABLE
            said = caplog.text
            # once per reason (the database's full file, the blob store's ENOSPC: each its error id), not per batch
            assert 1 <= len(caplog.records) <= 2, said
            assert "database or disk is full" in said or "No space left on device" in said, said
            assert "cannot rollback" not in said, said
            # a heartbeat is a write too: UNAVAILABLE (the agent heartbeats again) saying why, logged once
            caplog.clear()
            with caplog.at_level(logging.ERROR):
                for _ in range(5):
                    code, details = await _code(
                        rpc.FleetStub(beta).Heartbeat(
                            pb.HeartbeatRequest(labels={"site": "plant"}), timeout=10
                        )
                    )
                    assert code == grpc.StatusCode.UNAVAILABLE and "disk is full" in details, (code, details)
                    assert "cannot rollback" not in details, details
            assert len(caplog.records) == 1 and "disk is full" in caplog.text, caplog.text
            # a rollout created meanwhile is refused saying why (the control file is on the same disk)
            with pytest.raises(sqlite3.OperationalError, match="disk is full"):
                srv.control.create(
                    {
                        "package": entries["acme"]["name"],
                        "version": "1.0.0",
                        "slot": "vision",
                        "agents": ["gw-a"],
                    },
                    tenant="acme",
                )
            # another tenant's reads go on
            listed = await rpc.AdminStub(chans[("beta", "carol")]).ListAgents(
                pb.ListAgentsRequest(), timeout=10
            )
            assert [a.id for a in listed.agents] == ["gw-b"]
            assert srv.store.stats("gw-a", tenant="acme")["records"] == 1
            filler.unlink()
            # the agent sends the same batches again: stored whole, once
            assert (await _push(acme, *records))[0].stored == len(records)
            assert (await _push(acme, *samples))[0].stored == len(samples)
            stats = srv.store.stats("gw-a", tenant="acme")
            assert (stats["records"], stats["samples"]) == (1 + len(records) + len(samples), len(samples))
            blobs = srv.blobs.for_tenant("acme")
            for r in samples:
                assert blobs.get_bytes(r.sample_sha256) == r.sample
            await rpc.FleetStub(beta).Heartbeat(pb.HeartbeatRequest(labels={"site": "plant"}), timeout=10)
        finally:
            for c in chans.values():
                await c.close()
            await srv.stop()
        for db in ("fleet.db", "control.db"):
            with sqlite3.connect(root / db) as con:
                assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)], db


async def test_a_rollout_ticking_on_a_full_data_folder_logs_its_failure_once_not_every_second(
    world, tmp_path, caplog
):
    """The service ticks its rollouts every second: on a full disk each tick of a running rollout fails, and
    each wrote a traceback (86,400 a day, into a log that may well be on that disk). Logged once, and once
    more when ticks succeed again; the rollout goes on then."""
    tmp, pki, certs, entries = world
    root = tmp_path / "cloud"
    with small_tmpfs(root, "4m"):
        port = free_port()
        srv = FleetServer(
            root, port, pki / "ca.pem", pki / "server.pem", pki / "server.key", registry=tmp / "registry"
        )
        await srv.start()
        c = certs[("acme", "gw-a")]
        ch = grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key")),
        )
        try:
            await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(labels={"site": "plant"}), timeout=10)
            dep = srv.control.create(
                {
                    "package": entries["acme"]["name"],
                    "version": "1.0.0",
                    "slot": "vision",
                    "agents": ["gw-a"],
                },
                tenant="acme",
            )
            filler = root / "filler"
            with pytest.raises(OSError):
                filler.write_bytes(b"\0" * (shutil.disk_usage(root).free + 4096))
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="cloud_trainer.fleet.service"):
                await until(
                    lambda: sum("tick" in r.getMessage() for r in caplog.records) >= 1, what="a failed tick"
                )
                await asyncio.sleep(4.5)  # four ticks more, each failing as the first did
                failed = [r for r in caplog.records if "tick" in r.getMessage()]
                assert len(failed) == 1 and failed[0].levelno == logging.ERROR, [
                    r.getMessage() for r in failed
                ]
                assert "disk is full" in caplog.text, caplog.text
                filler.unlink()
                await until(
                    lambda: any("succeeds again" in r.getMessage() for r in caplog.records),
                    what="ticks again",
                )
            assert srv.control.get(dep["id"], tenant="acme")["state"] == "running"
        finally:
            await ch.close()
            await srv.stop()


async def test_the_streams_flush_failing_on_a_full_data_folder_logs_once_not_at_every_flush(tmp_path, caplog):
    """The Connect streams' reports are written every ``flush_s``: on a full disk every flush failed and logged
    a warning and a traceback (one of each a second, for as long as the disk stayed full). Logged once, and once
    more when the store takes them again; the reports wait and are written then."""
    from cloud_trainer.fleet.store import SQLiteStore
    from cloud_trainer.fleet.stream import StreamHub

    class Counted(SQLiteStore):  # the real store; counts the flushes' writes it was asked for
        calls = 0

        def heartbeat_many(self, rows):
            Counted.calls += 1
            return super().heartbeat_many(rows)

    root = tmp_path / "cloud"
    with small_tmpfs(root, "2m"):
        store = Counted(root / "fleet.db")
        hub = StreamHub(store, None, flush_s=0.05)
        await hub.start()
        try:
            filler = root / "filler"
            with pytest.raises(OSError):
                filler.write_bytes(b"\0" * (shutil.disk_usage(root).free + 4096))
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="cloud_trainer.fleet.stream"):
                start, n = Counted.calls, 0
                while Counted.calls - start < 30:  # agents keep reporting: ten flushes or more, each failing
                    n += 1
                    hub.pending[("acme", f"gw-{n}")] = ({"v": "1"}, [], {}, 0, {}, time.time())
                    await asyncio.sleep(0.02)
                said = [r for r in caplog.records if r.levelno >= logging.WARNING]
                # the first flush's batch falling back to one report at a time, and its failure: nothing more
                assert [r.levelno for r in said] == [logging.WARNING, logging.ERROR], [
                    r.getMessage() for r in said
                ]
                assert "full" in caplog.text, caplog.text
                filler.unlink()
                await until(
                    lambda: any("succeeds again" in r.getMessage() for r in caplog.records),
                    what="flushes again",
                )
            assert ("acme", f"gw-{n}") not in hub.pending
            assert f"gw-{n}" in {a["id"] for a in store.agents(tenant="acme")}
        finally:
            await hub.stop()
            store.close()
