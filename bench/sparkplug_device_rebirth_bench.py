"""The cost of a Sparkplug edge node's rebirth with many devices: its NBIRTH, then every device's DBIRTH, each
handed to ``SparkplugHost.handle`` as the source's ``items()`` does, against the baseline of decoding the same
payloads alone (``sp.decode``). A DBIRTH forgets what the device's last birth declared (types, Template members,
aliases); that cost should be the device's own, so the ratio to decoding stays flat as the node's devices grow.
Before, each DBIRTH walked the node's every metric (three tables): a rebirth's cost grew with the square of
the devices (10,000 devices of 10 metrics: about 34 s of CPU; 3,000: 2.7-3.6 s, and 1.2-1.5 s before the
aliases were walked too).

    nice -n 10 .venv/bin/python -m bench.sparkplug_device_rebirth_bench [--metrics 10 --runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from devices.mqtt.settings import SparkplugHostSettings
from devices.mqtt.sparkplug_host import SparkplugHost
from protocols import sparkplug as sp

D = sp.DataType


def _births(devices: int, metrics: int) -> list[tuple[str, bytes]]:
    now = int(time.time() * 1000)
    out = [("spBv1.0/g/NBIRTH/n", sp.encode(sp.Payload(now, 0, [sp.Metric("bdSeq", None, D.INT64, 0)])))]
    for i in range(devices):
        ms = [sp.Metric(f"m{j}", 1000 + i * metrics + j, D.DOUBLE, 1.0) for j in range(metrics)]
        out.append((f"spBv1.0/g/DBIRTH/n/d{i}", sp.encode(sp.Payload(now, (i + 1) % 256, ms))))
    return out


def _rebirth_s(births: list[tuple[str, bytes]]) -> float:
    """Seconds for a second rebirth (the first fills the tables a rebirth forgets)."""
    host = SparkplugHost("b", SparkplugHostSettings(), lambda t, b: None, lambda r, d: None)
    now = time.time()
    for topic, data in births:
        host.handle(topic, data, now)
    t0 = time.perf_counter()
    for topic, data in births:
        host.handle(topic, data, now)
    return time.perf_counter() - t0


def _decode_s(births: list[tuple[str, bytes]]) -> float:
    t0 = time.perf_counter()
    for _, data in births:
        sp.decode(data)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--metrics", type=int, default=10, help="metrics per device")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--devices", type=int, nargs="+", default=[1000, 3000, 10000])
    a = ap.parse_args()
    from bench._machine import machine_line

    print(machine_line(), flush=True)
    rows = []
    for n in a.devices:
        births = _births(n, a.metrics)
        host = statistics.median(_rebirth_s(births) for _ in range(a.runs))
        dec = statistics.median(_decode_s(births) for _ in range(a.runs))
        rows.append(
            {
                "devices": n,
                "metrics_per_device": a.metrics,
                "rebirth_s": round(host, 3),
                "decode_only_s": round(dec, 3),
                "ratio_to_decode": round(host / dec, 1),
                "per_dbirth_us": round(host / n * 1e6, 1),
            }
        )
    print(json.dumps(rows))
    print("| devices | metrics each | rebirth (s) | decode only (s) | ratio | per DBIRTH (µs) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['devices']} | {r['metrics_per_device']} | {r['rebirth_s']} | {r['decode_only_s']} | "
            f"{r['ratio_to_decode']} | {r['per_dbirth_us']} |"
        )


if __name__ == "__main__":
    main()
