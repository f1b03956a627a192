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
    return {
        "v1": make_package(tmp, kind="vision", version="1.0.0", key=key, seed=1),
        "v2": make_package(tmp / "v2", kind="vision", version="1.1.0", key=key, seed=2),
        "pub": pub,
    }


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
    reason = "health check failed: NG rate 92% in the health window against 3% before the swap"
    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))
    mgr._write_pending(d)  # (written before the swap, which the store then records as failed)
    s.store.mark_failed(Path(f"part-inspection-1.1.0-{d.digest[:12]}"), reason)
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
        # the fleet acknowledged it, and the agent restarts again: the health check's verdict for dep1 still holds
        (data / "deployments" / "vision.json").unlink()
        await mgr.stop()
        mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))
        mgr.download = download
        await mgr.on_desired(SimpleNamespace(desired=[d], generation=8))
        async with asyncio.timeout(10):
            await asyncio.gather(*list(mgr._tasks))
        assert downloads == [] and s.version == "1.0.0"
        (step,) = [x for x in mgr.steps if x["deployment"] == "dep1"]
        assert "rolled back by the health check here for this deployment" in step["reason"], step
    finally:
        await mgr.stop()
        await s.stop()


def _desired(deployment="dep1", rollback=False, digest="c0ffee" * 10 + "abcd"):
    return SimpleNamespace(
        slot="vision",
        package="part-inspection",
        version="1.1.0",
        digest=digest,
        deployment_id=deployment,
        rollback=rollback,
    )


async def test_a_version_rolled_back_by_the_health_check_is_held_for_that_deployment_only(tmp_path, pkgs):
    """No pending deployment left to settle (the fleet acknowledged the rolled_back, or the full disk refused the
    pending file): the fleet's desired state still names the version for the same deployment (a rollout not yet
    halted, or one that never heard). The manager's record of the health check's verdict declines that deployment,
    told once; a new deployment of the version, or an admin's rollback to it, asks again and installs it (was:
    skipped without a word, the deployment left assigned for good)."""
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet")
    data = tmp_path / "data"
    d = _desired()
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])
    await s.start()
    reason = "health check failed: error rate 40.0% > 5.0%"
    downloads = []

    async def download(dd):  # the fleet's download
        downloads.append(dd.deployment_id)
        raise ConnectionError("no fleet in this test")

    # the run before: the health check rolled it back with dep1 pending; that outcome was settled, the fleet
    # acknowledged it (the pending file is gone)
    before = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))
    before.download = download
    before._write_pending(d)
    s.store.mark_failed(Path(f"part-inspection-1.1.0-{d.digest[:12]}"), reason)
    await before.on_desired(SimpleNamespace(desired=[d], generation=6))
    async with asyncio.timeout(10):
        await asyncio.gather(*list(before._tasks))
    assert downloads == [] and d.digest in before.refused
    # in that run too, a new deployment of it asks again (was: skipped without a word, assigned for good)
    await before.on_desired(SimpleNamespace(desired=[_desired("dep0")], generation=7))
    async with asyncio.timeout(10):
        await asyncio.gather(*list(before._tasks))
    assert downloads == ["dep0"], downloads
    downloads.clear()
    await before.stop()
    (data / "deployments" / "vision.json").unlink()
    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))  # a restart
    mgr.download = download
    try:
        for generation in (7, 8):  # (told once, not at every heartbeat)
            await mgr.on_desired(SimpleNamespace(desired=[d], generation=generation))
            async with asyncio.timeout(10):
                await asyncio.gather(*list(mgr._tasks))
        assert downloads == [] and s.version == "1.0.0"
        (step,) = [x for x in mgr.steps if x["deployment"] == "dep1"]
        assert step["step"] == "failed" and not step["ok"], step
        # the admin asks again: a new deployment, then an admin's rollback to it
        for again in (_desired("dep2"), _desired("dep3:rollback", rollback=True)):
            mgr.retry_at.clear()  # (the failed download's backoff: not what is tested)
            await mgr.on_desired(SimpleNamespace(desired=[again], generation=9))
            async with asyncio.timeout(10):
                await asyncio.gather(*list(mgr._tasks))
        assert downloads == ["dep2", "dep3:rollback"], downloads  # (were skipped without a word)
        assert "rolled back by the health check here for this deployment" in step["reason"], step
        assert reason in step["reason"], step
    finally:
        await mgr.stop()
        await s.stop()


@pytest.mark.parametrize("why", ["fleet", "memory", "crash loop", "damaged copy"])
async def test_a_refusal_for_a_passing_reason_is_not_held_after_a_restart(tmp_path, pkgs, why):
    """The store's ``failed`` also records refusals that say nothing for good about the package: the fleet's own
    rollback, a load short of memory at that moment, a crash loop (two power cuts make one), an installed copy
    that failed its re-check at the start (set aside). After a restart the fleet's desired state installs the
    version again (was: refused for good, reported "rolled back or refused here before the agent restarted")."""
    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet")
    data = tmp_path / "data"
    d = _desired()
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])
    await s.start()
    folder = f"part-inspection-1.1.0-{d.digest[:12]}"
    reason = {
        "fleet": "the fleet rolled part-inspection 1.1.0 back (deployment dep0)",
        "memory": "the model needs 900 MB at its peak, more than the 1 MB this machine can spare now",
        "crash loop": "the agent ended without an orderly stop 2 times inside the candidate's health window (a "
        "crash loop, which the candidate may cause); the previous model was restored",
        "damaged copy": f"package {folder}: model.onnx digest mismatch (expected 2af4531d2c95…, got ff50…): "
        "altered or corrupted",
    }[why]
    if why == "damaged copy":
        s.store.set_aside(folder, reason)
    else:
        s.store.mark_failed(Path(folder), reason)
    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))
    downloads = []

    async def download(dd):  # the fleet's download
        downloads.append(dd.version)
        raise ConnectionError("no fleet in this test")

    mgr.download = download
    try:
        await mgr.on_desired(SimpleNamespace(desired=[d], generation=7))
        async with asyncio.timeout(10):
            await asyncio.gather(*list(mgr._tasks))
        assert downloads == ["1.1.0"] and d.digest not in mgr.refused
        assert not [x for x in mgr.steps if x["step"] == "failed"], mgr.steps
    finally:
        await mgr.stop()
        await s.stop()


async def test_a_version_refused_in_the_run_is_installed_again_for_a_new_deployment_or_an_admins_rollback(
    tmp_path, pkgs, monkeypatch
):
    """One std::bad_alloc at the load of 1.1.0 (another process's peak) refuses it for deployment depA: that
    deployment is not tried again. The admin's new deployment of it, and an admin's rollback to it, ask again and
    are installed (were: reported failed "was refused here: unexpected MemoryError" until the agent restarted)."""
    import shutil

    from edge_agent.models import slot as slot_mod
    from model_packager import package_digest

    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet")
    data = tmp_path / "data"
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])
    await s.start()
    real, calls = slot_mod.select, []

    def short_once(*a, **kw):  # short of memory once
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("std::bad_alloc")
        return real(*a, **kw)

    monkeypatch.setattr(slot_mod, "select", short_once)
    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))
    downloads = []

    async def download(dd):  # the fleet's download: the package's bytes
        downloads.append(dd.deployment_id)
        p = data / "staging" / "vision" / f"{len(downloads)}.edgepkg"
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pkgs["v2"], p)
        return p

    async def run(d, swapped=False):
        await mgr.on_desired(SimpleNamespace(desired=[d], generation=len(downloads)))
        async with asyncio.timeout(30):
            if not swapped:
                await asyncio.gather(*list(mgr._tasks))
                return
            while not (s.version == "1.1.0" and s.state == "watching") and mgr._tasks:
                await asyncio.sleep(0.05)
        for t in list(mgr._tasks):  # (its health window: not what is tested)
            t.cancel()
        await asyncio.gather(*list(mgr._tasks), return_exceptions=True)

    mgr.download = download
    digest = package_digest(pkgs["v2"])
    try:
        await run(_desired("depA", digest=digest))
        assert s.version == "1.0.0" and digest in mgr.refused
        (step,) = [x for x in mgr.steps if x["deployment"] == "depA" and x["step"] == "failed"]
        assert "MemoryError" in step["reason"], step
        await run(_desired("depA", digest=digest))  # the same deployment: not tried again
        assert downloads == ["depA"], downloads
        await run(_desired("depB", digest=digest), swapped=True)  # memory back; the admin's new deployment
        assert downloads == ["depA", "depB"] and s.version == "1.1.0", (downloads, mgr.steps[-3:])
        assert not [x for x in mgr.steps if x["deployment"] == "depB" and x["step"] == "failed"], mgr.steps
        await s.rollback(
            "the fleet rolled part-inspection 1.1.0 back", kind="admin"
        )  # (back to 1.0.0 for the next ask)
        await run(
            _desired("depR:rollback", rollback=True, digest=digest), swapped=True
        )  # an admin's rollback to it
        assert downloads[-1] == "depR:rollback" and s.version == "1.1.0", (downloads, mgr.steps[-3:])
    finally:
        await mgr.stop()
        await s.stop()


async def _swapped_in(s, mgr, d, generation):
    """The manager installs ``d`` (its download hands over the package); returns once the slot watches it."""
    await mgr.on_desired(SimpleNamespace(desired=[d], generation=generation))
    async with asyncio.timeout(30):
        while not (s.version == d.version and s.state == "watching"):
            assert mgr._tasks, mgr.steps[-3:]
            await asyncio.sleep(0.02)


async def test_a_second_rollback_in_the_same_words_is_that_deployments_outcome_after_a_restart(
    tmp_path, pkgs
):
    """Deployment A of 1.1.0 rolled back by the health check; the admin's new deployment B of it is rolled back
    too, in the same words (a broken model fails the same way each time), and the agent dies within the second
    before the manager records it. State.json's entry for the folder was told apart from A's by its text: equal,
    B's swap read as cut short before its switch, and the restart installed and served 1.1.0 again for one more
    health window. Now A's entry is dropped when B is recorded: B is reported failed, not installed again."""
    import shutil

    from model_packager import package_digest

    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet")
    data = tmp_path / "data"
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])
    await s.start()
    digest = package_digest(pkgs["v2"])
    reason = "health check failed: NaN/Inf outputs in 100.0% of inferences > 1.0%"
    downloads = []

    async def download(dd):  # the fleet's download: the package's bytes
        downloads.append(dd.deployment_id)
        p = data / "staging" / "vision" / f"{len(downloads)}.edgepkg"
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pkgs["v2"], p)
        return p

    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))
    mgr.download = download
    pending = data / "deployments" / "vision.json"
    try:
        await _swapped_in(s, mgr, _desired("depA", digest=digest), 1)
        await s.rollback(reason, kind="health")  # A: the health check's verdict, recorded and acknowledged
        async with asyncio.timeout(10):
            await asyncio.gather(*list(mgr._tasks))
        assert [x["step"] for x in mgr.steps if x["deployment"] == "depA"][-1] == "rolled_back"
        pending.unlink()  # (the fleet has it)

        async def dies_first(slot, d):  # the agent dies before the manager sees B's rollback
            await asyncio.Event().wait()

        mgr._watch = dies_first
        await _swapped_in(s, mgr, _desired("depB", digest=digest), 2)
        await s.rollback(reason, kind="health")  # B: rolled back in the same words
        assert "depB" in pending.read_text()
    finally:
        await mgr.stop()
        await s.stop()
    downloads.clear()
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])  # the restart
    await s.start()
    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))

    async def no_fleet(dd):
        downloads.append(dd.deployment_id)
        raise ConnectionError("no fleet in this test")

    mgr.download = no_fleet
    try:
        await mgr.on_desired(SimpleNamespace(desired=[_desired("depB", digest=digest)], generation=3))
        async with asyncio.timeout(10):
            await asyncio.gather(*list(mgr._tasks))
        assert downloads == [] and s.version == "1.0.0", (
            downloads,
            mgr.steps,
        )  # (was: ['depB'], installed again)
        (step,) = [x for x in mgr.steps if x["deployment"] == "depB"]
        assert step["step"] == "failed" and reason in step["reason"], step
    finally:
        await mgr.stop()
        await s.stop()


async def test_a_rollback_cut_short_after_its_first_state_write_is_reported_failed_after_the_restart(
    tmp_path, pkgs
):
    """The health check rolls 1.1.0 back and the agent dies right after the first write of state.json the rollback
    makes (a kill -9, a power cut), before the manager recorded the rollback. The rollback wrote the previous model
    current, then, in a second write, the verdict on 1.1.0: cut between the two, the restart found no verdict, took
    the deployment's swap for one cut short before its switch and installed and served 1.1.0 again. Now both are one
    write: the deployment is reported failed with the health check's reason, not installed again."""
    import shutil

    from model_packager import package_digest

    cfg = ModelConfig(package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet")
    data = tmp_path / "data"
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])
    await s.start()
    digest = package_digest(pkgs["v2"])
    reason = "health check failed: error rate 40.0% > 5.0%"

    async def download(dd):  # the fleet's download: the package's bytes
        p = data / "staging" / "vision" / "1.edgepkg"
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pkgs["v2"], p)
        return p

    async def dies_first(slot, d):  # the agent dies before the manager sees the rollback
        await asyncio.Event().wait()

    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))
    mgr.download, mgr._watch = download, dies_first
    written = s.store._write_state_file
    writes: list[dict] = []

    def first_only(state):  # the rollback's first write reaches the disk; the agent is dead before any other
        writes.append(state)
        if len(writes) == 1:
            written(state)

    try:
        await _swapped_in(s, mgr, _desired("dep1", digest=digest), 1)
        s.store._write_state_file = first_only
        await s.rollback(reason, kind="health")
        assert writes and writes[0]["current"].startswith("part-inspection-1.0.0-"), writes
    finally:
        await mgr.stop()
        await s.stop()
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])  # the restart
    await s.start()
    assert s.version == "1.0.0"
    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))
    downloads = []

    async def no_fleet(dd):
        downloads.append(dd.deployment_id)
        raise ConnectionError("no fleet in this test")

    mgr.download = no_fleet
    try:
        await mgr.on_desired(SimpleNamespace(desired=[_desired("dep1", digest=digest)], generation=2))
        async with asyncio.timeout(10):
            await asyncio.gather(*list(mgr._tasks))
        assert downloads == [] and s.version == "1.0.0", (
            downloads,
            mgr.steps,
        )  # (was: ['dep1'], installed again)
        (step,) = [x for x in mgr.steps if x["deployment"] == "dep1"]
        assert step["step"] == "failed" and reason in step["reason"], step
    finally:
        await mgr.stop()
        await s.stop()


async def test_no_new_deployment_installs_beside_a_health_window_resumed_after_a_restart(tmp_path, pkgs):
    """An orderly restart inside 1.1.0's health window resumes the window, with no install task in the manager.
    The fleet's next deployment (1.2.0) was installed beside it: the resumed window's verdict, due during that swap,
    rolled back 1.2.0 in its place, and the deployment was reported rolled_back with 1.1.0's reason and held. The
    slot watching is now busy for the manager: the new deployment waits for the window's outcome; an admin's
    rollback still goes through."""
    from edge_agent.models.config import HealthConfig
    from model_packager import package_digest

    cfg = ModelConfig(
        package=str(pkgs["v1"]),
        engine="onnxruntime",
        version_policy="follow_fleet",
        health=HealthConfig(window_s=60.0, min_items=10_000),
    )
    data = tmp_path / "data"
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])
    await s.start()
    dep_a = _desired("depA", digest=package_digest(pkgs["v2"]))
    ModelManager({"vision": s}, SimpleNamespace(data_dir=data))._write_pending(dep_a)
    assert (await s.swap(pkgs["v2"])).ok and s.state == "watching"
    await s.stop()  # an orderly stop inside the window
    s = ModelSlot("vision", cfg, data, [pkgs["pub"]])  # the restart
    await s.start()
    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=data))
    downloads = []

    async def download(dd):  # the fleet's download
        downloads.append(dd.deployment_id)
        raise ConnectionError("no fleet in this test")

    mgr.download = download
    try:
        assert s.version == "1.1.0" and s.state == "watching" and not mgr.busy  # resumed
        dep_c = SimpleNamespace(
            **{**vars(_desired("depC", digest="c0ffee" * 10 + "abcd")), "version": "1.2.0"}
        )
        down = SimpleNamespace(**{**vars(_desired("depD", digest="d0d0" * 16)), "version": "1.0.0"})
        for _ in range(2):  # two heartbeats
            await mgr.on_desired(SimpleNamespace(desired=[dep_c], generation=7))
        async with asyncio.timeout(10):
            await asyncio.gather(*list(mgr._tasks))
        assert downloads == [], downloads  # formerly downloaded and installed beside the resumed window
        # the fleet hears why, once (it showed the target pending, with no reason, while the line was stopped)
        said = [(x["deployment"], x["step"], x["ok"]) for x in mgr.steps]
        assert said == [("depC", "waiting", True)], said
        assert (
            "health window of 1.1.0 resumed after a restart (0 of 10000 inferences)" in mgr.steps[0]["reason"]
        )
        await mgr.on_desired(SimpleNamespace(desired=[down], generation=9))  # a downgrade: declined at once
        async with asyncio.timeout(10):
            await asyncio.gather(*list(mgr._tasks))
        assert mgr.steps[-1]["deployment"] == "depD" and mgr.steps[-1]["step"] == "failed", mgr.steps
        assert "downgrade from 1.1.0 to 1.0.0 refused" in mgr.steps[-1]["reason"]
        assert (data / "deployments" / "vision.json").exists()  # depA's outcome still to settle
        back = _desired("depR:rollback", rollback=True, digest=package_digest(pkgs["v1"]))
        back.version = "1.0.0"
        await mgr.on_desired(SimpleNamespace(desired=[back], generation=8))
        async with asyncio.timeout(10):
            await asyncio.gather(*list(mgr._tasks))
        assert downloads == ["depR:rollback"], downloads
    finally:
        await mgr.stop()
        await s.stop()


async def test_a_window_kept_while_a_swap_switches_leaves_that_swap_what_serves(tmp_path, pkgs, monkeypatch):
    """A health window that keeps its candidate while a swap (an admin's rollback) switches during the keep's
    state.json write: the keep dropped the model the swap kept to roll back to and said swap_kept for a version that
    no longer served. Review /work/notes56/review_slot2 LOW 3."""
    from edge_agent.models.config import HealthConfig

    cfg = ModelConfig(
        package=str(pkgs["v1"]),
        engine="onnxruntime",
        version_policy="follow_fleet",
        health=HealthConfig(window_s=0.3, min_items=1),
    )
    events: list = []
    s = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]], on_event=events.append)
    await s.start()
    real = s.store.end_probation

    def end_probation(root):  # the swap's switch lands inside this write
        real(root)
        s._active, s._previous = s._previous, s._active

    monkeypatch.setattr(s.store, "end_probation", end_probation)
    try:
        assert (await s.swap(pkgs["v2"])).ok and s.state == "watching"
        s._active.health.n = 1  # the window's one inference
        async with asyncio.timeout(10):
            await s._watch
        assert s.version == "1.0.0" and s._previous is not None  # formerly None: nothing to roll back to
        assert "swap_kept" not in [e["kind"] for e in events]  # formerly said of 1.1.0, no longer serving
    finally:
        await s.stop()
