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
        "since_t": since_t,
        "for_s": 1.0,
        "checks": checks,
        "halts": 1,
    }


def test_short_halts_say_nothing_and_each_long_halt_is_said_once_with_its_end(tmp_path: Path) -> None:
    """The rule on its own, at the source-watch seam: halts shorter than the confirmation (30 s, the
    ``source_down`` one) raise nothing however often they come; a long one raises one event however many
    passes see it; a new halt (another since) right after one ends says the end of the first, then the
    new one once confirmed. Before, no ``source_halted`` event existed."""
    agent = _agent(tmp_path)
    watch = agent._source_halt
    t = 1000.0
    for k in range(20):  # flapping, each halt 10 s: below the 30 s confirmation
        for dt in (0.0, 5.0, 10.0):
            watch("plc", _src(_h(100.0 + k, checks=int(dt))), t + dt)
        watch("plc", _src(None), t + 12.0)
        t += 20.0
    assert not _halts(agent)
    for dt in range(0, 300, 2):  # one halt for 5 minutes, seen at each pass
        watch("plc", _src(_h(500.0, checks=dt)), t + dt)
    assert [e["active"] for e in _halts(agent)] == [True], _halts(agent)
    t += 300.0
    watch("plc", _src(_h(900.0, reason="subscription_stalled")), t)  # another halt at once
    assert [e["active"] for e in _halts(agent)] == [True, False]
    assert _halts(agent)[1]["since"] == "t500.0" and _halts(agent)[1]["checks"] == 298
    watch("plc", _src(_h(900.0, reason="subscription_stalled")), t + 29.0)
    watch("plc", _src(_h(900.0, reason="subscription_stalled"), state="connecting"), t + 31.0)
    assert [e["active"] for e in _halts(agent)] == [True, False, True]
    assert _halts(agent)[2]["reason"] == "subscription_stalled"
    watch("plc", _src(_h(900.0), state="stopped"), t + 60.0)  # the agent stopping says nothing
    assert len(_halts(agent)) == 3
    watch("plc", _src(None), t + 62.0)
    assert [e["active"] for e in _halts(agent)] == [True, False, True, False]
