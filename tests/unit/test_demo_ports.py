"""The demo's fleet service stops for its "link cut" and comes back on the same port ~15 s later: that port (and
its console's) must be one the kernel never hands to anything binding port 0 or connecting meanwhile."""

from __future__ import annotations

import socket

import pytest

from simulators.demo import Demo
from simulators.launcher import Narrator, Supervisor, ephemeral_range, service_port, start_mosquitto


def test_the_demo_cloud_ports_lie_outside_the_kernels_ephemeral_range_and_are_kept_across_the_restart(
    tmp_path,
):
    lo, hi = ephemeral_range()
    demo = Demo(tmp_path, Narrator(), fast=True, short=True)
    cloud, console = demo.cloud_ports()
    assert cloud != console
    for port in (cloud, console):
        assert not lo <= port <= hi  # bind(0) and connect() can never be given it while the service is down
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # and it was free
    assert demo.cloud_ports() == (cloud, console)  # the restart after the link cut comes back on the same


def test_a_service_port_in_use_is_never_chosen():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        busy = held.getsockname()[1]
        lo, hi = (busy + 1, 65535) if busy < 65535 else (1024, busy - 1)  # leaves only the held port outside
        with pytest.raises(RuntimeError, match="no free port"):
            service_port(ephemeral=(lo, hi), span=(busy, busy))


def test_new_port_skips_the_demos_own_ports(tmp_path, monkeypatch):
    # new_port() gives each listener of the demo its own port from service_port(): two of the demo's must never
    # meet (the simulators and agents take seconds to listen on a loaded machine)
    import simulators.demo as demo_mod

    lo, hi = ephemeral_range()
    demo = Demo(tmp_path, Narrator(), fast=True, short=True)
    cloud, console = demo.cloud_ports()
    picks = iter([cloud, console, cloud, *(service_port() for _ in range(3))])
    monkeypatch.setattr(demo_mod, "service_port", lambda: next(picks))
    port = demo.new_port()
    assert port not in (cloud, console)  # the service_port() draws that are already the demo's are skipped
    assert not lo <= port <= hi


def test_mosquitto_of_the_demo_listens_on_a_port_outside_the_ephemeral_range(tmp_path):
    # as every other listener of the demo: no connection or port-0 bind of another process is handed its port
    sup = Supervisor(tmp_path)
    try:
        port = start_mosquitto(sup, Narrator())
        lo, hi = ephemeral_range()
        assert not lo <= port <= hi
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        sup.close()
