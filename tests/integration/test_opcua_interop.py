"""OPC UA source against node-opcua, an independent server implementation (marker ``interop``)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from devices.base import ConnectionState
from devices.opcua.client import OpcUaSource
from devices.opcua.settings import OpcUaSettings
from tests.support.peers import free_port

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "interop" / "node_modules"
SCRIPT = Path(__file__).with_name("interop") / "opcua_server.js"


@pytest.fixture
async def node_server(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the interop peers come from .ci/interop-peers)")
    if not (MODULES / "node-opcua").is_dir():
        pytest.skip(f"{MODULES / 'node-opcua'} is absent; run .ci/interop-peers")
    port = free_port()
    env = dict(os.environ, NODE_PATH=str(MODULES), XDG_CONFIG_HOME=str(tmp_path), HOME=str(tmp_path))
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    lines: list[str] = []
    try:
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            if not line:
                raise RuntimeError(f"node-opcua server exited: {lines}")
            if line.startswith("READY "):
                url = line.split()[1]
                break
            lines.append(line)

        async def pump() -> None:  # keep reading so the pipe never fills, remember the writes
            async for raw in proc.stdout:
                lines.append(raw.decode().strip())

        reader = asyncio.create_task(pump())
        yield url, lines
        reader.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()


async def test_adapter_subscribes_array_and_writes_boolean_on_node_opcua(node_server) -> None:
    url, lines = node_server
    settings = OpcUaSettings(
        endpoint=url,
        nodes=[{"node_id": "ns=1;s=Pump.Waveform"}],
        publishing_interval_ms=50,
        reconnect_initial_s=0.2,
        reconnect_max_s=1.0,
    )
    src = OpcUaSource("pump", settings)
    await src.start()
    try:
        r = await asyncio.wait_for(src.items().__anext__(), 30)
        assert r.tag == "Waveform" and isinstance(r.value, np.ndarray) and r.value.shape == (64,)
        assert src.state is ConnectionState.CONNECTED
        await src.write("ns=1;s=Pump.Gate", 1)  # int converted to the node's Boolean
        for _ in range(600):
            if "WRITE Gate true" in lines:
                break
            await asyncio.sleep(0.05)
        assert "WRITE Gate true" in lines
        names = {v["browse_name"]: v for v in await src.browse("ns=1;s=Pump")}
        assert names["Gate"]["data_type"] == "Boolean" and names["Waveform"]["array"] is True
    finally:
        await src.stop()
