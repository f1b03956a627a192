"""The ``source_halted`` rule at the agent's source-watch seam (``Agent._source_halt``), with the source's
``halted`` given: what the real asyncua server and agent show in tests/integration/test_opcua_halt_event.py,
here over hundreds of passes and flapping halts that no server could be made to show in a test's time."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from edge_agent.agent import Agent
from edge_agent.config import parse_config


def _halts(agent: Agent) -> list[dict]:
    return [dict(e) for e in agent.events if e["kind"] == "source_halted"]


def _agent(tmp_path: Path) -> Agent:
    source = {
        "type": "opcua",
        "endpoint": "opc.tcp://127.0.0.1:4840/",
        "nodes": [{"node_id": "ns=2;s=Speed"}],
    }
    return Agent(
        parse_config(
            {
                "agent": {"id": "gw", "data_dir": str(tmp_path / "data")},
                "http": {"enabled": False},
                "sources": {"plc": source},
            }
        )
    )


def _src(halted: dict | None, state: str = "connected") -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(value=state), halted=halted)


def _h(since_t: float, checks: int = 0, reason: str = "server_clock_frozen") -> dict:
    return {
        "reason": reason,
        "since": f"t{since_t}",
        # a time the gateway's clock was set at (2023 on): one before 2001 is a clock never set, its since unknown
        "since_t": 1_700_000_000.0 + since_t,
        "for_s": 1.0,
        "checks": checks,
        "halts": 1,
    }


def test_rare_short_halts_say_nothing_and_each_long_halt_is_said_once_with_its_end(tmp_path: Path) -> None:
    """The rule on its own, at the source-watch seam: short halts far apart (never 30 s halted in total within
    2 minutes) raise nothing however often they come; a long one raises one event however many passes see it;
    a new halt (another since, a reconnect's session dating it anew) while it goes on is the same episode, not
    an end and a new start; healthy again, its end at once."""
    agent = _agent(tmp_path)
    watch = agent._source_halt
    t = 1000.0
    for k in range(20):  # a 10 s halt every 100 s: below the 30 s in 2 minutes
        for dt in (0.0, 5.0, 10.0):
            watch("plc", _src(_h(100.0 + k, checks=int(dt))), t + dt)
        watch("plc", _src(None), t + 12.0)
        t += 100.0
    assert not _halts(agent)
    t += 200.0
    for dt in range(0, 300, 2):  # one halt for 5 minutes, seen at each pass
        watch("plc", _src(_h(500.0, checks=dt)), t + dt)
    assert [e["active"] for e in _halts(agent)] == [True], _halts(agent)
    assert _halts(agent)[0]["flaps"] == 1 and _halts(agent)[0]["since"] == "t500.0"
    t += 300.0
    watch("plc", _src(_h(900.0, reason="subscription_stalled")), t)  # another halt at once: the same episode
    watch("plc", _src(_h(900.0, reason="subscription_stalled"), state="connecting"), t + 31.0)
    assert [e["active"] for e in _halts(agent)] == [True]
    watch("plc", _src(_h(900.0), state="stopped"), t + 60.0)  # the agent stopping says nothing
    assert len(_halts(agent)) == 1
    watch("plc", _src(None), t + 62.0)
    assert [e["active"] for e in _halts(agent)] == [True, False]
    end = _halts(agent)[1]
    assert end["since"] == "t500.0" and end["reason"] == "subscription_stalled" and end["flaps"] == 1, end


def test_a_server_halting_20_s_at_a_time_for_hours_is_told_once_and_ended_once_steadily_healthy(
    tmp_path: Path,
) -> None:
    """A PLC whose subscription stalls for 20 s, is judged recovered at a reconnect, stalls again, for two hours:
    no halt lasts 30 s, so the cloud was never told (the agent saw 360 halts). Now halted for 30 s in total
    within 2 minutes is an episode: one start (flapping, with the halts counted), no end at each short
    recovery, and one end once the server has been healthy and halted for at most 5% of the last 2 minutes."""
    agent = _agent(tmp_path)
    watch = agent._source_halt
    t = 0.0
    for k in range(360):  # 20 s halted (a new halt each time), 4 s healthy, 2 s reconnecting
        for dt in range(0, 20, 2):
            watch("plc", _src(_h(float(k), checks=dt, reason="subscription_stalled")), t + dt)
        watch("plc", _src(None), t + 20.0)
        watch("plc", _src(None), t + 22.0)
        watch("plc", _src(None, state="connecting"), t + 24.0)
        t += 26.0
    (start,) = _halts(agent)
    assert start["active"] is True and start["flaps"] == 2 and start["reason"] == "subscription_stalled", (
        start
    )
    for dt in range(0, 108, 2):  # healthy (a reconnect at 60 s), but halted 20 s within the last 2 minutes
        watch("plc", _src(None, state="connecting" if dt == 60 else "connected"), t + dt)
    assert len(_halts(agent)) == 1
    watch("plc", _src(None), t + 108.0)  # halted 6 s (5%) of the last 2 minutes: ended
    (_, end) = _halts(agent)
    assert end["active"] is False and end["flaps"] == 360 and end["since"] == start["since"], end
    assert end["halted_s"] is not None, end
    assert not _halts(_agent(tmp_path))  # its end is not said again after a restart


def test_halts_just_over_30_s_again_and_again_are_not_a_start_and_end_each_time(tmp_path: Path) -> None:
    """Halts of 34 s with 10 s of health between them, for an hour: each was a start and an end (160 events).
    The first is a clean halt (start, end at once, as before); the next one, within the 2 minutes, is a
    flapping episode: one start, its end once healthy for 2 minutes."""
    agent = _agent(tmp_path)
    watch = agent._source_halt
    t = 0.0
    for k in range(80):
        for dt in range(0, 36, 2):
            watch("plc", _src(_h(float(k), checks=dt)), t + dt)
        for up in (36.0, 38.0, 40.0, 42.0):
            watch("plc", _src(None), t + up)
        t += 44.0
    assert [e["active"] for e in _halts(agent)] == [True, False, True], _halts(agent)
    watch("plc", _src(None), t + 120.0)
    assert [e["active"] for e in _halts(agent)] == [True, False, True, False]
    assert _halts(agent)[3]["flaps"] == 80  # the first halt's too: it was within the 2 minutes


def _opc(endpoint: str = "opc.tcp://127.0.0.1:4840/") -> dict:
    return {"type": "opcua", "endpoint": endpoint, "nodes": [{"node_id": "ns=2;s=Speed"}]}


def _agent_with(tmp_path: Path, sources: dict) -> Agent:
    return Agent(
        parse_config(
            {
                "agent": {"id": "gw", "data_dir": str(tmp_path / "data")},
                "http": {"enabled": False},
                "sources": sources,
            }
        )
    )


def _told(tmp_path: Path, since_t: float = 500.0) -> Agent:
    """An agent that told the cloud of a halt of ``plc`` and then stopped (a restart, a config reload)."""
    agent = _agent(tmp_path)
    agent._source_halt("plc", _src(_h(since_t)), 1000.0)
    agent._source_halt("plc", _src(_h(since_t, checks=15)), 1031.0)
    agent._source_halt("plc", _src(_h(since_t), state="stopped"), 1033.0)
    assert [e["active"] for e in _halts(agent)] == [True]
    return agent


def test_a_halt_that_ended_while_the_agent_restarted_has_its_end_said_by_the_next_agent(
    tmp_path: Path,
) -> None:
    """The halt the cloud was told of ended while the agent restarted (or reloaded its config): the next agent,
    once the source is connected and healthy for the confirmation, says its end with the since the cloud knows.
    Not while the source is still connecting, nor at its first healthy pass (a check may not have run yet).
    Before, no one ever said that halt's end: the fleet saw the PLC halted for good."""
    _told(tmp_path)
    agent = _agent(tmp_path)
    watch = agent._source_halt
    watch("plc", _src(None, state="connecting"), 0.0)
    watch("plc", _src(None), 40.0)  # connected: healthy from here
    watch("plc", _src(None, state="backoff"), 42.0)  # lost again before it was confirmed
    watch("plc", _src(None), 44.0)
    watch("plc", _src(None), 70.0)
    assert not _halts(agent)
    watch("plc", _src(None), 74.0)
    (end,) = _halts(agent)
    assert end["active"] is False and end["since"] == "t500.0" and end["reason"] == "server_clock_frozen", end
    assert end["checks"] == 15 and end["halted_s"] is not None, end
    watch("plc", _src(None), 200.0)
    assert len(_halts(agent)) == 1
    assert not _halts(_agent(tmp_path)) and _agent(tmp_path)._halt_carried == {}  # said once, across restarts


def test_a_halt_still_going_on_after_a_restart_is_not_said_twice_and_its_end_keeps_its_first_since(
    tmp_path: Path,
) -> None:
    """Still halted when the next agent looks: the halt the cloud was told of goes on (no second start, though
    the source's new session dates it anew), and its end carries the since the cloud was told."""
    _told(tmp_path)
    agent = _agent(tmp_path)
    watch = agent._source_halt
    for k in range(40):
        watch("plc", _src(_h(2000.0, checks=k)), 100.0 + 2 * k)
    assert not _halts(agent)
    watch("plc", _src(None), 200.0)
    (end,) = _halts(agent)
    assert end["active"] is False and end["since"] == "t500.0" and end["checks"] == 39, end


def test_a_halt_whose_source_a_config_reload_removed_has_its_end_said(tmp_path: Path) -> None:
    """The next configuration has no source ``plc`` (removed or renamed): its halt's end is said at the first
    pass of the source watch, naming why; the other sources are untouched."""
    _told(tmp_path)
    agent = _agent_with(tmp_path, {"press": _opc()})
    agent._told_unconfigured()
    (end,) = _halts(agent)
    assert end["source"] == "plc" and end["active"] is False and end["since"] == "t500.0", end
    assert "no longer in the agent's configuration" in end["message"], end
    agent._told_unconfigured()
    agent._source_halt("press", _src(None), 0.0)
    assert len(_halts(agent)) == 1 and not _halts(_agent(tmp_path))


def _downs(agent: Agent) -> list[dict]:
    return [dict(e) for e in agent.events if e["kind"] == "source_down"]


def _down_src(state: str) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(value=state), stats=SimpleNamespace(last_error="refused"))


def test_an_outage_told_before_a_restart_is_ended_once_and_not_started_twice(tmp_path: Path) -> None:
    """source_down has the same seam: an outage the cloud was told of before a restart is not told again while it
    goes on (the next agent's own 30 s); connected, its end is said once, also by an agent after that one. A
    source a config reload removed has its outage ended at the first pass."""
    agent = _agent_with(tmp_path, {"plc": _opc(), "press": _opc()})
    for name in ("plc", "press"):
        agent._source_liveness(name, _down_src("backoff"), 0.0)
        agent._source_liveness(name, _down_src("backoff"), 31.0)
    assert [(e["source"], e["active"]) for e in _downs(agent)] == [("plc", True), ("press", True)]
    again = _agent_with(tmp_path, {"plc": _opc()})  # restarted with press removed from the configuration
    again._told_unconfigured()
    (gone,) = _downs(again)
    assert gone["source"] == "press" and gone["active"] is False and "no longer" in gone["message"], gone
    for t in range(0, 100, 2):  # still down: the same outage
        again._source_liveness("plc", _down_src("backoff"), float(t))
    assert len(_downs(again)) == 1
    third = _agent_with(tmp_path, {"plc": _opc()})  # another restart, then connected
    third._source_liveness("plc", _down_src("connecting"), 0.0)
    third._source_liveness("plc", _down_src("connected"), 2.0)
    (end,) = _downs(third)
    assert end["source"] == "plc" and end["active"] is False and end["down_s"] is not None, end
    assert not _downs(_agent_with(tmp_path, {"plc": _opc()}))  # said once
    fourth = _agent_with(tmp_path, {"plc": _opc()})
    fourth._told_unconfigured()
    fourth._source_liveness("plc", _down_src("connected"), 0.0)
    assert not _downs(fourth)
