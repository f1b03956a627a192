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
    return wait_for(proc, " started: ", timeout_s)


def wait_for(proc: subprocess.Popen, text: str, timeout_s: float = 60) -> list[str]:
    """The agent's log lines up to the first holding ``text``."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"the agent never said {text!r}: {''.join(lines)}")


def signalled(proc: subprocess.Popen, sig: int, after: str) -> str:
    """The agent's whole log, ``sig`` sent to it once it said ``after``."""
    try:
        lines = wait_for(proc, after)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return "".join(lines) + out


def test_a_second_agent_on_the_same_data_folder_is_refused_in_one_line_and_sighup_stops_an_agent_gracefully(
    tmp_path,
):
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
    # the folder is free again once the first has stopped; and SIGHUP (a closed terminal or session) stops an
    # agent gracefully, as SIGTERM stopped the first (one agent process fewer than a test of its own)
    third = start(write_config(tmp_path, "third", data))
    out = signalled(third, signal.SIGHUP, after=" started: ")
    assert third.returncode == 0, out
    assert "agent third stopped" in out, out


def test_sigterm_while_a_reader_holds_the_lock_file_ends_the_start_cleanly(tmp_path):
    """A reader (a stuck `validate --online` probe, a backup tool) holds a shared lock on agent.lock, which the
    start waits out for up to 5 s. A SIGTERM meanwhile ends the start at once with exit 0 (systemd's stop is a clean
    stop). Before, the wait slept on the event loop: the signal was seen only when it ended, then the start was
    refused (exit 1, the unit "failed") with "held by a reader ... still after 5 s"."""
    data = tmp_path / "data"
    data.mkdir()
    reader = subprocess.Popen(
        [
            sys.executable,
            "-S",
            "-c",
            "import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_SH)\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n",
            str(data / "agent.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "held\n"
        proc = start(write_config(tmp_path, "waits", data))
        out = signalled(
            proc, signal.SIGTERM, after="held by a reader (a shared lock), not by an agent: waiting"
        )
    finally:
        assert reader.stdin is not None
        reader.stdin.close()
        reader.wait(10)
    assert proc.returncode == 0, out
    assert "stopped while waiting for the lock on" in out and "nothing was started" in out, out
    assert "still after" not in out and "Traceback" not in out, out
