"""Open and read a file only when it is a regular file: a named pipe is never waited on, a device never opened
nor read, whatever a path was made (a package, a trusted key, an agent's state file). Pure ``os``/``stat``: the
agent's config check reads key files with it without loading ``yaml``, ``pydantic`` or ``cryptography``."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

NOT_FILES = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind(mode: int) -> str:
    """What a file of ``mode`` is, said to a user (``a named pipe``)."""
    return next((w for test, w in NOT_FILES if test(mode)), "not a regular file")


def open_regular_fd(path: str | Path, *, says: str = "not a file") -> int:
    """A descriptor open for reading on ``path``, a regular file (links followed); ``OSError`` whose ``strerror``
    says what it is otherwise (``a named pipe, not a file``; ``says``: the words after the comma). Its type is
    looked at before it is opened: opening a device has effects of its own (a serial line's DTR raised, a
    watchdog armed) and a socket cannot be opened at all (``No such device or address``); it is then opened
    without blocking (a file replaced by a named pipe in between) and looked at again."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, f"{kind(mode)}, {says}")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode  # (replaced between the two)
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, f"{kind(mode)}, {says}")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str | Path, *, says: str = "not a file") -> BinaryIO:
    """``open(path, "rb")`` for a regular file only (see ``open_regular_fd``)."""
    fd = open_regular_fd(path, says=says)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_upto(fd: int, max_bytes: int) -> bytes:
    """What ``fd`` gives until its end, but no more than ``max_bytes + 1`` bytes (one past a bound is enough to
    refuse), in pieces as a pipe's writer sends them."""
    chunks: list[bytes] = []
    got = 0
    while got <= max_bytes:
        chunk = os.read(fd, min(1 << 20, max_bytes + 1 - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
