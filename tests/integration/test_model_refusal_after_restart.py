"""A version the agent rolled back (or refused at its load or golden test) while the fleet could not hear it is
not installed again after a restart. The outcome waits in ``<data_dir>/deployments/<slot>.json`` until the fleet
acknowledges it; after a restart nothing in memory said what became of it, so the agent dropped that file (as for
a swap cut short) and installed the same version again from the fleet's unchanged desired state: the line was
served the version the agent had judged bad once more, and the fleet never heard why. Now the slot's store
(state.json, which recorded the failure) settles it: ``failed`` with the recorded reason, the digest refused.
A real slot, store and manager on a real signed package; the fleet is the desired state it sends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_agent.models.config import ModelConfig
from edge_agent.models.manager import ModelManager
from edge_agent.models.slot import ModelSlot
from tests.support.models import make_keypair, make_package


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("restart")
    key, pub = make_keypair(tmp / "keys")
    return {"v1": make_package(tmp, kind="vision", version="1.0.0", key=key, seed=1), "pub": pub}


async def test_a_version_rolled_back_before_a_restart_is_not_installed_again(tmp_path, pkgs):
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet")
    data = tmp_path / "data"
    d = SimpleNamespace(
        slot="vision",
        package="part-inspection",
        version="1.1.0",
        digest="c0ffee" * 10 + "abcd",
        deployment_id="dep1",
        rollback=False,
    )
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])  # a start: nothing in memory of the run before
    await s.start()
    # what the run before left on disk: 1.1.0 swapped in, rolled back by the health check (the store records
    # it, the slot serves 1.0.0 again), and the rolled_back report never acknowledged (the link was down)
    reason = "NG rate 92% in the health window against 3% before the swap; rolled back to 1.0.0"
    s.store.mark_failed(Path(f"part-inspection-1.1.0-{d.digest[:12]}"), reason)
    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))
    mgr._write_pending(d)
    downloads = []

    async def download(dd):  # the fleet's download: never asked for
        downloads.append(dd.version)
        raise ConnectionError("no fleet in this test")

    mgr.download = download
    try:
        await mgr.on_desired(SimpleNamespace(desired=[d], generation=7))  # the fleet never heard: unchanged
        assert "vision" not in mgr.busy, "the version rolled back is being installed again"
        async with asyncio.timeout(10):
            await asyncio.gather(*list(mgr._tasks))
        assert downloads == [] and s.version == "1.0.0"
        assert d.digest in mgr.refused
        (step,) = [x for x in mgr.steps if x["deployment"] == "dep1"]
        assert step["step"] == "failed" and not step["ok"] and reason in step["reason"], step
        assert (data / "deployments" / "vision.json").exists()  # reported again until the fleet has it
    finally:
        await mgr.stop()
        await s.stop()


@pytest.mark.parametrize("why", ["health", "fleet"])
async def test_a_version_rolled_back_before_a_restart_is_not_installed_again_with_no_deployment_pending(
    tmp_path, pkgs, why
):
    """No pending deployment left to settle (the fleet acknowledged the rolled_back, or the full disk refused the
    pending file): the fleet's desired state still names the version (a rollout not yet halted, or one that never
    heard). The store's record refuses it, told once; the version the fleet itself rolled back is not (a later
    rollout of it may try it again)."""
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet")
    data = tmp_path / "data"
    d = SimpleNamespace(
        slot="vision",
        package="part-inspection",
        version="1.1.0",
        digest="c0ffee" * 10 + "abcd",
        deployment_id="dep1",
        rollback=False,
    )
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])  # a start: nothing in memory of the run before
    await s.start()
    reason = (
        "health check failed: error rate 40.0% > 5.0%"
        if why == "health"
        else "the fleet rolled part-inspection 1.1.0 back (deployment dep0)"
    )
    s.store.mark_failed(Path(f"part-inspection-1.1.0-{d.digest[:12]}"), reason)
    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))
    downloads = []

    async def download(dd):  # the fleet's download
        downloads.append(dd.version)
        raise ConnectionError("no fleet in this test")

    mgr.download = download
    try:
        for generation in (7, 8):  # (told once, not at every heartbeat)
            await mgr.on_desired(SimpleNamespace(desired=[d], generation=generation))
            async with asyncio.timeout(10):
                await asyncio.gather(*list(mgr._tasks))
        if why == "fleet":
            assert downloads == ["1.1.0"] and d.digest not in mgr.refused
            return
        # formerly downloaded and installed again: the version the health check rejected served once more
        assert downloads == [] and s.version == "1.0.0" and d.digest in mgr.refused
        (step,) = [x for x in mgr.steps if x["deployment"] == "dep1"]
        assert step["step"] == "failed" and not step["ok"], step
        assert "was rolled back or refused here before the agent restarted" in step["reason"], step
        assert reason in step["reason"], step
    finally:
        await mgr.stop()
        await s.stop()
