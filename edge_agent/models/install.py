"""Verify and extract model packages in a short-lived child process.

The agent serves models; it does not parse packages that come from outside. Installing one (the
Ed25519 signature with ``cryptography``, the strict tar reader, every hash and size, the manifest,
the ONNX graph against the manifest) runs in ``python -m edge_agent.models.install``, a child
started for the installs at hand (a first start, a swap) that exits when done:

- a package that crashes or stalls its parser (a bug in a C extension, a ``MemoryError``, a hang)
  takes down the child, not the agent: the install is refused with what happened, and the model
  that serves keeps serving;
- the agent never maps ``cryptography``/libcrypto's signature code (~7 MB resident) nor the modules
  only installing needs, for as long as it runs.

The child runs the same code as an in-process install (``ModelStore.install``: a ``.part`` folder
renamed into place only when every check passed) and prints one JSON line per package,
``{"ok": true, "folder": ..., "signer": ...}`` or ``{"ok": false, "error_type": ..., "code": ..., "error":
...}``; the parent then opens the verified folder as it does at every restart
(``ModelStore.reopen``). A child that dies, outlives ``timeout_s`` or prints nothing readable is a
refusal (``PackageError``, code ``verifier_failed``) that says so.

A new interpreter costs its start and the package format's imports (~0.3 s of one core before the three
measures below, ~0.2 s with them). So that a
first start does not wait for that, ``edge-agent run`` calls ``prefetch(cfg)`` as soon as the config
is read, before the agent has started a thread of its own: one child, a ``fork`` of the process at
that point (which has the package format's modules loaded already: ~0.05 s of one core), installs
every slot's local package that its store does not hold yet, while the agent loads its own modules;
each slot then takes its result (``install_isolated``). A swap, in a running agent with threads,
always starts a new interpreter (forking a threaded process is not safe).

    python -m edge_agent.models.install [--parent PID] [--key FILE_OR_DIR ...] STORE PACKAGE [STORE PACKAGE ...]
    python -m edge_agent.models.install --check [--parent PID] [--key FILE_OR_DIR ...] STORE FOLDER [...]

``--check`` verifies folders installed earlier again (a start does, before serving one:
``check_isolated``), with the same one-line JSON answers.

What a new interpreter's child does not spend (each measured on the 2-core Xeon, a package of the tests):
the garbage collector stays off while its modules load (pydantic's and the manifest's classes make
objects by the hundred thousand, and each collection walked them all; on again, with what was loaded
frozen, before any package is read), it ends with ``os._exit`` once its answers are written and flushed
(the interpreter's teardown of every module's objects served nothing), and it looks up no pydantic
plugins (``PYDANTIC_DISABLE_PLUGINS``, unless the environment sets it: the scan read the metadata of every
installed distribution, and a plugin observes validations, which nobody watches in this child). What it
checks is unchanged: the same code, the same pydantic validation of the manifest.
"""

from __future__ import annotations

import gc

if (
    __name__ == "__main__"
):  # a child (``python -m``): no collections while its modules load (see the docstring)
    gc.disable()

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from model_packager import OpenedPackage, errors
from model_packager.text import printable

TIMEOUT_S = 600.0  # a 2-GiB package hashes in well under a minute; a child past this is stuck
_KINDS = {
    c.__name__: c
    for c in (
        errors.PackageError,
        errors.SignatureError,
        errors.IntegrityError,
        errors.UnsafeArchiveError,
        errors.ManifestError,
        errors.SpecMismatchError,
        errors.GoldenError,
    )
}


class _Forked:
    """A fork of this process running ``main(argv)``, with the ``Popen`` calls ``InstallJob`` uses.
    Only for a process without threads of its own (the child has just the forking thread): see ``_may_fork``."""

    def __init__(self, argv: list[str]) -> None:
        for stream in (sys.stdout, sys.stderr):  # nothing buffered here is written twice
            stream.flush()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: answers on the pipe, never returns into the caller's code
            code = 70
            try:
                os.close(r)
                with os.fdopen(w, "w") as out:  # (not sys.stdout: a caller may have replaced it)
                    code = main(argv, out)
            finally:
                os._exit(code)
        os.close(w)
        self.pid, self._r = pid, r
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks = []
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._r], [], [], left)[0]:
                raise subprocess.TimeoutExpired("install (fork)", timeout or 0.0)  # the caller kills it
            chunk = os.read(self._r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(self._r)
        self._r = -1
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return b"".join(chunks), b""

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


class InstallJob:
    """One child process installing ``items`` (store folder, package) with the trusted ``key_files``;
    ``fork``: a fork of this process (see ``_Forked``) instead of a new interpreter; ``check``: the
    items are (store folder, installed folder name) to verify again (``ModelStore.verify``)."""

    def __init__(
        self,
        items: Sequence[tuple[Path, Path]],
        key_files: Sequence[str | Path],
        timeout_s: float = TIMEOUT_S,
        *,
        fork: bool = False,
        check: bool = False,
    ) -> None:
        self.items = [(Path(s), Path(p)) for s, p in items]
        self.key_files = [str(k) for k in key_files]
        self.timeout_s = timeout_s
        argv = ["--check"] if check else []
        argv += ["--parent", str(os.getpid())]  # the child ends with this process (see ``_end_with``)
        argv += [a for k in self.key_files for a in ("--key", k)]
        argv += [str(x) for item in self.items for x in item]
        self._proc: _Forked | subprocess.Popen = (
            _Forked(argv)
            if fork
            else subprocess.Popen(
                [sys.executable, "-m", "edge_agent.models.install", *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_child_env(),
            )
        )
        self._replies: list[dict | Exception] | None = None

    @property
    def done(self) -> bool:
        """Whether the child's answers were read."""
        return self._replies is not None

    def reply(self, store: Path, pkg: Path) -> dict:
        """The child's answer for ``pkg`` (waits for the child); raises ``PackageError`` when it failed."""
        if self._replies is None:
            self._replies = self._collect()
        got = self._replies[self.items.index((Path(store), Path(pkg)))]
        if isinstance(got, Exception):
            raise got
        return got

    def _collect(self) -> list[dict | Exception]:
        try:
            out, err = self._proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            why = f"took longer than {self.timeout_s:.0f} s (verifier process stopped)"
            return [_failed(pkg, why) for _, pkg in self.items]
        lines = out.decode(errors="replace").splitlines()
        rc = self._proc.returncode or 0  # (set: communicate() waited for the child)
        why = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
        tail = err.decode(errors="replace").strip().splitlines()
        why += f": {printable(tail[-1], 300)}" if tail else ": no output"
        replies: list[dict | Exception] = []
        for i, (_, pkg) in enumerate(self.items):  # a child that died part-way answered the first ones
            r = _parse(lines[i]) if i < len(lines) else None
            replies.append(r if r is not None else _failed(pkg, f"failed ({why})"))
        return replies

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        if not isinstance(self._proc, _Forked) or self._proc._r >= 0:
            self._proc.communicate()

    def abort(self) -> None:
        """Stop the child now, from any thread (the agent stops): the thread waiting in ``reply`` then
        gets a refusal ("killed by signal 9") at once instead of waiting up to ``timeout_s``."""
        try:
            if isinstance(self._proc, _Forked):  # no waitpid here: the waiting thread reaps it
                if self._proc.returncode is None:
                    os.kill(self._proc.pid, signal.SIGKILL)
            else:
                self._proc.kill()  # (Popen: a no-op once reaped)
        except OSError:  # already gone
            pass


def _end_with(parent: int) -> None:
    """Have the kernel kill this child when ``parent`` (the agent) ends, and end now if it already has.

    An agent killed (kill -9, the out-of-memory killer) left its child installing: it wrote into the slot's store
    after the restarted agent had started, a ``.part`` folder of up to the package's size that only the next
    start removed (a small disk then refused the next package, ``install_retry``), or a folder nothing named.
    Linux only (``PR_SET_PDEATHSIG``, sent when the thread that started the child ends: the agent starts it from
    the thread that waits for its answer, or its main thread); elsewhere the child runs to its end as before."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it ended before the line above took effect
        os._exit(70)


def _failed(pkg: Path, why: str) -> errors.PackageError:
    return errors.PackageError(
        f"package {printable(pkg.name)}: verifying it {why}; refused", code="verifier_failed"
    )


def _parse(line: str) -> dict | None:
    try:
        r = json.loads(line)
    except ValueError:
        return None
    return r if isinstance(r, dict) and ("folder" in r or "error" in r) else None


def _child_env() -> dict[str, str]:
    """The parent's environment, with the folder this package is imported from first on the path
    (the agent may run from a checkout that only its own ``sys.path`` names), without pydantic's plugins."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {
        "PYDANTIC_DISABLE_PLUGINS": "__all__",  # (the user's own setting, if any, wins: see the docstring)
        **os.environ,
        "PYTHONPATH": root + (os.pathsep + path if path else ""),
    }


_PREFETCHED: dict[tuple, InstallJob] = {}  # (store, package, keys) -> the job started for it by prefetch()


def _key(store: Path, pkg: Path, key_files: Sequence[str | Path]) -> tuple:
    return (
        str(Path(store).resolve()),
        str(Path(pkg).resolve()),
        tuple(str(Path(k).resolve()) for k in key_files),
    )


def prefetching(store_root: Path) -> bool:
    """Whether a child ``prefetch`` started works in ``store_root`` (whose ``.part`` folders are then its own)."""
    root = str(Path(store_root).resolve())
    return any(k[0] == root for k in _PREFETCHED)


# Libraries whose C code starts threads of its own, which ``threading`` does not count, and which do not make a
# fork safe for them: a fork of a process where gRPC has started its threads (a channel, a server) aborts in the
# child ("epoll_wait error: Bad file descriptor"); an ONNX Runtime or OpenVINO thread pool may hold a lock the
# child then waits on forever.
_UNFORKABLE = ("grpc", "onnxruntime", "openvino")


def _may_fork() -> bool:
    """Whether a fork of this process is safe: no other Python thread, and none of ``_UNFORKABLE`` imported (so
    none of their threads either; ``edge-agent run`` asks before it imports any of them)."""
    return (
        hasattr(os, "fork")
        and threading.active_count() == 1
        and not any(m in sys.modules for m in _UNFORKABLE)
    )


def prefetch(cfg, fork: bool | None = None) -> InstallJob | None:
    """Start installing, in one child, every local package whose slot's store holds no package yet
    (a first start), so that it runs while the agent loads; ``install_isolated`` takes the results.
    ``fork`` (default: when forking this process is safe, ``_may_fork``): see ``_Forked``."""
    from edge_agent.models.store import ModelStore

    keys = [str(cfg.path(k)) for k in cfg.trusted_keys]
    items = []
    for name, mc in cfg.models.items():
        pkg = cfg.path(mc.package) if mc.package else None
        if pkg is None or not pkg.is_file():
            continue
        store = ModelStore(cfg.data_dir / "models" / name)
        if store.current() is None:
            items.append((store.root, pkg))
    if not items:
        return None
    if fork is None:
        fork = _may_fork()
    try:
        job = InstallJob(items, keys, fork=fork)
    except OSError:  # each slot starts its own child and reports why it cannot
        return None
    for store_root, pkg in items:
        _PREFETCHED[_key(store_root, pkg, keys)] = job
    return job


def install_isolated(
    store,
    pkg: Path,
    key_files: Sequence[str | Path],
    *,
    meanwhile: Callable[[], None] | None = None,
    timeout_s: float = TIMEOUT_S,
    jobs: set[InstallJob] | None = None,
) -> OpenedPackage:
    """Install ``pkg`` into ``store`` (a ``ModelStore``) from a child process (the one ``prefetch``
    started for it, else a new one); the verified package. ``meanwhile`` runs here while the child
    works; ``jobs``: the job is in it while its child runs (so that a stopping slot can ``abort`` it).
    Raises ``PackageError`` (of the kind the child raised)."""
    job = _PREFETCHED.pop(_key(store.root, pkg, key_files), None)
    if job is None:
        job = InstallJob([(store.root, pkg)], key_files, timeout_s)
    if jobs is not None:
        jobs.add(job)
    try:
        if meanwhile is not None:
            meanwhile()
        reply = job.reply(store.root, pkg)
    finally:
        if jobs is not None:
            jobs.discard(job)
        if not job.done:  # an exception in ``meanwhile``: never leave the child behind
            job.kill()
    if not reply.get("ok"):
        cls = _KINDS.get(str(reply.get("error_type")), errors.PackageError)
        raise cls(printable(str(reply.get("error")), 2000), code=str(reply.get("code") or cls.code))
    opened = store.reopen(str(reply["folder"]), signer=str(reply.get("signer") or ""))
    if opened is None:
        raise errors.PackageError(
            f"package {printable(Path(pkg).name)}: verified, but its folder "
            f"{printable(str(reply['folder']))} cannot be read back; refused",
            code="verifier_failed",
        )
    return opened


def check_isolated(store, folder_name: str, key_files: Sequence[str | Path], *, timeout_s: float = TIMEOUT_S):
    """Verify the installed ``folder_name`` of ``store`` again (``ModelStore.verify``) in a child process
    (this one keeps out ``cryptography``); the verified package. Raises ``PackageError`` naming the file."""
    job = InstallJob([(store.root, Path(folder_name))], key_files, timeout_s, check=True)
    reply = job.reply(store.root, Path(folder_name))
    if not reply.get("ok"):
        cls = _KINDS.get(str(reply.get("error_type")), errors.PackageError)
        raise cls(printable(str(reply.get("error")), 2000), code=str(reply.get("code") or cls.code))
    opened = store.reopen(folder_name, signer=str(reply.get("signer") or ""))
    if opened is None:  # changed between the child's check and now
        raise errors.PackageError(
            f"package {printable(folder_name)}: verified, but cannot be read back", code="verifier_failed"
        )
    return opened


def _check_one(store: Path, folder: str, trusted) -> dict:
    from edge_agent.models.store import ModelStore

    return _reply(
        lambda: ModelStore(store, clean=False).verify(folder, trusted),
        printable(folder),
        "IntegrityError",
        "",
    )


def _install_one(store: Path, pkg: Path, trusted) -> dict:
    from edge_agent.models.store import ModelStore

    return _reply(
        lambda: ModelStore(store, clean=False).install(pkg, trusted),
        printable(pkg.name),
        "PackageError",
        "; refused",
    )


def _reply(work, label: str, unreadable_type: str, tail: str) -> dict:
    """The child's answer for one package: its folder and signer, or the refusal with its reason (an
    unreadable file, or a parser bug, is a refusal too, never a crash of the child)."""
    try:
        opened = work()
        return {"ok": True, "folder": opened.root.name, "signer": opened.signer}
    except errors.PackageError as exc:
        return {"ok": False, "error_type": type(exc).__name__, "code": exc.code, "error": str(exc)}
    except OSError as exc:
        from edge_agent.models.store import NO_SPACE, no_space

        if no_space(exc):  # the disk is full: tried again later, never a refusal of the package
            return {
                "ok": False,
                "error_type": "PackageError",
                "code": NO_SPACE,
                "error": f"package {label}: the disk is full ({printable(exc.strerror or exc)}); "
                "it is installed once there is room (free some space)",
            }
        return {
            "ok": False,
            "error_type": unreadable_type,
            "code": "unreadable",
            "error": f"package {label}: cannot read it ({printable(exc.strerror or exc)}){tail}",
        }
    except Exception as exc:  # a parser bug: a refusal with its reason, like any bad package
        return {
            "ok": False,
            "error_type": "PackageError",
            "code": "verifier_failed",
            "error": f"package {label}: unexpected {type(exc).__name__} while verifying it: {printable(exc)}{tail}",
        }


def main(argv: list[str] | None = None, out=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m edge_agent.models.install",
        description="verify model packages and extract each into a slot's store",
    )
    ap.add_argument(
        "--key", action="append", default=[], help="a trusted public key, or a folder of .pub files"
    )
    ap.add_argument(
        "--check",
        action="store_true",
        help="each pair is a STORE and the name of a folder installed there: verify it again",
    )
    ap.add_argument(
        "--parent", type=int, default=None, help="end when the process of this id (the agent) ends"
    )
    ap.add_argument(
        "pairs",
        nargs="+",
        metavar="STORE PACKAGE",
        help="a slot's folder (<data_dir>/models/<slot>) and the package to install into it",
    )
    a = ap.parse_args(argv)
    if len(a.pairs) % 2:
        ap.error("give a STORE folder and a PACKAGE for each install")
    if a.parent is not None:
        _end_with(a.parent)
    from model_packager import load_trusted_keys

    trusted, bad_key = None, None
    try:
        trusted = load_trusted_keys(a.key)
    except errors.PackageError as exc:  # a bad key file: every install is refused with its reason
        bad_key = exc
    status = 0
    for store, pkg in zip(a.pairs[::2], a.pairs[1::2], strict=True):
        if bad_key is not None:
            reply = {
                "ok": False,
                "error_type": type(bad_key).__name__,
                "code": bad_key.code,
                "error": str(bad_key),
            }
        elif a.check:
            reply = _check_one(Path(store), pkg, trusted)
        else:
            reply = _install_one(Path(store), Path(pkg), trusted)
        print(json.dumps(reply), file=out or sys.stdout, flush=True)
        status |= not reply["ok"]
    return status


if __name__ == "__main__":
    gc.freeze()  # what the imports made stays out of every collection the install's own work triggers
    gc.enable()
    status = main()
    sys.stdout.flush()  # the answers, before an exit that flushes nothing
    sys.stderr.flush()
    os._exit(status)  # no teardown of the interpreter's objects (see the docstring)
