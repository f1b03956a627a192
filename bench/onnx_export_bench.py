"""The trainer's ONNX export: ``onnx_tools.export`` (the TorchScript exporter, checked against the model by
ONNX Runtime at two batch sizes) against the dynamo exporter it falls back to (the former way), in the same
process, alternating, on the vision family's CNN and the maintenance family's net. The first export of each
kind in a process pays its own start-up (the dynamo exporter's is most of its cost), so the first call and
the median of the later ones are both reported.

    .venv/bin/python -m bench.onnx_export_bench [--repeats 3]

Writes bench/out/onnx_export_bench.json and .md."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench._machine import machine, machine_line
from model_packager.cpu import cpu_flags

OUT = Path(__file__).resolve().parent / "out"


def _dynamo(model, example, path: Path, input_name: str, output_names: list[str]) -> None:
    import torch

    from cloud_trainer.train import onnx_tools

    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model,
        (torch.from_numpy(example),),
        str(path),
        dynamo=True,
        external_data=False,
        opset_version=onnx_tools.OPSET,
        input_names=[input_name],
        output_names=output_names,
        dynamic_shapes={onnx_tools._forward_arg(model): {0: batch}},
        verbose=False,
    )


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from cloud_trainer.train import maintenance, onnx_tools, vision

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    load = os.getloadavg()[0]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    models = {
        "vision CNN, 128 px": (
            vision.build_model(6).eval(),
            rng.normal(size=(1, 3, 128, 128)).astype(np.float32),
            "image",
            ["logits", "heat"],
        ),
        "maintenance net, 40 features": (
            maintenance.build_model(40, 5).eval(),
            rng.normal(size=(1, 40)).astype(np.float32),
            maintenance.INPUT,
            maintenance.OUTPUTS,
        ),
    }
    rows = []
    with tempfile.TemporaryDirectory() as t:
        for name, (model, example, inp, outs) in models.items():
            times: dict[str, list[float]] = {
                "export (checked TorchScript)": [],
                "dynamo exporter (former)": [],
            }
            for r in range(a.repeats):
                for label in times if r % 2 == 0 else reversed(list(times)):
                    p = Path(t) / f"{len(rows)}-{r}-{label[:6]}.onnx"
                    s = time.perf_counter()
                    if label.startswith("export"):
                        onnx_tools.export(model, example, p, inp, outs)
                    else:
                        _dynamo(model, example, p, inp, outs)
                    times[label].append(time.perf_counter() - s)
            new, old = times["export (checked TorchScript)"], times["dynamo exporter (former)"]
            rows.append(
                {
                    "model": name,
                    "new_first_s": new[0],
                    "new_later_median_s": statistics.median(new[1:] or new),
                    "old_first_s": old[0],
                    "old_later_median_s": statistics.median(old[1:] or old),
                }
            )
    res = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "cpu_flags": " ".join(cpu_flags()),
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "repeats": a.repeats,
        "rows": rows,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "onnx_export_bench.json").write_text(json.dumps(res, indent=1))
    lines = [
        f"Measured {res['when']}; 1-min load average {load:.1f} "
        f"before, {res['load_after']:.1f} after. {a.repeats} exports of each kind per model, alternating.",
        "",
        "| model | `export` first s | `export` later (median) s | dynamo first s | dynamo later (median) s | "
        "**ratio, later** |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['new_first_s']:.2f} | {r['new_later_median_s']:.2f} | {r['old_first_s']:.2f} | "
            f"{r['old_later_median_s']:.2f} | **{r['new_later_median_s'] / r['old_later_median_s']:.3f}** |"
        )
    lines += ["", machine_line()]
    (OUT / "onnx_export_bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
