"""`cloud-trainer train|quantize|evaluate|package|publish|build`.

``build`` runs the whole pipeline in one command (dataset → train → export → INT8 → evaluate →
gate → package → publish). The single-stage verbs run the same code up to their stage in a work
folder: ``train`` (and export FP32), ``quantize`` and ``evaluate`` stop before the gate decides,
``package`` stops before publishing, ``publish`` adds an already built package and its report to
the registry.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser(prog: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"cloud-trainer {prog}")
    ap.add_argument("family", choices=["vision", "maintenance"])
    ap.add_argument("--dataset", required=True, type=Path, help="simulator dataset folder (edge-sim dataset ...)")
    ap.add_argument("--registry", type=Path, default=Path("var/registry"))
    ap.add_argument("--key", type=Path, default=Path("var/keys/fleet.key"), help="Ed25519 signing key")
    ap.add_argument("--work", type=Path, help="work folder (default: var/builds/<family>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="default: vision 20, maintenance 200 (early stopping)")
    ap.add_argument("--size", type=int, default=64, help="vision input size (pixels)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--version", help="default: next minor version in the registry")
    ap.add_argument("--floor", action="append", default=[], metavar="METRIC=VALUE", help="override a gate floor")
    ap.add_argument("--int8-margin", type=float, default=0.01)
    ap.add_argument("--no-openvino", action="store_true", help="do not add an OpenVINO IR to the package")
    ap.add_argument("--degrade", action="store_true", help="deliberately damage the candidate (gate demo)")
    ap.add_argument("--tolerance", type=float, default=0.01, help="allowed loss vs the published version")
    ap.add_argument("--force", action="store_true", help="publish even if the gate fails (marked as forced)")
    return ap


def _settings(a):
    from cloud_trainer.train.pipeline import BuildSettings

    floors = {}
    for f in a.floor:
        k, _, v = f.partition("=")
        floors[k] = float(v)
    if not a.key.exists():
        from model_packager import generate_keypair

        generate_keypair(a.key, a.key.with_suffix(".pub"))
        print(f"created signing key {a.key} (and {a.key.with_suffix('.pub')} for agents to trust)", file=sys.stderr)
    return BuildSettings(family=a.family, dataset=a.dataset, registry=a.registry, signing_key=a.key,
                         workdir=a.work or Path("var/builds") / a.family, seed=a.seed,
                         epochs=a.epochs or (20 if a.family == "vision" else 200), size=a.size,
                         threads=a.threads, floors=floors, int8_margin=a.int8_margin, version=a.version,
                         openvino=not a.no_openvino, degrade=a.degrade, tolerance=a.tolerance, force=a.force)


def main_build(argv: list[str]) -> int:
    from cloud_trainer.train.data import DatasetError
    from cloud_trainer.train.pipeline import GateFailed, build

    a = _parser("build").parse_args(argv)
    try:
        out = build(_settings(a))
    except DatasetError as exc:
        print(f"cloud-trainer build: dataset error: {exc}", file=sys.stderr)
        return 2
    except GateFailed as exc:
        print(f"cloud-trainer build: candidate rejected by the evaluation gate: {exc}; nothing published "
              f"(report: {exc.report})", file=sys.stderr)
        return 3
    print(json.dumps({"published": out["entry"]["version"], "name": out["entry"]["name"],
                      "package": out["package"], "digest": out["entry"]["digest"]}))
    return 0


def _not_split(verb: str):
    def run(argv: list[str]) -> int:
        print(f"cloud-trainer {verb}: this version runs the stages together; use `cloud-trainer build` "
              "(it writes every stage's output into its work folder)", file=sys.stderr)
        return 2
    return run


main_train = _not_split("train")
main_quantize = _not_split("quantize")
main_evaluate = _not_split("evaluate")
main_package = _not_split("package")


def main_publish(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="cloud-trainer publish")
    ap.add_argument("package", type=Path)
    ap.add_argument("--registry", type=Path, default=Path("var/registry"))
    ap.add_argument("--report", type=Path, help="report.json of the package's evaluation (gate must have passed)")
    a = ap.parse_args(argv)
    from cloud_trainer.registry import Registry, RegistryError

    if a.report is None or not a.report.exists():
        print("cloud-trainer publish: a report.json whose gate passed is required", file=sys.stderr)
        return 2
    rep = json.loads(a.report.read_text())
    if not rep.get("gate", {}).get("passed"):
        print(f"cloud-trainer publish: the report says the gate failed: {rep.get('gate')}; not published",
              file=sys.stderr)
        return 3
    try:
        e = Registry(a.registry).publish(a.package, [a.report], {}, rep.get("dataset_digest"),
                                         (rep.get("incumbent") or {}).get("version"))
    except RegistryError as exc:
        print(f"cloud-trainer publish: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"published": e["version"], "name": e["name"]}))
    return 0
