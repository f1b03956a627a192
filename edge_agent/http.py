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

A client that drops its connection while it is answered (a browser tab closed during a large
``/metrics``, a reset) is counted (``edge_status_http_connections_total{outcome="aborted"}``) and
otherwise ignored: no ``500`` is written to the dead socket and no traceback reaches the log. A ``500``
is sent only while nothing of the answer has been sent.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from edge_agent.status_board import tag_rows
from protocols import json_codec
from protocols.http_server import BoundedHTTPServer

PAGE = Path(__file__).with_name("status_page.html")
MAX_CONNECTIONS = 16
DEADLINE_S = 10.0


class _ClientGone(Exception):
    """The client closed or reset the connection while its answer was written."""


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
                self._began = False  # a byte of the answer went out: no other answer can follow
                try:
                    self._answer()
                except _ClientGone:  # nobody left to answer: count it, close quietly
                    self.close_connection = True
                    outer.httpd.note_aborted()

            def _answer(self) -> None:
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
                except _ClientGone:
                    raise
                except (KeyError, IndexError, ValueError):
                    if not self._began:
                        self._send(404, "text/plain", b"nothing there yet\n")
                except Exception as exc:  # a status read must never take the agent down
                    if self._began:  # part of an answer is out: a 500 now would corrupt it; just close
                        self.close_connection = True
                    else:
                        self._send(500, "text/plain", f"status failed: {exc}\n".encode())

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self._began = True
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    self.wfile.write(body)
                except OSError as exc:  # broken pipe, reset, a write timeout: the client is gone
                    raise _ClientGone(str(exc)) from None

        self.httpd = BoundedHTTPServer((host, port), Handler, max_connections, deadline_s)
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="status-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
