"""The port files the demo's listeners write (`--port-file`, read by the demo to learn the port a `--port 0` got):
gone once the listener has stopped cleanly (a file left behind names a port nothing listens on any more); never
a port of 0; and a port file that cannot be written is refused in one line naming it, before anything listens."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _wait_file(proc: subprocess.Popen, path: Path, timeout_s: float = 120) -> dict | None:
    """The port file's content once written; None if the process exited first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            if proc.poll() is not None:
                return None
            time.sleep(0.05)
    raise AssertionError(f"{path} not written in {timeout_s:.0f}s")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _run(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def test_the_cameras_port_file_is_gone_after_a_clean_stop(tmp_path):
    where = tmp_path / "cam.json"
    proc = _run(["-m", "simulators.cli", "camera", "--port", "0", "--port-file", str(where), "--fps", "1"])
    try:
        assert (_wait_file(proc, where) or {}).get("port", 0) > 0, proc.stderr and proc.stderr.read()
    finally:
        code = _stop(proc)
    assert code == 0  # SIGTERM (the demo's stop) is a clean stop, as Ctrl-C is
    assert not where.exists()


def test_the_fleet_services_port_file_is_gone_after_a_clean_stop(tmp_path):
    from tests.support.fleet import make_pki

    pki = make_pki(tmp_path / "pki", agents=(), admins=())
    where = tmp_path / "cloud.json"
    proc = _run(
        ["-m", "cloud_trainer.cli", "serve", "--data", str(tmp_path / "data"), "--pki", str(pki)]
        + ["--port", "0", "--port-file", str(where)]
    )
    try:
        assert (_wait_file(proc, where) or {}).get("port", 0) > 0, proc.stderr and proc.stderr.read()
    finally:
        code = _stop(proc)
    assert code == 0
    assert not where.exists()


# `--host` given as a name of two loopback addresses (as `localhost` is where it names 127.0.0.1 and ::1)
TWO_ADDRESSES = """
import socket, sys
real = socket.getaddrinfo
def two(host, *a, **kw):
    if host == "two.test":
        return real("127.0.0.1", *a, **kw) + real("127.0.0.2", *a, **kw)
    return real(host, *a, **kw)
socket.getaddrinfo = two
from simulators.machine import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_machine_on_port_0_of_a_host_of_several_addresses_refuses_instead_of_writing_port_0(tmp_path):
    where = tmp_path / "machine.json"
    proc = _run(["-c", TWO_ADDRESSES, "--host", "two.test", "--port", "0", "--port-file", str(where)])
    try:
        got = _wait_file(proc, where)
        assert got is None, f"wrote {got}"  # formerly {"port": 0}, and it served on two other ports
        assert proc.wait(30) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    last = err.strip().splitlines()[-1]  # (after asyncua's own warnings)
    assert last.startswith("edge-sim machine: --port 0 on --host two.test listens on several addresses")
    assert "Traceback" not in err


def test_a_fleet_service_port_file_that_cannot_be_written_is_refused_in_one_line_naming_it(tmp_path, capsys):
    from cloud_trainer.fleet.server import main

    where = tmp_path / "no-such-folder" / "cloud.json"
    assert main(["--data", str(tmp_path / "data"), "--port", "0", "--port-file", str(where)]) == 2
    err = capsys.readouterr().err
    assert err == f"cloud-trainer serve: cannot write --port-file {where} (No such file or directory)\n"
    assert not (tmp_path / "data").exists()  # refused before anything was made or listened
