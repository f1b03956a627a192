"""The test broker helper (``tests.support.peers.Mosquitto``): a broker that does not come up is never left behind."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support import peers
from tests.support.peers import Mosquitto, child_pids, mosquitto_binary, wait_port

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


def test_a_broker_not_listening_in_time_is_stopped_and_one_that_exits_fails_at_once_naming_its_log(tmp_path):
    """A start whose wait for the listener times out (a loaded machine) left the broker running, outliving the test
    session; it is stopped. A broker that exits (a config it refuses) fails the start at once, not after the wait, with
    the end of its log."""
    before = child_pids()
    broker = Mosquitto(tmp_path / "a")
    with pytest.raises(TimeoutError, match="nothing listens"):
        broker.start(timeout_s=0)
    assert broker.proc is None and child_pids() <= before  # before: the broker ran on
    bad = Mosquitto(tmp_path / "b", extra_conf="no_such_option true")
    with pytest.raises(RuntimeError, match="exited") as e:
        bad.start(timeout_s=20)
    assert "no_such_option" in str(e.value) and bad.proc is None


def test_a_broker_whose_port_another_peer_holds_fails_its_start_not_taken_for_that_peer(tmp_path):
    """Its port held by another listener (another test's peer drew it too): the broker exits ("Address already in
    use") and its start fails, naming it; the wait connected to the other listener and the start returned, the test
    then talking to that peer."""
    with socket.create_server(("127.0.0.1", 0)) as other:
        broker = Mosquitto(tmp_path / "m", port=other.getsockname()[1])
        try:
            with pytest.raises(RuntimeError, match="Address already in use"):
                broker.start(timeout_s=20)
            assert broker.proc is None
        finally:
            broker.stop()  # (before: running, bound once this listener closed)


def test_a_peer_listening_at_its_first_look_starts_where_proc_cannot_tell_whose_the_listener_is(monkeypatch):
    """The peer (here this process) listens before the wait's first look, and /proc/net/tcp shows no listener on
    its port (WSL1's tables are empty; a sandbox's may be another view), or the peer's fds cannot be read (a root
    without CAP_SYS_PTRACE, as in a container, and a broker that dropped to user mosquitto): its start returns once
    it has not exited within HELD_GRACE_S. It waited its whole timeout and failed, "nothing listens": every fleet
    service started so (listening at the first look), a broker that listened before the first look."""

    def unreadable(path: str) -> str:
        raise PermissionError(path)

    class Tables(type(Path())):  # /proc/net/tcp and tcp6 as such kernels show them: their header alone
        def read_text(self, *a, **k) -> str:
            text = super().read_text(*a, **k)
            return text.splitlines()[0] + "\n" if str(self).startswith("/proc/net/tcp") else text

    with socket.create_server(("127.0.0.1", 0)) as own:
        peer = SimpleNamespace(pid=os.getpid(), poll=lambda: None, returncode=None, args=["peer"])
        monkeypatch.setattr(peers, "HELD_GRACE_S", 0.1, raising=False)  # (the peer given that to exit)
        monkeypatch.setattr(peers, "Path", Tables)
        wait_port(own.getsockname()[1], 2, proc=peer)  # before: TimeoutError
        monkeypatch.setattr(peers, "Path", Path)
        monkeypatch.setattr(peers.os, "readlink", unreadable)
        wait_port(own.getsockname()[1], 2, proc=peer)  # before: TimeoutError
