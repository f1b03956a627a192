"""Files written so that a power cut leaves the old file or the new one, never a zero-length or torn one: the
bytes are fsynced before the rename that makes them visible, and the folder after it (so the rename itself is on
the disk). The agent's state files (``edge_agent.files.atomic_write_json``) and the cloud registry's packages and
index (``cloud_trainer.registry``) are written through these; both may import this package, and not each other.

A rename without the fsync before it is ordered by nothing: after a power loss ext4 (``data=ordered`` without
``auto_da_alloc`` hitting), XFS and btrfs can show the new name holding zero bytes or a part of them."""

from __future__ import annotations

import os
from pathlib import Path


def sync_file(path: Path) -> None:
    """fsync the bytes of a file already written and closed (a copy ``shutil.copy2`` made)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that the names renamed or created in it survive a power cut. Best effort: a file
    system that cannot sync a folder (some network and FUSE ones refuse it) keeps what it can."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_atomically(path: Path, data: bytes, tmp: Path | None = None) -> None:
    """``data`` at ``path``: written to ``tmp`` beside it (by default ``.<name>.<pid>.tmp``), fsynced, renamed
    over it, and the folder fsynced. A failed write (a full disk) removes the temporary file, whose part held the
    room left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp or path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(path.parent)
