"""Per-item cost of a pipeline's watches on its items (``UnsureWatch`` for a frame pipeline's UNSURE share,
``ModelFailureWatch`` for the model's failures), this tree against the pipelines module of a baseline commit, in
the same process, alternating blocks.

Both run on the event loop once per item, between a worker thread's inference and the result's actions. The
baseline's ``UnsureWatch`` summed its window for the share at every item and its ``ModelFailureWatch`` copied and
counted its window at every item; this tree keeps a running count (``KindWindow``). Cases: the usual item (no
UNSURE, no failure: ``unsure.add(None)`` and ``failures.add(None, ...)``), and a model failing on every third item
(an episode under way). The unsure window is the default (``unsure.window``: 200).

    .venv/bin/python -m bench.failure_watch_bench [--base b6cdf995] [--n 20000] [--blocks 9]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from bench._machine import machine, machine_line
from bench.stale_bench import former_module

OUT = Path(__file__).resolve().parent / "out"


def _per_item_us(mod, n: int, fail_every: int, window: int) -> float:
    unsure = mod.UnsureWatch("p", window, 0.5)
    failures = mod.ModelFailureWatch("p", lambda evt: None)
    clock = time.perf_counter
    t = clock()
    for i in range(n):
        failing = fail_every and i % fail_every == 0
        failures.add("engine_error" if failing else None, "vision", "1.0.0", "x")
        unsure.add("blurred: x" if failing else None)
    return (clock() - t) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="b6cdf995")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--blocks", type=int, default=9)
    ap.add_argument("--window", type=int, default=200)
    a = ap.parse_args(argv)
    logging.getLogger("edge_agent").setLevel(logging.ERROR)  # the failures' WARNINGs are not what is timed
    logging.getLogger("former_pipelines").setLevel(logging.ERROR)
    from edge_agent import pipelines

    print(machine_line())
    base = former_module(a.base)
    rows = []
    for case, every in {"usual item": 0, "every 3rd item failing": 3}.items():
        times: dict[str, list[float]] = {"base": [], "this": []}
        for _ in range(a.blocks):
            for name, mod in (("base", base), ("this", pipelines)):
                times[name].append(_per_item_us(mod, a.n, every, a.window))
        b, t = statistics.median(times["base"]), statistics.median(times["this"])
        rows.append({"case": case, "base_us": round(b, 3), "this_us": round(t, 3), "ratio": round(t / b, 3)})
    res = {
        "machine": machine(),
        "base": a.base,
        "n": a.n,
        "blocks": a.blocks,
        "unsure_window": a.window,
        "rows": rows,
    }
    lines = [
        f"Per-item cost of UnsureWatch.add + ModelFailureWatch.add, medians of {a.blocks} blocks of {a.n} items "
        f"(unsure window {a.window}), this tree against {a.base}",
        "",
        "| case | base µs/item | this µs/item | this / base |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {r['case']} | {r['base_us']:.2f} | {r['this_us']:.2f} | {r['ratio']:.2f} |" for r in rows),
        "",
        machine_line(),
    ]
    md = "\n".join(lines)
    print(md)
    OUT.mkdir(exist_ok=True)
    (OUT / "failure_watch_bench.json").write_text(json.dumps(res, indent=2))
    (OUT / "failure_watch_bench.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
