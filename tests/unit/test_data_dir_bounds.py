"""What the agent keeps in its data folder stays bounded over months of running: each test drives the real
code through many cycles (samples saved, restarts, refusals) and counts the files or entries left."""

from __future__ import annotations

import numpy as np

from devices.base import Frame
from edge_agent import actions
from edge_agent.config import parse_config
from edge_agent.types import Result


def _runner(tmp_path, **keep):
    cfg = parse_config(
        {
            "agent": {"id": "a", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
            "actions": {"keep": {"type": "save_sample", "max_per_hour": 100_000, **keep}},
            "http": {"enabled": False},
        },
        "t.yaml",
        str(tmp_path),
    )
    return actions.ActionRunner(cfg, {}), cfg.actions["keep"]


def _save(ctx, action, seq: int, verdict: str = "NG") -> None:
    res = Result("p", "cam", seq, 0.0, "m", "1.0.0", "onnxruntime", verdict, 0.9)
    frame = Frame("cam", seq, 0.0, np.full((4, 4, 3), seq % 256, np.uint8))
    actions._save(ctx, "keep", action, res, frame)


def test_the_sample_folder_keeps_max_samples_across_restarts_and_removes_the_oldest(tmp_path):
    samples = tmp_path / "data" / "samples"
    samples.mkdir(parents=True)
    (samples / "notes.txt").write_text("the line engineer's own file")  # not a sample: never removed
    for _run in range(3):  # three runs of the agent: each starts its item seqs at 0 again
        ctx, action = _runner(tmp_path, max_samples=5)
        for seq in range(4):
            _save(ctx, action, seq)
    names = sorted(p.name for p in samples.iterdir())
    assert len([n for n in names if n.endswith(".png")]) == 5, names
    assert len([n for n in names if n.endswith(".json")]) == 5 and "notes.txt" in names
    assert ctx.stats["keep"]["removed"] == 4  # the last run found 5 (the bound), then saved 4
    # the newest run's four samples are all there (not written over, not removed), and one of the run before
    stems = sorted(n[:-4] for n in names if n.endswith(".png"))
    assert sorted(s.rsplit("-", 2)[1] for s in stems) == [
        "00000000",
        "00000001",
        "00000002",
        "00000003",
        "00000003",
    ]


def test_the_sample_folder_keeps_within_max_bytes(tmp_path):
    ctx, action = _runner(tmp_path, max_samples=10_000, max_bytes=1024**2)
    big = np.random.default_rng(0).integers(0, 256, (300, 300, 3), np.uint8)  # ~270 kB as a PNG
    for seq in range(12):
        res = Result("p", "cam", seq, 0.0, "m", "1.0.0", "onnxruntime", "NG", 0.9)
        actions._save(ctx, "keep", action, res, Frame("cam", seq, 0.0, big))
    files = list((tmp_path / "data" / "samples").iterdir())
    assert sum(p.stat().st_size for p in files) <= 1024**2
    assert 2 <= len(files) // 2 < 12 and ctx.stats["keep"]["removed"] == 12 - len(files) // 2


def test_a_state_file_half_written_by_a_killed_agent_is_removed_when_the_next_one_takes_the_folder(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from edge_agent.agent import DataDirLock

    data = tmp_path / "data"
    paths = [
        str(data / "alarm-outputs.json"),
        str(data / "fleet/commands.json"),
        str(data / "fleet-config/state.json"),
    ]
    # a real writer of each state file, killed (kill -9) between writing its temporary file and renaming it
    script = (
        "import os, sys, threading, time; from pathlib import Path; from edge_agent import files\n"
        "os.fsync = lambda fd: (os.write(1, b'w'), time.sleep(60))\n"
        f"for p in {paths!r}:\n"
        "    threading.Thread(target=files.atomic_write_json, args=(Path(p), {'raised': []}), daemon=True).start()\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=os.getcwd())
    try:
        assert child.stdout is not None
        assert child.stdout.read(3) == b"www"  # each thread has written its temporary file
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    left = [p.name for p in data.rglob(".*.tmp")]
    assert len(left) == 3, left
    (data / "fleet" / ".notes.tmp").write_text("not ours")  # no pid in its name: left alone
    lock = DataDirLock(data)
    lock.acquire()
    try:
        after = sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file())
        assert after == ["agent.lock", "fleet/.notes.tmp"], after
    finally:
        lock.release()


def test_the_model_manager_forgets_old_refusals_and_the_retries_of_versions_no_longer_desired(
    tmp_path, monkeypatch
):
    import asyncio
    from types import SimpleNamespace

    from edge_agent.models import manager as manager_mod
    from edge_agent.models.config import VersionPolicy
    from edge_agent.models.manager import DigestMismatch, ModelManager

    monkeypatch.setattr(manager_mod, "MAX_REFUSED", 20, raising=False)  # (the former code had no bound)
    slot = SimpleNamespace(
        config=SimpleNamespace(version_policy=VersionPolicy.FOLLOW_FLEET),
        status=lambda: {"digest": "0" * 64, "package": "vision", "version": "1.0.0"},
    )
    mgr = ModelManager({"vision": slot}, SimpleNamespace(data_dir=tmp_path / "data"))
    mgr.download_backoff_s = mgr.download_backoff_max_s = 0.0

    async def download(
        d, *args, **kwargs
    ):  # the fleet serves other bytes than the digest it named, every time
        raise DigestMismatch(f"downloaded bytes do not match digest {d.digest[:12]}")

    mgr.download = download

    async def rollout(version: int, heartbeats: int) -> None:
        d = SimpleNamespace(
            slot="vision",
            package="vision",
            version=f"1.{version}.0",
            digest=f"{version:064x}",
            deployment_id=f"dep{version}",
            rollback=False,
        )
        for _ in range(heartbeats):
            await mgr.on_desired(SimpleNamespace(desired=[d], generation=version))
            await asyncio.gather(*mgr._tasks)

    async def months() -> None:
        for v in range(1, 61):  # 60 versions refused after three bad downloads each
            await rollout(v, 3)
        for v in range(100, 140):  # 40 versions that failed once, then the fleet moved on
            await rollout(v, 1)

    asyncio.run(months())
    assert len(mgr.refused) == 20 and f"{60:064x}" in mgr.refused and f"{1:064x}" not in mgr.refused
    assert mgr.status()["refused_count"] == 20 and len(mgr.status()["refused"]) == 10
    assert len(mgr.retry_at) <= 1 and len(mgr._download_failures) <= 1


def test_a_slot_keeps_a_bounded_record_of_failed_versions_and_few_rejected_folders(tmp_path, monkeypatch):
    from pathlib import Path

    from edge_agent.models import store as store_mod

    MAX_FAILED, MAX_REJECTED = 5, 3  # (50 and 3; the former code had no bound)
    monkeypatch.setattr(store_mod, "MAX_FAILED", MAX_FAILED, raising=False)
    store = store_mod.ModelStore(tmp_path / "models" / "vision")
    for v in range(1, 21):  # months of rollouts: every version refused or rolled back
        store.mark_failed(Path(f"vision-1.{v}.0-{v:012x}"), f"health: NG rate of 1.{v}.0 above the baseline")
    for v in range(1, 8):  # installed folders found altered on disk at a start, one version after another
        folder = store.root / f"vision-2.{v}.0-{v:012x}"
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"\0" * 1000)
        assert store.set_aside(folder.name, "model.onnx digest mismatch") is not None
    failed = store.state()["failed"]
    assert len(failed) == MAX_FAILED and "vision-2.7.0-000000000007" in failed
    rejected = sorted(p.name for p in (store.root / ".rejected").iterdir())
    assert rejected == sorted(f"vision-2.{v}.0-{v:012x}" for v in range(8 - MAX_REJECTED, 8))  # the latest


def test_staging_is_cleared_of_packages_left_for_a_slot_the_config_no_longer_has(tmp_path):
    from types import SimpleNamespace

    from edge_agent.models.manager import ModelManager

    staging = tmp_path / "data" / "staging"
    for slot in ("vision", "old-vision"):  # a kill -9 between download and install, then the slot renamed
        (staging / slot).mkdir(parents=True)
        (staging / slot / "part-inspection-1.2.0.edgepkg").write_bytes(b"\0" * 4096)
    mgr = ModelManager({"vision": SimpleNamespace()}, SimpleNamespace(data_dir=tmp_path / "data"))
    mgr._clear_staging()  # (the first step of every download)
    assert sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*")) == ["vision"]


def test_the_fleet_config_state_keeps_the_latest_refusals_only(tmp_path, monkeypatch):
    from edge_agent import fleet_config
    from edge_agent.fleet_config import ConfigKeeper, refusal_key

    monkeypatch.setattr(fleet_config, "MAX_REFUSED", 10, raising=False)  # (100; the former code had no bound)
    keeper = ConfigKeeper(tmp_path / "data" / "fleet-config")
    for n in range(25):  # config deployments refused one after another over months
        info = {"deployment_id": f"cfg{n}", "digest": f"{n:064x}"}
        keeper.refuse(info, "failed", f"sources.plc.endpoint: cannot connect ({n})")
    refused = ConfigKeeper(tmp_path / "data" / "fleet-config").state["refused"]  # as the next start reads it
    assert len(refused) == 10 and refusal_key("cfg24", f"{24:064x}") in refused
    assert refusal_key("cfg0", f"{0:064x}") not in refused
