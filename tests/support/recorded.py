"""What an agent recorded in its outbox for the cloud: the events waiting there, in order, in their wire form."""

from __future__ import annotations

import json
from typing import Any


def recorded_events(agent: Any, kind: str) -> list[dict]:
    """The events of ``kind`` in the agent's outbox, oldest first, as the cloud will read them (after a flush)."""
    outbox = agent.outbox
    assert outbox is not None, "the agent has no outbox"
    outbox.flush()
    rows = [
        json.loads(r.payload) for r in outbox.pending(limit=100_000, max_bytes=1 << 30) if r.kind == "event"
    ]
    return [r for r in rows if r.get("kind") == kind]
