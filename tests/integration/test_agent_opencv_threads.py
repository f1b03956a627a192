"""OpenCV's worker threads in the agent: its calls stay in the calling threads (``edge_agent.priority``).

A call OpenCV runs in parallel (a resize to more than 65,536 pixels, a frame's colour conversion) woke its
worker thread, which spun ~0.5 ms of CPU after each: a third busy thread beside the engine and the camera on a
2-core gateway. The agent sets OpenCV to one thread at start; the pixels are the same either way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

_AGENT = """
import asyncio, os, sys, threading, time
from pathlib import Path
import cv2
import numpy as np
from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.support.models import make_keypair, make_package

tmp = Path(sys.argv[1])
key, pub = make_keypair(tmp / "keys")
# a 320-px model: the frame's resize to its input is one OpenCV runs in parallel (102,400 pixels)
pkg = make_package(tmp, key=key, width=320, height=320, heatmap=False)
folder = tmp / "frames"
folder.mkdir()
rng = np.random.default_rng(0)
for i in range(4):
    f = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    cv2.imwrite(str(folder / f"{i}.jpg"), f)


def cpu():
    got = {}
    for t in os.listdir("/proc/self/task"):
        try:
            got[int(t)] = int(open(f"/proc/self/task/{t}/schedstat").read().split()[0])
        except OSError:
            pass
    return got


async def main():
    agent = Agent(parse_config({
        "agent": {"id": "t", "site": "s", "line": "l", "data_dir": str(tmp / "data")},
        "trusted_keys": [str(pub)],
        "http": {"enabled": False},
        "sources": {"cam": {"type": "camera", "url": str(folder), "loop": True, "fps": 25}},
        "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
        "pipelines": [{"name": "p", "source": "cam", "model": "vision"}],
    }))
    await agent.start()
    try:
        results = lambda: agent.pipelines[0].stats.results
        deadline = time.monotonic() + 30
        while results() < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        a, r0 = cpu(), results()
        while results() < r0 + 12 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        b, n = cpu(), results() - r0
        python = {t.native_id for t in threading.enumerate()}
    finally:
        await agent.stop()
    # the threads Python did not start: OpenCV's workers (ONNX Runtime runs a 1-thread model in the caller)
    spun = sum(b[t] - a.get(t, 0) for t in b if t not in python)
    print(n, spun)


asyncio.run(main())
"""


def test_the_agents_frames_leave_opencvs_worker_threads_idle(tmp_path):
    """A real agent (a folder camera, a vision pipeline on ONNX Runtime, a 320-px model): over a dozen frames,
    the threads Python did not start (OpenCV's workers) take no CPU. Before, OpenCV's worker spun 0.6-0.8 ms
    after each frame's resize to the model's input (measured: 640x480 -> 320x320)."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("reads the process's threads' CPU in /proc")
    r = subprocess.run(
        [sys.executable, "-c", _AGENT, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    n, spun_ns = (int(v) for v in r.stdout.split()[-2:])
    assert n >= 12, f"{n} frames inferred"
    assert spun_ns < 200_000, f"OpenCV's worker threads took {spun_ns / 1e6:.2f} ms of CPU over {n} frames"


@pytest.mark.parametrize("hw", [(480, 640), (1944, 2592)])
def test_the_preprocessing_on_one_opencv_thread_gives_the_same_tensors(hw):
    """The calls OpenCV ran in parallel (a grey frame to a colour model, a resize to 320 px by area or linear,
    a grey model's conversion) give the same arrays on one thread, to the bit."""
    from model_packager.manifest import ImagePreprocessing
    from model_packager.preprocess import image_tensor
    from tests.support.models import vision_spec

    def spec(side: int, **kw) -> ImagePreprocessing:
        s = vision_spec(width=side, height=side)["preprocessing"]
        s.update(kw)
        return ImagePreprocessing(**s)

    rng = np.random.default_rng(hw[1])
    colour = cv2.GaussianBlur(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), (0, 0), 2)
    cases = [
        (colour[:, :, 0].copy(), spec(224), "uint8"),
        (colour[:, :, 0].copy(), spec(320), "float32"),
        (colour, spec(320), "float32"),
        (colour, spec(320, interpolation="linear"), "float32"),
        (colour, spec(320, color="gray"), "uint8"),
        (colour, spec(512, interpolation="linear", color="rgb"), "uint8"),
        (colour, spec(224, tiles=[2, 2]), "float16"),
    ]
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(max(2, before))
        parallel = [image_tensor(img, s, dt) for img, s, dt in cases]
        cv2.setNumThreads(1)
        one = [image_tensor(img, s, dt) for img, s, dt in cases]
    finally:
        cv2.setNumThreads(before)
    for p, o in zip(parallel, one, strict=True):
        assert p.dtype == o.dtype and np.array_equal(p, o)
