"""The cloud-trained maintenance model on machines it never saw: band features vs condition features.

Signals come from bench/_bearing_signals.py (independent of simulators/vibration.py: a random bearing
per machine, 600-3,600 rpm, random resonances, mains hum, a neighbour's tone, knocks, sensor gain).
``cloud_trainer.train.maintenance.train`` learns on some machines (one run per fault each, severity
0 -> 1, plus a healthy run); the model is then scored on *other* machines, at site noise x1 and x2:

- fault-type accuracy over healthy windows and faulty windows past 30 % severity;
- anomaly AUROC (the autoencoder's score), healthy vs faulty past 30 % severity.

Both feature sets (``--signal-features bands`` and ``condition``; no bearing geometry, speed
estimated from the spectrum: a fleet of mixed machines) train on the same windows in the same run.

    python -m bench.maintenance_features_bench [--train-machines 10] [--test-machines 6] [--quick] [--out bench/out]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench._bearing_signals import FAULTS, Machine
from cloud_trainer.train import common, maintenance
from cloud_trainer.train.data import VibrationData


def windows(seeds: list[int], noise: float, n_healthy: int, n_fault: int) -> dict:
    """Per machine: a healthy run and one run per fault with severity rising 0 -> 1."""
    w, fault, sev, run = [], [], [], []
    for k, seed in enumerate(seeds):
        m = Machine(seed, noise=noise)
        for j, f in enumerate(FAULTS):
            n = n_healthy if f == "healthy" else n_fault
            for s in np.zeros(n) if f == "healthy" else np.linspace(0, 1, n):
                w.append(m.window(float(s), f))
                fault.append(j)
                sev.append(float(s))
                run.append(k * len(FAULTS) + j)
    return {
        "w": np.asarray(w, np.float32),
        "fault": np.asarray(fault),
        "sev": np.asarray(sev),
        "run": np.asarray(run),
    }


def as_dataset(d: dict) -> VibrationData:
    health = np.where(d["fault"] == 0, 1.0, 1.0 - 0.5 * d["sev"]).astype(np.float32)
    n = len(d["fault"])
    return VibrationData(
        d["w"],
        d["fault"],
        health,
        np.full(n, np.nan),
        d["run"],
        np.zeros(n),
        d["w"].shape[1],
        10000.0,
        "bench",
    )


def score(model, pre, d: dict) -> dict:
    import torch

    x = maintenance.features(d["w"], pre)
    with torch.no_grad():
        a, logits, _ = model.eval()(torch.from_numpy(x))
    a, pred = a.numpy().reshape(-1), logits.numpy().argmax(1)
    counted = (d["fault"] == 0) | (d["sev"] >= 0.3)
    y = d["fault"][counted]
    return {
        "fault_accuracy": float((pred[counted] == y).mean()),
        "anomaly_auroc": float(common.auroc(y != 0, a[counted])),
        "windows": int(counted.sum()),
        "confusion": common.confusion(y, pred[counted], len(FAULTS)).tolist(),
        "labels": FAULTS,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-machines", type=int, default=10)
    ap.add_argument("--test-machines", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    a = ap.parse_args(argv)
    nh, nf = (20, 16) if a.quick else (60, 40)
    train_seeds = list(range(100, 100 + a.train_machines))
    test_seeds = list(range(900, 900 + a.test_machines))
    t0 = time.perf_counter()
    train = as_dataset(windows(train_seeds, 1.0, nh, nf))
    tests = {f"noise x{z:g}": windows(test_seeds, z, nh // 2, nf // 2) for z in (1.0, 2.0)}
    rows, res = [], {}
    for fs in ("bands", "condition"):
        t = time.perf_counter()
        out = maintenance.train(
            train, seed=0, epochs=a.epochs, log=lambda *_: None, threads=2, feature_set=fs
        )
        secs = time.perf_counter() - t
        res[fs] = {"train_seconds": secs, "features": int(out["x"].shape[1])}
        for case, d in tests.items():
            m = score(out["model"], out["pre"], d)
            res[fs][case] = m
            rows.append(
                f"| {fs} | {case} | {m['fault_accuracy']:.3f} | {m['anomaly_auroc']:.3f} | {m['windows']} |"
            )
    from bench._machine import machine, machine_line

    report = {
        "bench": "maintenance_features",
        "machine": machine(),
        "train_machines": train_seeds,
        "test_machines": test_seeds,
        "windows_train": int(len(train.fault)),
        "results": res,
        "seconds": time.perf_counter() - t0,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "maintenance_features.json").write_text(json.dumps(report, indent=1))
    md = [
        "| features | held-out machines | fault-type accuracy | anomaly AUROC | windows |",
        "|---|---|---:|---:|---:|",
        *rows,
    ]
    for case in tests:
        b, c = res["bands"][case], res["condition"][case]
        md.append(
            f"| condition / bands | {case} | {c['fault_accuracy'] / max(b['fault_accuracy'], 1e-9):.2f}x | "
            f"{c['anomaly_auroc'] / max(b['anomaly_auroc'], 1e-9):.2f}x | |"
        )
    md += ["", machine_line()]
    (a.out / "maintenance_features.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return report


if __name__ == "__main__":
    main()
