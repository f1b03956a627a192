"""A model slot: one package at a time, inference from worker threads, hot swap with rollback.

``infer(item)`` runs preprocessing (from the manifest), the engine and postprocessing on the
*active* model, read once per call: a swap replaces the active model between two inferences.
In-flight inferences finish on the old model and every later one uses the new one, so no item is
dropped or processed twice by a swap (tested under load).

``swap(pkg)``: verify and extract → load the engine(s) beside the active one → run the package's
golden inputs through each engine and form allowed, keep the first that passes on this CPU unless another is
clearly faster (an
INT8 form off on this CPU serves FP32 instead: ``edge_agent.models.select``) → switch → watch
health for ``health.window_s`` (and at least ``health.min_items`` inferences): error rate, NaN/Inf outputs, p50 inference latency against
the previous model's, and NG-rate shift. A broken bound rolls back to the previous model and
reports why (``SwapOutcome`` and an ``on_event`` callback). Any failure before the switch leaves
the old model serving untouched.

On ``start`` the slot runs the last package that passed (``ModelStore`` state), unless the config
pins a local package that differs from it, which is then installed the same way. The installed
folder is verified again first (signature, every file's size and SHA-256) and loaded and golden-tested
on this CPU; one that fails either is set aside with a WARNING naming the file and the reason, and the
configured package is installed again (no configured package: start fails, saying why, unless the slot
follows a configured fleet). A configured package refused with nothing installed, or no package yet in a slot
following the fleet, leaves the slot ``failed`` (``FailedAtStart``): no model, a package swapped in later (the
fleet's deployment) serves. A swap whose
health window a restart interrupted is resumed at ``start``: the candidate serves and a whole new health
window is watched (the previous model loaded again to roll back to), unless the agent ended without an
orderly stop a second time inside that window (a crash loop): then the previous model is restored at
``start`` (``last_outcome`` says so). See ``ModelStore.after_restart``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import math
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from devices.base import Frame
from edge_agent.engines import Engine, EngineError, candidate_engines
from edge_agent.models.config import ENGINE_TYPES, ModelConfig, VersionPolicy
from edge_agent.models.install import InstallJob, check_isolated, install_isolated, prefetching
from edge_agent.models.select import NothingPasses, Selection, select
from edge_agent.models.store import MARK_ADMIN, MARK_HEALTH, NO_SPACE, AfterRestart, ModelStore
from edge_agent.priority import in_lowered_thread, lower_this_thread
from edge_agent.types import Window
from model_packager import OpenedPackage, PackageError, package_digest
from model_packager.cpu import int8_path
from model_packager.errors import GOLDEN_NO_MEMORY, GOLDEN_UNREADABLE
from model_packager.manifest import ImagePreprocessing, Manifest, version_key
from model_packager.preprocess import (
    Interpretation,
    PreprocessError,
    image_tensor,
    interpret,
    interpret_logits,
    logits_plan,
    logits_values,
    signal_features,
)
from model_packager.runtimes import Helpers
from model_packager.runtimes import load as load_engine
from model_packager.text import one_line, printable
from protocols.events import Event, EventKind

if TYPE_CHECKING:
    from model_packager import TrustedKeys

log = logging.getLogger(__name__)


class SlotError(RuntimeError):
    pass


class FailedAtStart(SlotError):
    """A slot's configured package was refused at its start with no package installed to serve instead: the slot
    is ``failed`` (``ModelSlot.failed`` says why), serves no model, and takes a package swapped in later. The agent
    starts all the same (``Agent.start``); a caller of ``ModelSlot.start`` alone sees the ``SlotError``."""


class NoPackage(SlotError):
    """A slot with no local package (``name`` alone) and none installed that no fleet can fill (the agent has no
    ``cloud:``, or the slot is pinned): the agent's start ends, a config error (``no_package_refusal``)."""


def refused_by_config(slot: str, package_id: str) -> str:
    return f"{package_id} is a version this agent refuses (models.{slot}.refused_versions in its config); refused"


def not_refused(opened: OpenedPackage, slot: str, config: ModelConfig) -> OpenedPackage:
    """``opened`` (an installed folder verified again), unless its version is one the slot's config refuses."""
    if config.refuses(opened.manifest.version):
        raise PackageError(refused_by_config(slot, opened.manifest.package_id), code="refused")
    return opened


def start_refusal(
    slot: str, pkg: Path, reason: str, *, retry: bool, installed: str | None, rejected: str | None
) -> SlotError:
    """What a start does when the slot's configured package ``pkg`` is refused (``reason``) and no installed
    package serves instead (``installed``: the folder the slot held, set aside for ``rejected``). A refusal of the
    package itself: ``FailedAtStart``, the agent starts with the slot failed and serves the rest, whether nothing
    was installed or the installed package was set aside (the next start finds nothing installed: ending this one
    only delayed the same outcome by a restart, and under a unit whose ``ExecStartPre`` runs ``validate`` kept the
    agent down for good). A refusal of this machine (``retry``: its disk full at the install): a ``SlotError`` that
    ends the agent's start, tried again at the next one. ``edge-agent validate`` judges a config by this function."""
    said = f"model slot {slot!r}: cannot start on {pkg}: {reason}"
    if installed is not None:
        said += f"; nor on the installed package {installed}: {rejected or 'it does not read'}"
    return SlotError(said) if retry else FailedAtStart(said)


def no_package_refusal(
    slot: str, config: ModelConfig, installed: str | None, rejected: str | None, *, fleet: bool
) -> SlotError:
    """What a start does for a slot with no local package configured (``name`` alone, the fleet's package) and no
    installed package serving: none installed yet, or ``installed`` set aside for ``rejected``. A slot following
    the agent's fleet (``fleet``: its ``cloud:`` configured; ``version_policy: follow_fleet``): ``FailedAtStart``,
    the agent starts with the slot failed and takes its package from the fleet's deployment (a new gateway's first
    package). Else ``NoPackage``: nothing can fill the slot, the agent's start ends. ``edge-agent validate`` judges
    a config by this function."""
    had = (
        f"the installed package {installed} cannot be used ({rejected})"
        if rejected is not None
        else "no package installed yet"
    )
    if fleet and config.version_policy is VersionPolicy.FOLLOW_FLEET:
        return FailedAtStart(
            f"model slot {slot!r}: no package yet: waiting for the fleet's deployment ({had}; no local "
            "'package' configured)"
        )
    how = (
        f"models.{slot}.version_policy: follow_fleet to take the fleet's deployment"
        if fleet
        else f"the agent's fleet (cloud:) with models.{slot}.version_policy: follow_fleet to take its deployment"
    )
    return NoPackage(
        f"model slot {slot!r}: {had} and no local 'package' configured: the agent does not start without a model "
        f"in each slot; configure models.{slot}.package (a fleet rollout replaces it later), or {how}"
    )


class _Stopped(RuntimeError):
    """A swap's loading ended because the slot stopped."""


class InferenceError(RuntimeError):
    """One inference failed: bad input for the model (``bad_input``), preprocessing that raises on the
    item (``preprocess_error``), engine error, NaN/Inf output, outputs that do not read as the manifest
    declares (``model_error``). Each is counted as an error of the active model, so a health watch
    rolls back a model that fails every item."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Inference:
    interpretation: Interpretation
    outputs: dict[str, np.ndarray]
    model: str
    version: str
    engine: str
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    @property
    def heatmap(self) -> np.ndarray | None:
        return self.interpretation.heatmap


@dataclass
class SwapOutcome:
    ok: bool
    slot: str
    from_version: str | None
    to_version: str | None
    stage: str  # verify | load | golden | health | active | rolled_back
    reason: str | None = None
    retry: bool = False  # refused for a passing reason (the disk full), not the package's: try it again later

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Health:
    n: int = 0
    errors: int = 0
    nonfinite: int = 0
    ng: int = 0
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=2000))

    def p50(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None  # (np.median imports numpy.ma)


class _Active:
    def __init__(self, opened: OpenedPackage, engine: Engine, selection: Selection | None = None) -> None:
        self.opened = opened
        self.manifest: Manifest = opened.manifest
        self.engine = engine
        self.selection = selection
        self.input_name = opened.manifest.inputs[0].name
        self.input_dtype = opened.manifest.inputs[0].dtype.value
        self.health = _Health()
        self.local_stats = _local_stats(opened)
        self.logits = logits_plan(self.manifest)  # a plain classifier's outputs read without the general walk


_UNSURE_CHECKS: ThreadPoolExecutor | None = None
_UNSURE_CHECKS_LOCK = threading.Lock()
STATE_RETRY_S = 5.0  # how often a state.json the disk refused is tried again


def _unsure_checks() -> ThreadPoolExecutor:
    """The threads frames are checked against their package's training inputs on (``ModelSlot.infer``):
    made at the first check, two for the process (a gateway's frame pipelines are few)."""
    global _UNSURE_CHECKS
    with _UNSURE_CHECKS_LOCK:
        if _UNSURE_CHECKS is None:
            # bulk work beside inference: below the event loop's priority as inference is (edge_agent.priority)
            _UNSURE_CHECKS = ThreadPoolExecutor(
                max_workers=2, thread_name_prefix="unsure-check", initializer=lower_this_thread
            )
        return _UNSURE_CHECKS


def _local_stats(opened: OpenedPackage):
    """The package's local training-input statistics (colour, light banding, sharpness by region:
    ``inputstats.LOCAL_FILE``, signed with the manifest) for the UNSURE check, or None (a package
    without them; one that cannot be read is said once and checked by ``input_stats`` alone)."""
    m = opened.manifest
    from model_packager.inputstats import LOCAL_FILE, LocalStats

    if m.input_stats is None or not any(f.path == LOCAL_FILE for f in m.files):
        return None
    try:
        pre = m.preprocessing
        grey = isinstance(pre, ImagePreprocessing) and pre.color.value == "gray"
        roi = isinstance(pre, ImagePreprocessing) and pre.roi is not None
        return LocalStats.parse(opened.path(LOCAL_FILE).read_text(encoding="utf-8"), colour=not grey, roi=roi)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning(
            "%s: its %s cannot be used (%s); frames are checked by input_stats alone",
            m.package_id,
            LOCAL_FILE,
            exc,
        )
        return None


_SMALL_OUTPUT = 256  # up to this many values a Python sum is cheaper than a numpy call (class vectors)


def _below(version: str, than: str) -> bool:
    """Whether ``version`` is lower than ``than`` (a version that does not read: not lower)."""
    try:
        return version_key(version) < version_key(than)
    except ValueError:
        return False


def _all_finite(out: dict[str, Any]) -> bool:
    """No NaN or Inf in any floating output. A float32/16 array's sum in double is finite exactly
    when every element is (it cannot overflow): one reduction per output, cheaper on every frame
    than an element-wise test."""
    for v in out.values():
        a = v if isinstance(v, np.ndarray) else np.asarray(v)
        if a.dtype.kind != "f":
            continue
        if a.dtype.itemsize <= 4:
            # a class vector's few values summed as Python floats: no ufunc call (~20 µs cold per frame)
            total = sum(a.ravel().tolist()) if a.size <= _SMALL_OUTPUT else a.sum(dtype=np.float64)
            if not math.isfinite(total):
                return False
        elif not np.isfinite(a).all():
            return False
    return True


def _baseline(h: _Health) -> dict:
    """A model's health figures, kept with a probation for a window resumed after a restart."""
    return {"n": h.n, "errors": h.errors, "nonfinite": h.nonfinite, "ng": h.ng, "p50_ms": h.p50()}


def _count(v: object) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0


def _item_ms(a: _Active) -> tuple[float, str] | None:
    """The time one item (a frame, a window) takes, from the selection's median of batch-1 runs, and what was
    measured. A tiled image package runs a frame as one batch row per tile, and its golden rows (what the
    selection timed, one row) are tiles: the frame costs that many rows (the sizing estimate of a 4x4-tiled
    camera was 16 times too low)."""
    sel = a.selection
    if sel is None or not sel.chosen.p50_ms:
        return None
    pre = a.manifest.preprocessing
    rows = pre.n_tiles if isinstance(pre, ImagePreprocessing) else 1
    what = f"{a.manifest.package_id} {sel.chosen.form} on {sel.chosen.engine}"
    return sel.chosen.p50_ms * rows, what + (f", {rows} tiles a frame" if rows > 1 else "")


class ModelSlot:
    def __init__(
        self,
        name: str,
        config: ModelConfig,
        data_dir: Path,
        trusted_keys: Sequence[str | Path] | TrustedKeys,
        on_event: Callable[[Event], None] | None = None,
        *,
        fleet: bool = False,
    ) -> None:
        """``trusted_keys``: key files (or folders of them), which each install's child process loads
        (``edge_agent.models.install``); keys already loaded (``TrustedKeys``) verify in this process. ``fleet``:
        the agent's fleet is configured (``cloud:``), whose deployments fill a ``follow_fleet`` slot."""
        self.name = name
        self.config = config
        self.fleet = fleet
        root = Path(data_dir) / "models" / name
        # a first start's install child may be extracting there already: its .part folders are not leftovers
        self.store = ModelStore(root, clean=not prefetching(root))
        self.key_files: list[str] | None = None
        self.trusted: TrustedKeys | None = None
        if isinstance(trusted_keys, list | tuple):
            self.key_files = [str(k) for k in trusted_keys]
        else:
            self.trusted = cast("TrustedKeys", trusted_keys)
        self.on_event = on_event or (lambda e: None)
        self._active: _Active | None = None
        self._previous: _Active | None = None
        self._swap_lock = asyncio.Lock()
        self._watch: asyncio.Task | None = None
        self._watched: _Active | None = None  # the model the health watch (``_watch``) judges
        self._rewrite: asyncio.Task | None = None  # writes a state.json the disk refused (_write_state_again)
        self._jobs: set[InstallJob] = set()  # install children running for this slot (stopped by stop())
        self._helpers = Helpers()  # OpenVINO conversion helpers a swap's loading runs (stopped by stop())
        self.last_outcome: SwapOutcome | None = None
        # pipeline name -> why a package may not serve that pipeline (None: it may): the checks its start made on
        # the model, made again on a package swapped in (a fleet rollout), which is refused in the same words
        self.swap_checks: dict[str, Callable[[Manifest], str | None]] = {}
        self.counters: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self.state = "stopped"
        # a start is installing (``start``): a refusal is said by what the start does with it (the installed package
        # serving, the slot failed, the start ended), not by the swap as well
        self._starting = False
        # why the slot is "failed": its configured package was refused at a start with nothing installed to serve
        # instead (``FailedAtStart``), or a slot following the fleet has none yet; None once a package serves
        self.failed: str | None = None
        # failed only for having no package yet (none configured, none installed, none set aside): the state a
        # fleet-fed slot's first deployment fills next (``waiting_for_fleet``)
        self._first_package_due = False
        # ``failed`` as the start set it, before a package sent to the failed slot was refused (``failed_refusal``)
        self._failed_at_start_why: str | None = None
        # folder -> why: rollbacks whose mark the disk refused, told in a rollback_unrecorded event (its end too)
        self._unrecorded: dict[str, str] = {}

    # ---- properties ------------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        return self._require().manifest

    @property
    def version(self) -> str | None:
        return self._active.manifest.version if self._active else None

    @property
    def digest(self) -> str | None:
        return self._active.opened.digest if self._active else None

    @property
    def engine_name(self) -> str | None:
        return self._active.engine.name if self._active else None

    @property
    def waiting_for_fleet(self) -> bool:
        """Failed only for having no package yet: a slot following the fleet, none configured and none installed
        here (not one refused and set aside), which the fleet's deployment fills next. A fleet config bringing such
        a slot (a new one, or a failed one now left to the fleet) is applied, not rolled back
        (``AgentHost._refuse_failed_slots``)."""
        return self.failed is not None and self._first_package_due

    def _require(self) -> _Active:
        a = self._active
        if a is None:
            if self.failed is not None:
                raise SlotError(f"model slot {self.name!r} has no model: {self.failed}")
            raise SlotError(f"model slot {self.name!r} has no model loaded")
        return a

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._helpers.stopped:  # started again after a stop
            self._helpers = Helpers()
        self.failed, self._first_package_due, self._failed_at_start_why = None, False, None
        self._starting = True
        try:
            await self._start_on(await self._after_restart())
        finally:
            self._starting = False

    async def _start_on(
        self, resume: AfterRestart | None, *, refused: str | None = None, retry: bool = False
    ) -> None:
        """``start`` after its restart checks. ``refused``: why a pinned slot's configured package was refused (its
        install, load or golden test): the installed package serves, as when the configured one is the same, if it
        passes its own checks; else the slot starts failed, naming both reasons (the refused package is not tried
        again), or, for a refusal of this machine (its disk full), the start fails."""
        # state.json holds nothing (emptied by a power cut, damaged): the newest version installed here is what the
        # slot last served or was given (``recovered``); the configured package, installed again, was older
        current, recovered = await asyncio.to_thread(self.store.start_folder)
        want_pkg = Path(self.config.package) if self.config.package else None
        if recovered:
            log.warning(
                "slot %s: %s holds no state (%s): %s",
                self.name,
                printable(str(self.store.state_path)),
                printable(self.store.state_unread or "", 200),
                f"starting on the newest package installed in the slot, {current}"
                if current
                else "no package installed in the slot reads; starting as a new slot",
            )
        opened = None
        rejected: str | None = (
            None  # why the installed folder was set aside, for the error if nothing else runs
        )
        pinned_other = False  # (a pinned slot configured with another package than it serves)
        if current:
            opened = await asyncio.to_thread(self.store.reopen, current)
            if (
                opened is not None
                and want_pkg is not None
                and self.config.version_policy is VersionPolicy.PINNED
            ):
                if want_pkg.exists():
                    try:
                        want_digest = await asyncio.to_thread(package_digest, want_pkg)
                    except PackageError as exc:
                        # a named pipe, a device, a file larger than a package can be: no package to pin to. Raised,
                        # it ended the slot's start, and the agent's with it (every other slot and pipeline)
                        self._configured_refused(want_pkg, str(exc), opened.manifest.package_id)
                    else:
                        if want_digest != opened.digest and refused is None:
                            opened, pinned_other = None, True  # the config pins another package: install it
            if not pinned_other:
                # the folder may have been edited or corrupted on disk since install: verify it as then
                try:
                    opened = not_refused(
                        await asyncio.to_thread(self._verify_installed, current), self.name, self.config
                    )
                except PackageError as exc:
                    if exc.code in ("bad_key", "unsafe_trusted_key"):  # the keys are at fault, not the folder
                        raise SlotError(
                            f"model slot {self.name!r}: cannot verify the installed package {current}: {exc}"
                        ) from exc
                    opened, rejected = None, str(exc)
                    await self._set_aside(current, rejected, want_pkg)
        if opened is not None:
            try:  # checked again on this CPU: the machine (or its VM host) may have changed since install
                active = await in_lowered_thread(self._load, opened, True)
            except (EngineError, NothingPasses, PackageError) as exc:  # (golden files refused as read)
                if isinstance(exc, PackageError) and exc.code in (GOLDEN_UNREADABLE, GOLDEN_NO_MEMORY):
                    # a passing error of this machine (EMFILE, EIO; memory short at boot, for a version that loaded
                    # here when it was swapped in) on a folder verified intact just now: no
                    # defect of the package, which was set aside and the configured (older) one installed again.
                    # An orderly end for a probation (the agent calls no stop after a failed start): counted as
                    # an unclean end, the next start took the candidate for a crash loop and rolled it back
                    await asyncio.to_thread(self.store.mark_stopped)
                    raise SlotError(
                        f"model slot {self.name!r}: cannot start on the installed package "
                        f"{opened.manifest.package_id}: {exc}; it is kept, for the next start"
                    ) from exc
                rejected = f"{opened.manifest.package_id} fails its load and golden test at start: {exc}"
                if want_pkg is None or not want_pkg.is_file():
                    raise SlotError(
                        f"model slot {self.name!r}: the installed package {opened.root} verified intact but "
                        f"{rejected}; no configured package to install again"
                    ) from exc
                await self._set_aside(opened.root.name, rejected, want_pkg)
            else:
                self._active = active
                self.state = "active"
                if refused is not None and want_pkg is not None:  # said once the installed one serves
                    self._configured_refused(want_pkg, refused, opened.manifest.package_id, retry)
                self._report_selection(active)
                log.info(
                    "slot %s: running %s from the store: %s",
                    self.name,
                    opened.manifest.package_id,
                    active.selection.summary() if active.selection else active.engine.name,
                )
                if resume is not None and opened.root.name == resume.candidate:
                    self._resume_watch(active, resume)
                if recovered:  # written again: read as no state, the prune below took every folder for unused
                    await self._recovered(active, resume)
                else:  # (a kill -9 between a rollback's mark and the state it came before: the state stands)
                    await asyncio.to_thread(self.store.served, opened.root.name)
                # what the run before left unreferenced (a candidate a crash loop rolled back, a swap whose
                # outcome a kill -9 cut short): nothing would remove it before the next swap's outcome
                await self._prune()
                self._keep_state()
                return
        if want_pkg is None:
            err = no_package_refusal(self.name, self.config, current or None, rejected, fleet=self.fleet)
            if isinstance(err, FailedAtStart):  # the fleet's deployment fills it (``swap``)
                # (the reason after the slot's name: split at the first ": " garbled a name holding one)
                self.state, self.failed = "failed", str(err).removeprefix(f"model slot {self.name!r}: ")
                self._first_package_due = rejected is None
            raise err
        # refused: the installed package failed too (its signer no longer trusted, a refused version)
        if refused is None:
            outcome = await self.swap(want_pkg, watch=False)
            if outcome.ok:
                self._keep_state()
                return
            if pinned_other:
                # a new package copied to a pinned slot's path that fails its checks (signed by a key not trusted
                # here yet, damaged, another model's graph), or that this machine cannot install now (its disk
                # full): the verified package installed here serves on (the latter's install tried again at the next
                # start). Raised, it ended the agent's start, every other slot and pipeline with it, at every restart
                return await self._start_on(
                    resume, refused=outcome.reason or outcome.stage, retry=outcome.retry
                )
            refused, retry = outcome.reason or outcome.stage, outcome.retry
        raise self._failed_at_start(
            want_pkg, refused, retry=retry, installed=current or None, rejected=rejected
        )

    def _failed_at_start(
        self, pkg: Path, why: str, *, retry: bool, installed: str | None, rejected: str | None
    ) -> SlotError:
        """``start_refusal``'s error, the slot marked failed when it is ``FailedAtStart``: nothing installed serves
        instead (none yet, or the installed one set aside just now). A SlotError ended the agent's start, every
        other slot and pipeline with it, at every restart, and a slot following the fleet never heard of a package
        to fix it."""
        err = start_refusal(self.name, pkg, why, retry=retry, installed=installed, rejected=rejected)
        if isinstance(err, FailedAtStart):
            self.state = "failed"
            self.failed = f"its configured package {pkg} is refused: {one_line(why, 600)}"
            self.counters["configured_package_refused"] += 1
        return err

    def _configured_refused(self, pkg: Path, why: str, installed: str, retry: bool = False) -> None:
        """A pinned slot's configured package refused at a start: said once, counted; the installed one serves.
        ``retry``: refused for a cause of this machine (its disk full), not of the package: tried at the next start."""
        self.counters["configured_package_refused"] += 1
        log.warning(
            "slot %s: the configured package %s is refused: %s; serving the installed %s (%s)",
            self.name,
            printable(str(pkg), 300),
            printable(why, 600),
            installed,
            "its install is tried again at the next start"
            if retry
            else f"fix models.{self.name}.package in the agent's config",
        )

    def _keep_state(self) -> None:
        if self._rewrite is None or self._rewrite.done():
            self._rewrite = asyncio.create_task(self._write_state_again(), name=f"state-{self.name}")

    async def _write_state_again(self) -> None:
        """While the slot runs: a ``state.json`` the disk refused (``ModelStore.unwritten``: a full disk when a
        candidate was kept or rolled back) is written once the disk takes it, so that a restart then starts
        from what the slot decided; so is a rollback mark the disk refused (``ModelStore.unmarked``)."""
        prune_due = False
        while True:
            await asyncio.sleep(STATE_RETRY_S)
            if self.store.unwritten is not None or self.store.unmarked:
                was_unwritten = self.store.unwritten is not None
                await asyncio.to_thread(self.store.write_pending)
                self._say_unrecorded()
                # the folders the former file named, kept until it was replaced, go at the first moment no swap
                # runs (a prune beside an install removes its folder): one due while a swap held the lock was
                # dropped, and a stale folder stayed until a restart, the room a full disk's next install lacked
                prune_due = prune_due or (was_unwritten and self.store.unwritten is None)
            if prune_due and not self._swap_lock.locked():
                # (free: taken at once) no swap starts an install beside the prune
                async with self._swap_lock:
                    prune_due = False
                    await self._prune()

    def _verify_installed(self, folder_name: str) -> OpenedPackage:
        """Signature and every file's size and SHA-256 of an installed folder, as at install (worker
        thread; with key files, in a child process, so that this one never loads ``cryptography``)."""
        if self.trusted is not None:
            return self.store.verify(folder_name, self.trusted)
        return check_isolated(self.store, folder_name, self.key_files or [])

    async def _set_aside(self, folder_name: str, reason: str, want_pkg: Path | None) -> None:
        where = await asyncio.to_thread(self.store.set_aside, folder_name, reason)
        self.counters["installed_rejected"] += 1
        log.warning(
            "slot %s: installed package folder %s not used: %s; %s; %s",
            self.name,
            printable(folder_name, 200),
            printable(reason, 500),
            f"moved to {where}" if where else "removed from the store's state",
            f"installing again from {want_pkg}"
            if want_pkg is not None
            else "no configured package to install",
        )

    async def _after_restart(self) -> AfterRestart | None:
        """A restart inside a health window: resumed, or, in a crash loop, the previous model restored (see
        ``ModelStore.after_restart``). The resumed probation, if any, for ``start`` to watch."""
        ar = await asyncio.to_thread(self.store.after_restart)
        if ar is None:
            return None
        if ar.resume:
            return ar
        cand, prev = [await asyncio.to_thread(self.store.reopen, f) for f in (ar.candidate, ar.previous)]
        from_v = cand.manifest.version if cand else ar.candidate
        to_v = prev.manifest.version if prev else ar.previous
        reason = ar.reason or "the agent restarted inside the health window"
        self.last_outcome = SwapOutcome(False, self.name, from_v, to_v, "rolled_back", reason)
        self._say_unrecorded()
        if ar.told:
            # the run before rolled it back and told the cloud; only its state.json was refused (a full disk):
            # told again, an admin read a second rollback
            log.warning(
                "slot %s: %s rolled back before the restart (already told); restored %s",
                self.name,
                from_v,
                to_v,
            )
            return None
        self.counters["rollbacks"] += 1
        self._event(
            EventKind.ROLLED_BACK,
            from_version=from_v,
            to_version=to_v,
            reason=reason,
            digest=cand.digest if cand else None,
            from_digest=cand.digest if cand else None,
            to_digest=prev.digest if prev else None,
        )
        await asyncio.to_thread(self.store.told, ar.candidate)
        log.warning("slot %s: %s: restored %s in place of %s", self.name, reason, to_v, from_v)
        return None

    async def _recovered(self, active: _Active, resume: AfterRestart | None) -> None:
        """A start on the newest package installed (``state.json`` holds no state): its state written again. Where
        an older version is installed too (``ModelStore.fall_back``), in a slot following the fleet, the newest may be
        a candidate whose health window the lost state held open, or a swap cut short before its switch: it serves
        on probation, a whole new health window watched, the older kept to go back to. Made current alone, it served
        for good without its health verdict, and the prune after it removed the model to go back to."""
        root = active.opened.root
        back = None
        if self.config.version_policy is not VersionPolicy.PINNED and resume is None:
            back = await asyncio.to_thread(self.store.fall_back, root.name)
        await asyncio.to_thread(
            functools.partial(
                self.store.set_current,
                root,
                self.store.root / back if back else None,
                probation=back is not None,
            )
        )
        if back is not None:
            ar = AfterRestart(root.name, back, True, True, 0, None)
            self._resume_watch(active, ar, why=f"{self.store.state_path} held no state")

    def _resume_watch(self, new: _Active, ar: AfterRestart, why: str | None = None) -> None:
        """The candidate serves again after a restart inside its health window: watch a whole new window.
        ``why``: what else than a restart inside the window starts it."""
        self.state = "watching"
        how = "an orderly stop" if ar.clean else "an end without an orderly stop"
        why = (
            f"{why or f'the agent restarted inside the health window ({how})'}; the window starts again with "
            f"{new.manifest.version}"
        )
        prev = self.store.reopen(ar.previous)
        prev_v = prev.manifest.version if prev else ar.previous
        self.last_outcome = SwapOutcome(True, self.name, prev_v, new.manifest.version, "active", why)
        log.warning(
            "slot %s: %s (%s rolls back to %s if it fails it)", self.name, why, new.manifest.version, prev_v
        )
        self._watched = new
        self._watch = asyncio.create_task(self._resumed(new, ar), name=f"health-{self.name}")

    async def _resumed(self, new: _Active, ar: AfterRestart) -> None:
        """Load the previous model again (verified as at every start) to roll back to, then watch the window."""
        try:
            prev = await asyncio.to_thread(self._verify_installed, ar.previous)
            old = await in_lowered_thread(self._load, prev, True)
        except Exception as exc:  # (a parser bug included: never a watch task dying unheard)
            if self._helpers.stopped:
                return
            # nothing to roll back to: the candidate is kept, as the best there is
            log.warning(
                "slot %s: the previous package %s cannot serve again (%s); %s is kept without a health window",
                self.name,
                printable(ar.previous, 200),
                printable(exc, 500),
                new.manifest.version,
            )
            await asyncio.to_thread(self.store.end_probation, new.opened.root)
            if self._active is new:
                self.state = "active"
            return
        if self._active is not new:  # replaced meanwhile (a swap): nothing left to watch
            old.engine.close()
            return
        b = ar.baseline or {}
        h = old.health  # the previous model's figures at the swap, for latency and NG rate
        h.n, h.errors, h.nonfinite, h.ng = (_count(b.get(k)) for k in ("n", "errors", "nonfinite", "ng"))
        p50 = b.get("p50_ms")
        if isinstance(p50, int | float) and math.isfinite(p50) and p50 > 0:
            h.latencies.append(float(p50))
        self._previous = old
        await self._watch_health(new, old)

    async def stop(self) -> None:
        for job in list(self._jobs):  # a verifier still running (a stop mid-swap): not left behind
            job.abort()
        # an orderly stop inside a health window (watching, or a later swap under way): the next start
        # resumes the window rather than count an unclean end
        try:
            await asyncio.to_thread(self.store.mark_stopped)
        except OSError as exc:  # the next start counts an unclean end: said, never fatal
            log.warning("slot %s: cannot record the orderly stop: %s", self.name, exc)
        self._helpers.stop()  # a conversion still running (a stop mid-swap): the swap ends as a refusal
        if self._rewrite is not None:  # (mark_stopped above wrote what it held, if the disk took it)
            self._rewrite.cancel()
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.wait({self._watch}, timeout=5)  # bounded: never hold up shutdown
        for a in (self._active, self._previous):
            if a is not None:
                a.engine.close()
        self._active = self._previous = None
        self.state = "stopped"

    # ---- inference (worker threads) --------------------------------------------------------
    def infer(self, item: Frame | Window, unsure_tolerance: float | None = None) -> Inference:
        """``unsure_tolerance``: check an image against the package's ``input_stats`` (when it has
        them) and call it UNSURE, with a reason, when it is far outside them (None: no check).

        The check (it reads the whole frame: a 640x480 one ~0.75 ms of CPU in a loop on this project's
        AVX-512 test machine, ~1.0 ms right after an engine run, 1.1-1.2 ms before; 0.3-0.5 ms a 224-px
        one) runs on a thread of its own while the engine runs the frame (one intra-op thread by default:
        the gateway's other core is free then), so a frame waits for it only where it takes longer than the
        model. It is handed over once the frame is preprocessed, not before: beside the preprocessing it
        competed with it for the interpreter (the check holds it between its ~90 small NumPy steps), and
        OpenCV's worker thread, which the check's OpenCV calls woke, took the preprocessing's core: one
        preprocessing in ten took 1.4-3 ms instead of 0.3-0.6. The engine's run releases the interpreter
        and uses no OpenCV. A check no check thread has started by the time the engine is done is run here
        instead."""
        a = self._require()  # read once: a concurrent swap affects only later calls
        m = a.manifest
        t0 = time.perf_counter()
        try:
            if isinstance(m.preprocessing, ImagePreprocessing):
                if not isinstance(item, Frame):
                    raise PreprocessError(f"model {m.package_id} takes images, got a {type(item).__name__}")
                img = item.image
                if img.dtype != np.uint8 and (
                    img.dtype.kind not in "iu" or (img.size and (img.min() < 0 or img.max() > 255))
                ):  # a Mono12 camera's values (or floats from 0 to 1) scaled as 8-bit ones: a good part NG
                    held = f"{img.dtype} up to {img.max()}" if img.dtype.kind in "iu" else str(img.dtype)
                    raise PreprocessError(
                        f"the frame's pixels are {held}, the model takes 8-bit ones (0-255): a camera's 16-bit "
                        "frames are brought to 8 bits by its pixel_bits; a plugin source hands over BGR uint8 "
                        "frames"
                    )
                if img.dtype != np.uint8:
                    # integers within 0-255 (checked above) are exactly these 8-bit pixels, which OpenCV resizes
                    # (int32 and int64 it does not: an assertion on every frame)
                    img = img.astype(np.uint8)
                x = image_tensor(img, m.preprocessing, a.input_dtype)
            else:
                if not isinstance(item, Window):
                    raise PreprocessError(
                        f"model {m.package_id} takes signal windows, got a {type(item).__name__}"
                    )
                x = signal_features(item.waveform, item.scalars, m.preprocessing)
        except PreprocessError as exc:
            self._count(a, error=True)
            raise InferenceError(f"slot {self.name}: {exc}", "bad_input") from exc
        except Exception as exc:  # anything else (OpenCV on an odd frame): counted, so health sees it
            self._count(a, error=True)
            raise InferenceError(
                f"slot {self.name}: {m.package_id}'s preprocessing failed on this item: "
                f"{type(exc).__name__}: {exc}",
                "preprocess_error",
            ) from exc
        pending: Future[str | None] | None = None
        if unsure_tolerance is not None and m.input_stats is not None and isinstance(item, Frame):
            from model_packager.inputstats import check

            check_args = (m.input_stats, img, unsure_tolerance, a.local_stats, item.camera_size)
            pending = _unsure_checks().submit(check, *check_args)
        t1 = time.perf_counter()
        try:
            out = a.engine.run({a.input_name: x})
        except Exception as exc:
            self._count(a, error=True)
            raise InferenceError(
                f"slot {self.name}: engine {a.engine.name} failed: {exc}", "engine_error"
            ) from exc
        t2 = time.perf_counter()
        # a plain classifier's logits as floats (None: any other model or output, read by the general path)
        plan = a.logits
        z = None if plan is None else logits_values(plan, out)
        if not (_all_finite(out) if z is None else math.isfinite(sum(z))):
            self._count(a, nonfinite=True, latency=(t2 - t1) * 1000)
            raise InferenceError(f"slot {self.name}: {m.package_id} produced NaN/Inf", "nonfinite_output")
        try:
            if plan is not None and z is not None:
                interp = interpret_logits(plan, z)
            else:
                interp = interpret(m, out, item.image.shape[:2] if isinstance(item, Frame) else None)
        except Exception as exc:  # outputs the manifest cannot read: an error the health watch counts
            self._count(a, error=True, latency=(t2 - t1) * 1000)
            raise InferenceError(
                f"slot {self.name}: {m.package_id}'s outputs do not read as its manifest declares: "
                f"{type(exc).__name__}: {exc}",
                "model_error",
            ) from exc
        if pending is not None:
            try:
                # not started yet (the two check threads busy with other slots' frames, or not yet
                # scheduled on a loaded machine): this thread, done with the engine, checks it at once
                # rather than wait for a turn
                reason = check(*check_args) if pending.cancel() else pending.result()
            except Exception as exc:
                # whether the frame is like the model's training inputs is unknown: an error the health watch and
                # the fleet's canary count (a package whose check fails on every frame is rolled back), and the
                # pipeline's UNSURE result naming it (a camera frame's bad_input: ``Pipeline._process``)
                self._count(a, error=True, latency=(t2 - t1) * 1000)
                raise InferenceError(
                    f"slot {self.name}: the frame cannot be measured against {m.package_id}'s training "
                    f"inputs: {type(exc).__name__}: {exc}",
                    "bad_input",
                ) from exc
            if reason is not None:
                # naming no fault: the classifier's top class on a frame it is not trusted on read as a defect
                # found (its guess stays in probabilities and the heat map)
                interp.verdict, interp.reason, interp.label = "UNSURE", reason, None
        t3 = time.perf_counter()
        self._count(a, latency=(t2 - t1) * 1000, ng=interp.verdict == "NG")
        return Inference(
            interp,
            out,
            m.name,
            m.version,
            a.engine.name,
            (t1 - t0) * 1000,
            (t2 - t1) * 1000,
            (t3 - t2) * 1000,
        )

    def _count(
        self,
        a: _Active,
        *,
        error: bool = False,
        nonfinite: bool = False,
        latency: float | None = None,
        ng: bool = False,
    ) -> None:
        with self._lock:
            h = a.health
            h.n += 1
            h.errors += error
            h.nonfinite += nonfinite
            h.ng += ng
            if latency is not None:
                h.latencies.append(latency)
            self.counters["inferences"] += 1
            if error:
                self.counters["errors"] += 1
            if nonfinite:
                self.counters["nonfinite"] += 1

    # ---- swap ------------------------------------------------------------------------------
    def _load(self, opened: OpenedPackage, installed: bool = False) -> _Active:
        """Load, golden-check and time every engine × form allowed; the first that passes serves unless another
        is clearly faster (``select``).
        During a swap (a model serves meanwhile) the loading is isolated from the serving threads. ``installed``:
        a package a start finds installed, or the way back to the slot's previous package (``select``'s: golden
        tolerances refused at a swap are said, served)."""
        helpers = self._helpers
        cfg = self.config
        if cfg.openvino_cache_dir:  # one cache folder per installed version: removed with the version
            cfg = cfg.model_copy(update={"openvino_cache_dir": str(self._ov_cache / opened.root.name)})
        with helpers.used():
            sel = select(opened, cfg, isolated=self._active is not None, installed=installed)
        if helpers.stopped:  # the slot stopped meanwhile: nothing switches after a stop
            sel.engine.close()
            raise _Stopped("the slot stopped while the package was loaded; it was not switched to")
        if sel.unchecked is not None:  # served as installed: the way back to it serves it (``select``)
            self.store.note_served_unchecked(opened.digest)
        return _Active(opened, sel.engine, sel)

    def item_ms(self) -> tuple[float, str] | None:
        """The serving model's median time per item measured here at its load, and what was measured."""
        return None if self._active is None else _item_ms(self._active)

    def _report_selection(self, a: _Active) -> None:
        """Say which form serves and, where INT8 is off on this CPU, how far off, with the CPU."""
        sel = a.selection
        if sel is None:
            return
        if (
            item := _item_ms(a)
        ) is not None:  # for `edge-agent validate`'s sizing warning (edge_agent.sizing)
            from edge_agent import sizing

            sizing.record(self.store.root, a.manifest.package_id, self.config.package, item[1], item[0])
        for note in sel.golden_notes:  # said once a load; the build said them too (model-packager build)
            log.warning("slot %s: package %s: %s", self.name, a.manifest.package_id, note)
        # installed before this agent refused its golden tolerances: served, said at each load
        if sel.unchecked is not None:
            self.counters["golden_tolerance_unchecked"] += 1
            log.warning("slot %s: package %s: %s", self.name, a.manifest.package_id, sel.unchecked)
        # engine auto: another engine serves (a package's OpenVINO IR this OpenVINO cannot read), said at each load
        for line in sel.not_loaded:
            self.counters["engines_not_loaded"] += 1
            log.warning(
                "slot %s: package %s: %s; serving %s",
                self.name,
                a.manifest.package_id,
                line,
                f"{sel.chosen.form} on {sel.chosen.engine}",
            )
        for t in sel.int8_off:
            self.counters["int8_parity_failures"] += 1
            self._event(
                EventKind.INT8_DEVIATION,
                package=a.manifest.package_id,
                engine=t.engine,
                deviation=t.deviation,
                agreement=t.agreement,
                reason=t.reason,
                cpu=sel.cpu,
                cpu_flags=list(sel.cpu_flags),
                serving=f"{sel.chosen.form} on {sel.chosen.engine}",
            )
            log.warning(
                "slot %s: the INT8 form of %s is off on this CPU (%s; %s) on %s: %s; serving %s instead",
                self.name,
                a.manifest.package_id,
                sel.cpu,
                " ".join(sel.cpu_flags),
                t.engine,
                t.reason,
                f"{sel.chosen.form} on {sel.chosen.engine}",
            )

    def _event(self, kind: EventKind, **data: Any) -> None:
        evt = Event(kind, slot=self.name, **data)
        try:
            self.on_event(evt)
        except Exception:  # a broken listener must not break the slot
            log.exception("slot %s: event listener failed", self.name)

    async def swap(
        self, pkg: Path, *, watch: bool = True, expect: tuple[str, str] | None = None
    ) -> SwapOutcome:
        """Install ``pkg`` and make it active; returns how far it got and why it stopped. ``expect``:
        (package name, version) the package must be (the fleet's desired state), else refused at verify.

        Never raises for a bad package: any exception on the way (a parser bug, a malformed golden
        file, an engine raising something unexpected) is a refusal at the stage it reached, and the
        slot returns to the state it was in, the old model still serving."""
        got: list[OpenedPackage] = []  # the package once verified: its version is known from there on
        async with self._swap_lock:
            try:
                outcome = await self._swap(pkg, watch=watch, expect=expect, got=got)
            except Exception as exc:
                # under the swap's lock, as every other refusal: an install waiting for it (the next desired
                # state) went on as the lock was let go, and this prune removed its folder, verified and
                # renamed into place but named by no state yet, while it loaded
                return await self._swap_raised(exc, pkg, got)
            if outcome.ok and watch and outcome.from_version is not None and self._previous is not None:
                new, old = self._require(), self._previous
                self._watched = new
                self._watch = asyncio.create_task(self._watch_health(new, old), name=f"health-{self.name}")

        # The replaced model is not closed explicitly: an inference that read it just before the
        # switch may still be running on it; it is freed when the last reference goes.
        return outcome

    async def _swap_raised(self, exc: Exception, pkg: Path, got: list[OpenedPackage]) -> SwapOutcome:
        """A swap that raised (under the swap's lock): refused at the stage it reached, its folder marked and
        removed as at any other stage past the install."""
        stage = {"loading": "load", "smoke_testing": "golden"}.get(self.state, "verify")
        reason = str(exc) if isinstance(exc, PackageError) else f"unexpected {type(exc).__name__}: {exc}"
        log.debug("slot %s: swap raised", self.name, exc_info=True)
        reason = printable(reason, 500)
        if not got:
            return self._refused(self.version, None, stage, reason, package=Path(pkg))
        opened = got[0]
        # verified, then refused: marked and removed as at any other stage past the install. Left installed
        # unmarked, it was the newest a start on a lost state.json served, its golden test never passed
        try:
            await self._refused_folder(opened, reason)
        except Exception as why:  # a disk that refuses it: said, the refusal still told
            log.warning("slot %s: cannot mark %s refused: %s", self.name, opened.root.name, why)
        return self._refused(self.version, opened.manifest.version, stage, reason, package=Path(pkg))

    async def _refused_folder(self, opened: OpenedPackage, why: str) -> None:
        """A package refused past its install: its folder marked failed (``mark_failed``: a start on a lost
        state.json never serves it) and removed. Not where the folder is one the slot serves or keeps to go back to
        (the same bytes sent again: the fleet's rollback to the previous version, a deployment naming one version and
        sending the other's file): that folder's verdict is its own, and the refusal marked the model serving, or the
        one its health check rolls back to, as refused, a start on a lost state.json passing it over."""
        st = await asyncio.to_thread(self.store.state)
        kept = {st.get("current"), st.get("previous")}
        if self._active is not None:  # (a state.json that does not read names none)
            kept.add(self._active.opened.root.name)
        if opened.root.name not in kept:
            await asyncio.to_thread(self.store.mark_failed, opened.root, why)
        await self._prune()

    async def _swap(
        self,
        pkg: Path,
        *,
        watch: bool = True,
        expect: tuple[str, str] | None = None,
        got: list[OpenedPackage] | None = None,
    ) -> SwapOutcome:
        """The swap, under the swap's lock (``swap`` holds it)."""
        old = self._active
        from_v = old.manifest.version if old else None
        self.state = "verifying"
        self._event(
            EventKind.SWAP_STARTED,
            package=str(pkg),
            from_version=from_v,
            from_digest=old.opened.digest if old else None,
        )
        try:
            opened = await asyncio.to_thread(self._install, Path(pkg))
        except PackageError as exc:
            return self._refused(
                from_v, None, "verify", str(exc), retry=exc.code == NO_SPACE, package=Path(pkg)
            )
        if got is not None:
            got.append(opened)
        to_v = opened.manifest.version
        if expect is not None and (opened.manifest.name, to_v) != expect:
            # the fleet named another package than the bytes it sent (its registry's index and its
            # files disagree): serving it would report one version and run another
            why = (
                f"the package delivered as {printable(expect[0], 80)} {printable(expect[1], 80)} is "
                f"{opened.manifest.package_id} (its signed manifest); refused"
            )
            await self._refused_folder(opened, why)
            return self._refused(from_v, to_v, "verify", why, package=Path(pkg))
        if self.config.refuses(to_v):
            why = refused_by_config(self.name, opened.manifest.package_id)
            await self._refused_folder(opened, why)
            return self._refused(from_v, to_v, "verify", why, package=Path(pkg))
        unfit: str | None = None
        if old is not None and opened.manifest.task != old.manifest.task:
            unfit = f"package task {opened.manifest.task.value} does not match the slot's {old.manifest.task.value}"
        for check in list(self.swap_checks.values()) if unfit is None else ():
            # a pipeline's start check (a baseline's sample-rate floor): the start refuses such a package, and
            # once swapped in it served windows whose baseline failed at each, the old model no longer kept
            unfit = check(opened.manifest)
            if unfit is not None:
                break
        if unfit is not None:
            # marked and removed as at any other refusal past the install: left installed unmarked, it was the
            # newest a start on a lost state.json served (a model of another task on the slot's pipelines)
            await self._refused_folder(opened, unfit)
            return self._refused(from_v, to_v, "verify", unfit, package=Path(pkg))
        self.state = "smoke_testing"  # load, golden-check and time each engine and form
        helpers = self._helpers
        # the way back to a package this slot served (a fleet's halt, an admin's rollback): its previous folder, or
        # one served here before, in this run or an earlier one (a halt comes after the window passed, the folder
        # pruned, downloaded again; ``ModelStore.served_unchecked``): served
        # as a start on it or the health check's rollback to it serves it, golden tolerances this agent refuses
        # since it was installed said and counted (``select``'s installed). Refused, a halt's agents stayed on the
        # version it halted, their targets going back for good, the package they were sent back to marked failed
        back = opened.digest in await asyncio.to_thread(self.store.served_unchecked) or (
            old is not None and opened.root.name == await asyncio.to_thread(self.store.previous)
        )
        try:
            new = await in_lowered_thread(self._load, opened, back)
        except (EngineError, NothingPasses, _Stopped, PackageError) as exc:
            if helpers.stopped:  # a stop mid-swap, not the package's fault: nothing marked failed
                return self._refused(
                    from_v, to_v, "load", f"the slot stopped mid-swap: {exc}", package=Path(pkg)
                )
            if isinstance(exc, _Stopped):
                raise
            if isinstance(exc, PackageError) and exc.code == GOLDEN_UNREADABLE:
                # a passing error of this machine (EMFILE, ENOMEM) reading them: tried again, as a full disk
                # is. Taken for the package's, it was marked failed, for good
                await self._prune()
                return self._refused(from_v, to_v, "golden", str(exc), retry=True, package=Path(pkg))
            if isinstance(exc, PackageError):
                # its golden files refused as read (a decompression bomb, not an .npz), before any engine's
                # check: refused as the others at this stage. Left to the catch-all, the refusal named no
                # version and the folder stayed installed unmarked, the newest a start on a lost state took
                await self._refused_folder(opened, str(exc))
                return self._refused(from_v, to_v, "golden", str(exc), package=Path(pkg))
            if isinstance(exc, EngineError):
                await self._refused_folder(opened, str(exc))
                return self._refused(from_v, to_v, "load", str(exc), package=Path(pkg))
            if exc.package_defect:  # not the gateway's: it was said to fail "on this CPU"
                reason = f"golden test failed, a defect of the package on every CPU: {exc}"
            else:
                reason = f"golden test failed on this CPU ({int8_path()}): {exc}"
            await self._refused_folder(opened, reason)
            return self._refused(from_v, to_v, "golden", reason, package=Path(pkg))
        self._report_selection(new)
        if old is not None and _below(to_v, old.manifest.version):
            # an admin's rollback (the only way the fleet sends a lower version): the version it rolls away
            # from stays installed as the previous one, and a start on a lost state.json served it again
            await asyncio.to_thread(self.store.mark_rolled_back, old.opened.root.name, MARK_ADMIN)
            self._say_unrecorded()
        # the switch: one reference assignment between two inferences
        self._previous, self._active = old, new
        await asyncio.to_thread(
            functools.partial(  # under probation until the health window passes
                self.store.set_current,
                opened.root,
                old.opened.root if old else None,
                probation=watch and old is not None,
                baseline=_baseline(old.health) if old else None,
            )
        )
        self.state = "watching" if (watch and old is not None) else "active"
        self.failed = self._failed_at_start_why = None
        outcome = SwapOutcome(True, self.name, from_v, to_v, "active")
        self.last_outcome = outcome
        self._event(
            EventKind.SWAPPED,
            from_version=from_v,
            to_version=to_v,
            from_digest=old.opened.digest if old else None,
            to_digest=new.opened.digest,
            engine=new.engine.name,
            form=new.engine.form,
            selection=new.selection.summary() if new.selection else None,
        )
        log.info(
            "slot %s: now running %s, %s (was %s)",
            self.name,
            opened.manifest.package_id,
            new.selection.summary() if new.selection else new.engine.name,
            from_v,
        )
        if not (watch and old is not None):
            # its outcome is now (no health window): nothing else would remove what it replaced (a
            # start on a new local package: every version a pinned slot was given stayed on disk)
            await self._prune()
        return outcome

    @property
    def _ov_cache(self) -> Path:
        """This slot's part of ``openvino_cache_dir``: a folder per installed package folder."""
        return Path(self.config.openvino_cache_dir or ".") / self.name

    async def _prune(self) -> None:
        """Remove the store's folders nothing points to any more (see ``ModelStore.prune``), and their
        OpenVINO compiled-model caches."""
        try:
            held = [a.opened.root.name for a in (self._active, self._previous) if a is not None]
            gone = await asyncio.to_thread(self.store.prune, held)
        except OSError as exc:  # a disk that fails here fails elsewhere too: said, never fatal
            log.warning("slot %s: cannot remove old package folders: %s", self.name, exc)
            return
        if gone:
            log.info("slot %s: removed package folders no longer used: %s", self.name, ", ".join(gone))
        if self.config.openvino_cache_dir:
            caches = await asyncio.to_thread(self._prune_ov_cache)
            if caches:
                log.info(
                    "slot %s: removed OpenVINO caches of versions no longer installed: %s",
                    self.name,
                    ", ".join(caches),
                )

    def _prune_ov_cache(self) -> list[str]:
        """Remove the compiled-model caches (``openvino_cache_dir/<slot>/<package folder>``) of versions the slot
        no longer has (neither current, nor kept to go back to, nor a candidate): each is a compiled copy of a
        model, and a cache that kept every version delivered filled a small gateway's disk over months of
        rollouts. Also the loose ``<number>.blob`` files of the former layout (one folder for every version of
        every slot; nothing reads them now). Worker thread."""
        st = self.store.state()
        keep = {st.get("current"), st.get("previous"), (st.get("probation") or {}).get("candidate")}
        gone = []
        try:
            # and every folder still installed: the store's prune keeps those a state.json the disk refused still
            # names, which a restart then loads (their caches went, and that start compiled them again)
            keep |= {p.name for p in self.store.root.iterdir() if not p.name.startswith(".") and p.is_dir()}
            for p in self._ov_cache.iterdir() if self._ov_cache.is_dir() else ():
                if p.is_dir() and p.name not in keep:
                    shutil.rmtree(p, ignore_errors=True)
                    gone.append(p.name)
            root = self._ov_cache.parent
            for p in root.glob("*.blob") if root.is_dir() else ():
                if p.stem.isdigit() and p.is_file():
                    p.unlink(missing_ok=True)
                    gone.append(p.name)
        except OSError as exc:
            log.warning(
                "slot %s: cannot remove old OpenVINO caches in %s: %s", self.name, self._ov_cache, exc
            )
        return gone

    def _install(self, pkg: Path) -> OpenedPackage:
        """Verify and extract ``pkg`` (worker thread). With key files, in a child process, while this
        one imports the engine libraries the slot will load (a first start overlaps the two)."""
        if self.trusted is not None:
            return self.store.install(pkg, self.trusted)
        return install_isolated(
            self.store, pkg, self.key_files or [], meanwhile=self._import_engines, jobs=self._jobs
        )

    def _import_engines(self) -> None:
        try:
            names = candidate_engines(self.config.engine)
        except EngineError:  # reported with its reason when the engine is created
            return
        for name in names:
            try:
                load_engine(ENGINE_TYPES[name][1])
            except ImportError:  # reported with its reason when the engine is created
                pass

    def _refused(
        self, from_v, to_v, stage: str, reason: str, *, package: Path, retry: bool = False
    ) -> SwapOutcome:
        """``package``: the package file refused, in the event (as ``swap_started`` names it), and in the log line
        where its version is unknown (refused before its manifest was verified: the log said ``swap to None``).
        ``to_v``: the version its verified manifest gave, whatever stage refused it."""
        # one line, whatever it quotes (an engine's error names the model's own operators and nodes):
        # it goes to the log, the swap_refused event, /status and the fleet
        reason = one_line(reason, 1000)
        # a health window resumed after a restart runs on beside a refused swap (an admin's rollback goes through
        # beside it): still watching. Set active, its candidate was reported healthy before its verdict
        self.state = (
            "watching"
            if self.watches_active()
            else "active"
            if self._active
            else "failed"
            if self.failed is not None
            else "stopped"
        )
        outcome = SwapOutcome(False, self.name, from_v, to_v, stage, reason, retry)
        self.last_outcome = outcome
        self.counters["swaps_refused"] += 1
        if not self._starting and not self._helpers.stopped:  # (a stop mid-swap refuses nothing)
            sent = f"version {to_v}" if to_v is not None else f"{printable(package.name, 200)}, not verified"
            self.failed_refusal(
                f"the package sent to it ({sent}) was refused at {stage}: {reason}"
                + (" (a cause of this machine: tried again)" if retry else "")
            )
        self._say_unrecorded()  # (a refused package's mark)
        self._event(
            EventKind.SWAP_REFUSED,
            stage=stage,
            reason=reason,
            from_version=from_v,
            to_version=to_v,
            from_digest=self.digest,  # (the model that serves on: the refused one never switched in)
            package=str(package),
        )
        if to_v is not None:
            what = f"swap to {to_v}"
        else:
            what = f"package {printable(package.name, 200)} (version unknown: not verified)"
        log.log(
            logging.INFO if self._starting else logging.WARNING,
            "slot %s: %s refused at %s: %s; %s %s",
            self.name,
            what,
            stage,
            reason,
            from_v or "nothing",
            "keeps serving" if from_v else "serves",
        )
        return outcome

    def failed_refusal(self, then: str) -> None:
        """A failed slot's reason once a package sent to it (the fleet's deployment) is refused (``then``: what
        and why), at the swap (``_refused``) or before any (the model manager declining the deployment: a version
        the slot refuses, one refused here before): it said "no package yet: waiting for the fleet's deployment" (or
        its configured package's refusal) as if nothing had come, the refusal only under ``last_swap`` (nowhere for
        a declined one); ``edge-agent status`` printed the former. Nothing for a slot that has a model."""
        if self.failed is None or self._active is not None:
            return
        if self._first_package_due:
            self.failed = f"no package yet: {then}; waiting for the fleet's next deployment"
        else:
            self._failed_at_start_why = self._failed_at_start_why or self.failed
            self.failed = f"{self._failed_at_start_why}; then {then}"

    def health_verdict(self, new: _Active, old: _Active) -> str | None:
        """None while healthy, else why the new model breaks a bound."""
        hc = self.config.health
        h = new.health
        if h.n < hc.min_items:
            return None
        if h.errors / h.n > hc.max_error_rate:
            return f"error rate {h.errors / h.n:.1%} > {hc.max_error_rate:.1%}"
        if h.nonfinite / h.n > hc.max_nonfinite_rate:
            return f"NaN/Inf outputs in {h.nonfinite / h.n:.1%} of inferences > {hc.max_nonfinite_rate:.1%}"
        p_new, p_old = h.p50(), old.health.p50()
        if (
            p_new
            and p_old
            and p_new / p_old > hc.max_latency_ratio
            and p_new - p_old > hc.min_latency_increase_ms
        ):
            return f"p50 inference latency {p_new:.2f} ms is {p_new / p_old:.1f}x the previous {p_old:.2f} ms"
        ok_new = h.n - h.errors - h.nonfinite
        ok_old = old.health.n - old.health.errors - old.health.nonfinite
        if ok_new >= hc.min_items and ok_old >= hc.min_items:
            shift = abs(h.ng / ok_new - old.health.ng / ok_old)
            if shift > hc.max_verdict_rate_shift:
                return f"NG rate moved by {shift:.0%} (bound {hc.max_verdict_rate_shift:.0%})"
        return None

    async def _watch_health(self, new: _Active, old: _Active) -> None:
        hc = self.config.health
        deadline = time.monotonic() + hc.window_s
        while True:
            await asyncio.sleep(min(0.2, hc.window_s / 10))
            if self._active is not new:
                return
            why = self.health_verdict(new, old)
            if why:
                # this candidate's verdict: a swap that holds the lock meanwhile may replace it (then its own watch
                # judges the next model, and this one ends)
                await self.rollback(f"health check failed: {why}", candidate=new, kind=MARK_HEALTH)
                return
            if time.monotonic() >= deadline and new.health.n >= hc.min_items:
                await asyncio.to_thread(self.store.end_probation, new.opened.root)
                if (
                    self._active is not new
                ):  # a swap switched during that write: its own outcome says what serves
                    return
                self._previous = None  # freed once no inference holds it (and no longer kept by the prune)
                if not self._swap_lock.locked():  # (an install in flight: its own outcome prunes)
                    await self._prune()
                    self.state = "active"  # (a swap under way sets its own state: it read active mid-swap)
                self._event(
                    EventKind.SWAP_KEPT,
                    version=new.manifest.version,
                    inferences=new.health.n,
                    digest=new.opened.digest,
                )
                return

    async def rollback(self, reason: str, candidate: _Active | None = None, *, kind: str) -> SwapOutcome:
        """Make the previous model active again, the one active marked failed with ``reason``; ``kind``: who rolled
        it back, written in its mark (``MARK_HEALTH``: the health check's; ``MARK_ADMIN``: the fleet's, a withdrawal, an
        admin's rollback; no default: a caller that forgot it wrote ``admin`` for a health verdict), for a
        start that finds the mark with state.json still naming it (``ModelStore.after_restart``). ``candidate``: the
        model the verdict is on (a health watch's), rolled back only if it is still the active one once the swap's
        lock is taken: a swap that held the lock as the verdict fell due switched to the next model, which was
        rolled back in its place with the candidate's reason, and the candidate that failed served on, unwatched."""
        async with self._swap_lock:
            new, old = self._active, self._previous
            if candidate is not None and new is not candidate:
                return SwapOutcome(
                    False,
                    self.name,
                    self.version,
                    None,
                    "rolled_back",
                    f"{candidate.manifest.version} no longer serves: not rolled back",
                )
            if old is None or new is None:
                return SwapOutcome(
                    False, self.name, self.version, None, "rolled_back", "no previous model to roll back to"
                )
            outcome = SwapOutcome(
                False, self.name, new.manifest.version, old.manifest.version, "rolled_back", reason
            )
            # the outcome with the switch: whoever sees the version change reads why (the model manager
            # reports it to the fleet), never the outcome before it
            self._active, self._previous, self.last_outcome = old, None, outcome
            self.counters["rollbacks"] += 1  # counted with the switch too: /status never shows one without it
            # before the state that drops it (a power cut may empty state.json; a start then serves the newest
            # version installed but never one rolled back)
            await asyncio.to_thread(self.store.mark_rolled_back, new.opened.root.name, kind)
            # one write: the previous model current and the verdict on the one rolled back (two, a kill between
            # them left no verdict, and a restart installed the version rolled back again)
            await asyncio.to_thread(
                functools.partial(
                    self.store.set_current, old.opened.root, None, failed=(new.opened.root, reason)
                )
            )
            await self._prune()
            self.state = "active"
            self._say_unrecorded()
            self._event(
                EventKind.ROLLED_BACK,
                from_version=new.manifest.version,
                to_version=old.manifest.version,
                reason=reason,
                from_digest=new.opened.digest,
                to_digest=old.opened.digest,
            )
            # told: a restart that finds this rollback unrecorded in state.json (a full disk) tells no second one
            await asyncio.to_thread(self.store.told, new.opened.root.name)
            log.warning(
                "slot %s: rolled back %s -> %s: %s",
                self.name,
                new.manifest.version,
                old.manifest.version,
                reason,
            )
        return outcome

    def serving_health(self) -> dict:
        """The health figures of the model the slot serves now, its own since it was made active (its health
        window's included), with its version and digest: what a deployment of that version is judged and shown
        by. ``counters`` count every model the slot served since the start (mostly the previous version's, just
        after a swap)."""
        with self._lock:
            a = self._active
            if a is None:
                return {"version": None, "digest": None, "inferences": 0, "errors": 0, "nonfinite": 0}
            h = a.health
            return {
                "version": a.manifest.version,
                "digest": a.opened.digest,
                "inferences": h.n,
                "errors": h.errors,
                "nonfinite": h.nonfinite,
            }

    def watches_active(self) -> bool:
        """Whether a health watch runs on the model that serves now: its verdict is still to come (the model
        manager asks this before it says the model is healthy, rather than read the slot's state)."""
        w = self._watch
        return w is not None and not w.done() and self._watched is not None and self._watched is self._active

    def status(self) -> dict:
        a = self._active
        return {
            "slot": self.name,
            "state": self.state,
            "package": a.manifest.name if a else None,
            "version": a.manifest.version if a else None,
            "digest": a.opened.digest if a else None,
            "engine": a.engine.name if a else None,
            "form": a.engine.form if a else None,
            "selection": a.selection.to_dict() if a and a.selection else None,
            "golden_notes": list(a.selection.golden_notes) if a and a.selection else [],
            "engine_version": a.engine.version if a else None,
            "task": a.manifest.task.value if a else None,
            "p50_inference_ms": a.health.p50() if a else None,
            "counters": dict(self.counters),
            "last_swap": self.last_outcome.to_dict() if self.last_outcome else None,
            "failed": self.failed,  # why no model serves: its package refused at the start, or none yet
            # rolled back or refused, but the disk refused its mark: until written, a restart may serve it again
            "unrecorded_rollbacks": dict(self._unrecorded),
        }

    def _say_unrecorded(self) -> None:
        """Tell, in a ``rollback_unrecorded`` event, each rollback (or refusal) whose mark the disk refused, and the
        end of it (written, or its folder removed): until then a restart may serve that version again. It was
        only a WARNING in the log, once, and /status and the fleet showed nothing."""
        now = self.store.unrecorded()
        for folder, why in now.items():
            if folder not in self._unrecorded:
                self._unrecorded[folder] = why
                self._event(
                    EventKind.ROLLBACK_UNRECORDED,
                    package=folder,
                    active=True,
                    reason=why,
                    message=f"slot {self.name}: {folder} was rolled back or refused, but the disk refused the "
                    f"record of it ({why}); a restart before the disk takes it may serve that version again (free "
                    "some space, or make the disk writable)",
                )
        for folder in [f for f in self._unrecorded if f not in now]:
            del self._unrecorded[folder]
            self._event(
                EventKind.ROLLBACK_UNRECORDED,
                package=folder,
                active=False,
                reason=None,
                message=f"slot {self.name}: {folder} recorded as rolled back (or no longer installed)",
            )
