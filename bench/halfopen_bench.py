"""How long each long-lived connection of the project takes to notice a path that died without a word
(half-open TCP: no FIN, no RST, both sockets ESTABLISHED), against the former behaviour in the same run.

A freezing relay (``tests.support.freeze_relay``) sits between each client and its real peer on 127.0.0.1;
the path is frozen mid-stream and the time until the client says so is taken:

- MQTT source (paho, ``keepalive_s``): until its state leaves CONNECTED. Former: paho alone (the source's
  check of the unanswered PINGREQ switched off on that instance).
- Fleet uplink (gRPC ``Connect`` + ``PushRecords`` to a real ``FleetServer``): until the agent's streams
  fail. Former: the channel without ``grpc.http2.ping_timeout_ms``.
- Fleet service: until a dead agent's streams are released (server keepalive). Former: the server without
  ``grpc.http2.ping_timeout_ms``.
- OPC UA source (asyncua, ``keepalive_check_s`` / ``connect_timeout_s``) and HTTP MJPEG camera
  (``read_timeout_s``): the project's alone (no former variant: nothing changed there).

Trials of one scenario run side by side (each with its own peer and relay: the waits are idle), so a run
takes about as long as the slowest former trial (~2 min). Medians of ``--runs`` trials.

    .venv/bin/python -m bench.halfopen_bench [--runs 3] [--only mqtt,uplink,server,opcua,camera]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
LIMIT_S = 200.0


async def _wait(pred, limit_s: float = LIMIT_S) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > limit_s:
            return float("nan")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def mqtt_trial(former: bool, keepalive: int) -> float:
    from devices.base import ConnectionState
    from devices.mqtt.client import MqttSource
    from devices.mqtt.settings import MqttSettings
    from tests.support.freeze_relay import FreezeRelay
    from tests.support.peers import Mosquitto

    broker = Mosquitto(Path(tempfile.mkdtemp(prefix="halfopen-mqtt-"))).start()
    relay = FreezeRelay(broker.port)
    src = MqttSource("mq", MqttSettings(port=relay.port, keepalive_s=keepalive, reconnect_min_s=0.2))
    if former:
        src._check_ping = lambda c, now: None  # type: ignore[method-assign]  # paho's own keepalive alone
    try:
        await src.start()
        await _wait(lambda: src.state is ConnectionState.CONNECTED, 10)
        await asyncio.sleep(1.0)
        relay.freeze()
        return await _wait(lambda: src.state is not ConnectionState.CONNECTED)
    finally:
        await src.stop()
        relay.close()
        broker.stop()


def _strip_ping_timeout(options):
    return [o for o in options if o[0] != "grpc.http2.ping_timeout_ms"]


async def uplink_trial(former: bool, pki: Path, keepalive: float, timeout: float) -> float:
    import grpc

    from cloud_trainer.fleet.service import FleetServer
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox
    from edge_agent.uplink.client import Uplink
    from tests.support.fleet import cloud_settings
    from tests.support.freeze_relay import FreezeRelay
    from tests.support.peers import free_port

    tmp = Path(tempfile.mkdtemp(prefix="halfopen-uplink-"))
    port = free_port()
    srv = FleetServer(tmp / "cloud", port, pki / "ca.pem", pki / "server.pem", pki / "server.key")
    await srv.start()
    relay = FreezeRelay(port)
    ob = Outbox(OutboxSettings(), tmp / "agent")
    ob.open()
    s = cloud_settings(pki, relay.port, heartbeat_s=5.0, keepalive_s=keepalive, keepalive_timeout_s=timeout)
    up = Uplink(s, ob)
    if former:
        opened = up.client.open

        def open_former() -> None:
            real = grpc.aio.secure_channel

            def channel(target, creds, options=None, compression=None):
                return real(
                    target, creds, options=_strip_ping_timeout(options or []), compression=compression
                )

            grpc.aio.secure_channel = channel  # type: ignore[assignment]
            try:
                opened()
            finally:
                grpc.aio.secure_channel = real

        up.client.open = open_former  # type: ignore[method-assign]
    try:
        await up.start()
        ob.append("result", {"i": 0})
        up.poke()
        await _wait(lambda: up.mode == "stream" and up.acked >= 1, 20)
        await asyncio.sleep(1.0)
        relay.freeze()
        ob.append("result", {"i": 1})  # a batch written into the dead connection
        up.poke()
        return await _wait(lambda: "ping timeout" in (up.last_error or ""))
    finally:
        await up.stop()
        ob.close()
        relay.close()
        await srv.stop()


async def server_trial(former: bool, pki: Path, keepalive: float, timeout: float) -> float:
    import grpc

    from cloud_trainer.fleet.service import FleetServer
    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox
    from edge_agent.uplink.client import Uplink
    from tests.support.fleet import cloud_settings
    from tests.support.freeze_relay import FreezeRelay
    from tests.support.peers import free_port

    tmp = Path(tempfile.mkdtemp(prefix="halfopen-server-"))
    port = free_port()
    real = grpc.aio.server
    if former:

        def server_former(*args, **kw):
            kw["options"] = _strip_ping_timeout(kw.get("options") or [])
            return real(*args, **kw)

        grpc.aio.server = server_former
    try:
        srv = FleetServer(
            tmp / "cloud",
            port,
            pki / "ca.pem",
            pki / "server.pem",
            pki / "server.key",
            keepalive_s=keepalive,
            keepalive_timeout_s=timeout,
        )
    finally:
        grpc.aio.server = real
    await srv.start()
    relay = FreezeRelay(port)
    ob = Outbox(OutboxSettings(), tmp / "agent")
    ob.open()
    up = Uplink(cloud_settings(pki, relay.port, heartbeat_s=5.0, keepalive_s=600), ob)
    agent = ("default", "gw1")
    try:
        await up.start()
        await _wait(lambda: agent in srv.hub.streams, 20)
        relay.freeze()
        for t in up._tasks:  # the agent lost power: nothing more of it reaches the wire
            t.cancel()
        return await _wait(lambda: agent not in srv.hub.streams and not srv.quotas._streams.get(agent))
    finally:
        await up.stop()
        ob.close()
        relay.close()
        await srv.stop()


async def opcua_trial() -> float:
    from asyncua import ua

    from devices.base import ConnectionState
    from devices.opcua.client import OpcUaSource
    from devices.opcua.settings import OpcUaSettings
    from tests.support.freeze_relay import FreezeRelay
    from tests.support.peers import free_port, opcua_server

    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:bench:halfopen", "Line")
    await obj.add_variable(ua.NodeId("Temp", idx), "Temp", 20.0)
    await srv.start()
    relay = FreezeRelay(port)
    src = OpcUaSource(
        "plc",
        OpcUaSettings(
            endpoint=f"opc.tcp://127.0.0.1:{relay.port}/plc/", nodes=[{"node_id": f"ns={idx};s=Temp"}]
        ),
    )
    try:
        await src.start()
        await _wait(lambda: src.state is ConnectionState.CONNECTED, 20)
        await asyncio.sleep(1.0)
        relay.freeze()
        return await _wait(lambda: src.state is not ConnectionState.CONNECTED)
    finally:
        await src.stop()
        relay.close()
        await srv.stop()


async def camera_trial() -> float:
    from devices.base import ConnectionState
    from devices.camera.capture import CameraSource
    from devices.camera.settings import CameraSettings
    from simulators.camera import CameraServer
    from tests.support.freeze_relay import FreezeRelay
    from tests.support.peers import free_port

    server = CameraServer(free_port(), fps=20, seed=3).start()
    relay = FreezeRelay(server.port)
    src = CameraSource("cam", CameraSettings(url=f"http://127.0.0.1:{relay.port}/stream.mjpg", fps=10))
    frames = [0]

    async def take() -> None:
        async for _ in src.items():
            frames[0] += 1

    taker = asyncio.create_task(take())
    try:
        await src.start()
        await _wait(lambda: frames[0] >= 5, 20)
        relay.freeze()
        return await _wait(lambda: src.state is not ConnectionState.CONNECTED)
    finally:
        taker.cancel()
        await src.stop()
        relay.close()
        server.stop()


def _median(xs: list[float]) -> float:
    ok = [x for x in xs if x == x]
    return statistics.median(ok) if ok else float("nan")


async def run(a) -> dict:
    from tests.support.fleet import make_pki

    pki = make_pki(Path(tempfile.mkdtemp(prefix="halfopen-pki-")))
    n = a.runs
    rows: dict[str, dict] = {}

    async def both(name: str, setting: str, trial) -> None:
        former, now = await asyncio.gather(
            asyncio.gather(*(trial(True) for _ in range(n))),
            asyncio.gather(*(trial(False) for _ in range(n))),
        )
        rows[name] = {"setting": setting, "former_s": list(former), "now_s": list(now)}

    only = set(a.only.split(",")) if a.only else {"mqtt", "uplink", "server", "opcua", "camera"}
    jobs = []
    if "mqtt" in only:
        jobs.append(both("MQTT source (paho)", "keepalive_s 5", lambda f: mqtt_trial(f, 5)))
    if "uplink" in only:
        jobs.append(
            both(
                "fleet uplink (gRPC Connect + PushRecords)",
                "cloud.keepalive_s 10, keepalive_timeout_s 20 (the defaults)",
                lambda f: uplink_trial(f, pki, 10.0, 20.0),
            )
        )
    if "server" in only:
        jobs.append(
            both(
                "fleet service: a dead agent's streams released",
                "server keepalive 5 s, timeout 5 s (defaults 60 / 20)",
                lambda f: server_trial(f, pki, 5.0, 5.0),
            )
        )
    await asyncio.gather(*jobs)
    if "opcua" in only:
        xs = [await opcua_trial() for _ in range(n)]
        rows["OPC UA source (asyncua)"] = {
            "setting": "keepalive_check_s 2, connect_timeout_s 5 (the defaults)",
            "former_s": [],
            "now_s": xs,
        }
    if "camera" in only:
        xs = list(await asyncio.gather(*(camera_trial() for _ in range(n))))
        rows["HTTP MJPEG camera"] = {"setting": "read_timeout_s 5 (the default)", "former_s": [], "now_s": xs}
    return rows


def main(argv: list[str] | None = None) -> int:
    from bench._machine import machine, machine_line
    from model_packager.cpu import cpu_flags

    ap = argparse.ArgumentParser(prog="python -m bench.halfopen_bench")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated: mqtt,uplink,server,opcua,camera")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    for name in ("asyncua", "devices", "edge_agent", "cloud_trainer"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    rows = asyncio.run(run(a))
    flags = " ".join(cpu_flags())
    result = {
        "bench": "halfopen_bench",
        "runs": a.runs,
        "cpu_flags": flags,
        "machine": machine(),
        "rows": rows,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "halfopen_bench.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"### Half-open TCP: time to notice a path frozen mid-stream (median of {a.runs}; CPU flags: {flags})",
        "",
        "| connection | setting | former (s) | now (s) | ratio now/former |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        f, m = _median(r["former_s"]), _median(r["now_s"])
        former = f"{f:.1f}" if r["former_s"] else "—"
        ratio = f"{m / f:.2f}" if r["former_s"] and f == f and f else "—"
        lines.append(f"| {name} | {r['setting']} | {former} | {m:.1f} | {ratio} |")
    lines += ["", machine_line()]
    md = "\n".join(lines) + "\n"
    (OUT / "halfopen_bench.md").write_text(md)
    print(md)
    with contextlib.suppress(Exception):
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
