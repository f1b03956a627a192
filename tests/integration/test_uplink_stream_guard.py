"""The uplink's long-lived PushRecords stream against the fleet service's per-agent ``concurrent_streams`` limit
(a real FleetServer, gRPC with mTLS). An agent's uplink keeps its stream open while idle (``stream_idle_s``, and a
few records a second keep it open for good); with the limit set low, its other streams (a package download in a
rollout) must not be refused for it."""

from __future__ import annotations

import asyncio
import time

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
    """concurrent_streams 2: a package is deployed to gw1, whose Connect stream and its uplink's idle PushRecords
    fill the limit. Its DownloadPackage, on the channel the uplink shares with the model manager, is taken and
    gets the whole package: the idle push ends without an error, and the uplink's next record goes up on a new
    stream, none lost, no failure counted. Before, the download was refused (RESOURCE_EXHAUSTED) for as long as the
    uplink idled: up to stream_idle_s (30 s), and for good while a record came every few seconds."""
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
    up = Uplink(cloud_settings(pki, port, heartbeat_s=0.3), ob)
    digest = package_digest(pkg)
    try:
        await up.start()
        await ob.append_async("result", {"i": 0})
        up.poke()
        await until(lambda: ob.stats()["acked"] == 1, timeout_s=10, what="the first record acked")
        acked_at = time.monotonic()
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
        await asyncio.sleep(max(0.0, 0.6 - (time.monotonic() - acked_at)))  # idle past GIVE_WAY_S (0.5 s)
        got = b"".join(
            [c.data async for c in up.client.stub.DownloadPackage(pb.DownloadRequest(digest=digest))]
        )
        assert got == pkg.read_bytes()
        await ob.append_async("result", {"i": 1})
        up.poke()
        await until(lambda: ob.stats()["acked"] == 2, timeout_s=10, what="the next record acked")
        assert up.reconnects == 0, up.last_error
        assert up.streams == 2  # the next record on a new stream
        assert sorted(r["payload"]["i"] for r in srv.store.records("gw1", limit=10)) == [0, 1]
    finally:
        await up.stop()
        ob.close()
        await srv.stop()
