"""The agent run by a user who cannot write where its config points: a systemd unit's `User=factory-edge`
with the config in /etc/factory-edge and `data_dir` left at its default (beside the config) or given to a
folder the installer owns. `edge-agent validate` (the unit's ExecStartPre) refuses such a data folder in one
line naming it and the fix, and `edge-agent run` stops in one line, never with a traceback.

Root may write anywhere, so under root (how this suite usually runs) the CLI runs in a child that drops to
`nobody` once its modules are imported (this machine's Python lives under /root, which `nobody` cannot
read); under another user the test's own user meets folders of mode 0555."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.support.models import make_keypair, make_package
from tests.support.peers import small_tmpfs

ROOT = Path(__file__).resolve().parents[2]

# warm up (every module the verb imports, as root), then drop to nobody and run the verb for real
CHILD = """
import os, pwd, sys
import edge_agent.cli as cli, edge_agent.config, edge_agent.models.install, edge_agent.models.store
import edge_agent.process_info, encodings.ascii, logging, model_packager.perms
edge_agent.process_info.launched_at()
verb = sys.argv[1:]
with open(os.devnull, "w") as quiet:
    so, se = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = quiet
    try:
        cli.main(["validate", verb[-1]])
    finally:
        sys.stdout, sys.stderr = so, se
if os.geteuid() == 0:
    who = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(who.pw_gid)
    os.setuid(who.pw_uid)
sys.exit(cli.main(verb))
"""


@pytest.fixture
def place():
    """A folder every user can read (pytest's own temp folder is root's alone), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="agent-user-"))
    d.chmod(0o755)
    yield d
    for p in [d, *d.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(d, ignore_errors=True)


def as_service_user(*verb: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, *verb], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def locked(folder: Path) -> None:
    """Readable, not writable, by the user the agent runs as (nobody, or the test's own user)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)


def test_validate_refuses_a_data_dir_its_user_cannot_create_naming_it_and_the_fix(place):
    etc = place / "etc"
    etc.mkdir()
    cfg = etc / "agent.yaml"  # data_dir at its default: var/agent beside the config
    cfg.write_text(yaml.safe_dump({"agent": {"id": "gw-press-3"}, "http": {"enabled": False}}))
    locked(etc)
    r = as_service_user("validate", str(cfg))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if "agent.data_dir" in ln]
    assert line.startswith(
        f"{cfg}: agent.data_dir: {etc / 'var' / 'agent'} cannot be created: {etc} is not writable"
    )
    assert "set agent.data_dir to a folder this user can write" in line


def test_validate_refuses_an_existing_data_dir_its_user_cannot_write(place):
    data = place / "data"
    locked(data)
    cfg = place / "agent.yaml"
    cfg.write_text(
        yaml.safe_dump({"agent": {"id": "gw-press-3", "data_dir": str(data)}, "http": {"enabled": False}})
    )
    r = as_service_user("validate", str(cfg))
    assert r.returncode == 1 and f"agent.data_dir: {data} is not writable by user" in r.stderr, r.stderr


def test_run_whose_model_store_cannot_be_made_stops_in_one_line(place):
    key, pub = make_keypair(place / "keys")
    pkg = make_package(place, kind="signal", key=key)
    data = place / "data"
    data.mkdir()
    data.chmod(0o777 if os.geteuid() == 0 else 0o755)  # the data folder itself is the user's to write
    locked(data / "models")  # but its models folder was left by the installer, root's
    cfg = place / "agent.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "agent": {"id": "gw-press-3", "data_dir": str(data)},
                "trusted_keys": [str(pub)],
                "http": {"enabled": False},
                "models": {"health": {"package": str(pkg)}},
            }
        )
    )
    for p in [place, *place.rglob("*")]:
        if p.is_file():
            p.chmod(0o644)
    r = as_service_user("run", str(cfg))
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and "cannot start" in errors[0] and str(data / "models") in errors[0], out


def test_validate_refuses_a_data_dir_it_cannot_create_on_a_read_only_system(tmp_path):
    """systemd's ProtectSystem=strict: /etc is read-only, even for root; the data folder left beside the config
    cannot be made. (A data folder that exists on a read-only disk is the outbox's own start error.)"""
    with small_tmpfs(tmp_path / "etc", "1m") as etc:
        cfg = etc / "agent.yaml"
        cfg.write_text(yaml.safe_dump({"agent": {"id": "gw-press-3"}, "http": {"enabled": False}}))
        subprocess.run(["mount", "-o", "remount,ro", str(etc)], check=True)
        r = subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "validate", str(cfg)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 1, r.stdout + r.stderr
    assert (
        f"{cfg}: agent.data_dir: {etc / 'var' / 'agent'} cannot be created: {etc} is on a read-only"
        in r.stderr
    )


@pytest.mark.skipif(Path("/var/lib/factory-edge").exists(), reason="the unit's StateDirectory exists here")
def test_validate_as_the_service_user_before_the_units_first_start_takes_its_state_directory(place):
    """The install guide's data_dir, /var/lib/factory-edge, is the unit's StateDirectory: systemd makes it,
    owned by the unit's user, when the unit starts. Checked as that user before the first start (the guide's
    step 3, `sudo -u factory-edge edge-agent validate`), it was refused as a folder /var/lib does not let the
    user create, with the fix 'set agent.data_dir to ... /var/lib/factory-edge', the very value it had."""
    unit = (ROOT / "deploy" / "systemd" / "edge-agent.service").read_text()
    assert "StateDirectory=factory-edge\n" in unit  # the folder this test relies on systemd to make
    cfg = place / "agent.yaml"
    for data in ("/var/lib/factory-edge", "/var/lib/factory-edge/agent"):
        cfg.write_text(
            yaml.safe_dump({"agent": {"id": "gw-press-3", "data_dir": data}, "http": {"enabled": False}})
        )
        cfg.chmod(0o644)
        r = as_service_user("validate", str(cfg))
        assert r.returncode == 0 and "agent.data_dir" not in r.stderr, r.stdout + r.stderr
    # any other folder /var/lib does not let the user create is refused as before
    cfg.write_text(
        yaml.safe_dump(
            {"agent": {"id": "gw-press-3", "data_dir": "/var/lib/other-agent"}, "http": {"enabled": False}}
        )
    )
    r = as_service_user("validate", str(cfg))
    assert r.returncode == 1 and "agent.data_dir: /var/lib/other-agent cannot be created" in r.stderr, (
        r.stderr
    )
