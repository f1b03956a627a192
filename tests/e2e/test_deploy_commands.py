"""The commands the shipped systemd units and container files run, run here: each unit's Exec lines and each
container's ENTRYPOINT + CMD, with this environment's console scripts in place of /opt/factory-edge/venv, a
temp folder in place of /etc/factory-edge and of the state folder, loopback in place of every interface and a
free port. Each must be accepted by the program's own arguments and start (the fleet service until it
listens, the agent until it has started), then stop cleanly on SIGTERM. `systemd-analyze verify` checks a
unit's syntax and that its program exists, not that the program takes the options the unit passes."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.fleet import make_pki
from tests.support.peers import free_port

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/opt/factory-edge/venv/bin/"
# the line each long-running command prints once it serves
STARTED = {"serve": "fleet service listening on", "run": "started:"}


def _unit_commands(name: str) -> list[list[str]]:
    text = (ROOT / "deploy" / "systemd" / name).read_text()
    return [m.split() for m in re.findall(r"^Exec(?:StartPre|Start)=-?(.+)$", text, flags=re.M)]


def _container_command(name: str) -> list[list[str]]:
    text = (ROOT / "deploy" / "containers" / name).read_text().replace("\\\n", " ")
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, flags=re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, flags=re.M).group(1))
    return [entry + cmd]


CASES = {
    "cloud-trainer.service": _unit_commands("cloud-trainer.service"),
    "edge-agent.service": _unit_commands("edge-agent.service"),
    "cloud.Containerfile": _container_command("cloud.Containerfile"),
    "agent.Containerfile": _container_command("agent.Containerfile"),
}


def _here(argv: list[str], etc: Path, state: Path, port: int) -> list[str]:
    """The command as this environment runs it (scripts beside this Python, temp folders, loopback)."""
    out = []
    for i, arg in enumerate(argv):
        if i == 0:
            arg = str(Path(sys.executable).parent / arg.removeprefix(PREFIX))
        arg = arg.replace("/etc/factory-edge", str(etc)).replace("/var/lib/factory-cloud", str(state))
        arg = arg.replace("/var/lib/factory-edge", str(state))
        if out and out[-1] == "--host":
            arg = "127.0.0.1"  # tests use loopback only; the shipped files name every interface
        if out and out[-1] == "--port":
            arg = str(port)
        out.append(arg)
    return out


def _start_and_stop(argv: list[str], started: str) -> str:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 90  # a hang guard, not a timing
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            seen.append(line)
            if started in line:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=60) == 0, "".join(seen)
                return "".join(seen)
        pytest.fail(f"{' '.join(argv)} did not start (exit {proc.poll()}):\n" + "".join(seen))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("where", sorted(CASES))
def test_shipped_service_commands_are_accepted_and_start(where, tmp_path, mosquitto):
    etc, state = tmp_path / "etc", tmp_path / "state"
    make_pki(etc / "pki", agents=("gw-press-3",), admins=())
    (etc / "agent.yaml").write_text(
        "agent:\n  id: gw-press-3\n  data_dir: " + str(state) + "\n"
        f"http:\n  port: {free_port()}\n"
        f"sources:\n  broker:\n    type: mqtt\n    port: {mosquitto.port}\n"
    )
    commands = CASES[where]
    assert commands, f"{where}: no command found"
    for argv in commands:
        here = _here(argv, etc, state, free_port())
        verb = argv[1]
        if verb in STARTED:
            _start_and_stop(here, STARTED[verb])
        else:
            r = subprocess.run(here, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, f"{where}: {' '.join(argv)}: exit {r.returncode}\n{r.stdout}{r.stderr}"
