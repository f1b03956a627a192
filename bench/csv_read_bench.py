"""How fast ``cloud-trainer dataset import`` reads a historian CSV (``signals.read_csv``), against the former
reader in the same process (``--former``: a git revision whose ``cloud_trainer/train/signals.py`` is loaded
beside the current one; default 8166e55a's parent, the reader that took the file row by row in Python).

The files: ``--rows`` rows of a time column and ``--channels`` vibration channels, written as a historian
exports them: plain (comma, points), German (semicolon, decimal commas), plain with every value quoted (the
former path, row by row, kept for quoted values which may span lines), plain with a blank line every 1000 rows, and
plain with a delimiter ending every row (a spreadsheet's export). Medians of ``--runs`` reads, each
read's result checked equal to the former reader's.

    .venv/bin/python -m bench.csv_read_bench [--rows 1000000] [--channels 3] [--runs 5] [--former REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def former_reader(rev: str) -> ModuleType:
    """``cloud_trainer/train/signals.py`` at ``rev``, loaded as a module of its own."""
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:cloud_trainer/train/signals.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix="_former_signals.py", delete=False) as fh:
        fh.write(text)
    spec = importlib.util.spec_from_file_location("_former_signals", fh.name)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_former_signals"] = mod
    spec.loader.exec_module(mod)
    Path(fh.name).unlink()
    return mod


def write_csv(path: Path, rows: int, channels: int, kind: str) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(rows) / 25600.0 + 1_700_000_000.0
    x = rng.normal(0, 0.1, (rows, channels))
    sep = ";" if kind == "german" else ","
    names = sep.join(["timestamp", *(f"accel_{i} [g]" for i in range(channels))])
    with path.open("w") as fh:
        fh.write(names + "\n")
        step = 100_000
        for i in range(0, rows, step):
            block = np.column_stack([t[i : i + step], x[i : i + step]])
            lines = [sep.join(f"{v:.6f}" for v in row) for row in block]
            if kind == "german":
                lines = [ln.replace(".", ",") for ln in lines]
            elif kind == "quoted":
                lines = [",".join(f'"{c}"' for c in ln.split(",")) for ln in lines]
            elif kind == "blanks":  # a blank line every 1000 rows (a historian's export in parts)
                lines = [ln + "\n" if (i + j) % 1000 == 999 else ln for j, ln in enumerate(lines)]
            elif kind == "trailing":  # every row ends in a delimiter (a spreadsheet's export)
                lines = [ln + "," for ln in lines]
            fh.write("\n".join(lines) + "\n")


def _median_s(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--former", default="8166e55a~1")
    args = ap.parse_args()
    from cloud_trainer.train import signals

    former = former_reader(args.former)
    from bench._machine import machine, machine_line

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("plain", "german", "quoted", "blanks", "trailing"):
            path = Path(tmp) / f"{kind}.csv"
            write_csv(path, args.rows, args.channels, kind)
            old_s, old = _median_s(lambda p=path: former.read_csv(p, None), args.runs)
            new_s, new = _median_s(lambda p=path: signals.read_csv(p, None), args.runs)
            assert old.rate_hz == new.rate_hz and list(old.channels) == list(new.channels)  # type: ignore[attr-defined]
            for k in old.channels:  # type: ignore[attr-defined]
                assert np.array_equal(old.channels[k], new.channels[k])  # type: ignore[attr-defined]
            results.append(
                {
                    "kind": kind,
                    "bytes": path.stat().st_size,
                    "former_cpu_s": round(old_s, 3),
                    "cpu_s": round(new_s, 3),
                    "former_over_now": round(old_s / new_s, 2),
                }
            )
    out = {
        "machine": machine(),
        "rows": args.rows,
        "channels": args.channels,
        "runs": args.runs,
        "files": results,
    }
    print(json.dumps(out))
    print(machine_line())
    print(
        f"| file ({args.rows} rows, {args.channels} channels) | MB | former reader CPU s | now CPU s | former / now |"
    )
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['kind']} | {r['bytes'] / 1e6:.0f} | {r['former_cpu_s']:.2f} | {r['cpu_s']:.2f} | "
            f"{r['former_over_now']:.2f} |"
        )


if __name__ == "__main__":
    main()
