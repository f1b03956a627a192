"""Image files sized from their headers before decoding (``protocols.image_header.decode_image``) vs a
bare ``cv2.imdecode``, on the same bytes in the same process:

- **per image**: the header check's cost on ordinary camera images (a 5-MP JPEG, a 1-MP PNG, a 200-px
  JPEG), medians of alternating blocks of calls;
- **decompression bomb**: a PNG of 20000x20000 zero pixels (compressed to about 1 MB), each decoder in
  a fresh child process: time to return and the child's peak RSS (``VmHWM``: its own address space, not
  the parent's pages counted by ``ru_maxrss`` across ``fork``/``exec``). The bare decoder expands it; the
  checked one refuses it from the header.

    .venv/bin/python -m bench.image_header_bench [--n 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._machine import machine, machine_line
from model_packager.cpu import cpu_flags

OUT = Path(__file__).resolve().parent / "out"

_CHILD = """
import re, sys, time
import cv2, numpy as np
sys.path.insert(0, {root!r})
from protocols.image_header import ImageRejected, decode_image
data = open({path!r}, "rb").read()
t = time.perf_counter()
if sys.argv[1] == "bare":
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    what = "decoded " + str(None if img is None else img.shape)
else:
    try:
        decode_image(data)
        what = "decoded"
    except ImageRejected as e:
        what = "refused: " + str(e)
dt = time.perf_counter() - t
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())  # this process's own peak
print(dt, int(hwm.group(1)) / 1024, what)
"""


def per_image(n: int) -> list[dict]:
    import cv2

    from protocols.image_header import decode_image

    rng = np.random.default_rng(0)

    def photo(h: int, w: int) -> np.ndarray:  # smooth content with noise: compresses like a camera frame
        base = cv2.resize(rng.integers(0, 255, (h // 32, w // 32, 3), dtype=np.uint8), (w, h))
        return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)

    cases = [
        ("5-MP JPEG (2592x1944)", ".jpg", photo(1944, 2592)),
        ("1-MP PNG (1280x800)", ".png", photo(800, 1280)),
        ("200-px JPEG", ".jpg", photo(200, 200)),
    ]
    rows = []
    for name, ext, img in cases:
        data = cv2.imencode(ext, img)[1].tobytes()
        buf = np.frombuffer(data, np.uint8)
        calls = {
            "bare": lambda buf=buf: cv2.imdecode(buf, cv2.IMREAD_COLOR),
            "checked": lambda data=data: decode_image(data),
        }
        times: dict[str, list[float]] = {k: [] for k in calls}
        for f in calls.values():
            f()
        for _ in range(max(1, n // 5)):
            for k, f in calls.items():
                for _ in range(5):
                    t = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t)
        b, c = (float(np.median(times[k])) * 1e6 for k in ("bare", "checked"))
        rows.append(
            {"image": name, "bytes": len(data), "bare_p50_us": b, "checked_p50_us": c, "ratio": c / b}
        )
    return rows


def bomb(tmp: Path) -> dict:
    import cv2

    path = tmp / "bomb.png"
    z = np.zeros((20000, 20000, 3), np.uint8)
    path.write_bytes(cv2.imencode(".png", z, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes())
    del z
    root = str(Path(__file__).resolve().parents[1])
    out: dict = {"file_bytes": path.stat().st_size, "declared": "20000x20000"}
    for mode in ("bare", "checked"):
        r = subprocess.run(
            [sys.executable, "-c", _CHILD.format(root=root, path=str(path)), mode],
            capture_output=True,
            text=True,
            timeout=300,
        )
        s, rss, what = r.stdout.strip().split(" ", 2)
        out[mode] = {"seconds": float(s), "peak_rss_mb": float(rss), "outcome": what}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    a = ap.parse_args(argv)
    load = os.getloadavg()[0]
    rows = per_image(a.n)
    with tempfile.TemporaryDirectory() as t:
        b = bomb(Path(t))
    res = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "cpu_flags": " ".join(cpu_flags()),
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "per_image": rows,
        "bomb": b,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "image_header.json").write_text(json.dumps(res, indent=1))
    lines = [
        f"Measured {res['when']}; 1-min load average "
        f"{load:.1f} before, {res['load_after']:.1f} after. {a.n} calls of each kind per image.",
        "",
        "| image | file bytes | bare `cv2.imdecode` p50 µs | `decode_image` p50 µs | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['bytes']} | {r['bare_p50_us']:.0f} | {r['checked_p50_us']:.0f} | "
            f"**{r['ratio']:.3f}** |"
        )
    lines += [
        "",
        f"Decompression bomb: a PNG of {b['declared']} zero pixels, {b['file_bytes']} bytes, each decoder "
        "in a fresh child process:",
        "",
        "| decoder | seconds | peak RSS MB | outcome |",
        "|---|---:|---:|---|",
    ]
    for mode in ("bare", "checked"):
        m = b[mode]
        lines.append(f"| {mode} | {m['seconds']:.2f} | {m['peak_rss_mb']:.0f} | {m['outcome']} |")
    lines += ["", machine_line()]
    text = "\n".join(lines)
    (OUT / "image_header.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
