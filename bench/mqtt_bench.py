"""MQTT ingest: messages/s through ``MqttSource`` (JSON decode to ``Reading``s) vs a bare paho subscriber.

Each run starts from the same stream: the consumer first registers a persistent session
(fixed client id, QoS 1 subscription to ``bench/#``) and leaves; a publisher puts N JSON
messages (4 numeric fields, ~90 bytes) into the broker's queue for it; then the consumer
reconnects and the clock runs from connect until the N-th message is consumed. The bare
baseline is a paho client whose ``on_message`` does ``json.loads`` and counts, the least any
consumer must do; the adapter hands each message to the asyncio loop, decodes it with the
JSON codec and yields 4 ``Reading``s per message. Runs alternate; medians are reported.

    .venv/bin/python -m bench.mqtt_bench [--messages 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.mqtt.client import MqttSource
from devices.mqtt.settings import MqttSettings
from tests.support.peers import Mosquitto

OUT = Path(__file__).resolve().parent / "out"
FIELDS = 4


def fill(port: int, n: int, prefix: str) -> None:
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    pub.max_queued_messages_set(0)
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    infos = []
    for i in range(n):
        body = json.dumps(
            {
                "ts": 1.7e9 + i,
                "temperature": 20.0 + i % 7,
                "humidity": 40.5,
                "pressure": 1013.2,
                "motor_current": 4.25,
            }
        )
        infos.append(pub.publish(f"{prefix}/line{i % 4}/sensor{i % 16}", body, qos=1))
    for info in infos:
        info.wait_for_publish(30)
    pub.disconnect()
    pub.loop_stop()


def bare_session(port: int, cid: str, prefix: str) -> paho.Client:
    done = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
    c.on_connect = lambda cl, u, f, rc, p: (cl.subscribe(f"{prefix}/#", 1), None)
    c.on_subscribe = lambda *a: done.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(5)
    c.disconnect()
    c.loop_stop()
    return c


def run_bare(port: int, n: int, run: int) -> float:
    # a topic prefix and client id per run and consumer: no session sees another's stream
    cid = prefix = f"bench-bare-{run}"
    bare_session(port, cid, prefix)
    fill(port, n, prefix)
    got = 0
    done = threading.Event()

    def on_message(cl, u, msg):
        nonlocal got
        json.loads(msg.payload)
        got += 1
        if got >= n:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
    c.on_message = on_message
    t0 = time.perf_counter()
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(120)
    dt = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    assert got >= n, f"bare subscriber got {got} of {n}"
    return n / dt


async def run_adapter(port: int, n: int, run: int) -> float:
    cid = prefix = f"bench-adapter-{run}"
    settings = MqttSettings(
        port=port,
        client_id=cid,
        persistent_session=True,
        subscriptions=[{"topic": f"{prefix}/#", "qos": 1}],
        queue_max_items=n + 10,
    )
    src = MqttSource("bench", settings)
    await src.start()
    await asyncio.wait_for(src.connected.wait(), 5)
    await asyncio.sleep(0.2)
    await src.stop()
    await asyncio.to_thread(fill, port, n, prefix)
    src = MqttSource("bench", settings)
    t0 = time.perf_counter()
    await src.start()
    want, got = n * FIELDS, 0

    async def consume() -> None:
        nonlocal got
        async for _ in src.items():
            got += 1
            if got >= want:
                return

    try:
        await asyncio.wait_for(consume(), 120)
    except TimeoutError:
        pass
    dt = time.perf_counter() - t0
    await src.stop()
    assert got >= want, f"adapter yielded {got} of {want} readings"
    return n / dt


def decode_cost(n: int = 20_000, blocks: int = 7) -> tuple[float, float]:
    """µs per message on the loop: ``MqttSource.decode`` (JSON → 4 Readings) vs ``json.loads`` of the
    same payloads, in alternating blocks in this process (steadier than the end-to-end rates)."""
    src = MqttSource("bench", MqttSettings(subscriptions=[{"topic": "bench/#", "qos": 1}]))
    msgs = [
        (
            f"bench/line{i % 4}/sensor{i % 16}",
            json.dumps(
                {
                    "ts": 1.7e9 + i,
                    "temperature": 20.0 + i % 7,
                    "humidity": 40.5,
                    "pressure": 1013.2,
                    "motor_current": 4.25,
                }
            ).encode(),
        )
        for i in range(n)
    ]
    ours, bare = [], []
    for _ in range(blocks):
        src._last_ts.clear()
        t = time.perf_counter()
        for topic, payload in msgs:
            src.decode(topic, payload, 1.8e9)
        ours.append((time.perf_counter() - t) / n * 1e6)
        t = time.perf_counter()
        for _topic, payload in msgs:
            json.loads(payload)
        bare.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(ours), statistics.median(bare)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.mqtt_bench")
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args(argv)
    bare, adapter = [], []
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp)).start()
        try:
            for run in range(a.runs):
                bare.append(run_bare(broker.port, a.messages, run))
                adapter.append(asyncio.run(run_adapter(broker.port, a.messages, run)))
        finally:
            broker.stop()
    dec_us, loads_us = decode_cost()
    mb, ma = statistics.median(bare), statistics.median(adapter)
    # each adapter run against the bare run just before it: on a shared machine the load drifts
    # between runs, and a pair sees nearly the same load
    paired = statistics.median(x / b for b, x in zip(bare, adapter, strict=True))
    result = {
        "name": "mqtt_ingest",
        "messages_per_run": a.messages,
        "runs": a.runs,
        "bare_paho_msgs_per_s": bare,
        "adapter_msgs_per_s": adapter,
        "median_bare_msgs_per_s": mb,
        "median_adapter_msgs_per_s": ma,
        "ratio": ma / mb,
        "paired_ratio": paired,
        "decode_us_per_msg": dec_us,
        "json_loads_us_per_msg": loads_us,
        "target_ratio": 0.8,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "mqtt_bench.json").write_text(json.dumps(result, indent=2))
    md = (
        "### MQTT ingest (JSON, QoS 1, queued stream drained)\n\n"
        "| consumer | median msgs/s | runs |\n| --- | ---: | ---: |\n"
        f"| bare paho subscriber (json.loads + count) | {mb:,.0f} | {a.runs} |\n"
        f"| MqttSource → Readings ({FIELDS} tags/msg) | {ma:,.0f} | {a.runs} |\n\n"
        f"Ratio adapter / bare: **{ma / mb:.2f}** (target ≥ 0.80; median of the per-run pairs: {paired:.2f}); "
        f"{a.messages} messages per run.\n\n"
        f"On the loop, per message: `MqttSource.decode` (JSON → {FIELDS} Readings) {dec_us:.1f} µs, "
        f"`json.loads` alone {loads_us:.1f} µs (ratio {dec_us / loads_us:.2f}; medians of alternating blocks).\n"
    )
    (OUT / "mqtt_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
