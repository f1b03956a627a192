"""The maintenance family's stage hooks: vibration windows → anomaly score, fault type and
remaining life (``machine-health``). The model and its training are
``cloud_trainer.train.maintenance``; this class tells the pipeline how to read the recordings, which
arrays later stages need (health, remaining life), how to pick the anomaly threshold, the gate's
remaining-life check, and the model's outputs in the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cloud_trainer.train import maintenance as fam  # named as the pipeline named a family's module
from cloud_trainer.train import onnx_tools
from cloud_trainer.train.families.base import Evaluation, StageError, TrainerFamily


class MaintenanceFamily(TrainerFamily):
    name = "maintenance"
    package_name = "machine-health"
    default_epochs = 200  # with early stopping
    default_floors = {"anomaly_auroc": 0.95, "fault_accuracy": 0.90}
    primary = ["anomaly_auroc", "fault_accuracy"]
    INPUT, OUTPUTS = fam.INPUT, fam.OUTPUTS

    def load_dataset(self, folder: Path, preprocessing: dict | None = None):
        from cloud_trainer.train import data as D

        return D.load_vibration(folder)

    def train(self, s, ds, pre, log) -> dict:
        if s.init_from:
            raise StageError(
                "--init-from: fine-tuning applies to vision models; maintenance models retrain from "
                "scratch (their features are standardised on each dataset)"
            )
        return fam.train(
            ds,
            s.seed,
            s.epochs,
            log,
            s.threads,
            feature_set=s.signal_features,
            bearing=s.bearing,
            speed_tag=s.speed_tag,
        )

    def train_arrays(self, tr_out: dict) -> dict:
        return dict(health=tr_out["health"], rul_s=tr_out["rul_s"], rul_ok=tr_out["rul_ok"])

    def train_meta(self, ds, log) -> dict:
        """Remaining life: the prior from the dataset's runs to failure (None: the agent uses the trend alone),
        and whether any window has a failure time to learn it from (``remaining_life``)."""
        from cloud_trainer.train.life import prior_from_dataset

        learned = bool(np.isfinite(np.asarray(ds.rul_s, dtype=np.float64)).any())
        if not learned:
            log("remaining life: no window has a failure time (failure_s); the package states none")
        return {"life_prior": prior_from_dataset(ds, log), "remaining_life": learned}

    def evaluate(self, s, meta, a, outs, fp32, int8, dataset) -> Evaluation:
        x, y, tr, va, te = a["x"], a["y"], a["train"], a["val"], a["test"]
        # the threshold comes from the FP32 model, the reference every form is held to (an agent serves
        # FP32 where INT8 breaks its parity bounds, with the package's one threshold): taken on INT8
        # scores, it sat where the quantization had moved them
        val_fp32 = onnx_tools.run(fp32, x[va])
        threshold = fam.choose_threshold(
            val_fp32["anomaly_score"].reshape(-1), fam.anomaly_truth(y[va], a["health"][va])[0]
        )
        known = np.where(a["rul_ok"][tr], a["rul_s"][tr], np.nan)
        known = known[~np.isnan(known)]  # none without failure times: NaN, not numpy's "Mean of empty slice"
        rul_mean = float(known.mean()) if known.size else float("nan")
        classes = meta.get("classes") or None  # a build trained before the record: FAULTS
        mets = {
            k: fam.metrics(o, y[te], a["health"][te], a["rul_s"][te], threshold, rul_mean, classes)
            for k, o in outs.items()
        }
        return Evaluation(mets, threshold, context={"rul_mean": rul_mean})

    def gate_reasons(self, cand: dict) -> list[str]:
        reasons = []
        # no window of the test runs has a failure time (historian labels without failure_s): remaining life
        # cannot be judged there, and is not held against the naive mean (NaN against NaN failed every build)
        if np.isfinite(cand["rul_mae_naive_s"]) and not cand["rul_mae_s"] < cand["rul_mae_naive_s"]:
            reasons.append(
                f"remaining-life MAE {cand['rul_mae_s']:.0f}s does not beat the naive mean "
                f"{cand['rul_mae_naive_s']:.0f}s"
            )
        return reasons

    def incumbent_metrics(self, opened, ds, te, y, threshold_fallback, context) -> dict:
        from cloud_trainer.train import maintenance
        from model_packager.manifest import SignalPreprocessing

        m, rul_mean = opened.manifest, context["rul_mean"]
        pre = m.preprocessing
        assert isinstance(pre, SignalPreprocessing)  # a maintenance package
        xi = maintenance.features(
            ds.waveforms[te], pre, ds.speed_rpm[te] if ds.speed_rpm is not None else None
        )
        out = onnx_tools.run(opened.model_path, xi)
        thr = next(
            (o.threshold for o in m.outputs if o.role.value == "anomaly_score" and o.threshold is not None),
            threshold_fallback,
        )
        from cloud_trainer.train.data import FAULTS

        # its fault_logits by name (a package before the labels were written: FAULTS), not by index: the
        # classes beyond FAULTS are sorted per dataset, and a model of more classes than the dataset's raised
        labels = next(
            (o.labels for o in m.outputs if o.name == "fault_logits" and o.labels),
            FAULTS[: out["fault_logits"].shape[1]],
        )
        pred = maintenance.predicted_classes(out["fault_logits"], list(labels), ds.classes)
        return maintenance.metrics(out, y[te], ds.health[te], ds.rul_s[te], thr, rul_mean, ds.classes, pred)

    def labels(self, report: dict) -> list[str]:
        from cloud_trainer.train.data import FAULTS

        return report.get("classes") or FAULTS

    def plot_curve(self, path: Path, y, out, a, te) -> None:
        from cloud_trainer.train import common
        from cloud_trainer.train.maintenance import anomaly_truth

        health = a["health"][te]
        anom, counted = anomaly_truth(y, health)
        fpr, tpr = common.roc_points(anom[counted], out["anomaly_score"].reshape(-1)[counted])
        common.plot_curve(
            path,
            fpr,
            tpr,
            "anomaly ROC (INT8, test)",
            "false positive rate",
            "true positive rate",
            diagonal=True,
        )

    def package_io(self, meta: dict, n_features: int, threshold: float) -> tuple[list, list, str, str]:
        from cloud_trainer.train.data import FAULTS

        faults = (
            meta.get("classes") or FAULTS
        )  # the dataset's (data.fault_classes); a build before the record
        outputs = [
            {
                "name": "anomaly_score",
                "dtype": "float32",
                "shape": ["batch", 1],
                "role": "anomaly_score",
                "threshold": threshold,
            },
            {
                "name": "fault_logits",
                "dtype": "float32",
                "shape": ["batch", len(faults)],
                "role": "class_logits",
                "labels": faults,
                "ok_label": "healthy",
            },
        ]
        # a dataset without failure times leaves the life head untrained: it gave some 400 s on every window,
        # healthy or not; the graph keeps the output, the manifest does not declare it (no remaining life)
        if meta.get("remaining_life", True):
            outputs.append(
                {
                    "name": "remaining_life",
                    "dtype": "float32",
                    "shape": ["batch", 1],
                    "role": "remaining_life",
                    "unit": "s",
                }
            )
        inputs = [{"name": "features", "dtype": "float32", "shape": ["batch", n_features], "layout": "NC"}]
        task = "equipment_maintenance"
        metric_name = "fault_accuracy"
        return inputs, outputs, task, metric_name
