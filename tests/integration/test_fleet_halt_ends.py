"""How a rollout's halt ends for each of its agents, against the real fleet service (gRPC mTLS, SQLite control
state, a registry of real signed packages), each agent's side spoken with its own certificate.

A version withdrawn in a rollout's last step: whether every agent of the step is healthy, one is offline at the step
timeout, or that one comes back and has its download refused, the rollout ends by one rule. Agents that run the
version keep it (a withdrawal is not a rollback); agents that never ran it are given their previous version back; a
rollout with an agent that never got it halts naming the withdrawal. Before, the offline and the returning agent each
halted it as a failure of the step and sent every healthy agent back, while the same withdrawal with every agent
healthy sent nobody back.

A halted rollout's target sent back (``rolling_back``) that a newer rollout takes over: closed once the newer one
runs on the agent, read through the agent's own rows, not every halted rollout of the slot."""

from __future__ import annotations

import grpc
import pytest

from cloud_trainer.fleet.service import channel_credentials
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.integration.test_fleet_rollout_report_order import _report as _state
from tests.integration.test_fleet_rollout_report_order import _serve, published
from tests.support.fleet import make_pki
from tests.support.models import make_keypair, make_package
from tests.support.peers import free_port

AGENTS = ("gw1", "gw2", "gw3")
DEFECT = "misses dents under 2 mm (ticket 4411)"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("built")
    key, _ = make_keypair(d / "keys")
    packages = [
        make_package(d / "b", version=v, key=key, seed=i) for i, v in enumerate(["1.0.0", "1.1.0", "1.2.0"])
    ]
    return make_pki(d / "pki", agents=AGENTS, admins=()), packages


@pytest.fixture
async def fleet(tmp_path, built):
    pki, packages = built
    entries = published(tmp_path, packages)
    port = free_port()
    srv = await _serve(tmp_path, pki, port, step_timeout_s=3600)
    channels = {
        a: grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(pki / "ca.pem", pki / "agents" / f"{a}.pem", pki / "agents" / f"{a}.key"),
        )
        for a in AGENTS
    }
    try:
        yield srv, {a: rpc.FleetStub(ch) for a, ch in channels.items()}, entries
    finally:
        for ch in channels.values():
            await ch.close()
        await srv.stop()


def _step(
    dep_id: str, step: str, ok: bool = True, reason: str = "", version: str = "1.1.0"
) -> pb.DeploymentReport:
    return pb.DeploymentReport(
        deployment_id=dep_id,
        slot="vision",
        version=version,
        step=step,
        ok=ok,
        reason=reason,
        health_json="{}",
    )


async def _last_step_with_gw3_offline(srv, stubs, e) -> str:
    """Every agent runs 1.0.0; a rollout of 1.1.0 to all at once; gw1 and gw2 run it healthy, gw3 is offline
    (given it, never installed); 1.1.0 is then withdrawn. Returns the rollout's id."""
    for a in AGENTS:
        await stubs[a].Heartbeat(_state(e["1.0.0"]))
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "steps": ["100%"], "wait_s": 600}
    )
    for a in ("gw1", "gw2"):
        await stubs[a].ReportDeployment(_step(dep["id"], "active"))
        await stubs[a].Heartbeat(_state(e["1.1.0"]))
        await stubs[a].ReportDeployment(_step(dep["id"], "healthy"))
    srv.control.registry.withdraw("part-inspection", "1.1.0", DEFECT)
    srv.control.tick()
    assert srv.control.get(dep["id"])["state"] == "running"  # gw3 may still come back within the step timeout
    return dep["id"]


def _desired(srv, agent: str) -> list[str]:
    return [s["version"] for s in srv.control.desired_state(agent)[1]]


def _ends_by_the_one_rule(srv, dep_id: str, e) -> None:
    d = srv.control.get(dep_id)
    assert d["state"] == "halted", d
    assert d["reason"].startswith(f"part-inspection 1.1.0 was withdrawn from the registry ({DEFECT})"), d[
        "reason"
    ]
    assert "the 2 agent(s) that run it keep it" in d["reason"], d["reason"]
    for a in ("gw1", "gw2"):  # healthy on it: kept (was: rolling_back to 1.0.0)
        assert d["targets"][a]["status"] == "healthy", (a, d["targets"][a])
        assert _desired(srv, a) == ["1.1.0"], a
    assert _desired(srv, "gw3") == ["1.0.0"]  # never on it: given its previous version back


async def test_a_withdrawal_in_the_last_step_with_an_agent_offline_at_the_step_timeout_keeps_the_healthy_on_it(
    fleet,
):
    srv, stubs, e = fleet
    dep_id = await _last_step_with_gw3_offline(srv, stubs, e)
    t0, m0 = srv.control.clock(), srv.control.monotonic()
    srv.control.clock, srv.control.monotonic = (lambda: t0 + 3700), (lambda: m0 + 3700)
    srv.control.tick()
    _ends_by_the_one_rule(srv, dep_id, e)
    # gw3 comes back: nothing to download (its desired state is what it runs), and it is told so in its reply
    reply = await stubs["gw3"].Heartbeat(_state(e["1.0.0"]))
    assert [(s.slot, s.version) for s in reply.desired] == [("vision", "1.0.0")]
    assert srv.control.get(dep_id)["targets"]["gw3"]["status"] == "rolled_back_by_fleet"


async def test_a_withdrawal_in_the_last_step_with_an_agent_whose_download_is_refused_keeps_the_healthy_on_it(
    fleet,
):
    srv, stubs, e = fleet
    dep_id = await _last_step_with_gw3_offline(srv, stubs, e)
    # gw3 comes back before the step timeout: the fleet refuses it the withdrawn version, and it says so
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in stubs["gw3"].DownloadPackage(pb.DownloadRequest(digest=e["1.1.0"]["digest"])):
            pass
    assert (
        refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "withdrawn" in refused.value.details()
    )
    await stubs["gw3"].ReportDeployment(
        _step(dep_id, "failed", False, f"download of part-inspection 1.1.0: {refused.value.details()}")
    )
    _ends_by_the_one_rule(srv, dep_id, e)
    assert srv.control.get(dep_id)["targets"]["gw3"]["status"] == "failed"  # its own word, kept


async def test_a_withdrawal_in_the_last_step_with_every_agent_healthy_completes(fleet):
    """The same rule with nobody left off the version: the rollout completes after its wait, nobody sent back."""
    srv, stubs, e = fleet
    dep_id = await _last_step_with_gw3_offline(srv, stubs, e)
    await stubs["gw3"].ReportDeployment(_step(dep_id, "healthy"))  # (installed before the withdrawal)
    t0, m0 = srv.control.clock(), srv.control.monotonic()
    srv.control.clock, srv.control.monotonic = (lambda: t0 + 700), (lambda: m0 + 700)
    srv.control.tick()
    assert srv.control.get(dep_id)["state"] == "completed"
    assert [_desired(srv, a) for a in AGENTS] == [["1.1.0"]] * 3


async def _halted_with_gw1_and_gw3_going_back(srv, stubs, e) -> str:
    """A rollout of 1.1.0 to every agent: gw1 and gw3 healthy on it, gw2 rolls it back: halted, gw1 and gw3 sent
    1.0.0 back (``rolling_back``). Returns its id."""
    for a in AGENTS:
        await stubs[a].Heartbeat(_state(e["1.0.0"]))
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "steps": ["100%"]}
    )
    for a in ("gw1", "gw3"):
        await stubs[a].ReportDeployment(_step(dep["id"], "healthy"))
        await stubs[a].Heartbeat(_state(e["1.1.0"]))
    await stubs["gw2"].ReportDeployment(_step(dep["id"], "rolled_back", False, "health check failed: NaN"))
    targets = srv.control.get(dep["id"])["targets"]
    assert {a: t["status"] for a, t in targets.items()} == {
        "gw1": "rolling_back",
        "gw2": "rolled_back",
        "gw3": "rolling_back",
    }
    return dep["id"]


async def test_a_halted_rollouts_agent_a_newer_rollout_took_over_is_not_left_rolling_back(fleet):
    """After the halt, a rollout of 1.2.0 takes gw1 over before it went back: gw1 reports its way to 1.2.0 under the
    newer deployment, never to the halted one, whose target said ``rolling_back ... not yet confirmed running`` for
    good (only an admin's rollback closed it). An agent the newer rollout has not reached still says so."""
    srv, stubs, e = fleet
    halted = await _halted_with_gw1_and_gw3_going_back(srv, stubs, e)
    newer = srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.2.0",
            "slot": "vision",
            "agents": ["gw1"],
            "steps": ["100%"],
        }
    )
    await stubs["gw1"].ReportDeployment(_step(newer["id"], "active", version="1.2.0"))
    t = srv.control.get(halted)["targets"]
    assert t["gw1"]["status"] == "rolled_back_by_fleet", t["gw1"]  # was: rolling_back for good
    assert newer["id"] in t["gw1"]["reason"] and "1.2.0" in t["gw1"]["reason"], t["gw1"]["reason"]
    assert t["gw3"]["status"] == "rolling_back"  # not reached
    assert t["gw2"]["status"] == "rolled_back"  # its own verdict stays
    assert srv.control.get(newer["id"])["targets"]["gw1"]["status"] == "active"


async def test_a_report_of_a_rollback_reads_only_the_halted_rollouts_waiting_for_its_agent(
    fleet, monkeypatch
):
    """Ten more halted rollouts of the slot whose agents all went back: a report of an admin's rollback (as of any
    newer rollout now) decoded every halted rollout's document of the slot under the control's lock (10 of 1,000
    agents: 2.5 times the report's cost); it decodes those still waiting for its own agent (here one) and its own
    rollout's."""
    import cloud_trainer.fleet.control as control_module

    srv, stubs, e = fleet
    halted = await _halted_with_gw1_and_gw3_going_back(srv, stubs, e)
    for _ in range(10):  # each halted by gw2's rollback; gw3 was on 1.0.0 then: nobody left going back
        dep = srv.control.create(
            {
                "package": "part-inspection",
                "version": "1.1.0",
                "slot": "vision",
                "agents": ["gw2"],
                "steps": ["100%"],
            }
        )
        await stubs["gw2"].ReportDeployment(
            _step(dep["id"], "rolled_back", False, "health check failed: NaN")
        )
    newer = srv.control.rollback("part-inspection", "1.0.0", "vision", ["gw1"])
    decoded = []
    real_json = control_module.json

    class Counting:
        dumps = staticmethod(real_json.dumps)

        @staticmethod
        def loads(doc):
            out = real_json.loads(doc)
            decoded.append(out.get("id") if isinstance(out, dict) else None)
            return out

    real_tick = srv.control.tick
    # (the tick reads the rollouts in progress: not this report's work)
    monkeypatch.setattr(srv.control, "tick", lambda: None)
    monkeypatch.setattr(control_module, "json", Counting)
    try:
        await stubs["gw1"].ReportDeployment(_step(newer["id"], "healthy", version="1.0.0"))
    finally:
        monkeypatch.undo()
    real_tick()
    assert sorted(decoded) == sorted([newer["id"], halted]), decoded  # was: every halted rollout of the slot
    assert srv.control.get(halted)["targets"]["gw1"]["status"] == "rolled_back_by_fleet"
