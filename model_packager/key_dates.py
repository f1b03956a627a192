"""The end of trust a public key file may state (``not-after:``), read without the cryptography library:
the agent's config check reads it at every start, and the agent's own process never loads that library
(its install child verifies packages)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from model_packager.errors import SignatureError
from model_packager.regular import open_regular_fd, read_upto

NOT_AFTER = "not-after:"
# a public key file: a PEM block of ~113 bytes and a not-after line; what is larger is no key file
KEY_MAX_BYTES = 64 * 1024


def read_key_file(path: str | Path) -> bytes:
    """The bytes of a key file, a regular file of at most ``KEY_MAX_BYTES``; ``OSError`` whose ``strerror`` says
    what it is otherwise (``a named pipe, not a regular file``). Its type is looked at before it is opened: a
    named pipe is never waited on (a trusted key made a pipe held the install child in its read until the 600-s
    bound of every install), a device never opened (a serial line's DTR raised, a watchdog armed), and a socket
    is named as one."""
    fd = open_regular_fd(path, says="not a regular file")
    try:
        data = read_upto(fd, KEY_MAX_BYTES)
    finally:
        os.close(fd)
    if len(data) > KEY_MAX_BYTES:
        raise OSError(errno.EFBIG, f"larger than {KEY_MAX_BYTES} bytes, more than a public key file holds")
    return data


def key_not_after(path: str | Path) -> float | None:
    """When trust in the public key of ``path`` ends (epoch seconds), from a line ``not-after: 2027-06-30``
    (trusted through the end of that day, UTC) or ``not-after: 2027-06-30T12:00:00+00:00`` before its PEM block
    (text that PEM readers skip, RFC 7468); None without one. A package signed by the key is no longer installed
    after it (``SignatureError`` code ``key_expired``). ``SignatureError`` ``bad_key`` for a date it cannot
    read, naming the file."""
    from datetime import UTC, datetime, time, timedelta

    try:
        head = read_key_file(path).split(b"-----BEGIN", 1)[0].decode("utf-8", "replace")
    except OSError:
        return None  # (load_public_key says why)
    for line in head.splitlines():
        if not line.strip().lower().startswith(NOT_AFTER):
            continue
        raw = line.strip()[len(NOT_AFTER) :].strip()
        try:
            if len(raw) == 10:  # a day: trusted through its end
                day = datetime.fromisoformat(raw).date()
                if day == day.max:  # 9999-12-31 ("never"): the next day is past what a date holds
                    return datetime.combine(day, time.max, UTC).timestamp()
                return datetime.combine(day + timedelta(days=1), time(), UTC).timestamp()
            when = datetime.fromisoformat(raw)
            if when.tzinfo is None:
                raise ValueError("no time zone")
            return when.timestamp()
        except (ValueError, OverflowError):  # (a time past year 9999 once in UTC overflows)
            raise SignatureError(
                f"trusted key {path}: not-after {raw[:40]!r} is not a date (2027-06-30, or "
                "2027-06-30T12:00:00+00:00 with its time zone)",
                code="bad_key",
            ) from None
    return None
