"""The fleet console over real HTTP answers each tenant in its own turn: one tenant's slow answer (an agent with
thousands of epochs, a store read that takes seconds) waits behind nothing of another tenant's and makes no other
tenant's answer wait; a tenant's own second answer waits behind its first (``protocols.http_server.Answers``, the
tenant its group), and with every computing thread taken by other tenants a request is ``503``, not queued."""

from __future__ import annotations

import json
import threading

import pytest

from cloud_trainer.fleet import console as console_module
from cloud_trainer.fleet.console import Console
from cloud_trainer.fleet.service import FleetServer
from tests.integration.test_console_http import _get
from tests.support.fleet import make_pki
from tests.support.peers import free_port


@pytest.fixture
async def console(tmp_path, monkeypatch):
    """A console whose agents view of tenants acme and gamma takes until the test releases it."""
    pki = make_pki(tmp_path / "pki", agents=("gw1",))
    srv = FleetServer(tmp_path / "cloud", free_port(), pki / "ca.pem", pki / "server.pem", pki / "server.key")
    for tenant, agent in (("acme", "gw-a"), ("beta", "gw-b"), ("gamma", "gw-g")):
        srv.store.heartbeat(agent, {}, [], {}, 0, tenant=tenant)
    # three holes in gw-b's seqs, the console lists the newest two (GAPS_SHOWN, lowered here)
    srv.store.ingest(
        "gw-b", [{"seq": s, "kind": "result", "t": 1.0, "payload": "{}"} for s in (1, 3, 5, 7)], tenant="beta"
    )
    monkeypatch.setattr(console_module, "GAPS_SHOWN", 2)
    release, started = threading.Event(), {"acme": threading.Event(), "gamma": threading.Event()}
    real = Console.agents

    def agents(self, tenant="default"):
        if tenant in started:
            started[tenant].set()
            release.wait(20)
        return real(self, tenant)

    monkeypatch.setattr(Console, "agents", agents)
    c = Console(srv)
    c.answers.wait_s = 0.5  # what a request with nothing to share waits (5 s in the service)
    c.start()
    slow: list[threading.Thread] = []
    try:
        yield c, started, slow, release
    finally:
        release.set()
        for t in slow:
            t.join(20)
        c.stop()
        srv.store.close()


async def test_one_tenants_slow_answer_never_makes_another_tenants_wait(console):
    c, started, slow, release = console
    slow.append(threading.Thread(target=_get, args=(c, "/api/agents?tenant=acme")))
    slow[-1].start()
    assert started["acme"].wait(10)
    # another tenant: answered (it waited up to wait_s behind acme's, then 503 "busy", before)
    code, body = _get(c, "/api/agents?tenant=beta")
    assert code == 200, body
    (gw_b,) = json.loads(body)
    assert gw_b["id"] == "gw-b" and gw_b["ingest"]["records"] == 4
    assert [(g["first"], g["last"]) for g in gw_b["gaps"]] == [(4, 4), (6, 6)] and gw_b["gaps_left_out"] == 1
    # the slow tenant's own other view waits behind its first one: busy
    code, body = _get(c, "/api/quotas?tenant=acme")
    assert code == 503 and b"busy" in body
    # a second slow tenant takes the other thread: a third tenant finds none free within wait_s and is told so
    slow.append(threading.Thread(target=_get, args=(c, "/api/agents?tenant=gamma")))
    slow[-1].start()
    assert started["gamma"].wait(10)
    code, body = _get(c, "/api/agents?tenant=beta&again")
    assert code == 503 and b"busy" in body
    # its wait for a thread was no computation of its own: beta does not rest for it (4x its 0.5-s wait, before)
    release.set()
    for t in slow:
        t.join(10)
    code, body = _get(c, "/api/agents?tenant=beta&third")
    assert code == 200, body
