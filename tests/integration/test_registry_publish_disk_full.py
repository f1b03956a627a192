"""Publishing into a registry whose disk fills (a real small tmpfs): a publish that could write the package's
folder but not the index leaves no version the fleet serves, and once the disk has room the same version is
published, as a training run does again after the failure."""

from __future__ import annotations

import math
import shutil

import pytest

from cloud_trainer.registry import Registry
from tests.support.models import make_keypair, make_package
from tests.support.peers import small_tmpfs


def test_a_publish_cut_short_by_a_full_disk_is_published_once_the_disk_has_room(tmp_path):
    key, _ = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path / "b", kind="signal", version="1.0.0", key=key, out_dir=tmp_path / "b")
    with small_tmpfs(tmp_path / "registry", "4m") as root:
        reg = Registry(root)
        (root / "machine-health").mkdir()
        filler = root / "filler"
        # room for the package's copy, not for the index written after it
        filler.write_bytes(
            b"\0" * (shutil.disk_usage(root).free - math.ceil(pkg.stat().st_size / 4096) * 4096)
        )
        free = shutil.disk_usage(root).free
        with pytest.raises(OSError):
            reg.publish(pkg, [], {}, None, None)
        assert reg.get("machine-health", "1.0.0") is None and reg.list("machine-health") == []
        # the copy nothing serves holds no space (it kept the disk full for the service's samples)
        assert shutil.disk_usage(root).free == free, list(root.rglob("*"))
        filler.unlink()
        entry = reg.publish(pkg, [], {}, None, None)  # the run again: the version it failed to publish
        assert entry["version"] == "1.0.0" and reg.get("machine-health", "1.0.0") == entry
        assert reg.package_path(entry).read_bytes() == pkg.read_bytes()
        assert sorted(p.name for p in (root / "machine-health").iterdir()) == ["1.0.0", "index.json"]


def test_a_publish_the_full_disk_cut_short_while_copying_leaves_the_space_it_had(tmp_path):
    """The registry shares the service's data folder (samples, fleet.db): a publish that failed part way through
    the package's copy left its `.VERSION.part` folder holding the space that was left, so the disk stayed full
    for every upload after it until someone deleted the folder by hand."""
    key, _ = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path / "b", kind="signal", version="1.0.0", key=key, out_dir=tmp_path / "b")
    with small_tmpfs(tmp_path / "data", "4m") as root:
        reg = Registry(root / "registry")
        filler = root / "filler"
        filler.write_bytes(
            b"\0" * (shutil.disk_usage(root).free - pkg.stat().st_size // 2)
        )  # half of it fits
        free = shutil.disk_usage(root).free
        with pytest.raises(OSError):
            reg.publish(pkg, [], {}, None, None)
        assert reg.list("machine-health") == []
        assert shutil.disk_usage(root).free == free, list((root / "registry").rglob("*"))
        filler.unlink()
        entry = reg.publish(pkg, [], {}, None, None)
        assert reg.package_path(entry).read_bytes() == pkg.read_bytes()
        assert sorted(p.name for p in (root / "registry" / "machine-health").iterdir()) == [
            "1.0.0",
            "index.json",
        ]


def test_a_withdraw_the_full_disk_refuses_says_so_in_one_line_and_withdraws_nothing(tmp_path, capsys):
    """`cloud-trainer withdraw` on a registry whose disk is full ended in a traceback (OSError), which an admin
    stopping a bad version had to read to learn that nothing was withdrawn."""
    from cloud_trainer.registry import main_withdraw

    key, _ = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path / "b", kind="signal", version="1.0.0", key=key, out_dir=tmp_path / "b")
    with small_tmpfs(tmp_path / "registry", "4m") as root:
        reg = Registry(root)
        reg.publish(pkg, [], {}, None, None)
        filler = root / "filler"
        with pytest.raises(OSError):
            filler.write_bytes(b"\0" * (shutil.disk_usage(root).free + 4096))
        capsys.readouterr()
        assert main_withdraw(["--registry", str(root), "machine-health", "1.0.0", "--reason", "bad"]) == 1
        err = capsys.readouterr().err
        assert "NOT withdrawn" in err and "No space left on device" in err and err.count("\n") == 1, err
        assert reg.get("machine-health", "1.0.0")["status"] == "published"
        filler.unlink()
        assert main_withdraw(["--registry", str(root), "machine-health", "1.0.0", "--reason", "bad"]) == 0
        assert reg.get("machine-health", "1.0.0")["status"] == "withdrawn"
