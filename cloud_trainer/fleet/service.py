"""gRPC servicers of the fleet service (grpc.aio) and the TLS server around them.

Identity: the TLS layer requires a client certificate signed by the fleet CA; the servicer then
reads the peer certificate's CN (the agent id), OU (its role) and tenant (``cloud_trainer.pki``;
parsed once per certificate, not per call). Fleet methods need role ``agent`` and act for that CN
in its tenant only; Admin methods need role ``admin`` and act in the admin's tenant only;
``CreateTenant``/``ListTenants`` need role ``operator`` (no tenant: counts, never rows). No message
carries an agent id or tenant from the client, so an agent cannot write as another agent or
tenant. Another tenant's agent, package or deployment is ``PERMISSION_DENIED`` with the same text
as one that does not exist, so that a refusal tells nothing about other tenants.

The service keeps no state in memory that a second replica would need: everything is in the
store, the blob store (a folder, or an S3 bucket shared by replicas on several hosts) and the
registry; per-agent quota counters are per process (``guard``), the per-tenant quotas (agents,
records, record bytes and sample bytes per day, set with ``CreateTenant``) are counted in the store.

Hostile input (issue 16): a request that is not a valid protobuf message, or a JSON field that is not
a JSON object, is ``INVALID_ARGUMENT``, as is a value no store holds (a record's seq or epoch, a state
report's outbox depth, epoch or dropped count above 2^63-1), a record's time that is not finite, text with NUL
characters, a sample whose payload is not a JSON object or whose metadata columns (model, label, ...) are not
short strings, before anything of the message is kept; a store that fails a batch otherwise is ``UNAVAILABLE``
(the agent sends it again), never an opaque ``UNKNOWN``, and told by its kind and an error id, never in its own
words (SQL, hosts, buckets: ``cloud_trainer.fleet.faults``); an agent over its quotas gets ``RESOURCE_EXHAUSTED``; an agent
downloads only packages deployed to it (``PERMISSION_DENIED`` otherwise, with the same text as for a
digest that does not exist, or one of another tenant).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from cloud_trainer.blobs import BlobStore, LocalBlobStore, open_blobs
from cloud_trainer.fleet.commands import Commands, TooManyCommands, add_commands
from cloud_trainer.fleet.control import KEPT_LATE, LEFT, SUPERSEDED, NotInTenant, TooManyRollouts, _run_key
from cloud_trainer.fleet.deployment import Deployment, gate_from_request
from cloud_trainer.fleet.failures import RepeatedFailure
from cloud_trainer.fleet.faults import FaultLog, Faults, Refusal, told
from cloud_trainer.fleet.guard import (
    IDLE_FORGET_S,
    MalformedRequests,
    QuotaExceeded,
    Quotas,
    free_gates,
    json_field,
    over_int64,
    report_fields,
    tenant_gate,
)
from cloud_trainer.fleet.portguard import (
    Announcement,
    PortTaken,
    cannot_bind,
    in_use,
    store_identity,
)
from cloud_trainer.fleet.store import (
    QUOTA_FIELDS,
    RETAIN_DAYS_LEAST,
    AgentRowsLocked,
    Store,
    TenantQuotaExceeded,
    TooManyEpochs,
    meta_problem,
    open_store,
    record_problem,
    sample_kind,
)
from cloud_trainer.fleet.stream import StreamHub, desired_reply, offer
from cloud_trainer.fleet.writers import StoreWriters
from cloud_trainer.pki import (
    AGENT_ID_RE,
    REVOKED_FILE,
    ROLE_ADMIN,
    ROLE_AGENT,
    ROLE_OPERATOR,
    Identity,
    Revocations,
    identity,
)
from cloud_trainer.registry import WITHDRAWN, Registry
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from protocols.image_header import KIND_SUFFIXES, SNIFF_BYTES, image_kind
from protocols.refusals import (
    EPOCHS_BOUND,
    REFUSAL_KEY,
    REPORT_KEY,
    REPORT_LATE,
    STREAMS_FULL,
    STREAMS_LIMIT_KEY,
)

log = logging.getLogger(__name__)
CHUNK = 256 * 1024
# package downloads read their files in threads of their own (never the loop's, nor those the store's writes wait
# in), and one tenant's downloads use at most PACKAGE_READS_PER_TENANT of them at a time
PACKAGE_READERS = 8
PACKAGE_READS_PER_TENANT = 2
# a download in progress looks again this often (and before its last chunk) at whether its package may still be
# sent: a version withdrawn meanwhile is not delivered
RECHECK_S = 1.0
# a re-check reads the package's own index.json; whether it is still deployed to the agent is asked of the control
# again only once the tenant's desired states changed (``Control.desired_marks``), and at least this often (another
# replica's change, with no stream hub reading the change log here)
DEPLOYED_TTL_S = 30.0
DEPLOYED_CACHED = 10_000  # (tenant, agent, digest) answers kept at most
# one tenant's batches written at once (each in a worker thread, waiting for the store): the worker threads are
# shared by every call of every tenant (state reports, the streams' flushes, downloads, admin calls), so a tenant
# with many streams writing while the store is slow held them all; its further batches wait on the loop instead.
# A write counts until its thread ends, also after its call ended (the agent cancels a call not acknowledged
# within 60 s): counted until the call ended, each retry during a stall held one more thread, and 6 retries of one
# agent (min(32, cpus + 4) threads on 2 cores) held every worker thread: another tenant's calls all waited
INGESTS_PER_TENANT = 2
# the threads the batches' store writes run in (their own, never the worker threads every other call waits for):
# STORE_WRITERS writes of any tenants at once, and past them one write of each tenant with none running, up to
# STORE_WRITERS_MOST in all (cloud_trainer.fleet.writers): 4 tenants stalled in the store (2 writes each) held all 8
# and every other tenant's batches waited until one of those writes ended
STORE_WRITERS = 8
STORE_WRITERS_MOST = 128
# the same for unary heartbeats (agents before v3, or against servers without Connect): a write each, in a thread
HEARTBEATS_PER_TENANT = 4
# a unary heartbeat's conditional write, its row judged again after each refusal (``_write_checked``), at most so often
REPORT_WRITE_TRIES = 3
# the reads of an agent's row that a state report makes (``_held_above``: a stream's report of a run new to the
# process) and of which of its runs began last (``_other_runs``: a stream report its row refused) run in threads of
# their own (``StoreWriters``: ROW_READERS of any tenants, past them one of each tenant with none running, up to
# ROW_READERS_MOST), each in a place of its tenant's heartbeats: in the loop's default executor (6 threads on 2 cores), two tenants' streams against a slow store took every thread the rollout tick, the
# admin calls and every tenant's heartbeats wait for
ROW_READERS = 4
ROW_READERS_MOST = 64
# the same for an admin's calls (stats that scan an agent's records, deployments, commands): per tenant, in threads
ADMIN_CALLS_PER_TENANT = 2
QUOTA_TTL_S = (
    5.0  # how long a replica trusts its copy of which tenants have an agent quota (and of its refusals)
)
REFUSED_AGENTS_KEPT = 100_000  # agents refused for their tenant's agent quota, remembered for QUOTA_TTL_S
# how often the state kept of idle tenants and agents is looked for and forgotten (FleetServer.forget_idle)
FORGET_EVERY_S = 60.0
# stop() waits this long for a rollout tick under way (its thread cannot be cancelled) before it closes the control
# database; a tick still running then keeps it open (a warning says so) rather than failing under a closed one
TICK_STOP_S = 10.0
# how often the rollout tick advances the rollouts in progress (FleetServer's ``tick_s``)
TICK_S = 1.0
# retention (``--retain-days``): a pass over every agent's epochs (``Store.retire``, steps of RETIRE_STEP_ROWS records),
# then a pause this long before the next; RETAIN_STEP_PAUSE_S between two steps of a pass (the writers' turn)
RETAIN_EVERY_S = 600.0
RETAIN_STEP_PAUSE_S = 0.05
# the wall clock this far ahead of the time counted since start is said once (retention goes by the counted time)
RETAIN_CLOCK_STEP_S = 60.0


# the receive window of a stream (grpc's bandwidth-delay probe is off): what grpc reads of a batch not asked for
STREAM_WINDOW_BYTES = 1024 * 1024
# request streams whose messages (agents' batches, up to max_message_bytes each) are read only while their tenant
# has room for them and counted until answered (Quotas.reserve/hold: tenant_in_flight_bytes, in_flight_bytes)
HELD_METHODS = frozenset({"/edge.fleet.v1.Fleet/PushRecords"})

NOBODY = Identity("", "", "")
# put in a Connect stream's queue: end it marked late (``FleetServicer._other_runs``)
TOLD_LATE = object()
REFUSE_WAIT_S = 5.0  # how long a refusal of a client stream waits for the client's first message
DAMAGED_LOG_S = 60.0  # an agent's damaged samples are logged at most this often (with the count since)
# an agent that starts CLONE_RUNS report runs within CLONE_WINDOW_S here, each while this process had taken another of
# its runs, is two live processes of one identity (a cloned gateway image, a copied certificate): each one's reports
# are late to the other's newer run, so each draws a new run in turn and the fleet's view flips between them (two on
# ``stream: true``: 32 flips in 40 s). Counted (``runs_alternating`` at /api/quotas) and logged (``_alternating``).
# A restart, or a link re-made, is one new run; a VM restored from a snapshot, two. For CLONE_HOLD_S after, a late
# report of the agent is dropped without the late mark (``_tell_late``): the late clone keeps its run and the fleet's
# view stays on the newer one, instead of flipping; a lone gateway left late meanwhile is told once the hold ends.
# Only with CLONE_LATE reports of a run another followed within CLONE_WINDOW_S too (each clone's, in turn): a lone
# gateway on a flapping link starts a new run at each link lost, and was named two gateways of one identity.
# A deployment step kept late and untold so is taken again, once the hold is over, under a new run of the agent that
# names the step's run among its process's runs before it (``runs_before``: the same gateway; ``_retake_untold``):
# the agent, told nothing, never sent it again, and its rollout stalled; never under the other clone's runs. The hold
# is this process's, in memory: another replica holds and tells on its own count; the steps are in the control state
CLONE_RUNS = 6
CLONE_LATE = 3
CLONE_WINDOW_S = 120.0
CLONE_HOLD_S = 600.0
UNTOLD_STEPS = 16  # deployments per agent whose last step kept late during its clone hold is remembered
# runs per agent whose newest report waits for its look at the agent's kept steps (``_kept_look``): a report of a run
# already waiting replaces it; past this many runs the oldest run's waiting report is dropped, counted
# (``kept_looks_dropped`` at /api/quotas); the hold's pending write waits beside them, the newest one
KEPT_LOOK_RUNS = 4
# runs a state report may name as its process's before its own (``runs_before``); more are not read
RUNS_BEFORE = 3
HANDSHAKE_TIMEOUT_S = 10.0  # a connection must finish its TLS handshake within this (a gateway needs < 1 s)
# an agent at its concurrent_streams limit: a PushRecords of it that has waited this long for its next batch
# gives way to the new stream (_reclaim), waited for at most RECLAIM_WAIT_S
IDLE_PUSH_S = 5.0
RECLAIM_WAIT_S = 2.0
# a PushRecords of the agent on the new stream's own connection that has waited this long for its next batch gives
# way too, ended as if the agent had ended it (status OK): its uplink keeps it open while idle, fills a batch for
# max_delay_ms (200 ms by default) and sends a backlog's next batch within a few ms of an ack; the new stream waits
# up to GIVE_WAY_WAIT_S for such a wait (a line's steady records: at 0.5 s, a push never waited that long)
GIVE_WAY_S = 0.05
GIVE_WAY_WAIT_S = 1.0
# the server pings each connection this often and ends one whose ping goes unanswered this long: a gateway
# whose path died without a word (lost power, a NAT that dropped the flow) has its streams (and their
# per-agent stream quota) released within the sum
KEEPALIVE_S = 60.0
KEEPALIVE_TIMEOUT_S = 20.0
# a connection with no call open this long (up to twice it: grpc looks once a period) is closed (GOAWAY; a client's
# next call connects again, unseen): one whose calls were all refused (a caller past its concurrent_calls) held
# ~80 KB of the service's memory for good
CONNECTION_IDLE_S = 60.0
# connections the process holds at once (grpc's ``grpc.max_allowed_incoming_connections``: one more is closed as it
# is accepted; its client connects again later): at most MAX_CONNECTIONS, and FD_RESERVE below the process's
# descriptor limit (RLIMIT_NOFILE), so that connections, however many one certificate opens, never take the
# descriptors the store, the blob files and the console need (before: every descriptor taken, no agent of any tenant
# could connect and the store could not open a file); each idle connection weighs ~80-180 KB
MAX_CONNECTIONS = 10_000
FD_RESERVE = 256
FEW_CONNECTIONS = 1_000  # a bound below this (a low hard descriptor limit) is said at start in a WARNING


def connection_limit(most: int = MAX_CONNECTIONS) -> int:
    """The connections the process takes at once: ``most``, or fewer under its descriptor limit. The soft limit is
    raised first, up to the hard one, as far as ``most`` needs: systemd starts a service at 1,024 (hard 524,288),
    which would have held a fleet to 768 connections."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = most + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    # at a low hard limit a quarter of it is kept, not FD_RESERVE: a container started with 256 descriptors took
    # one connection at once (every other agent closed as it connected), where it ran with ~200 before the bound
    room = most if soft == resource.RLIM_INFINITY else soft - min(FD_RESERVE, soft // 4)
    return max(1, min(most, room))


# a record's time (t) more than this past the service's clock is taken as its receipt time (``_bound_times``)
FUTURE_T_S = 86400.0
# IngestStats of one agent answers its newest gaps, at most this many (~300 KB; an agent's 20,000 epochs made
# 40,000, and past ~4 MB the admin CLI's default receive limit failed the call)
INGEST_STATS_GAPS = 10_000
# a report's run id (``boot_id``): what the stores key an agent's runs by, as given (an agent draws 32 hex digits)
RUN_ID_CHARS = 64
RUN_ID = re.compile(rf"[\x20-\x7e]{{1,{RUN_ID_CHARS}}}")
# a deployment step as agents make them (downloading, verifying, active, healthy, download_retry, ...): it becomes its
# target's status, which the fleet's logs and answers quote; the statuses only the fleet gives are none
STEP = re.compile(r"[a-z][a-z0-9_]{0,63}")
FLEET_STATUSES = frozenset({"assigned", "rolling_back", SUPERSEDED, LEFT})
# streams open at once on one connection (HTTP/2 SETTINGS; a client queues its calls past it): an agent's uplink
# and model manager share one connection and use a few (Connect, PushRecords, a heartbeat, a report, a download)
STREAMS_PER_CONNECTION = 64
# a deployment report is kept in the deployment's document, which every rollout tick reads: its health (the
# gate reads error_rate; agents send ~50 B) and its reason (a validator's lines) are bounded
DEPLOYMENT_HEALTH_BYTES = 16 * 1024
DEPLOYMENT_REASON_CHARS = 2000


class RequestStream:
    """A client-streaming call's context, whose ``abort`` before any message was read first waits (at most
    ``REFUSE_WAIT_S``) for the client's first message or its half-close.

    grpc's asyncio client reports ``INTERNAL: Internal error from Core`` instead of the server's status when
    the call ends while the client's first write is under way (grpc#36066; seen in 1 of 16 refused streams
    with a client writing within 4 ms of opening): an agent refused for its tenant's quota or its certificate
    would log a transient error and ask again at once, and its status would not say why. The agent writes
    a report (Connect) or a batch (PushRecords) as soon as the stream opens, then waits for the server, so
    once that first message is read no write of its is in flight. Everything else goes to the call's
    context; iterate ``requests`` instead of the call's request iterator."""

    def __init__(self, context, request_iterator) -> None:
        self._context = context
        self._it = aiter(request_iterator)
        self._read = False

    def __getattr__(self, name: str):
        return getattr(self._context, name)

    async def requests(self):
        async for msg in self._it:
            self._read = True
            yield msg
            del msg  # not kept while the next message is received (a batch: counted until then, Quotas.hold)

    async def abort(self, code, details: str = ""):
        if not self._read:
            self._read = True
            try:
                async with asyncio.timeout(REFUSE_WAIT_S):
                    await anext(self._it, None)
            except Exception:
                pass
        await self._context.abort(code, details)


class _ReaderContext:
    """The call's context as a ``Connect`` stream's reader task sees it: its ``abort`` raises ``Refusal`` instead
    of ending the call. The call is ended by the task that sends on it, between two messages: grpc takes no status
    while a message is being sent (``GRPC_CALL_ERROR_TOO_MANY_OPERATIONS``), and a refusal the reader sent beside an
    acknowledgement or the desired state under way mostly never reached the agent: the call left open without a
    status, the agent's stream silent until it restarted (the ``INTERNAL`` a client sometimes sees on a refused call
    comes from grpc's own client, grpc#36066)."""

    def __init__(self, context) -> None:
        self._context = context

    def __getattr__(self, name: str):
        return getattr(self._context, name)

    async def abort(self, code, details: str = ""):
        raise Refusal(code, details)


def peer_identity(context) -> Identity:
    ac = context.auth_context()
    pem = (ac.get("x509_pem_cert") or [b""])[0]
    return identity(pem) if pem else NOBODY


async def require(context, role: str, revocations: Revocations | None = None) -> Identity:
    who = peer_identity(context)
    await refuse_revoked(context, who, revocations)
    if who.problem:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"certificate {who.name[:80]!r}: {who.problem}; the fleet refuses it: issue it again with one of each",
        )
    if who.role != role or not who.name:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"this method needs {'an' if role[:1] in 'aeiou' else 'a'} {role} certificate; the client presented "
            f"{who.role or 'no'} "
            f"certificate {who.name!r}",
        )
    if role == ROLE_AGENT and not AGENT_ID_RE.fullmatch(who.name):
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"certificate {who.name[:80]!r}: its CN is not a valid agent id (1-63 letters, digits, '_', '.' or "
            "'-'); issue it again with `cloud-trainer pki agent --id ID`",
        )
    if role != ROLE_OPERATOR and not who.tenant:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"certificate {who.name!r}: its tenant attribute is not a valid tenant id; issue it again "
            "with `cloud-trainer pki ... --tenant ID`",
        )
    return who


async def refuse_revoked(context, who: Identity, revocations: Revocations | None) -> None:
    """``PERMISSION_DENIED`` for a certificate revoked with ``cloud-trainer pki revoke`` (``<pki>/revoked.txt``):
    checked at every call, at every message of the agents' long-lived streams, and before every message sent on
    a ``Connect`` stream (a revoked agent that stays silent is sent nothing more)."""
    if revocations is not None and revocations.revoked(who.serial):
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"certificate {who.name[:80]!r} (serial {who.serial[:40]}) was revoked by the platform; the fleet "
            "refuses it: ask for a new certificate",
        )


def _caller(context, revoked: Callable[[str], bool] | None = None) -> tuple[tuple[str, str], str]:
    """The caller's quota key and how a refusal names it (``MalformedRequests``: requests being received, calls
    open). A certificate ``revoked`` is counted apart from its agent id (its serial in the key): its calls, open
    until the servicer refuses them (a stream's refusal waits up to 5 s for its first message), took the places of
    the gateway's new certificate of the same id, and the thief of the old one kept the gateway out of the fleet."""
    who = peer_identity(context)
    name = f"{who.role or 'client'} {who.name[:80]!r}"
    if revoked is not None and revoked(who.serial):
        key = (who.tenant, f"{who.name} (revoked {who.serial})")
        return key, f"{name} (revoked certificate {who.serial[:40]})"
    return quota_key(who), name


def _named(before) -> tuple[str, ...]:
    """The runs a state report names before its own (``runs_before``) that are read: the first RUNS_BEFORE, each a
    run id (``RUN_ID``; they are kept with the run, ``Control.note_run``), the others left out."""
    return tuple(b for b in before[:RUNS_BEFORE] if RUN_ID.fullmatch(b))


def _at_or_below(held: tuple[str, int] | None, boot: str, seq: int) -> bool:
    """Whether a state report numbered ``seq`` in run ``boot`` is at or below the number its agent's row holds
    (``held``: the row's run and number, None for none): late, told so (``Store.report_held``)."""
    return held is not None and held[0] == boot and held[1] >= seq


def quota_key(who: Identity) -> tuple[str, str]:
    """The agent's per-process quota counters: keyed by (tenant, agent id), so that no agent id, whatever it
    spells, shares another tenant's agent's counters."""
    return (who.tenant, who.name)


class LimitedTenants:
    """Which tenants have an agent quota, as this process last read it from the store (at most ``QUOTA_TTL_S``
    old; ``invalidate()`` when this process changed a quota)."""

    def __init__(self, store) -> None:
        self.store = store
        self._read_at = float("-inf")
        self._tenants: set[str] = set()
        self._reading: asyncio.Lock | None = None
        # agents the store refused for their tenant's agent quota: (until, why), answered from here until then
        self._refused: dict[tuple[str, str], tuple[float, str]] = {}

    def refused(self, key: tuple[str, str]) -> str | None:
        """Why the agent was refused within the last ``QUOTA_TTL_S``, or None."""
        hit = self._refused.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self._refused[key]
            return None
        return hit[1]

    def refuse(self, key: tuple[str, str], why: str) -> None:
        now = time.monotonic()
        if len(self._refused) >= REFUSED_AGENTS_KEPT:  # bounded: the expired go first, then the oldest
            for k in [k for k, (until, _) in self._refused.items() if until <= now] or list(self._refused)[
                :1
            ]:
                del self._refused[k]
        self._refused[key] = (now + QUOTA_TTL_S, why)

    async def get(self) -> set[str]:
        if time.monotonic() - self._read_at <= QUOTA_TTL_S:
            return self._tenants
        self._reading = self._reading or asyncio.Lock()
        async with self._reading:  # a storm of new streams reads the store once, not once per stream
            if time.monotonic() - self._read_at > QUOTA_TTL_S:
                quotas = await asyncio.to_thread(self.store.quotas)
                self._read_at = time.monotonic()
                self._tenants = {t for t, q in quotas.items() if q.get("max_agents")}
        return self._tenants

    def invalidate(self) -> None:
        self._read_at = float("-inf")
        self._refused.clear()


class _OfTenant(concurrent.futures.Executor):
    """The threads of ``writers`` (``StoreWriters``) as an executor of one tenant's calls (``_in_place``)."""

    def __init__(self, writers: StoreWriters, tenant: str) -> None:
        self.writers, self.tenant = writers, tenant

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        return self.writers.submit(self.tenant, partial(fn, *args, **kwargs))


async def _in_place(
    gate_now: Callable[[], asyncio.Semaphore],
    pool: concurrent.futures.Executor,
    fn,
    *args,
    calls: list[concurrent.futures.Future] | None = None,
):
    """``fn(*args)`` in ``pool`` within a place of the gate ``gate_now()`` (looked up when taken), kept until the
    thread's call ends, not the awaiting call: a call cut meanwhile (the agent's link, its deadline) gave its place
    back at once while the thread went on, and one tenant's agents reconnecting against a slow disk so held every
    one of the pool's threads (a healthy tenant's first chunk after 17.6 s). ``calls``: the thread's call is put
    there in place of the one before, for the caller to act once it ends (close the file it reads)."""
    loop = asyncio.get_running_loop()
    place = gate_now()
    await place.acquire()  # no await between the lookup and the wait: ``free_gates`` drops no gate waited for
    try:
        call = pool.submit(fn, *args)
    except BaseException:
        place.release()
        raise

    def ended(_call: concurrent.futures.Future) -> None:
        # (in the thread, or on the loop for a call cancelled before it ran); a loop closed meanwhile: no one waits
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(place.release)

    call.add_done_callback(ended)
    if calls is not None:
        calls[:] = [call]
    return await asyncio.wrap_future(call)


async def _in_thread_place(gate_now: Callable[[], asyncio.Semaphore], fn, *args):
    """``fn(*args)`` in a worker thread (``asyncio.to_thread``) within a place of the gate ``gate_now()``, kept until
    the thread's call ends, as ``_in_place`` does in a pool of its own: the loop's default executor hands out no
    thread's future, so the thread gives the place back itself, and a call that ended before its thread began gives
    it back at once (the thread then does nothing). A heartbeat or an admin call cut meanwhile (the agent's deadline,
    its link) gave its place back at once while the thread went on in the store, and each retry of its tenant's took
    one more of the worker threads every tenant's calls wait for."""
    loop = asyncio.get_running_loop()
    place = gate_now()
    await place.acquire()  # no await between the lookup and the wait: ``free_gates`` drops no gate waited for
    lock = threading.Lock()
    began, dropped = [False], [False]

    def run():
        with lock:
            if dropped[0]:  # the call ended before the thread took it: its place was given back then
                return None
            began[0] = True
        try:
            return fn(*args)
        finally:
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile: no one waits
                loop.call_soon_threadsafe(place.release)

    try:
        return await asyncio.to_thread(run)
    except BaseException:
        with lock:
            if not began[0]:
                dropped[0] = True
                place.release()
        raise


def _open_at(path: Path, offset: int):
    """The file at ``path`` opened for reading, at ``offset`` (in a package reader)."""
    f = open(path, "rb")
    try:
        if offset:
            f.seek(offset)
    except BaseException:
        f.close()
        raise
    return f


class FleetServicer(rpc.FleetServicer):
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        registry: Registry | None,
        control=None,
        quotas: Quotas | None = None,
        hub: StreamHub | None = None,
        commands=None,
        revocations: Revocations | None = None,
    ) -> None:
        self.store, self.blobs, self.registry, self.control = store, blobs, registry, control
        self.revocations = revocations
        self.quotas = quotas or Quotas()
        self.hub = hub
        if hub is not None:
            hub.on_other_run = self._other_runs
        self.commands = commands  # cloud_trainer.fleet.commands.Commands (None: no commands on this server)
        self._admitted: set[tuple[str, str]] = (
            set()
        )  # agents the store admitted (a cache: they stay admitted)
        self.limited = LimitedTenants(store)
        self._readers = concurrent.futures.ThreadPoolExecutor(
            PACKAGE_READERS, thread_name_prefix="fleet-package-read"
        )
        self._reads: dict[str, asyncio.Semaphore] = {}  # tenant -> its package reads in flight
        self._row_reads = StoreWriters(ROW_READERS, ROW_READERS_MOST, "fleet-row-read")
        # (tenant, agent, digest) -> (the tenant's desired_marks then, when): deployed to it then (``_recheck``)
        self._deployed: dict[tuple[str, str, str], tuple[int, float]] = {}
        self._ingests: dict[str, asyncio.Semaphore] = {}  # tenant -> its batches being written
        self._writers = StoreWriters(STORE_WRITERS, STORE_WRITERS_MOST)
        # agent -> when each of its calls ended unanswered whose store write still runs (one entry per write: the
        # oldest of those still running is the one the agent and /api/quotas are told of)
        self._outliving: dict[tuple[str, str], list[float]] = {}
        # agent -> its open PushRecords' tasks -> (the connection's peer, since when it waits for its next batch;
        # None: in a batch)
        self._pushes: dict[tuple[str, str], dict[asyncio.Task, tuple[str, float | None]]] = {}
        # an open PushRecords' task -> set to end it between two batches, with status OK (``_reclaim``)
        self._give_way: dict[asyncio.Task, asyncio.Event] = {}
        self._heartbeats: dict[str, asyncio.Semaphore] = {}  # tenant -> its unary heartbeats being written
        self._damaged_log: dict[
            tuple[str, str], tuple[int, float]
        ] = {}  # agent -> (damaged not logged, when)
        self._misnamed_log: dict[tuple[str, str], tuple[int, float]] = {}  # the same, for misnamed samples
        self._retimed_log: dict[
            tuple[str, str], tuple[int, float]
        ] = {}  # the same, for records' times bounded
        self._bad_runs_log: dict[
            tuple[str, str], tuple[int, float]
        ] = {}  # the same, for reports refused for a bad run id or step
        self._faults = FaultLog(log)  # the store's failures of every agent's calls, logged by reason (faults)
        # agent -> (boot id, number, when: time.monotonic) of the newest numbered state report taken (``_fresh``)
        self._applied: dict[tuple[str, str], tuple[str, int, float]] = {}
        # agent -> when (time.monotonic) its last CLONE_RUNS runs began here over another (``_alternating``)
        self._run_starts: dict[tuple[str, str], collections.deque[float]] = {}
        # agent -> when (time.monotonic) its last CLONE_LATE reports of a run another followed came (``_alternating``)
        self._late_runs: dict[tuple[str, str], collections.deque[float]] = {}
        self._clones_log: dict[tuple[str, str], tuple[int, float]] = {}  # (``_due``)
        # agent -> until when (time.monotonic) ``_tell_late`` says no
        self._clone_hold: dict[tuple[str, str], float] = {}
        # agent -> the run another replica took that a late report here counted as begun (``_late_by_row_seen``):
        # not counted again at its own first report here (a lone gateway moving to this replica)
        self._begun_elsewhere: dict[tuple[str, str], str] = {}
        # agent -> (its run, the row's run) its stream reports the row refused were last judged late for
        # (``_other_runs``): counted once, however many of the run's reports the flushes refuse before it is told
        self._judged: dict[tuple[str, str], tuple[str, str]] = {}
        # the steps kept late and untold during an agent's clone hold are kept in the control state every replica
        # shares (``Control.keep_step``), taken again after the hold under a run that names one of their runs among its
        # process's runs before it (``_retake_untold``); the agents whose clone hold is to be written to their kept steps at
        # their next report (``_hold_kept``): it ended here since their last report looked at them (``_tell_late``), or
        # its write failed
        self._holds_due: set[tuple[str, str]] = set()
        # agent -> what waits for its turn at its kept steps, in the order it came (``_kept_look``): the hold's newest
        # write and each run's newest report, taken in turn by one task while the entry is here
        self._kept_looks: dict[tuple[str, str], list[tuple]] = {}
        self._retaking: set[asyncio.Future] = set()
        # agent -> its run whose runs before were last read from the control state for its kept steps (once a run)
        self._links_read: dict[tuple[str, str], str] = {}

    async def require(self, context, role: str) -> Identity:
        return await require(context, role, self.revocations)

    async def _fresh(self, key: tuple[str, str], r) -> tuple[bool, str | None]:
        """Whether the state report ``r`` of agent ``key`` is to be written, and over which row (``Store.heartbeat``'s
        ``over``: None as it comes, ``""`` over its own run only, a run id: over that one too). False for one its agent made before a
        report already taken: the same run (``boot_id``) and a lower or equal ``report_seq`` (held on the way: a
        stream's queue, a link being re-made, a retried call; it would write the agent's older slots over newer
        ones), or a run that a newer run of the agent followed (``Control.note_run``: its late report). Ordered by
        those numbers alone, whenever it arrives: no clock. A report without a number (an older agent) is written as
        it comes, as before; a run this process has taken no report of is asked of the control state (one write, at
        the run's first report here), so a new run (a restart, a gateway restored from a VM snapshot: a new
        ``boot_id``) is written, a late one of a previous run not. A report of a run this process knows is checked
        against the agent's row too, which another replica may have taken further, or written with a newer run's
        report in its write: over its own run only, and the run's first report here over the run the row held when
        read (another replica's write landing between the read and the write refuses it: judged then, as a refused
        stream report is, ``_other_runs``; a Heartbeat's at once, ``_write_checked``)."""
        boot, seq = r.boot_id[:64], int(r.report_seq)
        if not boot or not seq:
            return True, None
        had = self._applied.get(key)
        over: str | None = ""
        if had is not None and had[0] == boot:
            if had[1] >= seq:
                return False, None
        else:
            if self.control is not None:
                try:
                    taken = await asyncio.to_thread(
                        partial(
                            self.control.note_run,
                            key[1],
                            boot,
                            seq,
                            tenant=key[0],
                            before=_named(r.runs_before),
                        )
                    )
                except Exception as exc:
                    # the control database unreachable: the report is written as it comes; logged by reason at most
                    # every LOG_EVERY_S (a line per report was every agent's every heartbeat)
                    self._faults.failed(
                        "the control state's read of the order of an agent's report runs (its report written as it "
                        "comes)",
                        exc,
                    )
                    return True, None
                if not taken:
                    self._note_late_run(key)
                    return False, None
            late, over = await self._held_above(key, boot, seq)
            if late is not None:
                self._note_late_run(key)
                return False, None
            counted = self._begun_elsewhere.pop(key, None)
            if had is not None and counted != _run_key(boot):
                self._alternating(key, had[0], boot)
        # at any report, not only a run's first here: a run drawn during the hold names the step's run after it
        if self._has_kept(key):
            self._retake_untold(key, boot, seq, r.runs_before)
        self._applied[key] = (boot, seq, time.monotonic())
        return True, over

    async def _held_above(self, key: tuple[str, str], boot: str, seq: int) -> tuple[str | None, str | None]:
        """``_late_by_row`` in a place of the tenant's heartbeats, in a thread of ROW_READERS (``_in_place``): read in
        a worker thread of its own, a slow store's reads (a reconnect storm's streams) took every worker thread all
        calls wait for; in the tenant's place but the loop's default executor, two tenants' stream reports did."""
        try:
            return await self._in_row_place(key, partial(self._late_by_row, key, boot, seq, other_runs=False))
        except Exception as exc:  # the store unreachable: its write of the report fails too, and is said
            self._faults.failed("the fleet store's read of an agent's last report number", exc)
            return None, None

    async def _in_row_place(self, key: tuple[str, str], fn):
        """``fn()`` in a place of the tenant's heartbeats, in a thread of ROW_READERS (``_held_above``)."""
        return await _in_place(
            partial(tenant_gate, self._heartbeats, key[0], HEARTBEATS_PER_TENANT),
            _OfTenant(self._row_reads, key[0]),
            fn,
        )

    async def _other_runs(self, refused: list[tuple[tuple[str, str], str, tuple]]) -> None:
        """Stream reports of runs this process knows that their agents' rows refused at a flush (``StreamHub``'s
        ``one_run``: written only over a report of their run; the row's run, the report's args). The row holds a
        later report of the run (another replica took it further: a gateway restored mid-run) or a run that began
        after it (``Control.newest_run``: a clone of the agent held by another replica): late, counted as
        ``_late_by_row`` is, the stream ended marked late (``TOLD_LATE``). A run that began before it (the agent's
        previous process, its last report written by another replica late): written over that run at the next flush
        (``StreamHub.put_over``: yet another run written meanwhile, it is refused and judged again)."""
        for key, held, args in refused:
            boot = str(((args[4] or {}).get("report") or {}).get("boot", ""))
            if (had := self._applied.get(key)) is None or had[0] != boot or self.hub is None:
                continue  # a run begun here since: its reports are judged as they come
            # the agent's stream as the judgment begins: told late by the judgment before this one (its reports
            # are judged one at a time), the agent reconnects under a new run during the read below, and the stream
            # open then is that new run's (its first report not taken yet): it is not told this report's lateness
            stream = self.hub.streams.get(key)
            late: str | None = ""
            if held and _run_key(held) != _run_key(boot):
                newest = await self._in_row_place(key, partial(self._newest_run, key, boot))
                late = None if newest else held
            if late is None:
                self.hub.put_over(key, args, held)
                continue
            if self._judged.get(key) != (boot, late):  # each change once (two reports of it refused)
                self._judged[key] = (boot, late)
                self._late_by_row_seen(key, boot, late)
            if self._tell_late(key) and stream is not None and self.hub.streams.get(key) is stream:
                offer(stream, TOLD_LATE)

    def _newest_run(self, key: tuple[str, str], boot: str) -> bool:
        """(In a worker thread.) ``Control.newest_run``; True where the control state cannot answer (the report
        written as it comes), said as the control state's failure (it failed a Heartbeat as the store's write)."""
        if self.control is None:
            return True
        try:
            return self.control.newest_run(key[1], boot, tenant=key[0])
        except Exception as exc:
            self._faults.failed(
                "the control state's read of which of an agent's runs began last (its report written as it comes)",
                exc,
            )
            return True

    def _late_by_row(
        self, key: tuple[str, str], boot: str, seq: int, *, other_runs: bool
    ) -> tuple[str | None, str]:
        """(In a worker thread.) None, or why the agent's row says the report ``seq`` of run ``boot`` is late
        (``""``: its own run, or the boot id of the newer run), and the run the row holds (``""``: none): it holds a
        report of that run numbered ``seq`` or above (another replica, or this process before a restart or before it
        forgot the run, took it: the store would not write this one, ``SQLStore._report_order``), or, with
        ``other_runs``, a report of another run that began after ``boot`` (``Control.newest_run``). Read once per run a
        process meets: a gateway restored from a memory snapshot taken mid-run (its count below the row's, its
        channel on a fresh connection) was dropped report after report, never told. Other runs: two live gateways of
        one identity (a cloned VM), each held by another replica, each replica meeting one run only, wrote the row in
        turn, the fleet's view flipping at every report, never counted; told late now, each draws a new run in turn
        and the replica it reaches counts it (``_alternating``) as one replica does."""
        held = self.store.report_held(key[1], tenant=key[0])
        run = held[0] if held is not None else ""
        if _at_or_below(held, boot, seq):
            return "", run
        if (
            other_runs
            and held is not None
            and self.control is not None
            and _run_key(held[0]) != _run_key(boot)
            and not self._newest_run(key, boot)
        ):
            return held[0], run
        return None, run

    def _write_checked(
        self, key: tuple[str, str], boot: str, seq: int, over: str | None, write
    ) -> str | None:
        """(In a worker thread.) ``write(over=over)`` (``Store.heartbeat``'s): a report written only over its own run (or
        the run ``over``) that the agent's row refused is judged by a read of the row (``_late_by_row``): late (None
        written; why returned), or the row's run began before it: written over that one. A read before each write
        left another replica's write free to land between the two, and cost a read a heartbeat; now only a refusal
        reads. At most REPORT_WRITE_TRIES writes: the row changing under each (a flapping pair of clones) leaves the
        report unwritten, the agent's next one tried afresh."""
        for _ in range(REPORT_WRITE_TRIES):
            if write(over=over) or over is None:
                return None
            late, over = self._late_by_row(key, boot, seq, other_runs=True)
            if late is not None:
                return late
        return None

    def _late_by_row_seen(self, key: tuple[str, str], boot: str, late: str) -> None:
        """A report of run ``boot`` the agent's row said late (``late``: ``_late_by_row``): noted; one late to another
        run that the agent is told of is that run begun over this one, which another replica took (``_alternating``:
        a replica counts the runs its clone begins as well as its own)."""
        self._note_late_run(key)
        if late and self._tell_late(key):
            self._alternating(key, boot, late)
            # once: a lone gateway whose old run's report came late here after its new run's took another replica
            # counted each run twice when the new run's reports came here next (three restarts named it a clone)
            self._begun_elsewhere[key] = _run_key(late)

    def _alternating(self, key: tuple[str, str], was: str, boot: str) -> None:
        """Run ``boot`` of agent ``key`` taken over ``was``, its run this process took last: past CLONE_RUNS such
        starts within CLONE_WINDOW_S, counted (``runs_alternating``) and logged (a WARNING naming the agent, at most
        every DAMAGED_LOG_S with the count since)."""
        now = time.monotonic()
        starts = self._run_starts.setdefault(key, collections.deque(maxlen=CLONE_RUNS))
        starts.append(now)
        if len(starts) < CLONE_RUNS or now - starts[0] > CLONE_WINDOW_S:
            return
        late = self._late_runs.get(key)
        if late is None or len(late) < CLONE_LATE or now - late[0] > CLONE_WINDOW_S:
            return  # new runs, none of them late to another: a lone gateway whose link was lost (a run each time)
        self.quotas.count(key, "runs_alternating")
        self._clone_hold[key] = now + CLONE_HOLD_S
        if self._has_kept(key):  # (the steps it kept in a hold before: held as long, at every replica)
            self._holds_due.discard(key)
            self._kept_look(key, ("hold",))
        if since := _due(self._clones_log, key, 1):
            log.warning(
                "agent %s (tenant %s): %d report runs began within %.0f s, each over another (now %s over %s%s): two "
                "live gateways with one identity (a cloned image, a copied certificate)? The fleet shows the newer "
                "run's and drops the other's reports, untold, for %.0f s; give each gateway its own certificate",
                key[1],
                key[0],
                CLONE_RUNS,
                now - starts[0],
                boot[:12],
                was[:12],
                f"; {since - 1} more such run(s) since the last line" if since > 1 else "",
                CLONE_HOLD_S,
            )

    def _note_late_run(self, key: tuple[str, str]) -> None:
        """A report of agent ``key`` of a run which a newer one followed came (``_alternating``)."""
        self._late_runs.setdefault(key, collections.deque(maxlen=CLONE_LATE)).append(time.monotonic())

    def _tell_late(self, key: tuple[str, str]) -> bool:
        """Whether a late report of agent ``key`` is answered with the late mark (the agent then reports under a new
        run): not while its runs alternate (``_alternating``: two live processes of its identity), where the mark
        made each take the fleet's view in turn."""
        until = self._clone_hold.get(key)
        if until is None:
            return True
        if time.monotonic() < until:
            return False
        del self._clone_hold[key]
        if self._has_kept(key):
            self._holds_due.add(key)
        return True

    def _has_kept(self, key: tuple[str, str]) -> bool:
        """Whether agent ``key`` has deployment steps kept during a clone hold (``Control.kept_agents``: read by the
        tick every KEPT_LOOK_S, so that a report costs no read of the control state for it)."""
        return self.control is not None and key in getattr(self.control, "kept_agents", ())

    async def _hold_kept(self, key: tuple[str, str]) -> None:
        """Agent ``key``'s clone hold written to its kept steps as it is when written (``_kept_look``): its end where
        the hold here ends, or now where it ended. A failed write is made again at the agent's next report, as the hold
        is then. Only the hold as it stands is ever written: a write queued behind slow looks counted its seconds from
        when it ran, an end written again after a new hold began cut that hold short in the control state, and a
        start whose write failed was never written again (another replica could take the late clone's step in it)."""
        end = self._clone_hold.get(key)
        hold_s = max(0.0, end - time.monotonic()) if end is not None else 0.0
        try:
            await asyncio.to_thread(partial(self.control.hold_kept, key[1], tenant=key[0], hold_s=hold_s))
        except Exception as exc:
            self._holds_due.add(key)
            self._faults.failed("the control state's write of the clone hold of an agent's kept steps", exc)

    async def _keep_untold(self, key: tuple[str, str], request, health: dict) -> None:
        """A deployment step kept late and not told so (the agent's clone hold: ``_tell_late``): remembered with its
        target's recorded report, to be taken again after the hold (``_retake_untold``)."""
        try:
            dep = await asyncio.to_thread(partial(self.control.get, request.deployment_id, tenant=key[0]))
        except Exception:  # (gone, or the control state failing: nothing to take again)
            return
        t = dep["targets"].get(key[1]) or {}
        step = {
            "slot": request.slot[:128],
            "version": request.version[:128],
            "step": request.step[:64],
            "ok": request.ok,
            "reason": request.reason[:DEPLOYMENT_REASON_CHARS],
            "health": health,
        }
        hold_s = max(0.0, self._clone_hold.get(key, 0.0) - time.monotonic())
        try:
            await asyncio.to_thread(
                partial(
                    self.control.keep_step,
                    key[1],
                    request.deployment_id,
                    step,
                    {"report": t.get("report"), "last_report": t.get("last_report")},
                    request.boot_id,
                    tenant=key[0],
                    hold_s=hold_s,
                    most=UNTOLD_STEPS,
                )
            )
        except Exception as exc:
            self._faults.failed(
                "the control state's write of a deployment step kept during a clone hold", exc
            )

    def _retake_untold(self, key: tuple[str, str], boot: str, seq: int, before) -> None:
        """The agent's report ``seq`` of run ``boot`` taken, naming ``before`` as its process's runs before it
        (``runs_before``): once its clone hold is over, the steps kept late and untold during it of those runs are
        taken under ``boot`` (the gateway that made them drew it, told late or its link lost), as the agent sends a
        step told late again (``FleetClient._resend``), each only while its target is as the step left it
        (``Control.retake_kept``). Looked at on every report, not only a run's first here: the late clone's link
        lost during the hold, its new run came then (and was the newest from then on), and the step was never taken
        (its rollout stalled until STEP_TIMEOUT_S). During the hold a run naming a step's run becomes one of its runs
        (the same gateway's): a link lost four times in the hold, each loss a run the fleet answered, pushed the
        step's run out of the three named, and the step was never taken. The others stay for a run naming theirs (the
        remaining clone's runs never do). Taken by time instead (a new run within 120 s of the late clone's tell), the remaining
        gateway drawing a new run in between took the late clone's ``failed`` over its own healthy target, and a
        gateway on a Connect stream with a ``heartbeat_s`` of minutes drew its new run past the mark (its step
        forgotten, its rollout stalled)."""
        if self.control is None:
            return
        runs = {_run_key(b) for b in before[:RUNS_BEFORE]}
        held = not self._tell_late(key)
        if key in self._holds_due:
            self._holds_due.discard(key)
            self._kept_look(key, ("hold",))
        # the runs named, as plain strings: the report's own repeated field kept the whole request alive while the
        # look waited (up to KEPT_LOOK_RUNS of them an agent, each up to ``max_report_bytes``)
        self._kept_look(key, ("report", (boot, seq), runs, held, _named(before)))

    def _kept_look(self, key: tuple[str, str], what: tuple) -> None:
        """``what`` queued for agent ``key``'s turn at its kept steps (in the control state), taken in the order it
        came by one task per agent (``_kept_looks_in_turn``): ``("hold",)``, the hold written as it is then
        (``_hold_kept``), or ``("report", ...)``, a report's look (``_kept_turn_in_order``). Bounded while the
        control database is slow or down: a task per report waited there, one behind another's connect timeout, for
        each agent in a hold (a gateway at a heartbeat a second, or hostile reports, grew memory for as long as the
        outage). The newest hold write replaces one waiting (the last one written is what holds: a new hold's start
        is never cut short by the end of the one before it, written after it, nor an end by an older start), and a
        run's newest report its waiting one (the same run's runs before, its held the newer); past KEPT_LOOK_RUNS
        runs, the oldest run's is dropped and counted (``kept_looks_dropped``): that run's next report, or a run
        naming it, looks again."""
        queue = self._kept_looks.get(key)
        start = queue is None
        if queue is None:
            queue = self._kept_looks[key] = []
        if what[0] == "hold":
            queue[:] = [w for w in queue if w[0] != "hold"]
        else:
            run = what[1][0]
            queue[:] = [w for w in queue if w[0] != "report" or w[1][0] != run]
            reports = [w for w in queue if w[0] == "report"]
            if len(reports) >= KEPT_LOOK_RUNS:
                queue.remove(reports[0])
                self.quotas.count(key, "kept_looks_dropped")
        queue.append(what)
        if start:
            self._retaking_task(self._kept_looks_in_turn(key, queue))

    async def _kept_looks_in_turn(self, key: tuple[str, str], queue: list[tuple]) -> None:
        """Agent ``key``'s queued turns at its kept steps (``_kept_look``), one at a time; the entry dropped with the
        last (no await in between: a turn queued later starts another task)."""
        try:
            while queue:
                what = queue.pop(0)
                if what[0] == "hold":
                    await self._hold_kept(key)
                else:
                    await self._kept_turn_in_order(key, *what[1:])
        finally:
            if self._kept_looks.get(key) is queue:
                del self._kept_looks[key]

    async def _kept_turn_in_order(
        self, key: tuple[str, str], report: tuple[str, int], runs: set[str], held: bool, before
    ) -> None:
        """A report's look at agent ``key``'s kept steps (queued by ``_retake_untold``, after the hold's end this
        replica wrote, ``_kept_look``): the steps of ``runs`` taken (``Control.take_kept``), or during the hold
        (``held``, or the hold's end kept with a step not reached: another replica's hold) the report's run made one of
        theirs. During the hold a run naming a step's run is the same gateway's: its run too, so that its link lost
        more than RUNS_BEFORE times before the hold ends (each loss a new run the fleet answered) still names it (the
        step's run was pushed out of the runs named, and the step never taken). The step's own run stays first: the
        agent names only runs the fleet answered, and three runs taken here whose answers were lost (never named by
        the agent) pushed it out, the agent's next run naming it matching none."""
        try:
            left, _failed = await self._take_kept(key, report, runs, held)
        except Exception:
            return
        if not left:
            return
        # the others: through the runs the control state keeps each run's report named before it, whichever replica
        # took it (once a run): the gateway's runs in between reported to another replica only (its link re-made
        # there 3 times) named the step's run no more, and the step was never taken here (its rollout stalled)
        if not held and runs and self._links_read.get(key) != report[0]:
            self._links_read[key] = report[0]
            await self._retake_through_links(key, report, _named(before))

    def retakes_under_way(self) -> set[asyncio.Future]:
        """The tasks taking kept deployment steps again (``_kept_looks_in_turn``) not yet done: the service's stop waits for them
        before it closes the control database."""
        return {t for t in self._retaking if not t.done()}

    def _retaking_task(self, work) -> None:
        task = asyncio.ensure_future(work)
        self._retaking.add(task)
        task.add_done_callback(self._retaking.discard)

    async def _retake_through_links(self, key: tuple[str, str], report: tuple[str, int], before) -> None:
        try:
            earlier = await asyncio.to_thread(
                partial(self.control.earlier_runs, key[1], before, tenant=key[0])
            )
        except Exception as exc:
            self._faults.failed("the control state's read of the runs an agent's run named before it", exc)
            # read again at the run's next report: once a run, a failed read (the database restarting) left the step
            # waiting for the gateway's next run, which only a link lost draws (its rollout stalled)
            if self._links_read.get(key) == report[0]:
                del self._links_read[key]
            return
        try:
            _left, failed = await self._take_kept(key, report, earlier, False)
        except Exception:
            failed = True
        # (the same, or a step's record failed, the step still kept: read again at the run's next report; once a run,
        # a step reached only through these runs waited for the gateway's next run, its rollout stalled)
        if failed and self._links_read.get(key) == report[0]:
            del self._links_read[key]

    async def _take_kept(
        self, key: tuple[str, str], report: tuple[str, int], runs: set[str], held: bool
    ) -> tuple[bool, bool]:
        """``Control.take_kept`` for the agent's report ``report`` (its steps recorded under it in the same write),
        said: the steps recorded, the records that failed (those steps still kept, taken again at a later report), or
        the write's failure (raised again). Whether steps are left, and whether a record failed."""
        failed: list[Exception] = []
        try:
            steps, left = await asyncio.to_thread(
                partial(
                    self.control.take_kept,
                    key[1],
                    report[0],
                    runs,
                    tenant=key[0],
                    held=held,
                    most_runs=RUNS_BEFORE,
                    record=report,
                    failed=failed,
                )
            )
        except Exception as exc:
            self._faults.failed(
                "the control state's write of the deployment steps kept during a clone hold", exc
            )
            raise
        for why in failed:
            self._faults.failed(
                "the control state's write of a deployment step kept during a clone hold", why
            )
        for dep_id, (step, _was) in steps.items():
            log.info(
                "agent %s (tenant %s): its deployment %s step %s, kept late during its clone hold, taken under its new "
                "run",
                key[1][:64],
                key[0],
                dep_id[:64],
                step["step"],
            )
        return left, bool(failed)

    def forget_reports(self, idle_s: float) -> int:
        """Forget the report numbers of agents that sent none for ``idle_s`` (a report after that is written as
        it comes: the one before it was taken long ago). Returns how many were dropped."""
        cut = time.monotonic() - idle_s
        old = [k for k, (_b, _s, at) in self._applied.items() if at <= cut]
        for k in old:
            del self._applied[k]
            self._run_starts.pop(k, None)
            self._late_runs.pop(k, None)
            self._clones_log.pop(k, None)
            self._clone_hold.pop(k, None)
            self._begun_elsewhere.pop(k, None)
            self._judged.pop(k, None)
            self._holds_due.discard(k)
            self._links_read.pop(k, None)
        return len(old)

    def _results_write(self, who: Identity, results) -> Callable[[], Any] | None:
        """The store's call recording the agent's command results, or None when there are none to record."""
        if self.commands is None or not results:
            return None
        rows = [{"id": r.id, "ok": r.ok, "detail": r.detail, "done_at": r.done_at} for r in results[:100]]
        return partial(self.commands.record_results, who.name, rows, tenant=who.tenant)

    async def _command_results(self, who: Identity, results) -> None:
        """Record the agent's command results (before its desired state is computed: a done command leaves it)."""
        if (write := self._results_write(who, results)) is not None:
            await asyncio.to_thread(write)

    async def _admit(self, who: Identity, context) -> None:
        """The tenant's agent quota: a new agent past it is RESOURCE_EXHAUSTED (checked in the store, so that
        every replica counts the same agents). Which tenants have one is re-read every ``QUOTA_TTL_S``, so that
        a connection storm of a tenant without an agent quota costs no store round trip per new stream. An agent
        refused is answered from memory for ``QUOTA_TTL_S``: each refusal was a write transaction in the store
        every tenant shares, so an agent of a full tenant calling in a loop held its lock for all."""
        key = (who.tenant, who.name)
        if key in self._admitted:
            return
        if who.tenant not in await self.limited.get():
            return
        if (why := self.limited.refused(key)) is not None:  # refused a moment ago: no store round trip again
            self.quotas.refused(key, "tenant_agents", why)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, why)
        try:
            await asyncio.to_thread(partial(self.store.admit_agent, who.name, tenant=who.tenant))
        except TenantQuotaExceeded as exc:
            self.limited.refuse(key, str(exc))
            self.quotas.refused(key, "tenant_agents", str(exc))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        self._admitted.add(key)

    async def Connect(self, request_iterator, context):
        """The agent's long-lived stream (``cloud_trainer.fleet.stream``): identity read once, reports kept in
        memory and written in batches, the desired state pushed when it changes."""
        context = RequestStream(context, request_iterator)
        request_iterator = context.requests()
        who = await self.require(context, ROLE_AGENT)
        hub = self.hub
        if hub is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "this server has no Connect stream; use Heartbeat"
            )
            return  # abort raises; said for the type checker
        await self._admit(who, context)
        key = (who.tenant, who.name)
        async with self._stream(quota_key(who), context), hub.attach(key) as outbox:
            # a refusal of a report ends the call from this task, not the reader's (``_ReaderContext``)
            refuse = _ReaderContext(context)

            # A report is acknowledged as it is taken (read, checked, parsed): its store calls (the command
            # results' write, a new run's order check under the control lock) run in ``write``, which keeps only
            # the newest report not yet written (each is the agent's whole state; its command results are sent
            # again until recorded). The ack came after those calls: a store or control lock stalled for the
            # agent's keepalive_timeout_s (20 s) made every agent reporting meanwhile end its stream as silent,
            # and wait out its doubled reconnect delay after the stall.
            taken: list = [None]  # the newest report taken and not yet written: (report, slots, health, when)
            more = asyncio.Event()
            # set as the reader ends: ``write`` writes what it took, then ends the stream
            read_all = asyncio.Event()

            async def read() -> None:
                try:
                    async for msg in request_iterator:
                        r = msg.report
                        await refuse_revoked(refuse, who, self.revocations)  # revoked while connected
                        await self._take_report(who, refuse, msg, "report", msg.report)
                        await report_fields(refuse, r, "report")
                        slots = _slot_states(r)
                        health = await json_field(refuse, r.health_json, "report.health_json")
                        hub.ack(key, msg.report_id)
                        taken[0] = (r, slots, health, time.time())
                        more.set()
                finally:
                    read_all.set()  # the agent closed its side (or sent garbage): end the stream
                    more.set()

            async def write() -> None:
                first = True  # (the stream's first report)
                try:
                    while True:
                        await more.wait()
                        more.clear()
                        if (got := taken[0]) is None:
                            if read_all.is_set():
                                return
                            continue
                        taken[0] = None
                        r, slots, health, at = got
                        await self._command_results(who, r.command_results)
                        had = self._applied.get(key)  # (before ``_fresh`` takes this report's number)
                        fresh, over = await self._fresh(key, r)
                        await hub.report(
                            key,
                            (dict(r.labels), slots, health, r.outbox_depth, _outbox_state(r), at),
                            r.generation_seen,
                            stale=not fresh,
                            # written only over its own run's older reports (or the run its row held when its run's
                            # first report here read it), checked in the write (``_other_runs``)
                            over=over,
                        )
                        # (late to this process's memory alone: a report of the run overtaken on the stream)
                        overtaken = had is not None and had[0] == r.boot_id[:64] and had[1] >= r.report_seq
                        if not fresh and (first or not overtaken) and self._tell_late(key):
                            # late, and of another run than the one last taken here: a run a newer one of the
                            # agent followed (its process paused while another of its identity reported; a gateway
                            # restored whose stream opened on a fresh connection). Acknowledged like any report, it
                            # was dropped for good, untold: the stream ends marked late (as Heartbeat's answer is)
                            # and the agent reports under a new run. A report of the same run overtaken by a later
                            # one (a deployment step's) is only dropped: the stream goes on, but for the stream's
                            # first report, which no report of the stream overtook (a gateway restored from a
                            # memory snapshot mid-run, its stream opened anew: dropped untold until its count
                            # passed the one taken)
                            context.set_trailing_metadata(((REPORT_KEY, REPORT_LATE),))
                            return
                        first = False
                        more.set()  # look again: taken meanwhile, or the reader ended meanwhile
                finally:
                    offer(outbox, None)

            reader = asyncio.create_task(read())
            writer = asyncio.create_task(write())
            try:
                while (msg := await outbox.get()) is not None:
                    if msg is TOLD_LATE:  # a report the agent's row refused: another run's (``_other_runs``)
                        context.set_trailing_metadata(((REPORT_KEY, REPORT_LATE),))
                        break
                    # revoked while connected and silent since: nothing more of the tenant's (desired state,
                    # configuration, commands) goes to it; checked before each message sent, not only received
                    await refuse_revoked(context, who, self.revocations)
                    yield msg
                for task in (reader, writer):
                    if task.done() and not task.cancelled() and (failed := task.exception()) is not None:
                        if isinstance(failed, Refusal):  # (a malformed message too: ``guard`` raises it)
                            await context.abort(failed.code, failed.details)
                        raise failed
            finally:
                reader.cancel()
                writer.cancel()

    async def Heartbeat(self, request, context):
        who = await self.require(context, ROLE_AGENT)
        await self._take_report(who, context, request, "HeartbeatRequest")
        await self._admit(who, context)
        agent, tenant = who.name, who.tenant
        await report_fields(context, request, "HeartbeatRequest")
        slots = _slot_states(request)
        health = await json_field(context, request.health_json, "health_json")
        # like batches: a tenant's heartbeats wait for the store in at most HEARTBEATS_PER_TENANT worker threads, each
        # place kept until its thread's call ends, the heartbeat cut meanwhile or not (``_in_thread_place``). One
        # place for all its store calls, in one thread: a place per call put the heartbeat back at the end of its
        # tenant's queue at each call, and under a backlog (200 queued) none was answered within its deadline
        results = self._results_write(who, request.command_results)
        key = (tenant, agent)
        fresh, over = await self._fresh(
            key, request
        )  # an older report than one taken: answered, never written
        # written only over its own run (or the run its row held when its run's first report here read it): refused
        # (another replica took the run further: a gateway restored mid-run; or wrote another run: a clone), the row is
        # read and judged, in the call's own thread place below: read in a thread of its own, outside the tenant's
        # places, a slow store's reads took every worker thread all calls wait for
        boot, seq = request.boot_id[:64], int(request.report_seq)
        row_check: list[str | None] = [None]
        # an older report than one taken, its agent told (but while its runs alternate): its next reports go under a
        # new run (a VM snapshot restored)
        if not fresh and self._tell_late(key):
            context.set_trailing_metadata(((REPORT_KEY, REPORT_LATE),))
        cut = threading.Event()  # the call was cut (its deadline, its link): no one reads the reply's parts

        def calls() -> tuple[str, BaseException | None, Any]:
            """The command results (before the desired state is computed: a done command leaves it), the
            heartbeat's write, the desired state and the pending commands; which failed, and how, or the reply's
            parts. A call cut meanwhile ends after its write: its reads held the tenant's place for no one."""
            if results is not None:
                results()  # its failure ends the call as before
            try:
                if fresh:  # late: told below
                    row_check[0] = self._write_checked(
                        key,
                        boot,
                        seq,
                        over,
                        partial(
                            self.store.heartbeat,
                            agent,
                            dict(request.labels),
                            slots,
                            health,
                            request.outbox_depth,
                            _outbox_state(request),
                            tenant=tenant,
                        ),
                    )
            except Exception as exc:  # the store failed (down, disk full): the agent heartbeats again
                return "write", exc, None
            if cut.is_set():
                return "cut", None, None
            try:
                gen, desired, config = 0, [], None
                if self.control is not None:
                    gen, desired, config = self.control.desired_state(agent, tenant=tenant)
                pending = self.commands.pending_many([key])[key] if self.commands is not None else None
            except Exception as exc:  # the control's connection waiting to reconnect (PostgreSQL restarted)
                return "read", exc, None
            return "", None, (gen, desired, config, pending)

        try:
            failed, exc, got = await _in_thread_place(
                partial(tenant_gate, self._heartbeats, tenant, HEARTBEATS_PER_TENANT), calls
            )
        except BaseException:
            cut.set()
            raise
        if (late := row_check[0]) is not None:
            self._late_by_row_seen(key, boot, late)
            if self._tell_late(key):
                context.set_trailing_metadata(((REPORT_KEY, REPORT_LATE),))
        if exc is not None and failed == "write":
            self._store_failed("heartbeats", exc)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the fleet store could not record this heartbeat ({told(exc)}); send it again later",
            )
        if exc is None:
            try:
                gen, desired, config, pending = got
                reply = desired_reply(gen, desired, config)
                if pending is not None:
                    add_commands(reply, pending)
            except Exception as built:
                exc = built
        if exc is not None:
            self._store_failed("heartbeats", exc)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the fleet store could not read this agent's desired state ({told(exc)}); "
                "send the heartbeat again later",
            )
        return reply

    async def PushRecords(self, request_iterator, context):
        context = RequestStream(context, request_iterator)
        request_iterator = context.requests()
        who = await self.require(context, ROLE_AGENT)
        agent = quota_key(who)
        me = asyncio.current_task()
        marks = self._pushes.setdefault(agent, {})
        try:
            async with self._stream(agent, context, push=True):
                batches = request_iterator
                if me is not None:
                    self._give_way[me] = asyncio.Event()
                    batches = self._watched(marks, me, context.peer(), request_iterator, self._give_way[me])
                async for ack in self._push(who, batches, context):
                    yield ack
        finally:
            marks.pop(me, None)  # type: ignore[arg-type]
            self._give_way.pop(me, None)  # type: ignore[arg-type]
            if not marks and self._pushes.get(agent) is marks:
                del self._pushes[agent]

    @staticmethod
    async def _watched(marks: dict, me: asyncio.Task, peer: str, batches, give_way: asyncio.Event):
        """The stream's batches, noting while it waits for the next one (``_reclaim``); they end, and so the call
        (status OK), when ``give_way`` is set while it waits."""
        marks[me] = (peer, time.monotonic())
        it = aiter(batches)
        gave = asyncio.ensure_future(give_way.wait())
        nxt: asyncio.Future | None = None
        try:
            while True:
                nxt = asyncio.ensure_future(anext(it, None))
                await asyncio.wait({nxt, gave}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    # gives way: a batch not read yet is not acknowledged, and the agent sends it on a new stream
                    nxt.cancel()
                    with contextlib.suppress(BaseException):
                        await nxt
                    return
                batch, nxt = nxt.result(), None
                if batch is None:
                    return
                marks[me] = (peer, None)
                yield batch
                del batch  # not kept while the next one is received
                marks[me] = (peer, time.monotonic())
        finally:
            gave.cancel()
            # the call ended (cancelled) while its next batch was awaited: that read ends before the request stream
            # is closed (the guard's ``held_stream``); closed with the read still in it, the stream raised "already
            # running" and grpc logged an error with two tracebacks for each agent gone while its push waited
            if nxt is not None and not nxt.done():
                nxt.cancel()
                await asyncio.wait({nxt})
                if not nxt.cancelled():
                    nxt.exception()  # (retrieved: the call has ended anyway)

    async def _reclaim(self, agent: tuple[str, str], peer: str, push: bool = False) -> bool:
        """The agent is at its concurrent_streams limit: end its PushRecords that has waited longest for a next
        batch, if that is ``IDLE_PUSH_S`` or more, and say whether one ended. The agent's uplink keeps one stream
        open (idle up to its ``stream_idle_s``) on the one connection it shares with its model manager, so such a
        stream on another connection was left on a path that died without a word (a NAT that dropped the flow, a switch rebooting) and the agent is back on a new
        connection: until the keepalive reaped it (80 s) it counted against the quota, and a link that dropped
        silently a few times within that had the agent's streams refused (RESOURCE_EXHAUSTED).

        Only a push on another connection than the new stream's (``peer``, the client's address and port) is
        cancelled: the connection that has just carried the new stream is alive, and so is a push on it that
        merely waits (its uplink paces a batch to a bandwidth cap, a large batch crosses a slow link, or it idles).
        Cancelled, its agent heard no status (a cancelled handler sends none) and waited for its ack 60 s before
        sending the batch again; such a push gives way instead, between two batches (``_give_way_idle``), to
        another kind of stream (``push`` False: a package download, Connect). A second PushRecords on the same
        connection is refused as beyond the quota: an uplink has one, so that one is not its (each would end the
        one before it)."""
        now = time.monotonic()
        pushes = [
            (t0, where, task) for task, (where, t0) in self._pushes.get(agent, {}).items() if not task.done()
        ]
        idle = [(t0, task) for t0, where, task in pushes if t0 is not None and where != peer]
        if not idle or now - min(idle, key=lambda x: x[0])[0] < IDLE_PUSH_S:
            return not push and await self._give_way_idle(agent, peer)
        since, task = min(idle, key=lambda x: x[0])
        log.info(
            "agent %s (tenant %s): a PushRecords idle for %.0f s ended for its new stream (left on a dead path)",
            agent[1],
            agent[0],
            now - since,
        )
        task.cancel()
        await asyncio.wait({task}, timeout=RECLAIM_WAIT_S)  # its count released before the new one's is taken
        return True

    async def _give_way_idle(self, agent: tuple[str, str], peer: str) -> bool:
        """At the agent's concurrent_streams limit, a PushRecords of it on the new stream's connection that has
        waited ``GIVE_WAY_S`` or more for its next batch (within ``GIVE_WAY_WAIT_S``) is ended between two batches
        with status OK, as its uplink would end it: the uplink keeps that stream open while idle
        (``cloud.stream_idle_s``; for good while records keep coming), and the agent's other streams (a rollout's
        package download) were refused for it. Its uplink sees the end (before sending a batch it prepared
        meanwhile, e.g. paced to its bandwidth cap) and sends its next batch on a new stream; nothing it sent is
        lost (an unread batch is not acknowledged)."""
        deadline = time.monotonic() + GIVE_WAY_WAIT_S
        while True:
            now = time.monotonic()
            mine = [(t0, task) for task, (where, t0) in self._pushes.get(agent, {}).items() if where == peer]
            idle = [
                (t0, task)
                for t0, task in mine
                if t0 is not None and now - t0 >= GIVE_WAY_S and not task.done()
            ]
            if idle:
                break
            if not mine or now >= deadline:
                return False
            await asyncio.sleep(GIVE_WAY_S)
        task = min(idle, key=lambda x: x[0])[1]
        if (gate := self._give_way.get(task)) is None:
            return False
        log.debug("agent %s (tenant %s): an idle PushRecords gave way to its new stream", agent[1], agent[0])
        gate.set()
        await asyncio.wait({task}, timeout=RECLAIM_WAIT_S)  # its count released before the new one's is taken
        return True

    def _store_failed(self, what: str, exc: Exception) -> None:
        """A write of every agent's ``what`` that the store failed (down, its disk full): logged with its traceback
        and its error id (what the agent is told: ``faults.told``) once per reason and ``faults.LOG_EVERY_S`` with
        the count since, not at each one: every agent's every heartbeat (grpc's own "Unexpected ... raised by
        servicer method") and every batch sent again was a traceback while the disk stayed full."""
        self._faults.failed(f"the fleet store's write of {what}", exc)

    def _misnamed(self, who: Identity, misnamed: list[tuple[int, str, str]]) -> None:
        """Samples whose bytes are not the kind their extension says (a JPEG or an HTML page under .png, a PNG under
        .npy): stored as they came (refusing them would lose the record; nothing served or exported later trusts
        the extension: the console and ``cloud-trainer dataset`` read the bytes), counted per agent
        (``samples_misnamed`` at ``/api/quotas``) and logged once per ``DAMAGED_LOG_S`` per agent with the count
        since: a gateway sending them is misconfigured, or not the agent it claims to be."""
        key = quota_key(who)
        self.quotas.note_misnamed(key, len(misnamed))
        if not (since := _due(self._misnamed_log, key, len(misnamed))):
            return
        seq, ext, kind = misnamed[0]
        log.warning(
            "agent %s (tenant %s): %d samples arrived whose bytes are not what their extension says since this was "
            "last logged, e.g. seq %d under %r is %s; stored as they came (served and exported by their bytes)",
            who.name,
            who.tenant,
            since,
            seq,
            ext,
            kind,
        )

    def _retimed(self, who: Identity, retimed: list[tuple[int, float]]) -> None:
        """Records whose time was more than ``FUTURE_T_S`` past the service's clock, stored at their receipt time
        (``_bound_times``): counted per agent (``records_retimed`` at ``/api/quotas``) and logged once per
        ``DAMAGED_LOG_S`` per agent with the count since."""
        key = quota_key(who)
        self.quotas.note_retimed(key, len(retimed))
        if not (since := _due(self._retimed_log, key, len(retimed))):
            return
        seq, t = retimed[0]
        log.warning(
            "agent %s (tenant %s): %d records arrived with a time more than %g s past this service's clock since "
            "this was last logged, e.g. seq %d at t=%r; stored at the time they were received (is the gateway's "
            "clock set?)",
            who.name,
            who.tenant,
            since,
            FUTURE_T_S,
            seq,
            t,
        )

    def _damaged(self, who: Identity, seqs: list[int]) -> None:
        """Samples whose bytes do not hash to the digest the agent gave: not acknowledged (the agent sends them
        again), counted (``damaged`` in the quota refusals, at ``/api/quotas``) and logged once per
        ``DAMAGED_LOG_S`` per agent with the count since, not once per sample: a batch of 10,000 damaged samples
        was 10,000 warnings, and an agent sending them in a loop filled the service's log disk, every tenant's."""
        key = quota_key(who)
        self.quotas.count(key, "damaged", len(seqs))
        if not (since := _due(self._damaged_log, key, len(seqs))):
            return
        log.warning(
            "agent %s (tenant %s): %d samples arrived damaged (digest mismatch) since this was last logged, "
            "e.g. seq %d; not acknowledged (the agent sends them again)",
            who.name,
            who.tenant,
            since,
            seqs[0],
        )

    async def _take_report(self, who: Identity, context, msg, what: str, report=None) -> None:
        """The agent's state or deployment report within its quotas: one report at most ``max_report_bytes``
        (``INVALID_ARGUMENT``: it never could pass), reports and their bytes per second
        (``RESOURCE_EXHAUSTED``), and its run id (``boot_id``) 1-64 printable ASCII characters or none
        (``INVALID_ARGUMENT``, counted as ``boot_id`` at ``/api/quotas``, logged once per ``DAMAGED_LOG_S`` per agent):
        a NUL was stored as U+FFFD, so two crafted ids were one run, and an id of any length was taken. Checked
        before anything of it is parsed further or written. ``report``: the report ``msg`` carries (a ``Connect``
        message), else ``msg`` itself."""
        n = msg.ByteSize()
        if n > (most := self.quotas.limits.max_report_bytes):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{what}: {n} bytes, over the {most} bytes one report may take (labels, slots, health, "
                "counts); nothing of it was stored",
            )
        try:
            self.quotas.take_report(quota_key(who), n)
        except QuotaExceeded as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        boot = (msg if report is None else report).boot_id
        if boot and not RUN_ID.fullmatch(boot):
            await self._refuse_report(
                who,
                context,
                "boot_id",
                f"{what}.boot_id {boot[:80]!r} ({len(boot)} characters) is not a run id: 1-{RUN_ID_CHARS} "
                "printable ASCII characters (an agent draws 32 hex digits); nothing of it was stored",
            )

    async def _refuse_report(self, who: Identity, context, counted: str, why: str) -> None:
        """A report refused for a field no agent sends (``INVALID_ARGUMENT``: ``why``, quoting the field escaped),
        counted as ``counted`` at ``/api/quotas`` and logged once per ``DAMAGED_LOG_S`` per agent."""
        key = quota_key(who)
        self.quotas.count(key, counted)
        if since := _due(self._bad_runs_log, key, 1):
            log.warning(
                "agent %s (tenant %s): %d report(s) refused since this was last logged: %s",
                who.name,
                who.tenant,
                since,
                why,
            )
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)

    @contextlib.asynccontextmanager
    async def _stream(self, agent: tuple[str, str], context, push: bool = False):
        """One of the agent's concurrent streams, within its quota (RESOURCE_EXHAUSTED beyond it). ``push``: a
        PushRecords, for which a push on its own connection does not give way (``_reclaim``)."""
        if self.quotas.streams_full(agent):
            await self._reclaim(agent, context.peer(), push)
        try:
            self.quotas.open_stream(agent)
        except QuotaExceeded as exc:
            # the kind marked for the agent (protocols.refusals), which told it by the details' words alone, and the
            # limit (at 1, the agent's Connect stream holds the place: it reports by unary Heartbeat instead)
            marks = [(REFUSAL_KEY, STREAMS_FULL)]
            if exc.limit is not None:
                marks.append((STREAMS_LIMIT_KEY, str(exc.limit)))
            context.set_trailing_metadata(tuple(marks))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        try:
            yield
        finally:
            self.quotas.close_stream(agent)

    async def _push(self, who: Identity, request_iterator, context):
        agent = quota_key(who)
        await self._admit(who, context)
        blobs = self.blobs.for_tenant(who.tenant)
        async for batch in request_iterator:
            await refuse_revoked(context, who, self.revocations)  # revoked while the stream is open
            await self._refuse_while_writing(agent, context)
            gate = tenant_gate(self._ingests, who.tenant, INGESTS_PER_TENANT)
            await gate.acquire()  # the tenant's other batches wait here, holding no thread
            place = [gate]  # emptied when a store write that outlives this call takes the tenant's place over
            try:
                seqs, stored, dup = await self._ingest(who, agent, batch, blobs, context, place)
            finally:
                if place:
                    place.pop().release()
            del batch  # answered: freed before the next one is received (it held every stream's last batch)
            yield pb.Ack(seqs=seqs, stored=stored, duplicates=dup)

    async def _refuse_while_writing(self, agent: tuple[str, str], context) -> None:
        """``RESOURCE_EXHAUSTED`` at once for a batch of an agent whose call ended unanswered (its 60-s ack
        timeout) while the store still writes that call's batch: another write would hold one more thread in the
        stalled store for each retry, or wait on its tenant's place for the agent's next timeout. The agent keeps
        the batch in its outbox and sends it again after its backoff (a batch the first write stores is then
        acknowledged as duplicates)."""
        if not (writing := self._outliving.get(agent)):
            return
        why = (
            f"agent {agent[1][:80]!r}: the fleet store is still writing the batch of this agent's call that ended "
            f"unanswered {time.monotonic() - min(writing):.0f} s ago (the store is slow); nothing of this batch was "
            "stored: send it again later"
        )
        self.quotas.refused(agent, "store_writing", why)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, why)

    def store_writing(self, tenant: str) -> dict[str, dict]:
        """The tenant's agents refused as ``store_writing``: agent id -> the store's writes of its calls that ended
        unanswered and still run (``writes``), and for how long the oldest has (``for_s``): the console's
        ``/api/quotas``, so that an operator sees which agents wait for a stalled store, and since when."""
        now, out = time.monotonic(), {}
        # copies: the console reads this from its own thread
        for (t, agent), running in list(self._outliving.items()):
            if t == tenant and (ended := list(running)):
                out[agent] = {"writes": len(ended), "for_s": round(now - min(ended), 1)}
        return out

    def _outlives(
        self, agent: tuple[str, str], write: asyncio.Future, place: asyncio.Semaphore | None
    ) -> None:
        """The store's write of a call that ended (cancelled) goes on in its thread: it keeps its tenant's place
        among ``INGESTS_PER_TENANT`` and refuses the agent's further batches (``_refuse_while_writing``) until
        it ends."""
        since = time.monotonic()
        running = self._outliving.setdefault(agent, [])
        running.append(since)
        if len(running) == 1:
            log.warning(
                "agent %s (tenant %s): its call ended unanswered while the fleet store writes its batch (the store "
                "is slow or stalled for this tenant); its batches are refused (store_writing) until that write "
                "ends: /api/quotas?tenant=%s shows it (store_writing), docs/fleet-scale.md says what to do",
                agent[1],
                agent[0],
                agent[0],
            )

        def ended(_write: asyncio.Future) -> None:
            if place is not None:
                place.release()
            # its own entry: an older write of the agent's that ends first leaves the newer one's time, which
            # for_s and the refusals count from (they counted from the older one's for as long as the newer ran)
            running = self._outliving.get(agent, [])
            with contextlib.suppress(ValueError):
                running.remove(since)
            if not running:
                self._outliving.pop(agent, None)
                log.info(
                    "agent %s (tenant %s): the fleet store's write of its call that ended unanswered has ended "
                    "after %.0f s; its batches are taken again",
                    agent[1],
                    agent[0],
                    time.monotonic() - since,
                )

        write.add_done_callback(ended)

    async def _ingest(self, who: Identity, agent: tuple[str, str], batch, blobs, context, place: list):
        """Check, count and write one batch. The checks and the samples' digests run in a worker thread: on the
        loop, a batch of 1,000 records held every stream of every tenant for ~13 ms of checks and a batch of
        16 MB of samples for ~30 ms of hashing. The write runs in a thread of ``STORE_WRITERS``; ``place`` holds
        the tenant's place among ``INGESTS_PER_TENANT``, taken over by a write that outlives the call."""
        # a malformed record refuses the batch before any quota is taken or any byte written
        if (why := await asyncio.to_thread(_malformed, batch)) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{why}; nothing of the batch was stored")
        samples = sum(len(r.sample) for r in batch.records if r.kind == "sample")
        payloads = sum(len(r.payload) for r in batch.records)
        await self._seed_day(who, agent)
        try:  # the whole batch is within the quotas, or none of it is stored
            self.quotas.take_batch(
                agent, len(batch.records), payloads + sum(len(r.sample) for r in batch.records)
            )
            day = self.quotas.take_payload(agent, payloads)
            if samples:
                try:
                    self.quotas.take_sample(agent, samples)
                except QuotaExceeded:
                    self.quotas.give_payload(agent, payloads, day)
                    raise
        except QuotaExceeded as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        try:
            records, damaged, misnamed = await asyncio.to_thread(_records, batch)
        except asyncio.CancelledError:  # the call cancelled (the agent's ack timeout) before the store ran
            self._give_unstored(agent, [], [], payloads, samples, day)
            raise
        if damaged:
            self._damaged(who, damaged)
        if misnamed:
            self._misnamed(who, misnamed)
        if retimed := _bound_times(records, time.time()):
            self._retimed(who, retimed)
        newly: list[int] = []  # the indexes of the records this call stored, as each range commits
        queued = self._writers.submit(
            who.tenant,
            partial(self.store.ingest, who.name, records, tenant=who.tenant, blobs=blobs, newly=newly),
        )
        write = asyncio.wrap_future(queued)
        try:
            seqs, stored, dup = await asyncio.shield(write)
        except asyncio.CancelledError:
            if queued.cancel():  # still queued behind other tenants' stalled writes: it never ran, nor will
                self._give_unstored(agent, records, [], payloads, samples, day)
                raise
            # the agent cancels a call not acknowledged within 60 s (a store stalled), while the worker thread goes
            # on to store, find duplicates or fail: what it did not newly store is given back once it ends (kept,
            # every retry of a stall was charged again and the agent refused on its own budget until 00:00 UTC)
            write.add_done_callback(
                partial(self._give_unwritten, agent, records, newly, payloads, samples, day)
            )
            self._outlives(agent, write, place.pop() if place else None)
            raise
        except TenantQuotaExceeded as exc:  # the tenant's records, record bytes or sample bytes of the day
            self._give_unstored(agent, records, newly, payloads, samples, day)  # not stored: not spent
            self.quotas.refused(agent, "tenant_day", str(exc))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except TooManyEpochs as exc:  # the agent opened EPOCHS_PER_WINDOW epochs within the window
            self._give_unstored(agent, records, newly, payloads, samples, day)
            self.quotas.refused(agent, "epochs", str(exc))
            # marked: its agent waits hours (the window's), not its backoff's seconds
            context.set_trailing_metadata(((REFUSAL_KEY, EPOCHS_BOUND),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except AgentRowsLocked as exc:  # another transaction holds the agent's rows (PostgreSQL)
            self._give_unstored(agent, records, newly, payloads, samples, day)
            self.quotas.refused(agent, "store_locked", str(exc), per_tenant=True)
            # as a refusal on purpose: the agent's uplink waits out its push backoff (a heartbeat answered does not
            # cut it short; from backoff_initial_s, doubling up to backoff_max_s), so a lock held for long costs the
            # pool one connection for the wait of each retry, not each heartbeat
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except ValueError as exc:  # a record the store refuses (the checks above should have caught it)
            self._give_unstored(agent, records, newly, payloads, samples, day)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{str(exc)[:300]}; {_unstored(exc, 'of the batch')}"
            )
        except Exception as exc:  # the store failed (down, disk full, a bug): the agent sends the batch again
            self._give_unstored(agent, records, newly, payloads, samples, day)
            self._store_failed("batches", exc)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the fleet store could not write this batch ({told(exc)}); {_unstored(exc)}, "
                "send it again later",
            )
        if dup or len(records) < len(batch.records):
            # a replay's duplicates were stored (and spent) when first sent; a damaged sample is not stored (the
            # agent sends it again): neither is spent by this call
            self._give_unstored(agent, records, newly, payloads, samples, day)
        return seqs, stored, dup

    def _give_unwritten(
        self,
        agent: tuple[str, str],
        records: list[dict],
        newly: list[int],
        payloads: int,
        samples: int,
        day: int,
        write: asyncio.Future,
    ) -> None:
        """``_give_unstored`` once the store's write of a cancelled call has ended (on the loop): a duplicate or a
        failed write gives back what it did not newly store."""
        exc = None if write.cancelled() else write.exception()  # retrieved: nobody awaits it any more
        if isinstance(exc, TenantQuotaExceeded):  # refused as an answered call's would be: counted, logged
            self.quotas.refused(agent, "tenant_day", str(exc))
        elif isinstance(exc, AgentRowsLocked):
            self.quotas.refused(agent, "store_locked", str(exc), per_tenant=True)
        elif isinstance(exc, TooManyEpochs):
            self.quotas.refused(agent, "epochs", str(exc))
        elif isinstance(exc, Exception) and not isinstance(exc, ValueError):
            self._store_failed("batches", exc)
        self._give_unstored(agent, records, newly, payloads, samples, day)

    def _give_unstored(
        self,
        agent: tuple[str, str],
        records: list[dict],
        newly: list[int],
        payloads: int,
        samples: int,
        day: int,
    ) -> None:
        """Give back to the agent's day budgets the payload and sample bytes taken for the records of a batch this
        call did not store: those of a batch refused or failed, but the records of ``newly`` (a batch written in
        ranges, refused or failed in a later one: what the ranges before stored stays spent), and those of
        duplicates, stored and spent when first sent (a batch in ranges whose first range was stored and whose
        second the tenant's quota refused, sent again every 15-30 s, charged the first range again at each resend;
        a replay acknowledged charged the agent again for it). So the agent's day budgets count the bytes stored
        for it, as ``agent_usage`` (what they start from after a restart) does. Its sample bytes too: kept, each
        retry of a batch the tenant's quota refused spent the agent's sample budget again. Only to the UTC ``day``
        they were taken from: a batch refused after 00:00 UTC gives nothing to the new day's budgets."""
        kept = [records[i] for i in newly]
        self.quotas.give_payload(agent, payloads - sum(r["payload_bytes"] for r in kept), day)
        if samples:
            self.quotas.give_sample(
                agent, samples - sum(r.get("sample_bytes") or 0 for r in kept if r["kind"] == "sample"), day
            )

    async def _seed_day(self, who: Identity, agent: tuple[str, str]) -> None:
        """The agent's day budgets start, once a UTC day in this process, from the bytes the store holds for it
        (``agent_usage``): counted in memory only, a restart started them from 0 and an agent refused past its
        budget was stored again as much. A store that cannot answer leaves them as they are (tried again at the
        next batch)."""
        day = self.quotas.day()
        if self.quotas.seeded(agent, day):
            return
        try:
            used = await asyncio.to_thread(partial(self.store.agent_usage, who.name, day, tenant=who.tenant))
        except Exception as exc:
            self._store_failed("day budget reads", exc)
            return
        self.quotas.seed_day(agent, day, *used)

    async def DownloadPackage(self, request, context):
        who = await self.require(context, ROLE_AGENT)
        # whether it is deployed to the agent, where the file is and its size: the registry's index files and the
        # file's metadata, read in a package reader (a slow disk holds one, never the loop every tenant shares),
        # at most PACKAGE_READS_PER_TENANT of the tenant's at once: in the worker threads every tenant's batches
        # wait for, one tenant's agents asking 32 at a time (a registry of 20,000 versions) held all of them
        # (a place kept until the thread's lookup ends, a call cut meanwhile or not: ``_in_place``)
        found = await _in_place(
            partial(tenant_gate, self._reads, who.tenant, PACKAGE_READS_PER_TENANT),
            self._readers,
            self._package_file,
            who,
            request.digest,
        )
        if found is None:
            # a version withdrawn while deployed to this agent (offline through the withdrawal): it is told so, and
            # stops; anything else (another tenant's, not deployed to it, none at all) gets the same answer
            why = await _in_place(
                partial(tenant_gate, self._reads, who.tenant, PACKAGE_READS_PER_TENANT),
                self._readers,
                self._withdrawn,
                who,
                request.digest,
            )
            if why is not None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"no package with digest {request.digest[:16]!r} deployed to this agent",
            )
            return  # abort raises; said for the type checker
        path, total = found
        async with self._stream(quota_key(who), context):
            # (the registry keeps a package at <name>/<version>/<file>: the re-check reads that name's index only)
            still = partial(self._still_served, who, request.digest, context, path.parent.parent.name)
            async for chunk in self._send_package(who.tenant, path, total, request, context, still):
                yield chunk

    def _package_file(self, who: Identity, digest: str) -> tuple[Path, int] | None:
        """The package file deployed to the agent with this digest and its size, or None (in a worker thread)."""
        if self.registry is None:
            return None
        if self.control is not None and not self.control.deployed_to(who.name, digest, tenant=who.tenant):
            return None
        # a version withdrawn since (cloud-trainer withdraw) is not served, even to a desired state naming it
        path = self.registry.for_tenant(who.tenant).by_digest(digest, withdrawn=False)
        try:
            return (path, path.stat().st_size) if path is not None else None
        except OSError:
            return None

    def _withdrawn(self, who: Identity, digest: str) -> str | None:
        """Why the package ``digest``, deployed to the agent, is not sent to it: its version was withdrawn from its
        tenant's registry (``cloud-trainer withdraw``); None when it is not deployed to the agent or not in the
        tenant's registry (in a worker thread)."""
        if self.registry is None or "\x00" in digest:
            return None
        if self.control is not None and not self.control.deployed_to(who.name, digest, tenant=who.tenant):
            return None
        entry = self.registry.for_tenant(who.tenant).entry_by_digest(digest)
        if entry is None or entry.get("status") != WITHDRAWN:
            return None
        return _withdrawn_text(entry)

    def _recheck(self, who: Identity, digest: str, name: str) -> tuple[Any, str] | None:
        """None while the package ``digest`` (of the registry's package ``name``) may still be sent to the agent;
        else the status and text to stop its download with (in a thread of the loop's executor, never a package
        reader). Reads that name's ``index.json`` only, and asks the control whether it is still deployed to the
        agent only once the tenant's desired states changed (or ``DEPLOYED_TTL_S`` passed), and only when the
        control's lock is free at once. It re-read every
        index of the tenant's registry under the control's lock, in one of the tenant's package read places, once
        a second per download: 449 ms at 20,000 versions, downloads 6 times slower, and one tenant's long
        control write stalled every tenant's downloads."""
        if self.registry is None:
            return None
        entry = next(
            (e for e in self.registry.for_tenant(who.tenant).list(name) if e.get("digest") == digest), None
        )
        if entry is not None and entry.get("status") == WITHDRAWN:
            return (grpc.StatusCode.FAILED_PRECONDITION, _withdrawn_text(entry))
        gone = (
            grpc.StatusCode.PERMISSION_DENIED,
            f"package {digest[:16]!r} is no longer deployed to this agent; the download is stopped",
        )
        if entry is None:
            return gone
        if self.control is None:
            return None
        key = (who.tenant, who.name, digest)
        mark, now = self.control.desired_marks[who.tenant], time.monotonic()
        kept = self._deployed.get(key)
        if kept is not None and kept[0] == mark and now - kept[1] < DEPLOYED_TTL_S:
            return None
        # never waits on the lock: a control write (a rollout step moves the mark inside it) would hold this
        # thread of the loop's shared executor, and 6 downloads at once held every to_thread of every tenant
        # for the write's length. While it is held the download goes on (its withdrawal was read above) and
        # the next re-check asks again.
        if not self.control.lock.acquire(blocking=False):
            return None
        try:
            deployed = self.control.deployed_to(who.name, digest, tenant=who.tenant)
        finally:
            self.control.lock.release()
        if not deployed:
            self._deployed.pop(key, None)
            return gone
        if len(self._deployed) >= DEPLOYED_CACHED:
            self._deployed.clear()
        self._deployed[key] = (mark, now)
        return None

    async def _still_served(self, who: Identity, digest: str, context, name: str) -> None:
        """Between two chunks of a download: abort it once the package may no longer be sent to the agent, its
        version withdrawn meanwhile (``FAILED_PRECONDITION``, saying so: the agent stops and does not install it)
        or no longer deployed to it (``PERMISSION_DENIED``, as at the start). The check at the start alone let a
        version withdrawn while a gateway downloaded it be delivered whole, and installed (``_recheck``)."""
        why = await asyncio.to_thread(self._recheck, who, digest, name)
        if why is None:
            return
        log.info(
            "agent %r (tenant %s): download of package %s stopped: %s",
            who.name[:80],
            who.tenant,
            digest[:16],
            why[1],
        )
        await context.abort(why[0], why[1])

    async def _send_package(self, tenant: str, path: Path, total: int, request, context, still=None):
        """The package's bytes from ``request.offset``, in ``CHUNK``s read by the package readers (``PACKAGE_READERS``
        threads of their own, at most ``PACKAGE_READS_PER_TENANT`` of them reading for one tenant at a time): a
        large package or a slow disk never holds the event loop, nor the threads the store's writes run in, and one
        tenant's downloads leave readers to the others'. ``still`` (``_still_served``), awaited before the last
        chunk and at most every ``RECHECK_S`` before the others, aborts the download once the package may no longer
        be sent to the agent."""
        if request.offset > total:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, f"offset {request.offset} beyond size {total}")
        # the tenant's gate looked up at each read, never kept across one: between two chunks (the agent's link
        # paced) it may be dropped (``free_gates``), and one kept from the download's start was then a gate of its
        # own, the tenant's bound holding per gate (3 downloads after sweeps read 6 chunks at once, bound 2)
        gate = partial(tenant_gate, self._reads, tenant, PACKAGE_READS_PER_TENANT)
        # each read keeps its place until its thread's read ends (``_in_place``), and the file is closed only then
        opening: list[concurrent.futures.Future] = []
        reading: list[concurrent.futures.Future] = []
        try:
            # opened and put at the offset in one reader call within a place (the seek ran outside it: a tenant's
            # resumed downloads on a slow disk held 6-8 readers, bound 2)
            f = await _in_place(gate, self._readers, _open_at, path, request.offset, calls=opening)
            off = request.offset
            checked = time.monotonic()
            while True:
                chunk = await _in_place(gate, self._readers, f.read, CHUNK, calls=reading)
                if not chunk:
                    break
                if still is not None and (
                    off + len(chunk) >= total or time.monotonic() - checked >= RECHECK_S
                ):
                    await still()
                    checked = time.monotonic()
                yield pb.Chunk(data=chunk, offset=off, total=total)
                off += len(chunk)
        except OSError as exc:  # the server's file: its path goes to the log, never to the agent
            log.warning("package %s of tenant %s could not be read: %s", path, tenant, exc)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the server could not read this package; try again later"
            )
        finally:
            if opening:
                (reading or opening)[0].add_done_callback(partial(self._close_package, opening[0]))

    def _close_package(self, opened: concurrent.futures.Future, _last: concurrent.futures.Future) -> None:
        """Close the file ``opened`` gave once its download's last read ended (in a reader, or in the thread this
        is called from when the service stopped)."""
        if opened.cancelled() or opened.exception() is not None:
            return
        f = opened.result()
        try:
            self._readers.submit(f.close)
        except RuntimeError:  # the service stopped meanwhile (its readers shut down)
            f.close()

    async def ReportDeployment(self, request, context):
        who = await self.require(context, ROLE_AGENT)
        await self._take_report(who, context, request, "DeploymentReport")
        if not STEP.fullmatch(request.step) or request.step in FLEET_STATUSES:
            # a step becomes its target's status: any text was taken (a line feed and a forged log line in the
            # stalled step's WARNING, an escape sequence), and a status only the fleet gives (``superseded``: the
            # rollout stopped waiting for the agent and a halt no longer sent it back)
            await self._refuse_report(
                who,
                context,
                "deployment_step",
                f"DeploymentReport.step {request.step[:80]!r} is not a step an agent makes: 1-64 lowercase letters, "
                f"digits and '_', the first a letter, none of {', '.join(sorted(FLEET_STATUSES))} (statuses the "
                "fleet gives); nothing of it was stored",
            )
        if self.control is not None:
            health = await json_field(
                context, request.health_json, "health_json", max_bytes=DEPLOYMENT_HEALTH_BYTES
            )
            known = await asyncio.to_thread(
                partial(
                    self.control.on_report,
                    who.name,
                    request.deployment_id,
                    request.slot[:128],
                    request.version[:128],
                    request.step[:64],
                    request.ok,
                    request.reason[:DEPLOYMENT_REASON_CHARS],
                    health,
                    tenant=who.tenant,
                    report=(request.boot_id[:64], int(request.report_seq))
                    if request.boot_id and request.report_seq
                    else None,
                )
            )
            if not known:  # unknown, another tenant's, or not targeting this agent: the same answer
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"no deployment {request.deployment_id[:64]!r} for this agent",
                )
            # made before a step taken: the agent is told, as for a late heartbeat (but while its runs alternate: a
            # late clone's step drew a new run, the fleet's view flipping once a step, ``_tell_late``; then the step
            # is taken again after the hold, ``_keep_untold``)
            if known == KEPT_LATE:
                if self._tell_late((who.tenant, who.name)):
                    context.set_trailing_metadata(((REPORT_KEY, REPORT_LATE),))
                else:
                    await self._keep_untold((who.tenant, who.name), request, health)
        return pb.ReportReply()


class AdminServicer(rpc.AdminServicer):
    def __init__(
        self,
        store: Store,
        control=None,
        registry: Registry | None = None,
        commands=None,
        limited: LimitedTenants | None = None,
        revocations: Revocations | None = None,
    ) -> None:
        self.store, self.control, self.registry = store, control, registry
        self.commands = commands
        self.limited = limited
        self.revocations = revocations
        self._gates: dict[str, asyncio.Semaphore] = {}  # tenant ('' for operators) -> its calls in threads
        self._faults = FaultLog(log)

    async def require(self, context, role: str) -> Identity:
        return await require(context, role, self.revocations)

    async def _thread(self, tenant: str, fn):
        """``fn()`` in a worker thread, at most ``ADMIN_CALLS_PER_TENANT`` of the tenant's at once; its others wait
        on the loop, holding no thread. The worker threads serve every tenant's calls (state reports, batches,
        downloads): one tenant's admin asking for its agents' stats 16 at a time (each a scan of an agent's
        records) held all of them, and another tenant's batches waited 14 s for a thread. A place is kept until the
        thread's call ends, also when the admin's call was cut meanwhile (``_in_thread_place``)."""
        return await _in_thread_place(partial(tenant_gate, self._gates, tenant, ADMIN_CALLS_PER_TENANT), fn)

    async def ListAgents(self, request, context):
        who = await self.require(context, ROLE_ADMIN)
        out = []
        for a in await self._thread(who.tenant, partial(self.store.agents, tenant=who.tenant)):
            st = await self._thread(who.tenant, partial(self.store.stats, a["id"], tenant=who.tenant))
            info = pb.AgentInfo(
                id=a["id"],
                labels=a["labels"],
                last_seen=a["last_seen"] or 0,
                slots=[pb.SlotState(**s) for s in a["slots"]],
                records=st["records"],
                last_seq=st["last_seq"],
                health_json=json.dumps(a.get("health") or {}),
            )
            if (a.get("outbox") or {}).get("config"):
                info.config.CopyFrom(pb.ConfigState(**a["outbox"]["config"]))
            out.append(info)
        return pb.ListAgentsReply(agents=out)

    async def IngestStats(self, request, context):
        who = await self.require(context, ROLE_ADMIN)
        t = who.tenant
        dropped = {}
        if request.agent and not AGENT_ID_RE.fullmatch(request.agent):
            # no agent has such an id (the service admits none): the answer of one that does not exist, before
            # any store read (on PostgreSQL an id with NUL was a store failure: INTERNAL, logged as the service's)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"agent {request.agent[:64]!r} is not registered"
            )
        st = await self._thread(t, partial(self.store.stats, request.agent or None, tenant=t))
        if request.agent:
            agent = next(
                (
                    a
                    for a in await self._thread(t, partial(self.store.agents, tenant=t))
                    if a["id"] == request.agent
                ),
                None,
            )
            if (
                agent is None and not st["records"]
            ):  # another tenant's agent: the answer of one that does not exist
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, f"agent {request.agent[:64]!r} is not registered"
                )
            dropped = (agent or {}).get("outbox", {}).get("dropped", {})
        gaps = (
            await self._thread(t, partial(self.store.gaps, request.agent, tenant=t, newest=INGEST_STATS_GAPS))
            if request.agent
            else []
        )
        return pb.IngestStatsReply(
            records=st["records"],
            samples=st["samples"],
            duplicates=st["duplicates"],
            gaps=[pb.Gap(**g) for g in gaps[-INGEST_STATS_GAPS:]],  # the newest
            dropped=dropped,
            retired_records=st["retired"]["records"],
            retired_samples=st["retired"]["samples"],
        )

    async def _control(self, context, fn, *args, **kw):
        """``fn(*args, tenant=<the admin's tenant>, **kw)`` in a thread; ``NotInTenant`` is PERMISSION_DENIED,
        ``TooManyRollouts`` and ``TooManyCommands`` RESOURCE_EXHAUSTED."""
        doc = await self._in_tenant(context, self.control, "deployments", fn, *args, **kw)
        return Deployment.from_doc(doc).to_proto(pb)

    async def _in_tenant(self, context, feature, what: str, fn, *args, **kw):
        who = await self.require(context, ROLE_ADMIN)
        if feature is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{what} are not enabled on this server")
        try:
            return await self._thread(who.tenant, partial(fn, *args, tenant=who.tenant, **kw))
        except NotInTenant as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except (TooManyRollouts, TooManyCommands) as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except OSError as exc:  # a file of the server's: logged with its path, never sent to the client
            log.warning("%s of tenant %s: %s failed: %s", what, who.tenant, getattr(fn, "__name__", fn), exc)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"{what}: the server could not read its files; see the server's log"
            )
        except RuntimeError as exc:
            # the agent's validator could not run: the service's fault, not the admin's (its stderr, a traceback
            # naming the server's paths, goes to the log under the id, never to the admin)
            self._faults.failed(f"{what} of tenant {who.tenant}", exc)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"{what}: the service could not check it ({told(exc)})"
            )

    async def CreateDeployment(self, request, context):
        await self.require(context, ROLE_ADMIN)
        gate = (
            gate_from_request(request)
            if request.HasField("gate")
            else await json_field(context, request.gate_json, "gate_json")
        )
        req = {
            "package": request.package,
            "version": request.version,
            "slot": request.slot,
            "agents": list(request.agents),
            "selector": dict(request.selector),
            "strategy": request.strategy or "canary",
            "steps": list(request.steps) or ["1", "100%"],
            "wait_s": request.wait_s,
            "gate": gate,
        }
        if request.kind == "config":
            req.update(config_yaml=request.config_yaml, config_name=request.config_name)
            return await self._control(context, self.control.create_config, req)
        if request.kind not in ("", "model"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"kind {request.kind[:40]!r}: model or config"
            )
        return await self._control(context, self.control.create, req)

    async def ListDeployments(self, request, context):
        who = await self.require(context, ROLE_ADMIN)
        deps = (
            await self._thread(who.tenant, partial(self.control.list, tenant=who.tenant))
            if self.control
            else []
        )
        return pb.ListDeploymentsReply(deployments=[Deployment.from_doc(d).to_proto(pb) for d in deps])

    async def SendCommand(self, request, context):
        """A command to one agent of the admin's tenant (another tenant's agent: PERMISSION_DENIED)."""
        who = await self.require(context, ROLE_ADMIN)
        cmd = await self._in_tenant(
            context,
            self.commands,
            "agent commands",
            getattr(self.commands, "send", None),
            request.agent,
            request.kind,
            request.pipeline,
            request.reason,
            who.name,
            request.process_state,
        )
        return pb.CommandInfo(json=json.dumps(cmd))

    async def ListCommands(self, request, context):
        who = await self.require(context, ROLE_ADMIN)
        if request.agent and not AGENT_ID_RE.fullmatch(request.agent):
            return pb.ListCommandsReply()  # no agent has such an id: none of its commands (as IngestStats)
        cmds = (
            await self._thread(
                who.tenant, partial(self.commands.list, request.agent or None, tenant=who.tenant)
            )
            if self.commands is not None
            else []
        )
        return pb.ListCommandsReply(commands=[pb.CommandInfo(json=json.dumps(c)) for c in cmds])

    async def ControlDeployment(self, request, context):
        return await self._control(context, self.control.command, request.deployment_id, request.action)

    async def Rollback(self, request, context):
        return await self._control(
            context,
            self.control.rollback,
            request.package,
            request.version,
            request.slot,
            list(request.agents),
        )

    # ---- platform operators ---------------------------------------------------------------------
    async def CreateTenant(self, request, context):
        await self.require(context, ROLE_OPERATOR)
        if self.control is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "tenants are not enabled on this server")
        limits = {f: getattr(request, f) for f in QUOTA_FIELDS if request.HasField(f)}
        try:
            t = await asyncio.to_thread(self.control.create_tenant, request.tenant, request.display_name)
            if limits:
                await asyncio.to_thread(partial(self.store.set_quota, t["tenant"], **limits))
                if self.limited is not None:  # this replica at once; the others within QUOTA_TTL_S
                    self.limited.invalidate()
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return next(i for i in await asyncio.to_thread(self.usage) if i.tenant == t["tenant"])

    async def ListTenants(self, request, context):
        await self.require(context, ROLE_OPERATOR)
        return pb.ListTenantsReply(tenants=await asyncio.to_thread(self.usage))

    def usage(self) -> list:
        """Counts per tenant (registered or seen): agents, records, samples, deployments, published packages
        and their bytes; the tenant's quotas and its usage of the day against them."""
        rows = self.store.usage()
        quotas = self.store.quotas()
        deps = self.control.usage() if self.control else {}
        known = self.control.tenants() if self.control else {}
        out = []
        for t in sorted(set(rows) | set(deps) | set(known) | set(quotas) | {"default"}):
            reg = self.registry.for_tenant(t) if self.registry else None
            entries = (
                [e for n in reg.names() for e in reg.list(n)] if reg is not None and reg.root.exists() else []
            )
            paths = [reg.package_path(e) for e in entries] if reg is not None else []
            size = sum(p.stat().st_size for p in paths if p.exists())
            r, k = rows.get(t, {}), known.get(t, {})
            out.append(
                pb.TenantInfo(
                    tenant=t,
                    display_name=k.get("display_name", ""),
                    agents=r.get("agents", 0),
                    records=r.get("records", 0),
                    samples=r.get("samples", 0),
                    deployments=deps.get(t, 0),
                    packages=len(entries),
                    created=k.get("created", 0),
                    package_bytes=size,
                    retired_records=r.get("retired_records", 0),
                    retired_samples=r.get("retired_samples", 0),
                    **quotas.get(t, {}),
                )
            )
        return out


def report_limits(quotas: Quotas) -> dict[str, int]:
    """The agents' report methods and the largest request each takes (``MalformedRequests``, before parsing): a
    state or deployment report of ``max_report_bytes``, and on ``Connect`` the message around it."""
    most = quotas.limits.max_report_bytes
    return {
        "/edge.fleet.v1.Fleet/Heartbeat": most,
        "/edge.fleet.v1.Fleet/ReportDeployment": most,
        "/edge.fleet.v1.Fleet/Connect": most
        + 32,  # AgentMessage: the report, its tag and length, a report_id
    }


def _malformed(batch) -> str | None:
    """Why a record of the batch can never be stored, or None: a seq or epoch above what the stores hold, a
    time that is not a finite number, a kind or payload that is not text both databases hold (NUL characters), a
    sample whose payload (its metadata) is not a JSON object or whose metadata fields that become columns (model,
    label, ...) are not short strings or null, a sample's extension of no kind the fleet takes (``SAMPLE_KINDS``).
    The agent gets ``INVALID_ARGUMENT`` naming the record and the field, never an error it would retry the same
    batch for."""
    for i, r in enumerate(batch.records):
        if why := over_int64(seq=r.seq, epoch=r.epoch):
            return f"record {i} (seq {r.seq}): {why}"
        if why := record_problem(r.kind, r.t, r.payload.decode("utf-8", "replace")):
            return f"record {i} (seq {r.seq}): {why}"
        if r.kind == "sample" and r.sample and r.sample_ext and (why := meta_problem({}, r.sample_ext)):
            return f"record {i} (sample seq {r.seq}): {why}"  # also with no payload: never a '../' or a NUL
        if r.kind == "sample" and r.sample and r.payload:
            try:
                meta = json.loads(r.payload)
            except (ValueError, RecursionError):
                meta = None
            if not isinstance(meta, dict):
                return f"record {i} (sample seq {r.seq}): its payload must be a JSON object (the sample's metadata)"
            if why := meta_problem(meta, r.sample_ext):
                return f"record {i} (sample seq {r.seq}): {why}"
    return None


def _records(batch) -> tuple[list[dict], list[int], list[tuple[int, str, str]]]:
    """The batch's records as the store takes them, a sample's bytes with their digest; the seqs of samples
    whose bytes do not hash to the digest the agent gave (damaged: not stored, not acknowledged); and the samples
    whose bytes are not the kind their extension says, ``(seq, extension, what the bytes are)`` (stored)."""
    records, damaged, misnamed = [], [], []
    for r in batch.records:
        rec = {
            "epoch": r.epoch,
            "seq": r.seq,
            "kind": r.kind,
            "t": r.t,
            "payload": r.payload.decode("utf-8", "replace"),
            "payload_bytes": len(r.payload),
        }
        if r.kind == "sample" and r.sample:
            digest = hashlib.sha256(r.sample).hexdigest()
            if r.sample_sha256 and digest != r.sample_sha256:
                damaged.append(r.seq)
                continue
            if (why := _misnamed_kind(r.sample, r.sample_ext)) is not None:
                misnamed.append((r.seq, r.sample_ext, why))
            # the bytes go to the blob store in ingest, only if the record is new and within quota
            rec["sample_sha256"], rec["sample_ext"], rec["sample_bytes"], rec["sample_data"] = (
                digest,
                r.sample_ext,
                len(r.sample),
                r.sample,
            )
        records.append(rec)
    return records, damaged, misnamed


def _bound_times(records: list[dict], now: float) -> list[tuple[int, float]]:
    """Give the records whose time is more than ``FUTURE_T_S`` past ``now`` (the service's clock) ``now`` as their
    time; ``(seq, time as sent)`` of each. The events view lists a tenant's events newest first by that time: one
    gateway's events at t=1e308 (or in year 9999) stayed on top of every first page of its tenant's console for
    good. A time in the past is kept (an outbox sends what it held through an outage; a gateway whose clock was
    never set sorts its own records last)."""
    out = []
    for r in records:
        if r["t"] > now + FUTURE_T_S:
            out.append((r["seq"], r["t"]))
            r["t"] = now
    return out


def _unstored(exc: Exception, what: str = "of it") -> str:
    """What of a batch the store failed is stored: nothing, or its first records (a large batch is written in
    ranges, each its own transaction: ``SQLStore.INGEST_CHUNK_BYTES``), which the batch sent again finds stored."""
    if n := getattr(exc, "stored_before", 0):
        return f"its first {n} records were stored, the rest not (sent again, those are duplicates)"
    return f"nothing {what} was stored"


def _due(book: dict[tuple[str, str], tuple[int, float]], key: tuple[str, str], n: int) -> int:
    """``n`` more of an agent's things to log at most once per ``DAMAGED_LOG_S``: the count since the last line
    when one is due now, else 0 (kept in ``book``: agent -> (not logged, when last logged))."""
    now = time.monotonic()
    since, last = book.get(key, (0, float("-inf")))
    since += n
    if now - last < DAMAGED_LOG_S:
        book[key] = (since, last)
        return 0
    book[key] = (0, now)
    return since


def _misnamed_kind(data: bytes, ext: str) -> str | None:
    """What a sample's bytes are when that is not what its extension says (``"a JPEG image"``, ``"no image"``), or
    None: an image under an extension of its kind, or bytes of no image kind under ``.npy`` or none. From the first
    ``SNIFF_BYTES`` (``image_kind``), as the console and the export judge it."""
    kind, e = image_kind(data[:SNIFF_BYTES]), sample_kind(ext)
    if kind is None:
        return "no image" if e is not None and e != ".npy" else None
    return None if e in KIND_SUFFIXES[kind] else f"a {kind} image"


def _slot_states(r) -> list[dict]:
    """A state report's model slots, as the store keeps them."""
    return [
        {
            "slot": s.slot,
            "package": s.package,
            "version": s.version,
            "digest": s.digest,
            "status": s.status,
            "reason": s.reason,
        }
        for s in r.slots
    ]


def _outbox_state(r) -> dict:
    """What a state report says of the agent's outbox (epoch, drops) and, from v3 agents, the agent
    configuration it runs: kept with the agent's row."""
    out = {"epoch": r.epoch, "dropped": dict(r.dropped)}
    # (v4) the report's number among its agent's reports, which ``Control._ways_back`` orders verdicts against
    if r.boot_id and r.report_seq:
        out["report"] = {"boot": r.boot_id[:64], "seq": int(r.report_seq)}
    if r.HasField("config"):
        c = r.config
        out["config"] = {
            "source": c.source[:16],
            "deployment_id": c.deployment_id[:64],
            "digest": c.digest[:64],
            "status": c.status[:32],
            "reason": c.reason[:500],
        }
    return out


def server_credentials(ca: Path, cert: Path, key: Path) -> grpc.ServerCredentials:

    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())], root_certificates=ca.read_bytes(), require_client_auth=True
    )


# a tick that keeps failing for the same reason (the data folder full, the store down) is logged with its traceback
# once, then once per TICK_FAILURE_LOG_S with the count since: it runs every second, and wrote a traceback a second
TICK_FAILURE_LOG_S = 300.0


def _tick_done(failures: RepeatedFailure, ticking: asyncio.Future) -> None:
    if ticking.cancelled():
        return
    if (exc := ticking.exception()) is None:
        failures.succeeded()
    else:
        failures.failed(exc)


def channel_credentials(ca: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(), private_key=key.read_bytes(), certificate_chain=cert.read_bytes()
    )


class FleetServer:
    """``await start()`` / ``await stop()``; everything persistent lives under ``data``."""

    def __init__(
        self,
        data: Path,
        port: int,
        ca: Path,
        cert: Path,
        key: Path,
        host: str = "127.0.0.1",
        registry: Path | None = None,
        control=None,
        quotas: Quotas | None = None,
        store: str | None = None,
        streams: bool = True,
        blobs: str | Path | BlobStore | None = None,
        s3_endpoint: str | None = None,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        step_timeout_s: float | None = None,
        keep_rollouts: int | None = None,
        keepalive_s: float = KEEPALIVE_S,
        keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S,
        connection_idle_s: float = CONNECTION_IDLE_S,
        replicas: bool = False,
        tick_s: float = TICK_S,
        max_connections: int | None = None,
        retain_days: float | None = None,
        retain_every_s: float = RETAIN_EVERY_S,
    ) -> None:
        self.data = Path(data)
        self.tick_s = tick_s
        if retain_days is not None and (
            isinstance(retain_days, bool)  # True is no age (it was taken as 1 day)
            or not (isinstance(retain_days, int | float) and RETAIN_DAYS_LEAST <= retain_days < float("inf"))
        ):
            raise ValueError(
                f"--retain-days {retain_days!r}: expected a number of days, {RETAIN_DAYS_LEAST:g} or more"
            )
        # records and samples received more than this long ago are deleted (None: every one kept)
        self.retain_s = None if retain_days is None else retain_days * 86400.0
        # the wall and monotonic clocks at start: retention's time never runs ahead of the monotonic one (``_retire_step``)
        self._clocks_at_start = (time.time(), time.monotonic())
        # set by stop(): the retention step under way ends before its next deletion
        self._retire_halt = threading.Event()
        self._clock_step_told = False
        self.retain_every_s = retain_every_s
        self.max_connections = connection_limit() if max_connections is None else max_connections
        given_control = control
        # before anything is opened or bound: a port that a fleet service of another store serves is refused;
        # a replica of the same store goes on (portguard). Port 0: the kernel's choice, announced once bound.
        self._identity = store_identity(store, self.data)
        self.announcement = Announcement(port, *self._identity, host=host).open() if port else None
        try:
            if port and in_use(
                host, port, replicas
            ):  # e.g. the same store's service, not started with --replicas
                raise PortTaken(cannot_bind(host, port, replicas, self.announcement))
            # a postgresql:// URL, or the SQLite file <data>/fleet.db
            self.store = open_store(store, self.data)
            self.store.received_clock = self._received_now  # receipts never stamped back in time
            self._clock_behind_store()
            # s3://bucket[/prefix] (replicas on several hosts), a folder, or <data>/blobs
            self.blobs = (
                open_blobs(str(blobs) if blobs is not None else None, self.data, s3_endpoint=s3_endpoint)
                if blobs is None or isinstance(blobs, (str, Path))
                else blobs
            )
            if isinstance(self.blobs, LocalBlobStore):  # samples a killed run had staged, never committed
                swept, swept_bytes = self.blobs.sweep_staged()
                if swept:
                    log.info(
                        "removed %d staged sample files (%d bytes) a stopped run left in %s",
                        swept,
                        swept_bytes,
                        self.blobs.root,
                    )
            self.registry = Registry(registry or self.data / "registry")
            self.registry.sweep_parts()  # packages' copies a publish killed while copying left
            if control is None:
                from cloud_trainer.fleet.control import KEEP_ROLLOUTS, STEP_TIMEOUT_S, Control

                # with a PostgreSQL store the control state lives in the same database (replicas on several hosts)
                where = (
                    store
                    if store and store.startswith(("postgresql://", "postgres://"))
                    else self.data / "control.db"
                )
                control = Control(
                    where,
                    self.registry,
                    self.store,
                    keys_dir=Path(ca).parent,
                    step_timeout_s=STEP_TIMEOUT_S if step_timeout_s is None else step_timeout_s,
                    keep_rollouts=KEEP_ROLLOUTS if keep_rollouts is None else keep_rollouts,
                )
            self.control = control
            self._owns_control = control is not given_control  # a control passed in is the caller's to close
            self.commands = Commands(control) if getattr(control, "db", None) is not None else None
            self.quotas = quotas or Quotas()
            # certificates revoked with `cloud-trainer pki revoke`, in the PKI folder beside the CA
            self.revocations = Revocations(Path(ca).parent / REVOKED_FILE)
            self.guard = MalformedRequests(
                report_limits(self.quotas),
                self.quotas,
                partial(_caller, revoked=self.revocations.revoked),
                held=HELD_METHODS,
            )
            self.server = grpc.aio.server(
                # the guard outermost; Faults answers what a servicer method did not handle (faults)
                interceptors=[self.guard, Faults(FaultLog(log))],
                options=[
                    ("grpc.max_receive_message_length", self.quotas.limits.max_message_bytes),
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                    # a connection storm (thousands of agents after a restart or a network cut): calls that arrive faster
                    # than the asyncio loop takes them wait in grpc's queue instead of being refused (RESOURCE_EXHAUSTED
                    # past 1,000 by default, with cancellations seen from ~2,000: FIELD-NOTES) or cancelled after 30 s
                    ("grpc.server.max_pending_requests", 20_000),
                    ("grpc.server.max_pending_requests_hard_limit", 40_000),
                    ("grpc.server_max_unrequested_time_in_server", 120),
                    # agents ping every 10 s on an otherwise quiet stream (reports every 30 s): allowed, never a GOAWAY
                    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                    ("grpc.keepalive_permit_without_calls", 1),
                    # and the server pings each connection every minute: a gateway that lost power (no FIN, no RST)
                    # has its stream closed within 80 s instead of holding it (and its memory) forever
                    ("grpc.keepalive_time_ms", round(keepalive_s * 1000)),
                    ("grpc.keepalive_timeout_ms", round(keepalive_timeout_s * 1000)),
                    # grpc 1.85 times a keepalive ping out by this one (default 60 s), not keepalive_timeout_ms: a
                    # dead agent's streams were held ~120 s, and each silent drop of a flapping link left one more
                    # PushRecords stream counted against the agent's concurrent_streams until it was reaped
                    ("grpc.http2.ping_timeout_ms", round(keepalive_timeout_s * 1000)),
                    # what one certificate's connections cost beyond its calls (Quotas' concurrent_calls): a
                    # connection left with no call is closed, and one carries at most so many streams at once
                    ("grpc.max_connection_idle_ms", round(connection_idle_s * 1000)),
                    ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
                    ("grpc.max_allowed_incoming_connections", self.max_connections),
                    # a connection that has not finished its TLS handshake (no certificate checked yet) holds a
                    # descriptor: grpc's default 120 s let anyone, without a certificate, hold every descriptor the
                    # process has (20,000 here) with ~170 idle connections a second, and no agent could connect
                    ("grpc.server_handshake_timeout_ms", int(handshake_timeout_s * 1000)),
                    # grpc sets SO_REUSEPORT on Linux by default: a second service on this port, whatever its
                    # store, then bound silently and the kernel split the agents between the two. Shared only
                    # when asked for (replicas of one store, checked by portguard); otherwise the port is ours alone
                    ("grpc.so_reuseport", 1 if replicas else 0),
                    # grpc grew every stream's receive window from its bandwidth-delay probe (to whole 12-MB batches
                    # on loopback), so it read a batch whole into memory before any handler asked for it: a tenant's
                    # streams waiting for room (MalformedRequests) held theirs all. Off, a stream not being read holds
                    # at most STREAM_WINDOW_BYTES, which an agent's default batch (1 MB) crosses in one round trip, as
                    # with the probe (larger batches take more round trips over a slow path: bench/RESULTS.md)
                    ("grpc.http2.bdp_probe", 0),
                    ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
                ],
                maximum_concurrent_rpcs=100_000,
            )  # one long-lived Connect per agent
            self.hub = StreamHub(self.store, self.control, commands=self.commands) if streams else None
            self.fleet = fleet = FleetServicer(
                self.store,
                self.blobs,
                self.registry,
                self.control,
                self.quotas,
                self.hub,
                self.commands,
                self.revocations,
            )
            rpc.add_FleetServicer_to_server(fleet, self.server)
            self.admin = AdminServicer(
                self.store, self.control, self.registry, self.commands, fleet.limited, self.revocations
            )
            rpc.add_AdminServicer_to_server(self.admin, self.server)
            try:
                self.port = self.server.add_secure_port(f"{host}:{port}", server_credentials(ca, cert, key))
            except RuntimeError:  # grpc: "Failed to bind to address ..."; say by whom, when one of ours
                raise PortTaken(cannot_bind(host, port, replicas, self.announcement)) from None
            log.log(
                logging.INFO if self.max_connections >= FEW_CONNECTIONS else logging.WARNING,
                "at most %d connections at once (one more is closed as it is accepted; the rest of the descriptor "
                "limit kept for the store, blobs and console; raise RLIMIT_NOFILE, hard limit included, for more)",
                self.max_connections,
            )
            self._tick: asyncio.Task | None = None
            self._forget: asyncio.Task | None = None
            self._ticking: asyncio.Future | None = None  # the tick under way in its worker thread
            self._tick_failures = RepeatedFailure(log, "deployment tick", TICK_FAILURE_LOG_S)
            self._retain: asyncio.Task | None = None
            self._retaining: asyncio.Future | None = None  # the retention step under way in its worker thread
            self._stopped = False
            if self.announcement is None:
                self.announcement = Announcement(self.port, *self._identity, host=host).open()
        except BaseException:
            self._close_opened(owns_control=control is not given_control)
            raise

    def _close_opened(self, owns_control: bool) -> None:
        """Close what the server opened (the readers' threads, the control database it opened, the store, the
        port's announcement): after a start that failed midway, and at ``stop()``, so that an embedding process
        may retry, or remove the folder, at once. A ``control`` the caller passed in is the caller's to close."""
        closers: list[Callable[[], object]] = []
        if hasattr(self, "fleet"):
            closers.append(partial(self.fleet._readers.shutdown, wait=False, cancel_futures=True))
            closers.append(self.fleet._row_reads.shutdown)
            closers.append(self.fleet._writers.shutdown)
        if owns_control and getattr(getattr(self, "control", None), "db", None) is not None:
            # each closed once no worker thread uses it (the streams' poll may be reading after its task ended)
            closers.append(
                partial(self.control.close, TICK_STOP_S)
                if hasattr(self.control, "close")
                else self.control.db.close
            )
        if hasattr(self, "store"):
            closers.append(self.store.close)
        if self.announcement is not None:
            closers.append(self.announcement.close)
        for close in closers:
            try:
                close()
            except Exception:  # one that fails leaves the others to close (and a failed start its own error)
                log.warning("closing what the fleet service opened failed", exc_info=True)

    async def start(self) -> None:
        if self.hub is not None:
            await self.hub.start()
        await self.server.start()
        if self.control is not None and hasattr(self.control, "tick"):
            self._tick = asyncio.create_task(self._ticker())
        self._forget = asyncio.create_task(self._forgetter())
        if self.retain_s is not None:
            self._retain = asyncio.create_task(self._retainer())

    def forget_idle(self, idle_s: float | None = None) -> int:
        """Forget the state kept of tenants and agents idle ``idle_s`` or more (``Quotas.forget_idle``) and the
        tenants' gates no call holds (``free_gates``: batches, heartbeats, package reads, admin calls, batches being
        received), on the loop; never one in use. Kept, it grew with every tenant and agent the process ever saw
        (~1.4 KB each besides the parsed certificate, measured), bounded only by the certificates
        issued, on a platform whose agents are replaced over months. ``idle_s``: ``IDLE_FORGET_S`` (10 min) unless
        given. Returns the entries dropped."""
        f, limits = self.fleet, self.quotas.limits
        return (
            self.quotas.forget_idle(IDLE_FORGET_S if idle_s is None else idle_s)
            + free_gates(f._ingests, INGESTS_PER_TENANT)
            + free_gates(f._heartbeats, HEARTBEATS_PER_TENANT)
            + free_gates(f._reads, PACKAGE_READS_PER_TENANT)
            + free_gates(self.admin._gates, ADMIN_CALLS_PER_TENANT)
            + free_gates(self.guard._receiving, limits.tenant_receiving_batches)
            + f.forget_reports(IDLE_FORGET_S if idle_s is None else idle_s)
        )

    async def _forgetter(self) -> None:
        while True:
            await asyncio.sleep(FORGET_EVERY_S)
            try:
                self.forget_idle()
            except Exception:  # a bookkeeping failure must not end the service's other work
                log.exception("forgetting the state of idle tenants and agents failed")

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            # shielded: stop() cancels this loop, and then waits for the tick under way (its thread runs on)
            self._ticking = ticking = asyncio.ensure_future(asyncio.to_thread(self.control.tick))
            ticking.add_done_callback(partial(_tick_done, self._tick_failures))
            with contextlib.suppress(Exception):  # logged by the callback
                await asyncio.shield(ticking)

    def _retire_step(self, after: tuple | None) -> dict:
        assert self.retain_s is not None
        return self.store.retire(
            self._retention_now() - self.retain_s, blobs=self.blobs, after=after, halt=self._retire_halt
        )

    def _retention_now(self) -> float:
        """The time retention cuts at: the wall clock, but never past the start's wall time plus what the monotonic
        clock counted since. A step of the service's clock forward while it runs (a wrong time set, a year ahead)
        is not taken as time gone by: it deleted everything received before it, however young; records received
        after it carry the stepped clock and are retired that much later (deletion cannot be taken back; a restart
        takes the clock as it is then). A step back only retires later."""
        wall, mono = time.time(), time.monotonic()
        counted = self._clocks_at_start[0] + mono - self._clocks_at_start[1]
        if wall > counted + RETAIN_CLOCK_STEP_S and not self._clock_step_told:
            self._clock_step_told = True
            log.warning(
                "retention (--retain-days): the clock is %.0f s ahead of the time counted since the fleet service "
                "started (stepped forward?): retention goes by the time counted until the next start",
                wall - counted,
            )
        return min(wall, counted)

    def _clock_behind_store(self) -> None:
        """A clock in the past at start (an RTC not set yet) stamped what came that much older, and the next start
        with the clock right deleted it at once: the time counted starts no earlier than the latest time the store
        says an agent was seen (stamps that old at least; the error is bounded by the downtime, not the clock's)."""
        seen = self.store.newest_seen()
        wall, mono = self._clocks_at_start
        if seen is not None and seen > wall + RETAIN_CLOCK_STEP_S:
            self._clocks_at_start = (seen, mono)
            log.warning(
                "the clock is %.0f s behind the latest time the fleet store saw an agent: receipts are stamped "
                "from that time on (retention's age); is the clock set?",
                seen - wall,
            )

    def _received_now(self) -> float:
        """The time a record's receipt is stamped with: the wall clock, but never before the start's wall time plus
        what the monotonic clock counted since. The clock set back while the service runs, then right again, stamped
        what it received meanwhile that much older: retention deleted it young. A clock ahead stamps later (kept
        longer). A clock wrong at start is not seen (docs/fleet-scale.md)."""
        return max(time.time(), self._clocks_at_start[0] + time.monotonic() - self._clocks_at_start[1])

    async def _retainer(self) -> None:
        """Retention in the background: a step at a time in a worker thread (never one long transaction), a pass
        over every epoch, then ``retain_every_s`` of rest; a failed step is logged and the pass starts again later."""
        total, after = {"records": 0, "samples": 0, "blobs": 0}, None
        while True:
            # shielded: stop() cancels this loop, and then waits for the step under way (its thread runs on)
            self._retaining = step = asyncio.ensure_future(asyncio.to_thread(self._retire_step, after))
            try:
                got = await asyncio.shield(step)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention (--retain-days): a step failed; the pass starts again later")
                got = {"after": None, "records": 0, "samples": 0, "blobs": 0}
                total = {k: 0 for k in total}
            after = got.pop("after")
            total = {k: total[k] + got[k] for k in total}
            if after is not None:
                await asyncio.sleep(RETAIN_STEP_PAUSE_S)
                continue
            if total["records"]:
                log.info(
                    "retention: %d records, %d samples (%d sample files) received more than %g days ago deleted",
                    total["records"],
                    total["samples"],
                    total["blobs"],
                    (self.retain_s or 0) / 86400,
                )
            total = {k: 0 for k in total}
            await asyncio.sleep(self.retain_every_s)

    async def stop(self, grace_s: float = 1.0) -> None:
        if self._stopped:  # idempotent: a second stop is a no-op
            return
        self._stopped = True
        if self._tick:
            self._tick.cancel()
        if self._forget:
            self._forget.cancel()
        if self._retain:
            self._retain.cancel()
            self._retire_halt.set()
        await self.server.stop(grace_s)
        if self.hub is not None:
            await self.hub.stop()
        # the control database is closed once no tick uses it, nor a deployment step kept during a clone hold being
        # taken again (``_retake_untold``: cut, its write failed as the control state's fault and the step was lost);
        # the store once no retention step uses it (each is a transaction or two). All waited for together,
        # TICK_STOP_S at most in all: one after the other, a stuck tick and a stuck retake took twice that (three
        # times with retention), past what a supervisor's stop timeout allows for
        owns_control = self._owns_control
        ticking = {t for t in (self._ticking,) if t is not None and not t.done()}
        retaking = self.fleet.retakes_under_way() if self.fleet is not None else set()
        retaining = {t for t in (self._retaining,) if t is not None and not t.done()}
        if waited := ticking | retaking | retaining:
            await asyncio.wait(waited, timeout=TICK_STOP_S)
        if any(not t.done() for t in ticking):
            log.warning(
                "the deployment tick still runs %g s after the fleet service stopped; its control database "
                "is left open",
                TICK_STOP_S,
            )
            owns_control = False
        if left := [t for t in retaking if not t.done()]:
            log.warning(
                "%d deployment steps kept during a clone hold still being taken %g s after the fleet service "
                "stopped; its control database is left open",
                len(left),
                TICK_STOP_S,
            )
            owns_control = False
        # the port is free (the announcement closed): the next start on it needs no agreement
        self._close_opened(owns_control)


def _withdrawn_text(entry: dict) -> str:
    """What an agent is told of a withdrawn version it asked for (at a download's start, or stopped in its course)."""
    reason = " ".join(str(entry.get("withdrawn_reason") or "no reason given").split())[:200]
    return (
        f"{str(entry.get('name'))[:80]} {str(entry.get('version'))[:40]} was withdrawn from the registry "
        f"({reason}): the fleet does not send it; do not install it"
    )
