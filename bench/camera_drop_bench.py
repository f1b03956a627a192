"""A drop folder's per-frame checks before decoding, former vs now, on the same bytes in the same run.

Former: the JPEG/PNG end-marker test alone (``looks_whole`` before: every other kind taken as whole). Now: the
whole-file check of every kind (``protocols.image_complete.cut_short``) and the CRC-32 of the bytes read that tells
a file rewritten with the same size and time from one whose status alone changed. Each beside the frame's decode
(``cv2.imdecode``, what the check avoids for a cut-short file) and reading the file from the page cache. Medians of
alternating blocks.

    .venv/bin/python -m bench.camera_drop_bench [--n 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

from bench._machine import machine, machine_line
from devices.camera.capture import _fingerprint
from model_packager.cpu import cpu_flags
from protocols.image_complete import cut_short

OUT = Path(__file__).resolve().parent / "out"


def former_looks_whole(data: bytes) -> bool:
    """``devices.camera.mjpeg.looks_whole`` before: JPEG and PNG by their end marker, every other kind whole."""
    if data[:2] == b"\xff\xd8":
        return data.rstrip(b"\r\n\x00 ").endswith(b"\xff\xd9")
    if data[:4] == b"\x89PNG":
        return data.rstrip(b"\r\n\x00 ").endswith(b"IEND\xaeB`\x82")
    return True


def images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 255, (1200, 1920, 3), dtype=np.uint8)
    colour = cv2.GaussianBlur(colour, (0, 0), 3)  # a camera's image compresses, noise would not
    mono = cv2.GaussianBlur(rng.integers(0, 255, (2048, 2448), dtype=np.uint8), (0, 0), 3)
    out = {}
    for name, img, ext in (
        ("BMP 1920x1200 colour", colour, ".bmp"),
        ("BMP 2448x2048 mono", mono, ".bmp"),
        ("TIFF 2448x2048 mono", mono, ".tif"),
        ("TIFF 1920x1200 LZW", colour, ".tif"),
        ("PGM 2448x2048", mono, ".pgm"),
        ("PNG 1920x1200", colour, ".png"),
        ("JPEG 1920x1200", colour, ".jpg"),
        ("WebP 1920x1200", colour, ".webp"),
    ):
        params = [cv2.IMWRITE_TIFF_COMPRESSION, 5] if "LZW" in name else []
        out[name] = cv2.imencode(ext, img, params)[1].tobytes()
    return out


def per_call(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="calls per block")
    ap.add_argument("--blocks", type=int, default=5)
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in images().items():
            path = Path(tmp) / "frame"
            path.write_bytes(data)
            assert former_looks_whole(data) and cut_short(data) is None
            cut = data[: len(data) // 2]
            t: dict[str, list[float]] = {
                k: [] for k in ("former", "now", "print", "crc", "cut", "decode", "read")
            }
            for _ in range(a.blocks):  # alternating blocks: the same load on each
                t["former"].append(per_call(lambda d=data: former_looks_whole(d), a.n))
                t["now"].append(per_call(lambda d=data: cut_short(d), a.n))
                t["print"].append(per_call(lambda d=data: _fingerprint(d), a.n))
                t["crc"].append(per_call(lambda d=data: zlib.crc32(d), max(a.n // 10, 5)))
                t["cut"].append(per_call(lambda d=cut: cut_short(d), a.n))
                t["decode"].append(
                    per_call(
                        lambda d=data: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_UNCHANGED),
                        max(a.n // 40, 3),
                    )
                )
                t["read"].append(per_call(path.read_bytes, max(a.n // 10, 5)))
            m = {k: statistics.median(v) for k, v in t.items()}
            rows.append(
                {
                    "image": name,
                    "bytes": len(data),
                    "former_check_us": round(m["former"], 1),
                    "now_check_us": round(m["now"], 1),
                    "now_cut_half_us": round(m["cut"], 1),
                    "fingerprint_us": round(m["print"], 1),
                    "crc32_all_us": round(m["crc"], 1),
                    "read_us": round(m["read"], 1),
                    "decode_us": round(m["decode"], 1),
                    "added_per_frame_of_decode": round(
                        (m["now"] + m["print"] - m["former"]) / m["decode"], 4
                    ),
                }
            )
    flags = " ".join(cpu_flags())
    OUT.mkdir(exist_ok=True)
    (OUT / "camera_drop_bench.json").write_text(
        json.dumps({"cpu_flags": flags, "machine": machine(), "rows": rows}, indent=1)
    )
    print(f"{machine_line()}\n")
    print(
        "| image | bytes | former check µs | now check µs | now, cut in half µs | fingerprint µs "
        "| CRC-32 of all µs | read µs | decode µs | added (check + fingerprint) / decode |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['image']} | {r['bytes']:,} | {r['former_check_us']} | {r['now_check_us']} | "
            f"{r['now_cut_half_us']} | {r['fingerprint_us']} | {r['crc32_all_us']} | {r['read_us']} | "
            f"{r['decode_us']} | "
            f"{r['added_per_frame_of_decode'] * 100:.1f} % |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
