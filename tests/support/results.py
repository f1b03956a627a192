"""A model's result as the action runner gets it, for tests of actions and PLC outputs."""

from __future__ import annotations

import time
from typing import Any

from edge_agent.types import Result


def result(verdict: str, seq: int, *, pipeline: str = "p", source: str = "plc", **kw: Any) -> Result:
    """``verdict`` (OK/NG/UNSURE) for item ``seq``, captured now; other ``Result`` fields by keyword."""
    fields: dict[str, Any] = {
        "model": "m",
        "model_version": "1",
        "engine": "e",
        "score": 1.0,
        **kw,
    }
    return Result(
        pipeline=pipeline, source=source, item_seq=seq, captured_at=time.time(), verdict=verdict, **fields
    )
