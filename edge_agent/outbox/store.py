"""The durable outbox: SQLite in WAL mode in the agent's data folder; write first, send later,
delete only on the cloud's acknowledgement.

``append(kind, payload, sample=...)`` assigns the next per-agent sequence number (strictly
increasing, never reused, also across restarts: the last one is stored with the rows) and hands
the row to a writer thread that commits in batches.

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
Sample bytes are written as content-addressed files (``samples/<sha256>``) before their row.

Budget: when records plus sample files exceed ``max_bytes``, rows are dropped by ``drop_policy``
(``lowest_priority_first``: samples, then results/telemetry, events and alarms last; or
``oldest_first``) until 90% of the budget is free; each drop is counted per kind and reported
through ``on_event``. Per-kind retention (``max_age_s``) drops old rows the same way. The disk is
never filled by the outbox.

A corrupt or truncated database file is detected at ``open()`` (``PRAGMA quick_check``), moved
aside as ``outbox.db.corrupt-<time>`` with a clear message, and a fresh outbox is started: the
agent keeps running. (Durability never degrades silently: if the fresh file cannot be created
either, ``open()`` raises and the agent does not start.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from edge_agent.outbox.settings import DropPolicy, FsyncPolicy, OutboxSettings

log = logging.getLogger(__name__)

PRIORITY = {"event": 0, "alarm": 0, "result": 1, "telemetry": 1, "sample": 2}
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, priority INTEGER NOT NULL,
  t REAL NOT NULL, payload BLOB NOT NULL, sample_sha256 TEXT, sample_ext TEXT, size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS records_by_priority ON records (priority, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class OutboxError(RuntimeError):
    pass


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
    def __init__(self, settings: OutboxSettings, data_dir: Path, on_event=None) -> None:
        self.s = settings
        self.dir = Path(settings.dir) if settings.dir else Path(data_dir) / "outbox"
        self.path = self.dir / "outbox.db"
        self.samples_dir = self.dir / "samples"
        self.on_event = on_event or (lambda e: None)
        self.dropped: Counter = Counter()
        self.appended = 0
        self.acked = 0
        # Bounded: when the writer falls behind, append() waits (back-pressure) instead of holding an
        # unbounded amount of uncommitted data in memory.
        self._q: queue.Queue = queue.Queue(maxsize=2 * settings.commit_batch)
        self._lock = threading.Lock()  # byte and counter bookkeeping (short holds only)
        self._append_lock = threading.Lock()  # orders appends; the writer thread never takes it
        self._seq = 0
        self._bytes = 0
        self._db: sqlite3.Connection | None = None
        self._writer: threading.Thread | None = None
        self._stop = threading.Event()
        self._committed = threading.Condition()
        self._committed_seq = 0
        self.moved_aside: Path | None = None

    # ---- open / close ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=" + ("OFF" if self.s.fsync is FsyncPolicy.OFF else "FULL"))
        return db

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.samples_dir.mkdir(exist_ok=True)
        try:
            db = self._connect()
            ok = db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(ok)
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            try:
                db.close()
            except Exception:
                pass
            aside = self.path.with_name(f"outbox.db.corrupt-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(self.path) + suffix)
                if p.exists():
                    os.replace(p, Path(str(aside) + suffix))
            self.moved_aside = aside
            log.error("outbox %s is corrupt (%s): moved aside to %s; starting a fresh outbox. Records in the old "
                      "file were not sent; inspect it with sqlite3 if they matter", self.path, exc, aside)
            self.on_event({"kind": "outbox_corrupt", "moved_to": str(aside), "reason": str(exc), "t": time.time()})
            db = self._connect()
            db.executescript(SCHEMA)
        self._db = db
        row = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        last_row = db.execute("SELECT MAX(seq) FROM records").fetchone()[0] or 0
        self._seq = max(row[0] if row else 0, last_row)
        self._committed_seq = self._seq
        self._bytes = (db.execute("SELECT COALESCE(SUM(size), 0) FROM records").fetchone()[0])
        self._stop.clear()
        self._writer = threading.Thread(target=self._write_loop, name="outbox-writer", daemon=True)
        self._writer.start()

    def close(self) -> None:
        self.flush()
        self._stop.set()
        self._q.put(None)
        if self._writer:
            self._writer.join(10)
        if self._db:
            self._db.close()
            self._db = None

    # ---- appending -------------------------------------------------------------------------
    def append(self, kind: str, payload: dict | bytes, *, priority: int | None = None, sample: bytes | None = None,
               sample_ext: str = "") -> int:
        if self._db is None:
            raise OutboxError("outbox is not open")
        body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":"),
                                                                      default=str).encode()
        sha = None
        size = len(body)
        if sample is not None:
            sha = hashlib.sha256(sample).hexdigest()
            p = self.samples_dir / sha
            if not p.exists():
                tmp = p.with_suffix(".tmp")
                tmp.write_bytes(sample)
                os.replace(tmp, p)
            size += len(sample)
        prio = PRIORITY.get(kind, 1) if priority is None else priority
        with self._append_lock:  # seq order == queue order, so the writer commits in seq order
            seq = self._seq + 1
            self._q.put((seq, kind, prio, time.time(), body, sha, sample_ext, size))  # may wait: back-pressure
            self._seq = seq  # published after the put: the writer never counts a row not yet queued
        with self._lock:
            self._bytes += size
            self.appended += 1
        if self.s.fsync is FsyncPolicy.ALWAYS:
            self._wait_committed(seq)
        return seq

    def flush(self, timeout_s: float = 10.0) -> None:
        self._q.put("flush")
        self._wait_committed(self._seq, timeout_s)

    def _wait_committed(self, seq: int, timeout_s: float = 10.0) -> None:
        with self._committed:
            self._committed.wait_for(lambda: self._committed_seq >= seq or self._stop.is_set(), timeout_s)

    def _write_loop(self) -> None:
        db = self._db
        interval = self.s.commit_interval_ms / 1000
        always = self.s.fsync is FsyncPolicy.ALWAYS
        while True:
            batch, flush = [], False
            try:
                item = self._q.get(timeout=interval)
            except queue.Empty:
                item = "tick"
            deadline = time.monotonic() + (0 if always else interval)
            while True:
                if item is None:
                    self._commit(db, batch)
                    return
                if item == "flush":
                    flush = True
                elif item != "tick":
                    batch.append(item)
                if always or flush or len(batch) >= self.s.commit_batch:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._q.get(timeout=remaining)
                except queue.Empty:
                    break
            self._commit(db, batch)
            self._enforce_budget(db)

    def _commit(self, db, batch: list) -> None:
        if batch:
            try:
                db.execute("BEGIN")
                db.executemany("INSERT INTO records (seq, kind, priority, t, payload, sample_sha256, sample_ext, size) "
                               "VALUES (?,?,?,?,?,?,?,?)", batch)
                db.execute("INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT(key) DO UPDATE SET "
                           "value = MAX(value, excluded.value)", (batch[-1][0],))
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                db.execute("ROLLBACK")
                log.error("outbox: commit of %d records failed: %s", len(batch), exc)
                self.dropped["write_failed"] += len(batch)
                self.on_event({"kind": "outbox_write_failed", "records": len(batch), "reason": str(exc)})
        seq_now = self._seq
        idle_seq = seq_now if self._q.empty() else 0  # nothing queued: everything appended is committed
        with self._committed:
            self._committed_seq = max(self._committed_seq, batch[-1][0] if batch else 0, idle_seq)
            self._committed.notify_all()

    # ---- budget and retention ----------------------------------------------------------------
    def _enforce_budget(self, db) -> None:
        now = time.time()
        for kind, r in self.s.retention.items():
            if r.max_age_s:
                self._drop_where(db, "kind = ? AND t < ?", (kind, now - r.max_age_s), "retention")
        if self._bytes <= self.s.max_bytes:
            return
        target = int(self.s.max_bytes * 0.9)
        order = "priority DESC, seq" if self.s.drop_policy is DropPolicy.LOWEST_PRIORITY_FIRST else "seq"
        rows = db.execute(f"SELECT seq, kind, size, sample_sha256 FROM records ORDER BY {order}").fetchall()
        victims, freed = [], 0
        for seq, kind, size, _sha in rows:
            if self._bytes - freed <= target:
                break
            victims.append((seq, kind, _sha))
            freed += size
        self._delete(db, victims, "budget")
        self.on_event({"kind": "outbox_budget", "dropped": len(victims), "freed_bytes": freed,
                       "by_kind": dict(Counter(k for _, k, _ in victims)), "t": now})
        log.warning("outbox over its %d byte budget: dropped %d records (%s policy)", self.s.max_bytes, len(victims),
                    self.s.drop_policy.value)

    def _drop_where(self, db, where: str, args: tuple, reason: str) -> None:
        rows = db.execute(f"SELECT seq, kind, sample_sha256 FROM records WHERE {where}", args).fetchall()
        if rows:
            self._delete(db, rows, reason)

    def _delete(self, db, rows: list, reason: str) -> None:
        if not rows:
            return
        seqs = [r[0] for r in rows]
        with self._lock:
            size = 0
            for i in range(0, len(seqs), 500):
                part = seqs[i : i + 500]
                q = ",".join("?" * len(part))
                size += db.execute(f"SELECT COALESCE(SUM(size), 0) FROM records WHERE seq IN ({q})", part).fetchone()[0]
                db.execute(f"DELETE FROM records WHERE seq IN ({q})", part)
            self._bytes -= size
        for _, kind, sha in rows:
            self.dropped[f"{reason}:{kind}"] += 1
            if sha:
                self._maybe_remove_sample(db, sha)

    def _maybe_remove_sample(self, db, sha: str) -> None:
        if not db.execute("SELECT 1 FROM records WHERE sample_sha256 = ? LIMIT 1", (sha,)).fetchone():
            (self.samples_dir / sha).unlink(missing_ok=True)

    # ---- draining ----------------------------------------------------------------------------
    def pending(self, limit: int = 500, max_bytes: int = 1_000_000, after: dict | None = None) -> list[Record]:
        """Committed, unacknowledged records: events/alarms first, then results, then samples; by seq within."""
        db = self._reader()
        rows = db.execute("SELECT seq, kind, priority, t, payload, sample_sha256, sample_ext, size FROM records "
                          "ORDER BY priority, seq LIMIT ?", (limit,)).fetchall()
        db.close()
        out, total = [], 0
        for r in rows:
            if out and total + r[7] > max_bytes:
                break
            out.append(Record(*r))
            total += r[7]
        return out

    def sample_bytes(self, rec: Record) -> bytes | None:
        if not rec.sample_sha256:
            return None
        try:
            return (self.samples_dir / rec.sample_sha256).read_bytes()
        except FileNotFoundError:
            return None

    def _reader(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        return db

    def ack(self, seqs: list[int]) -> int:
        if not seqs:
            return 0
        db = self._reader()
        rows = []
        for i in range(0, len(seqs), 500):
            part = seqs[i : i + 500]
            q = ",".join("?" * len(part))
            rows += db.execute(f"SELECT seq, sample_sha256, size FROM records WHERE seq IN ({q})", part).fetchall()
            db.execute(f"DELETE FROM records WHERE seq IN ({q})", part)
        db.commit()
        for _, sha, _ in rows:
            if sha and not db.execute("SELECT 1 FROM records WHERE sample_sha256 = ? LIMIT 1", (sha,)).fetchone():
                (self.samples_dir / sha).unlink(missing_ok=True)
        db.close()
        with self._lock:
            self._bytes -= sum(r[2] for r in rows)
            self.acked += len(rows)
        return len(rows)

    def stats(self) -> dict:
        db = self._reader()
        rows = db.execute("SELECT kind, COUNT(*), MIN(seq) FROM records GROUP BY kind").fetchall()
        db.close()
        by_kind = {k: n for k, n, _ in rows}
        return {"depth": sum(by_kind.values()), "by_kind": by_kind,
                "oldest_seq": min((r[2] for r in rows), default=None), "bytes": self._bytes, "last_seq": self._seq,
                "appended": self.appended, "acked": self.acked, "dropped": dict(self.dropped),
                "budget_bytes": self.s.max_bytes, "fsync": self.s.fsync.value}
