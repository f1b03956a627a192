"""Two `cloud-trainer serve --replicas` behind one port (SO_REUSEPORT, asked for with --replicas), sharing the
PostgreSQL store and the data folder (control.db, registry, blobs): one is SIGKILLed in the middle of a canary
rollout, the agents' streams move to the other, and the other finishes the rollout. And a replica outlives a
restart of PostgreSQL itself: it reconnects, and a rollout paused across the restart resumes and completes."""

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
from tests.support.waits import until

AGENTS = ("gw1", "gw2", "gw3")


class FakeAgent:
    """An uplink whose 'model manager' takes any desired version at once and reports it active and healthy."""

    def __init__(self, name, pki, port, tmp) -> None:
        self.version = "1.0.0"
        self.ob = Outbox(OutboxSettings(), tmp / name)
        self.ob.open()
        self.up = Uplink(
            cloud_settings(pki, port, agent=name, heartbeat_s=0.2),
            self.ob,
            status=lambda: {
                "labels": {"site": "plant"},
                "health": {},
                "slots": [
                    {
                        "slot": "health",
                        "package": "machine-health",
                        "version": self.version,
                        "digest": "",
                        "status": "active",
                        "reason": "",
                    }
                ],
            },
            on_desired=self.on_desired,
        )

    async def on_desired(self, reply) -> None:
        for d in reply.desired:
            if d.version != self.version:
                stub = self.up.client.stub  # the uplink's one fleet client
                for step in ("active", "healthy"):
                    await stub.ReportDeployment(
                        pb.DeploymentReport(
                            deployment_id=d.deployment_id.split(":")[0],
                            slot=d.slot,
                            version=d.version,
                            step=step,
                            ok=True,
                        ),
                        timeout=5,
                    )
                self.version = d.version


class Canary:
    """N replicas on one port (``--store`` PostgreSQL), the three fake agents connected, and a canary rollout
    of machine-health 2.0.0 (steps 1, 100%) created through the admin API."""

    def __init__(self, tmp_path, store_url: str, replicas: int) -> None:
        self.pki = make_pki(tmp_path / "pki", agents=AGENTS)
        Registry(tmp_path / "cloud" / "registry").publish(
            make_package(tmp_path / "pk", kind="signal", version="2.0.0"), [], {}, None, None
        )
        self.port = port = free_port()
        self.replicas = [
            ServerProcess(tmp_path / "cloud", self.pki, port, ["--store", store_url, "--replicas"]).start()
            for _ in range(replicas)
        ]
        self.agents = [FakeAgent(a, self.pki, port, tmp_path) for a in AGENTS]
        self.creds = channel_credentials(
            self.pki / "ca.pem", self.pki / "admins" / "alice.pem", self.pki / "admins" / "alice.key"
        )
        self.dep: dict = {}

    def admin(self):
        return grpc.aio.secure_channel(f"127.0.0.1:{self.port}", self.creds)

    async def start(self, admin, wait_s: float) -> None:
        for ag in self.agents:
            await ag.up.start()

        async def registered():
            return len((await admin.ListAgents(pb.ListAgentsRequest(), timeout=5)).agents) == 3

        await until(registered, what="three agents registered in the shared store")
        self.dep = json.loads(
            (
                await admin.CreateDeployment(
                    pb.CreateDeploymentRequest(
                        package="machine-health",
                        version="2.0.0",
                        slot="health",
                        agents=list(AGENTS),
                        strategy="canary",
                        steps=["1", "100%"],
                        wait_s=wait_s,
                    ),
                    timeout=10,
                )
            ).json
        )

    async def state(self, admin) -> dict:
        deps = (await admin.ListDeployments(pb.ListDeploymentsRequest(), timeout=5)).deployments
        return next(json.loads(d.json) for d in deps if json.loads(d.json)["id"] == self.dep["id"])

    async def wait_canary_healthy(self, admin) -> None:
        async def canary_healthy():
            d = await self.state(admin)
            return d["targets"]["gw1"]["status"] == "healthy" and d["step"] == 0

        await until(canary_healthy, what="the canary healthy, the rollout still in its first step")

    async def wait_completed(self, admin, what: str) -> None:
        async def completed():
            try:
                return (await self.state(admin))["state"] == "completed"
            except grpc.aio.AioRpcError:
                return False

        await until(completed, what=what)
        assert [ag.version for ag in self.agents] == ["2.0.0"] * 3
        assert all(t["status"] == "healthy" for t in (await self.state(admin))["targets"].values())

    async def stop(self) -> None:
        for ag in self.agents:
            await ag.up.stop()
            ag.ob.close()
        for r in self.replicas:
            r.stop()


async def test_a_replica_killed_mid_rollout_leaves_the_other_to_finish_it(tmp_path, postgres_url):  # noqa: F811
    c = Canary(tmp_path, postgres_url, replicas=2)
    try:
        async with c.admin() as ch:
            admin = rpc.AdminStub(ch)
            await c.start(admin, wait_s=1.0)
            await c.wait_canary_healthy(admin)
            c.replicas[0].kill()  # mid-rollout: the second step has not started
        async with c.admin() as ch:  # lands on the survivor
            await c.wait_completed(rpc.AdminStub(ch), "the surviving replica to finish the rollout")
    finally:
        await c.stop()


async def test_a_rollout_completes_across_a_restart_of_postgresql(tmp_path, postgres_server, postgres_url):  # noqa: F811
    c = Canary(tmp_path, postgres_url, replicas=1)
    try:
        async with c.admin() as ch:
            admin = rpc.AdminStub(ch)
            await c.start(admin, wait_s=0.5)
            await c.wait_canary_healthy(admin)
            pause = pb.ControlRequest(deployment_id=c.dep["id"], action="pause")
            await admin.ControlDeployment(pause, timeout=5)
            await asyncio.to_thread(postgres_server.restart)  # every connection of the replica is cut

            async def resumed():  # the replica's control connection and its store pool come back by themselves
                try:
                    await admin.ControlDeployment(
                        pb.ControlRequest(deployment_id=c.dep["id"], action="resume"), timeout=5
                    )
                    return True
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() != grpc.StatusCode.INVALID_ARGUMENT, exc.details()  # resumed twice
                    return False

            await until(resumed, what="the replica to reconnect to PostgreSQL and resume the rollout")
            await c.wait_completed(admin, "the rollout to complete after the restart")
            assert len((await admin.ListAgents(pb.ListAgentsRequest(), timeout=5)).agents) == 3
    finally:
        await c.stop()
