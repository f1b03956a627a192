"""A gateway whose cores are saturated by its own models: the event loop (rules, PLC writes, heartbeats) must
go first, and what the operator reads (latency, loop lag) must say what happened. Real ONNX Runtime sessions
on test packages, a real image-folder camera; the thread priorities are read back from the kernel
(``/proc``), not assumed. Timing figures under load are in ``bench/saturated_bench.py``."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from devices.base import Frame
from edge_agent.agent import Agent
from edge_agent.config import PipelineSettings, parse_config
from edge_agent.models.config import ModelConfig
from edge_agent.models.slot import ModelSlot
from edge_agent.pipelines import Pipeline
from edge_agent.priority import INFERENCE_NICE, thread_nice
from tests.support.models import make_keypair, make_package
from tests.support.waits import until

pytestmark = pytest.mark.skipif(thread_nice() is None, reason="per-thread priorities are a Linux feature")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("satpkg")
    key, pub = make_keypair(tmp / "keys")
    return make_package(tmp, kind="vision", key=key), pub


def _threads() -> dict[int, int]:
    """This process's threads: id -> niceness."""
    out = {}
    for t in os.listdir("/proc/self/task"):
        nice = thread_nice(int(t))
        if nice is not None:
            out[int(t)] = nice
    return out


async def test_inference_runs_below_the_event_loops_priority(tmp_path, package):
    # The inference threads ran at the loop's priority: on a 2-core gateway whose cameras wanted more
    # inference than the cores give, the kernel shared the cores evenly between them and the loop's thread,
    # so a rule's trip to the PLC, the heartbeat and the keep-alives waited their turn behind frames
    pkg, pub = package
    import cv2

    cam = tmp_path / "cam"
    cam.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(cam / f"{i}.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "trusted_keys": [str(pub)],
                "http": {"enabled": False},
                "sources": {"cam": {"type": "camera", "url": str(cam), "loop": True, "fps": 20}},
                "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
                "pipelines": [{"name": "inspect", "source": "cam", "model": "vision"}],
            }
        )
    )
    loop_nice = thread_nice()
    assert loop_nice == thread_nice(os.getpid())  # the loop runs on the main thread, as edge-agent run's does
    slot = agent.slots["vision"]
    seen: list[int | None] = []
    infer = slot.infer

    def recording_infer(item, *a, **kw):
        seen.append(thread_nice())
        return infer(item, *a, **kw)

    slot.infer = recording_infer  # type: ignore[method-assign]
    decoding: list[int | None] = []
    read_image = agent.sources["cam"]._read_image

    def recording_read(f):  # the camera's reader thread decodes the image files
        decoding.append(thread_nice())
        return read_image(f)

    agent.sources["cam"]._read_image = recording_read
    await agent.start()
    try:
        await until(lambda: agent.pipelines[0].stats.results >= 3, what="results")
    finally:
        await agent.stop()
    assert loop_nice is not None
    assert seen and all(n == min(19, loop_nice + INFERENCE_NICE) for n in seen), seen
    assert decoding and all(n == min(19, loop_nice + INFERENCE_NICE) for n in decoding), decoding
    assert thread_nice() == loop_nice  # the loop's own thread keeps its priority


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
async def test_a_models_own_engine_threads_run_below_the_loop_too(tmp_path, package, engine):
    # ONNX Runtime's intra-op pool (threads: 2) and OpenVINO's stream threads are made when the model is
    # loaded, and a thread inherits the priority of the one that makes it: models loaded at the loop's
    # priority ran their engine's threads there too
    pkg, pub = package
    main = thread_nice(os.getpid())
    assert main is not None
    before = set(_threads())
    slot = ModelSlot(
        "vision",
        ModelConfig(package=str(pkg), engine=engine, threads=2),
        tmp_path / "data",
        [str(pub)],
    )
    await slot.start()
    try:
        new = {tid: nice for tid, nice in _threads().items() if tid not in before}
        lowered = [tid for tid, nice in new.items() if nice >= min(19, main + INFERENCE_NICE)]
        # ONNX Runtime: one intra-op thread beside the caller's for threads: 2; OpenVINO: its stream threads
        assert lowered, f"threads made by the slot's start, by niceness: {new}"
    finally:
        await slot.stop()


async def test_a_pipelines_latency_counts_its_wait_for_an_inference_thread(tmp_path, package):
    # The pipelines share one pool of inference threads (as many as cores). A result's latency counted its
    # pipeline's own queue and the inference, not the wait for a thread of the pool: on a saturated gateway
    # the maintenance pipeline showed 0.9 ms at p50 on /status while each of its windows had waited behind
    # camera frames. The wait is the item's queue time now.
    pkg, pub = package
    slot = ModelSlot(
        "vision", ModelConfig(package=str(pkg), engine="onnxruntime"), tmp_path / "data", [str(pub)]
    )
    await slot.start()
    pool = ThreadPoolExecutor(max_workers=1)
    results = []

    async def on_result(res, item) -> None:
        results.append(res)

    pipe = Pipeline(PipelineSettings(name="inspect", source="cam", model="vision"), slot, pool, on_result)
    pipe.prepare()
    pipe.start()
    busy = threading.Event()
    release = threading.Event()

    def hold() -> None:  # another pipeline's frame holds the one thread
        busy.set()
        release.wait(30)

    pool.submit(hold)
    try:
        await asyncio.to_thread(busy.wait, 30)
        image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        await pipe.offer(Frame("cam", 1, time.time(), image))
        await until(
            lambda: len(pipe.queue) == 0, what="the worker took the frame"
        )  # now waiting for a thread
        held_s = 0.5
        await asyncio.sleep(held_s)
        release.set()
        await until(lambda: results, what="the result")
    finally:
        release.set()
        await pipe.stop()
        pool.shutdown()
        await slot.stop()
    # a lower bound by construction (the thread was held at least this long after the frame was queued)
    assert results[0].latency.queue_ms >= held_s * 1000
    assert results[0].latency.total_ms >= held_s * 1000


async def test_status_shows_how_late_the_event_loop_runs(tmp_path):
    agent = Agent(
        parse_config(
            {
                "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
                "http": {"enabled": False},
            }
        )
    )
    await agent.start()
    try:
        await until(lambda: agent.status()["agent"]["loop_lag_ms"]["last"] is not None, what="a first sample")
        n = len(agent.loop_lags)
        time.sleep(0.6)  # the loop held (as a long stretch of Python on its thread would hold it)
        await until(lambda: len(agent.loop_lags) > n, what="the next sample")
        lag = agent.status()["agent"]["loop_lag_ms"]
    finally:
        await agent.stop()
    # the timer due 0.25 s after its start fired no sooner than the 0.6 s hold ended: >= 0.35 s late
    assert lag["max_60s"] >= 300


def _camera_config(tmp_path, pkg, pub, cameras: int, fps: float) -> dict:
    cam = tmp_path / "cam"
    cam.mkdir(exist_ok=True)
    import cv2

    cv2.imwrite(str(cam / "0.png"), np.zeros((64, 64, 3), np.uint8))
    return {
        "agent": {"id": "gw", "site": "s", "line": "l", "data_dir": str(tmp_path / "data")},
        "trusted_keys": [str(pub)],
        "http": {"enabled": False},
        "sources": {f"cam{i}": {"type": "camera", "url": str(cam), "fps": fps} for i in range(cameras)},
        "models": {"vision": {"package": str(pkg), "engine": "onnxruntime"}},
        "pipelines": [
            {"name": f"inspect{i}", "source": f"cam{i}", "model": "vision"} for i in range(cameras)
        ],
    }


async def test_validate_warns_when_the_cameras_inference_cannot_fit_the_cores(tmp_path, package, capsys):
    # An engineer added cameras and models until the gateway dropped most frames, with nothing said before the
    # line ran. A slot now records the time per item it measured on this CPU at its load, and `validate`
    # multiplies it by each camera's fps. (The test model takes ~0.05 ms: the record is then rewritten as a
    # 224-px model's 18 ms, the figure bench/saturated_bench.py measured here.)
    import yaml

    from edge_agent import sizing
    from edge_agent.cli import main

    pkg, pub = package
    cores = os.cpu_count() or 1
    fps = 30.0
    cameras = max(2, int(cores * 1000 / (fps * 18.0)) + 1)  # their demand: more than every core
    cfg = _camera_config(tmp_path, pkg, pub, cameras, fps)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    agent = Agent(parse_config(cfg))
    await agent.start()  # the slot's load measures and records its time per item
    await agent.stop()
    slot_dir = tmp_path / "data" / "models" / "vision"
    rec = sizing.recorded(slot_dir)
    assert rec is not None and rec["item_ms"] > 0 and rec["package_file"] == str(pkg)
    assert "onnxruntime" in rec["chosen"]

    assert main(["validate", str(path)]) == 0
    assert "needs at least" not in capsys.readouterr().err  # ~0.05 ms x 30 fps: fits

    (slot_dir / sizing.RECORD).write_text(json.dumps({**rec, "item_ms": 18.0}))
    assert main(["validate", str(path)]) == 0  # a warning, not an error: the agent runs, dropping frames
    err = capsys.readouterr().err
    assert f"of this gateway's {cores} cores" in err and "inspect0 30 fps x 18.0 ms" in err, err
    assert "pipelines:" in err and "lower the cameras' fps" in err

    # a drop folder reads each file as its writer makes it: its fps (which paces nothing there) is no rate
    watched = {**cfg, "sources": {n: {**c, "watch": True} for n, c in cfg["sources"].items()}}
    path.write_text(yaml.safe_dump(watched))
    assert main(["validate", str(path)]) == 0
    assert "needs at least" not in capsys.readouterr().err
    path.write_text(yaml.safe_dump(cfg))

    # a record of another package file than the one configured says nothing about this one
    (slot_dir / sizing.RECORD).write_text(
        json.dumps({**rec, "item_ms": 18.0, "package_file": "/other.edgepkg"})
    )
    assert main(["validate", str(path)]) == 0
    assert "needs at least" not in capsys.readouterr().err


def test_validate_warns_when_the_models_threads_oversubscribe_the_cores(tmp_path, package, capsys):
    # threads: 2 on every slot read as "faster", but the pool already runs one inference per core: two at
    # once on 2 threads each put twice as many threads as cores to work, beside the event loop
    import yaml

    from edge_agent.cli import main

    pkg, pub = package
    cores = os.cpu_count() or 1
    n = max(2, cores)  # one pipeline per core: the pool runs them all at once
    cfg = _camera_config(tmp_path, pkg, pub, n, 5.0)
    cfg["models"] = {f"vision{i}": {"package": str(pkg), "threads": 2} for i in range(n)}
    for i, p in enumerate(cfg["pipelines"]):
        p["model"] = f"vision{i}"
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"put up to {2 * min(n, cores)} threads to work on this gateway's {cores} cores" in err, err
    assert "set threads: 1" in err

    cfg["models"] = {f"vision{i}": {"package": str(pkg)} for i in range(n)}  # threads: 1, the default
    path.write_text(yaml.safe_dump(cfg))
    assert main(["validate", str(path)]) == 0
    assert "threads to work" not in capsys.readouterr().err


async def test_the_agent_says_at_start_when_its_models_threads_oversubscribe_the_cores(
    tmp_path, package, caplog
):
    # the same arithmetic as validate's, said in the agent's log at start (where a fleet-delivered config,
    # never validated on the gateway, is heard of too)
    import logging

    pkg, pub = package
    cores = os.cpu_count() or 1
    n = max(2, cores)
    cfg = _camera_config(tmp_path, pkg, pub, n, 5.0)
    cfg["models"] = {
        f"vision{i}": {"package": str(pkg), "engine": "onnxruntime", "threads": 2} for i in range(n)
    }
    for i, p in enumerate(cfg["pipelines"]):
        p["model"] = f"vision{i}"
    agent = Agent(parse_config(cfg))
    with caplog.at_level(logging.WARNING, logger="edge_agent.agent"):
        await agent.start()
        await agent.stop()
    said = [r.getMessage() for r in caplog.records if "threads to work" in r.getMessage()]
    assert len(said) == 1 and f"this gateway's {cores} cores" in said[0], said


async def test_the_sizing_estimate_counts_every_tile_of_a_tiled_models_frame(tmp_path, monkeypatch, capsys):
    # A tiled package runs each frame as one batch row per tile, but its time per item was the selection's
    # batch-1 run (one golden row: one tile): a camera on a 3x2-tiled model was estimated at a sixth of its
    # cost, and validate said nothing while the gateway dropped frames. The selection's median is fixed at
    # 10 ms a row here (a stand-in for the clock: the test asserts the arithmetic, not a timing); the real
    # session still loads and passes its golden check.
    import yaml

    from edge_agent import sizing
    from edge_agent.cli import main
    from edge_agent.models import select
    from tests.support.models import build_package_for_tests, make_keypair, make_vision_onnx, vision_spec

    monkeypatch.setattr(select, "_p50_ms", lambda *a, **kw: 10.0)
    key, pub = make_keypair(tmp_path / "keys")
    model = make_vision_onnx(tmp_path / "m.onnx", width=32, height=32, seed=3, labels=("ok", "dent"))
    spec = vision_spec(width=32, height=32, labels=("ok", "dent"), threshold=0.5)
    spec["preprocessing"].update(tiles=[3, 2], tile_overlap=0.125)
    golden = {"image": np.random.default_rng(0).uniform(-2, 2, (4, 3, 32, 32)).astype(np.float32)}
    pkg = build_package_for_tests(model, spec, tmp_path / "pkgs", key, golden, openvino=False)
    cores = os.cpu_count() or 1
    # 6 tiles x 10 ms at this fps: 2.4 x the cores' 80 %; a tile alone (the former estimate) fits in half
    fps = 40.0 * cores
    cfg = _camera_config(tmp_path, pkg, pub, 1, fps)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    agent = Agent(parse_config(cfg))
    await agent.start()  # the slot's load records its time per frame
    try:
        item = agent.slots["vision"].item_ms()
        assert item is not None and item[0] == 60.0
    finally:
        await agent.stop()
    rec = sizing.recorded(tmp_path / "data" / "models" / "vision")
    assert rec is not None and rec["item_ms"] == 60.0 and "6 tiles a frame" in rec["chosen"]
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"inspect0 {fps:g} fps x 60.0 ms" in err, err


async def test_validate_takes_no_sizing_record_of_another_cpu_or_another_package_version(
    tmp_path, package, capsys
):
    # The record left in the data folder was taken whatever measured it: a data folder restored from another
    # gateway (a bigger CPU, or a slower one) or a new version of the package put at the same path warned of
    # a load this gateway does not have, or kept quiet about one it has. (18 ms: a 224-px model's time here.)
    import shutil

    import yaml

    from edge_agent import sizing
    from edge_agent.cli import main
    from tests.support.models import make_package

    pkg, pub = package
    cores = os.cpu_count() or 1
    cameras = max(2, int(cores * 1000 / (30.0 * 18.0)) + 1)
    local = tmp_path / "vision.edgepkg"
    shutil.copy(pkg, local)
    cfg = _camera_config(tmp_path, local, pub, cameras, 30.0)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    agent = Agent(parse_config(cfg))
    await agent.start()
    await agent.stop()
    slot_dir = tmp_path / "data" / "models" / "vision"
    rec = sizing.recorded(slot_dir)
    assert rec is not None
    (slot_dir / sizing.RECORD).write_text(json.dumps({**rec, "item_ms": 18.0}))
    assert main(["validate", str(path)]) == 0
    assert "needs at least" in capsys.readouterr().err  # this CPU's record of this version: taken

    (slot_dir / sizing.RECORD).write_text(json.dumps({**rec, "item_ms": 18.0, "cpu": "x86_64 Other CPU x64"}))
    assert main(["validate", str(path)]) == 0
    assert "needs at least" not in capsys.readouterr().err

    (slot_dir / sizing.RECORD).write_text(json.dumps({**rec, "item_ms": 18.0}))
    v2 = make_package(tmp_path / "v2", kind="vision", version="2.0.0", key=pub.with_name("signing.key"))
    shutil.copy(v2, local)  # the engineer's new version, at the same path, not loaded yet
    assert main(["validate", str(path)]) == 0
    assert "needs at least" not in capsys.readouterr().err


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable cores"
)
def test_a_gateway_confined_to_fewer_cores_sizes_its_pool_and_warnings_to_them(tmp_path, package):
    # A container given one core of two (--cpuset-cpus, systemd's CPUAffinity=) counted the machine's cores:
    # the inference pool ran two inferences at once on its one core, and the sizing and threads warnings
    # judged the config against 2 cores (threads: 2 on two pipelines fit, validate said).
    import subprocess
    import sys

    import yaml

    pkg, pub = package
    cfg = _camera_config(tmp_path, pkg, pub, 2, 5.0)
    cfg["models"] = {"vision": {"package": str(pkg), "threads": 1}}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    child = (
        "import os, sys\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from edge_agent.agent import Agent\n"
        "from edge_agent.config import load_config\n"
        "from edge_agent.sizing import threads_warning\n"
        "cfg = load_config(sys.argv[1])\n"
        "print(Agent(cfg).executor._max_workers)\n"
        "print(threads_warning(cfg.model_copy(update={'models': {'vision': cfg.models['vision'].model_copy("
        "update={'threads': 2})}})))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run(
        [sys.executable, "-c", child, str(path)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    workers, warning = r.stdout.splitlines()[-2:]
    assert workers == "1"  # one inference at a time on its one core
    # threads: 2 on the one core it has: more threads than cores, said
    assert "put up to 2 threads to work on this gateway's 1 cores" in warning, r.stdout
