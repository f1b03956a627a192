"""The agent's status endpoint under clients that never finish (a port scanner, a slow or hostile client
on the plant network): threads stay bounded, other addresses are still served, and stuck connections are
cut at the deadline however slowly they trickle bytes. Real sockets on 127.0.0.1/127.0.0.2."""

from __future__ import annotations

import http.client
import logging
import socket
import struct
import threading
import time
import types

from edge_agent.http import StatusServer


class _Agent:
    board = None
    tags: dict = {}

    def status(self) -> dict:
        return {"agent": "gw"}


def _get(port: int, source: str = "127.0.0.1") -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        c.request("GET", "/status")
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_slow_clients_hold_no_more_than_their_share_and_are_cut_at_the_deadline():
    """Each new trickling connection from an address at its half takes the place of that address's oldest one
    (before: it was refused 503, and a client of that address, behind the same NAT or on the same PC, could not
    get in while the trickler reconnected); the places left are cut at the deadline however slowly they
    trickle."""
    s = StatusServer(_Agent(), "127.0.0.1", 0, max_connections=8, deadline_s=2.0)
    s.start()
    before = threading.active_count()
    slow = []
    try:
        for _ in range(30):  # each sends half a request line, then nothing
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            c.sendall(b"GET /sta")
            slow.append(c)
        h = s.httpd
        wait_until = time.monotonic() + 30
        while h.accepted + h.refused < 30 and time.monotonic() < wait_until:
            time.sleep(0.05)
        assert h.accepted + h.refused == 30
        assert (
            h.peak <= 4 and h.evicted >= 22
        )  # 8 at once in all, half of them per address; the oldest give way
        until = time.monotonic() + 30
        while threading.active_count() - before > 4 and time.monotonic() < until:  # the evicted threads end
            time.sleep(0.05)
        assert threading.active_count() - before <= 4
        assert _get(s.port, "127.0.0.2") == (200, b'{"agent": "gw"}')  # another address is still served
        assert _get(s.port) == (200, b'{"agent": "gw"}')  # and so is the tricklers' own
        t0, cut = time.monotonic(), set()
        while len(cut) < 3 and time.monotonic() - t0 < 8:  # a byte every 0.3 s: never idle
            for i, c in enumerate(slow[-3:]):  # the 3 left after the request above took the oldest's place
                try:
                    c.sendall(b"t")
                except OSError:
                    cut.add(i)
            time.sleep(0.3)
        assert len(cut) == 3 and h.cut - h.evicted >= 3
        assert time.monotonic() - t0 < 5  # shut down at the 2-s deadline (the serving loop looks every 0.5 s)
        for c in slow:  # every one was answered 503 or cut
            c.settimeout(3)
            try:
                got = c.recv(200)
            except ConnectionResetError:
                got = b""
            assert got == b"" or got.startswith(b"HTTP/1.1 503"), got
        assert _get(s.port) == (200, b'{"agent": "gw"}')  # the slots came back
    finally:
        for c in slow:
            c.close()
        s.stop()


class _BigAgent:
    """An agent whose /status is 2 MB (a big site): a client that resets the connection is gone while its
    answer is still being written; /metrics is the agent's real Prometheus exposition."""

    board = None
    tags: dict = {}
    sources: dict = {}
    slots: dict = {}
    pipelines: list = []
    forwarders: list = []
    rules: list = []
    actions = types.SimpleNamespace(stats={}, alarm_state={})
    cfg = types.SimpleNamespace(actions={})

    def __init__(self) -> None:
        from edge_agent.metrics import Metrics

        self.metrics = Metrics()
        self.http: StatusServer | None = None
        self.gate = threading.Event()  # the test holds the answer back until its client is gone
        self.gate.set()

    def status(self) -> dict:
        self.gate.wait(5)
        return {"agent": "gw", "recent": "x" * 2_000_000}


def test_clients_that_reset_mid_answer_are_counted_and_never_flood_the_log(capfd, caplog):
    """Before: each reset client left a full traceback (two chained exceptions, ~2 KB) on stderr, from
    socketserver, after a 500 was written to the dead socket: any client on the network could flood the
    agent's log. Now each is one count in edge_status_http_connections_total{outcome="aborted"}."""
    agent = _BigAgent()
    # each request computes its own answer (none shared) once its client has reset the connection: a shared answer
    # could be written whole before the reset, to a client that then counts as served
    s = agent.http = StatusServer(agent, "127.0.0.1", 0, min_age_s=0.0, cpu_share=1.0)
    s.start()
    try:
        wait_until = time.monotonic() + 30
        for i in range(20):  # one after another (a burst from one address would meet its 503 instead)
            agent.gate.clear()
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            c.sendall(b"GET /status HTTP/1.0\r\n\r\n")
            c.close()
            agent.gate.set()
            while getattr(s.httpd, "aborted", 0) <= i and time.monotonic() < wait_until:
                time.sleep(0.005)
        code, body = _get(s.port)  # still served, whole
        assert code == 200 and len(body) > 2_000_000
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
        c.request("GET", "/metrics")
        metrics = c.getresponse().read().decode()
        c.close()
        assert 'edge_status_http_connections_total{outcome="aborted"} 20.0' in metrics, [
            line for line in metrics.splitlines() if "status_http" in line
        ]
        assert 'edge_status_http_connections_total{outcome="failed"} 0.0' in metrics
    finally:
        s.stop()
    err = capfd.readouterr().err
    assert err == "", err[:2000]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []
