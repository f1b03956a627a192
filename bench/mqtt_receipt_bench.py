"""MQTT receipt: paho's thread's cost per message in ``MqttSource._on_message`` with the receipt's wall-clock offset
(``time.time() - time.monotonic()``, kept with each message so that a reading is judged by this gateway's clock as
it was at a device's clock step, whichever way this gateway's own clock has been stepped since) against the same
with the monotonic read made free (a C call returning a constant: the stamp as it was, ``time.time()`` alone), in
alternating blocks in this process (the order flipped at each, the first pair a warm-up, the collector off while
timed); medians. Also the loop's ``_read`` of the same messages (JSON, 4 readings).

    .venv/bin/python -m bench.mqtt_receipt_bench [--messages 50000] [--blocks 7]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import statistics
import time
from pathlib import Path

import paho.mqtt.client as paho

from bench._machine import machine, machine_line
from devices.mqtt import client
from devices.mqtt.settings import MqttSettings

OUT = Path(__file__).resolve().parent / "out"


class _FreeMonotonic:
    """``time`` with ``monotonic`` a C call returning 0.0: the stamp without its second clock read."""

    monotonic = itertools.repeat(0.0).__next__
    time = (
        time.time
    )  # looked up as the module's is (``__getattr__``, a Python call, would cost more than both)

    def __getattr__(self, name: str):
        return getattr(time, name)


def _messages(n: int) -> list[paho.MQTTMessage]:
    out, now = [], time.time()
    for i in range(n):
        m = paho.MQTTMessage(topic=f"bench/line{i % 4}/sensor{i % 16}".encode())
        m.payload = json.dumps(
            {"ts": now + i * 1e-3, "t": 20.0 + i % 7, "h": 40.5, "p": 1013.2, "c": 4.25}
        ).encode()
        out.append(m)
    return out


def run(n: int, blocks: int) -> dict:
    msgs = _messages(n)
    res: dict[str, list[float]] = {"on_message_stamped": [], "on_message_time_only": [], "read": []}

    async def block(kind: str) -> None:
        src = client.MqttSource(
            "bench", MqttSettings(subscriptions=[{"topic": "bench/#"}], queue_max_items=n)
        )
        src._channel.bind(asyncio.get_running_loop())
        src._handing = True
        on_message = src._on_message
        saved = client.time
        if kind == "on_message_time_only":
            client.time = _FreeMonotonic()  # type: ignore[assignment]
        try:
            t = time.perf_counter()
            for m in msgs:
                on_message(None, None, m)
            res[kind].append((time.perf_counter() - t) / n * 1e9)
        finally:
            client.time = saved  # type: ignore[assignment]
        entries = await src._channel.get_many()
        while len(src._channel):
            entries += await src._channel.get_many()
        if kind == "on_message_stamped":
            t = time.perf_counter()
            for e in entries:
                src._read(e)
            res["read"].append((time.perf_counter() - t) / len(entries) * 1e9)

    kinds = ["on_message_stamped", "on_message_time_only"]
    for b in range(blocks + 1):  # the first pair a warm-up, left out; the order flipped at each
        for kind in kinds if b % 2 else kinds[::-1]:
            gc.collect()
            gc.disable()
            try:
                asyncio.run(block(kind))
            finally:
                gc.enable()
            if b == 0:
                res[kind].clear()
                res["read"].clear()
    med = {k: statistics.median(v) for k, v in res.items()}
    med["monotonic_call_ns"] = statistics.median(
        min(
            (time.perf_counter() - t0) / 1e5 * 1e9
            for t0 in [time.perf_counter()]
            for _ in [[time.monotonic() for _ in range(100_000)]]
        )
        for _ in range(blocks)
    )
    return med


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.mqtt_receipt_bench")
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--blocks", type=int, default=7)
    a = ap.parse_args(argv)
    med = run(a.messages, a.blocks)
    extra = med["on_message_stamped"] - med["on_message_time_only"]
    ratio = med["on_message_stamped"] / med["on_message_time_only"]
    md = "\n".join(
        [
            machine_line(),
            "",
            f"{a.messages} JSON messages, {a.blocks} alternating blocks, medians (ns per message):",
            "",
            "| paho's thread, `_on_message` | ns | ratio |",
            "| --- | ---: | ---: |",
            f"| the stamp as it was (`time.time()` alone) | {med['on_message_time_only']:.0f} | 1.00 |",
            f"| with the wall-clock offset (`- time.monotonic()`) | {med['on_message_stamped']:.0f} | {ratio:.3f} |",
            "",
            f"Extra per message: {extra:.0f} ns; `time.monotonic()` alone {med['monotonic_call_ns']:.0f} ns; "
            f"the loop's `_read` of one such message (4 readings): {med['read']:.0f} ns.",
        ]
    )
    print(md)
    OUT.mkdir(exist_ok=True)
    (OUT / "mqtt_receipt.json").write_text(
        json.dumps({"machine": machine(), "messages": a.messages, **med}, indent=1)
    )
    (OUT / "mqtt_receipt.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
