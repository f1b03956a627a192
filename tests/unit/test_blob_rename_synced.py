"""A blob's rename is on the disk once the store returns its digest: the folder it was renamed into is fsynced
after the rename (and a folder made for it, in its parent). Without it, after a power cut a sample's blob could be
gone while the fleet store's record, committed and acknowledged (the agent dropped its copy), still names it.

No peer here can cut the power under a file system, so the order is read from the calls themselves: ``os.fsync``
and ``os.replace`` recorded (each fsync by the path its descriptor names) while a real store writes real files."""

from __future__ import annotations

import os
from pathlib import Path

from cloud_trainer.blobs import LocalBlobStore


def _recorded(monkeypatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def recorded_replace(src, dst, *a, **kw):
        calls.append(("replace", str(Path(dst).resolve())))
        return replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)
    return calls


def test_a_blob_and_the_folders_made_for_it_are_synced_after_its_rename(tmp_path, monkeypatch):
    root = (tmp_path / "blobs").resolve()
    store = LocalBlobStore(root)
    staged = store.stage(b"a sample")  # (the fleet store's path: staged before the batch's transaction)
    calls = _recorded(monkeypatch)
    digest = store.commit(staged)
    put = store.put_bytes(b"another sample")  # its own folder, sha256/ already there
    monkeypatch.undo()

    blob = root / "sha256" / digest[:2] / digest
    renamed = calls.index(("replace", str(blob)))
    after = calls[renamed:]
    assert ("fsync", str(blob.parent)) in after, calls
    assert ("fsync", str(root / "sha256")) in after, calls  # the folder ab/ made for it
    assert ("fsync", str(root)) in after, calls  # sha256/, made for it
    other = root / "sha256" / put[:2] / put
    assert ("fsync", str(other.parent)) in calls[calls.index(("replace", str(other))) :], calls
    assert store.get_bytes(digest) == b"a sample"
