"""Hostile input on the install path, with a real fleet service (gRPC, mTLS) and real agents: a crafted
package is a typed refusal that reaches the fleet and halts the rollout while the old model keeps serving;
versions only go up except by an admin's rollback, at the agent and at the fleet; names in the desired
state are checked before they touch a path."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from edge_agent.models.manager import check_desired
from model_packager import package_digest
from tests.integration.test_fleet_control import fleet, heartbeats, until, version  # noqa: F401  (the fixture)
from tests.support import tar_craft as tc

# the fixture's agents install in this process (no install child at each start and swap) where a test judges the
# fleet, the manager or the desired state; the tests whose subject is what the install refuses (crafted archives, a
# package that is not the version named) or that need a swap as long as an agent's own (a desired state changed
# mid-swap) keep the agents' install child
INSTALLS_IN_PROCESS = True
INSTALLS_IN_CHILD = {
    "test_crafted_package_is_refused_reported_and_halts_the_rollout",
    "test_a_desired_state_changed_mid_swap_waits_for_the_swap_and_is_never_a_silent_downgrade",
    "test_a_package_that_is_not_the_version_the_fleet_named_is_refused_not_served",
}


def _tamper(reg, name: str, version_: str, make) -> str:
    """Replace a published package's bytes (someone on the path); returns the new digest."""
    entry = reg.get(name, version_)
    path = reg.package_path(entry)
    tmp = path.with_name("crafted.edgepkg")
    make(path, tmp)
    tmp.replace(path)
    digest = package_digest(path)
    entries = reg.list(name)
    for e in entries:
        if e["version"] == version_:
            e["digest"] = digest
    reg._write(name, entries)
    return digest


@pytest.mark.parametrize("attack", ["sparse", "tib", "appended"])
async def test_crafted_package_is_refused_reported_and_halts_the_rollout(fleet, attack):  # noqa: F811
    srv, agents, reg = fleet
    crafted = {
        "sparse": lambda src, dst: tc.splice(
            src, dst, tc.pax_entry(tc.pax_record("GNU.sparse.map", "1,x,garbage"))
        ),
        "tib": lambda src, dst: tc.splice(
            src, dst, tc.header("././@LongLink", 1 << 40, b"L", magic=tc.GNU_MAGIC, base256_size=True)
        ),
        "appended": lambda src, dst: dst.write_bytes(src.read_bytes() + tc.file_entry("evil.bin", b"evil")),
    }[attack]
    digest = _tamper(reg, "part-inspection", "1.1.0", crafted)
    dep = srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "agents": ["gw1", "gw2"],
            "strategy": "canary",
            "steps": ["1", "100%"],
        }
    )
    await until(
        lambda: srv.control._get(dep["id"])["state"] == "halted", timeout_s=30, what="the rollout to halt"
    )
    d = srv.control._get(dep["id"])
    assert d["targets"]["gw1"]["status"] == "failed" and d["targets"]["gw2"]["status"] == "waiting"
    assert "refused" in d["reason"] and "Error" not in d["reason"].split(":")[0]
    slot = agents["gw1"].slots["vision"]
    assert slot.state == "active" and version(agents["gw1"]) == "1.0.0"
    assert slot.last_outcome.stage == "verify" and not slot.last_outcome.ok
    mgr = agents["gw1"].manager
    assert digest in mgr.refused
    await heartbeats(agents["gw1"])  # several heartbeats: the refused digest is never downloaded again
    downloads = [s for s in mgr.steps if s["step"] == "downloading" and s["version"] == "1.1.0"]
    assert len(downloads) == 1 and not mgr.busy
    assert slot.infer is not None and version(agents["gw1"]) == "1.0.0"


async def _upgrade_gw1(srv, agents):
    dep = srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "agents": ["gw1"],
            "strategy": "all_at_once",
            "wait_s": 0,
        }
    )
    await until(lambda: srv.control._get(dep["id"])["state"] == "completed", what="1.1.0 on gw1")
    await until(
        lambda: any(
            s["version"] == "1.1.0" for a in srv.store.agents() if a["id"] == "gw1" for s in a["slots"]
        ),
        what="gw1's heartbeat to report 1.1.0",
    )


async def test_agent_refuses_a_downgrade_unless_it_is_an_admin_rollback(fleet):  # noqa: F811
    srv, agents, reg = fleet
    await _upgrade_gw1(srv, agents)
    old = reg.get("part-inspection", "1.0.0")
    # a buggy or compromised fleet puts a plain (non-rollback) downgrade in the desired state
    with srv.control.lock:
        srv.control._set_desired("gw1", "vision", "part-inspection", "1.0.0", old["digest"], 1, "manual1")
    mgr = agents["gw1"].manager
    await until(lambda: mgr.declined, timeout_s=30, what="the agent to decline the downgrade")
    assert "downgrade from 1.1.0 to 1.0.0 refused" in next(iter(mgr.declined.values()))
    await heartbeats(agents["gw1"])
    assert version(agents["gw1"]) == "1.1.0"
    # the fleet refuses a plain deployment of an older version ...
    with pytest.raises(ValueError, match="versions only go up: use rollback"):
        srv.control.create(
            {"package": "part-inspection", "version": "1.0.0", "slot": "vision", "agents": ["gw1"]}
        )
    # ... and the admin's rollback is accepted by both
    srv.control.rollback("part-inspection", "1.0.0", "vision", ["gw1"])
    await until(lambda: version(agents["gw1"]) == "1.0.0", what="the rollback")


async def test_fleet_refuses_a_downgrade_deployment_over_the_wire(fleet, tmp_path, capsys):  # noqa: F811
    # `cloud-trainer deploy`'s entry point in a thread, over gRPC as the CLI goes (the real process:
    # test_fleet_control's admin CLI test)
    from cloud_trainer.cli import main

    srv, agents, _ = fleet
    await _upgrade_gw1(srv, agents)
    base = ["--endpoint", f"127.0.0.1:{srv.port}", "--pki", str(tmp_path / "pki"), "--admin", "alice"]

    args = ["deploy", "part-inspection", "--version", "1.0.0", "--slot", "vision", "--agent", "gw1", *base]

    def deploy() -> tuple[object, str]:  # (exit code, stderr) as the process gives them
        try:
            return main(args), ""
        except SystemExit as exc:  # sys.exit(message): the interpreter prints it to stderr and exits 1
            return exc.code, str(exc.code)

    capsys.readouterr()
    code, said = await asyncio.to_thread(deploy)
    err = capsys.readouterr().err + said
    assert code not in (0, None) and "INVALID_ARGUMENT" in err and "versions only go up" in err, err
    assert [d for d in srv.control.list() if d["version"] == "1.0.0"] == []


async def test_names_from_the_wire_never_become_paths_outside_staging(fleet, tmp_path):  # noqa: F811
    srv, agents, reg = fleet
    entry = reg.get("part-inspection", "1.1.0")
    mgr = agents["gw1"].manager
    with srv.control.lock:
        srv.control._set_desired("gw1", "vision", "../../../planted", "1.1.0", entry["digest"], 1, "evil1")
    await until(lambda: mgr.declined, timeout_s=30, what="the agent to decline the desired state")
    assert "is not a valid package name" in next(iter(mgr.declined.values()))
    with srv.control.lock:
        srv.control._set_desired(
            "gw1", "vision", "part-inspection", "1.1.0/../../x", entry["digest"], 1, "evil2"
        )
    await until(lambda: len(mgr.declined) == 2, timeout_s=30, what="the second refusal")
    await heartbeats(agents["gw1"], n=2)
    assert not list(tmp_path.rglob("planted*")) and not list(tmp_path.rglob("x.edgepkg"))
    assert version(agents["gw1"]) == "1.0.0"


@pytest.mark.parametrize(
    "field,value,ok",
    [
        ("package", "part-inspection", True),
        ("package", "../etc", False),
        ("package", "a/b", False),
        ("package", "x" * 64, False),
        ("package", "Part", False),
        ("package", "p\n", False),
        ("version", "1.2.0", True),
        ("version", "1.2.0/..", False),
        ("version", "1.2", False),
        ("version", "1.0.0-" + "a" * 80, False),
        ("digest", "../" + "a" * 61, False),
        ("digest", "A" * 64, False),
        ("deployment_id", "abc:rollback", True),
        ("deployment_id", "abc/../x", False),
        ("deployment_id", "", False),
    ],
)
def test_desired_state_names_are_checked_against_an_allow_list(field, value, ok):
    d = {
        "slot": "vision",
        "package": "part-inspection",
        "version": "1.0.0",
        "digest": "a" * 64,
        "deployment_id": "abc123",
        field: value,
    }
    why = check_desired(SimpleNamespace(**d))
    assert (why is None) == ok, why
    if why:
        assert why.isprintable() and json.dumps(why)


async def test_a_desired_state_changed_mid_swap_waits_for_the_swap_and_is_never_a_silent_downgrade(
    fleet,  # noqa: F811
    tmp_path,
):
    """The fleet moves a slot's desired state while the agent still installs the previous one (a new
    deployment, a buggy fleet): the agent finishes the running swap and reports its true outcome, then
    judges the new desired state against what it runs (here: a downgrade, refused)."""
    from tests.support.models import make_keypair, make_package

    srv, agents, reg = fleet
    key, _ = make_keypair(tmp_path / "keys")  # the fixture's key (same folder): a trusted signer
    reg.publish(
        make_package(tmp_path / "b2", kind="vision", version="1.0.5", key=key, bias=6.0), [], {}, None, None
    )
    new, mid = reg.get("part-inspection", "1.1.0"), reg.get("part-inspection", "1.0.5")
    mgr = agents["gw1"].manager
    with srv.control.lock:
        srv.control._set_desired("gw1", "vision", "part-inspection", "1.1.0", new["digest"], 1, "up1")
    await until(
        lambda: any(s["step"] == "verifying" and s["version"] == "1.1.0" for s in mgr.steps),
        timeout_s=30,
        what="1.1.0 downloaded",
    )
    with srv.control.lock:  # before 1.1.0 is switched in: 1.0.5 is higher than the 1.0.0 still serving
        srv.control._set_desired("gw1", "vision", "part-inspection", "1.0.5", mid["digest"], 1, "mid1")
    await until(
        lambda: any(s["step"] == "healthy" and s["version"] == "1.1.0" for s in mgr.steps), what="1.1.0 kept"
    )
    await until(lambda: mgr.declined, timeout_s=30, what="1.0.5 to be declined as a downgrade")
    assert "downgrade from 1.1.0 to 1.0.5 refused" in next(iter(mgr.declined.values())), mgr.steps
    assert version(agents["gw1"]) == "1.1.0"
    assert not [s for s in mgr.steps if s["version"] == "1.1.0" and s["step"] in ("rolled_back", "failed")]


async def test_a_deployment_to_a_slot_the_agent_does_not_have_fails_with_the_reason(fleet):  # noqa: F811
    """A typo in the slot name (or an agent configured otherwise): the rollout halts saying so, once, rather
    than wait for the agent for ever; the slots it has are untouched."""
    srv, agents, _ = fleet
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vison", "agents": ["gw1"]}
    )
    await until(lambda: srv.control._get(dep["id"])["state"] == "halted", timeout_s=30, what="the halt")
    reason = srv.control._get(dep["id"])["reason"]
    assert "this agent has no model slot 'vison' (its slots: vision)" in reason, reason
    await heartbeats(agents["gw1"])  # several desired states later: reported once
    mgr = agents["gw1"].manager
    assert [s["step"] for s in mgr.steps if s["deployment"] == dep["id"]] == ["failed"]
    assert version(agents["gw1"]) == "1.0.0"


async def test_a_desired_state_with_thousands_of_slots_is_bounded_and_reported_once(tmp_path):
    """A fleet gone wrong sends 5,000 desired slots the agent does not have: the work and the reports are
    bounded per desired state, each refusal is reported once, and nothing grows at every heartbeat."""
    from edge_agent.models import manager as m

    events: list = []
    mgr = m.ModelManager({}, SimpleNamespace(data_dir=tmp_path), on_event=events.append)
    desired = [
        SimpleNamespace(
            slot=f"s{i}",
            package="p",
            version="1.0.0",
            digest=f"{i:064x}",
            deployment_id=f"d{i}",
            rollback=False,
        )
        for i in range(5000)
    ]
    reply = SimpleNamespace(generation=7, desired=desired)
    for _ in range(3):  # three heartbeats with the same desired state
        await mgr.on_desired(reply)
        await asyncio.sleep(0)
    assert len(events) == len(mgr.declined) == 1000  # one report per slot looked at, never again
    assert "no model slot 's0'" in mgr.declined[("s0", f"{0:064x}", "d0")]


async def test_a_package_that_is_not_the_version_the_fleet_named_is_refused_not_served(fleet, tmp_path):  # noqa: F811
    """The registry's index and its files disagree (a file replaced, a restore from another backup): the
    fleet deploys 1.1.0 and sends the bytes of 1.0.5, signed by the trusted key. The agent used to swap to
    1.0.5 and then report "rolled back" (its version was not 1.1.0) while serving 1.0.5; now it refuses
    the package at verify, naming both, and keeps serving what it ran."""
    from tests.support.models import make_package

    srv, agents, reg = fleet
    other = make_package(
        tmp_path / "other", kind="vision", version="1.0.5", key=tmp_path / "keys" / "signing.key"
    )
    _tamper(reg, "part-inspection", "1.1.0", lambda src, dst: dst.write_bytes(other.read_bytes()))
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    await until(
        lambda: srv.control._get(dep["id"])["state"] == "halted", timeout_s=30, what="the rollout to halt"
    )
    slot = agents["gw1"].slots["vision"]
    assert version(agents["gw1"]) == "1.0.0" and slot.state == "active"
    assert slot.last_outcome.stage == "verify" and not slot.last_outcome.ok
    assert "delivered as part-inspection 1.1.0 is part-inspection-1.0.5" in slot.last_outcome.reason
    assert "part-inspection-1.0.5" in srv.control._get(dep["id"])["targets"]["gw1"]["reason"]
