"""The outbox's error type, apart from the store so that catching it (the CLI) does not import sqlite3."""

from __future__ import annotations


class OutboxError(RuntimeError):
    """The outbox cannot open its disk store (a full or read-only disk, a folder it may not write), or it
    is not open: the message names the folder and the cause; the agent does not start."""
