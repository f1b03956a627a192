"""The ``model_failing`` episode of a model that fails at random on a steady share of its items is one episode.

A model failing on 30-50 % of its items (an engine error under memory pressure, NaN on one product of
several) swings the share over its last 20 items across both bounds (more than half starts an episode, a
quarter or fewer ended it) every few dozen items: 56-148 events (each with a WARNING or an INFO) per 10,000
items, hundreds an hour on a line. An episode now ends only after a quarter or fewer have failed for
``FAIL_QUIET_S``. The real ``ModelFailureWatch`` on a clock stepping as items come (4 a second)."""

from __future__ import annotations

import random
import time
from types import SimpleNamespace

from edge_agent import pipelines


def test_a_model_failing_on_45_percent_of_its_items_is_one_episode_ended_after_a_quiet_minute(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(pipelines, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    events = []
    watch = pipelines.ModelFailureWatch("inspect", events.append)
    rng = random.Random(7)

    def add(failing: bool) -> None:
        clock[0] += 0.25
        watch.add("engine_error" if failing else None, "vision", "1.0.0", "engine failed")

    for _ in range(2000):
        add(rng.random() < 0.45)
    assert [e["active"] for e in events] == [True], [(e["active"], e["share"]) for e in events][:10]
    # the model judges again: not ended within the first 55 s of good items; ended a quiet minute after the
    # window fell to a quarter (at the 15th good item at the latest)
    for _ in range(220):
        add(False)
        assert watch.active, "ended before a quiet minute"
    for _ in range(35):
        add(False)
    assert [e["active"] for e in events] == [True, False]
    assert events[1]["failed"] == watch.failed and not watch.status()["active"]


def test_an_episode_ends_on_time_when_items_stop_coming_but_a_slow_sources_next_item_is_awaited(monkeypatch):
    """No item for FAIL_IDLE_S (60 s) ends an episode (the timer's call, ``_on_time``, here on the stepped clock): a
    camera that stopped left it standing on /status until the next item. A source slower than that (a window
    every 2 min) is given three of its intervals: ended between two items, its episode began again at each."""
    clock = [1000.0]
    monkeypatch.setattr(pipelines, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    for interval, quiet_s, ends_by in ((0.25, 61, 61), (120.0, 70, 361)):
        events = []
        watch = pipelines.ModelFailureWatch("inspect", events.append)
        for _ in range(8):
            clock[0] += interval
            watch.add("nonfinite_output", "vision", "1.0.0", "NaN")
        assert watch.active and [e["active"] for e in events] == [True]
        clock[0] += quiet_s
        watch._on_time()
        assert watch.active is (quiet_s < ends_by), interval
        clock[0] += ends_by - quiet_s
        watch._on_time()
        assert not watch.active and [e["active"] for e in events] == [True, False], interval
        assert "no item has reached the model" in events[1]["message"] and events[1]["failed"] == 8


def test_a_source_pausing_between_bursts_keeps_one_episode_while_the_model_fails_on_every_item(monkeypatch):
    """Bursts of 8 items 0.25 s apart, then 90 s without any (a tray of parts, a line stopping for minutes), the
    model failing on every item: the first pause may end the episode (nothing said yet that the source pauses), the
    episode begun at the next burst is given three of its longest interval and stands through the later pauses.
    Three of the last interval (short, within a burst) ended it at every pause, and the next failure began another:
    a WARNING and two events per pause. The timer's calls (``_on_time``) at 61 and 89 s into each pause."""
    clock = [1000.0]
    monkeypatch.setattr(pipelines, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    events = []
    watch = pipelines.ModelFailureWatch("inspect", events.append)
    for _ in range(5):
        for _ in range(8):
            clock[0] += 0.25
            watch.add("nonfinite_output", "vision", "1.0.0", "NaN")
        clock[0] += 61.0
        watch._on_time()
        clock[0] += 28.0
        watch._on_time()
        clock[0] += 1.0 - 0.25  # the next burst's first item 90 s after the last one
    assert [e["active"] for e in events] == [True, False, True], [e["message"][:80] for e in events]
    assert watch.active
    # a stop is still seen: no item for three of the longest interval (90 s) ends it
    clock[0] += 3 * 90.0 + 1
    watch._on_time()
    assert not watch.active and [e["active"] for e in events] == [True, False, True, False]


def test_a_night_s_pause_before_an_episode_s_first_item_does_not_hold_the_episode_for_days(monkeypatch):
    """Five failing items in the evening, the line stopped for the night, the first item of the morning fails and
    begins the episode, the line runs: taken as the source's rhythm, the night's 12 h held the episode 36 h after
    the camera then stopped, on /status and in the heartbeat. The limit is bounded (FAIL_IDLE_MAX_S)."""
    clock = [1000.0]
    monkeypatch.setattr(pipelines, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    events = []
    watch = pipelines.ModelFailureWatch("inspect", events.append)
    for gap in [0.25] * 5 + [12 * 3600.0] + [0.25] * 20:
        clock[0] += gap
        watch.add("nonfinite_output", "vision", "1.0.0", "NaN")
    assert watch.active and [e["active"] for e in events] == [True]
    clock[0] += pipelines.FAIL_IDLE_MAX_S + 1  # the camera stopped
    watch._on_time()
    assert not watch.active and [e["active"] for e in events] == [True, False]


def _failing_on_8_items(monkeypatch) -> tuple[list[float], list, pipelines.ModelFailureWatch]:
    """(the stepped clock, the events told, the watch) after the model (slot vision, 1.0.0) failed on 8 items, 4 a
    second: an episode under way."""
    clock = [1000.0]
    monkeypatch.setattr(pipelines, "time", SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    events: list = []
    watch = pipelines.ModelFailureWatch("inspect", events.append)
    for _ in range(8):
        clock[0] += 0.25
        watch.add("engine_error", "vision", "1.0.0", "engine failed")
    assert watch.active
    return clock, events, watch


def test_an_episode_under_way_when_its_pipeline_stops_is_ended_and_told(monkeypatch):
    """A stop (the agent's, a config reload) ends the episode with its event: left standing, the cloud's last word
    on it was its start, for good when the model judged its items after the restart."""
    _, events, watch = _failing_on_8_items(monkeypatch)
    watch.close()
    assert [e["active"] for e in events] == [True, False] and not watch.status()["active"]
    assert events[1]["failed"] == 8 and "stopped" in events[1]["message"], events[1]
    watch.close()  # once only
    assert len(events) == 2


def test_an_episode_ended_after_a_hot_swap_names_the_version_that_failed(monkeypatch):
    """A model failing on every item, then a package swapped in (a hot swap, a rollback) that judges them: the
    episode's end names the version whose failures began it (its event's ``model_version``, as its start's) and the
    version serving now. Before, it named the new version alone: the cloud read that 1.1.0's episode had ended, and
    1.0.0's was never told ended."""
    clock, events, watch = _failing_on_8_items(monkeypatch)
    for _ in range(300):  # 1.1.0 swapped in: a quiet minute ends the episode
        clock[0] += 0.25
        watch.add(None, "vision", "1.1.0")
    assert [(e["active"], e["model_version"]) for e in events] == [(True, "1.0.0"), (False, "1.0.0")], events
    assert "(slot vision, 1.0.0; 1.1.0 serves now)" in events[1]["message"], events[1]["message"]
