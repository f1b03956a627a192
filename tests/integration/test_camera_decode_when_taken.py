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


@pytest.mark.parametrize("kind", ["mjpeg", "folder"])
async def test_frames_the_pipeline_drops_are_never_decoded(tmp_path, package, kind):
    """An MJPEG camera (or an image folder replayed) at 40 fps and a model that takes ~0.1 s a frame: every
    part was decoded to BGR as it arrived and most were then dropped by the pipeline's queue (drop_oldest):
    a quarter of a core on a 2-core gateway with three such cameras, spent on frames no model saw. A part is
    now kept compressed until the pipeline takes it: the camera's decoded count (on /status and
    edge_camera_decoded_total) is the frames taken, not the frames received, and the drops are counted as
    before."""
    from simulators.camera import CameraServer, write_folder

    pkg, pub = package
    sim = CameraServer(0, fps=40, seed=3).start()
    camera = (
        {"url": sim.url}
        if kind == "mjpeg"
        else {
            "url": str(write_folder(tmp_path / "shots", 8, seed=3, defect_rate=0.5, size=96)),
            "fps": 40,
            "loop": True,
        }
    )
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "trusted_keys": [str(pub)],
                "http": {"enabled": False},
                "sources": {"cam": {"type": "camera", **camera}},
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
    finally:
        await agent.stop()
        sim.stop()
    # read once the agent has stopped: a frame taken between the status and the metrics made them differ by one
    status = agent.status()
    agent.metrics.refresh(agent)
    exposition = agent.metrics.exposition().decode()
    cam = status["sources"]["cam"]
    p = next(p for p in status["pipelines"] if p["pipeline"] == "inspect")
    assert cam["received"] >= 2 * p["results"] and p["dropped"] > 0, (cam, p)
    # every image decoded was a frame the pipeline took (its results, and at most its worker's one in flight)
    assert 1 <= cam["decoded"] <= p["results"] + 1 + sum(p["errors"].values()), (cam, p)
    assert not cam["errors_by_reason"]
    assert f'edge_camera_decoded_total{{source="cam"}} {float(cam["decoded"])}' in exposition


async def test_frames_an_opencv_stream_skips_for_fps_are_grabbed_not_converted(tmp_path):
    """A stream OpenCV's FFmpeg reads (here an MJPG video over HTTP, as an RTSP camera is read) faster than
    ``fps``: every frame was read (decoded and converted to BGR) and most then skipped. Frames fps skips are
    now only grabbed: the images converted are the frames passed on."""
    import asyncio
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from devices.camera.capture import CameraSource
    from devices.camera.settings import CameraSettings
    from simulators.camera import write_video

    video = write_video(tmp_path / "line.avi", 60, fps=30, seed=2, defect_rate=0.5, size=96).read_bytes()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # a whole video each request (Range ignored), as fast as it is read
            self.send_response(200)
            self.send_header("Content-Type", "video/x-msvideo")
            self.send_header("Content-Length", str(len(video)))
            self.end_headers()
            try:
                self.wfile.write(video)
            except OSError:
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    src = CameraSource(
        "cam",
        CameraSettings(
            url=f"http://127.0.0.1:{httpd.server_address[1]}/line.avi", fps=2, reconnect_initial_s=0.1
        ),
    )
    frames = []
    try:
        await src.start()
        async with asyncio.timeout(20):
            async for f in src.items():
                frames.append(f)
                if len(frames) >= 2:
                    break
    finally:
        await src.stop()
        httpd.shutdown()
        httpd.server_close()
    assert len(frames) == 2 and all(f.image.shape == (96, 96, 3) for f in frames)
    assert src.skipped >= 30, src.skipped  # the video's frames within fps's period: grabbed, not retrieved
    assert src.decoded == src.stats.received, (src.decoded, src.stats.received, src.skipped)
