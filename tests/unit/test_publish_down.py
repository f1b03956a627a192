"""``publish_down`` at the agent's source-watch seam, with a fake clock: an mqtt source's publish connection
(``publish_connection: separate``) down while its source is connected, flapping as a source does, and the end of
one told before a restart said by the next agent, also when its source has no publish connection of its own any
more. The real broker's side is in tests/integration/test_mqtt_publish_connection.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from edge_agent.agent import PUBLISH_DOWNS_FILE, Agent
from tests.unit.test_source_halted_event import _agent_with


def _agent(tmp_path: Path, connection: str = "separate") -> Agent:
    mq = {"type": "mqtt", "client_id": "gw1", "publish_connection": connection, "publish_client_id": "gw1-p"}
    return _agent_with(tmp_path, {"mq": mq})


def _mq(pub_state: str | None) -> SimpleNamespace:
    """The source connected, its publish connection in ``pub_state``."""
    pc = None if pub_state is None else {"state": pub_state, "client_id": "gw1-p", "last_error": "refused"}
    return SimpleNamespace(
        state=SimpleNamespace(value="connected"),
        stats=SimpleNamespace(last_error=None),
        publish_connection=pc,
    )


def _downs(agent: Agent) -> list[dict]:
    return [dict(e) for e in agent.events if e["kind"] == "publish_down"]


def test_a_publish_connection_that_flaps_is_one_episode(tmp_path) -> None:
    """Down 20 s, up 4 s, again: 30 s down in total within 2 minutes starts one episode (no source_down: the
    source is connected), which ends only once connected steadily (2 minutes), as a flapping source's does."""
    agent = _agent(tmp_path)
    t = 0.0
    for _ in range(3):
        for dt in range(0, 20, 2):
            agent._source_liveness("mq", _mq("backoff"), t + dt)
        agent._source_liveness("mq", _mq("connected"), t + 20.0)
        agent._source_liveness("mq", _mq("connected"), t + 22.0)
        t += 24.0
    (start,) = _downs(agent)
    assert start["active"] is True and start["flaps"] == 2 and start["client_id"] == "gw1-p", start
    assert start["last_error"] == "refused" and "gw1-p" in start["message"], start
    assert not [e for e in agent.events if e["kind"] == "source_down"]
    for dt in range(0, 121, 2):
        agent._source_liveness("mq", _mq("connected"), t + dt)
    end = _downs(agent)[-1]
    assert len(_downs(agent)) == 2 and end["active"] is False and end["flaps"] == 3, end


def test_one_told_before_a_restart_ends_once_connected_or_with_the_publish_connection_gone(tmp_path) -> None:
    """The next agent says the end of a publish_down told before it (``publish-down.json``): once the publish
    connection is connected, or at once when its source publishes over its own connection now."""
    first = _agent(tmp_path)
    for t in range(0, 34, 2):
        first._source_liveness("mq", _mq("backoff"), float(t))
    assert [e["active"] for e in _downs(first)] == [True]
    told = json.loads((tmp_path / "data" / PUBLISH_DOWNS_FILE).read_text())
    assert told["mq"]["client_id"] == "gw1-p", told
    second = _agent(tmp_path)
    second._source_liveness("mq", _mq("backoff"), 0.0)
    assert not second.events  # the same outage: no second start
    second._source_liveness("mq", _mq("connected"), 2.0)
    (end,) = _downs(second)
    assert end["active"] is False and end["client_id"] == "gw1-p" and end["source"] == "mq", end
    for t in range(0, 34, 2):
        second._source_liveness("mq", _mq("backoff"), 100.0 + t)
    shared = _agent(tmp_path, "shared")
    shared._told_unconfigured(0.0)
    (gone,) = _downs(shared)
    assert gone["active"] is False and gone["state"] is None and "publish connection" in gone["message"], gone
    assert json.loads((tmp_path / "data" / PUBLISH_DOWNS_FILE).read_text()) == {}


def test_a_client_id_from_the_gateways_environment_never_reaches_the_cloud(tmp_path, monkeypatch) -> None:
    """A publish client id taken from the gateway's environment is hidden in the event the cloud gets, in its
    ``client_id`` as in its message (named in clear, it unhid the message's too), as every gateway variable is."""
    monkeypatch.setenv("GW_PUB", "plant7-press3-pub")
    mq = {
        "type": "mqtt",
        "client_id": "gw1",
        "publish_connection": "separate",
        "publish_client_id": "${GW_PUB}",
    }
    agent = _agent_with(tmp_path, {"mq": mq})
    pc = {"state": "backoff", "client_id": "plant7-press3-pub", "last_error": "refused"}
    for t in range(0, 34, 2):
        agent._source_liveness(
            "mq", SimpleNamespace(**{**vars(_mq("backoff")), "publish_connection": pc}), float(t)
        )
    (down,) = _downs(agent)
    told = agent.for_cloud.tree(down)
    assert told["client_id"] == "<$GW_PUB>" and "plant7-press3-pub" not in json.dumps(told), told


def test_the_end_after_a_restart_names_the_client_id_as_the_cloud_was_told_it(tmp_path, monkeypatch) -> None:
    """A publish client id from ``${GW_PUB}`` whose value changed across a restart: the next agent's hiders know
    only the new value, so the end it said named the old one in clear (in ``client_id`` and the message). It is
    named now as the start told the cloud, hidden."""
    mq = {
        "type": "mqtt",
        "client_id": "gw1",
        "publish_connection": "separate",
        "publish_client_id": "${GW_PUB}",
    }
    monkeypatch.setenv("GW_PUB", "plant7-press3-pub")
    first = _agent_with(tmp_path, {"mq": mq})
    pc = {"state": "backoff", "client_id": "plant7-press3-pub", "last_error": "refused"}
    for t in range(0, 34, 2):
        first._source_liveness(
            "mq", SimpleNamespace(**{**vars(_mq("backoff")), "publish_connection": pc}), float(t)
        )
    assert [e["active"] for e in _downs(first)] == [True]
    monkeypatch.setenv("GW_PUB", "plant7-press4-pub")
    second = _agent_with(tmp_path, {"mq": mq})
    second._source_liveness("mq", _mq("connected"), 0.0)
    (end,) = _downs(second)
    told = second.for_cloud.tree(end)
    assert end["active"] is False and told["client_id"] == "<$GW_PUB>", told
    assert "plant7-press3-pub" not in json.dumps(told), told
