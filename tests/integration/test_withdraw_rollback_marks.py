"""Who rolled a model back, as its mark (``<slot>/.rolled-back/<folder>``) says: a start that finds state.json still
naming the candidate on probation restores the previous model and gives that rollback's own reason; the model
manager holds (declines the same deployment for good) only a health check's. A real slot on ONNX Runtime for the
health watch's mark; a real store's files for a full disk's."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

from devices.base import Frame
from edge_agent.models.config import HealthConfig, ModelConfig
from edge_agent.models.manager import ModelManager
from edge_agent.models.slot import InferenceError, ModelSlot
from edge_agent.models.store import (
    MARK_ADMIN,
    MARK_CRASH_LOOP,
    MARK_HEALTH,
    MARK_UNKNOWN,
    UNRECORDED_ROLLBACK,
    ModelStore,
)
from tests.support.models import make_keypair, make_package


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pkgs")
    key, pub = make_keypair(tmp / "keys")
    return {
        "v1": make_package(tmp, kind="vision", version="1.0.0", key=key, seed=1, bias=6.0),
        "nan": make_package(tmp, kind="vision", version="1.2.0", key=key, nan=True),
        "pub": pub,
    }


def _frame(seq: int) -> Frame:
    img = np.random.default_rng(seq).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return Frame("cam", seq, time.time(), img)


async def test_the_health_watchs_rollback_marks_the_candidate_as_the_health_checks(tmp_path, pkgs):
    """A model whose outputs are NaN passes its golden test and is rolled back by the slot's health watch: its mark
    says ``health`` (what a start that finds state.json still naming it reads as the verdict the model manager
    holds). ``ModelSlot.rollback``'s kind defaulted to ``admin``: a watch that stopped passing it marked its own
    verdict as the fleet's, and no test said so."""
    cfg = ModelConfig(package=str(pkgs["v1"]), health=HealthConfig(window_s=1.0, min_items=5))
    s = ModelSlot("vision", cfg, tmp_path / "data", [pkgs["pub"]])
    marked: list[tuple[str, str]] = []  # (its kind as the mark holds it once made, as ModelStore reads it)
    mark = s.store.mark_rolled_back

    def read_back(folder_name: str, kind: str) -> None:  # (the rollback prunes the folder and its mark after)
        mark(folder_name, kind)
        marked.append(
            (
                s.store._marks(folder_name)[0].read_text().strip(),
                ModelStore(s.store.root).mark_kind(folder_name),
            )
        )

    await s.start()
    try:
        s.store.mark_rolled_back = read_back  # type: ignore[method-assign]
        for i in range(10):
            s.infer(_frame(i))
        out = await s.swap(pkgs["nan"])
        assert out.ok and s.version == "1.2.0", out
        for i in range(300):
            if marked:
                break
            with contextlib.suppress(InferenceError):
                s.infer(_frame(i))
            await asyncio.sleep(0.01)
        assert s.version == "1.0.0" and "health check failed" in s.last_outcome.reason
        assert marked == [(MARK_HEALTH, MARK_HEALTH)], marked
    finally:
        await s.stop()


PREV, CAND = "part-inspection-1.0.0-000000000000", "part-inspection-1.1.0-aaaaaaaaaaaa"


def test_a_rollback_marked_on_a_full_disk_is_not_read_as_the_health_checks_verdict(tmp_path, monkeypatch):
    """The fleet rolls the candidate back on a disk with no block left (its placeholder made at the install, while
    there was room), and the agent ends before the state.json after the mark. The kind could not be written: the
    mark was left empty, read as the health check's verdict, and the model manager held the version for that
    deployment for good (an admin's rollback, or a crash loop, taken for a health verdict). The placeholder now holds
    its block from the install and the kind is written over it in place; where even that is refused, the mark says
    its kind is unknown: the previous model is restored, nothing is held."""
    for n in (PREV, CAND):
        (tmp_path / n).mkdir()
    store = ModelStore(tmp_path)
    store._write_state_file(
        {
            "current": CAND,
            "previous": PREV,
            "probation": {"candidate": CAND, "since": 0, "unclean_ends": 1, "stopped": False},
        }
    )
    store.arm(CAND)  # at its install, the disk not full yet

    def no_block(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:  # the disk full: no write finds a block
        m.setattr(os, "write", no_block)
        m.setattr(os, "pwrite", no_block)
        store.mark_rolled_back(CAND, MARK_ADMIN)  # the fleet's rollback; the end comes before its state.json
    assert store.rolled_back(CAND)
    restarted = ModelStore(tmp_path)
    assert restarted.mark_kind(CAND) != MARK_HEALTH
    ar = restarted.after_restart()
    assert ar is not None and not ar.resume and ar.previous == PREV and ar.reason is not None
    # what the model manager holds as the health check's verdict (``ModelManager._hold``)
    assert not ar.reason.startswith(UNRECORDED_ROLLBACK), ar.reason


# an admin's rollback writes its kind into the placeholder; the agent is killed right after that write, before the
# rename that makes the mark
KILLED_ONCE_THE_KIND_IS_WRITTEN = """
import edge_agent.models.store as ms
from pathlib import Path
real_pwrite = os.pwrite


def pwrite(fd, data, offset):
    real_pwrite(fd, data, offset)
    power_cut()


os.pwrite = pwrite
ms.ModelStore(Path(sys.argv[1])).mark_rolled_back(sys.argv[3], "admin")
"""


def test_a_kill_right_after_a_marks_kind_is_written_never_leaves_it_read_as_the_health_checks(tmp_path):
    from tests.support.outbox_kills import killed_child

    fresh, again = CAND, "part-inspection-1.2.0-bbbbbbbbbbbb"
    store = ModelStore(tmp_path)
    for n in (fresh, again):
        (tmp_path / n).mkdir()
        store.arm(n)  # (its placeholder holds "unknown")
    store.mark_rolled_back(again, MARK_CRASH_LOOP)
    store.served(again)  # (served again later: its placeholder holds "crash_loop")
    for n in (fresh, again):
        killed_child(KILLED_ONCE_THE_KIND_IS_WRITTEN, tmp_path, n, timeout_s=30)
        restarted = ModelStore(tmp_path)
        # a later mark with no kind (``mark_failed``) made from that placeholder
        restarted.mark_rolled_back(n)
        # formerly the kind was written, then the file cut to its length: the kill between left "adminwn" (or
        # "admin_loop"), read as the health check's verdict. The kind of the rollback the kill cut short is not
        # this mark's: it says none
        assert restarted.mark_kind(n) == MARK_UNKNOWN


def test_a_mark_without_a_kind_after_the_version_served_again_reads_unknown_not_the_rollbacks_undone(
    tmp_path, monkeypatch
):
    """A crash loop rolled the candidate back; the same version was rolled out again and served (``served`` renames
    its mark back into the placeholder), then refused (``mark_failed``: a mark made without a kind) and the agent
    ended before the state.json after the mark. The placeholder still held "crash_loop": the restart told a crash loop
    that never happened. It says ``unknown`` again once served, and a rename still needs no free block."""
    for n in (PREV, CAND):
        (tmp_path / n).mkdir()
    store = ModelStore(tmp_path)
    store.arm(CAND)
    store.mark_rolled_back(CAND, MARK_CRASH_LOOP)
    store.served(CAND)  # rolled out again
    store.mark_failed(tmp_path / CAND, "refused at load")
    assert store.rolled_back(CAND)
    restarted = ModelStore(tmp_path)
    assert restarted.mark_kind(CAND) == MARK_UNKNOWN
    restarted._write_state_file(
        {
            "current": CAND,
            "previous": PREV,
            "probation": {"candidate": CAND, "since": 0, "unclean_ends": 0, "stopped": False},
        }
    )
    ar = restarted.after_restart()
    assert ar is not None and not ar.resume and ar.reason is not None
    assert "crash loop" not in ar.reason, ar.reason

    def no_block(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:  # a full disk: served and a later mark are renames, no block needed
        m.setattr(os, "write", no_block)
        m.setattr(os, "pwrite", no_block)
        restarted.served(CAND)
        assert not restarted.rolled_back(CAND)
        restarted.mark_rolled_back(CAND, MARK_ADMIN)
        assert restarted.rolled_back(CAND) and not restarted.unrecorded()


# a crash loop's mark is withdrawn as the version serves again (``served``: the mark renamed back into its
# placeholder); the agent is killed right after that rename
KILLED_ONCE_A_MARK_IS_RENAMED_BACK = """
import edge_agent.models.store as ms
from pathlib import Path
real_rename = os.rename


def rename(src, dst):
    real_rename(src, dst)
    if str(dst).endswith(ms.ARMED):
        power_cut()


os.rename = rename
ms.ModelStore(Path(sys.argv[1])).served(sys.argv[3])
"""


def test_a_kill_as_a_mark_is_withdrawn_never_leaves_the_kind_of_the_rollback_undone(tmp_path):
    from tests.support.outbox_kills import killed_child

    (tmp_path / CAND).mkdir()
    store = ModelStore(tmp_path)
    store.arm(CAND)
    store.mark_rolled_back(CAND, MARK_CRASH_LOOP)
    killed_child(KILLED_ONCE_A_MARK_IS_RENAMED_BACK, tmp_path, CAND, timeout_s=30)
    assert not store.rolled_back(CAND)  # (withdrawn: the version serves)
    restarted = ModelStore(tmp_path)
    restarted.mark_failed(tmp_path / CAND, "refused at load")  # a later mark made without a kind
    # formerly the kill came before "unknown" was written over the placeholder: read as a crash loop
    assert restarted.mark_kind(CAND) == MARK_UNKNOWN


def test_a_placeholder_a_full_disk_left_empty_says_unknown_once_the_disk_has_room(tmp_path, monkeypatch):
    (tmp_path / CAND).mkdir()
    store = ModelStore(tmp_path)

    def no_block(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:  # its install on a full disk: an inode for the placeholder, no block
        m.setattr(os, "write", no_block)
        store.arm(CAND)
    assert (tmp_path / ".rolled-back" / (CAND + ".armed")).stat().st_size == 0
    store.arm(CAND)  # armed again (a switch, a start) once the disk has room
    store.mark_failed(tmp_path / CAND, "refused at load")  # a mark made without a kind
    # formerly the placeholder stayed empty for good: the mark read as the health check's verdict (held for its
    # deployment)
    assert ModelStore(tmp_path).mark_kind(CAND) == MARK_UNKNOWN


def test_temporary_files_a_killed_agent_left_in_deployments_are_removed_at_start(tmp_path):
    """The model manager writes its health-check rollbacks through ``health-rollbacks.<pid>.<thread>.tmp`` and its
    pending deployments through ``<slot>.tmp``: an agent killed between the write and the rename left them, and
    nothing removed them (a gateway killed mid-write now and then for months piled them up in deployments/). The
    manager removes them as it starts; the state files beside them are kept."""
    dep = tmp_path / "deployments"
    dep.mkdir()
    other = os.getpid() + 1
    left = [f"health-rollbacks.{other}.139872451.tmp", "vision.tmp", f"vision.{other}.tmp"]
    for name in left:
        (dep / name).write_text('{"half": ')
    (dep / "health-rollbacks").write_text("{}")
    (dep / "vision.json").write_text("{}")
    ModelManager({}, SimpleNamespace(data_dir=tmp_path))
    assert sorted(p.name for p in dep.iterdir()) == ["health-rollbacks", "vision.json"]


# a new deployment installs again a version an earlier deployment rolled back (its mark kept: the kill came before
# the prune, or an admin's rollback left it installed as ``previous``): ``set_current`` names it current, on
# probation; the agent is killed right after that state.json is written
KILLED_ONCE_STATE_NAMES_THE_VERSION_AGAIN = """
import edge_agent.models.store as ms
from pathlib import Path
store = ms.ModelStore(Path(sys.argv[1]))
real_write = store._write_state_file


def write(state):
    real_write(state)
    if state.get("current") == sys.argv[3]:
        power_cut()


store._write_state_file = write
store.forget_failed(sys.argv[3])
store.set_current(Path(sys.argv[1]) / sys.argv[3], Path(sys.argv[1]) / sys.argv[4], probation=True)
"""


@pytest.mark.parametrize("kind", [MARK_HEALTH, MARK_ADMIN])
def test_a_kill_as_a_version_rolled_back_before_is_switched_to_again_keeps_the_new_deployments_candidate(
    tmp_path, kind
):
    from tests.support.outbox_kills import killed_child

    for name in (PREV, CAND):
        (tmp_path / name).mkdir()
    store = ModelStore(tmp_path)
    store.arm(CAND)
    store.mark_rolled_back(CAND, kind)  # the earlier deployment's rollback
    store._write_state_file({"current": PREV, "previous": None, "failed": {CAND: "rolled back"}})
    killed_child(KILLED_ONCE_STATE_NAMES_THE_VERSION_AGAIN, tmp_path, CAND, PREV, timeout_s=30)
    restarted = ModelStore(tmp_path)
    assert restarted.state()["current"] == CAND
    ar = restarted.after_restart()
    # formerly the mark was withdrawn only after that write: the start rolled the new deployment back with the
    # earlier rollback's reason (a health check's, which the model manager holds for the new deployment for good)
    assert ar is not None and ar.resume and ar.reason is None, ar
    assert restarted.state()["current"] == CAND and CAND not in (restarted.state().get("failed") or {})
    assert not restarted.rolled_back(CAND)


# the candidate's placeholder was made on a full disk (an inode, no block: left empty) and no ``arm`` ran since; it is
# refused (``mark_failed``: a mark made without a kind), the disk full again or not; the agent is killed right after
# the rename that makes the mark, before the state.json that drops the candidate
KILLED_ONCE_A_MARK_WITHOUT_A_KIND_IS_MADE = """
import errno
import edge_agent.models.store as ms
from pathlib import Path
real_rename = os.rename


def rename(src, dst):
    real_rename(src, dst)
    if str(src).endswith(ms.ARMED):
        power_cut()


def no_block(*a, **kw):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


os.rename = rename
if sys.argv[4] == "full":
    os.write = os.pwrite = no_block
ms.ModelStore(Path(sys.argv[1])).mark_failed(Path(sys.argv[1]) / sys.argv[3], "refused at load")
"""


@pytest.mark.parametrize("disk", ["room", "full"])
def test_a_mark_without_a_kind_over_a_placeholder_left_empty_reads_unknown_when_written_and_the_health_checks_if_empty(
    tmp_path, disk
):
    from tests.support.outbox_kills import killed_child

    _on_probation(tmp_path)
    armed = tmp_path / ".rolled-back" / (CAND + ".armed")
    armed.parent.mkdir()
    armed.write_bytes(b"")  # what ``arm`` on a full disk leaves
    killed_child(KILLED_ONCE_A_MARK_WITHOUT_A_KIND_IS_MADE, tmp_path, CAND, disk, timeout_s=30)
    restarted = ModelStore(tmp_path)
    assert restarted.rolled_back(CAND)
    ar = restarted.after_restart()
    assert ar is not None and not ar.resume and ar.previous == PREV and ar.reason is not None
    if disk == "room":
        # the placeholder says ``unknown`` before the rename: formerly the empty mark read as the health check's
        # verdict, the reason the model manager holds for the deployment for good, for a rollback no health check made
        assert restarted.mark_kind(CAND) == MARK_UNKNOWN
        assert not ar.reason.startswith(UNRECORDED_ROLLBACK), ar.reason
    else:
        # a disk with no block even for that: the mark stays empty, as a health check's rollback on a full disk
        # leaves it, and is read as the health check's (the two cannot be told apart; a health rollback's verdict
        # must still be held, or the deployment installs and serves the rejected model again)
        assert restarted.mark_kind(CAND) == MARK_HEALTH
        assert ar.reason.startswith(UNRECORDED_ROLLBACK), ar.reason


def _on_probation(root) -> None:
    for n in (PREV, CAND):
        (root / n).mkdir()
    ModelStore(root)._write_state_file(
        {
            "current": CAND,
            "previous": PREV,
            "probation": {"candidate": CAND, "since": 0, "unclean_ends": 0, "stopped": False},
        }
    )
