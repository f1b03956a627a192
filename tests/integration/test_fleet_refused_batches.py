"""Batches the fleet service refuses (real gRPC server with mTLS, in this process, and the agents' own client) are
not kept in the service's memory."""

from __future__ import annotations

import asyncio
import gc
import time

import grpc
import pytest

from cloud_trainer.fleet.guard import QuotaLimits, Quotas
from cloud_trainer.fleet.service import FleetServer
from cloud_trainer.pki import ROLE_AGENT, init_ca, issue
from edge_agent.uplink.fleet_client import FleetClient
from protocols.gen import fleet_pb2 as pb
from tests.support.fleet import cloud_settings
from tests.support.peers import free_port

AGENTS = {"b1": "beta"}
MARK = b"refused-batch-marker"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pki = tmp_path_factory.mktemp("refused") / "pki"
    init_ca(pki)
    issue(pki, "fleet-service", "server", pki / "server", ["127.0.0.1", "localhost"])
    for agent, tenant in AGENTS.items():
        issue(pki, agent, ROLE_AGENT, pki / "agents" / agent, tenant=tenant)
    return pki


@pytest.fixture
async def cloud(pki, tmp_path):
    srv = FleetServer(
        tmp_path / "cloud",
        free_port(),
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        quotas=Quotas(QuotaLimits(record_bytes_per_s=64 * 1024)),
    )
    await srv.start()
    clients = {a: FleetClient(cloud_settings(pki, srv.port, a)) for a in AGENTS}
    for c in clients.values():
        c.open()
    yield srv, clients
    for c in clients.values():
        await c.close()
    await srv.stop()


def _batch(seq: int, size: int) -> pb.RecordBatch:
    sample = MARK + bytes(size - len(MARK))
    rec = pb.Record(seq=seq, kind="sample", t=time.time(), payload=b"{}", sample=sample, sample_ext=".npy")
    return pb.RecordBatch(records=[rec])


async def _push(client, batch: pb.RecordBatch) -> list:
    return [a async for a in client.stub.PushRecords(iter([batch]), timeout=30)]


def _batches_kept() -> int:
    gc.collect()
    return sum(
        1
        for o in gc.get_objects()
        if type(o).__name__ == "RecordBatch" and o.records and o.records[0].sample.startswith(MARK)
    )


async def test_a_refused_batch_is_not_kept_in_the_services_memory(cloud):
    """An agent sends batches over its bytes per second, each refused. grpc's receiver of the request stream
    kept the last message it gave (a call refused ends before the next is read) with the call's state, which is
    never freed, and the abort's traceback kept the handler's frames with the batch: every refused batch stayed
    in the service's memory for good (one agent sending 15-MB batches over its rate: +170 MB a second, the
    service killed for memory within minutes, every tenant's with it)."""
    srv, clients = cloud
    for seq in range(1, 6):
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await _push(clients["b1"], _batch(seq, 100_000))  # over 64 KiB/s: refused whole
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value.details()
    del ei  # (the client's error)
    for _ in range(20):  # the loop finishes closing the ended calls' generators
        await asyncio.sleep(0.01)
    assert _batches_kept() == 0
