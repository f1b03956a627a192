"""Waiting in tests: poll a condition until it holds, or fail naming what was awaited."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable


async def until(
    pred: Callable[[], object], timeout_s: float = 30.0, what: str = "condition", every_s: float = 0.05
) -> None:
    """Return once ``pred()`` is true (checked every ``every_s``; a coroutine function's result is
    awaited); ``AssertionError`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s

    async def holds() -> bool:
        got = pred()
        if isinstance(got, (asyncio.Event, threading.Event)):
            # an Event object is always true: the wait returned at once, set or not
            raise TypeError(
                f"until({what!r}): the condition returned an Event, not whether it is set (.is_set())"
            )
        return bool(await got if inspect.isawaitable(got) else got)

    while not await holds():
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(every_s)
