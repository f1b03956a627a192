"""The fleet service's store: records, samples, agents. A small interface, SQLite first.

``Store`` is what the service needs; ``SQLiteStore`` implements it on one file in the server's data
folder (WAL, a real database, no mock). A PostgreSQL implementation satisfies the same interface
and schema (``(agent, seq)`` primary key, same queries). Ingest is idempotent: a record replayed
after a lost ack is stored once; gaps in an agent's sequence are queryable. Samples are
content-addressed files through ``cloud_trainer.blobs.LocalBlobStore``.
"""

from __future__ import annotations

import abc
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  agent TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, t REAL NOT NULL, received REAL NOT NULL,
  payload TEXT NOT NULL, PRIMARY KEY (agent, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples (
  sha256 TEXT NOT NULL, agent TEXT NOT NULL, seq INTEGER NOT NULL, t REAL NOT NULL, model TEXT, version TEXT,
  pipeline TEXT, reason TEXT, verdict TEXT, label TEXT, label_state TEXT NOT NULL DEFAULT 'unlabelled',
  ext TEXT, PRIMARY KEY (agent, seq));
CREATE INDEX IF NOT EXISTS samples_by_model ON samples (model, label_state, reason, t);
CREATE TABLE IF NOT EXISTS agents (
  id TEXT PRIMARY KEY, labels TEXT NOT NULL DEFAULT '{}', last_seen REAL, slots TEXT NOT NULL DEFAULT '[]',
  health TEXT NOT NULL DEFAULT '{}', outbox_depth INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS ingest (agent TEXT PRIMARY KEY, duplicates INTEGER NOT NULL DEFAULT 0);
"""


class Store(abc.ABC):
    @abc.abstractmethod
    def ingest(self, agent: str, records: list[dict]) -> tuple[list[int], int, int]:
        """Store records idempotently; return (acknowledged seqs, newly stored, duplicates)."""

    @abc.abstractmethod
    def gaps(self, agent: str) -> list[tuple[int, int]]: ...

    @abc.abstractmethod
    def stats(self, agent: str | None = None) -> dict: ...

    @abc.abstractmethod
    def records(self, agent: str, kind: str | None = None, since_seq: int = 0, limit: int = 1000) -> list[dict]: ...

    @abc.abstractmethod
    def samples(self, model: str | None = None, label_state: str | None = None, reason: str | None = None,
                since: float | None = None, until: float | None = None) -> list[dict]: ...

    @abc.abstractmethod
    def heartbeat(self, agent: str, labels: dict, slots: list[dict], health: dict, outbox_depth: int) -> None: ...

    @abc.abstractmethod
    def agents(self) -> list[dict]: ...

    @abc.abstractmethod
    def set_labels(self, labels: dict[str, str]) -> int:
        """Record ground-truth labels by sample SHA-256 (label_state 'labelled'); return rows changed."""


class SQLiteStore(Store):
    def __init__(self, path: Path, blobs=None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # an ack means durable
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()
        self.blobs = blobs

    def ingest(self, agent: str, records: list[dict]) -> tuple[list[int], int, int]:
        now = time.time()
        stored = dup = 0
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for r in records:
                    cur = self.db.execute(
                        "INSERT OR IGNORE INTO records (agent, seq, kind, t, received, payload) VALUES (?,?,?,?,?,?)",
                        (agent, r["seq"], r["kind"], r["t"], now, r["payload"]))
                    if cur.rowcount:
                        stored += 1
                        if r["kind"] == "sample" and r.get("sample_sha256"):
                            meta = json.loads(r["payload"] or "{}")
                            self.db.execute(
                                "INSERT OR IGNORE INTO samples (sha256, agent, seq, t, model, version, pipeline, reason,"
                                " verdict, label, ext) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                                (r["sample_sha256"], agent, r["seq"], r["t"], meta.get("model"),
                                 meta.get("model_version"), meta.get("pipeline"), meta.get("reason"),
                                 meta.get("verdict"), meta.get("label"), r.get("sample_ext")))
                    else:
                        dup += 1
                if dup:
                    self.db.execute("INSERT INTO ingest (agent, duplicates) VALUES (?, ?) ON CONFLICT(agent) "
                                    "DO UPDATE SET duplicates = duplicates + excluded.duplicates", (agent, dup))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return [r["seq"] for r in records], stored, dup

    def gaps(self, agent: str) -> list[tuple[int, int]]:
        with self.lock:
            rows = self.db.execute(
                "SELECT seq + 1, next - 1 FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS next FROM records "
                "WHERE agent = ?) WHERE next > seq + 1", (agent,)).fetchall()
            first = self.db.execute("SELECT MIN(seq) FROM records WHERE agent = ?", (agent,)).fetchone()[0]
        out = [(1, first - 1)] if first and first > 1 else []
        return out + [(a, b) for a, b in rows]

    def stats(self, agent: str | None = None) -> dict:
        q = "WHERE agent = ?" if agent else ""
        args = (agent,) if agent else ()
        with self.lock:
            n, last = self.db.execute(f"SELECT COUNT(*), MAX(seq) FROM records {q}", args).fetchone()
            s = self.db.execute(f"SELECT COUNT(*) FROM samples {q}", args).fetchone()[0]
            d = self.db.execute(f"SELECT COALESCE(SUM(duplicates), 0) FROM ingest {q}", args).fetchone()[0]
            kinds = dict(self.db.execute(f"SELECT kind, COUNT(*) FROM records {q} GROUP BY kind", args).fetchall())
        return {"records": n, "last_seq": last or 0, "samples": s, "duplicates": d, "by_kind": kinds}

    def records(self, agent: str, kind: str | None = None, since_seq: int = 0, limit: int = 1000) -> list[dict]:
        q = "SELECT seq, kind, t, payload FROM records WHERE agent = ? AND seq > ?"
        args: list[Any] = [agent, since_seq]
        if kind:
            q += " AND kind = ?"
            args.append(kind)
        q += " ORDER BY seq LIMIT ?"
        args.append(limit)
        with self.lock:
            rows = self.db.execute(q, args).fetchall()
        return [{"seq": s, "kind": k, "t": t, "payload": json.loads(p) if p else None} for s, k, t, p in rows]

    def samples(self, model=None, label_state=None, reason=None, since=None, until=None) -> list[dict]:
        q, args = "SELECT sha256, agent, seq, t, model, version, pipeline, reason, verdict, label, label_state, ext " \
                  "FROM samples WHERE 1=1", []
        for col, val, op in (("model", model, "="), ("label_state", label_state, "="), ("reason", reason, "="),
                             ("t", since, ">="), ("t", until, "<")):
            if val is not None:
                q += f" AND {col} {op} ?"
                args.append(val)
        with self.lock:
            rows = self.db.execute(q + " ORDER BY t", args).fetchall()
        cols = ["sha256", "agent", "seq", "t", "model", "version", "pipeline", "reason", "verdict", "label",
                "label_state", "ext"]
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def heartbeat(self, agent: str, labels: dict, slots: list[dict], health: dict, outbox_depth: int) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO agents (id, labels, last_seen, slots, health, outbox_depth) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET labels=excluded.labels, last_seen=excluded.last_seen, "
                "slots=excluded.slots, health=excluded.health, outbox_depth=excluded.outbox_depth",
                (agent, json.dumps(labels), time.time(), json.dumps(slots), json.dumps(health), outbox_depth))

    def set_labels(self, labels: dict[str, str]) -> int:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                n = sum(self.db.execute("UPDATE samples SET label = ?, label_state = 'labelled' WHERE sha256 = ?",
                                        (label, sha)).rowcount for sha, label in labels.items())
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return n

    def agents(self) -> list[dict]:
        with self.lock:
            rows = self.db.execute("SELECT id, labels, last_seen, slots, health, outbox_depth FROM agents "
                                   "ORDER BY id").fetchall()
        return [{"id": i, "labels": json.loads(lab), "last_seen": ls, "slots": json.loads(sl),
                 "health": json.loads(h), "outbox_depth": od} for i, lab, ls, sl, h, od in rows]

    def close(self) -> None:
        self.db.close()
