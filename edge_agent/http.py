"""The agent's local HTTP endpoint: ``/status`` (JSON), ``/metrics`` (Prometheus), ``/`` (status page).

It serves any object with ``status()``, ``metrics``, ``board`` (``edge_agent.status_board``) and
``tags``; it imports nothing of ``edge_agent.agent``.

A stdlib ``ThreadingHTTPServer`` on its own thread, bound to 127.0.0.1 by default: no extra
dependency, no build step, nothing fetched from the internet. Handlers only read the agent's
counters (plain Python objects, safe to read under the GIL).

Bounded, because the page may be opened to the plant network (``http.host``): at most
``MAX_CONNECTIONS`` requests are served at once, half of them from one address (one more is answered
503 and closed, without a thread), and a connection still open ``DEADLINE_S`` after it was accepted is
shut down, however slowly its client trickles bytes. Without these, every half-open connection (a
port scanner, a slow client) held a thread for good.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge_agent.status_board import tag_rows
from protocols import json_codec

PAGE = Path(__file__).with_name("status_page.html")
MAX_CONNECTIONS = 16
DEADLINE_S = 10.0
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 29\r\n"
    b"Connection: close\r\nRetry-After: 1\r\n\r\ntoo many status requests now\n"
)


class _BoundedServer(ThreadingHTTPServer):
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


class StatusServer:
    def __init__(
        self,
        agent,
        host: str,
        port: int,
        *,
        max_connections: int = MAX_CONNECTIONS,
        deadline_s: float = DEADLINE_S,
    ) -> None:
        self.agent = agent
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = deadline_s  # a socket timeout for every read and write of the request

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                board = outer.agent.board
                try:
                    if path == "/status":
                        body = json_codec.dumps(outer.agent.status()).encode()
                        self._send(200, "application/json", body)
                    elif path == "/metrics":
                        outer.agent.metrics.refresh(outer.agent)
                        self._send(
                            200, "text/plain; version=0.0.4; charset=utf-8", outer.agent.metrics.exposition()
                        )
                    elif path.startswith("/api/frame/") and path.endswith(".png"):
                        self._send(200, "image/png", board.frame_png(path[len("/api/frame/") : -4]))
                    elif path.startswith("/api/ng/") and path.endswith(".png"):
                        self._send(200, "image/png", board.ng_png(int(path[len("/api/ng/") : -4])))
                    elif path == "/api/tags":
                        body = json_codec.dumps(
                            {n: tag_rows(list(t.values())) for n, t in outer.agent.tags.items()}
                        ).encode()
                        self._send(200, "application/json", body)
                    elif path == "/api/ng":
                        self._send(200, "application/json", json_codec.dumps(board.ng_results()).encode())
                    elif path.startswith("/api/spectrum/"):
                        body = json_codec.dumps(board.spectrum(path[len("/api/spectrum/") :])).encode()
                        self._send(200, "application/json", body)
                    elif path.startswith("/api/trend/"):
                        rows = board.trend(path[len("/api/trend/") :])
                        self._send(200, "application/json", json_codec.dumps(rows).encode())
                    elif path in ("/", "/index.html"):
                        body = (
                            PAGE.read_bytes()
                            if PAGE.exists()
                            else b"<h1>edge agent</h1><a href=/status>status</a>"
                        )
                        self._send(200, "text/html; charset=utf-8", body)
                    else:
                        self._send(404, "text/plain", b"not found: try /, /status or /metrics\n")
                except (KeyError, IndexError, ValueError):
                    self._send(404, "text/plain", b"nothing there yet\n")
                except Exception as exc:  # a status read must never take the agent down
                    self._send(500, "text/plain", f"status failed: {exc}\n".encode())

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        self.httpd = _BoundedServer((host, port), Handler, max_connections, deadline_s)
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="status-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
