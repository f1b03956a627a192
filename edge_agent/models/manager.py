"""The agent's model manager: reconciles the fleet's desired state with what the slots run.

For each desired slot whose digest differs from the running one (and whose slot follows the
fleet: ``version_policy: follow_fleet``), and that installs nothing else at the moment (one install
per slot: a desired state that moves mid-swap is judged after that swap's outcome), it downloads the package by digest into
``<data_dir>/staging/`` (resuming at the byte offset after a cut), checks the SHA-256 against the
digest, and hands it to ``ModelSlot.swap`` (signature and hashes verified, golden smoke test,
atomic switch, health watch). Each step is reported to the cloud (downloading, verifying, active,
healthy | failed | rolled_back with the reason). A fleet rollback of the version heard inside its health
window rolls it back at once (``rolled_back_by_fleet``); a window that passed without enough inferences to
judge is reported ``watching``, never ``healthy``; a desired version the slot already serves is reported
``healthy`` once per deployment (nothing to install, else that deployment waits for it for good). A package
that fails verification, or that its health check rolled back, is not installed again in this run for the same
deployment, but a new deployment of it, or an admin's rollback to it, installs it again (golden test; a new
deployment is health-watched, an admin's rollback is not); a download that
fails is retried with backoff (``download_backoff_s`` doubling to ``download_backoff_max_s``), never refused
for good (except bytes that three times do not match the digest the fleet named). ``staging/`` holds
only what installs in flight use (one partial file per digest, written by one download at a time;
each slot's finished copy in ``staging/<slot>/``): each download first removes the rest (a partial download of a
package no longer desired, a package a kill -9 left before its install); a package larger than the
free disk is not written (its partial file is deleted) and the retry says so, with the sizes. A package
the slot's folder (``<data_dir>/models/<slot>/``) has no room to unpack is no refusal either: nothing of it
is kept, the step ``install_retry`` says the disk is full, and it is downloaded and installed again with the
same backoff (once there is room it goes through). With the cloud down the agent keeps running what it has; a slot pinned to a local package
is never touched. A desired state the agent will not follow (a slot it does not have, a pinned slot,
names or versions refused below) is reported once as ``failed`` with the reason, so that the rollout
stops saying why instead of waiting for this agent for ever. An install the fleet could not be asked about as it
began (whether it still sends the version: the link or the fleet down after the last chunk) goes on, noted in
``<data_dir>/deployments/withdrawals``; once the fleet answers it is asked first, and a version withdrawn
meanwhile is reported ``failed`` with the withdrawal's reason (rolled back at once while the slot holds its previous
model), never confirmed healthy. The fleet's word that a version is withdrawn is kept in the same file until no slot
serves it: a start rolls back, or reports failed, a served version withdrawn, as while the agent runs.

The outcome of a swap reaches the fleet exactly once, across restarts: before the swap the
deployment is written to ``<data_dir>/deployments/<slot>.json`` and the file is removed only once
the final step (healthy | rolled_back | failed) was acknowledged by the fleet. After a restart the
pending file is settled first, from the slot's state (a restart inside the health window resumes the
candidate for a new window, whose outcome settles it; a crash loop rolls it back: see ``ModelStore``; a
candidate the store recorded as failed, rolled back or refused before the restart, is reported ``failed``
with that reason and refused, not installed again from the same desired state), before any new install. A version
the slot's health check rolled back is kept in ``<data_dir>/deployments/health-rollbacks`` with its deployment: after
a restart with no pending file (acknowledged, or refused by a full disk), that same deployment, still desired, is
declined (told once), not installed again; a new deployment of the version, or an admin's rollback to it, installs
it again. So is a package refused at verification (its signature, its files' hashes: a download of the same digest
only repeats it; kept in memory only, it was downloaded and refused again at every start), while the trusted keys,
the configuration and the model the slot serves are those it was judged against (a key added, as the refusal
advises, then a restart: verified again). Other refusals (a copy damaged on disk, short of memory at load, a crash
loop) hold for the run only: the next run asks again.

The desired state is input from the wire and is checked before it touches anything:
``check_desired`` accepts package names, versions, digests and deployment ids only from an
allow-list with a length limit (they become file names in ``staging/``), and a version lower than
the one a slot runs (same package) is refused unless the fleet marks the desired state as an
admin's rollback (``DesiredSlot.rollback``; from a v2 fleet, a deployment id ending in ``:rollback``). Any exception while installing is a
``failed`` report with its reason, and that deployment is never tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import hashlib
import json
import logging
import re
import shutil
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.files import read_json_state, why_unread
from edge_agent.models.config import VersionPolicy, refused_version
from model_packager.manifest import version_key
from model_packager.text import printable
from protocols.events import Event, EventKind

if TYPE_CHECKING:
    from edge_agent.uplink.client import Uplink

log = logging.getLogger(__name__)
# what a pending deployment file (<data_dir>/deployments/<slot>.json, _write_pending) holds as text
_PENDING_KEYS = ("deployment_id", "slot", "version", "digest", "package")

_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_DEPLOYMENT_RE = re.compile(r"[0-9A-Za-z_-]{1,64}(:rollback)?")
ROLLBACK_SUFFIX = ":rollback"
MAX_DESIRED = 1000  # desired slots looked at per desired state (an agent runs a few; the rest is ignored)
MAX_DECLINED = 2 * MAX_DESIRED  # desired states refused that are remembered (each reported once)
# packages refused for good that are remembered (the oldest forgotten first): a fleet moves on from a refused
# version, so only the recent ones can be asked again; without a bound every version refused or rolled back
# in months of rollouts stayed in memory and in /status
MAX_REFUSED = 1000


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


def _slots_as_written(desired, slots: Collection[str]) -> list:
    """The fleet's desired slots, one naming a slot of ``slots`` as a config may spell it (``vision/``,
    ``./vision``: ``edge_agent.config.slot_name_as_written``) read as that slot (a copy of it). The agent's config
    reads such a name as the slot it means, the folder ``data_dir/models/vision`` the same, but a deployment to the
    slot as spelt was declined (``this agent has no model slot 'vision/'``) and its rollout halted. Only when that
    is the one desired entry meaning the slot (one deployment per slot): ``vision`` itself, or ``vision/`` beside
    ``./vision``, leaves each spelt one as it is (declined by ``_no_slot``)."""
    if all(d.slot in slots for d in desired):  # (each heartbeat: nothing to read)
        return desired
    from edge_agent.config import slot_name_as_written

    def means(name):
        meant = slot_name_as_written(name) if isinstance(name, str) and name not in slots else None
        return meant if meant is not None and meant in slots else None

    meaning = [means(d.slot) or d.slot for d in desired]
    out = []
    for d, meant in zip(desired, meaning, strict=True):
        if meant != d.slot and meaning.count(meant) == 1:
            if hasattr(d, "CopyFrom"):  # (a protobuf message)
                d, given = type(d)(), d
                d.CopyFrom(given)
            else:
                d = copy.copy(d)
            d.slot = meant
        out.append(d)
    return out


def _no_slot(name: str, slots: Collection[str]) -> str:
    """Why a desired slot not among ``slots`` is declined; one naming a slot as a config may spell it, kept apart
    because the desired state names that slot more than once (``_slots_as_written``), says so."""
    from edge_agent.config import slot_name_as_written

    meant = slot_name_as_written(name) if isinstance(name, str) else None
    if meant is not None and meant in slots:
        return (
            f"slot {printable(repr(name), 80)} is slot {meant!r} as written, which the fleet's desired state names "
            f"more than once: one deployment per slot; deploy to {meant!r}"
        )
    return f"this agent has no model slot {printable(repr(name), 80)} (its slots: {', '.join(sorted(slots)) or 'none'})"


def is_rollback(d) -> bool:
    """An admin's (or a failed gate's) rollback: the explicit field (v3 fleet), or the v2 id suffix."""
    return bool(getattr(d, "rollback", False)) or d.deployment_id.endswith(ROLLBACK_SUFFIX)


def _store_failed(slot, d) -> str | None:
    """The slot's store's ``failed`` entry for the folder of ``d``'s package, as it stands, or None."""
    store = getattr(slot, "store", None)
    failed = store.state().get("failed") if store is not None else None
    if not isinstance(failed, dict):
        return None
    why = failed.get(f"{d.package}-{d.version}-{str(d.digest)[:12]}")
    return why if isinstance(why, str) else None


def _failed_in_store(slot, d) -> str | None:
    """Why the slot's store recorded the package of the pending deployment ``d`` as failed (rolled back by its
    health check or a crash loop, refused at load or golden test: ``ModelStore.mark_failed``), or None. An earlier
    deployment's verdict on the same folder is dropped from the store before ``d``'s pending file is written
    (``ModelStore.forget_failed``): a restart inside a new deployment's swap read it as that one's outcome, reported
    it failed with the old reason and held it. Where the disk refused that change (and with a pending file of a
    former release), the entry as it stood then (``failed_before``) is not ``d``'s outcome. Nor is a folder the slot
    set aside at its start (``ModelStore.set_aside``: a byte altered on disk): a copy to fetch again, which the
    desired state installs again. An agent stopped between the fleet's answer to the healthy report and the pending
    file's removal read it as a verdict: the deployment, completed, was reported failed and the version refused for
    good, the previous one served."""
    from edge_agent.models.store import SET_ASIDE  # (loaded with the slots: not at the manager's import)

    why = _store_failed(slot, d)
    if why is None or why == getattr(d, "failed_before", None) or why.startswith(SET_ASIDE):
        return None
    return printable(f"{why} (before the agent restarted)", 500)


def _watches(slot) -> bool:
    """Whether the slot's health watch runs on the model it serves (its verdict still to come), as the slot says
    (``ModelSlot.watches_active``), not read from its state: a swap refused beside a resumed window set the state
    ``active`` while the watch ran on, and the candidate was reported healthy before its verdict."""
    ask = getattr(slot, "watches_active", None)
    return bool(ask()) if callable(ask) else getattr(slot, "state", None) == "watching"


# gRPC codes after which the fleet said nothing about a package (the link, the server): ``_still_sent`` is not answered.
# PERMISSION_DENIED too: the fleet answers it for a package no longer in this agent's desired state (a deployment
# since, the same answer as an unknown digest), withdrawn or not: read as "still sent", the install asked about it
# was settled healthy and its unasked note dropped; unknown, it is asked again later (while the slot serves it)
_UNANSWERED = {
    "PERMISSION_DENIED",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "CANCELLED",
    "UNKNOWN",
    "INTERNAL",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
}
# the withdrawal state, across restarts, in deployments/ (not *.json: no pending deployment): {"unasked": slot -> an
# install the fleet could not be asked about (_PENDING_KEYS as text, ``size``, ``withdrawn``: the fleet's reason once
# it said so; ``_note_unasked``), "withdrawn": digest -> the fleet's reason (``_withdraw``)}; its copy beside it
# (WITHDRAWALS + ".copy") is read when a torn write left the file unreadable
WITHDRAWALS = "withdrawals"
UNASKED = "withdrawal-unasked"  # a former release's file of the unasked installs alone: read, folded into WITHDRAWALS
_WITHDRAWALS_LOCK = threading.Lock()  # one read-change-write of the withdrawal state at a time

# who rolled a model back, as its mark says (``edge_agent.models.store.MARK_ADMIN``, not imported with the manager):
# every rollback the manager asks for is the fleet's (a withdrawal, an admin's rollback)
_MARK_ADMIN = "admin"
HEALTH_VERDICT = "health check failed"  # the start of the slot's reason for its health check's rollback
# health-check rollbacks kept across restarts in deployments/ (not *.json: no pending deployment): digest ->
# {"deployment", "why", "tenant": whose deployment it was (none: the tenant the gateway serves)} (``_hold``)
HEALTH_ROLLBACKS = "health-rollbacks"
MAX_HELD = 50  # health-check rollbacks kept across restarts (the latest)
_HELD_LOCK = threading.Lock()  # one read-change-write of a health-rollbacks file at a time (_hold)


def forget_former_tenant(data_dir: Path, former: str) -> list[str]:
    """Remove what the model manager kept in ``<data_dir>/deployments/`` for the gateway's former tenant ``former``:
    its pending deployments (``<slot>.json``) and its withdrawal state (WITHDRAWALS, its copy, a former release's
    UNASKED); its health-check rollbacks are set aside as its own (``_set_aside_held``): a manager reads only its
    tenant's, and a move back finds them again. Called by the start that finds the gateway moved to another tenant,
    before the manager starts: kept, the new tenant's first desired state settled the former tenant's pending
    deployment to the new fleet, as a ``deployment_step`` naming its deployment id, version and the withdrawal's
    reason its admin wrote. Returns the names removed; one the disk refuses to remove is said (it would be reported
    to the new tenant)."""
    folder = Path(data_dir) / "deployments"
    if not folder.is_dir():
        return []
    _set_aside_held(folder / HEALTH_ROLLBACKS, former)
    gone: list[str] = []
    names = [p.name for p in folder.glob("*.json")] + [
        WITHDRAWALS,
        WITHDRAWALS + ".copy",
        UNASKED,
    ]
    for name in names:
        try:
            (folder / name).unlink()
            gone.append(name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning(
                "model manager: cannot remove the former tenant's %s (%s): its deployment may be reported to the "
                "new tenant",
                folder / name,
                exc,
            )
    return gone


def _set_aside_held(path: Path, former: str) -> None:
    """The health-check rollbacks in ``path`` kept by no tenant's name (written before a manager knew its tenant, or
    with none) named ``former``'s: read by its managers only, after a move back to it too (removed, a move back
    installed again, for the same deployment, a version its health check had rolled back). Those named already are
    left as they are, so a start killed after this and done again names nothing twice. A disk that refuses the
    change removes the file (else the new tenant's manager would read them as its own)."""
    try:
        held = read_json_state(path)
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        held = None
    if isinstance(held, dict):
        named = {
            k: (v if not isinstance(v, dict) or "tenant" in v else {**v, "tenant": former})
            for k, v in held.items()
        }
        if named == held:
            return
        try:
            from edge_agent.files import atomic_write_json

            atomic_write_json(path, named)
            return
        except OSError as exc:
            log.warning("model manager: cannot set aside the former tenant's %s (%s): removed", path, exc)
    with contextlib.suppress(OSError):
        path.unlink()


def sweep_temps(folder: Path) -> list[str]:
    """Remove the temporary files the model manager left in ``deployments/`` when its process was killed between
    writing one and renaming it (``health-rollbacks.<pid>.<thread>.tmp``, ``<slot>.<pid>.tmp``, a former release's
    ``<slot>.tmp``): each named by its writer, no later write replaced them, and a gateway killed mid-write now and
    then for months piled them up. Those of this process are kept (another agent of it may be writing one). Called
    by the manager as it is made, before it writes any. Returns the names removed; each is said."""
    import os

    gone: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return gone
    mine = str(os.getpid())
    for e in entries:
        parts = e.name.split(".")
        if len(parts) < 2 or parts[-1] != "tmp" or mine in parts[1:-1] or e.name.startswith("."):
            continue  # (``.<name>.<pid>.tmp``: atomic_write_json's, swept with the data folder's lock)
        try:
            if not e.is_file(follow_symlinks=False):
                continue
            os.unlink(e.path)
        except OSError:
            continue
        gone.append(e.name)
        log.info(
            "model manager: removed %s, left half-written by an agent that was killed", Path(folder) / e.name
        )
    return gone


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


class NoSpace(OSError):
    """The staging disk cannot hold the package (tried again later, after its partial file was deleted)."""


class DigestMismatch(ValueError):
    """The downloaded bytes are not the package the fleet named (refused for good, unlike a cut link)."""


class StoppedByFleet(Exception):
    """The fleet stopped the download for good (``FAILED_PRECONDITION``: its version was withdrawn from the
    registry, at the start or between two chunks): its partial file is deleted and the package is not installed."""


def _fleet_stopped(exc: BaseException) -> str | None:
    """The fleet's reason when ``exc`` is its refusal to send a package any more (``FAILED_PRECONDITION``), else
    None."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and getattr(code(), "name", "") == "FAILED_PRECONDITION":
        return printable(str(details() if callable(details) else exc), 300)
    return None


class ModelManager:
    def __init__(self, slots: dict, cfg, on_event=None, tenant: str | None = None) -> None:
        """``tenant``: the tenant the gateway serves (its client certificate's), named in the health-check rollbacks
        it keeps; it reads only its own (``_held_why``)."""
        self.slots = slots
        self.tenant = tenant
        self.cfg = cfg
        self.staging = cfg.data_dir / "staging"
        self.on_event = on_event or (lambda e: None)
        self.uplink: Uplink | None = None
        self.busy: dict[str, str] = {}  # slot -> digest being installed
        self.refused: dict[str, str] = {}  # digest -> reason (never retried)
        self._refused_for: dict[str, str] = {}  # digest -> the deployment whose outcome said so
        # digest -> the fleet's reason: a version the fleet said was withdrawn (``_ask_again``), whatever the
        # deployment that names it: never confirmed nor settled healthy, across restarts (kept in WITHDRAWALS until
        # no slot serves it: an entry in memory only was lost by a restart before the fleet heard the failure, and
        # the next start confirmed the withdrawn version healthy)
        self.withdrawn: dict[str, str] = {}
        self.declined: dict[tuple, str] = {}  # (slot, digest, deployment) -> reason: desired state refused
        # (slot, digest, deployment) told it waits for a health window resumed after a restart
        self.waiting_said: dict[tuple, bool] = {}
        self.steps: list[dict] = []
        self._tasks: set[asyncio.Task] = set()
        self.pending_dir = cfg.data_dir / "deployments"
        sweep_temps(self.pending_dir)  # (before this manager writes any)
        self.withdrawn = self._read_withdrawals()[1]  # (those of the run before: ``_take_out_withdrawn``)
        self.retry_at: dict[str, float] = {}  # digest -> monotonic time before which a failed download waits
        self._download_failures: dict[str, int] = {}
        self._install_failures: dict[str, int] = {}  # digest -> installs refused for a full disk in a row
        self._too_many_at: int | None = None  # the generation of a desired state with too many slots
        self._downloading: dict[str, asyncio.Lock] = {}  # digest -> held while its .part is written
        self._staged: dict[str, set[str]] = {}  # slot -> names in staging/ its install in flight uses
        self.download_backoff_s = 2.0
        self.download_backoff_max_s = 60.0
        # slot -> (digest, rollback) of the fleet's latest desired state: an install inside its health window
        # rolls back at once when the fleet rolled its version back
        self.wanted: dict[str, tuple[str, bool]] = {}
        # seconds past the health window after which an install still watching says so to the fleet (once);
        # it reports healthy only once the slot has judged the candidate
        self.health_grace_s = 60.0
        # (slot, deployment id, digest) desired states the fleet heard this agent runs (bounded, oldest first)
        self.confirmed: dict[tuple[str, str, str], None] = {}
        # (slot, deployment id, digest) deployments of a withdrawn version told it failed (bounded, oldest first)
        self.told_withdrawn: dict[tuple[str, str, str], None] = {}
        # slot -> an install asked about again once the fleet answers, kept here when the disk refused its file
        self._unasked_mem: dict[str, dict] = {}
        self._cfg_basis: str | None = None  # (``_verify_basis``: the configuration does not change in a run)

    def _is_refused(self, digest: str) -> bool:
        return digest in self.refused

    def _withdraw(self, digest: str, why: str | None) -> None:
        """Note (``why``: the fleet's reason) or forget (None) a withdrawn version, in memory and in WITHDRAWALS
        (at most ``MAX_REFUSED``, the oldest forgotten first). A disk that refuses the file keeps it for this run."""
        with _WITHDRAWALS_LOCK:
            if why is None and digest not in self.withdrawn:
                return
            self.withdrawn.pop(digest, None)  # the latest last
            if why is not None:
                self.withdrawn[digest] = why
            while len(self.withdrawn) > MAX_REFUSED:
                del self.withdrawn[next(iter(self.withdrawn))]
            try:
                self._write_withdrawals(self._read_withdrawals()[0], self.withdrawn)
            except OSError as exc:
                log.warning(
                    "model manager: cannot record in %s that %s is %s (%s): kept for this run only",
                    self._withdrawals_path(),
                    digest[:12],
                    "withdrawn" if why is not None else "no longer withdrawn",
                    exc,
                )

    def _forget_withdrawn(self) -> None:
        """Forget the withdrawals of versions no slot serves nor installs any more (kept until then: a start
        rolls back, or reports failed, a served digest the fleet said is withdrawn, as while it runs)."""
        served = {s.status().get("digest") for s in self.slots.values()} | set(self.busy.values())
        # all in one write: one write per entry (the file re-read, written and copied, fsynced, each time) took 95 s
        # for 1000 entries, in the handling of a desired state
        with _WITHDRAWALS_LOCK:
            gone = [
                k for k in list(self.withdrawn) if k not in served
            ]  # (a copy: a worker thread may change it)
            unasked, _, damaged = self._read_withdrawals_from()
            if not gone and not damaged:
                return
            for digest in gone:
                self.withdrawn.pop(digest, None)
            try:
                # (a file read from its copy, damaged beside it, written again from it: else every read of it
                # warned, twice a heartbeat, until the next withdrawal changed it)
                self._write_withdrawals(unasked, self.withdrawn)
            except OSError as exc:
                log.warning(
                    "model manager: cannot write %s (%d versions no longer withdrawn%s: %s): kept for this run only",
                    self._withdrawals_path(),
                    len(gone),
                    "; damaged, read from its copy" if damaged else "",
                    exc,
                )
                return
            if damaged:
                log.warning("model manager: %s written again from its copy", self._withdrawals_path())

    def _refuse(self, digest: str, reason: str, d=None) -> None:
        """Refuse ``digest`` for good in this run (never tried again), remembering at most ``MAX_REFUSED``; ``d``:
        the deployment whose outcome says so (a later deployment of it is told why, once)."""
        self.refused.pop(digest, None)  # the latest last
        self.refused[digest] = reason
        if d is not None:
            self._refused_for[digest] = d.deployment_id
        while len(self.refused) > MAX_REFUSED:
            gone = next(iter(self.refused))
            del self.refused[gone]
            self._refused_for.pop(gone, None)

    # ---- health-check rollbacks, across restarts ----------------------------------------------------
    def _held_path(self) -> Path:
        return self.pending_dir / HEALTH_ROLLBACKS

    def _held(self) -> dict:
        try:
            kept = read_json_state(self._held_path())
        except (OSError, ValueError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("model manager: %s: %s", self._held_path(), printable(why_unread(exc), 300))
            return {}
        return kept if isinstance(kept, dict) else {}

    def _hold(self, d, reason: str, kind: str = "health") -> None:
        """Keep, across restarts, that the slot's health check rolled back ``d``'s version for deployment ``d``
        (only that verdict: a copy damaged on disk, a refusal short of memory, a crash loop say nothing for good
        about the package). Written before the outcome is reported: once the fleet acknowledged it nothing else
        on the agent said so, and that deployment, still desired, installed and served the version again. So is a
        health check's rollback a start reconciles from its mark (an end between the mark and its state.json: the
        verdict's words are lost, the mark says the health check rolled the candidate back, or is empty as a former
        release left it; ``ModelStore.after_restart``). A crash loop's or the fleet's rollback cut there is not."""
        from edge_agent.models.store import UNRECORDED_ROLLBACK  # (loaded with the slots)

        # ``kind`` "verify": the package refused at verification (its signature, its files' hashes), which a download
        # of the same digest can only repeat: kept too (in memory only, a start downloaded it and refused it again
        # at every restart, for as long as the fleet asked)
        if kind == "health" and not reason.startswith((HEALTH_VERDICT, UNRECORDED_ROLLBACK)):
            return
        import os

        basis = self._verify_basis(d) if kind == "verify" else None
        p = self._held_path()
        # one writer at a time, each through its own temporary name: two slots rolled back in the same instant
        # (each _watch in a worker thread) both read the file before either wrote it, and one verdict was lost
        tmp = p.with_name(f"{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with _HELD_LOCK:
                held = self._held()
                held.pop(d.digest, None)
                held[d.digest] = {"deployment": d.deployment_id, "why": printable(reason, 400)}
                if self.tenant is not None:
                    held[d.digest]["tenant"] = self.tenant
                if kind != "health":
                    held[d.digest]["kind"] = kind
                    held[d.digest]["basis"] = basis
                held = dict(list(held.items())[-MAX_HELD:])
                self.pending_dir.mkdir(parents=True, exist_ok=True)
                with open(tmp, "w") as f:
                    json.dump(held, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, p)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning(
                "model manager: cannot record the health check's rollback of %s %s in %s (%s): after a restart "
                "deployment %s, still desired, installs it again",
                printable(d.package, 80),
                printable(d.version, 80),
                p,
                exc,
                printable(d.deployment_id, 80),
            )

    def _verify_basis(self, d) -> str:
        """A digest of what a verification of ``d`` here depends on besides the package's bytes: the trusted keys
        (each file's bytes, each folder's files), the agent's configuration (the slot's refused versions, its
        pipelines' checks) and the model the slot serves (a package of another task is refused). A refusal at
        verification kept with another basis is not kept for this start (``_held_why``)."""
        h = hashlib.sha256()
        if self._cfg_basis is None:
            try:
                dumped = json.dumps(self.cfg.model_dump(mode="json"), sort_keys=True, default=str)
            except Exception:  # (not a pydantic config: its repr)
                dumped = repr(self.cfg)
            self._cfg_basis = hashlib.sha256(dumped.encode()).hexdigest()
        h.update(self._cfg_basis.encode())
        for k in getattr(self.cfg, "trusted_keys", ()):
            path = Path(self.cfg.path(k)) if hasattr(self.cfg, "path") else Path(k)
            try:
                files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
            except OSError:
                files = []
            h.update(b"\0key:" + str(path).encode())
            for f in files:
                try:
                    h.update(b"\0" + f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
                except OSError as exc:
                    h.update(b"\0" + f.name.encode() + b"\0unread:" + type(exc).__name__.encode())
        slot = self.slots.get(d.slot)
        h.update(b"\0serving:" + str(getattr(slot, "digest", None)).encode())
        return h.hexdigest()[:32]

    def _held_why(self, d) -> str | None:
        """Why deployment ``d`` is not installed: the slot's health check rolled its version back for this same
        deployment in a run before (``_hold``); None otherwise. A new deployment of it, or an admin's rollback
        to it, asks again: installed again."""
        if is_rollback(d):
            return None
        kept = self._held().get(d.digest)
        if not isinstance(kept, dict) or kept.get("deployment") != d.deployment_id:
            return None
        if kept.get("tenant", self.tenant) != self.tenant:  # a former tenant's (``_set_aside_held``)
            return None
        if kept.get("kind") == "verify" and kept.get("basis") != self._verify_basis(d):
            # judged against other trusted keys or another configuration (the refusal's advice followed: the key
            # added, then a restart): verified again. Kept regardless, the deployment was declined for good
            return None
        what = (
            "refused at verification" if kept.get("kind") == "verify" else "rolled back by the health check"
        )
        return printable(
            f"{d.package} {d.version} was {what} here for this deployment before the agent restarted: "
            f"{kept.get('why')}; a new deployment of it, or an admin's rollback to it, installs it again",
            500,
        )

    def _forget_retries(self, desired) -> None:
        """Backoffs and failure counts of packages no longer desired (nor installing): else one entry was
        kept for every version whose download or install ever failed, for as long as the agent ran."""
        wanted = {d.digest for d in desired} | set(self.busy.values())
        for table in (self.retry_at, self._download_failures, self._install_failures):
            for digest in [k for k in table if k not in wanted]:
                del table[digest]

    # ---- the final step of a swap, exactly once across restarts -----------------------------------
    def _pending_path(self, slot: str) -> Path:
        return self.pending_dir / f"{slot}.json"

    def _write_pending(self, d) -> None:
        import os

        # an earlier deployment's verdict on this folder is dropped from the store before this one is recorded: an
        # entry a restart finds is then this deployment's outcome (told apart by its text, a second rollback in the
        # same words within the second before it was recorded read as the first one's, and the version served again)
        slot = self.slots.get(d.slot)
        failed_before = _store_failed(slot, d)
        store = getattr(slot, "store", None)
        if failed_before is not None and store is not None:
            store.forget_failed(f"{d.package}-{d.version}-{str(d.digest)[:12]}")
            if (
                store.unwritten is None
            ):  # (else the file on disk still holds it: not this deployment's outcome)
                failed_before = None
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        p = self._pending_path(d.slot)
        tmp = p.with_name(f"{d.slot}.{os.getpid()}.tmp")  # (its writer's: ``sweep_temps``)
        try:
            with open(tmp, "w") as f:
                json.dump(
                    {
                        "deployment_id": d.deployment_id,
                        "slot": d.slot,
                        "version": d.version,
                        "digest": d.digest,
                        "package": d.package,
                        "failed_before": failed_before,
                    },
                    f,
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            tmp.unlink(missing_ok=True)  # (on a full disk it held the room left)
            raise

    async def _settle(self, d, step: str, ok: bool, reason: str = "", health: dict | None = None) -> None:
        """Report the final step; forget the pending file only once the fleet has it."""
        if await self._report(d, step, ok, reason, health):
            self._pending_path(d.slot).unlink(missing_ok=True)

    async def _settle_pending(self, unasked: Collection[str] = ()) -> None:
        """Pending files left by an earlier run (or a report that did not get through): report their outcome; not
        those of ``unasked`` slots (installed while the fleet could not be asked about them: ``_ask_again``)."""
        if not self.pending_dir.is_dir():
            return
        from types import SimpleNamespace

        for p in sorted(self.pending_dir.glob("*.json")):
            try:  # bounded: the data folder is anyone's with the gateway's shell (a named pipe, a deep nest)
                kept = read_json_state(p)
                if not isinstance(kept, dict) or not all(isinstance(kept.get(k), str) for k in _PENDING_KEYS):
                    raise ValueError(
                        f"not a deployment this agent wrote (its {', '.join(_PENDING_KEYS)} as text)"
                    )
                d = SimpleNamespace(**kept)
            except (OSError, ValueError, TypeError) as exc:
                log.warning(
                    "model manager: %s: %s; removed, its outcome not reported",
                    printable(str(p)),
                    printable(why_unread(exc), 300),
                )
                p.unlink(missing_ok=True)
                continue
            slot = self.slots.get(d.slot)
            if slot is None or self.busy.get(d.slot) or d.slot in unasked:
                continue  # (an install the fleet could not be asked about: its outcome waits for the answer)
            last = slot.last_outcome
            if slot.status().get("digest") == d.digest:
                if d.digest in self.withdrawn:  # (reported failed by _ask_again; never healthy)
                    await self._settle(d, "failed", False, self.withdrawn[d.digest])
                elif slot.state == "active" and not _watches(slot):
                    await self._settle(d, "healthy", True, health=self._health(d.slot))
                continue  # still watching: the install task of this run reports
            if last is not None and last.stage == "rolled_back" and last.from_version == d.version:
                self._refuse(d.digest, last.reason or "rolled back", d)
                await asyncio.to_thread(self._hold, d, last.reason or "")
                await self._settle(d, "rolled_back", False, last.reason or "rolled back")
            elif (
                last is not None and not last.ok and last.to_version == d.version and d.digest in self.refused
            ):
                await self._settle(
                    d, "failed", False, f"{last.stage}: {last.reason}"
                )  # an earlier report was lost
            elif (why := _failed_in_store(slot, d)) is not None:
                # after a restart nothing in memory says what became of it, but the slot's store does (state.json):
                # it was rolled back or failed its load or golden test, and the fleet never heard (the link was
                # down). Forgetting that installed the version again from the same desired state and served it
                self._refuse(d.digest, why, d)
                await asyncio.to_thread(self._hold, d, why)
                await self._settle(d, "failed", False, why)
            else:  # interrupted before the switch: the desired state will install it again
                p.unlink(missing_ok=True)

    async def on_desired(self, reply) -> None:
        # a slot as its config may spell it (vision/, ./vision: read as vision, ``slot_name_as_written``)
        desired = _slots_as_written(reply.desired, self.slots)
        # the fleet answers: installs it could not be asked about are asked about first (a version withdrawn
        # meanwhile is reported failed, never confirmed healthy by what follows)
        for name in sorted(set(self._unasked()) | set(self._unasked_mem)):
            await self._ask_again(name, desired=desired)
        unasked = set(self._unasked()) | set(self._unasked_mem)
        await self._take_out_withdrawn(unasked)
        await self._settle_pending(unasked)
        await asyncio.to_thread(self._forget_withdrawn)
        if len(desired) > MAX_DESIRED:  # a fleet gone wrong: bounded work and reports per desired state
            log.log(
                logging.WARNING if reply.generation != self._too_many_at else logging.DEBUG,
                "the fleet's desired state names %d model slots; looking at the first %d only",
                len(desired),
                MAX_DESIRED,
            )
            desired = desired[:MAX_DESIRED]
            self._too_many_at = reply.generation  # said once per desired state, not at every heartbeat
        self.wanted = {d.slot: (d.digest, is_rollback(d)) for d in desired}
        self._forget_retries(desired)
        for d in desired:
            key = (d.slot, d.digest, d.deployment_id)
            if key in self.declined:
                continue
            slot = self.slots.get(d.slot)
            if slot is None:  # a typo in the deployment, or an agent configured otherwise: say so, once
                self._decline(key, d, _no_slot(d.slot, self.slots))
                continue
            status = slot.status()
            current = status.get("digest")
            if slot.config.version_policy is VersionPolicy.PINNED:  # the fleet does not move this slot
                if d.digest != current:
                    self._decline(
                        key,
                        d,
                        f"slot {d.slot} is pinned to its local package (version_policy: pinned); set "
                        "version_policy: follow_fleet in the agent's config to let the fleet move it",
                    )
                continue
            if d.digest == current and d.digest in self.withdrawn:
                self._tell_withdrawn(
                    d
                )  # (failed, once: the rollout halts and the previous version is sent back)
                continue
            if d.digest == current and (
                d.digest in self.withdrawn
                or (self._is_refused(d.digest) and self._refused_for.get(d.digest) == d.deployment_id)
                or d.slot in unasked
            ):
                # withdrawn (whatever the deployment naming it: the same version deployed again while the fleet
                # could not be asked was confirmed healthy and its rollout completed), or not yet asked about
                continue
            if (
                d.digest == current
                and not self.busy.get(d.slot)
                and status.get("state") == "active"
                and not _watches(slot)
            ):
                self._confirm(d)  # nothing to install: the fleet hears it runs the version, once
                continue
            if d.digest == current or self.busy.get(d.slot):
                # one install per slot at a time: a desired state that moved mid-swap is judged (versions
                # only go up) against what the slot runs once this swap has its outcome, never beside it
                continue
            if self._is_refused(d.digest) and self._refused_for.get(d.digest) == d.deployment_id:
                continue  # its outcome was reported; that deployment is not tried again
            # a new deployment of a version refused in this run (for any reason: its health check, a load short of
            # memory, a damaged copy), or an admin's rollback to it: the fleet asks again, and it is installed again
            # (was, but for the health check's verdict: declined "was refused here" until the agent restarted)
            why = check_desired(d)
            if why is None and refused_version(
                getattr(getattr(slot, "config", None), "refused_versions", ()), d.version
            ):
                why = (
                    f"{d.package} {d.version} is a version this agent refuses (models.{d.slot}.refused_versions in "
                    "its config)"
                )
            if (
                why is None
                and status.get("package") == d.package
                and status.get("version")
                and not is_rollback(d)
            ):
                try:
                    if version_key(d.version) < version_key(status["version"]):
                        why = (
                            f"downgrade from {status['version']} to {d.version} refused: versions only go up, "
                            "except through a rollback an admin asked for"
                        )
                except ValueError:
                    pass
            if why is None:  # (this deployment only: a new one, or an admin's rollback, asks again)
                why = self._held_why(d)
            if why is not None:  # declined for this deployment only: an admin's rollback may ask again
                self._decline(key, d, why)
                continue
            if _watches(slot) and not is_rollback(d):
                # a health window resumed after a restart (no install task of this run): its outcome (the pending
                # file) settles first. Installed beside it, its verdict fell due during the next swap and rolled
                # back the new version in its place. An admin's rollback goes through (not judged by a window; a
                # window on a stopped line never ends). The fleet hears why it waits, once per deployment (it
                # showed the target pending, with no reason, for as long as the line was stopped)
                self._say_waiting(key, d, slot, status)
                continue
            if time.monotonic() < self.retry_at.get(d.digest, 0):
                continue  # a failed download waits for its backoff
            self.busy[d.slot] = d.digest
            t = asyncio.create_task(self._install(d))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _take_out_withdrawn(self, unasked: Collection[str]) -> None:
        """A slot that serves a version the fleet said is withdrawn (a run before said so: WITHDRAWALS) inside a
        health window resumed after a restart (its previous model held) goes back to it at once, as ``_ask_again``
        does while the agent runs; its pending file then reports the rollback with the withdrawal's reason. One
        past its window serves on: the desired state naming it is told it failed (``_tell_withdrawn``) and the
        rollout's halt sends the previous version back. Not a slot installing (its task watches it) nor one still
        to be asked about (``_ask_again``)."""
        for name, slot in self.slots.items():
            status = slot.status()
            why = self.withdrawn.get(status.get("digest") or "")
            if why is None or self.busy.get(name) or name in unasked or not _watches(slot):
                continue
            log.warning(
                "slot %s: %s %s, in a health window resumed after a restart, was withdrawn: %s",
                printable(name, 80),
                printable(str(status.get("package")), 80),
                printable(str(status.get("version")), 80),
                why,
            )
            await slot.rollback(why, candidate=getattr(slot, "_active", None), kind=_MARK_ADMIN)

    def _say_waiting(self, key: tuple, d, slot, status: dict) -> None:
        """Report ``waiting`` for a deployment held behind a health window resumed after a restart, once."""
        if key in self.waiting_said:
            return
        self.waiting_said[key] = True
        while len(self.waiting_said) > MAX_DECLINED:  # bounded, as the declined
            del self.waiting_said[next(iter(self.waiting_said))]
        a = getattr(slot, "_active", None)
        n = a.health.n if a is not None else 0
        why = (
            f"slot {d.slot} is in the health window of {status.get('version')} resumed after a restart ({n} of "
            f"{slot.config.health.min_items} inferences); {d.version} is installed once it has its outcome (is the "
            "line running?)"
        )
        log.info(
            "slot %s: deployment %s waits: %s", printable(d.slot, 80), printable(d.deployment_id, 80), why
        )
        reported = asyncio.create_task(self._report(d, "waiting", True, why))
        self._tasks.add(reported)
        reported.add_done_callback(self._tasks.discard)

    def _tell_withdrawn(self, d) -> None:
        """Report ``failed`` with the withdrawal's reason, once per deployment, to a desired state naming a version
        the fleet said is withdrawn: a deployment of it the agent's own re-check did not tell (the install task's
        report went to the deployment it installed, superseded by a later one of the same version) stayed assigned,
        no halt, and the withdrawn model served on (review /work/notes56/review_tenant2 H1')."""
        key = (d.slot, d.deployment_id, d.digest)
        if key in self.told_withdrawn or self.uplink is None:
            return
        self._told(key)

        async def report() -> None:
            if not await self._report(d, "failed", False, self.withdrawn.get(d.digest, "withdrawn")):
                self.told_withdrawn.pop(key, None)  # not heard: said again at the next desired state

        t = asyncio.create_task(report())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _told(self, key: tuple[str, str, str]) -> None:
        self.told_withdrawn[key] = None
        while len(self.told_withdrawn) > MAX_DECLINED:
            del self.told_withdrawn[next(iter(self.told_withdrawn))]

    def _confirm(self, d) -> None:
        """Report ``healthy`` for a desired state the slot already serves (nothing to install), once per
        deployment: an agent that never left the version (an admin's rollback of the whole fleet), went back
        by its own health check or the fleet's rollback inside the window, or was offline at a halt, reported
        nothing, so that deployment waited for it for good."""
        key = (d.slot, d.deployment_id, d.digest)
        if key in self.confirmed or self.uplink is None:
            return
        self.confirmed[key] = None
        while len(self.confirmed) > MAX_DECLINED:
            del self.confirmed[next(iter(self.confirmed))]

        async def report() -> None:
            ok = await self._report(d, "healthy", True, "it runs this version", self._health(d.slot))
            if not ok:  # not heard: said again at the next desired state
                self.confirmed.pop(key, None)

        t = asyncio.create_task(report())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _decline(self, key: tuple, d, why: str) -> None:
        """Refuse a desired state (this deployment only) and tell the fleet why, once."""
        self.declined[key] = why
        while len(self.declined) > MAX_DECLINED:  # a fleet sending thousands: memory stays bounded
            del self.declined[next(iter(self.declined))]
        log.warning("slot %s: desired state refused: %s", printable(d.slot, 80), why)
        self._tell_failed_slot(d, f"was declined: {why}")
        reported = asyncio.create_task(self._report(d, "failed", False, why))
        self._tasks.add(reported)
        reported.add_done_callback(self._tasks.discard)

    def _tell_failed_slot(self, d, then: str) -> None:
        """A slot with no model (failed at its start: waiting for its first package, or its own refused) whose
        deployment is refused before any swap (declined, a download the fleet keeps sending wrong) says so in its
        reason (``ModelSlot.failed_refusal``): it read "waiting for the fleet's deployment" for as long as the
        refusal stood (a version its config refuses), on /status, in ``edge-agent status`` and to the fleet."""
        slot = self.slots.get(d.slot)
        if (tell := getattr(slot, "failed_refusal", None)) is not None:
            tell(
                f"the fleet's deployment of {printable(d.package, 80)} {printable(d.version, 80)} to it {then}"
            )

    async def _report(self, d, step: str, ok: bool, reason: str = "", health: dict | None = None) -> bool:
        entry = {
            "t": time.time(),
            "slot": d.slot,
            "version": d.version,
            "step": step,
            "ok": ok,
            "reason": reason,
            "deployment": d.deployment_id,
        }
        self.steps.append(entry)
        self.steps = self.steps[-50:]
        self.on_event(Event(EventKind.DEPLOYMENT_STEP, **entry))
        if self.uplink is None:
            return False
        # False: not sent; the next heartbeat retries the whole reconcile if needed
        assert self.uplink is not None
        return await self.uplink.client.report_deployment(
            d.deployment_id.split(":")[0], step, ok, reason, slot=d.slot, version=d.version, health=health
        )

    def _moved(self, d) -> bool:
        """Whether the fleet's latest desired state no longer names ``d``'s digest for its slot."""
        return self.wanted.get(d.slot, ("", False))[0] != d.digest

    async def download(self, d) -> Path:
        from protocols.gen import fleet_pb2 as pb

        assert self.uplink is not None  # only a desired state from the uplink starts a download
        client = self.uplink.client
        self.staging.mkdir(parents=True, exist_ok=True)
        part = self.staging / f"{d.digest}.part"
        # each slot's own copy: two slots of one package may install it at once, each deleting its own
        final = self.staging / d.slot / f"{d.package}-{d.version}.edgepkg"
        self._staged[d.slot] = {part.name, f"{d.slot}/{final.name}"}
        await asyncio.to_thread(self._clear_staging)
        final.parent.mkdir(exist_ok=True)
        lock = self._downloading.setdefault(d.digest, asyncio.Lock())
        async with lock:  # one writer per partial file (two slots of one package: one after the other)
            try:
                return await self._download(d, client, pb, part, final)
            finally:
                if not getattr(lock, "_waiters", None):  # nobody waits for it: forget it
                    self._downloading.pop(d.digest, None)

    async def _download(self, d, client, pb, part: Path, final: Path) -> Path:
        for attempt in range(1, 21):
            offset = part.stat().st_size if part.exists() else 0
            try:
                call = client.stub.DownloadPackage(
                    pb.DownloadRequest(digest=d.digest, offset=offset), timeout=300
                )
                with open(part, "ab", buffering=0) as f:  # unbuffered: a full disk fails the write, not close
                    async for chunk in call:
                        if chunk.offset != f.tell():
                            raise OSError(f"chunk at {chunk.offset}, expected {f.tell()}")
                        if chunk.offset == offset and chunk.total > offset:
                            free = shutil.disk_usage(self.staging).free
                            if chunk.total - offset > free:
                                raise NoSpace(self._no_space(d, chunk.total, offset + free))
                        try:
                            data = memoryview(chunk.data)
                            while data:
                                data = data[f.write(data) or 0 :]
                        except OSError as exc:
                            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                                raise
                            raise NoSpace(self._no_space(d, chunk.total, None)) from exc
                break
            except (
                NoSpace
            ):  # waiting for the same disk again will not help: free it, say why (caller backs off)
                part.unlink(missing_ok=True)
                raise
            except Exception as exc:  # resume from what is on disk while it moves on; else back off (caller)
                code = getattr(exc, "code", None)
                stopped = _fleet_stopped(exc)
                if stopped is not None:
                    # the fleet will not send it (withdrawn, maybe mid-way): none of its bytes are kept or used
                    got = part.stat().st_size if part.exists() else 0
                    part.unlink(missing_ok=True)
                    raise StoppedByFleet(f"the fleet stopped the download at {got} bytes: {stopped}") from exc
                if offset and callable(code) and getattr(code(), "name", "") == "OUT_OF_RANGE":
                    # longer than the package (a file system's repair after a power cut): start afresh,
                    # or the same refusal comes back for ever
                    log.warning("staging: %s is longer than the package; downloading it again", part.name)
                    part.unlink(missing_ok=True)
                    continue
                got = part.stat().st_size if part.exists() else 0
                if got == offset:
                    raise ConnectionError(
                        f"download of {d.version} made no progress at {got} bytes: {exc}"
                    ) from exc
                log.warning("download of %s interrupted at %d bytes (%s); resuming", d.version, got, exc)
                await asyncio.sleep(client.backoff(attempt))
        else:
            raise ConnectionError(f"download of {d.version} did not complete after 20 attempts")
        actual = await asyncio.to_thread(_sha256, part)  # (seconds for a large package: not on the loop)
        if actual != d.digest:
            part.unlink(missing_ok=True)
            raise DigestMismatch(
                f"downloaded bytes do not match digest {d.digest[:12]}… (got {actual[:12]}…)"
            )
        part.replace(final)
        return final

    async def _still_sent(self, d, size: int) -> tuple[bool, str | None]:
        """Whether the fleet still sends the package of ``d`` (``size`` bytes): a request for its bytes past its end,
        which reads none. (answered, why not): ``why not`` is the fleet's reason when it stopped sending it (its
        version withdrawn), else None; ``answered`` is False when the fleet could not be asked (the link, the
        server): the install goes on (the package was whole, and served, a moment ago), and is asked about again
        once the fleet answers (``_ask_again``). No uplink (a package handed over otherwise): nothing to ask."""
        from protocols.gen import fleet_pb2 as pb

        if self.uplink is None:
            return True, None
        try:
            call = self.uplink.client.stub.DownloadPackage(
                pb.DownloadRequest(digest=d.digest, offset=size), timeout=10
            )
            async for _ in call:
                pass
        except Exception as exc:
            stopped = _fleet_stopped(exc)
            if stopped is not None:
                return True, f"the fleet no longer sends it: {stopped}"
            code = getattr(exc, "code", None)
            return (callable(code) and getattr(code(), "name", "") not in _UNANSWERED), None
        return True, None

    # ---- installs the fleet could not be asked about, asked again once it answers --------------------
    def _withdrawals_path(self) -> Path:
        return self.pending_dir / WITHDRAWALS

    def _unasked_path(self) -> Path:  # (a former release's file: read once, folded into WITHDRAWALS)
        return self.pending_dir / UNASKED

    def _read_withdrawals(self) -> tuple[dict[str, dict], dict[str, str]]:
        """(slot -> unasked install, digest -> withdrawal's reason) as WITHDRAWALS holds them; its copy when a torn
        write left the file unreadable; a former release's ``withdrawal-unasked`` folded in."""
        unasked, withdrawn, _ = self._read_withdrawals_from()
        return unasked, withdrawn

    def _read_withdrawals_from(self) -> tuple[dict[str, dict], dict[str, str], bool]:
        """``_read_withdrawals``, and whether it was read from the copy beside a damaged WITHDRAWALS (unreadable, or
        JSON of another shape than the one written: read as empty, the withdrawals were lost), which the next change
        writes again (``_forget_withdrawn``: at the next desired state; until then each read warned, twice a
        heartbeat)."""
        copy = self._withdrawals_path().with_name(WITHDRAWALS + ".copy")
        kept: object = None
        damaged = False
        for path in (self._withdrawals_path(), copy):
            try:
                got = read_json_state(path)
                if not (
                    isinstance(got, dict)
                    and isinstance(got.get("unasked"), dict)
                    and isinstance(got.get("withdrawn"), dict)
                ):
                    raise ValueError(
                        'not the withdrawal state this agent writes ({"unasked": {...}, "withdrawn": {...}})'
                    )
                kept = got
                break
            except (OSError, ValueError) as exc:
                if not isinstance(exc, FileNotFoundError):
                    damaged = damaged or path != copy
                    log.warning(
                        "model manager: %s: %s%s",
                        path,
                        printable(why_unread(exc), 300),
                        "; reading its copy" if path != copy else "",
                    )
        kept = kept if isinstance(kept, dict) else {}
        u, w = kept.get("unasked"), kept.get("withdrawn")
        unasked: dict = u if isinstance(u, dict) else {}
        withdrawn: dict = w if isinstance(w, dict) else {}
        # a former release's file, folded in only while no WITHDRAWALS of this release was read: beside one it is
        # what a kill between the first write and its removal left (``_write_withdrawals``), and read again it
        # brought back a slot that write had forgotten (an install asked about again, a withdrawn version)
        former = None
        if not isinstance(kept.get("unasked"), dict):
            try:
                former = read_json_state(self._unasked_path())
            except (OSError, ValueError):
                former = None
        if isinstance(former, dict):
            unasked = {**former, **unasked}
        return (
            {
                k: v
                for k, v in unasked.items()
                if isinstance(v, dict) and all(isinstance(v.get(n), str) for n in _PENDING_KEYS)
            },
            {
                k: v
                for k, v in list(withdrawn.items())[-MAX_REFUSED:]
                if isinstance(v, str) and _DIGEST_RE.fullmatch(k)
            },
            damaged and kept is not None,  # (the copy read: the file is written again from it)
        )

    def _write_withdrawals(self, unasked: dict, withdrawn: dict) -> None:
        """WITHDRAWALS, then its copy, each written whole or not at all (``atomic_write_json``); none when empty."""
        from edge_agent.files import atomic_write_json

        path = self._withdrawals_path()
        copy = path.with_name(WITHDRAWALS + ".copy")
        # a former release's file folded in: written (empty too) before it goes, so a kill between the two leaves
        # a WITHDRAWALS that makes it read no more (``_read_withdrawals_from``)
        folding = self._unasked_path().exists()
        if unasked or withdrawn or folding:
            self.pending_dir.mkdir(parents=True, exist_ok=True)
            body = {"unasked": unasked, "withdrawn": dict(list(withdrawn.items())[-MAX_REFUSED:])}
            atomic_write_json(path, body)
            atomic_write_json(copy, body)
        self._unasked_path().unlink(missing_ok=True)  # (folded in)
        if not (unasked or withdrawn):
            path.unlink(missing_ok=True)
            copy.unlink(missing_ok=True)

    def _unasked(self) -> dict[str, dict]:
        """slot -> the install (its pending keys, ``size``, and ``withdrawn``: the fleet's reason once it said so)
        whose version the fleet could not be asked about as the install began (``_note_unasked``)."""
        return self._read_withdrawals()[0]

    def _write_unasked(self, slot: str, entry: dict | None) -> None:
        with _WITHDRAWALS_LOCK:
            kept = self._unasked()
            if entry is None:
                if kept.pop(slot, None) is None:
                    return
            else:
                kept[slot] = entry
            self._write_withdrawals(kept, self.withdrawn)

    def _note_unasked(self, d, size: int) -> None:
        """Keep, across restarts, that ``d``'s version was installed while the fleet could not be asked whether it
        still sends it (written before the swap): it is asked again once the fleet answers, and a version withdrawn
        meanwhile does not stay in service (``_ask_again``)."""
        try:
            self._write_unasked(d.slot, {**{k: str(getattr(d, k)) for k in _PENDING_KEYS}, "size": size})
        except OSError as exc:
            log.warning(
                "model manager: cannot record in %s that %s %s is installed unasked (%s): asked again only in this "
                "run",
                self._withdrawals_path(),
                printable(d.package, 80),
                printable(d.version, 80),
                exc,
            )
            self._unasked_mem[d.slot] = {**{k: str(getattr(d, k)) for k in _PENDING_KEYS}, "size": size}

    def _forget_unasked(self, slot: str) -> None:
        self._unasked_mem.pop(slot, None)
        try:
            self._write_unasked(slot, None)
        except OSError as exc:
            log.warning("model manager: %s: %s", self._withdrawals_path(), exc)

    async def _ask_again(self, slot_name: str, *, own_task: bool = False, desired: Collection = ()) -> bool:
        """The fleet asked again about the version installed in ``slot_name`` while it could not be asked: True once
        it said the version was withdrawn (then it does not stay in service: the slot rolls back to its previous
        model when it still holds it, and the deployment is reported ``failed`` with the withdrawal's reason, which
        halts the rollout and sends the previous version back). False while it is not withdrawn, not answered, or
        no longer installed. ``own_task``: called by the install task itself, past its health window. ``desired``:
        the fleet's desired state; the failure is reported to the deployment in it naming this slot and version (the
        same version deployed again meanwhile supersedes the one installed, which the fleet no longer hears)."""
        from types import SimpleNamespace

        entry = self._unasked_mem.get(slot_name) or self._unasked().get(slot_name)
        slot = self.slots.get(slot_name)
        if entry is None or slot is None:
            return False
        d = SimpleNamespace(**{k: entry[k] for k in _PENDING_KEYS})
        why = entry.get("withdrawn") if isinstance(entry.get("withdrawn"), str) else None
        serving = slot.status().get("digest") == d.digest
        candidate = (
            getattr(slot, "_active", None) if serving else None
        )  # (rolled back only if it still serves)
        if why is None:
            if not serving and not own_task and self.busy.get(slot_name) == d.digest:
                return False  # its swap under way: asked once it serves
            if not serving:
                await asyncio.to_thread(self._forget_unasked, slot_name)  # nothing of it serves
                return False
            if not own_task and not any(getattr(x, "digest", None) == d.digest for x in desired):
                # no longer in this agent's desired state (deployed over): the fleet answers PERMISSION_DENIED
                # (``_UNANSWERED``) whether it was withdrawn or not. Asked all the same, it was asked once a heartbeat
                # for as long as the slot served it; it is asked again once a desired state names it
                return False
            size = entry.get("size")
            answered, stopped = await self._still_sent(d, size if isinstance(size, int) else 1 << 62)
            if not answered:
                return False
            if stopped is None:
                await asyncio.to_thread(self._withdraw, d.digest, None)
                log.info(
                    "slot %s: the fleet still sends %s %s, installed while it could not be asked",
                    slot_name,
                    d.package,
                    d.version,
                )
                await asyncio.to_thread(self._forget_unasked, slot_name)
                return False
            why = printable(
                f"{d.package} {d.version} was installed while the fleet could not be asked about it; asked again, "
                f"{stopped}",
                500,
            )
            self._refuse(d.digest, why, d)
            await asyncio.to_thread(self._withdraw, d.digest, why)  # (before the rollback: a kill keeps it)
            log.warning("slot %s: %s", printable(slot_name, 80), why)
            if serving:  # (only inside its health window: the previous model is still held)
                await slot.rollback(why, candidate=candidate, kind=_MARK_ADMIN)
            if (
                self.busy.get(slot_name) == d.digest
                and not own_task
                and slot.status().get("digest") != d.digest
            ):
                await asyncio.to_thread(self._forget_unasked, slot_name)
                return True  # the install task's health watch reports the rollback, with this reason
            if slot.status().get("digest") == d.digest:
                log.warning(
                    "slot %s: %s %s still serves (no previous model held here): the deployment is reported failed, "
                    "and the rollout's halt sends the previous version back",
                    printable(slot_name, 80),
                    printable(d.package, 80),
                    printable(d.version, 80),
                )
            try:
                await asyncio.to_thread(self._write_unasked, slot_name, {**entry, "withdrawn": why})
            except OSError:
                self._unasked_mem[slot_name] = {**entry, "withdrawn": why}
        else:
            self._refuse(d.digest, why, d)
            await asyncio.to_thread(self._withdraw, d.digest, why)
        # the deployment the fleet wants now for this slot and version (a later deployment of it supersedes the
        # installed one: a report to that one only was ignored, and the later one was confirmed healthy)
        now = next(
            (
                x
                for x in desired
                if getattr(x, "slot", None) == slot_name and getattr(x, "digest", None) == d.digest
            ),
            None,
        )
        told = d if now is None else now
        if told is not d:
            self._refused_for[d.digest] = told.deployment_id
        if await self._report(told, "failed", False, why):
            self._told((slot_name, told.deployment_id, d.digest))
            pending = self._pending_path(slot_name)
            with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                if read_json_state(pending).get("deployment_id") in (d.deployment_id, told.deployment_id):
                    pending.unlink(missing_ok=True)
            await asyncio.to_thread(self._forget_unasked, slot_name)
        return True

    def _no_space(self, d, total: int, room: int | None) -> str:
        has = f"{room} bytes" if room is not None else "less"
        return (
            f"not enough free disk in {self.staging} for {d.package} {d.version}: it takes {total} bytes, "
            f"the disk has {has}; the partial download was deleted; free some space"
        )

    def _clear_staging(self) -> None:
        """Remove what no install in flight uses: partial downloads of packages no longer desired, and
        packages a kill -9 left between download and install (each would hold its size for good)."""
        keep = set().union(*self._staged.values())
        here = [p for p in self.staging.iterdir() if p.is_file()]
        # each slot's own folder of packages downloaded for it, and those of slots a config before this one
        # had (renamed or removed: nothing else would ever look in them)
        # had (renamed or removed: nothing else would ever look in them); in a folder only packages are
        # taken, never another file (a folder in staging may be someone else's: the disk's other tenants)
        folders = [p for p in self.staging.iterdir() if p.is_dir() and not p.is_symlink()]
        for folder in folders:
            here += [p for p in folder.iterdir() if p.is_file() and p.suffix in (".edgepkg", ".part")]
        for p in here:
            name = p.relative_to(self.staging).as_posix()
            if name not in keep:
                log.info("staging: removing %s, left by an earlier install", name)
                p.unlink(missing_ok=True)
        for folder in folders:  # (a slot downloading now, configured or not, keeps its folder)
            if folder.name not in self.slots and folder.name not in self._staged:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # (only when empty)

    async def _install(self, d) -> None:
        slot = self.slots[d.slot]
        try:
            await self._report(d, "downloading", True)
            try:
                pkg = await self.download(d)
            except StoppedByFleet as exc:  # not for this deployment: never installed, nor tried again for it
                self._download_failures.pop(d.digest, None)
                self.retry_at.pop(d.digest, None)
                if self._moved(d):  # the desired state moved on meanwhile: nothing of it to report
                    log.warning("download of %s %s stopped (%s)", d.package, d.version, exc)
                    return
                self._decline(
                    (d.slot, d.digest, d.deployment_id), d, f"download of {d.package} {d.version}: {exc}"
                )
                return
            except Exception as exc:  # the link, the server, the disk: try again later, with backoff
                n = self._download_failures[d.digest] = self._download_failures.get(d.digest, 0) + 1
                if isinstance(exc, DigestMismatch) and n >= 3:  # the fleet keeps serving other bytes: give up
                    self._refuse(d.digest, str(exc), d)
                    self._tell_failed_slot(d, f"was refused at download: {exc}")
                    await self._report(d, "failed", False, printable(f"download: {exc}", 500))
                    return
                wait = min(self.download_backoff_max_s, self.download_backoff_s * 2 ** (n - 1))
                self.retry_at[d.digest] = time.monotonic() + wait
                log.warning(
                    "download of %s %s failed (%s); trying again in %.0f s", d.package, d.version, exc, wait
                )
                await self._report(d, "download_retry", True, f"download: {exc}; retrying in {wait:.0f} s")
                return
            self._download_failures.pop(d.digest, None)
            self.retry_at.pop(d.digest, None)
            answered, stopped = await self._still_sent(d, pkg.stat().st_size)
            if stopped is not None:  # withdrawn since its last chunk: its bytes are not installed
                pkg.unlink(missing_ok=True)
                self._decline(
                    (d.slot, d.digest, d.deployment_id), d, f"install of {d.package} {d.version}: {stopped}"
                )
                return
            if answered:  # the fleet sends it again (no longer withdrawn)
                await asyncio.to_thread(self._withdraw, d.digest, None)
            if not answered:  # installed all the same (the fleet sent it whole), asked again once it answers
                log.warning(
                    "install of %s %s: the fleet could not be asked whether it still sends it; installing, and "
                    "asking again once it answers (a version withdrawn meanwhile does not stay in service)",
                    d.package,
                    d.version,
                )
                await asyncio.to_thread(self._note_unasked, d, pkg.stat().st_size)
            await self._report(d, "verifying", True)
            try:
                await asyncio.to_thread(self._write_pending, d)
            except OSError as exc:
                # a full disk: the install goes on (and, short of room itself, says so and is tried again with
                # backoff); raised, the task died here, reporting nothing after "verifying", with no backoff
                log.warning(
                    "model manager: cannot record deployment %s in %s (%s): installing all the same; a restart "
                    "before its outcome is reported leaves it to the fleet's next desired state",
                    printable(d.deployment_id, 80),
                    self._pending_path(d.slot),
                    exc,
                )
            try:
                # an admin's rollback is not judged against the version it rolls away from (a bad model's
                # NG rate made the good one's look like a shift, and the slot went back to the bad one)
                outcome = await slot.swap(pkg, expect=(d.package, d.version), watch=not is_rollback(d))
            except Exception as exc:  # the slot turns failures into outcomes; this is the last guard
                self._refuse(d.digest, f"unexpected {type(exc).__name__}: {exc}", d)
                await self._settle(d, "failed", False, printable(f"verify: {self.refused[d.digest]}", 500))
                return
            finally:
                pkg.unlink(missing_ok=True)
            if not outcome.ok and outcome.retry:  # the slot's disk is full: not the package's fault
                n = self._install_failures[d.digest] = self._install_failures.get(d.digest, 0) + 1
                wait = min(self.download_backoff_max_s, self.download_backoff_s * 2 ** (n - 1))
                self.retry_at[d.digest] = time.monotonic() + wait
                self._pending_path(d.slot).unlink(missing_ok=True)  # nothing switched: nothing to settle
                log.warning(
                    "install of %s %s failed (%s); trying again in %.0f s",
                    d.package,
                    d.version,
                    outcome.reason,
                    wait,
                )
                reason = printable(f"{outcome.stage}: {outcome.reason}", 450)
                await self._report(d, "install_retry", True, f"{reason}; retrying in {wait:.0f} s")
                return
            self._install_failures.pop(d.digest, None)
            if not outcome.ok:
                self._refuse(d.digest, outcome.reason or outcome.stage, d)
                if outcome.stage == "verify":  # (before its outcome is reported: kept across restarts)
                    await asyncio.to_thread(self._hold, d, f"{outcome.stage}: {outcome.reason}", "verify")
                await self._settle(d, "failed", False, printable(f"{outcome.stage}: {outcome.reason}", 500))
                return
            await self._report(d, "active", True)
            if await self._watch(slot, d):
                withdrawn = d.digest in self.withdrawn or (
                    self._is_refused(d.digest) and self._refused_for.get(d.digest) == d.deployment_id
                )
                if withdrawn or await self._ask_again(d.slot, own_task=True):
                    return  # withdrawn meanwhile: reported failed, never healthy
                if d.slot in self._unasked_mem or d.slot in self._unasked():
                    return  # not asked yet: its pending file reports it once the fleet answers (_settle_pending)
                self.refused.pop(d.digest, None)  # (an admin's rollback asked again, and it passed)
                self._refused_for.pop(d.digest, None)
                self.confirmed[(d.slot, d.deployment_id, d.digest)] = None
                await self._settle(d, "healthy", True, health=self._health(d.slot))
        finally:
            self.busy.pop(d.slot, None)
            self._staged.pop(d.slot, None)

    async def _watch(self, slot, d) -> bool:
        """Wait for the slot's verdict on the candidate ``d``: True once it is kept; False once it is rolled back
        (the slot's health check, reported ``rolled_back``; or the fleet's rollback heard inside the window,
        which rolls it back at once, reported ``rolled_back_by_fleet``). A window that passed without enough
        inferences to judge (a stopped line) is no verdict: the fleet hears ``watching`` with the count, once,
        and the candidate is reported healthy only once the slot has kept it (before, it was reported healthy
        60 s after its window whatever it had served, and the rollout went on)."""
        window = slot.config.health.window_s
        deadline = time.monotonic() + window + self.health_grace_s
        said = False
        while True:
            await asyncio.sleep(min(1.0, window / 4))
            if slot.version != d.version:
                last = slot.last_outcome
                self._refuse(d.digest, last.reason if last else "rolled back", d)
                await asyncio.to_thread(self._hold, d, last.reason if last else "")
                await self._settle(d, "rolled_back", False, last.reason if last else "rolled back")
                return False
            if slot.state == "active" and not _watches(slot):
                return True
            if self._moved(d) and self.wanted.get(d.slot, ("", False))[1]:
                why = f"the fleet rolled {d.package} {d.version} back (deployment {d.deployment_id})"
                outcome = await slot.rollback(why, kind=_MARK_ADMIN)
                if slot.last_outcome is outcome and slot.version != d.version:
                    # not the package's fault on this agent: a later rollout of the same version may try it again
                    await self._settle(d, "rolled_back_by_fleet", True, why)
                    return False
            if slot.state != "watching" and time.monotonic() >= deadline:
                return True  # (the slot stopped watching without a verdict: as before)
            if not said and time.monotonic() >= deadline:
                said = True
                n, need = self._health(d.slot)["inferences"], slot.config.health.min_items
                await self._report(
                    d,
                    "watching",
                    True,
                    f"health window of {window:g} s over with {n} inferences of the {need} needed to judge "
                    f"{d.version}; still watching (is the line running?)",
                )

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel installs in flight; a half-downloaded package stays in staging and resumes next time."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def _health(self, slot: str) -> dict:
        """What a deployment step says of the slot's health (the fleet's gate judges ``error_rate``): the figures of
        the model it serves, since it was made active, and that model's version. They were the slot's counters
        since the agent started: just after a swap mostly the previous version's inferences, so a candidate failing
        every item after 1,000 good ones of the version before read 2% and passed a 5% gate, and the count a
        ``watching`` step gives as the candidate's was the previous version's."""
        h = self.slots[slot].serving_health()
        n = h["inferences"]
        return {
            "error_rate": (h["errors"] + h["nonfinite"]) / max(1, n),
            "inferences": n,
            "version": h["version"],
        }

    def status(self) -> dict:
        return {
            "busy": dict(self.busy),
            "refused": dict(list(self.refused.items())[-10:]),  # the latest (all of them: refused_count)
            "refused_count": len(self.refused),
            "steps": self.steps[-10:],
            "declined": [
                {"slot": k[0], "digest": k[1], "deployment": k[2], "reason": v}
                for k, v in list(self.declined.items())[-10:]
            ],
        }
