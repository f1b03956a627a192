"""The fleet service's memory while one agent certificate holds many single-message requests that never finish.

grpc reads a call's whole request message (up to ``max_message_bytes``, 16 MB) before the method's handler
runs. ``N`` heartbeats of ``--mb`` MB are sent by one agent, each on its own connection, through a relay that
forwards all but the last 100 kB of each connection's bytes and then reads nothing more (a sender that
stalls). The service (a real ``cloud-trainer serve``) is watched for ``--hold`` seconds: its peak RSS, the
calls it answered, and how long another agent's heartbeat takes meanwhile. ``--former``: the service without
the per-caller limit on requests being received (``concurrent_requests``, ``MalformedRequests``).

    .venv/bin/python -m bench.stalled_requests_bench [--calls 40] [--mb 15] [--hold 15] [--former]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import tempfile
import threading
import time
from pathlib import Path

import grpc

from cloud_trainer.fleet.service import channel_credentials
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import ServerProcess, make_pki
from tests.support.peers import free_port

FORMER = """
import sys
from cloud_trainer.fleet import guard
_init = guard.MalformedRequests.__init__
guard.MalformedRequests.__init__ = lambda self, max_bytes=None, quotas=None, caller=None: _init(self, max_bytes)
from cloud_trainer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return 0


class StallRelay:
    """Forwards the first ``budget`` bytes a client sends on each connection, then reads nothing more from it."""

    def __init__(self, upstream: int, budget: int) -> None:
        self.upstream, self.budget = upstream, budget
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            self._socks += [client, up]
            threading.Thread(target=self._pump, args=(client, up, self.budget), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, budget: int | None) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while budget is None or sent < budget:
                data = src.recv(min(65536, budget - sent) if budget is not None else 65536)
                if not data:
                    return
                dst.sendall(data)
                sent += len(data)

    def close(self) -> None:
        self._server.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()


async def run(calls: int, mb: int, hold: float, former: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="stalled-requests-"))
    pki = make_pki(tmp / "pki", agents=("gw1", "gw2"))
    srv = ServerProcess(tmp / "cloud", pki)
    if former:  # the same `serve`, its interceptor built without the per-caller count
        import subprocess
        import sys

        from tests.support.fleet import ROOT

        srv.proc = subprocess.Popen(
            [sys.executable, "-c", FORMER, "serve", "--data", str(srv.data), "--port", str(srv.port)]
            + ["--pki", str(pki)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert srv.proc.stdout is not None and "listening" in srv.proc.stdout.readline()
    else:
        srv.start()
    assert srv.proc is not None
    size = mb * 1_000_000
    creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
    other = channel_credentials(pki / "ca.pem", pki / "agents" / "gw2.pem", pki / "agents" / "gw2.key")
    relay = StallRelay(srv.port, size - 100_000)
    channels = [
        grpc.aio.secure_channel(
            f"127.0.0.1:{relay.port}", creds, options=[("grpc.max_send_message_length", 64 << 20), ("c", i)]
        )
        for i in range(calls)
    ]
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", creds) as ch:
            await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(labels={"a": "b"}), timeout=10)
        before = rss_mb(srv.proc.pid)
        big = pb.HeartbeatRequest(labels={"x": "a" * size})
        pending = [
            asyncio.ensure_future(rpc.FleetStub(c).Heartbeat(big, timeout=hold + 30)) for c in channels
        ]
        peak, t0 = before, time.monotonic()
        while time.monotonic() - t0 < hold:
            await asyncio.sleep(0.5)
            peak = max(peak, rss_mb(srv.proc.pid))
        answered: dict[str, int] = {}
        for c in pending:
            if c.done():
                code = c.exception().code().name if c.exception() else "OK"  # type: ignore[union-attr]
                answered[code] = answered.get(code, 0) + 1
        async with grpc.aio.secure_channel(f"127.0.0.1:{srv.port}", other) as ch:
            t = time.perf_counter()
            await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(labels={"a": "b"}), timeout=10)
            other_ms = (time.perf_counter() - t) * 1000
        print(
            f"{'former' if former else 'now'}: {calls} x {mb}-MB heartbeats stalled for {hold:g} s: service RSS "
            f"{before} -> peak {peak} MB; answered {answered or 'none'}; another agent's heartbeat {other_ms:.1f} ms"
        )
        for c in pending:
            c.cancel()
    finally:
        for c in channels:
            await c.close()
        relay.close()
        srv.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--mb", type=int, default=15)
    ap.add_argument("--hold", type=float, default=15.0)
    ap.add_argument("--former", action="store_true")
    a = ap.parse_args()
    from bench._machine import machine_line

    print(machine_line(), flush=True)
    asyncio.run(run(a.calls, a.mb, a.hold, a.former))


if __name__ == "__main__":
    main()
