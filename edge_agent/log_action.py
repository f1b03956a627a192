"""The ``log`` action: one log line per matching result (e.g. to watch a condition before wiring it
to a PLC). The smallest whole action plugin, and the example of docs/plugins.md: its settings
class and its ``act`` function here, its row in ``edge_agent.config.ACTION_PLUGINS``.

    actions:
      note_ng: {type: log, when: {verdict: NG}, level: warning}
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from edge_agent.action_base import ActionSettings

log = logging.getLogger("edge_agent.actions.log")


class LogAction(ActionSettings):
    type: Literal["log"]
    level: Literal["info", "warning"] = Field("info", description="the log level of the line")
    every: int = Field(1, ge=1, description="log one matching result in this many (the rest are counted)")


async def act(ctx, name: str, action: LogAction, result, item, value=None) -> None:
    state = ctx.state[name]
    state["matched"] = state.get("matched", 0) + 1
    if (state["matched"] - 1) % action.every:
        return
    log.log(
        logging.WARNING if action.level == "warning" else logging.INFO,
        "action %s: pipeline %s item %d: %s (score %s, label %s)",
        name,
        result.pipeline,
        result.item_seq,
        result.verdict,
        result.score_text,
        result.label,
    )
