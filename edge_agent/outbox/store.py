"""The durable outbox: SQLite in WAL mode in the agent's data folder; write first, send later,
delete only on the cloud's acknowledgement.

``append(kind, payload, sample=...)`` assigns the next sequence number of the outbox's *epoch*
(strictly increasing, never reused, also across restarts: the last one is stored with the rows)
and hands the row to a writer thread that commits in batches. A record's identity is
``(epoch, seq)``: the epoch is fixed when an outbox file is created and changes whenever the
outbox starts afresh (first start, a corrupt file moved aside, a wiped folder), so a fresh outbox
numbering from 1 again is never taken for a replay at the cloud. Epoch rule: a new file takes
``max(last epoch + 1, unix time in microseconds)``; the last epoch is kept outside the database
(``<data_dir>/outbox-epoch.json``, written before the new file is used), and the clock covers a
wiped data folder. A file written by a v1 agent (rows but no epoch) keeps epoch 0. The highest seq handed to a
sender is recorded in ``<data_dir>/outbox-sent`` before it leaves: a store that lost its last commits to the
disk (a garbled WAL tail is rolled back silently) numbers on after it, never reusing a seq the cloud has.

Costs: ``stats()`` reads counts kept in memory (exact, rebuilt once at open); retention, the budget's victims
and the sample-reference check each read one index range, so a full outbox costs nothing while idle. A record
larger than ``max_bytes / 16`` is refused at once (counted as a ``budget`` drop). A forward step of the wall
clock (NTP on a gateway without a battery-backed clock) moves the times of the records stamped before it, so
that retention does not drop them as that much older.

Durability, exactly (``fsync`` setting):
- ``always``: ``append`` returns after its row is committed and the WAL fsynced. Nothing that
  returned is lost by a crash or power loss.
- ``batch`` (default): rows are committed with ``synchronous=FULL`` every ``commit_interval_ms``
  or ``commit_batch`` rows, whichever comes first. A crash (kill -9, power loss) loses at most the
  rows appended since the last commit: at most ``commit_interval_ms`` of data, and never more than
  ``3 × commit_batch`` rows (the hand-over queue holds at most ``2 × commit_batch``; ``append``
  waits when it is full). ``flush()`` forces a commit.
- ``off``: as ``batch`` but ``synchronous=OFF``: a process crash loses at most the uncommitted
  batch; a power loss can lose more.
The async face (``await append_async(...)``, ``append_soon(...)``, ``await stats_async()``) runs
those calls on the outbox's own single thread, so the event loop never waits on a full hand-over
queue, a sample file or an fsync'd commit; one thread keeps the order of the appends made through
it, and ``flush()`` first lets every append already handed to it finish.
Sample bytes are written as content-addressed files (``samples/<sha256>``) before their row; a
file that no row references (a kill -9 between the two) is removed at the next ``open()``.

Budget: ``max_bytes`` bounds the bytes the outbox folder takes on disk: the database, its WAL and
shared-memory files and the sample files. The WAL is
bounded (``wal_autocheckpoint`` and ``journal_size_limit`` scaled to the budget) and freed pages
are given back (``auto_vacuum=INCREMENTAL``). After each commit the writer measures the folder;
past 90% of the budget it first checkpoints and vacuums, then drops rows by ``drop_policy``
(``lowest_priority_first``: samples, then results/telemetry, events and alarms last; or
``oldest_first``) until the folder is under 75% of it (room for what arrives until the next check). Per-kind retention (``max_age_s``)
drops old rows the same way. Every dropped record is counted per cause and kind (in memory for
this process, and cumulatively in the database) and the outbox records the drop itself as an
``outbox_budget`` / ``outbox_retention`` event carrying the epoch and the dropped seq ranges, so
the cloud stores the gap with its cause: at most one event per cause every 5 s (merged ranges), queued
with the next ``append`` or ``flush`` (a crash before then loses the event, not the counts).

A corrupt or truncated database file is detected at ``open()`` (``PRAGMA quick_check``; an empty file of a
known epoch too), moved aside as ``<data_dir>/outbox-corrupt/outbox.db.corrupt-<time>`` (outside the budgeted
folder; only the newest is kept; an ``outbox.dir`` on a disk of its own: ``outbox-corrupt`` beside it, a
rename on that disk) with one clear line, and a fresh outbox is started in a new epoch: the agent
keeps running. What is still readable in the old file is salvaged into the new epoch with its old seq (numbering
goes on after the old last seq, so an ack in flight for the old epoch names the same record, never another).
The outbox records an ``outbox_corrupt`` event (with the previous epoch and what was salvaged) as the first
record of the new epoch, so the cloud learns of the loss. While running, a store found corrupt (by a commit, a
drop, a reader) or removed, replaced or cut short under the agent is renewed the same way by the writer thread
(readers wait at a gate meanwhile; appends wait in the hand-over queue); records not read back count as
``corrupt:<kind>``. Records the cloud acknowledged whose DELETE met the damage are at the cloud: neither sent again
nor salvaged, nor counted as lost. (Durability never degrades silently: if the fresh file cannot be created at start,
``open()`` raises and the agent does not start; while running it is tried again every ``RENEW_RETRY_S``.)
Only SQLITE_CORRUPT / SQLITE_NOTADB (or a failed quick_check) mean a corrupt file: a full or read-only disk,
an I/O error or a folder it cannot open (FULL, IOERR, READONLY, CANTOPEN, an OSError) keeps the file where it
is and ``open()`` raises ``OutboxError`` naming the folder and the cause.

A disk that fills up or turns read-only while running: the writer thread never dies. A batch it cannot
commit (SQLite has rolled it back already) is dropped and counted as ``write_failed:<kind>``, the failure is
logged once per burst, and the outbox writes again by itself once there is room; the lost seq ranges go
out as one ``outbox_write_failed`` event after the first good commit (while the disk refuses, the event
would be lost too), and the counts are made durable with that commit. ``append`` waits at most
``APPEND_WAIT_S`` for room in the hand-over queue, then drops the record the same way (a sample file
that cannot be written too), so an agent's pipeline never hangs on its outbox; ``close()`` is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import queue
import random
import re
import shutil
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.outbox.errors import OutboxError
from edge_agent.outbox.settings import DropPolicy, FsyncPolicy, OutboxSettings
from protocols import json_codec
from protocols.events import Event, EventKind

log = logging.getLogger(__name__)

PRIORITY = {"event": 0, "alarm": 0, "result": 1, "telemetry": 1, "sample": 2}
# a row read out of a damaged store whose kind is none of PRIORITY's (NUL bytes, garbage, not text): no record of any
# kind, never copied nor counted as one (a copy at start counts it as ``corrupt:damaged``), said in a WARNING
DAMAGED = "damaged"
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, priority INTEGER NOT NULL,
  t REAL NOT NULL, payload BLOB NOT NULL, sample_sha256 TEXT, sample_ext TEXT, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS records_by_priority ON records (priority, seq);
CREATE INDEX IF NOT EXISTS records_by_kind_t ON records (kind, t);
CREATE INDEX IF NOT EXISTS records_by_sample ON records (sample_sha256) WHERE sample_sha256 IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_SHA = re.compile(
    r"[0-9a-f]{64}"
)  # a sample file's name (its SHA-256): what a damaged row names otherwise is no file
HELD_DIR = "outbox-held"  # beside outbox-corrupt: outboxes of a former tenant, kept whole, never sent
EPOCH_FILE = "outbox-epoch.json"
SENT_FILE = "outbox-sent"
# a move of a store's files under way (``Outbox._move_store``): {"from": <database path>, "to": <database path>}
MOVING_FILE = "outbox-moving"
# outbox_corrupt events a start owes, recorded before the marker that would tell them is dropped
# (``Outbox._keep_untold``): {"events": [{"id", "event": {...}, "src"?, "salvaged_by_kind"}]}
UNTOLD_FILE = "outbox-untold"
STORE_FILES = ("", "-wal", "-shm")  # a store: its database, and beside it the WAL and its index
MARK_MAX_BYTES = 4096  # what the epoch and sent files are read to: they hold a number or two (~40 bytes)
# events the outbox records itself (the agent must not append them again)
SELF_RECORDED = frozenset(
    {
        EventKind.OUTBOX_CORRUPT,
        EventKind.OUTBOX_SALVAGED,
        EventKind.OUTBOX_BUDGET,
        EventKind.OUTBOX_RETENTION,
        EventKind.OUTBOX_WRITE_FAILED,
        EventKind.OUTBOX_REFUSED,
        EventKind.OUTBOX_DAMAGED,
    }
)
# Past ACT_AT of the budget, drop down to DROP_TO of it: the margins absorb what arrives between two
# checks (a commit's rows and WAL frames, sample files being written) so the folder stays under max_bytes.
ACT_AT = 0.9
DROP_TO = 0.75
CLOCK_STEP_S = 60.0  # a wall clock moving this much more than the time since boot in one writer round stepped
RETENTION_EVERY_S = 1.0  # retention is looked at this often (on its index: rows past their age only)
DROP_EVENT_S = 5.0  # at most one drop event per cause this often (the counts are kept at once)
MAX_RANGES = 2000  # seq ranges carried by one drop event; beyond, the cloud records the rest as unknown
# ``meta`` key of the seqs a copy of a damaged store left out (``[[first, last, kind], ...]``, at most MAX_RANGES),
# written in the slice's transaction that counted them, taken out in the commit of the drop event that tells them:
# a start re-queues what a kill left there (``Outbox._requeue_damaged``)
UNTOLD_DAMAGED = "untold:damaged"
# seqs dropped before any commit kept them (a failed commit, an append the writer did not take, an oversize record)
# that ``lost()`` still knows: a caller asks within moments of its append's commit round
LOST_SEQS_MAX = 100_000
# a start re-queues at most this many of the seqs ``UNTOLD_DAMAGED`` keeps, the next ones once the drop event telling
# them is committed (``Outbox._next_damaged``): a long run of unreadable seqs is one range there, and formerly a start
# expanded every seq of it into memory (~100 MB a million seqs, more with each kill during a start's copy)
REQUEUE_DAMAGED_MAX = 100_000
# How long append() waits for room in the hand-over queue before it drops the record (counted as
# write_failed): the writer never stops, so this bounds a stall, and an agent's pipeline never hangs on it.
APPEND_WAIT_S = 5.0
APPEND_SOON_MAX = 10_000  # append_soon's appends waiting for the outbox's thread; then dropped (not alarms)
# a wall clock before this (2024-01-01) was never set: a gateway without a battery-backed clock, started before NTP
# set it. An epoch taken from it was the seconds since boot, alike at each start of a wiped data folder (a re-flashed
# SD card boots the same way), and the cloud took the second one's records for duplicates of the first's: lost
CLOCK_SET_AFTER = 1_704_067_200
CLOSE_WAIT_S = 10.0  # close() waits at most this long for the writer
SALVAGE_S = 30.0  # at most this long copying what is still readable out of a corrupt file at open()
# while running: appends are committed meanwhile, so the salvage of a large outbox may take longer
RUNNING_SALVAGE_S = 300.0
SALVAGE_ACKED_MAX = 1_000_000  # acknowledged seqs an unfinished salvage's marker may name (a few batches)
# what the marker of an unfinished copy is read to: far above any the agent writes (a few KB; at most SALVAGE_JOBS_MAX
# copies of SALVAGE_ACKED_MAX seqs in ranges), a link to /dev/zero does not fill the memory
SALVAGING_MAX_BYTES = 64 << 20
SALVAGE_JOBS_MAX = (
    64  # unfinished copies one marker carries (each a later renewal's, while the one before was cut)
)
# at most this long counting a held corrupt store's readable records; a count it cuts is told as "at least N"
HELD_COUNT_S = 10.0
# One deadline for the slow steps of a start together (copying what a damaged store still holds, counting held stores),
# each also within its own limit above: what it leaves goes on while the agent runs (a copy) or at the next start (a
# count), said in one WARNING. Formerly each step had its own limit only: a start holding a damaged store took ~20 s.
START_S = 10.0
SALVAGE_CHUNK = 256  # seqs read at once; a chunk that cannot be read is split down to single seqs
RENEW_RETRY_S = 5.0  # a store that could not be renewed (a full disk) is tried again this often
# while commits fail and nothing is appended (an idle agent), a write of no record is tried this often: the outbox
# learns that its disk takes writes again without a record's commit (which would take a seq, a gap when it fails)
WRITE_PROBE_S = 5.0
# the room that write proves: as many bytes as the batch whose commit failed last, at most this many (a write of one
# page went through on a disk with room for a page, not for the batch: the failure ended, the next commit failed)
WRITE_PROBE_MAX = 1 << 20
# while the file system says it has less room than that (statvfs), the write is tried only this often: each try
# wrote the WAL's free part again (up to WRITE_PROBE_MAX) before it met the full disk, every WRITE_PROBE_S for as
# long as the disk stayed full (measured: 712 KB a try, 12 GB a day of writes on a gateway's flash). Still tried
# this often: a commit may go through in the WAL's free part alone
WRITE_PROBE_BLIND_S = 60.0
# a copy left unfinished at start (its time limit, a disk error) goes on while the agent runs, this long a writer round
COPY_ROUND_S = 1.0
SALVAGE_TRIES = (
    5  # renewals failed by a disk error while salvaging; then what reads is salvaged, the rest skipped
)
READER_WAIT_S = 30.0  # a reader waits at most this long while the store is renewed
HANDED_MAX = 100_000  # records handed to a sender whose kinds are kept until acknowledged (~10 MB at most)
# only these mean the file itself is bad; FULL, IOERR, READONLY, CANTOPEN are the disk's or the folder's fault
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


_NO_LOCK = contextlib.nullcontext()


def _clock_epoch() -> int:
    """The epoch a new outbox takes from the wall clock (``max(last epoch + 1, this)``): the unix time in
    microseconds, or, with a clock never set (before ``CLOCK_SET_AFTER``), a random number in [2**20, 10**9): below
    any a set clock gives, so an outbox started once the clock is set is newer, and no two wiped starts alike (one
    chance in ~10**9). Microseconds (above every epoch of seconds an older agent took): a gateway without a
    battery-backed clock boots at its image's date (systemd's clock-epoch, timesyncd's or fake-hwclock's saved time),
    so two re-flashes of one image could start their outboxes in the same second, and the cloud stored the second's
    records as duplicates of the first's."""
    now = time.time()
    if now >= CLOCK_SET_AFTER:
        return int(now * 1_000_000)
    return random.SystemRandom().randrange(1 << 20, 1_000_000_000)


def seq_ranges(seqs) -> list[list[int]]:
    """[1, 2, 3, 7, 9, 10] -> [[1, 3], [7, 7], [9, 10]]"""
    out: list[list[int]] = []
    for q in sorted(seqs):
        if out and q == out[-1][1] + 1:
            out[-1][1] = q
        else:
            out.append([q, q])
    return out


def _merge_kind_ranges(ranges: list[list]) -> list[list]:
    """[[5, 5, "damaged"], [1, 2, "result"], [3, 4, "result"]] -> [[1, 4, "result"], [5, 5, "damaged"]]; a seq two
    ranges name is kept in the first (a hand-edited key naming the same seqs again was told again, seq by seq)."""
    out: list[list] = []
    for a, b, k in sorted(ranges, key=lambda r: r[0]):
        if out and a <= out[-1][1]:
            a = out[-1][1] + 1
            if a > b:
                continue
        if out and a == out[-1][1] + 1 and k == out[-1][2]:
            out[-1][1] = b
        else:
            out.append([a, b, k])
    return out


def _less_seqs(ranges: list[list], told: list[list[int]]) -> list[list]:
    """``ranges`` ([first, last, kind], sorted by first) less the seqs of ``told`` (sorted, disjoint [first, last]
    ranges), in one pass over both (a start subtracts the seqs its own copy queued from a kept range)."""
    out: list[list] = []
    j = 0
    for a, b, k in ranges:
        while j < len(told) and told[j][1] < a:
            j += 1
        i = j
        while i < len(told) and told[i][0] <= b and a <= b:
            c, d = told[i]
            if c > a:
                out.append([a, c - 1, k])
            a = max(a, d + 1)
            i += 1
        if a <= b:
            out.append([a, b, k])
    return out


def _take_seqs(ranges: list[list], n: int) -> tuple[list[tuple[int, str]], list[list]]:
    """The first ``n`` seqs of ``ranges`` ([first, last, kind]) as (seq, kind), and the ranges left."""
    out: list[tuple[int, str]] = []
    for i, (a, b, k) in enumerate(ranges):
        if len(out) >= n:
            return out, ranges[i:]
        c = min(b, a + n - len(out) - 1)
        out.extend((q, k) for q in range(a, c + 1))
        if c < b:
            return out, [[c + 1, b, k], *ranges[i + 1 :]]
    return out, []


def _read_untold_damaged(db: sqlite3.Connection) -> list[list]:
    """The ranges ``UNTOLD_DAMAGED`` keeps (what does not parse counts as nothing)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (UNTOLD_DAMAGED,)).fetchone()
    try:
        got = json.loads(row[0]) if row is not None and isinstance(row[0], str) else []
    except (ValueError, RecursionError):
        # (nested deeper than the parser goes, a garbled or hand-edited key: RecursionError went out of the start,
        # at every start, and of a store found corrupt at start before it was moved aside)
        return []
    return _merge_kind_ranges(
        [
            r
            for r in (got if isinstance(got, list) else [])
            if isinstance(r, list)
            and len(r) == 3
            and type(r[0]) is int
            and type(r[1]) is int
            and 0 < r[0] <= r[1]
            and isinstance(r[2], str)
        ]
    )


def _untold_damaged_in(path: Path) -> list[list]:
    """The ranges ``UNTOLD_DAMAGED`` keeps in the store at ``path``, read best effort (a damaged or missing store:
    none)."""
    try:
        con = _read_only(path)
        try:
            return _read_untold_damaged(con)
        finally:
            con.close()
    except sqlite3.Error:
        return []


def _untold_damaged_value(ranges: list[list]) -> str:
    return json.dumps(ranges[:MAX_RANGES], separators=(",", ":"))


def _write_meta(
    db: sqlite3.Connection,
    epoch: int,
    last_seq: int,
    untold: list[list] | str | None = None,
    *,
    numbered: bool = False,
) -> None:
    """A store's epoch, its numbering (``last_seq``) and the damaged seqs not told yet (``UNTOLD_DAMAGED``: ranges, or
    their value as a marker keeps it) in one statement, one transaction. A new store's (``numbered`` False): rows
    already there are kept. ``numbered``: the epoch written over, ``last_seq`` at least (the higher kept), an untold
    key there kept: a kill between the two, formerly two commits (or the numbering left to the copy), left a store
    with an epoch numbered 0, and the next start refused the marker's copy ("last_seq N outside 0..0"), every record
    left in outbox-corrupt/."""
    rows: list = [("epoch", epoch), ("last_seq", last_seq)]
    if untold:
        rows.append((UNTOLD_DAMAGED, untold if isinstance(untold, str) else _untold_damaged_value(untold)))
    values = ", ".join(["(?, ?)"] * len(rows))
    args = [v for row in rows for v in row]
    if numbered:
        db.execute(
            f"INSERT INTO meta (key, value) VALUES {values} ON CONFLICT(key) DO UPDATE SET value = "
            "CASE WHEN key = ? THEN value ELSE MAX(value, excluded.value) END",
            [*args, UNTOLD_DAMAGED],
        )
    else:
        db.execute(f"INSERT OR IGNORE INTO meta (key, value) VALUES {values}", args)


def _write_untold_damaged(db: sqlite3.Connection, ranges: list[list]) -> None:
    if ranges:
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            (UNTOLD_DAMAGED, _untold_damaged_value(ranges)),
        )
    else:
        db.execute("DELETE FROM meta WHERE key = ?", (UNTOLD_DAMAGED,))


def _a_path(src: object) -> bool:
    """Whether a marker's ``src`` can name a file at all: a str with no NUL, encodable for the file system (a garbled
    or hand-edited one raised ValueError or UnicodeEncodeError out of every start)."""
    if not isinstance(src, str) or "\0" in src:
        return False
    try:
        os.fsencode(src)
    except UnicodeError:
        return False
    return True


def _acked_refused(acked: object, top: int | None) -> str | None:
    """Why ``acked``, the seqs a marker names as acknowledged, is not taken, or None: [first, last] ranges of seqs
    SQLite can hold (below 2**62), at most SALVAGE_ACKED_MAX seqs, none beyond ``top`` (when given)."""
    if not isinstance(acked, list):
        return f"acked {acked!r} is not a list"
    n = 0
    for r in acked:
        if not (
            isinstance(r, list)
            and len(r) == 2
            and all(type(q) is int for q in r)
            and 1 <= r[0] <= r[1] < 2**62
        ):
            return f"acked range {r!r} is not [first, last]"
        n += r[1] - r[0] + 1
        if top is not None and r[1] > top or n > SALVAGE_ACKED_MAX:
            return (
                f"acked seqs beyond {top} or more than {SALVAGE_ACKED_MAX}"
                if top is not None
                else (f"more than {SALVAGE_ACKED_MAX} acked seqs")
            )
    return None


class _Corrupt(Exception):
    """The database file itself is unreadable (SQLITE_CORRUPT, SQLITE_NOTADB, a failed quick_check)."""


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _CORRUPT_CODES


def _get_owner(db: sqlite3.Connection) -> tuple[str, str] | None:
    """The (tenant, agent id) a store's records were made under (``meta``'s ``owner_tenant``, ``owner_agent``,
    each written ``t:<text>`` so that a name of digits stays text), or None: a store from before they were kept.
    A tenant with no agent id (a start killed between the two rows, before they were written in one statement) is
    that tenant's, agent "": formerly "no owner", this gateway's, and a start with no certificate copied another
    tenant's records into it."""
    got = dict(
        db.execute("SELECT key, value FROM meta WHERE key IN ('owner_tenant', 'owner_agent')").fetchall()
    )
    tenant, agent = got.get("owner_tenant"), got.get("owner_agent")
    if not isinstance(tenant, str):
        return None
    return (tenant.removeprefix("t:"), agent.removeprefix("t:") if isinstance(agent, str) else "")


def _set_owner(db: sqlite3.Connection, owner: tuple[str, str], replace: bool = True) -> None:
    """Both rows in one statement (one transaction): formerly two, and a kill between them left a tenant alone."""
    verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
    db.execute(
        f"{verb} INTO meta (key, value) VALUES (?, ?), (?, ?)",
        ("owner_tenant", "t:" + owner[0], "owner_agent", "t:" + owner[1]),
    )


def _first_int(con: sqlite3.Connection, sql: str) -> int | None:
    """The integer the query ``sql`` gives first, or None (none, not an integer, or unreadable)."""
    try:
        v = con.execute(sql).fetchone()
    except sqlite3.Error:
        return None
    return v[0] if v and isinstance(v[0], int) else None


class _SeqRanges:
    """The rows of a store (a corrupt one: moved aside, or held) read by ranges of SALVAGE_CHUNK seqs from ``lo`` to
    ``hi``, the oldest first; a range that cannot be read is split down to single seqs, and what stays unreadable is
    skipped. What a salvage copies and a held store's count read alike; ``todo``: the ranges not read yet (one
    list, updated in place)."""

    def __init__(
        self, con: sqlite3.Connection, columns: str, lo: int, hi: int, ordered: bool = False
    ) -> None:
        self.con = con
        self.sql = f"SELECT {columns} FROM records WHERE seq BETWEEN ? AND ?" + (
            " ORDER BY seq" if ordered else ""
        )
        # a single seq looked up by its rowid: ``BETWEEN q AND q`` steps past the row, into the damaged page after
        # the last row readable before it (formerly that row was never counted nor salvaged: 1946 of 1947)
        self.one = f"SELECT {columns} FROM records WHERE seq = ?"
        self.todo = [(a, min(a + SALVAGE_CHUNK - 1, hi)) for a in range(lo, hi + 1, SALVAGE_CHUNK)]
        self.todo.reverse()  # popped from the end: the oldest first
        # the single seqs that stayed unreadable and held a row, as far as the priority index tells (``_listed``)
        self.unreadable: list[int] = []
        self._prios: list | None = None  # the priorities the index holds (None: not looked at yet)
        self._no_index = False  # the index could not be read: every seq of a range that cannot be read counts
        # the last range the index was asked about, and its seqs
        self._seen: tuple[int, int, list[int]] = (1, 0, [])
        self._lost: bool | None = None  # no row of the table readable (None: not asked yet)

    def _table_lost(self) -> bool:
        """No row of the table can be read: its first and its last row both fail (its root page lost). Only then
        may the index say which ranges to skip: otherwise the table decides what is copied, the index only which
        unreadable seqs held a row (a damaged store's index may list fewer rows than its table: a page of it older
        than the table's after a power cut; the rows it does not list were skipped, readable or not)."""
        if self._lost is None:
            self._lost = True
            for order in ("", " DESC"):
                with contextlib.suppress(sqlite3.Error):
                    self.con.execute(f"SELECT seq FROM records ORDER BY seq{order} LIMIT 1").fetchall()
                    self._lost = False
                    break
        return self._lost

    def _listed(self, a: int, b: int) -> list[int] | None:
        """The seqs from ``a`` to ``b`` that held a row, read from the ``records_by_priority`` index (its own pages,
        which a table page's damage leaves readable: a seek per priority, the table never read), or None when the
        index cannot be read. Formerly every seq of a range that could not be read was counted and told as damaged:
        on a store whose numbering had grown far past its rows (records acknowledged and removed over months), a
        lost root page had millions of seqs told for the few records it held, each tried one by one."""
        lo, hi, seqs = self._seen
        if self._no_index:
            return None
        if lo <= a and b <= hi:  # a part of the range asked about last (a bad range is split down within it)
            return [q for q in seqs if a <= q <= b]
        with contextlib.suppress(sqlite3.Error):
            if self._prios is None:
                prios: list = []
                q = "SELECT MIN(priority) FROM records INDEXED BY records_by_priority WHERE priority > ?"
                p = self.con.execute(
                    "SELECT MIN(priority) FROM records INDEXED BY records_by_priority WHERE priority IS NOT NULL"
                ).fetchone()[0]
                while p is not None and len(prios) < 1000:
                    prios.append(p)
                    p = self.con.execute(q, (p,)).fetchone()[0]
                if p is not None:  # (more than a store gives: not its index)
                    raise sqlite3.DatabaseError("priorities beyond 1000")
                self._prios = prios
            seqs = sorted(
                q
                for p in self._prios
                for (q,) in self.con.execute(
                    "SELECT seq FROM records INDEXED BY records_by_priority WHERE priority = ? AND seq BETWEEN ? AND ?",
                    (p, a, b),
                )
            )
            self._seen = (a, b, seqs)
            return seqs
        self._no_index = True
        return None

    def rows(
        self, go_on: Callable[[], bool], fatal: Callable[[sqlite3.Error], bool] | None = None
    ) -> Iterator[tuple[int, int, list]]:
        """Each range read, as (first seq, last seq, its rows), while ``go_on()`` says so (asked before each range);
        an error ``fatal`` says so is raised (the range is not read again)."""
        while self.todo and go_on():
            a, b = self.todo.pop()
            try:
                rows = (
                    self.con.execute(self.one, (a,)) if a == b else self.con.execute(self.sql, (a, b))
                ).fetchall()
            except sqlite3.Error as exc:
                if fatal is not None and fatal(exc):
                    raise
                listed = self._listed(a, b)
                # the table unreadable as a whole: only the seqs that held a row (none there: nothing lost)
                if listed is not None and self._table_lost():
                    if not listed:
                        continue
                    if (listed[0], listed[-1]) != (a, b):  # read again from its first to its last row
                        self.todo.append((listed[0], listed[-1]))
                        continue
                if a < b:  # narrow it down: the rows around a bad page are still worth having
                    m = (a + b) // 2
                    self.todo += [(m + 1, b), (a, m)]
                elif listed is None or listed:  # (a seq the index lists, or every seq when it cannot be read)
                    self.unreadable.append(a)
                continue
            yield a, b, rows


def _readable(
    src: Path, limit_s: float | None = None, lo: int | None = None, reach: dict | None = None
) -> tuple[Counter, set[str], bool]:
    """The records of the store ``src`` (a corrupt one, held) that can still be read, by kind, and the sample files
    they name: read by ranges of seqs as a salvage reads them (a range that cannot be read split down to single
    seqs), within ``limit_s``. What its held note counts: formerly a corrupt store was held with "0 records", its
    readable rows never counted (in ``/status``, the start's WARNING, nor a later drop by outbox-held/'s bound), and
    its samples were left in ``samples/``, where the start removed them as named by no record. The third value: the
    time limit cut the read (ranges left unread: the count is a lower bound; formerly told as the true count), or
    the store's last seq could not be read at all (neither ``MAX(seq)`` nor ``meta``'s ``last_seq``: how many it
    holds is unknown, formerly told as an exact 0). A file cut short is read once padded (``Outbox._pad_truncated``),
    as a salvage reads it. From seq ``lo`` on when given (a count a time limit cut, gone on with); ``reach``, when
    given, is told how far the count got (``"counted_to"``: every seq up to it read) and how many rows it read back
    damaged (``"damaged"``: no record of any kind, not counted in the first value)."""
    got: Counter = Counter()
    shas: set[str] = set()
    deadline = time.monotonic() + (HELD_COUNT_S if limit_s is None else limit_s)
    try:
        con = _read_only(src)
    except sqlite3.Error:
        return got, shas, True
    try:
        try:
            top = con.execute("SELECT MAX(seq) FROM records").fetchone()
        except sqlite3.Error:
            top = None  # (unreadable; a readable store with no record gives (None,))
        last = _first_int(con, "SELECT value FROM meta WHERE key = 'last_seq'")
        if top is None and not last:
            return got, shas, True
        hi = (top[0] if top is not None and isinstance(top[0], int) else None) or last or 0
        start = lo if lo is not None else _first_int(con, "SELECT MIN(seq) FROM records") or 1
        ranges = _SeqRanges(con, "kind, sample_sha256", start, hi)
        damaged: list = []
        for _a, _b, rows in ranges.rows(lambda: time.monotonic() < deadline):
            got.update(k for k, _sha in rows if _kind_read(k) != DAMAGED)
            damaged += [k for k, _sha in rows if _kind_read(k) == DAMAGED]
            shas.update(sha for k, sha in rows if _kind_read(k) != DAMAGED and _SHA.fullmatch(str(sha)))
        _damaged_said(src, damaged, "not counted as records")
        if (
            reach is not None
        ):  # (the ranges left are the newest; the last one popped first is the oldest of them)
            reach["counted_to"] = ranges.todo[-1][0] - 1 if ranges.todo else max(hi, start - 1)
            reach["damaged"] = len(damaged)
    finally:
        con.close()
    return got, shas, bool(ranges.todo)


def _note_kinds(note: dict) -> Counter:
    """A held store's note's records by kind (what does not parse counts as none)."""
    kinds = note.get("by_kind")
    kinds = kinds if isinstance(kinds, dict) else {}
    try:
        return Counter({str(k): int(v) for k, v in kinds.items()})
    except (TypeError, ValueError, OverflowError):
        return Counter()


def _who(text: object) -> str:
    """A tenant or agent id as logged: a certificate's text, quoted and escaped (a newline in it forged a log
    line)."""
    from model_packager.text import printable

    return f"'{printable(text, 80)}'"


def _delete_seqs(db: sqlite3.Connection, seqs: list[int]) -> list:
    """Delete the records of ``seqs`` (500 bound parameters a statement) and return exactly the rows this
    DELETE removed, as (seq, kind, priority, size, sample_sha256): a row acked or dropped meanwhile is not
    among them, so counts kept from them stay exact."""
    gone: list = []
    for i in range(0, len(seqs), 500):
        part = seqs[i : i + 500]
        q = ",".join("?" * len(part))
        gone += db.execute(
            f"DELETE FROM records WHERE seq IN ({q}) RETURNING seq, kind, priority, size, sample_sha256", part
        ).fetchall()
    return gone


def _temp_seqs(db: sqlite3.Connection, name: str, seqs: Collection[int]) -> None:
    """``seqs`` as the table ``temp.<name>`` (``seq``) of this connection alone, for a query to leave them out: a
    temporary table, written beside the store, never in it, committed at once (no transaction left open on the
    store). Any SQLite: ``json_each`` of a list is not in one built without its JSON functions (before 3.38 they
    were a build option, off in some gateway images), and there every such read failed."""
    # in memory, no file: the gateway's temporary folder may be full or read-only
    db.execute("PRAGMA temp_store = MEMORY")
    db.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (seq INTEGER PRIMARY KEY)")
    db.execute(f"DELETE FROM temp.{name}")
    db.executemany(f"INSERT OR IGNORE INTO temp.{name} (seq) VALUES (?)", ((s,) for s in seqs))
    db.commit()


def _progress_key(src: Path) -> str:
    """The new store's ``meta`` key of how far the copy of ``src`` has gone (one per moved-aside file: a store may
    take the rest of an earlier renewal's copy beside its own; a former release kept one, ``salvaged_to``)."""
    return "salvaged_to:" + src.name


def _copied_key(src: Path, kind: str) -> str:
    """The new store's ``meta`` key of the records of ``kind`` copied into it out of ``src``, kept in each slice's own
    transaction: a start killed after a slice (or once the copy was done) and before its event was kept tells the
    whole copy's count at the next start (formerly what that start copied: "salvaged 0" for a copy that was done)."""
    return f"copied:{src.name}:{kind}"


def _copied(meta: dict, src: Path) -> Counter:
    """The records copied out of ``src`` into the store whose ``meta`` this is, by kind (``_copied_key``)."""
    head = f"copied:{src.name}:"
    return Counter({k[len(head) :]: v for k, v in meta.items() if k.startswith(head) and type(v) is int})


def _since_boot() -> float:
    """Seconds since boot, suspend included (CLOCK_BOOTTIME on Linux; the monotonic clock elsewhere)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


def _one_line(text: object, limit: int = 300) -> str:
    """quick_check lists every problem on its own line: one line for a log and an event."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _kind_read(kind: object) -> str:
    """A kind read out of a damaged store: one of the record kinds, else ``DAMAGED``. Formerly any text was taken for
    a kind of its own: a kind zeroed by the damage ("\\x00\\x00\\x00\\x00\\x00\\x00") was counted in a held store, and
    salvaged, counted and sent as a record of that kind."""
    return kind if isinstance(kind, str) and kind in PRIORITY else DAMAGED


def _text(raw: bytes) -> str:
    """A TEXT cell as read by the outbox's connections: a cell garbled in place keeps its type and may no longer be
    UTF-8; read with U+FFFD where it is not (a kind that is then none of the record kinds is ``DAMAGED``). With
    sqlite3's own decoding such a cell failed the fetch itself: the start (its counts) and every read of the uplink,
    so that the agent did not start, or sent nothing any more. Sound text is UTF-8 and reads as before."""
    return raw.decode("utf-8", "replace")


def _read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the store at ``path`` (never creating it), its text read as ``_text`` reads it: a
    copy out of a damaged store meets non-UTF-8 text too (formerly "Could not decode to UTF-8" stopped the start)."""
    con = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, timeout=5)
    con.text_factory = _text
    return con


def _damaged_said(src: Path, kinds: list, what: str) -> None:
    """One WARNING for the rows of ``src`` read with no record kind (``_kind_read``), naming up to 5 kinds as read."""
    if not kinds:
        return
    from model_packager.text import printable

    seen = list(dict.fromkeys(printable(repr(k), 40) for k in kinds))
    log.warning(
        "outbox: %s: %d rows read with no record kind (%s%s): damaged, %s",
        src,
        len(kinds),
        ", ".join(seen[:5]),
        ", ..." if len(seen) > 5 else "",
        what,
    )


def _intact(row: tuple) -> bool:
    """A row read out of a damaged file, as ``append`` wrote it: a cell cut by the damage reads back with
    zeros (a wrong size, a body that is no longer JSON, a kind that is none of the record kinds) and is not passed
    on as a record."""
    _seq, kind, prio, t, body, sha, ext, size = row
    if not (
        _kind_read(kind) != DAMAGED
        and isinstance(prio, int)
        and isinstance(t, (int, float))
        and isinstance(body, bytes)
        and isinstance(size, int)
        and (sha is None or isinstance(sha, str) and len(sha) == 64)
        and (size == len(body) if sha is None else size > len(body))
    ):
        return False
    if body[:1] in (b"{", b"["):
        try:
            json.loads(body)
        except ValueError:
            return False
    return True


def _move_file(src: Path, dst: Path) -> None:
    """``os.replace``, or a copy then a removal where ``dst`` is on another file system (a last resort: the
    folder is chosen on the outbox's own disk, ``_aside_dir``). A rename across file systems failed (EXDEV): a
    corrupt store at start stopped the agent from starting ("free space on that disk ..."), and one found bad
    while running was never renewed (every record counted as write_failed, for good).

    The copy goes to ``.<name>.copying`` beside ``dst``, is fsynced, then renamed to ``dst`` (and that folder
    fsynced) before ``src`` is removed: a kill during the copy never leaves a cut-short file under ``dst``'s name.
    Formerly the copy was made at ``dst`` itself: a kill in the middle left a cut-short ``dst``, which the next
    start took for the moved file and removed the whole one (``_same_file``)."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        part = dst.with_name(f".{dst.name}.copying")
        try:
            shutil.copyfile(src, part)
            with open(part, "rb") as f:
                os.fsync(f.fileno())
            os.replace(part, dst)
            _sync_dir(dst.parent)
        except OSError:
            part.unlink(missing_ok=True)  # no half copy left behind; the caller tries again later
            raise
        src.unlink()
        with contextlib.suppress(OSError):
            _sync_dir(src.parent)


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` hold the same bytes (size, then SHA-256): a copy ``b`` proved whole before ``a`` is
    removed in its favour."""
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        digests = []
        for one in (a, b):
            with open(one, "rb") as f:
                digests.append(hashlib.file_digest(f, "sha256").digest())
    except OSError:
        return False
    return digests[0] == digests[1]


def _sync_dir(folder: Path) -> None:
    """Make a rename or a removal in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _device(path: Path) -> int | None:
    """The file system of ``path``, or of its nearest folder that exists."""
    for p in (path, *path.parents):
        try:
            return os.stat(p).st_dev
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def _aside_dir(outbox_dir: Path, data_dir: Path) -> Path:
    """Where a bad store is moved aside, by a rename on the outbox's own file system: ``<data_dir>/outbox-corrupt``,
    or for an ``outbox.dir`` on a disk of its own ``outbox-corrupt`` in it (the one folder of that disk the agent is
    sure to write: beside it, under a unit's ``ProtectSystem=strict`` with ``ReadWritePaths`` of the outbox or a
    root-owned mount point, the agent could not start). A move into the data folder's disk was a copy of the whole
    store, and a small system disk could not take it: the agent did not start, and a store found bad while running
    was never renewed."""
    own = _device(outbox_dir)
    if own is None or _device(data_dir) == own:
        return data_dir / "outbox-corrupt"
    return outbox_dir / "outbox-corrupt"


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) == sqlite3.SQLITE_FULL


def _cause(exc: BaseException) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


def _log_failure(fut: Future) -> None:
    exc = fut.exception()
    if exc is not None:
        log.error("outbox: an append failed: %s", exc, exc_info=exc)


@dataclass(frozen=True)
class Record:
    seq: int
    kind: str
    priority: int
    t: float
    payload: bytes
    sample_sha256: str | None
    sample_ext: str | None
    size: int


class Outbox:
    def __init__(
        self, settings: OutboxSettings, data_dir: Path, on_event=None, owner: tuple[str, str] | None = None
    ) -> None:
        """``owner``: the (tenant, agent id) the fleet knows this gateway as (its client certificate's), which the
        records appended from now on are made under; None: not known (no cloud, a certificate not read), nothing is
        looked at. An outbox made under another tenant is held whole at ``open()``, never sent (``_own``)."""
        self.s = settings
        self.owner = owner
        self.former_tenant: str | None = None  # set by a start that found the store another tenant's
        self.held: list[dict] = []  # outboxes of a former tenant kept in <aside>/outbox-held (their notes)
        # records of held outboxes removed to keep outbox-held/ within its bound, by kind (``_bound_held``)
        self.held_dropped: Counter = Counter()
        self.held_dropped_at_least = (
            False  # (a store removed whose count was cut: "dropped" is at least that)
        )
        # held stores counted by this process (held, or noted again): not counted again by ``_read_held`` (formerly
        # the start that held a store whose count was cut counted it twice, 10 s each)
        self._counted_now: set[str] = set()
        # the start's one deadline (monotonic) while ``open()`` runs (``_start_limit``), and what it left for later
        self._start_deadline: float | None = None
        self._left_for_later: list[str] = []
        # set by the agent before ``open``: outbox-held/ is bounded only once it called ``bound_held`` (after it
        # noted the move a start found: a kill during the prune forgot the move)
        self.defer_held_bound = False
        # set by the agent before ``open``: called with the former tenant by a start that finds the gateway moved,
        # before the store is held and the new owner recorded (``_own``): a kill leaves no move or a noted one
        self.on_move: Any = None
        self._held_now: set[str] = set()  # held since the last bound: never removed by it
        self._ownerless_epoch = False  # outbox-epoch.json named no owner at all at open (``_former_tenant``)
        # with no certificate (``owner`` None): the owner the store had (its meta's, else outbox-epoch.json's), carried
        # into a renewed store's meta and the epoch file; formerly none was written, and a salvage at a start with no
        # certificate gave the former tenant's records to the next tenant as this gateway's
        self._carried_owner: tuple[str, str] | None = None
        # a copy at open of this tenant's store that another tenant's killed start had begun to take over: not a
        # resumed copy (nothing of it was copied into this store before), told as such (``_resume_salvage``)
        self._copy_home = False
        self._unowned = (
            False  # no owner was ever recorded for this store's lineage (written ``"unowned": true``)
        )
        self.dir = Path(settings.dir) if settings.dir else Path(data_dir) / "outbox"
        self.path = self.dir / "outbox.db"
        self.samples_dir = self.dir / "samples"
        self.epoch_path = Path(data_dir) / EPOCH_FILE
        self.sent_path = Path(data_dir) / SENT_FILE  # "<epoch> <highest seq handed to a sender>"
        # the moved-aside file a renewal is copying into the store of a new epoch (JSON), until the copy ends: a
        # process killed meanwhile resumes the copy at the next open(), and the file is never removed before
        self.salvaging_path = Path(data_dir) / "outbox-salvaging"
        self.untold_path = Path(data_dir) / UNTOLD_FILE
        self.moving_path = Path(data_dir) / MOVING_FILE  # a store's files being moved (``_move_store``)
        self.corrupt_dir = Path(data_dir) / "outbox-corrupt"  # on the outbox's own disk: see _open
        self.on_event = on_event or (lambda e: None)
        self.epoch = 0
        self.dropped: Counter = Counter()  # "<cause>:<kind>" -> records dropped by this process
        self.dropped_total: Counter = Counter()  # the same, since the epoch began (kept in the database)
        self._notices: list[Event] = []  # events the outbox records itself, queued by the next append/flush
        self._drops: dict[str, list] = {}  # cause -> [(seq, kind)] dropped since the last drop event
        # seqs dropped before a commit kept them (``lost``), at least the newest LOST_SEQS_MAX, in the order dropped
        self._lost: dict[int, None] = {}
        self._drops_reported_at = time.monotonic()
        self._sample_bytes = 0
        self._pending_sample_bytes = 0  # sample bytes whose rows are not committed yet
        self._pending_bytes = (
            0  # all bytes appended and not committed yet (append waits beyond max_bytes / 16)
        )
        self._wal_bytes = 1 << 20
        self.appended = 0
        self.acked = 0
        # Committed rows per (kind, priority), kept exact on commit, ack and drop (each delete counts what
        # its own DELETE ... RETURNING removed) and rebuilt once at open: stats() reads no table.
        self._counts: Counter = Counter()
        self._oldest: int | None = None  # the smallest committed seq; None: none, or to be read again
        self._oldest_stale = False  # a delete may have removed it: stats() reads MIN(seq) once
        self._oldest_gen = 0  # bumped by every commit and delete: a MIN(seq) read across one is not kept
        # Bounded: when the writer falls behind, append() waits (back-pressure) instead of holding an
        # unbounded amount of uncommitted data in memory.
        self._q: queue.Queue = queue.Queue(maxsize=2 * settings.commit_batch)
        self._lock = threading.Lock()  # byte and counter bookkeeping (short holds only)
        self._append_lock = threading.Lock()  # orders appends; the writer thread never takes it
        self._seq = 0
        self._bytes = 0
        self._db: sqlite3.Connection | None = None
        self._opened = False
        self._sent_lock = threading.Lock()
        self._sent_mark = 0  # the highest seq handed to a sender, recorded in the epoch file
        self._writer: threading.Thread | None = None
        self._stop = threading.Event()
        self._committed = threading.Condition()
        self._committed_seq = 0
        self.moved_aside: Path | None = None
        self._failing = False  # the last commit failed (disk full, I/O error): logged once per burst
        self._failed_in_burst = 0
        self._fail_reason = ""
        # while commits fail: since when and why (``stats()["write_error"]``); /status showed only the counts grow
        self._write_error: dict | None = None
        self._probe_next = (
            0.0  # monotonic time a write of no record is next tried while commits fail and none come
        )
        self._probe_bytes = 0  # the bytes of the last batch whose commit failed (the room the probe asks for)
        self._probe_tried = 0.0  # monotonic time that write was last tried (``WRITE_PROBE_BLIND_S``)
        self._renew_error: str | None = None  # why the last renewal could not start a new store
        self._unpersisted: Counter = Counter()  # drop counts (write_failed, oversize) not yet in the meta
        self._oversize_told = -1e9  # when an oversize record was last logged
        self._retention_next = 0.0  # monotonic time retention is next looked at
        self._clock_ref: tuple[float, float] | None = None  # (wall, since boot) at the writer's last round
        # the last clock step, the last seq stamped before it, and the time before which a stamp predates it
        self._shift, self._shift_upto, self._shift_before = 0.0, 0, 0.0
        # A store that goes bad under a running outbox (corrupt, removed, replaced) is renewed by the writer:
        # readers wait at the gate meanwhile, so no reader connection of the old file outlives it (SQLite's
        # last connection deletes "<path>-wal" by name: it would delete the new store's WAL).
        self._gate = threading.Condition()
        self._readers = 0
        self._fd: int | None = None  # the store's file, read by _cut_short (see _hold_file)
        self._gate_closed = False
        self._renew_reason: str | None = None  # set by whoever meets a corrupt store; the writer renews
        self._renew_next = 0.0  # monotonic time of the next attempt after one failed
        self._renew_failing = False
        self._salvage_from: Path | None = None  # a moved-aside store not yet salvaged (a renewal that failed)
        # moved-aside file -> the last seq its copy into the current store has reached (as its meta says)
        self._progress: dict[str, int] = {}
        self._copy_due = False  # a copy into this store is left unfinished: the writer goes on with it
        self._copy_next = 0.0  # monotonic time it is tried again after a disk error
        self._copy_failures = 0
        self._copy_failed = False  # the last _copy_jobs met a disk error
        # a copy going on while the agent runs (``_go_on_copying``): a round's end is no stop, not warned
        self._copy_round = False
        # outbox_corrupt events a start owes (a renewal at open, one cut off by a kill, a WAL found alone), as kept in
        # ``outbox-untold`` until they are committed (``_keep_untold``, ``_tell_untold``)
        self._untold: list[dict] = []
        # (kept by the writer and by the agent's ``bound_held`` while the writer runs: one update at a time)
        self._untold_lock = threading.RLock()
        self._told: list[Event] = []  # (committed at open, said once the writer runs)
        # a renewal's event while the agent runs, kept in ``outbox-untold`` until its commit: id(event) -> (event,
        # its id there) until it is queued, then its seq -> that id (``_commit`` adds ``meta told:<id>``)
        self._told_ids: dict[int, tuple[Event, str]] = {}
        self._told_seqs: dict[int, str] = {}
        # a drop report's rows (cause -> (seq, kind)s) while it is not committed: id(event) -> (event, rows) until
        # it is queued, then its seq -> rows; a commit that fails with it gives them back to ``_drops``
        self._report_ids: dict[int, tuple[Event, dict[str, list]]] = {}
        self._report_seqs: dict[int, dict[str, list]] = {}
        self._damaged_kept = (
            False  # the store's meta may hold ``UNTOLD_DAMAGED`` ranges (a commit takes its out)
        )
        self._damaged_left: list[list] = []  # those ranges a start has not queued yet (``_next_damaged``)
        self._copied_by_src: dict[
            str, Counter
        ] = {}  # moved-aside file -> records this process copied out of it
        self._salvage_tries = 0
        self._acked_while_salvaging: set | None = (
            None  # seqs acked while a running salvage copies old records
        )
        # seq -> kind of the records handed to a sender and not acknowledged yet (bounded): what an ack that
        # meets a corrupt store takes out of the renewed store's count of lost records
        self._handed: dict[int, str] = {}
        # seq -> kind (None: not known) of records the cloud acknowledged whose DELETE met a corrupt store: they
        # are at the cloud, so not sent again, not salvaged into the renewed store and not counted as lost
        self._acked_unremoved: dict[int, str | None] = {}
        self._ino: tuple[int, int] | None = None  # (st_dev, st_ino) of the file the writer has open
        self._size_seen: int | None = None  # the writer's file's size at the last look, once it had a header
        self.renewals = 0  # stores moved aside or replaced by this process (at open or while running)
        self.salvaged = 0  # records copied out of them into the new epoch
        self.last_renewal: dict | None = None
        self._unreadable_told = False
        self._executor: ThreadPoolExecutor | None = None  # the async face's own thread (created by open())
        self.soon_max = APPEND_SOON_MAX
        self._soon_lock = threading.Lock()
        self._soon_waiting = 0  # append_soon's appends not yet done
        self._backlog: dict[
            str, int
        ] = {}  # kind -> records append_soon dropped, not yet counted in `dropped`
        self._backlog_told = False
        self._executor_thread: threading.Thread | None = None

    @property
    def is_open(self) -> bool:
        """True between a successful ``open()`` and ``close()``: appends are taken (also while the writer
        renews a bad store: they wait in the hand-over queue)."""
        return self._opened

    @property
    def last_seq(self) -> int:
        """The highest seq handed out in this epoch (0 before the first); after ``open()``, that of the records
        stored before this process (salvaged ones keep their seq)."""
        return self._seq

    # ---- open / close ----------------------------------------------------------------------
    def _hold_file(self) -> None:
        """Open the one read-only fd the cut-short check reads the store through, beside the writer's
        connection. On Linux closing any fd of a file drops every POSIX lock the process holds on it, SQLite's
        too: an open() and close() per check let another process (``sqlite3 outbox.db``, a backup) take the
        file for its own, checkpoint and delete the WAL the agent still wrote into (records lost at the next
        start). So this fd is closed only once no connection of this process is on the file."""
        self._release_file()
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            self._fd = None  # the check is skipped; the commits say what is wrong

    def _release_file(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.text_factory = _text
        # before any table exists: a fresh file gives freed pages back (incremental_vacuum)
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=" + ("OFF" if self.s.fsync is FsyncPolicy.OFF else "FULL"))
        # the WAL is bounded relative to the budget: checkpoint every ~1/32 of it, truncate to that
        page = db.execute("PRAGMA page_size").fetchone()[0]
        wal_pages = min(1000, max(8, self.s.max_bytes // 32 // page))
        self._wal_bytes = wal_pages * page  # also the most one commit writes, so a transaction keeps to it
        db.execute(f"PRAGMA wal_autocheckpoint={wal_pages}")
        db.execute(f"PRAGMA journal_size_limit={wal_pages * page}")
        return db

    def _read_epoch_file(self) -> int | None:
        from edge_agent.files import read_json_state

        try:  # bounded: a named pipe in the data folder waited for ever (the start with it), a deep nest raised
            return int(read_json_state(self.epoch_path, MARK_MAX_BYTES)["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _read_sent_mark(self, epoch: int) -> int:
        """The highest seq of ``epoch`` handed to a sender (``<data_dir>/outbox-sent``), 0 if none is known (a
        torn or missing file only loses the protection, never the epoch)."""
        from model_packager.package import open_regular

        try:  # bounded, a regular file only (as the epoch file): never a wait on a pipe or a device read
            with open_regular(self.sent_path) as f:
                data = f.read(MARK_MAX_BYTES + 1)
            if len(data) > MARK_MAX_BYTES:
                return 0
            e, sent = data.decode().split()[:2]
            return int(sent) if int(e) == epoch else 0
        except (OSError, ValueError):
            return 0

    def _read_epoch_owner(self) -> tuple[int, str, str] | None:
        """(epoch, tenant, agent) as ``outbox-epoch.json`` records them (the owner of that epoch's store, kept
        outside the store: a damaged ``meta`` page loses the store's own record of it), or None."""
        from edge_agent.files import read_json_state

        try:
            got = read_json_state(self.epoch_path, MARK_MAX_BYTES)
            tenant, agent = got["tenant"], got["agent"]
            if isinstance(tenant, str) and isinstance(agent, str):
                return (int(got["epoch"]), tenant, agent)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def _write_epoch_file(self, epoch: int) -> None:
        self.epoch_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.epoch_path.with_suffix(".tmp")
        mark: dict[str, Any] = {"epoch": epoch}
        owner = self.owner or self._carried_owner
        if owner is not None:  # whose records this epoch's store holds
            mark.update(tenant=owner[0], agent=owner[1])
        elif (
            self._unowned
        ):  # (only then is a store with no owner of its own this gateway's: ``_former_tenant``)
            mark.update(unowned=True)
        with open(tmp, "w") as f:
            json.dump(mark, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.epoch_path)
        fd = os.open(self.epoch_path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def open(self) -> None:
        """Open (or create) the store. A corrupt file is moved aside and a fresh outbox starts; a disk that
        cannot take the store (full, read-only, an I/O error, a folder it may not write) raises
        ``OutboxError`` naming the folder and the cause: a healthy file is never moved aside for it."""
        try:
            self._open()
        except OutboxError:
            raise
        except (OSError, sqlite3.Error) as exc:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
            self._release_file()
            raise OutboxError(
                f"outbox {self.dir}: cannot open its store: {_cause(exc)}; free space on that disk or make "
                "the folder writable, then start again"
            ) from exc

    def _start_limit(self, cap: float) -> float:
        """Seconds one slow step of ``open()`` may take: at most ``cap``, within what is left of the start's one deadline
        (``START_S`` for its slow steps together); ``cap`` outside ``open()``."""
        if self._start_deadline is None:
            return cap
        return max(0.0, min(cap, self._start_deadline - time.monotonic()))

    def _later(self, what: str) -> None:
        """At open: ``what`` a time limit left for later, said once the start is done (``_open``)."""
        if self._start_deadline is not None:
            self._left_for_later.append(what)

    def _open(self) -> sqlite3.Connection:
        self._start_deadline, self._left_for_later = time.monotonic() + START_S, []
        try:
            return self._open_within_deadline()
        finally:
            self._start_deadline = None

    def _open_within_deadline(self) -> sqlite3.Connection:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.samples_dir.mkdir(exist_ok=True)
        self.corrupt_dir = _aside_dir(self.dir, self.epoch_path.parent)
        corrupt = None
        db: sqlite3.Connection | None = None
        known = self._read_epoch_file()
        recorded = self._read_epoch_owner()  # (read before a corrupt store's new epoch replaces it)
        self._ownerless_epoch = recorded is None and self._epoch_file_ownerless()  # (as ``recorded``)
        self._carried_owner = (
            (recorded[1], recorded[2]) if self.owner is None and recorded is not None else None
        )
        # (a first start: nothing before it, or an epoch file written when no owner had ever been recorded)
        self._unowned = self._ownerless_epoch or (
            known is None and not any(os.path.lexists(f"{self.path}{sfx}") for sfx in STORE_FILES)
        )
        self._finish_move()  # (a move a kill cut off: every file beside the database it came with)
        # (copies across disks a kill cut short, none in flight now; outbox-held/'s: ``_read_held``)
        self._sweep_copies(self.corrupt_dir)
        self._untold = self._read_untold()  # (events a start killed before it committed them owes)
        self._finish_drops()  # (a held store's removal a kill cut off: counted; its event told once, as kept)
        self._drop_notes_without_store(recorded)
        self._place_lone_wal()
        resumed_epoch = self._renewal_cut_after_move()
        try:
            if known is not None and self.path.exists() and self.path.stat().st_size == 0:
                # an outbox of that epoch existed: SQLite would take an empty file for a new database, and
                # whatever it held would be gone without a word
                raise _Corrupt(f"the file is empty (0 bytes); the last epoch was {known}")
            db = self._connect()
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise _Corrupt(_one_line(ok))
            db.executescript(SCHEMA)
            if resumed_epoch is not None:
                # (the numbering the renewal had reached and the damaged seqs it had not told, as it would have set
                # them, in one statement as it does: a kill between the epoch and the numbering left a store the
                # next start took as made, numbered 0, and the copy was refused)
                mark = self._read_salvaging() or {}
                untold = mark.get(UNTOLD_DAMAGED)
                if isinstance(untold, str) and self._former_tenant(Path(mark["src"]), recorded) is not None:
                    # another tenant's store (the gateway moved while it was down), or whose cannot be told: held
                    # whole, its damaged seqs never told to this tenant (formerly told as this tenant's drops)
                    untold = None
                _write_meta(
                    db, resumed_epoch, mark.get("last_seq", 0), untold if isinstance(untold, str) else None
                )
            self._renewal_cut_before_move(db)
            db = self._own(db, recorded)
            if self.owner is None:
                # a start with no certificate judges a copy into this store by the owner this store carries:
                # formerly by outbox-epoch.json's, and after a tenant move killed before that file was rewritten
                # (it still named the former tenant, the store at the path was already the new one's) it copied the
                # former tenant's records (and its outbox_corrupt event) into the new tenant's store
                self._carried_owner = _get_owner(db) or self._carried_owner
            self._resume_salvage(db, recorded)
        except (sqlite3.DatabaseError, _Corrupt) as exc:
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            if isinstance(exc, sqlite3.DatabaseError) and not _is_corrupt(exc):
                raise  # a full or read-only disk: the file may be healthy, keep it
            existing = self._read_salvaging()  # (a copy into this store left unfinished, or its renewal's)
            reason = _one_line(exc)
            epoch = max((known or 0) + 1, _clock_epoch())
            carried, acked = self._carried_at_open(existing, known, self.path)
            if _acked_refused(acked, None) is not None:
                # (a garbled or hand-edited marker: its seqs sent again rather than the store numbered past what
                # SQLite holds, an OverflowError out of this start and, at 2**63 - 1, out of every start after it)
                acked = []
            self.corrupt_dir.mkdir(parents=True, exist_ok=True)
            to = self._aside_name("corrupt")
            # whose records they are, read while the store is still at the path: a former tenant's move is noted
            # (``on_move``) before anything is moved, as a healthy store's start does (``_own``); formerly noted after
            # the move aside, and a kill between the two left the next start to hold the store (``_hold_unfinished``)
            # with the move never noted: the former tenant's pending deployment was settled to the new one
            former = (
                self._former_tenant(self.path, recorded)
                if any(os.path.lexists(f"{self.path}{sfx}") for sfx in STORE_FILES)
                else None
            )
            if (
                self.owner is None
                and former is None  # (a former tenant's store: held, never the owner this start carries)
                and any(os.path.lexists(f"{self.path}{sfx}") for sfx in STORE_FILES)
            ):
                self._carried_owner = self._store_owner(self.path)[1] or self._carried_owner
            if former is not None and former[0]:
                self.former_tenant = former[0]
                if self.on_move is not None:
                    self.on_move(self.former_tenant)
            # before the file is moved, as a renewal while running does: a kill from here on finds at the next start
            # which file holds the records (formerly written after the move: a kill between the two left the store
            # in outbox-corrupt/ unnamed, an empty store at the path, and the next renewal removed the file)
            # (with the owner judged here when it is another tenant's: a kill before the hold leaves the epoch file
            # naming this tenant's new store, and a file whose meta cannot be read was then judged by it as this
            # tenant's: the next start copied the former tenant's records into this tenant's outbox)
            # (numbering up to the highest seq acknowledged on it at least: a start killed after the move resumes this
            # copy with the store made at the marker's last_seq, and acked seqs beyond that numbering refuse it;
            # formerly 0 there: after a renewal killed before its move, then this start killed after it, the next
            # start dropped the copy, "acked seqs beyond 0", and every record was left in outbox-corrupt/ uncounted)
            top_acked = max(
                (r[1] for r in acked if isinstance(r, list) and len(r) == 2 and type(r[1]) is int), default=0
            )
            own_job: dict[str, Any] = {"src": str(to), "last_seq": top_acked, "acked": acked, "from": 0}
            if former is not None and former[0]:
                own_job["owner"] = list(former)
            # the damaged seqs the store kept untold (a kept run told in pieces), read before it is moved: the copy
            # does not read them (formerly told by no event); else those its renewal, killed before it moved the
            # store, kept in its marker. Not a held store's (another tenant's, or whose cannot be told)
            kept_untold: list[list] | str | None = None
            if former is None:
                kept_untold = _untold_damaged_in(self.path)
                if (
                    not kept_untold
                    and existing is not None
                    and existing.get("previous_epoch") == (known or 0)
                    and existing.get("epoch") != known
                    and isinstance(existing.get(UNTOLD_DAMAGED), str)
                ):
                    kept_untold = existing[UNTOLD_DAMAGED]
            self._write_salvaging(self._marker(epoch, [own_job, *carried], known or 0))
            aside = self._move_aside(to=to)
            if aside is None:
                former = None
            db = self._connect()
            db.executescript(SCHEMA)
            # the new epoch is fixed (and recorded outside the file) before any salvaged row is in it
            self._write_epoch_file(epoch)
            # with the numbering up to the seqs the marker names as acknowledged, in one commit: the next start checks
            # the marker against the store of its epoch (a kill between the two left it numbering from 0, the copy was
            # refused, "last_seq 100 outside 0..0", and every record was left in outbox-corrupt/ uncounted)
            _write_meta(db, epoch, top_acked, kept_untold)
            if aside is not None and former is not None:
                # the gateway moved to another tenant, or whose records they are cannot be told: held whole
                # (never salvaged into this tenant's outbox, never sent), not left to outbox-corrupt/'s turnover
                # (with the sample files its readable records name: the new store names none of them)
                # (read as a salvage reads it: formerly a file cut short counted 0 records)
                self._pad_truncated(aside)
                reach: dict = {}
                kinds, shas, partly = _readable(aside, self._start_limit(HELD_COUNT_S), reach=reach)
                if partly:  # (not a true reading: every sample file goes with it, the fresh store names none)
                    shas |= self._sample_names()
                readable = (
                    f"; {'at least ' if partly else ''}{kinds.total()} records still readable in it are held, "
                    "not salvaged"
                )
                # the store's own epoch (its meta's), else the epoch file's: formerly the epoch file's alone, and
                # with that file lost (a data folder restored without it) held as outbox.db.acme-0, epoch 0
                own_epoch = self._store_epoch(aside)
                if own_epoch is None:
                    own_epoch = recorded[0] if recorded else (known or 0)
                kept = self._hold(
                    former,
                    own_epoch,
                    kinds,
                    sorted(shas),
                    src=aside,
                    partly=partly,
                    reach=reach,
                )
                log.warning(
                    "outbox %s: the corrupt store was made under %s; this gateway's certificate names tenant %s: "
                    "nothing of it is salvaged into this tenant's outbox; held whole in %s",
                    self.dir,
                    f"tenant {_who(former[0])}"
                    if former[0]
                    else "a tenant that cannot be told (its owner unreadable)",
                    _who((self.owner or self._carried_owner or ("?",))[0]),
                    kept,
                )
                aside = self.moved_aside = kept
                for j in carried:  # the copies into it that were left unfinished: that tenant's too
                    self._hold_unfinished(
                        Path(j["src"]),
                        recorded,
                        epoch=recorded[0] if recorded else None,
                        owner=self._other_owner(j),
                    )
                salvaged: Counter = Counter()
                # no outbox_corrupt event: it would name and count another tenant's store in this tenant's outbox
                # (and be sent to its cloud); the WARNING above and the held note say it on this gateway
                self._write_salvaging(None)
            else:
                # a copy carried from the marker left beside the store is judged by whose its file is, as
                # ``_resume_salvage`` judges each one: another tenant's is held whole, never copied (formerly copied
                # with no check: a start of beta killed before it held acme's corrupt store, then beta's own store
                # found corrupt, copied acme's records and an outbox_corrupt event "salvaged" into beta's outbox)
                mine = []
                for j in carried:
                    src = Path(j["src"])
                    if (
                        self._salvage_job_refused(j, src, None, strict=False) is None
                        and self._job_former(j, src, recorded) is not None
                    ):
                        self._hold_unfinished(src, recorded, db, owner=self._other_owner(j))
                    else:
                        mine.append(j)
                jobs = (
                    [{"src": str(aside), "last_seq": top_acked, "acked": acked, "from": 0}]
                    if aside is not None
                    else []
                ) + mine
                if aside is not None:
                    # the new store numbers on after the old one before its marker names the copy: a kill before the
                    # copy leaves a store whose numbering covers the marker's (formerly 0: the next start refused the
                    # copy, "last_seq 100 outside 0..0", and the records were left in outbox-corrupt/ uncounted)
                    self._number_after(aside, db, top_acked)
                salvaged = Counter()
                left: list[dict] = []
                if jobs:
                    # (its previous epoch kept until the event below is recorded: a kill during the copy leaves it to
                    # the next start to tell, ``_resume_salvage``)
                    self._write_salvaging(self._marker(epoch, jobs, known or 0))
                    # (cut off: the marker stays, the next start goes on after the last slice copied)
                    salvaged, left = self._copy_jobs(
                        db,
                        jobs,
                        time.monotonic() + self._start_limit(SALVAGE_S),
                        raise_errors=True,
                        strict=False,
                    )
                # (recorded before the marker stops naming the previous epoch: a kill from here on tells it at the
                # next start; before, a kill once the copy was done and before the event's commit lost it)
                owed = self._untold_entry(str(aside), reason, epoch, known or 0, salvaged)
                if left:  # (cut by the time limit: the rest is copied while the agent runs, not told again)
                    owed["event"]["salvaged_at_least"] = True
                self._keep_untold(owed)
                self._write_salvaging(self._marker(epoch, left) if left else None)
                readable = (
                    f" with the {salvaged.total()} records copied by now (the rest goes on while the agent runs)"
                    if left
                    else f" with the {salvaged.total()} records still readable in it"
                )
            # (a held store: the count of its note; formerly "with the 0 records still readable in it" for a store
            # held with 300 readable records)
            log.error(
                "outbox %s is corrupt (%s): moved aside to %s; a fresh outbox starts in epoch %d%s; the others "
                "were not sent (inspect the file with sqlite3 if they matter)",
                self.path,
                reason,
                aside,
                epoch,
                readable,
            )
            corrupt = (str(aside), reason, time.time(), salvaged)  # (its event kept in outbox-untold)
        if (
            self.owner is None and corrupt is None
        ):  # (the store kept: whose it is, for a renewal and the epoch file)
            self._carried_owner = _get_owner(db) or self._carried_owner
        if (
            self.owner or self._carried_owner
        ) is not None:  # (a fresh or renewed file: its records are made under this owner from now on)
            _set_owner(db, self.owner or self._carried_owner, replace=False)  # type: ignore[arg-type]
        self.held = self._read_held()
        self._db = db
        self._hold_file()
        self._ino, self._size_seen = self._identity(), None
        self._failing, self._failed_in_burst, self._unpersisted = False, 0, Counter()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        last_row = db.execute("SELECT MAX(seq) FROM records").fetchone()[0] or 0
        self._seq = max(meta.get("last_seq", 0), last_row)
        known = self._read_epoch_file()
        if "epoch" in meta:
            self.epoch = meta["epoch"]
        elif self._seq:  # a v1 outbox: its records keep epoch 0
            self.epoch = 0
        else:  # a new file: a new epoch
            self.epoch = max((known or 0) + 1, _clock_epoch())
        if known is None or known < self.epoch:  # recorded outside the file before the file uses it
            self._write_epoch_file(self.epoch)
        elif (
            known == self.epoch
            and (self.owner or self._carried_owner) is not None
            and self._read_epoch_owner() != (self.epoch, *(self.owner or self._carried_owner))  # type: ignore[misc]
        ):  # an epoch file from before owners were kept in it, or of a store that just changed hands
            self._write_epoch_file(self.epoch)
        if "epoch" not in meta:
            db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (self.epoch,))
        self._sent_mark = self._read_sent_mark(self.epoch)
        if self._sent_mark > self._seq:
            # the file lost its last commits (a card that dropped or garbled part of its WAL at a power loss:
            # SQLite then rolls the tail back without a word); seqs already sent must not be given again, or the
            # cloud would take the new records for replays of the old and discard them
            log.warning(
                "outbox %s: the store ends at seq %d but seqs up to %d were already sent: the disk lost its last "
                "writes; numbering goes on after %d",
                self.dir,
                self._seq,
                self._sent_mark,
                self._sent_mark,
            )
            self._seq = self._sent_mark
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT(key) DO UPDATE SET "
                "value = MAX(value, excluded.value)",
                (self._seq,),
            )
        self.dropped_total = Counter(
            {k[len("dropped:") :]: v for k, v in meta.items() if k.startswith("dropped:")}
        )
        if "write_probe" in meta:  # an idle write's zeros a kill left (up to WRITE_PROBE_MAX): given back
            db.execute("DELETE FROM meta WHERE key = 'write_probe'")
        if (
            db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2
        ):  # a file from before INCREMENTAL: convert once
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("VACUUM")
        self._told = self._tell_untold(db)
        self._requeue_damaged(db)
        self._committed_seq = self._seq
        self._rebuild_counts(db)
        job = self._read_salvaging()
        # a copy left unfinished (cut by its time limit, to go on while running): the sample files of the records it
        # has still to copy are named by no row yet, and are kept (counted) until a start finds no copy left; formerly
        # removed here, and the records copied later named files that were gone
        self._sweep_samples(db, remove=job is None)
        self._copy_due = job is not None and job.get("epoch") == self.epoch
        self._copy_next, self._copy_failures = 0.0, 0
        self._stop.clear()
        self._opened = True
        self._writer = threading.Thread(target=self._write_loop, name="outbox-writer", daemon=True)
        self._writer.start()
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix="outbox-append", initializer=self._mark_thread
        )
        if corrupt is not None:
            self.renewals += 1
            self.salvaged += corrupt[3].total()
        for evt in self._told:  # (committed already, by ``_tell_untold``)
            if evt.kind in (EventKind.OUTBOX_BUDGET, EventKind.OUTBOX_SALVAGED):
                self.on_event(evt)  # (a held store removed by the bound: ``_drop_held``; a copy finished)
            else:
                self._renewed(evt, queue_it=False)
        self._told = []
        if self._left_for_later:
            log.warning(
                "outbox %s: the start's time for damaged and held stores (at most %g s) ran out; left for later: %s",
                self.dir,
                START_S,
                "; ".join(self._left_for_later[:10])
                + (f"; and {len(self._left_for_later) - 10} more" if len(self._left_for_later) > 10 else ""),
            )
        return db

    # ---- a gateway moved to another tenant --------------------------------------------------------
    def _own(
        self, db: sqlite3.Connection, recorded: tuple[int, str, str] | None = None
    ) -> sqlite3.Connection:
        """The store opened at start, if its records were made under this owner's tenant; else the connection of a
        fresh store in a new epoch, the former one held whole in ``<aside>/outbox-held/`` (never sent: they are
        the former tenant's), or removed when it held no record. A gateway given a certificate of another tenant
        sent every record its former tenant had not received yet to the new one. A new agent id in the same
        tenant sends on: its records are that tenant's."""
        if self.owner is None:
            return db
        row = _get_owner(db)
        if row is None:
            # a store renewed before renewed stores were given their owner: the epoch file names it, when it is
            # of this store's epoch (else a new store, or one from before owners were kept: made under this one)
            epoch = dict(db.execute("SELECT key, value FROM meta").fetchall()).get("epoch")
            if recorded is not None and epoch is not None and recorded[0] == epoch and recorded[1]:
                row = (recorded[1], recorded[2])
            if row is None or row[0] == self.owner[0]:
                _set_owner(db, self.owner)
                return db
        tenant, agent = self.owner
        if row[0] == tenant:
            if row[1] != agent:
                log.info(
                    "outbox %s: records made as agent %s are sent on as agent %s of tenant %s",
                    self.dir,
                    _who(row[1]),
                    _who(agent),
                    _who(tenant),
                )
                _set_owner(db, self.owner)
            return db
        self.former_tenant = str(row[0])
        if self.on_move is not None:
            self.on_move(self.former_tenant)
        by_kind: Counter = Counter()
        for k, n in db.execute("SELECT kind, COUNT(*) FROM records GROUP BY kind"):
            by_kind[_kind_read(k)] += n  # (a kind the damage garbled in place: no record, noted apart)
        damaged = by_kind.pop(DAMAGED, 0)
        shas = [
            r[0]
            for r in db.execute("SELECT DISTINCT sample_sha256 FROM records WHERE sample_sha256 IS NOT NULL")
        ]
        epoch = dict(db.execute("SELECT key, value FROM meta").fetchall()).get("epoch", 0)
        db.close()  # (the last connection: its WAL is checkpointed into the file)
        if by_kind.total() or damaged:
            kept = self._hold(
                (str(row[0]), str(row[1])), int(epoch), by_kind, shas, reach={"damaged": damaged}
            )
            log.warning(
                "outbox %s: %d records (%s) were made under tenant %s as agent %s (epoch %d); this gateway's "
                "certificate now names tenant %s: they are not sent (another tenant's), held whole in %s; the outbox "
                "starts afresh in a new epoch",
                self.dir,
                by_kind.total(),
                ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items()))
                + (f"; and {damaged} damaged rows, no record of any kind" if damaged else ""),
                _who(row[0]),
                _who(row[1]),
                epoch,
                _who(tenant),
                kept,
            )
        else:
            log.warning(
                "outbox %s: made under tenant %s; this gateway's certificate now names tenant %s: the outbox, empty, "
                "starts afresh in a new epoch",
                self.dir,
                _who(row[0]),
                _who(tenant),
            )
            # the database last: a kill between two removals leaves no WAL alone at the path
            for suffix in reversed(STORE_FILES):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
        db = self._connect()
        db.executescript(SCHEMA)
        _set_owner(db, self.owner)
        return db

    def _former_tenant(self, src: Path, recorded: tuple[int, str, str] | None) -> tuple[str, str] | None:
        """The (tenant, agent) a moved-aside corrupt store was made under when it is not this owner's tenant, read
        from its ``meta``, else (that page unreadable) from ``outbox-epoch.json`` (``recorded``; one with no owner at
        all: this gateway's, as a meta without one); ("", "") when neither says: a store whose owner cannot be told is
        not salvaged into this owner's outbox. None: this tenant's (salvaged), or no owner known for this gateway
        (salvaged as before). A start with no certificate (no ``cloud:`` section) is judged as the owner its store
        carries (``outbox-epoch.json``'s): formerly never, and after a start of another tenant killed before it held
        the former tenant's corrupt store, such a start copied that tenant's records (and its ``outbox_corrupt``
        event) into the new tenant's store, which the new tenant's next start sent to its cloud."""
        ref = self.owner or self._carried_owner
        if ref is None:
            return None
        readable, found = self._store_owner(src)
        if readable:  # (no owner in a readable meta: a store from before owners were kept, this one's)
            return found if found is not None and found[0] != ref[0] else None
        if recorded is not None:
            return (recorded[1], recorded[2]) if recorded[1] != ref[0] else None
        if self._ownerless_epoch:
            # written by a start with no certificate (no owner then): its store was made under none, this gateway's,
            # as a readable meta without an owner is. Formerly held as outbox.db.unknown-<epoch> with "0 records",
            # nothing of it salvaged and (since no event names an untold owner) nothing told to the cloud
            return None
        return ("", "")

    def _job_former(
        self, j: dict, src: Path, recorded: tuple[int, str, str] | None
    ) -> tuple[str, str] | None:
        """``_former_tenant`` of ``src``, the file of the marker's job ``j``: when its meta cannot be read, the owner
        the start that wrote the marker judged it to have (recorded in the job) comes before the epoch file, which
        that start may have rewritten for its own new store. Formerly the epoch file's: after a start of beta killed
        before it held acme's corrupt store (meta unreadable), the gateway back to acme held acme's own records as
        tenant 'beta''s, never sent."""
        ref = self.owner or self._carried_owner
        o = j.get("owner")
        if (
            ref is not None
            and isinstance(o, list)
            and len(o) == 2
            and all(isinstance(x, str) for x in o)
            and o[0]
            and not self._store_owner(src)[0]
        ):
            return (o[0], o[1]) if o[0] != ref[0] else None
        return self._former_tenant(src, recorded)

    def _other_owner(self, j: dict) -> tuple[str, str] | None:
        """The (tenant, agent) the marker's job ``j`` records as its file's owner when that is another tenant than
        this one (written by the start that judged it so, before the epoch file was rewritten for its own store);
        None: no such owner recorded."""
        ref = self.owner or self._carried_owner
        o = j.get("owner")
        if ref is None or not (isinstance(o, list) and len(o) == 2 and all(isinstance(x, str) for x in o)):
            return None
        return (o[0], o[1]) if o[0] and o[0] != ref[0] else None

    @staticmethod
    def _store_owner(src: Path) -> tuple[bool, tuple[str, str] | None]:
        """(whether its meta could be read, the owner it names) of the store ``src``, opened read-only."""
        try:
            con = _read_only(src)
            try:
                return True, _get_owner(con)
            finally:
                con.close()
        except sqlite3.Error:
            return False, None

    @staticmethod
    def _store_epoch(src: Path) -> int | None:
        """The epoch the store ``src`` names in its ``meta`` (opened read-only), or None (unreadable, none)."""
        try:
            con = _read_only(src)
            try:
                row = con.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            return None
        return row[0] if row is not None and type(row[0]) is int else None

    def _epoch_file_ownerless(self) -> bool:
        """Whether ``outbox-epoch.json`` records an epoch, no owner, and that no owner was ever recorded for its store's
        lineage (``"unowned": true``: written by a start with no certificate and none carried from a store before it).
        One with no owner and no such word (written before owners were carried) does not say: its store may have been
        a tenant's, and one whose meta is unreadable is held as one whose owner cannot be told."""
        from edge_agent.files import read_json_state

        try:
            got = read_json_state(self.epoch_path, MARK_MAX_BYTES)
            return (
                isinstance(got, dict)
                and type(got.get("epoch")) is int
                and not {"tenant", "agent"} & set(got)
                and got.get("unowned") is True
            )
        except (OSError, ValueError, TypeError):
            return False

    def _held_dir(self) -> Path:
        return self.corrupt_dir.parent / HELD_DIR

    def _hold(
        self,
        owner: tuple[str, str],
        epoch: int,
        by_kind: Counter,
        shas: list[str],
        src: Path | None = None,
        partly: bool = False,
        reach: dict | None = None,
    ) -> Path:
        """Move the store (``src``: a corrupt one moved aside; else the outbox's own) and the sample files its
        records name into ``outbox-held/``, beside a note saying whose records they are (``<name>.json``, written
        first: a note whose store is missing is skipped). An owner of ("", ""): it cannot be told. ``reach``: what the
        count told (``_readable``): how far it got, and the rows read back with no record kind (``damaged``: noted beside
        the records, never as one of their kinds)."""
        reach = reach or {}
        counted_to, damaged = reach.get("counted_to"), reach.get("damaged", 0)
        held = self._held_dir()
        held.mkdir(parents=True, exist_ok=True)
        base = f"outbox.db.{re.sub(r'[^A-Za-z0-9_.-]', '_', owner[0] or 'unknown')[:64]}-{epoch}"
        name, n = base, 1
        while any((held / (name + sfx)).exists() for sfx in (*STORE_FILES, ".json", ".samples")):
            name, n = f"{base}.{n}", n + 1
        dst = held / name
        note = {
            "tenant": owner[0],
            "agent": owner[1],
            "epoch": epoch,
            "records": by_kind.total(),
            "by_kind": dict(by_kind),
            "held_at": time.time(),
            "why": (f"made under tenant {owner[0]}" if owner[0] else "corrupt, its tenant cannot be told")
            + (
                f"; the gateway's certificate then named tenant {self.owner[0]}"
                if self.owner
                # (formerly "named tenant ?": a start with no certificate judges by the owner its outbox carries)
                else f"; the gateway had no certificate, its outbox carried tenant {self._carried_owner[0]}"
                if self._carried_owner
                else "; the gateway had no certificate"
            ),
            "file": str(dst),
        }
        if (
            damaged
        ):  # (formerly counted nowhere; a sound store's garbled kind was a kind of its own, a blob one
            note["damaged"] = damaged  # failed the note's write and the start)
        if src is not None:
            note["corrupt"] = True
            # (the salvage marker's file: ``_resume_salvage`` tells nothing of it once held)
            note["moved_from"] = str(src)
        if partly:  # (its count cut by the time limit: at least this many, ``_readable``)
            note["records_at_least"] = True
            self._later(f"the count of {dst} (at least {by_kind.total()} records; goes on at the next start)")
            if (
                counted_to is not None
            ):  # (how far it got: a later start goes on from there, ``_recount_held``)
                note["counted_to"] = counted_to
        from edge_agent.files import atomic_write_json

        atomic_write_json(held / f"{name}.json", note)
        if shas:
            (held / f"{name}.samples").mkdir(exist_ok=True)
            for sha in shas:
                one = self.samples_dir / sha
                if one.exists():
                    _move_file(one, held / f"{name}.samples" / sha)
        self._move_store(src or self.path, dst)
        self._held_now.add(name)
        self._counted_now.add(name)
        if not self.defer_held_bound:
            self.bound_held()
        return dst

    def _held_notes(self, with_store: bool) -> Iterator[tuple[str, Path, dict | None, dict[str, list[str]]]]:
        """The notes in ``outbox-held/`` (``<name>.json``, at most 1000, by name) whose store is there (``with_store``)
        or is not, from one listing of the folder: each as its name, its path, its content (read once, bounded; None
        when unreadable) and the held stores of that listing by base name (``<base>`` -> ``<base>.<n>``, n >= 1, by
        n: a store held again). Formerly each note without a store listed the folder again and opened the store at
        the outbox's path: 1,000 such notes (a held store deleted or moved out by hand) took 7-32 s of every start."""
        from edge_agent.files import read_json_state

        held = self._held_dir()
        try:
            with os.scandir(held) as it:
                names = {e.name for e in it}
        except OSError:
            return
        stores = {
            n[: -len(sfx)] if sfx else n for n in names for sfx in STORE_FILES if sfx and n.endswith(sfx)
        }
        stores |= {n for n in names if not n.endswith((".json", ".samples", "-wal", "-shm"))}
        again: dict[str, list[tuple[int, str]]] = {}
        for one in stores:
            m = re.fullmatch(r"(.*)\.(\d+)", one)
            if m and int(m.group(2)) >= 1:
                again.setdefault(m.group(1), []).append((int(m.group(2)), one))
        by_base = {base: [one for _n, one in sorted(found)] for base, found in again.items()}
        notes = sorted(n for n in names if n.startswith("outbox.db.") and n.endswith(".json"))[:1000]
        for note_name in notes:
            name = note_name[: -len(".json")]
            if (name in stores) != with_store:
                continue
            try:
                note = read_json_state(held / note_name, MARK_MAX_BYTES)
            except (OSError, ValueError):
                note = None
            yield name, held / note_name, note if isinstance(note, dict) else None, by_base

    def _path_store(self, recorded: tuple[int, str, str] | None) -> tuple[str, int] | None:
        """The tenant and epoch of the store at the outbox's path (its owner read as ``_own`` reads it: ``meta``, else
        ``outbox-epoch.json`` when of its epoch), or None: no store there, unreadable, or no owner known."""
        if not self.path.exists():
            return None
        try:
            con = _read_only(self.path)
            try:
                row = _get_owner(con)
                epoch = dict(con.execute("SELECT key, value FROM meta").fetchall()).get("epoch")
            finally:
                con.close()
        except sqlite3.Error:
            return None
        if (
            row is None
            and recorded is not None
            and epoch is not None
            and recorded[0] == epoch
            and recorded[1]
        ):
            row = (recorded[1], recorded[2])
        return (row[0], epoch) if row is not None and epoch is not None else None

    def _drop_notes_without_store(self, recorded: tuple[int, str, str] | None = None) -> None:
        """At open, once a move a kill cut off is completed (``_finish_move``): a note in ``outbox-held/`` with no
        store beside it. When the store at the outbox's path is the very store it was written for (its tenant and
        epoch), it is a hold killed after its note (and some of its samples) but before its store moved: its sample
        files go back to ``samples/`` (this start holds the store again with them) and the note is removed. Else,
        when that store is held under another name of the same base (``<name>.<n>``: held again by a former start
        that met that kill), its samples go into that store's ``.samples/`` and the note is removed. Else (a held
        store moved out by hand, e.g. to export it) the note and its samples stay as they are while any sample is
        left (pruning skips a note with no store; the store is held again once put back); a note that names nothing
        left (no store, no sample: the store deleted by hand) is removed, with a WARNING naming it. Formerly the
        samples always went back to ``samples/``, where those the current store does not name were deleted at once
        (a store held again as ``<name>.1``, or moved out by hand, lost them), and a note naming nothing stayed for
        good. The folder is listed once and the store at the path read once (``_held_notes``)."""
        held = self._held_dir()
        path_store: list = []  # (read once, when a note first needs it)
        dropped = 0  # notes naming nothing, removed (the folder synced once after them)
        for name, p, note, by_base in self._held_notes(with_store=False):
            if note is None:
                continue
            if (
                note.get("dropping") is True
            ):  # (removed by the bound, cut off after its store: ``_finish_drops``)
                self._drop_held(name, note, None)
                continue
            if not path_store:
                path_store.append(self._path_store(recorded))
            base = re.sub(r"\.\d+$", "", name)
            again = next((one for one in by_base.get(base, []) if one != name), None)
            moved_from = note.get("moved_from")
            if (path_store[0] is not None and path_store[0] == (note.get("tenant"), note.get("epoch"))) or (
                # a corrupt store's hold killed before its store moved: still in outbox-corrupt/, held again by this
                # start with them (formerly the note and part of its samples stayed apart from it, for good)
                isinstance(moved_from, str)
                and os.path.isfile(moved_from)
                and Path(moved_from).parent.resolve() == self.corrupt_dir.resolve()
            ):
                into, where = self.samples_dir, "put back into samples/ (the store is held again with them)"
            elif again is not None:
                into, where = (
                    held / f"{again}.samples",
                    f"moved to {held / again}'s, the same store held again",
                )
            else:  # (its store moved out by hand: the note and its samples stay; never counted, never pruned)
                dropped += self._drop_note_naming_nothing(p, held / f"{name}.samples")
                continue
            kept, back = held / f"{name}.samples", 0
            try:
                if kept.is_symlink():  # (not ours: never followed)
                    kept.unlink()
                elif kept.is_dir():
                    into.mkdir(exist_ok=True)
                    for one in sorted(kept.iterdir()):
                        if not stat.S_ISREG(one.lstat().st_mode):
                            continue
                        if os.path.lexists(into / one.name) and _same_file(one, into / one.name):
                            one.unlink()
                        else:  # (a copy a kill cut short there, by a former version: made again, whole)
                            _move_file(one, into / one.name)
                        back += 1
            except OSError as exc:  # (left as it is, for the next start: no sample removed on the way)
                log.warning("outbox %s: %s names no store beside it; its samples stay: %s", self.dir, p, exc)
                continue
            shutil.rmtree(kept, ignore_errors=True)
            log.warning(
                "outbox %s: %s names no store beside it (a hold cut off before its store moved): removed, %d sample "
                "files %s",
                self.dir,
                p,
                back,
                where,
            )
            with contextlib.suppress(OSError):
                p.unlink()
                _sync_dir(held)
        if dropped:
            with contextlib.suppress(OSError):
                _sync_dir(held)

    def _drop_note_naming_nothing(self, note: Path, samples: Path) -> bool:
        """A held note whose store is gone, removed once no sample of it is left either (its ``.samples`` missing or
        an empty folder): nothing it names exists any more. True when removed."""
        try:
            if os.path.lexists(samples):
                if samples.is_symlink() or not samples.is_dir() or any(samples.iterdir()):
                    return False  # (samples left: kept with them, for the store to be put back)
                samples.rmdir()
            note.unlink()
        except OSError:
            return False
        log.warning(
            "outbox %s: %s named a held store that is no longer there (deleted or moved out by hand) and no sample: "
            "removed",
            self.dir,
            note,
        )
        return True

    def bound_held(self) -> None:
        """Keep ``outbox-held/`` within its bound (``_bound_held``), never removing a store held since the last
        call. Called by ``_hold``, or by the agent once it noted the move (``defer_held_bound``). Nothing held since
        the last call: nothing pruned (every agent start calls it; a restart pruned the store a move held, were it
        larger than the new budget, one reboot after the move: review /work/notes56/review_tenant2 M1')."""
        if not self._held_now:
            return
        try:
            self._bound_held(keep=self._held_now)
        finally:
            self._held_now.clear()

    def _bound_held(self, keep: set[str]) -> None:
        """Keep ``outbox-held/`` within the outbox's budget (``max_bytes``, a budget of its own beside the outbox's):
        the oldest held stores (their note, store and samples) are removed first, never ``keep`` (those just held),
        each counted (``held_dropped``: records by kind) and said (a WARNING and an ``outbox_budget`` event with
        cause ``held``, sent to the cloud) before it is removed. A gateway moved back and forth kept every former
        store: nothing bounded the folder."""
        held = self._held_dir()

        def size_of(name: str) -> int:
            total = 0
            for f in [held / f"{name}{sfx}" for sfx in ("", "-wal", "-shm", ".json")]:
                with contextlib.suppress(OSError):
                    total += f.lstat().st_size
            with contextlib.suppress(OSError):
                total += sum(f.lstat().st_size for f in (held / f"{name}.samples").iterdir())
            return total

        stores = []
        # (a note with no store: nothing held there, nothing to count as dropped or to remove)
        for name, _p, note, _again in self._held_notes(with_store=True):
            try:
                at = float(note.get("held_at", 0)) if note is not None else 0.0
            except (TypeError, ValueError, OverflowError):
                at = 0.0
            stores.append((at, name, note or {}, size_of(name)))
        total = sum(st[3] for st in stores)
        newest = max(stores, key=lambda st: (st[0], st[1]))[1] if stores else None
        for _at, name, note, size in sorted(stores, key=lambda st: (st[0], st[1])):
            if total <= self.s.max_bytes:
                break
            if name in keep or name == newest:  # the newest held store is never removed
                continue
            from edge_agent.files import atomic_write_json

            # its event kept in outbox-untold (committed with its told:<id>), then the note marked, both durably and
            # before anything is removed: a kill from here on finishes the removal at the next start and tells the
            # event once (a kill before its commit: told then; after it: never again)
            evt, entry = self._held_event(name, note)
            try:
                self._keep_untold(entry)
                try:
                    atomic_write_json(held / f"{name}.json", {**note, "dropping": True, "told": entry["id"]})
                except OSError:
                    with self._untold_lock, contextlib.suppress(OSError):
                        self._untold = [e for e in self._untold if e is not entry]
                        self._keep_untold()
                    raise
            except OSError as exc:
                log.warning("outbox %s: cannot remove the held store %s now: %s", self.dir, name, exc)
                continue
            self._drop_held(name, note, size, (evt, entry["id"]))
            total -= size

    def _finish_drops(self) -> None:
        """At open, once a move a kill cut off is completed: a held store whose removal by ``_bound_held`` a kill cut
        off (its note marked ``dropping``) is removed now, counted and told once (a note whose store was removed
        already: ``_drop_notes_without_store``). Formerly the drop was lost: its
        records never counted, no ``outbox_budget`` event, and the note removed as a store deleted by hand."""
        # (an event kept for a store whose note a kill left unmarked: the removal was decided, finished now)
        owed = {
            (e.get("held"), e.get("held_at"))
            for e in self._untold
            if e.get("kind") == EventKind.OUTBOX_BUDGET.value
        }
        for name, _p, note, _again in list(self._held_notes(with_store=True)):  # (those without: see below)
            if note is not None and (note.get("dropping") is True or (name, note.get("held_at")) in owed):
                self._drop_held(name, note, None)

    def _held_event(self, name: str, note: dict) -> tuple[Event, dict]:
        """The ``outbox_budget`` event (cause ``held``) of the held store ``name`` removed by the bound, and its entry
        for ``outbox-untold`` (``_keep_untold``; told by ``_tell_untold`` or committed with its ``told:<id>``)."""
        by_kind = _note_kinds(note)
        evt = Event(
            EventKind.OUTBOX_BUDGET,
            cause="held",
            epoch=note.get("epoch") if isinstance(note.get("epoch"), int) else None,
            dropped=by_kind.total(),
            by_kind=dict(by_kind),
            ranges=[],
            budget_bytes=self.s.max_bytes,
            # (its count cut by a time limit: at least that many; formerly told as the true count, "dropped 0")
            **({"dropped_at_least": True} if note.get("records_at_least") is True else {}),
        )
        entry = {
            "id": os.urandom(8).hex(),
            "kind": EventKind.OUTBOX_BUDGET.value,
            "event": {"t": evt.t, **evt.data},
            "salvaged_by_kind": {},
            "held": name,
            "held_at": note.get("held_at"),
        }
        return evt, entry

    def _drop_held(
        self, name: str, note: dict, size: int | None, told: tuple[Event, str] | None = None
    ) -> None:
        """Remove the held store ``name`` (its store, samples, then its note), counted (``held_dropped``) and said (a
        WARNING and, with ``told``, its ``outbox_budget`` event, kept in ``outbox-untold`` under that id) first.
        ``size`` None: a removal a kill cut off, its event told by ``_tell_untold`` if its commit never came."""
        held = self._held_dir()
        by_kind = _note_kinds(note)
        self.held_dropped.update(by_kind)
        if (
            note.get("records_at_least") is True
        ):  # (``/status``: formerly "dropped: {}" for 1000 readable records)
            self.held_dropped_at_least = True
        if size is None:
            log.warning(
                "outbox %s: the removal of the held store %s (tenant %s, epoch %s, %s%d records) to keep "
                "outbox-held/ within its bound (%d bytes, the outbox's budget) was cut off: finished, never sent",
                self.dir,
                name,
                _who(str(note.get("tenant") or "?")),
                note.get("epoch"),
                "at least " if note.get("records_at_least") is True else "",
                by_kind.total(),
                self.s.max_bytes,
            )
        else:
            log.warning(
                "outbox %s: outbox-held/ past its bound (%d bytes, the outbox's budget): removed the oldest held "
                "store %s (tenant %s, epoch %s, %s%d records, %d bytes), never sent",
                self.dir,
                self.s.max_bytes,
                name,
                _who(str(note.get("tenant") or "?")),
                note.get("epoch"),
                "at least " if note.get("records_at_least") is True else "",
                by_kind.total(),
                size,
            )
        if (
            told is None
            and "told" not in note
            and not any(
                e.get("held") == name and e.get("held_at") == note.get("held_at") for e in self._untold
            )
        ):  # (a note marked before its event was kept with it: kept now, told once by ``_tell_untold``)
            with contextlib.suppress(OSError):
                self._keep_untold(self._held_event(name, note)[1])
        if told is not None and self._opened:
            # (the outbox running: committed with its told:<id>; at open, ``_tell_untold`` commits it and says it)
            evt, uid = told
            with self._lock:
                self._told_ids[id(evt)] = (evt, uid)
                self._notices.append(evt)
            self.on_event(evt)
        # said and counted first: a kill during the removal leaves no silent partial removal
        for sfx in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                (held / f"{name}{sfx}").unlink()
        shutil.rmtree(held / f"{name}.samples", ignore_errors=True)
        with contextlib.suppress(OSError):
            (held / f"{name}.json").unlink()

    def _read_held(self) -> list[dict]:
        """The notes of the outboxes held in ``outbox-held/`` whose store is there (bounded reads, newest last)."""
        from edge_agent.files import read_json_state

        out = []
        held = self._held_dir()
        try:  # (one listing: a start lists outbox-held/ a set number of times, whatever it holds)
            with os.scandir(held) as it:
                entries = {e.name: e.is_file(follow_symlinks=False) for e in it}
        except OSError:
            return []
        self._sweep_copies(held, [n for n in entries if n.startswith(".") and n.endswith(".copying")])
        bare = [
            n
            for n, regular in entries.items()
            if regular
            and n.startswith("outbox.db.")
            and not n.endswith((".json", "-wal", "-shm"))
            and f"{n}.json" not in entries
        ]
        # one time limit for them all: formerly each store's count had its own 10 s, and 1000 large stores put back
        # could hold up a start for hours (a count the limit cuts says "at least")
        deadline = time.monotonic() + self._start_limit(HELD_COUNT_S)
        for name in sorted(bare)[:1000]:
            with contextlib.suppress(OSError):
                self._note_put_back(held, name, deadline)
                entries[f"{name}.json"] = True
        notes = sorted(held / n for n in entries if n.startswith("outbox.db.") and n.endswith(".json"))
        for p in notes[:1000]:
            try:
                note = read_json_state(p, MARK_MAX_BYTES)
                if not (isinstance(note, dict) and Path(str(note.get("file"))).is_file()):
                    continue
                kinds = note.get("by_kind")
                kinds = kinds if isinstance(kinds, dict) else {}
                note.update(  # (a note edited by hand: what cannot be read is counted as nothing)
                    records=int(note.get("records", 0)),
                    held_at=float(note.get("held_at", 0)),
                    by_kind={str(k): int(v) for k, v in kinds.items()},
                )
                if "damaged" in note:
                    note["damaged"] = int(note["damaged"])
                if (
                    note.get("records_at_least") is True
                    and note.get("dropping") is not True
                    and p.name[: -len(".json")] not in self._counted_now
                ):
                    self._recount_held(p, note, deadline)
                out.append(note)
            except (OSError, ValueError, TypeError, OverflowError):
                continue
        if out:
            log.warning(
                "outbox: %d outbox stores (%s%d records counted) made under another tenant than this gateway's, or "
                "corrupt under a tenant that cannot be told, are held, never sent: %s (inspect them with sqlite3; "
                "remove the files once they are no longer needed)",
                len(out),
                "at least " if any(n.get("records_at_least") is True for n in out) else "",
                sum(n["records"] for n in out),
                ", ".join(
                    f"{n.get('file')} (tenant {_who(n.get('tenant') or '?')}, "
                    + ("at least " if n.get("records_at_least") is True else "")
                    + f"{n.get('records')} records"
                    + (f", {n['damaged']} damaged rows" if n.get("damaged") else "")
                    + (", corrupt" if n.get("corrupt") else "")
                    + ")"
                    for n in out[:5]
                ),
            )
        return sorted(out, key=lambda n: n["held_at"])

    def _recount_held(self, p: Path, note: dict, deadline: float) -> None:
        """The held store of ``note`` (at ``p``) whose count a time limit cut ("at least N") counted again, within
        ``deadline`` (monotonic; shared by the stores a start counts): a count now complete, or higher, is kept in
        its note. Formerly never counted again: "at least 0" for good, and its removal by outbox-held/'s bound told
        "dropped 0" for a store of 300 readable records. Gone on with from where the last count got (the note's
        ``counted_to``), adding to its counts: formerly counted again from the first seq at each start, so a store
        too big to count within the time limit never completed and cost every start the whole limit."""
        from edge_agent.files import atomic_write_json

        done = note.get("counted_to")
        done = done if type(done) is int and done >= 0 else None
        reach: dict = {}
        try:  # (a store gone since it was listed: its note as it is)
            by_kind, partly = self._count_held(
                Path(str(note["file"])), deadline, None if done is None else done + 1, reach
            )
        except OSError:
            return
        damaged = reach.get("damaged", 0)
        if done is not None:  # (gone on with: what this start read adds to what the former ones did)
            by_kind = _note_kinds(note) + by_kind
            damaged += note.get("damaged", 0)
        elif partly and by_kind.total() <= note["records"]:
            return
        note.update(records=by_kind.total(), by_kind=dict(by_kind))
        if damaged:
            note["damaged"] = damaged
        if partly:
            if "counted_to" in reach:
                note["counted_to"] = reach["counted_to"]
        else:
            note.pop("records_at_least", None)
            note.pop("counted_to", None)
        with contextlib.suppress(OSError):
            atomic_write_json(p, dict(note))

    # ---- a store that is corrupt, or goes bad under a running outbox ---------------------------
    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _aside_name(self, what: str) -> Path:
        """``outbox-corrupt/outbox.db.<what>-<unix time>``, never a name in use (two in one second)."""
        stamp = int(time.time())
        name, n = f"outbox.db.{what}-{stamp}", 1
        while any((self.corrupt_dir / (name + sfx)).exists() for sfx in ("", "-wal", "-shm", "-journal")):
            name, n = f"outbox.db.{what}-{stamp}.{n}", n + 1
        return self.corrupt_dir / name

    def _move_aside(self, keep: Path | None = None, to: Path | None = None) -> Path | None:
        """Move the database file (and its -wal and -shm) to ``<data_dir>/outbox-corrupt/`` (outside the
        budgeted folder; only the newest is kept, so a bad disk cannot fill up with copies). None when there
        was no file to move."""
        self.corrupt_dir.mkdir(parents=True, exist_ok=True)
        # the copies a killed or cut-off process left unfinished (the marker's file and those it carries): kept
        todo = {Path(j["src"]).name for j in self._jobs(self._read_salvaging())}
        for old in sorted(self.corrupt_dir.glob("outbox.db.*")):
            if keep is not None and old.name.startswith(keep.name):
                continue
            if any(old.name in (name, name + "-wal", name + "-shm") for name in todo):
                continue
            log.warning("outbox: removing an older corrupt file %s to keep only the newest", old)
            old.unlink(missing_ok=True)
        aside = to or self._aside_name("corrupt")
        if not self._move_store(self.path, aside):
            return None
        self.moved_aside = aside
        return aside

    def _move_store(self, src: Path, dst: Path) -> bool:
        """Move the store ``src`` (its database and, beside it, its ``-wal`` and ``-shm``) to ``dst``: the one way the
        outbox moves a store (``_move_aside``, ``_hold``). The move is recorded first (``<data_dir>/outbox-moving``,
        fsync'd: from where to where) and the record removed, durably, once the files are moved: a kill between two
        of them leaves the record, and the next start completes the move (``_finish_move``), every WAL beside the
        database it came with. Formerly the files were moved one by one with nothing on disk saying so: a kill between
        a half-made store's database and its WAL left that WAL at the path, the start put it beside the file the
        unfinished copy named, and SQLite replayed it into that store (every record gone, none counted). True when
        anything was moved."""
        here = [sfx for sfx in STORE_FILES if os.path.lexists(f"{src}{sfx}")]
        if not here:
            return False
        self._write_mark(self.moving_path, {"from": str(src), "to": str(dst)})
        for sfx in here:
            _move_file(Path(f"{src}{sfx}"), Path(f"{dst}{sfx}"))
        # (durable before anything new is made at ``src``: a record outliving the move would move that one)
        self._write_mark(self.moving_path, None)
        return True

    def _finish_move(self) -> None:
        """At open, before anything reads the store: a move of a store's files that a kill cut off
        (``outbox-moving`` still there) is completed, whatever of it is still at its former place moved beside what
        went first. Only a move between the outbox's own places is completed (its path, ``outbox-corrupt/``,
        ``outbox-held/``); another record is logged and dropped."""
        from edge_agent.files import read_json_state

        if not os.path.lexists(self.moving_path):
            return
        if self.moving_path.is_dir() and not self.moving_path.is_symlink():
            # (no record of ours: removing it failed, "Is a directory ... free space on that disk or make the folder
            # writable", and the agent did not start)
            stamp = int(time.time())
            aside, n = self.moving_path.with_name(f"{MOVING_FILE}.bad-{stamp}"), 1
            while os.path.lexists(aside):  # (one there already, not empty: the rename would fail)
                aside, n = self.moving_path.with_name(f"{MOVING_FILE}.bad-{stamp}.{n}"), n + 1
            os.replace(self.moving_path, aside)
            _sync_dir(self.moving_path.parent)
            log.warning(
                "outbox %s: %s is a directory, not a record of a move: renamed %s",
                self.dir,
                self.moving_path,
                aside,
            )
            return
        try:
            mark = read_json_state(self.moving_path, MARK_MAX_BYTES)
            src, dst = Path(mark["from"]), Path(mark["to"])
        except (OSError, ValueError, KeyError, TypeError):
            mark = None
        places = {self.corrupt_dir.resolve(), self._held_dir().resolve()}
        if (
            mark is None
            or src == dst
            or not (src == self.path or src.parent.resolve() in places)
            or dst.parent.resolve() not in places
        ):
            log.warning(
                "outbox %s: %s names no move of a store of this outbox: removed", self.dir, self.moving_path
            )
            self._write_mark(self.moving_path, None)
            return
        for sfx in STORE_FILES:
            f = Path(f"{src}{sfx}")
            with contextlib.suppress(OSError):
                if not stat.S_ISREG(f.lstat().st_mode):
                    continue
                log.warning(
                    "outbox %s: a move of %s was cut off: %s moved beside it now", self.dir, dst, f.name
                )
                _move_file(f, Path(f"{dst}{sfx}"))
        self._write_mark(self.moving_path, None)

    def _sweep_copies(self, folder: Path, names: list[str] | None = None) -> None:
        """At open, once every move a kill cut off is completed (``_finish_move``, which makes a copy it redoes whole)
        and no move is in flight: the ``.<name>.copying`` files in ``folder`` (``outbox-corrupt/``; ``outbox-held/``
        from the listing ``_read_held`` makes, ``names``) are removed, each named in a WARNING: copies across disks a
        kill cut short (``_move_file``), the file each was for whole where it was. Nothing else there is touched.
        Formerly only a redo of that very move went over one: with the move completed otherwise (the same disk by
        then, a rename) it stayed for good, outside outbox-held/'s bound."""
        if names is None:
            try:
                with os.scandir(folder) as it:
                    names = [e.name for e in it if e.name.startswith(".") and e.name.endswith(".copying")]
            except OSError:
                return
        for part in sorted(folder / n for n in names):
            try:
                if not stat.S_ISREG(part.lstat().st_mode):
                    continue  # (not a copy of ours)
                part.unlink()
            except OSError as exc:
                log.warning("outbox %s: %s, a copy cut short, cannot be removed: %s", self.dir, part, exc)
                continue
            log.warning(
                "outbox %s: %s, a copy across disks a kill cut short (the file it was for is whole where it was): "
                "removed",
                self.dir,
                part,
            )
        if names:
            with contextlib.suppress(OSError):
                _sync_dir(folder)

    def _count_held(
        self, src: Path, deadline: float | None, lo: int | None = None, reach: dict | None = None
    ) -> tuple[Counter, bool]:
        """The records of the held store ``src`` by kind, read as a salvage reads it (a file cut short padded), then
        the file given back its size (the admin's file as it was put back: formerly left extended with zeros, its
        checksum changed); within ``deadline`` (monotonic), from seq ``lo`` (``_readable``). Formerly a recount read
        a file put back cut short unpadded: "0 records, partly", and "at least N" for good."""
        size = src.stat().st_size
        self._pad_truncated(src)
        try:
            by_kind, _shas, partly = _readable(
                src, None if deadline is None else max(0.0, deadline - time.monotonic()), lo, reach
            )
            if partly:
                self._later(
                    f"the count of {src} (at least {by_kind.total()} more records; goes on at the next start)"
                )
        finally:
            if src.stat().st_size > size:
                with open(src, "r+b") as f:
                    f.truncate(size)
        return by_kind, partly

    def _note_put_back(self, held: Path, name: str, deadline: float | None = None) -> None:
        """A store in ``outbox-held/`` with no note (``<name>.json``): one held, taken out by hand across a start (its
        note, naming nothing then, removed) and put back. Noted again from the store itself (its owner and epoch from
        ``meta``, else from its name; its readable records counted), with a WARNING, so that it is listed, counted
        and bounded as before. Formerly one with no sample was never listed again: outside ``/status``, the bound
        and the start's WARNING, for good. Its records are counted until ``deadline`` (monotonic; shared by the stores
        a start notes again)."""
        from edge_agent.files import atomic_write_json

        src = held / name
        owner, epoch, corrupt = None, None, False
        try:
            con = _read_only(src)
            try:
                owner = _get_owner(con)
                epoch = dict(con.execute("SELECT key, value FROM meta").fetchall()).get("epoch")
            finally:
                con.close()
        except sqlite3.Error:
            corrupt = True
        m = re.fullmatch(r"outbox\.db\.(.*)-(\d+)(?:\.\d+)?", name)
        if owner is None:
            tenant = m.group(1) if m and m.group(1) != "unknown" else ""
            owner = (tenant, "")
        if type(epoch) is not int:
            epoch = int(m.group(2)) if m else 0
        # read as a salvage reads it (a file cut short padded), then given back its size
        reach: dict = {}
        by_kind, partly = self._count_held(src, deadline, reach=reach)
        note: dict[str, Any] = {
            "tenant": owner[0],
            "agent": owner[1],
            "epoch": epoch,
            "records": by_kind.total(),
            "by_kind": dict(by_kind),
            "held_at": time.time(),
            "why": "found in outbox-held/ without its note (a held store put back by hand): noted again",
            "file": str(src),
        }
        if reach.get("damaged"):
            note["damaged"] = reach["damaged"]
        if corrupt:
            note["corrupt"] = True
        if partly:
            note["records_at_least"] = True
            if "counted_to" in reach:
                note["counted_to"] = reach["counted_to"]
        atomic_write_json(held / f"{name}.json", note)
        self._counted_now.add(name)
        log.warning(
            "outbox %s: %s, a held store with no note (put back by hand), is held again: tenant %s, %s%d records",
            self.dir,
            src,
            _who(owner[0] or "?"),
            "at least " if partly else "",
            by_kind.total(),
        )

    def _renewal_cut_after_move(self) -> int | None:
        """At open, before the store is read: a renewal killed after it moved the old store aside but before the
        new store had its epoch (a missing or half-made file at the path, never given appends) left the records in
        the file its marker names. That half-made store is moved aside and the new one is made in the marker's
        epoch, so the copy resumes from the first seq. Returns that epoch, or None."""
        job = self._read_salvaging()
        if job is None or type(job.get("epoch")) is not int or "previous_epoch" not in job:
            return None
        last = job.get("last_seq", 0)
        if type(last) is not int or not 0 <= last < 2**62:
            return None
        src = Path(job["src"])
        try:
            st = src.lstat()
        except OSError:
            return None  # never moved (the store at the path is the old one) or gone: the resume decides
        if not stat.S_ISREG(st.st_mode) or src.parent.resolve() != self.corrupt_dir.resolve():
            return None
        if self.path.exists():
            try:
                con = _read_only(self.path)
                try:  # a file the kill left before its tables (or some of them) were made: half-made too
                    tables = {
                        n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                    }
                    made = (
                        "meta" in tables
                        and con.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone() is not None
                    )
                    made = made or (
                        "records" in tables
                        and con.execute("SELECT 1 FROM records LIMIT 1").fetchone() is not None
                    )
                finally:
                    con.close()
            except sqlite3.Error as exc:
                if _is_corrupt(exc):
                    return None  # (a damaged store: open()'s own check decides)
                raise  # a disk that cannot be read now: open() says so, the marker stays
            if made:
                return None  # a store with an epoch or records (the new one, the old one): left as it is
            self._move_aside(to=self._aside_name("half-made"))
        log.error(
            "outbox %s: a renewal was cut off after moving the store aside to %s: a new store is made in epoch %d "
            "and the records are copied into it",
            self.dir,
            src,
            job["epoch"],
        )
        return int(job["epoch"])

    def _place_lone_wal(self) -> None:
        """At open, once a recorded move is completed: a ``-wal`` at the path with no database beside it and no move
        recorded (a former release's move cut off, a database removed by hand). A new store made there (an empty
        file) had SQLite delete that WAL, its records gone unsaid; put beside a database it did not come with, SQLite
        replays it into that one. It is moved aside as a store of its own (``outbox-corrupt/outbox.db.lone-<time>``)
        over a base: a copy of the file an unfinished copy names (a renewal's move cut off between its database and
        its WAL: the WAL reads with that file's pages), else one empty page (what the WAL holds whole reads). Its
        records are then copied in like any moved-aside store's, a seq the store holds already never twice, and an
        ``outbox_corrupt`` event tells it. A lone ``-shm`` holds nothing (the WAL's index): removed."""
        wal, shm = Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
        if os.path.lexists(self.path):
            return
        if not wal.is_file():
            shm.unlink(missing_ok=True)
            return
        self.corrupt_dir.mkdir(parents=True, exist_ok=True)
        job = self._read_salvaging()
        jobs = self._jobs(job)
        # a placement cut off before its move (its base made and named by the marker, the WAL still here): the WAL
        # goes beside that base, under its name, with its kept event; formerly a second base was made, and the
        # first, empty, was copied (nothing) or held (as an empty store of the former tenant's) beside it
        cut = next(
            (
                Path(j["src"])
                for j in jobs
                if Path(j["src"]).name.startswith("outbox.db.lone-")
                and not os.path.lexists(j["src"] + "-wal")
                and self._salvage_job_refused(j, Path(j["src"]), None) is None
            ),
            None,
        )
        # (a placement cut off before its move, under a former version: the WAL is placed again below)
        self._untold = [
            e
            for e in self._untold
            if "src" not in e or os.path.lexists(e["src"] + "-wal") or e["src"] == str(cut)
        ]
        reason = (
            "a WAL with no database beside it at the outbox's path (a move cut off, or the database removed)"
        )
        if cut is not None:
            lone, epoch = cut, job["epoch"] if job is not None and type(job.get("epoch")) is int else 0
            if not any(e.get("src") == str(lone) for e in self._untold):
                self._keep_untold(
                    self._untold_entry(
                        str(lone) + "-wal",
                        reason,
                        epoch,
                        self._read_epoch_file() or 0,
                        Counter(),
                        src=str(lone),
                    )
                )
        else:
            base = Path(jobs[0]["src"]) if jobs else None
            if base is not None and self._salvage_job_refused(jobs[0], base, None) is not None:
                base = None
            lone = self._aside_name("lone")
            if base is not None:
                shutil.copyfile(base, lone)
            else:
                with open(wal, "rb") as f:
                    page = int.from_bytes(f.read(12)[8:12], "big")
                with open(lone, "wb") as f:
                    f.truncate(page if 512 <= page <= 65536 else 4096)
            own = {"src": str(lone), "last_seq": 0, "acked": [], "from": 0}
            if job is not None and type(job.get("epoch")) is int:
                mark = self._marker(job["epoch"], [*jobs, own], job.get("previous_epoch"))
                if isinstance(job.get(UNTOLD_DAMAGED), str):  # (a renewal's untold damaged seqs, kept on)
                    mark[UNTOLD_DAMAGED] = job[UNTOLD_DAMAGED]
                epoch = job["epoch"]
            else:  # a store made here now takes this epoch (``_adopt_epoch``) and copies the WAL's records in
                epoch = max((self._read_epoch_file() or 0) + 1, _clock_epoch())
                mark = self._marker(epoch, [own])
            self._write_salvaging(mark)
            # (before the move: a kill from here on tells it at the next start; before, a kill in here lost it)
            self._keep_untold(
                self._untold_entry(
                    str(lone) + "-wal", reason, epoch, self._read_epoch_file() or 0, Counter(), src=str(lone)
                )
            )
        self._move_store(self.path, lone)
        Path(f"{lone}-shm").unlink(missing_ok=True)  # (another WAL's index: rebuilt from this WAL)
        log.error(
            "outbox %s: %s: moved aside to %s-wal; the records it holds whole are copied into epoch %d",
            self.dir,
            reason,
            lone,
            epoch,
        )

    def _read_salvaging(self) -> dict | None:
        from edge_agent.files import read_json_state

        try:  # (read bounded: a nesting past the parser's depth raised RecursionError out of every start, a named
            # pipe there held the start for ever)
            job = read_json_state(self.salvaging_path, SALVAGING_MAX_BYTES)
        except (OSError, ValueError):
            return None
        return job if isinstance(job, dict) and _a_path(job.get("src")) else None

    def _write_salvaging(self, job: dict | None) -> None:
        """Record (fsync'd, renamed into place) the copy a renewal is about to make, or remove the record."""
        self._write_mark(self.salvaging_path, job)

    @staticmethod
    def _write_mark(path: Path, mark: dict | None) -> None:
        """Write ``mark`` to ``path`` (fsync'd, renamed into place), or remove it (durably); never on the append path."""
        if mark is None:
            if os.path.lexists(path):
                path.unlink(missing_ok=True)
                _sync_dir(path.parent)
            return
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps(mark).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _sync_dir(path.parent)

    @staticmethod
    def _jobs(job: dict | None) -> list[dict]:
        """The copies a marker names, its own first, then those it carries for earlier renewals (``earlier``):
        each ``{"src", "last_seq", "acked", "from"}``, ``from`` the seq it goes on from in a store with no progress
        of its own for it (0: the whole file). At most SALVAGE_JOBS_MAX (a garbled marker does not fill memory)."""
        if job is None:
            return []
        out = []
        earlier = job.get("earlier")
        for j in [job, *(earlier if isinstance(earlier, list) else [])][:SALVAGE_JOBS_MAX]:
            if isinstance(j, dict) and _a_path(j.get("src")):
                out.append(
                    {
                        "src": j["src"],
                        **{k: j.get(k, d) for k, d in (("last_seq", 0), ("acked", []), ("from", 0))},
                        **({"owner": j["owner"]} if isinstance(j.get("owner"), list) else {}),
                    }
                )
        return out

    @staticmethod
    def _marker(epoch: int, jobs: list[dict], previous_epoch: int | None = None) -> dict:
        """The marker of the copies ``jobs`` into the store of ``epoch`` (the first is the marker's own file)."""
        mark: dict[str, Any] = {**jobs[0], "epoch": epoch}
        if previous_epoch is not None:
            mark["previous_epoch"] = previous_epoch
        mark["earlier"] = jobs[1:]
        return mark

    def _carry(self, job: dict | None, meta: dict | None = None) -> list[dict]:
        """The copies an unfinished marker names, each to go on after the last slice it copied (as this process
        knows it, else as the store's ``meta`` says), for a renewal that moves their store aside: a later renewal
        must never drop an earlier copy cut short (its file was removed and its remaining records lost)."""
        out = []
        for i, j in enumerate(self._jobs(job)):
            done = self._progress.get(j["src"])
            if done is None and meta is not None:
                done = meta.get(_progress_key(Path(j["src"])), meta.get("salvaged_to") if i == 0 else None)
            start = j["from"] if type(j["from"]) is int else 0
            out.append({**j, "from": max(start, done + 1) if type(done) is int else start})
        return out

    def _carried_at_open(self, job: dict | None, known: int | None, store: Path) -> tuple[list[dict], list]:
        """For a store found corrupt at open, what the marker left beside it hands on to the new store's copy: the
        copies to go on with, and the seqs the cloud acknowledged on that store (never copied into the new one).
        A renewal of this store killed after writing its marker but before moving it (the marker's epoch not yet
        recorded): its acknowledged seqs and its copies; a copy into this store left unfinished (its epoch): the
        rest of it, after the last slice copied (``store``'s ``meta``, read before it is moved)."""
        if job is None:
            return [], []
        jobs = self._jobs(job)
        if job.get("previous_epoch") == (known or 0) and job.get("epoch") != known:
            own = jobs[
                0
            ]  # a copy of a store removed under the agent exists already; a corrupt one was not moved
            return ([own] if os.path.lexists(own["src"]) else []) + jobs[1:], own["acked"]
        if known is not None and job.get("epoch") == known:
            meta: dict = {}
            with contextlib.suppress(sqlite3.Error):
                con = _read_only(store)
                try:
                    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
                finally:
                    con.close()
            return self._carry(job, meta), []
        return [], []

    def _renewal_cut_before_move(self, db: sqlite3.Connection) -> None:
        """At open: a renewal killed after it wrote its marker but before it moved the store aside (the marker's
        file not there, the store at the path still in the epoch it renewed from). The seqs the cloud acknowledged
        whose DELETE met the damage are deleted now (a DELETE meeting the damage again raises: the store is renewed
        at open with them left out), and the copies the marker carried for earlier renewals go on in this store."""
        job = self._read_salvaging()
        if job is None or "previous_epoch" not in job or os.path.lexists(job["src"]):
            return
        row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        if row is None or row[0] != job["previous_epoch"]:
            return
        jobs = self._jobs(job)
        if self._salvage_job_refused(jobs[0], None, db, strict=False) is None:
            seqs = [q for a, b in jobs[0]["acked"] for q in range(a, b + 1)]
            if seqs:
                db.execute("BEGIN IMMEDIATE")
                try:
                    _delete_seqs(db, seqs)
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
                log.warning(
                    "outbox %s: a renewal was cut off before it moved the store aside; the %d records the cloud "
                    "had acknowledged are removed now",
                    self.dir,
                    len(seqs),
                )
        self._write_salvaging(self._marker(row[0], jobs[1:]) if len(jobs) > 1 else None)

    def _hold_unfinished(
        self,
        src: Path,
        recorded: tuple[int, str, str] | None,
        db: sqlite3.Connection | None = None,
        epoch: int | None = None,
        owner: tuple[str, str] | None = None,
    ) -> None:
        """A moved-aside store whose copy was left unfinished, found another tenant's (the gateway moved): held whole
        in ``outbox-held/`` as the store it was copied into, with the sample files its readable records name (but
        those ``db``, this tenant's store, names too), never copied into this tenant's outbox. Its note names the
        store's own epoch (its ``meta``'s; unreadable: ``epoch``, its marker's ``previous_epoch``; else the epoch
        file's when that names the same tenant): formerly the epoch file's, by then the new tenant's."""
        if self._salvage_job_refused({"src": str(src)}, src, None) is not None:
            return
        former = self._former_tenant(src, recorded)
        if owner is not None and (former is None or not former[0]):
            former = owner  # (the owner its marker recorded: its meta unreadable, the epoch file then this tenant's)
        if former is None:
            former = (self.former_tenant or "", "")
        elif former[0] and self.former_tenant is None:
            # the gateway moved from that tenant and no start noted it yet (a kill between the move aside and the
            # note, by a version that noted it after): noted now, before that tenant's deployments are heard
            self.former_tenant = former[0]
            if self.on_move is not None:
                self.on_move(self.former_tenant)
        if any(e.get("src") == str(src) for e in self._untold):
            # a WAL found alone that was that tenant's store: its outbox_corrupt event (kept by ``_place_lone_wal``)
            # names and counts that tenant's records, never told to this one, as a corrupt former store is not.
            # Dropped before the hold: a kill between tells nothing (the next start holds the file again)
            with self._untold_lock:
                self._untold = [e for e in self._untold if e.get("src") != str(src)]
            self._keep_untold()
        self._pad_truncated(src)  # (as a salvage reads it: formerly a file cut short counted 0 records)
        reach: dict = {}
        kinds, shas, partly = _readable(src, self._start_limit(HELD_COUNT_S), reach=reach)
        if partly:  # (not a true reading: every sample file goes with it but those this tenant's store names)
            shas |= self._sample_names()
        if db is not None:  # (a sample this tenant's store names too, the same bytes: left to it)
            shas -= {
                r[0]
                for r in db.execute(
                    "SELECT DISTINCT sample_sha256 FROM records WHERE sample_sha256 IS NOT NULL"
                )
            }
        own = self._store_epoch(src)
        if own is None:
            own = (
                epoch
                if epoch is not None
                else recorded[0]
                if recorded is not None and former[0] and recorded[1] == former[0]
                else 0
            )
        kept = self._hold(former, own, kinds, sorted(shas), src=src, partly=partly, reach=reach)
        log.warning(
            "outbox %s: the unfinished copy of %s is of records made under %s: not copied into tenant %s's "
            "outbox; held whole in %s",
            self.dir,
            src,
            f"tenant {_who(former[0])}" if former[0] else "a tenant that cannot be told",
            _who((self.owner or self._carried_owner or ("?",))[0]),
            kept,
        )

    @staticmethod
    def _epoch_of(job: dict, one: dict) -> int | None:
        """The epoch of the records of ``one``, a copy the marker ``job`` names: its own file's is the store it renewed
        (``previous_epoch``); None for one it carries (not recorded)."""
        previous = job.get("previous_epoch")
        return previous if one["src"] == job["src"] and type(previous) is int else None

    def _copy_jobs(
        self,
        db: sqlite3.Connection,
        jobs: list[dict],
        deadline: float,
        between=None,
        raise_errors: bool = False,
        strict: bool = True,
    ) -> tuple[Counter, list[dict]]:
        """Copy each moved-aside file of ``jobs`` into ``db`` in turn, from its ``from`` seq, leaving out the seqs
        the cloud acknowledged on it, until ``deadline``. Returns the rows copied by kind and the copies not done
        (cut off by the deadline, a stop or a disk error), each to go on after the last slice it copied. A file
        that is not a regular one in outbox-corrupt/ is skipped (logged)."""
        got: Counter = Counter()
        left: list[dict] = []
        self._copy_failed = False
        for i, j in enumerate(jobs):
            src = Path(j["src"])
            why = self._salvage_job_refused(j, src, db, strict=strict and i == 0)
            if why:
                log.warning("outbox %s: the unfinished copy of %s is not resumed: %s", self.dir, src, why)
                continue
            if left or time.monotonic() >= deadline or self._stop.is_set():
                left.append(j)  # (one was cut off: those behind it wait their turn)
                # (at open, numbering on after its records all the same: nothing given a seq meanwhile takes one of
                # theirs; while running, the store numbers on after the one renewed, which numbered after them)
                if self._start_deadline is not None:
                    with contextlib.suppress(OSError, sqlite3.Error):  # (a disk error: the commits say it)
                        self._number_after(src, db, min(j["last_seq"], self._store_top(db)))
                continue
            extra = [q for a, b in j["acked"] for q in range(a, b + 1) if q not in self._acked_unremoved]
            with self._lock:
                self._acked_unremoved.update(dict.fromkeys(extra))
            try:
                one, finished = self._salvage(
                    src,
                    db,
                    min(j["last_seq"], self._store_top(db)),
                    between=between,
                    limit_s=max(0.0, deadline - time.monotonic()),
                    start=j["from"],
                )
            except (OSError, sqlite3.Error) as exc:  # a full disk: the copy goes on later
                if raise_errors or isinstance(exc, sqlite3.Error) and _is_corrupt(exc):
                    raise
                (log.debug if self._copy_failures else log.error)(  # (while running: once a burst)
                    "outbox %s: the copy of %s cannot go on now: %s", self.dir, src, _cause(exc)
                )
                one, finished = Counter(), False
                self._copy_failed = True
            finally:
                with self._lock:
                    for q in extra:
                        self._acked_unremoved.pop(q, None)
            got.update(one)
            self._copied_by_src.setdefault(str(src), Counter()).update(one)
            if not finished:
                done = self._progress.get(str(src))
                left.append({**j, "from": max(j["from"], done + 1) if done is not None else j["from"]})
        for j in left:
            self._later(f"the copy of {j['src']} from seq {j['from']} (goes on while the agent runs)")
        return got, left

    def _resume_salvage(self, db: sqlite3.Connection, recorded: tuple[int, str, str] | None = None) -> None:
        """At open: finish the copies a renewal began in this store's epoch and a killed or cut-off process left
        unfinished (its own, and those it carried for earlier renewals), each from the slice after the last one
        committed (what was copied is not read again: it may have been sent and acknowledged since), leaving out
        what the cloud had acknowledged. A file made under another tenant than this gateway's certificate names is
        held whole (``outbox-held/``), never copied into this tenant's outbox."""
        job = self._read_salvaging()
        if job is None:
            return
        row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        jobs = self._jobs(job)
        adopted = row is None and self.former_tenant is None and self._adopt_epoch(db, job)
        if adopted:
            row = (job["epoch"],)
        if row is None or row[0] != job.get("epoch"):
            if (
                self.former_tenant is not None
            ):  # the store it copied into was held: each file judged by whose it is, as below
                own_jobs = []
                for j in jobs:
                    src = Path(j["src"])
                    if (
                        row is None  # (a store made at this start, after the former tenant's was held)
                        and self._salvage_job_refused(j, src, None, strict=False) is None
                        and self._job_former(j, src, recorded) is None
                    ):
                        # this tenant's own (the gateway back to it after a killed start of another tenant): copied
                        # into this store; formerly held under the former tenant's name and never sent
                        own_jobs.append({**j, "from": 0})
                    else:
                        self._hold_unfinished(src, recorded, db, self._epoch_of(job, j))
                if own_jobs:  # (this store's epoch fixed before any row is copied into it)
                    last = job.get("epoch")
                    epoch = max(
                        (self._read_epoch_file() or 0) + 1,
                        _clock_epoch(),
                        last + 1 if type(last) is int else 0,
                    )
                    # its outbox_corrupt event told at the end of the copy (the marker naming the store's own epoch as
                    # the previous one), unless one is kept for it (a WAL found alone, ``_place_lone_wal``): formerly
                    # none, and the cloud was never told this tenant's outbox was renewed
                    srcs = {j["src"] for j in own_jobs}
                    previous = (
                        None
                        if any(e.get("src") in srcs for e in self._untold)
                        else self._store_epoch(Path(own_jobs[0]["src"]))
                        or self._epoch_of(job, own_jobs[0])
                        or 0
                    )
                    # with the damaged seqs the renewal of its own file had not told (kept in its marker, this
                    # tenant's as the file is): formerly left out here, counted and told by no event
                    untold = job.get(UNTOLD_DAMAGED) if job["src"] in srcs else None
                    mark = self._marker(epoch, own_jobs, previous)
                    if isinstance(untold, str):
                        mark[UNTOLD_DAMAGED] = untold
                    # (the marker first: a kill before the store has its epoch adopts it, ``_adopt_epoch``)
                    self._write_salvaging(mark)
                    self._write_epoch_file(epoch)
                    # numbered up to the copies' last seqs with it: formerly the epoch alone, and the copy of a running
                    # renewal's file (its last_seq that store's) was refused, "last_seq 300 outside 0..0", its records
                    # never sent and the outbox_corrupt event saying salvaged 0
                    _write_meta(
                        db,
                        epoch,
                        # (a seq the store can give after it only, as ``_adopt_epoch`` takes it: a hand-edited
                        # 2**63 - 1 raised OverflowError out of every start)
                        max(
                            (
                                j["last_seq"]
                                for j in own_jobs
                                if type(j.get("last_seq")) is int and 0 <= j["last_seq"] < 2**62
                            ),
                            default=0,
                        ),
                        untold if isinstance(untold, str) else None,
                        numbered=True,
                    )
                    self._copy_home = True
                    return self._resume_salvage(db, recorded)
            else:
                log.warning(
                    "outbox %s: an unfinished salvage of %s is not this store's (another epoch): not resumed",
                    self.dir,
                    job["src"],
                )
            self._write_salvaging(None)
            return
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        todo = []
        held = False  # a file held as another tenant's: this store's tenant is told nothing of it
        for i, j in enumerate(self._carry(job, meta)):
            src = Path(j["src"])
            why = self._salvage_job_refused(j, src, db, strict=i == 0)
            if why is None and self._job_former(j, src, recorded) is not None:
                self._hold_unfinished(src, recorded, db, self._epoch_of(job, j), owner=self._other_owner(j))
                held = True
                continue
            if why:
                log.warning(
                    "outbox %s: an unfinished salvage of %s is not this store's (%s): not resumed",
                    self.dir,
                    src,
                    why,
                )
                continue
            todo.append(j)
        lone = {e["src"] for e in self._untold if isinstance(e.get("src"), str)}
        before = {src: Counter(self._copied_by_src.get(src, Counter())) for src in lone}
        copied, left = self._copy_jobs(db, todo, time.monotonic() + self._start_limit(SALVAGE_S))
        got = Counter(copied)  # (a WAL found alone is told by its own event: never counted in two)
        for src in lone:
            got -= self._copied_by_src.get(src, Counter()) - before[src]
        # the whole copy into this store, as its slices recorded it (a kill after a slice or once the copy was done,
        # before the event was kept: the start that copied them never told them); formerly only ``got``
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        whole: Counter = Counter()
        for j in todo:
            if j["src"] not in lone:
                whole += _copied(meta, Path(j["src"]))
        with (
            self._untold_lock
        ):  # a WAL found alone: its event counts the whole copy of it too (``_keep_untold``)
            for e in self._untold:
                if e.get("src") in lone and any(j["src"] == e["src"] for j in todo):
                    mine = self._copied_by_src.get(e["src"], Counter())
                    e["base"] = dict(Counter(e["base"]) | (_copied(meta, Path(e["src"])) - mine))
        if not held and not os.path.lexists(job["src"]):
            # its file held already as another tenant's (a kill after the hold, before the marker was dropped):
            # formerly told to this tenant as an outbox_corrupt event, "salvaged 0", naming the former tenant's epoch
            held = any(
                note is not None and note.get("moved_from") == job["src"]
                for _name, _path, note, _by_base in self._held_notes(with_store=True)
            )
        if type(job.get("previous_epoch")) is int and not held:
            # the renewal that wrote this marker was cut off before it recorded its event (a kill after its move,
            # during its copy): told now, once (the marker left below no longer names the previous epoch); kept in
            # outbox-untold first (a kill before its commit tells it at the next start). One kept already for that
            # renewal (a kill between keeping it and dropping the marker) takes this copy's counts: one event
            same = [e for e in self._untold if e["event"].get("moved_to") == job["src"] and "src" not in e]
            if same:
                same[0]["salvaged_by_kind"] = dict(Counter(same[0]["salvaged_by_kind"]) + got)
                self._keep_untold()
            else:
                owed = self._untold_entry(
                    job["src"],
                    "a renewal of the store was cut off (the agent killed) after it moved the store aside; "
                    "completed at this start",
                    job["epoch"],
                    job["previous_epoch"],
                    whole | got,  # (``got`` alone: a copy by a release that kept no counts)
                )
                if left:  # (cut by the time limit: the rest is copied while the agent runs, not told again)
                    owed["event"]["salvaged_at_least"] = True
                self._keep_untold(owed)
        elif any("src" in e for e in self._untold):
            self._keep_untold()  # (a WAL found alone: with what was copied out of it, before the marker goes)
        elif todo and not left and not held and not adopted:
            # its outbox_corrupt event was told by an earlier start, "at least" what was copied by then: the copy done
            # now (a restart while it went on) is told as one done while running is (formerly in no event). (Not a
            # store a cut-off renewal was making, which took the marker's epoch here: nothing was told of that copy.)
            # kept in outbox-untold before the marker goes, told by ``_tell_untold`` at this start: queued in memory,
            # a kill between the marker's removal and the writer's first commit lost it for good (one kept by a start
            # killed before the marker went is replaced, not told twice)
            self._keep_salvaged(self._salvaged_event(todo, job["epoch"], whole))
        if todo and self._copy_home:
            # (formerly "the salvage ... was cut off; resumed: 300 more records copied": nothing had been copied)
            log.error(
                "outbox %s: %s, this tenant's store, was being taken over by another tenant's start that was cut off "
                "(the agent killed): %d records copied into epoch %d",
                self.dir,
                ", ".join(j["src"] for j in todo),
                copied.total(),
                job["epoch"],
            )
        elif todo:
            log.error(
                "outbox %s: the salvage of %s was cut off (the agent stopped while it ran); resumed: %d more "
                "records copied into epoch %d",
                self.dir,
                ", ".join(j["src"] for j in todo),
                copied.total(),
                job["epoch"],
            )
        self.salvaged += copied.total()
        if left:  # (the marker stays: the next start goes on after the last slice copied)
            self._write_salvaging(self._marker(job["epoch"], left))
            log.error("outbox %s: the salvage of %s goes on at the next start", self.dir, left[0]["src"])
        else:
            self._write_salvaging(None)

    def _adopt_epoch(self, db: sqlite3.Connection, job: dict) -> bool:
        """A store with no epoch and no record (made at this start) under a marker whose own file is still in
        outbox-corrupt/: the store a renewal was making when it was cut off, whatever the start could not tell
        (formerly the marker was dropped as another epoch's and a later renewal removed the file, every record of
        it neither sent nor counted). It takes the marker's epoch and numbering, as the renewal would have set them,
        unless an epoch after it was recorded already; True when it did."""
        epoch, last = job.get("epoch"), job.get("last_seq", 0)
        if type(epoch) is not int or type(last) is not int or not 0 <= last < 2**62:
            return False
        if epoch < (self._read_epoch_file() or 0) or self._max_seq(db):
            return False
        if self._salvage_job_refused(job, Path(job["src"]), None) is not None:
            return False  # (the file is gone: nothing to copy)
        _write_meta(db, epoch, last, numbered=True)  # (the store has no epoch row)
        log.error(
            "outbox %s: a new store with no epoch beside an unfinished salvage of %s: made in its epoch %d, the "
            "records are copied into it",
            self.dir,
            job["src"],
            epoch,
        )
        return True

    def _salvage_job_refused(
        self, job: dict, src: Path | None, db: sqlite3.Connection | None, strict: bool = True
    ) -> str | None:
        """Why the copy ``<data_dir>/outbox-salvaging`` names is not resumed, or None. Only from a regular file
        directly in outbox-corrupt/ (a named pipe there hung open() for ever on its first read), with seqs no
        higher than the new store's own numbering and at most SALVAGE_ACKED_MAX acknowledged seqs (the marker is
        read before the agent starts: a garbled or planted one must not hold it up or fill its memory). ``src``
        None: the seqs only; ``db`` None: the file only; not ``strict`` (a copy carried for an earlier renewal, or one
        into a store being made): seqs beyond the numbering are only not used (last_seq) or bounded in number."""
        if src is not None:
            try:
                st = src.lstat()
            except OSError:
                return "the file is gone"
            if not stat.S_ISREG(st.st_mode) or src.parent.resolve() != self.corrupt_dir.resolve():
                return "not a regular file in " + str(self.corrupt_dir)
        if db is None:
            return None
        top = self._store_top(db)
        last = job.get("last_seq", 0)
        start = job.get("from", 0)
        acked = job.get("acked", [])
        if (
            type(last) is not int
            or not 0 <= last <= (top if strict else 2**62)
            or not isinstance(acked, list)
        ):
            return f"last_seq {last!r} outside 0..{top}"
        if type(start) is not int or not 0 <= start < 2**62:
            return f"from {start!r} is not a seq"
        return _acked_refused(acked, top if strict else None)

    def _store_top(self, db: sqlite3.Connection) -> int:
        """The store's numbering: the highest seq it gave or holds."""
        top = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return max(top[0] if top and isinstance(top[0], int) else 0, self._max_seq(db))

    @staticmethod
    def _max_seq(db: sqlite3.Connection) -> int:
        return db.execute("SELECT MAX(seq) FROM records").fetchone()[0] or 0

    def _salvage(
        self,
        src: Path,
        db: sqlite3.Connection,
        last_seq: int = 0,
        between=None,
        limit_s: float = SALVAGE_S,
        skipped: dict[int, str] | None = None,
        start: int = 0,
        count_damaged: bool = True,
    ) -> tuple[Counter, bool]:
        """Copy every row of ``src`` (a moved-aside file) that can still be read into ``db``, with its seq: an ack
        or a batch in flight for the old epoch then names the same record, never another. Rows are read by
        ranges of seqs; a range that cannot be read is split down to single seqs, and what stays unreadable
        is skipped. At most ``limit_s``; ``between()`` is called every ~50 ms (the writer commits what the agent
        appended meanwhile). Records the cloud acknowledged (an ack meanwhile, or one whose DELETE met the damage) are
        left out, noted in ``skipped`` (seq -> kind). A row read back damaged (``_intact``: a kind none of the record
        kinds, a cut cell) is not copied, said in one WARNING and, with ``count_damaged``, counted as
        ``corrupt:damaged`` (a renewal while running counts it as lost by its kind instead). Returns the rows copied,
        by kind, and whether the copy read every range (False: the time limit or close() ended it with ranges left)."""
        got: Counter = Counter()
        deadline = time.monotonic() + limit_s
        pause = time.monotonic() + 0.05
        self._pad_truncated(src)
        try:
            con = _read_only(src)
        except sqlite3.Error:
            return got, True
        todo: list[tuple[int, int]] = []
        damaged: list = []  # the kinds of the rows read back with no record kind (not copied)
        # the kinds of the rows of a record kind whose other cells were damaged (not copied)
        cut: list[str] = []
        # the seqs and kinds of both: holes in the new epoch, told in an outbox_damaged event
        holes: list[tuple[int, str]] = []
        # the seqs that could not be read at all (and were not acknowledged): holes too
        unread: list[int] = []
        ranges: _SeqRanges | None = None
        counted = 0  # how many of ``ranges.unreadable`` a slice's transaction has taken into account

        def slice_unreadable() -> list[int]:
            """The seqs found unreadable since the last slice, less those the cloud acknowledged."""
            assert ranges is not None
            acked, gone = self._acked_while_salvaging or (), self._acked_unremoved
            return [q for q in ranges.unreadable[counted:] if q not in acked and q not in gone]

        def count_durably(kinds: Counter) -> None:
            """In the slice's transaction: a copy at start (or one going on while the agent runs) counts the rows it
            leaves out as damaged in ``dropped_total`` (the meta), once, with the slice that met them, by kind
            (``corrupt:<kind>``; ``corrupt:damaged`` for a kind garbled or a seq unreadable); before, only this
            process's ``dropped`` counted them (a renewal while running counts them as lost instead)."""
            if count_damaged and kinds:
                db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                    "value = value + excluded.value",
                    [(f"dropped:corrupt:{k}", n) for k, n in kinds.items() if n],
                )

        try:
            meta_last, hi = self._number_after(src, db, last_seq, con)
            lo = max(_first_int(con, "SELECT MIN(seq) FROM records") or 1, start)
            ranges = _SeqRanges(
                con, "seq, kind, priority, t, payload, sample_sha256, sample_ext, size", lo, hi, ordered=True
            )
            todo = ranges.todo  # (the ranges not read yet, as the reader leaves them)

            def go_on() -> bool:
                nonlocal pause
                if time.monotonic() >= deadline or self._stop.is_set():
                    return False
                if between is not None and time.monotonic() >= pause:
                    between()
                    pause = time.monotonic() + 0.05
                return True

            def fatal(exc: sqlite3.Error) -> bool:
                # a full disk (the -shm cannot grow) or an I/O error: the renewal is tried again
                return not _is_corrupt(exc) and self._salvage_tries < SALVAGE_TRIES

            for _a, b, rows in ranges.rows(go_on, fatal):
                if not rows and len(ranges.unreadable) == counted:
                    continue
                # the new store's write lock first, then the acknowledged seqs: an ack noted after this look
                # (its batch sent in the old epoch) deletes what this slice inserts, as its DELETE waits for the
                # COMMIT; looked at before taking the lock, such an ack deleted nothing and the slice then
                # brought its records back, sent again in the new epoch (twice at the cloud)
                db.execute("BEGIN IMMEDIATE")
                try:
                    # sent and acknowledged (meanwhile, or before by an ack that met the damage): not again
                    acked = self._acked_while_salvaging or ()
                    gone = self._acked_unremoved
                    if skipped is not None:
                        skipped.update(
                            (r[0], gone.get(r[0]) or r[1])
                            for r in rows
                            if (r[0] in acked or r[0] in gone) and isinstance(r[1], str)
                        )
                    rows = [r for r in rows if r[0] not in acked and r[0] not in gone]
                    bad = [r for r in rows if not _intact(r)]
                    unreadable = slice_unreadable()
                    count_durably(
                        Counter(_kind_read(r[1]) for r in bad) + Counter({DAMAGED: len(unreadable)})
                    )
                    if count_damaged:  # their seqs too, until their event is committed
                        self._keep_damaged(
                            db,
                            [
                                *((r[0], _kind_read(r[1])) for r in bad if isinstance(r[0], int)),
                                *((q, DAMAGED) for q in unreadable),
                            ],
                        )
                    rows = [r for r in rows if _intact(r)]
                    if (
                        rows
                    ):  # (a seq the store holds already, copied from another file, is not counted twice)
                        have = {
                            q
                            for (q,) in db.execute(
                                "SELECT seq FROM records WHERE seq BETWEEN ? AND ?", (rows[0][0], rows[-1][0])
                            )
                        }
                        rows = [r for r in rows if r[0] not in have]
                        db.executemany("INSERT OR IGNORE INTO records VALUES (?,?,?,?,?,?,?,?)", rows)
                    # how far the copy went, with what it copied: a process killed now resumes after it, and
                    # tells the count by kind of the whole copy (``_copied``); formerly only what that start copied
                    db.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                        "value = excluded.value",
                        (_progress_key(src), b),
                    )
                    db.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                        "value = value + excluded.value",
                        [(_copied_key(src, k), n) for k, n in Counter(r[1] for r in rows).items()],
                    )
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
                self._progress[str(src)] = b
                damaged += [r[1] for r in bad if _kind_read(r[1]) == DAMAGED]
                cut += [r[1] for r in bad if _kind_read(r[1]) != DAMAGED]
                holes += [(r[0], _kind_read(r[1])) for r in bad if isinstance(r[0], int)]
                unread += unreadable
                counted = len(ranges.unreadable)
                got.update(r[1] for r in rows)
                if rows:  # the counts stats() reads (a copy while the agent runs: no rebuild after it)
                    with self._lock:
                        for r in rows:
                            self._counts[(r[1], r[2])] += 1
                        self._bytes += sum(r[7] for r in rows)
                        self._oldest_stale, self._oldest_gen = True, self._oldest_gen + 1
            if (
                len(ranges.unreadable) > counted
            ):  # met after the last slice: counted, and the copy marked past them
                unreadable = slice_unreadable()
                db.execute("BEGIN IMMEDIATE")
                try:
                    count_durably(Counter({DAMAGED: len(unreadable)}))
                    if count_damaged:
                        self._keep_damaged(db, [(q, DAMAGED) for q in unreadable])
                    db.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                        "value = MAX(value, excluded.value)",
                        (_progress_key(src), ranges.unreadable[-1]),
                    )
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
                self._progress[str(src)] = max(self._progress.get(str(src), 0), ranges.unreadable[-1])
                unread += unreadable
                counted = len(ranges.unreadable)
            if todo:
                (log.debug if self._copy_round else log.warning)(
                    "outbox: salvage %s; %d seq ranges left unread",
                    "stopped by close()"
                    if self._stop.is_set()
                    else f"stopped after {time.monotonic() - deadline + limit_s:.1f} s",
                    len(todo),
                )
            counted_as = f", counted as corrupt:{DAMAGED}" if count_damaged else ""
            if damaged:
                # (a renewal while running counts the records it did not copy as lost, by the kind it kept of each)
                _damaged_said(src, damaged, "not copied" + counted_as)
            if cut:
                log.warning(
                    "outbox: %s: %d rows of a record kind read back with other cells damaged (%s): not copied%s",
                    src,
                    len(cut),
                    ", ".join(f"{k} {n}" for k, n in sorted(Counter(cut).items())),
                    ", counted as corrupt:<kind>" if count_damaged else "",
                )
            if unread:
                spans = seq_ranges(unread)
                log.warning(
                    "outbox: %s: %d seqs could not be read at all (%s): not copied%s, told as damaged",
                    src,
                    len(unread),
                    ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans[:5])
                    + (", ..." if len(spans) > 5 else ""),
                    counted_as,
                )
            if holes or unread:
                left_out = Counter(k for _q, k in holes) + Counter({DAMAGED: len(unread)})
                with self._lock:
                    if count_damaged:
                        for k, n in left_out.items():
                            self.dropped[f"corrupt:{k}"] += n
                            if (
                                self._opened
                            ):  # (at open, ``dropped_total`` is read from the meta after the copy)
                                self.dropped_total[f"corrupt:{k}"] += n
                    # their seqs, holes in the new epoch the records are copied into: told as a read's removals are
                    # (before, the cloud showed them as unknown, possibly still on their way, for good; and the seqs
                    # that could not be read at all were told to nobody), a row of a record kind by its kind (before,
                    # counted and told as damaged)
                    self._drops.setdefault("damaged", []).extend([*holes, *((q, DAMAGED) for q in unread)])
        finally:
            con.close()
        return got, not todo

    def _keep_damaged(self, db: sqlite3.Connection, rows: list[tuple[int, str]]) -> None:
        """In a copy slice's transaction: the seqs (and kinds) it left out and counted, kept in the meta
        (``UNTOLD_DAMAGED``) until the drop event that tells them is committed (``_commit``). Formerly held only in
        memory: a kill before that event's commit left them counted in ``dropped_total`` and told in no event (the
        next start resumes after the copy's mark), the cloud showing them as unknown for good."""
        if rows:
            kept = _read_untold_damaged(db)
            _write_untold_damaged(db, _merge_kind_ranges(kept + [[q, q, k] for q, k in rows]))
            self._damaged_kept = True

    def _requeue_damaged(self, db: sqlite3.Connection) -> None:
        """At open: the seqs a copy left out whose drop event was never committed (a kill, a close before its commit)
        queued again for the drop reports, once (not counted again: ``dropped_total`` has them), REQUEUE_DAMAGED_MAX
        at a time (``_next_damaged``; the rest stay in the meta). Formerly all at once, one entry a seq: a kept range
        of millions of seqs took hundreds of MB at every start."""
        kept = _read_untold_damaged(db)
        # a copy leaves out only seqs the store numbered past already: a range past its last seq (a key garbled or
        # edited by hand: [[1, 10**15, "damaged"]]) was told 100,000 seqs every DROP_EVENT_S for ever
        past = [r for r in kept if r[1] > self._seq]
        if past:
            kept = [[a, min(b, self._seq), k] for a, b, k in kept if a <= self._seq]
            log.warning(
                "outbox %s: the damaged seqs kept untold name seqs past the store's last seq %d (%s): not told",
                self.dir,
                self._seq,
                ", ".join(f"{max(a, self._seq + 1)}-{b}" for a, b, _k in past[:5])
                + (", ..." if len(past) > 5 else ""),
            )
            _write_untold_damaged(db, kept)
        self._damaged_kept = bool(kept)
        with self._lock:
            # (less what this start's copy queued already: its slices kept those too)
            self._damaged_left = _less_seqs(kept, seq_ranges(q for q, _k in self._drops.get(DAMAGED, ())))
            self._next_damaged()

    def _untold_damaged(self) -> list[list]:
        """The damaged seqs a report has not told yet, as ``UNTOLD_DAMAGED`` keeps them: those a start has not queued
        (``_damaged_left``), the piece queued for the next report and those of reports not committed yet."""
        with self._lock:
            rows = list(self._drops.get(DAMAGED, ()))
            rows += [r for _e, got in list(self._report_ids.values()) for r in got.get(DAMAGED, ())]
            rows += [r for got in list(self._report_seqs.values()) for r in got.get(DAMAGED, ())]
            left = list(self._damaged_left)
        # (a report both made and queued is in both: each seq once)
        return _merge_kind_ranges(left + [[q, q, k] for q, k in dict(rows).items()])

    def _next_damaged(self) -> None:
        """Under the lock: the next REQUEUE_DAMAGED_MAX seqs ``_requeue_damaged`` left, queued for the next drop
        report once no report of damaged seqs is on its way (queued, not yet appended, not yet committed; a failed
        commit gives its rows back to ``_drops``): one such piece in memory at a time."""
        if (
            not self._damaged_left
            or self._drops.get(DAMAGED)
            or any(DAMAGED in rows for _e, rows in list(self._report_ids.values()))
            or any(DAMAGED in rows for rows in list(self._report_seqs.values()))
        ):
            return
        self._drops[DAMAGED], self._damaged_left = _take_seqs(self._damaged_left, REQUEUE_DAMAGED_MAX)

    def _number_after(
        self, src: Path, db: sqlite3.Connection, last_seq: int, con: sqlite3.Connection | None = None
    ) -> tuple[int | None, int]:
        """``db``, the store the records of the moved-aside ``src`` are copied into, numbers on after ``src``'s last
        seq (its ``meta``'s, its highest row's, else ``last_seq``): set before any row is copied, and for a copy a time
        limit cut before it began (``_copy_jobs``). Formerly set after the copy only: a copy at start cut before it
        read the file left the new store numbering from 1, and the start's ``outbox_corrupt`` event took seq 1, an old
        record's, which the copy going on later skipped as held already. Returns ``src``'s ``meta`` last_seq and
        highest seq (read through ``con``, else a read-only connection of its own)."""
        meta_last, hi = None, last_seq
        try:
            if con is None:
                self._pad_truncated(src)
                own = _read_only(src)
                try:
                    return self._number_after(src, db, last_seq, own)
                finally:
                    own.close()
            meta_last = _first_int(con, "SELECT value FROM meta WHERE key = 'last_seq'")
            hi = _first_int(con, "SELECT MAX(seq) FROM records") or max(meta_last or 0, last_seq)
        except sqlite3.Error:
            pass  # (unreadable now: the copy reads what it can)
        top = max(meta_last or 0, last_seq, hi or 0)
        if top:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT(key) DO UPDATE SET "
                "value = MAX(value, excluded.value)",
                (top,),
            )
        return meta_last, hi

    def _sample_names(self) -> set[str]:
        """The sample files in ``samples/`` (by name, a sha256): those a held store whose records could not all be read
        takes with it (it may name any of them), rather than leaving them to ``_sweep_samples``, which removes those
        no record of this store names."""
        try:
            return {p.name for p in self.samples_dir.iterdir() if _SHA.fullmatch(p.name)}
        except OSError:
            return set()

    def _pad_truncated(self, src: Path) -> None:
        """A file cut short (a power loss while the file system grew it, a bad copy) is unreadable to SQLite
        as a whole, its schema included, although most of its pages are intact: extended with zeros (sparse)
        to the size its header states, the pages before the cut read again."""
        try:
            with open(src, "r+b") as f:
                head = f.read(100)
                if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
                    return
                page = int.from_bytes(head[16:18], "big")
                page = 65536 if page == 1 else page
                pages = int.from_bytes(head[28:32], "big")
                valid = head[24:28] == head[92:96]  # the header's page count is current
                size = os.fstat(f.fileno()).st_size
                want = page * pages
                if valid and size < want <= max(4 * size, self.s.max_bytes):
                    f.truncate(want)
                    log.warning(
                        "outbox: %s was cut short at %d bytes; extended to the %d its header states "
                        "to read what is left",
                        src,
                        size,
                        want,
                    )
        except OSError:
            return

    def _renewed(self, evt: Event, queue_it: bool = True, untold: str | None = None) -> None:
        """``evt`` (an ``outbox_corrupt`` event) said and, with ``queue_it``, queued; with ``untold`` (its id in
        ``outbox-untold``), its commit carries ``meta told:<id>`` and then takes it out of that file."""
        with self._lock:
            if queue_it and untold is not None:
                self._told_ids[id(evt)] = (evt, untold)
            self.last_renewal = {
                "t": evt.t,
                **{
                    k: evt.get(k)
                    for k in ("reason", "moved_to", "previous_epoch", "epoch", "salvaged", "lost")
                },
            }
            if queue_it:
                self._notices.append(evt)
        self.on_event(evt)

    # ---- outbox_corrupt events owed at open, kept on disk until committed -------------------------
    @staticmethod
    def _untold_entry(
        moved_to: str | None,
        reason: str,
        epoch: int | None,
        previous_epoch: int,
        salvaged: Counter,
        src: str | None = None,
        lost: Counter | None = None,
    ) -> dict:
        """An ``outbox_corrupt`` event a start owes, as ``outbox-untold`` keeps it; with ``src`` (a WAL found alone)
        its counts are what was copied out of that file by now, refreshed at each record; with ``lost`` (a renewal
        while the agent ran, ``_renew``), the records it counted as lost."""
        entry: dict[str, Any] = {
            "id": os.urandom(8).hex(),
            "event": {
                "t": time.time(),
                "moved_to": moved_to,
                "reason": reason,
                "epoch": epoch,
                "previous_epoch": previous_epoch,
            },
            "salvaged_by_kind": dict(salvaged),
        }
        if lost is not None:
            entry["lost_by_kind"] = dict(lost)
        if src is not None:
            entry["src"], entry["base"] = src, {}
        return entry

    def _read_untold(self) -> list[dict]:
        """The events ``outbox-untold`` keeps (read bounded; what does not parse counts as nothing)."""
        from edge_agent.files import read_json_state

        try:
            mark = read_json_state(self.untold_path, 1 << 16)
        except (OSError, ValueError):
            return []
        events = mark.get("events") if isinstance(mark, dict) else None
        out = []
        for e in events[:SALVAGE_JOBS_MAX] if isinstance(events, list) else []:
            if not (
                isinstance(e, dict) and isinstance(e.get("id"), str) and isinstance(e.get("event"), dict)
            ):
                continue
            kinds = e.get("salvaged_by_kind")
            try:
                counts = {str(k): int(v) for k, v in kinds.items()} if isinstance(kinds, dict) else {}
            except (TypeError, ValueError, OverflowError):
                counts = {}
            e["salvaged_by_kind"] = counts
            if "lost_by_kind" in e:
                lost = e["lost_by_kind"]
                try:
                    e["lost_by_kind"] = (
                        {str(k): int(v) for k, v in lost.items()} if isinstance(lost, dict) else {}
                    )
                except (TypeError, ValueError, OverflowError):
                    e["lost_by_kind"] = {}
            if isinstance(e.get("src"), str):
                e["base"] = dict(counts)  # (copied by the starts before this one)
            out.append(e)
        return out

    def _keep_untold(self, entry: dict | None = None) -> None:
        """Record (fsync'd, renamed into place) the events this start owes, with ``entry``, before anything that would
        tell them otherwise (a marker naming the previous epoch) is dropped: a kill before ``_tell_untold`` commits
        them leaves them to the next start. Before, a kill in ``_place_lone_wal``, or once a copy at open was done
        and before its event was committed, lost that ``outbox_corrupt`` event (the records kept)."""
        with self._untold_lock:
            if entry is not None:
                # (the tenant the start that owes it runs under, or with no certificate the one whose store it is and
                # whose owner the start carries: told only into that tenant's outbox, ``_tell_untold``)
                owner = self.owner or self._carried_owner
                entry.setdefault("tenant", owner[0] if owner is not None else None)
                self._untold.append(entry)
            for e in self._untold:
                if isinstance(e.get("src"), str):
                    e["salvaged_by_kind"] = dict(
                        Counter(e["base"]) + self._copied_by_src.get(e["src"], Counter())
                    )
            self._write_mark(self.untold_path, {"events": self._untold} if self._untold else None)

    def _lone_wal_of(self, e: dict, tenant: str) -> bool:
        """Whether the kept event ``e`` is of a WAL found alone (``src``) whose records its own ``meta`` says were made
        under ``tenant``: kept by a start of another tenant killed before it judged whose the WAL was, it names and
        counts this tenant's store (copied into it at this start). Formerly never told: the gateway back to acme after
        beta's killed start had acme's 300 records again, and no ``outbox_corrupt`` event said its store was renewed."""
        if not isinstance(e.get("src"), str):
            return False
        readable, found = self._store_owner(Path(e["src"]))
        return readable and found is not None and found[0] == tenant

    def _tell_untold(self, db: sqlite3.Connection) -> list[Event]:
        """At open, before the writer starts: the ``outbox_corrupt`` events this start owes committed into the store,
        each with a ``meta`` key ``told:<id>`` in the same transaction (a kill before ``outbox-untold`` is removed
        never tells one twice), then the file and those keys removed. Returns the events committed."""
        if not self._untold:
            return []
        self._keep_untold()  # (a WAL found alone: with what was copied out of it by now)
        meta = {k for (k,) in db.execute("SELECT key FROM meta WHERE key LIKE 'told:%'")}
        told, rows = [], []
        for e in self._untold:
            if "told:" + e["id"] in meta:
                continue
            # (a held store the bound removed; a copy a later start finished: ``_resume_salvage``)
            budget = e.get("kind") in (EventKind.OUTBOX_BUDGET.value, EventKind.OUTBOX_SALVAGED.value)
            if (
                self.owner is not None
                and e.get("tenant") not in (None, self.owner[0])
                and not self._lone_wal_of(e, self.owner[0])
            ):
                # kept by a start under another tenant, killed before it told it (the gateway moved since): it names
                # and counts that tenant's store, never put into this tenant's outbox
                log.warning(
                    "outbox %s: an %s event of tenant %s's store (%s) was never told (the agent killed) "
                    "and is not told to tenant %s",
                    self.dir,
                    e.get("kind") if budget else "outbox_corrupt",
                    _who(str(e["tenant"])),
                    e.get("held") or e["event"].get("moved_to"),
                    _who(self.owner[0]),
                )
                continue
            ev, got = e["event"], Counter(e["salvaged_by_kind"])
            epoch = ev.get("epoch")
            lost = (
                {"lost": sum(e["lost_by_kind"].values()), "lost_by_kind": e["lost_by_kind"]}
                if "lost_by_kind" in e
                else {}
            )
            if budget:
                try:
                    evt = Event(
                        EventKind.OUTBOX_SALVAGED
                        if e["kind"] == EventKind.OUTBOX_SALVAGED.value
                        else EventKind.OUTBOX_BUDGET,
                        t=float(ev.get("t") or time.time()),
                        **{k: v for k, v in ev.items() if k not in ("t", "kind")},
                    )
                except (TypeError, ValueError):  # (what does not parse counts as nothing)
                    continue
            else:
                evt = Event(
                    EventKind.OUTBOX_CORRUPT,
                    t=float(ev.get("t") or time.time()),
                    moved_to=str(ev["moved_to"]) if ev.get("moved_to") is not None else None,
                    reason=str(ev.get("reason")),
                    epoch=epoch if type(epoch) is int else self.epoch,
                    previous_epoch=ev.get("previous_epoch") if type(ev.get("previous_epoch")) is int else 0,
                    salvaged=got.total(),
                    salvaged_by_kind=dict(got),
                    **lost,
                    # (a copy at start its time limit cut: the records copied after it are not told; formerly the
                    # partial count read as the whole, "salvaged 0" for 3,000 records that arrived while running)
                    **({"salvaged_at_least": True} if ev.get("salvaged_at_least") is True else {}),
                )
            body = json_codec.dumps(evt.to_json_dict(), separators=(",", ":")).encode()
            self._seq += 1
            rows.append(
                (self._seq, "event", PRIORITY["event"], time.time(), body, None, "", len(body), e["id"])
            )
            told.append(evt)
        if rows:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO records (seq, kind, priority, t, payload, sample_sha256, sample_ext, size) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [r[:8] for r in rows],
            )
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, 1)", [("told:" + r[8],) for r in rows]
            )
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT(key) DO UPDATE SET "
                "value = MAX(value, excluded.value)",
                (self._seq,),
            )
            db.execute("COMMIT")
            self.appended += len(rows)
        self._untold = []
        self._write_mark(self.untold_path, None)
        db.execute("DELETE FROM meta WHERE key LIKE 'told:%'")
        return told

    def _forget_told(self, db: sqlite3.Connection, ids: set[str]) -> None:
        """On the writer, once a commit carried the events kept in ``outbox-untold`` as ``ids`` (with their ``meta
        told:<id>`` keys): out of that file, then the keys removed (a kill in between: the next start sees the keys
        and tells none of them again). A disk error leaves both: the next start tells nothing twice."""
        try:
            with self._untold_lock:
                self._untold = [e for e in self._untold if e["id"] not in ids]
                self._keep_untold()
        except OSError as exc:
            log.warning("outbox %s: %s could not be updated: %s", self.dir, self.untold_path, exc)
            return
        with contextlib.suppress(sqlite3.Error):
            db.executemany("DELETE FROM meta WHERE key = ?", [("told:" + u,) for u in ids])

    def _commit_queued(self) -> None:
        """During a long salvage on the writer: commit what the agent appended meanwhile, so it never waits."""
        batch: list = []
        while len(batch) < self.s.commit_batch and not self._stop.is_set():
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:  # close(): the write loop takes it once the salvage is over
                with contextlib.suppress(queue.Full):
                    self._q.put_nowait(None)
                break
            if item not in ("flush", "tick"):
                batch.append(item)
        if batch:
            self._commit(batch, retried=True)  # (a store turning corrupt now is renewed after this one)

    def _want_renewal(self, reason: str) -> None:
        """A reader met a corrupt store: the writer renews it at its next round."""
        if self._renew_reason is None:
            self._renew_reason = reason

    def _close_gate(self) -> bool:
        with self._gate:
            self._gate_closed = True
            if self._gate.wait_for(lambda: self._readers == 0, READER_WAIT_S):
                return True
            self._gate_closed = False
            self._gate.notify_all()
            return False

    def _open_gate(self) -> None:
        with self._gate:
            self._gate_closed = False
            self._gate.notify_all()

    def _check_store(self) -> None:
        """On the writer, at each round: renew a store found corrupt, or one whose file was removed, replaced or
        cut short under the running agent (writing on into a removed file loses every record at the next start,
        and nothing could read them meanwhile)."""
        if time.monotonic() < self._renew_next:
            return
        if self._renew_reason is not None:
            self._renew(self._renew_reason, corrupt=True)
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            now = None
        except OSError:  # an I/O error: the commits say what is wrong
            return
        else:
            now = (st.st_dev, st.st_ino)
        if now != self._ino:
            self._renew("the outbox file was removed or replaced while the agent ran", corrupt=False)
        elif self._cut_short() is not None and (cut := self._cut_short()) is not None:
            # looked at twice: a checkpoint of another connection (an ack's) may give pages back between a
            # reading of the header and of the size; a file cut by a tool stays cut
            self._renew(cut, corrupt=False, what="cut")

    def _cut_short(self) -> str | None:
        """Why the file the writer has open was cut short in place (``truncate -s 0``, ``> outbox.db``, a tool
        emptying it: the same inode, so it looks neither removed nor replaced), or None. The writer's connection
        went on through the pages it holds in memory and its WAL, counting every record as kept; at the next
        start the file was corrupt and most records were gone. SQLite's file only shrinks when a checkpoint gives
        freed pages back, to exactly the size its header then states (it grows meanwhile, never shrinks): a file
        that lost its header, or shrank to another size, was cut."""
        if self._fd is None:
            return None
        try:  # never an open() and close() here: closing any fd of the file drops SQLite's locks on it
            head = os.pread(self._fd, 100, 0)
            size = os.fstat(self._fd).st_size
        except OSError:
            return None
        if len(head) < 100 or head[:16] != b"SQLite format 3\0":
            if self._size_seen is None:
                return None  # a store whose pages are all in the WAL yet
            return f"the outbox file was cut short while the agent ran ({size} bytes, without its header)"
        was = self._size_seen
        page = int.from_bytes(head[16:18], "big")
        pages = int.from_bytes(head[28:32], "big")
        # the header's page count is valid while bytes 92-95 equal the change counter at 24-27 (the file format)
        given_back = head[24:28] == head[92:96] and size == pages * (65536 if page == 1 else page)
        if was is not None and size < was and not given_back:
            return f"the outbox file was cut short while the agent ran ({size} bytes, {was} before)"
        self._size_seen = size
        return None

    def _renew(self, reason: str, corrupt: bool, what: str = "removed") -> bool:
        """On the writer: move the bad store aside and start a new one in a new epoch, seqs numbering on, with
        every record of the old store that can still be read (same seq), copied in behind what the agent appends
        meanwhile (committed between slices of the copy). False (and tried again later) when the disk cannot
        take a new store."""
        old = self._db
        previous_epoch = self.epoch
        with self._gate:  # before the gate closes: an ack waiting there is kept out of the salvage
            self._acked_while_salvaging = set()
        if not self._close_gate():
            self._acked_while_salvaging = None
            self._renew_next = time.monotonic() + RENEW_RETRY_S
            return False
        before: Counter = (
            Counter()
        )  # committed records by kind: what the old store should hold (no ack runs now)
        with self._lock:
            for (kind, _prio), n in self._counts.items():
                # (a kind the damage garbled in a store still sound at start, as read: damaged, as at a start's copy;
                # formerly a blob stopped the renewal, a TypeError writing its event, and text went out as a kind)
                before[_kind_read(kind)] += max(n, 0)
            # acknowledged by the cloud, but their DELETE met the damage: at the cloud, neither salvaged nor lost
            acked_gone = dict(self._acked_unremoved)
        db: sqlite3.Connection | None = None
        try:
            try:
                copy = None
                if not corrupt and old is not None:
                    # the removed file is still open here: copy it out whole before this connection closes
                    self.corrupt_dir.mkdir(parents=True, exist_ok=True)
                    copy = self._aside_name(what)
                    target = sqlite3.connect(copy)
                    try:
                        old.backup(target)
                    finally:
                        target.close()
                if old is not None:
                    with contextlib.suppress(sqlite3.Error):
                        old.close()
                    self._db = None
                self._release_file()  # no connection of this process is on the file now (the gate is closed)
                # what the records are salvaged from: the copy, or the file moved aside by an attempt that
                # failed afterwards (a full disk), kept through the next attempts until salvaged
                keep = copy or self._salvage_from
                self.corrupt_dir.mkdir(parents=True, exist_ok=True)
                to = self._aside_name("corrupt")
                aside = keep or (to if self.path.exists() else None)
                epoch = max(previous_epoch + 1, (self._read_epoch_file() or 0) + 1, _clock_epoch())
                # a copy into this store left unfinished (the start's, cut off by its time limit or a disk error):
                # carried on, after the last slice it copied, never dropped with the store it was copied into
                existing = self._read_salvaging()
                if existing is not None and aside is not None and existing["src"] == str(aside):
                    carried = self._jobs(existing)[
                        1:
                    ]  # (this renewal tried before: the same file, its carried)
                elif existing is not None and existing.get("epoch") == previous_epoch:
                    carried = self._carry(existing)
                else:
                    carried = []
                own = [{"src": str(aside), "last_seq": self._seq, "acked": seq_ranges(acked_gone), "from": 0}]
                jobs = (own if aside is not None else []) + carried
                # the damaged seqs not told yet (a kept run told in pieces): the old store's key, which the copy does
                # not read for them, and memory hold them; kept in the marker for a kill before the new store has
                # its epoch (``_renewal_cut_after_move``), then in the new store's key with its epoch
                untold = self._untold_damaged()
                if jobs:
                    # before the file is moved: a kill from here on finds at the next start which file holds the
                    # records (still at the path: nothing happened; moved: copied into a store of this epoch)
                    mark = self._marker(epoch, jobs, previous_epoch)
                    if untold:
                        mark[UNTOLD_DAMAGED] = _untold_damaged_value(untold)
                    self._write_salvaging(mark)
                moved = self._move_aside(
                    keep=keep, to=to
                )  # a corrupt file, or whatever now stands at its path
                if keep is None:
                    aside = moved
                else:
                    aside = self.moved_aside = keep
                self._salvage_from = aside
                self.dir.mkdir(parents=True, exist_ok=True)
                self.samples_dir.mkdir(exist_ok=True)
                db = self._connect()
                db.executescript(SCHEMA)
                self._write_epoch_file(epoch)
                # the epoch, its numbering and the damaged seqs not told yet: one statement, one transaction (a kill
                # between the epoch and ``last_seq``, formerly two commits, left a store the next start took as made
                # and numbered 0: it refused the marker's copy, "last_seq N outside 0..0", every unacknowledged record
                # left in outbox-corrupt/ and told as "salvaged 0"; the untold seqs were in memory only)
                _write_meta(db, epoch, self._seq, untold)
                self._damaged_kept = self._damaged_kept or bool(untold)
                if (
                    self.owner or self._carried_owner
                ) is not None:  # whose records the renewed store holds (``_own`` at a later start)
                    _set_owner(db, self.owner or self._carried_owner)  # type: ignore[arg-type]
            except (OSError, sqlite3.Error) as exc:
                self._salvage_tries += 1
                if db is not None:  # a half-made store: moved aside by the next attempt
                    with contextlib.suppress(sqlite3.Error):
                        db.close()
                self._acked_while_salvaging = None
                self._renew_error = f"a new store cannot be started: {_cause(exc)}"
                self._renew_next = time.monotonic() + RENEW_RETRY_S
                if not self._renew_failing:
                    self._renew_failing = True
                    log.error(
                        "outbox %s: the store is unusable (%s) and a new one cannot be started: %s; records are "
                        "counted as write_failed until it can (tried every %g s)",
                        self.dir,
                        reason,
                        _cause(exc),
                        RENEW_RETRY_S,
                    )
                return False
            # the new store takes appends and readers from here on; the old one's records are copied in meanwhile
            self._db = db
            self._hold_file()
            self._ino, self._size_seen = self._identity(), None
            self.epoch = epoch
            self._renew_reason, self._renew_failing, self._renew_next = None, False, 0.0
            self._renew_error = None
            self._open_gate()
            # the new store is in place: a disk error now only ends the salvage
            self._salvage_tries = SALVAGE_TRIES
            skipped: dict[int, str] = {}  # seq -> kind of the rows left out as acknowledged
            cut = False  # a stop (close(), SIGTERM) ended the copy: the next start goes on with it
            deadline = time.monotonic() + RUNNING_SALVAGE_S
            failed: BaseException | None = None  # the new store failed under the copy (a disk error, corrupt)
            try:
                got, finished = (
                    self._salvage(
                        aside,
                        db,
                        self._seq,
                        between=self._commit_queued,
                        limit_s=RUNNING_SALVAGE_S,
                        skipped=skipped,
                        count_damaged=False,
                    )
                    if aside is not None
                    else (Counter(), True)
                )
                cut = not finished and self._stop.is_set()
            except (OSError, sqlite3.Error) as exc:
                log.error("outbox %s: salvage from %s stopped: %s", self.dir, aside, _cause(exc))
                got, failed = Counter(), exc
            # then the rest of the earlier copies it carries (not in this store's counts: never counted as lost;
            # cut off, they go on while running or at the next start)
            earlier: Counter = Counter()
            left = carried
            if not cut and failed is None and carried:
                try:
                    earlier, left = self._copy_jobs(db, carried, deadline, between=self._commit_queued)
                except (OSError, sqlite3.Error) as exc:
                    log.error("outbox %s: the earlier copies stopped: %s", self.dir, _cause(exc))
            if (cut or failed is not None) and aside is not None:
                # its own copy goes on later too (the old file is readable; the new store failed, or a stop): never
                # counted as lost, and the acks noted meanwhile stay out of it (formerly a failing new store counted
                # every record not copied yet as lost, and the next renewal removed the file)
                done = self._progress.get(str(aside))
                start = done + 1 if done is not None else 0
                noted = {q for q in (*acked_gone, *(self._acked_while_salvaging or ())) if q >= start}
                left = [{**own[0], "from": start, "acked": seq_ranges(noted)}, *left]
            self._acked_while_salvaging = None
            self._salvage_from, self._salvage_tries = None, 0
            # acknowledged records are at the cloud, read in the old store or not: none of them is lost
            at_cloud = Counter(_kind_read(k) for k in skipped.values())
            at_cloud.update(
                _kind_read(k) for q, k in acked_gone.items() if k is not None and q not in skipped
            )
            # cut short by a stop, or the new store failed under it: nothing is lost yet (the copy goes on later)
            lost = Counter() if cut or failed is not None else before - got - at_cloud
            got += earlier
            # its event kept in outbox-untold before the marker stops naming the previous epoch: a kill from here on
            # tells it at the next start (before, a kill between this marker and the event's commit lost it)
            kept = self._untold_entry(
                str(aside) if aside is not None else None, reason, epoch, previous_epoch, got, lost=lost
            )
            with contextlib.suppress(
                OSError
            ):  # (left behind: the next open() finds no copy of its epoch to do)
                self._keep_untold(kept)
                self._write_salvaging(self._marker(epoch, left) if left else None)
            self._copy_due, self._copy_next, self._copy_failures = bool(left) and not cut, 0.0, 0
            if isinstance(failed, sqlite3.DatabaseError) and _is_corrupt(failed):
                self._want_renewal(_cause(failed))  # (the new store in its turn: its copies are carried on)
            with self._lock:  # accounted for by this renewal (a later one must not count them again)
                for q in (*acked_gone, *skipped):
                    self._acked_unremoved.pop(q, None)
            self._rebuild_counts(db)
            # files of records still in hand-over are not referenced yet: counted, not removed
            self._sweep_samples(db, remove=False)
            # since the new epoch began: what the copies into it counted as damaged (its meta) and no more
            since_epoch: Counter = Counter()
            with contextlib.suppress(sqlite3.Error):
                since_epoch.update(
                    {
                        k[len("dropped:") :]: v
                        for k, v in db.execute("SELECT key, value FROM meta WHERE key LIKE 'dropped:%'")
                    }
                )
            with self._lock:
                self.dropped_total = since_epoch
                self.dropped.update({f"corrupt:{k}": n for k, n in lost.items()})
        finally:
            self._open_gate()
        log.error(
            "outbox %s: %s (%s): moved aside to %s; the outbox goes on in epoch %d with the %d records still "
            "readable; %d records were lost%s",
            self.dir,
            "the store turned corrupt"
            if corrupt
            else "the store was cut short"
            if what == "cut"
            else "the store was removed",
            reason,
            aside,
            epoch,
            got.total(),
            lost.total(),
            " (the agent stopped during the copy: the rest is copied at the next start)" if cut else "",
        )
        self._renewed(
            Event(
                EventKind.OUTBOX_CORRUPT,
                t=kept["event"]["t"],
                moved_to=str(aside) if aside is not None else None,
                reason=reason,
                epoch=epoch,
                previous_epoch=previous_epoch,
                salvaged=got.total(),
                salvaged_by_kind=dict(got),
                lost=lost.total(),
                lost_by_kind=dict(lost),
            ),
            untold=kept["id"],
        )
        self.salvaged += got.total()
        self.renewals += 1  # last: whoever sees it sees the event and last_renewal too
        return True

    def _rebuild_counts(self, db) -> None:
        """The in-memory counts from the table (once at open: one pass over the priority index)."""
        rows = db.execute(
            "SELECT kind, priority, COUNT(*), COALESCE(SUM(size), 0) FROM records NOT INDEXED GROUP BY kind, priority"
        ).fetchall()
        oldest = db.execute("SELECT MIN(seq) FROM records").fetchone()[0]
        with self._lock:
            self._counts = Counter({(k, p): n for k, p, n, _ in rows})
            self._bytes = sum(r[3] for r in rows) + self._pending_bytes
            self._oldest, self._oldest_stale = oldest, False
            self._oldest_gen += 1

    def _count_deleted(self, rows: list) -> None:
        """Take rows a DELETE ... RETURNING removed (``(seq, kind, priority, ...)``) off the counts; under
        ``self._lock``."""
        for r in rows:
            self._counts[(r[1], r[2])] -= 1
        if rows:
            self._oldest_gen += 1
            if self._oldest is None or any(r[0] == self._oldest for r in rows):
                self._oldest_stale = True  # read again by stats(); meanwhile a lower bound

    def _sweep_samples(self, db, remove: bool = True) -> None:
        """Remove sample files no row references (written just before a kill -9) and count the rest (with
        ``remove`` false, while running: count them all; a record in hand-over has its file before its row)."""
        referenced = {
            r[0]
            for r in db.execute("SELECT DISTINCT sample_sha256 FROM records WHERE sample_sha256 IS NOT NULL")
        }
        total, removed = 0, 0
        for p in self.samples_dir.iterdir():
            if p.name in referenced or not remove:
                with contextlib.suppress(FileNotFoundError):
                    total += p.stat().st_size
            else:
                p.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.warning(
                "outbox: removed %d sample files that no record referenced (written before a crash)", removed
            )
        self._sample_bytes = total

    def disk_bytes(self) -> int:
        """What the outbox takes on disk now: database, WAL, shared memory and sample files."""
        total = self._sample_bytes
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(str(self.path) + suffix).st_size
            except FileNotFoundError:
                pass
        return total

    def _writer_alive(self) -> bool:
        return self._writer is not None and self._writer.is_alive()

    def _mark_thread(self) -> None:
        self._executor_thread = threading.current_thread()

    def close(self) -> None:
        if self._executor is not None:  # what was handed to the async face is appended first
            self._executor.shutdown(wait=True)
            self._executor = None
        self.flush()
        self._stop.set()
        with self._committed:  # a ``wait_committed`` under way returns now (no commit may come to wake it)
            self._committed.notify_all()
        with contextlib.suppress(queue.Full):  # a writer that cannot take it is not waited for below either
            self._q.put(None, timeout=CLOSE_WAIT_S if self._writer_alive() else 0)
        if self._writer:
            self._writer.join(CLOSE_WAIT_S)
            if self._writer.is_alive():
                log.error("outbox: the writer did not stop within %.0f s; closing without it", CLOSE_WAIT_S)
        if self._db:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        self._release_file()
        self._opened = False
        self._report_drops(
            force=True
        )  # told locally; the cloud has the counts (heartbeat) and earlier events

    # ---- appending -------------------------------------------------------------------------
    def append(
        self,
        kind: str,
        payload: dict | bytes,
        *,
        priority: int | None = None,
        sample: bytes | None = None,
        sample_ext: str = "",
    ) -> int:
        if not self._opened:
            raise OutboxError("outbox is not open")
        if kind not in PRIORITY:
            # refused before it takes a seq: stored, a read would remove it as damaged (no record of any kind), a gap
            # at the cloud; before, it was taken and never sent
            raise ValueError(
                f"outbox: {kind!r} is no record kind (one of {', '.join(PRIORITY)}); nothing appended"
            )
        body = (
            payload
            if isinstance(payload, bytes)
            else json_codec.dumps(payload, separators=(",", ":")).encode()
        )
        sha = None
        size = len(body)
        if size + (len(sample) if sample is not None else 0) > self.max_record_bytes:
            # it could never be kept within the budget (or would push everything else out): refused before
            # any byte is written, and without waiting for room that its own size would never leave
            return self._refuse_oversize(kind, size + (len(sample) if sample is not None else 0))
        if sample is not None:
            sha = hashlib.sha256(sample).hexdigest()
            p = self.samples_dir / sha
            if not p.exists():
                tmp = p.with_suffix(".tmp")
                try:
                    tmp.write_bytes(sample)
                    os.replace(tmp, p)
                except OSError as exc:  # a full or read-only disk: the record is lost, counted, reported
                    with contextlib.suppress(OSError):
                        tmp.unlink(missing_ok=True)
                    return self._lose(kind, exc)
                with self._lock:
                    self._sample_bytes += len(sample)
            with self._lock:
                self._pending_sample_bytes += len(sample)
            size += len(sample)
        with self._lock:
            self._pending_bytes += size
        prio = PRIORITY[kind] if priority is None else priority
        if self._notices:
            self._drain_notices()
        # back-pressure in bytes too: bounds what is on disk (sample files) or in memory before its commit;
        # it waits for the records handed over before this one (its own bytes are committed only after it)
        if self._pending_bytes - size > self.s.max_bytes // 16:
            with self._committed:
                self._committed.wait_for(
                    lambda: self._pending_bytes - size <= self.s.max_bytes // 16 or self._stop.is_set(), 10
                )
        with self._append_lock:  # seq order == queue order, so the writer commits in seq order
            seq = self._seq + 1
            try:  # may wait (back-pressure), but never for ever: a caller's pipeline must keep running
                self._q.put(
                    (seq, kind, prio, time.time(), body, sha, sample_ext, size),
                    timeout=APPEND_WAIT_S if self._writer_alive() else 0,
                )
            except queue.Full:
                with self._lock:
                    self._pending_bytes -= size
                    if sha:
                        self._pending_sample_bytes -= size - len(body)
                return self._lose(kind, None, seq=seq)
            self._seq = seq  # published after the put: the writer never counts a row not yet queued
        with self._lock:
            self._bytes += size
            self.appended += 1
        if self.s.fsync is FsyncPolicy.ALWAYS:
            self._wait_committed(seq)
        return seq

    @property
    def max_record_bytes(self) -> int:
        """The largest record (body and sample bytes) the outbox takes: 1/16 of its budget, the most it holds
        in hand-over before a commit."""
        return self.s.max_bytes // 16

    def _refuse_oversize(self, kind: str, size: int) -> int:
        """A record larger than ``max_record_bytes``: it takes its seq (the cloud sees the gap, with cause
        ``budget``) and is counted as ``budget:<kind>``, a warning logged at most once a minute."""
        with self._append_lock:
            seq = self._seq = self._seq + 1
        key = f"budget:{kind}"
        with self._lock:
            self.dropped[key] += 1
            self.dropped_total[key] += 1
            self._unpersisted[key] += 1  # durable with the next commit
            self._drops.setdefault("budget", []).append((seq, kind))
            self._note_lost([seq])
            now = time.monotonic()
            tell = now - self._oversize_told >= 60
            if tell:
                self._oversize_told = now
        if tell:
            log.warning(
                "outbox %s: a %s record of %d bytes is larger than %d bytes (1/16 of outbox.max_bytes %d) and "
                "was dropped (counted as budget:%s); raise outbox.max_bytes or send smaller records",
                self.dir,
                kind,
                size,
                self.max_record_bytes,
                self.s.max_bytes,
                kind,
            )
        return seq

    def _lose(self, kind: str, exc: BaseException | None, seq: int | None = None) -> int:
        """A record that never reached the writer (its sample file could not be written, or the writer did
        not take it in time): it takes its seq, so the cloud sees the gap, and is counted as write_failed."""
        with self._append_lock if seq is None else _NO_LOCK:
            if seq is None:
                seq = self._seq + 1
            self._seq = seq
        reason = _cause(exc) if exc is not None else f"the writer took nothing for {APPEND_WAIT_S:.0f} s"
        self._count_failed([(seq, kind)], reason)
        return seq

    # ---- the async face: the event loop never blocks on the outbox -------------------------
    async def append_async(self, kind: str, payload: dict | bytes, **kw) -> int:
        """``append`` on the outbox's own thread; returns the record's seq (with ``fsync: always``,
        once it is committed). Raises ``OutboxError`` when the outbox is not open."""
        if self._executor is None:
            raise OutboxError("outbox is not open")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(self.append, kind, payload, **kw)
        )

    def append_soon(self, kind: str, payload: dict | bytes, **kw) -> Future | None:
        """Hand an append to the outbox's thread without waiting (for callers that cannot await, e.g.
        event callbacks); a failure is logged. None when the outbox is not open, or when ``soon_max``
        appends already wait for that thread and this one is no alarm or event: it is dropped then,
        counted as ``backlog:<kind>`` once an append is done (a forward of a flooding source's readings, ``outbox: true``, handed
        over faster than the disk commits them grew a queue without bound; an append waits for room)."""
        ex = self._executor
        if ex is None:
            return None
        if self._soon_waiting >= self.soon_max and kind not in ("alarm", "event"):
            # never self._lock here, on the event loop: the writer holds it through a DELETE (a budget drop)
            with self._soon_lock:
                self._backlog[kind] = self._backlog.get(kind, 0) + 1
                first, self._backlog_told = not self._backlog_told, True
            if first:
                log.warning(
                    "outbox %s: %d records wait for the outbox's thread (records handed over faster than the "
                    "disk commits them: a forward with outbox: true of a source that floods the agent?); "
                    "further %s records are dropped until it catches up (counted as backlog:<kind>)",
                    self.dir,
                    self._soon_waiting,
                    kind,
                )
            return None
        try:
            fut = ex.submit(self.append, kind, payload, **kw)
        except RuntimeError:  # closing
            return None
        with self._soon_lock:
            self._soon_waiting += 1
        fut.add_done_callback(self._soon_done)
        return fut

    def _soon_done(self, fut: Future) -> None:
        """An append_soon's append is done (on the outbox's thread): the drops of a backlog are counted here."""
        with self._soon_lock:
            self._soon_waiting -= 1
            backlog, self._backlog = self._backlog, {}
            if self._soon_waiting == 0:
                self._backlog_told = False  # caught up: a new spell is said again
        if backlog:
            by_kind = Counter({f"backlog:{kind}": n for kind, n in backlog.items()})
            with self._lock:
                self.dropped.update(by_kind)
                self.dropped_total.update(by_kind)
                self._unpersisted.update(by_kind)  # durable with the next commit
        _log_failure(fut)

    async def stats_async(self) -> dict:
        """``stats()`` (a SQLite query) off the event loop."""
        return await asyncio.to_thread(self.stats)

    def _drain_notices(self) -> None:
        """Queue the events the outbox raised itself. From the writer thread nothing may wait (it would wait on
        itself): there it only queues when no append holds the order lock and the queue has room."""
        writer = threading.current_thread() is self._writer
        if writer and not self._append_lock.acquire(blocking=False):
            return
        try:
            with self._lock:
                notices, self._notices = self._notices, []
            for i, evt in enumerate(notices):
                body = json_codec.dumps(evt.to_json_dict(), separators=(",", ":")).encode()
                with self._append_lock if not writer else _NO_LOCK:
                    seq = self._seq + 1
                    item = (seq, "event", PRIORITY["event"], time.time(), body, None, "", len(body))
                    # (noted before the writer can take it: the commit that carries it marks it told)
                    kept = self._told_ids.get(id(evt))
                    if kept is not None and kept[0] is evt:
                        self._told_seqs[seq] = kept[1]
                    report = self._report_ids.get(
                        id(evt)
                    )  # (a drop report: its rows, should its commit fail)
                    if report is not None and report[0] is evt:
                        self._report_seqs[seq] = report[1]
                    try:
                        if writer:
                            self._q.put_nowait(item)
                        else:
                            self._q.put(item, timeout=APPEND_WAIT_S if self._writer_alive() else 0)
                    except queue.Full:
                        self._told_seqs.pop(seq, None)
                        self._report_seqs.pop(seq, None)
                        with self._lock:  # the next round (append, flush) tries again
                            self._notices[:0] = notices[i:]
                        return
                    if kept is not None and kept[0] is evt:
                        self._told_ids.pop(id(evt), None)
                    if report is not None and report[0] is evt:
                        self._report_ids.pop(id(evt), None)
                    self._seq = seq
                with self._lock:
                    self._bytes += len(body)
                    self._pending_bytes += len(body)
                    self.appended += 1
        finally:
            if writer:
                self._append_lock.release()

    def flush(self, timeout_s: float = 10.0) -> None:
        ex = self._executor
        if ex is not None and threading.current_thread() not in (self._executor_thread, self._writer):
            with contextlib.suppress(RuntimeError):  # appends handed to the async face come first
                ex.submit(lambda: None).result(timeout_s)
        if threading.current_thread() is not self._writer:
            self._report_drops(force=True)
            if self._notices:
                self._drain_notices()
        try:
            self._q.put("flush", timeout=timeout_s if self._writer_alive() else 0)
        except queue.Full:
            return
        if self._writer_alive():  # (a writer that ended commits nothing: not waited for, formerly timeout_s)
            self._wait_committed(self._seq, timeout_s)

    def wait_committed(self, seq: int, timeout_s: float) -> bool:
        """Wait, without asking the writer for a commit (``flush`` forces one, with its fsync), until the records up
        to ``seq`` are committed by the writer's own round (every ``commit_interval_ms``), at most ``timeout_s``.
        True if they are and the record ``seq`` is kept; False at the bound, on an outbox closing, or when the record
        ``seq`` was dropped (``lost``: its commit failed, a full disk, counted ``write_failed``; the wait ends at
        that commit all the same). For a reader that would rather wait a moment than read just before the commit of
        what it was told of."""
        with self._committed:
            # (an outbox closing: not waited for)
            reached = (
                self._committed.wait_for(
                    lambda: self._committed_seq >= seq or self._stop.is_set(), max(0.0, timeout_s)
                )
                and self._committed_seq >= seq
            )
        return reached and not self.lost(seq)

    @property
    def write_failing(self) -> bool:
        """True from a commit that failed (a full disk, an I/O error) until one goes through again."""
        return self._write_error is not None

    @property
    def committed_seq(self) -> int:
        """The highest seq the writer's commits have reached in this epoch (the records up to it that the outbox kept
        are on disk; after ``open()``, ``last_seq``)."""
        return self._committed_seq

    def _wait_committed(self, seq: int, timeout_s: float = 10.0) -> None:
        with self._committed:
            self._committed.wait_for(lambda: self._committed_seq >= seq or self._stop.is_set(), timeout_s)

    def _write_loop(self) -> None:
        interval = self.s.commit_interval_ms / 1000
        always = self.s.fsync is FsyncPolicy.ALWAYS
        while True:
            batch: list[Any] = []
            flush, nbytes = False, 0
            try:
                item = self._q.get(timeout=interval)
            except queue.Empty:
                item = "tick"
            deadline = time.monotonic() + (0 if always else interval)
            while True:
                if item is None:
                    self._guarded(self._commit, batch)
                    return
                if item == "flush":
                    flush = True
                elif item != "tick":
                    batch.append(item)
                    nbytes += item[7]
                if always or flush or len(batch) >= self.s.commit_batch or nbytes >= self._wal_bytes:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._q.get(timeout=remaining)
                except queue.Empty:
                    break
            # the writer never dies: a full or failing disk costs the records it could not take (counted),
            # and the outbox writes again once there is room
            self._guarded(self._watch_clock)  # before the commit and retention of this round
            # corrupt, removed, replaced or cut short under the running agent: renewed before this round's commit,
            # whose checkpoint would write the pages a cut file lost back over it and hide the cut
            self._guarded(self._check_store)
            self._guarded(self._commit, batch)
            if not batch and self._write_error is not None and time.monotonic() >= self._probe_next:
                self._guarded(self._probe_write)
            self._guarded(self._enforce_budget)
            if self._copy_due:
                self._guarded(self._go_on_copying)
            if self._notices:  # an idle outbox still reports its drops
                self._guarded(self._drain_notices)

    def _go_on_copying(self) -> None:
        """On the writer: go on with the copies into this store left unfinished at start (its time limit, a disk
        error) or by a renewal's time limit, COPY_ROUND_S a round, between which the writer commits what the agent
        appended (the copy commits it too, between slices), so the records are sent while the agent runs rather
        than after the next start. A disk error: tried again every RENEW_RETRY_S (logged once); a stop: at the next
        start (the marker and each file's progress stay on disk)."""
        db = self._db
        if db is None or time.monotonic() < self._copy_next or self._renew_reason is not None:
            return
        job = self._read_salvaging()
        if job is None or job.get("epoch") != self.epoch:
            self._copy_due = False
            return
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        jobs = self._carry(job, meta)
        try:
            self._copy_round = True  # (a round's cut is its turn ending, not a copy stopped: no warning each)
            got, left = self._copy_jobs(
                db, jobs, time.monotonic() + COPY_ROUND_S, between=self._commit_queued
            )
        finally:
            self._salvage_tries, self._copy_round = 0, False
        self.salvaged += got.total()
        if not left:
            # the whole copy, as its slices recorded it: the outbox_corrupt event said only "at least" what was
            # copied by then (before, the rest was told in no event)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            whole: Counter = Counter()
            for j in jobs:
                whole += _copied(meta, Path(j["src"]))
            # kept in outbox-untold before the marker goes, its commit taking it out: formerly queued in memory
            # only, a kill between the marker's removal and that commit lost it for good
            evt = self._salvaged_event(jobs, self.epoch, whole)
            kept = self._keep_salvaged(evt)
            self._write_salvaging(None)
            self._copy_due = False
            log.warning(
                "outbox %s: the copy left unfinished at start is done: %d records copied in all (%d in the last "
                "round)",
                self.dir,
                whole.total(),
                got.total(),
            )
            with self._lock:  # queued as the drop reports are; its commit carries ``meta told:<id>``
                self._told_ids[id(evt)] = (evt, kept)
                self._notices.append(evt)
            self.on_event(evt)
        elif self._copy_failed:
            self._copy_failures += 1
            self._copy_next = time.monotonic() + RENEW_RETRY_S
        else:
            self._copy_failures = 0
        if left and len(left) != len(jobs):  # a file done: the marker no longer names it
            self._write_salvaging(self._marker(self.epoch, left))

    def _salvaged_event(self, jobs: list[dict], epoch: int, whole: Counter) -> Event:
        """A copy its outbox_corrupt event told as "at least" (a time limit cut it) is done, while running or at a
        later start: its whole count (``whole``, what its slices recorded) in an outbox_salvaged event; the copied
        store's own epoch read from its meta (the marker keeps it only until told)."""
        previous = None
        with contextlib.suppress(sqlite3.Error, OSError, IndexError):
            previous = self._store_epoch(Path(jobs[0]["src"]))
        return Event(
            EventKind.OUTBOX_SALVAGED,
            moved_to=str(jobs[0]["src"]) if jobs else None,
            epoch=epoch,
            previous_epoch=previous,
            salvaged=whole.total(),
            salvaged_by_kind=dict(whole),
        )

    def _keep_salvaged(self, evt: Event) -> str:
        """That event kept in ``outbox-untold`` (told by ``_tell_untold`` at the next start unless a commit carried
        it) before the copy's marker goes; one kept for the same store before (a start or a round killed before the
        marker went) is replaced, not told twice. Its id."""
        salvaged = EventKind.OUTBOX_SALVAGED.value
        with self._untold_lock:
            self._untold = [
                e
                for e in self._untold
                if not (e.get("kind") == salvaged and e["event"].get("moved_to") == evt.data["moved_to"])
            ]
            uid = os.urandom(8).hex()
            self._keep_untold(
                {"id": uid, "kind": salvaged, "event": {"t": evt.t, **evt.data}, "salvaged_by_kind": {}}
            )
        return uid

    def _watch_clock(self) -> None:
        """A wall clock that steps forward (NTP setting a gateway without a battery-backed clock, after days
        of an outage with no time server) made every record stamped before the step look that much older, and
        retention dropped them unsent: the whole outage's records at once. The step is measured against the
        time since boot (which counts suspend too); the records stamped before it are shifted by it (their
        times become right) before retention looks at them. A step back is left alone: records kept longer
        lose nothing."""
        wall, since_boot = time.time(), _since_boot()
        ref = self._clock_ref
        step = 0.0 if ref is None else (wall - ref[0]) - (since_boot - ref[1])
        db = self._db
        if step <= CLOCK_STEP_S or db is None:
            self._clock_ref = (wall, since_boot)
            return
        # stamped before the step: appended by now, with a time about a step behind the clock (a record stamped
        # since, within this round, is not moved twice)
        upto, before = self._seq, wall - step / 2
        db.execute("BEGIN IMMEDIATE")
        try:
            n = db.execute(
                "UPDATE records SET t = t + ? WHERE seq <= ? AND t < ?", (step, upto, before)
            ).rowcount
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        self._shift, self._shift_upto, self._shift_before = step, upto, before
        self._clock_ref = (wall, since_boot)  # only now: retention goes by the old time until they are moved
        log.warning(
            "outbox %s: the wall clock stepped forward by %.0f s; the times of the %d records stamped before "
            "it were moved by as much, so that retention does not take them for that much older",
            self.dir,
            step,
            n,
        )

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            if isinstance(exc, sqlite3.DatabaseError) and _is_corrupt(exc):
                if self._renew_reason is None:  # renewed by _check_store at the end of this round
                    log.error("outbox %s: %s met a corrupt store: %s", self.dir, fn.__name__.lstrip("_"), exc)
                self._want_renewal(_cause(exc))
            elif self._failing:
                log.debug("outbox: %s failed again: %s", fn.__name__, exc)
            else:
                self._failing = True
                log.error("outbox: %s failed: %s", fn.__name__.lstrip("_"), _cause(exc), exc_info=exc)

    def _count_failed(self, rows: list, reason: str) -> None:
        """Count records lost to a failed write (``write_failed:<kind>``); they are reported as one
        ``outbox_write_failed`` event once the outbox writes again (not while the disk refuses, where the
        event would be lost too)."""
        by_kind = Counter(f"write_failed:{kind}" for _seq, kind in rows)
        with self._lock:
            self.dropped.update(by_kind)
            self.dropped_total.update(by_kind)
            self._unpersisted.update(by_kind)
            self._drops.setdefault("write_failed", []).extend(rows)
            self._note_lost(r[0] for r in rows)
            self._fail_reason = reason
        self._failed_in_burst += len(rows)

    def _note_lost(self, seqs) -> None:
        """Keep ``seqs`` (dropped before a commit kept them) for ``lost``, at least the newest LOST_SEQS_MAX. Under
        ``_lock``. Past half as many again the newest are copied into a new dict (the one ``lost`` reads is swapped
        whole): deleting the oldest one by one made each next-oldest lookup rescan the deleted slots (327 ms in one
        failed commit at 100,000 kept, on the writer thread)."""
        lost = self._lost
        lost.update(dict.fromkeys(seqs))
        if len(lost) > LOST_SEQS_MAX + LOST_SEQS_MAX // 2:
            self._lost = dict.fromkeys(list(lost)[-LOST_SEQS_MAX:])

    def lost(self, seq: int) -> bool:
        """True when the record numbered ``seq`` was dropped before any commit kept it: its commit failed (a full
        disk, an I/O error: counted ``write_failed``), the writer did not take it in time, or it was larger than
        ``max_record_bytes`` (counted ``budget``). Such a seq still counts as reached for ``committed_seq``; a caller
        that must know its record is on disk asks this too (the newest LOST_SEQS_MAX such seqs are known)."""
        # (no lock: asked from the event loop, and the writer holds ``_lock`` through a DELETE; a dict's membership
        # test is atomic)
        return seq in self._lost

    def _commit(self, batch: list, retried: bool = False) -> None:
        db = self._db
        if batch:
            persisted = Counter(self._unpersisted)
            try:
                if db is None:  # a bad store that could not be renewed yet (a full disk)
                    raise sqlite3.OperationalError(
                        "the outbox has no usable store"
                        + (f": {self._renew_error}" if self._renew_error else "")
                    )
                if self._shift_upto and batch[0][0] <= self._shift_upto:  # stamped before the clock step
                    batch = [
                        (b[0], b[1], b[2], b[3] + self._shift, *b[4:])
                        if b[0] <= self._shift_upto and b[3] < self._shift_before
                        else b
                        for b in batch
                    ]
                db.execute("BEGIN")
                db.executemany(
                    "INSERT INTO records (seq, kind, priority, t, payload, sample_sha256, sample_ext, size) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    batch,
                )
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT(key) DO UPDATE SET "
                    "value = MAX(value, excluded.value)",
                    (batch[-1][0],),
                )
                # a renewal's event kept in outbox-untold: committed with its told:<id> (a kill before that file is
                # updated never tells it twice, ``_tell_untold``)
                told = (
                    {self._told_seqs[b[0]] for b in batch if b[0] in self._told_seqs}
                    if self._told_seqs
                    else None
                )
                if told:
                    db.executemany(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, 1)",
                        [("told:" + u,) for u in told],
                    )
                if self._damaged_kept and self._report_seqs:  # a drop report telling seqs a copy left out
                    reported = [
                        q for b in batch for q, _k in (self._report_seqs.get(b[0]) or {}).get(DAMAGED, ())
                    ]
                    kept = _read_untold_damaged(db) if reported else []
                    if kept:
                        _write_untold_damaged(db, _less_seqs(kept, seq_ranges(reported)))
                for key, n in persisted.items():  # counts of earlier failed writes, durable from now on
                    db.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                        "value = value + excluded.value",
                        (f"dropped:{key}", n),
                    )
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                # on SQLITE_FULL / IOERR SQLite has rolled back already: a second ROLLBACK would raise
                if db is not None and db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                if _is_corrupt(exc) and not retried and self._renew(_cause(exc), corrupt=True):
                    return self._commit(batch, retried=True)  # the batch goes into the new store
                if _is_full(exc) and not retried and self._make_room(db, sum(b[7] for b in batch)):
                    return self._commit(batch, retried=True)  # room made by dropping stored samples
                # the cause of now (a full disk remounted read-only, a store that cannot be renewed), since the first
                since = self._write_error["since"] if self._write_error is not None else time.time()
                self._write_error = {"since": since, "cause": _cause(exc)}
                self._probe_next = time.monotonic() + WRITE_PROBE_S
                if batch:
                    self._probe_bytes = min(sum(len(b[4]) for b in batch), WRITE_PROBE_MAX)
                    self._probe_tried = time.monotonic()  # (this commit was the first try)
                if not self._failing:
                    self._failing = True
                    log.error(
                        "outbox %s: commit of %d records failed: %s; records are dropped (counted as "
                        "write_failed) until the disk takes writes again",
                        self.dir,
                        len(batch),
                        _cause(exc),
                    )
                self._count_failed([(b[0], b[1]) for b in batch], _cause(exc))
                self._drops_back(batch)
                # (an event kept in outbox-untold lost here: told by the next start)
                for b in batch if self._told_seqs else ():
                    self._told_seqs.pop(b[0], None)
                for sha in {b[5] for b in batch if b[5]} if db is not None else ():  # give the room back
                    with contextlib.suppress(sqlite3.Error, OSError):
                        self._maybe_remove_sample(db, sha)
            else:
                self._write_error = None
                self._probe_next = time.monotonic() + WRITE_PROBE_S
                if told:
                    for b in batch:
                        self._told_seqs.pop(b[0], None)
                    self._forget_told(db, told)
                for b in batch if self._report_seqs else ():
                    self._report_seqs.pop(b[0], None)
                with self._lock:
                    self._unpersisted.subtract(persisted)
                    self._unpersisted = +self._unpersisted
                    for b in batch:
                        self._counts[(b[1], b[2])] += 1
                    self._oldest_gen += 1
                    if self._oldest is None and not self._oldest_stale:  # seqs only grow: the rest are older
                        self._oldest = batch[0][0]
                self._writing_again()
        if batch:
            with self._lock:  # (seq, kind, prio, t, body, sha, ext, size): a sample's size includes its body
                self._pending_sample_bytes -= sum(b[7] - len(b[4]) for b in batch if b[5])
                self._pending_bytes -= sum(b[7] for b in batch)
        seq_now = self._seq
        idle_seq = seq_now if self._q.empty() else 0  # nothing queued: everything appended is committed
        with self._committed:
            self._committed_seq = max(self._committed_seq, batch[-1][0] if batch else 0, idle_seq)
            self._committed.notify_all()

    def _writing_again(self) -> None:
        """After a commit that went through: the end of a burst of failed ones is logged and its drops reported."""
        if self._failing:
            self._failing = False
            log.warning(
                "outbox %s: writing again; %d records were lost while it could not (counted as write_failed)",
                self.dir,
                self._failed_in_burst,
            )
            self._failed_in_burst = 0
            self._report_drops(force=True)  # held while it could not (a report then was lost with it)

    def _probe_write(self) -> None:
        """While commits fail and no record comes (an idle agent: nothing else would commit), whether the disk takes
        writes again: a write of no record (a ``meta`` row; no seq taken, so one that fails is no gap), every
        WRITE_PROBE_S, of as many bytes as the batch that failed last (``WRITE_PROBE_MAX`` at most). One that goes
        through ends the failure as a record's commit does: ``write_failing`` False, ``write_error`` None, the held
        drop report goes, and what waits for the outbox to write (an episode's end owed, docs/agent.md) is
        recorded. Before, the failure lasted until the next record's commit."""
        now = time.monotonic()
        self._probe_next = now + WRITE_PROBE_S
        db = self._db
        if db is None:  # no usable store: its renewal is tried again instead (RENEW_RETRY_S)
            return
        if now - self._probe_tried < WRITE_PROBE_BLIND_S and self._room() < self._probe_bytes:
            return  # (no write while the disk plainly has no room for it: ``WRITE_PROBE_BLIND_S``)
        self._probe_tried = now
        try:
            # as many bytes as the batch that failed (zeros, given back at once): a page alone went through on a
            # disk with room for a page and not for the batch, the failure ended for a moment and each such end
            # had an episode's end owed recorded again and dropped again (one more write_failed gap each)
            for value in (f"zeroblob({self._probe_bytes})", str(int(time.time()))):
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    f"INSERT INTO meta (key, value) VALUES ('write_probe', {value}) ON CONFLICT(key) DO UPDATE SET "
                    "value = excluded.value"
                )
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if self._write_error is not None:
                self._write_error = {"since": self._write_error["since"], "cause": _cause(exc)}
            return
        self._write_error = None
        self._writing_again()

    def _room(self) -> int:
        """The bytes the store's file system says this process may still write (statvfs; root's reserve counted for
        root), or a great many when it cannot say."""
        try:
            st = os.statvfs(self.dir)
        except OSError:
            return 1 << 62
        return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize

    # ---- budget and retention ----------------------------------------------------------------
    def _enforce_budget(self) -> None:
        try:
            if self._db is not None:
                self._enforce(self._db)
        finally:
            self._report_drops()

    def _drops_back(self, batch) -> None:
        """The rows of the drop reports a failed commit dropped, held again for the next report: on a nearly full
        disk (a small commit going through, the next round with a sample failing) the report told at the first good
        commit was lost with its round, and the seqs it carried were told by no report."""
        for b in batch if self._report_seqs else ():
            rows = self._report_seqs.pop(b[0], None)
            with self._lock if rows else _NO_LOCK:
                for reason, got in (rows or {}).items():
                    self._drops.setdefault(reason, []).extend(got)

    def _report_drops(self, force: bool = False) -> None:
        """One drop event per cause every DROP_EVENT_S at most: merged, the ranges stay few (samples dropped
        first and results after them join up), and drop events do not crowd out what they report on."""
        with self._lock:
            if self._opened:  # (at close a new piece could not be committed: the next start tells it)
                self._next_damaged()
            if not self._drops or (not force and time.monotonic() - self._drops_reported_at < DROP_EVENT_S):
                return
            if self._failing and (self._opened or not force):
                # the event would be lost too: it waits for a good commit, a forced report too (flush, a read's removal,
                # a refusal; before, its commit failed with it and the cloud showed its ranges as unknown for good).
                # At close it is told here (on_event) all the same
                return
            drops, self._drops = self._drops, {}
            self._drops_reported_at = time.monotonic()
        for reason, rows in drops.items():
            by_kind = Counter(r[1] for r in rows)
            extra: dict[str, Any] = (
                {"records": len(rows), "reason": self._fail_reason} if reason == "write_failed" else {}
            )
            evt = Event(
                f"outbox_{reason}",
                cause=reason,
                epoch=self.epoch,
                dropped=len(rows),
                by_kind=dict(by_kind),
                ranges=seq_ranges(r[0] for r in rows)[:MAX_RANGES],
                budget_bytes=self.s.max_bytes,
                disk_bytes=self.disk_bytes(),
                **extra,
            )
            with self._lock:
                self._notices.append(evt)
                if self._opened:
                    self._report_ids[id(evt)] = (evt, {reason: rows})
            self.on_event(evt)

    def _enforce(self, db) -> None:
        # Each writer round (every commit_interval_ms, idle or not): both queries below read an index range,
        # never the whole table (a full outbox of 1M records took ~360 ms per scan: a core pinned)
        # the wall time the clock watch saw this round: a step after it is handled next round, before retention
        now = self._clock_ref[0] if self._clock_ref is not None else time.time()
        mono = time.monotonic()
        if mono >= self._retention_next:
            self._retention_next = mono + RETENTION_EVERY_S
            for kind, r in self.s.retention.items():
                if r.max_age_s:
                    self._drop_where(db, "kind = ? AND t < ?", (kind, now - r.max_age_s), "retention")
        if self.disk_bytes() <= self.s.max_bytes * ACT_AT:
            return
        # room below the budget for the next commits' rows, WAL frames and sample files
        target = int(self.s.max_bytes * DROP_TO)
        self._reclaim(db)
        by_priority = self.s.drop_policy is DropPolicy.LOWEST_PRIORITY_FIRST
        victims: list = []
        for _round in range(8):  # row sizes only estimate pages: drop, reclaim, measure again
            over = self.disk_bytes() - target
            if over <= 0:
                break
            # rows take more room in pages than their payload: aim a little past the excess
            want = int(over * 1.2) + 1
            cols = "SELECT seq, kind, size, sample_sha256, priority FROM records"
            if by_priority:  # the least important priority there is, oldest first: one range of its index
                # ("ORDER BY priority DESC, seq" sorted the whole table: its directions differ from the index)
                lowest = db.execute("SELECT MAX(priority) FROM records").fetchone()[0]
                rows = (
                    db.execute(f"{cols} WHERE priority = ? ORDER BY seq LIMIT 5000", (lowest,)).fetchall()
                    if lowest is not None
                    else []
                )
            else:
                rows = db.execute(f"{cols} ORDER BY seq LIMIT 5000").fetchall()
            if not rows:
                break
            if by_priority and rows[0][4] < PRIORITY["sample"]:
                # samples still being handed over have their files on disk already: they go first once
                # committed, so only the excess beyond them is taken from more important rows now
                over -= self._pending_sample_bytes
                if over <= 0:
                    break
                want = int(over * 1.2) + 1
            part, freed = [], 0
            for seq, kind, size, sha, prio in rows:
                if freed >= want or (by_priority and prio != rows[0][4]):
                    break
                part.append((seq, kind, sha))
                freed += size
            self._delete(db, part, "budget")
            victims += part
            self._reclaim(db)
        if victims:
            log.warning(
                "outbox near its %d byte budget on disk: dropped %d records (%s policy); %d bytes now",
                self.s.max_bytes,
                len(victims),
                self.s.drop_policy.value,
                self.disk_bytes(),
            )

    def _make_room(self, db, need: int) -> bool:
        """The disk is full (other files filled it; the outbox is within its budget) and a commit failed: with
        ``lowest_priority_first``, drop the oldest stored samples (their files hold most of the bytes) to make
        room for what is newer and more important, counted and reported as ``budget`` drops, instead of
        losing every new result and alarm while old samples stay. True when something was dropped."""
        if db is None or self.s.drop_policy is not DropPolicy.LOWEST_PRIORITY_FIRST:
            return False
        want = max(4 * need, 256 * 1024)  # the batch, its WAL frames and pages, and the next few
        try:
            rows = db.execute(
                "SELECT seq, kind, size, sample_sha256 FROM records WHERE priority = ? AND sample_sha256 IS NOT "
                "NULL ORDER BY seq LIMIT 5000",
                (PRIORITY["sample"],),
            ).fetchall()
            part, freed = [], 0
            for seq, kind, size, sha in rows:
                if freed >= want:
                    break
                part.append((seq, kind, sha))
                freed += size
            if not part:
                return False
            # their files first: that frees the disk without a write (deleting the rows needs WAL room)
            mine = Counter(sha for _seq, _kind, sha in part)
            for sha, n in mine.items():
                if (
                    db.execute("SELECT COUNT(*) FROM records WHERE sample_sha256 = ?", (sha,)).fetchone()[0]
                    <= n
                ):
                    self._unlink_sample(sha)
        except sqlite3.Error as exc:
            log.debug("outbox %s: no room could be made: %s", self.dir, exc)
            return False
        try:
            self._delete(db, part, "budget")
        except sqlite3.Error as exc:  # kept without their images (sent so): the room is made all the same
            log.warning(
                "outbox %s: samples whose files were removed to make room stay listed: %s", self.dir, exc
            )
        log.warning(
            "outbox %s: the disk is full: dropped the %d oldest samples (%d bytes, counted as budget drops) to "
            "keep the newer records",
            self.dir,
            len(part),
            freed,
        )
        return True

    def _reclaim(self, db) -> None:
        """Give freed pages back to the file system and fold the WAL into the database (truncating it)."""
        try:
            # executescript steps the pragma to the end (execute() would free one page per call)
            db.executescript("PRAGMA incremental_vacuum;")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:  # a reader holding a snapshot: the next round tries again
            log.debug("outbox: reclaim deferred: %s", exc)

    def _drop_where(self, db, where: str, args: tuple, reason: str) -> None:
        rows = db.execute(f"SELECT seq, kind, sample_sha256 FROM records WHERE {where}", args).fetchall()
        if rows:
            self._delete(db, rows, reason)

    def _delete(self, db, rows: list, reason: str, tell_as: str | None = None) -> None:
        """Drop ``rows`` (by their seq), counted durably as ``<reason>:<kind>`` (a kind that is none of the record
        kinds as ``damaged``) and told in a drop event, ``outbox_<tell_as>`` (by default ``outbox_<reason>``)."""
        if not rows:
            return
        seqs = [r[0] for r in rows]
        with self._lock:
            gone: list = []  # what this DELETE removed (a row acked meanwhile is not dropped, nor counted)
            db.execute("BEGIN IMMEDIATE")
            try:
                gone += _delete_seqs(db, seqs)
                by_kind = Counter(f"{reason}:{_kind_read(r[1])}" for r in gone)
                for key, n in by_kind.items():  # the counts are durable with the drop itself
                    db.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                        "value = value + excluded.value",
                        (f"dropped:{key}", n),
                    )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLITE_FULL / IOERR rolled back already
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
            self._bytes -= sum(r[3] for r in gone)
            self._count_deleted(gone)
            self.dropped.update(by_kind)
            self.dropped_total.update(by_kind)
            if gone:
                self._drops.setdefault(tell_as or reason, []).extend((r[0], _kind_read(r[1])) for r in gone)
        for sha in {r[4] for r in gone if r[4]}:
            self._maybe_remove_sample(db, sha)

    def _maybe_remove_sample(self, db, sha: str) -> None:
        if not db.execute("SELECT 1 FROM records WHERE sample_sha256 = ? LIMIT 1", (sha,)).fetchone():
            self._unlink_sample(sha)

    def _unlink_sample(self, sha: str) -> None:
        p = self.samples_dir / sha
        try:
            n = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            self._sample_bytes -= n

    # ---- draining ----------------------------------------------------------------------------
    def pending(
        self, limit: int = 500, max_bytes: int = 1_000_000, skip: Collection[int] = ()
    ) -> list[Record]:
        """Committed, unacknowledged records: events/alarms first, then results, then samples; by seq within.
        ``skip``: seqs the read leaves out (the sender's acknowledged ones not recorded yet, records it set aside),
        in the query: the uplink read as many more rows, up to 5,000, and their payloads, and dropped them itself.
        Empty while the store cannot be read (corrupt: renewed by the writer; removed; an I/O error): logged
        once, never raised, so that a sender polling it keeps running and resumes once the store is back.
        Empty too while a store known to be corrupt waits for its renewal (its rows may still read): the renewal
        sends them in the new epoch; handed out now, every ack would meet the damage and be held in memory, and
        the batches behind grow without bound while the renewal cannot start (a full disk)."""
        if self._renew_reason is not None:
            return []
        # at the cloud already (acknowledged, not removed yet: never sent again), or left out by the sender
        gone = set(self._acked_unremoved).union(skip)
        removed = False  # rows removed as damaged by this read
        try:
            with self._reading() as db:
                # in a table of this connection's own (no JSON function: SQLite may be built without them)
                if gone:
                    _temp_seqs(db, "gone", gone)
                rows = db.execute(
                    "SELECT seq, kind, priority, t, payload, sample_sha256, sample_ext, size FROM records "
                    + ("WHERE seq NOT IN (SELECT seq FROM temp.gone) " if gone else "")
                    + "ORDER BY priority, seq LIMIT ?",
                    (limit,),
                ).fetchall()
                damaged = [r for r in rows if _kind_read(r[1]) == DAMAGED]
                if damaged:
                    # a kind garbled in place in a store still sound (no record: the uplink could not send it, and
                    # every batch failed on it, the records behind it never sent): removed, counted as
                    # corrupt:damaged, as a salvage counts such a row, and told in an outbox_damaged event with its
                    # seqs (before, untold: the cloud showed their gap as unknown, possibly still on its way, for good)
                    rows = [r for r in rows if _kind_read(r[1]) != DAMAGED]
                    try:
                        self._delete(db, damaged, "corrupt", tell_as="damaged")
                    except sqlite3.Error as exc:  # (a full disk: removed at a later read, never handed out)
                        if _is_corrupt(exc):
                            raise
                    else:
                        _damaged_said(
                            self.path, [r[1] for r in damaged], f"not sent, counted as corrupt:{DAMAGED}"
                        )
                        removed = True
        except (sqlite3.Error, OutboxError) as exc:
            if not self._unreadable_told:
                self._unreadable_told = True
                log.error("outbox %s: cannot read the store: %s; nothing is sent until it can", self.dir, exc)
            return []
        self._unreadable_told = False
        if removed:  # told at once, not at the writer's next drop report (up to DROP_EVENT_S): rare, and the
            self._report_drops(force=True)  # cloud's gap view has them unexplained until then
        out: list[Any] = []
        total = 0
        for r in rows:
            if len(out) >= limit or out and total + r[7] > max_bytes:
                break
            out.append(Record(*r))
            total += r[7]
        if out:
            self._mark_sent(max(r.seq for r in out))
            with self._lock:
                handed = self._handed
                handed.update((r.seq, r.kind) for r in out)
                while len(handed) > HANDED_MAX:  # a sender that never acks: the oldest are forgotten
                    del handed[next(iter(handed))]
        return out

    def _mark_sent(self, top: int) -> None:
        """Record (fsync'd, beside the epoch) the highest seq about to be sent, before it leaves: a store that
        later loses its last commits to the disk never gives a seq the cloud has seen again. One small write
        per batch that reaches a new seq; a disk that refuses it is logged, and the batch goes anyway."""
        with self._sent_lock:
            if top <= self._sent_mark:
                return
            try:  # one small record rewritten in place and fdatasync'd: no rename, no directory sync
                fd = os.open(self.sent_path, os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    os.pwrite(fd, f"{self.epoch} {top}".ljust(63).encode() + b"\n", 0)
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                log.debug("outbox %s: cannot record the seqs sent: %s", self.dir, exc)
                return
            self._sent_mark = top

    def sample_bytes(self, rec: Record) -> bytes | None:
        if not rec.sample_sha256:
            return None
        try:
            return (self.samples_dir / rec.sample_sha256).read_bytes()
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _reading(self, wait_s: float = READER_WAIT_S, acking: list[int] | None = None):
        """A connection of its own to the store (never creating the file: a removed store is not replaced by
        an empty one here), closed on leaving; not while the writer renews the store. A corrupt store met here
        is renewed by the writer at its next round. ``acking``: seqs acknowledged, kept out of a salvage going
        on (noted as the gate is passed: one passed before a renewal closed it deleted them from the old store)."""
        with self._gate:
            if not self._gate.wait_for(lambda: not self._gate_closed, wait_s):
                raise OutboxError(f"outbox {self.dir}: the store is being renewed")
            self._readers += 1
            if acking and self._acked_while_salvaging is not None:  # the salvage must not bring them back
                self._acked_while_salvaging.update(acking)
        try:
            db = sqlite3.connect(f"file:{urllib.parse.quote(str(self.path))}?mode=rw", uri=True, timeout=30)
            db.text_factory = _text
            try:
                yield db
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            if _is_corrupt(exc):
                self._want_renewal(_cause(exc))
            raise
        finally:
            with self._gate:
                self._readers -= 1
                self._gate.notify_all()

    def ack(self, seqs: list[int]) -> int:
        if not seqs:
            return 0
        rows: list = []  # exactly what this DELETE removed: the counts stay exact beside a concurrent drop
        with self._reading(acking=seqs) as db:
            try:
                rows += _delete_seqs(db, seqs)
                db.commit()
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc):
                    raise
                # the cloud has them: the renewal the damage calls for must not salvage them into the new
                # store (sent again there, in a new epoch: twice at the cloud) nor count them as lost. Noted
                # before this reader leaves, so before the renewal can close the gate and begin its salvage.
                with self._lock:
                    for q in seqs:
                        self._acked_unremoved[q] = self._handed.pop(q, None)
                self._want_renewal(_cause(exc))
                log.warning(
                    "outbox %s: the acknowledgement of %d records met a corrupt store (%s); they are not sent "
                    "again and are left out of the renewed store",
                    self.dir,
                    len(seqs),
                    _cause(exc),
                )
                return 0
            with self._lock:
                for q in seqs:
                    self._handed.pop(q, None)
                self._bytes -= sum(r[3] for r in rows)
                self._count_deleted(rows)
                self.acked += len(rows)
            for sha in {r[4] for r in rows if r[4]}:
                if not db.execute("SELECT 1 FROM records WHERE sample_sha256 = ? LIMIT 1", (sha,)).fetchone():
                    self._unlink_sample(sha)
        return len(rows)

    def refuse(self, seqs: list[int]) -> int:
        """Drop records the cloud refused for good (it answered that no store can hold them): counted as
        ``refused:<kind>`` and reported as a drop event, so the cloud sees the gap and its cause, instead
        of the record blocking every record behind it at the head of the outbox."""
        with self._reading() as db:
            q = ",".join("?" * len(seqs))
            rows = db.execute(
                f"SELECT seq, kind, sample_sha256 FROM records WHERE seq IN ({q})", seqs
            ).fetchall()
            self._delete(db, rows, "refused")
        self._report_drops(force=True)
        return len(rows)

    def stats(self) -> dict:
        """The outbox's counts, from memory (no table is read: microseconds at any depth; after an ack or a
        drop took the oldest row, one ``MIN(seq)`` on the primary key)."""
        with self._lock:
            counts = +self._counts
            stale, gen = self._oldest_stale, self._oldest_gen
        if stale and self._opened:
            try:
                with self._reading(wait_s=0) as db:  # /status never waits on a store being renewed
                    oldest = db.execute("SELECT MIN(seq) FROM records").fetchone()[0]
            except (sqlite3.Error, OutboxError):  # unreadable or being renewed: the counts are still right
                oldest = self._oldest  # a lower bound
            else:
                with self._lock:
                    if self._oldest_gen == gen:  # nothing committed or deleted meanwhile: it holds
                        self._oldest, self._oldest_stale = oldest, False
                    else:  # counts taken before a commit or delete the read saw: take them again
                        counts = +self._counts
                        if oldest is None and counts:  # emptied, then appended to: a lower bound
                            oldest = self._oldest
        else:
            oldest = self._oldest
        by_kind: Counter = Counter()
        by_priority: Counter = Counter()
        for (kind, prio), n in counts.items():
            # (a kind garbled in place, counted at open until a read removes it: as ``damaged``; a blob as a key failed
            # every /status while the cloud was out of reach, text went out as a kind of its own)
            by_kind[_kind_read(kind)] += n
            by_priority[prio] += n
        return {
            "depth": sum(counts.values()),
            "by_kind": dict(by_kind),
            "by_priority": dict(sorted(by_priority.items())),
            "oldest_seq": oldest,
            "bytes": self._bytes,
            "last_seq": self._seq,
            "epoch": self.epoch,
            "disk_bytes": self.disk_bytes(),
            "appended": self.appended,
            "acked": self.acked,
            "dropped": dict(self.dropped),
            "dropped_total": dict(self.dropped_total),
            "budget_bytes": self.s.max_bytes,
            "fsync": self.s.fsync.value,
            # stores found corrupt, removed or replaced (at start or while running), moved aside and renewed
            "renewals": self.renewals,
            "salvaged": self.salvaged,
            "last_renewal": self.last_renewal,
            # None while commits go through; else since when and why they fail (a full or read-only disk)
            "write_error": self._write_error,
            # outboxes made under a former tenant of this gateway: kept whole, never sent (``_own``)
            "held": {
                # removed since the start, oldest first, to keep outbox-held/ within the budget (``_bound_held``)
                "dropped": dict(self.held_dropped),
                # true when a store removed had its count cut by its time limit: "dropped" is at least that many
                "dropped_at_least": self.held_dropped_at_least,
                "records": sum(n["records"] for n in self.held),
                # true when a held corrupt store's count was cut by its time limit: "records" is at least that many
                "records_at_least": any(n.get("records_at_least") is True for n in self.held),
                "by_kind": dict(sum((Counter(n["by_kind"]) for n in self.held), Counter())),
                "files": [
                    {
                        **{k: n.get(k) for k in ("file", "tenant", "agent", "epoch", "records", "held_at")},
                        "records_at_least": n.get("records_at_least") is True,
                    }
                    for n in self.held
                ],
            },
        }
