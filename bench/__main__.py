"""Run every benchmark and assemble ``bench/RESULTS.md``.

    python -m bench                 # all benches, then RESULTS.md
    python -m bench mqtt_bench ...  # only these
    python -m bench --assemble      # only rebuild RESULTS.md from bench/out/*.md

Each ``bench/<name>.py`` runs as ``python -m bench.<name>`` in its own process (so one bench's
imports and threads do not colour another's), writes ``bench/out/<name>.json`` and ``.md``.
RESULTS.md records the machine it was assembled on, and every bench's own section the machine it ran on
(``bench/_machine.py``); medians and ratios come from the benches themselves.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

from bench._machine import machine_line

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


def benches() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem != "common")


def assemble() -> Path:
    parts = [
        "# Benchmark results",
        "",
        machine_line(),
        f"Assembled: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} by `python -m bench`.",
        "Every figure is a median over repeated runs; every ratio is against a baseline measured in",
        "the same run (see each section). Absolute times on these shared machines vary by ~30%.",
        "",
    ]
    for md in sorted(OUT.glob("*.md")):
        parts += [md.read_text().strip(), ""]
    path = HERE / "RESULTS.md"
    path.write_text("\n".join(parts) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--assemble" not in argv:
        chosen = argv or benches()
        failed = []
        for name in chosen:
            print(f"== bench.{name}", flush=True)
            rc = subprocess.call([sys.executable, "-m", f"bench.{name}"], cwd=HERE.parent)
            if rc:
                failed.append(name)
        if failed:
            print(f"failed: {', '.join(failed)}", file=sys.stderr)
    print(f"wrote {assemble()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
