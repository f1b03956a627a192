"""The `log` action (the example plugin of docs/plugins.md): one line per matching result, every Nth."""

from __future__ import annotations

import logging

from edge_agent.actions import ActionRunner
from edge_agent.config import ConfigError, parse_config
from edge_agent.types import Result


def result(seq: int, verdict: str) -> Result:
    return Result(
        pipeline="p",
        source="s",
        item_seq=seq,
        captured_at=0.0,
        model="m",
        model_version="1.0.0",
        engine="onnxruntime",
        verdict=verdict,
        score=0.9 if verdict == "NG" else 0.1,
    )


async def test_log_action_logs_one_matching_result_in_every(caplog):
    cfg = parse_config(
        {"agent": {"id": "gw"}, "actions": {"note": {"type": "log", "when": {"verdict": "NG"}, "every": 2}}}
    )
    runner = ActionRunner(cfg, sources={})
    with caplog.at_level(logging.INFO, logger="edge_agent.actions.log"):
        for seq, verdict in enumerate(["NG", "OK", "NG", "NG"]):
            await runner.handle(["note"], result(seq, verdict), None)
        await runner.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "edge_agent.actions.log"]
    assert (
        len(lines) == 2 and "item 0: NG" in lines[0] and "item 3: NG" in lines[1]
    )  # NG 0, 2, 3: 1st and 3rd
    assert runner.stats["note"]["ok"] == 3


def test_log_action_options_are_checked_like_any_action():
    try:
        parse_config({"agent": {"id": "gw"}, "actions": {"note": {"type": "log", "levle": "warning"}}})
    except ConfigError as exc:
        assert any("actions.note" in e and "levle" in e and "level" in e for e in exc.errors), exc.errors
    else:
        raise AssertionError("a typo in an action option must be refused")


async def test_the_line_writes_a_whole_score_with_every_digit_and_a_fraction_to_3_decimals(caplog):
    """A rule's score is its tag's value: an Int64 counter past 2**53 is written whole. ``%.3f`` wrote
    9007199254740993 as 9007199254740992.000, a count the plant never had."""
    cfg = parse_config({"agent": {"id": "gw"}, "actions": {"note": {"type": "log"}}})
    runner = ActionRunner(cfg, sources={})
    counter = result(0, "NG")
    counter.score = 2**53 + 1
    with caplog.at_level(logging.INFO, logger="edge_agent.actions.log"):
        await runner.handle(["note"], counter, None)
        await runner.handle(["note"], result(1, "NG"), None)
        await runner.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "edge_agent.actions.log"]
    assert "(score 9007199254740993, label" in lines[0] and "(score 0.900, label" in lines[1], lines
