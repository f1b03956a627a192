"""gRPC servicers of the fleet service (grpc.aio) and the TLS server around them.

Identity: the TLS layer requires a client certificate signed by the fleet CA; the servicer then
reads the peer certificate's CN (the agent id) and OU (its role). Fleet methods need role
``agent`` and act for that CN only; Admin methods need role ``admin``. No message carries an
agent id from the client, so an agent cannot write as another agent.

The service keeps no state in memory that a second replica would need: everything is in the
store (and the registry / blob folders); per-agent quota counters are per process (``guard``).

Hostile input (issue 16): a request that is not a valid protobuf message, or a JSON field that is not
a JSON object, is ``INVALID_ARGUMENT``; an agent over its quotas gets ``RESOURCE_EXHAUSTED``; an agent
downloads only packages deployed to it (``NOT_FOUND`` otherwise, as for a digest that does not exist).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path

import grpc

from cloud_trainer.blobs import LocalBlobStore
from cloud_trainer.fleet.guard import MalformedRequests, QuotaExceeded, Quotas, json_field
from cloud_trainer.fleet.store import SQLiteStore
from cloud_trainer.pki import ROLE_ADMIN, ROLE_AGENT, identity
from cloud_trainer.registry import Registry
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc

log = logging.getLogger(__name__)
CHUNK = 256 * 1024


def peer_identity(context) -> tuple[str, str]:
    ac = context.auth_context()
    pem = (ac.get("x509_pem_cert") or [b""])[0]
    if not pem:
        return "", ""
    return identity(pem)


async def require(context, role: str) -> str:
    cn, ou = peer_identity(context)
    if ou != role or not cn:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                            f"this method needs a {role} certificate; the client presented "
                            f"{ou or 'no'} certificate {cn!r}")
    return cn


class FleetServicer(rpc.FleetServicer):
    def __init__(self, store: SQLiteStore, blobs: LocalBlobStore, registry: Registry | None, control=None,
                 quotas: Quotas | None = None) -> None:
        self.store, self.blobs, self.registry, self.control = store, blobs, registry, control
        self.quotas = quotas or Quotas()

    async def Heartbeat(self, request, context):
        agent = await require(context, ROLE_AGENT)
        slots = [{"slot": s.slot, "package": s.package, "version": s.version, "digest": s.digest,
                  "status": s.status, "reason": s.reason} for s in request.slots]
        health = await json_field(context, request.health_json, "health_json")
        await asyncio.to_thread(self.store.heartbeat, agent, dict(request.labels), slots, health,
                                request.outbox_depth, {"epoch": request.epoch, "dropped": dict(request.dropped)})
        desired, gen = [], 0
        if self.control is not None:
            gen, desired = await asyncio.to_thread(self.control.desired_for, agent, dict(request.labels), slots,
                                                   health)
        return pb.HeartbeatReply(generation=gen, server_time=time.time(),
                                 desired=[pb.DesiredSlot(**d) for d in desired])

    async def PushRecords(self, request_iterator, context):
        agent = await require(context, ROLE_AGENT)
        async with self._stream(agent, context):
            async for ack in self._push(agent, request_iterator, context):
                yield ack

    @contextlib.asynccontextmanager
    async def _stream(self, agent: str, context):
        """One of the agent's concurrent streams, within its quota (RESOURCE_EXHAUSTED beyond it)."""
        try:
            self.quotas.open_stream(agent)
        except QuotaExceeded as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        try:
            yield
        finally:
            self.quotas.close_stream(agent)

    async def _push(self, agent: str, request_iterator, context):
        async for batch in request_iterator:
            samples = sum(len(r.sample) for r in batch.records if r.kind == "sample")
            try:  # the whole batch is within the quotas, or none of it is stored
                self.quotas.take_batch(agent, len(batch.records),
                                       sum(len(r.payload) + len(r.sample) for r in batch.records))
                if samples:
                    self.quotas.take_sample(agent, samples)
            except QuotaExceeded as exc:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            records = []
            for r in batch.records:
                rec = {"epoch": r.epoch, "seq": r.seq, "kind": r.kind, "t": r.t,
                       "payload": r.payload.decode("utf-8", "replace")}
                if r.kind == "sample" and r.sample:
                    digest = hashlib.sha256(r.sample).hexdigest()
                    if r.sample_sha256 and digest != r.sample_sha256:
                        log.warning("agent %s: sample seq %d arrived damaged (digest mismatch); not acknowledged",
                                    agent, r.seq)
                        continue
                    await asyncio.to_thread(self.blobs.put_bytes, r.sample)
                    rec["sample_sha256"], rec["sample_ext"] = digest, r.sample_ext
                records.append(rec)
            seqs, stored, dup = await asyncio.to_thread(self.store.ingest, agent, records)
            yield pb.Ack(seqs=seqs, stored=stored, duplicates=dup)

    async def DownloadPackage(self, request, context):
        agent = await require(context, ROLE_AGENT)
        deployed = self.control is None or await asyncio.to_thread(self.control.deployed_to, agent, request.digest)
        path = self.registry.by_digest(request.digest) if (self.registry and deployed) else None
        if path is None or not path.exists():  # the same answer whether it exists elsewhere or not at all
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no package with digest {request.digest[:16]!r} "
                                                           "deployed to this agent")
        async with self._stream(agent, context):
            async for chunk in self._send_package(path, request, context):
                yield chunk

    async def _send_package(self, path: Path, request, context):
        total = path.stat().st_size
        if request.offset > total:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"offset {request.offset} beyond size {total}")
        with open(path, "rb") as f:
            f.seek(request.offset)
            off = request.offset
            while chunk := f.read(CHUNK):
                yield pb.Chunk(data=chunk, offset=off, total=total)
                off += len(chunk)

    async def ReportDeployment(self, request, context):
        agent = await require(context, ROLE_AGENT)
        if self.control is not None:
            health = await json_field(context, request.health_json, "health_json")
            await asyncio.to_thread(self.control.on_report, agent, request.deployment_id, request.slot,
                                    request.version, request.step, request.ok, request.reason, health)
        return pb.ReportReply()


class AdminServicer(rpc.AdminServicer):
    def __init__(self, store: SQLiteStore, control=None) -> None:
        self.store, self.control = store, control

    async def ListAgents(self, request, context):
        await require(context, ROLE_ADMIN)
        out = []
        for a in await asyncio.to_thread(self.store.agents):
            st = await asyncio.to_thread(self.store.stats, a["id"])
            out.append(pb.AgentInfo(id=a["id"], labels=a["labels"], last_seen=a["last_seen"] or 0,
                                    slots=[pb.SlotState(**s) for s in a["slots"]], records=st["records"],
                                    last_seq=st["last_seq"]))
        return pb.ListAgentsReply(agents=out)

    async def IngestStats(self, request, context):
        await require(context, ROLE_ADMIN)
        st = await asyncio.to_thread(self.store.stats, request.agent or None)
        gaps = await asyncio.to_thread(self.store.gaps, request.agent) if request.agent else []
        dropped = {}
        if request.agent:
            for a in await asyncio.to_thread(self.store.agents):
                if a["id"] == request.agent:
                    dropped = a.get("outbox", {}).get("dropped", {})
        return pb.IngestStatsReply(records=st["records"], samples=st["samples"], duplicates=st["duplicates"],
                                   gaps=[pb.Gap(**g) for g in gaps], dropped=dropped)

    async def _control(self, context, fn, *args):
        await require(context, ROLE_ADMIN)
        if self.control is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "deployments are not enabled on this server")
        try:
            result = await asyncio.to_thread(fn, *args)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.DeploymentInfo(json=json.dumps(result))

    async def CreateDeployment(self, request, context):
        await require(context, ROLE_ADMIN)
        gate = await json_field(context, request.gate_json, "gate_json")
        req = {"package": request.package, "version": request.version, "slot": request.slot,
               "agents": list(request.agents), "selector": dict(request.selector),
               "strategy": request.strategy or "canary", "steps": list(request.steps) or ["1", "100%"],
               "wait_s": request.wait_s, "gate": gate}
        return await self._control(context, lambda: self.control.create(req))

    async def ListDeployments(self, request, context):
        await require(context, ROLE_ADMIN)
        deps = await asyncio.to_thread(self.control.list) if self.control else []
        return pb.ListDeploymentsReply(deployments=[pb.DeploymentInfo(json=json.dumps(d)) for d in deps])

    async def ControlDeployment(self, request, context):
        return await self._control(context, self.control.command, request.deployment_id, request.action)

    async def Rollback(self, request, context):
        return await self._control(context, self.control.rollback, request.package, request.version, request.slot,
                                   list(request.agents))


def server_credentials(ca: Path, cert: Path, key: Path) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())], root_certificates=ca.read_bytes(),
                                       require_client_auth=True)


def channel_credentials(ca: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes(), private_key=key.read_bytes(),
                                        certificate_chain=cert.read_bytes())


class FleetServer:
    """``await start()`` / ``await stop()``; everything persistent lives under ``data``."""

    def __init__(self, data: Path, port: int, ca: Path, cert: Path, key: Path, host: str = "127.0.0.1",
                 registry: Path | None = None, control=None, quotas: Quotas | None = None) -> None:
        self.data = Path(data)
        self.store = SQLiteStore(self.data / "fleet.db")
        self.blobs = LocalBlobStore(self.data / "blobs")
        self.registry = Registry(registry or self.data / "registry")
        if control is None:
            from cloud_trainer.fleet.control import Control

            control = Control(self.data / "control.db", self.registry, self.store)
        self.control = control
        self.quotas = quotas or Quotas()
        self.server = grpc.aio.server(interceptors=[MalformedRequests()], options=[
                                      ("grpc.max_receive_message_length", self.quotas.limits.max_message_bytes),
                                               ("grpc.max_send_message_length", 64 * 1024 * 1024)],
                                      maximum_concurrent_rpcs=10_000)
        rpc.add_FleetServicer_to_server(FleetServicer(self.store, self.blobs, self.registry, self.control,
                                                      self.quotas), self.server)
        rpc.add_AdminServicer_to_server(AdminServicer(self.store, self.control), self.server)
        self.port = self.server.add_secure_port(f"{host}:{port}", server_credentials(ca, cert, key))
        self._tick: asyncio.Task | None = None
        self._stopped = False

    async def start(self) -> None:
        await self.server.start()
        if self.control is not None and hasattr(self.control, "tick"):
            self._tick = asyncio.create_task(self._ticker())

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await asyncio.to_thread(self.control.tick)
            except Exception:
                log.exception("deployment tick failed")

    async def stop(self, grace_s: float = 1.0) -> None:
        if self._stopped:  # idempotent: a second stop is a no-op
            return
        self._stopped = True
        if self._tick:
            self._tick.cancel()
        await self.server.stop(grace_s)
        self.store.close()
