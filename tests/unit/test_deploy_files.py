"""The shipped systemd units and container files are usable: they parse, they are hardened,
and every program and path they name exists in the installed package or the source tree."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
CONTAINERS = sorted((ROOT / "deploy" / "containers").glob("*.Containerfile"))
INSTALL_PREFIX = "/opt/factory-edge/venv"


def _console_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def _exec_lines(unit: Path) -> list[str]:
    return [
        line.split("=", 1)[1].strip()
        for line in unit.read_text().splitlines()
        if re.match(r"^Exec(Start|StartPre|Stop|Reload)=", line)
    ]


def test_units_and_containers_exist():
    assert {u.name for u in UNITS} == {"edge-agent.service", "cloud-trainer.service"}
    assert {c.name for c in CONTAINERS} == {"agent.Containerfile", "cloud.Containerfile"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_runs_installed_console_scripts(unit):
    scripts = _console_scripts()
    bindir = Path(sys.executable).parent
    for line in _exec_lines(unit):
        program = line.split()[0].lstrip("-")
        assert program.startswith(INSTALL_PREFIX + "/bin/"), f"{unit.name}: {program} not in {INSTALL_PREFIX}"
        name = Path(program).name
        assert name in scripts, f"{unit.name}: {name} is not a console script of the package"
        assert (bindir / name).exists(), f"{unit.name}: {name} is not installed in {bindir}"


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_is_hardened_and_restarts(unit):
    text = unit.read_text()
    for option in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "Restart=always",
        "StateDirectory=",
        "User=",
    ):
        assert option in text, f"{unit.name} lacks {option}"
    assert "User=root" not in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(unit, tmp_path):
    # point the unit at this environment's scripts so that verify can check they are executable
    local = tmp_path / unit.name
    local.write_text(unit.read_text().replace(INSTALL_PREFIX, str(Path(sys.executable).parent.parent)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if unit.name in ln]
    assert proc.returncode == 0 and not problems, "\n".join(problems) or proc.stderr


@pytest.mark.parametrize("containerfile", CONTAINERS, ids=lambda p: p.name)
def test_containerfile_copies_existing_paths_and_runs_a_console_script(containerfile):
    text = containerfile.read_text()
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.M):
        for item in src.split():
            assert (ROOT / item).exists(), f"{containerfile.name}: COPY {item} does not exist"
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"', text, flags=re.M)
    assert entry and entry.group(1) in _console_scripts()
