"""The uplink's long-lived PushRecords stream against the fleet service's per-agent ``concurrent_streams`` limit
(a real FleetServer, gRPC with mTLS). An agent's uplink keeps its stream open while idle (``stream_idle_s``, and a
few records a second keep it open for good); with the limit set low, its other streams (a package download in a
rollout) must not be refused for it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cloud_trainer.fleet.guard import QuotaLimits, Quotas
from cloud_trainer.fleet.service import FleetServer
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from tests.integration.test_halfopen import another_stream
from tests.support.fleet import cloud_settings, make_pki
from tests.support.peers import free_port
from tests.support.waits import until


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=("gw1",))


async def test_another_stream_of_an_agent_whose_uplink_idles_at_its_limit_is_not_refused(
    tmp_path, pki
) -> None:
    """concurrent_streams 2: the agent's Connect and its uplink's idle PushRecords fill it. A further stream of the
    agent's on the same connection (a stand-in for a rollout's DownloadPackage) is taken: the idle push ends
    without an error and the uplink's next record goes up on a new stream, none lost, no failure counted. Before,
    the new stream was refused (RESOURCE_EXHAUSTED) for as long as the uplink idled: up to stream_idle_s (30 s), and
    for good while a record came every few seconds, so a rollout to the gateway stalled."""
    port = free_port()
    quotas = Quotas(QuotaLimits(concurrent_streams=2))
    srv = FleetServer(
        tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", quotas=quotas
    )
    await srv.start()
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, port, heartbeat_s=5), ob)
    agent = ("default", "gw1")
    try:
        await up.start()
        await ob.append_async("result", {"i": 0})
        up.poke()
        await until(lambda: ob.stats()["acked"] == 1, timeout_s=10, what="the first record acked")
        await until(lambda: quotas._streams[agent] == 2, what="Connect and the idle PushRecords open")
        await asyncio.sleep(0.6)  # the push idles (the service's GIVE_WAY_S: 0.5 s)
        code = await another_stream(up.client.stub)
        assert code is grpc.StatusCode.OK, code
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
