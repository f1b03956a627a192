"""A publish killed while copying (-9, the OOM killer) left its ``<name>/.<version>.part`` folder: a package's copy
that nothing lists or serves, holding its space on the disk the fleet's samples and store share until the same
version was published again. The next publish and ``cloud-trainer serve`` remove such folders not touched for an
hour (this registry's and its tenants'), logging each; a live publish's part, written to as it copies, is kept."""

from __future__ import annotations

import logging
import os
import time

from cloud_trainer.fleet.service import FleetServer
from cloud_trainer.registry import Registry
from tests.support.fleet import make_pki
from tests.support.models import make_keypair, make_package
from tests.support.peers import free_port


def _part(folder, size: int, *, age_s: float):
    """A ``.VERSION.part`` folder as a publish writing (age 0) or killed ``age_s`` ago leaves it."""
    folder.mkdir(parents=True)
    (folder / "pkg.edgepkg").write_bytes(b"\0" * size)
    then = time.time() - age_s
    for p in (folder / "pkg.edgepkg", folder):
        os.utime(p, (then, then))
    return folder


def test_a_publish_removes_the_parts_killed_publishes_left_and_keeps_a_live_one(tmp_path, caplog):
    key, _ = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path / "b", kind="signal", version="1.1.0", key=key, out_dir=tmp_path / "b")
    root = tmp_path / "registry"
    killed = [
        _part(root / "machine-health" / ".1.0.0.part", 50_000, age_s=2 * 3600),
        _part(root / "other" / ".2.0.0.part", 1000, age_s=3 * 3600),
        _part(root / ".tenants" / "acme" / "machine-health" / ".1.0.0.part", 1000, age_s=2 * 3600),
    ]
    live = _part(root / "machine-health" / ".1.2.0.part", 1000, age_s=0)  # another build's, under way
    with caplog.at_level(logging.INFO, logger="cloud_trainer.registry"):
        entry = Registry(root).publish(pkg, [], {}, None, None)
    assert entry["version"] == "1.1.0"
    assert [p.exists() for p in killed] == [False, False, False]
    assert (live / "pkg.edgepkg").stat().st_size == 1000
    for p in killed:
        assert f"removed {p}: a publish that was stopped while copying left it" in caplog.text, caplog.text
    assert str(live) not in caplog.text


async def test_serve_removes_the_parts_killed_publishes_left_at_start(tmp_path, caplog):
    data = tmp_path / "cloud"
    killed = _part(data / "registry" / ".tenants" / "acme" / "line-a" / ".3.0.0.part", 1000, age_s=2 * 3600)
    live = _part(data / "registry" / "line-a" / ".3.1.0.part", 1000, age_s=60)
    pki = make_pki(tmp_path / "pki", agents=(), admins=())
    with caplog.at_level(logging.INFO, logger="cloud_trainer.registry"):
        srv = FleetServer(data, free_port(), pki / "ca.pem", pki / "server.pem", pki / "server.key")
    try:
        assert not killed.exists() and live.exists()
        assert f"removed {killed}" in caplog.text, caplog.text
    finally:
        await srv.stop()


def test_a_sweep_that_removed_parts_is_a_warning_a_build_prints_with_the_count_and_the_first(tmp_path):
    """``cloud-trainer build`` sets no logging up: Python prints warnings and above only, so the INFO line of each
    part removed was never seen by the user whose disk it freed."""
    import subprocess
    import sys

    root = tmp_path / "registry"
    parts = [_part(root / n / ".1.0.0.part", 1000, age_s=2 * 3600) for n in ("alpha", "beta")]
    sweep = [
        sys.executable,
        "-c",
        f"from cloud_trainer.registry import Registry; Registry({str(root)!r}).sweep_parts()",
    ]
    run = subprocess.run(sweep, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    said = [f"removed 2 folder(s) that publishes stopped while copying left ({p} and 1 more)" for p in parts]
    assert any(s in run.stderr for s in said), run.stderr  # (whichever the sweep found first)
    assert not any(p.exists() for p in parts)
    quiet = subprocess.run(sweep, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == ""  # nothing removed, nothing said
