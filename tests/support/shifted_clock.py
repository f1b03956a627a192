"""A stand-in for a module's ``time``: its monotonic clock moved on at will (``ahead``), its wall clock the real
one. Patched into one module (``monkeypatch.setattr(module, "time", ShiftedClock())``), never into ``time`` itself,
so an event loop and the rest of the process keep the real clock: a test waits out a setting of minutes or a day at
its default, in no wall time, and a peer's answer is not raced against a sub-second window."""

from __future__ import annotations

import time


class ShiftedClock:
    def __init__(self) -> None:
        self.ahead = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead

    @staticmethod
    def time() -> float:
        return time.time()
