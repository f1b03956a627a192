"""``queue.max_age_ms`` across a step of the gateway's wall clock (NTP setting the clock of a gateway without a
battery, while it runs): the items waiting when the clock steps are judged by the age they have, not dropped as
an hour or a day old, and an item really too old is still dropped, whichever way the clock went."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from devices.base import Frame
from edge_agent import pipelines
from edge_agent.config import PipelineSettings
from edge_agent.pipelines import AgeGate

IMAGE = np.zeros((4, 4, 3), np.uint8)


@pytest.fixture
def clock(monkeypatch):
    c = SimpleNamespace(wall=1.8e9, mono=5000.0)
    c.time, c.monotonic = (lambda: c.wall), (lambda: c.mono)
    monkeypatch.setattr(pipelines, "time", c)
    return c


def _frame(seq: int, captured_at: float) -> Frame:
    return Frame("cam", seq, captured_at, IMAGE)


def _gate() -> AgeGate:
    return AgeGate(
        "inspect", PipelineSettings(name="inspect", source="cam", model="m", queue={"max_age_ms": 500})
    )


@pytest.mark.parametrize("step_s", [86_400.0, 3_600.0, -3_600.0])
def test_frames_waiting_when_the_clock_steps_are_judged_by_their_own_age(clock, step_s):
    gate = _gate()
    assert gate.stale(_frame(1, clock.wall - 0.1)) is None  # the gate has seen the clock of before
    waiting = [_frame(2, clock.wall - 0.05), _frame(3, clock.wall)]  # queued, then NTP sets the clock
    clock.wall, clock.mono = clock.wall + step_s + 0.1, clock.mono + 0.1
    # formerly a step forward made each ~a day (or an hour) old: dropped unjudged, 'inference is behind'
    assert [gate.stale(f) for f in waiting] == [None, None]
    assert gate.stale(_frame(4, clock.wall - 0.02)) is None  # one taken on the new clock
    late = gate.stale(_frame(5, clock.wall - 2.0))  # really too old, on the new clock
    assert late == pytest.approx(2.0)
    old = gate.stale(_frame(6, clock.wall - step_s - 2.0))  # really too old, on the clock of before
    assert old == pytest.approx(2.0)  # (formerly never dropped after a step back: its age was negative)


def test_without_a_step_an_item_is_as_old_as_the_clock_says(clock):
    gate = _gate()
    assert gate.stale(_frame(1, clock.wall)) is None
    clock.wall, clock.mono = clock.wall + 0.6, clock.mono + 0.6
    assert gate.stale(_frame(2, clock.wall - 0.6)) == pytest.approx(0.6)


def test_an_items_stale_episode_under_way_when_its_pipeline_stops_is_ended_once(clock):
    """A stop (the agent's, a config reload) ends the episode with its event: left standing, the cloud's last word
    on it was its start, for good."""
    gate = _gate()
    assert gate.close() is None  # no episode: nothing to end
    late = _frame(1, clock.wall - 2.0)
    start = gate.drop(late, gate.stale(late))
    gate.drop(_frame(2, clock.wall - 2.0), 2.0)
    end = gate.close()
    assert start is not None and start["active"] and end is not None, (start, end)
    assert (end["active"], end["dropped"], end["age_ms"]) == (False, 2, None) and "stopped" in end["message"]
    assert gate.close() is None and not gate.status()["stale_now"]  # once only
