"""After a hot swap, a condition naming a label the new model no longer gives can never match again (a
reject on ``{label: crack}`` lets every cracked part pass): the action runner says so at the new model's
first result, naming the action, the labels gone and the model's own, and counts it (``label_gone``)."""

from __future__ import annotations

import logging

from edge_agent.actions import ActionRunner
from edge_agent.config import parse_config
from tests.support.results import result


def _runner() -> ActionRunner:
    cfg = parse_config(
        {
            "agent": {"id": "gw"},
            "actions": {
                "reject": {"type": "log", "when": {"any": [{"label": "crack"}, {"label": {"in": ["dent"]}}]}},
                "note": {"type": "log", "when": {"verdict": "NG"}},
            },
        }
    )
    return ActionRunner(cfg, {})


def _res(version: str, labels: list[str], seq: int, label: str):
    probs = {k: 1.0 / len(labels) for k in labels}
    return result("NG", seq, model="parts", model_version=version, label=label, probabilities=probs)


async def test_a_label_the_swapped_in_model_no_longer_gives_is_said_once_with_the_action_and_labels(caplog):
    runner = _runner()
    caplog.set_level(logging.WARNING, logger="edge_agent.actions")
    for i in range(3):
        await runner.handle(["reject", "note"], _res("1.0.0", ["ok", "crack", "dent"], i, "crack"), None)
    assert "label_gone" not in runner.stats["reject"]
    for i in range(3, 6):  # the new version renamed crack to Crack
        await runner.handle(["reject", "note"], _res("1.1.0", ["ok", "Crack", "dent"], i, "Crack"), None)
    await runner.flush(timeout_s=2)
    said = [r.getMessage() for r in caplog.records if "no label" in r.getMessage()]
    # before: nothing at all; the reject action simply never matched again
    assert len(said) == 1, said
    assert "action 'reject'" in said[0] and "'crack'" in said[0] and "Crack, dent, ok" in said[0], said[0]
    assert runner.stats["reject"]["label_gone"] == 1
    assert "label_gone" not in runner.stats["note"]
    assert runner.stats["reject"]["ok"] == 3  # crack matched under 1.0.0 only


async def test_a_swap_that_keeps_the_labels_says_nothing(caplog):
    runner = _runner()
    caplog.set_level(logging.WARNING, logger="edge_agent.actions")
    await runner.handle(["reject"], _res("1.0.0", ["ok", "crack", "dent"], 0, "ok"), None)
    await runner.handle(["reject"], _res("1.1.0", ["dent", "crack", "ok", "scratch"], 1, "ok"), None)
    assert not [r for r in caplog.records if "no label" in r.getMessage()]
    assert "label_gone" not in runner.stats["reject"]


def test_labels_named_reads_every_form_of_a_label_condition():
    from edge_agent.conditions import labels_named

    spec = {
        "all": [
            {"label": "a"},
            {"not": {"label": {"in": ["b", "c"]}}},
            {"any": [{"label": {"ne": "d"}}, {"score": {"gte": 0.5}}]},
        ]
    }
    assert labels_named(spec) == {"a", "b", "c", "d"}
    assert labels_named({"verdict": "NG"}) == set() and labels_named(None) == set()
