"""The agent's status page and the fleet console, rendered by a real headless Chromium (the pages'
JavaScript runs against the live endpoints; the DOM after it ran is checked). Chromium comes from
Debian's package (`.ci/run` installs it); without it these tests skip with that reason."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from simulators.camera import write_folder
from tests.support.models import make_keypair, make_package
from tests.support.waits import until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
XSS = '<img src=x onerror="document.title=1">'  # what a hostile device, package or tenant may send as a name


def chromium(profile: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=6000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


def render(url: str, screenshot: str) -> str:
    """The DOM after the page's scripts ran; fails on any JavaScript console error; saves a screenshot
    as a test artifact (test-artifacts/, not committed). One browser run does both: the screenshot is of the
    page whose DOM is returned (two runs cost a second browser start, ~1 CPU s a page)."""
    with tempfile.TemporaryDirectory() as profile:
        shot = Path(profile) / screenshot  # this run's screenshot, never one a former run left in ARTIFACTS
        r = chromium(profile, "--dump-dom", f"--screenshot={shot}", "--window-size=1280,1100", url)
        assert r.returncode == 0, r.stderr[-2000:]
        errors = [
            ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln and ("Uncaught" in ln or "Error" in ln)
        ]
        assert not errors, errors
        assert shot.exists() and shot.stat().st_size > 10_000
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(shot, ARTIFACTS / screenshot)
    return r.stdout


async def test_agent_status_page_shows_live_state(tmp_path):
    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="vision", key=key, bias=-20.0)
    frames = write_folder(tmp_path / "frames", 8, seed=0, defect_rate=0.5, size=64)
    cfg = parse_config(
        {
            "agent": {"id": "gw-page", "site": "plant", "line": "l1", "data_dir": str(tmp_path / "data")},
            "trusted_keys": [str(pub)],
            "http": {"port": 0},
            "sources": {
                "cam": {"type": "camera", "url": str(frames), "fps": 20, "loop": True},
                "spare": {"type": "camera", "url": str(frames), "fps": 2, "loop": True},
            },  # read by nobody
            "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
            "pipelines": [{"name": "inspect", "source": "cam", "model": "vision", "actions": ["ng"]}],
            "actions": {
                "ng": {"type": "alarm", "raise_after": 2, "clear_after": 2, "when": {"verdict": "NG"}}
            },
        }
    )
    agent = Agent(cfg)
    await agent.start()
    try:
        # a ceiling, not a pace: 100 x 0.1 s went on to render a page without them on a loaded machine
        await until(
            lambda: agent.board.ng_frames and any(s["active"] for s in agent.actions.status()["alarms"]),
            60,
            "an NG frame and an active alarm",
        )
        dom = await asyncio.to_thread(render, f"http://127.0.0.1:{agent.http.port}/", "agent-status-page.png")
    finally:
        await agent.stop()
    assert "Edge agent gw-page" in dom
    assert "plant / l1" in dom
    assert ">inspect <" in dom and "part-inspection" in dom and "1.0.0" in dom
    assert 'src="/api/frame/inspect.png' in dom  # the latest part with its heat map overlay
    assert "/api/ng/0.png" in dom  # the last NG parts
    assert "ng on inspect since" in dom  # the active alarm
    assert "no cloud link configured" in dom
    assert "source spare" in dom and "no pipeline reads it" in dom  # a silent drop, with its fix and count


async def test_agent_status_page_shows_a_plcs_64_bit_integers_with_every_digit(tmp_path):
    """An Int64/UInt64 counter, energy total or id past 2**53 on a real asyncua server: /api/tags carries every
    digit, but the page's JSON.parse made each the nearest double, 2**63 - 1 shown as 9223372036854776000 and
    2**53 + 1 as 9007199254740992. The tags table shows them as the PLC holds them."""
    from asyncua import ua

    from tests.support.peers import free_port, opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    values = {
        "Max": (2**63 - 1, ua.VariantType.Int64),
        "Odd": (2**53 + 1, ua.VariantType.Int64),
        "Min": (-(2**63), ua.VariantType.Int64),
        "UMax": (2**64 - 1, ua.VariantType.UInt64),
        "Small": (12345, ua.VariantType.Int64),
    }
    for name, (v, kind) in values.items():
        await obj.add_variable(ua.NodeId(name, idx), name, ua.Variant(v, kind))
    await srv.start()
    cfg = parse_config(
        {
            "agent": {"id": "gw-ints", "data_dir": str(tmp_path / "data")},
            "http": {"port": 0},
            "sources": {
                "plc": {
                    "type": "opcua",
                    "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                    "nodes": [{"node_id": f"ns={idx};s={n}"} for n in values],
                }
            },
        }
    )
    agent = Agent(cfg)
    await agent.start()
    try:
        await until(lambda: len(agent.tags.get("plc", {})) == len(values), 60, "every tag read")
        dom = await asyncio.to_thread(
            render, f"http://127.0.0.1:{agent.http.port}/", "agent-status-int64.png"
        )
    finally:
        await agent.stop()
        await srv.stop()
    for name, (v, _) in values.items():
        assert f"<td>{name}</td><td>{v}</td>" in dom, (name, dom[dom.find("<td>plc</td>") :][:1500])


async def test_fleet_console_shows_agents_deployments_and_reports(tmp_path):
    from cloud_trainer.fleet.console import Console
    from cloud_trainer.fleet.service import FleetServer
    from cloud_trainer.registry import Registry
    from tests.support.fleet import make_pki
    from tests.support.peers import free_port

    pki = make_pki(tmp_path / "pki", agents=("gw1",))
    key, _ = make_keypair(tmp_path / "keys")
    reg = Registry(tmp_path / "registry")
    rep = tmp_path / "report.json"
    rep.write_text(  # a metric the test split could not give (one class): NaN, as Python's json writes it
        '{"metrics": {"int8": {"ng_recall": 0.99, "accuracy": 0.95, "map_hit_rate": NaN}}, "gate": {"passed": '
        'true, "reasons": []}}'
    )
    reg.publish(
        make_package(tmp_path, kind="vision", version="1.4.0", key=key),
        [rep],
        {"ng_recall": 0.99},
        "sha256:x",
        None,
    )
    srv = FleetServer(
        tmp_path / "cloud",
        free_port(),
        pki / "ca.pem",
        pki / "server.pem",
        pki / "server.key",
        registry=tmp_path / "registry",
    )
    srv.store.heartbeat(  # labels and health are the agent's own: markup and a NaN stay data
        "gw1",
        {"site": "plant", "line": XSS},
        [
            {
                "slot": "vision",
                "package": "part-inspection",
                "version": "1.4.0",
                "digest": "d",
                "status": "active",
                "reason": "",
            }
        ],
        {"cpu_temp_c": float("nan")},
        0,
    )
    srv.control.create(
        {
            "package": "part-inspection",
            "version": "1.4.0",
            "slot": "vision",
            "agents": ["gw1"],
            "strategy": "all_at_once",
        }
    )
    # two of its records deleted by retention: said beside the records it keeps
    srv.store.ingest("gw1", [{"seq": s, "kind": "result", "t": 1.0, "payload": "{}"} for s in (1, 2, 3)])
    with srv.store._tx() as ex:
        ex("UPDATE records SET received = 1000 WHERE seq <= 2")
        ex("UPDATE record_counts SET first_received = 1000")
    assert srv.store.retire(2000.0)["records"] == 2
    await srv.start()  # a grpc.aio server must be started and stopped in its own loop
    console = Console(srv, "127.0.0.1", 0)
    console.start()
    try:
        dom = await asyncio.to_thread(render, f"http://127.0.0.1:{console.port}/", "fleet-console.png")
    finally:
        console.stop()
        await srv.stop()
    assert 'id="updated">updated ' in dom  # before: NaN made JSON.parse throw: "update failed", all empty
    assert "<b>gw1</b>" in dom and "site=plant" in dom
    assert "line=&lt;img src=x" in dom and '<img src="x"' not in dom
    assert "part-inspection 1.4.0" in dom and "gate passed" in dom and "ng_recall <b>0.990</b>" in dom
    assert "all_at_once 1/1" in dom and "gw1: <span" in dom
    assert "(2 retired)" in dom


async def test_agent_status_page_names_a_plcs_failing_nodes_and_write_targets_with_why(tmp_path):
    """A real asyncua server without the node a source reads nor the nodes two outputs write (one missing, one
    read-only): the sources table names each under the source with why, the nodes that get no values and the
    write targets that will fail. Before, the page named the nodes only; a write target that could never be
    written was nowhere on it."""
    from asyncua import ua

    from tests.support.peers import free_port, opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "PLC")
    await obj.add_variable(ua.NodeId("Good", idx), "Good", 1.5)
    await obj.add_variable(ua.NodeId("Locked", idx), "Locked", False)  # read-only
    await srv.start()
    out = {"type": "opcua_write", "source": "plc", "value": True}
    cfg = parse_config(
        {
            "agent": {"id": "gw-targets", "data_dir": str(tmp_path / "data")},
            "http": {"port": 0},
            "sources": {
                "plc": {
                    "type": "opcua",
                    "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                    "nodes": [{"node_id": f"ns={idx};s=Good"}, {"node_id": f"ns={idx};s=Gone"}],
                }
            },
            "actions": {
                "typo": dict(out, node_id=f"ns={idx};s=Rejct"),
                "locked": dict(out, node_id=f"ns={idx};s=Locked"),
            },
        }
    )
    agent = Agent(cfg)
    await agent.start()
    try:
        src = agent.sources["plc"]
        await until(
            lambda: len(src.target_errors) == 2 and src.node_errors, 60, "the node and targets judged"
        )
        dom = await asyncio.to_thread(
            render, f"http://127.0.0.1:{agent.http.port}/", "agent-status-failing-targets.png"
        )
    finally:
        await agent.stop()
        await srv.stop()
    sources = dom[dom.find('id="sources"') :][:4000]
    assert f"node 'ns={idx};s=Gone' cannot be subscribed (BadNodeIdUnknown" in sources, sources
    assert f"writes will fail: node ns={idx};s=Rejct does not exist on the server" in sources, sources
    assert f"writes will fail: node ns={idx};s=Locked is read-only for this session" in sources, sources
