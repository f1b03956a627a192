"""The agent's uplink refused ``RESOURCE_EXHAUSTED`` by a real fleet service (gRPC, mTLS): the service is up and has
said "too much", so the uplink keeps its backoff wait. A heartbeat or a state update on the Connect stream ends a
wait after a failure the cloud's return mends (the link down), and it ended this one too: the refused batch was
sent again at every heartbeat (every 5 s by default, its backoff reset each time), a batch of up to 1 MB over the
site's link for as long as the quota held (a sample budget of the day: all day)."""

from __future__ import annotations

import pytest

from cloud_trainer.fleet.guard import QuotaLimits, Quotas
from cloud_trainer.fleet.service import FleetServer
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from tests.support.fleet import cloud_settings, make_pki
from tests.support.peers import free_port
from tests.support.waits import until


@pytest.mark.parametrize("stream", [True, False], ids=["connect", "heartbeat"])
async def test_a_push_refused_resource_exhausted_keeps_its_backoff_through_state_updates(tmp_path, stream):
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        quotas=Quotas(
            QuotaLimits(sample_bytes_per_day=1000)
        ),  # the day's sample budget: less than the sample
    )
    await srv.start()
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    ob.append("sample", {"x": 1}, sample=b"\x00" * 5000, sample_ext="npy")
    ob.flush()
    updates = [0]

    async def desired(_reply) -> None:
        updates[0] += 1

    # a backoff far longer than the heartbeats watched below
    settings = cloud_settings(
        pki, port, backoff_initial_s=60, backoff_max_s=60, heartbeat_s=0.2, stream=stream
    )
    up = Uplink(settings, ob, on_desired=desired)
    await up.start()
    try:

        def refusals() -> int:
            return srv.quotas.snapshot("default")["refusals"].get("gw1:samples", 0)

        await until(lambda: refusals() >= 1 and up.state == "backoff", what="the batch refused")
        seen = updates[0]
        await until(lambda: updates[0] >= seen + 5, what="five state updates after the refusal")
        assert refusals() == 1, f"the refused batch was sent {refusals()} times within the backoff"
        assert ob.stats()["depth"] == 1  # kept in the outbox, sent once the backoff is over
    finally:
        await up.stop()
        ob.close()
        await srv.stop()
