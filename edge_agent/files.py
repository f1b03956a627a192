"""Small state files the agent keeps under its data_dir, written so that a power cut leaves the old file or
the new one, never half of either."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any

_TEMP = re.compile(r"\..+\.([0-9]+)\.tmp")  # atomic_write_json's temporary file: .<name>.<pid>.tmp
# what read_json_state reads at most: far over what any state file the agent writes holds (the fleet config's
# state.json, 100 refusals and 50 outcomes of at most 500 characters each: ~0.1 MB; fleet/commands.json, 200 ids)
STATE_FILE_MAX_BYTES = 4 * 1024 * 1024


def read_json_state(path: Path, max_bytes: int = STATE_FILE_MAX_BYTES) -> Any:
    """The JSON document of one of the agent's state files, read bounded. The data folder is a disk anyone with
    the gateway's shell can edit: read whole, a named pipe there waited for ever (the agent's start with it), a
    file of gigabytes or a link to ``/dev/zero`` filled the memory, and a deep nesting raised RecursionError.
    ``FileNotFoundError`` when there is none; another ``OSError`` whose ``strerror`` says why it is not read (``a
    named pipe, not a file``, ``larger than ... bytes``); ``ValueError`` when it is not UTF-8 JSON (nested past
    the parser's depth included)."""
    from model_packager.package import open_regular

    with open_regular(path) as fh:  # a regular file only: no pipe waited on, no device read
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes, the most it may hold")
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested deeper than JSON is read") from None


def why_unread(exc: BaseException) -> str:
    """``read_json_state``'s failure in a few words (an ``OSError``'s own text, without its number)."""
    return str(exc.strerror or exc) if isinstance(exc, OSError) else str(exc)


def atomic_write_json(path: Path, data: dict) -> None:
    """``data`` as compact JSON at ``path``: a temporary file beside it (``.<name>.<pid>.tmp``), fsynced, renamed
    over it, and the folder fsynced (best effort) so the rename itself survives a power cut
    (``model_packager.durable``, which the cloud's registry writes through too)."""
    from model_packager.durable import write_atomically

    write_atomically(path, json.dumps(data, separators=(",", ":")).encode())


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
