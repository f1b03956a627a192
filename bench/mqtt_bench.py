"""MQTT ingest: messages/s through ``MqttSource`` (JSON decode to ``Reading``s) vs a bare paho subscriber.

Each run starts from the same stream: the consumer first registers a persistent session
(fixed client id, QoS 1 subscription to ``bench/#``) and leaves; a publisher puts N JSON
messages (4 numeric fields, ~90 bytes) into the broker's queue for it; then the consumer
reconnects and the clock runs from connect until the N-th message is consumed. The bare
baseline is a paho client whose ``on_message`` does ``json.loads`` and counts, the least any
consumer must do; the adapter hands each message to the asyncio loop, decodes it with the
JSON codec and yields 4 ``Reading``s per message. Runs alternate; medians are reported.

The adapter runs three times per run: with its hand-over queue (``_BatchChannel``: batches of at most ``TAKE_MAX``
messages shared out among the topics), with the former one (``FormerBatchChannel`` below, as it was
before the fair take: the queue's whole content in arrival order), and with paho acknowledging each message on
receipt (``ack_on_receipt``: as before the source acknowledged a persistent session's QoS 1 message only once
taken, ``_Unacked``; Mosquitto then sends at most 20 unacknowledged messages at a time over MQTT 3.1.1).
Beside them, in this process:

- the hand-over's cost per message (paho's thread's push plus the loop's take), new against former, with
  room (10 topics) and full (one topic flooding, a quiet one among it);
- a flood: ``mosquitto_pub -l`` (C) publishes ``--flood`` messages on one topic as fast as it can while a
  quiet topic publishes 10 values; the consumer spends ``--consumer-us`` per reading (the agent's fan-out:
  tag table, rules, pipelines); reported: how long each quiet value waited in the hand-over (its receipt
  by paho's thread to its hand-over to the consumer), new against former.

    .venv/bin/python -m bench.mqtt_bench [--messages 20000] [--runs 3] [--flood 200000] [--consumer-us 20]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from devices.base import Channel, DeviceStats
from devices.mqtt.client import MqttSource, _BatchChannel
from devices.mqtt.settings import MqttSettings
from tests.support.peers import Mosquitto

OUT = Path(__file__).resolve().parent / "out"
FIELDS = 4


class FormerBatchChannel(Channel):
    """The MQTT hand-over as it was before the fair take (devices/mqtt/client.py at a13b603): full, it drops
    the oldest message of the topic holding the most; taken, it hands over its whole content in arrival
    order. Its entries get the arrival number's place (a 0) and the acknowledgement's cell that the consumer
    now reads."""

    _wake_pending = False
    MAX_TOPICS_COUNTED = 100

    def __init__(self, maxsize: int, stats: DeviceStats, max_bytes: int = 2**62) -> None:
        super().__init__(maxsize, stats)
        self._max_bytes = max_bytes
        self._live = 0
        self._bytes = 0
        self._by_topic: dict[str, collections.deque[list]] = {}
        self._heavy: str | None = None
        self._heavy_n = 0
        self._compact_at = 2 * maxsize + 64
        self.dropped_by_topic: dict[str, int] = {}

    def __len__(self) -> int:
        return self._live

    def _push(self, item, cell=None) -> None:
        if type(item) is not list:
            item = list(item)
        item.append(0)
        item.append(cell)
        topic = item[0]
        size = len(item[1])
        with self._lock:
            if self._live >= self._maxsize or self._bytes + size > self._max_bytes:
                while self._live and (self._live >= self._maxsize or self._bytes + size > self._max_bytes):
                    self._drop_heaviest()
            by_topic = self._by_topic
            mine = by_topic.get(topic)
            if mine is None:
                mine = by_topic[topic] = collections.deque()
            mine.append(item)
            if len(mine) > self._heavy_n:
                self._heavy, self._heavy_n = topic, len(mine)
            self._items.append(item)
            self._live += 1
            self._bytes += size
            self._stats.received += 1
            if len(self._items) > self._compact_at:
                self._items = collections.deque(e for e in self._items if e[0] is not None)

    def _drop_heaviest(self) -> None:
        topic = self._heavy
        mine = self._by_topic.get(topic) if topic is not None else None
        if topic is None or not mine:
            topic, mine = max(self._by_topic.items(), key=lambda kv: len(kv[1]))
            self._heavy = topic
        entry = mine.popleft()
        self._heavy_n = len(mine)
        if not mine:
            del self._by_topic[topic]
            self._heavy = None
        self._live -= 1
        self._bytes -= len(entry[1])
        entry[0], entry[1] = None, b""
        if entry[5] is not None:
            entry[5][1] = True
        self._stats.dropped += 1
        counted = self.dropped_by_topic
        n = counted.get(topic)
        if n is not None:
            counted[topic] = n + 1
        elif len(counted) < self.MAX_TOPICS_COUNTED:
            counted[topic] = 1
        else:
            counted[""] = counted.get("", 0) + 1

    def put_threadsafe(self, item, cell=None) -> None:
        self._push(item, cell)
        if self._wake_pending or self._event.is_set():
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            self._wake_pending = True
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:
                self._wake_pending = False

    def _wake(self) -> None:
        self._wake_pending = False
        self._event.set()

    def wake_threadsafe(self) -> None:
        with self._lock:
            self._items.append([None, b"", 0.0, False, 0])
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:
                pass

    def take_drops(self) -> dict[str, int]:
        with self._lock:
            out = dict(self.dropped_by_topic)
            self.dropped_by_topic.clear()
        return out

    def take_all(self) -> list:
        with self._lock:
            items = [e for e in self._items if e[0] is not None]
            self._items.clear()
            self._by_topic.clear()
            self._heavy, self._heavy_n = None, 0
            self._live = self._bytes = 0
        return items

    async def get_many(self) -> list:
        while True:
            with self._lock:
                if self._items:
                    items = [e for e in self._items if e[0] is not None]  # shells and wake-ups skipped
                    self._items.clear()
                    self._by_topic.clear()
                    self._heavy, self._heavy_n = None, 0
                    self._live = self._bytes = 0
                    if items:
                        return items
                if self._closed:
                    raise EOFError
                self._event.clear()
            await self._event.wait()


CHANNELS = {"new": _BatchChannel, "former": FormerBatchChannel}


def with_channel(src: MqttSource, kind: str) -> MqttSource:
    if kind == "ack_on_receipt":  # paho's PUBACK on receipt, as before the source acknowledged what it took
        src._manual_ack = False
    elif kind != "new":
        s = src.settings
        src._channel = CHANNELS[kind](s.queue_max_items, src.stats, s.queue_max_bytes)
    return src


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


async def run_adapter(port: int, n: int, run: int, kind: str = "new") -> float:
    cid = prefix = f"bench-adapter-{kind}-{run}"
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
    src = with_channel(MqttSource("bench", settings), kind)
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


def handover_cost(n: int = 200_000, blocks: int = 5) -> dict[str, float]:
    """ns per message through the hand-over: paho's thread's push, then the loop's takes until empty; new
    against former, in alternating blocks. ``room``: 10 topics, nothing dropped; ``full``: a 10,000-message
    queue, one topic flooding and a quiet one (one message in 1,000) among it; ``bytes``: queue_max_bytes
    (1 MiB) reached, a topic of 20 KB messages (a camera's frames) flooding and a quiet one among it."""

    def entries(case: str) -> list[list]:
        if case == "full":
            return [["cell/temp" if i % 1000 == 999 else "flood/a", b"x" * 20, 0.0, False] for i in range(n)]
        if case == "bytes":
            frame = b"x" * 20_000
            return [
                ["cell/temp", b"x" * 20, 0.0, False] if i % 10 == 9 else ["cam/a", frame, 0.0, False]
                for i in range(n)
            ]
        return [[f"bench/line{i % 4}/sensor{i % 10}", b"x" * 20, 0.0, False] for i in range(n)]

    async def one(kind: str, case: str) -> float:
        m = n // 10 if case == "bytes" else n  # fewer: each message is dropped, not only pushed
        if case == "bytes":
            ch = CHANNELS[kind](10_000, DeviceStats(), 1 << 20)
        else:
            ch = CHANNELS[kind](10_000 if case == "full" else 10 * n, DeviceStats())
        ch.bind(asyncio.get_running_loop())
        items = entries(case)[:m]
        got = 0
        t = time.perf_counter()
        push = ch._push
        for it in items:
            push(it)
        while len(ch):
            got += len(await ch.get_many())
        dt = time.perf_counter() - t
        assert got == {"room": n, "full": 10_000}.get(case, got), got
        return dt / m * 1e9

    res: dict[str, list[float]] = {}
    for _ in range(blocks):
        for case in ("room", "full", "bytes"):
            for kind in CHANNELS:
                res.setdefault(f"{kind}_{case}", []).append(asyncio.run(one(kind, case)))
    return {k: statistics.median(v) for k, v in res.items()}


async def flood_delay(port: int, kind: str, flood: int, consumer_us: float, quiet: int = 10) -> dict:
    """A flood on one topic (``mosquitto_pub -l``, QoS 0) with ``quiet`` values of another topic among it;
    the consumer spends ``consumer_us`` per reading. Each quiet value's wait in the hand-over (paho's receipt
    to the consumer), and the messages dropped, by topic."""
    prefix = f"flood-{kind}-{time.monotonic_ns()}"
    src = with_channel(
        MqttSource(
            "bench",
            MqttSettings(
                port=port,
                subscriptions=[
                    {"topic": f"{prefix}/flood/#"},
                    {
                        "topic": f"{prefix}/cell/temp",
                        "json_mapping": {"values": {"t": "Temp"}, "tag_prefix_topic": False},
                    },
                ],
            ),
        ),
        kind,
    )
    await src.start()
    async with asyncio.timeout(10):
        await src.subscribed.wait()
    waits: list[float] = []

    async def consume() -> None:
        n = 0
        async for r in src.items():
            n += 1
            if r.tag == "Temp":
                waits.append(time.time() - r.received_at)
            end = time.perf_counter() + consumer_us / 1e6
            while time.perf_counter() < end:  # the agent's work on the reading, holding the GIL as it does
                pass
            if n % 64 == 0:  # the fan-out gives the loop back every 64 items
                await asyncio.sleep(0)

    task = asyncio.create_task(consume())
    lines = b"".join(b'{"v": %d}\n' % i for i in range(flood))
    pub = subprocess.Popen(
        ["mosquitto_pub", "-p", str(port), "-l", "-q", "0", "-t", f"{prefix}/flood/a"], stdin=subprocess.PIPE
    )
    assert pub.stdin is not None
    step = len(lines) // (quiet + 1)
    for k in range(quiet):  # a quiet value after each part of the flood
        pub.stdin.write(lines[k * step : (k + 1) * step])
        pub.stdin.flush()
        await asyncio.to_thread(
            subprocess.run,
            [
                "mosquitto_pub",
                "-p",
                str(port),
                "-q",
                "1",
                "-t",
                f"{prefix}/cell/temp",
                "-m",
                json.dumps({"t": k}),
            ],
        )
    pub.stdin.write(lines[quiet * step :])
    pub.stdin.close()
    await asyncio.to_thread(pub.wait)
    last = -1
    while src.stats.received != last or len(src._channel):  # until nothing more comes and all is taken
        last = src.stats.received
        await asyncio.sleep(1.0)
    task.cancel()
    await src.stop()
    drops = src._channel.take_drops()
    return {
        "quiet_got": len(waits),
        "quiet_wait_median_ms": round(statistics.median(waits) * 1000, 1) if waits else None,
        "quiet_wait_max_ms": round(max(waits) * 1000, 1) if waits else None,
        "received": src.stats.received,
        "dropped": src.stats.dropped,
        "dropped_quiet": sum(v for k, v in drops.items() if k.endswith("/cell/temp")),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.mqtt_bench")
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--flood", type=int, default=200_000, help="messages of the flood phase (0: none)")
    ap.add_argument(
        "--consumer-us", type=float, default=20.0, help="the flood phase's consumer's cost a reading"
    )
    a = ap.parse_args(argv)
    from bench._machine import machine, machine_line
    from model_packager.cpu import cpu_flags

    bare, adapter, former, on_receipt = [], [], [], []
    floods: dict[str, list[dict]] = {"new": [], "former": []}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp)).start()
        try:
            for run in range(a.runs):
                bare.append(run_bare(broker.port, a.messages, run))
                adapter.append(asyncio.run(run_adapter(broker.port, a.messages, run)))
                on_receipt.append(asyncio.run(run_adapter(broker.port, a.messages, run, "ack_on_receipt")))
                former.append(asyncio.run(run_adapter(broker.port, a.messages, run, "former")))
            for _ in range(a.runs if a.flood else 0):
                for kind in floods:
                    floods[kind].append(asyncio.run(flood_delay(broker.port, kind, a.flood, a.consumer_us)))
        finally:
            broker.stop()
    dec_us, loads_us = decode_cost()
    hand = handover_cost()
    mb, ma, mf = statistics.median(bare), statistics.median(adapter), statistics.median(former)
    # each adapter run against the bare run just before it: on a shared machine the load drifts
    # between runs, and a pair sees nearly the same load
    paired = statistics.median(x / b for b, x in zip(bare, adapter, strict=True))
    paired_former = statistics.median(x / f for f, x in zip(former, adapter, strict=True))
    mr = statistics.median(on_receipt)
    paired_receipt = statistics.median(x / f for f, x in zip(on_receipt, adapter, strict=True))
    paired_receipt_bare = statistics.median(x / b for b, x in zip(bare, on_receipt, strict=True))

    def flood_median(kind: str, key: str) -> float | None:
        vals = [r[key] for r in floods[kind] if r[key] is not None]
        return statistics.median(vals) if vals else None

    result = {
        "name": "mqtt_ingest",
        "cpu_flags": " ".join(cpu_flags()),
        "machine": machine(),
        "messages_per_run": a.messages,
        "runs": a.runs,
        "bare_paho_msgs_per_s": bare,
        "adapter_msgs_per_s": adapter,
        "adapter_former_handover_msgs_per_s": former,
        "median_bare_msgs_per_s": mb,
        "median_adapter_msgs_per_s": ma,
        "median_adapter_former_handover_msgs_per_s": mf,
        "adapter_ack_on_receipt_msgs_per_s": on_receipt,
        "median_adapter_ack_on_receipt_msgs_per_s": mr,
        "paired_ratio_new_over_ack_on_receipt": paired_receipt,
        "paired_ratio_ack_on_receipt_over_bare": paired_receipt_bare,
        "ratio": ma / mb,
        "paired_ratio": paired,
        "paired_ratio_new_over_former": paired_former,
        "decode_us_per_msg": dec_us,
        "json_loads_us_per_msg": loads_us,
        "handover_ns_per_msg": hand,
        "flood": {"messages": a.flood, "consumer_us": a.consumer_us, "runs": floods},
        "target_ratio": 0.8,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "mqtt_bench.json").write_text(json.dumps(result, indent=2))
    md = (
        "### MQTT ingest (JSON, QoS 1, queued stream drained)\n\n"
        "| consumer | median msgs/s | runs |\n| --- | ---: | ---: |\n"
        f"| bare paho subscriber (json.loads + count) | {mb:,.0f} | {a.runs} |\n"
        f"| MqttSource → Readings ({FIELDS} tags/msg) | {ma:,.0f} | {a.runs} |\n"
        f"| MqttSource, the former hand-over (whole queue, arrival order) | {mf:,.0f} | {a.runs} |\n"
        f"| MqttSource, PUBACK on receipt (as before it acknowledged what it took) | {mr:,.0f} | {a.runs} |\n\n"
        f"PUBACK once taken / on receipt: {ma / mr:.2f} (pairs: {paired_receipt:.2f}); on receipt / bare "
        f"(pairs): {paired_receipt_bare:.2f}.\n\n"
        f"Ratio adapter / bare: **{ma / mb:.2f}** (target ≥ 0.80; median of the per-run pairs: {paired:.2f}); "
        f"adapter / its former hand-over: {ma / mf:.2f} (pairs: {paired_former:.2f}); "
        f"{a.messages} messages per run.\n\n"
        f"On the loop, per message: `MqttSource.decode` (JSON → {FIELDS} Readings) {dec_us:.1f} µs, "
        f"`json.loads` alone {loads_us:.1f} µs (ratio {dec_us / loads_us:.2f}; medians of alternating blocks).\n\n"
        "Hand-over per message (push on paho's thread + take on the loop), ns, medians of alternating blocks:\n\n"
        "| queue | fair take | former | ratio |\n| --- | ---: | ---: | ---: |\n"
        f"| room, 10 topics | {hand['new_room']:.0f} | {hand['former_room']:.0f} | "
        f"{hand['new_room'] / hand['former_room']:.2f} |\n"
        f"| full (10,000), one topic flooding | {hand['new_full']:.0f} | {hand['former_full']:.0f} | "
        f"{hand['new_full'] / hand['former_full']:.2f} |\n"
        f"| full (1 MiB), 20 KB messages flooding | {hand['new_bytes']:.0f} | {hand['former_bytes']:.0f} | "
        f"{hand['new_bytes'] / hand['former_bytes']:.2f} |\n"
    )
    if a.flood:
        md += (
            f"\nFlood: `mosquitto_pub -l` sends {a.flood:,} messages on one topic as fast as it can, 10 values of "
            f"a quiet topic among them; the consumer spends {a.consumer_us:g} µs a reading; {a.runs} runs each, "
            "medians. A quiet value's wait in the hand-over (receipt by paho's thread to the consumer):\n\n"
            "| hand-over | quiet values got | wait median ms | wait max ms | flood received | dropped (quiet) |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: |\n"
        )
        for kind in floods:
            md += (
                f"| {'fair take' if kind == 'new' else 'former'} | "
                f"{flood_median(kind, 'quiet_got'):.0f} / 10 | {flood_median(kind, 'quiet_wait_median_ms')} | "
                f"{flood_median(kind, 'quiet_wait_max_ms')} | {flood_median(kind, 'received'):,.0f} | "
                f"{flood_median(kind, 'dropped'):,.0f} ({flood_median(kind, 'dropped_quiet'):.0f}) |\n"
            )
    md += f"\n{machine_line()}\n"
    (OUT / "mqtt_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
