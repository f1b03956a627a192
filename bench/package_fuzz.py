"""Fuzzing the package reader at scale: the Hypothesis properties of ``tests/unit/test_package_fuzz.py``
(crafted archive headers, mutated headers of a genuine package, manifests signed by a trusted key) with
10,000 cases each instead of the suite's few hundred. Pass: 0 exceptions other than ``PackageError``,
every case (``verify_package`` + ``read_manifest``) under 1 s.

The baseline is CPython's own ``tarfile`` reading the same kind of input: for comparison the bench also
counts how many of a fixed set of crafted headers make ``tarfile`` raise something other than
``tarfile.TarError`` (what the reader used before issue 16).

    .venv/bin/python -m bench.package_fuzz [--examples 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


def tarfile_baseline() -> dict:
    """How CPython's tarfile fares on the crafted headers of issue 16's table. Read from memory (BytesIO),
    so a claimed 1 TiB ends as TarError here; from a file, tarfile asks for the claimed size at once
    (MemoryError, issue 16), which a shared bench machine should not be made to try."""
    import io
    import tarfile

    from tests.support import tar_craft as tc

    cases = {
        "pax 1 TiB (base-256)": tc.header("p", 1 << 40, b"x", base256_size=True),
        "gnu long name 1 TiB": tc.header("p", 1 << 40, b"L", magic=tc.GNU_MAGIC, base256_size=True),
        "sparse map garbage": tc.pax_entry(tc.pax_record("GNU.sparse.map", "1,x")),
        "sparse numblocks garbage": tc.pax_entry(tc.pax_record("GNU.sparse.numblocks", "zz")),
        "hdrcharset binary": tc.pax_entry(
            tc.pax_record("hdrcharset", "BINARY") + tc.pax_record("path", b"\xff")
        ),
        "pax 16 KiB": tc.pax_entry(b"".join(tc.pax_record("comment", "x" * 1000) for _ in range(16))),
    }
    out = {}
    for name, data in cases.items():
        t0 = time.perf_counter()
        try:
            with tarfile.open(fileobj=io.BytesIO(data + bytes(1024))) as tar:
                tar.getmembers()
            result = "accepted"
        except tarfile.TarError:
            result = "TarError"
        except Exception as exc:  # what the strict reader exists to avoid
            result = type(exc).__name__
        out[name] = {"result": result, "s": round(time.perf_counter() - t0, 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=10_000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        stats_path = Path(tmp) / "stats.json"
        env = {
            **os.environ,
            "PACKAGE_FUZZ_EXAMPLES": str(args.examples),
            "PACKAGE_FUZZ_STATS": str(stats_path),
        }
        t0 = time.perf_counter()
        rc = subprocess.call(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:warnings",
                "-p",
                "no:cacheprovider",
                "--timeout",
                "0",
                "tests/unit/test_package_fuzz.py",
            ],
            cwd=HERE.parent,
            env=env,
        )
        wall = time.perf_counter() - t0
        stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    baseline = tarfile_baseline()
    result = {
        "bench": "package_fuzz",
        "examples_per_property": args.examples,
        "passed": rc == 0,
        "wall_s": wall,
        **stats,
        "tarfile_baseline": baseline,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "package_fuzz.json").write_text(json.dumps(result, indent=2))
    md = [
        "### Package reader fuzzing (Hypothesis)",
        "",
        f"{stats.get('cases', 0)} cases ({args.examples} per property, 3 properties) in {wall:.0f} s: "
        f"{'pass' if rc == 0 else 'FAIL'}; exceptions other than PackageError: {0 if rc == 0 else 'see log'}; "
        f"slowest case {stats.get('max_case_s', 0):.3f} s (budget 1 s).",
        "",
        "| crafted header | CPython 3.11 tarfile | time s |",
        "|---|---|---:|",
    ]
    md += [f"| {k} | {v['result']} | {v['s']} |" for k, v in baseline.items()]
    (OUT / "package_fuzz.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
