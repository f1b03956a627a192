"""Rollouts where the fleet is not tidy, on the real control state (SQLite ``control.db``, the SQLite store and a
registry of real signed packages): steps that cannot advance, two rollouts of one slot at once, and what a
halted rollout says about agents that have not gone back yet (offline, or their previous package deleted)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time

import pytest

from cloud_trainer.fleet.control import KEPT_LATE, Control
from cloud_trainer.fleet.store import open_store
from cloud_trainer.registry import Registry
from tests.support.models import make_keypair, make_package
from tests.support.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)

AGENTS = ("gw1", "gw2", "gw3")


@pytest.fixture
def control(tmp_path):
    store = open_store(None, tmp_path)
    for agent in AGENTS:
        store.heartbeat(agent, {"site": "plant"}, [], {}, 0, {})
    c = Control(
        tmp_path / "control.db", Registry(tmp_path / "registry"), store, config_validator=lambda b, n: None
    )
    yield c
    store.close()


def test_steps_that_cannot_advance_are_refused_and_an_old_one_stored_halts_alone(control):
    """``--steps 1 half`` or ``nan%`` were stored and then failed every tick of every tenant (no rollout moved
    again); ``--steps 1 50%`` said ``completed`` with half the targets never given the version."""
    c = control
    for steps in (["1", "half"], ["nan%"], ["0"], ["150%"], ["1", "50%"]):
        with pytest.raises(ValueError, match=r"steps"):
            c.create_config(
                {"config_yaml": b"a: 1\n", "config_name": "x", "agents": list(AGENTS), "steps": steps}
            )
    with pytest.raises(ValueError, match="wait_s"):
        c.create_config(
            {"config_yaml": b"a: 1\n", "agents": ["gw1"], "steps": ["100%"], "wait_s": float("nan")}
        )
    assert c.list() == []  # nothing stored
    ok = c.create_config({"config_yaml": b"a: 1\n", "agents": ["gw1", "gw2"], "steps": ["1", "100%"]})
    # a document stored by an older version, which checked nothing
    broken = dict(ok, id="old0000000", steps=["1", "nan%"], created=ok["created"] - 1)
    with c._write():
        c._put(broken)
    c.on_report("gw1", "old0000000", "", ok["digest"], "healthy", True, "", {})  # its step 2 is "nan%"
    c.on_report("gw1", ok["id"], "", ok["digest"], "healthy", True, "", {})
    c.tick()  # did raise, for every deployment of every tenant
    assert c.get("old0000000")["state"] == "halted" and "cannot advance" in c.get("old0000000")["reason"]
    assert c.get(ok["id"])["targets"]["gw2"]["status"] == "assigned"  # the good one moved on


def test_a_newer_rollout_of_a_slot_takes_its_agents_over_from_an_older_one(control):
    """Two rollouts of one slot to the same agents wrote the same desired rows: the older one's next step,
    minutes later, gave gw2 the older config again, while the newer one said ``completed`` for gw2."""
    c = control
    now = [1000.0]
    c.clock = c.monotonic = lambda: now[0]
    a = c.create_config(
        {"config_yaml": b"a: 1\n", "agents": ["gw1", "gw2"], "steps": ["1", "100%"], "wait_s": 60}
    )
    c.on_report("gw1", a["id"], "", a["digest"], "healthy", True, "", {})  # A waits 60 s before gw2
    b = c.create_config({"config_yaml": b"b: 2\n", "agents": ["gw1", "gw2"], "steps": ["1", "100%"]})
    for agent in ("gw1", "gw2"):
        c.on_report(agent, b["id"], "", b["digest"], "healthy", True, "", {})
    assert c.get(b["id"])["state"] == "completed"
    now[0] += 61
    c.tick()
    assert c.desired_state("gw2")[2]["digest"] == b["digest"]  # was A's
    old = c.get(a["id"])
    assert old["state"] == "aborted" and b["id"] in old["reason"]
    assert {t["status"] for t in old["targets"].values()} == {"superseded"}
    # a late report for the older rollout changes nothing
    c.on_report("gw1", a["id"], "", a["digest"], "rolled_back", False, "late", {})
    assert c.desired_state("gw1")[2]["digest"] == b["digest"]


@pytest.fixture
def registry_control(tmp_path, control):
    key, _ = make_keypair(tmp_path / "keys")
    reg = control.registry
    entries = {}
    for i, v in enumerate(["1.0.0", "1.1.0"]):
        reg.publish(make_package(tmp_path / "b", version=v, key=key, seed=i), [], {}, None, None)
        entries[v] = reg.get("part-inspection", v)
    return control, entries


def _runs(c, agent, entry, site="plant"):
    c.store.heartbeat(
        agent,
        {"site": site},
        [
            {
                "slot": "vision",
                "package": entry["name"],
                "version": entry["version"],
                "digest": entry["digest"],
            }
        ],
        {},
        0,
        {},
    )


def test_a_halted_rollout_says_rolling_back_until_the_agent_runs_its_previous_version(registry_control):
    """A halt marked every agent of the step ``rolled_back_by_fleet`` at once: an agent that was offline, or
    whose previous package had been deleted from the registry (it can never go back), was shown as rolled
    back while it ran the halted version."""
    c, e = registry_control
    for agent in AGENTS:
        _runs(c, agent, e["1.0.0"])
    dep = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "steps": ["100%"]})
    c.on_report("gw1", dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    _runs(c, "gw1", e["1.1.0"])  # gw1 runs the new version; gw3 (offline) never took it
    c.on_report("gw2", dep["id"], "vision", "1.1.0", "rolled_back", False, "health check failed: NaN", {})
    d = c.get(dep["id"])
    assert d["state"] == "halted"
    assert d["targets"]["gw1"]["status"] == "rolling_back", d["targets"]["gw1"]  # was rolled_back_by_fleet
    assert d["targets"]["gw3"]["status"] == "rolled_back_by_fleet"  # it runs 1.0.0
    c.on_report("gw1", dep["id"], "vision", "1.1.0", "healthy", True, "", {})  # late: sent before the halt
    assert c.get(dep["id"])["targets"]["gw1"]["status"] == "rolling_back"
    c.on_report("gw1", dep["id"], "vision", "1.0.0", "download_retry", True, "download: link down", {})
    assert "link down" in c.get(dep["id"])["targets"]["gw1"]["reason"]
    c.on_report("gw1", dep["id"], "vision", "1.0.0", "active", True, "", {})
    assert c.get(dep["id"])["targets"]["gw1"]["status"] == "rolled_back_by_fleet"


def test_a_halt_whose_previous_package_was_deleted_still_halts_and_says_it_cannot_go_back(registry_control):
    """The halt's rollback read the size of the previous version's package file: deleted from the registry, it
    raised inside the rollout tick, so the rollout never halted (its canary kept the bad version) and every
    rollout of every tenant stopped moving (each tick, and every agent's report, failed)."""
    c, e = registry_control
    for agent in AGENTS:
        _runs(c, agent, e["1.0.0"])
    other = c.create_config({"config_yaml": b"a: 1\n", "agents": ["gw1", "gw2"], "steps": ["1", "100%"]})
    c.registry.package_path(e["1.0.0"]).unlink()
    dep = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "steps": ["100%"]})
    c.on_report("gw1", dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    _runs(c, "gw1", e["1.1.0"])
    c.on_report("gw2", dep["id"], "vision", "1.1.0", "failed", False, "verify: bad", {})
    d = c.get(dep["id"])
    assert d["state"] == "halted"
    t = d["targets"]["gw1"]
    assert t["status"] == "rolling_back" and "no longer in the registry" in t["reason"], t
    # the agents get the rollback in their desired state all the same (it goes through once republished)
    assert [s["version"] for s in c.desired_state("gw1")[1]] == ["1.0.0"]
    c.on_report("gw1", other["id"], "", other["digest"], "healthy", True, "", {})
    assert c.get(other["id"])["targets"]["gw2"]["status"] == "assigned"  # other rollouts still move


def _rolled_out_to_two(c, e):
    """gw1 and gw2 run 1.1.0 after a completed rollout; gw3 has no model slot 'vision' (another line's gateway)."""
    _runs(c, "gw1", e["1.0.0"])
    _runs(c, "gw2", e["1.0.0"])
    dep = c.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "agents": ["gw1", "gw2"],
            "steps": ["100%"],
        }
    )
    for a in ("gw1", "gw2"):
        c.on_report(a, dep["id"], "vision", "1.1.0", "healthy", True, "", {})
        _runs(c, a, e["1.1.0"])
    assert c.get(dep["id"])["state"] == "completed"


def test_a_rollback_of_the_whole_fleet_targets_the_agents_that_have_the_slot(registry_control):
    """`cloud-trainer rollback` without --agent targeted every agent of the tenant: a gateway of another line
    without the slot refused it, which halted the rollback, and the halt sent the version rolled back away
    from (1.1.0) to every other agent as their 'previous' version."""
    c, e = registry_control
    _rolled_out_to_two(c, e)
    back = c.rollback("part-inspection", "1.0.0", "vision", [])
    assert sorted(c.get(back["id"])["targets"]) == ["gw1", "gw2"]
    assert c.desired_state("gw3")[1] == []


def test_a_rollback_that_halts_never_sends_back_the_version_it_rolled_away_from(registry_control):
    c, e = registry_control
    _rolled_out_to_two(c, e)
    back = c.rollback("part-inspection", "1.0.0", "vision", ["gw1", "gw2"])
    c.on_report("gw1", back["id"], "vision", "1.0.0", "failed", False, "download: digest mismatch", {})
    b = c.get(back["id"])
    assert b["state"] == "halted" and "gw1" in b["reason"]
    for agent in ("gw1", "gw2"):  # was 1.1.0, marked as a rollback
        assert [s["version"] for s in c.desired_state(agent)[1]] == ["1.0.0"], agent
    assert (
        b["targets"]["gw2"]["status"] == "assigned"
    )  # it goes on with the rollback, and is not told otherwise


async def test_a_step_whose_agents_never_report_is_said_stalled_and_waits(registry_control, tmp_path, capsys):
    """A canary that never reported (offline, or stuck installing) kept the rollout ``running`` for good and the
    admin saw nothing wrong. Past the step timeout the deployment says it is stalled, naming the agents (also in
    `cloud-trainer status` over a real fleet service); it waits for them, and moves on once they are healthy."""
    import asyncio

    from cloud_trainer import admin_cli
    from cloud_trainer.fleet.service import FleetServer
    from tests.support.fleet import make_pki
    from tests.support.peers import free_port

    c, e = registry_control
    for agent in AGENTS:
        _runs(c, agent, e["1.0.0"])
    now = [1000.0]
    c.clock = c.monotonic = lambda: now[0]
    c.step_timeout_s = 600
    dep = c.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "selector": {"site": "plant"},
            "steps": ["1", "100%"],
        }
    )
    now[0] += 599
    c.tick()
    assert not c.get(dep["id"]).get("stalled")
    now[0] += 2  # gw1, the canary, never reported
    c.tick()
    d = c.get(dep["id"])
    assert d["state"] == "running" and d["stalled"]["agents"] == ["gw1"], d
    assert "stalled" in d["reason"] and "gw1 (assigned" in d["reason"], d["reason"]
    assert d["targets"]["gw2"]["status"] == "waiting"  # it waits: the later steps do not start

    pki = make_pki(tmp_path / "pki", agents=(), admins=("alice",))
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        registry=c.registry.root,
        control=c,
        streams=False,
    )
    await srv.start()
    try:
        base = ["--endpoint", f"127.0.0.1:{port}", "--pki", str(pki), "--admin", "alice"]
        capsys.readouterr()
        assert await asyncio.to_thread(admin_cli.main_status, base) == 0
        out = capsys.readouterr().out
        assert f"STALLED {dep['id']} (part-inspection-1.1.0) step 1/2: no healthy report from gw1" in out, out
        assert await asyncio.to_thread(admin_cli.main_deployments, base) == 0
        assert "running (stalled)" in capsys.readouterr().out
    finally:
        await srv.stop()

    c.command(dep["id"], "pause")
    c.command(dep["id"], "resume")  # its deadline counts from the resume
    assert not c.get(dep["id"])["stalled"]
    now[0] += 601
    c.tick()
    assert c.get(dep["id"])["stalled"]["agents"] == ["gw1"]
    c.on_report("gw1", dep["id"], "vision", "1.1.0", "healthy", True, "", {})  # it came back
    d = c.get(dep["id"])
    assert not d["stalled"] and d["reason"] == "" and d["targets"]["gw2"]["status"] == "assigned", d
    now[0] += 601
    c.tick()
    assert c.get(dep["id"])["stalled"]["agents"] == ["gw2", "gw3"]
    c.on_report("gw2", dep["id"], "vision", "1.1.0", "failed", False, "verify: bad", {})
    d = c.get(dep["id"])  # a halt ends the stall: the reason is the halt's
    assert d["state"] == "halted" and not d["stalled"] and "verify: bad" in d["reason"], d


def test_a_gateway_that_joins_the_group_mid_rollout_follows_the_rollout(registry_control):
    """A gateway enrolled into (or labelled into) a rollout's group after it was created was never a target: it
    kept running what it had while the rest of the group ended on the new version. It now joins the rollout
    at the end of its order: it keeps its version while the canary is judged (never made a canary), gets the
    new one with the last step, and the rollout completes only once it runs it too. A gateway moved out of the
    group before the rollout reached it was given the version all the same; it no longer is."""
    c, e = registry_control
    now = [1000.0]
    c.clock = c.monotonic = lambda: now[0]
    for agent in ("gw2", "gw3"):
        _runs(c, agent, e["1.0.0"])
    c.store.heartbeat("gw1", {"site": "elsewhere"}, [], {}, 0, {})  # not in the group (yet)
    dep = c.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "selector": {"site": "plant"},
            "steps": ["1", "100%"],
            "wait_s": 0,
        }
    )
    assert sorted(c.get(dep["id"])["targets"]) == ["gw2", "gw3"]
    # gw1 is moved into the group; gw0 is a new gateway enrolled there: both sort before the canary gw2
    _runs(c, "gw1", e["1.0.0"])
    c.store.heartbeat("gw0", {"site": "plant"}, [], {}, 0, {})
    now[0] += 31  # (looked for every 30 s)
    c.tick()
    d = c.get(dep["id"])
    assert sorted(d["targets"]) == ["gw0", "gw1", "gw2", "gw3"], d["targets"]
    assert d["targets"]["gw2"]["status"] == "assigned"  # the canary is still gw2
    for agent in ("gw0", "gw1", "gw3"):  # they keep what they run while the canary is judged
        assert d["targets"][agent]["status"] == "waiting", agent
        assert c.desired_state(agent)[1] == [], agent
    assert d["previous"]["gw1"]["version"] == "1.0.0"  # what a halt would send it back to
    # and gw3, a target not reached yet, is moved out of the group: nobody chose the version for it any more
    c.store.heartbeat("gw3", {"site": "elsewhere"}, [], {}, 0, {})
    now[0] += 31
    c.tick()
    assert c.get(dep["id"])["targets"]["gw3"]["status"] == "left_group"
    c.on_report("gw2", dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    for agent in ("gw0", "gw1"):  # the last step reaches them
        assert [s["version"] for s in c.desired_state(agent)[1]] == ["1.1.0"], agent
        c.on_report(agent, dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    assert c.get(dep["id"])["state"] == "completed"
    assert c.desired_state("gw3")[1] == []  # it runs what it runs
    # after the rollout completed, a gateway that joins the group is given the version the group runs at once
    _runs(c, "gw3", e["1.0.0"])  # (back in the group)
    now[0] += 31
    c.tick()
    assert [s["version"] for s in c.desired_state("gw3")[1]] == ["1.1.0"]
    assert c.get(dep["id"])["targets"]["gw3"]["status"] == "assigned"
    # ... until a newer rollout of the slot (here an admin's rollback of two gateways) ends it: a newcomer is
    # never given the version an admin rolled back from
    c.rollback("part-inspection", "1.0.0", "vision", ["gw1", "gw2"])
    c.store.heartbeat("gw4", {"site": "plant"}, [], {}, 0, {})
    now[0] += 31
    c.tick()
    assert c.desired_state("gw4")[1] == []


def test_a_server_clock_stepped_back_holds_no_step_and_no_joining_gateway_for_the_steps_length(
    registry_control,
):
    """The rollout's marks are the server's wall clock (replicas share them through the store). When that clock
    was stepped back (NTP correcting a clock that ran ahead, a VM restored from a snapshot), every mark written
    before lay in the future: a canary healthy with ``--wait 60`` held the rest of the group for the hour the clock
    went back, and gateways joining the group were not looked for (nor given a completed rollout's version) for
    that hour either. A mark later than the clock now counts from now: each wait is its own length again."""
    c, e = registry_control
    now = [1_000_000.0]
    c.clock = c.monotonic = lambda: now[0]
    for agent in AGENTS:
        _runs(c, agent, e["1.0.0"])
    dep = c.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "selector": {"site": "plant"},
            "steps": ["1", "100%"],
            "wait_s": 60,
        }
    )
    targets = c.get(dep["id"])["targets"]
    [canary] = [a for a, t in targets.items() if t["status"] == "assigned"]
    c.on_report(canary, dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    now[0] -= 3600  # the server's clock is stepped back an hour
    c.tick()
    assert all(t["status"] == "waiting" for a, t in c.get(dep["id"])["targets"].items() if a != canary)
    now[0] += 61  # the 60 s wait, counted from the clock's new time
    c.tick()
    d = c.get(dep["id"])
    assert all(t["status"] == "assigned" for a, t in d["targets"].items() if a != canary), d["targets"]
    for agent in AGENTS:
        if agent != canary:
            c.on_report(agent, dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    now[0] += 61
    c.tick()
    assert c.get(dep["id"])["state"] == "completed"
    # a gateway that joins the group after another step back is given the group's version within the 30 s
    c.store.heartbeat("gw4", {"site": "plant"}, [], {}, 0, {})
    now[0] -= 3600
    c.tick()
    now[0] += 31
    c.tick()
    assert [s["version"] for s in c.desired_state("gw4")[1]] == ["1.1.0"]


def test_a_server_clock_stepped_forward_cuts_no_steps_wait_short(registry_control):
    """The rollout's marks are the server's wall clock. When that clock was stepped forward during a step's wait
    (NTP correcting a clock that ran late, a VM resumed after a pause), the wait counted the step: a canary healthy
    with ``--wait 600`` gave every other gateway the version at the next tick after a one-hour step, without
    the ten minutes of watching the canary that ``--wait`` asks for. The wait is now bounded by the time that
    really passed (this process's monotonic clock)."""
    c, e = registry_control
    now, mono = [1_000_000.0], [50.0]
    c.clock, c.monotonic = (lambda: now[0]), (lambda: mono[0])
    for agent in AGENTS:
        _runs(c, agent, e["1.0.0"])
    dep = c.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "agents": list(AGENTS),
            "steps": ["1", "100%"],
            "wait_s": 600,
        }
    )
    targets = c.get(dep["id"])["targets"]
    [canary] = [a for a, t in targets.items() if t["status"] == "assigned"]
    c.on_report(canary, dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    c.tick()
    now[0] += 3600 + 1  # the server's clock is stepped an hour forward, one second passes
    mono[0] += 1
    c.tick()
    d = c.get(dep["id"])
    assert all(t["status"] == "waiting" for a, t in d["targets"].items() if a != canary), d["targets"]
    now[0] += 600  # the 600 s wait passes
    mono[0] += 600
    c.tick()
    d = c.get(dep["id"])
    assert all(t["status"] == "assigned" for a, t in d["targets"].items() if a != canary), d["targets"]


def test_an_agent_taken_over_before_it_installed_the_older_rollouts_version_is_not_sent_it(
    registry_control, tmp_path
):
    """A newer rollout of a slot took gw2 over from an older one whose canary step had given gw2 1.1.0 while gw2
    was offline: the older rollout was aborted and the newer one had gw2 waiting (keep what it runs) behind its own
    canary, but gw2's desired state still named the aborted rollout's 1.1.0, so gw2, back days later, installed a
    version no rollout wanted any more. It keeps what it runs now until the newer rollout's step reaches it; an
    agent the newer rollout takes over that it gives its version at once gets it as before."""
    c, e = registry_control
    key, _ = make_keypair(tmp_path / "keys")
    c.registry.publish(make_package(tmp_path / "b", version="1.2.0", key=key, seed=2), [], {}, None, None)
    e["1.2.0"] = c.registry.get("part-inspection", "1.2.0")
    for agent in AGENTS:
        _runs(c, agent, e["1.0.0"])
    older = c.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw2", "gw3"]}
        | {"strategy": "canary", "steps": ["1", "100%"], "wait_s": 0}
    )
    assert c.get(older["id"])["targets"]["gw2"]["status"] == "assigned"  # gw2 is offline: it never heard
    assert [d["version"] for d in c.desired_state("gw2")[1]] == ["1.1.0"]
    newer = c.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": list(AGENTS)}
        | {"strategy": "canary", "steps": ["1", "100%"], "wait_s": 0}
    )
    assert c.get(older["id"])["state"] == "aborted"
    d = c.get(newer["id"])
    assert d["targets"]["gw1"]["status"] == "assigned" and d["targets"]["gw2"]["status"] == "waiting"
    # gw2 comes back: it is told to install nothing (it keeps 1.0.0 until the newer rollout's step reaches it)
    assert c.desired_state("gw2")[1] == []
    assert [d["version"] for d in c.desired_state("gw1")[1]] == ["1.2.0"]
    c.on_report("gw1", newer["id"], "vision", "1.2.0", "healthy", True, "", {})
    c.tick()
    assert [d["version"] for d in c.desired_state("gw2")[1]] == ["1.2.0"]


def test_a_halt_never_sends_back_as_previous_the_version_it_halts_on(registry_control):
    """A new rollout of a version the agent's health check had just rolled back, created before the agent's next
    state report: the fleet took the candidate it still reported running for its previous version. The agent
    rolled the new rollout back too, and the halt sent it that same version "back" as an admin's rollback (no
    health window): installed again and served for good, its target turned from rolled_back to healthy."""
    c, e = registry_control
    _runs(c, "gw1", e["1.0.0"])
    a = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]})
    c.on_report("gw1", a["id"], "vision", "1.1.0", "active", True, "", {})
    _runs(c, "gw1", e["1.1.0"])  # its state report with the candidate serving, the last before the verdict
    c.on_report("gw1", a["id"], "vision", "1.1.0", "rolled_back", False, "health check failed: NaN", {})
    b = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]})
    c.on_report("gw1", b["id"], "vision", "1.1.0", "rolled_back", False, "health check failed: NaN", {})
    assert c.get(b["id"])["state"] == "halted"
    sent = [(s["version"], s["deployment_id"]) for s in c.desired_state("gw1")[1]]
    assert ("1.1.0", b["id"] + ":rollback") not in sent, sent  # was: 1.1.0 sent back as B's rollback
    assert c.get(b["id"])["targets"]["gw1"]["status"] == "rolled_back"


def test_a_halt_never_sends_back_as_previous_a_version_the_agent_rolled_back_in_an_earlier_rollout(
    registry_control, tmp_path
):
    """A rollout of 1.2.0 created after the agent's health check rolled 1.1.0 back, before its next state report
    (which still named 1.1.0): the fleet took 1.1.0 for its previous version, and when the agent rolled 1.2.0 back
    too, the halt sent it 1.1.0 as an admin's rollback (no health window): the version its own check rejected,
    served for good. It goes back to what it ran before 1.1.0; a late report of 1.2.0 then keeps the verdict."""
    c, e = registry_control
    key, _ = make_keypair(tmp_path / "keys")
    c.registry.publish(make_package(tmp_path / "b", version="1.2.0", key=key, seed=2), [], {}, None, None)
    _runs(c, "gw1", e["1.0.0"])
    a = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]})
    c.on_report("gw1", a["id"], "vision", "1.1.0", "active", True, "", {})
    _runs(c, "gw1", e["1.1.0"])  # its state report with the candidate serving, the last before the verdict
    c.on_report("gw1", a["id"], "vision", "1.1.0", "rolled_back", False, "health check failed: NaN", {})
    assert c.get(a["id"])["state"] == "halted"
    b = c.create({"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]})
    assert c.get(b["id"])["previous"]["gw1"]["version"] == "1.0.0"  # was 1.1.0
    c.on_report("gw1", b["id"], "vision", "1.2.0", "rolled_back", False, "health check failed: NaN", {})
    assert c.get(b["id"])["state"] == "halted"
    sent = [(s["version"], s["deployment_id"]) for s in c.desired_state("gw1")[1]]
    assert sent == [("1.0.0", b["id"] + ":rollback")], sent  # was: 1.1.0, rejected by the agent's own check
    # a late step of 1.2.0 (or the version installed again by other means) does not turn the verdict to healthy
    for step in ("active", "healthy"):
        c.on_report("gw1", b["id"], "vision", "1.2.0", step, True, "", {})
    t = c.get(b["id"])["targets"]["gw1"]
    assert t["status"] == "rolled_back" and t["last_report"]["step"] == "healthy"
    assert c.get(a["id"])["targets"]["gw1"]["status"] == "rolled_back"


def test_a_halt_never_sends_an_agent_below_the_version_a_rollout_completed_on_it(registry_control, tmp_path):
    """A rollout of 1.2.0 created after a rollout of 1.1.0 completed on the agent, before its next state report
    (which still named 1.0.0): the fleet took 1.0.0 for its previous version, and when the agent's health check
    rolled 1.2.0 back (to 1.1.0), the halt sent it 1.0.0 as an admin's rollback: a downgrade nobody asked for,
    installed with no health window. The fleet's own record (1.1.0 healthy, newer than the report) is the start."""
    c, e = registry_control
    key, _ = make_keypair(tmp_path / "keys")
    c.registry.publish(make_package(tmp_path / "b", version="1.2.0", key=key, seed=2), [], {}, None, None)
    _runs(c, "gw1", e["1.0.0"])
    a = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]})
    c.on_report("gw1", a["id"], "vision", "1.1.0", "active", True, "", {})
    c.on_report("gw1", a["id"], "vision", "1.1.0", "healthy", True, "", {})
    assert c.get(a["id"])["state"] == "completed"
    b = c.create({"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]})
    assert c.get(b["id"])["previous"]["gw1"]["version"] == "1.1.0"  # was 1.0.0, the stale report's
    c.on_report("gw1", b["id"], "vision", "1.2.0", "rolled_back", False, "health check failed: NaN", {})
    assert c.get(b["id"])["state"] == "halted"
    sent = [(s["version"], s["deployment_id"]) for s in c.desired_state("gw1")[1]]
    assert sent == [("1.1.0", b["id"] + ":rollback")], sent  # was: 1.0.0, below what A completed with
    # a state report newer than the fleet's record is what the agent runs (here 1.0.0, by other means): the start
    _runs(c, "gw1", e["1.0.0"])
    d = c.create({"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]})
    assert c.get(d["id"])["previous"]["gw1"]["version"] == "1.0.0"


def test_a_halt_never_sends_back_as_previous_a_version_the_fleet_took_the_agent_off(
    registry_control, tmp_path
):
    """A rollout of 1.1.0 halted (another agent's health check rolled it back) and sent gw1 back to 1.0.0, which gw1
    confirmed; a rollout of 1.2.0 created before gw1's next state report (still 1.1.0) took 1.1.0 for its previous
    version, and its halt sent gw1 the version the fleet had just halted and taken it off, as an admin's rollback."""
    c, e = registry_control
    key, _ = make_keypair(tmp_path / "keys")
    c.registry.publish(make_package(tmp_path / "b", version="1.2.0", key=key, seed=2), [], {}, None, None)
    for agent in ("gw1", "gw2"):
        _runs(c, agent, e["1.0.0"])
    a = c.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "agents": ["gw1", "gw2"],
            "steps": ["100%"],
        }
    )
    c.on_report("gw1", a["id"], "vision", "1.1.0", "active", True, "", {})
    _runs(c, "gw1", e["1.1.0"])  # its state report with the candidate serving, the last before the halt
    c.on_report("gw2", a["id"], "vision", "1.1.0", "rolled_back", False, "health check failed: NaN", {})
    assert c.get(a["id"])["state"] == "halted"
    c.on_report("gw1", a["id"], "vision", "1.0.0", "healthy", True, "", {})  # back on 1.0.0, as the halt said
    assert c.get(a["id"])["targets"]["gw1"]["status"] == "rolled_back_by_fleet"
    b = c.create({"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]})
    assert c.get(b["id"])["previous"]["gw1"]["version"] == "1.0.0"  # was 1.1.0
    c.on_report("gw1", b["id"], "vision", "1.2.0", "rolled_back", False, "health check failed: NaN", {})
    sent = [(s["version"], s["deployment_id"]) for s in c.desired_state("gw1")[1]]
    assert sent == [("1.0.0", b["id"] + ":rollback")], sent  # was: 1.1.0, the version the fleet halted


def test_a_halt_sends_back_the_version_a_rollout_completed_on_an_agent_whose_report_showed_the_slot_empty(
    registry_control, tmp_path
):
    """A gateway whose last state report showed the slot empty (enrolled before any model) got 1.1.0 from a rollout
    that completed on it; a rollout of 1.2.0 created before its next state report took no previous version for it,
    and when the rollout halted (another gateway's health check) it was not sent back: it kept serving the halted
    1.2.0. The fleet's own record (1.1.0 healthy, newer than the report) is its previous version."""
    c, e = registry_control
    key, _ = make_keypair(tmp_path / "keys")
    c.registry.publish(make_package(tmp_path / "b", version="1.2.0", key=key, seed=2), [], {}, None, None)
    _runs(c, "gw2", e["1.1.0"])  # gw1's report (the fixture's) shows no model in the slot
    a = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]})
    c.on_report("gw1", a["id"], "vision", "1.1.0", "healthy", True, "", {})
    assert c.get(a["id"])["state"] == "completed"
    b = c.create(
        {
            "package": "part-inspection",
            "version": "1.2.0",
            "slot": "vision",
            "agents": ["gw1", "gw2"],
            "steps": ["100%"],
        }
    )
    assert c.get(b["id"])["previous"].get("gw1", {}).get("version") == "1.1.0"  # was none
    c.on_report("gw1", b["id"], "vision", "1.2.0", "healthy", True, "", {})
    c.on_report("gw2", b["id"], "vision", "1.2.0", "rolled_back", False, "health check failed: NaN", {})
    assert c.get(b["id"])["state"] == "halted"
    sent = [(s["version"], s["deployment_id"]) for s in c.desired_state("gw1")[1]]
    assert sent == [("1.1.0", b["id"] + ":rollback")], sent  # was: nothing, gw1 kept the halted 1.2.0


def test_a_gateway_joining_a_rollouts_group_never_gets_as_previous_a_version_it_rolled_back(
    registry_control, tmp_path
):
    """A gateway labelled into a selector rollout's group (1.2.0) with a state report still naming 1.1.0, whose
    health check then rolled 1.1.0 back (an earlier rollout's verdict, after that report): the rollout it joins
    takes what it ran before 1.1.0 for its previous version, never 1.1.0, which a halt would send it as an
    admin's rollback; likewise one whose report showed the slot empty takes the version a rollout completed."""
    c, e = registry_control
    key, _ = make_keypair(tmp_path / "keys")
    c.registry.publish(make_package(tmp_path / "b", version="1.2.0", key=key, seed=2), [], {}, None, None)
    now = [time.time()]
    c.clock = c.monotonic = lambda: now[0]
    for agent in ("gw1", "gw2"):
        _runs(c, agent, e["1.0.0"])
    _runs(c, "gw3", e["1.0.0"], site="elsewhere")
    c.store.heartbeat("gw0", {"site": "elsewhere"}, [], {}, 0, {})
    a = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw3"]})
    c.on_report("gw3", a["id"], "vision", "1.1.0", "active", True, "", {})
    g = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw0"]})
    c.on_report("gw0", g["id"], "vision", "1.1.0", "active", True, "", {})
    b = c.create(
        {
            "package": "part-inspection",
            "version": "1.2.0",
            "slot": "vision",
            "selector": {"site": "plant"},
            "steps": ["1", "100%"],
            "wait_s": 0,
        }
    )
    # both labelled into the group: gw3's report names 1.1.0 (serving, before its verdict), gw0's shows no model
    _runs(c, "gw3", e["1.1.0"])
    c.store.heartbeat("gw0", {"site": "plant"}, [], {}, 0, {})
    now[0] += 1
    c.on_report("gw3", a["id"], "vision", "1.1.0", "rolled_back", False, "health check failed: NaN", {})
    c.on_report("gw0", g["id"], "vision", "1.1.0", "healthy", True, "", {})
    now[0] += 31  # (joins are looked for every 30 s)
    c.tick()
    d = c.get(b["id"])
    assert d["targets"]["gw3"]["status"] == "waiting" and d["targets"]["gw0"]["status"] == "waiting"
    assert d["previous"]["gw3"]["version"] == "1.0.0"  # not 1.1.0, which gw3's own check rolled back
    assert d["previous"]["gw0"]["version"] == "1.1.0"  # was none: its report showed the slot empty


def test_a_halt_never_sends_an_agent_below_a_completed_version_while_a_newer_rollout_is_under_way_on_it(
    registry_control, tmp_path
):
    """A rollout of 1.1.0 completed on gw1 (its state report still named 1.0.0); a rollout of 1.2.0 began there
    (downloading); a rollout of 1.3.0 created then took the stale 1.0.0 for gw1's previous version (the newest
    rollout to gw1 had not ended, so the fleet's record was not looked at), and its abort sent gw1 1.0.0 as an
    admin's rollback: below the version a rollout had completed on it, which nobody asked for."""
    c, e = registry_control
    key, _ = make_keypair(tmp_path / "keys")
    for i, v in enumerate(["1.2.0", "1.3.0"], start=2):
        c.registry.publish(make_package(tmp_path / "b", version=v, key=key, seed=i), [], {}, None, None)
    _runs(c, "gw1", e["1.0.0"])
    a = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]})
    c.on_report("gw1", a["id"], "vision", "1.1.0", "healthy", True, "", {})
    b = c.create({"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1"]})
    c.on_report("gw1", b["id"], "vision", "1.2.0", "downloading", True, "", {})
    d = c.create({"package": "part-inspection", "version": "1.3.0", "slot": "vision", "agents": ["gw1"]})
    assert c.get(d["id"])["previous"]["gw1"]["version"] == "1.1.0"  # was 1.0.0
    c.command(d["id"], "abort")
    sent = [(s["version"], s["deployment_id"]) for s in c.desired_state("gw1")[1]]
    assert sent == [("1.1.0", d["id"] + ":rollback")], sent  # was: 1.0.0


@pytest.fixture(params=["sqlite", "postgresql"])
def either_control(request, tmp_path):
    """The control state on SQLite and on PostgreSQL, gw1 to gw3 registered, 1.0.0 to 1.2.0 published."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    store = open_store(url, tmp_path)
    for agent in AGENTS:
        store.heartbeat(agent, {"site": "plant"}, [], {}, 0, {})
    c = Control(
        url or tmp_path / "control.db",
        Registry(tmp_path / "registry"),
        store,
        config_validator=lambda b, n: None,
    )
    key, _ = make_keypair(tmp_path / "keys")
    entries = {}
    for i, v in enumerate(["1.0.0", "1.1.0", "1.2.0"]):
        c.registry.publish(make_package(tmp_path / "b", version=v, key=key, seed=i), [], {}, None, None)
        entries[v] = c.registry.get("part-inspection", v)
    yield c, entries
    c.close()
    store.close()


def test_the_runs_each_run_named_before_it_are_kept_for_every_replica_to_read_through(either_control):
    """A clone hold's kept step is taken under a later run of the gateway that made it: the runs each run's state
    report named before it are kept with the run (every replica's), read through to the runs before them; the other
    clone's runs never lead to the gateway's, nor another tenant's agent of the same name."""
    c, _e = either_control
    assert c.note_run("gw1", "runX", 1) and c.note_run("gw1", "runY", 1)  # two clones
    c.note_run("gw1", "runX1", 1, before=("runX",))
    c.note_run("gw1", "runX2", 1, before=("runX1", "runX"))
    c.note_run("gw1", "runY1", 1, before=("runY",))
    c.note_run("gw1", "runX3", 1)  # first known by a deployment step (names none) ...
    c.note_run("gw1", "runX3", 2, before=("runX2", "runX1", "runX"))  # ... its state report's names kept then
    assert c.earlier_runs("gw1", ["runX3"]) == {"runX3", "runX2", "runX1", "runX"}
    assert c.earlier_runs("gw1", ["runY1"]) == {"runY1", "runY"}
    assert c.earlier_runs("gw1", ["runX3"], tenant="acme") == {"runX3"}


def test_a_runs_names_are_kept_when_another_replica_took_its_step_between_the_read_and_the_write(
    either_control, tmp_path, monkeypatch
):
    """A new run's first deployment step (names none) reached replica B while replica A's ``note_run`` of the run's
    first state report was between its read (run unknown) and its write: A found the run known and dropped the names
    its report gave, and, the run then known, never noted it again. The chain through the runs each run named
    stopped there (a later run's kept step never taken). gw1's step numbered below the report, gw2's above."""
    c, e = either_control
    other = _another_replica(c, tmp_path)
    try:
        for agent in ("gw1", "gw2"):
            assert _reported(c, agent, e["1.0.0"], "P", 1)
        dep = c.create(_rollout("1.1.0", ["gw1", "gw2"], ["100%"]))
        write = c._write
        for agent, step_seq in (("gw1", 2), ("gw2", 4)):

            @contextlib.contextmanager
            def after_the_step(agent=agent, step_seq=step_seq):
                monkeypatch.setattr(c, "_write", write)
                other.on_report(
                    agent, dep["id"], "vision", "1.1.0", "downloading", True, "", {}, report=("R", step_seq)
                )
                with write():
                    yield

            monkeypatch.setattr(c, "_write", after_the_step)
            written = c.note_run(agent, "R", 3, before=("P",))
            assert written is (step_seq < 3), agent  # numbered above the step: written
            assert c.earlier_runs(agent, ["R"]) == {"R", "P"}, agent  # was: {"R"}
    finally:
        other.close()


def test_an_admins_rollback_not_yet_reached_is_what_a_later_rollouts_halt_sends_back(either_control):
    """gw1 ran 1.1.0 (a rollout completed); the admin rolled it back to 1.0.0 (`cloud-trainer rollback`) while it
    was offline, so the rollback had not reached it; a rollout of 1.2.0 created then took gw1's last state report
    (1.1.0) for its previous version, and its halt (gw2's health check) sent gw1 1.1.0: the admin's choice undone
    by an automatic step. The rollback under way is the fleet's newest word on gw1: the halt sends 1.0.0. Likewise
    a rollout that never reached gw1 leaves the rollback its desired state, and the next one starts from it."""
    c, e = either_control
    _rolled_out_to_two(c, e)
    r = c.rollback("part-inspection", "1.0.0", "vision", ["gw1"])  # gw1 offline: never heard of it
    assert c.get(r["id"])["targets"]["gw1"]["status"] == "assigned"
    _runs(c, "gw1", e["1.1.0"])  # back, its first state report made before it installs the rollback
    b = c.create(_rollout("1.2.0", ["gw1", "gw2"], ["100%"]))
    assert c.get(b["id"])["previous"]["gw1"]["version"] == "1.0.0"  # was 1.1.0, the report's
    assert c.get(b["id"])["previous"]["gw2"]["version"] == "1.1.0"
    c.on_report("gw2", b["id"], "vision", "1.2.0", "rolled_back", False, "health check failed: NaN", {})
    assert c.get(b["id"])["state"] == "halted"
    sent = [(s["version"], s["deployment_id"]) for s in c.desired_state("gw1")[1]]
    assert sent == [("1.0.0", b["id"] + ":rollback")], sent  # was: 1.1.0, the admin's rollback undone

    # a rollout halted before its step reached gw3: the admin's rollback stays gw3's desired state, the next start
    _runs(c, "gw3", e["1.1.0"])
    r2 = c.rollback("part-inspection", "1.0.0", "vision", ["gw3"])
    d = c.create(_rollout("1.2.0", ["gw2", "gw3"], ["1", "100%"]))
    assert c.get(r2["id"])["targets"]["gw3"]["status"] == "superseded"
    c.on_report("gw2", d["id"], "vision", "1.2.0", "rolled_back", False, "health check failed: NaN", {})
    assert c.get(d["id"])["state"] == "halted"
    sent = [(s["version"], s["deployment_id"]) for s in c.desired_state("gw3")[1]]
    assert sent == [("1.0.0", r2["id"] + ":rollback")], sent
    f = c.create(_rollout("1.2.0", ["gw3"], ["100%"]))
    assert c.get(f["id"])["previous"]["gw3"]["version"] == "1.0.0"  # was 1.1.0


def _rollout(version: str, agents: list[str], steps: list[str]) -> dict:
    return {
        "package": "part-inspection",
        "version": version,
        "slot": "vision",
        "agents": agents,
        "steps": steps,
    }


@pytest.mark.parametrize("either_control", ["sqlite"], indirect=True)
def test_an_admins_rollback_taken_over_is_not_passed_by_an_older_rollback_of_its_version(either_control):
    """gw3's health check rolled 1.1.0 back (a rollout halted); the admin then rolled gw3 to 1.1.0 on purpose while
    it was offline, and a rollout of 1.2.0 took gw3 over but halted before reaching it (gw3's desired state still
    the admin's 1.1.0). The next rollout of 1.2.0 followed the old verdict past the admin's choice: its previous
    for gw3 was 1.0.0, and its halt sent gw3 1.0.0, a version nobody asked for."""
    c, e = either_control
    for agent in ("gw2", "gw3"):
        _runs(c, agent, e["1.0.0"])
    r0 = c.create(_rollout("1.1.0", ["gw3"], ["100%"]))
    c.on_report("gw3", r0["id"], "vision", "1.1.0", "rolled_back", False, "health check failed: NaN", {})
    _runs(c, "gw3", e["1.0.0"])
    c.rollback("part-inspection", "1.1.0", "vision", ["gw3"])  # gw3 offline: never heard of it
    d = c.create(_rollout("1.2.0", ["gw2", "gw3"], ["1", "100%"]))
    c.on_report("gw2", d["id"], "vision", "1.2.0", "rolled_back", False, "health check failed: NaN", {})
    assert c.get(d["id"])["state"] == "halted"
    f = c.create(_rollout("1.2.0", ["gw3"], ["100%"]))
    assert c.get(f["id"])["previous"]["gw3"]["version"] == "1.1.0"  # was 1.0.0
    c.on_report("gw3", f["id"], "vision", "1.2.0", "failed", False, "verify: bad signature", {})
    assert [s["version"] for s in c.desired_state("gw3")[1]] == ["1.1.0"]  # was 1.0.0


def _another_replica(c, tmp_path) -> Control:
    """A second Control on ``c``'s database (``either_control``): another replica."""
    return Control(
        getattr(c.db, "url", tmp_path / "control.db"), c.registry, c.store, config_validator=lambda b, n: None
    )


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_kept_steps_are_every_replicas_held_to_the_holds_end_taken_once_and_dropped_old(
    store, request, tmp_path
):
    """A step kept untold during a clone hold is kept in the control state: another replica reads it, holds it until
    the hold's end by the wall clock (its runs named meanwhile), takes it once after, and the tick drops one kept
    longer than KEEP_KEPT_S; at most ``most`` deployments' of an agent are kept, the oldest dropped."""
    from cloud_trainer.fleet.control import KEEP_KEPT_S

    url = request.getfixturevalue("postgres_url") if store == "postgresql" else None
    c = Control(url or tmp_path / "control.db", Registry(tmp_path / "registry"), None)
    other = _another_replica(c, tmp_path)
    step = {"slot": "vision", "version": "1.1.0", "step": "healthy", "ok": True, "reason": "", "health": {}}
    was = {"report": None, "last_report": None}
    try:
        for dep in ("d1", "d2", "d3"):
            c.keep_step("gw1", dep, step, was, "runX", hold_s=60, most=2)
        assert list(other.kept_steps("gw1")) == ["d2", "d3"]
        assert other.take_kept("gw1", "runX2", {"runX"}) == ({}, True)  # the hold still on
        assert other.kept_steps("gw1")["d2"][2] == ["runX", "runX2"]
        other.clock = lambda: time.time() + 120
        assert other.take_kept("gw1", "runY", {"runY"}) == ({}, True)  # (the other clone's)
        calls: list[str] = []

        def record(agent, dep_id, *args, **kwargs):  # (``retake_kept``: its first call's write fails)
            calls.append(dep_id)
            other.db.execute("UPDATE kept_steps SET runs = '[]' WHERE deployment_id = ?", (dep_id,))
            if len(calls) == 1:
                raise ConnectionError("the control database restarting")
            return True

        other.retake_kept = record
        failed: list[Exception] = []
        taken, left = other.take_kept("gw1", "runX3", {"runX2"}, record=("runX3", 1), failed=failed)
        # recorded in the same write: the step whose record failed stays kept, as it was (was: lost)
        assert list(taken) == calls[1:] and left and len(failed) == 1
        assert other.kept_steps("gw1")[calls[0]][2] == ["runX", "runX2"]
        del other.retake_kept
        taken, left = other.take_kept("gw1", "runX3", {"runX2"})
        assert taken == {calls[0]: (step, was)} and not left
        assert c.take_kept("gw1", "runX3", {"runX2"}, tenant="default") == ({}, False)
        c.keep_step("gw1", "d4", step, was, "runX", tenant="acme", hold_s=60, most=2)
        assert c.kept_agents == {("acme", "gw1")}
        c.clock = lambda: time.time() + KEEP_KEPT_S + 1
        c.tick()
        assert not c.kept_steps("gw1", tenant="acme") and not c.kept_agents
    finally:
        other.close()
        c.close()


def test_a_run_made_one_of_a_kept_steps_runs_in_anothers_hold_takes_it_after_the_hold(tmp_path):
    """A replica not holding the agent itself, whose report of run R reached a kept step's run only through the runs
    each run named (read once a run), makes R one of the step's runs while the hold kept with the step lasts. R's
    reports after the hold name none of the step's runs directly, and that read is not made again for R: the step
    was left to the gateway's next run, which only a link lost draws (its rollout stalled until STEP_TIMEOUT_S)."""
    c = Control(tmp_path / "control.db", Registry(tmp_path / "registry"), None)
    step = {"slot": "vision", "version": "1.1.0", "step": "healthy", "ok": True, "reason": "", "health": {}}
    was = {"report": None, "last_report": None}
    try:
        c.keep_step("gw1", "d1", step, was, "runX", hold_s=60, most=2)
        assert c.take_kept("gw1", "runR", {"runX"}) == ({}, True)  # (R's runs before led to runX)
        assert c.take_kept("gw1", "runR", {"runQ"}) == ({}, True)  # the hold still on
        c.clock = lambda: time.time() + 120  # the hold over
        assert c.take_kept("gw1", "runY", {"runY"}) == ({}, True)  # (the other clone's)
        assert c.take_kept("gw1", "runX", set()) == ({}, True)  # (the step's own run: as before)
        assert c.take_kept("gw1", "runR", {"runQ"}) == ({"d1": (step, was)}, False)  # was: ({}, True), left
    finally:
        c.close()


@pytest.mark.parametrize("either_control", ["sqlite"], indirect=True)
def test_a_kept_step_is_recorded_whatever_the_rollout_tick_does_and_the_tick_waits_for_the_service(
    either_control, monkeypatch
):
    """A step kept late during a clone hold is recorded under the agent's new run in the write that takes it off the
    kept ones. That record ran the rollout tick inside the same write and the step's savepoint: a tick that raised
    (another tenant's rollout) rolled the record back, the step tried again at every report until KEEP_KEPT_S, and a
    tick's marks in memory (the halts it looked at) outlived a write that then failed. The service's own tick
    advances the rollout."""
    c, e = either_control
    _runs(c, "gw1", e["1.0.0"])
    dep = c.create(_rollout("1.1.0", ["gw1"], ["100%"]))
    assert c.on_report("gw1", dep["id"], "vision", "1.1.0", "downloading", True, "", {}, report=("runX", 5))
    kept = c.on_report("gw1", dep["id"], "vision", "1.1.0", "healthy", True, "", {}, report=("runX", 3))
    assert kept == KEPT_LATE
    t = c.get(dep["id"])["targets"]["gw1"]
    step = {"slot": "vision", "version": "1.1.0", "step": "healthy", "ok": True, "reason": "", "health": {}}
    c.keep_step(
        "gw1",
        dep["id"],
        step,
        {"report": t["report"], "last_report": t["last_report"]},
        "runX",
        hold_s=0,
        most=2,
    )

    def tick():
        raise RuntimeError("a rollout this code cannot advance")

    monkeypatch.setattr(c, "tick", tick)
    failed: list[Exception] = []
    taken, left = c.take_kept("gw1", "runX2", {"runX"}, record=("runX2", 1), failed=failed)
    assert list(taken) == [dep["id"]] and not left and not failed, failed  # was: {}, the record rolled back
    assert c.get(dep["id"])["targets"]["gw1"]["status"] == "healthy"
    monkeypatch.undo()
    c.tick()
    assert c.get(dep["id"])["state"] == "completed"


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_kept_steps_record_whose_transaction_is_gone_fails_the_take_with_its_own_error(
    store, request, tmp_path
):
    """A kept step's record failing where its transaction is gone (SQLite rolling the write back itself on a full
    disk, a PostgreSQL connection broken) failed the take with the savepoint's error ("no such savepoint", "ROLLBACK
    TO SAVEPOINT can only be used in transaction blocks"): the log's line and its error id named the savepoint, not
    the cause. The cause is raised, and the step stays kept."""
    url = request.getfixturevalue("postgres_url") if store == "postgresql" else None
    c = Control(url or tmp_path / "control.db", Registry(tmp_path / "registry"), None)
    step = {"slot": "vision", "version": "1.1.0", "step": "healthy", "ok": True, "reason": "", "health": {}}
    try:
        c.keep_step("gw1", "d1", step, {"report": None, "last_report": None}, "runX", hold_s=0, most=2)

        def record(*args, **kwargs):  # (``retake_kept``)
            if url:
                c.db.conn.close()  # the connection broken under the write
            else:
                c.db.execute("ROLLBACK")  # as SQLite does itself at an I/O error or a full disk
            raise OSError("the disk is full")

        c.retake_kept = record
        with pytest.raises(OSError, match="the disk is full"):  # was: the savepoint's error
            c.take_kept("gw1", "runX2", {"runX"}, record=("runX2", 1), failed=[])
        assert list(c.kept_steps("gw1")) == ["d1"]
    finally:
        c.close()


def _reported(c, agent: str, entry: dict, boot: str, seq: int) -> bool:
    """``agent``'s state report of ``entry``, numbered ``seq`` of run ``boot``, as the service takes one of a run it
    has not taken a report of (``Control.note_run``, then the store's write); whether it was written."""
    if not c.note_run(agent, boot, seq):
        return False
    slots = [
        {"slot": "vision", "package": entry["name"], "version": entry["version"], "digest": entry["digest"]}
    ]
    c.store.heartbeat(agent, {"site": "plant"}, slots, {}, 0, {"report": {"boot": boot, "seq": seq}})
    return True


def test_replicas_with_clocks_minutes_apart_order_an_agents_steps_by_its_runs_and_numbers(
    either_control, tmp_path
):
    """Two replicas on one control database, one's clock 2 minutes behind the other's. gw1's ``active`` (numbered 11),
    held on the way, reached the replica behind after its ``healthy`` (12) reached the other: a step numbered below
    the target's was dropped only within 60 s of the replicas' times, so it was taken and the completed target went
    back to under way. gw1's VM is then restored from a snapshot (a new run, its count back at 3): its reports are
    taken at once and outrank the verdict of the run before; a late step of that run, once the new run's
    step was recorded on the target, is dropped on either replica."""
    c, e = either_control
    other = _another_replica(c, tmp_path)
    try:
        behind = other
        behind.clock = lambda: time.time() - 120.0
        assert _reported(c, "gw1", e["1.0.0"], "run1", 1)
        assert c.note_run("gw2", "a\x00b", 2) and not behind.note_run(
            "gw2", "a\x00b", 1
        )  # (PostgreSQL: refused)
        a = c.create(_rollout("1.1.0", ["gw1"], ["100%"]))
        c.on_report("gw1", a["id"], "vision", "1.1.0", "healthy", True, "", {}, report=("run1", 12))
        assert c.get(a["id"])["state"] == "completed"
        behind.on_report("gw1", a["id"], "vision", "1.1.0", "active", True, "", {}, report=("run1", 11))
        t = c.get(a["id"])["targets"]["gw1"]
        assert t["status"] == "healthy" and t["last_report"]["step"] == "active", t  # was: active
        assert not _reported(behind, "gw1", e["1.0.0"], "run1", 10)  # made before the verdict: dropped
        b = behind.create(_rollout("1.2.0", ["gw1"], ["100%"]))
        assert behind.get(b["id"])["previous"]["gw1"]["version"] == "1.1.0"

        assert _reported(behind, "gw1", e["1.0.0"], "run2", 3)  # restored: a new run, its numbers back
        d = c.create(_rollout("1.2.0", ["gw1"], ["100%"]))
        assert (
            c.get(d["id"])["previous"]["gw1"]["version"] == "1.0.0"
        )  # the new run's report, not the verdict
        behind.on_report("gw1", d["id"], "vision", "1.2.0", "downloading", True, "", {}, report=("run2", 4))
        for replica, seq in ((c, 13), (behind, 14)):  # the run before's, made before the restore
            replica.on_report(
                "gw1", d["id"], "vision", "1.2.0", "healthy", True, "", {}, report=("run1", seq)
            )
            assert c.get(d["id"])["targets"]["gw1"]["status"] == "downloading"
        assert not _reported(c, "gw1", e["1.1.0"], "run1", 15)
        behind.on_report("gw1", d["id"], "vision", "1.2.0", "healthy", True, "", {}, report=("run2", 5))
        assert c.get(d["id"])["state"] == "completed"
    finally:
        other.close()


def test_a_step_whose_agents_were_all_taken_back_halts_instead_of_giving_the_version_to_the_next(
    registry_control,
):
    """An admin rolled the canary back (a rollback takes it over from the rollout): the canary step had no agent
    of its own left, "all healthy" over none was true, and the next step gave 1.1.0 to gw2 and gw3 at once, with
    no agent having proved it. The rollout halts, naming why; the later steps' agents keep what they run."""
    c, e = registry_control
    for agent in AGENTS:
        _runs(c, agent, e["1.0.0"])
    dep = c.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": list(AGENTS)}
        | {"strategy": "canary", "steps": ["1", "100%"], "wait_s": 0}
    )
    canary = next(a for a, t in c.get(dep["id"])["targets"].items() if t["status"] == "assigned")
    back = c.rollback("part-inspection", "1.0.0", "vision", [canary])
    c.tick()
    d = c.get(dep["id"])
    assert d["state"] == "halted", d["reason"]
    assert "step 1/2 has no agent left to prove part-inspection-1.1.0" in d["reason"]
    assert canary in d["reason"] and back["id"] in d["reason"]
    later = [a for a in AGENTS if a != canary]
    assert {d["targets"][a]["status"] for a in later} == {"waiting"}
    for agent in later:
        assert c.desired_state(agent)[1] == [], agent  # were given 1.1.0
    assert [s["version"] for s in c.desired_state(canary)[1]] == ["1.0.0"]  # the admin's rollback stands


def test_a_halted_rollouts_agent_that_an_admins_rollback_took_back_is_not_left_rolling_back(registry_control):
    """After a halt, the admin rolled the slot back: the agent went back under the rollback's deployment id and
    reported there, never to the halted rollout, whose target said ``rolling_back ... not yet confirmed running``
    for good. The rollback's report that the agent runs 1.0.0 closes it; an agent the rollback has not reached
    yet still says ``rolling_back``."""
    c, e = registry_control
    for agent in AGENTS:
        _runs(c, agent, e["1.0.0"])
    dep = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "steps": ["100%"]})
    for agent in ("gw1", "gw3"):
        c.on_report(agent, dep["id"], "vision", "1.1.0", "healthy", True, "", {})
        _runs(c, agent, e["1.1.0"])
    c.on_report("gw2", dep["id"], "vision", "1.1.0", "rolled_back", False, "health check failed: NaN", {})
    assert {a: t["status"] for a, t in c.get(dep["id"])["targets"].items()} == {
        "gw1": "rolling_back",
        "gw2": "rolled_back",
        "gw3": "rolling_back",
    }
    back = c.rollback("part-inspection", "1.0.0", "vision", ["gw1", "gw3"])
    c.on_report("gw1", back["id"], "vision", "1.0.0", "healthy", True, "", {})
    t = c.get(dep["id"])["targets"]
    assert t["gw1"]["status"] == "rolled_back_by_fleet", t["gw1"]
    assert back["id"] in t["gw1"]["reason"] and "1.0.0" in t["gw1"]["reason"]
    assert t["gw3"]["status"] == "rolling_back"  # not yet back
    assert t["gw2"]["status"] == "rolled_back"  # its own verdict stays


def test_a_halted_rollouts_agent_a_newer_rollout_took_over_is_closed_on_either_store_and_after_an_upgrade(
    either_control,
):
    """After a halt, a rollout of 1.2.0 took gw1 over before it went back; once it runs there, the halted rollout's
    target is ``rolled_back_by_fleet`` (it said ``rolling_back`` for good). The agents each halted rollout waits for
    are kept beside it (``going_back``): a control state written before that table has it filled at open."""
    c, e = either_control
    for agent in AGENTS:
        _runs(c, agent, e["1.0.0"])
    dep = c.create(_rollout("1.1.0", list(AGENTS), ["100%"]))
    for agent in ("gw1", "gw3"):
        c.on_report(agent, dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    c.on_report("gw2", dep["id"], "vision", "1.1.0", "rolled_back", False, "health check failed: NaN", {})
    assert c.get(dep["id"])["targets"]["gw1"]["status"] == "rolling_back"
    # as written before the table: its rows and its mark gone; the next open fills it from the documents
    c.db.execute("DELETE FROM going_back")
    c.db.execute("DELETE FROM counters WHERE key = 'going_back'")
    c._fill_going_back()
    newer = c.create(_rollout("1.2.0", ["gw1"], ["100%"]))
    c.on_report("gw1", newer["id"], "vision", "1.2.0", "healthy", True, "", {})
    t = c.get(dep["id"])["targets"]
    assert t["gw1"]["status"] == "rolled_back_by_fleet", t["gw1"]
    assert f"taken over by deployment {newer['id']}" in t["gw1"]["reason"], t["gw1"]["reason"]
    assert t["gw3"]["status"] == "rolling_back"
    rows = c.db.execute("SELECT agent, deployment_id FROM going_back").fetchall()
    assert [tuple(r) for r in rows] == [("gw3", dep["id"])]
    again = c.create(_rollout("1.1.0", ["gw3"], ["100%"]))  # the halted version given to gw3 again
    c.on_report("gw3", again["id"], "vision", "1.1.0", "active", True, "", {})
    t = c.get(dep["id"])["targets"]["gw3"]
    assert t["status"] == "superseded" and "it runs 1.1.0 again" in t["reason"], t  # was: rolling_back
    assert c.db.execute("SELECT COUNT(*) FROM going_back").fetchone()[0] == 0


def _halted_by_an_older_replica(c, e) -> dict:
    """A rollout of 1.1.0 to every agent, gw1 healthy, halted by gw2's health check, as a replica of a release before
    ``going_back`` halts it: no rows (gw1 ``rolling_back``). The control state looked at halts before (as at open)."""
    c.tick()  # (the first look, as at open)
    for agent in AGENTS:
        _runs(c, agent, e["1.0.0"])
    dep = c.create(_rollout("1.1.0", list(AGENTS), ["100%"]))
    c.on_report("gw1", dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    c.on_report("gw2", dep["id"], "vision", "1.1.0", "rolled_back", False, "health check failed: NaN", {})
    c.db.execute("DELETE FROM going_back")  # the halt as the older replica made it: no rows
    return dep


def test_a_halt_an_older_replica_made_on_the_shared_database_gets_its_going_back_rows_at_a_tick(
    either_control,
):
    """A replica of a release before ``going_back`` halting a rollout on the shared database writes no rows; they
    were filled at each open only, so its targets said ``rolling_back`` until this replica restarted, even once a
    newer rollout ran on the agent. A tick looks at the rollouts halted since its last look."""
    c, e = either_control
    dep = _halted_by_an_older_replica(c, e)
    c._going_back_filled = float("-inf")  # (the next look due: GOING_BACK_FILL_S later)
    c.tick()
    newer = c.create(_rollout("1.2.0", ["gw1"], ["100%"]))
    c.on_report("gw1", newer["id"], "vision", "1.2.0", "healthy", True, "", {})
    t = c.get(dep["id"])["targets"]["gw1"]
    assert t["status"] == "rolled_back_by_fleet", t  # was: rolling_back (until a restart)


@pytest.mark.parametrize("either_control", ["sqlite"], indirect=True)
def test_a_halt_whose_going_back_rows_a_tick_failed_to_write_gets_them_at_the_next_look(either_control):
    """The tick's look marked the halts it found seen before writing their rows: the database failing in that write
    (a connection lost) left an older replica's halt seen and never filled, its targets ``rolling_back`` until a
    restart. Seen once written: the next look fills them."""
    c, e = either_control
    _halted_by_an_older_replica(c, e)
    real = c.db

    class Lost:  # the database lost for the look's write
        def __getattr__(self, name):
            return getattr(real, name)

        def executemany(self, sql, rows):
            raise sqlite3.OperationalError("disk I/O error")

    c.db = Lost()  # type: ignore[assignment]
    c._going_back_filled = float("-inf")
    with pytest.raises(sqlite3.OperationalError):
        c.tick()
    c.db = real
    c._going_back_filled = float("-inf")  # (the next look, GOING_BACK_FILL_S later)
    c.tick()
    assert c.db.execute("SELECT agent FROM going_back").fetchall() == [("gw1",)]  # was: []


def test_a_deployments_write_never_replaces_another_tenants_row_of_the_same_id(either_control):
    """The deployments' id is their key across tenants: a write of a document naming another tenant than the row of
    its id (an id drawn twice, any path writing) replaced that tenant's deployment, whose agents were then given the
    writer's version. The store refuses it: the row and its agents' desired state stay the other tenant's. A row
    without a tenant (a replica released before the column wrote it) is its document's tenant's, and only its.
    With the same control state (one database each): which of an agent's runs began last (``newest_run``)."""
    c, e = either_control
    d = c.create(_rollout("1.1.0", ["gw1"], ["100%"]))
    before = c.get(d["id"])
    other = {**before, "tenant": "beta", "version": "1.2.0"}
    with pytest.raises(RuntimeError, match="another tenant's deployment"), c._write():
        c._put(other)  # was: written over the row (tenant column still default's, document beta's)
    assert c.get(d["id"]) == before
    assert [s["version"] for s in c.desired_state("gw1")[1]] == ["1.1.0"]
    c._put({**before, "state": "paused"})  # its own tenant's write still goes through
    assert c.get(d["id"])["state"] == "paused"
    # an older replica's row: no tenant column, its document naming none (the default tenant's) or beta
    untold = {k: v for k, v in before.items() if k != "tenant"}
    for dep_id, doc in (("0ldrep1ca0", untold), ("0ldrep1ca1", {**before, "tenant": "beta"})):
        with c._write():
            c.db.execute(
                "INSERT INTO deployments (id, created, doc) VALUES (?, ?, ?)",
                (dep_id, before["created"], json.dumps({**doc, "id": dep_id})),
            )
    with c._write():
        c._put({**before, "id": "0ldrep1ca0", "state": "paused"})  # was: RuntimeError "another tenant's"
    row = c.db.execute("SELECT tenant, state FROM deployments WHERE id = '0ldrep1ca0'").fetchone()
    assert tuple(row) == ("default", "paused")
    with pytest.raises(RuntimeError, match="another tenant's deployment"), c._write():
        c._put({**before, "id": "0ldrep1ca1"})  # beta's, by its document: never the default tenant's
    assert c.db.execute("SELECT tenant FROM deployments WHERE id = '0ldrep1ca1'").fetchone()[0] is None
    # an old replica's row given a tenant by another writer between the read of it and the write: the write matched
    # no row and was taken for done (the caller's deployment unwritten, untold); now judged again: beta's
    real = c.db

    class Meanwhile:  # (the control's connection; the other writer's change made on it, within the transaction)
        def __getattr__(self, name):
            return getattr(real, name)

        def execute(self, sql, args=()):
            got = real.execute(sql, args)
            if sql.startswith("SELECT tenant, doc FROM deployments"):
                rows = got.fetchall()
                real.execute("UPDATE deployments SET tenant = 'beta' WHERE id = ?", args)
                return _Rows(rows)
            return got

    with c._write():
        c.db.execute(
            "INSERT INTO deployments (id, created, doc) VALUES (?, ?, ?)",
            ("0ldrep1ca2", before["created"], json.dumps({**untold, "id": "0ldrep1ca2"})),
        )
    c.db = Meanwhile()
    try:
        with pytest.raises(RuntimeError, match="another tenant's deployment"), c._write():  # was: returned
            c._put({**before, "id": "0ldrep1ca2", "state": "paused"})
    finally:
        c.db = real
    kept = c.db.execute("SELECT doc FROM deployments WHERE id = '0ldrep1ca2'").fetchone()[0]
    assert json.loads(kept).get("state") != "paused"
    # such rows whose document cannot be read stopped the control state from opening (its columns filled at open)
    with c._write():
        for dep_id, doc in (("0ldrep1ca3", "{not json"), ("0ldrep1ca4", '{"tenant": ["beta"]}')):
            c.db.execute("INSERT INTO deployments (id, created, doc) VALUES (?, ?, ?)", (dep_id, 0, doc))
    c._fill_columns()  # was: JSONDecodeError, then a list bound as the tenant
    rows = c.db.execute(
        "SELECT tenant, state FROM deployments WHERE id LIKE '0ldrep1ca_' ORDER BY id"
    ).fetchall()
    assert [tuple(r) for r in rows[-2:]] == [(None, None), (None, None)]
    # newest_run (what a replica asks when the agent's row holds another run than the one it knows): only read
    assert c.note_run("gw1", "runA", 1) and c.note_run("gw1", "runB", 1)
    assert (c.newest_run("gw1", "runA"), c.newest_run("gw1", "runB")) == (False, True)
    assert c.newest_run("gw1", "never-seen") and c.newest_run("gw1", "runA", tenant="beta")
    assert sorted(r[0] for r in c._runs_of("default", "gw1")) == ["runA", "runB"]  # nothing written


class _Rows:
    """Rows already fetched, read as a cursor's (``fetchone``, ``fetchall``)."""

    def __init__(self, rows: list) -> None:
        self.rows = rows

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list:
        return self.rows
