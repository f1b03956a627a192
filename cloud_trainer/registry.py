"""The model registry: published packages with their evaluation reports, one folder per version.

    <root>/<name>/index.json                 [{version, status, digest, metrics, dataset_digest,
                                               parent_version, created_at, package, report}, ...]
    <root>/<name>/<version>/<name>-<version>.edgepkg, report.json, report.md, *.png

Only candidates that passed the evaluation gate are published; a rejected candidate leaves the
registry unchanged (its report stays in the build's work folder). A version's files are fsynced before the rename
that publishes them and ``index.json`` is replaced atomically, fsynced (``model_packager.durable``): after a power
cut the index never lists a zero-length or torn package. Packages are also addressable by SHA-256 digest (what
agents download by). A publish that fails (a full disk while copying, or while writing the index) removes what it
copied: the registry shares the fleet service's data folder, whose samples and store were refused for the space
that copy held until it was deleted by hand. A publish killed while copying (-9, the OOM killer) leaves its ``<name>/.<version>.part`` folder:
``sweep_parts`` removes those not touched for an hour (``STALE_PART_S``; a live publish's is written to as it
copies) when a publish starts and when ``cloud-trainer serve`` starts, logging each (INFO) and their count and
the first one as a WARNING, which a build prints; they held their space until the same version was published
again.

Versions a build chooses itself (no ``--version``) are reserved as it chooses them (``reserve_version``, under the
package's lock): two builds at once get two versions, where both took the same one and the one publishing second
failed after its whole training.

Tenants: the default tenant's registry is ``<root>`` itself (the layout above, unchanged); tenant
``acme``'s is ``<root>/.tenants/acme/`` with the same layout (a package name never starts with '.', so
the two never meet). ``for_tenant()`` gives the registry a tenant's admins and agents see: a name or
digest of another tenant is simply not in it.

Withdrawing: ``cloud-trainer withdraw --registry DIR NAME VERSION --reason TEXT`` marks a published version
``withdrawn`` (a known defect; the signed package stays valid for ever, so the registry is where it is stopped):
the fleet no longer deploys it, rolls back to it (an admin's rollback or a halted rollout's way back) or lets an
agent download it (``by_digest(..., withdrawn=False)``). Agents that run it keep it until given another version.

Names: a package name is what the package format allows (``PACKAGE_NAME_RE``, the manifest's and the
agent's rule: lowercase letters, digits, '_' and '-', at most 63). ``list``/``get``/``latest`` answer a
name outside it (``../beta/x``, ``.tenants/beta/x``, an absolute path) exactly as a name that is not in
the registry, so a name taken from a client never reaches a path outside the tenant's folder.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from model_packager.durable import sync_file, sync_folder, write_atomically
from model_packager.manifest import (
    PACKAGE_NAME_RE,  # the package format's name rule: a safe folder name
    Manifest,
    version_key,
)

WITHDRAWN = "withdrawn"


# the registry ``cloud-trainer serve`` deploys from when given neither --registry nor --data (<data>/registry, its
# --data being var/cloud): the default of every command that publishes to a registry or reads it (build, evaluate,
# package, publish), so that what a build publishes with the defaults is what a service started with them deploys.
# The trainer's commands defaulted to var/registry, which no service read unless told
DEFAULT_REGISTRY = Path("var/cloud/registry")
FORMER_DEFAULT_REGISTRY = Path("var/registry")


def registry_note(given: Path, name: str | None = None) -> str | None:
    """A note for a command run with the default registry (``given``) while the trainer's former default
    (var/registry) holds packages named ``name`` and the default does not (``name`` None: any package): the
    user's packages are elsewhere, say where. Judged per name: a package of another name published to the default
    (docs/own-model.md) let a build of the one left in var/registry go on with no incumbent, its version afresh."""
    pattern = "*/index.json" if name is None else f"{name}/index.json"
    if given != DEFAULT_REGISTRY or not any(FORMER_DEFAULT_REGISTRY.glob(pattern)):
        return None
    if any(DEFAULT_REGISTRY.glob(pattern)):
        return None
    return (
        f"note: --registry defaults to {DEFAULT_REGISTRY} (the registry `cloud-trainer serve` deploys from by "
        f"default: <data>/registry); {FORMER_DEFAULT_REGISTRY}, the trainer's former default, holds packages: give "
        f"--registry {FORMER_DEFAULT_REGISTRY} (and serve --registry {FORMER_DEFAULT_REGISTRY}) to go on with it"
    )


def valid_package_name(name: object) -> bool:
    return isinstance(name, str) and PACKAGE_NAME_RE.fullmatch(name) is not None


class RegistryError(ValueError):
    pass


def _vkey(v: object) -> tuple:
    """Semantic version order, the agents' and the deployments' (``1.1.0-rc.1`` < ``1.1.0``): the
    numbers alone made a release candidate tie with its release, and ``latest`` gave whichever was
    published first. A version that is not semantic (never published: the manifest refuses it) sorts
    lowest."""
    try:
        return (1, version_key(v)) if isinstance(v, str) else (0, ())
    except ValueError:
        return (0, ())


log = logging.getLogger(__name__)
# a ``.VERSION.part`` folder not touched for this long was left by a publish killed while copying (a live one is
# written to as it copies, seconds to minutes); ``Registry.sweep_parts`` removes it
STALE_PART_S = 3600.0
RESERVED = (
    ".reserved"  # <name>/.<version>.reserved: a version a build chose and has not published (reserve_version)
)
# a reservation older than this was left by a build that never published it (its gate failed after all, it was
# killed, its work folder deleted): ``reserve_version`` removes it, so its number is chosen again. Far longer than any
# build between ``evaluate`` and ``publish`` (hours; a stage-by-stage build waiting on a person, days): a live one is
# never freed. Before, nothing removed them and every such number stayed unused for good
STALE_RESERVATION_S = 14 * 86400.0
WITHDRAWALS_KEPT = 1000  # packages' withdrawals kept read (``Registry.withdrawals``), of every tenant


class Registry:
    def __init__(self, root: str | Path, *, _withdrawn: dict | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # a package's index.json -> (its file's mark, {withdrawn version: the withdrawal's reason}) (``withdrawals``),
        # one cache for this registry and its tenants' (``for_tenant``)
        self._withdrawn: dict[Path, tuple[tuple, dict[str, str]]] = {} if _withdrawn is None else _withdrawn

    def for_tenant(self, tenant: str | None) -> Registry:
        """The registry of one tenant (this one for the default tenant)."""
        if tenant in (None, "", "default"):
            return self
        if tenant.startswith(".") or "/" in tenant or tenant != tenant.strip():
            raise RegistryError(f"tenant id {tenant!r} is not a valid tenant id")
        return Registry(self.root / ".tenants" / tenant, _withdrawn=self._withdrawn)

    def tenants(self) -> list[str]:
        """Tenants (other than the default one) that have a registry folder."""
        return sorted(p.name for p in (self.root / ".tenants").glob("*") if p.is_dir())

    def index_path(self, name: str) -> Path:
        """Package ``name``'s index (``<root>/<name>/index.json``; ``RegistryError`` for a name that is not a valid
        package name). Every change replaces the file whole (a new inode), so a reader may stat it to learn
        whether the package's versions changed since it last read them."""
        if not valid_package_name(name):
            raise RegistryError(
                f"package name {name[:80]!r}: use 1-63 lowercase letters, digits, '_' or '-', starting with a "
                "letter or digit"
            )
        return self.root / name / "index.json"

    def list(self, name: str) -> list[dict]:
        """The entries of package ``name``; [] for a name not in the registry, or not a valid package name.
        ``RegistryError`` for an index that is not a list of versions (edited by hand), ``ValueError`` for one
        that is not JSON: its readers failed with a ``TypeError`` or ``AttributeError`` each."""
        if not valid_package_name(name):
            return []
        p = self.index_path(name)
        try:
            entries = json.loads(p.read_text())
        except FileNotFoundError:
            return []
        if not isinstance(entries, builtins.list) or not all(isinstance(e, dict) for e in entries):
            what = (
                type(entries).__name__
                if not isinstance(entries, builtins.list)
                else "list holding a non-object"
            )
            raise RegistryError(f"{p}: not a list of versions (a JSON {what})")
        return entries

    def withdrawals(self, name: str) -> dict[str, str]:
        """version -> its withdrawal's reason, for package ``name``'s versions withdrawn (``withdraw``); {} for a
        package not in the registry. ``RegistryError`` for an index that is not a list of versions (edited by
        hand), ``OSError`` or ``ValueError`` for one that cannot be read. The index is read again only when its
        file changed (``index_path``: a change replaces it whole): the rollout tick (every second and after every
        report, under the control's lock) and the console's agents and deployments (every poll) ask it for each
        package, and an index of 20,000 versions (8 MB) took ~70 ms to read. The file's mark is taken from the file
        opened: a network file system's client (NFS, SMB: replicas sharing the registry) answers ``stat`` from
        attributes it keeps for up to a minute, and a withdrawal made on another host was missed that long; an open
        has it ask the server (close-to-open)."""
        if not valid_package_name(name):
            return {}
        path = self.index_path(name)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
        except FileNotFoundError:
            return {}
        mark = (st.st_ino, st.st_mtime_ns, st.st_size)
        seen = self._withdrawn.get(path)
        if seen is None or seen[0] != mark:
            gone = {
                str(e.get("version")): str(e.get("withdrawn_reason") or "no reason given")
                for e in self.list(name)
                if e.get("status") == WITHDRAWN
            }
            if len(self._withdrawn) >= WITHDRAWALS_KEPT:  # (the packages in use, far fewer)
                self._withdrawn.clear()
            seen = self._withdrawn[path] = (mark, gone)
        return dict(seen[1])

    def twins(self, name: str, version: str) -> builtins.list[str]:
        """The other published versions of ``name`` that order the same as ``version`` (``1.0.0+hotfix`` or
        ``01.0.0`` beside ``1.0.0``): pairs published before ``publish`` refused them, which agents and deployments
        take one for the other."""
        key = _vkey(version)
        return [
            str(e.get("version"))
            for e in self.list(name)
            if e.get("version") != version
            and e.get("status") == "published"
            and _vkey(e.get("version")) == key
        ]

    def names(self) -> builtins.list[str]:
        return sorted(
            p.parent.name for p in self.root.glob("*/index.json") if valid_package_name(p.parent.name)
        )

    def latest(self, name: str) -> dict | None:
        pub = [e for e in self.list(name) if e["status"] == "published"]
        return max(pub, key=lambda e: _vkey(e["version"])) if pub else None

    def get(self, name: str, version: str) -> dict | None:
        return next((e for e in self.list(name) if e["version"] == version), None)

    def package_path(self, entry: dict) -> Path:
        return self.root / entry["name"] / entry["version"] / entry["package"]

    def by_digest(self, digest: str, *, withdrawn: bool = True) -> Path | None:
        """The package file of ``digest``; ``withdrawn=False``: None for a withdrawn version (what agents may
        download)."""
        e = self.entry_by_digest(digest)
        if e is None or (not withdrawn and e.get("status") == WITHDRAWN):
            return None
        return self.package_path(e)

    def entry_by_digest(self, digest: str) -> dict | None:
        """The index entry of the version whose package has ``digest`` (withdrawn or not), or None. A package whose
        index cannot be read (edited by hand into something else than a list of versions) is skipped, logged:
        every download of the tenant (the fleet looks each one up here) failed as an internal error of the
        service while one package's index was so."""
        for name in self.names():
            try:
                entries = self.list(name)
            except (OSError, ValueError) as exc:  # (RegistryError is a ValueError)
                log.warning("registry %s: package %s skipped: %s", self.root, name, str(exc)[:300])
                continue
            for e in entries:
                if e.get("digest") == digest:
                    return e
        return None

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """Held while a change of package ``name`` reads and writes its index and folders (``.<name>.lock`` beside
        its folder, an ``flock``: other processes, and other threads of this one, wait). Two builds that published
        at once (both taking the same ``next_version``, or two versions of one model) made the index list a version
        whose folder the other had removed, list one version twice with the other's package in its folder (its
        digest not the file's), or lose a version it had said was published."""
        import fcntl

        self.index_path(name)  # a valid package name (else RegistryError): the lock's file name is safe
        self.root.mkdir(parents=True, exist_ok=True)
        lock = self.root / f".{name}.lock"
        while True:
            with open(lock, "a+b") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    held = os.path.samestat(os.stat(lock), os.fstat(f.fileno()))
                except FileNotFoundError:
                    held = False
                if not held:  # removed by the holder this one waited for (below): lock the name's new file
                    continue
                try:
                    yield
                finally:
                    # nothing of the name left (its first publish refused at the copy, or cut short by a full disk):
                    # its empty folder and the lock go, under the lock (a waiter that opened this file finds it gone,
                    # above); both were left for good
                    with contextlib.suppress(OSError):
                        (self.root / name).rmdir()  # (only an empty one)
                    if not (self.root / name).exists():
                        lock.unlink(missing_ok=True)
                return

    def withdraw(self, name: str, version: str, reason: str) -> dict:
        """Mark a version ``withdrawn`` (see the module's docstring); its entry, with the reason and when. A package
        the registry does not have is ``RegistryError`` before anything is written: taking the lock made its lock
        file (and the registry's folder), so a mistyped name or registry path left them behind."""
        if not self.index_path(name).is_file():
            raise RegistryError(
                f"{name[:80]} {version[:64]} is not in the registry {self.root}: it has no package {name[:80]!r}; "
                "nothing was withdrawn or created"
            )
        with self._locked(name):
            return self._withdraw(name, version, reason)

    def _withdraw(self, name: str, version: str, reason: str) -> dict:
        entries = self.list(name)
        entry = next((e for e in entries if e.get("version") == version), None)
        if entry is None:
            raise RegistryError(f"{name[:80]} {version[:64]} is not in the registry {self.root}")
        entry.update(
            status=WITHDRAWN,
            withdrawn_reason=reason,
            withdrawn_at=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        )
        self._write(name, entries)
        return entry

    def next_version(self, name: str, bump: str = "minor") -> str:
        """The version after every one of ``name`` published or reserved (``reserve_version``)."""
        taken = [e["version"] for e in self.list(name)] + self._reserved(name)
        if not taken:
            return "1.0.0"
        cores = [version_key(v)[:3] for v in taken if _vkey(v)[0]]
        major, minor, patch = max(cores, default=(0, 0, 0))
        return f"{major + 1}.0.0" if bump == "major" else f"{major}.{minor + 1}.0"

    def reserve_version(self, name: str, bump: str = "minor") -> str:
        """``next_version``, taken for one build under the package's lock (``_locked``): a build choosing one
        meanwhile gets the one after. Two builds that chose the same ``next_version`` both trained, evaluated and
        packaged it, and the one that published second failed then (``versions are immutable``). The reservation
        (``<name>/.<version>.reserved``) goes when the version is published; a build that never publishes it (its
        gate failed after all, it was stopped) leaves its number unused until its reservation is
        ``STALE_RESERVATION_S`` old, when the next reservation removes it and may choose that number again."""
        with self._locked(name):
            self._sweep_reservations(name)
            version = self.next_version(name, bump)
            folder = self.root / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f".{version}{RESERVED}").write_text(
                f"reserved by process {os.getpid()} at {dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()}\n"
            )
            return version

    def _sweep_reservations(self, name: str, older_than_s: float = STALE_RESERVATION_S) -> builtins.list[str]:
        """(Under the package's lock.) Remove the reservations of ``name`` not touched for ``older_than_s``, logged
        (INFO each, a WARNING with their count); returns their versions."""
        cutoff = time.time() - older_than_s
        removed = []
        for p in (self.root / name).glob(f".*{RESERVED}") if valid_package_name(name) else ():
            try:
                if p.is_file() and not p.is_symlink() and os.lstat(p).st_mtime < cutoff:
                    p.unlink()
                    removed.append(p.name[1 : -len(RESERVED)])
            except OSError:  # published and removed meanwhile, unreadable: left as it is
                continue
        if removed:
            log.warning(
                "%s: removed %d reservation(s) older than %g days that no build published (%s); their numbers "
                "are chosen again",
                name,
                len(removed),
                older_than_s / 86400,
                ", ".join(sorted(removed, key=_vkey)[:10]),
            )
        return removed

    def _reserved(self, name: str) -> builtins.list[str]:
        """The versions of ``name`` reserved and not yet published (``reserve_version``)."""
        if not valid_package_name(name):
            return []
        return [p.name[1 : -len(RESERVED)] for p in (self.root / name).glob(f".*{RESERVED}")]

    def sweep_parts(self, older_than_s: float = STALE_PART_S) -> builtins.list[Path]:
        """Remove the ``<name>/.<version>.part`` folders (this registry's and its tenants') whose folder and files
        were not touched for ``older_than_s``: a publish killed while copying left them, holding a package's
        space on the disk the fleet's samples and store share, until the same version was published again. A
        live publish's part (this process's, another build's, a replica's) is young and is kept. Each removed is
        logged, and their count with the first one as a warning (what a build, which sets no logging up, prints);
        returns them."""
        cutoff = time.time() - older_than_s
        removed = []
        for part in (*self.root.glob("*/.*.part"), *self.root.glob(".tenants/*/*/.*.part")):
            try:
                if not part.is_dir() or part.is_symlink():
                    continue
                touched = max(os.lstat(p).st_mtime for p in (part, *part.iterdir()))
            except OSError:  # renamed into place or removed meanwhile (a publish, another sweep), unreadable
                continue
            if touched < cutoff:
                shutil.rmtree(part, ignore_errors=True)
                removed.append(part)
                log.info(
                    "removed %s: a publish that was stopped while copying left it (untouched since %s)",
                    part,
                    dt.datetime.fromtimestamp(touched, dt.UTC).replace(microsecond=0).isoformat(),
                )
        if removed:  # a build prints warnings only (no logging set up): the space freed is said there too
            log.warning(
                "removed %d folder(s) that publishes stopped while copying left (%s%s)",
                len(removed),
                removed[0],
                f" and {len(removed) - 1} more" if len(removed) > 1 else "",
            )
        return removed

    def publish(
        self,
        pkg: Path,
        report_files: builtins.list[Path],
        metrics: dict,
        dataset_digest: str | None,
        parent_version: str | None,
        *,
        check: Callable[[Path], Manifest] | None = None,
    ) -> dict:
        """``check``: run on the registry's copy before it is published (``verify_package`` with the agents' keys),
        giving its manifest; what it raises leaves the registry as it was."""
        from model_packager import read_manifest

        m = read_manifest(pkg)
        self.sweep_parts()  # what publishes killed while copying left
        with self._locked(m.name):  # another publish of the model waits (``_locked``)
            return self._publish(m, pkg, report_files, metrics, dataset_digest, parent_version, check)

    def _publish(self, m, pkg, report_files, metrics, dataset_digest, parent_version, check=None) -> dict:
        from model_packager import package_digest
        from model_packager.manifest import leading_zero_problem
        from model_packager.package import build_refusal
        from model_packager.text import printable

        entries = self.list(m.name)
        if any(e["version"] == m.version for e in entries):
            raise RegistryError(f"{m.name} {m.version} is already in the registry; versions are immutable")
        if (why := leading_zero_problem(m.version)) is not None:  # (a package built before build refused it)
            raise RegistryError(f"{m.name} {m.version}: its manifest's version {why}; build it again")
        # (golden tolerances that pass any output: built before, or by hand)
        if (why := build_refusal(m)) is not None:
            raise RegistryError(f"{m.name} {m.version}: {why}; build it again")
        key = _vkey(m.version)
        same = next((e["version"] for e in entries if _vkey(e.get("version")) == key), None)
        if same is not None:
            # 1.0.0+hotfix, 01.0.0 beside 1.0.0: another model the agents and deployments order as the same version,
            # installed over it by a deploy (not an upgrade, not a rollback), and "the latest" either of them
            raise RegistryError(
                f"{m.name} {m.version} orders the same as {same}, already in the registry (build metadata after '+' "
                "and leading zeros do not order versions): agents would take one for the other; give it a version "
                "above the latest"
            )
        folder = self.root / m.name / m.version
        tmp = folder.with_name(f".{m.version}.part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            shutil.copy2(pkg, tmp / pkg.name)
            for f in report_files:
                if f.exists():
                    shutil.copy2(f, tmp / f.name)
            copy = tmp / pkg.name
            if check is not None:
                # the copy is what is published: the file given may have been replaced since it was read (checked
                # before the copy, the registry could hold a file nobody verified)
                got = check(copy)
                if (got.name, got.version) != (m.name, m.version):
                    raise RegistryError(
                        f"{printable(str(pkg), 300)} changed while it was published ({m.package_id} when read, "
                        f"{got.package_id} when "
                        "copied); nothing was published"
                    )
            digest = package_digest(copy)  # (of the copy: the file given may change again)
            # on the disk before the rename that publishes them: after a power cut the version's folder could
            # hold a zero-length or torn package that the index lists (the agents downloaded it and refused it)
            for f in tmp.iterdir():
                sync_file(f)
            sync_folder(tmp)
        except BaseException:
            # a full disk: the part copied would hold what was left of it (samples share it)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # a folder of this version the index does not name is a publish cut short after its rename (a full disk
        # for the index, the run killed): nothing was ever served from it, and it refused every publish again
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        sync_folder(folder.parent)
        sync_folder(self.root)  # (the name's folder, when this is its first version)
        entry = {
            "name": m.name,
            "version": m.version,
            "status": "published",
            "digest": digest,
            "metrics": metrics,
            "dataset_digest": dataset_digest,
            "parent_version": parent_version,
            "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "package": pkg.name,
            "report": "report.md",
            "task": m.task.value,
        }
        try:
            self._write(m.name, [*self.list(m.name), entry])
        except BaseException:  # not published (the index does not name it): its space is the disk's again
            shutil.rmtree(folder, ignore_errors=True)
            raise
        (folder.parent / f".{m.version}{RESERVED}").unlink(
            missing_ok=True
        )  # (published: listed in the index)
        return entry

    def set_status(self, name: str, version: str, status: str) -> None:
        with self._locked(name):
            entries = self.list(name)
            for e in entries:
                if e["version"] == version:
                    e["status"] = status
            self._write(name, entries)

    def _write(self, name: str, entries: builtins.list[dict]) -> None:
        p = self.index_path(name)
        write_atomically(p, json.dumps(entries, indent=1).encode(), p.with_suffix(".tmp"))


def main_withdraw(argv: list[str]) -> int:
    """``cloud-trainer withdraw``: mark a published version withdrawn (the fleet never sends it again)."""
    ap = argparse.ArgumentParser(
        prog="cloud-trainer withdraw",
        description="Withdraw a published model version (a known defect): the fleet no longer deploys it, rolls "
        "back to it or lets an agent download it. Agents running it keep it until given another version.",
    )
    ap.add_argument(
        "--registry", required=True, help="the registry folder (a tenant's: <registry>/.tenants/T)"
    )
    ap.add_argument("name")
    ap.add_argument("version")
    ap.add_argument("--reason", required=True, help="why, shown where the version is refused")
    a = ap.parse_args(argv)
    if not Path(a.registry).is_dir():  # a mistyped path: Registry() would make it, and the lock a file in it
        print(
            f"cloud-trainer withdraw: --registry {a.registry}: no such folder; nothing was withdrawn or created "
            "(give the registry's folder, as `cloud-trainer serve --registry` has it; a tenant's: <registry>/.tenants/T)",
            file=sys.stderr,
        )
        return 2
    try:
        e = Registry(a.registry).withdraw(a.name, a.version, a.reason)
    except RegistryError as exc:
        print(f"cloud-trainer withdraw: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the registry's disk full or read-only: the index is as it was, nothing withdrawn
        print(
            f"cloud-trainer withdraw: {a.name} {a.version} was NOT withdrawn: cannot write the registry's index "
            f"({exc.strerror or exc}: {exc.filename or a.registry}); the fleet may still deploy it",
            file=sys.stderr,
        )
        return 1
    print(
        f"withdrew {e['name']} {e['version']} ({e['digest'][:12]}): the fleet no longer deploys it, rolls back to "
        "it or serves its download; agents running it keep it until you deploy another version or roll back"
    )
    return 0


def main_publish(argv: list[str]) -> int:
    """``cloud-trainer publish``: a ``.edgepkg`` built elsewhere (``model-packager build``: a model brought from
    another tool) is verified and published (``publish_package``); a family name publishes the trainer's candidate
    (``cloud_trainer.train.cli``, its gate applies)."""
    if any(a.endswith(".edgepkg") for a in argv if not a.startswith("-")):
        return publish_package(argv)
    if "-h" in argv or "--help" in argv:
        print(
            "cloud-trainer publish PACKAGE.edgepkg --trust KEY.pub --registry DIR: publish a package built with "
            "`model-packager build`, verified first (`cloud-trainer publish x.edgepkg --help`). Or the trainer's "
            "candidate:\n"
        )
    from cloud_trainer.train.cli import main_publish as publish_candidate

    return int(publish_candidate(argv) or 0)


def publish_package(argv: list[str]) -> int:
    """Verify a package as an agent would before any byte is used (a trusted key's signature, every hash and size,
    no path escaping, no link, the graph against the manifest) and publish it: refused in one line naming the
    package and why, the registry untouched. Before, a package not made by ``cloud-trainer build`` had no way into
    the registry the fleet deploys from."""
    from model_packager import PackageError, load_trusted_keys, verify_package
    from model_packager.text import printable

    ap = argparse.ArgumentParser(
        prog="cloud-trainer publish",
        description="Publish a package built with `model-packager build` (a model brought from another tool) to "
        "the registry the fleet deploys from, after verifying it as an agent would. (`cloud-trainer publish "
        "vision|maintenance` publishes the trainer's candidate.)",
    )
    ap.add_argument("package", type=Path, help="the .edgepkg file")
    ap.add_argument(
        "--registry",
        type=Path,
        # serve's default registry, as the trainer's commands: a default of its own (var/registry) was not the one
        # `serve` deploys from (<data>/registry), and a package published there was never seen by the fleet
        default=DEFAULT_REGISTRY,
        help="the registry folder `cloud-trainer serve` deploys from (its --registry, default <data>/registry; "
        f"a tenant's: <registry>/.tenants/T); default {DEFAULT_REGISTRY}, serve's with its default --data",
    )
    ap.add_argument(
        "--trust",
        action="append",
        required=True,
        help="a public key (.pub) or folder of them that the agents trust (a tenant's: <pki>/tenants/T/signing.pub)",
    )
    a = ap.parse_args(argv)
    where = f"cloud-trainer publish: {printable(a.package, 300)}"
    if not a.registry.is_dir():  # a mistyped path: Registry() would make it, and the fleet would never see it
        if note := registry_note(a.registry):
            print(note, file=sys.stderr)
        print(
            f"{where}: --registry {printable(a.registry, 300)}: no such folder; nothing was published (give the "
            "folder `cloud-trainer serve` deploys from: its --registry, default <data>/registry)",
            file=sys.stderr,
        )
        return 2
    try:
        trusted = load_trusted_keys(a.trust)
        # its signature and structure: a package signed by a key not trusted, or whose entries escape it, leaves
        # the registry as it was. Every file's hash and the graph are checked once, on the registry's copy (below):
        # the file given was hashed whole twice, here and as that copy
        m = verify_package(a.package, trusted, hashes=False)
        if note := registry_note(a.registry, m.name):  # (the package's own name: its versions may be there)
            print(note, file=sys.stderr)
    except PackageError as exc:
        refused = exc.code not in ("not_found", "bad_key", "usage")
        said = "refused, nothing was published" if refused else "nothing was published"
        print(f"{where}: {said}: {printable(str(exc), 2000)}", file=sys.stderr)
        return 1 if refused else 2
    except OSError as exc:
        print(f"{where}: {printable(exc.strerror or exc)}; nothing was published", file=sys.stderr)
        return 2
    try:
        e = Registry(a.registry).publish(
            a.package,
            [],
            {},
            m.provenance.dataset_digest,
            m.provenance.parent_version,
            check=lambda copy: verify_package(copy, trusted),
        )
    except PackageError as exc:  # the registry's copy (the file replaced since it was verified)
        print(f"{where}: refused, nothing was published: {printable(str(exc), 2000)}", file=sys.stderr)
        return 1
    except RegistryError as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full or read-only disk: what was copied is removed (``_publish``)
        print(
            f"{where}: NOT published: {printable(exc.strerror or exc)} ({printable(exc.filename or a.registry)})",
            file=sys.stderr,
        )
        return 1
    print(
        f"published {e['name']} {e['version']} ({e['digest'][:12]}) to {a.registry}; roll it out with "
        f"`cloud-trainer deploy {e['name']} --version {e['version']} --slot SLOT --agent ID ...`"
    )
    return 0
