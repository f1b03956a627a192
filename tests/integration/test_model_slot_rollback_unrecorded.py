"""A rollback on a full disk, across a restart: the slot's folder on a real small file system (tmpfs), real signed
packages, the slot's install child and ONNX Runtime.

- A disk out of inodes (or blocks) refused the rollback's mark (``.rolled-back/<folder>``, made at the rollback) and
  its state.json alike: the mark lived in memory only, and a restart found state.json naming the candidate on
  probation and served the version rolled back again for a whole new window. The mark's placeholder is now made while
  the disk has room and renamed into the mark, which needs no free space.
- A restart after a rollback whose state.json the full disk refused told the cloud a second ``rolled_back``.
- A mark no disk takes (read-only) was one WARNING in the log: now a ``rollback_unrecorded`` event and /status,
  and its end once written."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_agent.models import slot as slot_module
from edge_agent.models.config import HealthConfig, ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.models.store import ROLLED_BACK
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


def _slot(tmp_path: Path, pkgs, events: list) -> ModelSlot:
    cfg = ModelConfig(
        package=str(pkgs["v1"]),
        engine="onnxruntime",
        version_policy="follow_fleet",
        health=HealthConfig(window_s=30, min_items=1),
    )
    return ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]], on_event=events.append)


def _fill(root: Path, inodes: bool) -> None:
    """The disk's other tenants take every inode (many small files), or every block."""
    if inodes:
        n = 0
        with contextlib.suppress(OSError):
            while True:
                (root / f"sample-{n}").write_bytes(b"")
                n += 1
    else:
        with contextlib.suppress(OSError):
            (root / "filler").write_bytes(b"\0" * (shutil.disk_usage(root).free + 4096))


@pytest.mark.parametrize("full", ["inodes", "blocks"])
async def test_a_rollback_on_a_full_disk_is_not_served_again_after_a_restart_nor_told_twice(
    tmp_path, pkgs, full
):
    with small_tmpfs(tmp_path / "data" / "models" / "vision", "2m,nr_inodes=64") as root:
        first: list = []
        s = _slot(tmp_path, pkgs, first)
        await s.start()
        try:
            assert (await s.swap(pkgs["v2"])).ok and s.state == "watching"
            _fill(root, inodes=full == "inodes")
            await s.rollback("health check failed: asked by the test", kind="health")
            assert s.version == "1.0.0" and s.store.unwritten is not None  # state.json refused
        finally:
            await s.stop()
        assert [e["kind"] for e in first].count("rolled_back") == 1
        candidate = next(p.name for p in root.iterdir() if p.name.startswith("part-inspection-1.1.0-"))

        again: list = []
        s2 = _slot(tmp_path, pkgs, again)  # a restart, the disk still full
        await s2.start()
        try:
            assert s2.version == "1.0.0" and s2.state == "active"  # formerly 1.1.0, watched again (inodes)
            assert s2.last_outcome is not None and s2.last_outcome.stage == "rolled_back"
            assert s2.last_outcome.from_version == "1.1.0"  # (what settles its deployment, if still pending)
            # formerly a second rolled_back (blocks): a fleet admin read two rollbacks of one
            assert [e["kind"] for e in again if e["kind"] == "rolled_back"] == []
            # formerly, out of inodes, the mark was refused with state.json and lived in memory only
            assert (root / ROLLED_BACK / candidate).is_file()
        finally:
            await s2.stop()


async def test_a_rollback_mark_no_disk_takes_is_said_in_an_event_and_on_status_until_it_is_written(
    tmp_path, pkgs, monkeypatch
):
    monkeypatch.setattr(slot_module, "STATE_RETRY_S", 0.05)
    with small_tmpfs(tmp_path / "data" / "models" / "vision", "2m") as root:
        events: list = []
        s = _slot(tmp_path, pkgs, events)
        await s.start()
        try:
            assert (await s.swap(pkgs["v2"])).ok
            subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)  # a disk gone read-only
            try:
                await s.rollback("health check failed: asked by the test", kind="health")
                assert s.version == "1.0.0"
                said = [e for e in events if e["kind"] == "rollback_unrecorded"]
                assert len(said) == 1 and said[0]["active"] is True, said
                folder = said[0]["package"]
                assert folder.startswith("part-inspection-1.1.0-") and "Read-only" in said[0]["reason"], said
                assert "may serve that version again" in said[0]["message"], said
                assert list(s.status()["unrecorded_rollbacks"]) == [folder]
            finally:
                subprocess.run(["mount", "-o", "remount,rw", str(root)], check=True)
            await until(
                lambda: [e["active"] for e in events if e["kind"] == "rollback_unrecorded"] == [True, False],
                what="the end told once the mark is written",
            )
            assert s.status()["unrecorded_rollbacks"] == {}
        finally:
            await s.stop()
