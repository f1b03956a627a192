"""Thin scratches on 1280x1024 machined faces, found by a tiled anomaly model (issue 13's bar), and why not.

Data: ``bench/_machined_frames.py`` (made for this bench, independent of ``simulators/`` and of
``tests/support/bracket_frames.py``): a face-turned or a honed surface filling the frame; a scratch
1-3 px wide, 20-80 px long, at any place and angle, 18-45 grey levels brighter or darker; sensor noise
2-4 grey levels, JPEG for half. ``--good`` good training frames (a plain folder of good images, as a user
gives it), then ``--test`` held-out good frames under the training's light, ``--test`` under a shifted
light (lamp gain ±30 %, a ±30 % gradient, vignetting, a ±8 % colour cast) and ``--test`` scratched frames.

The model is fitted as ``cloud-trainer build anomaly --tiles 5x4 --size 224`` fits it (``anomaly.fit``:
bank, held-out good maps, threshold at 1 % false rejects per frame); every held-out frame's tiles are
run through the fitted model in this process as one batch. Reported per surface: image AUROC (against
the good frames under each light), NG recall and good frames rejected at the stored threshold, the share of
scratched frames whose stitched map's hottest region touches the scratch (``anomaly.hottest_hits``),
the AUROC of the scratch's own place (the map's maximum on the dilated mask) against good frames'
maxima, and where good frames' maxima sit: the share within 4 patches (16 px at the model's input) of
their tile's border (that band is 26.5 % of a 224-px tile).

Then, on the same distance maps, the per-position references compared (each smoothed and floored as the
build does): the mean good map of each tile position (the build's until 2026-12-03), mean + 1 or 2
standard deviations, the maximum (the build's now: ``anomaly.position_refs``), and the mean with the
3-patch band facing a neighbouring tile left out (the 1/8 overlap keeps every pixel inside
some tile's interior); each with its own threshold from the held-out good maps (each frame against the
others' reference), as the build takes it.

    .venv/bin/python -m bench.anomaly_scratch_bench [--kinds turned honed] [--seed 1] [--good 30] [--test 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
sys.path.insert(0, str(ROOT))

SIZE, TILES = 224, [5, 4]
REFS = ("mean", "mean+1sd", "mean+2sd", "max", "mean, band 3")


def _smooth(r: np.ndarray) -> np.ndarray:
    import torch
    from torch.nn import functional as F

    h = r.shape[-1]
    x = torch.from_numpy(np.ascontiguousarray(r.reshape(-1, 1, h, h)))
    return F.max_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1).numpy().reshape(r.shape)


def _band(t: int, h: int, b: int) -> np.ndarray:
    """1 inside, 0 in each tile's ``b``-patch band on the sides facing a neighbouring tile."""
    cols, rows = TILES
    out = np.ones((t, h, h))
    for i in range(t):
        c, r = i % cols, i // cols
        if c > 0:
            out[i, :, :b] = 0
        if c < cols - 1:
            out[i, :, h - b :] = 0
        if r > 0:
            out[i, :b, :] = 0
        if r < rows - 1:
            out[i, h - b :, :] = 0
    return out


def reference(kind: str, maps: np.ndarray) -> np.ndarray:
    """(frames, t, h, h) good distance maps -> (t, h, h) per-position reference."""
    mu = maps.mean(0)
    if kind == "max":
        r = _smooth(maps.max(0))
    elif kind.startswith("mean+"):
        r = _smooth(mu + float(kind[5]) * maps.std(0, ddof=1))
    else:
        r = _smooth(mu)
    r = np.maximum(r, 0.5 * np.median(r))  # anomaly.REF_FLOOR
    if "band" in kind:
        r = r / np.maximum(_band(maps.shape[1], maps.shape[-1], int(kind.split("band ")[1])), 1e-9)
    return r


def run(kind: str, seed: int, good: int, test: int, tmp: Path) -> list[dict]:
    import cv2
    import torch
    from torch.nn import functional as F

    from bench._machined_frames import frame
    from cloud_trainer.train import anomaly as A
    from cloud_trainer.train.common import auroc

    folder = tmp / kind
    folder.mkdir()
    for i in range(good):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame(seed, i, kind)[0])
    held = [(frame(seed, 10_000 + i, kind), "good") for i in range(test)]
    held += [(frame(seed, 15_000 + i, kind, shift=True), "shift") for i in range(test)]
    held += [(frame(seed, 20_000 + i, kind, scratch=True), "ng") for i in range(test)]
    kinds = np.asarray([k for _, k in held])
    ng = kinds == "ng"
    masks = [m if k == "ng" else None for (_, m), k in held]
    ds = A.load_good(folder, size=SIZE, tiles=TILES)
    t = ds.per_frame
    s = A.AnomalySettings(
        dataset=folder, registry=tmp, signing_key=tmp, workdir=tmp, size=SIZE, tiles=TILES, threads=2
    )
    seen: dict[str, np.ndarray] = {}
    refs = A.position_refs

    def keep_maps(maps, n):  # the build's held-out good maps, as position_refs first receives them
        seen.setdefault("cv", maps.copy())
        return refs(maps, n)

    t0 = time.perf_counter()
    A.position_refs = keep_maps
    try:
        r = A.fit(ds, s, log=lambda m: print("   ", m, file=sys.stderr))
    finally:
        A.position_refs = refs
    fit_s = time.perf_counter() - t0
    model = r["model"]
    model.ref = None  # raw distance maps: each reference below divides them
    raw, ms = [], []
    with torch.no_grad():
        for (img, _), _k in held:
            t0 = time.perf_counter()
            x = torch.from_numpy(A.tensors(A.cut_tiles(img, SIZE, TILES, folder), r["pre"]))
            f = model.features(x)
            n, _, h, w = f.shape
            p = f.flatten(2).transpose(1, 2)
            d2 = (p * p).sum(-1, keepdim=True) - 2.0 * torch.matmul(p, model.bank_t) + model.bank_sq
            dist = torch.sqrt(torch.clamp(d2.amin(-1), min=0.0)).reshape(n, 1, h, w)
            raw.append(F.conv2d(F.pad(dist, (1, 1, 1, 1), mode="replicate"), model.blur)[:, 0].numpy())
            ms.append((time.perf_counter() - t0) * 1000)
    cv = seen["cv"]
    h = cv.shape[-1]
    gm = cv.reshape(-1, t, h, h).astype(np.float64)

    def score(m: np.ndarray) -> float:
        return float(A._map_scores(m.astype(np.float32), SIZE).max())

    rows = []
    for ref_kind in REFS:
        cv_scores = np.asarray(
            [score(gm[i] / reference(ref_kind, np.delete(gm, i, 0))) for i in range(len(gm))]
        )
        thr, _ = A.threshold_at(cv_scores, s.false_reject_rate)
        ref = reference(ref_kind, gm)
        fs, ups, border = [], [], []
        for rm, k in zip(raw, kinds, strict=True):
            mm = (rm / ref).astype(np.float32)
            fs.append(score(mm))
            up = F.interpolate(
                torch.from_numpy(mm[:, None]), size=(SIZE, SIZE), mode="bilinear", align_corners=False
            )
            ups.append(up.numpy())
            if k != "ng":
                j = int(np.argmax(mm.reshape(t, -1).max(1)))
                y, x = np.unravel_index(int(np.argmax(mm[j])), mm[j].shape)
                border.append(min(y, x, h - 1 - y, h - 1 - x) < 4)
        f = np.asarray(fs)
        stitched = A.frame_maps(np.concatenate(ups), masks, s)
        hits = [v for v in A.hottest_hits(stitched, masks) if v is not None]
        local = []
        for m, mask in zip(stitched, masks, strict=True):
            if mask is not None:
                near = cv2.resize(
                    cv2.dilate(mask, np.ones((9, 9), np.uint8)),
                    (m.shape[1], m.shape[0]),
                    interpolation=cv2.INTER_NEAREST,
                )
                local.append(float(m[near > 0].max()) if (near > 0).any() else 0.0)
        g = f[kinds == "good"]
        rows.append(
            {
                "kind": kind,
                "seed": seed,
                "reference": ref_kind,
                "threshold": thr,
                "auroc": auroc(ng[kinds != "shift"], f[kinds != "shift"]),
                "auroc_shift": auroc(ng[kinds != "good"], f[kinds != "good"]),
                "recall": float(np.mean(f[ng] >= thr)),
                "good_rejected": float(np.mean(f[kinds == "good"] >= thr)),
                "shift_rejected": float(np.mean(f[kinds == "shift"] >= thr)),
                "hit": float(np.mean(hits)),
                "scratch_place_auroc": auroc(
                    np.r_[np.zeros(len(g)), np.ones(len(local))].astype(bool), np.r_[g, local]
                ),
                "good_max_at_border": float(np.mean(border)),
                "fit_s": fit_s,
                "frame_ms": float(np.median(ms)),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.anomaly_scratch_bench")
    ap.add_argument("--kinds", nargs="+", default=["turned", "honed"], choices=["turned", "honed"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--good", type=int, default=30)
    ap.add_argument(
        "--test", type=int, default=20, help="held-out frames of each: good, shifted light, scratched"
    )
    a = ap.parse_args(argv)
    from bench._machine import machine, machine_line

    rows = []
    with tempfile.TemporaryDirectory() as td:
        for kind in a.kinds:
            rows += run(kind, a.seed, a.good, a.test, Path(td))
    OUT.mkdir(exist_ok=True)
    name = f"anomaly_scratch_bench-{a.seed}"
    (OUT / f"{name}.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    md = [
        "### Thin scratches on 1280x1024 machined faces, 5x4 tiles of 224 px (bench/anomaly_scratch_bench.py)",
        "",
        f"{time.strftime('%Y-%m-%d')}; {machine_line()}; `.venv/bin/python -m bench.anomaly_scratch_bench "
        f"--kinds {' '.join(a.kinds)} --seed {a.seed} --good {a.good} --test {a.test}`. Frame ms: median per frame "
        "of the fitted model's features and distances in torch (2 threads), not the agent's ONNX session.",
        "",
        "| surface | per-position reference | threshold | image AUROC | AUROC vs shifted light | NG recall @thr "
        "| good rejected | good rejected, shifted light | map peak on scratch | scratch place AUROC "
        "| good maxima at a tile border | fit s | frame ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['kind']} (seed {r['seed']}) | {r['reference']} | {r['threshold']:.3f} | {r['auroc']:.3f} | "
            f"{r['auroc_shift']:.3f} | {r['recall']:.2f} | {r['good_rejected']:.0%} | {r['shift_rejected']:.0%} | "
            f"{r['hit']:.2f} | {r['scratch_place_auroc']:.3f} | {r['good_max_at_border']:.0%} | {r['fit_s']:.0f} | "
            f"{r['frame_ms']:.0f} |"
        )
    (OUT / f"{name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
