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


def state_cfg(tmp_path):
    """An agent whose pipeline ``spindle`` has a baseline per process state (``state_tag``)."""
    for f in ("ca", "c", "k"):
        (tmp_path / f).write_text("x")
    states = [{"name": "idle", "max": 0.5}, {"name": "cutting", "min": 0.5}]
    return parse_config(
        {
            "agent": {"id": "gw1", "data_dir": str(tmp_path / "data")},
            "trusted_keys": [str(tmp_path / "k")],
            "sources": {"plc": {"type": "mqtt", "subscriptions": [{"topic": "p/vib"}]}},
            "models": {"m": {"package": "m.edgepkg"}},
            "pipelines": [
                {
                    "name": "spindle",
                    "source": "plc",
                    "model": "m",
                    "window": {"waveform": "V"},
                    "baseline": {"windows": 30, "state_tag": "Cutting", "states": states},
                }
            ],
            "cloud": {
                "endpoint": "127.0.0.1:1",
                "ca_file": str(tmp_path / "ca"),
                "cert_file": str(tmp_path / "c"),
                "key_file": str(tmp_path / "k"),
            },
        },
        local_checks=False,  # no package nor key here: the command needs only the pipeline's baseline
    )


async def test_relearn_of_one_process_state_from_the_fleet_and_a_state_the_config_lacks_is_refused(tmp_path):
    """``cloud-trainer baseline relearn AGENT spindle --state cutting``: the agent's request names the state
    (the other states stay as learned); a state its config does not have is the command's failed result,
    naming the states it has, and nothing is relearned."""
    c = state_cfg(tmp_path)
    req = relearn_path(c.data_dir, "spindle")
    r = CommandRunner(c)
    await r.run(
        [pb.AgentCommand(id="c1", kind="baseline_relearn", pipeline="spindle", process_state="drilling")]
    )
    [res] = r.results()
    assert res["ok"] is False and "no process state 'drilling' in baseline.states" in res["detail"], res
    assert "['idle', 'cutting']" in res["detail"] and not req.exists()
    await r.run(
        [pb.AgentCommand(id="c2", kind="baseline_relearn", pipeline="spindle", process_state="cutting")]
    )
    res = {x["id"]: x for x in r.results()}["c2"]
    assert res["ok"] is True and "process state cutting of pipeline spindle" in res["detail"], res
    assert json.loads(req.read_text())["state"] == "cutting"


def test_the_fleet_summary_of_a_baseline_per_state_names_the_states_relearn_may_name():
    from edge_agent.maintenance.cli import fleet_summary
    from edge_agent.maintenance.settings import BaselineSettings, ProcessState
    from edge_agent.maintenance.states import StateBaselines

    s = BaselineSettings(
        windows=30,
        state_tag="Cutting",
        states=[ProcessState(name="idle", max=0.5), ProcessState(name="cut", min=0.5)],
    )
    b = StateBaselines(s, 10000.0, 2048, path=None, pipeline="spindle")
    b.not_judged = {"cut": 3, "(none)": 2}
    out = fleet_summary(b.status())
    assert (out["state_tag"], out["state_names"], out["process_states"]) == (
        "Cutting",
        ["idle", "cut"],
        ["cut"],
    )
    plain = fleet_summary({"state": "ready", "threshold": 3.0})
    assert "state_tag" not in plain and "process_states" not in plain
