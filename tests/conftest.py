"""Session-wide fixtures: real peers on loopback. Area-specific fixtures live beside their tests."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import sys
from pathlib import Path

import pytest

# OpenVINO's usage telemetry off in every test process, whatever imports openvino first: the project's code
# turns it off before it opens a model (model_packager.runtimes._no_telemetry), but a test that reads OpenVINO
# itself (``import openvino``: test_golden_verdicts does when it is collected, so in every worker) imported its
# conversion API with the telemetry on, and from then on each conversion in that process forked a child that
# looked up www.google-analytics.com: ~1,700 children and ~70 CPU s a run, and calls outside 127.0.0.1.
sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
gc.disable()  # until collection ends: see pytest_collection below

import cloud_trainer.train  # noqa: E402, F401  (first of ours: PyTorch's threads wait passively, see its docstring)
from tests.support.peers import Mosquitto, mosquitto_binary  # noqa: E402

# The longest test first: the short demo (~210 s of one worker) starts as the run starts, not after the
# tests collected before it, so the other workers' share can always be fitted beside it (a slower CI
# machine stretches it most). Only tests without module-scoped fixtures may move (a module's fixtures
# are torn down when the run leaves it, and set up again when it comes back).
FIRST = ("tests/e2e/test_demo_short.py::test_demo_short_tells_the_whole_story_and_exits_0",)


def pytest_collection_modifyitems(config, items):
    first = [it for it in items if it.nodeid in FIRST]
    if first:
        items[:] = first + [it for it in items if it.nodeid not in FIRST]


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    """The garbage collector is off from this file's import until collection ends: the test modules' imports
    (torch among them) and the ~4,100 items they make, which its collections walked again and again (a
    `--collect-only` of the suite: 8.4-9.5 CPU s, 6.4-6.7 with it off; every xdist worker collects). Then
    what collection made, which stays for the whole run, is frozen out of its reach (``gc.freeze``), so that
    its full collections scan only what the tests make: in a run of half the unit tests they walked those
    ~330,000 objects 35 times (6.1 of its 52.9 CPU s; 2.6 frozen). Objects the tests make are collected as
    before; a cycle made before this point and freed later would stay, and nothing collection made is freed
    before the run ends. (xdist's controller collects nothing: there it is on again at once.)"""
    try:
        return (yield)
    finally:
        gc.enable()
        gc.collect()
        gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _opcua_standard_address_space_from_a_shelf(tmp_path_factory):
    """Every asyncua server the tests start in-process (the machine simulator, the test PLCs of
    ``tests.support.peers.opcua_server``) loads the OPC UA standard address space from one shelf made
    once per run, asyncua's own start-up cache (``Server.init(shelf_file)``), instead of building its
    6,000 nodes again: ~0.15 s a server instead of ~4 s. Same nodes, same server code; servers run as
    processes (``edge-sim machine``) build it as before. And a server's stop no longer idles until its
    clock task's next tick."""
    try:
        from asyncua import Server
    except ImportError:  # nothing to speed up
        yield
        return
    root = tmp_path_factory.getbasetemp()
    root = root.parent if root.name.startswith("popen-gw") else root  # one shelf for all xdist workers
    stem = root / "opcua-standard-address-space"
    from asyncua.server.internal_server import InternalServer

    original_init, original_stop = Server.init, InternalServer.stop

    async def init(self, shelf_file: Path | None = None) -> None:
        if shelf_file is None:  # made by the first server of the run (a worker without one waits for none)
            await asyncio.to_thread(_shelf_ready, stem)
        await original_init(self, shelf_file or stem)

    async def stop(self) -> None:
        # asyncua's stop waits for its clock task to wake from a 1-s sleep (0-1 s idle per server):
        # the task is cancelled instead, then the server stops as before
        task, self.time_task = self.time_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await original_stop(self)

    mp = pytest.MonkeyPatch()
    mp.setattr(Server, "init", init)
    mp.setattr(InternalServer, "stop", stop)
    yield
    mp.undo()


def _shelf_ready(stem: Path) -> None:
    """Make the shelf unless it is there (in a thread of its own: one xdist worker makes it, the others
    wait on the lock). It is what asyncua writes after its first start (a plain ``dbm``: ``stem.dat``/
    ``.dir`` with ``dbm.dumb``; with ``dbm.gnu``, ``stem`` itself): an empty ``stem`` file is what
    asyncua's ``is_file()`` check looks for before it loads a shelf; ``stem.ready``, written last, tells a
    finished shelf from one whose writer died."""
    ready = stem.with_name(stem.name + ".ready")
    if ready.is_file():
        return
    from asyncua import Server

    async def make() -> None:
        srv = Server()
        await srv.iserver.load_standard_address_space()
        srv.iserver.aspace.make_aspace_shelf(stem)

    with open(stem.with_name(stem.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not ready.is_file():
                asyncio.run(make())  # this thread's own loop
                stem.touch()
                ready.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def mosquitto(tmp_path):
    """A fresh Mosquitto broker for one test (restart it with ``.restart()``)."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; `make setup` installs it with apt-get")
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def opencv_warnings_on(monkeypatch):
    """OpenCV at its default level, its warnings printed (another test's video capture, camera or trainer
    command may have lowered it in this process); put back after."""
    import cv2

    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_WARNING)
    yield
    cv2.utils.logging.setLogLevel(level)
