"""The console's withdrawal marks per ``/api/agents`` (or ``/api/deployments``) answer, against the former read in
the same run.

``Console.withdrawals`` is asked, at each answer, the withdrawal of every agent slot's (package, version); each
package's ``Registry.withdrawals`` once per answer. Former: the package's ``index.json`` read and parsed at every
answer (here: the shared cache emptied before each answer, which is what the former code did). Current: read again
only once the file changed (a stat per package per answer). One package of ``--versions`` entries (each like a
published one, ~500 bytes), one of them withdrawn, ``--slots`` agent slots on it; medians of ``--answers``.

    .venv/bin/python -m bench.console_withdrawals_bench [--versions 200 20000] [--slots 100] [--answers 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

OUT = Path(__file__).resolve().parent / "out"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _registry(root: Path, versions: int):
    from cloud_trainer.registry import WITHDRAWN, Registry

    reg = Registry(root)
    entries = [
        {
            "name": "part-inspection",
            "version": f"1.{i // 1000}.{i % 1000}",
            "status": WITHDRAWN if i == 0 else "published",
            "withdrawn_reason": "false rejects at night" if i == 0 else None,
            "digest": f"{i:064x}",
            "package": f"part-inspection-1.{i // 1000}.{i % 1000}.edgepkg",
            "metrics": {"accuracy": 0.97, "f1": 0.96, "auroc": 0.99},
            "dataset_digest": f"{i + 7:064x}",
            "published": 1_800_000_000.0 + i,
            "reports": ["evaluation.json", "calibration.json"],
        }
        for i in range(versions)
    ]
    (root / "part-inspection").mkdir(parents=True, exist_ok=True)
    (root / "part-inspection" / "index.json").write_text(json.dumps(entries))
    return reg, [e["version"] for e in entries[:: max(1, versions // 100)]]


def _answer(console, versions: list[str], slots: int) -> None:
    from cloud_trainer.fleet.console import Console

    why = Console.withdrawals(console, "default")
    marked = sum(1 for i in range(slots) if why("part-inspection", versions[i % len(versions)]))
    assert marked >= 1


def run(versions: int, slots: int, answers: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        reg, names = _registry(Path(d), versions)
        console = SimpleNamespace(srv=SimpleNamespace(registry=reg))
        out = {}
        for how in ("former", "current"):
            wall, cpu = [], []
            for _ in range(answers):
                if how == "former":
                    reg._withdrawn.clear()  # the index read at every answer, as before
                t0, c0 = time.perf_counter(), time.thread_time()
                _answer(console, names, slots)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
            out[how] = {"wall_ms": statistics.median(wall) * 1e3, "cpu_ms": statistics.median(cpu) * 1e3}
        size = (Path(d) / "part-inspection" / "index.json").stat().st_size
    return {"versions": versions, "index_bytes": size, "slots": slots, **out}


def main() -> None:
    from bench._machine import machine, machine_line

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", type=int, nargs="+", default=[200, 20000])
    ap.add_argument("--slots", type=int, default=100)
    ap.add_argument("--answers", type=int, default=9)
    a = ap.parse_args()
    rows = [run(v, a.slots, a.answers) for v in a.versions]
    lines = [
        "| versions | index | former: read each answer (ms wall / CPU) | current: read once changed (ms wall / CPU) "
        "| current / former (CPU) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        f, c = r["former"], r["current"]
        lines.append(
            f"| {r['versions']} | {r['index_bytes'] / 1e6:.2f} MB | {f['wall_ms']:.2f} / {f['cpu_ms']:.2f} | "
            f"{c['wall_ms']:.3f} / {c['cpu_ms']:.3f} | {c['cpu_ms'] / f['cpu_ms']:.4f} |"
        )
    lines.append(machine_line())
    md = "\n".join(lines)
    print(md)
    OUT.mkdir(exist_ok=True)
    (OUT / "console_withdrawals_bench.json").write_text(
        json.dumps({"machine": machine(), "rows": rows}, indent=1)
    )
    (OUT / "console_withdrawals_bench.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
