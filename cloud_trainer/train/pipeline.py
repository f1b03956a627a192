"""dataset → train → export → INT8 → evaluate → gate → package → publish, for either family.

``build(...)`` is a plain function of (dataset folder, settings) → a package in the registry (or a
rejection with its report), so a job scheduler can run it anywhere. Every stage writes into the
work folder: ``model.fp32.onnx``, ``model.int8.onnx``, ``report.json``, ``report.md``,
``confusion.png`` and ``roc.png`` (vision: PR curve), the package.

The gate, on the same held-out test split: the candidate (its INT8 model, what agents run) must
meet the configured floors, lose at most ``int8_margin`` to its FP32 form, and, when a version is
already published, not be worse than that version evaluated on the same data. A candidate that
fails is not packaged into the registry, which stays unchanged.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cloud_trainer.registry import Registry
from cloud_trainer.train import common, onnx_tools

FAMILIES = {"vision": "part-inspection", "maintenance": "machine-health"}
DEFAULT_FLOORS = {
    "vision": {"ng_recall": 0.98, "ng_precision": 0.95},
    "maintenance": {"anomaly_auroc": 0.95, "fault_accuracy": 0.90},
}


class GateFailed(RuntimeError):
    def __init__(self, reasons: list[str], report: Path) -> None:
        super().__init__("; ".join(reasons))
        self.reasons, self.report = reasons, report


@dataclass
class BuildSettings:
    family: str
    dataset: Path
    registry: Path
    signing_key: Path
    workdir: Path
    seed: int = 0
    epochs: int = 25
    size: int = 128  # vision: the model's input (pixels, per tile when tiled)
    roi: list[int] | None = None  # vision: [x, y, width, height] pixel box of the frame
    tiles: list[int] | None = None  # vision: [columns, rows] of tiles over the frame (or roi)
    color: str = "rgb"  # vision: rgb | gray
    threads: int | None = None
    floors: dict = field(default_factory=dict)
    int8_margin: float = 0.01
    version: str | None = None
    calibration: int = 200
    openvino: bool = True
    compare_published: bool = True
    degrade: bool = False  # deliberately damage the candidate (for demos of the gate / rollback)
    tolerance: float = 0.01  # how much worse than the published version a primary metric may be
    force: bool = False  # publish even when the gate fails (recorded as forced; for drills and demos)
    init_from: Path | None = None  # vision: fine-tune from these weights (a work folder or its model.pt)
    min_ng_precision: float = 0.98  # vision operating point: highest NG recall at this precision on validation
    recipe: str = "auto"  # vision: "patch" (patch_classifier), "cnn" (vision.train), or "auto" (see vision_recipe)


VISION_RECIPES = ("auto", "patch", "cnn")


def vision_recipe(s: BuildSettings) -> str:
    """``auto``: the patch recipe for a dataset imported from the user's own images (``dataset import``:
    its ``dataset.yaml`` says ``imported_from``), where a CNN trained from scratch on a few hundred
    images does not learn the defects (docs/trainer.md); the CNN for the simulator's datasets and fleet
    samples, and whenever ``--init-from`` or ``--degrade`` asks for the CNN's weights."""
    if s.recipe not in VISION_RECIPES:
        raise StageError(f"--recipe {s.recipe!r}: expected one of {', '.join(VISION_RECIPES)}")
    if s.recipe == "patch" and s.init_from:
        raise StageError("--init-from: fine-tuning applies to the cnn recipe; the patch recipe is rebuilt from "
                         "its images in minutes (drop --init-from, or give --recipe cnn)")
    if s.recipe != "auto":
        return s.recipe
    if s.init_from or s.degrade:
        return "cnn"
    meta_file = Path(s.dataset) / "dataset.yaml"
    try:
        import yaml

        meta = yaml.safe_load(meta_file.read_text()) if meta_file.is_file() else None
    except Exception:  # load_parts names a broken dataset.yaml with its own message
        meta = None
    return "patch" if isinstance(meta, dict) and meta.get("imported_from") else "cnn"


def _engines() -> list[str]:
    import importlib.util

    return [e for e in ("onnxruntime", "openvino") if importlib.util.find_spec(e)]


class StageError(RuntimeError):
    """A stage was run out of order or on a work folder from another build."""


def _family(name: str):
    if name == "vision":
        from cloud_trainer.train import vision as fam
    elif name == "maintenance":
        from cloud_trainer.train import maintenance as fam
    else:
        raise ValueError(f"unknown family {name!r}; expected one of {sorted(FAMILIES)}")
    return fam


def _need(path: Path, stage: str) -> Path:
    if not path.exists():
        raise StageError(f"{path} is missing: run `cloud-trainer {stage}` with this work folder first")
    return path


def _load_dataset(family: str, folder: Path, preprocessing: dict | None = None):
    """The dataset; for a tiled vision model (``preprocessing`` with tiles), its tiles."""
    from cloud_trainer.train import data as D

    if family != "vision":
        return D.load_vibration(folder)
    tiled = bool(preprocessing and preprocessing.get("tiles"))
    ds = D.load_parts(folder, masks=tiled)
    if tiled:
        from cloud_trainer.train import vision
        from model_packager.manifest import ImagePreprocessing

        ds = vision.as_tiles(ds, ImagePreprocessing.model_validate(preprocessing))
    return ds


def stage_train(s: BuildSettings, log=common.stderr_log) -> dict:
    """dataset → trained model, exported to ``model.fp32.onnx``; the arrays and split every later
    stage evaluates on go to ``train.npz``, the facts to ``train.json``."""
    fam = _family(s.family)
    t0 = time.perf_counter()
    s.workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("model.int8.onnx", "report.json", "package.json"):  # a new model invalidates later stages
        (s.workdir / stale).unlink(missing_ok=True)
    pre = fam.preprocessing(s.size, s.roi, s.tiles, s.color) if s.family == "vision" else None
    ds = _load_dataset(s.family, s.dataset, pre.model_dump(mode="json") if pre else None)
    recipe = vision_recipe(s) if s.family == "vision" else None
    if recipe == "patch":
        from cloud_trainer.train import patch_classifier

        tr_out = patch_classifier.train(ds, s.size, s.seed, log, s.threads, pre=pre)
    elif s.family == "vision":
        init = _init_state(s.init_from) if s.init_from else None
        try:
            tr_out = fam.train(ds, s.size, s.seed, s.epochs, log, s.threads, init_state=init, pre=pre)
        except ValueError as exc:
            from cloud_trainer.train.data import DatasetError

            if isinstance(exc, DatasetError):
                raise
            raise StageError(f"--init-from {s.init_from}: {exc}") from None
    elif s.init_from:
        raise StageError("--init-from: fine-tuning applies to vision models; maintenance models retrain from "
                         "scratch (their features are standardised on each dataset)")
    else:
        tr_out = fam.train(ds, s.seed, s.epochs, log, s.threads)
    if s.degrade:
        _degrade(tr_out["model"])
    x = tr_out["x"]
    import torch

    if recipe == "patch":  # nothing to fine-tune from: the bank is rebuilt from the images
        (s.workdir / "model.pt").unlink(missing_ok=True)
    else:
        torch.save(tr_out["model"].state_dict(), s.workdir / "model.pt")  # for a later fine-tune (--init-from)
    # the patch graph broadcasts (N, 1) against constants: a batch-of-one example would fix N to 1
    example = x[:2] if recipe == "patch" else x[:1]
    onnx_tools.export(tr_out["model"], example, s.workdir / "model.fp32.onnx", fam.INPUT, fam.OUTPUTS)
    tr, va, te = tr_out["split"]
    arrays = {"x": x, "y": tr_out["y"], "train": tr, "val": va, "test": te}
    if s.family == "maintenance":
        arrays.update(health=tr_out["health"], rul_s=tr_out["rul_s"], rul_ok=tr_out["rul_ok"])
    np.savez(s.workdir / "train.npz", **arrays)
    meta = {"family": s.family, "dataset": str(s.dataset), "dataset_digest": ds.digest, "seed": s.seed,
            "size": s.size, "preprocessing": tr_out["pre"].model_dump(mode="json"),
            "classes": list(getattr(ds, "classes", [])), "degraded": s.degrade, "recipe": recipe,
            "calibration": tr_out.get("calibration"),
            "init_from": str(s.init_from) if s.init_from else None,
            "export": {"onnx_opset": onnx_tools.OPSET, "dynamic_batch": True},
            "input_stats": _input_stats(ds, tr) if s.family == "vision" else None,
            "training": {"seconds": time.perf_counter() - t0, "history": tr_out["history"]["epochs"]}}
    (s.workdir / "train.json").write_text(json.dumps(meta, indent=1, default=float))
    log(f"trained {s.family} in {meta['training']['seconds']:.0f}s; exported {s.workdir / 'model.fp32.onnx'}")
    return meta


def _input_stats(ds, rows) -> dict:
    """The training images' statistics for the manifest (the agent's UNSURE check)."""
    from model_packager.inputstats import summarize

    return summarize(ds.images[i] for i in rows).model_dump(mode="json")


def _init_state(path: Path) -> dict:
    import torch

    pt = Path(path) / "model.pt" if Path(path).is_dir() else Path(path)
    if not pt.is_file():
        raise StageError(f"--init-from {path}: no model.pt there (a work folder of `train`, or a published "
                         "version's folder in the registry)")
    try:
        return torch.load(pt, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StageError(f"--init-from {pt}: not a weights file ({type(exc).__name__}: {exc})") from None


def _meta(s: BuildSettings) -> dict:
    return json.loads(_need(s.workdir / "train.json", "train").read_text())


def _trained(s: BuildSettings, stage: str) -> tuple[dict, dict]:
    meta = json.loads(_need(s.workdir / "train.json", "train").read_text())
    if meta["family"] != s.family:
        raise StageError(f"{s.workdir} holds a {meta['family']} build, not {s.family}")
    with np.load(_need(s.workdir / "train.npz", "train")) as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays


def stage_quantize(s: BuildSettings, log=common.stderr_log) -> Path:
    """``model.fp32.onnx`` → static INT8 (QDQ, per-channel) ``model.int8.onnx``, calibrated on the
    validation split (held out from training)."""
    fam = _family(s.family)
    _, a = _trained(s, "quantize")
    fp32 = _need(s.workdir / "model.fp32.onnx", "train")
    x, va, tr = a["x"], a["val"], a["train"]
    if _meta(s).get("recipe") == "patch":  # fixed filters, a bank and a tiny MLP: FP32 is what it serves
        import shutil

        from cloud_trainer.train.patch_classifier import SCHEME

        int8 = shutil.copyfile(fp32, s.workdir / "model.int8.onnx")
        for stale in ("report.json", "package.json"):
            (s.workdir / stale).unlink(missing_ok=True)
        log(f"quantize: patch recipe, {SCHEME}")
        return Path(int8)
    calib = x[va][: s.calibration] if len(va) else x[tr][: s.calibration]
    int8 = onnx_tools.quantize(fp32, s.workdir / "model.int8.onnx", calib, fam.INPUT)
    for stale in ("report.json", "package.json"):
        (s.workdir / stale).unlink(missing_ok=True)
    log(f"quantized {fp32.name} ({fp32.stat().st_size / 1e6:.2f} MB) to {int8.name} "
        f"({int8.stat().st_size / 1e6:.2f} MB) on {len(calib)} calibration samples")
    return int8


def stage_evaluate(s: BuildSettings, log=common.stderr_log) -> dict:
    """FP32, INT8 (and INT8 on OpenVINO) on the held-out test split; the gate against the floors, the
    INT8 margin and the published version; ``report.json``/``.md`` and plots. Never raises on a
    failed gate: the report says so (``report["gate"]["passed"]``)."""
    fam = _family(s.family)
    meta, a = _trained(s, "evaluate")
    fp32 = _need(s.workdir / "model.fp32.onnx", "train")
    int8 = _need(s.workdir / "model.int8.onnx", "quantize")
    (s.workdir / "package.json").unlink(missing_ok=True)  # a package of an earlier evaluation is stale
    reg = Registry(s.registry)
    name = FAMILIES[s.family]
    x, y, tr, va, te = a["x"], a["y"], a["train"], a["val"], a["test"]
    outs = {"fp32": onnx_tools.run(fp32, x[te]), "int8": onnx_tools.run(int8, x[te])}
    if "openvino" in _engines():
        outs["int8_openvino"] = onnx_tools.run(int8, x[te], "openvino")
    val_int8 = onnx_tools.run(int8, x[va])
    rul_mean = None
    extra: dict = {}
    ds = None  # the images themselves, read once: the perturbed copy and the published version need them
    if s.family == "vision" and meta.get("recipe") == "patch":
        # the threshold was placed at training from out-of-fold scores: NG when 1 - p(good) >= 0.5
        threshold = 0.5
        mets = {k: fam.metrics(o["logits"], y[te], meta["classes"], threshold) for k, o in outs.items()}
        primary = ["ng_recall", "f1_macro"]
        cal = meta["calibration"]
        extra["operating_point"] = {"rule": f"patch recipe: score threshold {cal['centre']:.4g} from out-of-fold "
                                            f"scores of the training images ({cal['rule']})", "threshold": threshold,
                                    "calibration": cal, "validation_curve": []}
        ds = _trained_dataset(s, meta)
        extra["perturbed"] = _perturbed_metrics(ds, meta, fp32, int8, te, y, threshold)
    elif s.family == "vision":
        # the operating point comes from the FP32 model (the reference every form is held to)
        val_fp32 = fam.ng_score(onnx_tools.run(fp32, x[va])["logits"])
        threshold = fam.operating_point(val_fp32, y[va] != 0, s.min_ng_precision)
        mets = {k: fam.metrics(o["logits"], y[te], meta["classes"], threshold) for k, o in outs.items()}
        primary = ["ng_recall", "f1_macro"]
        extra["operating_point"] = {"rule": f"highest NG recall at NG precision >= {s.min_ng_precision} on validation "
                                            "(FP32 scores), centred in logit space", "threshold": threshold,
                                    "min_ng_precision": s.min_ng_precision,
                                    "validation_curve": fam.operating_curve(val_fp32, y[va] != 0)}
        ds = _trained_dataset(s, meta)
        extra["perturbed"] = _perturbed_metrics(ds, meta, fp32, int8, te, y, threshold)
    else:
        threshold = fam.choose_threshold(val_int8["anomaly_score"].reshape(-1),
                                         fam.anomaly_truth(y[va], a["health"][va])[0])
        rul_mean = float(np.nanmean(np.where(a["rul_ok"][tr], a["rul_s"][tr], np.nan)))
        mets = {k: fam.metrics(o, y[te], a["health"][te], a["rul_s"][te], threshold, rul_mean)
                for k, o in outs.items()}
        primary = ["anomaly_auroc", "fault_accuracy"]

    floors = {**DEFAULT_FLOORS[s.family], **s.floors}
    reasons = []
    cand = mets["int8"]
    pert = (extra.get("perturbed") or {}).get("int8", {})
    for k, floor in floors.items():
        got = pert.get(k[len("perturbed_"):]) if k.startswith("perturbed_") and pert else cand.get(k)
        if got is None:
            raise ValueError(f"gate floor {k!r} is not a {s.family} metric; known: "
                             f"{sorted(x for x, v in cand.items() if isinstance(v, float))}"
                             + (" and perturbed_<metric>" if s.family == "vision" else ""))
        if got < floor:
            reasons.append(f"{k} {got:.4f} is below the floor {floor}")
    for k in primary:  # INT8 against FP32 on every engine measured (agents may run either)
        for form in [f for f in mets if f.startswith("int8")]:
            if mets["fp32"][k] - mets[form][k] > s.int8_margin:
                reasons.append(f"{form} loses {mets['fp32'][k] - mets[form][k]:.4f} {k} to FP32 "
                               f"(margin {s.int8_margin})")
    if s.family == "maintenance" and not cand["rul_mae_s"] < cand["rul_mae_naive_s"]:
        reasons.append(f"remaining-life MAE {cand['rul_mae_s']:.0f}s does not beat the naive mean "
                       f"{cand['rul_mae_naive_s']:.0f}s")
    incumbent = reg.latest(name) if s.compare_published else None
    inc_metrics = None
    if incumbent is not None:
        ds = ds or _trained_dataset(s, meta)
        inc_metrics = _evaluate_incumbent(reg, incumbent, s, ds, te, y, threshold_fallback=threshold,
                                          rul_mean=rul_mean)
        for k in primary:
            if inc_metrics is not None and cand[k] + 1e-9 < inc_metrics[k] - s.tolerance:
                reasons.append(f"{k} {cand[k]:.4f} is worse than the published {incumbent['version']} "
                               f"({inc_metrics[k]:.4f}) on the same test set")

    version = s.version or reg.next_version(name)
    speed = {}
    for eng in _engines():
        for thr in (1, 2):
            t_a = onnx_tools.latency_ms(fp32, x[te][:1], eng, thr, n=100)
            t_b = onnx_tools.latency_ms(int8, x[te][:1], eng, thr, n=100)
            speed[f"{eng}_{thr}t"] = {"fp32_ms": t_a, "int8_ms": t_b, "speedup": t_a / t_b}
    report = {
        "name": name, "version": version, "family": s.family, "dataset": meta["dataset"],
        "dataset_digest": meta["dataset_digest"], "seed": meta["seed"], "classes": meta.get("classes", []),
        "split": {"train": len(tr), "val": len(va), "test": len(te)},
        "metrics": mets, "primary": primary, "floors": floors, "int8_margin": s.int8_margin,
        "incumbent": {"version": incumbent["version"], "metrics": inc_metrics} if incumbent else None,
        "gate": {"passed": not reasons, "reasons": reasons},
        "sizes": {"fp32_bytes": fp32.stat().st_size, "int8_bytes": int8.stat().st_size},
        "latency_batch1": speed, "training": meta["training"], "export": meta["export"], "threshold": threshold,
        "calibration_samples": int(min(s.calibration, len(va) or len(tr))),
        "quantization_scheme": _scheme(meta), "recipe": meta.get("recipe"), **extra,
    }
    _write_report(report, s.workdir, mets["int8"], y[te], outs["int8"], s.family,
                  a["health"][te] if s.family == "maintenance" else None)
    log(f"gate: {'PASSED' if not reasons else 'FAILED: ' + '; '.join(reasons)} (report: {s.workdir / 'report.md'})")
    return report


def _scheme(meta: dict) -> str:
    if meta.get("recipe") == "patch":
        from cloud_trainer.train.patch_classifier import SCHEME

        return SCHEME
    return onnx_tools.SCHEME


def _trained_dataset(s: BuildSettings, meta: dict):
    """The dataset `train` used, read again; refused if it changed since."""
    ds = _load_dataset(s.family, Path(meta["dataset"]), meta.get("preprocessing"))
    if ds.digest != meta["dataset_digest"]:
        raise StageError(f"dataset {meta['dataset']} changed since `train` (digest {ds.digest[:19]}…, "
                         f"trained on {meta['dataset_digest'][:19]}…): train again")
    return ds


def _perturbed_metrics(ds, meta: dict, fp32: Path, int8: Path, te, y, threshold: float) -> dict:
    """FP32 and INT8 (ONNX Runtime) on a seeded perturbed copy of the held-out images: the camera
    variation of another day on the line (``perturb.TEST``)."""
    from cloud_trainer.train import perturb, vision
    from model_packager.manifest import ImagePreprocessing

    pre = vision.tile_pre(ImagePreprocessing.model_validate(meta["preprocessing"]))
    xp = vision.tensors(perturb.perturbed_copy([ds.images[i] for i in te], meta["seed"]), pre)
    out = {}
    for form, path in (("fp32", fp32), ("int8", int8)):
        logits = onnx_tools.run(path, xp)["logits"]
        m = vision.metrics(logits, y[te], meta["classes"], threshold)
        out[form] = {k: m[k] for k in ("accuracy", "ng_recall", "ng_precision", "ng_auroc", "f1_macro")}
        ok = y[te] == 0
        out[form]["ok_rejected"] = float(np.mean(vision.ng_score(logits)[ok] >= threshold)) if ok.any() else 0.0
    out["ranges"] = {k: v for k, v in perturb.TEST.__dict__.items()}
    return out


REPORT_FILES = ("report.json", "report.md", "confusion.png", "roc.png", "model.pt")  # model.pt: to fine-tune from


def stage_package(s: BuildSettings, log=common.stderr_log) -> Path:
    """The evaluated INT8 model → a signed package in the work folder, golden inputs from the test
    split. Refused when the report's gate failed, unless ``force``."""
    fam = _family(s.family)
    meta, a = _trained(s, "package")
    report = json.loads(_need(s.workdir / "report.json", "evaluate").read_text())
    int8 = _need(s.workdir / "model.int8.onnx", "quantize")
    if not report["gate"]["passed"]:
        if not s.force:
            raise GateFailed(report["gate"]["reasons"], s.workdir / "report.md")
        log("gate failed but --force was given: packaging anyway, marked as forced")
    pkg = _package(s, report["name"], report["version"], fam, meta, a["x"].shape[1], int8,
                   a["x"][_golden_rows(a["y"], a["test"])], report["threshold"], report)
    (s.workdir / "package.json").write_text(json.dumps({"package": pkg.name, "version": report["version"]}))
    log(f"packaged {pkg}")
    return pkg


def _golden_rows(y: np.ndarray, test: np.ndarray, n: int = 32) -> np.ndarray:
    """``n`` held-out rows for the golden inputs, taken from every class in turn, so that the
    agent's check on its own CPU sees good parts and each defect (or fault), not one class."""
    by_class = [test[y[test] == c].tolist() for c in sorted(set(y[test].tolist()))]
    rows: list[int] = []
    while len(rows) < min(n, len(test)):
        for group in by_class:
            if group and len(rows) < n:
                rows.append(group.pop(0))
    return np.asarray(rows, dtype=np.int64)


def stage_publish(s: BuildSettings, log=common.stderr_log) -> dict:
    """The work folder's package and report → the registry (version, metrics, dataset digest, parent)."""
    report = json.loads(_need(s.workdir / "report.json", "evaluate").read_text())
    pkg = s.workdir / json.loads(_need(s.workdir / "package.json", "package").read_text())["package"]
    forced = not report["gate"]["passed"]
    if forced and not s.force:
        raise GateFailed(report["gate"]["reasons"], s.workdir / "report.md")
    reg = Registry(s.registry)
    key_metrics = {k: v for k, v in report["metrics"]["int8"].items() if isinstance(v, int | float)}
    if forced:
        key_metrics["forced_past_gate"] = 1
    parent = report["incumbent"]["version"] if report["incumbent"] else None
    files = [s.workdir / f for f in REPORT_FILES if (s.workdir / f).exists()]
    entry = reg.publish(pkg, [*files, pkg], key_metrics, report["dataset_digest"], parent)
    log(f"published {entry['name']} {entry['version']} ({pkg.name})")
    return {"entry": entry, "package": str(reg.package_path(entry)), "report": report}


def build(s: BuildSettings, log=common.stderr_log) -> dict:
    """All stages in one go; raises GateFailed (registry unchanged) when the candidate is rejected."""
    t0 = time.perf_counter()
    stage_train(s, log)
    stage_quantize(s, log)
    report = stage_evaluate(s, log)
    if not report["gate"]["passed"] and not s.force:
        raise GateFailed(report["gate"]["reasons"], s.workdir / "report.md")
    stage_package(s, log)
    out = stage_publish(s, log)
    log(f"built and published in {time.perf_counter() - t0:.0f}s")
    return out


def _degrade(model) -> None:
    """Scramble the classifier head: a deliberately bad candidate (the gate must stop it, and, when it
    is forced past the gate as a drill, the agents' health check). A vision model is also made to
    reject every part, as an INT8 model collapsed on its CPU would: whatever threshold its own
    evaluation picks, the line would see its NG rate jump."""
    import torch

    if hasattr(model, "log_centre"):  # the patch recipe: its score threshold far below any score
        model.log_centre.fill_(-50.0)
        return
    head = getattr(model, "fault", None) or model.classmaps
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(p[torch.randperm(p.shape[0])] * -3.0)
        if head is getattr(model, "classmaps", None) and head.bias is not None:
            head.bias[0] -= 50.0  # the "ok" class map: p(ok) ~ 0 for every image


def _evaluate_incumbent(reg: Registry, entry: dict, s: BuildSettings, ds, te, y, threshold_fallback, rul_mean):
    """The published version's metrics on this build's test split, through its own preprocessing."""
    import tempfile

    from model_packager import load_trusted_keys, open_package

    pub = s.signing_key.with_suffix(".pub")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            opened = open_package(reg.package_path(entry), Path(tmp) / "pkg", load_trusted_keys([pub]))
            m = opened.manifest
            if s.family == "vision":
                from cloud_trainer.train import vision

                xi = vision.tensors([ds.images[i] for i in te], vision.tile_pre(m.preprocessing))
                out = onnx_tools.run(opened.model_path, xi)
                thr = next((o.threshold for o in m.outputs if o.threshold is not None), threshold_fallback)
                return vision.metrics(out["logits"], y[te], ds.classes, thr)
            from cloud_trainer.train import maintenance
            from model_packager.preprocess import signal_features

            xi = np.concatenate([signal_features(w, None, m.preprocessing) for w in ds.waveforms[te]])
            out = onnx_tools.run(opened.model_path, xi)
            thr = next((o.threshold for o in m.outputs if o.role.value == "anomaly_score"), threshold_fallback)
            return maintenance.metrics(out, y[te], ds.health[te], ds.rul_s[te], thr, rul_mean)
    except Exception as exc:  # an unreadable incumbent must not block a good candidate; say so
        common.stderr_log(f"could not evaluate the published {entry['version']}: {exc}")
        return None


def _write_report(report: dict, workdir: Path, m: dict, y, out, family: str, health=None) -> list[Path]:
    (workdir / "report.json").write_text(json.dumps(report, indent=1, default=float))
    from cloud_trainer.train.data import FAULTS

    labels = report["classes"] if family == "vision" else FAULTS
    common.plot_confusion(workdir / "confusion.png", np.asarray(m["confusion"]), labels,
                          f"{report['name']} {report['version']} INT8, test set")
    if family == "vision":
        from cloud_trainer.train.vision import ng_score

        rec, prec = common.pr_points(y != 0, ng_score(out["logits"]))
        common.plot_curve(workdir / "roc.png", rec, prec, "NG precision-recall (INT8, test)", "recall", "precision")
    else:
        from cloud_trainer.train.maintenance import anomaly_truth

        anom, counted = anomaly_truth(y, health)
        fpr, tpr = common.roc_points(anom[counted], out["anomaly_score"].reshape(-1)[counted])
        common.plot_curve(workdir / "roc.png", fpr, tpr, "anomaly ROC (INT8, test)", "false positive rate",
                          "true positive rate", diagonal=True)
    md = [f"# {report['name']} {report['version']} — evaluation report", "",
          f"Dataset `{report['dataset']}` ({report['dataset_digest'][:19]}…), seed {report['seed']}, split "
          f"{report['split']}. Gate: **{'passed' if report['gate']['passed'] else 'FAILED'}**"
          + ("" if report["gate"]["passed"] else " — " + "; ".join(report["gate"]["reasons"])), "",
          "| metric | FP32 (ORT) | INT8 (ORT) | INT8 (OpenVINO) | floor |", "|---|---:|---:|---:|---:|"]
    for k in report["metrics"]["int8"]:
        v = report["metrics"]["int8"][k]
        if not isinstance(v, int | float) or k == "n":
            continue
        f32 = report["metrics"]["fp32"][k]
        ov = report["metrics"].get("int8_openvino", {}).get(k)
        md.append(f"| {k} | {f32:.4f} | {v:.4f} | {'' if ov is None else f'{ov:.4f}'} | "
                  f"{report['floors'].get(k, '')} |")
    if report["incumbent"] and report["incumbent"]["metrics"]:
        md += ["", f"Published {report['incumbent']['version']} on the same test set: "
               + ", ".join(f"{k} {report['incumbent']['metrics'][k]:.4f}" for k in report["primary"])]
    if report.get("perturbed"):
        pt = report["perturbed"]
        md += ["", "Perturbed copy of the test split (exposure, light gradient, blur, noise, JPEG, pose; seeded), "
               "at the same threshold:", "", "| form | accuracy | NG recall | NG precision | good parts rejected |",
               "|---|---:|---:|---:|---:|"]
        md += [f"| {f} | {pt[f]['accuracy']:.4f} | {pt[f]['ng_recall']:.4f} | {pt[f]['ng_precision']:.4f} | "
               f"{pt[f]['ok_rejected']:.1%} |" for f in ("fp32", "int8")]
    if report.get("operating_point"):
        op = report["operating_point"]
        md += ["", f"Operating point: threshold {op['threshold']:.4g} on the NG score (1 − p(ok)); {op['rule']}.",
               "", "| threshold | NG recall | NG precision | good parts rejected |", "|---:|---:|---:|---:|"]
        md += [f"| {c['threshold']:.3g} | {c['ng_recall']:.3f} | {c['ng_precision']:.3f} | {c['ok_rejected']:.1%} |"
               for c in op["validation_curve"][::4]]
    md += ["", "| engine, threads | FP32 ms | INT8 ms | speed-up |", "|---|---:|---:|---:|"]
    for k, v in report["latency_batch1"].items():
        md.append(f"| {k} | {v['fp32_ms']:.3f} | {v['int8_ms']:.3f} | {v['speedup']:.2f}x |")
    md += ["", f"Model size: FP32 {report['sizes']['fp32_bytes'] / 1e6:.2f} MB, INT8 "
           f"{report['sizes']['int8_bytes'] / 1e6:.2f} MB; ONNX opset {report['export']['onnx_opset']}, dynamic "
           f"batch. Training {report['training']['seconds']:.0f} s, "
           f"{len(report['training']['history'])} epochs.", "", "![confusion](confusion.png) ![curve](roc.png)"]
    (workdir / "report.md").write_text("\n".join(md) + "\n")
    return [workdir / "report.json", workdir / "report.md", workdir / "confusion.png", workdir / "roc.png"]


def _package(s: BuildSettings, name, version, fam, meta: dict, n_features: int, int8: Path, golden_x, threshold,
             report) -> Path:
    from cloud_trainer.train.data import FAULTS
    from model_packager import build_package

    if s.family == "vision":
        classes = meta["classes"]  # from the dataset, the good class first
        pre = meta["preprocessing"]
        patch = meta.get("recipe") == "patch"
        if patch:
            from cloud_trainer.train.patch_classifier import heatmap_shape
        hh, ww = (heatmap_shape if patch else fam.heatmap_shape)(pre)
        channels = 1 if pre.get("color") == "gray" else 3
        outputs = [{"name": "logits", "dtype": "float32", "shape": ["batch", len(classes)],
                    "role": "class_logits", "labels": classes, "ok_label": classes[0], "threshold": threshold},
                   {"name": "heatmap", "dtype": "float32", "shape": ["batch", 1, hh, ww], "role": "heatmap"}]
        inputs = [{"name": "image", "dtype": "float32", "shape": ["batch", channels, pre["height"], pre["width"]],
                   "layout": "NCHW"}]
        task = "vision_inspection"
        metric_name = "ng_recall"
    else:
        outputs = [{"name": "anomaly_score", "dtype": "float32", "shape": ["batch", 1], "role": "anomaly_score",
                    "threshold": threshold},
                   {"name": "fault_logits", "dtype": "float32", "shape": ["batch", len(FAULTS)],
                    "role": "class_logits", "labels": FAULTS, "ok_label": "healthy"},
                   {"name": "remaining_life", "dtype": "float32", "shape": ["batch", 1], "role": "remaining_life",
                    "unit": "s"}]
        inputs = [{"name": "features", "dtype": "float32", "shape": ["batch", n_features], "layout": "NC"}]
        task = "equipment_maintenance"
        metric_name = "fault_accuracy"
    # The package carries the FP32 model beside the INT8 one: the golden expected outputs are the FP32
    # model's (tight tolerance on every engine) and the INT8 form is held to parity bounds measured
    # here (model_packager), which an agent re-checks on its own CPU before serving INT8.
    atol, output_atol = 2e-3, {}
    m8, m32 = report["metrics"]["int8"], report["metrics"]["fp32"]
    sp = report["latency_batch1"].get("onnxruntime_1t", {})
    spec = {
        "name": name, "version": version, "task": task, "inputs": inputs, "outputs": outputs,
        "description": f"{s.family} model trained by cloud_trainer on {Path(meta['dataset']).name}",
        "preprocessing": meta["preprocessing"],
        **({"input_stats": meta["input_stats"]} if meta.get("input_stats") else {}),
        "golden": {"atol": atol, "rtol": 2e-2, "output_atol": output_atol},
        "quantization": {"scheme": _scheme(meta), "calibration_samples": report["calibration_samples"],
            "fp32_metric": m32[metric_name], "int8_metric": m8[metric_name], "metric_name": metric_name,
            "accuracy_delta": m8[metric_name] - m32[metric_name], "fp32_size_bytes": report["sizes"]["fp32_bytes"],
            "int8_size_bytes": report["sizes"]["int8_bytes"], "speedup": sp.get("speedup")},
        "provenance": {"dataset_digest": report["dataset_digest"], "trainer": "cloud_trainer.train 0.1",
                       "parent_version": report["incumbent"]["version"] if report["incumbent"] else None,
                       "seed": meta["seed"], **meta["export"],
                       "metrics": {k: float(v) for k, v in m8.items() if isinstance(v, int | float)}},
    }
    (s.workdir / "report.json").write_text(json.dumps(report, indent=1, default=float))  # + golden tolerance
    fp32 = s.workdir / "model.fp32.onnx"
    if meta.get("recipe") == "patch":  # the FP32 graph is the served form (the "int8" file is its copy)
        int8, fp32 = fp32, None
        spec["quantization"].update(calibration_samples=0, int8_size_bytes=None, speedup=None, accuracy_delta=0.0)
    return build_package(int8, spec, s.workdir, signing_key=s.signing_key, golden_inputs={fam.INPUT: golden_x},
                         openvino=s.openvino and "openvino" in _engines(), fp32_model=fp32,
                         extra_files={"report.json": s.workdir / "report.json"})
