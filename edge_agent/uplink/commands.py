"""The fleet's commands to this agent (``HeartbeatReply.commands``): each id run at most once.

A command stays in the desired state until the cloud has recorded its result, so the agent sees it
again after every reconnect and restart. ``CommandRunner`` keeps the ids it ran, with their results,
in ``<data_dir>/fleet/commands.json`` (written atomically; the id is written *before* the act, so a
kill -9 in between never runs it twice: it is reported failed, "interrupted", instead). The results
of the commands the cloud still lists go up in every state report, and each run is an event
(``fleet_command``) in the outbox.

Kinds are one table, ``KINDS``: kind -> ``"module:function"``, called as ``function(cfg, command)`` in a
worker thread, returning a one-line detail or raising ``ValueError`` with the reason it was not done.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.files import read_json_state, why_unread
from model_packager.text import printable
from protocols.events import Event, EventKind

log = logging.getLogger(__name__)

KINDS: dict[str, str] = {
    "baseline_relearn": "edge_agent.maintenance.cli:fleet_relearn",
}
KEEP = 200  # ids remembered (a command leaves the desired state once its result is recorded)


class CommandRunner:
    def __init__(self, cfg, on_event: Callable[[Event], None] | None = None) -> None:
        self.cfg = cfg
        self.path = Path(cfg.data_dir) / "fleet" / "commands.json"
        self.on_event = on_event or (lambda evt: None)
        self.accept = cfg.cloud is None or cfg.cloud.accept_commands
        self.ran: dict[str, dict] = {}  # id -> result (CommandResult fields)
        self.listed: set[str] = set()  # ids in the latest desired state: their results are reported
        self._load()

    def _load(self) -> None:
        try:
            data = read_json_state(self.path)  # bounded: the data folder is anyone's with the gateway's shell
            self.ran = {r["id"]: r for r in data.get("ran", []) if isinstance(r, dict) and "id" in r}
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # AttributeError: not an object
            # the ids are lost: a command still listed would run again; say so loudly
            log.error(
                "fleet commands: %s is unreadable (%s); commands still in the desired state may run again",
                printable(str(self.path)),
                printable(why_unread(exc), 300),
            )
        for r in self.ran.values():
            if r.get("state") == "running":  # cut short by a kill: never run twice, reported as not done
                r.update(
                    state="done",
                    ok=False,
                    detail="interrupted by a restart of the agent; not run again: "
                    "send the command again if it is still needed",
                    done_at=time.time(),
                )

    def _save(self) -> None:
        from edge_agent.files import atomic_write_json

        keep = sorted(self.ran.values(), key=lambda r: r.get("done_at") or r.get("started_at") or 0)[-KEEP:]
        self.ran = {r["id"]: r for r in keep}
        atomic_write_json(self.path, {"ran": keep})

    async def run(self, commands) -> None:
        """The commands of a desired state (``AgentCommand`` messages): new ids run, in order."""
        self.listed = {c.id for c in commands}
        for c in commands:
            if c.id in self.ran:
                continue
            entry = {
                "id": c.id,
                "kind": c.kind,
                "pipeline": c.pipeline,
                "state": "running",
                "started_at": time.time(),
                "ok": False,
                "detail": "",
            }
            self.ran[c.id] = entry
            try:
                await asyncio.to_thread(self._save)  # durably "taken" before the act
            except OSError:
                del self.ran[c.id]  # not taken: tried again with the next desired state
                raise
            ok, detail = await asyncio.to_thread(self._execute, c)
            entry.update(state="done", ok=ok, detail=detail[:300], done_at=time.time())
            try:
                await asyncio.to_thread(self._save)
            except OSError as exc:  # the act is done; after a restart it would read as interrupted
                log.error("fleet commands: cannot record the result of %s in %s (%s)", c.id, self.path, exc)
            self.on_event(
                Event(
                    EventKind.FLEET_COMMAND,
                    t=entry["done_at"],
                    command=c.id,
                    command_kind=c.kind,
                    pipeline=c.pipeline,
                    ok=ok,
                    detail=entry["detail"],
                    issued_by=c.issued_by,
                    reason=c.reason,
                )
            )
            (log.info if ok else log.warning)(
                "fleet command %s (%s %s from %s): %s", c.id, c.kind, c.pipeline, c.issued_by or "?", detail
            )

    def _execute(self, c) -> tuple[bool, str]:
        if not self.accept:
            return (
                False,
                "this agent does not accept fleet commands (cloud.accept_commands is false in its config)",
            )
        target = KINDS.get(c.kind)
        if target is None:
            return (
                False,
                f"this agent does not know command kind {c.kind!r}; it knows: {', '.join(sorted(KINDS))}",
            )
        module, _, fn = target.partition(":")
        try:
            return True, getattr(importlib.import_module(module), fn)(self.cfg, c)
        except ValueError as exc:
            return False, str(exc)
        except Exception as exc:  # a bug must not take the uplink down: reported as the command's failure
            log.exception("fleet command %s (%s) failed", c.id, c.kind)
            return False, f"{type(exc).__name__}: {exc}"

    def results(self) -> list[dict]:
        """``CommandResult`` fields of the finished commands the cloud still lists."""
        return [
            {k: r.get(k) for k in ("id", "kind", "pipeline", "ok", "detail", "done_at")}
            for i, r in self.ran.items()
            if i in self.listed and r.get("state") == "done"
        ]

    def status(self) -> dict:
        return {
            "ran": len(self.ran),
            "pending_report": len(self.results()),
            "recent": sorted(self.ran.values(), key=lambda r: r.get("started_at") or 0)[-5:],
        }
