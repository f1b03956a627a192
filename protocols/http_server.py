"""A stdlib ``ThreadingHTTPServer`` with bounds, for the HTTP endpoints that may face a plant or office
network: the agent's status endpoint (``edge_agent.http``) and the fleet console
(``cloud_trainer.fleet.console``). Without bounds, every half-open connection (a port scanner, a slow or
hostile client) held a thread for good.

At most ``max_connections`` requests are served at once, half of them from one address. When all places
are taken, or its address holds its half, a new connection takes the place of the oldest one still sending
its request (of any address, or of its own: an idle or trickling client, what a slowloris holds), else of
the answer that has been going out longest, once over a fifth of ``deadline_s`` (a reader that stalls), so
that trickling requests and stalled readers, from one address or many, keep nobody out; only when every
place it could take is being answered, for less than that, is it answered ``503`` and closed without a
thread. A connection still open ``deadline_s``
after it was accepted is shut down by the serving loop, however slowly its client trickles bytes (give the
handler class ``timeout = deadline_s`` as well, so an idle client's read fails at once). A request's header
section is read to ``MAX_HEADER_BYTES`` in all, then ``431``: the stdlib's own bound (100 lines of 64 KB)
let each request hold 6.5 MB and parse it holding the GIL. No I/O at import.

A client that goes away before its answer is complete (closed, reset, a broken pipe) is its own business,
not the server's: it is counted in ``aborted`` and logged as one debug line, never as socketserver's
traceback on stderr, which any client on the network could otherwise repeat at will to flood the log. A
connection the server shut down itself (over the deadline, or its place taken) is counted once, in ``cut``,
not again in ``aborted`` when its answer's write then fails.
Handlers report a client gone during their own writes with ``note_aborted(request)``. Any other error that
escapes a handler is counted in ``failed`` and logged in one line (a warning the first time per kind);
handlers that answer ``500`` themselves report the error with ``note_failed()`` and never put its text
(a server path, a database's host) in the answer. When the process is out of file descriptors (or
memory), ``accept()`` fails and the connection stays queued: the serving loop then pauses (10 ms,
doubling up to 0.5 s; one warning per spell, ``starved`` counts the attempts) instead of retrying at once
and burning a core and the GIL the rest of the process needs to recover.

``BoundedHandler`` is the handler base of both servers: no access log, every answer (the stdlib's own
``400``/``414``/``431``/``501`` pages too) carries ``X-Content-Type-Options: nosniff``, and the ``Server``
header names no Python version.

``Answers`` bounds what answering costs the process that serves (the agent's inference, the fleet
service's event loop): answers that take work (a status snapshot, a Prometheus exposition, a PNG) are
computed one at a time, and after each the server rests ``1/cpu_share - 1`` times as long as it took
(4x: at most a fifth of one core, however many clients ask, however often). Each is kept and shared:
a request within ``max(min_age_s, that rest)`` of the last computation of the same key gets that
answer, and while another answer is being computed (or the server rests) a request gets the last one
of its key if it is at most ``wait_s`` old; only a request with nothing to share waits (at most
``wait_s``, then ``AnswerBusy``: answer 503). What is kept is bounded (``max_keys`` answers,
``max_bytes`` in all; the least recently computed go first), whatever keys clients make up. Every answer
is computed on one thread of its own (one memory arena's peak, not one per request thread).
A server that answers for several parties (the fleet console: tenants) gives each answer its ``group``: answers of
one group are computed one at a time and rest after each as above, those of different groups on ``workers``
threads at once, so one tenant's costly answer (an agent with a thousand epochs) neither waits behind another's
nor makes another's wait: with one thread for all, one tenant's 6-s answer and its rest made every other tenant's
console answer 503. A group then spends at most ``cpu_share`` of a core, and at most ``workers`` answers are
computed at once; a request that finds no thread free within ``wait_s`` is ``AnswerBusy``.
"""

from __future__ import annotations

import errno
import http.client
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar

__all__ = ["AnswerBusy", "Answers", "BoundedHTTPServer", "BoundedHandler"]

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 0.5  # the longest pause between two accept() that failed for want of descriptors
MAX_HEADER_BYTES = 64 * 1024  # a request's header section in all (a browser's is under 8 KB)
_STARVED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n"
    b"Connection: close\r\nRetry-After: 1\r\n\r\ntoo many requests now\n"
)


def known_host_names(bind_host: str, allowed: list[str] | tuple[str, ...] = ()) -> frozenset[str]:
    """The names (lower case) a request's ``Host`` may give besides an IP address: ``localhost``, this
    machine's name, the bound host when it is a name, and ``allowed`` (the agent's ``http.allowed_hosts``,
    the console's ``--console-allowed-host``)."""
    own = socket.gethostname().lower()  # no DNS lookup (getfqdn may wait on a resolver)
    names = {"localhost", own, own.split(".", 1)[0], bind_host.lower(), *(a.lower() for a in allowed)}
    return frozenset(n for n in names if n)


def host_allowed(header: str | None, names: frozenset[str]) -> bool:
    """A request's ``Host`` is an IP address (any), or one of ``names``; no Host at all (HTTP/1.0 tools) is
    let through: browsers always send it, and a page of another site in a browser that can reach the server
    reaches it only under that site's name (DNS rebinding), which is refused."""
    import ipaddress

    if not header:
        return True
    h = header.strip().lower()
    if h.startswith("["):  # [v6]:port
        h = h[1 : h.find("]")] if "]" in h else h
    elif h.count(":") == 1:
        h = h.rsplit(":", 1)[0]
    h = h.rstrip(".")
    try:
        ipaddress.ip_address(h)
        return True
    except ValueError:
        return h in names


class BoundedHTTPServer(ThreadingHTTPServer):
    """At most ``max_connections`` requests at once, ``max_connections // 2`` from one address (a browser
    opens ~6), each given ``deadline_s`` in all: a connection over it is shut down by the serving loop. A new
    connection over either bound takes the place of the oldest one still sending its request (see the module
    text)."""

    daemon_threads = True
    # connections the kernel completes and queues while the serving loop accepts them one by one: a plant's
    # monitoring system, its dashboards and scrapers (a few hundred clients) reconnecting at once after a
    # restart or a network blip must all be queued, not dropped to a SYN retry (1 s, then 3 s, 7 s); 64 let
    # 135 of 200 wait. Kernel memory only for those queued; capped by net.core.somaxconn (4096 since Linux 5.4)
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int, deadline_s: float):
        super().__init__(address, handler)
        self._max, self._per_client, self._deadline = (
            max_connections,
            max(1, max_connections // 2),
            deadline_s,
        )
        self._lock = threading.Lock()
        self._active: dict[Any, tuple[float, str]] = {}  # socket -> (accepted at, client address)
        self._reading: set[Any] = set()  # those of _active whose request is not read whole yet
        self._writing: dict[Any, float] = {}  # those of _active writing their answer -> since when
        self._cut: set[Any] = set()  # connections shut down by the server whose thread has not ended yet
        self._stall = deadline_s / 5  # an answer going out longer than this may give its place up when full
        self._by_client: dict[str, int] = {}
        self.accepted = 0
        self.peak = 0  # the most requests served at once
        self.refused = 0  # answered 503: too many at once
        self.cut = 0  # shut down: over the deadline, or its place taken (still sending its request when full)
        self.evicted = 0  # of cut: its place taken by a new connection
        self.aborted = 0  # the client went away (closed, reset) before its answer was complete; not one cut
        self.failed = 0  # another error escaped a handler
        self._warned: set[str] = set()  # kinds of error already logged as a warning
        self.starved = 0  # accept() failed for want of file descriptors or memory
        self._backoff = 0.0

    def get_request(self) -> tuple[Any, Any]:
        """``accept()``, and a pause when it fails for want of file descriptors or memory (EMFILE, ENFILE,
        ENOBUFS, ENOMEM): the connection stays queued and the listening socket stays readable, so the
        serving loop would retry at once, again and again, burning a core and the GIL while the process is
        short of them; it waits 10 ms, doubling up to ``MAX_BACKOFF_S``, and warns once per spell."""
        try:
            conn = super().get_request()
        except OSError as exc:
            if exc.errno in _STARVED:
                self.starved += 1
                if not self._backoff:
                    log.warning(
                        "HTTP server on port %s cannot accept a connection: %s; the process is out of file "
                        "descriptors or memory (raise LimitNOFILE, or look for what holds them); retrying",
                        self.server_address[1],
                        os.strerror(exc.errno or 0),
                    )
                self._backoff = min(MAX_BACKOFF_S, max(0.01, self._backoff * 2))
                time.sleep(self._backoff)
            raise
        if self._backoff:
            log.info("HTTP server on port %s accepts connections again", self.server_address[1])
            self._backoff = 0.0
        return conn

    def process_request(self, request: Any, client_address: Any) -> None:
        ip = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        evict = None
        with self._lock:
            busy = False
            own = self._by_client.get(ip, 0) >= self._per_client
            if own:  # its address's half: one of its own gives way
                candidates = [r for r in self._reading if self._active[r][1] == ip]
            elif len(self._active) >= self._max:  # full: any address's
                candidates = list(self._reading)
            else:
                candidates = None
            if candidates is not None:
                # the oldest connection still sending its request gives its place up (its thread reads EOF); if
                # none, the one whose answer has been going out longest, over a fifth of the deadline (a reader
                # that stalls: its write fails)
                evict = min(candidates, key=lambda r: self._active[r][0], default=None)
                if evict is None:
                    now = time.monotonic()
                    mine = (
                        [r for r in self._writing if self._active[r][1] == ip] if own else list(self._writing)
                    )
                    evict = min(
                        (r for r in mine if now - self._writing[r] > self._stall),
                        key=lambda r: self._writing[r],
                        default=None,
                    )
                if evict is None:  # every place it could take is being answered
                    busy = True
                else:
                    self._release(evict)
                    self._cut.add(evict)
                    self.cut += 1
                    self.evicted += 1
            if not busy:
                self._active[request] = (time.monotonic(), ip)
                self._reading.add(request)
                self._by_client[ip] = self._by_client.get(ip, 0) + 1
                self.accepted += 1
                self.peak = max(self.peak, len(self._active))
            else:
                self.refused += 1
        if evict is not None:
            try:
                evict.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if busy:  # answered here, without a thread
            try:
                request.settimeout(0.2)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def note_aborted(self, request: Any = None) -> None:
        """A handler found its client gone while answering (a write raised ``OSError``) on ``request``'s
        connection. Not counted when the server shut that connection down itself (over the deadline, or its
        place taken): its write fails for that, and it is counted once, in ``cut``."""
        with self._lock:
            if request is None or request not in self._cut:
                self.aborted += 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An exception escaped the handler (socketserver calls this inside its ``except``): one log line,
        never socketserver's traceback on stderr."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # reset or closed while its request was read or answered
            self.note_aborted(request)
            log.debug("HTTP client %s went away: %s", client_address, exc)
            return
        self.note_failed(client_address, exc)

    def note_failed(self, client_address: Any, exc: BaseException | None) -> None:
        """An error in serving a request, answered ``500`` by its handler (or by nobody): counted in
        ``failed`` and logged in one line, a warning the first time per kind of error, then at debug."""
        kind = type(exc).__name__
        with self._lock:
            self.failed += 1
            first = kind not in self._warned
            self._warned.add(kind)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "HTTP request from %s failed: %s: %s",
            client_address,
            kind,
            exc,
        )

    def note_request_read(self, request: Any) -> bool:
        """The handler has read its request (line and headers): the connection is now answered, and no longer
        gives its place up to a new one. False if it gave it up already (not to be answered)."""
        with self._lock:
            self._reading.discard(request)
            return request in self._active

    def note_writing(self, request: Any) -> None:
        """The handler begins to write its answer (its status line)."""
        with self._lock:
            if request in self._active:
                self._writing.setdefault(request, time.monotonic())

    def _release(self, request: Any) -> None:
        """Frees ``request``'s place (under ``_lock``); a no-op once freed (a request evicted, then done)."""
        if request not in self._active:
            return
        _, ip = self._active.pop(request)
        self._reading.discard(request)
        self._writing.pop(request, None)
        n = self._by_client.get(ip, 0) - 1
        if n > 0:
            self._by_client[ip] = n
        else:
            self._by_client.pop(ip, None)

    def _done(self, request: Any) -> None:
        with self._lock:
            self._release(request)
            self._cut.discard(request)

    def service_actions(self) -> None:  # called by serve_forever between polls (0.5 s)
        now = time.monotonic()
        with self._lock:  # once each: a thread still computing its answer is late at the next poll too
            late = [
                r for r, (t0, _) in self._active.items() if now - t0 > self._deadline and r not in self._cut
            ]
            self._cut.update(late)
            self.cut += len(late)
        for r in late:  # its thread then reads EOF or gets an error, and frees its slot
            try:
                r.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class BoundedHandler(BaseHTTPRequestHandler):
    """The request handler base of the bounded servers: no access log (a scanner would fill it), every
    answer marked ``nosniff`` (a browser never runs a plain-text or JSON answer that echoes a URL as a
    page or a script), no Python version in the ``Server`` header. Subclasses set ``timeout``."""

    def version_string(self) -> str:
        return "factory-edge"

    def parse_request(self) -> bool:
        """The stdlib's, with the header section read to ``MAX_HEADER_BYTES`` in all (``431`` beyond); then the
        server knows the request is read (its connection no longer gives its place up to a new one)."""
        raw = self.rfile
        self.rfile = _HeaderBudget(raw, MAX_HEADER_BYTES)  # type: ignore[assignment]
        try:
            ok = super().parse_request()
        finally:
            self.rfile = raw
        note = getattr(self.server, "note_request_read", None)
        if note is not None and not note(self.request):  # its place was taken: what it read was cut short
            self.close_connection = True
            return False
        return ok

    def send_response(self, code: int, message: str | None = None) -> None:
        note = getattr(self.server, "note_writing", None)
        if note is not None:
            note(self.request)
        super().send_response(code, message)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()


def _serve_jobs(jobs: queue.SimpleQueue) -> None:
    """A computing thread of an ``Answers``: runs each (compute, future) put, until None; a job whose request gave
    up waiting for a thread (its future cancelled) is skipped."""
    while (job := jobs.get()) is not None:
        compute, done = job
        if not done.set_running_or_notify_cancel():
            continue
        try:
            done.set_result(compute())
        except BaseException as exc:  # handed to the request that waits, raised there
            done.set_exception(exc)


class _HeaderBudget:
    """A handler's ``rfile`` while its header section is read: ``readline`` raises ``LineTooLong`` (which
    ``parse_request`` answers ``431``) once the lines read pass ``budget`` bytes in all."""

    def __init__(self, raw: Any, budget: int) -> None:
        self._raw, self._left, self._budget = raw, budget, budget

    def readline(self, limit: int = -1) -> bytes:
        n = self._left + 1 if limit is None or limit < 0 else min(limit, self._left + 1)
        line = self._raw.readline(n)
        self._left -= len(line)
        if self._left < 0:
            raise http.client.LineTooLong(f"header section over {self._budget} bytes")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class AnswerBusy(Exception):
    """No answer to share and none could be computed within ``wait_s``: answer 503 and let the client retry."""


class _Kept(Generic[T]):
    __slots__ = ("value", "at", "keep", "size")

    def __init__(self, value: T, at: float, keep: float) -> None:
        self.value, self.at, self.keep = value, at, keep
        self.size = len(value) if isinstance(value, bytes | bytearray) else sys.getsizeof(value)


class _Group:
    """The answers of one group (``Answers.get``'s ``group``): one computed at a time, then its rest."""

    __slots__ = ("lock", "free_at")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free_at = 0.0  # the rest after the group's last computation ends here


class Answers(Generic[T]):
    """Answers computed one at a time per group, with a rest after each, and shared by key (see the module text)."""

    def __init__(
        self,
        *,
        min_age_s: float = 0.5,
        cpu_share: float = 0.2,
        wait_s: float = 5.0,
        max_keys: int = 64,
        max_bytes: int = 32 * 1024 * 1024,
        workers: int = 1,
        max_groups: int = 1024,
    ) -> None:
        if not 0 < cpu_share <= 1:
            raise ValueError(f"cpu_share {cpu_share}: expected a share of one core in (0, 1]")
        if workers < 1:
            raise ValueError(f"workers {workers}: expected at least 1 computing thread")
        self.min_age_s, self.wait_s, self.max_keys, self.max_bytes = min_age_s, wait_s, max_keys, max_bytes
        self.workers, self.max_groups = workers, max_groups
        self.kept_bytes = 0  # the size of the answers kept (bytes answers; others count by sys.getsizeof)
        self._rest_factor = 1 / cpu_share - 1
        # group None: every answer of a single-group server (the agent's status page)
        self._default = _Group()
        self._compute = self._default.lock  # one computation at a time (of the group)
        self._groups: OrderedDict[Any, _Group] = OrderedDict()  # the others, least recently used first
        self._groups_lock = threading.Lock()
        self._jobs: queue.SimpleQueue | None = None  # ... on ``workers`` threads (see _run)
        self._in_jobs = 0  # jobs put and not ended (given up or done)
        self._threads = 0  # computing threads started (on demand, up to ``workers``)
        self._kept_lock = threading.Lock()
        self._kept: OrderedDict[Any, _Kept[T]] = OrderedDict()
        self._free_at = 0.0  # the rest after the last computation ends here
        self.computed = 0  # answers computed (or failed: their cost counts as well)
        self.shared = 0  # requests answered with an answer computed for another
        self.busy = 0  # AnswerBusy raised
        self.compute_s = 0.0  # time spent computing, in all

    def _get_kept(self, key: Any) -> _Kept[T] | None:
        with self._kept_lock:
            return self._kept.get(key)

    def _share(self, kept: _Kept[T]) -> T:
        with self._kept_lock:
            self.shared += 1
        return kept.value

    def _group(self, group: Any) -> _Group:
        """The state of ``group`` (made on first use). At most ``max_groups`` are kept: past it, the least recently
        used ones that are neither computing nor resting are forgotten (whatever groups clients make up)."""
        if group is None:
            return self._default
        with self._groups_lock:
            g = self._groups.get(group)
            if g is None:
                g = self._groups[group] = _Group()
                if len(self._groups) > self.max_groups:
                    now = time.monotonic()
                    for k in [k for k, v in self._groups.items() if not v.lock.locked() and v.free_at <= now]:
                        if len(self._groups) <= self.max_groups:
                            break
                        del self._groups[k]
            self._groups.move_to_end(group)
            return g

    def _run(self, compute: Callable[[], T], wait_s: float, spent: list[float]) -> T:
        """``compute()`` on one of the ``workers`` threads that compute (never more than one job of a group waits
        for them: its lock). Costly answers allocate large buffers (a 1080p frame's heat map: ~40 MB of arrays for a
        PNG); glibc gives each thread that allocates its own arena, which keeps its peak, so rendering on each
        request's own thread (a new one per connection) grew the agent's memory by ~200 MB under a client asking
        for heat maps in a loop (``bench/status_hostile_bench.py``); on a few threads it is a few arenas' peaks.
        Daemon threads, as the request threads are: a computation stuck at exit does not hold the process. A job
        that no thread took within ``wait_s`` (every thread computing other groups' answers) is ``AnswerBusy``.
        ``spent[0]``: the seconds ``compute()`` took, once it has ended."""
        done: Future[T] = Future()

        def timed() -> T:
            t0 = time.monotonic()
            try:
                return compute()
            finally:
                spent[0] = time.monotonic() - t0

        with self._kept_lock:
            if self._jobs is None:
                self._jobs, self._threads = queue.SimpleQueue(), 0
            # a thread is free: the job starts at once (one group: always); one is started for it when none is
            free = self._in_jobs < self.workers
            start = self._in_jobs >= self._threads and self._threads < self.workers
            self._in_jobs += 1
            self._threads += start
            jobs = self._jobs
        if start:
            threading.Thread(target=_serve_jobs, args=(jobs,), name="http-answers", daemon=True).start()
        try:
            jobs.put((timed, done))
            try:
                return done.result(timeout=None if free else max(wait_s, 0.0))
            except FutureTimeout:
                if done.cancel():  # not taken by a thread yet: never will be
                    with self._kept_lock:
                        self.busy += 1
                    raise AnswerBusy(f"no thread free to compute within {self.wait_s:g} s") from None
                return done.result()  # under way: its result (its group's lock bounds what waits so)
        finally:
            with self._kept_lock:
                self._in_jobs -= 1

    def close(self) -> None:
        """Ends the computing threads (after the computations under way, if any); ``get`` starts them again."""
        with self._kept_lock:
            jobs, self._jobs, threads = self._jobs, None, self._threads
        if jobs is not None:
            for _ in range(threads):
                jobs.put(None)

    def get(self, key: Any, compute: Callable[[], T], group: Any = None) -> T:
        """The answer for ``key``: a kept one if it is fresh enough, else ``compute()`` (whose exceptions
        propagate and are not kept). Raises ``AnswerBusy`` when there is nothing to share and no turn
        to compute came within ``wait_s``. ``group`` (a tenant): answers of one group are computed one at a time
        and rest after each, those of different groups on ``workers`` threads, so that one group's costly answer
        neither waits behind nor makes wait another group's (give each key one group)."""
        kept = self._get_kept(key)
        now = time.monotonic()
        if kept is not None and now - kept.at < kept.keep:
            return self._share(kept)
        usable = kept if kept is not None and now - kept.at <= self.wait_s else None
        g = self._group(group)
        if not g.lock.acquire(timeout=0 if usable is not None else self.wait_s):
            if usable is not None:  # another answer is being computed: this one's last is recent enough
                return self._share(usable)
            with self._kept_lock:
                self.busy += 1
            raise AnswerBusy(f"no answer for {key!r} within {self.wait_s:g} s")
        try:
            latest = self._get_kept(key)
            if latest is not None and latest is not kept and time.monotonic() - latest.at < latest.keep:
                return self._share(latest)  # computed by the request this one waited behind
            rest = g.free_at - time.monotonic()
            if rest > 0:
                if usable is not None:
                    return self._share(usable)
                if rest > self.wait_s:
                    with self._kept_lock:
                        self.busy += 1
                    raise AnswerBusy(f"resting {rest:.1f} s after a costly answer")
                time.sleep(rest)
            spent = [0.0]  # the computation's own time, not its wait for a thread (other groups' work)
            try:
                value = self._run(compute, self.wait_s - (time.monotonic() - now), spent)
            finally:
                t1 = time.monotonic()
                g.free_at = t1 + spent[0] * self._rest_factor
                self.computed += 1
                self.compute_s += spent[0]
            with self._kept_lock:
                old = self._kept.pop(key, None)
                self.kept_bytes -= old.size if old is not None else 0
                new = self._kept[key] = _Kept(value, t1, max(self.min_age_s, spent[0] * self._rest_factor))
                self.kept_bytes += new.size
                while len(self._kept) > 1 and (
                    len(self._kept) > self.max_keys or self.kept_bytes > self.max_bytes
                ):  # the least recently computed go first; the newest is kept whatever its size
                    self.kept_bytes -= self._kept.popitem(last=False)[1].size
            return value
        finally:
            g.lock.release()
