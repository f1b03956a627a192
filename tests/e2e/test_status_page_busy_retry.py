"""The agent's status page and the fleet console while their server answers 503 (starting, or busy computing another
answer: each HTTP server shares out its CPU), rendered by a real headless Chromium against a real HTTP server on
127.0.0.1 that answers as the agent and the fleet service do (503 with Retry-After, then 200): the page says the
server is busy and when it asks again, backs off (1, 2, 4 s ...), and shows the answer once it comes. Before, the
status page said "agent not answering: /status 503" and asked again every 2 s however long the agent stayed busy,
the console "update failed: /api/agents" every 3 s."""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.e2e.test_pages_in_browser import chromium, pytestmark  # noqa: F401 (skipped without Chromium)

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "edge_agent" / "status_page.html").read_bytes()
CONSOLE = (ROOT / "cloud_trainer" / "fleet" / "console.html").read_bytes()
# the fleet console's other answers: nothing yet
EMPTY = {
    "/api/deployments": [],
    "/api/models": [],
    "/api/quotas": {},
    "/api/samples": [],
    "/api/events": {"events": [], "next": None},
}
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


def _sub(url: str, shown: str = r'<span id="title">(.*?)</span><small id="sub">(.*?)</small>') -> str:
    """The page's line under its title (``shown``'s groups) after its script ran 6 s of its time (Chromium's
    virtual time: the same asks whatever the machine's load); fails on a JavaScript error."""
    with tempfile.TemporaryDirectory() as profile:
        r = chromium(profile, "--dump-dom", url)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln and "Uncaught" in ln], r.stderr[-2000:]
    found = re.search(shown, r.stdout)
    assert found, r.stdout[-2000:]
    return " | ".join(found.groups())


def _serve(
    busy_for: int, page: bytes = PAGE, busy: str = "/status", answer: object = STATUS
) -> tuple[ThreadingHTTPServer, list[int]]:
    """A server of ``page`` whose ``busy`` path answers 503 ``busy_for`` times, then ``answer``; the codes it gave
    there (the console's other paths answer ``EMPTY``)."""
    given: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                code, ctype, body = 200, "text/html; charset=utf-8", page
            elif path == busy:
                code = 503 if len(given) < busy_for else 200
                given.append(code)
                body = b"busy: try again in a second\n" if code == 503 else json.dumps(answer).encode()
                ctype = "text/plain; charset=utf-8" if code == 503 else "application/json"
            elif path in EMPTY and page is CONSOLE:
                code, ctype, body = 200, "application/json", json.dumps(EMPTY[path]).encode()
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
    assert given[:3] == [503, 503, 200] and set(given[3:]) <= {200}, given


async def test_the_fleet_console_backs_off_while_the_service_answers_503_says_so_and_shows_it_once_it_answers():
    shown = r'<header>(Fleet console) <span class="muted" id="updated">(.*?)</span>'
    httpd, given = _serve(1000, CONSOLE, "/api/agents", [])  # busy for the whole render
    try:
        said = await asyncio.to_thread(_sub, f"http://127.0.0.1:{httpd.server_address[1]}/", shown)
    finally:
        httpd.shutdown()
    # asked at 0, 1 and 3 s (then at 7 s: past the render), not every 3 s (0, 3, 6 s)
    assert said == "Fleet console | fleet service busy or starting (HTTP 503), retrying in 4 s (attempt 3)", (
        said
    )
    assert given == [503, 503, 503], given

    httpd, given = _serve(2, CONSOLE, "/api/agents", [])  # busy twice, then it answers
    try:
        said = await asyncio.to_thread(_sub, f"http://127.0.0.1:{httpd.server_address[1]}/", shown)
    finally:
        httpd.shutdown()
    assert said.startswith("Fleet console | updated "), said
    assert given[:3] == [503, 503, 200] and set(given[3:]) <= {200}, given
