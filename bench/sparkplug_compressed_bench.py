"""Sparkplug B payloads compressed as Eclipse Tahu's nodes send them: what reading one costs the host, and
what a "zip bomb" costs it.

A birth of ``--metrics`` metrics (Doubles and Int32s, names as an Ignition node's folders give them) is
handed to ``SparkplugHost.handle`` plain (the baseline), DEFLATE- and GZIP-compressed (Tahu's wrapper:
uuid ``SPBV1.0_COMPRESSED``, the payload in ``body``), alternated, ``--runs`` times each; medians. Then a
wrapper whose body of zeros inflates to ``--bomb-mib`` MiB is handed over with the default bound (8 MiB,
``max_message_bytes``): the time to refuse it and the peak of memory traced meanwhile, against inflating the
same body unbounded (what a host without the bound would do before decoding).

    nice -n 10 .venv/bin/python -m bench.sparkplug_compressed_bench [--metrics 10000 --runs 15]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
import tracemalloc
import zlib
from pathlib import Path

from devices.mqtt.settings import SparkplugHostSettings
from devices.mqtt.sparkplug_host import SparkplugHost
from protocols import sparkplug as sp
from protocols.json_codec import CodecError

OUT = Path(__file__).resolve().parent / "out"
D = sp.DataType


def _birth(n: int) -> bytes:
    pb = sp._pb().Payload()
    pb.timestamp, pb.seq = int(time.time() * 1000), 0
    m = pb.metrics.add()
    m.name, m.datatype, m.long_value = "bdSeq", D.INT64, 0
    for i in range(n):
        m = pb.metrics.add()
        m.name, m.alias = f"Line1/Cell{i // 10}/Sensor{i % 10}", i + 1
        if i % 2:
            m.datatype, m.int_value = D.INT32, i
        else:
            m.datatype, m.double_value = D.DOUBLE, 20.0 + i / 100
    return pb.SerializeToString()


def _wrapped(body: bytes, algorithm: str) -> bytes:
    pb = sp._pb().Payload()
    pb.uuid, pb.body, pb.seq = sp.COMPRESSED_UUID, body, 0
    m = pb.metrics.add()
    m.name, m.datatype, m.string_value = "algorithm", D.STRING, algorithm
    return pb.SerializeToString()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--metrics", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--bomb-mib", type=int, default=256)
    a = ap.parse_args()
    from bench._machine import machine, machine_line

    raw = _birth(a.metrics)
    kinds = {
        "plain": raw,
        "DEFLATE": _wrapped(zlib.compress(raw), "DEFLATE"),
        "GZIP": _wrapped(gzip.compress(raw), "GZIP"),
    }
    # no inflate budget here (max_inflated_bytes_per_s): what one message costs, not what a flood may take
    host = SparkplugHost(
        "b", SparkplugHostSettings(max_inflated_bytes_per_s=1 << 50), lambda t, b: None, lambda r, d: None
    )
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(a.runs):
        for k, data in kinds.items():  # alternated
            t0 = time.perf_counter()
            n = len(host.handle("spBv1.0/g/NBIRTH/n", data, time.time()))
            times[k].append(time.perf_counter() - t0)
            assert n == a.metrics, (k, n)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}

    bomb = _wrapped(zlib.compress(b"\0" * (a.bomb_mib << 20), 9), "DEFLATE")
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        host.handle("spBv1.0/g/NDATA/n", bomb, time.time())
        refused = ""
    except CodecError as e:
        refused = e.reason
    bounded_s = time.perf_counter() - t0
    bounded_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    whole = len(zlib.decompress(sp._pb().Payload.FromString(bomb).body))
    unbounded_s = time.perf_counter() - t0
    unbounded_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    lines = [
        f"### A Sparkplug NBIRTH of {a.metrics} metrics, plain and compressed as Tahu's nodes send it "
        f"({a.runs} runs each, alternated, medians of SparkplugHost.handle)",
        "",
        "| payload | bytes | handle ms | vs plain |",
        "|---|---|---|---|",
    ]
    for k, data in kinds.items():
        lines.append(f"| {k} | {len(data)} | {med[k]:.1f} | {med[k] / med['plain']:.2f}x |")
    lines += [
        "",
        f"A body of {len(bomb)} bytes inflating to {whole >> 20} MiB (zeros), max_message_bytes 8 MiB:",
        "",
        "| host | outcome | ms | traced peak MiB |",
        "|---|---|---|---|",
        f"| bounded (this host) | {refused or 'read'} | {bounded_s * 1000:.1f} | {bounded_peak / 2**20:.1f} |",
        f"| inflated whole (no bound) | {whole >> 20} MiB held | {unbounded_s * 1000:.1f} | "
        f"{unbounded_peak / 2**20:.1f} |",
        "",
        machine_line(),
    ]
    md = "\n".join(lines) + "\n"
    print(md)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sparkplug_compressed_bench.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "median_ms": med,
                "bytes": {k: len(v) for k, v in kinds.items()},
                "runs_s": times,
                "bomb": {
                    "body_bytes": len(bomb),
                    "inflated_bytes": whole,
                    "refused": refused,
                    "bounded_s": bounded_s,
                    "bounded_peak_bytes": bounded_peak,
                    "unbounded_s": unbounded_s,
                    "unbounded_peak_bytes": unbounded_peak,
                },
            },
            indent=1,
        )
    )
    (OUT / "sparkplug_compressed_bench.md").write_text(md)


if __name__ == "__main__":
    main()
