"""Fleet control end to end on one machine: a real fleet service (gRPC, mTLS, SQLite) with a registry,
and real agents (camera folder source, ONNX Runtime) that heartbeat, download by digest, verify, hot swap
and report. Canary rollout to completion; a candidate failing its health check halts the rollout, the
canary is rolled back and the other agent never receives it; a package with a bad signature is refused
by the agent and halts the rollout with the reason; a download cut mid-way resumes at its offset."""

from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
from pathlib import Path

import pytest

from cloud_trainer.fleet.service import FleetServer
from cloud_trainer.registry import Registry
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from model_packager import load_trusted_keys
from simulators.camera import write_folder
from tests.support import waits
from tests.support.fleet import make_pki
from tests.support.models import make_keypair, make_package
from tests.support.once import built_once, run_root
from tests.support.peers import free_port, small_tmpfs

until = functools.partial(waits.until, timeout_s=60.0)  # a rollout over real agents: a longer default

# This file's agents install in the test's process, the key loaded (read by the ``fleet`` fixture, and the default
# of ``new_agent``), not in a ``python -m edge_agent.models.install`` child at each start and swap (~0.55 CPU s
# each): what these tests judge is the rollout, not the install. A module of the fixture's other users sets it too
# where its tests judge the fleet and the manager (test_fleet_withdraw_downloading), and names in
# ``INSTALLS_IN_CHILD`` the tests whose subject is the install itself (test_fleet_hostile's crafted packages): their
# agents keep the child, an agent's own. A module that sets neither keeps the child for every test.
INSTALLS_IN_PROCESS = True
# the fleet service advances rollouts 5 times a second, not once (its default): each step of a rollout waited up to
# a tick, and the running fleet's agents cost ~0.1 CPU s a second for as long as a test waited
TICK_S = 0.2


def new_agent(cfg, in_process: bool = INSTALLS_IN_PROCESS) -> Agent:
    """``Agent(cfg)``, not started; ``in_process``: its slots given the trusted keys loaded, so that each install
    and installed check runs in this process (``ModelStore.install``/``verify``), not in a child process."""
    agent = Agent(cfg)
    if in_process:
        keys = load_trusted_keys([cfg.path(k) for k in cfg.trusted_keys])
        for s in agent.slots.values():
            s.trusted = keys
    return agent


def _fleet_packages(d: Path) -> dict[str, str]:
    """The fleet's four packages of part-inspection (1.0.0, 1.1.0, 1.2.0 with NaN outputs, 1.3.0 signed by the
    ``rogue`` key no agent trusts), signed by ``keys/signing.key``: version -> path relative to ``d``."""
    key, _ = make_keypair(d / "keys")
    pk = {
        v: make_package(d / "b", kind="vision", version=v, key=key, bias=6.0, seed=i)
        for i, v in enumerate(["1.0.0", "1.1.0"])
    }
    pk["1.2.0"] = make_package(d / "b", kind="vision", version="1.2.0", key=key, nan=True)
    rogue_key, _ = make_keypair(d / "rogue")
    pk["1.3.0"] = make_package(d / "b", kind="vision", version="1.3.0", key=rogue_key, bias=6.0)
    return {v: str(p.relative_to(d)) for v, p in pk.items()}


@pytest.fixture
async def fleet(request, tmp_path, tmp_path_factory):
    """A fleet service and two started agents, gw1 and gw2, on 1.0.0. Their installs run in the test's process
    if the requesting test's module sets ``INSTALLS_IN_PROCESS`` (this one) and does not name the test in its
    ``INSTALLS_IN_CHILD``, else in the agents' child. The keys and packages are built once per run and copied
    into the test's folder (``keys``, ``rogue``, ``b/packages``), where a test may change them."""
    in_process = getattr(
        request.module, "INSTALLS_IN_PROCESS", False
    ) and request.function.__name__ not in getattr(request.module, "INSTALLS_IN_CHILD", ())
    pki = make_pki(tmp_path / "pki", agents=("gw1", "gw2"))
    built = built_once(tmp_path_factory, "fleet-packages", _fleet_packages)
    once = run_root(tmp_path_factory) / "once-fleet-packages"
    for part in ("keys", "rogue", "b/packages"):
        shutil.copytree(once / part, tmp_path / part)
    pub = tmp_path / "keys" / "signing.pub"
    reg = Registry(tmp_path / "registry")
    pk = {v: tmp_path / rel for v, rel in built.items()}
    for p in pk.values():
        reg.publish(p, [], {}, None, None)
    port = free_port()
    srv = FleetServer(
        tmp_path / "cloud",
        port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        registry=tmp_path / "registry",
        tick_s=TICK_S,
    )
    await srv.start()
    frames = write_folder(tmp_path / "frames", 10, seed=0, defect_rate=0.3, size=64)
    agents = {}
    for a in ("gw1", "gw2"):
        cfg = parse_config(
            {
                "agent": {"id": a, "site": "plant", "line": a, "data_dir": str(tmp_path / a)},
                "trusted_keys": [str(pub)],
                "http": {"enabled": False},
                # 5 frames a second: a health window's 5 inferences in its 1 s (at 10, the two agents' frames,
                # results and their uplink to the fleet took ~0.04 of a core more for as long as a test ran:
                # test_fleet_control 40.3 -> 32.6 CPU s; at 30, ~0.15 more)
                "sources": {"cam": {"type": "camera", "url": str(frames), "fps": 5, "loop": True}},
                "models": {
                    "vision": {
                        "package": str(pk["1.0.0"]),
                        "version_policy": "follow_fleet",
                        "engine": "onnxruntime",
                        # the latency bound out of reach: these tests are about rollouts and rollbacks on NaN/Inf,
                        # and a 0.2-ms model's p50 moved ~3 ms by a loaded suite machine rolled a sound one back
                        "health": {"window_s": 1.0, "min_items": 5, "min_latency_increase_ms": 10_000},
                    }
                },
                "pipelines": [{"name": "inspect", "source": "cam", "model": "vision"}],
                "cloud": {
                    "endpoint": f"127.0.0.1:{port}",
                    "ca_file": str(pki / "ca.pem"),
                    "cert_file": str(pki / "agents" / f"{a}.pem"),
                    "key_file": str(pki / "agents" / f"{a}.key"),
                    "heartbeat_s": 0.3,
                    "backoff_initial_s": 0.1,
                    "backoff_max_s": 0.5,
                },
            }
        )
        agents[a] = new_agent(cfg, in_process)
        await agents[a].start()
    await until(lambda: len(srv.store.agents()) == 2, what="both agents registered")
    yield srv, agents, reg
    for ag in agents.values():
        await ag.stop()
    await srv.stop()


def version(agent) -> str:
    return agent.slots["vision"].version


def desired_heard(agent):
    """A count of the desired states ``agent`` acts on from now on (one a heartbeat): "several heartbeats later"
    waited as that many heard, not as a fixed sleep a loaded machine may fill with fewer of them."""
    heard = [0]
    on_desired = agent.manager.on_desired

    async def noted(reply):
        await on_desired(reply)
        heard[0] += 1

    agent.manager.on_desired = noted
    return lambda: heard[0]


async def heartbeats(*agents, n: int = 3) -> None:
    """Until each of ``agents`` has acted on ``n`` more desired states."""
    counts = [desired_heard(a) for a in agents]
    await until(lambda: all(c() >= n for c in counts), what=f"{n} more desired states heard by each agent")


async def test_canary_rollout_completes_then_a_failing_candidate_is_halted_and_rolled_back(fleet):
    srv, agents, reg = fleet
    dep = srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "selector": {"site": "plant"},
            "strategy": "canary",
            "steps": ["1", "100%"],
            "wait_s": 0,
        }
    )
    await until(lambda: srv.control._get(dep["id"])["state"] == "completed", what="the rollout to complete")
    assert version(agents["gw1"]) == version(agents["gw2"]) == "1.1.0"
    steps = [s["step"] for s in agents["gw1"].manager.steps if s["version"] == "1.1.0"]
    assert steps[:4] == ["downloading", "verifying", "active", "healthy"]

    bad = srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.2.0",
            "slot": "vision",
            "agents": ["gw1", "gw2"],
            "strategy": "canary",
            "steps": ["1", "100%"],
        }
    )
    await until(lambda: srv.control._get(bad["id"])["state"] == "halted", what="the bad rollout to halt")
    d = srv.control._get(bad["id"])
    assert "NaN/Inf" in d["reason"] and d["targets"]["gw1"]["status"] == "rolled_back"
    assert d["targets"]["gw2"]["status"] == "waiting"  # never received it
    await heartbeats(agents["gw1"], agents["gw2"])
    assert version(agents["gw1"]) == "1.1.0" and version(agents["gw2"]) == "1.1.0"


async def test_package_with_an_untrusted_signature_is_refused_and_halts_the_rollout(fleet):
    srv, agents, _ = fleet
    dep = srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.3.0",
            "slot": "vision",
            "agents": ["gw2", "gw1"],
            "strategy": "canary",
            "steps": ["1", "100%"],
        }
    )
    await until(lambda: srv.control._get(dep["id"])["state"] == "halted", what="halt")
    d = srv.control._get(dep["id"])
    assert "not among the trusted keys" in d["reason"]
    assert version(agents["gw1"]) == version(agents["gw2"]) == "1.0.0"


async def test_download_resumes_at_the_offset_after_a_cut(fleet, tmp_path):
    srv, agents, reg = fleet
    entry = reg.get("part-inspection", "1.1.0")
    full = reg.package_path(entry).read_bytes()
    mgr = agents["gw1"].manager
    part = mgr.staging / f"{entry['digest']}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(full[: len(full) // 3])  # what a cut connection left behind
    with (
        srv.control.lock
    ):  # an agent downloads only what is deployed to it (a slot it does not run: no install)
        srv.control._set_desired(
            "gw1", "other-slot", "part-inspection", "1.1.0", entry["digest"], len(full), "x"
        )

    class D:
        slot, package, version, digest, deployment_id = (
            "vision",
            "part-inspection",
            "1.1.0",
            entry["digest"],
            "x",
        )

    path = await mgr.download(D())
    assert path.read_bytes() == full
    path.unlink()
    part.write_bytes(full + b"\0" * 4096)  # longer than the package: the fleet says OUT_OF_RANGE
    path = await mgr.download(D())
    assert path.read_bytes() == full


async def test_admin_cli_shows_the_fleet_and_deploys_and_agent_certificates_cannot(fleet, tmp_path, capsys):
    import sys
    from types import SimpleNamespace

    from cloud_trainer.cli import main
    from tests.support.fleet import ROOT

    srv, agents, _ = fleet
    pki = tmp_path / "pki"
    base = ["--endpoint", f"127.0.0.1:{srv.port}", "--pki", str(pki), "--admin", "alice"]

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "cloud_trainer.cli", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    def in_process(*args):  # the same entry point, without a new interpreter's imports (~1 CPU s each)
        capsys.readouterr()
        said = ""
        try:
            code = main(list(args))
        except SystemExit as exc:  # sys.exit(message): the interpreter prints it to stderr and exits 1
            code, said = (exc.code, "") if isinstance(exc.code, int) else (1, str(exc.code))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err + said)

    # one real `cloud-trainer deploy` process (its exit code and output as a user gets them); the other verbs
    # through the same entry point in this process
    r = await asyncio.to_thread(in_process, "agents", *base)
    assert r.returncode == 0 and "gw1" in r.stdout and "vision=part-inspection-1.0.0" in r.stdout
    r = await asyncio.to_thread(
        cli,
        "deploy",
        "part-inspection",
        "--version",
        "1.1.0",
        "--slot",
        "vision",
        "--selector",
        "site=plant",
        "--steps",
        "1",
        "100%",
        "--wait",
        "0",
        *base,
    )
    assert r.returncode == 0 and "to 2 agents" in r.stdout, r.stderr
    await until(lambda: version(agents["gw1"]) == version(agents["gw2"]) == "1.1.0", what="convergence")
    r = await asyncio.to_thread(in_process, "deployments", *base)
    assert "completed" in r.stdout or "running" in r.stdout
    r = await asyncio.to_thread(in_process, "status", *base)
    assert r.returncode == 0 and "agents: 2" in r.stdout
    # an agent certificate is refused by the admin service
    (pki / "admins" / "gw1.pem").write_bytes((pki / "agents" / "gw1.pem").read_bytes())
    (pki / "admins" / "gw1.key").write_bytes((pki / "agents" / "gw1.key").read_bytes())
    r = await asyncio.to_thread(
        in_process, "agents", "--endpoint", f"127.0.0.1:{srv.port}", "--pki", str(pki), "--admin", "gw1"
    )
    assert r.returncode not in (0, None) and "PERMISSION_DENIED" in r.stderr, (r.returncode, r.stderr)


async def test_cloud_restarted_mid_rollout_resumes_from_persisted_state(fleet, tmp_path):
    srv, agents, _ = fleet
    dep = srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "agents": ["gw1", "gw2"],
            "strategy": "canary",
            "steps": ["1", "100%"],
            "wait_s": 2,
        }
    )
    await until(
        lambda: srv.control._get(dep["id"])["targets"]["gw1"]["status"] == "healthy", what="canary healthy"
    )
    assert version(agents["gw2"]) == "1.0.0"
    await srv.stop()  # the cloud goes away in the middle of the rollout
    pki = tmp_path / "pki"
    srv2 = FleetServer(
        tmp_path / "cloud",
        srv.port,
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        registry=tmp_path / "registry",
        tick_s=TICK_S,
    )
    await srv2.start()
    try:
        await until(
            lambda: srv2.control._get(dep["id"])["state"] == "completed", what="the rollout to resume"
        )
        assert version(agents["gw1"]) == version(agents["gw2"]) == "1.1.0"
    finally:
        await srv2.stop()


async def test_agent_offline_during_a_rollout_converges_when_it_returns(fleet):
    srv, agents, _ = fleet
    cfg = agents["gw2"].cfg
    await agents["gw2"].stop()  # gw2 is down when its step comes
    dep = srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "agents": ["gw1", "gw2"],
            "strategy": "canary",
            "steps": ["1", "100%"],
            "wait_s": 0,
        }
    )
    await until(
        lambda: srv.control._get(dep["id"])["targets"]["gw2"]["status"] == "assigned", what="gw2's step"
    )
    assert srv.control._get(dep["id"])["state"] == "running"
    agents["gw2"] = new_agent(cfg)  # restarted: same config and data folder
    await agents["gw2"].start()
    try:
        await until(
            lambda: srv.control._get(dep["id"])["state"] == "completed", what="convergence after restart"
        )
    except AssertionError as exc:  # where it stood: a suite run timed out here once, its state unsaid
        d = srv.control._get(dep["id"])
        targets = {a: (t["status"], t.get("report"), t.get("reason")) for a, t in d["targets"].items()}
        st = agents["gw2"].slots["vision"].status()
        slot = {k: st.get(k) for k in ("state", "version", "failed", "counters", "last_swap")}
        up = agents["gw2"].uplink
        raise AssertionError(
            f"{exc}: rollout {d['state']}, targets {targets}, gw2's slot {slot}, its uplink {up.state} "
            f"{up.last_error!r}"
        ) from None
    assert version(agents["gw2"]) == "1.1.0"


async def test_agent_restarted_inside_the_health_window_resumes_it_and_reports_the_outcome_once(fleet):
    """An orderly restart (SIGTERM) inside the health window used to roll the candidate back whatever it
    was worth; the restarted agent now serves it for a new window, which decides (here: NaN on every
    frame, rolled back), and the fleet hears the outcome once."""
    from edge_agent.models.config import HealthConfig

    srv, agents, _ = fleet
    base = agents["gw1"].cfg
    await agents["gw1"].stop()
    # a health window that cannot end by itself during the test: only the restart decides
    vision = base.models["vision"].model_copy(
        update={"health": HealthConfig(window_s=120.0, min_items=100_000)}
    )
    cfg = base.model_copy(update={"models": {"vision": vision}})
    agents["gw1"] = new_agent(cfg)
    await agents["gw1"].start()
    reports = []
    on_report = srv.control.on_report
    srv.control.on_report = lambda agent, *a, **kw: (
        reports.append((agent, *a[:4])),
        on_report(agent, *a, **kw),
    )[1]
    dep = srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.2.0",
            "slot": "vision",
            "agents": ["gw1", "gw2"],
            "strategy": "canary",
            "steps": ["1", "100%"],
        }
    )
    await until(lambda: srv.control._get(dep["id"])["targets"]["gw1"]["status"] == "active", what="the swap")
    assert version(agents["gw1"]) == "1.2.0"
    await agents["gw1"].stop()  # orderly, inside the health window
    agents["gw1"] = new_agent(base)  # restarted on the same data folder, with a window that ends in the test
    await agents["gw1"].start()
    assert version(agents["gw1"]) == "1.2.0"  # resumed (was: rolled back by the restart itself)
    await until(lambda: srv.control._get(dep["id"])["state"] == "halted", what="the rollout to halt")
    d = srv.control._get(dep["id"])
    assert d["targets"]["gw1"]["status"] == "rolled_back" and "NaN/Inf" in d["reason"], d
    assert d["targets"]["gw2"]["status"] == "waiting"
    await heartbeats(
        agents["gw1"]
    )  # several heartbeats later: still reported once, and never installed again
    finals = [  # (of 1.2.0: the agent's word that it runs 1.0.0 again, after the halt, is another report)
        r
        for r in reports
        if r[0] == "gw1" and r[3] == "1.2.0" and r[4] in ("rolled_back", "healthy", "failed")
    ]
    assert [r[4] for r in finals] == ["rolled_back"]
    assert version(agents["gw1"]) == "1.0.0"
    assert not list((cfg.data_dir / "deployments").glob("*.json"))


async def test_a_failed_download_is_retried_with_backoff_not_refused(fleet, tmp_path):
    srv, agents, reg = fleet
    mgr = agents["gw1"].manager
    mgr.download_backoff_s = 0.2
    entry = reg.get("part-inspection", "1.1.0")
    path = reg.package_path(entry)
    hidden = path.with_suffix(".away")
    dep = srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "agents": ["gw1"],
            "strategy": "all_at_once",
        }
    )
    path.rename(hidden)  # (no await in between) the cloud cannot serve it for now, as over a cut link
    await until(lambda: any(s["step"] == "download_retry" for s in mgr.steps), what="a failed download")
    assert entry["digest"] not in mgr.refused
    hidden.rename(path)
    await until(lambda: srv.control._get(dep["id"])["state"] == "completed", what="the retried download")
    assert version(agents["gw1"]) == "1.1.0"


def files(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


async def test_a_package_larger_than_the_free_disk_frees_staging_and_says_why(fleet, tmp_path):
    """Staging on a real small disk (tmpfs): leftovers of earlier installs (a partial download of a package
    no longer desired, a package a kill -9 left) are removed; a package the disk cannot hold is not
    written, the refusal names the disk and the sizes, and once space is freed the install goes through."""
    srv, agents, reg = fleet
    mgr = agents["gw1"].manager
    mgr.download_backoff_s = 0.2
    entry = reg.get("part-inspection", "1.1.0")
    size = reg.package_path(entry).stat().st_size
    assert size > 64_000  # (half of it still exceeds what the small stale files free)
    with small_tmpfs(mgr.staging, "1m"):
        stale = [mgr.staging / ("e" * 64 + ".part"), mgr.staging / "part-inspection-0.9.0.edgepkg"]
        for p in stale:
            p.write_bytes(b"x" * 1000)
        (mgr.staging / "held").mkdir()  # (the disk's other tenants: a folder, which staging leaves alone)
        filler = mgr.staging / "held" / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(mgr.staging).free - size // 2))
        srv.control.create(
            {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
        )
        await until(lambda: any(s["step"] == "download_retry" for s in mgr.steps), what="a refused download")
        why = next(s["reason"] for s in mgr.steps if s["step"] == "download_retry")
        assert "not enough free disk" in why and f"takes {size} bytes" in why, why
        assert files(mgr.staging) == ["held/filler"]  # stale files gone, nothing half-written
        assert version(agents["gw1"]) == "1.0.0"
        filler.unlink()
        await until(lambda: version(agents["gw1"]) == "1.1.0", what="the install once the disk has room")
        await until(lambda: files(mgr.staging) == [], what="staging emptied")


async def test_two_slots_downloading_one_package_at_once_each_get_it_whole(fleet):
    """Two slots that run the same model (two camera lines) receive the same package at the same moment:
    one partial file is written by one download at a time, and each slot gets its own intact copy."""
    from types import SimpleNamespace

    srv, agents, reg = fleet
    entry = reg.get("part-inspection", "1.1.0")
    full = reg.package_path(entry).read_bytes()
    mgr = agents["gw1"].manager
    with srv.control.lock:  # (a slot the agent does not run: the fleet serves the digest, no install starts)
        srv.control._set_desired(
            "gw1", "other-slot", "part-inspection", "1.1.0", entry["digest"], len(full), "x"
        )
    ds = [
        SimpleNamespace(
            slot=s, package="part-inspection", version="1.1.0", digest=entry["digest"], deployment_id="x"
        )
        for s in ("vision", "vision2")
    ]
    paths = await asyncio.gather(*(mgr.download(d) for d in ds))
    assert len(set(paths)) == 2 and all(p.read_bytes() == full for p in paths)


async def _restart_with_health(agents, name: str, **health):
    from edge_agent.models.config import HealthConfig

    base = agents[name].cfg
    in_process = agents[name].slots["vision"].trusted is not None  # as it installed (other files: the child)
    await agents[name].stop()
    vision = base.models["vision"].model_copy(update={"health": HealthConfig(**health)})
    agents[name] = new_agent(base.model_copy(update={"models": {"vision": vision}}), in_process)
    await agents[name].start()
    return agents[name]


async def test_a_rollback_heard_inside_the_health_window_takes_the_candidate_out_at_once(fleet):
    """The fleet's rollback reached an agent watching the rolled-back version in its health window, and the
    agent served that version until the window ended (minutes, by default) before it looked at the desired
    state again; the rollback deployment then waited for good for an agent that had nothing to install."""
    srv, agents, reg = fleet
    gw1 = await _restart_with_health(agents, "gw1", window_s=120.0, min_items=5)
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    await until(lambda: srv.control._get(dep["id"])["targets"]["gw1"]["status"] == "active", what="the swap")
    assert version(gw1) == "1.1.0" and gw1.slots["vision"].state == "watching"
    back = srv.control.rollback("part-inspection", "1.0.0", "vision", ["gw1"])
    await until(lambda: version(gw1) == "1.0.0", timeout_s=30, what="1.1.0 taken out (its window: 120 s)")
    await until(lambda: srv.control._get(back["id"])["state"] == "completed", what="the rollback completed")
    d = srv.control._get(dep["id"])
    assert d["state"] == "aborted" and d["targets"]["gw1"]["status"] == "superseded", d
    assert reg.get("part-inspection", "1.1.0")["digest"] not in gw1.manager.refused  # not the package's fault


async def test_a_health_window_without_inferences_is_not_reported_healthy(fleet):
    """A canary whose line stopped (no inferences in its health window) was reported healthy 60 s after the
    window, having proved nothing, and the rollout went on to the whole fleet; it now says it is still
    watching, with the count, and the rollout waits."""
    srv, agents, _ = fleet
    gw1 = await _restart_with_health(agents, "gw1", window_s=0.3, min_items=1_000_000)
    gw1.manager.health_grace_s = 0.3
    dep = srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.1.0",
            "slot": "vision",
            "agents": ["gw1", "gw2"],
            "steps": ["1", "100%"],
        }
    )
    await until(
        lambda: srv.control._get(dep["id"])["targets"]["gw1"]["status"] == "watching",
        timeout_s=20,
        what="gw1 saying it is still watching",
    )
    d = srv.control._get(dep["id"])
    assert "of the 1000000 needed" in d["targets"]["gw1"]["reason"], d["targets"]["gw1"]
    assert d["state"] == "running" and d["targets"]["gw2"]["status"] == "waiting"
    assert version(agents["gw2"]) == "1.0.0"


async def test_an_admins_rollback_is_not_undone_by_a_health_check_against_the_version_rolled_away_from(
    fleet, tmp_path
):
    """A rollback was installed like any new version: watched in a health window against the model it
    replaced, the very version the admin rolled back away from. A bad version that calls every part NG made
    the good one's NG rate look like a shift of 100%, so the agent rolled the rollback back and served the
    bad version again. An admin's rollback is now installed without that comparison."""
    srv, agents, _ = fleet
    key, _pub = make_keypair(tmp_path / "keys")  # the fleet's package key (the fixture's)
    bad = make_package(tmp_path / "b2", kind="vision", version="1.4.0", key=key, bias=-6.0, seed=7)
    base = agents["gw1"].cfg
    await agents["gw1"].stop()
    vision = base.models["vision"].model_copy(update={"package": str(bad)})
    fresh = base.agent.model_copy(
        update={"data_dir": tmp_path / "gw1-again"}
    )  # (a new gateway's first start)
    agents["gw1"] = gw1 = new_agent(base.model_copy(update={"models": {"vision": vision}, "agent": fresh}))
    await gw1.start()
    assert version(gw1) == "1.4.0"
    await until(lambda: gw1.slots["vision"].counters.get("inferences", 0) >= 10, what="1.4.0 serving")
    back = srv.control.rollback("part-inspection", "1.0.0", "vision", ["gw1"])
    await until(lambda: srv.control._get(back["id"])["state"] != "running", what="the rollback to end")
    d = srv.control._get(back["id"])
    assert d["state"] == "completed", d  # (was halted: "rolled_back: health check failed: NG rate moved ...")
    assert version(gw1) == "1.0.0" and gw1.slots["vision"].state == "active"  # no window to undo it in


async def test_a_version_an_admin_rolled_back_is_not_what_a_start_on_a_lost_slot_state_serves(fleet):
    """An admin's rollback keeps the version it rolls away from installed (the slot's previous one). A start
    whose ``state.json`` a power cut emptied serves the newest version installed: it served that one again,
    until the fleet's desired state corrected it, and with no cloud reachable for good."""
    srv, agents, _ = fleet
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    await until(lambda: srv.control._get(dep["id"])["state"] == "completed", what="1.1.0 on gw1")
    back = srv.control.rollback("part-inspection", "1.0.0", "vision", ["gw1"])
    await until(lambda: srv.control._get(back["id"])["state"] == "completed", what="the rollback completed")
    gw1 = agents["gw1"]
    store = gw1.slots["vision"].store
    assert version(gw1) == "1.0.0" and store.state()["previous"].startswith("part-inspection-1.1.0-")
    await gw1.stop()
    store.state_path.write_bytes(b"")  # what the power cut left
    # and no cloud to correct it
    agents["gw1"] = again = new_agent(gw1.cfg.model_copy(update={"cloud": None}))
    await again.start()
    assert version(again) == "1.0.0"  # (was 1.1.0)


async def test_a_rollback_to_the_version_most_agents_never_left_completes(fleet):
    """An agent that already serves the assigned version has nothing to install and reported no step, so an
    admin's rollback of the fleet after a rollout to some of it stayed ``running`` for good, waiting for the
    agents that had never left the version; they now say they run it."""
    srv, agents, _ = fleet
    dep = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw1"]}
    )
    await until(lambda: srv.control._get(dep["id"])["state"] == "completed", what="1.1.0 on gw1")
    back = srv.control.rollback("part-inspection", "1.0.0", "vision", [])
    await until(lambda: srv.control._get(back["id"])["state"] == "completed", what="the rollback completed")
    t = srv.control._get(back["id"])["targets"]
    assert t["gw2"]["status"] == "healthy" and t["gw2"]["reason"] == "it runs this version", t
    assert version(agents["gw1"]) == version(agents["gw2"]) == "1.0.0"


async def test_an_agent_offline_through_a_superseded_rollout_comes_back_to_the_newer_ones_state(fleet):
    """gw2 was offline when a rollout's step gave it 1.1.0; a newer rollout of the slot (1.2.0, canary gw1) took
    it over, aborting the older one, and halted on its canary. gw2, back afterwards, installed 1.1.0: the
    desired state the aborted rollout had written, which no rollout wanted any more. It keeps 1.0.0 now."""
    srv, agents, _ = fleet
    cfg = agents["gw2"].cfg
    await agents["gw2"].stop()  # offline for the whole story
    older = srv.control.create(
        {"package": "part-inspection", "version": "1.1.0", "slot": "vision", "agents": ["gw2"]}
        | {"strategy": "all_at_once", "wait_s": 0}
    )
    assert srv.control._get(older["id"])["targets"]["gw2"]["status"] == "assigned"
    newer = srv.control.create(
        {"package": "part-inspection", "version": "1.2.0", "slot": "vision", "agents": ["gw1", "gw2"]}
        | {"strategy": "canary", "steps": ["1", "100%"], "wait_s": 0}
    )
    assert srv.control._get(older["id"])["state"] == "aborted"
    await until(
        lambda: srv.control._get(newer["id"])["state"] == "halted", what="the canary's NaN to halt it"
    )
    assert srv.control._get(newer["id"])["targets"]["gw2"]["status"] == "waiting"
    agents["gw2"] = back = new_agent(cfg)  # back: same config and data folder
    await back.start()
    heard: list[list[str]] = []  # the desired states gw2 acts on from now on
    on_desired = back.manager.on_desired

    async def noted(reply):
        await on_desired(reply)
        heard.append([d.version for d in reply.desired])

    back.manager.on_desired = noted
    await until(lambda: len(heard) >= 3, what="three desired states heard by gw2")
    assert heard[:3] == [[], [], []], heard  # were the aborted rollout's ["1.1.0"]
    assert version(back) == "1.0.0"
    assert not [s for s in agents["gw2"].manager.steps if s["version"] == "1.1.0"]
