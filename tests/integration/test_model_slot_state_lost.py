"""A model slot whose ``state.json`` holds no state (emptied by a power cut on a file system that lost its
rename's data, damaged) starts on the newest package installed in its folder, verified as any installed one: it
was read as a new slot's, so the configured package (an older version) was installed again and the version the
fleet had delivered since was pruned from the disk. Real signed packages, the slot's real install child, ONNX
Runtime."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.models.config import HealthConfig, ModelConfig
from edge_agent.models.slot import ModelSlot
from tests.support.models import make_keypair, make_package


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkgs")
    key, pub = make_keypair(tmp / "keys")
    return {
        "v1": make_package(tmp / "v1", kind="vision", version="1.0.0", key=key, seed=1),
        "v2": make_package(tmp / "v2", kind="vision", version="1.1.0", key=key, seed=2),
        # another task under the same name (a rollout to the wrong slot)
        "signal": make_package(tmp / "sig", kind="signal", name="part-inspection", version="2.0.0", key=key),
        "pub": pub,
    }


def _slot(tmp_path: Path, pkgs, package: bool = True) -> ModelSlot:
    cfg = ModelConfig(
        package=str(pkgs["v1"]) if package else None,
        name="part-inspection",
        engine="onnxruntime",
        version_policy="follow_fleet",  # what the fleet delivers serves (pinned: the configured package does)
    )
    return ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])


@pytest.mark.parametrize("package", [True, False], ids=["configured", "fleet_only"])
async def test_an_empty_state_json_starts_the_newest_installed_version_not_the_configured_one(
    tmp_path, pkgs, caplog, package
):
    s = _slot(tmp_path, pkgs)
    await s.start()
    assert (await s.swap(pkgs["v2"], watch=False)).ok  # a fleet rollout's version, kept
    await s.stop()
    s.store.state_path.write_bytes(b"")  # what the power cut left

    again = _slot(tmp_path, pkgs, package)
    with caplog.at_level(logging.WARNING):
        await again.start()
    try:
        assert again.version == "1.1.0"
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(
            f"slot vision: {again.store.state_path} holds no state (not JSON (" in m
            and "starting on the newest package installed in the slot, part-inspection-1.1.0-" in m
            for m in said
        ), said
        # written again, so that what the slot serves survives its own prune and the next start
        assert again.store.current().startswith("part-inspection-1.1.0-")
        assert again.store.state_unread is None
    finally:
        await again.stop()
    third = _slot(tmp_path, pkgs, package)
    await third.start()
    try:
        assert third.version == "1.1.0"
    finally:
        await third.stop()


async def test_a_candidate_whose_window_an_empty_state_json_held_is_watched_again_not_kept_unjudged(
    tmp_path, pkgs
):
    """A power cut inside a candidate's health window that emptied state.json: the start served the newest installed
    (the candidate) as current alone, for good without its health verdict, and its prune removed the model it would
    have gone back to. It serves on probation, a whole new window watched, the older version kept to go back to."""
    cfg = ModelConfig(
        package=str(pkgs["v1"]),
        name="part-inspection",
        engine="onnxruntime",
        version_policy="follow_fleet",
        health=HealthConfig(window_s=600, min_items=100000),
    )
    s = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])
    await s.start()
    assert (await s.swap(pkgs["v2"])).ok and s.state == "watching"
    st = s.store.state()
    await s.stop()
    s.store.state_path.write_bytes(b"")  # what the power cut left
    again = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])
    await again.start()
    try:
        assert (again.version, again.state) == ("1.1.0", "watching")  # ("1.1.0", "active") before
        on_disk = json.loads(again.store.state_path.read_text())
        assert (on_disk["current"], on_disk["previous"]) == (st["current"], st["previous"]), on_disk
        assert on_disk["probation"]["candidate"] == st["current"]
        assert (again.store.root / st["previous"]).is_dir()  # (removed before)
    finally:
        await again.stop()


ROLLBACK_KILLED = """
import asyncio, sys, time
from pathlib import Path
from edge_agent.models.config import HealthConfig, ModelConfig
from edge_agent.models.slot import ModelSlot
import edge_agent.models.store as store

data, v1, v2, pub = map(Path, sys.argv[1:5])
def killed_here(self, *held):  # the rollback is recorded in state.json; the folder it rolled away from not yet removed
    print("READY", flush=True)
    time.sleep(60)
async def main():
    cfg = ModelConfig(package=str(v1), engine="onnxruntime", health=HealthConfig(window_s=120, min_items=100000))
    s = ModelSlot("vision", cfg, data, [pub])
    await s.start()
    assert (await s.swap(v2)).ok
    store.ModelStore.prune = killed_here
    await s.rollback("health check failed: error rate 100.0% > 5.0%", kind="health")  # what the slot's health watch calls
asyncio.run(main())
"""


async def test_a_version_the_health_watch_rolled_back_is_not_served_after_a_kill_9_and_a_lost_state(
    tmp_path, pkgs
):
    """A kill -9 after a rollback was recorded, before the folder of the version rolled back was removed, left
    it installed; a start whose state.json a power cut emptied then served that version, the newest installed,
    though the slot's own health watch had taken it out."""
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            ROLLBACK_KILLED,
            str(data),
            str(pkgs["v1"]),
            str(pkgs["v2"]),
            str(pkgs["pub"]),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    assert line.strip() == "READY"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    s = _slot(tmp_path, pkgs, package=False)
    assert any(p.name.startswith("part-inspection-1.1.0-") for p in s.store.root.iterdir())  # left installed
    s.store.state_path.write_bytes(b"")  # what the power cut left
    await s.start()
    try:
        assert s.version == "1.0.0"  # (was 1.1.0)
    finally:
        await s.stop()


@pytest.mark.parametrize("why", ["task", "pipeline"])
async def test_a_package_refused_for_its_task_or_a_pipelines_check_is_never_what_a_start_serves(
    tmp_path, pkgs, why
):
    """A package refused at its swap because its task is not the slot's, or because a pipeline's check refuses it
    (a baseline's sample-rate floor), was left installed and unmarked: the newest version in the slot's folder, so
    that a start on a lost state.json served it (a signal model on the camera's pipeline). It is now marked and
    removed as any other refusal past the install; the start serves the version the slot ran."""
    s = _slot(tmp_path, pkgs)
    await s.start()
    pkg = pkgs["signal"]
    if why == "pipeline":
        pkg = pkgs["v2"]
        s.swap_checks["inspect"] = lambda m: (
            "pipeline inspect: its baseline needs 2000 Hz, the model takes 100 Hz"
        )
    outcome = await s.swap(pkg, watch=False)
    assert not outcome.ok and outcome.stage == "verify" and s.version == "1.0.0", outcome
    installed = [p.name for p in s.store.root.iterdir() if not p.name.startswith(".")]
    assert [n for n in installed if not n.endswith(".json")] == [s.store.current()], installed  # (was: kept)
    await s.stop()
    s.store.state_path.write_bytes(b"")  # a power cut
    again = _slot(tmp_path, pkgs)
    await again.start()
    try:
        assert again.version == "1.0.0" and again.manifest.task.value == "vision_inspection"
    finally:
        await again.stop()


@pytest.mark.parametrize("missing", ["previous", "current"])
async def test_a_start_on_a_state_naming_a_missing_folder_keeps_its_verdicts_and_serves_no_failed_version(
    tmp_path, pkgs, missing
):
    """A restored state.json whose ``previous`` is not installed (pruned since the copy) was dropped whole at a start,
    its ``failed`` verdicts too: the newest installed served, a version a health check had rolled back (its mark only
    in ``failed``: the disk refused the mark), and a deployment's rollback verdict was lost (installed and served again
    after the restart). Only the missing name is dropped; the installed ``current`` serves (none: the newest installed
    that no verdict names), the verdicts stay."""
    s = _slot(tmp_path, pkgs)
    await s.start()
    v1 = s.store.current()
    assert (await s.swap(pkgs["v2"], watch=False)).ok
    v2 = s.store.current()
    await s.stop()
    why = "the health check rolled it back: error rate 0.4 over 0.05"
    restored = {"current": v1, "previous": None, "probation": None, "failed": {v2: why}}
    restored[missing] = "part-inspection-0.9.0-gone"  # (pruned since the copy)
    s.store.state_path.write_text(json.dumps(restored))
    again = _slot(tmp_path, pkgs)
    await again.start()
    try:
        assert again.version == "1.0.0"  # 1.1.0, judged failed, before
        st = again.store.state()
        assert st.get("failed") == {v2: why}, st  # dropped before
        assert (st["current"], st["previous"]) == (v1, None), st
    finally:
        await again.stop()
