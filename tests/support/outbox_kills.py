"""Kill windows of the outbox: a real child process runs a script against a data folder and is killed with SIGKILL
(a power cut) where the script says; the test then starts the outbox again on that folder and counts the records."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# run first in every child; its argv is [the data folder, the repository, *the test's own]
PRELUDE = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[2])
import edge_agent.outbox.store as store
from edge_agent.outbox.settings import OutboxSettings
from tests.support.outbox_kills import CutAfterTheEpoch, cut_after, cut_before, filled, power_cut, renew_by_ack
"""


def killed_child(script: str, data: Path, *args: str, timeout_s: float = 120) -> Path:
    """Run ``PRELUDE + script`` in a child process on ``data``; it must end killed by SIGKILL (its stderr shown
    otherwise). Returns ``data``."""
    child = subprocess.run(
        [sys.executable, "-c", PRELUDE + script, str(data), str(ROOT), *args],
        capture_output=True,
        timeout=timeout_s,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    return data


def power_cut() -> None:
    """In the child: the power is cut here."""
    os.kill(os.getpid(), signal.SIGKILL)


class CutAfterTheEpoch:
    """In the child: a store's connection (``db``) whose statement writing the store's epoch cuts the power once done."""

    def __init__(self, db):
        self.db = db

    def execute(self, sql, *args):
        got = self.db.execute(sql, *args)
        if "INTO meta" in sql and ("'epoch'" in sql or (args and list(args[0])[:1] == ["epoch"])):
            power_cut()
        return got

    def __getattr__(self, name):
        return getattr(self.db, name)


def cut_after(where, name: str, when=None) -> None:
    """In the child: the power is cut right after ``where.name`` (a class's method, a module's function) returns,
    at its first call ``when(*args, **kw)`` says so (None: its first call)."""
    real = getattr(where, name)

    def cut(*args, **kw):
        result = real(*args, **kw)
        if when is None or when(*args, **kw):
            power_cut()
        return result

    setattr(where, name, cut)


def cut_before(where, name: str, when=None) -> None:
    """In the child: the power is cut as ``where.name`` is called, at its first call ``when(*args, **kw)`` says so
    (None: its first call), before it runs."""
    real = getattr(where, name)

    def cut(*args, **kw):
        if when is None or when(*args, **kw):
            power_cut()
        return real(*args, **kw)

    setattr(where, name, cut)


def filled(data: str, n: int = 3000, owner: tuple[str, str] | None = None):
    """In the child: the outbox of ``data`` opened, ``n`` results appended and committed; with the seqs of the first
    batch of 100 handed to a sender."""
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox

    ob = Outbox(OutboxSettings(commit_interval_ms=10, retention={}), data, owner=owner)
    ob.open()
    for i in range(n):
        ob.append("result", {"i": i, "pad": "p" * 200})
    ob.flush()
    return ob, [r.seq for r in ob.pending(100, 10**9)]


def renew_by_ack(ob, acked: list[int]) -> None:
    """In the child: the store turns corrupt and the cloud's ack of ``acked`` meets the damage, so the writer renews
    it; then waits for the kill the script set up."""
    damage_index(ob.path)
    ob.ack(acked)
    time.sleep(60)


def damage_index(path, index: str = "records_by_kind_t") -> None:
    """Zero the root page of one index of the records table, its page number read from ``sqlite_master`` (so
    whatever the file's layout): every row stays readable by its seq, every change to the table meets the
    damage (SQLITE_CORRUPT). Done after the WAL was folded into the file."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    page = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (index,)).fetchone()[0]
    con.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(bytes(page))
        f.flush()
        os.fsync(f.fileno())
