"""The agent's one client of the fleet service: the TLS channel, the stubs, and retries with backoff.

Owned by the uplink (``Uplink.client``), which opens it at start and closes it at stop, and shared by
everything else that talks to the fleet: the model manager (downloads, deployment reports) and the
agent-configuration host (config reports). Nothing else builds a channel or reaches into one.

``backoff(n)``: the wait before attempt ``n + 1`` (exponential from ``backoff_initial_s`` to
``backoff_max_s``, with jitter), the same schedule the uplink's streams use.
``next_report()``: the (boot id, number) a state or deployment report takes as it is made: one count for both
kinds, counting up for as long as the process runs, under an id (a run) drawn at start and drawn again after a link
loss (``new_run``; a state report names the process's runs before, ``runs_before``): a call of the fleet's failed ``UNAVAILABLE`` (its connection reset or closed under it; the
uplink's Connect stream too), or the fleet answered a state report as late (trailing metadata
``REPORT_KEY: REPORT_LATE``). The cloud orders a state report against a deployment step by them (a report made
before a verdict but received after it no longer wins) and drops a report older than one it took: a lower number of
the same run, or any report of a run that a newer run followed. A gateway whose VM was restored from a memory
snapshot resumes with the snapshot's count, below numbers the cloud took since: its first call on the restored
connection fails (a new run), or, its channel idle at the snapshot, its first state report is answered late (a new
run for the next one). A connection the fleet closed for want of calls (``CONNECTION_IDLE_S``, 60 s: between two
heartbeats of ``heartbeat_s`` >= 60 with ``stream: false``) is no loss: within one run the numbers order every
report, and a new run at each heartbeat was a control-state write each and churned the fleet's 64 kept runs.
``report_deployment(...)``: one step of a deployment, ``True`` once the fleet has it (or refused it for
good: ``PERMISSION_DENIED``, a deployment it does not know for this agent), ``False`` when it could not be
sent (the caller keeps it and tries again later). A step the fleet answered late (made before a step it took) is
sent once more under the new run when this process made no later step of that deployment (``_resend``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.uplink.settings import CloudSettings

log = logging.getLogger(__name__)

# earlier runs of the process a state report names (``HeartbeatRequest.runs_before``), of those the fleet answered a
# call of (``heard``): the run told late, or whose link was lost, and those drawn since whose answers were lost on the
# way (~34 bytes each). A run whose calls all failed UNAVAILABLE is not named: each attempt of a link outage draws one,
# and three (a heartbeat_s of 5 s: 15 s) pushed out the run whose step the fleet kept during a clone hold
RUNS_NAMED = 3


class FleetClient:
    def __init__(
        self,
        settings: CloudSettings,
        base_dir: Path = Path("."),
        for_cloud: Callable[..., str] | None = None,
    ) -> None:
        """``for_cloud(text, clear)``: a deployment step's reason as the cloud may be told it
        (``edge_agent.cloud_text``), but for the values it sends in clear beside it (its version)."""
        self.s = settings
        self.base = Path(base_dir)
        self.for_cloud = for_cloud or (lambda text, clear=(): text)
        self.channel: Any = None
        self._stub: Any = None
        self.boot_id = uuid.uuid4().hex  # this process's reports (a restart starts a new run)
        # this process's runs before ``boot_id``, newest first (at most RUNS_NAMED): each state report names them
        # (``runs_before``), so that the fleet ties a run to the gateway's earlier ones, never to its clone's
        self.runs_before: list[str] = []
        self._heard = False  # the fleet answered a call since ``boot_id`` was drawn (``heard``)
        self._reports = itertools.count(1)
        self._link_lost = False  # lost since the last report was numbered (``link_lost``)
        self._telling: set[asyncio.Future] = set()  # the Connect streams' ends being read (``_stream_ended``)
        self._steps: dict[
            str, int
        ] = {}  # deployment id -> the number of the last step made of it (``_resend``)

    def next_report(self) -> tuple[str, int]:
        """(boot id, number) for a report made now: state reports and deployment steps share one count. A new run
        once the link was lost since the last one (``link_lost``)."""
        if self._link_lost:
            self.new_run()
        return self.boot_id, next(self._reports)

    def new_run(self) -> None:
        """Number the next reports under a new boot id: the cloud takes the new run as newer than every report of
        the one before, and drops a report of the one before that arrives after the new run's (a call held on the
        way across a lost link). The count goes on; the run before is named in the new run's state reports if the
        fleet answered a call of it (``heard``)."""
        if self._heard:
            self.runs_before = [self.boot_id, *self.runs_before][:RUNS_NAMED]
        self.boot_id = uuid.uuid4().hex
        self._link_lost = False
        self._heard = False

    def heard(self) -> None:
        """The fleet answered (a unary call's end but a lost link's, a message on the Connect stream): the run is named
        as a run before in the next runs' state reports (``new_run``)."""
        self._heard = True

    def link_lost(self) -> None:
        """The link was lost (a call failed ``UNAVAILABLE``; the fleet took a report for late): the next report
        starts a new run. Never for a connection closed idle (the fleet's ``CONNECTION_IDLE_S``), which no call
        sees."""
        self._link_lost = True

    def _ended(self, code, trailing) -> None:
        """A unary call's end (``_call_ends``)."""
        import grpc

        from protocols.refusals import REPORT_KEY, REPORT_LATE

        if code not in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
        ):
            self.heard()
        if code == grpc.StatusCode.UNAVAILABLE or (REPORT_KEY, REPORT_LATE) in tuple(trailing or ()):
            self.link_lost()

    def _stream_ended(self, call) -> None:
        if call.cancelled():  # ended by the uplink (stopping, a silent stream): no word of the link
            return
        told = asyncio.ensure_future(self._stream_told(call))
        self._telling.add(told)
        told.add_done_callback(self._telling.discard)

    async def _stream_told(self, call) -> None:
        self._ended(await call.code(), await call.trailing_metadata())

    def _path(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else self.base / q

    def open(self) -> None:
        import grpc

        from protocols.gen import fleet_pb2_grpc as rpc

        creds = grpc.ssl_channel_credentials(
            root_certificates=self._path(self.s.ca_file).read_bytes(),
            private_key=self._path(self.s.key_file).read_bytes(),
            certificate_chain=self._path(self.s.cert_file).read_bytes(),
        )
        opts: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.keepalive_time_ms", round(self.s.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", round(self.s.keepalive_timeout_s * 1000)),
            # grpc 1.85 times a keepalive ping out by this one (default 60 s), not by keepalive_timeout_ms:
            # a frozen path (a NAT that dropped the flow, no FIN, no RST) was noticed after ~70 s, not 15
            ("grpc.http2.ping_timeout_ms", round(self.s.keepalive_timeout_s * 1000)),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ]
        if self.s.server_name:
            opts.append(("grpc.ssl_target_name_override", self.s.server_name))
        self.channel = grpc.aio.secure_channel(
            self.s.endpoint,
            creds,
            options=opts,
            compression=grpc.Compression.Gzip if self.s.compression else None,
            interceptors=[_call_ends(self._ended)],
        )
        self._stub = rpc.FleetStub(self.channel)
        connect = self._stub.Connect

        def watched(*args, **kwargs):
            """The uplink's Connect stream, its end told like a unary call's (``_ended``)."""
            call = connect(*args, **kwargs)
            call.add_done_callback(self._stream_ended)
            return call

        self._stub.Connect = watched

    @property
    def stub(self):
        """The ``Fleet`` service's stub on the shared channel (``RuntimeError`` before ``open``)."""
        if self._stub is None:
            raise RuntimeError("the fleet client is not open (the uplink has not started)")
        return self._stub

    async def close(self, timeout_s: float = 5.0) -> None:
        self._link_lost = True  # a channel opened again starts a new run
        if self.channel is None:
            return
        try:  # never let an unreachable cloud hold up the agent's shutdown
            async with asyncio.timeout(timeout_s):
                await self.channel.close()
        except Exception:
            pass
        self.channel = self._stub = None

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after ``attempt`` failures (1, 2, ...): doubling, capped, with jitter."""
        d = min(self.s.backoff_max_s, self.s.backoff_initial_s * 2 ** max(0, attempt - 1))
        return random.uniform(d / 2, d)

    async def report_deployment(
        self,
        deployment_id: str,
        step: str,
        ok: bool,
        reason: str = "",
        *,
        slot: str = "",
        version: str = "",
        health: dict | None = None,
        kind: str = "model",
    ) -> bool:
        from protocols.gen import fleet_pb2 as pb
        from protocols.refusals import REPORT_KEY, REPORT_LATE

        for _ in range(2):  # once more, under a new run, for a step the fleet kept only as late (``_resend``)
            # taken as the step is sent (again at each retry): the step is in effect by then, so a state report
            # numbered after it shows what the step left
            boot, seq = self.next_report()
            self._steps.pop(deployment_id, None)
            self._steps[deployment_id] = seq
            if len(self._steps) > 64:  # the oldest deployment's
                del self._steps[next(iter(self._steps))]
            try:
                call = self.stub.ReportDeployment(
                    pb.DeploymentReport(
                        deployment_id=deployment_id,
                        slot=slot,
                        version=version,
                        step=step,
                        ok=ok,
                        reason=self.for_cloud(reason, (version, slot)),  # the version it names stays
                        health_json=json.dumps(health or {}),
                        kind=kind,
                        report_seq=seq,
                        boot_id=boot,
                    ),
                    timeout=10,
                )
                await call
                late = (REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata() or ())
            except Exception as exc:
                code, details = getattr(exc, "code", None), getattr(exc, "details", None)  # a grpc.RpcError
                if callable(code) and callable(details) and code().name == "PERMISSION_DENIED":
                    # the fleet does not know this deployment for this agent (gone, or never ours): final
                    log.warning(
                        "deployment step %s (%s) not accepted by the fleet: %s", step, kind, details()
                    )
                    return True
                log.warning("could not report deployment step %s (%s): %s", step, kind, exc)
                return False
            if not (late and self._resend(deployment_id, seq)):
                return True
            log.info("deployment step %s (%s) was late at the fleet: sent again under a new run", step, kind)
        return True

    def _resend(self, deployment_id: str, seq: int) -> bool:
        """A step answered late (kept by the fleet only as its target's last report): send it again (under the
        new run the mark drew) when it is still the last step made of its deployment: the fleet took a later one
        this process never made (a VM restored from a memory snapshot, its memory older than the fleet's). After a
        later step of this process the step was only overtaken on the way (a reorder): sent again, it would be
        taken under the new run and undo the later one (a healthy target back to under way)."""
        return self._steps.get(deployment_id) == seq


def _call_ends(ended: Callable[[Any, Any], None]):
    """A client interceptor telling ``ended(code, trailing_metadata)`` at the end of every unary call (heartbeats,
    deployment reports; the Connect stream's end is told by ``open``'s wrapper): a link loss is seen by the call it broke, not by the
    channel's state, which leaves READY alike when the fleet closes a connection left without calls."""
    import grpc

    class CallEnds(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, client_call_details, request):
            call = await continuation(client_call_details, request)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                ended(exc.code(), exc.trailing_metadata())
            else:
                ended(await call.code(), await call.trailing_metadata())
            return call

    return CallEnds()
