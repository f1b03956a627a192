"""A publish's package and the index that lists it are on the disk before the renames that make them visible: the
package's copy was never fsynced and the index was written and renamed without one, so after a power cut the index
could list a version whose package was zero-length or torn (agents downloaded it and refused it at every retry).

No peer here can cut the power under a file system, so the order is read from the calls themselves: ``os.fsync``
and ``os.replace`` recorded (each fsync by the path its descriptor names) while a real publish runs on real files."""

from __future__ import annotations

import os
from pathlib import Path

from cloud_trainer.registry import Registry
from tests.support.models import make_keypair, make_package


def test_a_published_package_and_its_index_are_synced_before_their_renames(tmp_path, monkeypatch):
    key, _ = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path / "b", kind="signal", version="1.1.0", key=key, out_dir=tmp_path / "b")
    report = tmp_path / "b" / "report.md"
    report.write_text("# report\n")
    root = (tmp_path / "registry").resolve()
    calls: list[tuple[str, str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), ""))
        return fsync(fd)

    def recorded_replace(src, dst, *a, **kw):
        calls.append(("replace", str(Path(src).resolve()), str(Path(dst).resolve())))
        return replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)
    entry = Registry(root).publish(pkg, [report], {}, None, None)
    monkeypatch.undo()

    folder = root / entry["name"] / "1.1.0"
    part = folder.with_name(".1.1.0.part")
    published = next(i for i, c in enumerate(calls) if c == ("replace", str(part), str(folder)))
    synced = {c[1] for c in calls[:published] if c[0] == "fsync"}
    assert {str(part / pkg.name), str(part / "report.md"), str(part)} <= synced, calls
    assert ("fsync", str(folder.parent), "") in calls[published:], calls

    index = folder.parent / "index.json"
    listed = next(i for i, c in enumerate(calls) if c[0] == "replace" and c[2] == str(index))
    assert listed > published, calls
    assert ("fsync", calls[listed][1], "") in calls[published:listed], calls  # the index's bytes
    assert ("fsync", str(folder.parent), "") in calls[listed:], calls  # its rename
    assert (folder / pkg.name).read_bytes() == pkg.read_bytes()
