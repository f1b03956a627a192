"""A flood of made-up Sparkplug edge node names (NDATA, never born) once the host's node table is full: the cost
of ``SparkplugHost.handle`` a message, each new name taking the place of the least recently heard spare one.

The spare and dead lines (``SparkplugHost._spare``, ``_dead``) are OrderedDicts; the baseline, in the same run, is
the same host with plain dicts in their place, as the node table's first version had them: a dict whose front is
popped at every message keeps the holes until it grows again, and ``next(iter())`` walks over them, so its cost a
message grew with the table. Tables of 1,000 and 10,000 (``MAX_NODES``), rebirths off (asks are held to
``rebirth_max_per_s`` and would be the same in both), best of ``--runs``.

    nice -n 10 .venv/bin/python -m bench.sparkplug_node_table_bench [--runs 3] [--messages 60000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import OrderedDict

from devices.mqtt import sparkplug_host
from devices.mqtt.settings import SparkplugHostSettings
from protocols import sparkplug as sp

D = sp.DataType


def _per_message_us(table: int, kind: type, messages: int) -> float:
    sparkplug_host.MAX_NODES = table
    host = sparkplug_host.SparkplugHost(
        "b", SparkplugHostSettings(rebirth_on_unknown=False), lambda t, b: None, lambda r, d: None
    )
    host._spare, host._dead = kind(), kind()
    data = sp.encode(sp.Payload(int(time.time() * 1000), 1, [sp.Metric("Temp", None, D.DOUBLE, 1.0)]))
    n = 0
    for _ in range(3 * table):  # the table full, and its lines past their first growth
        host.handle(f"spBv1.0/g/NDATA/junk{n}", data, 0.0)
        n += 1
    began = time.perf_counter()
    for _ in range(messages):
        host.handle(f"spBv1.0/g/NDATA/junk{n}", data, 0.0)
        n += 1
    assert host.nodes_forgotten >= messages
    return (time.perf_counter() - began) / messages * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--messages", type=int, default=60_000)
    a = ap.parse_args()
    from bench._machine import machine_line

    print(machine_line(), flush=True)
    rows = []
    for table in (1_000, 10_000):
        ours = min(_per_message_us(table, OrderedDict, a.messages) for _ in range(a.runs))
        base = min(_per_message_us(table, dict, a.messages) for _ in range(a.runs))
        rows.append({"table": table, "ordereddict_us": ours, "dict_us": base, "ratio": base / ours})
    print(json.dumps(rows))
    print("| node table | OrderedDict (µs/msg) | plain dict, former (µs/msg) | former / now |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['table']:,} | {r['ordereddict_us']:.2f} | {r['dict_us']:.2f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
