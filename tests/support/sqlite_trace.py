"""The statements SQLite runs on the connections a test opens from now on: what a piece of code reads, looked at."""

from __future__ import annotations

import sqlite3


def traced_statements(monkeypatch) -> list[str]:
    """Every statement run on the SQLite connections opened after this call (``sqlite3.connect`` patched through
    ``monkeypatch``: ``monkeypatch.undo()`` ends it for connections opened after), in order."""
    statements: list[str] = []
    real_connect = sqlite3.connect

    def traced(*args, **kw):
        con = real_connect(*args, **kw)
        con.set_trace_callback(statements.append)
        return con

    monkeypatch.setattr(sqlite3, "connect", traced)
    return statements
