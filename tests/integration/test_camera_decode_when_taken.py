"""A camera faster than its model: the frames a pipeline's queue drops must cost no decoding. A real agent,
a real ONNX Runtime session on a test package (made slower than the camera, as a gateway's model is under
load), the camera simulator's MJPEG stream over 127.0.0.1. CPU figures are in ``bench/camera_bench.py``."""

from __future__ import annotations

import time

import pytest

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from tests.support.models import make_keypair, make_package
from tests.support.waits import until


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("takenpkg")
    key, pub = make_keypair(tmp / "keys")
    return make_package(tmp, kind="vision", key=key), pub


async def test_frames_the_pipeline_drops_are_never_decoded(tmp_path, package):
    """An MJPEG camera at 40 fps and a model that takes ~0.1 s a frame: every part was decoded to BGR as it
    arrived and most were then dropped by the pipeline's queue (drop_oldest): a quarter of a core on a
    2-core gateway with three such cameras, spent on frames no model saw. A part is now kept compressed until
    the pipeline takes it: the camera's decoded count (on /status and edge_camera_decoded_total) is the
    frames taken, not the frames received, and the drops are counted as before."""
    from simulators.camera import CameraServer

    pkg, pub = package
    sim = CameraServer(0, fps=40, seed=3).start()
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "trusted_keys": [str(pub)],
                "http": {"enabled": False},
                "sources": {"cam": {"type": "camera", "url": sim.url}},
                "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
                "pipelines": [
                    {
                        "name": "inspect",
                        "source": "cam",
                        "model": "vision",
                        "queue": {"size": 2, "policy": "drop_oldest"},
                    }
                ],
            }
        )
    )
    slot = agent.slots["vision"]
    infer = slot.infer

    def slow_infer(item, *a, **kw):  # the model on a loaded gateway: behind a 40-fps camera
        out = infer(item, *a, **kw)
        time.sleep(0.1)
        return out

    slot.infer = slow_infer  # type: ignore[method-assign]
    await agent.start()
    try:
        await until(lambda: agent.pipelines[0].stats.results >= 8, 30, "results")
        status = agent.status()
        agent.metrics.refresh(agent)
        exposition = agent.metrics.exposition().decode()
    finally:
        await agent.stop()
        sim.stop()
    cam = status["sources"]["cam"]
    p = next(p for p in status["pipelines"] if p["pipeline"] == "inspect")
    assert cam["received"] >= 2 * p["results"] and p["dropped"] > 0, (cam, p)
    # every image decoded was a frame the pipeline took (its results, and at most its worker's one in flight)
    assert 1 <= cam["decoded"] <= p["results"] + 1 + sum(p["errors"].values()), (cam, p)
    assert not cam["errors_by_reason"]
    assert f'edge_camera_decoded_total{{source="cam"}} {float(cam["decoded"])}' in exposition
