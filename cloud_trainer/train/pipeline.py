"""dataset → train → export → INT8 → evaluate → gate → package → publish, for every trainer family.

``build(...)`` is a plain function of (dataset folder, settings) → a package in the registry (or a
rejection with its report), so a job scheduler can run it anywhere. Every stage writes into the
work folder: ``model.fp32.onnx``, ``model.int8.onnx``, ``report.json``, ``report.md``,
``confusion.png`` and ``roc.png`` (vision: PR curve), the package.

The gate, on the same held-out test split: the candidate (its INT8 model, what agents run) must
meet the configured floors, lose at most ``int8_margin`` to its FP32 form, and, when a version is
already published, not be worse than that version evaluated on the same data. A candidate that
fails is not packaged into the registry, which stays unchanged.

INT8 is also held to FP32 item by item on the whole held-out split, on every engine measured
(``_int8_parity``): its decisions (class, verdict at the threshold) must agree on at least
``int8_min_agreement`` of the items, and no output a verdict or a figure is read from may move by
more than ``int8_max_deviation`` of its scale (an anomaly score: its threshold; class logits,
remaining life: their FP32 range on the split; a heat map is shown, not decided on, and is only
bounded as measured). Beyond that the FP32 model is served (or, with ``require_int8``, the gate
fails). The package's ``parity`` bounds, which an agent re-checks on its own CPU, are the deviations
measured on the whole split with headroom, never above those limits, and its golden inputs cover the
split: every class, each output's lowest and highest items (a near-failure window's remaining life),
the items nearest the threshold and those INT8 moved most (``_golden_rows``).

What differs between families (dataset, model, metrics, threshold, the gate's own checks, plots,
the manifest's inputs and outputs) is a hook of the family's class (``families.TrainerFamily``),
looked up in ``families.TRAINER_FAMILIES``: this module names no family.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloud_trainer.registry import Registry
from cloud_trainer.train import common, families, onnx_tools
from cloud_trainer.train.data import path_text
from cloud_trainer.train.families import StageError, TrainerFamily
from protocols import json_codec


class GateFailed(RuntimeError):
    def __init__(self, reasons: list[str], report: Path) -> None:
        super().__init__("; ".join(reasons))
        self.reasons, self.report = reasons, report


@dataclass
class BuildSettings:
    family: str
    dataset: Path | None  # None for the stages that do not read it (quantize, package, ...)
    registry: Path | None  # None for the stages that do not use it (train, quantize)
    signing_key: Path
    workdir: Path
    seed: int = 0
    epochs: int = 25
    epochs_given: bool = True  # False: the family's default (the vision family's patch recipe takes its own)
    size: int = 128  # vision: the model's input (pixels, per tile when tiled)
    roi: list[int] | None = None  # vision: [x, y, width, height] pixel box of the frame
    tiles: list[int] | None = None  # vision: [columns, rows] of tiles over the frame (or roi)
    color: str = "rgb"  # vision: rgb | gray
    threads: int | None = None
    floors: dict = field(default_factory=dict)
    int8_margin: float = 0.01
    require_int8: bool = False  # refuse a candidate whose INT8 misses int8_margin instead of serving FP32
    # INT8 against FP32 on every held-out item (see the module text): the share of items whose decisions
    # must agree, and how far an output may move, as a share of its scale
    int8_min_agreement: float = 0.99
    int8_max_deviation: float = 0.05
    version: str | None = None
    calibration: int = 200
    openvino: bool = True
    compare_published: bool = True
    degrade: bool = False  # deliberately damage the candidate (for demos of the gate / rollback)
    tolerance: float = 0.01  # how much worse than the published version a primary metric may be
    force: bool = False  # publish even when the gate fails (recorded as forced; for drills and demos)
    init_from: Path | None = None  # vision: fine-tune from these weights (a work folder or its model.pt)
    min_ng_precision: float = (
        0.98  # vision operating point: highest NG recall at this precision on validation
    )
    false_reject_rate: float = 0.01  # vision, patch recipes: share of good parts the threshold may reject
    signal_features: str = (
        "condition"  # maintenance: condition | bands (see cloud_trainer/train/maintenance.py)
    )
    bearing: list[float] | None = None  # maintenance: n_elements, ball_d_mm, pitch_d_mm[, contact_angle_deg]
    speed_tag: str | None = (
        None  # maintenance: scalar input with the shaft speed (rpm); the dataset gives speed_rpm
    )
    recipe: str = (
        "auto"  # vision: "patch" (patch_classifier), "cnn" (vision.train), or "auto" (see vision_recipe)
    )
    name: str | None = None  # the package's registry name (--name); None: the family's package_name


def _engines() -> list[str]:
    import importlib.util

    return [e for e in ("onnxruntime", "openvino") if importlib.util.find_spec(e)]


def _family(name: str) -> TrainerFamily:
    """A family the stage verbs train (the table's families with their own build are refused)."""
    staged = families.family_names("train")
    if name not in staged:
        raise ValueError(f"unknown family {name!r}; expected one of {sorted(staged)}")
    return families.load_family(name)


def _given(value: Path | None, option: str) -> Path:
    """A setting this stage needs (the CLI passes None for the options its verb does not take)."""
    if value is None:
        raise StageError(f"this stage needs {option}")
    return value


def _need(path: Path, stage: str) -> Path:
    if not path.exists():
        raise StageError(f"{path} is missing: run `cloud-trainer {stage}` with this work folder first")
    return path


def stage_train(s: BuildSettings, log=common.stderr_log) -> dict:
    """dataset → trained model, exported to ``model.fp32.onnx``; the arrays and split every later
    stage evaluates on go to ``train.npz``, the facts to ``train.json``."""
    fam = _family(s.family)
    t0 = time.perf_counter()
    s.workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("model.int8.onnx", "report.json", "package.json"):  # a new model invalidates later stages
        (s.workdir / stale).unlink(missing_ok=True)
    pre = fam.preprocessing(s)
    ds = fam.load_dataset(_given(s.dataset, "--dataset"), pre.model_dump(mode="json") if pre else None)
    tr_out = fam.train(s, ds, pre, log)
    if s.degrade:
        _degrade(tr_out["model"])
    x = tr_out["x"]
    import torch

    recipe = tr_out.get("recipe")  # a family's recipe, when it has several (vision: patch | cnn)
    if recipe == "patch":  # nothing to fine-tune from: the bank is rebuilt from the images
        (s.workdir / "model.pt").unlink(missing_ok=True)
    else:
        torch.save(
            tr_out["model"].state_dict(), s.workdir / "model.pt"
        )  # for a later fine-tune (--init-from)
    # the patch graph broadcasts (N, 1) against constants: a batch-of-one example would fix N to 1. Its two
    # images come from the test split, which the bank never held: a patch the bank holds lies at distance ~0,
    # where the log distance magnifies the FP32 rounding of ONNX Runtime against PyTorch (d² by cancellation)
    # beyond the export check's bounds, so every patch model went to the slow dynamo exporter, whose file gives
    # the same outputs as the TorchScript exporter's
    test_rows = tr_out["split"][2]
    example = (x[test_rows[:2]] if len(test_rows) >= 2 else x[:2]) if recipe == "patch" else x[:1]
    onnx_tools.export(tr_out["model"], example, s.workdir / "model.fp32.onnx", fam.INPUT, fam.OUTPUTS)
    tr, va, te = tr_out["split"]
    arrays = {"x": x, "y": tr_out["y"], "train": tr, "val": va, "test": te}
    arrays.update(fam.train_arrays(tr_out))
    np.savez(s.workdir / "train.npz", **arrays)
    meta = {
        "family": s.family,
        "dataset": str(s.dataset),
        "dataset_digest": ds.digest,
        "seed": s.seed,
        "size": s.size,
        "preprocessing": tr_out["pre"].model_dump(mode="json"),
        "classes": list(getattr(ds, "classes", [])),
        "degraded": s.degrade,
        "recipe": recipe,
        "split_rule": tr_out.get("split_rule"),  # how the gate's test rows were chosen (vision)
        "calibration": tr_out.get("calibration"),
        "init_from": str(s.init_from) if s.init_from else None,
        "export": {"onnx_opset": onnx_tools.OPSET, "dynamic_batch": True},
        "input_stats": fam.input_stats(ds, tr),
        "training": {"seconds": time.perf_counter() - t0, "history": tr_out["history"]["epochs"]},
    }
    from model_packager.inputstats import LOCAL_FILE, camera_lines

    local = fam.input_stats_local(ds, tr) if meta["input_stats"] else None
    (s.workdir / LOCAL_FILE).unlink(missing_ok=True)  # never a former build's
    if local is not None:  # colour, light banding, sharpness by region: packaged beside the manifest
        (s.workdir / LOCAL_FILE).write_text(json.dumps(local))
        for line in camera_lines(local.get("frame") or {}):  # the cameras the frame-shape check accepts
            log(f"{s.family}: {line}")
    if meta["split_rule"]:
        log(f"{s.family}: the gate's test set: {meta['split_rule']}")
    meta.update(fam.train_meta(ds, log))
    (s.workdir / "train.json").write_text(json.dumps(meta, indent=1, default=float))
    log(f"trained {s.family} in {meta['training']['seconds']:.0f}s; exported {s.workdir / 'model.fp32.onnx'}")
    return meta


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

        int8 = Path(shutil.copyfile(fp32, s.workdir / "model.int8.onnx"))
        for stale in ("report.json", "package.json"):
            (s.workdir / stale).unlink(missing_ok=True)
        log(f"quantize: patch recipe, {SCHEME}")
        return int8
    calib = x[va][: s.calibration] if len(va) else x[tr][: s.calibration]
    int8 = onnx_tools.quantize(fp32, s.workdir / "model.int8.onnx", calib, fam.INPUT)
    for stale in ("report.json", "package.json"):
        (s.workdir / stale).unlink(missing_ok=True)
    log(
        f"quantized {fp32.name} ({fp32.stat().st_size / 1e6:.2f} MB) to {int8.name} "
        f"({int8.stat().st_size / 1e6:.2f} MB) on {len(calib)} calibration samples"
    )
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
    reg = Registry(_given(s.registry, "--registry"))
    name = s.name or fam.package_name  # --name: a second product's model beside the first's
    x, y, tr, va, te = a["x"], a["y"], a["train"], a["val"], a["test"]
    outs = {"fp32": onnx_tools.run(fp32, x[te]), "int8": onnx_tools.run(int8, x[te])}
    if "openvino" in _engines():
        outs["int8_openvino"] = onnx_tools.run(int8, x[te], "openvino")
    # the dataset itself, read once and only when needed (a family's evaluation, the published version)
    dataset = functools.cache(functools.partial(_trained_dataset, s, meta))
    ev = fam.evaluate(s, meta, a, outs, fp32, int8, dataset)
    mets, threshold, extra, primary = ev.metrics, ev.threshold, ev.extra, list(fam.primary)
    parity = _int8_parity(fam, meta, x.shape[1], threshold, outs, s)

    floors = {**fam.default_floors, **s.floors}
    reasons = []
    int8_gaps = [  # INT8 against FP32 on every engine measured (agents may run either)
        f"{form} loses {mets['fp32'][k] - mets[form][k]:.4f} {k} to FP32 (margin {s.int8_margin})"
        for k in primary
        for form in [f for f in mets if f.startswith("int8")]
        if mets["fp32"][k] - mets[form][k] > s.int8_margin
    ] + parity["problems"]
    # INT8 is a speed-up, not the model: a candidate whose INT8 form misses the margin is judged, packaged
    # and served as FP32 (unless --require-int8), so that a retrain better than the published version is
    # not thrown away over a few test images the quantization moves
    served = "fp32" if int8_gaps and not s.require_int8 else "int8"
    patch = meta.get("recipe") == "patch"  # no INT8 form: its "int8" file is the FP32 model the package holds
    if patch:
        served, int8_gaps = "fp32", []
    if served == "int8":
        reasons += int8_gaps
    cand = mets[served]
    pert = (extra.get("perturbed") or {}).get(served, {})
    for k, floor in floors.items():
        got = pert.get(k[len("perturbed_") :]) if k.startswith("perturbed_") and pert else cand.get(k)
        if got is None:
            raise ValueError(
                f"gate floor {k!r} is not a {s.family} metric; known: "
                f"{sorted(x for x, v in cand.items() if isinstance(v, float))}" + fam.floor_hint
            )
        if got < floor:
            reasons.append(f"{k} {got:.4f} is below the floor {floor}")
    reasons += fam.gate_reasons(cand)
    incumbent = reg.latest(name) if s.compare_published else None
    inc_metrics = None
    if incumbent is not None:
        inc_metrics = _evaluate_incumbent(
            reg, incumbent, s, fam, dataset(), te, y, threshold_fallback=threshold, context=ev.context
        )
        for k in primary:
            if inc_metrics is not None and cand[k] + 1e-9 < inc_metrics[k] - s.tolerance:
                reasons.append(
                    f"{k} {cand[k]:.4f} is worse than the published {incumbent['version']} "
                    f"({inc_metrics[k]:.4f}) on the same test set"
                )

    # chosen here, for a candidate the gate passed (or forced past it), is reserved: another build choosing now gets
    # the next one (both took one version, and the second to publish failed after its whole training)
    version = s.version or (reg.reserve_version(name) if not reasons or s.force else reg.next_version(name))
    speed = {}
    for eng in _engines():
        for thr in (1, 2):
            t_a = onnx_tools.latency_ms(fp32, x[te][:1], eng, thr, n=100)
            if patch:  # no INT8 form: its "int8" file is this FP32 model, not timed against itself
                speed[f"{eng}_{thr}t"] = {"fp32_ms": t_a, "int8_ms": None, "speedup": None}
                continue
            t_b = onnx_tools.latency_ms(int8, x[te][:1], eng, thr, n=100)
            speed[f"{eng}_{thr}t"] = {"fp32_ms": t_a, "int8_ms": t_b, "speedup": t_a / t_b}
    report = {
        "name": name,
        "version": version,
        "family": s.family,
        "dataset": path_text(meta["dataset"]),  # as text: a folder's name in bytes that are not UTF-8 as \xfc
        "dataset_digest": meta["dataset_digest"],
        "seed": meta["seed"],
        "classes": meta.get("classes", []),
        "split": {"train": len(tr), "val": len(va), "test": len(te)},
        **({"split_rule": meta["split_rule"]} if meta.get("split_rule") else {}),
        "metrics": mets,
        "primary": primary,
        "floors": floors,
        "int8_margin": s.int8_margin,
        "int8_min_agreement": s.int8_min_agreement,
        "int8_max_deviation": s.int8_max_deviation,
        "served": served,
        "served_why": (
            "the patch recipe has no INT8 form (fixed texture features or a small patch net): the package "
            "serves the FP32 model"
            if patch
            else "; ".join(int8_gaps) + ": the package serves the FP32 model (--require-int8 refuses instead)"
            if served == "fp32"
            else "; ".join(int8_gaps) + ": --require-int8 refuses the candidate"
            if int8_gaps
            else "INT8 within the margin of FP32 on every engine, and within its parity limits on every "
            f"held-out item ({parity['items']})"
        ),
        "int8_parity": parity,
        "incumbent": {"version": incumbent["version"], "metrics": inc_metrics} if incumbent else None,
        "gate": {"passed": not reasons, "reasons": reasons},
        "sizes": {"fp32_bytes": fp32.stat().st_size, "int8_bytes": None if patch else int8.stat().st_size},
        "latency_batch1": speed,
        "training": meta["training"],
        "export": meta["export"],
        "threshold": threshold,
        "calibration_samples": int(min(s.calibration, len(va) or len(tr))),
        "quantization_scheme": _scheme(meta),
        "recipe": meta.get("recipe"),
        **extra,
    }
    _write_report(report, s.workdir, mets[served], y[te], outs[served], fam, a, te)
    log(
        f"gate: {'PASSED' if not reasons else 'FAILED: ' + '; '.join(reasons)} (report: {s.workdir / 'report.md'})"
    )
    if served == "fp32":
        log(f"served form: FP32, as {report['served_why']}")
    return report


def _output_specs(fam: TrainerFamily, meta: dict, n_features: int, threshold: float) -> list:
    """The family's outputs as the manifest will declare them (roles, labels, threshold)."""
    from model_packager.manifest import OutputSpec

    _, outputs, _, _ = fam.package_io(meta, n_features, threshold)
    return [OutputSpec.model_validate(o) for o in outputs]


def _int8_parity(
    fam: TrainerFamily, meta: dict, n_features: int, threshold: float, outs: dict, s: BuildSettings
) -> dict:
    """INT8 against FP32 on every held-out test item, on every engine measured (``outs``: form ->
    outputs; ``fp32`` is the reference): the largest deviation of each output, the share of items whose
    decisions agree, the limits (``int8_max_deviation`` of each output's scale, ``int8_min_agreement``)
    and what breaks them (``problems``: the INT8 form is then not served).

    The 32 golden inputs alone did not show it: machine-health built as the demo builds it (20 machines x
    50 windows) moved held-out windows' anomaly scores by up to 0.085 (threshold 0.126) and remaining
    life by 30 s in INT8, while its bounds, 3x the golden items' deviation, stated 0.015 and 21.7 s."""
    from model_packager.golden import output_parity
    from model_packager.manifest import OutputRole

    specs = _output_specs(fam, meta, n_features, threshold)
    ref = outs["fp32"]
    n = int(len(next(iter(ref.values())))) if ref else 0
    limits, basis = {}, {}
    for o in specs:
        v = np.asarray(ref.get(o.name, ()), dtype=np.float64)
        if o.role in (OutputRole.HEATMAP, OutputRole.ANOMALY_MAP):
            continue  # a map is shown, not decided on: measured and bounded (``_parity_spec``), not limited
        if o.role is OutputRole.ANOMALY_SCORE and o.threshold is not None:
            # a score is read against its threshold: a move of a share of it is what flips verdicts
            scale, basis[o.name] = abs(float(o.threshold)), "the threshold"
        else:
            finite = v[np.isfinite(v)]
            scale, basis[o.name] = (
                float(finite.max() - finite.min()) if finite.size else 0.0,
                "its FP32 range on the held-out set",
            )
        limits[o.name] = max(s.int8_max_deviation * scale, 1e-6)
    forms, problems = {}, []
    for form in [f for f in outs if f.startswith("int8")]:
        dev, agree = output_parity(specs, ref, outs[form])
        forms[form] = {"max_deviation": dev, "agreement": agree}
        for k, d in dev.items():
            if k in limits and not d <= limits[k]:
                problems.append(
                    f"{form} moves {k!r} by up to {d:.3g} from FP32 on the held-out set (limit {limits[k]:.3g}, "
                    f"{s.int8_max_deviation:.0%} of {basis[k]})"
                )
        if agree + 1e-9 < s.int8_min_agreement:
            problems.append(
                f"{form} decides otherwise than FP32 on {round((1 - agree) * n)} of {n} held-out items "
                f"(agrees on {agree:.1%}, needs {s.int8_min_agreement:.1%})"
            )
    return {
        "items": n,
        "limits": {"output_atol": limits, "min_agreement": s.int8_min_agreement, "basis": basis},
        "forms": forms,
        "problems": problems,
    }


def _scheme(meta: dict) -> str:
    if meta.get("recipe") == "patch":
        from cloud_trainer.train.patch_classifier import SCHEME

        return SCHEME
    return onnx_tools.SCHEME


def _trained_dataset(s: BuildSettings, meta: dict):
    """The dataset `train` used, read again; refused if it changed since."""
    ds = _family(s.family).load_dataset(Path(meta["dataset"]), meta.get("preprocessing"))
    if ds.digest != meta["dataset_digest"]:
        raise StageError(
            f"dataset {meta['dataset']} changed since `train` (digest {ds.digest[:19]}…, "
            f"trained on {meta['dataset_digest'][:19]}…): train again"
        )
    return ds


GOLDEN_ATOL = 2e-3  # the golden check's absolute tolerance (FP32 outputs on any engine)

REPORT_FILES = (
    "report.json",
    "report.md",
    "confusion.png",
    "roc.png",
    "model.pt",
)  # model.pt: to fine-tune from


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
    x, te = a["x"], a["test"]
    specs = _output_specs(fam, meta, x.shape[1], report["threshold"])
    ref = onnx_tools.run(s.workdir / "model.fp32.onnx", x[te])
    int8_runs = []
    if report.get("served", "int8") == "int8" and meta.get("recipe") != "patch":
        int8_runs = [onnx_tools.run(int8, x[te], eng) for eng in _engines()]
    notes: list[str] = []
    pkg = _package(
        s,
        report["name"],
        report["version"],
        fam,
        meta,
        x.shape[1],
        int8,
        x[_golden_rows(a["y"], te, specs, ref, int8_runs)],
        report["threshold"],
        report,
        _parity_spec(ref, int8_runs, specs, report),
        notes,
    )
    golden_notes(s.workdir, report, notes, log)
    (s.workdir / "package.json").write_text(json.dumps({"package": pkg.name, "version": report["version"]}))
    log(f"packaged {pkg}")
    return pkg


GOLDEN_ITEMS = 32


def _golden_rows(
    y: np.ndarray,
    test: np.ndarray,
    specs: list | None = None,
    ref: dict[str, np.ndarray] | None = None,
    int8_runs: list[dict[str, np.ndarray]] | None = None,
    n: int = GOLDEN_ITEMS,
) -> np.ndarray:
    """``n`` held-out rows for the golden inputs, covering what the model meets, so that an agent's
    check of the INT8 form on its own CPU sees it: with the FP32 outputs (``ref``, by test row) first
    the items nearest each threshold on either side (the decision boundary), each single-valued output's
    lowest and highest item (a near-failure window's remaining life, the most anomalous), and the items
    INT8 moved most (``int8_runs``, one run per engine); then every class in turn, so that the check sees
    good parts and each defect (or fault). Items whose decisions INT8 changes on this machine are left out:
    the trainer's gate has counted them against ``int8_min_agreement``, and at the agent a changed
    decision on a golden item means its CPU differs."""
    from model_packager.golden import decisions

    test = np.asarray(test, dtype=np.int64)
    keep = np.ones(len(test), dtype=bool)
    first: list[int] = []  # positions in test
    if specs and ref:
        want = decisions(specs, ref)
        for run in int8_runs or []:
            got = decisions(specs, run)
            if got.shape == want.shape and want.size:
                keep &= np.all(got == want, axis=1)
        for o in specs:
            v = np.asarray(ref.get(o.name, ()), dtype=np.float64).reshape(len(test), -1)
            if not v.size:
                continue
            score = None
            if o.role.value == "anomaly_score" and o.threshold is not None:
                score = v[:, 0]
            elif o.ok_label is not None and o.threshold is not None and o.labels:
                z = np.exp(v - v.max(1, keepdims=True))
                score = 1.0 - (z / z.sum(1, keepdims=True))[:, o.labels.index(o.ok_label)]
            if score is not None:  # two on each side of the threshold
                below = np.flatnonzero(score < o.threshold)
                above = np.flatnonzero(score >= o.threshold)
                first += below[np.argsort(o.threshold - score[below])][:2].tolist()
                first += above[np.argsort(score[above] - o.threshold)][:2].tolist()
            if v.shape[1] == 1:
                first += [int(np.argmin(v[:, 0])), int(np.argmax(v[:, 0]))]
        if int8_runs:
            moved = np.zeros(len(test))
            for run in int8_runs:
                for o in specs:
                    r = np.asarray(ref[o.name], dtype=np.float64).reshape(len(test), -1)
                    g = np.asarray(run[o.name], dtype=np.float64).reshape(len(test), -1)
                    span = float(np.ptp(r)) or 1.0
                    moved = np.maximum(moved, np.nan_to_num(np.abs(g - r).max(1), nan=np.inf) / span)
            first += np.argsort(-moved)[:4].tolist()
    rows: list[int] = []
    for i in first:
        if keep[i] and int(test[i]) not in rows and len(rows) < n // 2:
            rows.append(int(test[i]))
    # within each class the items the model labels as it first: a golden item taken for a class the model
    # gets wrong leaves that class no item's top label, which the agent's check then cannot judge
    right = np.zeros(len(test), dtype=bool)
    for o in specs or []:
        out = (ref or {}).get(o.name)
        if out is not None and o.role.value in ("class_logits", "class_probs") and o.labels:
            right = np.asarray(out).reshape(len(test), -1).argmax(1) == y[test]
            break
    by_class = [
        [
            int(test[i])
            for want in (right, ~right)
            for i in np.flatnonzero(keep & (y[test] == c) & want)
            if int(test[i]) not in rows
        ]
        for c in sorted(set(y[test].tolist()))
    ]
    while len(rows) < min(n, int(keep.sum())) and any(by_class):
        for group in by_class:
            if group and len(rows) < n:
                rows.append(group.pop(0))
    return np.asarray(rows, dtype=np.int64)


def _parity_spec(
    ref: dict[str, np.ndarray], int8_runs: list[dict[str, np.ndarray]], specs: list, report: dict
) -> dict | None:
    """The package's ``parity`` bounds for an INT8 form (None when FP32 is served): the largest
    deviation from FP32 measured on the whole held-out set on any engine here, with the packager's
    headroom (at least the golden atol), but never above the trainer's limits, which that deviation met
    (``report["int8_parity"]``); ``min_agreement`` is the trainer's ``int8_min_agreement``."""
    from model_packager.golden import output_parity
    from model_packager.package import PARITY_HEADROOM

    lim = (report.get("int8_parity") or {}).get("limits")
    if not int8_runs or not lim:
        return None
    measured: dict[str, float] = {}
    for run in int8_runs:
        dev, _ = output_parity(specs, ref, run)
        for k, d in dev.items():
            measured[k] = max(measured.get(k, 0.0), d)
    atol = {
        k: round(min(lim["output_atol"].get(k, np.inf), max(PARITY_HEADROOM * d, GOLDEN_ATOL)), 6)
        for k, d in measured.items()
        if np.isfinite(d)
    }
    return {"output_atol": atol, "min_agreement": lim["min_agreement"]}


def stage_publish(s: BuildSettings, log=common.stderr_log) -> dict:
    """The work folder's package and report → the registry (version, metrics, dataset digest, parent)."""
    report = json.loads(_need(s.workdir / "report.json", "evaluate").read_text())
    pkg = s.workdir / json.loads(_need(s.workdir / "package.json", "package").read_text())["package"]
    forced = not report["gate"]["passed"]
    if forced and not s.force:
        raise GateFailed(report["gate"]["reasons"], s.workdir / "report.md")
    reg = Registry(_given(s.registry, "--registry"))
    served = report.get("served", "int8")
    key_metrics = {k: v for k, v in report["metrics"][served].items() if isinstance(v, int | float)}
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
    head: Any = getattr(model, "fault", None) or model.classmaps  # a torch module (torch is not typed here)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(p[torch.randperm(p.shape[0])] * -3.0)
        classmaps = getattr(model, "classmaps", None)
        if classmaps is not None and head is classmaps and classmaps.bias is not None:
            classmaps.bias[0] -= 50.0  # the "ok" class map: p(ok) ~ 0 for every image


def _evaluate_incumbent(
    reg: Registry,
    entry: dict,
    s: BuildSettings,
    fam: TrainerFamily,
    ds,
    te,
    y,
    threshold_fallback,
    context: dict,
):
    """The published version's metrics on this build's test split, through its own preprocessing."""
    import tempfile

    from model_packager import load_trusted_keys, open_package

    pub = s.signing_key.with_suffix(".pub")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            opened = open_package(reg.package_path(entry), Path(tmp) / "pkg", load_trusted_keys([pub]))
            return fam.incumbent_metrics(opened, ds, te, y, threshold_fallback, context)
    except Exception as exc:  # an unreadable incumbent must not block a good candidate; say so
        common.stderr_log(f"could not evaluate the published {entry['version']}: {exc}")
        return None


def _write_report(
    report: dict, workdir: Path, m: dict, y, out, fam: TrainerFamily, a: dict, te
) -> list[Path]:
    (workdir / "report.json").write_text(json_codec.dumps(report, indent=1, default=float))
    labels = fam.labels(report)
    common.plot_confusion(
        workdir / "confusion.png",
        np.asarray(m["confusion"]),
        labels,
        f"{report['name']} {report['version']} {report.get('served', 'int8').upper()}, test set",
    )
    fam.plot_curve(workdir / "roc.png", y, out, a, te)
    md = [
        f"# {report['name']} {report['version']} — evaluation report",
        "",
        f"Dataset `{report['dataset']}` ({report['dataset_digest'][:19]}…), seed {report['seed']}, split "
        f"{report['split']}. Gate: **{'passed' if report['gate']['passed'] else 'FAILED'}**"
        + ("" if report["gate"]["passed"] else " — " + "; ".join(report["gate"]["reasons"])),
        "",
        *([f"Test set: {report['split_rule']}.", ""] if report.get("split_rule") else []),
        f"Served form: **{report.get('served', 'int8').upper()}** ({report.get('served_why', '')}).",
        "",
    ]
    # the patch recipe's FP32 model alone: its "int8" figures (report.json's metrics.int8, which other code
    # reads) are that model's again, not an INT8 form's; report.md set them beside FP32 as INT8's
    patch = report.get("recipe") == "patch"
    if patch:
        md += [
            "INT8 against FP32: no INT8 form (the patch recipe serves its FP32 model).",
            "",
            "| metric | FP32 (ORT) | INT8 | floor |",
            "|---|---:|---|---:|",
        ]
    else:
        md += [
            *_parity_md(report.get("int8_parity")),
            "| metric | FP32 (ORT) | INT8 (ORT) | INT8 (OpenVINO) | floor |",
            "|---|---:|---:|---:|---:|",
        ]
    for k in report["metrics"]["int8"]:
        v = report["metrics"]["int8"][k]
        if not isinstance(v, int | float) or k == "n":
            continue
        f32 = report["metrics"]["fp32"][k]
        ov = report["metrics"].get("int8_openvino", {}).get(k)
        int8_cells = "no INT8 form" if patch else f"{v:.4f} | {'' if ov is None else f'{ov:.4f}'}"
        md.append(f"| {k} | {f32:.4f} | {int8_cells} | {report['floors'].get(k, '')} |")
    if report["incumbent"] and report["incumbent"]["metrics"]:
        md += [
            "",
            f"Published {report['incumbent']['version']} on the same test set: "
            + ", ".join(f"{k} {report['incumbent']['metrics'][k]:.4f}" for k in report["primary"]),
        ]
    if report.get("perturbed"):
        pt = report["perturbed"]
        md += [
            "",
            "Perturbed copy of the test split (exposure, light gradient, blur, noise, JPEG, pose; seeded), "
            "at the same threshold:",
            "",
            "| form | accuracy | NG recall | NG precision | good parts rejected |",
            "|---|---:|---:|---:|---:|",
        ]
        md += [
            f"| {f} | {pt[f]['accuracy']:.4f} | {pt[f]['ng_recall']:.4f} | {pt[f]['ng_precision']:.4f} | "
            f"{pt[f]['ok_rejected']:.1%} |"
            for f in (("fp32",) if patch else ("fp32", "int8"))
        ]
        if patch:
            md.append("| int8 | no INT8 form | | | |")
    if report.get("operating_point"):
        op = report["operating_point"]
        md += [
            "",
            f"Operating point: threshold {op['threshold']:.4g} on the NG score (1 − p(ok)); {op['rule']}.",
        ]
        if op["validation_curve"]:
            md += [
                "",
                f"Other thresholds, on {op.get('curve_on', 'the validation split (FP32 scores)')}:",
                "",
                "| threshold | NG recall | NG precision | good parts rejected |",
                "|---:|---:|---:|---:|",
            ]
            md += [
                f"| {c['threshold']:.3g} | {c['ng_recall']:.3f} | {c['ng_precision']:.3f} | "
                f"{c['ok_rejected']:.1%} |"
                for c in op["validation_curve"][::4]
            ]
    if patch:  # the FP32 model alone: no INT8 size, latency nor epochs to state
        md += ["", "| engine, threads | FP32 ms |", "|---|---:|"]
        md += [f"| {k} | {v['fp32_ms']:.3f} |" for k, v in report["latency_batch1"].items()]
    else:
        md += ["", "| engine, threads | FP32 ms | INT8 ms | speed-up |", "|---|---:|---:|---:|"]
        md += [
            f"| {k} | {v['fp32_ms']:.3f} | {v['int8_ms']:.3f} | {v['speedup']:.2f}x |"
            for k, v in report["latency_batch1"].items()
        ]
    md += [
        "",
        f"Model size: FP32 {report['sizes']['fp32_bytes'] / 1e6:.2f} MB"
        + ("" if patch else f", INT8 {report['sizes']['int8_bytes'] / 1e6:.2f} MB")
        + f"; ONNX opset {report['export']['onnx_opset']}, dynamic batch. Training "
        f"{report['training']['seconds']:.0f} s"
        + ("." if patch else f", {len(report['training']['history'])} epochs."),
        "",
        "![confusion](confusion.png) ![curve](roc.png)",
    ]
    (workdir / "report.md").write_text("\n".join(md) + "\n")
    return [workdir / "report.json", workdir / "report.md", workdir / "confusion.png", workdir / "roc.png"]


def _parity_md(parity: dict | None) -> list[str]:
    """report.md's lines on INT8 against FP32 item by item on the held-out set."""
    if not parity or not parity.get("forms"):
        return []
    lim = parity["limits"]
    md = [
        f"INT8 against FP32 on each of the {parity['items']} held-out items (limits: decisions agree on "
        f"{lim['min_agreement']:.1%}; each output within {', '.join(f'{v:.3g}' for v in lim['output_atol'].values())}"
        f" for {', '.join(lim['output_atol'])}):",
        "",
        "| form | decisions agree | "
        + " | ".join(f"largest {k} deviation" for k in lim["output_atol"])
        + " |",
        "|---|---:|" + "---:|" * len(lim["output_atol"]),
    ]
    for form, r in parity["forms"].items():
        devs = " | ".join(f"{r['max_deviation'].get(k, float('nan')):.3g}" for k in lim["output_atol"])
        md.append(f"| {form} | {r['agreement']:.1%} | {devs} |")
    return [*md, ""]


def _package(
    s: BuildSettings,
    name,
    version,
    fam: TrainerFamily,
    meta: dict,
    n_features: int,
    int8: Path,
    golden_x,
    threshold,
    report,
    parity: dict | None = None,
    notes: list[str] | None = None,
) -> Path:
    from model_packager import build_package

    inputs, outputs, task, metric_name = fam.package_io(meta, n_features, threshold)
    # The package carries the FP32 model beside the INT8 one: the golden expected outputs are the FP32
    # model's (tight tolerance on every engine) and the INT8 form is held to parity bounds measured
    # here (model_packager), which an agent re-checks on its own CPU before serving INT8.
    atol = GOLDEN_ATOL
    output_atol: dict[str, float] = {}
    m8, m32 = report["metrics"]["int8"], report["metrics"]["fp32"]
    served = report["metrics"][report.get("served", "int8")]
    sp = report["latency_batch1"].get("onnxruntime_1t", {})
    spec = {
        "name": name,
        "version": version,
        "task": task,
        "inputs": inputs,
        "outputs": outputs,
        "description": f"{s.family} model trained by cloud_trainer on {path_text(Path(meta['dataset']).name)}",
        "preprocessing": meta["preprocessing"],
        **({"input_stats": meta["input_stats"]} if meta.get("input_stats") else {}),
        **({"life_prior": meta["life_prior"]} if meta.get("life_prior") else {}),
        "golden": {"atol": atol, "rtol": 2e-2, "output_atol": output_atol},
        **({"parity": parity} if parity else {}),
        "quantization": {
            "scheme": _scheme(meta),
            "calibration_samples": report["calibration_samples"],
            "fp32_metric": m32[metric_name],
            "int8_metric": m8[metric_name],
            "metric_name": metric_name,
            # a metric not measured (NaN) reads back from report.json as null
            "accuracy_delta": None
            if m8[metric_name] is None or m32[metric_name] is None
            else m8[metric_name] - m32[metric_name],
            "fp32_size_bytes": report["sizes"]["fp32_bytes"],
            "int8_size_bytes": report["sizes"]["int8_bytes"],
            "speedup": sp.get("speedup"),
        },
        "provenance": {
            "dataset_digest": report["dataset_digest"],
            "trainer": "cloud_trainer.train 0.1",
            "parent_version": report["incumbent"]["version"] if report["incumbent"] else None,
            "seed": meta["seed"],
            **meta["export"],
            "metrics": {k: float(v) for k, v in served.items() if isinstance(v, int | float)},
        },
    }
    (s.workdir / "report.json").write_text(
        json_codec.dumps(report, indent=1, default=float)
    )  # + golden tolerance
    fp32: Path | None = s.workdir / "model.fp32.onnx"
    if meta.get("recipe") == "patch" or report.get("served") == "fp32":
        # the FP32 graph is the served form (the patch recipe's "int8" file is its copy; or INT8 missed the
        # margin): an agent has no INT8 form to choose
        int8, fp32 = s.workdir / "model.fp32.onnx", None
        if meta.get("recipe") == "patch":
            spec["quantization"].update(
                calibration_samples=0, int8_size_bytes=None, speedup=None, accuracy_delta=0.0
            )
        else:  # what INT8 measured stays on record (int8_metric, accuracy_delta); none of it is shipped
            spec["quantization"].update(
                scheme="fp32 (INT8 missed the margin)", int8_size_bytes=None, speedup=None
            )
    from model_packager.inputstats import LOCAL_FILE

    return build_package(
        int8,
        spec,
        s.workdir,
        signing_key=s.signing_key,
        golden_inputs={fam.INPUT: golden_x},
        openvino=s.openvino and "openvino" in _engines(),
        fp32_model=fp32,
        extra_files={
            "report.json": s.workdir / "report.json",
            **({LOCAL_FILE: s.workdir / LOCAL_FILE} if (s.workdir / LOCAL_FILE).is_file() else {}),
        },
        notes=notes,
    )


def golden_notes(workdir: Path, report: dict, notes: list[str], log) -> None:
    """Say the package's golden blind spots (``golden.coverage_notes``, which ``model-packager build`` prints
    as warnings): one log line each, and ``golden_notes`` in the work folder's ``report.json`` (the copy the
    registry gets; the one signed inside the package was written before the build computed them, and an agent
    computes them again from the signed expected outputs)."""
    for note in notes:
        log(f"warning: {note}")
    report["golden_notes"] = list(notes)
    (workdir / "report.json").write_text(json_codec.dumps(report, indent=1, default=float))
