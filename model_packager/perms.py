"""Whether a file the agent trusts can be changed by every user of the machine.

The agent's trust rests on a few files: the package keys it trusts, and its data folder, where installed
packages are kept (each re-verified against those keys at every start). A file or folder that any user may
write (mode o+w), or a folder on the way to it that any user may write, hands that trust to every account of
the gateway. Pure ``os``/``stat``: the running agent checks its data folder with it without loading
``cryptography``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def writable_by_anyone(path: str | Path) -> Path | None:
    """The first of ``path`` (the link and what it points to, when it is a symbolic link) and the folders on
    the way to it that every user of the machine may change: mode o+w, except a folder on the way that has the
    sticky bit (others cannot rename or delete what is not theirs in it). ``path`` itself counts even with the
    sticky bit: in a folder of trusted keys anyone could add one. None when nothing is."""
    path = Path(os.path.abspath(path))
    seen: set[tuple[Path, bool]] = set()
    for start in (path, path.resolve()):
        for i, p in enumerate([start, *start.parents]):
            if (p, i == 0) in seen:
                continue
            seen.add((p, i == 0))
            try:
                st = os.stat(p)
            except OSError:
                continue  # a missing file: reported as such by whoever reads it
            if not st.st_mode & stat.S_IWOTH:
                continue
            if i > 0 and st.st_mode & stat.S_ISVTX:
                continue  # e.g. /tmp: others cannot replace or remove what is not theirs
            return p
    return None
