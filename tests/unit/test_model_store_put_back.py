"""``ModelStore.put_back``: a fleet config rolled back whose start set the serving folder aside (a
``refused_versions`` naming it) has it put back for the last good config. A candidate in its health window (a
deployment on probation, ``previous`` kept) was put back current alone: it served for good, never judged, its
health watch not resumed and ``previous`` kept unused."""

from __future__ import annotations

import json

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
