"""The project as a gateway or a cloud admin installs it: a wheel built from the source, installed into a
venv of its own and run from a folder outside the checkout, so nothing can be imported or read from the
source tree. The wheel is built without build isolation (this environment's setuptools; a few seconds) and
installed without its dependencies, which the venv takes from this environment's site-packages through a
``.pth`` file (that folder's own ``.pth`` files, the editable install's among them, are not run)."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [
    p.rstrip("*")
    for p in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]
]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, wheel, build output): the wheel of a copy of the packaged sources, installed into a fresh venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    build = subprocess.run(
        [sys.executable, "-c", f"import setuptools.build_meta as b; print(b.build_wheel({str(dist)!r}))"],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = dist / build.stdout.strip().splitlines()[-1]
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q"]
        + ["--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv, wheel, build.stdout + build.stderr


def run_installed(venv: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / argv[0]), *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_wheel_builds_without_deprecation_and_states_its_license(installed):
    # setuptools refuses the former `license = {text = ...}` table from 2027-02-18 and warned at every build
    _, wheel, output = installed
    assert "deprecated" not in output.lower(), output
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        assert "License-Expression: Apache-2.0" in z.read(meta).decode().splitlines()


def test_the_installed_packages_hold_every_file_they_read(installed, tmp_path):
    """Every file beside the sources (pages, migrations, weights, protos, samples, the demo's config) is in
    the installation, and the code finds its resources there, not in a checkout."""
    venv, _, _ = installed
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*"):
            if f.is_file() and f.suffix not in (".py", ".pyc") and "__pycache__" not in f.parts:
                rel = f.relative_to(ROOT)
                assert (purelib / rel).is_file(), f"{rel} is not in the wheel: add it to package-data"
    probe = (
        "import json, protocols, edge_agent.http as h, cloud_trainer.fleet.console as c, "
        "cloud_trainer.fleet.store_pg as pg, cloud_trainer.train.learned_patches as lp, simulators.demo as d\n"
        "from pathlib import Path\n"
        "paths = [h.PAGE, c.PAGE, lp.PRETRAINED, d.AGENT_CONFIG, *[p for _, p in pg.migration_files()],\n"
        "         Path(protocols.__file__).with_name('fleet.proto')]\n"
        "print(json.dumps([str(p) for p in paths]))\n"
    )
    r = run_installed(venv, tmp_path, "python", "-c", probe)
    assert r.returncode == 0, r.stderr
    for p in map(Path, json.loads(r.stdout)):
        assert p.is_file() and p.is_relative_to(purelib), p


def test_installed_entry_points_run_outside_the_checkout(installed, tmp_path):
    venv, _, _ = installed
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "agent:\n  id: gw-press-3\n  data_dir: state\nsources:\n  broker:\n    type: mqtt\n    port: 1883\n"
    )
    r = run_installed(venv, tmp_path, "edge-agent", "validate", str(cfg))
    assert r.returncode == 0 and r.stdout.startswith("ok: "), r.stdout + r.stderr
    r = run_installed(venv, tmp_path, "model-packager", "keygen", "fleet")
    assert r.returncode == 0 and (tmp_path / "fleet.pub").is_file(), r.stderr
    r = run_installed(venv, tmp_path, "edge-sim", "demo", "--help")
    assert r.returncode == 0 and "var/demo in the current folder" in r.stdout, r.stdout + r.stderr
    # the demo's work folder, given relative, reaches its agents absolute: their config (in the installation)
    # reads a relative path from its own folder, inside the venv
    probe = (
        "from pathlib import Path; from simulators.demo import Demo; from simulators.launcher import Narrator\n"
        "print(Demo(Path('var/demo'), Narrator(), fast=True, short=True).pki)"
    )
    r = run_installed(venv, tmp_path, "python", "-c", probe)
    assert r.returncode == 0 and Path(r.stdout.strip()) == tmp_path / "var" / "demo" / "pki", (
        r.stdout + r.stderr
    )
    r = run_installed(venv, tmp_path, "python", "-c", "import edge_agent; print(edge_agent.__file__)")
    assert Path(r.stdout.strip()).is_relative_to(venv), r.stdout + r.stderr


def test_the_source_archive_holds_the_units_example_configs_and_docs(tmp_path):
    """docs/gateway-install.md has an installer copy a systemd unit and an example config, and the agent's and
    the trainer's messages point to docs/*.md: the wheel holds only the packages, so the release's source
    archive must carry them."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    for folder in (*PACKAGES, "deploy", "configs", "docs"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = subprocess.run(
        [sys.executable, "-c", f"import setuptools.build_meta as b; print(b.build_sdist({str(tmp_path)!r}))"],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    sdist = tmp_path / r.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    wanted = [
        str(f.relative_to(ROOT))
        for folder in ("deploy", "configs", "docs")
        for f in (ROOT / folder).rglob("*")
        if f.is_file()
    ]
    assert wanted and not [w for w in wanted if w not in names], sorted(set(wanted) - names)
