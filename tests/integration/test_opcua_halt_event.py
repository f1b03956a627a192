"""An OPC UA server halted while its connection stays up (a PLC switched to Suspended, a frozen runtime whose
OPC UA stack lives on, a stalled subscription) was said on the gateway only: ``/status`` (``halted``),
``edge-agent status``, the status page and ``edge_source_halted``. It never raised ``source_down`` (the source
is connected, or connected again at each reconnect), so nothing reached the cloud and a gateway beside a frozen
PLC looked healthy from the fleet. A halt that lasts ``source_down_after_s`` now raises ``source_halted``
(active, with the reason and since when) once per halt, recorded in the outbox like every event; healthy
again, the same kind with active false and how long it lasted."""

from __future__ import annotations

import functools
import time
from pathlib import Path

from asyncua import ua

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.integration.test_opcua_halt_recovery import _line, _set_state, _stop_clock
from tests.support.peers import free_port
from tests.support.recorded import recorded_events
from tests.support.waits import until

PASS_S = 0.5


def _halts(agent: Agent) -> list[dict]:
    return [dict(e) for e in agent.events if e["kind"] == "source_halted"]


def _agent(tmp_path: Path, source: dict, **extra) -> Agent:
    """The agent, its source watch passing every ``PASS_S`` (every 2 s in service): a test's time."""
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "http": {"enabled": False},
                "sources": {"plc": source},
                **extra,
            }
        )
    )
    agent._watch_sources = functools.partial(agent._watch_sources, PASS_S)  # type: ignore[method-assign]
    return agent


def _plc(port: int, idx: int) -> dict:
    """The source on the test's server: checked often, reconnecting soon (a test's time, not a PLC's)."""
    return {
        "type": "opcua",
        "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
        "connect_timeout_s": 2,
        "keepalive_check_s": 0.3,
        "reconnect_initial_s": 0.1,
        "reconnect_max_s": 0.5,
        "nodes": [{"node_id": f"ns={idx};s=Speed"}],
    }


async def test_a_plc_halted_with_its_connection_up_raises_source_halted_once_and_its_recovery_ends_it(
    tmp_path: Path,
) -> None:
    """A real asyncua server says Suspended and stays so across many checks and reconnects: one
    ``source_halted`` (active, reason ``server_not_running``, since the halt's start) reaches the outbox,
    not one per check; Running again, one with active false. Before, no event at all: the cloud never
    heard of it."""
    port = free_port()
    srv, idx = await _line(port)
    await _stop_clock(srv)  # the state alone halts it (a clock that never moved in a session is not judged)
    agent = _agent(tmp_path, _plc(port, idx), outbox={})
    agent.source_down_after_s = 1.0  # 30 s in service
    sent: list[dict] = []
    try:
        await agent.start()
        src = agent.sources["plc"]
        await until(lambda: agent.tags["plc"], 20, "the first value")
        assert src.halted is None and not _halts(agent)
        await _set_state(srv, ua.ServerState.Suspended)
        await until(lambda: _halts(agent), 30, "source_halted")
        raised = _halts(agent)[0]
        halted = src.halted
        seen = time.monotonic()
        assert halted is not None, "the halt ended before the test saw it"
        # the halt goes on: many more checks and reconnects that find it still halted, and many passes of
        # the agent's source watch (every ``PASS_S``), say nothing more
        await until(lambda: (src.halted or {}).get("checks", 0) >= raised["checks"] + 12, 60, "more checks")
        await until(lambda: src.halts >= halted["halts"] + 2, 60, "halted again at reconnects")
        still, for_s = src.halted, time.monotonic() - seen
        # the same halt: it has lasted longer than the test has watched it (it began at least
        # source_down_after_s before), on the monotonic clock; a halt ended and begun again since would be
        # younger. Not its ``since``: a step of the wall clock moves that once (``wall_since``), as it should
        assert still is not None and still["for_s"] > for_s, (still, for_s)
        assert len(_halts(agent)) == 1, _halts(agent)
        await _set_state(srv, ua.ServerState.Running)
        await until(lambda: len(_halts(agent)) >= 2, 30, "source_halted's end")
        assert src.halted is None
        sent = recorded_events(agent, "source_halted")
    finally:
        await agent.stop()
        await srv.stop()
    events = _halts(agent)
    assert len(events) == 2, events  # one halt: one start, one end
    start, end = events
    assert start["source"] == "plc" and start["active"] is True, start
    assert start["reason"] == "server_not_running" and start["since"] == halted["since"], start
    assert start["halted_s"] >= 1.0 and start["message"], start
    assert end["source"] == "plc" and end["active"] is False and end["since"] == start["since"], end
    assert end["reason"] == "server_not_running" and end["halted_s"] >= start["halted_s"], end
    assert end["checks"] >= raised["checks"], end  # as the agent's last pass saw them
    assert [r["active"] for r in sent] == [True, False], sent  # recorded for the cloud, in order
    assert sent[0]["reason"] == "server_not_running" and sent[0]["since"] == halted["since"], sent


async def test_a_halt_that_ends_while_the_agent_restarts_has_its_end_said_by_the_next_agent(
    tmp_path: Path,
) -> None:
    """A real asyncua server says Suspended; the agent tells the cloud (source_halted, active) and is stopped (a
    restart, a config reload); the server is Running again before the next agent starts. The next agent, once it
    has seen the server healthy, records the halt's end in the same outbox, with the since the cloud was told.
    Before, the next agent knew nothing of it: the cloud had the PLC halted for good."""
    port = free_port()
    srv, idx = await _line(port)
    await _stop_clock(srv)
    source = _plc(port, idx)
    first = _agent(tmp_path, source, outbox={})
    first.source_down_after_s = 1.0  # 30 s in service
    second: Agent | None = None
    try:
        await first.start()
        await until(lambda: first.tags["plc"], 20, "the first value")
        await _set_state(srv, ua.ServerState.Suspended)
        await until(lambda: _halts(first), 30, "source_halted")
        (raised,) = _halts(first)
        await first.stop()
        await _set_state(srv, ua.ServerState.Running)
        second = _agent(tmp_path, source, outbox={})
        second.source_down_after_s = 1.0
        await second.start()
        await until(lambda: _halts(second), 30, "the halt's end from the next agent")
        sent = recorded_events(second, "source_halted")
    finally:
        if second is not None:
            await second.stop()
        await first.stop()
        await srv.stop()
    (end,) = _halts(second)
    assert end["source"] == "plc" and end["active"] is False and end["since"] == raised["since"], end
    assert end["reason"] == "server_not_running" and end["halted_s"] >= raised["halted_s"], end
    assert [(r["active"], r["since"]) for r in sent] == [(True, raised["since"]), (False, raised["since"])], (
        sent
    )
