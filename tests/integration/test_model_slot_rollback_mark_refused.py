"""A rollback mark (``models/<slot>/.rolled-back/<folder>``) the disk refused was only warned, never written again:
an admin's rollback keeps the version it rolls away from installed as the slot's previous one, and once the disk
took writes again a start on a lost state.json served that version, the newest installed. The mark is now written
again with the slot's later writes of its state (here its orderly stop) once the disk takes it.

The write is made to fail for real (the tests run as root, so no permission holds): a file stands where the marks'
folder is made, as a disk refusing it would leave no folder."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.models.store import ROLLED_BACK
from tests.support.models import make_keypair, make_package


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkgs")
    key, pub = make_keypair(tmp / "keys")
    return {
        "v1": make_package(tmp / "v1", kind="vision", version="1.0.0", key=key, seed=1),
        "v2": make_package(tmp / "v2", kind="vision", version="1.1.0", key=key, seed=2),
        "pub": pub,
    }


def _slot(tmp_path: Path, pkgs) -> ModelSlot:
    cfg = ModelConfig(
        package=None, name="part-inspection", engine="onnxruntime", version_policy="follow_fleet"
    )
    return ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])


async def test_a_rollback_mark_the_disk_refused_is_written_once_it_takes_it_and_a_lost_state_serves_no_rolled_back_version(
    tmp_path, pkgs, caplog
):
    s = _slot(tmp_path, pkgs)
    assert (await s.swap(pkgs["v2"], watch=False)).ok  # the fleet's version (the slot's first)
    blocker = s.store.root / ROLLED_BACK
    shutil.rmtree(blocker)  # (with the placeholders a full disk still takes the mark: none here)
    blocker.write_bytes(b"")  # the marks' folder cannot be made
    try:
        with caplog.at_level(logging.WARNING):
            assert (await s.swap(pkgs["v1"], watch=False)).ok  # an admin's rollback to 1.0.0
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("cannot record part-inspection-1.1.0-" in m and "tried again" in m for m in said), said
        assert s.version == "1.0.0"
        assert s.store.state()["previous"].startswith("part-inspection-1.1.0-")  # kept installed
    finally:
        blocker.unlink()  # the disk takes writes again
    await s.stop()

    s.store.state_path.write_bytes(b"")  # what a power cut left
    again = _slot(tmp_path, pkgs)
    await again.start()
    try:
        assert again.version == "1.0.0"  # (was 1.1.0, the version rolled back)
    finally:
        await again.stop()
