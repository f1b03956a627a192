"""The agent end to end against real peers: the OPC UA machine simulator, a real Mosquitto broker, the
MJPEG camera simulator, and real ONNX Runtime / OpenVINO sessions on test packages. Actions are seen
by the peers themselves: a paho subscriber receives the published results and the machine server
counts the reject writes."""

from __future__ import annotations

import json
import threading
import urllib.request

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from simulators.camera import CameraServer
from simulators.machine import MachineServer
from tests.support.models import make_keypair, make_package
from tests.support.peers import free_port
from tests.support.waits import until as wait_for


class Subscriber:
    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.c = paho.Client(CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(topic, 1)
        self.c.loop_start()

    def _on(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def stop(self) -> None:
        self.c.disconnect()  # first: paho's thread ends once it is written, not at its next 1 s select
        self.c.loop_stop()


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agentpkgs")
    key, pub = make_keypair(tmp / "keys")
    return {
        "vision": make_package(
            tmp, kind="vision", version="1.0.0", key=key, bias=-20.0, openvino=True
        ),  # all NG
        "vision2": make_package(
            tmp, kind="vision", version="1.1.0", key=key, bias=-20.0, seed=3, openvino=True
        ),
        "signal": make_package(tmp, kind="signal", version="1.0.0", key=key, openvino=True),
        "pub": pub,
    }


def config(tmp_path, packages, mqtt_port: int, opcua_endpoint: str, camera_url: str, engine: str) -> dict:
    return {
        "agent": {"id": "gw1", "site": "plant", "line": "line1", "data_dir": str(tmp_path / "data")},
        "trusted_keys": [str(packages["pub"])],
        "http": {"port": 0},
        "sources": {
            "machine": {
                "type": "opcua",
                "endpoint": opcua_endpoint,
                "nodes": [
                    {"node_id": "ns=2;s=Machine1.Vibration"},
                    {"node_id": "ns=2;s=Machine1.Temperature"},
                ],
            },
            "broker": {"type": "mqtt", "port": mqtt_port},
            "cam": {"type": "camera", "url": camera_url, "fps": 10},
        },
        "models": {
            "health": {"package": str(packages["signal"]), "engine": engine},
            "vision": {
                "package": str(packages["vision"]),
                "engine": engine,
                "health": {"window_s": 1, "min_items": 3},
            },
        },
        "pipelines": [
            {
                "name": "maintenance",
                "source": "machine",
                "model": "health",
                "window": {"waveform": "Vibration", "scalars": ["Temperature"]},
                "actions": ["publish"],
            },
            {
                "name": "inspect",
                "source": "cam",
                "model": "vision",
                "actions": ["publish", "reject", "ng_alarm"],
            },
        ],
        "actions": {
            "publish": {"type": "mqtt_publish", "source": "broker", "qos": 1},
            "reject": {
                "type": "opcua_write",
                "source": "machine",
                "node_id": "ns=2;s=Machine1.Reject",
                "value": True,
                "when": {"verdict": "NG"},
            },
            "ng_alarm": {
                "type": "alarm",
                "raise_after": 3,
                "clear_after": 3,
                "when": {"verdict": "NG"},
                "publish_to": "broker",
            },
        },
    }


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
async def test_agent_runs_both_pipelines_and_acts_on_real_peers(tmp_path, packages, mosquitto, engine):
    machine = MachineServer(free_port(), period_ms=100)
    await machine.start()
    camera = CameraServer(free_port(), fps=10, seed=1).start()
    sub = Subscriber(mosquitto.port, "factory/#")
    cfg = parse_config(config(tmp_path, packages, mosquitto.port, machine.endpoint, camera.url, engine))
    agent = Agent(cfg)
    try:
        await agent.start()

        def topics() -> set[str]:
            with sub.lock:
                return {t for t, _ in sub.messages}

        await wait_for(
            lambda: (
                {"factory/plant/line1/gw1/results/maintenance", "factory/plant/line1/gw1/results/inspect"}
                <= topics()
            ),
            what="results of both pipelines",
        )
        await wait_for(lambda: machine.reject_count >= 2, what="reject writes on the machine")

        def raised() -> bool:  # a clear comes first when three OK results do (an alarm's first state)
            with sub.lock:
                return any(t.endswith("/alarms/ng_alarm") and m["active"] for t, m in sub.messages)

        await wait_for(raised, what="the NG alarm")
        with sub.lock:
            results = [m for t, m in sub.messages if "/results/" in t]
        maint = [m for m in results if m["pipeline"] == "maintenance"]
        insp = [m for m in results if m["pipeline"] == "inspect"]
        assert maint[0]["anomaly_score"] is not None and maint[0]["remaining_life"] is not None
        assert all(m["engine"] == engine for m in results)
        assert insp[0]["verdict"] == "NG" and insp[0]["model_version"] == "1.0.0"
        assert set(insp[0]["latency_ms"]) == {"queue", "preprocess", "inference", "postprocess"}

        # the local endpoint reports what a line engineer needs
        url = f"http://127.0.0.1:{agent.http.port}"
        st = json.loads(urllib.request.urlopen(url + "/status", timeout=5).read())
        assert st["sources"]["machine"]["state"] == "connected"
        assert {p["pipeline"] for p in st["pipelines"]} == {"maintenance", "inspect"}
        assert any(a["active"] for a in st["alarms"])
        metrics = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        assert 'edge_pipeline_results_total{pipeline="inspect",verdict="NG"}' in metrics
        assert "process_resident_memory_bytes" in metrics
        # every action has its outcome counters, by action and target; cumulative counts are counters
        assert (
            'edge_action_total{action="reject",outcome="ok",target="ns=2;s=Machine1.Reject",type="opcua_write"}'
            in metrics
        ), metrics
        assert 'edge_alarm_active{alarm="ng_alarm",pipeline="inspect"} 1.0' in metrics
        assert (
            "# TYPE edge_pipeline_dropped_total counter" in metrics
            or "# TYPE edge_pipeline_dropped counter" in metrics
        )
        assert 'edge_source_received_total{source="machine"}' in metrics
        # the endpoint's own bounds: /status and this scrape accepted, none refused or cut
        http_counts = {
            o: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            for o in ("accepted", "refused", "cut")
            if line.startswith(f'edge_status_http_connections_total{{outcome="{o}"}}')
        }
        assert http_counts["accepted"] >= 2 and http_counts["refused"] == http_counts["cut"] == 0, http_counts

        # hot swap while frames flow: the camera keeps its sequence, nothing processed twice
        slot = agent.slots["vision"]
        outcome = await slot.swap(packages["vision2"])
        assert outcome.ok, outcome
        await wait_for(
            lambda: any(m["model_version"] == "1.1.0" for t, m in list(sub.messages) if "inspect" in t),
            what="results from the new version",
        )
    finally:
        await agent.stop()
        sub.stop()
        camera.stop()
        await machine.stop()
    seqs = [r.item_seq for r in agent.recent if r.pipeline == "inspect"]
    assert len(seqs) == len(set(seqs))
