"""A background step of the fleet service that keeps failing for the same reason (its data folder full, the store
down): logged with its traceback once, then at most once per ``every_s`` with the count since, and once when it
succeeds again. The rollouts' tick runs every second and the streams' flush every ``flush_s``: each wrote a
traceback at every run while the disk stayed full, into a log that may well be on that disk."""

from __future__ import annotations

import logging
import time


class RepeatedFailure:
    def __init__(self, log: logging.Logger, what: str, every_s: float) -> None:
        self.log, self.what, self.every_s = log, what, every_s
        self.why: str | None = None  # the failure of the moment, None while the step succeeds
        self.since = 0  # failures not logged yet
        self.logged = 0.0

    def failed(self, exc: BaseException) -> None:
        why, now = f"{type(exc).__name__}: {exc}", time.monotonic()
        if why != self.why:
            self.why, self.since, self.logged = why, 0, now
            self.log.error(
                "%s failed (logged again at most every %g s)", self.what, self.every_s, exc_info=exc
            )
        elif now - self.logged >= self.every_s:
            self.log.error(
                "%s still fails (%s): %d times since last logged", self.what, why[:300], self.since + 1
            )
            self.since, self.logged = 0, now
        else:
            self.since += 1

    def succeeded(self) -> None:
        if self.why is not None:
            self.log.info("%s succeeds again (%d more failed since last logged)", self.what, self.since)
            self.why, self.since = None, 0
