"""Baseline relearn from the fleet, end to end: a real fleet service (gRPC, mTLS, SQLite), a real agent (a
signal pipeline with a baseline on ONNX Runtime) and the admin CLI's ``baseline`` verb in process. The command
is sent while the agent is offline and waits in its desired state; the restarted agent runs it once, the
pipeline starts learning anew at its next window (event ``baseline_relearn`` naming the command), the result
is recorded at the cloud (state done) and both events reach the cloud's store; ``baseline status`` shows the
state the agent reported. An admin of another tenant is refused exactly as for an agent that does not exist."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import numpy as np
import pytest

from cloud_trainer import admin_cli
from cloud_trainer.fleet.service import AdminServicer, FleetServer, server_credentials
from cloud_trainer.pki import issue, tenant_dir
from devices.base import Quality, Reading
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.contract.test_fleet_commands import STATE_HEALTH
from tests.support.fleet import make_pki
from tests.support.models import SIGNAL_RATE_HZ, SIGNAL_WINDOW, make_keypair, make_package
from tests.support.peers import free_port
from tests.support.waits import until


def agent_config(tmp_path, pki, port, mqtt_port, pkg, pub) -> dict:
    return {
        "agent": {"id": "gw1", "site": "plant", "line": "l1", "data_dir": str(tmp_path / "gw1")},
        "trusted_keys": [str(pub)],
        "http": {"enabled": False},
        "sources": {
            "plc": {
                "type": "mqtt",
                "port": mqtt_port,
                "subscriptions": [
                    {
                        "topic": "plant/pump/vib",
                        "json_mapping": {"values": {"v": "Vibration"}, "tag_prefix_topic": False},
                    }
                ],
            }
        },
        "models": {"health": {"package": str(pkg), "engine": "onnxruntime"}},
        "pipelines": [
            {
                "name": "pump",
                "source": "plc",
                "model": "health",
                "window": {"waveform": "Vibration", "sample_rate_hz": SIGNAL_RATE_HZ, "scalars": []},
                "baseline": {"windows": 20},
            }
        ],
        "cloud": {
            "endpoint": f"127.0.0.1:{port}",
            "ca_file": str(pki / "ca.pem"),
            "cert_file": str(pki / "agents" / "gw1.pem"),
            "key_file": str(pki / "agents" / "gw1.key"),
            "heartbeat_s": 0.2,
            "report_s": 0.5,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 0.5,
        },
    }


async def feed(agent: Agent, n: int) -> None:
    pipe = agent.pipelines[0]
    rng = np.random.default_rng(n)
    for _ in range(n):
        await pipe.offer(
            Reading(
                "plc",
                "Vibration",
                rng.normal(0, 1, SIGNAL_WINDOW).astype(np.float32),
                time.time(),
                time.time(),
                Quality.GOOD,
            )
        )
    await until(lambda: not len(pipe.queue), what="the windows processed")


def cli(capsys, *args) -> tuple[int, str]:
    try:
        code = admin_cli.main_baseline(list(args))
    except SystemExit as exc:  # the CLI's one-line refusals
        return 1, str(exc)
    return code, capsys.readouterr().out


async def test_baseline_relearn_from_the_fleet_waits_for_the_agent_runs_once_and_is_recorded(
    tmp_path, mosquitto, capsys
):
    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=("alice",))
    issue(pki, "bob", "admin", tenant_dir(pki, "acme") / "admins" / "bob", tenant="acme")
    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path / "pkg", kind="signal", key=key)
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    cfg = parse_config(agent_config(tmp_path, pki, port, mosquitto.port, pkg, pub))
    await srv.start()
    base = ["--endpoint", f"127.0.0.1:{port}", "--pki", str(pki)]
    agent = Agent(cfg)
    try:
        await agent.start()
        await feed(agent, 3)
        await until(
            lambda: "baseline" in (srv.store.agents() or [{}])[0].get("health", {}).get("pump", {}),
            what="the baseline's state in a state report",
        )
        await agent.stop()  # offline: the command must wait for it

        code, out = await asyncio.to_thread(
            cli, capsys, "relearn", "gw1", "pump", "--reason", "bearing replaced", *base, "--admin", "alice"
        )
        assert code == 0 and "baseline_relearn of pump on gw1 sent" in out
        [cmd] = srv.commands.list("gw1")
        assert cmd["state"] == "pending" and cmd["issued_by"] == "alice"
        # another tenant's admin: refused with the text of an agent that does not exist
        refusals = [
            await asyncio.to_thread(
                cli, capsys, "relearn", agent_id, "pump", *base, "--admin", "bob", "--tenant", "acme"
            )
            for agent_id in ("gw1", "gw7")
        ]
        assert [c for c, _ in refusals] == [1, 1]
        assert "PERMISSION_DENIED" in refusals[0][1]
        assert refusals[0][1].replace("gw1", "X") == refusals[1][1].replace("gw7", "X")
        code, out = await asyncio.to_thread(cli, capsys, "relearn", "gw1", "pmup", *base, "--admin", "alice")
        assert code == 1 and "INVALID_ARGUMENT" in out and "has no pipeline 'pmup'; it reported: pump" in out
        # --state NAME: one process state; a pipeline that reported none (no state_tag) is refused, not relearned
        code, out = await asyncio.to_thread(
            cli, capsys, "relearn", "gw1", "pump", "--state", "idle", *base, "--admin", "alice"
        )
        assert code == 1 and "INVALID_ARGUMENT" in out
        assert "pipeline pump of agent gw1 has reported no process states" in out

        agent = Agent(cfg)  # back online: the command arrives with its desired state and runs once
        await agent.start()
        await until(lambda: srv.commands.list("gw1")[0]["state"] != "pending", what="the agent's result")
        [cmd] = srv.commands.list("gw1")
        assert cmd["state"] == "done" and "relearn requested" in cmd["detail"]
        await feed(agent, 1)  # the pipeline takes the request at its next window
        # processed in a worker thread after the queue is empty: read once it is (read at once, a loaded machine's
        # status still gave the learning since the first start)
        await until(
            lambda: agent.pipelines[0].status()["baseline"]["reason"] != "first start",
            what="the window processed",
        )
        status = agent.pipelines[0].status()["baseline"]
        assert status["state"] == "learning" and status["reason"].startswith(
            f"fleet command {cmd['id']} by alice"
        )
        await agent.stop()
        agent = Agent(cfg)  # a restart: the id is remembered, nothing runs twice
        await agent.start()
        await feed(agent, 1)

        def events(kind: str) -> list[dict]:
            return [
                r["payload"] for r in srv.store.records("gw1", kind="event") if r["payload"]["kind"] == kind
            ]

        await until(
            lambda: events("fleet_command") and events("baseline_relearn"), what="the events at the cloud"
        )
        assert [(e["command"], e["ok"], e["issued_by"]) for e in events("fleet_command")] == [
            (cmd["id"], True, "alice")
        ]
        assert [e["reason"] for e in events("baseline_relearn")] == [
            f"fleet command {cmd['id']} by alice: bearing replaced"
        ]
        await until(
            lambda: (srv.store.agents()[0]["health"]["pump"]["baseline"].get("progress") or 0) > 0,
            what="the relearning baseline reported",
        )
        code, out = await asyncio.to_thread(cli, capsys, "status", "gw1", *base, "--admin", "alice")
        assert code == 0 and "pump: learning since" in out and "/20 windows" in out
        assert cmd["id"] in out and "done" in out
        code, out = await asyncio.to_thread(cli, capsys, "status", "gw1", "--json", *base, "--admin", "alice")
        assert json.loads(out)["baselines"]["pump"]["state"] == "learning"
        # online: --wait prints the agent's answer
        code, out = await asyncio.to_thread(
            cli, capsys, "relearn", "gw1", "pump", "--wait", "15", *base, "--admin", "alice"
        )
        assert code == 0 and ": done: relearn requested" in out
    finally:
        await agent.stop()
        await srv.stop()


class CloudBeforeProcessState(AdminServicer):
    """The Admin service of a cloud release before ``SendCommandRequest.process_state`` (field 5): protobuf
    skips a field its schema does not have, so the request reaches that release's ``send`` without the state
    and its reply names none. No such release can run in this suite: this is the field it cannot read."""

    async def SendCommand(self, request, context):
        request.ClearField("process_state")
        reply = await super().SendCommand(request, context)
        cmd = json.loads(reply.json)
        cmd.pop("process_state", None)
        return pb.CommandInfo(json=json.dumps(cmd))


async def test_relearn_of_one_state_through_a_cloud_that_cannot_read_it_is_said_not_printed_as_sent(
    tmp_path, capsys
):
    """An admin CLI newer than the cloud: the older cloud dropped ``--state`` and sent the agent a relearn of
    every process state, while the CLI printed "baseline_relearn of spindle (process state cutting) sent"
    and exited 0. Now it says that every state is relearned (the command has no undo) and exits 1; through a
    cloud that reads it, the one state is sent."""
    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=("alice",))
    port, old_port = free_port(), free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    old = grpc.aio.server()
    rpc.add_AdminServicer_to_server(
        CloudBeforeProcessState(srv.store, srv.control, srv.registry, srv.commands, None, srv.revocations),
        old,
    )
    old.add_secure_port(
        f"127.0.0.1:{old_port}", server_credentials(pki / "ca.pem", pki / "server.pem", pki / "server.key")
    )
    await srv.start()
    await old.start()
    try:
        srv.store.heartbeat("gw1", {}, [], STATE_HEALTH, 0)  # a state report naming its process states
        args = ["relearn", "gw1", "spindle", "--state", "cutting", "--pki", str(pki), "--admin", "alice"]
        code, out = await asyncio.to_thread(cli, capsys, *args, "--endpoint", f"127.0.0.1:{port}")
        assert code == 0 and "baseline_relearn of spindle (process state cutting) on gw1 sent" in out
        code, out = await asyncio.to_thread(cli, capsys, *args, "--endpoint", f"127.0.0.1:{old_port}")
        assert code == 1, out
        assert "did not take it: the agent relearns EVERY process state of spindle, not only cutting" in out
        assert sorted(c["process_state"] for c in srv.commands.list("gw1")) == ["", "cutting"]
    finally:
        await old.stop(None)
        await srv.stop()


async def test_admin_text_holding_a_byte_that_is_not_utf8_is_refused_in_one_line_and_nothing_is_sent(
    tmp_path, capsys
):
    """A ``--reason``, ``--slot`` or agent typed on a terminal in another code page (Latin-1's 0xFC for 'ü', which
    Python hands over as a lone surrogate) ended the command in a UnicodeEncodeError traceback (protobuf's text
    is UTF-8); a config file named so was sent under its name as the cloud's rule on names refuses it."""
    import os

    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=("alice",))
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    base = ["--endpoint", f"127.0.0.1:{port}", "--pki", str(pki), "--admin", "alice"]
    latin1 = os.fsdecode(b"M\xfcller")  # as sys.argv holds it
    try:
        srv.store.heartbeat("gw1", {}, [], STATE_HEALTH, 0)
        for main, args, said in (
            (
                admin_cli.main_baseline,
                ["relearn", "gw1", "spindle", "--reason", latin1],
                "baseline: --reason",
            ),
            (
                admin_cli.main_deploy,
                ["part-inspection", "--slot", latin1, "--agent", "gw1"],
                "deploy: --slot",
            ),
            (
                admin_cli.main_deploy,
                ["part-inspection", "--slot", "vision", "--agent", latin1],
                "deploy: --agent",
            ),
            (admin_cli.main_config, ["pause", latin1], "config: target"),
        ):
            with pytest.raises(SystemExit) as ei:
                await asyncio.to_thread(main, [*args, *base])
            assert ei.value.code == 2
            assert capsys.readouterr().err == (
                f"cloud-trainer {said} 'M\\xfcller' holds a byte that is not UTF-8 (a terminal or script in "
                "another code page); write it in UTF-8\n"
            )
        config = tmp_path / os.fsdecode(b"Linie_S\xfcd.yaml")
        config.write_text("sources: {}\nmodels: {}\npipelines: []\n")
        with pytest.raises(
            SystemExit
        ) as ei:  # sent, under its name as shown: the cloud's rule on names says it
            await asyncio.to_thread(admin_cli.main_config, ["deploy", str(config), "--agent", "gw1", *base])
        assert "INVALID_ARGUMENT: config name 'Linie_S" in str(ei.value) and "use letters, digits" in str(
            ei.value
        )
        assert srv.commands.list("gw1") == [] and srv.control.list() == []
    finally:
        await srv.stop()


async def test_baseline_status_shows_a_gateways_non_numbers_as_invalid_not_a_traceback(tmp_path, capsys):
    """A gateway's state report is its own word: a broken or hostile one reporting a threshold, a progress or a
    time that is no number ended ``baseline status`` in a ValueError traceback. Each is shown as it came,
    marked invalid, and the other pipelines' lines still print."""
    from cloud_trainer.fleet.service import channel_credentials

    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=("alice",))
    port = free_port()
    srv = FleetServer(tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    creds = channel_credentials(pki / "ca.pem", pki / "agents" / "gw1.pem", pki / "agents" / "gw1.key")
    health = {
        "pump": {"baseline": {"state": "ready", "threshold": "x", "learned_at": "soon", "windows": 20}},
        "fan": {"baseline": {"state": "learning", "progress": "abc", "started_at": 1e300}},
        "mill": {"baseline": "broken"},
        "press": {"baseline": {"state": "ready", "threshold": 0.25, "learned_at": 0, "windows": 20}},
        # an integer past a float's range (JSON bounds no number's digits): OverflowError in math.isfinite
        "drill": {"baseline": {"state": "ready", "threshold": 10**400, "learned_at": 10**400, "windows": 20}},
    }
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            await rpc.FleetStub(ch).Heartbeat(pb.HeartbeatRequest(health_json=json.dumps(health)), timeout=10)
        args = ["status", "gw1", "--endpoint", f"127.0.0.1:{port}", "--pki", str(pki), "--admin", "alice"]
        code, out = await asyncio.to_thread(cli, capsys, *args)
    finally:
        await srv.stop()
    assert code == 0, out
    assert "pump: ready, learned 'soon' (invalid) on 20 windows; threshold 'x' (invalid)" in out
    assert "fan: learning since 1e+300 (invalid)" in out and "('abc' (invalid) %)" in out
    assert "mill: 'broken' (invalid)" in out
    assert "press: ready, learned - on 20 windows; threshold 0.250" in out
    big = str(10**400)
    assert f"drill: ready, learned {big} (invalid) on 20 windows; threshold {big} (invalid)" in out
