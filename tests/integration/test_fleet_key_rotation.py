"""Rotating a tenant's package signing key (``cloud-trainer pki tenant --rotate``). The fleet deploys a tenant's
packages only when its key signed them; it knew one key, ``signing.pub``, so after a rotation (by hand: there
was no command) every version published before it was refused, an admin's rollback to the last good version
included. The retired public key is now kept in ``tenants/T/retired/``: its versions stay deployable until an
operator removes it (a compromised key), and then they are refused. Real PKI folder, control state (SQLite) and
a registry of real signed packages."""

from __future__ import annotations

import pytest

from cloud_trainer.fleet.control import Control, NotInTenant
from cloud_trainer.fleet.store import open_store
from cloud_trainer.pki import init_tenant, main, signing_key_paths
from cloud_trainer.registry import Registry
from model_packager.keys import key_id, load_public_key
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
