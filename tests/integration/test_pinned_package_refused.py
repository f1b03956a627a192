"""A pinned slot whose configured package file was replaced by one that fails its checks: a package signed by a key
the gateway does not trust yet (a key rotation whose .pub has not reached it), or one whose golden outputs its model
does not give. The slot installs the configured package at each start when its digest differs from the installed
one's; refused, the start raised, and the agent did not start (every other slot and pipeline down, at every
restart). Now the installed package, verified again, serves, with a WARNING, a counter and the refusal on /status."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from model_packager import load_trusted_keys
from tests.support.models import make_keypair, make_package, make_vision_onnx
from tests.support.swaps import with_model


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pinned-refused")
    key, pub = make_keypair(tmp / "keys")
    return tmp, key, pub, make_package(tmp, kind="vision", version="1.0.0", key=key, heatmap=False)


@pytest.mark.parametrize("new", ["untrusted key", "golden outputs of another model"])
async def test_a_pinned_slots_new_package_that_fails_its_checks_leaves_the_installed_one_serving(
    kit, tmp_path, caplog, new
):
    tmp, key, pub, v1 = kit
    pkg = tmp_path / "vision.edgepkg"
    shutil.copy(v1, pkg)
    cfg = ModelConfig(package=str(pkg), engine="onnxruntime", version_policy="pinned")
    trusted = load_trusted_keys([pub])  # verified in this process: no install child to wait for
    first = ModelSlot("vision", cfg, tmp_path / "data", trusted)
    await first.start()
    await first.stop()
    if new == "untrusted key":
        rogue, _ = make_keypair(tmp_path / "rogue")
        shutil.copy(make_package(tmp_path, kind="vision", version="1.1.0", key=rogue, heatmap=False), pkg)
        said = "which is not among the trusted keys"
    else:  # signed by the trusted key; its model gives other outputs than its golden ones
        good = make_package(tmp_path, kind="vision", version="1.1.0", key=key, heatmap=False)
        other = make_vision_onnx(tmp_path / "other.onnx", heatmap=False, seed=7)
        wrong = {"logits": np.zeros((4, 6), np.float32)}
        shutil.copy(with_model(good, key, other, wrong, tmp_path / "bad"), pkg)
        said = "golden"
    again = ModelSlot("vision", cfg, tmp_path / "data", trusted)
    with caplog.at_level(logging.WARNING):
        await (
            again.start()
        )  # (raised SlotError "cannot start on ...vision.edgepkg", the agent's start with it)
    try:
        assert again.state == "active" and again.version == "1.0.0"
        lines = [r.getMessage() for r in caplog.records if "the configured package" in r.getMessage()]
        assert (
            len(lines) == 1
            and str(pkg) in lines[0]
            and "serving the installed part-inspection-1.0.0" in lines[0]
        )
        assert said in lines[0], lines
        st = again.status()
        assert st["counters"]["configured_package_refused"] == 1
        assert st["last_swap"]["ok"] is False and said in st["last_swap"]["reason"], st["last_swap"]
    finally:
        await again.stop()
