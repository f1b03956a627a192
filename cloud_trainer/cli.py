"""`cloud-trainer`: the cloud admin's command line.

One explicit table of verbs, each implemented by a module's ``main(argv) -> int`` and imported
only when used (``train`` pulls in PyTorch; ``agents`` must not).
"""

from __future__ import annotations

import importlib
import sys

VERBS: dict[str, tuple[str, str]] = {
    "serve": ("cloud_trainer.fleet.server:main", "run the fleet service (gRPC, mTLS) and admin service"),
    "pki": ("cloud_trainer.pki:main", "create a CA, server and agent/admin certificates"),
    "dataset": (
        "cloud_trainer.train.cli:main_dataset",
        "a dataset: `dataset import SRC --out DIR` from your "
        "images (folder per class, MVTec AD) or the fleet's labelled samples",
    ),
    "train": ("cloud_trainer.train.cli:main_train", "train a model family on a dataset"),
    "quantize": ("cloud_trainer.train.cli:main_quantize", "static INT8 quantization of an ONNX export"),
    "evaluate": ("cloud_trainer.train.cli:main_evaluate", "evaluate a candidate against the published one"),
    "package": ("cloud_trainer.train.cli:main_package", "package and sign a candidate"),
    "publish": (
        "cloud_trainer.registry:main_publish",
        "publish to the registry: a trainer's candidate (gate applies) or a .edgepkg from model-packager (verified)",
    ),
    "withdraw": (
        "cloud_trainer.registry:main_withdraw",
        "withdraw a published version (a known defect): never deployed, rolled back to or downloaded again",
    ),
    "build": ("cloud_trainer.train.cli:main_build", "train -> quantize -> evaluate -> package -> publish"),
    "deploy": ("cloud_trainer.admin_cli:main_deploy", "create a deployment (canary or all-at-once)"),
    "agents": ("cloud_trainer.admin_cli:main_agents", "list agents and what they run"),
    "deployments": ("cloud_trainer.admin_cli:main_deployments", "list deployments and their progress"),
    "status": ("cloud_trainer.admin_cli:main_status", "fleet summary"),
    "rollback": ("cloud_trainer.admin_cli:main_rollback", "roll a deployment or a slot back to a version"),
    "config": (
        "cloud_trainer.admin_cli:main_config",
        "roll an agent configuration out like a model (`config deploy FILE`), list, remove",
    ),
    "tenants": ("cloud_trainer.admin_cli:main_tenants", "platform operators: tenants and their usage"),
    "baseline": (
        "cloud_trainer.admin_cli:main_baseline",
        "an agent's per-asset baselines: status, relearn PIPELINE",
    ),
}


def _usage() -> str:
    lines = ["usage: cloud-trainer VERB [options]   (cloud-trainer VERB --help)", "", "verbs:"]
    lines += [f"  {verb:<12} {help_}" for verb, (_, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"cloud-trainer: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _, func = VERBS[verb][0].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("cloud_trainer"):
            print(f"cloud-trainer {verb}: not built yet in this version ({exc.name})", file=sys.stderr)
            return 2
        raise
    return int(getattr(module, func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
