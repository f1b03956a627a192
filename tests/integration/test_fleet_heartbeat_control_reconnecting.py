# ruff: noqa: F811  (pytest fixtures imported from tests.support.postgres are parameters here)
"""PostgreSQL just restarted under a running fleet service: the store's pool has its connections again, the
rollout control's connection is still in its pause before the next attempt. An agent's unary heartbeat is
recorded, but its desired state cannot be read yet: the agent is answered a retryable UNAVAILABLE naming why,
as for the store's other failures, not UNKNOWN ("Unexpected <class 'ConnectionError'>") with a traceback."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from cloud_trainer.fleet.service import FleetServer, channel_credentials
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.integration.test_fleet_postgres_outage_logs import _refuse_connections
from tests.support.fleet import make_pki
from tests.support.peers import free_port
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)
from tests.support.waits import until


async def test_a_heartbeat_while_the_control_connection_waits_to_reconnect_is_unavailable_saying_why(
    tmp_path,
    postgres_server,
    postgres_url,
):
    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=())
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", store=postgres_url
    )
    await srv.start()
    ch = grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key"),
    )
    db = srv.control.db
    try:
        await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(labels={"site": "plant"}), timeout=10)
        # a long pause after a refused reconnect, so that the window below stays open whatever the machine's speed
        db.backoff_s = db.max_backoff_s = db._delay = 600.0
        await asyncio.to_thread(_refuse_connections, postgres_server, postgres_url, True)
        # the rollouts' tick meets the cut connection, then its reconnect is refused: the pause begins
        await until(
            lambda: db.conn.closed and db._next_try > time.monotonic(), what="the control in its pause"
        )
        await asyncio.to_thread(_refuse_connections, postgres_server, postgres_url, False)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(labels={"site": "plant"}), timeout=10)
        code, details = err.value.code(), err.value.details()
        assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
        assert "database or object store is unreachable" in details and "again later" in details, details
        assert "error id " in details and "127.0.0.1" not in details and "next attempt" not in details, (
            details
        )
        # the heartbeat itself was recorded (the store works again)
        assert [a["id"] for a in srv.store.agents()] == ["gw1"]
    finally:
        await asyncio.to_thread(_refuse_connections, postgres_server, postgres_url, False)
        await ch.close()
        await srv.stop()
