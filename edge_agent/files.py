"""Small state files the agent keeps under its data_dir, written so that a power cut leaves the old file or
the new one, never half of either."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

_TEMP = re.compile(r"\..+\.([0-9]+)\.tmp")  # atomic_write_json's temporary file: .<name>.<pid>.tmp


def atomic_write_json(path: Path, data: dict) -> None:
    """``data`` as compact JSON at ``path``: a temporary file beside it, fsynced, renamed over it, and the
    folder fsynced (best effort) so the rename itself survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def remove_stale_temps(folder: Path) -> list[str]:
    """Remove the temporary files ``atomic_write_json`` left in ``folder`` when its process was killed between
    writing one and renaming it (kill -9, a power cut, the out-of-memory killer): named by that process's
    pid, so no later write replaces them, and each unclean end could leave one more for good. Call it only
    while holding the data folder's lock (no other process writes there then). Returns the names removed."""
    gone: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return gone
    for e in entries:
        m = _TEMP.fullmatch(e.name)
        if m is None or int(m.group(1)) == os.getpid() or not e.is_file(follow_symlinks=False):
            continue
        try:
            os.unlink(e.path)
            gone.append(e.name)
        except OSError:
            pass
    return gone
