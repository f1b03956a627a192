"""A refusal on an agent's Connect stream (real fleet service, mTLS) reaches the agent as the refusal it is.

The stream's reports are read by a task of their own while the service sends acknowledgements and desired
states on the same call; a report refused there (over the agent's reports quota, a certificate revoked while
connected, a malformed field or message) ended the call from that task while a message was being sent. grpc refuses a
status sent beside a message under way (``GRPC_CALL_ERROR_TOO_MANY_OPERATIONS``): the service logged an internal
error with two tracebacks (27 times for 200 agents' streams refused for their reports' bytes against
`cloud-trainer serve`), and the agent got no status at all, the call left open and its stream silent for good
(25 of 30 of the streams below), or ``INTERNAL`` instead of the refusal naming its quota."""

from __future__ import annotations

import asyncio
import collections

import grpc
import pytest

from cloud_trainer.fleet.guard import QuotaLimits, Quotas
from cloud_trainer.fleet.service import FleetServer, channel_credentials
from protocols.gen import fleet_pb2 as pb
from tests.support.fleet import make_pki
from tests.support.peers import free_port

AGENTS = [f"gw{i}" for i in range(8)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=AGENTS, admins=())


REPORT = pb.AgentMessage(
    report=pb.HeartbeatRequest(report_seq=1, boot_id="b"), report_id=1
).SerializeToString()
QUOTA = "agent AGENT: over 1 state reports/s; slow down and retry later"
GARBAGE = "/edge.fleet.v1.Fleet/Connect: the request is not a valid protobuf message (DecodeError); nothing was processed"


async def _refused(channel, second: bytes) -> tuple[str, str]:
    """One Connect stream of an agent whose reports quota is 1 a second: an acknowledged report, then ``second``
    at once, refused while the service is sending the acknowledgement of the first (or its desired state); what
    ended the stream."""
    call = channel.stream_stream(
        "/edge.fleet.v1.Fleet/Connect", request_serializer=bytes, response_deserializer=bytes
    )()
    await call.write(REPORT)
    await call.write(second)
    try:
        async for _ in call:
            pass
        return "OK", ""
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or ""


@pytest.mark.parametrize(
    "second, refusal",
    [
        (REPORT, ("RESOURCE_EXHAUSTED", QUOTA)),  # over the reports quota
        (b"\xff\xff\xff", ("INVALID_ARGUMENT", GARBAGE)),  # not a message (refused by the service's guard)
    ],
    ids=["quota", "malformed"],
)
async def test_a_report_refused_on_the_connect_stream_ends_it_with_the_refusal_not_an_internal_error(
    pki, tmp_path, caplog, second, refusal
):
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        quotas=Quotas(QuotaLimits(reports_per_s=1)),
    )
    await srv.start()
    channels = []
    try:
        ends: collections.Counter = collections.Counter()
        for agent in AGENTS:  # one stream per agent: each is refused at its second message
            c = pki / "agents" / agent
            channels.append(
                grpc.aio.secure_channel(
                    f"127.0.0.1:{port}",
                    channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key")),
                )
            )
            try:  # a call left without a status (the other outcome of the race) never ends
                code, details = await asyncio.wait_for(_refused(channels[-1], second), 3)
                ends[(code, details.replace(agent, "AGENT"))] += 1
            except TimeoutError:
                ends[("no status in 3 s", "")] += 1
        assert ends == {refusal: len(AGENTS)}, ends
        assert "internal error of the service" not in caplog.text
    finally:
        for ch in channels:
            await ch.close()
        await srv.stop()
