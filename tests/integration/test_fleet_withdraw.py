"""Withdrawing a published version (``cloud-trainer withdraw``): a signed package stays valid for ever, so the
registry is where a version with a known defect is stopped. The fleet no longer rolls back to it (a halted
rollout's way back sent it to every agent of the step: there was no way to withdraw one, and the halt never
looked at a version's status), no longer lets an agent download it (a desired state that still names it: an
agent offline through the withdrawal), and an admin's rollback or deployment of it is refused with the reason.
Real control state (SQLite), a registry of real signed packages, the fleet servicer's download lookup."""

from __future__ import annotations

import pytest

from cloud_trainer.fleet.service import FleetServicer
from cloud_trainer.pki import Identity
from cloud_trainer.registry import main_withdraw
from tests.integration.test_fleet_rollout_control import _runs, control, registry_control  # noqa: F401

DEFECT = "misses dents under 2 mm (ticket 4411)"


def test_a_halt_never_sends_back_a_withdrawn_version(registry_control, capsys):  # noqa: F811
    c, e = registry_control
    for agent in ("gw1", "gw2", "gw3"):
        _runs(c, agent, e["1.0.0"])
    dep = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "steps": ["100%"]})
    c.on_report("gw1", dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    _runs(c, "gw1", e["1.1.0"])
    assert (
        main_withdraw(["--registry", str(c.registry.root), "part-inspection", "1.0.0", "--reason", DEFECT])
        == 0
    )
    assert "withdrew part-inspection 1.0.0" in capsys.readouterr().out
    c.on_report("gw2", dep["id"], "vision", "1.1.0", "rolled_back", False, "health check failed", {})
    d = c.get(dep["id"])
    assert d["state"] == "halted"
    for agent in ("gw1", "gw3"):  # 1.0.0 was what they would have been sent back to
        assert [s["version"] for s in c.desired_state(agent)[1]] == [], agent
    assert "withdrawn" in d["targets"]["gw1"]["reason"] and DEFECT in d["targets"]["gw1"]["reason"]
    with pytest.raises(ValueError, match=r"1\.0\.0 is withdrawn \(misses dents"):
        c.rollback("part-inspection", "1.0.0", "vision", ["gw1"])


def test_an_agent_cannot_download_a_withdrawn_version_its_desired_state_still_names(registry_control):  # noqa: F811
    c, e = registry_control
    for agent in ("gw1", "gw2", "gw3"):
        _runs(c, agent, e["1.0.0"])
    c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "steps": ["100%"]})
    svc = FleetServicer(c.store, None, c.registry, c)
    try:
        gw3 = Identity(
            "gw3", "agent", "default"
        )  # offline: its desired state names 1.1.0 through the withdrawal
        assert svc._package_file(gw3, e["1.1.0"]["digest"]) is not None
        c.registry.withdraw("part-inspection", "1.1.0", DEFECT)
        assert svc._package_file(gw3, e["1.1.0"]["digest"]) is None  # PERMISSION_DENIED, as an unknown digest
    finally:
        svc._readers.shutdown()
    assert (
        main_withdraw(["--registry", str(c.registry.root), "part-inspection", "9.9.9", "--reason", "x"]) == 2
    )


def test_a_rollout_of_a_version_withdrawn_meanwhile_gives_it_to_no_more_agents_and_halts_naming_it(
    registry_control,  # noqa: F811
):
    """The canary was given 1.1.0; then 1.1.0 is withdrawn. The canary, on its way to it, is left to meet the
    refused download (it reports the withdrawal itself: test_fleet_withdraw_downloading.py); once it reports the
    version healthy (installed before the withdrawal), the rollout halts at once, naming the withdrawal, not after
    the canary's hour of wait (it said running, with no word of the withdrawal, the canary on the withdrawn version
    all along); the canary keeps what it runs (a withdrawal is not a rollback, as after completion). Before, the next
    step's agents were given it (each download refused in turn) and the halt named an agent's failure, not the
    withdrawal."""
    c, e = registry_control
    for agent in ("gw1", "gw2", "gw3"):
        _runs(c, agent, e["1.0.0"])
    dep = c.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "steps": ["1", "100%"],
            "wait_s": 3600,
        }
    )
    canary = next(a for a, t in c.get(dep["id"])["targets"].items() if t["status"] == "assigned")
    c.registry.withdraw("part-inspection", "1.1.0", DEFECT)
    c.tick()
    assert c.get(dep["id"])["state"] == "running"  # the canary on its way is not taken off it here
    _runs(c, canary, e["1.1.0"])
    c.on_report(canary, dep["id"], "vision", "1.1.0", "healthy", True, "", {})  # its hour of wait begins
    d = c.get(dep["id"])
    assert d["state"] == "halted", d
    assert d["reason"] == (
        f"part-inspection 1.1.0 was withdrawn from the registry ({DEFECT}): the fleet gives it to no more agents; "
        "the 1 agent(s) that run it keep it (a withdrawal is not a rollback: `cloud-trainer rollback` takes it off "
        "them)"
    ), d["reason"]
    assert [s["version"] for s in c.desired_state(canary)[1]] == ["1.1.0"]  # kept
    assert d["targets"][canary]["status"] == "healthy", d["targets"][canary]
    for agent in {"gw1", "gw2", "gw3"} - {canary}:  # never given it
        assert d["targets"][agent]["status"] == "waiting", d["targets"][agent]
        assert c.desired_state(agent)[1] == [], agent


def test_a_withdrawal_in_the_last_steps_wait_sends_nobody_back(registry_control):  # noqa: F811
    """1.1.0 withdrawn while every agent runs it healthy in the last step's wait: the rollout completes as it would
    a moment later, nobody sent back (a halt there sent the whole fleet back for a registry command, where a
    withdrawal just after completion sends nobody back); no more agents exist to give it to. A gateway that joins the
    group in that wait is left on what it runs, as one joining after completion is: it halted the rollout too."""
    c, e = registry_control
    now = [1_000_000.0]
    c.clock = c.monotonic = lambda: now[0]
    agents = ("gw1", "gw2", "gw3")
    for agent in agents:
        _runs(c, agent, e["1.0.0"])
    dep = c.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "steps": ["1", "100%"],
            "wait_s": 600,
            "selector": {"site": "plant"},
        }
    )
    canary = next(a for a, t in c.get(dep["id"])["targets"].items() if t["status"] == "assigned")
    _runs(c, canary, e["1.1.0"])
    c.on_report(canary, dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    now[0] += 700
    c.tick()
    assert c.get(dep["id"])["step"] == 1
    for agent in set(agents) - {canary}:
        _runs(c, agent, e["1.1.0"])
        c.on_report(agent, dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    c.registry.withdraw("part-inspection", "1.1.0", DEFECT)
    c.tick()
    d = c.get(dep["id"])
    assert d["state"] == "running", d  # its wait goes on
    _runs(c, "gw4", e["1.0.0"])  # joins the group in the wait
    now[0] += 60
    c.tick()
    assert c.get(dep["id"])["state"] == "running"
    now[0] += 700
    c.tick()
    d = c.get(dep["id"])
    assert d["state"] == "completed", d
    for agent in agents:
        assert [s["version"] for s in c.desired_state(agent)[1]] == ["1.1.0"], agent
    assert c.desired_state("gw4")[1] == []  # not given the withdrawn version


def test_a_step_stalled_on_a_withdrawn_version_halts_naming_the_withdrawal(registry_control):  # noqa: F811
    """One canary healthy on 1.1.0, the other offline (never reports); 1.1.0 is withdrawn. The step stalled for
    good (the offline canary cannot install it any more, so no report of it would ever halt the rollout), its
    reason silent about the withdrawal. At its step timeout it halts naming the withdrawal; the offline canary,
    never on it, is given its previous version back, and the healthy one keeps what it runs."""
    c, e = registry_control
    c.step_timeout_s = 10
    for agent in ("gw1", "gw2", "gw3"):
        _runs(c, agent, e["1.0.0"])
    dep = c.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "steps": ["2", "100%"]}
    )
    canaries = sorted(a for a, t in c.get(dep["id"])["targets"].items() if t["status"] == "assigned")
    healthy, offline = canaries
    _runs(c, healthy, e["1.1.0"])
    c.on_report(healthy, dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    c.registry.withdraw("part-inspection", "1.1.0", DEFECT)
    c.tick()
    assert c.get(dep["id"])["state"] == "running"  # within the step timeout: the offline canary may report
    t0, m0 = c.clock(), c.monotonic()
    c.clock, c.monotonic = (lambda: t0 + 3600), (lambda: m0 + 3600)
    c.tick()
    d = c.get(dep["id"])
    assert d["state"] == "halted" and d["reason"].startswith("part-inspection 1.1.0 was withdrawn"), d[
        "reason"
    ]
    assert DEFECT in d["reason"] and not d.get("stalled")
    assert [s["version"] for s in c.desired_state(healthy)[1]] == ["1.1.0"]
    assert [s["version"] for s in c.desired_state(offline)[1]] == ["1.0.0"]
    assert d["targets"][offline]["status"] == "rolled_back_by_fleet", d["targets"][
        offline
    ]  # it reports 1.0.0
    (later,) = {"gw1", "gw2", "gw3"} - set(canaries)
    assert c.desired_state(later)[1] == []  # never given it


def test_an_index_that_is_not_a_list_is_refused_by_name_and_halts_no_rollout(registry_control):  # noqa: F811
    """A hand-edited ``index.json`` holding valid JSON that is not a list of versions halted every rollout of the
    package with ``the rollout cannot advance: TypeError: 'int' object is not iterable``; the registry's reader
    says what is wrong with which file, and the rollout goes on as with an index it cannot read at all."""
    c, e = registry_control
    for agent in ("gw1", "gw2", "gw3"):
        _runs(c, agent, e["1.0.0"])
    dep = c.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "steps": ["1", "100%"]}
    )
    canary = next(a for a, t in c.get(dep["id"])["targets"].items() if t["status"] == "assigned")
    (c.registry.root / "part-inspection" / "index.json").write_text("7")
    _runs(c, canary, e["1.1.0"])
    c.on_report(canary, dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    d = c.get(dep["id"])
    assert d["state"] == "running" and "cannot advance" not in d["reason"], d["reason"]
    assert {t["status"] for t in d["targets"].values()} == {"healthy", "assigned"}
    with pytest.raises(ValueError, match=r"index\.json: not a list of versions \(a JSON int\)"):
        c.registry.withdrawals("part-inspection")


def test_a_health_rollback_of_a_withdrawn_version_halts_as_a_failure_and_sends_every_agent_back(
    registry_control,  # noqa: F811
):
    """The withdrawal's halt keeps the agents that run the version; an agent's own health check rolling it back is a
    verdict on the version all the same (its ``active`` report never taken: made before, lost): the rollout halts
    as at any failure, naming the agent, and the agents on the version are sent back."""
    c, e = registry_control
    for agent in ("gw1", "gw2", "gw3"):
        _runs(c, agent, e["1.0.0"])
    dep = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "steps": ["100%"]})
    c.on_report("gw1", dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    c.registry.withdraw("part-inspection", "1.1.0", DEFECT)
    c.on_report("gw2", dep["id"], "vision", "1.1.0", "rolled_back", False, "health check failed: NaN", {})
    d = c.get(dep["id"])
    assert d["state"] == "halted" and d["reason"].startswith("agent gw2: rolled_back: health check"), d[
        "reason"
    ]
    assert d["targets"]["gw1"]["status"] == "rolling_back"
    assert [s["version"] for s in c.desired_state("gw1")[1]] == ["1.0.0"]


@pytest.mark.parametrize(
    ("ran", "step", "reason", "withdrawals_halt"),
    [
        # a verdict on the version from an agent that never ran it: was the withdrawal's halt, gw1 kept on it
        (False, "failed", "install: the model does not load: bad graph", False),
        # an agent that ran it, told it is withdrawn (its desired state naming it): was a failure's halt, gw1 back
        (
            True,
            "failed",
            f"part-inspection 1.1.0 was withdrawn from the registry ({DEFECT}): do not install it",
            True,
        ),
        # rolled back in a health window resumed after a restart, for the withdrawal: was a failure's halt too
        (False, "rolled_back", f"part-inspection 1.1.0 was withdrawn from the registry ({DEFECT})", True),
        # the words of another version ending in 1.1.0: was the withdrawal's halt (the version matched in part)
        (False, "failed", f"part-inspection 11.1.0 was withdrawn from the registry ({DEFECT})", False),
    ],
)
def test_a_failure_halts_as_the_withdrawal_only_when_it_is_the_withdrawal(
    registry_control,  # noqa: F811
    ran,
    step,
    reason,
    withdrawals_halt,
):
    """gw1 healthy on 1.1.0, gw3 offline; 1.1.0 withdrawn; gw2 reports a failure. One that is the withdrawal itself
    (the fleet's words in its reason) is the withdrawal's halt: gw1 keeps 1.1.0. Any other is a verdict on the
    version, withdrawn or not, whether gw2 ran it or not: a failure's halt naming gw2, gw1 sent back."""
    c, e = registry_control
    for agent in ("gw1", "gw2", "gw3"):
        _runs(c, agent, e["1.0.0"])
    dep = c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "steps": ["100%"]})
    c.on_report("gw1", dep["id"], "vision", "1.1.0", "healthy", True, "", {})
    if ran:
        c.on_report("gw2", dep["id"], "vision", "1.1.0", "active", True, "", {})
    c.registry.withdraw("part-inspection", "1.1.0", DEFECT)
    c.on_report("gw2", dep["id"], "vision", "1.1.0", step, False, reason, {})
    d = c.get(dep["id"])
    assert d["state"] == "halted"
    if withdrawals_halt:
        assert d["reason"].startswith("part-inspection 1.1.0 was withdrawn"), d["reason"]
        assert [s["version"] for s in c.desired_state("gw1")[1]] == ["1.1.0"]
    else:
        assert d["reason"].startswith(f"agent gw2: failed: {reason[:30]}"), d["reason"]
        assert [s["version"] for s in c.desired_state("gw1")[1]] == ["1.0.0"]
    assert [s["version"] for s in c.desired_state("gw2")[1]] == ["1.0.0"]


def test_a_new_deployment_id_is_drawn_a_bounded_number_of_times(registry_control, monkeypatch):  # noqa: F811
    """A random source that repeats an id in use (a stub, a broken generator) drew for ever inside the control's
    write, every rollout of every tenant waiting behind it: the create is refused after ``ID_DRAWS`` draws."""
    import types
    import uuid

    from cloud_trainer.fleet import control as control_mod

    c, _ = registry_control
    monkeypatch.setattr(control_mod, "uuid", types.SimpleNamespace(uuid4=lambda: uuid.UUID(int=1)))
    req = {"package": "part-inspection", "version": "1.1.0", "agents": ["gw1"], "strategy": "all_at_once"}
    c.create({**req, "slot": "vision"})
    with pytest.raises(RuntimeError, match="draws"):
        c.create({**req, "slot": "vision2"})  # was: drawing for ever
    assert [d["slot"] for d in c.list()] == ["vision"]
