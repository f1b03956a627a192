"""A flapping source (edge_agent.flapping) at the agent's source-watch seam, with a fake clock: ``source_down``
for a camera on a bad cable, and the told-episode files this morning's agents wrote (no ``flaps`` in them) read
by this one. The halt side is in test_source_halted_event.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from edge_agent.agent import DOWNS_FILE, HALTS_FILE, Agent
from edge_agent.flapping import FlapWatch
from tests.unit.test_source_halted_event import _agent_with, _opc


def _agent(tmp_path: Path) -> Agent:
    return _agent_with(tmp_path, {"cam": _opc(), "plc": _opc()})


def _events(agent: Agent, kind: str) -> list[dict]:
    return [dict(e) for e in agent.events if e["kind"] == kind]


def _src(state: str, halted: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        state=SimpleNamespace(value=state), stats=SimpleNamespace(last_error="timed out"), halted=halted
    )


def _flap(agent: Agent, times: int) -> float:
    """The camera down 20 s, connected 6 s, ``times`` times from 0: the time after the last."""
    t = 0.0
    for _ in range(times):
        for dt in range(0, 20, 2):
            agent._source_liveness("cam", _src("backoff"), t + dt)
        for up in (20.0, 22.0, 24.0):
            agent._source_liveness("cam", _src("connected"), t + up)
        t += 26.0
    return t


def test_a_camera_down_20_s_at_a_time_for_hours_raises_one_source_down_and_one_end(tmp_path: Path) -> None:
    """Down 20 s, connected 6 s, for three hours: no outage lasted 30 s, so nothing reached the cloud. Now one
    start (flapping: its outages counted, down_s the seconds down within the window) and, once connected for 2
    minutes without a break, one end; a short reconnection in between does not end it."""
    agent = _agent(tmp_path)
    t = _flap(agent, 415)
    (start,) = _events(agent, "source_down")
    assert start["active"] is True and start["flaps"] == 2 and start["down_s"] >= 30.0, start
    assert "flapping" in start["message"], start
    for dt in range(0, 100, 2):
        agent._source_liveness("cam", _src("connected"), t + dt)
    agent._source_liveness("cam", _src("connecting"), t + 100.0)
    for dt in range(102, 110, 2):
        agent._source_liveness("cam", _src("connected"), t + dt)
    assert len(_events(agent, "source_down")) == 1
    # 116 s since its last real outage, bad for 6 s (5%) of the last 2 minutes with the reconnection: ended
    agent._source_liveness("cam", _src("connected"), t + 110.0)
    (_, end) = _events(agent, "source_down")  # 416: the reconnection at +100 s was one more outage
    assert end["active"] is False and end["flaps"] == 416 and end["state"] == "connected", end
    assert not _events(_agent(tmp_path), "source_down")  # ended for good: not said again after a restart


def test_a_single_clean_outage_is_still_told_at_30_s_and_ended_at_once(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    for t in range(0, 30, 2):
        agent._source_liveness("cam", _src("backoff"), float(t))
    assert not _events(agent, "source_down")
    agent._source_liveness("cam", _src("backoff"), 30.0)
    agent._source_liveness("cam", _src("connected"), 32.0)
    assert [(e["active"], e["flaps"]) for e in _events(agent, "source_down")] == [(True, 1), (False, 1)]


def test_episodes_told_by_this_mornings_agent_are_read_and_ended(tmp_path: Path) -> None:
    """Files written before flaps was counted (no flaps key): the outage and the halt they hold are the next
    agent's to end, as clean episodes (at the first good pass; a halt still going on is adopted, not said
    twice)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / DOWNS_FILE).write_text(
        json.dumps({"cam": {"since": "2026-12-03T08:00:00+00:00", "since_t": 1.8e9}})
    )
    halt = {
        "reason": "server_clock_frozen",
        "since": "2026-12-03T08:00:05+00:00",
        "since_t": 1.8e9,
        "checks": 4,
    }
    (data / HALTS_FILE).write_text(json.dumps({"plc": halt}))
    agent = _agent(tmp_path)
    h = {"reason": "server_clock_frozen", "since": "x", "since_t": 5.0, "for_s": 1.0, "checks": 9}
    for t in range(0, 60, 2):
        agent._source_liveness("cam", _src("backoff"), float(t))
        agent._source_halt("plc", _src("connected", h), float(t))
    assert not _events(agent, "source_down") and not _events(agent, "source_halted")
    agent._source_liveness("cam", _src("connected"), 60.0)
    agent._source_halt("plc", _src("connected"), 60.0)
    (down,) = _events(agent, "source_down")
    (end,) = _events(agent, "source_halted")
    assert down["active"] is False and down["flaps"] == 1, down
    assert end["active"] is False and end["since"] == halt["since"] and end["checks"] == 9, end
    again = _agent(tmp_path)
    again._source_liveness("cam", _src("connected"), 0.0)
    assert not again.events


def test_the_rule_bad_30_s_in_total_within_2_minutes() -> None:
    """The rule alone: 12 s bad every 40 s reaches 30 s in the window 6 s into the third stretch; 10 s bad every
    100 s never does."""
    w = FlapWatch(30.0, 120.0, 120.0)
    said = [w.observe(float(t), t % 40 < 12, t % 40 >= 12) for t in range(0, 200, 1)]
    assert said.count("start") == 1 and said.index("start") == 86 and "end" not in said
    rare = FlapWatch(30.0, 120.0, 120.0)
    assert not any(rare.observe(float(t), t % 100 < 10, t % 100 >= 10) for t in range(0, 2000))


def test_a_flapping_episode_ends_when_the_source_serves_again_despite_a_reconnect_a_minute(
    tmp_path: Path,
) -> None:
    """Flapping (20 s down, 6 s up) until told, then back to serving but for one pass of ``connecting`` every
    minute (a reconnect): it never saw 2 minutes without a break, so the cloud was told the source was down for as
    long as the agent ran (one pass in 30 bad: 97% served). Now it ends once good and bad for at most 5% of the
    last 2 minutes: one end, and no new start from the blips."""
    agent = _agent(tmp_path)
    t = _flap(agent, 10)
    assert [e["active"] for e in _events(agent, "source_down")] == [True]
    for k in range(3 * 3600 // 2):  # three hours
        agent._source_liveness("cam", _src("connecting" if k % 30 == 29 else "connected"), t + 2.0 * k)
    (_, end) = _events(agent, "source_down")
    assert end["active"] is False and "without a break" not in end["message"], end  # it had blips


def test_the_rule_a_flapping_episode_ends_despite_rare_blips() -> None:
    w = FlapWatch(30.0, 120.0, 120.0)
    said = [w.observe(float(t), t % 26 < 20, t % 26 >= 20) for t in range(0, 520, 2)]
    assert said.count("start") == 1 and w.flaps > 1
    said = [w.observe(520.0 + t, t % 60 == 58, t % 60 != 58) for t in range(0, 7200, 2)]
    assert said.count("end") == 1 and "start" not in said


def test_an_altered_flaps_in_the_told_files_is_not_sent_as_the_events_count(tmp_path: Path) -> None:
    """A told file whose flaps is not a count (hand-edited, a disk fault): the ends are said, and their flaps is
    None, not the file's string or mapping passed through as the typed field the cloud reads as a count."""
    data = tmp_path / "data"
    data.mkdir()
    since = {"since": "2026-12-03T08:00:00+00:00", "since_t": 1.8e9}
    (data / DOWNS_FILE).write_text(json.dumps({"cam": {**since, "flaps": {"a": [1]}}}))
    (data / HALTS_FILE).write_text(
        json.dumps({"gone": {**since, "reason": "server_not_running", "flaps": "9"}})
    )
    agent = _agent(tmp_path)
    agent._told_unconfigured()
    agent._source_liveness("cam", _src("connected"), 0.0)
    assert [(e["active"], e["flaps"]) for e in _events(agent, "source_down")] == [(False, None)]
    assert [(e["active"], e["flaps"]) for e in _events(agent, "source_halted")] == [(False, None)]


def test_an_outage_of_hours_after_a_blip_ends_at_once_not_as_a_flapping_one(tmp_path: Path) -> None:
    """Down 24 s, back 4 s, then down three hours: told at 30 s in total as flapping (two outages), and its end
    waited 2 more minutes once the camera was back, said as a flapping spell's. The window has long held only the
    one outage: it ends at the first pass that finds the camera connected, as a clean outage does."""
    agent = _agent(tmp_path)
    for t in range(0, 24, 2):
        agent._source_liveness("cam", _src("backoff"), float(t))
    agent._source_liveness("cam", _src("connected"), 24.0)
    agent._source_liveness("cam", _src("connected"), 26.0)
    for t in range(28, 28 + 3 * 3600, 2):
        agent._source_liveness("cam", _src("backoff"), float(t))
    agent._source_liveness("cam", _src("connected"), 28.0 + 3 * 3600)
    start, end = _events(agent, "source_down")
    assert start["active"] is True and start["flaps"] == 2, start
    assert end["active"] is False and "connected again after" in end["message"], end
