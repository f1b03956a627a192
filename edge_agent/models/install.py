"""Verify and extract a model package in a short-lived child process.

The agent serves models; it does not parse packages that come from outside. Installing one (the
Ed25519 signature with ``cryptography``, the strict tar reader, every hash and size, the manifest,
the ONNX graph against the manifest) runs in ``python -m edge_agent.models.install``, a child
started for each install (at a first start and on each swap) that exits when done:

- a package that crashes or stalls its parser (a bug in a C extension, a ``MemoryError``, a hang)
  takes down the child, not the agent: the install is refused with what happened, and the model
  that serves keeps serving;
- the agent never maps ``cryptography``/libcrypto's signature code (~7 MB resident) nor the modules
  only installing needs, for as long as it runs.

The child runs the same code as an in-process install (``ModelStore.install``: a ``.part`` folder
renamed into place only when every check passed) and prints one JSON line, ``{"ok": true, "folder":
..., "signer": ...}`` or ``{"ok": false, "kind": ..., "code": ..., "error": ...}``; the parent then
opens the verified folder as it does at every restart (``ModelStore.reopen``). A child that dies,
outlives ``timeout_s`` or prints nothing readable is a refusal (``PackageError``, code
``verifier_failed``) that says so. Costs: one interpreter start and the package format's imports
(~0.3 s of one core), which the slot overlaps with loading its engine library.

    python -m edge_agent.models.install --store DIR [--key FILE_OR_DIR ...] PACKAGE
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from model_packager import OpenedPackage, errors
from model_packager.text import printable

TIMEOUT_S = 600.0  # a 2-GiB package hashes in well under a minute; a child past this is stuck
_KINDS = {c.__name__: c for c in (errors.PackageError, errors.SignatureError, errors.IntegrityError,
                                  errors.UnsafeArchiveError, errors.ManifestError, errors.SpecMismatchError,
                                  errors.GoldenError)}


def _child_env() -> dict[str, str]:
    """The parent's environment, with the folder this package is imported from first on the path
    (the agent may run from a checkout that only its own ``sys.path`` names)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def install_isolated(store, pkg: Path, key_files: Sequence[str | Path], *,
                     meanwhile: Callable[[], None] | None = None, timeout_s: float = TIMEOUT_S) -> OpenedPackage:
    """Install ``pkg`` into ``store`` (a ``ModelStore``) from a child process; the verified package.
    ``meanwhile`` runs here while the child works. Raises ``PackageError`` (of the child's kind)."""
    label = printable(Path(pkg).name)
    cmd = [sys.executable, "-m", "edge_agent.models.install", "--store", str(store.root)]
    for k in key_files:
        cmd += ["--key", str(k)]
    cmd.append(str(pkg))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_child_env())
    try:
        if meanwhile is not None:
            meanwhile()
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise errors.PackageError(f"package {label}: verifying it took longer than {timeout_s:.0f} s (verifier "
                                  "process stopped); refused", code="verifier_failed") from None
    finally:
        if proc.poll() is None:  # an exception in ``meanwhile``: never leave the child behind
            proc.kill()
            proc.wait()
    reply = _reply(out)
    if reply is None:
        why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        tail = printable(err.decode(errors="replace").strip().splitlines()[-1], 300) if err.strip() else "no output"
        raise errors.PackageError(f"package {label}: the verifier process failed ({why}: {tail}); refused",
                                  code="verifier_failed")
    if not reply.get("ok"):
        cls = _KINDS.get(str(reply.get("kind")), errors.PackageError)
        raise cls(printable(str(reply.get("error")), 2000), code=str(reply.get("code") or cls.code))
    opened = store.reopen(str(reply["folder"]), signer=str(reply.get("signer") or ""))
    if opened is None:
        raise errors.PackageError(f"package {label}: verified, but its folder {printable(str(reply['folder']))} "
                                  "cannot be read back; refused", code="verifier_failed")
    return opened


def _reply(out: bytes) -> dict | None:
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        reply = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return reply if isinstance(reply, dict) and ("folder" in reply or "error" in reply) else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_agent.models.install",
                                 description="verify a model package and extract it into a slot's store")
    ap.add_argument("--store", required=True, type=Path, help="the slot's folder (<data_dir>/models/<slot>)")
    ap.add_argument("--key", action="append", default=[], help="a trusted public key, or a folder of .pub files")
    ap.add_argument("package", type=Path)
    a = ap.parse_args(argv)
    from edge_agent.models.store import ModelStore
    from model_packager import load_trusted_keys

    try:
        opened = ModelStore(a.store, clean=False).install(a.package, load_trusted_keys(a.key))
        reply = {"ok": True, "folder": opened.root.name, "signer": opened.signer}
    except errors.PackageError as exc:
        reply = {"ok": False, "kind": type(exc).__name__, "code": exc.code, "error": str(exc)}
    except Exception as exc:  # a parser bug: a refusal with its reason, like any bad package
        reply = {"ok": False, "kind": "PackageError", "code": "verifier_failed",
                 "error": f"package {printable(a.package.name)}: unexpected {type(exc).__name__} while verifying "
                          f"it: {printable(exc)}; refused"}
    print(json.dumps(reply), flush=True)
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
