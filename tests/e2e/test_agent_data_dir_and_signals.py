"""`edge-agent run` as a process: a second agent on a data folder already in use is refused in one line
(exit 1) and the first keeps its folder; SIGHUP (a closed terminal or session) stops the agent gracefully."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, name: str, data_dir: Path) -> Path:
    cfg = {
        "agent": {"id": name, "site": "s1", "line": "l1", "data_dir": str(data_dir)},
        "outbox": {},
        "http": {"enabled": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_started(proc: subprocess.Popen, timeout_s: float = 60) -> list[str]:
    """The agent's log lines up to its 'started' line."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if " started: " in line:
            return lines
    raise AssertionError(f"the agent did not start: {''.join(lines)}")


def test_a_second_agent_on_the_same_data_folder_is_refused_in_one_line(tmp_path):
    data = tmp_path / "data"
    first = start(write_config(tmp_path, "first", data))
    try:
        wait_started(first)
        second = subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "run", str(write_config(tmp_path, "second", data))],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1, second.stderr
        lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
        refusal = [ln for ln in lines if "in use by another agent" in ln]
        assert len(refusal) == 1, second.stderr
        assert (
            f"data folder {data} is in use by another agent (pid {first.pid}); give each agent its own "
            "agent.data_dir" in refusal[0]
        )
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first one serves on
        assert (data / "agent.lock").read_text().strip() == str(first.pid)
    finally:
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out
    # the folder is free again once the first has stopped
    third = start(write_config(tmp_path, "third", data))
    try:
        wait_started(third)
    finally:
        third.send_signal(signal.SIGTERM)
        third.communicate(timeout=60)
    assert third.returncode == 0


def test_sighup_stops_the_agent_gracefully(tmp_path):
    proc = start(write_config(tmp_path, "hup", tmp_path / "data"))
    try:
        wait_started(proc)
        proc.send_signal(signal.SIGHUP)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "agent hup stopped" in out
