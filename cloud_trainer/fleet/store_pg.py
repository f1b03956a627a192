"""The fleet store on PostgreSQL: the production store behind the same ``Store`` interface as SQLite.

    cloud-trainer serve --store postgresql://fleet@db.example/fleet ...

The logic (idempotent ``(tenant, agent, epoch, seq)`` ingest, gap queries, tenants) is ``SQLStore``'s,
shared with the SQLite file; this module adds the connection pool (``psycopg_pool``: a few connections
shared by the service's worker threads), row locks (an agent's ``ingest`` row is locked ``FOR UPDATE``
for the length of a batch, so two streams or two replicas never interleave one agent's epochs) and the
schema migrations.

**A row lock held elsewhere**: every lock a batch's transaction waits for (its agent's ``ingest`` row, its tenant's
usage row of the day, a key of its records or samples another transaction is inserting, a table a migration holds) is
waited for at most ``ROW_LOCK_TIMEOUT_S`` (a ``lock_timeout`` for that transaction alone), then the batch fails with
``AgentRowsLocked`` (nothing stored; the agent sends it again later). A wait on, for a session that holds the rows (an
admin's open transaction, a stuck migration, a writer's session that hangs), held one of the pool's connections for as
long: 4 tenants so held all 8, and every other tenant's writes ended in ``PoolTimeout`` after 30 s. The tenant's usage
row, which all its batches update, is held by one batch for a short transaction of its own before its write (a tenant
with a quota: the batch's reservation, ``_reserved_ingest``) or for its commit only (its last statement), never across
its samples' upload. A unary heartbeat's wait on its agent's ``agents`` row has the same bound; the
streams' flush of every tenant's state reports (``heartbeat_many``, one transaction) skips the rows held elsewhere
and returns them for its next flush. The advisory locks (the migrations', a tenant's agent registrations, the
control state's writers) have no such bound: they serialize short steps that must each run, not wait for a session
that may never let go (a start's wait for the migrations' lock ends at the connection's own ``lock_timeout``, if set).

**Migrations** are plain numbered SQL files (``migrations/postgresql/NNNN_name.sql``), applied in
order, each in its own transaction together with its row in ``schema_version`` (or statement by statement outside
one: ``OUTSIDE_A_TRANSACTION``); an advisory lock held for the whole run makes replicas that start together apply
each file once. A database whose
``schema_version`` is ahead of this code is refused (an older replica must not write a newer schema).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path
from typing import Any

from cloud_trainer.fleet.store import (
    LOSS_RANGES_PER_EVENT,
    AgentRowsLocked,
    Reservation,
    ShortReservation,
    SQLStore,
    _payload_bytes,
    _statements,
    log,
    utc_day,
)

MIGRATIONS = Path(__file__).with_name("migrations") / "postgresql"
_LOCK_KEY = 0x6A1E_F1EE  # pg_advisory_xact_lock key of the migration step
# a start waiting this long for the migrations' lock says who holds it (then each minute)
LOCK_WAIT_WARN_S = 10.0
_FILE_RE = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")
OUTSIDE_A_TRANSACTION = "-- migrate: outside a transaction"  # a migration file's first line (``migrate``)
_CONCURRENT_INDEX = re.compile(r"CREATE INDEX CONCURRENTLY IF NOT EXISTS (\w+)", re.IGNORECASE)
# a path to PostgreSQL that dies without a word (a NAT or firewall between the service and a managed database
# that timed the flow out, a switch rebooting) is given up within about this: with libpq's defaults a query
# on it waited ~15 min of TCP retransmissions, or for ever for the answer to one already sent, holding its
# thread and its pooled connection (and the deployment tick, on the control's one connection)
TCP_TIMEOUT_S = 60.0
# how long a batch waits for its agent's ingest row lock: another writer of the agent (its other stream, another
# replica) holds it for one batch's transaction; a lock held longer is a session that holds the agent's rows
ROW_LOCK_TIMEOUT_S = 2.0
# (tenant, UTC day) reservations of failed batches this process could not give back yet (the database down at the
# failure, the common case) kept to be given back later (``PostgresStore._settle_owed``); past it, given up: logged
MAX_OWED = 10_000
SETTLE_WAIT_S = 0.05  # a give-back owed waits so long for its tenant's usage row (on another batch's path)


def dead_path_params(url: str, timeout_s: float = TCP_TIMEOUT_S) -> dict[str, Any]:
    """libpq settings that end a connection on a dead path within about ``timeout_s``: TCP keepalives (after
    half of it idle, then 3 probes) and ``tcp_user_timeout`` (data sent and not acknowledged for that long).
    A long query is not cut: the server's kernel answers the probes. Any of them the URL sets is its own."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(url)
    want: dict[str, Any] = {
        "keepalives": 1,
        "keepalives_idle": max(1, int(timeout_s / 2)),
        "keepalives_interval": max(1, int(timeout_s / 6)),
        "keepalives_count": 3,
        "tcp_user_timeout": int(timeout_s * 1000),
    }
    return {k: v for k, v in want.items() if k not in given}


@contextlib.contextmanager
def _lock_named(lock: str):
    """A lock wait past ``lock_timeout`` (``LockNotAvailable``) in the block is told by which lock it was
    (``fleet_lock``: ``_ingest`` names it in its refusal)."""
    import psycopg

    try:
        yield
    except psycopg.errors.LockNotAvailable as exc:
        exc.fleet_lock = lock  # type: ignore[attr-defined]
        raise


class _GiveBackInDoubt(Exception):
    """A give-back failed after its statement ran (at its commit): it may have been committed."""


class MigrationError(ValueError):
    """The migration files, or the database's schema, are not what this code can run on (a ``ValueError``:
    ``cloud-trainer serve`` says it in one line and exits 2, as for a wrong store URL)."""


class MigrationLockTimeout(MigrationError):
    """The migrations' lock held by another session past the connection's ``lock_timeout`` (named in the message)."""


def migration_files(folder: Path = MIGRATIONS) -> list[tuple[int, Path]]:
    out = []
    for f in sorted(folder.glob("*.sql")):
        m = _FILE_RE.fullmatch(f.name)
        if not m:
            raise MigrationError(f"{f}: a migration is named NNNN_words.sql (e.g. 0002_add_index.sql)")
        out.append((int(m.group(1)), f))
    versions = [v for v, _ in out]
    if versions != list(range(1, len(out) + 1)):
        raise MigrationError(
            f"{folder}: migrations must be numbered 1, 2, 3, ... without holes; found {versions}"
        )
    return out


def migrate(conn, folder: Path = MIGRATIONS) -> list[int]:
    """Apply the files not yet recorded in ``schema_version``; return the versions applied now. ``conn`` is in
    autocommit mode. A file whose first line is ``OUTSIDE_A_TRANSACTION`` runs its statements one by one outside any
    transaction (``CREATE INDEX CONCURRENTLY``: built inside the migration's transaction, 0022's index held every
    write to ``gaps`` for 2.7 s at 2 M rows; concurrently, writes go on), its version recorded after them; an index
    such a build left invalid (stopped, failed) is dropped and built again."""
    files = migration_files(folder)
    applied = []
    # the migrations' lock for the whole run (replicas starting together: one applies, the others wait, then find
    # nothing to do), taken by tries outside any transaction: a replica waiting for it inside a transaction holds a
    # snapshot, which a concurrent index build waits for (a deadlock)
    started, warn_at = time.monotonic(), LOCK_WAIT_WARN_S
    # the session's ``lock_timeout`` (the URL's ``options=-c lock_timeout=...``, PGOPTIONS, the role's or database's
    # setting) ends the wait, as it ended the wait of a runner of before in ``pg_advisory_xact_lock``: tries are no
    # lock wait, and it had no effect (0: none, wait)
    limit_ms = float(
        conn.execute("SELECT setting FROM pg_settings WHERE name = 'lock_timeout'").fetchone()[0]
    )
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()[0]:
        waited = time.monotonic() - started
        if limit_ms and waited * 1000 >= limit_ms:
            raise MigrationLockTimeout(
                f"gave up waiting for the schema migrations' lock (advisory lock {_LOCK_KEY}) after {waited:.1f} s, "
                f"the connection's lock_timeout ({limit_ms:g} ms): it is held by {_lock_holder(conn)}; start "
                "again once it is let go (a replica upgrading the schema lets go when done; an idle session can be "
                "ended with pg_terminate_backend(pid))"
            )
        if waited >= warn_at:
            log.warning(
                "fleet store: waited %.0f s for the schema migrations' lock (advisory lock %d), held by %s; this "
                "start goes on once it is let go",
                waited,
                _LOCK_KEY,
                _lock_holder(conn),
            )
            warn_at += 60.0
        time.sleep(min(0.1, max(0.001, limit_ms / 1000 - waited)) if limit_ms else 0.1)
    import psycopg

    path = files[0][1] if files else folder
    try:
        for version, path in files:
            text = path.read_text()
            outside = text.startswith(OUTSIDE_A_TRANSACTION)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))  # (a runner of before waits)
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                    "applied DOUBLE PRECISION NOT NULL)"
                )
                have = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
                if have > len(files):
                    raise MigrationError(
                        f"the database's schema is version {have}, newer than this code's {len(files)}; "
                        "upgrade this service before it writes to that database"
                    )
                if version <= have:
                    continue
                if not outside:
                    conn.execute(text)
                    _record(conn, version, path)
                    applied.append(version)
                    continue
            for name in _CONCURRENT_INDEX.findall(text):
                if conn.execute(
                    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE c.relname = %s AND NOT i.indisvalid",
                    (name,),
                ).fetchone():
                    conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
            for statement in _statements(text):
                conn.execute(statement)
            with conn.transaction():
                _record(conn, version, path)
            applied.append(version)
    except psycopg.errors.LockNotAvailable as exc:
        # the connection's lock_timeout (the URL's, as for the lock above) ended a statement's wait: an index built
        # CONCURRENTLY waits for every transaction open before it (an older replica's write, an admin's session), a
        # table change for the sessions using the table. It was told as the database not reachable ("cannot
        # connect ... check the URL")
        raise MigrationError(
            f"migration {path.name} waited past the connection's lock_timeout ({limit_ms:g} ms) for a lock "
            f"({str(exc).strip()[:200]}): a transaction open meanwhile holds it; start again once it ended (an "
            "index such a build left invalid is built again) or with a longer lock_timeout"
        ) from None
    except psycopg.errors.QueryCanceled as exc:
        # the connection's statement_timeout (the URL's, PGOPTIONS, the role's or database's: common on a managed
        # database) ended a migration statement, or an admin canceled it: the start said "cannot connect ... check
        # the URL", at every try (the statement takes as long each time)
        raise MigrationError(
            f"migration {path.name} was canceled ({str(exc).strip()[:200]}): a statement_timeout of the connection "
            "(the URL's, the role's or the database's) shorter than the migration ends it at every start; start once "
            "with a longer one, e.g. ?options=-c%20statement_timeout%3D0 in the store URL"
        ) from None
    finally:
        with contextlib.suppress(Exception):  # (a connection that failed: its lock went with it)
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied


def _lock_holder(conn) -> str:
    """The session that holds the migrations' lock in this database (a replica upgrading the schema, an index build
    waiting for an open transaction, an admin's session): its pid, application, address, state and query."""
    holder = None
    with contextlib.suppress(Exception):  # (no view of it: said so)
        holder = conn.execute(
            "SELECT a.pid, a.application_name, a.client_addr::text, a.state, left(a.query, 200) FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.classid = 0 AND l.objid::bigint = %s AND l.objsubid = 1 AND l.pid <> pg_backend_pid() "
            # the lock is this database's: pg_locks lists the cluster's (another fleet store's own upgrade)
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
            (_LOCK_KEY,),
        ).fetchone()
    if holder is None:
        return "a session not seen"
    return (
        f"pid {holder[0]} ({holder[1] or 'no application_name'}, {holder[2] or 'local'}, {holder[3]}: "
        f"{holder[4]!r})"
    )


def _record(conn, version: int, path: Path) -> None:
    conn.execute(
        "INSERT INTO schema_version (version, name, applied) VALUES (%s, %s, %s)",
        (version, path.name, time.time()),
    )


class PostgresStore(SQLStore):
    FOR_UPDATE = " FOR UPDATE"
    LEAST, GREATEST = "LEAST", "GREATEST"
    # jsonb refuses a NUL (``\u0000`` in the text json.dumps writes: a string of the agent's, a dropped kind, a config
    # reason): such a row is read as holding no number (written as it comes) instead of failing the write, and every
    # other agent's report flushed with it (a row written before the condition existed failed every later report)
    REPORT_BOOT = (
        "(CASE WHEN strpos({0}.outbox, '\\u0000') = 0 THEN {0}.outbox::jsonb #>> '{{report,boot}}' END)"
    )
    REPORT_SEQ = (
        "(CASE WHEN strpos({0}.outbox, '\\u0000') = 0 "
        "THEN ({0}.outbox::jsonb #>> '{{report,seq}}')::numeric END)"
    )

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        timeout_s: float = 30.0,
        tcp_timeout_s: float = TCP_TIMEOUT_S,
        row_lock_timeout_s: float = ROW_LOCK_TIMEOUT_S,
    ) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self.url = url
        self.row_lock_timeout_s = row_lock_timeout_s
        # (tenant, day) -> (records, sample bytes, record bytes) reserved by failed batches, not given back yet
        self._owed: dict[tuple[str, int], tuple[int, ...]] = {}
        self._owed_lock = threading.Lock()
        params = dead_path_params(url, tcp_timeout_s)
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=int(timeout_s), **params) as conn:
                migrate(conn)
        except MigrationError as exc:  # e.g. a service rolled back onto a database a newer one migrated
            raise MigrationError(f"fleet store {_redact(url)}: {exc}") from None
        except psycopg.OperationalError as exc:
            raise ConnectionError(
                f"fleet store {_redact(url)}: cannot connect ({str(exc).strip()[:300]}); check the "
                "URL, that PostgreSQL is running and that the user may log in"
            ) from exc
        # check: a pooled connection is tested as it is handed out, so that after a database restart the stale
        # ones are replaced instead of failing one call each
        self.pool = ConnectionPool(
            url,
            kwargs=params,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_s,
            open=True,
            name="fleet-store",
            check=ConnectionPool.check_connection,
        )

    LOSS_ROWS_PER_STATEMENT = LOSS_RANGES_PER_EVENT  # (14,000 parameters of PostgreSQL's 65,535)

    def q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def _lock_tenant(self, ex, tenant: str) -> None:
        ex("SELECT pg_advisory_xact_lock(hashtext(%s))", ("agents:" + tenant,))

    def _blob_guard(self, ex, tenant: str, digests: list[str], shared: bool) -> None:
        keys = [f"blobs:{tenant}:{d}" for d in digests]
        ex(
            f"SELECT pg_advisory_xact_lock{'_shared' if shared else ''}(hashtext(k)) FROM unnest(%s::text[]) AS k",
            (keys,),
        )

    def _guard_busy(self, exc: Exception) -> bool:
        import psycopg

        return isinstance(exc, psycopg.errors.LockNotAvailable)

    @contextlib.contextmanager
    def _bounded_tx(self, wait_s: float | None = None):
        """A transaction whose every lock wait lasts at most ``row_lock_timeout_s`` (or ``wait_s``; a
        ``lock_timeout`` for it alone), then ``psycopg.errors.LockNotAvailable``: nothing of it is written."""
        wait = f"{max(1, round((self.row_lock_timeout_s if wait_s is None else wait_s) * 1000))}ms"
        with self._tx() as ex:
            ex("SELECT set_config('lock_timeout', %s, true)", (wait,))
            yield ex

    def _ingest_tx(self, synced: bool = True):
        """A batch's transaction, its lock waits bounded (``_ingest`` says which lock was held)."""
        return self._bounded_tx()

    def _report_tx(self):
        """A unary heartbeat's transaction, its wait on the agent's ``agents`` row bounded: a row another session
        holds (an admin's open transaction) fails the heartbeat (the service answers ``UNAVAILABLE``, the agent
        heartbeats again). Waited on, 2 tenants' rows so held took all 8 pooled connections (4 heartbeats of a
        tenant at once), and every other tenant's writes failed."""
        return self._bounded_tx()

    def _ingest(self, agent: str, records: list[dict], metas: list, tenant: str, *args, **kw):
        """``SQLStore._ingest``, or ``AgentRowsLocked`` (nothing stored: rolled back) when a lock it waits for is held
        past ``row_lock_timeout_s``: its agent's ``ingest`` row, its tenant's usage row of the day, a key of its
        records or samples another transaction is inserting, a table a migration holds. Waited on, 4 tenants whose
        rows another session held took all 8 pooled connections, and every other tenant's writes failed."""
        import psycopg

        try:
            return self._reserved_ingest(agent, records, metas, tenant, *args, **kw)
        except psycopg.errors.LockNotAvailable as exc:
            which = getattr(exc, "fleet_lock", None)
            held = f"held by another transaction past {self.row_lock_timeout_s:g} s"
            if which == "ingest":
                what = (
                    f"its rows in the fleet store are {held}, possibly this agent's other batch (a second stream, "
                    "a reconnect to another replica) or another session's (pg_stat_activity shows it 'idle in "
                    "transaction' or waiting)"
                )
            elif which == "usage":
                what = (
                    f"its tenant's usage row of the day in the fleet store is {held}: another session's (the "
                    "tenant's batches hold it for their commit only; pg_stat_activity shows it 'idle in "
                    "transaction' or waiting)"
                )
            else:
                what = (
                    f"rows this batch writes in the fleet store (a record or sample another transaction is "
                    f"writing, a table a migration holds) are {held}"
                )
            raise AgentRowsLocked(
                f"agent {agent[:80]!r} (tenant {tenant[:80]}): {what}; nothing of this batch was stored: "
                "send it again later"
            ) from None

    def _reserved_ingest(
        self, agent: str, records: list[dict], metas: list, tenant: str, blobs, staged: dict, now: float, **kw
    ):
        """A tenant with a quota: the batch's new records and bytes are charged to its usage of the day, with the
        exact check, in a short transaction of their own (``_reserve``) before anything of the batch is written or
        uploaded; then the batch's transaction, which gives back what it did not store (duplicates); any failure
        before its commit gives the whole reservation back (``_give_back_after``). A batch the quota refuses so
        uploads nothing: refused by the exact check after its samples' upload (the usage row held only for its
        commit), it left their blobs unreferenced, and a tenant could repeat that far past its sample quota. The
        usage row is held for the reservation's upsert, check and commit (milliseconds), never across an upload.
        A reservation that cannot be given back at the failure (the database down) is given back once the store
        answers again (``_settle_owed``); a process that dies between the reservation and the batch's commit
        leaves the reserved room unused until the day's end (the quota is never passed)."""
        args = (blobs, staged, now)
        res = self._reserve(agent, records, tenant, now)
        if res is None:  # no quota: counted in the batch's transaction, as on SQLite
            return super()._ingest(agent, records, metas, tenant, *args, **kw)
        try:
            for _ in range(5):
                try:
                    return super()._ingest(agent, records, metas, tenant, *args, **kw, reservation=res)
                except ShortReservation as short:  # records deleted since the reservation read them
                    extra = tuple(max(0, a - r) for a, r in zip(short.added, res.amount, strict=True))
                    self._reserve_amount(tenant, extra, now)
                    res.amount = tuple(r + x for r, x in zip(res.amount, extra, strict=True))  # type: ignore[assignment]
            raise RuntimeError(
                f"agent {agent[:80]!r} (tenant {tenant[:80]}): the batch's records changed in the fleet store while "
                "it was written; nothing of it was stored: send it again"
            )
        except BaseException:
            if not res.written:
                self._give_back_after(tenant, res.amount, now)
            raise

    def _reserve(self, agent: str, records: list[dict], tenant: str, now: float) -> Reservation | None:
        """Charge the batch's records not stored yet (a plain read) to its tenant's usage of the day, with the
        exact check under the usage row's lock, committed at once (``TenantQuotaExceeded``: nothing charged);
        None when the tenant has no quota."""
        limits = self._rows(
            "SELECT max_records_per_day, max_sample_bytes_per_day, max_record_bytes_per_day FROM tenant_quotas "
            "WHERE tenant = %s",
            (tenant,),
        )
        if self._owed:  # the database answers: what failed batches could not give back is given back now
            self._settle_owed()
        if not limits or not any(limits[0]):
            return None
        by_epoch: dict[int, list[int]] = {}
        for r in records:
            by_epoch.setdefault(int(r.get("epoch") or 0), []).append(int(r["seq"]))
        have: set[tuple[int, int]] = set()
        # by the primary key, within the range of the batch's seq (the seq alone: the planner read all the agent's)
        for epoch, seqs in by_epoch.items():
            have.update(
                self._rows(
                    "SELECT epoch, seq FROM records WHERE tenant = %s AND agent = %s AND epoch = %s "
                    "AND seq BETWEEN %s AND %s AND seq = ANY(%s::bigint[])",
                    (tenant, agent, epoch, min(seqs), max(seqs), seqs),
                )
            )
        new = [r for r in records if (int(r.get("epoch") or 0), int(r["seq"])) not in have]
        amount = (
            len(new),
            sum(int(r.get("sample_bytes") or 0) for r in new),
            sum(_payload_bytes(r) for r in new),
        )
        if any(amount):
            self._reserve_amount(tenant, amount, now)
        return Reservation(amount)

    def _reserve_amount(self, tenant: str, amount: tuple[int, ...], now: float) -> None:
        with self._bounded_tx() as ex:
            # no WAL flush of its own (a commit's fsync, tens of ms on a busy disk): the batch's commit flushes the
            # log up to itself, this before it; a crash before that loses both
            ex("SET LOCAL synchronous_commit TO off")
            self._charge(ex, tenant, *amount, now, self._quota_limits(ex, tenant))

    def _give_back_after(self, tenant: str, amount: tuple[int, ...], now: float) -> None:
        """Give back a failed batch's reservation in a transaction of its own; failing (the store down, the usage
        row held past ``row_lock_timeout_s``), it is kept in this process and given back before a later batch's
        reservation, once the store answers (``_settle_owed``); logged."""
        if not any(amount):
            return
        try:
            self._give_back_day(tenant, utc_day(now), amount)
        except _GiveBackInDoubt as doubt:  # it may have been committed: owing it could give it back twice
            log.warning(
                "fleet store: tenant %s: %d records, %d sample bytes and %d record bytes a failed batch reserved "
                "from its quota of the day may not have been given back (%s at its commit: committed or rolled "
                "back, it cannot tell); if not, they stay counted until 00:00 UTC",
                tenant[:80],
                *amount,
                type(doubt.__cause__).__name__,
            )
        except Exception as exc:
            kept = self._owe(tenant, utc_day(now), amount)
            log.warning(
                "fleet store: tenant %s: %d records, %d sample bytes and %d record bytes a failed batch reserved "
                "from its quota of the day could not be given back (%s: %s); %s",
                tenant[:80],
                *amount,
                type(exc).__name__,
                str(exc)[:200],
                "given back once the store answers again (a later batch's reservation); until then they count, "
                "and if this process stops first, until 00:00 UTC"
                if kept
                else f"more than {MAX_OWED} such are waiting: they stay counted until 00:00 UTC",
            )

    def _give_back_day(
        self, tenant: str, day: int, amount: tuple[int, ...], wait_s: float | None = None
    ) -> None:
        """Give ``amount`` back to the tenant's usage of ``day``; ``_GiveBackInDoubt`` when it failed after its
        statement ran (at its commit: the link cut or the server restarting before the commit's answer came back),
        so that it may have been given back: owed and given back again, the tenant could go over its quota."""
        sent = False
        try:
            with self._bounded_tx(wait_s) as ex:
                ex("SET LOCAL synchronous_commit TO off")  # lost in a crash: room unused, never over
                # the day the batch reserved on (a give-back after 00:00 UTC lowers that day's usage, not today's)
                self._give_back(ex, tenant, amount, day * 86400.0)
                sent = True
        except Exception as exc:
            if sent:
                raise _GiveBackInDoubt() from exc
            raise

    def _owe(self, tenant: str, day: int, amount: tuple[int, ...]) -> bool:
        """Keep a reservation not given back, added to the tenant's of that day; False when MAX_OWED are kept."""
        with self._owed_lock:
            key = (tenant, day)
            if key not in self._owed and len(self._owed) >= MAX_OWED:
                return False
            was = self._owed.get(key, (0, 0, 0))
            self._owed[key] = tuple(a + b for a, b in zip(was, amount, strict=True))
            return True

    def _settle_owed(self) -> None:
        """Give back the reservations failed batches could not give back, each taken out of the list first (two
        threads never give one back twice). A tenant's usage row another session holds is waited for
        ``SETTLE_WAIT_S``, that one put back (at the end: tried after the others next time) and the rest tried: it
        cost every batch of every tenant 2 s and kept every other tenant's room counted. Any other failure (the
        store gone again) puts back itself and those not tried; one in doubt (``_GiveBackInDoubt``) is not owed
        again (room unused, never over)."""
        import psycopg

        with self._owed_lock:
            owed, self._owed = self._owed, {}
        items = list(owed.items())
        for i, ((tenant, day), amount) in enumerate(items):
            try:
                self._give_back_day(tenant, day, amount, SETTLE_WAIT_S)
            except _GiveBackInDoubt:
                continue
            except psycopg.errors.LockNotAvailable:
                self._owe(tenant, day, amount)
                continue
            except Exception as exc:
                for (t, d), a in items[i:]:
                    self._owe(t, d, a)
                log.debug("fleet store: giving back reservations of failed batches: %s", type(exc).__name__)
                return
            log.info(
                "fleet store: tenant %s: %d records, %d sample bytes and %d record bytes failed batches reserved "
                "on day %d are given back",
                tenant[:80],
                *amount,
                day,
            )

    def _give_back(self, ex, tenant: str, *args, **kw) -> None:
        with _lock_named("usage"):
            super()._give_back(ex, tenant, *args, **kw)

    def heartbeat_many(self, rows: list[tuple]) -> list[tuple[str, str]]:
        """The streams' state reports of every tenant in one transaction, but those whose agent's row another
        transaction holds (an admin's open transaction): skipped (``SKIP LOCKED``) and returned, for a later flush.
        One such row held the flush, and so every tenant's reports, for as long. Its other lock waits (a new agent's
        row another transaction is inserting) last at most ``row_lock_timeout_s``."""
        from cloud_trainer.fleet.store import Reports, _check_depth

        for row in rows:  # one bad row refuses the batch before anything is written
            _check_depth(row[5])
        keys = ([r[0] for r in rows], [r[1] for r in rows])
        among = (
            "FROM agents a JOIN unnest(%s::text[], %s::text[]) AS k(t, i) ON a.tenant = k.t AND a.id = k.i"
        )
        with self._bounded_tx() as ex:
            free = set(ex(f"SELECT a.tenant, a.id {among} FOR UPDATE OF a SKIP LOCKED", keys).fetchall())
            held = {tuple(k) for k in ex(f"SELECT a.tenant, a.id {among}", keys).fetchall()} - free
            got = self._write_reports(ex, [r for r in rows if (r[0], r[1]) not in held])
        return Reports(sorted(held), got.stale, got.other)

    def _lock_agent(self, ex, tenant: str, agent: str) -> int | None:
        with _lock_named("ingest"):
            return super()._lock_agent(ex, tenant, agent)

    def _charge(self, ex, tenant: str, *args, **kw) -> None:
        with _lock_named("usage"):
            super()._charge(ex, tenant, *args, **kw)

    @contextlib.contextmanager
    def _tx(self, write: bool = True):
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur.execute

    def _rows(self, sql: str, args=()) -> list[tuple]:
        with self.pool.connection() as conn:
            return conn.execute(sql, args).fetchall()

    def _record_error(self, exc: Exception) -> bool:
        import psycopg

        if (
            isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None
        ):  # psycopg's own, before sending
            return str(exc).startswith("cannot adapt type")
        return isinstance(exc, psycopg.DataError | psycopg.IntegrityError | psycopg.errors.DatatypeMismatch)

    @contextlib.contextmanager
    def waiting_at_most(self, seconds: float):
        """Calls made meanwhile wait at most ``seconds`` for a pooled connection (``timeout_s`` else), every thread's:
        a stop's last flush with the database down waited 30 s a call, three calls (``StreamHub.stop``)."""
        was = self.pool.timeout
        self.pool.timeout = min(was, seconds)
        try:
            yield
        finally:
            self.pool.timeout = was

    def close(self) -> None:
        self.pool.close()


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
