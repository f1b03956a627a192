"""A flood of valid Sparkplug NBIRTHs under made-up edge node names (a client on the plant's shared broker) once the
host's node table is full, and the NDATA flood of never-born names beside it: the cost of ``SparkplugHost.handle``
a message on the agent's loop, now and with the former host (``devices/mqtt/sparkplug_host.py`` at ``--former``,
read from git), in the same run.

The former host refused every new name once born nodes filled the table (``too_many_nodes``: a real node born
later was refused too); now a new birth takes the place of the least recently heard born node that sent births
only (``born_nodes_forgotten``), so each birth of the flood is read, filed and the made-up node it replaces
forgotten. The real node's data beside the flood is timed too: what the line's own messages cost meanwhile.
Table of ``MAX_NODES`` (10,000), rebirths off, best of ``--runs``.

    nice -n 10 .venv/bin/python -m bench.sparkplug_birth_flood_bench [--runs 3] [--messages 20000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from devices.mqtt import sparkplug_host
from devices.mqtt.settings import SparkplugHostSettings
from protocols import sparkplug as sp

D = sp.DataType
FORMER = "b073e9f"  # the last commit before births of made-up names could take a born node's place


def _former(commit: str) -> ModuleType:
    root = Path(__file__).resolve().parent.parent
    text = subprocess.run(
        ["git", "show", f"{commit}:devices/mqtt/sparkplug_host.py"], cwd=root, check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "sparkplug_host_former.py"
    path.write_bytes(text)
    spec = importlib.util.spec_from_file_location("sparkplug_host_former", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _run(mod: ModuleType, kind: str, messages: int) -> tuple[float, float]:
    """(µs per flood message, µs per real node's NDATA meanwhile)."""
    host = mod.SparkplugHost(
        "b", SparkplugHostSettings(rebirth_on_unknown=False), lambda t, b: None, lambda r, d: None
    )
    now = int(time.time() * 1000)
    birth = sp.encode(
        sp.Payload(now, 0, [sp.Metric("bdSeq", None, D.INT64, 0), sp.Metric("Temp", None, D.DOUBLE, 1.0)])
    )
    data = sp.encode(sp.Payload(now, 1, [sp.Metric("Temp", None, D.DOUBLE, 2.0)]))
    host.handle("spBv1.0/g/NBIRTH/real", birth, 0.0)
    host.handle("spBv1.0/g/NDATA/real", data, 0.0)  # it speaks: kept whatever the flood
    flood = birth if kind == "NBIRTH" else data
    n = 0
    for _ in range(2 * mod.MAX_NODES):  # the table full of made-up names
        host.handle(f"spBv1.0/g/{kind}/junk{n}", flood, 0.0)
        n += 1
    real_s, real_n, seq = 0.0, 0, 2
    began = time.perf_counter()
    for i in range(messages):
        host.handle(f"spBv1.0/g/{kind}/junk{n}", flood, 0.0)
        n += 1
        if i % 100 == 0:  # the real node speaks once per 100 flood messages
            d = sp.encode(sp.Payload(now, seq, [sp.Metric("Temp", None, D.DOUBLE, 3.0)]))
            seq = (seq + 1) % 256
            t0 = time.perf_counter()
            got = host.handle("spBv1.0/g/NDATA/real", d, 0.0)
            real_s += time.perf_counter() - t0
            real_n += 1
            assert [r.value for r in got] == [3.0]
    total = time.perf_counter() - began - real_s
    return total / messages * 1e6, real_s / real_n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--former", default=FORMER)
    a = ap.parse_args()
    from bench._machine import machine_line

    print(machine_line(), flush=True)
    former = _former(a.former)
    rows = []
    for kind in ("NBIRTH", "NDATA"):
        runs_now = [_run(sparkplug_host, kind, a.messages) for _ in range(a.runs)]
        runs_was = [_run(former, kind, a.messages) for _ in range(a.runs)]
        # best of the runs, each column on its own (a collection of the full table's garbage lands in one)
        now = (min(r[0] for r in runs_now), min(r[1] for r in runs_now))
        was = (min(r[0] for r in runs_was), min(r[1] for r in runs_was))
        rows.append(
            {
                "flood": kind,
                "now_us": now[0],
                "former_us": was[0],
                "ratio": now[0] / was[0],
                "real_now_us": now[1],
                "real_former_us": was[1],
            }
        )
    print(json.dumps(rows))
    print(
        "| flood of made-up names (table of 10,000 full) | now (µs/msg) | former (µs/msg) | now / former "
        "| real node's NDATA meanwhile, now / former (µs) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['flood']} | {r['now_us']:.1f} | {r['former_us']:.1f} | {r['ratio']:.2f} "
            f"| {r['real_now_us']:.1f} / {r['real_former_us']:.1f} |"
        )


if __name__ == "__main__":
    main()
