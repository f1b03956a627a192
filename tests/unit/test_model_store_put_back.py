"""``ModelStore.put_back``: a fleet config rolled back whose start set the serving folder aside (a
``refused_versions`` naming it) has it put back for the last good config. A candidate in its health window (a
deployment on probation, ``previous`` kept) was put back current alone: it served for good, never judged, its
health watch not resumed and ``previous`` kept unused."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from edge_agent.models.store import ModelStore

PREV, CAND = "part-inspection-1.0.0-000000000000", "part-inspection-1.1.0-aaaaaaaaaaaa"


def test_a_candidate_set_aside_in_its_health_window_is_put_back_on_probation(tmp_path):
    for n in (PREV, CAND):
        (tmp_path / n).mkdir()
    store = ModelStore(tmp_path)
    prob = {"candidate": CAND, "since": 5.0, "unclean_ends": 1, "stopped": False, "baseline": {"n": 3}}
    store._write_state_file({"current": CAND, "previous": PREV, "probation": prob})
    store.set_aside(CAND, "part-inspection-1.1.0 is a version this agent refuses")
    assert store.put_back(CAND)
    st = json.loads(store.state_path.read_text())
    assert st["current"] == CAND and st["previous"] == PREV and st["failed"] == {}, st
    assert st["probation"] == {**prob, "stopped": True} and "aside_probation" not in st, st
    ar = ModelStore(tmp_path).after_restart()  # the fall back's start: the window resumed, an orderly stop
    assert ar is not None and ar.resume and ar.candidate == CAND and ar.clean, ar

    # one set aside off probation (a byte altered on disk) is put back with none
    store._write_state_file({"current": CAND, "previous": PREV, "probation": None})
    store.set_aside(CAND, "a byte altered")
    assert store.put_back(CAND)
    st = json.loads(store.state_path.read_text())
    assert st["current"] == CAND and st["probation"] is None and "aside_probation" not in st, st


def test_a_set_aside_probation_is_forgotten_once_another_folder_is_current(tmp_path):
    for n in (PREV, CAND):
        (tmp_path / n).mkdir()
    store = ModelStore(tmp_path)
    prob = {"candidate": CAND, "since": 5.0, "unclean_ends": 0, "stopped": False}
    store._write_state_file({"current": CAND, "previous": PREV, "probation": prob})
    store.set_aside(CAND, "a byte altered")  # the start installs the package again, or serves another
    store.set_current(tmp_path / PREV, None)
    assert "aside_probation" not in json.loads(store.state_path.read_text())


KILLED = """
import os, sys, time
from pathlib import Path
import edge_agent.models.store as store

root, folder, step = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
real_replace, real_write = os.replace, store.ModelStore._write_state


def stop():  # the parent kills this process -9 here
    print("READY", flush=True)
    time.sleep(60)


def replace(a, b):
    if step == "aside_state" and Path(a) == root / folder:  # set_aside: its state written, the folder not moved
        stop()
    real_replace(a, b)
    if step == "aside_moved" and Path(a) == root / folder:  # set_aside: moved, before it returns
        stop()


def write(self, st):
    if step == "back_moved" and st.get("current") == folder:  # put_back: moved, its state not written
        stop()
    real_write(self, st)


os.replace, store.ModelStore._write_state = replace, write
s = store.ModelStore(root)
s.set_aside(folder, "part-inspection-1.1.0 is a version this agent refuses")
if step == "back_moved":
    s.put_back(folder)
print("DONE", flush=True)
"""


@pytest.mark.parametrize("step", ["aside_state", "aside_moved", "back_moved"])
def test_a_kill_between_a_folders_move_and_its_state_is_put_back_consistent(tmp_path, step):
    """A process killed (-9) between set_aside's state.json and its move of the folder, or between put_back's move
    and its state: the folder in place, named by no state, was not put back (``put_back`` looked in .rejected only),
    and the slot waited for the fleet's package. Whatever the step, put_back (the next start's) leaves the folder in
    place, current, and its health window as it was."""
    for n in (PREV, CAND):
        (tmp_path / n).mkdir()
    prob = {"candidate": CAND, "since": 5.0, "unclean_ends": 0, "stopped": False}
    ModelStore(tmp_path)._write_state_file({"current": CAND, "previous": PREV, "probation": prob})
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(tmp_path), CAND, step], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "READY"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    store = ModelStore(tmp_path, clean=False)
    assert store.put_back(CAND)
    st = json.loads(store.state_path.read_text())
    assert st["current"] == CAND and st["previous"] == PREV and st["failed"] == {}, st
    assert st["probation"] == {**prob, "stopped": True}, st
    assert (tmp_path / CAND).is_dir() and not (tmp_path / ".rejected" / CAND).exists()
    assert not store.put_back(CAND)  # done: a second start finds nothing to do
