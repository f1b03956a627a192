"""Who serves a fleet port: replicas of one store may share it, a service of another store may not.

With ``SO_REUSEPORT`` (``cloud-trainer serve --replicas``) several processes listen on one TCP port and the kernel
spreads the agents' connections over them. That is right for replicas of one store, and wrong for a second
service started on the same port with *another* store (another data folder, SQLite file or database): the kernel
would send half of the fleet's records and rollouts to a store nobody looks at. So every fleet service
announces itself, before it binds its port, as a listening Linux abstract-namespace unix socket named
``@cloud-trainer-fleet/<port>/<pid>.<n>`` that answers each connection with one JSON line: the store's
identity, how to show it (a path, or a URL without its password), the address it listens on and the process.
A service starting on that port reads the live announcements (``/proc/net/unix``), asks each, and is refused
(``PortTaken``) when one serves another store on an address that overlaps its own; a replica of the same store
goes on. Two distinct addresses of the machine (``--host 10.0.0.1`` and ``--host 10.0.0.2``) never take each
other's connections: a service of another store on the other one is no conflict (``overlaps``); the wildcard
(``0.0.0.0``, ``::``) overlaps every address. Addresses are compared as values, names resolved first: an
IPv4-mapped IPv6 address is its IPv4 address (an IPv6 listener on ``[::ffff:127.0.0.1]`` takes 127.0.0.1's
connections), ``0:0:0:0:0:0:0:1`` is ``::1``, and ``localhost`` is what it resolves to.

Why abstract sockets rather than a lock file: the kernel removes an abstract name when the last descriptor
on it closes, including when the process is killed with SIGKILL or crashes, so an announcement can never be
stale (a lock file left by ``kill -9`` either blocks every later start or has to be guessed stale from a
pid that may have been reused). Abstract names live in the network namespace, exactly the scope of the TCP
port they guard, whereas a lock file's folder can differ between two processes that share the port
(systemd's ``PrivateTmp=``, another user's ``$XDG_RUNTIME_DIR``). Nothing travels beyond the machine: no
TCP, no file. Starts are serialized per port by one more abstract name (``…/<port>/claim``, held for the
few milliseconds of the check and the announcement), so that two services of different stores started
at the same instant cannot both find the port free.

Limits: Linux only (elsewhere the check is skipped, and grpc does not set ``SO_REUSEPORT`` anyway);
services in other network namespaces (containers) have their own ports and names; PostgreSQL URLs are
compared by user, host, port and database as written (``localhost`` and ``127.0.0.1`` are two spellings,
refused as two stores: spell the store the same way in every replica); a process that does not answer
within ``ASK_TIMEOUT_S`` (stopped, hung, its backlog full) is taken as another store, since nothing proves it
is not, and is named by the pid the kernel gives for the socket (``SO_PEERCRED``) where it can, not the one in
its name. Anyone on the machine can bind such a name: a silent one blocks starts on its port until it is gone.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import ipaddress
import itertools
import json
import logging
import os
import re
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PREFIX = "cloud-trainer-fleet"
ASK_TIMEOUT_S = (
    2.0  # an announcement that does not answer in this long is another store (nothing proves otherwise)
)
CLAIM_WAIT_S = 10.0  # another start holding the claim longer than this is stuck: check without it
_numbers = itertools.count()


class PortTaken(Exception):
    """The port is served by a fleet service of another store (or one that does not say which)."""


def store_identity(store: str | None, data: Path) -> tuple[str, str]:
    """(key, shown) of the store ``open_store(store, data)`` opens: equal keys are the same store.

    SQLite: the real path of ``<data>/fleet.db`` (symlinks and relative paths resolved). PostgreSQL: user,
    host, port and database of the URL (libpq's defaults filled in), shown without the password."""
    if store and store.startswith(("postgresql://", "postgres://")):
        u = urlsplit(store)
        q = dict(parse_qsl(u.query))
        user = q.get("user") or unquote(u.username or "") or os.environ.get("PGUSER") or getpass.getuser()
        host = (q.get("host") or unquote(u.hostname or "") or os.environ.get("PGHOST") or "/tmp").lower()
        port = q.get("port") or (str(u.port) if u.port else "") or os.environ.get("PGPORT") or "5432"
        db = q.get("dbname") or unquote(u.path.lstrip("/")) or os.environ.get("PGDATABASE") or user
        shown = f"postgresql://{user}@{u.hostname or host}{f':{u.port}' if u.port else ''}/{db}"
        return f"postgresql://{user}@{host}:{port}/{db}", shown
    path = os.path.realpath(Path(data) / "fleet.db")
    return f"sqlite:{path}", path


def in_use(host: str, port: int, replicas: bool) -> bool:
    """Whether binding ``host:port`` as grpc would (SO_REUSEADDR, SO_REUSEPORT with replicas) fails: it is in use.

    Asked before grpc binds, so that a refusal is our one line, not grpc's own error log line before it."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # grpc's spelling of an IPv6 address ("[::]"), which getaddrinfo does not take
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return False  # grpc says what is wrong with the address
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if replicas and hasattr(socket, "SO_REUSEPORT"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                s.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def cannot_bind(host: str, port: int, replicas: bool, own: Announcement | None = None) -> str:
    """Why ``host:port`` could not be bound, naming the fleet service that holds it when it is one of ours."""
    mine = own.name if own is not None else None
    addresses = _listening_addresses(host)
    ours = [
        a
        for a in (ask(n) for n in announced(port) if n != mine)
        if a is not None and a.get("key") is not None and _overlap(addresses, a.get("host"))
    ]
    if ours:
        pids = ", ".join(sorted({str(a.get("pid")) for a in ours}))
        return (
            f"port {port} is already served by a fleet service of the same store, {ours[0].get('store')} "
            f"(pid {pids}), "
            + (
                "started without --replicas: stop it, or start every replica with --replicas"
                if replicas
                else "and this one was not started with --replicas: replicas of one store share a port "
                "only when every one of them is started with --replicas; otherwise use another --port"
            )
        )
    return (
        f"cannot listen on {host}:{port}: the port is in use by another program, or {host} is not an "
        "address of this machine; choose another --port or --host"
    )


def _listening_addresses(host: str | None) -> set[IPAddress] | None:
    """The IP addresses a listener on ``host`` (as grpc takes it: a name, an address, ``[v6]``) takes
    connections on, as address values (``::ffff:127.0.0.1`` is 127.0.0.1, ``0:0:0:0:0:0:0:1`` is ``::1``); None
    where that is every address (the wildcard, ``::ffff:0.0.0.0`` too) or unknown (empty, not resolved)."""
    if not host:
        return None
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return None
    ips: set[IPAddress] = set()
    for info in infos:
        try:
            ip: IPAddress = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        except ValueError:
            return None  # not an address we can compare: it may be any
        # an IPv6 socket on an IPv4-mapped address takes that IPv4 address's connections (and binds beside
        # an IPv4 listener on it with SO_REUSEPORT): the same address, written as text otherwise
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        ips.add(ip)
    if not ips or any(ip.is_unspecified for ip in ips):
        return None
    return ips


def overlaps(host: str | None, other: str | None) -> bool:
    """Whether listeners on ``host`` and ``other`` (one port) can take the same connections: unless both are
    known addresses of which none is the other's (127.0.0.1 and 127.0.0.2), they may (the wildcard, a name
    resolving to both, an announcement that does not say its address). Addresses are compared as values, each
    name resolved once: ``::ffff:127.0.0.1``, ``127.0.0.1`` and ``localhost`` are one address."""
    return _overlap(_listening_addresses(host), other)


def _overlap(mine: set[IPAddress] | None, other: str | None) -> bool:
    theirs = _listening_addresses(other)
    return mine is None or theirs is None or bool(mine & theirs)


def _address(name: str) -> bytes:
    return b"\0" + name.encode()


def announced(port: int) -> list[str]:
    """Names of the live announcements for ``port`` (listening abstract sockets of this network namespace)."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return []
    want = f"@{PREFIX}/{port}/"
    return sorted(
        {
            f[7][1:]
            for f in (line.split() for line in lines)
            if len(f) >= 8 and f[7].startswith(want) and not f[7].endswith("/claim")
        }
    )


def ask(name: str, timeout_s: float | None = None) -> dict | None:
    """What the announcement ``name`` says ({key, store, pid, command}); None when it has gone meanwhile.

    One that does not answer within ``timeout_s`` (``ASK_TIMEOUT_S``), or whose listen backlog stays full
    that long (a hung process that many starts are queued at), says ``{"key": None, "store": "(no answer)"}``
    with the pid of the process holding it where the kernel tells it (``SO_PEERCRED``), else the one in its name.
    """
    timeout_s = ASK_TIMEOUT_S if timeout_s is None else timeout_s
    pid_s = name.rsplit("/", 1)[-1].split(".")[0]
    silent = {"key": None, "store": "(no answer)", "pid": int(pid_s) if pid_s.isdigit() else None}
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        while True:
            try:
                s.connect(_address(name))
                break
            except (ConnectionRefusedError, FileNotFoundError):
                return None  # closed between the listing and now: its process stopped
            except BlockingIOError:  # EAGAIN: its backlog is full (a socket with a timeout does not wait)
                if time.monotonic() > deadline:
                    return silent
                time.sleep(0.02)
            except OSError:  # anything else: nothing proves it is the same store
                return silent
        with contextlib.suppress(OSError):  # who holds the name, whatever its name says
            pid, _, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            silent["pid"] = pid
        buf = b""
        try:
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            return json.loads(buf)
        except (OSError, ValueError):  # no answer in time, or not ours: nothing proves it is the same store
            return silent


def _command(pid: int | None) -> str:
    if pid is None:
        return ""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return _redact(" ".join(raw.rstrip(b"\0").decode(errors="replace").split("\0")))


def _redact(text: str) -> str:
    """A command line without the password of a URL in it (``--store postgresql://u:secret@db/fleet``)."""
    return re.sub(r"password=[^&\s]*", "password=***", re.sub(r"//([^:/@\s]+):[^@\s]*@", r"//\1:***@", text))


class Announcement:
    """This process serves ``port`` with a store, listening on ``host``: said to every later start on the port
    until ``close()``."""

    def __init__(self, port: int, key: str, shown: str, host: str = "") -> None:
        self.port, self.key, self.shown, self.host = port, key, shown, host
        self.name = f"{PREFIX}/{port}/{os.getpid()}.{next(_numbers)}"
        self.answer = (
            json.dumps(
                {
                    "key": key,
                    "store": shown,
                    "host": host,
                    "pid": os.getpid(),
                    "command": _command(os.getpid()),
                }
            )
            + "\n"
        ).encode()
        self.sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def open(self) -> Announcement:
        """Check the port's other services and announce this one; ``PortTaken`` if one serves another store."""
        if not sys.platform.startswith("linux"):
            return self
        with _claim(self.port):
            mine = _listening_addresses(self.host)  # resolved once, compared with each announcement's
            for name in announced(self.port):
                other = ask(name)
                if other is None or other.get("key") == self.key:
                    continue  # gone, or a replica of the same store
                if not _overlap(mine, other.get("host")):
                    continue  # another address of the machine: it never takes this one's connections
                pid = other.get("pid")
                cmd = other.get("command") or _command(pid)
                who = f"(pid {pid if pid is not None else 'unknown'}" + (f": {cmd}" if cmd else "") + ")"
                if (
                    other.get("key") is None
                ):  # hung, stopped (SIGSTOP), or a name that is not a fleet service's
                    raise PortTaken(
                        f"port {self.port} is announced by a process that does not answer {who}, taken as a "
                        f"fleet service of another store; this one's store is {self.shown}. If it is hung, stop "
                        "it; otherwise use another --port"
                    )
                raise PortTaken(
                    f"port {self.port} is already served by a fleet service of another store: "
                    f"{other.get('store')} {who}; this one's store is {self.shown}. Replicas on one port must "
                    "share one store: use the same --data/--store, or another --port"
                )
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(_address(self.name))
            s.listen(64)
            self.sock = s
        self._thread = threading.Thread(target=self._serve, name=f"fleet-port-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        s = self.sock
        while s is not None:
            try:
                conn, _ = s.accept()
            except OSError:  # closed by close()
                return
            with conn:
                with contextlib.suppress(OSError):
                    conn.settimeout(1.0)
                    conn.sendall(self.answer)

    def close(self) -> None:
        s, self.sock = self.sock, None
        if s is not None:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)  # wakes the accept() of _serve
            s.close()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None


@contextlib.contextmanager
def _claim(port: int):
    """Hold ``@cloud-trainer-fleet/<port>/claim`` for the check and the announcement (one start at a time)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + CLAIM_WAIT_S
    held = False
    try:
        while True:
            try:
                s.bind(_address(f"{PREFIX}/{port}/claim"))
                held = True
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    log.warning(
                        "port %d: checking its other fleet services without the claim (%s)", port, exc
                    )
                    break
                time.sleep(0.02)
        yield held
    finally:
        s.close()
