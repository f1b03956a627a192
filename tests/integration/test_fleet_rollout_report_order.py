"""The order of an agent's reports as the agent made them, not as the fleet received them, against the real fleet
service (gRPC mTLS, SQLite store, a registry of real signed packages), the agent's side spoken by hand: a state
report held on the way (a stream's queue, a link being re-made) arrives after a report the agent made later."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import threading
from functools import partial

import grpc
import pytest

from cloud_trainer.fleet.service import FleetServer, channel_credentials
from cloud_trainer.registry import Registry
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from protocols.refusals import REPORT_KEY, REPORT_LATE
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
    entries = published(tmp_path, packages)
    port = free_port()
    srv = await _serve(tmp_path, pki, port)
    # the tests send an agent's reports back to back: past the 20 a second an agent may send on a quiet machine
    # (RESOURCE_EXHAUSTED), the sooner the quieter; no test here is of that limit
    srv.quotas.limits = dataclasses.replace(srv.quotas.limits, reports_per_s=1000.0)
    creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            yield srv, rpc.FleetStub(ch), entries
    finally:
        await srv.stop()


def published(tmp_path, packages) -> dict[str, dict]:
    """``packages`` published in the registry of the fleet service on ``tmp_path``: version -> its entry."""
    reg = Registry(tmp_path / "registry")
    return {(entry := reg.publish(p, [], {}, None, None))["version"]: entry for p in packages}


async def _serve(tmp_path, pki, port: int, **options) -> FleetServer:
    """The fleet service on ``port``, its data in ``tmp_path`` (started again on the same data: a restart);
    ``options``: FleetServer's."""
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        registry=tmp_path / "registry",
        tick_s=0.2,
        **options,
    )
    await srv.start()
    return srv


def _report(entry, seq: int = 0, boot: str = "", *before: str, **labels) -> pb.HeartbeatRequest:
    """gw1's state report: the slot runs ``entry``; numbered ``seq`` of run ``boot`` (none: an older agent), its
    process's runs before it ``before``."""
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
        runs_before=before,
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


async def test_a_restored_gateways_new_run_is_written_at_once_and_its_previous_runs_late_report_is_dropped(
    fleet,
):
    """A gateway whose VM was restored from a memory snapshot counts again from the snapshot's number; it reports
    under a new run (its link was lost at the restore: ``FleetClient.new_run``). Its reports were dropped for 60 s
    after the last one taken (STALE_REPORT_S, a clock window), its state frozen at the fleet meanwhile. The new run
    is written at once, its numbers going back; a report of the previous run held on the way and received after
    the new run's is dropped, whatever its number, as is a lower number of the new run."""
    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 50, "run3"))
    await stub.Heartbeat(_report(e["1.1.0"], 10, "run3"))  # held on the way: dropped, however long after
    assert _runs(srv)[0] == "1.0.0"
    await stub.Heartbeat(_report(e["1.1.0"], 11, "run3b"))  # restored: the snapshot's count, a new run
    assert _runs(srv)[0] == "1.1.0"  # was: 1.0.0 for 60 s
    await stub.Heartbeat(_report(e["1.0.0"], 51, "run3"))  # the previous run's, made before the restore
    assert _runs(srv)[0] == "1.1.0"
    await stub.Heartbeat(_report(e["1.0.0"], 10, "run3b"))  # below the one taken from the new run
    assert _runs(srv)[0] == "1.1.0"
    await stub.Heartbeat(_report(e["1.2.0"], 12, "run3b"))
    assert _runs(srv)[0] == "1.2.0"


async def test_a_verdict_numbered_before_a_snapshot_restore_does_not_outrank_the_reports_after_it(fleet):
    """A rollout of 1.1.0 completed on gw1 (its verdict numbered 50); gw1's VM was then restored from a memory
    snapshot (1.0.0 serving, its count back at 11) and reports under a new run. The verdict's number outranked the
    reports of the same run (and a clock window of 10 min between the replicas' times decided when it stopped):
    the report of the newer run outranks the verdict of the older one, at once, by no clock."""
    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 9, "run4"))
    a = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    await stub.ReportDeployment(_healthy(a["id"], "1.1.0", 50, "run4"))
    assert srv.control.get(a["id"])["state"] == "completed"
    await stub.Heartbeat(_report(e["1.0.0"], 11, "run4b"))  # restored: a new run
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


async def test_a_restored_agents_step_answered_late_is_sent_again_under_a_new_run_but_a_reordered_one_is_not(
    fleet, built
):
    """The agent's own fleet client: gw1's VM, restored from a memory snapshot taken after its step ``downloading``
    of 1.1.0 (the original went on to ``healthy``, the rollout completed), fails the activation and reports
    ``failed`` under the snapshot's run before any heartbeat told it the run is late. The step was answered OK and
    kept only as the target's last report: the failure was masked, the target stayed healthy. The fleet now marks the
    answer late and the client sends the step again under a new run. A step only overtaken on the way (``active``
    made before ``healthy``, received after it) is marked late too, but is not sent again: this process made a later
    step of the deployment, and the step resent would undo the verdict."""
    from edge_agent.uplink.fleet_client import FleetClient
    from tests.support.fleet import cloud_settings

    srv, _stub, e = fleet
    client = FleetClient(cloud_settings(built[0], srv.port))
    client.open()
    try:
        boot, seq = client.next_report()
        await client.stub.Heartbeat(_report(e["1.0.0"], seq, boot), timeout=10)
        a = srv.control.create(
            {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
        )
        step = partial(client.report_deployment, a["id"], slot="vision", version="1.1.0")
        assert await step("downloading", True)
        snapshot = (client.boot_id, copy.copy(client._reports), dict(client._steps))
        real = client.stub.ReportDeployment

        def held(request, **kw):  # ``active`` held on the way until ``healthy`` was made and taken
            client.stub.ReportDeployment = real

            async def later():
                await step("healthy", True)
                call = real(request, **kw)
                await call
                return call

            return _Call(later())

        client.stub.ReportDeployment = held
        assert await step("active", True)
        t = srv.control.get(a["id"])["targets"]["gw1"]
        assert (t["status"], t["last_report"]["step"]) == ("healthy", "active"), t  # not sent again
        assert srv.control.get(a["id"])["state"] == "completed"
        client.boot_id, client._reports, client._steps = snapshot  # restored
        assert await step("failed", False, reason="activation failed")
        t = srv.control.get(a["id"])["targets"]["gw1"]
        assert t["status"] == "failed" and t["report"]["boot"] != snapshot[0], (
            t
        )  # was: healthy, under the snapshot's
    finally:
        await client.close()


class _Call:
    """A unary call made once ``sent`` (a coroutine giving the real call, answered) has run."""

    def __init__(self, sent) -> None:
        self.sent, self.call = sent, None

    def __await__(self):
        self.call = yield from self.sent.__await__()
        return (yield from self.call.__await__())

    async def trailing_metadata(self):
        return await self.call.trailing_metadata()


async def test_a_late_step_of_the_agents_previous_run_does_not_undo_the_new_runs(fleet):
    """gw1 sent its step ``downloading`` (numbered 40), the call held on the way (a pool that took it late, a
    retry across a lost link); gw1 went on under a new run (its link re-made, or restarted) and reported 1.1.0
    healthy (numbered 2). The late step then arrived: a step of another run was taken as it came, so the completed
    target went back to under way. It is kept as the target's last report only, as is any later step of that run;
    the new run's steps and a step without a number are taken."""
    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 39, "run8"))
    a = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    late = _healthy(a["id"], "1.1.0", 40, "run8")
    late.step = "downloading"
    await stub.ReportDeployment(_healthy(a["id"], "1.1.0", 2, "run9"))
    assert srv.control.get(a["id"])["state"] == "completed"
    await stub.ReportDeployment(late)
    t = srv.control.get(a["id"])["targets"]["gw1"]
    assert t["status"] == "healthy" and t["last_report"]["step"] == "downloading", t  # was: downloading
    late.report_seq, late.step = 41, "active"  # any number of the run the new one followed
    await stub.ReportDeployment(late)
    assert srv.control.get(a["id"])["targets"]["gw1"]["status"] == "healthy"
    b = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    )
    assert srv.control.get(b["id"])["previous"]["gw1"]["version"] == "1.1.0"
    step = _healthy(b["id"], "1.2.0", 3, "run9")
    step.step = "downloading"
    await stub.ReportDeployment(step)
    assert srv.control.get(b["id"])["targets"]["gw1"]["status"] == "downloading"
    step.report_seq, step.boot_id, step.step = 0, "", "active"  # an older agent's: as it comes
    await stub.ReportDeployment(step)
    assert srv.control.get(b["id"])["targets"]["gw1"]["status"] == "active"
    step.report_seq, step.boot_id, step.step = 2**64 - 1, "run9", "healthy"  # past what the databases keep
    await stub.ReportDeployment(step)
    await stub.Heartbeat(_report(e["1.2.0"], 2**64 - 1, "run10"))
    assert srv.control.get(b["id"])["targets"]["gw1"]["status"] == "healthy" and _runs(srv)[0] == "1.2.0"


async def test_a_step_of_the_previous_run_is_taken_when_the_new_run_has_sent_only_state_reports(fleet):
    """gw1's ``healthy`` (run8) was in flight on a replica stopping gracefully (its calls finish, the agent's channel
    leaves READY): gw1's next state report, a new run (run9), reached another replica first. The step was dropped as
    a previous run's while the call answered OK: the agent says healthy once, so the rollout waited for good. Only a
    step of a newer run recorded on the target makes it late (the test above)."""
    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 1, "run8"))
    a = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    await stub.Heartbeat(_report(e["1.1.0"], 3, "run9"))
    await stub.ReportDeployment(_healthy(a["id"], "1.1.0", 2, "run8"))
    assert (
        srv.control.get(a["id"])["state"] == "completed"
    )  # was: gw1 assigned, the step its last report only


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


async def test_an_agent_restored_from_a_memory_snapshot_reports_under_a_new_run_once_told_its_report_is_late(
    fleet, built, tmp_path
):
    """The agent's side, its own fleet client against the real service: gw1's VM is restored from a memory snapshot
    (its run and count back at the snapshot's, below numbers the fleet took since), its channel idle (the service
    restarted here: no call of the agent's saw the connection go). Its first report under the snapshot's run is
    answered as late, not written; the reports it makes after that go under a new run, which the fleet writes at
    once. Numbered under the snapshot's run they were all dropped until the count passed the fleet's."""
    from edge_agent.uplink.fleet_client import FleetClient
    from tests.support.fleet import cloud_settings

    srv, _stub, e = fleet
    client = FleetClient(cloud_settings(built[0], srv.port))
    client.open()
    try:
        snapshot = (client.boot_id, copy.copy(client._reports))  # the VM's memory as the snapshot keeps it
        for _ in range(5):
            boot, seq = client.next_report()
            await client.stub.Heartbeat(_report(e["1.1.0"], seq, boot), timeout=10)
        assert _runs(srv)[0] == "1.1.0"
        client.boot_id, client._reports = snapshot  # restored: it runs 1.0.0 again, counts from 1 again
        await srv.stop()  # its connection is gone with the restore
        again = await _serve(tmp_path, built[0], srv.port)
        try:
            boot, seq = client.next_report()
            assert (boot, seq) == (snapshot[0], 1)  # nothing told it yet
            await client.stub.Heartbeat(_report(e["1.0.0"], seq, boot), timeout=10)
            assert _runs(again)[0] == "1.1.0"  # late: answered, not written, and the agent told so
            boot, seq = client.next_report()
            assert boot != snapshot[0] and seq == 2, (boot, seq)  # the count goes on under a new run
            assert client.runs_before[0] == snapshot[0]  # named in the new run's state reports
            await client.stub.Heartbeat(_report(e["1.0.0"], seq, boot), timeout=10)
            assert _runs(again)[0] == "1.0.0"  # written: the fleet's state is what gw1 runs
        finally:
            await again.stop()
    finally:
        await client.close()


async def test_a_stream_report_of_a_run_a_newer_one_followed_ends_the_stream_marked_late_and_a_new_run_is_written(
    fleet, built
):
    """gw1's process was paused (SIGSTOP) with its Connect stream open while another process of its identity reported
    under a newer run; resumed, its reports on the stream were acknowledged and dropped as late for good, untold
    (only Heartbeat's answer carried the mark): the fleet kept the other's state for as long as the stream lived.
    The stream now ends marked late and the agent's next report, under a new run, is written. A report of the same
    run overtaken by a later one is only dropped: the stream goes on."""
    from edge_agent.uplink.fleet_client import FleetClient
    from protocols.refusals import REPORT_KEY, REPORT_LATE
    from tests.support.fleet import cloud_settings

    srv, stub, e = fleet
    client = FleetClient(cloud_settings(built[0], srv.port))
    client.open()
    out: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (m := await out.get()) is not None:
            yield m

    call = client.stub.Connect(requests())  # the uplink's stream, as the agent opens it
    boot = client.next_report()[0]
    try:
        base = srv.hub.reports
        for rid, seq, labels in ((1, 5, {}), (2, 4, {"older": "yes"}), (3, 6, {"after": "yes"})):
            out.put_nowait(pb.AgentMessage(report=_report(e["1.0.0"], seq, boot, **labels), report_id=rid))
            while (await asyncio.wait_for(call.read(), 10)).acked != rid:
                pass
            await until(lambda: srv.hub.reports == base + rid, what="the report taken")  # noqa: B023
        srv.hub.flush()
        assert _runs(srv) == (
            "1.0.0",
            {"site": "plant", "after": "yes"},
        )  # 4, overtaken by 5: dropped, no end
        await stub.Heartbeat(_report(e["1.1.0"], 1, "other"))  # the other process: a newer run
        assert _runs(srv)[0] == "1.1.0"
        out.put_nowait(pb.AgentMessage(report=_report(e["1.0.0"], 7, boot), report_id=4))  # gw1 resumed
        while (await asyncio.wait_for(call.read(), 5)) is not grpc.aio.EOF:  # was: open, the report dropped
            pass
        assert (REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata())
        srv.hub.flush()
        assert _runs(srv)[0] == "1.1.0"
        await until(lambda: client.next_report()[0] != boot, what="a new run")
        now, seq = client.next_report()
        await client.stub.Heartbeat(_report(e["1.0.0"], seq, now), timeout=10)
        assert _runs(srv)[0] == "1.0.0"  # the new run written: the fleet shows what gw1 runs
    finally:
        out.put_nowait(None)
        call.cancel()
        await client.close()


async def test_a_connection_closed_idle_between_heartbeats_keeps_the_run_and_a_broken_call_starts_one(
    built, tmp_path
):
    """With ``stream: false`` and heartbeats a minute or more apart, the fleet closes the agent's connection between
    two of them (no call on it for ``connection_idle_s``) and the channel leaves READY: every heartbeat was a new
    run, one control-state write each, and the agent's 64 kept runs churned. A connection closed idle is no link
    loss: the run stays. A call broken by its connection's loss (here: the path cut while a heartbeat waits) is:
    the next report goes under a new run."""
    from edge_agent.uplink.fleet_client import FleetClient
    from tests.support.fleet import cloud_settings
    from tests.support.tcp_cut import CutRelay

    pki = built[0]
    port = free_port()
    srv = await _serve(tmp_path, pki, port, connection_idle_s=0.5)
    relay = CutRelay(port)
    client = FleetClient(cloud_settings(pki, relay.port))
    client.open()
    ready = grpc.ChannelConnectivity.READY
    try:
        boots = []
        for _ in range(3):
            boot, seq = client.next_report()
            boots.append(boot)
            await client.stub.Heartbeat(pb.HeartbeatRequest(report_seq=seq, boot_id=boot), timeout=10)
            await until(lambda: client.channel.get_state() != ready, what="the connection closed idle")
        assert len(set(boots)) == 1, boots  # was: a new run at each heartbeat
        assert list(srv.control._run_order("default", "gw1")) == boots[:1]
        client.channel.get_state(try_to_connect=True)
        await until(lambda: client.channel.get_state() == ready, what="a new connection")
        relay.hold_upstream()  # the path dies under a heartbeat in flight (before the connection idles out)
        boot, seq = client.next_report()
        waiting = asyncio.ensure_future(
            client.stub.Heartbeat(pb.HeartbeatRequest(report_seq=seq, boot_id=boot), timeout=10)
        )
        await asyncio.sleep(0.05)
        relay.cut()
        with pytest.raises(grpc.aio.AioRpcError) as broken:
            await waiting
        assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
        boot = client.next_report()[0]
        assert boot != boots[0]
        for attempt in range(3):  # the uplink's stream (stream: true), its connection lost the same way
            # (a stream opened at once after the cut may still go out on the cut connection, broken pipe: the
            # uplink opens it again, as here)
            boot = client.next_report()[0]
            stream = client.stub.Connect()
            try:
                await stream.write(
                    pb.AgentMessage(report=pb.HeartbeatRequest(report_seq=9, boot_id=boot), report_id=1)
                )
                await stream.read()  # (acknowledged: open)
                break
            except grpc.aio.AioRpcError as exc:
                if attempt == 2 or exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                client.channel.get_state(try_to_connect=True)
                await until(lambda: client.channel.get_state() == ready, what="a new connection")
        relay.cut()
        with pytest.raises(grpc.aio.AioRpcError):
            await stream.read()
        await until(lambda: client.next_report()[0] != boot, what="a new run after the stream's loss")
    finally:
        await client.close()
        relay.close()
        await srv.stop()


async def test_a_new_runs_state_report_is_written_as_it_comes_when_the_control_state_cannot_answer(
    fleet, caplog
):
    """The order of an agent's runs is kept in the control state; with its database gone (here: closed under the
    service), a report of a run this process has not taken is written as it comes and said in a warning, not
    failed: the agent's state at the fleet is kept current."""
    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 5, "run11"))
    srv.control.db.close()
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # (its desired state cannot be read either)
        await stub.Heartbeat(_report(e["1.1.0"], 1, "run12"))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and "desired state" in str(
        refused.value.details()
    )
    assert _runs(srv)[0] == "1.1.0"
    # another run's report during the outage: written, and its failure to read the runs not logged again
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Heartbeat(_report(e["1.0.0"], 1, "run13"))
    assert _runs(srv)[0] == "1.0.0"
    said = [r for r in caplog.records if "report runs" in r.getMessage()]
    assert len(said) == 1, said  # logged by reason, at most every LOG_EVERY_S: formerly a line per report


async def test_a_report_whose_run_id_is_not_printable_ascii_of_1_to_64_characters_is_refused_and_counted(
    fleet, built, caplog
):
    """A run id (``boot_id``) was stored as given: a NUL became U+FFFD, so two crafted ids were one run, and any
    length was taken. One that is not 1-64 printable ASCII characters is refused (INVALID_ARGUMENT naming the
    field), nothing of the report written, counted and logged; the id the agent's own fleet client draws passes,
    on every path a report takes (Heartbeat, Connect, ReportDeployment)."""
    from edge_agent.uplink.fleet_client import FleetClient
    from tests.support.fleet import cloud_settings

    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 1, "run1"))
    a = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    for bad in ("run\x001", "run\ufffd1", "r" * 65, "run 1\n"):
        for call, msg, what in (
            (stub.Heartbeat, _report(e["1.1.0"], 9, bad), "HeartbeatRequest"),
            (stub.ReportDeployment, _healthy(a["id"], "1.1.0", 9, bad), "DeploymentReport"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(msg)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
            assert (
                f"{what}.boot_id" in refused.value.details() and "printable ASCII" in refused.value.details()
            )
    connect = stub.Connect()
    await connect.write(pb.AgentMessage(report=_report(e["1.1.0"], 9, "run\x001"), report_id=1))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in connect:
            pass
    assert (
        refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "report.boot_id" in refused.value.details()
    )
    assert _runs(srv)[0] == "1.0.0" and srv.control.get(a["id"])["targets"]["gw1"]["status"] != "healthy"
    assert srv.quotas.refusals[("default", "gw1", "boot_id")] == 9
    assert sum("report(s) refused" in r.getMessage() for r in caplog.records) == 1  # once a minute, counted
    client = FleetClient(cloud_settings(built[0], srv.port))  # the agent's own draw
    client.open()
    try:
        boot, seq = client.next_report()
        await client.stub.Heartbeat(_report(e["1.1.0"], seq, boot), timeout=10)
        await client.stub.ReportDeployment(_healthy(a["id"], "1.1.0", 2, boot), timeout=10)
    finally:
        await client.close()
    assert _runs(srv)[0] == "1.1.0" and srv.control.get(a["id"])["state"] == "completed"


async def test_a_deployment_step_that_is_no_step_an_agent_makes_is_refused_and_counted(fleet):
    """A step becomes its target's status: any text was taken, a line feed and a forged line in the stalled step's
    WARNING among it, and a status only the fleet gives (``superseded``: the rollout stopped waiting for the agent,
    a halt no longer sent it back). Refused (``INVALID_ARGUMENT`` naming the field), nothing of it written, counted."""
    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 1, "run1"))
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    )
    for seq, bad in enumerate(
        ("downloading\n2026-12-07 12:00:00 CRITICAL forged", "superseded", "", "Active"), 2
    ):
        step = _healthy(dep["id"], "1.2.0", seq, "run1")
        step.step = bad
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ReportDeployment(step)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad  # was: taken as the status
        assert "DeploymentReport.step" in refused.value.details()
    assert srv.control.get(dep["id"])["targets"]["gw1"]["status"] == "assigned"
    assert srv.quotas.refusals[("default", "gw1", "deployment_step")] == 4
    step = _healthy(dep["id"], "1.2.0", 9, "run1")
    step.step = "download_retry"
    await stub.ReportDeployment(step)
    assert srv.control.get(dep["id"])["targets"]["gw1"]["status"] == "download_retry"


async def test_a_state_report_held_past_a_restart_of_the_service_is_not_written_over_a_later_one(
    fleet, built, tmp_path
):
    """Reports 1 and 5 of run A taken; the service restarts; report 3 of run A, held on the way, arrives: the
    restarted service had taken no report of run A, and the control state keeps only a run's first number, so it
    wrote 3 over 5 (the fleet showed 1.1.0 where gw1 ran 1.2.0). The agent's row keeps the last number taken of its
    run: 3 is not written, on any replica."""
    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 1, "runA"))
    await stub.Heartbeat(_report(e["1.2.0"], 5, "runA"))
    await srv.stop()
    again = await _serve(tmp_path, built[0], srv.port)
    try:
        await stub.Heartbeat(_report(e["1.1.0"], 3, "runA"), wait_for_ready=True)  # made before 5
        assert _runs(again)[0] == "1.2.0"  # was: 1.1.0
        await stub.Heartbeat(_report(e["1.1.0"], 6, "runA"))
        assert _runs(again)[0] == "1.1.0"
    finally:
        await again.stop()


async def test_a_gateway_restored_mid_run_reaching_a_service_that_forgot_its_run_is_told_late_not_dropped_untold(
    fleet,
):
    """gw1's VM restored from a memory snapshot taken mid-run (report 10 of run R; its row holds report 50), its
    channel on a fresh connection, reaching a process with no memory of run R (restarted, another replica, or the run
    forgotten after IDLE_FORGET_S): the control state keeps only a run's first number and said fresh, the store did
    not write it, and nobody told the agent: each report dropped, its state frozen at 1.1.0 and its last_seen old
    until its count passed 50. It is answered late, and its next report, under a new run, is written."""
    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 1, "runR"))
    await stub.Heartbeat(_report(e["1.1.0"], 50, "runR"))
    srv.fleet.forget_reports(0.0)
    call = stub.Heartbeat(_report(e["1.0.0"], 11, "runR"))
    await call
    assert (REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata())  # was: nothing said
    assert _runs(srv)[0] == "1.1.0"
    await stub.Heartbeat(_report(e["1.0.0"], 12, "runR2"))  # the agent told: a new run
    assert _runs(srv)[0] == "1.0.0"


async def test_a_gateway_restored_mid_run_reaching_a_process_that_knows_its_run_is_told_late_on_either_path(
    fleet,
):
    """gw1's VM restored from a memory snapshot mid-run (report 11 of run R), reaching a process that knows run R:
    this one, which took report 50 (its Connect stream opened anew: a late report of the same run was only dropped,
    the stream going on), or another replica that took only report 2 while the agent's row holds 50 (said fresh,
    and not written by the store). Either way dropped report after report, untold, the state frozen until the
    count passed 50. The stream's first report, and a Heartbeat, are told late."""
    from cloud_trainer.fleet.service import _outbox_state

    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 1, "runR"))
    await stub.Heartbeat(_report(e["1.1.0"], 50, "runR"))
    out: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (m := await out.get()) is not None:
            yield m

    call = stub.Connect(requests())
    out.put_nowait(pb.AgentMessage(report=_report(e["1.0.0"], 11, "runR"), report_id=1))
    try:
        while (await asyncio.wait_for(call.read(), 10)) is not grpc.aio.EOF:  # was: open, the report dropped
            pass
        assert (REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata())
    finally:
        out.put_nowait(None)
        call.cancel()
    # this process took report 2 of run S only; another replica took report 50, written in the agent's row
    await stub.Heartbeat(_report(e["1.0.0"], 2, "runS"))
    other = _report(e["1.1.0"], 50, "runS")
    srv.store.heartbeat("gw1", dict(other.labels), [], {}, 0, _outbox_state(other))
    call = stub.Heartbeat(_report(e["1.0.0"], 11, "runS"))
    await call
    assert (REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata())  # was: nothing said


def _slow_row_reads(store) -> tuple[threading.Event, list]:
    """``store.report_held`` made to wait until the event returned is set (a PostgreSQL pool waiting for a
    connection); the list counts the reads under way."""
    real, release, waiting = store.report_held, threading.Event(), []

    def slow(*args, **kwargs):
        waiting.append(1)
        release.wait(10)
        return real(*args, **kwargs)

    store.report_held = slow
    return release, waiting


@pytest.mark.parametrize("path", ["heartbeat", "stream"])
async def test_a_reports_read_of_its_agents_row_waits_in_its_tenants_place(fleet, path):
    """A unary Heartbeat its agent's row refused, or a stream's report of a run new to the process, reads the row (a
    gateway restored mid-run is told late; another replica's newer run, a cloned gateway's): the read ran in a worker
    thread of its own, outside the tenant's heartbeat places, so with the store slow (a PostgreSQL pool waiting for a connection)
    one agent's heartbeats in flight, or its streams opened anew (a reconnect storm), took every worker thread all
    calls of every tenant wait for. It runs in a place of the tenant's heartbeats: a thread stays free."""
    import os

    from cloud_trainer.fleet.service import HEARTBEATS_PER_TENANT, _outbox_state, _slot_states

    srv, stub, e = fleet
    workers = min(32, (os.cpu_count() or 1) + 4)  # the loop's default executor's threads
    if workers > 12:
        pytest.skip("more worker threads than one agent's calls may be in flight (its rate)")
    await stub.Heartbeat(_report(e["1.0.0"], 1, "runR"))
    if (
        path == "heartbeat"
    ):  # another replica's write of another run: the heartbeats' writes refused, the row read
        other = _report(e["1.1.0"], 1, "runS")
        srv.store.heartbeat("gw1", dict(other.labels), _slot_states(other), {}, 0, _outbox_state(other))
    release, waiting = _slow_row_reads(srv.store)
    calls = []
    try:
        if path == "heartbeat":
            calls = [
                asyncio.ensure_future(stub.Heartbeat(_report(e["1.1.0"], s, "runR"), timeout=10))
                for s in range(2, 2 + workers)
            ]
        else:
            for s in range(2, 2 + 2 * workers):  # the agent's streams opened anew, each with its first report
                report = pb.AgentMessage(report=_report(e["1.1.0"], s, f"runR{s}"), report_id=1)
                calls.append(stub.Connect(iter([report])))
                await asyncio.sleep(0.05)
        await until(lambda: len(waiting) >= HEARTBEATS_PER_TENANT, 30, "the reads under way")
        await asyncio.sleep(0.3)  # (the former code: every worker thread then in a read)
        await asyncio.wait_for(asyncio.to_thread(lambda: None), 2)  # was: TimeoutError
    finally:
        release.set()
        if path == "stream":
            for call in calls:
                call.cancel()
    if path == "heartbeat":
        await asyncio.gather(*calls)
        assert srv.store.report_held("gw1") == ("runR", 1 + workers)


async def test_stream_reports_of_many_tenants_reading_their_agents_rows_leave_the_worker_threads_free(fleet):
    """A stream report of a run new to the process reads its agent's row, in a place of its tenant's heartbeats.
    The places bound one tenant, not all: in the loop's default executor the reports of a few tenants' streams
    against a slow store (a PostgreSQL pool waiting for a connection) took every worker thread the rollout tick,
    the admin calls and every tenant's heartbeats wait for. They read in threads of their own."""
    import os

    from cloud_trainer.fleet.service import HEARTBEATS_PER_TENANT

    srv, _stub, _e = fleet
    workers = min(32, (os.cpu_count() or 1) + 4)  # the loop's default executor's threads
    keys = [
        (f"t{t}", f"gw{i}")
        for t in range(workers // HEARTBEATS_PER_TENANT + 1)
        for i in range(HEARTBEATS_PER_TENANT)
    ]
    release, waiting = _slow_row_reads(srv.store)
    report = pb.HeartbeatRequest(boot_id="runR", report_seq=2)
    try:
        reports = [asyncio.ensure_future(srv.fleet._fresh(key, report)) for key in keys]
        await until(lambda: waiting, 30, "the reads under way")
        await asyncio.sleep(0.3)  # (the former code: every worker thread then in a read)
        await asyncio.wait_for(asyncio.to_thread(lambda: None), 2)  # was: TimeoutError
    finally:
        release.set()
    assert await asyncio.gather(*reports) == [(True, "")] * len(keys)


async def test_a_lone_gateway_whose_link_is_lost_again_and_again_is_not_named_a_clone(fleet, built, caplog):
    """One gateway on a flapping link: each report after a lost link starts a new run (``FleetClient.link_lost``),
    none late to another. Seven in a row were counted ``runs_alternating`` and named two live gateways of one identity
    in a WARNING, and its late reports held untold for 10 minutes."""
    import logging

    from edge_agent.uplink.fleet_client import FleetClient
    from tests.support.fleet import cloud_settings

    srv, _stub, e = fleet
    client = FleetClient(cloud_settings(built[0], srv.port))
    client.open()
    try:
        with caplog.at_level(logging.WARNING, logger="cloud_trainer.fleet.service"):
            for _ in range(7):
                boot, seq = client.next_report()
                await client.stub.Heartbeat(_report(e["1.0.0"], seq, boot), timeout=10)
                client.link_lost()  # (a call failed UNAVAILABLE)
        assert srv.quotas.refusals[("default", "gw1", "runs_alternating")] == 0  # was: 1
        assert not [r for r in caplog.records if "one identity" in r.getMessage()]
    finally:
        await client.close()


async def test_two_live_gateways_of_one_identity_are_counted_named_and_their_view_held(fleet, built, caplog):
    """Two processes of gw1 (a cloned gateway image), each with the agent's own client: each one's report is late to
    the other's newer run, so each draws a new run in turn and the fleet's view of gw1 flips between them, silently.
    Past CLONE_RUNS runs begun over another within CLONE_WINDOW_S the service counts it (``runs_alternating``) and
    logs a WARNING naming the agent, once per minute; one restart (a new run) is neither. From then on the late
    clone is not told (no new run): the view stays on the newer one instead of flipping."""
    import logging

    import cloud_trainer.fleet.service as service_module
    from edge_agent.uplink.fleet_client import FleetClient
    from tests.support.fleet import cloud_settings

    srv, stub, e = fleet
    # 23 reports of gw1 in about a second: over the 20 a second an agent may send (RESOURCE_EXHAUSTED), the sooner the
    # quieter the machine
    srv.quotas.limits = dataclasses.replace(srv.quotas.limits, reports_per_s=1000.0)
    await stub.Heartbeat(_report(e["1.0.0"], 1, "before"))
    await stub.Heartbeat(_report(e["1.0.0"], 1, "restarted"))  # a restart: one run over another
    a, b = (FleetClient(cloud_settings(built[0], srv.port)) for _ in range(2))
    a.open(), b.open()
    key = ("default", "gw1")
    clone_runs = getattr(service_module, "CLONE_RUNS", 6)  # (defined since)
    try:
        with caplog.at_level(logging.WARNING, logger="cloud_trainer.fleet.service"):
            assert srv.quotas.refusals[(*key, "runs_alternating")] == 0
            for _ in range(clone_runs):
                for c, v in ((a, "1.0.0"), (b, "1.1.0")):
                    boot, seq = c.next_report()
                    await c.stub.Heartbeat(_report(e[v], seq, boot), timeout=10)
        assert srv.quotas.refusals[(*key, "runs_alternating")] >= 1  # was: never said
        said = [r.getMessage() for r in caplog.records if "one identity" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith("agent gw1 (tenant default): 6 report runs began"), said
        shown = []
        for _ in range(4):
            for c, v in ((a, "1.0.0"), (b, "1.1.0")):
                boot, seq = c.next_report()
                await c.stub.Heartbeat(_report(e[v], seq, boot), timeout=10)
                shown.append(_runs(srv)[0])
        assert len(set(shown)) == 1, shown  # was: flipping between 1.0.0 and 1.1.0
        # the late clone on a Connect stream (``stream: true``): its report is dropped, the stream is not ended
        late, version = (a, "1.0.0") if shown[-1] == "1.1.0" else (b, "1.1.0")
        # a rollout's steps: the late clone's, made under its run, is kept late, the clone not told (a new run
        # each step flipped the view once a step)
        dep = srv.control.create(
            {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
        )
        for c in (b if late is a else a, late):
            boot, seq = c.next_report()
            call = c.stub.ReportDeployment(_healthy(dep["id"], "1.2.0", seq, boot), timeout=10)
            await call
        assert (REPORT_KEY, REPORT_LATE) not in tuple(await call.trailing_metadata())  # was: told late
        assert late.next_report()[0] == boot and _runs(srv)[0] == shown[-1]
        out: asyncio.Queue = asyncio.Queue()

        async def requests():
            while (m := await out.get()) is not None:
                yield m

        call = late.stub.Connect(requests())
        boot, seq = late.next_report()
        try:
            out.put_nowait(pb.AgentMessage(report=_report(e[version], seq, boot), report_id=1))
            while (await asyncio.wait_for(call.read(), 10)).acked != 1:
                pass
            with pytest.raises(asyncio.TimeoutError):  # was: the stream ended marked late, a new run drawn
                while (await asyncio.wait_for(call.read(), 1.0)) is not grpc.aio.EOF:
                    pass
            srv.hub.flush()
            assert _runs(srv)[0] == shown[-1] and late.next_report()[0] == boot
        finally:
            out.put_nowait(None)
            call.cancel()
    finally:
        await a.close()
        await b.close()


async def test_a_step_kept_late_and_untold_during_a_clone_hold_is_taken_under_the_agents_new_run_after_it(
    fleet,
):
    """During a clone hold a late clone's deployment step is kept late without the mark (the mark drew a new run, the
    view flipping once a step): the agent took it as delivered and never sent it again. The operator then stopping
    the other clone, the remaining gateway's ``healthy`` was lost and its target waited for STEP_TIMEOUT_S (stalled).
    Once the hold is over, the step is taken under the agent's first new run (as the agent sends a step told late
    again), while its target is as the step left it."""
    import time

    srv, stub, e = fleet
    key = ("default", "gw1")
    await stub.Heartbeat(_report(e["1.0.0"], 1, "runX"))  # the gateway that stays
    await stub.Heartbeat(_report(e["1.0.0"], 1, "runY"))  # its clone, a newer run
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    )
    step = _healthy(dep["id"], "1.2.0", 2, "runY")
    step.step = "downloading"
    await stub.ReportDeployment(step)  # the clone's step, taken
    srv.fleet._clone_hold[key] = time.monotonic() + 60  # the two named a clone: held
    call = stub.ReportDeployment(_healthy(dep["id"], "1.2.0", 2, "runX"))
    await call
    assert (REPORT_KEY, REPORT_LATE) not in tuple(await call.trailing_metadata())  # kept late, untold
    assert srv.control.get(dep["id"])["targets"]["gw1"]["status"] == "downloading"
    srv.fleet._clone_hold[key] = time.monotonic() - 1  # the hold over (the operator stopped the clone)
    call = stub.Heartbeat(_report(e["1.2.0"], 3, "runX"))
    await call
    assert (REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata())  # told late now: a new run
    await stub.Heartbeat(_report(e["1.2.0"], 4, "runX2", "runX"))
    await until(
        lambda: srv.control.get(dep["id"])["targets"]["gw1"]["status"] == "healthy", 30, "the step taken"
    )  # was: downloading (until STEP_TIMEOUT_S: stalled)
    t = srv.control.get(dep["id"])["targets"]["gw1"]
    assert t["report"] == {"boot": "runX2", "seq": 4}, t


async def _healthy_kept_in_a_hold(srv, stub, e) -> dict:
    """gw1's clones X (runX, late) and Y (runY, newer): Y's ``downloading`` taken on a rollout of 1.2.0; in a clone
    hold (left on) X's ``healthy`` kept late, untold. The deployment."""
    import time

    await stub.Heartbeat(_report(e["1.0.0"], 1, "runX"))
    await stub.Heartbeat(_report(e["1.0.0"], 1, "runY"))  # its clone, a newer run
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    )
    step = _healthy(dep["id"], "1.2.0", 2, "runY")
    step.step = "downloading"
    await stub.ReportDeployment(step)
    srv.fleet._clone_hold[("default", "gw1")] = time.monotonic() + 60
    await stub.ReportDeployment(_healthy(dep["id"], "1.2.0", 2, "runX"))  # kept late, untold
    return dep


async def _target_after_the_hold(srv, stub, report: pb.HeartbeatRequest, dep: dict) -> dict:
    """gw1's clone hold over, its ``report`` taken and the kept steps' retakes done: its target of ``dep``."""
    import time

    srv.fleet._clone_hold[("default", "gw1")] = time.monotonic() - 1
    await stub.Heartbeat(report)
    await asyncio.gather(*srv.fleet._retaking)
    return srv.control.get(dep["id"])["targets"]["gw1"]


async def test_a_step_kept_untold_is_taken_after_the_hold_under_a_run_the_gateway_drew_during_it(fleet):
    """The kept step was looked at on a run's first report only: the late clone's link lost during the hold, its new
    run came then (and was the newest from then on, the other clone now the late one), and the step was never taken,
    though every report of that run named the step's run (its rollout stalled until STEP_TIMEOUT_S)."""
    srv, stub, e = fleet
    dep = await _healthy_kept_in_a_hold(srv, stub, e)
    await stub.Heartbeat(_report(e["1.2.0"], 3, "runX2", "runX"))  # runX's link lost during the hold
    assert srv.control.get(dep["id"])["targets"]["gw1"]["status"] == "downloading"
    t = await _target_after_the_hold(srv, stub, _report(e["1.2.0"], 4, "runX2", "runX"), dep)
    assert (t["status"], t["report"]) == ("healthy", {"boot": "runX2", "seq": 4}), t  # was: downloading


async def test_a_step_kept_untold_is_taken_after_the_hold_though_the_gateways_links_lost_in_it_pushed_its_run_out(
    fleet,
):
    """An agent names its last 3 runs the fleet answered: the late clone's link lost 4 times during the hold (each
    a new run, answered), its run after the hold named the step's run no more and the step was never taken (its
    rollout stalled). A run naming the step's run during the hold is the same gateway's: the step's too."""
    srv, stub, e = fleet
    dep = await _healthy_kept_in_a_hold(srv, stub, e)
    runs = ["runX"]
    for seq in range(3, 7):  # its link lost 4 times during the hold
        await stub.Heartbeat(_report(e["1.2.0"], seq, f"runX{seq}", *runs[:3]))
        runs.insert(0, f"runX{seq}")
    # names runX5, runX4, runX3
    t = await _target_after_the_hold(srv, stub, _report(e["1.2.0"], 7, "runX6", *runs[1:4]), dep)
    assert (t["status"], t["report"]) == ("healthy", {"boot": "runX6", "seq": 7}), t  # was: downloading


async def test_a_step_kept_untold_is_taken_after_the_hold_though_three_runs_taken_in_it_were_never_answered(
    fleet,
):
    """The agent names only the runs the fleet answered; the kept step's runs were the newest 3 that named one of
    them: three runs taken here during the hold whose answers were lost (never named by the agent) pushed the step's
    own run out, and the agent's run after the hold, naming the step's run (its last one answered), took nothing
    (its rollout stalled). The step's own run stays among them."""
    srv, stub, e = fleet
    dep = await _healthy_kept_in_a_hold(srv, stub, e)
    for seq in (3, 4, 5):  # each taken here, naming runX, its answer lost: the agent still names runX only
        await stub.Heartbeat(_report(e["1.2.0"], seq, f"runX{seq}", "runX"))
    t = await _target_after_the_hold(srv, stub, _report(e["1.2.0"], 6, "runX6", "runX"), dep)
    assert (t["status"], t["report"]) == ("healthy", {"boot": "runX6", "seq": 6}), t  # was: downloading


async def test_a_step_kept_untold_is_taken_under_a_run_whose_runs_before_reached_another_replica_only(
    fleet, built, tmp_path
):
    """The runs that name a kept step's run were those this replica took: the gateway's link re-made 3 times during
    the hold, each new run reaching another replica only, its run after the hold (here) named those 3 and not the
    step's run, and the step was never taken (its rollout stalled). The runs each run's report named before it are
    kept with the run in the control state every replica shares, and read through."""
    srv, stub, e = fleet
    dep = await _healthy_kept_in_a_hold(srv, stub, e)
    runs = await _runs_at_another_replica_only(tmp_path, built[0], e)
    t = await _target_after_the_hold(srv, stub, _report(e["1.2.0"], 6, "runX6", *runs), dep)
    assert (t["status"], t["report"]) == ("healthy", {"boot": "runX6", "seq": 6}), t  # was: downloading
    assert not srv.control.kept_steps("gw1")


async def test_a_step_kept_in_a_clone_hold_is_taken_by_the_replica_the_gateways_reports_reach_after_it(
    built, tmp_path
):
    """A step kept late and untold during a clone hold lived in the memory of the replica that kept it: the gateway's
    reports reaching another replica after the hold (a load balancer, its link re-made there), or that replica
    stopped (a rolling upgrade), the step was lost and its rollout stalled until STEP_TIMEOUT_S. Kept in the control
    state, with the hold's end in wall-clock time: held at the other replica as long, then taken there. (On
    PostgreSQL: test_fleet_rollout_control.py, the control state's part; a service started on a fresh database here
    cost seconds.)"""
    import time

    pki, packages = built
    e = published(tmp_path, packages)
    creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
    a = await _serve(tmp_path, pki, free_port())
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{a.port}", creds) as ch:
            dep = await _healthy_kept_in_a_hold(a, rpc.FleetStub(ch), e)
    finally:
        await a.stop()  # the replica that kept it stopped
    b = await _serve(tmp_path, pki, free_port())
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{b.port}", creds) as ch:
            stub = rpc.FleetStub(ch)
            await stub.Heartbeat(_report(e["1.2.0"], 3, "runX"))  # told late here
            await stub.Heartbeat(_report(e["1.2.0"], 4, "runX2", "runX"))
            await asyncio.gather(*b.fleet._retaking)
            assert b.control.get(dep["id"])["targets"]["gw1"]["status"] == "downloading"  # the hold still on
            b.control.clock = lambda: time.time() + 120  # the hold (60 s) over
            await stub.Heartbeat(_report(e["1.2.0"], 5, "runX2", "runX"))
            await asyncio.gather(*b.fleet._retaking)
            t = b.control.get(dep["id"])["targets"]["gw1"]
    finally:
        await b.stop()
    assert (t["status"], t["report"]) == ("healthy", {"boot": "runX2", "seq": 5}), (
        t
    )  # was: downloading (lost)


async def _runs_at_another_replica_only(tmp_path, pki, e) -> tuple[str, ...]:
    """During gw1's hold, runX's link re-made 3 times, each new run reaching a second replica (the same data) only:
    the runs its next run names before it (runX5, runX4, runX3), none of them the kept step's. The second replica
    has not read yet that gw1 has kept steps (its tick reads which agents do every KEPT_LOOK_S): the runs reach the
    kept step through the runs each named before it only."""
    other = await _serve(tmp_path, pki, free_port())
    other.fleet._has_kept = lambda key: False
    creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
    runs = ["runX"]
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{other.port}", creds) as ch:
            for seq in (3, 4, 5):
                await rpc.FleetStub(ch).Heartbeat(_report(e["1.2.0"], seq, f"runX{seq}", *runs[:3]))
                runs.insert(0, f"runX{seq}")
    finally:
        await other.stop()
    return tuple(runs[:3])


@pytest.mark.parametrize("failing", ["earlier_runs", "on_report"], ids=["the read", "the record"])
async def test_a_kept_steps_look_through_the_runs_between_that_failed_is_made_again_at_the_runs_next_report(
    fleet, built, tmp_path, monkeypatch, failing
):
    """The look at a kept step through the runs each run named before it is made once a run: one that failed was not
    made again for the run, and the kept step waited for the gateway's next run, which only a link lost draws (its
    rollout stalled until STEP_TIMEOUT_S). The run's next report looks again, whether the control state's read of
    those runs failed (the database restarting) or the step's record did (the step still kept)."""
    import sqlite3

    srv, stub, e = fleet
    dep = await _healthy_kept_in_a_hold(srv, stub, e)
    runs = await _runs_at_another_replica_only(tmp_path, built[0], e)
    call, calls = getattr(srv.control, failing), []

    def failing_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return call(*args, **kwargs)

    monkeypatch.setattr(srv.control, failing, failing_once)
    t = await _target_after_the_hold(srv, stub, _report(e["1.2.0"], 6, "runX6", *runs), dep)
    assert t["status"] == "downloading", t  # its read, or its record, failed
    await stub.Heartbeat(_report(e["1.2.0"], 7, "runX6", *runs))
    await asyncio.gather(*srv.fleet._retaking)
    t = srv.control.get(dep["id"])["targets"]["gw1"]
    assert (t["status"], t["report"]) == ("healthy", {"boot": "runX6", "seq": 7}), t  # was: downloading
    assert len(calls) == 2


async def test_the_run_told_late_stays_named_through_the_runs_a_link_outage_draws(fleet, built):
    """Each report attempt of a link outage draws a new run (its call failed UNAVAILABLE), and the runs a state report
    named were the last 3 drawn: three failed heartbeats after the tell (15 s at a heartbeat_s of 5 s) pushed out the
    run whose step the fleet kept during a clone hold, and the step was never taken (its rollout stalled). Only the
    runs the fleet answered a call of are named."""
    srv, stub, e = fleet
    async with _agents_client(srv, built) as c:
        told, seq = c.next_report()
        await c.stub.Heartbeat(_report(e["1.0.0"], seq, told), timeout=10)
        await stub.Heartbeat(_report(e["1.0.0"], 1, "newer"))  # another run of gw1 began after it
        call = c.stub.Heartbeat(_report(e["1.0.0"], c.next_report()[1], told), timeout=10)
        await call
        assert (REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata())  # told late
        await srv.stop()  # the link lost
        for _ in range(3):
            boot, seq = c.next_report()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await c.stub.Heartbeat(_report(e["1.0.0"], seq, boot, *c.runs_before), timeout=10)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        c.next_report()
        assert c.runs_before == [told], c.runs_before  # was: the three runs of the failed calls


@contextlib.asynccontextmanager
async def _agents_client(srv, built):
    """gw1's own fleet client (the agent's: its runs, its numbers, told late by the calls' ends), open on ``srv``."""
    from edge_agent.uplink.fleet_client import FleetClient
    from tests.support.fleet import cloud_settings

    c = FleetClient(cloud_settings(built[0], srv.port))
    c.open()
    try:
        yield c
    finally:
        await c.close()


async def test_a_step_kept_untold_during_a_clone_hold_is_not_taken_under_the_other_clones_new_run(fleet):
    """The late clone's step kept untold during the hold was taken at the agent's first new run after it, whichever
    gateway drew it: the operator stopping the late clone (never told late again), the remaining gateway's restart,
    any time later, recorded the stopped clone's ``failed`` as its own over its completed, healthy target. Only the
    gateway of the step's run, told late after the hold, takes it under its new run."""
    import time

    srv, stub, e = fleet
    key = ("default", "gw1")
    await stub.Heartbeat(_report(e["1.0.0"], 1, "runA"))  # the late clone (stopped by the operator later)
    await stub.Heartbeat(_report(e["1.0.0"], 1, "runB"))  # the clone that stays, a newer run
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    )
    await stub.ReportDeployment(_healthy(dep["id"], "1.2.0", 2, "runB"))
    srv.fleet._clone_hold[key] = time.monotonic() + 60
    failed = _healthy(dep["id"], "1.2.0", 2, "runA")
    failed.step, failed.ok, failed.reason = "failed", False, "no room left"
    await stub.ReportDeployment(failed)  # kept late, untold
    # the hold over: runA stopped, runB goes on, then restarts
    srv.fleet._clone_hold[key] = time.monotonic() - 1
    await stub.Heartbeat(_report(e["1.2.0"], 3, "runB"))
    await stub.Heartbeat(_report(e["1.2.0"], 1, "runB2"))  # (a new process: no run before)
    await asyncio.gather(*srv.fleet._retaking)  # (a retake runs in a task of its own)
    t = srv.control.get(dep["id"])["targets"]["gw1"]
    assert (t["status"], t["report"]) == ("healthy", {"boot": "runB", "seq": 2}), t  # was: failed, runB2's


async def _clone_hold_with_a_kept_failed(srv, stub, e, *slots: str) -> list[dict]:
    """gw1's clones A (late) and B (newer): B's ``healthy`` taken on a rollout of 1.2.0 to each of ``slots``; during
    a clone hold A's ``failed`` of the first kept late, untold; then the hold over. The deployments."""
    import time

    await stub.Heartbeat(_report(e["1.0.0"], 1, "runA"))
    await stub.Heartbeat(_report(e["1.0.0"], 1, "runB"))
    deps = [
        srv.control.create({"package": "part-inspection", "version": "1.2.0", "slot": s, "agents": ["gw1"]})
        for s in slots
    ]
    for i, dep in enumerate(deps):
        await stub.ReportDeployment(_healthy(dep["id"], "1.2.0", 2 + i, "runB"))
    srv.fleet._clone_hold[("default", "gw1")] = time.monotonic() + 60
    failed = _healthy(deps[0]["id"], "1.2.0", 2, "runA")
    failed.step, failed.ok, failed.reason = "failed", False, "no room left"
    await stub.ReportDeployment(failed)  # kept late, untold
    srv.fleet._clone_hold[("default", "gw1")] = time.monotonic() - 1
    return deps


async def test_a_step_kept_untold_is_not_taken_under_the_other_clones_new_run_drawn_between_the_tell_and_its_own(
    fleet,
):
    """Both clones running after the hold: the late clone A told late, the remaining gateway B drawing a new run (a
    link re-made) before A's new run came took A's ``failed`` over its own healthy target, within 120 s of the tell
    (with replicas driven to: A's new run on another replica makes B's next report late). A new run names its
    process's runs before it: A's step is taken under A's new run only, whenever it comes."""
    srv, stub, e = fleet
    (dep,) = await _clone_hold_with_a_kept_failed(srv, stub, e, "vision")
    call = stub.Heartbeat(_report(e["1.0.0"], 3, "runA"))
    await call
    assert (REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata())  # told late
    await stub.Heartbeat(_report(e["1.2.0"], 4, "runB2", "runB"))  # B's link re-made first
    await asyncio.gather(*srv.fleet._retaking)
    t = srv.control.get(dep["id"])["targets"]["gw1"]
    assert (t["status"], t["report"]) == ("healthy", {"boot": "runB", "seq": 2}), t  # was: failed, runB2's
    await stub.Heartbeat(_report(e["1.0.0"], 4, "runA2", "runA"))  # A's new run
    await asyncio.gather(*srv.fleet._retaking)
    t = srv.control.get(dep["id"])["targets"]["gw1"]
    assert (t["status"], t["report"]) == ("failed", {"boot": "runA2", "seq": 4}), t


async def test_a_step_kept_untold_is_taken_when_its_run_is_told_late_by_a_deployment_step(fleet):
    """After the hold the late clone's first report was a step of another deployment, kept late and told so: its run
    was not marked told, and its step kept during the hold was forgotten at its new run (its rollout stalled)."""
    srv, stub, e = fleet
    dep, other = await _clone_hold_with_a_kept_failed(srv, stub, e, "vision", "counter")
    step = _healthy(other["id"], "1.2.0", 4, "runA")
    step.step = "active"
    call = stub.ReportDeployment(step)
    await call
    assert (REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata())  # told late: a new run next
    await stub.Heartbeat(_report(e["1.2.0"], 5, "runA2", "runA"))
    await asyncio.gather(*srv.fleet._retaking)
    t = srv.control.get(dep["id"])["targets"]["gw1"]
    # was: healthy (the kept failed forgotten)
    assert (t["status"], t["report"]) == ("failed", {"boot": "runA2", "seq": 5}), t


async def test_a_step_kept_untold_is_taken_under_the_told_gateways_new_run_however_long_after_the_tell(fleet):
    """A late clone on a Connect stream reports every ``report_s`` (30 s) or faster, but reconnects after its tell
    following a random wait of up to ``heartbeat_s``: with a ``heartbeat_s`` of minutes its new run came past the
    mark (120 s, or twice the report interval seen), its step kept during the hold forgotten and its rollout stalled.
    Its new run names the run told late: taken, whenever it comes (here 0.3 s after the tell, its late reports
    0.1 s apart: 120 s after, late reports 30 s apart, scaled)."""
    srv, stub, e = fleet
    (dep,) = await _clone_hold_with_a_kept_failed(srv, stub, e, "vision")
    for seq in (3, 4):  # its late reports, each told late (a unary heartbeat here)
        await stub.Heartbeat(_report(e["1.0.0"], seq, "runA"))
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)  # its reconnect wait
    await stub.Heartbeat(_report(e["1.0.0"], 5, "runA2", "runA"))
    await asyncio.gather(*srv.fleet._retaking)
    t = srv.control.get(dep["id"])["targets"]["gw1"]
    assert (t["status"], t["report"]) == ("failed", {"boot": "runA2", "seq": 5}), (
        t
    )  # was: healthy (forgotten)


async def test_a_kept_step_being_taken_again_as_the_service_stops_is_waited_for(fleet, monkeypatch):
    """The task taking a kept step again was not waited for at stop: the control state closed under it, its write
    failed (logged as the control state's fault) and the step was lost (its rollout stalled). Waited for as a tick.
    The take is held in its record until the stop waits for the takes under way (or closes the control state): the
    agent's heartbeat waits for the take too (its desired state read behind the control state's lock), so that a
    take under way is not seen from its answer."""
    from cloud_trainer.fleet.control import Control

    srv, stub, e = fleet
    (dep,) = await _clone_hold_with_a_kept_failed(srv, stub, e, "vision")
    retake, under_way, close = srv.control.retake_kept, srv.fleet.retakes_under_way, srv._close_opened
    entered, gate, recorded = threading.Event(), threading.Event(), threading.Event()
    closed_in_the_take: list[bool] = []

    def slow(*args, **kwargs):  # (the control database slow to answer)
        entered.set()
        gate.wait(60)
        try:
            return retake(*args, **kwargs)
        finally:
            recorded.set()

    def waited_for():
        tasks = under_way()
        gate.set()
        return tasks

    def closing(owns_control):
        closed_in_the_take.append(entered.is_set() and not recorded.is_set())
        gate.set()
        close(owns_control)

    monkeypatch.setattr(srv.control, "retake_kept", slow)
    monkeypatch.setattr(srv.fleet, "retakes_under_way", waited_for)
    monkeypatch.setattr(srv, "_close_opened", closing)
    await stub.Heartbeat(_report(e["1.0.0"], 3, "runA"))  # told late
    call = stub.Heartbeat(_report(e["1.0.0"], 4, "runA2", "runA"))  # (answered once the take is done)
    try:
        assert await asyncio.to_thread(entered.wait, 60)  # the step being taken
        await srv.stop(grace_s=0.1)
    finally:
        gate.set()
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call
    assert closed_in_the_take == [False]  # was: True (closed under the take)
    again = Control(srv.data / "control.db", srv.registry, None)
    try:
        t = again.get(dep["id"])["targets"]["gw1"]
    finally:
        again.close()
    assert (t["status"], t["report"]) == ("failed", {"boot": "runA2", "seq": 4}), t  # was: healthy (lost)


def _hung_kept_looks(srv, monkeypatch) -> threading.Event:
    """The control state's take of an agent's kept steps hanging (its database slow or down) until the event is set."""
    gate = threading.Event()
    take = srv.control.take_kept

    def hung(*args, **kwargs):
        gate.wait(60)
        return take(*args, **kwargs)

    monkeypatch.setattr(srv.control, "take_kept", hung)
    return gate


async def test_an_agents_looks_at_its_kept_steps_wait_bounded_while_the_control_state_hangs(
    fleet, monkeypatch
):
    """Each report of an agent with kept steps queued a task for its look at them, one behind another: with the
    control database hung (or down, each behind a connect timeout) a gateway's heartbeats, or hostile reports under
    ever new run ids, grew the service's memory for as long as it lasted. One task an agent now: a run's newest
    report replaces its waiting one; past KEPT_LOOK_RUNS runs the oldest run's is dropped and counted. Once the
    control state answers, the step is taken after the hold as before."""
    import time

    from cloud_trainer.fleet.service import KEPT_LOOK_RUNS

    srv, stub, e = fleet
    # 20-odd reports of gw1 at once: over the 20 a second an agent may send (RESOURCE_EXHAUSTED) on a quiet machine
    srv.quotas.limits = dataclasses.replace(srv.quotas.limits, reports_per_s=1000.0)
    key = ("default", "gw1")
    dep = await _healthy_kept_in_a_hold(srv, stub, e)
    gate = _hung_kept_looks(srv, monkeypatch)
    try:
        for seq in range(2, 14):  # the newer clone's heartbeats in the hold
            await stub.Heartbeat(_report(e["1.0.0"], seq, "runY"))
        assert len(srv.fleet.retakes_under_way()) == 1  # was: 12 tasks, one a report
        for i in range(KEPT_LOOK_RUNS + 2):  # reports under new run ids
            await stub.Heartbeat(_report(e["1.0.0"], 1, f"runZ{i}"))
        assert len(srv.fleet.retakes_under_way()) == 1
        assert len(srv.fleet._kept_looks[key]) <= KEPT_LOOK_RUNS + 1  # (a report a run, and the hold's write)
        assert srv.quotas.refusals[(*key, "kept_looks_dropped")] >= 2
        # what waits holds plain values only: a report's repeated field kept its whole request (up to 128 KB) alive
        assert all(_plain(w) for w in srv.fleet._kept_looks[key]), srv.fleet._kept_looks[key]
    finally:
        gate.set()
    await asyncio.gather(*srv.fleet._retaking)
    assert key not in srv.fleet._kept_looks
    srv.fleet._run_starts.pop(key, None)  # (the new runs above not counted towards a clone's here)
    assert srv.control.get(dep["id"])["targets"]["gw1"]["status"] == "downloading"
    srv.fleet._clone_hold[key] = time.monotonic() - 1  # the hold over
    await stub.Heartbeat(_report(e["1.2.0"], 3, "runX"))  # told late
    t = await _target_after_the_hold(srv, stub, _report(e["1.2.0"], 4, "runX2", "runX"), dep)
    assert (t["status"], t["report"]) == ("healthy", {"boot": "runX2", "seq": 4}), t


def _plain(value) -> bool:
    """Whether ``value`` is made of Python's own scalars and containers only (no protobuf object)."""
    if isinstance(value, (str, int, float, type(None))):
        return True
    return type(value) in (tuple, list, set, frozenset) and all(_plain(v) for v in value)


def _a_new_hold_begins(srv) -> None:
    """gw1's runs alternating again (runY2 over runY, past CLONE_RUNS starts, CLONE_LATE of them late): a new clone
    hold begins."""
    import collections
    import time

    key, now = ("default", "gw1"), time.monotonic()
    srv.fleet._run_starts[key] = collections.deque([now] * 5, maxlen=6)
    srv.fleet._late_runs[key] = collections.deque([now] * 3, maxlen=3)
    srv.fleet._alternating(key, "runY", "runY2")


async def test_a_new_clone_hold_is_not_cut_short_by_the_end_of_the_one_before_it_written_late(
    fleet, monkeypatch
):
    """The end of a clone hold, queued at the agent's report behind a slow look at its kept steps, was written after a
    new hold's start (written at once, outside the agent's turn): the kept steps' hold ended in the control state
    while the new hold ran, and another replica the gateway's reports reached took the late clone's step in it. The
    hold's writes wait in the agent's turn, the newest one written."""
    import time

    from cloud_trainer.fleet.service import CLONE_HOLD_S

    srv, stub, e = fleet
    key = ("default", "gw1")
    await _healthy_kept_in_a_hold(srv, stub, e)
    gate = _hung_kept_looks(srv, monkeypatch)
    try:
        await stub.Heartbeat(_report(e["1.0.0"], 2, "runY"))  # a look, hung
        srv.fleet._clone_hold[key] = time.monotonic() - 1  # the hold over: its end written at the next report
        await stub.Heartbeat(_report(e["1.0.0"], 3, "runY"))
        _a_new_hold_begins(srv)
    finally:
        gate.set()
    await asyncio.gather(*srv.fleet._retaking)
    ((_step, _was, _runs, until),) = srv.control.kept_steps("gw1").values()
    assert until > time.time() + CLONE_HOLD_S / 2  # was: the first hold's end (now), the step free to take


async def test_a_new_clone_hold_is_not_cut_short_by_the_end_of_the_one_before_it_whose_write_failed(
    fleet, monkeypatch
):
    """A hold's end whose write fails is written again at the agent's next report. A new hold begun while that write
    was under way (the control database restarting) was ended by it: the kept steps' hold ended in the control state
    while the new hold ran, and another replica could take the late clone's step in it."""
    import time

    from cloud_trainer.fleet.service import CLONE_HOLD_S

    srv, stub, e = fleet
    key = ("default", "gw1")
    await _healthy_kept_in_a_hold(srv, stub, e)
    entered, gate = threading.Event(), threading.Event()
    hold = srv.control.hold_kept

    def end_failing(agent, *, tenant, hold_s):  # (the first end's write)
        if not hold_s and not entered.is_set():
            entered.set()
            gate.wait(60)
            raise ConnectionError("the control database restarting")
        return hold(agent, tenant=tenant, hold_s=hold_s)

    monkeypatch.setattr(srv.control, "hold_kept", end_failing)
    srv.fleet._clone_hold[key] = time.monotonic() - 1  # the hold over: its end written at the next report
    try:
        await stub.Heartbeat(_report(e["1.0.0"], 2, "runY"))
        await until(entered.is_set, what="the hold's end being written")
        _a_new_hold_begins(srv)
    finally:
        gate.set()
    await asyncio.gather(*srv.fleet._retaking)
    await stub.Heartbeat(_report(e["1.0.0"], 3, "runY"))  # in the new hold
    await asyncio.gather(*srv.fleet._retaking)
    ((_step, _was, _runs, until_s),) = srv.control.kept_steps("gw1").values()
    assert until_s > time.time() + CLONE_HOLD_S / 2  # was: the old hold's end written again (now)


async def test_a_clone_holds_start_whose_write_failed_is_written_at_the_agents_next_report(
    fleet, monkeypatch
):
    """A new clone hold's start whose write failed (the control database restarting) was never written again: the
    kept steps' hold stayed ended in the control state for the whole hold, and another replica the gateway's reports
    reached could take the late clone's step in it. A failed write of the hold marks the agent; its next report writes
    the hold as it is then (its end where the hold ends here, not a duration counted from the write)."""
    import time

    from cloud_trainer.fleet.service import CLONE_HOLD_S

    srv, stub, e = fleet
    key = ("default", "gw1")
    await _healthy_kept_in_a_hold(srv, stub, e)
    srv.fleet._clone_hold[key] = time.monotonic() - 1  # the hold over: its end written at the next report
    await stub.Heartbeat(_report(e["1.0.0"], 2, "runY"))
    await asyncio.gather(*srv.fleet._retaking)
    hold, starts = srv.control.hold_kept, []

    def start_failing(agent, *, tenant, hold_s):  # (the new hold's start: its first write)
        if hold_s and not starts:
            starts.append(hold_s)
            raise ConnectionError("the control database restarting")
        return hold(agent, tenant=tenant, hold_s=hold_s)

    monkeypatch.setattr(srv.control, "hold_kept", start_failing)
    _a_new_hold_begins(srv)
    await asyncio.gather(*srv.fleet._retaking)
    assert starts
    await stub.Heartbeat(_report(e["1.0.0"], 3, "runY"))  # in the new hold
    await asyncio.gather(*srv.fleet._retaking)
    ((_step, _was, _runs, until_s),) = srv.control.kept_steps("gw1").values()
    assert until_s > time.time() + CLONE_HOLD_S / 2  # was: the old hold's end (then), the step free to take


async def test_a_kept_step_whose_record_fails_stays_kept_and_is_taken_at_a_later_report(fleet, monkeypatch):
    """A kept step was taken off the kept ones in one transaction and recorded in the next: the record failing (the
    control database restarting between the two) or the replica stopped in between lost it, and its rollout stalled
    until STEP_TIMEOUT_S. Taken and recorded in one write now: a failed record leaves the step kept, and a later
    report of the run records it."""
    import sqlite3

    srv, stub, e = fleet
    (dep,) = await _clone_hold_with_a_kept_failed(srv, stub, e, "vision")
    on_report, calls = srv.control.on_report, []

    def failing_twice(*args, **kwargs):
        calls.append(args)
        if len(calls) <= 2:  # (the direct take, then the one through the runs' links)
            raise sqlite3.OperationalError("disk I/O error")
        return on_report(*args, **kwargs)

    monkeypatch.setattr(srv.control, "on_report", failing_twice)
    await stub.Heartbeat(_report(e["1.0.0"], 3, "runA"))  # told late
    await stub.Heartbeat(_report(e["1.0.0"], 4, "runA2", "runA"))
    await asyncio.gather(*srv.fleet._retaking)
    assert len(calls) == 2 and srv.control.kept_steps("gw1")  # was: none (lost)
    t = await _target_after_the_hold(srv, stub, _report(e["1.0.0"], 5, "runA2", "runA"), dep)
    assert (t["status"], t["report"]) == ("failed", {"boot": "runA2", "seq": 5}), t  # was: healthy


async def test_a_kept_step_is_not_taken_over_a_step_another_replica_took_after_the_retakes_check(
    fleet, monkeypatch
):
    """``Control.retake_kept`` checked that the target was as the kept step left it before ``on_report``'s write
    transaction: a newer step another replica took between the two (here a second Control on the same control.db)
    was written over by the stopped clone's ``failed``. The check is made inside that transaction."""
    from cloud_trainer.fleet.control import Control

    srv, stub, e = fleet
    (dep,) = await _clone_hold_with_a_kept_failed(srv, stub, e, "vision")
    ((step, was, _runs, _until),) = srv.control.kept_steps("gw1").values()
    other = Control(srv.data / "control.db", srv.registry, None)  # another replica
    on_report = srv.control.on_report

    def another_replica_first(*args, **kwargs):
        other.on_report("gw1", dep["id"], "vision", "1.2.0", "healthy", True, "", {}, report=("runB", 5))
        return on_report(*args, **kwargs)

    monkeypatch.setattr(srv.control, "on_report", another_replica_first)
    try:
        assert srv.control.note_run("gw1", "runA2", 6)
        assert not srv.control.retake_kept("gw1", dep["id"], step, was, report=("runA2", 6))
    finally:
        other.close()
    t = srv.control.get(dep["id"])["targets"]["gw1"]
    assert (t["status"], t["report"]) == ("healthy", {"boot": "runB", "seq": 5}), t  # was: failed, runA2's


async def test_two_live_gateways_of_one_identity_each_held_by_another_replica_are_counted_and_their_view_held(
    fleet, built, tmp_path, caplog
):
    """Two processes of gw1 (a cloned VM), each reaching another replica (sticky connections): each replica met one
    run only, so neither was ever late and both wrote the agent's row in turn, the fleet's view flipping at every
    report, never counted. The row says which run wrote it last and the control state which run began last: the
    older clone is told late, each draws a new run in turn, and a replica counts and names it as one replica does;
    then the view stays on one clone."""
    import logging

    from edge_agent.uplink.fleet_client import FleetClient
    from tests.support.fleet import cloud_settings

    srv_a, _stub, e = fleet
    srv_b = await _serve(tmp_path, built[0], free_port())  # the same data: a second replica
    a, b = (
        FleetClient(cloud_settings(built[0], srv_a.port)),
        FleetClient(cloud_settings(built[0], srv_b.port)),
    )
    a.open(), b.open()
    key = ("default", "gw1")
    shown = []
    try:
        for s in (srv_a, srv_b):  # (the clones report faster than the 20 a second an agent may)
            s.quotas.limits = dataclasses.replace(s.quotas.limits, reports_per_s=1000.0)
        with caplog.at_level(logging.WARNING, logger="cloud_trainer.fleet.service"):
            for _ in range(16):
                for c, v in ((a, "1.0.0"), (b, "1.1.0")):
                    boot, seq = c.next_report()
                    await c.stub.Heartbeat(_report(e[v], seq, boot), timeout=10)
                    shown.append(_runs(srv_a)[0])
        counted = [s.quotas.refusals[(*key, "runs_alternating")] for s in (srv_a, srv_b)]
        assert sum(counted) >= 1, (counted, shown)  # was: [0, 0], the view flipping at every report
        said = [r.getMessage() for r in caplog.records if "one identity" in r.getMessage()]
        assert said and said[0].startswith("agent gw1 (tenant default): 6 report runs began"), said
        assert len(set(shown[-8:])) == 1, shown  # held: one clone's view
    finally:
        await a.close()
        await b.close()
        await srv_b.stop()


async def test_a_lone_gateway_restarted_across_two_replicas_is_not_named_a_clone(
    fleet, built, tmp_path, caplog
):
    """One gateway restarted 4 times, each new process's first heartbeat taken by replica B, then its old process's
    last one (held on the way) by replica A: A counts the new run as begun over the old once, at the late report.
    It counted it again at the new run's own first report there (two runs a restart), and named the lone gateway
    two of one identity, its late reports held untold for 10 minutes."""
    import logging

    srv_a, stub_a, e = fleet
    srv_b = await _serve(tmp_path, built[0], free_port())  # the same data: a second replica
    pki = built[0]
    creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{srv_b.port}", creds) as ch:
            stub_b = rpc.FleetStub(ch)
            told = []
            with caplog.at_level(logging.WARNING, logger="cloud_trainer.fleet.service"):
                await stub_a.Heartbeat(_report(e["1.0.0"], 1, "p0"))
                for i in range(1, 5):
                    await stub_b.Heartbeat(_report(e["1.1.0"], 1, f"p{i}"))  # the new process's first
                    call = stub_a.Heartbeat(_report(e["1.0.0"], 3, f"p{i - 1}"))  # the old one's last, late
                    await call
                    told.append((REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata()))
                    await stub_a.Heartbeat(_report(e["1.1.0"], 2, f"p{i}"))
        counted = [s.quotas.refusals[("default", "gw1", "runs_alternating")] for s in (srv_a, srv_b)]
        assert counted == [0, 0], counted  # was: [2, 0], named a clone at the 3rd restart
        assert not [r for r in caplog.records if "one identity" in r.getMessage()]
        assert told == [True] * 4  # was: the 4th untold (held as a clone's)
        assert _runs(srv_a)[0] == "1.1.0"
    finally:
        await srv_b.stop()


async def test_a_stream_report_is_written_only_over_its_own_run_and_one_a_newer_run_refused_ends_the_stream_late(
    fleet,
):
    """A stream's report of a run the process took a report of read the agent's row first (another replica may hold a
    newer run: a cloned gateway), one read a report (10-40 times the report's own cost) and another replica's write
    free to land between the read and the flush. The flush's write is conditional instead: over the report's own run
    (or none). The row of a run that began before it (the agent's previous process, its last report written late by
    another replica) is written over at the next flush; one of a run that began after it ends the stream marked late."""
    from cloud_trainer.fleet.service import _outbox_state, _slot_states

    srv, stub, e = fleet
    srv.hub.flush_s = 0.02
    reads, judged = [], []
    real, newest = srv.store.report_held, srv.fleet._newest_run
    srv.store.report_held = lambda *a, **k: reads.append(1) or real(*a, **k)
    srv.fleet._newest_run = lambda *a: judged.append(1) or newest(*a)
    srv.control.note_run("gw1", "old", 1)  # the agent's previous process, another replica's
    out: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (m := await out.get()) is not None:
            yield m

    async def report(entry, seq: int) -> None:
        out.put_nowait(pb.AgentMessage(report=_report(entry, seq, "new"), report_id=seq))
        while (await asyncio.wait_for(call.read(), 10)).acked != seq:
            pass

    def row_of(entry, seq: int, boot: str) -> None:  # another replica's write
        r = _report(entry, seq, boot)
        srv.store.heartbeat("gw1", dict(r.labels), _slot_states(r), {}, 0, _outbox_state(r))

    row_of(e["1.1.0"], 8, "old")
    call = stub.Connect(requests())
    try:
        for seq in (1, 2, 3):
            await report(e["1.0.0"], seq)
        await until(lambda: _runs(srv)[0] == "1.0.0", 30, "the new run's reports written")
        # the run's first report here and two later ones, coalesced: written at once (was: only once judged)
        assert judged == []
        row_of(e["1.1.0"], 9, "old")  # the previous process's last report, written late
        await report(e["1.2.0"], 4)
        await until(lambda: _runs(srv)[0] == "1.2.0", 30, "written over the older run's row")
        assert reads == [1]  # the run's first report here only (was: one a report, 4)
        srv.control.note_run("gw1", "clone", 1)  # a clone of gw1 on another replica: a newer run
        row_of(e["1.1.0"], 1, "clone")
        await report(e["1.0.0"], 5)
        while (await asyncio.wait_for(call.read(), 10)) is not grpc.aio.EOF:  # was: never ended
            pass
        assert (REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata())
        assert _runs(srv)[0] == "1.1.0" and len(reads) == 1
    finally:
        out.put_nowait(None)
        call.cancel()


async def test_a_new_runs_first_stream_report_is_not_written_over_a_newer_run_another_replica_wrote_after_its_read(
    fleet,
):
    """A stream's first report of a run new to the process reads the agent's row (the run it holds began before: the
    agent's previous process), and was written as it comes at the flush, up to flush_s later: a clone's newer run that
    another replica wrote in between was written over. It is written only over the run it read; the clone's row
    refuses it, and the stream ends marked late."""
    srv, stub, e = fleet
    srv.hub.flush_s = 0.02
    srv.control.note_run("gw1", "old", 1)  # the agent's previous process
    _write_row(srv, e["1.1.0"], 8, "old")
    real, landed = srv.store.heartbeat_many, []

    def many(rows):  # a clone of gw1 begins on another replica, after the report's read, before its flush
        if not landed:
            landed.append(srv.control.note_run("gw1", "clone", 1))
            _write_row(srv, e["1.2.0"], 1, "clone")
        return real(rows)

    srv.store.heartbeat_many = many
    done = asyncio.Event()

    async def requests():  # the report, then the stream kept open as an agent keeps it
        yield pb.AgentMessage(report=_report(e["1.0.0"], 1, "new"), report_id=1)
        await done.wait()

    call = stub.Connect(requests())
    try:
        while (await asyncio.wait_for(call.read(), 5)) is not grpc.aio.EOF:  # was: TimeoutError (never ended)
            pass
        assert (REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata())
        assert landed and _runs(srv)[0] == "1.2.0"  # was: 1.0.0, the late run's written over the clone's
    finally:
        done.set()
        call.cancel()


@pytest.mark.parametrize("run", ["known", "new"])
async def test_a_heartbeat_is_not_written_over_a_newer_run_another_replica_wrote_just_before_its_write(
    fleet, run
):
    """A unary Heartbeat read the agent's row, then wrote its report as it comes: a clone's newer run that another
    replica wrote between the two was written over (the fleet's view flipped back to the late gateway), untold. The
    write is conditional on the run (its own, or the one its run's first report here read); refused, the row is read
    and judged: late, told so, the clone's row kept."""
    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 1, "runR"))  # the process takes run R
    boot = "runR" if run == "known" else "runT"  # (a run new to the process: read in ``_fresh`` first)
    real, landed = srv.store.heartbeat, []

    def heartbeat(*args, **kw):  # a clone begins on another replica just before the heartbeat's write
        if not landed:
            landed.append(srv.control.note_run("gw1", "clone", 1))
            _write_row(srv, e["1.2.0"], 1, "clone")
        return real(*args, **kw)

    srv.store.heartbeat = heartbeat
    call = stub.Heartbeat(_report(e["1.1.0"], 2, boot))
    await call
    assert landed and _runs(srv)[0] == "1.2.0"  # was: 1.1.0
    assert (REPORT_KEY, REPORT_LATE) in tuple(await call.trailing_metadata())  # was: untold


def _write_row(srv, entry, seq: int, boot: str) -> None:
    """gw1's row as another replica writes it: the slot runs ``entry``, report ``seq`` of run ``boot``."""
    from cloud_trainer.fleet.service import _outbox_state, _slot_states

    r = _report(entry, seq, boot)
    srv.store.heartbeat("gw1", dict(r.labels), _slot_states(r), {}, 0, _outbox_state(r))


async def test_a_heartbeat_is_answered_and_written_when_the_control_state_cannot_say_which_run_began_last(
    fleet,
):
    """The agent's row holds another run (another replica's): which began last is the control state's to say. Its
    failure there was taken for the store's write: the heartbeat answered UNAVAILABLE ('the fleet store could not
    record this heartbeat'), the store fine. It is written as it comes, as for a new run the control cannot order."""
    from cloud_trainer.fleet.service import _outbox_state, _slot_states

    srv, stub, e = fleet
    await stub.Heartbeat(_report(e["1.0.0"], 1, "runR"))
    other = _report(e["1.1.0"], 1, "runS")  # another replica's row
    srv.store.heartbeat("gw1", dict(other.labels), _slot_states(other), {}, 0, _outbox_state(other))

    def down(*_a, **_k):
        raise ConnectionError("the control database restarting")

    srv.control.newest_run = down
    await stub.Heartbeat(_report(e["1.2.0"], 2, "runR"))  # was: UNAVAILABLE, the store's write said failed
    assert _runs(srv)[0] == "1.2.0"


async def test_the_flushes_go_on_while_a_report_its_agents_row_refused_waits_to_be_judged(fleet):
    """A stream report its agent's row refused is judged after the flush (which run began last: a read in a place of
    its tenant's heartbeats). Awaited by the flusher, one tenant's places held by a slow store, or the control state
    slow, held every tenant's reports unwritten. It is judged aside; the next flushes go on. One judgment an agent
    at a time: the agent's reports refused meanwhile (one a flush) were each judged in a task of their own, piling
    up while the control state was slow, each in a place of the tenant's heartbeats its other agents wait for; the
    newest of them is judged once the judgment under way ends."""
    import threading
    import time

    srv, _stub, _e = fleet
    srv.hub.flush_s = 0.02
    release, judging, calls = threading.Event(), threading.Event(), []
    # the control state slow
    srv.fleet._newest_run = lambda *a: calls.append(1) or judging.set() or release.wait(60)
    outbox = {"epoch": 1, "dropped": {}, "report": {"boot": "new", "seq": 2}}
    srv.fleet._applied[("default", "gw1")] = ("new", 2, time.monotonic())
    refused = (("default", "gw1"), "clone", ({}, [], {}, 0, outbox, time.time()))
    srv.hub._other_runs.append(refused)
    try:
        await until(judging.is_set, 30, "the judging under way")
        await srv.hub.report(("acme", "gw2"), ({}, [], {}, 0, {}, time.time()), 0)
        await until(
            lambda: srv.store.agents(tenant="acme"), 30, "another tenant's report written"
        )  # was: waited
        for _ in range(3):  # the agent's reports refused at the next flushes
            srv.hub._other_runs.append(refused)
            await until(lambda: not srv.hub._other_runs, 30, "the refusal taken")
        await asyncio.sleep(0.1)
        assert len(calls) == 1  # was: 4 (a judgment each)
        release.set()
        await until(lambda: not srv.hub._judging, 30, "the judgments ended")
        assert len(calls) == 2  # the newest refused report judged after the first
    finally:
        release.set()


async def test_a_report_judged_late_after_its_agent_reconnected_under_a_new_run_does_not_end_the_new_stream(
    fleet,
):
    """An agent's reports its row refused are judged one at a time; the first judged late ends the stream, and the
    agent reconnects under a new run while the next one's read (which run began last) is under way, its new run's first
    report not taken yet. That judgment told the stream open then, the new run's: ended marked late, the agent started
    yet another run."""
    import time

    srv, _stub, _e = fleet
    key, reading, release = ("default", "gw1"), threading.Event(), threading.Event()
    srv.fleet._applied[key] = ("run1", 4, time.monotonic())
    # the clone's run began later (the report late), read once released
    srv.fleet._newest_run = lambda *a: reading.set() or not release.wait(60)
    outbox = {"epoch": 1, "dropped": {}, "report": {"boot": "run1", "seq": 5}}
    refused = [(key, "clone", ({}, [], {}, 0, outbox, time.time()))]
    try:
        async with srv.hub.attach(key):
            judged = asyncio.create_task(srv.fleet._other_runs(refused))
            await until(reading.is_set, 30, "the judgment reading which run began last")
        async with srv.hub.attach(key) as new:  # the agent's new run's stream
            release.set()
            await asyncio.wait_for(judged, 30)
            assert new.empty()  # was: marked late
        assert srv.fleet._judged[key] == ("run1", "clone")  # judged late all the same
    finally:
        release.set()


async def test_a_refused_report_is_judged_without_waiting_for_another_agents_judgment(fleet):
    """Two agents' reports refused at one flush were judged in one task, in turn: an agent of another tenant waited
    for the first one's read (its tenant's places held, the control state slow), and its later refusals waited
    behind it (its state unwritten). Each agent's is judged in a task of its own."""
    import time

    srv, _stub, _e = fleet
    release, a, b = threading.Event(), ("default", "gwA"), ("acme", "gwB")
    # which run began last: the row's began before (written after all); A's read slow
    srv.fleet._newest_run = lambda key, boot: key != a or release.wait(60)
    for key in (a, b):
        srv.fleet._applied[key] = ("new", 2, time.monotonic())
    outbox = {"epoch": 1, "dropped": {}, "report": {"boot": "new", "seq": 3}}
    args = ({}, [], {}, 0, outbox, time.time())
    try:
        srv.hub._judge_aside([(a, "old", args), (b, "old", args)])  # (the flusher's, after a flush)
        # B's report to be written at the next flush, while A's is judged
        await until(lambda: b in srv.hub.pending or srv.store.agents(tenant="acme"), 30, "B's report judged")
        assert a not in srv.hub.pending  # (A's still under judgment)
        assert not srv.store.agents(tenant="default")
    finally:
        release.set()
