"""``edge-agent validate --online`` leaves the MQTT client ids of its running agent untried (a connect with them takes
the agent's connections over and makes the broker publish its will). It sees the agent through the data folder's
lock: tried as a shared lock on the lock file, which an agent in another pid namespace (another container sharing
the folder) holds as well; the kernel's /proc/locks shows that agent to nobody outside its namespace. Each probe runs
in a real second process: in a new pid namespace, or dropped to an unprivileged user."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from edge_agent.agent import DataDirLock

PROBE = (
    "import os, sys\n"
    "from edge_agent.agent import DataDirLock\n"
    "from edge_agent.cli import _agent_holds\n"
    "if len(sys.argv) > 2:\n"
    "    os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[2]))\n"
    "print(DataDirLock.holder(sys.argv[1]))\n"
    "print(_agent_holds(sys.argv[1]))\n"
)


def _probe(prefix: list[str], data, *args: str) -> list[str]:
    out = subprocess.run(
        [*prefix, sys.executable, "-c", PROBE, str(data), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.getcwd(),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.splitlines()


@pytest.fixture
def held(tmp_path):
    lock = DataDirLock(tmp_path / "data")
    lock.acquire()
    yield tmp_path / "data"
    lock.release()


def test_validate_sees_its_agent_from_another_pid_namespace(held):
    """The agent holds its folder; validate runs in another pid namespace (``unshare --pid``, as in another
    container on the same volume). /proc/locks there shows no lock (the former check: not seen, the client ids
    tried, the agent's will published); the shared lock tried on the file is refused: seen, named by its pid."""
    ns = ["unshare", "--pid", "--fork", "--mount-proc"]
    if os.geteuid() != 0 or shutil.which("unshare") is None or subprocess.run([*ns, "true"]).returncode != 0:
        pytest.skip("a new pid namespace needs root and unshare (util-linux)")
    holder, why = _probe(ns, held)
    assert holder == "None"  # what /proc/locks tells in that namespace
    assert why.startswith(f"this config's agent runs (pid {os.getpid()}, {held})"), why


def test_validate_that_cannot_enter_the_data_folder_says_it_cannot_tell_and_tries_nothing(held, tmp_path):
    """validate run as a user who cannot enter the agent's data folder: neither the lock file nor /proc/locks
    (which needs the file's inode) can say whether the agent runs; the former check took that for "not running"
    and tried the client ids. It says it cannot tell, and what to do."""
    if os.geteuid() != 0:
        pytest.skip("dropping to another user needs root")
    os.chmod(tmp_path, 0o700)
    holder, why = _probe([], held, "65534")
    assert holder == "None"
    assert why.startswith("whether this config's agent runs cannot be told") and "agent's user" in why, why


def test_no_agent_on_the_folder_lets_validate_try_the_client_ids(tmp_path):
    """A folder no agent holds (one ran and stopped; or none ever ran) is free: the client ids are tried, and the
    probe leaves the folder free for an agent starting next."""
    from edge_agent.cli import _agent_holds

    assert _agent_holds(tmp_path / "none") is None
    lock = DataDirLock(tmp_path / "data")
    lock.acquire()
    lock.release()
    assert _agent_holds(tmp_path / "data") is None
    again = DataDirLock(tmp_path / "data")
    again.acquire()  # not refused
    again.release()


def test_an_agent_starting_while_validate_looks_at_its_folder_waits_the_moment_out(tmp_path):
    """validate's probe holds a shared lock on the folder's lock file for a moment; an agent starting in that moment
    was refused its folder ("in use by another agent"). It tries again for a moment; one that holds the folder is
    still refused."""
    import fcntl
    import threading

    from edge_agent.agent import DataDirInUse

    data = tmp_path / "data"
    data.mkdir()
    probe = os.open(data / "agent.lock", os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    threading.Timer(0.06, fcntl.flock, (probe, fcntl.LOCK_UN)).start()
    lock = DataDirLock(data)
    try:
        lock.acquire()  # was: DataDirInUse
        with pytest.raises(DataDirInUse, match="in use by another agent"):
            DataDirLock(data).acquire()
    finally:
        lock.release()
        os.close(probe)
