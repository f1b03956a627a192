"""The model registry: published packages with their evaluation reports, one folder per version.

    <root>/<name>/index.json                 [{version, status, digest, metrics, dataset_digest,
                                               parent_version, created_at, package, report}, ...]
    <root>/<name>/<version>/<name>-<version>.edgepkg, report.json, report.md, *.png

Only candidates that passed the evaluation gate are published; a rejected candidate leaves the
registry unchanged (its report stays in the build's work folder). ``index.json`` is replaced
atomically. Packages are also addressable by SHA-256 digest (what agents download by).

Tenants: the default tenant's registry is ``<root>`` itself (the layout above, unchanged); tenant
``acme``'s is ``<root>/.tenants/acme/`` with the same layout (a package name never starts with '.', so
the two never meet). ``for_tenant()`` gives the registry a tenant's admins and agents see: a name or
digest of another tenant is simply not in it.

Names: a package name is what the package format allows (``PACKAGE_NAME_RE``, the manifest's and the
agent's rule: lowercase letters, digits, '_' and '-', at most 63). ``list``/``get``/``latest`` answer a
name outside it (``../beta/x``, ``.tenants/beta/x``, an absolute path) exactly as a name that is not in
the registry, so a name taken from a client never reaches a path outside the tenant's folder.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import os
import shutil
from pathlib import Path

from model_packager.manifest import (
    PACKAGE_NAME_RE,  # the package format's name rule: a safe folder name
    version_key,
)


def valid_package_name(name: object) -> bool:
    return isinstance(name, str) and PACKAGE_NAME_RE.fullmatch(name) is not None


class RegistryError(ValueError):
    pass


def _vkey(v: str) -> tuple:
    """Semantic version order, the agents' and the deployments' (``1.1.0-rc.1`` < ``1.1.0``): the
    numbers alone made a release candidate tie with its release, and ``latest`` gave whichever was
    published first. A version that is not semantic (never published: the manifest refuses it) sorts
    lowest."""
    try:
        return (1, version_key(v))
    except ValueError:
        return (0, ())


class Registry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def for_tenant(self, tenant: str | None) -> Registry:
        """The registry of one tenant (this one for the default tenant)."""
        if tenant in (None, "", "default"):
            return self
        if tenant.startswith(".") or "/" in tenant or tenant != tenant.strip():
            raise RegistryError(f"tenant id {tenant!r} is not a valid tenant id")
        return Registry(self.root / ".tenants" / tenant)

    def tenants(self) -> list[str]:
        """Tenants (other than the default one) that have a registry folder."""
        return sorted(p.name for p in (self.root / ".tenants").glob("*") if p.is_dir())

    def _index_path(self, name: str) -> Path:
        if not valid_package_name(name):
            raise RegistryError(
                f"package name {name[:80]!r}: use 1-63 lowercase letters, digits, '_' or '-', starting with a "
                "letter or digit"
            )
        return self.root / name / "index.json"

    def list(self, name: str) -> list[dict]:
        """The entries of package ``name``; [] for a name not in the registry, or not a valid package name."""
        if not valid_package_name(name):
            return []
        p = self._index_path(name)
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            return []

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

    def by_digest(self, digest: str) -> Path | None:
        for name in self.names():
            for e in self.list(name):
                if e.get("digest") == digest:
                    return self.package_path(e)
        return None

    def next_version(self, name: str, bump: str = "minor") -> str:
        entries = self.list(name)
        if not entries:
            return "1.0.0"
        cores = [version_key(e["version"])[:3] for e in entries if _vkey(e["version"])[0]]
        major, minor, patch = max(cores, default=(0, 0, 0))
        return f"{major + 1}.0.0" if bump == "major" else f"{major}.{minor + 1}.0"

    def publish(
        self,
        pkg: Path,
        report_files: builtins.list[Path],
        metrics: dict,
        dataset_digest: str | None,
        parent_version: str | None,
    ) -> dict:
        from model_packager import package_digest, read_manifest

        m = read_manifest(pkg)
        if self.get(m.name, m.version):
            raise RegistryError(f"{m.name} {m.version} is already in the registry; versions are immutable")
        folder = self.root / m.name / m.version
        tmp = folder.with_name(f".{m.version}.part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shutil.copy2(pkg, tmp / pkg.name)
        for f in report_files:
            if f.exists():
                shutil.copy2(f, tmp / f.name)
        os.replace(tmp, folder)
        entry = {
            "name": m.name,
            "version": m.version,
            "status": "published",
            "digest": package_digest(pkg),
            "metrics": metrics,
            "dataset_digest": dataset_digest,
            "parent_version": parent_version,
            "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "package": pkg.name,
            "report": "report.md",
            "task": m.task.value,
        }
        self._write(m.name, [*self.list(m.name), entry])
        return entry

    def set_status(self, name: str, version: str, status: str) -> None:
        entries = self.list(name)
        for e in entries:
            if e["version"] == version:
                e["status"] = status
        self._write(name, entries)

    def _write(self, name: str, entries: builtins.list[dict]) -> None:
        p = self._index_path(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, p)
