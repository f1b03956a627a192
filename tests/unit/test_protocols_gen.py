"""The committed protocols/gen matches what the .proto files generate."""

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
