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
is sent only while nothing of the answer has been sent; it names the kind of error only (its text may
hold a server path), and the error is counted (``outcome="failed"``) and logged, a warning once per kind.

Serving never takes the agent's CPU from its inference (``protocols.http_server.Answers``): ``/status``,
``/metrics``, the heat-map PNGs and the spectra are
computed one at a time, the server rests 4x as long as each took before it computes the next (at most a
fifth of one core however many clients ask, however often), and every request in between gets the
answer last computed for its path (at least ``ANSWER_MIN_AGE_S`` old before it is computed again; the
query string is ignored, and an NG image is kept under the part it shows). A request with nothing to share
waits at most half the deadline, then ``503``. Clients cannot make up keys: a frame, spectrum or trend of a
name no pipeline has is ``404``, nothing computed or kept. ``HEAD`` gets ``GET``'s answer without its body.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from edge_agent.status_board import tag_rows
from protocols import json_codec
from protocols.http_server import (
    AnswerBusy,
    Answers,
    BoundedHandler,
    BoundedHTTPServer,
    host_allowed,
    known_host_names,
)

PAGE = Path(__file__).with_name("status_page.html")
MAX_CONNECTIONS = 16
DEADLINE_S = 10.0
ANSWER_MIN_AGE_S = 0.5  # an answer is shared for at least this long (the page polls every 2 s)
CPU_SHARE = 0.2  # of one core, at most, spent computing answers


_PER_PIPELINE = ("/api/frame/", "/api/spectrum/", "/api/trend/")


def _index(text: str) -> int:
    """An NG image's index in the URL: digits only (``int`` takes ``-1``, `` 1``, ``1_0`` too)."""
    if not text.isascii() or not text.isdigit() or len(text) > 3:
        raise ValueError(f"NG image {text!r}: expected its index")
    return int(text)


def _key(agent, path: str) -> object | None:
    """The key an answer is kept and shared under: the path, whatever the query (the page asks for a frame
    with a fresh query each time); an NG image under the NG part it shows now (an index names another part
    once a new NG part came); None for a pipeline name the agent does not have. Clients cannot make up keys:
    before, an NG image was kept per URL with its query and a trend for any name, so a client asking for
    ``/api/ng/0.png?1``, ``?2``, ... or ``/api/trend/<anything>`` filled the kept answers (32 MB) with its own,
    pushed out those of the page's clients (who then waited for a computation of their own, up to 5 s), and had
    each image rendered again."""
    for prefix in _PER_PIPELINE:
        if path.startswith(prefix):
            name = path[len(prefix) :].removesuffix(".png")
            pipelines = getattr(agent, "pipelines", None)
            if pipelines is not None and name not in {p.name for p in pipelines}:
                return None
            return path
    if path.startswith("/api/ng/"):
        try:
            entry = list(agent.board.ng_frames)[_index(path[len("/api/ng/") : -4])]
        except (ValueError, IndexError, AttributeError, TypeError):
            return path  # computing it answers 404 (nothing there) and keeps nothing
        return _ng_key(entry)
    return path


def _ng_key(entry: tuple) -> tuple:
    """An NG part's key: its image's identity (no reference kept: a kept key must not hold a frame) and seq."""
    return ("ng", id(entry[0]), entry[2].get("pipeline"), entry[2].get("seq"))


def _ng_png(board, key: tuple) -> bytes:
    """The NG image ``key`` names, wherever it stands now (a new NG part, added on the loop, moves every index
    by one): rendered by its index, kept only if that index still names it once rendered."""
    for _ in range(3):
        at = [i for i, entry in enumerate(list(board.ng_frames)) if _ng_key(entry) == key]
        if not at:
            break
        png = board.ng_png(at[0])
        now = list(board.ng_frames)
        if at[0] < len(now) and _ng_key(now[at[0]]) == key:
            return png
    raise KeyError("that NG part is no longer kept")


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
        min_age_s: float = ANSWER_MIN_AGE_S,
        cpu_share: float = CPU_SHARE,
        allowed_hosts: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.agent = agent
        names = known_host_names(host, allowed_hosts)
        self.answers: Answers[bytes] = Answers(
            min_age_s=min_age_s, cpu_share=cpu_share, wait_s=deadline_s / 2
        )
        outer = self

        class Handler(BoundedHandler):
            timeout = deadline_s  # a socket timeout for every read and write of the request

            head = False

            def do_GET(self) -> None:
                try:
                    self._answer()
                except _ClientGone:  # nobody left to answer: count it, close quietly
                    self.close_connection = True
                    outer.httpd.note_aborted(self.request)

            def do_HEAD(self) -> None:
                """GET's answer without its body (a health check's probe; before, 501)."""
                self.head = True
                self.do_GET()

            def _route(self, path: str) -> tuple[str, Callable[[], bytes]] | None:
                """The content type and the computation of the answer for ``path``, or None."""
                agent, board = outer.agent, outer.agent.board
                if path == "/status":
                    return "application/json", lambda: json_codec.dumps(agent.status()).encode()
                if path == "/metrics":

                    def exposition() -> bytes:
                        agent.metrics.refresh(agent)
                        return agent.metrics.exposition()

                    return "text/plain; version=0.0.4; charset=utf-8", exposition
                if path.startswith("/api/frame/") and path.endswith(".png"):
                    return "image/png", lambda: board.frame_png(path[len("/api/frame/") : -4])
                if path.startswith("/api/ng/") and path.endswith(".png"):
                    return "image/png", lambda: board.ng_png(_index(path[len("/api/ng/") : -4]))
                if path == "/api/tags":
                    return "application/json", lambda: json_codec.dumps(
                        {n: tag_rows(list(t.values())) for n, t in agent.tags.items()}
                    ).encode()
                if path == "/api/ng":
                    return "application/json", lambda: json_codec.dumps(board.ng_results()).encode()
                if path.startswith("/api/spectrum/"):
                    name = path[len("/api/spectrum/") :]
                    return "application/json", lambda: json_codec.dumps(board.spectrum(name)).encode()
                if path.startswith("/api/trend/"):
                    name = path[len("/api/trend/") :]
                    return "application/json", lambda: json_codec.dumps(board.trend(name)).encode()
                return None

            def _answer(self) -> None:
                if not host_allowed(self.headers.get("Host"), names):
                    return self._send(
                        421,
                        "text/plain; charset=utf-8",
                        b"this agent does not answer to that host name; "
                        b"add it to the config's http.allowed_hosts\n",
                    )
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    body = (
                        PAGE.read_bytes()
                        if PAGE.exists()
                        else b"<h1>edge agent</h1><a href=/status>status</a>"
                    )
                    return self._send(200, "text/html; charset=utf-8", body)
                route = self._route(path)
                if route is None:
                    return self._send(
                        404, "text/plain; charset=utf-8", b"not found: try /, /status or /metrics\n"
                    )
                ctype, compute = route
                key = _key(outer.agent, path)
                if key is None:  # a name no pipeline has: nothing computed, nothing kept
                    return self._send(404, "text/plain; charset=utf-8", b"nothing there yet\n")
                if isinstance(key, tuple):
                    board = outer.agent.board
                    compute = lambda: _ng_png(board, key)  # noqa: E731
                try:
                    body = outer.answers.get(key, compute)
                except (KeyError, IndexError, ValueError):
                    return self._send(404, "text/plain; charset=utf-8", b"nothing there yet\n")
                except AnswerBusy:
                    return self._send(503, "text/plain; charset=utf-8", b"busy: try again in a second\n")
                except Exception as exc:  # a status read must never take the agent down, nor show its paths
                    outer.httpd.note_failed(self.client_address, exc)
                    msg = f"status failed ({type(exc).__name__}); the agent's log has the details\n"
                    return self._send(500, "text/plain; charset=utf-8", msg.encode())
                self._send(200, ctype, body)

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                """The one answer of this request: every answer is computed whole before a byte goes out."""
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Cache-Control", "no-store")
                    if code == 503:
                        self.send_header("Retry-After", "1")
                    self.end_headers()
                    if not self.head:
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
        self.answers.close()
