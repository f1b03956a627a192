"""A version withdrawn (``cloud-trainer withdraw``) while a gateway downloads it: a real fleet service (gRPC, mTLS,
SQLite, a registry of signed packages) and real agents (camera folder, ONNX Runtime). The fleet looked at the
withdrawal only when a download started, so a version withdrawn between that look and the last chunk, or between
the last chunk and the install, was delivered whole and installed. Now the fleet looks again before the last chunk
(and every second before the others) and the agent asks once more as the install begins: the agent stops, keeps
none of its bytes, does not install it, and says why (its log, its deployment report, the rollout's reason)."""

from __future__ import annotations

import asyncio
import threading

from cloud_trainer.fleet import service
from edge_agent.models import manager as manager_module
from tests.integration.test_fleet_control import TICK_S, fleet, new_agent, until, version  # noqa: F401

DEFECT = "misreads dark castings (ticket 5120)"

# the fixture's agents install in this process, not in an install child at each start and swap: these tests judge
# the fleet's and the manager's look at a withdrawal (before the last chunk, as the install begins), not the install
INSTALLS_IN_PROCESS = True


def _deploy(srv, agent: str, version: str = "1.1.0") -> dict:
    return srv.control.create(
        {
            "package": "part-inspection",
            "version": version,
            "slot": "vision",
            "agents": [agent],
            "strategy": "all_at_once",
        }
    )


def _leftovers(mgr) -> list[str]:
    return sorted(p.name for p in mgr.staging.rglob("*") if p.is_file())


async def _stopped_and_said_why(srv, agents, dep, mgr) -> None:
    await until(
        lambda: any(s["step"] == "failed" and s["version"] == "1.1.0" for s in mgr.steps),
        what="gw1 to stop and report why",
    )
    step = next(s for s in mgr.steps if s["step"] == "failed" and s["version"] == "1.1.0")
    assert "was withdrawn from the registry" in step["reason"] and DEFECT in step["reason"], step
    await until(lambda: srv.control._get(dep["id"])["state"] == "halted", what="the rollout to halt")
    assert DEFECT in srv.control._get(dep["id"])["reason"]
    await asyncio.sleep(1.0)  # (several heartbeats: it is not tried again for this deployment)
    assert version(agents["gw1"]) == "1.0.0" and agents["gw1"].slots["vision"].state == "active"
    assert [s["step"] for s in mgr.steps if s["version"] == "1.1.0"].count("downloading") == 1
    assert _leftovers(mgr) == []  # no partial file nor package of it kept


async def test_a_version_withdrawn_between_the_download_start_and_its_last_chunk_is_not_delivered(
    fleet,  # noqa: F811
    monkeypatch,
):
    srv, agents, reg = fleet
    mgr = agents["gw1"].manager
    began, withdrawn = threading.Event(), threading.Event()
    open_at = service._open_at

    def opened_after_the_withdrawal(
        path, offset
    ):  # the fleet's reader, once the download's first look passed
        began.set()
        withdrawn.wait(10)
        return open_at(path, offset)

    monkeypatch.setattr(service, "_open_at", opened_after_the_withdrawal)
    dep = _deploy(srv, "gw1")
    try:
        await until(began.is_set, what="gw1's download to begin")
        reg.withdraw("part-inspection", "1.1.0", DEFECT)
    finally:
        withdrawn.set()
    await _stopped_and_said_why(srv, agents, dep, mgr)


async def test_a_version_withdrawn_after_its_last_chunk_is_not_installed(fleet, monkeypatch):  # noqa: F811
    srv, agents, reg = fleet
    mgr = agents["gw1"].manager
    downloaded, withdrawn = threading.Event(), threading.Event()
    digest_of = manager_module._sha256

    def hashed_after_the_withdrawal(path):  # the agent checks the bytes it received, every chunk sent
        downloaded.set()
        withdrawn.wait(10)
        return digest_of(path)

    monkeypatch.setattr(manager_module, "_sha256", hashed_after_the_withdrawal)
    dep = _deploy(srv, "gw1")
    try:
        await until(downloaded.is_set, what="gw1's download to end")
        reg.withdraw("part-inspection", "1.1.0", DEFECT)
    finally:
        withdrawn.set()
    await _stopped_and_said_why(srv, agents, dep, mgr)


async def test_a_withdrawal_stops_a_download_in_its_course_and_a_recheck_reads_one_index(
    fleet,  # noqa: F811
    monkeypatch,
):
    """The per-second re-check in the middle of a download (chunks of 4 KiB, re-checked at each): a version
    withdrawn after a few chunks is stopped before its last one. Each re-check reads the package's own index.json
    only: it re-read every index of the tenant's registry (``names()`` and one ``list()`` per name, 449 ms at
    20,000 versions), under the control's lock, in one of the tenant's package read places."""
    import re

    from cloud_trainer.registry import Registry

    srv, agents, reg = fleet
    mgr = agents["gw1"].manager
    for i in range(60):  # other packages of the tenant
        (reg.root / f"other-{i}").mkdir()
        (reg.root / f"other-{i}" / "index.json").write_text("[]")
    total = reg.by_digest(reg.get("part-inspection", "1.1.0")["digest"]).stat().st_size
    monkeypatch.setattr(service, "CHUNK", 4096)
    monkeypatch.setattr(service, "RECHECK_S", 0.0)
    reads = {"names": 0, "list": 0}
    per_check: list[dict] = []
    names, listed = Registry.names, Registry.list

    def counted_names(self):
        reads["names"] += 1
        return names(self)

    def counted_list(self, name):
        reads["list"] += 1
        return listed(self, name)

    monkeypatch.setattr(Registry, "names", counted_names)
    monkeypatch.setattr(Registry, "list", counted_list)
    still = service.FleetServicer._still_served

    async def counted_still(self, *args):
        if len(per_check) == 3:
            reg.withdraw("part-inspection", "1.1.0", DEFECT)
        before = dict(reads)
        try:
            await still(self, *args)
        finally:
            per_check.append({k: reads[k] - before[k] for k in reads})

    monkeypatch.setattr(service.FleetServicer, "_still_served", counted_still)
    dep = _deploy(srv, "gw1")
    await _stopped_and_said_why(srv, agents, dep, mgr)
    step = next(s for s in mgr.steps if s["step"] == "failed" and s["version"] == "1.1.0")
    stopped_at = int(re.search(r"stopped the download at (\d+) bytes", step["reason"])[1])
    assert 0 < stopped_at < total, (stopped_at, total)
    assert len(per_check) == 4 and all(c == {"names": 0, "list": 1} for c in per_check), per_check


async def test_download_rechecks_during_a_rollout_write_leave_the_services_threads_free(tmp_path):
    """Review /work/notes55/review_tenant2/ item 3: 8 gateways of t1 download while t1's rollout step holds the
    control's lock with its desired states moved inside the write (as ``_set_desired_many`` does). Each re-check
    asked ``deployed_to`` in a thread of the loop's shared executor and waited out the write there: every
    ``to_thread`` of the service (another tenant's record batch, an admit) waited too."""
    import json
    import os
    import time

    import grpc

    from cloud_trainer.fleet.service import FleetServer, channel_credentials
    from cloud_trainer.pki import ROLE_AGENT, init_tenant, issue
    from protocols.gen import fleet_pb2 as pb
    from protocols.gen import fleet_pb2_grpc as rpc
    from tests.support.fleet import make_pki
    from tests.support.peers import free_port

    n, size, rate, hold = 10, 8 * 1024 * 1024, 2e6, 2.5
    pki = make_pki(tmp_path / "pki", agents=(), admins=())
    reg = tmp_path / "registry"
    init_tenant(pki, "t1")
    certs = [
        issue(pki, f"gw{i}", ROLE_AGENT, pki / "tenants" / "t1" / "agents" / f"gw{i}", tenant="t1")[0]
        for i in range(n)
    ]
    d = reg / ".tenants" / "t1" / "part"
    (d / "1.0.0").mkdir(parents=True)
    (d / "1.0.0" / "part-1.0.0.edgepkg").write_bytes(os.urandom(size))
    entry = {"name": "part", "version": "1.0.0", "status": "published", "digest": "f" * 64}
    (d / "index.json").write_text(json.dumps([{**entry, "package": "part-1.0.0.edgepkg"}]))
    srv = FleetServer(
        tmp_path / "cloud", free_port(), pki / "ca.pem", pki / "server.pem", pki / "server.key", registry=reg
    )
    await srv.start()
    chans = []
    try:
        with srv.control.lock:
            for i in range(n):
                srv.control._set_desired(
                    f"gw{i}", "vision", "part", "1.0.0", "f" * 64, size, "d1", tenant="t1"
                )
        chans = [
            grpc.aio.secure_channel(
                f"127.0.0.1:{srv.port}", channel_credentials(pki / "ca.pem", c, c.with_suffix(".key"))
            )
            for c in certs
        ]
        got_all: list[int] = []

        async def download(i: int) -> None:
            t0, got = time.monotonic(), 0
            request = pb.DownloadRequest(digest="f" * 64)
            async for c in rpc.FleetStub(chans[i]).DownloadPackage(request, timeout=60):
                got += len(c.data)
                ahead = got / rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            got_all.append(got)

        waits: list[float] = []
        done = asyncio.Event()

        async def another_tenants_work() -> None:
            while not done.is_set():
                t0 = time.monotonic()
                await asyncio.to_thread(lambda: None)
                waits.append(time.monotonic() - t0)
                await asyncio.sleep(0.05)

        def rollout_write() -> None:
            time.sleep(1.0)
            with srv.control._write():
                srv.control.desired_marks["t1"] += 1
                time.sleep(hold)

        th = threading.Thread(target=rollout_write)
        th.start()
        bg = asyncio.ensure_future(another_tenants_work())
        await asyncio.gather(*(download(i) for i in range(n)))
        done.set()
        await bg
        await asyncio.to_thread(th.join)
        assert got_all == [size] * n  # the downloads went on through the write
        assert max(waits) < 0.5, f"a to_thread of the service waited {max(waits):.2f} s for the re-checks"
    finally:
        for c in chans:
            await c.close()
        await srv.stop()


def _fleet_again(srv, tmp_path):
    """The fleet service started again on the same port, control state and registry (after ``srv.stop()``)."""
    from cloud_trainer.fleet.service import FleetServer

    pki = tmp_path / "pki"
    return FleetServer(
        tmp_path / "cloud",
        srv.port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        registry=tmp_path / "registry",
        tick_s=TICK_S,
    )


async def _installed_while_the_fleet_is_gone(srv, reg, monkeypatch, *, then: str | None = None):
    """1.1.0 deployed to gw1 arrives whole, then, before the install can ask whether the fleet still sends it, the
    version is withdrawn (``then``: after a second deployment to gw1, of that version, which supersedes the first)
    and the fleet stops. Returns (the first deployment, the second or None); gw1 goes on installing 1.1.0 unasked."""
    downloaded, gone = threading.Event(), threading.Event()
    digest_of = manager_module._sha256

    def hashed_once_the_fleet_is_gone(path):  # the agent checks the bytes it received, every chunk sent
        downloaded.set()
        gone.wait(30)
        return digest_of(path)

    monkeypatch.setattr(manager_module, "_sha256", hashed_once_the_fleet_is_gone)
    first, second = _deploy(srv, "gw1"), None
    try:
        await until(downloaded.is_set, what="gw1's download to end")
        if then is not None:  # (1.1.0 again: another deployment id, the same digest)
            second = _deploy(srv, "gw1", then)
        reg.withdraw("part-inspection", "1.1.0", DEFECT)
        # gone at once, as a crash (a grace of 1 s waited out the agent's heartbeat stream)
        await srv.stop(grace_s=0)
    finally:
        gone.set()
    return first, second


async def test_a_version_withdrawn_while_the_fleet_was_unreachable_at_install_is_taken_out_once_it_answers(
    fleet,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    """The package arrives whole, then the fleet goes down (a restart, the link) before the install can ask it
    whether it still sends the version, and the version is withdrawn meanwhile. The install goes on (the bytes were
    whole and served a moment ago) and serves past its health window, but once the fleet answers again the agent
    asks again: the deployment is reported failed with the withdrawal's reason (the rollout halts) and the slot goes
    back to its previous version. Before, it was never asked again: the agent confirmed 1.1.0 healthy at the first
    heartbeat, the rollout completed and the withdrawn model served for good."""
    from protocols.events import EventKind

    srv, agents, reg = fleet
    mgr = agents["gw1"].manager
    dep, _ = await _installed_while_the_fleet_is_gone(srv, reg, monkeypatch)
    # installed unasked, and kept past its health window (1 s: the previous model no longer held)
    await until(lambda: version(agents["gw1"]) == "1.1.0", what="gw1 to install 1.1.0 unasked")
    await until(lambda: agents["gw1"].slots["vision"].state == "active", what="1.1.0's health window to pass")
    back = _fleet_again(srv, tmp_path)
    await back.start()
    try:
        await until(
            lambda: any(s["step"] == "failed" and s["version"] == "1.1.0" for s in mgr.steps),
            what="gw1 to ask again and report the withdrawal",
        )
        step = next(s for s in mgr.steps if s["step"] == "failed" and s["version"] == "1.1.0")
        assert "was withdrawn from the registry" in step["reason"] and DEFECT in step["reason"], step
        assert not any(s["step"] == "healthy" and s["version"] == "1.1.0" for s in mgr.steps), mgr.steps
        said = [
            e
            for e in agents["gw1"].events
            if e.kind is EventKind.DEPLOYMENT_STEP and DEFECT in str(e.to_json_dict().get("reason"))
        ]
        assert said, "no event names the withdrawal"
        await until(lambda: back.control._get(dep["id"])["state"] == "halted", what="the rollout to halt")
        assert DEFECT in back.control._get(dep["id"])["reason"]
        # the halt sends 1.0.0 back (an admin's rollback): the withdrawn model no longer serves
        await until(lambda: version(agents["gw1"]) == "1.0.0", what="gw1 back on 1.0.0")
        # asked, and no longer served: nothing left of the withdrawal on disk
        await until(
            lambda: not mgr.withdrawn and not list(mgr.pending_dir.glob("withdrawal*")),
            what="the withdrawal of a version no longer served forgotten, on disk too",
        )
    finally:
        await back.stop(grace_s=0)


async def test_a_version_deployed_again_while_the_fleet_was_unreachable_then_withdrawn_is_not_confirmed_healthy(
    fleet,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    """As above, but while gw1 could not ask, the admin deploys 1.1.0 again (a second deployment of the same
    version, which supersedes the first for gw1: a canary by hand, then the line), then withdraws it. Once the fleet
    answers, the withdrawal is reported to the deployment the fleet now wants (the second) and the version is never
    confirmed healthy. Before, the failure went to the superseded first deployment only (ignored by the fleet), the
    second was confirmed healthy ("it runs this version"), its rollout completed and the withdrawn model served for
    good (review /work/notes56/review_tenant H1)."""
    srv, agents, reg = fleet
    mgr = agents["gw1"].manager
    first, again = await _installed_while_the_fleet_is_gone(srv, reg, monkeypatch, then="1.1.0")
    await until(lambda: version(agents["gw1"]) == "1.1.0", what="gw1 to install 1.1.0 unasked")
    await until(lambda: agents["gw1"].slots["vision"].state == "active", what="1.1.0's health window to pass")
    back = _fleet_again(srv, tmp_path)
    await back.start()
    try:
        await until(
            lambda: back.control._get(again["id"])["state"] in ("halted", "completed"),
            what="the second deployment's outcome",
        )
        got = back.control._get(again["id"])
        assert got["state"] == "halted", got
        assert DEFECT in got["reason"], got
        assert not any(s["step"] == "healthy" and s["version"] == "1.1.0" for s in mgr.steps), mgr.steps
        await until(lambda: version(agents["gw1"]) == "1.0.0", what="gw1 back on 1.0.0")
        assert back.control._get(first["id"])["state"] != "completed"
    finally:
        await back.stop(grace_s=0)


async def _told_the_install_first(agents, srv, reg, monkeypatch, tmp_path):
    """1.1.0 installed unasked, deployed again and withdrawn (``_installed_while_the_fleet_is_gone``); the fleet
    answers again inside 1.1.0's health window, and the window ends before the next heartbeat's desired state is
    looked at (a heartbeat not yet due, a reconnect backoff): the install's own re-check reports the withdrawal to
    the deployment it installed only (superseded). Returns (gw1, the second deployment, the fleet started again,
    the gate that lets desired states through again)."""
    from tests.integration.test_fleet_control import _restart_with_health

    gw1 = await _restart_with_health(agents, "gw1", window_s=6.0, min_items=5, min_latency_increase_ms=10_000)
    mgr = gw1.manager
    gate, real = asyncio.Event(), mgr.on_desired

    async def heartbeat_not_yet_due(reply):
        if gate.is_set():
            await real(reply)

    _, again = await _installed_while_the_fleet_is_gone(srv, reg, monkeypatch, then="1.1.0")
    await until(lambda: gw1.slots["vision"].state == "watching", what="1.1.0's health window")
    mgr.on_desired = heartbeat_not_yet_due
    back = _fleet_again(srv, tmp_path)
    await back.start()
    try:
        await until(lambda: not mgr.busy.get("vision"), timeout_s=40, what="the install task to end")
    except BaseException:
        await back.stop(grace_s=0)
        raise
    return gw1, again, back, gate


async def test_a_version_deployed_again_and_withdrawn_halts_when_the_fleet_answers_the_install_first(
    fleet,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    """Every later desired state naming the withdrawn version was skipped: the second deployment stayed assigned, no
    halt, and the withdrawn model served on. Now a desired state naming a withdrawn version is told it failed, once
    per deployment: the rollout halts (review /work/notes56/review_tenant2 H1')."""
    srv, agents, reg = fleet
    _, again, back, gate = await _told_the_install_first(agents, srv, reg, monkeypatch, tmp_path)
    try:
        gate.set()
        await until(
            lambda: back.control._get(again["id"])["state"] in ("halted", "completed"),
            what="the second deployment's outcome",
        )
        got = back.control._get(again["id"])
        assert got["state"] == "halted", got
        assert DEFECT in str(got), got  # halted for the withdrawal's reason
    finally:
        await back.stop(grace_s=0)


async def test_a_withdrawal_whose_failure_the_fleet_has_not_heard_holds_across_a_restart(
    fleet,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    """As above, but the fleet does not take the failure told to the second deployment (a fault at the fleet, the
    link cut), and gw1 restarts before it is heard. The withdrawal was kept in memory only: the restarted agent, its
    slot serving 1.1.0 past its window, confirmed the second deployment healthy ("it runs this version"), the rollout
    completed and the withdrawn model served for good. It is kept on disk until the slot no longer serves it: the
    restarted agent tells the second deployment it failed, and the rollout halts."""
    srv, agents, reg = fleet
    gw1, again, back, gate = await _told_the_install_first(agents, srv, reg, monkeypatch, tmp_path)
    refused: list[str] = []
    on_report = back.control.on_report

    def not_taken(agent, dep, slot, ver, step, *a, **kw):  # the fleet does not take gw1's word on 1.1.0
        if agent == "gw1" and ver == "1.1.0" and step in ("failed", "healthy"):
            refused.append(step)
            raise RuntimeError("the fleet's store is busy")
        return on_report(agent, dep, slot, ver, step, *a, **kw)

    back.control.on_report = not_taken
    try:
        gate.set()
        await until(lambda: "failed" in refused, what="gw1 to tell the second deployment it failed")
        await gw1.stop()  # before the fleet heard it
        back.control.on_report = on_report
        agents["gw1"] = gw1 = new_agent(gw1.cfg)  # (its installed check in this process, as the fixture's)
        await gw1.start()
        assert version(gw1) == "1.1.0" and gw1.slots["vision"].state == "active"  # past its window
        await until(
            lambda: back.control._get(again["id"])["state"] in ("halted", "completed"),
            what="the second deployment's outcome",
        )
        got = back.control._get(again["id"])
        assert got["state"] == "halted", got
        assert DEFECT in str(got), got
        assert not any(s["step"] == "healthy" and s["version"] == "1.1.0" for s in gw1.manager.steps)
        await until(lambda: version(gw1) == "1.0.0", what="gw1 back on 1.0.0")
    finally:
        await back.stop(grace_s=0)


async def test_a_recheck_the_fleet_answers_permission_denied_is_asked_again_not_read_as_still_sent(
    fleet,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    """While gw1 could not ask about 1.1.0, the admin deployed 1.3.0 to it (signed by a key gw1 does not trust: refused
    at verify, 1.1.0 serves on) and withdrew 1.1.0. Asked again, the fleet answers PERMISSION_DENIED (1.1.0 is no longer in gw1's desired state),
    which says nothing about a withdrawal. It was read as "the fleet still sends it": the note was dropped and the
    withdrawn 1.1.0 confirmed healthy. Now it is unknown: asked again later, never confirmed healthy meanwhile. Not
    asked again while no desired state names it (it was asked once a heartbeat, for as long as 1.1.0 served: review
    /work/notes57/review_w1)."""
    srv, agents, reg = fleet
    mgr = agents["gw1"].manager
    await _installed_while_the_fleet_is_gone(srv, reg, monkeypatch, then="1.3.0")
    await until(lambda: version(agents["gw1"]) == "1.1.0", what="gw1 to install 1.1.0 unasked")
    await until(lambda: agents["gw1"].slots["vision"].state == "active", what="1.1.0's health window to pass")
    back = _fleet_again(srv, tmp_path)
    await back.start()
    try:
        await until(  # (installed after the question about 1.1.0, in the same desired state)
            lambda: any(s["step"] == "failed" and s["version"] == "1.3.0" for s in mgr.steps),
            what="gw1 to refuse 1.3.0",
        )
        assert not any(s["step"] == "healthy" and s["version"] == "1.1.0" for s in mgr.steps), mgr.steps
        assert "vision" in mgr._unasked()  # asked again once a desired state names it
        unasked = mgr._unasked()["vision"]["digest"]
        gw1 = agents["gw1"]
        asked, handled = [], []
        ask, handle = gw1.uplink.client.stub.DownloadPackage, gw1.uplink.on_desired

        def download(request, **kw):
            asked.append(request.digest)
            return ask(request, **kw)

        async def desired(reply):
            await handle(reply)
            handled.append(reply.generation)

        monkeypatch.setattr(gw1.uplink.client.stub, "DownloadPackage", download)
        monkeypatch.setattr(gw1.uplink, "on_desired", desired)
        await until(lambda: len(handled) >= 4, what="four more desired states handled")
        assert unasked not in asked, f"asked {asked.count(unasked)} times in {len(handled)} desired states"
        # the note stays while 1.1.0 serves; the rollout halted by 1.3.0's refusal may send 1.0.0 back meanwhile (on
        # a quiet machine it does within these desired states): then nothing of 1.1.0 serves and the note goes
        assert "vision" in mgr._unasked() or version(gw1) != "1.1.0", (version(gw1), mgr._unasked())
        assert not any(s["step"] == "healthy" and s["version"] == "1.1.0" for s in mgr.steps), mgr.steps
    finally:
        await back.stop(grace_s=0)


async def test_a_package_refused_at_verification_is_not_downloaded_again_at_the_next_start(fleet):  # noqa: F811
    """The fleet keeps asking gw1 for 1.3.0 (signed by a key gw1 does not trust) under one deployment: gw1 downloads
    it, refuses it at verification and reports it failed. The refusal was kept in memory only: every start downloaded
    the package again and refused it again, for as long as the fleet asked. It is kept on disk (by digest, with its
    deployment, bounded): the next start declines that deployment without a download."""
    from edge_agent.agent import Agent

    srv, agents, reg = fleet
    entry = reg.get("part-inspection", "1.3.0")
    size = reg.package_path(entry).stat().st_size
    with srv.control.lock:  # (a desired state no halt takes back: the fleet asks on)
        srv.control._set_desired("gw1", "vision", "part-inspection", "1.3.0", entry["digest"], size, "dep13")
    gw1 = agents["gw1"]
    await until(
        lambda: any(s["step"] == "failed" and s["version"] == "1.3.0" for s in gw1.manager.steps),
        what="gw1 to refuse 1.3.0",
    )
    assert "not among the trusted keys" in next(
        s["reason"] for s in gw1.manager.steps if s["step"] == "failed"
    )
    await gw1.stop()
    agents["gw1"] = gw1 = Agent(gw1.cfg)
    await gw1.start()
    await until(
        lambda: any(s["version"] == "1.3.0" for s in gw1.manager.steps), what="gw1 to handle 1.3.0 again"
    )
    await asyncio.sleep(1.0)  # (several heartbeats)
    steps = [s for s in gw1.manager.steps if s["version"] == "1.3.0"]
    assert [s["step"] for s in steps] == ["failed"], steps
    assert "refused at verification here" in steps[0]["reason"], steps
    assert version(gw1) == "1.0.0"


async def test_a_refusal_at_verification_is_judged_again_once_the_key_it_asked_for_is_trusted(fleet):  # noqa: F811
    """gw1 refuses 1.3.0 (signed by a key it does not trust: "add its .pub to the trusted keys if you trust it"). The
    operator does so and restarts gw1, the fleet still asking for 1.3.0 under the same deployment. The refusal was kept
    on disk for good: the restart declined the deployment again, quoting the former trusted keys. It is kept with what
    it was judged against: with the key added, the package is downloaded, verified again and served."""
    from pathlib import Path

    from edge_agent.agent import Agent

    srv, agents, reg = fleet
    entry = reg.get("part-inspection", "1.3.0")
    size = reg.package_path(entry).stat().st_size
    with srv.control.lock:
        srv.control._set_desired("gw1", "vision", "part-inspection", "1.3.0", entry["digest"], size, "dep13")
    gw1 = agents["gw1"]
    await until(
        lambda: any(s["step"] == "failed" and s["version"] == "1.3.0" for s in gw1.manager.steps),
        what="gw1 to refuse 1.3.0",
    )
    await gw1.stop()
    rogue = sorted((Path(gw1.cfg.trusted_keys[0]).parent.parent / "rogue").glob("*.pub"))
    assert rogue
    cfg = gw1.cfg.model_copy(update={"trusted_keys": [*gw1.cfg.trusted_keys, *map(str, rogue)]})
    agents["gw1"] = gw1 = Agent(cfg)
    await gw1.start()
    await until(lambda: version(gw1) == "1.3.0", what="gw1 to serve 1.3.0 once its signing key is trusted")
    steps = [s for s in gw1.manager.steps if s["version"] == "1.3.0"]
    assert not any("refused at verification here" in s.get("reason", "") for s in steps), steps
