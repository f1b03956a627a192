"""Overload and fairness: how long a rule on one source takes to act while another source floods the agent.

A real agent (``edge-agent run``, its own process) reads a real asyncua server (the "PLC": a temperature,
a trip output and a heartbeat node) and a real Mosquitto broker, on which a node publishes ``--rate``
messages a second of ``--fields`` numeric fields each on 10 topics. A rule trips the PLC output when the
temperature passes 50. Measured, from the write of the temperature on the server to the trip (and its
reset) seen on the server: the delay without the flood (the baseline, same run), under it, and after it;
the heartbeat's longest gap; and, for a rule on a quiet topic of the FLOODED MQTT source and one on another
MQTT source of the same broker (its own connection), the delay from publishing its message to the trip. A trip that never came within ``--give-up-s`` is counted lost.
Then the hot-path cost of the fixes, alternating blocks in this process: the fan-out's yield every 64
items, and the MQTT hand-over's per-topic drop against the former drop-oldest queue.

    nice -n 19 .venv/bin/python -m bench.overload_bench [--rate 4000 --fields 100 --cycles 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
# the rule whose trip is timed: on the OPC UA source; on a quiet topic of the flooded MQTT source; on another
# MQTT source (its own connection) of the same broker
KINDS = ("opcua_rule", "same_mqtt_source_rule", "own_mqtt_source_rule")
ROOT = Path(__file__).resolve().parents[1]

PUBLISHER = r"""
import json, sys, time
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port, rate, fields = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = paho.Client(CallbackAPIVersion.VERSION2)
c.max_queued_messages_set(0)
c.connect("127.0.0.1", port)
c.loop_start()
p = json.dumps({f"f{i}": float(i) for i in range(fields)}).encode()
t0, n = time.monotonic(), 0
while True:
    for i in range(100):
        c.publish(f"flood/node{i % 10}", p, qos=0)
        n += 1
    lag = n / rate - (time.monotonic() - t0)
    if lag > 0:
        time.sleep(lag)
"""


def start_agent(cfg: dict, tmp: Path) -> subprocess.Popen:
    """A real ``edge-agent run`` process on ``cfg`` (written to tmp/agent.yaml), its log in tmp/agent.log."""
    import yaml

    (tmp / "agent.yaml").write_text(yaml.safe_dump(cfg))
    log = open(tmp / "agent.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", str(tmp / "agent.yaml")],
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )


async def watch_heartbeat(alive, beats: list[float]) -> None:
    """Appends the time of every change of the agent's heartbeat node ``alive`` (an asyncua node) to ``beats``."""
    last = None
    while True:
        v = await alive.read_value()
        if v != last:
            beats.append(time.monotonic())
            last = v
        await asyncio.sleep(0.02)


async def run(a) -> dict:
    from asyncua import ua

    from tests.support.peers import Mosquitto, free_port, opcua_server

    tmp = Path(tempfile.mkdtemp(prefix="overload-"))
    broker = Mosquitto(tmp / "mq").start()
    port = free_port()
    srv, idx, obj = await opcua_server(port, "plc", "urn:plc", "Line")
    temp = await obj.add_variable(ua.NodeId("Line.Temp", idx), "Temp", 20.0)
    trip = await obj.add_variable(ua.NodeId("Line.Trip", idx), "Trip", False)
    alive = await obj.add_variable(ua.NodeId("Line.Alive", idx), "Alive", False)
    for v in (temp, trip, alive):
        await v.set_writable()
    await srv.start()
    cfg = {
        "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp / "data")},
        "http": {"enabled": False},
        "sources": {
            "flood": {
                "type": "mqtt",
                "port": broker.port,
                "subscriptions": [
                    {"topic": "flood/#"},
                    {
                        "topic": "cell/temp",
                        "json_mapping": {"values": {"t": "CellTemp"}, "tag_prefix_topic": False},
                    },
                ],
            },
            "cell": {  # the same broker, its own connection
                "type": "mqtt",
                "port": broker.port,
                "subscriptions": [
                    {
                        "topic": "cell2/temp",
                        "json_mapping": {"values": {"t": "T2"}, "tag_prefix_topic": False},
                    }
                ],
            },
            "plc": {
                "type": "opcua",
                "endpoint": f"opc.tcp://127.0.0.1:{port}/plc/",
                "nodes": [{"node_id": f"ns={idx};s=Line.Temp", "tag": "Temp"}],
                "heartbeat": {"node_id": f"ns={idx};s=Line.Alive", "period_ms": 500},
            },
        },
        "rules": [
            {"name": "hot", "source": "plc", "tag": "Temp", "above": 50, "actions": ["trip"]},
            {"name": "cell_hot", "source": "flood", "tag": "CellTemp", "above": 50, "actions": ["trip"]},
            {"name": "cell2_hot", "source": "cell", "tag": "T2", "above": 50, "actions": ["trip"]},
            {"name": "noisy", "source": "flood", "tag": "flood/node1/f0", "above": 1e9},
        ],
        "actions": {
            "trip": {
                "type": "opcua_write",
                "source": "plc",
                "node_id": f"ns={idx};s=Line.Trip",
                "value": True,
                "reset_value": False,
                "mode": "on_change",
                "when": {"verdict": "NG"},
            }
        },
    }
    agent = start_agent(cfg, tmp)
    beats: list[float] = []
    watcher = asyncio.create_task(watch_heartbeat(alive, beats))
    while len(beats) < 3:  # connected: its heartbeat runs
        await asyncio.sleep(0.1)

    def mqtt_pub(v: float, topic: str = "cell/temp") -> None:
        subprocess.run(
            ["mosquitto_pub", "-p", str(broker.port), "-t", topic, "-m", json.dumps({"t": v})],
            check=True,
        )

    async def until_trip(state: bool, t0: float) -> float | None:
        while await trip.read_value() != state:
            if time.monotonic() - t0 > a.give_up_s:
                return None
            await asyncio.sleep(0.005)
        return time.monotonic() - t0

    async def phase(label: str) -> dict:
        b0, delays, lost = len(beats), {k: [] for k in KINDS}, {}
        for kind in delays:
            for _ in range(a.cycles):
                for hot in (True, False):
                    t0 = time.monotonic()
                    if kind == "opcua_rule":
                        await temp.write_value(60.0 if hot else 20.0)
                    else:
                        topic = "cell/temp" if kind == "same_mqtt_source_rule" else "cell2/temp"
                        await asyncio.to_thread(mqtt_pub, 60.0 if hot else 20.0, topic)
                    d = await until_trip(hot, t0)
                    if d is None:
                        lost[kind] = lost.get(kind, 0) + 1
                        await temp.write_value(20.0)  # start the next one from a known state
                        await asyncio.to_thread(mqtt_pub, 20.0)
                        await asyncio.to_thread(mqtt_pub, 20.0, "cell2/temp")
                        await until_trip(False, time.monotonic())
                    else:
                        delays[kind].append(d)
                    await asyncio.sleep(0.2)
        gaps = [y - x for x, y in zip(beats[b0:], beats[b0 + 1 :], strict=False)]
        out = {"phase": label, "heartbeat_max_gap_s": round(max(gaps), 3) if gaps else None}
        for kind, ds in delays.items():
            out[kind] = {
                "median_ms": round(statistics.median(ds) * 1000, 1) if ds else None,
                "max_ms": round(max(ds) * 1000, 1) if ds else None,
                "acted": len(ds),
                "lost": lost.get(kind, 0),
            }
        print(json.dumps(out), flush=True)
        return out

    phases = [await phase("baseline (no flood)")]
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(broker.port), str(a.rate), str(a.fields)])
    await asyncio.sleep(2.0)
    phases.append(await phase(f"flood {a.rate} msg/s x {a.fields} fields"))
    pub.kill()
    pub.wait()
    await asyncio.sleep(2.0)
    phases.append(await phase("after the flood (+2 s)"))
    agent.terminate()
    agent.wait(30)
    watcher.cancel()
    await srv.stop()
    broker.stop()
    return {"phases": phases, "agent_log_tail": (tmp / "agent.log").read_text()[-1500:]}


def hot_path(n: int = 200_000, blocks: int = 5) -> dict:
    """Per item: the fan-out's ``asyncio.sleep(0)`` every 64 items; the MQTT hand-over's push (per-topic
    drop, bytes bound) against the former push (one deque, oldest dropped), 10 topics, with room and full."""
    from devices.base import Channel, DeviceStats
    from devices.mqtt.client import _BatchChannel

    async def fan_out(every: int) -> float:
        t = time.perf_counter()
        k = 0
        for _ in range(n):
            k += 1
            if k >= every:
                k = 0
                await asyncio.sleep(0)
        return (time.perf_counter() - t) / n * 1e9

    def push(ch) -> float:
        items = [[f"flood/node{i % 10}", b"x" * 20, 0.0, False] for i in range(n)]
        t = time.perf_counter()
        for it in items:
            ch._push(it)
        return (time.perf_counter() - t) / n * 1e9

    res: dict[str, list[float]] = {}
    for _ in range(blocks):
        for k, v in (
            ("yield64", lambda: asyncio.run(fan_out(64))),
            ("no_yield", lambda: asyncio.run(fan_out(10**12))),
            ("push_new_room", lambda: push(_BatchChannel(10 * n, DeviceStats()))),
            ("push_former_room", lambda: push(Channel(10 * n, DeviceStats()))),
            ("push_new_full", lambda: push(_BatchChannel(10_000, DeviceStats()))),
            ("push_former_full", lambda: push(Channel(10_000, DeviceStats()))),
        ):
            res.setdefault(k, []).append(v())
    med = {k: statistics.median(v) for k, v in res.items()}
    return {
        "fan_out_yield_ns_per_item": round(med["yield64"] - med["no_yield"], 1),
        **{f"{k}_ns": round(v, 1) for k, v in med.items() if k.startswith("push")},
        "push_ratio_room": round(med["push_new_room"] / med["push_former_room"], 2),
        "push_ratio_full": round(med["push_new_full"] / med["push_former_full"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.overload_bench")
    ap.add_argument("--rate", type=int, default=4000, help="flood messages per second")
    ap.add_argument("--fields", type=int, default=100, help="numeric fields per flood message")
    ap.add_argument("--cycles", type=int, default=6, help="trips (and resets) per rule per phase")
    ap.add_argument("--give-up-s", type=float, default=10.0)
    a = ap.parse_args(argv)
    from bench._machine import machine, machine_line
    from model_packager.cpu import cpu_flags

    result = {
        "name": "overload",
        "cpu_flags": " ".join(cpu_flags()),
        "machine": machine(),
        **asyncio.run(run(a)),
        **hot_path(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "overload_bench.json").write_text(json.dumps(result, indent=2))
    base = result["phases"][0]
    rows = []
    for p in result["phases"]:
        for kind in KINDS:
            q, b = p[kind], base[kind]
            ratio = q["median_ms"] / b["median_ms"] if q["median_ms"] and b["median_ms"] else None
            rows.append(
                f"| {p['phase']} | {kind} | {q['median_ms']} | {q['max_ms']} | {q['acted']} | {q['lost']} | "
                f"{f'{ratio:.2f}' if ratio else '-'} | {p['heartbeat_max_gap_s']} |"
            )
    md = (
        "### Overload: a rule's trip to the PLC while an MQTT source floods the agent\n\n"
        "| phase | rule | median ms | max ms | acted | lost | median / baseline | heartbeat max gap s (500 ms) |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        + "\n".join(rows)
        + f"\n\nHot path: the fan-out's yield {result['fan_out_yield_ns_per_item']} ns an item; the MQTT "
        f"hand-over's push (paho's thread) {result['push_new_room_ns']} ns against {result['push_former_room_ns']} "
        f"ns before with room (x{result['push_ratio_room']}), {result['push_new_full_ns']} against "
        f"{result['push_former_full_ns']} ns full (x{result['push_ratio_full']}).\n\n{machine_line()}\n"
    )
    (OUT / "overload_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
