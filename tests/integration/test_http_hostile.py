"""The agent's status endpoint and the fleet console against hostile and odd HTTP clients, over real sockets on
127.0.0.1: a client that asks as fast as it can does not take the agent's CPU from its inference, answers that
cost work are never computed twice at once, a failure answers 500 without the error's text (a server path, a
database host), and every answer, the stdlib's own error pages too, is marked nosniff and names no Python."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

from cloud_trainer.fleet.console import Console
from cloud_trainer.fleet.store import SQLiteStore
from edge_agent.http import StatusServer


def _get(port: int, path: str, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(data)
        out = b""
        while chunk := c.recv(65536):
            out += chunk
    return out


class _CostlyAgent:
    """``status()`` burns ``cost_s`` of CPU holding the GIL (a big site's snapshot, an outbox scan) and notes how
    often it ran and how many ran at once; ``metrics`` is the same for a scrape."""

    board = None
    tags: dict = {}

    def __init__(self, cost_s: float) -> None:
        self.cost_s, self.calls, self.busy_s = cost_s, 0, 0.0
        self.gate: Callable[[], None] | None = None  # called before each computation (a test holds it there)
        self._lock = threading.Lock()
        self.running = self.most_at_once = 0
        agent = self

        class _Metrics:
            def refresh(self, _agent) -> None:
                agent._burn()

            def exposition(self) -> bytes:
                return b"edge_up 1\n"

        self.metrics = _Metrics()

    def _burn(self) -> None:
        if self.gate is not None:
            self.gate()
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < self.cost_s:
            pass
        with self._lock:
            self.running -= 1
            self.calls += 1
            self.busy_s += time.perf_counter() - t0

    def status(self) -> dict:
        self._burn()
        return {"agent": "gw", "calls": self.calls}


def _hammer(port: int, path: str, clients: int, seconds: float) -> list[int]:
    codes: list[int] = []
    stop = time.monotonic() + seconds

    def run() -> None:
        while time.monotonic() < stop:
            code, _, body = _get(port, path)
            codes.append(code)
            if code == 200 and path == "/status":
                json.loads(body)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def test_a_client_asking_as_fast_as_it_can_takes_at_most_a_fifth_of_a_core_for_status():
    """Before: every request computed its own snapshot, in parallel threads: a script polling /status in a loop
    (or one status page open on a site whose outbox is full: a one-second scan every 2 s) kept a core of the
    2-core gateway busy, and inference waited for it. Now answers are computed one at a time with a rest of 4x
    their cost after each, and every request in between gets the last snapshot."""
    agent = _CostlyAgent(cost_s=0.02)
    s = StatusServer(agent, "127.0.0.1", 0, max_connections=16)
    s.start()
    try:
        t0 = time.monotonic()
        codes = _hammer(s.port, "/status", clients=6, seconds=1.2)
        elapsed = time.monotonic() - t0
    finally:
        s.stop()
    assert codes and set(codes) == {200}, sorted(set(codes))
    assert len(codes) > 2 * agent.calls  # most requests were answered with a snapshot computed for another
    assert agent.busy_s < 0.35 * elapsed, (
        agent.busy_s,
        elapsed,
        agent.calls,
    )  # a fifth of one core, and jitter


def test_answers_that_cost_work_are_never_computed_twice_at_once():
    """Before: concurrent scrapes (two Prometheus servers, a page and a script) each ran ``metrics.refresh`` at the
    same time; it advances counters by what is new since the last scrape, so two at once could count the same
    outbox drops twice. Now one computation runs at a time and the others share its answer."""
    agent = _CostlyAgent(cost_s=0.05)
    s = StatusServer(agent, "127.0.0.1", 0, max_connections=16)
    # all six at once, whatever the machine's load: the first computation waits until every request has asked
    # for its answer, and an answer stays shareable for 30 s (0.5 s by default: a request that a loaded machine
    # delays past it rightly gets an answer of its own, which is not what this test is about)
    s.answers.min_age_s = 30.0
    asked = threading.Condition()
    n_asked = [0]
    get = s.answers.get

    def counted_get(key, compute):
        with asked:
            n_asked[0] += 1
            asked.notify_all()
        return get(key, compute)

    def all_asked() -> None:
        with asked:
            assert asked.wait_for(lambda: n_asked[0] >= 6, timeout=60), n_asked[0]

    s.answers.get = counted_get  # type: ignore[method-assign]
    agent.gate = all_asked
    s.start()
    try:
        barrier = threading.Barrier(6)
        got: list[tuple[int, bytes]] = []

        def scrape(path: str) -> None:
            barrier.wait()
            code, _, body = _get(s.port, path)
            got.append((code, body))

        threads = [threading.Thread(target=scrape, args=(p,)) for p in ["/metrics"] * 3 + ["/status"] * 3]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        s.stop()
    assert sorted(code for code, _ in got) == [200] * 6
    assert agent.most_at_once == 1, agent.most_at_once
    assert agent.calls == 2  # one snapshot and one scrape, shared by the three requests of each


class _FailingAgent:
    board = None
    tags: dict = {}

    def status(self) -> dict:
        raise RuntimeError("database is locked: /var/lib/edge-agent/gw1/outbox/outbox.db")


def test_a_failed_status_answers_500_without_its_text_and_is_counted_and_logged_once(caplog):
    """Before: the 500 carried the exception's text (server paths) to any client on the network, and the error was
    neither counted nor logged: the operator never learned of it."""
    s = StatusServer(_FailingAgent(), "127.0.0.1", 0)
    s.start()
    caplog.set_level(logging.DEBUG, logger="protocols.http_server")
    try:
        answers = [_get(s.port, "/status") for _ in range(3)]
    finally:
        s.stop()
    for code, headers, body in answers:
        assert code == 500 and b"/var/lib" not in body and b"RuntimeError" in body, body
        assert headers["content-type"].startswith("text/plain")
    assert s.httpd.failed == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "/var/lib/edge-agent" in warnings[0], warnings  # the detail is in the log


def _console() -> tuple[Console, SQLiteStore]:
    import tempfile
    from pathlib import Path

    store = SQLiteStore(Path(tempfile.mkdtemp()) / "fleet.db")
    c = Console(SimpleNamespace(store=store, control=None), tenant="default")
    c.start()
    return c, store


def test_every_answer_is_nosniff_and_names_no_python_on_both_servers():
    """Before: no answer carried ``X-Content-Type-Options: nosniff`` (the console's 404 echoes the URL in plain
    text: ``/blob/<script>...``), and every one named the exact Python version in its ``Server`` header. Every
    console answer is also ``Cross-Origin-Resource-Policy: same-origin`` (a page of another site cannot load one
    to tell a 200 from a 404)."""
    agent = _CostlyAgent(cost_s=0.0)
    s = StatusServer(agent, "127.0.0.1", 0)
    s.start()
    console, store = _console()
    try:
        for port in (s.port, console.port):
            for path in ("/", "/status", "/api/agents", "/nowhere", "/blob/<script>alert(1)</script>"):
                code, headers, _ = _get(port, path)
                assert headers.get("x-content-type-options") == "nosniff", (port, path, code, headers)
                if port == console.port:
                    assert headers.get("cross-origin-resource-policy") == "same-origin", (path, code, headers)
                assert "python" not in headers.get("server", "").lower(), headers
            for request in (  # the stdlib's own error pages: 414, 431, 501
                b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 200 + b"\r\n",
                b"POST /status HTTP/1.1\r\nContent-Length: 10000000000\r\n\r\n",
            ):
                head = _raw(port, request).split(b"\r\n\r\n", 1)[0].decode()
                assert head.split()[1] in ("414", "431", "501"), head
                assert "X-Content-Type-Options: nosniff" in head and "Python" not in head, head
                assert port != console.port or "Cross-Origin-Resource-Policy: same-origin" in head, head
        assert _get(s.port, "/status")[0] == 200  # and both still serve
        assert _get(console.port, "/api/agents")[0] == 200
    finally:
        s.stop()
        console.stop()
        store.close()


def test_a_console_error_answers_500_without_its_text():
    """Before: ``console error: <exception text>`` went to the client: a store's error names its database file or
    its PostgreSQL host and user, on a console that tenants may reach through their proxy."""
    console, store = _console()

    def broken(*args, **kwargs):
        raise RuntimeError('connection to server at "10.1.2.3", port 5432 failed: password for user "fleet"')

    store.agents = broken  # type: ignore[method-assign]
    try:
        code, headers, body = _get(console.port, "/api/agents")
    finally:
        console.stop()
        store.close()
    assert code == 500 and b"10.1.2.3" not in body and b"5432" not in body and b"RuntimeError" in body, body
    assert console.httpd.failed == 1


_OUT_OF_DESCRIPTORS = r"""
import json, os, resource, socket, sys, time
from edge_agent.http import StatusServer

class Agent:
    board = None
    tags = {}
    def status(self):
        return {"agent": "gw"}

s = StatusServer(Agent(), "127.0.0.1", 0)
s.start()
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
os.close(held.pop())  # one for this client: the server cannot accept its connection
c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
c.sendall(b"GET /status HTTP/1.0\r\n\r\n")
t0 = time.process_time()
time.sleep(0.5)
cpu = time.process_time() - t0
for fd in held:
    os.close(fd)
t1 = time.monotonic()
answer = c.recv(1000).decode()
print(json.dumps({"cpu_s": cpu, "answer": answer, "after_s": time.monotonic() - t1, "starved": getattr(s.httpd, "starved", None)}))
s.stop()
"""


def test_a_process_out_of_file_descriptors_does_not_spin_on_accept_and_serves_again_once_it_has_them():
    """Before: with the process at its descriptor limit, ``accept()`` failed and left the connection queued; the
    serving loop retried at once, forever, burning half a core and the GIL that the agent needed to recover. Now it
    pauses (10 ms doubling to 0.5 s), warns once, and serves the queued client as soon as descriptors are free."""
    import subprocess
    import sys
    from pathlib import Path

    r = subprocess.run(
        [sys.executable, "-c", _OUT_OF_DESCRIPTORS],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["cpu_s"] < 0.05, got  # the former loop: about 0.25 s of CPU in these 0.5 s
    assert got["answer"].startswith("HTTP/1.0 200") and got["after_s"] < 5.0, (
        got
    )  # served again (backoff ≤ 0.5 s)
    assert r.stderr.count("cannot accept a connection: Too many open files") == 1, r.stderr[-2000:]


def test_a_console_client_asking_as_fast_as_it_can_holds_the_shared_store_at_most_a_fifth_of_the_time():
    """Before: every console request read the store for itself, in parallel threads; the store serves every tenant
    behind one lock (SQLite), so one tenant's script polling /api/agents in a loop (1,000 agents: tens of ms a
    read) held it most of the time and every tenant's heartbeats and uploads waited. Now the console's JSON is
    computed one answer at a time with a rest of 4x its cost after each, and shared by tenant and URL."""
    console, store = _console()
    store.heartbeat("gw1", {}, [], {}, 0)
    agents, held = store.agents, [0.0]

    def costly_agents(*args, **kwargs):
        with store.lock:  # as a read of many agents holds the store's one lock
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.02:
                pass
            held[0] += time.perf_counter() - t0
        return agents(*args, **kwargs)

    store.agents = costly_agents  # type: ignore[method-assign]
    try:
        t0 = time.monotonic()
        codes = _hammer(console.port, "/api/agents", clients=6, seconds=1.2)
        elapsed = time.monotonic() - t0
        assert json.loads(_get(console.port, "/api/agents")[2])[0]["id"] == "gw1"
    finally:
        console.stop()
        store.close()
    assert codes and set(codes) == {200}, sorted(set(codes))
    assert held[0] < 0.35 * elapsed, (held[0], elapsed)


def test_a_large_registry_file_goes_out_in_pieces_not_read_whole_into_memory(tmp_path):
    """Before: a registry file (a version folder holds the package itself, hundreds of MB for a vision model with
    its FP32 form) was read whole into memory for each request: 16 downloads at once from one address held 16
    copies in the fleet service's memory, which every tenant shares. Now it is sent in 64-KB pieces."""
    import tracemalloc

    from cloud_trainer.registry import Registry

    reg = Registry(tmp_path / "registry")
    folder = reg.root / "part-inspection" / "1.0.0"
    folder.mkdir(parents=True)
    size = 24 * 1024 * 1024
    with open(folder / "part-inspection-1.0.0.edgepkg", "wb") as f:
        f.truncate(size)  # sparse: no disk written
    store = SQLiteStore(tmp_path / "fleet.db")
    console = Console(SimpleNamespace(store=store, registry=reg, control=None), tenant="default")
    console.start()
    tracemalloc.start()
    try:
        c = http.client.HTTPConnection("127.0.0.1", console.port, timeout=5)
        c.request("GET", "/registry/part-inspection/1.0.0/part-inspection-1.0.0.edgepkg")
        r = c.getresponse()
        got = 0
        while chunk := r.read(65536):  # the client keeps no more than a piece either
            got += len(chunk)
        c.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        console.stop()
        store.close()
    assert (r.status, r.getheader("Content-Type"), got) == (200, "application/octet-stream", size)
    assert r.getheader("Cross-Origin-Resource-Policy") == "same-origin"
    assert peak < size // 4, peak


class _NgBoard:
    """NG images of 1 MB each (a 1080p heat map as PNG is 1-3 MB), rendered on request and counted."""

    def __init__(self, parts: int = 3) -> None:
        import numpy as np

        self.ng_frames = [
            (np.full((8, 8, 3), i, np.uint8), None, {"pipeline": "inspect", "seq": 100 + i})
            for i in range(parts)
        ]
        self.rendered = 0

    def ng_png(self, index: int) -> bytes:
        self.ng_frames[index]  # IndexError: no such part (404)
        self.rendered += 1
        return bytes([index % 256]) * 1_000_000

    def trend(self, pipeline: str) -> list:  # as StatusBoard's: no points yet
        return []

    def frame_png(self, pipeline: str) -> bytes:
        raise KeyError(pipeline)


def test_answers_kept_for_sharing_stay_within_their_memory_bound_whatever_keys_come():
    """What is kept stays under 32 MB and 64 answers, the newest first, whatever keys come."""
    from protocols.http_server import Answers

    answers: Answers[bytes] = Answers(min_age_s=60.0, cpu_share=1.0)
    for i in range(40):
        assert (
            answers.get(f"/made-up/{i}", lambda i=i: bytes([i % 256]) * 1_000_000)
            == bytes([i % 256]) * 1_000_000
        )
    assert 30_000_000 <= answers.kept_bytes <= 32 * 1024 * 1024, answers.kept_bytes
    assert answers.get("/made-up/39", lambda: b"again") == bytes([39]) * 1_000_000  # the newest is kept


class _PipelineAgent(_CostlyAgent):
    pipelines = [SimpleNamespace(name="inspect")]


def test_urls_a_client_makes_up_neither_render_again_nor_push_out_the_pages_answers():
    """Before: an NG image was kept per URL with its query (the page names the part's seq in it) and a trend under
    any name, so a client asking for ``/api/ng/0.png?1``, ``?2``, ... had the image rendered again for each and
    filled the 32 MB of kept answers with copies, and ``/api/trend/<anything>`` kept one answer per name: the
    page's own answers were pushed out and its clients waited for a computation of their own (up to 5 s, then
    503). Now an NG image is kept under the part it shows, whatever the query, and a name no pipeline has is
    404 with nothing computed or kept."""
    agent = _PipelineAgent(cost_s=0.0)
    agent.board = board = _NgBoard()  # type: ignore[assignment]
    s = StatusServer(agent, "127.0.0.1", 0, min_age_s=60.0)
    s.start()
    try:
        assert _get(s.port, "/status")[0] == 200
        for i in range(40):
            code, _, body = _get(s.port, f"/api/ng/{i % 3}.png?{i}")
            assert code == 200 and body == bytes([i % 3]) * 1_000_000, code
        assert board.rendered == 3, board.rendered  # once per NG part
        for name in ("nothing", "../../etc/passwd", "x" * 200):
            assert _get(s.port, f"/api/trend/{name}")[0] == 404
            assert _get(s.port, f"/api/frame/{name}.png")[0] == 404
        for index in ("-1", "1_0", "%201", "99"):
            assert _get(s.port, f"/api/ng/{index}.png")[0] == 404, index
        kept = s.answers.kept_bytes
        code, _, body = _get(s.port, "/status")
    finally:
        s.stop()
    assert kept < 4_000_000, kept
    assert code == 200 and agent.calls == 1  # the page's /status was still kept: shared, not computed again


def test_an_ng_image_is_the_part_its_url_named_after_a_new_ng_part_moved_the_indexes():
    """The page names an NG image by index and seq; a new NG part moves every index by one. An image kept under
    the part it shows is never served for another part's URL."""
    import numpy as np

    from edge_agent.status_board import StatusBoard

    agent = _PipelineAgent(cost_s=0.0)
    agent.board = board = StatusBoard()  # type: ignore[assignment]
    for i in range(2):
        board.ng_frames.append(
            (np.full((8, 8, 3), 10 * i, np.uint8), None, {"pipeline": "inspect", "seq": i})
        )
    s = StatusServer(agent, "127.0.0.1", 0, min_age_s=60.0)
    s.start()
    try:
        first = _get(s.port, "/api/ng/0.png?0")[2]
        board.ng_frames.popleft()  # a new NG part came, the oldest went: index 0 is now seq 1
        board.ng_frames.append((np.full((8, 8, 3), 200, np.uint8), None, {"pipeline": "inspect", "seq": 2}))
        now = [_get(s.port, f"/api/ng/{i}.png?{i + 1}")[2] for i in range(2)]
    finally:
        s.stop()
    import cv2

    def value(png: bytes) -> int:
        return int(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[0, 0, 0])

    assert [value(first), *map(value, now)] == [0, 10, 200]


def test_a_request_whose_headers_run_to_megabytes_is_refused_431():
    """Before: the stdlib's bound on a request's headers is 100 lines of 64 KB: each request could make the
    server hold and parse 6.5 MB holding the GIL (16 at once: 100 MB, and the agent's loop waited), and the
    process kept the memory. Now the header section is read to 64 KB in all, then 431; a browser's (cookies and
    all, some KB) is served as before."""
    s = StatusServer(_CostlyAgent(cost_s=0.0), "127.0.0.1", 0)
    s.start()
    try:
        big = (
            b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + (b"X-h: " + b"a" * 60_000 + b"\r\n") * 90
            + b"\r\n"
        )
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:

            def send() -> None:  # the server stops reading at 64 KB: the rest is refused (a broken pipe)
                try:
                    c.sendall(big)
                except OSError:
                    pass

            sender = threading.Thread(target=send)
            sender.start()
            head = c.recv(200).split(b"\r\n", 1)[0]
            sender.join()
        browser = [
            ("Cookie", "c" * 6000),
            ("User-Agent", "u" * 300),
            *((f"X-{i}", "v" * 100) for i in range(60)),
        ]
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
        c.putrequest("GET", "/status")
        for k, v in browser:
            c.putheader(k, v)
        c.endheaders()
        ok = c.getresponse().status
        c.close()
    finally:
        s.stop()
    assert head.split()[1] == b"431", head
    assert ok == 200


def _trickle(port: int, source: str) -> socket.socket:
    c = socket.socket()
    c.settimeout(5)
    c.bind((source, 0))
    c.connect(("127.0.0.1", port))
    c.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")  # and never the rest
    return c


def test_clients_trickling_requests_from_several_addresses_do_not_keep_the_page_from_others():
    """Before: a client holding every place with requests it never finishes (a slowloris; from two addresses it
    gets past the per-address half) had every other client answered 503 for as long as it kept reconnecting. Now
    a new connection takes the place of the oldest one still sending its request; an address's half is still
    its bound (its new connection takes the place of one of its own)."""
    s = StatusServer(_CostlyAgent(cost_s=0.0), "127.0.0.1", 0, max_connections=8)
    s.start()
    slow: list[socket.socket] = []
    try:
        for source in ("127.0.0.1", "127.0.0.3"):
            slow += [_trickle(s.port, source) for _ in range(4)]
        h = s.httpd
        until = time.monotonic() + 5
        while h.accepted < 8 and time.monotonic() < until:
            time.sleep(0.02)
        assert h.accepted == 8 and h.refused == 0
        code, _, body = _get_from(s.port, "127.0.0.2")
        assert code == 200 and json.loads(body)["agent"] == "gw", (code, body)
        assert h.evicted == 1 and h.cut == 1
        assert slow[0].recv(200) == b""  # the oldest trickler was shut down, unanswered
        slow.append(_trickle(s.port, "127.0.0.3"))  # its address holds its half: one of its own gives way
        until = time.monotonic() + 5
        while h.evicted < 2 and time.monotonic() < until:
            time.sleep(0.02)
        assert h.evicted == 2 and slow[4].recv(200) == b""  # 127.0.0.3's oldest, not another address's
        assert h.refused == 0 and max(h.peak, len(h._active)) <= 8
    finally:
        for c in slow:
            c.close()
        s.stop()


def _get_from(port: int, source: str) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        c.request("GET", "/status")
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _get_as(port: int, path: str, host: str) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def test_a_page_reached_under_another_sites_name_is_refused_dns_rebinding():
    """Before: any Host was answered, so a web page of another site open in a browser on the plant network could
    point its own name at the gateway (DNS rebinding) and read /status, tags and NG images from the page's own
    origin. A Host that is an IP address, localhost, this machine's name or an allowed name is answered; any
    other name gets 421."""
    agent = _CostlyAgent(cost_s=0.0)
    s = StatusServer(agent, "0.0.0.0", 0, allowed_hosts=["gateway.plant.example"])
    s.start()
    try:
        for host in (
            f"127.0.0.1:{s.port}",
            "10.0.0.7",
            f"[::1]:{s.port}",
            "localhost",
            f"{socket.gethostname()}:{s.port}",
            "Gateway.Plant.Example:8090",
        ):
            assert _get_as(s.port, "/status", host) == 200, host
        for host in ("attacker.example", f"evil.example:{s.port}", "gateway.plant.example.evil.example"):
            assert _get_as(s.port, "/status", host) == 421, host
            assert _get_as(s.port, "/", host) == 421, host
        assert _get(s.port, "/status")[0] == 200
    finally:
        s.stop()


def test_answers_are_computed_on_one_thread_whatever_thread_serves_the_request():
    """Before: each answer was computed on the thread of the request that asked (a new thread per connection). A
    1080p heat map allocates ~40 MB of arrays, and glibc keeps each allocating thread's arena at its peak: a
    client asking for heat maps in a loop grew the agent by ~200 MB (bench/status_hostile_bench.py). Now every
    answer is computed on the one thread that computes."""
    names: list[str] = []

    class Agent(_CostlyAgent):
        def status(self) -> dict:
            names.append(threading.current_thread().name)
            return {"agent": "gw"}

    s = StatusServer(Agent(cost_s=0.0), "127.0.0.1", 0, min_age_s=0.0, cpu_share=1.0)
    s.start()
    try:
        codes = [_get(s.port, "/status")[0] for _ in range(5)]
    finally:
        s.stop()
    assert codes == [200] * 5 and len(names) == 5
    assert len(set(names)) == 1, names


def test_head_is_answered_like_get_without_a_body_and_other_methods_are_refused():
    """Before: HEAD (a load balancer's or a monitoring system's health check) was answered 501, as if the agent had
    no status; now it gets GET's status and headers. OPTIONS, TRACE and made-up methods are still 501, and the
    endpoint serves on."""
    s = StatusServer(_CostlyAgent(cost_s=0.0), "127.0.0.1", 0)
    s.start()
    try:
        head = _raw(s.port, b"HEAD /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        missing = _raw(s.port, b"HEAD /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        others = [
            _raw(s.port, m + b" /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").split(b"\r\n", 1)[0]
            for m in (b"OPTIONS", b"TRACE", b"DELETE", b"FOO")
        ]
        code, _, body = _get(s.port, "/status")
    finally:
        s.stop()
    status_line, rest = head.split(b"\r\n", 1)
    headers, body_of_head = rest.split(b"\r\n\r\n", 1)
    assert status_line.split()[1] == b"200", head
    assert b"Content-Type: application/json" in headers and body_of_head == b"", head
    length = int(headers.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert length == len(body) and code == 200
    assert missing.split()[1] == b"404" and missing.endswith(b"\r\n\r\n"), missing
    assert [line.split()[1] for line in others] == [b"501"] * 4, others


class _BigStatusAgent(_CostlyAgent):
    def status(self) -> dict:
        return {"agent": "gw", "recent": "x" * 8_000_000}  # a big site's snapshot: more than a socket buffers


def _stalled_reader(port: int, source: str) -> socket.socket:
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # and it never reads: the answer stalls
    c.settimeout(5)
    c.bind((source, 0))
    c.connect(("127.0.0.1", port))
    c.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return c


def _wait_writing_over(h, n: int, seconds: float) -> None:
    """Until ``n`` answers have each been going out for ``seconds``, by the server's own clock of when each began:
    on a loaded machine an 8-MB answer is computed and begins well after its connection is accepted, so a fixed
    sleep after the accept is not enough."""
    until = time.monotonic() + 15
    while time.monotonic() < until:
        with h._lock:
            began = list(h._writing.values())
        if len(began) >= n and time.monotonic() - max(began) > seconds:
            return
        time.sleep(0.02)
    raise AssertionError(f"{len(began)} of {n} answers going out for {seconds} s")


def test_readers_that_stall_from_several_addresses_do_not_keep_the_page_from_others():
    """Before: clients that ask for a large answer and then read nothing (or a byte a second) held every place
    until the deadline, from two addresses all of them, and reconnected: every other client was answered 503.
    Now, when full, a new connection takes the place of the answer that has been going out longest, once it has
    been going out for a fifth of the deadline; a request still being read gives way first."""
    s = StatusServer(_BigStatusAgent(cost_s=0.0), "127.0.0.1", 0, max_connections=4, deadline_s=5.0)
    s.start()
    stalled: list[socket.socket] = []
    try:
        h = s.httpd
        for source in ("127.0.0.1", "127.0.0.3"):
            stalled += [_stalled_reader(s.port, source) for _ in range(2)]
        _wait_writing_over(h, 4, 1.2)  # their answers have been going out over a fifth of the deadline (1 s)
        assert h.accepted == 4 and h.refused == 0 and h.cut == 0  # the four still hold every place
        code, _, body = _get_from(s.port, "127.0.0.2")
        assert code == 200 and len(body) > 8_000_000, code
        assert h.evicted == 1 and h.refused == 0
    finally:
        for c in stalled:
            c.close()
        s.stop()


_STUCK_AT_EXIT = r"""
import socket, threading, time
from edge_agent.http import StatusServer

class Agent:
    board = None
    tags = {}
    def status(self):
        threading.Event().wait()  # a snapshot that never ends (a lock never given back)

s = StatusServer(Agent(), "127.0.0.1", 0)
s.start()
c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
c.sendall(b"GET /status HTTP/1.0\r\n\r\n")
while s.answers.computed == 0 and not s.answers._compute.locked():
    time.sleep(0.01)
print("computing", flush=True)
"""


def test_a_computation_that_never_ends_does_not_hold_the_process_at_exit():
    """The computing thread is a daemon, as the request threads are: a snapshot stuck at exit (a lock never given
    back) must not keep an agent that was told to stop from exiting (a ThreadPoolExecutor's worker is joined at
    exit: the process hung)."""
    import subprocess
    import sys
    from pathlib import Path

    r = subprocess.run(
        [sys.executable, "-c", _STUCK_AT_EXIT],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and r.stdout.strip() == "computing", (r.returncode, r.stdout, r.stderr[-2000:])


def test_a_connection_cut_while_its_answer_goes_out_is_counted_once_as_cut_not_also_aborted():
    """Before: a stalled reader whose place a new connection took was counted twice in
    ``edge_status_http_connections_total``: ``cut`` when its place was taken, and ``aborted`` (a client gone) when
    the write the server had cut then failed. One connection, one outcome: ``cut``."""
    s = StatusServer(_BigStatusAgent(cost_s=0.0), "127.0.0.1", 0, max_connections=2, deadline_s=5.0)
    s.start()
    stalled: list[socket.socket] = []
    try:
        h = s.httpd
        stalled += [_stalled_reader(s.port, source) for source in ("127.0.0.1", "127.0.0.3")]
        until = time.monotonic() + 5
        while h.accepted < 2 and time.monotonic() < until:
            time.sleep(0.02)
        serving = [t for t in threading.enumerate() if "process_request_thread" in t.name]
        _wait_writing_over(h, 2, 1.2)  # their answers have been going out over a fifth of the deadline (1 s)
        assert _get_from(s.port, "127.0.0.2")[0] == 200  # its connection took a stalled reader's place
        until = time.monotonic() + 5  # the evicted one's thread ends once its write fails
        while all(t.is_alive() for t in serving) and time.monotonic() < until:
            time.sleep(0.02)
        assert not all(t.is_alive() for t in serving)
        assert (h.evicted, h.cut, h.aborted) == (1, 1, 0), (h.evicted, h.cut, h.aborted)
    finally:
        for c in stalled:
            c.close()
        s.stop()


def test_a_stopped_console_leaves_no_computing_thread_behind():
    """Before: ``Console.stop`` stopped serving but left the thread that computes its answers waiting for work,
    for good: a cloud process that starts and stops consoles (a reload, a test suite) piled one up each time."""
    started: list[threading.Thread] = []
    for _ in range(3):
        before = set(threading.enumerate())
        console, store = _console()
        try:
            assert _get(console.port, "/api/agents")[0] == 200  # its computing thread is started
            started += [t for t in threading.enumerate() if t.name == "http-answers" and t not in before]
        finally:
            console.stop()
            store.close()
    assert len(started) == 3
    for t in started:
        t.join(timeout=5)
    assert not [t for t in started if t.is_alive()]


def test_two_hundred_clients_connecting_at_once_are_all_queued_none_waits_on_a_syn_retry():
    """Before: the listen backlog was 64 connections. A plant's monitoring clients reconnecting at once (after a
    restart, a network blip) overflowed it while the serving loop accepted them one by one: the kernel dropped
    the SYNs of 135 of 200 here, and those clients waited for their SYN's retransmission (1 s, then 3 s, 7 s).
    Checked on each client's socket: no SYN was sent twice."""
    s = StatusServer(_CostlyAgent(cost_s=0.0), "127.0.0.1", 0)
    s.start()
    clients: list[socket.socket] = []
    try:
        for _ in range(200):
            c = socket.socket()
            c.setblocking(False)
            clients.append(c)
            try:
                c.connect(("127.0.0.1", s.port))
            except BlockingIOError:
                pass

        def info(c: socket.socket) -> tuple[int, int]:  # struct tcp_info: state, total_retrans
            raw = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            return raw[0], int.from_bytes(raw[8 + 23 * 4 : 8 + 24 * 4], sys.byteorder)

        syn_sent = 2
        until = time.monotonic() + 15  # those whose SYN was dropped connect on its retransmission
        while any(info(c)[0] == syn_sent for c in clients) and time.monotonic() < until:
            time.sleep(0.05)
        retried = sum(info(c)[1] > 0 for c in clients)
        assert retried == 0, f"{retried} of 200 clients had their SYN dropped (listen backlog overflowed)"
        assert _get(s.port, "/status")[0] == 200
    finally:
        for c in clients:
            c.close()
        s.stop()


def test_a_connection_over_its_deadline_while_its_answer_is_computed_is_counted_once_as_cut():
    """Before: a connection over its deadline was counted in ``cut`` at every poll of the serving loop (0.5 s)
    for as long as its thread was still computing its answer, then once more in ``aborted`` when its write
    failed: one slow snapshot showed as several connections cut and one client gone."""
    release = threading.Event()

    class Agent(_CostlyAgent):
        def status(self) -> dict:
            release.wait(10)  # a snapshot that outlasts the deadline (a full outbox scanned)
            return {"agent": "gw"}

    s = StatusServer(Agent(cost_s=0.0), "127.0.0.1", 0, deadline_s=0.5, min_age_s=0.0, cpu_share=1.0)
    h = s.httpd
    polls = [0]
    service_actions = h.service_actions

    def counted() -> None:
        polls[0] += 1
        service_actions()

    h.service_actions = counted  # type: ignore[method-assign]
    s.start()
    c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    try:
        c.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        until = time.monotonic() + 5
        while h.cut == 0 and time.monotonic() < until:
            time.sleep(0.02)
        seen = polls[0]
        while polls[0] < seen + 2 and time.monotonic() < until:  # two more polls while it still computes
            time.sleep(0.02)
        release.set()
        while h._active and time.monotonic() < until:  # its write fails, its thread ends
            time.sleep(0.02)
        assert not h._active
        assert (h.accepted, h.cut, h.aborted) == (1, 1, 0), (h.accepted, h.cut, h.aborted)
    finally:
        release.set()
        c.close()
        s.stop()
