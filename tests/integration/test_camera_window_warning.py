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
