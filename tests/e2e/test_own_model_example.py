"""docs/own-model.md works as written: the example model is built into a signed package with the
model-packager CLI, an agent config maps a tag to the model's scalar input, validate accepts it,
and the agent gives results from a live OPC UA machine."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import yaml

from edge_agent.agent import Agent
from edge_agent.config import load_config
from simulators.machine import MachineServer
from tests.support.peers import free_port

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "examples" / "own-model"


def run(*args: str, cwd: Path) -> str:
    r = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


async def test_own_model_example_builds_validates_and_runs(tmp_path):
    await asyncio.to_thread(run, str(EX / "make_model.py"), "work/model.onnx", cwd=tmp_path)
    await asyncio.to_thread(run, "-m", "model_packager.cli", "keygen", "keys/plant", cwd=tmp_path)
    await asyncio.to_thread(
        run,
        "-m",
        "model_packager.cli",
        "build",
        "work/model.onnx",
        str(EX / "spec.yaml"),
        "--key",
        "keys/plant.key",
        "--out",
        "dist",
        cwd=tmp_path,
    )
    machine = MachineServer(free_port(), period_ms=100, window_samples=1024)
    await machine.start()
    cfg = {
        "agent": {"id": "gw-own", "data_dir": "data"},
        "trusted_keys": ["keys/plant.pub"],
        "http": {"enabled": False},
        "sources": {
            "pump": {
                "type": "opcua",
                "endpoint": machine.endpoint,
                "nodes": [
                    {"node_id": machine.node_id("Vibration")},
                    {"node_id": machine.node_id("Temperature")},
                ],
            }
        },
        "models": {"pump": {"package": "dist/pump-anomaly-1.0.0.edgepkg", "engine": "onnxruntime"}},
        "pipelines": [
            {
                "name": "pump",
                "source": "pump",
                "model": "pump",
                "window": {"waveform": "Vibration", "scalars": {"temperature": "Temperature"}},
            }
        ],
    }
    (tmp_path / "line.yaml").write_text(yaml.safe_dump(cfg))
    try:
        out = await asyncio.to_thread(run, "-m", "edge_agent.cli", "validate", "line.yaml", cwd=tmp_path)
        assert out.startswith("ok:")
        agent = Agent(load_config(tmp_path / "line.yaml"))
        await agent.start()
        try:
            for _ in range(200):
                if agent.pipelines[0].stats.results >= 2:
                    break
                await asyncio.sleep(0.1)
        finally:
            await agent.stop()
    finally:
        await machine.stop()
    p = agent.pipelines[0].status()
    assert p["results"] >= 2 and p["errors"] == {} and p["silent_drops"] == {}, p
    r = agent.pipelines[0].stats.last_result
    assert r.model == "pump-anomaly" and r.verdict in ("OK", "NG") and 0.0 <= r.anomaly_score <= 1.0
