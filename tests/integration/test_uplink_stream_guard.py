"""The uplink's long-lived PushRecords stream against the fleet service's per-agent ``concurrent_streams`` limit
(a real FleetServer, gRPC with mTLS). An agent's uplink keeps its stream open while idle (``stream_idle_s``, and a
few records a second keep it open for good); with the limit set low, its other streams (a package download in a
rollout) must not be refused for it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cloud_trainer.fleet.guard import QuotaLimits, Quotas
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from tests.integration.test_uplink_batching import _server
from tests.support.fleet import cloud_settings, make_pki
from tests.support.peers import free_port
from tests.support.waits import until


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=("gw1",))


async def test_a_rollouts_download_is_not_refused_while_the_uplink_idles_at_its_limit(
    tmp_path, tmp_path_factory, pki
) -> None:
    """concurrent_streams 2: a package is deployed to gw1, whose Connect stream and its uplink's PushRecords fill
    the limit, while a line's results go up steadily (one every 50 ms, batches filling for max_delay_ms 200). Its
    DownloadPackage, on the channel the uplink shares with the model manager, is taken and gets the whole package:
    the push gives way between two batches and the uplink goes on on a new stream (refused, with its backoff, while
    the download holds the place), every record stored once. Before, the download was refused (RESOURCE_EXHAUSTED) for as long as the uplink kept its
    stream: up to stream_idle_s (30 s) idle, and for good while records kept coming."""
    from cloud_trainer.registry import Registry
    from model_packager import package_digest
    from protocols.gen import fleet_pb2 as pb
    from tests.integration.test_fleet_control import _fleet_packages
    from tests.support.once import built_once, run_root

    built = built_once(tmp_path_factory, "fleet-packages", _fleet_packages)
    pkg = run_root(tmp_path_factory) / "once-fleet-packages" / built["1.1.0"]
    Registry(tmp_path / "registry").publish(pkg, [], {}, None, None)
    port = free_port()
    quotas = Quotas(QuotaLimits(concurrent_streams=2))
    srv = _server(tmp_path, pki, port, registry=tmp_path / "registry", tick_s=0.2, quotas=quotas)
    await srv.start()
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, port, heartbeat_s=0.3, max_delay_ms=200), ob)
    digest = package_digest(pkg)
    try:
        await up.start()
        await ob.append_async("result", {"i": 0})
        up.poke()
        await until(lambda: ob.stats()["acked"] == 1, timeout_s=30, what="the first record acked")
        await until(
            lambda: quotas._streams[("default", "gw1")] == 2, what="Connect and the idle PushRecords open"
        )
        await until(lambda: len(srv.store.agents()) == 1, what="gw1 registered (its first state report)")
        srv.control.create(
            {
                "package": "part-inspection",
                "version": "1.1.0",
                "slot": "vision",
                "agents": ["gw1"],
                "strategy": "all_at_once",
            }
        )
        await until(lambda: srv.control.deployed_to("gw1", digest), what="the package deployed to gw1")
        n = [1]

        async def steady() -> None:  # a line's results, one every 50 ms
            while True:
                await ob.append_async("result", {"i": n[0]})
                up.poke()
                n[0] += 1
                await asyncio.sleep(0.05)

        line = asyncio.create_task(steady())
        try:
            await asyncio.sleep(0.5)
            got = b"".join(
                [c.data async for c in up.client.stub.DownloadPackage(pb.DownloadRequest(digest=digest))]
            )
            await asyncio.sleep(0.3)
        finally:
            line.cancel()
        assert got == pkg.read_bytes()
        await until(lambda: ob.stats()["acked"] == n[0], timeout_s=30, what="every record acked")
        # (the uplink's new stream may be refused while the download holds the place: it backs off, loses nothing)
        assert up.last_error is None or "streams already open" in up.last_error, up.last_error
        stored = sorted(r["payload"]["i"] for r in srv.store.records("gw1", limit=1000))
        assert stored == list(range(n[0]))
    finally:
        await up.stop()
        ob.close()
        await srv.stop()


async def test_an_agent_gone_while_its_push_waits_for_a_batch_logs_no_error(tmp_path, pki, caplog) -> None:
    """The service reads a push's next batch in a task of its own (so that the push can give way while it waits).
    An agent gone meanwhile (its call cancelled, its channel closed: a restart, a lost link) had the request stream
    closed while that read was still in it: "aclose(): asynchronous generator is already running", logged by grpc as
    an unexpected error of the method, then "Failed sending error status" (two ERROR tracebacks per agent gone
    within NEXT_SLOT_S of an ack). The read ends first now; the call ends quietly, its stream given back."""
    import grpc

    from cloud_trainer.fleet.service import channel_credentials
    from protocols.gen import fleet_pb2 as pb
    from protocols.gen import fleet_pb2_grpc as rpc

    port = free_port()
    srv = _server(tmp_path, pki, port)
    await srv.start()
    c = pki / "agents" / "gw1"
    creds = channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key"))
    try:
        for seq, gone in ((1, "cancel"), (2, "close")):
            ch = grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)
            call = rpc.FleetStub(ch).PushRecords()
            await call.write(
                pb.RecordBatch(records=[pb.Record(seq=seq, epoch=1, kind="result", t=1.0, payload=b"{}")])
            )
            assert list((await call.read()).seqs) == [seq]
            await asyncio.sleep(0.05)  # the push waits for its next batch
            if gone == "cancel":
                call.cancel()
            await ch.close()
            await until(lambda: not srv.quotas._streams.get(("default", "gw1")), what="the push ended")
        await asyncio.sleep(0.1)  # (grpc's own error lines came just after the handler ended)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == []
        assert len(srv.store.records("gw1", limit=10)) == 2
    finally:
        await srv.stop()
