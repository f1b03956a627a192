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


READER = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
    "fcntl.flock(fd, fcntl.LOCK_SH)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def _reader(lock_file):
    """A real second process holding a shared lock on ``lock_file`` (a stuck validate probe, a backup tool) until
    its stdin is closed."""
    p = subprocess.Popen(
        [sys.executable, "-S", "-c", READER, str(lock_file)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline() == "held\n"
    return p


def _stopped_agent(data):
    """A folder an agent ran on and stopped: its pid stays written in the lock file."""
    data.mkdir()
    (data / "agent.lock").write_text("999999\n")


def test_an_agent_waits_out_a_reader_that_holds_the_lock_longer_than_a_moment(tmp_path):
    """A reader holding a shared lock past the 0.15-s retries made the agent refuse its folder "in use by another
    agent (pid 999999)", the pid of the agent that stopped: no agent held it. While only readers hold the file,
    the agent waits (``READER_WAIT_S``) and starts once they are done."""
    import threading

    data = tmp_path / "data"
    _stopped_agent(data)
    reader = _reader(data / "agent.lock")
    threading.Timer(0.4, reader.stdin.close).start()
    lock = DataDirLock(data)
    try:
        lock.acquire()  # was: DataDirInUse naming pid 999999
        assert (data / "agent.lock").read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()
        reader.wait(10)


def test_a_reader_that_stays_is_named_a_reader_not_the_stopped_agents_pid(tmp_path, monkeypatch):
    """A reader that stays past the wait: the refusal says a reader holds the lock file, not an agent (nor the pid
    left by the stopped one). An agent holding the folder is still refused as an agent at once."""
    from edge_agent import agent as agent_mod

    monkeypatch.setattr(agent_mod, "READER_WAIT_S", 0.2)
    data = tmp_path / "data"
    _stopped_agent(data)
    reader = _reader(data / "agent.lock")
    try:
        with pytest.raises(agent_mod.DataDirInUse) as ei:
            DataDirLock(data).acquire()
    finally:
        reader.stdin.close()
        reader.wait(10)
    said = str(ei.value)
    assert f"its lock file {data / 'agent.lock'} is held by a reader" in said and "not by an agent" in said, (
        said
    )
    assert "999999" not in said and "in use by another agent" not in said, said


def test_validate_says_what_a_linked_lock_file_or_a_data_dir_that_is_a_file_is(tmp_path):
    """An agent.lock that is a symbolic link (which validate does not follow) or an agent.data_dir that is a file
    was told "cannot be told ... run validate as the agent's user", advice that does not fit either."""
    from edge_agent.cli import _agent_holds

    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "elsewhere.lock").write_text("")
    (data / "agent.lock").symlink_to(tmp_path / "elsewhere.lock")
    why = _agent_holds(data)
    assert (
        "agent.lock: a symbolic link, which validate does not follow" in why and "agent's user" not in why
    ), why
    (tmp_path / "file").write_text("")
    why = _agent_holds(tmp_path / "file")
    assert f"{tmp_path / 'file'} is no folder" in why and "set agent.data_dir to a folder" in why, why
