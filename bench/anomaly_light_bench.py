"""Good frames under a light the training never had, judged by tiled (and whole-frame) anomaly models,
for variants of the build's settings side by side in the same run (issue 13's "good parts rejected
<= 5 % under lighting shift").

Frames: ``machined-turned`` / ``machined-honed`` (``bench/_machined_frames.py``), ``bracket`` / ``sheet``
(``tests/support/bracket_frames.py``), 1280x1024. ``--good`` good training frames (a plain folder), then
held out: ``--test`` good frames as the generator makes them, ``--test`` defective frames, and the held-out
good frames again under each light below, made here (a lighting model of its own, not the generators':
the training frames never had it):

- ``gain``: the lamp 0.75-0.85 or 1.15-1.25 of its light;
- ``cast``: each colour channel its own gain within ±8 % (another lamp's spectrum);
- ``gradient``: a linear slope of 20-35 % across the frame, from any side;
- ``vignette``: a cos^4 fall-off, 30-40 % darker in the corners (a wider aperture, a hood opened);
- ``spot``: a lamp as a 2-D Gaussian spot off the centre (sigma 0.5-0.9 of the width, 25-40 % darker far
  from it) and a colour-temperature shift (red against blue, ±6-10 %), lamp gain 0.85-1.15;
- ``native``: the machined generator's own shifted light (``shift=True``), where it has one.

Each model is fitted as ``cloud-trainer build anomaly`` fits it (``anomaly.fit``), then every frame is run
through it in this process (a frame's tiles as one batch, the model's per-position references and its
stored threshold). Reported per generator, seed and variant: image AUROC (good vs defective), NG recall and
good rejected at the threshold, the share rejected under each light, fit s, frame ms (torch, 2 threads).

    .venv/bin/python -m bench.anomaly_light_bench [--gens machined-turned bracket] [--seeds 1]
        [--variants default light_variation=curved] [--good 20] [--test 10] [--untiled] [--unsure-only]

The agent's UNSURE check (``model_packager.inputstats.check`` with the package's local statistics, tolerance
1.0) is run on every held-out frame with the statistics the variant's build stores (``anomaly.stats_copies``
where the code has it: run in a worktree of older code it measures that code's statistics), and on frames it
exists for, made here from the held-out good frames: ``blurred`` (Gaussian, sigma 0.6 % of the width), ``smudged`` (so in a corner, 40 % x 40 % of the frame),
``dark`` (x0.35), ``bright`` (x1.8), ``foreign`` (the other generator's frame), ``moved`` (the camera
shifted 10 % and turned 6 degrees). Per light: the share UNSURE, and the share the model rejects among the
frames the check lets through (a frame called UNSURE is not inspected). ``--unsure-only``: no model fitted
(the UNSURE shares alone; they do not depend on the bank).

A variant is ``default`` or comma-separated ``field=value`` of ``anomaly.AnomalySettings`` (e.g.
``light_variation=curved`` or ``light_variation=none``: ``--light-variation``; ``bank_size=4096,folds=3``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
sys.path.insert(0, str(ROOT))

W, H = 1280, 1024
SIZE, TILES = 224, [5, 4]
LIGHTS = ("gain", "cast", "gradient", "vignette", "spot")
GENS = ("machined-turned", "machined-honed", "bracket", "sheet")


def relight(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``img`` (BGR uint8) under one of ``LIGHTS``, drawn from ``rng``."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    u, v = (xx - w / 2) / (w / 2), (yy - h / 2) / (w / 2)
    field = np.ones((h, w), np.float32)
    col = np.ones(3, np.float32)
    if kind == "gain":
        field *= rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.25) + 1.0
    elif kind == "cast":
        col = rng.uniform(0.92, 1.08, 3).astype(np.float32)
    elif kind == "gradient":
        a = rng.uniform(0, 2 * math.pi)
        r = (math.cos(a) * (xx / (w - 1) - 0.5) + math.sin(a) * (yy / (h - 1) - 0.5)) / (0.5 * (1 + h / w))
        field *= 1.0 + 0.5 * rng.uniform(0.20, 0.35) * r
    elif kind == "vignette":
        cos4 = (1.0 / (1.0 + (u * u + v * v) * 0.45)) ** 2
        corner = float(cos4.min())
        depth = rng.uniform(0.30, 0.40)
        field *= 1.0 - depth * (1.0 - cos4) / (1.0 - corner)
    elif kind == "spot":
        cx, cy = rng.uniform(-0.7, 0.7), rng.uniform(-0.6, 0.6)
        sig = rng.uniform(0.5, 0.9)
        g = np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * sig * sig))
        low = 1.0 - rng.uniform(0.25, 0.40)
        field *= (low + (1 - low) * (g - g.min()) / (g.max() - g.min())) * rng.uniform(0.85, 1.15)
        t = rng.choice([-1.0, 1.0]) * rng.uniform(0.06, 0.10)
        col = np.asarray([1 - t, 1.0, 1 + t], np.float32)  # BGR: warmer (t > 0) or cooler
    else:
        raise ValueError(kind)
    out = img.astype(np.float32) * field[..., None] * col[None, None, :]
    return np.clip(out, 0, 255).astype(np.uint8)


FAR = ("blurred", "smudged", "dark", "bright", "foreign", "moved")  # frames the UNSURE check exists for


def far_off(img: np.ndarray, kind: str, other: np.ndarray) -> np.ndarray:
    """``img`` (a good frame) as a frame the UNSURE check must answer; ``other``: a frame of another scene."""
    import cv2

    h, w = img.shape[:2]
    if kind == "blurred":
        return cv2.GaussianBlur(img, (0, 0), 0.006 * w)
    if kind == "smudged":  # a smear on the lens over a corner: 40 % x 40 % of the frame blurred
        out = img.copy()
        out[: int(0.4 * h), : int(0.4 * w)] = cv2.GaussianBlur(img, (0, 0), 0.006 * w)[
            : int(0.4 * h), : int(0.4 * w)
        ]
        return out
    if kind in ("dark", "bright"):
        return np.clip(img.astype(np.float32) * (0.35 if kind == "dark" else 1.8), 0, 255).astype(np.uint8)
    if kind == "foreign":
        return cv2.resize(other, (w, h), interpolation=cv2.INTER_AREA)
    if kind == "moved":
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 6.0, 1.0)
        m[:, 2] += (0.10 * w, 0.06 * h)
        return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    raise ValueError(kind)


def unsure_check(ds, s):
    """The UNSURE check of the package this build would make: frame -> reason or None."""
    from cloud_trainer.train import anomaly as A
    from model_packager.inputstats import LocalStats, check, summarize, summarize_local

    images = ds.stats_images
    also = A.stats_copies(images, s) if hasattr(A, "stats_copies") else []  # older code: no copies
    stats = summarize(images, also=also) if also else summarize(images)
    local = LocalStats(summarize_local(images, also=also) if also else summarize_local(images))
    return lambda img: check(stats, img, 1.0, local)


def overrides(variant: str) -> dict:
    """``default`` or ``field=value,...`` -> the settings' fields, each value read as its field's type."""
    from cloud_trainer.train.anomaly import AnomalySettings

    if variant == "default":
        return {}
    types = {f.name: f.type for f in dataclasses.fields(AnomalySettings)}
    out: dict = {}
    for item in variant.split(","):
        key, _, value = item.partition("=")
        if key not in types or not value:
            raise SystemExit(f"--variants {variant!r}: {key!r} is not field=value of AnomalySettings")
        t = str(types[key])
        out[key] = (
            value.lower() in ("1", "true", "yes")
            if t.startswith("bool")
            else int(value)
            if t.startswith("int")
            else float(value)
            if t.startswith("float")
            else value
        )
    return out


def frames(gen: str, seed: int, good: int, test: int):
    """(training frames, held-out [(frame, mask, kind)])"""
    if gen.startswith("machined"):
        from bench._machined_frames import frame as machined

        kind = gen.split("-")[1]
        train = [machined(seed, i, kind)[0] for i in range(good)]
        held = [(*machined(seed, 10_000 + i, kind), "good") for i in range(test)]
        held += [(*machined(seed, 15_000 + i, kind, shift=True), "native") for i in range(test)]
        held += [(*machined(seed, 20_000 + i, kind, scratch=True), "ng") for i in range(test)]
    else:
        from tests.support.bracket_frames import defects
        from tests.support.bracket_frames import frame as bracket

        ds = defects(gen)
        train = [bracket(seed, i, W, H, kind=gen)[0] for i in range(good)]
        held = [(*bracket(seed, 10_000 + i, W, H, kind=gen), "good") for i in range(test)]
        held += [
            (*bracket(seed, 20_000 + i, W, H, defect=ds[i % len(ds)], kind=gen), "ng") for i in range(test)
        ]
    rng = np.random.default_rng([seed, 555])
    goods = [(f, m) for f, m, k in held if k == "good"]
    for light in LIGHTS:
        held += [(relight(f, light, rng), m, light) for f, m in goods]
    if gen.startswith("machined"):  # another scene: the other generator's good frame
        from tests.support.bracket_frames import frame as bracket

        others = [bracket(seed, 30_000 + i, W, H)[0] for i in range(len(goods))]
    else:
        from bench._machined_frames import frame as machined

        others = [machined(seed, 30_000 + i, "turned")[0] for i in range(len(goods))]
    for kind in FAR:
        held += [(far_off(f, kind, o), m, kind) for (f, m), o in zip(goods, others, strict=True)]
    return train, held


def run(
    gen: str, seed: int, good: int, test: int, variants: list[str], tiled: bool, tmp: Path, fit: bool = True
) -> list[dict]:
    import cv2
    import torch

    from cloud_trainer.train import anomaly as A
    from cloud_trainer.train.common import auroc

    train, held = frames(gen, seed, good, test)
    folder = tmp / f"{gen}-{seed}"
    folder.mkdir(exist_ok=True)
    for i, f in enumerate(train):
        cv2.imwrite(str(folder / f"{i:03d}.png"), f)
    size, tiles = (SIZE, TILES) if tiled else (128, None)
    ds = A.load_good(folder, size=size, tiles=tiles)
    kinds = np.asarray([k for _, _, k in held])
    ng = kinds == "ng"
    rows = []
    for variant in variants:
        s = A.AnomalySettings(
            dataset=folder,
            registry=tmp,
            signing_key=tmp,
            workdir=tmp,
            size=size,
            tiles=tiles,
            threads=2,
            seed=seed,
        )
        s = dataclasses.replace(s, **overrides(variant))
        judge = unsure_check(ds, s)
        unsure = np.asarray([judge(img) is not None for img, _m, _k in held])
        row = {"gen": gen, "seed": seed, "tiled": tiled, "variant": variant}
        for kind in ("good", *LIGHTS, "native", *FAR):
            if (kinds == kind).any():
                row[f"unsure_{kind}"] = float(np.mean(unsure[kinds == kind]))
        if not fit:
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
            continue
        t0 = time.perf_counter()
        r = A.fit(ds, s, log=lambda m: print("   ", m, file=sys.stderr))
        fit_s = time.perf_counter() - t0
        model, thr = r["model"], r["threshold"]
        scores, ms = [], []
        with torch.no_grad():
            for img, _m, k in held:
                if k in FAR:  # for the UNSURE check alone
                    scores.append(math.nan)
                    continue
                t0 = time.perf_counter()
                views = A.cut_tiles(img, size, tiles, folder) if tiles else [img]
                sc, _ = model(torch.from_numpy(A.tensors(views, r["pre"])))
                scores.append(float(sc.max()))
                ms.append((time.perf_counter() - t0) * 1000)
        f = np.asarray(scores)
        row |= {
            "threshold": thr,
            "auroc": auroc(ng[(kinds == "good") | ng], f[(kinds == "good") | ng]),
            "recall": float(np.mean(f[ng] >= thr)),
            "good_rejected": float(np.mean(f[kinds == "good"] >= thr)),
            "fit_s": fit_s,
            "frame_ms": float(np.median(ms)),
        }
        shifted = np.isin(kinds, (*LIGHTS, "native"))
        row["auroc_shift"] = auroc(ng[shifted | ng], f[shifted | ng])
        for light in (*LIGHTS, "native"):
            if (kinds == light).any():
                row[light] = float(np.mean(f[kinds == light] >= thr))
        row["all_shifts"] = float(np.mean(f[shifted] >= thr))
        for light in ("good", *LIGHTS, "native"):  # of the frames the UNSURE check lets through
            sure = (kinds == light) & ~unsure
            if sure.any():
                row[f"sure_rejected_{light}"] = float(np.mean(f[sure] >= thr))
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    return rows


def _unsure_cell(r: dict, c: str) -> str:
    if "unsure_" + c not in r:
        return ""
    rej = r.get("sure_rejected_" + c)
    return f"{r['unsure_' + c]:.0%}" + (f" / {rej:.0%}" if rej is not None else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.anomaly_light_bench")
    ap.add_argument("--gens", nargs="+", default=["machined-turned", "bracket"], choices=GENS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[1])
    ap.add_argument(
        "--variants", nargs="+", default=["default", "light_variation=curved"], help="settings to compare"
    )
    ap.add_argument("--good", type=int, default=20)
    ap.add_argument("--test", type=int, default=10, help="held-out good and defective frames (each)")
    ap.add_argument(
        "--untiled", action="store_true", help="whole-frame builds at 128 px instead of 5x4 tiles"
    )
    ap.add_argument("--unsure-only", action="store_true", help="the UNSURE check alone: no model fitted")
    ap.add_argument("--tag", default="")
    a = ap.parse_args(argv)
    from bench._machine import machine, machine_line

    rows = []
    with tempfile.TemporaryDirectory() as td:
        for gen in a.gens:
            for seed in a.seeds:
                rows += run(gen, seed, a.good, a.test, a.variants, not a.untiled, Path(td), not a.unsure_only)
    OUT.mkdir(exist_ok=True)
    name = f"anomaly_light_bench{a.tag}"
    (OUT / f"{name}.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    cols = [*LIGHTS, "native"]
    md = [
        f"{time.strftime('%Y-%m-%d')}; {machine_line()}; `.venv/bin/python -m "
        f"bench.anomaly_light_bench {' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        "| frames | seed | model | variant | image AUROC | AUROC vs relit good | NG recall @thr | good rejected | "
        + " | ".join(f"rejected: {c}" for c in cols)
        + " | all relit | fit s | frame ms |",
        "|---|---:|---|---:|" + "---:|" * (6 + len(cols)),
    ]
    for r in rows:
        if "auroc" not in r:
            continue
        md.append(
            f"| {r['gen']} | {r['seed']} | {'5x4 tiles' if r['tiled'] else 'whole, 128'} | {r['variant']} | "
            f"{r['auroc']:.3f} | {r['auroc_shift']:.3f} | {r['recall']:.2f} | {r['good_rejected']:.0%} | "
            + " | ".join(f"{r[c]:.0%}" if c in r else "" for c in cols)
            + f" | {r['all_shifts']:.0%} | {r['fit_s']:.0f} | {r['frame_ms']:.0f} |"
        )
    ucols = ["good", *cols, *FAR]
    md += [
        "",
        "UNSURE (the agent's check, tolerance 1.0, with the statistics this build stores); after the slash, the "
        "share the model rejects of the frames the check lets through:",
        "",
        "| frames | seed | model | variant | " + " | ".join(ucols) + " |",
        "|---|---:|---|---|" + "---:|" * len(ucols),
    ]
    for r in rows:
        md.append(
            f"| {r['gen']} | {r['seed']} | {'5x4 tiles' if r['tiled'] else 'whole, 128'} | {r['variant']} | "
            + " | ".join(_unsure_cell(r, c) for c in ucols)
            + " |"
        )
    (OUT / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
