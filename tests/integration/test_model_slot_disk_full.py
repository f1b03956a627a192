"""A slot's folder (``<data_dir>/models/<slot>/``) on a real small disk (tmpfs): a package that the disk
cannot hold while it is unpacked is no refusal of the package. Nothing of it is kept, the reason says the
disk is full (with the folder and the sizes), the manager tries it again with backoff, and once there is
room it is installed."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pytest

from devices.base import Frame
from edge_agent.models import slot as slot_module
from edge_agent.models.config import HealthConfig, ModelConfig
from edge_agent.models.manager import ModelManager
from edge_agent.models.slot import ModelSlot
from tests.support.models import make_keypair, make_package
from tests.support.peers import small_tmpfs
from tests.support.waits import until


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkgs")
    key, pub = make_keypair(tmp / "keys")
    return {
        "v1": make_package(tmp, kind="vision", version="1.0.0", key=key, bias=6.0),
        "v2": make_package(tmp, kind="vision", version="1.1.0", key=key, seed=2, bias=6.0),
        "pub": pub,
    }


@pytest.fixture
def small_slot_disk(tmp_path):
    """``<data_dir>/models/vision`` on a 1-MiB tmpfs (needs root)."""
    with small_tmpfs(tmp_path / "data" / "models" / "vision", "1m") as root:
        yield root


def _delivered(mgr: ModelManager, pkg, deployment_id: str) -> SimpleNamespace:
    """A deployment of ``pkg`` (part-inspection 1.1.0) to the vision slot whose download, as the fleet's ends,
    puts the package in the slot's staging folder."""

    async def download(d):
        dest = mgr.staging / d.slot / f"{d.package}-{d.version}.edgepkg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pkg, dest)
        return dest

    mgr.download = download  # type: ignore[method-assign]
    return SimpleNamespace(
        slot="vision",
        package="part-inspection",
        version="1.1.0",
        digest=hashlib.sha256(pkg.read_bytes()).hexdigest(),
        deployment_id=deployment_id,
        rollback=False,
    )


async def test_a_full_slot_disk_is_retried_not_refused_and_leaves_nothing(tmp_path, pkgs, small_slot_disk):
    root = small_slot_disk
    health = HealthConfig(window_s=0.2, min_items=1)
    s = ModelSlot(
        "vision",
        ModelConfig(
            package=str(pkgs["v1"]), engine="onnxruntime", version_policy="follow_fleet", health=health
        ),
        tmp_path / "data",
        [pkgs["pub"]],
    )
    await s.start()
    before = sorted(p.name for p in root.iterdir())
    size = pkgs["v2"].stat().st_size
    filler = root / "filler"  # (the disk's other tenants)
    filler.write_bytes(b"\0" * (shutil.disk_usage(root).free - size // 3))

    mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=tmp_path / "data"))
    mgr.download_backoff_s = 0.05

    d = _delivered(mgr, pkgs["v2"], "dep1")

    async def reconcile():
        await mgr.on_desired(SimpleNamespace(desired=[d], generation=1))
        await asyncio.gather(*list(mgr._tasks))

    try:
        await reconcile()
        step = mgr.steps[-1]
        assert step["step"] == "install_retry" and step["ok"], step
        assert s.version == "1.0.0" and s.last_outcome is not None and s.last_outcome.retry
        assert "not enough free disk in" in step["reason"] and str(root) in step["reason"], step
        assert f"takes about {size} bytes" in step["reason"], step
        assert d.digest not in mgr.refused  # a full disk is not the package's fault
        assert sorted(p.name for p in root.iterdir()) == sorted([*before, "filler"])  # nothing half-written
        assert not (tmp_path / "data" / "deployments" / "vision.json").exists()

        filler.unlink()  # space returns: the same desired state installs it
        await asyncio.sleep(0.1)  # (its backoff)
        await mgr.on_desired(SimpleNamespace(desired=[d], generation=2))
        async with asyncio.timeout(30):  # install, golden test and health window: slow on a loaded CI machine
            while s.version != "1.1.0":
                await asyncio.sleep(0.02)
            img = np.zeros((64, 64, 3), np.uint8)
            await asyncio.to_thread(s.infer, Frame("cam", 1, time.time(), img))  # its health window's item
            await asyncio.gather(*list(mgr._tasks))
        assert mgr.steps[-1]["step"] == "healthy", mgr.steps[-3:]
    finally:
        await mgr.stop()
        await s.stop()


def _watched_config(pkgs) -> ModelConfig:
    return ModelConfig(
        package=str(pkgs["v1"]),
        engine="onnxruntime",
        version_policy="follow_fleet",
        health=HealthConfig(window_s=0.2, min_items=1),
    )


async def _candidate_on_a_full_disk(tmp_path, pkgs, root, events: list) -> tuple[ModelSlot, object]:
    """v1 serving, v2 swapped in and watched, then the disk's other tenants fill it."""
    s = ModelSlot("vision", _watched_config(pkgs), tmp_path / "data", [pkgs["pub"]], on_event=events.append)
    await s.start()
    assert (await s.swap(pkgs["v2"])).ok and s.state == "watching"
    filler = root / "filler"
    with contextlib.suppress(OSError):
        filler.write_bytes(b"\0" * (shutil.disk_usage(root).free + 4096))
    return s, filler


async def test_a_candidate_judged_while_the_disk_is_full_is_kept_reported_and_recorded_once_there_is_room(
    tmp_path, pkgs, small_slot_disk, monkeypatch, caplog
):
    monkeypatch.setattr(slot_module, "STATE_RETRY_S", 0.05)
    root = small_slot_disk
    events: list = []
    s, filler = await _candidate_on_a_full_disk(tmp_path, pkgs, root, events)
    # an OpenVINO cache of the replaced version (the slot's engine here is ONNX Runtime; its prune is the same)
    s.config = s.config.model_copy(update={"openvino_cache_dir": str(tmp_path / "ov-cache")})
    old_folder = json.loads(s.store.state_path.read_text())["previous"]
    cached = tmp_path / "ov-cache" / "vision"
    (cached / old_folder).mkdir(parents=True)
    try:
        img = np.zeros((64, 64, 3), np.uint8)
        await asyncio.to_thread(s.infer, Frame("cam", 1, time.time(), img))  # its health window's item
        # formerly the watch died on the write of state.json: 'watching' for ever, the deployment never reported
        await until(lambda: s.state == "active", what="the candidate kept")
        assert "swap_kept" in [e["kind"] for e in events]
        said = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
        assert len(said) == 1 and str(s.store.state_path) in said[0] and "No space left" in said[0], said
        assert (
            s.store.state()["probation"] is None
        )  # what the slot decided, while the disk holds the old file

        assert any(p.name.startswith("part-inspection-1.0.0-") for p in root.iterdir())  # the file names it
        # so is its OpenVINO cache kept (formerly removed: a restart from the file compiled it again)
        assert [p.name for p in cached.iterdir()] == [old_folder]
        filler.unlink()
        await until(lambda: s.store.unwritten is None, what="state.json written once there is room")
        await until(
            lambda: not any(p.name.startswith("part-inspection-1.0.0-") for p in root.iterdir()),
            what="the replaced version's folder removed once state.json no longer names it",
        )
        await until(lambda: not any(cached.iterdir()), what="its OpenVINO cache removed with it")
    finally:
        await s.stop()
    st = json.loads(s.store.state_path.read_text())
    assert st["current"].startswith("part-inspection-1.1.0-") and st["probation"] is None
    assert not (root / "state.tmp").exists()
    again = ModelSlot("vision", _watched_config(pkgs), tmp_path / "data", [pkgs["pub"]])  # a restart
    await again.start()
    try:
        assert again.version == "1.1.0" and again.state == "active"  # kept: no health window again
    finally:
        await again.stop()


class _SeenLock(asyncio.Lock):
    """The slot's swap lock, noting whether state.json was still unwritten each time the slot asks if it is held."""

    def __init__(self, store) -> None:
        super().__init__()
        self.store, self.asked_written = store, 0

    def locked(self) -> bool:
        self.asked_written += self.store.unwritten is None
        return super().locked()


async def test_the_folders_the_former_file_named_go_once_it_is_written_even_if_a_swap_ran_then(
    tmp_path, pkgs, small_slot_disk, monkeypatch
):
    """The prune after the retry's write of state.json ran only if no swap held the lock at that moment; with one
    in flight then (an install) it was dropped, and the folder the former file named stayed until a restart:
    room a full disk's next install lacked, and that refusal (no_space) prunes nothing."""
    monkeypatch.setattr(slot_module, "STATE_RETRY_S", 0.05)
    root = small_slot_disk
    s, filler = await _candidate_on_a_full_disk(tmp_path, pkgs, root, [])
    stale = lambda: [p.name for p in root.iterdir() if p.name.startswith("part-inspection-1.0.0-")]  # noqa: E731
    try:
        await asyncio.to_thread(s.infer, Frame("cam", 1, time.time(), np.zeros((64, 64, 3), np.uint8)))
        await until(lambda: s.state == "active", what="the candidate kept")
        assert s.store.unwritten is not None and stale()  # the file on disk still names 1.0.0
        s._swap_lock = lock = _SeenLock(s.store)
        await lock.acquire()  # a swap in flight (its install holds the lock)
        try:
            filler.unlink()
            await until(lambda: lock.asked_written, what="state.json written while a swap holds the lock")
            assert stale()  # (nothing pruned beside the install)
        finally:
            lock.release()  # the swap ends, say refused at verify (which prunes nothing)
        # formerly never: the prune was due only at the moment of the write
        await until(lambda: not stale(), what="the folder the former file named removed once no swap runs")
    finally:
        await s.stop()


async def test_a_rollback_on_a_full_disk_is_recorded_once_there_is_room_and_a_restart_serves_the_previous(
    tmp_path, pkgs, small_slot_disk, monkeypatch
):
    monkeypatch.setattr(slot_module, "STATE_RETRY_S", 0.05)
    root = small_slot_disk
    events: list = []
    s, filler = await _candidate_on_a_full_disk(tmp_path, pkgs, root, events)
    try:
        out = await s.rollback(
            "health check failed: asked by the test", kind="health"
        )  # raised OSError after the switch
        assert out.stage == "rolled_back" and s.version == "1.0.0" and s.state == "active"
        assert "rolled_back" in [e["kind"] for e in events]
        filler.unlink()
        await until(lambda: s.store.unwritten is None, what="state.json written once there is room")
    finally:
        await s.stop()
    again = ModelSlot("vision", _watched_config(pkgs), tmp_path / "data", [pkgs["pub"]])
    await again.start()
    try:
        assert again.version == "1.0.0"  # formerly the rolled-back candidate served again after the restart
    finally:
        await again.stop()


async def test_a_deployment_that_cannot_be_recorded_on_a_full_disk_is_installed_and_reported_all_the_same(
    tmp_path, pkgs, caplog
):
    with small_tmpfs(tmp_path / "data" / "deployments", "64k") as pending:
        s = ModelSlot("vision", _watched_config(pkgs), tmp_path / "data", [pkgs["pub"]])
        await s.start()
        with contextlib.suppress(OSError):
            (pending / "filler").write_bytes(b"\0" * (shutil.disk_usage(pending).free + 4096))
        mgr = ModelManager({"vision": s}, SimpleNamespace(data_dir=tmp_path / "data"))

        d = _delivered(mgr, pkgs["v2"], "dep-full")
        try:
            await mgr.on_desired(SimpleNamespace(desired=[d], generation=1))
            async with asyncio.timeout(30):
                while s.version != "1.1.0":  # formerly the install task died on the pending file: v1 for good
                    await asyncio.sleep(0.02)
                img = np.zeros((64, 64, 3), np.uint8)
                await asyncio.to_thread(
                    s.infer, Frame("cam", 1, time.time(), img)
                )  # its health window's item
                await asyncio.gather(*list(mgr._tasks))
            assert mgr.steps[-1]["step"] == "healthy", mgr.steps[-3:]
            said = [r.getMessage() for r in caplog.records if "cannot record deployment" in r.getMessage()]
            assert len(said) == 1 and "dep-full" in said[0] and str(pending / "vision.json") in said[0], said
            assert sorted(p.name for p in pending.iterdir()) == ["filler"]
        finally:
            await mgr.stop()
            await s.stop()


@pytest.mark.parametrize("configured", [True, False], ids=["configured-package", "fleet-only"])
async def test_a_restart_before_the_full_disk_has_room_serves_a_folder_state_json_names(
    tmp_path, pkgs, small_slot_disk, configured
):
    """A rollback whose state.json the full disk refused leaves the file naming the candidate; the rollback's
    prune removed that folder, and a restart before the disk had room found state.json naming a folder that was
    gone: it installed the configured package again on the full disk, or, with none configured, did not start
    (no model at all). The store now keeps every folder the file on disk names while its new state is unwritten."""
    root = small_slot_disk
    s, filler = await _candidate_on_a_full_disk(tmp_path, pkgs, root, [])
    try:
        await s.rollback("health check failed: asked by the test", kind="health")
        assert s.version == "1.0.0" and s.store.unwritten is not None  # the disk refused the rollback's state
    finally:
        await s.stop()
    on_disk = json.loads(s.store.state_path.read_text())["current"]
    assert (root / on_disk).is_dir(), f"state.json names {on_disk}: {sorted(p.name for p in root.iterdir())}"
    cfg = (
        _watched_config(pkgs)
        if configured
        else ModelConfig(name="part-inspection", engine="onnxruntime", version_policy="follow_fleet")
    )
    again = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])  # a restart, the disk still full
    await again.start()  # formerly, fleet-only: SlotError "the installed folder is missing", no model
    try:
        img = np.zeros((64, 64, 3), np.uint8)
        # formerly the restart resumed the rolled-back candidate the file still names (its probation open) and
        # erased its rollback mark: the model the health check rejected served again for a whole new window
        assert again.version == "1.0.0"
        assert again.state == "active" and (root / ".rolled-back" / on_disk).exists()
        assert again.infer(Frame("cam", 1, time.time(), img)).version == again.version
    finally:
        await again.stop()
    assert filler.exists()
