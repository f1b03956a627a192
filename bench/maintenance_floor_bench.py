"""The maintenance baseline's floors of a commissioning window: one Hann transform shared by ``spectral_floor``
and ``octave_floors`` (``hann_spectrum``) against the former two (each its own transform and Hann window), in the
same run on the same windows (tests/support/rotor_signals.py machines), and a whole learning window
(``Baseline.process``) for scale. Medians of ``--repeat`` rounds; CPU time of one thread.

    python -m bench.maintenance_floor_bench [--repeat 9] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from bench._machine import machine, machine_line
from edge_agent.maintenance.baseline import (
    _OCTAVE_EDGES,
    Baseline,
    hann_spectrum,
    octave_floors,
    spectral_floor,
)
from edge_agent.maintenance.settings import BaselineSettings
from tests.support.rotor_signals import rotor


def former(w: np.ndarray) -> tuple[float, list[float]]:
    """The two floors as computed before (two transforms, two Hann windows)."""
    c = w - w.mean()
    floor = math.log(float(np.median(np.abs(np.fft.rfft(c * np.hanning(c.size)))[1:])) + 1e-12)
    mag = np.abs(np.fft.rfft(c * np.hanning(c.size)))
    k = [round(e * c.size) for e in _OCTAVE_EDGES]
    return floor, [math.log(float(np.median(mag[a:b])) + 1e-300) for a, b in zip(k[:-1], k[1:], strict=True)]


def shared(w: np.ndarray) -> tuple[float, list[float] | None]:
    mag = hann_spectrum(w)
    return spectral_floor(w, mag), octave_floors(w, mag)


def per_window_us(fn, ws: list[np.ndarray], repeat: int) -> float:
    rounds = []
    for _ in range(repeat):
        t = time.thread_time()
        for w in ws:
            fn(w)
        rounds.append((time.thread_time() - t) / len(ws) * 1e6)
    return float(np.median(rounds))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    a = ap.parse_args()
    print(machine_line())
    rows = []
    for n in (2048, 16384):
        rng = np.random.default_rng(0)
        ws = [rotor(rng, n=n) for _ in range(50)]
        for w in ws:  # the same numbers
            f0, o0 = former(w)
            f1, o1 = shared(w)
            assert f0 == f1 and o0 == o1
        b = Baseline(BaselineSettings(windows=10_000, units="g", speed_tag="Speed"), 10000.0, n)
        whole = per_window_us(
            lambda w, b=b: b.process(w, {"_shaft_speed": 1476.0}), ws, max(3, a.repeat // 3)
        )
        t_former = per_window_us(former, ws, a.repeat)
        t_shared = per_window_us(shared, ws, a.repeat)
        rows.append(
            {
                "samples": n,
                "former_us": round(t_former, 1),
                "shared_us": round(t_shared, 1),
                "ratio": round(t_shared / t_former, 3),
                "learning_window_us": round(whole, 1),
            }
        )
        print(json.dumps(rows[-1]))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "maintenance_floor_bench.json").write_text(
        json.dumps({"machine": machine(), "rows": rows}, indent=1)
    )
    md = [
        machine_line(),
        "",
        "| samples | two transforms (us) | one shared (us) | ratio | a learning window (us) |",
    ]
    md.append("| --- | --- | --- | --- | --- |")
    md += [
        f"| {r['samples']} | {r['former_us']} | {r['shared_us']} | {r['ratio']} | {r['learning_window_us']} |"
        for r in rows
    ]
    (a.out / "maintenance_floor_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
