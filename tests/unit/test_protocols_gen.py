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
