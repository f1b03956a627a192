"""The agent's ``Connect`` stream against a service that keeps it open and says nothing (a hung service; a middlebox
that holds the connection and answers its keepalive pings): a real gRPC server (TLS, client certificates) whose
first ``Connect`` reads the agent's reports and never answers, and whose second answers as the fleet service does
(the report acknowledged, the desired state sent)."""

from __future__ import annotations

import grpc
import pytest

from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import cloud_settings, make_pki
from tests.support.peers import free_port
from tests.support.waits import until


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=("gw1",), admins=())


class SilentFirst(rpc.FleetServicer):
    """Its first Connect takes every report and answers none; the next ones answer."""

    def __init__(self) -> None:
        self.calls = 0
        self.reports: list[int] = []  # per call, the reports it received
        self.runs: list[set[str]] = []  # per call, the runs (boot ids) its reports were numbered under

    async def Connect(self, request_iterator, context):
        self.calls += 1
        me = len(self.reports)
        self.reports.append(0)
        self.runs.append(set())
        if self.calls == 1:
            async for msg in request_iterator:
                self.reports[me] += 1
                self.runs[me].add(msg.report.boot_id)
            return
        async for msg in request_iterator:
            self.reports[me] += 1
            self.runs[me].add(msg.report.boot_id)
            yield pb.ServerMessage(acked=msg.report_id)
            yield pb.ServerMessage(desired=pb.HeartbeatReply(generation=7))


async def test_a_connect_stream_left_open_and_silent_is_ended_and_opened_again(tmp_path, pki) -> None:
    """keepalive_timeout_s 1: the report unanswered for 1 s on the silent stream ends it, and the agent connects
    again and gets its desired state (generation 7) there. Before, it waited on the silent stream for ever. A silent
    stream is a lost link: the reports after it go under a new run (a gateway restored from a VM memory snapshot,
    its old connection dead without a word and its count back at the snapshot's, had its reports on the next
    stream dropped by the fleet as late until the count passed the fleet's)."""
    server = grpc.aio.server()
    rpc.add_FleetServicer_to_server(fleet := SilentFirst(), server)
    creds = grpc.ssl_server_credentials(
        [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
        root_certificates=(pki / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    port = free_port()
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    await server.start()
    ob = Outbox(OutboxSettings(commit_interval_ms=5), tmp_path / "agent")
    ob.open()
    got: list[int] = []

    async def on_desired(reply) -> None:
        got.append(reply.generation)

    up = Uplink(cloud_settings(pki, port, heartbeat_s=0.2, keepalive_timeout_s=1), ob, on_desired=on_desired)
    try:
        await up.start()
        await until(lambda: 7 in got, timeout_s=30, what="the desired state from the second Connect")
        assert fleet.calls == 2 and fleet.reports[0] >= 1, (fleet.calls, fleet.reports)
        assert "no answer from the fleet service on the Connect stream" in (up.last_error or "")
        assert fleet.runs[1] and fleet.runs[0].isdisjoint(fleet.runs[1]), fleet.runs  # was: the same run
    finally:
        await up.stop()
        ob.close()
        await server.stop(None)
