"""The vision classifier on part images nobody here made: trained on an imported folder-per-class
dataset, judged on images from an independently seeded generator, with another day's light.

The images come from ``tests/support/own_parts.py``: made from ``docs/camera-and-parts.md``'s
contract only (a flange on a dark belt; scratch, dent, crack, missing hole, stain), with another
surface finish, light, pose, noise, JPEG and small defects than ``simulators/parts.py``. Steps:

1. ``--train`` images (seed 11, 200x200 px, half of them defective) written as a folder per class
   (good/, scratch/, ...) and imported with ``cloud-trainer dataset import`` (images.import_images);
2. ``cloud-trainer build vision`` with the default recipe for an imported dataset (``--recipe auto`` =
   ``patch``: a small patch net learnt on the good images with synthetic defects, thresholded on the
   defect images, ``learned_patches``), and, as the baseline in the same run, the former default
   (``--recipe patch-texture``: fixed texture features' good-patch memory bank); with ``--cnn`` also
   the compact CNN from scratch (``--recipe cnn``, 128 px); build time of each;
3. each signed package run as the agent runs it (``image_tensor`` → the served model on ONNX Runtime →
   ``interpret``, the threshold stored in the package) on ``--test`` images from two other seeds:
   in-contract light (seed 23), shifted light (seed 37, ``light_shift`` 0.6: lamp gain ±60 %,
   colour temperature, a stronger gradient), and the in-contract images under another camera setting
   (``perturb.lighting``: gain ±30 %, offset ±20 grey levels, a gradient of up to 20 %, colour tilt);
   and ``rim``: in-contract light (seed 29), the defective half with a defect on the part's edge instead
   (``own_parts.RIM_DEFECTS``: a scratch along the rim, a chip, a burr, the chamfer missing over an arc;
   outside the contract and the bar, there to show whether the rim is a blind spot);
4. NG recall and precision, NG AUROC, the share of good parts rejected, and how often the heat map's
   hottest cell overlaps the defect's mask (NG images).

The bar (issue 13): NG recall >= 0.95 at precision >= 0.90 in-contract; <= 5 % of good parts rejected
under the light shift; the heat map's hottest cell on the defect in >= 0.80 of NG images. Exit 1
when the default recipe misses it.

    .venv/bin/python -m bench.vision_own_images_bench [--train 1600] [--test 600] [--epochs N] [--no-baseline] [--cnn]
        [--defect-rate 0.5] [--size PX] [--seed 0] [--false-reject-rate 0.01]

``--size`` sets every recipe's input (default 128, the trainer's default; the images are 200 px);
``--seed`` changes the builds' training seed (split, net initialisation, crops), not the images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
sys.path.insert(0, str(ROOT))

TRAIN_SEED, TEST_SEED, SHIFT_SEED, SHIFT, LIGHT_SEED, RIM_SEED = 11, 23, 37, 0.6, 53, 29
DEFAULT = "default: patch, learned features"


def test_set(
    seed: int, n: int, light_shift: float, kinds: tuple[str, ...] | None = None
) -> list[tuple[np.ndarray, np.ndarray, str | None]]:
    from tests.support.own_parts import DEFECTS, make_part

    rng = np.random.default_rng([seed, 5])
    out = []
    for i in range(n):
        defect = str(rng.choice(kinds or DEFECTS)) if rng.random() < 0.5 else None
        img, mask = make_part(seed, i, 200, defect, light_shift)
        out.append((img, mask, defect))
    return out


def judge(pkg: Path, pub: Path, images, tmp: Path) -> dict:
    """The package as an agent runs it: verify, INT8 model on ONNX Runtime, manifest pre/postprocessing."""
    import onnxruntime as ort

    from cloud_trainer.train.common import auroc
    from model_packager import load_trusted_keys, open_package
    from model_packager.preprocess import image_tensor, interpret

    opened = open_package(pkg, tmp, load_trusted_keys([pub]))
    m = opened.manifest
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(opened.model_path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    scores, ng, truth, hits, t_pre, kinds = [], [], [], [], [], []
    for img, mask, defect in images:
        is_ng = defect is not None
        kinds.append(defect)
        t0 = time.perf_counter()
        x = image_tensor(img, m.preprocessing)
        t_pre.append(time.perf_counter() - t0)
        out = dict(zip(names, sess.run(names, {m.inputs[0].name: x}), strict=True))
        it = interpret(m, out, img.shape[:2])
        scores.append(it.score)
        ng.append(it.verdict == "NG")
        truth.append(is_ng)
        if is_ng and it.heatmap is not None:
            raw = np.asarray(out["heatmap"])[0, 0]
            i, j = np.unravel_index(int(raw.argmax()), raw.shape)
            ch, cw = img.shape[0] / raw.shape[0], img.shape[1] / raw.shape[1]
            cell = mask[int(i * ch) : int(np.ceil((i + 1) * ch)), int(j * cw) : int(np.ceil((j + 1) * cw))]
            hits.append(bool(cell.any()))
    ng_a, tr = np.asarray(ng), np.asarray(truth)
    tp = int((ng_a & tr).sum())
    return {
        "n": len(tr),
        "ng_recall": tp / max(1, int(tr.sum())),
        "ng_precision": tp / max(1, int(ng_a.sum())),
        "ng_auroc": auroc(tr, np.asarray(scores)),
        "good_rejected": float(ng_a[~tr].mean()),
        "heatmap_on_defect": float(np.mean(hits)) if hits else None,
        "recall_by_defect": {
            d: float(np.mean([v for v, k in zip(ng_a, kinds, strict=True) if k == d]))
            for d in sorted({k for k in kinds if k})
        },
        "preprocess_ms": 1000 * float(np.median(t_pre)),
    }


def build(
    dataset: Path,
    work: Path,
    registry: Path,
    key: Path,
    size: int,
    epochs: int | None,
    threads: int = 2,
    recipe: str = "auto",
    seed: int = 0,
    false_reject_rate: float = 0.01,
) -> tuple[Path, dict]:
    from cloud_trainer.train.pipeline import (
        BuildSettings,
        stage_evaluate,
        stage_package,
        stage_quantize,
        stage_train,
    )

    s = BuildSettings(
        family="vision",
        dataset=dataset,
        registry=registry,
        signing_key=key,
        workdir=work,
        seed=seed,
        epochs=epochs or 20,
        epochs_given=epochs is not None,  # else each recipe's default (the patch recipe's 40, the CNN's 20)
        size=size,
        threads=threads,
        openvino=False,
        compare_published=False,
        force=True,
        recipe=recipe,
        false_reject_rate=false_reject_rate,
    )
    t0 = time.perf_counter()
    meta = stage_train(s)
    stage_quantize(s)
    rep = stage_evaluate(s)
    pkg = stage_package(s)
    return pkg, {
        "recipe": meta.get("recipe"),
        "input_px": meta["preprocessing"]["width"],
        "train_s": meta["training"]["seconds"],
        "build_s": time.perf_counter() - t0,
        "gate_passed": rep["gate"]["passed"],
        "gate_reasons": rep["gate"]["reasons"],
        "threshold": rep["threshold"],
        "held_out": {k: rep["metrics"]["int8"][k] for k in ("ng_recall", "ng_precision", "accuracy")},
    }


def preprocess_speed(repeats: int = 300) -> list[dict]:
    """``image_tensor`` (region, tiles, resize, fused scale+normalise into its output buffer) against the
    former formula (resize, flip, astype, subtract, divide, transpose, copy), on a 640x480 frame."""
    import cv2

    from model_packager.manifest import ImagePreprocessing
    from model_packager.preprocess import image_tensor

    def former(img, spec):
        x = cv2.resize(img, (spec.width, spec.height), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
        x = (x.astype(np.float32) * np.float32(spec.scale) - np.float32(0.5)) / np.float32(0.25)
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)

    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    rows = []
    for size in (128, 224):
        spec = ImagePreprocessing(
            width=size, height=size, mean=[0.5] * 3, std=[0.25] * 3, interpolation="linear"
        )
        assert np.allclose(former(img, spec), image_tensor(img, spec), atol=1e-5)
        ms = {}
        for name, f in (("former", former), ("image_tensor", image_tensor)):
            t = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                f(img, spec)
                t.append(time.perf_counter() - t0)
            ms[name] = 1000 * float(np.median(t))
        rows.append({"size": size, **ms, "ratio": ms["image_tensor"] / ms["former"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    from model_packager.cpu import cpu_flags

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=1600)
    ap.add_argument("--test", type=int, default=600)
    ap.add_argument(
        "--epochs", type=int, default=None, help="default: the recipe's (cloud-trainer's: patch 40, cnn 20)"
    )
    ap.add_argument("--no-baseline", action="store_true", help="skip the texture-feature patch recipe")
    ap.add_argument("--cnn", action="store_true", help="also build the compact CNN from scratch")
    ap.add_argument("--threads", type=int, default=2, help="training threads")
    ap.add_argument("--size", type=int, default=128, help="model input px (default 128: the trainer's)")
    ap.add_argument("--seed", type=int, default=0, help="the builds' training seed (split, net, crops)")
    ap.add_argument(
        "--false-reject-rate", type=float, default=0.01, help="the patch recipes' stated false-reject rate"
    )
    ap.add_argument(
        "--defect-rate", type=float, default=0.5, help="share of defect images in the training set"
    )
    a = ap.parse_args(argv)
    from cloud_trainer.train.images import import_images
    from model_packager import generate_keypair
    from tests.support.own_parts import write_folders

    OUT.mkdir(exist_ok=True)
    results: dict = {
        "train_images": a.train,
        "test_images": a.test,
        "epochs": a.epochs,
        "size": a.size,
        "seed": a.seed,
        "false_reject_rate": a.false_reject_rate,
        "recipes": {},
        "preprocess_640x480": preprocess_speed(),
        "cpu_flags": " ".join(cpu_flags()),
    }
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        key = tmp / "k" / "fleet.key"
        key.parent.mkdir()
        generate_keypair(key, key.with_suffix(".pub"))
        t0 = time.perf_counter()
        counts = write_folders(tmp / "factory", TRAIN_SEED, a.train, defect_rate=a.defect_rate)
        imported = import_images(tmp / "factory", tmp / "dataset")
        results["dataset"] = {
            "counts": counts,
            "classes": imported["classes"],
            "make_and_import_s": time.perf_counter() - t0,
        }
        from cloud_trainer.train.perturb import lighting

        sets = {
            "in_contract": test_set(TEST_SEED, a.test, 0.0),
            "shifted_light": test_set(SHIFT_SEED, a.test, SHIFT),
        }
        rng = np.random.default_rng(LIGHT_SEED)
        sets["camera_setting"] = [(lighting(img, rng), mask, d) for img, mask, d in sets["in_contract"]]
        from tests.support.own_parts import RIM_DEFECTS

        sets["rim"] = test_set(RIM_SEED, a.test, 0.0, RIM_DEFECTS)
        recipes = {DEFAULT: "auto"}
        if not a.no_baseline:
            recipes["baseline: patch, texture features (former default)"] = "patch-texture"
        if a.cnn:
            recipes["baseline: CNN (128 px)"] = "cnn"
        for name, recipe in recipes.items():
            results.setdefault("load_average_before", {})[name] = os.getloadavg()
            pkg, facts = build(
                tmp / "dataset",
                tmp / f"work-{recipe}",
                tmp / "reg",
                key,
                a.size,
                a.epochs,
                a.threads,
                recipe,
                a.seed,
                a.false_reject_rate,
            )
            facts["eval"] = {
                k: judge(pkg, key.with_suffix(".pub"), v, tmp / f"open-{recipe}-{k}") for k, v in sets.items()
            }
            facts["load_average_after"] = os.getloadavg()
            results["recipes"][name] = facts
            print(json.dumps({name: facts}, default=float), file=sys.stderr)
    d = results["recipes"][DEFAULT]["eval"]
    bar = {
        "ng_recall_in_contract": d["in_contract"]["ng_recall"] >= 0.95,
        "ng_precision_in_contract": d["in_contract"]["ng_precision"] >= 0.90,
        "good_rejected_shifted_light": d["shifted_light"]["good_rejected"] <= 0.05,
        "good_rejected_camera_setting": d["camera_setting"]["good_rejected"] <= 0.05,
        "heatmap_on_defect": (d["in_contract"]["heatmap_on_defect"] or 0) >= 0.80,
    }
    results["bar"] = bar
    (OUT / "vision_own_images_bench.json").write_text(json.dumps(results, indent=1, default=float))
    md = [
        "### Vision on independently made part images (tests/support/own_parts.py; not the simulator)",
        "",
        f"Trained on {a.train} imported images (folder per class, seed {TRAIN_SEED}), {a.epochs or 'the recipe default'} epochs, {a.threads} training thread(s), "
        f"build seed {a.seed}, stated false-reject rate {a.false_reject_rate:g}; "
        f"judged as the agent runs the signed INT8 package on {a.test} images of seed {TEST_SEED} (in-contract) "
        f"and {a.test} of seed {SHIFT_SEED} with shifted light ({SHIFT}); camera_setting = the in-contract images with "
        "gain ±30 %, offset ±20, a gradient up to 20 %, colour tilt ±5 % (perturb.lighting); "
        f"rim = {a.test} images of seed {RIM_SEED}, half with a defect on the part's edge (own_parts.RIM_DEFECTS; "
        "not in the bar). "
        f"Defect share in training {a.defect_rate:.0%}. CPU flags: `{results['cpu_flags']}`; load average "
        "before/after each build: "
        + "; ".join(
            f"{n}: {results['load_average_before'][n][0]:.1f}/{f['load_average_after'][0]:.1f}"
            for n, f in results["recipes"].items()
        )
        + ".",
        "",
        "| recipe | input px | set | NG recall | NG precision | NG AUROC | good rejected | heat map on defect | build s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in results["recipes"].items():
        for k, e in f["eval"].items():
            hm = "" if e["heatmap_on_defect"] is None else f"{e['heatmap_on_defect']:.2f}"
            md.append(
                f"| {name} | {f['input_px']} | {k} | {e['ng_recall']:.3f} | {e['ng_precision']:.3f} | {e['ng_auroc']:.3f} | "
                f"{e['good_rejected']:.1%} | {hm} | {f['build_s']:.0f} |"
            )
    md += [
        "",
        "NG recall by defect (default recipe): "
        + "; ".join(
            f"{k}: " + ", ".join(f"{kind} {r:.2f}" for kind, r in e["recall_by_defect"].items())
            for k, e in d.items()
        ),
    ]
    md += [
        "",
        "Bar (default recipe): " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in bar.items()),
    ]
    md += [
        "",
        "`image_tensor` on a 640x480 frame (median ms; baseline: the former resize/astype/normalise/"
        "transpose formula, same linear resize):",
        "",
        "| input | former ms | image_tensor ms | ratio |",
        "|---:|---:|---:|---:|",
    ]
    md += [
        f"| {r['size']} px | {r['former']:.3f} | {r['image_tensor']:.3f} | {r['ratio']:.2f} |"
        for r in results["preprocess_640x480"]
    ]
    (OUT / "vision_own_images_bench.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if all(bar.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
