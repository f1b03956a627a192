"""``serve --retain-days``: the running fleet service deletes what it received longer ago than that, in the
background, while it serves; the rest is kept. Rows are made old by setting their receipt time, no waiting."""

from __future__ import annotations

import time
import types

import pytest

from tests.contract.test_fleet_store import _sample, rec
from tests.support.fleet import fleet_server, make_pki
from tests.support.peers import free_port
from tests.support.waits import until


async def test_the_service_retires_what_it_received_before_its_retention_in_the_background(tmp_path):
    """... and says what it retired on the wire: the operator's ListTenants and an admin's IngestStats (they told
    only what is stored: the tenant's records fell with no word why)."""
    import grpc

    from cloud_trainer.fleet.service import channel_credentials
    from cloud_trainer.pki import ROLE_OPERATOR, issue
    from protocols.gen import fleet_pb2 as pb
    from protocols.gen import fleet_pb2_grpc as rpc

    pki = make_pki(tmp_path / "pki", agents=(), admins=("alice",))
    ops = issue(pki, "ops", ROLE_OPERATOR, pki / "operators" / "ops")[0].with_suffix("")
    port = free_port()
    srv = fleet_server(tmp_path / "cloud", pki, port, retain_days=2, retain_every_s=0.05)
    blobs = srv.blobs.for_tenant("default")
    old, new = _sample(1, b"o" * 40), _sample(3, b"n" * 40)
    srv.store.ingest("gw1", [old, rec(2), new, rec(4)], blobs=blobs)
    with srv.store._tx() as ex:  # seqs 1 and 2 received three days ago
        ex("UPDATE records SET received = ? WHERE seq <= 2", (time.time() - 3 * 86400,))
        ex("UPDATE record_counts SET first_received = ?", (time.time() - 3 * 86400,))
    await srv.start()
    try:
        await until(
            lambda: srv.store.stats("gw1")["retired"]["records"] == 2,
            timeout_s=20,
            what="the old records retired",
        )
        st = srv.store.stats("gw1")
        assert (st["records"], st["samples"], st["retired"]["samples"]) == (2, 1, 1)
        assert [r["seq"] for r in srv.store.records("gw1")] == [3, 4]
        assert not blobs.exists(old["sample_sha256"]) and blobs.exists(new["sample_sha256"])
        assert srv.store.gaps("gw1") == []
        for who in (ops, pki / "admins" / "alice"):
            async with grpc.aio.secure_channel(
                f"127.0.0.1:{port}",
                channel_credentials(pki / "ca.pem", who.with_suffix(".pem"), who.with_suffix(".key")),
            ) as ch:
                if who == ops:
                    [t] = (await rpc.AdminStub(ch).ListTenants(pb.ListTenantsRequest(), timeout=10)).tenants
                    got = (t.records, t.samples, t.retired_records, t.retired_samples)
                else:
                    got = await rpc.AdminStub(ch).IngestStats(pb.IngestStatsRequest(agent="gw1"), timeout=10)
                    got = (got.records, got.samples, got.retired_records, got.retired_samples)
                assert got == (2, 1, 2, 1)
    finally:
        await srv.stop()


@pytest.mark.parametrize("days", [365, -365], ids=["ahead", "back_then_right"])
async def test_a_step_of_the_service_clock_deletes_nothing_younger_than_the_age(tmp_path, monkeypatch, days):
    """The clock set a year ahead while the service runs (a wrong time set): what it received a moment ago is not a
    year old (the monotonic time counted since the start bounds retention's time). Set a year back, then right again:
    what it received meanwhile is not a year old (a receipt is never stamped before the time counted)."""
    from cloud_trainer.fleet import service, store

    pki = make_pki(tmp_path / "pki", agents=(), admins=())
    srv = fleet_server(tmp_path / "cloud", pki, free_port(), retain_days=2)
    stepped = types.SimpleNamespace(time=lambda: time.time() + days * 86400, monotonic=time.monotonic)
    try:
        if days > 0:
            srv.store.ingest("gw1", [rec(1), rec(2)])
            monkeypatch.setattr(service, "time", stepped)
        else:
            monkeypatch.setattr(service, "time", stepped)
            monkeypatch.setattr(store, "time", stepped)
            srv.store.ingest("gw1", [rec(1), rec(2)])
            monkeypatch.undo()  # set right
        while srv._retire_step(None)["after"] is not None:
            pass
        assert [r["seq"] for r in srv.store.records("gw1")] == [1, 2]
    finally:
        monkeypatch.undo()
        await srv.stop()


async def test_a_clock_in_the_past_at_start_stamps_no_receipt_before_what_the_store_saw(
    tmp_path, monkeypatch
):
    """Started with the clock a year in the past (an RTC not set yet), set right, then started again: what it received
    while wrong was stamped a year old and the restart deleted it at once. Receipts are stamped no earlier than the
    latest time the store saw an agent."""
    from cloud_trainer.fleet import service, store

    pki = make_pki(tmp_path / "pki", agents=(), admins=())
    srv = fleet_server(tmp_path / "cloud", pki, free_port(), retain_days=2)
    srv.store.heartbeat("gw1", {}, [], {}, 0)  # seen now
    await srv.stop()
    back = types.SimpleNamespace(time=lambda: time.time() - 365 * 86400, monotonic=time.monotonic)
    monkeypatch.setattr(service, "time", back)
    monkeypatch.setattr(store, "time", back)
    srv = fleet_server(tmp_path / "cloud", pki, free_port(), retain_days=2)
    srv.store.ingest("gw1", [rec(1), rec(2)])
    await srv.stop()
    monkeypatch.undo()  # set right, started again
    srv = fleet_server(tmp_path / "cloud", pki, free_port(), retain_days=2)
    try:
        while srv._retire_step(None)["after"] is not None:
            pass
        assert [r["seq"] for r in srv.store.records("gw1")] == [1, 2]
    finally:
        await srv.stop()


async def test_stop_ends_a_retention_step_before_its_next_deletion(tmp_path):
    """stop() while a step deletes sample bytes (slowly: a bucket): the step ends after the deletion under way, before
    the store is closed; stop() waited its 10 s and closed the store under the step's thread."""
    import asyncio
    import threading

    from cloud_trainer.blobs import LocalBlobStore

    deleting = threading.Event()

    class Slow(LocalBlobStore):
        def for_tenant(self, tenant):
            return Slow(LocalBlobStore.for_tenant(self, tenant).root)

        def delete(self, digest: str) -> bool:
            deleting.set()
            time.sleep(0.3)
            return super().delete(digest)

    pki = make_pki(tmp_path / "pki", agents=(), admins=())
    srv = fleet_server(tmp_path / "cloud", pki, free_port(), retain_days=2, blobs=Slow(tmp_path / "blobs"))
    srv.store.ingest(
        "gw1", [_sample(s, b"s%d" % s * 9) for s in range(1, 41)], blobs=srv.blobs.for_tenant("default")
    )
    with srv.store._tx() as ex:
        ex("UPDATE records SET received = ?", (time.time() - 3 * 86400,))
        ex("UPDATE record_counts SET first_received = ?", (time.time() - 3 * 86400,))
    await srv.start()
    try:
        assert await asyncio.to_thread(deleting.wait, 20)
    finally:
        await srv.stop()
    assert srv._retaining is not None and srv._retaining.done()
