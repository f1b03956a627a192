"""The agent's status page while the agent answers 503 (starting, or busy computing another answer: its HTTP server
shares out its CPU), rendered by a real headless Chromium against a real HTTP server on 127.0.0.1 that answers
/status as the agent does (503 with Retry-After, then 200): the page says the agent is busy and when it asks again,
backs off (1, 2, 4 s ...), and shows the agent once it answers. Before, it said "agent not answering: /status 503"
and asked again every 2 s however long the agent stayed busy."""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.e2e.test_pages_in_browser import chromium, pytestmark  # noqa: F401 (skipped without Chromium)

PAGE = (Path(__file__).resolve().parents[2] / "edge_agent" / "status_page.html").read_bytes()
STATUS = {
    "agent": {"id": "gw-busy", "site": "plant", "line": "l1", "uptime_s": 3.0, "max_rss_mb": 80},
    "sources": {},
    "pipelines": [],
    "models": [],
    "alarms": [],
    "recent_results": [],
    "outbox": None,
    "uplink": None,
}


def _sub(url: str) -> str:
    """The page's line under its title after its script ran 6 s of its time (Chromium's virtual time: the same
    asks whatever the machine's load); fails on a JavaScript error."""
    with tempfile.TemporaryDirectory() as profile:
        r = chromium(profile, "--dump-dom", url)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln and "Uncaught" in ln], r.stderr[-2000:]
    found = re.search(r'<span id="title">(.*?)</span><small id="sub">(.*?)</small>', r.stdout)
    assert found, r.stdout[-2000:]
    return f"{found[1]} | {found[2]}"


def _serve(busy_for: int) -> tuple[ThreadingHTTPServer, list[int]]:
    """A server of the page whose /status answers 503 ``busy_for`` times, then the status; the codes it gave."""
    given: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/":
                code, ctype, body = 200, "text/html; charset=utf-8", PAGE
            elif self.path == "/status":
                code = 503 if len(given) < busy_for else 200
                given.append(code)
                body = b"busy: try again in a second\n" if code == 503 else json.dumps(STATUS).encode()
                ctype = "text/plain; charset=utf-8" if code == 503 else "application/json"
            else:
                code, ctype, body = 404, "text/plain; charset=utf-8", b"nothing there yet\n"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if code == 503:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, given


async def test_the_status_page_backs_off_while_the_agent_answers_503_says_so_and_shows_it_once_it_answers():
    httpd, given = _serve(busy_for=1000)  # busy for the whole render
    try:
        said = await asyncio.to_thread(_sub, f"http://127.0.0.1:{httpd.server_address[1]}/")
    finally:
        httpd.shutdown()
    # asked at 0, 1 and 3 s (then at 7 s: past the render), not every 2 s (0, 2, 4, 6 s)
    assert said == "Edge agent | agent busy or starting (HTTP 503), retrying in 4 s (attempt 3)", said
    assert given == [503, 503, 503], given

    httpd, given = _serve(busy_for=2)  # starting: busy twice, then it answers
    try:
        said = await asyncio.to_thread(_sub, f"http://127.0.0.1:{httpd.server_address[1]}/")
    finally:
        httpd.shutdown()
    assert said.startswith("Edge agent gw-busy | plant / l1 · up 3 s"), said
    assert given[:3] == [503, 503, 200] and set(given[3:]) == {200}, given
