"""What an agent or admin is told of a failure under its call (``cloud_trainer.fleet.faults``): a kind in words that
name nothing of the platform, and an id that stands for the failure's reason without telling its text."""

from __future__ import annotations

import errno
import re
import sqlite3

import psycopg

from cloud_trainer.fleet import faults
from cloud_trainer.fleet.store import AgentRowsLocked


def _pg(sqlstate: str, text: str) -> psycopg.Error:
    return psycopg.errors.lookup(sqlstate)(text)


def test_the_kind_of_a_failure_names_nothing_of_the_platform():
    cases = [
        (OSError(errno.ENOSPC, "No space left on device", "/srv/fleet/blobs/ab/cd.part"), faults.DISK_FULL),
        (sqlite3.OperationalError("database or disk is full"), faults.DISK_FULL),
        (_pg("53100", 'could not extend file "base/16384/2619": No space left on device'), faults.DISK_FULL),
        (sqlite3.OperationalError("database is locked"), faults.BUSY),
        (AgentRowsLocked("its rows in the fleet store are held by another transaction"), faults.BUSY),
        (_pg("55P03", 'canceling statement due to lock timeout: relation "ingest"'), faults.BUSY),
        (_pg("57P01", "terminating connection due to administrator command"), faults.UNREACHABLE),
        (
            psycopg.OperationalError(
                'connection to server at "10.0.0.5", port 5432 failed: Connection refused'
            ),
            faults.UNREACHABLE,
        ),
        (ConnectionError("the control database is unreachable (host db.internal)"), faults.UNREACHABLE),
        (OSError(errno.EIO, "Input/output error", "/srv/fleet/fleet.db"), "Input/output error"),
        (_pg("42P01", 'relation "records" does not exist\nLINE 1: INSERT INTO records ...'), faults.INTERNAL),
        (KeyError("tenant_quotas"), faults.INTERNAL),
    ]
    for exc, kind in cases:
        assert faults.kind(exc) == kind, (exc, faults.kind(exc))
        # the random 10-hex error id left out: it may hold "5432" or "16384" (about once in 600 runs)
        told = re.sub(r"error id [0-9a-f]+", "error id <id>", faults.told(exc))
        assert "error id <id>" in told, told
        for word in ("10.0.0.5", "5432", "/srv", "records", "INSERT", "ingest", "db.internal", "16384"):
            assert word not in told, (exc, told)
    # a failure raised from another is told by its cause's kind (the blob store's ENOSPC under a ValueError)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as cause:
            raise RuntimeError("could not stage the sample") from cause
    except RuntimeError as exc:
        assert faults.kind(exc) == faults.DISK_FULL


def test_an_error_id_stands_for_the_reason_not_the_call_and_not_the_text():
    a = _pg("42P01", 'relation "records" does not exist')
    b = _pg("42P01", 'relation "agents" does not exist')
    assert faults.error_id(a) == faults.error_id(b)  # one reason: one id, one log line a minute
    full = OSError(errno.ENOSPC, "No space left on device", "/srv/blobs/1.part")
    assert faults.error_id(full) == faults.error_id(OSError(errno.ENOSPC, "x", "/srv/blobs/2.part"))
    assert faults.error_id(full) != faults.error_id(a)
    # keyed with the process's secret: not the plain hash of its reason, which a guess of the text could match
    import hashlib

    assert faults.error_id(a) not in hashlib.sha256(faults.reason(a).encode()).hexdigest()
    # numbers and quoted names left out of a reason without a code
    assert faults.error_id(KeyError("gw-1")) == faults.error_id(KeyError("gw-2"))
