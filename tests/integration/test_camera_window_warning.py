"""A ``window:`` on a camera pipeline: the agent starts, the other pipelines judge, and that one says why it judges
nothing. Such a config ran before it was made a config error: the pipeline judged nothing in silence, everything
else served; as an error, the gateway no longer started after an upgrade (``validate`` as ExecStartPre), and a fleet
config held as last good was dropped. Real package on a real ONNX Runtime slot, the MJPEG camera simulator, the
agent's own /status endpoint."""

from __future__ import annotations

import json
import urllib.request

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.fleet_config import _held_note, _pipeline_health
from simulators.camera import CameraServer
from tests.support.models import make_keypair, make_package
from tests.support.peers import free_port
from tests.support.waits import until

SAID = "a frame pipeline judges each camera frame alone: remove its window"


async def test_a_window_on_a_camera_pipeline_leaves_the_agent_serving_and_says_why_that_one_judges_nothing(
    tmp_path,
):
    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="vision", version="1.0.0", key=key)
    camera = CameraServer(free_port(), fps=10, seed=1).start()
    cfg = parse_config(
        {
            "agent": {"id": "gw1", "data_dir": str(tmp_path / "data")},
            "trusted_keys": [str(pub)],
            "http": {"port": 0},
            "sources": {"cam": {"type": "camera", "url": camera.url, "fps": 10}},
            "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
            "pipelines": [
                {"name": "inspect", "source": "cam", "model": "vision"},
                # an image model: the kind check refused it at the start ("serve a signal model")
                {"name": "stray", "source": "cam", "model": "vision", "window": {"waveform": "Vibration"}},
            ],
        },
        "line3.yaml",
    )
    assert cfg.warnings == [f"line3.yaml: pipelines[1].window: {SAID}"], cfg.warnings
    agent = Agent(cfg)
    try:
        await agent.start()
        url = f"http://127.0.0.1:{agent.http.port}/status"

        def pipelines() -> dict[str, dict]:
            st = json.loads(urllib.request.urlopen(url, timeout=5).read())
            return {p["pipeline"]: p for p in st["pipelines"]}

        await until(
            lambda: (
                (p := pipelines())["inspect"]["results"] >= 3
                and p["stray"]["silent_drops"].get("window_on_frames", {}).get("count", 0) >= 3
            ),
            what="results of the other pipeline and the stray one's frames counted",
        )
        stray = pipelines()["stray"]
        assert stray["kind"] == "frame" and stray["results"] == 0 and stray["items"] == 0, stray
        assert stray["judges_nothing"] == f"window: {SAID}", stray
        assert SAID in stray["silent_drops"]["window_on_frames"]["message"], stray["silent_drops"]
    finally:
        await agent.stop()
        camera.stop()


async def test_a_plc_written_by_a_camera_pipeline_with_a_window_has_its_heartbeat_held(tmp_path):
    """That pipeline's actions never act (no part judged, a reject gate never written): the heartbeat of the PLC they
    write through stands still, as for a pipeline whose slot has no model, and /status names why. It ran on, every
    part passing the line unjudged, the PLC's watchdog reading a live agent."""
    from asyncua import ua

    from tests.support.plc import plc

    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="vision", version="1.0.0", key=key, heatmap=False)
    camera = CameraServer(free_port(), fps=10, seed=1).start()
    life, reject = ua.Variant(0, ua.VariantType.Int32), ua.Variant(False, ua.VariantType.Boolean)
    async with plc({"Life": life, "Reject": reject}) as p:
        gate = {"type": "opcua_write", "source": "plc", "node_id": p.node_id("Reject")}
        plc_source = {
            "type": "opcua",
            "endpoint": f"opc.tcp://127.0.0.1:{p.port}/plc/",
            "connect_timeout_s": 2.0,
        }
        plc_source["heartbeat"] = {"node_id": p.node_id("Life"), "period_ms": 100}
        window = {"waveform": "Vibration"}
        cfg = parse_config(
            {
                "agent": {"id": "gw1", "data_dir": str(tmp_path / "data")},
                "trusted_keys": [str(pub)],
                "http": {"port": 0},
                "sources": {"cam": {"type": "camera", "url": camera.url, "fps": 10}, "plc": plc_source},
                "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
                "actions": {"reject": {**gate, "when": {"verdict": {"in": ["NG", "UNSURE"]}}}},
                "pipelines": [
                    {
                        "name": "inspect",
                        "source": "cam",
                        "model": "vision",
                        "actions": ["reject"],
                        "window": window,
                    }
                ],
            },
            "line3.yaml",
        )
        agent = Agent(cfg)
        await agent.start()
        try:
            src, pipe = agent.sources["plc"], agent.pipelines[0]
            await until(
                lambda: (
                    pipe.notices.counts.get("window_on_frames", 0) >= 2
                    and "heartbeat_held" in agent.status()["sources"]["plc"]
                ),
                what="its frames dropped and the PLC's heartbeat held",
            )
            assert src.heartbeats == 0 and (await p.read())["Life"] == 0
            held = agent.status()["sources"]["plc"]["heartbeat_held"]
            assert "pipeline inspect judges nothing" in held["reason"] and SAID in held["reason"], held
            # a fleet config's healthy report says so (the rollout shows it by the agent): it was healthy, unsaid
            health = _pipeline_health(agent)
            assert health["heartbeats_held"] == {"plc": ["inspect"]} and health["judges_nothing"] == [
                "inspect"
            ]
            assert _held_note(health) == (
                "heartbeat of source plc held: the pipelines writing through it (inspect) judge nothing (window: "
                f"{SAID}); the PLC's watchdog falls back to its safe state"
            )
        finally:
            await agent.stop()
            camera.stop()


async def test_a_fleet_config_giving_a_camera_pipeline_a_window_is_rolled_back_one_keeping_it_is_applied(
    tmp_path,
):
    """A fleet config that gives a judging camera pipeline a window makes it judge nothing, for good (no package the
    fleet sends next mends it), and holds the heartbeat of the PLC it writes through: it was applied and reported
    healthy (its note naming the held heartbeat), the line in its safe state on every agent of the rollout. Now it is
    rolled back as a candidate whose slot failed on its own package is, the last good config serving again and the
    heartbeat running. A config keeping a window the running config had (a local file from before it was a warning)
    did not bring it: applied, its healthy report naming the held heartbeat."""
    import cv2
    import numpy as np
    import yaml
    from asyncua import ua

    from edge_agent.fleet_config import AgentHost, digest_of
    from protocols.gen import fleet_pb2 as pb
    from tests.integration.test_fleet_config_rollout import local_gateway
    from tests.support.plc import plc

    key, pub = make_keypair(tmp_path / "keys")
    pkg = make_package(tmp_path, kind="vision", version="1.0.0", key=key, heatmap=False)
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "0.png"), np.zeros((64, 64, 3), np.uint8))
    variables = {
        "Life": ua.Variant(0, ua.VariantType.Int32),
        "Reject": ua.Variant(False, ua.VariantType.Boolean),
    }
    async with plc(variables) as p:
        heartbeat = {"node_id": p.node_id("Life"), "period_ms": 100, "kind": "counter"}
        pipeline = {"name": "inspect", "source": "cam", "model": "vision", "actions": ["reject"]}
        body = {
            "trusted_keys": [str(pub)],
            "sources": {
                "plc": {
                    "type": "opcua",
                    "endpoint": f"opc.tcp://127.0.0.1:{p.port}/plc/",
                    "heartbeat": heartbeat,
                },
                "cam": {"type": "camera", "url": str(tmp_path / "frames"), "fps": 5, "loop": True},
            },
            "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
            "actions": {
                "reject": {
                    "type": "opcua_write",
                    "source": "plc",
                    "node_id": p.node_id("Reject"),
                    "when": {"verdict": {"in": ["NG", "UNSURE"]}},
                }
            },
            "pipelines": [{**pipeline, "window": {"waveform": "Vibration"}}],
        }
        host = AgentHost(local_gateway(tmp_path, body), health_s=1.0)
        await host.start()

        def offer(doc: dict, dep_id: str) -> None:
            data = yaml.safe_dump(doc).encode()
            host._on_desired(
                pb.DesiredConfig(deployment_id=dep_id, digest=digest_of(data), yaml=data, name=dep_id)
            )

        def last_good() -> str | None:
            return (host.keeper.state["last_good"] or {}).get("deployment_id")

        try:
            # the window kept (the camera's fps changed): applied, the held heartbeat named in its healthy report
            offer({**body, "sources": {**body["sources"], "cam": {**body["sources"]["cam"], "fps": 4}}}, "d1")
            await until(lambda: last_good() == "d1", 20, "d1 applied")
            (note,) = [r for r in host.keeper.state["unreported"] if r["step"] == "healthy"]
            assert note["health"]["heartbeats_held"] == {"plc": ["inspect"]} and SAID in note["reason"], note
            # the window removed: applied, the pipeline judges and the heartbeat runs
            offer({**body, "pipelines": [pipeline]}, "d2")
            await until(lambda: last_good() == "d2", 20, "d2 applied")
            # given back: rolled back, naming the pipeline and why; d2 serves again and the heartbeat runs
            offer(body, "d3")
            await until(lambda: host.keeper.state["refused"], 20, "d3 rolled back")
            (why,) = host.keeper.state["refused"].values()
            assert f"pipeline inspect: window: {SAID}" in why, why
            await until(
                lambda: host.agent is not None and host.agent.config_state.get("deployment_id") == "d2", 20
            )
            assert last_good() == "d2" and not host.agent.pipelines[0].window_ignored
            src = host.agent.sources["plc"]
            await until(
                lambda: src.heartbeats >= 2 and src.heartbeat_held is None, 20, "the heartbeat running"
            )
        finally:
            await host.stop()
