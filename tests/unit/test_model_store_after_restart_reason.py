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
