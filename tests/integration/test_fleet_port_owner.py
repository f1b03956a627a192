"""Who may serve a fleet port (`cloud-trainer serve` as real processes, SQLite stores): a second service of
another store on a served port is refused at start, naming the port, the other store and its process, and the
running service keeps every agent; replicas of one store share the port only when started with ``--replicas``;
and a service killed with SIGKILL leaves nothing behind that would refuse the next start."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from cloud_trainer.fleet.service import channel_credentials
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import ROOT, ServerProcess, make_pki
from tests.support.peers import free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=("gw1",))


def serve(data, pki, port, *args) -> tuple[int | None, str]:
    """A `serve` expected not to start: (exit code, its stderr); (None, ...) if it listened after all."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_trainer.cli", "serve", "--data", str(data), "--port", str(port)]
        + ["--pki", str(pki), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    listening = "listening" in proc.stdout.readline()  # its one line when it listens, or EOF when it exits
    if listening:
        proc.kill()
    _, err = proc.communicate(timeout=30)
    return (None if listening else proc.returncode), err.strip()


def heartbeats(pki, port, n: int) -> None:
    """``n`` heartbeats of gw1, each on a new connection (the kernel picks a listener per connection)."""
    creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
    for i in range(n):
        with grpc.secure_channel(
            f"127.0.0.1:{port}", creds, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as ch:
            rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(labels={"n": str(i)}), timeout=10)


def last_label(data) -> str | None:
    with sqlite3.connect(data / "fleet.db") as con:
        row = con.execute("SELECT labels FROM agents WHERE id = 'gw1'").fetchone()
    return row and row[0]


@pytest.mark.parametrize("replicas", [[], ["--replicas"]], ids=["alone", "replicas"])
def test_a_serve_of_another_store_on_a_served_port_is_refused_and_the_running_one_keeps_the_agents(
    pki, tmp_path, replicas
):
    port = free_port()
    first = ServerProcess(tmp_path / "a", pki, port, replicas).start()
    try:
        code, line = serve(tmp_path / "b", pki, port, *replicas)
        assert code == 2, f"a service of another store started on a served port ({code}): {line}"
        assert line.startswith(f"cloud-trainer serve: port {port} ") and "\n" not in line  # one line
        assert os.path.realpath(tmp_path / "a" / "fleet.db") in line  # the store that serves the port
        assert f"pid {first.proc.pid}" in line and "cloud_trainer.cli serve" in line  # and its process
        assert not (tmp_path / "b" / "fleet.db").exists()  # nothing of the refused store was opened
        # every agent's connection still reaches the first service, whose store has them all
        heartbeats(pki, port, 12)
        assert '"n": "11"' in last_label(tmp_path / "a")
        assert first.proc.poll() is None
    finally:
        first.kill()
    # SIGKILL leaves nothing behind (no lock file to clean): a service of any store may take the port now
    second = ServerProcess(tmp_path / "b", pki, port, replicas).start()
    try:
        heartbeats(pki, port, 2)
        assert '"n": "1"' in last_label(tmp_path / "b")
    finally:
        second.stop()


def test_replicas_of_one_store_share_the_port_only_when_asked_to(pki, tmp_path):
    port = free_port()
    first = ServerProcess(tmp_path / "cloud", pki, port, ["--replicas"]).start()
    replica = None
    try:
        # the same store without --replicas: the port is not shared, said in one line naming the other process
        code, line = serve(tmp_path / "cloud", pki, port)
        assert code == 2, f"started on a port shared by replicas without --replicas ({code}): {line}"
        assert line.startswith(f"cloud-trainer serve: port {port} ") and "\n" not in line
        assert f"pid {first.proc.pid}" in line and "--replicas" in line
        # with --replicas it is a replica: it starts, and serves the agents when the first is gone
        replica = ServerProcess(tmp_path / "cloud", pki, port, ["--replicas"]).start()
        first.kill()  # SIGKILL: the replica serves alone
        heartbeats(pki, port, 3)
        assert '"n": "2"' in last_label(tmp_path / "cloud")
    finally:
        first.stop()
        if replica is not None:
            replica.stop()


async def test_services_of_two_stores_on_two_addresses_of_the_machine_share_a_port_number(pki, tmp_path):
    # 127.0.0.1:P and 127.0.0.2:P are two listening addresses: the kernel never hands one's connections to the
    # other, so two clouds (two stores) on one host, each on its own address and the usual port, both start, as
    # they did before the port guard; a third of another store on the wildcard address overlaps both: refused
    from cloud_trainer.fleet.portguard import PortTaken
    from cloud_trainer.fleet.service import FleetServer

    port = free_port()
    certs = (pki / "ca.pem", pki / "server.pem", pki / "server.key")
    a = FleetServer(tmp_path / "a", port, *certs, host="127.0.0.1")
    b = None
    try:
        await a.start()
        b = FleetServer(tmp_path / "b", port, *certs, host="127.0.0.2")
        await b.start()
        assert (a.port, b.port) == (port, port)
        with pytest.raises(
            PortTaken, match=f"port {port} is already served by a fleet service of another store"
        ):
            FleetServer(tmp_path / "c", port, *certs, host="0.0.0.0")
        assert not (tmp_path / "c" / "fleet.db").exists()
    finally:
        if b is not None:
            await b.stop()
        await a.stop()


@pytest.mark.parametrize(
    "first, second", [("127.0.0.1", "[::ffff:127.0.0.1]"), ("[::ffff:127.0.0.1]", "localhost")]
)
async def test_a_serve_of_another_store_on_another_spelling_of_the_same_address_is_refused(
    pki, tmp_path, first, second
):
    # an IPv6 listener on [::ffff:127.0.0.1] takes the connections to 127.0.0.1 (localhost here). Before, the
    # port guard compared the two as text, found no overlap, and with --replicas (SO_REUSEPORT) the second
    # service, of another store, listened beside the first on the same address: agents' connections could
    # reach a store nobody looks at. Now addresses are compared as values, and the second start is refused
    from cloud_trainer.fleet.portguard import PortTaken
    from cloud_trainer.fleet.service import FleetServer

    port = free_port()
    certs = (pki / "ca.pem", pki / "server.pem", pki / "server.key")
    a = FleetServer(tmp_path / "a", port, *certs, host=first, replicas=True)
    try:
        await a.start()
        with pytest.raises(
            PortTaken, match=f"port {port} is already served by a fleet service of another store"
        ):
            FleetServer(tmp_path / "b", port, *certs, host=second, replicas=True)
        assert not (tmp_path / "b" / "fleet.db").exists()
    finally:
        await a.stop()


@pytest.mark.parametrize("host", ["[::]", "::"])
def test_a_serve_on_the_ipv6_wildcard_of_a_port_another_program_holds_says_so_in_one_line(
    pki, tmp_path, host
):
    # --host [::] (grpc's spelling) or :: : the port is checked before grpc binds, as for an IPv4 address, so the
    # admin reads the project's one line, not grpc's own error log before it
    port = free_port()
    with socket.create_server(("0.0.0.0", port)):  # another program listens on the port
        code, line = serve(tmp_path / "cloud", pki, port, "--host", host)
    assert code == 2, f"started on a port another program holds ({code}): {line}"
    assert line.startswith(f"cloud-trainer serve: cannot listen on {host}:{port}") and "\n" not in line, line


def open_files_under(folder) -> list[str]:
    fds = Path("/proc/self/fd")
    return [t for t in (os.path.realpath(fd) for fd in fds.iterdir()) if t.startswith(str(folder))]


async def test_a_service_that_cannot_bind_its_port_leaves_nothing_of_its_own_open(pki, tmp_path):
    # grpc refuses the address (not one of this machine's): the store, the control database and the port's
    # announcement are all closed again, so an embedding process may retry, or delete the folder, at once
    from cloud_trainer.fleet.portguard import PortTaken, announced
    from cloud_trainer.fleet.service import FleetServer

    port = free_port()
    certs = (pki / "ca.pem", pki / "server.pem", pki / "server.key")
    with pytest.raises(PortTaken, match=f"cannot listen on 192.0.2.1:{port}"):
        FleetServer(tmp_path / "cloud", port, *certs, host="192.0.2.1")
    assert (tmp_path / "cloud" / "control.db").exists()  # it got as far as opening the control database
    assert open_files_under(tmp_path) == []
    assert announced(port) == []
    assert not [t for t in threading.enumerate() if t.name == f"fleet-port-{port}"]


async def test_an_announcement_whose_backlog_is_full_is_a_service_that_does_not_answer_not_a_traceback(
    pki, tmp_path, monkeypatch
):
    # a hung service still holding its announcement, with more starts queued at it than its listen backlog:
    # connecting fails at once (EAGAIN) rather than waiting; the start is refused naming that process
    from cloud_trainer.fleet import portguard
    from cloud_trainer.fleet.service import FleetServer

    monkeypatch.setattr(portguard, "ASK_TIMEOUT_S", 0.3)
    port = free_port()
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(f"\0{portguard.PREFIX}/{port}/{os.getpid()}.hung".encode())
    hung.listen(0)
    queued = []
    try:
        while True:  # fill its backlog: it never accepts
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            queued.append(c)
            try:
                c.connect(hung.getsockname())
            except BlockingIOError:
                break
        certs = (pki / "ca.pem", pki / "server.pem", pki / "server.key")
        with pytest.raises(portguard.PortTaken, match=f"pid {os.getpid()}") as refused:
            FleetServer(tmp_path / "cloud", port, *certs)
        assert "does not answer" in str(refused.value)
        assert not (tmp_path / "cloud" / "fleet.db").exists()
    finally:
        for c in queued:
            c.close()
        hung.close()


def test_a_silent_announcement_is_named_by_the_process_that_holds_it_not_by_its_name(monkeypatch):
    # anyone can bind an abstract name: the refusal names the process the kernel says holds it (SO_PEERCRED)
    from cloud_trainer.fleet import portguard

    monkeypatch.setattr(portguard, "ASK_TIMEOUT_S", 0.2)
    port = free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(f"\0{portguard.PREFIX}/{port}/999999999.0".encode())
        silent.listen(1)  # never accepts, never answers
        with pytest.raises(portguard.PortTaken, match=f"does not answer \\(pid {os.getpid()}"):
            portguard.Announcement(port, "sqlite:/x", "/x").open()
