"""What a caller of the fleet service is told when the service fails under its call: a stable kind and an error id,
never the failure's own text.

The fleet service is shared by tenants, and its failures' texts are the platform's internals: a PostgreSQL error
quotes the SQL and names the table ("relation "records" does not exist / LINE 1: INSERT INTO records (tenant, ..."),
a connection error the database's host and port, botocore the object store's endpoint, bucket and key
("Could not connect to the endpoint URL: "http://10.0.0.7:9000/fleet-prod/acme/sha256/..."), a validator's
traceback the server's paths. Each reached the agent (and so the tenant's admin reading its last error) or the
admin's call whole. An agent or admin is now told what kind of failure it met (``kind``: the store's disk is full,
the fleet's database is unreachable, the store is busy, an I/O error by its errno's text, an internal error) and an
error id (``error_id``); the service's log has the whole text and its traceback under that id.

An id stands for a reason, not for a call: the failure's type and its stable part (an errno, an SQLSTATE, SQLite's
error name, else the first line of its text with numbers and quoted names left out), keyed with a secret of this
process (``_KEY``) so that an id tells nothing of the text it stands for (a short plain hash of a message could be
matched against guesses of a host name). So every call failed for one reason gets the same id, and the reason is
logged once per ``LOG_EVERY_S`` with the count since (``FaultLog``), not once per call: every agent's every retry
while the store was down would otherwise be a line. Ids differ between replicas and restarts: each logs its own.

``Faults`` (a server interceptor) does the same for an exception a servicer method did not handle: grpc answered it
``UNKNOWN`` with ``Unexpected <class '...'>: <its text>``.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
import time

import grpc

log = logging.getLogger(__name__)

_KEY = secrets.token_bytes(16)
LOG_EVERY_S = 60.0  # a reason is logged at most this often (with the count since)
REASONS_KEPT = 1000  # reasons whose last line is remembered (past it the book starts again)

DISK_FULL = "the fleet store's disk is full"
UNREACHABLE = "the fleet's database or object store is unreachable"
BUSY = "the fleet store is busy"
INTERNAL = "an internal error of the service"

_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|[0-9a-fA-F]{16,}|\d+(?:\.\d+)?")
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
# botocore's errors by name (botocore is imported only where the S3 blob store is used)
_BOTO_UNREACHABLE = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ProxyConnectionError",
        "SSLError",
    }
)
_BOTO_BUSY = frozenset({"SlowDown", "ServiceUnavailable", "503", "RequestTimeout", "InternalError", "500"})


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it (``raise ... from``, or raised while handling), a few deep."""
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(out) < 8 and all(e is not o for o in out):
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _sqlstate(exc: BaseException) -> str:
    return str(getattr(exc, "sqlstate", None) or "")


def reason(exc: BaseException) -> str:
    """The failure's type and its stable part: what an id stands for (never sent to a caller)."""
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{name}: errno {exc.errno}"
    if state := _sqlstate(exc):
        return f"{name}: sqlstate {state}"
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorname", None):
        return f"{name}: {exc.sqlite_errorname}"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{name}: {_NUMBERS.sub('#', _QUOTED.sub('...', first))[:200]}"


def error_id(exc: BaseException) -> str:
    """The id of ``exc``'s reason in this process (10 hex digits)."""
    return hmac.new(_KEY, reason(exc).encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:10]


def kind(exc: BaseException) -> str:
    """What kind of failure ``exc`` is, in words that name nothing of the platform (no host, port, bucket, path,
    table or SQL): ``DISK_FULL``, ``UNREACHABLE``, ``BUSY``, a file's error by its errno's text alone (``Input/output
    error``, ``Too many open files``), else ``INTERNAL``."""
    for e in _chain(exc):
        name, state = type(e).__name__, _sqlstate(e)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return DISK_FULL
        if state == "53100" or (isinstance(e, sqlite3.OperationalError) and "disk is full" in str(e)):
            return DISK_FULL
        if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
            return BUSY
        if state[:2] in ("08", "57") and state != "57014" or state == "53300":
            return UNREACHABLE  # a connection lost or refused, the server shutting down, too many connections
        if name == "AgentRowsLocked":  # the store's own: another session holds the agent's rows past its wait
            return BUSY
        if state in ("55P03", "57014", "40001", "40P01") or state[:2] == "53":
            return BUSY  # a lock or statement timeout, a deadlock or serialization failure, out of resources
        if (
            name in ("PoolTimeout", "PoolClosed")
            or name in _BOTO_UNREACHABLE
            or isinstance(e, ConnectionError)
        ):
            return UNREACHABLE
        if name == "OperationalError" and type(e).__module__.startswith("psycopg") and not state:
            return UNREACHABLE  # psycopg's connection failures carry no SQLSTATE
        if name == "ClientError":
            code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
            return BUSY if code in _BOTO_BUSY else INTERNAL
        if isinstance(e, TimeoutError):
            return BUSY
        if isinstance(e, OSError) and e.errno is not None:
            return os.strerror(e.errno)
    return INTERNAL


def told(exc: BaseException) -> str:
    """What a caller is told of ``exc``: its kind and its error id."""
    return f"{kind(exc)}; error id {error_id(exc)}, in the service's log"


def retryable(exc: BaseException) -> bool:
    """Whether the caller may well succeed later (``UNAVAILABLE``), or met a fault of the service (``INTERNAL``)."""
    return kind(exc) != INTERNAL


class FaultLog:
    """Failures of one kind of call logged by reason: a reason's first failure with its traceback and its id, then
    at most once per ``LOG_EVERY_S`` with the count since (a store down fails every agent's every call)."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger
        # (what, id) -> (not logged, when last logged)
        self._book: dict[tuple[str, str], tuple[int, float]] = {}

    def failed(self, what: str, exc: BaseException) -> str:
        """Log ``exc`` (a failure of ``what``) when due, and return its id."""
        eid, now = error_id(exc), time.monotonic()
        key = (what, eid)
        since, last = self._book.get(key, (0, float("-inf")))
        if now - last < LOG_EVERY_S:
            self._book[key] = (since + 1, last)
            return eid
        if len(self._book) >= REASONS_KEPT:
            self._book = {k: v for k, v in self._book.items() if now - v[1] < LOG_EVERY_S}
            if len(self._book) >= REASONS_KEPT:
                self._book.clear()
        self._book[key] = (0, now)
        self.logger.error(
            "%s failed, error id %s (%s), %d time(s) since this id was last logged (logged at most every %g s)",
            what,
            eid,
            kind(exc),
            since + 1,
            LOG_EVERY_S,
            exc_info=exc,
        )
        return eid


class Refusal(Exception):
    """A refusal (a status and its text) raised where the call may not be ended: a task reading a stream's requests
    while another sends on it (grpc takes no status beside a message under way). The handler's own task ends the
    call with it (``context.abort``), once no message is being sent; ``Faults`` passes it on as it is."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code, self.details = code, details


def _client_gone(exc: Exception) -> bool:
    """Whether ``exc`` is grpc's own failure to send on a call whose client has gone: a refusal
    (``context.abort``) or a reply on a call the client cancelled just before (its cancel not yet delivered to the
    handler as one) fails in grpc's core with ``ExecuteBatchError``. grpc takes it as the cancel it is (it logs
    it only when the client has not closed the call); taken as the service's failure, it was logged as "an
    internal error of the service" with a traceback, and the abort tried again raised grpc's ``UsageError``, a
    second ERROR."""
    return isinstance(exc, grpc.aio.InternalError) and type(exc).__name__ == "ExecuteBatchError"


class Faults(grpc.aio.ServerInterceptor):
    """An exception a servicer method did not handle is answered ``UNAVAILABLE`` (a store's failure: the caller
    tries again) or ``INTERNAL``, naming the method, the failure's kind and its id, and logged by reason
    (``FaultLog``); grpc answered ``UNKNOWN`` with the exception's type and whole text, and logged a traceback at
    every call. A refusal (``context.abort``) and a cancelled call pass as they are, a refusal or reply grpc could
    not send to a client that had cancelled the call too (``_client_gone``)."""

    def __init__(self, faults: FaultLog | None = None) -> None:
        self.faults = faults or FaultLog()

    async def _abort(self, method: str, exc: Exception, context) -> None:
        if _client_gone(exc):
            raise exc  # grpc's: the call is over
        self.faults.failed(method, exc)
        code = grpc.StatusCode.UNAVAILABLE if retryable(exc) else grpc.StatusCode.INTERNAL
        await context.abort(
            code, f"{method.rsplit('/', 1)[-1]}: the service failed ({told(exc)}); try again later"
        )

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        if handler.unary_unary is not None or handler.stream_unary is not None:
            unary = handler.unary_unary or handler.stream_unary

            async def answered(request, context):
                try:
                    return await unary(request, context)
                except (
                    grpc.aio.AbortError,
                    Refusal,
                    NotImplementedError,
                ):  # a refusal; a method not implemented
                    raise
                except Exception as exc:
                    await self._abort(method, exc, context)

            field = "unary_unary" if handler.unary_unary is not None else "stream_unary"
            return handler._replace(**{field: answered})
        streaming = handler.unary_stream or handler.stream_stream

        async def streamed(request, context):
            try:
                async for reply in streaming(request, context):
                    yield reply
            except (grpc.aio.AbortError, Refusal, NotImplementedError):
                raise
            except Exception as exc:
                await self._abort(method, exc, context)

        field = "unary_stream" if handler.unary_stream is not None else "stream_stream"
        return handler._replace(**{field: streamed})
