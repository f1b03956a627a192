"""The agent runtime: wires sources → pipelines → model slots → actions, and serves its status.

Start order: the data folder's lock (one agent per ``agent.data_dir``) → model slots (load and verify packages; a slot that cannot load stops start-up with a
clear message, but one whose configured package is refused with nothing installed starts "failed", its pipelines'
items UNSURE, until a package serves it) → sources (each adapter imported only when the config uses it) → pipelines →
local HTTP endpoint. One task per source fans its items out to the pipelines that read it.
``stop()`` (SIGTERM, SIGINT, SIGHUP) reverses it: reading stops, pipelines finish what is queued and in flight,
actions flush (through still-open connections), then sources and slots close.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import errno
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devices import SOURCE_TYPES, load_object
from devices.base import MAX_CAUSES, ConnectionState, Notices
from edge_agent import flapping
from edge_agent.actions import ActionRunner, _output_node, expect_writes
from edge_agent.cloud_text import CloudText
from edge_agent.config import (
    FRAME_WINDOW_WHY,
    AgentConfig,
    AlarmAction,
    OpcUaWriteAction,
    OutputAction,
    WriteMode,
)
from edge_agent.files import atomic_write_json, read_json_state, remove_stale_temps, why_unread
from edge_agent.metrics import Metrics
from edge_agent.models.config import VersionPolicy
from edge_agent.models.slot import FailedAtStart, ModelSlot, NoPackage, SlotError
from edge_agent.opcua_pins import pin_namespaces
from edge_agent.pipelines import Pipeline
from edge_agent.priority import in_lowered_thread, lower_this_thread, opencv_in_calling_threads
from edge_agent.process_info import peak_rss_mb, rss_mb
from edge_agent.status_board import SHOWN_BYTES, SHOWN_ITEMS, Cut, StatusBoard, node_errors_shown
from edge_agent.types import Result, made_up_parts
from model_packager.text import printable
from protocols.events import Event, EventKind
from protocols.json_codec import tag_level_origin
from protocols.topics import shown_topic

if TYPE_CHECKING:
    from edge_agent.http import StatusServer
    from edge_agent.models.manager import ModelManager
    from edge_agent.outbox.selector import SampleSelector
    from edge_agent.outbox.store import Outbox
    from edge_agent.uplink.client import Uplink

log = logging.getLogger(__name__)
# a source not connected for this long (lost, refused, never reached) raises a source_down event: shorter
# outages (a camera's reopening, a broker's restart) are counted and logged by the source, not sent as events
SOURCE_DOWN_AFTER_S = 30.0
# how often the agent resolves the OPC UA sources' host names (``Agent._resolve_plcs``), and waits for an answer
RESOLVE_PLCS_S, RESOLVE_PLCS_TIMEOUT_S = 60.0, 10.0
# <data_dir>/HALTS_FILE: the halts whose source_halted (active) the cloud was told and not yet the end of, so
# that the next agent (a restart, a config reload) says the end of one that ended meanwhile or whose source is
# no longer configured: nothing else would ever end it at the cloud
HALTS_FILE = "source-halts.json"
DOWNS_FILE = "source-down.json"  # the same for source_down: the sources told down and not yet connected again
PUBLISH_DOWNS_FILE = "publish-down.json"  # the same for publish_down: publish connections told down
# the same for the pipelines' episodes (model_failing, items_stale): told begun and not yet ended. A stop ends them
# (Pipeline.stop); one still here at a start was left by an agent killed (or a power loss) during it: its end is
# told then, once, or the cloud's last word on it was its start, for good
EPISODES_FILE = "pipeline-episodes.json"
EPISODE_KINDS = (EventKind.MODEL_FAILING, EventKind.ITEMS_STALE)
# an episode's end that the outbox dropped (its commit failed: a full disk) is recorded again once the outbox writes
# again, looked at this often (an idle outbox finds that out by itself: outbox.store.WRITE_PROBE_S)
EPISODE_RETELL_POLL_S = 1.0
CARRIED_FORGET_S = 2.0  # a start waits at most this long for the commits of the ends it owed (flushed: ~ms)
# a wall-clock time before this (2001-09-09) is a clock never set: a gateway without a battery-backed clock boots
# in 1970 and gets the time from NTP later. A duration reckoned across a restart from such a time, or one that
# comes out negative (the clock stepped back), is unknown (null), not 56 years or -3 s
CLOCK_SET_T = 1_000_000_000.0

LOCK_FILE = "agent.lock"
# slot -> digest of the models a former tenant of this gateway left in its slots (``_models_of_former_tenant``)
FORMER_TENANT_MODELS = "former-tenant-models.json"
# the move a start found, noted before the slots start (``_note_move``): a kill during their start (a long install)
# left no trace of it, the outbox already moved, and the next start named the former tenant's models to the new one
FORMER_TENANT_PENDING = "former-tenant-models.pending.json"
# the folders of the data folder where state files are written with edge_agent.files.atomic_write_json
# (alarm outputs, fleet commands, fleet configs, the model manager's withdrawals)
STATE_FOLDERS = (".", "fleet", "fleet-config", "deployments")
# a source's fan-out gives the loop back every this many items (~1 ms of readings to rules and pipelines):
# without it a flooded source's batch held the loop for seconds (bench/overload_bench.py)
YIELD_EVERY = 64
YIELD_AFTER_S = 0.005  # or after this long (an MQTT batch of 8-MB waveform messages: ~0.1 s of decoding each)
# the tags view (``Agent.tags``: /api/tags) keeps each source's last reading of at most
# TAG_ROWS tags, a tag name counting once more per TAG_NAME_UNIT characters; an array is kept as its shape, type and
# last sample, a text as its first TAG_TEXT_CHARS characters: it shows no more. Kept whole, 60 waveforms of 8-MB
# messages on as many topics held 2 GB (a 4-million-sample float64 array each), and 5,000 tags could hold 160 GB
TAG_ROWS = 5000
TAG_NAME_UNIT = 256
TAG_TEXT_CHARS = 1024
_PLAIN = frozenset((float, int, bool))  # values the tags view keeps as they are, at no cost
# the loop's lag (how late a timer fires: what a rule's trip, a heartbeat or a keep-alive waits on top of its
# own work) is sampled this often and its worst over LOOP_LAG_SPAN_S shown on /status (agent.loop_lag_ms)
LOOP_TICK_S = 0.25
LOOP_LAG_SPAN_S = 60.0


class DataDirInUse(SlotError):
    """Another agent holds this data folder (its outbox, model store, samples). A ``SlotError`` because
    that is the start-up refusal ``edge-agent run`` reports in one line and exits 1 on."""


# a shared lock held a moment on a data folder's lock file (``edge-agent validate --online`` looking whether the
# folder's agent runs) is waited out: the exclusive lock is tried this many times, LOCK_RETRY_S apart, before the
# folder is taken for another agent's (one that holds it is refused LOCK_RETRY_S * 3 = 0.15 s later)
LOCK_TRIES = 4
LOCK_RETRY_S = 0.05
# then, while only shared locks are on it (readers: a stuck validate probe, a backup tool; an agent holds its
# lock exclusive), the agent waits up to this long more before it refuses, saying a reader holds the file
READER_WAIT_S = 5.0


class StoppedBeforeStart(Exception):
    """A stop (SIGTERM, SIGINT, SIGHUP) came while the start waited for the data folder's lock: nothing was
    started, so nothing is stopped; ``run_until_signalled`` ends cleanly (``edge-agent run`` exits 0)."""


class _ReadersOnly(BlockingIOError):
    """The exclusive lock was refused while no agent holds the file: only shared locks (readers) are on it."""


def _only_readers(f) -> bool:
    """Whether only shared locks hold ``f``'s file: a shared lock of our own is granted (and dropped at once)."""
    try:
        fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False
    fcntl.flock(f, fcntl.LOCK_UN)
    return True


def _try_exclusive(f, attempt: int, readers_until: float | None) -> float | None:
    """One try of ``flock(LOCK_EX | LOCK_NB)`` on ``f`` (the ``attempt``-th, from 1): None once the lock is taken;
    else the time (monotonic) until which to go on trying, after ``LOCK_RETRY_S``: while another holds it for a
    moment (``LOCK_TRIES``), then up to ``READER_WAIT_S`` more while only readers hold it. Raises the refusal when an
    agent holds it (``BlockingIOError``) or readers still do after that (``_ReadersOnly``)."""
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        now = time.monotonic()
        if attempt < LOCK_TRIES:
            return now + LOCK_RETRY_S
        if not _only_readers(f):
            raise  # an agent holds it
        if readers_until is None:
            readers_until = now + READER_WAIT_S
            log.info(
                "lock file %s is held by a reader (a shared lock), not by an agent: waiting up to %g s for it",
                getattr(f, "name", f),
                READER_WAIT_S,
            )
        if now >= readers_until:
            raise _ReadersOnly(errno.EWOULDBLOCK, "held by readers") from None
        return readers_until


def _lock_exclusive(f) -> None:
    """``flock(LOCK_EX | LOCK_NB)`` on ``f``, tried again as ``_try_exclusive`` says (a blocking wait: for a caller
    with no event loop; the agent's start waits with ``DataDirLock.acquire_async``)."""
    attempt, until = 1, _try_exclusive(f, 1, None)
    while until is not None:
        time.sleep(LOCK_RETRY_S)
        attempt += 1
        until = _try_exclusive(f, attempt, until if attempt > LOCK_TRIES else None)


async def _lock_exclusive_async(f, stopping: asyncio.Event | None) -> bool:
    """``_lock_exclusive`` without blocking the event loop: False (the lock not taken) once ``stopping`` is set
    meanwhile (a SIGTERM while a reader holds the file: the start ends at once, not after ``READER_WAIT_S``)."""
    attempt, until = 1, _try_exclusive(f, 1, None)
    while until is not None:
        if stopping is not None:
            try:
                async with asyncio.timeout(LOCK_RETRY_S):
                    await stopping.wait()
                return False
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(LOCK_RETRY_S)
        attempt += 1
        until = _try_exclusive(f, attempt, until if attempt > LOCK_TRIES else None)
    return True


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/agent.lock`` held for the agent's lifetime, with the holder's
    pid written in it. Two agents on one folder would write one outbox with the same sequence numbers and
    each lose records; the second is refused instead. The kernel drops the lock when the process dies,
    so a crash leaves nothing to clean up; the file itself is never removed (a removal would let a third
    agent lock a new file while the second still holds the old one)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._f: Any = None

    def acquire(self) -> None:
        """Take the lock, waiting (blocking) as ``_lock_exclusive`` says; ``DataDirInUse`` when it is held."""
        if (f := self._open()) is None:
            return
        try:
            _lock_exclusive(f)
        except OSError as exc:
            self._refused(f, exc)
            return
        self._took(f)

    async def acquire_async(self, stopping: asyncio.Event | None = None) -> bool:
        """``acquire`` waiting on the event loop; False, the lock not taken, when ``stopping`` is set during a wait
        for readers (the agent asked to stop while it waits: nothing was started)."""
        if (f := self._open()) is None:
            return True
        try:
            if not await _lock_exclusive_async(f, stopping):
                f.close()
                return False
        except OSError as exc:
            self._refused(f, exc)
            return True
        self._took(f)
        return True

    def _open(self) -> Any:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return open(self.path, "a+")  # held open until release()
        except OSError as exc:
            # e.g. a read-only folder: what then fails to open (the outbox, a model store) says so
            log.warning(
                "data folder %s: cannot open %s (%s); a second agent on this folder would not be refused",
                self.path.parent,
                LOCK_FILE,
                exc.strerror or exc,
            )
            return None

    def _refused(self, f, exc: OSError) -> None:
        """``DataDirInUse`` for a lock held by another (an agent, or readers past the wait); any other failure
        to lock is a warning and the agent goes on without the lock."""
        if isinstance(exc, _ReadersOnly):
            f.close()
            raise DataDirInUse(
                f"data folder {self.path.parent}: its lock file {self.path} is held by a reader (a shared lock: "
                f"edge-agent validate --online, a backup tool), not by an agent, still after {READER_WAIT_S:g} s; "
                "start the agent again once that process is done (fuser -v on the file names it)"
            ) from None
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
            raise DataDirInUse(
                f"data folder {self.path.parent} is in use by another agent (pid {pid}); "
                "give each agent its own agent.data_dir"
            ) from None
        log.warning(
            "data folder %s: cannot lock %s (%s); a second agent on this folder would not be refused",
            self.path.parent,
            LOCK_FILE,
            exc.strerror or exc,
        )

    def _took(self, f) -> None:
        f.truncate(0)  # "a+": writes go to the end, which is now 0
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._f = f
        # the folder is this process's now: what an earlier one left half-written in it goes
        for folder in STATE_FOLDERS:
            for name in remove_stale_temps(self.path.parent / folder):
                log.info("data folder: removed %s, left half-written by an agent that was killed", name)

    @staticmethod
    def holder(data_dir: Path) -> int | None:
        """The pid of the agent that holds ``data_dir`` now, None when none does (or where it cannot be known:
        no /proc/locks). Read from the kernel's list of locks: nothing is created and no lock taken (a shared
        lock held a moment is what ``edge-agent validate --online`` takes instead, where it can open the file:
        an agent starting then waits it out)."""
        try:
            st = os.stat(Path(data_dir) / LOCK_FILE)
            with open("/proc/locks") as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in lines:  # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2179396 0 EOF" ("->" marks a waiter)
            parts = line.split()
            if len(parts) >= 6 and parts[1:4] == ["FLOCK", "ADVISORY", "WRITE"] and parts[5] == file_id:
                return int(parts[4]) if parts[4].isdigit() else None
        return None

    def release(self) -> None:
        if self._f is not None:
            fcntl.flock(self._f, fcntl.LOCK_UN)
            self._f.close()
            self._f = None


class Agent:
    def __init__(
        self, cfg: AgentConfig, launched_at: float | None = None, data_lock: DataDirLock | None = None
    ) -> None:
        """``launched_at``: when the process was started (``edge-agent run`` passes the kernel's
        start time, so ``first_result_after_s`` includes interpreter, imports and config); an agent
        embedded in a longer-lived process counts from its construction. ``data_lock``: the lock on
        ``cfg.data_dir`` already held by whoever runs this agent (the fleet-config host, which writes in
        the folder before and between its agents); without it the agent takes and frees its own."""
        self.cfg = cfg
        # what its texts for the cloud (events, state reports) may say: no gateway variable, no login
        self.for_cloud = CloudText(cfg)
        self.started_at = time.time()
        self._started_mono = time.monotonic()  # uptime: immune to the wall clock stepping (NTP)
        self.launched_at = launched_at if launched_at is not None else self.started_at
        self.first_result_at: float | None = None
        self.events: collections.deque = collections.deque(maxlen=200)
        self.board = StatusBoard()  # the status page's state: raw arrays kept, encoded only when a page asks
        self.metrics = Metrics()
        keys = [str(cfg.path(k)) for k in cfg.trusted_keys]  # loaded by each install's child process
        self.slots = {
            name: ModelSlot(
                name,
                mc if not mc.package else mc.model_copy(update={"package": str(cfg.path(mc.package))}),
                cfg.data_dir,
                keys,
                on_event=self._event,
                fleet=cfg.cloud is not None,
            )
            for name, mc in cfg.models.items()
        }
        self.sources: dict[str, Any] = {}
        for name, settings in cfg.sources.items():
            cls = load_object(SOURCE_TYPES[settings.type][1])
            self.sources[name] = cls(name, settings)
        pin_namespaces(cfg.data_dir, self.sources, cfg.sources)  # ns= indexes kept across starts
        self.actions = ActionRunner(cfg, self.sources, on_event=self._event, state_dir=cfg.data_dir)
        expect_writes(cfg, self.sources)  # checked after each connect: bad targets named at start
        workers = sum(p.workers for p in cfg.pipelines) or 1
        from edge_agent.sizing import usable_cores

        # below the loop's priority: a rule's trip, heartbeats and keep-alives go first when inference wants
        # more than the cores (edge_agent.priority; bench/saturated_bench.py)
        self.executor = ThreadPoolExecutor(
            # one inference per core this process may use (a container's cpuset: not the machine's count)
            max_workers=min(workers, usable_cores()) or 1,
            thread_name_prefix="infer",
            initializer=lower_this_thread,
        )
        self.pipelines = [
            Pipeline(
                p,
                self.slots[p.model],
                self.executor,
                self._make_on_result(p),
                self.metrics.observe_latency,
                on_event=self._event,
                data_dir=cfg.data_dir,
                source_settings=cfg.sources.get(p.source),
            )
            for p in cfg.pipelines
        ]
        from edge_agent.tags import Forwarder, Rule
        from protocols import topics

        self.forwarders = [
            Forwarder(
                f,
                topics.build_topic(cfg.agent.site, cfg.agent.line, cfg.agent.id, topics.Kind.TAGS, f.name),
                self.sources[f.to].publish if f.to else None,
                self._outbox_append if f.outbox else None,
                functools.partial(_connected, self.sources[f.to]) if f.to else None,
            )
            for f in cfg.forward
        ]
        self.rules = [Rule(r, self.actions.handle) for r in cfg.rules]
        self._source_tasks: list[asyncio.Task] = []
        self.source_notices = {name: Notices(log) for name in self.sources}  # unread, nothing decoded
        self.source_down_after_s = SOURCE_DOWN_AFTER_S
        # a flapping source (edge_agent.flapping): bad for source_down_after_s in total within flap_window_s is
        # an episode; one that flapped ends once good for flap_clear_s without a break, or bad 5% of it at most
        self.flap_window_s = flapping.WINDOW_S
        self.flap_clear_s = flapping.CLEAR_S
        # sources not connected (source_down), and mqtt sources' publish connections not connected
        # (publish_down: what the source publishes, alarms too, cannot reach the broker meanwhile)
        self._downs = _Outages(EventKind.SOURCE_DOWN, cfg.data_dir / DOWNS_FILE)
        self._publish_downs = _Outages(EventKind.PUBLISH_DOWN, cfg.data_dir / PUBLISH_DOWNS_FILE)
        for told in self._publish_downs.carried.values():
            # the client id as the cloud was told it at the start: one from a ``${VAR}`` that changed since
            # (or was dropped) is no value of this config's, so this agent's hiders would let it out in clear.
            # A file from before the hidden form was kept names none.
            shown = told.pop("client_id_told", None)
            told["client_id"] = shown if isinstance(shown, str) else None
        self._down_watch = self._downs.watch  # source -> its not-connected stretches
        # source -> its halted stretches (an OPC UA server halted while its connection may stay up, or coming
        # back at each reconnect: ``_source_halt``), and the last ``halted`` seen of it
        self._halt_watch: dict[str, flapping.FlapWatch] = {}
        self._halt_last: dict[str, dict[str, Any]] = {}
        # source -> the halt the cloud was told of (reason, since, since_t, checks), until its end is sent; kept
        # in HALTS_FILE. Those an agent before this one left (``_halt_carried``) until this one knows their fate:
        # ended (the source healthy for a while, or no longer configured: the end is sent) or going on (adopted)
        self._halt_reported: dict[str, dict[str, Any]] = {}
        self._halts_file = cfg.data_dir / HALTS_FILE
        self._halt_carried = _read_told(self._halts_file)
        # "kind:pipeline" -> the start of a pipeline episode told and not yet ended, kept in EPISODES_FILE
        self._episodes_file = cfg.data_dir / EPISODES_FILE
        self._episodes = _read_told(self._episodes_file)
        # those ended and not yet committed to the outbox: kept in the file until then (a kill between the file's
        # write and the outbox's commit lost the end for good), with the tasks that wait for their commits
        self._episodes_ending: dict[str, dict[str, Any]] = {}
        self._episode_waits: set[asyncio.Task] = set()
        self._episodes_unconfirmed: list[tuple[str, dict[str, Any], int]] = []
        # source of a carried halt -> monotonic time it was first seen connected and not halted
        self._halt_healthy: dict[str, float] = {}
        # this boot (Linux's boot_id): a told file's monotonic start (``mono``) is good for a duration only in the
        # boot that wrote it (an agent restarted, a config reloaded); after a reboot, the wall clock, if sane
        self._boot = _boot_id()
        self.source_items: collections.Counter = collections.Counter()  # items handed out per source
        # source -> the tags its rules, forwards and pipelines name (``_named_tags``), and the read tags whose
        # old name one of them names (``_renamed``), said once each
        self._named: dict[str, dict[str, list[str]]] = {}
        self._renamed_said: set[str] = set()
        # source -> its tags' TAG_NAME_UNITs beyond one each in ``tags``
        self._tag_units: collections.Counter = collections.Counter()
        self.tags: dict[str, dict[str, Any]] = {
            name: {} for name in self.sources
        }  # source -> tag -> last Reading
        self.http: StatusServer | None = None
        self.outbox: Outbox | None = None
        self._former_models: dict[str, str] = {}  # not reported to this tenant (``_models_of_former_tenant``)
        # slot -> (package, package id, version) of the model the former tenant left there, as this start found it
        # serving: blanked in the slot's events to this tenant (``_blank_former``)
        self._former_names: dict[str, tuple[str, str, str]] = {}
        self._noted_before: dict[str, set[str]] | None = (
            None  # the slots' folders noted by ``_note_move_found``
        )
        self._outbox_errors: set[str] = set()  # distinct errors writing a result's record, logged once each
        self.uplink: Uplink | None = None
        self.selector: SampleSelector | None = None
        self.manager: ModelManager | None = None
        # the agent-configuration host (``edge_agent.fleet_config``) when the agent runs under one: it gets the
        # desired agent configuration, and its state is reported and shown on /status
        self.on_desired_config: Callable[[Any], None] | None = None
        self.config_state: dict | None = None
        # OPC UA source -> the pipelines writing through it whose slot, failed, holds its heartbeat (``_watchdog_hold``)
        self.heartbeat_feeds: dict[str, list[Pipeline]] = {}
        # OPC UA source -> pipeline name -> the pipelines on other slots whose writes to a node it writes too are all
        # that holds it (``_writing_through``), each with whether its OK parts' writes may follow this one's, and
        # whether its unjudged parts' may: it holds while one of them does (``heartbeat_holders``)
        self.heartbeat_beside: dict[str, dict[str, list[tuple[Pipeline, bool, bool]]]] = {}
        # OPC UA source with a heartbeat -> the sources its heartbeat's hold was last judged with (``_plc_group``)
        self._hold_group: dict[str, frozenset[str]] = {}
        # OPC UA source -> what is known of its server (``_plc_group``): the addresses its host name resolved to, the
        # ApplicationUri its sessions read with its certificate (an address forgotten once its name no longer leads
        # there and no session is at it: ``_resolve_plcs``)
        self._plc_seen: dict[str, set[tuple[Any, ...]]] = {}
        # OPC UA sources whose host name did not resolve at the last try (``_resolve_plcs``): while their session is
        # not up either, they write to no PLC, and a failed slot's gate through them holds no heartbeat
        self._plc_unresolved: set[str] = set()
        self._recorded_hidden_from = 0  # the outbox's first seq this agent records (``start``)
        if cfg.outbox is not None or cfg.cloud is not None:
            from edge_agent.outbox.selector import SampleSelector
            from edge_agent.outbox.settings import OutboxSettings, SampleSelectionSettings
            from edge_agent.outbox.store import SELF_RECORDED, Outbox  # (sqlite3: only with an outbox)

            self._self_recorded = SELF_RECORDED
            owner = None
            if (
                cfg.cloud is not None
            ):  # the tenant its records are made under: never sent to another (Outbox._own)
                from edge_agent.uplink.tls_check import fleet_identity

                cert = Path(cfg.cloud.cert_file)
                owner = fleet_identity(cert if cert.is_absolute() else Path(cfg.base_dir) / cert)
            self.outbox = Outbox(
                cfg.outbox or OutboxSettings(), cfg.data_dir, on_event=self._event, owner=owner
            )
            self.selector = SampleSelector(cfg.upload or SampleSelectionSettings())
        # (monotonic time, lag s) of the loop's timer, newest last: LOOP_LAG_SPAN_S of them
        self.loop_lags: collections.deque = collections.deque(maxlen=int(LOOP_LAG_SPAN_S / LOOP_TICK_S))
        self._stopped = asyncio.Event()
        self._own_lock = data_lock is None
        self.data_lock = DataDirLock(cfg.data_dir) if data_lock is None else data_lock
        self.stop_asked = asyncio.Event()  # set by ``run``'s signal handlers: a wait at start ends at once

    def _blank_former(self, body: dict) -> dict:
        """A slot's event as the gateway's current tenant is told it: the package and version of the model the
        former tenant left in that slot blanked (a swap from it named its version in ``from_version``; a rollback
        to it in ``to_version``), as in the results, samples and ListAgents. A version is the former tenant's by
        the digest the event gives beside it (``from_digest``, ``to_digest``, ``digest``), never by its text: the
        new tenant's own version of the same number (its own ``1.0.0``) was blanked too, and its deployment steps."""
        slot = body.get("slot")
        names = self._former_names.get(slot) if isinstance(slot, str) else None
        former = self._former_models.get(slot) if isinstance(slot, str) else None
        if names is None or former is None:
            return body
        package, package_id, _ = names
        out = dict(body)
        for version, digest in (
            ("from_version", "from_digest"),
            ("to_version", "to_digest"),
            ("version", "digest"),
        ):
            if out.get(digest) == former:
                out[digest] = ""
                if version in out:
                    out[version] = ""
        for k in ("package",):
            v = out.get(k)
            if (
                isinstance(v, str)
                and v
                and (v in (package, package_id) or Path(v).name.startswith(package_id))
            ):
                out[k] = ""
        return out

    def _event(self, evt: Event | Mapping[str, Any]) -> None:
        evt = Event.coerce(evt)  # a plain {"kind": ...} mapping is checked against EventKind too
        self.events.append(evt)
        fut = None
        if evt.kind in EPISODE_KINDS:
            self._note_episode(evt)
        self.metrics.event(evt)
        fut = self._record_event(evt)
        if evt.kind in EPISODE_KINDS and not evt.get("active"):
            self._forget_episode_when_committed(evt, fut)  # (at once without an outbox)

    def _record_event(self, evt: Event) -> Any:
        """``evt`` handed to the outbox (the future of its append), or None: no outbox open, or an event the outbox
        records itself (corrupt file, drops: with its epoch and the dropped seqs)."""
        if self.outbox is None or not self.outbox.is_open or evt.kind in self._self_recorded:
            return None
        body = evt.to_json_dict()
        if self._former_names:
            body = self._blank_former(body)
        # handed to the outbox's thread: an event never waits on the outbox, nor breaks its caller
        fut = self.outbox.append_soon(
            "alarm" if evt.kind is EventKind.ALARM else "event", self.for_cloud.tree(body)
        )
        if self.uplink:
            # once committed, it ends a batch's fill (max_delay_ms): an alarm does not wait it out
            self.uplink.poke(urgent=fut)
        return fut

    def _note_episode(self, evt: Event) -> None:
        """A pipeline episode begun or ended, kept in EPISODES_FILE (episodes are rare: one write each)."""
        key = f"{evt.kind.value}:{evt['pipeline']}"
        if evt.get("active"):
            self._episodes[key] = {**evt.to_json_dict(), "since": _utc(evt.t)}
            self._save_told(self._episodes_file, self._episodes_ending, self._episodes)
        elif (told := self._episodes.pop(key, None)) is not None:
            # forgotten by the file once its end is committed (_forget_episode_when_committed); until then a kill
            # leaves it there and the next start tells the end
            self._episodes_ending[key] = told

    def _forget_episode_when_committed(self, evt: Event, fut: Any) -> None:
        key = f"{evt.kind.value}:{evt['pipeline']}"
        told = self._episodes_ending.get(key)
        if told is None:
            return
        outbox = self.outbox

        async def wait() -> None:
            appended = fut
            while outbox is not None:
                try:
                    seq = await asyncio.wrap_future(appended)
                except Exception:  # not recorded (logged by the outbox): kept, the next start tells the end
                    return
                if await asyncio.to_thread(outbox.wait_committed, seq, 30.0):
                    self._episode_forgotten(key, told)
                    return
                if not outbox.lost(seq):  # (the outbox closing: looked at again once it is closed, in stop)
                    self._episodes_unconfirmed.append((key, told, seq))
                    return
                # dropped by its commit (a full disk: counted write_failed): the file keeps the end owed, and it is
                # recorded again once the outbox writes again (before, the file forgot it all the same: lost)
                appended = await self._retell_when_writing(evt, key, told)
                # (None: the outbox closed meanwhile, the next start tells the end; or a newer episode superseded it)
                if appended is None:
                    return

        try:
            task = asyncio.get_running_loop().create_task(wait()) if fut is not None else None
        except RuntimeError:  # (no loop)
            task = None
        if task is None:
            self._episode_forgotten(key, told)
            return
        self._episode_waits.add(task)
        task.add_done_callback(self._episode_waits.discard)

    async def _retell_when_writing(self, evt: Event, key: str, told: dict[str, Any]) -> Any:
        """``evt`` recorded again once the outbox writes again (a commit went through since), never while it still
        fails: a retry then was dropped too, one more ``write_failed`` gap for each (every 30 s, before, while the
        disk stayed full). None if the outbox closed meanwhile (the end stays owed: the next start tells it), or
        if the pipeline began a newer episode (or ended one after this end): that one's start is recorded, so this
        end is no longer owed."""
        outbox = self.outbox
        if outbox is not None and outbox.is_open and outbox.write_failing:
            log.info(
                "%s %s: its end was dropped by the outbox (a failed commit); owed (%s), recorded once the outbox "
                "writes again",
                evt.kind.value,
                evt.get("pipeline"),
                EPISODES_FILE,
            )
        while outbox is not None and outbox.is_open and outbox.write_failing:
            await asyncio.sleep(EPISODE_RETELL_POLL_S)
        if outbox is None or not outbox.is_open:
            return None
        if key in self._episodes or self._episodes_ending.get(key) is not told:
            # retold now, this end would come after the newer start (the cloud's newest word on the pipeline:
            # ended, while it is failing again)
            self._episode_forgotten(key, told)
            return None
        log.info(
            "%s %s: the outbox writes again; its end, dropped by a failed commit, is recorded again",
            evt.kind.value,
            evt.get("pipeline"),
        )
        return self._record_event(evt)

    def _episode_forgotten(self, key: str, told: dict[str, Any]) -> None:
        if self._episodes_ending.get(key) is told:
            del self._episodes_ending[key]
            self._save_told(self._episodes_file, self._episodes_ending, self._episodes)

    async def _end_carried_episodes(self) -> None:
        """The pipeline episodes an agent before this one told begun and not ended (it was killed, or the
        gateway lost power, during them): each ended here, told once (its end recorded before the file forgets
        it), whether or not its pipeline is still configured. What the pipeline knew of it went with that
        agent: if the fault goes on, the new agent's pipeline begins another episode."""
        if not self._episodes:
            return
        carried, self._episodes = self._episodes, {}
        waits = set(self._episode_waits)
        for key, told in carried.items():
            kind = next((k for k in EPISODE_KINDS if key.startswith(f"{k.value}:")), None)
            if kind is None:
                continue  # (an altered file)
            pipeline = _told_text(told.get("pipeline")) or _told_text(key.partition(":")[2])
            msg = (
                f"pipeline {pipeline}: the agent restarted during this episode (begun {_told_text(told['since'])}; "
                "the agent before was killed, or the gateway lost power, before it could end it): the episode is "
                "ended; if it goes on, the pipeline begins another"
            )
            log.info("%s", msg)
            # what the start told (a told file's may be anything: only text and numbers reach the cloud)
            if kind is EventKind.MODEL_FAILING:
                reasons = told.get("reasons")
                fields: dict[str, Any] = {
                    "slot": _told_text(told.get("slot")),
                    "model_version": _told_text(told.get("model_version")),
                    "share": _num(told.get("share")),
                    "items": _told_count(told.get("items")),
                    "reasons": {
                        _told_text(k): n
                        for k, v in list(reasons.items())[:20]
                        if (n := _told_count(v)) is not None
                    }
                    if isinstance(reasons, dict)
                    else {},
                    "failed": _told_count(told.get("failed")),  # (those told at its start)
                }
            else:
                fields = {"max_age_ms": _num(told.get("max_age_ms")), "age_ms": None, "dropped": None}
            # forgotten by the file once its end is committed, as a pipeline's own end (``_note_episode``)
            self._episodes_ending[f"{kind.value}:{pipeline}"] = told
            self._event(Event(kind, pipeline=pipeline, active=False, message=msg, **fields))
        if self.outbox is not None and self.outbox.is_open:
            await asyncio.to_thread(self.outbox.flush)  # the ends recorded before the file forgets them
            # their waits end at once (committed): forgotten before the start goes on. One whose commit failed (a full
            # disk) stays owed, recorded again once the outbox writes; before, the file forgot it all the same
            if ends := self._episode_waits - waits:
                await asyncio.wait(ends, timeout=CARRIED_FORGET_S)
        self._save_told(self._episodes_file, self._episodes_ending, self._episodes)

    def _outbox_append(self, kind: str, body: dict) -> None:
        if self.outbox is not None and self.outbox.is_open:
            self.outbox.append_soon(kind, body)
            if self.uplink:
                self.uplink.poke()

    def _make_on_result(self, p):
        action_names = p.actions
        unsure_actions = [n for n in action_names if _names_unsure(self.cfg.actions[n])]
        # an UNSURE part resets the pass signals (``_pass_signals``) as an NG part does, their condition false on it:
        # one the model did not judge (no model serves the slot, the model failed on it: ``model_error``) and one
        # it judged UNSURE (far outside its training inputs, a frozen camera, a sensor fault). Left as the last
        # part left them, a PLC read an OK part's pass for it; a pass on a low score was true of such a part's guess.
        # A window is no part: one judged UNSURE (the machine stopped, its speed changing, a knock, commissioning)
        # leaves a "healthy" output as the last judged window left it; reset, it dropped at every stop and a PLC
        # interlocking a start on it could not start the machine again. Only a failed model resets it there
        passes = _pass_signals(self.cfg, p, unsure_actions)
        # the passes an action on UNSURE may write over (a divert, a level false on UNSURE): reset, then that action's
        # value written, so their next result writes its value again (``written_over``)
        left = _pass_signals(self.cfg, p, unsure_actions, left=True)
        unjudged_actions = [*passes, *unsure_actions]
        windowed = p.window is not None

        async def on_result(res: Result, item) -> None:
            # the actions first (they act on the line at once), then the outbox: its record whatever the
            # actions did. Before, an error dispatching them (or in the metrics, the board) skipped the result's
            # record and sample: counted (errors.action_dispatch) and the cloud missed it for good
            try:
                if self.first_result_at is None:
                    self.first_result_at = time.time()
                    self._event(
                        Event(
                            EventKind.FIRST_RESULT,
                            t=self.first_result_at,
                            after_s=round(self.first_result_at - self.launched_at, 3),
                        )
                    )
                self.metrics.result(res)
                self.board.keep(res, item)
                if res.verdict != "UNSURE":
                    await self.actions.handle(action_names, res, item)
                elif windowed and "model_error" not in res.outputs:  # not judged: only actions naming UNSURE
                    if unsure_actions:
                        await self.actions.handle([*left, *unsure_actions], res, item, written_over=left)
                elif unjudged_actions:  # never a reject: the actions naming UNSURE, and the passes reset
                    await self.actions.handle(unjudged_actions, res, item, passes, left)
            except Exception:
                if self.outbox is not None:
                    await self._keep(res, item)
                raise  # counted by the pipeline (errors.action_dispatch); a cancel (the agent stopping) stays one
            if self.outbox is not None:
                await self._keep(res, item)

        return on_result

    async def _keep(self, res: Result, item) -> None:
        """The result's outbox record, then its sample. An error writing them is the outbox's: counted under the
        pipeline's ``errors.outbox_write``, each distinct one logged once. Before, it was raised to the pipeline
        and counted (and logged on every result) as ``action_dispatch``, an error handing the result to its
        actions, which the actions had not had."""
        try:
            await self._to_outbox(res, item)
        except Exception as exc:
            for p in self.pipelines:
                if p.name == res.pipeline:
                    p.stats.errors["outbox_write"] += 1
            cause = f"{type(exc).__name__}: {exc}"[:300]
            if cause not in self._outbox_errors and len(self._outbox_errors) < MAX_CAUSES:
                self._outbox_errors.add(cause)  # a full disk fails every result: said once per distinct error
                log.error(
                    "pipeline %s: a result's outbox record or sample could not be written (counted under the "
                    "pipeline's errors.outbox_write; each distinct error logged once): %s",
                    res.pipeline,
                    cause,
                    exc_info=exc,
                )

    def _made_by_former_tenants_model(self, res: Result) -> bool:
        """Whether ``res`` was made by a model the gateway's former tenant left (``_models_of_former_tenant``) in its
        own pipeline's slot. Any noted slot serving a model of that name and version counted: the new tenant's own
        slot of the same package (the same digest) had its results sent nameless."""
        slot = next((p.slot for p in self.pipelines if p.name == res.pipeline), None)
        if slot is None or (digest := self._former_models.get(slot.name)) is None:
            return False
        return slot.digest == digest and slot.version == res.model_version and slot.manifest.name == res.model

    async def _to_outbox(self, res: Result, item) -> None:
        body = res.to_json_dict()
        if self._former_models and self._made_by_former_tenants_model(res):
            # the new tenant is not told the former tenant's package nor its version (its record and sample);
            # the line's own outputs (MQTT, OPC UA, ...) still name them
            body["model"], body["model_version"] = "", ""
        assert self.outbox is not None  # called only when there is one
        await self.outbox.append_async("result", body)
        # (an item the model failed on: its failure, ``outputs.model_error``, as the selector counts it)
        reason = self.selector.choose(res) if self.selector else None
        nbytes = 0
        if reason:
            data, ext = await asyncio.to_thread(_encode_sample, item)
            await self.outbox.append_async(
                "sample", {**body, "reason": reason, "agent": self.cfg.agent.id}, sample=data, sample_ext=ext
            )
            nbytes = len(data)
        if self.uplink:
            self.uplink.poke(
                nbytes=nbytes
            )  # images: a batch full by its bytes goes without waiting out its fill

    def _moved(self) -> bool:
        return getattr(self.outbox, "former_tenant", None) is not None

    def _installed_folders(self) -> dict[str, set[str]]:
        """slot -> the names of the folders its store holds now (``<name>-<version>-<digest[:12]>``)."""
        held: dict[str, set[str]] = {}
        for n, s in self.slots.items():
            try:
                held[n] = {p.name for p in s.store.root.iterdir() if p.is_dir()}
            except OSError:
                held[n] = set()
        return held

    def _note_move_found(self, former: str) -> None:
        """``Outbox.on_move``: the gateway moved from tenant ``former``, noted (``_note_move``) before the outbox
        holds its store and records the new owner."""
        self._noted_before = self._note_move()

    def _note_move(self) -> dict[str, set[str]]:
        """The folders the slots hold before this start (``_installed_folders``), kept with the former tenant in
        ``<data_dir>/former-tenant-models.pending.json`` before any slot starts: a start killed before its
        ``_models_of_former_tenant`` (a slot's long install) finishes the note at the next start, whose outbox no
        longer says the gateway moved."""
        from edge_agent.files import atomic_write_json

        before = self._installed_folders()
        former = getattr(self.outbox, "former_tenant", None)
        owner = getattr(self.outbox, "owner", None)
        try:
            # with the tenant moved to ("to"): the note is written before the outbox holds the former store and
            # records the new owner, so a start cut short there and followed by a start as the former tenant (the
            # move given up) finds it too; only a start as "to" finishes it (``_models_of_former_tenant``)
            atomic_write_json(
                Path(self.cfg.data_dir) / FORMER_TENANT_PENDING,
                {
                    "tenant": former,
                    "to": owner[0] if owner else None,
                    "before": {n: sorted(f) for n, f in before.items()},
                },
            )
        except OSError as exc:
            log.warning(
                "cannot note the move from tenant %r in %s (%s): a start cut short before the slots started "
                "would not know the former tenant's models",
                former,
                Path(self.cfg.data_dir) / FORMER_TENANT_PENDING,
                exc,
            )
        return before

    def _models_of_former_tenant(self, before: dict[str, set[str]] | None = None) -> dict[str, str]:
        """slot -> digest of the models a former tenant of this gateway left in its slots: not reported to the
        current tenant (``_cloud_status``) until it deploys its own. Noted in ``<data_dir>/former-tenant-models.json``
        at the start whose certificate names another tenant than the outbox's (``Outbox.former_tenant``), read
        back at the next starts. Moved back to the tenant the note names, its models are its own again."""
        from edge_agent.files import atomic_write_json, read_json_state

        path = Path(self.cfg.data_dir) / FORMER_TENANT_MODELS
        pending = Path(self.cfg.data_dir) / FORMER_TENANT_PENDING
        former = getattr(self.outbox, "former_tenant", None)
        owner = getattr(self.outbox, "owner", None)
        if (
            former is None
        ):  # a start that found the move and was cut short before it noted the models: finish it
            try:
                kept = read_json_state(pending)
                noted_former = str(kept["tenant"])
                noted_to = kept.get("to")
                noted_before = {str(n): {str(f) for f in fs} for n, fs in kept["before"].items()}
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("%s: %s; removed", pending, exc)
                pending.unlink(missing_ok=True)
            else:
                current = owner[0] if owner else None
                if current is not None and current != noted_former and noted_to in (None, current):
                    former, before = noted_former, noted_before
                else:
                    # the start that noted the move was cut short before the outbox recorded the new owner, and
                    # this start is not that tenant's (the former tenant's again: the move given up): acted on, it
                    # removed this tenant's own pending deployments and withdrawals and hid its own models from it
                    log.info(
                        "%s: the move from tenant %r to %r was not completed (this start is tenant %r's): removed",
                        pending,
                        noted_former,
                        noted_to,
                        current,
                    )
                    pending.unlink(missing_ok=True)
        if former is not None:
            from edge_agent.models.manager import forget_former_tenant

            # the former tenant's pending deployments and withdrawals (its deployment ids, versions, its admin's
            # reasons) are not the new tenant's to hear: removed before the model manager starts
            if gone := forget_former_tenant(Path(self.cfg.data_dir), former):
                log.info(
                    "moved from tenant %r: removed its deployments' state (%s)",
                    former,
                    ", ".join(sorted(gone)),
                )
            digests = {
                n: d
                for n, s in self.slots.items()
                if (d := s.status().get("digest"))
                and any(f.endswith(f"-{d[:12]}") for f in (before or {}).get(n, ()))
            }
            try:
                noted = read_json_state(path)
                if owner is not None and noted["tenant"] == owner[0]:
                    # moved back to the tenant the noted models were left by: they are its own again
                    digests = {n: d for n, d in digests.items() if noted["digests"].get(n) != d}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                pass
            atomic_write_json(path, {"tenant": former, "digests": digests})
            pending.unlink(missing_ok=True)
            if digests:
                log.warning(
                    "model slots %s hold models the gateway's former tenant left: they still serve, but are not "
                    "reported to this tenant (no package, version or digest) until it deploys its own; clear "
                    "them as docs/fleet-control.md says (Moving a gateway to another tenant)",
                    ", ".join(sorted(digests)),
                )
            return digests
        try:
            got = read_json_state(path)["digests"]
            return {str(k): str(v) for k, v in got.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def _cloud_status(self) -> dict:
        from edge_agent.engines import openvino_available
        from model_packager.cpu import cpu_flags, int8_path

        labels = {
            "site": self.cfg.agent.site,
            "line": self.cfg.agent.line,
            "engines": "onnxruntime,openvino" if openvino_available() else "onnxruntime",
            "cpu": int8_path(),
            "cpu_flags": " ".join(cpu_flags()),
        }
        slots = []
        for s in self.slots.values():
            st = s.status()
            if st.get("selection"):  # which form serves on this CPU, and why (INT8 off: the deviation)
                labels[f"form.{st['slot']}"] = st["selection"]["summary"][:200]
            last = st.get("last_swap") or {}
            if st["digest"] and self._former_models.get(st["slot"]) == st["digest"]:
                slots.append(
                    {
                        "slot": st["slot"],
                        "package": "",
                        "version": "",
                        "digest": "",
                        "status": st["state"],
                        "reason": "a model the gateway's former tenant left: not reported",
                    }
                )
                continue
            slots.append(
                {
                    "slot": st["slot"],
                    "package": st["package"] or "",
                    "version": st["version"] or "",
                    "digest": st["digest"] or "",
                    "status": st["state"],
                    # the version and package it names are sent in clear beside it
                    "reason": self.for_cloud.text(  # (a slot with no package yet has no swap: why it waits)
                        last.get("reason") or st["failed"] or "", (st["version"] or "", st["package"] or "")
                    ),
                }
            )
        health = {
            p.name: {
                "rate": p.stats.rate(),
                "results": p.stats.results,
                "ng": p.stats.ng,
                # UNSURE results, and those of them the model failed on (not judged): a blind model is not a
                # line without defects
                "unsure": p.stats.unsure,
                "model_failed": p.stats.model_failed,
                "model_failing": p.failures.active,
                "errors": sum(p.stats.errors.values()),
                "p50_ms": p.stats.percentiles()["p50"],
            }
            for p in self.pipelines
        }
        self._baseline_health(health)
        return {
            "labels": labels,
            "slots": slots,
            "health": self.for_cloud.tree(health),
            "config": {
                k: self.for_cloud.text(v) if k == "reason" and isinstance(v, str) else v
                for k, v in (self.config_state or {}).items()
                if k in ("source", "deployment_id", "digest", "status", "reason")
            },
        }

    def _baseline_health(self, health: dict) -> None:
        """Each baseline's state in the pipeline health the fleet sees (`cloud-trainer baseline status`)."""
        from edge_agent.maintenance.cli import fleet_summary

        for p in self.pipelines:
            if p.baseline is not None:
                health[p.name]["baseline"] = fleet_summary(p.baseline.status())

    def _handles_images(self) -> bool:
        """Whether this agent reads frames (a camera) or runs an image model (once its slots started): only then
        is OpenCV loaded at all (an agent of tags and signals imports no cv2: test_lean_agent_steady.py)."""
        if any(s.type == "camera" for s in self.cfg.sources.values()):
            return True
        return any(
            slot.version is not None and slot.manifest.preprocessing.kind == "image"
            for slot in self.slots.values()
        )

    async def start(self) -> None:
        # before anything writes in the folder: DataDirInUse; a wait for readers of the lock file is given up
        # when a stop is asked meanwhile
        if self._own_lock and not await self.data_lock.acquire_async(self.stop_asked):
            raise StoppedBeforeStart(self.data_lock.path)
        if self.outbox is not None:
            # outbox-held/ is pruned only once the move this start finds is noted (below): a kill during the
            # prune inside open forgot the move, and the new tenant was told the former tenant's models
            self.outbox.defer_held_bound = True
            # the move a start finds is noted from inside the outbox's open, before its store is held and the new
            # owner recorded: noted after the open, a kill between the two (~20 ms) forgot the move, and the former
            # tenant's pending deployment was settled to the new tenant
            self.outbox.on_move = self._note_move_found
            await asyncio.to_thread(self.outbox.open)  # a store that cannot open stops start-up
            # what this agent records from here on is hidden as it is recorded (``_event``); the uplink hides
            # what was stored before (a former version's backlog) as it sends it
            self._recorded_hidden_from = self.outbox.last_seq + 1
        # the folders the slots held before this start: only a model installed under the former tenant is its
        # (one the operator gave for the new tenant after clearing models/ is installed at this start)
        before = self._noted_before if self._noted_before is not None else {}
        if self._moved() and self._noted_before is None:
            before = await asyncio.to_thread(self._note_move)
        if self.outbox is not None:
            self.outbox.defer_held_bound = False
            await asyncio.to_thread(self.outbox.bound_held)
        for slot in self.slots.values():
            try:
                await slot.start()
            except NoPackage as exc:  # nothing can fill it: a config error, naming the file as validate does
                raise NoPackage(f"{self.cfg.where}: models.{slot.name}: {exc}") from exc
            except FailedAtStart as exc:
                # its package refused, nothing installed: every other slot and pipeline serves, and the fleet
                # connection is made, to deploy one that passes (a SlotError ended the start, at every restart)
                if slot.config.package is None:  # (no package yet: a new gateway following the fleet)
                    log.warning(
                        "%s: slot %s is failed, and its pipelines judge nothing (each item UNSURE, model_error "
                        "no_model) until the fleet deploys a package to it",
                        printable(str(exc), 1500),
                        slot.name,
                    )
                else:
                    log.warning(
                        "%s; nothing is installed in slot %s to serve instead: it is failed, and its pipelines "
                        "judge nothing (each item UNSURE, model_error no_model) until a package that passes serves "
                        "it (fix models.%s.package and restart the agent%s)",
                        printable(str(exc), 1500),
                        slot.name,
                        slot.name,
                        ", or deploy one to the slot from the fleet"
                        if slot.config.version_policy is VersionPolicy.FOLLOW_FLEET
                        and self.cfg.cloud is not None
                        else "",
                    )
            self.metrics.model(slot)
        self._former_models = await asyncio.to_thread(self._models_of_former_tenant, before)
        self._former_names = {
            n: (s.manifest.name, s.manifest.package_id, s.version or "")
            for n, d in self._former_models.items()
            if (s := self.slots.get(n)) is not None and s.digest == d
        }
        if self._handles_images():
            # the engines and the cameras own the gateway's cores: OpenCV's worker spun beside them
            opencv_in_calling_threads()
        self._check_sizing()
        for p in self.pipelines:
            if p.slot.version is not None:
                p.prepare()
            else:  # its slot failed at the start (its package refused, nothing installed): prepared once one serves
                p.slot.swap_checks[p.name] = p.refusal
        for name, src in self.sources.items():
            if hasattr(src, "reader_init"):  # a camera: its decoding runs below the loop, as inference does
                src.reader_init = lower_this_thread
            if hasattr(src, "heartbeat_hold") and getattr(src.settings, "heartbeat", None) is not None:
                # (judged at each beat: a source naming this PLC another way is known as its name resolves)
                src.heartbeat_hold = functools.partial(self._watchdog_hold, name)
                self._hold_group[name] = self._plc_group(name)
                if feeds := self._writing_through(name):
                    self.heartbeat_feeds[name] = feeds
            await src.start()
            readers = [p for p in self.pipelines if p.s.source == name]
            if not hasattr(src, "items") or not (readers or _produces(src.settings)):
                continue  # e.g. an mqtt source only published through
            if (
                not readers
                and not any(t.s.source == name for t in self.forwarders)
                and not any(r.s.source == name for r in self.rules)
            ):
                # Drained all the same: a source left unread would fill its queue, and a Sparkplug host
                # would decode no birth and ask for no rebirth while `received` climbs
                # an HTTP camera's MJPEG parts and snapshots and a folder's files are decoded when a pipeline
                # takes them, and the checks of their pixels (damaged, blank, frozen) run then: unread, they are
                # never checked (``_kept_compressed``)
                self.source_notices[name].note(
                    "unread",
                    "source %s: no pipeline reads it, so its %s; add a pipeline with source: %s, or remove its %s",
                    name,
                    "frames are dropped (counted as 'unread'), an HTTP camera's or a folder's undecoded: none is "
                    "checked (damaged, blank, frozen), and it is never called frozen"
                    if _kept_compressed(src)
                    else "data is dropped after decoding (counted as 'unread')",
                    name,
                    "subscriptions"
                    if src.settings.type == "mqtt"
                    else "nodes"
                    if src.settings.type == "opcua"
                    else "definition",
                    n=0,
                )
            self._source_tasks.append(
                asyncio.create_task(self._fan_out(name, src, readers), name=f"source-{name}")
            )
        self._source_tasks.append(asyncio.create_task(self._watch_sources(), name="watch-sources"))
        if self._hold_group and (named := self._named_plcs()):
            self._source_tasks.append(asyncio.create_task(self._resolve_plcs(named), name="resolve-plcs"))
        self._source_tasks.append(asyncio.create_task(self._watch_loop(), name="watch-loop"))
        await self._end_carried_episodes()
        for p in self.pipelines:
            p.start()
        for f in self.forwarders:
            f.start()
        self.actions.start()  # alarm outputs left raised by an agent before, for alarms no longer configured
        if self.cfg.cloud is not None:
            from edge_agent.models.manager import ModelManager
            from edge_agent.uplink.client import Uplink
            from edge_agent.uplink.commands import CommandRunner

            assert self.outbox is not None  # a cloud section always opens one (__init__)
            owner = getattr(self.outbox, "owner", None)
            manager = self.manager = ModelManager(
                self.slots, self.cfg, on_event=self._event, tenant=owner[0] if owner else None
            )
            uplink = self.uplink = Uplink(
                self.cfg.cloud,
                self.outbox,
                Path(self.cfg.base_dir),
                self._cloud_status,
                self._on_desired,
                CommandRunner(self.cfg, on_event=self._event),
                for_cloud=self.for_cloud.text,
                event_for_cloud=self.for_cloud.payload,
                recorded_hidden_from=self._recorded_hidden_from,
            )
            manager.uplink = uplink
            await uplink.start()
        if self.cfg.http.enabled:
            from edge_agent.http import StatusServer

            self.http = StatusServer(
                self, self.cfg.http.host, self.cfg.http.port, allowed_hosts=self.cfg.http.allowed_hosts
            )
            self.http.start()
        self._event(Event(EventKind.STARTED, pipelines=[p.name for p in self.pipelines]))
        log.info(
            "agent %s started: %d sources, %d models, %d pipelines%s",
            self.cfg.agent.id,
            len(self.sources),
            len(self.slots),
            len(self.pipelines),
            f"; status on http://{self.cfg.http.host}:{self.http.port}/" if self.http else "",
        )

    def _writing_through(self, source: str) -> list[Pipeline]:
        """The pipelines whose slot, failed, holds ``source``'s heartbeat (``_watchdog_hold``): those with an action
        writing through it (an OPC UA write, an alarm's mirror) while the slot has no model. A frame pipeline's items
        are then UNSURE results, no score, ``model_error: no_model``, handed only to the actions whose condition names
        UNSURE (``_make_on_result``). It holds nothing only where every such action is handed them and acts on them,
        and one of them tells the PLC the part is not judged: it does not act on a part judged OK (a reject gate on
        ``verdict: {in: [NG, UNSURE]}``). A gate on NG alone, or one that names no UNSURE (``ne: OK``, no ``when``: a
        'done' signal), is never updated by them; one acting on every part tells the PLC nothing of the verdict,
        which may go out another way (MQTT, another PLC) or nowhere. An action on OK parts and not on NG ones (a pass
        signal, ``verdict: OK``) leaves an unjudged part as it leaves an NG part, without it: it does not count (it
        held the heartbeat beside a reject gate on NG and UNSURE, every part rejected and the line stopped). A
        condition on what only a judged part has (its score, label, model, engine) may act on an OK part
        (``may_match``), and then tells only where it acts on NG parts (``may_match_ng``: one of another label, the
        highest score, any margin and remaining life, and not an OK part of that label unless its verdict acts on every
        NG part) and not on every OK part (``may_match_each``: a part of score 0.0, of each label it names or
        another, whatever its model): ``{any: [{verdict: UNSURE}, {score: {gte: 0}}]}`` acts on every part (it
        released the heartbeat) and so may ``{any: [{verdict: UNSURE}, {model: part-inspection}]}``; a reject gate
        that also rejects a defect label or a score band (``{score: {gte: 0.4}}``) leaves the other OK parts passed
        and tells (it held the heartbeat, every part rejected); a pass that also takes UNSURE (``{any: [{verdict:
        UNSURE}, {label: ok}]}``) passes an unjudged part as an OK part (it released the heartbeat). An alarm's
        mirror is raised after ``raise_after`` matching results: unless that is 1, it tells the PLC of no single
        part (the parts before pass untold; it released the heartbeat alone). Two actions acting on such a part that
        write one node different values, one of them a value the node holds for an OK part (an action's on OK parts,
        a reset), leave it the last one's (it released the heartbeat). A windowed pipeline gives
        no result then. The PLC is judged whole: the actions through any OPC UA source reaching it count
        (``_plc_group``: a reject gate through a second session let the heartbeat run), a node however spelt
        (``node_classes``: ``nsu=`` and ``ns=``), and a node another pipeline writes holds where that pipeline may leave there, for its OK parts, a value other than those written for the
        unjudged part (a reset false after its true: the PLC read false for it). A pass signal writing its reset for
        an unjudged part (``_pass_signals``) tells the PLC it is not passed: alone too, it holds nothing."""

        from devices.opcua.settings import node_classes
        from edge_agent.conditions import (
            MODEL_FIELDS,
            compile_condition,
            may_match,
            may_match_each,
            may_match_ng,
        )

        # the sources reaching this PLC (two on one endpoint: another session, other settings): one PLC's outputs and
        # watchdog, whichever session writes them
        same = self._plc_group(source)
        # one node however spelt (ns= and nsu=, i=05): the PLC reads what was written last through either
        nodes = node_classes(
            node_id
            for p in self.pipelines
            for a in (self.cfg.actions.get(n) for n in p.s.actions)
            if a is not None
            and (node_id := getattr(a, "node_id", None))
            and any(getattr(a, field) in same for field in a.source_fields)
        )
        found = []
        for p in self.pipelines:
            unjudged, judged_ok, judged_ng, ng_high = made_up_parts(p.s.name, p.s.source)
            mine = [
                (n, a)
                for n, a in ((n, self.cfg.actions.get(n)) for n in p.s.actions)
                if a is not None and any(getattr(a, field) in same for field in a.source_fields)
            ]
            through = [
                (
                    _names_unsure(a),
                    compile_condition(a.when)(unjudged),
                    may_match(a.when, judged_ok, MODEL_FIELDS),
                    # an NG part scores above its slot's threshold, whatever it is: a pass on a low score acts on none
                    may_match(a.when, ng_high, MODEL_FIELDS - {"score", "anomaly_score"}),
                    may_match_ng(a.when, judged_ng),
                    may_match_each(a.when, judged_ok),
                    # an alarm's mirror is set after raise_after matching results: the parts before pass untold
                    not isinstance(a, AlarmAction) or a.raise_after == 1,
                )
                for _, a in mine
            ]
            # two actions acting on an unjudged part that write one node different values, one of them a value the
            # node holds for an OK part (an action's on OK parts, or one's reset): the last one written wins (a
            # reject gate's true, then a pass on UNSURE's false, or a code 1 on UNSURE beside 1 on OK: the PLC read it
            # as it reads an OK part); a result code (2 on NG and UNSURE, 3 on UNSURE) is no OK part's
            written: dict[tuple, set[str]] = {}
            passed: dict[tuple, set[str]] = {}
            # (one whose node an output on UNSURE writes after it for an unjudged part, a divert's code: that output's
            # value is what the PLC reads, not two)
            unsure = [n for n in p.s.actions if _names_unsure(self.cfg.actions[n])]
            resets = set(_pass_signals(self.cfg, p.s, unsure)) - set(
                _pass_signals(self.cfg, p.s, unsure, left=True, acting_on=unjudged)
            )
            for (name, a), (handed, on_unjudged, on_ok, *_) in zip(mine, through, strict=True):
                if not (node_id := getattr(a, "node_id", None)):
                    continue
                node = nodes[node_id]
                # an alarm's mirror: true raised, false cleared
                value = _as_written(getattr(a, "value", True))
                if handed and on_unjudged:
                    written.setdefault(node, set()).add(value)
                if on_ok:
                    passed.setdefault(node, set()).add(value)
                # a reset is written as its condition stops holding: for an OK part, maybe; and by a pass signal for
                # an unjudged part (``_pass_signals``)
                if (reset := _reset_written(a)) is not None:
                    passed.setdefault(node, set()).add(reset)
                    if name in resets:
                        written.setdefault(node, set()).add(reset)
            told = [
                # a pass signal writing its reset for an unjudged part (``_pass_signals``) tells the PLC the part is not
                # passed, as an NG part leaves it (one writing nothing then is left out: it keeps an OK part's pass)
                (True, True, True)
                if reset
                # it tells of the part where it acts on no OK part, or acts on NG parts (a reject gate) and leaves
                # some OK part out: one acting on UNSURE and OK parts and not on NG ones passes an unjudged part
                else (handed, on_unjudged, each and (not on_ok or (rejects and not on_every_ok)))
                for reset, (handed, on_unjudged, on_ok, on_ng, rejects, on_every_ok, each) in zip(
                    [name in resets and _reset_written(a) is not None for name, a in mine],
                    through,
                    strict=True,
                )
                if handed or not on_ok or on_ng or reset  # (a pass signal writing nothing left out)
            ]
            found.append((p, through, written, passed, told))
        held = []
        beside = self.heartbeat_beside[source] = {}
        for p, through, written, passed, told in found:
            if not through:
                continue
            # a node another pipeline writes too (two cameras on one station, one reject node): a value it leaves
            # for its OK part, written after this one's for an unjudged part, is what the PLC reads for it. One
            # judging no part either (on this pipeline's slot, or on another slot failed then) writes what it writes
            # for its own unjudged parts (two cameras on failed slots, one reject gate: each part rejected, the
            # heartbeat held all the same): one on another slot holds while its writes then may follow
            # (``heartbeat_holders``)
            others = [
                (
                    q,
                    any(theirs.get(n, set()) - v for n, v in written.items()),
                    any(theirs_unjudged.get(n, set()) - v for n, v in written.items()),
                )
                for q, _, theirs_unjudged, theirs, _ in found
                if q is not p
            ]
            if (
                p.s.window is not None
                or any(
                    len(values) > 1 and values & passed.get(node, set()) for node, values in written.items()
                )
                or any(unjudged for q, _, unjudged in others if q.s.model == p.s.model)
                or not all(handed and on_unjudged for handed, on_unjudged, _ in told)
                or not any(tells for _, _, tells in told)
            ):
                held.append(p)
            elif judging := [o for o in others if o[0].s.model != p.s.model and (o[1] or o[2])]:
                held.append(p)
                beside[p.name] = judging
        return held

    def _plc_group(self, source: str) -> frozenset[str]:
        """The OPC UA sources reaching ``source``'s PLC, whose writes its heartbeat's hold judges (``_writing_through``):
        those on its endpoint however spelt (``_plc_of``), those whose host name resolves to an address another of
        them names or resolves to (``_resolve_plcs``), and those whose server gave one ApplicationUri with one
        certificate at a connect, one after another: a reject gate through ``plc.local`` beside a heartbeat on its
        address ``10.0.0.5`` was another PLC's, and the heartbeat ran while no part was judged. A source named by a
        host name not resolved yet, whose server gave no ApplicationUri and certificate either, may be any PLC on its
        port: it is taken as one with each until its name resolves (never as another, which lets the heartbeat run
        unjudged), but while the resolver says the name does not resolve and its session is not up, it reaches no
        PLC. The ApplicationUri alone is no PLC's: PLCs of one make keeping its default one were one PLC to the hold,
        a slot with no model writing to one holding the other's heartbeat too. A PLC reached at two addresses whose
        server has no certificate is two; PLCs sharing a certificate and ApplicationUri (one image copied) are one."""
        keyed = {n: k for n, s in self.cfg.sources.items() if (k := _plc_of(s)) is not None}
        if source not in keyed:
            return frozenset({source})
        for n in keyed:  # (read at each connect: None before one, or where the server names none)
            src = self.sources.get(n)
            uri = getattr(getattr(src, "namespace_pins", None), "server", None)
            # with the certificate the server gave the session (its first in a chain; none before the session, or
            # where the server has none): every asyncua server reads ``urn:freeopcua:python:server``, as PLCs of one
            # make whose device name was left at its default may, and one line's failed slot held all their heartbeats
            cert = getattr(src, "server_certificate", None)
            if uri and isinstance(cert, bytes) and cert:
                self._plc_seen.setdefault(n, set()).add(("server", uri, hashlib.sha256(cert).hexdigest()))
            # the address its session reached (a name's, at once: the resolver's next round may be a minute away)
            if getattr(src, "state", None) is ConnectionState.CONNECTED and (
                at := getattr(src, "peer_address", None)
            ):
                from devices.opcua.settings import plc_at

                self._plc_seen.setdefault(n, set()).add(("plc", plc_at(at[0], at[1])))
        known = {n: {("plc", k), *self._plc_seen.get(n, ())} for n, k in keyed.items()}
        group, keys = {source}, set(known[source])
        while grown := [n for n, k in known.items() if n not in group and k & keys]:
            group.update(grown)
            keys.update(*(known[n] for n in grown))
        # a host name not resolved yet (nor its server's ApplicationUri and certificate read) may lead to any PLC on
        # its port; one the resolver said it cannot resolve, its session not up, leads to none: taken as any, a gate
        # through a name that never resolves (DNS down, an mDNS name with no mDNS resolver) held every other PLC's
        # heartbeat on its port, each healthy line stopped by its watchdog for as long as that name did not resolve
        unknown = {
            n
            for n, k in known.items()
            if len(k) == 1
            and keyed[n][1]
            and _host_named(keyed[n][0])
            and (
                n not in self._plc_unresolved
                or getattr(self.sources.get(n), "state", None) is ConnectionState.CONNECTED
            )
        }
        port = keyed[source][1]
        return frozenset(
            group | {n for n in keyed if keyed[n][1] == port and (source in unknown or n in unknown)}
        )

    def _named_plcs(self) -> dict[str, tuple[str, int]]:
        """The OPC UA sources whose endpoint names their PLC by a host name: source -> (name, port)."""
        return {
            n: k
            for n, s in self.cfg.sources.items()
            if (k := _plc_of(s)) is not None and k[1] and _host_named(k[0])
        }

    async def _resolve_plcs(self, named: dict[str, tuple[str, int]]) -> None:
        """Resolve the host names of ``named`` (``_named_plcs``) as a session's connect does, now and every
        RESOLVE_PLCS_S, for ``_plc_group`` to know the PLC each leads to (a name resolved to several addresses
        leads to each; one resolved again elsewhere, to both). A name that does not resolve is tried again. One
        lookup runs at a time, in a thread of its own: one the resolver never answers (an NSS module hung past its
        timeouts) is waited RESOLVE_PLCS_TIMEOUT_S and left running, and while it runs no other is
        started, the names taken as not resolving. In the loop's default executor each round started one more, and
        the threads the outbox's commit waits, the samples' encoding and the model manager need were each held by a
        lookup."""
        import socket

        from devices.opcua.settings import plc_at

        lookup: asyncio.Future | None = None
        up = ConnectionState.CONNECTED
        try:
            while True:
                for n, (host, port) in named.items():
                    if lookup is not None and not lookup.done():  # the resolver has not answered the last
                        self._plc_unresolved.add(n)
                        continue
                    # (a thread of its own, not a pool's: one never answered holds no executor's thread)
                    lookup = asyncio.ensure_future(
                        in_lowered_thread(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
                    )
                    # (its error read, said or not: one timed out is not said again at its end)
                    lookup.add_done_callback(lambda f: f.cancelled() or f.exception())
                    try:
                        async with asyncio.timeout(RESOLVE_PLCS_TIMEOUT_S):
                            infos = await asyncio.shield(lookup)
                    except (OSError, TimeoutError, UnicodeError) as e:
                        log.debug("opcua source %s: %s not resolved (%s)", n, host, e)
                        self._plc_unresolved.add(n)
                        continue
                    self._plc_unresolved.discard(n)
                    now = {("plc", plc_at(str(info[4][0]), port)) for info in infos if info[4]}
                    seen = self._plc_seen.setdefault(n, set())
                    # the address the source's session reached (the name may lead to several, or have moved since it
                    # connected); an address the name no longer leads to is forgotten once no session is at it: kept
                    # until restart, a PLC's address given by DHCP to another line's PLC tied that line's heartbeat to
                    # this one's failed slot for good
                    src = self.sources.get(n)
                    at = getattr(src, "peer_address", None) if getattr(src, "state", None) is up else None
                    if at is not None:
                        now.add(("plc", plc_at(at[0], at[1])))
                    elif getattr(src, "state", None) in (up, ConnectionState.CONNECTING):
                        now |= seen  # (a session up or being made, its peer not known: nothing forgotten)
                    seen -= {k for k in seen if k[0] == "plc" and k not in now}
                    seen |= now
                await asyncio.sleep(RESOLVE_PLCS_S)
        finally:
            if lookup is not None:  # (its thread ends with the resolver's answer, or with the process)
                lookup.cancel()

    def heartbeat_holders(self, source: str) -> list[Pipeline]:
        """The pipelines holding ``source``'s heartbeat now (``_watchdog_hold``): those whose slot is failed, or
        with a window, among the ones writing through it; one held only by the writes of pipelines on other slots
        to a node it writes (``heartbeat_beside``) while one of them judges parts and writes there for its OK parts
        what may follow, or judges none and writes so for its own unjudged parts."""
        beside = self.heartbeat_beside.get(source, {})
        return [
            p
            for p in self.heartbeat_feeds.get(source, [])
            if p.window_ignored
            or (
                p.slot.failed is not None
                and (
                    (qs := beside.get(p.name)) is None
                    # judging once a model serves it: a swap makes its model active before its slot is no
                    # longer failed (the state written between), its OK parts' writes following meanwhile
                    or any(
                        (ok if q.slot.version is not None else unjudged)
                        for q, ok, unjudged in qs
                        if not q.window_ignored
                    )
                )
            )
        ]

    def heartbeat_holders_to_come(self, source: str) -> list[Pipeline]:
        """The pipelines writing through ``source`` that do not hold its heartbeat now (``heartbeat_holders``) but
        will once a package serves a slot failed now (a fleet-fed one waiting for its first) before theirs: a
        pipeline on it writes for its OK parts, on a node they write too, a value that may follow their unjudged
        parts' (``heartbeat_beside``). Two cameras on two new fleet-fed slots sharing one reject gate on NG and UNSURE
        each reject every part while both wait, and the first package to one of them holds the heartbeat until the
        other's serves."""
        now = self.heartbeat_holders(source)
        beside = self.heartbeat_beside.get(source, {})
        return [
            p
            for p in self.heartbeat_feeds.get(source, [])
            if p not in now
            and p.slot.failed is not None
            and any(
                ok and q.slot.version is None and not q.window_ignored for q, ok, _ in beside.get(p.name, ())
            )
        ]

    def _watchdog_hold(self, source: str) -> str | None:
        """Why an OPC UA source's heartbeat (the PLC's watchdog output) stands still now: a pipeline whose actions
        write through it has no model in its slot (its configured package refused at the start, nothing installed),
        so every part it sees is UNSURE and an output gated on NG is never updated (``heartbeat_holders``). The agent
        was down then before (the watchdog fell back to the PLC's safe state); it serves the rest now. None once a
        package serves."""
        if (group := self._plc_group(source)) != self._hold_group.get(source):
            # a session reached a PLC another source names another way (or its name leads elsewhere): judged afresh
            self._hold_group[source] = group
            self.heartbeat_feeds[source] = self._writing_through(source)
        for p in self.heartbeat_holders(source):
            if p.slot.failed is not None:  # (its reason said once, at the start, and on /status under models)
                return (
                    f"pipeline {p.name} judges nothing and leaves an output of this source as it is: its model slot "
                    f"{p.slot.name!r} is failed, no model serves it"
                )
            # a camera pipeline with a window (a config warning): it drops every frame, its actions never act
            return (
                f"pipeline {p.name} judges nothing and leaves an output of this source as it is: window: "
                f"{FRAME_WINDOW_WHY}"
            )
        return None

    def _check_sizing(self) -> None:
        """Say at start when the cameras' stated fps times the models' times measured just now (at load) cannot
        fit the cores: frames will be dropped, and the engineer should hear it before the line does."""
        from edge_agent import sizing

        item_ms = {name: t for name, s in self.slots.items() if (t := s.item_ms()) is not None}
        for msg in (sizing.warning(sizing.demand(self.cfg, item_ms)), sizing.threads_warning(self.cfg)):
            if msg:
                log.warning("%s", msg)

    async def _on_desired(self, reply) -> None:
        assert self.manager is not None  # set before the uplink that calls this starts
        await self.manager.on_desired(reply)
        if self.on_desired_config is not None:
            self.on_desired_config(reply.config if reply.HasField("config") else None)

    async def _fan_out(self, name: str, src, readers: list[Pipeline]) -> None:
        unread = self.source_notices[name]
        last = self.tags[name]
        forwarders = [f for f in self.forwarders if f.s.source == name]
        rules = [r for r in self.rules if r.s.source == name]
        self._named[name] = _named_tags(self.cfg, name)
        while True:
            try:
                await self._read_source(name, src, readers, unread, last, forwarders, rules)
                return  # the source's readings ended: it was stopped
            except asyncio.CancelledError:
                raise
            except Exception:  # a fault in the source's own reading (a payload no check foresaw): read on
                if "reader_failed" not in unread.counts:
                    log.exception("source %s: its readings failed; reading on in 1 s", name)
                unread.note(
                    "reader_failed",
                    "source %s: its readings failed and were resumed",
                    name,
                    level=logging.DEBUG,  # said above, with its traceback
                )
                await asyncio.sleep(1.0)

    async def _read_source(self, name, src, readers, unread, last, forwarders, rules) -> None:
        """Hand each of the source's items to its tag table, forwards, rules and pipelines.

        A source hands over what it holds without suspending (an MQTT batch of up to ``queue_max_items``
        messages, each of many readings; an OPC UA server's burst of data changes after a reconnect), and
        neither the tag table, nor a rule without actions, nor a pipeline queue with room suspends either:
        every ``YIELD_EVERY`` items, or ``YIELD_AFTER_S`` after it last was (a large message's decoding takes
        milliseconds), the loop is given back, so that another source's rule still acts, an
        OPC UA session still keeps alive and heartbeats still go out while a flooded source catches up."""
        n = 0
        clock = time.perf_counter
        due = clock() + YIELD_AFTER_S
        # a camera's MJPEG parts come undecoded: the pipeline that takes one decodes it, one dropped costs none
        untaken = getattr(src, "untaken_items", None)
        units = self._tag_units
        async for item in untaken() if untaken is not None else src.items():
            self.source_items[name] += 1
            tag = getattr(item, "tag", None)
            try:
                if tag is not None:
                    shown = item if type(item.value) in _PLAIN else _shown(item)
                    if tag in last:
                        last[tag] = shown
                    elif len(last) + units[name] < TAG_ROWS:
                        # a tag not in the table holding the encoding's %2F or %25: renamed since an upgrade? (a
                        # full table cannot tell a tag never seen: not judged there)
                        if "%2F" in tag or "%25" in tag:
                            self._renamed(name, tag, last, unread)
                        units[name] += len(tag) // TAG_NAME_UNIT
                        last[tag] = shown
                    for f in forwarders:
                        f.offer(item)
                    for r in rules:
                        await r.offer(item)
                if not (readers or forwarders or rules):
                    unread.counts["unread"] = unread.counts.get("unread", 0) + 1
                for p in readers:
                    await p.offer(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # one item that breaks a reader must not stop the source's readings
                if "item_failed" not in unread.counts:
                    log.exception("source %s: an item (tag %r) failed in its readers; skipped", name, tag)
                unread.note(
                    "item_failed",
                    "source %s: an item failed in its readers and was skipped",
                    name,
                    level=logging.DEBUG,  # said above, with its traceback
                )
            n += 1
            # the item in hand first, then the loop: time too, as one large message's decoding takes ms
            if n >= YIELD_EVERY or clock() >= due:
                n = 0
                await asyncio.sleep(0)
                due = clock() + YIELD_AFTER_S

    def _renamed(self, source: str, tag: str, last: dict, notices: Notices) -> None:
        """``tag`` (first read, holding %2F) is a name from an MQTT payload holding '/', encoded into one level
        of its tag since ca41f9ef (``json_codec.tag_level``: ``gw/1`` records named ``Line1/Speed`` are the tag
        ``gw/1/Line1%2FSpeed``, no longer ``gw/1/Line1/Speed``): a rule, forward or pipeline naming the old name,
        never seen, stopped silently. Said once per tag (``tag_renamed``), naming them and the name to write."""
        named = self._named.get(source)
        if not named or tag in self._renamed_said:
            return
        old = tag_level_origin(tag)
        if old == tag:  # a %2 the encoding did not make (%20, %2C): kept as it came, not renamed
            return
        who = named.get(old)
        if who is None or old in last or len(self._renamed_said) >= TAG_ROWS:
            return
        self._renamed_said.add(tag)
        notices.note(
            "tag_renamed",
            "source %s: tag %s, which %s name(s), is never seen, while tag %s is read: a name from the payload "
            "holding '/' is one level of its tag, '/' written %%2F (docs/mqtt.md, Tag names and topics): write %s",
            source,
            shown_topic(old),
            ", ".join(who),
            shown_topic(tag),
            shown_topic(tag),
            cause=tag,
        )

    async def _watch_loop(self) -> None:
        """How late the loop's timers fire: a saturated gateway's cost to its rules and heartbeats, on
        /status (``agent.loop_lag_ms``: the last sample and the worst of the last minute)."""
        clock = time.monotonic
        while True:
            t = clock()
            await asyncio.sleep(LOOP_TICK_S)
            now = clock()
            self.loop_lags.append((now, max(0.0, now - t - LOOP_TICK_S)))

    def loop_lag_ms(self) -> dict[str, float | None]:
        lags = list(self.loop_lags)  # read from the HTTP thread too
        if not lags:
            return {"last": None, "max_60s": None}
        return {"last": round(lags[-1][1] * 1000, 1), "max_60s": round(max(v for _, v in lags) * 1000, 1)}

    async def _watch_sources(self, period_s: float = 2.0, min_messages: int = 20) -> None:
        """Messages that arrive but yield nothing (a JSON mapping or tag_map that matches no field,
        a codec that does not fit) are a silent drop: say so once, and keep the count current."""
        while True:
            await asyncio.sleep(period_s)
            now = time.monotonic()
            if self._halt_carried or self._downs.carried or self._publish_downs.carried:
                self._told_unconfigured(now)
            for name, src in self.sources.items():
                self._source_liveness(name, src, now)
                self._source_halt(name, src, now)
                by_key = getattr(src.stats, "dropped_by_key", None)
                if (
                    by_key
                ):  # a full hand-over queue (OPC UA, camera): said once, naming the tag that lost most
                    n = self.source_notices[name]
                    if "hand_over_full" not in n.counts:
                        top = max(by_key, key=by_key.__getitem__)
                        n.note(
                            "hand_over_full",
                            "source %s: readings arrive faster than the agent takes them; its hand-over queue "
                            "(queue_max_items) is full and the oldest readings of the tag holding the most are "
                            "dropped, first of %s (by tag: dropped_by on /status); other tags keep theirs",
                            name,
                            repr(top) if top else "its items",
                            n=0,
                        )
                    n.counts["hand_over_full"] = sum(by_key.values())
                received = src.stats.received
                if (
                    getattr(src.settings, "type", None) != "mqtt"
                    or self.source_items[name]
                    or received < min_messages
                ):
                    continue
                n = self.source_notices[name]
                if "nothing_decoded" not in n.counts:
                    reasons = dict(src.stats.errors_by_reason)
                    n.note(
                        "nothing_decoded",
                        "source %s: %d messages received but no reading decoded from them "
                        "(errors: %s); check each subscription's codec and json_mapping, or the Sparkplug "
                        "tag_map",
                        name,
                        received,
                        reasons or "none",
                        n=0,
                    )
                n.counts["nothing_decoded"] = received

    def _watch(self, watches: dict[str, flapping.FlapWatch], name: str) -> flapping.FlapWatch:
        w = watches.get(name)
        if w is None:
            w = watches[name] = flapping.FlapWatch(
                self.source_down_after_s, self.flap_window_s, self.flap_clear_s
            )
        return w

    def _since(self, w: flapping.FlapWatch, now: float) -> dict[str, Any]:
        """The since of an episode starting now: its first bad stretch within the window (``mono``: on the
        monotonic clock, what its duration is reckoned from; ``since_t`` only where that cannot be)."""
        first = w.first_bad(now)
        at = time.time() - (now - first)
        return {"since": _utc(at), "since_t": round(at, 3), "flaps": w.flaps, **self._mono(first)}

    def _mono(self, start: float) -> dict[str, Any]:
        return {"mono": round(start, 3), "boot": self._boot}

    def _elapsed(self, told: dict[str, Any], now: float) -> float | None:
        """How long an episode told of has lasted: from the monotonic clock where its start is on this boot's
        (this agent's, or one before it since the gateway booted), else from the wall clock when both ends of it
        are sane (after ``CLOCK_SET_T``, not negative); None (unknown) otherwise."""
        mono, boot = _num(told.get("mono")), told.get("boot")
        if mono is not None and boot is not None and boot == self._boot and 0.0 <= mono <= now:
            return round(now - mono, 1)
        since_t, wall = _num(told.get("since_t")), time.time()
        if since_t is None or since_t < CLOCK_SET_T or wall < CLOCK_SET_T or since_t > wall:
            return None
        return round(wall - since_t, 1)

    def _told_since(self, told: dict[str, Any], elapsed: float | None) -> str | None:
        """The since an episode's end carries: the one told at its start, unless that was read off a clock not
        set yet; then the wall clock now less its duration, if both are known (None otherwise)."""
        since_t = _num(told.get("since_t"))
        if since_t is not None and since_t >= CLOCK_SET_T:
            since = told.get("since")
            return since if isinstance(since, str) else None
        wall = time.time()
        return _utc(wall - elapsed) if elapsed is not None and wall >= CLOCK_SET_T else None

    def _source_liveness(self, name: str, src, now: float) -> None:
        """A source not connected for ``source_down_after_s`` (in total within ``flap_window_s``: a flapping
        source too) raises ``source_down`` (active), once; connected again, the same kind with active false and
        how long it was down (at once after one clean outage, after ``flap_clear_s`` connected without a break,
        or down for at most 5% of it, after a flapping one: edge_agent.flapping). A camera, PLC or broker lost
        for good was only a metric, a count and a log line on the gateway: nothing reached the cloud.
        An mqtt source's publish connection (``publish_connection: separate``) raises ``publish_down`` by the
        same rule: its source may stay connected while the broker refuses or drops it, and what the source
        publishes (results, alarms) then waits; that was on /status only."""
        state = getattr(src.state, "value", "")
        if state == "stopped":
            return
        self._liveness(self._downs, name, state, src.stats.last_error, now)
        pc = getattr(src, "publish_connection", None)
        if pc is not None and pc["state"] != "stopped":
            self._liveness(self._publish_downs, name, pc["state"], pc["last_error"], now, pc["client_id"])

    @staticmethod
    def _outage_of(o: _Outages, name: str, client_id: Any) -> str:
        if o.kind is EventKind.PUBLISH_DOWN:
            return f"source {name}'s publish connection" + (
                "" if client_id is None else f" (client id {client_id})"
            )
        return f"source {name}"

    def _liveness(
        self, o: _Outages, name: str, state: str, last: Any, now: float, client_id: Any = None
    ) -> None:
        w = self._watch(o.watch, name)
        verdict = w.observe(now, state != "connected", state == "connected")
        if state == "connected" and name in o.carried:
            # one an agent before this one told of (a restart, a config reload) ends here; a flapping one is
            # carried on (adopted) until steadily connected: connected at this moment, it may be down again
            # in a minute, and ending it here gave the spell a second start and end
            told = o.carried.pop(name)
            flaps = _told_flaps(told)
            if flaps is not None and flaps > 1 and not w.active:
                o.reported[name] = told
                w.adopt(now, flaps, bad=False)
                return
            o.save()
            self._down_ended(o, name, state, told, "connected again after {} s without a connection", now=now)
            return
        if verdict == "end":
            if name in o.reported:
                told = o.reported.pop(name)
                o.save()
                what = "connected again after {} s without a connection"
                if not w.clean_end:
                    bad = w.bad_s(now, self.flap_clear_s)
                    what = (
                        f"connected steadily (down {bad:.0f} s of the last {self.flap_clear_s:.0f} s) after "
                        f"{w.flaps} outages in {{}} s"
                    )
                self._down_ended(o, name, state, told, what, w.flaps, now)
            return
        if verdict != "start":
            return
        # still down since before a restart: the same outage, not a second start; a flapping one's flaps are
        # carried on (adopted), as when found connected: taken for a clean outage of this watch's own, it ended
        # at the first connected pass and the next flaps started another
        if name in o.carried:
            told = o.reported[name] = o.carried.pop(name)
            flaps = _told_flaps(told)
            if flaps is not None and flaps > w.flaps:
                w.adopt(now, flaps)
            return
        o.reported[name] = rec = self._since(w, now)
        if client_id is not None:
            rec["client_id"] = client_id
            rec["client_id_told"] = self.for_cloud.text(str(client_id))  # for the next agent (``__init__``)
        o.save()
        bad_s = w.bad_s(now)
        how = (
            f"has not been connected for {bad_s:.0f} s"
            if w.flaps <= 1
            else f"has been down {w.flaps} times since {rec['since']}, {bad_s:.0f} s in all (flapping)"
        )
        cost = (
            "what the source publishes (results, alarms) cannot reach the broker: QoS 1 waits in the "
            "connection's queue until it is back"
            if o.kind is EventKind.PUBLISH_DOWN
            else "its pipelines get no items"
        )
        msg = (
            f"{self._outage_of(o, name, client_id)} {how} ({state}; last error: {last or 'none'}): {cost}; the "
            "agent keeps trying it and serves its other sources"
        )
        log.warning("%s", msg)
        self._down_event(o, name, True, state, round(bad_s, 1), last, msg, w.flaps, client_id)

    def _source_halt(self, name: str, src, now: float) -> None:
        """An OPC UA server halted (``halted``: not Running, its clock frozen, its subscription stalled, no
        answer) for ``source_down_after_s`` (in total within ``flap_window_s``: one halt, or many short ones,
        each judged recovered at a reconnect) raises ``source_halted`` (active, with the reason and since when),
        once per episode whatever the checks, reconnects and new halts in it; shown healthy again (``halted``
        gone), the same kind with active false and how long it lasted (at once after one clean halt, after
        ``flap_clear_s`` connected and healthy without a break, or halted for at most 5% of it, after a flapping
        one: edge_agent.flapping).
        A halt that ends sooner is said on the gateway only. A server halted while its TCP connection stays up
        (or comes back at each reconnect) never raised ``source_down``: the cloud saw a healthy agent beside a
        frozen PLC."""
        state = getattr(src.state, "value", "")
        if state == "stopped":
            return
        h = getattr(src, "halted", None)
        if name in self._halt_carried and self._carried_halt(name, src, h, now):
            return
        if h is not None:
            self._halt_last[name] = h
        w = self._watch(self._halt_watch, name)
        verdict = w.observe(now, h is not None, h is None and state == "connected")
        if verdict == "end" and name in self._halt_reported:
            last = self._halt_last.get(name, {})
            why = "its server is healthy again"
            if not w.clean_end:
                bad = w.bad_s(now, self.flap_clear_s)
                why = f"its server is healthy steadily (halted {bad:.0f} s of the last {self.flap_clear_s:.0f} s)"
            self._halt_ended(name, last.get("reason"), last.get("checks"), why, w.flaps, now)
            return
        if verdict != "start" or h is None or name in self._halt_reported:
            return
        rec = {k: h.get(k) for k in ("reason", "since", "since_t", "checks")}
        for_s = _num(h.get("for_s"))
        rec.update(self._mono(now if for_s is None else now - for_s))
        if w.flaps > 1:
            rec.update(self._since(w, now))
        rec["flaps"] = w.flaps
        self._halt_reported[name] = rec
        self._save_told(self._halts_file, self._halt_carried, self._halt_reported)
        how = f"halted ({h.get('reason')}) since {rec['since']}"
        if w.flaps > 1:
            how = f"halted {w.flaps} times since {rec['since']}, {w.bad_s(now):.0f} s in all (flapping; last: {h.get('reason')})"
        msg = (
            f"source {name}: its server has been {how}: its tags are BAD and its readings held until it shows it "
            "is healthy again; the agent keeps checking it"
        )
        log.warning("%s", msg)
        halted_s = h.get("for_s") if w.flaps <= 1 else round(w.bad_s(now), 1)
        since_t = _num(rec.get("since_t"))
        since = rec["since"] if since_t is not None and since_t >= CLOCK_SET_T else None
        self._halt_event(name, True, {**h, "since": since}, halted_s, msg, w.flaps)

    def _carried_halt(self, name: str, src, h: dict[str, Any] | None, now: float) -> bool:
        """A halt an agent before this one told the cloud of (a restart, a config reload): still halted, it goes
        on (adopted: no second start, its end carries the first since); connected and not halted for
        ``source_down_after_s`` (and two of its checks), it ended meanwhile: its end is sent. True while its fate
        is not known (the source connecting, or healthy for less than that)."""
        if h is not None:
            self._halt_reported[name] = rec = self._halt_carried.pop(name)
            self._halt_healthy.pop(name, None)
            flaps = rec.get("flaps")  # absent from files written before flapping was counted: one halt
            self._watch(self._halt_watch, name).adopt(now, flaps if isinstance(flaps, int) else 1)
            return False
        if getattr(src.state, "value", "") != "connected":
            self._halt_healthy.pop(name, None)
            return True
        first = self._halt_healthy.setdefault(name, now)
        check_s = getattr(getattr(src, "settings", None), "keepalive_check_s", 0.0)
        flaps = _told_flaps(self._halt_carried[name])
        # a flapping one ends as it would have without the restart: once healthy for flap_clear_s steadily
        confirm_s = self.flap_clear_s if flaps is not None and flaps > 1 else self.source_down_after_s
        if now - first < max(confirm_s, 2 * float(check_s or 0.0)):
            return True
        del self._halt_healthy[name]
        self._halt_reported[name] = rec = self._halt_carried.pop(name)
        self._halt_ended(name, rec.get("reason"), rec.get("checks"), "its server is healthy again", now=now)
        return True

    def _down_ended(
        self,
        o: _Outages,
        name: str,
        state: str | None,
        told: dict[str, Any],
        what: str,
        flaps: int | None = None,
        now: float | None = None,
    ) -> None:
        down_s = self._elapsed(told, time.monotonic() if now is None else now)
        client_id = told.get("client_id")
        msg = f"{self._outage_of(o, name, client_id)}: " + what.format(
            "an unknown number of" if down_s is None else down_s
        )
        if down_s is None:
            msg += _UNKNOWN
        log.info("%s", msg)
        flaps = _told_flaps(told) if flaps is None else flaps
        self._down_event(o, name, False, state, down_s, None, msg, flaps, client_id)

    def _down_event(
        self,
        o: _Outages,
        name: str,
        active: bool,
        state: str | None,
        down_s: Any,
        last_error: Any,
        msg: str,
        flaps: Any = None,
        client_id: Any = None,
    ) -> None:
        data: dict[str, Any] = {
            "source": name,
            "active": active,
            "state": state,
            "down_s": down_s,
            "last_error": last_error,
            "flaps": flaps,
            "message": msg,
        }
        if o.kind is EventKind.PUBLISH_DOWN:  # a told file's may be anything: only text reaches the cloud
            data["client_id"] = client_id if isinstance(client_id, str) else None
        self._event(Event(o.kind, **data))

    def _told_unconfigured(self, now: float | None = None) -> None:
        """The end of each carried halt or outage whose source this agent's configuration no longer has (removed
        or renamed by a config reload): no one would ever say it otherwise."""
        gone = "it is no longer in the agent's configuration"
        now = time.monotonic() if now is None else now
        for name in [n for n in self._halt_carried if n not in self.sources]:
            rec = self._halt_reported[name] = self._halt_carried.pop(name)
            self._halt_ended(name, rec.get("reason"), rec.get("checks"), gone, now=now)
        for name in [n for n in self._downs.carried if n not in self.sources]:
            told = self._downs.carried.pop(name)
            self._downs.save()
            self._down_ended(self._downs, name, None, told, gone + "; it was not connected for {} s", now=now)
        pubs = self._publish_downs
        for name in [
            n for n in pubs.carried if getattr(self.sources.get(n), "publish_connection", None) is None
        ]:
            told = pubs.carried.pop(name)
            pubs.save()
            why = "it is no longer in the agent's configuration with a publish connection of its own"
            self._down_ended(pubs, name, None, told, why + "; it was not connected for {} s", now=now)

    def _halt_ended(
        self, name: str, reason: Any, checks: Any, why: str, flaps: Any = None, now: float | None = None
    ) -> None:
        told = self._halt_reported.pop(name)  # its since is the one the cloud was told
        self._save_told(self._halts_file, self._halt_carried, self._halt_reported)
        halted_s = self._elapsed(told, time.monotonic() if now is None else now)
        since = self._told_since(told, halted_s)
        msg = f"source {name}: {why}; its halt ({reason}) since {since or 'an unknown time'} ended after " + (
            "an unknown time" + _UNKNOWN if halted_s is None else f"{halted_s} s"
        )
        log.info("%s", msg)
        self._halt_event(
            name,
            False,
            {"reason": reason, "since": since, "checks": checks},
            halted_s,
            msg,
            _told_flaps(told) if flaps is None else flaps,
        )

    @staticmethod
    def _save_told(path: Path, carried: dict, reported: dict) -> None:
        try:
            atomic_write_json(path, {**carried, **reported})
        except OSError as e:  # the events are sent all the same; only a restart's reconciliation is lost
            log.warning("cannot write %s (%s): an end may not be said after a restart", path, e)

    def _halt_event(
        self, name: str, active: bool, h: dict[str, Any], halted_s: Any, msg: str, flaps: Any = None
    ) -> None:
        self._event(
            Event(
                EventKind.SOURCE_HALTED,
                source=name,
                active=active,
                reason=h.get("reason"),
                since=h.get("since"),
                halted_s=halted_s,
                checks=h.get("checks"),
                flaps=flaps,
                message=msg,
            )
        )

    async def stop(self) -> None:
        # Stop taking new items, finish what is queued and in flight, flush the actions (which
        # still need their sources' connections), then close the sources and the models. Every step
        # is bounded: a peer that does not answer must not keep the agent from stopping.
        for t in self._source_tasks:
            t.cancel()
        for p in self.pipelines:
            await self._bounded(p.stop(), f"pipeline {p.name}", 30)
        for f in self.forwarders:
            await self._bounded(f.stop(), f"forward {f.s.name}", 10)
        await self._bounded(self.actions.flush(), "actions", 15)
        if self.manager is not None:
            await self._bounded(self.manager.stop(), "model manager", 10)
        if self.uplink is not None:
            await self._bounded(self.uplink.stop(), "uplink", 15)
        if self.outbox is not None:
            await self._bounded(asyncio.to_thread(self.outbox.close), "outbox", 30)
        if self._episode_waits:  # the episodes ended at the stop: forgotten once their ends are committed
            await self._bounded(asyncio.gather(*self._episode_waits), "episodes' ends", 5)
        for (
            key,
            told,
            seq,
        ) in self._episodes_unconfirmed:  # (its wait ended by the close: its last commit now done)
            if self.outbox is not None and self.outbox.committed_seq >= seq and not self.outbox.lost(seq):
                self._episode_forgotten(key, told)
        # all at once: each may wait out its own peer (an MQTT broker that takes nothing more: up to ~9 s), and
        # one after another a few dead peers passed the service manager's stop timeout (systemd: 30 s)
        await asyncio.gather(
            *(self._bounded(src.stop(), f"source {name}", 15) for name, src in self.sources.items())
        )
        for name, slot in self.slots.items():
            await self._bounded(slot.stop(), f"model slot {name}", 10)
        if self.http is not None:
            self.http.stop()
        # inference threads finish the item they hold (bounded by the model's own run time)
        await asyncio.to_thread(self.executor.shutdown, wait=True, cancel_futures=True)
        if self._own_lock:
            self.data_lock.release()
        self._stopped.set()
        log.info("agent %s stopped", self.cfg.agent.id)

    @staticmethod
    async def _bounded(aw, what: str, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await aw
        except TimeoutError:
            log.error("stopping %s took longer than %.0f s; going on without it", what, timeout_s)
        except Exception:
            log.exception("stopping %s failed", what)

    async def run(self) -> None:
        """Start, then serve until SIGTERM/SIGINT/SIGHUP, then stop gracefully."""
        await run_until_signalled(self.start, self.stop, self.stop_asked)

    @property
    def recent(self):
        """The last results (newest last), as the status board keeps them."""
        return self.board.recent

    # ---- status ----------------------------------------------------------------------------
    def _slot_status(self, slot: ModelSlot) -> dict:
        """A slot's status for ``/status``; a slot waiting for the fleet's first deployment while the fleet cannot
        be reached says why nothing comes (the uplink's last error): it read "waiting for the fleet's deployment"
        for ever, the cause only under ``uplink``."""
        st = slot.status()
        up = self.uplink
        # not connected: its Connect stream not (yet) open again after a failure, or its records' push backing off
        if (
            slot.waiting_for_fleet
            and up is not None
            and up.last_error
            and (up.mode in ("connecting", "reconnecting") or up.state == "backoff")
        ):
            st["failed"] = f"{st['failed']}; the fleet is not connected: {printable(up.last_error, 300)}"
        return st

    def status(self) -> dict:
        """A snapshot for ``/status``; reads only (metrics are refreshed by a ``/metrics`` scrape)."""
        srcs = {}
        for name, s in self.sources.items():
            st = s.stats
            srcs[name] = {
                "type": s.settings.type,
                "state": s.state.value if hasattr(s.state, "value") else str(s.state),
                "received": st.received,
                "dropped": st.dropped,
                "errors": st.errors,
                "reconnects": st.reconnects,
                "errors_by_reason": dict(st.errors_by_reason),
                "dropped_by": dict(getattr(st, "dropped_by_key", {})),  # the hand-over's, by tag
                # a camera: images decoded (an MJPEG part only once a pipeline takes it), frames skipped for fps
                **({"decoded": s.decoded, "skipped": s.skipped} if hasattr(s, "decoded") else {}),
                "last_error": st.last_error,
                # an mqtt source's publish connection (publish_connection: separate): its own state, client id and
                # last error (the source's state is its subscriptions' connection's)
                **(
                    {"publish_connection": pc}
                    if (pc := getattr(s, "publish_connection", None)) is not None
                    else {}
                ),
                # an OPC UA server halted (not Running, clock frozen, stalled) for as long as it lasts
                **({"halted": s.halted} if getattr(s, "halted", None) is not None else {}),
                # an OPC UA source's heartbeat (the PLC's watchdog output) held, which node and why, while it lasts
                **({"heartbeat_held": h} if (h := getattr(s, "heartbeat_held", None)) is not None else {}),
                # a camera whose image has not changed for frozen_after_s, for as long as it lasts
                **({"frozen": s.frozen} if getattr(s, "frozen", None) is not None else {}),
                # a camera whose FFmpeg log lines below error level enter Python (no machine-code filter here), why:
                # a state, not a silent drop (it was counted as one at each open)
                **(
                    {"ffmpeg_log_in_python": s.ffmpeg_log_in_python}
                    if getattr(s, "ffmpeg_log_in_python", None)
                    else {}
                ),
                # an OPC UA source's nodes that get no values, and why (the first 20: a line engineer sees which
                # configured node fails; before, only the last error of all was shown)
                **({"node_errors": node_errors_shown(s.node_errors)} if hasattr(s, "node_errors") else {}),
                # and its write targets whose writes will fail (a node it does not have, read-only, ...), as those
                **(
                    {"target_errors": node_errors_shown(s.target_errors)}
                    if hasattr(s, "target_errors")
                    else {}
                ),
                "silent_drops": {
                    **(s.notices.status() if hasattr(s, "notices") else {}),
                    **self.source_notices[name].status(),
                },
            }
        return {
            "agent": {
                "id": self.cfg.agent.id,
                "site": self.cfg.agent.site,
                "line": self.cfg.agent.line,
                "uptime_s": round(time.monotonic() - self._started_mono, 1),
                "first_result_after_s": round(self.first_result_at - self.launched_at, 3)
                if self.first_result_at
                else None,
                "loop_lag_ms": self.loop_lag_ms(),
                "max_rss_mb": peak_rss_mb(),
                "rss_mb": rss_mb(),
            },
            "sources": srcs,
            "pipelines": [p.status() for p in self.pipelines],
            "models": [self._slot_status(s) for s in self.slots.values()],
            **self.actions.status(),
            "forward": [f.status() for f in self.forwarders],
            "rules": [r.status() for r in self.rules],
            "recent_results": self.board.recent_json(),
            "recent_ng": self.board.recent_ng_json(),
            "events": [e.to_json_dict() for e in list(self.events)[-30:]],
            "outbox": self.outbox.stats() if self.outbox is not None and self.outbox.is_open else None,
            "uplink": self.uplink.status() if self.uplink is not None else None,
            "fleet": self.manager.status() if self.manager is not None else None,
            "config": self.config_state,
        }


async def run_until_signalled(start, stop, asked: asyncio.Event | None = None) -> None:
    """``await start()``, serve until SIGTERM/SIGINT/SIGHUP, then ``await stop()`` (also on any error).
    SIGHUP is a stop too: systemd and terminals send it when the session ends, and its default kills the
    process at once (no flush, outbox not closed). ``asked`` is the event the signals set (the start watches it
    while it waits for its data folder's lock, and raises ``StoppedBeforeStart``: nothing to stop, a clean end)."""
    import signal

    loop = asyncio.get_running_loop()
    done = asked if asked is not None else asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            loop.add_signal_handler(sig, done.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await start()
    except StoppedBeforeStart as exc:
        log.info("stopped while waiting for the lock on %s (held by a reader); nothing was started", exc)
        return
    try:
        await done.wait()
    finally:
        await stop()


def _as_written(value: Any) -> str:
    """A written value as the node holds it, to compare two: a number or a boolean by its number (``true`` and ``1``
    to a Boolean node alike), the rest by its repr."""
    if isinstance(value, bool | int | float):
        return repr(float(value))
    return repr(value)


def _pass_signals(
    cfg: AgentConfig, p, told: list[str], *, left: bool = False, acting_on: Result | None = None
) -> list[str]:
    """Pipeline ``p``'s pass signals: its outputs (an OPC UA write, a Sparkplug command) whose condition names no
    UNSURE, may act on an OK part, acts on no NG part (of the highest score) and not on a part the model did not
    judge (``verdict: OK``, a low score). Every UNSURE part (judged so or not) is handed to them, besides those whose
    condition names UNSURE, their condition taken as false, so that they write what an NG part leaves (an
    ``on_change`` one its reset): never handed it, a pass signal kept what the last judged part left, ``true`` after
    an OK part (or the agent before), and a PLC reading it passed the part unjudged. One writing a node an output of
    ``told`` writes is reset too, before that output's own value (``left``: those alone, written over by it; with
    ``acting_on``, by an output whose condition is true of that part)."""
    from edge_agent.conditions import compile_condition, pass_signal

    # every pass is reset for every UNSURE part, whatever else writes its node: one left to an action on UNSURE there
    # kept the last OK part's true wherever that action wrote nothing (a score band, ``not: {score: {gte: 0.6}}`` of
    # a part scoring 0.7, an age, a label), and which action acts on every UNSURE part cannot be told for certain.
    # ``left``: those an output of ``told`` may write over (by the node however spelt in one namespace), whose next
    # result writes its value again
    written = _nodes_of(cfg, list(p.actions))
    nodes = {
        written[n]
        for n in told
        if isinstance(a := cfg.actions[n], OutputAction)
        and (acting_on is None or compile_condition(a.when)(acting_on))
    }
    return [
        n
        for n in p.actions
        if isinstance(a := cfg.actions[n], OutputAction)
        and n not in told
        and (not left or written[n] in nodes)
        and pass_signal(a.when, p.name, p.source) is False
    ]


def _nodes_of(cfg: AgentConfig, names: list[str]) -> dict[str, tuple]:
    """The PLC output each of the actions ``names`` writes, to tell two writing one: an OPC UA node by its PLC
    (``_plc_of``: any source on its endpoint) and the node however spelt in one namespace (``node_key``: not
    ``node_classes``, which takes a URI and an index that may be two namespaces as one), an alarm's mirror its node;
    else ``actions._output_node`` (a Sparkplug metric, or the action's own)."""
    from devices.opcua.settings import node_key

    # an OPC UA write's or an alarm's mirror's action -> (its PLC, the node id it writes)
    plcs: dict[str, tuple[Any, str]] = {}
    for n in names:
        a = cfg.actions[n]
        if isinstance(a, AlarmAction) and a.node_id and a.opcua_source:
            src, node_id = a.opcua_source, a.node_id
        elif isinstance(a, OpcUaWriteAction):
            src, node_id = a.source, a.node_id
        else:
            continue
        plcs[n] = (_plc_of(cfg.sources.get(src)) or ("source", src), node_id)
    out = {}
    for n in names:
        a = cfg.actions[n]
        if n in plcs:
            plc, node_id = plcs[n]
            out[n] = ("opcua", plc, node_key(node_id))
        else:
            out[n] = _output_node(n, a) if isinstance(a, OutputAction) else ("action", n)
    return out


def _plc_of(settings) -> tuple[str, int] | None:
    """The PLC an OPC UA source reaches (``devices.opcua.settings.plc_of``), to tell two sources on one endpoint;
    None for another kind of source."""
    from devices.opcua.settings import plc_of

    return plc_of(settings.endpoint) if getattr(settings, "type", None) == "opcua" else None


def _host_named(host: str) -> bool:
    """Whether ``host`` (``_plc_of``'s) is a host name, which the resolver may lead to any address."""
    import ipaddress

    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host != "localhost"
    return False


def _reset_written(action) -> str | None:
    """What an output writes as its condition stops holding (``_as_written``): a reset (a level one only with
    ``reset_value``), an alarm's mirror false as it clears; None where nothing is written."""
    if isinstance(action, OutputAction):
        reset = action.reset_value if action.mode is WriteMode.LEVEL else action.reset
        return None if reset is None else _as_written(reset)
    return _as_written(False) if isinstance(action, AlarmAction) else None


def _names_unsure(action) -> bool:
    """Whether an action's condition names UNSURE: the actions an UNSURE result is handed to (never a reject nor a
    pass: ``_make_on_result``)."""
    return "UNSURE" in json.dumps(action.when or {})


def _named_tags(cfg: AgentConfig, source: str) -> dict[str, list[str]]:
    """The tags of ``source`` its rules, forwards and pipelines name -> which name each (for ``_renamed``)."""
    named: dict[str, list[str]] = {}
    for r in cfg.rules:
        if r.source == source:
            named.setdefault(r.tag, []).append(f"rule {r.name!r}")
    for f in cfg.forward:
        if f.source == source:
            for t in f.tags:
                named.setdefault(t, []).append(f"forward {f.name!r}")
    for p in cfg.pipelines:
        if p.source != source:
            continue
        tags: list[str | None] = []
        if p.window is not None:
            tags += [p.window.waveform, *p.window.scalar_inputs]
        if p.baseline is not None:
            tags += [getattr(p.baseline, k, None) for k in ("speed_tag", "temperature_tag", "state_tag")]
        for t in dict.fromkeys(t for t in tags if t):
            named.setdefault(t, []).append(f"pipeline {p.name!r}")
    return named


def _shown(item: Any) -> Any:
    """``item`` as the tags view keeps it: an array as its shape, type and last sample (read-only, its one sample
    broadcast: ``status_board.tag_rows`` shows no more), a long text cut to ``TAG_TEXT_CHARS``, a long list or byte
    string its start (``status_board.Cut``); else itself."""
    v = item.value
    if type(v) is str:
        if len(v) <= TAG_TEXT_CHARS:
            return item
        return dataclasses.replace(item, value=v[:TAG_TEXT_CHARS] + "…")
    # a long list (Int64 counters past 2**53 kept exact, texts) or byte string (an OPC UA ByteString): its start
    if isinstance(v, list | tuple) and len(v) > SHOWN_ITEMS:
        return dataclasses.replace(item, value=Cut(v[:SHOWN_ITEMS], type(v).__name__))
    if isinstance(v, bytes | bytearray) and len(v) > SHOWN_BYTES:
        return dataclasses.replace(item, value=Cut(bytes(v[:SHOWN_BYTES]), type(v).__name__))
    if getattr(v, "size", 1) <= 1 or not hasattr(v, "reshape"):  # a number, a truth value, None, a tiny array
        return item
    import numpy as np

    return dataclasses.replace(item, value=np.broadcast_to(v.reshape(-1)[-1:].copy(), v.shape))


def _connected(source: Any) -> bool:
    """Whether ``source`` (an mqtt source a forward publishes through) is connected to its broker: over its
    publish connection where it has one of its own (``publish_connection: separate``), which may be down while its
    subscriptions' connection is up: the forward's messages the client holds wait for that one."""
    pc = source.publish_connection
    if pc is not None:
        return pc["state"] == ConnectionState.CONNECTED.value
    return source.state is ConnectionState.CONNECTED


def _kept_compressed(src) -> bool:
    """Whether a camera's images stay compressed until a pipeline takes them, so that none of the checks of their
    pixels runs when none does: an HTTP(S) camera's parts (MJPEG, snapshots) and a folder's files
    (``UntakenFrame``). A USB device's, an rtsp:// stream's and a video file's frames are decoded as they are
    read, and checked (blank, frozen) whatever reads them."""
    s = src.settings
    if s.type != "camera" or not getattr(src, "decode_when_taken", False):
        return False
    return s.url.lower().startswith(("http://", "https://")) or s.watch or Path(s.url).is_dir()


def _produces(settings) -> bool:
    """Whether a source yields items by itself (cameras always; others when they subscribe to something)."""
    return settings.type == "camera" or bool(
        getattr(settings, "subscriptions", None) or getattr(settings, "nodes", None)
    )


def _encode_sample(item) -> tuple[bytes, str]:
    from devices.base import Frame

    if isinstance(item, Frame):
        import cv2

        ok, png = cv2.imencode(".png", item.image)
        if not ok:  # not an empty sample: an error of the outbox's, counted and logged by the caller
            shape = "x".join(str(n) for n in item.image.shape)
            raise ValueError(
                f"sample of frame {item.seq} of source {item.source} ({shape} {item.image.dtype}): "
                "OpenCV's PNG encoder refused it"
            )
        from model_packager.inputstats import camera_wh
        from protocols.sample_camera import with_camera_size

        # the camera's own size (the frame's where the camera gave it as it is): a build from these samples
        # records the training frames' camera proportions, which their pixels do not tell (a camera's width
        # and height resize them), and the UNSURE check measures a frame's camera against them
        h, w = item.image.shape[:2]
        return with_camera_size(png.tobytes(), camera_wh(item.camera_size) or (w, h)), ".png"
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(item.waveform, dtype=np.float32))
    return buf.getvalue(), ".npy"


def _utc(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds")


_UNKNOWN = (
    " (unknown: it began before a restart and the gateway's clock was not set then, or has been stepped since; "
    "a duration from it would be wrong)"
)


def _num(v: Any) -> float | None:
    """A number a told file or a source's ``halted`` holds, or None (absent, not a number, NaN or infinite:
    Python's json reads ``Infinity``)."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return f if math.isfinite(f) else None


def _boot_id() -> str:
    """This boot's id (Linux); where there is none, this process's own: a told file's monotonic times are then
    used by this agent only (an agent after it reckons from the wall clock, if sane)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return boot or f"process-{os.getpid()}-{time.monotonic_ns()}"


@dataclasses.dataclass
class _Outages:
    """The outages of one kind the source watch tells the cloud of (``source_down``: a source not connected;
    ``publish_down``: an mqtt source's publish connection not connected), by source: their not-connected
    stretches (``watch``), those told (active) and not yet ended, since when (``reported``, kept in ``file``),
    and those an agent before this one told of and not the end of (``carried``), until this one knows their
    fate."""

    kind: EventKind
    file: Path
    watch: dict[str, flapping.FlapWatch] = dataclasses.field(default_factory=dict)
    reported: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    carried: dict[str, dict[str, Any]] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.carried = _read_told(self.file)

    def save(self) -> None:
        Agent._save_told(self.file, self.carried, self.reported)


def _told_text(v: Any) -> str | None:
    """A told file's name or version: its text, bounded and printable, or None (not a string)."""
    return printable(v, 200) if isinstance(v, str) else None


def _told_count(v: Any) -> int | None:
    """A told file's count: a whole number not below 0, or None."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _told_flaps(told: dict[str, Any]) -> int | None:
    """The ``flaps`` of an episode a told file holds: a count, or None (a file written before it existed, or
    altered: whatever else it holds must not reach the cloud as the event's typed field)."""
    return _told_count(told.get("flaps")) or None


def _read_told(path: Path) -> dict[str, dict[str, Any]]:
    """The halts or outages an agent before this one told the cloud of and not the end of (``HALTS_FILE``,
    ``DOWNS_FILE``); a file that cannot be read is said and taken as none (their ends are then never said, as
    before the file existed)."""
    try:  # bounded: the data folder is anyone's with the gateway's shell (a named pipe, /dev/zero, a deep nest)
        data = read_json_state(path)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning(
            "%s cannot be read (%s); the ends of what it held are not said",
            printable(str(path)),
            printable(why_unread(e), 300),
        )
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("since"), str)}
