"""A rollback marks the candidate (``.rolled-back/<folder>``) before the state.json that records it. A restart that
finds the mark with the candidate still on probation restores the previous model and says why; that reason, sent to
the fleet as the deployment's outcome, blamed the disk ("the disk refused the state.json that recorded it") also
after a kill -9 between the two writes, with no disk problem at all: an admin went looking for a full disk."""

from __future__ import annotations

import json

from edge_agent.models.store import ModelStore

PREV, CAND = "part-inspection-1.0.0-000000000000", "part-inspection-1.1.0-aaaaaaaaaaaa"


def test_a_rollback_cut_by_a_kill_before_its_state_write_is_not_reported_as_a_disk_that_refused_it(tmp_path):
    for n in (PREV, CAND):
        (tmp_path / n).mkdir()
    store = ModelStore(tmp_path)
    store._write_state_file(
        {
            "current": CAND,
            "previous": PREV,
            "probation": {"candidate": CAND, "since": 0, "unclean_ends": 0, "stopped": False},
        }
    )
    store.mark_rolled_back(
        CAND
    )  # the rollback's mark; the kill comes before its state.json (the disk is fine)
    restarted = ModelStore(tmp_path)
    ar = restarted.after_restart()
    assert ar is not None and not ar.resume and ar.previous == PREV and ar.reason is not None
    assert "the disk refused" not in ar.reason, ar.reason  # (formerly said whatever ended the write)
    assert "was not written" in ar.reason and "the agent ended first" in ar.reason, ar.reason
    st = json.loads(restarted.state_path.read_text())
    assert st["current"] == PREV and st["failed"][CAND] == ar.reason


# the child: the store's start (or an admin's rollback) SIGKILLed at the write of state.json that follows the mark
_KILLED_AT_STATE = """
import os, signal, sys
from edge_agent.models.store import ModelStore
def killed(self, st, *a, **kw):
    os.kill(os.getpid(), signal.SIGKILL)
ModelStore._write_state = killed
store = ModelStore(sys.argv[1])
if sys.argv[2] == "start":
    store.after_restart()  # the crash loop's rollback: its mark, then its state.json
else:
    store.mark_rolled_back(sys.argv[3], sys.argv[2])  # a rollback's mark, then (killed) its state.json
    store.set_current(store.root / sys.argv[4], None)
"""


def _killed(tmp_path, *args) -> None:
    import signal
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _KILLED_AT_STATE, str(tmp_path), *args], timeout=60)
    assert done.returncode == -signal.SIGKILL  # (the kill came between the mark and state.json)


def _on_probation(tmp_path, unclean_ends: int) -> None:
    for n in (PREV, CAND):
        (tmp_path / n).mkdir()
    ModelStore(tmp_path)._write_state_file(
        {
            "current": CAND,
            "previous": PREV,
            "probation": {"candidate": CAND, "since": 0, "unclean_ends": unclean_ends, "stopped": False},
        }
    )


def test_a_crash_loop_rollback_killed_before_its_state_is_reported_as_the_crash_loop_not_held(tmp_path):
    from edge_agent.models.store import UNRECORDED_ROLLBACK

    _on_probation(tmp_path, 1)  # one unclean end so far: this start's is the second, a crash loop
    _killed(tmp_path, "start")
    assert (
        json.loads((tmp_path / "state.json").read_text())["current"] == CAND
    )  # (the cut: state.json unwritten)
    ar = ModelStore(tmp_path).after_restart()
    assert ar is not None and not ar.resume and ar.previous == PREV and ar.reason is not None
    # formerly "the candidate was rolled back before the restart ... (a full or read-only disk ...)", which the model
    # manager holds for its deployment (health-rollbacks) as a health check's verdict, though a crash loop is not held
    assert not ar.reason.startswith(UNRECORDED_ROLLBACK) and "disk" not in ar.reason, ar.reason
    assert "2 times inside the candidate's health window (a crash loop" in ar.reason, ar.reason


def test_a_fleet_rollback_killed_before_its_state_names_the_fleet_and_a_health_verdict_is_still_held(
    tmp_path,
):
    from edge_agent.models.store import MARK_ADMIN, MARK_HEALTH, UNRECORDED_ROLLBACK

    _on_probation(tmp_path, 0)
    _killed(tmp_path, MARK_ADMIN, CAND, PREV)
    ar = ModelStore(tmp_path).after_restart()
    assert ar is not None and not ar.resume and ar.reason is not None
    assert ar.reason.startswith("the fleet's rollback or withdrawal of the candidate"), ar.reason
    other = tmp_path / "health"
    other.mkdir()
    _on_probation(other, 0)
    _killed(other, MARK_HEALTH, CAND, PREV)
    ar = ModelStore(other).after_restart()
    assert ar is not None and ar.reason is not None and ar.reason.startswith(UNRECORDED_ROLLBACK), ar.reason


def test_a_pipe_or_a_huge_file_at_a_rollback_mark_is_read_as_a_health_mark_without_blocking_the_start(
    tmp_path,
):
    """Formerly the mark was read whole: a named pipe at its path blocked the start for good (holding the store's
    write lock, nothing logged), a huge file filled the agent's memory, at every restart."""
    import os
    import threading

    for n in (PREV, CAND):
        (tmp_path / n).mkdir()
    store = ModelStore(tmp_path)
    store.mark_rolled_back(CAND)
    mark = store._marks(CAND)[0]
    got: list[str] = []
    for make in ("pipe", "huge"):
        mark.unlink()
        if make == "pipe":
            os.mkfifo(mark)
        else:
            with open(mark, "wb") as f:
                f.truncate(8 * 2**30)  # sparse: 8 GiB on no disk space
        t = threading.Thread(target=lambda: got.append(ModelStore(tmp_path).mark_kind(CAND)), daemon=True)
        t.start()
        t.join(10)
        assert not t.is_alive(), f"reading a {make} at the mark blocked"
    assert got == ["health", "health"], got
