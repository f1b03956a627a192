"""How long a ``source_down`` / ``source_halted`` lasted, at the agent's source-watch seam (``Agent._source_liveness``,
``Agent._source_halt``; monotonic times given, the wall clock set apart): the real asyncua server and agent show
it in tests/integration/test_opcua_bad_reasons_and_clock.py; here the wall clock's steps, the told files an agent
before this one left, and restarts in the middle of a flapping spell that no server could be made to show in a
test's time.

Durations came from the wall clock: one stepped back gave 0 s (or less), one set by NTP after the episode began
gave ~56 years, and a told file written by a gateway whose clock was never set did the same after a restart. An
agent restarted mid-flap, at a moment the source happened to serve, ended the episode at once, and the next
flap started another: a start and an end the spell never had."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

from edge_agent import agent as agent_module
from edge_agent.agent import DOWNS_FILE, Agent
from tests.unit.test_source_halted_event import _agent


class _Wall:
    """The ``time`` module as the agent sees it: the wall clock where the test puts it, the rest as it is."""

    def __init__(self, t: float) -> None:
        self.t = t

    def time(self) -> float:
        return self.t

    def __getattr__(self, name: str):
        return getattr(time, name)


def _events(agent: Agent, kind: str) -> list[dict]:
    return [dict(e) for e in agent.events if e["kind"] == kind]


def _src(state: str, halted: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        state=SimpleNamespace(value=state), halted=halted, stats=SimpleNamespace(last_error="refused")
    )


def _halt(since_t: float, for_s: float) -> dict:
    return {
        "reason": "server_not_running",
        "since": agent_module._utc(max(since_t, 0.0)),
        "since_t": since_t,
        "for_s": for_s,
        "checks": 1,
        "halts": 1,
    }


def test_an_outage_and_a_halt_last_what_the_monotonic_clock_says_whatever_the_wall_clock_did(
    tmp_path: Path, monkeypatch
) -> None:
    """An outage begins with the wall clock in 1970 (no battery-backed clock, NTP not yet heard), a halt with it
    set; NTP then sets it (a step of 56 years), and steps it back an hour: the outage lasted 100 s, the halt 60 s,
    as said at their ends. Before: about 56 years, and 0 s."""
    wall = _Wall(100_000.0)  # 1970-01-02
    monkeypatch.setattr(agent_module, "time", wall)
    agent = _agent(tmp_path)
    for t in range(0, 40, 2):
        agent._source_liveness("plc", _src("backoff"), 1000.0 + t)
        wall.t += 2.0
    (start,) = _events(agent, "source_down")
    assert start["active"] is True, start
    wall.t = 1_800_000_000.0  # NTP sets the clock
    for t in range(40, 100, 2):
        agent._source_liveness("plc", _src("backoff"), 1000.0 + t)
    agent._source_liveness("plc", _src("connected"), 1100.0)
    _, end = _events(agent, "source_down")
    assert end["active"] is False and end["down_s"] == 100.0, end
    # a halt (its source's own clocks: since on the wall clock, for_s on the monotonic one), then the clock
    # stepped back an hour while it goes on
    for t in range(0, 40, 2):
        agent._source_halt("plc", _src("connected", _halt(1_800_000_000.0, float(t))), 2000.0 + t)
    (hstart,) = _events(agent, "source_halted")
    assert hstart["since"] == agent_module._utc(1_800_000_000.0), hstart
    wall.t -= 3600.0
    agent._source_halt("plc", _src("connected"), 2060.0)
    _, hend = _events(agent, "source_halted")
    assert hend["active"] is False and hend["halted_s"] == 60.0 and hend["since"] == hstart["since"], hend


def _told_down(tmp_path: Path, rec: dict) -> None:
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / DOWNS_FILE).write_text(json.dumps({"plc": rec}))


def test_an_outage_carried_across_a_restart_whose_duration_cannot_be_trusted_ends_with_it_unknown(
    tmp_path: Path,
) -> None:
    """The next agent ends an outage an agent before it told of: its start read off a clock never set (1970), or
    later than now (the clock stepped back since): down_s is null and the message says why, not 56 years or 0 s.
    A start on another boot's monotonic clock is not used; a sane wall clock at both ends is."""
    _told_down(tmp_path, {"since": "1970-01-01T00:01:40+00:00", "since_t": 100.0, "flaps": 1})
    agent = _agent(tmp_path)
    agent._source_liveness("plc", _src("connected"), 0.0)
    (end,) = _events(agent, "source_down")
    assert end["active"] is False and end["down_s"] is None and "unknown" in end["message"], end
    ahead = time.time() + 3600.0
    _told_down(tmp_path, {"since": agent_module._utc(ahead), "since_t": ahead, "flaps": 1})
    agent = _agent(tmp_path)
    agent._source_liveness("plc", _src("connected"), 0.0)
    (end,) = _events(agent, "source_down")
    assert end["down_s"] is None and "unknown" in end["message"], end
    before = time.time() - 600.0
    _told_down(
        tmp_path,
        {"since": agent_module._utc(before), "since_t": before, "flaps": 1, "mono": 1.0, "boot": "x"},
    )
    agent = _agent(tmp_path)
    agent._source_liveness("plc", _src("connected"), 0.0)
    (end,) = _events(agent, "source_down")
    assert end["down_s"] is not None and 600.0 <= end["down_s"] < 3600.0, end


def test_a_told_file_holding_infinite_or_huge_times_gives_no_infinite_duration(tmp_path: Path) -> None:
    """A told file (the agent's own data dir, but written by an older agent, a tool or a damaged disk) whose
    ``mono`` or ``since_t`` is ``-Infinity`` or ``1e308``: Python's json reads both, and the outage's end said
    ``down_s: inf`` (a value JSON cannot carry to the cloud). Now such a time is none: the duration comes from
    the other clock, or is unknown and said so."""
    boot = _agent(tmp_path)._boot
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    before = time.time() - 600.0
    for mono in ("-Infinity", "-1e308", "1" + "0" * 400):
        (tmp_path / "data" / DOWNS_FILE).write_text(
            f'{{"plc": {{"since": "{agent_module._utc(before)}", "since_t": {before!r}, "flaps": 1, '
            f'"mono": {mono}, "boot": "{boot}"}}}}'
        )
        agent = _agent(tmp_path)
        agent._source_liveness("plc", _src("connected"), 0.0)
        (end,) = _events(agent, "source_down")
        assert end["down_s"] is not None and 600.0 <= end["down_s"] < 3600.0, (mono, end)
    for since_t in ("-Infinity", "-1e308", "Infinity", "1" + "0" * 400):
        (tmp_path / "data" / DOWNS_FILE).write_text(
            f'{{"plc": {{"since": "2026-01-01T00:00:00+00:00", "since_t": {since_t}, "flaps": 1}}}}'
        )
        agent = _agent(tmp_path)
        agent._source_liveness("plc", _src("connected"), 0.0)
        (end,) = _events(agent, "source_down")
        assert end["down_s"] is None and "unknown" in end["message"], (since_t, end)


def _flap(watch, t0: float, cycles: int, bad: callable, good: callable) -> float:
    """``cycles`` of 20 s bad, 4 s good, from ``t0``, one pass every 2 s; the time after them."""
    t = t0
    for _ in range(cycles):
        for _ in range(10):
            bad(t)
            t += 2.0
        for _ in range(2):
            good(t)
            t += 2.0
    return t


def test_an_agent_restarted_mid_flap_ends_the_spell_once_and_starts_no_other(tmp_path: Path) -> None:
    """A source flapping (down 20 s, back 4 s, for many minutes) is told down once; the agent restarts at a
    moment the source serves and the flapping goes on; then it serves steadily. Across both agents: one start,
    one end. Before, the next agent ended it at its first connected pass, and the next flaps started another."""
    first = _agent(tmp_path)
    down = lambda a: lambda t: a._source_liveness("plc", _src("backoff"), t)  # noqa: E731
    up = lambda a: lambda t: a._source_liveness("plc", _src("connected"), t)  # noqa: E731
    _flap(first, 0.0, 4, down(first), up(first))
    assert [e["active"] for e in _events(first, "source_down")] == [True], _events(first, "source_down")
    second = _agent(tmp_path)  # restarted while the source is connected
    t = _flap(second, 0.0, 1, up(second), up(second))
    t = _flap(second, t, 8, down(second), up(second))
    for _ in range(80):  # steadily connected: the spell ends once
        up(second)(t)
        t += 2.0
    assert [e["active"] for e in _events(second, "source_down")] == [False], _events(second, "source_down")
    (end,) = _events(second, "source_down")
    assert end["flaps"] >= 2 and end["down_s"] is not None, end


def test_an_agent_restarted_mid_halting_spell_ends_it_once_and_starts_no_other(tmp_path: Path) -> None:
    """The same for a PLC that keeps halting (20 s halted, then healthy for 40 s, more than the 30 s that ends a
    single halt carried across a restart): one source_halted start before the restart, one end after it."""
    first = _agent(tmp_path)
    now_h = lambda t: _halt(time.time(), 2.0)  # noqa: E731
    halt = lambda a: lambda t: a._source_halt("plc", _src("connected", now_h(t)), t)  # noqa: E731
    well = lambda a: lambda t: a._source_halt("plc", _src("connected"), t)  # noqa: E731
    _flap(first, 0.0, 4, halt(first), well(first))
    assert [e["active"] for e in _events(first, "source_halted")] == [True], _events(first, "source_halted")
    second = _agent(tmp_path)
    t = 0.0
    for _ in range(4):  # healthy 40 s, halted 20 s
        for _ in range(20):
            well(second)(t)
            t += 2.0
        for _ in range(10):
            halt(second)(t)
            t += 2.0
    for _ in range(80):
        well(second)(t)
        t += 2.0
    assert [e["active"] for e in _events(second, "source_halted")] == [False], _events(
        second, "source_halted"
    )


def test_an_agent_restarted_in_a_long_outage_of_a_flapping_spell_ends_the_spell_once_and_starts_no_other(
    tmp_path: Path,
) -> None:
    """A source flapping (down 20 s, back 4 s) is told down once; the agent restarts while it is down, and it
    stays down 40 s (long enough for the next agent to find it down), then flaps on, then serves steadily. Across
    both agents: one start, one end, the end counting the flaps. Before, the next agent took the outage it found
    as a clean one of its own (flaps 1): it ended it at the first connected pass, and the next flaps started
    another episode (a start and an end the spell never had)."""
    first = _agent(tmp_path)
    down = lambda a: lambda t: a._source_liveness("plc", _src("backoff"), t)  # noqa: E731
    up = lambda a: lambda t: a._source_liveness("plc", _src("connected"), t)  # noqa: E731
    _flap(first, 0.0, 4, down(first), up(first))
    (start,) = _events(first, "source_down")
    assert start["active"] is True and start["flaps"] >= 2, start
    second = _agent(tmp_path)  # restarted while the source is down
    t = 0.0
    for _ in range(20):  # down 40 s
        down(second)(t)
        t += 2.0
    t = _flap(second, t, 4, up(second), down(second))  # back 20 s, down 4 s
    for _ in range(80):  # steadily connected: the spell ends once
        up(second)(t)
        t += 2.0
    assert [e["active"] for e in _events(second, "source_down")] == [False], _events(second, "source_down")
    (end,) = _events(second, "source_down")
    assert end["flaps"] >= start["flaps"] and end["down_s"] is not None, end
