"""A slot's folder holds what it may still serve (the current package, a previous one and a candidate under
probation), however many versions it was given: real signed packages, real ONNX Runtime."""

from __future__ import annotations

import pytest

from edge_agent.models.config import ModelConfig, VersionPolicy
from edge_agent.models.slot import ModelSlot
from model_packager import load_trusted_keys
from tests.support.models import make_keypair, make_package


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkgs")
    key, pub = make_keypair(tmp / "keys")
    versions = [make_package(tmp, kind="signal", version=f"1.{i}.0", key=key) for i in range(3)]
    return versions, load_trusted_keys([pub])


async def test_a_pinned_slot_given_new_local_packages_keeps_only_the_one_it_runs(tmp_path, pkgs):
    versions, trusted = pkgs
    root = tmp_path / "data" / "models" / "health"
    for pkg in versions:  # the line engineer pins a new version, the agent restarts on it, over and over
        cfg = ModelConfig(package=str(pkg), engine="onnxruntime", version_policy=VersionPolicy.PINNED)
        s = ModelSlot("health", cfg, tmp_path / "data", trusted)
        await s.start()
        await s.stop()
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(folders) == 1 and folders[0].startswith("machine-health-1.2.0-"), folders
    assert s.store.current() == folders[0]
