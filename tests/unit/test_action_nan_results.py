"""A result holding NaN in a number a condition reads is not judged by that condition: NaN is neither
above nor below a threshold. An alarm counts it neither as a match nor as a miss (NaN scores must not
clear a raised alarm, nor raise one through ``not``), an output keeps its state, and it is counted
``not_a_number``; actions whose conditions read other fields act on it as ever."""

from __future__ import annotations

import math

from edge_agent.actions import ActionRunner
from edge_agent.config import parse_config
from tests.support.results import result


def _runner() -> ActionRunner:
    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "actions": {
                "high": {
                    "type": "alarm",
                    "raise_after": 2,
                    "clear_after": 2,
                    "when": {"score": {"gte": 0.8}},
                },
                "not_low": {
                    "type": "alarm",
                    "raise_after": 2,
                    "clear_after": 2,
                    "when": {"not": {"score": {"lt": 0.5}}},
                },
                "ng": {"type": "log", "when": {"verdict": "NG"}},
            },
        }
    )
    return ActionRunner(cfg, {})


def _active(runner: ActionRunner, name: str) -> bool:
    return runner.alarm_state[(name, "p")]["active"]


async def test_nan_scores_neither_clear_a_raised_alarm_nor_raise_one():
    runner = _runner()
    names = ["high", "not_low", "ng"]
    for i in range(2):
        await runner.handle(names, result("NG", i, score=0.9), None)
    assert _active(runner, "high") and _active(runner, "not_low")
    for i in range(2, 6):
        await runner.handle(names, result("NG", i, score=0.2), None)
    assert not _active(runner, "high") and not _active(runner, "not_low")
    await runner.handle(names, result("NG", 6, score=0.9), None)  # one hit towards a raise
    for i in range(7, 12):
        await runner.handle(names, result("NG", i, score=math.nan), None)
    # before: NaN >= 0.8 is false (a miss: a raised alarm cleared), and not (NaN < 0.5) is true (a match)
    assert not _active(runner, "not_low")
    assert runner.alarm_state[("high", "p")]["hits"] == 1
    await runner.handle(names, result("NG", 12, score=0.9), None)
    assert _active(runner, "high")  # the NaN results did not break the run of hits
    assert runner.stats["high"]["not_a_number"] == 5 and runner.stats["not_low"]["not_a_number"] == 5
    await runner.flush(timeout_s=2)
    assert runner.stats["ng"]["ok"] == 13 and "not_a_number" not in runner.stats["ng"]
