"""Agent configuration rolled out like a model, end to end: a real fleet service (gRPC, mTLS, SQLite), a real
Mosquitto broker, and two real agents (`edge-agent run`, killable processes).

- a config the agents' validator refuses is refused by the cloud, naming the field; another tenant's admin
  cannot deploy a config to these agents (PERMISSION_DENIED);
- a canary rollout (`cloud-trainer config deploy`) reaches both agents, which run it (its added MQTT source
  shows on /status);
- a config that validates but fails on the agent (a source that cannot connect) halts the rollout: the
  canary goes back to its last good config, the other agent never receives it;
- kill -9 while a candidate config is starting: the agent comes back on its last good config and the
  fleet hears that the candidate failed; a plain kill -9 and restart comes back on the last good config;
- removing the fleet's config sends the agents back to their local file.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request

import grpc
import pytest
import yaml

from cloud_trainer.fleet.service import FleetServer, channel_credentials
from cloud_trainer.pki import ROLE_ADMIN, issue
from protocols.gen import fleet_pb2 as pb
from protocols.gen import fleet_pb2_grpc as rpc
from tests.support.fleet import ROOT, make_pki
from tests.support.peers import free_port
from tests.support.waits import until


def status(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


class AgentProc:
    def __init__(self, tmp, name: str, pki, cloud_port: int, broker_port: int) -> None:
        self.name, self.http = name, free_port()
        self.path = tmp / f"{name}.yaml"
        self.data = tmp / name
        self.path.write_text(
            yaml.safe_dump(
                {
                    "agent": {"id": name, "site": "plant", "line": name, "data_dir": str(self.data)},
                    "http": {"port": self.http},
                    "sources": {
                        "plant": {
                            "type": "mqtt",
                            "host": "127.0.0.1",
                            "port": broker_port,
                            "subscriptions": [{"topic": "plant/#"}],
                        }
                    },
                    "cloud": {
                        "endpoint": f"127.0.0.1:{cloud_port}",
                        "ca_file": str(pki / "ca.pem"),
                        "cert_file": str(pki / "agents" / f"{name}.pem"),
                        "key_file": str(pki / "agents" / f"{name}.key"),
                        "heartbeat_s": 0.3,
                        "backoff_initial_s": 0.1,
                        "backoff_max_s": 0.5,
                    },
                }
            )
        )
        self.proc = None

    def start(self) -> AgentProc:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", str(self.path), "--config-health-s", "1.5"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(self.data.with_suffix(".log"), "ab"),
        )
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def status(self) -> dict | None:
        return status(self.http)

    def config(self) -> dict:
        return (self.status() or {}).get("config") or {}

    def trial(self) -> dict | None:
        """The candidate config being started, from the agent's own state file."""
        try:
            return json.loads((self.data / "fleet-config" / "state.json").read_text()).get("trial")
        except (OSError, ValueError):
            return None

    def sources(self) -> set[str]:
        return set((self.status() or {}).get("sources") or {})


def fleet_config(broker_port: int, **extra_sources) -> bytes:
    sources = {
        "plant": {
            "type": "mqtt",
            "host": "127.0.0.1",
            "port": broker_port,
            "subscriptions": [{"topic": "plant/#"}],
        },
        **extra_sources,
    }
    return yaml.safe_dump({"sources": sources}).encode()


def mqtt(port: int, topic: str = "line/#") -> dict:
    return {
        "type": "mqtt",
        "host": "127.0.0.1",
        "port": port,
        "subscriptions": [{"topic": topic}],
        "reconnect_min_s": 0.1,
    }


@pytest.fixture
async def world(tmp_path, mosquitto):
    pki = make_pki(tmp_path / "pki", agents=("gw1", "gw2"), admins=("alice",))
    issue(pki, "bob", ROLE_ADMIN, pki / "tenants" / "acme" / "admins" / "bob", tenant="acme")
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key", tick_s=0.2
    )
    await srv.start()
    agents = {a: AgentProc(tmp_path, a, pki, port, mosquitto.port).start() for a in ("gw1", "gw2")}
    chans = []

    def admin(who: str = "alice"):
        c = pki / "admins" / who if who == "alice" else pki / "tenants" / "acme" / "admins" / who
        ch = grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            channel_credentials(pki / "ca.pem", c.with_suffix(".pem"), c.with_suffix(".key")),
        )
        chans.append(ch)
        return rpc.AdminStub(ch)

    try:
        await until(
            lambda: len(srv.store.agents()) == 2 and all(a.status() for a in agents.values()),
            30,
            "both agents up and registered",
        )
        yield srv, agents, admin, pki, port, mosquitto.port
    finally:
        for a in agents.values():
            a.stop()
        for ch in chans:
            await ch.close()
        await srv.stop()


def dep(srv, dep_id: str) -> dict:
    return srv.control.get(dep_id)


async def test_config_rollout_canary_failure_rollback_crash_and_removal(world):
    srv, agents, admin, pki, port, broker = world
    gw1, gw2 = agents["gw1"], agents["gw2"]
    assert gw1.config()["source"] == "local" and gw1.sources() == {"plant"}

    # refused by the cloud with the field named, before anything is stored or sent
    bad = (
        b"agent: {id: gw9}\n"
        + yaml.safe_dump(
            {
                "sources": {"extra": {**mqtt(broker), "port": 99999}},
                "pipelines": [{"name": "p", "source": "nowhere", "model": "vision"}],
            }
        ).encode()
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin().CreateDeployment(
            pb.CreateDeploymentRequest(kind="config", config_yaml=bad, config_name="bad", agents=["gw1"]),
            timeout=60,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bad: sources.extra.port" in err.value.details() and "bad: pipelines[0]" in err.value.details()
    assert "agent: set by each agent" in err.value.details()  # the agents' own sections are never the fleet's
    assert srv.control.list() == []

    # another tenant's admin: as for agents that do not exist
    good = fleet_config(broker, extra=mqtt(broker))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin("bob").CreateDeployment(
            pb.CreateDeploymentRequest(kind="config", config_yaml=good, agents=["gw1"]), timeout=60
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "gw1" in err.value.details()

    # a canary rollout through the admin CLI (in a thread: the service runs on this loop): both agents run the
    # new config (its added source)
    (pki.parent / "line-a.yaml").write_bytes(good)
    r = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "cloud_trainer.cli",
            "config",
            "deploy",
            str(pki.parent / "line-a.yaml"),
            "--endpoint",
            f"127.0.0.1:{port}",
            "--pki",
            str(pki),
            "--admin",
            "alice",
            "--selector",
            "site=plant",
            "--steps",
            "1",
            "100%",
            "--wait",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    a_id = r.stdout.split()[2].rstrip(":")
    a = dep(srv, a_id)
    assert a["kind"] == "config" and a["package"] == "line-a" and list(a["targets"]) == ["gw1", "gw2"]
    await until(lambda: dep(srv, a_id)["state"] == "completed", 30, "the config rollout to complete")
    for ag in (gw1, gw2):
        assert ag.sources() == {"plant", "extra"}
        assert ag.config() | {"reason": ""} == {
            "source": "fleet",
            "deployment_id": a_id,
            "digest": a["digest"],
            "name": "line-a",
            "status": "healthy",
            "reason": "",
        }
    listed = (await admin().ListDeployments(pb.ListDeploymentsRequest(), timeout=10)).deployments[0]
    assert (listed.id, listed.kind, listed.state, [t.status for t in listed.targets]) == (
        a_id,
        "config",
        "completed",
        ["healthy", "healthy"],
    )
    await until(
        lambda: all(
            (x["outbox"].get("config") or {}).get("digest") == a["digest"] for x in srv.store.agents()
        ),
        30,
        "the agents to report the config they run",
    )
    infos = (await admin().ListAgents(pb.ListAgentsRequest(), timeout=10)).agents
    assert {(i.id, i.config.source, i.config.status) for i in infos} == {
        ("gw1", "fleet", "healthy"),
        ("gw2", "fleet", "healthy"),
    }

    # validates everywhere, fails on the agent (a source that cannot connect): halted, canary back on A
    dead = free_port()
    b = srv.control.create_config(
        {
            "config_yaml": fleet_config(broker, extra=mqtt(broker), dead=mqtt(dead)),
            "config_name": "line-b",
            "agents": ["gw1", "gw2"],
            "steps": ["1", "100%"],
        }
    )
    await until(lambda: dep(srv, b["id"])["state"] == "halted", 30, "the failing config rollout to halt")
    d = dep(srv, b["id"])
    assert d["targets"]["gw1"]["status"] == "rolled_back" and "source dead: not connected" in d["reason"]
    assert d["targets"]["gw2"]["status"] == "waiting"  # never received it
    await until(
        lambda: gw1.config().get("digest") == a["digest"] and gw1.sources() == {"plant", "extra"},
        30,
        "the canary back on its last good config",
    )
    assert "rolled back" in gw1.config()["reason"]
    assert gw2.config()["digest"] == a["digest"]

    # kill -9 while a candidate starts: back on the last good config, the fleet hears the candidate failed
    # (created as a v2 admin tool would send a gate: gate_json, still read)
    c = json.loads(
        (
            await admin().CreateDeployment(
                pb.CreateDeploymentRequest(
                    kind="config",
                    config_yaml=fleet_config(broker, extra=mqtt(broker), never=mqtt(dead)),
                    config_name="line-c",
                    agents=["gw1"],
                    strategy="all_at_once",
                    gate_json='{"max_error_rate": 0.5}',
                ),
                timeout=60,
            )
        ).json
    )
    assert c["gate"] == {"max_error_rate": 0.5} and c["kind"] == "config"
    await until(lambda: (gw1.trial() or {}).get("digest") == c["digest"], 20, "gw1 to start the candidate")
    gw1.kill9()
    gw1.start()
    await until(
        lambda: dep(srv, c["id"])["state"] == "halted", 30, "the candidate reported failed after the crash"
    )
    assert "stopped while starting" in dep(srv, c["id"])["reason"]
    await until(lambda: gw1.config().get("digest") == a["digest"], 20, "gw1 back on its last good config")
    assert gw1.sources() == {"plant", "extra"}

    # a plain kill -9 and restart, the fleet down: the last good fleet config, at once
    await srv.stop(0)
    gw2.kill9()
    gw2.start()
    await until(lambda: gw2.config().get("digest") == a["digest"], 20, "gw2 back on the last good config")
    assert gw2.sources() == {"plant", "extra"} and gw2.config()["status"] == "healthy"

    # the fleet back (same data): removing the config sends its agents back to their local file
    srv2 = FleetServer(srv.data, port, pki / "ca.pem", pki / "server.pem", pki / "server.key", tick_s=0.2)
    await srv2.start()
    try:
        removed = await admin().ControlDeployment(
            pb.ControlRequest(deployment_id=a_id, action="remove"), timeout=10
        )
        assert removed.state == "removed"
        for ag in (gw1, gw2):
            await until(
                lambda ag=ag: ag.config().get("source") == "local", 20, f"{ag.name} back on its local file"
            )
            assert ag.sources() == {"plant"}
        # every swap stopped the agent with its outbox closed and reopened it: nothing accepted was lost (each
        # agent start is one "started" event: 4 or more)
        for ag in (gw1, gw2):

            def drained(ag=ag) -> bool:
                ob = (ag.status() or {}).get("outbox") or {}
                return ob.get("depth") == 0 and srv2.store.stats(ag.name)["last_seq"] == ob.get("last_seq")

            await until(drained, 30, f"{ag.name}'s outbox drained to the cloud")
            st = srv2.store.stats(ag.name)
            assert st["records"] == st["last_seq"] >= 4 and srv2.store.gaps(ag.name) == []
    finally:
        await srv2.stop()


def local_gateway(tmp_path, body: dict | None = None):
    """``gw1.yaml``: an in-process gateway's own config (its fleet connection to a port nothing listens on), with
    ``body``'s sections."""
    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=())
    local = tmp_path / "gw1.yaml"
    local.write_text(
        yaml.safe_dump(
            {
                "agent": {"id": "gw1", "data_dir": str(tmp_path / "gw1")},
                "http": {"enabled": False},
                "cloud": {
                    "endpoint": f"127.0.0.1:{free_port()}",
                    "ca_file": str(pki / "ca.pem"),
                    "cert_file": str(pki / "agents" / "gw1.pem"),
                    "key_file": str(pki / "agents" / "gw1.key"),
                },
                **(body or {}),
            }
        )
    )
    return local


async def test_the_agent_refuses_what_only_it_can_check_and_falls_back_when_a_config_does_not_start(tmp_path):
    """In process, the desired config handed straight to the host (no fleet needed): a config naming a key file
    this agent does not have is refused and the running agent is not touched; one whose model package does
    not load fails to start and the agent returns to its last good (here: local) config; both outcomes wait
    for the fleet in the state file."""
    from edge_agent.fleet_config import AgentHost, digest_of, refusal_key
    from tests.support.models import make_keypair

    _, pub = make_keypair(tmp_path / "keys")
    (tmp_path / "garbage.edgepkg").write_bytes(b"not a package")
    host = AgentHost(local_gateway(tmp_path), health_s=1.0)
    await host.start()
    try:
        first = host.agent

        def offer(doc: dict, dep_id: str) -> str:
            data = yaml.safe_dump(doc).encode()
            host._on_desired(
                pb.DesiredConfig(deployment_id=dep_id, digest=digest_of(data), yaml=data, name=dep_id)
            )
            return refusal_key(dep_id, digest_of(data))

        missing = offer({"trusted_keys": ["keys/not-here.pub"]}, "d1")
        await until(lambda: missing in host.keeper.state["refused"], 30, "the config refused")
        assert "trusted_keys[0]: keys/not-here.pub does not exist" in host.keeper.state["refused"][missing]
        assert host.agent is first and first.config_state["source"] == "local"  # never stopped

        broken = offer(
            {
                "trusted_keys": [str(pub)],
                "models": {"vision": {"package": str(tmp_path / "garbage.edgepkg")}},
                "sources": {"cam": {"type": "camera", "url": str(tmp_path), "fps": 5}},
                "pipelines": [{"name": "p", "source": "cam", "model": "vision"}],
            },
            "d2",
        )
        await until(lambda: broken in host.keeper.state["refused"], 20, "the broken config rolled back")
        assert "did not start on it" in host.keeper.state["refused"][broken]
        assert host.agent is not first and host.agent.config_state["source"] == "local"
        assert host.keeper.state["last_good"] is None and host.keeper.state["trial"] is None
        steps = [(r["deployment_id"], r["step"], r["ok"]) for r in host.keeper.state["unreported"]]
        assert steps == [("d1", "failed", False), ("d2", "rolled_back", False)]  # no fleet here: kept for it
    finally:
        await host.stop()


async def test_a_fleet_config_yaml_cannot_build_or_with_a_key_twice_is_refused_and_reported(tmp_path):
    """A fleet config with a date YAML cannot build (`2024-13-45`) raised ValueError past the host's refusal,
    so it was tried again at every desired state and the fleet never heard of it; one with `sources:` given
    twice ran with the second only. Both are refused now, the reason waiting for the fleet, and the running
    agent is not touched."""
    from edge_agent.fleet_config import AgentHost, digest_of, refusal_key

    local = tmp_path / "gw1.yaml"
    local.write_text(
        yaml.safe_dump(
            {"agent": {"id": "gw1", "data_dir": str(tmp_path / "gw1")}, "http": {"enabled": False}}
        )
    )
    host = AgentHost(local, health_s=1.0)
    await host.start()
    try:
        first = host.agent

        def offer(data: bytes, dep_id: str) -> str:
            host._on_desired(
                pb.DesiredConfig(deployment_id=dep_id, digest=digest_of(data), yaml=data, name=dep_id)
            )
            return refusal_key(dep_id, digest_of(data))

        bad_date = offer(b"sources:\n  broker: {type: mqtt, port: 1}\ninstalled: 2024-13-45\n", "d1")
        await until(
            lambda: bad_date in host.keeper.state["refused"], 30, "the config with a bad date refused"
        )
        assert (
            "fleet config d1 (" in host.keeper.state["refused"][bad_date]
            and "not valid YAML at line 3, column 12: cannot read '2024-13-45' as a date or time"
            in host.keeper.state["refused"][bad_date]
        ), host.keeper.state["refused"]

        twice = offer(b"sources:\n  a: {type: mqtt, port: 1}\nsources:\n  b: {type: mqtt, port: 2}\n", "d2")
        await until(lambda: twice in host.keeper.state["refused"], 30, "the config with a key twice refused")
        assert "sources: key given twice (lines 1 and 3)" in host.keeper.state["refused"][twice]

        assert host.agent is first and first.config_state["source"] == "local"  # never stopped
        steps = [(r["deployment_id"], r["step"], r["ok"]) for r in host.keeper.state["unreported"]]
        assert steps == [("d1", "failed", False), ("d2", "failed", False)]  # kept for the fleet
    finally:
        await host.stop()


async def test_a_second_host_on_a_folder_in_use_is_refused_before_it_touches_the_config_state(tmp_path):
    """A second `edge-agent run` started by mistake on a folder in use read the first one's config state
    and, finding a candidate being tried, refused it as if the agent had crashed while starting it (the fleet
    then heard of a failure that never happened); only then did its agent meet the folder's lock. The
    folder is locked first now: the second is refused and the first one's state is left as it was."""
    from edge_agent.agent import DataDirInUse
    from edge_agent.fleet_config import AgentHost

    data = tmp_path / "gw1"
    (data / "fleet-config").mkdir(parents=True)
    trial = {"deployment_id": "d1", "digest": "ab" * 32, "name": "d1"}
    state = {"last_good": None, "trial": trial, "refused": {}, "unreported": []}
    (data / "fleet-config" / "state.json").write_text(json.dumps(state))
    before = (data / "fleet-config" / "state.json").read_bytes()
    holder = subprocess.Popen(  # the first agent: another process holding the folder's lock
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "f.write('4242\\n'); f.flush(); print('locked', flush=True); sys.stdin.read()",
            str(data / "agent.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        local = tmp_path / "gw1.yaml"
        local.write_text(
            yaml.safe_dump({"agent": {"id": "gw1", "data_dir": str(data)}, "http": {"enabled": False}})
        )
        host = AgentHost(local, health_s=1.0)
        with pytest.raises(DataDirInUse, match="is in use by another agent"):
            await host.start()
        assert (data / "fleet-config" / "state.json").read_bytes() == before
    finally:
        holder.stdin.close()
        holder.wait(10)
    host = AgentHost(local, health_s=1.0)  # the folder free again: the crash-while-trying verdict is given
    await host.start()
    try:
        assert (
            host.keeper.state["trial"] is None and host.keeper.state["unreported"][0]["deployment_id"] == "d1"
        )
    finally:
        await host.stop()


async def test_a_config_rollout_on_a_full_disk_logs_its_traceback_once_not_at_every_desired_state(
    tmp_path, caplog
):
    """The desired config comes with every desired state (every heartbeat_s, 5 s by default): while the data
    folder's disk is full (a real 1 MB tmpfs) the config cannot be stored, and that failure was logged with its
    traceback each time, for as long as the disk stayed full; it is said once now, and once there is room the
    config is applied."""
    import logging

    from edge_agent.fleet_config import AgentHost, digest_of
    from tests.support.peers import small_tmpfs

    pki = make_pki(tmp_path / "pki", agents=("gw1",), admins=())
    local = tmp_path / "gw1.yaml"
    local.write_text(
        yaml.safe_dump(
            {
                "agent": {"id": "gw1", "data_dir": str(tmp_path / "gw1")},
                "http": {"enabled": False},
                "cloud": {
                    "endpoint": f"127.0.0.1:{free_port()}",
                    "ca_file": str(pki / "ca.pem"),
                    "cert_file": str(pki / "agents" / "gw1.pem"),
                    "key_file": str(pki / "agents" / "gw1.key"),
                },
            }
        )
    )
    with small_tmpfs(tmp_path / "gw1" / "fleet-config", "1m") as folder:
        host = AgentHost(local, health_s=0.1)
        await host.start()
        try:
            filler = folder / "filler"
            with open(filler, "wb") as f:  # the disk fills up
                with pytest.raises(OSError):
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
            data = yaml.safe_dump({"forward": []}).encode()
            desired = pb.DesiredConfig(deployment_id="d1", digest=digest_of(data), yaml=data, name="d1")
            caplog.set_level(logging.DEBUG, logger="edge_agent.fleet_config")

            def failures() -> list[logging.LogRecord]:
                return [r for r in caplog.records if "reconciling failed" in r.getMessage()]

            for n in range(1, 6):  # five heartbeats while the disk is full
                host._on_desired(desired)
                await until(lambda n=n: len(failures()) >= n, 30, f"desired state {n} looked at")
            assert [r.levelno for r in failures()] == [logging.ERROR] + [logging.DEBUG] * 4
            filler.unlink()  # room again: the next desired state applies the config
            host._on_desired(desired)
            await until(
                lambda: (host.agent.config_state or {}).get("status") == "healthy", 20, "the config applied"
            )
        finally:
            await host.stop()


async def test_a_fleet_configs_refusal_names_the_gateway_variable_a_field_took_never_its_value(
    tmp_path, monkeypatch
):
    """A fleet config may take a gateway's variable (``${GW_TOKEN:-1883}`` passes the cloud's check on its default);
    the agent expands it from its environment, and when the value is refused the refusal that goes to the fleet,
    where the tenant's admins read it, carried the value: "sources.broker.port: Input should be a valid integer
    ... (found 'tok-...')", "unknown source 'line-secret-77'". It names the field and the variable now, never the
    value; the agent keeps running what it runs."""
    from edge_agent.fleet_config import AgentHost, digest_of, refusal_key

    monkeypatch.setenv("GW_TOKEN", "tok-9f8e7d6c-SECRET")
    monkeypatch.setenv("GW_LINE", "line-secret-77")
    local = tmp_path / "gw1.yaml"
    local.write_text(
        yaml.safe_dump(
            {"agent": {"id": "gw1", "data_dir": str(tmp_path / "gw1")}, "http": {"enabled": False}}
        )
    )
    host = AgentHost(local, health_s=1.0)
    await host.start()
    try:
        first = host.agent
        data = (
            b"sources:\n"
            b"  broker: {type: mqtt, host: 127.0.0.1, port: '${GW_TOKEN:-1883}', subscriptions: [{topic: 'p/#'}]}\n"
            b"pipelines:\n"
            b"  - {name: p, source: '${GW_LINE:-broker}', model: vision}\n"
        )
        host._on_desired(pb.DesiredConfig(deployment_id="d1", digest=digest_of(data), yaml=data, name="c1"))
        key = refusal_key("d1", digest_of(data))
        await until(lambda: key in host.keeper.state["refused"], 30, "the config refused")
        sent = [r["reason"] for r in host.keeper.state["unreported"]]  # what goes to the fleet
        for reason in [host.keeper.state["refused"][key], *sent]:
            assert "SECRET" not in reason and "line-secret" not in reason, reason  # was: both, as found
            assert "sources.broker.port: " in reason and "${GW_TOKEN}" in reason, reason
            assert "pipelines[0].source: " in reason and "${GW_LINE}" in reason, reason
        assert host.agent is first  # never stopped
    finally:
        await host.stop()


async def test_a_sources_error_told_to_the_fleet_hides_a_gateway_value_before_it_is_cut(tmp_path):
    """A source's error was cut to 200 characters before the gateway's values were hidden: a value straddling the
    cut kept its start ("... login tok-9f8e…"). Hidden first, then cut."""
    from types import SimpleNamespace

    from edge_agent.fleet_config import AgentHost

    secret = "tok-9f8e7d6c5b4a-SECRET-0123456789"
    src = SimpleNamespace(
        state="disconnected", stats=SimpleNamespace(last_error=f"{'x' * 185} login {secret} refused")
    )
    local = tmp_path / "gw1.yaml"
    local.write_text(yaml.safe_dump({"agent": {"id": "gw1", "data_dir": str(tmp_path / "gw1")}}))
    host = AgentHost(local, health_s=0.0)
    why = await host._health(SimpleNamespace(sources={"broker": src}), {"GW_TOK": secret})
    assert why is not None and "source broker: not connected" in why and "login <$GW_TOK" in why, why
    assert "tok-9f8e" not in why, why  # was: the secret's first 9 characters


async def test_a_gateway_password_holding_a_byte_that_is_not_utf8_is_never_told_to_the_fleet(
    tmp_path, monkeypatch
):
    """A gateway's password from an environment file saved in Latin-1: the substitution's refusal quoted it whole
    in the form a byte that is not UTF-8 is written in ('M\\xfcller-...'), which was not hidden, and it waited in
    the reasons for the fleet beside "its value is not sent to the fleet". It names the variable and the byte's
    place now."""
    import os

    from edge_agent.fleet_config import AgentHost, digest_of, refusal_key

    monkeypatch.setenv("GW_PASS", os.fsdecode(b"M\xfcller-Werk3-Passwort-2024"))
    local = tmp_path / "gw1.yaml"
    local.write_text(
        yaml.safe_dump(
            {"agent": {"id": "gw1", "data_dir": str(tmp_path / "gw1")}, "http": {"enabled": False}}
        )
    )
    host = AgentHost(local, health_s=1.0)
    await host.start()
    try:
        data = (
            b"sources:\n  broker: {type: mqtt, host: 127.0.0.1, port: 1883, username: op, password: '${GW_PASS}',"
            b" subscriptions: [{topic: 'p/#'}]}\n"
        )
        host._on_desired(pb.DesiredConfig(deployment_id="d1", digest=digest_of(data), yaml=data, name="c1"))
        key = refusal_key("d1", digest_of(data))
        await until(lambda: key in host.keeper.state["refused"], 30, "the config refused")
        sent = [r["reason"] for r in host.keeper.state["unreported"]]
        assert sent
        for reason in [host.keeper.state["refused"][key], *sent]:
            assert "Passwort" not in reason and "ller-Werk3" not in reason, reason  # was: the whole password
            assert (
                "sources.broker.password: environment variable GW_PASS holds a byte that is not UTF-8"
                in reason
            )
    finally:
        await host.stop()


async def test_a_config_keeping_a_slot_failed_under_the_running_one_is_applied_not_rolled_back(tmp_path):
    """A gateway whose slot failed at the start (its package refused, nothing installed) waits for the fleet's
    package; a config rolled out meanwhile that keeps that slot as it is (here: a camera's fps changed) did not bring
    the failure: it was rolled back, refused for good, and no config reached the gateway until a model did. Now it
    is applied and judged as any config; one bringing a failure of its own is still rolled back (the test above).
    Here the package is signed by a key not trusted, and the config also trusts one more key (a rotation): the
    failure's text names the trusted keys, and compared on it such a config was rolled back all the same."""
    import cv2
    import numpy as np

    from edge_agent.fleet_config import AgentHost, digest_of
    from tests.support.models import make_keypair, make_package

    key, pub = make_keypair(tmp_path / "keys")
    _, pub2 = make_keypair(tmp_path / "keys2")
    other, _ = make_keypair(tmp_path / "keys3")
    (tmp_path / "o").mkdir()
    untrusted = make_package(tmp_path / "o", kind="vision", version="1.0.0", key=other, heatmap=False)
    trusted = make_package(tmp_path, kind="vision", version="1.0.0", key=key, heatmap=False)
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "0.png"), np.zeros((64, 64, 3), np.uint8))
    body = {
        "trusted_keys": [str(pub)],
        "models": {"vision": {"package": str(untrusted)}},
        "sources": {"cam": {"type": "camera", "url": str(tmp_path / "frames"), "fps": 5, "loop": True}},
        "pipelines": [{"name": "p", "source": "cam", "model": "vision"}],
    }
    host = AgentHost(local_gateway(tmp_path, body), health_s=1.0)
    await host.start()
    try:
        assert host.agent is not None and host.agent.slots["vision"].state == "failed"
        data = yaml.safe_dump(
            {
                **body,
                "trusted_keys": [str(pub), str(pub2)],
                "sources": {"cam": {**body["sources"]["cam"], "fps": 2}},
            }
        ).encode()
        host._on_desired(pb.DesiredConfig(deployment_id="d1", digest=digest_of(data), yaml=data, name="d1"))
        await until(
            lambda: (host.keeper.state["last_good"] or {}).get("deployment_id") == "d1", 20, "applied"
        )
        assert host.keeper.state["refused"] == {}
        assert host.agent.config_state["source"] == "fleet" and host.agent.slots["vision"].state == "failed"

        # the operator's fix: the failed slot's refused package left to the fleet (name only, follow_fleet), and a
        # second fleet-fed slot added with its pipeline. Both start failed for having no package yet, the state the
        # fleet's deployment fills: each was rolled back, refused for good told "waiting for the fleet's
        # deployment", and that deployment was then declined (the agent had no such slot)
        def offer(doc: dict, dep_id: str) -> None:
            data = yaml.safe_dump(doc).encode()
            host._on_desired(
                pb.DesiredConfig(deployment_id=dep_id, digest=digest_of(data), yaml=data, name=dep_id)
            )

        fleet_fed = {"name": "part-inspection", "version_policy": "follow_fleet"}
        to_fleet = {**body, "models": {"vision": fleet_fed}}
        offer(to_fleet, "d2")
        await until(lambda: (host.keeper.state["last_good"] or {}).get("deployment_id") == "d2", 20, "d2")
        added = {
            **to_fleet,
            "models": {"vision": fleet_fed, "vision2": fleet_fed},
            "pipelines": [*body["pipelines"], {"name": "p2", "source": "cam", "model": "vision2"}],
        }
        offer(added, "d3")
        await until(lambda: (host.keeper.state["last_good"] or {}).get("deployment_id") == "d3", 20, "d3")
        assert host.keeper.state["refused"] == {}
        slots = host.agent.slots
        assert all(slots[n].waiting_for_fleet for n in ("vision", "vision2")), slots
        # what the healthy note tells the fleet's gate: those pipelines named, their items (UNSURE no_model) not
        # counted as errors; they were, and a max_error_rate gate failed the config and halted its rollout
        from edge_agent.fleet_config import _pipeline_health

        await until(lambda: all(p.stats.model_failed for p in host.agent.pipelines), 20, "items")
        health = _pipeline_health(host.agent)
        assert health["error_rate"] == 0 and health["waiting_for_fleet"] == ["p", "p2"], health

        # the fleet (at a port nothing listens on) cannot be reached: the slot's reason on /status says so, with the
        # uplink's error (it said "waiting for the fleet's deployment" alone, for ever)
        def reason() -> str:
            (m,) = [m for m in host.agent.status()["models"] if m["slot"] == "vision2"]
            return m["failed"]

        await until(
            lambda: "; the fleet is not connected: " in reason(), 20, "the slot naming the fleet's trouble"
        )
        assert reason().startswith("no package yet: waiting for the fleet's deployment"), reason()
        assert "Connection refused" in reason(), reason()
        # the fleet's deployment to the new slot reaches it, and fills it (the swap a deployment makes)
        assert host.agent.manager is not None and "vision2" in host.agent.manager.slots
        out = await slots["vision2"].swap(trusted, watch=False)
        assert out.ok and slots["vision2"].failed is None and not slots["vision2"].waiting_for_fleet, out

        # but a config renaming that slot (a typo) puts its judging pipeline on a slot with no package: rolled back,
        # naming the pipeline. It was applied and reported healthy, p2's items unjudged on every agent of the rollout
        renamed = {**added, "models": {"vision": fleet_fed, "visoin2": fleet_fed}}
        renamed["pipelines"] = [*body["pipelines"], {"name": "p2", "source": "cam", "model": "visoin2"}]
        offer(renamed, "d4")
        await until(lambda: host.keeper.state["refused"], 20, "d4 refused")
        (why,) = host.keeper.state["refused"].values()
        assert "model slot 'visoin2': pipeline p2 judged on slot 'vision2' under the running config" in why, (
            why
        )
        await until(
            lambda: host.agent is not None and host.agent.slots["vision2"].state == "active", 20, "d3"
        )
        assert host.keeper.state["last_good"]["deployment_id"] == "d3"
        # so is one renaming the slot and its pipeline together (vision2 -> visoin2, p2 -> p3): matched by the
        # pipeline's name alone, it was applied, reported healthy, p3's items unjudged
        both = {
            **renamed,
            "pipelines": [*body["pipelines"], {"name": "p3", "source": "cam", "model": "visoin2"}],
        }
        offer(both, "d4b")
        await until(lambda: len(host.keeper.state["refused"]) == 2, 20, "d4b refused")
        why = host.keeper.state["refused"][f"d4b/{digest_of(yaml.safe_dump(both).encode())}"]
        assert (
            "model slot 'visoin2': pipeline p3 reads source cam, which pipeline p2 (not in this config) judged on "
            "slot 'vision2' under the running config, and judges nothing here: no package yet" in why
        ), why
        await until(
            lambda: host.agent is not None and host.agent.slots["vision2"].state == "active", 20, "d3"
        )

        # a candidate refusing the version a slot serves sets its folder aside at its start, and is rolled back: the
        # folder is put back, the slot serves it again. The fall back found nothing installed, the slot failed
        # until the fleet sent the package again (for ever for one installed from a local file)
        refusing = {
            **added,
            "models": {"vision": fleet_fed, "vision2": {**fleet_fed, "refused_versions": ["1.0.0"]}},
        }
        offer(refusing, "d5")
        await until(lambda: len(host.keeper.state["refused"]) == 3, 20, "d5 refused")
        await until(
            lambda: host.agent is not None and host.agent.slots["vision2"].state != "stopped", 20, "d3"
        )
        assert host.agent.slots["vision2"].version == "1.0.0", host.agent.slots["vision2"].failed

        # and where the process ends during such a trial (a kill, a power cut: here its host left at the candidate's
        # start, never stopped), the next start puts the folder back for the last good config, which found nothing
        # installed: the slot waited for the fleet's package
        class Ended(BaseException):
            pass

        async def ended(*_a) -> None:
            raise Ended

        host._refuse_failed_slots = ended
        offer(refusing, "d6")
        await until(lambda: host._task is not None and host._task.done(), 20, "d6 cut short")
        assert isinstance(host._task.exception(), Ended)
        assert host.keeper.state["trial"]["deployment_id"] == "d6" and host.agent is not None
        await host.agent.stop()
        host._lock.release()
        host = AgentHost(host.local_path, health_s=1.0)
        await host.start()
        assert "d6/" in " ".join(host.keeper.state["refused"]), host.keeper.state["refused"]
        assert host.agent.slots["vision2"].version == "1.0.0", host.agent.slots["vision2"].failed

        # so too where it ends after the trial was refused, before its folders were put back (here: its host left as
        # the fall back starts): the trial's record was gone by then, and nothing was put back
        host._fall_back = ended
        offer(refusing, "d7")
        await until(lambda: host._task is not None and host._task.done(), 20, "d7 cut short")
        assert isinstance(host._task.exception(), Ended) and host.keeper.state["trial"] is None
        assert host.agent is None  # (the candidate stopped at its refusal)
        host._lock.release()
        host = AgentHost(host.local_path, health_s=1.0)
        await host.start()
        assert "d7/" in " ".join(host.keeper.state["refused"]) and not host.keeper.state.get("put_back")
        assert host.agent.slots["vision2"].version == "1.0.0", host.agent.slots["vision2"].failed

        # and a graceful stop during such a trial (no verdict on it: tried again later) has them put back at the next
        # start: the trial's record was dropped, and the last good config found the slot empty
        held = asyncio.Event()

        async def hold(*_a) -> None:
            held.set()
            await asyncio.Event().wait()

        host._refuse_failed_slots = hold
        offer(refusing, "d8")
        await asyncio.wait_for(held.wait(), 20)
        await host.stop()
        assert host.keeper.state["trial"] is None and host.keeper.state["put_back"], host.keeper.state
        host = AgentHost(host.local_path, health_s=1.0)
        await host.start()
        assert host.agent.slots["vision2"].version == "1.0.0", host.agent.slots["vision2"].failed
    finally:
        await host.stop()


async def test_a_config_whose_waiting_slot_holds_a_plcs_heartbeat_says_so_in_its_healthy_report(tmp_path):
    """A config adding a fleet-fed slot with a pipeline writing through a PLC is applied (the fleet fills the slot
    next), and the PLC's heartbeat is held until its package serves: the PLC's watchdog trips and its line goes to
    its safe state, on every agent of the rollout. It was reported healthy, nothing said: the healthy report names
    the held heartbeat (source -> pipelines) beside waiting_for_fleet, and its reason (what the fleet's rollout
    shows by the agent) says it."""
    from asyncua import ua

    from edge_agent.fleet_config import AgentHost, digest_of
    from tests.support.models import make_keypair
    from tests.support.plc import plc

    _, pub = make_keypair(tmp_path / "keys")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "0.png").write_bytes(b"")  # never read: the candidate's start is what is judged
    variables = {
        "Life": ua.Variant(0, ua.VariantType.Int32),
        "Reject": ua.Variant(False, ua.VariantType.Boolean),
    }
    async with plc(variables) as p:
        heartbeat = {"node_id": p.node_id("Life"), "period_ms": 100, "kind": "counter"}
        endpoint = f"opc.tcp://127.0.0.1:{p.port}/plc/"
        body = {"sources": {"plc": {"type": "opcua", "endpoint": endpoint, "heartbeat": heartbeat}}}
        host = AgentHost(local_gateway(tmp_path, body), health_s=3.0)
        await host.start()
        try:
            cand = {
                "trusted_keys": [str(pub)],
                "models": {"vision2": {"name": "part-inspection", "version_policy": "follow_fleet"}},
                "sources": {
                    **body["sources"],
                    "cam": {"type": "camera", "url": str(tmp_path / "frames"), "fps": 1, "loop": True},
                },
                "actions": {
                    "reject": {
                        "type": "opcua_write",
                        "source": "plc",
                        "node_id": p.node_id("Reject"),
                        "when": {"verdict": "NG"},
                    }
                },
                "pipelines": [{"name": "p2", "source": "cam", "model": "vision2", "actions": ["reject"]}],
            }
            data = yaml.safe_dump(cand).encode()
            host._on_desired(
                pb.DesiredConfig(deployment_id="d1", digest=digest_of(data), yaml=data, name="d1")
            )
            await until(lambda: (host.keeper.state["last_good"] or {}).get("deployment_id") == "d1", 20, "d1")
            assert host.keeper.state["refused"] == {}
            (note,) = [r for r in host.keeper.state["unreported"] if r["step"] == "healthy"]
            assert note["health"]["waiting_for_fleet"] == ["p2"], note
            assert note["health"]["heartbeats_held"] == {"plc": ["p2"]}, note
            assert note["reason"].startswith(
                "heartbeat of source plc held until the fleet's package serves"
            ), note
            assert "(p2)" in note["reason"], note
            # and it is so: the PLC's watchdog output stands still (/status says so under the source)
            assert host.agent is not None
            src = host.agent.sources["plc"]
            await until(lambda: src.heartbeat_held is not None, 20, "the heartbeat held")

            # two cameras on two new fleet-fed slots sharing one reject gate on NG and UNSURE: each rejects every part
            # while both wait (the heartbeat runs), and the first package to one of them holds it until the other's
            # serves (its OK parts' false follows the other's unjudged parts' true): said, where none was held
            gate = {"mode": "level", "reset_value": False, "when": {"verdict": {"in": ["NG", "UNSURE"]}}}
            cand2 = {
                **cand,
                "models": {
                    s: {"name": "part-inspection", "version_policy": "follow_fleet"}
                    for s in ("vision3", "vision4")
                },
                "sources": {**cand["sources"], "cam2": cand["sources"]["cam"]},
                "actions": {"reject": {**cand["actions"]["reject"], **gate}},
                "pipelines": [
                    {"name": "p3", "source": "cam", "model": "vision3", "actions": ["reject"]},
                    {"name": "p4", "source": "cam2", "model": "vision4", "actions": ["reject"]},
                ],
            }
            data = yaml.safe_dump(cand2).encode()
            host._on_desired(
                pb.DesiredConfig(deployment_id="d2", digest=digest_of(data), yaml=data, name="d2")
            )
            await until(lambda: (host.keeper.state["last_good"] or {}).get("deployment_id") == "d2", 20, "d2")
            (note,) = [
                r
                for r in host.keeper.state["unreported"]
                if r["step"] == "healthy" and r.get("deployment_id") == "d2"
            ]
            assert "heartbeats_held" not in note["health"], note
            assert note["health"]["heartbeats_held_once_served"] == {"plc": ["p3", "p4"]}, note
            assert note["reason"].startswith("heartbeat of source plc held once a package serves a slot"), (
                note
            )
        finally:
            await host.stop()
