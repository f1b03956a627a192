"""Deployments: desired state per agent, canary steps with health gates, halts and rollbacks.

State lives in SQLite (``control.db`` in the server's data folder), so a restarted service resumes
every rollout where it was, and any replica can answer any agent.

A deployment targets agents (explicit ids, or a label selector over registered agents) with one
published package version for one slot. Strategies: ``all_at_once`` (one step, 100%), ``canary``
(cumulative steps such as ``["1", "50%", "100%"]``). ``tick()`` advances it: the agents of the
current step get the new version in their desired state; each reports its steps (downloading,
verifying, active, healthy | failed | rolled_back with a reason). When every agent of the step is
healthy and ``wait_s`` has passed, the next step starts. One failure (an agent's own post-swap
health check rolled back, a package it could not verify, or a reported error rate above the
gate's ``max_error_rate``) halts the rollout: the agents that received the new version get their
previous version back as desired state, and the agents of later steps never receive it.

An agent offline during a rollout converges when it comes back (its desired state waits for it). A step whose
agents have not all reported healthy ``step_timeout_s`` after it began is *stalled*: the deployment names them
(``stalled``, its reason, a WARNING) and keeps waiting for them or for an admin's abort. A rollout created with a
selector takes the agents that join its group while it runs as targets at the end of its order (reached by its
last step: never canaries); once completed, and until a newer rollout of the slot, it gives its version to agents
that join the group later (``following``).
A downgrade happens only by an admin's ``rollback`` (or by a failed gate's automatic rollback):
``create`` refuses a version lower than one a target agent runs or is assigned for that slot and
package, and the desired state of a rollback carries a deployment id ending in ``:rollback``, the
only mark under which a v2 agent accepts a lower version (v3 agents read ``DesiredSlot.rollback``).

Agent configurations roll out the same way (``create_config``, ``kind: config``, ``cloud_trainer.fleet.
deployment``): the YAML is validated with the agent's own validator first (``agent_config``; refused
with the field and the reason), its desired state is a row of ``desired`` under the reserved slot
``@config`` (no schema change: the YAML itself stays in the deployment's document), the agents report
``applied`` / ``healthy`` / ``failed`` / ``rolled_back`` like a model, and a halted rollout gives each
agent that received it its previous fleet config back, or none (the agent goes back to its own local
file).

Tenants: every deployment and desired state belongs to one tenant (the admin's); its package comes from
the tenant's registry, its targets are the tenant's registered agents, and an agent's desired state and
downloads are looked up under its own tenant. A package, deployment or agent of another tenant is
refused exactly as one that does not exist (``NotInTenant``, the service's ``PERMISSION_DENIED``), so
an admin learns nothing about other tenants. With ``keys_dir`` (the PKI folder), a tenant that has a
package signing key (``<keys_dir>/tenants/<tenant>/signing.pub``, from ``cloud-trainer pki tenant``)
gets only packages signed by that key deployed: another tenant's package copied into its registry is
refused; a tenant without one (its agents trust a key of its own, which the fleet does not know) gets no package
deployed that another tenant's key (current or retired) signed. Tenants themselves (created by a platform
operator) are rows of ``tenants`` here.

Generations: every change of a desired state (a rollout step, a command, a rollback) takes the next generation
of one counter all tenants share (the change log the streams of every replica read is ordered by it), and an
agent and its admin see it (``HeartbeatReply.generation``, a command's ``generation``). A generation is therefore
the time of the change in microseconds since the epoch, or one more than the last where that is not above it
(``_next_generation``), never a count: a tenant that compared two of its own generations counted every other
tenant's rollout steps and commands in between (one more per change).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from cloud_trainer.fleet.deployment import Deployment
from cloud_trainer.registry import WITHDRAWN, Registry
from model_packager.manifest import version_key

log = logging.getLogger(__name__)
DEFAULT_TENANT = "default"

# ``on_report``'s answer for a step kept only as its target's last report: made before a step taken
KEPT_LATE = "late"
ROLLBACK_SUFFIX = ":rollback"  # v2 mark on a desired slot's deployment id (v3: the explicit rollback field)
CONFIG_SLOT = (
    "@config"  # the desired-state row of an agent configuration (create refuses model slots named @...)
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (id TEXT PRIMARY KEY, created REAL NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS desired (tenant TEXT NOT NULL, agent TEXT NOT NULL, slot TEXT NOT NULL,
  package TEXT NOT NULL, version TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
  deployment_id TEXT NOT NULL, generation INTEGER NOT NULL, PRIMARY KEY (tenant, agent, slot));
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (id TEXT PRIMARY KEY, display_name TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS changes (generation INTEGER NOT NULL, tenant TEXT NOT NULL, agent TEXT NOT NULL,
  PRIMARY KEY (generation, tenant, agent));
CREATE TABLE IF NOT EXISTS following (tenant TEXT NOT NULL, slot TEXT NOT NULL, deployment_id TEXT NOT NULL,
  PRIMARY KEY (tenant, slot));
CREATE TABLE IF NOT EXISTS report_runs (tenant TEXT NOT NULL, agent TEXT NOT NULL, boot TEXT NOT NULL,
  run INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (tenant, agent, boot));
CREATE TABLE IF NOT EXISTS going_back (tenant TEXT NOT NULL, agent TEXT NOT NULL, slot TEXT NOT NULL,
  deployment_id TEXT NOT NULL, PRIMARY KEY (tenant, agent, slot, deployment_id));
CREATE TABLE IF NOT EXISTS kept_steps (tenant TEXT NOT NULL, agent TEXT NOT NULL, deployment_id TEXT NOT NULL,
  step TEXT NOT NULL, was TEXT NOT NULL, runs TEXT NOT NULL, until REAL NOT NULL, kept_at REAL NOT NULL,
  PRIMARY KEY (tenant, agent, deployment_id));
"""
# ``kept_steps``: (agent, deployment) -> its step kept late and untold during the agent's clone hold
# (``FleetServicer._keep_untold``: JSON), the target's recorded report then (``was``), the step's run and the runs of
# the agent that named it during the hold (``runs``: JSON, at most RUNS_BEFORE, the step's own first), and the hold's
# end (``until``: wall-clock seconds, so that every replica holds it alike). Taken again after the hold under a later
# run of the gateway that made it, by whichever replica that run reaches (``take_kept``): kept in the memory of the
# replica that kept it, a step was lost when the gateway's reports went to another replica after the hold, or that
# replica restarted (its rollout stalled until STEP_TIMEOUT_S). PostgreSQL: migration 0033
KEEP_KEPT_S = 86_400.0  # a kept step not taken again this long after it was kept is dropped (``tick``)
# how often the tick reads which agents have kept steps (``kept_agents``) and drops old ones
KEPT_LOOK_S = 5.0
# ``going_back``: (agent, slot) -> the halted or aborted rollouts whose target of that agent says ``rolling_back`` (a
# row may outlive the status: checked against the document when read, then deleted). A report of a newer rollout
# running on the agent reads these rows (``Control._gone_back``), not the document of every halted rollout of the
# slot: 10 halted rollouts of 1,000 agents made each such report cost 2.5 times as much under the control's lock.
# Filled at each open from the documents naming the status (``_fill_going_back``; PostgreSQL: 0018): a control
# state written before the table, or halts a service released before it made after an upgrade (a rollback); and by
# the tick from the rollouts halted since its last look (such a service still running as a replica)
# the desired-state change log keeps the changes of the last hour (generations are times in microseconds:
# ``_next_generation``); replicas read it every fraction of a second. A cut found through the index at once: keeping
# the newest 20,000 generations counted walked every row of them (1M rows of fleet-wide steps: 41 ms a tick)
KEEP_CHANGES_US = 3_600_000_000
# control.db files from before tenants: their desired states belong to the default tenant
MIGRATE_DESIRED = """BEGIN IMMEDIATE;
ALTER TABLE desired RENAME TO desired_v1;
CREATE TABLE desired (tenant TEXT NOT NULL, agent TEXT NOT NULL, slot TEXT NOT NULL,
  package TEXT NOT NULL, version TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
  deployment_id TEXT NOT NULL, generation INTEGER NOT NULL, PRIMARY KEY (tenant, agent, slot));
INSERT INTO desired SELECT 'default', * FROM desired_v1;
DROP TABLE desired_v1;
COMMIT;"""
# a deployment's tenant and state beside its document (PostgreSQL: migration 0008), filled by ``_fill_columns``
DEPLOYMENT_COLUMNS = [
    "ALTER TABLE deployments ADD COLUMN tenant TEXT",
    "ALTER TABLE deployments ADD COLUMN state TEXT",
    "CREATE INDEX IF NOT EXISTS deployments_by_state ON deployments (state, created)",
    "CREATE INDEX IF NOT EXISTS deployments_by_tenant ON deployments (tenant, created)",
]
# the ids of the deployments in each state, read from the index alone: the tick's look for halts without going_back
# rows (``_fill_going_back``, every GOING_BACK_FILL_S under the control's lock) read each halted rollout's id through
# deployments_by_state, a row lookup each (20,000 halted rollouts: 1.38 s a look on SQLite, 224 ms on PostgreSQL).
# Made at each open (after the state column exists); PostgreSQL: migration 0029
DEPLOYMENT_STATE_IDS = "CREATE INDEX IF NOT EXISTS deployments_state_ids ON deployments (state, id)"
HALTED_IDS = "SELECT id FROM deployments WHERE state IN ('halted', 'aborted')"  # (``_fill_going_back``)
# the runs a run's state report named as its process's runs before it (``runs_before``: at most 3 run ids, JSON),
# kept with the run (``note_run``): a clone hold's kept step is taken under a later run of the gateway that made it
# whichever replicas its runs in between reached (``earlier_runs``). PostgreSQL: migration 0030
REPORT_RUNS_NAMED = "ALTER TABLE report_runs ADD COLUMN named TEXT"
# A service released before those columns (2026-11-30 and earlier) updates a deployment's document only: run on
# this file after it (a rollback), a deployment it completed, halted or aborted kept 'running' in the column the
# tick, a newer rollout's takeover and the gateways joining a group read (a completed rollout taken for running:
# newcomers never given its version; its targets marked superseded), and one it resumed stayed 'paused' (never
# advanced). The column of the deployments it says are in progress is set from their document at open (a
# finished one's never changes again: not read).
STATE_FROM_DOC = (
    "UPDATE deployments SET state = COALESCE(json_extract(doc, '$.state'), '') WHERE state IN ('running', "
    "'paused') AND json_valid(doc) AND state IS NOT COALESCE(json_extract(doc, '$.state'), '')"
)
TERMINAL = {"completed", "halted", "aborted", "removed"}
# a deployment's model slot (``@config``: an agent configuration's) beside its document (PostgreSQL: migration 0014),
# filled by ``_fill_columns``: finished rollouts are kept per tenant and slot (``prune_finished``)
DEPLOYMENT_SLOT = [
    "ALTER TABLE deployments ADD COLUMN slot TEXT",
    "CREATE INDEX IF NOT EXISTS deployments_by_slot ON deployments (tenant, slot, created)",
]
# finished rollouts (completed, halted, aborted, removed) kept per tenant and slot, the newest first (``cloud-trainer
# serve --keep-rollouts``; 0: all): a platform of thousands of tenants rolling out weekly grew its control database
# (and every admin's list of deployments) without bound. A finished rollout an agent's desired state names (its
# current version's or configuration's, or the one a halt gave it back), one that gives its version to gateways
# joining its group, and one a rollout in progress would give back at a halt are kept whatever their age
KEEP_ROLLOUTS = 20
ID_DRAWS = 64  # random draws of a new deployment id at most (``_new_id``)
PRUNE_ROLLOUTS_S = 600.0  # how often the tick looks for finished rollouts past KEEP_ROLLOUTS
FILL_BATCH = 500  # deployments whose slot column is filled in one transaction (``_fill_slots``)
# a rollout step whose agents have not all reported ``healthy`` this long after it began is said to be stalled
# (``cloud-trainer serve --step-timeout-s``; 0: never): an agent's default health window (30 s), its
# "still watching" report a minute after it, and room for a download over a slow factory link
STEP_TIMEOUT_S = 900.0
# how often a running rollout with a selector looks for agents that joined its group since (registered, or
# labels changed): a read of the tenant's agents, so not every tick
JOIN_CHECK_S = 30.0
# how often the tick looks for halted rollouts without ``going_back`` rows among those halted since its last look (a
# halt an older replica made on the shared database writes none: until the next open its targets said
# ``rolling_back`` for good, even once a newer rollout ran on the agent); a read of the halted rollouts' ids
GOING_BACK_FILL_S = 30.0
# rollouts of a tenant in progress (running or paused) at once: the rollout tick reads and advances every one of
# every tenant each second, under the lock every tenant's deployment calls wait for; one tenant's 1,000 rollouts
# of slots no agent has (never healthy, never ending) made another tenant's admin calls take 0.3-1 s instead of
# 10-20 ms (0.03 s beside 200). A newer rollout of a slot takes the older one's agents over. A rollback is taken past
# it, up to MAX_ROLLBACKS_PAST_LIMIT more (one rollback of a slot takes every agent of the slot over: an emergency
# needs a few); without that bound a tenant's admin made rollbacks of slots its agents do not have, unbounded
MAX_ROLLOUTS_PER_TENANT = 200
MAX_ROLLBACKS_PAST_LIMIT = 200
SHOWN_CHARS = 200  # of a label selector in a refusal (``_shown``)
# the free texts of a new rollout that its document keeps (``_check_texts``): a slot's name as an agent reports it
# on a deployment (``ReportDeployment``: its first 128 characters), a selector's labels, a step ("1", "50%")
STRATEGIES = ("canary", "all_at_once")
SLOT_CHARS = 128
SELECTOR_LABELS = 32
LABEL_CHARS = 256
STEP_CHARS = 16
MAX_SEEN_MARKS = 10_000  # step marks whose monotonic reading a service keeps (``Control._waited``)
STALL_REFRESH_S = (
    60.0  # a stalled step's text (how long it waited, when its agents were last seen) is renewed
)
# the runs of an agent's reports (a run: one ``boot_id``, numbered 1, 2, ... as the agent made them) the control state
# remembers per agent (``report_runs``: the order runs began in and each one's highest number taken). A report of a run
# that a newer run followed is late (made before the agent restarted, or before its link was re-made: ``Control.
# _take_run``) and is never taken over the newer run's; a run older than the newest RUNS_KEPT is forgotten, and a
# report of it still held on the way would be taken as a new run (rows of ~100 bytes, read at a new run or a step)
RUNS_KEPT = 64
MAX_SEQ = 2**63 - 1  # a report number as the databases keep it (the wire's is 64 bits unsigned)
SUPERSEDED = "superseded"  # a target status: a newer rollout of the same slot took the agent over
LEFT = "left_group"  # a target status: moved out of a selector rollout's group before the rollout reached it
_NOT_OURS = (SUPERSEDED, LEFT)  # targets a rollout no longer assigns, waits for or rolls back
# a target's status saying the agent left (or is being taken off) the rollout's version for its previous one: rolled
# back or failed by the agent, or taken back by the fleet's halt (``_ways_back``)
_WAYS_BACK = ("rolled_back", "failed", "rolling_back", "rolled_back_by_fleet")
# a target's status saying the agent runs the rollout's version (installed: in its health window, or proven)
_ON_IT = ("active", "healthy")
_LOG_CHANGE = "INSERT INTO changes (generation, tenant, agent) VALUES (?, ?, ?)"
_GOING_BACK = (
    "INSERT INTO going_back (tenant, agent, slot, deployment_id) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_UPSERT_DESIRED = (
    "INSERT INTO desired VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(tenant, agent, slot) DO UPDATE "
    "SET package=excluded.package, version=excluded.version, digest=excluded.digest, "
    "size=excluded.size, deployment_id=excluded.deployment_id, generation=excluded.generation"
)
T = DEFAULT_TENANT


class TooManyRollouts(Exception):
    """A tenant's rollouts in progress are at ``MAX_ROLLOUTS_PER_TENANT``: the new one is refused, nothing stored."""


class NotInTenant(ValueError):
    """A package, deployment or agent the caller's tenant does not have (whether another tenant has it or
    nothing has it: the same answer)."""


class AnothersKey(NotInTenant):
    """A package of a tenant without a package key in the PKI folder signed by a package key of another tenant
    (``Control._check_not_anothers``): the service's ``PERMISSION_DENIED``, as any ``NotInTenant``."""


class _PgConnection:
    """The few ``sqlite3.Connection`` calls Control makes, on one PostgreSQL connection (autocommit outside
    explicit transactions). ``BEGIN IMMEDIATE`` becomes ``BEGIN`` plus a transaction-level advisory lock, so
    the control state's writers in every replica take turns (the rollout tick included).

    **Reconnect**: when the database restarts (or the network drops) the connection breaks; the call that
    meets it fails (its transaction is lost whole, nothing half-written), and the next call opens a new
    connection, with a growing pause between attempts (``backoff_s`` doubling up to ``max_backoff_s``: a
    call inside a pause fails at once with ``ConnectionError`` instead of waiting). The advisory lock is
    per transaction, so it is taken again by the next ``BEGIN`` on the new connection, and the rollout
    tick, the streams' change-log poll and the agents' reports resume by themselves."""

    LOCK = 0x6A1E_C0DE

    def __init__(self, url: str, *, backoff_s: float = 0.2, max_backoff_s: float = 5.0) -> None:
        import psycopg

        from cloud_trainer.fleet.store_pg import dead_path_params, migrate

        self._psycopg = psycopg
        self._params = dead_path_params(url)  # a dead path fails the tick's query, not holds it for good
        self._idle = psycopg.pq.TransactionStatus.IDLE
        self.url = url
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._delay, self._next_try = backoff_s, 0.0
        self.reconnects = 0
        self.conn = psycopg.connect(url, autocommit=True, **self._params)
        migrate(self.conn)

    def _alive(self):
        if not self.conn.closed:
            return self.conn
        now = time.monotonic()
        if now < self._next_try:
            raise ConnectionError(
                f"the control database is unreachable; next attempt in {self._next_try - now:.1f} s"
            )
        try:
            self.conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=5, **self._params)
        except self._psycopg.OperationalError as exc:
            self._next_try = time.monotonic() + self._delay
            self._delay = min(self._delay * 2, self.max_backoff_s)
            raise ConnectionError(
                f"the control database is unreachable ({str(exc).strip()[:200]}); retrying in "
                f"{self._next_try - time.monotonic():.1f} s"
            ) from exc
        self._delay, self._next_try = self.backoff_s, 0.0
        self.reconnects += 1
        return self.conn

    def execute(self, sql: str, args=()):
        stmt = sql.strip()
        if stmt == "ROLLBACK" and self.conn.closed:
            return None  # the broken connection took its transaction with it
        # a BEGIN, or a read outside a transaction, that meets a connection broken since its last use is
        # tried once more on a new one (nothing was done yet); anything else fails and the caller retries
        retry = stmt in ("BEGIN IMMEDIATE", "BEGIN") or (
            stmt.upper().startswith("SELECT") and not self.in_transaction
        )
        for attempt in (1, 2):
            conn = self._alive()
            try:
                if stmt in ("BEGIN IMMEDIATE", "BEGIN"):
                    conn.execute("BEGIN")
                    return conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.LOCK,))
                return conn.execute(sql.replace("?", "%s"), args)
            except self._psycopg.OperationalError:
                if not conn.closed:
                    raise
                self._next_try = 0.0  # lost: the next attempt reconnects at once
                if not retry or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def executemany(self, sql: str, rows) -> None:
        """One statement for many rows, sent as a pipeline (one round trip per batch, not per row); inside
        the caller's transaction, so it is never retried on its own."""
        with self._alive().cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)

    @property
    def in_transaction(self) -> bool:
        return not self.conn.closed and self.conn.info.transaction_status != self._idle

    def close(self) -> None:
        self.conn.close()


class Control:
    def __init__(
        self,
        path: Path | str,
        registry: Registry,
        store,
        keys_dir: Path | None = None,
        config_validator=None,
        step_timeout_s: float = STEP_TIMEOUT_S,
        keep_rollouts: int = KEEP_ROLLOUTS,
    ) -> None:
        """``path``: the SQLite file (``control.db``), or a ``postgresql://`` URL (the store's database: replicas
        on several hosts share the control state). ``config_validator(yaml_bytes, name)``: raises ``ValueError``
        naming the field for an agent configuration that does not validate (default: the agent's own
        validator, run by ``agent_config.validate_agent_config``). ``step_timeout_s``: a step whose agents have
        not all reported healthy this long after it began is marked stalled (0: never). ``keep_rollouts``: finished
        rollouts kept per tenant and slot besides those still named (``prune_finished``; 0: all)."""
        if not (math.isfinite(step_timeout_s) and step_timeout_s >= 0):
            raise ValueError(f"--step-timeout-s {step_timeout_s!r}: seconds, 0 (never) or more")
        if isinstance(keep_rollouts, bool) or not isinstance(keep_rollouts, int) or keep_rollouts < 0:
            raise ValueError(
                f"--keep-rollouts {keep_rollouts!r}: a whole number of rollouts, 0 (all) or more"
            )
        self.step_timeout_s = float(step_timeout_s)
        self.keep_rollouts = keep_rollouts
        if str(path).startswith(("postgresql://", "postgres://")):
            self.db: _PgConnection | sqlite3.Connection = _PgConnection(str(path))
        else:
            db = self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            cols = [r[1] for r in db.execute("PRAGMA table_info(desired)")]
            if cols and "tenant" not in cols:
                db.executescript(MIGRATE_DESIRED)
            old_log = db.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'changes'"
            ).fetchone()
            if old_log and "generation INTEGER PRIMARY KEY" in old_log[0]:
                # one generation per change before; now one per rollout step (many agents): the log is only what
                # streams push next (the generation counter stays), so the old table is replaced, not copied
                db.execute("DROP TABLE changes")
            db.executescript(SCHEMA)
            db.execute("BEGIN IMMEDIATE")  # replicas on one host may open the file at once: look inside
            if "state" not in [r[1] for r in db.execute("PRAGMA table_info(deployments)")]:
                for stmt in DEPLOYMENT_COLUMNS:  # not executescript: it would commit first
                    db.execute(stmt)
            if "slot" not in [r[1] for r in db.execute("PRAGMA table_info(deployments)")]:
                for stmt in DEPLOYMENT_SLOT:
                    db.execute(stmt)
            db.execute(DEPLOYMENT_STATE_IDS)
            if "named" not in [r[1] for r in db.execute("PRAGMA table_info(report_runs)")]:
                db.execute(REPORT_RUNS_NAMED)
            db.execute(STATE_FROM_DOC)
            db.execute("COMMIT")
        self.registry = registry
        self.store = store
        self.keys_dir = Path(keys_dir) if keys_dir else None
        self.lock = threading.RLock()
        # per tenant, bumped at every change of one of its agents' desired state this process makes or sees in the
        # change log (``changes_since``): an answer of ``deployed_to`` kept against it is asked again only once
        # it moved (read without the lock: a download's re-check never waits on a long write of the control)
        self.desired_marks: Counter[str] = Counter()
        self.clock = time.time
        # the wall clock's marks are read through this process's monotonic clock too (``_waited``): a wall clock
        # stepped forward during a step's wait does not cut the wait short
        self.monotonic = time.monotonic
        self._seen: dict[tuple[str, str], tuple[float, float, float]] = {}
        if config_validator is None:
            from cloud_trainer.fleet.agent_config import validate_agent_config as config_validator
        self.config_validator = config_validator
        self._yaml_cache: dict[str, str] = {}  # deployment id -> its config YAML (immutable once created)
        self._follow_checked = (
            0.0  # when tick last gave completed rollouts' versions to gateways joining their group
        )
        self._pruned_at = -math.inf  # when tick last pruned finished rollouts (``prune_finished``)
        # the agents with kept steps (``kept_steps``), as the tick last read them (every KEPT_LOOK_S) or this process
        # kept one since (``keep_step``), and when the tick last read them
        self.kept_agents: set[tuple[str, str]] = set()
        self._kept_looked = -math.inf
        # the halted and aborted rollouts ``_fill_going_back`` has looked at (None: none yet), and when it last looked
        self._halts_seen: set[str] | None = None
        self._going_back_filled = -math.inf
        # every tenant's package keys, for a keyless tenant's check (``_package_keys``): (the folders' marks, keys)
        self._keys_cache: tuple | None = None
        self._bad_keys: list[Path] = []  # key files skipped at the last read (watched for a mend)
        self._fill_columns()
        self._fill_going_back()
        self._drop_stale_following()
        with self._write():
            self._look_at_kept()

    def _drop_stale_following(self) -> None:
        """``following`` rows whose rollout is no longer the newest deployment of its slot (once, at open).
        ``create`` drops the row of the slot itself; a service released before ``following`` (2026-12-02) does
        not, so after a rollback to it and back, an admin's rollback (or a newer rollout) made there left the
        completed rollout giving the version rolled back from to every gateway joining its group."""
        with self._write():
            rows = self.db.execute("SELECT tenant, slot, deployment_id FROM following").fetchall()
            for tenant, slot, dep_id in rows:
                mine = self.db.execute("SELECT created FROM deployments WHERE id = ?", (dep_id,)).fetchone()
                later = (
                    self.db.execute(
                        "SELECT id, doc FROM deployments WHERE tenant = ? AND created > ?", (tenant, mine[0])
                    ).fetchall()
                    if mine is not None
                    else []
                )
                newer = []
                for other, doc in later:
                    try:
                        if _slot(json.loads(doc)) == slot:
                            newer.append(other)
                    except (ValueError, TypeError, KeyError, AttributeError):
                        continue
                if mine is None or newer:
                    log.warning(
                        "deployment %s no longer gives its version to gateways joining its group: %s",
                        dep_id,
                        f"deployment {newer[0]} of slot {slot} came after it" if newer else "it is gone",
                    )
                    self.db.execute("DELETE FROM following WHERE tenant = ? AND slot = ?", (tenant, slot))

    def _fill_going_back(self) -> None:
        """``going_back`` from the halted and aborted rollouts' documents that name a target ``rolling_back``, at
        each open, and at a tick every GOING_BACK_FILL_S of those halted since (an older replica's halt on the shared
        database writes no rows), of the rollouts without a row (a halt of this release writes its rows; one whose target moved
        on is dropped when read; documents without the status are not decoded): a control state written before the
        table, or halts a service released before it (2026-12-06 and earlier) made in it after an upgrade (a
        rollback). Filled only once, such a halt had no rows and its targets said ``rolling_back`` for good, even
        once an admin's rollback ran on the agent. The documents are read outside the control's write transaction
        (a row outliving its target's status is dropped when read): read inside it, every replica's steps and ticks
        waited for the scan at each replica's start (PostgreSQL, 2,000 halted rollouts of 1,000 agents: ~2 s)."""
        rows: list[tuple] = []
        found: list = []
        with self.lock:
            halts = {r[0] for r in self.db.execute(HALTED_IDS).fetchall()}
            # at open every halted rollout; at a tick (``GOING_BACK_FILL_S``) those halted since the last look
            new = sorted(halts if self._halts_seen is None else halts - self._halts_seen)
            for i in range(0, len(new), 500):
                part = new[i : i + 500]
                found += self.db.execute(
                    f"SELECT id, doc FROM deployments WHERE id IN ({', '.join('?' * len(part))}) AND doc LIKE ? "
                    "AND id NOT IN (SELECT DISTINCT deployment_id FROM going_back)",
                    (*part, "%rolling_back%"),
                ).fetchall()
        for dep_id, doc in found:
            try:
                d = json.loads(doc)
                rows += [
                    (d.get("tenant", T), a, _slot(d), dep_id)
                    for a, t in d["targets"].items()
                    if isinstance(t, dict) and t.get("status") == "rolling_back"
                ]
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
                continue  # (a document this code cannot read: said by ``_fill_slots``)
        if rows:
            with self._write():
                self.db.executemany(_GOING_BACK, rows)
        # seen once their rows are written: marked before, a look the database failed in (a connection lost) left
        # its halts seen and never filled, their targets ``rolling_back`` until a restart
        self._halts_seen = halts

    def _fill_columns(self) -> None:
        """The tenant and state columns of documents written before they existed (once: an older file or
        database), then the slot column (``_fill_slots``). A document that cannot be read (not JSON, not an object,
        its tenant not a string) is left without them, said in a WARNING naming it (it stopped the control state
        from opening): no tenant's."""
        with self._write():
            rows = self.db.execute("SELECT id, doc FROM deployments WHERE state IS NULL").fetchall()
            for dep_id, doc in rows:
                if (d := _doc(doc)) is None or not isinstance(d.get("tenant", T), str):
                    log.warning(
                        "deployment %s: its document cannot be read; its tenant and state are left unknown (no "
                        "tenant sees it)",
                        str(dep_id)[:64],
                    )
                    continue
                self.db.execute(
                    "UPDATE deployments SET tenant = ?, state = ? WHERE id = ?",
                    (d.get("tenant", T), d.get("state", ""), dep_id),
                )
        self._fill_slots()

    def _fill_slots(self) -> None:
        """The slot column of deployments written before it (or by an older replica since), FILL_BATCH rows a
        transaction, in the order of their ids: one read and update of every row in one transaction held the
        control lock (every replica's writes) and every document at once (2,000 finished rollouts of 135 MB on
        PostgreSQL: 9.6 s, 270 MB more, another replica's write waiting 9.1 s). A document that cannot be read
        (not JSON, not an object) is left without a slot, said in a WARNING naming it: it is never pruned."""
        after = ""
        while True:
            with self._write():
                rows = self.db.execute(
                    "SELECT id, doc FROM deployments WHERE slot IS NULL AND id > ? ORDER BY id LIMIT ?",
                    (after, FILL_BATCH),
                ).fetchall()
                filled = []
                for dep_id, doc in rows:
                    try:
                        filled.append((_slot_of(json.loads(doc)), dep_id))
                    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
                        log.warning(
                            "deployment %s: its document cannot be read (%s); its slot is left unknown, so it "
                            "is never deleted as a finished rollout",
                            dep_id,
                            str(exc)[:200],
                        )
                if filled:
                    self.db.executemany("UPDATE deployments SET slot = ? WHERE id = ?", filled)
            if len(rows) < FILL_BATCH:
                return
            after = rows[-1][0]

    # ---- persistence -------------------------------------------------------------------------
    def _get(self, dep_id: str) -> dict:
        if "\x00" in dep_id:  # no deployment id holds one (and PostgreSQL refuses it even in a comparison)
            raise NotInTenant(f"no deployment {dep_id[:64]!r}")
        row = self.db.execute("SELECT doc FROM deployments WHERE id = ?", (dep_id,)).fetchone()
        if row is None:
            raise NotInTenant(f"no deployment {dep_id[:64]!r}")
        return json.loads(row[0])

    def get(self, dep_id: str, *, tenant: str = T) -> dict:
        """A deployment of ``tenant`` (``NotInTenant`` for another tenant's, as for one that does not exist)."""
        with self.lock:
            dep = self._get(dep_id)
        if dep.get("tenant", T) != tenant:
            raise NotInTenant(f"no deployment {dep_id[:64]!r}")
        return dep

    def _new_id(self) -> str:
        """A deployment id that no deployment of any tenant has (called inside the write that stores it). Ids are
        the deployments' key across tenants, 10 hex characters drawn at random: a new rollout that drew one in use
        replaced that deployment's document (``_put``), another tenant's too, whose agents were then given the new
        rollout's version or configuration, and the older rollout was listed by neither tenant. At most
        ``ID_DRAWS`` draws (a broken random source drew the same id for ever, holding the control's write), then
        ``RuntimeError``."""
        for _ in range(ID_DRAWS):
            dep_id = uuid.uuid4().hex[:10]
            if self.db.execute("SELECT 1 FROM deployments WHERE id = ?", (dep_id,)).fetchone() is None:
                return dep_id
        raise RuntimeError(
            f"no deployment id not in use drawn in {ID_DRAWS} draws: the random source repeats"
        )

    def _put(self, dep: dict) -> None:
        """Store the deployment ``dep`` of its tenant: a new one, or over its own row. A row of another tenant with
        the same id is never replaced (``RuntimeError``, the caller's write rolled back): ids are drawn unique
        (``_new_id``), and this keeps it so whatever path writes."""
        tenant = dep.get("tenant", T)
        doc, state, slot = json.dumps(dep), dep.get("state", ""), _slot_of(dep)
        for _ in range(2):  # (a row changed between the statements below: written, or judged, again)
            written = self.db.execute(
                "INSERT INTO deployments (id, created, doc, tenant, state, slot) VALUES (?, ?, ?, ?, ?, ?) ON "
                "CONFLICT(id) DO UPDATE SET doc = excluded.doc, state = excluded.state, "
                "slot = COALESCE(deployments.slot, excluded.slot) "  # (a row an older replica wrote has none)
                "WHERE deployments.tenant = excluded.tenant",
                (dep["id"], dep["created"], doc, tenant, state, slot),
            )
            if written.rowcount:
                return
            # a row a replica released before the tenant column wrote (beside this one on one database) has none:
            # its document's tenant is its tenant, as ``_fill_columns`` sets it (refused as another tenant's before)
            row = self.db.execute("SELECT tenant, doc FROM deployments WHERE id = ?", (dep["id"],)).fetchone()
            if row is None or row[0] is not None or _doc_tenant(row[1]) != tenant:
                if row is None or row[0] == tenant:
                    continue  # (deleted, or given its tenant, since the upsert: written again)
                break
            if self.db.execute(
                "UPDATE deployments SET doc = ?, state = ?, tenant = ?, slot = COALESCE(slot, ?) WHERE id = ? "
                "AND tenant IS NULL",
                (doc, state, tenant, slot, dep["id"]),
            ).rowcount:
                return
            # (its tenant set by another writer since the read: not written; judged again. Returning here, the
            # caller took the deployment for written)
        else:
            raise RuntimeError(
                f"deployment {dep['id'][:64]!r} of tenant {tenant!r}: its row changed under each write; not written"
            )
        raise RuntimeError(
            f"deployment {dep['id'][:64]!r} of tenant {tenant!r}: its id is another tenant's deployment's; "
            "not replaced"
        )

    def _next_generation(self) -> int:
        """The next generation: now in microseconds since the epoch, or one more than the last if that is not
        below it (a clock stepped back, two changes in one microsecond). A time, not a count: the counter is
        every tenant's, and a tenant sees its own generations (module docstring)."""
        now_us = time.time_ns() // 1000
        self.db.execute(
            "INSERT INTO counters (key, value) VALUES ('generation', ?) ON CONFLICT(key) DO UPDATE SET "
            "value = CASE WHEN counters.value + 1 > excluded.value THEN counters.value + 1 ELSE excluded.value END",
            (now_us,),
        )
        return self.db.execute("SELECT value FROM counters WHERE key = 'generation'").fetchone()[0]

    def _changed(self, tenant: str, agent: str, gen: int | None = None) -> int:
        """A new generation (or ``gen``: one for a whole rollout step), logged as a change of (tenant, agent)'s
        desired state (what streams push)."""
        gen = self._next_generation() if gen is None else gen
        self.desired_marks[tenant] += 1
        self.db.execute(_LOG_CHANGE, (gen, tenant, agent))
        return gen

    def close(self, wait_s: float = 10.0) -> None:
        """Close the database once no thread uses it: a reader under way (the streams' poll of the change log, a
        push's read, in their worker threads) ends first; closing under it crashed the process (SQLite freed the
        connection while the reader's statement still ran). Waits ``wait_s`` at most, then leaves it open, says
        so."""
        if not self.lock.acquire(timeout=wait_s):
            log.warning(
                "the control database is still in use %g s after the fleet service stopped; it is left open",
                wait_s,
            )
            return
        try:
            self.db.close()
        finally:
            self.lock.release()

    def changes_since(self, generation: int) -> tuple[int, list[tuple[str, str]]]:
        """(latest generation, the (tenant, agent) pairs whose desired state changed after ``generation``)."""
        with self.lock:
            rows = self.db.execute(
                "SELECT generation, tenant, agent FROM changes WHERE generation > ? ORDER BY generation",
                (generation,),
            ).fetchall()
            if not rows:
                row = self.db.execute("SELECT value FROM counters WHERE key = 'generation'").fetchone()
                return max(generation, row[0] if row else 0), []
        for t in {t for _, t, _ in rows}:  # (another replica's changes among them)
            self.desired_marks[t] += 1
        return rows[-1][0], sorted({(t, a) for _, t, a in rows})

    def generation(self) -> int:
        with self.lock:
            row = self.db.execute("SELECT value FROM counters WHERE key = 'generation'").fetchone()
        return row[0] if row else 0

    def desired_many(
        self, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, list[dict], dict | None]]:
        """``desired_state`` of many (tenant, agent) pairs at once: one lock, one thread hop, and the rows read
        in chunks of agents (a connection storm or a fleet-wide rollout pushes to thousands of streams: one
        query per agent was seconds of round trips to PostgreSQL at 10,000 agents)."""
        wanted = set(keys)
        rows: dict[tuple[str, str], list] = {k: [] for k in wanted}
        agents = sorted({a for _, a in wanted})
        with self.lock:
            for i in range(0, len(agents), 500):
                part = agents[i : i + 500]
                for row in self.db.execute(
                    "SELECT tenant, agent, slot, package, version, digest, size, deployment_id, generation FROM "
                    f"desired WHERE agent IN ({','.join('?' * len(part))})",
                    tuple(part),
                ).fetchall():
                    if (row[0], row[1]) in wanted:
                        rows[(row[0], row[1])].append(row[2:])
            out = {}
            for k, r in rows.items():
                try:
                    out[k] = self._desired_of(r, lambda k=k: self._desired_rows(*k))
                except NotInTenant:  # its configuration gone twice: not pushed (it keeps what it runs)
                    continue
            return out

    def _slot_rows(self, tenant: str, slot: str) -> dict[str, tuple]:
        """agent -> (package, version, digest, deployment id) of every desired row of ``slot`` in ``tenant``:
        one read for a whole rollout's targets (one query per target was 10,000 round trips)."""
        return {
            r[0]: r[1:]
            for r in self.db.execute(
                "SELECT agent, package, version, digest, deployment_id FROM desired WHERE tenant = ? AND slot = ?",
                (tenant, slot),
            ).fetchall()
        }

    def _set_desired_many(self, rows: list[tuple], tenant: str, gen: int) -> None:
        """``_set_desired`` for a rollout step's agents at once: ``rows`` of (agent, slot, package, version,
        digest, size, deployment id), all in ``tenant`` and logged under one generation ``gen``. Two batched
        statements instead of two round trips per agent (a fleet-wide step on PostgreSQL: 20,000 round trips
        and ~5 s at 10,000 agents)."""
        self.desired_marks[tenant] += 1
        self.db.executemany(_LOG_CHANGE, [(gen, tenant, r[0]) for r in rows])
        self.db.executemany(
            _UPSERT_DESIRED,
            [(tenant, a, slot, pkg, ver, dig, size, dep, gen) for a, slot, pkg, ver, dig, size, dep in rows],
        )

    def _set_desired(
        self,
        agent: str,
        slot: str,
        package: str,
        version: str,
        digest: str,
        size: int,
        dep_id: str,
        tenant: str = T,
        gen: int | None = None,
    ) -> None:
        gen = self._changed(tenant, agent, gen)
        self.db.execute(_UPSERT_DESIRED, (tenant, agent, slot, package, version, digest, size, dep_id, gen))

    # ---- agents' side ----------------------------------------------------------------------------
    def desired_for(
        self, agent: str, labels: dict, slots: list[dict], health: dict, *, tenant: str = T
    ) -> tuple[int, list[dict]]:
        """(generation, desired model slots) of an agent (with its agent configuration: ``desired_state``)."""
        gen, out, _ = self.desired_state(agent, tenant=tenant)
        return gen, out

    def desired_state(self, agent: str, *, tenant: str = T) -> tuple[int, list[dict], dict | None]:
        """(generation, desired model slots, desired agent configuration or None) of an agent."""
        with self.lock:
            return self._desired_of(
                self._desired_rows(tenant, agent), lambda: self._desired_rows(tenant, agent)
            )

    def _desired_rows(self, tenant: str, agent: str) -> list:
        return self.db.execute(
            "SELECT slot, package, version, digest, size, deployment_id, generation FROM "
            "desired WHERE tenant = ? AND agent = ?",
            (tenant, agent),
        ).fetchall()

    def _desired_of(self, rows, again=None) -> tuple[int, list[dict], dict | None]:
        """(generation, model slots, agent configuration or None) from an agent's rows of ``desired``. The rows
        and a configuration's YAML are two reads: when the configuration is gone by the second (another
        replica moved the agent on and pruned it meanwhile, ``prune_finished``), the rows are read ``again``
        once (they name what it runs now). Still gone, NotInTenant, as before: "none" would tell the agent the
        fleet let go of it, and it would go back to its local configuration file; a heartbeat answered
        UNAVAILABLE keeps what it runs (``desired_many`` leaves that agent out of its answer, where it failed
        the stream push of every agent of its batch)."""
        gen = max((r[6] for r in rows), default=0)
        out: list[dict] = []
        config = None
        for s, p, v, d, z, dep, _ in rows:
            rollback = dep.endswith(ROLLBACK_SUFFIX)
            if s == CONFIG_SLOT:
                dep_id = dep.removesuffix(ROLLBACK_SUFFIX)
                try:
                    yaml = self._config_yaml(dep_id)
                except NotInTenant:
                    if again is not None:
                        return self._desired_of(again())
                    log.warning(
                        "the configuration %s an agent's desired state names is gone; nothing sent (the agent "
                        "keeps what it runs)",
                        dep_id,
                    )
                    raise
                config = {
                    "deployment_id": dep_id,
                    "digest": d,
                    "name": p,
                    "rollback": rollback,
                    "yaml": yaml.encode(),
                }
            else:
                out.append(
                    {
                        "slot": s,
                        "package": p,
                        "version": v,
                        "digest": d,
                        "size": z,
                        "deployment_id": dep,
                        "rollback": rollback,
                    }
                )
        return gen, out, config

    def _config_yaml(self, dep_id: str) -> str:
        """The YAML of a config deployment (immutable: cached per deployment id)."""
        if dep_id not in self._yaml_cache:
            if len(self._yaml_cache) > 256:
                self._yaml_cache.clear()
            self._yaml_cache[dep_id] = self._get(dep_id).get("config_yaml", "")
        return self._yaml_cache[dep_id]

    def deployed_to(self, agent: str, digest: str, *, tenant: str = T) -> bool:
        """Whether ``digest`` is in ``agent``'s desired state: the only packages it may download."""
        if "\x00" in digest:  # no digest holds one (PostgreSQL refuses it even in a comparison)
            return False
        with self.lock:
            return (
                self.db.execute(
                    "SELECT 1 FROM desired WHERE tenant = ? AND agent = ? AND digest = ? LIMIT 1",
                    (tenant, agent, digest),
                ).fetchone()
                is not None
            )

    def _take_run(
        self, tenant: str, agent: str, boot: str, seq: int, named: str | None = None
    ) -> tuple[bool, bool]:
        """(Inside a write.) Where the report ``seq`` of run ``boot`` stands among the agent's runs: (whether its run
        is the agent's newest, whether it is numbered above every report taken from that run). A run not seen yet
        is a new run of the agent (a restart, or its link re-made: ``FleetClient.new_run``) and becomes its newest;
        a run that a newer one followed is the previous run's late report. Runs are ordered by when the control
        state first took a report of theirs (one transaction at a time, every replica alike), never by a clock."""
        seq = min(int(seq), MAX_SEQ)
        rows = self._runs_of(tenant, agent)
        newest = max((r[1] for r in rows), default=0)
        mine = next((r for r in rows if r[0] == boot), None)
        if mine is None:
            self.db.execute(
                "INSERT INTO report_runs (tenant, agent, boot, run, seq, named) VALUES (?, ?, ?, ?, ?, ?)",
                (tenant, agent, boot, newest + 1, seq, named),
            )
            self.db.execute(
                "DELETE FROM report_runs WHERE tenant = ? AND agent = ? AND run <= ?",
                (tenant, agent, newest + 1 - RUNS_KEPT),
            )
            return True, True
        fresh = seq > mine[2]
        # the names given kept where the run has none: its first report taken a deployment step's (another replica's,
        # between ``note_run``'s read and this write), which names none, and this process, the run then known, never
        # notes it again (the chain of ``earlier_runs`` broken there)
        if fresh or (named is not None and mine[3] is None):
            self.db.execute(
                "UPDATE report_runs SET seq = ?, named = COALESCE(named, ?) WHERE tenant = ? AND agent = ? AND "
                "boot = ?",
                (max(seq, mine[2]), named, tenant, agent, boot),
            )
        return mine[1] == newest, fresh

    def note_run(
        self, agent: str, boot: str, seq: int, *, tenant: str = T, before: Sequence[str] = ()
    ) -> bool:
        """Whether a state report numbered ``seq`` of run ``boot`` is to be written: False for one of a run that a
        newer run of the agent followed, or numbered at or below a report already taken from its run (a step's,
        or the first state report of the run another replica took). The service asks only for a run it has taken
        no report of (``FleetServicer._fresh``): the reports of one run it orders itself. A run already known is
        only read (a service restarted: every agent's first report again, none a write); a new one is written,
        with the runs its report names as its process's runs before it (``before``: run ids; ``earlier_runs``),
        and a known one that has none kept gets them (its first report here a deployment step's, which names none)."""
        boot, seq = _run_key(boot), min(int(seq), MAX_SEQ)
        named = json.dumps([_run_key(b) for b in before]) if before else None
        with self.lock:
            rows = self._runs_of(tenant, agent)
            mine = next((r for r in rows if r[0] == boot), None)
            if mine is not None:
                if named is not None and mine[3] is None:
                    with self._write():
                        self.db.execute(
                            "UPDATE report_runs SET named = ? WHERE tenant = ? AND agent = ? AND boot = ? AND "
                            "named IS NULL",
                            (named, tenant, agent, boot),
                        )
                return mine[1] == max(r[1] for r in rows) and seq > mine[2]
            with self._write():
                return all(self._take_run(tenant, agent, boot, seq, named))

    def keep_step(
        self,
        agent: str,
        dep_id: str,
        step: dict,
        was: dict,
        run: str,
        *,
        tenant: str = T,
        hold_s: float,
        most: int,
    ) -> None:
        """A step ``on_report`` kept late that its agent was not told of (its clone hold, which ends ``hold_s`` from
        now), of run ``run``, with its target's recorded report then (``was``): kept for every replica to take again
        after the hold (``take_kept``), replacing the deployment's step kept before; at most ``most`` deployments'
        of the agent (the oldest kept dropped)."""
        now = self.clock()
        with self._write():
            self.db.execute(
                "DELETE FROM kept_steps WHERE tenant = ? AND agent = ? AND deployment_id = ?",
                (tenant, agent, dep_id),
            )
            self.db.execute(
                "INSERT INTO kept_steps (tenant, agent, deployment_id, step, was, runs, until, kept_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tenant,
                    agent,
                    dep_id,
                    json.dumps(step),
                    json.dumps(was),
                    json.dumps([_run_key(run)]),
                    now + hold_s,
                    now,
                ),
            )
            rows = self.db.execute(
                "SELECT deployment_id FROM kept_steps WHERE tenant = ? AND agent = ? ORDER BY kept_at DESC",
                (tenant, agent),
            ).fetchall()
            for (old,) in rows[most:]:
                self.db.execute(
                    "DELETE FROM kept_steps WHERE tenant = ? AND agent = ? AND deployment_id = ?",
                    (tenant, agent, old),
                )
        self.kept_agents = self.kept_agents | {(tenant, agent)}

    def hold_kept(self, agent: str, *, tenant: str = T, hold_s: float) -> None:
        """The agent's clone hold ends ``hold_s`` from now (0: it ended): its kept steps held until then."""
        with self._write():
            self.db.execute(
                "UPDATE kept_steps SET until = ? WHERE tenant = ? AND agent = ?",
                (self.clock() + hold_s, tenant, agent),
            )

    def kept_steps(self, agent: str, *, tenant: str = T) -> dict[str, tuple[dict, dict, list[str], float]]:
        """The agent's kept steps: deployment id -> (step, its target's recorded report then, its runs, the hold's
        end in wall-clock seconds). Only read."""
        with self.lock:
            rows = self.db.execute(
                "SELECT deployment_id, step, was, runs, until FROM kept_steps WHERE tenant = ? AND agent = ? "
                "ORDER BY kept_at",
                (tenant, agent),
            ).fetchall()
        return {
            d: (json.loads(step), json.loads(was), json.loads(runs), until)
            for d, step, was, runs, until in rows
        }

    def take_kept(
        self,
        agent: str,
        boot: str,
        runs: set[str],
        *,
        tenant: str = T,
        held: bool = False,
        most_runs: int = 3,
        record: tuple[str, int] | None = None,
        failed: list[Exception] | None = None,
    ) -> tuple[dict[str, tuple[dict, dict]], bool]:
        """The agent's report of run ``boot`` named ``runs`` (its process's runs before it, or the runs those named):
        its kept steps
        of one of those runs taken off the kept ones, in one write (two replicas never take one step), and whether
        any are left. Held (``held``: this replica's clone hold of the agent, or the hold's end kept with the step
        not reached): none taken, and a step naming one of ``runs`` gets ``boot`` among its runs (the same gateway's,
        ``FleetServicer._retake_untold``), the step's own run first, at most ``most_runs``. With ``record`` (the
        report: boot id, number), each step is recorded under it (``retake_kept``) in that same write, and only those
        recorded are returned: the row goes with its step's record, never before it (taken in one transaction and
        recorded in the next, a replica stopped in between, or the record's write failing, lost the step and its
        rollout stalled until STEP_TIMEOUT_S). A step whose record fails stays kept (its savepoint rolled back; the
        failure appended to ``failed``), taken again at a later report, at most until KEEP_KEPT_S."""
        now, mine = self.clock(), _run_key(boot)

        def turn(
            of: list[str], until: float
        ) -> str | None:  # "take", "name" (the run made one of its runs), None
            # (or the run was made one of its runs during the hold: its runs before reached the step's through the
            # runs each named, read once a run, ``FleetServicer._retake_through_links``; at its reports after the
            # hold the step is taken, not left to the gateway's next run, which only a link lost draws)
            if not runs.intersection(of) and mine not in of[1:]:
                return None
            if held or until > now:
                return "name" if mine not in of else None
            return "take"

        def rows() -> list:
            return self.db.execute(
                "SELECT deployment_id, step, was, runs, until FROM kept_steps WHERE tenant = ? AND agent = ?",
                (tenant, agent),
            ).fetchall()

        with self.lock:
            # read first: during a hold every report of the agent comes here, most of them changing nothing
            kept = rows()
            if not any(turn(json.loads(r[3]), r[4]) for r in kept):
                if not kept:
                    self.kept_agents = self.kept_agents - {(tenant, agent)}
                return {}, bool(kept)
            taken: dict[str, tuple[dict, dict]] = {}
            gone = 0
            with self._write():
                kept = rows()
                for dep_id, step, was, of_json, until in kept:
                    of = json.loads(of_json)
                    what = turn(of, until)
                    if what == "name":
                        self.db.execute(
                            "UPDATE kept_steps SET runs = ? WHERE tenant = ? AND agent = ? AND deployment_id = ?",
                            (json.dumps([of[0], *[*of[1:], mine][-most_runs:]]), tenant, agent, dep_id),
                        )
                    elif what == "take":
                        done = (json.loads(step), json.loads(was))
                        answer: bool | None = True
                        if record is not None:
                            answer = self._recorded(
                                agent, dep_id, *done, tenant=tenant, report=record, failed=failed
                            )
                            if answer is None:  # (its record failed: kept)
                                continue
                        if answer:  # (else its target moved on: the step is dropped, recorded nowhere)
                            taken[dep_id] = done
                        gone += 1
                        self.db.execute(
                            "DELETE FROM kept_steps WHERE tenant = ? AND agent = ? AND deployment_id = ?",
                            (tenant, agent, dep_id),
                        )
            if gone == len(kept):
                self.kept_agents = self.kept_agents - {(tenant, agent)}
            return taken, gone < len(kept)

    def _recorded(
        self,
        agent: str,
        dep_id: str,
        step: dict,
        was: dict,
        *,
        tenant: str,
        report: tuple[str, int],
        failed: list[Exception] | None,
    ) -> bool | None:
        """(Inside ``take_kept``'s write.) The kept step recorded under ``report`` (``retake_kept``) behind a savepoint:
        whether it was, or None where that failed (its writes rolled back, the failure appended to ``failed``). A
        connection broken meanwhile, or SQLite rolling the write back itself (a full disk, an I/O error), took the
        transaction: the failure is raised as it is (rolled back to a savepoint gone, the error named the savepoint, not
        the cause), the whole write rolled back, every step kept."""
        self.db.execute("SAVEPOINT kept_step")
        try:
            answer = bool(self.retake_kept(agent, dep_id, step, was, tenant=tenant, report=report))
        except Exception as exc:
            if not self.db.in_transaction:
                raise
            self.db.execute("ROLLBACK TO SAVEPOINT kept_step")
            self.db.execute("RELEASE SAVEPOINT kept_step")
            if failed is not None:
                failed.append(exc)
            return None
        self.db.execute("RELEASE SAVEPOINT kept_step")
        return answer

    def _look_at_kept(self) -> None:
        """(Inside the tick's write.) Kept steps older than KEEP_KEPT_S dropped; which agents have kept steps read
        (``kept_agents``: the service looks at an agent's kept steps at its reports only when it has some)."""
        self.db.execute("DELETE FROM kept_steps WHERE kept_at < ?", (self.clock() - KEEP_KEPT_S,))
        self.kept_agents = {
            (t, a) for t, a in self.db.execute("SELECT DISTINCT tenant, agent FROM kept_steps").fetchall()
        }

    def earlier_runs(self, agent: str, before: Sequence[str], *, tenant: str = T) -> set[str]:
        """The agent's runs ``before`` names (a state report's runs before its own) and, through the runs each of
        those named in turn (``note_run``), every run before them the control state remembers (RUNS_KEPT): the
        same gateway's runs, whichever replica each reached. Only read."""
        with self.lock:
            named = {r[0]: r[3] for r in self._runs_of(tenant, agent)}
        seen: set[str] = set()
        todo = [_run_key(b) for b in before]
        while todo:
            run = todo.pop()
            if run in seen:
                continue
            seen.add(run)
            try:
                names = json.loads(named.get(run) or "[]")
            except ValueError:  # (not written by this code)
                continue
            if isinstance(names, list):
                todo += [n for n in names if isinstance(n, str)]
        return seen

    def newest_run(self, agent: str, boot: str, *, tenant: str = T) -> bool:
        """Whether run ``boot`` is the newest of the agent's runs the control state remembers, or one it does not
        remember (nothing to order it by): only read. The service asks it when the agent's row holds a report of
        another run than the one it knows (``FleetServicer._late_by_row``: two live gateways of one identity, each
        reaching another replica)."""
        boot = _run_key(boot)
        with self.lock:
            rows = self._runs_of(tenant, agent)
        mine = next((r for r in rows if r[0] == boot), None)
        return mine is None or mine[1] == max(r[1] for r in rows)

    def _runs_of(self, tenant: str, agent: str) -> list[tuple[str, int, int, str | None]]:
        """The agent's runs remembered: (boot id, its place in the order the runs began: 1, 2, ..., highest number
        taken, the runs its report named before it: JSON or None)."""
        return self.db.execute(
            "SELECT boot, run, seq, named FROM report_runs WHERE tenant = ? AND agent = ?", (tenant, agent)
        ).fetchall()

    def _run_order(self, tenant: str, agent: str) -> dict[str, int]:
        """boot id -> its place among the agent's runs remembered (``_record_newer``)."""
        return {boot: run for boot, run, *_ in self._runs_of(tenant, agent)}

    def on_report(
        self,
        agent: str,
        dep_id: str,
        slot: str,
        version: str,
        step: str,
        ok: bool,
        reason: str,
        health: dict,
        *,
        tenant: str = T,
        report: tuple[str, int] | None = None,
        was: dict | None = None,
        tick: bool = True,
    ) -> bool | str:
        """Record an agent's step; False (nothing recorded) for a deployment that is not the agent's: unknown, of
        another tenant, or not targeting it (the service refuses those alike); ``KEPT_LATE`` (truthy) for a step
        kept as the target's last report only because it was made before one taken (the service tells the agent,
        which resends it under a new run unless it made a later step of the deployment since: a restored VM's
        memory, not a reorder). ``report``: the step's (boot id, number) among its agent's reports (v4 agents; a
        number from 1), kept with a verdict it records (``_ways_back``). ``was``: only while the target's recorded
        report is ``was["report"]`` and its last report this step (``retake_kept``), False else. ``tick``: the rollout
        advanced at once (not inside another write: ``retake_kept``)."""
        report = (_run_key(report[0]), report[1]) if report else None
        mark = {"report": {"boot": report[0], "seq": report[1]}} if report and report[0] and report[1] else {}
        with self._write():
            try:
                dep = self._get(dep_id)
            except ValueError:
                return False
            if (
                dep.get("tenant", T) != tenant
            ):  # an agent of another tenant with the same id: not its deployment
                return False
            t = dep["targets"].get(agent)
            if t is None:
                return False
            if was is not None and (
                t.get("report") != was.get("report")
                or t.get("last_report") != {"step": step, "version": version, "ok": ok, "reason": reason}
            ):
                return False  # a step taken (or kept) since, here or by another replica: not undone
            # made before the step its target recorded last: of a run that a newer run of the agent followed
            # (``_take_run``) and the target's step of a newer run, or of the same run and numbered lower. A step
            # of a previous run is taken when the target recorded none of a newer run: only a state report of the
            # newer run was taken (a step in flight on a replica stopping gracefully, or across the agent's
            # restart; the agent says healthy once per deployment, so dropping it stalled the rollout)
            late = (
                report is not None
                and bool(mark)
                and not self._take_run(tenant, agent, *report)[0]
                and _recorded_by_a_later_run(t, report[0], self._run_order(tenant, agent))
            )
            if late or _held_on_the_way(t, mark.get("report")):
                # made before the step already recorded (a call taken late, a retry), received after it: kept as
                # the last report only. Taken, a late ``active`` turned a healthy target back to under way: a step
                # waited for a healthy report that never came again, and a newer rollout read the completed one
                # as under way on the agent (its previous version: a halt sent the agent below it)
                t["last_report"] = {"step": step, "version": version, "ok": ok, "reason": reason}
                self._put(dep)
                return KEPT_LATE
            if t.get("status") in _NOT_OURS:  # a newer rollout of the slot owns this agent now (or it left)
                t["last_report"] = {"step": step, "version": version, "ok": ok, "reason": reason}
                self._put(dep)
                return True
            if t.get("status") in ("rolling_back", "rolled_back_by_fleet") and version == dep["version"]:
                # a late step of the halted version (sent before the agent heard of the halt): it tells the
                # admin nothing about going back, unless the agent rolled it back itself
                t["last_report"] = {"step": step, "version": version, "ok": ok, "reason": reason}
                if not ok and step in ("rolled_back", "failed"):
                    t.pop("report", None)
                    t.update(status=step, reason=reason or t.get("reason", ""), updated=self.clock(), **mark)
                elif ok and step == "rolled_back_by_fleet":
                    t.pop("report", None)
                    t.update(status=step, reason=reason or t.get("reason", ""), updated=self.clock(), **mark)
                self._put(dep)
                return True
            if (
                dep["state"] in ("halted", "aborted")
                and t.get("status") in ("rolled_back", "failed")
                and version == dep["version"]
                and ok
                and step != "rolled_back_by_fleet"
            ):
                # a later step of the version this agent rolled back or failed, once the rollout ended (a late
                # report, or the version installed again by other means): the verdict stays, as the record a
                # newer rollout reads to choose the agent's previous version (``_ways_back``)
                t["last_report"] = {"step": step, "version": version, "ok": ok, "reason": reason}
                self._put(dep)
                return True
            if version != dep["version"] and step != "rolled_back_by_fleet":
                t["last_report"] = {"step": step, "version": version, "ok": ok, "reason": reason}
                prev = dep["previous"].get(agent) or {}
                if t.get("status") == "rolling_back" and version == prev.get("version"):
                    # the agent's account of going back to its previous version, after a halt or an abort
                    if ok and step in ("active", "healthy"):
                        t.pop("report", None)
                        t.update(
                            status="rolled_back_by_fleet", reason=f"rollout halted; it runs {version}", **mark
                        )
                        self._not_going_back(tenant, agent, _slot(dep), dep["id"])
                    elif not ok or step.endswith("_retry"):
                        t["reason"] = f"rollout halted; going back to {version}: {step}: {reason}"[:2000]
                    t["updated"] = self.clock()
                self._put(dep)
                return True
            t.pop("report", None)
            t.update(
                status=step if ok else ("rolled_back" if step == "rolled_back" else "failed"),
                reason=reason or t.get("reason", ""),
                updated=self.clock(),
                health=health,
                **mark,
            )
            err = health.get("error_rate") if isinstance(health, dict) else None
            max_err = dep["gate"].get("max_error_rate")
            if ok and err is not None and max_err is not None and err > max_err:
                t.update(status="failed", reason=f"error rate {err:.1%} above the gate's {max_err:.1%}")
            if t["status"] in _ON_IT and dep.get("kind") != "config":
                self._gone_back(dep, agent, version)
            if dep["state"] == "halted" and t["status"] in ("failed", "rolled_back"):
                # an agent a withdrawal's halt left on the version (``_halt_withdrawn``) went back by itself since:
                # its desired state names its previous version, not the withdrawn one
                self._roll_back(dep, [agent])
            self._put(dep)
        if tick:
            self.tick()
        return True

    def retake_kept(
        self, agent: str, dep_id: str, step: dict, was: dict, *, tenant: str = T, report: tuple[str, int]
    ) -> bool | str:
        """A step ``on_report`` kept late that its agent was not told of (its clone hold: ``FleetServicer._tell_late``)
        recorded under ``report``, a run of the agent taken since, as the agent sends a step told late again
        (``FleetClient._resend``): only while its target is as the step left it (``was``: its last report that step,
        its recorded report the same: no step taken since). ``on_report``'s answer, or False. Checked inside
        ``on_report``'s write transaction: checked before it, another replica's step taken between the two was
        written over. Without ``on_report``'s tick: run inside ``take_kept``'s write and the step's savepoint, a tick
        that raised rolled the record back, and its marks in memory (``_fill_going_back``'s halts seen) outlived a
        write that then failed; the service's tick advances the rollout within its ``tick_s``."""
        if was.get("last_report") != {k: step[k] for k in ("step", "version", "ok", "reason")}:
            return False
        return self.on_report(
            agent,
            dep_id,
            step["slot"],
            step["version"],
            step["step"],
            step["ok"],
            step["reason"],
            step["health"],
            tenant=tenant,
            report=report,
            was=was,
            tick=False,
        )

    def _gone_back(self, newer: dict, agent: str, version: str) -> None:
        """A rollout (an admin's ``rollback``, or a newer rollout that took the agent over) runs on ``agent`` (it
        reported ``version`` active or healthy): a halted or aborted rollout of the slot created before it, still
        waiting for the agent to go back (``rolling_back``), is told it did. Before, that target said
        ``rolling_back`` for good: the agent reported its way back (or on) to the newer deployment, never to the
        halted one. Read through ``going_back`` (the agent's rows for the slot), not every halted rollout. A newer
        rollout of the halted version itself (given again) makes the target ``superseded``: it never went back."""
        tenant, slot, now = newer.get("tenant", T), _slot(newer), self.clock()
        by = (
            f"the rollback {newer['id']}"
            if newer.get("rollback")
            else f"taken over by deployment {newer['id']}"
        )
        for (dep_id,) in self.db.execute(
            "SELECT deployment_id FROM going_back WHERE tenant = ? AND agent = ? AND slot = ?",
            (tenant, agent, slot),
        ).fetchall():
            if dep_id == newer["id"]:
                continue
            row = self.db.execute("SELECT doc FROM deployments WHERE id = ?", (dep_id,)).fetchone()
            d: dict = json.loads(row[0]) if row else {}
            t = (d.get("targets") or {}).get(agent)
            if not t or t.get("status") != "rolling_back" or d["state"] not in ("halted", "aborted"):
                self._not_going_back(tenant, agent, slot, dep_id)  # (its status moved on since)
                continue
            if d["created"] > newer["created"]:
                continue
            if d["version"] == version:  # the halted version given again by the newer one: it never went back
                t.update(
                    status=SUPERSEDED,
                    reason=f"rollout halted; it runs {version} again ({by})",
                    updated=now,
                )
            else:
                t.update(
                    status="rolled_back_by_fleet",
                    reason=f"rollout halted; it runs {version} ({by})",
                    updated=now,
                )
            self._put(d)
            self._not_going_back(tenant, agent, slot, dep_id)

    def _not_going_back(self, tenant: str, agent: str, slot: str, dep_id: str) -> None:
        self.db.execute(
            "DELETE FROM going_back WHERE tenant = ? AND agent = ? AND slot = ? AND deployment_id = ?",
            (tenant, agent, slot, dep_id),
        )

    # ---- admin side ----------------------------------------------------------------------------
    def _resolve(self, package: str, version: str, tenant: str = T) -> dict:
        """The tenant's published entry of ``package`` (``version``, or the latest). A name that is not a package
        name, an entry of another name, and an entry whose file cannot be read are all refused exactly as a
        package that is not in the registry: nothing in the answer says whether it exists elsewhere, nor where
        the registry lives on the server."""
        reg = self.registry.for_tenant(tenant)
        missing = NotInTenant(f"{str(package)[:80]} {str(version)[:64] or '(latest)'} is not in the registry")
        entry = reg.get(package, version) if version else reg.latest(package)
        if entry is None or entry.get("name") != package:
            raise missing
        if entry["status"] != "published":
            why = f" ({str(entry['withdrawn_reason'])[:200]})" if entry.get("withdrawn_reason") else ""
            raise ValueError(f"{package} {entry['version']} is {entry['status']}{why}, not published")
        if twins := reg.twins(package, entry["version"]):
            # a pair published before the registry refused it: a deploy of one installed the other model over it at
            # an agent, neither an upgrade nor a rollback (and "the latest" was either)
            raise ValueError(
                f"{package} {entry['version']} orders the same as {', '.join(twins)}, also published (build metadata "
                "after '+' and leading zeros do not order versions): agents would take one for the other, and a "
                "deploy would install one model over the other; withdraw all but one (cloud-trainer withdraw "
                f"{package} VERSION --reason ...) and deploy that one, or publish the model under a version above "
                "the latest"
            )
        try:
            entry["size"] = reg.package_path(entry).stat().st_size
            self._check_signer(reg.package_path(entry), entry, tenant)
        except OSError as exc:
            log.warning(
                "registry of tenant %s: %s %s cannot be read: %s", tenant, package, entry["version"], exc
            )
            raise missing from None
        return entry

    def _check_signer(self, path: Path, entry: dict, tenant: str) -> None:
        """The tenant's current package key, or one it retired (``pki tenant --rotate`` keeps it in ``retired/``
        until an operator removes it): after a rotation the versions signed before it are still deployed and
        rolled back to (the agents trust both keys meanwhile); a removed key's versions are refused."""
        key = self.keys_dir / "tenants" / tenant / "signing.pub" if self.keys_dir else None
        if key is None:
            return
        if not key.exists():
            self._check_not_anothers(path, entry, tenant)
            return
        from model_packager import load_trusted_keys, verify_package
        from model_packager.errors import PackageError

        retired = sorted((key.parent / "retired").glob("*.pub"))
        try:
            verify_package(path, load_trusted_keys([key, *retired]))
        except PackageError as exc:
            raise NotInTenant(
                f"{entry['name']} {entry['version']} is not signed by this tenant's package key "
                f"({str(exc)[:200]}); sign it with the tenant's key and publish it again"
            ) from exc

    def _check_not_anothers(self, path: Path, entry: dict, tenant: str) -> None:
        """A tenant without a package key in the PKI folder (its packages signed by a key of its own, which its
        agents trust and the fleet does not know): a package signed by another tenant's key, current or retired
        (past its not-after too), is refused. It was rolled out, and the tenant's agents refused it at the first
        canary (``signed by key ..., which is not among the trusted keys``): the rollout halted there. A package
        signed by any other key is the agents' to judge, as before."""
        kid = self._anothers_signer(path, tenant)
        if kid is not None:
            raise AnothersKey(
                f"{entry['name']} {entry['version']} is signed by key {kid}, a package key of another tenant of "
                "this service, which this tenant's agents do not trust; sign it with this tenant's own key and "
                "publish it again"
            )

    def _anothers_signer(self, path: Path, tenant: str) -> str | None:
        """The key id that signed the package at ``path`` when it is a package key (current or retired) of a
        tenant other than ``tenant``, else None. The signature alone is checked (one byte of the model changed
        does not make another tenant's package this tenant's), and only against the key its ``manifest.sig``
        names, looked up in ``_package_keys`` (the PKI folder read once, again only when it changes). A package
        that cannot be read or whose signature does not check is the agents' to judge: None."""
        from model_packager import package_signer
        from model_packager.errors import PackageError

        keys, owners = self._package_keys()
        if not keys:
            return None
        try:
            kid = package_signer(path, keys)
        except PackageError:
            return None
        return kid if owners.get(kid, set()) - {tenant} else None

    def _package_keys(self) -> tuple:
        """(every tenant's package keys as one ``TrustedKeys``, key id -> the tenants whose folder holds it),
        read from ``<keys_dir>/tenants/*/signing.pub`` and ``retired/*.pub`` and kept until the folders change:
        their modification times (a tenant added, a key rotated, retired or removed), the ``signing.pub`` files'
        and those of the files skipped (mended in place). Parsing every tenant's key files at each keyless
        tenant's rollout took 1.5 s per 1,000 tenants inside the lock every tenant's calls wait for; a look now
        is three stats a tenant. Each file is read on its own: one that cannot be (unreadable, not a key, every
        user may change it, a not-after that is not a date) is skipped with a WARNING naming it, never failing
        another tenant's rollouts (it did, every tick)."""
        from model_packager.keys import TrustedKeys, load_trusted_keys

        assert self.keys_dir is not None
        with self.lock:
            root = str(self.keys_dir / "tenants")

            def mark(p: str, marks: list) -> None:
                try:
                    st = os.stat(p)
                    marks.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
                except OSError:
                    marks.append(None)

            marks: list = []
            mark(root, marks)
            try:
                names = sorted(os.listdir(root))
            except OSError:
                names = []
            for name in names:
                marks.append(name)
                for p in (f"{root}/{name}", f"{root}/{name}/signing.pub", f"{root}/{name}/retired"):
                    mark(p, marks)
            skipped: list = []
            for bad in self._bad_keys:
                mark(str(bad), skipped)
            if self._keys_cache is not None and self._keys_cache[0] == (marks, skipped):
                return self._keys_cache[1]
            keys: dict = {}
            owners: dict[str, set[str]] = {}
            bad_keys: list[Path] = []
            for folder in (Path(root) / name for name in names):
                try:
                    pubs = [folder / "signing.pub", *sorted((folder / "retired").glob("*.pub"))]
                except OSError:
                    pubs = [folder / "signing.pub"]
                for pub in pubs:
                    try:
                        if not pub.is_file():
                            continue
                        one = load_trusted_keys([pub])
                    except Exception as exc:  # any error: one tenant's file never fails another's
                        log.warning(
                            "package key %s cannot be read; skipped (tenants without a package key of their own "
                            "are not refused what it signed): %s",
                            pub,
                            exc,
                        )
                        bad_keys.append(pub)
                        continue
                    for kid, key in one.keys.items():
                        keys[kid] = key
                        owners.setdefault(kid, set()).add(folder.name)
            self._bad_keys = bad_keys
            skipped = []
            for bad in bad_keys:
                mark(str(bad), skipped)
            found = (TrustedKeys(keys), owners)
            self._keys_cache = ((marks, skipped), found)
            return found

    def _targets(
        self, agents: list[str], selector: dict, tenant: str = T, known: list[dict] | None = None
    ) -> list[str]:
        """``known``: the tenant's agents as ``Store.agents`` gives them, when the caller has read them."""
        known = self.store.agents(tenant=tenant) if known is None else known
        if agents:
            ids = {a["id"] for a in known}
            unknown = sorted(set(agents) - ids)
            if unknown:  # another tenant's agent gets the answer of an agent that does not exist
                raise NotInTenant(
                    f"agent {unknown[0][:64]!r} is not registered (an agent registers with its first heartbeat)"
                )
            return sorted(set(agents))
        out = [
            a["id"]
            for a in known
            if all(fnmatch.fnmatch(str(a["labels"].get(k, "")), v) for k, v in selector.items())
        ]
        if not out:
            # the tenant has no such agent (another tenant's sites and lines match nothing here): refused alike
            raise NotInTenant(f"no registered agent matches the selector {_shown(selector)}")
        return sorted(out)

    def _check_not_a_downgrade(
        self, entry: dict, slot: str, targets: list[str], tenant: str = T, known: list[dict] | None = None
    ) -> None:
        want = version_key(entry["version"])
        running = {
            a["id"]: next((s for s in a["slots"] if s["slot"] == slot), None)
            for a in (self.store.agents(tenant=tenant) if known is None else known)
        }
        desired = self._slot_rows(tenant, slot)
        for agent in targets:
            have = []
            cur = running.get(agent)
            if cur and cur.get("package") == entry["name"] and cur.get("version"):
                have.append(cur["version"])
            row = desired.get(agent)
            if row and row[0] == entry["name"] and not row[3].endswith(ROLLBACK_SUFFIX):
                have.append(row[1])
            for v in have:
                try:
                    newer = version_key(v) > want
                except ValueError:
                    continue
                if newer:
                    raise ValueError(
                        f"{entry['name']} {entry['version']} is older than {v} on agent {agent} "
                        f"(slot {slot}); versions only go up: use rollback to downgrade"
                    )

    def create(self, req: dict, *, rollback: bool = False, tenant: str = T) -> dict:
        _check_texts(req)
        with self._write():
            slot = req.get("slot") or ""
            if slot.startswith("@"):
                raise ValueError(
                    f"slot {slot[:64]!r}: names starting with '@' are the fleet's own (@config: the "
                    "agent configuration); use the model slot name of the agents' configs"
                )
            if slot.startswith("./") or slot.endswith("/"):
                raise ValueError(_spelt_slot(slot))
            self._check_rollouts_in_progress(tenant, rollback)
            entry = self._resolve(req["package"], req.get("version") or "", tenant)
            known = self.store.agents(tenant=tenant)  # read once: 10,000 agents' labels and slots
            targets = self._targets(req.get("agents") or [], req.get("selector") or {}, tenant, known)
            if not slot:
                raise ValueError("slot is required (the model slot name in the agents' configs)")
            if not rollback:
                self._check_not_a_downgrade(entry, slot, targets, tenant, known)
            steps = ["100%"] if req.get("strategy") == "all_at_once" else (req.get("steps") or ["1", "100%"])
            wait_s = _check_rollout(steps, req.get("wait_s"), len(targets))
            wanted = set(targets)
            current = {
                a["id"]: _reported(a, next((s for s in a["slots"] if s["slot"] == slot), None))
                for a in known
                if a["id"] in wanted
            }
            previous = self._ways_back(tenant, slot, current)
            dep = Deployment(
                id=self._new_id(),
                tenant=tenant,
                kind="model",
                created=self.clock(),
                package=entry["name"],
                version=entry["version"],
                digest=entry["digest"],
                size=entry["size"],
                slot=slot,
                strategy=req.get("strategy") or "canary",
                steps=steps,
                wait_s=wait_s,
                gate=req.get("gate") or {},
                previous=previous,
                rollback=rollback,
                targets={a: {} for a in targets},
                selector={} if req.get("agents") else dict(req.get("selector") or {}),
            ).doc()
            self._supersede(dep)
            self._put(dep)
        self.tick()
        return self._get(dep["id"])

    def _check_rollouts_in_progress(self, tenant: str, rollback: bool = False) -> None:
        """``TooManyRollouts`` when the tenant has ``MAX_ROLLOUTS_PER_TENANT`` rollouts in progress (model or
        configuration), or, for a rollback, ``MAX_ROLLBACKS_PAST_LIMIT`` more."""
        n = self.db.execute(
            "SELECT COUNT(*) FROM deployments WHERE tenant = ? AND state IN ('running', 'paused')", (tenant,)
        ).fetchone()[0]
        if n >= MAX_ROLLOUTS_PER_TENANT + (MAX_ROLLBACKS_PAST_LIMIT if rollback else 0):
            past = f" (a rollback: {MAX_ROLLBACKS_PAST_LIMIT} more)" if rollback else ""
            raise TooManyRollouts(
                f"tenant {tenant}: {n} rollouts in progress (running or paused), the most a tenant may have at "
                f"once is {MAX_ROLLOUTS_PER_TENANT}{past}; nothing was stored: abort the ones no longer wanted "
                "(`cloud-trainer deploy --abort ID`) or wait for them to end"
            )

    def create_config(self, req: dict, *, rollback: bool = False, tenant: str = T) -> dict:
        """Roll an agent configuration out (``req``: ``config_yaml`` bytes or text, ``config_name``, ``agents`` or
        ``selector``, ``strategy``, ``steps``, ``wait_s``, ``gate``). ``ValueError`` naming the field for YAML the
        agent's validator refuses; nothing is stored then."""
        import hashlib
        import re

        raw = req.get("config_yaml") or b""
        raw = raw.encode() if isinstance(raw, str) else bytes(raw)
        _check_texts(req)
        name = req.get("config_name") or "agent-config"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
            raise ValueError(f"config name {name[:80]!r}: use letters, digits, '.', '_' and '-' (at most 63)")
        with self.lock:  # refused before any work (and again in the write below, for a race)
            self._check_rollouts_in_progress(tenant, rollback)
        self._targets(req.get("agents") or [], req.get("selector") or {}, tenant)
        self.config_validator(raw, name)  # outside the lock: it runs the agent's validator (a subprocess)
        digest = hashlib.sha256(raw).hexdigest()
        with self._write():
            self._check_rollouts_in_progress(tenant, rollback)
            targets = self._targets(req.get("agents") or [], req.get("selector") or {}, tenant)
            previous = {}
            current = self._slot_rows(tenant, CONFIG_SLOT)
            for a in targets:
                row = current.get(a)
                if row:
                    previous[a] = {
                        "package": row[0],
                        "version": row[2],  # a config's version is its digest
                        "digest": row[2],
                        "deployment_id": row[3].removesuffix(ROLLBACK_SUFFIX),
                    }
            steps = ["100%"] if req.get("strategy") == "all_at_once" else (req.get("steps") or ["1", "100%"])
            wait_s = _check_rollout(steps, req.get("wait_s"), len(targets))
            dep = Deployment(
                id=self._new_id(),
                tenant=tenant,
                kind="config",
                created=self.clock(),
                package=name,
                version=digest,
                digest=digest,
                size=len(raw),
                strategy=req.get("strategy") or "canary",
                steps=steps,
                wait_s=wait_s,
                gate=req.get("gate") or {},
                previous=previous,
                rollback=rollback,
                targets={a: {} for a in targets},
                selector={} if req.get("agents") else dict(req.get("selector") or {}),
                config_yaml=raw.decode(),
            ).doc()
            self._supersede(dep)
            self._put(dep)
        self.tick()
        return self._get(dep["id"])

    def _supersede(self, new: dict) -> None:
        """A new rollout (a rollback too) of a slot takes its agents over from older rollouts of the same slot
        still in progress (running or paused) in the tenant: their targets among them become ``superseded``
        (never assigned, waited for or rolled back by the older one again), and an older rollout left with
        no target of its own is ``aborted``, saying by which. Without this both rollouts wrote the same
        desired rows: the older one's later steps and halts overwrote the newer one's version, and a
        deployment said ``completed`` for agents that ran another version. A model slot's desired row that the
        older rollout wrote for a target taken over is removed: the agent keeps what it runs until the newer
        rollout's step gives it its version (an agent offline at the older one's step, back days later,
        installed the older rollout's version that no rollout wanted any more)."""
        tenant, slot, mine = new.get("tenant", T), _slot(new), set(new["targets"])
        rows = self._slot_rows(tenant, slot) if new.get("kind") != "config" else {}
        # a completed rollout's group no longer gives its version to gateways that join: the newest intent wins (a
        # rollback of the slot must never be undone by a newcomer getting the version rolled back from)
        self.db.execute("DELETE FROM following WHERE tenant = ? AND slot = ?", (tenant, slot))
        what = f"deployment {new['id']} ({Deployment.from_doc(new).what()})"
        now = self.clock()
        for (doc,) in self.db.execute(
            "SELECT doc FROM deployments WHERE tenant = ? AND state IN ('running', 'paused')", (tenant,)
        ).fetchall():
            old = json.loads(doc)
            if old["id"] == new["id"] or _slot(old) != slot:
                continue
            taken = [a for a, t in old["targets"].items() if a in mine and t["status"] != SUPERSEDED]
            if not taken:
                continue
            for a in taken:
                old["targets"][a].update(status=SUPERSEDED, reason=f"taken over by {what}", updated=now)
                if a in rows and rows[a][3] == old["id"]:  # the older rollout's step, maybe never installed
                    self.db.execute(
                        "DELETE FROM desired WHERE tenant = ? AND agent = ? AND slot = ?", (tenant, a, slot)
                    )
                    self._changed(tenant, a)
            if all(t["status"] == SUPERSEDED for t in old["targets"].values()):
                old["state"] = "aborted"
                old["reason"] = f"superseded by {what}, which took over every target"
            else:
                old["reason"] = f"{len(taken)} of its agents taken over by {what}"
            self._put(old)

    def _step_size(self, spec: str, n: int) -> int:
        return _step_size(spec, n)

    @contextlib.contextmanager
    def _write(self):
        """One write transaction (nested calls join the outer one). ``BEGIN IMMEDIATE`` also serializes the
        service processes that share this file (replicas on one host): each reads a deployment and writes it
        back inside the same transaction, so no replica overwrites another's step."""
        with self.lock:
            own = not self.db.in_transaction
            if own:
                self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
                if own:
                    self.db.execute("COMMIT")
            except BaseException:
                # not when SQLite rolled it back itself (a disk full at COMMIT): that ROLLBACK failed and hid why
                if own and self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def tick(self) -> None:
        with self._write():  # one transaction for a whole step (5,000 agents: one fsync)
            # the running ones only: finished deployments of every tenant pile up, and this runs every second
            rows = self.db.execute(
                "SELECT doc FROM deployments WHERE state = 'running' ORDER BY created"
            ).fetchall()
            for (doc,) in rows:
                dep = json.loads(doc)
                if dep["state"] != "running":
                    continue
                try:
                    self._advance(dep)
                except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
                    # a document this code cannot advance (written by an older version without the checks
                    # create makes now): halted with the reason, never failing every tenant's tick for good
                    log.warning("deployment %s cannot advance; halted: %s", dep.get("id"), exc)
                    dep = json.loads(doc)
                    dep["state"] = "halted"
                    dep["reason"] = f"the rollout cannot advance: {type(exc).__name__}: {str(exc)[:300]}"
                self._put(dep)
            now = self.clock()
            # (a mark ahead of the clock: the clock was stepped back since; look now, not once it is reached)
            if not 0 <= now - self._follow_checked < JOIN_CHECK_S:
                self._follow_checked = now
                groups: dict[str, list[dict]] = {}
                for (dep_id,) in self.db.execute("SELECT deployment_id FROM following").fetchall():
                    try:
                        dep = self._get(dep_id)
                    except NotInTenant:
                        continue
                    if dep["state"] == "completed" and dep.get("selector") and self._join(dep, groups):
                        self._put(dep)
            if not 0 <= now - self._kept_looked < KEPT_LOOK_S:
                self._kept_looked = now
                self._look_at_kept()
            top = self.db.execute("SELECT MAX(generation) FROM changes").fetchone()[0] or 0
            self.db.execute("DELETE FROM changes WHERE generation < ?", (top - KEEP_CHANGES_US,))
            if self.keep_rollouts and not 0 <= now - self._pruned_at < PRUNE_ROLLOUTS_S:
                self._pruned_at = now
                self.prune_finished()
        # (outside the write: ``_fill_going_back``)
        if not 0 <= now - self._going_back_filled < GOING_BACK_FILL_S:
            self._going_back_filled = now
            self._fill_going_back()

    def prune_finished(self) -> int:
        """Delete the finished rollouts of each tenant and slot past its newest ``keep_rollouts``, but those still
        named: by an agent's desired state (its current version or configuration, or the one a halt gave back),
        by ``following`` (its version given to gateways joining its group), or as the configuration a rollout in
        progress gives back at a halt (``previous``). Returns how many were deleted; run by ``tick`` every
        ``PRUNE_ROLLOUTS_S``."""
        if not self.keep_rollouts:
            return 0
        with self._write():
            past = [
                r[0]
                for r in self.db.execute(
                    # (a row without a slot, written by an older replica, is not ranked until it has one)
                    "SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY tenant, slot ORDER BY created DESC, "
                    "id DESC) AS n FROM deployments WHERE state IN ('completed', 'halted', 'aborted', 'removed') "
                    "AND slot IS NOT NULL) ranked WHERE n > ?",
                    (self.keep_rollouts,),
                ).fetchall()
            ]
            if not past:
                return 0
            named = {r[0] for r in self.db.execute("SELECT deployment_id FROM following").fetchall()}
            for (ref,) in self.db.execute("SELECT DISTINCT deployment_id FROM desired").fetchall():
                named.add(ref.removesuffix(ROLLBACK_SUFFIX))
            for (doc,) in self.db.execute(
                "SELECT doc FROM deployments WHERE state IN ('running', 'paused')"
            ).fetchall():
                for prev in (json.loads(doc).get("previous") or {}).values():
                    if isinstance(prev, dict) and prev.get("deployment_id"):
                        named.add(str(prev["deployment_id"]).removesuffix(ROLLBACK_SUFFIX))
            gone = [(dep_id,) for dep_id in past if dep_id not in named]
            if gone:
                self.db.executemany("DELETE FROM deployments WHERE id = ?", gone)
                self.db.executemany("DELETE FROM going_back WHERE deployment_id = ?", gone)
                log.info(
                    "deleted %d finished rollouts past the newest %d of their tenant and slot",
                    len(gone),
                    self.keep_rollouts,
                )
        return len(gone)

    def _advance(self, dep: dict) -> None:
        now = self.clock()
        _clock_stepped_back(dep, now)
        if dep.get("selector") and now - (dep.get("joins_checked") or 0) >= JOIN_CHECK_S:
            dep["joins_checked"] = now
            self._join(dep)
        agents = _order(dep["targets"])
        k = dep["step"]
        named = sum(1 for t in dep["targets"].values() if not t.get("joined"))
        if named < len(agents) and k + 1 < len(dep["steps"]):
            # the steps before the last are sized on the agents it was created for: the agents that joined the
            # group since are reached by the last step (100%), never made canaries by their number
            upto = min(named, self._step_size(dep["steps"][k], named))
        else:
            upto = self._step_size(dep["steps"][k], len(agents))
        current = agents[:upto]
        dep_ref = dep["id"] + (ROLLBACK_SUFFIX if dep.get("rollback") else "")
        assign = [
            (a, _slot(dep), dep["package"], dep["version"], dep["digest"], dep["size"], dep_ref)
            for a in current
            if dep["targets"][a]["status"] == "waiting"
        ]
        # every agent of the step healthy (the canaries' wait, ``wait_s``): nobody is on the way to the version.
        # Only a step a later one follows: the last step's agents all run it already, and a halt there would send
        # the whole fleet back for a registry command (a withdrawal a moment after completion sends nobody back)
        last = upto >= len(agents) or k + 1 >= len(dep["steps"])
        proven = (
            not assign
            and not last
            and all(dep["targets"][a]["status"] in ("healthy", *_NOT_OURS) for a in current)
        )
        if (assign or proven) and (withdrawn := self._withdrawn(dep)) is not None:
            if last and dep["step_started"] is not None:
                # the last step under way: a gateway that joined the group (or came back to it) in its wait is left
                # on what it runs, as one joining after completion is (``_join``), no reason to halt. Before, it
                # halted the rollout and sent the whole group back for a registry command and an enrolment
                for a, *_ in assign:
                    del dep["targets"][a]
                self._advance(dep)
                return
            # the fleet gives a withdrawn version to no one more: the step that would halts the rollout, naming the
            # withdrawal, and the agents given it go back as at any halt; a step whose agents are all healthy
            # halts at once (its wait was sat out on the withdrawn version, the rollout said running and no word
            # of the withdrawal). The step's agents still on their way to it are not taken off it here: their
            # downloads are refused, and each reports the withdrawal (which halts the rollout). Before, the next
            # step's agents were given it, each download refused in turn, and the halt named an agent's failure
            self._halt_withdrawn(dep, current, withdrawn)
            return
        if assign:
            # one generation for the step's agents: a fleet-wide step is one counter update, not 10,000
            self._set_desired_many(assign, dep.get("tenant", T), self._next_generation())
            for a, *_ in assign:
                dep["targets"][a].update(status="assigned", step=k, updated=now)
        if dep["step_started"] is None:
            dep["step_started"] = now
        # agents a newer rollout of the same slot took over are no longer this one's to wait for or roll back
        live = [a for a in current if dep["targets"][a]["status"] not in _NOT_OURS]
        if current and not live:
            # every agent of the step was taken back (an admin's rollback or a newer rollout took it over, or it
            # left the group): nobody proved the version, so no later step may give it to more agents. Before,
            # "all healthy" over no agent was true and the next step went on at once, just after the admin rolled
            # the canaries off the version
            self._halt_unproven(dep, current, k)
            return
        bad = [
            (a, dep["targets"][a]) for a in live if dep["targets"][a]["status"] in ("failed", "rolled_back")
        ]
        if (
            bad
            and all(_says_withdrawn(dep, t) for _, t in bad)
            and (withdrawn := self._withdrawn(dep)) is not None
        ):
            # failed for the withdrawal itself (its download or install refused as withdrawn, an agent back from
            # offline; or told that the version it runs is withdrawn, and rolling it back or saying it failed): no
            # verdict on the version, the withdrawal's halt (what the same agent still offline at the step timeout
            # gets). Any other failure is a verdict, the version withdrawn or not, ran or not (its signature, its
            # load or golden test, its health check): a failure's halt, naming it. Decided by whether the agent
            # ran the version, an install that failed to load kept the healthy agents on a version withdrawn for a
            # defect, and an agent that ran it told of the withdrawal sent them all back
            self._halt_withdrawn(dep, current, withdrawn)
            return
        if bad:
            a, t = bad[0]
            dep["stalled"] = None  # (it ended: the halt says why)
            dep["state"] = "halted"
            dep["reason"] = f"agent {a}: {t['status']}: {t['reason']}"
            self._roll_back(dep, live)
            return
        if all(dep["targets"][a]["status"] == "healthy" for a in live):
            self._unstall(dep)
            if dep["step_healthy_at"] is None:
                dep["step_healthy_at"] = now
            if self._waited(dep, "step_healthy_at", now) >= dep["wait_s"]:
                if upto >= len(agents) or k + 1 >= len(dep["steps"]):
                    dep["state"] = "completed"
                    if dep.get("selector") and not dep.get("rollback"):
                        # the group's version from now on: gateways that join the group later are given it
                        self.db.execute(
                            "INSERT INTO following (tenant, slot, deployment_id) VALUES (?, ?, ?) ON CONFLICT"
                            "(tenant, slot) DO UPDATE SET deployment_id = excluded.deployment_id",
                            (dep.get("tenant", T), _slot(dep), dep["id"]),
                        )
                    return
                dep["step"] = k + 1
                dep["step_started"] = None
                dep["step_healthy_at"] = None
                self._advance(dep)
            return
        late = [a for a in live if dep["targets"][a]["status"] != "healthy"]
        if self.step_timeout_s and self._waited(dep, "step_started", now) >= self.step_timeout_s:
            if (withdrawn := self._withdrawn(dep)) is not None:
                # stalled on its way to a withdrawn version (an agent offline): nobody it waits for may install it
                # any more, so no report will come to halt it. Before, it stalled for good, its reason silent about
                # the withdrawal, the canaries that proved it keeping it
                self._halt_withdrawn(dep, current, withdrawn)
                return
            self._stall(dep, late, now)

    def _halt_withdrawn(self, dep: dict, current: list[str], withdrawn: str) -> None:
        """The version ``dep`` rolls out was withdrawn (``withdrawn``: the reason): halted, naming it. A withdrawal
        is not a rollback: the agents of the step that run the version (active or healthy) keep it, as agents do
        after a withdrawal a moment past completion; the agents given it that never ran it (offline, on their way,
        their download refused) get their previous version back as desired state, so that none waits for a version
        the fleet no longer sends. One rule whenever the halt comes (a step that would give it to more agents, a
        stalled step, an agent's refused download); before, each of those sent every agent of the step back,
        while the same withdrawal in a last step whose agents were all healthy sent nobody back."""
        dep["stalled"] = None
        dep["state"] = "halted"
        mine = [a for a in current if dep["targets"][a]["status"] not in (*_NOT_OURS, "waiting")]
        kept = [a for a in mine if dep["targets"][a]["status"] in _ON_IT]
        dep["reason"] = (
            f"{dep['package']} {dep['version']} was withdrawn from the registry ({withdrawn[:200]}): the fleet "
            "gives it to no more agents"
            + (
                f"; the {len(kept)} agent(s) that run it keep it (a withdrawal is not a rollback: "
                "`cloud-trainer rollback` takes it off them)"
                if kept
                else ""
            )
        )
        log.warning("deployment %s halted: %s", dep["id"], dep["reason"])
        self._roll_back(dep, [a for a in mine if a not in kept])

    def _halt_unproven(self, dep: dict, current: list[str], k: int) -> None:
        """Step ``k`` has no agent of its own left (``current`` all superseded or gone from the group): halted,
        naming why. None of them is this rollout's to send back, and the agents of later steps keep what they
        run."""
        first = dep["targets"][current[0]]
        dep["stalled"] = None
        dep["state"] = "halted"
        dep["reason"] = (
            f"step {k + 1}/{len(dep['steps'])} has no agent left to prove {Deployment.from_doc(dep).what()}: "
            f"each of its {len(current)} agent(s) was taken back ({current[0]}: {first['reason']}); the rollout "
            "gives the version to no more agents: create a new rollout to try it again"
        )[:2000]
        log.warning("deployment %s halted: %s", dep["id"], dep["reason"])

    def _waited(self, dep: dict, key: str, now: float) -> float:
        """Seconds since ``dep[key]`` (a wall-clock mark: it is stored, so that a restarted service or another
        replica resumes the step), but never more than this process's monotonic clock counted since it first read
        that mark (plus what the wall clock said had passed then). A server clock stepped forward during a wait
        (NTP correcting a clock that ran late, a VM resumed) cut it short before: an hour's step ended a canary's
        ``--wait 60`` at the next tick. A process that first reads the mark after a step (a restart) can only
        count by the wall clock."""
        mark = dep[key]
        mono = self.monotonic()
        seen = self._seen.get((dep["id"], key))
        if seen is None or seen[0] != mark:
            seen = (mark, mono, now - mark)
            self._seen[(dep["id"], key)] = seen
            if len(self._seen) > 2 * MAX_SEEN_MARKS:  # (deployments that ended: their marks are read no more)
                for old in list(self._seen)[:MAX_SEEN_MARKS]:
                    del self._seen[old]
        return min(now - mark, seen[2] + (mono - seen[1]))

    def _stall(self, dep: dict, late: list[str], now: float) -> None:
        """The step's deadline passed with ``late`` not (yet) healthy: said in the deployment (``stalled``, its
        reason, each late target's reason) and logged once per stall. The rollout is not halted: it waits for
        them, or for the admin's abort (an offline gateway says nothing about the version, and a halt would take
        it back from the canaries that proved it)."""
        before = dep.get("stalled") or {}
        same = before.get("step") == dep["step"] and sorted(before.get("agents") or []) == sorted(late)
        if same and now - (before.get("said") or 0) < STALL_REFRESH_S:
            return  # said already: its text (how long, last seen) is refreshed once a minute, not every tick
        seen = {a["id"]: a.get("last_seen") for a in self.store.agent_groups(tenant=dep.get("tenant", T))}
        waited = now - dep["step_started"]
        what = []
        for a in late:
            t = dep["targets"][a]
            last = seen.get(a)
            heard = f"last seen {max(0.0, now - last):.0f} s ago" if last else "never seen"
            what.append(f"{a} ({t['status']}, {heard})")
        dep["stalled"] = {
            "step": dep["step"],
            "since": (before.get("since") if before.get("step") == dep["step"] else None) or now,
            "said": now,
            "agents": late,
            "timeout_s": self.step_timeout_s,
        }
        listed = ", ".join(what[:10]) + (f" and {len(what) - 10} more" if len(what) > 10 else "")
        dep["reason"] = (
            f"stalled: step {dep['step'] + 1}/{len(dep['steps'])} has waited {waited:.0f} s (step timeout "
            f"{self.step_timeout_s:g} s) for {len(late)} agent(s) not yet healthy: {listed}; the rollout waits "
            f"for them (the later steps do not start): bring them back, or `cloud-trainer deploy --abort "
            f"{dep['id']}`"
        )[:2000]
        if not same:
            log.warning("deployment %s (%s): %s", dep["id"], Deployment.from_doc(dep).what(), dep["reason"])

    def _unstall(self, dep: dict) -> None:
        """A stalled step whose agents all reported healthy since: the stall and its reasons are cleared."""
        if not dep.get("stalled"):
            return
        log.info("deployment %s: step %d is no longer stalled", dep["id"], dep["step"] + 1)
        dep["stalled"] = None
        if str(dep.get("reason", "")).startswith("stalled: "):
            dep["reason"] = ""

    def _join(self, dep: dict, groups: dict[str, list[dict]] | None = None) -> bool:
        """Agents that match a running rollout's selector but are not its targets (enrolled, or labelled into the
        group, after it was created) become targets at the end of its order: they keep what they run while the
        canaries are judged and get the version with the last step (100%), so the group ends on
        the version the rollout completes with. Once it completed (and while it is the slot's newest rollout:
        ``following``), a gateway that joins the group is given its version at once, unless withdrawn since. Only
        the newest rollout in progress of the slot takes them (it owns the slot's agents, ``_supersede``), never an
        agent running (or given) a higher version of the package (versions only go up), and a rollback never (it
        names the agents it rolls back). True when it changed ``dep``."""
        if dep.get("rollback") or dep["state"] not in ("running", "completed"):
            return False
        tenant, slot = dep.get("tenant", T), _slot(dep)
        done = dep["state"] == "completed"
        newer = self.db.execute(
            "SELECT doc FROM deployments WHERE tenant = ? AND state IN ('running', 'paused') AND created > ?",
            (tenant, dep["created"]),
        ).fetchall()
        if any(_slot(json.loads(doc)) == slot for (doc,) in newer):
            return False
        changed = False
        groups = {} if groups is None else groups  # tenant -> its agents, read once per pass
        if tenant not in groups:
            groups[tenant] = self.store.agent_groups(tenant=tenant)
        known = groups[tenant]
        sel = dep["selector"]
        members = [
            a for a in known if all(fnmatch.fnmatch(str(a["labels"].get(k, "")), v) for k, v in sel.items())
        ]
        inside = {a["id"] for a in members}
        now = self.clock()
        for a, t in dep["targets"].items():
            # an agent moved out of the group before the rollout reached it is not given the version (nobody chose
            # it for that gateway any more); one moved back is a target again
            if t["status"] == "waiting" and a not in inside:
                changed = True
                t.update(
                    status=LEFT, reason=f"left the group {sel} before the rollout reached it", updated=now
                )
                log.info(
                    "deployment %s: agent %s left its group %s; it is not given the version",
                    dep["id"],
                    a,
                    sel,
                )
            elif t["status"] == LEFT and a in inside:
                changed = True
                t.update(status="waiting", reason="", updated=now)
        if done:  # one back in the group after the rollout completed joins as a newcomer does
            for a in [a for a, t in dep["targets"].items() if t["status"] == "waiting"]:
                del dep["targets"][a]
        joining = [a for a in members if a["id"] not in dep["targets"]]
        desired = self._slot_rows(tenant, slot) if joining else {}
        eligible = []
        for a in joining:
            cur = next((s for s in a["slots"] if s.get("slot") == slot), None)
            have = [cur.get("version")] if cur and cur.get("package") == dep["package"] else []
            row = desired.get(a["id"])
            if row and row[0] == dep["package"] and dep.get("kind") != "config":
                have.append(row[1])
            if dep.get("kind") != "config" and any(_newer(v, dep["version"]) for v in have):
                continue  # versions only go up: left alone (looked at again at the next check)
            eligible.append((a, cur, row))
        if not eligible:
            return changed
        if done and dep.get("kind") != "config" and self._not_sendable(dep, tenant) is not None:
            return changed  # withdrawn since, or its key gone: never sent to a newcomer
        ways_back = {}
        if dep.get("kind") != "config":
            ways_back = self._ways_back(tenant, slot, {a["id"]: _reported(a, cur) for a, cur, _ in eligible})
        for a, _cur, row in eligible:
            if dep.get("kind") == "config":
                if row:
                    dep["previous"][a["id"]] = {
                        "package": row[0],
                        "version": row[2],
                        "digest": row[2],
                        "deployment_id": row[3].removesuffix(ROLLBACK_SUFFIX),
                    }
            elif a["id"] in ways_back:
                dep["previous"][a["id"]] = ways_back[a["id"]]
            dep["targets"][a["id"]] = _joined_target(now)
            if done:  # the group's version: given at once
                self._set_desired(
                    a["id"],
                    slot,
                    dep["package"],
                    dep["version"],
                    dep["digest"],
                    dep["size"],
                    dep["id"],
                    tenant,
                )
                dep["targets"][a["id"]].update(status="assigned", step=dep["step"])
            log.info(
                "deployment %s: agent %s joined its group (%s); %s",
                dep["id"],
                a["id"],
                sel,
                "it is given the version the group runs"
                if done
                else "it gets the version with the last step",
            )
        return True

    def _ways_back(self, tenant: str, slot: str, current: dict[str, dict]) -> dict[str, dict]:
        """agent -> its previous version for a new rollout of a model ``slot`` (what a halt sends it back to): what
        its last state report shows it runs (``current``: agent -> version, digest, package, ``seen``, the
        report's time, and ``report``, its number among the agent's reports; no digest: the report shows the slot
        empty), unless the fleet's own record is newer (``_record_newer``: by the agent's numbers, else by
        times): the newest rollout of the slot that reached this agent, when it ended for it (its target's
        status, healthy or a way back) on another version, gives that version; when still under way on it, the
        version the fleet took the agent to run as it began (its own previous), but an admin's rollback under way
        (or taken over by a rollout that has not reached the agent) gives the version the admin chose, whatever
        the report says (an offline gateway's rollback was undone by the next rollout's halt). A report
        behind a completed rollout named the version before it: a halt would have sent the agent down to a
        version nobody asked for. Then, unless the newest rollout of that very version to this agent says the
        agent rolled it back or failed it, or the fleet took it back (``rolling_back``, ``rolled_back_by_fleet``):
        a report a heartbeat behind that verdict, the version a halt would have sent it as an admin's rollback
        (no health window) and it would have served for good. Then what it ran before that rollout (the
        rollout's own previous, looked at alike), or none: it keeps what it runs."""
        if not current:
            return {}
        verdicts: dict[tuple[str, str], dict] = {}  # (agent, digest) -> the newest rollout of it to the agent
        newest: dict[str, dict] = {}  # agent -> the newest rollout of the slot that reached it
        # the slot's desired rows: read once, only if a rollback was taken over
        rows: dict[str, tuple] | None = None
        for (doc,) in self.db.execute(
            "SELECT doc FROM deployments WHERE tenant = ? AND slot = ? ORDER BY created DESC, id DESC",
            (tenant, slot),
        ).fetchall():
            try:
                d = json.loads(doc)
                targets, digest = d["targets"], d["digest"]
                for a in current.keys() & targets.keys():
                    status = (targets[a] or {}).get("status")
                    if status not in (None, "waiting", *_NOT_OURS):
                        verdicts.setdefault((a, digest), d)
                        newest.setdefault(a, d)
                    elif d.get("rollback") and status == SUPERSEDED:
                        if rows is None:
                            rows = self._slot_rows(tenant, slot)
                        if (rows.get(a) or ("",) * 4)[3] != d["id"] + ROLLBACK_SUFFIX:
                            continue
                        # an admin's rollback taken over by a rollout whose step has not reached the agent: its
                        # version is still the agent's desired state (``_supersede`` keeps it), and it is the newest
                        # rollout of that version to the agent (an older one the agent rolled back does not pass it)
                        verdicts.setdefault((a, digest), d)
                        newest.setdefault(a, d)
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # a document this code cannot read tells nothing here
        out = {}
        for a, cur in current.items():
            prev: dict | None = cur
            d = newest.get(a)
            if d is not None:
                t = d["targets"][a]
                rec: dict | None = None
                ended = t.get("status") in ("healthy", *_WAYS_BACK)
                # an admin's rollback not yet ended on the agent (offline, installing): the admin's choice wins
                # over any state report (one made after the rollback but before the agent installed it names the
                # version rolled away from), until the admin says otherwise (a newer rollback, or a rollout that
                # reached the agent); a later rollout's halt sends the agent the version the admin chose
                chosen = bool(d.get("rollback")) and not ended
                if ended or chosen:  # it ended on the agent: its version; or the admin's choice for it
                    rec = {"version": d.get("version"), "digest": d["digest"], "package": d.get("package")}
                else:
                    # still under way on the agent: what the fleet took it to run as that rollout began (that
                    # rollout's own previous version, chosen alike)
                    rec = (d.get("previous") or {}).get(a)
                if (
                    isinstance(rec, dict)
                    and rec.get("digest")
                    and rec["digest"] != cur.get("digest")
                    and (chosen or _record_newer(t, cur, partial(self._run_order, tenant, a)))
                ):  # the fleet's record of this agent is newer than its state report
                    prev = rec
            seen: set[str] = set()
            while isinstance(prev, dict) and prev.get("digest"):
                digest = str(prev["digest"])
                if digest in seen:  # (rollouts that name each other's versions: none trusted)
                    prev = None
                    break
                seen.add(digest)
                d = verdicts.get((a, digest))
                if d is None or d["targets"][a].get("status") not in _WAYS_BACK:
                    break
                prev = (d.get("previous") or {}).get(a)
            if isinstance(prev, dict) and prev.get("digest"):
                out[a] = {"version": prev["version"], "digest": prev["digest"], "package": prev["package"]}
        return out

    def _roll_back(self, dep: dict, agents: list[str]) -> None:
        """Give ``agents`` their previous version back. A model slot's target says ``rolling_back`` until the
        agent runs the previous version (its report, or its state report already shows it), then
        ``rolled_back_by_fleet``: an admin is never told an agent went back while it still runs the version
        (offline, downloading, or the previous package gone from the registry, which the reason says)."""
        tenant = dep.get("tenant", T)
        config = dep.get("kind") == "config"  # the previous config's YAML is in its own deployment
        if dep.get("rollback"):
            # a rollback's "previous" is the version the admin rolled back away from: a rollback that halts (an
            # agent refused it) or is aborted stops where it is; it never sends that version back
            return
        agents = [a for a in agents if dep["targets"][a]["status"] not in _NOT_OURS]
        running: dict[str, str] = {}
        if not config and any(dep["previous"].get(a) for a in agents):
            running = self._running(dep)
        withdrawn: dict[tuple[str, str], str | None] = {}
        for a in agents:
            prev = dep["previous"].get(a)
            t = dep["targets"][a]
            if prev and not config and prev.get("digest") == dep["digest"]:
                # the agent said it ran this very version as the rollout began: an earlier rollout's candidate its
                # health check had just rolled back, its state report a heartbeat behind. No way back: sent as
                # the previous version (an admin's rollback, no health window), the version the halt is about was
                # installed again and served for good, and this target turned from rolled_back to healthy
                prev = None
            if prev and not config:
                k = (prev["package"], prev["version"])
                if k not in withdrawn:
                    withdrawn[k] = self._not_sendable(prev, tenant)
                if withdrawn[k] is not None:  # never sent again, not even as the way back from a halt
                    self.db.execute(
                        "DELETE FROM desired WHERE tenant = ? AND agent = ? AND slot = ?",
                        (tenant, a, _slot(dep)),
                    )
                    self._changed(tenant, a)
                    if t["status"] not in ("failed", "rolled_back"):  # (those went back by themselves)
                        t["reason"] = (
                            f"rollout halted; its previous version {prev['package']} {prev['version']} "
                            f"{withdrawn[k]}, so it is not sent back: the agent keeps what it runs; roll the slot "
                            "back to a version still published and signed by the tenant's own key"
                        )[:2000]
                    continue
            if prev:
                size = 0 if config else self._size_of(prev["digest"], tenant)
                self._set_desired(
                    a,
                    _slot(dep),
                    prev["package"],
                    prev["version"],
                    prev["digest"],
                    size,
                    (prev["deployment_id"] if config else dep["id"]) + ROLLBACK_SUFFIX,
                    tenant,
                )
                if t["status"] in ("failed", "rolled_back"):
                    continue  # it refused or rolled back the version itself: it runs the previous one
                if config:
                    t.update(status="rolled_back_by_fleet", reason="rollout halted")
                elif t["status"] in ("waiting", "assigned") and running.get(a) == prev["digest"]:
                    # it never said it began installing this version, and its last state report shows the
                    # previous one (a report of the new version may lag a second behind a step it took)
                    t.update(
                        status="rolled_back_by_fleet", reason=f"rollout halted; it runs {prev['version']}"
                    )
                elif not size:
                    self.db.execute(_GOING_BACK, (tenant, a, _slot(dep), dep["id"]))
                    t.update(
                        status="rolling_back",
                        reason=f"rollout halted; its previous version {prev['package']} {prev['version']} is no "
                        "longer in the registry, so it cannot go back and still runs what it runs: publish that "
                        "version again (it then goes back), or roll the slot back to another version",
                    )
                else:
                    self.db.execute(_GOING_BACK, (tenant, a, _slot(dep), dep["id"]))
                    t.update(
                        status="rolling_back",
                        reason=f"rollout halted; {prev['version']} sent back to it, not yet confirmed running",
                    )
            else:  # nothing before it: a model slot keeps what it runs; an agent goes back to its local config
                self.db.execute(
                    "DELETE FROM desired WHERE tenant = ? AND agent = ? AND slot = ?", (tenant, a, _slot(dep))
                )
                self._changed(tenant, a)

    def _withdrawn(self, dep: dict) -> str | None:
        """The withdrawal's reason when the version ``dep`` rolls out was withdrawn from its tenant's registry
        (``cloud-trainer withdraw``) since the rollout began, else None (a configuration rollout: None). Its
        package's ``index.json`` is read again only when the file changed (``Registry.withdrawals``): the tick
        runs under the control's lock every second and after every report."""
        if dep.get("kind") == "config" or not dep.get("package"):
            return None
        try:
            return (
                self.registry.for_tenant(dep.get("tenant", T)).withdrawals(dep["package"]).get(dep["version"])
            )
        except (OSError, ValueError):  # (RegistryError is a ValueError) gone or unreadable: said elsewhere
            return None

    def _not_sendable(self, prev: dict, tenant: str) -> str | None:
        """Why the version ``prev`` names may no longer be sent to an agent: withdrawn from the tenant's registry
        (``cloud-trainer withdraw``), or signed by a key the tenant no longer has (a leaked key removed from
        ``retired/``). None while it may (a version whose entry or file is gone is said elsewhere)."""
        reg = self.registry.for_tenant(tenant)
        entry = reg.get(prev["package"], prev["version"])
        if entry is None or entry.get("digest") != prev["digest"]:
            return None
        if entry.get("status") == WITHDRAWN:
            return f"was withdrawn ({str(entry.get('withdrawn_reason') or 'no reason given')[:200]})"
        path = reg.package_path(entry)
        if not path.is_file():
            return None
        try:
            self._check_signer(
                path, entry, tenant
            )  # (hashes the package: once per version a halt sends back)
        except AnothersKey:  # a tenant without a package key in the PKI folder: its agents would refuse it
            return (
                "is signed by a package key of another tenant of this service, which its agents do not trust"
            )
        except NotInTenant:
            return (
                "is not signed by a package key the tenant still has (a key removed: leaked?) or still trusts "
                "(past its not-after)"
            )
        except OSError:
            return None
        return None

    def _running(self, dep: dict) -> dict[str, str]:
        """agent -> the digest its last state report shows in the deployment's slot."""
        out = {}
        for r in self.store.agents(tenant=dep.get("tenant", T)):
            for s in r["slots"]:
                if s.get("slot") == dep["slot"] and s.get("digest"):
                    out[r["id"]] = s["digest"]
        return out

    def _size_of(self, digest: str, tenant: str = T) -> int:
        """The size of the tenant's package file of ``digest``; 0 when the registry no longer has it (its entry
        or its file deleted): a halt's rollback to it must still be written, not raise inside the tick that
        every tenant's rollouts share."""
        p = self.registry.for_tenant(tenant).by_digest(digest)
        try:
            return p.stat().st_size if p else 0
        except OSError as exc:
            log.warning("registry of tenant %s: package %s cannot be read: %s", tenant, digest[:12], exc)
            return 0

    def command(self, dep_id: str, action: str, *, tenant: str = T) -> dict:
        with self._write():
            dep = self.get(dep_id, tenant=tenant)
            if action == "pause" and dep["state"] == "running":
                dep["state"] = "paused"
            elif action == "resume" and dep["state"] == "paused":
                dep["state"] = "running"
                dep["step_started"] = self.clock()  # the step's deadline counts from the resume
                self._unstall(dep)
            elif action == "abort" and dep["state"] not in TERMINAL:
                dep["state"] = "aborted"
                dep["reason"] = "aborted by an admin"
                dep["stalled"] = None
                self._roll_back(dep, [a for a, t in dep["targets"].items() if t["status"] != "waiting"])
            elif action == "remove" and dep.get("kind") == "config":
                # the fleet lets go: agents still on this config go back to their own local file
                tenant_ = dep.get("tenant", T)
                for a in dep["targets"]:
                    row = self.db.execute(
                        "SELECT deployment_id FROM desired WHERE tenant = ? AND agent = ? AND slot = ?",
                        (tenant_, a, CONFIG_SLOT),
                    ).fetchone()
                    if row and row[0].removesuffix(ROLLBACK_SUFFIX) == dep["id"]:
                        self.db.execute(
                            "DELETE FROM desired WHERE tenant = ? AND agent = ? AND slot = ?",
                            (tenant_, a, CONFIG_SLOT),
                        )
                        self._changed(tenant_, a)
                dep["state"] = "removed"
                dep["reason"] = "removed by an admin: its agents run their local config"

            elif action == "remove":
                raise ValueError(
                    "remove applies to agent configuration deployments; a model slot goes back with "
                    "`cloud-trainer rollback`"
                )
            else:
                raise ValueError(f"cannot {action} a deployment that is {dep['state']}")
            self._put(dep)
        self.tick()
        try:
            return self._get(dep_id)
        except NotInTenant:  # finished and deleted by the tick's prune (past the newest kept): it was done
            return dep

    def rollback(self, package: str, version: str, slot: str, agents: list[str], *, tenant: str = T) -> dict:
        """An admin's explicit downgrade (or upgrade) of a slot to a named version, all at once. Without
        ``agents``: every agent of the tenant that has the slot (its state report names it, or the fleet gave it
        a desired version for it), never agents without it, which would refuse it and halt the rollback."""
        if not agents:
            with self.lock:
                desired = self._slot_rows(tenant, slot) if "\x00" not in slot else {}
            agents = sorted(
                {
                    a["id"]
                    for a in self.store.agents(tenant=tenant)
                    if any(x.get("slot") == slot for x in a["slots"])
                }
                | set(desired)
            )
            if not agents:
                raise NotInTenant(f"no registered agent has model slot {slot[:64]!r}")
        return self.create(
            {
                "package": package,
                "version": version,
                "slot": slot,
                "agents": agents,
                "selector": {},
                "strategy": "all_at_once",
                "gate": {},
                "wait_s": 0,
            },
            rollback=True,
            tenant=tenant,
        )

    def list(self, *, tenant: str = T) -> list[dict]:
        with self.lock:
            rows = self.db.execute(
                "SELECT doc FROM deployments WHERE tenant = ? ORDER BY created DESC", (tenant,)
            ).fetchall()
        return [d for d in (json.loads(doc) for (doc,) in rows) if d.get("tenant", T) == tenant]

    def create_tenant(self, tenant: str, display_name: str = "") -> dict:
        """Register a tenant (a platform operator's act; idempotent) and create its registry folder."""
        from cloud_trainer.pki import check_tenant

        check_tenant(tenant)
        if "\x00" in display_name:
            raise ValueError("display name: NUL characters are not text the control state holds")
        with self.lock:
            self.db.execute(
                "INSERT INTO tenants (id, display_name, created) VALUES (?, ?, ?) ON CONFLICT(id) DO "
                "UPDATE SET display_name = CASE WHEN excluded.display_name = '' THEN tenants.display_name ELSE "
                "excluded.display_name END",
                (tenant, display_name, self.clock()),
            )
            row = self.db.execute(
                "SELECT id, display_name, created FROM tenants WHERE id = ?", (tenant,)
            ).fetchone()
        self.registry.for_tenant(tenant).root.mkdir(parents=True, exist_ok=True)
        return {"tenant": row[0], "display_name": row[1], "created": row[2]}

    def tenants(self) -> dict[str, dict]:
        with self.lock:
            rows = self.db.execute("SELECT id, display_name, created FROM tenants").fetchall()
        return {i: {"tenant": i, "display_name": n, "created": c} for i, n, c in rows}

    def usage(self) -> dict[str, int]:
        """Deployments per tenant (counts only: the platform operator's view)."""
        out: dict[str, int] = {}
        with self.lock:
            for t, n in self.db.execute(
                "SELECT tenant, COUNT(*) FROM deployments GROUP BY tenant"
            ).fetchall():
                out[t or T] = out.get(t or T, 0) + int(n)
        return out


def _spelt_slot(slot: str) -> str:
    """Why a rollout to a slot spelt as an agent's config may write it (``vision/``, ``./vision``) is refused: the
    agents read it as ``vision`` and report it so, and the fleet keys a rollout by the name as given: its halt would
    find no version to go back to (the halted one kept serving), a downgrade would not be seen as one."""
    meant = slot
    while meant.startswith("./"):
        meant = meant[2:]
    meant = meant[:-1] if meant.endswith("/") else meant
    if not meant or meant.startswith("/") or meant.endswith("/"):
        return f"slot {slot[:64]!r}: not a model slot name (no leading './' nor trailing '/')"
    return (
        f"deploy to {meant[:64]!r}: slot {slot[:64]!r} is how an agent's config may spell it, and its agents read and "
        "report it as that; the fleet follows a rollout by the name given (a halt would find no way back)"
    )


def _check_texts(req: dict) -> None:
    """The free texts of a new rollout that its document keeps, within bounds (``ValueError`` naming the field,
    nothing stored): every rollout tick reads the document of every rollout in progress of every tenant, under
    the lock all tenants' deployment calls wait for, and a request may be 16 MB. A strategy of 12,000,000
    characters (anything but ``all_at_once`` was taken as a canary and kept as sent) was stored: six such
    rollouts of one tenant made a 108-MB control database, took 22% of a core in ticks with nothing to do and
    430 MB of the service's memory, and each new rollout held the lock 1-2.5 s."""
    strategy = req.get("strategy") or "canary"
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {str(strategy)[:40]!r}: {' or '.join(STRATEGIES)}")
    slot = req.get("slot") or ""
    if len(slot) > SLOT_CHARS:
        raise ValueError(
            f"slot {slot[:64]!r}...: {len(slot)} characters; a model slot's name is at most {SLOT_CHARS}"
        )
    selector = req.get("selector") or {}
    if len(selector) > SELECTOR_LABELS:
        raise ValueError(f"selector: {len(selector)} labels; at most {SELECTOR_LABELS}")
    for k, v in ((str(k), str(v)) for k, v in selector.items()):
        if len(k) > LABEL_CHARS or len(v) > LABEL_CHARS:
            raise ValueError(
                f"selector {_shown({k[:64]: v[:64]})}: a label's name and pattern are at most {LABEL_CHARS} "
                "characters"
            )


def _shown(selector: dict) -> str:
    """A label selector as a refusal shows it: at most ``SHOWN_CHARS``. A refusal's text travels in the call's
    trailing metadata, which a gRPC client takes up to 16 KiB of: a value the admin sent echoed whole (20,000
    characters) reached the admin as ``RESOURCE_EXHAUSTED: received metadata size exceeds hard limit`` instead
    of the refusal."""
    text = repr(selector)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "...}"


def _reported(agent: dict, cur: dict | None) -> dict:
    """What an agent's last state report says of a model slot (``cur``, None or no digest: nothing installed), when
    it came (``seen``) and its number among the agent's reports (``report``: v4 agents), as ``Control._ways_back``
    reads it: an empty slot in a report behind a rollout that completed on the agent is corrected by the fleet's
    record like any other version."""
    when = {"seen": agent.get("last_seen"), "report": (agent.get("outbox") or {}).get("report")}
    if not cur or not cur.get("digest"):
        return {"version": None, "digest": None, "package": None, **when}
    return {"version": cur["version"], "digest": cur["digest"], "package": cur["package"], **when}


def _record_newer(target: dict, cur: dict, runs: Callable[[], dict[str, int]] = dict) -> bool:
    """Whether a rollout's verdict on an agent (its ``target``) is newer than the agent's last state report
    (``cur``): by the numbers the agent gave both, (run, number): within one run (one ``boot``) by the number, taken as
    each report was made; across two runs by which began later (``runs()``: boot -> its place among the agent's
    runs, ``Control._run_order``). Else (an older agent without numbers, or a run forgotten) by when the fleet
    received them. Received times alone let a report made before the verdict but held on the way win over it, and
    they are the clocks of the replicas that took them (minutes apart: a window on them turned the numbers off). A
    gateway restored from a VM memory snapshot starts a new run (``FleetClient.new_run``: its link was re-made), so
    its reports after the restore outrank a verdict numbered before it."""
    mine, theirs = target.get("report"), cur.get("report")
    reported, updated = cur.get("seen"), target.get("updated")
    if isinstance(mine, dict) and isinstance(theirs, dict):
        a, b = mine.get("seq"), theirs.get("seq")
        if mine.get("boot") == theirs.get("boot") and isinstance(a, int) and isinstance(b, int):
            return a > b
        order = runs()
        ra, rb = order.get(str(mine.get("boot"))), order.get(str(theirs.get("boot")))
        if ra is not None and rb is not None and ra != rb:
            return ra > rb
    return isinstance(updated, (int, float)) and (
        not isinstance(reported, (int, float)) or updated > reported
    )


def _run_key(boot: str) -> str:
    """A run's boot id as the control state keeps it: its first 64 characters, a NUL replaced (PostgreSQL's text
    refuses one: an agent sending it failed each of its deployment steps)."""
    return boot[:64].replace("\x00", "\ufffd")


def _recorded_by_a_later_run(target: dict, boot: str, runs: dict[str, int]) -> bool:
    """Whether the step ``target`` recorded last came from a run of the agent that began after run ``boot`` (``runs``:
    boot -> its place among the agent's runs, ``Control._run_order``); False when either run is not remembered."""
    had = target.get("report")
    mine = runs.get(str(had.get("boot"))) if isinstance(had, dict) else None
    theirs = runs.get(boot)
    return mine is not None and theirs is not None and mine > theirs


def _held_on_the_way(target: dict, report: dict | None) -> bool:
    """Whether a deployment step numbered ``report`` (boot, seq) was made before the step its ``target`` recorded
    last from the same run of the agent (a call taken late, a retry), whenever it arrives."""
    had = target.get("report")
    if not (isinstance(report, dict) and isinstance(had, dict) and had.get("boot") == report.get("boot")):
        return False
    mine, theirs = had.get("seq"), report.get("seq")
    return isinstance(mine, int) and isinstance(theirs, int) and theirs < mine


def _joined_target(joined: float) -> dict:
    """A target that joined a rollout's group after it was created (``joined``: when)."""
    return {"status": "waiting", "reason": "", "step": None, "updated": joined, "joined": joined}


def _order(targets: dict) -> list[str]:
    """A rollout's targets in the order its steps reach them: those named at its creation by id, then those that
    joined its group later in the order they joined (a joiner never moves a target into an earlier step, and is
    never a canary)."""
    return sorted(targets, key=lambda a: (targets[a].get("joined") or 0.0, a))


def _newer(have: str | None, want: str) -> bool:
    try:
        return bool(have) and version_key(str(have)) > version_key(want)
    except ValueError:
        return False


def _says_withdrawn(dep: dict, t: dict) -> bool:
    """Whether the failure a target reported is the withdrawal of the rollout's version: the fleet's words an agent
    is told (``service._withdrawn_text``: ``<package> <version> was withdrawn from the registry``) and reports, as
    they are or after its own (``download of ...: ``). The version matched whole, from the space before it (the
    package's name is not matched: an agent may hide a word of it, as free text); ``1.1.0 was withdrawn`` matched
    ``part-inspection 11.1.0 was withdrawn``."""
    return f" {str(dep.get('version'))[:40]} was withdrawn from the registry" in str(t.get("reason") or "")


def _slot(dep: dict) -> str:
    """The desired-state row a deployment writes: its model slot, or the agent configuration's."""
    return CONFIG_SLOT if dep.get("kind") == "config" else dep["slot"]


def _doc(doc: str) -> dict | None:
    """A deployment's stored document, or None for one that cannot be read (not JSON, not an object)."""
    try:
        d = json.loads(doc)
    except (ValueError, TypeError, RecursionError):
        return None
    return d if isinstance(d, dict) else None


def _doc_tenant(doc: str) -> str | None:
    """The tenant a deployment's document names (``T`` where it names none), or None for one that cannot be read."""
    return None if (d := _doc(doc)) is None else d.get("tenant", T)


def _slot_of(dep: dict) -> str:
    """``_slot`` for the deployments table's column: a document without a slot (none this code writes) is ''."""
    return CONFIG_SLOT if dep.get("kind") == "config" else str(dep.get("slot") or "")


def _step_size(spec: str, n: int) -> int:
    """The agents a cumulative step reaches out of ``n``: a count, or a percentage rounded up."""
    spec = str(spec).strip()
    if spec.endswith("%"):
        return max(1, math.ceil(n * float(spec[:-1]) / 100))
    return min(n, max(1, int(spec)))


def _clock_stepped_back(dep: dict, now: float) -> None:
    """A rollout's marks (the server's wall clock: replicas share them through the store) that lie ahead of
    ``now`` were written before the clock was stepped back (NTP correcting a clock that ran ahead, a VM restored
    from a snapshot): each is moved to ``now``, so that the step's ``wait_s``, its timeout and the look for
    gateways joining the group count their own length from now, not that length plus the step back."""
    for key in ("joins_checked", "step_started", "step_healthy_at"):
        mark = dep.get(key)
        if isinstance(mark, (int, float)) and mark > now:
            dep[key] = now


def _check_rollout(steps: list, wait_s, n: int) -> float:
    """The steps and wait of a new rollout to ``n`` agents, checked before anything is stored (``ValueError``
    naming the step): each step is a whole number of agents (at least 1) or a percentage in (0, 100], and the
    last step reaches every target, so that ``completed`` always means every target has the version. Returns
    the wait in seconds (finite, at least 0)."""
    if not steps:
        raise ValueError("steps: at least one step (e.g. 1 100%)")
    if len(steps) > 100:
        raise ValueError(f"steps: {len(steps)} steps; at most 100")
    for i, raw in enumerate(steps):
        spec = str(raw).strip()
        try:
            # float() reads any length ("000...050%"): a step of megabytes was a valid 50%, kept in the document
            value = (
                (float(spec[:-1]) if spec.endswith("%") else int(spec))
                if len(spec) <= STEP_CHARS
                else math.nan
            )
        except ValueError:
            value = math.nan
        ok = 0 < value <= 100 if spec.endswith("%") else (math.isfinite(value) and value >= 1)
        if not ok:
            raise ValueError(
                f"steps[{i}] {str(raw)[:40]!r}: a number of agents (1 or more) or a percentage such as 50% "
                "(above 0, at most 100%)"
            )
    last = str(steps[-1]).strip()
    if (float(last[:-1]) < 100 if last.endswith("%") else int(last) < n) and n > 0:
        raise ValueError(
            f"steps {[str(x)[:40] for x in steps]}: the last step reaches "
            f"{_step_size(last, n)} of the {n} target agents; end with 100% so that every "
            "target receives it (a deployment is completed only when all of them run it)"
        )
    try:
        wait = float(wait_s or 0)
    except (TypeError, ValueError):
        wait = math.nan
    if not (math.isfinite(wait) and wait >= 0):
        raise ValueError(f"wait_s {wait_s!r}: seconds between healthy steps, 0 or more")
    return wait
