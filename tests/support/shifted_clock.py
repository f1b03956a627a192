"""A stand-in for a module's ``time``: its monotonic clock moved on at will (``ahead``), its wall clock the real
one. Patched into one module (``monkeypatch.setattr(module, "time", ShiftedClock())``), never into ``time`` itself,
so an event loop and the rest of the process keep the real clock: a test waits out a setting of minutes or a day at
its default, in no wall time, and a peer's answer is not raced against a sub-second window.

``held``: the monotonic clock stands still but for ``ahead``, so a rate the module keeps on it (requests a second, a
budget refilling) is the code's, whatever the machine's load: a test counts what a second of it allows, not what
the machine handled in a second of real time."""

from __future__ import annotations

import time


class ShiftedClock:
    def __init__(self, *, held: bool = False) -> None:
        self.ahead = 0.0
        self._held_at = time.monotonic() if held else None

    def monotonic(self) -> float:
        return (time.monotonic() if self._held_at is None else self._held_at) + self.ahead

    @staticmethod
    def time() -> float:
        return time.time()
