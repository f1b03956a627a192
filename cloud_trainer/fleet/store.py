"""The fleet service's store: records, samples, agents. A small interface, SQLite and PostgreSQL.

``Store`` is what the service needs; ``SQLStore`` holds its logic in SQL both databases speak;
``SQLiteStore`` runs it on one file in the server's data folder (WAL, the default), and
``store_pg.PostgresStore`` on PostgreSQL (``open_store``: a ``postgresql://`` URL), with the same
schema (``(tenant, agent, epoch, seq)`` primary key, same queries). Ingest is idempotent: a
record replayed after a lost ack is stored once. The epoch is the agent's outbox incarnation: a
fresh outbox (after a corrupt file, say) numbers from 1 again in a new epoch, and its records are
new records, never replays.

Tenants: every method takes the tenant the caller acts in (keyword ``tenant``, the ``default`` tenant
when not given: a single-tenant setup never names one); every row carries it and every query filters
on it, so an agent id or a sample digest of one tenant is invisible to another. ``usage()`` gives the
platform operator per-tenant counts, never rows. Files from before tenants had tenant '' in every row;
opening one moves them to the default tenant.

Gaps are queryable per agent, each with its cause when the store knows it: the agent reports the
seqs it dropped (``outbox_budget`` / ``outbox_retention`` / ``outbox_write_failed`` / ``outbox_refused`` /
``outbox_damaged`` events with seq ranges), and an epoch change records the end of the previous epoch (after its last stored seq)
as an open-ended gap, ``epoch_change``, or ``outbox_corrupt`` once the agent's event says why.
Missing seqs nobody explained are ``unknown`` (possibly still on their way). An agent's account is bounded, as
the agent's outbox bounds it: at most ``LOSS_RANGES_PER_EVENT`` ranges of one event, ``LOSS_ROWS_PER_WRITE`` of
one write and ``LOSS_ROWS_PER_AGENT`` rows in all, the newest: past the agent's bound its oldest ranges told make
room (their seqs, when missing, show as ``unknown``), past the others the event's further ranges are not kept.
Counts, last seqs and gaps come
from ``record_counts`` (per agent, epoch and kind: records stored, lowest and highest seq, kept by ``ingest``), so
that the console's polling reads no record rows except those of an epoch that has holes. Samples are
content-addressed files through ``cloud_trainer.blobs`` (the tenant's blob store, given to ``ingest``).

Sample bytes are written by ``ingest`` itself: those of records not stored yet are written and synced under a
temporary name before the batch's transaction (``blobs.stage``: the write lock every tenant's writes wait for was
held for every sample's bytes and fsync, ~0.7-1.4 s for a batch of 64 samples of 64 KB beside other writes), and
become blobs inside it (a rename) only for records it stores now, after the tenant's quota has been charged: a
refused batch, a replay and a malformed record leave no blob (a replay stages nothing; what a refused batch
staged is dropped), so the tenant's ``max_sample_bytes_per_day`` bounds what its agents put in the (shared)
blob store. A blob without its row exists only when writing a batch that was within quota failed (a blob
store or database error); the agent was not acknowledged and sends those records again.

Malformed records are ``ValueError`` before anything is stored, the same in every store: a seq, epoch or
outbox depth outside 0..2^63-1 (what both databases hold), a time that is not a finite number, text with NUL
characters (PostgreSQL's text holds none), a sample whose payload is not a JSON object or whose metadata fields
that become columns (``SAMPLE_META_COLUMNS``: model, label, ...) are not strings of at most ``META_MAX_CHARS``
characters or null, a ``sample_ext`` of no kind in ``SAMPLE_KINDS`` (the agent uploads ``.png`` frames and
``.npy`` windows; the trainer's image kinds are taken too; any case, with or without the dot; none at all is
kept as data of no kind). A value the database refuses all the same (``_record_error``) is a ``ValueError`` naming the
record too, never the database's own exception: the service answers it ``INVALID_ARGUMENT`` and the agent drops
that record instead of sending the batch again forever.
"""

from __future__ import annotations

import abc
import bisect
import contextlib
import json
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloud_trainer.fleet import faults
from protocols.events import EventKind
from protocols.image_header import IMAGE_TYPES

log = logging.getLogger(__name__)
_REFUSED_VALUES = faults.FaultLog(
    log
)  # values the database refused, logged by reason (the agent gets the id)

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  tenant TEXT NOT NULL DEFAULT '', agent TEXT NOT NULL, epoch INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL,
  kind TEXT NOT NULL, t REAL NOT NULL, received REAL NOT NULL, payload TEXT NOT NULL,
  PRIMARY KEY (tenant, agent, epoch, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples (
  sha256 TEXT NOT NULL, tenant TEXT NOT NULL DEFAULT '', agent TEXT NOT NULL, epoch INTEGER NOT NULL DEFAULT 0,
  seq INTEGER NOT NULL, t REAL NOT NULL, model TEXT, version TEXT,
  pipeline TEXT, reason TEXT, verdict TEXT, label TEXT, label_state TEXT NOT NULL DEFAULT 'unlabelled',
  ext TEXT, PRIMARY KEY (tenant, agent, epoch, seq));
CREATE INDEX IF NOT EXISTS samples_by_model ON samples (model, label_state, reason, t);
CREATE INDEX IF NOT EXISTS samples_by_tenant ON samples (tenant, model, label_state, t);
CREATE INDEX IF NOT EXISTS samples_newest ON samples (tenant, model, t, seq);
CREATE INDEX IF NOT EXISTS samples_by_time ON samples (tenant, t, seq);
CREATE INDEX IF NOT EXISTS records_events ON records (tenant, t, agent, epoch, seq) WHERE kind IN ('event', 'alarm');
CREATE INDEX IF NOT EXISTS records_agent_events ON records (tenant, agent, t, epoch, seq)
  WHERE kind IN ('event', 'alarm');
CREATE TABLE IF NOT EXISTS agents (
  tenant TEXT NOT NULL, id TEXT NOT NULL, labels TEXT NOT NULL DEFAULT '{}', last_seen REAL,
  slots TEXT NOT NULL DEFAULT '[]', health TEXT NOT NULL DEFAULT '{}', outbox_depth INTEGER DEFAULT 0,
  outbox TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (tenant, id));
CREATE TABLE IF NOT EXISTS ingest (tenant TEXT NOT NULL, agent TEXT NOT NULL,
  duplicates INTEGER NOT NULL DEFAULT 0, epoch INTEGER, loss_rows INTEGER, PRIMARY KEY (tenant, agent));
"""
GAPS = """CREATE TABLE IF NOT EXISTS gaps (
  tenant TEXT NOT NULL DEFAULT '', agent TEXT NOT NULL, epoch INTEGER NOT NULL, first INTEGER NOT NULL,
  last INTEGER NOT NULL, cause TEXT NOT NULL, t REAL NOT NULL, PRIMARY KEY (tenant, agent, epoch, first, last));
CREATE INDEX IF NOT EXISTS gaps_epoch_ends ON gaps (tenant, agent, t) WHERE last = 0;
CREATE INDEX IF NOT EXISTS gaps_losses_by_t ON gaps (tenant, agent, t, epoch, first, last) WHERE last <> 0;
"""
# gaps_epoch_ends: the agent's epochs' ends by time, for the epochs it opened within EPOCH_WINDOW_S
# (``_epochs_ended``, in the write transaction of every batch opening an epoch, refused ones too): read over the
# primary key, that was every loss row of the agent (up to LOSS_ROWS_PER_AGENT), ~90 ms of the writer every tenant
# shares per refused 1-record batch at 100,000 (PostgreSQL migration 0019_gaps_epoch_ends.sql)
# gaps_losses_by_t: the agent's loss ranges (its account, up to LOSS_ROWS_PER_AGENT) by time, for the prune past its
# bound (``_note_loss``), which reads the oldest: without it every gaps row of the agent was read and sorted, its
# epochs' ends too (never deleted: 0.3-1.27 s of the writer every tenant shares at 3 M ends, 13-36 ms with it). Its
# cost: an index entry per loss range (a write telling 1,500 ranges past the bound ~14 ms more where the agent has few
# ends) (PostgreSQL migration 0022_gaps_losses_by_t.sql)
SCHEMA += GAPS
# per-tenant quotas set by the platform operator (0: no limit) and usage per UTC day (issue 19)
# (max_record_bytes_per_day and record_bytes: the bytes of the records' payloads; PostgreSQL migration
# 0013_tenant_record_bytes.sql, MIGRATIONS below for an older fleet.db)
QUOTAS = """CREATE TABLE IF NOT EXISTS tenant_quotas (tenant TEXT PRIMARY KEY, max_agents BIGINT NOT NULL DEFAULT 0,
  max_records_per_day BIGINT NOT NULL DEFAULT 0, max_sample_bytes_per_day BIGINT NOT NULL DEFAULT 0,
  max_record_bytes_per_day BIGINT NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS tenant_usage (tenant TEXT NOT NULL, day INTEGER NOT NULL, records BIGINT NOT NULL DEFAULT 0,
  sample_bytes BIGINT NOT NULL DEFAULT 0, record_bytes BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (tenant, day));
"""
SCHEMA += QUOTAS
# per agent, its records' payload bytes and sample bytes stored per UTC day, kept by ``ingest`` in the batch's
# transaction: the fleet service's per-agent day budgets (record_bytes_per_day, sample_bytes_per_day) start from them
# after a restart instead of from 0 (PostgreSQL migration 0012_agent_usage.sql). They read the current UTC day only:
# an agent's rows older than AGENT_USAGE_KEPT_DAYS are deleted in its first stored batch of a day (in each process),
# so the table holds at most that many rows per agent instead of one per agent and day for ever
AGENT_USAGE = """CREATE TABLE IF NOT EXISTS agent_usage (tenant TEXT NOT NULL, agent TEXT NOT NULL, day INTEGER NOT NULL,
  record_bytes BIGINT NOT NULL DEFAULT 0, sample_bytes BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (tenant, agent, day));
"""
SCHEMA += AGENT_USAGE
# Retention (``cloud-trainer serve --retain-days N``; docs/fleet-scale.md): ``retire`` deletes an agent's records and
# sample rows received before a time, the lowest seqs of an epoch first, in transactions of at most RETIRE_STEP_ROWS
# records, then the sample bytes no row of the tenant names any more. ``retired``: per agent and epoch, the seqs up to
# ``last_seq`` are retired (gaps are counted from past it, never shown lost) and how many records and samples went;
# ``retired_totals``: the same per agent (stats, usage, exports). ``samples_by_digest``: whether a row still names a
# digest (PostgreSQL has had it since 0001). PostgreSQL migration 0023_retired.sql. ``retiring``: the digests whose
# rows a step deleted and whose bytes it has still to delete (written with the rows' deletion, taken off with the
# bytes': a stop or kill between the two left files no row named, never deleted; migration 0024_retiring.sql)
RETIRED = """CREATE TABLE IF NOT EXISTS retired (tenant TEXT NOT NULL, agent TEXT NOT NULL, epoch BIGINT NOT NULL,
  last_seq BIGINT NOT NULL, records BIGINT NOT NULL DEFAULT 0, samples BIGINT NOT NULL DEFAULT 0,
  received_to REAL NOT NULL, PRIMARY KEY (tenant, agent, epoch));
CREATE TABLE IF NOT EXISTS retired_totals (tenant TEXT NOT NULL, agent TEXT NOT NULL, records BIGINT NOT NULL DEFAULT 0,
  samples BIGINT NOT NULL DEFAULT 0, received_to REAL NOT NULL, PRIMARY KEY (tenant, agent));
CREATE INDEX IF NOT EXISTS samples_by_digest ON samples (tenant, sha256);
CREATE TABLE IF NOT EXISTS retiring (tenant TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (tenant, sha256));
"""
SCHEMA += RETIRED
RETIRE_STEP_ROWS = (
    2000  # records one step of retention deletes at most (each epoch's part its own transaction)
)
# the least age ``serve --retain-days`` takes: a fat finger (0.0001: every record deleted seconds after it came) is
# refused, not obeyed; deletion cannot be taken back
RETAIN_DAYS_LEAST = 1.0
RETIRE_SCAN_EPOCHS = 256  # agents' epochs one step looks at, at most (a page of ``record_counts``)
# epochs whose retention step failed on their own rows that a store remembers having logged (``retire``; forgotten
# all at once past it: logged again)
RETIRE_FAILED_KEPT = 1000
RETIRE_IN_SEQS = 500  # seqs one statement of a retention step names (``seq IN (...)``)
# today's and the 6 days before, by the pruning process's clock: a week, so that a replica whose clock is days
# ahead (not a clock any replica runs with) still never deletes the others' today (kept 2, one 2 days ahead did)
AGENT_USAGE_KEPT_DAYS = 7
QUOTA_FIELDS = ("max_agents", "max_records_per_day", "max_sample_bytes_per_day", "max_record_bytes_per_day")
# per agent, epoch and kind: how many records are stored and their lowest and highest seq, kept by ``ingest`` in
# the batch's transaction, so that stats and gaps (the console's agents, every few seconds) need not read every
# record row; filled from the records once, when the table is created (an older file or database)
# The record kinds agents send (``Record.kind`` in protocols/fleet.proto; the agent's outbox holds no other). A record
# of any other kind is stored as sent (its row keeps its kind) and counted under OTHER_KIND, a kind no agent sends:
# one gateway sending 100,000 kinds of its own made 100,000 bookkeeping rows that every console refresh of its
# tenant's agents listed (6.9 MB, 6.1 s). Counted, not refused: a newer agent's new kind at an older service is
# kept, not dropped by the agent as a refused record.
RECORD_KINDS = ("event", "alarm", "result", "telemetry", "sample")
OTHER_KIND = "other"
_COUNTED_KIND = (
    f"CASE WHEN kind IN ({', '.join(repr(k) for k in RECORD_KINDS)}) THEN kind ELSE '{OTHER_KIND}' END"
)


def counted_kind(kind: str) -> str:
    """The kind a record is counted under in ``record_counts`` (stats' ``by_kind``): its own, or ``OTHER_KIND``."""
    return kind if kind in RECORD_KINDS else OTHER_KIND


# every agent's epochs counted from their records (``RECORD_COUNTS`` fills the table so, ``RECORD_COUNTS_AGAIN`` counts
# them again; ``WHERE true``: SQLite reads an upsert's ON CONFLICT after a bare FROM as a join's)
_COUNT_RECORDS = f"""INSERT INTO record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq, first_received)
  SELECT tenant, agent, epoch, {_COUNTED_KIND}, COUNT(*), MIN(seq), MAX(seq), MIN(received) FROM records
  WHERE true GROUP BY tenant, agent, epoch, {_COUNTED_KIND}"""
RECORD_COUNTS = f"""CREATE TABLE IF NOT EXISTS record_counts (tenant TEXT NOT NULL, agent TEXT NOT NULL,
  epoch BIGINT NOT NULL, kind TEXT NOT NULL, records BIGINT NOT NULL, first_seq BIGINT NOT NULL,
  last_seq BIGINT NOT NULL, first_received REAL NOT NULL DEFAULT 0, PRIMARY KEY (tenant, agent, epoch, kind));
{_COUNT_RECORDS};
"""
# ``record_counts`` counted again from the records (``_check_record_counts``), the rows of an epoch with none stored
# kept at 0 and aged never: an epoch retention emptied is told from a new one by its rows (``_new_epoch``), and with
# them deleted a batch of it sent again (its ack lost) was taken as the agent's new epoch, ending the live one (shown
# lost after its last seq for good). The rows already so are not written again (half the recount's time at 1 M records
# in 100,000 epochs and 100,000 emptied ones)
RECORD_COUNTS_AGAIN = f"""UPDATE record_counts SET records = 0, first_received = 9e999
  WHERE records <> 0 OR first_received <= 1e308;
{_COUNT_RECORDS}
  ON CONFLICT (tenant, agent, epoch, kind) DO UPDATE SET records = excluded.records, first_seq = excluded.first_seq,
  last_seq = excluded.last_seq, first_received = excluded.first_received;
"""
# ``first_received``: at most the receipt of the epoch's lowest stored record (0: not known yet, a row written by a
# service of before it), kept by ``ingest`` and ``retire``: retention reads only the epochs it may find old
# (``record_counts_by_age``), not every epoch with records at every pass (PostgreSQL migrations 0025, 0026)
RECORD_COUNTS_BY_AGE = (
    "CREATE INDEX IF NOT EXISTS record_counts_by_age ON record_counts (first_received, tenant, agent, epoch)"
)
# an epoch retention emptied has ``first_received`` inf (passed by); a record a service of before it counts into
# that epoch again (a rollback onto the file) leaves it so, and no pass read the epoch again: its age is marked not
# known (0) instead. Never ours: ``ingest`` sets the smaller of it and the receipt, ``retire`` leaves records 0 with it
# (PostgreSQL migration 0028; epochs left so before it was in the file: ``SQLITE_REPAIRS``)
RECORD_COUNTS_REOPENED = """CREATE TRIGGER IF NOT EXISTS record_counts_reopened AFTER UPDATE OF records ON record_counts
  WHEN NEW.records > 0 AND NEW.first_received > 1e308 BEGIN
  UPDATE record_counts SET first_received = 0
    WHERE tenant = NEW.tenant AND agent = NEW.agent AND epoch = NEW.epoch AND kind = NEW.kind;
END"""
# per agent and kind: its records stored in all, kept from ``record_counts`` by triggers (whoever writes that table: a
# service of before them too), so that an agent's stats (the console's agents view, every few seconds per agent, and
# IngestStats) read a row per kind, not one per epoch: an agent opening an epoch each 10 s for a month (259,200) took
# 0.2-0.7 s of the service's CPU per refresh. Filled from ``record_counts`` when it is created, and again at each open
# where their sums differ (PostgreSQL migration 0021_agent_counts.sql)
AGENT_COUNTS = """CREATE TABLE IF NOT EXISTS agent_counts (tenant TEXT NOT NULL, agent TEXT NOT NULL, kind TEXT NOT NULL,
  records BIGINT NOT NULL, PRIMARY KEY (tenant, agent, kind));
"""
AGENT_COUNTS_FILL = """DELETE FROM agent_counts;
INSERT INTO agent_counts (tenant, agent, kind, records)
  SELECT tenant, agent, kind, SUM(records) FROM record_counts GROUP BY tenant, agent, kind;
"""
_AGENT_COUNTS_ADD = """INSERT INTO agent_counts (tenant, agent, kind, records) VALUES (NEW.tenant, NEW.agent, NEW.kind,
    NEW.records) ON CONFLICT (tenant, agent, kind) DO UPDATE SET records = records + excluded.records;"""
_AGENT_COUNTS_TAKE = """UPDATE agent_counts SET records = records - OLD.records
    WHERE tenant = OLD.tenant AND agent = OLD.agent AND kind = OLD.kind;"""
AGENT_COUNTS_TRIGGERS = f"""CREATE TRIGGER IF NOT EXISTS agent_counts_add AFTER INSERT ON record_counts BEGIN
  {_AGENT_COUNTS_ADD}
END;
CREATE TRIGGER IF NOT EXISTS agent_counts_change AFTER UPDATE ON record_counts BEGIN
  {_AGENT_COUNTS_TAKE}
  {_AGENT_COUNTS_ADD}
END;
CREATE TRIGGER IF NOT EXISTS agent_counts_drop AFTER DELETE ON record_counts BEGIN
  {_AGENT_COUNTS_TAKE}
END;
"""
AGENT_COUNTS_UNTRIGGER = "".join(
    f"DROP TRIGGER IF EXISTS agent_counts_{t};" for t in ("add", "change", "drop")
)
# per agent: its sample rows in all, kept by triggers on ``samples`` (whoever writes it), so that an agent's stats
# (each console refresh, IngestStats) and the tenants' usage read a row per agent, not count every sample row (the
# agent's, at each refresh; every tenant's, at each ListTenants). Filled when it or one of its triggers is made (a
# fleet.db opened: its sample rows counted only then; PostgreSQL migration 0027_agent_samples.sql: a trigger per
# statement there)
AGENT_SAMPLES = """CREATE TABLE IF NOT EXISTS agent_samples (tenant TEXT NOT NULL, agent TEXT NOT NULL,
  samples BIGINT NOT NULL, PRIMARY KEY (tenant, agent));
"""
AGENT_SAMPLES_FILL = """DELETE FROM agent_samples;
INSERT INTO agent_samples (tenant, agent, samples) SELECT tenant, agent, COUNT(*) FROM samples GROUP BY tenant, agent;
"""
AGENT_SAMPLES_TRIGGERS = """CREATE TRIGGER IF NOT EXISTS agent_samples_add AFTER INSERT ON samples BEGIN
  INSERT INTO agent_samples (tenant, agent, samples) VALUES (NEW.tenant, NEW.agent, 1)
    ON CONFLICT (tenant, agent) DO UPDATE SET samples = samples + 1;
END;
CREATE TRIGGER IF NOT EXISTS agent_samples_take AFTER DELETE ON samples BEGIN
  UPDATE agent_samples SET samples = samples - 1 WHERE tenant = OLD.tenant AND agent = OLD.agent;
END;
"""
AGENT_SAMPLES_UNTRIGGER = (
    "DROP TRIGGER IF EXISTS agent_samples_add;DROP TRIGGER IF EXISTS agent_samples_take;"
)
# per agent and epoch: its records stored at or below its retired seqs (``retired.last_seq``: a record sent long after
# the records around it, a batch of retired seqs sent again), with their receipt, kept by a trigger on ``records``
# whoever writes it (a service of before it too): retention finds the old ones and an epoch's age through
# ``late_records_by_age``. Read from the records at or below the floor, a replay of 1,000,000 retired seqs, young,
# was read twice by every visit of its epoch (each step while the records above it retired) and once by each of
# the records' and samples' deletions. Rows go with their records' retirement (``_retire_epoch``); one whose record
# is gone otherwise is taken out when a pass finds it. Filled where it or a trigger is missing (a fleet.db opened;
# PostgreSQL migration 0032_late_records.sql)
LATE_RECORDS = """CREATE TABLE IF NOT EXISTS late_records (tenant TEXT NOT NULL, agent TEXT NOT NULL,
  epoch BIGINT NOT NULL, seq BIGINT NOT NULL, received REAL NOT NULL, PRIMARY KEY (tenant, agent, epoch, seq));
CREATE INDEX IF NOT EXISTS late_records_by_age ON late_records (tenant, agent, epoch, received);
"""
_LATE_FROM = """retired t JOIN records r ON r.tenant = t.tenant AND r.agent = t.agent AND r.epoch = t.epoch
  AND r.seq <= t.last_seq"""
LATE_RECORDS_FILL = f"""DELETE FROM late_records;
INSERT INTO late_records (tenant, agent, epoch, seq, received) SELECT r.tenant, r.agent, r.epoch, r.seq, r.received
  FROM {_LATE_FROM};
"""
# (the receipt followed where it is changed: by hand, a test making records old)
LATE_RECORDS_TRIGGERS = """CREATE TRIGGER IF NOT EXISTS late_records_add AFTER INSERT ON records
  WHEN NEW.seq <= (SELECT last_seq FROM retired WHERE tenant = NEW.tenant AND agent = NEW.agent AND epoch = NEW.epoch)
BEGIN
  INSERT OR IGNORE INTO late_records (tenant, agent, epoch, seq, received)
    VALUES (NEW.tenant, NEW.agent, NEW.epoch, NEW.seq, NEW.received);
END;
CREATE TRIGGER IF NOT EXISTS late_records_received AFTER UPDATE OF received ON records BEGIN
  UPDATE late_records SET received = NEW.received
    WHERE tenant = NEW.tenant AND agent = NEW.agent AND epoch = NEW.epoch AND seq = NEW.seq;
END;
"""
LATE_RECORDS_UNTRIGGER = (
    "DROP TRIGGER IF EXISTS late_records_add;DROP TRIGGER IF EXISTS late_records_received;"
)
# v1 files: records and samples keyed by (agent, seq); their rows become epoch 0 of tenant ''
MIGRATIONS = [
    (
        "records",
        "epoch",
        """
ALTER TABLE records RENAME TO records_v1;
CREATE TABLE records (
  tenant TEXT NOT NULL DEFAULT '', agent TEXT NOT NULL, epoch INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL,
  kind TEXT NOT NULL, t REAL NOT NULL, received REAL NOT NULL, payload TEXT NOT NULL,
  PRIMARY KEY (tenant, agent, epoch, seq)) WITHOUT ROWID;
INSERT INTO records (agent, seq, kind, t, received, payload) SELECT agent, seq, kind, t, received, payload
  FROM records_v1;
DROP TABLE records_v1;""",
    ),
    (
        "samples",
        "epoch",
        """
DROP INDEX IF EXISTS samples_by_model;
ALTER TABLE samples RENAME TO samples_v1;
CREATE TABLE samples (
  sha256 TEXT NOT NULL, tenant TEXT NOT NULL DEFAULT '', agent TEXT NOT NULL, epoch INTEGER NOT NULL DEFAULT 0,
  seq INTEGER NOT NULL, t REAL NOT NULL, model TEXT, version TEXT,
  pipeline TEXT, reason TEXT, verdict TEXT, label TEXT, label_state TEXT NOT NULL DEFAULT 'unlabelled',
  ext TEXT, PRIMARY KEY (tenant, agent, epoch, seq));
INSERT INTO samples (sha256, agent, seq, t, model, version, pipeline, reason, verdict, label, label_state, ext)
  SELECT sha256, agent, seq, t, model, version, pipeline, reason, verdict, label, label_state, ext FROM samples_v1;
DROP TABLE samples_v1;""",
    ),
    ("agents", "outbox", "ALTER TABLE agents ADD COLUMN outbox TEXT NOT NULL DEFAULT '{}';"),
    ("ingest", "epoch", "ALTER TABLE ingest ADD COLUMN epoch INTEGER;"),
    # tenants: agents and ingest become keyed by (tenant, id); rows of tenant '' move to the default tenant
    (
        "agents",
        "tenant",
        """
ALTER TABLE agents RENAME TO agents_v2;
CREATE TABLE agents (
  tenant TEXT NOT NULL, id TEXT NOT NULL, labels TEXT NOT NULL DEFAULT '{}', last_seen REAL,
  slots TEXT NOT NULL DEFAULT '[]', health TEXT NOT NULL DEFAULT '{}', outbox_depth INTEGER DEFAULT 0,
  outbox TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (tenant, id));
INSERT INTO agents SELECT 'default', id, labels, last_seen, slots, health, outbox_depth, outbox FROM agents_v2;
DROP TABLE agents_v2;""",
    ),
    (
        "ingest",
        "tenant",
        """
ALTER TABLE ingest RENAME TO ingest_v2;
CREATE TABLE ingest (tenant TEXT NOT NULL, agent TEXT NOT NULL,
  duplicates INTEGER NOT NULL DEFAULT 0, epoch INTEGER, PRIMARY KEY (tenant, agent));
INSERT INTO ingest SELECT 'default', agent, duplicates, epoch FROM ingest_v2;
DROP TABLE ingest_v2;""",
    ),
    # the agent's loss ranges kept (``gaps`` rows with last <> 0), kept by ``_note_loss``; NULL: counted at its next
    # loss write (PostgreSQL migration 0020_ingest_loss_rows.sql). After the table's rebuild for tenants above, whose
    # table has no such column: before it, a fleet.db of before tenants lost the column at its first open, and every
    # batch telling a loss failed ("no such column: loss_rows") until the service was started again
    ("ingest", "loss_rows", "ALTER TABLE ingest ADD COLUMN loss_rows INTEGER;"),
    (
        "record_counts",
        "first_received",
        "ALTER TABLE record_counts ADD COLUMN first_received REAL NOT NULL DEFAULT 0;",
    ),
    # the tenant's quota of record bytes per day and its usage (2026-12-05): 0, no limit, nothing counted before
    (
        "tenant_quotas",
        "max_record_bytes_per_day",
        "ALTER TABLE tenant_quotas ADD COLUMN max_record_bytes_per_day BIGINT NOT NULL DEFAULT 0;",
    ),
    (
        "tenant_usage",
        "record_bytes",
        "ALTER TABLE tenant_usage ADD COLUMN record_bytes BIGINT NOT NULL DEFAULT 0;",
    ),
]
# fleet.db's format as ``PRAGMA user_version``: a file of a higher format (written by a newer service) is refused
# at open, so that a service rolled back after an upgrade never writes to a schema it does not know. Releases
# before it (2026-12-02) did not look: they open a newer file and write without keeping its newer tables
# (``record_counts``; counted again at the next open of a newer service)
SQLITE_FORMAT = 1
DEFAULT_TENANT = "default"  # the same as cloud_trainer.pki.DEFAULT_TENANT
DROP_CAUSES = {
    EventKind.OUTBOX_BUDGET: "budget",
    EventKind.OUTBOX_RETENTION: "retention",
    EventKind.OUTBOX_WRITE_FAILED: "write_failed",
    EventKind.OUTBOX_REFUSED: "refused",
    EventKind.OUTBOX_DAMAGED: "damaged",
}
# a drop event's range ending at seq 0 written as an epoch's end (``SQLITE_REPAIRS``). A service of before
# 9034521b (a replica still running during a rolling upgrade, a rollback) writes such rows after the repair ran:
# every read of an epoch's ends passes them by (``_REAL_END``), and an epoch ending on one's seq takes its place
_DROP_CAUSES_SQL = ", ".join(f"'{c}'" for c in sorted(set(DROP_CAUSES.values())))
_TOLD_END = f"last = 0 AND cause IN ({_DROP_CAUSES_SQL})"
_REAL_END = f"last = 0 AND cause NOT IN ({_DROP_CAUSES_SQL})"


def _end_insert(replace: bool) -> str:
    """The statement writing an epoch's end (parameters: tenant, agent, epoch, first, cause, t). One already on that
    seq stays as it is (``replace``: takes the cause given); a drop event's row there (``_TOLD_END``) takes both."""
    told = f"gaps.cause IN ({_DROP_CAUSES_SQL})"
    return (
        "INSERT INTO gaps (tenant, agent, epoch, first, last, cause, t) VALUES (?,?,?,?,0,?,?) "
        "ON CONFLICT (tenant, agent, epoch, first, last) DO UPDATE SET cause = excluded.cause, "
        + (
            f"t = CASE WHEN {told} THEN excluded.t ELSE gaps.t END"
            if replace
            else f"t = excluded.t WHERE {told}"
        )
    )


# An epoch's real end such a row took the place of stays, as the epoch_change end it was: written on it (the same
# first: ``_end_epoch``'s ON CONFLICT DO NOTHING) or moved with it past a late batch (``_move_end`` kept the cause of
# the end with the higher first). It is the one at the seq after the epoch's last stored or retired one (where those two
# put an end), of an epoch with records counted that is not the agent's current and has no end of a real cause
# (PostgreSQL migration 0031 the same, with GREATEST)
KEEP_REAL_END = """UPDATE gaps SET cause = 'epoch_change' WHERE {told}
  AND NOT EXISTS (SELECT 1 FROM ingest i WHERE i.tenant = gaps.tenant AND i.agent = gaps.agent AND i.epoch = gaps.epoch)
  AND EXISTS (SELECT 1 FROM record_counts c WHERE c.tenant = gaps.tenant AND c.agent = gaps.agent
    AND c.epoch = gaps.epoch)
  AND NOT EXISTS (SELECT 1 FROM gaps e WHERE e.tenant = gaps.tenant AND e.agent = gaps.agent AND e.epoch = gaps.epoch
    AND e.last = 0 AND e.cause IN ('epoch_change', 'outbox_corrupt'))
  AND first - 1 = {greatest}(COALESCE((SELECT MAX(r.seq) FROM records r WHERE r.tenant = gaps.tenant
    AND r.agent = gaps.agent AND r.epoch = gaps.epoch), 0), COALESCE((SELECT t.last_seq FROM retired t
    WHERE t.tenant = gaps.tenant AND t.agent = gaps.agent AND t.epoch = gaps.epoch), 0));
"""
GAPS_TOLD_ENDS = f"""UPDATE ingest SET loss_rows = NULL WHERE EXISTS (SELECT 1 FROM gaps g WHERE g.tenant = ingest.tenant
  AND g.agent = ingest.agent AND g.{_TOLD_END.replace("cause", "g.cause")});
{KEEP_REAL_END.format(told=_TOLD_END, greatest="MAX")}DELETE FROM gaps WHERE {_TOLD_END};
"""
# one-time repairs of a fleet.db, each run at an open in a transaction with its row in ``store_repairs`` (its name):
# a file of before one gets it at its next open, and later opens look the names up only (the statements are idempotent
# anyway). PostgreSQL's are in its numbered migrations
STORE_REPAIRS = "CREATE TABLE IF NOT EXISTS store_repairs (name TEXT PRIMARY KEY, applied REAL NOT NULL)"
SQLITE_REPAIRS = (
    # epochs retention emptied (first_received inf) that a service of before first_received counted records into
    # before RECORD_COUNTS_REOPENED was in the file: no pass read them again, their records were kept for good
    # (PostgreSQL migration 0028's UPDATE). Through ``record_counts_by_age``: its inf entries only (one per emptied
    # epoch and kind: 100,000 in 18 ms here, once a file: bench/fleet_sqlite_repair_bench.py)
    (
        "record_counts_reopened",
        "UPDATE record_counts SET first_received = 0 WHERE first_received > 1e308 AND records > 0",
    ),
    # a drop event's range ending at seq 0, written as an epoch's end (last 0) of a drop cause before ``_note_loss``
    # took ranges from seq 1 only (PostgreSQL migration 0031): deleted, its agent's loss rows counted again
    ("gaps_told_ends", GAPS_TOLD_ENDS),
)


INT64_MAX = 2**63 - 1  # the largest integer SQLite and PostgreSQL (BIGINT) hold
# An agent's own account of its losses (``_note_loss``) is one ``gaps`` row per seq range, a row the quotas do not
# count: one 6.4-MB event of 200,000 ranges wrote 47 MB of rows and held the store's writer for 6 s, every tenant's
# batches waiting behind it. So: the ranges of one event its outbox sends at most (edge_agent's MAX_RANGES), of one
# write, and of one agent in all (~25 MB of rows at most); past the first two, ranges are not kept and a missing seq
# among them shows as ``unknown``; past the agent's, its oldest ranges told make room (rows are never deleted
# otherwise: a lifetime bound took nothing more from a gateway whose drops, one range per dropped record between
# kept ones, reached it in hours of one outage, and showed every later loss it told as ``unknown``)
LOSS_RANGES_PER_EVENT = 2000
LOSS_ROWS_PER_WRITE = 10_000
LOSS_ROWS_PER_AGENT = 100_000
LOSS_CUT_LOG_S = 60.0  # a cut account is logged at most this often (naming the agent)
# an event longer than this is not read for an account of losses (the outbox's, of 2,000 ranges, is ~50 KB): parsed in
# the write transaction, 14-MB events of 7 million values from one agent held every tenant's writes (another tenant's
# one-record batch: median 1.4 s, against 0.06 s beside 14-MB events that are not read)
LOSS_EVENT_MAX_CHARS = 256 * 1024
# An agent opens a new epoch only when its outbox starts afresh (a corrupt file, a new disk): each one is an epoch's
# end (a ``gaps`` row) and its own ``record_counts`` rows, read by every gap list. 20,000 epochs of one record each
# (one batch, 1.6 s to push) made 40,000 rows and an IngestStats of 40,000 gaps. So an agent may open at most
# EPOCHS_PER_WINDOW new epochs within EPOCH_WINDOW_S (counted by the epochs' ends the store wrote then: an
# ``epoch_change``, or an ``outbox_corrupt`` event naming an epoch): a batch opening one more is refused
# (``TooManyEpochs``, RESOURCE_EXHAUSTED: the agent keeps it and sends it again later), an ``outbox_corrupt`` event
# naming one more epoch is stored without ending it. A rate, not a lifetime bound: a gateway whose disk fails
# now and then is never shut out for good.
# Past the bound a write (one transaction of a batch) still opens ONE epoch, counted (``epochs_24h`` of the agent's
# stats, on the console) and logged once a minute per agent: an agent whose data folder is not kept across container
# restarts opens an epoch at each start, and its records, refused past the bound, were lost with the folder at the
# next restart. An outbox sends its current epoch only, so a real agent's batch never opens two; a gateway opening
# epochs past the bound opens one per write at most, each with a record of its own, and EPOCHS_MOST_PER_WINDOW in all.
EPOCHS_PER_WINDOW = 24
EPOCH_WINDOW_S = 86400.0
EPOCHS_PAST_LOG_S = 60.0  # an agent opening epochs past the bound is logged at most this often (each agent)
# The most epochs an agent opens within EPOCH_WINDOW_S: a write opening one more is refused (``TooManyEpochs``, as a
# batch opening two past EPOCHS_PER_WINDOW), whatever it carries. One each 10 s for a day: a container engine restarts
# a crashing container that fast at most (Docker resets its restart delay to 100 ms only after 10 s of running, and
# doubles it up to 1 min below that; Kubernetes' CrashLoopBackOff waits 10 s to 5 min by default), so an agent whose
# data folder is not kept, restarted in a loop, still has its records of each start stored (1,440, one a minute,
# refused one restarted every 10-59 s). Past EPOCHS_PER_WINDOW a gateway opened one epoch a write, bounded by nothing
# but the writer's speed (400-800 a second here): each an epoch's end and its ``record_counts`` rows, kept for good. A
# write counts the agent's epochs of the window up to this many only (``_epochs_ended``: every write opening one
# counted them all in the writer every tenant shares, and a gateway at 300,000 made another tenant's writes 5x
# slower): a refused write ~0.7 ms at the most, through the ends' index; the agent's stats too (``epochs_24h_more``
# past it)
EPOCHS_MOST_PER_WINDOW = 8640
# what a record costs a write besides its payload (its key, columns, index entries), for INGEST_CHUNK_BYTES
INGEST_RECORD_BYTES = 256


def _payload_bytes(r: dict) -> int:
    """A record's payload bytes as the agent sent them (``payload_bytes``, given by the service), else of its text."""
    n = r.get("payload_bytes")
    return int(n) if n is not None else len(str(r["payload"]).encode("utf-8", "surrogatepass"))


def _int64(v) -> int | None:
    """``v`` as a stored integer, or None when it is not an integer in 0..INT64_MAX."""
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= INT64_MAX else None


# the sample's metadata fields that become columns of ``samples`` (metadata key -> column), and how long each may be
SAMPLE_META_COLUMNS = {
    "model": "model",
    "model_version": "version",
    "pipeline": "pipeline",
    "reason": "reason",
    "verdict": "verdict",
    "label": "label",
}
META_MAX_CHARS = 1024

# the kinds of sample the fleet takes (extension -> media type the console serves it as): the agent's camera frames
# (.png), its signal windows (.npy) and the other image kinds the trainer reads. Nothing else: the extension is
# shown, served and written into exported file names, so a '../', a NUL or an '.html' never gets that far
SAMPLE_KINDS = {**{e: mime for e, (mime, _) in IMAGE_TYPES.items()}, ".npy": "application/octet-stream"}


def sample_kind(ext: str | None) -> str | None:
    """The kind (``SAMPLE_KINDS`` key) of a sample stored under ``ext`` in any case, with or without its dot
    (``.PNG``, ``npy``), or None when it is of none (no extension, ``.bin``, ``../x``)."""
    if not ext or not isinstance(ext, str):
        return None
    e = ext.lower() if ext.startswith(".") else "." + ext.lower()
    return e if e in SAMPLE_KINDS else None


def _text_problem(v, max_chars: int | None = None) -> str | None:
    """Why ``v`` cannot be a TEXT column of both databases, or None: not a string, NUL characters (PostgreSQL's
    text holds none), longer than ``max_chars``."""
    if not isinstance(v, str):
        return f"must be a string, not {type(v).__name__}"
    if "\x00" in v:
        return "must not contain NUL characters"
    if max_chars is not None and len(v) > max_chars:
        return f"is {len(v)} characters long, at most {max_chars}"
    return None


def record_problem(kind, t, payload) -> str | None:
    """Why a record's own columns (kind, time, payload) cannot be stored, or None."""
    if why := _text_problem(kind, 64):
        return f"kind {why}"
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        return f"t {t!r} is not a finite number (seconds since the epoch)"
    if why := _text_problem(payload):
        return f"payload {why}"
    return None


def meta_problem(meta: dict, ext="") -> str | None:
    """Why a sample's metadata cannot be stored in its columns, or None: each of ``SAMPLE_META_COLUMNS`` is a
    string of at most ``META_MAX_CHARS`` characters or null (a list, an object, a number is refused by name)."""
    for key in SAMPLE_META_COLUMNS:
        v = meta.get(key)
        if v is not None and (why := _text_problem(v, META_MAX_CHARS)):
            return f"its metadata field {key!r} {why} (or null)"
    if ext and sample_kind(ext) is None:
        shown = repr(ext[:40]) + ("..." if len(ext) > 40 else "")
        return (
            f"its sample_ext {shown} is no kind the fleet takes ({', '.join(SAMPLE_KINDS)}, any case, with or "
            "without the dot): the agent uploads .png frames and .npy windows"
        )
    return None


def check_record(r: dict) -> dict | None:
    """``ValueError`` naming the field for a record no store can hold; the sample's metadata (its payload,
    a JSON object) for a sample record, else None."""
    for field in ("seq", "epoch"):
        v = r.get(field) or 0
        if _int64(v) is None:
            raise ValueError(f"record seq {r.get('seq')}: {field} {v!r} is not an integer in 0..{INT64_MAX}")
    if why := record_problem(r.get("kind"), r.get("t"), r.get("payload")):
        raise ValueError(f"record seq {r['seq']}: {why}")
    if r.get("kind") != "sample" or not r.get("sample_sha256"):
        return None
    try:
        meta = json.loads(r.get("payload") or "{}")
    except (ValueError, RecursionError):
        meta = None
    if not isinstance(meta, dict):
        raise ValueError(f"sample seq {r['seq']}: its payload must be a JSON object (the sample's metadata)")
    if why := meta_problem(meta, r.get("sample_ext") or ""):
        raise ValueError(f"sample seq {r['seq']}: {why}")
    return meta


# the holes between an epoch's stored seqs that ``gaps`` lists, at most: the newest (highest seqs). An agent's 300,000
# records at every other seq made 300,000 holes, built into a gap list (0.7 s of CPU) at each console refresh of its
# tenant's agents and each IngestStats, which answer the newest 1,000 and 10,000 of them; the records are still read
HOLES_READ = 10_000
# ``gaps(newest=N)`` reads an agent's epochs from the highest down, this many at first, twice as many each time after,
# up to GAPS_PAGE_EPOCHS_MAX, until it has N gaps
GAPS_PAGE_EPOCHS = 64
GAPS_PAGE_EPOCHS_MAX = 4096
# ``gaps``: the epochs retention cut that hold records, their lowest stored seqs read this many a statement
GAPS_FIRST_SEQS_PER_STATEMENT = 500
EVENTS_SCANNED = 2000  # event rows one ``events`` call reads at most (a kind filter reads past other kinds)
# An event's payload is the agent's text, as long as a batch (16 MB): the console reads at most EVENT_PAYLOAD_CHARS of
# each (an outbox drop event of 2,000 seq ranges is ~50 K; past it, the payload is that much of its text and the
# event is ``truncated``), at most EVENTS_READ_CHARS of payloads per call (a page ends early there, with ``next``),
# and EVENTS_FETCH rows per query: one agent's oversized events cost a console answer a few MB, not GBs.
EVENT_PAYLOAD_CHARS = 64 * 1024
EVENTS_READ_CHARS = 4 * 1024 * 1024
EVENTS_FETCH = 200


def event_token(key: tuple) -> str:
    """The cursor of the page after the row keyed ``(t, agent, epoch, seq)``: ``t,epoch,seq,agent`` (the agent
    last: an id may hold commas)."""
    t, agent, epoch, seq = key
    return f"{float(t)!r},{int(epoch)},{int(seq)},{agent}"


def event_cursor(token: str) -> tuple[float, str, int, int]:
    """``(t, agent, epoch, seq)`` of a cursor ``event_token`` wrote; ``ValueError`` naming it otherwise."""
    try:
        t, epoch, seq, agent = token.split(",", 3)
        key = (float(t), agent, int(epoch), int(seq))
    except ValueError:
        raise ValueError(f"before {token[:80]!r} is not a cursor this service gave (its 'next')") from None
    # an agent id holds no NUL (PostgreSQL's text cannot: the query would fail, not answer)
    if not math.isfinite(key[0]) or _int64(key[2]) is None or _int64(key[3]) is None or "\0" in agent:
        raise ValueError(f"before {token[:80]!r} is not a cursor this service gave (its 'next')")
    return key


def event_dict(t, agent, epoch, seq, record_kind, payload) -> dict:
    """One stored event as the console lists it: its identity, its kind and ``active`` (when its payload says so)
    and the payload itself. A payload that is no JSON object (the agent's text, stored as sent) keeps its text."""
    try:
        body = json.loads(payload) if payload else None
    except (ValueError, RecursionError):
        body = payload
    d = body if isinstance(body, dict) else {}
    kind = d.get("kind") if isinstance(d.get("kind"), str) else record_kind
    active = d.get("active") if isinstance(d.get("active"), bool) else None
    return {
        "agent": agent,
        "epoch": epoch,
        "seq": seq,
        "t": t,
        "record": record_kind,
        "kind": kind,
        "active": active,
        "payload": body,
    }


def _disjoint(known: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """``known`` losses sorted and made disjoint: a range overlapping an earlier one keeps only its part past the
    earlier ones' end (the earlier range's cause holds where they overlap, as ``_subtract`` always took it)."""
    out: list[tuple[int, int, str]] = []
    end = -1
    for a, b, cause in sorted(known):
        if (a := max(a, end + 1)) <= b:
            out.append((a, b, cause))
            end = b
    return out


def _subtract(
    first: int, last: int, known: list[tuple[int, int, str]], ends: list[int]
) -> list[tuple[int, int, str]]:
    """Split the missing range [first, last] into pieces explained by ``known`` (``_disjoint``; ``ends``: their
    last seqs) and ``unknown`` ones. From the first known range reaching ``first`` (a bisection): walking every known
    range for each hole cost holes x known, 6.8 s of CPU for one agent's 1,000 holes beside 200,000 known ranges."""
    out, at = [], first
    for a, b, cause in known[bisect.bisect_left(ends, first) :]:
        if a > last:
            break
        if a > at:
            out.append((at, a - 1, "unknown"))
        out.append((max(a, at), min(b, last), cause))
        at = min(b, last) + 1
        if at > last:
            break
    if at <= last:
        out.append((at, last, "unknown"))
    return out


T = DEFAULT_TENANT
_loss_cut_logged = [float("-inf")]


def _loss_cut(tenant: str, agent: str, cut: int, what: str) -> None:
    """Log (at most every ``LOSS_CUT_LOG_S``) that an agent's loss event went past the store's bounds: ``cut`` of its
    ranges not kept, or ``what`` of it was not read."""
    if (now := time.monotonic()) - _loss_cut_logged[0] >= LOSS_CUT_LOG_S:
        _loss_cut_logged[0] = now
        log.warning(
            "agent %s (tenant %s): %s (at most %d ranges an event, %d a write, %d an agent, %d characters an event); "
            "missing seqs it names show as unknown (logged at most every %g s)",
            agent,
            tenant,
            what or f"{cut} seq ranges of an outbox loss event were not kept",
            LOSS_RANGES_PER_EVENT,
            LOSS_ROWS_PER_WRITE,
            LOSS_ROWS_PER_AGENT,
            LOSS_EVENT_MAX_CHARS,
            LOSS_CUT_LOG_S,
        )


_epochs_past_logged: dict[tuple[str, str], float] = {}  # (tenant, agent) -> when last logged (monotonic)
_epochs_past_lock = threading.Lock()  # (the store's writers are threads)


def _epochs_past(tenant: str, agent: str, n: int, epoch: int) -> None:
    """Log (at most every ``EPOCHS_PAST_LOG_S`` per agent) that an agent opened an epoch past ``EPOCHS_PER_WINDOW``."""
    now, key = time.monotonic(), (tenant, agent)
    with _epochs_past_lock:
        if now - _epochs_past_logged.get(key, float("-inf")) < EPOCHS_PAST_LOG_S:
            return
        if len(_epochs_past_logged) >= 10_000:  # many agents: forget those not logged within the minute
            for k in [k for k, t in _epochs_past_logged.items() if now - t >= EPOCHS_PAST_LOG_S]:
                del _epochs_past_logged[k]
        _epochs_past_logged[key] = now
    log.warning(
        "agent %s (tenant %s): epoch %d stored, %d epochs its outbox opened within %g h (an outbox starts a new one "
        "only afresh: a data folder not kept across restarts (mount it: docs/quotas.md), a failing disk, or no "
        "gateway of ours); stored and counted (epochs_24h), said at most every %g s",
        agent,
        tenant,
        epoch,
        n,
        EPOCH_WINDOW_S / 3600,
        EPOCHS_PAST_LOG_S,
    )


class GapList(list):
    """``Store.gaps(newest=N)``'s answer: the newest gaps, and how many it left out (None: older epochs not read)."""

    def __init__(self, gaps=(), left_out: int | None = 0) -> None:
        super().__init__(gaps)
        self.left_out = left_out


class Reports(list):
    """``Store.heartbeat_many``'s answer: the (tenant, agent) of the reports held for a later flush, in ``stale``
    those of the held-back reports not written because their agent's row holds a newer report, and in ``other``
    (tenant, agent, the row's run: its boot id, '' for none) those of the reports written only over their own run
    (10th item true) not written: the row holds another run, or a report of the same run numbered as high."""

    def __init__(self, held=(), stale=(), other=()) -> None:
        super().__init__(held)
        self.stale: list[tuple[str, str]] = list(stale)
        self.other: list[tuple[str, str, str]] = list(other)


class TenantQuotaExceeded(Exception):
    """A tenant's quota (set by the platform operator) would be passed; nothing of the request was stored."""


class TooManyEpochs(Exception):
    """The agent opened ``EPOCHS_PER_WINDOW`` epochs within ``EPOCH_WINDOW_S``: its batch opening two more is refused,
    and past ``EPOCHS_MOST_PER_WINDOW`` one opening any (nothing of that range stored); the service answers
    RESOURCE_EXHAUSTED, marked ``epochs-per-day``, and counts it."""


class AgentRowsLocked(Exception):
    """Another session of the database holds the agent's ``ingest`` row lock past the store's wait for it (an admin's
    open transaction, a stuck migration, a writer's session that hangs): nothing of the batch was stored, and the
    agent sends it again later. Waiting on, the write held one of the store's few pooled connections (PostgreSQL):
    4 tenants whose rows were locked held all 8, and every other tenant's writes failed for want of one."""


# how long a store trusts what its last refusal of a tenant's batch read of the tenant's quotas and usage of the day
# (``SQLStore._spent``): within it a batch that holds a record not stored yet and would pass a quota by those numbers
# is refused before its samples are staged or the writer is taken; QUOTA_TTL_S of the service, for the same reason
# (a quota raised through another replica is seen after it; through this store at once)
SPENT_TTL_S = 5.0
# a memo is kept only if no quota of its tenant was set since its batch began (``SQLStore._keep_spent``)
_SPENT_LOCK = threading.Lock()


def _over_quota(tenant: str, limit: int, n: int, added: int, what: str) -> TenantQuotaExceeded:
    """The refusal of a batch that adds ``added`` ``what`` to the tenant's ``n`` of the day (with it) past
    ``limit``."""
    alone = (
        "; the batch alone is larger than the quota: it is stored once the operator raises it"
        if added > limit
        else ""
    )
    return TenantQuotaExceeded(
        f"tenant {tenant}: this batch ({added} {what}) would pass the tenant's quota of {limit} {what} "
        f"per day ({n - added} used or reserved today); nothing of it was stored: "
        "the agent keeps it in its outbox and sends it after 00:00 UTC or once the platform operator "
        f"raises the quota{alone}"
    )


_QUOTA_WHAT = ("records", "bytes of samples", "bytes of records")


class Reservation:
    """What a batch charged to its tenant's usage of the day before its transaction (PostgreSQL, a tenant with a
    quota: ``PostgresStore._reserve``): ``amount`` (records, sample bytes, record bytes), and whether the batch's
    transaction reached its commit (``written``: a failure after that point may have committed, so the amount is
    not given back)."""

    def __init__(self, amount: tuple[int, int, int]) -> None:
        self.amount = amount
        self.written = False


class ShortReservation(Exception):
    """The batch's transaction found more new records than its reservation counted (records deleted since the
    reservation read them, e.g. by retention): rolled back before any sample's upload; ``added`` is what it
    adds."""

    def __init__(self, added: tuple[int, int, int]) -> None:
        super().__init__(added)
        self.added = added


def _judge(
    tenant: str, limits: tuple[int, ...], before: tuple[int, ...], added: tuple[int, ...], day: int
) -> None:
    """``TenantQuotaExceeded`` when ``added`` (records, sample bytes, record bytes) on the tenant's usage of the day
    ``before`` passes one of its ``limits`` (0: none); its ``usage`` is what ``_refuse_early`` judges the tenant's next
    batches by, for SPENT_TTL_S."""
    for limit, n, a, what in zip(limits, before, added, _QUOTA_WHAT, strict=True):
        if limit and n + a > limit:
            exc = _over_quota(tenant, limit, n + a, a, what)
            exc.usage = (day, tuple(limits), tuple(before))  # type: ignore[attr-defined]
            raise exc


def utc_day(t: float | None = None) -> int:
    return int((time.time() if t is None else t) // 86400)


class Store(abc.ABC):
    """What the fleet service needs of its store. Every method acts within one tenant (keyword ``tenant``)."""

    # the time a record's receipt is stamped with (``received``: retention's age); the fleet service gives one that
    # never goes back while it runs (``FleetServer._received_now``): the clock set back a while, then right again,
    # stamped what came meanwhile that much older, and retention deleted it young. None: the wall clock
    received_clock: Callable[[], float] | None = None

    @abc.abstractmethod
    def ingest(
        self, agent: str, records: list[dict], *, tenant: str = T, blobs=None, newly: list[int] | None = None
    ) -> tuple[list[int], int, int]:
        """Store records idempotently; return (acknowledged seqs, newly stored, duplicates). A sample record may
        carry its bytes (``sample_data``): they go to ``blobs`` (the tenant's blob store) only if the record is
        stored now and within the tenant's quota. ``ValueError`` (nothing stored) for a malformed record,
        ``TenantQuotaExceeded`` (nothing stored) past the tenant's quota. ``newly`` (a list) receives the indexes
        in ``records`` of the records this call stored, as each transaction commits: on a refusal or failure in a
        later range it holds those of the ranges before that this call stored (not their duplicates)."""

    @abc.abstractmethod
    def gaps(self, agent: str, *, tenant: str = T, newest: int | None = None) -> list[dict]:
        """Seqs the store lacks, per epoch: ``{"epoch", "first", "last", "cause"}`` (``last`` 0: open-ended), by
        epoch and first seq. ``newest``: the last ``newest`` of that list only, built from the highest epochs down
        (a ``GapList``: ``left_out`` says how many it left out, None where older epochs were not read)."""

    @abc.abstractmethod
    def stats(self, agent: str | None = None, *, tenant: str = T) -> dict: ...

    def retired(self, *, tenant: str = T) -> dict:
        """``stats(tenant=tenant)["retired"]`` alone: what retention deleted of the tenant's (its ``records`` and
        ``samples``, received up to ``received_to``)."""
        return dict(self.stats(tenant=tenant).get("retired") or {})

    @abc.abstractmethod
    def records(
        self, agent: str, kind: str | None = None, since_seq: int = 0, limit: int = 1000, *, tenant: str = T
    ) -> list[dict]: ...

    @abc.abstractmethod
    def events(
        self,
        *,
        tenant: str = T,
        agent: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> tuple[list[dict], str | None]:
        """The tenant's events (records of kind ``event`` or ``alarm``), newest first (time, agent, epoch, seq),
        at most ``limit``, with the cursor of the next page (``before``) or None when no older event remains."""

    @abc.abstractmethod
    def samples(
        self,
        model: str | None = None,
        label_state: str | None = None,
        reason: str | None = None,
        since: float | None = None,
        until: float | None = None,
        *,
        tenant: str = T,
        limit: int | None = None,
    ) -> list[dict]:
        """The tenant's samples matching the filters, oldest first (by time, then seq); with ``limit``, only the
        newest ``limit`` of them (still oldest first: ``samples(...)[-limit:]``, without reading the others)."""

    @abc.abstractmethod
    def heartbeat(
        self,
        agent: str,
        labels: dict,
        slots: list[dict],
        health: dict,
        outbox_depth: int,
        outbox: dict | None = None,
        *,
        tenant: str = T,
        over: str | None = None,
    ) -> bool:
        """One agent's state report, written over its row (but over a later report of its run: ``_report_order``);
        with ``over``, only where the row holds a report of its own run, none, or of run ``over`` (a run found to have
        begun before it; ``""``: none such). Whether it was written."""

    def heartbeat_many(self, rows: list[tuple]) -> list[tuple[str, str]]:
        """Many state reports at once: ``(tenant, agent, labels, slots, health, outbox_depth, outbox, t)`` each
        (the streams' coalesced writes), with a 9th item ``True`` for a report held back at an earlier flush and
        written again: that one is written only over an older report of its agent (``t``; another replica's
        stream or a unary heartbeat may have written a newer one meanwhile), the others are written as they come;
        a 10th item ``True`` (or ``""``): written only over a report of its own run (or none; ``Reports.other``), a run
        id: over that run's too (one its service found to have begun before it, ``heartbeat``'s ``over``). Returns the (tenant, agent) of the reports not written because another transaction holds their agent's
        row (PostgreSQL; they are written at a later flush): the others are, but for the held-back reports found
        older than their agent's row, whose keys are the returned list's ``stale``."""
        for tenant, agent, labels, slots, health, depth, outbox, _t, *_ in rows:
            self.heartbeat(agent, labels, slots, health, depth, outbox, tenant=tenant)
        return Reports()

    @abc.abstractmethod
    def agents(self, *, tenant: str = T) -> list[dict]: ...

    def report_held(self, agent: str, *, tenant: str = T) -> tuple[str, int] | None:
        """The run (boot id) and number of the state report the agent's row holds (v4 agents), or None: a run's
        reports numbered at or below it are not written over it (``SQLStore._report_order``)."""
        return None

    def agent_groups(self, *, tenant: str = T) -> list[dict]:
        """The tenant's agents with their ``id``, ``labels``, ``slots``, ``last_seen`` and, of the outbox figures,
        only the report's number (``outbox["report"]``, v4 agents): what a rollout's group and a stalled step are
        read from (without each agent's health and outbox figures)."""
        return self.agents(tenant=tenant)

    @abc.abstractmethod
    def set_labels(self, labels: dict[str, str], *, tenant: str = T) -> int:
        """Record ground-truth labels by sample SHA-256 (label_state 'labelled'); return rows changed."""

    @abc.abstractmethod
    def has_sample(self, sha256: str, *, tenant: str = T) -> bool:
        """Whether the tenant holds a sample with this digest (the only blobs its admins may read)."""

    @abc.abstractmethod
    def sample_ext(self, sha256: str, *, tenant: str = T) -> str | None:
        """The extension the tenant's sample with this digest was uploaded under (``""`` for none), or None when
        the tenant holds no such sample."""

    @abc.abstractmethod
    def usage(self) -> dict[str, dict]:
        """Per tenant: agents, records, samples (counts only; the platform operator's view)."""

    def waiting_at_most(self, seconds: float) -> contextlib.AbstractContextManager:
        """Calls made meanwhile wait at most ``seconds`` for the store (``StreamHub.stop``'s last flush with the
        database down); a store that does not wait for a connection waits no less."""
        return contextlib.nullcontext()

    def close(self) -> None:  # noqa: B027 (optional: a store that holds nothing has nothing to release)
        """Release the store's connections (the fleet service calls it when it stops)."""

    @abc.abstractmethod
    def set_quota(self, tenant: str, **limits: int) -> dict:
        """Set some of a tenant's quotas (``QUOTA_FIELDS``; 0: no limit); return all of them."""

    @abc.abstractmethod
    def quotas(self) -> dict[str, dict]:
        """Per tenant with a quota or usage today: its limits and ``records_today``, ``sample_bytes_today``,
        ``record_bytes_today`` (the bytes of its records' payloads)."""

    def agent_usage(self, agent: str, day: int, *, tenant: str = T) -> tuple[int, int]:
        """The agent's records' payload bytes and sample bytes stored on UTC ``day`` (days since the epoch)."""
        return 0, 0

    def newest_seen(self) -> float | None:
        """The latest time an agent was seen, by the clock of the process that saw it (None: no agent yet)."""
        return None

    def retire(
        self,
        before: float,
        *,
        blobs=None,
        after: tuple | None = None,
        most: int = RETIRE_STEP_ROWS,
        halt: threading.Event | None = None,
    ) -> dict:
        """One step of retention (``SQLStore.retire``): {records, samples, blobs retired, after}."""
        raise NotImplementedError(f"{type(self).__name__} keeps everything (no retention)")

    @abc.abstractmethod
    def admit_agent(self, agent: str, *, tenant: str = T) -> None:
        """Register ``agent`` if the tenant's ``max_agents`` allows it (``TenantQuotaExceeded`` otherwise); an agent
        already registered is always admitted."""


class SQLStore(Store):
    """The store's logic in SQL that SQLite and PostgreSQL both speak (``?`` placeholders, translated by
    ``q`` for PostgreSQL); a backend gives ``_tx()`` (one transaction: yields ``execute(sql, args) -> cursor``)
    and ``_rows()`` (one read). ``ingest`` locks the agent's ``ingest`` row first (``FOR_UPDATE`` where the
    database has row locks; SQLite's write transaction is exclusive anyway), so that two streams of one
    agent, or two replicas, never interleave their epoch bookkeeping."""

    FOR_UPDATE = ""
    LEAST, GREATEST = "MIN", "MAX"  # the smaller and larger of two values (PostgreSQL: LEAST, GREATEST)
    # the run (boot id) and number of the state report a row of ``agents`` holds, and of the one written over it
    REPORT_BOOT = "json_extract({}.outbox, '$.report.boot')"
    REPORT_SEQ = "json_extract({}.outbox, '$.report.seq')"
    # a batch is written in transactions of at most this many bytes (payloads, plus INGEST_RECORD_BYTES a
    # record), None: one transaction per batch (PostgreSQL, whose row locks hold no other agent's writes)
    INGEST_CHUNK_BYTES: int | None = None
    # loss ranges one INSERT writes (``_insert_losses``): 7 parameters each, within SQLite's 999 of builds before
    # 3.32 (PostgreSQL: an event's LOSS_RANGES_PER_EVENT, one statement)
    LOSS_ROWS_PER_STATEMENT = 128
    # (UTC day, agents whose old agent_usage rows this store deleted that day): set by the first ``_note_pruned``
    _pruned: tuple[int, set[tuple[str, str]]]

    def q(self, sql: str) -> str:
        return sql

    def _tx(self, write: bool = True):
        raise NotImplementedError

    def _rows(self, sql: str, args=()) -> list[tuple]:
        raise NotImplementedError

    def _record_error(self, exc: Exception) -> bool:
        """Whether the database refused a write for the values of the record itself (a type it cannot bind, a
        NOT NULL or value-range violation), which sending it again never mends; not for a store that is down."""
        return False

    def ingest(
        self, agent: str, records: list[dict], *, tenant: str = T, blobs=None, newly: list[int] | None = None
    ) -> tuple[list[int], int, int]:
        now = time.time()
        newly = [] if newly is None else newly
        metas = [check_record(r) for r in records]  # refused before anything is written
        gen = self._quota_gen().get(tenant, 0)  # a quota set from here on: this batch's refusal is not kept
        self._refuse_early(agent, records, tenant, now)
        # the sample bytes of records not stored yet are written and synced before the transaction (staged), so
        # that the write lock every tenant's writes wait for is held for a rename per sample, not for the bytes
        staged = self._stage_samples(agent, records, metas, tenant, blobs)
        try:
            stored = dup = 0
            ranges = self._chunks(records)
            for first, last in ranges:  # each its own transaction (SQLite: its own turn)
                fresh: list[int] = []
                try:
                    _, s, d = self._ingest(
                        agent,
                        records[first:last],
                        metas[first:last],
                        tenant,
                        blobs,
                        staged,
                        now,
                        synced=len(ranges) == 1,
                        fresh=fresh,
                    )
                except Exception as exc:
                    if isinstance(exc, TenantQuotaExceeded) and (seen := getattr(exc, "usage", None)):
                        self._keep_spent(tenant, gen, seen)
                    if first:  # the ranges before are stored: the batch sent again finds them (duplicates)
                        exc.stored_before = first  # type: ignore[attr-defined]
                        if isinstance(exc, TenantQuotaExceeded):
                            exc.args = (
                                str(exc).replace(
                                    "nothing of it was stored", f"its first {first} records were stored"
                                ),
                            )
                    raise
                stored, dup = stored + s, dup + d
                newly.extend(first + i for i in fresh)  # committed
                if len(ranges) > 1:  # the range durable, outside the writer's turn, before the next one
                    try:
                        self._sync()
                    except Exception as exc:  # (EIO, EMFILE) the range is committed: sent again, duplicates
                        exc.stored_before = last  # type: ignore[attr-defined]
                        raise
            return [r["seq"] for r in records], stored, dup
        finally:
            for st in staged.values():  # a replay, a refused batch, a failure: the staged bytes are dropped
                blobs.discard(st)

    def _spent_book(self) -> dict[str, tuple[float, int, tuple[int, ...], tuple[int, ...]]]:
        """tenant -> (until, UTC day, its limits, its usage of that day before the batch) as the store's last
        refusal of one of its batches read them (records, sample bytes, record bytes), kept ``SPENT_TTL_S``."""
        try:
            return self._spent
        except AttributeError:
            self._spent: dict[str, tuple[float, int, tuple[int, ...], tuple[int, ...]]] = {}
            return self._spent

    def _quota_gen(self) -> dict[str, int]:
        """tenant -> how many times ``set_quota`` set its quotas in this process (``_keep_spent``)."""
        with _SPENT_LOCK:
            try:
                return self._quota_gens
            except AttributeError:
                self._quota_gens: dict[str, int] = {}
                return self._quota_gens

    def _keep_spent(self, tenant: str, gen: int, seen: tuple) -> None:
        """Keep what a refusal of the tenant's batch read (``_spent_book``), unless ``set_quota`` set the tenant's
        quotas since the batch began (``gen``): its transaction may have read the old ones, and a memo of them
        written after set_quota forgot the tenant's refused its batches for SPENT_TTL_S after a raise."""
        gens = self._quota_gen()
        with _SPENT_LOCK:
            if gens.get(tenant, 0) == gen:
                self._spent_book()[tenant] = (time.monotonic() + SPENT_TTL_S, *seen)

    def _forget_spent(self, tenant: str) -> None:
        """The tenant's quotas were set (committed): its next batches are judged by them at once."""
        gens = self._quota_gen()
        with _SPENT_LOCK:
            gens[tenant] = gens.get(tenant, 0) + 1
            self._spent_book().pop(tenant, None)

    def _refuse_early(self, agent: str, records: list[dict], tenant: str, now: float) -> None:
        """Refuse (``TenantQuotaExceeded``) a batch of a tenant the store refused within ``SPENT_TTL_S`` that day,
        when its records not stored yet would pass a quota by the usage read then (a lower bound: usage only
        grows within a day), before its samples are staged or the writer is taken. A refused batch was written
        in full, its samples staged and synced, then rolled back, under the writer every tenant shares, and an
        over-quota tenant's agents send theirs again every 15-30 s until 00:00 UTC. A batch of records all
        stored (a replay) is never refused here: it is acknowledged. The exact bound stays the check in the
        batch's transaction (``_charge``); a quota raised through this store forgets the tenant's entry."""
        book = self._spent_book()
        hit = book.get(tenant)
        if hit is None:
            return
        until, day, limits, used = hit
        if time.monotonic() >= until or day != utc_day(now):
            book.pop(tenant, None)
            return
        # the records of the batch's first range holding a record not stored yet only: the exact check stores a
        # batch written in ranges range by range (a range of duplicates adds nothing) until one would pass the
        # quota, so it refuses the batch (nothing more stored) when that range would
        for first, last in self._chunks(records):
            if new := self._not_stored(agent, records[first:last], tenant):
                break
        else:
            return
        added = (
            len(new),
            sum(int(r.get("sample_bytes") or 0) for r in new),
            sum(_payload_bytes(r) for r in new),
        )
        for limit, n, a, what in zip(limits, used, added, _QUOTA_WHAT, strict=True):
            if limit and n + a > limit:
                raise _over_quota(tenant, limit, n + a, a, what)

    def _not_stored(self, agent: str, records: list[dict], tenant: str) -> list[dict]:
        """The records of the batch the store does not hold yet (a lookup of their keys, ``_lookup``)."""
        have: set[tuple[int, int]] = set()
        for i in range(0, len(records), 500):
            part = records[i : i + 500]
            have.update(
                (int(e), int(s))
                for e, s in self._lookup(
                    self.q(
                        "SELECT epoch, seq FROM records WHERE tenant = ? AND agent = ? AND seq IN ("
                        + ",".join("?" * len(part))
                        + ")"
                    ),
                    (tenant, agent, *[r["seq"] for r in part]),
                )
            )
        return [r for r in records if (int(r.get("epoch") or 0), r["seq"]) not in have]

    def _lookup(self, sql: str, args=()) -> list[tuple]:
        """A short read by key that must not wait for a writer's turn nor behind a long read (``_refuse_early``)."""
        return self._rows(sql, args)

    def _chunks(self, records: list[dict]) -> list[tuple[int, int]]:
        """The batch as ranges of records of at most ``INGEST_CHUNK_BYTES`` each (a record larger than that alone),
        in order; the whole batch as one range when the store writes a batch in one transaction."""
        most = self.INGEST_CHUNK_BYTES
        if most is None:
            return [(0, len(records))]
        out: list[tuple[int, int]] = []
        first = size = 0
        for i, r in enumerate(records):
            n = len(r["payload"]) + INGEST_RECORD_BYTES
            if size and size + n > most:
                out.append((first, i))
                first, size = i, 0
            size += n
        out.append((first, len(records)))
        return out

    def _ingest_tx(self, synced: bool = True):
        """The transaction one range of a batch is written in (SQLite: a writer's turn after the waiting reports;
        not ``synced``: committed without an fsync, ``_sync`` after it)."""
        return self._tx()

    def _report_tx(self):
        """The transaction of one agent's state report (``heartbeat``; PostgreSQL: its lock waits bounded)."""
        return self._tx()

    def _sync(self) -> None:
        """Make durable what a range of a batch committed without an fsync (SQLite), outside the writer's turn."""

    def _stage_samples(self, agent: str, records: list[dict], metas: list, tenant: str, blobs) -> dict:
        """digest -> staged bytes (``blobs.stage``) of the batch's samples whose records are not stored yet and
        whose blob is not there yet; {} for a blob store that cannot stage (its bytes are written in the
        transaction, as before)."""
        if blobs is None or not hasattr(blobs, "stage"):
            return {}
        wanted = [r for r, m in zip(records, metas, strict=True) if m is not None and r.get("sample_data")]
        if not wanted:
            return {}
        have: set[tuple[int, int]] = set()
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            have.update(
                (int(e), int(q))
                for e, q in self._rows(
                    self.q(
                        "SELECT epoch, seq FROM records WHERE tenant = ? AND agent = ? AND seq IN ("
                        + ",".join("?" * len(part))
                        + ")"
                    ),
                    (tenant, agent, *[r["seq"] for r in part]),
                )
            )
        staged: dict = {}
        try:
            for r in wanted:
                sha = r["sample_sha256"]
                if (int(r.get("epoch") or 0), r["seq"]) in have or sha in staged or blobs.exists(sha):
                    continue
                staged[sha] = blobs.stage(r["sample_data"])
        except BaseException:
            for st in staged.values():
                blobs.discard(st)
            raise
        return staged

    def _ingest(
        self,
        agent: str,
        records: list[dict],
        metas: list,
        tenant: str,
        blobs,
        staged: dict,
        now: float,
        synced: bool = True,
        fresh: list[int] | None = None,
        reservation: Reservation | None = None,
    ) -> tuple[list[int], int, int]:
        """One range of a batch in one transaction; ``fresh`` receives, once committed, the indexes in
        ``records`` of those it stored (not the duplicates). ``reservation``: what the batch charged its tenant's
        usage with before this transaction (PostgreSQL): this transaction gives back what it did not store, and
        neither prechecks nor charges."""
        stored = dup = sample_bytes = payload_bytes = 0
        # the receipt's stamp (retention's age); ``now`` (usage days, epoch windows) stays the wall clock
        received = self.received_clock() if self.received_clock else now
        new_idx: list[int] = []
        # whether this range deletes the agent's agent_usage rows older than AGENT_USAGE_KEPT_DAYS (once a day)
        prune = False
        q = self.q
        new_samples: list[dict] = []  # records stored now whose bytes go to the blob store
        # the agent's loss ranges this write may still keep, and those it keeps (``_note_loss``)
        loss_room: list[int] = []
        counts: dict[
            tuple[int, str], list[int]
        ] = {}  # (epoch, kind) -> [records, first seq, last seq] stored now
        seen: set[int] = set()  # epochs of the agent found stored before (``_new_epoch``)
        past: tuple[int, int] | None = (
            None  # (epochs ended in the window, epoch) opened past EPOCHS_PER_WINDOW
        )
        with self._ingest_tx(synced) as ex:
            known_epoch = self._lock_agent(ex, tenant, agent)
            for i, (r, meta) in enumerate(zip(records, metas, strict=True)):
                try:  # a record the database refuses all the same: a ValueError naming it (nothing stored)
                    epoch = int(r.get("epoch") or 0)
                    if known_epoch is None or (
                        epoch != known_epoch and self._new_epoch(ex, tenant, agent, epoch, counts, seen)
                    ):
                        if known_epoch is not None:
                            most = max(EPOCHS_MOST_PER_WINDOW, EPOCHS_PER_WINDOW + 1)
                            if (
                                n := self._epochs_ended(ex, tenant, agent, now, most=most)
                            ) >= EPOCHS_PER_WINDOW:
                                if n >= most:  # the most a day (one each 10 s): no restarted agent opens more
                                    raise TooManyEpochs(
                                        f"agent {agent} (tenant {tenant}): {most} epochs opened within "
                                        f"{EPOCH_WINDOW_S / 3600:g} h, the most an agent opens (one each "
                                        f"{EPOCH_WINDOW_S / most:g} s): the batch opening epoch {epoch} is "
                                        "refused, nothing of it stored (an outbox opens one only when it starts "
                                        "afresh: is the agent's data folder kept across restarts? docs/quotas.md)"
                                    )
                                if past is not None:  # a second one in one write: no outbox of ours sends it
                                    raise TooManyEpochs(
                                        f"agent {agent} (tenant {tenant}): {n} epochs opened within "
                                        f"{EPOCH_WINDOW_S / 3600:g} h, past the {EPOCHS_PER_WINDOW} an outbox "
                                        f"started afresh opens, and a write past them opens one epoch: the batch "
                                        f"opening epoch {epoch} after epoch {past[1]} is refused, nothing of it "
                                        "stored (an outbox sends its current epoch only; docs/quotas.md)"
                                    )
                                past = (n + 1, epoch)
                            self._end_epoch(ex, tenant, agent, known_epoch, "epoch_change", now)
                        known_epoch = epoch
                        ex(
                            q("UPDATE ingest SET epoch = ? WHERE tenant = ? AND agent = ?"),
                            (epoch, tenant, agent),
                        )
                    cur = ex(
                        q(
                            "INSERT INTO records (tenant, agent, epoch, seq, kind, t, received, payload) "
                            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
                        ),
                        (tenant, agent, epoch, r["seq"], r["kind"], r["t"], received, r["payload"]),
                    )
                    if cur.rowcount:
                        stored += 1
                        new_idx.append(i)
                        c = counts.setdefault((epoch, counted_kind(r["kind"])), [0, r["seq"], r["seq"]])
                        c[0], c[1], c[2] = c[0] + 1, min(c[1], r["seq"]), max(c[2], r["seq"])
                        sample_bytes += int(r.get("sample_bytes") or 0)
                        payload_bytes += _payload_bytes(r)
                        if meta is not None:
                            if r.get("sample_data"):
                                new_samples.append(r)
                            ex(
                                q(
                                    "INSERT INTO samples (sha256, tenant, agent, epoch, seq, t, model, version, pipeline, "
                                    "reason, verdict, label, ext) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
                                ),
                                (
                                    r["sample_sha256"],
                                    tenant,
                                    agent,
                                    epoch,
                                    r["seq"],
                                    r["t"],
                                    meta.get("model"),
                                    meta.get("model_version"),
                                    meta.get("pipeline"),
                                    meta.get("reason"),
                                    meta.get("verdict"),
                                    meta.get("label"),
                                    r.get("sample_ext"),
                                ),
                            )
                        elif r["kind"] in ("event", "alarm") and (
                            self._note_loss(ex, tenant, agent, epoch, r["payload"], now, loss_room)
                            == known_epoch
                            != epoch
                        ):
                            # the agent's own word: ``epoch`` follows the current one, which it just ended
                            known_epoch = self._follows(ex, tenant, agent, epoch, known_epoch)
                    else:
                        dup += 1
                except Exception as exc:
                    if not self._record_error(exc):
                        raise
                    # the database's own text names its tables, columns and constraints: the agent is told the
                    # error's type and an id, the service's log has the whole text under that id
                    state = getattr(exc, "sqlstate", None)
                    eid = _REFUSED_VALUES.failed("storing a record's values", exc)
                    raise ValueError(
                        f"record seq {r['seq']} (kind {str(r['kind'])[:64]!r}): the store cannot hold it "
                        f"({type(exc).__name__}{f' {state}' if state else ''}; error id {eid}, in the service's log)"
                    ) from exc
            if dup:
                ex(
                    q("UPDATE ingest SET duplicates = duplicates + ? WHERE tenant = ? AND agent = ?"),
                    (dup, tenant, agent),
                )
            if loss_room:  # the agent's loss ranges kept, as this write left them (``_note_loss``)
                ex(
                    q("UPDATE ingest SET loss_rows = ? WHERE tenant = ? AND agent = ?"),
                    (loss_room[1], tenant, agent),
                )
            for e in {e for e, _kind in counts if e != known_epoch}:  # (a late batch of an ended epoch)
                self._move_end(ex, tenant, agent, e, max(c[2] for (x, _k), c in counts.items() if x == e))
            for (epoch, kind), (n, first, last) in counts.items():
                ex(
                    q(
                        "INSERT INTO record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq, "
                        "first_received) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (tenant, agent, epoch, kind) DO UPDATE "
                        "SET records = record_counts.records + excluded.records, "
                        f"first_seq = {self.LEAST}(record_counts.first_seq, excluded.first_seq), "
                        f"last_seq = {self.GREATEST}(record_counts.last_seq, excluded.last_seq), "
                        f"first_received = {self.LEAST}(record_counts.first_received, excluded.first_received)"
                    ),
                    (tenant, agent, epoch, kind, n, first, last, received),
                )
            added = (stored, sample_bytes, payload_bytes)
            limits = None
            if reservation is not None and any(a > r for a, r in zip(added, reservation.amount, strict=True)):
                raise ShortReservation(added)  # before any upload: rolled back, reserved again
            if stored:
                self._charge_agent(ex, tenant, agent, payload_bytes, sample_bytes, now)
                if prune := not self._usage_pruned(tenant, agent, utc_day(now)):
                    self._prune_agent_usage(ex, tenant, agent, utc_day(now))
                # the usage of the day as committed (SQLite: exact, its write transaction is exclusive): a batch
                # that passes the tenant's quota by it is refused before its sample bytes are stored
                if reservation is None and (limits := self._quota_limits(ex, tenant)):
                    self._precheck(ex, tenant, limits, added, now)
            # once the batch is known to be new and within quota: the sample bytes (a failure rolls the rows back;
            # the agent, not acknowledged, sends them again)
            if blobs is not None and new_samples:
                # never beside retention deleting the same bytes of the tenant
                self._blob_guard(ex, tenant, sorted({r["sample_sha256"] for r in new_samples}), shared=True)
                for r in new_samples:
                    if (st := staged.pop(r["sample_sha256"], None)) is not None:
                        blobs.commit(st)  # a rename (a bucket: the upload)
                    elif not blobs.exists(r["sample_sha256"]):
                        blobs.put_bytes(r["sample_data"])
            # last: the tenant's usage row, which every batch of the tenant locks (PostgreSQL) from this upsert to
            # its commit; held so for the upsert, the exact quota check and the commit, never across a sample's
            # upload (it was: the tenant's other batches waited for the slowest upload among them)
            if (
                reservation is not None
            ):  # charged before: what it counted and this batch did not store, given back
                surplus = tuple(r - a for r, a in zip(reservation.amount, added, strict=True))
                if any(surplus):
                    self._give_back(ex, tenant, surplus, now)
                reservation.written = True
            elif stored:
                self._charge(ex, tenant, *added, now, limits)
        if prune:  # committed: not again today for this agent in this process
            self._note_pruned(tenant, agent, utc_day(now))
        if past is not None:
            _epochs_past(tenant, agent, *past)
        if fresh is not None:
            fresh.extend(new_idx)
        return [r["seq"] for r in records], stored, dup

    def _new_epoch(self, ex, tenant: str, agent: str, epoch: int, counts: dict, seen: set[int]) -> bool:
        """Whether ``epoch``, not the agent's current one, is its newer outbox: one never stored for the agent,
        whatever its value (the outbox sends only its current epoch, so an epoch not seen before is the one that
        follows). A gateway whose clock was never set takes a random epoch below any a set clock gave: before, only
        a higher epoch was taken, the old epoch's end was never a gap and the stats kept naming it. An epoch
        already stored (``seen`` caches them for the batch) is a replay of an older outbox: it changes nothing; so is
        one an ``outbox_corrupt`` event of the agent already ended (the renewed outbox's first batch names it): the
        late first batch of the old outbox, stored after the new one's (its ack timed out, the service still held it),
        was taken as current for good, the live epoch shown lost after its last seq."""
        if epoch in seen or any(e == epoch for e, _kind in counts):
            return False
        if ex(
            self.q("SELECT 1 FROM record_counts WHERE tenant = ? AND agent = ? AND epoch = ? LIMIT 1"),
            (tenant, agent, epoch),
        ).fetchone() or self._ended(ex, tenant, agent, epoch, "outbox_corrupt"):
            seen.add(epoch)
            return False
        return True

    def _ended(self, ex, tenant: str, agent: str, epoch: int, cause: str | None = None) -> bool:
        """Whether the store wrote the end of the agent's ``epoch`` (``last = 0``), with ``cause`` when given."""
        return bool(
            ex(
                self.q(
                    f"SELECT 1 FROM gaps WHERE tenant = ? AND agent = ? AND epoch = ? AND {_REAL_END}"
                    + (" AND cause = ?" if cause else "")
                    + " LIMIT 1"
                ),
                (tenant, agent, epoch, *([cause] if cause else [])),
            ).fetchone()
        )

    def _epochs_ended(self, ex, tenant: str, agent: str, now: float, most: int | None = None) -> int:
        """How many of the agent's epochs the store ended within ``EPOCH_WINDOW_S`` before ``now`` (the epochs it
        opened then: each new one ends the one before). Its epochs' ends alone, through the index ``gaps_epoch_ends``
        (never its loss rows, up to ``LOSS_ROWS_PER_AGENT``: SQLite's planner takes the primary key without the bound
        on ``t``), read only when a batch opens an epoch or an ``outbox_corrupt`` event names one, and by the agent's
        stats. ``most``: counted up to that many (a write needs to know whether a bound is passed only)."""
        ends = f"FROM gaps WHERE tenant = ? AND agent = ? AND {_REAL_END} AND t > ?"
        return int(
            ex(
                self.q(
                    f"SELECT COUNT(*) {ends}"
                    if most is None
                    else f"SELECT COUNT(*) FROM (SELECT 1 {ends} LIMIT {int(most)}) AS e"
                ),
                (tenant, agent, now - EPOCH_WINDOW_S),
            ).fetchone()[0]
        )

    def _lock_agent(self, ex, tenant: str, agent: str) -> int | None:
        """Create and lock the agent's ``ingest`` row for the batch's transaction (``FOR_UPDATE``); its epoch."""
        q = self.q
        ex(
            q("INSERT INTO ingest (tenant, agent, duplicates) VALUES (?, ?, 0) ON CONFLICT DO NOTHING"),
            (tenant, agent),
        )
        return ex(
            q("SELECT epoch FROM ingest WHERE tenant = ? AND agent = ?" + self.FOR_UPDATE), (tenant, agent)
        ).fetchone()[0]

    def _quota_limits(self, ex, tenant: str) -> tuple[int, int, int] | None:
        """The tenant's limits of records, sample bytes and record bytes per day, or None when it has none."""
        limits = ex(
            self.q(
                "SELECT max_records_per_day, max_sample_bytes_per_day, max_record_bytes_per_day FROM tenant_quotas "
                "WHERE tenant = ?"
            ),
            (tenant,),
        ).fetchone()
        if not limits or not any(limits):
            return None
        return int(limits[0]), int(limits[1]), int(limits[2])

    def _usage_of(self, ex, tenant: str, day: int) -> tuple[int, ...]:
        row = ex(
            self.q(
                "SELECT records, sample_bytes, record_bytes FROM tenant_usage WHERE tenant = ? AND day = ?"
            ),
            (tenant, day),
        ).fetchone()
        return tuple(int(x) for x in row) if row else (0, 0, 0)

    def _precheck(
        self, ex, tenant: str, limits: tuple[int, ...], added: tuple[int, int, int], now: float
    ) -> None:
        """Refuse a batch that passes the tenant's quota by its usage of the day as committed (a plain read: it
        waits for no lock, and sees no batch in flight: ``_charge`` is the exact check)."""
        day = utc_day(now)
        _judge(tenant, limits, self._usage_of(ex, tenant, day), added, day)

    def _charge(
        self,
        ex,
        tenant: str,
        records: int,
        sample_bytes: int,
        record_bytes: int,
        now: float,
        limits: tuple[int, ...] | None,
    ) -> None:
        """Count newly stored records, sample bytes and record (payload) bytes in the tenant's usage of the day, and
        refuse (the whole transaction rolls back) what passes its quota (``limits``, None: no limit). The row lock of
        the upsert serializes the replicas' counts, so the totals are exact however many processes ingest; the
        batch's last statement, so that the row is held until its commit only."""
        q, day = self.q, utc_day(now)
        ex(
            q(
                "INSERT INTO tenant_usage (tenant, day, records, sample_bytes, record_bytes) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, day) DO UPDATE SET records = tenant_usage.records + excluded.records, "
                "sample_bytes = tenant_usage.sample_bytes + excluded.sample_bytes, "
                "record_bytes = tenant_usage.record_bytes + excluded.record_bytes"
            ),
            (tenant, day, records, sample_bytes, record_bytes),
        )
        if limits is None:
            return
        added = (records, sample_bytes, record_bytes)
        used = self._usage_of(ex, tenant, day)
        _judge(tenant, limits, tuple(u - a for u, a in zip(used, added, strict=True)), added, day)

    def _give_back(self, ex, tenant: str, amount: tuple[int, ...], now: float) -> None:
        """Take ``amount`` (records, sample bytes, record bytes) a batch reserved and did not store off the tenant's
        usage of the day."""
        ex(
            self.q(
                "UPDATE tenant_usage SET records = records - ?, sample_bytes = sample_bytes - ?, "
                "record_bytes = record_bytes - ? WHERE tenant = ? AND day = ?"
            ),
            (*amount, tenant, utc_day(now)),
        )

    def _charge_agent(
        self, ex, tenant: str, agent: str, payload_bytes: int, sample_bytes: int, now: float
    ) -> None:
        """Count the agent's newly stored payload and sample bytes of the day (``agent_usage``)."""
        ex(
            self.q(
                "INSERT INTO agent_usage (tenant, agent, day, record_bytes, sample_bytes) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, agent, day) DO UPDATE SET "
                "record_bytes = agent_usage.record_bytes + excluded.record_bytes, "
                "sample_bytes = agent_usage.sample_bytes + excluded.sample_bytes"
            ),
            (tenant, agent, utc_day(now), payload_bytes, sample_bytes),
        )

    def _prune_agent_usage(self, ex, tenant: str, agent: str, day: int) -> None:
        """Delete the agent's ``agent_usage`` rows no budget reads any more (older than ``AGENT_USAGE_KEPT_DAYS``),
        in the batch's transaction: a range of the agent's own primary key, whose ``ingest`` row the batch holds."""
        ex(
            self.q("DELETE FROM agent_usage WHERE tenant = ? AND agent = ? AND day <= ?"),
            (tenant, agent, day - AGENT_USAGE_KEPT_DAYS),
        )

    def _usage_pruned(self, tenant: str, agent: str, day: int) -> bool:
        """Whether this store deleted the agent's old ``agent_usage`` rows on UTC ``day`` already (once per agent
        and day in each process; another replica, or this one restarted, does it again: a delete of nothing)."""
        pruned = getattr(self, "_pruned", None)
        return pruned is not None and pruned[0] == day and (tenant, agent) in pruned[1]

    def _note_pruned(self, tenant: str, agent: str, day: int) -> None:
        pruned = getattr(self, "_pruned", None)
        if pruned is None or pruned[0] != day:  # a new day: the agents of the day before are forgotten
            pruned = self._pruned = (day, set())
        pruned[1].add((tenant, agent))

    def agent_usage(self, agent: str, day: int, *, tenant: str = T) -> tuple[int, int]:
        rows = self._rows(
            self.q(
                "SELECT record_bytes, sample_bytes FROM agent_usage WHERE tenant = ? AND agent = ? AND day = ?"
            ),
            (tenant, agent, day),
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def set_quota(self, tenant: str, **limits: int) -> dict:
        bad = sorted(set(limits) - set(QUOTA_FIELDS))
        if bad:
            raise ValueError(f"unknown quota {bad[0]!r}; quotas are {', '.join(QUOTA_FIELDS)}")
        with self._tx() as ex:
            ex(self.q("INSERT INTO tenant_quotas (tenant) VALUES (?) ON CONFLICT DO NOTHING"), (tenant,))
            for k, v in limits.items():
                if int(v) < 0:
                    raise ValueError(f"quota {k}: {v} is negative; use 0 for no limit")
                ex(self.q(f"UPDATE tenant_quotas SET {k} = ? WHERE tenant = ?"), (int(v), tenant))
        self._forget_spent(tenant)  # its batches are judged by the new quota at once
        return self.quotas().get(tenant, {})

    def quotas(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for t, *lim in self._rows(
            self.q("SELECT tenant, " + ", ".join(QUOTA_FIELDS) + " FROM tenant_quotas")
        ):
            out[t] = {
                **dict(zip(QUOTA_FIELDS, map(int, lim), strict=True)),
                "records_today": 0,
                "sample_bytes_today": 0,
                "record_bytes_today": 0,
            }
        for t, n, b, rb in self._rows(
            self.q("SELECT tenant, records, sample_bytes, record_bytes FROM tenant_usage WHERE day = ?"),
            (utc_day(),),
        ):
            out.setdefault(t, {**dict.fromkeys(QUOTA_FIELDS, 0)}).update(
                records_today=int(n), sample_bytes_today=int(b), record_bytes_today=int(rb)
            )
        return out

    def _lock_tenant(self, ex, tenant: str) -> None:
        """Serialize the registrations of one tenant's new agents (PostgreSQL: an advisory lock; SQLite's write
        transaction is exclusive anyway)."""

    def admit_agent(self, agent: str, *, tenant: str = T) -> None:
        q = self.q
        row = self._rows(q("SELECT max_agents FROM tenant_quotas WHERE tenant = ?"), (tenant,))
        if not row or not row[0][0]:
            return  # no limit: the first state report registers it, as always
        limit = int(row[0][0])
        with self._tx() as ex:
            self._lock_tenant(ex, tenant)
            if ex(q("SELECT 1 FROM agents WHERE tenant = ? AND id = ?"), (tenant, agent)).fetchone():
                return
            n = ex(q("SELECT COUNT(*) FROM agents WHERE tenant = ?"), (tenant,)).fetchone()[0]
            if n >= limit:
                raise TenantQuotaExceeded(
                    f"tenant {tenant}: {n} agents registered, the tenant's quota is {limit}; "
                    f"agent {agent} cannot join until the platform operator raises the quota"
                )
            ex(
                q("INSERT INTO agents (tenant, id, last_seen) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"),
                (tenant, agent, time.time()),
            )

    def _end_epoch(
        self, ex, tenant: str, agent: str, epoch: int, cause: str, now: float, replace: bool = False
    ) -> None:
        """Record that ``epoch`` ended after its last stored (or retired) seq: whatever the old outbox still held is
        lost."""
        args = (tenant, agent, epoch)
        stored = ex(self.q("SELECT MAX(seq) FROM records WHERE tenant = ? AND agent = ? AND epoch = ?"), args)
        last = max([stored.fetchone()[0] or 0, *(r[0] for r in ex(self.q(RETIRED_SEQ), args).fetchall())])
        if (
            last >= INT64_MAX
        ):  # nothing can follow the largest seq: no loss to record (last + 1 would overflow)
            return
        ex(self.q(_end_insert(replace)), (tenant, agent, epoch, last + 1, cause, now))

    def _follows(self, ex, tenant: str, agent: str, epoch: int, current: int) -> int:
        """The agent's ``outbox_corrupt`` event, stored in ``epoch``, ended its ``current`` epoch: ``epoch`` is made
        current (unless an event of a later outbox ended it too) and its own end, written when a late batch of the
        ended epoch was taken as current before this event came, is gone. Returns the agent's current epoch. The
        renewed outbox sends its new records while it still copies the old store, before this event: a late batch
        of the old epoch landing then was taken as current, and kept so for good (the live epoch shown lost after
        the seq it had then)."""
        args = (tenant, agent, epoch)
        if self._ended(ex, tenant, agent, epoch, "outbox_corrupt"):
            return current
        ex(
            self.q(
                "DELETE FROM gaps WHERE tenant = ? AND agent = ? AND epoch = ? AND last = 0 AND cause = 'epoch_change'"
            ),
            args,
        )
        ex(self.q("UPDATE ingest SET epoch = ? WHERE tenant = ? AND agent = ?"), (epoch, tenant, agent))
        return epoch

    def _move_end(self, ex, tenant: str, agent: str, epoch: int, top: int) -> None:
        """Records of an ended ``epoch`` stored now, up to seq ``top``: its end (``last = 0``: everything from
        ``first`` on lost) moved past them when it was below (a late batch of the old outbox stored after the
        event that ended it: formerly its records were shown lost for good)."""
        args = (tenant, agent, epoch, top)
        ends = ex(
            self.q(
                f"SELECT first, cause, t FROM gaps WHERE tenant = ? AND agent = ? AND epoch = ? AND {_REAL_END} "
                "AND first <= ? ORDER BY first"
            ),
            args,
        ).fetchall()
        if not ends:
            return
        ex(
            self.q(
                "DELETE FROM gaps WHERE tenant = ? AND agent = ? AND epoch = ? AND last = 0 AND first <= ?"
            ),
            args,
        )
        if top >= INT64_MAX:  # (nothing can follow the largest seq)
            return
        cause = "outbox_corrupt" if any(c == "outbox_corrupt" for _f, c, _t in ends) else ends[-1][1]
        ex(
            self.q(_end_insert(cause == "outbox_corrupt")),
            (tenant, agent, epoch, top + 1, cause, ends[0][2]),  # (its time kept: when the epoch ended)
        )

    def _note_loss(
        self, ex, tenant: str, agent: str, epoch: int, payload: str, now: float, room: list[int] | None = None
    ) -> int | None:
        """An agent's own account of a loss: dropped seq ranges, or a corrupt outbox (the previous epoch ended).
        Ranges within ``LOSS_RANGES_PER_EVENT`` of the event and ``room`` (the write's: [ranges it may still keep, of
        ``LOSS_ROWS_PER_WRITE``; the agent's loss ranges kept, of ``LOSS_ROWS_PER_AGENT``, which the write leaves in
        ``ingest.loss_rows``], counted at its first ranges); past the agent's bound its oldest
        ranges told (not an epoch's end) are deleted to make room, down to nine tenths of it. Returns the epoch an
        ``outbox_corrupt`` event ended, else None."""
        if "outbox_" not in payload:
            return None
        if len(payload) > LOSS_EVENT_MAX_CHARS:
            _loss_cut(tenant, agent, 0, f"an outbox event of {len(payload)} characters was not read")
            return None
        try:
            evt = json.loads(payload)
        except (
            ValueError,
            RecursionError,
        ):  # nested past the parser's depth: the record is stored all the same
            return None
        # the agent's own account, best effort: a field of the wrong type or out of range is ignored (the
        # record itself is stored), never an error that would make the agent send the record again forever
        kind = evt.get("kind") if isinstance(evt, dict) else None
        if kind == EventKind.OUTBOX_CORRUPT and (prev := _int64(evt.get("previous_epoch"))) is not None:
            if prev == epoch:
                return None
            # an epoch's end already written (the new epoch's ``epoch_change``) takes its cause; a new one only
            # within the agent's epochs of the window (any previous_epoch would otherwise be a row)
            if (
                self._ended(ex, tenant, agent, prev)
                or self._epochs_ended(ex, tenant, agent, now, most=EPOCHS_PER_WINDOW) < EPOCHS_PER_WINDOW
            ):
                self._end_epoch(ex, tenant, agent, prev, "outbox_corrupt", now, replace=True)
                return prev
            else:
                _loss_cut(
                    tenant,
                    agent,
                    0,
                    f"an outbox_corrupt event naming epoch {prev} did not end it: {EPOCHS_PER_WINDOW} epochs "
                    f"ended within {EPOCH_WINDOW_S / 3600:g} h",
                )
        elif kind in DROP_CAUSES and (e := _int64(evt.get("epoch", epoch))) is not None:
            ranges = evt.get("ranges")
            if not isinstance(ranges, list) or not ranges:
                return None
            if room is None:
                room = []
            self._loss_room(ex, tenant, agent, room)
            taken = ranges[: min(LOSS_RANGES_PER_EVENT, room[0]) if room[1] <= LOSS_ROWS_PER_AGENT else 0]
            rows = []
            for pair in taken:
                a, b = (
                    (_int64(v) for v in pair) if isinstance(pair, list) and len(pair) == 2 else (None, None)
                )
                # from seq 1, first <= last: a row whose last is 0 is an epoch's end (a range [5, 0] or [0, 0] was
                # one, cause budget, and counted among the epochs the agent opened; [0, 4] became (0, 0) once
                # retention cut it by the seqs it retired); the gap list starts at seq 1
                if a is not None and b is not None and max(a, 1) <= b:
                    rows.append((tenant, agent, e, max(a, 1), b, DROP_CAUSES[kind], now))
            room[0] -= len(rows)
            self._add_losses(ex, tenant, agent, rows, room)
            if len(taken) < len(ranges):
                _loss_cut(tenant, agent, len(ranges) - len(taken), "")
        return None

    def _loss_room(self, ex, tenant: str, agent: str, room: list[int]) -> None:
        """``room`` (a write's, ``_note_loss``) filled at the write's first loss ranges."""
        if room:
            return
        # its loss ranges as ``ingest.loss_rows`` keeps them (counted once where it is NULL: a store of before
        # it; counted whole at every loss write, 18-51 ms of the writer every tenant shares at 90,000 rows).
        # Its epochs' ends are not of them: never deleted, one each start of an agent whose data folder is not
        # kept, they took the room (a crash loop of one a minute in ~70 days), and every later loss it told
        # was dropped and its older ones deleted. They are bounded by EPOCHS_MOST_PER_WINDOW, each with
        # records of its own (which the tenant's quotas count)
        args = (tenant, agent)
        losses = ex(self.q("SELECT loss_rows FROM ingest WHERE tenant = ? AND agent = ?"), args).fetchone()
        if losses is None or losses[0] is None:
            losses = ex(
                self.q("SELECT COUNT(*) FROM gaps WHERE tenant = ? AND agent = ? AND last <> 0"), args
            ).fetchone()
        room += [LOSS_ROWS_PER_WRITE, int(losses[0])]

    def _insert_losses(self, ex, rows: list[tuple]) -> int:
        """Loss ranges ``(tenant, agent, epoch, first, last, cause, t)`` written ``LOSS_ROWS_PER_STATEMENT`` a
        statement (one a range cost PostgreSQL a round trip each: 0.6-1.8 s of the agent's rows held for a drop event
        of 1,500 ranges); those already there are left. Returns how many are new."""
        added, n = 0, self.LOSS_ROWS_PER_STATEMENT
        for i in range(0, len(rows), n):
            part = rows[i : i + n]
            added += ex(
                self.q(
                    "INSERT INTO gaps (tenant, agent, epoch, first, last, cause, t) VALUES "
                    + ",".join(["(?,?,?,?,?,?,?)"] * len(part))
                    + " ON CONFLICT DO NOTHING"
                ),
                [v for r in part for v in r],
            ).rowcount
        return added

    def _add_losses(self, ex, tenant: str, agent: str, rows: list[tuple], room: list[int]) -> None:
        """``rows`` written as the agent's loss ranges (``_insert_losses``), counted in ``room[1]`` (its ranges
        kept); past LOSS_ROWS_PER_AGENT its oldest ranges make room."""
        room[1] += max(0, self._insert_losses(ex, rows))
        if room[1] > LOSS_ROWS_PER_AGENT:
            # past the agent's bound: its oldest ranges told make room (the newest are the ones looked at), down
            # to nine tenths of it: the oldest read in time order through ``gaps_losses_by_t`` (its loss ranges
            # alone, not its epochs' ends), in the write every tenant shares; once per tenth of the bound, not at
            # every write past it
            # The newest of those to go is read first, then every range up to it is deleted: two range scans
            # of that index. One DELETE ... IN (its subquery) was planned by PostgreSQL, where the table's
            # statistics did not know the agent's rows yet (a new database, a fast-growing table), as a nested
            # loop running the subquery again for each of the agent's rows: 8-25 s for 1,500 of 10,500 rows,
            # the agent's rows and a pooled connection held meanwhile
            args = (tenant, agent)
            cut = ex(
                self.q(
                    "SELECT t, epoch, first, last FROM gaps WHERE tenant = ? AND agent = ? AND last <> 0 "
                    "ORDER BY t, epoch, first, last LIMIT 1 OFFSET ?"
                ),
                (*args, room[1] - LOSS_ROWS_PER_AGENT + LOSS_ROWS_PER_AGENT // 10 - 1),
            ).fetchone()
            room[1] -= ex(
                self.q(
                    "DELETE FROM gaps WHERE tenant = ? AND agent = ? AND last <> 0"
                    + ("" if cut is None else " AND (t, epoch, first, last) <= (?, ?, ?, ?)")
                ),
                (*args, *(cut or ())),
            ).rowcount

    def _holes(self, ex, tenant: str, agent: str, epoch: int) -> list[tuple]:
        """The newest ``HOLES_READ`` holes between the epoch's stored seqs, from the highest seq down."""
        return ex(
            self.q(
                "SELECT epoch, prev + 1, seq - 1 FROM (SELECT epoch, seq, LEAD(seq) OVER (ORDER BY "
                "seq DESC) AS prev FROM records WHERE tenant = ? AND agent = ? AND epoch = ?) AS r "
                "WHERE seq - 1 > prev ORDER BY seq DESC LIMIT ?"  # not prev + 1 < seq: 2^63-1 + 1
            ),
            (tenant, agent, epoch, HOLES_READ),
        ).fetchall()

    def _first_seqs(self, ex, tenant: str, agent: str, epochs: list[int]) -> dict[int, int]:
        """The lowest stored seq of each of the agent's ``epochs`` that holds a record (an index probe each, by the
        records' primary key), ``GAPS_FIRST_SEQS_PER_STATEMENT`` epochs a statement."""
        out: dict[int, int] = {}
        for i in range(0, len(epochs), GAPS_FIRST_SEQS_PER_STATEMENT):
            chunk = epochs[i : i + GAPS_FIRST_SEQS_PER_STATEMENT]
            for e, seq in ex(
                self.q(
                    "SELECT v.column1, (SELECT r.seq FROM records r WHERE r.tenant = ? AND r.agent = ? AND "
                    "r.epoch = v.column1 ORDER BY r.seq LIMIT 1) FROM (VALUES "
                    + ", ".join(["(CAST(? AS BIGINT))"] * len(chunk))
                    + ") AS v"
                ),
                (tenant, agent, *chunk),
            ).fetchall():
                if seq is not None:
                    out[int(e)] = seq
        return out

    def gaps(self, agent: str, *, tenant: str = T, newest: int | None = None) -> list[dict]:
        """``Store.gaps``. With ``newest``, built from the highest epochs down, a page of epochs at a time (of
        ``record_counts``, by its primary key; the loss rows of the epochs between them; ``GAPS_PAGE_EPOCHS``, doubling),
        until that many are had: the console's agents view (every 3 s) and IngestStats built an agent's whole list,
        every epoch's gaps and loss ranges (20,000 epochs: 40,000 gaps), to show its newest 1,000 or 10,000. Without,
        the whole list: every epoch read at once (one page, no bound)."""
        q, args = self.q, (tenant, agent)
        parts: list[list[dict]] = []  # from the highest epochs down
        had, below, page = 0, None, GAPS_PAGE_EPOCHS  # epochs below ``below`` not read yet
        with self._tx(write=False) as ex:
            while True:
                older = "" if below is None else " AND epoch < ?"
                at = (*args, *([] if below is None else [below]))
                epochs = ex(
                    q(
                        "SELECT epoch, MIN(first_seq), MAX(last_seq), SUM(records) FROM record_counts "
                        f"WHERE tenant = ? AND agent = ?{older} GROUP BY epoch ORDER BY epoch DESC"
                        + ("" if newest is None else " LIMIT ?")
                    ),
                    (*at, *([] if newest is None else [page])),
                ).fetchall()
                # then every older epoch's loss rows are read with this one
                last_page = newest is None or len(epochs) < page
                lowest = epochs[-1][0] if epochs else None
                known = ex(
                    q(
                        f"SELECT epoch, first, last, cause FROM gaps WHERE tenant = ? AND agent = ?{older} "
                        f"AND NOT ({_TOLD_END})"
                        + ("" if last_page else " AND epoch >= ?")
                        + " ORDER BY epoch, first"
                    ),
                    (*at, *([] if last_page else [lowest])),
                ).fetchall()
                retired = dict(
                    ex(
                        q(
                            f"SELECT epoch, last_seq FROM retired WHERE tenant = ? AND agent = ?{older}"
                            + ("" if last_page else " AND epoch >= ?")
                        ),
                        (*at, *([] if last_page else [lowest])),
                    ).fetchall()
                )
                missing = [
                    hole
                    for e, first, last, n in epochs
                    if int(n) < last - first + 1
                    for hole in self._holes(ex, tenant, agent, e)
                ]
                # seqs stored at or below an epoch's retired ones (a record that came long after the records around
                # it, its hole written as a loss row by then; a replay): no loss. Read only where a loss row is there
                stored: dict[int, list[int]] = {}
                if any(b and e in retired and a <= retired[e] for e, a, b, _c in known):
                    for e, seq in ex(
                        q(
                            "SELECT r.epoch, r.seq FROM retired t JOIN records r ON r.tenant = t.tenant "
                            "AND r.agent = t.agent AND r.epoch = t.epoch AND r.seq <= t.last_seq "
                            f"WHERE t.tenant = ? AND t.agent = ?{older.replace('epoch', 't.epoch')}"
                            + ("" if last_page else " AND t.epoch >= ?")
                            + " ORDER BY r.epoch, r.seq"
                        ),
                        (*at, *([] if last_page else [lowest])),
                    ).fetchall():
                        stored.setdefault(e, []).append(seq)
                # an epoch retention emptied counts from the seq after its retired ones (``_emptied``), no seq stored:
                # a record stored in it again above a hole kept that count (``first_seq``, the least), and the hole
                # was listed by nothing (no record below it). Where retention cut an epoch that holds records, its
                # lowest stored seq (a read by key each, ``GAPS_FIRST_SEQS_PER_STATEMENT`` epochs a statement: an
                # agent replaying into thousands of its emptied epochs made thousands of statements)
                first_stored = self._first_seqs(
                    ex, tenant, agent, [e for e, _f, _l, n in epochs if n and e in retired]
                )
                firsts = [(e, first_stored.get(e, first)) for e, first, _, _ in epochs]
                part = gaps_from(missing, firsts, known, retired, stored)
                parts.append(part)
                had += len(part)
                if last_page or newest is None or had >= newest:
                    break
                below, page = lowest, min(page * 2, GAPS_PAGE_EPOCHS_MAX)
        out = [g for part in reversed(parts) for g in part]
        if newest is None:
            return out
        return GapList(
            out[max(0, len(out) - newest) :] if newest else [], max(0, had - newest) if last_page else None
        )

    def retired(self, *, tenant: str = T) -> dict:
        with self._tx(write=False) as ex:  # (an export: one query, not the six of ``stats``)
            return self._retired_in(ex, "WHERE tenant = ?", (tenant,))

    def _retired_in(self, ex, w: str, args: tuple) -> dict:
        gone = ex(
            self.q(
                f"SELECT COALESCE(SUM(records), 0), COALESCE(SUM(samples), 0), MAX(received_to) FROM retired_totals {w}"
            ),
            args,
        ).fetchone()
        return {"records": int(gone[0]), "samples": int(gone[1]), "received_to": gone[2]}

    def stats(self, agent: str | None = None, *, tenant: str = T) -> dict:
        w = "WHERE tenant = ?" + (" AND agent = ?" if agent else "")
        args = (tenant, agent) if agent else (tenant,)
        q = self.q
        with self._tx(write=False) as ex:  # records: from their counts (``record_counts``), not the rows
            # an agent's: its current epoch (``ingest``; a new one is current whatever its value), else the highest
            current = None
            if agent:
                current = ex(q("SELECT epoch FROM ingest WHERE tenant = ? AND agent = ?"), args).fetchone()
            if current and current[0] is not None:
                epoch = current[0]
                last = ex(
                    q(f"SELECT MAX(last_seq) FROM record_counts {w} AND epoch = ?"), (*args, epoch)
                ).fetchone()[0]
            else:
                epoch, last = ex(
                    q(
                        f"SELECT epoch, MAX(last_seq) FROM record_counts {w} GROUP BY epoch ORDER BY epoch DESC "
                        "LIMIT 1"
                    ),
                    args,
                ).fetchone() or (0, 0)
            # (per agent: ``agent_samples``, not a count of its sample rows at each refresh)
            s = ex(q(f"SELECT COALESCE(SUM(samples), 0) FROM agent_samples {w}"), args).fetchone()[0]
            d = ex(q(f"SELECT COALESCE(SUM(duplicates), 0) FROM ingest {w}"), args).fetchone()[0]
            # an agent's: the epochs it opened within EPOCH_WINDOW_S (through the index of their ends), up to just
            # past EPOCHS_MOST_PER_WINDOW (each console refresh, per agent: 400,000 counted took 593 ms)
            opened = (
                self._epochs_ended(ex, tenant, agent, time.time(), most=EPOCHS_MOST_PER_WINDOW + 1)
                if agent
                else None
            )
            # per kind, from the agent's totals (``agent_counts``: a row per kind, not one per epoch and kind)
            kinds = {
                k: int(n)
                for k, n in ex(
                    q(f"SELECT kind, SUM(records) FROM agent_counts {w} AND records <> 0 GROUP BY kind"), args
                ).fetchall()
            }
            gone = self._retired_in(ex, w, args)
        return {
            "records": sum(kinds.values()),
            "last_seq": last or 0,
            "epoch": epoch or 0,
            "samples": int(s),
            "duplicates": int(d),
            "by_kind": kinds,
            # deleted by retention (``retire``): records and samples received up to ``received_to`` (not in records)
            "retired": gone,
            # (past EPOCHS_MOST_PER_WINDOW: at it, and epochs_24h_more, "8640+" on the console)
            **(
                {
                    "epochs_24h": min(opened, EPOCHS_MOST_PER_WINDOW),
                    "epochs_24h_more": opened > EPOCHS_MOST_PER_WINDOW,
                }
                if opened is not None
                else {}
            ),
        }

    def records(
        self, agent: str, kind: str | None = None, since_seq: int = 0, limit: int = 1000, *, tenant: str = T
    ) -> list[dict]:
        sql = "SELECT epoch, seq, kind, t, payload FROM records WHERE tenant = ? AND agent = ? AND seq > ?"
        args: list[Any] = [tenant, agent, since_seq]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY epoch, seq LIMIT ?"
        args.append(limit)
        return [
            {"epoch": e, "seq": s, "kind": k, "t": t, "payload": json.loads(p) if p else None}
            for e, s, k, t, p in self._rows(self.q(sql), args)
        ]

    def events(
        self,
        *,
        tenant: str = T,
        agent: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> tuple[list[dict], str | None]:
        """Read newest first through ``records_events`` (or ``records_agent_events`` with ``agent``): partial
        indexes over the event and alarm rows only, so a store of millions of results is never scanned. The event
        kind lives in the payload (JSON the agent wrote, unindexed): with ``kind``, at most ``EVENTS_SCANNED`` event
        rows are read per call, and a page that found fewer than ``limit`` by then ends with the cursor of the last
        row read (``next``: the caller asks again from there). Payloads are read cut at ``EVENT_PAYLOAD_CHARS``
        (``truncated``: its text so far, of the record's kind) and at most ``EVENTS_READ_CHARS`` of them per call
        (a page ends early there, with ``next``), ``EVENTS_FETCH`` rows per query."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= EVENTS_SCANNED:
            raise ValueError(f"limit {limit!r} is not an integer in 1..{EVENTS_SCANNED}")
        sql = (
            f"SELECT t, agent, epoch, seq, kind, substr(payload, 1, {EVENT_PAYLOAD_CHARS}), length(payload) "
            "FROM records WHERE tenant = ? AND kind IN ('event', 'alarm')"
        )
        args: list[Any] = [tenant]
        if agent is not None:
            sql += " AND agent = ?"
            args.append(agent)
        if since is not None:
            sql += " AND t >= ?"
            args.append(since)
        cursor = event_cursor(before) if before else None
        out: list[dict] = []
        scanned = read = 0
        chunk = min(EVENTS_FETCH, limit if kind is None else max(4 * limit, 200))
        while True:
            page_sql, page_args = sql, list(args)
            if cursor is not None:
                page_sql += " AND (t, agent, epoch, seq) < (?, ?, ?, ?)"
                page_args += list(cursor)
            page_sql += " ORDER BY t DESC, agent DESC, epoch DESC, seq DESC LIMIT ?"
            n = min(chunk, EVENTS_SCANNED - scanned)
            rows = self._rows(self.q(page_sql), [*page_args, n])
            for t, a, e, s, rkind, payload, chars in rows:
                scanned += 1
                read += len(payload)
                cursor = (t, a, e, s)
                # a cut payload is no JSON: the event is its text, of the record's kind
                evt = event_dict(t, a, e, s, rkind, payload)
                evt["truncated"] = chars > len(payload)
                if kind is None or evt["kind"] == kind:
                    out.append(evt)
                    if len(out) == limit:
                        return out, event_token(cursor)
                if read >= EVENTS_READ_CHARS:  # the page ends here, short; its next goes on from this row
                    return out, event_token(cursor)
            if len(rows) < n:  # no older event row
                return out, None
            if scanned >= EVENTS_SCANNED:
                return out, event_token(cursor) if cursor else None

    def samples(
        self,
        model=None,
        label_state=None,
        reason=None,
        since=None,
        until=None,
        *,
        tenant: str = T,
        limit: int | None = None,
    ) -> list[dict]:
        sql, args = ("SELECT " + ", ".join(SAMPLE_COLS) + " FROM samples WHERE tenant = ?"), [tenant]
        for col, val, op in (
            ("model", model, "="),
            ("label_state", label_state, "="),
            ("reason", reason, "="),
            ("t", since, ">="),
            ("t", until, "<"),
        ):
            if val is not None:
                sql += f" AND {col} {op} ?"
                args.append(val)
        if limit is None:
            rows = self._rows(self.q(sql + " ORDER BY t, seq"), args)
        else:  # newest first through the index (samples_newest / samples_by_time), then back to oldest first
            if _int64(limit) is None:
                raise ValueError(f"limit {limit!r} is not an integer in 0..{INT64_MAX}")
            rows = self._rows(self.q(sql + " ORDER BY t DESC, seq DESC LIMIT ?"), [*args, limit])[::-1]
        return [dict(zip(SAMPLE_COLS, r, strict=True)) for r in rows]

    def has_sample(self, sha256: str, *, tenant: str = T) -> bool:
        return bool(
            self._rows(
                self.q("SELECT 1 FROM samples WHERE tenant = ? AND sha256 = ? LIMIT 1"), (tenant, sha256)
            )
        )

    def sample_ext(self, sha256: str, *, tenant: str = T) -> str | None:
        # the same bytes sent under two kinds: the first of a known kind, else the first sent
        sql = "SELECT ext FROM samples WHERE tenant = ? AND sha256 = ? ORDER BY epoch, seq LIMIT 16"
        rows = self._rows(self.q(sql), (tenant, sha256))
        exts = [r[0] or "" for r in rows]
        return next((e for e in exts if sample_kind(e)), exts[0]) if exts else None

    def heartbeat(
        self,
        agent: str,
        labels: dict,
        slots: list[dict],
        health: dict,
        outbox_depth: int,
        outbox: dict | None = None,
        *,
        tenant: str = T,
        over: str | None = None,
    ) -> bool:
        _check_depth(outbox_depth)
        with self._report_tx() as ex:
            return bool(
                ex(
                    self._report_sql(False, over is not None),
                    (
                        tenant,
                        agent,
                        json.dumps(labels),
                        time.time(),
                        json.dumps(slots),
                        json.dumps(health),
                        outbox_depth,
                        _outbox_text(outbox),
                        *(() if over is None else (over,)),
                    ),
                ).rowcount
            )

    def heartbeat_many(self, rows: list[tuple]) -> list[tuple[str, str]]:
        for row in rows:  # one bad row refuses the batch before anything is written
            _check_depth(row[5])
        with self._tx() as ex:
            return self._write_reports(ex, rows)

    def _report_order(self) -> str:
        """The condition of a state report's write over its agent's row: not a report of the same run (``boot``)
        numbered at or below the one the row holds (v4 agents; one without a number is written as it comes). The
        last number taken of the agent's run is kept with the row, so every replica, and one restarted, orders the
        run's reports alike: a replica ordered them by its own memory only (the control state keeps a run's first
        number), and after a restart a report 3 held on the way was written over report 5."""
        mine, theirs = self.REPORT_BOOT, self.REPORT_SEQ
        return (
            f"COALESCE(NOT ({mine.format('agents')} = {mine.format('excluded')} AND "
            f"{theirs.format('agents')} >= {theirs.format('excluded')}), TRUE)"
        )

    def _report_sql(self, again: bool, run: bool) -> str:
        """A state report's write (``HEARTBEAT_SQL``): with ``again``, only over an older report of its agent; with
        ``run``, only over a report of its own run, none, or of the run its last parameter names (``heartbeat``'s
        ``over``); always in its run's order (``_report_order``). Built once a store (a report's CPU counts)."""
        made = self.__dict__.setdefault("_report_sqls", {})
        if (sql := made.get((again, run))) is None:
            boot = self.REPORT_BOOT.format("agents")
            made[again, run] = sql = self.q(
                HEARTBEAT_SQL
                + " WHERE "
                + ("(" + HEARTBEAT_NEWER + ") AND " if again else "")
                + (
                    f"({boot} IS NULL OR {boot} = {self.REPORT_BOOT.format('excluded')} OR {boot} = ?) AND "
                    if run
                    else ""
                )
                + self._report_order()
            )
        return sql

    def _write_reports(self, ex, rows: list[tuple]) -> Reports:
        """Write the reports; returns in ``stale`` the (tenant, agent) of the held-back ones (9th item true) not
        written over a newer report of their agent, in ``other`` those written only over their own run (10th item
        ``True``, or a run id: ``heartbeat_many``) that the row's run refused, with it. A fresh
        report is written whatever the row's ``last_seen`` says: that is the receiving process's clock, and a
        replica whose clock ran minutes ahead (or a clock stepped back) froze its agents' state for as long,
        silently. The run is compared in the write itself: read before it (a read a report), another replica's
        write could land between the two, and it took 4-5 times the report's CPU (bench/RESULTS.md)."""
        boot = self.REPORT_BOOT
        stale, other = [], []
        for tenant, agent, labels, slots, health, depth, outbox, t, *flags in rows:
            again, over = bool(flags and flags[0]), (flags[1] if flags[1:] else None)
            over = "" if over is True else None if over is False else over  # (True: its own run only)
            run = over is not None
            cur = ex(
                self._report_sql(again, run),
                (
                    tenant,
                    agent,
                    json.dumps(labels),
                    t,
                    json.dumps(slots),
                    json.dumps(health),
                    depth,
                    _outbox_text(outbox),
                    *((over,) if run else ()),
                ),
            )
            if cur.rowcount == 0 and again:
                stale.append((tenant, agent))
            elif cur.rowcount == 0 and run:  # (rare: one read of the row refused)
                held = ex(
                    self.q(f"SELECT {boot.format('agents')} FROM agents WHERE tenant = ? AND id = ?"),
                    (tenant, agent),
                ).fetchone()
                other.append((tenant, agent, str(held[0] or "") if held else ""))
        return Reports(stale=stale, other=other)

    def set_labels(self, labels: dict[str, str], *, tenant: str = T) -> int:
        with self._tx() as ex:
            return sum(
                ex(
                    self.q(
                        "UPDATE samples SET label = ?, label_state = 'labelled' WHERE tenant = ? AND "
                        "sha256 = ?"
                    ),
                    (label, tenant, sha),
                ).rowcount
                for sha, label in labels.items()
            )

    def agents(self, *, tenant: str = T) -> list[dict]:
        return agent_dicts(
            self._rows(
                self.q(
                    "SELECT id, labels, last_seen, slots, health, outbox_depth, outbox FROM "
                    "agents WHERE tenant = ? ORDER BY id"
                ),
                (tenant,),
            )
        )

    def report_held(self, agent: str, *, tenant: str = T) -> tuple[str, int] | None:
        # a read by key of every unary heartbeat (the fleet's ``_held_above``): never a writer's turn on SQLite, which
        # each heartbeat's write takes as well (two turns a heartbeat, behind every range of every batch)
        rows = self._lookup(
            self.q(
                f"SELECT {self.REPORT_BOOT.format('agents')}, {self.REPORT_SEQ.format('agents')} FROM agents "
                "WHERE tenant = ? AND id = ?"
            ),
            (tenant, agent),
        )
        if not rows or rows[0][0] is None or rows[0][1] is None:
            return None
        try:
            return str(rows[0][0]), int(rows[0][1])
        except (TypeError, ValueError, OverflowError):  # (a number this code never wrote)
            return None

    def agent_groups(self, *, tenant: str = T) -> list[dict]:
        return [
            {
                "id": i,
                "labels": json.loads(lab),
                "slots": json.loads(sl),
                "last_seen": ls,
                # the report's number among its agent's (v4 agents), all of the outbox figures a rollout reads
                "outbox": {"report": json.loads(ob).get("report")} if ob and '"report"' in ob else {},
            }
            for i, lab, sl, ls, ob in self._rows(
                self.q(
                    "SELECT id, labels, slots, last_seen, outbox FROM agents WHERE tenant = ? ORDER BY id"
                ),
                (tenant,),
            )
        ]

    def usage(self) -> dict[str, dict]:
        return usage_from(self._rows(USAGE_SQL))

    def _blob_guard(self, ex, tenant: str, digests: list[str], shared: bool) -> None:
        """Held to the end of ``ex``'s transaction, per digest of the tenant: by ``ingest`` (``shared``) from its
        check that a sample's bytes are in the blob store to its commit, by ``retire`` (not ``shared``) from its check
        that no row names a digest to its deletion of the bytes, so that a row never names bytes retention deleted.
        SQLite's write transaction is exclusive anyway; PostgreSQL takes an advisory lock per digest (one of the
        tenant's held across 100 deletions from a bucket failed its other sample batches: lock waits past 2 s)."""

    def retire(
        self,
        before: float,
        *,
        blobs=None,
        after: tuple | None = None,
        most: int = RETIRE_STEP_ROWS,
        halt: threading.Event | None = None,
    ) -> dict:
        """One step of retention: agents' records (and their sample rows) received before ``before``, at most
        ``most`` of them, from the epochs past ``after`` (the ``after`` this returned; None: from the first), each
        epoch's lowest seqs first and only while they are that old (a prefix: ``retired.last_seq``), each epoch's part
        in a transaction of its own; then the sample bytes of ``blobs`` (the root store) that no row of the tenant
        names any more. The retired seqs are never a gap: counts, stats and gaps go on from past them, and
        ``stats``/``usage`` say what was retired. ``halt`` set (the service stopping) ends the step before its next
        epoch or deletion of bytes (those left are deleted by a later pass: ``retiring``). An epoch whose rows the
        database refuses (``_record_error``) is passed over, logged once, counted in ``skipped``. Returns {records,
        samples, blobs, after: where the next step goes on, None once every epoch was looked at; skipped, when
        any}."""
        q = self.q
        # the epochs that can hold records that old: by ``record_counts.first_received`` (through
        # ``record_counts_by_age``), not every epoch with records (an agent at the day's most epochs for 30 days:
        # ~259,000 reads of an epoch's lowest record per pass, each pass)
        at = after or (float("-inf"), "", "", -1)
        rows = self._rows(
            q(
                "SELECT first_received, tenant, agent, epoch FROM record_counts WHERE first_received < ? "
                "AND (first_received, tenant, agent, epoch) > (?, ?, ?, ?) AND records > 0 "
                "ORDER BY first_received, tenant, agent, epoch LIMIT ?"
            ),
            (before, *at, RETIRE_SCAN_EPOCHS),
        )
        out: dict[str, Any] = {"records": 0, "samples": 0, "blobs": 0, "after": None}
        # a pass's first step: the bytes a stopped step left (``retiring``)
        if after is None and blobs is not None:
            left: dict[str, list[str]] = {}
            for t, d in self._rows(
                q("SELECT tenant, sha256 FROM retiring ORDER BY tenant, sha256 LIMIT ?"), (most,)
            ):
                left.setdefault(t, []).append(d)
            for t, ds in left.items():
                out["blobs"] += self._retire_blobs(t, ds, blobs.for_tenant(t), halt)
        seen: set[tuple[str, str, int]] = set()  # (an epoch has a row per kind)
        # epochs whose lowest record is younger than their row said: (its receipt, key)
        young: list[tuple] = []
        try:
            for first, tenant, agent, epoch in rows:
                if halt is not None and halt.is_set():
                    return {**out, "after": None}
                key = (tenant, agent, int(epoch))
                out["after"] = (first, *key)
                if key in seen:
                    continue
                seen.add(key)
                # (none stored: counts above the records, made right under the agent's lock by ``_retire_epoch``)
                age = self._rows(q(EPOCH_AGE), key * 3)[0][0]
                if age is not None and age >= before:
                    young.append((age, *key))
                    continue
                try:
                    n, m, digests, age = self._retire_epoch(key, before, most - out["records"])
                except Exception as exc:
                    # the agent's rows held past the lock wait (its batch uploading to a bucket, an admin's open
                    # transaction): this epoch waits for a later pass; the step failed, and no epoch after it
                    # was retired while the hold lasted
                    if not self._guard_busy(exc):
                        if not self._record_error(exc):  # (a store down or full: the step fails)
                            raise
                        # the database refused this epoch's own rows (rolled back): it alone waits, counted and
                        # logged once a process; re-raised, the pass started again from the first epoch at each
                        # failure, and no epoch after it, of any tenant, was ever retired
                        out["skipped"] = out.get("skipped", 0) + 1
                        failed = self.__dict__.setdefault("_epochs_failed", set())
                        if key not in failed:
                            if len(failed) >= RETIRE_FAILED_KEPT:
                                failed.clear()
                            failed.add(key)
                            log.exception(
                                "retention: agent %s (tenant %s): its epoch %d cannot be retired (the store refused "
                                "its rows); it is passed over, the other epochs retired",
                                agent,
                                tenant,
                                int(epoch),
                            )
                        continue
                    log.warning(
                        "retention: agent %s (tenant %s): its rows are held by another transaction past the "
                        "lock wait; its epoch %d waits for a later pass",
                        agent,
                        tenant,
                        int(epoch),
                    )
                    n, m, digests, age = 0, 0, set(), None
                out["records"] += n
                out["samples"] += m
                if digests and blobs is not None:
                    out["blobs"] += self._retire_blobs(
                        tenant, sorted(digests), blobs.for_tenant(tenant), halt
                    )
                if out["records"] >= most:  # the step's share: this epoch again next step (it may hold more),
                    # by the age it has now (lower than when read: a late record retired, older ones above it)
                    out["after"] = (first if age is None else min(first, age), tenant, agent, int(epoch) - 1)
                    return out
        finally:
            self._note_young(young)
        if len(rows) < RETIRE_SCAN_EPOCHS and out["records"] < most:
            out["after"] = None  # every epoch looked at: the next step starts again from the first
        return out

    def _note_young(self, young: list[tuple]) -> None:
        """Epochs a step found younger than their ``first_received`` said (a store of before it: 0; a row an older
        service wrote): it is raised to their lowest record's receipt, so that later passes pass them by until
        then. One transaction for the step's (none once every row has its time)."""
        if not young:
            return
        try:
            with self._ingest_tx() as ex:
                for r in young:
                    ex(
                        self.q(
                            "UPDATE record_counts SET first_received = ? WHERE tenant = ? AND agent = ? "
                            "AND epoch = ? AND first_received < ?"
                        ),
                        (*r, r[0]),
                    )
        except Exception as exc:
            if not self._guard_busy(exc):  # (held past the lock wait: read again by the next pass)
                raise

    def _retire_epoch(
        self, key: tuple[str, str, int], before: float, most: int
    ) -> tuple[int, int, set[str], float | None]:
        """``retire`` in one agent's epoch: (records, samples retired, digests the samples named, its age now: None
        when none is left). Its records stored
        at or below its retired seqs (a record sent long after the records around it: the outbox sends by priority,
        a sample days behind; a batch sent again) are each retired once that old, never holding the seqs above them
        (the lowest seq, young, held every older record of the epoch past the age until it was that old too, at each
        such record of a backlog); above them, its lowest seqs while they are that old (a prefix). A young record is
        never retired."""
        q, (tenant, agent, _epoch) = self.q, key
        # a batch's kind of transaction: SQLite's writer turn after the short writes, PostgreSQL's lock waits bounded
        with self._ingest_tx() as ex:
            self._lock_agent(ex, tenant, agent)  # beside the agent's batches, never between their counts
            was = ex(q(RETIRED_SEQ), key).fetchone()
            floor = 0 if was is None else int(was[0])
            # the late ones that old (``late_records``, by receipt: the young ones of a replay are never read); a row
            # whose record is gone (deleted by hand, by a service of before it) is taken out, none counted; one whose
            # record has another receipt takes it (that service retired the record, leaving the row, and the seq was
            # stored again: the trigger's insert kept the old receipt, and such rows, read first at every step as
            # old, held the records above the retired seqs until the replay was that old too)
            late = ex(
                q(
                    "SELECT l.seq, r.received, r.kind, l.received FROM late_records l LEFT JOIN records r "
                    "ON r.tenant = l.tenant AND r.agent = l.agent AND r.epoch = l.epoch AND r.seq = l.seq "
                    "WHERE l.tenant = ? AND l.agent = ? AND l.epoch = ? AND l.received < ? ORDER BY l.received LIMIT ?"
                ),
                (*key, before, most),
            ).fetchall()
            gone = [s for s, _r, kind, _l in late if kind is None]
            for s, received, kind, listed in late:
                if kind is not None and received != listed:
                    ex(
                        q(
                            "UPDATE late_records SET received = ? WHERE tenant = ? AND agent = ? AND epoch = ? "
                            "AND seq = ?"
                        ),
                        (received, *key, s),
                    )
            old = sorted(r[:3] for r in late if r[2] is not None and r[1] < before and r[0] <= floor)
            if len(late) < most:  # (else every record at or below the step's top was read)
                for r in ex(
                    q(
                        "SELECT seq, received, kind FROM records WHERE tenant = ? AND agent = ? AND epoch = ? "
                        "AND seq > ? ORDER BY seq LIMIT ?"
                    ),
                    # (from seq 0 while none is retired: a record of seq 0, which the wire allows and gaps never
                    # count, was read by no step, and the step retiring the seqs above it failed on its age, every
                    # pass, stopping retention of every epoch after it)
                    (*key, floor if was is not None else -1, most - len(late)),
                ).fetchall():
                    if r[1] >= before:
                        break
                    old.append(r)
            self._by_seqs(ex, "DELETE FROM late_records WHERE {}", key, gone)
            if not old:
                self._emptied(ex, key)
                return 0, 0, set(), None
            top = old[-1][0]
            g, newest = self.GREATEST, max(r[1] for r in old)
            self._keep_holes(ex, key, [r[0] for r in old], newest, floor)
            # the records retired and their samples, by seq: those at or below the floor one by one (the young ones
            # of a replay stay, never read), the prefix above it as a range (every record in it is that old)
            below = [r[0] for r in old if r[0] <= floor]
            digests: set[str] = set()
            samples = 0
            for where, args in self._retired_parts(key, below, floor, top):
                ex(
                    q(
                        "INSERT INTO retiring (tenant, sha256) SELECT DISTINCT tenant, sha256 FROM samples "
                        f"WHERE {where} ON CONFLICT DO NOTHING"
                    ),
                    args,
                )
                digests |= {d for (d,) in ex(q(f"SELECT sha256 FROM samples WHERE {where}"), args).fetchall()}
                samples += ex(q(f"DELETE FROM samples WHERE {where}"), args).rowcount
                ex(q(f"DELETE FROM records WHERE {where}"), args)
            self._by_seqs(ex, "DELETE FROM late_records WHERE {}", key, below)
            # the epoch's counts go on from its lowest seq still stored (a hole above ``top`` stays a gap)
            nxt = ex(
                q(
                    "SELECT seq FROM records WHERE tenant = ? AND agent = ? AND epoch = ? ORDER BY seq LIMIT 1"
                ),
                key,
            ).fetchone()
            ex(
                q(
                    "INSERT INTO retired (tenant, agent, epoch, last_seq, records, samples, received_to) "
                    "VALUES (?,?,?,?,?,?,?) ON CONFLICT (tenant, agent, epoch) DO UPDATE SET "
                    f"last_seq = {g}(retired.last_seq, excluded.last_seq), records = retired.records + excluded.records, "
                    "samples = retired.samples + excluded.samples, "
                    f"received_to = {g}(retired.received_to, excluded.received_to)"
                ),
                (*key, top, len(old), samples, newest),
            )
            age = None
            if nxt is None:  # (none left: none counted either, whatever the counts said)
                self._emptied(ex, key, min(top, INT64_MAX - 1) + 1)
            else:
                # its age: of the records a pass may retire next (``EPOCH_AGE``, past the floor just written)
                age = ex(q(EPOCH_AGE), key * 3).fetchone()[0]
                ex(
                    q(
                        f"UPDATE record_counts SET first_seq = {g}(first_seq, ?), first_received = ? "
                        "WHERE tenant = ? AND agent = ? AND epoch = ?"
                    ),
                    (nxt[0], age, *key),
                )
                by_kind: dict[str, int] = {}
                for r in old:
                    by_kind[counted_kind(r[2])] = by_kind.get(counted_kind(r[2]), 0) + 1
                for kind, n in by_kind.items():
                    ex(
                        q(
                            "UPDATE record_counts SET records = records - ? "
                            "WHERE tenant = ? AND agent = ? AND epoch = ? AND kind = ?"
                        ),
                        (n, *key, kind),
                    )
            ex(
                q(
                    "INSERT INTO retired_totals (tenant, agent, records, samples, received_to) VALUES (?,?,?,?,?) "
                    "ON CONFLICT (tenant, agent) DO UPDATE SET records = retired_totals.records + excluded.records, "
                    "samples = retired_totals.samples + excluded.samples, "
                    f"received_to = {g}(retired_totals.received_to, excluded.received_to)"
                ),
                (tenant, agent, len(old), samples, newest),
            )
        return len(old), samples, digests, age

    def _emptied(self, ex, key: tuple[str, str, int], first_seq: int | None = None) -> None:
        """An epoch with no record left (under its agent's lock): counted so (records 0, whatever its counts said:
        a record deleted by hand left them above the records, and the epoch was read again at every pass for good)
        and aged never (inf: passes go by it until a record comes again); its counts go on from ``first_seq``."""
        q = self.q
        if (
            first_seq is None
            and ex(
                q("SELECT 1 FROM records WHERE tenant = ? AND agent = ? AND epoch = ? LIMIT 1"), key
            ).fetchone()
        ):
            return  # (stored since the unlocked read: a later pass)
        ex(
            q(
                f"UPDATE record_counts SET records = 0, first_seq = {self.GREATEST}(first_seq, ?), first_received = ? "
                "WHERE tenant = ? AND agent = ? AND epoch = ?"
            ),
            (first_seq or 0, float("inf"), *key),
        )

    @staticmethod
    def _retired_parts(key: tuple[str, str, int], below: list[int], floor: int, top: int):
        """(condition, its parameters) naming a step's records of epoch ``key``: ``below`` (seqs at or below the
        floor) in lists of RETIRE_IN_SEQS, then the seqs above ``floor`` up to ``top``."""
        at = "tenant = ? AND agent = ? AND epoch = ? AND "
        for i in range(0, len(below), RETIRE_IN_SEQS):
            part = below[i : i + RETIRE_IN_SEQS]
            yield at + f"seq IN ({', '.join('?' * len(part))})", (*key, *part)
        if top > floor:
            yield at + "seq > ? AND seq <= ?", (*key, floor, top)

    def _by_seqs(self, ex, sql: str, key: tuple[str, str, int], seqs: list[int]) -> None:
        """``sql`` (its condition ``{}``) run for the ``seqs`` of epoch ``key``, RETIRE_IN_SEQS a statement."""
        for where, args in self._retired_parts(key, seqs, 0, 0):
            ex(self.q(sql.format(where)), args)

    def _keep_holes(self, ex, key: tuple[str, str, int], seqs: list[int], t: float, floor: int) -> None:
        """Before retention deletes an epoch's stored ``seqs`` (ascending; received up to ``t``), the seqs missing
        among and below them that no loss row explains are written as loss rows of cause ``unknown``: a gap is not a
        record, and once the records around it are gone it can no longer be told from them (a real loss older than
        the age vanished from the gap list). They are the agent's loss ranges like those it told (counted in
        ``ingest.loss_rows``, its oldest pruned past LOSS_ROWS_PER_AGENT)."""
        q, (tenant, agent, epoch) = self.q, key
        at = max(floor, seqs[-1])
        holes = [(x, y) for _e, x, y in _without(epoch, floor + 1, at, seqs)]
        found = ex(
            q(
                "SELECT first, last, cause, t FROM gaps WHERE tenant = ? AND agent = ? AND epoch = ? AND last <> 0 "
                "AND first <= ? AND last >= ?"
            ),
            (*key, at, min(seqs[0], floor + 1)),
        ).fetchall()
        # a loss row that holds a seq stored is cut to its seqs missing, as the list showed it while those records
        # were there: listed whole once they are gone. A range the agent told as dropped (sent, its ack lost, then
        # dropped), and a seq at or below the retired ones stored after its hole was kept as a loss row (the outbox
        # sends by priority: a sample days behind the records around it), retired in its turn
        split, pieces = [], []
        for a, b, cause, told_t in found:
            inside = seqs[bisect.bisect_left(seqs, a) : bisect.bisect_right(seqs, b)]
            if inside:
                split.append((a, b))
                pieces += [
                    (tenant, agent, epoch, x, y, cause, told_t) for _e, x, y in _without(epoch, a, b, inside)
                ]
        told = _disjoint([(a, b, cause) for a, b, cause, _ in found])
        ends = [b for _, b, _ in told]
        rows = [
            (tenant, agent, epoch, x, y, "unknown", t)
            for a, b in holes
            for x, y, cause in _subtract(a, b, told, ends)
            if cause == "unknown"
        ]
        if rows or split:
            room: list[int] = []
            self._loss_room(ex, tenant, agent, room)
            for a, b in split:
                room[1] -= ex(
                    q(
                        "DELETE FROM gaps WHERE tenant = ? AND agent = ? AND epoch = ? AND first = ? AND last = ?"
                    ),
                    (*key, a, b),
                ).rowcount
            self._add_losses(ex, tenant, agent, pieces + rows, room)
            ex(q("UPDATE ingest SET loss_rows = ? WHERE tenant = ? AND agent = ?"), (room[1], tenant, agent))

    def _retire_blobs(
        self, tenant: str, digests: list[str], blobs, halt: threading.Event | None = None
    ) -> int:
        """Delete the tenant's sample bytes of ``digests`` that no row names (another agent's sample, a newer
        batch of the same bytes keeps them), each in a transaction of its own. Each digest is taken off
        ``retiring`` with its bytes: one a stop left there is deleted by the next pass (never a row without its
        bytes)."""
        gone = 0
        for d in digests:  # one at a time: a sample write of the same bytes waits for one deletion at most
            if halt is not None and halt.is_set():
                break
            try:
                with self._ingest_tx() as ex:
                    self._blob_guard(ex, tenant, [d], shared=False)
                    named = ex(
                        self.q("SELECT 1 FROM samples WHERE tenant = ? AND sha256 = ? LIMIT 1"), (tenant, d)
                    )
                    if not named.fetchone():
                        gone += bool(blobs.delete(d))
                    ex(self.q("DELETE FROM retiring WHERE tenant = ? AND sha256 = ?"), (tenant, d))
            except Exception as exc:
                # a batch writing the same bytes holds their guard past the wait (its other uploads): it names
                # them once it commits, so they are kept; the step failing here left the digests after this one
                # named by no row, never deleted
                if not self._guard_busy(exc):
                    raise
        return gone

    def newest_seen(self) -> float | None:
        got = self._rows("SELECT MAX(last_seen) FROM agents")
        return None if not got or got[0][0] is None else float(got[0][0])

    def _guard_busy(self, exc: Exception) -> bool:
        """Whether ``exc`` is a lock wait past its bound (``_blob_guard``'s, the agent's rows'): PostgreSQL; SQLite
        waits its turn."""
        return False


class WriterTurns:
    """SQLite's one writer, given in turns: whoever waits for a short write (a heartbeat, the streams' reports, an
    admission, a read on the writer's connection: ``with turns``, ``acquire()``) gets it before a range of a batch
    (``turns.bulk()``), and each kind in the order it came. ``threading.Lock`` hands over in no order: a thread that
    released it and asked again at once (a batch's next range) mostly took it again, so another tenant's heartbeat
    waited behind every range of every batch. Short writes go first at most ``SHORT_AHEAD`` times while a batch
    waits, then the batch's range goes: a stream of heartbeats or an admin script's reads never stops every tenant's
    batches (without the bound, one thread looping on short writes left a batch unwritten for good). Used as a lock:
    ``acquire(timeout=)`` / ``release()`` from any thread.
    """

    SHORT_AHEAD = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = False
        # short writes', batches' tickets: each a Condition of the one lock, so only the next in line is woken (a
        # notify_all woke every waiter at each release: up to 128 writer threads took the GIL in turn for one turn)
        self._waiting: tuple[deque[threading.Condition], deque[threading.Condition]] = (deque(), deque())
        self._ahead = 0  # short turns given while a batch's range waited, since a range last went

    def acquire(self, blocking: bool = True, timeout: float = -1, *, bulk: bool = False) -> bool:
        mine, ticket = self._waiting[bulk], threading.Condition(self._lock)
        with self._lock:
            mine.append(ticket)
            try:
                if not blocking:
                    return self._turn(ticket, bulk)
                self._wake_next()  # a new short write may be next, not the one woken before
                return ticket.wait_for(lambda: self._turn(ticket, bulk), None if timeout < 0 else timeout)
            finally:
                mine.remove(ticket)
                self._wake_next()  # given up (a timeout): the next in line may go

    def _next(self) -> threading.Condition | None:
        """The ticket whose turn it is (``_turn`` is true for it alone), or None."""
        if self._held:
            return None
        short, batch = self._waiting
        if short and (not batch or self._ahead < self.SHORT_AHEAD):
            return short[0]
        return batch[0] if batch else None

    def _wake_next(self) -> None:
        if (ticket := self._next()) is not None:
            ticket.notify()

    def _turn(self, ticket: object, bulk: bool) -> bool:
        if self._held or self._waiting[bulk][0] is not ticket:
            return False
        batch_waits = bool(self._waiting[True])
        if bulk:
            if self._waiting[False] and self._ahead < self.SHORT_AHEAD:
                return False  # a short write waits and may still go first
            self._ahead = 0
        elif batch_waits:
            if self._ahead >= self.SHORT_AHEAD:
                return False  # the waiting range's turn
            self._ahead += 1
        else:
            self._ahead = 0
        self._held = True
        return True

    def release(self) -> None:
        with self._lock:
            if not self._held:
                raise RuntimeError("release of a writer's turn not taken")
            self._held = False
            self._wake_next()

    def locked(self) -> bool:
        return self._held

    def __enter__(self) -> WriterTurns:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextlib.contextmanager
    def bulk(self):
        self.acquire(bulk=True)
        try:
            yield
        finally:
            self.release()


READERS = 4  # SQLite: reads (stats, gaps) of different callers at once, each on a connection of its own


class SQLiteStore(SQLStore):
    """One SQLite file (WAL, ``synchronous=FULL``: an ack means durable); one writer at a time, in turns
    (``WriterTurns``): a batch is written in transactions of at most ``INGEST_CHUNK_BYTES``, and a short write that
    waits goes before the batch's next one. Such a range is committed without an fsync and the WAL synced after
    it outside the writer's turn (``_sync``); the batch is acknowledged once its last range is synced."""

    # a range of 1 MiB held the writer 6 ms p50, 55 ms p99 here (its pages; the auto-checkpoint every 4 MiB); a 12-MB
    # batch in one transaction held it 100-940 ms, seconds on a busy disk, and every tenant's heartbeats waited
    INGEST_CHUNK_BYTES = 1 << 20

    def __init__(self, path: Path, blobs=None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        have = self.db.execute("PRAGMA user_version").fetchone()[0]
        if have > SQLITE_FORMAT:
            self.db.close()
            raise StoreFormatError(
                f"{self.path}: written by a newer fleet service (format {have}; this one knows {SQLITE_FORMAT}): "
                "upgrade this service before it writes to that file (or start it on a copy made before the upgrade)"
            )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # an ack means durable
        self._migrate()
        self.db.executescript(SCHEMA)
        # rows written before tenants (tenant ''): the default tenant's (a PK range scan; none after the first run)
        self.db.executescript(
            "BEGIN IMMEDIATE;"
            + "".join(
                f"UPDATE {t} SET tenant = '{DEFAULT_TENANT}' WHERE tenant = '';"
                for t in ("records", "samples", "gaps")
            )
            + "COMMIT;"
        )
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'record_counts'").fetchone():
            self.db.executescript(
                "BEGIN IMMEDIATE;" + RECORD_COUNTS + "COMMIT;"
            )  # created and filled at once
        else:
            self._check_record_counts()
        self._check_agent_counts()
        self.db.execute(RECORD_COUNTS_BY_AGE)
        self.db.execute(RECORD_COUNTS_REOPENED)
        self._repair()  # (after the trigger: from then on every writer's count into an emptied epoch reopens it)
        self.db.execute(f"PRAGMA user_version = {SQLITE_FORMAT}")
        self.lock = WriterTurns()
        # the reads that scan an agent's records (``gaps``, ``stats``: ``_tx(write=False)``) use connections of
        # their own: in WAL mode a reader neither waits for the writer nor holds it, so one tenant's admin asking
        # for its agent's stats in a loop no longer holds the lock every tenant's writes wait for. READERS of them,
        # each read taking one: with one for all, one tenant's long read (an agent's gaps over millions of records)
        # made every other tenant's stats and console answers wait behind it. ``read_lock``: a gate each read passes
        # as it starts (``close`` holds it, so that no read starts on a connection being closed)
        self.readers: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self.reader_count = READERS  # the readers not closed yet (``close``)
        for _ in range(self.reader_count):
            self.readers.put(sqlite3.connect(self.path, check_same_thread=False, isolation_level=None))
        self.read_lock = threading.Lock()
        self.reads_closed = False  # set by ``close`` under ``read_lock``: a read after it is refused at once
        # the lookups by key of ``_refuse_early`` (only for a tenant refused in the last SPENT_TTL_S): on a
        # connection of their own, so that they neither take a writer's turn nor wait behind an admin's long read
        # on the reader above (the reason c7ccb39's read of agent_usage there was reverted)
        self.lookups = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.lookup_lock = threading.Lock()
        self.blobs = blobs

    def _repair(self) -> None:
        """Run the ``SQLITE_REPAIRS`` not recorded as done in this file."""
        run = self.db.execute
        run(STORE_REPAIRS)
        done = {name for (name,) in run("SELECT name FROM store_repairs")}
        for name, statement in SQLITE_REPAIRS:
            if name in done:
                continue
            run("BEGIN IMMEDIATE")
            try:
                # (another process opening the file did it since the read above: its row's key refused this open)
                if run("SELECT 1 FROM store_repairs WHERE name = ?", (name,)).fetchone():
                    run("COMMIT")
                    continue
                n = sum(run(one).rowcount for one in _statements(statement))
                run("INSERT INTO store_repairs (name, applied) VALUES (?, ?)", (name, time.time()))
                run("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    run("ROLLBACK")
                raise
            if n:
                log.warning("%s: repair %s changed %d rows (once)", self.path, name, n)

    def _check_record_counts(self) -> None:
        """``record_counts`` against the records, rebuilt when they differ: a fleet service released before it
        (2026-11-30 and earlier) stores records without counting them, so a file it wrote to after this one
        (rolled back after an upgrade, then upgraded again) had stats, usage and gaps that left out every
        record it stored, and an epoch stored only by it never had its gaps reported. Costs one count of the
        records at open (~0.1 s per million rows here)."""
        counted = self.db.execute("SELECT COALESCE(SUM(records), 0) FROM record_counts").fetchone()[0]
        stored = self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        if counted == stored:
            return
        log.warning(
            "%s: record counts cover %d records but %d are stored (written by an older fleet service since?); "
            "counted again from the records",
            self.path,
            counted,
            stored,
        )
        self.db.executescript(  # (the agent totals filled again after, at once, not a trigger per row)
            "BEGIN IMMEDIATE;" + AGENT_COUNTS_UNTRIGGER + RECORD_COUNTS_AGAIN + "COMMIT;"
        )

    def _check_agent_counts(self) -> None:
        """``agent_counts`` (and its triggers) made where missing, filled again from ``record_counts`` where their
        sums differ: a file of before it, ``record_counts`` counted again just before, or rows changed by hand. One
        read of ``record_counts`` at open (a row per agent, epoch and kind). The same for ``agent_samples`` against
        ``samples``, only where the table or one of its triggers is missing (a file of before them, or the triggers
        dropped by hand): the triggers live in the file, so every writer, a service of before them too, keeps the
        totals, and the count of every sample row each open made (a full read of the table) told nothing more. The
        same for ``late_records`` against the records at or below the retired seqs."""
        self._check_totals(
            AGENT_COUNTS,
            (("SUM(records)", "agent_counts"), ("SUM(records)", "record_counts")),
            AGENT_COUNTS_UNTRIGGER + AGENT_COUNTS_FILL,
            AGENT_COUNTS_TRIGGERS,
        )
        made = {
            r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")
        }
        if not {"agent_samples", "agent_samples_add", "agent_samples_take"} <= made:
            self._check_totals(
                AGENT_SAMPLES,
                (("SUM(samples)", "agent_samples"), ("COUNT(*)", "samples")),
                AGENT_SAMPLES_UNTRIGGER + AGENT_SAMPLES_FILL,
                AGENT_SAMPLES_TRIGGERS,
            )
        if not {"late_records", "late_records_add", "late_records_received"} <= made:
            self._check_totals(
                LATE_RECORDS,
                (("COUNT(*)", "late_records"), ("COUNT(*)", _LATE_FROM)),
                LATE_RECORDS_UNTRIGGER + LATE_RECORDS_FILL,
                LATE_RECORDS_TRIGGERS,
            )

    def _check_totals(
        self, table: str, sums: tuple[tuple[str, str], ...], refill: str, triggers: str
    ) -> None:
        run = self.db.execute  # (one statement each: ``executescript`` would commit the transaction first)
        run("BEGIN IMMEDIATE")
        try:
            for statement in _statements(table):
                run(statement)
            kept, counted = (run(f"SELECT COALESCE({v}, 0) FROM {t}").fetchone()[0] for v, t in sums)
            for statement in _statements((refill if kept != counted else "") + triggers):
                run(statement)
            run("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                run("ROLLBACK")
            raise

    def _migrate(self) -> None:
        for table, column, script in MIGRATIONS:
            cols = [r[1] for r in self.db.execute(f"PRAGMA table_info({table})")]
            if cols and column not in cols:
                self.db.executescript("BEGIN IMMEDIATE;" + script + "COMMIT;")

    @contextlib.contextmanager
    def _tx(self, write: bool = True, bulk: bool = False, synced: bool = True):
        if not write:  # a read of its own snapshot, on a reader connection: the writer goes on meanwhile
            with self.read_lock:
                if self.reads_closed:
                    # its readers are closed and out of the queue: the read waited for one for ever, holding the
                    # gate, and a later close's wait for the gate timed out too (a console or stats call reaching
                    # the store after the service's stop hung the process's exit)
                    raise sqlite3.ProgrammingError(
                        f"Cannot operate on a closed database: the store {self.path}"
                    )
                reader = self.readers.get()
            try:
                reader.execute("BEGIN")
                try:
                    yield reader.execute
                    reader.execute("COMMIT")
                except BaseException:
                    if reader.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            reader.execute("ROLLBACK")
                    raise
            finally:
                self.readers.put(reader)
            return
        with self.lock.bulk() if bulk else self.lock:
            if not synced:  # a range of a batch: its fsync comes after, outside the writer's turn (``_sync``)
                self.db.execute("PRAGMA synchronous=NORMAL")
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db.execute
                    self.db.execute("COMMIT")
                except BaseException:
                    # SQLite rolls a transaction back itself on some errors (SQLITE_FULL, SQLITE_IOERR: a disk full
                    # at the COMMIT): a ROLLBACK then failed ("no transaction is active") and hid the error that
                    # said why
                    if self.db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            self.db.execute("ROLLBACK")
                    raise
            finally:
                if not synced:
                    self.db.execute("PRAGMA synchronous=FULL")  # an ack means durable

    def _ingest_tx(self, synced: bool = True):
        return self._tx(bulk=True, synced=synced)

    def _sync(self) -> None:
        """The fsync of the WAL after a range of a batch, outside the writer's turn: the range's commit
        (``synchronous=NORMAL``) wrote its pages to the WAL without one, so that the writer is not held for it (an
        fsync per range under the writer cost ~40 % more time per 12-MB batch than one transaction; unsynced
        ranges left for the batch's end made the next short write's own fsync flush them all, up to 0.8 s). The
        batch is acknowledged after its last range's. A WAL that is not there any more was checkpointed into the
        database file, which the checkpoint synced."""
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rows(self, sql: str, args=()) -> list[tuple]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def _lookup(self, sql: str, args=()) -> list[tuple]:
        with self.lookup_lock:
            return self.lookups.execute(sql, args).fetchall()

    def _record_error(self, exc: Exception) -> bool:
        if isinstance(exc, sqlite3.ProgrammingError):  # also "closed database": only a value it cannot bind
            return str(exc).startswith("Error binding parameter")
        return isinstance(
            exc, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.InterfaceError | OverflowError
        )

    def close(self, wait_s: float = 10.0) -> None:
        """Close the file once no thread uses it (a read or a write under way in a worker thread ends first: a
        close under it crashed the process); waits ``wait_s`` at most, then leaves it open and says so."""
        if not self.lock.acquire(timeout=wait_s):
            log.warning(
                "the store %s is still in use %g s after it was closed; it is left open", self.path, wait_s
            )
            return
        try:
            self.db.close()
        finally:
            self.lock.release()
        deadline = time.monotonic() + wait_s
        if not self.read_lock.acquire(timeout=wait_s):
            log.warning(
                "the store %s is still read %g s after it was closed; its readers are left open",
                self.path,
                wait_s,
            )
            return
        try:  # no read starts now: each reader is closed once its read under way has ended
            self.reads_closed = True
            while self.reader_count:  # (those still open: a second close waits for none)
                try:
                    self.readers.get(timeout=max(0.0, deadline - time.monotonic())).close()
                    self.reader_count -= 1
                except queue.Empty:
                    log.warning(
                        "the store %s is still read %g s after it was closed; a reader is left open",
                        self.path,
                        wait_s,
                    )
                    return
        finally:
            self.read_lock.release()
        if not self.lookup_lock.acquire(timeout=wait_s):
            log.warning(
                "the store %s is still looked up %g s after it was closed; its lookups are left open",
                self.path,
                wait_s,
            )
            return
        try:
            self.lookups.close()
        finally:
            self.lookup_lock.release()


def _statements(script: str) -> list[str]:
    """A script's statements, one each (a trigger's body, ``BEGIN ... END;``, is one)."""
    out, part = [], ""
    for piece in script.split(";"):
        part += piece + ";"
        if sqlite3.complete_statement(part):
            if part.strip(" \n;"):
                out.append(part)
            part = ""
    return out


class StoreFormatError(ValueError):
    """The store was written by a newer fleet service (its format is unknown to this one)."""


def open_store(url: str | None, data: Path) -> Store:
    """``postgresql://…``: the PostgreSQL store (migrated on open); otherwise the SQLite file ``<data>/fleet.db``."""
    if url and url.startswith(("postgresql://", "postgres://")):
        from cloud_trainer.fleet.store_pg import PostgresStore

        return PostgresStore(url)
    if url:
        raise ValueError(
            f"--store {url!r}: expected a postgresql:// URL (or nothing: SQLite in the data folder)"
        )
    return SQLiteStore(Path(data) / "fleet.db")


SAMPLE_COLS = [
    "sha256",
    "agent",
    "epoch",
    "seq",
    "t",
    "model",
    "version",
    "pipeline",
    "reason",
    "verdict",
    "label",
    "label_state",
    "ext",
]
# an agent's state report, written as it comes: last_seen is the receiving process's clock, and a report written
# only over an older one froze the agent's state while a replica's clock ran ahead (or after a clock stepped back)
HEARTBEAT_SQL = (
    "INSERT INTO agents (tenant, id, labels, last_seen, slots, health, outbox_depth, outbox) VALUES (?,?,?,?,?,?,?,?) "
    "ON CONFLICT(tenant, id) DO UPDATE SET labels=excluded.labels, last_seen=excluded.last_seen, "
    "slots=excluded.slots, health=excluded.health, outbox_depth=excluded.outbox_depth, outbox=excluded.outbox"
)
# a stream's report held back for a later flush (its row locked elsewhere, PostgresStore.heartbeat_many) and
# written again: never over a newer one (another replica's stream, a unary heartbeat written meanwhile)
HEARTBEAT_NEWER = "agents.last_seen IS NULL OR excluded.last_seen >= agents.last_seen"
USAGE_SQL = (
    "SELECT tenant, 'agents', COUNT(*) FROM agents GROUP BY tenant UNION ALL "
    "SELECT tenant, 'records', SUM(records) FROM agent_counts GROUP BY tenant UNION ALL "
    "SELECT tenant, 'samples', SUM(samples) FROM agent_samples GROUP BY tenant UNION ALL "
    "SELECT tenant, 'retired_records', SUM(records) FROM retired_totals GROUP BY tenant UNION ALL "
    "SELECT tenant, 'retired_samples', SUM(samples) FROM retired_totals GROUP BY tenant"
)
RETIRED_SEQ = "SELECT last_seq FROM retired WHERE tenant = ? AND agent = ? AND epoch = ?"
_FLOOR = "COALESCE((SELECT last_seq FROM retired WHERE tenant = ? AND agent = ? AND epoch = ?), 0)"
# an epoch's age for retention (parameters: its key 3 times): the least receipt of its records a pass may retire, those
# stored at or below its retired seqs (each retired once that old: ``late_records``, its oldest by index) and its
# lowest above them (the prefix goes on from it); NULL when none is stored
EPOCH_AGE = (
    "SELECT MIN(received) FROM (SELECT MIN(received) AS received FROM late_records WHERE tenant = ? AND agent = ? "
    "AND epoch = ? UNION ALL SELECT received FROM (SELECT received FROM records WHERE tenant = ? "
    f"AND agent = ? AND epoch = ? AND seq > {_FLOOR} ORDER BY seq LIMIT 1) AS a) AS r"
)


def _outbox_text(outbox: dict | None) -> str:
    """The agent's outbox figures as its row keeps them: a NUL in its strings (a dropped kind, a config reason) as
    U+FFFD. PostgreSQL's jsonb refuses one, so its row was read as holding no report number: the run order lost (an
    older report of the run written over a newer one, a restored gateway never told late) on that backend only."""
    text = json.dumps(outbox or {})
    if "\\u0000" in text:  # (rare: checked on the text, the figures walked only then)
        text = json.dumps(_without_nul(outbox))
    return text


def _without_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _check_depth(depth) -> None:
    if _int64(depth) is None:
        raise ValueError(f"outbox_depth {depth!r} is not an integer in 0..{INT64_MAX}")


def gaps_from(
    missing, firsts, known, retired: dict[int, int] | None = None, stored: dict[int, list[int]] | None = None
) -> list[dict]:
    """The gap list from the store's three answers (holes between stored seqs, each epoch's first seq, known
    losses): the same for every store. ``retired``: per epoch, the seqs up to this one are retired (retention), no
    gap below it but its loss rows; ``stored``: per epoch, its seqs stored at or below those (ascending), no loss."""
    floor = retired or {}
    ranges = [(e, floor.get(e, 0) + 1, f - 1) for e, f in firsts if f > floor.get(e, 0) + 1]
    # a hole reaching into the retired seqs is counted from past them: a seq stored again after its retirement (a
    # replay whose ack was lost, a late record) showed the retired seqs above it lost
    ranges += [(e, max(a, floor.get(e, 0) + 1), b) for e, a, b in missing if b > floor.get(e, 0)]
    by_epoch: dict[int, list] = {}
    for e, a, b, cause in known:
        if b:
            by_epoch.setdefault(e, []).append((a, b, cause))
    disjoint = {e: _disjoint(k) for e, k in by_epoch.items()}
    # at and below an epoch's retired seqs, its loss rows: those the agent told and the holes retention found there
    # (``_keep_holes``): a real loss older than the age vanished from the list with the records around it
    ranges += [
        piece
        for e, k in disjoint.items()
        if e in floor
        for a, b, _ in k
        if a <= floor[e]
        for piece in _without(e, a, min(b, floor[e]), (stored or {}).get(e, []))
    ]
    ends = {e: [b for _, b, _ in k] for e, k in disjoint.items()}
    out = []
    for e, a, b in sorted(ranges):
        out += [
            {"epoch": e, "first": x, "last": y, "cause": c}
            for x, y, c in _subtract(a, b, disjoint.get(e, []), ends.get(e, []))
        ]
    # an epoch's end after its retired seqs: a service released before retention ended a wholly retired epoch from
    # seq 1 (no record left), and that row showed the retired seqs lost once this one ran again
    out += [
        {"epoch": e, "first": max(a, floor.get(e, 0) + 1), "last": 0, "cause": cause}
        for e, a, b, cause in known
        if not b
    ]
    return sorted(out, key=lambda g: (g["epoch"], g["first"]))


def _without(e: int, a: int, b: int, seqs: list[int]) -> list[tuple[int, int, int]]:
    """Epoch ``e``'s range [a, b] without ``seqs`` (ascending)."""
    out, at = [], a
    for s in seqs[bisect.bisect_left(seqs, a) : bisect.bisect_right(seqs, b)]:
        if s > at:
            out.append((e, at, s - 1))
        at = s + 1
    if at <= b:
        out.append((e, at, b))
    return out


def agent_dicts(rows) -> list[dict]:
    return [
        {
            "id": i,
            "labels": json.loads(lab),
            "last_seen": ls,
            "slots": json.loads(sl),
            "health": json.loads(h),
            "outbox_depth": od,
            "outbox": json.loads(ob or "{}"),
        }
        for i, lab, ls, sl, h, od, ob in rows
    ]


def usage_from(rows) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for tenant, what, n in rows:
        out.setdefault(tenant, {"agents": 0, "records": 0, "samples": 0})[what] = int(n)
    return out
