"""The cost of a walk over a crafted file counted in work done, not in time: Python line events."""

from __future__ import annotations

import sys
from collections.abc import Callable


class _OverBudget(Exception):
    pass


def line_events(call: Callable[[], object], budget: int) -> int:
    """Python line events ``call()`` runs, counted up to ``budget`` (then stopped: a result over ``budget``
    means it was cut off there)."""
    lines = 0

    def trace(frame, event, arg):
        nonlocal lines
        if event == "line":
            lines += 1
            if lines > budget:
                raise _OverBudget
        return trace

    sys.settrace(trace)
    try:
        call()
    except _OverBudget:
        pass
    finally:
        sys.settrace(None)
    return lines
