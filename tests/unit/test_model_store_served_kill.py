"""A version rolled back by its health check, deployed again: the switch withdraws its rollback mark (``served``)
before the state.json that names it current. A kill inside that withdrawal, before the mark said ``unknown`` again,
leaves the health check's mark on a version not current (true: the new deployment never switched). A later refusal
of that version (its golden test failing) kept that mark's kind, and the refusal was read as the health check's
verdict. Shown with a real SIGKILL of a child process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from edge_agent.models.store import MARK_HEALTH, MARK_UNKNOWN, ModelStore

PREV, CAND = "part-inspection-1.0.0-000000000000", "part-inspection-1.1.0-aaaaaaaaaaaa"

# the child: the candidate's health mark, then a new deployment's switch to it SIGKILLed inside ``served`` at the
# write that makes its mark say ``unknown`` again
_KILLED_IN_SERVED = """
import os, signal, sys
from pathlib import Path
import edge_agent.models.store as s
store = s.ModelStore(sys.argv[1])
store.mark_rolled_back(sys.argv[2], s.MARK_HEALTH)
real = s._fill_placeholder
def killed(path, kind):
    if Path(path).name == sys.argv[2] and kind == s.MARK_UNKNOWN:
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, kind)
s._fill_placeholder = killed
store.set_current(store.root / sys.argv[2], store.root / sys.argv[3], probation=True)
"""


def test_a_refusal_after_a_kill_inside_served_is_not_read_as_the_earlier_health_verdict(tmp_path):
    for n in (PREV, CAND):
        (tmp_path / n).mkdir()
    ModelStore(tmp_path)._write_state_file({"current": PREV, "previous": None, "probation": None})
    done = subprocess.run([sys.executable, "-c", _KILLED_IN_SERVED, str(tmp_path), CAND, PREV], timeout=60)
    assert done.returncode == -signal.SIGKILL
    store = ModelStore(tmp_path)  # the next start
    assert store.current() == PREV and store.after_restart() is None
    assert store.mark_kind(CAND) == MARK_HEALTH  # (the earlier rollback's, on a version never made current)
    store.mark_failed(tmp_path / CAND, "golden test failed")  # deployed again, refused
    assert (
        store.mark_kind(CAND) == MARK_UNKNOWN
    )  # was: health, the refusal read as the health check's verdict
    assert not store.was_told(CAND)
    assert json.loads(store.state_path.read_text())["failed"][CAND] == "golden test failed"
