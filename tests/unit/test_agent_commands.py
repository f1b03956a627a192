"""The agent's side of fleet commands (``edge_agent.uplink.commands``): each id runs at most once, across
restarts (the ids are kept in the data folder); a run cut short by a kill is reported as interrupted, never
run again; an unknown kind, a pipeline without a baseline, or an agent that does not accept commands gives a
failed result with the reason; only the results of commands the cloud still lists are reported."""

from __future__ import annotations

import json

from edge_agent.config import parse_config
from edge_agent.maintenance.baseline import relearn_path
from edge_agent.uplink.commands import CommandRunner
from protocols.gen import fleet_pb2 as pb


def cfg(tmp_path, accept=True):
    tmp_path.mkdir(parents=True, exist_ok=True)
    for f in ("ca", "c", "k"):
        (tmp_path / f).write_text("x")
    return parse_config(
        {
            "agent": {"id": "gw1", "data_dir": str(tmp_path / "data")},
            "sources": {
                "plc": {
                    "type": "mqtt",
                    "port": 1883,
                    "subscriptions": [
                        {
                            "topic": "p/vib",
                            "json_mapping": {"values": {"v": "Vibration"}, "tag_prefix_topic": False},
                        }
                    ],
                }
            },
            "models": {},
            "pipelines": [],
            "cloud": {
                "endpoint": "127.0.0.1:1",
                "ca_file": str(tmp_path / "ca"),
                "cert_file": str(tmp_path / "c"),
                "key_file": str(tmp_path / "k"),
                "accept_commands": accept,
            },
        }
    )


def cmd(i, kind="baseline_relearn", pipeline="pump"):
    return pb.AgentCommand(id=i, kind=kind, pipeline=pipeline, issued_by="alice", reason="test")


async def test_each_command_runs_once_across_restarts_and_failures_say_why(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "edge_agent.maintenance.cli.fleet_relearn",
        lambda c, command: calls.append(command.id) or "relearn requested",
    )
    events = []
    r = CommandRunner(cfg(tmp_path), on_event=events.append)
    await r.run([cmd("c1"), cmd("c2", kind="reboot")])
    await r.run([cmd("c1"), cmd("c2", kind="reboot")])  # the same desired state again (a reconnect)
    assert calls == ["c1"]
    res = {x["id"]: x for x in r.results()}
    assert (
        res["c1"]["ok"] is True
        and res["c2"]["ok"] is False
        and "does not know command kind 'reboot'" in res["c2"]["detail"]
    )
    assert [(e["kind"], e["command"], e["ok"]) for e in events] == [
        ("fleet_command", "c1", True),
        ("fleet_command", "c2", False),
    ]
    r2 = CommandRunner(cfg(tmp_path), on_event=events.append)  # a restart: the ids are remembered
    await r2.run([cmd("c1")])
    assert calls == ["c1"] and [x["id"] for x in r2.results()] == ["c1"]  # only what the cloud still lists
    await r2.run([])
    assert r2.results() == []
    # a kill between "taken" and "done": reported as interrupted, not run again
    path = tmp_path / "data" / "fleet" / "commands.json"
    data = json.loads(path.read_text())
    data["ran"].append(
        {"id": "c3", "kind": "baseline_relearn", "pipeline": "pump", "state": "running", "started_at": 1.0}
    )
    path.write_text(json.dumps(data))
    r3 = CommandRunner(cfg(tmp_path))
    await r3.run([cmd("c3")])
    assert calls == ["c1"] and "interrupted by a restart" in r3.results()[0]["detail"]


async def test_relearn_of_a_pipeline_without_baseline_and_an_agent_that_refuses(tmp_path):
    r = CommandRunner(cfg(tmp_path))
    await r.run([cmd("c1", pipeline="nope")])
    [res] = r.results()
    assert res["ok"] is False and "pipeline 'nope' has no baseline" in res["detail"]
    assert not relearn_path(tmp_path / "data", "nope").exists()
    r = CommandRunner(cfg(tmp_path / "b", accept=False))
    await r.run([cmd("c1")])
    assert "cloud.accept_commands is false" in r.results()[0]["detail"]
