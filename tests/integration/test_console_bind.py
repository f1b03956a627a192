"""The fleet console has no login, and without ``--console-tenant`` its ``?tenant=`` shows any tenant: it listens on
``--console-host`` (127.0.0.1 by default), never on the ``--host`` the gateways reach. A `cloud-trainer serve
--host 0.0.0.0 --console-port P` (every platform's: its gateways are elsewhere) showed every tenant's agents, events,
sample images and packages to anyone who reached port P; a console on another address without a tenant is refused."""

from __future__ import annotations

import urllib.request

import pytest

from tests.integration.test_fleet_port_owner import serve
from tests.support.fleet import ServerProcess, make_pki
from tests.support.peers import free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=("gw1",))


def listening(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp and tcp6 write them) that listen on ``port``."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hexport = local.split(":")
                if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                    out.add(address)
    return out


def test_a_service_for_every_address_keeps_its_console_on_loopback(pki, tmp_path):
    console = free_port()
    with open(tmp_path / "stderr", "w+") as err:
        srv = ServerProcess(
            tmp_path / "cloud", pki, args=["--host", "0.0.0.0", "--console-port", str(console)], stderr=err
        ).start()
        try:
            assert listening(console) == {"0100007F"}  # 127.0.0.1 alone, not 00000000 (every address)
            with urllib.request.urlopen(
                f"http://127.0.0.1:{console}/api/agents?tenant=beta", timeout=10
            ) as r:
                assert r.status == 200  # the operator's loopback console, as before
        finally:
            srv.stop()
    # said: a proxy on another host that reached the console on --host before now finds nothing there
    assert (
        f"the console listens on 127.0.0.1:{console} only, not on --host 0.0.0.0"
        in (tmp_path / "stderr").read_text()
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "fleet.example"])
def test_a_console_on_another_address_without_a_tenant_is_refused_in_one_line(pki, tmp_path, host):
    args = ["--console-port", str(free_port()), "--console-host", host]
    code, line = serve(tmp_path / "cloud", pki, free_port(), *args)
    assert code == 2 and "\n" not in line, (code, line)
    assert line.startswith(f"cloud-trainer serve: --console-host {host} without --console-tenant"), line
    assert not (tmp_path / "cloud").exists()  # refused before anything was made


def test_a_console_pinned_to_no_tenant_id_is_refused_in_one_line(pki, tmp_path):
    """An empty ``--console-tenant`` (an unset variable in a unit's or container's command line) pinned nothing:
    the console on 0.0.0.0 showed any tenant ``?tenant=`` named, past the refusal above."""
    args = ["--console-port", str(free_port()), "--console-host", "0.0.0.0", "--console-tenant", ""]
    code, line = serve(tmp_path / "cloud", pki, free_port(), *args)
    assert code == 2 and "\n" not in line, (code, line)
    assert line.startswith("cloud-trainer serve: --console-tenant '' is not a tenant id"), line
    assert not (tmp_path / "cloud").exists()


def test_a_console_on_an_ipv6_address_is_refused_in_one_line(pki, tmp_path):
    """Its HTTP server is IPv4: ``--console-host ::1`` (loopback) died at the bind with a traceback, and ``::``
    (every address) is refused as well, pinned or not."""
    args = ["--console-port", str(free_port()), "--console-host", "::1"]
    code, line = serve(tmp_path / "cloud", pki, free_port(), *args)
    assert code == 2 and "\n" not in line, (code, line)
    assert line.startswith("cloud-trainer serve: --console-host ::1: the console listens on an IPv4"), line
