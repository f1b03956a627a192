"""A real fleet service for tests: PKI in a temp folder, FleetServer on a free port, in process or as a
subprocess that can be killed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cloud_trainer.pki import init_ca, issue
from tests.support.peers import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]


def make_pki(d: Path, agents=("gw1", "gw2"), admins=("alice",)) -> Path:
    init_ca(d)
    issue(d, "fleet-service", "server", d / "server", ["127.0.0.1", "localhost"])
    for a in agents:
        issue(d, a, "agent", d / "agents" / a)
    for a in admins:
        issue(d, a, "admin", d / "admins" / a)
    return d


def fleet_server(data: Path, pki: Path, port: int, **kw):
    """An in-process ``FleetServer`` on ``port`` with the PKI ``make_pki`` made (not started)."""
    from cloud_trainer.fleet.service import FleetServer

    return FleetServer(data, port, pki / "ca.pem", pki / "server.pem", pki / "server.key", **kw)


def cloud_settings(pki: Path, port: int, agent: str = "gw1", **kw):
    from edge_agent.uplink.settings import CloudSettings

    return CloudSettings(
        endpoint=f"127.0.0.1:{port}",
        ca_file=str(pki / "ca.pem"),
        cert_file=str(pki / "agents" / f"{agent}.pem"),
        key_file=str(pki / "agents" / f"{agent}.key"),
        **{"backoff_initial_s": 0.1, "backoff_max_s": 0.5, "heartbeat_s": 0.5, "max_delay_ms": 20, **kw},
    )


class ServerProcess:
    """`cloud-trainer serve` as a real process (killable with SIGKILL, restartable on the same port)."""

    def __init__(
        self, data: Path, pki: Path, port: int | None = None, args: list[str] | None = None, stderr=None
    ) -> None:
        self.data, self.pki, self.port = data, pki, port or free_port()
        self.args = args or []
        self.stderr = stderr  # a file for the server's stderr (default: discarded)
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        """Start and wait until it listens (its own "listening" line: another replica may hold the port)."""
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloud_trainer.cli",
                "serve",
                "--data",
                str(self.data),
                "--port",
                str(self.port),
                "--pki",
                str(self.pki),
                *self.args,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.stderr if self.stderr is not None else subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()
        self.proc.stdout.close()
        if "listening" not in line:
            self.kill()
            raise RuntimeError(f"cloud-trainer serve did not start (exit {self.proc.returncode}): {line!r}")
        try:
            wait_port(self.port, 30, proc=self.proc)
        except BaseException:  # not left running after the test session (a timed-out wait, an interrupt)
            self.kill()
            raise
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
