"""A background step of the fleet service that keeps failing for the same reason (its data folder full, the store
down): logged with its traceback once, then at most once per ``every_s`` with the count since, and once when it
succeeds again. The rollouts' tick runs every second and the streams' flush every ``flush_s``: each wrote a
traceback at every run while the disk stayed full, into a log that may well be on that disk.

A reason is its exception's type and text with the numbers left out, and every reason met since the step last
succeeded is remembered (at most ``MAX_REASONS``): a database that is down fails with texts that differ by a
number ("next attempt in 0.3 s", a port) and alternate (a reconnect refused, then the calls inside its pause),
and each such change logged a traceback, which with PostgreSQL down was every run of the tick and the poll."""

from __future__ import annotations

import logging
import re
import time

MAX_REASONS = 8  # distinct reasons remembered while a step fails; past it any new one counts as known
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _reason(exc: BaseException) -> str:
    return _NUMBER.sub("#", f"{type(exc).__name__}: {exc}")[:300]


class RepeatedFailure:
    def __init__(self, log: logging.Logger, what: str, every_s: float) -> None:
        self.log, self.what, self.every_s = log, what, every_s
        self.why: str | None = None  # the failure of the moment, None while the step succeeds
        self.known: set[str] = set()  # the reasons logged with a traceback since the step last succeeded
        self.since = 0  # failures not logged yet
        self.logged = 0.0

    def failed(self, exc: BaseException) -> None:
        why, now = f"{type(exc).__name__}: {exc}", time.monotonic()
        if (reason := _reason(exc)) not in self.known and len(self.known) < MAX_REASONS:
            self.known.add(reason)
            self.why, self.since, self.logged = why, 0, now
            self.log.error(
                "%s failed (logged again at most every %g s)", self.what, self.every_s, exc_info=exc
            )
        elif now - self.logged >= self.every_s:
            self.log.error(
                "%s still fails (%s): %d times since last logged", self.what, why[:300], self.since + 1
            )
            self.why, self.since, self.logged = why, 0, now
        else:
            self.since += 1

    def succeeded(self) -> None:
        if self.why is not None:
            self.log.info("%s succeeds again (%d more failed since last logged)", self.what, self.since)
            self.why, self.since = None, 0
            self.known.clear()
