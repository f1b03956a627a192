"""Good-only anomaly family: image AUROC and heat-map localisation, the default features against
their baselines in the same run.

Datasets (MVTec AD layout, written here):
- ``sim-cast``: the project's simulator with a surface finish its classifier never used ("cast"),
  ``--good`` good training images (default 200), 100 good + 100 defective test images (all five
  defect kinds, masks);
- ``plates``: the tests' independent generator (tests/support/plates.py: another part, finish,
  light; small pits, 1-px scratches, smudges), same counts, 96 px.

For each: `cloud-trainer build anomaly` as a function (FP32 ONNX Runtime of the packaged graph), with
the default features (``texture+context``) and, as baselines, ``texture`` (no context) and ``cnn``
(a seeded random ResNet-18-layout backbone, batch-norm statistics from the good images; INT8 tried).
Reported: image AUROC, per-defect AUROC, NG recall and good rejected at the stored threshold, the
share of NG images whose hottest map region touches the defect, build time, batch-1 latency.

The bar (issue 13): sim-cast image AUROC >= 0.95 from <= 200 good images; plates: hottest region on
the defect in >= 0.80 of NG images. Exit 1 when the default misses it.

    .venv/bin/python -m bench.anomaly_bench [--good 200] [--features texture+context texture cnn]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
sys.path.insert(0, str(ROOT))


def run(dataset: Path, size: int, features: str, tmp: Path, key: Path) -> dict:
    import numpy as np

    from cloud_trainer.train import anomaly as A
    from cloud_trainer.train import onnx_tools

    work = tmp / f"work-{dataset.name}-{features}"
    s = A.AnomalySettings(
        dataset=dataset,
        registry=tmp / f"reg-{dataset.name}-{features}",
        signing_key=key,
        workdir=work,
        size=size,
        features=features,
        openvino=False,
        threads=2,
        force=True,
    )
    t = time.perf_counter()
    res = A.build(s, log=lambda m: print("   ", m, file=sys.stderr))
    secs = time.perf_counter() - t
    rep = res["report"]
    m = rep["metrics"][rep["form"]]
    served = work / ("model.int8.onnx" if rep["form"] == "int8" else "model.fp32.onnx")
    x1 = np.zeros((1, 3, size, size), np.float32)
    lat = onnx_tools.latency_ms(served, x1, "onnxruntime", 1, n=50)
    return {
        "dataset": dataset.name,
        "features": features,
        "form": rep["form"],
        "good": rep["good_images"],
        "threshold": rep["threshold"],
        "seconds": secs,
        "latency_ms_1t": lat,
        **m,
        "int8": rep["int8"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.anomaly_bench")
    ap.add_argument("--good", type=int, default=200)
    ap.add_argument("--test", type=int, default=100, help="good and defective test images each")
    ap.add_argument("--features", nargs="+", default=["texture+context", "texture", "cnn"])
    a = ap.parse_args(argv)
    from model_packager import generate_keypair
    from simulators.mvtec import write_mvtec
    from tests.support.plates import write_plates

    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        key = tmp / "k.key"
        generate_keypair(key, tmp / "k.pub")
        sets = [
            (write_mvtec(tmp / "sim-cast", a.good, a.test, a.test, seed=11, size=128, surface="cast"), 128),
            (write_plates(tmp / "plates", a.good, a.test, a.test, seed=12, size=96), 96),
        ]
        for ds, size in sets:
            for f in a.features:
                print(f"{ds.name} / {f} ...", file=sys.stderr)
                rows.append(run(ds, size, f, tmp, key))
                print(
                    json.dumps({k: v for k, v in rows[-1].items() if k != "int8"}, default=float),
                    file=sys.stderr,
                )
    OUT.mkdir(exist_ok=True)
    (OUT / "anomaly_bench.json").write_text(json.dumps(rows, indent=1, default=float))
    kinds = sorted({k[6:] for r in rows for k in r if k.startswith("auroc_")})
    md = [
        "### Anomaly family (good images only): image AUROC and heat-map localisation, default features vs "
        "baselines",
        "",
        f"{a.good} good training images per set; {a.test} good + {a.test} defective test images; FP32 ONNX "
        "Runtime unless the form says INT8; threshold at 1 % false rejects from k-fold scores of the good images.",
        "",
        "| set | features | form | image AUROC | " + " | ".join(kinds) + " | NG recall @thr | good rejected "
        "| hottest region on defect | build s | ms/img (1 thread) |",
        "|---|---|---|---:|" + "---:|" * len(kinds) + "---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per = " | ".join("" if f"auroc_{k}" not in r else f"{r[f'auroc_{k}']:.3f}" for k in kinds)
        md.append(
            f"| {r['dataset']} | {r['features']} | {r['form']} | {r['image_auroc']:.3f} | {per} | "
            f"{r['ng_recall']:.2f} | {r['ok_rejected']:.1%} | {r['map_hit_rate']:.2f} | {r['seconds']:.0f} | "
            f"{r['latency_ms_1t']:.1f} |"
        )
    (OUT / "anomaly_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    default = {r["dataset"]: r for r in rows if r["features"] == "texture+context"}
    ok = not default or (
        default["sim-cast"]["image_auroc"] >= 0.95 and default["plates"]["map_hit_rate"] >= 0.80
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
