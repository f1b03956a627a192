"""A pinned slot whose configured package file was replaced by one that fails its checks: a package signed by a key
the gateway does not trust yet (a key rotation whose .pub has not reached it), or one whose golden outputs its model
does not give. The slot installs the configured package at each start when its digest differs from the installed
one's; refused, the start raised, and the agent did not start (every other slot and pipeline down, at every
restart). Now the installed package, verified again, serves, with a WARNING, a counter and the refusal on /status."""

from __future__ import annotations

import contextlib
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


async def test_a_pinned_slot_whose_installed_signer_was_revoked_does_not_serve_it_when_its_new_package_is_refused(
    kit, tmp_path, caplog
):
    """The admin removed the installed package's signing key from the trusted keys (revoked it) and copied a new
    package that is refused too: the installed package must not serve. It was set aside, but the refused package
    was installed a second time and the log first said the installed one serves. The slot starts failed (nothing
    installed serves it), as the next start, finding nothing installed, would."""
    from edge_agent.models.slot import SlotError

    tmp, key, pub, v1 = kit
    pkg = tmp_path / "vision.edgepkg"
    shutil.copy(v1, pkg)
    cfg = ModelConfig(package=str(pkg), engine="onnxruntime", version_policy="pinned")
    first = ModelSlot("vision", cfg, tmp_path / "data", load_trusted_keys([pub]))
    await first.start()
    await first.stop()
    rogue, _ = make_keypair(tmp_path / "rogue")
    shutil.copy(make_package(tmp_path, kind="vision", version="1.1.0", key=rogue, heatmap=False), pkg)
    _, new_pub = make_keypair(tmp_path / "new")  # the only key trusted now
    again = ModelSlot("vision", cfg, tmp_path / "data", load_trusted_keys([new_pub]))
    with pytest.raises(
        SlotError, match="which is not among the trusted keys.*; nor on the installed package part-"
    ):
        await again.start()
    assert again.state == "failed" and again.version is None
    assert again.counters["swaps_refused"] == 1 and again.counters["installed_rejected"] == 1
    assert not [r for r in caplog.records if "serving the installed" in r.getMessage()]


async def test_the_fleets_agents_table_shows_a_slot_serving_on_after_its_new_package_was_refused(
    kit, tmp_path, capsys
):
    """The agent reports the refusal as the slot's reason; `cloud-trainer agents` listed the slot as
    `vision=part-inspection-1.0.0 (active)` alone (the reason only in --json), so the fleet saw nothing of a
    replacement the admin copied because the installed model was bad."""
    import asyncio

    from cloud_trainer import admin_cli
    from cloud_trainer.fleet.service import FleetServer
    from tests.contract.test_fleet_commands import STATE_HEALTH
    from tests.support.fleet import make_pki
    from tests.support.peers import free_port

    tmp, key, pub, v1 = kit
    pkg = tmp_path / "vision.edgepkg"
    shutil.copy(v1, pkg)
    cfg = ModelConfig(package=str(pkg), engine="onnxruntime", version_policy="pinned")
    trusted = load_trusted_keys([pub])
    first = ModelSlot("vision", cfg, tmp_path / "data", trusted)
    await first.start()
    await first.stop()
    rogue, _ = make_keypair(tmp_path / "rogue")
    shutil.copy(make_package(tmp_path, kind="vision", version="1.1.0", key=rogue, heatmap=False), pkg)
    again = ModelSlot("vision", cfg, tmp_path / "data", trusted)
    await again.start()
    st = again.status()
    await again.stop()
    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=("alice",))
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    try:  # the slot as the agent's heartbeat carries it (Agent._cloud_status)
        slot = {k: st[k] for k in ("slot", "package", "version", "digest")}
        srv.store.heartbeat(
            "gw1", {}, [{**slot, "status": st["state"], "reason": st["last_swap"]["reason"]}], STATE_HEALTH, 0
        )
        capsys.readouterr()
        base = ["--endpoint", f"127.0.0.1:{port}", "--pki", str(pki), "--admin", "alice"]
        assert await asyncio.to_thread(admin_cli.main_agents, base) == 0
        out = capsys.readouterr().out
        assert "vision=part-inspection-1.0.0 (active; package vision.edgepkg: signed by key" in out, out
    finally:
        await srv.stop()


async def test_a_pinned_slots_new_package_that_the_full_disk_cannot_hold_leaves_the_installed_one_serving(
    kit, tmp_path, caplog
):
    """The disk full when the start installs the new package copied to a pinned slot's path (a cause of this
    machine, not of the package): the start ended (the agent with it) though the installed package could serve.
    Now it serves, and the new one is installed at a start once there is room."""
    from tests.support.peers import small_tmpfs

    tmp, key, pub, v1 = kit
    pkg = tmp_path / "vision.edgepkg"
    shutil.copy(v1, pkg)
    cfg = ModelConfig(package=str(pkg), engine="onnxruntime", version_policy="pinned")
    trusted = load_trusted_keys([pub])
    with small_tmpfs(tmp_path / "data" / "models" / "vision", "2m") as root:
        first = ModelSlot("vision", cfg, tmp_path / "data", trusted)
        await first.start()
        await first.stop()
        shutil.copy(make_package(tmp, kind="vision", version="1.1.0", key=key, heatmap=False), pkg)
        filler = root / ".filler"
        with open(filler, "wb") as f, contextlib.suppress(OSError):  # the rest of the disk taken
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        again = ModelSlot("vision", cfg, tmp_path / "data", trusted)
        with caplog.at_level(logging.WARNING):
            await again.start()  # (raised SlotError "cannot start on ...: not enough free disk")
        try:
            assert again.state == "active" and again.version == "1.0.0"
            (line,) = [r.getMessage() for r in caplog.records if "the configured package" in r.getMessage()]
            assert (
                "not enough free disk" in line and "its install is tried again at the next start" in line
            ), line
        finally:
            await again.stop()
        filler.unlink()
        third = ModelSlot("vision", cfg, tmp_path / "data", trusted)
        await third.start()
        try:
            assert third.version == "1.1.0"
        finally:
            await third.stop()
