"""Process supervision for the one-machine loop: start each part as its own process, wait until
it listens, narrate with timestamps, and always tear everything down.

Used by ``simulators/demo.py``; kept free of any project import so the demo's orchestration
does not depend on the agent or cloud internals (it drives them through their CLIs).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
SERVICE_PORTS = (10000, 65535)  # above the well-known and most registered service ports


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range (bind to port 0, and connect()'s local ports); Linux's default if unknown."""
    try:
        lo, hi = (int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return lo, hi


def service_port(
    ephemeral: tuple[int, int] | None = None, span: tuple[int, int] = SERVICE_PORTS, tries: int = 500
) -> int:
    """A free loopback port outside the kernel's ephemeral range, for a service that stops and starts again.

    A port from ``free_port()`` comes from the ephemeral range: while its service is down (the demo's cloud
    "link cut"), any process binding port 0 or opening a connection (an agent retrying the cloud, a test run
    beside the demo) may be handed that very port, and the service cannot come back on it. A port outside the
    range is never handed out by the kernel; only a program asking for it by number can take it."""
    import random

    lo, hi = ephemeral or ephemeral_range()
    ports = [p for p in range(max(span[0], 1024), span[1] + 1) if not lo <= p <= hi]
    for port in random.sample(ports, min(tries, len(ports))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:  # no SO_REUSEADDR: a port still in TIME_WAIT from an earlier connection counts as taken
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(
        f"no free port in {span[0]}-{span[1]} outside the kernel's ephemeral range {lo}-{hi} "
        f"({EPHEMERAL_RANGE_FILE}); narrow that range to leave some"
    )


def wait_port(
    port: int, timeout_s: float = 30.0, proc: subprocess.Popen | None = None, name: str = ""
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{name or 'process'} exited with code {proc.returncode} before listening on {port}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{name or 'process'}: nothing listens on 127.0.0.1:{port} after {timeout_s:.0f}s")


def write_port_file(path: Path, **ports: int) -> None:
    """Say which ports a server got (``port=...``), once it listens on them: written whole or not at all, so that
    whoever waits for the file never reads half of it. A server given port 0 is handed a free one by the kernel
    as it binds: nothing can take that port between its choice and the bind, as it could a port chosen by the
    program that starts the server."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(ports))
    os.replace(tmp, path)


def remove_port_file(path: Path, **ports: int) -> None:
    """At a clean stop, remove the port file ``write_port_file(path, **ports)`` wrote: a file left behind names a
    port nothing listens on any more (or, later, another program's). Left alone when it names other ports (a
    restart of the same server wrote its own since)."""
    if read_port_file(path) == ports:
        path.unlink(missing_ok=True)


def port_file_unwritable(path: Path) -> str | None:
    """Why ``write_port_file`` could not write ``path`` (e.g. its folder is missing); None if it can: checked before
    the server binds, so that a wrong ``--port-file`` is one line, not a traceback after the server listens."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.touch()
        tmp.unlink()
    except OSError as e:
        return e.strerror or str(e)
    return None


def read_port_file(path: Path) -> dict[str, int] | None:
    """The ports in a file ``write_port_file`` wrote; None while it is not there."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on TCP ``port`` of 127.0.0.1 or any address (from /proc/net/tcp*); None where
    there is no /proc."""
    found: set[str] = set()
    seen = False
    for table_file in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table_file).read_text().splitlines()[1:]
        except OSError:
            continue
        seen = True
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                found.add(f[9])
    return found if seen else None


def listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` itself holds a socket listening on ``port``: another program answering on that
    port (one that took it before ours could bind it) is not ours. None where /proc cannot tell (then only a
    connection can)."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None if not Path("/proc/self/fd").exists() else False
    for fd in fds:
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    return False


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_listening(starting: Sequence[tuple[int | Path, Proc, str]], timeout_s: float) -> list[int]:
    """Wait until every process in ``starting`` (port or port file, process, what) listens, watching them all at
    once; return their ports in that order.

    A port file (``write_port_file``) is written by the process once it listens, on the port it was given or was
    handed for port 0. A port is ready once the process itself listens on it (``listens_on``): another program
    that took it first answers on it too, but is not ours. The first to exit is named at once, with its exit code
    and the last lines of its log, whichever is still starting ahead of it; at the deadline every process not yet
    listening is named."""
    deadline = time.monotonic() + timeout_s
    got: dict[int, int] = {}
    while True:
        for i, (where, proc, what) in enumerate(starting):
            if i in got:
                continue
            if isinstance(where, Path):
                ports = read_port_file(where)
                if ports is not None:
                    got[i] = int(ports["port"])
                    continue
            else:
                pid = proc.popen.pid if proc.popen is not None else None
                ours = listens_on(pid, where) if pid is not None else None
                if ours or (ours is None and _answers(where)):
                    got[i] = where
                    continue
            if proc.popen is not None and proc.popen.poll() is not None:
                on = f"listening on {where}" if isinstance(where, int) else f"writing {where}"
                raise RuntimeError(
                    f"{what} exited with code {proc.popen.returncode} before {on}; "
                    f"last lines of {proc.log}:\n{proc.tail()}"
                )
        if len(got) == len(starting):
            return [got[i] for i in range(len(starting))]
        if time.monotonic() >= deadline:
            names = ", ".join(
                f"{what} ({f'127.0.0.1:{w}' if isinstance(w, int) else f'no {w}'})"
                for i, (w, _, what) in enumerate(starting)
                if i not in got
            )
            raise TimeoutError(f"nothing listens after {timeout_s:.0f}s for: {names}")
        time.sleep(0.1)


def ensure_running(procs: list[tuple[int, Proc, str]]) -> None:
    """Fail naming any of these processes that is no longer running, though it listened on its port itself
    (``wait_listening``): it exited (crashed, was killed) since; its exit code and the last lines of its log say
    why."""
    for port, proc, what in procs:
        if not proc.running:
            code = proc.popen.returncode if proc.popen is not None else None
            raise RuntimeError(
                f"{what} exited with code {code} after it listened on 127.0.0.1:{port}; "
                f"last lines of {proc.log}:\n{proc.tail()}"
            )


class Narrator:
    def __init__(self, stream=None) -> None:
        self.t0 = time.monotonic()
        self.stream = stream or sys.stdout
        self.step_no = 0

    def _stamp(self) -> str:
        return f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - self.t0:6.1f}s]"

    def step(self, text: str) -> None:
        self.step_no += 1
        print(f"\n{self._stamp()} == {self.step_no}. {text}", file=self.stream, flush=True)

    def say(self, text: str) -> None:
        print(f"{self._stamp()}    {text}", file=self.stream, flush=True)


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.popen = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout_s: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        if not self.popen:
            return None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Supervisor:
    """Owns every process of the demo; ``close()`` stops them in reverse start order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, self.workdir / "logs" / f"{name}.log", env=env or {}).start()
        self.procs.append(proc)
        return proc

    def run(self, name: str, argv: list[str], timeout_s: float = 600) -> str:
        """Run a command to completion; its output goes to the log; raise with the tail on failure."""
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            rc = subprocess.call(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        text = log.read_text(errors="replace")
        if rc != 0:
            tail = "\n".join(text.splitlines()[-25:])
            raise RuntimeError(f"{name} failed (exit {rc}); last lines of {log}:\n{tail}")
        return text

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


def ensure_mosquitto(narrator: Narrator) -> str:
    """Install Mosquitto with apt-get when missing (sudo when not root), saying so."""
    binary = mosquitto_binary()
    if binary:
        return binary
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    narrator.say(f"Mosquitto is missing: installing it with {' '.join(sudo + ['apt-get'])} (mosquitto)")
    subprocess.check_call(sudo + ["apt-get", "update", "-qq"])
    subprocess.check_call(
        sudo + ["apt-get", "install", "-y", "-qq", "mosquitto"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    binary = mosquitto_binary()
    if not binary:
        raise RuntimeError("apt-get installed mosquitto but no mosquitto binary was found")
    return binary


def start_mosquitto(sup: Supervisor, narrator: Narrator, timeout_s: float = 10.0) -> int:
    """Mosquitto on a port outside the ephemeral range (it cannot be given port 0 and say which it got); ready once
    Mosquitto itself listens there (another program that took the port first is not taken for it)."""
    binary = ensure_mosquitto(narrator)
    port = service_port()
    conf = sup.workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
    )
    proc = sup.start("mosquitto", [binary, "-c", str(conf)])
    wait_listening([(port, proc, "mosquitto")], timeout_s)
    return port


def table(rows: list[tuple], headers: tuple) -> str:
    cells = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |", line]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    out.append(line)
    return "\n".join(out)
