"""machine-health's INT8 form against its FP32 form on windows it never saw, and the bounds its package
states: the trainer's former rule (3x the deviation on 32 golden items taken class by class) against
the current one (INT8 judged on every held-out item, bounds from the whole split), one training.

Built as the demo builds it (``edge-sim dataset vibration --runs 20 --windows-per-run 50 --seed 0``,
``cloud-trainer build maintenance`` defaults: 200 epochs with early stopping, 200 calibration windows);
"other machines" are windows of another simulator run (``--seed 11``), preprocessed from their
waveforms as the agent does. Per set: INT8's largest deviation from FP32 per output and the share of
items whose decisions (fault class, verdict at the threshold) agree, against the former bounds and
the current limits, and the served form each rule gives::

    .venv/bin/python -m bench.trainer_int8_parity_bench [--runs 20 --windows 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    from bench._machine import machine, machine_line
    from cloud_trainer.train import maintenance, onnx_tools
    from cloud_trainer.train.data import load_vibration
    from cloud_trainer.train.families import load_family
    from cloud_trainer.train.pipeline import (
        GOLDEN_ATOL,
        BuildSettings,
        _golden_rows,
        _output_specs,
        stage_evaluate,
        stage_package,
        stage_quantize,
        stage_train,
    )
    from model_packager import load_trusted_keys, open_package
    from model_packager.cpu import cpu_flags
    from model_packager.golden import output_parity
    from model_packager.manifest import SignalPreprocessing
    from model_packager.package import PARITY_HEADROOM
    from simulators.vibration import write_dataset
    from tests.support.models import make_keypair

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--windows", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("bench/out/trainer_int8_parity.json"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    ds = write_dataset(tmp / "ds", n_runs=a.runs, windows_per_run=a.windows, seed=0)
    live = load_vibration(write_dataset(tmp / "live", n_runs=10, windows_per_run=20, seed=11))
    key, pub = make_keypair(tmp / "keys")
    s = BuildSettings(
        family="maintenance", dataset=ds, registry=tmp / "reg", signing_key=key, workdir=tmp / "w", epochs=200
    )
    q = lambda m: None  # noqa: E731
    meta = stage_train(s, q)
    stage_quantize(s, q)
    rep = stage_evaluate(s, q)
    pkg = stage_package(s, q)
    m = open_package(pkg, tmp / "open", load_trusted_keys([pub])).manifest
    pre = m.preprocessing
    assert isinstance(pre, SignalPreprocessing)  # a maintenance package
    with np.load(s.workdir / "train.npz") as z:
        x, y, te = z["x"], z["y"], z["test"]
    fp32, int8 = s.workdir / "model.fp32.onnx", s.workdir / "model.int8.onnx"
    specs = _output_specs(load_family("maintenance"), meta, x.shape[1], rep["threshold"])
    # the former rule: golden = the split's first rows class by class; bounds = 3x their deviation (floors
    # as model_packager's _parity_bounds), min_agreement = the golden items' agreement
    g = x[_golden_rows(y, te)]
    g_ref = onnx_tools.run(fp32, g)
    gdev, gagree = output_parity(specs, g_ref, onnx_tools.run(int8, g))
    former = {
        k: max(PARITY_HEADROOM * d, 0.01 * float(np.abs(g_ref[k]).max()), GOLDEN_ATOL)
        for k, d in gdev.items()
    }
    rows: list[dict[str, Any]] = []
    xl = maintenance.features(live.waveforms, pre, live.speed_rpm)
    for name, xs in (("held-out split", x[te]), ("other machines", xl)):
        dev, agree = output_parity(specs, onnx_tools.run(fp32, xs), onnx_tools.run(int8, xs))
        rows.append({"set": name, "items": len(xs), "deviation": dev, "agreement": agree})
    lim = rep["int8_parity"]["limits"]
    flags = " ".join(cpu_flags())
    print(machine_line())
    print(f"CPU flags: {flags}; threshold {rep['threshold']:.4g}; served: former int8, now {rep['served']}")
    outs = list(gdev)
    print("| set | items | decisions agree | " + " | ".join(f"INT8 {k} deviation" for k in outs) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(outs))
    for r in rows:
        devs = " | ".join(f"{r['deviation'][k]:.3g}" for k in outs)
        print(f"| {r['set']} | {r['items']} | {r['agreement']:.1%} | {devs} |")
    print(
        f"| former bounds (32 golden items) | 32 | {gagree:.1%} | "
        + " | ".join(f"{former[k]:.3g}" for k in outs)
        + " |"
    )
    print(
        f"| current limits (every held-out item) | {rep['int8_parity']['items']} | {lim['min_agreement']:.1%} | "
        + " | ".join(f"{lim['output_atol'][k]:.3g}" for k in outs)
        + " |"
    )
    sp = rep["latency_batch1"]
    print(
        "latency (ms, fp32/int8): "
        + ", ".join(f"{k} {v['fp32_ms']:.4f}/{v['int8_ms']:.4f}" for k, v in sp.items())
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {
                "cpu_flags": flags,
                "machine": machine(),
                "rows": rows,
                "former_bounds": former,
                "limits": lim,
                "served": rep["served"],
                "served_why": rep["served_why"],
                "latency": sp,
            },
            indent=1,
            default=float,
        )
    )


if __name__ == "__main__":
    main()
