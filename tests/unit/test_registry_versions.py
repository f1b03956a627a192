"""The registry orders a package's versions as agents and deployments do (semantic versions): a release
candidate published before its release used to tie with it, and ``latest`` (what a deployment without a
version rolls out, and what a build is compared with) gave the candidate."""

from __future__ import annotations

import json
import logging

import pytest

from cloud_trainer.registry import Registry, RegistryError
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


def test_publishes_of_one_model_at_once_each_leave_the_index_naming_the_files_it_lists(tmp_path):
    """Two builds publishing one model at the same moment (both took the same ``next_version``, or two versions):
    the index listed a version whose folder the other publish had removed, listed one version twice with the
    other's package in its folder (an agent downloaded bytes of another digest), or lost a version whose publish
    had returned. Now one of the same version is refused as already published; both of two versions are listed."""
    import threading

    from model_packager import package_digest

    key, _ = make_keypair(tmp_path / "keys")
    pkgs = [
        make_package(tmp_path, kind="signal", version=v, key=key, out_dir=tmp_path / v)
        for v in ("1.1.0", "1.2.0")
    ]
    for attempt in range(3):
        for pair, published in (((0, 0), 1), ((0, 1), 2)):
            reg = Registry(tmp_path / f"registry-{attempt}-{pair[1]}")
            start, refused = threading.Barrier(2), []

            def publish(pkg, start=start, reg=reg, refused=refused):
                start.wait()
                try:
                    reg.publish(pkg, [], {}, None, None)
                except RegistryError as exc:
                    refused.append(str(exc))

            threads = [threading.Thread(target=publish, args=(pkgs[i],)) for i in pair]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            entries = reg.list("machine-health")
            assert len(entries) == published == 2 - len(refused), (entries, refused)
            assert all("already in the registry" in r for r in refused)
            for e in entries:
                assert package_digest(reg.package_path(e)) == e["digest"]


def test_a_withdrawal_on_a_mistyped_registry_path_or_package_name_creates_nothing(tmp_path, capsys):
    """The publish lock made the registry's folder and a lock file before the package was looked up: a withdrawal
    on a mistyped ``--registry`` created that path (and ``.<name>.lock`` in it), one of a mistyped name left its lock
    file. Refused with a line naming the path or the package; nothing made."""
    from cloud_trainer.registry import main_withdraw

    typo = tmp_path / "registy"
    assert main_withdraw(["--registry", str(typo), "part-inspection", "1.0.0", "--reason", "a defect"]) == 2
    err = capsys.readouterr().err
    assert f"--registry {typo}: no such folder; nothing was withdrawn or created" in err, err
    assert not typo.exists()
    root = Registry(tmp_path / "registry").root
    assert main_withdraw(["--registry", str(root), "part-inspction", "1.0.0", "--reason", "a defect"]) == 2
    err = capsys.readouterr().err
    assert f"part-inspction 1.0.0 is not in the registry {root}: it has no package 'part-inspction'" in err, (
        err
    )
    assert list(root.iterdir()) == []


def test_builds_choosing_a_version_at_once_each_get_their_own_and_both_publish(tmp_path):
    """Two builds without ``--version`` both took ``next_version`` (1.1.0) when they evaluated; the one that
    published second failed then (``versions are immutable``), after its whole training. The version a build
    chooses is reserved under the package's lock as it is chosen: the other build gets the next one, both publish
    in either order, and nothing of the reservations is left."""
    from concurrent.futures import ThreadPoolExecutor

    key, _ = make_keypair(tmp_path / "keys")
    reg = Registry(tmp_path / "registry")
    pkg = make_package(tmp_path, kind="signal", version="1.0.0", key=key, out_dir=tmp_path / "1.0.0")
    reg.publish(pkg, [], {}, None, None)
    with ThreadPoolExecutor(3) as pool:  # three builds' evaluations at once
        chosen = sorted(pool.map(lambda _: reg.reserve_version("machine-health"), range(3)))
    assert chosen == ["1.1.0", "1.2.0", "1.3.0"]  # was: 1.1.0 for each
    assert reg.next_version("machine-health") == "1.4.0"  # a reserved number is not chosen again
    for version in reversed(chosen):  # published in another order than chosen
        pkg = make_package(tmp_path, kind="signal", version=version, key=key, out_dir=tmp_path / version)
        assert reg.publish(pkg, [], {}, None, None)["version"] == version
    assert sorted(e["version"] for e in reg.list("machine-health")) == ["1.0.0", *chosen]
    assert (
        not list((reg.root / "machine-health").glob(".*")) and reg.next_version("machine-health") == "1.4.0"
    )


def test_a_package_whose_index_was_edited_into_no_list_leaves_the_others_found_by_digest(tmp_path, caplog):
    """The fleet service finds each package an agent downloads by its digest across the tenant's registry
    (``by_digest``). One package's ``index.json`` edited by hand into valid JSON that is not a list of versions
    (or a list holding a non-object, or no JSON at all) made every download of the tenant whose package sorts
    after it fail as an internal error of the service (``TypeError: 'int' object is not iterable``). That package
    is skipped, logged; its own readers are told which file is wrong."""
    reg = Registry(tmp_path / "registry")
    entry = {
        "name": "part",
        "version": "1.0.0",
        "status": "published",
        "digest": "f" * 64,
        "package": "p.edgepkg",
    }
    (reg.root / "part").mkdir()
    (reg.root / "part" / "index.json").write_text(json.dumps([entry]))
    (reg.root / "aa-other").mkdir()
    for damaged, what in (
        ("7", "a JSON int"),
        ('{"versions": []}', "a JSON dict"),
        ("[1]", "a JSON list"),
        ("[{", "Expecting"),
    ):
        (reg.root / "aa-other" / "index.json").write_text(damaged)
        assert reg.by_digest("f" * 64, withdrawn=False) == reg.root / "part" / "1.0.0" / "p.edgepkg", damaged
        assert "package aa-other skipped" in caplog.text
        with pytest.raises(ValueError, match=what):
            reg.latest("aa-other")


def test_a_reservation_no_build_published_is_removed_once_stale_and_its_number_chosen_again(tmp_path, caplog):
    """A build that reserved a version and never published it (killed, its gate failed after all) left
    ``<name>/.<version>.reserved`` for good, and its number unused for good: nothing swept them. The next
    reservation removes those older than ``STALE_RESERVATION_S`` (said in a WARNING) and may choose that number
    again; a younger one (a build still under way) is kept and its number is not chosen."""
    import os
    import time

    import cloud_trainer.registry as registry_module

    STALE_RESERVATION_S = getattr(registry_module, "STALE_RESERVATION_S", 14 * 86400.0)  # (defined since)
    reg = Registry(tmp_path / "registry")
    live, stale = reg.reserve_version("machine-health"), reg.reserve_version("machine-health")
    assert (live, stale) == ("1.0.0", "1.1.0")
    folder = reg.root / "machine-health"
    long_ago = time.time() - STALE_RESERVATION_S - 60
    os.utime(folder / f".{stale}.reserved", (long_ago, long_ago))
    young = long_ago + 3600  # older than any build, but inside the bound: a build still under way
    os.utime(folder / f".{live}.reserved", (young, young))
    with caplog.at_level(logging.WARNING, logger="cloud_trainer.registry"):
        assert reg.reserve_version("machine-health") == "1.1.0"  # was: 1.2.0, 1.1.0 unused for good
    assert sorted(p.name for p in folder.glob(".*")) == [".1.0.0.reserved", ".1.1.0.reserved"]
    assert "removed 1 reservation(s)" in caplog.text and "(1.1.0)" in caplog.text


def test_withdrawals_see_a_withdrawal_that_a_network_file_systems_cached_attributes_hide(
    tmp_path, monkeypatch
):
    """``Registry.withdrawals`` read the index again only when its ``stat()`` changed; the registry shared by
    replicas on a network file system, whose client answers ``stat()`` from attributes it keeps for up to a minute
    (here: the index's ``stat()`` before the withdrawal, as such a client gives it), a withdrawal made by another
    host was missed that long. Its mark is taken from the file opened (which such a client checks with its server)."""
    import pathlib

    reg = Registry(tmp_path / "registry")
    index = reg.index_path("machine-health")
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps([{"name": "machine-health", "version": "1.0.0", "status": "published"}]))
    assert reg.withdrawals("machine-health") == {}
    cached, real_stat = index.stat(), pathlib.Path.stat
    Registry(tmp_path / "registry").withdraw("machine-health", "1.0.0", "drifts")  # another host
    monkeypatch.setattr(pathlib.Path, "stat", lambda p, **kw: cached if p == index else real_stat(p, **kw))
    assert reg.withdrawals("machine-health") == {"1.0.0": "drifts"}  # was: {} (the cached attributes)
