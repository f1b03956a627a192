"""The agent's own figures and imports: peak RSS is the process's own, start counts from launch, the
ONNX graph check needs no `onnx`, and a config imports only the libraries it uses."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from model_packager.onnx_graph import graph_io
from tests.support.models import make_signal_onnx, make_vision_onnx

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("onnx", "onnxruntime", "openvino", "cv2", "asyncua", "paho", "torch", "grpc")


def _run(code: str, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip().splitlines()[-1]


def test_graph_io_reads_the_model_as_onnx_does_and_refuses_garbage(tmp_path):
    import onnx

    for path in (make_vision_onnx(tmp_path / "v.onnx"), make_signal_onnx(tmp_path / "s.onnx")):
        m = onnx.load(str(path))
        inits = {i.name for i in m.graph.initializer}

        def dims(v):
            return [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in v.type.tensor_type.shape.dim
            ]

        want = (
            {v.name: (v.type.tensor_type.elem_type, dims(v)) for v in m.graph.input if v.name not in inits},
            {v.name: (v.type.tensor_type.elem_type, dims(v)) for v in m.graph.output},
        )
        assert graph_io(path.read_bytes()) == want
    data = path.read_bytes()
    for bad in (b"", b"not a model at all", data[: len(data) // 3], b"\x3a\xff\xff\xff\xff\x0f"):
        with pytest.raises(ValueError):
            graph_io(bad)


def test_peak_rss_is_the_process_own_not_its_parents():
    ballast = np.ones(60 * 2**20 // 8)  # this process now peaks 60 MB higher than a fresh interpreter
    code = (
        "import time; t = time.time()\nfrom edge_agent.process_info import launched_at, peak_rss_mb\n"
        "print(peak_rss_mb(), t - launched_at())"
    )
    peak, waited = map(float, _run(code).split())
    assert peak < 40, f"a bare interpreter reported {peak} MB: its parent's peak, not its own"
    assert 0 <= waited < 5  # launch is before the first line of Python runs
    assert ballast.sum() > 0


@pytest.mark.parametrize(
    ("source", "expect"), [({"type": "mqtt"}, {"paho"}), ({"type": "camera", "url": "frames/"}, set())]
)
def test_an_agent_imports_only_what_its_config_uses(source, expect):
    # (a camera imports cv2 when it starts; building the agent must not)
    cfg = {"agent": {"id": "gw"}, "http": {"enabled": False}, "sources": {"s": source}}
    code = (
        "import json, sys\nfrom edge_agent.config import parse_config\nfrom edge_agent.agent import Agent\n"
        "Agent(parse_config(json.loads(sys.argv[1])))\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    assert set(json.loads(_run(code, json.dumps(cfg)))) == expect


async def test_outbox_async_face_never_blocks_the_loop(tmp_path, monkeypatch):
    import asyncio

    from edge_agent.outbox.settings import OutboxSettings
    from edge_agent.outbox.store import Outbox, OutboxError

    ob = Outbox(OutboxSettings(fsync="always"), tmp_path)
    assert not ob.is_open
    with pytest.raises(OutboxError):
        await ob.append_async("result", {"n": 0})
    ob.open()
    assert ob.is_open
    slow = ob.append
    loop_ran = threading.Event()  # set by the loop while the append is under way

    def append(
        *a, **kw
    ):  # a commit that waits for the loop to run meanwhile (a slow disk): on the loop's own
        # thread it would wait for ever for itself, here cut to 30 s and failed
        if not loop_ran.wait(30):
            raise AssertionError(
                "the loop did not run while an append was under way: append_async blocked it"
            )
        return slow(*a, **kw)

    monkeypatch.setattr(ob, "append", append)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
            if ticks >= 10:
                loop_ran.set()

    t = asyncio.create_task(ticker())
    seq = await ob.append_async("result", {"n": 1})
    assert ticks >= 10, f"the loop ran {ticks} times while appending"
    futs = [ob.append_soon("event", {"n": i}) for i in range(2, 4)]  # for callers that cannot await
    await asyncio.to_thread(ob.flush)  # waits for what the async face holds, then commits
    t.cancel()
    assert all(f.done() for f in futs) and futs[-1].result() == seq + 2
    st = await ob.stats_async()
    assert st["depth"] == 3 and st["last_seq"] == seq + 2
    ob.close()
    assert not ob.is_open and ob.append_soon("event", {}) is None
