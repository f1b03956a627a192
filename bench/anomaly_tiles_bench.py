"""Good-only anomaly detection of small defects on megapixel frames: the whole frame, ``--roi``, a
larger ``--size`` and ``--tiles``, each built as a user builds it and judged as the agent judges.

Data (``tests/support/bracket_frames.py``, made here, independent of the project's simulators): a
bead-blasted bracket on a fixture in 1280x1024 frames; defects a 2-3 px scratch, a stain a few pixels
across, a chip of a few pixels off the edge, with masks. ``--good`` good training frames, written as a
plain folder of good images (the tiled whole-frame build reads that) and in the MVTec AD layout (the
others), ``--test`` good and ``--test`` defective held-out frames (other indices).

Each configuration: ``anomaly.build`` (the function behind `cloud-trainer build anomaly`), then its
signed package opened and verified, and every held-out frame run as the agent runs it
(``image_tensor`` of the whole frame → ONNX Runtime session of the served model, 2 threads →
``interpret`` with the stored threshold; a tiled model's frame is one batch of its tiles, its verdict
the worst tile's, its map the tiles' stitched). Reported: image AUROC of the frame scores, NG recall and
good frames rejected at the stored threshold, the share of NG frames whose stitched map peaks on the
defect (mask dilated by 8 px), build time; and the agent's per-frame cost (preprocess + run +
interpret) against a bare ``session.run`` of the same prepared tensor, medians, and the ratio.

    .venv/bin/python -m bench.anomaly_tiles_bench [--good 60] [--test 30] [--configs whole roi size512 tiles roi-tiles]
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

W, H, SEED = 1280, 1024, 31


def configs() -> dict[str, dict]:
    from tests.support.bracket_frames import part_box

    roi = part_box(W, H)
    return {
        "whole": {"size": 128},  # today's default: the whole frame at 128 px
        "roi": {"size": 128, "roi": roi},
        "size512": {"size": 512},
        "roi-size512": {"size": 512, "roi": roi},
        "tiles": {"size": 224, "tiles": [5, 4], "folder": True},  # from the plain folder of good images
        # the same without the tile positions' reference maps (one bank, one scale for every tile)
        "tiles-flat": {"size": 224, "tiles": [5, 4], "folder": True, "positions": False},
        "roi-tiles": {"size": 256, "tiles": [4, 3], "roi": roi},
    }


def judge(pkg: Path, pub: Path, frames, tmp: Path) -> dict:
    import cv2
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
    scores, ng, verdicts, hits, agent_ms, bare_ms = [], [], [], [], [], []
    for img, mask, defect in frames:
        t0 = time.perf_counter()
        x = image_tensor(img, m.preprocessing)
        out = dict(zip(names, sess.run(None, {m.inputs[0].name: x}), strict=True))
        it = interpret(m, out, img.shape[:2])
        agent_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        sess.run(None, {m.inputs[0].name: x})
        bare_ms.append((time.perf_counter() - t0) * 1000)
        scores.append(it.score)
        ng.append(defect is not None)
        verdicts.append(it.verdict)
        if defect is not None and it.heatmap is not None:
            hm = it.heatmap
            mk = cv2.resize(cv2.dilate(mask, np.ones((17, 17), np.uint8)), (hm.shape[1], hm.shape[0]))
            y, x0 = np.unravel_index(int(np.argmax(hm)), hm.shape)
            hits.append(bool(mk[y, x0]))
    s, n = np.asarray(scores), np.asarray(ng)
    v = np.asarray(verdicts)
    return {
        "image_auroc": auroc(n, s),
        "ng_recall": float(np.mean(v[n] == "NG")),
        "ok_rejected": float(np.mean(v[~n] == "NG")),
        "map_peak_on_defect": float(np.mean(hits)) if hits else float("nan"),
        "per_kind": {
            d: auroc(
                np.asarray([f[2] is not None for f in frames if f[2] in (d, None)]),
                np.asarray([sc for sc, f in zip(s, frames, strict=True) if f[2] in (d, None)]),
            )
            for d in sorted({f[2] for f in frames if f[2]})
        },
        "n_tiles": m.preprocessing.n_tiles,
        "agent_ms": float(np.median(agent_ms)),
        "bare_ms": float(np.median(bare_ms)),
    }


def main(argv: list[str] | None = None) -> int:
    from bench._machine import machine, machine_line

    ap = argparse.ArgumentParser(prog="bench.anomaly_tiles_bench")
    ap.add_argument("--good", type=int, default=60)
    ap.add_argument("--test", type=int, default=30, help="good and defective held-out frames each")
    ap.add_argument("--configs", nargs="+", default=list(configs()), choices=list(configs()))
    ap.add_argument(
        "--kind",
        default="bracket",
        choices=["bracket", "sheet"],
        help="the part on its fixture, or a sheet filling the frame",
    )
    ap.add_argument("--seed", type=int, default=SEED, help="the frames' seed (bracket_frames)")
    a = ap.parse_args(argv)
    seed = a.seed
    from cloud_trainer.train import anomaly as A
    from model_packager import generate_keypair
    from tests.support.bracket_frames import defects, frame, write_mvtec

    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        key, pub = tmp / "k.key", tmp / "k.pub"
        generate_keypair(key, pub)
        t = time.perf_counter()
        # train/good: also the plain folder of good images
        data = write_mvtec(tmp / a.kind, seed, a.good, 0, 0, W, H, a.kind)
        dk = defects(a.kind)
        held = [(*frame(seed, 10_000 + i, W, H, kind=a.kind), None) for i in range(a.test)]
        held += [(*frame(seed, 20_000 + i, W, H, dk[i % 3], a.kind), dk[i % 3]) for i in range(a.test)]
        print(f"data: {time.perf_counter() - t:.0f} s", file=sys.stderr)
        for name in a.configs:
            c = dict(configs()[name])
            src = data / "train" / "good" if c.pop("folder", False) else data
            s = A.AnomalySettings(
                dataset=src,
                registry=tmp / f"reg-{name}",
                signing_key=key,
                workdir=tmp / f"work-{name}",
                openvino=False,
                threads=2,
                force=True,
                **c,
            )
            t = time.perf_counter()
            res = A.build(s, log=lambda m: print("   ", m, file=sys.stderr))
            secs = time.perf_counter() - t
            r = {
                "config": name,
                **{k: v for k, v in c.items()},
                "form": res["report"]["form"],
                "build_s": secs,
            }
            r |= judge(Path(res["package"]), pub, held, tmp / f"open-{name}")
            rows.append(r)
            print(json.dumps(r, default=float), file=sys.stderr)
    OUT.mkdir(exist_ok=True)
    (OUT / f"anomaly_tiles_bench-{a.kind}-{seed}.json").write_text(
        json.dumps({"machine": machine(), "rows": rows}, indent=1, default=float)
    )
    kinds = sorted({k for r in rows for k in r["per_kind"]})
    md = [
        f"### Anomaly family on {W}x{H} frames ({a.kind}): small defects, whole frame / --roi / --size / --tiles",
        "",
        f"{time.strftime('%Y-%m-%d')}; {machine_line()}; `.venv/bin/python -m bench.anomaly_tiles_bench "
        f"--kind {a.kind} --good {a.good} --test {a.test} --seed {seed}`. {a.good} good training frames "
        f"(bracket_frames {a.kind}, seed {seed}); "
        f"{a.test} good + {a.test} defective held-out frames (2-3 px scratch, few-px stain, few-px chip). Each "
        "package verified and run as the agent runs it (ONNX Runtime FP32/INT8 as served, 2 threads, threshold "
        "stored in the package). ms: medians per frame; agent = preprocess + run + interpret, bare = "
        "`session.run` of the same tensor.",
        "",
        "| config | size | roi | tiles | form | image AUROC | "
        + " | ".join(kinds)
        + " | NG recall @thr | good rejected | map peak on defect | build s | agent ms | bare ms | ratio |",
        "|---|---:|---|---|---|---:|" + "---:|" * len(kinds) + "---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per = " | ".join(f"{r['per_kind'].get(k, float('nan')):.3f}" for k in kinds)
        tiles = "x".join(map(str, r["tiles"])) if r.get("tiles") else "-"
        md.append(
            f"| {r['config']}{'' if r.get('positions', True) else ' (no positions)'} | {r['size']} | {'part' if r.get('roi') else 'frame'} | "
            f"{tiles} | {r['form']} | {r['image_auroc']:.3f} | {per} | "
            f"{r['ng_recall']:.2f} | {r['ok_rejected']:.1%} | {r['map_peak_on_defect']:.2f} | {r['build_s']:.0f} | "
            f"{r['agent_ms']:.1f} | {r['bare_ms']:.1f} | {r['agent_ms'] / r['bare_ms']:.2f} |"
        )
    (OUT / f"anomaly_tiles_bench-{a.kind}-{seed}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
