"""The agent's model manager: reconciles the fleet's desired state with what the slots run.

For each desired slot whose digest differs from the running one (and whose slot follows the
fleet: ``version_policy: follow_fleet``), it downloads the package by digest into
``<data_dir>/staging/`` (resuming at the byte offset after a cut), checks the SHA-256 against the
digest, and hands it to ``ModelSlot.swap`` (signature and hashes verified, golden smoke test,
atomic switch, health watch). Each step is reported to the cloud (downloading, verifying, active,
healthy | failed | rolled_back with the reason). A package that fails verification is never
retried or accepted, whatever the desired state says. With the cloud down the agent keeps running
what it has; a slot pinned to a local package is never touched.

The desired state is input from the wire and is checked before it touches anything:
``check_desired`` accepts package names, versions, digests and deployment ids only from an
allow-list with a length limit (they become file names in ``staging/``), and a version lower than
the one a slot runs (same package) is refused unless the fleet marks the desired state as an
admin's rollback (deployment id ending in ``:rollback``). Any exception while installing is a
``failed`` report with its reason, and the digest is never tried again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from pathlib import Path

from edge_agent.models.config import VersionPolicy
from model_packager.manifest import version_key
from model_packager.text import printable

log = logging.getLogger(__name__)

_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_DEPLOYMENT_RE = re.compile(r"[0-9A-Za-z_-]{1,64}(:rollback)?")
ROLLBACK_SUFFIX = ":rollback"


def check_desired(d) -> str | None:
    """None when a desired slot's names are safe to use, else why not (one printable line)."""
    if not _PACKAGE_RE.fullmatch(d.package):
        return f"package name {printable(repr(d.package), 80)} is not a valid package name"
    try:
        version_key(d.version)
    except ValueError:
        return f"version {printable(repr(d.version), 80)} is not a semantic version"
    if not _DIGEST_RE.fullmatch(d.digest):
        return f"digest {printable(repr(d.digest), 80)} is not a SHA-256 in hex"
    if not _DEPLOYMENT_RE.fullmatch(d.deployment_id):
        return f"deployment id {printable(repr(d.deployment_id), 80)} is not valid"
    return None


def is_rollback(d) -> bool:
    return d.deployment_id.endswith(ROLLBACK_SUFFIX)


class ModelManager:
    def __init__(self, slots: dict, cfg, on_event=None) -> None:
        self.slots = slots
        self.cfg = cfg
        self.staging = cfg.data_dir / "staging"
        self.on_event = on_event or (lambda e: None)
        self.uplink = None
        self.busy: dict[str, str] = {}  # slot -> digest being installed
        self.refused: dict[str, str] = {}  # digest -> reason (never retried)
        self.declined: dict[tuple, str] = {}  # (slot, digest, deployment) -> reason: desired state refused
        self.steps: list[dict] = []
        self._tasks: set[asyncio.Task] = set()

    async def on_desired(self, reply) -> None:
        for d in reply.desired:
            slot = self.slots.get(d.slot)
            if slot is None:
                continue
            if slot.config.version_policy is VersionPolicy.PINNED:
                continue  # pinned: the fleet does not move this slot
            status = slot.status()
            current = status.get("digest")
            if d.digest == current or self.busy.get(d.slot) == d.digest:
                continue
            if d.digest in self.refused:
                continue
            key = (d.slot, d.digest, d.deployment_id)
            if key in self.declined:
                continue
            why = check_desired(d)
            if why is None and status.get("package") == d.package and status.get("version") and not is_rollback(d):
                try:
                    if version_key(d.version) < version_key(status["version"]):
                        why = (f"downgrade from {status['version']} to {d.version} refused: versions only go up, "
                               "except through a rollback an admin asked for")
                except ValueError:
                    pass
            if why is not None:  # declined for this deployment only: an admin's rollback may ask again
                self.declined[key] = why
                log.warning("slot %s: desired state refused: %s", d.slot, why)
                t = asyncio.create_task(self._report(d, "failed", False, why))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
                continue
            self.busy[d.slot] = d.digest
            t = asyncio.create_task(self._install(d))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _report(self, d, step: str, ok: bool, reason: str = "", health: dict | None = None) -> None:
        entry = {"t": time.time(), "slot": d.slot, "version": d.version, "step": step, "ok": ok, "reason": reason,
                 "deployment": d.deployment_id}
        self.steps.append(entry)
        self.steps = self.steps[-50:]
        self.on_event({"kind": "deployment_step", **entry})
        if self.uplink is None:
            return
        from protocols.gen import fleet_pb2 as pb
        from protocols.gen import fleet_pb2_grpc as rpc

        try:
            await rpc.FleetStub(self.uplink._channel).ReportDeployment(pb.DeploymentReport(
                deployment_id=d.deployment_id.split(":")[0], slot=d.slot, version=d.version, step=step, ok=ok,
                reason=reason, health_json=json.dumps(health or {})), timeout=10)
        except Exception as exc:  # the next heartbeat will retry the whole reconcile if needed
            log.warning("could not report deployment step %s for %s: %s", step, d.slot, exc)

    async def download(self, d) -> Path:
        from protocols.gen import fleet_pb2 as pb
        from protocols.gen import fleet_pb2_grpc as rpc

        self.staging.mkdir(parents=True, exist_ok=True)
        part = self.staging / f"{d.digest}.part"
        final = self.staging / f"{d.package}-{d.version}.edgepkg"
        for _attempt in range(20):
            offset = part.stat().st_size if part.exists() else 0
            try:
                call = rpc.FleetStub(self.uplink._channel).DownloadPackage(
                    pb.DownloadRequest(digest=d.digest, offset=offset), timeout=300)
                with open(part, "ab") as f:
                    async for chunk in call:
                        if chunk.offset != f.tell():
                            raise OSError(f"chunk at {chunk.offset}, expected {f.tell()}")
                        f.write(chunk.data)
                break
            except Exception as exc:  # resume from what is on disk
                log.warning("download of %s interrupted at %d bytes (%s); resuming", d.version,
                            part.stat().st_size if part.exists() else 0, exc)
                await asyncio.sleep(1.0)
        h = hashlib.sha256()
        with open(part, "rb") as f:
            while b := f.read(1 << 20):
                h.update(b)
        if h.hexdigest() != d.digest:
            part.unlink(missing_ok=True)
            raise ValueError(f"downloaded bytes do not match digest {d.digest[:12]}… (got {h.hexdigest()[:12]}…)")
        part.replace(final)
        return final

    async def _install(self, d) -> None:
        slot = self.slots[d.slot]
        try:
            await self._report(d, "downloading", True)
            try:
                pkg = await self.download(d)
            except Exception as exc:
                self.refused[d.digest] = str(exc)
                await self._report(d, "failed", False, printable(f"download: {exc}", 500))
                return
            await self._report(d, "verifying", True)
            try:
                outcome = await slot.swap(pkg)
            except Exception as exc:  # the slot turns failures into outcomes; this is the last guard
                self.refused[d.digest] = f"unexpected {type(exc).__name__}: {exc}"
                await self._report(d, "failed", False, printable(f"verify: {self.refused[d.digest]}", 500))
                return
            finally:
                pkg.unlink(missing_ok=True)
            if not outcome.ok:
                self.refused[d.digest] = outcome.reason or outcome.stage
                await self._report(d, "failed", False, printable(f"{outcome.stage}: {outcome.reason}", 500))
                return
            await self._report(d, "active", True)
            window = slot.config.health.window_s
            deadline = time.monotonic() + window + 60
            while time.monotonic() < deadline:
                await asyncio.sleep(min(1.0, window / 4))
                if slot.version != d.version:
                    last = slot.last_outcome
                    self.refused[d.digest] = last.reason if last else "rolled back"
                    await self._report(d, "rolled_back", False, last.reason if last else "rolled back")
                    return
                if slot.state == "active":
                    break
            await self._report(d, "healthy", True, health=self._health(d.slot))
        finally:
            self.busy.pop(d.slot, None)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel installs in flight; a half-downloaded package stays in staging and resumes next time."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def _health(self, slot: str) -> dict:
        s = self.slots[slot]
        c = s.counters
        n = max(1, c.get("inferences", 0))
        return {"error_rate": (c.get("errors", 0) + c.get("nonfinite", 0)) / n, "inferences": c.get("inferences", 0)}

    def status(self) -> dict:
        return {"busy": dict(self.busy), "refused": dict(self.refused), "steps": self.steps[-10:],
                "declined": [{"slot": k[0], "digest": k[1], "deployment": k[2], "reason": v}
                             for k, v in list(self.declined.items())[-10:]]}
