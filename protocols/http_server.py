"""A stdlib ``ThreadingHTTPServer`` with bounds, for the HTTP endpoints that may face a plant or office
network: the agent's status endpoint (``edge_agent.http``) and the fleet console
(``cloud_trainer.fleet.console``). Without bounds, every half-open connection (a port scanner, a slow or
hostile client) held a thread for good.

At most ``max_connections`` requests are served at once, half of them from one address; one more is
answered ``503`` and closed without a thread. A connection still open ``deadline_s`` after it was
accepted is shut down by the serving loop, however slowly its client trickles bytes (give the handler
class ``timeout = deadline_s`` as well, so an idle client's read fails at once). No I/O at import.

A client that goes away before its answer is complete (closed, reset, a broken pipe) is its own business,
not the server's: it is counted in ``aborted`` and logged as one debug line, never as socketserver's
traceback on stderr, which any client on the network could otherwise repeat at will to flood the log.
Handlers report a client gone during their own writes with ``note_aborted()``. Any other error that
escapes a handler is counted in ``failed`` and logged in one line (a warning the first time per kind).
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any

__all__ = ["BoundedHTTPServer"]

log = logging.getLogger(__name__)

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n"
    b"Connection: close\r\nRetry-After: 1\r\n\r\ntoo many requests now\n"
)


class BoundedHTTPServer(ThreadingHTTPServer):
    """At most ``max_connections`` requests at once, ``max_connections // 2`` from one address (a browser
    opens ~6), each given ``deadline_s`` in all: a connection over it is shut down by the serving loop."""

    daemon_threads = True
    request_queue_size = 64  # socketserver's 5 leaves a burst of connects waiting on SYN retries

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int, deadline_s: float):
        super().__init__(address, handler)
        self._max, self._per_client, self._deadline = (
            max_connections,
            max(1, max_connections // 2),
            deadline_s,
        )
        self._lock = threading.Lock()
        self._active: dict[Any, tuple[float, str]] = {}  # socket -> (accepted at, client address)
        self._by_client: dict[str, int] = {}
        self.accepted = 0
        self.peak = 0  # the most requests served at once
        self.refused = 0  # answered 503: too many at once
        self.cut = 0  # shut down: over the deadline
        self.aborted = 0  # the client went away (closed, reset) before its answer was complete
        self.failed = 0  # another error escaped a handler
        self._warned: set[str] = set()  # kinds of error already logged as a warning

    def process_request(self, request: Any, client_address: Any) -> None:
        ip = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        with self._lock:
            busy = len(self._active) >= self._max or self._by_client.get(ip, 0) >= self._per_client
            if not busy:
                self._active[request] = (time.monotonic(), ip)
                self._by_client[ip] = self._by_client.get(ip, 0) + 1
                self.accepted += 1
                self.peak = max(self.peak, len(self._active))
            else:
                self.refused += 1
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

    def note_aborted(self) -> None:
        """A handler found its client gone while answering (a write raised ``OSError``)."""
        with self._lock:
            self.aborted += 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An exception escaped the handler (socketserver calls this inside its ``except``): one log line,
        never socketserver's traceback on stderr."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # reset or closed while its request was read or answered
            with self._lock:
                self.aborted += 1
            log.debug("HTTP client %s went away: %s", client_address, exc)
            return
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

    def _done(self, request: Any) -> None:
        with self._lock:
            _, ip = self._active.pop(request, (0.0, ""))
            n = self._by_client.get(ip, 0) - 1
            if n > 0:
                self._by_client[ip] = n
            else:
                self._by_client.pop(ip, None)

    def service_actions(self) -> None:  # called by serve_forever between polls (0.5 s)
        now = time.monotonic()
        with self._lock:
            late = [r for r, (t0, _) in self._active.items() if now - t0 > self._deadline]
        for r in late:  # its thread then reads EOF or gets an error, and frees its slot
            self.cut += 1
            try:
                r.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
