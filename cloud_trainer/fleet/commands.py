"""Commands to one agent: one-off acts an admin asks (today: ``baseline_relearn`` of a pipeline, or of one
of its process states: ``process_state``).

Why in the desired state: an agent may be offline, or its stream may break the moment a command is
sent. A command is a row of the control state (``commands``, beside ``desired``: the SQLite
``control.db`` or the PostgreSQL database, migration 0003), and the agent's desired state lists it
(``HeartbeatReply.commands``) until the agent's result is recorded; then it leaves the desired state.
Each change is a new generation in the control's change log, so connected agents get it pushed at
once and any replica can serve it.

Idempotent end to end: the agent runs each id at most once (it keeps the ids it ran, with their
results, in its data folder) and reports the result in its state reports while the command is still
listed; recording a result changes only a ``pending`` row, so a result reported twice (a replay, two
replicas) counts once. States: ``pending`` → ``done`` | ``failed`` (the agent's answer, with its one-line
detail). A command for an agent that is offline waits for it, as a deployment does.

Tenants: a command is the admin's tenant's; an agent of another tenant (or one not registered) is
refused with the same text (``NotInTenant``: PERMISSION_DENIED), and an agent's desired state is looked up
under its own tenant, so an agent never receives another tenant's command.
"""

from __future__ import annotations

import math
import re
import time
import uuid

from cloud_trainer.fleet.control import DEFAULT_TENANT, NotInTenant

# kind -> what it asks (the admin CLI's help); the agent has the matching table (edge_agent.uplink.commands)
KINDS = {"baseline_relearn": "learn the pipeline's per-asset baseline anew (commissioning starts again)"}
SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (tenant TEXT NOT NULL, id TEXT NOT NULL, agent TEXT NOT NULL, kind TEXT NOT NULL,
  pipeline TEXT NOT NULL, reason TEXT NOT NULL, issued_at REAL NOT NULL, issued_by TEXT NOT NULL,
  state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', done_at REAL, generation INTEGER NOT NULL,
  process_state TEXT NOT NULL DEFAULT '', PRIMARY KEY (tenant, id));
CREATE INDEX IF NOT EXISTS commands_pending ON commands (tenant, agent, state, issued_at);
DROP INDEX IF EXISTS commands_by_agent;
CREATE INDEX IF NOT EXISTS commands_by_generation ON commands (tenant, agent, generation);
CREATE INDEX IF NOT EXISTS commands_by_agent_time ON commands (tenant, agent, issued_at);
CREATE INDEX IF NOT EXISTS commands_by_time ON commands (tenant, issued_at);
"""
# An agent's finished commands are kept (who asked for what, ``list``), and each of its heartbeats read all of them
# under the lock every tenant's control calls share (100,000 finished: 186 ms a heartbeat). Now a heartbeat reads its
# pending commands in their order (``commands_pending``: it replaces ``commands_by_agent`` (tenant, agent, state), whose
# rows had to be sorted, and for which the planner took the list's index, a walk of the whole history) and its latest
# generation (``commands_by_generation``), whatever the history; ``list`` below the same. PostgreSQL: migrations 0016
# and 0017; a control.db made before gets them when opened.
LATEST_GENERATION = "SELECT MAX(generation) FROM commands WHERE tenant = ? AND agent = ?"
PENDING = (
    "SELECT id, kind, pipeline, issued_at, issued_by, reason, process_state FROM commands "
    "WHERE tenant = ? AND agent = ? AND state = 'pending' ORDER BY issued_at"
)
# a control.db made before commands had a process state (PostgreSQL: migration 0010)
ADD_PROCESS_STATE = "ALTER TABLE commands ADD COLUMN process_state TEXT NOT NULL DEFAULT ''"
# a process state's name as the agent's config gives it (``baseline.states[].name``, or a whole value)
STATE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
WHOLE = re.compile(r"-?(0|[1-9][0-9]*)")
COLS = [
    "id",
    "agent",
    "kind",
    "pipeline",
    "reason",
    "issued_at",
    "issued_by",
    "state",
    "detail",
    "done_at",
    "generation",
    "process_state",
]
# ``list`` (``Admin.ListCommands``, ``cloud-trainer baseline status``: an admin's script polls it for the acks) reads
# the newest LISTED through ``commands_by_agent_time`` / ``commands_by_time`` (PostgreSQL: migration 0017), not the
# whole history sorted (100,000 finished commands of one agent: 90 ms under that lock)
LISTED = 500
LIST_TENANT = (
    f"SELECT {', '.join(COLS)} FROM commands WHERE tenant = ? ORDER BY issued_at DESC LIMIT {LISTED}"
)
LIST_AGENT = f"SELECT {', '.join(COLS)} FROM commands WHERE tenant = ? AND agent = ? ORDER BY issued_at DESC LIMIT {LISTED}"
MAX_TEXT = 300
# an agent's commands pending at once: its desired state lists every one (``HeartbeatReply.commands``), and an
# admin's script sending in a loop made it grow without end (1,500 commands: a 540-KB reply at each look; past
# 4 MB, what a gateway's channel takes, the agent got no desired state at all: no command, no rollout step)
MAX_PENDING = 100
# an agent's finished commands kept (its newest by generation, the last change of each: ``list`` shows the newest
# LISTED of them); the older ones are deleted as a command finishes (``record_results``), pending ones never. The
# history grew on disk without bound: an admin's script relearning a baseline every minute left 525,600 rows a year
# per agent. The newest finished one, which carries the agent's latest command generation, is always kept.
KEEP_FINISHED = 1000
# the agent's finished commands older than its KEEP_FINISHED newest (generation below the KEEP_FINISHED-th newest's;
# ties at it kept), the oldest PRUNE_BATCH of them at a time: read down ``commands_by_generation`` from the newest
# for the bound, up it from the oldest for the rows, each deleted by its key. One delete of them all held the
# control's writer (every tenant's control writes and heartbeats) 5.7 s at the first finish after an upgrade of an
# agent with 300,000 finished commands (SQLite; 0.64 s on PostgreSQL); a long history now shrinks by PRUNE_BATCH
# rows (50-100 ms, SQLite on a busy 2-core machine) at each finish of the agent's commands
PRUNE_BATCH = 2000
PRUNE_FINISHED = (
    "DELETE FROM commands WHERE tenant = ? AND id IN (SELECT id FROM commands WHERE tenant = ? AND agent = ? AND "
    "state <> 'pending' AND generation < (SELECT generation FROM commands WHERE tenant = ? AND agent = ? AND "
    "state <> 'pending' ORDER BY generation DESC LIMIT 1 OFFSET ?) ORDER BY generation LIMIT ?)"
)


class TooManyCommands(Exception):
    """The agent has ``MAX_PENDING`` commands pending: a new one is refused (the service's ``RESOURCE_EXHAUSTED``),
    nothing stored. A sibling of ``control.TooManyRollouts``, not its subclass (a handler of a tenant's full
    rollouts took a full command queue for one); the Admin service answers both ``RESOURCE_EXHAUSTED``."""


T = DEFAULT_TENANT


class Commands:
    """Commands on a ``Control``'s database (its lock, transactions and change log)."""

    def __init__(self, control, keep_finished: int = KEEP_FINISHED) -> None:
        self.c = control
        self.keep_finished = max(1, int(keep_finished))
        if hasattr(control.db, "executescript"):  # SQLite; PostgreSQL has the table from its migrations
            control.db.executescript(SCHEMA)
            if "process_state" not in [r[1] for r in control.db.execute("PRAGMA table_info(commands)")]:
                control.db.execute(ADD_PROCESS_STATE)

    def send(
        self,
        agent: str,
        kind: str,
        pipeline: str,
        reason: str = "",
        issued_by: str = "",
        process_state: str = "",
        *,
        tenant: str = T,
    ) -> dict:
        if kind not in KINDS:
            raise ValueError(f"unknown command kind {kind[:64]!r}; known: {', '.join(sorted(KINDS))}")
        if not pipeline or len(pipeline) > 200 or "\x00" in pipeline:
            raise ValueError("pipeline: give the pipeline's name as in the agent's config")
        if "\x00" in (reason or "") + issued_by:
            raise ValueError("reason: NUL characters are not text the control state holds")
        known = {a["id"]: a for a in self.c.store.agents(tenant=tenant)}
        if agent not in known:  # another tenant's agent gets the answer of one that does not exist
            raise NotInTenant(
                f"agent {agent[:64]!r} is not registered (an agent registers with its first state report)"
            )
        self._check_pipeline(agent, known[agent].get("health") or {}, kind, pipeline)
        if process_state:
            self._check_state(agent, known[agent].get("health") or {}, kind, pipeline, process_state)
        cmd = {
            "id": uuid.uuid4().hex[:12],
            "agent": agent,
            "kind": kind,
            "pipeline": pipeline,
            "reason": (reason or "")[:MAX_TEXT],
            "issued_at": time.time(),
            "issued_by": issued_by[:MAX_TEXT],
            "state": "pending",
            "detail": "",
            "done_at": None,
            "process_state": process_state,
        }
        with self.c._write():
            n = self.c.db.execute(
                "SELECT COUNT(*) FROM commands WHERE tenant = ? AND agent = ? AND state = 'pending'",
                (tenant, agent),
            ).fetchone()[0]
            if n >= MAX_PENDING:
                raise TooManyCommands(
                    f"agent {agent}: {n} commands pending, the most an agent may have at once is {MAX_PENDING}; "
                    "nothing was stored: they wait for the agent's next state report "
                    f"(`cloud-trainer baseline status {agent}`)"
                )
            cmd["generation"] = self.c._changed(tenant, agent)
            self.c.db.execute(
                "INSERT INTO commands (tenant, " + ", ".join(COLS) + ") VALUES (?" + ",?" * len(COLS) + ")",
                (tenant, *(cmd[k] for k in COLS)),
            )
        return cmd

    @staticmethod
    def _check_pipeline(agent: str, health: dict, kind: str, pipeline: str) -> None:
        """What the agent last reported, when it reported anything: a typo is refused here, not an hour later."""
        if not isinstance(health, dict) or not health:
            return
        if pipeline not in health:
            raise ValueError(
                f"agent {agent} has no pipeline {pipeline[:64]!r}; it reported: "
                f"{', '.join(sorted(health)) or 'none'}"
            )
        if (
            kind == "baseline_relearn"
            and isinstance(health[pipeline], dict)
            and "baseline" not in health[pipeline]
        ):
            raise ValueError(
                f"pipeline {pipeline} of agent {agent} has no baseline (its config has no `baseline:`); "
                f"pipelines with one: {', '.join(sorted(_with_baseline(health))) or 'none'}"
            )

    @staticmethod
    def _check_state(agent: str, health: dict, kind: str, pipeline: str, state: str) -> None:
        """``process_state`` (relearn one state): a state the agent's baseline has, as it reported it. Sent to an
        agent that has not reported the pipeline's process states (not yet, no ``state_tag``, or a release that
        knows no per-state relearn and would relearn every state), it is refused rather than sent."""
        shown = state[:64]
        if kind != "baseline_relearn":
            raise ValueError(f"process state {shown!r}: only a baseline_relearn is of one process state")
        if not STATE_NAME.fullmatch(state):
            raise ValueError(
                f"process state {shown!r}: a state's name is 1-64 letters, digits, _ . - (as in baseline.states)"
            )
        p = health.get(pipeline) if isinstance(health, dict) else None
        b = p.get("baseline") if isinstance(p, dict) else None
        if not isinstance(b, dict) or not b.get("state_tag"):
            raise ValueError(
                f"pipeline {pipeline} of agent {agent} has reported no process states (its baseline has no "
                "state_tag, the agent has not reported it yet, or its release relearns only every state): "
                "leave the state out to relearn every state, or wait for its state report"
            )
        names = b.get("state_names")
        if isinstance(names, list) and names:
            if state not in names:
                raise ValueError(
                    f"pipeline {pipeline} of agent {agent} has no process state {shown!r}; its states "
                    f"(baseline.states): {', '.join(map(str, names))}"
                )
        elif not WHOLE.fullmatch(state):
            raise ValueError(
                f"pipeline {pipeline} of agent {agent}: process state {shown!r}: without baseline.states each "
                f"whole value of state tag {b['state_tag']!r} is a state, named by its digits ('0', '1', '2'); "
                f"seen: {', '.join(map(str, b.get('process_states') or [])) or 'none yet'}"
            )

    def pending_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, list[dict]]]:
        """Per (tenant, agent): (the generation of its latest command change, its pending commands as
        ``AgentCommand`` fields)."""
        out = {}
        with self.c.lock:
            for tenant, agent in keys:
                # the newest change of any of its commands, a finished one's too (a recorded result takes its command
                # out of the desired state: a change the agent must see), through the index, not by reading them all
                gen = self.c.db.execute(LATEST_GENERATION, (tenant, agent)).fetchone()[0]
                rows = self.c.db.execute(PENDING, (tenant, agent)).fetchall()
                out[(tenant, agent)] = (
                    gen or 0,
                    [
                        {"id": i, "kind": k, "pipeline": p, "issued_at": t, "issued_by": b, "reason": r}
                        | ({"process_state": ps} if ps else {})
                        for i, k, p, t, b, r, ps in rows
                    ],
                )
        return out

    def record_results(self, agent: str, results: list[dict], *, tenant: str = T) -> int:
        """The agent's results (``CommandResult`` fields); only pending commands of this agent change. Each
        change is a new generation, so the next desired state no longer lists the command. When one finished, the
        agent's finished commands beyond its newest ``keep_finished`` are deleted in the same transaction, the oldest
        ``PRUNE_BATCH`` of them (a report that changes nothing, its results already recorded, reads nothing more)."""
        changed = []
        with self.c._write():
            for r in results:
                cid = str(r.get("id", ""))[:64]
                if "\x00" in cid:  # no command id holds one (and PostgreSQL's text cannot)
                    continue
                done_at = float(r.get("done_at") or 0)
                if not math.isfinite(done_at) or done_at <= 0:
                    done_at = time.time()
                if self.c.db.execute(
                    "UPDATE commands SET state = ?, detail = ?, done_at = ? WHERE tenant = ? AND "
                    "agent = ? AND id = ? AND state = 'pending'",
                    (
                        "done" if r.get("ok") else "failed",
                        # the agent's text, kept as it came but for NUL characters, which PostgreSQL's text cannot
                        # hold: one of them failed every state report of the agent, for good (the agent reports a
                        # result until it is recorded), and cut it off the fleet
                        str(r.get("detail", ""))[:MAX_TEXT].replace("\x00", "\ufffd"),
                        done_at,
                        tenant,
                        agent,
                        cid,
                    ),
                ).rowcount:
                    changed.append(cid)
            if changed:
                gen = self.c._changed(tenant, agent)
                for cid in changed:
                    self.c.db.execute(
                        "UPDATE commands SET generation = ? WHERE tenant = ? AND id = ?", (gen, tenant, cid)
                    )
                self.c.db.execute(
                    PRUNE_FINISHED,
                    (tenant, tenant, agent, tenant, agent, self.keep_finished - 1, PRUNE_BATCH),
                )
        return len(changed)

    def list(self, agent: str | None = None, *, tenant: str = T) -> list[dict]:
        """The newest ``LISTED`` commands of the tenant, or of one of its agents, the newest first."""
        with self.c.lock:
            if agent:
                rows = self.c.db.execute(LIST_AGENT, (tenant, agent)).fetchall()
            else:
                rows = self.c.db.execute(LIST_TENANT, (tenant,)).fetchall()
        return [dict(zip(COLS, r, strict=True)) for r in rows]


def _with_baseline(health: dict) -> list[str]:
    return [p for p, h in health.items() if isinstance(h, dict) and "baseline" in h]


def add_commands(reply, pending: tuple[int, list[dict]] | None) -> None:
    """Put an agent's pending commands into its desired state (``HeartbeatReply``), generation included."""
    if not pending:
        return
    gen, cmds = pending
    reply.generation = max(reply.generation, gen)
    for c in cmds:
        reply.commands.add(**c)
