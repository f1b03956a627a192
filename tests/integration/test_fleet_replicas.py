"""Two `cloud-trainer serve` replicas behind one port (SO_REUSEPORT, which grpc sets on Linux), sharing the
PostgreSQL store and the data folder (control.db, registry, blobs): one is SIGKILLed in the middle of a canary
rollout, the agents' streams move to the other, and the other finishes the rollout."""

from __future__ import annotations

import asyncio
import json

import grpc

from cloud_trainer.fleet.service import channel_credentials
from cloud_trainer.registry import Registry
from edge_agent.outbox.settings import OutboxSettings
from edge_agent.outbox.store import Outbox
from edge_agent.uplink.client import Uplink
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import ServerProcess, cloud_settings, make_pki
from tests.support.models import make_package
from tests.support.peers import free_port
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)

AGENTS = ("gw1", "gw2", "gw3")


async def until(pred, timeout_s=20.0, what="condition"):
    for _ in range(int(timeout_s * 10)):
        if await pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class FakeAgent:
    """An uplink whose 'model manager' takes any desired version at once and reports it active and healthy."""

    def __init__(self, name, pki, port, tmp) -> None:
        self.version = "1.0.0"
        self.ob = Outbox(OutboxSettings(), tmp / name)
        self.ob.open()
        self.up = Uplink(cloud_settings(pki, port, agent=name, heartbeat_s=0.2), self.ob,
                         status=lambda: {"labels": {"site": "plant"}, "health": {},
                                         "slots": [{"slot": "health", "package": "machine-health",
                                                    "version": self.version, "digest": "", "status": "active",
                                                    "reason": ""}]},
                         on_desired=self.on_desired)

    async def on_desired(self, reply) -> None:
        for d in reply.desired:
            if d.version != self.version:
                stub = self.up.client.stub  # the uplink's one fleet client
                for step in ("active", "healthy"):
                    await stub.ReportDeployment(pb.DeploymentReport(deployment_id=d.deployment_id.split(":")[0],
                                                                    slot=d.slot, version=d.version, step=step,
                                                                    ok=True), timeout=5)
                self.version = d.version


async def test_a_replica_killed_mid_rollout_leaves_the_other_to_finish_it(tmp_path, postgres_url):  # noqa: F811
    pki = make_pki(tmp_path / "pki", agents=AGENTS)
    reg = Registry(tmp_path / "cloud" / "registry")
    reg.publish(make_package(tmp_path / "pk", kind="signal", version="2.0.0"), [], {}, None, None)
    port = free_port()
    args = ["--store", postgres_url]
    replicas = [ServerProcess(tmp_path / "cloud", pki, port, args).start(),
                ServerProcess(tmp_path / "cloud", pki, port, args).start()]
    agents = [FakeAgent(a, pki, port, tmp_path) for a in AGENTS]
    creds = channel_credentials(pki / "ca.pem", pki / "admins" / "alice.pem", pki / "admins" / "alice.key")
    try:
        for ag in agents:
            await ag.up.start()
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            admin = rpc.AdminStub(ch)

            async def registered():
                return len((await admin.ListAgents(pb.ListAgentsRequest(), timeout=5)).agents) == 3

            await until(registered, what="three agents registered in the shared store")
            dep = json.loads((await admin.CreateDeployment(pb.CreateDeploymentRequest(
                package="machine-health", version="2.0.0", slot="health", agents=list(AGENTS), strategy="canary",
                steps=["1", "100%"], wait_s=1.0), timeout=10)).json)

            async def state():
                deps = (await admin.ListDeployments(pb.ListDeploymentsRequest(), timeout=5)).deployments
                return next(json.loads(d.json) for d in deps if json.loads(d.json)["id"] == dep["id"])

            async def canary_healthy():
                d = await state()
                return d["targets"]["gw1"]["status"] == "healthy" and d["step"] == 0

            await until(canary_healthy, what="the canary healthy, the rollout still in its first step")
            replicas[0].kill()  # mid-rollout: the second step has not started
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:  # lands on the survivor
            admin = rpc.AdminStub(ch)

            async def completed():
                try:
                    return (await state())["state"] == "completed"
                except grpc.aio.AioRpcError:
                    return False

            await until(completed, what="the surviving replica to finish the rollout")
            assert [ag.version for ag in agents] == ["2.0.0"] * 3
            assert all(t["status"] == "healthy" for t in (await state())["targets"].values())
    finally:
        for ag in agents:
            await ag.up.stop()
            ag.ob.close()
        for r in replicas:
            r.stop()
