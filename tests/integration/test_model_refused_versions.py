"""A gateway can refuse a version of a model whoever signed it (``models.<slot>.refused_versions``). A signed
package stays valid for ever: before, nothing but removing the signing key (and with it every version it
signed) made a gateway refuse one version with a known defect, and the fleet's withdrawal cannot reach a
gateway that already runs it, keeps it as the version to go back to, or is pinned to a local file. The slot
sets an installed folder of that version aside at start, refuses it at a swap, and the model manager declines
a desired state naming it (an admin's rollback included), saying why. Real signed packages, real slot, store
and manager; the fleet is the desired state it sends."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from edge_agent.models.config import ModelConfig
from edge_agent.models.manager import ModelManager
from edge_agent.models.slot import ModelSlot, SlotError
from edge_agent.models.store import ModelStore
from model_packager import load_trusted_keys
from tests.support.models import make_keypair, make_package


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refused")
    key, pub = make_keypair(tmp / "keys")
    return {"v1": make_package(tmp, kind="vision", version="1.0.0", key=key, seed=1), "pub": pub, "key": key}


async def test_a_refused_version_is_set_aside_refused_and_declined_whoever_signed_it(tmp_path, pkgs):
    data = tmp_path / "data"
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet")
    store = ModelStore(data / "models" / "vision")  # 1.0.0 installed and serving before the config refused it
    folder = store.install(pkgs["v1"], load_trusted_keys([pkgs["pub"]])).root
    store.set_current(folder, None)

    refusing = cfg.model_copy(update={"refused_versions": ("1.0.0",)})
    s = ModelSlot("vision", refusing, data, [pkgs["pub"]])
    with pytest.raises(SlotError, match=r"cannot start on .*1\.0\.0 is a version this agent refuses"):
        await s.start()  # the installed folder set aside, and the configured package (the same) refused
    assert not folder.exists() and (folder.parent / ".rejected" / folder.name).is_dir()

    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))
    d = SimpleNamespace(
        slot="vision",
        package="part-inspection",
        version="1.0.0",
        digest="ab" * 32,
        deployment_id="dep7:rollback",  # an admin's rollback to it, too
        rollback=True,
    )
    try:
        await mgr.on_desired(SimpleNamespace(desired=[d], generation=3))
        assert "vision" not in mgr.busy
        async with asyncio.timeout(10):
            await asyncio.gather(*list(mgr._tasks))
        (why,) = mgr.declined.values()
        assert "models.vision.refused_versions" in why, why
        assert mgr.steps[-1]["step"] == "failed" and "refuses" in mgr.steps[-1]["reason"]
    finally:
        await mgr.stop()
        await s.stop()
    with pytest.raises(ValidationError, match=r"refused_versions\s+.*'1\.x' is not a semantic version"):
        ModelConfig(name="part-inspection", refused_versions=["1.0.0", "1.x"])


async def test_refused_versions_are_compared_as_versions_not_as_texts(tmp_path, pkgs, monkeypatch):
    """``01.0.0`` (a package built before build refused leading zeros) orders as ``1.0.0``, and the agent takes one
    for the other: ``refused_versions: ["1.0.0"]`` left an installed 01.0.0 serving, and ``["01.0.0"]`` let the
    fleet deploy 1.0.0."""
    import model_packager.manifest

    with monkeypatch.context() as m:  # (the check is the build's: a package of before it)
        m.setattr(model_packager.manifest, "_building", lambda info: False)
        old = make_package(tmp_path, kind="signal", version="01.0.0", key=pkgs["key"])
    data = tmp_path / "data"
    store = ModelStore(data / "models" / "health")
    folder = store.install(old, load_trusted_keys([pkgs["pub"]])).root
    store.set_current(folder, None)
    cfg = ModelConfig(
        name="machine-health",
        engine="onnxruntime",
        version_policy="follow_fleet",
        refused_versions=("1.0.0",),
    )
    s = ModelSlot("health", cfg, data, [pkgs["pub"]])
    with pytest.raises(SlotError, match=r"01\.0\.0 is a version this agent refuses"):
        await s.start()  # (nothing else to serve: a name-only slot with no fleet)
    assert not folder.exists() and (folder.parent / ".rejected" / folder.name).is_dir()
    await s.stop()

    zeros = ModelSlot("health", cfg.model_copy(update={"refused_versions": ("01.0.0",)}), data, [pkgs["pub"]])
    mgr = ModelManager({"health": zeros}, SimpleNamespace(data_dir=data))
    d = SimpleNamespace(
        slot="health", package="machine-health", version="1.0.0", digest="cd" * 32, deployment_id="dep8"
    )
    try:
        await mgr.on_desired(SimpleNamespace(desired=[d], generation=1))
        async with asyncio.timeout(10):
            await asyncio.gather(*list(mgr._tasks))
        (why,) = mgr.declined.values()
        assert "models.health.refused_versions" in why, why
    finally:
        await mgr.stop()
    assert cfg.refuses("1.0.0+hotfix") and not cfg.refuses("1.0.1")


async def test_a_version_of_a_number_past_18_digits_can_be_refused(tmp_path, pkgs, monkeypatch):
    """A manifest takes any digits (``1.0.99999999999999999999``, signed by hand or built before build refused it),
    the version order at most 18 a number: such a package verified and installed, and ``refused_versions`` naming
    it was a config error ("is not a semantic version"), so an operator could not refuse it by its version. It is
    taken now and compared by its text (without its build metadata); the package is set aside at the start, whoever
    signed it."""
    import model_packager.manifest

    long = "1.0.99999999999999999999"
    with monkeypatch.context() as m:  # (the check is the build's: a package of before it)
        m.setattr(model_packager.manifest, "_building", lambda info: False)
        old = make_package(tmp_path, kind="signal", version=long, key=pkgs["key"])
    data = tmp_path / "data"
    store = ModelStore(data / "models" / "health")
    folder = store.install(old, load_trusted_keys([pkgs["pub"]])).root
    store.set_current(folder, None)
    cfg = ModelConfig(name="machine-health", engine="onnxruntime", refused_versions=(long,))
    assert not cfg.refuses("1.0.0") and not cfg.refuses("1.0.99999999999999999998")
    # build metadata left out, as the version order leaves it out (``1.0.0+hotfix`` is ``1.0.0``): either side
    assert cfg.refuses(f"{long}+hotfix.1") and not cfg.refuses("1.0.99999999999999999998+hotfix.1")
    assert ModelConfig(name="machine-health", refused_versions=(f"{long}+b",)).refuses(long)
    s = ModelSlot("health", cfg, data, [pkgs["pub"]])
    with pytest.raises(SlotError, match=rf"{long} is a version this agent refuses"):
        await s.start()
    assert not folder.exists() and (folder.parent / ".rejected" / folder.name).is_dir()
    await s.stop()
    with pytest.raises(ValidationError, match=r"refused_versions\s+.*'1\.0\.9x' is not a semantic version"):
        ModelConfig(name="part-inspection", refused_versions=["1.0.9x"])


async def test_a_waiting_slot_whose_deployment_is_declined_says_so_not_waiting(tmp_path, pkgs):
    """A fleet-fed slot waiting for its first package, the fleet's deployment declined by the model manager before
    any swap (here a version the slot's config refuses): its reason read "no package yet: waiting for the fleet's
    deployment" for as long as the refusal stood (on /status, in ``edge-agent status``, in the fleet's slot row),
    nothing of the decline on the slot (``last_swap`` empty). It names the deployment and why."""
    from edge_agent.models.slot import FailedAtStart

    config = ModelConfig(name="part-inspection", version_policy="follow_fleet", refused_versions=["1.0.0"])
    s = ModelSlot("vision", config, tmp_path / "data", [pkgs["pub"]], fleet=True)
    with pytest.raises(FailedAtStart):
        await s.start()
    assert s.waiting_for_fleet and s.failed.startswith("no package yet: waiting for the fleet's deployment")
    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=tmp_path / "data"))
    d = SimpleNamespace(
        slot="vision", package="part-inspection", version="1.0.0", digest="ab" * 32, deployment_id="dep8"
    )
    try:
        await mgr.on_desired(SimpleNamespace(desired=[d], generation=1))
        assert mgr.declined and s.last_outcome is None
        assert s.failed == (
            "no package yet: the fleet's deployment of part-inspection 1.0.0 to it was declined: "
            f"{mgr.declined[('vision', d.digest, 'dep8')]}; waiting for the fleet's next deployment"
        ), s.failed
        assert "models.vision.refused_versions" in s.failed and s.waiting_for_fleet
    finally:
        await mgr.stop()
        await s.stop()


async def test_a_deployment_to_the_slot_as_its_config_may_spell_it_is_read_as_that_slot(tmp_path, pkgs):
    """The config reads a slot written ``vision/`` or ``./vision`` as ``vision`` (its folder the same); a fleet's
    deployment to the slot so spelt was declined (``this agent has no model slot 'vision/'``) and its rollout
    halted. It is read as the slot (here declined for the version the slot refuses, nothing downloaded); a desired
    state naming the slot itself as well keeps the spelt one apart. The fleet's own message (``DesiredSlot``)."""
    from protocols.gen import fleet_pb2 as pb

    config = ModelConfig(name="part-inspection", version_policy="follow_fleet", refused_versions=["1.0.0"])
    s = ModelSlot("vision", config, tmp_path / "data", [pkgs["pub"]], fleet=True)
    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=tmp_path / "data"))

    def desired(*slots: str) -> SimpleNamespace:
        return SimpleNamespace(
            desired=[
                pb.DesiredSlot(
                    slot=n,
                    package="part-inspection",
                    version="1.0.0",
                    digest="ab" * 32,
                    deployment_id=f"d{i}",
                )
                for i, n in enumerate(slots)
            ],
            generation=1,
        )

    try:
        await mgr.on_desired(desired("vision/"))
        await mgr.on_desired(desired("./vision"))
        await mgr.on_desired(desired("vision", "vision/"))
        assert [(k[0], k[2], "models.vision.refused_versions" in why) for k, why in mgr.declined.items()] == [
            ("vision", "d0", True),  # (vision/ and ./vision: one deployment id, one slot: declined once)
            ("vision/", "d1", False),
        ], mgr.declined
        assert mgr.declined[("vision/", "ab" * 32, "d1")].startswith(
            "slot 'vision/' is slot 'vision' as written, which the fleet's desired state names more than once"
        ), mgr.declined
        # two spellings, neither the slot itself: neither is read as it (one deployment per slot), each declined
        mgr.declined.clear()
        await mgr.on_desired(desired("vision/", "./vision"))
        assert sorted((k[0], k[2]) for k in mgr.declined) == [("./vision", "d1"), ("vision/", "d0")], (
            mgr.declined
        )
        assert all("names more than once" in why for why in mgr.declined.values()), mgr.declined
    finally:
        await mgr.stop()
        await s.stop()
