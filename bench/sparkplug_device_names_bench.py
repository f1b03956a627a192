"""Sparkplug device names: the memory the host's tables hold per device name (``_Node.devices``, ``named``,
``named_before``, ``expected``, counted together under ``MAX_TOTAL_DEVICES``), against a bare ``set`` of the same
names (the baseline: what the names themselves cost), and the host's total at the bound. Nodes of devices without
metrics (not held by ``MAX_TOTAL_METRICS``): each device born (DBIRTH) then said dead (DDEATH) under a new name, then
each node reborn (``named`` kept as ``named_before``, its devices again); measured by ``tracemalloc`` in this
process, medians of ``--runs``.

    .venv/bin/python -m bench.sparkplug_device_names_bench [--nodes 20] [--devices 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc
from pathlib import Path

from bench._machine import machine, machine_line
from devices.mqtt import sparkplug_host
from devices.mqtt.settings import SparkplugHostSettings
from protocols import sparkplug as sp

OUT = Path(__file__).resolve().parent / "out"
D = sp.DataType


def _payload(seq: int, bd: int | None = None) -> bytes:
    metrics = [] if bd is None else [sp.Metric("bdSeq", None, D.INT64, bd)]
    return sp.encode(sp.Payload(int(time.time() * 1000), seq % 256, metrics))


def _host() -> sparkplug_host.SparkplugHost:
    return sparkplug_host.SparkplugHost(
        "bench", SparkplugHostSettings(rebirth_on_unknown=False), lambda t, b: None, lambda r, d: None
    )


def _fill(host: sparkplug_host.SparkplugHost, nodes: int, devices: int) -> None:
    now = time.time()
    for n in range(nodes):
        host.handle(f"spBv1.0/g/NBIRTH/n{n}", _payload(0, 0), now)
        seq = 0
        for d in range(devices):  # born and dead under ever new names: dead names kept until the next birth
            seq += 1
            host.handle(f"spBv1.0/g/DBIRTH/n{n}/dev-{n:05d}-{d:06d}", _payload(seq), now)
            if d % 2:
                seq += 1
                host.handle(f"spBv1.0/g/DDEATH/n{n}/dev-{n:05d}-{d:06d}", _payload(seq), now)
        host.handle(f"spBv1.0/g/NBIRTH/n{n}", _payload(0, 0), now)  # a rebirth: named kept as named_before
        seq = 0
        for d in range(0, devices, 2):  # half of them born again
            seq += 1
            host.handle(f"spBv1.0/g/DBIRTH/n{n}/dev-{n:05d}-{d:06d}", _payload(seq), now)


def _measure(nodes: int, devices: int) -> dict:
    names = [f"dev-{n:05d}-{d:06d}" for n in range(nodes) for d in range(devices)]
    _fill(_host(), 1, 4)  # the protobuf runtime imported and warm: not counted as the tables'
    gc.collect()
    tracemalloc.start()
    base0 = tracemalloc.get_traced_memory()[0]
    bare = set(f"{s}" + "" for s in names)  # fresh str objects, as topics parse into
    bare_bytes = tracemalloc.get_traced_memory()[0] - base0
    del bare
    gc.collect()
    host = _host()
    gc.collect()
    h0 = tracemalloc.get_traced_memory()[0]
    _fill(host, nodes, devices)
    gc.collect()
    host_bytes = tracemalloc.get_traced_memory()[0] - h0
    tracemalloc.stop()
    held = host._names
    assert held == sum(n.names_held for n in host._nodes.values())
    return {
        "names": len(names),
        "entries_counted": held,
        "bare_set_bytes": bare_bytes,
        "host_bytes": host_bytes,
        "bytes_per_name": host_bytes / len(names),
        "bytes_per_entry": host_bytes / held,
        "bare_bytes_per_name": bare_bytes / len(names),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    print(machine_line())
    runs = [_measure(a.nodes, a.devices) for _ in range(a.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    at_bound = med["bytes_per_entry"] * sparkplug_host.MAX_TOTAL_DEVICES
    unbounded = med["bytes_per_name"] * sparkplug_host.MAX_NODES * sparkplug_host.MAX_NODE_DEVICES
    result = {
        "machine": machine(),
        "nodes": a.nodes,
        "devices_per_node": a.devices,
        "runs": runs,
        "median": med,
        "ratio_host_to_bare_set": med["host_bytes"] / med["bare_set_bytes"],
        "max_total_devices": sparkplug_host.MAX_TOTAL_DEVICES,
        "bytes_at_bound": at_bound,
        "bytes_unbounded_max_nodes_x_max_node_devices": unbounded,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "sparkplug_device_names_bench.json").write_text(json.dumps(result, indent=2))
    md = [
        machine_line(),
        "",
        "| names | entries counted | host bytes/name | bytes/entry | bare set bytes/name | host / bare set |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {med['names']:.0f} | {med['entries_counted']:.0f} | {med['bytes_per_name']:.0f} | "
        f"{med['bytes_per_entry']:.0f} | {med['bare_bytes_per_name']:.0f} | "
        f"x{result['ratio_host_to_bare_set']:.2f} |",
        "",
        f"At MAX_TOTAL_DEVICES ({sparkplug_host.MAX_TOTAL_DEVICES:,} entries): about {at_bound / 2**20:.0f} MiB; "
        f"unbounded (MAX_NODES x MAX_NODE_DEVICES names): about {unbounded / 2**30:.1f} GiB.",
    ]
    (OUT / "sparkplug_device_names_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
