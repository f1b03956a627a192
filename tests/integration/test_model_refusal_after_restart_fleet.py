"""What a restart holds against a version the fleet still names, against the real fleet service and a real agent
(gRPC mTLS, registry, ONNX Runtime).

Only the slot's health check's rollback of a version, for that same deployment, is kept across a restart. An
installed copy that fails its re-check at the start (a flipped byte) is a copy to fetch again, not a verdict on the
package: it was refused for good, the deployment the gateway had completed turned ``failed`` ("rolled back or
refused here"), and a new deployment of the version, or an admin's rollback to it, got no answer at all (``assigned``
for good)."""

from __future__ import annotations

import functools

import pytest

from cloud_trainer.fleet.service import FleetServer
from cloud_trainer.registry import Registry
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from simulators.camera import write_folder
from tests.support import waits
from tests.support.fleet import make_pki
from tests.support.models import make_keypair, make_package
from tests.support.peers import free_port

until = functools.partial(waits.until, timeout_s=60.0)  # (a loaded CI machine: two installs and a restart)


def _where(agent: Agent) -> str:
    """What the agent shows of a swap and its judgement, for a wait's timeout: its install steps, the slot's state,
    the inferences its candidate has counted, and whether the camera and the pipeline fed it meanwhile."""
    slot = agent.slots["vision"]
    st, a = slot.status(), slot._active
    p = agent.pipelines[0].status()
    cam = agent.sources["cam"]
    steps = (
        [(s["step"], s["version"], s["deployment"][-8:]) for s in agent.manager.steps]
        if agent.manager
        else []
    )
    return (
        f"steps {steps[-8:]}; busy {agent.manager.busy if agent.manager else None}; slot {st['state']} "
        f"{st['version']}, health watch on it {slot.watches_active()}, its inferences {a.health.n if a else None}, "
        f"counters {st['counters']}, last swap {st['last_swap']}; pipeline items {p['items']} results "
        f"{p['results']} queued {p['queue_depth']} errors {p['errors']}; camera {cam.state} received "
        f"{cam.stats.received} errors {dict(cam.stats.errors_by_reason)}; loop lag {agent.loop_lag_ms()}"
    )


@pytest.fixture
async def fleet(tmp_path):
    pki = make_pki(tmp_path / "pki", agents=("gw1",))
    key, pub = make_keypair(tmp_path / "keys")
    reg = Registry(tmp_path / "registry")
    for i, v in enumerate(["1.0.0", "1.1.0"]):
        p = make_package(tmp_path / "b", kind="vision", version=v, key=key, bias=6.0, seed=i)
        reg.publish(p, [], {}, None, None)
        if v == "1.0.0":
            configured = p
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        registry=tmp_path / "registry",
    )
    await srv.start()
    frames = write_folder(tmp_path / "frames", 10, seed=0, defect_rate=0.3, size=64)
    cfg = parse_config(
        {
            "agent": {"id": "gw1", "site": "plant", "line": "gw1", "data_dir": str(tmp_path / "gw1")},
            "trusted_keys": [str(pub)],
            "http": {"enabled": False},
            "sources": {"cam": {"type": "camera", "url": str(frames), "fps": 30, "loop": True}},
            "models": {
                "vision": {
                    "package": str(configured),
                    "version_policy": "follow_fleet",
                    "engine": "onnxruntime",
                    "health": {"window_s": 1.0, "min_items": 5, "min_latency_increase_ms": 10_000},
                }
            },
            "pipelines": [{"name": "inspect", "source": "cam", "model": "vision"}],
            "cloud": {
                "endpoint": f"127.0.0.1:{port}",
                "ca_file": str(pki / "ca.pem"),
                "cert_file": str(pki / "agents" / "gw1.pem"),
                "key_file": str(pki / "agents" / "gw1.key"),
                "heartbeat_s": 0.3,
                "backoff_initial_s": 0.1,
                "backoff_max_s": 0.5,
            },
        }
    )
    agents = {"gw1": Agent(cfg)}
    await agents["gw1"].start()
    await until(lambda: len(srv.store.agents()) == 1, what="registered")
    yield srv, agents
    for ag in agents.values():
        await ag.stop()
    await srv.stop()


async def test_a_copy_damaged_on_disk_is_fetched_again_and_the_admin_is_answered(fleet):
    srv, agents = fleet
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    await until(lambda: srv.control._get(dep["id"])["state"] == "completed", what="1.1.0 on gw1")
    # the agent numbers its state reports and deployment steps in one count of its run, which the fleet keeps
    # (it orders a verdict against a state report by them); a restart starts a new count, whose reports are
    # written though their numbers are lower
    run = srv.store.agents()[0]["outbox"]["report"]
    verdict = srv.control._get(dep["id"])["targets"]["gw1"]["report"]
    assert verdict["boot"] == run["boot"] and verdict["seq"] > 0 and run["seq"] > 0, (verdict, run)
    gw1 = agents["gw1"]
    store = gw1.slots["vision"].store
    folder = store.current()
    await gw1.stop()
    model = next((store.root / folder).rglob("*.onnx"))
    b = bytearray(model.read_bytes())
    b[len(b) // 2] ^= 0xFF  # a flipped bit on disk: the folder is set aside at the start
    model.write_bytes(bytes(b))
    agents["gw1"] = gw1 = Agent(gw1.cfg)
    await gw1.start()
    assert (store.root / ".rejected" / folder).is_dir()
    # the fleet's desired state still names 1.1.0: fetched again and served (was: refused for good, 1.0.0 served)
    await until(lambda: gw1.slots["vision"].version == "1.1.0", what="the fleet's 1.1.0 fetched again")
    target = srv.control._get(dep["id"])["targets"]["gw1"]
    assert target["status"] != "failed", target  # (was: failed, "rolled back or refused here before ...")
    await until(
        lambda: srv.store.agents()[0]["outbox"]["report"]["boot"] != run["boot"],
        what="the restarted agent's state reports written",
    )
    assert not gw1.manager.refused

    # an admin's new deployment of it, and an admin's rollback to it, are answered (were: assigned for good)
    dep2 = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    await until(
        lambda: srv.control._get(dep2["id"])["state"] == "completed", what="the new deployment answered"
    )
    back = srv.control.rollback("part-inspection", "1.1.0", "vision", ["gw1"])
    await until(
        lambda: srv.control._get(back["id"])["state"] == "completed", what="the admin's rollback answered"
    )
    assert gw1.slots["vision"].version == "1.1.0"


async def test_a_new_deployment_of_a_version_the_health_check_rolled_back_is_installed_and_judged_again(
    fleet, tmp_path
):
    """The health check's rollback holds for its own deployment only (kept across a restart in
    ``deployments/health-rollbacks``); a new deployment of that version is the admin asking again (was: skipped
    without a word, the new deployment ``assigned`` for good)."""
    srv, agents = fleet
    key, _ = make_keypair(tmp_path / "keys")  # (the same key pair: make_keypair keeps the one in the folder)
    bad = make_package(tmp_path / "b2", kind="vision", version="1.2.0", key=key, nan=True)
    Registry(tmp_path / "registry").publish(bad, [], {}, None, None)
    gw1 = agents["gw1"]
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    )
    await until(
        lambda: srv.control._get(dep["id"])["targets"]["gw1"]["status"] == "rolled_back", what="rollback"
    )
    assert gw1.slots["vision"].version == "1.0.0"

    dep2 = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    )
    await until(
        lambda: srv.control._get(dep2["id"])["targets"]["gw1"]["status"] == "rolled_back",
        what="the new deployment installed and judged again",
    )
    steps = [s["step"] for s in gw1.manager.steps if s["deployment"] == dep2["id"]]
    assert steps[:3] == ["downloading", "verifying", "active"], steps
    held = (gw1.cfg.data_dir / "deployments" / "health-rollbacks").read_text()  # (what a restart holds)
    assert dep2["id"] in held and "health check failed" in held


async def test_a_restart_inside_a_new_deployments_swap_does_not_take_the_old_verdict_for_its_outcome(
    fleet, tmp_path
):
    """Deployment A of a version the health check rolled back; the admin's new deployment B of it; the agent
    restarts while B's swap runs (B's pending file written, before the switch). State.json still held A's verdict
    on that folder: the restart read it as B's outcome, reported B failed with A's reason ("... (before the agent
    restarted)"), the fleet halted B and the agent held it for good. Now B's swap counts as interrupted: B is
    installed again and judged by its own health window."""
    import asyncio

    srv, agents = fleet
    key, _ = make_keypair(tmp_path / "keys")
    bad = make_package(tmp_path / "b2", kind="vision", version="1.2.0", key=key, nan=True)
    Registry(tmp_path / "registry").publish(bad, [], {}, None, None)
    gw1 = agents["gw1"]
    new = {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]}
    a = srv.control.create(dict(new))
    await until(lambda: srv.control._get(a["id"])["targets"]["gw1"]["status"] == "rolled_back", what="A")
    await until(lambda: gw1.slots["vision"].version == "1.0.0", what="1.0.0 again")

    gate = asyncio.Event()  # (never set: the agent ends while B's swap runs)
    slot = gw1.slots["vision"]
    real = slot.swap

    async def slow(*x, **kw):  # a verify, load and golden test that take their time
        await gate.wait()
        return await real(*x, **kw)

    slot.swap = slow
    b = srv.control.create(dict(new))
    pending = gw1.cfg.data_dir / "deployments" / "vision.json"
    await until(lambda: pending.exists() and b["id"] in pending.read_text(), what="B's swap under way")
    await gw1.stop()
    agents["gw1"] = gw1 = Agent(gw1.cfg)
    await gw1.start()
    try:
        await until(
            lambda: srv.control._get(b["id"])["targets"]["gw1"]["status"] in ("rolled_back", "failed"),
            what="B's outcome",
        )
    except AssertionError as exc:  # which step it stopped at, and whether the line fed the slot meanwhile
        raise AssertionError(
            f"{exc}; fleet: {srv.control._get(b['id'])['targets']['gw1']}; {_where(gw1)}"
        ) from None
    target = srv.control._get(b["id"])["targets"]["gw1"]
    assert target["status"] == "rolled_back", target  # (was: failed, with A's verdict)
    assert "before the agent restarted" not in str(target), target
    steps = [s["step"] for s in gw1.manager.steps if s["deployment"] == b["id"]]
    assert steps[:3] == ["downloading", "verifying", "active"], (
        steps
    )  # installed again, judged by its own window
