"""`edge-agent validate` verifies each slot's configured package as the agent's install does, and says what the agent
will do with one it refuses (signed by a key the gateway does not trust, damaged, a refused version): a `warning:`
line naming the slot, the file and the reason (it said ok, and the agent's start was the first to tell). The agent
starts all the same: on the package installed in the slot, or, with none, with the slot failed and the rest
serving (tests/integration/test_slot_failed_at_start.py)."""

from __future__ import annotations

import pytest
import yaml

from edge_agent.cli import main
from tests.support.models import make_keypair, make_package


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("validate-packages")
    key, pub = make_keypair(tmp / "keys")
    _, other_pub = make_keypair(tmp / "other")
    return make_package(tmp, kind="vision", version="1.0.0", key=key, heatmap=False), pub, other_pub


def _config(tmp_path, pkg, pub, **slot) -> str:
    (tmp_path / "cam").mkdir(exist_ok=True)
    cfg = {
        "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
        "trusted_keys": [str(pub)],
        "http": {"enabled": False},
        "sources": {"cam": {"type": "camera", "url": str(tmp_path / "cam"), "fps": 1}},
        "models": {"vision": {"package": str(pkg), "engine": "onnxruntime", **slot}},
        "pipelines": [{"name": "inspect", "source": "cam", "model": "vision"}],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.parametrize("bad", ["untrusted key", "truncated", "refused version"])
def test_validate_names_a_package_the_agent_would_refuse(kit, tmp_path, capsys, bad):
    pkg, pub, other_pub = kit
    slot: dict = {}
    said = {
        "untrusted key": "which is not among the trusted keys",
        "truncated": "vision.edgepkg",
        "refused version": "refused_versions",
    }[bad]
    if bad == "untrusted key":
        pub = other_pub  # the package's signer is not among the gateway's keys (a rotation not arrived yet)
    elif bad == "truncated":
        data = pkg.read_bytes()
        pkg = tmp_path / "vision.edgepkg"
        pkg.write_bytes(data[: len(data) // 2])
    else:
        slot["refused_versions"] = ["1.0.0"]
    path = _config(tmp_path, pkg, pub, **slot)
    assert main(["validate", path]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "models.vision.package" in ln]
    assert len(lines) == 1 and lines[0].startswith(
        f"warning: {path}: models.vision.package: {pkg} is refused"
    ), err
    assert said in lines[0], lines
    assert "no package is installed in slot 'vision' yet: the agent starts with the slot failed" in lines[0]

    # a slot that holds an installed package starts on it: said, not refused
    (tmp_path / "data" / "models" / "vision" / "part-inspection-1.0.0-0123456789ab").mkdir(parents=True)
    assert main(["validate", path]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and said in err and "the slot starts on a package installed in" in err, err


def test_validate_passes_a_package_the_agent_would_install(kit, tmp_path, capsys):
    pkg, pub, _ = kit
    assert main(["validate", _config(tmp_path, pkg, pub)]) == 0
    out = capsys.readouterr()
    assert "models.vision.package" not in out.err and out.out.startswith("ok:"), out
