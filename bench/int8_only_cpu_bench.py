"""Packages built here (a CPU with VNNI) judged by the agent's selection on a CPU without VNNI (QEMU user mode
emulating a Haswell: AVX2, whose u8×s8 kernels sum pairs of products in saturating 16-bit integers), and, for
the INT8-only ones, the former rule beside the current one.

Packages: the trainer's vision (part-inspection), anomaly (part-anomaly) and maintenance (machine-health)
builds, each FP32 + INT8 (small datasets and few epochs: the packages' shape, not their quality; the INT8 form
packaged whatever the trainer's own INT8 gate says); INT8-only
packages built with ``build_package`` from INT8 ONNX files (no FP32 form, as a user brings a quantized model):
the test part CNN with full 8-bit weights (a user's tools' default) and with 7-bit ones (the trainer's), and a
saturating model whose first convolution overflows 16 bits without VNNI (its INT8 collapses there); and the
test signal model (anomaly score, fault logits) with full 8-bit and 7-bit weights, its threshold at 0 with a
golden item just above it.

Per package: the form and engine the selection serves under QEMU, each trial (ok, largest deviation, share of
golden verdicts agreeing, reason); for the INT8-only ones also, per engine, whether the former rule (the only
form held to the golden tolerance and to every verdict) and the current one (``golden.int8_only_problems``:
verdicts and labels except items near a threshold or a tie of their top two labels, ``golden.int8_exempt``, the
spread of the scores, outputs without a verdict by what INT8 noise may do to them: ``golden.aux_problems``) pass
the run, and which golden items are exempt. JSON and a markdown table::

    .venv/bin/python -m bench.int8_only_cpu_bench [--cpu Haswell] [--no-trainer]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"

_UNDER_QEMU = """
import json, os, sys
from pathlib import Path
import numpy as np
from edge_agent.models.config import ModelConfig
from edge_agent.models.select import NothingPasses, select
from model_packager import load_trusted_keys, open_package
from model_packager.cpu import cpu_flags
from model_packager import golden as G
out = {"cpu_flags": list(cpu_flags())}
for name, pkg in json.loads(sys.argv[1]).items():
    opened = open_package(pkg, Path(sys.argv[2]) / name, load_trusted_keys([sys.argv[3]]))
    m = opened.manifest
    try:
        out[name] = select(opened, ModelConfig(package=pkg, engine="auto")).to_dict()
    except NothingPasses as exc:
        out[name] = {"refused": str(exc)}
    if m.has_fp32 or not m.quantization.scheme.startswith("int8"):
        continue
    inputs, expected = G.load_npz(opened.golden_inputs), G.load_npz(opened.golden_expected)
    rules = {}
    for eng in ("onnxruntime", "openvino"):
        got = {}
        for i in range(next(iter(inputs.values())).shape[0]):
            r = G.run_engine(eng, opened.model_path, {k: v[i : i + 1] for k, v in inputs.items()},
                             opened.openvino_xml if eng == "openvino" else None)
            for k, v in r.items():
                got.setdefault(k, []).append(v)
        got = {k: np.concatenate(v) for k, v in got.items()}
        g = m.golden
        former = G.compare(expected, got, g.atol, g.rtol, g.output_atol)[1] + G.verdict_problems(m, expected, got)
        rules[eng] = {
            "former": "; ".join(former) or "ok",
            "current": "; ".join(G.int8_only_problems(m, expected, got)[1]) or "ok",
            "near_items": G.near_threshold_rows(m, expected),
            "near_ties": G.near_tie_rows(m, expected) if hasattr(G, "near_tie_rows") else None,
            "exempt_flips": G.exempt_flip_rows(m, expected, got) if hasattr(G, "exempt_flip_rows") else None,
            "margin": [round(G.threshold_margin(s, t), 4) for _, t, s in G._threshold_scores(m, expected)],
        }
    out[name]["rules"] = rules
print(json.dumps(out), flush=True)
os._exit(0)
"""


# tiny builds: their INT8 forms are packaged whatever the trainer's INT8 gate says (as tests/integration/
# test_trainer.py does), so that the agent's check of the INT8 form is what is measured
LET_INT8_THROUGH: dict[str, Any] = {"int8_margin": 1.0, "int8_min_agreement": 0.0, "int8_max_deviation": 1e3}


def _trainer_packages(tmp: Path, key: Path) -> dict[str, str]:
    from cloud_trainer.train import anomaly as A
    from cloud_trainer.train.pipeline import BuildSettings, build
    from simulators.parts import write_dataset as write_parts
    from simulators.vibration import write_dataset as write_vibration
    from tests.support.plates import write_plates

    quiet = lambda m: None  # noqa: E731
    pkgs = {}
    parts = write_parts(tmp / "parts", count=400, seed=2, size=48, defect_rate=0.5)
    vib = write_vibration(tmp / "vib", n_runs=10, windows_per_run=16, seed=1)
    builds: tuple[tuple[str, Path, dict[str, Any]], ...] = (
        ("vision", parts, {"epochs": 10, "size": 48, "floors": {"ng_recall": 0.0, "ng_precision": 0.0}}),
        ("maintenance", vib, {"epochs": 40, "floors": {"anomaly_auroc": 0.0, "fault_accuracy": 0.0}}),
    )
    for family, ds, kw in builds:
        s = BuildSettings(
            family=family,
            dataset=ds,
            registry=tmp / f"reg-{family}",
            signing_key=key,
            workdir=tmp / f"work-{family}",
            threads=2,
            calibration=32,
            **LET_INT8_THROUGH,
            **kw,
        )
        pkgs[family] = build(s, log=quiet)["package"]
    plates = write_plates(tmp / "plates", n_train=30, n_good=10, n_ng=15, seed=4, size=96)
    a = A.AnomalySettings(
        dataset=plates,
        registry=tmp / "reg-anomaly",
        signing_key=key,
        workdir=tmp / "work-anomaly",
        size=96,
        bank_size=512,
        folds=3,
        threads=2,
        **LET_INT8_THROUGH,
    )
    pkgs["anomaly"] = A.build(a, log=quiet)["package"]
    return pkgs


def _int8_only_packages(tmp: Path, key: Path) -> dict[str, str]:
    from tests.integration.test_int8_only_packages import int8_only_packages

    return int8_only_packages(
        tmp,
        key,
        {
            "int8-only own CNN, 8-bit weights": ("own", False, "s8"),
            "int8-only own CNN, 7-bit weights": ("own", True, "s8"),
            "int8-only saturating, 8-bit weights, u8": ("sat", False, "u8"),
        },
    )


def _threshold_0_packages(tmp: Path, key: Path) -> dict[str, str]:
    """The test signal model (an anomaly score and fault logits) quantized with full 8-bit and 7-bit weights,
    its score less the score of golden item 0 and 0.1 % of the scores' span: the threshold is 0, item 0 NG
    just above it (a threshold of 0 had no margin before)."""
    import numpy as np

    from cloud_trainer.train import onnx_tools
    from model_packager import build_package
    from model_packager.golden import run_engine
    from tests.integration.test_int8_only_packages import _score_as
    from tests.support.models import golden_inputs, make_signal_onnx, signal_spec

    fp32 = make_signal_onnx(tmp / "signal.onnx")
    calib = golden_inputs("signal", n=64, seed=1)["features"]
    inputs = golden_inputs("signal", n=16, seed=2)
    pkgs = {}
    for bits, seven in (("8-bit", False), ("7-bit", True)):
        int8 = onnx_tools.quantize(
            fp32, tmp / f"signal-{bits}.onnx", calib, "features", seven_bit_weights=seven
        )
        score = run_engine("onnxruntime", int8, inputs)["anomaly_score"][:, 0]
        shifted = _score_as(int8, tmp / f"signal0-{bits}.onnx", 1.0, -float(score[0] - 0.001 * np.ptp(score)))
        spec = {
            **signal_spec("machine-health", "1.0.0", anomaly_threshold=0.0),
            "quantization": {"scheme": onnx_tools.SCHEME},
        }
        built = build_package(
            shifted, spec, tmp / f"pkg-signal0-{bits}", signing_key=key, golden_inputs=inputs, openvino=True
        )
        pkgs[f"int8-only signal, threshold 0, {bits} weights"] = str(built)
    return pkgs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", default="Haswell", help="the CPU model qemu-x86_64 emulates")
    ap.add_argument("--no-trainer", action="store_true", help="only the INT8-only packages")
    a = ap.parse_args()
    if shutil.which("qemu-x86_64") is None:
        sys.exit("qemu-user is not installed (make setup installs it)")
    sys.path.insert(0, str(ROOT))
    from bench._machine import machine, machine_line
    from model_packager.cpu import cpu_flags
    from tests.support.models import make_keypair

    tmp = Path(tempfile.mkdtemp(prefix="int8only-"))
    key, pub = make_keypair(tmp / "keys")
    pkgs = {} if a.no_trainer else _trainer_packages(tmp, key)
    pkgs.update(_int8_only_packages(tmp, key))
    pkgs.update(_threshold_0_packages(tmp, key))
    proc = subprocess.run(
        [
            "qemu-x86_64",
            "-cpu",
            a.cpu,
            sys.executable,
            "-c",
            _UNDER_QEMU,
            json.dumps(pkgs),
            str(tmp / "open"),
            str(pub),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    if proc.returncode != 0:
        sys.exit(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["built_on"] = list(cpu_flags())
    out["machine"] = machine()  # the machine the packages were built on (the judging CPU is qemu's)
    OUT.mkdir(exist_ok=True)
    (OUT / "int8_only_cpu.json").write_text(json.dumps(out, indent=1))
    print(machine_line())
    print(
        f"built on: {' '.join(out['built_on'])}; judged under qemu -cpu {a.cpu}: {' '.join(out['cpu_flags'])}\n"
    )
    print("| package | served under QEMU | trials (engine/form: ok, deviation, agreement) | refused / off |")
    print("| --- | --- | --- | --- |")
    for name in pkgs:
        r = out[name]
        served = "refused" if "refused" in r else f"{r['form']} on {r['engine']}"
        trials = "; ".join(
            f"{t['engine']}/{t['form']}: {'ok' if t['ok'] else 'off'}, {t['deviation']:.3g}, {t['agreement']}"
            for t in r.get("trials", [])
            if t["deviation"] is not None
        )
        why = r.get("refused") or "; ".join(
            f"{t['engine']}/{t['form']}: {t['reason']}" for t in r.get("trials", []) if not t["ok"]
        )
        print(f"| {name} | {served} | {trials} | {why[:300]} |")
    rules = [(n, out[n]["rules"]) for n in pkgs if "rules" in out[n]]
    if rules:
        print(
            "\n| INT8-only package | engine | former rule | current rule | golden items near a threshold "
            "| near a tie of their labels | exempt items flipped | threshold margin |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, per in rules:
            for eng, r in per.items():
                print(
                    f"| {name} | {eng} | {r['former'][:160]} | {r['current'][:400]} | {r['near_items']} "
                    f"| {r.get('near_ties')} | {r.get('exempt_flips')} | {r.get('margin')} |"
                )


if __name__ == "__main__":
    main()
