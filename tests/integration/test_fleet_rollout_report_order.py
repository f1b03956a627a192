"""The order of an agent's reports as the agent made them, not as the fleet received them, against the real fleet
service (gRPC mTLS, SQLite store, a registry of real signed packages), the agent's side spoken by hand: a state
report held on the way (a stream's queue, a link being re-made) arrives after a report the agent made later."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cloud_trainer.fleet.service import FleetServer, channel_credentials
from cloud_trainer.registry import Registry
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import make_pki
from tests.support.models import make_keypair, make_package
from tests.support.peers import free_port
from tests.support.waits import until


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The PKI and the three signed packages, built once for the file."""
    d = tmp_path_factory.mktemp("built")
    key, _ = make_keypair(d / "keys")
    packages = [
        make_package(d / "b", version=v, key=key, seed=i) for i, v in enumerate(["1.0.0", "1.1.0", "1.2.0"])
    ]
    return make_pki(d / "pki", agents=("gw1",), admins=()), packages


@pytest.fixture
async def fleet(tmp_path, built):
    pki, packages = built
    reg = Registry(tmp_path / "registry")
    entries = {}
    for p in packages:
        entry = reg.publish(p, [], {}, None, None)
        entries[entry["version"]] = entry
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        registry=tmp_path / "registry",
        tick_s=0.2,
    )
    await srv.start()
    creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            yield srv, rpc.FleetStub(ch), entries
    finally:
        await srv.stop()


def _report(entry, seq: int = 0, boot: str = "", **labels) -> pb.HeartbeatRequest:
    """gw1's state report: the slot runs ``entry``; numbered ``seq`` of run ``boot`` (none: an older agent)."""
    return pb.HeartbeatRequest(
        labels={"site": "plant", **labels},
        slots=[
            pb.SlotState(
                slot="vision",
                package=entry["name"],
                version=entry["version"],
                digest=entry["digest"],
                status="active",
            )
        ],
        report_seq=seq,
        boot_id=boot,
    )


def _healthy(dep_id: str, version: str, seq: int, boot: str) -> pb.DeploymentReport:
    """gw1's step ``healthy`` of ``version`` on deployment ``dep_id``, numbered ``seq`` of run ``boot``."""
    return pb.DeploymentReport(
        deployment_id=dep_id,
        slot="vision",
        version=version,
        step="healthy",
        ok=True,
        health_json="{}",
        report_seq=seq,
        boot_id=boot,
    )


def _runs(srv) -> tuple[str, dict]:
    a = srv.store.agents()[0]
    return a["slots"][0]["version"], a["labels"]


async def test_a_state_report_made_before_a_verdict_but_received_after_it_does_not_win(fleet):
    """A rollout of 1.1.0 completed on gw1; gw1's state report made while it still ran 1.0.0 reached the fleet
    after the verdict (held in the stream's queue): a rollout of 1.2.0 created then took 1.0.0 for gw1's previous
    version, and its halt would have sent gw1 down to 1.0.0 as an admin's rollback (no health window). The
    report's number (made before the verdict's) says it is older: the previous version is 1.1.0."""
    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 1, "run1"))
    a = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    held = _report(e["1.0.0"], 2, "run1")  # made now, before the step: sent after it
    await stub.ReportDeployment(_healthy(a["id"], "1.1.0", 3, "run1"))
    assert srv.control.get(a["id"])["state"] == "completed"
    await stub.Heartbeat(held)
    assert _runs(srv)[0] == "1.0.0"  # (the fleet's last word from gw1's state reports)
    b = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    )
    assert srv.control.get(b["id"])["previous"]["gw1"]["version"] == "1.1.0"  # was 1.0.0
    srv.control.command(b["id"], "abort")  # the admin halts it: gw1 is sent back to 1.1.0, never 1.0.0
    sent = [(s["version"], s["deployment_id"]) for s in srv.control.desired_state("gw1")[1]]
    assert sent == [("1.1.0", b["id"] + ":rollback")], sent
    # an older agent (reports without a number) is ordered by arrival, as before: its report after the verdict
    # is the start
    await stub.Heartbeat(_report(e["1.0.0"]))
    c = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    )
    assert srv.control.get(c["id"])["previous"]["gw1"]["version"] == "1.0.0"


async def test_a_state_report_older_than_one_written_is_dropped_on_either_path_but_a_restart_starts_afresh(
    fleet,
):
    """gw1's report held on the way and received after a report it made later wrote its older slots (and labels)
    over the newer ones, read by the next rollout as what gw1 runs. It is dropped (answered all the same); a
    report of a new run of the agent (a restart, a new count from 1) and one without a number are written."""
    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.1.0"], 5, "run1"))
    reply = await stub.Heartbeat(_report(e["1.0.0"], 4, "run1", older="yes"))
    assert isinstance(reply, pb.HeartbeatReply)  # answered
    assert _runs(srv) == ("1.1.0", {"site": "plant"})  # was: 1.0.0 and its labels
    await stub.Heartbeat(_report(e["1.0.0"], 1, "run2"))  # gw1 restarted
    assert _runs(srv)[0] == "1.0.0"
    await stub.Heartbeat(_report(e["1.1.0"]))  # an older agent's report
    assert _runs(srv)[0] == "1.1.0"

    # the Connect stream alike: each report acknowledged as taken, then written at the next flush
    out: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (m := await out.get()) is not None:
            yield m

    call = stub.Connect(requests())
    try:
        for rid, (entry, seq, extra) in enumerate(
            [(e["1.2.0"], 7, {}), (e["1.0.0"], 6, {"older": "yes"})], start=1
        ):
            out.put_nowait(pb.AgentMessage(report=_report(entry, seq, "run2", **extra), report_id=rid))
            while (await asyncio.wait_for(call.read(), 10)).acked != rid:
                pass
        await until(lambda: _runs(srv)[0] == "1.2.0", what="the stream's report written")
        srv.hub.flush()  # (anything still kept)
        assert _runs(srv) == ("1.2.0", {"site": "plant"})  # was: 1.0.0, the report made before
    finally:
        out.put_nowait(None)
        call.cancel()


async def test_a_lower_number_long_after_the_last_report_is_written_a_restored_gateway_is_not_frozen(
    fleet, monkeypatch
):
    """A gateway whose count went back under the same run (its VM restored from a memory snapshot) had every report
    dropped until the service forgot its numbers (10 min): its state at the cloud frozen, and the next rollout took
    the frozen version for what it runs. A lower number is dropped only within STALE_REPORT_S of the last one."""
    from cloud_trainer.fleet import service

    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 50, "run3"))
    await stub.Heartbeat(_report(e["1.1.0"], 10, "run3"))  # within the window: held on the way
    assert _runs(srv)[0] == "1.0.0"
    monkeypatch.setattr(service, "STALE_REPORT_S", 0.0, raising=False)  # the window passed
    await stub.Heartbeat(_report(e["1.1.0"], 11, "run3"))
    assert _runs(srv)[0] == "1.1.0"  # was: 1.0.0 for 10 min
    monkeypatch.setattr(service, "STALE_REPORT_S", 60.0, raising=False)
    await stub.Heartbeat(_report(e["1.0.0"], 10, "run3"))  # below the one now taken: dropped again
    assert _runs(srv)[0] == "1.1.0"


async def test_a_verdict_numbered_before_a_snapshot_restore_does_not_outrank_the_reports_after_it(
    fleet, monkeypatch
):
    """A rollout of 1.1.0 completed on gw1 (its verdict numbered 50); gw1's VM was then restored from a memory
    snapshot (1.0.0 serving, its count back at 10 under the same run) and, past the window, its reports written
    again (e5de6179). The verdict's number still outranked them: a rollout of 1.2.0 took 1.1.0 for gw1's previous
    version whatever gw1 reported, its record frozen at the fleet. Numbers order a verdict and a report only when
    the report arrived less than RECORD_ORDER_S after the verdict; past it, by arrival."""
    from cloud_trainer.fleet import control, service

    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 9, "run4"))
    a = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    await stub.ReportDeployment(_healthy(a["id"], "1.1.0", 50, "run4"))
    assert srv.control.get(a["id"])["state"] == "completed"
    monkeypatch.setattr(service, "STALE_REPORT_S", 0.0)  # the windows passed: gw1 restored meanwhile
    monkeypatch.setattr(control, "RECORD_ORDER_S", 0.0)
    await stub.Heartbeat(_report(e["1.0.0"], 11, "run4"))
    assert _runs(srv)[0] == "1.0.0"
    b = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    )
    assert srv.control.get(b["id"])["previous"]["gw1"]["version"] == "1.0.0"  # was 1.1.0, the record's


async def test_a_deployment_step_made_before_the_verdict_but_received_after_it_does_not_undo_it(fleet):
    """gw1's step ``active`` of 1.1.0, held on the way (a call the service's pool took late), reached the fleet
    after its ``healthy``: the target went back to ``active``. A rollout still waiting for gw1 waited for a healthy
    report that never came again; here, one that had completed read as still under way on gw1, so a rollout of
    1.2.0 took that rollout's own previous version (1.0.0) for gw1's, and its halt would have sent gw1 down to it.
    A step numbered below the verdict from the same run is kept as the last report only."""
    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 1, "run5"))
    a = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    await stub.ReportDeployment(_healthy(a["id"], "1.1.0", 5, "run5"))
    late = _healthy(a["id"], "1.1.0", 3, "run5")
    late.step = "active"
    await stub.ReportDeployment(late)
    t = srv.control.get(a["id"])["targets"]["gw1"]
    assert t["status"] == "healthy" and t["last_report"]["step"] == "active", t  # was: active
    b = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    )
    assert srv.control.get(b["id"])["previous"]["gw1"]["version"] == "1.1.0"  # was 1.0.0
    # a step of a new run of the agent (a restart counts from 1) is taken as it comes
    again = _healthy(b["id"], "1.2.0", 1, "run6")
    again.step = "downloading"
    await stub.ReportDeployment(again)
    assert srv.control.get(b["id"])["targets"]["gw1"]["status"] == "downloading"


async def test_a_verdict_taken_by_a_replica_whose_clock_runs_behind_still_outranks_a_report_made_before_it(
    fleet,
):
    """gw1's verdict (numbered 12) was taken by a replica whose clock ran 2 minutes behind the one that took gw1's
    state report numbered 11 (made before the verdict, held on the way) a moment later. The numbers counted only
    within 60 s of the two replicas' times: off, the report won by those times, and a rollout of 1.2.0 took 1.0.0
    for gw1's previous version, below the 1.1.0 a rollout had completed on it."""
    import time

    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 1, "run7"))
    a = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    srv.control.clock = lambda: time.time() - 120.0  # the replica that takes the verdict
    await stub.ReportDeployment(_healthy(a["id"], "1.1.0", 12, "run7"))
    srv.control.clock = time.time
    assert srv.control.get(a["id"])["state"] == "completed"
    await stub.Heartbeat(_report(e["1.0.0"], 11, "run7"))  # the other replica's clock
    b = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    )
    assert srv.control.get(b["id"])["previous"]["gw1"]["version"] == "1.1.0"  # was 1.0.0
