"""The registry orders a package's versions as agents and deployments do (semantic versions): a release
candidate published before its release used to tie with it, and ``latest`` (what a deployment without a
version rolls out, and what a build is compared with) gave the candidate."""

from __future__ import annotations

from cloud_trainer.registry import Registry
from tests.support.models import make_keypair, make_package


def test_latest_is_the_release_not_its_candidate_published_before_it(tmp_path):
    key, _ = make_keypair(tmp_path / "keys")
    reg = Registry(tmp_path / "registry")
    for version in ("1.0.0", "1.1.0-rc.1", "1.1.0", "1.1.0-rc.2", "1.2.0-rc.1"):
        pkg = make_package(tmp_path, kind="signal", version=version, key=key, out_dir=tmp_path / version)
        reg.publish(pkg, [], {}, None, None)
    assert reg.latest("machine-health")["version"] == "1.2.0-rc.1"
    reg.set_status("machine-health", "1.2.0-rc.1", "withdrawn")
    assert reg.latest("machine-health")["version"] == "1.1.0"
    assert reg.next_version("machine-health") == "1.3.0"
    assert reg.next_version("machine-health", "major") == "2.0.0"
