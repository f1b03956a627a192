"""A gateway moved to another tenant (given a new client certificate, for tenant beta, in place of acme's): what
its outbox still held, recorded while it belonged to acme (its link down, say), is acme's. A real fleet service
(gRPC, mTLS, SQLite) and a real agent on one data folder, started once with each certificate. Before, the agent
sent acme's unsent records to beta on its first link: another factory's results in beta's store."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cloud_trainer.fleet.service import FleetServer
from cloud_trainer.pki import ROLE_AGENT, init_tenant, issue
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.support import waits
from tests.support.fleet import make_pki
from tests.support.peers import free_port


def _agent(tmp_path: Path, pki: Path, cert: Path, port: int) -> Agent:
    return Agent(
        parse_config(
            {
                "agent": {"id": "gw1", "site": "plant", "line": "l1", "data_dir": str(tmp_path / "gw1")},
                "http": {"enabled": False},
                "cloud": {
                    "endpoint": f"127.0.0.1:{port}",
                    "ca_file": str(pki / "ca.pem"),
                    "cert_file": str(cert),
                    "key_file": str(cert.with_suffix(".key")),
                    "heartbeat_s": 0.3,
                    "backoff_initial_s": 0.1,
                    "backoff_max_s": 0.5,
                },
            }
        )
    )


async def test_records_made_under_one_tenant_are_held_never_sent_to_the_next(tmp_path, caplog):
    pki = make_pki(tmp_path / "pki", agents=(), admins=())
    certs = {}
    for tenant in ("acme", "beta"):
        init_tenant(pki, tenant)
        certs[tenant] = issue(
            pki, "gw1", ROLE_AGENT, pki / "tenants" / tenant / "agents" / "gw1", tenant=tenant
        )[0]
    port = free_port()
    # acme's gateway, its link down: what it records waits in its outbox
    acme = _agent(tmp_path, pki, certs["acme"], port)
    await acme.start()
    for i in range(3):
        acme.outbox.append("result", {"part": f"acme-{i}", "verdict": "NG"})
    acme.outbox.flush()
    acme_epoch = acme.outbox.epoch
    await acme.stop()

    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    beta = _agent(tmp_path, pki, certs["beta"], port)  # the same gateway, its certificate now beta's
    caplog.set_level(logging.WARNING, logger="edge_agent.outbox.store")
    try:
        await beta.start()
        beta.outbox.append("result", {"part": "beta-0", "verdict": "OK"})
        await waits.until(
            lambda: any(
                r["payload"] == {"part": "beta-0", "verdict": "OK"}
                for r in srv.store.records("gw1", tenant="beta")
            ),
            what="beta's own record at beta",
        )
        await waits.until(lambda: beta.outbox.stats()["depth"] == 0, what="beta's outbox drained")
        at_beta = srv.store.records("gw1", tenant="beta")
        assert not [r for r in at_beta if "acme" in json.dumps(r["payload"])], at_beta
        assert {r["epoch"] for r in at_beta} == {beta.outbox.epoch} != {acme_epoch}
        # acme's records are kept, counted and said: never sent, never silently deleted
        held = beta.outbox.stats()["held"]
        assert held["records"] >= 3 and held["by_kind"]["result"] == 3, held
        [kept] = held["files"]
        assert (kept["tenant"], kept["agent"], kept["epoch"]) == ("acme", "gw1", acme_epoch)
        assert Path(kept["file"]).is_file()
        said = [r.getMessage() for r in caplog.records if "tenant 'acme'" in r.getMessage()]
        assert said and "not sent" in said[0], said
    finally:
        await beta.stop()
        await srv.stop()


def test_an_outbox_is_held_only_when_its_tenant_changes_and_stays_shown_across_restarts(tmp_path):
    """A new agent id in the same tenant sends on (the records are that tenant's); an empty outbox of a former
    tenant starts afresh with nothing held; what is held stays on /status at every later start."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox

    def opened(owner: tuple[str, str]) -> Outbox:
        ob = Outbox(OutboxSettings(), tmp_path / "gw", owner=owner)
        ob.open()
        return ob

    ob = opened(("acme", "gw1"))
    ob.append("result", {"part": 1}, sample=b"\x89PNG acme's part", sample_ext=".png")
    ob.flush()
    ob.close()
    ob = opened(("acme", "gw7"))  # renamed in its tenant
    assert [r.payload for r in ob.pending()] == [b'{"part":1}'] and ob.stats()["held"]["records"] == 0
    ob.close()
    ob = opened(("beta", "gw7"))
    held = ob.stats()["held"]
    assert ob.pending() == [] and held["records"] == 1 and held["files"][0]["tenant"] == "acme"
    assert list(Path(held["files"][0]["file"] + ".samples").iterdir())  # its sample kept beside it
    ob.close()
    ob = opened(("gamma", "gw7"))  # moved again, nothing recorded at beta: nothing more held
    assert ob.stats()["held"]["records"] == 1 and ob.pending() == []
    ob.close()
    ob = opened(("gamma", "gw7"))
    assert ob.stats()["held"]["records"] == 1 and len(ob.stats()["held"]["files"]) == 1
    ob.close()


def test_a_corrupt_outbox_of_the_former_tenant_is_not_salvaged_into_the_new_ones(tmp_path, caplog):
    """The same start finds the store corrupt (a failing card) and the certificate another tenant's: what is still
    readable in it was salvaged into the fresh outbox, and so sent to the new tenant."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox
    from tests.integration.test_outbox_store_faults import scribble_pages

    ob = Outbox(OutboxSettings(), tmp_path / "gw", owner=("acme", "gw1"))
    ob.open()
    for i in range(2000):
        ob.append("result", {"i": i, "pad": "p" * 200})
    ob.flush()
    ob.close()
    scribble_pages(ob.path, every=40)
    caplog.set_level(logging.WARNING, logger="edge_agent.outbox.store")
    ob = Outbox(OutboxSettings(), tmp_path / "gw", owner=("beta", "gw1"))
    ob.open()
    try:
        assert ob.stats()["renewals"] == 1 and ob.salvaged == 0
        ob.flush()
        assert not [r for r in ob.pending() if r.kind == "result"]  # no acme result
        assert any("made under tenant 'acme'" in r.getMessage() for r in caplog.records)
        assert ob.moved_aside is not None and ob.moved_aside.is_file()  # kept, as every corrupt store is
        assert (
            ob.stats()["held"]["files"][0]["tenant"] == "acme"
        )  # held, not left to outbox-corrupt/'s turnover
    finally:
        ob.close()


def _scribble_meta(db: Path) -> None:
    """A bad block under the one small page of the ``meta`` table (the store's own record of its owner): the
    records still read, their owner does not."""
    import sqlite3

    con = sqlite3.connect(db)
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'meta'").fetchone()[0]
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\xde\xad\xbe\xef" * (page // 4))


def _store_of(tmp_path: Path, owner: tuple[str, str], n: int):
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox

    ob = Outbox(OutboxSettings(), tmp_path / "gw", owner=owner)
    ob.open()
    for i in range(n):
        ob.append("result", {"part": f"{owner[0]}-{i}", "pad": "x" * 200})
    ob.flush()
    ob.close()
    return ob


def test_a_corrupt_store_whose_owner_record_is_damaged_is_held_not_salvaged_into_the_new_tenant(tmp_path):
    """The owner is kept in outbox-epoch.json too: with the store's meta page unreadable, the 200 records acme
    made were salvaged into beta's outbox (and sent to beta). Now they are held whole; the same tenant salvages."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox

    ob = _store_of(tmp_path, ("acme", "gw1"), 200)
    _scribble_meta(ob.path)
    ob = Outbox(OutboxSettings(), tmp_path / "gw", owner=("beta", "gw1"))
    moves: list[str] = []
    ob.on_move = moves.append
    ob.open()
    try:
        ob.flush()  # (an event the open queued is committed: nothing of acme's store, not even its outbox_corrupt)
        assert not [r for r in ob.pending(10_000, 10**9) if b"acme" in r.payload]
        # the move is noted as for a healthy store: the agent forgets acme's pending deployments and withdrawals
        assert moves == ["acme"] and ob.former_tenant == "acme"
        held = ob.stats()["held"]["files"]
        assert [f["tenant"] for f in held] == ["acme"] and Path(held[0]["file"]).is_file()
    finally:
        ob.close()
    # the new epoch's file names beta: beta's own corrupt store, its meta unreadable, is salvaged as before
    ob = _store_of(tmp_path, ("beta", "gw1"), 50)
    _scribble_meta(ob.path)
    ob = Outbox(OutboxSettings(), tmp_path / "gw", owner=("beta", "gw1"))
    ob.open()
    try:
        assert len([r for r in ob.pending(10_000, 10**9) if b"beta-" in r.payload]) == 50
    finally:
        ob.close()


def test_a_corrupt_store_whose_owner_cannot_be_told_is_held(tmp_path, caplog):
    """Neither the store's meta nor outbox-epoch.json names the owner (the epoch file lost; one that records an
    epoch and no owner is of a start without a certificate, this gateway's, as a meta without an owner): the store
    is held, not salvaged into the tenant the certificate now names; tenant names are logged quoted (a newline in a
    certificate's tenant forged a log line)."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox

    ob = _store_of(tmp_path, ("acme", "gw1"), 20)
    ob.epoch_path.unlink()  # (lost: a data folder restored without it, removed by hand)
    _scribble_meta(ob.path)
    caplog.set_level(logging.INFO, logger="edge_agent.outbox.store")
    ob = Outbox(OutboxSettings(), tmp_path / "gw", owner=("beta\nWARNING forged", "gw1"))
    ob.open()
    try:
        ob.flush()  # (an event the open queued is committed: no outbox_corrupt naming the held store)
        assert ob.pending(10_000, 10**9) == [] and len(ob.stats()["held"]["files"]) == 1
        assert json.loads(ob.epoch_path.read_text())["tenant"] == "beta\nWARNING forged"
    finally:
        ob.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "cannot be told" in text and "\nWARNING forged" not in text and "'beta\\x0aWARNING forged'" in text


def test_an_untold_corrupt_event_of_the_former_tenant_is_not_told_to_the_new_one(tmp_path, monkeypatch):
    """A start under acme renews its corrupt store and keeps the outbox_corrupt event it owes in outbox-untold; killed
    before it commits it, the next start, under beta's certificate, put that event (acme's store, its epochs and
    counts) into beta's outbox. Now only a start of the same tenant tells it."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox

    class Killed(BaseException):
        pass

    def killed(self, db):  # (the kill: after the event is kept, before it is committed)
        raise Killed

    for gw, tenant, told in (("gw", "beta", 0), ("gw-same", "acme", 1)):
        ob = _store_of(tmp_path / gw, ("acme", "gw1"), 30)
        _scribble_meta(ob.path)
        with monkeypatch.context() as m:
            m.setattr(Outbox, "_tell_untold", killed)
            with pytest.raises(Killed):
                Outbox(OutboxSettings(), tmp_path / gw / "gw", owner=("acme", "gw1")).open()
        assert ob.untold_path.is_file()
        ob = Outbox(OutboxSettings(), tmp_path / gw / "gw", owner=(tenant, "gw1"))
        ob.open()
        try:
            ob.flush()
            events = [r for r in ob.pending(10_000, 10**9) if b'"outbox_corrupt"' in r.payload]
            assert len(events) == told, (tenant, events)
            assert not ob.untold_path.exists()
        finally:
            ob.close()


def _camera_gateway(tmp_path: Path, packages: dict[str, tuple[str, str]]):
    """Two tenants' certificates for gw1, a folder camera, and ``agent(tenant)``: gw1 inspecting with the package
    made for that tenant (``packages``: tenant -> (name, version)), on one data folder; and the fleet's port."""
    from simulators.camera import write_folder
    from tests.support.models import make_keypair, make_package

    frames = write_folder(tmp_path / "frames", 10, seed=0, defect_rate=0.3, size=64)
    pki = make_pki(tmp_path / "pki", agents=(), admins=())
    certs = {}
    for tenant in ("acme", "beta"):
        init_tenant(pki, tenant)
        certs[tenant] = issue(
            pki, "gw1", ROLE_AGENT, pki / "tenants" / tenant / "agents" / "gw1", tenant=tenant
        )[0]
    key, pub = make_keypair(tmp_path / "keys")
    made = {
        (n, v): make_package(tmp_path / f"pkg-{n}-{v}", kind="vision", version=v, name=n, key=key)
        for n, v in set(packages.values())
    }
    pkgs = {t: made[nv] for t, nv in packages.items()}  # one file where both tenants name the same package
    port = free_port()

    def agent(tenant: str, second_slot: bool = False) -> Agent:
        """``second_slot``: also a slot ``vision2`` (pipeline ``inspect2``) of the same tenant's package."""
        return Agent(parse_config(config(tenant, second_slot)))

    def config(tenant: str, second_slot: bool = False) -> dict:
        cert = certs[tenant]
        models = {"vision": {"package": str(pkgs[tenant]), "engine": "onnxruntime"}}
        pipelines = [{"name": "inspect", "source": "cam", "model": "vision"}]
        if second_slot:
            models["vision2"] = dict(models["vision"])
            pipelines.append({"name": "inspect2", "source": "cam", "model": "vision2"})
        return {
            "agent": {"id": "gw1", "site": "plant", "line": "l1", "data_dir": str(tmp_path / "gw1")},
            "http": {"enabled": False},
            "trusted_keys": [str(pub)],
            "models": models,
            "sources": {"cam": {"type": "camera", "url": str(frames), "fps": 5, "loop": True}},
            "pipelines": pipelines,
            "cloud": {
                "endpoint": f"127.0.0.1:{port}",
                "ca_file": str(pki / "ca.pem"),
                "cert_file": str(cert),
                "key_file": str(cert.with_suffix(".key")),
                "heartbeat_s": 0.3,
                "backoff_initial_s": 0.1,
                "backoff_max_s": 0.5,
            },
        }

    agent.config = config  # type: ignore[attr-defined]  # (the same gateway's config, for a child process)
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    return agent, srv


async def test_the_model_the_former_tenant_left_is_not_reported_to_the_new_one(tmp_path):
    """Moved from acme to beta, the gateway still holds acme's model in its slot: beta's admins read acme's package
    name, version and digest in ListAgents. The start that finds the tenant changed notes the slots' models; they
    are reported with no package, version or digest (at later starts too) until beta deploys its own."""
    agent, srv = _camera_gateway(
        tmp_path, {"acme": ("acme-secret-check", "3.7.1"), "beta": ("acme-secret-check", "3.7.1")}
    )
    await srv.start()
    try:
        a = agent("acme")
        await a.start()
        await waits.until(lambda: srv.store.agents(tenant="acme"), what="acme to see gw1")
        await waits.until(
            lambda: "acme-secret" in json.dumps(srv.store.agents(tenant="acme")[0].get("slots")),
            what="acme to see its model",
        )
        digest = a.slots["vision"].status()["digest"]
        assert digest
        await a.stop()
        for _start in range(2):  # moved; then restarted once more
            b = agent("beta")
            await b.start()
            await waits.until(lambda: srv.store.agents(tenant="beta"), what="beta to see gw1")
            await waits.until(
                lambda: srv.store.agents(tenant="beta")[0].get("slots"), what="beta to see gw1's slots"
            )
            seen = json.dumps(srv.store.agents(tenant="beta")[0]["slots"])
            # nor in the results and samples it sends (review /work/notes55/review_tenant2/ item 2)
            await waits.until(
                lambda: (
                    srv.store.records("gw1", kind="result", tenant="beta")
                    and srv.store.samples(tenant="beta")
                ),
                what="beta to get results and samples",
            )
            await b.stop()
            assert "acme-secret" not in seen and "3.7.1" not in seen and digest not in seen
            sent = json.dumps([srv.store.records("gw1", tenant="beta"), srv.store.samples(tenant="beta")])
            assert "acme-secret" not in sent and '"3.7.1"' not in sent, sent[:600]
        # moved back to acme (review /work/notes55/review_tenant2/ item 6): its own model is reported to it again
        back = agent("acme")
        await back.start()
        try:
            mine = json.dumps(back._cloud_status()["slots"])
        finally:
            await back.stop()
        assert "acme-secret" in mine and digest in mine, mine
    finally:
        await srv.stop()


async def test_a_gateway_moved_by_the_book_names_the_new_tenants_own_model(tmp_path):
    """Moved as docs/fleet-control.md says (models/ cleared, beta's own package in the config, beta's certificate),
    the model the first start installs is beta's: beta is told its name and version in ListAgents, results and
    samples. Only a model installed before the move is the former tenant's (review /work/notes55/review_tenant3/
    item 1: beta's own model went out nameless, for good on a pinned slot)."""
    import shutil

    agent, srv = _camera_gateway(
        tmp_path, {"acme": ("acme-secret-check", "3.7.1"), "beta": ("beta-own-check", "2.0.0")}
    )
    await srv.start()
    try:
        a = agent("acme")
        await a.start()
        await waits.until(
            lambda: srv.store.records("gw1", kind="result", tenant="acme"), what="acme to get results"
        )
        await a.stop()
        shutil.rmtree(
            tmp_path / "gw1" / "models"
        )  # the move, by the book: the former tenant's models cleared
        b = agent("beta")
        await b.start()
        try:
            await waits.until(
                lambda: (
                    srv.store.records("gw1", kind="result", tenant="beta")
                    and "beta-own-check"
                    in json.dumps((srv.store.agents(tenant="beta") or [{}])[0].get("slots"))
                ),
                what="beta to see its own model and get results",
            )
        finally:
            await b.stop()
        sent = json.dumps(
            [srv.store.records("gw1", kind="result", tenant="beta"), srv.store.samples(tenant="beta")]
        )
        assert "beta-own-check" in sent and '"model": ""' not in sent, sent[:600]
        assert "acme-secret" not in sent
    finally:
        await srv.stop()


@pytest.mark.parametrize("owner_row", ["kept", "from_a_former_release"])
def test_a_store_renewed_while_running_is_held_when_the_gateway_moves_to_another_tenant(tmp_path, owner_row):
    """A store the outbox renewed while running (the old one turned corrupt) was made with no owner record: after
    any renewal, a gateway moved to another tenant sent its whole renewed store to the new one (2,910 of acme's
    records to beta; review /work/notes55/review_outbox3/ item 1b). The renewed store is acme's, and held; one
    renewed by a former release (no owner record in it) is known as acme's by outbox-epoch.json."""
    import time

    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox
    from tests.integration.test_outbox_store_faults import damage_index

    data = tmp_path / "data"
    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data, owner=("acme", "gw1"))
    ob.open()
    for i in range(600):
        ob.append("result", {"tenant": "acme", "i": i})
    ob.flush()
    damage_index(ob.path)
    ob.ack([r.seq for r in ob.pending(100, 10**9)])  # the ack meets the damage: the store is renewed
    deadline = time.monotonic() + 30
    while not ob.renewals and time.monotonic() < deadline:
        ob.flush()
        time.sleep(0.05)
    assert ob.renewals, "the store was not renewed"
    for i in range(10):
        ob.append("result", {"tenant": "acme", "after": i})
    ob.flush()
    ob.close()
    if owner_row == "from_a_former_release":
        import sqlite3

        with sqlite3.connect(data / "outbox" / "outbox.db") as con:
            con.execute("DELETE FROM meta WHERE key IN ('owner_tenant', 'owner_agent')")
    moved = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data, owner=("beta", "gw1"))
    moved.open()
    try:
        sent = [r for r in moved.pending(10**6, 10**12) if r.kind == "result"]
        assert sent == [], f"{len(sent)} of acme's records handed out to send to beta"
        assert moved.former_tenant == "acme" and moved.held
    finally:
        moved.close()


async def test_a_move_found_by_a_start_killed_before_its_slots_started_still_hides_the_former_tenants_model(
    tmp_path, monkeypatch
):
    """The start that finds the gateway moved (acme -> beta) holds acme's outbox at once, but noted acme's models
    only once every slot had started (a long install): a start killed in that window left no trace of the move, the
    next start's outbox was beta's already, and beta was told acme's package, version and digest. The move is now
    noted before the slots start, and the next start finishes the note."""
    from edge_agent.models.slot import ModelSlot

    agent, srv = _camera_gateway(
        tmp_path, {"acme": ("acme-secret-check", "3.7.1"), "beta": ("acme-secret-check", "3.7.1")}
    )
    a = agent("acme")
    await a.start()
    digest = a.slots["vision"].status()["digest"]
    await a.stop()
    started = ModelSlot.start

    async def killed_while_installing(self):
        raise RuntimeError("killed while the slot starts")

    monkeypatch.setattr(ModelSlot, "start", killed_while_installing)
    cut = agent("beta")
    with pytest.raises(RuntimeError, match="killed"):
        await cut.start()
    await cut.stop()
    monkeypatch.setattr(ModelSlot, "start", started)
    await srv.start()
    try:
        b = agent("beta")
        await b.start()
        try:
            assert b.slots["vision"].status()["digest"] == digest  # acme's model serves still
            await waits.until(
                lambda: (srv.store.agents(tenant="beta") or [{}])[0].get("slots"),
                what="beta to see gw1's slots",
            )
            seen = json.dumps(srv.store.agents(tenant="beta")[0]["slots"])
        finally:
            await b.stop()
        assert "acme-secret" not in seen and "3.7.1" not in seen and digest not in seen, seen
        assert not (tmp_path / "gw1" / "former-tenant-models.pending.json").exists()
    finally:
        await srv.stop()


async def _swap_events_to_beta(tmp_path, version: str) -> tuple[list[dict], str]:
    """gw1 moved from acme (acme-secret-check 3.7.1 in slot vision) to beta, which swaps in its own beta-own-check
    ``version``: the swap's events as beta's fleet got them, and the digest of acme's model."""
    from protocols.events import EventKind
    from tests.support.models import make_keypair, make_package

    agent, srv = _camera_gateway(
        tmp_path, {"acme": ("acme-secret-check", "3.7.1"), "beta": ("acme-secret-check", "3.7.1")}
    )
    key, _ = make_keypair(tmp_path / "keys")
    own = make_package(tmp_path / "pkg-beta", kind="vision", version=version, name="beta-own-check", key=key)
    a = agent("acme")
    await a.start()
    await a.stop()
    await srv.start()
    try:
        b = agent("beta")
        await b.start()
        try:
            acme_digest = b.slots["vision"].digest
            outcome = await b.slots["vision"].swap(own, watch=False)
            assert outcome.ok, outcome
            kinds = {EventKind.SWAP_STARTED.value, EventKind.SWAPPED.value}

            def swap_events() -> list[dict]:
                return [
                    r["payload"]
                    for r in srv.store.records("gw1", kind="event", tenant="beta")
                    if r["payload"].get("kind") in kinds
                ]

            await waits.until(lambda: len(swap_events()) >= 2, what="beta to get the swap's events")
        finally:
            await b.stop()
        return swap_events(), acme_digest
    finally:
        await srv.stop()


async def test_swap_events_to_the_new_tenant_do_not_name_the_former_tenants_version(tmp_path):
    """Moved from acme to beta, the gateway swaps acme's model for beta's own: the swap's events went to beta naming
    acme's version (``from_version: 3.7.1``) while its results, samples and ListAgents blank it. They are blanked
    too; beta's own version is still named."""
    events, acme_digest = await _swap_events_to_beta(tmp_path, "2.0.0")
    sent = json.dumps(events)
    assert "3.7.1" not in sent and "acme-secret" not in sent and acme_digest not in sent, sent[:800]
    assert '"2.0.0"' in sent, sent[:800]  # beta's own version is named


async def test_the_new_tenants_own_slot_of_the_same_package_names_its_model(tmp_path):
    """Moved from acme to beta, slot vision still holds acme's model; beta adds its own slot vision2 of the same
    package (the same digest). vision's results go to beta nameless, vision2's name the model: a result counted as
    the former tenant's when any noted slot served a model of its name and version, whatever slot made it."""
    agent, srv = _camera_gateway(
        tmp_path, {"acme": ("shared-check", "1.4.0"), "beta": ("shared-check", "1.4.0")}
    )
    a = agent("acme")
    await a.start()
    await a.stop()
    await srv.start()
    try:
        b = agent("beta", second_slot=True)
        await b.start()
        try:

            def by_pipeline() -> dict[str, set[tuple[str, str]]]:
                seen: dict[str, set[tuple[str, str]]] = {}
                for r in srv.store.records("gw1", kind="result", tenant="beta"):
                    body = r["payload"]
                    seen.setdefault(body["pipeline"], set()).add((body["model"], body["model_version"]))
                return seen

            await waits.until(lambda: len(by_pipeline()) == 2, what="beta to get both pipelines' results")
        finally:
            await b.stop()
        seen = by_pipeline()
        assert seen["inspect"] == {("", "")}, seen  # acme's model, left in vision
        assert seen["inspect2"] == {("shared-check", "1.4.0")}, seen  # beta's own slot
    finally:
        await srv.stop()


def test_outbox_held_is_bounded_oldest_first_and_says_what_it_dropped(tmp_path, caplog):
    """A gateway moved back and forth (acme, beta, acme, ...) held every former store in outbox-held/, outside the
    outbox's budget: nothing bounded it. Now it stays within the budget, the oldest held stores removed first (never
    the one just held), counted on /status (held.dropped) and said (a WARNING, an outbox_budget event, cause held)."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import HELD_DIR, Outbox
    from protocols.events import EventKind

    budget = 2 * 1024 * 1024
    events: list = []

    def opened(tenant: str) -> Outbox:
        ob = Outbox(
            OutboxSettings(max_bytes=budget), tmp_path / "gw", owner=(tenant, "gw1"), on_event=events.append
        )
        ob.open()
        return ob

    for i, tenant in enumerate(["acme", "beta"] * 4):
        ob = opened(tenant)
        for n in range(400):
            ob.append("result", {"part": f"{tenant}-{i}-{n}", "pad": "x" * 1000})
        ob.flush()
        ob.close()
    ob = opened("acme")
    try:
        held = ob.stats()["held"]
    finally:
        ob.close()
    folder = tmp_path / "gw" / HELD_DIR
    on_disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert on_disk <= budget, (on_disk, budget)
    assert held["files"] and held["dropped"].get("result", 0) >= 400, held["dropped"]
    # the newest held store is kept: beta's last records (and the outbox_budget events its outbox recorded)
    assert held["files"][-1]["tenant"] == "beta" and held["files"][-1]["records"] >= 400
    said = [e for e in events if e.kind is EventKind.OUTBOX_BUDGET and e.get("cause") == "held"]
    # every store held was kept or dropped and said: 8 moves of 400 results each
    assert sum(e.get("by_kind").get("result", 0) for e in said) + held["by_kind"].get("result", 0) == 8 * 400
    # the outbox_budget events were recorded in the outbox, to be sent to the cloud (they were local only: review
    # /work/notes56/review_tenant L3)
    assert held["by_kind"].get("event", 0) + held["dropped"].get("event", 0) >= 1, held
    assert "outbox-held/ past its bound" in caplog.text


async def test_a_move_found_by_a_start_killed_while_it_prunes_outbox_held_still_hides_the_former_tenants_model(
    tmp_path, monkeypatch
):
    """The start that finds the gateway moved (acme -> beta) holds acme's outbox in outbox-held/ and keeps that
    folder within its bound, removing the oldest held stores (seconds for a large one). That prune ran inside the
    outbox's open, after acme's store was moved away and before the move was noted: a start killed there left no
    trace of the move, and beta was told acme's package, version and digest. The move is now noted before the prune
    (review /work/notes56/review_tenant M1)."""
    from edge_agent.outbox.store import Outbox

    agent, srv = _camera_gateway(
        tmp_path, {"acme": ("acme-secret-check", "3.7.1"), "beta": ("acme-secret-check", "3.7.1")}
    )
    a = agent("acme")
    await a.start()
    digest = a.slots["vision"].status()["digest"]
    await a.stop()
    pruned = Outbox._bound_held

    def killed_while_pruning(self, keep):
        raise RuntimeError("killed while outbox-held/ is pruned")

    monkeypatch.setattr(Outbox, "_bound_held", killed_while_pruning)
    cut = agent("beta")
    with pytest.raises(RuntimeError, match="killed"):
        await cut.start()
    await cut.stop()
    monkeypatch.setattr(Outbox, "_bound_held", pruned)
    await srv.start()
    try:
        b = agent("beta")
        await b.start()
        try:
            assert b.slots["vision"].status()["digest"] == digest  # acme's model serves still
            await waits.until(
                lambda: (srv.store.agents(tenant="beta") or [{}])[0].get("slots"),
                what="beta to see gw1's slots",
            )
            seen = json.dumps(srv.store.agents(tenant="beta")[0]["slots"])
        finally:
            await b.stop()
        assert "acme-secret" not in seen and "3.7.1" not in seen and digest not in seen, seen
    finally:
        await srv.stop()


def test_the_store_a_move_held_outlives_later_restarts_under_a_smaller_budget(tmp_path):
    """Every agent start keeps outbox-held/ within its bound. Only the stores held in that start were protected, so
    the restart after a move (acme -> beta, beta's config with a smaller outbox.max_bytes) removed acme's only held
    store, every never-sent record in it, one reboot after the move. Now a start that holds nothing prunes nothing,
    and the newest held store is never removed (review /work/notes56/review_tenant2 M1')."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox

    def started(tenant: str, budget: int) -> Outbox:
        ob = Outbox(
            OutboxSettings(max_bytes=budget), tmp_path / "gw", owner=(tenant, "gw1"), on_event=lambda e: None
        )
        ob.defer_held_bound = True  # as the agent's start: open, note the move, then bound outbox-held/
        ob.open()
        ob.defer_held_bound = False
        ob.bound_held()
        return ob

    ob = started("acme", 16 * 1024 * 1024)
    for n in range(1500):
        ob.append("result", {"part": f"acme-{n}", "pad": "x" * 1000})
    ob.flush()
    ob.close()
    for start in ("the move", "restart 1", "restart 2"):
        ob = started("beta", 1024 * 1024)
        try:
            held = ob.stats()["held"]
        finally:
            ob.close()
        assert [(f["tenant"], f["records"]) for f in held["files"]] == [("acme", 1500)], (start, held)
        assert not held["dropped"], (start, held)


async def test_the_new_tenants_own_version_of_the_same_number_is_named_in_swap_events(tmp_path):
    """As above, but beta's own package has the version number of acme's model (beta-own-check 3.7.1 over
    acme-secret-check 3.7.1): acme's version is blanked, beta's is named. The blanking matched the version's text,
    and beta's own 3.7.1 (``to_version``) was blanked too."""
    events, acme_digest = await _swap_events_to_beta(tmp_path, "3.7.1")
    (evt,) = [e for e in events if e["kind"] == "swapped"]
    assert evt["to_version"] == "3.7.1" and evt["from_version"] == "", evt  # beta's named, acme's blanked
    assert acme_digest not in json.dumps(events) and "acme-secret" not in json.dumps(events), events


def _acme_left(dep: Path, digest: str) -> None:
    """acme's run, stood for by the files its model manager writes in ``deployments/``: its deployment of its model
    pending (its failure never heard), the fleet's word that acme withdrew it, a health-check rollback acme's
    deployment held."""
    dep.mkdir(exist_ok=True)
    pending = {"deployment_id": "acmedep7", "slot": "vision", "version": "3.7.1", "digest": digest}
    (dep / "vision.json").write_text(json.dumps({**pending, "package": "acme-secret-check"}))
    why = f"acme-secret-check 3.7.1 was withdrawn from the registry ({TICKET})"
    for name in ("withdrawals", "withdrawals.copy"):
        (dep / name).write_text(json.dumps({"unasked": {}, "withdrawn": {digest: why}}))
    (dep / "health-rollbacks").write_text(
        json.dumps({"f" * 64: {"deployment": "acmedep6", "why": f"health check failed ({TICKET})"}})
    )


async def _beta_hears_none_of_acme(agent, srv, digest: str) -> None:
    """gw1 started under beta: three desired states handled, nothing of acme's deployments settled or sent."""
    b = agent("beta")
    await b.start()
    try:
        assert b.manager is not None and b.uplink is not None
        answered = []
        heard = b.uplink.on_desired
        assert heard is not None

        async def counted(reply):
            await heard(reply)
            answered.append(reply.generation)

        b.uplink.on_desired = counted
        await waits.until(lambda: len(answered) >= 3, what="three desired states handled")
        recorded = b.outbox.last_seq
        await waits.until(
            lambda: any(r["seq"] > recorded for r in srv.store.records("gw1", tenant="beta")),
            what="beta to get what gw1 recorded after them",
        )
        assert not any(s["deployment"].startswith("acmedep") for s in b.manager.steps), b.manager.steps
        assert digest not in b.manager.withdrawn
    finally:
        await b.stop()
    sent = json.dumps(srv.store.records("gw1", tenant="beta"))
    assert "ACME-5120" not in sent and "acmedep" not in sent and '"3.7.1"' not in sent, sent[:600]


TICKET = "misreads dark castings, ticket ACME-5120"


async def test_the_former_tenants_pending_deployment_and_withdrawal_are_not_reported_to_the_new_one(tmp_path):
    """Moved from acme to beta with acme's deployment of its model pending (its failure never heard) and the fleet's
    word that acme withdrew it (deployments/withdrawals), and a health-check rollback acme's deployment held: beta's
    first desired state settled acme's deployment to beta, a deployment_step naming acme's deployment id, its version
    and the reason acme's admin gave the withdrawal (review /work/notes57/review_w1 MEDIUM 2). The start that finds
    the move removes them; beta hears none of it."""
    agent, srv = _camera_gateway(
        tmp_path, {"acme": ("acme-secret-check", "3.7.1"), "beta": ("acme-secret-check", "3.7.1")}
    )
    await srv.start()
    try:
        a = agent("acme")
        await a.start()
        await waits.until(lambda: srv.store.agents(tenant="acme"), what="acme to see gw1")
        digest = a.slots["vision"].status()["digest"]
        await a.stop()
        dep = tmp_path / "gw1" / "deployments"
        _acme_left(dep, digest)
        await _beta_hears_none_of_acme(agent, srv, digest)
        # removed, not kept for a later start; acme's health-check rollback set aside as acme's
        assert sorted(p.name for p in dep.iterdir()) == ["health-rollbacks"]
        assert json.loads((dep / "health-rollbacks").read_text())["f" * 64]["tenant"] == "acme"
    finally:
        await srv.stop()


# the child's start under beta, killed as the outbox records beta as its new store's owner: after acme's store was
# held, before the start went on (argv[3]: the agent's config)
KILLED_AS_THE_OWNER_IS_RECORDED = """
import asyncio, json
from edge_agent.agent import Agent
from edge_agent.config import parse_config
cut_after(store, "_set_owner", lambda db, owner, *a, **k: owner[0] == "beta")
asyncio.run(Agent(parse_config(json.loads(sys.argv[3]))).start())
"""


async def test_a_start_killed_as_the_outbox_records_the_new_tenant_still_forgets_the_former_tenants_deployment(
    tmp_path,
):
    """The start that finds the gateway moved (acme -> beta) holds acme's outbox and records beta as the owner of a
    fresh one, then notes the move. A power cut between the two (~20 ms) left no trace of the move: the next start's
    outbox was beta's, acme's pending deployment and withdrawal stayed, and beta's first desired state settled them
    to beta (acme's deployment id, version and its admin's reason). The move is noted from inside the outbox's open,
    before its new owner is recorded. A real child process killed with SIGKILL there."""
    from tests.support.outbox_kills import killed_child

    agent, srv = _camera_gateway(
        tmp_path, {"acme": ("acme-secret-check", "3.7.1"), "beta": ("acme-secret-check", "3.7.1")}
    )
    a = agent("acme")
    await a.start()
    digest = a.slots["vision"].status()["digest"]
    await a.stop()
    _acme_left(tmp_path / "gw1" / "deployments", digest)
    killed_child(KILLED_AS_THE_OWNER_IS_RECORDED, tmp_path / "gw1", json.dumps(agent.config("beta")))
    await srv.start()
    try:
        await _beta_hears_none_of_acme(agent, srv, digest)
    finally:
        await srv.stop()


# the child's start under beta, killed right after the move is noted (``on_move``), before acme's store is held and
# beta recorded as the owner (argv[3]: the agent's config)
KILLED_AFTER_THE_MOVE_IS_NOTED = """
import asyncio, json
import edge_agent.agent as agentmod
from edge_agent.config import parse_config
cut_after(agentmod.Agent, "_note_move_found")
asyncio.run(agentmod.Agent(parse_config(json.loads(sys.argv[3]))).start())
"""


async def test_a_move_given_up_after_a_start_killed_as_it_noted_the_move_keeps_the_tenants_own_state(
    tmp_path, caplog
):
    """The start as beta notes the move (former-tenant-models.pending.json) before acme's store is held, and is killed
    there; the move is given up and the gateway starts as acme again, its outbox still acme's. That start took the note
    for its own move: it removed acme's own pending deployment and withdrawals and hid acme's own model from acme. The
    note names the tenant moved to; a start as another tenant drops it (INFO) and touches nothing. A real child process
    killed with SIGKILL there."""
    from tests.support.outbox_kills import killed_child

    agent, _srv = _camera_gateway(
        tmp_path, {"acme": ("acme-secret-check", "3.7.1"), "beta": ("acme-secret-check", "3.7.1")}
    )
    a = agent("acme")
    await a.start()
    digest = a.slots["vision"].status()["digest"]
    await a.stop()
    dep = tmp_path / "gw1" / "deployments"
    _acme_left(dep, digest)
    killed_child(KILLED_AFTER_THE_MOVE_IS_NOTED, tmp_path / "gw1", json.dumps(agent.config("beta")))
    pending = tmp_path / "gw1" / "former-tenant-models.pending.json"
    assert json.loads(pending.read_text())["to"] == "beta"
    a = agent("acme")  # the move given up: acme's certificate again
    with caplog.at_level(logging.INFO, logger="edge_agent.agent"):
        await a.start()
    try:
        assert a.outbox is not None and a.outbox.former_tenant is None
        assert not a._former_models, "acme's own model hidden from acme"
        assert (dep / "vision.json").exists(), "acme's own pending deployment forgotten"
        assert "withdrawn" in json.loads((dep / "withdrawals").read_text())
        assert not pending.exists()
        assert "the move from tenant 'acme' to 'beta' was not completed" in caplog.text
    finally:
        await a.stop()


async def test_a_move_back_finds_the_health_check_rollbacks_of_the_tenant_it_comes_back_to(tmp_path):
    """acme's health check rolled back a version for deployment acmedep6 (deployments/health-rollbacks): that same
    deployment, still desired, is declined, not installed again. Moved to beta and back to acme, the move to beta had
    removed the record, and acme's deployment installed the version its health check had rolled back again. It is
    set aside as acme's at the move (beta's manager does not read it) and read again once the gateway is acme's."""
    from types import SimpleNamespace

    pki = make_pki(tmp_path / "pki", agents=(), admins=())
    certs = {}
    for tenant in ("acme", "beta"):
        init_tenant(pki, tenant)
        certs[tenant] = issue(
            pki, "gw1", ROLE_AGENT, pki / "tenants" / tenant / "agents" / "gw1", tenant=tenant
        )[0]
    port = free_port()  # (no fleet: the link stays down)
    acmedep6 = SimpleNamespace(
        digest="f" * 64, deployment_id="acmedep6", package="acme-check", version="2.0.0", rollback=False
    )

    async def started(tenant: str):
        a = _agent(tmp_path, pki, certs[tenant], port)
        await a.start()
        assert a.outbox is not None  # (the record of the move, then held)
        a.outbox.append("result", {"part": tenant})
        a.outbox.flush()
        return a

    async def run() -> list[str | None]:
        whys = []
        for tenant in ("acme", "beta", "acme"):
            a = await started(tenant)
            try:
                assert a.manager is not None
                if not whys:  # acme's health check rolls back acmedep6's version
                    a.manager._hold(acmedep6, "health check failed: error rate 40.0% > 5.0%")
                whys.append(a.manager._held_why(acmedep6))
            finally:
                await a.stop()
        return whys

    acme, beta, back = await run()
    assert acme is not None and "rolled back by the health check" in acme
    assert beta is None  # acme's, not beta's
    assert back is not None and "error rate 40.0%" in back, back


# the child's start under beta, killed right after the outbox moved acme's corrupt store aside (argv[3]: the config)
KILLED_AFTER_THE_CORRUPT_STORE_IS_MOVED_ASIDE = """
import asyncio, json
from edge_agent.agent import Agent
from edge_agent.config import parse_config
cut_after(store.Outbox, "_move_aside")
asyncio.run(Agent(parse_config(json.loads(sys.argv[3]))).start())
"""


async def test_a_start_killed_after_moving_the_former_tenants_corrupt_store_aside_still_forgets_its_deployment(
    tmp_path,
):
    """acme's outbox found corrupt at the first start under beta: the move was noted only after the store was moved
    aside, and a power cut between the two left the next start to hold acme's store (its unfinished copy) with the
    move never noted: acme's pending deployment was settled to beta, a deployment_step naming acme's deployment id
    (review /work/notes58/review_data MEDIUM 2). The move is noted before the store is moved. A real child process
    killed with SIGKILL there."""
    from tests.support.outbox_kills import damage_index, killed_child

    agent, srv = _camera_gateway(
        tmp_path, {"acme": ("acme-secret-check", "3.7.1"), "beta": ("acme-secret-check", "3.7.1")}
    )
    a = agent("acme")
    await a.start()
    for i in range(50):
        a.outbox.append("result", {"part": f"acme-{i}"})
    a.outbox.flush()
    digest = a.slots["vision"].status()["digest"]
    await a.stop()
    _acme_left(tmp_path / "gw1" / "deployments", digest)
    damage_index(tmp_path / "gw1" / "outbox" / "outbox.db")
    killed_child(
        KILLED_AFTER_THE_CORRUPT_STORE_IS_MOVED_ASIDE, tmp_path / "gw1", json.dumps(agent.config("beta"))
    )
    await srv.start()
    try:
        await _beta_hears_none_of_acme(agent, srv, digest)
    finally:
        await srv.stop()
    held = [json.loads(p.read_text()) for p in (tmp_path / "gw1" / "outbox-held").glob("*.json")]
    assert [(n["tenant"], n.get("corrupt")) for n in held] == [("acme", True)], held


# the child's start under gamma with a 1 MB budget, killed as outbox-held/'s bound removes the oldest held store's
# samples: after its store file is removed, before its note is (argv[1]: the data folder)
KILLED_WHILE_THE_BOUND_REMOVES_A_HELD_STORE = """
import shutil
cut_before(shutil, "rmtree", lambda p, *a, **k: "outbox-held" in str(p))
ob = store.Outbox(OutboxSettings(max_bytes=1 << 20), sys.argv[1], owner=("gamma", "gw1"))
ob.open()
"""


def test_a_held_store_whose_removal_by_the_bound_a_kill_cut_off_is_counted_and_told_at_the_next_start(
    tmp_path,
):
    """outbox-held/'s bound removes the oldest held store (acme's 1500 results) at gamma's start; a power cut after
    its store file was removed, before its note: the drop was lost (never counted in held.dropped, no outbox_budget
    event, cause held) and the next start removed the note as a store 'deleted or moved out by hand' (review
    /work/notes58/review_data MEDIUM 3). The note is marked first; the next start finishes the drop, counted and told
    once. A real child process killed with SIGKILL there."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import HELD_DIR, Outbox
    from tests.support.outbox_kills import killed_child

    data = tmp_path / "gw"
    events: list = []

    def opened(tenant: str, budget: int, fill: int = 0) -> Outbox:
        ob = Outbox(OutboxSettings(max_bytes=budget), data, owner=(tenant, "gw1"), on_event=events.append)
        ob.open()
        for n in range(fill):
            ob.append("result", {"part": f"{tenant}-{n}", "pad": "x" * 1000})
        ob.flush()
        return ob

    opened("acme", 16 << 20, 1500).close()
    opened("beta", 16 << 20, 1500).close()  # acme's held
    killed_child(KILLED_WHILE_THE_BOUND_REMOVES_A_HELD_STORE, data)
    assert [p.name for p in (data / HELD_DIR).glob("outbox.db.acme-*")] != [], "the kill came too late"
    ob = opened("gamma", 1 << 20)
    try:
        held = ob.stats()["held"]
        told = [
            json.loads(bytes(p))
            for (p,) in ob._db.execute("SELECT payload FROM records WHERE kind = 'event'")
            if b"outbox_budget" in bytes(p)
        ]
    finally:
        ob.close()
    assert [(f["tenant"], f["records"]) for f in held["files"]] == [("beta", 1500)], held["files"]
    assert held["dropped"] == {"result": 1500}, held
    assert [(e["cause"], e["dropped"]) for e in told] == [("held", 1500)], told
    assert not list((data / HELD_DIR).glob("outbox.db.acme-*"))


# gamma's start (1 MB budget) killed right after the bound removed acme's held store (its note, store and samples
# gone), before the writer committed the outbox_budget event (argv[1]: the data folder)
KILLED_AFTER_THE_BOUND_REMOVED_A_HELD_STORE = """
cut_after(store.Outbox, "_drop_held")
ob = store.Outbox(OutboxSettings(max_bytes=1 << 20), sys.argv[1], owner=("gamma", "gw1"))
ob.open()
"""

# gamma's start as the agent runs it (the bound after the open, the writer running): killed while the held store's
# samples are removed, once the writer committed the outbox_budget event and before the note went
KILLED_AFTER_THE_HELD_DROP_WAS_COMMITTED = """
import shutil, sqlite3, time
real = shutil.rmtree
def rmtree(p, *a, **k):
    if "outbox-held" in str(p):
        db = sqlite3.connect(f"file:{ob.path}?mode=ro", uri=True)
        until = time.monotonic() + 5
        while time.monotonic() < until and not db.execute(
            "SELECT 1 FROM records WHERE kind = 'event' AND CAST(payload AS TEXT) LIKE '%outbox_budget%'"
        ).fetchone():
            time.sleep(0.01)
        power_cut()
    return real(p, *a, **k)
shutil.rmtree = rmtree
ob = store.Outbox(OutboxSettings(max_bytes=1 << 20, commit_interval_ms=10), sys.argv[1], owner=("gamma", "gw1"))
ob.defer_held_bound = True
ob.open()
ob.defer_held_bound = False
ob.bound_held()
"""


def _held_drop_told_after(tmp_path: Path, child: str) -> tuple[dict, list[dict]]:
    """acme's 1500 results held at beta's start, then ``child`` (gamma's start, 1 MB budget) killed in the bound's
    removal of acme's store; gamma's next start: its held stats and the outbox_budget events in its store."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import HELD_DIR, Outbox
    from tests.support.outbox_kills import killed_child

    data = tmp_path / "gw"

    def opened(tenant: str, budget: int, fill: int = 0) -> Outbox:
        ob = Outbox(OutboxSettings(max_bytes=budget), data, owner=(tenant, "gw1"))
        ob.open()
        for n in range(fill):
            ob.append("result", {"part": f"{tenant}-{n}", "pad": "x" * 1000})
        ob.flush()
        return ob

    opened("acme", 16 << 20, 1500).close()
    opened("beta", 16 << 20, 1500).close()  # acme's held
    killed_child(child, data)
    ob = opened("gamma", 1 << 20)
    try:
        held = ob.stats()["held"]
        told = [
            json.loads(bytes(p))
            for (p,) in ob._db.execute("SELECT payload FROM records WHERE kind = 'event'")
            if b"outbox_budget" in bytes(p)
        ]
    finally:
        ob.close()
    assert not list((data / HELD_DIR).glob("outbox.db.acme-*"))
    return held, told


def test_a_held_store_removed_by_the_bound_is_told_after_a_kill_before_its_event_was_committed(tmp_path):
    """A kill after the bound removed acme's held store (note, store and samples), before the writer committed its
    outbox_budget event: the next start found nothing, and the 1500 records were removed untold (review
    /work/notes58/review_mends M1 a). The event is kept in outbox-untold before anything is removed: told once."""
    held, told = _held_drop_told_after(tmp_path, KILLED_AFTER_THE_BOUND_REMOVED_A_HELD_STORE)
    assert [(f["tenant"], f["records"]) for f in held["files"]] == [("beta", 1500)], held["files"]
    assert [(e["cause"], e["dropped"], e["by_kind"]) for e in told] == [("held", 1500, {"result": 1500})], (
        told
    )


def test_a_held_store_removed_by_the_bound_is_told_once_after_a_kill_once_its_event_was_committed(tmp_path):
    """The bound run after the open (as the agent does): the writer committed acme's outbox_budget event while the
    samples were being removed, then a kill before the note went: the next start told the drop again, 3000
    records dropped for 1500 (review /work/notes58/review_mends M1 b). Committed with its told:<id>: told once."""
    held, told = _held_drop_told_after(tmp_path, KILLED_AFTER_THE_HELD_DROP_WAS_COMMITTED)
    assert [(f["tenant"], f["records"]) for f in held["files"]] == [("beta", 1500)], held["files"]
    assert [(e["cause"], e["dropped"]) for e in told] == [("held", 1500)], told
