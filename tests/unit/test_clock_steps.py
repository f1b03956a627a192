"""Rate windows count elapsed (monotonic) time: a wall clock stepped back by NTP neither stalls
save_sample's hourly budget nor does a step forward renew it early."""

from __future__ import annotations

import types

import numpy as np

from devices.base import Frame
from edge_agent import actions
from edge_agent.config import parse_config
from edge_agent.types import Result


class Clock:
    """Stands in for the ``time`` module in ``edge_agent.actions``: wall and monotonic set apart."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 5_000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def runner(tmp_path, max_per_hour: int):
    cfg = parse_config(
        {
            "agent": {"id": "a", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
            "actions": {"keep": {"type": "save_sample", "max_per_hour": max_per_hour}},
            "http": {"enabled": False},
        },
        "t.yaml",
        str(tmp_path),
    )
    return actions.ActionRunner(cfg, {}), cfg.actions["keep"]


def save(ctx, action, seq: int) -> None:
    res = Result("p", "cam", seq, 0.0, "m", "1.0.0", "onnxruntime", "NG", 0.9)
    frame = Frame("cam", seq, 0.0, np.zeros((4, 4, 3), np.uint8))
    actions._save(ctx, "keep", action, res, frame)


def saved(tmp_path) -> int:
    return len(list((tmp_path / "data" / "samples").glob("*.json")))


def test_the_sample_budget_renews_an_hour_later_even_after_the_clock_stepped_back(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(actions, "time", types.SimpleNamespace(time=clock.time, monotonic=clock.monotonic))
    ctx, action = runner(tmp_path, 3)
    for i in range(4):
        save(ctx, action, i)
    assert saved(tmp_path) == 3 and ctx.stats["keep"]["over_budget"] == 1
    clock.wall -= 86400  # NTP steps the wall clock back a day
    clock.wall += 7200  # then two hours pass
    clock.mono += 7200
    save(ctx, action, 10)
    assert saved(tmp_path) == 4
    assert ctx.stats["keep"]["over_budget"] == 1


def test_a_clock_stepped_forward_does_not_renew_the_sample_budget_early(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(actions, "time", types.SimpleNamespace(time=clock.time, monotonic=clock.monotonic))
    ctx, action = runner(tmp_path, 3)
    for i in range(3):
        save(ctx, action, i)
    clock.wall += 2 * 3600  # stepped forward; one second has passed
    clock.mono += 1
    save(ctx, action, 10)
    assert saved(tmp_path) == 3
    assert ctx.stats["keep"]["over_budget"] == 1
