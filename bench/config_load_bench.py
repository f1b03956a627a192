"""How long a float-heavy agent config takes to load (``edge_agent.config.read_yaml``, then ``load_config``),
against libyaml's bare safe load of the same text in the same run (the baseline: what any YAML reading costs).

The config: ``--actions`` opcua_write actions, each writing a list of ``--floats`` floats (recipe arrays), one
of them holding a whole number a float does not hold (``9.007199254740993e+15``, kept exact for an integer
node), as a site's recipe download config does. Medians of ``--runs`` loads.

    .venv/bin/python -m bench.config_load_bench [--actions 400] [--floats 60] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml


def make_config(actions: int, floats: int) -> str:
    lines = [
        "agent: {id: gw}",
        "sources:",
        "  plc: {type: opcua, endpoint: 'opc.tcp://127.0.0.1:4840/'}",
        "actions:",
    ]
    for a in range(actions):
        values = ", ".join(f"{(a * floats + i) * 0.125 + 0.5}" for i in range(floats))
        if a == 0:
            values = "9.007199254740993e+15, " + values
        lines.append(
            f"  out{a}: {{type: opcua_write, source: plc, node_id: 'ns=2;s=R{a}', value: [{values}]}}"
        )
    return "\n".join(lines) + "\n"


def _median_s(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--actions", type=int, default=400)
    ap.add_argument("--floats", type=int, default=60)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from edge_agent.config import load_config, read_yaml

    text = make_config(args.actions, args.floats)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "line.yaml"
        path.write_text(text)
        bare = _median_s(lambda: yaml.load(text, Loader=yaml.CSafeLoader), args.runs)
        read = _median_s(lambda: read_yaml(text, str(path)), args.runs)
        whole = _median_s(lambda: load_config(path), args.runs)
    from bench._machine import machine, machine_line

    out = {
        "machine": machine(),
        "floats": args.actions * args.floats + 1,
        "bytes": len(text.encode()),
        "bare_safe_load_s": round(bare, 4),
        "read_yaml_s": round(read, 4),
        "load_config_s": round(whole, 4),
        "read_yaml_vs_bare": round(read / bare, 2),
    }
    print(json.dumps(out))
    print(machine_line())
    print("| floats | bytes | bare libyaml load | read_yaml | load_config | read_yaml / bare |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| {out['floats']} | {out['bytes']} | {bare * 1000:.0f} ms | {read * 1000:.0f} ms | "
        f"{whole * 1000:.0f} ms | {out['read_yaml_vs_bare']}x |"
    )


if __name__ == "__main__":
    main()
