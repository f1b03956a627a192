"""The committed protocols/gen matches what the .proto files generate."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_the_proto_files():
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) is needed to regenerate stubs")
    r = subprocess.run(
        [sys.executable, "-m", "protocols.generate", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_the_check_passes_over_the_generators_version_stamps_only():
    """A patch release of grpcio-tools (1.85.1 -> 1.85.4) rewrote GRPC_GENERATED_VERSION and nothing else, and the
    check called the committed stubs stale on a fresh install: only the stamps are passed over, never a change in
    what the stubs say."""
    from protocols.generate import GEN, unstamped

    for path in GEN.glob("*.py"):
        text = path.read_text()
        bumped = (
            text.replace("GRPC_GENERATED_VERSION = '", "GRPC_GENERATED_VERSION = '9.")
            .replace("# Protobuf Python Version: ", "# Protobuf Python Version: 9.")
            .replace("_runtime_version.Domain.PUBLIC,\n    ", "_runtime_version.Domain.PUBLIC,\n    9")
        )
        assert unstamped(bumped) == unstamped(text), path.name
        if "GRPC_GENERATED_VERSION" in text:
            assert bumped != text
        assert (
            unstamped(text.replace("edge.fleet.v1", "edge.fleet.v2")) != unstamped(text)
            or "edge.fleet" not in text
        )


def _tree(tmp_path: Path, grpcio: str = "", protobuf: str = "") -> Path:
    """A copy of protocols/ and pyproject.toml, its stubs' stamps set to ``grpcio`` / ``protobuf`` (as a newer or
    older grpcio-tools would write them) where given."""
    shutil.copytree(ROOT / "protocols", tmp_path / "protocols", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for path in (tmp_path / "protocols" / "gen").glob("*.py"):
        text = path.read_text()
        if grpcio:
            text = re.sub(
                r"^GRPC_GENERATED_VERSION = '[^']*'$",
                f"GRPC_GENERATED_VERSION = '{grpcio}'",
                text,
                flags=re.M,
            )
        if protobuf:
            text = re.sub(
                r"(_runtime_version\.Domain\.PUBLIC,)\s*\d+,\s*\d+,\s*\d+,",
                "\\1 " + ", ".join(protobuf.split(".")) + ",",
                text,
            )
            text = re.sub(
                r"^# Protobuf Python Version: \S+$",
                f"# Protobuf Python Version: {protobuf}",
                text,
                flags=re.M,
            )
        path.write_text(text)
    return tmp_path


def _check(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "protocols.generate", "--check"], cwd=tree, capture_output=True, text=True
    )


def test_stubs_from_a_newer_generator_than_the_installed_one_fail_the_check(tmp_path):
    """Stubs regenerated with a newer grpcio-tools and committed import only on a grpcio and protobuf that new
    (grpcio's RuntimeError, protobuf's VersionError under the versions pyproject.toml allows): the check that
    passes over a newer generator's stamps (1.85.1 stubs under grpcio-tools 1.85.4) must not pass over these."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) is needed to regenerate stubs")
    tree = _tree(tmp_path, grpcio="1.99.0", protobuf="7.99.0")
    r = _check(tree)
    assert r.returncode == 1, r.stderr
    assert "fleet_pb2_grpc.py was generated for grpcio>=1.99.0" in r.stderr, r.stderr
    assert "fleet_pb2.py was generated for protobuf>=7.99.0" in r.stderr, r.stderr
    assert "sparkplug_b_pb2.py was generated for protobuf>=7.99.0" in r.stderr, r.stderr
    # the advice is the upgrade to the grpcio-tools that made them, not the one already installed
    assert r.stderr.count("pip install 'grpcio-tools>=1.99.0'") == 3, r.stderr
    assert "stale" not in r.stderr  # what the stubs say is still what the .proto files say
    # what such stubs do on this install (grpcio and protobuf older than 1.99 / 7.99); the gRPC stub imports
    # fleet_pb2 first, whose protobuf check is set aside to reach grpcio's own
    env = {**os.environ, "TEMPORARILY_DISABLE_PROTOBUF_VERSION_CHECK": "true"}
    for module, error, run_env in (
        ("fleet_pb2_grpc", "RuntimeError", env),
        ("sparkplug_b_pb2", "VersionError", None),
    ):
        imp = subprocess.run(
            [sys.executable, "-c", f"import protocols.gen.{module}"],
            cwd=tree,
            env=run_env,
            capture_output=True,
            text=True,
        )
        assert imp.returncode != 0 and f"{error}:" in imp.stderr, (module, imp.stderr)


def test_stubs_from_an_older_generator_than_the_installed_one_pass_the_check(tmp_path):
    """The case the stamps are passed over for: stubs of an earlier patch release (a fresh install takes the
    newest grpcio-tools), which every grpcio and protobuf that generator's own stubs import on imports too."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) is needed to regenerate stubs")
    r = _check(_tree(tmp_path, grpcio="1.85.0", protobuf="7.35.0"))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("dist", ["grpcio", "protobuf"])
def test_stubs_that_need_more_than_pyproject_allows_fail_the_check(tmp_path, dist):
    """pyproject.toml allowed grpcio>=1.66 and protobuf>=5.28 while the stubs refuse to import under grpcio 1.85.1
    and protobuf 7.35.1: an install at the allowed floors could not start the agent. The check names the stub's
    need and pyproject's requirement."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) is needed to regenerate stubs")
    stamp = {
        "grpcio": r"^GRPC_GENERATED_VERSION = '(\d+)\.(\d+)\.(\d+)'$",
        "protobuf": r"_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),",
    }[dist]
    found = [
        tuple(int(g) for g in m.groups())
        for p in (ROOT / "protocols" / "gen").glob("*.py")
        for m in re.finditer(stamp, p.read_text(), re.M)
    ]
    assert found, f"no stub carries a {dist} stamp"
    need = ".".join(map(str, max(found)))
    tree = _tree(tmp_path)
    pyproject = tree / "pyproject.toml"
    text, n = re.subn(rf'"{dist}>=[^"]*"', f'"{dist}>=1.0"', pyproject.read_text())
    assert n == 1
    pyproject.write_text(text)
    r = _check(tree)
    assert r.returncode == 1
    assert f"needs {dist}>={need} at import, but pyproject.toml allows {dist}>=1.0" in r.stderr


def test_regenerating_stubs_that_need_more_than_pyproject_allows_says_so(tmp_path):
    """`python -m protocols.generate` with a grpcio-tools newer than pyproject.toml's floors writes stubs that
    refuse to import at those floors: it says which floor to raise as it writes them."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) is needed to regenerate stubs")
    tree = _tree(tmp_path)
    pyproject = tree / "pyproject.toml"
    pyproject.write_text(re.sub(r'"grpcio>=[^"]*"', '"grpcio>=1.0"', pyproject.read_text()))
    r = subprocess.run([sys.executable, "-m", "protocols.generate"], cwd=tree, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "fleet_pb2_grpc.py needs grpcio>=" in r.stderr and "pyproject.toml allows grpcio>=1.0" in r.stderr


def test_stubs_made_by_a_newer_grpcio_tools_than_the_dev_extra_allows_fail_the_check():
    """Stubs regenerated with grpcio-tools 1.85.4 and pyproject.toml raised to grpcio>=1.85.4 passed the check while
    the dev extra still allowed grpcio-tools>=1.85.1: an existing environment keeps its 1.85.1 (nothing makes pip
    upgrade it), fails the check on those stubs, and regenerating with it writes them older again."""
    from protocols.generate import GEN, floor_problems

    stubs = {
        p.name: re.sub(
            r"^GRPC_GENERATED_VERSION = '[^']*'$",
            "GRPC_GENERATED_VERSION = '1.85.4'",
            p.read_text(),
            flags=re.M,
        )
        for p in GEN.glob("*.py")
        if p.name != "__init__.py"
    }
    text = re.sub(r'"grpcio>=[^"]*"', '"grpcio>=1.85.4"', (ROOT / "pyproject.toml").read_text())
    dev_at = re.sub(r'"grpcio-tools>=[^"]*"', '"grpcio-tools>=1.85.1"', text)
    problems = floor_problems(stubs, dev_at)
    assert any(
        "was made by grpcio-tools 1.85.4, but pyproject.toml's dev extra allows grpcio-tools>=1.85.1: raise it to "
        "grpcio-tools>=1.85.4" in p
        for p in problems
    ), problems
    assert floor_problems(stubs, re.sub(r'"grpcio-tools>=[^"]*"', '"grpcio-tools>=1.85.4"', text)) == []
