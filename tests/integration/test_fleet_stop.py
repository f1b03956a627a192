"""A fleet service started and stopped in one process (an embedding program, a test run) leaves nothing of its own
open: the control database it opened (control.db and its -wal/-shm) is closed once the rollout tick under way has
ended, and no error is logged for it; a control database the caller passed in stays the caller's."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path

import pytest

from tests.support.fleet import make_pki
from tests.support.peers import free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"), agents=(), admins=())


def open_files_under(folder) -> list[str]:
    fds = Path("/proc/self/fd")
    return [t for t in (os.path.realpath(fd) for fd in fds.iterdir()) if t.startswith(str(folder))]


async def test_a_stopped_service_leaves_its_control_database_closed_even_with_a_tick_under_way(
    pki, tmp_path, caplog
):
    from cloud_trainer.fleet.service import FleetServer

    certs = (pki / "ca.pem", pki / "server.pem", pki / "server.key")
    server = FleetServer(tmp_path / "cloud", free_port(), *certs)
    # the rollout tick is under way (in its worker thread) when stop() runs: it is waited for, not closed under
    real_tick, started, release, ticked = server.control.tick, threading.Event(), threading.Event(), []

    def tick() -> None:
        started.set()
        release.wait(5)
        real_tick()
        ticked.append(True)

    server.control.tick = tick
    caplog.set_level(logging.WARNING)
    await server.start()
    try:
        assert await asyncio.to_thread(started.wait, 10), "no rollout tick ran"
    finally:
        threading.Timer(0.2, release.set).start()  # the tick ends while stop() waits
        await server.stop()
    assert ticked  # the tick under way ran to its end
    assert (tmp_path / "cloud" / "control.db").exists()
    assert open_files_under(tmp_path) == []  # control.db, -wal, -shm and the store: all closed
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_control_database_passed_in_stays_open_after_stop(pki, tmp_path):
    from cloud_trainer.fleet.control import Control
    from cloud_trainer.fleet.service import FleetServer
    from cloud_trainer.fleet.store import open_store
    from cloud_trainer.registry import Registry

    store = open_store(None, tmp_path / "mine")
    control = Control(tmp_path / "mine" / "control.db", Registry(tmp_path / "mine" / "registry"), store)
    try:
        certs = (pki / "ca.pem", pki / "server.pem", pki / "server.key")
        server = FleetServer(tmp_path / "cloud", free_port(), *certs, control=control)
        await server.start()
        await server.stop()
        assert control.list() == []  # still open: the caller's to close
    finally:
        control.db.close()
        store.close()


async def test_a_tick_that_does_not_end_leaves_stop_bounded_and_its_database_open(
    pki, tmp_path, caplog, monkeypatch
):
    # a tick stuck (a store that does not answer): stop() returns after TICK_STOP_S and says so, rather than
    # waiting for good or closing the database under the tick
    from cloud_trainer.fleet import service

    monkeypatch.setattr(service, "TICK_STOP_S", 0.2)
    certs = (pki / "ca.pem", pki / "server.pem", pki / "server.key")
    server = service.FleetServer(tmp_path / "cloud", free_port(), *certs)
    real_tick, started, release, ended = (
        server.control.tick,
        threading.Event(),
        threading.Event(),
        threading.Event(),
    )

    def tick() -> None:
        started.set()
        release.wait(30)
        real_tick()
        ended.set()

    server.control.tick = tick
    caplog.set_level(logging.WARNING)
    await server.start()
    try:
        assert await asyncio.to_thread(started.wait, 10), "no rollout tick ran"
        await server.stop()
        assert "the deployment tick still runs" in caplog.text
    finally:
        release.set()
    assert await asyncio.to_thread(ended.wait, 10)  # it ran to its end on the database left open
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    server.control.db.close()


async def test_a_stuck_tick_and_a_stuck_retake_are_waited_for_together(pki, tmp_path, caplog, monkeypatch):
    """The tick, then the steps kept during a clone hold being taken again, were each waited for up to TICK_STOP_S,
    one after the other (twice the bound with both stuck); both are waited for at once: both said at the same
    end of one wait."""
    from cloud_trainer.fleet import service

    monkeypatch.setattr(service, "TICK_STOP_S", 0.4)
    certs = (pki / "ca.pem", pki / "server.pem", pki / "server.key")
    server = service.FleetServer(tmp_path / "cloud", free_port(), *certs)
    real_tick, started, release = server.control.tick, threading.Event(), threading.Event()

    def tick() -> None:
        started.set()
        release.wait(30)
        real_tick()

    server.control.tick = tick
    caplog.set_level(logging.WARNING)
    await server.start()
    retake = asyncio.get_running_loop().create_future()  # a step being taken again that does not end
    server.fleet._retaking.add(retake)
    try:
        assert await asyncio.to_thread(started.wait, 10), "no rollout tick ran"
        await server.stop()
    finally:
        release.set()
        retake.cancel()
    said = {
        r.getMessage().split(" still ")[0]: r.created for r in caplog.records if " still " in r.getMessage()
    }
    assert set(said) == {"the deployment tick", "1 deployment steps kept during a clone hold"}, said
    assert (
        abs(said["the deployment tick"] - said["1 deployment steps kept during a clone hold"]) < 0.2
    )  # was: 0.4
    await asyncio.sleep(0.1)  # (the tick's thread ends on the database left open)
    server.control.db.close()


async def test_a_read_under_way_in_a_worker_thread_ends_before_stop_closes_the_databases(
    pki, tmp_path, caplog
):
    # the streams' poll of the change log runs in a worker thread that outlives its cancelled task: stop()
    # closed control.db under it, and the process died of a segmentation fault (seen in a full test run)
    from cloud_trainer.fleet.service import FleetServer

    certs = (pki / "ca.pem", pki / "server.pem", pki / "server.key")
    server = FleetServer(tmp_path / "cloud", free_port(), *certs)
    control, store = server.control, server.store
    real_since, started, release = control.changes_since, threading.Event(), threading.Event()
    read: list = []
    counted: list = []

    def changes_since(generation: int):
        with control.lock:  # as the real one: the read is under the control's lock
            started.set()
            release.wait(5)
            read.append(real_since(generation))
        return read[-1]

    def store_read() -> None:  # a store read under way in another worker thread, under the store's lock
        with store.lock:
            release.wait(5)
            counted.append(store.db.execute("SELECT COUNT(*) FROM records").fetchall())

    control.changes_since = changes_since
    caplog.set_level(logging.WARNING)
    await server.start()
    reader = threading.Thread(target=store_read)
    reader.start()
    try:
        assert await asyncio.to_thread(started.wait, 10), "the streams never read the change log"
    finally:
        threading.Timer(0.3, release.set).start()  # both reads end while stop() closes
        await server.stop()
    reader.join(10)
    assert len(read) == 1 and counted == [[(0,)]], (read, counted)  # both ran to their end on open databases
    assert open_files_under(tmp_path) == []  # and both were closed after them
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
