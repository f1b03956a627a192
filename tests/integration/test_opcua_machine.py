"""`edge-sim machine` as a user runs it: prints its endpoint, serves truth, stops on SIGTERM; given port 0 it
listens on a port the kernel hands it, advertises that one and writes it to --port-file (as the demo starts it)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


async def test_cli_machine_serves_an_accelerated_degradation_and_stops_on_sigterm(tmp_path) -> None:
    from asyncua import Client

    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        yaml.safe_dump({"phases": [{"fault": "imbalance", "duration_s": 100, "degrade": True}]})
    )
    port_file = tmp_path / "ports" / "machine.json"
    port_file.parent.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.cli",
            "machine",
            "--port",
            "0",
            "--port-file",
            str(port_file),
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
        port = json.loads(port_file.read_text())["port"]  # written once it listens, before it serves on
        assert port != 0 and f"opc.tcp://127.0.0.1:{port}/factory/" in line
        async with Client(f"opc.tcp://127.0.0.1:{port}/factory/") as c:
            # what it advertises is the port it got, not port 0 (its endpoints are made before it binds)
            assert [e.EndpointUrl for e in await c.get_endpoints()] == [
                f"opc.tcp://127.0.0.1:{port}/factory/"
            ]
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
        assert not port_file.exists()  # stopped cleanly: it names a port nothing listens on any more
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_port_file_that_cannot_be_written_is_refused_in_one_line_naming_it(tmp_path, capsys) -> None:
    from simulators.machine import main

    where = tmp_path / "no-such-folder" / "machine.json"
    assert main(["--port", "0", "--port-file", str(where)]) == 2
    err = capsys.readouterr().err
    assert err == f"edge-sim machine: cannot write --port-file {where} (No such file or directory)\n"
