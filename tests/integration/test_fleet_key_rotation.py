"""Rotating a tenant's package signing key (``cloud-trainer pki tenant --rotate``). The fleet deploys a tenant's
packages only when its key signed them; it knew one key, ``signing.pub``, so after a rotation (by hand: there
was no command) every version published before it was refused, an admin's rollback to the last good version
included. The retired public key is now kept in ``tenants/T/retired/``: its versions stay deployable until an
operator removes it (a compromised key), and then they are refused. Real PKI folder, control state (SQLite) and
a registry of real signed packages."""

from __future__ import annotations

import tarfile

import pytest

from cloud_trainer.fleet.control import Control, NotInTenant
from cloud_trainer.fleet.store import open_store
from cloud_trainer.pki import init_tenant, main, signing_key_paths
from cloud_trainer.registry import Registry
from model_packager import verify_package
from model_packager.errors import PackageError
from model_packager.keys import key_id, load_public_key, load_trusted_keys
from tests.support.models import make_package


def test_a_rotated_key_keeps_older_versions_deployable_until_it_is_removed(tmp_path, capsys):
    pki = tmp_path / "pki"
    init_tenant(pki, "acme")
    private, public = signing_key_paths(pki, "acme")
    reg = Registry(tmp_path / "registry").for_tenant("acme")
    reg.publish(make_package(tmp_path / "a", version="1.0.0", key=private, seed=1), [], {}, None, None)

    assert main(["tenant", "--dir", str(pki), "--tenant", "acme", "--rotate"]) == 0
    said = capsys.readouterr().out
    retired = next((pki / "tenants" / "acme" / "retired").glob("*.pub"))
    assert f"key {retired.stem} retired" in said, said
    assert key_id(load_public_key(public)) != retired.stem  # a new key signs from now on
    assert not list(retired.parent.glob("*.key"))  # the retired one never signs again
    reg.publish(make_package(tmp_path / "b", version="1.1.0", key=private, seed=2), [], {}, None, None)

    store = open_store(None, tmp_path)
    for agent in ("gw1", "gw2"):
        store.heartbeat(agent, {"site": "plant"}, [], {}, 0, {}, tenant="acme")
    c = Control(tmp_path / "control.db", Registry(tmp_path / "registry"), store, keys_dir=pki)
    try:
        c.create(
            {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]},
            tenant="acme",
        )
        # the last good version, signed before the rotation: the admin's rollback goes through
        back = c.rollback("part-inspection", "1.0.0", "vision", ["gw1", "gw2"], tenant="acme")
        assert back["version"] == "1.0.0"
        old = reg.get("part-inspection", "1.0.0")
        for agent in ("gw1", "gw2"):  # they run it again
            slots = [{"slot": "vision", "package": old["name"], "version": "1.0.0", "digest": old["digest"]}]
            store.heartbeat(agent, {"site": "plant"}, slots, {}, 0, {}, tenant="acme")
        again = c.create(
            {
                "package": "part-inspection",
                "version": "1.1.0",
                "slot": "vision",
                "agents": ["gw1", "gw2"],
                "steps": ["100%"],
            },
            tenant="acme",
        )
        retired.unlink()  # the old key leaked: its versions are refused from now on
        with pytest.raises(NotInTenant, match="not signed by this tenant's package key"):
            c.rollback("part-inspection", "1.0.0", "vision", ["gw1"], tenant="acme")
        # ... nor sent back by a halt (their previous version): the agents keep what they run
        c.on_report("gw2", again["id"], "vision", "1.1.0", "healthy", True, "", {}, tenant="acme")
        c.on_report("gw1", again["id"], "vision", "1.1.0", "failed", False, "verify: bad", {}, tenant="acme")
        halted = c.get(again["id"], tenant="acme")
        assert halted["state"] == "halted"
        for agent in ("gw1", "gw2"):
            assert c.desired_state(agent, tenant="acme")[1] == [], agent
        assert "not signed by a package key the tenant still has" in halted["targets"]["gw2"]["reason"]
    finally:
        store.close()
    assert main(["tenant", "--dir", str(tmp_path / "none"), "--tenant", "beta", "--rotate"]) == 2


def test_a_key_past_its_not_after_no_longer_installs_what_it_signed(tmp_path, capsys):
    """A trusted key stayed trusted for ever: a retired tenant key (or a gateway's old key file) kept every
    package it signed installable, whatever its age. A key file may now state ``not-after:``; past it a package
    that key signed is refused at install, by the agent and by the fleet, with one line naming the key, its end
    and the file. What was installed while the key was trusted keeps serving (its folder's check at a start)."""
    from edge_agent.models.store import ModelStore
    from model_packager import load_trusted_keys
    from model_packager.errors import SignatureError

    pki = tmp_path / "pki"
    init_tenant(pki, "acme")
    private, public = signing_key_paths(pki, "acme")
    old = make_package(tmp_path / "a", version="1.0.0", key=private, seed=1)
    store = ModelStore(tmp_path / "gw" / "models" / "vision")
    installed = store.install(old, load_trusted_keys([public]))  # while the key is trusted
    main(["tenant", "--dir", str(pki), "--tenant", "acme", "--rotate"])
    retired = next((pki / "tenants" / "acme" / "retired").glob("*.pub"))
    pem = retired.read_bytes()

    retired.write_bytes(b"not-after: 2099-12-31\n" + pem)  # still trusted
    store.install(old, load_trusted_keys([retired]))
    retired.write_bytes(b"not-after: 9999-12-31\n" + pem)  # "never": trusted (was OverflowError)
    store.install(old, load_trusted_keys([retired]))
    expired = b"# retired at the rotation\nnot-after: 2020-01-31\n" + pem
    retired.write_bytes(expired)
    with pytest.raises(
        SignatureError, match=r"whose trust ended at 2020-02-01T00:00:00\+00:00 \(not-after in "
    ) as e:
        store.install(old, load_trusted_keys([retired]))
    assert e.value.code == "key_expired" and str(retired) in str(e.value)
    store.verify(installed.root.name, load_trusted_keys([retired]))  # installed before: it serves on
    (tmp_path / "copy.pub").write_bytes(pem)  # the same key in another file, without an end: the end holds
    with pytest.raises(SignatureError, match="whose trust ended"):
        store.install(old, load_trusted_keys([retired, tmp_path / "copy.pub"]))

    reg = Registry(tmp_path / "registry").for_tenant("acme")
    reg.publish(old, [], {}, None, None)
    fleet = open_store(None, tmp_path)
    fleet.heartbeat("gw1", {"site": "plant"}, [], {}, 0, {}, tenant="acme")
    c = Control(tmp_path / "control.db", Registry(tmp_path / "registry"), fleet, keys_dir=pki)
    try:
        with pytest.raises(NotInTenant, match="trust ended"):  # nor deployed, nor rolled back to
            c.rollback("part-inspection", "1.0.0", "vision", ["gw1"], tenant="acme")
    finally:
        fleet.close()
    # `edge-agent validate` (and the start) say it: a warning for a key past its end, an error for a bad date
    from edge_agent.config import ConfigError, parse_config

    doc = {
        "agent": {"id": "gw1", "data_dir": str(tmp_path / "gw")},
        "trusted_keys": [str(retired)],
        "models": {"vision": {"package": str(old)}},
    }
    (warned,) = parse_config(doc, "line3.yaml").warnings
    assert warned.startswith(f"line3.yaml: trusted_keys[0]: {retired}: its trust ended at 2020-02-01"), warned
    retired.write_bytes(b"not-after: next week\n" + pem)
    with pytest.raises(SignatureError, match=r"not-after 'next week' is not a date"):
        load_trusted_keys([retired])
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "line3.yaml")
    assert any(e.startswith("line3.yaml: trusted_keys[0]: trusted key ") for e in err.value.errors), err.value


def test_a_tenant_without_a_package_key_cannot_roll_out_a_package_signed_by_another_tenants_key(tmp_path):
    """A tenant without a package key in the PKI folder (the default tenant, whose packages a key of its own signs)
    had no signer check in the fleet: a package signed by tenant beta's key (current or retired), copied into its
    registry, was rolled out, and its agents, trusting their own key only, refused it at the first canary (the
    rollout halted there). It is refused at the rollout's start now, naming the package and the key; a package
    its own key signed is rolled out as before."""
    pki = tmp_path / "pki"
    init_tenant(pki, "beta")
    beta_private, beta_public = signing_key_paths(pki, "beta")
    beta_kid = key_id(load_public_key(beta_public))
    reg = Registry(tmp_path / "registry")  # the default tenant's
    own = make_package(tmp_path / "own", version="1.0.0", seed=1)  # signed by a key of its own (tmp/own/keys)
    reg.publish(own, [], {}, None, None)
    reg.publish(make_package(tmp_path / "b", version="1.1.0", key=beta_private, seed=2), [], {}, None, None)
    store = open_store(None, tmp_path)
    store.heartbeat("gw1", {"site": "plant"}, [], {}, 0, {}, tenant="default")
    c = Control(tmp_path / "control.db", reg, store, keys_dir=pki)
    try:
        # what the tenant's agents do with it: refused, their trusted key is their own
        agents_keys = load_trusted_keys([tmp_path / "own" / "keys" / "signing.pub"])
        with pytest.raises(
            PackageError, match=f"signed by key {beta_kid}, which is not among the trusted keys"
        ):
            verify_package(reg.package_path(reg.get("part-inspection", "1.1.0")), agents_keys)
        with pytest.raises(NotInTenant) as refused:
            c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]})
        assert str(refused.value).startswith(
            f"part-inspection 1.1.0 is signed by key {beta_kid}, a package key of another tenant of this service"
        ), refused.value
        assert c.list() == []
        # beta's key rotated: a package its retired key signed is another tenant's all the same
        assert main(["tenant", "--dir", str(pki), "--tenant", "beta", "--rotate"]) == 0
        with pytest.raises(NotInTenant, match=f"signed by key {beta_kid}, a package key of another tenant"):
            c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]})
        dep = c.create(
            {"package": "part-inspection", "version": "1.0.0", "slot": "vision", "agents": ["gw1"]}
        )
        assert dep["state"] == "running"
    finally:
        store.close()


def test_a_keyless_tenants_check_skips_a_bad_key_file_checks_the_signature_alone_and_reads_keys_once(
    tmp_path, monkeypatch
):
    """The check of a tenant without a package key (f692587d) loaded every tenant's key files at once, outside any
    guard: one bad file of another tenant (here gamma's key with a not-after that is not a date) raised out of
    CreateDeployment and of every tick (every tenant's rollouts frozen, an abort refused). It read them all again
    at each check (1.5 s per 1,000 tenants inside the control lock), and a package signed by another tenant's key
    with one byte of its model changed passed (a full verify failed, read as 'not another tenant's'). Now a bad
    file is skipped with a WARNING naming it, the keys are read once until the PKI folder changes, the signature
    alone is checked, and a halt that cannot send such a version back says why."""
    import model_packager.keys as keys_module

    pki = tmp_path / "pki"
    init_tenant(pki, "beta")
    init_tenant(pki, "gamma")
    beta_private, beta_public = signing_key_paths(pki, "beta")
    beta_kid = key_id(load_public_key(beta_public))
    gamma_pub = signing_key_paths(pki, "gamma")[1]
    gamma_pem = gamma_pub.read_bytes()
    gamma_pub.write_bytes(b"not-after: 2027-13-45\n" + gamma_pem)  # an operator's typo in gamma's file
    reg = Registry(tmp_path / "registry")  # the default tenant's: no package key in the PKI folder
    theirs = make_package(tmp_path / "b", version="0.9.0", key=beta_private, seed=3)  # what gw1, gw2 run
    reg.publish(theirs, [], {}, None, None)
    reg.publish(make_package(tmp_path / "own", version="1.0.0", seed=1), [], {}, None, None)
    changed = make_package(tmp_path / "b2", version="1.1.0", key=beta_private, seed=2)
    reg.publish(changed, [], {}, None, None)
    path = reg.package_path(reg.get("part-inspection", "1.1.0"))
    with tarfile.open(path) as tar:
        at = tar.getmember("model.onnx").offset_data + 100
    with open(path, "r+b") as f:  # one byte of the model changed, its manifest and signature untouched
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 1]))
    old = reg.get("part-inspection", "0.9.0")
    store = open_store(None, tmp_path)
    for agent in ("gw1", "gw2"):
        slots = [{"slot": "vision", "package": old["name"], "version": "0.9.0", "digest": old["digest"]}]
        store.heartbeat(agent, {"site": "plant"}, slots, {}, 0, {}, tenant="default")
    c = Control(tmp_path / "control.db", reg, store, keys_dir=pki)
    loads = []
    real_load = keys_module.load_public_key
    monkeypatch.setattr(keys_module, "load_public_key", lambda p: loads.append(p) or real_load(p))
    try:
        with pytest.raises(NotInTenant) as refused:  # was: one model byte changed, rolled out
            c.create({"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]})
        said = str(refused.value)
        assert f"is signed by key {beta_kid}, a package key of another tenant of this service" in said, said
        assert "beta" not in said and str(tmp_path) not in said, said
        read = len(loads)
        assert read == 2, loads  # beta's key and gamma's (skipped: its not-after)
        dep = c.create(  # was: SignatureError naming gamma's file (CreateDeployment UNKNOWN)
            {"package": "part-inspection", "version": "1.0.0", "slot": "vision", "agents": ["gw1", "gw2"]}
        )
        assert dep["state"] == "running" and len(loads) == read  # the keys read once, not at each check
        # the canary healthy, the other fails: the halt would send the canary 0.9.0 back, which beta's key signed
        # (was: the tick raised, every tick)
        canary = next(a for a, t in c.get(dep["id"])["targets"].items() if t["status"] == "assigned")
        c.on_report(canary, dep["id"], "vision", "1.0.0", "healthy", True, "", {})
        other = ({"gw1", "gw2"} - {canary}).pop()
        assert c.get(dep["id"])["targets"][other]["status"] == "assigned"
        c.on_report(other, dep["id"], "vision", "1.0.0", "failed", False, "smoke test failed", {})
        halted = c.get(dep["id"])
        assert halted["state"] == "halted", halted
        assert c.desired_state(canary)[1] == []  # not sent back: it keeps what it runs
        reason = halted["targets"][canary]["reason"]
        assert "0.9.0 is signed by a package key of another tenant of this service" in reason, reason
        # gamma's file mended in place, beta's key rotated: read again
        gamma_pub.write_bytes(gamma_pem)
        assert main(["tenant", "--dir", str(pki), "--tenant", "beta", "--rotate"]) == 0
        loads.clear()
        with pytest.raises(NotInTenant, match=f"signed by key {beta_kid}, a package key of another tenant"):
            c.rollback("part-inspection", "0.9.0", "vision", ["gw1"])
        assert len(loads) == 3, loads  # beta's new and retired keys, gamma's
        next((pki / "tenants" / "beta" / "retired").glob("*.pub")).unlink()  # removed: the agents' to judge
        assert c.rollback("part-inspection", "0.9.0", "vision", ["gw1"])["state"] == "running"
    finally:
        c.close()
        store.close()
