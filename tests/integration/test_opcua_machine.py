"""`edge-sim machine` as a user runs it: prints its endpoint, serves truth, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.peers import free_port

ROOT = Path(__file__).resolve().parents[2]


async def test_cli_machine_serves_an_accelerated_degradation_and_stops_on_sigterm(tmp_path) -> None:
    from asyncua import Client

    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        yaml.safe_dump({"phases": [{"fault": "imbalance", "duration_s": 100, "degrade": True}]})
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.cli",
            "machine",
            "--port",
            str(port),
            "--scenario",
            str(scenario),
            "--period-ms",
            "50",
            "--time-scale",
            "100",
            "--name",
            "PumpA",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert f"opc.tcp://127.0.0.1:{port}/factory/" in line
        async with Client(f"opc.tcp://127.0.0.1:{port}/factory/") as c:
            assert await c.get_node("ns=2;s=PumpA.Truth.FaultType").read_value() == "imbalance"
            assert len(await c.get_node("ns=2;s=PumpA.Vibration").read_value()) == 2048
            for _ in range(600):  # 100 s of machine time at 100x: failure within ~1 s of wall time
                if await c.get_node("ns=2;s=PumpA.RunState").read_value() == "failed":
                    break
                await asyncio.sleep(0.05)
            assert await c.get_node("ns=2;s=PumpA.RunState").read_value() == "failed"
            assert await c.get_node("ns=2;s=PumpA.Truth.HealthIndex").read_value() == 0.0
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
