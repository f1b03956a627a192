"""The good-only anomaly family (``part-anomaly``): a build of its own, in one command only
(``cloud-trainer build anomaly``; ``cloud_trainer.train.anomaly`` has the model, its evaluation, gate
and package). It offers none of the stage verbs: a memory bank fitted in one pass has no epochs to
train apart from its threshold and its INT8 check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cloud_trainer.train import anomaly as fam  # imports no torch: its model is built when it trains
from cloud_trainer.train.families.base import TrainerFamily


class AnomalyFamily(TrainerFamily):
    name = "anomaly"
    package_name = fam.NAME  # the default of --name
    verbs = ("build",)
    default_epochs = 0
    own_options = ("--backbone-weights", "--features", "--light-variation")
    INPUT, OUTPUTS = fam.INPUT, fam.OUTPUTS

    def package_io(self, meta: dict, n_features: int, threshold: float) -> tuple[list, list, str, str]:
        """The manifest's outputs as ``build`` writes them (``meta["settings"]``: its AnomalySettings), so
        that the INT8 gate the other families use (``pipeline._int8_parity``) reads the score's threshold
        from them."""
        s = meta["settings"]
        inputs = [
            {"name": fam.INPUT, "dtype": "float32", "shape": ["batch", 3, s.size, s.size], "layout": "NCHW"}
        ]
        return inputs, fam._outputs(s, threshold), "anomaly_detection", "image_auroc"

    def anomaly_settings(self, a, s) -> fam.AnomalySettings:
        """The build's settings from its command line (``a``) and the shared settings (``s``)."""
        return fam.AnomalySettings(
            dataset=a.dataset,
            registry=a.registry,
            signing_key=s.signing_key,
            workdir=a.work or Path("var/builds/anomaly"),
            size=a.size or 128,
            roi=list(a.roi) if getattr(a, "roi", None) else None,
            tiles=list(a.tiles) if getattr(a, "tiles", None) else None,
            seed=a.seed,
            false_reject_rate=a.false_reject_rate,
            backbone_weights=a.backbone_weights,
            features=a.features or "texture+context",
            light_variation=a.light_variation or "linear",
            threads=a.threads,
            version=a.version,
            floors=s.floors,
            int8_margin=a.int8_margin,
            int8_min_agreement=getattr(a, "int8_min_agreement", 0.99),
            int8_max_deviation=getattr(a, "int8_max_deviation", 0.05),
            require_int8=getattr(a, "require_int8", False),
            openvino=not a.no_openvino,
            force=a.force,
            name=a.name or fam.NAME,
        )

    def build_command(self, a, s) -> int:
        from cloud_trainer.train import anomaly
        from cloud_trainer.train.cli import one_line, package_refused
        from cloud_trainer.train.pipeline import GateFailed
        from model_packager.errors import PackageError

        # the vision family's geometry option this family does not take: refused rather than ignored
        for opt, given, hint in (
            ("--gray", getattr(a, "gray", False), "grey frames are read as they are (three equal channels)"),
        ):
            if given:
                print(
                    f"cloud-trainer build anomaly: {opt} is the vision family's option, not taken by the "
                    f"anomaly family; {hint}",
                    file=sys.stderr,
                )
                return 2
        st = self.anomaly_settings(a, s)
        try:
            res = anomaly.build(st)
        except anomaly.AnomalyDataError as exc:  # it may name a file as a labels.jsonl row wrote it
            print(f"cloud-trainer build anomaly: dataset error: {one_line(str(exc))}", file=sys.stderr)
            return 2
        except GateFailed as exc:
            print(
                f"cloud-trainer build anomaly: candidate rejected by the evaluation gate: {exc}; nothing published "
                f"(report: {exc.report})",
                file=sys.stderr,
            )
            return 3
        except PackageError as exc:
            print(package_refused("build anomaly", exc), file=sys.stderr)
            return 2
        print(
            json.dumps(
                {
                    "published": res["entry"]["version"],
                    "name": res["entry"]["name"],
                    "package": res["package"],
                    "form": res["report"]["form"],
                    "threshold": res["report"]["threshold"],
                }
            )
        )
        return 0
